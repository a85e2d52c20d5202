/*
 * kernels.c -- forward/backward pairs of a transformer block's numeric pieces.
 * See kernels.h for shapes. Loops over rows run on OpenMP threads; matrix
 * products go through the backend.
 */
#include "compute/kernels.h"

#include "layermap.h"

#include <omp.h>

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* RMSNorm                                                                   */
/* ------------------------------------------------------------------------ */

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int C,
                     float eps, int add_one) {
    const float off = add_one ? 1.0f : 0.0f;
#pragma omp parallel for schedule(static) if (n * (long)C > 32768)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (long)i * C;
        float *oi = out + (long)i * C;
        double ss = 0.0;
        for (int j = 0; j < C; j++) ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int j = 0; j < C; j++) oi[j] = xi[j] * r * (w[j] + off);
        if (rstd) rstd[i] = r;
    }
}

void rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w,
                      const float *rstd, int n, int C, int add_one) {
    const float off = add_one ? 1.0f : 0.0f;
#pragma omp parallel for schedule(static) if (n * (long)C > 32768)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (long)i * C, *di = dout + (long)i * C;
        float *dxi = dx + (long)i * C;
        float r = rstd[i];
        double dot = 0.0; /* sum_j dout_j w'_j x_j */
        for (int j = 0; j < C; j++) dot += (double)di[j] * (w[j] + off) * xi[j];
        float c = (float)(dot * r * r * r / C);
        for (int j = 0; j < C; j++) dxi[j] += di[j] * (w[j] + off) * r - xi[j] * c;
    }
}

/* ------------------------------------------------------------------------ */
/* RoPE (rotate-half)                                                        */
/* ------------------------------------------------------------------------ */

void rope_tables(float *cos_t, float *sin_t, int n, int hd, float theta, int rope_type,
                 float factor, float low_freq_factor, float high_freq_factor, int orig_max_pos) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double freq = pow((double)theta, -2.0 * i / hd);
        double pos_div = 1.0;
        if (rope_type == 1 && factor > 0) pos_div = factor;
        if (rope_type == 2 && factor > 0) { /* Llama 3 frequency-dependent scaling */
            double low_wl = orig_max_pos / low_freq_factor;
            double high_wl = orig_max_pos / high_freq_factor;
            double wl = 2.0 * M_PI / freq;
            if (wl > low_wl) {
                freq = freq / factor;
            } else if (wl >= high_wl) {
                double s = (orig_max_pos / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                freq = (1.0 - s) * freq / factor + s * freq;
            }
        }
        for (int t = 0; t < n; t++) {
            double a = (double)t / pos_div * freq;
            cos_t[(long)t * half + i] = (float)cos(a);
            sin_t[(long)t * half + i] = (float)sin(a);
        }
    }
}

void rope_forward(float *x, const float *cos_t, const float *sin_t, int n, int n_heads, int hd) {
    int half = hd / 2;
#pragma omp parallel for schedule(static) if (n * (long)n_heads * hd > 32768)
    for (int t = 0; t < n; t++) {
        const float *c = cos_t + (long)t * half, *s = sin_t + (long)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((long)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c[i] - x2 * s[i];
                v[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int n, int n_heads, int hd) {
    int half = hd / 2;
#pragma omp parallel for schedule(static) if (n * (long)n_heads * hd > 32768)
    for (int t = 0; t < n; t++) {
        const float *c = cos_t + (long)t * half, *s = sin_t + (long)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = dx + ((long)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float d1 = v[i], d2 = v[i + half];
                v[i] = d1 * c[i] + d2 * s[i];
                v[i + half] = d2 * c[i] - d1 * s[i];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Attention                                                                 */
/* ------------------------------------------------------------------------ */

/* First visible key of query row i. */
static inline int first_key(int i, int window) { return window > 0 && i - window + 1 > 0 ? i - window + 1 : 0; }

/* Query rows are processed in blocks of ATT_BLOCK: block [i0, i1) only needs
 * keys [first_key(i0), i1), so the products skip most of the masked half. */
#define ATT_BLOCK 128

void attention_forward(const lm_backend *be, float *att, float *P, const float *q, const float *k,
                       const float *v, int n, int H, int KV, int hd, float scale, int window) {
    int qs = H * hd, ks = KV * hd, group = H / KV;
    /* heads in parallel, each on one thread with its own slice of P and
     * columns of att (the BLAS calls inside run single-threaded) */
#pragma omp parallel for schedule(dynamic, 1) if (H > 1 && (long)n * n * hd > 65536)
    for (int h = 0; h < H; h++) {
        int g = h / group;
        float *Ph = P + (long)h * n * n;
        for (int i0 = 0; i0 < n; i0 += ATT_BLOCK) {
            int i1 = i0 + ATT_BLOCK < n ? i0 + ATT_BLOCK : n, j0 = first_key(i0, window);
            /* S[i0:i1, j0:i1] = Q_h K_g^T */
            be->gemm_nt(be, i1 - i0, i1 - j0, hd, q + (long)i0 * qs + (long)h * hd, qs, k + (long)j0 * ks + (long)g * hd,
                        ks, 0.0f, Ph + (long)i0 * n + j0, n);
            for (int i = i0; i < i1; i++) {
                float *row = Ph + (long)i * n;
                int jf = first_key(i, window);
                float mx = -INFINITY;
                for (int j = jf; j <= i; j++) {
                    row[j] *= scale;
                    if (row[j] > mx) mx = row[j];
                }
                double sum = 0.0;
                for (int j = jf; j <= i; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < jf; j++) row[j] = 0.0f;
                for (int j = jf; j <= i; j++) row[j] *= inv;
                for (int j = i + 1; j < n; j++) row[j] = 0.0f;
            }
            /* att_h[i0:i1] = P[i0:i1, j0:i1] V_g[j0:i1] */
            be->gemm_nn(be, i1 - i0, hd, i1 - j0, Ph + (long)i0 * n + j0, n, v + (long)j0 * ks + (long)g * hd, ks, 0.0f,
                        att + (long)i0 * qs + (long)h * hd, qs);
        }
    }
}

size_t attention_scratch_floats(int n, int H, int hd, int threads) {
    return (size_t)threads * n * n + 2 * (size_t)H * n * hd;
}

void attention_backward(const lm_backend *be, float *dq, float *dk, float *dv, const float *datt,
                        const float *P, const float *q, const float *k, const float *v,
                        float *scratch, int threads, int n, int H, int KV, int hd, float scale, int window) {
    int qs = H * hd, ks = KV * hd, group = H / KV;
    /* per-head dK/dV contributions (n, hd) each, summed over a group's heads
     * afterwards in head order: the result does not depend on the threads */
    float *dk_h = scratch + (size_t)threads * n * n, *dv_h = dk_h + (size_t)H * n * hd;
    int par = H > 1 && (long)n * n * hd > 65536 && omp_get_max_threads() <= threads;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int h = 0; h < H; h++) {
        int g = h / group;
        int tid = par ? omp_get_thread_num() : 0;
        const float *Ph = P + (long)h * n * n;
        float *dP = scratch + (size_t)(tid < threads ? tid : 0) * n * n;
        float *dK = dk_h + (size_t)h * n * hd, *dV = dv_h + (size_t)h * n * hd;
        memset(dK, 0, sizeof(float) * (size_t)n * hd);
        memset(dV, 0, sizeof(float) * (size_t)n * hd);
        for (int i0 = 0; i0 < n; i0 += ATT_BLOCK) {
            int i1 = i0 + ATT_BLOCK < n ? i0 + ATT_BLOCK : n, j0 = first_key(i0, window), m = i1 - i0, w = i1 - j0;
            const float *Pb = Ph + (long)i0 * n + j0;
            float *dPb = dP + (long)i0 * n + j0;
            const float *dA = datt + (long)i0 * qs + (long)h * hd;
            /* dP = dAtt_h V_g^T ; dV_h += P^T dAtt_h */
            be->gemm_nt(be, m, w, hd, dA, qs, v + (long)j0 * ks + (long)g * hd, ks, 0.0f, dPb, n);
            be->gemm_tn(be, w, hd, m, Pb, n, dA, qs, 1.0f, dV + (long)j0 * hd, hd);
            /* dS = P * (dP - rowsum(P * dP)) * scale, on the visible keys; zero elsewhere in the block */
            for (int i = i0; i < i1; i++) {
                const float *pr = Ph + (long)i * n;
                float *dr = dP + (long)i * n;
                int jf = first_key(i, window);
                double dot = 0.0;
                for (int j = jf; j <= i; j++) dot += (double)pr[j] * dr[j];
                for (int j = j0; j < jf; j++) dr[j] = 0.0f;
                for (int j = jf; j <= i; j++) dr[j] = pr[j] * (dr[j] - (float)dot) * scale;
                for (int j = i + 1; j < i1; j++) dr[j] = 0.0f;
            }
            /* dQ_h = dS K_g ; dK_h += dS^T Q_h */
            be->gemm_nn(be, m, hd, w, dPb, n, k + (long)j0 * ks + (long)g * hd, ks, 0.0f, dq + (long)i0 * qs + (long)h * hd,
                        qs);
            be->gemm_tn(be, w, hd, m, dPb, n, q + (long)i0 * qs + (long)h * hd, qs, 1.0f, dK + (long)j0 * hd, hd);
        }
    }
    /* dK_g, dV_g = sums over the group's heads, in head order */
#pragma omp parallel for schedule(static) if ((long)n * ks > 65536)
    for (int t = 0; t < n; t++)
        for (int g = 0; g < KV; g++)
            for (int d = 0; d < hd; d++) {
                float sk = 0.0f, sv = 0.0f;
                for (int h = g * group; h < (g + 1) * group; h++) {
                    sk += dk_h[((size_t)h * n + t) * hd + d];
                    sv += dv_h[((size_t)h * n + t) * hd + d];
                }
                dk[(long)t * ks + g * hd + d] = sk;
                dv[(long)t * ks + g * hd + d] = sv;
            }
}

/* ------------------------------------------------------------------------ */
/* Gated activation                                                          */
/* ------------------------------------------------------------------------ */

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */

void glu_forward(float *a, const float *g, const float *u, long count, int gelu) {
    if (gelu) { /* gelu-tanh: 0.5 x (1 + tanh(k)) == x * sigmoid(2k), k = c (x + 0.044715 x^3) */
#pragma omp parallel for schedule(static) if (count > 65536)
        for (long i = 0; i < count; i++) {
            float x = g[i];
            float k2 = 2.0f * GELU_C * (x + 0.044715f * x * x * x);
            a[i] = x / (1.0f + expf(-k2)) * u[i];
        }
    } else {
#pragma omp parallel for schedule(static) if (count > 65536)
        for (long i = 0; i < count; i++) {
            float x = g[i];
            a[i] = x / (1.0f + expf(-x)) * u[i];
        }
    }
}

void glu_backward(float *dg, float *du, const float *da, const float *g, const float *u, long count, int gelu) {
    if (gelu) { /* d/dx x s(2k) = s + 2 x s (1 - s) k', s = sigmoid(2k) */
#pragma omp parallel for schedule(static) if (count > 65536)
        for (long i = 0; i < count; i++) {
            float x = g[i];
            float k2 = 2.0f * GELU_C * (x + 0.044715f * x * x * x);
            float s = 1.0f / (1.0f + expf(-k2));
            float dact = s + 2.0f * x * s * (1.0f - s) * GELU_C * (1.0f + 3.0f * 0.044715f * x * x);
            du[i] = da[i] * x * s;
            dg[i] = da[i] * u[i] * dact;
        }
    } else {
#pragma omp parallel for schedule(static) if (count > 65536)
        for (long i = 0; i < count; i++) {
            float x = g[i];
            float s = 1.0f / (1.0f + expf(-x));
            du[i] = da[i] * x * s;
            dg[i] = da[i] * u[i] * s * (1.0f + x * (1.0f - s));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Cross-entropy                                                             */
/* ------------------------------------------------------------------------ */

double cross_entropy_forward_backward(float *logits, const int32_t *target, const uint8_t *mask,
                                      int c, int V, int grad) {
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int i = 0; i < c; i++) {
        float *row = logits + (long)i * V;
        if (!mask[i]) {
            if (grad) memset(row, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float mx = -INFINITY;
        for (int j = 0; j < V; j++)
            if (row[j] > mx) mx = row[j];
        float lt = row[target[i]];
        double sum = 0.0;
        if (grad) { /* keep exp(z - max) in place: the gradient is softmax - onehot */
            for (int j = 0; j < V; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < V; j++) row[j] *= inv;
            row[target[i]] -= 1.0f;
        } else {
            for (int j = 0; j < V; j++) sum += expf(row[j] - mx);
        }
        total += mx + log(sum) - lt;
    }
    return total;
}

/* ------------------------------------------------------------------------ */
/* llama.cpp arithmetic (agreement checks only)                              */
/* ------------------------------------------------------------------------ */

/* float -> IEEE half -> float, round to nearest even (as ggml's FP32->FP16). */
static float round_f16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t sign = v.u & 0x80000000u, a = v.u & 0x7fffffffu;
    if (a >= 0x7f800000u) return f;                   /* inf, nan */
    if (a >= 0x477ff000u) { v.u = sign | 0x7f800000u; return v.f; } /* overflow -> inf */
    if (a < 0x38800000u) {                            /* half subnormal: multiples of 2^-24 */
        float q = nearbyintf(fabsf(f) * 16777216.0f) / 16777216.0f;
        return sign ? -q : q;
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);       /* round mantissa to 10 bits */
    v.u = sign | (r & 0xffffe000u);
    return v.f;
}

void ggml_act_round(float *x, long n, int cols, int kind) {
    if (kind == 0) return;
#pragma omp parallel for schedule(static) if (n * (long)cols > 65536)
    for (long t = 0; t < n; t++) {
        float *row = x + t * cols;
        if (kind == 3) {
            for (int j = 0; j < cols; j++) row[j] = round_f16(row[j]);
            continue;
        }
        int bs = kind == 1 ? 32 : 256;
        for (int b0 = 0; b0 + bs <= cols; b0 += bs) {
            float *xb = row + b0;
            if (kind == 1) { /* quantize_row_q8_0 */
                float amax = 0.0f;
                for (int j = 0; j < bs; j++) amax = fmaxf(amax, fabsf(xb[j]));
                float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f, dh = round_f16(d);
                for (int j = 0; j < bs; j++) xb[j] = dh * roundf(xb[j] * id);
            } else { /* quantize_row_q8_K */
                float amax = 0.0f, mx = 0.0f;
                for (int j = 0; j < bs; j++)
                    if (fabsf(xb[j]) > amax) {
                        amax = fabsf(xb[j]);
                        mx = xb[j];
                    }
                if (amax == 0.0f) {
                    for (int j = 0; j < bs; j++) xb[j] = 0.0f;
                    continue;
                }
                float iscale = -127.0f / mx;
                for (int j = 0; j < bs; j++) {
                    float q = nearbyintf(iscale * xb[j]);
                    xb[j] = (q > 127.0f ? 127.0f : q) / iscale;
                }
            }
        }
    }
}

void glu_forward_ggml(float *a, const float *g, const float *u, long count) {
    /* ggml's CPU GELU: a table of fp16(gelu(h)) over fp16 inputs h, for |x| < 10 */
#pragma omp parallel for schedule(static) if (count > 65536)
    for (long i = 0; i < count; i++) {
        float x = g[i], y;
        if (x <= -10.0f) {
            y = 0.0f;
        } else if (x >= 10.0f) {
            y = x;
        } else {
            float h = round_f16(x);
            y = round_f16(0.5f * h * (1.0f + tanhf(GELU_C * h * (1.0f + 0.044715f * h * h))));
        }
        a[i] = y * u[i];
    }
}

int ggml_act_kind(int dtype) {
    switch (dtype) {
    case LM_DT_Q4_0: case LM_DT_Q4_1: case LM_DT_Q5_0: case LM_DT_Q5_1: case LM_DT_Q8_0: case LM_DT_IQ4_NL:
        return 1;
    case LM_DT_Q2_K: case LM_DT_Q3_K: case LM_DT_Q4_K: case LM_DT_Q5_K: case LM_DT_Q6_K: case LM_DT_IQ4_XS:
        return 2;
    case LM_DT_F16:
        return 3;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Deterministic reductions (the methods' per-module sums)                   */
/* ------------------------------------------------------------------------ */

/* Sums over cnt elements are split into RED_BLOCKS contiguous blocks, each
 * summed in order, and the block sums added in order: the result does not
 * depend on the thread count or on which other sums run alongside (an OpenMP
 * reduction clause combines its threads' partials in arrival order). */
#define RED_BLOCKS 256

static long red_block_len(long cnt) { return (cnt + RED_BLOCKS - 1) / RED_BLOCKS; }

void grad_reduce(double out[GR_COUNT], const float *W, const float *G, long cnt, unsigned which) {
    double part[GR_COUNT][RED_BLOCKS];
    long bl = red_block_len(cnt);
    int nb = bl ? (int)((cnt + bl - 1) / bl) : 0;
    int a = (which & GR_ABS) != 0, sg = (which & GR_SIGNED) != 0, sq = (which & GR_SQ) != 0;
#pragma omp parallel for schedule(static) if (cnt > 65536)
    for (int b = 0; b < nb; b++) {
        long i0 = (long)b * bl, i1 = i0 + bl < cnt ? i0 + bl : cnt;
        double s_abs = 0.0, s_sg = 0.0, s_sq = 0.0;
        if (a || sg)
            for (long i = i0; i < i1; i++) {
                double p = (double)W[i] * G[i];
                s_abs += fabs(p);
                s_sg += p;
            }
        if (sq)
            for (long i = i0; i < i1; i++) s_sq += (double)G[i] * G[i];
        part[0][b] = s_abs;
        part[1][b] = s_sg;
        part[2][b] = s_sq;
    }
    for (int k = 0; k < GR_COUNT; k++) {
        double s = 0.0;
        for (int b = 0; b < nb; b++) s += part[k][b];
        out[k] = (which & (1u << k)) ? s : 0.0;
    }
}

double dot_reduce(const float *a, const float *b, long cnt) {
    double part[RED_BLOCKS];
    long bl = red_block_len(cnt);
    int nb = bl ? (int)((cnt + bl - 1) / bl) : 0;
#pragma omp parallel for schedule(static) if (cnt > 65536)
    for (int k = 0; k < nb; k++) {
        long i0 = (long)k * bl, i1 = i0 + bl < cnt ? i0 + bl : cnt;
        double s = 0.0;
        for (long i = i0; i < i1; i++) s += (double)a[i] * b[i];
        part[k] = s;
    }
    double s = 0.0;
    for (int k = 0; k < nb; k++) s += part[k];
    return s;
}

/* ------------------------------------------------------------------------ */
/* The activation methods' reductions                                        */
/* ------------------------------------------------------------------------ */

void col_sumsq(double *out, const float *x, int n, int cols) {
#pragma omp parallel for schedule(static) if ((long)n * cols > 65536)
    for (int j = 0; j < cols; j++) {
        double s = 0.0;
        for (int t = 0; t < n; t++) {
            double v = x[(long)t * cols + j];
            s += v * v;
        }
        out[j] = s;
    }
}

double cos_dist_sum(const float *a, const float *b, int n, int D) {
    double s = 0.0;
    for (int t = 0; t < n; t++) {
        const float *x = a + (long)t * D, *y = b + (long)t * D;
        double xy = 0, xx = 0, yy = 0;
        for (int j = 0; j < D; j++) {
            xy += (double)x[j] * y[j];
            xx += (double)x[j] * x[j];
            yy += (double)y[j] * y[j];
        }
        s += 1.0 - xy / (sqrt(xx) * sqrt(yy) + 1e-30);
    }
    return s;
}

double abs_colscale_sum(const float *W, const double *col, int rows, int in) {
    /* rows in RED_BLOCKS blocks, each summed in row order, blocks in order */
    double part[RED_BLOCKS];
    long bl = red_block_len(rows);
    int nb = bl ? (int)((rows + bl - 1) / bl) : 0;
#pragma omp parallel for schedule(static) if ((long)rows * in > 65536)
    for (int b = 0; b < nb; b++) {
        long r0 = (long)b * bl, r1 = r0 + bl < rows ? r0 + bl : rows;
        double s = 0.0;
        for (long r = r0; r < r1; r++) {
            double rs = 0.0;
            for (int j = 0; j < in; j++) rs += fabs((double)W[r * in + j]) * sqrt(col[j]);
            s += rs;
        }
        part[b] = s;
    }
    double s = 0.0;
    for (int b = 0; b < nb; b++) s += part[b];
    return s;
}
