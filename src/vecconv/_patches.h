/* im2col's copy of one tap's rows when every one lies inside the map (src/vecconv/
 * _engine.pyx, patch_walk), and col2im's sum of them back into x: `rows` rows of `width`
 * entries, `dstep` apart in dst and `sstep` apart in src (x's rows are the input's
 * stride apart, the patch matrix's one after another). In C so that the short rows of
 * small maps (LeNet-5's C3: 10 columns) go through loops compiled for AVX-512, AVX2 and
 * the baseline (_simd.h), one call per tap where the Cython walk spent its bookkeeping on
 * every row. */
#ifndef VECCONV_PATCHES_H
#define VECCONV_PATCHES_H

#include "_simd.h"

#define VC_PATCH_ROWS(NAME, T, OP)                                                        \
VC_CLONES static void NAME(T *dst, Py_ssize_t dstep, const T *src, Py_ssize_t sstep,      \
                           Py_ssize_t rows, Py_ssize_t width) {                           \
    Py_ssize_t r, w;                                                                      \
    for (r = 0; r < rows; r++) {                                                          \
        T *restrict d = dst + r * dstep;                                                  \
        const T *restrict s = src + r * sstep;                                            \
        for (w = 0; w < width; w++) d[w] OP s[w];                                         \
    }                                                                                     \
}

VC_PATCH_ROWS(vc_patch_rows_f, float, =)
VC_PATCH_ROWS(vc_patch_rows_d, double, =)
VC_PATCH_ROWS(vc_patch_add_rows_f, float, +=)
VC_PATCH_ROWS(vc_patch_add_rows_d, double, +=)

#endif
