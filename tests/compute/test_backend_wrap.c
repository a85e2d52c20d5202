/*
 * test_backend_wrap.c -- a second backend through the engine, the methods
 * and diff, unchanged: a "device" backend that wraps the CPU one and keeps
 * every buffer it allocates out of the host's reach.
 *
 * Each buffer is its own mapping, PROT_NONE whenever no operation of this
 * backend runs, with a guard page after its end. An operation makes the
 * buffers its arguments point into readable, runs the CPU backend's
 * operation on them and locks them again, so any read or write of a buffer
 * by the engine, a method or diff outside the backend crashes this test (a
 * child process checks that it does), and so does an operation reaching a
 * buffer it was not given. Data crosses only through upload and download,
 * as with a GPU.
 *
 * With it the engine's reference comparisons of test_engine.c run (logits,
 * loss, every weight gradient, every method matrix against PyTorch float64)
 * on stories260K, a Qwen2 (biases), a Qwen3 (qk-norm) and a Gemma 3
 * (post-norms, sliding windows, GELU) model; several methods from one pass and diff give results
 * bit-identical to the CPU backend (the same arithmetic); and a count shows
 * that every operation of the interface was used.
 */
#define TEST_ENGINE_NO_MAIN
#define ENGINE_BACKEND (&wrap_backend)

#include "compute/backend.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static const lm_backend wrap_backend;

/* ---- the "device" memory ------------------------------------------------ */

typedef struct dev_buf {
    char *map;   /* the mapping: pages of the buffer, then one guard page */
    size_t span; /* bytes of the buffer's pages (without the guard) */
    char *user;  /* the buffer handed out: ends 64-byte aligned at the guard */
} dev_buf;

#define MAX_BUFS 4096
static dev_buf bufs[MAX_BUFS];
static int n_bufs;
static pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t page;

/* The buffer p points into, or -1 (host memory). */
static int find_buf(const void *p) {
    for (int i = 0; i < n_bufs; i++)
        if ((const char *)p >= bufs[i].map && (const char *)p < bufs[i].map + bufs[i].span) return i;
    return -1;
}

#define MAX_ARGS 12
static int open_bufs[MAX_ARGS], n_open;

/* Unlock the buffers of the argument list args[0..n) (NULL entries: none). */
static void open_args(const void *const *args, size_t n) {
    n_open = 0;
    for (size_t k = 0; k < n; k++) {
        int i = args[k] ? find_buf(args[k]) : -1;
        if (i < 0) continue;
        int seen = 0;
        for (int j = 0; j < n_open; j++) seen |= open_bufs[j] == i;
        if (seen) continue;
        if (n_open == MAX_ARGS || mprotect(bufs[i].map, bufs[i].span, PROT_READ | PROT_WRITE)) abort();
        open_bufs[n_open++] = i;
    }
}

/* Every operation runs between enter and leave; one at a time. */
enum {
    OP_ALLOC, OP_RELEASE, OP_UPLOAD, OP_DOWNLOAD, OP_COPY, OP_ZERO, OP_READ_ROWS, OP_GATHER_ROWS,
    OP_GEMM_NT, OP_GEMM_NN, OP_GEMM_TN, OP_ADD, OP_AXPY, OP_SCALE, OP_ADD_ROWS, OP_SET_ROWS,
    OP_RMSNORM_FWD, OP_RMSNORM_BWD, OP_ROPE_FWD, OP_ROPE_BWD, OP_ATTN_FWD, OP_ATTN_SCRATCH, OP_ATTN_BWD,
    OP_GLU_FWD, OP_GLU_BWD, OP_XENT, OP_ACT_ROUND, OP_GRAD_REDUCE, OP_DOT, OP_COL_SUMSQ, OP_COL_SUM_ACC,
    OP_COS_DIST, OP_ABS_COLSCALE, OP_ALL_FINITE, OP_DIFF_STATS, OP_MASK_OVERLAP, OP_ORTHO, OP_SVALS, OP_COUNT
};
static const char *op_names[OP_COUNT] = {
    "alloc", "release", "upload", "download", "copy", "zero", "read_rows", "gather_rows",
    "gemm_nt", "gemm_nn", "gemm_tn", "add", "axpy", "scale", "add_rows", "set_rows",
    "rmsnorm_fwd", "rmsnorm_bwd", "rope_fwd", "rope_bwd", "attn_fwd", "attn_scratch_floats", "attn_bwd",
    "glu_fwd", "glu_bwd", "xent", "act_round", "grad_reduce", "dot", "col_sumsq", "col_sum_acc",
    "cos_dist_sum", "abs_colscale_sum", "all_finite", "diff_stats", "mask_overlap", "orthonormalize", "singular_values",
};
static long op_calls[OP_COUNT];

static const lm_backend *enter(int op, const void *const *args, size_t n) {
    pthread_mutex_lock(&dev_lock);
    op_calls[op]++;
    open_args(args, n);
    return lm_backend_cpu();
}

static void leave(void) {
    for (int j = 0; j < n_open; j++)
        if (mprotect(bufs[open_bufs[j]].map, bufs[open_bufs[j]].span, PROT_NONE)) abort();
    n_open = 0;
    pthread_mutex_unlock(&dev_lock);
}
#define ARGS(...) (const void *const[]){__VA_ARGS__}, sizeof((const void *const[]){__VA_ARGS__}) / sizeof(void *)

static void *w_alloc(const lm_backend *be, size_t bytes) {
    (void)be;
    pthread_mutex_lock(&dev_lock);
    op_calls[OP_ALLOC]++;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    size_t rounded = (bytes + 63) & ~(size_t)63, span = (rounded + page - 1) / page * page;
    void *map = n_bufs < MAX_BUFS ? mmap(NULL, span + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
    void *user = NULL;
    if (map != MAP_FAILED) { /* zero-filled by the kernel; stays PROT_NONE until an operation */
        bufs[n_bufs++] = (dev_buf){map, span, (char *)map + span - rounded};
        user = (char *)map + span - rounded;
    }
    pthread_mutex_unlock(&dev_lock);
    return user;
}

static void w_release(const lm_backend *be, void *p) {
    (void)be;
    if (!p) return;
    pthread_mutex_lock(&dev_lock);
    op_calls[OP_RELEASE]++;
    for (int i = 0; i < n_bufs; i++)
        if ((char *)p >= bufs[i].map && (char *)p < bufs[i].map + bufs[i].span) {
            if (p != bufs[i].user) abort(); /* a view released as a buffer */
            munmap(bufs[i].map, bufs[i].span + page);
            bufs[i] = bufs[--n_bufs];
            pthread_mutex_unlock(&dev_lock);
            return;
        }
    abort(); /* not a buffer of this backend */
}

static int is_dev(const void *p) { return find_buf(p) >= 0; }

static void w_upload(const lm_backend *be, void *dst, const void *host, size_t n) {
    (void)be;
    const lm_backend *c = enter(OP_UPLOAD, ARGS(dst));
    if (n && (!is_dev(dst) || is_dev(host))) abort(); /* host -> device only */
    c->upload(c, dst, host, n);
    leave();
}
static void w_download(const lm_backend *be, void *host, const void *src, size_t n) {
    (void)be;
    const lm_backend *c = enter(OP_DOWNLOAD, ARGS(src));
    if (n && (!is_dev(src) || is_dev(host))) abort(); /* device -> host only */
    c->download(c, host, src, n);
    leave();
}

/* One wrapper per operation: the CPU backend's, between enter and leave. */
#define WRAP_VOID(op, name, params, args, ptrs)      \
    static void w_##name params {                    \
        (void)be;                                    \
        const lm_backend *c = enter(op, ARGS ptrs);  \
        c->name args;                                \
        leave();                                     \
    }
#define WRAP_RET(type, op, name, params, args, ptrs) \
    static type w_##name params {                    \
        (void)be;                                    \
        const lm_backend *c = enter(op, ARGS ptrs);  \
        type ret_ = c->name args;                    \
        leave();                                     \
        return ret_;                                 \
    }

WRAP_VOID(OP_COPY, copy, (const lm_backend *be, void *d, const void *s, size_t n), (c, d, s, n), (d, s))
WRAP_VOID(OP_ZERO, zero, (const lm_backend *be, void *d, size_t n), (c, d, n), (d))
WRAP_RET(int, OP_READ_ROWS, read_rows, (const lm_backend *be, float *d, const lm_tensor *t, int64_t r0, int64_t nr, lm_err *e),
         (c, d, t, r0, nr, e), (d))
WRAP_RET(int, OP_GATHER_ROWS, gather_rows,
         (const lm_backend *be, float *d, const lm_tensor *t, const int32_t *idx, int n, float s, lm_err *e),
         (c, d, t, idx, n, s, e), (d))
#define GEMM_PARAMS \
    (const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
#define GEMM_ARGS (c, M, N, K, A, lda, B, ldb, beta, C, ldc)
WRAP_VOID(OP_GEMM_NT, gemm_nt, GEMM_PARAMS, GEMM_ARGS, (A, B, C))
WRAP_VOID(OP_GEMM_NN, gemm_nn, GEMM_PARAMS, GEMM_ARGS, (A, B, C))
WRAP_VOID(OP_GEMM_TN, gemm_tn, GEMM_PARAMS, GEMM_ARGS, (A, B, C))
WRAP_VOID(OP_ADD, add, (const lm_backend *be, float *y, const float *a, const float *b, long n), (c, y, a, b, n), (y, a, b))
WRAP_VOID(OP_AXPY, axpy, (const lm_backend *be, float *y, float al, const float *x, long n), (c, y, al, x, n), (y, x))
WRAP_VOID(OP_SCALE, scale, (const lm_backend *be, float *x, float s, long n), (c, x, s, n), (x))
WRAP_VOID(OP_ADD_ROWS, add_rows, (const lm_backend *be, float *y, const float *v, int n, int k), (c, y, v, n, k), (y, v))
WRAP_VOID(OP_SET_ROWS, set_rows, (const lm_backend *be, float *y, const float *v, int n, int k), (c, y, v, n, k), (y, v))
WRAP_VOID(OP_RMSNORM_FWD, rmsnorm_fwd,
          (const lm_backend *be, float *o, float *r, const float *x, const float *w, int n, int C, float eps, int a1),
          (c, o, r, x, w, n, C, eps, a1), (o, r, x, w))
WRAP_VOID(OP_RMSNORM_BWD, rmsnorm_bwd,
          (const lm_backend *be, float *dx, const float *d, const float *x, const float *w, const float *r, int n, int C,
           int a1),
          (c, dx, d, x, w, r, n, C, a1), (dx, d, x, w, r))
WRAP_VOID(OP_ROPE_FWD, rope_fwd, (const lm_backend *be, float *x, const float *cs, const float *sn, int n, int h, int hd),
          (c, x, cs, sn, n, h, hd), (x, cs, sn))
WRAP_VOID(OP_ROPE_BWD, rope_bwd, (const lm_backend *be, float *x, const float *cs, const float *sn, int n, int h, int hd),
          (c, x, cs, sn, n, h, hd), (x, cs, sn))
WRAP_VOID(OP_ATTN_FWD, attn_fwd,
          (const lm_backend *be, float *att, float *P, const float *q, const float *k, const float *v, int n, int H,
           int KV, int hd, float sc, int win),
          (c, att, P, q, k, v, n, H, KV, hd, sc, win), (att, P, q, k, v))
WRAP_RET(size_t, OP_ATTN_SCRATCH, attn_scratch_floats, (const lm_backend *be, int n, int H, int hd), (c, n, H, hd), (NULL))
WRAP_VOID(OP_ATTN_BWD, attn_bwd,
          (const lm_backend *be, float *dq, float *dk, float *dv, const float *da, const float *P, const float *q,
           const float *k, const float *v, float *scr, size_t ns, int n, int H, int KV, int hd, float sc, int win),
          (c, dq, dk, dv, da, P, q, k, v, scr, ns, n, H, KV, hd, sc, win), (dq, dk, dv, da, P, q, k, v, scr))
WRAP_VOID(OP_GLU_FWD, glu_fwd, (const lm_backend *be, float *a, const float *g, const float *u, long n, int act),
          (c, a, g, u, n, act), (a, g, u))
WRAP_VOID(OP_GLU_BWD, glu_bwd,
          (const lm_backend *be, float *dg, float *du, const float *da, const float *g, const float *u, long n, int act),
          (c, dg, du, da, g, u, n, act), (dg, du, da, g, u))
WRAP_RET(double, OP_XENT, xent,
         (const lm_backend *be, float *lg, const int32_t *t, const uint8_t *m, int n, int V, int grad),
         (c, lg, t, m, n, V, grad), (lg, t, m))
WRAP_VOID(OP_ACT_ROUND, act_round, (const lm_backend *be, float *x, long n, int k, int kind), (c, x, n, k, kind), (x))
WRAP_VOID(OP_GRAD_REDUCE, grad_reduce,
          (const lm_backend *be, double out[GR_COUNT], const float *W, const float *G, long n, unsigned wh),
          (c, out, W, G, n, wh), (W, G))
WRAP_RET(double, OP_DOT, dot, (const lm_backend *be, const float *a, const float *b, long n), (c, a, b, n), (a, b))
WRAP_VOID(OP_COL_SUMSQ, col_sumsq, (const lm_backend *be, double *o, const float *x, int n, int k), (c, o, x, n, k), (x))
WRAP_VOID(OP_COL_SUM_ACC, col_sum_acc, (const lm_backend *be, double *o, const float *y, int n, int k), (c, o, y, n, k), (y))
WRAP_RET(double, OP_COS_DIST, cos_dist_sum, (const lm_backend *be, const float *a, const float *b, int n, int D),
         (c, a, b, n, D), (a, b))
WRAP_RET(double, OP_ABS_COLSCALE, abs_colscale_sum,
         (const lm_backend *be, const float *W, const double *col, int r, int in), (c, W, col, r, in), (W))
WRAP_RET(int, OP_ALL_FINITE, all_finite, (const lm_backend *be, const float *x, long n), (c, x, n), (x))
WRAP_VOID(OP_DIFF_STATS, diff_stats, (const lm_backend *be, lm_diff_sums *s, const float *a, float *d, long n, double tol),
          (c, s, a, d, n, tol), (a, d))
WRAP_VOID(OP_MASK_OVERLAP, mask_overlap,
          (const lm_backend *be, int64_t cnt[3], const float *base, const float *a, const float *b, long n, double tol),
          (c, cnt, base, a, b, n, tol), (base, a, b))
WRAP_RET(int, OP_ORTHO, orthonormalize, (const lm_backend *be, float *x, int64_t r, int l, lm_err *e), (c, x, r, l, e), (x))
WRAP_RET(int, OP_SVALS, singular_values,
         (const lm_backend *be, const float *z, int64_t n, int l, double *sv, lm_err *e), (c, z, n, l, sv, e), (z))

#include "test_engine.c"

static const lm_backend wrap_backend = {
    .name = "test-device-wrapper",
    .alloc = w_alloc, .release = w_release, .upload = w_upload, .download = w_download, .copy = w_copy,
    .zero = w_zero, .read_rows = w_read_rows, .gather_rows = w_gather_rows,
    .gemm_nt = w_gemm_nt, .gemm_nn = w_gemm_nn, .gemm_tn = w_gemm_tn,
    .add = w_add, .axpy = w_axpy, .scale = w_scale, .add_rows = w_add_rows, .set_rows = w_set_rows,
    .rmsnorm_fwd = w_rmsnorm_fwd, .rmsnorm_bwd = w_rmsnorm_bwd, .rope_fwd = w_rope_fwd, .rope_bwd = w_rope_bwd,
    .attn_fwd = w_attn_fwd, .attn_scratch_floats = w_attn_scratch_floats, .attn_bwd = w_attn_bwd,
    .glu_fwd = w_glu_fwd, .glu_bwd = w_glu_bwd, .xent = w_xent, .act_round = w_act_round,
    .grad_reduce = w_grad_reduce, .dot = w_dot, .col_sumsq = w_col_sumsq, .col_sum_acc = w_col_sum_acc,
    .cos_dist_sum = w_cos_dist_sum, .abs_colscale_sum = w_abs_colscale_sum, .all_finite = w_all_finite,
    .diff_stats = w_diff_stats, .mask_overlap = w_mask_overlap, .orthonormalize = w_orthonormalize, .singular_values = w_singular_values,
};

/* The wrapper really keeps buffers from the host: a read outside an
 * operation kills a child with SIGSEGV. */
static void check_buffers_locked(void) {
    float *b = wrap_backend.alloc(&wrap_backend, 64);
    CHECK(b != NULL, "wrapper alloc");
    if (!b) return;
    float one = 1.0f, back = 0.0f;
    wrap_backend.upload(&wrap_backend, b, &one, sizeof one);
    wrap_backend.download(&wrap_backend, &back, b, sizeof back);
    CHECK(back == 1.0f, "upload/download round trip gave %g", back);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* not the sanitizers' handler: the kernel's verdict */
        signal(SIGBUS, SIG_DFL);
        volatile float x = b[0]; /* must fault */
        (void)x;
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && (WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGBUS),
          "a host read of a wrapper buffer did not fault (status %d)", st);
    wrap_backend.release(&wrap_backend, b);
}

/* Several methods from one pass (and the own-pass ones after it), on the
 * wrapper and on the CPU backend: the same arithmetic, identical results. */
static void check_many_identical(void) {
    char path[1024];
    lm_model *m = NULL;
    lm_err err;
    CHECK_OK(lm_model_open(&m, model_path(path, sizeof path, "stories260K.gguf"), &err), &err);
    if (!m) return;
    enum { NS = 3, SL = 24 };
    int32_t tok[NS][SL];
    uint8_t mask[NS][SL];
    lm_seq seqs[NS];
    lm_dataset ds = {0};
    for (int s = 0; s < NS; s++) {
        for (int i = 0; i < SL; i++) {
            tok[s][i] = (int32_t)((37 * s + 11 * i + 1) % m->cfg.vocab);
            mask[s][i] = i + 1 < SL;
        }
        seqs[s] = (lm_seq){tok[s], mask[s], SL - 4 * s};
        ds.n_tokens += seqs[s].n;
        ds.n_targets += seqs[s].n - 1;
    }
    ds.seqs = seqs;
    ds.n_seq = NS;
    const lm_method set[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER, LM_METHOD_GRAD_NORM, LM_METHOD_ACT_GRAD,
                             LM_METHOD_WANDA, LM_METHOD_ABLATE_MEAN, LM_METHOD_IG};
    enum { NSET = sizeof set / sizeof set[0] };
    lm_attr_result res[2][NSET];
    memset(res, 0, sizeof res);
    for (int k = 0; k < 2; k++) {
        lm_engine_opts eo = {.max_seq = SL, .max_batch = 2, .act_cache_bytes = 1, .backend = k ? &wrap_backend : NULL};
        CHECK_OK(test_attr_many(m, &ds, &eo, set, NSET, res[k], &err), &err);
    }
    int same = 1;
    for (int i = 0; i < NSET; i++)
        for (int c = 0; c < m->cfg.n_layer * 7; c++)
            same &= res[0][i].m->v[c] == res[1][i].m->v[c] ||
                    (isnan(res[0][i].m->v[c]) && isnan(res[1][i].m->v[c]));
    CHECK(same, "several methods: the wrapping backend's matrices differ from the CPU backend's");
    printf("  %d methods in one run: identical on both backends\n", NSET);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < NSET; i++) lm_attr_result_free(&res[k][i]);
    lm_model_close(m);
}

/* diff (every metric, the randomized rank included) on both backends. */
static void check_diff_identical(void) {
    char pa[1024], pb[1024];
    lm_model *a = NULL, *b = NULL;
    lm_err err;
    CHECK_OK(lm_model_open(&a, model_path(pa, sizeof pa, "stories260K.gguf"), &err), &err);
    CHECK_OK(lm_model_open(&b, model_path(pb, sizeof pb, "stories260K-ft.gguf"), &err), &err);
    if (!a || !b) {
        lm_model_close(a);
        lm_model_close(b);
        return;
    }
    lm_matrix *out[2][LM_DIFF_COUNT];
    for (int k = 0; k < 2; k++) {
        lm_diff_opts o;
        lm_diff_opts_default(&o);
        o.rank_k = 16;
        o.threads = 2; /* two workers call the backend concurrently */
        o.backend = k ? &wrap_backend : NULL;
        CHECK_OK(lm_diff(a, b, &o, out[k], &err), &err);
    }
    int same = 1;
    for (int d = 0; d < LM_DIFF_COUNT; d++)
        for (int c = 0; out[0][d] && out[1][d] && c < a->cfg.n_layer * 7; c++)
            same &= out[0][d]->v[c] == out[1][d]->v[c] || (isnan(out[0][d]->v[c]) && isnan(out[1][d]->v[c]));
    CHECK(same, "diff: the wrapping backend's matrices differ from the CPU backend's");
    printf("  diff (rel, density, cosine, rank): identical on both backends\n");
    for (int k = 0; k < 2; k++)
        for (int d = 0; d < LM_DIFF_COUNT; d++) lm_matrix_free(out[k][d]);
    /* the update-mask overlap of two fine-tunes (here: the fine-tune and the base itself) */
    lm_matrix *ov[2][LM_OVERLAP_COUNT];
    for (int k = 0; k < 2; k++) {
        lm_diff_opts o;
        lm_diff_opts_default(&o);
        o.threads = 2;
        o.backend = k ? &wrap_backend : NULL;
        CHECK_OK(lm_diff_overlap(a, b, a, &o, ov[k], &err), &err);
    }
    same = 1;
    for (int d = 0; d < LM_OVERLAP_COUNT; d++)
        for (int c = 0; ov[0][d] && ov[1][d] && c < a->cfg.n_layer * 7; c++)
            same &= ov[0][d]->v[c] == ov[1][d]->v[c] || (isnan(ov[0][d]->v[c]) && isnan(ov[1][d]->v[c]));
    CHECK(same, "diff overlap: the wrapping backend's matrices differ from the CPU backend's");
    for (int k = 0; k < 2; k++)
        for (int d = 0; d < LM_OVERLAP_COUNT; d++) lm_matrix_free(ov[k][d]);
    lm_model_close(a);
    lm_model_close(b);
}

int main(void) {
    (void)check_greedy; /* test_engine.c's other checks do not use the engine's operations differently */
    (void)check_resume;
    (void)check_other_dtypes;
    char path[1024];
    check_buffers_locked();
    tol stories = {1e-5, 1e-4, 1e-4, 1e-3};
    check_model(model_path(path, sizeof path, "stories260K-hf"), "tests/data/ref/stories260K-hf.safetensors", stories,
                1, 0, 0);
    check_model("tests/data/tiny-qwen2", "tests/data/ref/tiny-qwen2.safetensors", stories, 0, 0, 0); /* biases */
    check_model("tests/data/tiny-qwen3", "tests/data/ref/tiny-qwen3.safetensors", stories, 0, 0, 0);
    check_model("tests/data/tiny-gemma3", "tests/data/ref/tiny-gemma3.safetensors", stories, 0, 1, 1);
    check_many_identical();
    check_diff_identical();
    /* compact activation sets remade through the interface a GPU implements */
    check_act_layouts("tests/data/tiny-qwen3", "tests/data/ref/tiny-qwen3.safetensors", 0);
    /* every operation but the ggml-compat rounding (the CLI's --ggml-compat, checked by test_real) was used */
    int unused = 0;
    for (int i = 0; i < OP_COUNT; i++) {
        if (i == OP_ACT_ROUND) continue;
        if (!op_calls[i]) {
            printf("  operation %s never called\n", op_names[i]);
            unused++;
        }
    }
    printf("  %ld products, %ld uploads, %ld downloads through the wrapping backend; %d buffers left\n",
           op_calls[OP_GEMM_NT] + op_calls[OP_GEMM_NN] + op_calls[OP_GEMM_TN], op_calls[OP_UPLOAD],
           op_calls[OP_DOWNLOAD], n_bufs);
    CHECK(unused == 0, "%d operations of the interface were never called through the backend", unused);
    CHECK(n_bufs == 0, "%d buffers not released", n_bufs);
    return TEST_END();
}
