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

#endif
