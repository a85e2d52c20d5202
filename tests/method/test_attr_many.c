/*
 * test_attr_many.c -- several methods from one pass (lm_attribute_many):
 * the shared-pass set {grad-weight, fisher, grad-norm, act-grad, act-sq}
 * and a mixed set with own-pass methods give matrices bit-identical to
 * separate lm_attribute runs (same arithmetic, deterministic reductions), on
 * stories260K (GGUF and HF) and SmolLM2-135M (when present; LM_REQUIRE_REAL=1
 * makes its absence a failure). The cancel flag returns LM_ECANCELED with
 * the checkpoint saved, and the resumed run ends identical; a checkpoint of
 * another method set is refused naming the file.
 */
#include "test.h"

#include <sys/stat.h>

/* Bitwise equality of two matrices (NULL == NULL). */
static int same_matrix(const lm_matrix *a, const lm_matrix *b) {
    if (!a || !b) return a == b;
    return a->n_layer == b->n_layer && !memcmp(a->v, b->v, sizeof(double) * (size_t)a->n_layer * LM_N_MODULES) &&
           !strcmp(a->method, b->method);
}

/* Every field of two results that a method computes, bitwise. */
static int same_result(const lm_attr_result *a, const lm_attr_result *b, int L) {
    int ok = same_matrix(a->m, b->m) && same_matrix(a->also, b->also) && a->loss_sum == b->loss_sum &&
             a->n_targets == b->n_targets && a->n_tokens == b->n_tokens && a->complete == b->complete &&
             a->n_seq_done == b->n_seq_done && a->ig_gap == b->ig_gap;
    ok = ok && (!a->block_influence) == (!b->block_influence);
    if (ok && a->block_influence) ok = !memcmp(a->block_influence, b->block_influence, sizeof(double) * (size_t)L);
    return ok;
}

typedef struct run_ctx {
    lm_model *m;
    lm_tokenizer *tok;
    lm_dataset *ds;
    lm_engine *e;
} run_ctx;

/* threads: 1 for the tiny models (their products are too small to share
 * out); the real model runs on every core, where the reductions' order
 * could depend on the threads if they were not deterministic. */
static int open_run(run_ctx *r, const char *model, int seq_len, int64_t max_tokens, int batch, int threads) {
    lm_err err = {0};
    memset(r, 0, sizeof *r);
    CHECK_OK(lm_model_open(&r->m, model, &err), &err);
    if (!r->m) return -1;
    CHECK_OK(lm_tokenizer_open(&r->tok, r->m, &err), &err);
    if (!r->tok) return -1;
    lm_data_opts dopt = {.seq_len = seq_len, .max_tokens = max_tokens};
    CHECK_OK(lm_dataset_load(&r->ds, "data/calib.txt", r->tok, &dopt, &err), &err);
    if (!r->ds) return -1;
    lm_engine_opts eo = {.threads = threads, .max_seq = seq_len, .max_batch = batch};
    CHECK_OK(lm_engine_new(&r->e, r->m, &eo, &err), &err);
    return r->e ? 0 : -1;
}

static void close_run(run_ctx *r) {
    lm_engine_free(r->e);
    lm_dataset_free(r->ds);
    lm_tokenizer_free(r->tok);
    lm_model_close(r->m);
}

/* methods[0..n) from one lm_attribute_many call == n lm_attribute calls. */
static void check_set(run_ctx *r, const char *what, const lm_method *methods, int n, int batch, int ig_steps) {
    lm_err err = {0};
    lm_attr_opts ao;
    lm_attr_opts_default(&ao);
    ao.batch = batch;
    ao.ig_steps = ig_steps;
    lm_attr_result many[LM_METHOD_COUNT], one;
    int rc = lm_attribute_many(r->e, r->ds, methods, n, &ao, many, &err);
    CHECK(rc == LM_OK, "%s: lm_attribute_many: %s", what, err.msg);
    if (rc) return;
    for (int i = 0; i < n; i++) {
        CHECK_OK(lm_attribute(r->e, r->ds, methods[i], &ao, &one, &err), &err);
        int same = same_result(&many[i], &one, r->m->cfg.n_layer);
        printf("  %s: %-18s %s\n", what, lm_method_names[methods[i]], same ? "identical" : "DIFFERS");
        CHECK(same, "%s: %s from the set differs from its own run", what, lm_method_names[methods[i]]);
        CHECK(many[i].m && !strcmp(many[i].m->method, lm_method_names[methods[i]]), "%s: result %d is for %s", what,
              i, many[i].m ? many[i].m->method : "(none)");
        lm_attr_result_free(&one);
    }
    for (int i = 0; i < n; i++) lm_attr_result_free(&many[i]);
}

/* lm_attr_opts.layers: ablate, ablate-mean, ig, act-sq and wanda work on the
 * chosen layers only: those rows equal the full run's bit for bit (the same
 * interventions from the same stored inputs), the others are NaN; a gradient
 * method computes every layer. */
static void check_layer_mask(run_ctx *r) {
    static const lm_method ms[] = {LM_METHOD_ABLATE, LM_METHOD_ABLATE_MEAN, LM_METHOD_IG, LM_METHOD_ACT_SQ,
                                   LM_METHOD_WANDA, LM_METHOD_GRAD_WEIGHT};
    const int n = (int)(sizeof ms / sizeof ms[0]), L = r->m->cfg.n_layer;
    static const uint8_t keep[] = {0, 1, 0, 1}; /* layers 1 and 3 (of 5): layer 4 is past the mask */
    lm_err err = {0};
    lm_attr_opts ao;
    lm_attr_opts_default(&ao);
    ao.ig_steps = 4;
    lm_attr_result full[LM_METHOD_COUNT], part[LM_METHOD_COUNT];
    CHECK_OK(lm_attribute_many(r->e, r->ds, ms, n, &ao, full, &err), &err);
    ao.layers = keep;
    ao.n_layers = 4;
    CHECK_OK(lm_attribute_many(r->e, r->ds, ms, n, &ao, part, &err), &err);
    for (int i = 0; i < n && full[i].m && part[i].m; i++) {
        int skips = ms[i] != LM_METHOD_GRAD_WEIGHT, ok = 1;
        for (int l = 0; l < L; l++)
            for (int c = 0; c < LM_N_MODULES; c++) {
                double a = lm_matrix_get(full[i].m, l, c), b = lm_matrix_get(part[i].m, l, c);
                int on = l < 4 && keep[l];
                ok &= (on || !skips) ? a == b : isnan(b);
            }
        CHECK(ok, "--layers 1,3: %s: chosen rows as in the full run, the others %s", lm_method_names[ms[i]],
              skips ? "NaN" : "computed");
        printf("  layer mask: %-12s %s\n", lm_method_names[ms[i]], ok ? "ok" : "WRONG");
    }
    for (int i = 0; i < n; i++) {
        lm_attr_result_free(&full[i]);
        lm_attr_result_free(&part[i]);
    }
}

static const lm_method shared_set[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER, LM_METHOD_GRAD_NORM,
                                       LM_METHOD_ACT_GRAD, LM_METHOD_ACT_SQ};

/* Cancel after the first pass, then resume: identical to an uninterrupted run. */
typedef struct cancel_ctx {
    volatile int *flag;
    int calls;
} cancel_ctx;

static void cancel_after_first(void *ctx, double done, double total, const char *what) {
    (void)done;
    (void)total;
    (void)what;
    cancel_ctx *c = ctx;
    if (++c->calls == 1) *c->flag = 1;
}

static void check_cancel(run_ctx *r) {
    lm_err err = {0};
    char ck[1024];
    snprintf(ck, sizeof ck, "%s/many.ckpt", scratch_dir());
    const lm_method set[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_ACT_SQ, LM_METHOD_ABLATE_MEAN};
    int n = 3;
    lm_attr_opts ao;
    lm_attr_opts_default(&ao);
    lm_attr_result full[3], part[3], rest[3];
    CHECK_OK(lm_attribute_many(r->e, r->ds, set, n, &ao, full, &err), &err);

    /* canceled before anything: LM_ECANCELED, no result */
    volatile int flag = 1;
    remove(ck);
    ao.cancel = &flag;
    ao.checkpoint_path = ck;
    ao.checkpoint_secs = 1e9;
    int rc = lm_attribute_many(r->e, r->ds, set, n, &ao, part, &err);
    CHECK(rc == LM_ECANCELED && strstr(err.msg, "many.ckpt"), "cancel set before the call: rc %d (%s)", rc, err.msg);
    CHECK(part[0].m == NULL && part[2].m == NULL, "a canceled call returns no matrices");
    struct stat st;
    CHECK(stat(ck, &st) == 0, "a canceled run saves its checkpoint");

    /* canceled after one pass (the flag is set from the progress callback),
     * then resumed: once, and after every pass of the run (through the shared
     * pass, ablate-mean's two phases and the boundaries between them) */
    int n_pass = 3 * r->ds->n_seq; /* shared pass + ablate-mean's two phases, batch 1 */
    for (int every = 0; every < 2; every++) {
        remove(ck);
        cancel_ctx cc = {&flag, 0};
        ao.progress = cancel_after_first;
        ao.progress_ctx = &cc;
        ao.resume = 0;
        int cancels = 0;
        for (int guard = 0; guard < 4 * n_pass; guard++) {
            cc.calls = 0;
            flag = 0;
            rc = lm_attribute_many(r->e, r->ds, set, n, &ao, part, &err);
            ao.resume = 1;
            if (rc != LM_ECANCELED) break;
            cancels++;
            if (!every) ao.progress = NULL;
        }
        int want = every ? n_pass - 1 : 1;
        CHECK(rc == LM_OK && cancels == want, "canceled %d time(s) (want %d), then resumed: rc %d (%s)", cancels,
              want, rc, err.msg);
        for (int i = 0; rc == LM_OK && i < n; i++) {
            CHECK(same_result(&full[i], &part[i], r->m->cfg.n_layer), "%s: canceled + resumed run differs (%s)",
                  lm_method_names[set[i]], every ? "after every pass" : "once");
            lm_attr_result_free(&part[i]);
        }
    }
    ao.progress = NULL;
    ao.cancel = NULL;

    /* resuming with another method set is refused naming the file */
    const lm_method other[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER};
    ao.resume = 1;
    rc = lm_attribute_many(r->e, r->ds, other, 2, &ao, rest, &err);
    CHECK(rc == LM_EARG && strstr(err.msg, "many.ckpt") && strstr(err.msg, "ablate-mean"),
          "checkpoint of another set: rc %d (%s)", rc, err.msg);
    /* the same set in another order resumes (a finished checkpoint: same results) */
    const lm_method perm[] = {LM_METHOD_ABLATE_MEAN, LM_METHOD_GRAD_WEIGHT, LM_METHOD_ACT_SQ};
    CHECK_OK(lm_attribute_many(r->e, r->ds, perm, 3, &ao, rest, &err), &err);
    CHECK(same_result(&rest[0], &full[2], r->m->cfg.n_layer) && same_result(&rest[1], &full[0], r->m->cfg.n_layer),
          "the set in another order resumes from the finished checkpoint");
    for (int i = 0; i < 3; i++) lm_attr_result_free(&rest[i]);
    for (int i = 0; i < 3; i++) lm_attr_result_free(&full[i]);

    /* bad sets */
    const lm_method dup[] = {LM_METHOD_FISHER, LM_METHOD_FISHER};
    ao.checkpoint_path = NULL;
    rc = lm_attribute_many(r->e, r->ds, dup, 2, &ao, rest, &err);
    CHECK(rc == LM_EARG && strstr(err.msg, "fisher"), "a method twice: rc %d (%s)", rc, err.msg);
    rc = lm_attribute_many(r->e, r->ds, dup, 0, &ao, rest, &err);
    CHECK(rc == LM_EARG, "no methods: rc %d", rc);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char path[1024];
    run_ctx r;
    const char *stories[] = {"stories260K.gguf", "stories260K-hf"};
    for (int k = 0; k < 2; k++) {
        printf("== %s\n", stories[k]);
        if (open_run(&r, model_path(path, sizeof path, stories[k]), 64, k ? 1024 : 256, 3, 1) == 0) {
            check_set(&r, "shared", shared_set, 5, 3, 32);
            if (k == 0) {
                const lm_method mixed[] = {LM_METHOD_ABLATE, LM_METHOD_GRAD_WEIGHT_SIGNED, LM_METHOD_IG,
                                           LM_METHOD_WANDA, LM_METHOD_ABLATE_MEAN};
                check_set(&r, "mixed", mixed, 5, 3, 4);
            }
        }
        close_run(&r);
    }
    if (open_run(&r, model_path(path, sizeof path, "stories260K-hf"), 64, 256, 1, 1) == 0) {
        check_cancel(&r);
        check_layer_mask(&r);
    }
    close_run(&r);

    struct stat st;
    cache_path(path, sizeof path, "SmolLM2-135M-Instruct.Q4_1.gguf");
    if (stat(path, &st) == 0) {
        printf("== %s\n", path);
        if (open_run(&r, path, 128, 256, 1, 0) == 0) check_set(&r, "shared", shared_set, 5, 1, 32);
        close_run(&r);
    } else {
        const char *req = getenv("LM_REQUIRE_REAL");
        printf("%s missing: SmolLM2 part skipped%s\n", path, req && *req == '1' ? " (LM_REQUIRE_REAL=1: fails)" : "");
        CHECK(!(req && *req == '1'), "%s missing and LM_REQUIRE_REAL=1", path);
    }
    return TEST_END();
}
