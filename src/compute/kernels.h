/*
 * kernels.h -- the CPU backend's numeric pieces of a transformer block, each
 * a forward / backward pair (llm.c style), and its reductions and diff's
 * linear algebra. Arguments run outputs, inputs, weights, sizes. The engine
 * and the methods reach these only through the backend (backend.h); the
 * products inside attention use the backend they are given.
 * Backward functions accumulate into their d-prefixed outputs (+=) unless
 * stated. All float32, row-major; no fast-math: NaN and Inf propagate.
 */
#ifndef LM_KERNELS_H
#define LM_KERNELS_H

#include "compute/backend.h"

#include <stddef.h>
#include <stdint.h>

/* RMSNorm over rows of C: out = x * rstd * w' with w' = w (or 1 + w when
 * add_one), rstd = 1 / sqrt(mean(x^2) + eps). out (n, C), rstd (n), x (n, C). */
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int C,
                     float eps, int add_one);
/* dx (n, C) += d(out)/dx applied to dout (n, C). */
void rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w,
                      const float *rstd, int n, int C, int add_one);

/* RoPE tables for positions 0..n-1: cos, sin (n, hd/2). freq_i = theta^(-2i/hd),
 * angle = pos / pos_scale * freq_i, with optional Llama-3 frequency scaling
 * (rope_type 2). */
void rope_tables(float *cos_t, float *sin_t, int n, int hd, float theta, int rope_type,
                 float factor, float low_freq_factor, float high_freq_factor, int orig_max_pos);
/* In place on x (n, n_heads * hd), rotate-half convention. */
void rope_forward(float *x, const float *cos_t, const float *sin_t, int n, int n_heads, int hd);
/* In place on dx (n, n_heads * hd): the transpose (inverse) rotation. */
void rope_backward(float *dx, const float *cos_t, const float *sin_t, int n, int n_heads, int hd);

/* Causal grouped-query attention. q (n, H*hd), k, v (n, KV*hd); query head h
 * reads kv head h / (H / KV). window > 0: position i sees j with i - j < window.
 * out att (n, H*hd), P (H, n, n) the softmax probabilities (zeros above the
 * diagonal / outside the window). */
void attention_forward(const lm_backend *be, float *att, float *P, const float *q, const float *k,
                       const float *v, int n, int H, int KV, int hd, float scale, int window);
/* dq (n, H*hd), dk, dv (n, KV*hd) are OVERWRITTEN. datt (n, H*hd) the upstream
 * gradient; scratch of attention_scratch_floats(n, H, hd, threads) floats,
 * threads = the most OpenMP threads a parallel region may have; window as in
 * the forward. Heads run in parallel; the result does not depend on threads. */
size_t attention_scratch_floats(int n, int H, int hd, int threads);
void attention_backward(const lm_backend *be, float *dq, float *dk, float *dv, const float *datt,
                        const float *P, const float *q, const float *k, const float *v,
                        float *scratch, int threads, int n, int H, int KV, int hd, float scale, int window);

/* Gated MLP activation: a = act(g) * u, act = silu (gelu == 0) or gelu-tanh. (n*F elements) */
void glu_forward(float *a, const float *g, const float *u, long count, int gelu);
/* dg, du OVERWRITTEN from da. */
void glu_backward(float *dg, float *du, const float *da, const float *g, const float *u, long count, int gelu);

/* Cross-entropy over a chunk of c rows of logits (c, V): for rows with
 * mask[i] != 0, loss += -log softmax(logits_i)[target[i]]. When grad != 0, the
 * logits are replaced IN PLACE by d(loss)/d(logits) (zero rows for masked-out
 * positions). Returns the summed loss (double). */
double cross_entropy_forward_backward(float *logits, const int32_t *target, const uint8_t *mask,
                                      int c, int V, int grad);

/* The sums of one weight gradient G against its weight W (cnt = out*in
 * elements each) that the weight methods reduce to, selected by the bits of
 * `which`: out[GR_ABS_I] = sum |W*G|, out[GR_SIGNED_I] = sum W*G,
 * out[GR_SQ_I] = sum G^2 (unselected entries 0). Deterministic: fixed blocks
 * summed in a fixed order, whatever the thread count and whatever else is
 * selected, so one sum is bit-identical alone or together with the others. */
/* (GR_* in backend.h) */
void grad_reduce(double out[GR_COUNT], const float *W, const float *G, long cnt, unsigned which);
/* sum_i a_i b_i in double over cnt elements, deterministic as grad_reduce. */
double dot_reduce(const float *a, const float *b, long cnt);

/* Per-column sums of squares of x (n, cols): out[j] = sum_t x[t, j]^2. */
void col_sumsq(double *out, const float *x, int n, int cols);
/* sum_t 1 - cos(a_t, b_t) over the rows of a, b (n, D), in double. */
double cos_dist_sum(const float *a, const float *b, int n, int D);
/* sum_r sum_j |W_rj| sqrt(col_j), W (rows, in); rows summed in order. */
double abs_colscale_sum(const float *W, const double *col, int rows, int in);

/* diff: the streaming sums of D = d - a (exact in double), d := D (F32). */
void diff_block_stats(lm_diff_sums *s, const float *a, float *d, long cnt, double tol);
/* diff: counts of the update masks of a and b against base, and of both. */
void mask_overlap_counts(int64_t n[3], const float *base, const float *a, const float *b, long cnt, double tol);
/* diff: x (rows, l) := an orthonormal basis of its columns (LAPACK LQ in double). */
int orthonormalize(float *x, int64_t rows, int l, lm_err *err);
/* diff: sv (l) = singular values of z (n, l), largest first (double Gram, dsyevd). */
int singular_values(const float *z, int64_t n, int l, double *sv, lm_err *err);

/* llama.cpp (ggml) arithmetic, for agreement checks: the activation row a
 * quantized matrix product sees in ggml. kind: 0 none, 1 Q8_0 blocks of 32
 * (fp16 scale; also what Q8_1 yields), 2 Q8_K blocks of 256 (float scale),
 * 3 fp16. In place on x (n, cols). */
void ggml_act_round(float *x, long n, int cols, int kind);
/* GELU-tanh gate as ggml's CPU computes it (fp16 lookup table). */
void glu_forward_ggml(float *a, const float *g, const float *u, long count);
/* The activation rounding ggml applies before a product with a weight of dtype t. */
int ggml_act_kind(int dtype);

#endif
