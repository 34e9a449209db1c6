"""Running plans: the one path from validated arrays and a Plan to the engine.

Every front end ends here: ``conv_forward``, ``conv_backward``, ``transposed_forward``
and ``transposed_backward`` take arrays (any layout; copied to clean contiguous arrays of
the plan's dtype) and a plan from ``_plan``, check that the machine can hold what the
pass allocates (copies included), run the plan's route, and return new arrays. Pooling
plans run through ``pool_forward``/``pool_backward``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _direct, _engine, _fft, _winograd
from ._plan import Plan, Route, pool_threads, threads_for, unfold_units
from ._validate import check_fits, copy_bytes, floats, nbytes_of


# ----------------------------------------------------------------------------- weights
def _per_tap(mask, ndim):
    return mask.reshape(mask.shape + (1,) * (ndim - 2))


def _flipped(w):
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]


def effective_weight(w, plan):
    """The (Cout, C/groups*taps) matrix the GEMMs use: flipped, masked, contiguous.

    The rows are vec of each kernel read in C order, to match the column buffer. Kernels
    of pairs the connection table leaves out are exactly 0, whatever they hold (selected
    away, not multiplied by 0: NaN * 0 is NaN).
    """
    w = np.asarray(w).reshape(plan.w_shape)
    if plan.flip:
        w = _flipped(w)                                    # J k J (eq. 14)
    if plan.mask is not None:
        w = np.where(_per_tap(plan.mask, w.ndim), w, 0)
    return np.ascontiguousarray(w, dtype=plan.dtype).reshape(plan.w_shape[0], -1)


def weight_gradient(dw2, plan):
    """The kernel gradient in the layout of w from the engine's (Cout, K) matrix; exactly
    0 for pairs the connection table leaves out. Always a new array with positive strides
    (a flipped view of size-1 axes would count as contiguous with negative strides)."""
    dw = dw2.reshape(plan.w_shape)
    if plan.flip:
        dw = _flipped(dw)
    if plan.mask is not None:
        dw = np.where(_per_tap(plan.mask, dw.ndim), dw, 0)
    return np.array(dw, dtype=plan.dtype, order="C", copy=True)


def bias_gradient(dy, dtype):
    """dE/db_j = the sum of delta_j over the batch and every position (eq. 10)."""
    return dy.sum(axis=tuple(range(2, dy.ndim)), dtype=dtype).sum(axis=0)


# ----------------------------------------------------------------------------- routes
def _image_ranges(a):
    """Per image of a batched array: (largest magnitude, root mean square), without a copy
    of the array; NaN where the image holds a NaN (an overflowing square sum gives an
    infinite rms, which only a huge largest value can cause)."""
    n = a.shape[0]
    if not a.size:
        return np.zeros(n), np.zeros(n)
    flat = a.reshape(n, -1)
    top = np.maximum(flat.max(axis=1), -flat.min(axis=1)).astype(np.float64)
    squares = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)    # float64: no overflow
    return top, np.sqrt(squares / flat.shape[1])


def _route_ok(plan, route, x, others=(), w=None):
    """Per image: whether ``route`` may compute it, or None when every image may.

    The GEMM routes touch an output only with the values its window reads, except under a
    connection table that leaves pairs out, where the one dense product would turn 0 * inf
    into NaN in maps the table does not connect: there an image holding a NaN or inf needs
    PER_MAP. The FFT route mixes a whole tile: it takes only images whose values are
    finite, and (algorithm='auto') whose largest value is within reach of their typical
    one, the accuracy policy: its rounding error, about eps log2(F) max|x| |k| per output,
    must stay within 4x the GEMM's, about eps sqrt(taps) |x| |k|.
    """
    n = plan.x_shape[0]
    fill_ok = math.isfinite(plan.geometry.fill)
    if route is Route.WINOGRAD:
        return _winograd_ok(plan, x, w, others)
    if route is Route.FFT:
        if w is not None and not np.isfinite(w).all():
            return np.zeros(n, dtype=bool)
        top, rms = _image_ranges(x)
        fill = plan.geometry.fill
        # a constant pad is read like x: it must be finite in the working dtype, and it
        # counts among the values the transform mixes
        with np.errstate(over="ignore"):
            fill_ok = fill_ok and bool(np.isfinite(plan.dtype.type(fill)))
        if fill != 0:                   # (conservative where no pad is read)
            top = np.maximum(top, abs(fill))
        ok = np.isfinite(top) & np.isfinite(rms) & fill_ok
        with np.errstate(over="ignore", invalid="ignore"):
            # the transform's sums stay far from the dtype's overflow
            f = math.prod(plan.fft_tiles[1])
            ok &= top * f * max(float(np.abs(w).sum()), 1.0) < np.finfo(plan.dtype).max / 64
            if plan.options.algorithm == "auto":
                ok &= math.log2(max(f, 2)) * top <= 4 * math.sqrt(plan.geometry.taps) * rms \
                    + np.finfo(np.float64).tiny
        for a in others:
            if a is not None and a.size:
                ok &= np.isfinite(a.reshape(n, -1)).all(axis=1)
        return None if ok.all() else ok
    if not plan.masked:
        return None
    if not fill_ok:
        return np.zeros(n, dtype=bool)
    ok = np.ones(n, dtype=bool)
    for a in (x,) + tuple(others):
        if a is not None and a.size:
            ok &= np.isfinite(a.reshape(n, -1)).all(axis=1)
    return None if ok.all() else ok


def _winograd_ok(plan, x, w, others=(), fill=True):
    """The Winograd route mixes the values of a tile: it takes only images whose values
    (and the kernels, and a constant pad the pass reads: ``fill``) are finite and far
    enough from the dtype's overflow that no sum the route makes can overflow where
    eq. 1's could not: each output is at most max|x| sum|w| grown by the transforms
    (``_winograd.growth``), which is held below the dtype's largest value. sum|w| is
    bounded by max|w| times the entries (two passes over w, no copy, no float64 sum:
    a 512 x 512 x 3 x 3 layer's abs-and-sum took 7% of its forward pass)."""
    n = x.shape[0]
    top = float(np.finfo(plan.dtype).max) / 4       # (Python floats: no overflow warning)
    w_sum = 1.0
    if w is not None and w.size:
        w_sum = max(float(w.max()), -float(w.min())) * float(w.size)   # (NaN stays NaN)
    with np.errstate(over="ignore", invalid="ignore"):
        fill_v = abs(float(plan.dtype.type(plan.geometry.fill))) if fill else 0.0
    m = plan.winograd[0] if plan.winograd else (plan.dx_winograd or plan.dw_winograd)[0]
    limit = top / (_winograd.growth(plan.geometry, m) * max(w_sum, 1.0))
    if not (math.isfinite(w_sum) and math.isfinite(fill_v) and fill_v < limit):
        return np.zeros(n, dtype=bool)
    if not x.size:
        return None
    flat = x.reshape(n, -1)
    with np.errstate(invalid="ignore"):
        ok = (flat.max(axis=1) < limit) & (flat.min(axis=1) > -limit)   # (False for NaN)
    for a in others:
        if a is not None and a.size:
            ok &= np.isfinite(a.reshape(n, -1)).all(axis=1)
    return None if ok.all() else ok


def _fallback(plan, route):
    """Where an image goes that ``route`` may not compute."""
    if plan.masked:
        return Route.PER_MAP
    return plan.backward_route if route in (Route.FFT, Route.WINOGRAD) else route


def _without(a, bad):
    """A copy of a with the images ``bad`` set to zero (they are computed elsewhere): the
    route then runs on the whole batch, with the same tiles and so the same bits for every
    other image."""
    if a is None:
        return None
    a = a.copy()
    a[bad] = 0
    return a


def _by_output_map(plan, w2):
    """(j, the input maps j reads, its plan, its (1, |M_j|*taps) weight) for each map j:
    eq. 1 literally, z_j = sum over i in M_j of x_i * k_ij."""
    taps = plan.geometry.taps
    for j in range(plan.out_shape[1]):
        inputs = np.flatnonzero(plan.mask[j])
        if inputs.size:
            wj = w2[j].reshape(-1, taps)[inputs].reshape(1, -1)
            yield j, inputs, plan.for_inputs(inputs), np.ascontiguousarray(wj)


def _flat(a):
    return a.reshape(-1)


def _engine_args(plan):
    n, cout = plan.out_shape[:2]
    threads = plan.threads()
    return plan.geometry, plan.schedule, n, cout, plan.groups, threads, plan.slots(threads)


def _engine_forward(x, w2, bias, plan):
    y = np.empty(plan.out_shape, dtype=plan.dtype)
    b = bias if bias is not None else np.empty(0, dtype=plan.dtype)
    _engine.conv_forward(_flat(x), _flat(w2), b, _flat(y), bias is not None,
                         *_engine_args(plan))
    return y


def _per_map_forward(x, w2, bias, plan):
    y = np.zeros(plan.out_shape, dtype=plan.dtype)
    if bias is not None:            # a map that reads no input is its bias
        y[:] = bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    for j, inputs, sub, wj in _by_output_map(plan, w2):
        y[:, j:j + 1] = _engine_forward(np.ascontiguousarray(x[:, inputs]), wj,
                                        None if bias is None else bias[j:j + 1], sub)
    return y


def _winograd_run(x, w2, bias, plan, dx=False):
    """The forward pass (or, dx True, the dx pass: x is dy) on the Winograd route."""
    geometry, cout, (m, sched) = plan.winograd_pass(dx)
    threads = plan.threads()
    slots = _winograd.slots_within(m, sched, geometry, cout, plan.groups,
                                   plan.dtype.itemsize, plan.workspace, threads)
    y = _winograd.run(x, w2, bias, geometry, cout, plan.groups, m, sched, threads, slots,
                      adjoint_of=plan.geometry if dx else None)
    return y.reshape(plan.x_shape if dx else plan.out_shape)


def _forward_on(route, x, w2, bias, plan):
    if route is Route.FFT:
        return _fft.forward(x, w2.reshape(plan.w_shape), bias, plan,
                            pool_threads(plan.flops))
    if route is Route.WINOGRAD:
        return _winograd_run(x, w2, bias, plan)
    if route is Route.DIRECT:
        y = np.empty(plan.out_shape, dtype=plan.dtype)
        _direct.run(_direct.FORWARD, _flat(x), w2,
                    bias if bias is not None else np.empty(0, plan.dtype), _flat(y),
                    bias is not None, plan, plan.threads())
        return y
    if x.shape[0] != plan.x_shape[0]:
        plan = plan.for_batch(x.shape[0])
    run = _per_map_forward if route is Route.PER_MAP else _engine_forward
    return run(x, w2, bias, plan)


def forward(x, w2, bias, plan):
    """The forward pass on clean arrays (x, w2 and bias contiguous in plan.dtype), on the
    plan's route (``plan.route``) for every image that route may compute; the others
    take its fallback alone (``_route_ok``)."""
    ok = _route_ok(plan, plan.route, x, w=w2)
    if ok is None:
        return _forward_on(plan.route, x, w2, bias, plan)
    fallback = _fallback(plan, plan.route)
    if not ok.any():
        return _forward_on(fallback, x, w2, bias, plan)
    bad = np.flatnonzero(~ok)
    y = _forward_on(plan.route, _without(x, bad), w2, bias, plan)
    y[bad] = _forward_on(fallback, np.ascontiguousarray(x[bad]), w2, bias, plan)
    return y


def _dw_by_maps(dy, x, plan):
    """dW (eq. 12) for a batch of few positions in all: delta (Cout x N*positions) times
    the whole batch's patch matrix transposed, in blocks of output maps over the threads
    (``Plan.dw_by_maps``)."""
    n, cout = plan.out_shape[:2]
    cols = unfold(x, plan, unfold_units(plan))
    delta = dy.reshape(n, cout, -1).transpose(1, 0, 2).reshape(cout, -1)   # image-major
    return matmul(delta, cols, trans_b=True)


def _engine_backward(dy, x, w2, plan, need_dx, need_dw):
    dt = plan.dtype
    empty = np.empty(0, dtype=dt)
    if x is None:                       # the dx pass alone needs no x (conv_transpose)
        x, need_dw = empty, False
    if need_dw and plan.dw_by_maps():
        dw2 = _dw_by_maps(dy, x, plan)
        dx = _engine_backward(dy, None, w2, plan, True, False)[0] if need_dx else None
        return dx, dw2
    dx = np.zeros(plan.x_shape, dtype=dt) if need_dx else None
    k = math.prod(plan.w_shape[1:])
    n_acc = plan.schedule.n_acc
    acc = np.zeros((n_acc, plan.w_shape[0], k), dtype=dt) if need_dw else None
    _engine.conv_backward(_flat(dy), _flat(x), _flat(w2),
                          _flat(dx) if need_dx else empty, _flat(acc) if need_dw else empty,
                          need_dx, need_dw, *_engine_args(plan))
    dw2 = None
    if need_dw:
        dw2 = acc[0]
        with np.errstate(invalid="ignore"):     # inf + -inf from two chunks: NaN, quietly
            for i in range(1, n_acc):   # a fixed order: the same bits with any thread count
                dw2 += acc[i]
    return dx, dw2


def _per_map_backward(dy, x, w2, plan, need_dx, need_dw):
    dt = plan.dtype
    dx = np.zeros(plan.x_shape, dtype=dt) if need_dx else None
    dw2 = np.zeros((plan.w_shape[0], math.prod(plan.w_shape[1:])), dtype=dt) if need_dw else None
    taps = plan.geometry.taps
    for j, inputs, sub, wj in _by_output_map(plan, w2):
        xj = None if x is None else np.ascontiguousarray(x[:, inputs])
        dxj, dwj = _engine_backward(np.ascontiguousarray(dy[:, j:j + 1]), xj, wj, sub,
                                    need_dx, need_dw)
        if need_dx:
            dx[:, inputs] += dxj
        if need_dw:
            dw2[j].reshape(-1, taps)[inputs] = dwj.reshape(-1, taps)
    return dx, dw2


def _backward_on(route, dy, x, w2, plan, need_dx, need_dw):
    if dy.shape[0] != plan.x_shape[0]:
        plan = plan.for_batch(dy.shape[0])
    run = _per_map_backward if route is Route.PER_MAP else _engine_backward
    return run(dy, x, w2, plan, need_dx, need_dw)


def backward(dy, x, w2, plan, need_dx=True, need_dw=True):
    """The backward pass on clean arrays: (dx shaped like x, or None; dw2 (Cout, K), or
    None). x may be None when only dx is asked for (eq. 16-18 read dy and W alone)."""
    if plan.dw_route is Route.DIRECT or plan.dx_route is Route.DIRECT:
        return _direct_backward(dy, x, w2, plan, need_dx, need_dw)
    dx = dw2 = None
    if need_dw and plan.dw_route is Route.WINOGRAD:
        dw2 = _winograd_dw(dy, x, w2, plan)
        need_dw = False
    if need_dx and plan.dx_route is Route.WINOGRAD:
        dx = _winograd_dx(dy, w2, plan)
        need_dx = False
    if need_dx or need_dw:
        gx, gw = _gemm_backward(dy, x, w2, plan, need_dx, need_dw)
        dx = gx if need_dx else dx
        dw2 = gw if need_dw else dw2
    return dx, dw2


def _winograd_dw_ok(plan, x, dy):
    """Whether dW may take the Winograd route: x, dy (and a pad dW reads) finite, and
    the largest sum the route makes, about max|x| max|dy| grown by its transforms over
    every tile, below the dtype's largest value."""
    with np.errstate(over="ignore", invalid="ignore"):
        fill = abs(float(plan.dtype.type(plan.geometry.fill)))
        tops = [max(float(a.max(initial=0)), -float(a.min(initial=0))) for a in (x, dy)]
    if not all(math.isfinite(v) for v in tops + [fill]):
        return False
    m = plan.dw_winograd[0]
    tiles = plan.x_shape[0] * math.prod(-(-o // mm) for o, mm in zip(plan.geometry.out, m))
    bound = max(tops[0], fill) * tops[1] * _winograd.growth(plan.geometry, m) * tiles
    return bool(bound < np.finfo(plan.dtype).max / 4)


def _winograd_dw(dy, x, w2, plan):
    """dW on the Winograd route when every image may take it (x and dy finite and far
    from overflow); else the whole pass on the backward route (a sum over the batch: no
    image's share can be set apart)."""
    n = x.shape[0]
    if n == 0 or not _winograd_dw_ok(plan, x, dy):
        return _gemm_backward(dy, x, w2, plan, False, True)[1]
    m, sched = plan.dw_winograd
    threads = plan.threads()
    slots = _winograd.grad_slots(plan.geometry, plan.w_shape[0], plan.groups, m, sched,
                                 plan.dtype.itemsize, plan.workspace, threads)
    return _winograd.weight_grad(x, dy, plan.geometry, plan.w_shape[0], plan.groups, m,
                                 sched, threads, slots)


def _direct_backward(dy, x, w2, plan, need_dx, need_dw):
    """dx and dW on the direct route: each output's window walked back, as im2col would
    (a NaN or inf stays local), so every image takes it."""
    threads = plan.threads()
    dx = dw2 = None
    if need_dx:
        dx = np.empty(plan.x_shape, dtype=plan.dtype)
        _direct.run(_direct.DX, _flat(dy), w2, np.empty(0, plan.dtype), _flat(dx), False,
                    plan, threads)
    if need_dw:
        dw2 = np.empty((plan.w_shape[0], math.prod(plan.w_shape[1:])), dtype=plan.dtype)
        _direct.run(_direct.DW, _flat(x), w2, _flat(dy), _flat(dw2), False, plan, threads)
    return dx, dw2


def _winograd_dx(dy, w2, plan):
    """dx on the Winograd route for the images whose dy it may take; the others take
    the backward route (per-map under a connection table)."""
    ok = _winograd_ok(plan, dy, w2, fill=False)        # (dx reads no pad)
    if ok is None:
        return _winograd_run(dy, w2, None, plan, dx=True)
    if not ok.any():
        return _gemm_backward(dy, None, w2, plan, True, False)[0]
    bad = np.flatnonzero(~ok)
    dx = _winograd_run(_without(dy, bad), w2, None, plan, dx=True)
    dx[bad] = _gemm_backward(np.ascontiguousarray(dy[bad]), None, w2,
                             plan.for_batch(len(bad)), True, False)[0]
    return dx


def _gemm_backward(dy, x, w2, plan, need_dx, need_dw):
    """The backward passes on the backward route (eq. 12, eq. 16-18), per map for the
    images a connection table needs so."""
    route = plan.backward_route
    ok = _route_ok(plan, route, dy, (x,))
    if ok is None:
        return _backward_on(route, dy, x, w2, plan, need_dx, need_dw)
    if not ok.any():
        return _backward_on(Route.PER_MAP, dy, x, w2, plan, need_dx, need_dw)
    bad = np.flatnonzero(~ok)
    dx, dw2 = _backward_on(route, _without(dy, bad), _without(x, bad), w2, plan, need_dx,
                           need_dw)
    xb = None if x is None else np.ascontiguousarray(x[bad])
    dxb, dwb = _backward_on(Route.PER_MAP, np.ascontiguousarray(dy[bad]), xb, w2, plan,
                            need_dx, need_dw)
    if need_dx:
        dx[bad] = dxb
    if need_dw:
        dw2 += dwb                      # the dense images' sum first: a fixed order
    return dx, dw2


# ----------------------------------------------------------------------------- passes
def conv_forward(x, w, bias, plan: Plan):
    """y of ``conv`` for a batched x under ``plan`` (x, w, bias any layout and dtype)."""
    dtype = plan.dtype
    check_fits(plan.memory() + copy_bytes(x, dtype) + copy_bytes(w, dtype),
               "this convolution (output, column buffers, weight and input copies)")
    return forward(floats(dtype, x), effective_weight(w, plan),
                   None if bias is None else floats(dtype, bias), plan)


def conv_backward(dy, x, w, plan: Plan, need_dx=True, need_dw=True):
    """(dx, dw, db) of ``conv`` under ``plan``; None for a gradient not asked for."""
    dtype = plan.dtype
    check_fits(plan.memory(backward=True, need_dx=need_dx, need_dw=need_dw)
               + (copy_bytes(x, dtype) if need_dw else 0) + copy_bytes(dy, dtype)
               + copy_bytes(w, dtype),
               "this convolution's backward pass (dx, dW accumulators, column buffers, "
               "weight and input copies)")
    x = floats(dtype, x) if need_dw else None      # dx alone reads dy and W (eq. 16-18)
    dy = floats(dtype, dy)
    dx = dw = db = None
    if need_dx or need_dw:
        dx, dw2 = backward(dy, x, effective_weight(w, plan), plan, need_dx, need_dw)
        if need_dw:
            dw = weight_gradient(dw2, plan)                      # eq. 12-13
            db = bias_gradient(dy, dtype)                        # eq. 10
    return dx, dw, db


def _grow(a, extra):
    """a with extra[k] zero entries appended along spatial axis k."""
    if not any(extra):
        return a
    return np.pad(a, ((0, 0), (0, 0)) + tuple((0, e) for e in extra))


def transposed_forward(x, w, bias, plan: Plan):
    """y of ``conv_transpose`` for a batched x, under the plan of its adjoint convolution:
    the derivation's path of the error (eq. 16-18), W^T X then col2im."""
    dtype = plan.dtype
    check_fits(plan.memory(backward=True, need_dw=False) + copy_bytes(x, dtype)
               + copy_bytes(w, dtype), "this transposed convolution (output, column "
               "buffers, weight and input copies)")
    xg = np.ascontiguousarray(_grow(floats(dtype, x), plan.extra))
    y, _ = backward(xg, None, effective_weight(w, plan), plan, True, False)
    if bias is not None:
        y += floats(dtype, bias).reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


def transposed_backward(dy, x, w, plan: Plan, need_dx=True, need_dw=True):
    """(dx, dw, db) of ``conv_transpose``: dx is the adjoint convolution's forward pass of
    dy, dw its kernel gradient with x in the place of delta (eq. 12), db the sum of dy."""
    dtype = plan.dtype
    check_fits(plan.memory() + plan.memory(backward=True, need_dx=False)
               + copy_bytes(x, dtype) + copy_bytes(dy, dtype) + copy_bytes(w, dtype),
               "this transposed convolution's backward pass")
    dy = floats(dtype, dy)
    w2 = effective_weight(w, plan)
    dx = dw = db = None
    if need_dx:
        dx = forward(dy, w2, None, plan)
        if any(plan.extra):
            dx = np.ascontiguousarray(dx[(slice(None), slice(None)) + tuple(
                slice(0, s) for s in x.shape[2:])])
    if need_dw:
        xg = np.ascontiguousarray(_grow(floats(dtype, x), plan.extra))
        _, dw2 = backward(xg, dy, w2, plan, False, True)
        dw = weight_gradient(dw2, plan)
        db = bias_gradient(dy, dtype)
    return dx, dw, db


# ----------------------------------------------------------------------------- unfold
def unfold(x, plan, units):
    """The batched patch matrix (C*taps, N*positions) of a clean x (im2col)."""
    n, c = plan.x_shape[:2]
    cols = np.empty((c * plan.geometry.taps, n * plan.geometry.positions), dtype=x.dtype)
    _engine.unfold(_flat(x), _flat(cols), plan.geometry, n, *units, False)
    return cols


def fold(cols_t, plan, units):
    """col2im: every entry of a clean (C*taps, N*positions) matrix added back to the pixel
    it was read from."""
    x = np.zeros(plan.x_shape, dtype=cols_t.dtype)
    _engine.unfold(_flat(cols_t), _flat(x), plan.geometry, plan.x_shape[0], *units, True)
    return x


# ----------------------------------------------------------------------------- products
#: A product is cut into this many blocks of rows, of at least MATMUL_ROWS rows (a small
#: product is one block), whatever the threads that share them out.
MATMUL_BLOCKS = 8
MATMUL_ROWS = 32


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) through the engine's BLAS, not NumPy's: blocks of rows spread over
    the engine's threads, one single-threaded GEMM each.

    NumPy and SciPy each bundle an OpenBLAS with its own thread pool; a network that used
    NumPy's beside the engine's would keep another pool of spinning workers on the same
    cores (measured with vecconv 0.1: a LeNet-5 step took 2-4x longer).
    """
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b, dtype=a.dtype)
    m, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"matrix product of {a.shape}{'^T' if trans_a else ''} and "
                         f"{b.shape}{'^T' if trans_b else ''}: inner sizes {ka} and {kb} differ")
    out = np.empty((m, n), dtype=a.dtype)
    if not out.size:
        return out
    # blocks of rows cut by the shapes alone (a row's bits depend on its block's shape:
    # cut by the thread count, float64 rows moved by 1e-14 between 1 and 2 threads)
    rows = min(m, max(-(-m // MATMUL_BLOCKS), MATMUL_ROWS))
    full = m // rows
    threads = min(threads_for(2 * m * n * ka), full)
    # blocks of `rows` rows of the output, one GEMM each, spread over the engine's threads
    # (op(a)'s rows are a's rows, or its columns when transposed)
    a_block = a[:, :rows] if trans_a else a[:rows]
    _engine.gemm_into(a_block, b, out[:rows], trans_a, trans_b, count=full,
                      a_step=rows if trans_a else rows * a.shape[1], c_step=rows * n,
                      threads=threads)
    if full * rows < m:
        _engine.gemm_into(a[:, full * rows:] if trans_a else a[full * rows:], b,
                          out[full * rows:], trans_a, trans_b)
    return out


# ----------------------------------------------------------------------------- pooling
def pool_forward(x, plan, is_max, divisor=0.0, want_indices=False):
    """y (and the argmax indices, for max pooling) of a clean x under a pooling plan."""
    y = np.empty(plan.out_shape, dtype=x.dtype)
    idx = np.empty(plan.out_shape if want_indices else 0, dtype=np.int64)
    _engine.pool_forward(_flat(x), _flat(y), _flat(idx), plan.tables, plan.inner, plan.maps,
                         is_max, divisor, plan.rows_per_unit, plan.threads())
    return (y, idx) if want_indices else y


def pool_backward(dy, plan, is_max, divisor=0.0, indices=None):
    """dx of shape plan.x_shape from a clean dy (and the argmax indices for max)."""
    dx = np.empty(plan.x_shape, dtype=dy.dtype)
    idx = np.empty(0, dtype=np.int64) if indices is None else indices
    ok = _engine.pool_backward(_flat(dy), _flat(dx), _flat(idx), plan.tables, plan.inner,
                               plan.maps, is_max, divisor, plan.maps_per_unit, plan.threads())
    if not ok:
        raise ValueError(f"indices must be positions inside each map, 0 <= i < "
                         f"{math.prod(plan.x_shape[2:])} (or -1 for a window that held no "
                         f"entry of x)")
    return dx


def check_pool_memory(plan, dtype, extra=0):
    """Refuse a pooling whose output (and ``extra`` bytes) the machine cannot hold."""
    check_fits(nbytes_of(plan.out_shape, dtype) + extra, "this pooling's output")
