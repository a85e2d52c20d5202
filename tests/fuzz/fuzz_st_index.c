/*
 * fuzz_st_index.c -- the sharded checkpoint index: the input is
 * model.safetensors.index.json in a directory that also holds the two shards
 * of a micro llama (tests/fuzz/fixtures/st_index/) and its config.json
 * (tests/fuzz/fixtures/micro-llama/).
 * Opened as the CLI opens a model directory (lm_model_open), after
 * lm_st_set_open on its own. See fuzz.h.
 */
#include "fuzz.h"
#include "format/safetensors.h"

static char dir[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *root = getenv("LM_ROOT");
    root = root && *root ? root : ".";
    char p[4096];
    fz_subdir(dir, sizeof dir, "idx");
    snprintf(p, sizeof p, "%s/tests/fuzz/fixtures/micro-llama/config.json", root);
    fz_link("idx/config.json", p);
    static const char *shards[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (int i = 0; i < 2; i++) {
        char rel[256];
        snprintf(p, sizeof p, "%s/tests/fuzz/fixtures/st_index/%s", root, shards[i]);
        snprintf(rel, sizeof rel, "idx/%s", shards[i]);
        fz_link(rel, p);
    }
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    char path[4096];
    fz_input(path, sizeof path, "idx/model.safetensors.index.json", data, size);
    lm_st_set *s = NULL;
    lm_err err = {0};
    int rc = lm_st_set_open(&s, dir, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (s != NULL)) abort();
    if (s) {
        for (int i = 0; i < s->n_tensors; i++)
            if (lm_st_set_find(s, s->tensors[i]->name) != s->tensors[i]) abort();
        lm_st_set_close(s);
    }
    lm_model *m = NULL;
    rc = lm_model_open(&m, dir, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (m != NULL)) abort();
    lm_model_close(m);
    return 0;
}
