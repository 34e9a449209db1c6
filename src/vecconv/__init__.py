"""vecconv: convolutional networks in vec/unvec matrix form.

The forward pass and the kernel gradient are matrix products with the patch matrix
(im2col, eq. 12 of Haoxiang Xu's derivation after Bouvrie's "Notes on Convolutional
Neural Networks"); the error travels back to the previous layer by a product followed by
col2im (eq. 16-18). The loops are compiled Cython, the products BLAS GEMMs, run by
vecconv's own threads (``set_num_threads``); importing vecconv changes no environment
variable and no other library's thread count.
"""

from ._config import (config, get_config, get_num_threads, get_workspace, set_config,
                      set_num_threads, set_workspace, threads)
from ._runtime import runtime_info
from .functional import (avg_pool, avg_pool1d, avg_pool2d, avg_pool3d, avg_pool_backward,
                         col2im, conv, conv1d, conv1d_backward, conv2d, conv2d_backward,
                         conv3d, conv3d_backward, conv_backward, conv_plan, conv_transpose,
                         conv_transpose1d, conv_transpose1d_backward, conv_transpose2d,
                         conv_transpose2d_backward, conv_transpose3d,
                         conv_transpose3d_backward, conv_transpose_backward, im2col, max_pool,
                         max_pool1d, max_pool2d, max_pool3d, max_pool_backward)
from . import functional
from .matrix import patch_matrix, unvec, vec
from . import nn  # noqa: E402  (the layers and LeNet-5, on the same engine)


def _installed_version() -> str:
    """Written once, in meson.build; the installed metadata carries it."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vecconv")
    except PackageNotFoundError:  # imported from a build tree that was never installed
        return "unknown"


__version__ = _installed_version()

__all__ = ["vec", "unvec", "patch_matrix", "im2col", "col2im", "conv", "conv_backward",
           "conv_plan",
           "conv1d", "conv1d_backward", "conv2d", "conv2d_backward", "conv3d",
           "conv3d_backward", "conv_transpose", "conv_transpose_backward",
           "conv_transpose1d", "conv_transpose1d_backward", "conv_transpose2d",
           "conv_transpose2d_backward", "conv_transpose3d", "conv_transpose3d_backward",
           "avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d", "avg_pool_backward",
           "max_pool", "max_pool1d", "max_pool2d", "max_pool3d", "max_pool_backward",
           "set_workspace", "get_workspace", "set_num_threads",
           "get_num_threads", "threads", "config", "get_config", "set_config",
           "runtime_info", "functional", "nn", "signal"]


def __getattr__(name):
    # vecconv.signal (scipy.signal's convolution functions) is imported on first use:
    # ``import vecconv`` stays as fast as it was, and ``vecconv.signal.convolve`` works
    # after it as ``import vecconv.signal`` does
    if name == "signal":
        import importlib
        return importlib.import_module(".signal", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

