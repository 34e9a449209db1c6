# The Winograd route's kernel (included by _engine.pyx): stride-1, dilation-1 convolutions
# whose kernels have 3 taps along some axes (and 1 along the others), by minimal filtering
# F(m, 3) along each such axis (Lavin & Gray 2016; Winograd 1980).
#
# Matrix form again. Along one axis, m outputs of a 3-tap correlation read a = m + 2
# inputs d, and y = A^T [(G g) * (B^T d)] (elementwise product, a entries). Along several
# axes the transforms act on each axis in turn. Cut the output into tiles of m outputs per
# axis; for each tile and input channel c, V[t, c] = (B^T d B)[t] for each of the
# T = prod(a) transformed taps t; for each kernel, U[t, j, c] = (G g_jc G^T)[t] (made once
# per call, by winograd_kernels below). The sum over input channels of eq. 1 is then, for every
# transformed tap t, one matrix product over a batch of tiles:
#
#     M[t] (Cout x tiles) = U[t] (Cout x C) . V[t] (C x tiles)
#
# and the outputs of a tile are A^T M A. Per output and input channel that is T / prod(m)
# multiplications in the products where im2col makes taps (9 for 3 x 3): 25 / 9 for
# F(3 x 3, 3 x 3).
#
# The batch's tiles (numbered in C order within an image, images one after another) are
# taken in rounds of R. A round (1) gathers blocks of tb tiles (every padding mode reads
# through fold_index, as im2col does) and transforms them into V, (2) makes for each
# transformed tap t and group one GEMM M[t] = U[t] V[t] over the round's R tiles, and
# (3) transforms blocks of tiles back and writes their outputs. Two ways to share a round
# out (Wino.fused): with few channels, a unit is a whole round, its V and M its own and
# small enough to stay in its core's cache; with many, where the GEMMs dominate and want
# to be wide, each step is a job of its own on the pool (blocks of tiles and channels,
# then one GEMM per tap and group, then blocks of tiles and output maps), V and M shared.
# Every output is written by one unit; the cut depends on the shapes and the workspace
# only: the same bits for any thread count.

cdef enum:
    # transformed elements per call of the pool (fused rounds): Ctrl-C is honoured between
    WINO_ROUND_ELEMS = 1 << 24
    # transformed taps at most (F(4, 3) in 3-D: 6 x 6 x 6)
    WINO_MAX_T = 216


ctypedef struct Wino:
    bint f64
    Py_ssize_t N, C, cout, groups, cig, cog
    Py_ssize_t i[3]             # input size
    Py_ssize_t o[3]             # output size
    Py_ssize_t p[3]             # padding before (may be negative: a crop)
    Py_ssize_t m[3]             # outputs per tile
    Py_ssize_t a[3]             # transformed entries per tile, m + k - 1
    Py_ssize_t e[3]             # entries a tile reads (a; m for dy in the dW pass)
    Py_ssize_t nt[3]            # tiles per axis
    Py_ssize_t T                # a0 a1 a2, the transformed taps
    Py_ssize_t per_image        # nt0 nt1 nt2
    Py_ssize_t tiles            # N * per_image
    Py_ssize_t tb               # tiles per transform unit (the scratch vectors' length)
    Py_ssize_t R                # tiles per round: the leading dimension of V and M rows
    Py_ssize_t first, count     # the round's first tile and its tile count
    Py_ssize_t tblocks          # transform units' tile blocks in the round
    Py_ssize_t cblk, jblk       # channels per input unit, output maps per output unit
    int phase                   # 0: transform in, 1: products, 2: transform out
    bint fused                  # a unit is a whole round (V and M per slot)
    int mode                    # padding mode, as Geom.mode
    double fill
    const double *BT[3]         # (a x a) per axis; NULL: the axis is not transformed
    const double *AT[3]         # (m x a) per axis
    int kind_bt[3]              # VC_WINO_* of BT and AT per axis (_winograd.h)
    int kind_at[3]
    const void *x
    const void *U               # (T, Cout, C/groups); u_perm set: (T, C, Cout/groups)
    const Py_ssize_t *u_perm    # dx: U[t] is the forward pass's U[u_perm[t]]^T per group
    const void *bias
    void *y
    void *V                     # (T, C, R)
    void *M                     # (T, Cout, R)
    void *bufs                  # per slot: three scratch blocks of T x tb (and, fused, V, M)
    Py_ssize_t buf_elems


cdef inline void wino_tile(const Wino *w, Py_ssize_t g, Py_ssize_t *n,
                           Py_ssize_t *q) noexcept nogil:
    """Image n and tile coordinates q of the batch's tile g."""
    cdef Py_ssize_t r = g % w.per_image
    n[0] = g // w.per_image
    q[2] = r % w.nt[2]
    r = r // w.nt[2]
    q[1] = r % w.nt[1]
    q[0] = r // w.nt[1]


cdef inline void wino_next(const Wino *w, Py_ssize_t *n, Py_ssize_t *q) noexcept nogil:
    """The tile after (n, q), counted without dividing."""
    q[2] += 1
    if q[2] == w.nt[2]:
        q[2] = 0
        q[1] += 1
        if q[1] == w.nt[1]:
            q[1] = 0
            q[0] += 1
            if q[0] == w.nt[0]:
                q[0] = 0
                n[0] += 1


cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


cdef extern from "_winograd.h":
    void vc_wino_axis_f(const float *src, Py_ssize_t src_step, float *dst,
                        Py_ssize_t dst_step, const Py_ssize_t *dims, int ax, const double *M,
                        Py_ssize_t rows, Py_ssize_t nb) noexcept nogil
    void vc_wino_axis_d(const double *src, Py_ssize_t src_step, double *dst,
                        Py_ssize_t dst_step, const Py_ssize_t *dims, int ax,
                        const double *M, Py_ssize_t rows, Py_ssize_t nb) noexcept nogil
    enum:
        VC_WINO_GENERIC, VC_WINO_BT2, VC_WINO_AT2, VC_WINO_A2
    void vc_wino_axis2_f(const float *src, Py_ssize_t src_step, float *dst,
                         Py_ssize_t dst_step, const Py_ssize_t *dims, int ax, int kind,
                         Py_ssize_t nb) noexcept nogil
    void vc_wino_axis2_d(const double *src, Py_ssize_t src_step, double *dst,
                         Py_ssize_t dst_step, const Py_ssize_t *dims, int ax, int kind,
                         Py_ssize_t nb) noexcept nogil
    void vc_wino_take_f(float *dst, Py_ssize_t tb, const float *src, Py_ssize_t L,
                        Py_ssize_t m, Py_ssize_t a) noexcept nogil
    void vc_wino_take_d(double *dst, Py_ssize_t tb, const double *src, Py_ssize_t L,
                        Py_ssize_t m, Py_ssize_t a) noexcept nogil
    enum:
        VC_KT_FORWARD, VC_KT_INVERSE
    Py_ssize_t VC_KT_BUF_ELEMS(Py_ssize_t cols)
    void vc_wino_kernels_f(const float *src, float *dst, const Py_ssize_t *start,
                           const Py_ssize_t *idx, const float *val, Py_ssize_t rows,
                           Py_ssize_t cols, Py_ssize_t pairs, int mode, Py_ssize_t p0,
                           Py_ssize_t p1, float *buf) noexcept nogil
    void vc_wino_kernels_d(const double *src, double *dst, const Py_ssize_t *start,
                           const Py_ssize_t *idx, const double *val, Py_ssize_t rows,
                           Py_ssize_t cols, Py_ssize_t pairs, int mode, Py_ssize_t p0,
                           Py_ssize_t p1, double *buf) noexcept nogil


cdef inline void wino_axis(const floating *src, Py_ssize_t src_step, floating *dst,
                           Py_ssize_t dst_step, Py_ssize_t *dims, int ax, const double *M,
                           int kind, Py_ssize_t rows, Py_ssize_t nb) noexcept nogil:
    """dst = M applied along axis ax of src (_winograd.h; by its own loop when M is one
    of F(2, 3)'s, ``kind``); dims[ax] becomes rows."""
    if kind != VC_WINO_GENERIC:
        if floating is float:
            vc_wino_axis2_f(src, src_step, dst, dst_step, dims, ax, kind, nb)
        else:
            vc_wino_axis2_d(src, src_step, dst, dst_step, dims, ax, kind, nb)
    elif floating is float:
        vc_wino_axis_f(src, src_step, dst, dst_step, dims, ax, M, rows, nb)
    else:
        vc_wino_axis_d(src, src_step, dst, dst_step, dims, ax, M, rows, nb)
    dims[ax] = rows


# F(2, 3)'s transforms at the points 0, 1, -1 (vecconv._winograd.matrices(2)), which
# _winograd.h applies by their own loops
cdef double WINO_BT2[16]
cdef double WINO_AT2[8]
cdef double WINO_A2[8]
WINO_BT2[:] = [1, 0, -1, 0, 0, 0.5, 0.5, 0, 0, -0.5, 0.5, 0, 0, -1, 0, 1]
WINO_AT2[:] = [1, 1, 1, 0, 0, 1, -1, 1]
WINO_A2[:] = [1, 0, 1, 1, 1, -1, 0, 1]


# False: every transform by the generic loop (tests compare the two)
cdef bint wino_own_loops = True


def set_winograd_own_loops(bint on):
    """Whether F(2, 3)'s transforms take their own loops (the default) or the generic one:
    the same bits either way, which the tests check."""
    global wino_own_loops
    wino_own_loops = on


cdef int wino_kind(const double[:, ::1] mat) noexcept:
    """The VC_WINO_* kind of a transform: one of F(2, 3)'s when equal to it entry by
    entry, else generic."""
    cdef const double *ref = NULL
    cdef int kind = VC_WINO_GENERIC, i
    if not wino_own_loops:
        return VC_WINO_GENERIC
    if mat.shape[0] == 4 and mat.shape[1] == 4:
        ref, kind = WINO_BT2, VC_WINO_BT2
    elif mat.shape[0] == 2 and mat.shape[1] == 4:
        ref, kind = WINO_AT2, VC_WINO_AT2
    elif mat.shape[0] == 4 and mat.shape[1] == 2:
        ref, kind = WINO_A2, VC_WINO_A2
    else:
        return VC_WINO_GENERIC
    for i in range(mat.shape[0] * mat.shape[1]):
        if mat[i // mat.shape[1], i % mat.shape[1]] != ref[i]:
            return VC_WINO_GENERIC
    return kind


cdef floating *wino_chain(const Wino *w, const floating *src, Py_ssize_t src_step,
                          floating *buf1, floating *buf2, floating *dst, Py_ssize_t dst_step,
                          bint inverse, Py_ssize_t nb) noexcept nogil:
    """The transforms of every transformed axis in turn, B^T (inverse False) or A^T
    (inverse True), from src (elements src_step apart, left as it is) through the
    scratch buffers buf1 and buf2 (elements w.tb apart). The last one writes dst
    (elements dst_step apart), or, when dst is NULL, a scratch buffer, which is
    returned."""
    cdef Py_ssize_t dims[3]
    cdef int a, last = 0
    cdef const floating *cur = src
    cdef Py_ssize_t cur_step = src_step, out_step
    cdef floating *out = NULL
    cdef floating *nxt = buf1
    for a in range(3):
        dims[a] = w.a[a] if inverse else w.e[a]
        if w.BT[a] != NULL:
            last = a
    for a in range(3):
        if w.BT[a] == NULL:
            continue
        if a == last and dst != NULL:
            out, out_step = dst, dst_step
        else:
            out, out_step = nxt, w.tb
        if inverse:
            wino_axis(cur, cur_step, out, out_step, dims, a, w.AT[a], w.kind_at[a], w.m[a],
                      nb)
        else:
            wino_axis(cur, cur_step, out, out_step, dims, a, w.BT[a], w.kind_bt[a], w.a[a],
                      nb)
        cur, cur_step = out, w.tb
        nxt = buf2 if out == buf1 else buf1
    return out


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any a."""
    return -((-a) // b) if a < 0 else (a + b - 1) // b


cdef inline Py_ssize_t wino_run_length(const Wino *w, const Py_ssize_t *q,
                                       Py_ssize_t left) noexcept nogil:
    """Tiles from q on along the last axis, within one row of tiles, at most left."""
    return imin(left, w.nt[2] - q[2])


cdef void wino_gather(const Wino *w, const floating *xc, floating *d, Py_ssize_t g0,
                      Py_ssize_t nb, Py_ssize_t c) noexcept nogil:
    """d[e, k] (elements w.tb apart) = the padded input of channel c that element e of
    tile g0 + k reads; tiles are taken in runs along the last axis, whose inputs lie in
    one row of x, each element read for a run at once."""
    cdef Py_ssize_t k = 0, L, kk, klo, khi, e0, e1, e2, i0, i1, i2, n, e, base, tb = w.tb
    cdef Py_ssize_t q[3]
    cdef Py_ssize_t S = w.i[0] * w.i[1] * w.i[2], W = w.i[2], m2 = w.m[2]
    cdef const floating *row
    cdef floating *dk
    cdef floating fill = <floating>w.fill
    wino_tile(w, g0, &n, q)
    while k < nb:
        L = wino_run_length(w, q, nb - k)
        e = 0
        for e0 in range(w.e[0]):
            i0 = fold_index(q[0] * w.m[0] - w.p[0] + e0, w.i[0], w.mode)
            for e1 in range(w.e[1]):
                i1 = fold_index(q[1] * w.m[1] - w.p[1] + e1, w.i[1], w.mode)
                if i0 < 0 or i1 < 0:            # a padded row: the fill
                    for e2 in range(w.e[2]):
                        dk = d + (e + e2) * tb + k
                        for kk in range(L):
                            dk[kk] = fill
                    e += w.e[2]
                    continue
                row = xc + (n * w.C + c) * S + (i0 * w.i[1] + i1) * W
                # tiles klo..khi of the run read inside the row for every e2: the widened
                # copy; the others through the padding's fold
                base = q[2] * m2 - w.p[2]
                klo = imin(imax(ceil_div(-base, m2), 0), L)
                khi = klo
                if W - w.e[2] - base >= 0:
                    khi = imax(imin((W - w.e[2] - base) // m2 + 1, L), klo)
                if khi > klo:
                    if floating is float:
                        vc_wino_take_f(d + e * tb + k + klo, tb, row + base + klo * m2,
                                       khi - klo, m2, w.e[2])
                    else:
                        vc_wino_take_d(d + e * tb + k + klo, tb, row + base + klo * m2,
                                       khi - klo, m2, w.e[2])
                for e2 in range(w.e[2]):
                    dk = d + e * tb + k
                    e += 1
                    for kk in range(klo):
                        i2 = fold_index(base + e2 + kk * m2, W, w.mode)
                        dk[kk] = fill if i2 < 0 else row[i2]
                    for kk in range(khi, L):
                        i2 = fold_index(base + e2 + kk * m2, W, w.mode)
                        dk[kk] = fill if i2 < 0 else row[i2]
        k += L
        q[2] += L - 1
        wino_next(w, &n, q)


cdef void wino_scatter(const Wino *w, const floating *r, floating *y, Py_ssize_t g0,
                       Py_ssize_t nb, Py_ssize_t j, floating b) noexcept nogil:
    """y[n, j, tile outputs] = r[o, k] + b for tile g0 + k, inside the output (r's
    elements w.tb apart), in runs of tiles along the last axis."""
    cdef Py_ssize_t k = 0, L, kk, hi, o0, o1, o2, y0, y1, n, e, tb = w.tb
    cdef Py_ssize_t q[3]
    cdef Py_ssize_t P = w.o[0] * w.o[1] * w.o[2], m2 = w.m[2]
    cdef floating *out
    cdef const floating *rk
    wino_tile(w, g0, &n, q)
    while k < nb:
        L = wino_run_length(w, q, nb - k)
        e = 0
        for o0 in range(w.m[0]):
            y0 = q[0] * w.m[0] + o0
            for o1 in range(w.m[1]):
                y1 = q[1] * w.m[1] + o1
                if y0 >= w.o[0] or y1 >= w.o[1]:
                    e += m2
                    continue
                out = y + (n * w.cout + j) * P + (y0 * w.o[1] + y1) * w.o[2] + q[2] * m2
                for o2 in range(m2):
                    rk = r + (e + o2) * tb + k
                    hi = imin(ceil_div(w.o[2] - q[2] * m2 - o2, m2), L)
                    for kk in range(hi):
                        out[kk * m2 + o2] = rk[kk] + b
                e += m2
        k += L
        q[2] += L - 1
        wino_next(w, &n, q)


cdef void wino_in(const Wino *w, floating *V, Py_ssize_t first, Py_ssize_t count,
                  Py_ssize_t k0, Py_ssize_t c0, Py_ssize_t c1, floating *s0) noexcept nogil:
    """Step 1 for tiles k0..k0+tb of the round (count tiles from tile first) and channels
    c0..c1: V[t, c, k] = (B^T d B)[t] of each tile's input d. s0: three scratch blocks."""
    cdef Py_ssize_t nb = imin(w.tb, count - k0), c
    cdef floating *s1 = s0 + w.T * w.tb
    cdef floating *s2 = s1 + w.T * w.tb
    for c in range(c0, c1):
        wino_gather(w, <const floating *>w.x, s0, first + k0, nb, c)
        wino_chain(w, s0, w.tb, s1, s2, V + c * w.R + k0, w.C * w.R, False, nb)


cdef inline void wino_products(const Wino *w, const floating *V, floating *M,
                               Py_ssize_t count, Py_ssize_t t, Py_ssize_t gi) noexcept nogil:
    """Step 2: M[t] (Cout/g x count) = U[t] (Cout/g x C/g) . V[t] (C/g x count), group gi."""
    cdef const floating *U = <const floating *>w.U
    if w.u_perm != NULL:            # dx: the forward pass's kernels (C x Cout/g), transposed
        gemm(True, False, w.cog, count, w.cig, <floating>1,
             U + (w.u_perm[t] * w.C + gi * w.cig) * w.cog, w.cog,
             V + (t * w.C + gi * w.cig) * w.R, w.R, <floating>0,
             M + (t * w.cout + gi * w.cog) * w.R, w.R)
        return
    gemm(False, False, w.cog, count, w.cig, <floating>1,
         U + (t * w.cout + gi * w.cog) * w.cig, w.cig,
         V + (t * w.C + gi * w.cig) * w.R, w.R, <floating>0,
         M + (t * w.cout + gi * w.cog) * w.R, w.R)


cdef void wino_out(const Wino *w, const floating *M, Py_ssize_t first, Py_ssize_t count,
                   Py_ssize_t k0, Py_ssize_t j0, Py_ssize_t j1, floating *s0) noexcept nogil:
    """Step 3 for tiles k0..k0+tb of the round and output maps j0..j1: y = A^T M A + b."""
    cdef const floating *bias = <const floating *>w.bias
    cdef Py_ssize_t nb = imin(w.tb, count - k0), j
    cdef floating *s1 = s0 + w.T * w.tb
    cdef floating *r
    for j in range(j0, j1):
        r = wino_chain(w, M + j * w.R + k0, w.cout * w.R, s0, s1, NULL, 0, True, nb)
        wino_scatter(w, r, <floating *>w.y, first + k0, nb, j,
                     bias[j] if bias != NULL else 0)


cdef void wino_run(Wino *w, Py_ssize_t u, int slot, floating dummy) noexcept nogil:
    cdef floating *scratch = <floating *>w.bufs + slot * w.buf_elems
    cdef floating *V
    cdef floating *M
    cdef Py_ssize_t first, count, k0, t, gi, blk, c0, j0
    if w.fused:
        # a whole round: its own V and M after the scratch blocks
        V = scratch + 3 * w.T * w.tb
        M = V + w.T * w.C * w.R
        first = (w.first + u) * w.R
        count = imin(w.R, w.tiles - first)
        k0 = 0
        while k0 < count:
            wino_in(w, V, first, count, k0, 0, w.C, scratch)
            k0 += w.tb
        for t in range(w.T):
            for gi in range(w.groups):
                wino_products(w, V, M, count, t, gi)
        k0 = 0
        while k0 < count:
            wino_out(w, M, first, count, k0, 0, w.cout, scratch)
            k0 += w.tb
        return
    if w.phase == 1:
        wino_products(w, <floating *>w.V, <floating *>w.M, w.count, u // w.groups,
                      u % w.groups)
        return
    blk = u % w.tblocks
    k0 = blk * w.tb
    if w.phase == 0:
        c0 = (u // w.tblocks) * w.cblk
        wino_in(w, <floating *>w.V, w.first, w.count, k0, c0, imin(c0 + w.cblk, w.C),
                scratch)
    else:
        j0 = (u // w.tblocks) * w.jblk
        wino_out(w, <floating *>w.M, w.first, w.count, k0, j0, imin(j0 + w.jblk, w.cout),
                 scratch)


cdef void wino_unit(void *ctx, Py_ssize_t u, int slot) noexcept nogil:
    cdef Wino *w = <Wino *>ctx
    if w.f64:
        wino_run(w, u, slot, <double>0)
    else:
        wino_run(w, u, slot, <float>0)


cdef int wino_setup(Wino *w, Geometry geometry, tuple m, list BT, list AT, Py_ssize_t N,
                    Py_ssize_t cout, Py_ssize_t groups, list keep) except -1:
    """Fill w's geometry, tiles and transforms (the forward view: x in, y out); keep
    holds the matrices' views alive."""
    cdef int a
    cdef const double[:, ::1] mat
    w.N, w.C, w.cout, w.groups = N, geometry.channels, cout, groups
    if groups < 1 or cout % groups or w.C % groups:
        raise ValueError("vecconv engine: groups must divide C and Cout")
    w.cig, w.cog = w.C // groups, cout // groups
    w.T, w.per_image = 1, 1
    for a in range(3):
        w.i[a] = geometry.size[a]
        w.o[a] = geometry.out[a]
        w.p[a] = geometry.pad[a]
        if geometry.stride[a] != 1 or geometry.dilation[a] != 1:
            raise ValueError("vecconv engine: the Winograd route needs stride and dilation 1")
        if BT[a] is None:
            if geometry.kernel[a] != 1 or m[a] != 1:
                raise ValueError("vecconv engine: an untransformed axis needs 1 tap")
            w.m[a], w.a[a] = 1, 1
        else:
            if geometry.kernel[a] != 3 or m[a] < 1:
                raise ValueError("vecconv engine: a transformed axis needs 3 taps")
            mat = BT[a]
            keep.append(mat)
            w.m[a] = m[a]
            w.a[a] = m[a] + 2
            if mat.shape[0] != w.a[a] or mat.shape[1] != w.a[a]:
                raise ValueError("vecconv engine: B^T does not match the tile")
            w.BT[a] = &mat[0, 0]
            w.kind_bt[a] = wino_kind(mat)
            mat = AT[a]
            keep.append(mat)
            if mat.shape[0] != w.m[a] or mat.shape[1] != w.a[a]:
                raise ValueError("vecconv engine: A^T does not match the tile")
            w.AT[a] = &mat[0, 0]
            w.kind_at[a] = wino_kind(mat)
        w.e[a] = w.a[a]
        w.nt[a] = (w.o[a] + w.m[a] - 1) // w.m[a]
        w.T *= w.a[a]
        w.per_image *= w.nt[a]
    if not keep:
        raise ValueError("vecconv engine: the Winograd route transforms at least one axis")
    w.tiles = N * w.per_image
    w.mode = geometry.mode
    w.fill = geometry.fill
    if w.mode != 0 and w.i[0] * w.i[1] * w.i[2] == 0:
        raise ValueError("vecconv engine: a padding mode that reads the map needs a "
                         "non-empty map")
    return 0


def winograd_forward(const floating[::1] x, const floating[::1] U, const floating[::1] bias,
                     floating[::1] y, bint has_bias, Geometry geometry, tuple m, list BT,
                     list AT, Py_ssize_t N, Py_ssize_t cout, Py_ssize_t groups,
                     Py_ssize_t tb, Py_ssize_t R, Py_ssize_t cblk, Py_ssize_t jblk,
                     bint fused, int threads, int slots, tuple u_perm=None):
    """y = conv(x) + bias on the Winograd route: U the transformed kernels (T, Cout,
    C/groups), m the outputs per tile per axis, BT/AT per axis the (a x a) and (m x a)
    float64 transforms (None for an untransformed axis, whose m is 1). Stride and
    dilation 1; a kernel axis of 1 or 3 taps. Rounds of R tiles; transform units of tb
    tiles and cblk channels (in) or jblk output maps (out); fused: a unit is a round.
    u_perm (dx): U holds the forward pass's transformed kernels, (T, C, Cout/groups) in
    this pass's terms, and this pass's U[t] is, group by group, U[u_perm[t]] transposed
    (the flipped kernels' transform permutes the taps: _winograd.flip_permutation)."""
    cdef Wino w
    cdef Py_ssize_t units, per_call, n_units, t
    cdef Py_ssize_t perm[WINO_MAX_T]
    cdef list keep = []
    memset(&w, 0, sizeof(Wino))
    w.f64 = floating is double
    if slots < 1 or threads < 1 or tb < 1 or R < tb or cblk < 1 or jblk < 1:
        raise ValueError("vecconv engine: bad slots, threads, tiles or blocks")
    wino_setup(&w, geometry, m, BT, AT, N, cout, groups, keep)
    w.tb, w.R, w.cblk, w.jblk = tb, R, cblk, jblk
    if max(w.cig, w.cog, R, w.C * R, cout * R) >= 2**31:
        raise ValueError("vecconv engine: a BLAS dimension of the Winograd route is past "
                         "2**31")
    expect("x", x.shape[0], N * w.C * w.i[0] * w.i[1] * w.i[2])
    expect("U", U.shape[0], w.T * cout * w.cig)
    if u_perm is not None:
        if w.T > WINO_MAX_T:
            raise ValueError(f"vecconv engine: u_perm serves at most {WINO_MAX_T} "
                             f"transformed taps, got {w.T}")
        if len(u_perm) != w.T:
            raise ValueError("vecconv engine: u_perm must hold one tap per transformed tap")
        for t in range(w.T):
            perm[t] = u_perm[t]
            if not 0 <= perm[t] < w.T:
                raise ValueError("vecconv engine: u_perm holds a tap out of range")
        w.u_perm = perm
    expect("bias", bias.shape[0], cout if has_bias else bias.shape[0])
    expect("y", y.shape[0], N * cout * w.o[0] * w.o[1] * w.o[2])
    if w.tiles == 0 or cout == 0:
        return
    w.x, w.U, w.y = &x[0], &U[0], &y[0]
    w.bias = &bias[0] if has_bias else NULL
    w.fused = fused
    w.buf_elems = 3 * w.T * tb + (w.T * R * (w.C + cout) if fused else 0)
    threads = imin(threads, slots)
    if fused:
        w.bufs = alloc_buffers(slots * w.buf_elems * sizeof(floating))
    else:
        w.V = alloc_buffers((w.T * R * (w.C + cout) + slots * w.buf_elems) * sizeof(floating))
        w.M = <floating *>w.V + w.T * w.C * R
        w.bufs = <floating *>w.M + w.T * cout * R
    try:
        if fused:
            units = (w.tiles + R - 1) // R
            per_call = max(1, WINO_ROUND_ELEMS // (w.T * R * (w.C + cout)))
            w.first = 0
            while w.first < units:
                n_units = imin(per_call, units - w.first)
                with nogil:
                    vc_run(wino_unit, &w, n_units, threads)
                PyErr_CheckSignals()
                w.first += n_units
            return
        w.first = 0
        while w.first < w.tiles:
            w.count = imin(R, w.tiles - w.first)
            w.tblocks = (w.count + tb - 1) // tb
            w.phase = 0
            with nogil:
                vc_run(wino_unit, &w, w.tblocks * ((w.C + cblk - 1) // cblk), threads)
            w.phase = 1
            with nogil:
                vc_run(wino_unit, &w, w.T * groups, threads)
            w.phase = 2
            with nogil:
                vc_run(wino_unit, &w, w.tblocks * ((cout + jblk - 1) // jblk), threads)
            PyErr_CheckSignals()
            w.first += w.count
    finally:
        free_buffers(w.bufs if fused else w.V)


# ------------------------------------------------------------------- the kernels' transform
cdef enum:
    # kernels per unit of the pool: a constant, so that the cut depends on the shapes only
    WINO_KERNEL_UNIT = 4096


ctypedef struct WinoKernels:
    bint f64
    const void *src
    void *dst
    const Py_ssize_t *start     # K's nonzero terms, output by output (_winograd.h)
    const Py_ssize_t *idx
    const void *val
    Py_ssize_t rows, cols, pairs, buf_elems
    int mode
    void *bufs


cdef void wino_kernels_unit(void *ctx, Py_ssize_t u, int slot) noexcept nogil:
    cdef WinoKernels *k = <WinoKernels *>ctx
    cdef Py_ssize_t p0 = u * WINO_KERNEL_UNIT
    cdef Py_ssize_t p1 = imin(p0 + WINO_KERNEL_UNIT, k.pairs)
    if k.f64:
        vc_wino_kernels_d(<const double *>k.src, <double *>k.dst, k.start, k.idx,
                          <const double *>k.val, k.rows, k.cols, k.pairs, k.mode, p0, p1,
                          <double *>k.bufs + slot * k.buf_elems)
    else:
        vc_wino_kernels_f(<const float *>k.src, <float *>k.dst, k.start, k.idx,
                          <const float *>k.val, k.rows, k.cols, k.pairs, k.mode, p0, p1,
                          <float *>k.bufs + slot * k.buf_elems)


def winograd_kernels(const floating[::1] src, floating[::1] dst, const floating[:, ::1] K,
                     Py_ssize_t pairs, str mode, int threads):
    """The kernels' transforms by K (T x taps, the Kronecker product of each axis's G):
    mode 'forward', U (T, pairs) from w (pairs, taps); 'inverse', dW (pairs, taps) = K^T
    applied to dU (T, pairs). Every kernel's sums run in the same order, whatever the
    threads (_winograd.h)."""
    cdef WinoKernels k
    cdef Py_ssize_t rows = K.shape[0], cols = K.shape[1], units, o, i, n_out, e = 0
    cdef void *terms
    cdef Py_ssize_t *start
    cdef Py_ssize_t *idx
    cdef floating *val
    cdef floating v
    memset(&k, 0, sizeof(WinoKernels))
    if mode == "forward":
        k.mode = VC_KT_FORWARD
    elif mode == "inverse":
        k.mode = VC_KT_INVERSE
    else:
        raise ValueError(f"vecconv engine: unknown kernel transform {mode!r}")
    if threads < 1 or rows < 1 or cols < 1 or pairs < 0:
        raise ValueError("vecconv engine: bad threads or transform")
    if pairs > PY_SSIZE_T_MAX // max(rows, cols):
        raise ValueError("vecconv engine: too many kernels for the transform")
    expect("src", src.shape[0], pairs * (rows if k.mode == VC_KT_INVERSE else cols))
    expect("dst", dst.shape[0], pairs * (cols if k.mode == VC_KT_INVERSE else rows))
    if pairs == 0:
        return
    # K's nonzero terms per output: its rows (forward) or its columns (inverse)
    n_out = cols if k.mode == VC_KT_INVERSE else rows
    k.buf_elems = VC_KT_BUF_ELEMS(cols) if k.mode == VC_KT_FORWARD else 0
    units = (pairs + WINO_KERNEL_UNIT - 1) // WINO_KERNEL_UNIT
    threads = <int>imin(threads, units)
    terms = alloc_buffers((n_out + 1 + rows * cols) * sizeof(Py_ssize_t)
                          + (rows * cols + threads * k.buf_elems) * sizeof(floating))
    start = <Py_ssize_t *>terms
    idx = start + n_out + 1
    val = <floating *>(idx + rows * cols)
    start[0] = 0
    for o in range(n_out):
        for i in range(rows if k.mode == VC_KT_INVERSE else cols):
            v = K[i, o] if k.mode == VC_KT_INVERSE else K[o, i]
            if v != 0:
                idx[e] = i
                val[e] = v
                e += 1
        start[o + 1] = e
    k.f64 = floating is double
    k.src, k.dst = &src[0], &dst[0]
    k.start, k.idx, k.val = start, idx, val
    k.rows, k.cols, k.pairs = rows, cols, pairs
    k.bufs = val + rows * cols
    try:
        with nogil:
            vc_run(wino_kernels_unit, &k, units, threads)
        PyErr_CheckSignals()
    finally:
        free_buffers(terms)


# ----------------------------------------------------------------------------- dW
ctypedef struct WinoGrad:
    Wino *wx                    # x, transformed as the forward pass does (B^T d B)
    Wino *wd                    # dy: tiles of m outputs, transformed by A (the adjoint of A^T)
    void *acc                   # (chunks, T, Cout, C/groups): one dU per chunk
    Py_ssize_t chunk            # tiles per chunk
    # whole: every tile's V and dM at once (the batch's, R = tiles), made by units of tb
    # tiles and blk channels (phase 0), then one product per transformed tap and group
    # over all the tiles (phase 1) into the one dU: no accumulators to add
    bint whole
    int phase
    Py_ssize_t tblocks, blk, xblocks, dblocks


cdef void wgrad_run(WinoGrad *g, Py_ssize_t u, int slot, floating dummy) noexcept nogil:
    """Chunk u of the tiles: dU_u[t] += dM[t] V[t]^T over its tiles, round by round
    (eq. 12 in Winograd's form: the kernel gradient of M[t] = U[t] V[t])."""
    cdef Wino *wx = g.wx
    cdef Wino *wd = g.wd
    cdef floating *scratch = <floating *>wx.bufs + slot * wx.buf_elems
    cdef floating *V = scratch + 3 * wx.T * wx.tb
    cdef floating *D = V + wx.T * wx.C * wx.R
    cdef floating *acc = <floating *>g.acc + u * wx.T * wx.cout * wx.cig
    cdef Py_ssize_t first = u * g.chunk, last = imin(first + g.chunk, wx.tiles)
    cdef Py_ssize_t count, k0, t, gi
    while first < last:
        count = imin(wx.R, last - first)
        k0 = 0
        while k0 < count:
            wino_in(wx, V, first, count, k0, 0, wx.C, scratch)
            wino_in(wd, D, first, count, k0, 0, wd.C, scratch)
            k0 += wx.tb
        for t in range(wx.T):
            for gi in range(wx.groups):
                gemm(False, True, wx.cog, wx.cig, count, <floating>1,
                     D + (t * wx.cout + gi * wx.cog) * wx.R, wx.R,
                     V + (t * wx.C + gi * wx.cig) * wx.R, wx.R, <floating>1,
                     acc + (t * wx.cout + gi * wx.cog) * wx.cig, wx.cig)
        first += count


cdef void wgrad_whole(WinoGrad *g, Py_ssize_t u, int slot, floating dummy) noexcept nogil:
    """Unit u of a phase of the whole-batch dW: phase 0 transforms tiles k0.. of a block
    of x's channels into V or of dy's into dM; phase 1 is dU[t] = dM[t] V[t]^T of one
    transformed tap and group, over every tile."""
    cdef Wino *wx = g.wx
    cdef Wino *wd = g.wd
    cdef floating *V = <floating *>wx.V
    cdef floating *D = <floating *>wx.M
    cdef floating *acc = <floating *>g.acc
    cdef Py_ssize_t blk, k0, c0, t, gi
    if g.phase == 1:
        t, gi = u // wx.groups, u % wx.groups
        gemm(False, True, wx.cog, wx.cig, wx.tiles, <floating>1,
             D + (t * wx.cout + gi * wx.cog) * wx.R, wx.R,
             V + (t * wx.C + gi * wx.cig) * wx.R, wx.R, <floating>0,
             acc + (t * wx.cout + gi * wx.cog) * wx.cig, wx.cig)
        return
    blk = u % g.tblocks
    k0 = blk * wx.tb
    c0 = (u // g.tblocks) * g.blk
    if c0 < wx.C:
        wino_in(wx, V, 0, wx.tiles, k0, c0, imin(c0 + g.blk, wx.C),
                <floating *>wx.bufs + slot * wx.buf_elems)
    else:
        c0 -= g.xblocks * g.blk
        wino_in(wd, D, 0, wx.tiles, k0, c0, imin(c0 + g.blk, wd.C),
                <floating *>wx.bufs + slot * wx.buf_elems)


cdef void wgrad_unit(void *ctx, Py_ssize_t u, int slot) noexcept nogil:
    cdef WinoGrad *g = <WinoGrad *>ctx
    if g.whole:
        if g.wx.f64:
            wgrad_whole(g, u, slot, <double>0)
        else:
            wgrad_whole(g, u, slot, <float>0)
    elif g.wx.f64:
        wgrad_run(g, u, slot, <double>0)
    else:
        wgrad_run(g, u, slot, <float>0)


def winograd_weight_grad(const floating[::1] x, const floating[::1] dy, floating[::1] acc,
                         Geometry geometry, tuple m, list BT, list AT, list A,
                         Py_ssize_t N, Py_ssize_t cout, Py_ssize_t groups, Py_ssize_t tb,
                         Py_ssize_t R, Py_ssize_t chunks, int threads, int slots,
                         bint whole=False, Py_ssize_t blk=64):
    """acc (chunks, T, Cout, C/groups), zeroed by the caller, += dU of each chunk of the
    tiles: dU[t] = sum over tiles of (A dy A^T)[t] (B^T d B)[t]^T; the caller adds the
    chunks in order and takes dW = G^T dU G. A per axis: the (a x m) transpose of A^T.
    whole (R the batch's tiles, one chunk): acc = dU, written (not added to), from every
    tile's V and dM at once, transformed by units of tb tiles and blk channels."""
    cdef Wino wx, wd
    cdef WinoGrad g
    cdef list keep = []
    cdef int a
    cdef const double[:, ::1] mat
    memset(&wx, 0, sizeof(Wino))
    wx.f64 = floating is double
    if slots < 1 or threads < 1 or tb < 1 or R < tb or chunks < 1 or blk < 1:
        raise ValueError("vecconv engine: bad slots, threads, tiles or chunks")
    wino_setup(&wx, geometry, m, BT, AT, N, cout, groups, keep)
    if whole and (chunks != 1 or R != wx.tiles):
        raise ValueError("vecconv engine: a whole-batch dW is one chunk of every tile")
    wx.tb, wx.R = tb, R
    if max(wx.cig, wx.cog, R) >= 2**31:
        raise ValueError("vecconv engine: a BLAS dimension of the Winograd route is past "
                         "2**31")
    # dy as a map of its own: cout channels, tiles of m entries from 0 (no padding),
    # outputs past the map read as 0, transformed by A
    wd = wx
    wd.C = cout
    for a in range(3):
        wd.i[a] = wx.o[a]
        wd.p[a] = 0
        wd.e[a] = wx.m[a]
        if wx.BT[a] != NULL:
            mat = A[a]
            keep.append(mat)
            if mat.shape[0] != wx.a[a] or mat.shape[1] != wx.m[a]:
                raise ValueError("vecconv engine: A does not match the tile")
            wd.BT[a] = &mat[0, 0]
            wd.kind_bt[a] = wino_kind(mat)
    wd.mode, wd.fill = 0, 0.0
    expect("x", x.shape[0], N * wx.C * wx.i[0] * wx.i[1] * wx.i[2])
    expect("dy", dy.shape[0], N * cout * wx.o[0] * wx.o[1] * wx.o[2])
    expect("acc", acc.shape[0], chunks * wx.T * cout * wx.cig)
    blk = imin(blk, max(wx.C, cout, 1))     # (no block count past the channels' own)
    if wx.tiles == 0 or cout == 0:
        if whole and acc.shape[0]:          # (acc is written, not added to: no tile, 0)
            memset(&acc[0], 0, acc.shape[0] * sizeof(floating))
        return
    wx.x, wd.x = &x[0], &dy[0]
    g.wx, g.wd = &wx, &wd
    g.acc = &acc[0]
    g.chunk = (wx.tiles + chunks - 1) // chunks
    if whole:
        wx.buf_elems = 3 * wx.T * tb
        wx.V = alloc_buffers((wx.T * R * (wx.C + cout) + slots * wx.buf_elems)
                             * sizeof(floating))
        wx.M = <floating *>wx.V + wx.T * wx.C * R
        wx.bufs = <floating *>wx.M + wx.T * cout * R
        g.whole, g.blk = True, blk
        g.tblocks = (R + tb - 1) // tb
        g.xblocks, g.dblocks = (wx.C + blk - 1) // blk, (cout + blk - 1) // blk
        try:
            g.phase = 0                 # (per-slot scratch: at most slots participants)
            with nogil:
                vc_run(wgrad_unit, &g, g.tblocks * (g.xblocks + g.dblocks),
                       imin(threads, slots))
            PyErr_CheckSignals()
            g.phase = 1                 # (no scratch)
            with nogil:
                vc_run(wgrad_unit, &g, wx.T * groups, threads)
            PyErr_CheckSignals()
        finally:
            free_buffers(wx.V)
        return
    wx.buf_elems = 3 * wx.T * tb + wx.T * R * (wx.C + cout)
    wx.bufs = alloc_buffers(slots * wx.buf_elems * sizeof(floating))
    try:
        with nogil:
            vc_run(wgrad_unit, &g, (wx.tiles + g.chunk - 1) // g.chunk, imin(threads, slots))
        PyErr_CheckSignals()
    finally:
        free_buffers(wx.bufs)
