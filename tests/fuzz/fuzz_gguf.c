/*
 * fuzz_gguf.c -- the GGUF reader: header, key-values, tensor infos and data
 * bounds (lm_gguf_open, then every key through the typed getters and up to
 * 64 rows of every tensor through lm_tensor_read_rows), then the same file
 * as the CLI opens it (lm_model_open: config from the metadata, tensors
 * bound to the architecture). See fuzz.h.
 */
#include "fuzz.h"
#include "format/gguf.h"

/* Touch every key-value and read the start of every tensor: an overrun shows
 * under AddressSanitizer. */
static void read_everything(const lm_gguf *g) {
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const lm_gguf_kv *kv = &g->kv[i];
        for (uint64_t j = 0; j < kv->n && j < 4096; j++) {
            lm_gguf_str s = lm_gguf_arr_str(kv, j);
            for (uint64_t k = 0; k < s.len && k < 256; k++) sink += (uint8_t)s.ptr[k];
            sink += (uint64_t)lm_gguf_arr_int(kv, j);
            double d = lm_gguf_arr_float(kv, j);
            sink += d == d;
        }
        char key[256];
        lm_gguf_str_copy(kv->key, key, sizeof key);
        lm_err err;
        int64_t v;
        double d;
        lm_gguf_str s;
        fz_check_err(lm_gguf_get_int(g, key, &v, &err), &err);
        fz_check_err(lm_gguf_get_float(g, key, &d, &err), &err);
        fz_check_err(lm_gguf_get_str(g, key, &s, &err), &err);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const lm_tensor *t = &g->tensors[i];
        if (lm_gguf_find_tensor(g, t->name) != t) {
            fprintf(stderr, "tensor '%s' not found by its own name\n", t->name);
            abort();
        }
        int64_t rows = lm_tensor_rows(t), cols = lm_tensor_cols(t);
        if (rows <= 0 || cols <= 0 || cols > (1 << 20)) continue;
        int64_t nr = rows < 64 ? rows : 64;
        if (nr * cols > (1 << 22)) nr = (1 << 22) / cols;
        float *out = malloc((size_t)(nr * cols) * sizeof(float));
        if (!out) abort();
        lm_err err;
        int rc = lm_tensor_read_rows(t, rows - nr, nr, out, &err); /* the last rows: the end of the data */
        fz_check_err(rc, &err);
        if (rc != LM_OK && !(rc == LM_EUNSUPPORTED && t->dtype == LM_DT_COUNT)) {
            fprintf(stderr, "read '%s' of an open file failed: %d %s\n", t->name, rc, err.msg);
            abort();
        }
        free(out);
    }
    (void)sink;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_dir();
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    char path[4096];
    fz_input(path, sizeof path, "in.gguf", data, size);
    lm_gguf *g = NULL;
    lm_err err = {0};
    int rc = lm_gguf_open(&g, path, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (g != NULL)) abort();
    if (!g) return 0;
    read_everything(g);
    lm_gguf_close(g);
    lm_model *m = NULL;
    rc = lm_model_open(&m, path, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (m != NULL)) abort();
    lm_model_close(m);
    return 0;
}
