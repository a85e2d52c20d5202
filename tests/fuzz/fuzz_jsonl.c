/*
 * fuzz_jsonl.c -- a data file as `attribute --data` / `ppl` read it
 * (lm_dataset_load): plain text, JSONL {"text"} or JSONL {"prompt",
 * "completion"}, detected from the content. Loaded twice: with the SPM
 * tokenizer of stories260K-hf (seq_len 16, no token limit) and with the
 * byte-level BPE of tests/data/tok/tiny-llama3.json (seq_len 5, max 9 tokens).
 * Every sequence must hold ids inside the vocabulary and a mask that is 0 at
 * its last position. See fuzz.h.
 */
#include "fuzz.h"

static lm_tokenizer *spm, *bpe;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char p[4096];
    lm_err err;
    if (lm_tokenizer_open_json(&spm, fz_model(p, sizeof p, "stories260K-hf/tokenizer.json"), &err) ||
        lm_tokenizer_open_json(&bpe, fz_data(p, sizeof p, "tok/tiny-llama3.json"), &err))
        FZ_SETUP_FAIL("%s", err.msg);
    fz_dir();
    return fz_setup_error[0] ? -1 : 0;
}

static void load(const char *path, const lm_tokenizer *t, int seq_len, int64_t max_tokens) {
    lm_data_opts o = {.seq_len = seq_len, .max_tokens = max_tokens};
    lm_dataset *d = NULL;
    lm_err err = {0};
    int rc = lm_dataset_load(&d, path, t, &o, &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (d != NULL)) abort();
    if (!d) return;
    int64_t ntok = 0, ntgt = 0;
    for (int s = 0; s < d->n_seq; s++) {
        const lm_seq *q = &d->seqs[s];
        if (q->n < 2 || q->n > seq_len || q->mask[q->n - 1]) abort();
        for (int i = 0; i < q->n; i++) {
            if (q->tok[i] < 0 || q->tok[i] >= lm_tokenizer_vocab(t)) abort();
            ntgt += q->mask[i];
        }
        ntok += q->n;
    }
    if (ntok != d->n_tokens || ntgt != d->n_targets || (max_tokens && ntok > max_tokens)) abort();
    lm_dataset_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    char path[4096];
    fz_input(path, sizeof path, "data.jsonl", data, size);
    load(path, spm, 16, 0);
    load(path, bpe, 5, 9);
    return 0;
}
