"""Max and average pooling over 1, 2 or 3 spatial axes (PyTorch's semantics): the public
functions.

Eq. 2 and 3 of the derivation (Haoxiang Xu's notes after Bouvrie, "Notes on
Convolutional Neural Networks", 2006) pool non-overlapping n x n areas; these functions
take any window, stride, padding, dilation (max) and ``ceil_mode``, as PyTorch's
``avg_pool{1,2,3}d`` / ``max_pool{1,2,3}d`` and ONNX's AveragePool/MaxPool do. The
backward passes are the adjoints: average pooling spreads each delta over its window
(for non-overlapping windows this is eq. 6's Kronecker up-sampling, divided by the
window size), max pooling routes each delta to the window's maximum (eq. 7-8).

Each call takes the one path: keywords -> options (``_options.pool_options``) -> plan
(``_pool_plan``) -> run (``_run``).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from .. import _run
from .._options import pool_options
from .._pool_plan import plan_pool
from .._shapes import pool_axes, spatial_layout
from .._typing import ArrayInput, FloatArray, IntArray, Shape, Size
from .._typing import like as _like
from .._validate import (as_array, check_fits, check_gradient_shape, flag, float_dtype, floats,
                         integer, nbytes_of)

__all__ = ["avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d", "avg_pool_backward",
           "max_pool", "max_pool1d", "max_pool2d", "max_pool3d", "max_pool_backward"]


def _batched_shape(shape, kernel_size, fixed, fname):
    """(the batched shape, d, whether it came unbatched); empty spatial axes refused."""
    d, unbatched = pool_axes(shape, kernel_size, fixed, fname)
    if any(n == 0 for n in shape[-d:]):
        raise ValueError(f"x must have spatial axes of at least 1 entry, got shape "
                         f"{tuple(shape)}")
    return ((1,) if unbatched else ()) + tuple(shape), d, unbatched


def _input(x, kernel_size, fixed, fname):
    x = as_array("x", x)
    shape, d, unbatched = _batched_shape(x.shape, kernel_size, fixed, fname)
    return x.reshape(shape), d, unbatched



_BATCH_RULE = ("        With an int ``kernel_size`` x is batched and has d = ``x.ndim - 2`` "
               "spatial axes;\n        with a tuple, d = ``len(kernel_size)`` and x may be "
               "batched or unbatched.\n")


def avg_pool(x: ArrayInput, kernel_size: Size, *, stride: Size | None = None,
             padding: Size = 0, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None) -> FloatArray:
    """Average pooling over 1, 2 or 3 spatial axes (PyTorch's ``avg_pool{1,2,3}d``).

    The mean of each window, eq. 2 of the derivation with beta = 1/window and no bias
    (vecconv's ``nn.Subsampling`` keeps the trainable beta and bias of eq. 2).

    Parameters
    ----------
    x : array_like, shape ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``
        The maps to pool.
{rule}    kernel_size : int or d ints
        The window.
    stride : int or d ints, optional
        The window's step; ``kernel_size`` when None.
    padding : int or d ints
        Implicit zeros on both sides of each axis, at most half the window.
    ceil_mode : bool
        Round the output size up: a last, partial window is kept when it starts inside x
        or in the padding before it.
    count_include_pad : bool
        Whether the padding counts in the divisor (the part of a ``ceil_mode`` window past
        the padding never does).
    divisor_override : int, optional
        A fixed divisor for every window (1 gives the window sums, eq. 2's down()).

    Returns
    -------
    y : ndarray, shape ``(N, C, *out)``, unbatched for an unbatched x
        The window means: float32 for float32 and float16 x, float64 for float64, integer
        and bool x. Along each axis of n entries, out = floor((n + 2 p - k) / s) + 1
        (ceil with ``ceil_mode``).
    """
    return _avg(None, "avg_pool", x, kernel_size, stride, padding, ceil_mode,
                count_include_pad, divisor_override)


def _avg(fixed, fname, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
         divisor_override):
    x, d, unbatched = _input(x, kernel_size, fixed, fname)
    options = pool_options(d, kernel_size, stride=stride, padding=padding,
                           ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    plan = plan_pool(x.shape, options)
    dtype = float_dtype(x=x)
    _run.check_pool_memory(plan, dtype)
    y = _run.pool_forward(floats(dtype, x), plan, False, options.divisor)
    return y[0] if unbatched else y


avg_pool.__doc__ = avg_pool.__doc__.replace("{rule}", _BATCH_RULE)  # type: ignore[union-attr]


@overload
def max_pool(x: ArrayInput, kernel_size: Size, *, stride: Size | None = None,
             padding: Size = 0, dilation: Size = 1, ceil_mode: bool = False,
             return_indices: Literal[False] = False) -> FloatArray: ...
@overload
def max_pool(x: ArrayInput, kernel_size: Size, *, stride: Size | None = None,
             padding: Size = 0, dilation: Size = 1, ceil_mode: bool = False,
             return_indices: Literal[True]) -> tuple[FloatArray, IntArray]: ...
@overload
def max_pool(x: ArrayInput, kernel_size: Size, *, stride: Size | None = None,
             padding: Size = 0, dilation: Size = 1, ceil_mode: bool = False,
             return_indices: bool) -> FloatArray | tuple[FloatArray, IntArray]: ...
def max_pool(x: ArrayInput, kernel_size: Size, *, stride: Size | None = None,
             padding: Size = 0, dilation: Size = 1, ceil_mode: bool = False,
             return_indices: bool = False) -> FloatArray | tuple[FloatArray, IntArray]:
    """Max pooling over 1, 2 or 3 spatial axes (PyTorch's ``max_pool{1,2,3}d``).

    Eq. 3 of the derivation: the largest entry of each window. Ties go to the first entry
    in row-major order within the window; a NaN in the window gives NaN, and the index of
    the last NaN of the window, as in PyTorch.

    Parameters
    ----------
    x : array_like, shape ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``
        The maps to pool, as for ``avg_pool``.
    kernel_size : int or d ints
        The window (before dilation).
    stride : int or d ints, optional
        The window's step; ``kernel_size`` when None.
    padding : int or d ints
        Implicit -inf on both sides of each axis, at most half the window.
    dilation : int or d ints
        The step between a window's taps.
    ceil_mode : bool
        As for ``avg_pool``.
    return_indices : bool
        Also return where each maximum came from: its flat position in its own map
        (``h * W + w`` in 2-D), int64, as PyTorch's indices; ``max_pool_backward`` takes
        them. A window with no entry inside x (possible with a large dilation) gives -inf
        and index -1.

    Returns
    -------
    y : ndarray, shape ``(N, C, *out)``, unbatched for an unbatched x
        The window maxima, in x's float dtype. Along each axis of n entries,
        out = floor((n + 2 p - dilation (k - 1) - 1) / s) + 1 (ceil with ``ceil_mode``).
    indices : ndarray of int64
        Only with ``return_indices``: the shape of y, each maximum's flat position in
        its map.
    """
    return _max(None, "max_pool", x, kernel_size, stride, padding, dilation, ceil_mode,
                return_indices)


def _max(fixed, fname, x, kernel_size, stride, padding, dilation, ceil_mode,
         return_indices):
    x, d, unbatched = _input(x, kernel_size, fixed, fname)
    want_indices = flag("return_indices", return_indices)
    options = pool_options(d, kernel_size, stride=stride, padding=padding, dilation=dilation,
                           ceil_mode=ceil_mode)
    plan = plan_pool(x.shape, options)
    dtype = float_dtype(x=x)
    _run.check_pool_memory(plan, dtype,
                           nbytes_of(plan.out_shape, np.int64) if want_indices else 0)
    out = _run.pool_forward(floats(dtype, x), plan, True, want_indices=want_indices)
    if not return_indices:
        return out[0] if unbatched else out
    y, idx = out
    return (y[0], idx[0]) if unbatched else (y, idx)


def _backward_input(fname: str, dy: object, x_shape: Any,
                    kernel_size: Any) -> tuple[NDArray[Any], Any, int, bool]:
    """(dy batched, batched x shape, d, unbatched) for a backward call."""
    dy = as_array("dy", dy)
    xb_shape, d, unbatched = _batched_shape(x_shape, kernel_size, None, fname)
    return (dy[None] if unbatched else dy), xb_shape, d, unbatched


def _x_shape(x_or_x_shape):
    """The shape from an array or a shape tuple (the backward passes need only that). A
    flat tuple or list of numbers is a shape (an x has 3 dimensions at least), and each
    entry must then be an int."""
    if isinstance(x_or_x_shape, (tuple, list)) and all(
            isinstance(v, (numbers.Number, np.number)) for v in x_or_x_shape):
        for v in x_or_x_shape:
            integer("x_shape entry", v, 0)
        return tuple(int(v) for v in x_or_x_shape), None
    x = as_array("x", x_or_x_shape)
    return x.shape, x


def avg_pool_backward(dy: ArrayInput, x_or_x_shape: ArrayInput | Shape, *, kernel_size: Size,
                      stride: Size | None = None, padding: Size = 0, ceil_mode: bool = False,
                      count_include_pad: bool = True,
                      divisor_override: int | None = None) -> FloatArray:
    """dE/dx of ``avg_pool`` given dy = dE/dy: each delta divided by its window's divisor
    and added to every entry of the window (eq. 6's up-sampling for non-overlapping
    windows).

    Parameters
    ----------
    dy : array_like
        The gradient of the output, of ``avg_pool``'s output shape.
    x_or_x_shape : array_like or tuple of ints
        x itself or only its shape (batched or unbatched, as given to ``avg_pool``).
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to ``avg_pool``.

    Returns
    -------
    dx : ndarray
        dE/dx, of x's shape, in dy's float dtype (float32 stays float32).
    """
    x_shape, x = _x_shape(x_or_x_shape)
    fname = "avg_pool_backward"
    dy, xb_shape, d, unbatched = _backward_input(fname, dy, x_shape, kernel_size)
    options = pool_options(d, kernel_size, stride=stride, padding=padding,
                           ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    plan = plan_pool(xb_shape, options)
    check_gradient_shape("dy", dy.shape, plan.out_shape, unbatched, "this pooling")
    dtype = float_dtype(dy=dy)
    check_fits(nbytes_of(xb_shape, dtype), "this pooling's input gradient")
    dx = _run.pool_backward(floats(dtype, dy), plan, False, options.divisor)
    return dx[0] if unbatched else dx


def max_pool_backward(dy: ArrayInput, x: ArrayInput | Shape, *, kernel_size: Size,
                      stride: Size | None = None, padding: Size = 0, dilation: Size = 1,
                      ceil_mode: bool = False, indices: ArrayInput | None = None) -> FloatArray:
    """dE/dx of ``max_pool`` given dy = dE/dy: each delta goes to the position its window
    took the maximum from (eq. 7-8); overlapping windows add up.

    Parameters
    ----------
    dy : array_like
        The gradient of the output, of ``max_pool``'s output shape.
    x : array_like
        The input given to ``max_pool`` (its shape alone when ``indices`` is given).
    kernel_size, stride, padding, dilation, ceil_mode
        As given to ``max_pool``.
    indices : array_like of int, optional
        ``max_pool(..., return_indices=True)``'s indices, used instead of recomputing the
        argmax from x; each must be a position inside its map (or -1: no gradient).

    Returns
    -------
    dx : ndarray
        dE/dx, of x's shape, in dy's float dtype; zero where no window took its maximum.
    """
    fname = "max_pool_backward"
    x_shape, xa = _x_shape(x)
    dy, xb_shape, d, unbatched = _backward_input(fname, dy, x_shape, kernel_size)
    options = pool_options(d, kernel_size, stride=stride, padding=padding, dilation=dilation,
                           ceil_mode=ceil_mode)
    plan = plan_pool(xb_shape, options)
    check_gradient_shape("dy", dy.shape, plan.out_shape, unbatched, "this pooling")
    dtype = float_dtype(dy=dy)
    check_fits(nbytes_of(xb_shape, dtype) + nbytes_of(plan.out_shape, np.int64),
               "this pooling's input gradient")
    if indices is None:
        if xa is None:
            raise ValueError("max_pool_backward needs x itself (not its shape) when no "
                             "indices are given")
        xa = xa[None] if unbatched else xa
        _, idx = _run.pool_forward(floats(float_dtype(x=xa), xa), plan, True,
                                   want_indices=True)
    else:
        idx = as_array("indices", indices)
        idx = idx[None] if unbatched else idx
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
        if idx.shape != plan.out_shape:
            raise ValueError(f"indices must have the output shape "
                             f"{plan.out_shape[1:] if unbatched else plan.out_shape}, got "
                             f"{idx.shape[1:] if unbatched else idx.shape}")
        if idx.dtype.kind == "u" and idx.size and idx.max() > np.iinfo(np.int64).max:
            raise ValueError("indices must be positions inside each map")
        idx = np.ascontiguousarray(idx, dtype=np.int64)
    dx = _run.pool_backward(floats(dtype, dy), plan, True, indices=idx)
    return dx[0] if unbatched else dx


def _fixed(kind, d):
    if kind == "avg":
        def f(x, kernel_size, *, stride=None, padding=0, ceil_mode=False,
              count_include_pad=True, divisor_override=None):
            return _avg(d, f.__name__, x, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override)
        base = avg_pool
    else:
        def f(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,  # type: ignore[misc]
              return_indices=False):
            return _max(d, f.__name__, x, kernel_size, stride, padding, dilation, ceil_mode,
                        return_indices)
        base = max_pool
    name = f"{kind}_pool{d}d"
    f.__name__ = f.__qualname__ = name
    f.__module__ = __name__
    f.__doc__ = (f"``{base.__name__}`` with {d} spatial axe{'s' if d > 1 else ''}: x is "
                 f"``(N, C, *{spatial_layout(d)})`` or unbatched ``(C, *{spatial_layout(d)})``, "
                 f"whether "
                 f"kernel_size is an int or a tuple; an int kernel_size, stride, "
                 f"padding{', dilation' if kind == 'max' else ''} applies to every axis.\n\n"
                 + base.__doc__.split("\n\n", 1)[1].replace(_BATCH_RULE, ""))
    return f


avg_pool1d, avg_pool2d, avg_pool3d = (_like(avg_pool, _fixed("avg", d)) for d in (1, 2, 3))
if TYPE_CHECKING:      # max_pool's overloads (on return_indices); a ParamSpec keeps one
    max_pool1d = max_pool2d = max_pool3d = max_pool
else:
    max_pool1d, max_pool2d, max_pool3d = (_like(max_pool, _fixed("max", d)) for d in (1, 2, 3))
