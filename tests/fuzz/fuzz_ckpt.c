/*
 * fuzz_ckpt.c -- the attribution checkpoint reader (src/method/attribute.c,
 * reached as `attribute --checkpoint FILE --resume` reaches it): the input is
 * the checkpoint file; lm_attribute resumes from it on tiny-llama-untied and
 * a fixed 3-sequence dataset. The method, batch and IG steps are taken from
 * the header when they are in range (so a well-formed header gets past the
 * first checks and the fuzzer works on the rest); a checkpoint that is
 * accepted runs the remaining sequences and saves a new one, as the CLI does.
 *
 * LM_FUZZ_CKPT_SEEDS=DIR makes the setup write seeds to DIR instead: for
 * every method, the checkpoint after one sequence and after all of them.
 * See fuzz.h.
 */
#include "fuzz.h"

#define N_SEQ 3
#define SEQ_N 5
static lm_model *model;
static lm_engine *engine;
static lm_dataset data;
static lm_seq seqs[N_SEQ];
static int32_t tok[N_SEQ][SEQ_N];
static uint8_t mask[N_SEQ][SEQ_N];

/* header fields (attribute.c's ckpt_head) read for the options */
#define OFF_METHOD 8
#define OFF_IG_STEPS 24
#define OFF_BATCH 32

static int32_t rd32(const uint8_t *data, size_t size, size_t off) {
    int32_t v = -1;
    if (off + 4 <= size) memcpy(&v, data + off, 4);
    return v;
}

static int run(lm_method method, int ig_steps, int batch, const char *ckpt, int resume, int max_seqs, lm_err *err) {
    lm_attr_opts o;
    lm_attr_opts_default(&o);
    o.ig_steps = ig_steps;
    o.batch = batch;
    o.checkpoint_path = ckpt;
    o.resume = resume;
    o.checkpoint_secs = 1e9; /* saved when it stops or finishes */
    o.max_seqs = max_seqs;
    lm_attr_result res;
    int rc = lm_attribute(engine, &data, method, &o, &res, err);
    if (rc == LM_OK) lm_attr_result_free(&res);
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
    for (int mth = 0; mth < LM_METHOD_COUNT; mth++) {
        lm_err err;
        for (int part = 0; part < 2; part++) {
            unlink(ck);
            if (run((lm_method)mth, 2, 1 + part, ck, 0, part ? 0 : 1, &err)) {
                FZ_SETUP_FAIL("seed %s: %s", lm_method_names[mth], err.msg);
                return;
            }
            snprintf(out, sizeof out, "%s/%s-%s", dir, lm_method_names[mth], part ? "done-b2" : "partial");
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
    fz_input(path, sizeof path, "in.ckpt", data_in, size);
    int32_t m = rd32(data_in, size, OFF_METHOD), ig = rd32(data_in, size, OFF_IG_STEPS),
            batch = rd32(data_in, size, OFF_BATCH);
    lm_method method = m >= 0 && m < LM_METHOD_COUNT ? (lm_method)m : LM_METHOD_GRAD_WEIGHT;
    lm_err err = {0};
    int rc = run(method, ig >= 1 && ig <= 4 ? ig : 2, batch >= 1 && batch <= 2 ? batch : 1, path, 1, 0, &err);
    fz_check_err(rc, &err);
    if (rc != LM_OK && rc != LM_ECORRUPT && rc != LM_EARG) {
        fprintf(stderr, "resume gave code %d: %s\n", rc, err.msg);
        abort();
    }
    return 0;
}
