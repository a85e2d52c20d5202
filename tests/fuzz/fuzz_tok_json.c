/*
 * fuzz_tok_json.c -- loading a tokenizer.json (lm_tokenizer_open_json, as the
 * CLI does for a tokenizer.json or an HF model directory) and encoding with
 * the tokenizer it describes: the input is the JSON up to its first NUL byte;
 * the bytes after the NUL (or a fixed sample without one) are encoded with
 * and without BOS, as a start and as a continuation, then decoded. See fuzz.h.
 */
#include "fuzz.h"
#include "text/tokenizer.h"

static const char sample[] = "Hello world! The  quick\tbrown fox\n<s> 123 \xc3\xa9t\xc3\xa9 \xe2\x96\x81x <|mask|>";

/* Encode text every way the library does and decode the result. */
static void encode_all(const lm_tokenizer *t, const char *text, size_t len) {
    lm_err err;
    for (int k = 0; k < 3; k++) {
        int32_t *ids = NULL;
        int n = 0;
        int rc = lm_tokenize_ex(t, text, len, k == 0 ? -1 : k == 1 ? 1 : 0, k == 2 ? TOK_CONTINUE : 0, &ids, &n, &err);
        fz_check_err(rc, &err);
        if (rc == LM_OK) {
            int vocab = lm_tokenizer_vocab(t);
            for (int i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= vocab || !lm_token_piece(t, ids[i])) {
                    fprintf(stderr, "token %d of %d: id %d outside the vocabulary (%d)\n", i, n, ids[i], vocab);
                    abort();
                }
            char *dec = NULL;
            rc = lm_detokenize(t, ids, n, &dec, &err);
            fz_check_err(rc, &err);
            free(dec);
        }
        free(ids);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char p[4096];
    fz_subdir(p, sizeof p, "tj");
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    char path[4096];
    fz_input(path, sizeof path, "tj/tokenizer.json", data, jlen);
    lm_tokenizer *t = NULL;
    lm_err err = {0};
    int rc = lm_tokenizer_open_json(&t, path, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (t != NULL)) abort();
    if (!t) return 0;
    if (nul)
        encode_all(t, (const char *)nul + 1, size - jlen - 1);
    else
        encode_all(t, sample, sizeof sample - 1);
    lm_tokenizer_free(t);
    return 0;
}
