/* Several versions of a loop-heavy kernel, one per vector extension: the wheel targets
 * the baseline x86-64 (SSE2), and GCC's target_clones adds AVX2 and AVX-512 versions of
 * a function, the best one chosen when the library loads (through an ifunc: glibc on
 * Linux). Elsewhere (other compilers, other platforms, musl) the one baseline version.
 * GCC in C11 mode without -ffast-math contracts no product and sum into an FMA, so every
 * version gives the same bits (clang's default, -ffp-contract=on, may fuse them: its
 * builds are deterministic, their bits its own). Used by _winograd.h and _direct.h. */
#ifndef VECCONV_SIMD_H
#define VECCONV_SIMD_H

#include <stddef.h>
#include <string.h>         /* (a libc header: __GLIBC__ is defined by now on glibc) */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && defined(__GLIBC__)
#define VC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VC_CLONES
#endif

/* Registers for a block of outputs summed over several terms: GCC's and clang's vector
 * types, 64 bytes (one AVX-512 register, two AVX2 ones, four SSE2 ones: the compiler
 * lowers them per version). Elsewhere the kernels keep their plain loops. */
#if defined(__GNUC__)
#define VC_VECTORS 1
typedef float vc_vf __attribute__((vector_size(64)));
typedef double vc_vd __attribute__((vector_size(64)));
typedef float vc_vfh __attribute__((vector_size(32)));     /* half of one: rows' rests */
typedef double vc_vdh __attribute__((vector_size(32)));
#define VC_INLINE static inline __attribute__((always_inline))
#else
#define VC_INLINE static inline
#endif

#endif
