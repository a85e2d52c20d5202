/*
 * test_real.c -- real models from the wild against the implementations users
 * trust: every tensor of SmolLM2-135M (Q4_1/Q8_0) and Gemma 3 270M
 * (Q4_K/Q5_0/Q6_K/Q8_0...) against the gguf package's dequantization
 * (tests/data/real_dequant), and tokens, perplexity and greedy continuations
 * against llama.cpp (tests/data/llamacpp), stories260K included.
 *
 * The real GGUFs are fetched by scripts/fetch_models.sh into
 * $LAYERMAP_CACHE (default ~/.cache/layermap). When they are missing the
 * test says so and fails only if LM_REQUIRE_REAL=1 (set by `make check`).
 */
#include "test.h"

#include "compute/engine.h"
#include "format/gguf.h"
#include "ref_file.h"

#include <cJSON.h>
#include <math.h>
#include <sys/stat.h>

static cJSON *load_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t r = fread(buf, 1, (size_t)n, f);
    buf[r] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int32_t *json_ids(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return v;
}

/* Every tensor: sum, sum of squares and sample rows vs the gguf package. */
static void check_dequant(const char *gguf_path, const char *ref_json) {
    lm_err err = {0};
    lm_gguf *g = NULL;
    cJSON *j = load_json(ref_json);
    CHECK(j != NULL, "%s unreadable", ref_json);
    CHECK_OK(lm_gguf_open(&g, gguf_path, &err), &err);
    if (!g || !j) goto out;
    cJSON *ts = cJSON_GetObjectItem(j, "tensors");
    int n = cJSON_GetArraySize(ts), ok = 0;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_GetArrayItem(ts, i);
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        const lm_tensor *lt = lm_gguf_find_tensor(g, name);
        CHECK(lt != NULL, "%s: tensor %s missing", gguf_path, name);
        if (!lt) continue;
        int64_t rows = lm_tensor_rows(lt), cols = lm_tensor_cols(lt);
        float *buf = malloc(sizeof(float) * (size_t)cols * 64);
        double sum = 0, sumsq = 0;
        int rc = LM_OK;
        for (int64_t r0 = 0; r0 < rows && rc == LM_OK; r0 += 64) {
            int64_t nr = rows - r0 < 64 ? rows - r0 : 64;
            rc = lm_tensor_read_rows(lt, r0, nr, buf, &err);
            for (int64_t k = 0; rc == LM_OK && k < nr * cols; k++) {
                sum += buf[k];
                sumsq += (double)buf[k] * buf[k];
            }
        }
        CHECK(rc == LM_OK, "%s: %s", name, err.msg);
        double wsum = cJSON_GetObjectItem(t, "sum")->valuedouble, wsq = cJSON_GetObjectItem(t, "sumsq")->valuedouble;
        double e1 = fabs(sumsq - wsq) / (wsq > 0 ? wsq : 1);
        double e2 = fabs(sum - wsum) / (sqrt(wsq) + 1e-30); /* relative to the tensor's norm */
        worst = fmax(worst, fmax(e1, e2));
        int good = e1 < 1e-9 && e2 < 1e-9;
        /* sample rows, element for element */
        cJSON *rws = cJSON_GetObjectItem(t, "rows"), *rw;
        cJSON_ArrayForEach(rw, rws) {
            int64_t r = atoll(rw->string);
            if (r < 0 || r >= rows) {
                good = 0;
                continue;
            }
            if (lm_tensor_read_rows(lt, r, 1, buf, &err) != LM_OK) {
                good = 0;
                continue;
            }
            int m = cJSON_GetArraySize(rw);
            for (int k = 0; k < m && k < cols; k++)
                if (buf[k] != (float)cJSON_GetArrayItem(rw, k)->valuedouble) good = 0;
        }
        CHECK(good, "%s: tensor %s (%s) differs from the gguf package: sum %.9g vs %.9g, sumsq %.9g vs %.9g", gguf_path,
              name, lm_dtype_name(lt->dtype), sum, wsum, sumsq, wsq);
        ok += good;
        free(buf);
    }
    printf("  %s: %d/%d tensors equal to the gguf package's dequantization (worst sum rel err %.2g)\n",
           lm_basename(gguf_path), ok, n, worst);
out:
    cJSON_Delete(j);
    lm_gguf_close(g);
}

/* A near-tie between two candidate tokens, in nats: far above the logit
 * differences that summation order makes (~1e-3), far below the margins at
 * steps that must agree (see the greedy check). */
#define GREEDY_TIE 0.1
/* The largest llama.cpp top-1/top-2 margin at which a near-tie may still
 * flip: above it both tools must pick the same token. */
#define GREEDY_CLOSE 0.5

static int blas_only; /* see main */

/* Tokens, perplexity and greedy continuation vs llama.cpp. */
static void check_llamacpp(const char *model_path_s, const char *ref_json, double ppl_tol) {
    lm_err err = {0};
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_engine *e = NULL;
    cJSON *j = load_json(ref_json);
    CHECK(j != NULL, "%s unreadable", ref_json);
    CHECK_OK(lm_model_open(&m, model_path_s, &err), &err);
    if (m) CHECK_OK(lm_tokenizer_open(&tok, m, &err), &err);
    if (!j || !m || !tok) goto out;

    /* tokens: llama.cpp with special-token parsing (ids_special where it differs) */
    cJSON *tk = cJSON_GetObjectItem(j, "tokenize"), *item;
    int n_same = 0, n_all = 0;
    cJSON_ArrayForEach(item, tk) {
        if (blas_only) break;
        const char *text = cJSON_GetObjectItem(item, "text")->valuestring;
        cJSON *want_arr = cJSON_GetObjectItem(item, "ids_special");
        if (!want_arr) want_arr = cJSON_GetObjectItem(item, "ids");
        int nw, ng = 0;
        int32_t *want = json_ids(want_arr, &nw), *got = NULL;
        int rc = lm_tokenize(tok, text, strlen(text), -1, &got, &ng, &err);
        int same = rc == LM_OK && ng == nw && (nw == 0 || !memcmp(got, want, sizeof(int32_t) * (size_t)nw));
        CHECK(same, "%s: tokens of \"%.40s\" differ from llama.cpp (%d vs %d tokens)%s%s", lm_basename(model_path_s),
              text, ng, nw, rc ? ": " : "", rc ? err.msg : "");
        n_same += same;
        n_all++;
        free(got);
        free(want);
    }
    if (!blas_only) printf("  %s: %d/%d texts tokenize exactly as llama.cpp\n", m->name, n_same, n_all);

    /* perplexity of the passage: one sequence, every position predicted */
    cJSON *p = cJSON_GetObjectItem(j, "passage");
    int n;
    int32_t *ids = json_ids(cJSON_GetObjectItem(p, "ids"), &n);
    lm_engine_opts eo = {.max_seq = n + 32};
    CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    if (e) {
        uint8_t *mask = malloc((size_t)n);
        memset(mask, 1, (size_t)n);
        lm_seq s = {ids, mask, n};
        double loss;
        int64_t cnt;
        CHECK_OK(lm_engine_loss(e, &s, &loss, &cnt, &err), &err);
        double ppl = exp(loss / (double)cnt), want = cJSON_GetObjectItem(p, "ppl")->valuedouble;
        printf("  %s: perplexity %.4f vs llama.cpp %.4f (gap %+.3f%%) over %lld predicted tokens\n", m->name, ppl, want,
               100 * (ppl / want - 1), (long long)cnt);
        CHECK(fabs(ppl / want - 1) <= ppl_tol, "%s: perplexity %.4f vs llama.cpp %.4f", m->name, ppl, want);
        free(mask);

        /* greedy continuations, teacher-forced: at each of the first 8 steps
         * the prefix is the prompt plus llama.cpp's own tokens, so one flip
         * cannot derail the rest. Computed with llama.cpp's arithmetic
         * (8-bit activations into quantized products, F16 KV). Where
         * layermap's argmax differs from llama.cpp's token, the two must be a
         * near-tie in layermap's own logits (<= GREEDY_TIE nats apart) at a
         * step where llama.cpp's own top-1/top-2 margin was not large either
         * (<= GREEDY_CLOSE): the order of a correct F32 summation (which BLAS
         * core, how many threads) moves logits by ~1e-2 here and decides such
         * ties, and layermap's exact arithmetic differs from llama.cpp's by
         * about 0.1 nats (Gemma 3: seen 0.006 against llama.cpp's 0.116).
         * Steps with a large margin must agree exactly. */
        lm_engine_free(e);
        e = NULL;
        lm_engine_opts eo2 = {.max_seq = n + 32, .ggml_compat = 1};
        CHECK_OK(lm_engine_new(&e, m, &eo2, &err), &err);
        cJSON *gr = e ? cJSON_GetObjectItem(j, "greedy") : NULL;
        float *lg = e ? malloc(sizeof(float) * (size_t)m->cfg.vocab) : NULL;
        int steps = 0, exact = 0;
        double worst_tie = 0;
        cJSON_ArrayForEach(item, gr) {
            int np, nw, nmg;
            int32_t *prompt = json_ids(cJSON_GetObjectItem(item, "prompt_ids"), &np);
            int32_t *want_g = json_ids(cJSON_GetObjectItem(item, "greedy_ids"), &nw);
            cJSON *mg = cJSON_GetObjectItem(item, "top1_top2_margin");
            nmg = cJSON_GetArraySize(mg);
            CHECK(nw >= 8 && nmg >= 8, "%s: reference has %d greedy tokens, %d margins", m->name, nw, nmg);
            int32_t *seq = malloc(sizeof(int32_t) * (size_t)(np + 8));
            memcpy(seq, prompt, sizeof(int32_t) * (size_t)np);
            for (int k = 0; k < 8 && k < nw && k < nmg; k++) {
                lm_seq q = {seq, NULL, np + k};
                int rc = lm_eng_forward(e, &(lm_fwd_req){.seqs = &q, .nseq = 1, .logits = lg, .logits_from = np + k - 1}, &err);
                CHECK_OK(rc, &err);
                if (rc) break;
                int best = 0;
                for (int v = 1; v < m->cfg.vocab; v++)
                    if (lg[v] > lg[best]) best = v;
                double gap = (double)lg[best] - (double)lg[want_g[k]];
                double ref_margin = cJSON_GetArrayItem(mg, k)->valuedouble;
                steps++;
                if (best == want_g[k]) {
                    exact++;
                } else {
                    if (gap > worst_tie) worst_tie = gap;
                    CHECK(gap <= GREEDY_TIE && ref_margin <= GREEDY_CLOSE,
                          "%s: \"%s\" step %d: layermap's top token %d beats llama.cpp's %d by %.4f nats "
                          "(llama.cpp's own margin %.4f; a near-tie is <= %.2f, and <= %.2f in llama.cpp)",
                          m->name, cJSON_GetObjectItem(item, "prompt")->valuestring, k, best, want_g[k], gap, ref_margin,
                          GREEDY_TIE, GREEDY_CLOSE);
                }
                seq[np + k] = want_g[k];
            }
            free(seq);
            free(prompt);
            free(want_g);
        }
        printf("  %s: teacher-forced greedy: %d/%d steps pick llama.cpp's token; the rest are near-ties "
               "(largest gap %.4f nats)\n", m->name, exact, steps, worst_tie);
        free(lg);
    }
    free(ids);
out:
    cJSON_Delete(j);
    lm_engine_free(e);
    lm_tokenizer_free(tok);
    lm_model_close(m);
}

/* ---- PyTorch float64 reference on the dequantized SmolLM2 weights ------- */

static lm_st_file *sref;

static float *sref_get(const char *name, int64_t *n) { return ref_tensor(sref, name, n); }

/* max |a - b| / max |b| */
static double relerr(const double *a, const float *b, int64_t n) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= md)) md = d;
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0 ? md / mb : md;
}

typedef struct gstat {
    lm_engine *e;
    double norm[64 * 7], sum[64 * 7];
    double row_q0[4096], row_down29[8192];
} gstat;

/* per-module Frobenius norm and sum of dL/dW, and two first rows */
static int hook_gstat(void *ctx, int l, int m, const float *dY, const float *Y, const float *X, const float *W, int n) {
    (void)Y;
    (void)W;
    gstat *g = ctx;
    int out = lm_eng_module_out(g->e, m), in = lm_eng_module_in(g->e, m);
    double *row = calloc((size_t)in, sizeof(double)), ss = 0, sm = 0;
    for (int i = 0; i < out; i++) {
        memset(row, 0, sizeof(double) * (size_t)in);
        for (int t = 0; t < n; t++) {
            double d = dY[(long)t * out + i];
            if (d == 0) continue;
            for (int j = 0; j < in; j++) row[j] += d * X[(long)t * in + j];
        }
        for (int j = 0; j < in; j++) {
            ss += row[j] * row[j];
            sm += row[j];
        }
        if (i == 0 && l == 0 && m == LM_MOD_Q) memcpy(g->row_q0, row, sizeof(double) * (size_t)in);
        if (i == 0 && l == 29 && m == LM_MOD_DOWN) memcpy(g->row_down29, row, sizeof(double) * (size_t)in);
    }
    g->norm[l * 7 + m] = sqrt(ss);
    g->sum[l * 7 + m] = sm;
    free(row);
    return 0;
}

static void check_smollm2_torch(const char *gguf_path) {
    lm_err err = {0};
    lm_model *m = NULL;
    lm_engine *e = NULL;
    CHECK_OK(lm_st_open(&sref, "tests/data/ref/smollm2-q4_1.safetensors", &err), &err);
    CHECK_OK(lm_model_open(&m, gguf_path, &err), &err);
    if (!sref || !m) goto out;
    lm_seq seqs[2];
    int64_t n[2];
    for (int s = 0; s < 2; s++) {
        char name[64];
        snprintf(name, sizeof name, "s%d.tokens", s);
        float *tk = sref_get(name, &n[s]);
        snprintf(name, sizeof name, "s%d.mask", s);
        float *mk = sref_get(name, NULL);
        seqs[s].n = (int)n[s];
        seqs[s].tok = malloc(sizeof(int32_t) * (size_t)n[s]);
        seqs[s].mask = malloc((size_t)n[s]);
        for (int i = 0; i < n[s]; i++) {
            seqs[s].tok[i] = (int32_t)tk[i];
            seqs[s].mask[i] = mk[i] != 0;
        }
        free(tk);
        free(mk);
    }
    lm_engine_opts eo = {.max_seq = 64, .max_batch = 2};
    CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    if (e) {
        int V = m->cfg.vocab, L = m->cfg.n_layer;
        /* loss and last logits of s0 */
        float *logits = malloc(sizeof(float) * (size_t)V);
        double loss;
        CHECK_OK(lm_eng_forward(e, &(lm_fwd_req){.seqs = &seqs[0], .nseq = 1, .use_loss = 1, .grad = 1, .loss = &loss}, &err), &err);
        float *wl = sref_get("s0.loss", NULL);
        if (wl) CHECK_CLOSE(loss, wl[0], 1e-6, 1e-5, "SmolLM2 s0 loss vs PyTorch");
        /* gradients of s0 */
        static gstat g;
        g.e = e;
        lm_hooks hk = {&g, NULL, hook_gstat, NULL};
        CHECK_OK(lm_eng_backward(e, &(lm_bwd_req){.to = 0, .hk = &hk}, &err), &err);
        float *wn = sref_get("s0.gradnorm", NULL), *ws = sref_get("s0.gradsum", NULL);
        float *wq = sref_get("s0.grad.0.q.row0", NULL), *wd = sref_get("s0.grad.29.down.row0", NULL);
        double en = wn ? relerr(g.norm, wn, L * 7) : 1, eq = wq ? relerr(g.row_q0, wq, m->cfg.dim) : 1;
        double ed = wd ? relerr(g.row_down29, wd, m->cfg.ffn_dim) : 1;
        double es = 0, scale = 0; /* sums: relative to the gradient's norm */
        for (int i = 0; ws && wn && i < L * 7; i++) {
            es = fmax(es, fabs(g.sum[i] - ws[i]) / (wn[i] + 1e-30));
            scale = fmax(scale, wn[i]);
        }
        printf("  SmolLM2 vs PyTorch float64: gradient norms %.2g, sums %.2g (of norm), row 0.q %.2g, row 29.down %.2g\n",
               en, es, eq, ed);
        CHECK(en < 1e-4 && es < 1e-4 && eq < 1e-4 && ed < 1e-4, "SmolLM2 gradients differ from PyTorch: %.3g %.3g %.3g %.3g",
              en, es, eq, ed);
        lm_seq q0 = {seqs[0].tok, NULL, seqs[0].n};
        CHECK_OK(lm_eng_forward(e, &(lm_fwd_req){.seqs = &q0, .nseq = 1, .logits = logits, .logits_from = seqs[0].n - 1}, &err), &err);
        float *wlog = sref_get("s0.logits_last", NULL);
        if (wlog) {
            double d = 0, mx = 0;
            for (int i = 0; i < V; i++) {
                d = fmax(d, fabs((double)logits[i] - wlog[i]));
                mx = fmax(mx, fabs(wlog[i]));
            }
            CHECK(d / mx < 1e-5, "SmolLM2 last logits rel err %.3g", d / mx);
        }
        free(wlog);
        free(wl);
        free(wn);
        free(ws);
        free(wq);
        free(wd);
        free(logits);
        /* method matrices over {s0, s1} */
        lm_dataset ds = {seqs, 2, n[0] + n[1], 0};
        const lm_method meths[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_GRAD_WEIGHT_SIGNED, LM_METHOD_FISHER,
                                   LM_METHOD_GRAD_NORM, LM_METHOD_ACT_GRAD, LM_METHOD_ACT_SQ,
                                   LM_METHOD_WANDA, LM_METHOD_ABLATE};
        for (size_t k = 0; k < sizeof meths / sizeof meths[0]; k++) {
            lm_attr_opts ao;
            lm_attr_opts_default(&ao);
            ao.batch = 2;
            lm_attr_result r;
            int rc = lm_attribute(e, &ds, meths[k], &ao, &r, &err);
            CHECK(rc == LM_OK, "%s: %s", lm_method_names[meths[k]], err.msg);
            if (rc) continue;
            char name[64];
            snprintf(name, sizeof name, "method.%s", lm_method_names[meths[k]]);
            float *w = sref_get(name, NULL);
            double re = w ? relerr(r.m->v, w, L * 7) : 1;
            printf("  SmolLM2 %-20s vs PyTorch: max rel err %.2g\n", lm_method_names[meths[k]], re);
            CHECK(re < 1e-4, "SmolLM2 %s rel err %.3g", lm_method_names[meths[k]], re);
            free(w);
            lm_attr_result_free(&r);
        }
    }
    for (int s = 0; s < 2; s++) {
        free(seqs[s].tok);
        free(seqs[s].mask);
    }
out:
    lm_engine_free(e);
    lm_model_close(m);
    lm_st_close(sref);
    sref = NULL;
}

int main(void) {
    char a[1024], b[1024];
    /* LM_TEST_BLAS_ONLY=1 (tests/cores.sh): only the checks whose numbers
     * pass through matrix products; dequantization and tokens do not depend
     * on the BLAS core */
    const char *bo = getenv("LM_TEST_BLAS_ONLY");
    blas_only = bo && *bo == '1';
    /* stories260K is always here */
    check_llamacpp(model_path(a, sizeof a, "stories260K.gguf"), "tests/data/llamacpp/stories260K.json", 0.001);

    const char *real[2] = {"SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m-q4_k_m"};
    int missing = 0;
    for (int i = 0; i < 2; i++) {
        char file[256], json[512];
        snprintf(file, sizeof file, "%s.gguf", real[i]);
        cache_path(a, sizeof a, file);
        if (!exists(a)) {
            printf("  %s not fetched (scripts/fetch_models.sh): skipped\n", a);
            missing++;
            continue;
        }
        snprintf(json, sizeof json, "tests/data/real_dequant/%s.json", real[i]);
        if (!blas_only) check_dequant(a, json);
        snprintf(b, sizeof b, "tests/data/llamacpp/%s.json", real[i]);
        /* llama.cpp rounds activations to 8 bits for quantized matmuls: 1% */
        check_llamacpp(a, b, 0.01);
        if (i == 0) check_smollm2_torch(a);
    }
    const char *req = getenv("LM_REQUIRE_REAL");
    if (req && *req == '1') CHECK(missing == 0, "%d real model(s) missing and LM_REQUIRE_REAL=1", missing);
    return TEST_END();
}
