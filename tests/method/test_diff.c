/*
 * test_diff.c -- lm_diff against the numpy reference (tests/ref/gen_diff_ref.py
 * -> tests/data/diff/<pair>.csv), on synthetic updates with known singular values,
 * edge cases, errors, fault injection, and the `layermap diff` command.
 *
 * Run from the repository root (make test does): the reference CSVs are read
 * from tests/data/diff, the models from $LM_MODELS.
 */
#include "test.h"
#include "fault.h"

#include "base/base.h"

#include <errno.h>
#include <float.h>
#include <libgen.h>
#include <omp.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Reference CSVs                                                            */
/* ------------------------------------------------------------------------ */

enum { R_REL, R_D0, R_D3, R_COS, R_RANK, R_RANK8, R_N };
typedef struct ref_pair {
    int n_layer;
    double v[64][LM_N_MODULES][R_N];
    long long rows[64][LM_N_MODULES], cols[64][LM_N_MODULES];
} ref_pair;

/* Read tests/data/diff/<name>.csv into r; 0 on success. */
static int ref_load(ref_pair *r, const char *name) {
    char path[512], line[1024];
    snprintf(path, sizeof path, "tests/data/diff/%s.csv", name);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s: %s (run from the repository root)\n", path, strerror(errno));
        return -1;
    }
    memset(r, 0, sizeof *r);
    int n = 0;
    if (!fgets(line, sizeof line, f)) n = -1;
    while (n >= 0 && fgets(line, sizeof line, f)) {
        int layer, mod = -1;
        char mname[32];
        long long rows, cols;
        double v[R_N];
        if (sscanf(line, "%d,%31[^,],%lld,%lld,%lf,%lf,%lf,%lf,%lf,%lf", &layer, mname, &rows, &cols, &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5]) != 10 ||
            layer < 0 || layer >= 64) {
            n = -1;
            break;
        }
        for (int j = 0; j < LM_N_MODULES; j++)
            if (!strcmp(mname, lm_module_names[j])) mod = j;
        if (mod < 0) {
            n = -1;
            break;
        }
        memcpy(r->v[layer][mod], v, sizeof v);
        r->rows[layer][mod] = rows;
        r->cols[layer][mod] = cols;
        if (layer + 1 > r->n_layer) r->n_layer = layer + 1;
        n++;
    }
    fclose(f);
    if (n != r->n_layer * LM_N_MODULES || n == 0) {
        fprintf(stderr, "%s: malformed\n", path);
        return -1;
    }
    return 0;
}

/* Free the four result matrices and clear the array. */
static void free_out(lm_matrix *out[LM_DIFF_COUNT]) {
    for (int k = 0; k < LM_DIFF_COUNT; k++) {
        lm_matrix_free(out[k]);
        out[k] = NULL;
    }
}

/* Open a model of the shared models directory; NULL (and a failed check) if it cannot. */
static lm_model *open_model(const char *rel) {
    char p[1024];
    lm_err err;
    lm_model *m = NULL;
    int rc = lm_model_open(&m, model_path(p, sizeof p, rel), &err);
    CHECK(rc == LM_OK, "open %s: %s", p, rc ? err.msg : "");
    return rc ? NULL : m;
}

/* Largest |got - want| / (atol + rtol |want|) style report: the largest
 * absolute and relative differences of one metric over a matrix. */
typedef struct maxdiff {
    double abs, rel;
} maxdiff;

/* Fold one comparison into the running largest differences. */
static void track(maxdiff *d, double got, double want) {
    double a = fabs(got - want), r = want != 0 ? a / fabs(want) : a;
    if (!(a <= d->abs)) d->abs = a; /* NaN propagates */
    if (!(r <= d->rel)) d->rel = r;
}

/* lm_diff of a pair against its reference: rel/cosine to 1e-6 relative,
 * density exactly, rank (k >= min(m, n)) within 1e-3; then tol 1e-3 and a
 * randomized top-8 rank (k = 8 < min(m, n)) within 2%. */
static void check_pair(const char *name, const char *base_rel, const char *ft_rel) {
    ref_pair *ref = calloc(1, sizeof *ref);
    lm_model *a = open_model(base_rel), *b = open_model(ft_rel);
    int ok = ref && ref_load(ref, name) == 0;
    CHECK(ok, "reference %s", name);
    if (!ok || !a || !b) goto out;
    CHECK(a->cfg.n_layer == ref->n_layer, "%s: %d layers, reference %d", name, a->cfg.n_layer, ref->n_layer);
    if (a->cfg.n_layer != ref->n_layer) goto out;

    lm_diff_opts o;
    lm_diff_opts_default(&o);
    lm_matrix *out[LM_DIFF_COUNT] = {0};
    lm_err err;
    CHECK_OK(lm_diff(a, b, &o, out, &err), &err);
    if (!out[0]) goto out;
    maxdiff drel = {0, 0}, dcos = {0, 0}, drank = {0, 0};
    int dens_bad = 0;
    for (int i = 0; i < ref->n_layer; i++) {
        for (int j = 0; j < LM_N_MODULES; j++) {
            const double *w = ref->v[i][j];
            char what[96];
            snprintf(what, sizeof what, "%s layer %d %s", name, i, lm_module_names[j]);
            double rel = lm_matrix_get(out[LM_DIFF_REL], i, j), cos = lm_matrix_get(out[LM_DIFF_COSINE], i, j);
            double den = lm_matrix_get(out[LM_DIFF_DENSITY], i, j), rk = lm_matrix_get(out[LM_DIFF_RANK], i, j);
            track(&drel, rel, w[R_REL]);
            track(&dcos, cos, w[R_COS]);
            track(&drank, rk, w[R_RANK]);
            CHECK_CLOSE(rel, w[R_REL], 0, 1e-6, what);
            CHECK_CLOSE(cos, w[R_COS], 0, 1e-6, what);
            CHECK_CLOSE(rk, w[R_RANK], 1e-3, 0, what);
            CHECK(den == w[R_D0], "%s density: got %.17g want %.17g", what, den, w[R_D0]);
            dens_bad += den != w[R_D0];
        }
    }
    printf("%-6s rel max rel diff %.3g, cosine %.3g, rank (k=64 exact) max abs diff %.3g, density tol 0: %d differ\n",
           name, drel.rel, dcos.rel, drank.abs, dens_bad);
    CHECK(!strcmp(out[LM_DIFF_REL]->method, "diff.rel"), "method %s", out[LM_DIFF_REL]->method);
    CHECK(!strcmp(out[LM_DIFF_RANK]->method, "diff.rank"), "method %s", out[LM_DIFF_RANK]->method);
    CHECK(strstr(out[LM_DIFF_RANK]->note, "k=64") != NULL, "rank note states k: %s", out[LM_DIFF_RANK]->note);
    free_out(out);

    o.tol = 1e-3;
    o.rank_k = 8;
    o.oversample = 8;
    o.power_iters = 2;
    CHECK_OK(lm_diff(a, b, &o, out, &err), &err);
    if (!out[0]) goto out;
    maxdiff drank8 = {0, 0};
    dens_bad = 0;
    for (int i = 0; i < ref->n_layer; i++) {
        for (int j = 0; j < LM_N_MODULES; j++) {
            const double *w = ref->v[i][j];
            char what[96];
            snprintf(what, sizeof what, "%s layer %d %s (tol 1e-3, k 8)", name, i, lm_module_names[j]);
            double den = lm_matrix_get(out[LM_DIFF_DENSITY], i, j), rk = lm_matrix_get(out[LM_DIFF_RANK], i, j);
            CHECK(den == w[R_D3], "%s density: got %.17g want %.17g", what, den, w[R_D3]);
            dens_bad += den != w[R_D3];
            track(&drank8, rk, w[R_RANK8]);
            CHECK_CLOSE(rk, w[R_RANK8], 0, 2e-2, what);
        }
    }
    CHECK(strstr(out[LM_DIFF_DENSITY]->note, "tol=0.001") != NULL, "density note states tol: %s",
          out[LM_DIFF_DENSITY]->note);
    printf("%-6s density tol 1e-3: %d differ; randomized top-8 rank max rel diff %.3g\n", name, dens_bad,
           drank8.rel);
    free_out(out);
out:
    lm_model_close(a);
    lm_model_close(b);
    free(ref);
}

/* ------------------------------------------------------------------------ */
/* Tiny HF checkpoints written by the test                                   */
/* ------------------------------------------------------------------------ */

typedef struct tiny {
    int n_layer, dim, n_head, n_kv, head_dim, ffn, vocab;
} tiny;

/* Value of weight (layer, module) at (r, c); module -1 for the others. */
typedef float (*tiny_fill)(void *ctx, int layer, int mod, int64_t r, int64_t c);

typedef struct tten {
    char name[96];
    int64_t rows, cols; /* cols 0: 1-D of rows */
    int layer, mod;     /* mod -1: norm or embedding */
} tten;

/* Write dir/config.json and dir/model.safetensors (F32) of a Llama model of
 * shape s whose values come from fill. Returns 0 on success. */
static int write_tiny(const char *dir, const tiny *s, tiny_fill fill, void *ctx) {
    static const char *hf[LM_N_MODULES] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                           "self_attn.o_proj", "mlp.up_proj",      "mlp.down_proj",
                                           "mlp.gate_proj"};
    char path[1024];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d,\n"
            " \"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,\n"
            " \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, \"max_position_embeddings\": 64,\n"
            " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"hidden_act\": \"silu\", \"attention_bias\": false,\n"
            " \"tie_word_embeddings\": true, \"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"float32\"}\n",
            s->dim, s->ffn, s->n_layer, s->n_head, s->n_kv, s->head_dim, s->vocab);
    fclose(f);

    int nt = 2 + s->n_layer * (2 + LM_N_MODULES);
    tten *t = calloc((size_t)nt, sizeof *t);
    if (!t) return -1;
    int k = 0;
    int64_t q = (int64_t)s->n_head * s->head_dim, kv = (int64_t)s->n_kv * s->head_dim;
    t[k++] = (tten){"model.embed_tokens.weight", s->vocab, s->dim, -1, -1};
    t[k++] = (tten){"model.norm.weight", s->dim, 0, -1, -1};
    for (int i = 0; i < s->n_layer; i++) {
        int64_t shp[LM_N_MODULES][2] = {{q, s->dim}, {kv, s->dim}, {kv, s->dim}, {s->dim, q},
                                        {s->ffn, s->dim}, {s->dim, s->ffn}, {s->ffn, s->dim}};
        snprintf(t[k].name, sizeof t[k].name, "model.layers.%d.input_layernorm.weight", i);
        t[k].rows = s->dim, t[k].layer = i, t[k].mod = -1, k++;
        snprintf(t[k].name, sizeof t[k].name, "model.layers.%d.post_attention_layernorm.weight", i);
        t[k].rows = s->dim, t[k].layer = i, t[k].mod = -1, k++;
        for (int j = 0; j < LM_N_MODULES; j++) {
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%d.%s.weight", i, hf[j]);
            t[k].rows = shp[j][0], t[k].cols = shp[j][1], t[k].layer = i, t[k].mod = j, k++;
        }
    }
    /* header */
    size_t cap = 256 + (size_t)nt * 160, len = 0;
    char *h = malloc(cap);
    uint64_t off = 0;
    len += (size_t)snprintf(h + len, cap - len, "{");
    for (int i = 0; i < nt; i++) {
        uint64_t n = (uint64_t)t[i].rows * (uint64_t)(t[i].cols ? t[i].cols : 1) * 4;
        if (t[i].cols)
            len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],", i ? "," : "",
                                    t[i].name, (long long)t[i].rows, (long long)t[i].cols);
        else
            len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],", i ? "," : "",
                                    t[i].name, (long long)t[i].rows);
        len += (size_t)snprintf(h + len, cap - len, "\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + n));
        off += n;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    int rc = f ? 0 : -1;
    if (f) {
        uint64_t hl = len;
        fwrite(&hl, 8, 1, f); /* little-endian host */
        fwrite(h, 1, len, f);
        for (int i = 0; i < nt; i++) {
            int64_t cols = t[i].cols ? t[i].cols : 1;
            for (int64_t r = 0; r < t[i].rows; r++)
                for (int64_t c = 0; c < cols; c++) {
                    float v = t[i].mod < 0 ? (t[i].cols ? (float)((r * 7 + c * 3) % 17 - 8) / 64.0f : 1.0f)
                                           : fill(ctx, t[i].layer, t[i].mod, r, c);
                    fwrite(&v, 4, 1, f);
                }
        }
        if (fclose(f) != 0) rc = -1;
    }
    free(h);
    free(t);
    return rc;
}

/* Walsh-Hadamard sign H[i][j] = (-1)^popcount(i & j). */
static int hsign(int64_t i, int64_t j) { return __builtin_popcountll((uint64_t)(i & j)) & 1 ? -1 : 1; }

/* Base weights: multiples of 1/256 in [-1/2, 1/2], nonzero, so that adding an
 * update made of multiples of 1/64 stays exact in F32. */
static float base_val(int layer, int mod, int64_t r, int64_t c) {
    int64_t h = (r * 131 + c * 71 + layer * 29 + mod * 17) % 255;
    return (float)(h - 127) / 256.0f;
}

/* Known updates, per module (dim 64, ffn 96):
 *   q (64x64): 4 h1 h1^T/64 + 2 h2 h2^T/64 + h3 h3^T/64, singular values 4, 2, 1
 *   k (32x64): e_5 (h9/8)^T, rank 1, singular value 1
 *   v       : no update
 *   o (64x64): diag(1..64)/64, singular values k/64
 *   up (96x64): 2 e_3 (h1/8)^T + e_70 (h2/8)^T, singular values 2, 1
 *   down (64x96): sum_{i<5} (i+1) (h_{i+1}/8) e_{7i}^T, singular values 1..5
 *   gate: base is 0, update rank 1 (singular value 3)                      */
static float ft_delta(int mod, int64_t r, int64_t c) {
    switch (mod) {
    case LM_MOD_Q:
        return (float)(4 * hsign(1, r) * hsign(1, c) + 2 * hsign(2, r) * hsign(2, c) + hsign(3, r) * hsign(3, c)) /
               64.0f;
    case LM_MOD_K: return r == 5 ? (float)hsign(9, c) / 8.0f : 0.0f;
    case LM_MOD_V: return 0.0f;
    case LM_MOD_O: return r == c ? (float)(r + 1) / 64.0f : 0.0f;
    case LM_MOD_UP:
        return r == 3 ? 2.0f * (float)hsign(1, c) / 8.0f : r == 70 ? (float)hsign(2, c) / 8.0f : 0.0f;
    case LM_MOD_DOWN:
        for (int i = 0; i < 5; i++)
            if (c == 7 * i) return (float)(i + 1) * (float)hsign(i + 1, r) / 8.0f;
        return 0.0f;
    case LM_MOD_GATE: return r == 11 ? 3.0f * (float)hsign(5, c) / 8.0f : 0.0f;
    }
    return 0.0f;
}

/* Base of the synthetic pair: gate is all zero, the rest base_val. */
static float fill_base(void *ctx, int layer, int mod, int64_t r, int64_t c) {
    (void)ctx;
    return mod == LM_MOD_GATE ? 0.0f : base_val(layer, mod, r, c);
}

/* Fine-tuned side of the synthetic pair: base + the known update. */
static float fill_ft(void *ctx, int layer, int mod, int64_t r, int64_t c) {
    return fill_base(ctx, layer, mod, r, c) + ft_delta(mod, r, c);
}

/* Values of the mismatching tiny models (any will do). */
static float fill_tiny_other(void *ctx, int layer, int mod, int64_t r, int64_t c) {
    (void)ctx;
    return base_val(layer, mod, r, c);
}

/* ------------------------------------------------------------------------ */
/* Update-mask overlap of two fine-tunes                                     */
/* ------------------------------------------------------------------------ */

/* Fine-tune 1 updates entries with (r + c + mod) % 3 == 0 by 1/64; fine-tune
 * 2 those with (r + 2c + layer) % 4 == 0, by 1/64 where r is even and by
 * 1/256 where it is odd (so tol 1/128 keeps only the even rows). Values stay
 * exact in F32 (base multiples of 1/256 in [-1/2, 1/2]). Module v is never
 * updated by either (no mask: NaN), k only by fine-tune 1. */
static int in_m1(int layer, int mod, int64_t r, int64_t c) {
    (void)layer;
    return mod != LM_MOD_V && (r + c + mod) % 3 == 0;
}
static int in_m2(int layer, int mod, int64_t r, int64_t c) {
    return mod != LM_MOD_V && mod != LM_MOD_K && (r + 2 * c + layer) % 4 == 0;
}
static float fill_ov1(void *ctx, int layer, int mod, int64_t r, int64_t c) {
    return fill_base(ctx, layer, mod, r, c) + (in_m1(layer, mod, r, c) ? 1.0f / 64 : 0.0f);
}
static float fill_ov2(void *ctx, int layer, int mod, int64_t r, int64_t c) {
    return fill_base(ctx, layer, mod, r, c) + (in_m2(layer, mod, r, c) ? (r % 2 ? 1.0f / 256 : 1.0f / 64) : 0.0f);
}

/* Expected Jaccard, overlap coefficient and densities by enumeration. */
static void ov_expect(const tiny *s, int layer, int mod, double tol, double want[LM_OVERLAP_COUNT]) {
    int64_t q = (int64_t)s->n_head * s->head_dim, kv = (int64_t)s->n_kv * s->head_dim;
    int64_t shp[LM_N_MODULES][2] = {{q, s->dim}, {kv, s->dim}, {kv, s->dim}, {s->dim, q},
                                    {s->ffn, s->dim}, {s->dim, s->ffn}, {s->ffn, s->dim}};
    int64_t na = 0, nb = 0, nab = 0, m = shp[mod][0], n = shp[mod][1];
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            int a = in_m1(layer, mod, r, c) && 1.0 / 64 > tol;
            int b = in_m2(layer, mod, r, c) && (r % 2 ? 1.0 / 256 : 1.0 / 64) > tol;
            na += a, nb += b, nab += a && b;
        }
    want[LM_OVERLAP_JACCARD] = na + nb - nab ? (double)nab / (double)(na + nb - nab) : NAN;
    want[LM_OVERLAP_COEF] = (na < nb ? na : nb) ? (double)nab / (double)(na < nb ? na : nb) : NAN;
    want[LM_OVERLAP_DENSITY_A] = (double)na / (double)(m * n);
    want[LM_OVERLAP_DENSITY_B] = (double)nb / (double)(m * n);
}

static int isnan_or_eq(double got, double want);
static int sh(const char *cmd);
static int exists(const char *p);

static void test_overlap(const char *scratch, const char *argv0) {
    char db[600], d1[600], d2[600];
    snprintf(db, sizeof db, "%s/ov-base", scratch);
    snprintf(d1, sizeof d1, "%s/ov-ft1", scratch);
    snprintf(d2, sizeof d2, "%s/ov-ft2", scratch);
    tiny s = {2, 64, 8, 4, 8, 96, 64};
    CHECK(write_tiny(db, &s, fill_base, NULL) == 0 && write_tiny(d1, &s, fill_ov1, NULL) == 0 &&
              write_tiny(d2, &s, fill_ov2, NULL) == 0,
          "write the overlap models");
    lm_model *b = NULL, *m1 = NULL, *m2 = NULL;
    lm_err err;
    CHECK_OK(lm_model_open(&b, db, &err), &err);
    CHECK_OK(lm_model_open(&m1, d1, &err), &err);
    CHECK_OK(lm_model_open(&m2, d2, &err), &err);
    if (!b || !m1 || !m2) goto out;
    const double tols[2] = {0.0, 1.0 / 128};
    for (int ti = 0; ti < 2; ti++) {
        lm_diff_opts o;
        lm_diff_opts_default(&o);
        o.tol = tols[ti];
        o.threads = 2;
        lm_matrix *out[LM_OVERLAP_COUNT];
        CHECK_OK(lm_diff_overlap(b, m1, m2, &o, out, &err), &err);
        if (!out[0]) continue;
        int bad = 0;
        for (int l = 0; l < s.n_layer; l++)
            for (int j = 0; j < LM_N_MODULES; j++) {
                double want[LM_OVERLAP_COUNT];
                ov_expect(&s, l, j, o.tol, want);
                for (int k = 0; k < LM_OVERLAP_COUNT; k++) {
                    double got = lm_matrix_get(out[k], l, j);
                    if (!isnan_or_eq(got, want[k])) {
                        if (bad++ < 5)
                            printf("  overlap tol %g layer %d %s %s: %.17g, want %.17g\n", o.tol, l,
                                   lm_module_names[j], lm_overlap_metric_names[k], got, want[k]);
                    }
                }
            }
        CHECK(bad == 0, "overlap (tol %g): %d cells differ from the enumeration", o.tol, bad);
        /* v: nobody updated it; k: only the first */
        CHECK(isnan(lm_matrix_get(out[LM_OVERLAP_JACCARD], 0, LM_MOD_V)), "no update: Jaccard NaN");
        CHECK(lm_matrix_get(out[LM_OVERLAP_JACCARD], 0, LM_MOD_K) == 0.0, "one-sided update: Jaccard 0");
        CHECK(!strcmp(out[0]->method, "diff.jaccard"), "method name %s", out[0]->method);
        for (int k = 0; k < LM_OVERLAP_COUNT; k++) lm_matrix_free(out[k]);
    }
    /* a fine-tune against itself: every updated module overlaps fully */
    lm_matrix *self[LM_OVERLAP_COUNT];
    CHECK_OK(lm_diff_overlap(b, m1, m1, NULL, self, &err), &err);
    if (self[0]) {
        CHECK(lm_matrix_get(self[LM_OVERLAP_JACCARD], 1, LM_MOD_Q) == 1.0 &&
                  lm_matrix_get(self[LM_OVERLAP_COEF], 1, LM_MOD_UP) == 1.0,
              "self overlap is 1");
        for (int k = 0; k < LM_OVERLAP_COUNT; k++) lm_matrix_free(self[k]);
    }
    /* a fine-tune of another shape: LM_ESHAPE naming both paths, no matrices */
    {
        char dx[600];
        snprintf(dx, sizeof dx, "%s/ov-other", scratch);
        tiny s2 = s;
        s2.ffn = 128;
        lm_model *mx = NULL;
        lm_matrix *out[LM_OVERLAP_COUNT] = {0};
        if (write_tiny(dx, &s2, fill_tiny_other, NULL) == 0 && lm_model_open(&mx, dx, &err) == LM_OK) {
            int rc = lm_diff_overlap(b, m1, mx, NULL, out, &err);
            CHECK(rc == LM_ESHAPE && strstr(err.msg, "ov-other") && !out[0], "overlap shape mismatch: %d %s", rc,
                  err.msg);
            lm_model_close(mx);
        }
    }
    /* the command: three models, -m all, one CSV per metric */
    {
        char exe[1024], bin[1100], cmd[4096], csv[700], f[800];
        snprintf(exe, sizeof exe, "%s", argv0);
        snprintf(bin, sizeof bin, "%s/../layermap", dirname(exe));
        snprintf(csv, sizeof csv, "%s/ov.csv", scratch);
        snprintf(cmd, sizeof cmd, "'%s' diff '%s' '%s' '%s' -m all --csv '%s' -q", bin, db, d1, d2, csv);
        CHECK(sh(cmd) == 0, "%s", cmd);
        for (int k = 0; k < LM_OVERLAP_COUNT; k++) {
            snprintf(f, sizeof f, "%s/ov-1v2-%s.csv", scratch, lm_overlap_metric_names[k]);
            CHECK(exists(f), "%s written", f);
        }
        snprintf(cmd, sizeof cmd, "'%s' diff '%s' '%s' '%s' -m rel -q 2>/dev/null", bin, db, d1, d2);
        CHECK(sh(cmd) == 2, "diff with three models and -m rel is a usage error");
    }
out:
    lm_model_close(b);
    lm_model_close(m1);
    lm_model_close(m2);
}

/* Entropy effective rank of singular values s[0..n). */
static double erank(const double *s, int n) {
    double sum = 0, h = 0;
    for (int i = 0; i < n; i++) sum += s[i];
    if (sum <= 0) return 0;
    for (int i = 0; i < n; i++)
        if (s[i] > 0) h -= s[i] / sum * log(s[i] / sum);
    return exp(h);
}

/* Exact expected values of the synthetic pair, computed from the fills. */
static void synth_expect(const tiny *s, int layer, int mod, double *rel, double *den, double *cos, double *rank) {
    int64_t q = (int64_t)s->n_head * s->head_dim, kv = (int64_t)s->n_kv * s->head_dim;
    int64_t shp[LM_N_MODULES][2] = {{q, s->dim},     {kv, s->dim},     {kv, s->dim},    {s->dim, q},
                                    {s->ffn, s->dim}, {s->dim, s->ffn}, {s->ffn, s->dim}};
    double dd = 0, aa = 0, bb = 0, ab = 0, cnt = 0;
    for (int64_t r = 0; r < shp[mod][0]; r++)
        for (int64_t c = 0; c < shp[mod][1]; c++) {
            double a = fill_base(NULL, layer, mod, r, c), b = fill_ft(NULL, layer, mod, r, c);
            dd += (b - a) * (b - a), aa += a * a, bb += b * b, ab += a * b, cnt += b != a;
        }
    *rel = dd == 0 ? 0 : aa > 0 ? sqrt(dd / aa) : NAN;
    *cos = dd == 0 ? 1 : aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : NAN;
    *den = cnt / (double)(shp[mod][0] * shp[mod][1]);
    double sv[64];
    int n = 0;
    switch (mod) {
    case LM_MOD_Q: sv[0] = 4, sv[1] = 2, sv[2] = 1, n = 3; break;
    case LM_MOD_K: sv[0] = 1, n = 1; break;
    case LM_MOD_V: n = 0; break;
    case LM_MOD_O:
        for (int i = 0; i < 64; i++) sv[i] = (i + 1) / 64.0;
        n = 64;
        break;
    case LM_MOD_UP: sv[0] = 2, sv[1] = 1, n = 2; break;
    case LM_MOD_DOWN:
        for (int i = 0; i < 5; i++) sv[i] = i + 1;
        n = 5;
        break;
    case LM_MOD_GATE: sv[0] = 3, n = 1; break;
    }
    *rank = erank(sv, n);
}

/* Top-k entropy rank of the o module's diag(1..64)/64 update. */
static double diag_topk(int k) {
    double sv[64];
    for (int i = 0; i < k; i++) sv[i] = (64 - i) / 64.0;
    return erank(sv, k);
}

/* got == want, or both NaN. */
static int isnan_or_eq(double got, double want) { return isnan(want) ? isnan(got) : got == want; }

/* Synthetic updates with known singular values; exact (k >= min) and
 * randomized (k = 6, sketch 10 < 64) paths; zero update; zero base. */
static void test_synthetic(const char *dir_base, const char *dir_ft, const tiny *s) {
    lm_err err;
    lm_model *a = NULL, *b = NULL;
    CHECK_OK(lm_model_open(&a, dir_base, &err), &err);
    CHECK_OK(lm_model_open(&b, dir_ft, &err), &err);
    if (!a || !b) goto out;
    for (int pass = 0; pass < 2; pass++) {
        lm_diff_opts o;
        lm_diff_opts_default(&o);
        if (pass == 1) o.rank_k = 6, o.oversample = 4, o.power_iters = 1;
        lm_matrix *out[LM_DIFF_COUNT] = {0};
        CHECK_OK(lm_diff(a, b, &o, out, &err), &err);
        if (!out[0]) continue;
        double worst = 0;
        for (int i = 0; i < s->n_layer; i++)
            for (int j = 0; j < LM_N_MODULES; j++) {
                double rel, den, cos, rank;
                synth_expect(s, i, j, &rel, &den, &cos, &rank);
                if (pass == 1 && j == LM_MOD_O) rank = diag_topk(6);
                char what[96];
                snprintf(what, sizeof what, "synthetic layer %d %s (k=%d)", i, lm_module_names[j], o.rank_k);
                double g_rel = lm_matrix_get(out[LM_DIFF_REL], i, j), g_cos = lm_matrix_get(out[LM_DIFF_COSINE], i, j);
                double g_den = lm_matrix_get(out[LM_DIFF_DENSITY], i, j), g_rk = lm_matrix_get(out[LM_DIFF_RANK], i, j);
                if (isnan(rel))
                    CHECK(isnan(g_rel), "%s: rel %g, want NaN (zero base)", what, g_rel);
                else
                    CHECK_CLOSE(g_rel, rel, 1e-15, 1e-12, what);
                if (isnan(cos))
                    CHECK(isnan(g_cos), "%s: cosine %g, want NaN (zero base)", what, g_cos);
                else
                    CHECK_CLOSE(g_cos, cos, 1e-15, 1e-12, what);
                CHECK(isnan_or_eq(g_den, den), "%s: density %.17g want %.17g", what, g_den, den);
                /* the o update is full rank: the randomized top-6 is approximate */
                double tol = pass == 1 && j == LM_MOD_O ? 5e-2 : 1e-4;
                CHECK_CLOSE(g_rk, rank, tol, 0, what);
                if (!(pass == 1 && j == LM_MOD_O) && !(fabs(g_rk - rank) <= worst)) worst = fabs(g_rk - rank);
            }
        printf("synthetic k=%d: max |rank - exact| over low-rank updates %.3g (q %.4f, down %.4f)\n", o.rank_k,
               worst, lm_matrix_get(out[LM_DIFF_RANK], 0, LM_MOD_Q), lm_matrix_get(out[LM_DIFF_RANK], 0, LM_MOD_DOWN));
        free_out(out);
    }
out:
    lm_model_close(a);
    lm_model_close(b);
}

/* ------------------------------------------------------------------------ */
/* Edge cases, errors, threads, progress, faults                             */
/* ------------------------------------------------------------------------ */

/* A model against itself (one handle, two handles, HF vs GGUF of the same
 * weights): the documented zero-update values, exactly. */
static void test_identical(void) {
    lm_model *a = open_model("stories260K-hf"), *b = open_model("stories260K-hf");
    lm_model *g = open_model("stories260K.gguf");
    if (!a || !b || !g) goto out;
    const lm_model *pairs[3][2] = {{a, a}, {a, b}, {a, g}};
    for (int p = 0; p < 3; p++) {
        lm_diff_opts o;
        lm_diff_opts_default(&o);
        lm_matrix *out[LM_DIFF_COUNT] = {0};
        lm_err err;
        CHECK_OK(lm_diff(pairs[p][0], pairs[p][1], &o, out, &err), &err);
        if (!out[0]) continue;
        int bad = 0;
        for (int i = 0; i < a->cfg.n_layer; i++)
            for (int j = 0; j < LM_N_MODULES; j++) {
                bad += lm_matrix_get(out[LM_DIFF_REL], i, j) != 0.0;
                bad += lm_matrix_get(out[LM_DIFF_DENSITY], i, j) != 0.0;
                bad += lm_matrix_get(out[LM_DIFF_COSINE], i, j) != 1.0;
                bad += lm_matrix_get(out[LM_DIFF_RANK], i, j) != 0.0;
            }
        CHECK(bad == 0, "identical pair %d: %d values differ from rel 0, density 0, cosine 1, rank 0", p, bad);
        free_out(out);
    }
out:
    lm_model_close(a);
    lm_model_close(b);
    lm_model_close(g);
}

/* Shape and layer-count mismatches name both files, the layer, the module
 * and both shapes. */
static void test_mismatch(const char *scratch) {
    char d1[600], d2[600], d3[600];
    snprintf(d1, sizeof d1, "%s/tiny-dim32", scratch);
    snprintf(d2, sizeof d2, "%s/tiny-2layers", scratch);
    snprintf(d3, sizeof d3, "%s/tiny-ffn128", scratch);
    tiny s1 = {5, 32, 4, 2, 8, 64, 512}, s2 = {2, 64, 8, 4, 8, 172, 512}, s3 = {5, 64, 8, 4, 8, 128, 512};
    CHECK(write_tiny(d1, &s1, fill_tiny_other, NULL) == 0, "write %s", d1);
    CHECK(write_tiny(d2, &s2, fill_tiny_other, NULL) == 0, "write %s", d2);
    CHECK(write_tiny(d3, &s3, fill_tiny_other, NULL) == 0, "write %s", d3);
    lm_model *st = open_model("stories260K-hf"), *m1 = NULL, *m2 = NULL, *m3 = NULL;
    lm_err err;
    CHECK_OK(lm_model_open(&m1, d1, &err), &err);
    CHECK_OK(lm_model_open(&m2, d2, &err), &err);
    CHECK_OK(lm_model_open(&m3, d3, &err), &err);
    lm_diff_opts o;
    lm_diff_opts_default(&o);
    lm_matrix *out[LM_DIFF_COUNT] = {0};
    char want[8400];
    if (st && m1) {
        int rc = lm_diff(m1, st, &o, out, &err);
        snprintf(want, sizeof want, "%s vs %s: layer 0 attn.q: [32, 32] vs [64, 64]", m1->path, st->path);
        CHECK(rc == LM_ESHAPE && !strcmp(err.msg, want), "rc %d msg '%s', want '%s'", rc, err.msg, want);
        CHECK(!out[0] && !out[3], "outputs stay NULL on error");
    }
    if (st && m2) {
        int rc = lm_diff(st, m2, &o, out, &err);
        snprintf(want, sizeof want, "%s vs %s: 5 layers vs 2 layers", st->path, m2->path);
        CHECK(rc == LM_ESHAPE && !strcmp(err.msg, want), "rc %d msg '%s', want '%s'", rc, err.msg, want);
    }
    if (st && m3) {
        int rc = lm_diff(st, m3, &o, out, &err);
        snprintf(want, sizeof want, "%s vs %s: layer 0 mlp.up: [172, 64] vs [128, 64]", st->path, m3->path);
        CHECK(rc == LM_ESHAPE && !strcmp(err.msg, want), "rc %d msg '%s', want '%s'", rc, err.msg, want);
    }
    lm_model_close(st);
    lm_model_close(m1);
    lm_model_close(m2);
    lm_model_close(m3);
}

typedef struct prog {
    int calls, bad;
    double last, total;
} prog;

/* Progress callback of the test: counts calls and out-of-order reports. */
static void prog_cb(void *ctx, double done, double total, const char *what) {
    prog *p = ctx;
    if (done < p->last || done > total || strcmp(what, "diff") != 0) p->bad++;
    if (p->calls && total != p->total) p->bad++;
    p->calls++;
    p->last = done;
    p->total = total;
}

/* Bad options; thread-count independence; rank_k 0; progress in bytes. */
static void test_opts_threads_progress(void) {
    lm_model *a = open_model("stories260K-hf-bf16"), *b = open_model("stories260K-ft-hf-bf16");
    if (!a || !b) goto out;
    lm_err err;
    lm_diff_opts o;
    lm_matrix *out[LM_DIFF_COUNT] = {0}, *out3[LM_DIFF_COUNT] = {0};
    struct {
        const char *what;
        void (*set)(lm_diff_opts *);
    } bad[] = {{"tol -1", NULL}, {"tol NaN", NULL}, {"rank_k -1", NULL}, {"oversample -1", NULL},
               {"power_iters -1", NULL}, {"threads -2", NULL}};
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        lm_diff_opts_default(&o);
        switch (i) {
        case 0: o.tol = -1; break;
        case 1: o.tol = NAN; break;
        case 2: o.rank_k = -1; break;
        case 3: o.oversample = -1; break;
        case 4: o.power_iters = -1; break;
        case 5: o.threads = -2; break;
        }
        int rc = lm_diff(a, b, &o, out, &err);
        CHECK(rc == LM_EARG && out[0] == NULL && strstr(err.msg, "diff:"), "%s: rc %d (%s)", bad[i].what, rc,
              rc ? err.msg : "");
        free_out(out);
    }

    lm_diff_opts_default(&o);
    o.threads = 1;
    o.rank_k = 8; /* randomized path, several passes */
    int omp_before = omp_get_max_threads();
    CHECK_OK(lm_diff(a, b, &o, out, &err), &err);
    CHECK(omp_get_max_threads() == omp_before, "OpenMP default threads restored: %d, was %d", omp_get_max_threads(),
          omp_before);
    o.threads = 3;
    prog p = {0, 0, 0, 0};
    o.progress = prog_cb;
    o.progress_ctx = &p;
    CHECK_OK(lm_diff(a, b, &o, out3, &err), &err);
    if (out[0] && out3[0]) {
        int same = 1;
        for (int k = 0; k < LM_DIFF_COUNT; k++)
            same &= !memcmp(out[k]->v, out3[k]->v, sizeof(double) * (size_t)a->cfg.n_layer * LM_N_MODULES);
        CHECK(same, "1 and 3 threads give bitwise identical matrices");
    }
    double bytes = 0;
    for (int i = 0; i < a->cfg.n_layer; i++)
        for (int j = 0; j < LM_N_MODULES; j++) bytes += (double)(a->layers[i].w[j]->nbytes + b->layers[i].w[j]->nbytes);
    CHECK(p.calls >= 2 && p.bad == 0, "progress: %d calls, %d out of order", p.calls, p.bad);
    CHECK(p.total == bytes && p.last == bytes, "progress total %.0f last %.0f, want %.0f bytes", p.total, p.last,
          bytes);
    free_out(out);
    free_out(out3);

    lm_diff_opts_default(&o);
    o.rank_k = 0;
    CHECK_OK(lm_diff(a, b, &o, out, &err), &err);
    if (out[0]) {
        int nan = 0, rel_ok = 1;
        for (int i = 0; i < a->cfg.n_layer; i++)
            for (int j = 0; j < LM_N_MODULES; j++) {
                nan += isnan(lm_matrix_get(out[LM_DIFF_RANK], i, j));
                rel_ok &= lm_matrix_get(out[LM_DIFF_REL], i, j) > 0;
            }
        CHECK(nan == a->cfg.n_layer * LM_N_MODULES && rel_ok, "rank_k 0: rank all NaN (%d), rel computed", nan);
    }
    free_out(out);
out:
    lm_model_close(a);
    lm_model_close(b);
}

/* The models and options of one lm_diff under fault injection. */
typedef struct diff_fault {
    const lm_model *a, *b;
    lm_diff_opts o;
} diff_fault;

/* One lm_diff (fault-injection run): no output matrix after a failure. */
static int fault_diff(void *ctx, lm_err *err, const char **why) {
    const diff_fault *f = ctx;
    lm_matrix *out[LM_DIFF_COUNT] = {0};
    int rc = lm_diff(f->a, f->b, &f->o, out, err);
    if (rc != LM_OK)
        for (int k = 0; k < LM_DIFF_COUNT; k++)
            if (out[k]) *why = "an output matrix after a failure";
    free_out(out);
    return rc;
}

/* Fail the 1st, 2nd, ... allocation of lm_diff: each run returns LM_ENOMEM
 * with no output (and no leak, under ASan) until one runs clean. */
static void test_faults(void) {
    lm_model *a = open_model("stories260K-hf"), *b = open_model("stories260K-ft-hf");
    if (!a || !b) goto out;
    diff_fault f = {.a = a, .b = b};
    lm_diff_opts_default(&f.o);
    f.o.threads = 2;
    fault_sweep("lm_diff", fault_diff, &f, 500);
out:
    lm_model_close(a);
    lm_model_close(b);
}

/* ------------------------------------------------------------------------ */
/* The CLI                                                                   */
/* ------------------------------------------------------------------------ */

/* Run a shell command; its exit status. */
static int sh(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* 1 when p is a non-empty file. */
static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 0;
}

/* `layermap diff` end to end: one metric to png + csv (values checked against
 * the reference), -m all to per-metric files, errors and --help; the binary
 * beside the test's build directory must exist (make builds it first). */
static void test_cli(const char *argv0, const char *scratch) {
    char bin[1200], tmp[1024], cmd[8192], p1[1024], p2[1024], o1[1100], o2[1100];
    snprintf(tmp, sizeof tmp, "%s", argv0);
    snprintf(bin, sizeof bin, "%s/../layermap", dirname(tmp));
    CHECK(access(bin, X_OK) == 0, "%s not built (make builds it before the tests)", bin);
    if (access(bin, X_OK) != 0) return;
    model_path(p1, sizeof p1, "stories260K-hf");
    model_path(p2, sizeof p2, "stories260K-ft-hf");
    snprintf(o1, sizeof o1, "%s/x.png", scratch);
    snprintf(o2, sizeof o2, "%s/x.csv", scratch);
    snprintf(cmd, sizeof cmd, "'%s' diff '%s' '%s' -o '%s' --csv '%s' >'%s/cli.out' 2>'%s/cli.err'", bin, p1, p2, o1,
             o2, scratch, scratch);
    int rc = sh(cmd);
    CHECK(rc == 0, "%s -> exit %d", cmd, rc);
    CHECK(exists(o1) && exists(o2), "cli wrote %s and %s", o1, o2);
    lm_matrix *m = NULL;
    lm_err err;
    ref_pair *ref = calloc(1, sizeof *ref);
    if (exists(o2) && ref && ref_load(ref, "hf") == 0 && lm_matrix_read_csv(&m, o2, &err) == LM_OK) {
        CHECK(m->n_layer == ref->n_layer, "cli csv layers %d", m->n_layer);
        for (int i = 0; i < m->n_layer && i < ref->n_layer; i++)
            for (int j = 0; j < LM_N_MODULES; j++)
                CHECK_CLOSE(lm_matrix_get(m, i, j), ref->v[i][j][R_REL], 0, 1e-6, "cli csv rel");
        lm_matrix_free(m);
    } else {
        CHECK(0, "cli csv %s readable", o2);
    }
    free(ref);

    /* -m all: one file per metric */
    snprintf(o1, sizeof o1, "%s/all.svg", scratch);
    snprintf(o2, sizeof o2, "%s/all.csv", scratch);
    snprintf(cmd, sizeof cmd, "'%s' diff '%s' '%s' -m all --rank-k 8 --tol 1e-3 -o '%s' --csv '%s' --quiet 2>/dev/null",
             bin, p1, p2, o1, o2);
    CHECK(sh(cmd) == 0, "%s", cmd);
    for (int k = 0; k < LM_DIFF_COUNT; k++) {
        char f1[1200], f2[1200];
        snprintf(f1, sizeof f1, "%s/all-%s.svg", scratch, lm_diff_metric_names[k]);
        snprintf(f2, sizeof f2, "%s/all-%s.csv", scratch, lm_diff_metric_names[k]);
        CHECK(exists(f1) && exists(f2), "-m all wrote %s and %s", f1, f2);
    }
    /* errors: shape mismatch and bad options exit non-zero with a message */
    snprintf(cmd, sizeof cmd, "'%s' diff '%s' '%s/tiny-dim32' --quiet >/dev/null 2>'%s/err.txt'", bin, p1, scratch,
             scratch);
    CHECK(sh(cmd) != 0, "shape mismatch must fail: %s", cmd);
    snprintf(cmd, sizeof cmd, "grep -q 'layer 0 attn.q: \\[64, 64\\] vs \\[32, 32\\]' '%s/err.txt'", scratch);
    CHECK(sh(cmd) == 0, "cli error names layer, module and shapes");
    snprintf(cmd, sizeof cmd, "'%s' diff '%s' '%s' -m nope --quiet >/dev/null 2>&1", bin, p1, p2);
    CHECK(sh(cmd) != 0, "bad metric must fail");
    snprintf(cmd, sizeof cmd, "'%s' diff --help 2>&1 | grep -q -- '--rank-k'", bin);
    CHECK(sh(cmd) == 0, "--help documents --rank-k");
}

/* Every check runs; the exit status is non-zero when any failed. */
/* A layer selection reads and compares only those layers: their cells are
 * bit-identical to the full run's, the others NaN; an empty selection is an
 * error naming the model. */
static void test_layer_mask(void) {
    lm_model *a = open_model("stories260K-hf"), *b = open_model("stories260K-ft-hf");
    CHECK(a && b, "open stories260K pair");
    if (!a || !b) goto out;
    lm_diff_opts o;
    lm_diff_opts_default(&o);
    o.rank_k = 4;
    lm_matrix *full[LM_DIFF_COUNT] = {0}, *sel[LM_DIFF_COUNT] = {0};
    lm_err err;
    CHECK_OK(lm_diff(a, b, &o, full, &err), &err);
    uint8_t keep[3] = {0, 1, 1}; /* layers 1 and 2 */
    o.layers = keep;
    o.n_layers_mask = 3;
    CHECK_OK(lm_diff(a, b, &o, sel, &err), &err);
    int same = 1, nan_ok = 1;
    for (int k = 0; full[0] && sel[0] && k < LM_DIFF_COUNT; k++)
        for (int l = 0; l < a->cfg.n_layer; l++)
            for (int j = 0; j < LM_N_MODULES; j++) {
                double x = lm_matrix_get(sel[k], l, j), y = lm_matrix_get(full[k], l, j);
                if (l == 1 || l == 2)
                    same &= x == y || (isnan(x) && isnan(y));
                else
                    nan_ok &= isnan(x);
            }
    CHECK(same, "selected layers equal the full diff");
    CHECK(nan_ok, "other layers are NaN");
    for (int k = 0; k < LM_DIFF_COUNT; k++) {
        lm_matrix_free(full[k]);
        lm_matrix_free(sel[k]);
        sel[k] = NULL;
    }
    uint8_t none[1] = {0};
    o.layers = none;
    o.n_layers_mask = 1;
    CHECK(lm_diff(a, b, &o, sel, &err) == LM_EARG && strstr(err.msg, "stories260K-hf") && !sel[0],
          "empty selection: %s", err.msg);
out:
    lm_model_close(a);
    lm_model_close(b);
}

int main(int argc, char **argv) {
    (void)argc;
    test_layer_mask();
    const char *scratch = scratch_dir();
    check_pair("hf", "stories260K-hf", "stories260K-ft-hf");
    check_pair("bf16", "stories260K-hf-bf16", "stories260K-ft-hf-bf16");
    check_pair("gguf", "stories260K.gguf", "stories260K-ft.gguf");
    check_pair("cross", "stories260K-hf", "stories260K-ft.gguf");

    char db[600], df[600];
    snprintf(db, sizeof db, "%s/synth-base", scratch);
    snprintf(df, sizeof df, "%s/synth-ft", scratch);
    tiny s = {2, 64, 8, 4, 8, 96, 64};
    CHECK(write_tiny(db, &s, fill_base, NULL) == 0, "write %s", db);
    CHECK(write_tiny(df, &s, fill_ft, NULL) == 0, "write %s", df);
    test_synthetic(db, df, &s);

    test_identical();
    test_mismatch(scratch);
    test_opts_threads_progress();
    test_faults();
    test_cli(argv[0], scratch);
    test_overlap(scratch, argv[0]);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", scratch);
    return TEST_END();
}
