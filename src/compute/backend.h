/*
 * backend.h -- the interface every computation of a pass goes through.
 *
 * A backend owns the buffers and the operations of a forward and backward
 * pass, the methods' reductions and diff's linear algebra. The engine
 * (engine.c), the methods (attribute.c) and diff (diff.c) hold only buffer
 * pointers the backend gave them: they never read or write a buffer's
 * contents themselves, but move data with upload / download and compute with
 * the operations below. A device backend keeps its buffers in device memory
 * (pointer arithmetic on a buffer gives a view into it, as with CUDA device
 * pointers); the CPU backend (backend_cpu.c, the reference) gives host
 * memory and calls OpenBLAS and the kernels of kernels.c.
 * tests/compute/test_backend_wrap.c is a second backend: it wraps the CPU one
 * and keeps every buffer unreadable (PROT_NONE) outside its operations, so
 * any host access by the engine, a method or diff crashes the test.
 *
 * Conventions. Every operation takes the backend first. Matrices are
 * row-major F32 buffers; shapes are written (rows, cols); "host" marks an
 * argument in host memory (inputs the caller computed, results it reads).
 * Operations run in the order they are called; a reduction that returns a
 * value to the host completes before it returns. Operations are called from
 * one thread at a time per buffer; diff's workers call them concurrently on
 * disjoint buffers (a backend that cannot run them concurrently serializes).
 * No fast-math: NaN and Inf propagate.
 */
#ifndef LM_BACKEND_H
#define LM_BACKEND_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>

/* Gated-MLP activations. */
enum { LM_GLU_SILU = 0, LM_GLU_GELU, LM_GLU_GELU_GGML /* ggml's fp16 table (llama.cpp agreement) */ };

/* Sums of one weight gradient G against its weight W (grad_reduce). */
enum { GR_ABS_I = 0, GR_SIGNED_I, GR_SQ_I, GR_COUNT };
enum { GR_ABS = 1u << GR_ABS_I, GR_SIGNED = 1u << GR_SIGNED_I, GR_SQ = 1u << GR_SQ_I };

/* Streaming sums of a checkpoint difference (diff_stats). */
typedef struct lm_diff_sums {
    double dd, aa, bb, ab; /* ||D||^2, ||A||^2, ||B||^2, <A, B> in double */
    int64_t cnt;           /* entries with |D| > tol */
} lm_diff_sums;

typedef struct lm_backend lm_backend;
struct lm_backend {
    const char *name;
    void *ctx; /* the implementation's own state */

    /* ---- buffers ------------------------------------------------------ */
    /* A zero-filled buffer of bytes (> 0), or NULL when out of memory. */
    void *(*alloc)(const lm_backend *be, size_t bytes);
    void (*release)(const lm_backend *be, void *buf); /* NULL is a no-op */
    void (*upload)(const lm_backend *be, void *dst, const void *host, size_t bytes);
    void (*download)(const lm_backend *be, void *host, const void *src, size_t bytes);
    void (*copy)(const lm_backend *be, void *dst, const void *src, size_t bytes); /* no overlap */
    void (*zero)(const lm_backend *be, void *dst, size_t bytes);

    /* ---- weights ------------------------------------------------------ */
    /* dst (nr, cols) F32 = rows [r0, r0 + nr) of tensor t dequantized
     * (lm_tensor_read_rows; t's data is host memory, mapped from the file). */
    int (*read_rows)(const lm_backend *be, float *dst, const lm_tensor *t, int64_t r0, int64_t nr, lm_err *err);
    /* dst (n, cols) = rows idx[0..n) (host) of t, each times scale. */
    int (*gather_rows)(const lm_backend *be, float *dst, const lm_tensor *t, const int32_t *idx, int n, float scale,
                       lm_err *err);

    /* ---- products: lda/ldb/ldc are row strides (elements) ------------- */
    /* C (M, N) = beta C + A (M, K) B^T, B (N, K): y = x W^T */
    void (*gemm_nt)(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);
    /* C (M, N) = beta C + A (M, K) B, B (K, N): dx = dy W */
    void (*gemm_nn)(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);
    /* C (M, N) = beta C + A^T B, A (K, M), B (K, N): dW = dy^T x */
    void (*gemm_tn)(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);

    /* ---- products with a weight in the backend's product format ------- */
    /* Optional (NULL in an F32 backend: the engine then multiplies the F32
     * weights). A backend whose products round their inputs (bf16) keeps a
     * copy of each weight W (rows, cols) in its own format, made once when
     * the weight is loaded: wcopy_bytes says how large, wcopy_make fills it. */
    size_t (*wcopy_bytes)(const lm_backend *be, long rows, long cols);
    void (*wcopy_make)(const lm_backend *be, void *dst, const float *W, long rows, long cols);
    /* gemm_nt / gemm_nn with B a weight: B its F32 form (dense: ldb = K for
     * nt, N for nn) or NULL when the caller keeps only the copy, Bw its copy
     * (the same values in the product format). */
    void (*gemm_nt_w)(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B,
                      const void *Bw, float beta, float *C, int ldc);
    void (*gemm_nn_w)(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B,
                      const void *Bw, float beta, float *C, int ldc);

    /* ---- element-wise ------------------------------------------------- */
    /* y (cnt) = a + b (y may be a or b) */
    void (*add)(const lm_backend *be, float *y, const float *a, const float *b, long cnt);
    /* y (cnt) += alpha x */
    void (*axpy)(const lm_backend *be, float *y, float alpha, const float *x, long cnt);
    /* x (cnt) *= s */
    void (*scale)(const lm_backend *be, float *x, float s, long cnt);
    /* every row of y (n, cols) += v (cols) (a bias) */
    void (*add_rows)(const lm_backend *be, float *y, const float *v, int n, int cols);
    /* every row of y (n, cols) := v (cols) */
    void (*set_rows)(const lm_backend *be, float *y, const float *v, int n, int cols);
    /* RMSNorm of the rows of x (n, C): out = x * rstd * w', w' = w or 1 + w
     * (add_one), rstd (n) = 1 / sqrt(mean(x^2) + eps); rstd may be NULL. */
    void (*rmsnorm_fwd)(const lm_backend *be, float *out, float *rstd, const float *x, const float *w, int n, int C,
                        float eps, int add_one);
    /* dx (n, C) += the RMSNorm's input gradient for dout (n, C). */
    void (*rmsnorm_bwd)(const lm_backend *be, float *dx, const float *dout, const float *x, const float *w,
                        const float *rstd, int n, int C, int add_one);
    /* RoPE (rotate-half) in place on x (n, heads * hd) with tables cos, sin
     * (>= n, hd / 2) of positions 0..n-1; bwd applies the inverse rotation. */
    void (*rope_fwd)(const lm_backend *be, float *x, const float *cos_t, const float *sin_t, int n, int heads, int hd);
    void (*rope_bwd)(const lm_backend *be, float *x, const float *cos_t, const float *sin_t, int n, int heads, int hd);
    /* Causal grouped-query attention of one sequence: q (n, H*hd), k, v
     * (n, KV*hd), query head h reads kv head h / (H / KV); window > 0: i sees
     * j with i - j < window. att (n, H*hd), P (H, n, n) the probabilities. */
    void (*attn_fwd)(const lm_backend *be, float *att, float *P, const float *q, const float *k, const float *v, int n,
                     int H, int KV, int hd, float scale, int window);
    /* Floats of attention-backward scratch for sequences up to n. */
    size_t (*attn_scratch_floats)(const lm_backend *be, int n, int H, int hd);
    /* dq (n, H*hd), dk, dv (n, KV*hd) OVERWRITTEN from datt (n, H*hd);
     * scratch (scratch_floats) as attn_scratch_floats gave for some n' >= n. */
    void (*attn_bwd)(const lm_backend *be, float *dq, float *dk, float *dv, const float *datt, const float *P,
                     const float *q, const float *k, const float *v, float *scratch, size_t scratch_floats, int n,
                     int H, int KV, int hd, float scale, int window);
    /* a (cnt) = act(g) * u, act LM_GLU_*; bwd: dg, du OVERWRITTEN from da. */
    void (*glu_fwd)(const lm_backend *be, float *a, const float *g, const float *u, long cnt, int act);
    void (*glu_bwd)(const lm_backend *be, float *dg, float *du, const float *da, const float *g, const float *u,
                    long cnt, int act);
    /* Cross-entropy of logits (c, V) against target (c) int32 for rows with
     * mask (c) uint8 != 0: returns sum -log softmax(logits_i)[target_i]; with
     * grad, logits := d(loss)/d(logits) (zero rows where masked out). */
    double (*xent)(const lm_backend *be, float *logits, const int32_t *target, const uint8_t *mask, int c, int V,
                   int grad);
    /* llama.cpp's rounding of a product's input x (n, cols) in place: kind
     * 1 Q8_0 blocks, 2 Q8_K blocks, 3 fp16 (kernels.h, ggml_act_round). */
    void (*act_round)(const lm_backend *be, float *x, long n, int cols, int kind);

    /* ---- reductions (deterministic: fixed blocks in a fixed order) ---- */
    /* out (host) [GR_ABS_I] = sum |W*G|, [GR_SIGNED_I] = sum W*G,
     * [GR_SQ_I] = sum G^2 over cnt elements, as selected by `which`. */
    void (*grad_reduce)(const lm_backend *be, double out[GR_COUNT], const float *W, const float *G, long cnt,
                        unsigned which);
    /* sum_i a_i b_i in double */
    double (*dot)(const lm_backend *be, const float *a, const float *b, long cnt);
    /* out (host, cols) = sum over rows of x (n, cols)^2, per column, in double */
    void (*col_sumsq)(const lm_backend *be, double *out, const float *x, int n, int cols);
    /* out (host, cols) += each row of y (n, cols), row by row, in double */
    void (*col_sum_acc)(const lm_backend *be, double *out, const float *y, int n, int cols);
    /* sum over rows t of 1 - cos(a_t, b_t), a, b (n, D) */
    double (*cos_dist_sum)(const lm_backend *be, const float *a, const float *b, int n, int D);
    /* sum_rj |W_rj| sqrt(col_j), W (rows, in), col (host, in) doubles */
    double (*abs_colscale_sum)(const lm_backend *be, const float *W, const double *col, int rows, int in);
    /* are all cnt values of x finite? */
    int (*all_finite)(const lm_backend *be, const float *x, long cnt);

    /* ---- diff's linear algebra ---------------------------------------- */
    /* s (host) += the sums of D = d - a over cnt elements (the difference of
     * two F32 values taken exactly in double); then d := D in F32. */
    void (*diff_stats)(const lm_backend *be, lm_diff_sums *s, const float *a, float *d, long cnt, double tol);
    /* n (host) [0] += #{|a - base| > tol}, [1] += #{|b - base| > tol},
     * [2] += #{both} over cnt elements (differences exact in double). */
    void (*mask_overlap)(const lm_backend *be, int64_t n[3], const float *base, const float *a, const float *b,
                         long cnt, double tol);
    /* x (rows, l), rows >= l: replaced by an orthonormal basis of its column
     * space (Householder in double). LM_ENOMEM / LM_EINTERNAL on failure. */
    int (*orthonormalize)(const lm_backend *be, float *x, int64_t rows, int l, lm_err *err);
    /* sv (host, l) = the singular values of z (n, l), largest first (square
     * roots of the eigenvalues of the double Gram z^T z). */
    int (*singular_values)(const lm_backend *be, const float *z, int64_t n, int l, double *sv, lm_err *err);
};

/* The products' profile (lm_product_profile in layermap.h): a backend's
 * products call lm_prof_begin before and lm_prof_end(t0, M, N, K) after. */
double lm_prof_begin(void);
void lm_prof_end(double t0, int M, int N, int K);

/* The CPU backend (OpenBLAS and kernels.c): the reference. */
const lm_backend *lm_backend_cpu(void);

/* OpenBLAS's thread count (the CPU backend's products), get and set. */
int lm_blas_threads(void);
void lm_blas_set_threads(int n);

#endif
