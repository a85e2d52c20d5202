/*
 * diff.c -- compare two checkpoints of one architecture, per layer and module.
 *
 * For every (layer, module) the update is D = W_ft - W_base (m x n). Four
 * metrics come out of it (docs/METHODS.md, "Two checkpoints"):
 *
 *   rel      norm_F(D) / norm_F(W_base)
 *   density  fraction of entries with |D_ij| > tol
 *   cosine   <W_base, W_ft> / (norm_F(W_base) norm_F(W_ft))
 *   rank     entropy effective rank of D from a randomized SVD
 *
 * Pipeline, one worker thread per tensor pair (largest first):
 *
 *   pass 0        stream row blocks of both tensors; accumulate ||D||^2,
 *                 ||W_base||^2, ||W_ft||^2, <W_base, W_ft> and the count of
 *                 |D| > tol in double; Y = D Omega                  (m x l)
 *   power iter    Q = orth(Y); Z = D^T Q (pass); Z = orth(Z); Y = D Z (pass)
 *   last pass     Q = orth(Y); Z = D^T Q                             (n x l)
 *   small SVD     sigma(D restricted to range Q) = sqrt(eig(Z^T Z)), l x l
 *
 * D is never materialized whole: each pass re-reads row blocks of both
 * tensors through lm_tensor_read_rows (so a GGUF and a safetensors checkpoint
 * compare in one row convention) and forms the block of D in F32 scratch.
 * Memory is O(threads x (block x cols + (rows + cols) x l)); the mapped pages
 * of a tensor are released from our resident set as soon as a pass has
 * consumed them, so RSS stays far below the size of a multi-GB checkpoint.
 *
 * Every computation runs through the backend (lm_diff_opts.backend, the CPU
 * one by default; compute/backend.h): the dequantized blocks, D, the sketch
 * buffers and the test matrices are its buffers; the streaming sums
 * (diff_stats), the products with D (gemm), the orthonormalization and the
 * small eigenproblem are its operations. Only the sums come back as doubles.
 *
 * Several processes (lm_diff_opts.dist, the CLI's MPI ranks): every process
 * makes the same task list and gives each task to one process, largest first
 * to the least loaded (share_tasks); each runs its own tasks, then one sum()
 * of the per-task results, where the other processes' slots hold -0.0 (the
 * exact identity of IEEE addition), gives every process every result bit for
 * bit as one process computes it.
 *
 * Numerics: the sums are double, each tensor is summed by one thread in row
 * order, so the matrices do not depend on the thread count. The sketch and the
 * products with D run in F32 (sgemm); orthonormalization (Householder LQ) and
 * the l x l eigenproblem run in double (LAPACK from OpenBLAS). With
 * l = min(m, n) the range of Q is the range of D and the singular values are
 * those of the exact SVD (power iterations are skipped). Singular values below
 * the F32 noise floor 8 eps_f32 sqrt(max(m, n)) sigma_max count as 0, so an
 * exact low-rank update reports its rank rather than rank + rounding noise.
 */
#include "base/base.h"
#include "compute/backend.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

const char *const lm_diff_metric_names[LM_DIFF_COUNT] = {"rel", "density", "cosine", "rank"};

/* Elements of one row block: small for the bandwidth-bound statistics (the
 * block stays in L2), larger when the block also feeds sgemm. */
#define BLOCK_ELEMS_STATS (1 << 16)
#define BLOCK_ELEMS_RANK (1 << 18)
#define BLOCK_ROWS_MAX 256
/* Release a pass's consumed pages every this many bytes of one tensor. */
#define RELEASE_BYTES ((size_t)16 << 20)
#define POWER_ITERS_MAX 64
#define SKETCH_MAX 4096

/* See layermap.h: tol 0, k 64, oversample 8, 2 power iterations. */
void lm_diff_opts_default(lm_diff_opts *o) {
    memset(o, 0, sizeof *o);
    o->tol = 0.0;
    o->rank_k = 64;
    o->oversample = 8;
    o->power_iters = 2;
    o->seed = 0x6c617965726d6170ull; /* "layermap" */
    o->threads = 0;
}

/* ------------------------------------------------------------------------ */
/* Random sketch                                                             */
/* ------------------------------------------------------------------------ */

/* splitmix64: seeds the generator from (seed, columns). */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform double in (0, 1) from the top 53 bits of x. */
static double unit_open(uint64_t x) { return ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* Fill om (n x L, row-major) with standard normal F32 values (Box-Muller),
 * a function of (seed, n) only: every tensor with n columns sees the same
 * test matrix whatever thread or order computes it. */
static void gaussian_fill(float *om, int64_t n, int L, uint64_t seed) {
    uint64_t s = seed ^ ((uint64_t)n * 0xd1b54a32d192ed03ull);
    int64_t total = n * (int64_t)L;
    for (int64_t i = 0; i < total; i += 2) {
        double u1 = unit_open(splitmix64(&s)), u2 = unit_open(splitmix64(&s));
        double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
        om[i] = (float)(r * cos(a));
        if (i + 1 < total) om[i + 1] = (float)(r * sin(a));
    }
}

/* ------------------------------------------------------------------------ */
/* Work items and per-thread scratch                                         */
/* ------------------------------------------------------------------------ */

typedef struct diff_task {
    int layer, mod;
    const lm_tensor *a, *b; /* base, ft */
    int64_t m, n;           /* rows, cols */
    int l;                  /* sketch width, 0 = no rank */
    int omega;              /* index of the test matrix for n */
    double bytes;           /* a->nbytes + b->nbytes */
    /* results */
    lm_diff_sums st;        /* ||D||^2, ||A||^2, ||B||^2, <A, B>, count of |D| > tol */
    double rank;
} diff_task;

/* One worker's backend buffers. */
typedef struct diff_ws {
    const lm_backend *be;
    float *ba, *bb;    /* (blk_rows, max_n): base block; ft block, then D */
    float *y;          /* (max_m, L): sketch Y, then its orthonormal basis Q */
    float *z;          /* (max_n, L): Z = D^T Q */
    double *sv;        /* host (L): singular values */
} diff_ws;

typedef struct diff_run {
    const lm_diff_opts *o;
    const lm_backend *be;
    diff_task *tasks;
    int n_tasks;
    float **omegas;     /* one (n, L) test matrix per distinct column count */
    int L;              /* rank_k + oversample (0 = no rank) */
    double total_bytes; /* progress: every task's bytes once */
    double done_bytes;  /* omp atomic */
    double last_report;
    atomic_int stop;    /* set by the first failing worker */
    int rc;
    lm_err err;         /* the first failure */
} diff_run;

/* Record the first failure of any worker and ask the others to stop. */
static void run_fail(diff_run *r, const lm_err *e) {
#pragma omp critical(lm_diff_fail)
    {
        if (!r->rc) {
            r->rc = e->code ? e->code : LM_EINTERNAL;
            r->err = *e;
        }
    }
    atomic_store(&r->stop, 1);
}

/* Count bytes done and, on the calling thread (OpenMP thread 0), report
 * progress at most every 0.1 s. */
static void run_progress(diff_run *r, double bytes) {
#pragma omp atomic update
    r->done_bytes += bytes;
    if (!r->o->progress || omp_get_thread_num() != 0) return;
    double now = lm_now();
    if (now - r->last_report < 0.1) return;
    r->last_report = now;
    double done;
#pragma omp atomic read
    done = r->done_bytes;
    r->o->progress(r->o->progress_ctx, done < r->total_bytes ? done : r->total_bytes, r->total_bytes, "diff");
}

/* Free one worker's scratch (NULL-safe, idempotent). */
static void ws_free(diff_ws *w) {
    if (!w || !w->be) return;
    w->be->release(w->be, w->ba);
    w->be->release(w->be, w->bb);
    w->be->release(w->be, w->y);
    w->be->release(w->be, w->z);
    lm_free(w->sv);
    memset(w, 0, sizeof *w);
}

/* Allocate count elements of size bytes each, checking the product: on the
 * host (be NULL) or as a buffer of be. */
static void *alloc_on(const lm_backend *be, uint64_t count, size_t size, lm_err *err, const char *what, int *rc) {
    uint64_t bytes;
    if (*rc) return NULL;
    if (lm_mul_overflow(count, size, &bytes) || (uint64_t)(size_t)bytes != bytes) {
        *rc = lm_fail(err, LM_ENOMEM, "out of memory (%s: size overflows)", what);
        return NULL;
    }
    void *p = be ? be->alloc(be, bytes ? (size_t)bytes : 1) : lm_malloc((size_t)bytes);
    if (!p) *rc = lm_nomem(err, (size_t)bytes, what);
    return p;
}

static void *alloc_n(uint64_t count, size_t size, lm_err *err, const char *what, int *rc) {
    return alloc_on(NULL, count, size, err, what, rc);
}

/* Buffers of one worker: blocks for the largest shapes, the sketch buffers. */
static int ws_alloc(diff_ws *w, const lm_backend *be, int64_t blk_elems, int64_t max_m, int64_t max_n, int L,
                    lm_err *err) {
    int rc = 0;
    memset(w, 0, sizeof *w);
    w->be = be;
    w->ba = alloc_on(be, (uint64_t)blk_elems, sizeof(float), err, "diff block", &rc);
    w->bb = alloc_on(be, (uint64_t)blk_elems, sizeof(float), err, "diff block", &rc);
    if (L == 0 || rc) return rc;
    w->y = alloc_on(be, (uint64_t)max_m * (uint64_t)L, sizeof(float), err, "diff sketch Y", &rc);
    w->z = alloc_on(be, (uint64_t)max_n * (uint64_t)L, sizeof(float), err, "diff sketch Z", &rc);
    w->sv = alloc_n((uint64_t)L, sizeof(double), err, "diff singular values", &rc);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Streamed passes over D                                                    */
/* ------------------------------------------------------------------------ */

enum {
    PASS_STATS = 1, /* accumulate the four sums and the count */
    PASS_SKETCH = 2, /* Y = D Omega */
    PASS_Y = 4,     /* Y = D Z */
    PASS_Z = 8      /* Z = D^T Q, Q stored in y */
};

/* Drop the pages of rows [r0, r1) of t from the resident set. Tensors whose
 * reads permute rows (GGUF q/k) are released whole at the end of a pass. */
static void release_rows(const lm_tensor *t, int64_t rows, int64_t r0, int64_t r1) {
    if (rows <= 0) return;
    if (t->qk_perm_heads > 0) {
        if (r1 >= rows) lm_release_pages(t->data, t->nbytes);
        return;
    }
    size_t rb = t->nbytes / (size_t)rows;
    lm_release_pages(t->data + (size_t)r0 * rb, (size_t)(r1 - r0) * rb);
}

/* One pass over the row blocks of task t doing what 'mode' asks. Returns
 * LM_OK, a read error, or LM_OK early when another worker failed. */
static int stream_pass(diff_run *r, diff_task *t, diff_ws *w, int mode, int npasses, lm_err *err) {
    const int64_t m = t->m, n = t->n;
    const int l = t->l, L = r->L;
    int64_t blk = ((mode & ~PASS_STATS) ? BLOCK_ELEMS_RANK : BLOCK_ELEMS_STATS) / n;
    if (blk < 1) blk = 1;
    if (blk > BLOCK_ROWS_MAX) blk = BLOCK_ROWS_MAX;
    if (blk > m) blk = m;
    const double row_bytes = t->bytes / (double)m;
    int64_t released = 0;
    for (int64_t r0 = 0; r0 < m; r0 += blk) {
        if (atomic_load_explicit(&r->stop, memory_order_relaxed)) return LM_OK;
        int64_t nr = m - r0 < blk ? m - r0 : blk;
        const lm_backend *be = r->be;
        int rc = be->read_rows(be, w->ba, t->a, r0, nr, err);
        if (!rc) rc = be->read_rows(be, w->bb, t->b, r0, nr, err);
        if (rc) return rc;
        if (mode & PASS_STATS) /* the sums, and D into bb */
            be->diff_stats(be, &t->st, w->ba, w->bb, nr * n, r->o->tol);
        else /* D = ft - base */
            be->axpy(be, w->bb, -1.0f, w->ba, nr * n);
        if (mode & PASS_SKETCH) /* Y[r0:] = D_blk Omega */
            be->gemm_nn(be, (int)nr, l, (int)n, w->bb, (int)n, r->omegas[t->omega], L, 0.0f, w->y + r0 * l, l);
        if (mode & PASS_Y) /* Y[r0:] = D_blk Z */
            be->gemm_nn(be, (int)nr, l, (int)n, w->bb, (int)n, w->z, l, 0.0f, w->y + r0 * l, l);
        if (mode & PASS_Z) /* Z (+)= D_blk^T Q[r0:] */
            be->gemm_tn(be, (int)n, l, (int)nr, w->bb, (int)n, w->y + r0 * l, l, r0 ? 1.0f : 0.0f, w->z, l);
        int64_t r1 = r0 + nr;
        if ((double)(r1 - released) * row_bytes >= (double)RELEASE_BYTES || r1 == m) {
            release_rows(t->a, m, released, r1);
            release_rows(t->b, m, released, r1);
            released = r1;
        }
        run_progress(r, (double)nr * row_bytes / npasses);
    }
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Small dense linear algebra                                                */
/* ------------------------------------------------------------------------ */

/* exp(entropy) of p_i = s_i / sum s over the top k of sv (descending), after
 * zeroing values below the F32 noise floor; 0 when all are zero. */
static double entropy_rank(const double *sv, int l, int k, int64_t m, int64_t n) {
    if (k > l) k = l;
    double floor = 8.0 * FLT_EPSILON * sqrt((double)(m > n ? m : n)) * sv[0];
    double sum = 0;
    for (int i = 0; i < k; i++)
        if (sv[i] > floor) sum += sv[i];
    if (!(sum > 0)) return 0.0;
    double h = 0;
    for (int i = 0; i < k; i++) {
        if (!(sv[i] > floor)) continue;
        double p = sv[i] / sum;
        h -= p * log(p);
    }
    return exp(h);
}

/* ------------------------------------------------------------------------ */
/* One tensor pair                                                           */
/* ------------------------------------------------------------------------ */

/* Statistics and (when t->l > 0) the effective rank of one (layer, module). */
static int run_task(diff_run *r, diff_task *t, diff_ws *w, lm_err *err) {
    const lm_diff_opts *o = r->o;
    int l = t->l;
    int q = o->power_iters;
    if (l > 0 && (l >= t->m || l >= t->n)) q = 0; /* Q spans range(D): exact */
    int npasses = l > 0 ? 2 + 2 * q : 1;
    double per_pass = t->bytes / npasses;

    int rc = stream_pass(r, t, w, PASS_STATS | (l ? PASS_SKETCH : 0), npasses, err);
    if (rc || atomic_load(&r->stop)) return rc;
    t->rank = NAN;
    if (l == 0) return LM_OK;
    if (t->st.dd == 0) { /* zero update: rank 0, nothing more to read */
        t->rank = 0.0;
        run_progress(r, per_pass * (npasses - 1));
        return LM_OK;
    }
    if (!isfinite(t->st.dd)) { /* Inf/NaN in the weights: no rank */
        run_progress(r, per_pass * (npasses - 1));
        return LM_OK;
    }
    const lm_backend *be = r->be;
    for (int it = 0; it < q; it++) {
        if ((rc = be->orthonormalize(be, w->y, t->m, l, err))) return rc;
        if ((rc = stream_pass(r, t, w, PASS_Z, npasses, err)) || atomic_load(&r->stop)) return rc;
        if ((rc = be->orthonormalize(be, w->z, t->n, l, err))) return rc;
        if ((rc = stream_pass(r, t, w, PASS_Y, npasses, err)) || atomic_load(&r->stop)) return rc;
    }
    if ((rc = be->orthonormalize(be, w->y, t->m, l, err))) return rc;
    if ((rc = stream_pass(r, t, w, PASS_Z, npasses, err)) || atomic_load(&r->stop)) return rc;
    if (!be->all_finite(be, w->z, (long)(t->n * l))) return LM_OK; /* F32 overflow of huge weights: rank NaN */
    if ((rc = be->singular_values(be, w->z, t->n, l, w->sv, err))) return rc;
    t->rank = entropy_rank(w->sv, l, o->rank_k, t->m, t->n);
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */
/* ------------------------------------------------------------------------ */

/* LM_EARG for options out of range, naming the option and its value. */
static int check_opts(const lm_diff_opts *o, lm_err *err) {
    if (!(o->tol >= 0) || isinf(o->tol))
        return lm_fail(err, LM_EARG, "diff: tolerance must be finite and >= 0 (got %g)", o->tol);
    if (o->rank_k < 0 || o->rank_k > SKETCH_MAX)
        return lm_fail(err, LM_EARG, "diff: rank k must be in 0..%d (got %d)", SKETCH_MAX, o->rank_k);
    if (o->oversample < 0 || o->oversample > SKETCH_MAX)
        return lm_fail(err, LM_EARG, "diff: oversample must be in 0..%d (got %d)", SKETCH_MAX, o->oversample);
    if (o->power_iters < 0 || o->power_iters > POWER_ITERS_MAX)
        return lm_fail(err, LM_EARG, "diff: power iterations must be in 0..%d (got %d)", POWER_ITERS_MAX,
                       o->power_iters);
    if (o->threads < 0) return lm_fail(err, LM_EARG, "diff: threads must be >= 0 (got %d)", o->threads);
    return LM_OK;
}

/* Both models must have the same layers and every module the same shape. */
static int check_models(const lm_model *a, const lm_model *b, lm_err *err) {
    if (a->cfg.n_layer != b->cfg.n_layer)
        return lm_fail(err, LM_ESHAPE, "%s vs %s: %d layers vs %d layers", a->path, b->path, a->cfg.n_layer,
                       b->cfg.n_layer);
    for (int i = 0; i < a->cfg.n_layer; i++) {
        for (int j = 0; j < LM_N_MODULES; j++) {
            const lm_tensor *ta = a->layers[i].w[j], *tb = b->layers[i].w[j];
            if (!ta || !tb)
                return lm_fail(err, LM_ESHAPE, "%s: layer %d %s: no weight", !ta ? a->path : b->path, i,
                               lm_module_names[j]);
            if (lm_tensor_rows(ta) != lm_tensor_rows(tb) || lm_tensor_cols(ta) != lm_tensor_cols(tb)) {
                char sa[64], sb[64];
                return lm_fail(err, LM_ESHAPE, "%s vs %s: layer %d %s: %s vs %s", a->path, b->path, i,
                               lm_module_names[j], lm_fmt_shape(sa, sizeof sa, ta->shape, ta->ndim),
                               lm_fmt_shape(sb, sizeof sb, tb->shape, tb->ndim));
            }
            int64_t m = lm_tensor_rows(ta), n = lm_tensor_cols(ta);
            if (m < 1 || n < 1 || m > INT32_MAX || n > INT32_MAX)
                return lm_fail(err, LM_EUNSUPPORTED, "%s: layer %d %s: shape %lld x %lld out of range", a->path,
                               i, lm_module_names[j], (long long)m, (long long)n);
        }
    }
    return LM_OK;
}

/* Larger tensors first, so the last ones to finish are small. */
static int task_cmp(const void *x, const void *y) {
    const diff_task *a = x, *b = y;
    int64_t sa = a->m * a->n, sb = b->m * b->n;
    if (sa != sb) return sa > sb ? -1 : 1;
    if (a->layer != b->layer) return a->layer - b->layer;
    return a->mod - b->mod;
}

/* ------------------------------------------------------------------------ */
/* Several processes                                                         */
/* ------------------------------------------------------------------------ */

/* owner[0..n) of tasks of bytes[], for P processes (lm_share_greedy: the
 * largest first, each to the process with the fewest bytes so far; the same
 * plan on every process); *mine = the bytes of process me. */
static int share_tasks(const double *bytes, int n, int P, int me, int *owner, double *mine, lm_err *err) {
    int rc = LM_OK;
    double *load = alloc_n((uint64_t)P, sizeof *load, err, "diff shares", &rc);
    if (!rc) rc = lm_share_greedy(bytes, n, P, owner, load, err);
    if (!rc) *mine = load[me];
    lm_free(load);
    return rc;
}

/* The dist of a run of several processes, else NULL. */
static const lm_attr_dist *several(const lm_diff_opts *o) {
    return o->dist && o->dist->size > 1 ? o->dist : NULL;
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                               */
/* ------------------------------------------------------------------------ */

/* Fill the four result matrices from the finished tasks (see layermap.h for
 * the values of a zero update and of a zero base). */
static void fill_results(const diff_run *r, const lm_model *a, const lm_model *b, lm_matrix *out[LM_DIFF_COUNT]) {
    const lm_diff_opts *o = r->o;
    for (int i = 0; i < r->n_tasks; i++) {
        const diff_task *t = &r->tasks[i];
        double rel, cos;
        if (t->st.dd == 0) {
            rel = 0.0;
            cos = 1.0;
        } else {
            rel = t->st.aa > 0 ? sqrt(t->st.dd) / sqrt(t->st.aa) : NAN;
            cos = t->st.aa > 0 && t->st.bb > 0 ? t->st.ab / (sqrt(t->st.aa) * sqrt(t->st.bb)) : NAN;
            if (cos > 1) cos = 1;
            if (cos < -1) cos = -1;
        }
        lm_matrix_set(out[LM_DIFF_REL], t->layer, t->mod, rel);
        lm_matrix_set(out[LM_DIFF_DENSITY], t->layer, t->mod, (double)t->st.cnt / ((double)t->m * (double)t->n));
        lm_matrix_set(out[LM_DIFF_COSINE], t->layer, t->mod, cos);
        lm_matrix_set(out[LM_DIFF_RANK], t->layer, t->mod, t->rank);
    }
    for (int k = 0; k < LM_DIFF_COUNT; k++) {
        lm_matrix *mx = out[k];
        snprintf(mx->model, sizeof mx->model, "%.120s -> %.120s", a->name, b->name);
        snprintf(mx->method, sizeof mx->method, "diff.%s", lm_diff_metric_names[k]);
        snprintf(mx->norm, sizeof mx->norm, "%s", lm_norm_name(LM_NORM_NONE));
        switch (k) {
        case LM_DIFF_DENSITY:
            snprintf(mx->note, sizeof mx->note, "base %.200s, ft %.200s, tol=%g", a->path, b->path, o->tol);
            break;
        case LM_DIFF_RANK:
            if (o->rank_k > 0)
                snprintf(mx->note, sizeof mx->note, "base %.180s, ft %.180s, k=%d oversample=%d power_iters=%d seed=%llu",
                         a->path, b->path, o->rank_k, o->oversample, o->power_iters, (unsigned long long)o->seed);
            else
                snprintf(mx->note, sizeof mx->note, "base %.200s, ft %.200s, not computed (k=0)", a->path, b->path);
            break;
        default:
            snprintf(mx->note, sizeof mx->note, "base %.200s, ft %.200s", a->path, b->path);
        }
    }
}

/* The start of lm_diff and lm_diff_overlap: the default options for NULL,
 * the n_out results cleared, the models there (have_models). */
static int diff_start(const lm_diff_opts **o, lm_diff_opts *defaults, lm_matrix **out, int n_out, int have_models,
                      lm_err *err) {
    if (!*o) {
        lm_diff_opts_default(defaults);
        *o = defaults;
    }
    if (!out) return lm_fail(err, LM_EARG, "diff: no output array");
    for (int k = 0; k < n_out; k++) out[k] = NULL;
    return have_models ? LM_OK : lm_fail(err, LM_EARG, "diff: missing model");
}

/* 1 when layer l is to be compared (o->layers selects, NULL = all). */
static int layer_wanted(const lm_diff_opts *o, int l) {
    return !o->layers || (l < o->n_layers_mask && o->layers[l]);
}

/* See layermap.h. Checks, then one task per (layer, module), sorted by size;
 * buffers for every worker and the sketch matrices are allocated up front, so
 * the parallel part's only failures are reads and the backend's
 * linear-algebra workspaces. */
int lm_diff(const lm_model *base, const lm_model *ft, const lm_diff_opts *o, lm_matrix *out[LM_DIFF_COUNT],
            lm_err *err) {
    lm_diff_opts defaults;
    int rc = diff_start(&o, &defaults, out, LM_DIFF_COUNT, base && ft, err);
    if (!rc) rc = check_opts(o, err);
    if (!rc) rc = check_models(base, ft, err);
    if (rc) return rc;

    const int n_layer = base->cfg.n_layer;
    diff_run run;
    memset(&run, 0, sizeof run);
    run.o = o;
    run.be = o->backend ? o->backend : lm_backend_cpu();
    run.L = o->rank_k > 0 ? o->rank_k + o->oversample : 0;
    atomic_init(&run.stop, 0);
    int64_t *ncols = NULL; /* distinct column counts of the modules */
    int n_omega = 0;
    diff_ws *ws = NULL;
    int nt = 0;
    int *owner = NULL; /* several processes: the process of each task */
    double *red = NULL; /* several processes: the per-task results, summed */

    for (int k = 0; k < LM_DIFF_COUNT; k++) {
        out[k] = lm_matrix_new(n_layer);
        if (!out[k]) {
            rc = lm_nomem(err, sizeof(double) * (size_t)n_layer * LM_N_MODULES, "diff matrix");
            goto done;
        }
    }
    run.n_tasks = 0; /* one per (selected layer, module) */
    for (int i = 0; i < n_layer; i++) run.n_tasks += LM_N_MODULES * layer_wanted(o, i);
    if (run.n_tasks == 0) {
        rc = lm_fail(err, LM_EARG, "%s: none of its %d layers is selected", base->path, n_layer);
        goto done;
    }
    for (int k = 0; k < LM_DIFF_COUNT; k++) /* layers left out stay NaN */
        for (size_t c = 0; c < (size_t)n_layer * LM_N_MODULES; c++) out[k]->v[c] = NAN;
    run.tasks = alloc_n((uint64_t)run.n_tasks, sizeof(diff_task), err, "diff tasks", &rc);
    ncols = alloc_n((uint64_t)run.n_tasks, sizeof(int64_t), err, "diff tasks", &rc);
    if (rc) goto done;
    int64_t max_m = 1, max_n = 1;
    int ti = 0;
    for (int i = 0; i < n_layer; i++) {
        if (!layer_wanted(o, i)) continue; /* its weights are never read */
        for (int j = 0; j < LM_N_MODULES; j++) {
            diff_task *t = &run.tasks[ti++];
            memset(t, 0, sizeof *t);
            t->layer = i;
            t->mod = j;
            t->a = base->layers[i].w[j];
            t->b = ft->layers[i].w[j];
            t->m = lm_tensor_rows(t->a);
            t->n = lm_tensor_cols(t->a);
            t->bytes = (double)t->a->nbytes + (double)t->b->nbytes;
            t->rank = NAN;
            int64_t mn = t->m < t->n ? t->m : t->n;
            t->l = run.L == 0 ? 0 : (int)(run.L < mn ? run.L : mn);
            if (t->m > max_m) max_m = t->m;
            if (t->n > max_n) max_n = t->n;
            run.total_bytes += t->bytes;
            if (!t->l) continue;
            int w = 0;
            while (w < n_omega && ncols[w] != t->n) w++;
            if (w == n_omega) ncols[n_omega++] = t->n;
            t->omega = w;
        }
    }
    qsort(run.tasks, (size_t)run.n_tasks, sizeof(diff_task), task_cmp);
    const lm_attr_dist *dist = several(o);
    int n_mine = run.n_tasks;
    if (dist) { /* this process's tasks: owner[i] == dist->rank */
        double *bytes = alloc_n((uint64_t)run.n_tasks, sizeof(double), err, "diff shares", &rc);
        owner = alloc_n((uint64_t)run.n_tasks, sizeof(int), err, "diff shares", &rc);
        for (int i = 0; !rc && i < run.n_tasks; i++) bytes[i] = run.tasks[i].bytes;
        if (!rc) rc = share_tasks(bytes, run.n_tasks, dist->size, dist->rank, owner, &run.total_bytes, err);
        lm_free(bytes);
        if (rc) goto done;
        n_mine = 0;
        for (int i = 0; i < run.n_tasks; i++) n_mine += owner[i] == dist->rank;
    }

    if (n_omega) { /* made on the host, uploaded */
        run.omegas = alloc_n((uint64_t)n_omega, sizeof(float *), err, "diff sketch", &rc);
        if (rc) goto done;
        for (int w = 0; w < n_omega; w++) run.omegas[w] = NULL;
        for (int w = 0; w < n_omega && !rc; w++) {
            size_t cnt = (size_t)ncols[w] * (size_t)run.L;
            float *host = alloc_n(cnt, sizeof(float), err, "diff sketch", &rc);
            run.omegas[w] = alloc_on(run.be, cnt, sizeof(float), err, "diff sketch", &rc);
            if (!rc) {
                gaussian_fill(host, ncols[w], run.L, o->seed);
                run.be->upload(run.be, run.omegas[w], host, cnt * sizeof(float));
            }
            lm_free(host);
        }
        if (rc) goto done;
    }

    nt = lm_num_threads(o->threads);
    if (nt > n_mine) nt = n_mine;
    if (nt < 1) nt = 1;
    ws = alloc_n((uint64_t)nt, sizeof(diff_ws), err, "diff workers", &rc);
    if (rc) goto done;
    memset(ws, 0, sizeof(diff_ws) * (size_t)nt);
    {
        int64_t blk_elems = (run.L ? BLOCK_ELEMS_RANK : BLOCK_ELEMS_STATS);
        if (blk_elems < max_n) blk_elems = max_n; /* at least one row */
        if (blk_elems > BLOCK_ROWS_MAX * max_n) blk_elems = BLOCK_ROWS_MAX * max_n;
        for (int i = 0; i < nt && !rc; i++) rc = ws_alloc(&ws[i], run.be, blk_elems, max_m, max_n, run.L, err);
        if (rc) goto done;
    }

    /* Each worker runs whole tensors, calling BLAS/LAPACK single-threaded,
     * so every tensor's sums come out the same whatever the thread count.
     * OpenBLAS is set to 1 thread meanwhile and restored after: the pthread
     * build would start its own threads, and the OpenMP build runs threaded
     * inside a team of one (an inactive parallel region). In the OpenMP build
     * the call also sets OpenMP's default thread count, restored too. */
    {
        int blas_threads = lm_blas_threads(), omp_threads = omp_get_max_threads();
        int set_blas = run.L > 0;
        if (set_blas) lm_blas_set_threads(1);
        run.last_report = lm_now();
        if (o->progress) o->progress(o->progress_ctx, 0, run.total_bytes, "diff");
        int next = 0;
#pragma omp parallel num_threads(nt)
        {
            diff_ws *w = &ws[omp_get_thread_num()];
            lm_err terr;
            memset(&terr, 0, sizeof terr);
            for (;;) {
                int i;
#pragma omp atomic capture
                i = next++;
                if (i >= run.n_tasks || atomic_load(&run.stop)) break;
                if (owner && owner[i] != dist->rank) continue;
                int trc = run_task(&run, &run.tasks[i], w, &terr);
                if (trc) {
                    terr.code = trc;
                    run_fail(&run, &terr);
                    break;
                }
            }
        }
        if (set_blas) {
            lm_blas_set_threads(blas_threads);
            omp_set_num_threads(omp_threads);
        }
        if (run.rc) {
            rc = run.rc;
            if (err) *err = run.err;
            goto done;
        }
        if (o->progress) o->progress(o->progress_ctx, run.total_bytes, run.total_bytes, "diff");
    }
    if (dist) { /* every task's results on every process: the owner's values, -0.0 elsewhere */
        enum { PER = 6 };
        red = alloc_n((uint64_t)run.n_tasks * PER, sizeof(double), err, "diff results", &rc);
        if (rc) goto done;
        for (int i = 0; i < run.n_tasks; i++) {
            const diff_task *t = &run.tasks[i];
            double *v = red + (size_t)i * PER;
            int me = owner[i] == dist->rank;
            v[0] = me ? t->st.dd : -0.0;
            v[1] = me ? t->st.aa : -0.0;
            v[2] = me ? t->st.bb : -0.0;
            v[3] = me ? t->st.ab : -0.0;
            v[4] = me ? (double)t->st.cnt : -0.0; /* exact below 2^53 */
            v[5] = me ? t->rank : -0.0;
        }
        if ((rc = dist->sum(dist->ctx, red, (size_t)run.n_tasks * PER, err))) goto done;
        for (int i = 0; i < run.n_tasks; i++) {
            diff_task *t = &run.tasks[i];
            const double *v = red + (size_t)i * PER;
            t->st = (lm_diff_sums){.dd = v[0], .aa = v[1], .bb = v[2], .ab = v[3], .cnt = (int64_t)v[4]};
            t->rank = v[5];
        }
    }
    fill_results(&run, base, ft, out);

done:
    if (ws)
        for (int i = 0; i < nt; i++) ws_free(&ws[i]);
    lm_free(ws);
    if (run.omegas)
        for (int w = 0; w < n_omega; w++) run.be->release(run.be, run.omegas[w]);
    lm_free(run.omegas);
    lm_free(run.tasks);
    lm_free(ncols);
    lm_free(owner);
    lm_free(red);
    if (rc)
        for (int k = 0; k < LM_DIFF_COUNT; k++) {
            lm_matrix_free(out[k]);
            out[k] = NULL;
        }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Update-mask overlap of two fine-tunes                                     */
/* ------------------------------------------------------------------------ */

const char *const lm_overlap_metric_names[LM_OVERLAP_COUNT] = {"jaccard", "overlap", "density-a", "density-b"};

/* One (layer, module) of the overlap: three tensors, the counts. */
typedef struct ov_task {
    int layer, mod;
    const lm_tensor *t[3]; /* base, a, b */
    int64_t m, n;
    double bytes;
    int64_t cnt[3];        /* |Ma|, |Mb|, |Ma & Mb| */
} ov_task;

/* Stream row blocks of the three tensors of t through the backend. */
static int ov_run(diff_run *r, ov_task *t, float *blk[3], int64_t blk_rows, lm_err *err) {
    const lm_backend *be = r->be;
    const double row_bytes = t->bytes / (double)t->m;
    int64_t released = 0;
    for (int64_t r0 = 0; r0 < t->m; r0 += blk_rows) {
        if (atomic_load_explicit(&r->stop, memory_order_relaxed)) return LM_OK;
        int64_t nr = t->m - r0 < blk_rows ? t->m - r0 : blk_rows;
        for (int k = 0; k < 3; k++) {
            int rc = be->read_rows(be, blk[k], t->t[k], r0, nr, err);
            if (rc) return rc;
        }
        be->mask_overlap(be, t->cnt, blk[0], blk[1], blk[2], (long)(nr * t->n), r->o->tol);
        int64_t r1 = r0 + nr;
        if ((double)(r1 - released) * row_bytes >= (double)RELEASE_BYTES || r1 == t->m) {
            for (int k = 0; k < 3; k++) release_rows(t->t[k], t->m, released, r1);
            released = r1;
        }
        run_progress(r, (double)nr * row_bytes);
    }
    return LM_OK;
}

static double ratio_or_nan(int64_t num, int64_t den) { return den > 0 ? (double)num / (double)den : NAN; }

/* See layermap.h. One task per (selected layer, module), whole tensors per
 * worker thread (counts are integers: the result does not depend on the
 * order or the thread count). */
int lm_diff_overlap(const lm_model *base, const lm_model *a, const lm_model *b, const lm_diff_opts *o,
                    lm_matrix *out[LM_OVERLAP_COUNT], lm_err *err) {
    lm_diff_opts defaults;
    int rc = diff_start(&o, &defaults, out, LM_OVERLAP_COUNT, base && a && b, err);
    if (!rc) rc = check_opts(o, err);
    if (!rc) rc = check_models(base, a, err);
    if (!rc) rc = check_models(base, b, err);
    if (rc) return rc;
    const int n_layer = base->cfg.n_layer;
    diff_run run;
    memset(&run, 0, sizeof run);
    run.o = o;
    run.be = o->backend ? o->backend : lm_backend_cpu();
    atomic_init(&run.stop, 0);
    ov_task *tasks = NULL;
    float **blks = NULL;
    int n_tasks = 0, nt = 0;
    int *owner = NULL;  /* several processes: the process of each task */
    double *red = NULL; /* several processes: the counts, summed */
    for (int i = 0; i < n_layer; i++) n_tasks += LM_N_MODULES * layer_wanted(o, i);
    if (n_tasks == 0) return lm_fail(err, LM_EARG, "%s: none of its %d layers is selected", base->path, n_layer);
    for (int k = 0; k < LM_OVERLAP_COUNT; k++) {
        out[k] = lm_matrix_new(n_layer);
        if (!out[k]) {
            rc = lm_nomem(err, sizeof(double) * (size_t)n_layer * LM_N_MODULES, "overlap matrix");
            goto done;
        }
        for (size_t c = 0; c < (size_t)n_layer * LM_N_MODULES; c++) out[k]->v[c] = NAN;
    }
    tasks = alloc_n((uint64_t)n_tasks, sizeof *tasks, err, "overlap tasks", &rc);
    if (rc) goto done;
    int64_t max_n = 1;
    int ti = 0;
    for (int i = 0; i < n_layer; i++) {
        if (!layer_wanted(o, i)) continue;
        for (int j = 0; j < LM_N_MODULES; j++) {
            ov_task *t = &tasks[ti++];
            memset(t, 0, sizeof *t);
            t->layer = i;
            t->mod = j;
            t->t[0] = base->layers[i].w[j];
            t->t[1] = a->layers[i].w[j];
            t->t[2] = b->layers[i].w[j];
            t->m = lm_tensor_rows(t->t[0]);
            t->n = lm_tensor_cols(t->t[0]);
            t->bytes = (double)t->t[0]->nbytes + (double)t->t[1]->nbytes + (double)t->t[2]->nbytes;
            run.total_bytes += t->bytes;
            if (t->n > max_n) max_n = t->n;
        }
    }
    const lm_attr_dist *dist = several(o);
    int n_mine = n_tasks;
    if (dist) {
        double *bytes = alloc_n((uint64_t)n_tasks, sizeof(double), err, "overlap shares", &rc);
        owner = alloc_n((uint64_t)n_tasks, sizeof(int), err, "overlap shares", &rc);
        for (int i = 0; !rc && i < n_tasks; i++) bytes[i] = tasks[i].bytes;
        if (!rc) rc = share_tasks(bytes, n_tasks, dist->size, dist->rank, owner, &run.total_bytes, err);
        lm_free(bytes);
        if (rc) goto done;
        n_mine = 0;
        for (int i = 0; i < n_tasks; i++) n_mine += owner[i] == dist->rank;
    }
    int64_t blk_rows = BLOCK_ELEMS_STATS / max_n;
    if (blk_rows < 1) blk_rows = 1;
    if (blk_rows > BLOCK_ROWS_MAX) blk_rows = BLOCK_ROWS_MAX;
    nt = lm_num_threads(o->threads);
    if (nt > n_mine) nt = n_mine;
    if (nt < 1) nt = 1;
    blks = alloc_n((uint64_t)nt * 3, sizeof(float *), err, "overlap blocks", &rc);
    if (rc) goto done;
    for (int i = 0; i < 3 * nt; i++) blks[i] = NULL;
    for (int i = 0; i < 3 * nt && !rc; i++)
        blks[i] = alloc_on(run.be, (uint64_t)blk_rows * (uint64_t)max_n, sizeof(float), err, "overlap block", &rc);
    if (rc) goto done;
    run.last_report = lm_now();
    if (o->progress) o->progress(o->progress_ctx, 0, run.total_bytes, "diff");
    int next = 0;
#pragma omp parallel num_threads(nt)
    {
        float **mine = blks + 3 * omp_get_thread_num();
        lm_err terr;
        memset(&terr, 0, sizeof terr);
        for (;;) {
            int i;
#pragma omp atomic capture
            i = next++;
            if (i >= n_tasks || atomic_load(&run.stop)) break;
            if (owner && owner[i] != dist->rank) continue;
            int trc = ov_run(&run, &tasks[i], mine, blk_rows, &terr);
            if (trc) {
                terr.code = trc;
                run_fail(&run, &terr);
                break;
            }
        }
    }
    if (run.rc) {
        rc = run.rc;
        if (err) *err = run.err;
        goto done;
    }
    if (o->progress) o->progress(o->progress_ctx, run.total_bytes, run.total_bytes, "diff");
    if (dist) { /* every task's counts on every process: the owner's, -0.0 elsewhere (exact below 2^53) */
        red = alloc_n((uint64_t)n_tasks * 3, sizeof(double), err, "overlap results", &rc);
        if (rc) goto done;
        for (int i = 0; i < n_tasks; i++)
            for (int k = 0; k < 3; k++) red[3 * i + k] = owner[i] == dist->rank ? (double)tasks[i].cnt[k] : -0.0;
        if ((rc = dist->sum(dist->ctx, red, (size_t)n_tasks * 3, err))) goto done;
        for (int i = 0; i < n_tasks; i++)
            for (int k = 0; k < 3; k++) tasks[i].cnt[k] = (int64_t)red[3 * i + k];
    }
    for (int i = 0; i < n_tasks; i++) {
        const ov_task *t = &tasks[i];
        int64_t na = t->cnt[0], nb = t->cnt[1], nab = t->cnt[2], all = t->m * t->n;
        lm_matrix_set(out[LM_OVERLAP_JACCARD], t->layer, t->mod, ratio_or_nan(nab, na + nb - nab));
        lm_matrix_set(out[LM_OVERLAP_COEF], t->layer, t->mod, ratio_or_nan(nab, na < nb ? na : nb));
        lm_matrix_set(out[LM_OVERLAP_DENSITY_A], t->layer, t->mod, ratio_or_nan(na, all));
        lm_matrix_set(out[LM_OVERLAP_DENSITY_B], t->layer, t->mod, ratio_or_nan(nb, all));
    }
    for (int k = 0; k < LM_OVERLAP_COUNT; k++) {
        snprintf(out[k]->model, sizeof out[k]->model, "%.120s vs %.120s", a->name, b->name);
        snprintf(out[k]->method, sizeof out[k]->method, "diff.%s", lm_overlap_metric_names[k]);
        snprintf(out[k]->norm, sizeof out[k]->norm, "%s", lm_norm_name(LM_NORM_NONE));
        snprintf(out[k]->note, sizeof out[k]->note, "updates of %.150s vs %.150s from base %.150s, tol=%g", a->path,
                 b->path, base->path, o->tol);
    }
done:
    if (blks)
        for (int i = 0; i < 3 * nt; i++) run.be->release(run.be, blks[i]);
    lm_free(blks);
    lm_free(tasks);
    lm_free(owner);
    lm_free(red);
    if (rc)
        for (int k = 0; k < LM_OVERLAP_COUNT; k++) {
            lm_matrix_free(out[k]);
            out[k] = NULL;
        }
    return rc;
}
