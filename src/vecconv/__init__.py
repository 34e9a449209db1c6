"""vecconv: convolutional networks in vec/unvec matrix form.

The forward pass and the kernel gradient are matrix products with the patch matrix
(im2col, the seed's eq. 12); the error travels back to the previous layer by a product
followed by col2im (eq. 16-18). The loops are compiled Cython, the products BLAS GEMMs.

vecconv's im2col/col2im loops (OpenMP) and its GEMMs (OpenBLAS's own threads) take turns
on the same cores. GNU OpenMP's default is to let idle workers spin, which steals those
cores from the BLAS: measured here, OMP_WAIT_POLICY=PASSIVE made a 3x3 convolution of
32x64x56x56 28% faster. So unless you set it yourself, vecconv sets it before its
extension (and with it libgomp) is loaded.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .conv import (col2im, conv1d, conv1d_backward, conv2d, conv2d_backward, get_workspace,
                   im2col, openmp_threads, set_workspace)
from .matrix import patch_matrix, unvec, vec
from . import nn  # noqa: E402  (the layers and LeNet-5, on the same engine)

__version__ = "0.1.0"

__all__ = ["vec", "unvec", "patch_matrix", "im2col", "col2im", "conv2d", "conv2d_backward",
           "conv1d", "conv1d_backward", "set_workspace", "get_workspace", "openmp_threads", "nn"]
