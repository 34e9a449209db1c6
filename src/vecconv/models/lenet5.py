"""LeNet-5 (LeCun, Bottou, Bengio and Haffner 1998), as Xu's derivation uses it."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .._validate import layer_dtype
from ..nn.activation import Activation, ActivationName
from ..nn.container import Sequential
from ..nn.conv import Conv2D
from ..nn.linear import Dense, Flatten
from ..nn.parameter import random_source
from ..nn.pooling import MaxPool2D, Subsampling

__all__ = ["lenet5", "lenet5_c3_table"]


def lenet5_c3_table() -> NDArray[np.bool_]:
    """LeCun et al. 1998, Table I: the (6, 16) S2 -> C3 connection table (60 True).

    Returns
    -------
    ndarray of bool, shape (6, 16)
        ``table[i, j]`` is True when S2's map i feeds C3's map j: maps 0-5 read three
        neighbouring maps, 6-11 four neighbouring, 12-14 four not all neighbouring, and 15
        all six. Pass it as ``connections=`` to ``Conv2D`` or ``vecconv.conv2d``.
    """
    inputs = [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
              (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
              (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5)]
    table = np.zeros((6, 16), dtype=bool)
    for j, ins in enumerate(inputs):
        table[list(ins), j] = True
    return table


def lenet5(*, dtype: DTypeLike = np.float32, seed: int | None = 0,
           activation: ActivationName = "lecun_tanh",
           pooling: Literal["subsampling", "max", "avg"] = "subsampling",
           num_classes: int = 10) -> Sequential:
    """LeCun et al. 1998's LeNet-5 on 32 x 32 inputs, as Xu's derivation uses it.

    C1 6@28x28 (5x5) - S2 6@14x14 (``Subsampling`` 2x2: beta, b, eq. 2) - C3 16@10x10
    (Table I, 60 kernels, 1516 parameters) - S4 16@5x5 - C5 120 (5x5 conv) - F6 84 -
    10 outputs.
    Every layer up to F6 ends in the squashing function (LeCun's 1.7159 tanh(2x/3)).
    The output layer is linear (a softmax loss replaces the paper's RBF units).
    ``pooling='max'`` swaps S2/S4 for max pooling followed by the activation.

    Parameters
    ----------
    dtype : float32 or float64
        The dtype of every layer.
    seed : int
        The seed of the initialisation's random source.
    activation : str
        The squashing function, a name in ``ACTIVATIONS``.
    pooling : {'subsampling', 'max'}
        S2 and S4: LeCun's trainable subsampling (``Subsampling``, eq. 2), or max pooling
        (``MaxPool2D``, eq. 3) followed by the activation. 'avg', vecconv 0.1's name of
        'subsampling', is deprecated.
    num_classes : int
        The number of outputs.

    Returns
    -------
    Sequential
        The network, its layers labelled C1, S2, C3, S4, C5, F6 and out (60,850
        parameters with the defaults), its ``input_shape`` (1, 32, 32): 28 x 28 MNIST
        digits are padded by 2 on each side, as in the paper.
    """
    dtype = layer_dtype(dtype)
    rng = random_source(seed, None)

    kind: str = pooling
    if kind == "avg":
        warnings.warn("lenet5(pooling='avg') is now lenet5(pooling='subsampling') (LeCun's "
                      "trainable layer, nn.Subsampling)", DeprecationWarning, stacklevel=2)
        kind = "subsampling"
    if kind not in ("subsampling", "max"):
        raise ValueError(f"pooling must be 'subsampling' or 'max', got {pooling!r}")

    def pool(channels):
        if kind == "subsampling":
            return [Subsampling(channels, 2, activation, dtype=dtype)]
        return [MaxPool2D(2), Activation(activation)]

    layers = [
        ("C1", Conv2D(1, 6, 5, dtype=dtype, rng=rng)), (None, Activation(activation)),
        *[("S2", p) for p in pool(6)],
        ("C3", Conv2D(6, 16, 5, connections=lenet5_c3_table(), dtype=dtype, rng=rng)),
        (None, Activation(activation)),
        *[("S4", p) for p in pool(16)],
        ("C5", Conv2D(16, 120, 5, dtype=dtype, rng=rng)), (None, Activation(activation)),
        (None, Flatten()),
        ("F6", Dense(120, 84, dtype=dtype, rng=rng)), (None, Activation(activation)),
        ("out", Dense(84, num_classes, dtype=dtype, rng=rng)),
    ]
    for label, layer in layers:
        layer.name = label
    return Sequential([layer for _, layer in layers], input_shape=(1, 32, 32))
