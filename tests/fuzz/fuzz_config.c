/*
 * fuzz_config.c -- an HF config.json, for every architecture layermap
 * supports (llama, mistral, qwen2, qwen3, gemma3: one seed each, at least).
 * lm_config_from_hf reads it; when it is accepted, the directory of the tiny
 * model of that architecture (tests/data/tiny-*) gets it as its config.json
 * and is opened as the CLI opens a model (lm_model_open: the tensors bound to
 * the fuzzed configuration). See fuzz.h.
 */
#include "fuzz.h"
#include "model/model.h"

/* tiny model per architecture (mistral reuses the llama one) */
static const char *const tiny[] = {
    [LM_ARCH_LLAMA] = "tiny-llama-untied", [LM_ARCH_MISTRAL] = "tiny-llama-untied", [LM_ARCH_QWEN2] = "tiny-qwen2",
    [LM_ARCH_QWEN3] = "tiny-qwen3",        [LM_ARCH_GEMMA3] = "tiny-gemma3",
};
#define N_ARCH (int)(sizeof tiny / sizeof tiny[0])

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char p[4096], rel[256];
    fz_subdir(p, sizeof p, "cfg");
    for (int a = 0; a < N_ARCH; a++) {
        snprintf(rel, sizeof rel, "arch%d", a);
        fz_subdir(p, sizeof p, rel);
        snprintf(rel, sizeof rel, "arch%d/model.safetensors", a);
        char tgt[512];
        snprintf(tgt, sizeof tgt, "%s/model.safetensors", tiny[a]);
        fz_link(rel, fz_data(p, sizeof p, tgt));
    }
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    char path[4096], dir[4096];
    fz_input(path, sizeof path, "cfg/config.json", data, size);
    lm_config cfg;
    lm_err err = {0};
    int rc = lm_config_from_hf(&cfg, fz_path(dir, sizeof dir, "cfg"), &err);
    fz_check_err(rc, &err);
    if (rc) return 0;
    if ((int)cfg.arch < 0 || (int)cfg.arch >= N_ARCH) abort();
    char rel[256];
    snprintf(rel, sizeof rel, "arch%d/config.json", (int)cfg.arch);
    fz_input(path, sizeof path, rel, data, size);
    snprintf(rel, sizeof rel, "arch%d", (int)cfg.arch);
    lm_model *m = NULL;
    rc = lm_model_open(&m, fz_path(dir, sizeof dir, rel), &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (m != NULL)) abort();
    lm_model_close(m);
    return 0;
}
