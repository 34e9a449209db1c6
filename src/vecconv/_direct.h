/* The direct route's kernels (src/vecconv/_direct.pxi): grouped convolutions with few
 * input channels per group (depthwise: one, MobileNet's 3 x 3 layers, with any channel
 * multiplier), where im2col would make GEMMs of a few rows per group.
 *
 * Eq. 1 literally, one map at a time: a unit copies each input map into a padded scratch
 * map (the padding's index tables, built by the planner, say which entry each padded
 * position reads, -1 for the fill), then adds w[tap] times the shifted rows of it to each
 * output row, the output columns innermost (the vectors the compiler widens; several
 * versions, _simd.h). The backward passes walk the same windows:
 *  - dx (eq. 16-18): each output's delta times w[tap] added into a padded scratch map,
 *    which is then folded back through the same tables (the adjoint of the padding copy);
 *  - dW (eq. 12): for each tap, the products delta * shifted input summed into a row of
 *    partial sums over the batch and the rows, then the row summed: a fixed order.
 * A unit owns its output (forward: image n, output map j; dx: image n, input map c;
 * dW: the kernel of (output map j, input map c) over the whole batch): the same bits for
 * any thread count.
 */
#ifndef VECCONV_DIRECT_H
#define VECCONV_DIRECT_H

#include "_simd.h"

/* Blocks of output columns summed in vector variables (GCC's and clang's vector types,
 * _simd.h: 64 bytes, one AVX-512 register, two AVX2 or four SSE2 ones), where a plain
 * array of sums stayed in memory. These macros are the bodies of the kernels below and
 * use their variables by name: vc_row's (yr, W, nt, src, wv, init, b; ow0 and t its
 * counters, L the vector's length) and vc_direct_dw's (J, pm, dy, part, kd, kh, od, oh;
 * acc, shift and step of the tap). */
#ifdef VC_VECTORS
/* s = the vector at p (unaligned) */
#define VC_LOAD(s, p) memcpy(&(s), (p), sizeof(s))
/* a (even taps) and c (odd taps): two chains of sums, so that the additions overlap;
 * ow0's block of NV vectors from yr's or b's start, the taps, a + c stored */
#define VC_ROW_BLOCK(V, NV)                                                               \
    {                                                                                     \
        V a[NV], c[NV], s0;                                                               \
        int q;                                                                            \
        for (q = 0; q < NV; q++) {                                                        \
            const V zero = {0};                                                           \
            c[q] = zero;                                                                  \
            if (init) a[q] = zero + b;                                                    \
            else VC_LOAD(a[q], yr + ow0 + q * L);                                         \
        }                                                                                 \
        for (t = 0; t + 1 < nt; t += 2)                                                   \
            for (q = 0; q < NV; q++) {                                                    \
                VC_LOAD(s0, src[t] + ow0 + q * L);                                        \
                a[q] += wv[t] * s0;                                                       \
                VC_LOAD(s0, src[t + 1] + ow0 + q * L);                                    \
                c[q] += wv[t + 1] * s0;                                                   \
            }                                                                             \
        for (; t < nt; t++)                                                               \
            for (q = 0; q < NV; q++) {                                                    \
                VC_LOAD(s0, src[t] + ow0 + q * L);                                        \
                a[q] += wv[t] * s0;                                                       \
            }                                                                             \
        for (q = 0; q < NV; q++) {                                                        \
            a[q] += c[q];                                                                 \
            memcpy(yr + ow0 + q * L, &a[q], sizeof(V));                                   \
        }                                                                                 \
    }
/* Stride-1 rows in blocks of vector registers summed over the taps: ow0 moves past the
 * columns done. A row computed afresh (init) ends with one vector overlapping the block
 * before it: its columns get the same values again, bit for bit. */
#define VC_ROW_VECTORS(T, V)                                                              \
    if (sw == 1) {                                                                        \
        const Py_ssize_t L = (Py_ssize_t)(sizeof(V) / sizeof(T));                         \
        for (; ow0 + 2 * L <= W; ow0 += 2 * L) VC_ROW_BLOCK(V, 2)                         \
        for (; ow0 + L <= W; ow0 += L) VC_ROW_BLOCK(V, 1)                                 \
        if (init && ow0 < W && W >= L) {                                                  \
            ow0 = W - L;                                                                  \
            VC_ROW_BLOCK(V, 1)                                                            \
            ow0 = W;                                                                      \
        }                                                                                 \
    }

/* dW's columns [ow0, end) of one tap in blocks of NV vectors of type V, each summed
 * over the image's rows in registers (even and odd rows apart: 2 NV chains of
 * additions) and then added to the tap's partial sums */
#define VC_DW_BLOCKS(SUF, T, V, NV, end)                                                  \
    {                                                                                     \
        const Py_ssize_t L = (Py_ssize_t)(sizeof(V) / sizeof(T));                         \
        Py_ssize_t q;                                                                     \
        for (; ow0 + NV * L <= (end); ow0 += NV * L) {                                    \
            V a[NV], e[NV], d0, s0, p0;                                                   \
            for (q = 0; q < NV; q++) {                                                    \
                const V zero = {0};                                                       \
                a[q] = zero;                                                              \
                e[q] = zero;                                                              \
            }                                                                             \
            for (od = 0; od < o0; od++) {                                                 \
                const T *dr = dy + od * o1 * W + ow0;                                     \
                const T *sr = vc_prow_##SUF(J, pm, od, 0, kd, kh) + shift + ow0;          \
                for (oh = 0; oh + 1 < o1; oh += 2) {                                      \
                    for (q = 0; q < NV; q++) {                                            \
                        VC_LOAD(d0, dr + q * L);                                          \
                        VC_LOAD(s0, sr + q * L);                                          \
                        a[q] += d0 * s0;                                                  \
                        VC_LOAD(d0, dr + W + q * L);                                      \
                        VC_LOAD(s0, sr + step + q * L);                                   \
                        e[q] += d0 * s0;                                                  \
                    }                                                                     \
                    dr += 2 * W;                                                          \
                    sr += 2 * step;                                                       \
                }                                                                         \
                if (oh < o1)                                                              \
                    for (q = 0; q < NV; q++) {                                            \
                        VC_LOAD(d0, dr + q * L);                                          \
                        VC_LOAD(s0, sr + q * L);                                          \
                        a[q] += d0 * s0;                                                  \
                    }                                                                     \
            }                                                                             \
            for (q = 0; q < NV; q++) {                                                    \
                VC_LOAD(p0, acc + ow0 + q * L);                                           \
                p0 += a[q] + e[q];                                                        \
                memcpy(acc + ow0 + q * L, &p0, sizeof(V));                                \
            }                                                                             \
        }                                                                                 \
    }
/* dW of stride-1 rows, per tap: full vectors, then one half-width vector for the rest of
 * a row (8 of ResNet's 56 columns in float32); done = the columns the blocks covered */
#define VC_DW_VECTORS(SUF, T, V, VH)                                                      \
    if (sw == 1) {                                                                        \
        const Py_ssize_t o0 = J->o[0], o1 = J->o[1], step = J->s[1] * J->pp[2];           \
        const Py_ssize_t full = W - W % (Py_ssize_t)(sizeof(V) / sizeof(T));              \
        const Py_ssize_t half = (Py_ssize_t)(sizeof(VH) / sizeof(T));                     \
        done = W - full >= half ? full + half : full;                                     \
        for (kd = 0; kd < J->k[0]; kd++)                                                  \
            for (kh = 0; kh < J->k[1]; kh++)                                              \
                for (kw = 0; kw < J->k[2]; kw++) {                                        \
                    T *acc = part + ((kd * J->k[1] + kh) * J->k[2] + kw) * W;             \
                    const Py_ssize_t shift = kw * J->d[2];                                \
                    Py_ssize_t ow0 = 0;                                                   \
                    VC_DW_BLOCKS(SUF, T, V, 2, full)                                      \
                    VC_DW_BLOCKS(SUF, T, V, 1, full)                                      \
                    VC_DW_BLOCKS(SUF, T, VH, 1, done)                                     \
                }                                                                         \
    }
#else
#define VC_ROW_VECTORS(T, V)
#define VC_DW_VECTORS(SUF, T, V, VH)
#endif

/* taps summed per pass over an output row (their pointers and weights on the stack) */
#define VC_TAP_GROUP 16

typedef struct vc_direct {
    int f64, pass;              /* pass: 0 forward, 1 dx, 2 dW */
    Py_ssize_t N, C, cout;
    Py_ssize_t cig, cog;        /* input and output maps per group */
    Py_ssize_t i[3], o[3], k[3], s[3], d[3];
    Py_ssize_t pp[3];           /* the padded extent each axis reads */
    const long long *idx[3];    /* per padded position: the entry of x it reads, or -1 */
    Py_ssize_t lo, hi;          /* padded columns [lo, hi) read x's entries idx[2][lo] on */
    int gather;                 /* dx (every stride 1): gather from dyp, for each input map
                                 * whose weights are finite (else scatter, as im2col) */
    double fill;
    const void *x, *w, *bias, *dy;
    void *y, *dx, *dw;
    void *scratch;              /* per slot: scratch_elems entries */
    Py_ssize_t scratch_elems;
} vc_direct;

#define VC_DIRECT_KERNELS(SUF, T, VB, V, VH)                                                     \
/* pm = map padded: pm[a, b, c] = x[idx0[a], idx1[b], idx2[c]], or the fill */             \
static void vc_pad_##SUF(const vc_direct *J, const T *x, T *pm) {                         \
    Py_ssize_t a, b, c, i0, i1, i2;                                                       \
    const T fill = (T)J->fill;                                                            \
    for (a = 0; a < J->pp[0]; a++) {                                                      \
        i0 = J->idx[0][a];                                                                \
        for (b = 0; b < J->pp[1]; b++) {                                                  \
            T *dst = pm + (a * J->pp[1] + b) * J->pp[2];                                  \
            const T *row;                                                                 \
            i1 = J->idx[1][b];                                                            \
            if (i0 < 0 || i1 < 0) {                                                       \
                for (c = 0; c < J->pp[2]; c++) dst[c] = fill;                             \
                continue;                                                                 \
            }                                                                             \
            row = x + (i0 * J->i[1] + i1) * J->i[2];                                      \
            for (c = 0; c < J->lo; c++) {                                                 \
                i2 = J->idx[2][c];                                                        \
                dst[c] = i2 < 0 ? fill : row[i2];                                         \
            }                                                                             \
            if (J->hi > J->lo)          /* the run of x's own entries: one copy */        \
                memcpy(dst + J->lo, row + J->idx[2][J->lo], (J->hi - J->lo) * sizeof(T)); \
            for (c = J->hi; c < J->pp[2]; c++) {                                          \
                i2 = J->idx[2][c];                                                        \
                dst[c] = i2 < 0 ? fill : row[i2];                                         \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
/* x += pm folded back: the adjoint of vc_pad (the fill's entries go nowhere) */          \
VC_CLONES static void vc_fold_##SUF(const vc_direct *J, const T *pm, T *x) {                        \
    Py_ssize_t a, b, c, i0, i1, i2;                                                       \
    for (a = 0; a < J->pp[0]; a++) {                                                      \
        i0 = J->idx[0][a];                                                                \
        if (i0 < 0) continue;                                                             \
        for (b = 0; b < J->pp[1]; b++) {                                                  \
            const T *src = pm + (a * J->pp[1] + b) * J->pp[2];                            \
            T *row;                                                                       \
            i1 = J->idx[1][b];                                                            \
            if (i1 < 0) continue;                                                         \
            row = x + (i0 * J->i[1] + i1) * J->i[2];                                      \
            for (c = 0; c < J->lo; c++) {                                                 \
                i2 = J->idx[2][c];                                                        \
                if (i2 >= 0) row[i2] += src[c];                                           \
            }                                                                             \
            if (J->hi > J->lo) {        /* the run of x's own entries */                  \
                T *restrict run = row + J->idx[2][J->lo];                                 \
                const T *restrict from = src + J->lo;                                     \
                for (c = 0; c < J->hi - J->lo; c++) run[c] += from[c];                    \
            }                                                                             \
            for (c = J->hi; c < J->pp[2]; c++) {                                          \
                i2 = J->idx[2][c];                                                        \
                if (i2 >= 0) row[i2] += src[c];                                           \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
/* the rows of pm that output row (od, oh) reads with taps (kd, kh) */                    \
static inline const T *vc_prow_##SUF(const vc_direct *J, const T *pm, Py_ssize_t od,      \
                                     Py_ssize_t oh, Py_ssize_t kd, Py_ssize_t kh) {       \
    return pm + ((od * J->s[0] + kd * J->d[0]) * J->pp[1] + oh * J->s[1] + kh * J->d[1])  \
        * J->pp[2];                                                                       \
}                                                                                         \
/* yr[ow] = (init ? b : yr[ow]) + sum over nt taps of wv[t] * src[t][ow * sw]: blocks of   \
 * outputs summed over the taps, stored once (in registers: VC_ROW_VECTORS) */           \
VC_INLINE void vc_row_##SUF(T *restrict yr, Py_ssize_t W, Py_ssize_t sw, int nt,      \
                                const T *const *src, const T *wv, int init, T b) {       \
    Py_ssize_t ow0 = 0, i;                                                                \
    int t;                                                                                \
    VC_ROW_VECTORS(T, V)                                                                  \
    for (; ow0 < W; ow0 += VB) {                                                          \
        const Py_ssize_t nb = W - ow0 < VB ? W - ow0 : VB;                                \
        T acc[VB];                                                                        \
        for (i = 0; i < nb; i++) acc[i] = init ? b : yr[ow0 + i];                         \
        for (t = 0; t < nt; t++) {                                                        \
            const T v = wv[t];                                                            \
            const T *restrict s = src[t] + ow0 * sw;                                      \
            if (sw == 1)                                                                  \
                for (i = 0; i < nb; i++) acc[i] += v * s[i];                              \
            else                                                                          \
                for (i = 0; i < nb; i++) acc[i] += v * s[i * sw];                         \
        }                                                                                 \
        for (i = 0; i < nb; i++) yr[ow0 + i] = acc[i];                                    \
    }                                                                                     \
}                                                                                         \
VC_CLONES static void vc_direct_forward_##SUF(const vc_direct *J, Py_ssize_t u,    \
                                                     T *pm) {                             \
    const Py_ssize_t n = u / J->cout, j = u % J->cout, c0 = (j / J->cog) * J->cig;        \
    const Py_ssize_t S = J->i[0] * J->i[1] * J->i[2], P = J->o[0] * J->o[1] * J->o[2];    \
    const Py_ssize_t taps = J->k[0] * J->k[1] * J->k[2], W = J->o[2], sw = J->s[2];       \
    const T b = J->bias ? ((const T *)J->bias)[j] : (T)0;                                 \
    T *y = (T *)J->y + (n * J->cout + j) * P;                                             \
    const T *src[VC_TAP_GROUP];                                                           \
    T wv[VC_TAP_GROUP];                                                                   \
    Py_ssize_t od, oh, kd, kh, kw, ci;                                                    \
    int nt, first;                                                                        \
    for (ci = 0; ci < J->cig; ci++) {                                                     \
    const T *w = (const T *)J->w + (j * J->cig + ci) * taps;                              \
    vc_pad_##SUF(J, (const T *)J->x + (n * J->C + c0 + ci) * S, pm);                      \
    for (od = 0; od < J->o[0]; od++)                                                      \
        for (oh = 0; oh < J->o[1]; oh++) {                                                \
            T *restrict yr = y + (od * J->o[1] + oh) * W;                                 \
            nt = 0;                                                                       \
            first = ci == 0;                                                              \
            for (kd = 0; kd < J->k[0]; kd++)                                              \
                for (kh = 0; kh < J->k[1]; kh++) {                                        \
                    const T *pr = vc_prow_##SUF(J, pm, od, oh, kd, kh);                   \
                    for (kw = 0; kw < J->k[2]; kw++) {                                    \
                        wv[nt] = w[(kd * J->k[1] + kh) * J->k[2] + kw];                   \
                        src[nt++] = pr + kw * J->d[2];                                    \
                        if (nt == VC_TAP_GROUP) {                                         \
                            vc_row_##SUF(yr, W, sw, nt, src, wv, first, b);               \
                            nt = 0;                                                       \
                            first = 0;                                                    \
                        }                                                                 \
                    }                                                                     \
                }                                                                         \
            if (nt || first)                                                              \
                vc_row_##SUF(yr, W, sw, nt, src, wv, first, b);                           \
        }                                                                                 \
    }                                                                                     \
    if (J->cig == 0)                                                                      \
        for (od = 0; od < P; od++) y[od] = b;                                             \
}                                                                                         \
/* dx's padded map of a stride-1 layer, row by row as the forward pass makes y: padded   \
 * row (ad, ah) = sum over the taps whose output row (ad - kd d0, ah - kh d1) exists of    \
 * w[tap] times that row of dy shifted by kw d2, read from a copy of dy with (k2 - 1) d2  \
 * zeros on each side (dyp, after dW's partial sums in the scratch) */                   \
VC_INLINE void vc_direct_dx_gather_##SUF(const vc_direct *J, Py_ssize_t n, Py_ssize_t c,  \
                                         T *pm) {                                         \
    const Py_ssize_t ci = c % J->cig, g = c / J->cig;                                     \
    const Py_ssize_t P = J->o[0] * J->o[1] * J->o[2], W = J->o[2];                        \
    const Py_ssize_t taps = J->k[0] * J->k[1] * J->k[2], rows = J->o[0] * J->o[1];        \
    const Py_ssize_t E = (J->k[2] - 1) * J->d[2], Wp = W + 2 * E;                         \
    T *dyp = pm + J->pp[0] * J->pp[1] * J->pp[2] + taps * W;                              \
    const T *src[VC_TAP_GROUP];                                                           \
    T wv[VC_TAP_GROUP];                                                                   \
    Py_ssize_t j, r, ad, ah, od, oh, kd, kh, kw;                                          \
    int nt, first;                                                                        \
    for (j = g * J->cog; j < (g + 1) * J->cog; j++) {                                     \
        const T *w = (const T *)J->w + (j * J->cig + ci) * taps;                          \
        const T *dy = (const T *)J->dy + (n * J->cout + j) * P;                           \
        for (r = 0; r < rows; r++) {                                                      \
            T *d = dyp + r * Wp;                                                          \
            memset(d, 0, E * sizeof(T));                                                  \
            memcpy(d + E, dy + r * W, W * sizeof(T));                                     \
            memset(d + E + W, 0, E * sizeof(T));                                          \
        }                                                                                 \
        for (ad = 0; ad < J->pp[0]; ad++)                                                 \
            for (ah = 0; ah < J->pp[1]; ah++) {                                           \
                T *row = pm + (ad * J->pp[1] + ah) * J->pp[2];                            \
                nt = 0;                                                                   \
                first = j == g * J->cog;                                                  \
                for (kd = 0; kd < J->k[0]; kd++) {                                        \
                    od = ad - kd * J->d[0];                                               \
                    if (od < 0 || od >= J->o[0]) continue;                                \
                    for (kh = 0; kh < J->k[1]; kh++) {                                    \
                        const T *dr;                                                      \
                        oh = ah - kh * J->d[1];                                           \
                        if (oh < 0 || oh >= J->o[1]) continue;                            \
                        dr = dyp + (od * J->o[1] + oh) * Wp + E;                          \
                        for (kw = 0; kw < J->k[2]; kw++) {                                \
                            wv[nt] = w[(kd * J->k[1] + kh) * J->k[2] + kw];               \
                            src[nt++] = dr - kw * J->d[2];                                \
                            if (nt == VC_TAP_GROUP) {                                     \
                                vc_row_##SUF(row, J->pp[2], 1, nt, src, wv, first, (T)0); \
                                nt = 0;                                                   \
                                first = 0;                                                \
                            }                                                             \
                        }                                                                 \
                    }                                                                     \
                }                                                                         \
                if (nt || first)                                                          \
                    vc_row_##SUF(row, J->pp[2], 1, nt, src, wv, first, (T)0);             \
            }                                                                             \
    }                                                                                     \
}                                                                                         \
/* whether the weights that reach input map c (its group's, for its place in the group)  \
 * are all finite: x - x is 0 for a finite x, NaN for an inf or NaN (no -ffast-math) */   \
static int vc_group_finite_##SUF(const vc_direct *J, Py_ssize_t c) {                      \
    const Py_ssize_t ci = c % J->cig, g = c / J->cig;                                     \
    const Py_ssize_t taps = J->k[0] * J->k[1] * J->k[2];                                  \
    Py_ssize_t j, t;                                                                      \
    for (j = g * J->cog; j < (g + 1) * J->cog; j++) {                                     \
        const T *w = (const T *)J->w + (j * J->cig + ci) * taps;                          \
        for (t = 0; t < taps; t++)                                                        \
            if (!(w[t] - w[t] == 0)) return 0;                                            \
    }                                                                                     \
    return 1;                                                                             \
}                                                                                         \
VC_CLONES static void vc_direct_dx_##SUF(const vc_direct *J, Py_ssize_t u, T *pm) { \
    const Py_ssize_t n = u / J->C, c = u % J->C, ci = c % J->cig, g = c / J->cig;         \
    const Py_ssize_t S = J->i[0] * J->i[1] * J->i[2], P = J->o[0] * J->o[1] * J->o[2];    \
    const Py_ssize_t taps = J->k[0] * J->k[1] * J->k[2], W = J->o[2], sw = J->s[2];       \
    const Py_ssize_t PP = J->pp[0] * J->pp[1] * J->pp[2];                                 \
    T *dx = (T *)J->dx + (n * J->C + c) * S;                                              \
    Py_ssize_t j, od, oh, kd, kh, kw, ow, e;                                              \
    if (J->gather && J->cog > 0 && vc_group_finite_##SUF(J, c)) {                         \
        vc_direct_dx_gather_##SUF(J, n, c, pm);                                           \
        for (e = 0; e < S; e++) dx[e] = 0;                                                \
        vc_fold_##SUF(J, pm, dx);                                                         \
        return;                                                                           \
    }                                                                                     \
    for (e = 0; e < PP; e++) pm[e] = 0;                                                   \
    for (j = g * J->cog; j < (g + 1) * J->cog; j++) {                                     \
        const T *w = (const T *)J->w + (j * J->cig + ci) * taps;                          \
        const T *dy = (const T *)J->dy + (n * J->cout + j) * P;                           \
        for (od = 0; od < J->o[0]; od++)                                                  \
            for (oh = 0; oh < J->o[1]; oh++) {                                            \
                const T *restrict dr = dy + (od * J->o[1] + oh) * W;                      \
                for (kd = 0; kd < J->k[0]; kd++)                                          \
                    for (kh = 0; kh < J->k[1]; kh++) {                                    \
                        T *pr = (T *)vc_prow_##SUF(J, pm, od, oh, kd, kh);                \
                        for (kw = 0; kw < J->k[2]; kw++) {                                \
                            const T wv = w[(kd * J->k[1] + kh) * J->k[2] + kw];           \
                            T *restrict dst = pr + kw * J->d[2];                          \
                            if (sw == 1)                                                  \
                                for (ow = 0; ow < W; ow++) dst[ow] += wv * dr[ow];        \
                            else                                                          \
                                for (ow = 0; ow < W; ow++) dst[ow * sw] += wv * dr[ow];   \
                        }                                                                 \
                    }                                                                     \
            }                                                                             \
    }                                                                                     \
    for (e = 0; e < S; e++) dx[e] = 0;                                                    \
    vc_fold_##SUF(J, pm, dx);                                                             \
}                                                                                         \
VC_CLONES static void vc_direct_dw_##SUF(const vc_direct *J, Py_ssize_t u, T *pm) { \
    const Py_ssize_t j = u / J->cig, ci = u % J->cig, c = (j / J->cog) * J->cig + ci;     \
    const Py_ssize_t S = J->i[0] * J->i[1] * J->i[2], P = J->o[0] * J->o[1] * J->o[2];    \
    const Py_ssize_t taps = J->k[0] * J->k[1] * J->k[2], W = J->o[2], sw = J->s[2];       \
    const Py_ssize_t PP = J->pp[0] * J->pp[1] * J->pp[2];                                 \
    T *part = pm + PP;          /* taps rows of W partial sums */                         \
    T *dw = (T *)J->dw + u * taps;                                                        \
    Py_ssize_t n, od, oh, kd, kh, kw, ow, t;                                              \
    for (t = 0; t < taps * W; t++) part[t] = 0;                                           \
    for (n = 0; n < J->N; n++) {                                                          \
        const T *dy = (const T *)J->dy + (n * J->cout + j) * P;                           \
        Py_ssize_t done = 0;    /* columns the vector blocks summed */                    \
        vc_pad_##SUF(J, (const T *)J->x + (n * J->C + c) * S, pm);                        \
        VC_DW_VECTORS(SUF, T, V, VH)                                                       \
        if (done < W)                                                                     \
        for (od = 0; od < J->o[0]; od++)                                                  \
            for (oh = 0; oh < J->o[1]; oh++) {                                            \
                const T *restrict dr = dy + (od * J->o[1] + oh) * W;                      \
                for (kd = 0; kd < J->k[0]; kd++)                                          \
                    for (kh = 0; kh < J->k[1]; kh++) {                                    \
                        const T *pr = vc_prow_##SUF(J, pm, od, oh, kd, kh);               \
                        for (kw = 0; kw < J->k[2]; kw++) {                                \
                            T *restrict acc = part + ((kd * J->k[1] + kh) * J->k[2] + kw) * W; \
                            const T *restrict src = pr + kw * J->d[2];                    \
                            if (sw == 1)                                                  \
                                for (ow = done; ow < W; ow++) acc[ow] += dr[ow] * src[ow]; \
                            else                                                          \
                                for (ow = done; ow < W; ow++)                             \
                                    acc[ow] += dr[ow] * src[ow * sw];                     \
                        }                                                                 \
                    }                                                                     \
            }                                                                             \
    }                                                                                     \
    for (t = 0; t < taps; t++) {                                                          \
        T s = 0;                                                                          \
        for (ow = 0; ow < W; ow++) s += part[t * W + ow];                                 \
        dw[t] = s;                                                                        \
    }                                                                                     \
}

VC_DIRECT_KERNELS(f, float, 32, vc_vf, vc_vfh)
VC_DIRECT_KERNELS(d, double, 16, vc_vd, vc_vdh)

/* The pool's entry: one unit of the job's pass, in its float type. */
static void vc_direct_unit(void *ctx, Py_ssize_t u, int slot) {
    const vc_direct *J = (const vc_direct *)ctx;
    if (J->f64) {
        double *pm = (double *)J->scratch + slot * J->scratch_elems;
        if (J->pass == 0) vc_direct_forward_d(J, u, pm);
        else if (J->pass == 1) vc_direct_dx_d(J, u, pm);
        else vc_direct_dw_d(J, u, pm);
    } else {
        float *pm = (float *)J->scratch + slot * J->scratch_elems;
        if (J->pass == 0) vc_direct_forward_f(J, u, pm);
        else if (J->pass == 1) vc_direct_dx_f(J, u, pm);
        else vc_direct_dw_f(J, u, pm);
    }
}

#endif
