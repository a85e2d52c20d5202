/*
 * tok_bpe.c -- the tokenizer's data structures and its merge engine:
 * vocabulary hash (piece -> id), merge table ((a, b) -> rank, merged id), the
 * GPT-2 byte <-> code point map, and BPE over one piece with a binary heap of
 * candidate pairs over a linked list of symbols (O(n log n) per piece).
 */
#include "text/tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Hashing                                                                   */
/* ------------------------------------------------------------------------ */

/* FNV-1a over the bytes, then a final avalanche so that the low bits (the
 * table index) depend on every byte. */
static uint32_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

/* splitmix64 finaliser for integer keys. */
static uint32_t hash_u64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (uint32_t)x;
}

/* Smallest power of two >= 2n (load factor <= 1/2), at least 16. */
static uint32_t table_size(size_t n) {
    uint32_t c = 16;
    while (c < 2 * n && c < (1u << 31)) c <<= 1;
    return c;
}

/* ------------------------------------------------------------------------ */
/* Vocabulary                                                                */
/* ------------------------------------------------------------------------ */

/* Reserve n ids, every piece empty and UNUSED. */
int tok_vocab_init(tok_vocab *v, int n) {
    memset(v, 0, sizeof *v);
    if (n <= 0) return LM_EARG;
    v->n = n;
    v->off = lm_calloc((size_t)n, sizeof *v->off);
    v->len = lm_calloc((size_t)n, sizeof *v->len);
    v->score = lm_calloc((size_t)n, sizeof *v->score);
    v->type = lm_malloc((size_t)n);
    v->arena_cap = (size_t)n * 8 + 64;
    v->arena = lm_malloc(v->arena_cap);
    if (!v->off || !v->len || !v->score || !v->type || !v->arena) return LM_ENOMEM;
    memset(v->type, TOK_UNUSED, (size_t)n);
    v->arena[0] = 0; /* every unset piece points at this empty string */
    v->arena_len = 1;
    return LM_OK;
}

/* Store piece id (copied into the arena). A piece may be set only once. */
int tok_vocab_set(tok_vocab *v, int id, const char *s, size_t len, float score, int type) {
    if (id < 0 || id >= v->n) return LM_EARG;
    if (len >= UINT32_MAX / 2) return LM_EARG;
    if (v->arena_len + len + 1 > v->arena_cap) {
        size_t cap = v->arena_cap * 2;
        while (cap < v->arena_len + len + 1) cap *= 2;
        if (cap > UINT32_MAX) return LM_EARG;
        char *a = lm_realloc(v->arena, cap);
        if (!a) return LM_ENOMEM;
        v->arena = a;
        v->arena_cap = cap;
    }
    v->off[id] = (uint32_t)v->arena_len;
    v->len[id] = (uint32_t)len;
    memcpy(v->arena + v->arena_len, s, len);
    v->arena[v->arena_len + len] = 0;
    v->arena_len += len + 1;
    v->score[id] = score;
    v->type[id] = (uint8_t)type;
    return LM_OK;
}

/* Build the string -> id hash. Empty pieces are not indexed; for duplicate
 * pieces the lowest id wins. */
int tok_vocab_index(tok_vocab *v) {
    uint32_t cap = table_size((size_t)v->n);
    lm_free(v->slot);
    v->slot = lm_calloc(cap, sizeof *v->slot);
    if (!v->slot) return LM_ENOMEM;
    v->mask = cap - 1;
    for (int id = 0; id < v->n; id++) {
        if (v->len[id] == 0) continue;
        const char *s = v->arena + v->off[id];
        uint32_t i = hash_bytes(s, v->len[id]) & v->mask;
        int dup = 0;
        while (v->slot[i]) {
            uint32_t o = v->slot[i] - 1;
            if (v->len[o] == v->len[id] && memcmp(v->arena + v->off[o], s, v->len[id]) == 0) {
                dup = 1;
                break;
            }
            i = (i + 1) & v->mask;
        }
        if (!dup) v->slot[i] = (uint32_t)id + 1;
    }
    return LM_OK;
}

/* Id of the piece s[0..len), -1 when it is not in the vocabulary. */
int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t len) {
    if (!v->slot || len == 0) return -1;
    uint32_t i = hash_bytes(s, len) & v->mask;
    while (v->slot[i]) {
        uint32_t o = v->slot[i] - 1;
        if (v->len[o] == len && memcmp(v->arena + v->off[o], s, len) == 0) return (int32_t)o;
        i = (i + 1) & v->mask;
    }
    return -1;
}

/* Release the vocabulary's memory. */
void tok_vocab_free(tok_vocab *v) {
    lm_free(v->off);
    lm_free(v->len);
    lm_free(v->score);
    lm_free(v->type);
    lm_free(v->arena);
    lm_free(v->slot);
    memset(v, 0, sizeof *v);
}

/* ------------------------------------------------------------------------ */
/* Merges                                                                    */
/* ------------------------------------------------------------------------ */

/* Room for n merges. */
int tok_merges_init(tok_merges *m, int n) {
    memset(m, 0, sizeof *m);
    uint32_t cap = table_size(n > 0 ? (size_t)n : 1);
    m->key = lm_malloc(cap * sizeof *m->key);
    m->rank = lm_malloc(cap * sizeof *m->rank);
    m->val = lm_malloc(cap * sizeof *m->val);
    if (!m->key || !m->rank || !m->val) return LM_ENOMEM;
    memset(m->key, 0xff, cap * sizeof *m->key);
    m->mask = cap - 1;
    return LM_OK;
}

/* Add the merge (a, b) -> merged with rank = number of merges added so far
 * (the caller adds them in file order). A repeated pair keeps its first rank. */
void tok_merges_add(tok_merges *m, int32_t a, int32_t b, int32_t merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    int32_t rank = m->n++;
    uint32_t i = hash_u64(k) & m->mask;
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) return;
        i = (i + 1) & m->mask;
    }
    m->key[i] = k;
    m->rank[i] = rank;
    m->val[i] = merged;
}

/* Look up (a, b): 1 and rank/merged when found, else 0. */
static int merges_find(const tok_merges *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!m->key) return 0;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = hash_u64(k) & m->mask;
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->val[i];
            return 1;
        }
        i = (i + 1) & m->mask;
    }
    return 0;
}

/* Release the merge table. */
void tok_merges_free(tok_merges *m) {
    lm_free(m->key);
    lm_free(m->rank);
    lm_free(m->val);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------ */
/* GPT-2 byte <-> code point                                                 */
/* ------------------------------------------------------------------------ */

/* Printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves;
 * the other 68 bytes, in increasing order, become U+0100, U+0101, ... */
static int byte_is_printable(int b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/* The code point GPT-2's bytes_to_unicode gives byte b. */
uint32_t tok_byte_cp(int b) {
    if (byte_is_printable(b)) return (uint32_t)b;
    uint32_t n = 0;
    for (int i = 0; i < b; i++)
        if (!byte_is_printable(i)) n++;
    return 256 + n;
}

/* ------------------------------------------------------------------------ */
/* BPE over one piece                                                        */
/* ------------------------------------------------------------------------ */

/* Append id to the list, growing it. */
int tok_ids_push(tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = lm_realloc(ids->v, cap * sizeof *v);
        if (!v) return LM_ENOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return LM_OK;
}

/* Release the scratch buffers of an encode call. */
void tok_scratch_free(tok_scratch *s) {
    lm_free(s->sym);
    lm_free(s->heap);
    memset(s, 0, sizeof *s);
}

/* True when pair x must merge before pair y: lower priority value first, then
 * the leftmost (as llama.cpp's and HF's queues order them). */
static int pair_before(const tok_pair *x, const tok_pair *y) {
    return x->pri < y->pri || (x->pri == y->pri && x->left < y->left);
}

/* Push onto the binary min-heap. */
static int heap_push(tok_scratch *s, tok_pair p) {
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
        tok_pair *h = lm_realloc(s->heap, cap * sizeof *h);
        if (!h) return LM_ENOMEM;
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &s->heap[up])) break;
        s->heap[i] = s->heap[up];
        i = up;
    }
    s->heap[i] = p;
    return LM_OK;
}

/* Pop the heap's first pair into *out. */
static void heap_pop(tok_scratch *s, tok_pair *out) {
    *out = s->heap[0];
    tok_pair last = s->heap[--s->heap_n];
    size_t n = s->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!pair_before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
}

/* If symbols l and r (adjacent) can merge, queue the pair. */
static int try_pair(const lm_tokenizer *t, tok_scratch *s, const char *p, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return LM_OK;
    const tok_sym *a = &s->sym[l], *b = &s->sym[r];
    if (a->nomerge || b->nomerge) return LM_OK;
    tok_pair q;
    q.left = l;
    q.right = r;
    q.size = a->len + b->len;
    if (t->model == TOK_MODEL_SPM) {
        int32_t id = tok_vocab_find(&t->v, p + a->start, q.size);
        if (id < 0) return LM_OK;
        q.id = id;
        q.pri = -(double)t->v.score[id];
    } else {
        int32_t rank, merged;
        if (a->id < 0 || b->id < 0 || !merges_find(&t->m, a->id, b->id, &rank, &merged)) return LM_OK;
        q.id = merged;
        q.pri = (double)rank;
    }
    return heap_push(s, q);
}

/* Append a symbol for one character p[start..start+len) with id (-1: not a
 * token by itself; SPM resolves it to byte tokens at the end). */
static void add_char(tok_scratch *s, size_t *ns, uint32_t start, uint32_t len, int32_t id) {
    tok_sym *y = &s->sym[(*ns)++];
    y->start = start;
    y->len = len;
    y->id = id;
    y->nomerge = 0;
}

/* Encode the piece p[0..n) and append its ids to out. */
int tok_bpe_piece(const lm_tokenizer *t, tok_scratch *s, const char *p, size_t n, tok_ids *out) {
    if (n == 0) return LM_OK;
    if (n > INT32_MAX / 2) return LM_ENOMEM;
    if (t->ignore_merges) {
        int32_t id = tok_vocab_find(&t->v, p, n);
        if (id >= 0) return tok_ids_push(out, id);
    }
    /* one symbol per character at most, plus byte-fallback expansion (<= 4 per char) */
    if (s->sym_cap < n) {
        lm_free(s->sym);
        s->sym = lm_malloc(n * sizeof *s->sym);
        if (!s->sym) {
            s->sym_cap = 0;
            return LM_ENOMEM;
        }
        s->sym_cap = n;
    }
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)p[i];
        size_t cl = lm_utf8_lead_len(c);
        if (cl > n - i) cl = n - i;
        int32_t id = tok_vocab_find(&t->v, p + i, cl);
        if (id >= 0 || t->model == TOK_MODEL_SPM) {
            add_char(s, &ns, (uint32_t)i, (uint32_t)cl, id);
        } else {
            /* BPE: byte fallback when every byte token exists, else unk */
            int ok = t->byte_fallback;
            for (size_t k = 0; ok && k < cl; k++) ok = t->byte_id[(uint8_t)p[i + k]] >= 0;
            if (ok) {
                for (size_t k = 0; k < cl; k++) {
                    tok_sym *y = &s->sym[ns++];
                    y->start = (uint32_t)(i + k);
                    y->len = 1;
                    y->id = t->byte_id[(uint8_t)p[i + k]];
                    y->nomerge = 1;
                }
            } else if (t->unk_id >= 0) {
                if (t->fuse_unk && ns > 0 && s->sym[ns - 1].id == t->unk_id && s->sym[ns - 1].nomerge) {
                    s->sym[ns - 1].len += (uint32_t)cl;
                } else {
                    tok_sym *y = &s->sym[ns++];
                    y->start = (uint32_t)i;
                    y->len = (uint32_t)cl;
                    y->id = t->unk_id;
                    y->nomerge = 1;
                }
            }
            /* no unk token: the character is dropped (as HF without unk_token) */
        }
        i += cl;
    }
    for (size_t i = 0; i < ns; i++) {
        s->sym[i].prev = (int32_t)i - 1;
        s->sym[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    s->heap_n = 0;
    for (size_t i = 1; i < ns; i++) {
        int rc = try_pair(t, s, p, (int32_t)i - 1, (int32_t)i);
        if (rc) return rc;
    }
    while (s->heap_n) {
        tok_pair q;
        heap_pop(s, &q);
        tok_sym *a = &s->sym[q.left], *b = &s->sym[q.right];
        if (a->len == 0 || b->len == 0 || a->next != q.right || a->len + b->len != q.size) continue;
        a->len += b->len;
        a->id = q.id;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0) s->sym[b->next].prev = q.left;
        int rc = try_pair(t, s, p, a->prev, q.left);
        if (!rc) rc = try_pair(t, s, p, q.left, a->next);
        if (rc) return rc;
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = s->sym[i].next) {
        const tok_sym *y = &s->sym[i];
        int rc;
        if (y->id >= 0) {
            rc = tok_ids_push(out, y->id);
        } else {
            /* SPM: a character that is no token -> its bytes, else unk */
            rc = LM_OK;
            for (uint32_t k = 0; k < y->len && !rc; k++) {
                int32_t b = t->byte_id[(uint8_t)p[y->start + k]];
                if (b < 0) b = t->unk_id;
                if (b >= 0) rc = tok_ids_push(out, b);
            }
        }
        if (rc) return rc;
    }
    return LM_OK;
}
