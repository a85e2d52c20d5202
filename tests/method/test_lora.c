/*
 * test_lora.c -- LoRA placement: the greedy's choices worked by hand on a
 * crafted matrix (raw and per-parameter scores), the budget respected on
 * random matrices, options and errors, the PEFT JSON, the model's dims, fault
 * injection, and the `lora` command.
 */
#include "test.h"
#include "fault.h"

#include "base/base.h"

#include <sys/wait.h>

#define IDX(l, c) ((size_t)(l) * LM_N_MODULES + (c))

/* Read a whole file (static buffer). */
static const char *slurp(const char *p) {
    static char buf[1 << 16];
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* The crafted case: 2 layers, every module 8 x 8 (a rank step of 4 costs 64).
 * Raw scores q 8, k 4, v 2, o 1 in layer 0; up 3 in layer 1; NaN, negative
 * and zero elsewhere. Gains per parameter (x 64): step 0->4 = v, 4->8 =
 * 0.585 v, 8->16 = 0.737 v / 2 = 0.368 v. Budget 320:
 *   q 0->4 (8)  left 256;  q 4->8 (4.68) 192;  k 0->4 (4) 128;
 *   up1 0->4 (3 > q's 2.95) 64;  q 8->16 costs 128: closed;  k 4->8 (2.34) 0.
 * -> q 8, k 8, up1 4; 320 parameters. */
static void test_hand(void) {
    lm_matrix *m = lm_matrix_new(2);
    for (int c = 0; c < 7; c++) m->v[IDX(0, c)] = m->v[IDX(1, c)] = 0;
    m->v[IDX(0, LM_MOD_Q)] = 8;
    m->v[IDX(0, LM_MOD_K)] = 4;
    m->v[IDX(0, LM_MOD_V)] = 2;
    m->v[IDX(0, LM_MOD_O)] = 1;
    m->v[IDX(1, LM_MOD_UP)] = 3;
    m->v[IDX(1, LM_MOD_Q)] = NAN;
    m->v[IDX(1, LM_MOD_K)] = -5;
    int64_t in[14], out[14];
    for (int i = 0; i < 14; i++) in[i] = out[i] = 8;
    lm_lora_opts o;
    lm_lora_opts_default(&o);
    CHECK(o.rank == 8 && o.max_rank == 64 && o.per_param == 1 && o.alpha_ratio == 2, "defaults");
    o.budget_params = 320;
    o.rank = 4;
    o.max_rank = 16;
    o.per_param = 0;
    lm_lora_plan p;
    lm_err err = {0};
    CHECK_OK(lm_lora_select(m, in, out, &o, &p, &err), &err);
    int want[14] = {0};
    want[IDX(0, LM_MOD_Q)] = 8;
    want[IDX(0, LM_MOD_K)] = 8;
    want[IDX(1, LM_MOD_UP)] = 4;
    for (int i = 0; i < 14; i++) CHECK(p.rank[i] == want[i], "cell %d: rank %d want %d", i, p.rank[i], want[i]);
    CHECK(p.params == 320, "params %lld", (long long)p.params);
    double val = 8 * log2(3) + 4 * log2(3) + 3;
    CHECK_CLOSE(p.value, val, 1e-12, 1e-12, "value");

    /* the JSON, exactly */
    char path[1024];
    snprintf(path, sizeof path, "%s/lora.json", scratch_dir());
    CHECK_OK(lm_lora_write_json(&p, &o, path, &err), &err);
    const char *s = slurp(path);
    const char *want_json = "{\n"
                            "  \"task_type\": \"CAUSAL_LM\",\n"
                            "  \"r\": 4,\n"
                            "  \"lora_alpha\": 8,\n"
                            "  \"lora_dropout\": 0.0,\n"
                            "  \"bias\": \"none\",\n"
                            "  \"target_modules\": [\"q_proj\", \"k_proj\", \"up_proj\"],\n"
                            "  \"layers_to_transform\": [0, 1],\n"
                            "  \"layers_pattern\": \"layers\",\n"
                            "  \"exclude_modules\": [\n"
                            "    \"layers.0.mlp.up_proj\",\n"
                            "    \"layers.1.self_attn.q_proj\",\n"
                            "    \"layers.1.self_attn.k_proj\"\n"
                            "  ],\n"
                            "  \"rank_pattern\": {\n"
                            "    \"layers.0.self_attn.q_proj\": 8,\n"
                            "    \"layers.0.self_attn.k_proj\": 8\n"
                            "  },\n"
                            "  \"alpha_pattern\": {\n"
                            "    \"layers.0.self_attn.q_proj\": 16,\n"
                            "    \"layers.0.self_attn.k_proj\": 16\n"
                            "  }\n"
                            "}\n";
    CHECK(s && !strcmp(s, want_json), "json:\n%s", s ? s : "(none)");
    lm_lora_plan_free(&p);

    /* one parameter less: k 4->8 no longer fits; v 0->4 (2) does not either
     * (64 > 63): q 8, k 4, up1 4 */
    o.budget_params = 319;
    CHECK_OK(lm_lora_select(m, in, out, &o, &p, &err), &err);
    CHECK(p.rank[IDX(0, LM_MOD_Q)] == 8 && p.rank[IDX(0, LM_MOD_K)] == 4 && p.rank[IDX(1, LM_MOD_UP)] == 4 &&
              p.params == 256,
          "budget 319: q %d k %d up %d params %lld", p.rank[IDX(0, LM_MOD_Q)], p.rank[IDX(0, LM_MOD_K)],
          p.rank[IDX(1, LM_MOD_UP)], (long long)p.params);
    lm_lora_plan_free(&p);

    /* a budget below the cheapest adapter: nothing, and the JSON is refused */
    o.budget_params = 63;
    CHECK_OK(lm_lora_select(m, in, out, &o, &p, &err), &err);
    int any = 0;
    for (int i = 0; i < 14; i++) any |= p.rank[i];
    CHECK(!any && p.params == 0, "budget 63: nothing");
    CHECK(lm_lora_write_json(&p, &o, path, &err) == LM_EARG && strstr(err.msg, "63"), "empty plan: %s", err.msg);
    lm_lora_plan_free(&p);

    /* a huge budget: every positive cell at max rank capped by min(in, out) = 8, nothing else */
    o.budget_params = 1000000;
    CHECK_OK(lm_lora_select(m, in, out, &o, &p, &err), &err);
    for (int i = 0; i < 14; i++) {
        double v = m->v[i];
        int w = isfinite(v) && v > 0 ? 8 : 0;
        CHECK(p.rank[i] == w, "huge budget: cell %d rank %d want %d", i, p.rank[i], w);
    }
    CHECK(p.params == 5 * 8 * 16, "huge budget params %lld", (long long)p.params);
    lm_lora_plan_free(&p);

    /* options */
    o.budget_params = -1;
    CHECK(lm_lora_select(m, in, out, &o, &p, &err) == LM_EARG, "negative budget");
    o.budget_params = 100;
    o.rank = 0;
    CHECK(lm_lora_select(m, in, out, &o, &p, &err) == LM_EARG, "rank 0");
    o.rank = 32;
    CHECK(lm_lora_select(m, in, out, &o, &p, &err) == LM_EARG, "max rank below rank");
    o.rank = 4;
    in[3] = 0;
    CHECK(lm_lora_select(m, in, out, &o, &p, &err) == LM_EARG && strstr(err.msg, "attn.o"), "no shape: %s",
          err.msg);
    in[3] = 8;
    /* fault injection */
    o.budget_params = 320;
    for (long nth = 1;; nth++) {
        lm_fault_arm(nth);
        int rc = lm_lora_select(m, in, out, &o, &p, &err);
        if (!rc) rc = lm_lora_write_json(&p, &o, path, &err);
        long hits = lm_fault_hits();
        lm_fault_arm(0);
        lm_lora_plan_free(&p);
        if (!hits) {
            CHECK(rc == LM_OK, "no fault: %d", rc);
            break;
        }
        CHECK(rc == LM_ENOMEM || rc == LM_EIO, "fault %ld: rc %d", nth, rc);
    }
    lm_matrix_free(m);
}

/* Per-parameter scores change the choice. Cell A (layer 0 q): score 100,
 * 100 x 100 (v = 0.01 per weight; rank 4 costs 800); cell B (layer 0 k): score
 * 1, 16 x 16 (v = 1/256; rank 4 costs 128). Budget 800.
 *   per-param: B first (3.05e-5 > 1.25e-5 per LoRA parameter), then A no longer
 *   fits (800 > 672); B doubles to 8 and 16 (max): 128 + 128 + 256 = 512.
 *   raw: A (100/800) before B (1/128): A at 4, 800 parameters, then nothing. */
static void test_per_param(void) {
    lm_matrix *m = lm_matrix_new(1);
    for (int c = 0; c < 7; c++) m->v[c] = NAN;
    m->v[LM_MOD_Q] = 100;
    m->v[LM_MOD_K] = 1;
    int64_t in[7] = {100, 16, 1, 1, 1, 1, 1}, out[7] = {100, 16, 1, 1, 1, 1, 1};
    lm_lora_opts o;
    lm_lora_opts_default(&o);
    o.budget_params = 800;
    o.rank = 4;
    o.max_rank = 16;
    lm_lora_plan p;
    lm_err err = {0};
    CHECK_OK(lm_lora_select(m, in, out, &o, &p, &err), &err);
    CHECK(p.rank[LM_MOD_Q] == 0 && p.rank[LM_MOD_K] == 16 && p.params == 512, "per-param: q %d k %d params %lld",
          p.rank[LM_MOD_Q], p.rank[LM_MOD_K], (long long)p.params);
    lm_lora_plan_free(&p);
    o.per_param = 0;
    CHECK_OK(lm_lora_select(m, in, out, &o, &p, &err), &err);
    CHECK(p.rank[LM_MOD_Q] == 4 && p.rank[LM_MOD_K] == 0 && p.params == 800, "raw: q %d k %d params %lld",
          p.rank[LM_MOD_Q], p.rank[LM_MOD_K], (long long)p.params);
    lm_lora_plan_free(&p);
    lm_matrix_free(m);
}

/* Random matrices and dims: the budget always holds, ranks are on the ladder,
 * and no further step of any cell fits what is left (the greedy stops only
 * when nothing fits). */
static void test_random(void) {
    uint64_t x = 12345;
    for (int trial = 0; trial < 200; trial++) {
        int L = 1 + trial % 6;
        lm_matrix *m = lm_matrix_new(L);
        int64_t in[42], out[42];
        for (int i = 0; i < L * 7; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            m->v[i] = (double)(x >> 40) / (double)(1 << 24) - 0.2;
            in[i] = 16 + (int64_t)((x >> 20) % 200);
            out[i] = 16 + (int64_t)((x >> 8) % 200);
        }
        lm_lora_opts o;
        lm_lora_opts_default(&o);
        o.rank = 4 << (trial % 3);
        o.max_rank = o.rank * 8;
        o.per_param = trial % 2;
        o.budget_params = (int64_t)((x >> 16) % 60000);
        lm_lora_plan p;
        lm_err err = {0};
        CHECK_OK(lm_lora_select(m, in, out, &o, &p, &err), &err);
        int64_t sum = 0;
        int ok_ladder = 1, ok_stop = 1;
        for (int i = 0; i < L * 7; i++) {
            int r = p.rank[i];
            sum += (int64_t)r * (in[i] + out[i]);
            int on = r == 0;
            for (int q = o.rank; q <= o.max_rank; q *= 2) on |= r == q;
            ok_ladder &= on && (r == 0 || (isfinite(m->v[i]) && m->v[i] > 0));
        }
        CHECK(sum == p.params && sum <= o.budget_params, "trial %d: params %lld sum %lld budget %lld", trial,
              (long long)p.params, (long long)sum, (long long)o.budget_params);
        for (int i = 0; i < L * 7; i++) {
            int r = p.rank[i], next = r ? 2 * r : o.rank;
            if (m->v[i] > 0 && next <= o.max_rank && next <= in[i] && next <= out[i] &&
                (int64_t)(next - r) * (in[i] + out[i]) <= o.budget_params - sum)
                ok_stop = 0;
        }
        CHECK(ok_ladder, "trial %d: ranks on the ladder, only positive cells", trial);
        CHECK(ok_stop, "trial %d: a step still fits the remainder", trial);
        lm_lora_plan_free(&p);
        lm_matrix_free(m);
    }
}

/* The model's dims, the layer check, and the command. */
static void test_model_and_cli(void) {
    char mp[1024];
    model_path(mp, sizeof mp, "stories260K-hf");
    lm_model *model = NULL;
    lm_err err = {0};
    CHECK_OK(lm_model_open(&model, mp, &err), &err);
    if (!model) return;
    lm_matrix *m = lm_matrix_new(5), *bad = lm_matrix_new(4);
    for (int i = 0; i < 35; i++) m->v[i] = 1;
    lm_lora_opts o;
    lm_lora_opts_default(&o);
    o.budget_params = 1000000;
    o.max_rank = 8;
    lm_lora_plan p;
    CHECK_OK(lm_lora_select_model(m, model, &o, &p, &err), &err);
    /* stories260K: dim 64, kv 32, ffn 172 */
    CHECK(p.in[IDX(0, LM_MOD_Q)] == 64 && p.out[IDX(0, LM_MOD_Q)] == 64, "q dims");
    CHECK(p.in[IDX(2, LM_MOD_K)] == 64 && p.out[IDX(2, LM_MOD_K)] == 32, "k dims");
    CHECK(p.in[IDX(4, LM_MOD_DOWN)] == 172 && p.out[IDX(4, LM_MOD_DOWN)] == 64, "down dims");
    CHECK(p.params == 8 * 5 * (2 * 128 + 2 * 96 + 3 * 236), "all at 8: %lld", (long long)p.params);
    lm_lora_plan_free(&p);
    CHECK(lm_lora_select_model(bad, model, &o, &p, &err) == LM_ESHAPE && strstr(err.msg, "stories260K-hf") &&
              strstr(err.msg, "4 layers"),
          "layer mismatch: %s", err.msg);
    lm_matrix_free(bad);

    const char *bin = getenv("LM_BIN");
    if (!bin || !*bin) bin = "build/layermap";
    char csv[1024], js[1024], cmd[4096], outb[16384];
    snprintf(csv, sizeof csv, "%s/s.csv", scratch_dir());
    snprintf(js, sizeof js, "%s/s.json", scratch_dir());
    m->v[IDX(3, LM_MOD_DOWN)] = 50;
    CHECK_OK(lm_matrix_write_csv(m, csv, &err), &err);
    snprintf(cmd, sizeof cmd, "%s lora %s --model %s --budget-params 2k --rank 4 -o %s", bin, csv, mp, js);
    int rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 0 && strstr(outb, "layers.3.mlp.down_proj") && strstr(outb, "of 2000 LoRA parameters"),
          "lora: rc %d %s", rc, outb);
    const char *s = slurp(js);
    CHECK(s && strstr(s, "\"down_proj\"") && strstr(s, "\"r\": 4"), "lora json: %s", s ? s : "(none)");
    snprintf(cmd, sizeof cmd, "%s lora %s --model %s --budget-params 2.5 -o %s", bin, csv, mp, js);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 2 && strstr(outb, "--budget-params"), "bad budget: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s lora %s --model %s --budget-params 1000 -o %s/x.txt", bin, csv, mp, scratch_dir());
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 2 && strstr(outb, "x.txt"), "bad -o: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s lora %s --budget-params 1000 -o %s", bin, csv, js);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 2 && strstr(outb, "--model"), "no model: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s lora %s --model %s --budget-params 10 -o %s/none.json", bin, csv, mp,
             scratch_dir());
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "budget") && !strchr(strchr(outb, '\n') ? strchr(outb, '\n') + 1 : "", '\n'),
          "tiny budget: one line, exit 1: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "ls %s | grep -c none.json", scratch_dir());
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(atoi(outb) == 0, "tiny budget: no file left");
    snprintf(cmd, sizeof cmd, "%s lora %s/missing.csv --model %s --budget-params 1000 -o %s", bin, scratch_dir(), mp,
             js);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "missing.csv"), "missing matrix: rc %d %s", rc, outb);
    /* a 4-layer matrix for a 5-layer model: one line naming both */
    lm_matrix *four = lm_matrix_new(4);
    snprintf(csv, sizeof csv, "%s/four.csv", scratch_dir());
    CHECK_OK(lm_matrix_write_csv(four, csv, &err), &err);
    lm_matrix_free(four);
    snprintf(cmd, sizeof cmd, "%s lora %s --model %s --budget-params 1000 -o %s", bin, csv, mp, js);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 1 && strstr(outb, "four.csv") && strstr(outb, "stories260K-hf"), "layers: rc %d %s", rc, outb);
    snprintf(cmd, sizeof cmd, "%s lora --help", bin);
    rc = test_sh(outb, sizeof outb, cmd);
    CHECK(rc == 0 && strstr(outb, "Greedy") && strstr(outb, "ladder"), "--help");
    lm_matrix_free(m);
    lm_model_close(model);
}

int main(void) {
    test_hand();
    test_per_param();
    test_random();
    test_model_and_cli();
    return TEST_END();
}
