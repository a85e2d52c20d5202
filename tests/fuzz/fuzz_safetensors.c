/*
 * fuzz_safetensors.c -- one .safetensors file: the u64 header length, the
 * JSON header, dtypes, shapes, data offsets (lm_st_open, then up to 64 rows
 * of every tensor), then the file as the CLI opens it: lm_model_open on a
 * directory holding it as model.safetensors beside the config.json of a
 * micro llama (tests/fuzz/fixtures/micro-llama/: 1 layer, dim 8, vocab 16),
 * the tensors bound to that configuration. See fuzz.h.
 */
#include "fuzz.h"
#include "format/safetensors.h"

static char dir[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char cfg[4096];
    fz_subdir(dir, sizeof dir, "st");
    const char *root = getenv("LM_ROOT");
    snprintf(cfg, sizeof cfg, "%s/tests/fuzz/fixtures/micro-llama/config.json", root && *root ? root : ".");
    fz_link("st/config.json", cfg);
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    char path[4096];
    fz_input(path, sizeof path, "st/model.safetensors", data, size);
    lm_st_file *f = NULL;
    lm_err err = {0};
    int rc = lm_st_open(&f, path, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (f != NULL)) abort();
    if (!f) return 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const lm_tensor *t = &f->tensors[i];
        int64_t rows = lm_tensor_rows(t), cols = lm_tensor_cols(t);
        if (rows <= 0 || cols <= 0 || cols > (1 << 20)) continue;
        int64_t nr = rows < 64 ? rows : 64;
        if (nr * cols > (1 << 22)) nr = (1 << 22) / cols;
        float *out = malloc((size_t)(nr * cols) * sizeof(float));
        if (!out) abort();
        rc = lm_tensor_read_rows(t, rows - nr, nr, out, &err);
        fz_check_err(rc, &err);
        if (rc != LM_OK && !(rc == LM_EUNSUPPORTED && t->dtype == LM_DT_COUNT)) {
            fprintf(stderr, "read '%s' of an open file failed: %d %s\n", t->name, rc, err.msg);
            abort();
        }
        free(out);
    }
    lm_st_close(f);
    lm_model *m = NULL;
    rc = lm_model_open(&m, dir, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (m != NULL)) abort();
    lm_model_close(m);
    return 0;
}
