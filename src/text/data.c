/*
 * data.c -- datasets for attribution: a text or JSONL file tokenized into
 * sequences with loss masks.
 *
 * Formats, detected from the content (the first non-blank character is '{'
 * -> JSONL, anything else -> plain text):
 *   plain text   the whole file is tokenized once and cut into chunks of
 *                seq_len tokens; each chunk starts with BOS when the model adds
 *                one (BOS counts in seq_len); a last short chunk is kept when
 *                it has at least 2 tokens. Every next-token prediction counts.
 *                With llamacpp_chunks, cut as llama.cpp's llama-imatrix and
 *                llama-perplexity cut it: chunk i is tokens [i*seq_len,
 *                (i+1)*seq_len) of the tokenized text (BOS first when the model
 *                adds one), its first token replaced by BOS, and a final
 *                partial chunk (or one cut by max_tokens) dropped; one final
 *                newline of the text is left out, as llama.cpp's -f does.
 *   JSONL text   {"text": "..."} per line: one sequence each (BOS as the model
 *                says), truncated to seq_len.
 *   JSONL p/c    {"prompt": "...", "completion": "..."}: prompt tokens then
 *                completion tokens (the completion tokenized as a continuation:
 *                no SPM space prefix of its own); only predictions of completion
 *                tokens count (mask[i] = 1 iff tok[i+1] is a completion token).
 * Sequences without any counted prediction are left out. max_tokens stops
 * early (the last sequence is cut to fit). Errors name the file and, for
 * JSONL, the line; invalid UTF-8 names the byte offset.
 */
#include "model/model.h"
#include "base/sha256.h"
#include "text/tokenizer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Building the dataset                                                      */
/* ------------------------------------------------------------------------ */

typedef struct builder {
    lm_dataset *d;
    size_t cap;        /* room in d->seqs */
    int64_t budget;    /* max_tokens, 0 = no limit */
    const char *path;
    lm_err *err;
} builder;

/* True when the token budget is used up. */
static int full(const builder *b) { return b->budget > 0 && b->d->n_tokens >= b->budget; }

/* Append a sequence of n tokens: BOS (when bos >= 0) then tok[0..n - has_bos).
 * mask_from: mask[i] = 1 for mask_from <= i < n-1. Cut to the budget; left
 * out when no prediction counts. */
static int add_seq(builder *b, int32_t bos, const int32_t *tok, int n, int mask_from) {
    lm_dataset *d = b->d;
    if (b->budget > 0 && d->n_tokens + n > b->budget) n = (int)(b->budget - d->n_tokens);
    if (n < 2 || mask_from >= n - 1) return LM_OK;
    if ((size_t)d->n_seq == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        if (cap > INT_MAX) return lm_fail(b->err, LM_EARG, "%s: too many sequences", b->path);
        lm_seq *s = lm_realloc(d->seqs, cap * sizeof *s);
        if (!s) return lm_nomem(b->err, cap * sizeof *s, "sequences");
        d->seqs = s;
        b->cap = cap;
    }
    lm_seq *s = &d->seqs[d->n_seq];
    s->n = n;
    s->tok = lm_malloc((size_t)n * sizeof *s->tok);
    s->mask = lm_malloc((size_t)n);
    if (!s->tok || !s->mask) {
        lm_free(s->tok);
        lm_free(s->mask);
        return lm_nomem(b->err, (size_t)n * 5, "sequence");
    }
    int off = 0;
    if (bos >= 0) s->tok[off++] = bos;
    memcpy(s->tok + off, tok, (size_t)(n - off) * sizeof *tok);
    for (int i = 0; i < n; i++) s->mask[i] = i >= mask_from && i < n - 1;
    d->n_seq++;
    d->n_tokens += n;
    d->n_targets += n - 1 - (mask_from > 0 ? mask_from : 0);
    return LM_OK;
}

/* Prefix the tokenizer's message with the file (and line when > 0). */
static int text_fail(builder *b, int rc, int line) {
    char msg[sizeof b->err->msg];
    snprintf(msg, sizeof msg, "%s", b->err->msg);
    if (line > 0) return lm_fail(b->err, rc, "%s: line %d: %s", b->path, line, msg);
    return lm_fail(b->err, rc, "%s: %s", b->path, msg);
}

/* ------------------------------------------------------------------------ */
/* Plain text                                                                */
/* ------------------------------------------------------------------------ */

/* Tokenize the file (only a long enough prefix when there is a budget) and
 * cut it into chunks. */
static int load_text(builder *b, const lm_tokenizer *tok, const char *text, size_t len, int seq_len, int llamacpp) {
    int32_t bos = lm_tokenizer_add_bos(tok) ? lm_tokenizer_bos(tok) : -1;
    int body = seq_len - (bos >= 0);
    int32_t *ids = NULL;
    int n = 0, rc;
    if (llamacpp && len > 0 && text[len - 1] == '\n') len--; /* llama.cpp's -f drops one final newline */
    /* with a budget, tokenize a prefix cut at a line end, growing it until it
     * yields comfortably more tokens than needed (the tokens near the cut,
     * which could differ from the whole file's, are then never used) */
    size_t want = b->budget > 0 && (uint64_t)b->budget < (SIZE_MAX - 4096) / 16 ? (size_t)b->budget * 16 + 4096 : len;
    for (;;) {
        size_t cut = want < len ? want : len;
        if (cut < len) {
            const char *nl = memrchr(text + cut / 2, '\n', cut - cut / 2);
            if (nl) cut = (size_t)(nl - text) + 1;
            while (cut > 0 && ((uint8_t)text[cut] & 0xc0) == 0x80) cut--; /* a character boundary */
        }
        rc = lm_tokenize(tok, text, cut, 0, &ids, &n, b->err);
        if (rc) return text_fail(b, rc, 0);
        if (cut == len || (int64_t)n >= b->budget + 256) break;
        lm_free(ids);
        ids = NULL;
        want = want > SIZE_MAX / 4 ? len : want * 4;
    }
    rc = LM_OK;
    if (llamacpp) {
        /* t = [BOS] + ids (t = ids without BOS); chunk c = t[c*seq_len ..
         * (c+1)*seq_len) with t[c*seq_len] := BOS: BOS, then t[c*seq_len + 1 ..]
         * = ids[c*seq_len ..]; without BOS ids[c*seq_len ..] as they are */
        int has_bos = bos >= 0;
        int64_t total = (int64_t)n + has_bos, n_chunk = total / seq_len;
        if (b->budget > 0 && n_chunk > b->budget / seq_len) n_chunk = b->budget / seq_len;
        for (int64_t c = 0; c < n_chunk && !rc; c++) rc = add_seq(b, bos, ids + c * seq_len, seq_len, 0);
        lm_free(ids);
        if (!rc && n_chunk == 0)
            rc = lm_fail(b->err, LM_EARG, "%s: %lld tokens%s, less than one whole chunk of %d (a partial chunk is dropped)",
                         b->path, (long long)(b->budget > 0 && b->budget < total ? b->budget : total),
                         b->budget > 0 && b->budget < total ? " allowed by max_tokens" : "", seq_len);
        return rc;
    }
    for (int i = 0; i < n && !full(b) && !rc; i += body) {
        int take = n - i < body ? n - i : body;
        rc = add_seq(b, bos, ids + i, take + (bos >= 0), 0);
    }
    lm_free(ids);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* JSONL                                                                     */
/* ------------------------------------------------------------------------ */

/* String member of a JSON object, NULL when absent or not a string. */
static const char *jstring(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* One text -> one sequence (BOS as the model says), truncated to seq_len. */
static int text_record(builder *b, const lm_tokenizer *tok, const char *text, size_t len, int line, int seq_len) {
    int32_t *p = NULL;
    int np = 0, rc;
    if ((rc = lm_tokenize(tok, text, len, -1, &p, &np, b->err))) return text_fail(b, rc, line);
    rc = add_seq(b, -1, p, np > seq_len ? seq_len : np, 0);
    lm_free(p);
    return rc;
}

/* Prompt + completion -> one sequence whose loss counts on the completion only. */
static int pair_record(builder *b, const lm_tokenizer *tok, const char *prompt, size_t plen, const char *completion,
                       size_t clen, int line, int seq_len) {
    int32_t *p = NULL, *c = NULL;
    int np = 0, nc = 0, rc;
    if ((rc = lm_tokenize(tok, prompt, plen, -1, &p, &np, b->err))) return text_fail(b, rc, line);
    rc = lm_tokenize_ex(tok, completion, clen, 0, TOK_CONTINUE, &c, &nc, b->err);
    if (rc) {
        lm_free(p);
        return text_fail(b, rc, line);
    }
    int n = np + nc > seq_len ? seq_len : np + nc;
    int32_t *all = lm_malloc(((size_t)np + (size_t)nc + 1) * sizeof *all);
    if (!all) {
        rc = lm_nomem(b->err, ((size_t)np + (size_t)nc) * 4, "sequence");
    } else {
        memcpy(all, p, (size_t)np * sizeof *p);
        memcpy(all + np, c, (size_t)nc * sizeof *c);
        /* position i counts when tok[i+1] is a completion token: i >= np-1 */
        rc = add_seq(b, -1, all, n, np > 0 ? np - 1 : 0);
        lm_free(all);
    }
    lm_free(p);
    lm_free(c);
    return rc;
}

/* One JSONL record (already parsed) -> one sequence. */
static int jsonl_record(builder *b, const lm_tokenizer *tok, const cJSON *j, int line, int seq_len) {
    const char *prompt = jstring(j, "prompt"), *completion = jstring(j, "completion");
    const char *text = jstring(j, "text");
    if (prompt && completion)
        return pair_record(b, tok, prompt, strlen(prompt), completion, strlen(completion), line, seq_len);
    if (!text)
        return LM_CORRUPT(b->err, "%s: line %d: expected a string \"text\", or strings \"prompt\" and \"completion\"",
                          b->path, line);
    return text_record(b, tok, text, strlen(text), line, seq_len);
}

/* Every non-blank line is one JSON object. */
static int load_jsonl(builder *b, const lm_tokenizer *tok, const char *data, size_t len, size_t base, int seq_len) {
    size_t pos = 0;
    int line = 0;
    while (pos < len && !full(b)) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        line++;
        size_t a = pos, e = end;
        while (a < e && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r')) a++;
        while (e > a && (data[e - 1] == ' ' || data[e - 1] == '\t' || data[e - 1] == '\r')) e--;
        pos = end + 1;
        if (a == e) continue;
        cJSON *j = NULL;
        int rc = lm_json_parse(&j, data + a, e - a, base + a, b->path, b->err);
        if (rc == LM_ECORRUPT) {
            /* "<path>: invalid JSON at byte N ..." -> with the line */
            char msg[sizeof b->err->msg];
            size_t pl = strlen(b->path);
            const char *m = b->err->msg;
            if (!strncmp(m, b->path, pl) && !strncmp(m + pl, ": ", 2)) m += pl + 2;
            snprintf(msg, sizeof msg, "%s", m);
            return LM_CORRUPT(b->err, "%s: line %d: %s (the file starts with '{', so it is read as JSONL)", b->path,
                              line, msg);
        }
        if (rc) return rc;
        if (!cJSON_IsObject(j)) rc = LM_CORRUPT(b->err, "%s: line %d: not a JSON object", b->path, line);
        else rc = jsonl_record(b, tok, j, line, seq_len);
        cJSON_Delete(j);
        if (rc) return rc;
    }
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* API                                                                       */
/* ------------------------------------------------------------------------ */

/* Load a text or JSONL file as tokenized sequences (see the top of this file). */
int lm_dataset_load(lm_dataset **out, const char *path, const lm_tokenizer *tok, const lm_data_opts *o,
                    lm_err *err) {
    *out = NULL;
    if (!path || !tok || !o) return lm_fail(err, LM_EARG, "lm_dataset_load: missing argument");
    if (o->seq_len < 2) return lm_fail(err, LM_EARG, "%s: seq_len %d is too short (at least 2)", path, o->seq_len);
    if (o->max_tokens < 0) return lm_fail(err, LM_EARG, "%s: max_tokens %lld is negative", path, (long long)o->max_tokens);
    lm_file f;
    int rc = lm_file_map(&f, path, err);
    if (rc) return rc;
    const char *data = (const char *)f.data;
    size_t len = f.size, base = 0;
    builder b = {NULL, 0, o->max_tokens, path, err};
    if (len >= 3 && !memcmp(data, "\xef\xbb\xbf", 3)) base = 3; /* a UTF-8 byte order mark */
    size_t bad = len ? lm_utf8_check(data, len) : 0;
    if (bad < len) {
        int line = 1;
        for (size_t i = 0; i < bad; i++) line += data[i] == '\n';
        rc = lm_fail(err, LM_EENCODING, "%s: invalid UTF-8 at byte offset %zu (line %d, byte 0x%02x)", path, bad, line,
                     (uint8_t)data[bad]);
        goto done;
    }
    size_t first = base;
    while (first < len && (data[first] == ' ' || data[first] == '\t' || data[first] == '\r' || data[first] == '\n'))
        first++;
    if (first == len) {
        rc = lm_fail(err, LM_EARG, "%s: no text (the file is %s)", path, len ? "blank" : "empty");
        goto done;
    }
    b.d = lm_calloc(1, sizeof *b.d);
    if (!b.d) {
        rc = lm_nomem(err, sizeof *b.d, "dataset");
        goto done;
    }
    if (data[first] == '{' && o->llamacpp_chunks)
        rc = lm_fail(err, LM_EARG, "%s: JSONL data, but llama.cpp's chunks (llamacpp_chunks) cut plain text only", path);
    else if (data[first] == '{') rc = load_jsonl(&b, tok, data + base, len - base, base, o->seq_len);
    else rc = load_text(&b, tok, data + base, len - base, o->seq_len, o->llamacpp_chunks);
    if (!rc && b.d->n_seq == 0)
        rc = lm_fail(err, LM_EARG, "%s: no sequence with a prediction to score (every text gives fewer than 2 tokens%s)",
                     path, data[first] == '{' ? " or an empty completion" : "");
done:
    lm_file_unmap(&f);
    if (rc) {
        lm_dataset_free(b.d);
        return rc;
    }
    *out = b.d;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* In-memory data (the Python package, programs that hold their texts)       */
/* ------------------------------------------------------------------------ */

/* Check the options and allocate the dataset of a builder named what. */
static int mem_begin(builder *b, const char *what, const lm_data_opts *o, lm_err *err) {
    *b = (builder){NULL, 0, o ? o->max_tokens : 0, what, err};
    if (!o) return lm_fail(err, LM_EARG, "%s: missing options", what);
    if (o->seq_len < 2) return lm_fail(err, LM_EARG, "%s: seq_len %d is too short (at least 2)", what, o->seq_len);
    if (o->max_tokens < 0) return lm_fail(err, LM_EARG, "%s: max_tokens %lld is negative", what, (long long)o->max_tokens);
    b->d = lm_calloc(1, sizeof *b->d);
    if (!b->d) return lm_nomem(err, sizeof *b->d, "dataset");
    return LM_OK;
}

/* Hand the dataset over, or free it on error / when no sequence counts. */
static int mem_end(builder *b, int rc, int pairs, lm_dataset **out) {
    if (!rc && b->d->n_seq == 0)
        rc = lm_fail(b->err, LM_EARG, "%s: no sequence with a prediction to score (fewer than 2 tokens%s)", b->path,
                     pairs ? " or an empty completion" : "");
    if (rc) {
        lm_dataset_free(b->d);
        return rc;
    }
    *out = b->d;
    return LM_OK;
}

/* One plain text in memory, cut into chunks exactly as a text file is. */
int lm_dataset_from_text(lm_dataset **out, const char *text, size_t len, const lm_tokenizer *tok,
                         const lm_data_opts *o, lm_err *err) {
    *out = NULL;
    if (!tok || (!text && len)) return lm_fail(err, LM_EARG, "lm_dataset_from_text: missing argument");
    builder b;
    int rc = mem_begin(&b, "text", o, err);
    if (rc) return rc;
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) {
        text += 3;
        len -= 3;
    }
    return mem_end(&b, load_text(&b, tok, text, len, o->seq_len, o->llamacpp_chunks), 0, out);
}

/* n texts, one sequence each (as JSONL "text" lines), or n prompt/completion
 * pairs (as JSONL "prompt"/"completion" lines) when completions != NULL. */
int lm_dataset_from_texts(lm_dataset **out, const char *const *texts, const size_t *lens,
                          const char *const *completions, const size_t *completion_lens, int n,
                          const lm_tokenizer *tok, const lm_data_opts *o, lm_err *err) {
    *out = NULL;
    if (!tok || n < 0 || (n > 0 && (!texts || !lens)) || (completions && !completion_lens))
        return lm_fail(err, LM_EARG, "lm_dataset_from_texts: missing argument");
    builder b;
    int rc = mem_begin(&b, completions ? "prompts" : "texts", o, err);
    if (rc) return rc;
    for (int i = 0; i < n && !full(&b) && !rc; i++) {
        /* messages name the record: "texts[3]: invalid UTF-8 ..." */
        char name[64];
        snprintf(name, sizeof name, "%s[%d]", completions ? "prompts" : "texts", i);
        b.path = name;
        if (completions) rc = pair_record(&b, tok, texts[i], lens[i], completions[i], completion_lens[i], 0, o->seq_len);
        else rc = text_record(&b, tok, texts[i], lens[i], 0, o->seq_len);
        b.path = completions ? "prompts" : "texts";
    }
    return mem_end(&b, rc, completions != NULL, out);
}

/* n token-id sequences as given (no BOS added), truncated to seq_len, every
 * prediction counted; ids outside [0, vocab) are LM_EARG. */
int lm_dataset_from_ids(lm_dataset **out, const int32_t *const *ids, const int *lens, int n, int vocab,
                        const lm_data_opts *o, lm_err *err) {
    *out = NULL;
    if (n < 0 || (n > 0 && (!ids || !lens)) || vocab <= 0)
        return lm_fail(err, LM_EARG, "lm_dataset_from_ids: missing argument");
    builder b;
    int rc = mem_begin(&b, "ids", o, err);
    if (rc) return rc;
    for (int i = 0; i < n && !full(&b) && !rc; i++) {
        if (lens[i] < 0) {
            rc = lm_fail(err, LM_EARG, "ids[%d]: negative length %d", i, lens[i]);
            break;
        }
        for (int t = 0; t < lens[i] && !rc; t++)
            if (ids[i][t] < 0 || ids[i][t] >= vocab)
                rc = lm_fail(err, LM_EARG, "ids[%d][%d]: token id %d outside the vocabulary (0..%d)", i, t,
                             (int)ids[i][t], vocab - 1);
        if (!rc) rc = add_seq(&b, -1, ids[i], lens[i] > o->seq_len ? o->seq_len : lens[i], 0);
    }
    return mem_end(&b, rc, 0, out);
}

/* Free a dataset and its sequences. */
void lm_dataset_free(lm_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n_seq; i++) {
        lm_free(d->seqs[i].tok);
        lm_free(d->seqs[i].mask);
    }
    lm_free(d->seqs);
    lm_free(d);
}

/* ------------------------------------------------------------------------ */
/* Shares of the data among processes                                        */
/* ------------------------------------------------------------------------ */

/* See layermap.h. */
int lm_dataset_share(const lm_dataset *d, int group, int parts, int *owner, lm_err *err) {
    return lm_dataset_share_skip(d, group, parts, NULL, owner, err);
}

/* See layermap.h. */
int lm_dataset_share_skip(const lm_dataset *d, int group, int parts, const uint8_t *skip, int *owner, lm_err *err) {
    if (group < 1 || parts < 1) return lm_fail(err, LM_EARG, "data shares: group %d and parts %d must be >= 1", group, parts);
    int ns = d->n_seq ? (d->n_seq - 1) / group + 1 : 0;
    double *tokens = lm_malloc(sizeof(double) * (size_t)(ns ? ns : 1)); /* exact: below 2^53 */
    if (!tokens) return lm_nomem(err, sizeof(double) * (size_t)ns, "data shares");
    for (int k = 0; k < ns; k++) {
        int64_t t = 0;
        for (int s = k * group; s < d->n_seq && s < (k + 1) * group; s++) t += d->seqs[s].n;
        tokens[k] = skip && skip[k] ? -1.0 : (double)t;
    }
    int rc = lm_share_greedy(tokens, ns, parts, owner, NULL, err);
    lm_free(tokens);
    return rc;
}

/* See layermap.h. */
void lm_dataset_sha256(const lm_dataset *d, char hex[65]) {
    lm_sha256 h;
    lm_sha256_init(&h);
    for (int s = 0; s < d->n_seq; s++) {
        const lm_seq *q = &d->seqs[s];
        uint8_t b[5];
        uint32_t n = (uint32_t)q->n;
        for (int i = 0; i < 4; i++) b[i] = (uint8_t)(n >> (8 * i));
        lm_sha256_update(&h, b, 4);
        for (int t = 0; t < q->n; t++) { /* little-endian token, then its mask byte */
            uint32_t v = (uint32_t)q->tok[t];
            for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
            b[4] = q->mask[t] != 0;
            lm_sha256_update(&h, b, 5);
        }
    }
    lm_sha256_hex(&h, hex);
}
