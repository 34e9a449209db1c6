# Pooling kernels, compiled into the engine (included by _engine.pyx) so that they run on
# the same worker pool.
#
# A pooling geometry is three spatial axes (D, H, W), leading axes of size 1 for 1-D and
# 2-D. The planner (vecconv._pool_plan) gives, for every output index o of every axis, the
# input index of the window's first tap inside the map (first[o]), how many taps lie
# inside the map (count[o]; the taps are first, first + dilation, ...), and the axis's
# factor of the average's divisor (div[o]). The kernels only walk those windows:
#
#   max:  y[o] = max over the window (ties: the first in row-major order; a NaN wins, the
#         last NaN of the window if several, as in PyTorch), idx[o] = its flat position;
#         a window with no tap inside the map gives -inf and idx -1.
#   avg:  y[o] = (sum over the window) / divisor, divisor = override, or the product of
#         the three axes' div[o].
#
# Forward units are bands of output rows (every output is written by one unit). Backward
# units are whole maps: windows may overlap, so all the adds into one map's dx stay in one
# unit, and no two units touch the same map.

from libc.stdint cimport int32_t, int64_t
from libc.math cimport INFINITY


ctypedef struct PoolJob:
    bint f64
    bint backward               # pool_unit runs pool_maps_back (else pool_rows)
    bint is_max
    void *x                     # forward: the input (maps, S); backward: dy (maps, O)
    void *y                     # forward: the output (maps, O); backward: dx (maps, S)
    int64_t *idx                # max: the argmax positions (maps, O), or NULL
    Py_ssize_t maps, S, O
    Py_ssize_t n[3]
    Py_ssize_t o[3]
    Py_ssize_t dl[3]
    const int64_t *first[3]
    const int64_t *count[3]
    const int64_t *div[3]
    double override             # the avg divisor when nonzero
    # the W axis's interior, outputs lo..hi-1 whose whole window lies in the map: their
    # windows start at ow*sw - pw and have kw taps; rows are walked tap by tap over them
    Py_ssize_t kw, sw, pw, lo, hi
    Py_ssize_t rows, rows_per_unit, maps_per_unit
    int bad                     # backward: an index outside its map was met
    # forward max with indices: per slot, the winning tap of each interior output
    # (int32, the width of a float32 lane) and each tap's position
    int32_t *tap
    int64_t *tap_pos
    Py_ssize_t window, tap_step, pos_step    # per slot, whole cache lines apart


cdef inline floating window_max(const PoolJob *j, const floating *xm, Py_ssize_t od,
                                Py_ssize_t oh, Py_ssize_t ow, int64_t *where) noexcept nogil:
    cdef Py_ssize_t cd = j.count[0][od], ch = j.count[1][oh], cw = j.count[2][ow]
    cdef Py_ssize_t fd = j.first[0][od], fh = j.first[1][oh], fw = j.first[2][ow]
    cdef Py_ssize_t HW = j.n[1] * j.n[2], a, b, c, row, pos
    cdef floating m = -INFINITY, v
    cdef int64_t best = -1
    if cd > 0 and ch > 0 and cw > 0:
        best = fd * HW + fh * j.n[2] + fw      # all -inf: the first tap, as PyTorch
    for a in range(cd):
        for b in range(ch):
            row = (fd + a * j.dl[0]) * HW + (fh + b * j.dl[1]) * j.n[2] + fw
            for c in range(cw):
                pos = row + c * j.dl[2]
                v = xm[pos]
                if v > m or v != v:
                    m = v
                    best = pos
    where[0] = best
    return m


cdef inline double divisor(const PoolJob *j, Py_ssize_t od, Py_ssize_t oh,
                           Py_ssize_t ow) noexcept nogil:
    if j.override != 0:
        return j.override
    # in double: the product of three int64 factors may not fit in one
    return <double>j.div[0][od] * <double>j.div[1][oh] * <double>j.div[2][ow]


cdef inline floating window_sum(const PoolJob *j, const floating *xm, Py_ssize_t od,
                                Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t cd = j.count[0][od], ch = j.count[1][oh], cw = j.count[2][ow]
    cdef Py_ssize_t fd = j.first[0][od], fh = j.first[1][oh], fw = j.first[2][ow]
    cdef Py_ssize_t HW = j.n[1] * j.n[2], a, b, c
    cdef const floating *p
    cdef floating s = 0
    for a in range(cd):
        for b in range(ch):
            p = xm + (fd + a * j.dl[0]) * HW + (fh + b * j.dl[1]) * j.n[2] + fw
            for c in range(cw):
                s += p[c * j.dl[2]]
    return s


cdef inline void max_run(const floating *src, floating *ym, int32_t *tap, Py_ssize_t n,
                         Py_ssize_t s, int32_t t, bint first) noexcept nogil:
    """ym[i] <- the max of ym[i] and src[i*s] (NaN wins, ties keep the earlier tap); the
    winner's tap number t goes to tap[i] when tap is not NULL. Branch-free and with the
    tap as a 32-bit lane, so that the compiler vectorises it; called with s = 1 and 2 as
    constants."""
    cdef Py_ssize_t i
    cdef floating v, m
    cdef bint take
    if first:
        for i in range(n):
            ym[i] = src[i * s]
        if tap != NULL:
            for i in range(n):
                tap[i] = t
    elif tap == NULL:
        for i in range(n):
            v = src[i * s]
            m = ym[i]
            ym[i] = v if ((v > m) | (v != v)) else m
    else:
        for i in range(n):
            v = src[i * s]
            m = ym[i]
            take = (v > m) | (v != v)
            ym[i] = v if take else m
            tap[i] = t if take else tap[i]


cdef inline void sum_run(const floating *src, floating *ys, Py_ssize_t n,
                         Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        ys[i] += src[i * s]


cdef inline void spread_run(floating *dst, const floating *g, Py_ssize_t n, Py_ssize_t s,
                            floating dv) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i * s] += g[i] / dv


cdef void pool_row(const PoolJob *j, const floating *xm, floating *yrow, int64_t *irow,
                   Py_ssize_t od, Py_ssize_t oh, int slot) noexcept nogil:
    """One output row: the edge windows one by one, the interior tap by tap."""
    cdef Py_ssize_t cd = j.count[0][od], ch = j.count[1][oh]
    cdef Py_ssize_t fd = j.first[0][od], fh = j.first[1][oh]
    cdef Py_ssize_t HW = j.n[1] * j.n[2], n = j.hi - j.lo, lo = j.lo, hi = j.hi
    cdef Py_ssize_t ow, a, b, c, rowpos
    cdef int64_t pos0, where
    cdef bint first = True
    cdef int32_t *tap = NULL
    cdef int64_t *tap_pos = NULL
    cdef int32_t t = 0
    cdef floating *ym = yrow + j.lo
    cdef floating dv
    if cd == 0 or ch == 0 or n <= 0:
        lo, hi = j.o[2], j.o[2]          # no interior: every window on its own
    for ow in range(j.o[2]):
        if lo <= ow < hi:
            continue
        if j.is_max:
            yrow[ow] = window_max(j, xm, od, oh, ow, &where)
            if irow != NULL:
                irow[ow] = where
        else:
            yrow[ow] = window_sum(j, xm, od, oh, ow) / <floating>divisor(j, od, oh, ow)
    if hi <= lo:
        return
    if not j.is_max:
        memset(ym, 0, n * sizeof(floating))
    elif irow != NULL:
        tap = j.tap + slot * j.tap_step
        tap_pos = j.tap_pos + slot * j.pos_step
    for a in range(cd):
        for b in range(ch):
            rowpos = (fd + a * j.dl[0]) * HW + (fh + b * j.dl[1]) * j.n[2] + lo * j.sw - j.pw
            for c in range(j.kw):
                pos0 = rowpos + c * j.dl[2]
                if j.is_max:
                    if tap != NULL:
                        tap_pos[t] = pos0
                    if j.sw == 1:
                        max_run(xm + pos0, ym, tap, n, 1, t, first)
                    elif j.sw == 2:
                        max_run(xm + pos0, ym, tap, n, 2, t, first)
                    else:
                        max_run(xm + pos0, ym, tap, n, j.sw, t, first)
                    t += 1
                elif j.sw == 1:
                    sum_run(xm + pos0, ym, n, 1)
                elif j.sw == 2:
                    sum_run(xm + pos0, ym, n, 2)
                else:
                    sum_run(xm + pos0, ym, n, j.sw)
                first = False
    if tap != NULL:
        for ow in range(n):
            irow[lo + ow] = tap_pos[tap[ow]] + ow * j.sw
    if not j.is_max:
        dv = <floating>divisor(j, od, oh, lo)          # the same for the whole interior
        for ow in range(n):
            ym[ow] = ym[ow] / dv


cdef void pool_rows(PoolJob *j, Py_ssize_t u, int slot, floating dummy) noexcept nogil:
    """Forward: output rows (map, od, oh) r0..r1-1, each a run of o[2] outputs."""
    cdef Py_ssize_t r0 = u * j.rows_per_unit, r1 = imin(r0 + j.rows_per_unit, j.rows)
    cdef Py_ssize_t per_map = j.o[0] * j.o[1], r, m, od, oh, at
    for r in range(r0, r1):
        m = r // per_map
        od = (r % per_map) // j.o[1]
        oh = r % j.o[1]
        at = m * j.O + (od * j.o[1] + oh) * j.o[2]
        pool_row(j, <const floating *>j.x + m * j.S, <floating *>j.y + at,
                 NULL if j.idx == NULL else j.idx + at, od, oh, slot)


cdef void spread_window(const PoolJob *j, floating *dxm, floating g, Py_ssize_t od,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t cd = j.count[0][od], ch = j.count[1][oh], cw = j.count[2][ow]
    cdef Py_ssize_t fd = j.first[0][od], fh = j.first[1][oh], fw = j.first[2][ow]
    cdef Py_ssize_t HW = j.n[1] * j.n[2], a, b, c
    cdef floating *p
    for a in range(cd):
        for b in range(ch):
            p = dxm + (fd + a * j.dl[0]) * HW + (fh + b * j.dl[1]) * j.n[2] + fw
            for c in range(cw):
                p[c * j.dl[2]] += g


cdef void spread_row(const PoolJob *j, floating *dxm, const floating *dyrow, Py_ssize_t od,
                     Py_ssize_t oh) noexcept nogil:
    """Average pooling's adjoint for one output row. Every dx entry gets its deltas in
    the order of the outputs (as a loop over the outputs would add them, and PyTorch
    does): the left edge, the interior with its taps from the last to the first, the right
    edge."""
    cdef Py_ssize_t cd = j.count[0][od], ch = j.count[1][oh]
    cdef Py_ssize_t fd = j.first[0][od], fh = j.first[1][oh]
    cdef Py_ssize_t HW = j.n[1] * j.n[2], n = j.hi - j.lo, lo = j.lo, hi = j.hi
    cdef Py_ssize_t ow, a, b, c, rowpos
    cdef floating dv
    if cd == 0 or ch == 0 or n <= 0:
        lo, hi = j.o[2], j.o[2]
    for ow in range(imin(lo, j.o[2])):
        spread_window(j, dxm, dyrow[ow] / <floating>divisor(j, od, oh, ow), od, oh, ow)
    if hi > lo:
        dv = <floating>divisor(j, od, oh, lo)
        for a in range(cd):
            for b in range(ch):
                rowpos = (fd + a * j.dl[0]) * HW + (fh + b * j.dl[1]) * j.n[2] + lo * j.sw - j.pw
                for c in range(j.kw - 1, -1, -1):
                    if j.sw == 1:
                        spread_run(dxm + rowpos + c * j.dl[2], dyrow + lo, n, 1, dv)
                    elif j.sw == 2:
                        spread_run(dxm + rowpos + c * j.dl[2], dyrow + lo, n, 2, dv)
                    else:
                        spread_run(dxm + rowpos + c * j.dl[2], dyrow + lo, n, j.sw, dv)
    for ow in range(imax(hi, lo), j.o[2]):
        spread_window(j, dxm, dyrow[ow] / <floating>divisor(j, od, oh, ow), od, oh, ow)


cdef void pool_maps_back(PoolJob *j, Py_ssize_t u, floating dummy) noexcept nogil:
    """Backward: maps m0..m1-1 of dx, zeroed, then every output's delta added back to
    its window (avg: divided by the window's divisor; max: all of it to the argmax)."""
    cdef Py_ssize_t m0 = u * j.maps_per_unit, m1 = imin(m0 + j.maps_per_unit, j.maps)
    cdef Py_ssize_t m, o, od, oh
    cdef const floating *dym
    cdef floating *dxm
    cdef const int64_t *im
    cdef int64_t k
    for m in range(m0, m1):
        dym = <const floating *>j.x + m * j.O
        dxm = <floating *>j.y + m * j.S
        memset(dxm, 0, j.S * sizeof(floating))
        if j.is_max:
            im = j.idx + m * j.O
            for o in range(j.O):
                k = im[o]
                if k >= 0 and k < j.S:
                    dxm[k] += dym[o]
                elif k != -1:
                    vc_flag(&j.bad)
            continue
        for od in range(j.o[0]):
            for oh in range(j.o[1]):
                spread_row(j, dxm, dym + (od * j.o[1] + oh) * j.o[2], od, oh)


cdef inline void run_pool_unit(PoolJob *j, Py_ssize_t u, int slot,
                               floating dummy) noexcept nogil:
    if j.backward:
        pool_maps_back(j, u, dummy)
    else:
        pool_rows(j, u, slot, dummy)


cdef void pool_unit(void *ctx, Py_ssize_t u, int slot) noexcept nogil:
    """The pool's entry to every pooling unit: the one float/double dispatch."""
    cdef PoolJob *j = <PoolJob *>ctx
    if j.f64:
        run_pool_unit(j, u, slot, <double>0)
    else:
        run_pool_unit(j, u, slot, <float>0)


cdef int make_pool_job(PoolJob *j, tuple axes, PoolInterior inner, Py_ssize_t maps,
                       bint is_max, double override) except -1:
    """Fill j from the planner's three PoolAxis tables (their int64 arrays kept alive by
    the caller) and the last axis's PoolInterior, each re-checked here."""
    cdef const int64_t[::1] first, count, div
    cdef Py_ssize_t k, o, n, dl
    cdef PoolAxis axis
    if len(axes) != 3:
        raise ValueError("vecconv engine: a pooling needs three axis tables")
    memset(j, 0, sizeof(PoolJob))
    j.maps = maps
    j.is_max = is_max
    j.override = override
    j.S = 1
    j.O = 1
    j.kw, j.sw, j.pw, j.lo, j.hi = inner.kw, inner.sw, inner.pw, inner.lo, inner.hi
    for k in range(3):
        axis = axes[k]
        n, dl, first, count, div = axis.n, axis.dilation, axis.first, axis.count, axis.div
        j.n[k] = n
        j.dl[k] = dl
        j.o[k] = first.shape[0]
        if count.shape[0] != j.o[k] or div.shape[0] != j.o[k] or j.o[k] < 1 or n < 1 or dl < 1:
            raise ValueError("vecconv engine: inconsistent pooling tables")
        for o in range(j.o[k]):        # every tap of every window inside the map
            if count[o] < 0 or div[o] < 1 or (count[o] > 0 and (
                    first[o] < 0 or first[o] + (count[o] - 1) * dl >= n)):
                raise ValueError(f"vecconv engine: pooling window {o} of axis {k} leaves "
                                 f"the map")
        j.first[k] = &first[0]
        j.count[k] = &count[0]
        j.div[k] = &div[0]
        j.S *= j.n[k]
        j.O *= j.o[k]
    if not (0 <= j.lo and j.hi <= j.o[2] and j.kw >= 1 and j.sw >= 1 and
            (j.hi <= j.lo or (j.lo * j.sw - j.pw >= 0 and
             (j.hi - 1) * j.sw - j.pw + (j.kw - 1) * j.dl[2] < j.n[2]))):
        raise ValueError("vecconv engine: the pooling interior leaves the map")
    for o in range(j.lo, j.hi):        # the interior is what the W table says it is
        if j.count[2][o] != j.kw or j.first[2][o] != o * j.sw - j.pw:
            raise ValueError("vecconv engine: the pooling interior disagrees with its table")
    return 0


cdef Py_ssize_t max_count(const int64_t *count, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i, m = 1
    for i in range(n):
        m = imax(m, count[i])
    return m


def pool_forward(const floating[::1] x, floating[::1] y, int64_t[::1] idx, tuple tables,
                 PoolInterior inner, Py_ssize_t maps, bint is_max, double override,
                 Py_ssize_t rows_per_unit,
                 int threads):
    """y (maps, O) = the pooling of x (maps, S) over the planner's windows; for max
    pooling the argmax positions go to idx (maps, O) when it is not empty."""
    cdef PoolJob j
    cdef void *scratch = NULL
    make_pool_job(&j, tables, inner, maps, is_max, override)
    expect("pooling input", x.shape[0], maps * j.S)
    expect("pooling output", y.shape[0], maps * j.O)
    if idx.shape[0] != 0:
        expect("pooling indices", idx.shape[0], maps * j.O)
        j.idx = &idx[0]
    if maps == 0:
        return
    j.f64 = floating is double
    j.x = <void *>&x[0]
    j.y = <void *>&y[0]
    j.rows = maps * j.o[0] * j.o[1]
    j.rows_per_unit = max(rows_per_unit, 1)
    threads = max(threads, 1)
    if j.idx != NULL and j.is_max and j.hi > j.lo:     # only the interior uses it
        j.window = j.kw * max_count(j.count[0], j.o[0]) * max_count(j.count[1], j.o[1])
        if j.window >= 2**31:
            raise ValueError("vecconv engine: a pooling window of 2**31 taps or more")
        j.tap_step = (j.o[2] + 15) // 16 * 16 + 16          # 64-byte lines, one spare
        j.pos_step = (j.window + 7) // 8 * 8 + 8
        scratch = alloc_buffers(threads * (j.tap_step * sizeof(int32_t)
                                           + j.pos_step * sizeof(int64_t)))
        j.tap_pos = <int64_t *>scratch
        j.tap = <int32_t *>(j.tap_pos + threads * j.pos_step)
    try:
        with nogil:
            vc_run(pool_unit, &j, (j.rows + j.rows_per_unit - 1) // j.rows_per_unit,
                   threads)
    finally:
        free_buffers(scratch)


def pool_backward(const floating[::1] dy, floating[::1] dx, const int64_t[::1] idx,
                  tuple tables, PoolInterior inner, Py_ssize_t maps, bint is_max,
                  double override, Py_ssize_t maps_per_unit,
                  int threads):
    """dx (maps, S) = the adjoint of the pooling applied to dy (maps, O). Max pooling
    routes each delta to idx (flat positions in the map; -1: nowhere). Returns False when
    an index lay outside its map (those deltas are dropped; the caller raises)."""
    cdef PoolJob j
    make_pool_job(&j, tables, inner, maps, is_max, override)
    expect("pooling delta", dy.shape[0], maps * j.O)
    expect("pooling input gradient", dx.shape[0], maps * j.S)
    if is_max:
        expect("pooling indices", idx.shape[0], maps * j.O)
    if maps == 0:
        return True
    j.f64 = floating is double
    j.x = <void *>&dy[0]
    j.y = <void *>&dx[0]
    if is_max:
        j.idx = <int64_t *>&idx[0]
    j.maps_per_unit = max(maps_per_unit, 1)
    with nogil:
        j.backward = True
        vc_run(pool_unit, &j, (maps + j.maps_per_unit - 1) // j.maps_per_unit,
               threads)
    return not j.bad
