/*
 * test_dist.c -- data parallelism in the library, without MPI: the shares of
 * lm_dataset_share, and lm_attribute_many with lm_attr_dist run by P
 * "ranks" as threads of this process, each with its own model and engine,
 * whose sum() adds the ranks' buffers in shared memory (in rank order, behind
 * barriers, as a reduce + broadcast would). On stories260K, for P = 2 and 3:
 * a shared-pass set (grad-weight, fisher, act-grad, act-sq), ablate-mean (its
 * means summed between its passes) with ig, and --batch 3, each equal to the
 * one-process result within 1e-9 relative (the same float64 contributions
 * added in another order: tests/cli/mpi_cmp.py), with the same counts,
 * samples and split-half correlation; a checkpoint with several ranks is
 * refused. The MPI build itself is tested by tests/cli/test_mpi.sh.
 */
#include "test.h"

#include <math.h>
#include <pthread.h>

/* ---- lm_dataset_share ------------------------------------------------------ */

static void test_shares(void) {
    lm_err err = {0};
    int lens[] = {10, 3, 7, 7, 1, 9, 4, 4, 12, 2, 5};
    int n = (int)(sizeof lens / sizeof lens[0]);
    lm_seq seqs[sizeof lens / sizeof lens[0]];
    memset(seqs, 0, sizeof seqs);
    lm_dataset d = {.seqs = seqs, .n_seq = n};
    for (int i = 0; i < n; i++) {
        seqs[i].n = lens[i];
        d.n_tokens += lens[i];
    }
    for (int group = 1; group <= 4; group++)
        for (int parts = 1; parts <= 13; parts++) {
            int ns = (n - 1) / group + 1, owner[16], again[16];
            int64_t load[16] = {0}, biggest = 0;
            CHECK_OK(lm_dataset_share(&d, group, parts, owner, &err), &err);
            CHECK_OK(lm_dataset_share(&d, group, parts, again, &err), &err);
            CHECK(!memcmp(owner, again, sizeof(int) * (size_t)ns), "group %d parts %d: not deterministic", group, parts);
            int in_range = 1;
            for (int k = 0; k < ns; k++) {
                int64_t t = 0;
                for (int s = k * group; s < n && s < (k + 1) * group; s++) t += lens[s];
                if (t > biggest) biggest = t;
                if (owner[k] < 0 || owner[k] >= parts)
                    in_range = 0;
                else
                    load[owner[k]] += t;
            }
            CHECK(in_range, "group %d parts %d: an owner out of range", group, parts);
            int64_t lo = load[0], hi = load[0];
            for (int p = 1; p < parts; p++) {
                if (load[p] < lo) lo = load[p];
                if (load[p] > hi) hi = load[p];
            }
            /* greedy on the least loaded part: no part exceeds another by more than one sample */
            CHECK(hi - lo <= biggest, "group %d parts %d: loads %lld..%lld, largest sample %lld", group, parts,
                  (long long)lo, (long long)hi, (long long)biggest);
        }
    int owner[16];
    CHECK(lm_dataset_share(&d, 0, 2, owner, &err) == LM_EARG, "group 0 refused");
    CHECK(lm_dataset_share(&d, 1, 0, owner, &err) == LM_EARG, "0 parts refused");
}

/* ---- ranks as threads ---------------------------------------------------------- */

#define MAXP 3

typedef struct world {
    int size;
    pthread_barrier_t bar;
    double *acc; /* rank 0's allocation, of n */
    size_t n;
    int mismatch; /* a rank's n differed */
} world;

typedef struct rank_ctx {
    world *w;
    int rank;
    lm_attr_dist dist;
    /* the run */
    const char *model;
    int seq_len, batch;
    int64_t max_tokens;
    const lm_method *methods;
    int n_methods;
    lm_attr_result res[LM_METHOD_COUNT];
    int rc;
    lm_err err;
} rank_ctx;

/* lm_attr_dist.sum: every rank's buf added into one buffer, rank by rank, then copied back to each. */
static int thread_sum(void *ctx, double *buf, size_t n, lm_err *err) {
    (void)err;
    rank_ctx *r = ctx;
    world *w = r->w;
    pthread_barrier_wait(&w->bar);
    if (r->rank == 0) {
        w->acc = calloc(n ? n : 1, sizeof(double));
        w->n = n;
    }
    pthread_barrier_wait(&w->bar);
    if (n != w->n) w->mismatch = 1;
    for (int p = 0; p < w->size; p++) {
        if (p == r->rank && !w->mismatch)
            for (size_t i = 0; i < n; i++) w->acc[i] += buf[i];
        pthread_barrier_wait(&w->bar);
    }
    if (!w->mismatch) memcpy(buf, w->acc, sizeof(double) * n);
    pthread_barrier_wait(&w->bar);
    if (r->rank == 0) free(w->acc);
    return 0;
}

static void *rank_main(void *arg) {
    rank_ctx *r = arg;
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_dataset *ds = NULL;
    lm_engine *e = NULL;
    r->rc = lm_model_open(&m, r->model, &r->err);
    if (!r->rc) r->rc = lm_tokenizer_open(&tok, m, &r->err);
    lm_data_opts dopt = {.seq_len = r->seq_len, .max_tokens = r->max_tokens};
    if (!r->rc) r->rc = lm_dataset_load(&ds, "data/calib.txt", tok, &dopt, &r->err);
    lm_engine_opts eo = {.threads = 1, .max_seq = r->seq_len, .max_batch = r->batch};
    if (!r->rc) r->rc = lm_engine_new(&e, m, &eo, &r->err);
    if (!r->rc) {
        lm_attr_opts o;
        lm_attr_opts_default(&o);
        o.ig_steps = 2;
        o.batch = r->batch;
        r->dist = (lm_attr_dist){.rank = r->rank, .size = r->w->size, .ctx = r, .sum = thread_sum};
        o.dist = r->w->size > 0 ? &r->dist : NULL;
        r->rc = lm_attribute_many(e, ds, r->methods, r->n_methods, &o, r->res, &r->err);
    }
    lm_engine_free(e);
    lm_dataset_free(ds);
    lm_tokenizer_free(tok);
    lm_model_close(m);
    return NULL;
}

/* |a - b| <= 1e-9 max(|a|, |b|) cell by cell (NaN == NaN) */
static int close_cells(const double *a, const double *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) {
            if (isnan(a[i]) != isnan(b[i])) return 0;
            continue;
        }
        if (fabs(a[i] - b[i]) > 1e-9 * fmax(fabs(a[i]), fabs(b[i]))) return 0;
    }
    return 1;
}

static int close_matrix(const lm_matrix *a, const lm_matrix *b) {
    if (!a || !b) return a == b;
    size_t n = (size_t)a->n_layer * LM_N_MODULES;
    if (a->n_layer != b->n_layer || !close_cells(a->v, b->v, n)) return 0;
    if ((!a->se) != (!b->se)) return 0;
    /* the standard error's rounding scales with (sum2 + sum^2/N) / se (mpi_cmp.py): for these
     * cells, where the contributions share a sign, 1e-9 of the se itself is ample */
    return !a->se || close_cells(a->se, b->se, n);
}

/* One process, then P threads with a dist: the same results. */
static void run_split(const char *what, const char *model, const lm_method *methods, int n_methods, int seq_len,
                      int64_t max_tokens, int batch, int P) {
    rank_ctx one = {.model = model, .seq_len = seq_len, .max_tokens = max_tokens, .batch = batch,
                    .methods = methods, .n_methods = n_methods};
    world w1 = {.size = 0};
    one.w = &w1;
    rank_main(&one);
    CHECK(one.rc == LM_OK, "%s: one process: %s", what, one.err.msg);
    world w = {.size = P};
    pthread_barrier_init(&w.bar, NULL, (unsigned)P);
    rank_ctx r[MAXP];
    pthread_t th[MAXP];
    for (int p = 0; p < P; p++) {
        r[p] = one;
        memset(r[p].res, 0, sizeof r[p].res);
        r[p].w = &w;
        r[p].rank = p;
        pthread_create(&th[p], NULL, rank_main, &r[p]);
    }
    for (int p = 0; p < P; p++) pthread_join(th[p], NULL);
    pthread_barrier_destroy(&w.bar);
    CHECK(!w.mismatch, "%s: ranks summed buffers of different lengths", what);
    for (int p = 0; p < P; p++) {
        CHECK(r[p].rc == LM_OK, "%s: rank %d of %d: %s", what, p, P, r[p].err.msg);
        if (r[p].rc || one.rc) continue;
        for (int i = 0; i < n_methods; i++) {
            const lm_attr_result *a = &one.res[i], *b = &r[p].res[i];
            CHECK(close_matrix(a->m, b->m) && close_matrix(a->also, b->also), "%s: %s: rank %d of %d differs", what,
                  lm_method_names[methods[i]], p, P);
            CHECK(a->n_tokens == b->n_tokens && a->n_targets == b->n_targets && a->n_samples == b->n_samples &&
                      a->n_seq_done == b->n_seq_done,
                  "%s: %s: rank %d of %d: counts %lld %lld %d %d vs %lld %lld %d %d", what,
                  lm_method_names[methods[i]], p, P, (long long)b->n_tokens, (long long)b->n_targets, b->n_samples,
                  b->n_seq_done, (long long)a->n_tokens, (long long)a->n_targets, a->n_samples, a->n_seq_done);
            CHECK(fabs(a->loss_sum - b->loss_sum) <= 1e-9 * fabs(a->loss_sum), "%s: loss %.17g vs %.17g", what,
                  b->loss_sum, a->loss_sum);
            CHECK((isnan(a->split_half) && isnan(b->split_half)) || fabs(a->split_half - b->split_half) <= 1e-9,
                  "%s: %s: split-half %.17g vs %.17g", what, lm_method_names[methods[i]], b->split_half,
                  a->split_half);
            if (a->block_influence)
                CHECK(b->block_influence &&
                          close_cells(a->block_influence, b->block_influence, (size_t)a->m->n_layer),
                      "%s: block influence", what);
        }
        for (int i = 0; i < n_methods; i++) lm_attr_result_free(&r[p].res[i]);
    }
    for (int i = 0; i < n_methods; i++) lm_attr_result_free(&one.res[i]);
}

static int refuse(void *ctx, double *buf, size_t n, lm_err *err) {
    (void)ctx;
    (void)buf;
    (void)n;
    (void)err;
    return LM_EINTERNAL; /* never reached: the call is refused first */
}

static void test_refused(const char *model) {
    lm_err err = {0};
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_dataset *ds = NULL;
    lm_engine *e = NULL;
    CHECK_OK(lm_model_open(&m, model, &err), &err);
    if (!m) return;
    CHECK_OK(lm_tokenizer_open(&tok, m, &err), &err);
    lm_data_opts dopt = {.seq_len = 32, .max_tokens = 64};
    if (tok) CHECK_OK(lm_dataset_load(&ds, "data/calib.txt", tok, &dopt, &err), &err);
    lm_engine_opts eo = {.threads = 1, .max_seq = 32};
    if (ds) CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    if (e) {
        lm_attr_dist d = {.rank = 0, .size = 2, .sum = refuse};
        lm_attr_opts o;
        lm_attr_opts_default(&o);
        o.dist = &d;
        o.checkpoint_path = "never-written.ckpt";
        lm_method gw = LM_METHOD_GRAD_WEIGHT;
        lm_attr_result res;
        int rc = lm_attribute_many(e, ds, &gw, 1, &o, &res, &err);
        CHECK(rc == LM_EARG && strstr(err.msg, "not yet supported with more than one rank"), "checkpoint: %d %s", rc,
              err.msg);
        o.checkpoint_path = NULL;
        d.rank = 2;
        rc = lm_attribute_many(e, ds, &gw, 1, &o, &res, &err);
        CHECK(rc == LM_EARG, "rank 2 of 2 refused: %d %s", rc, err.msg);
    }
    lm_engine_free(e);
    lm_dataset_free(ds);
    lm_tokenizer_free(tok);
    lm_model_close(m);
}

int main(void) {
    test_shares();
    char model[4096];
    model_path(model, sizeof model, "stories260K.gguf");
    const lm_method shared[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER, LM_METHOD_ACT_GRAD, LM_METHOD_ACT_SQ};
    const lm_method own[] = {LM_METHOD_ABLATE_MEAN, LM_METHOD_IG};
    for (int P = 2; P <= 3; P++) {
        char what[64];
        snprintf(what, sizeof what, "shared pass, %d ranks", P);
        run_split(what, model, shared, 4, 64, 1024, 1, P);
        snprintf(what, sizeof what, "ablate-mean+ig, %d ranks", P);
        run_split(what, model, own, 2, 32, 256, 1, P);
    }
    run_split("shared pass, batch 3, 3 ranks", model, shared, 4, 64, 1024, 3, 3);
    run_split("ablate-mean, 1 sequence, 3 ranks", model, own, 1, 200, 200, 1, 3);
    test_refused(model);
    return TEST_END();
}
