/*
 * tokenizer.c -- text <-> token ids for llama-family models.
 *
 * Encoding runs the stages of HF tokenizers (llama.cpp runs the same ones):
 *   1. special   added/special tokens (<s>, <|im_start|>) are cut out of the
 *                raw text, leftmost-longest, and emitted as their ids;
 *   2. normalize each remaining segment (Prepend "▁", Replace " " -> "▁", NFC..);
 *   3. pre-tokenize the segment into pieces (regex splits, digits, ByteLevel,
 *                Metaspace);
 *   4. model     each piece is encoded by BPE (tok_bpe.c), after the GPT-2
 *                byte-level mapping when the tokenizer is byte-level.
 * Construction lives in tok_load.c; the merge engine in tok_bpe.c.
 */
#include "text/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Unicode White_Space. */
int tok_is_space(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

/* ------------------------------------------------------------------------ */
/* Growable byte buffer                                                      */
/* ------------------------------------------------------------------------ */

typedef struct tbuf {
    char *p;
    size_t n, cap;
} tbuf;

/* Make room for extra more bytes. */
static int tbuf_reserve(tbuf *b, size_t extra) {
    if (b->n + extra <= b->cap) return LM_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    char *p = lm_realloc(b->p, cap);
    if (!p) return LM_ENOMEM;
    b->p = p;
    b->cap = cap;
    return LM_OK;
}

/* Append s[0..n). */
static int tbuf_add(tbuf *b, const char *s, size_t n) {
    if (tbuf_reserve(b, n)) return LM_ENOMEM;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Encode state                                                              */
/* ------------------------------------------------------------------------ */

/* A piece of the working text: bytes buf[off, off+len). first: it begins the
 * whole input (for "prepend only at the start" rules). */
typedef struct span {
    size_t off, len;
    int first;
    int match; /* regex split: 1 for a match, 0 for the text between */
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

/* Append a span. */
static int spans_add(spans *s, size_t off, size_t len, int first, int match) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        span *v = lm_realloc(s->v, cap * sizeof *v);
        if (!v) return LM_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (span){off, len, first, match};
    return LM_OK;
}

typedef struct enc {
    const lm_tokenizer *t;
    int cont;              /* TOK_CONTINUE */
    tok_ids ids;
    tbuf buf;              /* normalized segment, then texts of rewritten pieces */
    tbuf tmp;              /* normalizer output / byte-level mapped piece */
    spans cur, next, ms;   /* pieces, pieces being built, matches of one piece */
    tok_scratch sc;
    pcre2_match_data *md;
    lm_err *err;
} enc;

/* Release an encode state (not the ids). */
static void enc_free(enc *e) {
    lm_free(e->buf.p);
    lm_free(e->tmp.p);
    lm_free(e->cur.v);
    lm_free(e->next.v);
    lm_free(e->ms.v);
    tok_scratch_free(&e->sc);
    if (e->md) pcre2_match_data_free(e->md);
}

/* Swap buf and tmp (after a normalizer step wrote tmp). */
static void swap_buf(enc *e) {
    tbuf x = e->buf;
    e->buf = e->tmp;
    e->tmp = x;
}

/* Out-of-memory error for this call. */
static int enc_nomem(enc *e) {
    return lm_fail(e->err, LM_ENOMEM, "%s: out of memory while tokenizing", e->t->path);
}

/* Find the next regex match in subj[0..n) at or after *pos that is not empty
 * (empty matches are skipped, as HF does). 1 and [*ms, *me) when found, 0 at
 * the end, negative on a PCRE2 error. */
static int next_match(enc *e, const pcre2_code *re, const char *subj, size_t n, size_t *pos,
                      size_t *ms, size_t *me) {
    while (*pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)subj, n, *pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) return rc;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            *pos = ov[1];
            return 1;
        }
        if (ov[1] >= n) return 0;
        *pos = ov[1] + lm_utf8_lead_len((uint8_t)subj[ov[1]]);
    }
    return 0;
}

/* Message for a failed PCRE2 match. */
static int regex_fail(enc *e, int rc) {
    if (rc == PCRE2_ERROR_NOMEMORY) return enc_nomem(e);
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return lm_fail(e->err, LM_EINTERNAL, "%s: regex match failed: %s", e->t->path, (char *)msg);
}

/* ------------------------------------------------------------------------ */
/* Normalizer                                                                */
/* ------------------------------------------------------------------------ */

/* Unicode normalisation (utf8proc) of buf into tmp. */
static int norm_unicode(enc *e, int kind) {
    utf8proc_option_t opt = UTF8PROC_STABLE;
    if (kind == NORM_NFC) opt |= UTF8PROC_COMPOSE;
    if (kind == NORM_NFD) opt |= UTF8PROC_DECOMPOSE;
    if (kind == NORM_NFKC) opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    if (kind == NORM_NFKD) opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)e->buf.p, (utf8proc_ssize_t)e->buf.n,
                                      &dst, opt);
    if (n < 0) {
        if (n == UTF8PROC_ERROR_NOMEM) return enc_nomem(e);
        return lm_fail(e->err, LM_EENCODING, "%s: unicode normalisation failed: %s", e->t->path,
                       utf8proc_errmsg(n));
    }
    e->tmp.n = 0;
    int rc = tbuf_add(&e->tmp, (const char *)dst, (size_t)n);
    free(dst); /* utf8proc allocates with malloc */
    return rc ? enc_nomem(e) : LM_OK;
}

/* Apply one normalizer step to buf (result left in buf). */
static int norm_step(enc *e, const tok_norm *op, int seg_first) {
    tbuf *in = &e->buf, *out = &e->tmp;
    out->n = 0;
    switch (op->kind) {
    case NORM_PREPEND:
        if (in->n == 0 || (seg_first && e->cont)) return LM_OK;
        if (tbuf_add(out, op->a, op->alen) || tbuf_add(out, in->p, in->n)) return enc_nomem(e);
        break;
    case NORM_REPLACE: {
        size_t i = 0;
        while (i < in->n) {
            const char *hit = op->alen ? memmem(in->p + i, in->n - i, op->a, op->alen) : NULL;
            size_t stop = hit ? (size_t)(hit - in->p) : in->n;
            if (tbuf_add(out, in->p + i, stop - i)) return enc_nomem(e);
            if (!hit) break;
            if (tbuf_add(out, op->b, op->blen)) return enc_nomem(e);
            i = stop + op->alen;
        }
        break;
    }
    case NORM_REPLACE_RE: {
        size_t pos = 0, last = 0, ms, me;
        int rc;
        while ((rc = next_match(e, op->re, in->p, in->n, &pos, &ms, &me)) == 1) {
            if (tbuf_add(out, in->p + last, ms - last) || tbuf_add(out, op->b, op->blen))
                return enc_nomem(e);
            last = me;
        }
        if (rc < 0) return regex_fail(e, rc);
        if (tbuf_add(out, in->p + last, in->n - last)) return enc_nomem(e);
        break;
    }
    case NORM_NFC:
    case NORM_NFD:
    case NORM_NFKC:
    case NORM_NFKD: {
        int rc = norm_unicode(e, op->kind);
        if (rc) return rc;
        break;
    }
    case NORM_LOWER:
        for (size_t i = 0; i < in->n;) {
            size_t l;
            uint32_t cp = lm_utf8_decode(in->p + i, &l);
            char c[4];
            size_t cl = lm_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), c);
            if (tbuf_add(out, c, cl)) return enc_nomem(e);
            i += l;
        }
        break;
    case NORM_STRIP: {
        size_t a = 0, b = in->n, l;
        while (op->left && a < b && tok_is_space(lm_utf8_decode(in->p + a, &l))) a += l;
        while (op->right && b > a) {
            size_t k = b - 1;
            while (k > a && ((uint8_t)in->p[k] & 0xc0) == 0x80) k--;
            if (!tok_is_space(lm_utf8_decode(in->p + k, &l))) break;
            b = k;
        }
        if (tbuf_add(out, in->p + a, b - a)) return enc_nomem(e);
        break;
    }
    default:
        return lm_fail(e->err, LM_EINTERNAL, "%s: unknown normalizer step %d", e->t->path, op->kind);
    }
    swap_buf(e);
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Pre-tokenizer                                                             */
/* ------------------------------------------------------------------------ */

/* Split every current piece by op's regex and combine matches and the text
 * between them as HF's SplitDelimiterBehavior says. */
static int pre_split(enc *e, const tok_pre *op) {
    e->next.n = 0;
    for (size_t k = 0; k < e->cur.n; k++) {
        span pc = e->cur.v[k];
        const char *subj = e->buf.p + pc.off;
        e->ms.n = 0;
        size_t pos = 0, last = 0, ms, me;
        int rc;
        while ((rc = next_match(e, op->re, subj, pc.len, &pos, &ms, &me)) == 1) {
            if (ms > last && spans_add(&e->ms, last, ms - last, 0, op->invert)) return enc_nomem(e);
            if (spans_add(&e->ms, ms, me - ms, 0, !op->invert)) return enc_nomem(e);
            last = me;
        }
        if (rc < 0) return regex_fail(e, rc);
        if (last < pc.len && spans_add(&e->ms, last, pc.len - last, 0, op->invert)) return enc_nomem(e);
        /* combine (offsets relative to the piece) */
        size_t first_out = e->next.n;
        int prev_match = 0;
        if (op->behavior == SPLIT_MERGED_NEXT) {
            /* right to left: a match joins the piece after it */
            for (size_t j = e->ms.n; j-- > 0;) {
                span m = e->ms.v[j];
                if (m.match && !prev_match && e->next.n > first_out) {
                    span *l = &e->next.v[e->next.n - 1];
                    l->len += l->off - m.off;
                    l->off = m.off;
                } else if (spans_add(&e->next, m.off, m.len, 0, 0)) {
                    return enc_nomem(e);
                }
                prev_match = m.match;
            }
            /* reverse what this piece added */
            for (size_t a = first_out, b = e->next.n; a + 1 < b; a++, b--) {
                span x = e->next.v[a];
                e->next.v[a] = e->next.v[b - 1];
                e->next.v[b - 1] = x;
            }
        } else {
            for (size_t j = 0; j < e->ms.n; j++) {
                span m = e->ms.v[j];
                int join = 0;
                if (op->behavior == SPLIT_REMOVED && m.match) {
                    prev_match = m.match;
                    continue;
                }
                if (op->behavior == SPLIT_MERGED_PREV) join = m.match && !prev_match;
                if (op->behavior == SPLIT_CONTIGUOUS) join = m.match == prev_match;
                if (join && e->next.n > first_out) {
                    e->next.v[e->next.n - 1].len = m.off + m.len - e->next.v[e->next.n - 1].off;
                } else if (spans_add(&e->next, m.off, m.len, 0, 0)) {
                    return enc_nomem(e);
                }
                prev_match = m.match;
            }
        }
        for (size_t j = first_out; j < e->next.n; j++) {
            e->next.v[j].first = pc.first && e->next.v[j].off == 0;
            e->next.v[j].off += pc.off;
        }
    }
    spans x = e->cur;
    e->cur = e->next;
    e->next = x;
    return LM_OK;
}

/* ByteLevel add_prefix_space: a piece that does not start with ' ' gets one. */
static int pre_prefix_space(enc *e) {
    for (size_t k = 0; k < e->cur.n; k++) {
        span *pc = &e->cur.v[k];
        if ((pc->first && e->cont) || (pc->len && e->buf.p[pc->off] == ' ')) continue;
        size_t off = e->buf.n;
        if (tbuf_reserve(&e->buf, pc->len + 1)) return enc_nomem(e);
        e->buf.p[e->buf.n++] = ' ';
        memcpy(e->buf.p + e->buf.n, e->buf.p + pc->off, pc->len);
        e->buf.n += pc->len;
        pc->off = off;
        pc->len += 1;
    }
    return LM_OK;
}

/* Metaspace: ' ' -> replacement, and the replacement prepended where the
 * prepend scheme says. */
static int pre_metaspace(enc *e, const tok_pre *op) {
    for (size_t k = 0; k < e->cur.n; k++) {
        span *pc = &e->cur.v[k];
        int add = op->prepend == 2 ? !(pc->first && e->cont) : op->prepend == 1 ? pc->first && !e->cont : 0;
        if (add && pc->len >= (size_t)op->repl_len && !memcmp(e->buf.p + pc->off, op->repl, (size_t)op->repl_len))
            add = 0;
        if (add && pc->len && e->buf.p[pc->off] == ' ') add = 0; /* becomes the replacement */
        size_t off = e->buf.n, nsp = 0;
        for (size_t i = 0; i < pc->len; i++) nsp += e->buf.p[pc->off + i] == ' ';
        if (tbuf_reserve(&e->buf, pc->len + (nsp + 1) * (size_t)op->repl_len)) return enc_nomem(e);
        char *o = e->buf.p + e->buf.n;
        if (add) {
            memcpy(o, op->repl, (size_t)op->repl_len);
            o += op->repl_len;
        }
        for (size_t i = 0; i < pc->len; i++) {
            char c = e->buf.p[pc->off + i];
            if (c == ' ') {
                memcpy(o, op->repl, (size_t)op->repl_len);
                o += op->repl_len;
            } else {
                *o++ = c;
            }
        }
        e->buf.n = (size_t)(o - e->buf.p);
        pc->off = off;
        pc->len = e->buf.n - off;
    }
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Segments                                                                  */
/* ------------------------------------------------------------------------ */

/* Encode one piece with the model (byte-level mapping first when needed). */
static int model_piece(enc *e, const char *p, size_t n) {
    const lm_tokenizer *t = e->t;
    if (t->byte_level) {
        e->tmp.n = 0;
        if (tbuf_reserve(&e->tmp, 2 * n)) return enc_nomem(e);
        char *o = e->tmp.p;
        for (size_t i = 0; i < n; i++) {
            uint8_t b = (uint8_t)p[i];
            *o++ = t->b2u[b][0];
            if (t->b2u_len[b] == 2) *o++ = t->b2u[b][1];
        }
        e->tmp.n = (size_t)(o - e->tmp.p);
        p = e->tmp.p;
        n = e->tmp.n;
    } else if (t->newline_barrier && !t->ignore_merges) {
        /* no piece holds '\n' next to other characters: merges never cross one */
        size_t a = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] != '\n') continue;
            if (tok_bpe_piece(t, &e->sc, p + a, i - a, &e->ids) ||
                tok_bpe_piece(t, &e->sc, p + i, 1, &e->ids))
                return enc_nomem(e);
            a = i + 1;
        }
        p += a;
        n -= a;
    }
    if (tok_bpe_piece(t, &e->sc, p, n, &e->ids)) return enc_nomem(e);
    return LM_OK;
}

/* Normalize, pre-tokenize and encode the segment s[0..n) (no special tokens
 * inside). seg_first: the segment starts the input. */
static int encode_segment(enc *e, const char *s, size_t n, int seg_first) {
    const lm_tokenizer *t = e->t;
    int rc;
    e->buf.n = 0;
    if (tbuf_add(&e->buf, s, n)) return enc_nomem(e);
    for (int i = 0; i < t->n_norm; i++)
        if ((rc = norm_step(e, &t->norm[i], seg_first))) return rc;
    if (e->buf.n == 0) return LM_OK;
    e->cur.n = 0;
    if (spans_add(&e->cur, 0, e->buf.n, seg_first, 0)) return enc_nomem(e);
    for (int i = 0; i < t->n_pre; i++) {
        const tok_pre *op = &t->pre[i];
        rc = op->kind == PRE_SPLIT          ? pre_split(e, op)
             : op->kind == PRE_PREFIX_SPACE ? pre_prefix_space(e)
                                            : pre_metaspace(e, op);
        if (rc) return rc;
    }
    for (size_t k = 0; k < e->cur.n; k++) {
        span pc = e->cur.v[k];
        if (pc.len && (rc = model_piece(e, e->buf.p + pc.off, pc.len))) return rc;
    }
    return LM_OK;
}

/* The special token that starts at text[i], longest first; -1 if none. */
static int special_at(const lm_tokenizer *t, const char *text, size_t len, size_t i) {
    uint8_t c = (uint8_t)text[i];
    for (int k = t->special_first[c]; k < t->special_first[c + 1]; k++) {
        int32_t id = t->special[k].id;
        size_t l = t->special[k].len;
        if (l <= len - i && memcmp(text + i, t->v.arena + t->v.off[id], l) == 0) return k;
    }
    return -1;
}

/* Encode text: specials cut out, each segment between them normalized,
 * pre-tokenized and encoded piece by piece. */
int lm_tokenize_ex(const lm_tokenizer *t, const char *text, size_t len, int add_bos, int flags,
                   int32_t **ids, int *n, lm_err *err) {
    *ids = NULL;
    *n = 0;
    if (!t || (!text && len)) return lm_fail(err, LM_EARG, "lm_tokenize: no tokenizer or text");
    if (len > (size_t)INT32_MAX) return lm_fail(err, LM_EARG, "%s: text of %zu bytes is too long", t->path, len);
    size_t bad = lm_utf8_check(text, len);
    if (bad < len)
        return lm_fail(err, LM_EENCODING, "text is not valid UTF-8: byte 0x%02x at offset %zu",
                       (uint8_t)text[bad], bad);
    if (add_bos < 0) add_bos = lm_tokenizer_add_bos(t);
    if (add_bos && t->bos < 0) return lm_fail(err, LM_EARG, "%s: the tokenizer has no BOS token", t->path);

    enc e;
    memset(&e, 0, sizeof e);
    e.t = t;
    e.cont = (flags & TOK_CONTINUE) != 0;
    e.err = err;
    int rc = LM_OK;
    if (t->n_pre || t->n_norm) {
        e.md = pcre2_match_data_create(16, t->gctx);
        if (!e.md) {
            rc = enc_nomem(&e);
            goto done;
        }
    }
    if (add_bos && tok_ids_push(&e.ids, t->bos)) {
        rc = enc_nomem(&e);
        goto done;
    }
    size_t pos = 0;
    while (pos < len) {
        /* next special token at or after pos */
        size_t i = pos;
        int k = -1;
        if (t->n_special)
            for (; i < len; i++)
                if ((k = special_at(t, text, len, i)) >= 0) break;
        if (k < 0) i = len;
        size_t ms = i, me = k >= 0 ? i + t->v.len[t->special[k].id] : len;
        size_t l;
        if (k >= 0 && t->special[k].lstrip)
            while (ms > pos) { /* whitespace before the token joins it */
                size_t c = ms - 1;
                while (c > pos && ((uint8_t)text[c] & 0xc0) == 0x80) c--;
                if (!tok_is_space(lm_utf8_decode(text + c, &l))) break;
                ms = c;
            }
        if (k >= 0 && t->special[k].rstrip)
            while (me < len && tok_is_space(lm_utf8_decode(text + me, &l))) me += l;
        if (ms > pos && (rc = encode_segment(&e, text + pos, ms - pos, pos == 0))) goto done;
        if (k >= 0 && tok_ids_push(&e.ids, t->special[k].id)) {
            rc = enc_nomem(&e);
            goto done;
        }
        pos = me;
    }
    if (e.ids.n > (size_t)INT32_MAX) {
        rc = lm_fail(err, LM_EARG, "%s: too many tokens", t->path);
        goto done;
    }
    if (!e.ids.v && !(e.ids.v = lm_malloc(sizeof(int32_t)))) {
        rc = enc_nomem(&e);
        goto done;
    }
    *ids = e.ids.v;
    *n = (int)e.ids.n;
    e.ids.v = NULL;
done:
    lm_free(e.ids.v);
    enc_free(&e);
    return rc;
}

/* Encode UTF-8 text; add_bos -1 = as the model says. */
int lm_tokenize(const lm_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids, int *n,
                lm_err *err) {
    return lm_tokenize_ex(t, text, len, add_bos, 0, ids, n, err);
}

/* ------------------------------------------------------------------------ */
/* Decoding and accessors                                                    */
/* ------------------------------------------------------------------------ */

/* Value of hex digit c, -1 if none. */
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Append the text of one (non-control) token. */
static int decode_one(const lm_tokenizer *t, int32_t id, tbuf *out) {
    const char *p = t->v.arena + t->v.off[id];
    size_t n = t->v.len[id];
    if (t->v.type[id] == TOK_BYTE && n == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>' &&
        hexval(p[3]) >= 0 && hexval(p[4]) >= 0) {
        char b = (char)(hexval(p[3]) << 4 | hexval(p[4]));
        return tbuf_add(out, &b, 1);
    }
    if (t->dec_byte_level) {
        /* every character must map back to a byte, else the token stays as is (HF) */
        size_t start = out->n, l;
        if (tbuf_reserve(out, n)) return LM_ENOMEM;
        for (size_t i = 0; i < n; i += l) {
            uint32_t cp = lm_utf8_decode(p + i, &l);
            int b = cp < 512 ? t->u2b[cp] : -1;
            if (b < 0) {
                out->n = start;
                return tbuf_add(out, p, n);
            }
            out->p[out->n++] = (char)b;
        }
        return LM_OK;
    }
    if (t->dec_space_mark) {
        for (size_t i = 0; i < n;) {
            if (n - i >= 3 && !memcmp(p + i, "\xe2\x96\x81", 3)) {
                if (tbuf_add(out, " ", 1)) return LM_ENOMEM;
                i += 3;
            } else {
                if (tbuf_add(out, p + i, 1)) return LM_ENOMEM;
                i++;
            }
        }
        return LM_OK;
    }
    return tbuf_add(out, p, n);
}

/* Decode ids to text. Control and unknown tokens (BOS, EOS, <|im_end|>,
 * <unk>) give nothing, as HF's decode skips special tokens; a leading space
 * left by the SPM/Metaspace prefix is dropped. */
int lm_detokenize(const lm_tokenizer *t, const int32_t *ids, int n, char **out, lm_err *err) {
    *out = NULL;
    if (!t || n < 0 || (n > 0 && !ids)) return lm_fail(err, LM_EARG, "lm_detokenize: bad arguments");
    tbuf b = {0};
    int shown = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->v.n) {
            lm_free(b.p);
            return lm_fail(err, LM_EARG, "%s: token id %d at position %d is outside the vocabulary (%d)",
                           t->path, (int)id, i, t->v.n);
        }
        if (t->v.type[id] == TOK_CONTROL || t->v.type[id] == TOK_UNKNOWN) continue;
        if ((t->dec_join_space && shown++ && tbuf_add(&b, " ", 1)) || decode_one(t, id, &b)) {
            lm_free(b.p);
            return lm_nomem(err, b.n, "decoded text");
        }
    }
    size_t skip = t->dec_strip_lead && b.n && b.p[0] == ' ' ? 1 : 0;
    char *s = lm_malloc(b.n - skip + 1);
    if (!s) {
        lm_free(b.p);
        return lm_nomem(err, b.n + 1, "decoded text");
    }
    if (b.n - skip) memcpy(s, b.p + skip, b.n - skip);
    s[b.n - skip] = 0;
    lm_free(b.p);
    *out = s;
    return LM_OK;
}

/* The stored piece of id; NULL when id is outside the vocabulary. */
const char *lm_token_piece(const lm_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->v.n) return NULL;
    return t->v.arena + t->v.off[id];
}

/* Number of token ids. */
int lm_tokenizer_vocab(const lm_tokenizer *t) { return t ? t->v.n : 0; }

/* BOS id, -1 when the tokenizer has none. */
int lm_tokenizer_bos(const lm_tokenizer *t) { return t ? t->bos : -1; }

/* EOS id, -1 when unknown. */
int lm_tokenizer_eos(const lm_tokenizer *t) { return t ? t->eos : -1; }

/* 1 when the model's text starts with BOS (and it has one). */
int lm_tokenizer_add_bos(const lm_tokenizer *t) { return t ? t->add_bos && t->bos >= 0 : 0; }

/* Free a tokenizer and everything it owns. */
void lm_tokenizer_free(lm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_norm; i++) {
        lm_free(t->norm[i].a);
        lm_free(t->norm[i].b);
        if (t->norm[i].re) pcre2_code_free(t->norm[i].re);
    }
    lm_free(t->norm);
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
    lm_free(t->pre);
    lm_free(t->special);
    tok_vocab_free(&t->v);
    tok_merges_free(&t->m);
    if (t->gctx) pcre2_general_context_free(t->gctx);
    lm_free(t->path);
    lm_free(t);
}
