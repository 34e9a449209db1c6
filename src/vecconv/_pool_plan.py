"""Planning a pooling: the options and the input's shape turned into per-axis window
tables (PyTorch's semantics), which the compiled kernels (``_pool.pxi`` in the engine)
walk on the worker pool, maps in parallel.

Eq. 2 and 3 of the derivation (Haoxiang Xu's notes after Bouvrie, "Notes on
Convolutional Neural Networks", 2006) pool non-overlapping n x n areas; the tables here
describe any window, stride, padding, dilation and ``ceil_mode``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import _config
from ._engine import PoolAxis, PoolInterior
from ._options import PoolOptions
from ._plan import threads_above
from ._shapes import pool_output_size
from ._validate import check_fits

#: Window taps a forward unit reads at least (bands of output rows): enough to repay the
#: claim of a unit, small enough for many units per job.
UNIT_TAPS = 1 << 15


class PoolPlan(NamedTuple):
    """One pooling, decided: the batched input shape, the output shape, the engine's
    three axis tables (PoolAxis, D, H, W), the last axis's interior (PoolInterior), and
    the work split."""
    x_shape: tuple
    out_shape: tuple
    tables: tuple
    inner: PoolInterior
    maps: int
    taps: int               # window taps read by the whole forward pass
    rows_per_unit: int
    maps_per_unit: int

    def threads(self):
        """Threads for this pooling: the setting, or 1 below the pooling's grain."""
        return threads_above(self.taps, _config.POOL_GRAIN)


def _axis(name, n, k, s, p, dl, ceil_mode, count_include_pad):
    """(output size, first, count, div) of one axis, as PyTorch's pooling_output_shape
    and its kernels define them."""
    o = pool_output_size(name, n, k, s, p, dl, ceil_mode)
    start = np.arange(o, dtype=np.int64) * s - p
    j0 = np.maximum(0, -(start // dl))               # the first tap at or after entry 0
    j1 = np.minimum(k, -((start - n) // dl))         # the first tap at or after entry n
    count = np.maximum(j1 - j0, 0)
    first = np.where(count > 0, start + j0 * dl, 0)
    if count_include_pad:
        div = np.minimum(start + k, n + p) - start   # padding counts, the overhang does not
    else:
        div = count
    tables = [np.ascontiguousarray(t, dtype=np.int64) for t in (first, count, div)]
    for t in tables:
        t.flags.writeable = False
    return o, PoolAxis(n, dl, *tables)


def _unit_axis():
    one = np.ones(1, dtype=np.int64)
    return PoolAxis(1, 1, np.zeros(1, dtype=np.int64), one, one)


def plan_pool(x_shape, options: PoolOptions):
    """The plan of a pooling with validated ``options`` of a batched input of ``x_shape``."""
    o = options
    args = (tuple(int(n) for n in x_shape), o.d, o.kernel_size, o.stride, o.padding,
            o.dilation, o.ceil_mode, o.count_include_pad)
    # the tables hold a few int64 per output index of each axis: cached when small
    return (_cached_plan if sum(x_shape[2:]) <= 1 << 16 else _plan)(*args)


def _plan(x_shape, d, k, s, p, dl, ceil_mode, count_include_pad):
    """The plan of validated options (cached: a network pools the same shapes every
    step; the tables are read-only)."""
    names = ("depth", "height", "width")[3 - d:] if d > 1 else ("length",)
    # the tables hold a few int64 per window of each axis: counted before they are made
    sizes = [pool_output_size(names[a], x_shape[2 + a], k[a], s[a], p[a], dl[a], ceil_mode)
             for a in range(d)]
    check_fits(64 * sum(sizes), f"this pooling's window tables ({tuple(sizes)} windows)")
    outs, tables = [], []
    for a in range(d):
        o, table = _axis(names[a], x_shape[2 + a], k[a], s[a], p[a], dl[a], ceil_mode,
                         count_include_pad)
        outs.append(o)
        tables.append(table)
    tables = [_unit_axis()] * (3 - d) + tables
    return _finish(x_shape, tables, (k[-1], s[-1], p[-1]), math.prod(k))


def _finish(x_shape, tables, kw_sw_pw, window):
    """The plan of three axis tables: the last axis's interior (the run of windows wholly
    inside x, which the kernels walk tap by tap) and the work split."""
    kw, sw, pw = kw_sw_pw
    full = np.flatnonzero(tables[2].count == kw)     # count == window: wholly inside x
    lo, hi = (int(full[0]), int(full[-1]) + 1) if full.size else (0, 0)
    outs = [t.first.shape[0] for t in tables]
    maps = x_shape[0] * x_shape[1]
    out_shape = tuple(x_shape[:2]) + tuple(outs[3 - (len(x_shape) - 2):])
    row = max(1, outs[-1] * window)
    n_out, n_in = math.prod(outs), math.prod(x_shape[2:])
    return PoolPlan(tuple(x_shape), out_shape, tuple(tables), PoolInterior(kw, sw, pw, lo, hi),
                    maps, maps * n_out * window, rows_per_unit=max(1, UNIT_TAPS // row),
                    maps_per_unit=max(1, UNIT_TAPS // max(1, n_in + n_out * window)))


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
        count = table.count[o0:o1]
        local = np.where(count > 0, table.first[o0:o1] - origin, 0)
        tables.append(PoolAxis(n, table.dilation, local, np.ascontiguousarray(count),
                               np.ascontiguousarray(table.div[o0:o1])))
    kw, sw, pw = plan.inner.kw, plan.inner.sw, plan.inner.pw
    origin, o0, _ = spans[-1]
    # the window's size only sizes the work units here: its taps inside x will do
    window = math.prod(max(1, int(t.count.max(initial=0))) for t in plan.tables)
    return _finish(tuple(x_shape), tables, (kw, sw, pw + origin - o0 * sw), window)
