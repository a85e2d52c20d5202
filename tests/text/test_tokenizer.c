/*
 * test_tokenizer.c -- token-for-token equality with HF tokenizers (and
 * llama2.c's encoder) on the text set of tests/data/tok/ref.json, for
 * stories260K (tokenizer.json and GGUF), SmolLM2 (tokenizer.json and a GGUF
 * built here from it) and four tiny tokenizers covering other pipelines;
 * decode round trips; special tokens; BOS rules; invalid UTF-8; unsupported
 * and corrupt inputs; fault injection; throughput.
 *
 * The reference files come from tests/ref/gen_tok_ref.py (HF `tokenizers`).
 */
#include "test.h"
#include "fault.h"

#include "format/gguf.h"
#include "text/tokenizer.h"

#include <cJSON.h>
#include <stdint.h>
#include <sys/stat.h>

#define TOKDIR "tests/data/tok"

static cJSON *ref;

/* Read a whole file (test helper; exits on failure). */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) exit(2);
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

/* ids[] of a JSON array of numbers into a malloc'd int32 array. */
static int32_t *json_ids(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc(sizeof *v * (size_t)(*n + 1));
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, a) v[i++] = (int32_t)c->valueint;
    return v;
}

/* Printable form of text for failure messages (first 60 bytes). */
static const char *show(const char *s) {
    static char buf[256];
    size_t k = 0;
    for (size_t i = 0; s[i] && i < 60 && k + 5 < sizeof buf; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') k += (size_t)snprintf(buf + k, sizeof buf - k, "\\n");
        else if (c == '\t') k += (size_t)snprintf(buf + k, sizeof buf - k, "\\t");
        else if (c == '\r') k += (size_t)snprintf(buf + k, sizeof buf - k, "\\r");
        else buf[k++] = (char)c;
    }
    buf[k] = 0;
    return buf;
}

/* Encode text and compare with want[0..nw); returns 1 when equal. Prints the
 * first difference. */
static int same_ids(const lm_tokenizer *t, const char *name, const char *text, int add_bos, const int32_t *want,
                    int nw) {
    lm_err err = {0};
    int32_t *ids = NULL;
    int n = 0;
    int rc = lm_tokenize(t, text, strlen(text), add_bos, &ids, &n, &err);
    if (rc) {
        fprintf(stderr, "  %s: '%s': error %s\n", name, show(text), err.msg);
        return 0;
    }
    int ok = n == nw;
    for (int i = 0; ok && i < n; i++) ok = ids[i] == want[i];
    if (!ok) {
        fprintf(stderr, "  %s: '%s'\n    got  (%d):", name, show(text), n);
        for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n    want (%d):", nw);
        for (int i = 0; i < nw && i < 40; i++) fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

/* Every text of ref.json against the list key of tokenizer entry `name`. */
static void check_texts(const lm_tokenizer *t, const char *label, const cJSON *texts, const cJSON *idlists) {
    int i = 0, good = 0, total = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, texts) {
        const cJSON *w = cJSON_GetArrayItem(idlists, i++);
        if (!w || cJSON_IsNull(w)) continue;
        int nw;
        int32_t *want = json_ids(w, &nw);
        total++;
        good += same_ids(t, label, x->valuestring, 0, want, nw);
        free(want);
    }
    CHECK(good == total && total > 0, "%s: %d of %d texts encode as the reference", label, good, total);
    printf("%-36s %d/%d texts equal\n", label, good, total);
}

/* The random texts of ref.json ("fuzz_texts") against entry's "fuzz_ids". */
static void check_fuzz(const lm_tokenizer *t, const char *label, const cJSON *entry) {
    char l[96];
    snprintf(l, sizeof l, "%s (random)", label);
    check_texts(t, l, cJSON_GetObjectItem(ref, "fuzz_texts"), cJSON_GetObjectItem(entry, "fuzz_ids"));
}

/* decode(encode(x)) == x for every text (but text holding U+2581 itself when
 * the tokenizer uses it for spaces: that one cannot survive, in HF neither). */
static void check_roundtrip(const lm_tokenizer *t, const char *label, const cJSON *texts) {
    int good = 0, total = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, texts) {
        const char *s = x->valuestring;
        if (t->dec_space_mark && strstr(s, "\xe2\x96\x81")) continue;
        lm_err err = {0};
        int32_t *ids;
        int n;
        char *back = NULL;
        total++;
        if (lm_tokenize(t, s, strlen(s), -1, &ids, &n, &err) == LM_OK) {
            if (lm_detokenize(t, ids, n, &back, &err) == LM_OK && strcmp(back, s) == 0) good++;
            else fprintf(stderr, "  %s round trip: '%s' -> '%s'\n", label, show(s), back ? show(back) : err.msg);
            free(back);
            free(ids);
        }
    }
    CHECK(good == total, "%s: %d of %d texts survive decode(encode(x))", label, good, total);
}

/* Open a tokenizer.json or fail the test run. */
static lm_tokenizer *open_json(const char *path) {
    lm_tokenizer *t = NULL;
    lm_err err = {0};
    CHECK_OK(lm_tokenizer_open_json(&t, path, &err), &err);
    return t;
}

/* Open a GGUF file and build its tokenizer. */
static lm_tokenizer *open_gguf(const char *path, lm_err *err, int *rc_out) {
    lm_gguf *g = NULL;
    lm_tokenizer *t = NULL;
    int rc = lm_gguf_open(&g, path, err);
    if (!rc) rc = lm_tokenizer_from_gguf(&t, g, err);
    lm_gguf_close(g);
    if (rc_out) *rc_out = rc;
    return t;
}

/* ------------------------------------------------------------------------ */
/* A minimal GGUF writer (tokenizer metadata only, no tensors)               */
/* ------------------------------------------------------------------------ */

typedef struct gw {
    FILE *f;
    int n_kv;
} gw;

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s) {
    w_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}
static void kv_str(FILE *f, const char *k, const char *v) {
    w_str(f, k);
    w_u32(f, LM_GGUF_STRING);
    w_str(f, v);
}
static void kv_u32(FILE *f, const char *k, uint32_t v) {
    w_str(f, k);
    w_u32(f, LM_GGUF_UINT32);
    w_u32(f, v);
}
static void kv_bool(FILE *f, const char *k, int v) {
    w_str(f, k);
    w_u32(f, LM_GGUF_BOOL);
    uint8_t b = (uint8_t)v;
    fwrite(&b, 1, 1, f);
}

/* Write path as a GGUF holding the tokenizer of tokenizer.json `json` as a
 * llama.cpp conversion would (model gpt2, pre given). Returns 0 on success. */
static int gguf_from_bpe_json(const char *json, const char *path, const char *pre) {
    char *txt = slurp(json, NULL);
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    if (!root) return -1;
    const cJSON *model = cJSON_GetObjectItem(root, "model");
    const cJSON *vocab = cJSON_GetObjectItem(model, "vocab"), *merges = cJSON_GetObjectItem(model, "merges");
    const cJSON *added = cJSON_GetObjectItem(root, "added_tokens"), *c;
    int n = cJSON_GetArraySize(vocab);
    cJSON_ArrayForEach(c, added) {
        int id = cJSON_GetObjectItem(c, "id")->valueint;
        if (id >= n) n = id + 1;
    }
    const char **tok = calloc((size_t)n, sizeof *tok);
    int32_t *type = calloc((size_t)n, sizeof *type);
    cJSON_ArrayForEach(c, vocab) {
        tok[c->valueint] = c->string;
        type[c->valueint] = 1;
    }
    cJSON_ArrayForEach(c, added) {
        int id = cJSON_GetObjectItem(c, "id")->valueint;
        tok[id] = cJSON_GetObjectItem(c, "content")->valuestring;
        type[id] = cJSON_IsTrue(cJSON_GetObjectItem(c, "special")) ? 3 : 4;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, 0);
    w_u64(f, 7);
    kv_str(f, "general.architecture", "llama");
    kv_str(f, "tokenizer.ggml.model", "gpt2");
    kv_str(f, "tokenizer.ggml.pre", pre);
    w_str(f, "tokenizer.ggml.tokens");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_STRING);
    w_u64(f, (uint64_t)n);
    for (int i = 0; i < n; i++) w_str(f, tok[i] ? tok[i] : "");
    w_str(f, "tokenizer.ggml.token_type");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_INT32);
    w_u64(f, (uint64_t)n);
    fwrite(type, 4, (size_t)n, f);
    w_str(f, "tokenizer.ggml.merges");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_STRING);
    w_u64(f, (uint64_t)cJSON_GetArraySize(merges));
    cJSON_ArrayForEach(c, merges) {
        char buf[1024];
        if (cJSON_IsString(c)) snprintf(buf, sizeof buf, "%s", c->valuestring);
        else snprintf(buf, sizeof buf, "%s %s", c->child->valuestring, c->child->next->valuestring);
        w_str(f, buf);
    }
    kv_bool(f, "tokenizer.ggml.add_bos_token", 0);
    long pos = ftell(f);
    while (pos++ % 32) fputc(0, f);
    int bad = ferror(f);
    fclose(f);
    free(tok);
    free(type);
    cJSON_Delete(root);
    return bad ? -1 : 0;
}

/* A GGUF with a few tokens and the given model/pre, to test rejections. */
static void gguf_tiny(const char *path, const char *model, const char *pre) {
    FILE *f = fopen(path, "wb");
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, 0);
    w_u64(f, pre ? 5 : 4);
    kv_str(f, "tokenizer.ggml.model", model);
    if (pre) kv_str(f, "tokenizer.ggml.pre", pre);
    w_str(f, "tokenizer.ggml.tokens");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_STRING);
    w_u64(f, 3);
    w_str(f, "a");
    w_str(f, "b");
    w_str(f, "ab");
    w_str(f, "tokenizer.ggml.merges");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_STRING);
    w_u64(f, 1);
    w_str(f, "a b");
    kv_u32(f, "tokenizer.ggml.bos_token_id", 0);
    long pos = ftell(f);
    while (pos++ % 32) fputc(0, f);
    fclose(f);
}

/* Copy the SPM tokenizer of GGUF src into a new GGUF with the given
 * tokenizer.ggml.add_space_prefix (Gemma's false). Returns 0 on success. */
static int gguf_spm_variant(const char *src, const char *path, int add_space_prefix) {
    lm_gguf *g = NULL;
    lm_err err = {0};
    if (lm_gguf_open(&g, src, &err)) return -1;
    const lm_gguf_kv *tok = lm_gguf_find(g, "tokenizer.ggml.tokens"), *sc = lm_gguf_find(g, "tokenizer.ggml.scores"),
                     *ty = lm_gguf_find(g, "tokenizer.ggml.token_type");
    FILE *f = fopen(path, "wb");
    if (!tok || !sc || !ty || !f) return -1;
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, 0);
    w_u64(f, 7);
    kv_str(f, "tokenizer.ggml.model", "llama");
    w_str(f, "tokenizer.ggml.tokens");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_STRING);
    w_u64(f, tok->n);
    for (uint64_t i = 0; i < tok->n; i++) {
        lm_gguf_str x = lm_gguf_arr_str(tok, i);
        w_u64(f, x.len);
        fwrite(x.ptr, 1, (size_t)x.len, f);
    }
    w_str(f, "tokenizer.ggml.scores");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_FLOAT32);
    w_u64(f, sc->n);
    for (uint64_t i = 0; i < sc->n; i++) {
        float v = (float)lm_gguf_arr_float(sc, i);
        fwrite(&v, 4, 1, f);
    }
    w_str(f, "tokenizer.ggml.token_type");
    w_u32(f, LM_GGUF_ARRAY);
    w_u32(f, LM_GGUF_INT32);
    w_u64(f, ty->n);
    for (uint64_t i = 0; i < ty->n; i++) {
        int32_t v = (int32_t)lm_gguf_arr_int(ty, i);
        fwrite(&v, 4, 1, f);
    }
    kv_u32(f, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(f, "tokenizer.ggml.eos_token_id", 2);
    kv_bool(f, "tokenizer.ggml.add_space_prefix", add_space_prefix);
    long pos = ftell(f);
    while (pos++ % 32) fputc(0, f);
    fclose(f);
    lm_gguf_close(g);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

/* Specials of one tokenizer: HF ids of texts holding special tokens. */
static void check_specials(const lm_tokenizer *t, const char *label, const cJSON *entry) {
    check_texts(t, label, cJSON_GetObjectItem(entry, "special_texts"), cJSON_GetObjectItem(entry, "special_ids"));
}

/* stories260K: tokenizer.json and GGUF against HF and llama2.c. */
static void test_stories(void) {
    char p[1024];
    const cJSON *texts = cJSON_GetObjectItem(ref, "texts");
    const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "tokenizers"), "stories260K");
    lm_tokenizer *tj = open_json(model_path(p, sizeof p, "stories260K-hf/tokenizer.json"));
    lm_err err = {0};
    int rc;
    lm_tokenizer *tg = open_gguf(model_path(p, sizeof p, "stories260K.gguf"), &err, &rc);
    CHECK(rc == LM_OK, "stories260K.gguf tokenizer: %s", err.msg);
    if (!tj || !tg) return;
    const cJSON *ids = cJSON_GetObjectItem(e, "ids");
    const cJSON *l2c = cJSON_GetObjectItem(ref, "llama2c_stories260K");
    check_texts(tj, "stories260K json vs HF", texts, ids);
    check_texts(tg, "stories260K gguf vs HF", texts, ids);
    check_texts(tj, "stories260K json vs llama2.c", texts, l2c);
    check_texts(tg, "stories260K gguf vs llama2.c", texts, l2c);
    check_specials(tj, "stories260K json specials", e);
    check_specials(tg, "stories260K gguf specials", e);
    check_fuzz(tj, "stories260K json", e);
    check_fuzz(tg, "stories260K gguf", e);
    check_roundtrip(tj, "stories260K json", texts);
    check_roundtrip(tg, "stories260K gguf", texts);

    const lm_tokenizer *both[2] = {tj, tg};
    for (int k = 0; k < 2; k++) {
        const lm_tokenizer *t = both[k];
        CHECK(lm_tokenizer_vocab(t) == 512, "vocab %d", lm_tokenizer_vocab(t));
        CHECK(lm_tokenizer_bos(t) == 1 && lm_tokenizer_eos(t) == 2, "bos %d eos %d", lm_tokenizer_bos(t),
              lm_tokenizer_eos(t));
        CHECK(lm_tokenizer_add_bos(t) == 1, "stories adds BOS");
        CHECK(!strcmp(lm_token_piece(t, 1), "<s>") && !strcmp(lm_token_piece(t, 13), "<0x0A>"), "pieces");
        CHECK(lm_token_piece(t, 512) == NULL && lm_token_piece(t, -1) == NULL, "piece out of range is NULL");
        /* BOS rules: -1 as the model says (BOS), 0 never, 1 always; empty text */
        int32_t *v;
        int n;
        CHECK_OK(lm_tokenize(t, "Hi", 2, -1, &v, &n, &err), &err);
        CHECK(n >= 2 && v[0] == 1, "BOS first (n=%d)", n);
        free(v);
        CHECK_OK(lm_tokenize(t, "Hi", 2, 0, &v, &n, &err), &err);
        CHECK(n >= 1 && v[0] != 1, "no BOS with add_bos=0");
        free(v);
        CHECK_OK(lm_tokenize(t, "", 0, -1, &v, &n, &err), &err);
        CHECK(n == 1 && v[0] == 1, "empty text -> [BOS] (n=%d)", n);
        free(v);
        CHECK_OK(lm_tokenize(t, NULL, 0, 0, &v, &n, &err), &err);
        CHECK(n == 0 && v != NULL, "empty text without BOS -> no tokens, non-NULL array");
        free(v);
        /* decoding: BOS/EOS give nothing, byte tokens join into UTF-8, bad id is an error */
        int32_t seq[] = {1, 35, 100, 229, 153, 132, 2};
        char *s;
        CHECK_OK(lm_detokenize(t, seq, 7, &s, &err), &err);
        CHECK(s && !strcmp(s, "a\xe2\x96\x81"), "decode bytes: '%s'", s ? s : "");
        free(s);
        int32_t badid[] = {5, 9999};
        CHECK(lm_detokenize(t, badid, 2, &s, &err) == LM_EARG && strstr(err.msg, "9999"), "bad id: %s", err.msg);
        /* continuation: no space prefix */
        CHECK_OK(lm_tokenize_ex(t, "the", 3, 0, TOK_CONTINUE, &v, &n, &err), &err);
        CHECK(n >= 1 && strncmp(lm_token_piece(t, v[0]), "\xe2\x96\x81", 3) != 0, "continuation has no U+2581");
        free(v);
    }
    lm_tokenizer_free(tj);
    lm_tokenizer_free(tg);
}

/* SPM without the space prefix (Gemma: tokenizer.ggml.add_space_prefix =
 * false) against HF's stories260K tokenizer without its Prepend normalizer. */
static void test_noprefix(void) {
    char p[1024], gp[1024];
    snprintf(gp, sizeof gp, "%s/stories-noprefix.gguf", scratch_dir());
    CHECK(gguf_spm_variant(model_path(p, sizeof p, "stories260K.gguf"), gp, 0) == 0, "write %s", gp);
    lm_err err = {0};
    int rc;
    lm_tokenizer *t = open_gguf(gp, &err, &rc);
    CHECK(rc == LM_OK, "%s: %s", gp, err.msg);
    if (!t) return;
    const cJSON *texts = cJSON_GetObjectItem(ref, "texts");
    const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "tokenizers"), "stories260K_noprefix");
    check_texts(t, "stories gguf no space prefix", texts, cJSON_GetObjectItem(e, "ids"));
    check_fuzz(t, "stories gguf no prefix", e);
    check_roundtrip(t, "stories gguf no space prefix", texts);
    lm_tokenizer_free(t);
}

/* lm_tokenizer_open through the model layer gives the same tokenizer as the
 * files read directly; tokenizer_config.json's add_bos_token wins over the
 * post-processor template. */
static void test_from_model(void) {
    const char *models[] = {"stories260K.gguf", "stories260K-hf"};
    const cJSON *texts = cJSON_GetObjectItem(ref, "texts");
    const cJSON *ids = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "tokenizers"), "stories260K"), "ids");
    for (int k = 0; k < 2; k++) {
        char p[1024], label[64];
        lm_err err = {0};
        lm_model *m = NULL;
        lm_tokenizer *t = NULL;
        CHECK_OK(lm_model_open(&m, model_path(p, sizeof p, models[k]), &err), &err);
        if (m) CHECK_OK(lm_tokenizer_open(&t, m, &err), &err);
        if (t) {
            snprintf(label, sizeof label, "%s via lm_model", models[k]);
            check_texts(t, label, texts, ids);
            CHECK(lm_tokenizer_add_bos(t) == 1 && lm_tokenizer_bos(t) == 1 && lm_tokenizer_eos(t) == 2, "%s ids",
                  models[k]);
            CHECK(lm_tokenizer_vocab(t) == m->cfg.vocab, "vocab %d vs config %d", lm_tokenizer_vocab(t), m->cfg.vocab);
        }
        lm_tokenizer_free(t);
        lm_model_close(m);
    }
    /* a tokenizer_config.json with add_bos_token false beside the tokenizer.json */
    char src[1024], dir[1024], dst[1100];
    size_t len;
    char *txt = slurp(model_path(src, sizeof src, "stories260K-hf/tokenizer.json"), &len);
    snprintf(dir, sizeof dir, "%s/cfgdir", scratch_dir());
    mkdir(dir, 0755);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    FILE *f = fopen(dst, "wb");
    fwrite(txt, 1, len, f);
    fclose(f);
    free(txt);
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", dir);
    f = fopen(dst, "wb");
    fputs("{\"add_bos_token\": false, \"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\"}", f);
    fclose(f);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    lm_tokenizer *t = open_json(dst);
    if (t) {
        CHECK(lm_tokenizer_add_bos(t) == 0 && lm_tokenizer_bos(t) == 1 && lm_tokenizer_eos(t) == 2,
              "config add_bos_token false: add_bos %d bos %d eos %d", lm_tokenizer_add_bos(t), lm_tokenizer_bos(t),
              lm_tokenizer_eos(t));
        lm_tokenizer_free(t);
    }
}

/* SmolLM2: tokenizer.json and a GGUF (model gpt2, pre smollm) built from it. */
static void test_smollm2(void) {
    char p[1024], gp[1024];
    const cJSON *texts = cJSON_GetObjectItem(ref, "texts");
    const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "tokenizers"), "smollm2");
    model_path(p, sizeof p, "smollm2-135m-tokenizer/tokenizer.json");
    lm_tokenizer *tj = open_json(p);
    snprintf(gp, sizeof gp, "%s/smollm2-tok.gguf", scratch_dir());
    CHECK(gguf_from_bpe_json(p, gp, "smollm") == 0, "write %s", gp);
    lm_err err = {0};
    int rc;
    lm_tokenizer *tg = open_gguf(gp, &err, &rc);
    CHECK(rc == LM_OK, "smollm2 gguf tokenizer: %s", err.msg);
    if (!tj || !tg) return;
    check_texts(tj, "smollm2 json vs HF", texts, cJSON_GetObjectItem(e, "ids"));
    check_texts(tg, "smollm2 gguf(smollm) vs HF", texts, cJSON_GetObjectItem(e, "ids"));
    check_specials(tj, "smollm2 json specials", e);
    check_specials(tg, "smollm2 gguf specials", e);
    check_fuzz(tj, "smollm2 json", e);
    check_fuzz(tg, "smollm2 gguf", e);
    check_roundtrip(tj, "smollm2 json", texts);
    check_roundtrip(tg, "smollm2 gguf", texts);
    CHECK(lm_tokenizer_vocab(tj) == 49152, "vocab %d", lm_tokenizer_vocab(tj));
    CHECK(lm_tokenizer_add_bos(tj) == 0 && lm_tokenizer_add_bos(tg) == 0, "SmolLM2 adds no BOS");
    CHECK(!strcmp(lm_token_piece(tj, 1), "<|im_start|>"), "piece 1");
    /* digits split one by one: "12345" -> 5 tokens */
    int32_t *v;
    int n;
    CHECK_OK(lm_tokenize(tj, "12345", 5, 0, &v, &n, &err), &err);
    CHECK(n == 5, "individual digits: %d tokens", n);
    free(v);
    lm_tokenizer_free(tj);
    lm_tokenizer_free(tg);
}

/* The tiny trained tokenizers: other normalizers, pre-tokenizers, decoders. */
static void test_tiny(void) {
    const char *names[] = {"tiny-llama3", "tiny-qwen2", "tiny-metaspace", "tiny-whitespace", "tiny-splits"};
    const cJSON *texts = cJSON_GetObjectItem(ref, "texts");
    for (int k = 0; k < 5; k++) {
        char p[512], label[64];
        snprintf(p, sizeof p, TOKDIR "/%s.json", names[k]);
        lm_tokenizer *t = open_json(p);
        if (!t) continue;
        const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "tokenizers"), names[k]);
        snprintf(label, sizeof label, "%s vs HF", names[k]);
        check_texts(t, label, texts, cJSON_GetObjectItem(e, "ids"));
        check_fuzz(t, names[k], e);
        /* with BOS as the post-processor says */
        const cJSON *wb = cJSON_GetObjectItem(e, "ids_bos"), *w;
        int i = 0, good = 0;
        cJSON_ArrayForEach(w, wb) {
            int nw;
            int32_t *want = json_ids(w, &nw);
            good += same_ids(t, names[k], cJSON_GetArrayItem(texts, i++)->valuestring, -1, want, nw);
            free(want);
        }
        CHECK(good == i, "%s: add_bos=-1 like HF's encode(): %d of %d", names[k], good, i);
        /* decoding equals HF's decode() */
        const cJSON *dec = cJSON_GetObjectItem(e, "decoded"), *ids = cJSON_GetObjectItem(e, "ids");
        good = 0;
        for (i = 0; i < cJSON_GetArraySize(dec); i++) {
            int n;
            int32_t *v = json_ids(cJSON_GetArrayItem(ids, i), &n);
            char *s = NULL;
            lm_err err = {0};
            const char *want = cJSON_GetArrayItem(dec, i)->valuestring;
            if (lm_detokenize(t, v, n, &s, &err) == LM_OK && !strcmp(s, want)) good++;
            else fprintf(stderr, "  %s decode: got '%s' want '%s'\n", names[k], s ? show(s) : err.msg, want);
            free(s);
            free(v);
        }
        CHECK(good == i, "%s: %d of %d decodes equal HF", names[k], good, i);
        lm_tokenizer_free(t);
    }
}

/* GGUF (model gpt2) conversions of the tiny Llama 3 / Qwen2 style tokenizers:
 * tokenizer.ggml.pre llama-bpe / qwen2 must give HF's ids; the GPT-2 regex
 * must not (the pre key is honoured). */
static void test_gguf_pre(void) {
    const char *names[] = {"tiny-llama3", "tiny-qwen2"}, *pres[] = {"llama-bpe", "qwen2"};
    const cJSON *texts = cJSON_GetObjectItem(ref, "texts");
    for (int k = 0; k < 2; k++) {
        char p[512], gp[1024], label[64];
        snprintf(p, sizeof p, TOKDIR "/%s.json", names[k]);
        snprintf(gp, sizeof gp, "%s/%s.gguf", scratch_dir(), names[k]);
        const cJSON *ids = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "tokenizers"), names[k]), "ids");
        CHECK(gguf_from_bpe_json(p, gp, pres[k]) == 0, "write %s", gp);
        lm_err err = {0};
        int rc;
        lm_tokenizer *t = open_gguf(gp, &err, &rc);
        CHECK(rc == LM_OK, "%s: %s", gp, err.msg);
        if (!t) continue;
        snprintf(label, sizeof label, "%s gguf(%s) vs HF", names[k], pres[k]);
        check_texts(t, label, texts, ids);
        /* (GGUF has no lstrip/rstrip for added tokens: tiny-llama3's <|mask|>
         * swallows whitespace in HF only, and the random texts meet it) */
        snprintf(label, sizeof label, "%s gguf", names[k]);
        if (k == 1) check_fuzz(t, label, cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "tokenizers"), names[k]));
        lm_tokenizer_free(t);
        /* the same vocabulary with the GPT-2 regex differs somewhere */
        CHECK(gguf_from_bpe_json(p, gp, "gpt-2") == 0, "write %s", gp);
        t = open_gguf(gp, &err, &rc);
        if (!t) continue;
        int differ = 0, i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, texts) {
            int nw, n;
            int32_t *want = json_ids(cJSON_GetArrayItem(ids, i++), &nw), *v;
            if (lm_tokenize(t, x->valuestring, strlen(x->valuestring), 0, &v, &n, &err) == LM_OK) {
                differ += n != nw || memcmp(v, want, sizeof *v * (size_t)n) != 0;
                free(v);
            }
            free(want);
        }
        CHECK(differ > 0, "%s with pre gpt-2 differs from %s on %d texts", names[k], pres[k], differ);
        lm_tokenizer_free(t);
    }
}

/* Invalid UTF-8 is LM_EENCODING naming the byte offset. */
static void test_invalid_utf8(void) {
    char p[1024];
    lm_tokenizer *t = open_json(model_path(p, sizeof p, "stories260K-hf/tokenizer.json"));
    if (!t) return;
    struct { const char *s; size_t len, off; } bad[] = {
        {"ab\xff", 3, 2},               {"hello \xc0\x80", 8, 6},  /* overlong NUL */
        {"x\xed\xa0\x80y", 5, 1},       /* surrogate */
        {"\xe2\x82", 2, 0},             /* truncated */
        {"ok \xf4\x90\x80\x80", 7, 3},  /* above U+10FFFF */
        {"caf\xc3\xa9 \x80", 7, 6},     /* lone continuation after valid text */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lm_err err = {0};
        int32_t *v = (int32_t *)1;
        int n = -1;
        int rc = lm_tokenize(t, bad[i].s, bad[i].len, 0, &v, &n, &err);
        char want[64];
        snprintf(want, sizeof want, "offset %zu", bad[i].off);
        CHECK(rc == LM_EENCODING && strstr(err.msg, want) && v == NULL && n == 0, "bad UTF-8 %zu: rc %d '%s'", i, rc,
              err.msg);
        CHECK(lm_utf8_check(bad[i].s, bad[i].len) == bad[i].off, "lm_utf8_check %zu", i);
    }
    CHECK(lm_utf8_check("\xf0\x9f\x98\x80", 4) == 4, "4-byte emoji is valid");
    lm_tokenizer_free(t);
}

/* Files layermap must refuse with a clear code. */
static void test_rejections(void) {
    char p[1024];
    lm_err err = {0};
    lm_tokenizer *t = NULL;
    int rc;
    struct { const char *json; int code; const char *needle; } cases[] = {
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", LM_EUNSUPPORTED, "Unigram"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": "
         "\"BertPreTokenizer\"}}",
         LM_EUNSUPPORTED, "BertPreTokenizer"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": "
         "\"Precompiled\"}}",
         LM_EUNSUPPORTED, "Precompiled"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", LM_ECORRUPT,
         "merge 1"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}", LM_ECORRUPT, "vocab"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": "
         "\"Split\", \"pattern\": {\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}}",
         LM_EUNSUPPORTED, "regex"},
        {"{\"model\": ", LM_ECORRUPT, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(p, sizeof p, "%s/bad%zu.json", scratch_dir(), i);
        FILE *f = fopen(p, "w");
        fputs(cases[i].json, f);
        fclose(f);
        rc = lm_tokenizer_open_json(&t, p, &err);
        CHECK(rc == cases[i].code && t == NULL && strstr(err.msg, cases[i].needle) && strstr(err.msg, p),
              "case %zu: rc %d '%s'", i, rc, err.msg);
    }
    snprintf(p, sizeof p, "%s/missing.json", scratch_dir());
    CHECK(lm_tokenizer_open_json(&t, p, &err) == LM_EIO, "missing file: %s", err.msg);

    snprintf(p, sizeof p, "%s/pre-unknown.gguf", scratch_dir());
    gguf_tiny(p, "gpt2", "no-such-pre");
    t = open_gguf(p, &err, &rc);
    CHECK(rc == LM_EUNSUPPORTED && strstr(err.msg, "no-such-pre") && !t, "unknown pre: %d '%s'", rc, err.msg);
    snprintf(p, sizeof p, "%s/model-unknown.gguf", scratch_dir());
    gguf_tiny(p, "t5", NULL);
    t = open_gguf(p, &err, &rc);
    CHECK(rc == LM_EUNSUPPORTED && strstr(err.msg, "t5"), "unknown model: %d '%s'", rc, err.msg);
    /* a missing pre is llama.cpp's "default" */
    snprintf(p, sizeof p, "%s/pre-default.gguf", scratch_dir());
    gguf_tiny(p, "gpt2", NULL);
    t = open_gguf(p, &err, &rc);
    CHECK(rc == LM_OK, "default pre: %s", err.msg);
    if (t) {
        int32_t *v;
        int n;
        CHECK_OK(lm_tokenize(t, "ab", 2, 0, &v, &n, &err), &err);
        CHECK(n == 1 && v[0] == 2, "tiny gpt2 merge a+b -> 2 (n=%d)", n);
        free(v);
        CHECK(lm_tokenize(t, "ab", 2, 1, &v, &n, &err) == LM_OK && n == 2 && v[0] == 0, "explicit BOS id 0");
        free(v);
        lm_tokenizer_free(t);
    }
}

/* Open the tokenizer.json at ctx (fault-injection run). */
static int fault_open_json(void *ctx, lm_err *err, const char **why) {
    lm_tokenizer *t = NULL;
    int rc = lm_tokenizer_open_json(&t, ctx, err);
    if (rc != LM_OK && t) *why = "tokenizer not NULL after a failure";
    if (rc == LM_OK && !t) *why = "no tokenizer";
    lm_tokenizer_free(t);
    return rc;
}

/* The tokenizer of the open GGUF ctx (fault-injection run). */
static int fault_from_gguf(void *ctx, lm_err *err, const char **why) {
    lm_tokenizer *t = NULL;
    int rc = lm_tokenizer_from_gguf(&t, ctx, err);
    if (rc != LM_OK && t) *why = "tokenizer not NULL after a failure";
    lm_tokenizer_free(t);
    return rc;
}

/* Encode FAULT_TEXT with the tokenizer ctx and decode it back (fault-injection
 * run): without a fault the round trip gives FAULT_PLAIN. */
#define FAULT_TEXT "<|im_start|>user\nHello, wörld 12345!<|im_end|>  \n"
#define FAULT_PLAIN "user\nHello, wörld 12345!  \n" /* decoded: control tokens give nothing */
static int fault_encode_decode(void *ctx, lm_err *err, const char **why) {
    int32_t *v = NULL;
    int n = 0;
    char *s = NULL;
    int rc = lm_tokenize(ctx, FAULT_TEXT, strlen(FAULT_TEXT), -1, &v, &n, err);
    if (rc == LM_OK) rc = lm_detokenize(ctx, v, n, &s, err);
    if (rc == LM_OK && (!s || strcmp(s, FAULT_PLAIN))) *why = "round trip differs";
    free(v);
    free(s);
    return rc;
}

/* Every allocation of open/encode/decode may fail: ENOMEM, nothing leaked
 * (leaks show under make asan). */
static void test_faults(void) {
    char p[1024];
    const char *files[] = {"stories260K-hf/tokenizer.json", TOKDIR "/tiny-llama3.json", TOKDIR "/tiny-metaspace.json",
                           TOKDIR "/tiny-whitespace.json"};
    for (int k = 0; k < 4; k++) {
        if (k == 0) model_path(p, sizeof p, files[0]);
        else snprintf(p, sizeof p, "%s", files[k]);
        fault_sweep(lm_basename(p), fault_open_json, p, 200000);
    }
    /* from GGUF metadata: stories260K (SPM) and the SmolLM2 GGUF of test_smollm2 (BPE) */
    char gp[1024];
    snprintf(gp, sizeof gp, "%s/smollm2-tok.gguf", scratch_dir());
    const char *ggufs[] = {model_path(p, sizeof p, "stories260K.gguf"), gp};
    for (int k = 0; k < 2; k++) {
        lm_gguf *g = NULL;
        lm_err err = {0};
        CHECK_OK(lm_gguf_open(&g, ggufs[k], &err), &err);
        if (!g) continue;
        fault_sweep(lm_basename(ggufs[k]), fault_from_gguf, g, 100000);
        lm_gguf_close(g);
    }
    /* encode and decode */
    lm_tokenizer *t = open_json(model_path(p, sizeof p, "smollm2-135m-tokenizer/tokenizer.json"));
    if (!t) return;
    fault_sweep("encode/decode", fault_encode_decode, t, 1000000);
    lm_tokenizer_free(t);
}

/* Whitespace runs and long texts: regexes must not fail on them. */
static void test_long_inputs(void) {
    char p[1024];
    lm_tokenizer *t = open_json(model_path(p, sizeof p, "smollm2-135m-tokenizer/tokenizer.json"));
    if (!t) return;
    size_t n = 1 << 20;
    char *s = malloc(n + 1);
    memset(s, ' ', n);
    s[n - 1] = 'x';
    s[n] = 0;
    lm_err err = {0};
    int32_t *v;
    int nt;
    CHECK_OK(lm_tokenize(t, s, n, 0, &v, &nt, &err), &err);
    char *back = NULL;
    if (nt > 0) {
        CHECK_OK(lm_detokenize(t, v, nt, &back, &err), &err);
        CHECK(back && strlen(back) == n && !strcmp(back, s), "1 MiB of spaces round trips");
        free(back);
        free(v);
    }
    free(s);
    lm_tokenizer_free(t);
}

/* ~1 MB of generated text; prints MB/s for each tokenizer (not asserted). */
static void bench(void) {
    static const char *words[] = {"the", "little", "girl", "named", "Lily", "was", "happy", "to", "play", "in",
                                  "park", "with", "her", "friend", "Ben.", "They", "found", "a", "big", "red",
                                  "ball,", "and", "laughed!", "\"Look\"", "1234", "café", "2024", "sun", "tree", "dog"};
    size_t cap = 1 << 20, n = 0;
    char *text = malloc(cap + 64);
    uint64_t x = 12345;
    while (n < cap) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        const char *w = words[(x >> 33) % 30];
        size_t l = strlen(w);
        memcpy(text + n, w, l);
        n += l;
        text[n++] = ((x >> 20) % 13 == 0) ? '\n' : ' ';
    }
    char p[1024];
    const char *names[] = {"stories260K json", "stories260K gguf", "smollm2 json"};
    lm_tokenizer *ts[3] = {NULL, NULL, NULL};
    lm_err err = {0};
    ts[0] = open_json(model_path(p, sizeof p, "stories260K-hf/tokenizer.json"));
    ts[1] = open_gguf(model_path(p, sizeof p, "stories260K.gguf"), &err, NULL);
    ts[2] = open_json(model_path(p, sizeof p, "smollm2-135m-tokenizer/tokenizer.json"));
    for (int k = 0; k < 3; k++) {
        if (!ts[k]) continue;
        int32_t *v;
        int nt;
        double t0 = lm_now();
        int rc = lm_tokenize(ts[k], text, n, 0, &v, &nt, &err);
        double dt = lm_now() - t0;
        CHECK(rc == LM_OK, "bench encode: %s", err.msg);
        if (rc) continue;
        char *back = NULL;
        double t1 = lm_now();
        rc = lm_detokenize(ts[k], v, nt, &back, &err);
        double dt2 = lm_now() - t1;
        CHECK(rc == LM_OK && back && strlen(back) == n && !memcmp(back, text, n), "%s: 1 MB round trip", names[k]);
        printf("BENCH tokenize %-18s %.2f MB in %.3f s = %6.2f MB/s (%d tokens); detokenize %.1f MB/s\n", names[k],
               n / 1e6, dt, n / 1e6 / dt, nt, n / 1e6 / dt2);
        free(back);
        free(v);
        lm_tokenizer_free(ts[k]);
    }
    free(text);
}

int main(void) {
    size_t len;
    char *txt = slurp(TOKDIR "/ref.json", &len);
    ref = cJSON_ParseWithLength(txt, len);
    free(txt);
    CHECK(ref != NULL, "parse " TOKDIR "/ref.json");
    if (!ref) return TEST_END();
    test_stories();
    test_noprefix();
    test_from_model();
    test_smollm2();
    test_tiny();
    test_gguf_pre();
    test_invalid_utf8();
    test_rejections();
    test_faults();
    test_long_inputs();
    bench();
    cJSON_Delete(ref);
    return TEST_END();
}
