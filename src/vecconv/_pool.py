"""Max and average pooling over 1, 2 or 3 spatial axes (PyTorch's semantics).

Eq. 2 and 3 of the derivation (Haoxiang Xu's notes after Bouvrie, "Notes on
Convolutional Neural Networks", 2006) pool non-overlapping n x n areas; these functions
take any window, stride, padding, dilation (max) and ``ceil_mode``, as PyTorch's
``avg_pool{1,2,3}d`` / ``max_pool{1,2,3}d`` and ONNX's AveragePool/MaxPool do. The
backward passes are the adjoints: average pooling spreads each delta over its window
(for non-overlapping windows this is eq. 6's Kronecker up-sampling, divided by the
window size), max pooling routes each delta to the window's maximum (eq. 7-8).

The planning here turns the options into per-axis window tables; the compiled kernels
(``_pool.pxi`` in the engine) walk them on the worker pool, maps in parallel.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

from . import _engine
from ._args import as_array, check_fits, float_dtype, floats, int_tuple, integer, nbytes_of
from ._threads import env_int, get_num_threads
from ._typing import ArrayInput, FloatArray, IntArray, Shape, Size
from ._typing import like as _like

__all__ = ["avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d", "avg_pool_backward",
           "max_pool", "max_pool1d", "max_pool2d", "max_pool3d", "max_pool_backward"]

#: Window taps a forward unit reads at least (bands of output rows): enough to repay the
#: claim of a unit, small enough for many units per job.
UNIT_TAPS = 1 << 15
#: Below this many window taps a pooling runs in the calling thread alone (waking a
#: worker costs more than the pass). Measured with bench/pool.py.
POOL_GRAIN = env_int("VECCONV_POOL_GRAIN", 1 << 17, 0)

_NAMES = {1: "(L,)", 2: "(H, W)", 3: "(D, H, W)"}


class PoolPlan(NamedTuple):
    """One pooling, decided: the batched input shape, the output shape, the engine's
    three (n, dilation, first, count, div) axis tables, the last axis's interior
    (window, stride, padding, first and end output whose window lies wholly in x), and
    the work split."""
    x_shape: tuple
    out_shape: tuple
    tables: tuple
    inner: tuple
    maps: int
    taps: int               # window taps read by the whole forward pass
    rows_per_unit: int
    maps_per_unit: int

    def threads(self):
        n = get_num_threads()
        if n <= 1 or self.taps < POOL_GRAIN or not _engine.have_threads():
            return 1
        return n


def _axis(name, n, k, s, p, dl, ceil_mode, count_include_pad):
    """(output size, first, count, div) of one axis, as PyTorch's pooling_output_shape
    and its kernels define them."""
    span = dl * (k - 1) + 1
    top = n + 2 * p - span + ((s - 1) if ceil_mode else 0)
    o = top // s + 1                                 # floor division, as PyTorch's div_rtn
    if ceil_mode and (o - 1) * s >= n + p:           # the last window must start in x or
        o -= 1                                       # in the padding before it
    if o < 1:
        raise ValueError(f"the {name} window (size {k}, dilation {dl}) does not fit the "
                         f"input's {n} entries with padding {p}: the output would be empty")
    start = np.arange(o, dtype=np.int64) * s - p
    j0 = np.maximum(0, -(start // dl))               # the first tap at or after entry 0
    j1 = np.minimum(k, -((start - n) // dl))         # the first tap at or after entry n
    count = np.maximum(j1 - j0, 0)
    first = np.where(count > 0, start + j0 * dl, 0)
    if count_include_pad:
        div = np.minimum(start + k, n + p) - start   # padding counts, the overhang does not
    else:
        div = count
    return o, (n, dl, first, count, np.ascontiguousarray(div, dtype=np.int64))


def _unit_axis():
    one = np.ones(1, dtype=np.int64)
    return (1, 1, np.zeros(1, dtype=np.int64), one, one)


def _spatial(shape, kernel_size, fixed, fname):
    """(d, whether the input is unbatched) for an input of ``shape``, by the rules of
    ``avg_pool``: d fixed, or len(kernel_size), or ndim - 2 for an int kernel_size."""
    ndim = len(shape)
    if fixed is not None:
        d = fixed
    elif isinstance(kernel_size, (tuple, list)):
        d = len(kernel_size)
        if d not in _NAMES:
            raise ValueError(f"kernel_size must have 1, 2 or 3 entries, got {kernel_size!r}")
    else:
        d = ndim - 2
        if d not in _NAMES:
            raise ValueError(f"{fname} with an int kernel_size needs x of shape (N, C, *spatial) "
                             f"with 1, 2 or 3 spatial axes, got shape {tuple(shape)} (give "
                             f"kernel_size as a tuple for an unbatched x)")
        return d, False
    if ndim in (d + 1, d + 2):
        return d, ndim == d + 1
    raise ValueError(f"{fname} needs x of shape (N, C, *{_NAMES[d]}) or (C, *{_NAMES[d]}) for "
                     f"a {d}-D window, got shape {tuple(shape)}")


def plan_pool(x_shape, d, kernel_size, stride, padding, dilation, ceil_mode,
              count_include_pad):
    """Validate the options for a batched input of ``x_shape`` and build the plan."""
    k = int_tuple("kernel_size", kernel_size, d, 1)
    s = k if stride is None else int_tuple("stride", stride, d, 1)
    p = int_tuple("padding", padding, d, 0)
    dl = int_tuple("dilation", dilation, d, 1)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"ceil_mode must be True or False, got {ceil_mode!r}")
    for a in range(d):
        if 2 * p[a] > k[a]:
            raise ValueError(f"padding must be at most half the window: padding {p[a]} for a "
                             f"window of {k[a]} (kernel_size={k}, padding={p})")
    args = (tuple(int(n) for n in x_shape), d, k, s, p, dl, bool(ceil_mode),
            bool(count_include_pad))
    # the tables hold a few int64 per output index of each axis: cached when small
    return (_cached_plan if sum(x_shape[2:]) <= 1 << 16 else _plan)(*args)


def _plan(x_shape, d, k, s, p, dl, ceil_mode, count_include_pad):
    """The plan of validated options (cached: a network pools the same shapes every
    step; the tables are read-only)."""
    names = ("depth", "height", "width")[3 - d:] if d > 1 else ("length",)
    outs, tables = [], []
    for a in range(d):
        o, table = _axis(names[a], x_shape[2 + a], k[a], s[a], p[a], dl[a], ceil_mode,
                         count_include_pad)
        for t in table[2:]:
            t.flags.writeable = False
        outs.append(o)
        tables.append(table)
    tables = [_unit_axis()] * (3 - d) + tables
    return _finish(x_shape, tables, (k[-1], s[-1], p[-1]), math.prod(k))


def _finish(x_shape, tables, kw_sw_pw, window):
    """The plan of three axis tables: the last axis's interior (the run of windows wholly
    inside x, which the kernels walk tap by tap) and the work split."""
    kw, sw, pw = kw_sw_pw
    full = np.flatnonzero(tables[2][3] == kw)        # count == window: wholly inside x
    lo, hi = (int(full[0]), int(full[-1]) + 1) if full.size else (0, 0)
    outs = [t[2].shape[0] for t in tables]
    maps = x_shape[0] * x_shape[1]
    out_shape = tuple(x_shape[:2]) + tuple(outs[3 - (len(x_shape) - 2):])
    row = max(1, outs[-1] * window)
    O, S = math.prod(outs), math.prod(x_shape[2:])
    return PoolPlan(tuple(x_shape), out_shape, tuple(tables), (kw, sw, pw, lo, hi), maps,
                    maps * O * window, rows_per_unit=max(1, UNIT_TAPS // row),
                    maps_per_unit=max(1, UNIT_TAPS // max(1, S + O * window)))


_cached_plan = functools.lru_cache(maxsize=64)(_plan)


def block_plan(plan, x_shape, spans):
    """The plan of one block of a larger pooling (``vecconv.dask``): the windows
    ``o0 <= o < o1`` of each spatial axis, read from a block of x that starts at entry
    ``origin`` of that axis. ``spans`` holds one (origin, o0, o1) per spatial axis and
    ``x_shape`` is the block's batched shape. The windows keep their taps and divisors,
    so a block computes exactly what the whole pooling computes there."""
    d = len(spans)
    tables = list(plan.tables[:3 - d])
    for (origin, o0, o1), n, table in zip(spans, x_shape[2:], plan.tables[3 - d:]):
        _, dl, first, count, div = table
        count = count[o0:o1]
        local = np.where(count > 0, first[o0:o1] - origin, 0)
        tables.append((n, dl, local, np.ascontiguousarray(count),
                       np.ascontiguousarray(div[o0:o1])))
    kw, sw, pw = plan.inner[:3]
    origin, o0, _ = spans[-1]
    # the window's size only sizes the work units here: its taps inside x will do
    window = math.prod(max(1, int(t[3].max(initial=0))) for t in plan.tables)
    return _finish(tuple(x_shape), tables, (kw, sw, pw + origin - o0 * sw), window)


def _batched_shape(shape, kernel_size, fixed, fname):
    """(the batched shape, d, whether it came unbatched); empty spatial axes refused."""
    d, unbatched = _spatial(shape, kernel_size, fixed, fname)
    if any(n == 0 for n in shape[-d:]):
        raise ValueError(f"x must have spatial axes of at least 1 entry, got shape "
                         f"{tuple(shape)}")
    return ((1,) if unbatched else ()) + tuple(shape), d, unbatched


def _input(x, kernel_size, fixed, fname):
    x = as_array("x", x)
    shape, d, unbatched = _batched_shape(x.shape, kernel_size, fixed, fname)
    return x.reshape(shape), d, unbatched


def _divisor(divisor_override):
    if divisor_override is None:
        return 0.0
    v = integer("divisor_override", divisor_override, -2**62)
    if v == 0:
        raise ValueError("divisor_override must be a nonzero int, got 0")
    return float(v)


def run_forward(x, plan, is_max, override=0.0, want_indices=False):
    """y (and the argmax indices, for max pooling) of a clean x under ``plan``."""
    y = np.empty(plan.out_shape, dtype=x.dtype)
    idx = np.empty(plan.out_shape if want_indices else 0, dtype=np.int64)
    _engine.pool_forward(x.reshape(-1), y.reshape(-1), idx.reshape(-1), plan.tables,
                         plan.inner, plan.maps, is_max, override, plan.rows_per_unit, plan.threads())
    return (y, idx) if want_indices else y


def run_backward(dy, plan, is_max, override=0.0, indices=None):
    """dx of shape plan.x_shape from a clean dy (and the argmax indices for max)."""
    dx = np.empty(plan.x_shape, dtype=dy.dtype)
    idx = np.empty(0, dtype=np.int64) if indices is None else indices
    ok = _engine.pool_backward(dy.reshape(-1), dx.reshape(-1), idx.reshape(-1), plan.tables,
                               plan.inner, plan.maps, is_max, override, plan.maps_per_unit,
                               plan.threads())
    if not ok:
        raise ValueError(f"indices must be positions inside each map, 0 <= i < "
                         f"{math.prod(plan.x_shape[2:])} (or -1 for a window that held no "
                         f"entry of x)")
    return dx


def _check_memory(plan, dtype, extra=0):
    out = nbytes_of(plan.out_shape, dtype)
    check_fits(out + extra, "this pooling's output")


# ----------------------------------------------------------------------------- public
_BATCH_RULE = ("        With an int ``kernel_size`` x is batched and has d = ``x.ndim - 2`` "
               "spatial axes;\n        with a tuple, d = ``len(kernel_size)`` and x may be "
               "batched or unbatched.\n")


def avg_pool(x: ArrayInput, kernel_size: Size, *, stride: Size | None = None,
             padding: Size = 0, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None) -> FloatArray:
    """Average pooling over 1, 2 or 3 spatial axes (PyTorch's ``avg_pool{1,2,3}d``).

    The mean of each window, eq. 2 of the derivation with beta = 1/window and no bias
    (vecconv's ``nn.AvgPool`` keeps the trainable beta and bias of eq. 2).

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
    _check_flag("count_include_pad", count_include_pad)
    override = _divisor(divisor_override)
    plan = plan_pool(x.shape, d, kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad)
    dtype = float_dtype(x=x)
    _check_memory(plan, dtype)
    y = run_forward(floats(dtype, x), plan, False, override)
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
    _check_flag("return_indices", return_indices)
    plan = plan_pool(x.shape, d, kernel_size, stride, padding, dilation, ceil_mode, True)
    dtype = float_dtype(x=x)
    _check_memory(plan, dtype, nbytes_of(plan.out_shape, np.int64) if return_indices else 0)
    out = run_forward(floats(dtype, x), plan, True, want_indices=bool(return_indices))
    if not return_indices:
        return out[0] if unbatched else out
    y, idx = out
    return (y[0], idx[0]) if unbatched else (y, idx)


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _backward_input(fname: str, dy: object, x_shape: Any,
                    kernel_size: Any) -> tuple[NDArray[Any], Any, int, bool]:
    """(dy batched, batched x shape, d, unbatched) for a backward call."""
    dy = as_array("dy", dy)
    xb_shape, d, unbatched = _batched_shape(x_shape, kernel_size, None, fname)
    return (dy[None] if unbatched else dy), xb_shape, d, unbatched


def _x_shape(x_or_x_shape):
    """The shape from an array or a shape tuple (the backward passes need only that)."""
    if isinstance(x_or_x_shape, (tuple, list)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            for v in x_or_x_shape):
        for v in x_or_x_shape:
            integer("x_shape entry", v, 0)
        return tuple(int(v) for v in x_or_x_shape), None
    x = as_array("x", x_or_x_shape)
    return x.shape, x


def _check_dy(dy, plan, unbatched):
    if dy.shape != plan.out_shape:
        want = plan.out_shape[1:] if unbatched else plan.out_shape
        raise ValueError(f"dy must have the pooling's output shape {want}, got "
                         f"{dy.shape[1:] if unbatched else dy.shape}")


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
    _check_flag("count_include_pad", count_include_pad)
    override = _divisor(divisor_override)
    plan = plan_pool(xb_shape, d, kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad)
    _check_dy(dy, plan, unbatched)
    dtype = float_dtype(dy=dy)
    check_fits(nbytes_of(xb_shape, dtype), "this pooling's input gradient")
    dx = run_backward(floats(dtype, dy), plan, False, override)
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
    plan = plan_pool(xb_shape, d, kernel_size, stride, padding, dilation, ceil_mode, True)
    _check_dy(dy, plan, unbatched)
    dtype = float_dtype(dy=dy)
    check_fits(nbytes_of(xb_shape, dtype) + nbytes_of(plan.out_shape, np.int64),
               "this pooling's input gradient")
    if indices is None:
        if xa is None:
            raise ValueError("max_pool_backward needs x itself (not its shape) when no "
                             "indices are given")
        xa = xa[None] if unbatched else xa
        _, idx = run_forward(floats(float_dtype(x=xa), xa), plan, True, want_indices=True)
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
    dx = run_backward(floats(dtype, dy), plan, True, indices=idx)
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
                 f"``(N, C, *{_NAMES[d]})`` or unbatched ``(C, *{_NAMES[d]})``, whether "
                 f"kernel_size is an int or a tuple; an int kernel_size, stride, "
                 f"padding{', dilation' if kind == 'max' else ''} applies to every axis.\n\n"
                 + base.__doc__.split("\n\n", 1)[1].replace(_BATCH_RULE, ""))
    return f


avg_pool1d, avg_pool2d, avg_pool3d = (_like(avg_pool, _fixed("avg", d)) for d in (1, 2, 3))
if TYPE_CHECKING:      # max_pool's overloads (on return_indices); a ParamSpec keeps one
    max_pool1d = max_pool2d = max_pool3d = max_pool
else:
    max_pool1d, max_pool2d, max_pool3d = (_like(max_pool, _fixed("max", d)) for d in (1, 2, 3))
