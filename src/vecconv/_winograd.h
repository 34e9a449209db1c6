/* The Winograd route's transform along one axis (src/vecconv/_winograd.pxi), in C so
 * that it is compiled for several vector extensions (_simd.h).
 *
 * dst = M applied along axis `ax` of src: src's elements, indexed over dims[0..2] in C
 * order, are vectors of nb entries (one per tile) src_step apart; dst has `rows`
 * elements along ax, dst_step apart. The loops run over the nb tiles innermost, the
 * vectors the compiler widens.
 */
#ifndef VECCONV_WINOGRAD_H
#define VECCONV_WINOGRAD_H

#include "_simd.h"

#define VC_WINO_AXIS(NAME, T)                                                             \
VC_CLONES static void NAME(const T *src, Py_ssize_t src_step, T *dst, Py_ssize_t dst_step,  \
                           const Py_ssize_t *dims, int ax, const double *M, Py_ssize_t rows, \
                           Py_ssize_t nb) {                                               \
    Py_ssize_t n = dims[ax], outer = 1, inner = 1, o, r, q, l, k;                         \
    int a;                                                                                \
    for (a = 0; a < ax; a++) outer *= dims[a];                                            \
    for (a = ax + 1; a < 3; a++) inner *= dims[a];                                        \
    for (o = 0; o < outer; o++)                                                           \
        for (r = 0; r < rows; r++)                                                        \
            for (q = 0; q < inner; q++) {                                                 \
                T *restrict d = dst + ((o * rows + r) * inner + q) * dst_step;            \
                int first = 1;                                                            \
                for (l = 0; l < n; l++) {                                                 \
                    const T cf = (T)M[r * n + l];                                         \
                    const T *restrict s = src + ((o * n + l) * inner + q) * src_step;     \
                    if (cf == 0) continue;                                                \
                    if (first) {                                                          \
                        for (k = 0; k < nb; k++) d[k] = cf * s[k];                        \
                        first = 0;                                                        \
                    } else {                                                              \
                        for (k = 0; k < nb; k++) d[k] += cf * s[k];                       \
                    }                                                                     \
                }                                                                         \
                if (first)                                                                \
                    for (k = 0; k < nb; k++) d[k] = 0;                                    \
            }                                                                             \
}

VC_WINO_AXIS(vc_wino_axis_f, float)
VC_WINO_AXIS(vc_wino_axis_d, double)

/* The same for the route's tile today, F(2, 3) at the points 0, 1, -1, whose transforms
 * have the entries 0, +-1/2 and +-1: B^T (4 x 4, kind VC_WINO_BT2), A^T (2 x 4, inverse,
 * VC_WINO_AT2) and A (4 x 2, dy in the dW pass, VC_WINO_A2). Each output is made from its
 * nonzero terms in one pass over the tiles, where the loop above passes once per term
 * (reading and writing the output again each time). The products are the same (exact:
 * a power of two times a value) and are summed in the same order, so the bits are the
 * same; the kind is set only for a matrix equal to these entries (wino_kind). */
/* The rows an output reads and the rows it writes never overlap (another buffer): GCC
   honours restrict on parameters only, and its run-time overlap checks stop at 10 pairs. */
#if defined(__GNUC__) && !defined(__clang__)
#define VC_IVDEP _Pragma("GCC ivdep")
#else
#define VC_IVDEP
#endif

enum { VC_WINO_GENERIC = 0, VC_WINO_BT2 = 1, VC_WINO_AT2 = 2, VC_WINO_A2 = 3 };

#define VC_WINO_AXIS2(NAME, T)                                                            \
VC_CLONES static void NAME(const T *src, Py_ssize_t src_step, T *dst, Py_ssize_t dst_step,  \
                           const Py_ssize_t *dims, int ax, int kind, Py_ssize_t nb) {    \
    const Py_ssize_t n = dims[ax], rows = kind == VC_WINO_AT2 ? 2 : 4;                   \
    Py_ssize_t outer = 1, inner = 1, o, q, k, sl, dl;                                     \
    const T h = (T)0.5;                                                                   \
    int a;                                                                                \
    for (a = 0; a < ax; a++) outer *= dims[a];                                            \
    for (a = ax + 1; a < 3; a++) inner *= dims[a];                                        \
    sl = inner * src_step;                                                                \
    dl = inner * dst_step;                                                                \
    for (o = 0; o < outer; o++)                                                           \
        for (q = 0; q < inner; q++) {                                                     \
            const T *sb = src + (o * n * inner + q) * src_step;                           \
            T *db = dst + (o * rows * inner + q) * dst_step;                              \
            const T *restrict s0 = sb;                                                    \
            const T *restrict s1 = sb + sl;                                               \
            T *restrict d0 = db;                                                          \
            T *restrict d1 = db + dl;                                                     \
            if (kind == VC_WINO_BT2) {                                                    \
                const T *restrict s2 = sb + 2 * sl;                                       \
                const T *restrict s3 = sb + 3 * sl;                                       \
                T *restrict d2 = db + 2 * dl;                                             \
                T *restrict d3 = db + 3 * dl;                                             \
                VC_IVDEP                                                                  \
                for (k = 0; k < nb; k++) {                                                \
                    d0[k] = s0[k] + (-s2[k]);                                             \
                    d1[k] = h * s1[k] + h * s2[k];                                        \
                    d2[k] = (-h) * s1[k] + h * s2[k];                                     \
                    d3[k] = (-s1[k]) + s3[k];                                             \
                }                                                                         \
            } else if (kind == VC_WINO_AT2) {                                             \
                const T *restrict s2 = sb + 2 * sl;                                       \
                const T *restrict s3 = sb + 3 * sl;                                       \
                VC_IVDEP                                                                  \
                for (k = 0; k < nb; k++) {                                                \
                    d0[k] = (s0[k] + s1[k]) + s2[k];                                      \
                    d1[k] = (s1[k] + (-s2[k])) + s3[k];                                   \
                }                                                                         \
            } else {                                                                      \
                T *restrict d2 = db + 2 * dl;                                             \
                T *restrict d3 = db + 3 * dl;                                             \
                VC_IVDEP                                                                  \
                for (k = 0; k < nb; k++) {                                                \
                    d0[k] = s0[k];                                                        \
                    d1[k] = s0[k] + s1[k];                                                \
                    d2[k] = s0[k] + (-s1[k]);                                             \
                    d3[k] = s1[k];                                                        \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
}

VC_WINO_AXIS2(vc_wino_axis2_f, float)
VC_WINO_AXIS2(vc_wino_axis2_d, double)

/* The gather's inner step for a run of L tiles whose inputs all lie inside one row of x:
 * element e2 of tile kk reads src[e2 + kk m] into dst[e2 * tb + kk], for e2 < a. The
 * tile step m = 2 (the route's tiles) has its own loop: a constant stride the compiler
 * widens (a deinterleave), where the Cython loop copied one value at a time. */
#define VC_WINO_TAKE(NAME, T)                                                             \
VC_CLONES static void NAME(T *dst, Py_ssize_t tb, const T *src, Py_ssize_t L,             \
                           Py_ssize_t m, Py_ssize_t a) {                                  \
    Py_ssize_t e2, kk;                                                                    \
    for (e2 = 0; e2 < a; e2++) {                                                          \
        T *restrict d = dst + e2 * tb;                                                    \
        const T *restrict s = src + e2;                                                   \
        if (m == 2)                                                                       \
            for (kk = 0; kk < L; kk++) d[kk] = s[2 * kk];                                 \
        else                                                                              \
            for (kk = 0; kk < L; kk++) d[kk] = s[kk * m];                                 \
    }                                                                                     \
}

VC_WINO_TAKE(vc_wino_take_f, float)
VC_WINO_TAKE(vc_wino_take_d, double)

/* The kernels' transforms, U = G g G^T for each kernel g, as one (rows x cols) matrix K
 * (the Kronecker product of each axis's G, _winograd.weight_transform) applied to vec(g).
 * K arrives as its nonzero terms, output by output (start[o] .. start[o + 1] of idx and
 * val): each output is the sum of its terms in that order, kernel by kernel. With vector
 * types the kernels of a block of 64 bytes go side by side, a short block padded, so
 * that every kernel is made by the same operations: the same bits for any cut of the
 * kernels over threads, and the plain loop's bits.
 *   VC_KT_FORWARD: src (pairs, cols), dst (rows, pairs): U from the effective kernels;
 *     the outputs are K's rows, idx their columns.
 *   VC_KT_INVERSE: src (rows, pairs), dst (pairs, cols): dW = G^T dU G, K^T applied; the
 *     outputs are K's columns, idx their rows.
 * Pairs p0 .. p1 of U (or dU) are made; buf (the forward transform's) holds
 * VC_KT_BUF_ELEMS(cols) values. */
enum { VC_KT_FORWARD = 0, VC_KT_INVERSE = 1 };

/* (The forward transform copies VC_KT_BLOCKS blocks' taps before it sums any: a vector
 * read right after the scalar writes that filled it waits for them to reach the cache.) */
#define VC_KT_BLOCKS 8
#define VC_KT_BUF_ELEMS(cols) ((cols) * VC_KT_BLOCKS * 16)   /* 64 bytes of float32 */

#ifdef VC_VECTORS
/* U's rows for the kernels q0 .. q0 + nb, their taps at bq + c * SPAN (a vector each) */
#define VC_KT_SUM(T, bq)                                                                  \
    for (o = 0; o < rows; o++) {                                                          \
        acc = zero;                                                                       \
        for (e = start[o]; e < start[o + 1]; e++) {                                       \
            memcpy(&b, (bq) + idx[e] * SPAN, sizeof b);                                   \
            if (e == start[o]) acc = val[e] * b; else acc += val[e] * b;                  \
        }                                                                                 \
        if (nb == LANES) memcpy(dst + o * pairs + q0, &acc, sizeof acc);                  \
        else memcpy(dst + o * pairs + q0, &acc, (size_t)nb * sizeof(T));                  \
    }
#define VC_WINO_KERNELS(NAME, T, V)                                                       \
VC_CLONES static void NAME(const T *src, T *dst, const Py_ssize_t *start,                 \
                           const Py_ssize_t *idx, const T *val, Py_ssize_t rows,           \
                           Py_ssize_t cols, Py_ssize_t pairs, int mode, Py_ssize_t p0,     \
                           Py_ssize_t p1, T *buf) {                                       \
    enum { LANES = sizeof(V) / sizeof(T), SPAN = VC_KT_BLOCKS * LANES };                  \
    const V zero = {0};                                                                   \
    Py_ssize_t q0, o, e, l, c, nb, j0;                                                    \
    V acc, b;                                                                             \
    if (mode == VC_KT_INVERSE) {                                                          \
        for (q0 = p0; q0 < p1; q0 += LANES) {                                             \
            nb = p1 - q0 < LANES ? p1 - q0 : LANES;                                       \
            for (o = 0; o < cols; o++) {                                                  \
                acc = zero;                                                               \
                for (e = start[o]; e < start[o + 1]; e++) {                               \
                    if (nb == LANES) memcpy(&b, src + idx[e] * pairs + q0, sizeof b);     \
                    else {                                                                \
                        b = zero;                                                         \
                        memcpy(&b, src + idx[e] * pairs + q0, (size_t)nb * sizeof(T));    \
                    }                                                                     \
                    if (e == start[o]) acc = val[e] * b; else acc += val[e] * b;          \
                }                                                                         \
                for (l = 0; l < nb; l++) dst[(q0 + l) * cols + o] = acc[l];               \
            }                                                                             \
        }                                                                                 \
        return;                                                                           \
    }                                                                                     \
    for (j0 = p0; j0 < p1; j0 += SPAN) {                                                  \
        /* buf: the span's taps, tap c of kernel j0 + l at c * SPAN + l, 0 past p1 */     \
        for (l = 0; l < SPAN; l++) {                                                      \
            if (j0 + l >= p1) {                                                           \
                for (c = 0; c < cols; c++) buf[c * SPAN + l] = 0;                         \
            } else {                                                                      \
                const T *s = src + (j0 + l) * cols;                                       \
                for (c = 0; c < cols; c++) buf[c * SPAN + l] = s[c];                      \
            }                                                                             \
        }                                                                                 \
        for (q0 = j0; q0 < p1 && q0 < j0 + SPAN; q0 += LANES) {                           \
            nb = p1 - q0 < LANES ? p1 - q0 : LANES;                                       \
            VC_KT_SUM(T, buf + (q0 - j0))                                                 \
        }                                                                                 \
    }                                                                                     \
}
VC_WINO_KERNELS(vc_wino_kernels_f, float, vc_vf)
VC_WINO_KERNELS(vc_wino_kernels_d, double, vc_vd)
#else
#define VC_WINO_KERNELS(NAME, T)                                                          \
static void NAME(const T *src, T *dst, const Py_ssize_t *start, const Py_ssize_t *idx,    \
                 const T *val, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t pairs,        \
                 int mode, Py_ssize_t p0, Py_ssize_t p1, T *buf) {                        \
    Py_ssize_t q, o, e;                                                                   \
    T acc, v;                                                                             \
    (void)buf;                                                                            \
    for (q = p0; q < p1; q++)                                                             \
        for (o = 0; o < (mode == VC_KT_INVERSE ? cols : rows); o++) {                     \
            acc = 0;                                                                      \
            for (e = start[o]; e < start[o + 1]; e++) {                                   \
                v = mode == VC_KT_INVERSE ? src[idx[e] * pairs + q] : src[q * cols + idx[e]]; \
                if (e == start[o]) acc = val[e] * v; else acc += val[e] * v;              \
            }                                                                             \
            if (mode == VC_KT_INVERSE) dst[q * cols + o] = acc;                           \
            else dst[o * pairs + q] = acc;                                                \
        }                                                                                 \
}
VC_WINO_KERNELS(vc_wino_kernels_f, float)
VC_WINO_KERNELS(vc_wino_kernels_d, double)
#endif

#endif
