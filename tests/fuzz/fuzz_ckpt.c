/*
 * fuzz_ckpt.c -- the attribution checkpoint reader (src/method/checkpoint.c,
 * reached as a rerun of `attribute` reaches it): the input is the checkpoint
 * file; lm_attribute_many resumes from it on tiny-llama-untied and a fixed
 * 3-sequence dataset. The method set, batch and IG steps (the fingerprint)
 * are taken from the input when they are in range, and the input's last 64
 * bytes are replaced by the sha256 of the rest (when it is long enough to
 * hold a fingerprint), so that a mutated file gets past the checksum and
 * the fuzzer works on the parser behind it (the checksum itself is tested
 * in tests/cli/test_ckpt.sh); a checkpoint that is accepted runs the
 * remaining sequences and saves a new one, as the CLI does.
 *
 * LM_FUZZ_CKPT_SEEDS=DIR makes the setup write seeds to DIR instead: for
 * every method and for two sets of several methods (one pass; own-pass
 * methods after), the checkpoint after one sequence and after all of them.
 * See fuzz.h.
 */
#include "fuzz.h"

#include "base/sha256.h"

#define N_SEQ 3
#define SEQ_N 5
static lm_model *model;
static lm_engine *engine;
static lm_dataset data;
static lm_seq seqs[N_SEQ];
static int32_t tok[N_SEQ][SEQ_N];
static uint8_t mask[N_SEQ][SEQ_N];

/* Fields read for the options (checkpoint.h, format LMCKPT04): magic[8],
 * u64 size, then the fingerprint: model_sha256[64], i64 model_bytes,
 * model_name[256], data_sha256[64], i32 n_seq, i32 longest, i64 n_tokens,
 * i32 n_methods, i32 methods[LM_METHOD_COUNT], i32 batch, i32 ig_steps. */
#define OFF_FP 16
#define OFF_N_METHODS (OFF_FP + 64 + 8 + 256 + 64 + 4 + 4 + 8)
#define OFF_METHODS (OFF_N_METHODS + 4)
#define OFF_BATCH (OFF_METHODS + 4 * LM_METHOD_COUNT)
#define OFF_IG_STEPS (OFF_BATCH + 4)
#define FP_END (OFF_FP + 728)

static int32_t rd32(const uint8_t *data, size_t size, size_t off) {
    int32_t v = -1;
    if (off + 4 <= size) memcpy(&v, data + off, 4);
    return v;
}

static int run(const lm_method *methods, int n, int ig_steps, int batch, const char *ckpt, int resume, int max_seqs,
               lm_err *err) {
    lm_attr_opts o;
    lm_attr_opts_default(&o);
    o.ig_steps = ig_steps;
    o.batch = batch;
    o.checkpoint_path = ckpt;
    o.resume = resume;
    o.checkpoint_secs = 1e9; /* saved when it stops or finishes */
    o.max_seqs = max_seqs;
    lm_attr_result res[LM_METHOD_COUNT];
    int rc = lm_attribute_many(engine, &data, methods, n, &o, res, err);
    if (rc == LM_OK)
        for (int i = 0; i < n; i++) lm_attr_result_free(&res[i]);
    return rc;
}

/* Copy file from to to (seed writing). */
static void copy_file(const char *from, const char *to) {
    char *buf;
    size_t n;
    FILE *f = fopen(from, "rb");
    if (!f) abort();
    buf = malloc(1 << 20);
    n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    fz_write_file(to, buf, n);
    free(buf);
}

static void write_seeds(const char *dir) {
    char ck[4096], out[4096];
    fz_path(ck, sizeof ck, "seed.ckpt");
    /* every method alone, then a shared-pass set and a set with own-pass methods */
    static const lm_method sets[][4] = {
        {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER, LM_METHOD_GRAD_NORM, LM_METHOD_ACT_GRAD},
        {LM_METHOD_ACT_SQ, LM_METHOD_ABLATE, LM_METHOD_IG, LM_METHOD_FISHER},
    };
    for (int k = 0; k < LM_METHOD_COUNT + 2; k++) {
        lm_method one = (lm_method)k;
        const lm_method *ms = k < LM_METHOD_COUNT ? &one : sets[k - LM_METHOD_COUNT];
        int n = k < LM_METHOD_COUNT ? 1 : 4;
        lm_err err;
        for (int part = 0; part < 2; part++) {
            unlink(ck);
            if (run(ms, n, 2, 1 + part, ck, 0, part ? 0 : 1, &err)) {
                FZ_SETUP_FAIL("seed %s: %s", lm_method_names[ms[0]], err.msg);
                return;
            }
            if (n == 1)
                snprintf(out, sizeof out, "%s/%s-%s", dir, lm_method_names[ms[0]], part ? "done-b2" : "partial");
            else
                snprintf(out, sizeof out, "%s/set%d-%s", dir, k - LM_METHOD_COUNT, part ? "done-b2" : "partial");
            copy_file(ck, out);
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char p[4096];
    lm_err err;
    if (lm_model_open(&model, fz_data(p, sizeof p, "tiny-llama-untied"), &err)) {
        FZ_SETUP_FAIL("%s", err.msg);
        return 0;
    }
    lm_engine_opts eo = {.threads = 1, .max_seq = SEQ_N, .max_batch = 2, .act_cache_bytes = 1, .weight_cache_bytes = 1 << 20};
    if (lm_engine_new(&engine, model, &eo, &err)) {
        FZ_SETUP_FAIL("%s", err.msg);
        return 0;
    }
    for (int s = 0; s < N_SEQ; s++) {
        for (int i = 0; i < SEQ_N; i++) {
            tok[s][i] = (int32_t)((7 * s + 3 * i + 1) % model->cfg.vocab);
            mask[s][i] = i < SEQ_N - 1 && (s != 1 || i >= 2);
        }
        seqs[s] = (lm_seq){.tok = tok[s], .mask = mask[s], .n = SEQ_N};
        data.n_tokens += SEQ_N;
        for (int i = 0; i < SEQ_N; i++) data.n_targets += mask[s][i];
    }
    data.seqs = seqs;
    data.n_seq = N_SEQ;
    const char *seed_dir = getenv("LM_FUZZ_CKPT_SEEDS");
    if (seed_dir && *seed_dir) write_seeds(seed_dir);
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data_in, size_t size) {
    fz_require_setup();
    char path[4096];
    uint8_t *fixed = NULL;
    if (size >= FP_END + 64) { /* a checksum that matches: the parser behind it is what is fuzzed */
        fixed = malloc(size);
        if (!fixed) abort();
        memcpy(fixed, data_in, size);
        lm_sha256 h;
        char hex[65];
        lm_sha256_init(&h);
        lm_sha256_update(&h, fixed, size - 64);
        lm_sha256_hex(&h, hex);
        memcpy(fixed + size - 64, hex, 64);
        data_in = fixed;
    }
    fz_input(path, sizeof path, "in.ckpt", data_in, size);
    int32_t ig = rd32(data_in, size, OFF_IG_STEPS), batch = rd32(data_in, size, OFF_BATCH);
    /* the file's method set when it is a valid set of distinct methods, else grad-weight */
    lm_method methods[LM_METHOD_COUNT];
    int32_t nm = rd32(data_in, size, OFF_N_METHODS);
    int n = nm >= 1 && nm <= LM_METHOD_COUNT ? nm : 0;
    for (int i = 0; i < n; i++) {
        int32_t m = rd32(data_in, size, OFF_METHODS + 4 * (size_t)i);
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= (int32_t)methods[j] == m;
        if (m < 0 || m >= LM_METHOD_COUNT || dup) n = 0;
        else methods[i] = (lm_method)m;
    }
    if (n == 0) {
        methods[0] = LM_METHOD_GRAD_WEIGHT;
        n = 1;
    }
    lm_err err = {0};
    int rc = run(methods, n, ig >= 1 && ig <= 4 ? ig : 2, batch >= 1 && batch <= 2 ? batch : 1, path, 1, 0, &err);
    fz_check_err(rc, &err);
    if (rc != LM_OK && rc != LM_ECORRUPT && rc != LM_EARG && rc != LM_EUNSUPPORTED) {
        fprintf(stderr, "resume gave code %d: %s\n", rc, err.msg);
        abort();
    }
    free(fixed);
    return 0;
}
