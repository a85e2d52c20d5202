/*
 * tok_load.c -- building an lm_tokenizer from GGUF metadata (tokenizer.ggml.*,
 * as llama.cpp reads it) or from an HF tokenizer.json (+ tokenizer_config.json
 * beside it).
 *
 * Supported: GGUF tokenizer.ggml.model "llama" (SPM with scores) and "gpt2"
 * (byte-level BPE with a tokenizer.ggml.pre regex set); tokenizer.json with a
 * BPE model and the normalizers / pre-tokenizers listed in norm_from_json and
 * pre_from_json. Anything else is LM_EUNSUPPORTED with a message naming it.
 */
#include "model/model.h"
#include "text/tokenizer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_VOCAB (1 << 24)
#define SPACE_MARK "\xe2\x96\x81" /* U+2581, SentencePiece's space */

/* The GPT-2 pre-tokenizer regex (HF ByteLevel with use_regex). */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* llama.cpp's forms of the Llama 3 and Qwen2 regexes (case-insensitive
 * contractions spelled out). */
static const char RE_LLAMA3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ------------------------------------------------------------------------ */
/* Common construction                                                       */
/* ------------------------------------------------------------------------ */

/* PCRE2's allocator: lm_malloc, so that fault injection reaches it. */
static void *pcre_malloc(PCRE2_SIZE n, void *ctx) {
    (void)ctx;
    return lm_malloc(n);
}

/* PCRE2's deallocator. */
static void pcre_free(void *p, void *ctx) {
    (void)ctx;
    lm_free(p);
}

/* A new tokenizer with nothing loaded: ids unknown, byte tables filled. */
static lm_tokenizer *tok_new(const char *path) {
    lm_tokenizer *t = lm_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->path = lm_strdup(path);
    t->gctx = pcre2_general_context_create(pcre_malloc, pcre_free, NULL);
    if (!t->path || !t->gctx) {
        lm_tokenizer_free(t);
        return NULL;
    }
    t->bos = t->eos = t->unk_id = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    for (int i = 0; i < 512; i++) t->u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_cp(b); /* < 0x200: 1 or 2 bytes */
        char u[4];
        t->b2u_len[b] = (uint8_t)lm_utf8_encode(cp, u);
        memcpy(t->b2u[b], u, t->b2u_len[b]);
        t->u2b[cp] = (int16_t)b;
    }
    return t;
}

/* Compile pattern (literally when literal) for splitting; errors name what. */
static int tok_regex(lm_tokenizer *t, pcre2_code **out, const char *pattern, size_t len, int literal,
                     const char *what, lm_err *err) {
    *out = NULL;
    pcre2_compile_context *cc = pcre2_compile_context_create(t->gctx);
    if (!cc) return lm_nomem(err, 0, "regex");
    int ec;
    PCRE2_SIZE eo;
    uint32_t opt = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opt, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        if (ec == PCRE2_ERROR_HEAP_FAILED || ec == PCRE2_ERROR_NOMEMORY) return lm_nomem(err, len, "regex");
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return lm_fail(err, LM_EUNSUPPORTED, "%s: %s regex '%.*s': %s at offset %zu", t->path, what,
                       (int)(len > 200 ? 200 : len), pattern, (char *)msg, (size_t)eo);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreted when JIT is unavailable */
    *out = re;
    return LM_OK;
}

/* Room for one more pre-tokenizer step; returns it zeroed, NULL on OOM. */
static tok_pre *pre_new(lm_tokenizer *t) {
    tok_pre *p = lm_realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *p);
    if (!p) return NULL;
    t->pre = p;
    memset(&p[t->n_pre], 0, sizeof *p);
    return &p[t->n_pre++];
}

/* Room for one more normalizer step; returns it zeroed, NULL on OOM. */
static tok_norm *norm_new(lm_tokenizer *t) {
    tok_norm *p = lm_realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *p);
    if (!p) return NULL;
    t->norm = p;
    memset(&p[t->n_norm], 0, sizeof *p);
    return &p[t->n_norm++];
}

/* Append a regex split step. */
static int tok_add_split(lm_tokenizer *t, const char *pattern, int behavior, int invert, lm_err *err) {
    tok_pre *p = pre_new(t);
    if (!p) return lm_nomem(err, sizeof *p, "pre-tokenizer");
    p->kind = PRE_SPLIT;
    p->behavior = behavior;
    p->invert = invert;
    return tok_regex(t, &p->re, pattern, strlen(pattern), 0, "pre-tokenizer", err);
}

/* Add a split step on a literal string. */
static int add_split_literal(lm_tokenizer *t, const char *s, size_t n, int behavior, int invert, lm_err *err) {
    tok_pre *p = pre_new(t);
    if (!p) return lm_nomem(err, sizeof *p, "pre-tokenizer");
    p->kind = PRE_SPLIT;
    p->behavior = behavior;
    p->invert = invert;
    return tok_regex(t, &p->re, s, n, 1, "pre-tokenizer", err);
}

/* Add a Replace (literal) or Prepend normalizer step. */
static int add_norm_text(lm_tokenizer *t, int kind, const char *a, size_t alen, const char *b, size_t blen,
                         lm_err *err) {
    tok_norm *p = norm_new(t);
    if (!p) return lm_nomem(err, sizeof *p, "normalizer");
    p->kind = kind;
    p->a = lm_strndup(a, alen);
    p->alen = alen;
    if (b) {
        p->b = lm_strndup(b, blen);
        p->blen = blen;
    }
    if (!p->a || (b && !p->b)) return lm_nomem(err, alen + blen, "normalizer");
    return LM_OK;
}

/* Order for the special-token table: by first byte, longer first, then id. */
static int special_cmp(const void *x, const void *y) {
    const tok_special *a = x, *b = y;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Add id to the special tokens matched in raw text (once). */
static int add_special(lm_tokenizer *t, int32_t id, int lstrip, int rstrip, lm_err *err) {
    if (t->v.len[id] == 0) return LM_OK;
    for (int i = 0; i < t->n_special; i++)
        if (t->special[i].id == id) return LM_OK;
    tok_special *s = lm_realloc(t->special, (size_t)(t->n_special + 1) * sizeof *s);
    if (!s) return lm_nomem(err, sizeof *s, "special tokens");
    t->special = s;
    s[t->n_special++] = (tok_special){id, t->v.len[id], (uint8_t)t->v.arena[t->v.off[id]], (uint8_t)lstrip,
                                      (uint8_t)rstrip};
    return LM_OK;
}

/* Last steps shared by both sources: vocabulary hash, byte tokens, special
 * token buckets, the newline shortcut, and id checks. */
static int tok_finish(lm_tokenizer *t, lm_err *err) {
    if (tok_vocab_index(&t->v)) return lm_nomem(err, (size_t)t->v.n * 8, "vocabulary index");
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = tok_vocab_find(&t->v, name, 6);
    }
    /* the special table sorted by (first byte, length desc) with bucket starts */
    if (t->n_special > 1) qsort(t->special, (size_t)t->n_special, sizeof *t->special, special_cmp);
    int k = 0;
    for (int c = 0; c <= 256; c++) {
        while (k < t->n_special && t->special[k].first < c) k++;
        t->special_first[c] = k;
    }
    /* merges never cross '\n' when no multi-character piece contains one (and
     * '\n' never becomes an unknown token that could fuse with its neighbours) */
    t->newline_barrier = !t->fuse_unk || tok_vocab_find(&t->v, "\n", 1) >= 0 ||
                         (t->byte_fallback && t->byte_id['\n'] >= 0);
    for (int id = 0; id < t->v.n && t->newline_barrier; id++)
        if (t->v.len[id] > 1 && memchr(t->v.arena + t->v.off[id], '\n', t->v.len[id])) t->newline_barrier = 0;
    const int *ids[] = {&t->bos, &t->eos, &t->unk_id};
    const char *names[] = {"BOS", "EOS", "unknown"};
    for (int i = 0; i < 3; i++)
        if (*ids[i] >= t->v.n)
            return LM_CORRUPT(err, "%s: %s token id %d is outside the vocabulary (%d tokens)", t->path, names[i],
                              *ids[i], t->v.n);
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* GGUF                                                                      */
/* ------------------------------------------------------------------------ */

/* An optional token id key: default when absent. */
static int gguf_id(const lm_gguf *g, const char *key, int def, int *out, lm_err *err) {
    int64_t v;
    int rc = lm_gguf_get_int(g, key, &v, err);
    if (rc > 0) return rc;
    *out = rc == 0 ? (v >= 0 && v <= INT_MAX ? (int)v : -1) : def;
    return LM_OK;
}

/* Choose the regex steps for tokenizer.ggml.pre (llama.cpp's table). */
static int gguf_pre(lm_tokenizer *t, const char *pre, int *llama3, lm_err *err) {
    static const char *const gpt2[] = {"gpt-2", "gpt2", "phi-2", "olmo", "mpt", "jais", NULL};
    static const char *const smollm[] = {"smollm", "starcoder", "refact", "codeshell", "command-r",
                                         "exaone", "minerva-7b", NULL};
    static const char *const l3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", NULL};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", NULL};
    int rc;
    *llama3 = 0;
    if (!strcmp(pre, "default")) {
        if ((rc = tok_add_split(t, "[\\p{P}\\$\\+<=>\\^~\\|]+", SPLIT_ISOLATED, 0, err)) ||
            (rc = tok_add_split(t, RE_GPT2, SPLIT_ISOLATED, 0, err)) ||
            (rc = tok_add_split(t, "\\p{N}+", SPLIT_ISOLATED, 0, err)) ||
            (rc = tok_add_split(t, "[0-9][0-9][0-9]", SPLIT_ISOLATED, 0, err)))
            return rc;
        return LM_OK;
    }
    for (int i = 0; gpt2[i]; i++)
        if (!strcmp(pre, gpt2[i])) return tok_add_split(t, RE_GPT2, SPLIT_ISOLATED, 0, err);
    for (int i = 0; smollm[i]; i++)
        if (!strcmp(pre, smollm[i])) {
            if ((rc = tok_add_split(t, "\\p{N}", SPLIT_ISOLATED, 0, err))) return rc;
            return tok_add_split(t, RE_GPT2, SPLIT_ISOLATED, 0, err);
        }
    for (int i = 0; l3[i]; i++)
        if (!strcmp(pre, l3[i])) {
            *llama3 = 1;
            return tok_add_split(t, RE_LLAMA3, SPLIT_ISOLATED, 0, err);
        }
    for (int i = 0; qwen2[i]; i++)
        if (!strcmp(pre, qwen2[i])) return tok_add_split(t, RE_QWEN2, SPLIT_ISOLATED, 0, err);
    return lm_fail(err, LM_EUNSUPPORTED,
                   "%s: tokenizer.ggml.pre '%s' is not supported (supported: default, gpt-2, smollm, llama-bpe, "
                   "qwen2, deepseek-r1-qwen and their llama.cpp aliases)",
                   t->path, pre);
}

/* The array kv when it holds n elements of a numeric type, else an error. */
static int gguf_num_array(const lm_gguf *g, const char *key, uint64_t n, const lm_gguf_kv **out, lm_err *err) {
    const lm_gguf_kv *kv = lm_gguf_find(g, key);
    *out = NULL;
    if (!kv) return LM_OK;
    if (kv->type != LM_GGUF_ARRAY || kv->arr_type == LM_GGUF_STRING || kv->arr_type == LM_GGUF_ARRAY)
        return LM_CORRUPT(err, "%s: %s is not a numeric array", g->file.path, key);
    if (kv->n != n)
        return LM_CORRUPT(err, "%s: %s has %llu entries, tokenizer.ggml.tokens has %llu", g->file.path, key,
                          (unsigned long long)kv->n, (unsigned long long)n);
    *out = kv;
    return LM_OK;
}

/* Fill t from the GGUF tokenizer keys. */
static int gguf_build(lm_tokenizer *t, const lm_gguf *g, lm_err *err) {
    const char *path = g->file.path;
    lm_gguf_str s;
    char model[32] = "", pre[64] = "default";
    int rc = lm_gguf_get_str(g, "tokenizer.ggml.model", &s, err);
    if (rc > 0) return rc;
    if (rc < 0) return lm_fail(err, LM_EUNSUPPORTED, "%s: no tokenizer in the file (tokenizer.ggml.model missing)", path);
    lm_gguf_str_copy(s, model, sizeof model);
    if (!strcmp(model, "llama")) t->model = TOK_MODEL_SPM;
    else if (!strcmp(model, "gpt2")) t->model = TOK_MODEL_BPE;
    else
        return lm_fail(err, LM_EUNSUPPORTED, "%s: tokenizer.ggml.model '%s' is not supported (llama, gpt2)", path,
                       model);

    const lm_gguf_kv *tok = lm_gguf_find(g, "tokenizer.ggml.tokens"), *scores, *types;
    if (!tok || tok->type != LM_GGUF_ARRAY || tok->arr_type != LM_GGUF_STRING)
        return LM_CORRUPT(err, "%s: tokenizer.ggml.tokens is missing or not a string array", path);
    if (tok->n == 0 || tok->n > MAX_VOCAB)
        return LM_CORRUPT(err, "%s: tokenizer.ggml.tokens has %llu entries", path, (unsigned long long)tok->n);
    if ((rc = gguf_num_array(g, "tokenizer.ggml.scores", tok->n, &scores, err)) ||
        (rc = gguf_num_array(g, "tokenizer.ggml.token_type", tok->n, &types, err)))
        return rc;
    int n = (int)tok->n;
    if (tok_vocab_init(&t->v, n)) return lm_nomem(err, (size_t)n * 24, "vocabulary");
    for (int i = 0; i < n; i++) {
        lm_gguf_str p = lm_gguf_arr_str(tok, (uint64_t)i);
        int64_t ty = types ? lm_gguf_arr_int(types, (uint64_t)i) : TOK_NORMAL;
        if (ty < 0 || ty > TOK_BYTE) ty = TOK_UNDEFINED;
        if (tok_vocab_set(&t->v, i, p.ptr, (size_t)p.len, scores ? (float)lm_gguf_arr_float(scores, (uint64_t)i) : 0.0f,
                          (int)ty))
            return lm_nomem(err, (size_t)p.len, "vocabulary");
    }
    if (tok_vocab_index(&t->v)) return lm_nomem(err, (size_t)n * 8, "vocabulary index");

    int spm = t->model == TOK_MODEL_SPM;
    int add_prefix = spm, llama3 = 0;
    if ((rc = gguf_id(g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, &t->bos, err)) ||
        (rc = gguf_id(g, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, &t->eos, err)) ||
        (rc = gguf_id(g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, &t->unk_id, err)) ||
        (rc = gguf_id(g, "tokenizer.ggml.add_space_prefix", spm, &add_prefix, err)))
        return rc;
    if (spm) {
        t->byte_fallback = 1;
        t->dec_space_mark = 1;
        t->dec_strip_lead = add_prefix != 0;
        /* llama.cpp: ' ' prefixed, then spaces escaped to U+2581 */
        if ((rc = add_norm_text(t, NORM_REPLACE, " ", 1, SPACE_MARK, 3, err))) return rc;
        if (add_prefix && (rc = add_norm_text(t, NORM_PREPEND, SPACE_MARK, 3, NULL, 0, err))) return rc;
    } else {
        rc = lm_gguf_get_str(g, "tokenizer.ggml.pre", &s, err);
        if (rc > 0) return rc;
        if (rc == 0) lm_gguf_str_copy(s, pre, sizeof pre);
        if ((rc = gguf_pre(t, pre, &llama3, err))) return rc;
        t->byte_level = t->dec_byte_level = 1;
        t->ignore_merges = llama3;
        const lm_gguf_kv *mk = lm_gguf_find(g, "tokenizer.ggml.merges");
        if (!mk || mk->type != LM_GGUF_ARRAY || mk->arr_type != LM_GGUF_STRING)
            return LM_CORRUPT(err, "%s: tokenizer.ggml.merges is missing or not a string array", path);
        if (mk->n > (uint64_t)INT_MAX / 4) return LM_CORRUPT(err, "%s: too many merges", path);
        if (tok_merges_init(&t->m, (int)mk->n)) return lm_nomem(err, (size_t)mk->n * 16, "merges");
        char buf[512];
        for (uint64_t i = 0; i < mk->n; i++) {
            lm_gguf_str m = lm_gguf_arr_str(mk, i);
            const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', (size_t)m.len - 1) : NULL;
            if (!sp || m.len >= sizeof buf) {
                t->m.n++; /* keep the ranks of later merges */
                continue;
            }
            size_t la = (size_t)(sp - m.ptr), lb = (size_t)m.len - la - 1;
            int32_t a = tok_vocab_find(&t->v, m.ptr, la), b = tok_vocab_find(&t->v, sp + 1, lb);
            memcpy(buf, m.ptr, la);
            memcpy(buf + la, sp + 1, lb);
            int32_t ab = tok_vocab_find(&t->v, buf, la + lb);
            if (a < 0 || b < 0 || ab < 0) {
                t->m.n++;
                continue;
            }
            tok_merges_add(&t->m, a, b, ab);
        }
    }
    int add_bos = spm || llama3;
    if ((rc = gguf_id(g, "tokenizer.ggml.add_bos_token", add_bos, &add_bos, err))) return rc;
    t->add_bos = add_bos > 0;
    /* control, user-defined and unknown tokens are matched in the text (llama.cpp) */
    for (int i = 0; i < n; i++) {
        int ty = t->v.type[i];
        if ((ty == TOK_CONTROL || ty == TOK_USER || ty == TOK_UNKNOWN) && (rc = add_special(t, i, 0, 0, err)))
            return rc;
    }
    return tok_finish(t, err);
}

/* Tokenizer of an open GGUF file. */
int lm_tokenizer_from_gguf(lm_tokenizer **out, const lm_gguf *g, lm_err *err) {
    *out = NULL;
    lm_tokenizer *t = tok_new(g->file.path ? g->file.path : "(gguf)");
    if (!t) return lm_nomem(err, sizeof *t, "tokenizer");
    int rc = gguf_build(t, g, err);
    if (rc) {
        lm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* tokenizer.json                                                            */
/* ------------------------------------------------------------------------ */

/* Member of an object, NULL when absent or JSON null. */
static const cJSON *jget(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* String member or NULL. */
static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = jget(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Boolean member, def when absent. */
static int jbool(const cJSON *o, const char *key, int def) {
    const cJSON *v = jget(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* "pattern": {"String": s} or {"Regex": r}: *re = 1 for a regex. */
static const char *jpattern(const cJSON *o, int *re) {
    const cJSON *p = jget(o, "pattern");
    const char *s = jstr(p, "String");
    *re = 0;
    if (s) return s;
    *re = 1;
    return jstr(p, "Regex");
}

/* Add the normalizer steps of one JSON normalizer (recursing into Sequence). */
static int norm_from_json(lm_tokenizer *t, const cJSON *j, int depth, lm_err *err) {
    const char *type = jstr(j, "type");
    int rc;
    if (!type || depth > 8) return LM_CORRUPT(err, "%s: normalizer without a type", t->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *l = jget(j, "normalizers"), *c;
        cJSON_ArrayForEach(c, l) if ((rc = norm_from_json(t, c, depth + 1, err))) return rc;
        return LM_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(j, "prepend");
        if (!p) return LM_CORRUPT(err, "%s: Prepend normalizer without 'prepend'", t->path);
        return add_norm_text(t, NORM_PREPEND, p, strlen(p), NULL, 0, err);
    }
    if (!strcmp(type, "Replace")) {
        int isre;
        const char *p = jpattern(j, &isre), *c = jstr(j, "content");
        if (!p || !c) return LM_CORRUPT(err, "%s: Replace normalizer without pattern or content", t->path);
        if (!isre) return add_norm_text(t, NORM_REPLACE, p, strlen(p), c, strlen(c), err);
        if ((rc = add_norm_text(t, NORM_REPLACE_RE, p, strlen(p), c, strlen(c), err))) return rc;
        tok_norm *op = &t->norm[t->n_norm - 1];
        return tok_regex(t, &op->re, p, strlen(p), 0, "normalizer", err);
    }
    static const struct { const char *name; int kind; } simple[] = {
        {"NFC", NORM_NFC}, {"NFD", NORM_NFD}, {"NFKC", NORM_NFKC}, {"NFKD", NORM_NFKD}, {"Lowercase", NORM_LOWER}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (!strcmp(type, simple[i].name)) {
            tok_norm *op = norm_new(t);
            if (!op) return lm_nomem(err, sizeof *op, "normalizer");
            op->kind = simple[i].kind;
            return LM_OK;
        }
    if (!strcmp(type, "Strip")) {
        tok_norm *op = norm_new(t);
        if (!op) return lm_nomem(err, sizeof *op, "normalizer");
        op->kind = NORM_STRIP;
        op->left = jbool(j, "strip_left", 1);
        op->right = jbool(j, "strip_right", 1);
        return LM_OK;
    }
    return lm_fail(err, LM_EUNSUPPORTED, "%s: normalizer '%s' is not supported", t->path, type);
}

/* SplitDelimiterBehavior from its JSON name. */
static int behavior_from_json(const lm_tokenizer *t, const char *b, int *out, lm_err *err) {
    static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (b && !strcmp(b, names[i])) {
            *out = i;
            return LM_OK;
        }
    return lm_fail(err, LM_EUNSUPPORTED, "%s: split behavior '%s' is not supported", t->path, b ? b : "(none)");
}

/* Add the pre-tokenizer steps of one JSON pre-tokenizer (recursing into Sequence). */
static int pre_from_json(lm_tokenizer *t, const cJSON *j, int depth, lm_err *err) {
    const char *type = jstr(j, "type");
    int rc;
    if (!type || depth > 8) return LM_CORRUPT(err, "%s: pre_tokenizer without a type", t->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *l = jget(j, "pretokenizers"), *c;
        cJSON_ArrayForEach(c, l) if ((rc = pre_from_json(t, c, depth + 1, err))) return rc;
        return LM_OK;
    }
    if (!strcmp(type, "Split")) {
        int isre, beh;
        const char *p = jpattern(j, &isre);
        if (!p) return LM_CORRUPT(err, "%s: Split pre-tokenizer without a pattern", t->path);
        if ((rc = behavior_from_json(t, jstr(j, "behavior"), &beh, err))) return rc;
        if (isre) return tok_add_split(t, p, beh, jbool(j, "invert", 0), err);
        return add_split_literal(t, p, strlen(p), beh, jbool(j, "invert", 0), err);
    }
    if (!strcmp(type, "Digits"))
        return tok_add_split(t, "\\p{N}", jbool(j, "individual_digits", 0) ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, 0,
                             err);
    if (!strcmp(type, "ByteLevel")) {
        t->byte_level = 1;
        if (jbool(j, "add_prefix_space", 1)) {
            tok_pre *p = pre_new(t);
            if (!p) return lm_nomem(err, sizeof *p, "pre-tokenizer");
            p->kind = PRE_PREFIX_SPACE;
        }
        return jbool(j, "use_regex", 1) ? tok_add_split(t, RE_GPT2, SPLIT_ISOLATED, 0, err) : LM_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        const char *r = jstr(j, "replacement"), *scheme = jstr(j, "prepend_scheme");
        if (!r) r = SPACE_MARK;
        size_t rl = strlen(r);
        if (rl == 0 || rl > 4) return LM_CORRUPT(err, "%s: Metaspace replacement '%s' is not one character", t->path, r);
        tok_pre *p = pre_new(t);
        if (!p) return lm_nomem(err, sizeof *p, "pre-tokenizer");
        p->kind = PRE_METASPACE;
        memcpy(p->repl, r, rl);
        p->repl_len = (int)rl;
        p->prepend = scheme ? (!strcmp(scheme, "always") ? 2 : !strcmp(scheme, "first") ? 1 : 0)
                            : (jbool(j, "add_prefix_space", 1) ? 2 : 0);
        if (jbool(j, "split", 1)) return add_split_literal(t, r, rl, SPLIT_MERGED_NEXT, 0, err);
        return LM_OK;
    }
    if (!strcmp(type, "Whitespace")) /* \w+|[^\w\s]+ with Oniguruma's Unicode \w (letters, marks, numbers, Pc) */
        return tok_add_split(t, "[\\p{L}\\p{M}\\p{N}\\p{Pc}]+|[^\\p{L}\\p{M}\\p{N}\\p{Pc}\\s]+", SPLIT_REMOVED, 1,
                             err);
    if (!strcmp(type, "WhitespaceSplit")) return tok_add_split(t, "\\s+", SPLIT_REMOVED, 0, err);
    if (!strcmp(type, "Punctuation")) {
        int beh = SPLIT_ISOLATED;
        if (jstr(j, "behavior") && (rc = behavior_from_json(t, jstr(j, "behavior"), &beh, err))) return rc;
        return tok_add_split(t, "[\\p{P}!-/:-@\\[-`{-~]", beh, 0, err);
    }
    return lm_fail(err, LM_EUNSUPPORTED, "%s: pre_tokenizer '%s' is not supported", t->path, type);
}

/* Decoding flags from the JSON decoder (recursing into Sequence). */
static void dec_from_json(lm_tokenizer *t, const cJSON *j, int depth) {
    const char *type = jstr(j, "type");
    if (!type || depth > 8) return;
    if (!strcmp(type, "Sequence")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, jget(j, "decoders")) dec_from_json(t, c, depth + 1);
    } else if (!strcmp(type, "ByteLevel")) {
        t->dec_byte_level = 1;
    } else if (!strcmp(type, "Replace")) {
        int isre;
        const char *p = jpattern(j, &isre), *c = jstr(j, "content");
        if (p && c && !isre && !strcmp(p, SPACE_MARK) && !strcmp(c, " ")) t->dec_space_mark = 1;
    } else if (!strcmp(type, "Metaspace")) {
        const char *scheme = jstr(j, "prepend_scheme");
        t->dec_space_mark = 1;
        if (scheme ? strcmp(scheme, "never") != 0 : jbool(j, "add_prefix_space", 1)) t->dec_strip_lead = 1;
    } else if (!strcmp(type, "Strip")) {
        const cJSON *st = jget(j, "start");
        const char *c = jstr(j, "content");
        if (cJSON_IsNumber(st) && st->valuedouble >= 1 && c && !strcmp(c, " ")) t->dec_strip_lead = 1;
    }
}

/* Id of a token given by name in tokenizer_config.json / special_tokens:
 * a string or {"content": s}. -1 when unknown. */
static int token_by_name(const lm_tokenizer *t, const cJSON *v) {
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    return s ? tok_vocab_find(&t->v, s, strlen(s)) : -1;
}

/* BOS from the post-processor: a TemplateProcessing whose "single" template
 * starts with a special token (or Roberta/Bert with a cls). */
static void bos_from_post(lm_tokenizer *t, const cJSON *j, int depth) {
    const char *type = jstr(j, "type");
    if (!type || depth > 8) return;
    if (!strcmp(type, "Sequence")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, jget(j, "processors")) bos_from_post(t, c, depth + 1);
    } else if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = jget(j, "single");
        const cJSON *first = cJSON_IsArray(single) ? single->child : NULL;
        const cJSON *sp = jget(first, "SpecialToken");
        const char *name = jstr(sp, "id");
        if (!name) return;
        const cJSON *ids = jget(jget(jget(j, "special_tokens"), name), "ids");
        int id = cJSON_IsArray(ids) && cJSON_IsNumber(ids->child) ? ids->child->valueint
                                                                  : tok_vocab_find(&t->v, name, strlen(name));
        if (id >= 0 && id < t->v.n) {
            t->bos = id;
            t->add_bos = 1;
        }
    } else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = jget(j, "cls");
        if (cJSON_IsArray(cls) && cJSON_IsNumber(cJSON_GetArrayItem(cls, 1))) {
            t->bos = cJSON_GetArrayItem(cls, 1)->valueint;
            t->add_bos = 1;
        }
    }
}

/* tokenizer_config.json beside the tokenizer.json: add_bos_token, bos_token,
 * eos_token. Absent file: nothing to do. */
static int read_tokenizer_config(lm_tokenizer *t, lm_err *err) {
    const char *slash = strrchr(t->path, '/');
    size_t dl = slash ? (size_t)(slash - t->path) + 1 : 0;
    size_t n = dl + sizeof "tokenizer_config.json";
    char *p = lm_malloc(n);
    if (!p) return lm_nomem(err, n, "file name");
    memcpy(p, t->path, dl);
    memcpy(p + dl, "tokenizer_config.json", sizeof "tokenizer_config.json");
    struct stat st;
    int rc = LM_OK;
    if (stat(p, &st) == 0) {
        cJSON *j = NULL;
        rc = lm_json_read_file(&j, p, err);
        if (!rc) {
            int id;
            if (jget(j, "bos_token") && (id = token_by_name(t, jget(j, "bos_token"))) >= 0) t->bos = id;
            if (jget(j, "eos_token") && (id = token_by_name(t, jget(j, "eos_token"))) >= 0) t->eos = id;
            t->add_bos = jbool(j, "add_bos_token", t->add_bos);
            cJSON_Delete(j);
        }
    }
    lm_free(p);
    return rc;
}

/* True when s is a byte token "<0xXX>". */
static int is_byte_piece(const char *s) {
    return strlen(s) == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>';
}

/* Fill t from a parsed tokenizer.json. */
static int json_build(lm_tokenizer *t, const cJSON *root, lm_err *err) {
    const char *path = t->path;
    int rc;
    if (!cJSON_IsObject(root)) return LM_CORRUPT(err, "%s: not a JSON object", path);
    const cJSON *model = jget(root, "model");
    const char *mtype = jstr(model, "type");
    const cJSON *vocab = jget(model, "vocab"), *merges = jget(model, "merges");
    if (!model) return LM_CORRUPT(err, "%s: no \"model\" object", path);
    if (mtype ? strcmp(mtype, "BPE") != 0 : !merges)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: tokenizer model '%s' is not supported (only BPE)", path,
                       mtype ? mtype : "(untyped)");
    if (!cJSON_IsObject(vocab)) return LM_CORRUPT(err, "%s: model.vocab is not an object", path);
    const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow))
        return lm_fail(err, LM_EUNSUPPORTED, "%s: BPE with continuing_subword_prefix/end_of_word_suffix is not supported",
                       path);
    t->model = TOK_MODEL_BPE;
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);

    /* vocabulary size: the largest id of vocab and added_tokens, plus one */
    const cJSON *added = jget(root, "added_tokens"), *c;
    int n = 0;
    cJSON_ArrayForEach(c, vocab) {
        if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble >= MAX_VOCAB || c->valuedouble != c->valueint)
            return LM_CORRUPT(err, "%s: model.vocab['%s'] is not a token id", path, c->string);
        if (c->valueint + 1 > n) n = c->valueint + 1;
    }
    cJSON_ArrayForEach(c, added) {
        const cJSON *id = jget(c, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_VOCAB || !jstr(c, "content"))
            return LM_CORRUPT(err, "%s: added_tokens entry without a valid id and content", path);
        if (id->valueint + 1 > n) n = id->valueint + 1;
    }
    if (n == 0) return LM_CORRUPT(err, "%s: empty vocabulary", path);
    if (tok_vocab_init(&t->v, n)) return lm_nomem(err, (size_t)n * 24, "vocabulary");
    cJSON_ArrayForEach(c, vocab) {
        int id = c->valueint;
        if (t->v.len[id]) return LM_CORRUPT(err, "%s: token id %d appears twice in model.vocab", path, id);
        int ty = t->byte_fallback && is_byte_piece(c->string) ? TOK_BYTE : TOK_NORMAL;
        if (tok_vocab_set(&t->v, id, c->string, strlen(c->string), 0.0f, ty))
            return lm_nomem(err, strlen(c->string), "vocabulary");
    }
    const char *unk = jstr(model, "unk_token");
    cJSON_ArrayForEach(c, added) {
        int id = jget(c, "id")->valueint;
        const char *s = jstr(c, "content");
        int special = jbool(c, "special", 0);
        int ty = special ? TOK_CONTROL : TOK_USER;
        if (t->v.len[id] || t->v.off[id]) {
            if (strcmp(t->v.arena + t->v.off[id], s) != 0)
                return LM_CORRUPT(err, "%s: added token %d '%s' differs from the vocabulary's '%s'", path, id, s,
                                  t->v.arena + t->v.off[id]);
            t->v.type[id] = (uint8_t)ty;
        } else if (tok_vocab_set(&t->v, id, s, strlen(s), 0.0f, ty)) {
            return lm_nomem(err, strlen(s), "vocabulary");
        }
    }
    if (tok_vocab_index(&t->v)) return lm_nomem(err, (size_t)n * 8, "vocabulary index");
    cJSON_ArrayForEach(c, added) {
        if ((rc = add_special(t, jget(c, "id")->valueint, jbool(c, "lstrip", 0), jbool(c, "rstrip", 0), err)))
            return rc;
    }
    if (unk) t->unk_id = tok_vocab_find(&t->v, unk, strlen(unk));

    /* merges: "a b" strings (older files) or ["a", "b"] pairs */
    int nm = cJSON_GetArraySize(merges);
    if (tok_merges_init(&t->m, nm)) return lm_nomem(err, (size_t)nm * 16, "merges");
    size_t cap = 0;
    char *buf = NULL;
    int line = 0;
    cJSON_ArrayForEach(c, merges) {
        const char *a, *b;
        size_t la, lb;
        line++;
        if (cJSON_IsString(c)) {
            a = c->valuestring;
            const char *sp = *a ? strchr(a + 1, ' ') : NULL;
            if (!sp || strchr(sp + 1, ' ')) {
                lm_free(buf);
                return LM_CORRUPT(err, "%s: merge %d '%s' is not two tokens", path, line, a);
            }
            la = (size_t)(sp - a);
            b = sp + 1;
        } else if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == 2 && cJSON_IsString(c->child) &&
                   cJSON_IsString(c->child->next)) {
            a = c->child->valuestring;
            b = c->child->next->valuestring;
            la = strlen(a);
        } else {
            lm_free(buf);
            return LM_CORRUPT(err, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, line);
        }
        lb = strlen(b);
        if (la + lb > cap) {
            cap = (la + lb) * 2 + 64;
            char *nb = lm_realloc(buf, cap);
            if (!nb) {
                lm_free(buf);
                return lm_nomem(err, cap, "merges");
            }
            buf = nb;
        }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int32_t ia = tok_vocab_find(&t->v, a, la), ib = tok_vocab_find(&t->v, b, lb);
        int32_t iab = tok_vocab_find(&t->v, buf, la + lb);
        if (ia < 0 || ib < 0 || iab < 0) {
            lm_free(buf);
            return LM_CORRUPT(err, "%s: merge %d ('%.*s' + '%s') uses a token not in the vocabulary", path, line,
                              (int)la, a, b);
        }
        tok_merges_add(&t->m, ia, ib, iab);
    }
    lm_free(buf);

    const cJSON *norm = jget(root, "normalizer"), *pre = jget(root, "pre_tokenizer");
    if (norm && (rc = norm_from_json(t, norm, 0, err))) return rc;
    if (pre && (rc = pre_from_json(t, pre, 0, err))) return rc;
    if (jget(root, "decoder")) dec_from_json(t, jget(root, "decoder"), 0);
    else t->dec_join_space = 1; /* HF joins the tokens with spaces when there is no decoder */
    bos_from_post(t, jget(root, "post_processor"), 0);
    if ((rc = read_tokenizer_config(t, err))) return rc;
    return tok_finish(t, err);
}

/* Tokenizer from an HF tokenizer.json (and the tokenizer_config.json beside it). */
int lm_tokenizer_open_json(lm_tokenizer **out, const char *path, lm_err *err) {
    *out = NULL;
    lm_tokenizer *t = tok_new(path);
    if (!t) return lm_nomem(err, sizeof *t, "tokenizer");
    cJSON *root = NULL;
    int rc = lm_json_read_file(&root, path, err);
    if (!rc) rc = json_build(t, root, err);
    cJSON_Delete(root);
    if (rc) {
        lm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LM_OK;
}

/* Tokenizer of an open model: its GGUF metadata or its directory's tokenizer.json. */
int lm_tokenizer_open(lm_tokenizer **out, const lm_model *m, lm_err *err) {
    *out = NULL;
    if (!m) return lm_fail(err, LM_EARG, "lm_tokenizer_open: no model");
    const lm_gguf *g = lm_model_gguf(m);
    const char *dir = lm_model_dir(m);
    int rc;
    if (g) {
        rc = lm_tokenizer_from_gguf(out, g, err);
    } else if (dir) {
        size_t n = strlen(dir) + sizeof "/tokenizer.json";
        char *p = lm_malloc(n);
        if (!p) return lm_nomem(err, n, "file name");
        snprintf(p, n, "%s/tokenizer.json", dir);
        struct stat st;
        if (stat(p, &st) != 0)
            rc = lm_fail(err, LM_EUNSUPPORTED, "%s: no tokenizer.json (layermap reads HF tokenizer.json only)", dir);
        else
            rc = lm_tokenizer_open_json(out, p, err);
        lm_free(p);
    } else {
        return lm_fail(err, LM_EARG, "%s: the model has neither GGUF metadata nor a directory", m->path);
    }
    if (rc) return rc;
    /* ids the model's config knows and the tokenizer files did not say */
    lm_tokenizer *t = *out;
    if (t->bos < 0 && m->cfg.bos_id >= 0 && m->cfg.bos_id < t->v.n) t->bos = m->cfg.bos_id;
    if (t->eos < 0 && m->cfg.eos_id >= 0 && m->cfg.eos_id < t->v.n) t->eos = m->cfg.eos_id;
    return LM_OK;
}
