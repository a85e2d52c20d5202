/*
 * backend_cpu.c -- the CPU backend (backend.h), the reference: host memory,
 * OpenBLAS sgemm, the kernels of kernels.c and linalg.c; and the check that
 * OpenBLAS runs the best core this CPU supports.
 *
 * Debian's OpenBLAS 0.3.21 does not know newer AVX-512 CPUs (AMD Zen 4 among
 * them) and falls back to its Prescott core: sgemm runs 5x slower. The CPU's
 * features say which core it can run; OpenBLAS reads OPENBLAS_CORETYPE when
 * it loads, so the fix is applied by the program before then (cli/main.c
 * re-executes itself with the variable set).
 */
#include "compute/backend.h"
#include "base/base.h"
#include "compute/kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- buffers: host memory (lm_calloc, so fault injection covers them) -- */

static void *cpu_alloc(const lm_backend *be, size_t bytes) {
    (void)be;
    return lm_calloc(bytes ? bytes : 1, 1);
}
static void cpu_release(const lm_backend *be, void *p) {
    (void)be;
    lm_free(p);
}
static void cpu_upload(const lm_backend *be, void *dst, const void *host, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, host, bytes);
}
static void cpu_download(const lm_backend *be, void *host, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(host, src, bytes);
}
static void cpu_copy(const lm_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_zero(const lm_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) memset(dst, 0, bytes);
}

/* ---- weights ---------------------------------------------------------- */

/* Rows in chunks of 64 over the threads; the first failure is reported. */
static int cpu_read_rows(const lm_backend *be, float *dst, const lm_tensor *t, int64_t r0, int64_t nr, lm_err *err) {
    (void)be;
    int64_t cols = lm_tensor_cols(t), chunk = 64, nchunks = (nr + chunk - 1) / chunk;
    int rc = LM_OK;
    lm_err first = {0};
#pragma omp parallel for schedule(dynamic, 1) if (nchunks > 1)
    for (int64_t c = 0; c < nchunks; c++) {
        if (rc != LM_OK) continue;
        int64_t a = c * chunk, n = nr - a < chunk ? nr - a : chunk;
        lm_err e2;
        int r = lm_tensor_read_rows(t, r0 + a, n, dst + a * cols, &e2);
        if (r != LM_OK) {
#pragma omp critical(lm_cpu_read_rows)
            if (rc == LM_OK) {
                rc = r;
                first = e2;
            }
        }
    }
    if (rc != LM_OK && err) *err = first;
    return rc;
}

static int cpu_gather_rows(const lm_backend *be, float *dst, const lm_tensor *t, const int32_t *idx, int n,
                           float scale, lm_err *err) {
    (void)be;
    int64_t cols = lm_tensor_cols(t);
    for (int i = 0; i < n; i++) {
        int rc = lm_tensor_read_rows(t, idx[i], 1, dst + (int64_t)i * cols, err);
        if (rc) return rc;
    }
    if (scale != 1.0f)
        for (int64_t i = 0; i < (int64_t)n * cols; i++) dst[i] *= scale;
    return LM_OK;
}

/* ---- the products' profile (lm_product_profile) ------------------------ */

static _Atomic int prof_on;
static _Atomic long long prof_ns, prof_flop, prof_calls;

void lm_product_profile(int enable) {
    if (enable) prof_ns = prof_flop = prof_calls = 0;
    prof_on = enable != 0;
}

void lm_product_profile_read(double *seconds, double *flops, long *calls) {
    if (seconds) *seconds = (double)prof_ns * 1e-9;
    if (flops) *flops = (double)prof_flop;
    if (calls) *calls = (long)prof_calls;
}

double lm_prof_begin(void) {
    if (!prof_on) return 0;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void lm_prof_end(double t0, int M, int N, int K) {
    if (!prof_on || t0 == 0) return;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    prof_ns += (long long)(((double)t.tv_sec + 1e-9 * (double)t.tv_nsec - t0) * 1e9);
    prof_flop += 2LL * M * N * K;
    prof_calls++;
}

/* ---- products: OpenBLAS sgemm ------------------------------------------ */

static void gemm_nt(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    (void)be;
    double t0 = lm_prof_begin();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    lm_prof_end(t0, M, N, K);
}

static void gemm_nn(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    (void)be;
    double t0 = lm_prof_begin();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    lm_prof_end(t0, M, N, K);
}

static void gemm_tn(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    (void)be;
    double t0 = lm_prof_begin();
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    lm_prof_end(t0, M, N, K);
}

/* ---- element-wise ------------------------------------------------------ */

static void cpu_add(const lm_backend *be, float *y, const float *a, const float *b, long cnt) {
    (void)be;
    for (long i = 0; i < cnt; i++) y[i] = a[i] + b[i];
}
static void cpu_axpy(const lm_backend *be, float *y, float alpha, const float *x, long cnt) {
    (void)be;
    if (alpha == -1.0f) { /* exactly y - x */
        for (long i = 0; i < cnt; i++) y[i] -= x[i];
        return;
    }
    for (long i = 0; i < cnt; i++) y[i] += alpha * x[i];
}
static void cpu_scale(const lm_backend *be, float *x, float s, long cnt) {
    (void)be;
    for (long i = 0; i < cnt; i++) x[i] *= s;
}
static void cpu_add_rows(const lm_backend *be, float *y, const float *v, int n, int cols) {
    (void)be;
#pragma omp parallel for schedule(static) if ((long)n * cols > 65536)
    for (int t = 0; t < n; t++)
        for (int j = 0; j < cols; j++) y[(long)t * cols + j] += v[j];
}
static void cpu_set_rows(const lm_backend *be, float *y, const float *v, int n, int cols) {
    (void)be;
    for (int t = 0; t < n; t++) memcpy(y + (long)t * cols, v, sizeof(float) * (size_t)cols);
}
static void cpu_rmsnorm_fwd(const lm_backend *be, float *out, float *rstd, const float *x, const float *w, int n,
                            int C, float eps, int add_one) {
    (void)be;
    rmsnorm_forward(out, rstd, x, w, n, C, eps, add_one);
}
static void cpu_rmsnorm_bwd(const lm_backend *be, float *dx, const float *dout, const float *x, const float *w,
                            const float *rstd, int n, int C, int add_one) {
    (void)be;
    rmsnorm_backward(dx, dout, x, w, rstd, n, C, add_one);
}
static void cpu_rope_fwd(const lm_backend *be, float *x, const float *c, const float *s, int n, int heads, int hd) {
    (void)be;
    rope_forward(x, c, s, n, heads, hd);
}
static void cpu_rope_bwd(const lm_backend *be, float *x, const float *c, const float *s, int n, int heads, int hd) {
    (void)be;
    rope_backward(x, c, s, n, heads, hd);
}
static void cpu_attn_fwd(const lm_backend *be, float *att, float *P, const float *q, const float *k, const float *v,
                         int n, int H, int KV, int hd, float scale, int window) {
    attention_forward(be, att, P, q, k, v, n, H, KV, hd, scale, window);
}
/* Sized for the OpenMP threads of now (the engine sets them first); a later
 * call uses at most as many threads as the scratch was sized for. */
static size_t cpu_attn_scratch_floats(const lm_backend *be, int n, int H, int hd) {
    (void)be;
    return attention_scratch_floats(n, H, hd, omp_get_max_threads());
}
static void cpu_attn_bwd(const lm_backend *be, float *dq, float *dk, float *dv, const float *datt, const float *P,
                         const float *q, const float *k, const float *v, float *scratch, size_t scratch_floats, int n,
                         int H, int KV, int hd, float scale, int window) {
    /* the threads the scratch holds at this n (it was sized for n_max >= n) */
    size_t per = (size_t)n * n, fixed = 2 * (size_t)H * n * hd;
    int threads = scratch_floats > fixed ? (int)((scratch_floats - fixed) / per) : 1;
    if (threads > omp_get_max_threads()) threads = omp_get_max_threads();
    if (threads < 1) threads = 1;
    attention_backward(be, dq, dk, dv, datt, P, q, k, v, scratch, threads, n, H, KV, hd, scale, window);
}
static void cpu_glu_fwd(const lm_backend *be, float *a, const float *g, const float *u, long cnt, int act) {
    (void)be;
    if (act == LM_GLU_GELU_GGML)
        glu_forward_ggml(a, g, u, cnt);
    else
        glu_forward(a, g, u, cnt, act == LM_GLU_GELU);
}
static void cpu_glu_bwd(const lm_backend *be, float *dg, float *du, const float *da, const float *g, const float *u,
                        long cnt, int act) {
    (void)be;
    glu_backward(dg, du, da, g, u, cnt, act != LM_GLU_SILU);
}
static double cpu_xent(const lm_backend *be, float *logits, const int32_t *target, const uint8_t *mask, int c, int V,
                       int grad) {
    (void)be;
    return cross_entropy_forward_backward(logits, target, mask, c, V, grad);
}
static void cpu_act_round(const lm_backend *be, float *x, long n, int cols, int kind) {
    (void)be;
    ggml_act_round(x, n, cols, kind);
}

/* ---- reductions -------------------------------------------------------- */

static void cpu_grad_reduce(const lm_backend *be, double out[GR_COUNT], const float *W, const float *G, long cnt,
                            unsigned which) {
    (void)be;
    grad_reduce(out, W, G, cnt, which);
}
static double cpu_dot(const lm_backend *be, const float *a, const float *b, long cnt) {
    (void)be;
    return dot_reduce(a, b, cnt);
}
static void cpu_col_sumsq(const lm_backend *be, double *out, const float *x, int n, int cols) {
    (void)be;
    col_sumsq(out, x, n, cols);
}
static void cpu_col_sum_acc(const lm_backend *be, double *out, const float *y, int n, int cols) {
    (void)be;
    for (int t = 0; t < n; t++)
        for (int j = 0; j < cols; j++) out[j] += y[(long)t * cols + j];
}
static double cpu_cos_dist_sum(const lm_backend *be, const float *a, const float *b, int n, int D) {
    (void)be;
    return cos_dist_sum(a, b, n, D);
}
static double cpu_abs_colscale_sum(const lm_backend *be, const float *W, const double *col, int rows, int in) {
    (void)be;
    return abs_colscale_sum(W, col, rows, in);
}
static int cpu_all_finite(const lm_backend *be, const float *x, long cnt) {
    (void)be;
    for (long i = 0; i < cnt; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* ---- diff -------------------------------------------------------------- */

static void cpu_diff_stats(const lm_backend *be, lm_diff_sums *s, const float *a, float *d, long cnt, double tol) {
    (void)be;
    diff_block_stats(s, a, d, cnt, tol);
}
static void cpu_mask_overlap(const lm_backend *be, int64_t n[3], const float *base, const float *a, const float *b,
                             long cnt, double tol) {
    (void)be;
    mask_overlap_counts(n, base, a, b, cnt, tol);
}
static int cpu_orthonormalize(const lm_backend *be, float *x, int64_t rows, int l, lm_err *err) {
    (void)be;
    return orthonormalize(x, rows, l, err);
}
static int cpu_singular_values(const lm_backend *be, const float *z, int64_t n, int l, double *sv, lm_err *err) {
    (void)be;
    return singular_values(z, n, l, sv, err);
}

static const lm_backend cpu_backend = {
    .name = "cpu-openblas",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .read_rows = cpu_read_rows,
    .gather_rows = cpu_gather_rows,
    .gemm_nt = gemm_nt,
    .gemm_nn = gemm_nn,
    .gemm_tn = gemm_tn,
    .add = cpu_add,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .add_rows = cpu_add_rows,
    .set_rows = cpu_set_rows,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .attn_fwd = cpu_attn_fwd,
    .attn_scratch_floats = cpu_attn_scratch_floats,
    .attn_bwd = cpu_attn_bwd,
    .glu_fwd = cpu_glu_fwd,
    .glu_bwd = cpu_glu_bwd,
    .xent = cpu_xent,
    .act_round = cpu_act_round,
    .grad_reduce = cpu_grad_reduce,
    .dot = cpu_dot,
    .col_sumsq = cpu_col_sumsq,
    .col_sum_acc = cpu_col_sum_acc,
    .cos_dist_sum = cpu_cos_dist_sum,
    .abs_colscale_sum = cpu_abs_colscale_sum,
    .all_finite = cpu_all_finite,
    .diff_stats = cpu_diff_stats,
    .mask_overlap = cpu_mask_overlap,
    .orthonormalize = cpu_orthonormalize,
    .singular_values = cpu_singular_values,
};

const lm_backend *lm_backend_cpu(void) { return &cpu_backend; }

const char *lm_blas_core(void) {
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

/* The OpenBLAS core name matching the CPU's best vector extension. */
const char *lm_blas_wanted_core(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void lm_blas_set_threads(int n) { openblas_set_num_threads(n); }
int lm_blas_threads(void) { return openblas_get_num_threads(); }

const char *lm_engine_kernel_name(void) {
    static char buf[160];
    const char *cfg = openblas_get_config();
    const char *want = lm_blas_wanted_core();
    const char *core = lm_blas_core();
    int ok = !want || !strcasecmp(want, core);
    snprintf(buf, sizeof buf, "sgemm: %s, core %s%s%s%s", cfg ? cfg : "OpenBLAS", core,
             ok ? "" : " (CPU supports ", ok ? "" : want, ok ? "" : "; set OPENBLAS_CORETYPE)");
    return buf;
}
