# cython: language_level=3
"""Private compiled kernels of vecconv: im2col, col2im and the GEMM-based convolution.

Everything here assumes clean input: C-contiguous float32/float64 arrays of consistent
shapes, geometry and schedule already decided by ``vecconv._plan``, every BLAS dimension
below 2**31. The engine only executes; the planner decides.

Geometry is three spatial axes (D, H, W); 1-D and 2-D convolutions have leading axes of
size 1, so one im2col and one col2im serve every dimension. Layout of the column (patch)
buffer of a tile::

    cols[c*taps + t, b*Lt + (p - p0)] = x_padded[b0 + b, c, o(p)*stride + tap(t)*dilation]

rows are kernel taps (channel-major, the vec of each kernel read in C order), columns are
the output positions p0..p1 of each image of the tile. With this layout each GEMM reads or
writes an (N, C, positions) array directly through its leading dimension.

Parallelism comes from ``_runtime.h``: a job is a list of independent units (tiles of the
output, dW chunks, (images, positions, channel block) pieces of dx); the caller and the pool's
workers claim units until none is left, each with its own column buffer and
single-threaded GEMMs. No unit writes what another unit of the same job writes.
"""

from cython cimport floating
from libc.string cimport memset, memcpy
from libc.stdlib cimport malloc, free
from cpython.exc cimport PyErr_CheckSignals
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "Python.h":
    # the workspace is reported to tracemalloc (as NumPy reports its arrays), so that
    # tests and the benchmark can see the engine's peak memory
    int PyTraceMalloc_Track(unsigned int domain, size_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, size_t ptr)

cdef extern from "_runtime.h":
    ctypedef void (*vc_task_fn)(void *ctx, Py_ssize_t unit, int slot) noexcept nogil
    ctypedef void (*vc_sgemm_fn)(const char *, const char *, const int *, const int *,
                                 const int *, const float *, const float *, const int *,
                                 const float *, const int *, const float *, float *,
                                 const int *) noexcept nogil
    ctypedef void (*vc_dgemm_fn)(const char *, const char *, const int *, const int *,
                                 const int *, const double *, const double *, const int *,
                                 const double *, const int *, const double *, double *,
                                 const int *) noexcept nogil
    vc_sgemm_fn vc_private_sgemm
    vc_dgemm_fn vc_private_dgemm
    void vc_runtime_init() noexcept nogil
    void vc_run(vc_task_fn fn, void *ctx, Py_ssize_t n_units, int threads) noexcept nogil
    int vc_load_private_blas(const char *path) noexcept nogil
    int vc_private_blas() noexcept nogil
    void vc_private_blas_single() noexcept nogil
    int vc_have_threads() noexcept nogil
    int vc_workers_started() noexcept nogil
    int vc_get_num_threads() noexcept nogil
    void vc_set_num_threads(int n) noexcept nogil
    void vc_flag(int *flag) noexcept nogil
    void vc_stall_counts(long long *stalls, long long *calm_jobs) noexcept nogil
    void vc_set_stall_policy(int adaptive, long long calm_for_ns) noexcept nogil
    void vc_set_join_omp(int on, long long rest_for_ns, int trust) noexcept nogil
    long long vc_omp_job_count(long long *rests) noexcept nogil
    enum: VC_MAX_THREADS

cdef enum:
    TRACE_DOMAIN = 0x76656363     # 'vecc'


# ----------------------------------------------------------------------------- runtime
vc_runtime_init()

#: the thread count's cap, written once in _runtime.h
MAX_THREADS = VC_MAX_THREADS


def load_private_blas(str path):
    """Use the OpenBLAS at ``path`` (scipy-openblas32's library) for every GEMM, held at
    one thread. Returns whether it could be loaded."""
    cdef bytes p = path.encode()
    return bool(vc_load_private_blas(p))


def private_blas():
    """Whether the GEMMs run on the engine's own single-threaded OpenBLAS."""
    return bool(vc_private_blas())


def have_threads():
    """Whether this build has the worker pool (pthreads)."""
    return bool(vc_have_threads())


def workers_started():
    """Worker threads alive in this process (0 in a fresh or forked process)."""
    return vc_workers_started()


def get_num_threads():
    return vc_get_num_threads()


def stall_counts():
    """(stalls seen, jobs run on the calling thread alone because of one): the busy-
    machine policy of _runtime.h."""
    cdef long long stalls, calm
    vc_stall_counts(&stalls, &calm)
    return stalls, calm


def set_stall_policy(bint adaptive, double calm_for=-1.0):
    """Turn the busy-machine policy on or off; ``calm_for`` >= 0 (tests): jobs run alone
    for that many seconds from now (0 ends a calm period)."""
    vc_set_stall_policy(adaptive, <long long>(calm_for * 1e9) if calm_for >= 0 else -1)


def set_num_threads(int n):
    vc_set_num_threads(n)


def set_join_openmp(bint on, double rest_for=-1.0, bint trust=False):
    """Whether jobs may run on the process's OpenMP runtime when another library loaded
    one (_runtime.h); ``rest_for`` >= 0 (tests): they run on vecconv's own workers for
    that many seconds from now, as after a stall (0 ends a rest); ``trust`` (tests): take
    the process's libgomp pool as its own, whatever the check at import concluded (a
    test process started in the background by a shell that has exited looks orphaned)."""
    vc_set_join_omp(on, <long long>(rest_for * 1e9) if rest_for >= 0 else -1, trust)


def openmp_jobs():
    """(jobs run on the process's OpenMP runtime so far, rests from it begun after its
    threads stalled) (-1, -1: this build cannot)."""
    cdef long long rests
    cdef long long jobs = vc_omp_job_count(&rests)
    return jobs, rests


# ----------------------------------------------------------------------------- checks
cdef int expect(str what, Py_ssize_t got, Py_ssize_t want) except -1:
    """The last line of defence: no kernel runs on an array of the wrong size. The public
    layer checks every argument with a better message first; this holds whatever calls."""
    if got != want:
        raise ValueError(f"vecconv engine: {what} has {got} elements, expected {want}")
    return 0


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
    # threadpoolctl may set the private BLAS (it sees an OpenBLAS like any other) while a
    # call runs: put it back to one thread before every product (a load of one int)
    vc_private_blas_single()
    if floating is float:
        if vc_private_sgemm != NULL:
            vc_private_sgemm(&tb, &ta, &in_, &im, &ik, &alpha, b, &ildb, a, &ilda,
                             &beta, c, &ildc)
        else:
            sgemm(&tb, &ta, &in_, &im, &ik, &alpha, <float *>b, &ildb, <float *>a, &ilda,
                  &beta, c, &ildc)
    else:
        if vc_private_dgemm != NULL:
            vc_private_dgemm(&tb, &ta, &in_, &im, &ik, &alpha, b, &ildb, a, &ilda,
                             &beta, c, &ildc)
        else:
            dgemm(&tb, &ta, &in_, &im, &ik, &alpha, <double *>b, &ildb, <double *>a, &ilda,
                  &beta, c, &ildc)


ctypedef struct GemmBatch:
    bint f64
    bint trans_a, trans_b
    Py_ssize_t m, n, k, lda, ldb, ldc, a_step, b_step, c_step
    const void *a
    const void *b
    void *c
    double beta


cdef void gemm_unit(void *ctx, Py_ssize_t r, int slot) noexcept nogil:
    cdef GemmBatch *q = <GemmBatch *>ctx
    if q.f64:
        gemm(q.trans_a, q.trans_b, q.m, q.n, q.k, <double>1,
             <const double *>q.a + r * q.a_step, q.lda, <const double *>q.b + r * q.b_step,
             q.ldb, <double>q.beta, <double *>q.c + r * q.c_step, q.ldc)
    else:
        gemm(q.trans_a, q.trans_b, q.m, q.n, q.k, <float>1,
             <const float *>q.a + r * q.a_step, q.lda, <const float *>q.b + r * q.b_step,
             q.ldb, <float>q.beta, <float *>q.c + r * q.c_step, q.ldc)


def gemm_into(const floating[:, :] a, const floating[:, :] b, floating[:, :] c,
              bint trans_a=False, bint trans_b=False, Py_ssize_t count=1,
              Py_ssize_t a_step=0, Py_ssize_t b_step=0, Py_ssize_t c_step=0,
              double beta=0, int threads=1):
    """c = op(a) @ op(b) + beta c through the same single-threaded BLAS call the engine
    makes (tests, the benchmark's roofline, the Dense layer). Leading dimensions come from
    the row strides, so the operands may be column blocks of wider matrices.

    ``count`` > 1 makes that many calls without returning to Python, the operands
    advancing by a_step, b_step, c_step elements each time: the benchmark's per-image
    roofline, whose GEMMs are too small to time one by one. ``threads`` > 1 spreads those
    calls over the engine's pool (their outputs must not overlap).
    """
    cdef GemmBatch q
    cdef Py_ssize_t esize = sizeof(floating)
    if ((a.shape[1] > 1 and a.strides[1] != esize)
            or (b.shape[1] > 1 and b.strides[1] != esize)
            or (c.shape[1] > 1 and c.strides[1] != esize)):
        raise ValueError("gemm_into needs rows of contiguous elements")
    if ((a.shape[1] if trans_a else a.shape[0]) != c.shape[0]
            or (b.shape[0] if trans_b else b.shape[1]) != c.shape[1]
            or (a.shape[0] if trans_a else a.shape[1]) != (b.shape[1] if trans_b else b.shape[0])):
        raise ValueError(f"gemm_into: op(a) {a.shape[0], a.shape[1]}"
                         f"{' transposed' if trans_a else ''} "
                         f"times op(b) {b.shape[0], b.shape[1]}{' transposed' if trans_b else ''} "
                         f"cannot give c {c.shape[0], c.shape[1]}")
    if count < 0 or a_step < 0 or b_step < 0 or c_step < 0 or threads < 1:
        raise ValueError("gemm_into: count, steps and threads must be >= 0 (threads >= 1)")
    q.f64 = floating is double
    q.trans_a, q.trans_b = trans_a, trans_b
    q.m, q.n = c.shape[0], c.shape[1]
    q.k = a.shape[0] if trans_a else a.shape[1]
    q.lda, q.ldb, q.ldc = a.strides[0] // esize, b.strides[0] // esize, c.strides[0] // esize
    q.a_step, q.b_step, q.c_step = a_step, b_step, c_step
    q.a, q.b, q.c = &a[0, 0], &b[0, 0], &c[0, 0]
    q.beta = beta
    with nogil:
        vc_run(gemm_unit, &q, count, threads)


# ----------------------------------------------------------------------------- the contract
# (declared in _engine.pxd)
cdef tuple _three(str name, value):
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"vecconv engine: {name} needs 3 entries, got {value}")
    return value


cdef class Geometry:
    def __init__(self, Py_ssize_t channels, size, kernel, stride, dilation, pad, out,
                 int mode=0, double fill=0.0):
        self.channels = channels
        self.size = _three("size", size)
        self.kernel = _three("kernel", kernel)
        self.stride = _three("stride", stride)
        self.dilation = _three("dilation", dilation)
        self.pad = _three("pad", pad)
        self.out = _three("out", out)
        self.mode = mode
        self.fill = fill

    @property
    def taps(self):
        """Kernel taps per input channel."""
        return self.kernel[0] * self.kernel[1] * self.kernel[2]

    @property
    def positions(self):
        """Output positions per map."""
        return self.out[0] * self.out[1] * self.out[2]

    def replace(self, **changes):
        """A copy with some fields changed."""
        f = dict(channels=self.channels, size=self.size, kernel=self.kernel,
                 stride=self.stride, dilation=self.dilation, pad=self.pad, out=self.out,
                 mode=self.mode, fill=self.fill)
        f.update(changes)
        return Geometry(**f)

    def __repr__(self):
        return (f"Geometry(channels={self.channels}, size={self.size}, kernel={self.kernel}, "
                f"stride={self.stride}, dilation={self.dilation}, pad={self.pad}, "
                f"out={self.out}, mode={self.mode}, fill={self.fill})")


cdef class Schedule:
    def __init__(self, bint pointwise, bint staged, Py_ssize_t tile_images,
                 Py_ssize_t tile_positions, Py_ssize_t n_tiles, Py_ssize_t round_tiles,
                 Py_ssize_t n_acc, Py_ssize_t dx_images, Py_ssize_t dx_span,
                 Py_ssize_t dx_cblock, Py_ssize_t dx_pieces, Py_ssize_t dx_round,
                 Py_ssize_t buf_elems, Py_ssize_t max_slots):
        self.pointwise, self.staged = pointwise, staged
        self.tile_images, self.tile_positions = tile_images, tile_positions
        self.n_tiles, self.round_tiles, self.n_acc = n_tiles, round_tiles, n_acc
        self.dx_images, self.dx_span, self.dx_cblock = dx_images, dx_span, dx_cblock
        self.dx_pieces, self.dx_round = dx_pieces, dx_round
        self.buf_elems, self.max_slots = buf_elems, max_slots

    def __repr__(self):
        return (f"Schedule(pointwise={self.pointwise}, staged={self.staged}, "
                f"tile_images={self.tile_images}, tile_positions={self.tile_positions}, "
                f"n_tiles={self.n_tiles}, round_tiles={self.round_tiles}, "
                f"n_acc={self.n_acc}, dx_images={self.dx_images}, dx_span={self.dx_span}, "
                f"dx_cblock={self.dx_cblock}, dx_pieces={self.dx_pieces}, "
                f"dx_round={self.dx_round}, buf_elems={self.buf_elems}, "
                f"max_slots={self.max_slots})")


cdef class PoolAxis:
    def __init__(self, Py_ssize_t n, Py_ssize_t dilation, first, count, div):
        self.n, self.dilation = n, dilation
        self.first, self.count, self.div = first, count, div

    def __repr__(self):
        return f"PoolAxis(n={self.n}, dilation={self.dilation}, windows={len(self.first)})"


cdef class PoolInterior:
    def __init__(self, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw, Py_ssize_t lo,
                 Py_ssize_t hi):
        self.kw, self.sw, self.pw, self.lo, self.hi = kw, sw, pw, lo, hi

    def __repr__(self):
        return (f"PoolInterior(kw={self.kw}, sw={self.sw}, pw={self.pw}, lo={self.lo}, "
                f"hi={self.hi})")


# ----------------------------------------------------------------------------- geometry
ctypedef struct Tap:
    # where one kernel tap reads: input offsets on the D and H axes for output row 0, the
    # W offset iw0 for output column 0, and the output columns [lo, hi) whose W tap lies
    # inside the map
    Py_ssize_t off0, off1, iw0, lo, hi


ctypedef struct Geom:
    Tap *tap                    # one entry per kernel tap (make_geom allocates, free_geom frees)
    Py_ssize_t C                # input channels
    Py_ssize_t i[3]             # input size (D, H, W)
    Py_ssize_t k[3]             # kernel
    Py_ssize_t s[3]             # stride
    Py_ssize_t d[3]             # dilation
    Py_ssize_t p[3]             # padding before; after is implied by o
    Py_ssize_t o[3]             # output size
    # padding: 0 constant (fill), 1 reflect, 2 replicate, 3 circular, 4 symmetric
    int mode
    double fill                 # the value of a constant pad
    Py_ssize_t taps             # k0*k1*k2
    Py_ssize_t S                # input positions per map
    Py_ssize_t P                # output positions per map


cdef Geom make_geom(Geometry geometry) except *:
    """The kernels' working copy of a Geometry, with its tap table computed once per
    call. Free it with free_geom."""
    cdef Geom g
    cdef int a
    cdef Py_ssize_t t
    g.C = geometry.channels
    for a in range(3):
        g.i[a] = geometry.size[a]
        g.k[a] = geometry.kernel[a]
        g.s[a] = geometry.stride[a]
        g.d[a] = geometry.dilation[a]
        g.p[a] = geometry.pad[a]
        g.o[a] = geometry.out[a]
    g.mode = geometry.mode
    g.fill = geometry.fill
    if g.mode != 0 and g.i[0] * g.i[1] * g.i[2] == 0:
        raise ValueError("vecconv engine: a padding mode that reads the map needs a "
                         "non-empty map")
    g.taps = g.k[0] * g.k[1] * g.k[2]
    g.S = g.i[0] * g.i[1] * g.i[2]
    g.P = g.o[0] * g.o[1] * g.o[2]
    g.tap = <Tap *>malloc(imax(g.taps, 1) * sizeof(Tap))
    if g.tap == NULL:
        raise MemoryError("vecconv: cannot allocate the tap table")
    for t in range(g.taps):
        g.tap[t].off0 = (t // (g.k[1] * g.k[2])) * g.d[0] - g.p[0]
        g.tap[t].off1 = ((t // g.k[2]) % g.k[1]) * g.d[1] - g.p[1]
        g.tap[t].iw0 = (t % g.k[2]) * g.d[2] - g.p[2]
        g.tap[t].lo = span_lo(&g, g.tap[t].iw0)
        g.tap[t].hi = span_hi(&g, g.tap[t].iw0, g.tap[t].lo)
    return g


cdef void free_geom(Geom *g) noexcept:
    free(g.tap)
    g.tap = NULL


cdef inline Py_ssize_t span_lo(const Geom *g, Py_ssize_t iw0) noexcept nogil:
    """First output column ow whose tap iw = ow*s + iw0 lies inside the row (iw >= 0)."""
    cdef Py_ssize_t lo = 0 if iw0 >= 0 else (-iw0 + g.s[2] - 1) // g.s[2]
    return lo if lo < g.o[2] else g.o[2]


cdef inline Py_ssize_t span_hi(const Geom *g, Py_ssize_t iw0, Py_ssize_t lo) noexcept nogil:
    """One past the last output column whose tap lies inside the row (iw < W), >= lo."""
    cdef Py_ssize_t hi = 0 if g.i[2] - 1 - iw0 < 0 else (g.i[2] - 1 - iw0) // g.s[2] + 1
    if hi > g.o[2]:
        hi = g.o[2]
    return hi if hi > lo else lo


cdef inline Py_ssize_t imax(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t fold_index(Py_ssize_t i, Py_ssize_t n, int mode) noexcept nogil:
    """The index inside a map of length n that padded index i reads, or -1 for a constant
    pad. reflect: the edge is not repeated (period 2(n-1)); symmetric: it is (period 2n),
    as numpy.pad does for any width; circular: i mod n; replicate: the nearest edge."""
    cdef Py_ssize_t p
    if 0 <= i < n:
        return i
    if mode == 0:
        return -1
    if mode == 2:
        return 0 if i < 0 else n - 1
    if mode == 3:
        return ((i % n) + n) % n
    if n == 1:
        return 0
    if mode == 1:
        p = 2 * (n - 1)
        i = ((i % p) + p) % p
        return i if i < n else p - i
    p = 2 * n
    i = ((i % p) + p) % p
    return i if i < n else p - 1 - i


cdef inline void fill_span(floating *seg, Py_ssize_t a, Py_ssize_t b, floating v) noexcept nogil:
    cdef Py_ssize_t w
    if b <= a:
        return
    if v == 0:
        memset(seg + a, 0, (b - a) * sizeof(floating))
    else:
        for w in range(a, b):
            seg[w] = v


cdef inline void padded_columns(const Geom *g, floating *seg, floating *base, Py_ssize_t a,
                                Py_ssize_t b, Py_ssize_t iw0, bint scatter) noexcept nogil:
    """Columns a..b of a patch row whose W tap lies in a reflect/replicate/circular/
    symmetric pad: read from (or added back to) the pixel of the row ``base`` it maps to."""
    cdef Py_ssize_t w, iw
    for w in range(a, b):
        iw = fold_index(w * g.s[2] + iw0, g.i[2], g.mode)
        if scatter:
            base[iw] += seg[w]
        else:
            seg[w] = base[iw]


cdef extern from "_patches.h":
    # dst[r * dstep + w] = (or +=) src[r * sstep + w], r < rows, w < width
    void vc_patch_rows_f(float *dst, Py_ssize_t dstep, const float *src, Py_ssize_t sstep,
                         Py_ssize_t rows, Py_ssize_t width) noexcept nogil
    void vc_patch_rows_d(double *dst, Py_ssize_t dstep, const double *src,
                         Py_ssize_t sstep, Py_ssize_t rows, Py_ssize_t width) noexcept nogil
    void vc_patch_add_rows_f(float *dst, Py_ssize_t dstep, const float *src,
                             Py_ssize_t sstep, Py_ssize_t rows,
                             Py_ssize_t width) noexcept nogil
    void vc_patch_add_rows_d(double *dst, Py_ssize_t dstep, const double *src,
                             Py_ssize_t sstep, Py_ssize_t rows,
                             Py_ssize_t width) noexcept nogil


cdef bint inside_rows(const Geom *g, floating *x, floating *seg, Py_ssize_t c,
                      const Tap *tp, Py_ssize_t r_first, Py_ssize_t r_end,
                      bint scatter) noexcept nogil:
    """Tap tp's patch rows r_first..r_end of channel c (whole output rows, stride 1 along
    W) at once when every one of them reads inside the map, and say so: copied from x
    (im2col), or added back into it (scatter, col2im); else touch nothing (the walk does
    it row by row)."""
    cdef Py_ssize_t W = g.o[2], o1 = g.o[1], r = r_first, od, oh, n, i0, step
    cdef floating *row
    cdef floating *rows
    while r < r_end:            # check: one run of rows per output plane (od)
        od = r // o1
        oh = r % o1
        n = imin(o1 - oh, r_end - r)
        i0 = od * g.s[0] + tp.off0
        if (i0 < 0 or i0 >= g.i[0] or oh * g.s[1] + tp.off1 < 0
                or (oh + n - 1) * g.s[1] + tp.off1 >= g.i[1]):
            return False
        r += n
    r = r_first
    while r < r_end:            # copy
        od = r // o1
        oh = r % o1
        n = imin(o1 - oh, r_end - r)
        i0 = od * g.s[0] + tp.off0
        row = x + ((c * g.i[0] + i0) * g.i[1] + oh * g.s[1] + tp.off1) * g.i[2] + tp.iw0
        step = g.s[1] * g.i[2]
        rows = seg + (r - r_first) * W
        if floating is float:
            if scatter:
                vc_patch_add_rows_f(row, step, rows, W, n, W)
            else:
                vc_patch_rows_f(rows, W, row, step, n, W)
        else:
            if scatter:
                vc_patch_add_rows_d(row, step, rows, W, n, W)
            else:
                vc_patch_rows_d(rows, W, row, step, n, W)
        r += n
    return True


cdef void patch_walk(const Geom *g, floating *x, floating *cols, Py_ssize_t ld,
                     Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t c0, Py_ssize_t c1,
                     bint scatter) noexcept nogil:
    """Walk the patch rows of channels c0..c1 for output positions p0..p1 of one image.

    x is the image (C, S); cols row (c - c0)*taps + t holds tap t of channel c, its
    column p - p0 the output position p (leading dimension ld). The padded input is never
    made: a tap outside the map reads the pixel fold_index maps it to (reflect,
    replicate, circular, symmetric), or the constant fill.

    scatter False (im2col): cols = the taps read from x.
    scatter True (col2im): x += every entry of cols, added back to the pixel it was read
    from (a constant pad receives nothing). Both directions take the same index path, so
    one is the adjoint of the other, for every padding mode.
    """
    cdef Py_ssize_t W = g.o[2], o1 = g.o[1], sw = g.s[2]
    cdef Py_ssize_t c, t, r, wa, wb, i0, i1, ca, cb, w, od, oh
    cdef Py_ssize_t r_first = p0 // W, r_end = (p1 - 1) // W + 1
    cdef Py_ssize_t od_first = r_first // o1, oh_first = r_first % o1
    cdef floating fill = <floating>g.fill
    cdef int mode = g.mode          # locals: the compiler need not reload them per row
    cdef Py_ssize_t n0 = g.i[0], n1 = g.i[1], n2 = g.i[2], s0 = g.s[0], s1 = g.s[1]
    cdef const Tap *tp
    cdef floating *seg
    cdef floating *base
    cdef floating *row
    cdef bint whole_rows = sw == 1 and p0 % W == 0 and p1 % W == 0
    if p1 <= p0:
        return
    for c in range(c0, c1):
        for t in range(g.taps):
            tp = &g.tap[t]
            if whole_rows and tp.lo <= 0 and tp.hi >= W and inside_rows(
                    g, x, cols + ((c - c0) * g.taps + t) * ld, c, tp, r_first, r_end,
                    scatter):
                continue            # every row inside the map: copied (or added) at once
            od = od_first           # output row r = od*o1 + oh, counted without dividing
            oh = oh_first
            for r in range(r_first, r_end):
                # output row r (over the D and H axes), its columns [wa, wb) in the tile
                wa = imax(p0 - r * W, 0)
                wb = imin(p1 - r * W, W)
                seg = cols + ((c - c0) * g.taps + t) * ld + r * W - p0
                i0 = od * s0 + tp.off0
                i1 = oh * s1 + tp.off1
                oh = oh + 1
                if oh == o1:
                    oh = 0
                    od = od + 1
                if i0 < 0 or i0 >= n0 or i1 < 0 or i1 >= n1:
                    if mode == 0:
                        if not scatter:
                            fill_span(seg, wa, wb, fill)
                        continue
                    i0 = fold_index(i0, n0, mode)
                    i1 = fold_index(i1, n1, mode)
                # the part [ca, cb) of [wa, wb) whose taps are inside the map
                ca = imin(imax(tp.lo, wa), wb)
                cb = imax(imin(tp.hi, wb), ca)
                base = x + (c * n0 + i0) * n1 * n2 + i1 * n2
                row = base + tp.iw0
                if scatter:
                    for w in range(ca, cb):
                        row[w * sw] += seg[w]
                elif sw == 1 and cb - ca > 16:
                    memcpy(seg + ca, row + ca, (cb - ca) * sizeof(floating))
                elif sw == 1:       # too short to repay a call: a loop the compiler widens
                    for w in range(ca, cb):
                        seg[w] = row[w]
                else:
                    for w in range(ca, cb):
                        seg[w] = row[w * sw]
                # the columns whose W tap is in the padding: [wa, ca) and [cb, wb)
                if mode == 0:
                    if not scatter:
                        fill_span(seg, wa, ca, fill)
                        fill_span(seg, cb, wb, fill)
                    continue
                padded_columns(g, seg, base, wa, ca, tp.iw0, scatter)
                padded_columns(g, seg, base, cb, wb, tp.iw0, scatter)


cdef inline void im2col_block(const Geom *g, const floating *x, floating *cols, Py_ssize_t ld,
                              Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t c0,
                              Py_ssize_t c1) noexcept nogil:
    """Patch rows of channels c0..c1 for output positions p0..p1 of one image (eq. 12's
    [c] for this tile); a tap in the padding reads what the padding mode gives."""
    patch_walk(g, <floating *>x, cols, ld, p0, p1, c0, c1, False)


cdef inline void col2im_block(const Geom *g, floating *dx, const floating *cols, Py_ssize_t ld,
                              Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t c0,
                              Py_ssize_t c1) noexcept nogil:
    """dx (one image, (C, S)) += cols folded back: the adjoint of im2col_block."""
    patch_walk(g, dx, <floating *>cols, ld, p0, p1, c0, c1, True)


# ----------------------------------------------------------------------------- jobs
ctypedef struct Job:
    Geom g
    bint f64                    # float64 (else float32)
    int pass_                   # PASS_FORWARD, PASS_DW or PASS_DX: what job_unit runs
    Py_ssize_t N, cout, groups, cog, cig, kg
    bint pointwise, staged
    # tiles of the output: tile_images whole images, or (tile_images == 0) one image's
    # positions in bands of tile_positions
    Py_ssize_t tile_images, tile_positions, tiles_per_image
    # dx pieces: dx_images whole images, or (dx_images == 0) one image's positions in
    # spans of dx_span; channels in blocks of dx_cblock within a group
    Py_ssize_t dx_images, dx_span, spans_per_image, dx_cblock, cblocks_per_group
    const void *x
    const void *w2
    const void *bias
    const void *dy
    void *y
    void *dx
    void *acc                   # dW accumulators, one per chunk, (n_acc, cout, kg)
    void *bufs                  # one column buffer per participant
    Py_ssize_t buf_elems
    # the current round
    Py_ssize_t first            # first tile (or dx piece) of the round
    Py_ssize_t count            # tiles (or dx pieces) in the round
    Py_ssize_t chunks           # dW chunks of the round


cdef inline void tile_of(const Job *j, Py_ssize_t t, Py_ssize_t *b0, Py_ssize_t *nb,
                         Py_ssize_t *p0, Py_ssize_t *p1) noexcept nogil:
    if j.tile_images > 0:
        b0[0] = t * j.tile_images
        nb[0] = imin(j.tile_images, j.N - b0[0])
        p0[0] = 0
        p1[0] = j.g.P
    else:
        b0[0] = t // j.tiles_per_image
        nb[0] = 1
        p0[0] = (t % j.tiles_per_image) * j.tile_positions
        p1[0] = imin(p0[0] + j.tile_positions, j.g.P)


cdef Py_ssize_t tile_columns(const Job *j, Py_ssize_t t, const floating *x, floating *cols,
                             Py_ssize_t *b0, Py_ssize_t *nb, Py_ssize_t *p0,
                             Py_ssize_t *p1) noexcept nogil:
    """Tile t's images and positions, and its patch columns in cols (none for a
    pointwise convolution, whose GEMMs read x itself). Returns the leading dimension."""
    cdef Py_ssize_t b, Lt
    tile_of(j, t, b0, nb, p0, p1)
    Lt = p1[0] - p0[0]
    if not j.pointwise:
        for b in range(nb[0]):
            im2col_block(&j.g, x + (b0[0] + b) * j.g.C * j.g.S, cols + b * Lt, nb[0] * Lt,
                         p0[0], p1[0], 0, j.g.C)
    return nb[0] * Lt


cdef inline const floating *patches(const Job *j, const floating *x, const floating *cols,
                                    Py_ssize_t b0, Py_ssize_t b, Py_ssize_t gi, Py_ssize_t p0,
                                    Py_ssize_t Lt, Py_ssize_t ld, Py_ssize_t *ldb) noexcept nogil:
    """The patch matrix of group gi of image b0+b in the tile (K x Lt), and its leading
    dimension: the tile's columns, or x itself for a pointwise convolution."""
    if j.pointwise:
        ldb[0] = j.g.S
        return x + ((b0 + b) * j.g.C + gi * j.cig) * j.g.S + p0
    ldb[0] = ld
    return cols + gi * j.kg * ld + b * Lt


cdef void stage_rows(const floating *src, floating *stage, Py_ssize_t rows, Py_ssize_t b0,
                     Py_ssize_t nb, Py_ssize_t P) noexcept nogil:
    """stage[j, b*P:(b+1)*P] = src[b0+b, j, :] (tiny maps: one GEMM for the whole tile)."""
    cdef Py_ssize_t b, r
    for b in range(nb):
        for r in range(rows):
            memcpy(stage + r * nb * P + b * P, src + ((b0 + b) * rows + r) * P,
                   P * sizeof(floating))


cdef void forward_tile(Job *j, Py_ssize_t t, int slot, floating dummy) noexcept nogil:
    # eq. 1 / eq. 12 in matrix form: vec(z_j) = [c] vec(k_j), for every j at once:
    # Y (Cout x positions) = W (Cout x C*taps) . cols (C*taps x positions), per image and group.
    cdef const Geom *g = &j.g
    cdef const floating *x = <const floating *>j.x
    cdef const floating *w2 = <const floating *>j.w2
    cdef const floating *bias = <const floating *>j.bias
    cdef floating *y = <floating *>j.y
    cdef floating *cols = <floating *>j.bufs + slot * j.buf_elems
    cdef floating *stage
    cdef floating *yp
    cdef const floating *bp
    cdef Py_ssize_t b0, nb, p0, p1, Lt, ld, b, gi, r, i, ldb
    cdef floating beta
    ld = tile_columns(j, t, x, cols, &b0, &nb, &p0, &p1)
    Lt = p1 - p0
    if j.staged:
        stage = cols + g.C * g.taps * ld
        for gi in range(j.groups):
            gemm(False, False, j.cog, ld, j.kg, <floating>1, w2 + gi * j.cog * j.kg, j.kg,
                 cols + gi * j.kg * ld, ld, <floating>0, stage + gi * j.cog * ld, ld)
        for b in range(nb):
            for r in range(j.cout):
                yp = y + ((b0 + b) * j.cout + r) * g.P
                bp = stage + r * ld + b * Lt
                for i in range(Lt):
                    yp[i] = bp[i] + (bias[r] if bias != NULL else 0)
        return
    for b in range(nb):
        beta = 0
        if bias != NULL:
            # the bias folded into the GEMM: Y starts as b_j and the product adds (beta=1)
            beta = 1
            for r in range(j.cout):
                yp = y + ((b0 + b) * j.cout + r) * g.P + p0
                for i in range(Lt):
                    yp[i] = bias[r]
        for gi in range(j.groups):
            bp = patches(j, x, cols, b0, b, gi, p0, Lt, ld, &ldb)
            gemm(False, False, j.cog, Lt, j.kg, <floating>1, w2 + gi * j.cog * j.kg, j.kg,
                 bp, ldb, beta, y + ((b0 + b) * j.cout + gi * j.cog) * g.P + p0, g.P)


cdef void dw_chunk(Job *j, Py_ssize_t u, int slot, floating dummy) noexcept nogil:
    # eq. 12: dE/dk = unvec((vec delta)^T [c]) for every kernel at once:
    # dW (Cout x C*taps) += dY (Cout x positions) . cols^T, summed over the chunk's tiles
    # into the chunk's own accumulator (the caller adds the chunks up in a fixed order).
    cdef const Geom *g = &j.g
    cdef const floating *x = <const floating *>j.x
    cdef const floating *dy = <const floating *>j.dy
    cdef floating *acc = <floating *>j.acc + u * j.cout * j.kg
    cdef floating *cols = <floating *>j.bufs + slot * j.buf_elems
    cdef floating *stage
    cdef const floating *bp
    cdef Py_ssize_t t, t_lo, t_hi, b0, nb, p0, p1, Lt, ld, b, gi, ldb
    t_lo = j.first + (u * j.count) // j.chunks
    t_hi = j.first + ((u + 1) * j.count) // j.chunks
    for t in range(t_lo, t_hi):
        ld = tile_columns(j, t, x, cols, &b0, &nb, &p0, &p1)
        Lt = p1 - p0
        if j.staged:
            stage = cols + g.C * g.taps * ld
            stage_rows(dy, stage, j.cout, b0, nb, g.P)
            for gi in range(j.groups):
                gemm(False, True, j.cog, j.kg, ld, <floating>1, stage + gi * j.cog * ld, ld,
                     cols + gi * j.kg * ld, ld, <floating>1, acc + gi * j.cog * j.kg, j.kg)
            continue
        for b in range(nb):
            for gi in range(j.groups):
                bp = patches(j, x, cols, b0, b, gi, p0, Lt, ld, &ldb)
                gemm(False, True, j.cog, j.kg, Lt, <floating>1,
                     dy + ((b0 + b) * j.cout + gi * j.cog) * g.P + p0, g.P,
                     bp, ldb, <floating>1, acc + gi * j.cog * j.kg, j.kg)


cdef void dx_piece(Job *j, Py_ssize_t u, int slot, floating dummy) noexcept nogil:
    # eq. 16-18: the full convolution of delta with the flipped kernels is, in matrix form,
    # dcols = W^T . dY followed by col2im. A unit owns (images, positions, channel block)
    # of dx: no other unit of the round writes there.
    cdef const Geom *g = &j.g
    cdef const floating *w2 = <const floating *>j.w2
    cdef const floating *dy = <const floating *>j.dy
    cdef floating *dx = <floating *>j.dx
    cdef floating *cols = <floating *>j.bufs + slot * j.buf_elems
    cdef floating *stage
    cdef Py_ssize_t ncb = j.groups * j.cblocks_per_group
    cdef Py_ssize_t piece = j.first + u // ncb, cb = u % ncb
    cdef Py_ssize_t gi = cb // j.cblocks_per_group
    cdef Py_ssize_t cl0 = (cb % j.cblocks_per_group) * j.dx_cblock
    cdef Py_ssize_t cl1 = imin(cl0 + j.dx_cblock, j.cig)
    cdef Py_ssize_t c0 = gi * j.cig + cl0, c1 = gi * j.cig + cl1
    cdef Py_ssize_t rows = (cl1 - cl0) * g.taps
    cdef const floating *wg = w2 + gi * j.cog * j.kg + cl0 * g.taps
    cdef Py_ssize_t b0, nb, q0, q1, p0, p1, Lt, ld, b, band
    if j.dx_images > 0:
        b0 = piece * j.dx_images
        nb = imin(j.dx_images, j.N - b0)
        q0 = 0
        q1 = g.P
    else:
        b0 = piece // j.spans_per_image
        nb = 1
        q0 = (piece % j.spans_per_image) * j.dx_span
        q1 = imin(q0 + j.dx_span, g.P)
    if j.staged:
        # tiny maps, whole images: one GEMM for all nb images of the piece
        ld = nb * g.P
        stage = cols + g.C * g.taps * ld
        stage_rows(dy, stage, j.cout, b0, nb, g.P)
        gemm(True, False, rows, ld, j.cog, <floating>1, wg, j.kg, stage + gi * j.cog * ld, ld,
             <floating>0, cols, ld)
        for b in range(nb):
            col2im_block(g, dx + (b0 + b) * g.C * g.S, cols + b * g.P, ld, 0, g.P, c0, c1)
        return
    band = j.tile_positions if j.tile_images == 0 else g.P
    for b in range(b0, b0 + nb):
        p0 = q0
        while p0 < q1:
            p1 = imin(p0 + band, q1)
            Lt = p1 - p0
            if j.pointwise:
                gemm(True, False, rows, Lt, j.cog, <floating>1, wg, j.kg,
                     dy + (b * j.cout + gi * j.cog) * g.P + p0, g.P, <floating>0,
                     dx + (b * g.C + c0) * g.S + p0, g.S)
            else:
                gemm(True, False, rows, Lt, j.cog, <floating>1, wg, j.kg,
                     dy + (b * j.cout + gi * j.cog) * g.P + p0, g.P, <floating>0, cols, Lt)
                col2im_block(g, dx + b * g.C * g.S, cols, Lt, p0, p1, c0, c1)
            p0 = p1


cdef enum:
    PASS_FORWARD = 0
    PASS_DW = 1
    PASS_DX = 2


cdef inline void run_unit(Job *j, Py_ssize_t u, int slot, floating dummy) noexcept nogil:
    """One unit of the job's pass, in the job's float type."""
    if j.pass_ == PASS_FORWARD:
        forward_tile(j, j.first + u, slot, dummy)
    elif j.pass_ == PASS_DW:
        dw_chunk(j, u, slot, dummy)
    else:
        dx_piece(j, u, slot, dummy)


cdef void job_unit(void *ctx, Py_ssize_t u, int slot) noexcept nogil:
    """The pool's entry to every convolution unit: the one float/double dispatch (a fused
    kernel is chosen by the type of an argument, here a dummy zero)."""
    cdef Job *j = <Job *>ctx
    if j.f64:
        run_unit(j, u, slot, <double>0)
    else:
        run_unit(j, u, slot, <float>0)


# ----------------------------------------------------------------------------- drivers
cdef void *alloc_buffers(Py_ssize_t nbytes) except? NULL:
    cdef void *buf
    if nbytes <= 0:
        return NULL
    buf = malloc(nbytes)
    if buf == NULL:
        raise MemoryError(f"vecconv: cannot allocate a {nbytes}-byte workspace")
    PyTraceMalloc_Track(TRACE_DOMAIN, <size_t>buf, nbytes)
    return buf


cdef void free_buffers(void *buf) noexcept:
    if buf != NULL:
        PyTraceMalloc_Untrack(TRACE_DOMAIN, <size_t>buf)
        free(buf)


cdef Job make_job(Geometry geometry, Schedule sched, Py_ssize_t N, Py_ssize_t cout,
                  Py_ssize_t groups, bint f64) except *:
    cdef Job j
    memset(&j, 0, sizeof(Job))
    j.g = make_geom(geometry)
    j.f64 = f64
    j.N = N
    j.cout = cout
    j.groups = groups
    if groups < 1 or cout % groups or j.g.C % groups:
        free_geom(&j.g)
        raise ValueError(f"vecconv engine: groups={groups} must divide {j.g.C} and {cout}")
    j.cog = cout // groups
    j.cig = j.g.C // groups
    j.kg = j.cig * j.g.taps
    j.pointwise = sched.pointwise
    j.staged = sched.staged
    j.tile_images = sched.tile_images
    j.tile_positions = sched.tile_positions
    j.tiles_per_image = ((j.g.P + j.tile_positions - 1) // j.tile_positions
                         if j.tile_images == 0 else 1)
    j.dx_images = sched.dx_images
    j.dx_span = sched.dx_span
    j.spans_per_image = (j.g.P + j.dx_span - 1) // j.dx_span if j.dx_images == 0 else 1
    j.dx_cblock = sched.dx_cblock
    if j.dx_images == 0 and sched.dx_round != 1:
        free_geom(&j.g)
        # spans of one image overlap through their inputs: two in one round could both
        # write the same dx element
        raise ValueError("vecconv engine: spans of one image must run one per round")
    j.cblocks_per_group = (j.cig + j.dx_cblock - 1) // j.dx_cblock
    j.buf_elems = sched.buf_elems
    return j


cdef void run_rounds(Job *j, vc_task_fn fn, Py_ssize_t total, Py_ssize_t per_round,
                     Py_ssize_t units_per_item, Py_ssize_t chunks, int threads,
                     int slots) except *:
    """Run items 0..total-1 in rounds of per_round; Ctrl-C is honoured between rounds.

    A round's units are its items times units_per_item, or (chunks > 0) that many
    chunks of its items.
    """
    cdef Py_ssize_t first, n_units
    cdef int nt = imin(threads, slots)
    first = 0
    while first < total:
        j.first = first
        j.count = imin(per_round, total - first)
        if chunks > 0:
            j.chunks = imin(chunks, j.count)
            n_units = j.chunks
        else:
            n_units = j.count * units_per_item
        with nogil:
            vc_run(fn, j, n_units, nt)
        PyErr_CheckSignals()
        first += j.count


def conv_forward(const floating[::1] x, const floating[::1] w2, const floating[::1] bias,
                 floating[::1] y, bint has_bias, Geometry geometry, Schedule sched,
                 Py_ssize_t N,
                 Py_ssize_t cout, Py_ssize_t groups, int threads, int slots):
    """y = conv(x, w2) + bias, tile by tile, on the calling thread and the pool.

    Arrays are flat views of C-contiguous (N, C, *spatial), (Cout, C/groups*taps),
    (Cout,) and (N, Cout, *out) arrays.
    """
    cdef Job j = make_job(geometry, sched, N, cout, groups, floating is double)
    try:
        if slots < 1 or threads < 1:
            raise ValueError("vecconv engine: threads and slots must be >= 1")
        expect("x", x.shape[0], N * j.g.C * j.g.S)
        expect("w2", w2.shape[0], cout * j.kg)
        expect("bias", bias.shape[0], cout if has_bias else bias.shape[0])
        expect("y", y.shape[0], N * cout * j.g.P)
        if N == 0 or cout == 0 or j.g.P == 0:
            return
        j.x = &x[0]
        j.w2 = &w2[0]
        j.bias = &bias[0] if has_bias else NULL
        j.y = &y[0]
        j.bufs = alloc_buffers(slots * j.buf_elems * sizeof(floating))
        j.pass_ = PASS_FORWARD
        run_rounds(&j, job_unit, sched.n_tiles, sched.round_tiles, 1, 0, threads,
                   slots)
    finally:
        free_buffers(j.bufs)
        free_geom(&j.g)


def conv_backward(const floating[::1] dy, const floating[::1] x, const floating[::1] w2,
                  floating[::1] dx, floating[::1] acc, bint need_dx, bint need_dw,
                  Geometry geometry, Schedule sched, Py_ssize_t N, Py_ssize_t cout,
                  Py_ssize_t groups, int threads, int slots):
    """Backward pass: dx (zeroed by the caller) gets the error for the previous layer
    (eq. 16-18), and acc ((n_acc, Cout, K), zeroed) += the kernel gradient chunk by chunk
    (eq. 12); the caller adds the chunks up. need_dx/need_dw False skips that pass and
    its array is not touched. Every element of dx has one owner unit, which adds into it
    (col2im) or, for a pointwise convolution, writes it once (a GEMM with beta 0)."""
    cdef Job j = make_job(geometry, sched, N, cout, groups, floating is double)
    try:
        if slots < 1 or threads < 1:
            raise ValueError("vecconv engine: threads and slots must be >= 1")
        expect("dy", dy.shape[0], N * cout * j.g.P)
        expect("w2", w2.shape[0], cout * j.kg)
        if need_dx:                 # the dx pass reads dy and W only (eq. 16-18)
            expect("dx", dx.shape[0], N * j.g.C * j.g.S)
        if need_dw:
            expect("x", x.shape[0], N * j.g.C * j.g.S)
            expect("acc", acc.shape[0], sched.n_acc * cout * j.kg)
        if N == 0 or cout == 0 or j.g.P == 0:
            return
        if need_dw:
            j.x = &x[0]
        j.w2 = &w2[0]
        j.dy = &dy[0]
        j.bufs = alloc_buffers(slots * j.buf_elems * sizeof(floating))
        if need_dw:
            j.acc = &acc[0]
            j.pass_ = PASS_DW
            run_rounds(&j, job_unit, sched.n_tiles, sched.round_tiles, 0, sched.n_acc,
                       threads, slots)
        if need_dx:
            j.dx = &dx[0]
            j.pass_ = PASS_DX
            run_rounds(&j, job_unit, sched.dx_pieces, sched.dx_round,
                       j.groups * j.cblocks_per_group, 0, threads, slots)
    finally:
        free_buffers(j.bufs)
        free_geom(&j.g)


# ----------------------------------------------------------------------------- im2col API
ctypedef struct Unfold:
    Geom g
    bint f64
    bint scatter                # False: im2col (maps -> cols), True: col2im (cols -> maps)
    void *maps                  # (N, C, S)
    void *cols                  # (C*taps, N*P)
    Py_ssize_t N, cblock, nblocks


cdef void unfold_piece(void *ctx, Py_ssize_t u, int slot) noexcept nogil:
    """One (image, channel block) of the whole batch's patch matrix: its own rows
    segments of cols, its own maps of x."""
    cdef Unfold *f = <Unfold *>ctx
    cdef Py_ssize_t b = u // f.nblocks, c0 = (u % f.nblocks) * f.cblock
    cdef Py_ssize_t c1 = imin(c0 + f.cblock, f.g.C), ld = f.N * f.g.P
    cdef Py_ssize_t maps_at = b * f.g.C * f.g.S, cols_at = c0 * f.g.taps * ld + b * f.g.P
    if f.f64:
        patch_walk(&f.g, <double *>f.maps + maps_at, <double *>f.cols + cols_at, ld,
                   0, f.g.P, c0, c1, f.scatter)
    else:
        patch_walk(&f.g, <float *>f.maps + maps_at, <float *>f.cols + cols_at, ld,
                   0, f.g.P, c0, c1, f.scatter)


def unfold(const floating[::1] src, floating[::1] dst, Geometry geometry, Py_ssize_t N,
           Py_ssize_t cblock, int threads, bint scatter):
    """The whole batch's patch matrix, in (image, channel block) units on the pool.

    scatter False (im2col): dst, the columns (C*taps, N*P), = the patches of src, the
    maps (N, C, S). scatter True (col2im): dst, the maps (zeroed by the caller), += src,
    the columns, folded back.
    """
    cdef Unfold f
    f.g = make_geom(geometry)
    f.f64 = floating is double
    f.scatter = scatter
    f.N = N
    f.cblock = cblock
    f.nblocks = (f.g.C + cblock - 1) // cblock
    try:
        expect("maps", dst.shape[0] if scatter else src.shape[0], N * f.g.C * f.g.S)
        expect("cols", src.shape[0] if scatter else dst.shape[0], f.g.C * f.g.taps * N * f.g.P)
        if N == 0 or f.g.P == 0 or f.g.C == 0:
            return
        f.maps = <void *>&dst[0] if scatter else <void *>&src[0]
        f.cols = <void *>&src[0] if scatter else <void *>&dst[0]
        with nogil:
            vc_run(unfold_piece, &f, N * f.nblocks, threads)
    finally:
        free_geom(&f.g)


# ----------------------------------------------------------------------------- pooling
include "_pool.pxi"

# ----------------------------------------------------------------------------- Winograd
include "_winograd.pxi"

# ----------------------------------------------------------------------------- direct
include "_direct.pxi"
