"""The patch matrix of eq. 12 and its adjoint: ``im2col`` and ``col2im``.

The derivation's [c]_{p,q} matrices, for a batch and every channel at once: one row per
output position, one column per kernel tap. ``col2im`` adds every entry back to the pixel
it came from, which is how eq. 16-18 become matrix form.
"""

from __future__ import annotations

import numpy as np

from .. import _plan, _run
from .._options import conv_options
from .._shapes import LAYOUTS
from .._typing import ArrayInput, FloatArray, Padding, PaddingMode, Shape, Size
from .._validate import (as_array, check_fits, check_ndim, copy_bytes, float_dtype, floats,
                         int_tuple, integer, nbytes_of)

__all__ = ["im2col", "col2im"]


def _plan_for(x_shape, kernel_size, stride, padding, dilation, padding_mode, fill_value,
              name="x"):
    """The plan of an unfold of maps of ``x_shape``: d is len(kernel_size) for a tuple,
    else x's dimensions - 2 (batched)."""
    if isinstance(kernel_size, (tuple, list)):
        d = len(kernel_size)
    else:
        d = len(x_shape) - 2
    if d not in LAYOUTS:
        raise ValueError(f"kernel_size must have 1, 2 or 3 entries (an int: {name} has 1 to 3 "
                         f"spatial axes), got {kernel_size!r} for shape {tuple(x_shape)}")
    if len(x_shape) != d + 2:
        raise ValueError(f"{name} must be {d + 2}-D {LAYOUTS[d][0]} for a kernel_size of {d} "
                         f"axes, got shape {tuple(x_shape)}")
    ksize = int_tuple("kernel_size", kernel_size, d, 1)
    options = conv_options(d, stride=stride, padding=padding, dilation=dilation,
                           padding_mode=padding_mode, fill_value=fill_value)
    return _plan.plan_unfold(tuple(x_shape), ksize, options)


def im2col(x: ArrayInput, kernel_size: Size, *, stride: Size = 1, padding: Padding = 0,
           dilation: Size = 1, padding_mode: PaddingMode = "zeros",
           fill_value: float = 0.0) -> FloatArray:
    """The batched patch matrix of eq. 12: one row per output position, one column per tap.

    Parameters
    ----------
    x : array_like, shape ``(N, C, *spatial)``, 1 to 3 spatial axes
        The input maps.
    kernel_size : int or d ints
        d ints give d spatial axes; an int means d = x.ndim - 2.
    stride, padding, dilation, padding_mode, fill_value
        As for ``conv``.

    Returns
    -------
    cols : ndarray, shape ``(N*Ho*Wo, C*kh*kw)``
        Row ``(n*Ho + i)*Wo + j`` holds the patch under output position (i, j) of image n;
        column ``(c*kh + p)*kw + q`` the tap (p, q) of channel c — PyTorch's
        ``unfold(x).transpose(1, 2)`` stacked over the batch (in 1-D and 3-D the same, with
        positions and taps in C order). The array is the transpose of the engine's
        C-contiguous ``(C*taps, N*positions)`` buffer, so it is Fortran-ordered.

    Examples
    --------
    >>> import numpy as np, vecconv
    >>> vecconv.im2col(np.arange(9.0).reshape(1, 1, 3, 3), 2)
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    x = as_array("x", x)
    dtype = float_dtype(x=x)
    plan = _plan_for(x.shape, kernel_size, stride, padding, dilation, padding_mode,
                     fill_value)
    n, c = x.shape[:2]
    shape = (c * plan.geometry.taps, n * plan.geometry.positions)
    check_fits(nbytes_of(shape, dtype) + copy_bytes(x, dtype), "the column matrix")
    return _run.unfold(floats(dtype, x), plan, _plan.unfold_units(plan)).T


def col2im(cols: ArrayInput, input_shape: Shape, kernel_size: Size, *, stride: Size = 1,
           padding: Padding = 0, dilation: Size = 1, padding_mode: PaddingMode = "zeros",
           fill_value: float = 0.0) -> FloatArray:
    """The adjoint of ``im2col``: every patch entry added back to the pixel it came from.

    This is how the derivation's eq. 16-18 becomes matrix form: the full convolution of delta
    with the flipped kernel equals col2im(delta-columns), overlapping patches summed.

    Parameters
    ----------
    cols : array_like, shape ``(N*positions, C*taps)``
        A column matrix in ``im2col``'s layout, e.g. the product dy W of the backward pass.
    input_shape : tuple of int
        ``(N, C, *spatial)``, the shape of the maps the columns were taken from.
    kernel_size, stride, padding, dilation, padding_mode, fill_value
        As for ``im2col`` (a padded tap's entry is added to the pixel it was read from; a
        constant pad's is dropped).

    Returns
    -------
    x : ndarray, shape ``input_shape``
        Every entry of ``cols`` added to the pixel its patch read; float32 for float32
        columns, else float64.
    """
    cols = as_array("cols", cols)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"input_shape must be a tuple (N, C, *spatial), got {input_shape!r}")
    input_shape = tuple(integer("input_shape", s, 0) for s in input_shape)
    dtype = float_dtype(cols=cols)
    plan = _plan_for(input_shape, kernel_size, stride, padding, dilation, padding_mode,
                     fill_value, name="input_shape")
    n, c = input_shape[:2]
    expected = (n * plan.geometry.positions, c * plan.geometry.taps)
    check_ndim("cols", cols.shape, 2, "(N*positions, C*taps)")
    if cols.shape != expected:
        raise ValueError(f"cols must have shape {expected} for input_shape {input_shape}, "
                         f"got {cols.shape}")
    check_fits(nbytes_of(input_shape, dtype) + cols.size * dtype.itemsize, "col2im")
    cols_t = np.ascontiguousarray(cols.T, dtype=dtype)
    return _run.fold(cols_t, plan, _plan.unfold_units(plan))
