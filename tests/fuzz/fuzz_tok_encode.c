/*
 * fuzz_tok_encode.c -- encoding arbitrary bytes with each kind of tokenizer
 * the library builds, loaded once as the CLI loads them:
 *   0  SPM BPE from an HF tokenizer.json   (stories260K-hf, byte fallback)
 *   1  byte-level BPE from a tokenizer.json (tests/data/tok/tiny-llama3.json)
 *   2  SPM from GGUF metadata               (stories260K.gguf, "llama" vocab)
 *   3  byte-level BPE, a real one           (smollm2-135m-tokenizer, 49k merges)
 * Input: byte 0 picks the tokenizer (low 2 bits) and the mode (bits 2-3: BOS
 * as the model says / always / never + continuation); the rest is the text.
 * Valid UTF-8 must encode to ids inside the vocabulary, and decoding them
 * must give text back; invalid UTF-8 must be LM_EENCODING. See fuzz.h.
 */
#include "fuzz.h"
#include "model/model.h"
#include "text/tokenizer.h"

static lm_tokenizer *toks[4];
static lm_model *gguf_model;

static void load(int i, const char *path, int is_model) {
    lm_err err;
    int rc;
    if (is_model) {
        rc = lm_model_open(&gguf_model, path, &err);
        if (!rc) rc = lm_tokenizer_open(&toks[i], gguf_model, &err);
    } else {
        rc = lm_tokenizer_open_json(&toks[i], path, &err);
    }
    if (rc) FZ_SETUP_FAIL("tokenizer %d: %s", i, err.msg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char p[4096];
    load(0, fz_model(p, sizeof p, "stories260K-hf/tokenizer.json"), 0);
    load(1, fz_data(p, sizeof p, "tok/tiny-llama3.json"), 0);
    load(2, fz_model(p, sizeof p, "stories260K.gguf"), 1);
    load(3, fz_model(p, sizeof p, "smollm2-135m-tokenizer/tokenizer.json"), 0);
    return fz_setup_error[0] ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    if (size < 1) return 0;
    const lm_tokenizer *t = toks[data[0] & 3];
    int mode = (data[0] >> 2) & 3;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids = NULL;
    int n = 0;
    lm_err err = {0};
    int rc = lm_tokenize_ex(t, text, len, mode == 0 ? -1 : mode == 1 ? 1 : 0, mode == 3 ? TOK_CONTINUE : 0, &ids, &n,
                            &err);
    fz_check_err(rc, &err);
    int valid = lm_utf8_check(text, len) == len;
    int no_bos = mode == 1 && lm_tokenizer_bos(t) < 0; /* BOS asked for, none to give: LM_EARG */
    if (no_bos ? rc != LM_EARG && rc != LM_EENCODING : valid ? rc != LM_OK : rc != LM_EENCODING) {
        fprintf(stderr, "tokenize of %s UTF-8 gave %d (%s)\n", valid ? "valid" : "invalid", rc, err.msg);
        abort();
    }
    if (rc == LM_OK) {
        int vocab = lm_tokenizer_vocab(t);
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vocab) {
                fprintf(stderr, "token %d: id %d outside the vocabulary (%d)\n", i, ids[i], vocab);
                abort();
            }
        char *dec = NULL;
        rc = lm_detokenize(t, ids, n, &dec, &err);
        fz_check_err(rc, &err);
        if (rc != LM_OK) {
            fprintf(stderr, "detokenize of what tokenize gave failed: %s\n", err.msg);
            abort();
        }
        free(dec);
    }
    free(ids);
    return 0;
}
