# The direct route's driver (included by _engine.pyx); the kernels are in _direct.h.

cdef extern from "_direct.h":
    ctypedef struct vc_direct:
        int f64, pass_ "pass"
        Py_ssize_t N, C, cout, cig, cog
        Py_ssize_t i[3]
        Py_ssize_t o[3]
        Py_ssize_t k[3]
        Py_ssize_t s[3]
        Py_ssize_t d[3]
        Py_ssize_t pp[3]
        const long long *idx[3]
        Py_ssize_t lo, hi
        int gather
        double fill
        const void *x
        const void *w
        const void *bias
        const void *dy
        void *y
        void *dx
        void *dw
        void *scratch
        Py_ssize_t scratch_elems
    void vc_direct_unit(void *ctx, Py_ssize_t u, int slot) noexcept nogil


cdef tuple _longest_run(const long long[::1] t):
    """[lo, hi) of the longest run of t whose entries are x's, one after another."""
    cdef Py_ssize_t u, start = 0, lo = 0, hi = 0
    for u in range(t.shape[0]):
        if t[u] < 0:
            start = u + 1
            continue
        if u > start and t[u] != t[u - 1] + 1:
            start = u
        if u + 1 - start > hi - lo:
            lo, hi = start, u + 1
    return lo, hi


def direct_conv(int pass_, const floating[::1] a, const floating[::1] w,
                const floating[::1] b, floating[::1] out, bint has_bias,
                Geometry geometry, tuple tables, Py_ssize_t N, Py_ssize_t cout,
                Py_ssize_t groups, int threads, int slots, bint gather=False,
                Py_ssize_t scratch_elems=0):
    """One pass of a grouped convolution, map by map.

    pass_ 0 (forward): a = x, b = bias, out = y. pass_ 1 (dx): a = dy, out = dx. pass_ 2
    (dW): a = x, b = dy, out = dw (Cout, C/groups * taps). w is (Cout, C/groups * taps).
    ``tables`` holds per axis the padded positions' entries of x (int64, -1 for the
    fill). ``gather`` (dx, every stride 1): each padded row summed from a copy of dy with
    zero sides, for the input maps whose weights are finite (the others scatter), which
    ``scratch_elems`` (per slot, as _direct.py counts it; at least what the pass needs)
    must hold."""
    cdef vc_direct J
    cdef int ax
    cdef const long long[::1] t
    cdef list keep = []
    cdef Py_ssize_t S, P, taps, units, u
    memset(&J, 0, sizeof(vc_direct))
    J.f64 = floating is double
    J.pass_ = pass_
    J.N, J.C, J.cout = N, geometry.channels, cout
    if (groups < 1 or J.C % groups or cout % groups or slots < 1 or threads < 1
            or not 0 <= pass_ <= 2):
        raise ValueError("vecconv engine: groups must divide C and Cout")
    J.cig, J.cog = J.C // groups, cout // groups
    taps = 1
    for ax in range(3):
        J.i[ax] = geometry.size[ax]
        J.o[ax] = geometry.out[ax]
        J.k[ax] = geometry.kernel[ax]
        J.s[ax] = geometry.stride[ax]
        J.d[ax] = geometry.dilation[ax]
        J.pp[ax] = (J.o[ax] - 1) * J.s[ax] + (J.k[ax] - 1) * J.d[ax] + 1
        t = tables[ax]
        keep.append(t)
        expect("padding table", t.shape[0], J.pp[ax])
        for u in range(t.shape[0]):
            if t[u] >= J.i[ax] or t[u] < -1:
                raise ValueError("vecconv engine: a padding table reads outside the map")
        J.idx[ax] = &t[0]
        taps *= J.k[ax]
    J.fill = geometry.fill
    # the longest run of padded columns reading consecutive entries of x: copied at once
    J.lo, J.hi = _longest_run(tables[2])
    S = J.i[0] * J.i[1] * J.i[2]
    P = J.o[0] * J.o[1] * J.o[2]
    expect("w", w.shape[0], cout * J.cig * taps)
    if pass_ == 0:
        expect("x", a.shape[0], N * J.C * S)
        expect("bias", b.shape[0], cout if has_bias else b.shape[0])
        expect("y", out.shape[0], N * cout * P)
        units = N * cout
    elif pass_ == 1:
        expect("dy", a.shape[0], N * cout * P)
        expect("dx", out.shape[0], N * J.C * S)
        units = N * J.C
    else:
        expect("x", a.shape[0], N * J.C * S)
        expect("dy", b.shape[0], N * cout * P)
        expect("dw", out.shape[0], cout * J.cig * taps)
        units = cout * J.cig
    if units == 0 or P == 0 or out.shape[0] == 0:
        if pass_ != 0 and out.shape[0]:     # no output position: dx and dW are 0
            out[:] = 0
        return
    J.w = &w[0]
    if pass_ == 0:
        J.x, J.y = &a[0], &out[0]
        J.bias = &b[0] if has_bias else NULL
    elif pass_ == 1:
        J.dy, J.dx = &a[0], &out[0]
    else:
        J.x, J.dy, J.dw = &a[0], &b[0], &out[0]
    # the padded map and dW's partial sums; a gathering dx pass: its copy of dy
    need = J.pp[0] * J.pp[1] * J.pp[2] + taps * J.o[2]
    J.gather = gather and pass_ == 1
    if J.gather:
        if J.s[0] != 1 or J.s[1] != 1 or J.s[2] != 1:
            raise ValueError("vecconv engine: only a stride-1 dx pass gathers")
        need += J.o[0] * J.o[1] * (J.o[2] + 2 * (J.k[2] - 1) * J.d[2])
    J.scratch_elems = imax(scratch_elems, need)
    J.scratch = alloc_buffers(slots * J.scratch_elems * sizeof(floating))
    try:
        with nogil:
            vc_run(vc_direct_unit, &J, units, imin(threads, slots))
        PyErr_CheckSignals()
    finally:
        free_buffers(J.scratch)
