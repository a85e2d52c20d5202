/*
 * test_engine.c -- the forward/backward engine and every attribution method
 * against the PyTorch float64 reference (tests/ref/gen_torch_ref.py writes
 * tests/data/ref/<model>.safetensors): logits, loss, per-module weight
 * gradients, method matrices, greedy decoding; plus the invariants of
 * module-output methods and checkpoint/resume identity.
 */
#include "test.h"

#include "compute/engine.h"
#include "ref_file.h"

#include <math.h>

/* A test that includes this file may run every engine on its own backend
 * (lm_engine_opts.backend; NULL is the CPU backend). */
#ifndef ENGINE_BACKEND
#define ENGINE_BACKEND NULL
#endif

/* ---- reference file access --------------------------------------------- */

static lm_st_file *ref;

/* Read a reference tensor of the open reference file. */
static float *ref_get(const char *name, int64_t *n) { return ref_tensor(ref, name, n); }

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, int64_t n) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d; /* NaN counts as worst */
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

static double rel_err_mat(const lm_matrix *m, const float *b) {
    float tmp[4096];
    int n = m->n_layer * LM_N_MODULES;
    for (int i = 0; i < n; i++) tmp[i] = (float)m->v[i];
    return rel_err(tmp, b, n);
}

/* ---- dataset from the reference sequences ------------------------------ */

typedef struct refdata {
    lm_dataset ds;
    lm_seq seqs[2];
} refdata;

static int load_refdata(refdata *r) {
    memset(r, 0, sizeof *r);
    for (int s = 0; s < 2; s++) {
        char name[64];
        int64_t n, nm;
        snprintf(name, sizeof name, "s%d.tokens", s);
        float *tk = ref_get(name, &n);
        snprintf(name, sizeof name, "s%d.mask", s);
        float *mk = ref_get(name, &nm);
        if (!tk || !mk || n != nm) return -1;
        lm_seq *q = &r->seqs[s];
        q->n = (int)n;
        q->tok = malloc(sizeof(int32_t) * (size_t)n);
        q->mask = malloc((size_t)n);
        for (int i = 0; i < n; i++) {
            q->tok[i] = (int32_t)tk[i];
            q->mask[i] = mk[i] != 0;
        }
        free(tk);
        free(mk);
        r->ds.n_tokens += n;
        for (int i = 0; i + 1 < n; i++) r->ds.n_targets += q->mask[i];
    }
    r->ds.seqs = r->seqs;
    r->ds.n_seq = 2;
    return 0;
}

static void free_refdata(refdata *r) {
    for (int s = 0; s < 2; s++) {
        free(r->seqs[s].tok);
        free(r->seqs[s].mask);
    }
}

/* ---- gradient capture hook --------------------------------------------- */

typedef struct gcap {
    lm_engine *e;
    double worst;
    char worst_name[64];
    int compared;
} gcap;

static int hook_grad_cmp(void *ctx, int l, int m, const float *dY, const float *Y, const float *X,
                         const float *W, int n) {
    (void)Y;
    (void)W;
    gcap *g = ctx;
    int out = lm_eng_module_out(g->e, m), in = lm_eng_module_in(g->e, m);
    static const char *short_names[] = {"q", "k", "v", "o", "up", "down", "gate"};
    char name[64];
    snprintf(name, sizeof name, "s0.grad.%d.%s", l, short_names[m]);
    int64_t cnt;
    float *want = ref_get(name, &cnt);
    if (!want || cnt != (int64_t)out * in) {
        free(want);
        return 0;
    }
    /* dY and X are buffers of the engine's backend: read through it */
    const lm_backend *be = lm_eng_backend(g->e);
    float *G = calloc((size_t)out * in, sizeof(float)), *hdy = malloc(sizeof(float) * (size_t)n * out),
          *hx = malloc(sizeof(float) * (size_t)n * in);
    be->download(be, hdy, dY, sizeof(float) * (size_t)n * out);
    be->download(be, hx, X, sizeof(float) * (size_t)n * in);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < out; i++) {
            float d = hdy[(long)t * out + i];
            for (int j = 0; j < in; j++) G[(long)i * in + j] += d * hx[(long)t * in + j];
        }
    free(hdy);
    free(hx);
    double e = rel_err(G, want, cnt);
    if (!(e <= g->worst)) {
        g->worst = e;
        snprintf(g->worst_name, sizeof g->worst_name, "%s", name);
    }
    g->compared++;
    free(G);
    free(want);
    return 0;
}

/* ---- Spearman rank correlation ----------------------------------------- */

static void ranks(const double *v, double *r, int n) {
    for (int i = 0; i < n; i++) {
        int less = 0, eq = 0;
        for (int j = 0; j < n; j++) {
            if (v[j] < v[i]) less++;
            else if (v[j] == v[i]) eq++;
        }
        r[i] = less + (eq + 1) / 2.0;
    }
}

static double spearman(const double *a, const double *b, int n) {
    double ra[1024], rb[1024], ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    ranks(a, ra, n);
    ranks(b, rb, n);
    for (int i = 0; i < n; i++) {
        ma += ra[i] / n;
        mb += rb[i] / n;
    }
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - ma) * (rb[i] - mb);
        saa += (ra[i] - ma) * (ra[i] - ma);
        sbb += (rb[i] - mb) * (rb[i] - mb);
    }
    return sab / sqrt(saa * sbb);
}

/* ---- one model against its reference ----------------------------------- */

typedef struct tol {
    double logits, grad, method, ablate;
} tol;

/* act_bytes / weight_bytes: the engine's caches (0 = defaults, which keep
 * every layer of these small models; 1 = keep none: every layer is
 * recomputed in the backward and dequantized again for each pass). */
static void check_model(const char *model_dir, const char *ref_path, tol tl, int llama_block, size_t act_bytes,
                        size_t weight_bytes) {
    lm_err err = {0};
    lm_model *m = NULL;
    lm_engine *e = NULL;
    refdata rd;
    printf("== %s (activation cache %zu, weight cache %zu)\n", model_dir, act_bytes, weight_bytes);
    CHECK_OK(lm_st_open(&ref, ref_path, &err), &err);
    if (!ref) return;
    CHECK_OK(lm_model_open(&m, model_dir, &err), &err);
    if (!m) goto out;
    CHECK(load_refdata(&rd) == 0, "%s: reference sequences missing", ref_path);
    /* methods run with both sequences packed in one pass (batch 2); the
     * reference computes them one by one */
    lm_engine_opts eo = {.max_seq = 64, .max_batch = 2, .act_cache_bytes = act_bytes, .weight_cache_bytes = weight_bytes,
                         .backend = ENGINE_BACKEND};
    CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    if (!e) goto out2;
    int V = m->cfg.vocab, L = m->cfg.n_layer;

    /* logits and loss of each sequence */
    for (int s = 0; s < 2; s++) {
        lm_seq *q = &rd.seqs[s];
        float *logits = malloc(sizeof(float) * (size_t)q->n * V);
        double loss = 0;
        CHECK_OK(lm_eng_forward(e, &(lm_fwd_req){.seqs = q, .nseq = 1, .use_loss = 1, .loss = &loss, .logits = logits}, &err),
                 &err);
        char name[64];
        int64_t cnt;
        snprintf(name, sizeof name, "s%d.logits", s);
        float *want = ref_get(name, &cnt);
        CHECK(want && cnt == (int64_t)q->n * V, "%s missing", name);
        if (want) {
            double re = rel_err(logits, want, cnt);
            printf("  s%d logits max rel err %.3g\n", s, re);
            CHECK(re <= tl.logits, "s%d logits rel err %.3g > %.3g", s, re, tl.logits);
        }
        snprintf(name, sizeof name, "s%d.loss", s);
        float *wl = ref_get(name, NULL);
        if (wl) CHECK_CLOSE(loss, wl[0], 1e-6, tl.logits, "sequence loss");
        free(wl);
        free(want);
        free(logits);
    }

    /* every module's weight gradient of s0 */
    gcap g = {e, 0, "", 0};
    lm_hooks hk = {&g, NULL, hook_grad_cmp, NULL};
    double loss;
    CHECK_OK(lm_eng_forward(e, &(lm_fwd_req){.seqs = &rd.seqs[0], .nseq = 1, .use_loss = 1, .grad = 1, .loss = &loss},
                            &err),
             &err);
    CHECK_OK(lm_eng_backward(e, &(lm_bwd_req){.to = 0, .hk = &hk}, &err), &err);
    printf("  gradients: %d modules compared, worst rel err %.3g (%s)\n", g.compared, g.worst, g.worst_name);
    CHECK(g.compared == 7 * L, "compared %d gradients, want %d", g.compared, 7 * L);
    CHECK(g.worst <= tl.grad, "gradient rel err %.3g > %.3g at %s", g.worst, tl.grad, g.worst_name);

    /* every method over the dataset {s0, s1} */
    lm_matrix *mats[LM_METHOD_COUNT] = {0};
    for (int meth = 0; meth < LM_METHOD_COUNT; meth++) {
        lm_attr_opts ao;
        lm_attr_opts_default(&ao);
        ao.batch = 2;
        lm_attr_result res;
        int rc = lm_attribute(e, &rd.ds, (lm_method)meth, &ao, &res, &err);
        CHECK(rc == LM_OK, "%s: %s", lm_method_names[meth], err.msg);
        if (rc) continue;
        char name[64];
        snprintf(name, sizeof name, "method.%s", lm_method_names[meth]);
        float *want = ref_get(name, NULL);
        CHECK(want != NULL, "%s missing from the reference", name);
        if (want) {
            double re = rel_err_mat(res.m, want);
            double t = (meth == LM_METHOD_ABLATE || meth == LM_METHOD_ABLATE_MEAN || meth == LM_METHOD_IG)
                           ? tl.ablate : tl.method;
            printf("  %-20s max rel err %.3g\n", lm_method_names[meth], re);
            CHECK(re <= t, "%s rel err %.3g > %.3g", lm_method_names[meth], re, t);
        }
        free(want);
        if (meth == LM_METHOD_IG) {
            float *wd = ref_get("method.ig.delta", NULL);
            if (wd) {
                double re = rel_err_mat(res.also, wd);
                CHECK(re <= tl.ablate, "ig exact deltas rel err %.3g", re);
            }
            free(wd);
            float *gap = ref_get("stat.ig_gap", NULL);
            printf("  ig completeness gap %.4g%% (reference %.4g%%)\n", 100 * res.ig_gap, gap ? 100 * gap[0] : NAN);
            if (gap) CHECK_CLOSE(res.ig_gap, gap[0], 1e-4, 0.05, "ig completeness gap");
            free(gap);
        }
        if (meth == LM_METHOD_ACT_SQ) {
            float *wb = ref_get("method.block-influence", NULL);
            if (wb) {
                float bi[256];
                for (int l = 0; l < L; l++) bi[l] = (float)res.block_influence[l];
                double re = rel_err(bi, wb, L);
                printf("  block-influence      max rel err %.3g\n", re);
                CHECK(re <= tl.method, "block influence rel err %.3g", re);
            }
            free(wb);
        }
        float *wloss = ref_get("stat.loss_sum", NULL);
        if (wloss) CHECK_CLOSE(res.loss_sum, wloss[0], 1e-6, tl.logits, "dataset loss");
        free(wloss);
        mats[meth] = res.m;
        res.m = NULL;
        lm_attr_result_free(&res);
    }

    /* invariants of module-output methods in a plain Llama block */
    if (llama_block && mats[LM_METHOD_ACT_GRAD] && mats[LM_METHOD_ABLATE] && mats[LM_METHOD_IG]) {
        double worst = 0;
        int meths[] = {LM_METHOD_ACT_GRAD, LM_METHOD_IG, LM_METHOD_ABLATE};
        for (int k = 0; k < 3; k++) {
            const lm_matrix *mm = mats[meths[k]];
            double scale = 0;
            for (int i = 0; i < L * 7; i++) scale = fmax(scale, fabs(mm->v[i]));
            for (int l = 0; l < L; l++) {
                double *r = mm->v + l * 7;
                worst = fmax(worst, fabs(r[LM_MOD_Q] - r[LM_MOD_K]) / scale);
                worst = fmax(worst, fabs(r[LM_MOD_V] - r[LM_MOD_O]) / scale);
                worst = fmax(worst, fabs(r[LM_MOD_UP] - r[LM_MOD_DOWN]) / scale);
                if (meths[k] == LM_METHOD_ABLATE) worst = fmax(worst, fabs(r[LM_MOD_GATE] - r[LM_MOD_UP]) / scale);
            }
        }
        printf("  invariants q=k, v=o, up=down (ablate: gate=up): worst rel diff %.3g\n", worst);
        CHECK(worst < 1e-4, "module-output invariants broken: %.3g", worst);
        /* rank agreement of the approximations with the exact ablation */
        double rho_ag = spearman(mats[LM_METHOD_ACT_GRAD]->v, mats[LM_METHOD_ABLATE]->v, L * 7);
        double rho_ig = spearman(mats[LM_METHOD_IG]->v, mats[LM_METHOD_ABLATE]->v, L * 7);
        printf("  Spearman vs ablate: act-grad %.4f, ig %.4f\n", rho_ag, rho_ig);
        CHECK(rho_ig > 0.95, "ig should rank like the exact ablation: %.3f", rho_ig);
    }
    /* signed Taylor over weights equals -act-grad where there is no bias */
    if (llama_block && mats[LM_METHOD_GRAD_WEIGHT_SIGNED] && mats[LM_METHOD_ACT_GRAD]) {
        double worst = 0, scale = 0;
        for (int i = 0; i < L * 7; i++) scale = fmax(scale, fabs(mats[LM_METHOD_ACT_GRAD]->v[i]));
        for (int i = 0; i < L * 7; i++)
            worst = fmax(worst, fabs(mats[LM_METHOD_GRAD_WEIGHT_SIGNED]->v[i] + mats[LM_METHOD_ACT_GRAD]->v[i]) / scale);
        CHECK(worst < 1e-4, "sum W*G should equal sum dY*Y: %.3g", worst);
    }
    for (int i = 0; i < LM_METHOD_COUNT; i++) lm_matrix_free(mats[i]);
    lm_engine_free(e);
out2:
    free_refdata(&rd);
    lm_model_close(m);
out:
    lm_st_close(ref);
    ref = NULL;
}

/* Greedy decoding of stories260K from BOS reproduces the known story. */
static void check_greedy(void) {
    char path[1024];
    lm_err err = {0};
    lm_model *m = NULL;
    lm_engine *e = NULL;
    CHECK_OK(lm_model_open(&m, model_path(path, sizeof path, "stories260K-hf"), &err), &err);
    if (!m) return;
    lm_engine_opts eo = {.max_seq = 64};
    CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    CHECK_OK(lm_st_open(&ref, "tests/data/ref/stories260K-hf.safetensors", &err), &err);
    int64_t n = 0;
    float *want = ref ? ref_get("greedy", &n) : NULL;
    int32_t bos = 1, *out = NULL;
    int nout = 0;
    if (e && want) {
        CHECK_OK(lm_generate_greedy(e, &bos, 1, (int)n - 1, &out, &nout, &err), &err);
        int same = nout == n;
        for (int i = 0; same && i < n; i++) same = out[i] == (int32_t)want[i];
        CHECK(same, "greedy decoding differs from the reference (%d tokens)", nout);
    }
    free(out);
    free(want);
    lm_st_close(ref);
    ref = NULL;
    lm_engine_free(e);
    lm_model_close(m);
}

/* Interrupted run + resume ends bit-identical to an uninterrupted run. */
static void check_resume(void) {
    char path[1024], ck[1024];
    lm_err err = {0};
    lm_model *m = NULL;
    lm_engine *e = NULL;
    refdata rd;
    CHECK_OK(lm_model_open(&m, model_path(path, sizeof path, "stories260K-hf"), &err), &err);
    CHECK_OK(lm_st_open(&ref, "tests/data/ref/stories260K-hf.safetensors", &err), &err);
    if (!m || !ref) return;
    load_refdata(&rd);
    lm_engine_opts eo = {.max_seq = 64};
    CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    snprintf(ck, sizeof ck, "%s/resume.ckpt", scratch_dir());
    lm_method meths[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_ABLATE_MEAN, LM_METHOD_ACT_SQ};
    for (int k = 0; k < 3 && e; k++) {
        lm_attr_opts ao;
        lm_attr_opts_default(&ao);
        lm_attr_result full, part, rest;
        CHECK_OK(lm_attribute(e, &rd.ds, meths[k], &ao, &full, &err), &err);
        remove(ck);
        ao.checkpoint_path = ck;
        ao.checkpoint_secs = 0;
        ao.max_seqs = 1;
        CHECK_OK(lm_attribute(e, &rd.ds, meths[k], &ao, &part, &err), &err);
        CHECK(!part.complete && part.m == NULL, "a stopped run is not complete");
        ao.resume = 1;
        ao.max_seqs = 0;
        CHECK_OK(lm_attribute(e, &rd.ds, meths[k], &ao, &rest, &err), &err);
        int same = full.m && rest.m && !memcmp(full.m->v, rest.m->v, sizeof(double) * 7 * m->cfg.n_layer);
        CHECK(same, "%s: resumed run differs from the uninterrupted one", lm_method_names[meths[k]]);
        CHECK(rest.loss_sum == full.loss_sum, "resumed loss differs");
        lm_attr_result_free(&full);
        lm_attr_result_free(&part);
        lm_attr_result_free(&rest);
    }
    /* a checkpoint of another method is refused */
    if (e) {
        lm_attr_opts ao;
        lm_attr_opts_default(&ao);
        ao.checkpoint_path = ck;
        ao.resume = 1;
        lm_attr_result r;
        int rc = lm_attribute(e, &rd.ds, LM_METHOD_FISHER, &ao, &r, &err);
        CHECK(rc == LM_EARG && strstr(err.msg, "resume.ckpt"), "foreign checkpoint: rc %d %s", rc, err.msg);
    }
    free_refdata(&rd);
    lm_st_close(ref);
    ref = NULL;
    lm_engine_free(e);
    lm_model_close(m);
}

/* The ways a pass keeps layer intermediates (--act-cache) give the same
 * numbers bit for bit: every layer's full set, compact sets for some or all
 * layers (their derived fields remade before the backward), none (every
 * layer's forward again). Budgets are found by scanning, so that each layout
 * is met whatever the buffer sizes; methods with backwards (one, several,
 * ig's many) over both reference sequences packed in one pass. */
static void check_act_layouts(const char *model_dir, const char *ref_path, int compat) {
    lm_err err = {0};
    lm_model *m = NULL;
    refdata rd;
    CHECK_OK(lm_st_open(&ref, ref_path, &err), &err);
    CHECK_OK(lm_model_open(&m, model_dir, &err), &err);
    if (!ref || !m) return;
    load_refdata(&rd);
    const lm_method meths[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER, LM_METHOD_ACT_GRAD, LM_METHOD_GRAD_NORM,
                               LM_METHOD_IG};
    enum { NM = sizeof meths / sizeof meths[0] };
    int L = m->cfg.n_layer;
    /* layouts: 0 none kept, 1 some compact, 2 all compact, 3 all full */
    size_t budget[4] = {0};
    for (double b = 4096; b < 1e9 && !budget[3]; b *= 1.1) {
        lm_engine *e = NULL;
        lm_engine_opts eo = {.max_seq = 64, .max_batch = 2, .act_cache_bytes = (size_t)b, .ggml_compat = compat,
                             .backend = ENGINE_BACKEND};
        if (lm_engine_new(&e, m, &eo, &err)) break;
        int ns, cp;
        lm_eng_act_layout(e, &ns, &cp);
        int k = ns == 0 ? 0 : cp && ns < L ? 1 : cp ? 2 : 3;
        if (!budget[k]) budget[k] = (size_t)b;
        lm_engine_free(e);
    }
    lm_attr_result res[4][NM];
    memset(res, 0, sizeof res);
    for (int k = 3; k >= 0; k--) {
        CHECK(budget[k] > 0, "%s: no budget gives layout %d", model_dir, k);
        if (!budget[k]) continue;
        lm_engine_opts eo = {.max_seq = 64, .max_batch = 2, .act_cache_bytes = budget[k], .ggml_compat = compat,
                             .backend = ENGINE_BACKEND};
        CHECK_OK(test_attr_many(m, &rd.ds, &eo, meths, NM, res[k], &err), &err);
        for (int i = 0; k < 3 && i < NM; i++) {
            const lm_attr_result *a = &res[3][i], *b = &res[k][i];
            int same = a->m && b->m && !memcmp(a->m->v, b->m->v, sizeof(double) * 7 * (size_t)L) &&
                       a->loss_sum == b->loss_sum;
            if (a->also) same = same && b->also && !memcmp(a->also->v, b->also->v, sizeof(double) * 7 * (size_t)L);
            CHECK(same, "%s%s: %s with activation budget %zu (layout %d) differs from every layer kept", model_dir,
                  compat ? " (ggml arithmetic)" : "", lm_method_names[meths[i]], budget[k], k);
        }
    }
    printf("== %s%s: activation layouts none / some compact / all compact / all full at %zu / %zu / %zu / %zu bytes: "
           "identical\n", model_dir, compat ? " (ggml arithmetic)" : "", budget[0], budget[1], budget[2], budget[3]);
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < NM; i++) lm_attr_result_free(&res[k][i]);
    free_refdata(&rd);
    lm_st_close(ref);
    ref = NULL;
    lm_model_close(m);
}

/* The quantized and bf16 forms run every method and stay near the F32 result. */
static void check_other_dtypes(void) {
    const char *forms[] = {"stories260K-hf-bf16", "stories260K-q8_0.gguf", "stories260K.gguf"};
    const double tol_gw[] = {0.05, 0.05, 1e-4};
    lm_err err = {0};
    CHECK_OK(lm_st_open(&ref, "tests/data/ref/stories260K-hf.safetensors", &err), &err);
    if (!ref) return;
    refdata rd;
    load_refdata(&rd);
    float *want = ref_get("method.grad-weight", NULL);
    for (int f = 0; f < 3; f++) {
        char path[1024];
        lm_model *m = NULL;
        lm_engine *e = NULL;
        CHECK_OK(lm_model_open(&m, model_path(path, sizeof path, forms[f]), &err), &err);
        if (!m) continue;
        lm_engine_opts eo = {.max_seq = 64};
        CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
        for (int meth = 0; e && meth < LM_METHOD_COUNT; meth++) {
            lm_attr_opts ao;
            lm_attr_opts_default(&ao);
            ao.ig_steps = 4;
            lm_attr_result res;
            int rc = lm_attribute(e, &rd.ds, (lm_method)meth, &ao, &res, &err);
            CHECK(rc == LM_OK, "%s %s: %s", forms[f], lm_method_names[meth], err.msg);
            if (rc) continue;
            int finite = 1;
            for (int i = 0; i < 7 * m->cfg.n_layer; i++) finite &= isfinite(res.m->v[i]);
            CHECK(finite, "%s %s: non-finite values", forms[f], lm_method_names[meth]);
            if (meth == LM_METHOD_GRAD_WEIGHT && want) {
                double re = rel_err_mat(res.m, want);
                printf("  %s grad-weight vs F32 reference: rel err %.3g\n", forms[f], re);
                CHECK(re <= tol_gw[f], "%s grad-weight rel err %.3g", forms[f], re);
            }
            lm_attr_result_free(&res);
        }
        lm_engine_free(e);
        lm_model_close(m);
    }
    free(want);
    free_refdata(&rd);
    lm_st_close(ref);
    ref = NULL;
}

#ifndef TEST_ENGINE_NO_MAIN
int main(void) {
    char path[1024];
    tol stories = {1e-5, 1e-4, 1e-4, 1e-3};
    const char *st = "tests/data/ref/stories260K-hf.safetensors";
    check_model(model_path(path, sizeof path, "stories260K-hf"), st, stories, 1, 0, 0);
    check_model("tests/data/tiny-llama-untied", "tests/data/ref/tiny-llama-untied.safetensors", stories, 1, 0, 0);
    check_model("tests/data/tiny-qwen2", "tests/data/ref/tiny-qwen2.safetensors", stories, 0, 0, 0);
    check_model("tests/data/tiny-qwen3", "tests/data/ref/tiny-qwen3.safetensors", stories, 0, 0, 0);
    check_model("tests/data/tiny-gemma3", "tests/data/ref/tiny-gemma3.safetensors", stories, 0, 0, 0);
    /* the bounded-memory paths: no layer kept (recompute every layer, weights
     * dequantized per pass), and some layers kept */
    check_model(model_path(path, sizeof path, "stories260K-hf"), st, stories, 1, 1, 1);
    check_model(model_path(path, sizeof path, "stories260K-hf"), st, stories, 1, 2u << 20, 1);
    check_model("tests/data/tiny-gemma3", "tests/data/ref/tiny-gemma3.safetensors", stories, 0, 1, 1);
    check_act_layouts(model_path(path, sizeof path, "stories260K-hf"), st, 0);
    check_act_layouts(model_path(path, sizeof path, "stories260K-hf"), st, 1);
    check_act_layouts("tests/data/tiny-qwen3", "tests/data/ref/tiny-qwen3.safetensors", 0);
    check_act_layouts("tests/data/tiny-gemma3", "tests/data/ref/tiny-gemma3.safetensors", 0);
    check_greedy();
    check_resume();
    check_other_dtypes();
    return TEST_END();
}
#endif
