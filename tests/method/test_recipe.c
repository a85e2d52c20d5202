/*
 * test_recipe.c -- the quantization recipe: ggml's block sizes and the error
 * model, a case worked by hand, the budget, shapes and monotonicity on random
 * matrices, errors, the --tensor-type-file read back as llama-quantize reads
 * it (regex, first match), a real model's tensors, fault injection, and the
 * `recipe` command.
 */
#include "test.h"
#include "fault.h"

#include "base/base.h"

#include <ctype.h>
#include <regex.h>
#include <sys/wait.h>

#define IDX(l, c) ((size_t)(l) * LM_N_MODULES + (c))

/* Is s one line (one '\n', at its end)? */
static int one_line(const char *s) {
    const char *nl = strchr(s, '\n');
    return nl && !nl[1];
}

static double bpw_of(lm_qtype t) {
    const lm_qtype_info *q = lm_qtype_get(t);
    return 8.0 * q->bytes / q->block;
}

/* Bits per weight from ggml's blocks (the table), fits, the error model. */
static void test_types(void) {
    static const struct {
        const char *name;
        double bpw;
        int block;
    } want[LM_QT_COUNT] = {
        {"q2_k", 2.625, 256}, {"q3_k", 3.4375, 256}, {"q4_0", 4.5, 32},  {"q4_1", 5.0, 32},
        {"q4_k", 4.5, 256},   {"q5_0", 5.5, 32},     {"q5_1", 6.0, 32},  {"q5_k", 5.5, 256},
        {"q6_k", 6.5625, 256}, {"q8_0", 8.5, 32},    {"f16", 16.0, 1},   {"bf16", 16.0, 1},
    };
    for (int t = 0; t < LM_QT_COUNT; t++) {
        const lm_qtype_info *q = lm_qtype_get((lm_qtype)t);
        CHECK(q && !strcmp(q->name, want[t].name) && q->block == want[t].block && bpw_of(t) == want[t].bpw,
              "type %d: %s %g bpw", t, q ? q->name : "?", q ? bpw_of(t) : 0);
        lm_qtype p;
        lm_err err = {0};
        char up[16];
        snprintf(up, sizeof up, "%s", want[t].name);
        for (char *s = up; *s; s++) *s = (char)toupper((unsigned char)*s);
        CHECK(lm_qtype_parse(up, &p, &err) == LM_OK && p == (lm_qtype)t, "parse %s", up);
    }
    CHECK(lm_qtype_get(LM_QT_COUNT) == NULL && lm_qtype_get((lm_qtype)-1) == NULL, "out of range");
    lm_qtype p;
    lm_err err = {0};
    CHECK(lm_qtype_parse("q3_k_m", &p, &err) == LM_EARG && strstr(err.msg, "q3_k_m") && strstr(err.msg, "q8_0"),
          "unknown type: %s", err.msg);
    /* the model: (step)^2/12 with step 2 E[max|x|] / 2^b or E[range] / (2^b - 1);
     * q4_0 over 32 values: step 2 * 2.3471 / 16 */
    double s = 2 * 2.3471292 / 16;
    CHECK_CLOSE(lm_qtype_get(LM_QT_Q4_0)->err, s * s / 12, 0, 1e-12, "q4_0 err");
    s = 3.5319828 / 3;
    CHECK_CLOSE(lm_qtype_get(LM_QT_Q2_K)->err, s * s / 12, 0, 1e-12, "q2_k err");
    CHECK_CLOSE(lm_qtype_get(LM_QT_F16)->err, pow(2, -22) / 3, 0, 1e-12, "f16 err");
    /* one more bit divides the error by about 4 (exactly (2^b - 1)^2 ratios for minimum types) */
    double r = lm_qtype_get(LM_QT_Q4_1)->err / lm_qtype_get(LM_QT_Q5_1)->err;
    CHECK_CLOSE(r, (31.0 * 31.0) / (15.0 * 15.0), 0, 1e-12, "q4_1 / q5_1");
    CHECK(lm_qtype_get(LM_QT_Q4_K)->err < lm_qtype_get(LM_QT_Q4_0)->err, "q4_k errs less than q4_0 at 4.5 bpw");
    CHECK(lm_qtype_get(LM_QT_BF16)->err > lm_qtype_get(LM_QT_F16)->err, "bf16 errs more than f16");
}

/* n module tensors "blk.L.M" of shape (ne1, ne0), L rows of the matrix. */
static lm_recipe_tensor mod(int l, int c, int64_t ne0, int64_t ne1) {
    lm_recipe_tensor t = {.layer = l, .module = c, .ne0 = ne0, .ne1 = ne1};
    snprintf(t.name, sizeof t.name, "blk.%d.m%d.weight", l, c);
    return t;
}

static int64_t bytes_of(lm_qtype t, int64_t ne0, int64_t ne1) {
    const lm_qtype_info *q = lm_qtype_get(t);
    return ne1 * (ne0 / q->block) * q->bytes;
}

/* Worked by hand: one layer, seven 32 x 64 tensors (ne0 = 64: the 32-block
 * types and f16; 2048 weights each). Bytes: q4_0 1152, q5_0 1408, q5_1 1536,
 * q8_0 2176. Hull of (bpw, err) over 64-wide rows: q4_0 -> q5_0 -> q5_1 ->
 * q8_0 -> f16 (q4_1, 5.0 bpw, lies above the q4_0-q5_0 segment).
 * Cells: q 10, the rest 1. Gains per byte: q4_0 -> q5_0 (256 B) removes
 * 0.005375 I, 2.10e-5 I per byte; q5_0 -> q5_1 (128 B) 0.000307 I, 2.40e-6 I.
 * Budget: all at q4_0 (8064 B) + 256 + 300 = 8620 B:
 *   q to q5_0 (2.1e-4 per byte) left 300;  next: q's q5_1 step (2.4e-5) beats
 *   k's q5_0 step (2.1e-5)? yes, costs 128: left 172; then q's q8_0 step costs
 *   640 > 172: closed; k's 256 > 172: closed, ... -> q at q5_1, the rest q4_0. */
static void test_hand(void) {
    lm_matrix *m = lm_matrix_new(1);
    lm_recipe_tensor in[7];
    for (int c = 0; c < 7; c++) {
        m->v[c] = c == 0 ? 10 : 1;
        in[c] = mod(0, c, 64, 32);
    }
    CHECK(bytes_of(LM_QT_Q4_0, 64, 32) == 1152 && bytes_of(LM_QT_Q5_0, 64, 32) == 1408 &&
              bytes_of(LM_QT_Q5_1, 64, 32) == 1536,
          "bytes");
    lm_recipe_opts o;
    lm_recipe_opts_default(&o);
    CHECK(o.per_weight == 0 && o.embd_type == -1 && o.output_type == -1, "defaults");
    o.bpw = 8620.0 * 8 / (7 * 2048) + 1e-9;
    lm_recipe r;
    lm_err err = {0};
    CHECK_OK(lm_recipe_select(m, in, 7, &o, &r, &err), &err);
    CHECK(r.n == 7 && r.t[0].type == LM_QT_Q5_1, "q at q5_1: %s", r.n ? lm_qtype_get(r.t[0].type)->name : "-");
    for (int c = 1; c < 7 && r.n; c++) CHECK(r.t[c].type == LM_QT_Q4_0, "module %d at q4_0", c);
    CHECK(r.budget_bytes == 8620 && r.bytes == 8064 + 256 + 128, "bytes %lld of %lld", (long long)r.bytes,
          (long long)r.budget_bytes);
    CHECK_CLOSE(r.min_bpw, 8.0 * 8064 / (7 * 2048), 0, 1e-12, "min bpw");
    double dmg = 10 * lm_qtype_get(LM_QT_Q5_1)->err + 6 * lm_qtype_get(LM_QT_Q4_0)->err;
    CHECK_CLOSE(r.damage, dmg, 0, 1e-12, "damage");
    CHECK_CLOSE(r.importance, 16, 0, 0, "importance");
    lm_recipe_free(&r);

    /* per weight: the same cells times 2048 -> the same choice (the ratio is what counts) */
    o.per_weight = 1;
    CHECK_OK(lm_recipe_select(m, in, 7, &o, &r, &err), &err);
    CHECK(r.n == 7 && r.t[0].type == LM_QT_Q5_1 && r.t[1].type == LM_QT_Q4_0, "per weight, same shapes");
    CHECK_CLOSE(r.importance, 16.0 * 2048, 0, 1e-12, "importance per weight");
    lm_recipe_free(&r);
    /* per weight with different sizes: a small tensor with the same per-weight cell as a
     * large one; total mode sees the large one's total as the same, per-weight as 8x */
    lm_recipe_tensor two[2] = {mod(0, 0, 64, 256), mod(0, 1, 64, 32)};
    m->v[0] = m->v[1] = 1;
    o.bpw = 4.5 + 256.0 * 8 / (288 * 64) + 1e-9; /* one small step: 256 B moves the small one to q5_0 */
    o.per_weight = 0;
    CHECK_OK(lm_recipe_select(m, two, 2, &o, &r, &err), &err);
    CHECK(r.n == 2 && r.t[0].type == LM_QT_Q4_0 && r.t[1].type == LM_QT_Q5_0, "total: the small one (more per byte)");
    lm_recipe_free(&r);
    o.bpw = 4.5 + 2048.0 * 8 / (288 * 64) + 1e-9; /* the large one's q5_0 step costs 2048 B */
    o.per_weight = 1;
    CHECK_OK(lm_recipe_select(m, two, 2, &o, &r, &err), &err);
    /* per weight: equal gains per byte, the lower tensor first: large to q5_0 (2048 B), nothing left */
    CHECK(r.n == 2 && r.t[0].type == LM_QT_Q5_0 && r.t[1].type == LM_QT_Q4_0, "per weight: tie to the lower");
    lm_recipe_free(&r);
    lm_matrix_free(m);
}

/* Random matrices over SmolLM2/Gemma-like shapes: the budget, one step of it,
 * shapes, monotonicity (in max(I, 0): cells <= 0 are equally unimportant). */
static void test_random(void) {
    static const int64_t widths[] = {576, 640, 1536, 2048, 64, 172};
    uint64_t s = 12345;
    for (int trial = 0; trial < 300; trial++) {
        int L = 1 + trial % 5;
        lm_matrix *m = lm_matrix_new(L);
        int n = L * 7 + 1;
        lm_recipe_tensor *in = calloc((size_t)n, sizeof *in);
        for (int l = 0; l < L; l++)
            for (int c = 0; c < 7; c++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                int64_t ne0 = widths[(s >> 33) % 6];
                int64_t ne1 = 32 * (int64_t)(1 + (s >> 45) % 4);
                if (trial % 3 == 0) { /* many equal shapes for the monotonicity check */
                    ne0 = c < 4 ? 576 : 1536;
                    ne1 = 64;
                }
                in[IDX(l, c)] = mod(l, c, ne0, ne1);
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                m->v[IDX(l, c)] = (double)((s >> 20) % 1000) / 10.0 - (trial % 7 == 0 ? 20 : 0);
            }
        in[n - 1] = (lm_recipe_tensor){.name = "token_embd.weight", .layer = -1, .module = LM_RECIPE_OUTPUT,
                                       .ne0 = trial % 2 ? 576 : 512, .ne1 = 100};
        lm_recipe_opts o;
        lm_recipe_opts_default(&o);
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        o.bpw = 4.0 + (double)((s >> 30) % 1300) / 100.0;
        lm_recipe r;
        lm_err err = {0};
        int rc = lm_recipe_select(m, in, n, &o, &r, &err);
        if (rc) {
            CHECK(rc == LM_EARG && strstr(err.msg, "below the cheapest"), "trial %d: %s", trial, err.msg);
            lm_matrix_free(m);
            free(in);
            continue;
        }
        int ok_fit = 1, ok_k = 1, ok_mono = 1, ok_out = 1;
        int64_t bytes = 0;
        for (int i = 0; i < n; i++) {
            const lm_qtype_info *q = lm_qtype_get(r.t[i].type);
            ok_fit &= r.t[i].ne0 % q->block == 0;
            if (r.t[i].ne0 % 256) ok_k &= q->block != 256;
            bytes += bytes_of(r.t[i].type, r.t[i].ne0, r.t[i].ne1);
        }
        /* output rule: q6_k on 256-multiples, else q8_0 */
        ok_out = r.t[n - 1].type == (r.t[n - 1].ne0 % 256 ? LM_QT_Q8_0 : LM_QT_Q6_K);
        for (int i = 0; i < n - 1; i++)
            for (int j = 0; j < n - 1; j++)
                if (r.t[i].ne0 == r.t[j].ne0 && r.t[i].ne1 == r.t[j].ne1 && fmax(r.t[i].importance, 0) > fmax(r.t[j].importance, 0) &&
                    bpw_of(r.t[i].type) < bpw_of(r.t[j].type))
                    ok_mono = 0;
        /* within one step: every tensor not at its top type has a next hull step that no
         * longer fits, and that step is at most its gap to f16; so what is left is less
         * than the smallest such gap */
        int64_t left = r.budget_bytes - r.bytes, gap = -1;
        for (int i = 0; i < n - 1; i++) {
            int64_t g = bytes_of(LM_QT_F16, r.t[i].ne0, r.t[i].ne1) - bytes_of(r.t[i].type, r.t[i].ne0, r.t[i].ne1);
            if (g > 0 && (gap < 0 || g < gap)) gap = g;
        }
        CHECK(bytes == r.bytes && r.bytes <= r.budget_bytes && r.bpw <= o.bpw, "trial %d: %lld bytes of %lld",
              trial, (long long)r.bytes, (long long)r.budget_bytes);
        CHECK(gap < 0 || left < gap, "trial %d: %lld bytes left, a tensor %lld bytes below f16", trial,
              (long long)left, (long long)gap);
        CHECK(ok_fit && ok_k, "trial %d: every type fits its rows, no k-quant on rows not a multiple of 256", trial);
        CHECK(ok_mono, "trial %d: a more important module of the same shape got fewer bits", trial);
        CHECK(ok_out, "trial %d: output rule", trial);
        lm_recipe_free(&r);
        lm_matrix_free(m);
        free(in);
    }
}

/* Stricter "within one step": after the greedy, every tensor's next hull rung
 * costs more than the bytes left. Checked against a brute-force ladder here:
 * all tensors 576 wide (hull q4_0 q5_0 q5_1 q8_0 f16) and a budget swept in
 * small increments; the bytes left never exceed the dearest next step. */
static void test_one_step(void) {
    lm_matrix *m = lm_matrix_new(2);
    lm_recipe_tensor in[14];
    for (int i = 0; i < 14; i++) {
        in[i] = mod(i / 7, i % 7, 576, 64 * (1 + i % 3));
        m->v[i] = 1 + (i * 7919) % 13;
    }
    static const lm_qtype hull[] = {LM_QT_Q4_0, LM_QT_Q5_0, LM_QT_Q5_1, LM_QT_Q8_0, LM_QT_F16};
    int bad = 0, k_bad = 0;
    for (double b = 4.5; b <= 16.5; b += 0.01) {
        lm_recipe_opts o;
        lm_recipe_opts_default(&o);
        o.bpw = b;
        lm_recipe r;
        lm_err err = {0};
        if (lm_recipe_select(m, in, 14, &o, &r, &err)) {
            bad++;
            continue;
        }
        int64_t left = r.budget_bytes - r.bytes;
        for (int i = 0; i < 14; i++) {
            int k = 0;
            while (k < 5 && hull[k] != r.t[i].type) k++;
            if (k == 5) k_bad++;
            if (k >= 4) continue;
            int64_t step = bytes_of(hull[k + 1], 576, in[i].ne1) - bytes_of(hull[k], 576, in[i].ne1);
            if (step <= left) bad++;
        }
        lm_recipe_free(&r);
    }
    CHECK(!bad && !k_bad, "a next step still fitting (%d) or a type off the hull (%d)", bad, k_bad);
    lm_matrix_free(m);
}

/* Errors of lm_recipe_select. */
static void test_errors(void) {
    lm_matrix *m = lm_matrix_new(1);
    lm_recipe_tensor in[8];
    for (int c = 0; c < 7; c++) {
        m->v[c] = 1;
        in[c] = mod(0, c, 576, 64);
    }
    in[7] = (lm_recipe_tensor){.name = "token_embd.weight", .layer = -1, .module = LM_RECIPE_OUTPUT, .ne0 = 576,
                               .ne1 = 64};
    lm_recipe_opts o;
    lm_recipe_opts_default(&o);
    lm_recipe r;
    lm_err err = {0};
    CHECK(lm_recipe_select(m, in, 8, &o, &r, &err) == LM_EARG && strstr(err.msg, "positive"), "no budget");
    o.bpw = NAN;
    CHECK(lm_recipe_select(m, in, 8, &o, &r, &err) == LM_EARG, "NaN budget");
    /* cheapest: 7 x q4_0 (4.5) + q8_0 (8.5) over 8 equal tensors = 5.0 bpw */
    o.bpw = 4.99;
    CHECK(lm_recipe_select(m, in, 8, &o, &r, &err) == LM_EARG && strstr(err.msg, "below the cheapest") &&
              strstr(err.msg, "5.0000"),
          "budget below the ladder: %s", err.msg);
    o.bpw = 5.0;
    CHECK_OK(lm_recipe_select(m, in, 8, &o, &r, &err), &err);
    CHECK(r.bpw == 5.0 && r.min_bpw == 5.0, "at the floor: %g", r.bpw);
    lm_recipe_free(&r);
    m->v[3] = NAN;
    CHECK(lm_recipe_select(m, in, 8, &o, &r, &err) == LM_EARG && strstr(err.msg, "attn.o") && strstr(err.msg, "NaN"),
          "NaN cell: %s", err.msg);
    m->v[3] = 1;
    in[2].layer = 1;
    CHECK(lm_recipe_select(m, in, 8, &o, &r, &err) == LM_EARG && strstr(err.msg, "1-layer"), "layer out of range: %s",
          err.msg);
    in[2].layer = 0;
    in[4].ne0 = 100; /* no 32-block type, only f16 */
    o.bpw = 6;
    CHECK_OK(lm_recipe_select(m, in, 8, &o, &r, &err), &err);
    CHECK(r.n == 8 && r.t[4].type == LM_QT_F16, "100-wide rows: f16");
    lm_recipe_free(&r);
    in[4].ne0 = 0;
    CHECK(lm_recipe_select(m, in, 8, &o, &r, &err) == LM_EARG && strstr(err.msg, "no shape"), "no shape");
    in[4].ne0 = 576;
    o.output_type = LM_QT_Q6_K;
    CHECK(lm_recipe_select(m, in, 8, &o, &r, &err) == LM_EARG && strstr(err.msg, "token_embd.weight") &&
              strstr(err.msg, "576"),
          "output type that does not fit: %s", err.msg);
    o.output_type = LM_QT_Q4_0;
    o.bpw = 4.5;
    CHECK_OK(lm_recipe_select(m, in, 8, &o, &r, &err), &err);
    CHECK(r.n == 8 && r.t[7].type == LM_QT_Q4_0 && r.bpw == 4.5, "--output-type q4_0");
    lm_recipe_free(&r);
    lm_matrix_free(m);
}

/* The file as llama-quantize reads it: whitespace-separated tokens, each
 * NAME=TYPE split at the first '=', TYPE one of ggml's names; each pattern a
 * regex searched in the tensor name, the first match wins. Names chosen to
 * trap unanchored patterns: output.weight inside blk.N.attn_output.weight,
 * blk.1 inside blk.11, token_embd.weight listed first. */
static void test_file(void) {
    static const char *names[] = {"output.weight", "token_embd.weight", "blk.1.attn_q.weight",
                                  "blk.11.attn_q.weight", "blk.1.attn_output.weight", "blk.11.attn_output.weight"};
    int n = 6;
    lm_recipe r = {.n = n, .t = lm_calloc((size_t)n, sizeof(lm_recipe_tensor))};
    for (int i = 0; i < n; i++) {
        snprintf(r.t[i].name, sizeof r.t[i].name, "%s", names[i]);
        r.t[i].type = (lm_qtype)(i % LM_QT_COUNT);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/types.txt", scratch_dir());
    lm_err err = {0};
    CHECK_OK(lm_recipe_write(&r, path, &err), &err);
    FILE *f = fopen(path, "r");
    char tok[256], pats[8][300], types[8][32];
    int k = 0, lines = 0, c;
    while (f && (c = fgetc(f)) != EOF) lines += c == '\n';
    if (f) rewind(f);
    while (f && k < 8 && fscanf(f, "%255s", tok) == 1) {
        char *eq = strchr(tok, '=');
        CHECK(eq && eq != tok && eq[1], "token '%s' is NAME=TYPE", tok);
        if (!eq) break;
        *eq = 0;
        snprintf(pats[k], sizeof pats[k], "%s", tok);
        snprintf(types[k], sizeof types[k], "%s", eq + 1);
        lm_qtype t;
        CHECK(lm_qtype_parse(types[k], &t, &err) == LM_OK && t == r.t[k].type, "line %d type %s", k, types[k]);
        k++;
    }
    if (f) fclose(f);
    CHECK(k == n && lines == n, "%d tokens on %d lines, want %d", k, lines, n);
    CHECK(!strcmp(pats[0], "^output\\.weight$") && !strcmp(pats[2], "^blk\\.1\\.attn_q\\.weight$"), "patterns: %s %s",
          pats[0], pats[2]);
    regex_t re[8];
    int ok = k == n;
    for (int i = 0; i < k; i++) ok &= regcomp(&re[i], pats[i], REG_EXTENDED | REG_NOSUB) == 0;
    CHECK(ok, "patterns compile as regexes");
    for (int j = 0; ok && j < n; j++) {
        int first = -1;
        for (int i = 0; i < k && first < 0; i++)
            if (regexec(&re[i], names[j], 0, NULL, 0) == 0) first = i;
        CHECK(first == j, "%s: first match is line %d", names[j], first);
    }
    for (int i = 0; ok && i < k; i++) regfree(&re[i]);
    /* a name llama-quantize could not take */
    snprintf(r.t[3].name, sizeof r.t[3].name, "bad name");
    CHECK(lm_recipe_write(&r, path, &err) == LM_EARG && strstr(err.msg, "bad name"), "space in a name");
    char buf[8];
    CHECK(!strcmp(lm_recipe_pattern("a.b", buf, sizeof buf), "^a\\.b$"), "pattern");
    CHECK(strlen(lm_recipe_pattern("abcdefgh", buf, sizeof buf)) == 7, "pattern truncated");
    lm_recipe_free(&r);
}

/* A real model's tensors (stories260K.gguf: tied embeddings, dim 64, ffn 172). */
static void test_model(void) {
    char mp[1024];
    model_path(mp, sizeof mp, "stories260K.gguf");
    lm_model *model = NULL;
    lm_err err = {0};
    CHECK_OK(lm_model_open(&model, mp, &err), &err);
    if (!model) return;
    lm_matrix *m = lm_matrix_new(5), *bad = lm_matrix_new(4);
    for (int i = 0; i < 35; i++) m->v[i] = 1 + i;
    lm_recipe_opts o;
    lm_recipe_opts_default(&o);
    o.bpw = 9;
    lm_recipe r;
    CHECK_OK(lm_recipe_select_model(m, model, &o, &r, &err), &err);
    CHECK(r.n == 36, "35 modules + tied token_embd: %d", r.n);
    if (r.n == 36) {
        CHECK(!strcmp(r.t[0].name, "blk.0.attn_q.weight") && r.t[0].ne0 == 64 && r.t[0].ne1 == 64, "q: %s",
              r.t[0].name);
        CHECK(!strcmp(r.t[IDX(2, LM_MOD_DOWN)].name, "blk.2.ffn_down.weight") && r.t[IDX(2, LM_MOD_DOWN)].ne0 == 172 &&
                  r.t[IDX(2, LM_MOD_DOWN)].type == LM_QT_F16,
              "down: 172-wide rows fit only f16");
        CHECK(!strcmp(r.t[35].name, "token_embd.weight") && r.t[35].module == LM_RECIPE_OUTPUT &&
                  r.t[35].type == LM_QT_Q8_0,
              "tied token_embd: the output rule, q8_0 on 64-wide rows");
        CHECK(r.weights == 260032 - 64 * 11 && r.bpw <= 9, "weights %lld", (long long)r.weights);
    }
    lm_recipe_free(&r);
    CHECK(lm_recipe_select_model(bad, model, &o, &r, &err) == LM_ESHAPE && strstr(err.msg, "stories260K.gguf") &&
              strstr(err.msg, "4 layers"),
          "layer mismatch: %s", err.msg);
    m->layer_index = calloc(5, sizeof(int));
    for (int l = 0; l < 5; l++) m->layer_index[l] = l + (l == 4);
    CHECK(lm_recipe_select_model(m, model, &o, &r, &err) == LM_ESHAPE && strstr(err.msg, "every layer"),
          "a --layers matrix: %s", err.msg);
    free(m->layer_index);
    m->layer_index = NULL;

    /* fault injection over the whole path */
    char path[1024];
    snprintf(path, sizeof path, "%s/fault.txt", scratch_dir());
    for (long nth = 1;; nth++) {
        lm_fault_arm(nth);
        int rc = lm_recipe_select_model(m, model, &o, &r, &err);
        if (!rc) rc = lm_recipe_write(&r, path, &err);
        long hits = lm_fault_hits();
        lm_fault_arm(0);
        lm_recipe_free(&r);
        if (!hits) {
            CHECK(rc == LM_OK, "no fault: %d", rc);
            break;
        }
        CHECK(rc == LM_ENOMEM || rc == LM_EIO, "fault %ld: rc %d", nth, rc);
    }
    lm_matrix_free(bad);

    /* the command */
    const char *bin = getenv("LM_BIN");
    if (!bin || !*bin) bin = "build/layermap";
    char csv[1024], out[1024], cmd[4096], outb[65536];
    snprintf(csv, sizeof csv, "%s/m.csv", scratch_dir());
    snprintf(out, sizeof out, "%s/types.txt", scratch_dir());
    CHECK_OK(lm_matrix_write_csv(m, csv, &err), &err);
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s --bpw 9 -o %s", bin, csv, mp, out);
    int rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 0 && strstr(outb, "--tensor-type '^blk\\.4\\.ffn_gate\\.weight$=") && strstr(outb, "36 tensors") &&
              strstr(outb, "token_embd.weight: q8_0"),
          "recipe: rc %d %.2000s", rc, outb);
    FILE *f = fopen(out, "r");
    int lines = 0, c;
    while (f && (c = fgetc(f)) != EOF) lines += c == '\n';
    if (f) fclose(f);
    CHECK(lines == 36, "36 lines: %d", lines);
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s --bpw 2 -o %s/low.txt", bin, csv, mp, scratch_dir());
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "below the cheapest") && one_line(outb), "low budget: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "ls %s | grep -c low.txt", scratch_dir());
    test_sh(outb, sizeof outb, cmd);
    CHECK(atoi(outb) == 0, "low budget: no file left");
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s/nope.gguf --bpw 9 -o %s", bin, csv, scratch_dir(), out);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "nope.gguf") && one_line(outb), "unknown model: rc %d %s", rc, outb);
    lm_matrix *four = lm_matrix_new(4);
    snprintf(csv, sizeof csv, "%s/four.csv", scratch_dir());
    CHECK_OK(lm_matrix_write_csv(four, csv, &err), &err);
    lm_matrix_free(four);
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s --bpw 9 -o %s", bin, csv, mp, out);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "4 layers") && strstr(outb, "stories260K.gguf"), "layers: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s --bpw 9 -o /nonexistent-dir/t.txt", bin, csv, mp);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "/nonexistent-dir/t.txt"), "not writable: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s --bpw x -o %s", bin, csv, mp, out);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 2, "bad --bpw: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s --bpw 9 --output-type q3_k_m -o %s", bin, csv, mp, out);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 2 && strstr(outb, "q3_k_m"), "bad type: rc %d %s", rc, outb);
    CHECK_OK(lm_matrix_normalize(m, LM_NORM_LAYER, &err), &err);
    snprintf(csv, sizeof csv, "%s/norm.json", scratch_dir());
    CHECK_OK(lm_matrix_write_json(m, csv, &err), &err);
    snprintf(cmd, sizeof cmd, "%s recipe %s --model %s --bpw 9 -o %s", bin, csv, mp, out);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "normalised per layer"), "layer-normalised matrix: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s recipe --help", bin);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 0 && strstr(outb, "Greedy") && strstr(outb, "--tensor-type-file") && strstr(outb, "q8_0"), "--help");
    lm_matrix_free(m);
    lm_model_close(model);
}

int main(void) {
    test_types();
    test_hand();
    test_random();
    test_one_step();
    test_errors();
    test_file();
    test_model();
    return TEST_END();
}
