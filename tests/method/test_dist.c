/*
 * test_dist.c -- data parallelism in the library, without MPI: the shares of
 * lm_dataset_share(_skip), and lm_attribute_many with lm_attr_dist run by P
 * "ranks" as threads of this process, each with its own model and engine,
 * whose sum() adds the ranks' buffers in shared memory (in rank order, behind
 * barriers, as a reduce + broadcast would). On stories260K, for P = 2 and 3:
 * a shared-pass set (grad-weight, fisher, act-grad, act-sq), ablate-mean (its
 * means summed between its passes) with ig, and --batch 3, each equal to the
 * one-process result within 1e-9 relative (the same float64 contributions
 * added in another order: tests/cli/mpi_cmp.py), with the same counts,
 * samples and split-half correlation. Checkpoints: a run of P ranks canceled
 * by one of them (every rank stops at the same round, process 0 writes the
 * reduced sums) and resumed on another number of ranks (1, 2, 3) ends equal to
 * one uninterrupted process, also canceled in ablate-mean's second pass and
 * twice in a row; until_stable on 2 and 3 ranks (data order, a sample past the
 * stopping point taken back out) stops at the same sample as one process with
 * the same result, also interrupted and resumed on another rank count;
 * max_seqs with several ranks is refused. lm_diff and lm_diff_overlap on 2
 * and 3 ranks: each reads a part, the parts add up to the whole, and the
 * matrices equal one process's bit for bit. The MPI build itself is tested by
 * tests/cli/test_mpi.sh.
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
    double until;        /* until_stable */
    const char *ckpt;    /* checkpoint_path (resumed when it exists) */
    int cancel_after;    /* > 0: cancel this rank after this many samples of its own */
    int calls;
    volatile int cancel;
    lm_attr_result res[LM_METHOD_COUNT];
    /* diff (diff[0] set): base, fine-tune(s); the results; the bytes this rank read */
    const char *diff[3];
    lm_matrix *dm[LM_DIFF_COUNT];
    double diff_bytes;
    int rc;
    lm_err err;
} rank_ctx;

/* lm_progress_fn: after each of this rank's samples; cancels at cancel_after. */
static void count_samples(void *ctx, double done, double total, const char *what) {
    (void)done;
    (void)total;
    (void)what;
    rank_ctx *r = ctx;
    if (++r->calls == r->cancel_after) r->cancel = 1;
}

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

/* lm_progress_fn of diff: the last total is this rank's bytes. */
static void diff_progress(void *ctx, double done, double total, const char *what) {
    (void)done;
    (void)what;
    ((rank_ctx *)ctx)->diff_bytes = total;
}

/* diff (two models) or the overlap (three) on this rank. */
static void rank_diff(rank_ctx *r) {
    lm_model *m[3] = {0};
    int n = r->diff[2] ? 3 : 2;
    r->rc = LM_OK;
    for (int i = 0; i < n && !r->rc; i++) r->rc = lm_model_open(&m[i], r->diff[i], &r->err);
    if (!r->rc) {
        lm_diff_opts o;
        lm_diff_opts_default(&o);
        o.threads = 1;
        o.progress = diff_progress;
        o.progress_ctx = r;
        r->dist = (lm_attr_dist){.rank = r->rank, .size = r->w->size, .ctx = r, .sum = thread_sum};
        o.dist = r->w->size > 0 ? &r->dist : NULL;
        r->rc = n == 2 ? lm_diff(m[0], m[1], &o, r->dm, &r->err) : lm_diff_overlap(m[0], m[1], m[2], &o, r->dm, &r->err);
    }
    for (int i = 0; i < n; i++) lm_model_close(m[i]);
}

static void *rank_main(void *arg) {
    rank_ctx *r = arg;
    if (r->diff[0]) {
        rank_diff(r);
        return NULL;
    }
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
        o.until_stable = r->until;
        o.checkpoint_path = r->ckpt;
        o.resume = r->ckpt != NULL;
        o.checkpoint_secs = 1e9; /* saved when canceled and at the end */
        o.cancel = &r->cancel;
        o.progress = count_samples;
        o.progress_ctx = r;
        r->calls = 0;
        r->cancel = 0;
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

/* The ranks r[0..P) of one run, as threads (P = 1: one process, no dist). */
static void run_world(rank_ctx *r, int P) {
    static world w;
    memset(&w, 0, sizeof w);
    w.size = P > 1 ? P : 0;
    if (P > 1) pthread_barrier_init(&w.bar, NULL, (unsigned)P);
    pthread_t th[MAXP];
    for (int p = 0; p < P; p++) {
        memset(r[p].res, 0, sizeof r[p].res);
        r[p].w = &w;
        r[p].rank = p;
        if (P > 1)
            pthread_create(&th[p], NULL, rank_main, &r[p]);
        else
            rank_main(&r[p]);
    }
    for (int p = 0; P > 1 && p < P; p++) pthread_join(th[p], NULL);
    if (P > 1) pthread_barrier_destroy(&w.bar);
    CHECK(!w.mismatch, "ranks summed buffers of different lengths");
}

/* Every rank's results against one process's, then freed. */
static void compare_ranks(const char *what, rank_ctx *one, rank_ctx *r, int P) {
    const lm_method *methods = one->methods;
    int n_methods = one->n_methods;
    for (int p = 0; p < P; p++) {
        CHECK(r[p].rc == LM_OK, "%s: rank %d of %d: %s", what, p, P, r[p].err.msg);
        if (r[p].rc || one->rc) continue;
        for (int i = 0; i < n_methods; i++) {
            const lm_attr_result *a = &one->res[i], *b = &r[p].res[i];
            CHECK(close_matrix(a->m, b->m) && close_matrix(a->also, b->also), "%s: %s: rank %d of %d differs", what,
                  lm_method_names[methods[i]], p, P);
            CHECK(a->n_tokens == b->n_tokens && a->n_targets == b->n_targets && a->n_samples == b->n_samples &&
                      a->n_seq_done == b->n_seq_done && a->stopped_stable == b->stopped_stable,
                  "%s: %s: rank %d of %d: counts %lld %lld %d %d %d vs %lld %lld %d %d %d", what,
                  lm_method_names[methods[i]], p, P, (long long)b->n_tokens, (long long)b->n_targets, b->n_samples,
                  b->n_seq_done, b->stopped_stable, (long long)a->n_tokens, (long long)a->n_targets, a->n_samples,
                  a->n_seq_done, a->stopped_stable);
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
}

static void free_results(rank_ctx *one) {
    for (int i = 0; i < one->n_methods; i++) lm_attr_result_free(&one->res[i]);
}

/* diff and the overlap on P ranks: each rank reads a part of the bytes, the
 * parts add up to one process's, and every rank's matrices equal one
 * process's bit for bit (each cell is one rank's, the others add -0.0). */
static void run_diff(const char *what, const char *base, const char *ft, const char *ft2) {
    rank_ctx one = {.diff = {base, ft, ft2}};
    run_world(&one, 1);
    CHECK(one.rc == LM_OK, "%s: one process: %s", what, one.err.msg);
    int n_out = ft2 ? LM_OVERLAP_COUNT : LM_DIFF_COUNT;
    for (int P = 2; P <= MAXP && one.rc == LM_OK; P++) {
        rank_ctx r[MAXP];
        memset(r, 0, sizeof r);
        for (int p = 0; p < P; p++) r[p] = (rank_ctx){.diff = {base, ft, ft2}};
        run_world(r, P);
        double bytes = 0;
        for (int p = 0; p < P; p++) {
            CHECK(r[p].rc == LM_OK, "%s: rank %d of %d: %s", what, p, P, r[p].err.msg);
            if (r[p].rc) continue;
            bytes += r[p].diff_bytes;
            CHECK(r[p].diff_bytes > 0 && r[p].diff_bytes < one.diff_bytes, "%s: rank %d of %d read %.0f of %.0f bytes",
                  what, p, P, r[p].diff_bytes, one.diff_bytes);
            for (int k = 0; k < n_out; k++) {
                size_t n = (size_t)one.dm[k]->n_layer * LM_N_MODULES, same = 0;
                for (size_t c = 0; c < n; c++)
                    same += !memcmp(&one.dm[k]->v[c], &r[p].dm[k]->v[c], sizeof(double));
                CHECK(same == n, "%s: matrix %d, rank %d of %d: %zu of %zu cells bit for bit one process's", what, k,
                      p, P, same, n);
                lm_matrix_free(r[p].dm[k]);
            }
        }
        CHECK(bytes == one.diff_bytes, "%s, %d ranks: %.0f bytes read in all, one process %.0f", what, P, bytes,
              one.diff_bytes);
    }
    for (int k = 0; k < n_out; k++) lm_matrix_free(one.dm[k]);
}

/* One process, then P threads with a dist: the same results. */
static void run_split(const char *what, const char *model, const lm_method *methods, int n_methods, int seq_len,
                      int64_t max_tokens, int batch, int P) {
    rank_ctx one = {.model = model, .seq_len = seq_len, .max_tokens = max_tokens, .batch = batch,
                    .methods = methods, .n_methods = n_methods};
    run_world(&one, 1);
    CHECK(one.rc == LM_OK, "%s: one process: %s", what, one.err.msg);
    rank_ctx r[MAXP];
    for (int p = 0; p < P; p++) r[p] = one;
    run_world(r, P);
    compare_ranks(what, &one, r, P);
    free_results(&one);
}

/* Copy file a to b. */
static int copy_file(const char *a, const char *b) {
    FILE *f = fopen(a, "rb"), *g = f ? fopen(b, "wb") : NULL;
    int ok = f && g;
    char buf[1 << 14];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0) ok = fwrite(buf, 1, n, g) == n;
    if (f) fclose(f);
    if (g && fclose(g)) ok = 0;
    return ok ? 0 : -1;
}

/* A run of the spec `one` on P1 ranks, rank `who` canceling after `after`
 * samples of its own: every rank returns LM_ECANCELED and the checkpoint
 * exists; then, from a copy of it, resumed on each rank count of P2[0..n2)
 * (0 ends the list): each equal to one uninterrupted process. */
static void run_resume(const char *what, rank_ctx *spec, int P1, int who, int after, const int *P2) {
    char ck[1024], ck0[1100], name[256];
    snprintf(ck, sizeof ck, "%s/dist.ckpt", scratch_dir());
    snprintf(ck0, sizeof ck0, "%s.0", ck);
    remove(ck);
    rank_ctx one = *spec;
    one.ckpt = NULL;
    run_world(&one, 1);
    CHECK(one.rc == LM_OK, "%s: one process: %s", what, one.err.msg);
    rank_ctx r[MAXP];
    for (int p = 0; p < P1; p++) {
        r[p] = *spec;
        r[p].ckpt = ck;
        r[p].cancel_after = p == who ? after : 0;
    }
    run_world(r, P1);
    int all = 1;
    for (int p = 0; p < P1; p++) {
        all &= r[p].rc == LM_ECANCELED;
        if (r[p].rc == LM_OK) /* should not happen: free what came */
            for (int i = 0; i < spec->n_methods; i++) lm_attr_result_free(&r[p].res[i]);
    }
    CHECK(all, "%s: rank %d of %d canceled after %d samples: every rank canceled (rank 0: %d %s)", what, who, P1,
          after, r[0].rc, r[0].err.msg);
    CHECK(copy_file(ck, ck0) == 0, "%s: the canceled run left its checkpoint %s", what, ck);
    for (int i = 0; P2[i]; i++) {
        snprintf(name, sizeof name, "%s: %d ranks canceled, resumed on %d", what, P1, P2[i]);
        CHECK(copy_file(ck0, ck) == 0, "%s: copy %s", name, ck0);
        for (int p = 0; p < P2[i]; p++) {
            r[p] = *spec;
            r[p].ckpt = ck;
        }
        run_world(r, P2[i]);
        compare_ranks(name, &one, r, P2[i]);
    }
    free_results(&one);
    remove(ck);
    remove(ck0);
}

/* Interrupted twice: 3 ranks, then 2 (canceled again), then 1. */
static void run_resume_twice(const char *what, rank_ctx *spec) {
    char ck[1024];
    snprintf(ck, sizeof ck, "%s/dist2.ckpt", scratch_dir());
    remove(ck);
    rank_ctx one = *spec;
    run_world(&one, 1);
    rank_ctx r[MAXP];
    const int P[3] = {3, 2, 1}, after[3] = {2, 2, 0};
    for (int step = 0; step < 3; step++) {
        for (int p = 0; p < P[step]; p++) {
            r[p] = *spec;
            r[p].ckpt = ck;
            r[p].cancel_after = p == P[step] - 1 ? after[step] : 0;
        }
        run_world(r, P[step]);
        if (step < 2) {
            CHECK(r[0].rc == LM_ECANCELED, "%s: step %d on %d ranks canceled: %d %s", what, step, P[step], r[0].rc,
                  r[0].err.msg);
            for (int p = 0; p < P[step]; p++)
                if (r[p].rc == LM_OK)
                    for (int i = 0; i < spec->n_methods; i++) lm_attr_result_free(&r[p].res[i]);
        }
    }
    compare_ranks(what, &one, r, 1);
    free_results(&one);
    remove(ck);
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
        o.max_seqs = 2;
        lm_method gw = LM_METHOD_GRAD_WEIGHT;
        lm_attr_result res;
        int rc = lm_attribute_many(e, ds, &gw, 1, &o, &res, &err);
        CHECK(rc == LM_EARG && strstr(err.msg, "max_seqs"), "max_seqs with 2 ranks: %d %s", rc, err.msg);
        o.max_seqs = 0;
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

    /* checkpoints: canceled on some ranks, resumed on others */
    const int to_1_3[] = {1, 3, 0}, to_1_2[] = {1, 2, 0}, to_2[] = {2, 0};
    rank_ctx sh = {.model = model, .seq_len = 64, .max_tokens = 1024, .batch = 1, .methods = shared, .n_methods = 4};
    run_resume("shared pass", &sh, 2, 1, 3, to_1_3);
    rank_ctx b3 = sh;
    b3.batch = 3;
    run_resume("shared pass, batch 3", &b3, 3, 0, 1, to_1_2);
    rank_ctx ow = {.model = model, .seq_len = 32, .max_tokens = 256, .batch = 1, .methods = own, .n_methods = 2};
    run_resume("ablate-mean+ig, in the means", &ow, 3, 0, 2, to_1_2);
    run_resume("ablate-mean+ig, ablating", &ow, 2, 1, 6, to_1_3);
    run_resume_twice("shared pass, 3 then 2 then 1 ranks", &sh);

    /* until_stable: data order on every rank count, also resumed on another */
    const lm_method stab[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER, LM_METHOD_WANDA};
    rank_ctx us = {.model = model, .seq_len = 32, .max_tokens = 2048, .batch = 1, .methods = stab, .n_methods = 3,
                   .until = 0.9};
    rank_ctx one = us;
    run_world(&one, 1);
    CHECK(one.rc == LM_OK && one.res[0].stopped_stable && one.res[0].n_seq_done < 64,
          "until-stable stops before the data ends: %d of 64 sequences (%s)", one.res[0].n_seq_done, one.err.msg);
    printf("  until-stable 0.9: %d of 64 sequences, split-half %.4f\n", one.res[0].n_seq_done, one.res[0].split_half);
    for (int P = 2; P <= 3; P++) {
        rank_ctx r[MAXP];
        for (int p = 0; p < P; p++) r[p] = us;
        run_world(r, P);
        char what[64];
        snprintf(what, sizeof what, "until-stable, %d ranks", P);
        compare_ranks(what, &one, r, P);
    }
    free_results(&one);
    run_resume("until-stable", &us, 3, 2, 2, to_1_2);
    rank_ctx um = {.model = model, .seq_len = 32, .max_tokens = 512, .batch = 1, .methods = own, .n_methods = 1,
                   .until = 0.5};
    run_resume("until-stable, ablate-mean", &um, 2, 0, 12, to_2);
    test_refused(model);

    char ft[4096], ft8[4096];
    model_path(ft, sizeof ft, "stories260K-ft.gguf");
    model_path(ft8, sizeof ft8, "stories260K-q8_0.gguf");
    run_diff("diff", model, ft, NULL);
    run_diff("diff overlap", model, ft, ft8);
    return TEST_END();
}
