# cython: language_level=3
"""Private compiled kernels of vecconv: im2col, col2im and the GEMM-based convolution.

Everything here assumes clean input: C-contiguous float32/float64 arrays of consistent
shapes, geometry already checked, every BLAS dimension below 2**31. The public layer
(``vecconv.conv``) owns validation and the error messages.

Layout of the column (patch) buffer, one tile at a time::

    cols[(c*kh + p)*kw + q, b*Lt + (oh - r0)*Wo + ow] = xpad[b0 + b, c, oh*sh + p*dh, ow*sw + q*dw]

i.e. rows are kernel taps (channel-major, the seed's vec of each kernel read row by row),
columns are output positions of the tile (nb images x rows r0..r1 of each). A tile is
either several whole images or a band of output rows of one image; its size comes from
the workspace budget, so the buffer never grows with the batch or the image.

With this layout each GEMM reads or writes an NCHW array directly through its leading
dimension: no transposes, no copies of the output.
"""

from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.string cimport memset, memcpy
from libc.stdlib cimport malloc, free
from cpython.exc cimport PyErr_CheckSignals
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "Python.h":
    # the workspace is reported to tracemalloc (as NumPy reports its arrays), so that
    # tests and the benchmark can see the engine's peak memory
    int PyTraceMalloc_Track(unsigned int domain, size_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, size_t ptr)

cdef enum:
    TRACE_DOMAIN = 0x76656363     # 'vecc'

cdef extern from *:
    """
    /* SciPy's OpenBLAS thread count, found at run time: the batch-parallel mode gives
       each OpenMP thread whole images and needs single-threaded GEMMs meanwhile. On a
       platform or BLAS without these symbols the engine simply never uses that mode. */
    #if defined(__linux__)
    #include <dlfcn.h>
    #include <link.h>
    #include <string.h>
    typedef void (*vc_set_fn)(int);
    typedef int (*vc_get_fn)(void);
    static vc_set_fn vc_set[4];
    static vc_get_fn vc_get[4];
    static int vc_nlib = 0;
    static int vc_scan(struct dl_phdr_info *info, size_t size, void *data) {
        static const char *names[2][2] = {
            {"scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"},
            {"openblas_set_num_threads", "openblas_get_num_threads"}};
        void *h;
        int i;
        (void)size; (void)data;
        if (vc_nlib >= 4 || !info->dlpi_name || !strstr(info->dlpi_name, "openblas")) return 0;
        h = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
        if (!h) return 0;
        for (i = 0; i < 2; i++) {
            vc_set_fn s = (vc_set_fn)dlsym(h, names[i][0]);
            vc_get_fn g = (vc_get_fn)dlsym(h, names[i][1]);
            if (s && g) { vc_set[vc_nlib] = s; vc_get[vc_nlib] = g; vc_nlib++; break; }
        }
        dlclose(h);   /* a NOLOAD handle only adds a reference: the library stays loaded */
        return 0;
    }
    static int vc_blas_scan(void) { vc_nlib = 0; dl_iterate_phdr(vc_scan, NULL); return vc_nlib; }
    static int vc_blas_get(int i) { return vc_get[i](); }
    static void vc_blas_set(int i, int n) { vc_set[i](n); }
    #else
    static int vc_blas_scan(void) { return 0; }
    static int vc_blas_get(int i) { (void)i; return 1; }
    static void vc_blas_set(int i, int n) { (void)i; (void)n; }
    #endif

    #ifdef _OPENMP
    #include <omp.h>
    static int vc_openmp_threads(void) { return omp_get_max_threads(); }
    #else
    static int vc_openmp_threads(void) { return 0; }
    #endif
    """
    int vc_openmp_threads() noexcept nogil
    int vc_blas_scan() noexcept nogil
    int vc_blas_get(int i) noexcept nogil
    void vc_blas_set(int i, int n) noexcept nogil


cdef int _blas_libs = vc_blas_scan()      # SciPy's OpenBLAS is loaded by the cimport above
cdef int _serial_users = 0
cdef int _saved_threads[4]


def blas_thread_control():
    """How many OpenBLAS libraries the engine can set to one thread (0: none)."""
    return _blas_libs


cdef void serial_blas_enter():
    """BLAS to one thread while a batch-parallel call runs. Called with the GIL held, so
    concurrent vecconv calls count themselves in and out without a race; the last one out
    restores what it found."""
    global _serial_users
    cdef int i
    if _serial_users == 0:
        for i in range(_blas_libs):
            _saved_threads[i] = vc_blas_get(i)
            vc_blas_set(i, 1)
    _serial_users += 1


cdef void serial_blas_exit():
    global _serial_users
    cdef int i
    _serial_users -= 1
    if _serial_users == 0:
        for i in range(_blas_libs):
            vc_blas_set(i, _saved_threads[i])


cdef enum:
    # tiles with fewer output positions per image than this go through one staged GEMM;
    # vecconv.conv._tile uses the same number to count the staging rows in the budget
    STAGE_BELOW = 64


def stage_below():
    return STAGE_BELOW


ctypedef struct Geom:
    Py_ssize_t C, H, W          # input maps
    Py_ssize_t kh, kw           # kernel
    Py_ssize_t sh, sw           # stride
    Py_ssize_t dh, dw           # dilation
    Py_ssize_t ph, pw           # padding before (top, left); after is implied by Ho, Wo
    Py_ssize_t Ho, Wo           # output size


def openmp_threads():
    """Threads the im2col/col2im loops may use; 0 when built without OpenMP."""
    return vc_openmp_threads()


cdef Geom make_geom(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, tuple geometry) except *:
    cdef Geom g
    g.C, g.H, g.W = C, H, W
    g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.ph, g.pw, g.Ho, g.Wo = geometry
    return g


def pointwise(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, tuple geometry):
    """Whether the engine runs this convolution without im2col (the planner asks here,
    so that the two never disagree)."""
    cdef Geom g = make_geom(C, H, W, geometry)
    return is_pointwise(&g)


cdef inline bint is_pointwise(const Geom *g) noexcept nogil:
    # A 1x1 kernel at stride 1 without padding: the column matrix of an image is the image
    # itself, (C, H*W), so no im2col is needed at all.
    return (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0
            and g.Ho == g.H and g.Wo == g.W)


# ----------------------------------------------------------------------------- BLAS
cdef inline void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      floating alpha, const floating *a, Py_ssize_t lda,
                      const floating *b, Py_ssize_t ldb,
                      floating beta, floating *c, Py_ssize_t ldc) noexcept nogil:
    """Row-major C(m x n) = alpha op(A) op(B) + beta C.

    BLAS is column-major; a row-major matrix is the transpose of a column-major one, so
    C^T = op(B)^T op(A)^T is the column-major call with the operands swapped.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int im = <int>m, in_ = <int>n, ik = <int>k
    cdef int ilda = <int>lda, ildb = <int>ldb, ildc = <int>ldc
    if m == 0 or n == 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &in_, &im, &ik, &alpha, <float *>b, &ildb, <float *>a, &ilda,
              &beta, c, &ildc)
    else:
        dgemm(&tb, &ta, &in_, &im, &ik, &alpha, <double *>b, &ildb, <double *>a, &ilda,
              &beta, c, &ildc)


def gemm_into(const floating[:, :] a, const floating[:, :] b, floating[:, :] c,
              bint trans_a=False, bint trans_b=False, Py_ssize_t count=1,
              Py_ssize_t a_step=0, Py_ssize_t b_step=0, Py_ssize_t c_step=0,
              double beta=0):
    """c = op(a) @ op(b) + beta c through the same BLAS call the engine makes (tests,
    the benchmark's roofline). Leading dimensions come from the row strides, so the
    operands may be column blocks of wider matrices.

    ``count`` > 1 makes that many calls without returning to Python, the operands
    advancing by a_step, b_step, c_step elements each time: the benchmark's per-image
    roofline, whose GEMMs are too small to time one by one.
    """
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1], r
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t lda = a.strides[0] // sizeof(floating), ldb = b.strides[0] // sizeof(floating)
    cdef Py_ssize_t ldc = c.strides[0] // sizeof(floating)
    if ((a.shape[1] > 1 and a.strides[1] != sizeof(floating))
            or (b.shape[1] > 1 and b.strides[1] != sizeof(floating))
            or (c.shape[1] > 1 and c.strides[1] != sizeof(floating))):
        raise ValueError("gemm_into needs rows of contiguous elements")
    with nogil:
        for r in range(count):
            gemm(trans_a, trans_b, m, n, k, <floating>1, &a[0, 0] + r * a_step, lda,
                 &b[0, 0] + r * b_step, ldb, <floating>beta, &c[0, 0] + r * c_step, ldc)


# ----------------------------------------------------------------------------- im2col
cdef inline Py_ssize_t span_lo(const Geom *g, Py_ssize_t iw0) noexcept nogil:
    """First output column ow whose tap iw = ow*sw + iw0 lies inside the row (iw >= 0)."""
    cdef Py_ssize_t lo = 0 if iw0 >= 0 else (-iw0 + g.sw - 1) // g.sw
    return lo if lo < g.Wo else g.Wo


cdef inline Py_ssize_t span_hi(const Geom *g, Py_ssize_t iw0, Py_ssize_t lo) noexcept nogil:
    """One past the last output column whose tap lies inside the row (iw < W), >= lo."""
    cdef Py_ssize_t hi = 0 if g.W - 1 - iw0 < 0 else (g.W - 1 - iw0) // g.sw + 1
    if hi > g.Wo:
        hi = g.Wo
    return hi if hi > lo else lo


cdef void im2col_tile(const floating[:, :, :, ::1] x, floating *cols, const Geom *g,
                      Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Fill cols (C*kh*kw, nb*Lt) for images b0..b0+nb, output rows r0..r1.

    Parallel over rows of cols (image, channel, tap): each writes its own row segment.
    """
    cdef Py_ssize_t Lt = (r1 - r0) * g.Wo, ld = nb * Lt
    cdef Py_ssize_t taps = g.kh * g.kw
    cdef Py_ssize_t idx, b, c, t, p, q, oh, ow, ih, lo, hi, iw0
    cdef floating *dst
    cdef const floating *src
    for idx in prange(nb * g.C * taps, schedule='static'):
        b = idx // (g.C * taps)
        c = (idx // taps) % g.C
        t = idx % taps
        p = t // g.kw
        q = t - p * g.kw
        # Assigned directly, not through pointers, so that prange makes them thread-private.
        iw0 = q * g.dw - g.pw
        lo = span_lo(g, iw0)
        hi = span_hi(g, iw0, lo)
        for oh in range(r0, r1):
            # (a pointer advanced with += would be taken by prange for a reduction)
            dst = cols + (c * taps + t) * ld + b * Lt + (oh - r0) * g.Wo
            ih = oh * g.sh - g.ph + p * g.dh
            if ih < 0 or ih >= g.H:
                memset(dst, 0, g.Wo * sizeof(floating))
            else:
                src = &x[b0 + b, c, ih, 0]
                if lo > 0:
                    memset(dst, 0, lo * sizeof(floating))
                if g.sw == 1:
                    memcpy(dst + lo, src + lo + iw0, (hi - lo) * sizeof(floating))
                else:
                    for ow in range(lo, hi):
                        dst[ow] = src[ow * g.sw + iw0]
                if hi < g.Wo:
                    memset(dst + hi, 0, (g.Wo - hi) * sizeof(floating))


cdef void col2im_tile(floating[:, :, :, ::1] dx, const floating *cols, const Geom *g,
                      Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """dx[b0+b, c] += the taps of cols that read it (the adjoint of im2col_tile).

    Parallel over input rows (image, channel, row): each thread gathers every tap that
    lands on the rows it owns, so no element of dx is written by two threads, and even a
    single one-channel image (one (image, channel) pair) keeps both cores busy.
    """
    cdef Py_ssize_t Lt = (r1 - r0) * g.Wo, ld = nb * Lt
    cdef Py_ssize_t taps = g.kh * g.kw
    # input rows that output rows r0..r1 can reach
    cdef Py_ssize_t ih_lo = r0 * g.sh - g.ph, ih_hi = (r1 - 1) * g.sh - g.ph + (g.kh - 1) * g.dh + 1
    cdef Py_ssize_t nrows, idx, b, c, ih, p, q, t, oh, ow, lo, hi, iw0
    cdef const floating *src
    cdef floating *dst
    if ih_lo < 0:
        ih_lo = 0
    if ih_hi > g.H:
        ih_hi = g.H
    nrows = ih_hi - ih_lo
    if nrows <= 0:
        return
    for idx in prange(nb * g.C * nrows, schedule='static'):
        b = idx // (g.C * nrows)
        c = (idx // nrows) % g.C
        ih = ih_lo + idx % nrows
        dst = &dx[b0 + b, c, ih, 0]
        for p in range(g.kh):
            # output row oh reads input row ih through kernel row p when oh*sh = ih + ph - p*dh
            t = ih + g.ph - p * g.dh
            if t < 0 or t % g.sh != 0:
                continue
            oh = t // g.sh
            if oh < r0 or oh >= r1:
                continue
            for q in range(g.kw):
                iw0 = q * g.dw - g.pw
                lo = span_lo(g, iw0)
                hi = span_hi(g, iw0, lo)
                src = cols + (c * taps + p * g.kw + q) * ld + b * Lt + (oh - r0) * g.Wo
                if g.sw == 1:
                    for ow in range(lo, hi):
                        dst[ow + iw0] += src[ow]
                else:
                    for ow in range(lo, hi):
                        dst[ow * g.sw + iw0] += src[ow]


def im2col_full(const floating[:, :, :, ::1] x, floating[:, ::1] cols, tuple geometry):
    """cols (C*kh*kw, N*Ho*Wo) = the patch matrix of the whole batch, in one tile."""
    cdef Geom g = make_geom(x.shape[1], x.shape[2], x.shape[3], geometry)
    cdef Py_ssize_t n = x.shape[0]
    if n == 0 or cols.shape[0] == 0 or cols.shape[1] == 0:
        return
    with nogil:
        im2col_tile(x, &cols[0, 0], &g, 0, n, 0, g.Ho)


def col2im_full(const floating[:, ::1] cols, floating[:, :, :, ::1] dx, tuple geometry):
    """dx (zeroed by the caller) += col2im(cols) for the whole batch, in one tile."""
    cdef Geom g = make_geom(dx.shape[1], dx.shape[2], dx.shape[3], geometry)
    cdef Py_ssize_t n = dx.shape[0]
    if n == 0 or cols.shape[0] == 0 or cols.shape[1] == 0:
        return
    with nogil:
        col2im_tile(dx, &cols[0, 0], &g, 0, n, 0, g.Ho)


# ----------------------------------------------------------------------------- convolution
cdef inline bint is_staged(const Geom *g, Py_ssize_t nb, Py_ssize_t Lt) noexcept nogil:
    # Few output positions per image (LeNet-5's C5 has one): one GEMM per image would be a
    # matrix-vector product. Such tiles stage dY/Y as (Cout, nb*Lt) and make one GEMM.
    return nb > 1 and Lt < STAGE_BELOW and not is_pointwise(g)


cdef floating *alloc_workspace(const Geom *g, Py_ssize_t cout, Py_ssize_t tile_images,
                               Py_ssize_t tile_rows, floating dummy) except? NULL:
    """Column buffer (+ staging rows) for the largest tile, or NULL when none is needed."""
    cdef Py_ssize_t n, rows = g.C * g.kh * g.kw
    cdef floating *buf
    if is_pointwise(g):
        return NULL
    if is_staged(g, tile_images, tile_rows * g.Wo):
        rows += cout
    n = rows * tile_images * tile_rows * g.Wo
    buf = <floating *>malloc(n * sizeof(floating) if n > 0 else 1)
    if buf == NULL:
        raise MemoryError(f"vecconv: cannot allocate a {n * sizeof(floating)}-byte workspace")
    PyTraceMalloc_Track(TRACE_DOMAIN, <size_t>buf, n * sizeof(floating))
    return buf


cdef void free_workspace(void *buf) noexcept:
    if buf != NULL:
        PyTraceMalloc_Untrack(TRACE_DOMAIN, <size_t>buf)
        free(buf)


cdef void unstage(const floating *stage, floating[:, :, :, ::1] y, const floating *bias,
                  Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t Lt,
                  Py_ssize_t L) noexcept nogil:
    """y[b0+b, j, tile] = stage[j, b*Lt:(b+1)*Lt] + bias[j]."""
    cdef Py_ssize_t cout = y.shape[1], ld = nb * Lt, b, j, i
    cdef floating *dst
    cdef const floating *src
    cdef floating bj
    for b in range(nb):
        for j in range(cout):
            dst = &y[b0 + b, j, 0, 0] + r0 * y.shape[3]
            src = stage + j * ld + b * Lt
            bj = bias[j] if bias != NULL else 0
            for i in range(Lt):
                dst[i] = src[i] + bj


cdef void restage(const floating[:, :, :, ::1] dy, floating *stage, Py_ssize_t b0,
                  Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t Lt, Py_ssize_t L) noexcept nogil:
    """stage[j, b*Lt:(b+1)*Lt] = dy[b0+b, j, tile]."""
    cdef Py_ssize_t cout = dy.shape[1], ld = nb * Lt, b, j
    for b in range(nb):
        for j in range(cout):
            memcpy(stage + j * ld + b * Lt, &dy[b0 + b, j, 0, 0] + r0 * dy.shape[3],
                   Lt * sizeof(floating))


cdef void forward_tile(const floating[:, :, :, ::1] x, const floating[:, ::1] w2,
                       const floating *bias, floating[:, :, :, ::1] y, floating *cols,
                       const Geom *g, Py_ssize_t groups,
                       Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    # eq. 1 / eq. 12 in matrix form: vec(z_j) = [c] vec(k_j), for all j at once:
    # Y (Cout x L) = W (Cout x C*kh*kw) . cols (C*kh*kw x L), per image and group.
    cdef Py_ssize_t Lt = (r1 - r0) * g.Wo, ld = nb * Lt, L = g.Ho * g.Wo
    cdef Py_ssize_t cout = y.shape[1], cog = cout // groups, cig = g.C // groups
    cdef Py_ssize_t kg = cig * g.kh * g.kw
    cdef Py_ssize_t b, gi, j, i, ldb
    cdef const floating *bp
    cdef floating *yp
    cdef floating beta = 0
    cdef bint pw = is_pointwise(g)
    cdef floating *stage
    if not pw:
        im2col_tile(x, cols, g, b0, nb, r0, r1)
    if is_staged(g, nb, Lt):
        stage = cols + g.C * g.kh * g.kw * ld
        for gi in range(groups):
            gemm(False, False, cog, ld, kg, <floating>1, &w2[gi * cog, 0], kg,
                 cols + gi * kg * ld, ld, <floating>0, stage + gi * cog * ld, ld)
        unstage(stage, y, bias, b0, nb, r0, Lt, L)
        return
    for b in range(nb):
        if bias != NULL:
            # bias folded into the GEMM: Y starts as b_j and the product adds with beta=1
            beta = 1
            for j in range(cout):
                yp = &y[b0 + b, j, r0, 0]
                for i in range(Lt):
                    yp[i] = bias[j]
        for gi in range(groups):
            if pw:
                bp = &x[b0 + b, gi * cig, r0, 0]
                ldb = g.H * g.W
            else:
                bp = cols + gi * kg * ld + b * Lt
                ldb = ld
            gemm(False, False, cog, Lt, kg, <floating>1, &w2[gi * cog, 0], kg, bp, ldb,
                 beta, &y[b0 + b, gi * cog, r0, 0], L)


cdef void backward_tile(const floating[:, :, :, ::1] x, const floating[:, ::1] w2,
                        const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                        floating *dw2, floating *cols, const Geom *g, Py_ssize_t groups,
                        bint need_dx, bint need_dw,
                        Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t Lt = (r1 - r0) * g.Wo, ld = nb * Lt, L = g.Ho * g.Wo
    cdef Py_ssize_t cout = dy.shape[1], cog = cout // groups, cig = g.C // groups
    cdef Py_ssize_t kg = cig * g.kh * g.kw
    cdef Py_ssize_t b, gi, ldb
    cdef const floating *dyp
    cdef floating *bp
    cdef bint pw = is_pointwise(g)
    cdef floating *stage
    if need_dw and not pw:
        im2col_tile(x, cols, g, b0, nb, r0, r1)
    if is_staged(g, nb, Lt):
        stage = cols + g.C * g.kh * g.kw * ld
        restage(dy, stage, b0, nb, r0, Lt, L)
        for gi in range(groups):
            if need_dw:     # eq. 12 for the whole tile in one product
                gemm(False, True, cog, kg, ld, <floating>1, stage + gi * cog * ld, ld,
                     cols + gi * kg * ld, ld, <floating>1, dw2 + gi * cog * kg, kg)
            if need_dx:     # eq. 16-18: dcols = W^T dY, then col2im
                gemm(True, False, kg, ld, cog, <floating>1, &w2[gi * cog, 0], kg,
                     stage + gi * cog * ld, ld, <floating>0, cols + gi * kg * ld, ld)
        if need_dx:
            col2im_tile(dx, cols, g, b0, nb, r0, r1)
        return
    for b in range(nb):
        for gi in range(groups):
            dyp = &dy[b0 + b, gi * cog, r0, 0]
            if pw:
                bp = <floating *>&x[b0 + b, gi * cig, r0, 0]
                ldb = g.H * g.W
            else:
                bp = cols + gi * kg * ld + b * Lt
                ldb = ld
            if need_dw:
                # eq. 12: dE/dk = unvec((vec delta)^T [c]) for every kernel at once:
                # dW (Cout x C*kh*kw) += dY (Cout x L) . cols^T
                gemm(False, True, cog, kg, Lt, <floating>1, dyp, L, bp, ldb,
                     <floating>1, dw2 + gi * cog * kg, kg)
            if need_dx:
                # eq. 16-18: the full convolution with the flipped kernels is, in matrix
                # form, dcols = W^T . dY followed by col2im. The patch columns of this
                # image were consumed just above, so dcols overwrites them in place.
                if pw:
                    gemm(True, False, kg, Lt, cog, <floating>1, &w2[gi * cog, 0], kg, dyp, L,
                         <floating>0, &dx[b0 + b, gi * cig, r0, 0], g.H * g.W)
                else:
                    gemm(True, False, kg, Lt, cog, <floating>1, &w2[gi * cog, 0], kg, dyp, L,
                         <floating>0, bp, ldb)
    if need_dx and not pw:
        col2im_tile(dx, cols, g, b0, nb, r0, r1)


cdef inline Py_ssize_t imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef void run_images(const floating[:, :, :, ::1] x, const floating[:, ::1] w2,
                     const floating *bias, floating[:, :, :, ::1] y,
                     const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                     floating *dws, Py_ssize_t dw_elems, bint forward, bint need_dx,
                     bint need_dw, floating *bufs, Py_ssize_t buf_elems, const Geom *g,
                     Py_ssize_t groups, Py_ssize_t b_start, Py_ssize_t b_end,
                     Py_ssize_t tile_rows, int nthreads) noexcept nogil:
    """Batch-parallel mode: each thread takes whole images, its own column buffer and
    single-threaded GEMMs. Forward, images write disjoint parts of y. Backward, a thread
    accumulates dW in its own matrix (the caller adds them up) and writes dx only for its
    own images. The schedule is static so that which images a thread sums, and so every
    bit of dW, is the same from run to run."""
    cdef Py_ssize_t b, r0
    cdef int tid
    with parallel(num_threads=nthreads):
        tid = threadid()
        for b in prange(b_start, b_end, schedule='static'):
            r0 = 0
            while r0 < g.Ho:        # (a range with a run-time step would need the GIL)
                if forward:
                    forward_tile(x, w2, bias, y, bufs + tid * buf_elems, g, groups, b, 1, r0,
                                 imin(r0 + tile_rows, g.Ho))
                else:
                    backward_tile(x, w2, dy, dx, dws + tid * dw_elems, bufs + tid * buf_elems,
                                  g, groups, need_dx, need_dw, b, 1, r0,
                                  imin(r0 + tile_rows, g.Ho))
                r0 = r0 + tile_rows


cdef Py_ssize_t chunk_images(const Geom *g, Py_ssize_t n, int nthreads):
    """Images per parallel region: enough to keep the threads busy, few enough that
    Ctrl-C (checked between regions) is honoured quickly."""
    cdef Py_ssize_t per_image = g.C * g.kh * g.kw * g.Ho * g.Wo
    cdef Py_ssize_t c = (1 << 24) // (per_image if per_image > 0 else 1)
    if c < 2 * nthreads:
        c = 2 * nthreads
    return c


def conv_pass(bint forward, const floating[:, :, :, ::1] x, const floating[:, ::1] w2,
              const floating[::1] bias, floating[:, :, :, ::1] y,
              const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
              floating[:, ::1] dw2, floating[:, :, ::1] dw_threads, bint need_dx,
              bint need_dw, tuple geometry, Py_ssize_t groups, Py_ssize_t tile_images,
              Py_ssize_t tile_rows, int threads):
    """One convolution pass over the batch, tile by tile; Ctrl-C is honoured between tiles.

    forward: y = conv(x, w2) + bias (an empty ``bias`` means none: a fused signature
    cannot take None reliably). Backward: dx (zeroed) += the error for the previous layer,
    dw2 (zeroed) += the kernel gradient; need_dx/need_dw False skips that GEMM (a first
    layer needs no dx) and the array passed for it is not touched. Arrays a pass does not
    use may be empty.

    ``threads`` > 1 selects the batch-parallel mode: tiles are then single images, and a
    backward pass accumulates dW per thread in ``dw_threads`` (threads, Cout, K), zeroed,
    which the caller adds up.
    """
    cdef Geom g = make_geom(x.shape[1], x.shape[2], x.shape[3], geometry)
    cdef Py_ssize_t n = x.shape[0], cout = w2.shape[0], b0, nb, r0, r1, step, buf_elems
    cdef const floating *bp = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating *dwp = &dw2[0, 0] if (need_dw and not forward) else NULL
    cdef floating *dws = &dw_threads[0, 0, 0] if dw_threads.shape[0] > 0 else NULL
    cdef floating *cols
    if n == 0 or cout == 0 or g.Ho == 0 or g.Wo == 0 or not (forward or need_dx or need_dw):
        return
    if threads > 1:
        buf_elems = g.C * g.kh * g.kw * tile_rows * g.Wo
        cols = alloc_workspace(&g, cout, threads, tile_rows, <floating>0)
        serial_blas_enter()
        try:
            step = chunk_images(&g, n, threads)
            for b0 in range(0, n, step):
                with nogil:
                    run_images(x, w2, bp, y, dy, dx, dws, cout * w2.shape[1], forward,
                               need_dx, need_dw, cols, buf_elems, &g, groups, b0,
                               imin(b0 + step, n), tile_rows, threads)
                PyErr_CheckSignals()
        finally:
            serial_blas_exit()
            free_workspace(cols)
        return
    cols = alloc_workspace(&g, cout, tile_images, tile_rows, <floating>0)
    try:
        for b0 in range(0, n, tile_images):
            nb = min(tile_images, n - b0)
            for r0 in range(0, g.Ho, tile_rows):
                r1 = min(r0 + tile_rows, g.Ho)
                with nogil:
                    if forward:
                        forward_tile(x, w2, bp, y, cols, &g, groups, b0, nb, r0, r1)
                    else:
                        backward_tile(x, w2, dy, dx, dwp, cols, &g, groups, need_dx, need_dw,
                                      b0, nb, r0, r1)
                PyErr_CheckSignals()
    finally:
        free_workspace(cols)
