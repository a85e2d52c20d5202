/*
 * dequant.c -- GGUF block formats and their dequantization to F32, and
 * lm_tensor_read_rows (the one way the rest of layermap reads a weight).
 *
 * Layout of the file:
 *   1. type traits (name, block size, bytes per block) and tensor helpers
 *   2. half-precision conversion (branch-free, vectorizable)
 *   3. block structs, each size fixed by a static_assert (ggml-common.h)
 *   4. dequantizers, grouped by bit width, each exactly ggml's
 *      dequantize_row_<type> (ggml-quants.c): same formulas, same float
 *      operation order, so results are bit-identical to ggml and to the
 *      gguf Python package
 *   5. lm_tensor_read_rows with the q/k RoPE un-permutation
 *
 * Speed: this is the hot path when a multi-GB model is read. Every
 * dequantizer is a loop over blocks with fixed-trip inner loops marked
 * `omp simd` (the Makefile builds with -fopenmp, which enables the pragma
 * without starting threads), so gcc -O2 and clang vectorize them. No
 * per-element function calls; F16 goes through bit operations, not a table.
 *
 * Alignment: GGUF lets `general.alignment` be 1 and safetensors' data section
 * starts at 8 + header length, so a row may begin at any address. The block
 * structs are therefore packed (alignment 1) and plain floats are read with
 * memcpy; nothing here assumes more than byte alignment of the source.
 */
#include "model/dequant.h"

#include <assert.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "layermap reads little-endian block formats with direct loads; big-endian hosts are not supported"
#endif

/* ggml computes `d * q - m` as two roundings; clang would fuse it into an FMA
 * on FMA-capable targets (-ffp-contract=on), breaking bit-exactness. gcc in
 * ISO C mode already has contraction off (and does not know this pragma). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define LM_SIMD _Pragma("omp simd")

/* On x86-64 Linux every dequantizer is also compiled for AVX2 and picked at
 * load time (an ifunc), doubling the vector width over the x86-64 baseline
 * the library is built for. AVX2 does not imply FMA, so results stay
 * bit-identical. Define LM_NO_CLONES to build the baseline only. */
#if defined(__x86_64__) && defined(__gnu_linux__) && !defined(LM_NO_CLONES) && \
    (defined(__clang__) ? __clang_major__ >= 14 : __GNUC__ >= 6)
#define LM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LM_CLONES
#endif
#define LM_PACKED __attribute__((packed))

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK4_NL 32
#define QK_K 256
#define K_SCALE_SIZE 12

/* ------------------------------------------------------------------------ */
/* Half precision                                                            */
/* ------------------------------------------------------------------------ */

/* The float with bit pattern u. */
static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The bit pattern of f. */
static inline uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* IEEE binary16 -> binary32, exact for every input (subnormals, Inf, NaN
 * payloads kept). Branch-free, with selects written as masks (gcc does not
 * if-convert ternaries here), so that a loop over it vectorizes:
 *   normal:    rebias the exponent by 127-15 and widen the mantissa
 *   Inf/NaN:   rebias once more, to exponent 255; the payload is kept
 *   subnormal: renormalise by the float unit: (2^-14 + m*2^-24) - 2^-14,
 *              exact (Sterbenz), and 0 -> +0 */
static inline float f16_to_f32(uint16_t h) {
    const uint32_t exp_mask = 0x7c00u << 13;
    uint32_t o = (uint32_t)(h & 0x7fff) << 13;
    const uint32_t exp = o & exp_mask;
    o += (uint32_t)(127 - 15) << 23;
    const uint32_t is_inf = 0u - (uint32_t)(exp == exp_mask);
    const uint32_t is_sub = 0u - (uint32_t)(exp == 0);
    o += is_inf & ((uint32_t)(128 - 16) << 23);
    const uint32_t sub = f32_to_bits(f32_from_bits(o + (1u << 23)) - f32_from_bits(113u << 23));
    o = (o & ~is_sub) | (sub & is_sub);
    return f32_from_bits(o | (uint32_t)(h & 0x8000) << 16);
}

/* ------------------------------------------------------------------------ */
/* Block structs (ggml-common.h). Packed: see "Alignment" above.              */
/* ------------------------------------------------------------------------ */

typedef struct LM_PACKED {
    uint16_t d;             /* delta (f16) */
    uint8_t qs[QK4_0 / 2];  /* nibbles: low = element j, high = element j+16 */
} block_q4_0;
static_assert(sizeof(block_q4_0) == 2 + QK4_0 / 2, "wrong q4_0 block size");

typedef struct LM_PACKED {
    uint16_t d;             /* delta (f16) */
    uint16_t m;             /* min (f16) */
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
static_assert(sizeof(block_q4_1) == 4 + QK4_1 / 2, "wrong q4_1 block size");

typedef struct LM_PACKED {
    uint16_t d;
    uint8_t qh[4];          /* 5th bit of each element (u32, little-endian) */
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
static_assert(sizeof(block_q5_0) == 2 + 4 + QK5_0 / 2, "wrong q5_0 block size");

typedef struct LM_PACKED {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
static_assert(sizeof(block_q5_1) == 4 + 4 + QK5_1 / 2, "wrong q5_1 block size");

typedef struct LM_PACKED {
    uint16_t d;
    int8_t qs[QK8_0];
} block_q8_0;
static_assert(sizeof(block_q8_0) == 2 + QK8_0, "wrong q8_0 block size");

/* 16 sub-blocks of 16: 4-bit scale (low) and 4-bit min (high) per sub-block. */
typedef struct LM_PACKED {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];   /* 2-bit quants */
    uint16_t d;             /* super-block scale for the scales */
    uint16_t dmin;          /* super-block scale for the mins */
} block_q2_k;
static_assert(sizeof(block_q2_k) == 2 * 2 + QK_K / 16 + QK_K / 4, "wrong q2_K block size");

/* 16 sub-blocks of 16 with 6-bit scales packed into 12 bytes. */
typedef struct LM_PACKED {
    uint8_t hmask[QK_K / 8]; /* high bit of each quant (set: no -4 offset) */
    uint8_t qs[QK_K / 4];    /* low 2 bits */
    uint8_t scales[12];
    uint16_t d;
} block_q3_k;
static_assert(sizeof(block_q3_k) == 2 + QK_K / 4 + QK_K / 8 + 12, "wrong q3_K block size");

/* 8 sub-blocks of 32 with 6-bit scales and mins packed into 12 bytes. */
typedef struct LM_PACKED {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_k;
static_assert(sizeof(block_q4_k) == 2 * 2 + K_SCALE_SIZE + QK_K / 2, "wrong q4_K block size");

typedef struct LM_PACKED {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_k;
static_assert(sizeof(block_q5_k) == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8, "wrong q5_K block size");

/* 16 sub-blocks of 16 with 8-bit signed scales. */
typedef struct LM_PACKED {
    uint8_t ql[QK_K / 2];   /* low 4 bits */
    uint8_t qh[QK_K / 4];   /* high 2 bits */
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_k;
static_assert(sizeof(block_q6_k) == 2 + QK_K / 16 + 3 * QK_K / 4, "wrong q6_K block size");

typedef struct LM_PACKED {
    uint16_t d;
    uint8_t qs[QK4_NL / 2]; /* indices into kvalues_iq4nl */
} block_iq4_nl;
static_assert(sizeof(block_iq4_nl) == 2 + QK4_NL / 2, "wrong iq4_nl block size");

typedef struct LM_PACKED {
    uint16_t d;
    uint16_t scales_h;       /* 2 high bits of each of the 8 scales */
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;
static_assert(sizeof(block_iq4_xs) == 4 + QK_K / 64 + QK_K / 2, "wrong iq4_xs block size");

/* bit32[j] = 1 << j: testing qh & bit32[j] vectorizes on SSE2, which has no
 * per-lane variable shift for (qh >> j). */
static const uint32_t bit32[32] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31,
};

/* The non-linear 4-bit grid of IQ4_NL / IQ4_XS (ggml-common.h). */
static const int8_t kvalues_iq4nl[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
};

/* ------------------------------------------------------------------------ */
/* Dequantizers: plain floats                                                */
/* ------------------------------------------------------------------------ */

/* F32: a copy (memcpy, as the source may be unaligned). */
static void dequant_f32(const void *restrict vx, float *restrict y, int64_t k) {
    memcpy(y, vx, (size_t)k * sizeof(float));
}

/* F16 -> F32 elementwise. */
LM_CLONES static void dequant_f16(const void *restrict vx, float *restrict y, int64_t k) {
    const uint8_t *x = vx;
    LM_SIMD
    for (int64_t i = 0; i < k; i++) {
        uint16_t h;
        memcpy(&h, x + 2 * i, 2);
        y[i] = f16_to_f32(h);
    }
}

/* BF16 -> F32: the 16 bits are the top half of the float. */
LM_CLONES static void dequant_bf16(const void *restrict vx, float *restrict y, int64_t k) {
    const uint8_t *x = vx;
    LM_SIMD
    for (int64_t i = 0; i < k; i++) {
        uint16_t h;
        memcpy(&h, x + 2 * i, 2);
        y[i] = f32_from_bits((uint32_t)h << 16);
    }
}

/* ------------------------------------------------------------------------ */
/* Dequantizers: 4 and 5 bits, blocks of 32                                  */
/* ------------------------------------------------------------------------ */

/* Q4_0: y = (q - 8) * d. */
LM_CLONES static void dequant_q4_0(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q4_0 *x = vx;
    for (int64_t i = 0; i < k / QK4_0; i++, y += QK4_0) {
        const float d = f16_to_f32(x[i].d);
        const uint8_t *qs = x[i].qs;
        LM_SIMD
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = (float)((qs[j] & 0x0F) - 8) * d;
            y[j + QK4_0 / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* Q4_1: y = q * d + m. */
LM_CLONES static void dequant_q4_1(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q4_1 *x = vx;
    for (int64_t i = 0; i < k / QK4_1; i++, y += QK4_1) {
        const float d = f16_to_f32(x[i].d);
        const float m = f16_to_f32(x[i].m);
        const uint8_t *qs = x[i].qs;
        LM_SIMD
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = (float)(qs[j] & 0x0F) * d + m;
            y[j + QK4_1 / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* Q5_0: y = (q - 16) * d, the 5th bit of element j is bit j of qh. */
LM_CLONES static void dequant_q5_0(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q5_0 *x = vx;
    for (int64_t i = 0; i < k / QK5_0; i++, y += QK5_0) {
        const float d = f16_to_f32(x[i].d);
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        const uint8_t *qs = x[i].qs;
        LM_SIMD
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int xh0 = (qh & bit32[j]) ? 0x10 : 0;       /* ggml: ((qh >> j) << 4) & 0x10 */
            const int xh1 = (qh & bit32[j + 16]) ? 0x10 : 0;  /* ggml: (qh >> (j + 12)) & 0x10 */
            y[j] = (float)(((qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + QK5_0 / 2] = (float)(((qs[j] >> 4) | xh1) - 16) * d;
        }
    }
}

/* Q5_1: y = q * d + m with 5-bit q. */
LM_CLONES static void dequant_q5_1(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q5_1 *x = vx;
    for (int64_t i = 0; i < k / QK5_1; i++, y += QK5_1) {
        const float d = f16_to_f32(x[i].d);
        const float m = f16_to_f32(x[i].m);
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        const uint8_t *qs = x[i].qs;
        LM_SIMD
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int xh0 = (qh & bit32[j]) ? 0x10 : 0;       /* ggml: ((qh >> j) << 4) & 0x10 */
            const int xh1 = (qh & bit32[j + 16]) ? 0x10 : 0;  /* ggml: (qh >> (j + 12)) & 0x10 */
            y[j] = (float)((qs[j] & 0x0F) | xh0) * d + m;
            y[j + QK5_1 / 2] = (float)((qs[j] >> 4) | xh1) * d + m;
        }
    }
}

/* IQ4_NL: y = d * kvalues[q]. */
LM_CLONES static void dequant_iq4_nl(const void *restrict vx, float *restrict y, int64_t k) {
    const block_iq4_nl *x = vx;
    for (int64_t i = 0; i < k / QK4_NL; i++, y += QK4_NL) {
        const float d = f16_to_f32(x[i].d);
        const uint8_t *qs = x[i].qs;
        LM_SIMD
        for (int j = 0; j < QK4_NL / 2; j++) {
            y[j] = d * (float)kvalues_iq4nl[qs[j] & 0x0F];
            y[j + QK4_NL / 2] = d * (float)kvalues_iq4nl[qs[j] >> 4];
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Dequantizers: 8 bits                                                      */
/* ------------------------------------------------------------------------ */

/* Q8_0: y = q * d. */
LM_CLONES static void dequant_q8_0(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q8_0 *x = vx;
    for (int64_t i = 0; i < k / QK8_0; i++, y += QK8_0) {
        const float d = f16_to_f32(x[i].d);
        const int8_t *qs = x[i].qs;
        LM_SIMD
        for (int j = 0; j < QK8_0; j++) y[j] = (float)qs[j] * d;
    }
}

/* ------------------------------------------------------------------------ */
/* Dequantizers: k-quants, super-blocks of 256                               */
/* ------------------------------------------------------------------------ */

/* Q2_K: 16 groups of 16, y = d*sc * q - dmin*m; q is 2 bits of qs, taken at
 * shift 0,2,4,6 over 32 bytes per 128 elements. */
LM_CLONES static void dequant_q2_k(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q2_k *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = f16_to_f32(x[i].d);
        const float dmin = f16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++, y += 16) {
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (float)(sc & 0x0F);
                    const float ml = dmin * (float)(sc >> 4);
                    const uint8_t *qq = q + 16 * half;
                    LM_SIMD
                    for (int l = 0; l < 16; l++) y[l] = dl * (float)((qq[l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* Q3_K: 16 groups of 16 with signed 6-bit scales (stored +32), y = d*(s-32) *
 * (q2 - (hmask bit ? 0 : 4)). */
LM_CLONES static void dequant_q3_k(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q3_k *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d_all = f16_to_f32(x[i].d);
        /* unpack the 16 6-bit scales: low 4 bits from bytes 0..7 (low then
         * high nibbles), high 2 bits from bytes 8..11 */
        const uint8_t *s = x[i].scales;
        int8_t scales[16];
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? (s[j] & 0x0F) : (s[j - 8] >> 4);
            const int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            scales[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        const uint8_t *q = x[i].qs;
        const uint8_t *hm = x[i].hmask;
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1)) {
                for (int half = 0; half < 2; half++, y += 16) {
                    const float dl = d_all * (float)scales[is++];
                    const uint8_t *qq = q + 16 * half;
                    const uint8_t *hh = hm + 16 * half;
                    LM_SIMD
                    for (int l = 0; l < 16; l++)
                        y[l] = dl * (float)(((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4));
                }
            }
        }
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block
 * (ggml's get_scale_min_k4). */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K: 8 sub-blocks of 32, y = d*sc * q - dmin*m; 32 bytes of qs hold two
 * sub-blocks (low nibbles, then high nibbles). */
LM_CLONES static void dequant_q4_k(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q4_k *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = f16_to_f32(x[i].d);
        const float min = f16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            LM_SIMD
            for (int l = 0; l < 32; l++) {
                y[l] = d1 * (float)(q[l] & 0x0F) - m1;
                y[l + 32] = d2 * (float)(q[l] >> 4) - m2;
            }
        }
    }
}

/* Q5_K: Q4_K plus a 5th bit; bit j of qh[l] belongs to sub-block j. */
LM_CLONES static void dequant_q5_k(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q5_k *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = f16_to_f32(x[i].d);
        const float min = f16_to_f32(x[i].dmin);
        const uint8_t *ql = x[i].qs;
        const uint8_t *qh = x[i].qh;
        for (int is = 0; is < 8; is += 2, ql += 32, y += 64) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            const uint8_t u1 = (uint8_t)(1u << is), u2 = (uint8_t)(2u << is);
            LM_SIMD
            for (int l = 0; l < 32; l++) {
                y[l] = d1 * (float)((ql[l] & 0x0F) + ((qh[l] & u1) ? 16 : 0)) - m1;
                y[l + 32] = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
            }
        }
    }
}

/* Q6_K: 16 groups of 16, y = d * sc * (q - 32), q = 4 low bits from ql and 2
 * high bits from qh; 128 elements use 64 bytes of ql and 32 of qh. */
LM_CLONES static void dequant_q6_k(const void *restrict vx, float *restrict y, int64_t k) {
    const block_q6_k *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = f16_to_f32(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int h = 0; h < 2; h++) { /* l in [16h, 16h+16): scale index is = h */
                const float s0 = (float)sc[h + 0], s2 = (float)sc[h + 2];
                const float s4 = (float)sc[h + 4], s6 = (float)sc[h + 6];
                LM_SIMD
                for (int l = 16 * h; l < 16 * h + 16; l++) {
                    const int q1 = (int)((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int q2 = (int)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l + 0] = d * s0 * (float)q1;
                    y[l + 32] = d * s2 * (float)q2;
                    y[l + 64] = d * s4 * (float)q3;
                    y[l + 96] = d * s6 * (float)q4;
                }
            }
        }
    }
}

/* IQ4_XS: 8 sub-blocks of 32 with 6-bit scales (stored +32), y = d*(s-32) *
 * kvalues[q]. */
LM_CLONES static void dequant_iq4_xs(const void *restrict vx, float *restrict y, int64_t k) {
    const block_iq4_xs *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = f16_to_f32(x[i].d);
        const uint16_t scales_h = x[i].scales_h;
        const uint8_t *qs = x[i].qs;
        for (int ib = 0; ib < QK_K / 32; ib++, qs += 16, y += 32) {
            const int ls = ((x[i].scales_l[ib / 2] >> 4 * (ib % 2)) & 0x0F) | (((scales_h >> 2 * ib) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            LM_SIMD
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)kvalues_iq4nl[qs[j] & 0x0F];
                y[j + 16] = dl * (float)kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Type traits                                                               */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int blck;      /* elements per block */
    size_t bytes;  /* bytes per block */
    lm_dequant_fn fn;
} traits[LM_DT_COUNT] = {
    [LM_DT_F32] = {"F32", 1, 4, dequant_f32},
    [LM_DT_F16] = {"F16", 1, 2, dequant_f16},
    [LM_DT_BF16] = {"BF16", 1, 2, dequant_bf16},
    [LM_DT_Q4_0] = {"Q4_0", QK4_0, sizeof(block_q4_0), dequant_q4_0},
    [LM_DT_Q4_1] = {"Q4_1", QK4_1, sizeof(block_q4_1), dequant_q4_1},
    [LM_DT_Q5_0] = {"Q5_0", QK5_0, sizeof(block_q5_0), dequant_q5_0},
    [LM_DT_Q5_1] = {"Q5_1", QK5_1, sizeof(block_q5_1), dequant_q5_1},
    [LM_DT_Q8_0] = {"Q8_0", QK8_0, sizeof(block_q8_0), dequant_q8_0},
    [LM_DT_Q2_K] = {"Q2_K", QK_K, sizeof(block_q2_k), dequant_q2_k},
    [LM_DT_Q3_K] = {"Q3_K", QK_K, sizeof(block_q3_k), dequant_q3_k},
    [LM_DT_Q4_K] = {"Q4_K", QK_K, sizeof(block_q4_k), dequant_q4_k},
    [LM_DT_Q5_K] = {"Q5_K", QK_K, sizeof(block_q5_k), dequant_q5_k},
    [LM_DT_Q6_K] = {"Q6_K", QK_K, sizeof(block_q6_k), dequant_q6_k},
    [LM_DT_IQ4_NL] = {"IQ4_NL", QK4_NL, sizeof(block_iq4_nl), dequant_iq4_nl},
    [LM_DT_IQ4_XS] = {"IQ4_XS", QK_K, sizeof(block_iq4_xs), dequant_iq4_xs},
};

/* Whether t is a dtype with traits (not LM_DT_COUNT or garbage). */
static inline int dtype_ok(lm_dtype t) { return (unsigned)t < (unsigned)LM_DT_COUNT; }

/* Name of a dtype ("Q4_K"); "unsupported" for LM_DT_COUNT or anything else. */
const char *lm_dtype_name(lm_dtype t) { return dtype_ok(t) ? traits[t].name : "unsupported"; }

/* Elements per block (1 for F32/F16/BF16); 0 for an invalid dtype. */
int lm_dtype_block_elems(lm_dtype t) { return dtype_ok(t) ? traits[t].blck : 0; }

/* Bytes per block; 0 for an invalid dtype. */
size_t lm_dtype_block_bytes(lm_dtype t) { return dtype_ok(t) ? traits[t].bytes : 0; }

/* The row dequantizer of a dtype; NULL for an invalid dtype. */
lm_dequant_fn lm_dequant_fn_for(lm_dtype t) { return dtype_ok(t) ? traits[t].fn : NULL; }

/* Bytes of one row of cols elements; 0 if cols is negative, not a multiple of
 * the block size, the dtype is invalid, or the size overflows. */
size_t lm_dtype_row_bytes(lm_dtype t, int64_t cols) {
    if (!dtype_ok(t) || cols < 0 || cols % traits[t].blck) return 0;
    uint64_t n;
    if (lm_mul_overflow((uint64_t)(cols / traits[t].blck), traits[t].bytes, &n) || n > SIZE_MAX) return 0;
    return (size_t)n;
}

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */
/* ------------------------------------------------------------------------ */

/* Number of elements (product of the shape; loaders have checked it fits). */
int64_t lm_tensor_nelem(const lm_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim && i < 4; i++) n *= t->shape[i];
    return n;
}

/* Columns: the contiguous (last) axis. */
int64_t lm_tensor_cols(const lm_tensor *t) { return t->ndim >= 1 && t->ndim <= 4 ? t->shape[t->ndim - 1] : 0; }

/* Rows: every axis but the last, flattened; 0 for an empty tensor. */
int64_t lm_tensor_rows(const lm_tensor *t) {
    int64_t c = lm_tensor_cols(t);
    return c > 0 ? lm_tensor_nelem(t) / c : 0;
}

/* The file row that holds HF row r of a q/k weight stored in GGUF/Meta RoPE
 * order: HF row h*hd + a*(hd/2) + i is file row h*hd + 2*i + a. */
static inline int64_t qk_file_row(int64_t r, int64_t hd) {
    const int64_t h = r / hd, rem = r % hd, half = hd / 2;
    const int64_t a = rem / half, i = rem % half;
    return h * hd + 2 * i + a;
}

/* Dequantize rows [row0, row0+nrows) into out (nrows x cols) in HF order.
 *
 * Un-permutation: with qk_perm_heads = H > 0 a 2-D+ tensor's rows split into
 * H heads of hd = rows/H rows each (hd even) and every output row is fetched
 * from qk_file_row(). A 1-D tensor (a q/k bias) is one row whose elements are
 * permuted the same way; it is dequantized whole and reordered per head.
 *
 * Errors: LM_EARG (bad range or tensor struct), LM_EUNSUPPORTED (a GGUF
 * tensor of a ggml type layermap does not decode; the file's name for the
 * type is in the message), LM_ESHAPE (rows do not split into H even heads),
 * LM_ECORRUPT (data too short for the shape, row not whole blocks),
 * LM_ENOMEM (1-D un-permutation only). */
int lm_tensor_read_rows(const lm_tensor *t, int64_t row0, int64_t nrows, float *out, lm_err *err) {
    if (!t) return lm_fail(err, LM_EARG, "lm_tensor_read_rows: no tensor");
    const char *path = t->path ? t->path : "(memory)";
    if (!dtype_ok(t->dtype))
        return lm_fail(err, LM_EUNSUPPORTED, "%s: tensor '%s': unsupported type %s", path, t->name,
                       t->file_type[0] ? t->file_type : "(unknown)");
    if (t->ndim < 1 || t->ndim > 4)
        return lm_fail(err, LM_EARG, "%s: tensor '%s': ndim %d (expected 1..4)", path, t->name, t->ndim);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return lm_fail(err, LM_EARG, "%s: tensor '%s': shape[%d] = %lld is negative", path, t->name, i,
                           (long long)t->shape[i]);
    const int64_t cols = lm_tensor_cols(t), rows = lm_tensor_rows(t);
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return lm_fail(err, LM_EARG, "%s: tensor '%s': rows [%lld..%lld) out of range (tensor has %lld rows)",
                       path, t->name, (long long)row0, (long long)row0 + (long long)nrows, (long long)rows);
    if (nrows == 0 || cols == 0) return LM_OK;
    if (!out) return lm_fail(err, LM_EARG, "%s: tensor '%s': no output buffer", path, t->name);

    const size_t rb = lm_dtype_row_bytes(t->dtype, cols);
    if (rb == 0)
        return LM_CORRUPT(err, "%s: tensor '%s': row of %lld elements is not a whole number of %s blocks of %d",
                          path, t->name, (long long)cols, traits[t->dtype].name, traits[t->dtype].blck);
    uint64_t need;
    if (lm_mul_overflow((uint64_t)rows, rb, &need) || need > t->nbytes || !t->data)
        return LM_CORRUPT(err, "%s: tensor '%s': data holds %zu bytes, shape needs %lld rows of %zu", path,
                          t->name, t->nbytes, (long long)rows, rb);

    const lm_dequant_fn fn = traits[t->dtype].fn;
    const int64_t H = t->qk_perm_heads;
    if (H <= 0) { /* contiguous rows: one call */
        fn(t->data + (size_t)row0 * rb, out, nrows * cols);
        return LM_OK;
    }

    if (t->ndim == 1) { /* a bias: permute the elements of its one row */
        if (cols % H || (cols / H) % 2)
            return lm_fail(err, LM_ESHAPE, "%s: tensor '%s': %lld elements do not split into %lld heads of even size",
                           path, t->name, (long long)cols, (long long)H);
        const int64_t hd = cols / H;
        float *tmp = lm_malloc((size_t)cols * sizeof(float));
        if (!tmp) return lm_nomem(err, (size_t)cols * sizeof(float), "q/k un-permutation");
        fn(t->data, tmp, cols);
        for (int64_t r = 0; r < cols; r++) out[r] = tmp[qk_file_row(r, hd)];
        lm_free(tmp);
        return LM_OK;
    }

    if (rows % H || (rows / H) % 2)
        return lm_fail(err, LM_ESHAPE, "%s: tensor '%s': %lld rows do not split into %lld heads of even size", path,
                       t->name, (long long)rows, (long long)H);
    const int64_t hd = rows / H;
    for (int64_t r = row0; r < row0 + nrows; r++)
        fn(t->data + (size_t)qk_file_row(r, hd) * rb, out + (size_t)(r - row0) * (size_t)cols, cols);
    return LM_OK;
}
