"""Layers and LeNet-5, with forward and backward passes as Haoxiang Xu's notes (after
Bouvrie, "Notes on Convolutional Neural Networks", 2006) derive them; LeNet-5 as LeCun et
al. 1998 build it.

Every layer maps a batch forward, keeps what its backward pass needs, and maps the error
delta = dE/d(output) back to dE/d(input), setting the ``grad`` of each of its
:class:`Parameter` s. The layers are thin: each checks its options once, at
construction, and runs the same core as the functions (``vecconv.conv``,
``vecconv.max_pool``, ...); float32 stays float32 throughout.

The package holds one concern per module: ``parameter`` (Parameter, Layer), ``conv``,
``pooling``, ``linear`` (Dense, Flatten), ``activation``, ``loss``, ``container``
(Sequential), ``serialization`` (save, load) and ``optim`` (SGD); LeNet-5 itself is in
``vecconv.models``.

>>> import numpy as np, vecconv.nn as nn
>>> net = nn.lenet5(dtype=np.float32, seed=0)
>>> net.forward(np.zeros((2, 1, 32, 32), np.float32)).shape
(2, 10)
"""

from ..matrix import down, up
from .activation import ACTIVATIONS, Activation, ActivationName
from .container import Sequential
from .conv import Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D
from .linear import Dense, Flatten
from .loss import SoftmaxCrossEntropy, SquaredError
from .optim import SGD
from .parameter import Layer, Parameter
from .pooling import (AvgPool, AvgPool1D, AvgPool2D, AvgPool3D, MaxPool, MaxPool1D, MaxPool2D,
                      MaxPool3D, Subsampling)
from .serialization import load, save
from ..models.lenet5 import lenet5, lenet5_c3_table

__all__ = ["Layer", "Parameter", "Conv1D", "Conv2D", "Conv3D", "ConvTranspose1D",
           "ConvTranspose2D", "ConvTranspose3D", "MaxPool", "MaxPool1D", "MaxPool2D",
           "MaxPool3D", "AvgPool", "AvgPool1D", "AvgPool2D", "AvgPool3D", "Subsampling",
           "Dense", "Flatten",
           "Activation", "Sequential", "SquaredError", "SoftmaxCrossEntropy", "SGD", "lenet5",
           "lenet5_c3_table", "load", "save", "ACTIVATIONS", "ActivationName", "down", "up"]
