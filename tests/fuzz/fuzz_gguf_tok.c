/*
 * fuzz_gguf_tok.c -- tokenizer metadata of a GGUF file (tokenizer.ggml.model,
 * .pre, .tokens, .scores, .token_type, .merges, special ids, add_bos): the
 * input is a GGUF file, opened with lm_gguf_open and handed to
 * lm_tokenizer_from_gguf, the function lm_tokenizer_open calls for a GGUF
 * model (called directly so that the fuzzer need not also build a valid
 * model's tensors), then a fixed text is encoded and decoded. See fuzz.h.
 */
#include "fuzz.h"
#include "text/tokenizer.h"

static const char sample[] = "Hello world! The  quick\tbrown fox\n<s> 123 \xc3\xa9t\xc3\xa9 \xe2\x96\x81x\n\nend";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_dir();
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    char path[4096];
    fz_input(path, sizeof path, "tok.gguf", data, size);
    lm_gguf *g = NULL;
    lm_err err = {0};
    int rc = lm_gguf_open(&g, path, &err);
    fz_check_err(rc, &err);
    if (!g) return 0;
    lm_tokenizer *t = NULL;
    rc = lm_tokenizer_from_gguf(&t, g, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (t != NULL)) abort();
    if (t) {
        for (int k = 0; k < 2; k++) {
            int32_t *ids = NULL;
            int n = 0;
            rc = lm_tokenize_ex(t, sample, sizeof sample - 1, k ? 1 : -1, k ? TOK_CONTINUE : 0, &ids, &n, &err);
            fz_check_err(rc, &err);
            if (rc == LM_OK) {
                for (int i = 0; i < n; i++)
                    if (ids[i] < 0 || ids[i] >= lm_tokenizer_vocab(t)) abort();
                char *dec = NULL;
                rc = lm_detokenize(t, ids, n, &dec, &err);
                fz_check_err(rc, &err);
                free(dec);
            }
            free(ids);
        }
        lm_tokenizer_free(t);
    }
    lm_gguf_close(g);
    return 0;
}
