/*
 * gguf.c -- reader for GGUF v2/v3 files (format: see gguf.h).
 *
 * The file is memory-mapped and parsed in stages over a bounded cursor, in
 * the manner of ggml's gguf.cpp:
 *   1. header      magic, version, n_tensors, n_kv (counts checked against
 *                  the bytes left before anything is allocated)
 *   2. key-values  every string length checked against the bytes left,
 *                  arrays sized with overflow checks, keys unique; string
 *                  arrays get an index of element pointers (kv->strs)
 *   3. tensors     name (unique, < 128 bytes), n_dims 1..4, ne with an
 *                  overflow-checked product, ggml type, ne[0] a multiple of
 *                  the block size, offset a multiple of the alignment
 *   4. data        each tensor inside the file, no two overlapping
 * Nothing outside the mapping is ever read; every error names the file, the
 * key or tensor, and the actual and expected values.
 *
 * Unsupported ggml types: a tensor whose type ggml defines but layermap does
 * not decode (IQ2_XXS, Q8_K, I32, ...) does not fail the open -- `inspect`
 * still lists it. It gets dtype LM_DT_COUNT, file_type = the ggml name and a
 * correct nbytes, and lm_tensor_read_rows fails with "unsupported type
 * <name>". A type id ggml does not define at all fails the open with
 * LM_EUNSUPPORTED (its size is unknown, so the layout cannot be checked).
 * Versions other than 2 and 3 are LM_EUNSUPPORTED as well (v1 and
 * big-endian files get their own message); everything else is LM_ECORRUPT.
 */
#include "format/gguf.h"

#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian fields with direct loads; big-endian hosts are not supported"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
#define MIN_KV_BYTES 13     /* key length 8 + type 4 + the smallest value 1 */
#define MIN_TENSOR_BYTES 32 /* name length 8 + n_dims 4 + ne[0] 8 + type 4 + offset 8 */

/* ------------------------------------------------------------------------ */
/* ggml types                                                                */
/* ------------------------------------------------------------------------ */

/* Every type ggml defines (ggml.h enum ggml_type; sizes from ggml-common.h).
 * dtype is the lm_dtype, or -1 when layermap does not decode the type. Ids
 * without a name (4, 5, 31-33, 36-38: removed from ggml) are unknown. */
static const struct {
    const char *name;
    uint32_t blck;  /* elements per block */
    uint32_t bytes; /* bytes per block */
    int dtype;
} ggml_types[] = {
    [0] = {"F32", 1, 4, LM_DT_F32},
    [1] = {"F16", 1, 2, LM_DT_F16},
    [2] = {"Q4_0", 32, 18, LM_DT_Q4_0},
    [3] = {"Q4_1", 32, 20, LM_DT_Q4_1},
    [6] = {"Q5_0", 32, 22, LM_DT_Q5_0},
    [7] = {"Q5_1", 32, 24, LM_DT_Q5_1},
    [8] = {"Q8_0", 32, 34, LM_DT_Q8_0},
    [9] = {"Q8_1", 32, 36, -1},
    [10] = {"Q2_K", 256, 84, LM_DT_Q2_K},
    [11] = {"Q3_K", 256, 110, LM_DT_Q3_K},
    [12] = {"Q4_K", 256, 144, LM_DT_Q4_K},
    [13] = {"Q5_K", 256, 176, LM_DT_Q5_K},
    [14] = {"Q6_K", 256, 210, LM_DT_Q6_K},
    [15] = {"Q8_K", 256, 292, -1},
    [16] = {"IQ2_XXS", 256, 66, -1},
    [17] = {"IQ2_XS", 256, 74, -1},
    [18] = {"IQ3_XXS", 256, 98, -1},
    [19] = {"IQ1_S", 256, 50, -1},
    [20] = {"IQ4_NL", 32, 18, LM_DT_IQ4_NL},
    [21] = {"IQ3_S", 256, 110, -1},
    [22] = {"IQ2_S", 256, 82, -1},
    [23] = {"IQ4_XS", 256, 136, LM_DT_IQ4_XS},
    [24] = {"I8", 1, 1, -1},
    [25] = {"I16", 1, 2, -1},
    [26] = {"I32", 1, 4, -1},
    [27] = {"I64", 1, 8, -1},
    [28] = {"F64", 1, 8, -1},
    [29] = {"IQ1_M", 256, 56, -1},
    [30] = {"BF16", 1, 2, LM_DT_BF16},
    [34] = {"TQ1_0", 256, 54, -1},
    [35] = {"TQ2_0", 256, 66, -1},
    [39] = {"MXFP4", 32, 17, -1},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

/* Whether ggml defines type id t (so its block size is known). */
static int ggml_type_known(uint32_t t) { return t < N_GGML_TYPES && ggml_types[t].name; }

/* ggml type id -> lm_dtype, -1 if layermap does not decode it (or unknown). */
int lm_gguf_dtype_from_ggml(uint32_t ggml_type) {
    return ggml_type_known(ggml_type) ? ggml_types[ggml_type].dtype : -1;
}

/* ggml's name of a type id ("Q4_K"); "unknown" for ids ggml does not define. */
const char *lm_gguf_ggml_type_name(uint32_t ggml_type) {
    return ggml_type_known(ggml_type) ? ggml_types[ggml_type].name : "unknown";
}

/* ------------------------------------------------------------------------ */
/* Value types                                                               */
/* ------------------------------------------------------------------------ */

static const char *const value_type_names[] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
};
#define N_VALUE_TYPES (sizeof value_type_names / sizeof value_type_names[0])

/* Name of a value type for messages. */
static const char *vtype_name(uint32_t t) { return t < N_VALUE_TYPES ? value_type_names[t] : "unknown"; }

/* Bytes of one fixed-size value; 0 for STRING, ARRAY and unknown types. */
static uint64_t vtype_size(uint32_t t) {
    switch (t) {
    case LM_GGUF_UINT8: case LM_GGUF_INT8: case LM_GGUF_BOOL: return 1;
    case LM_GGUF_UINT16: case LM_GGUF_INT16: return 2;
    case LM_GGUF_UINT32: case LM_GGUF_INT32: case LM_GGUF_FLOAT32: return 4;
    case LM_GGUF_UINT64: case LM_GGUF_INT64: case LM_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Integer value types, bool included. */
static int vtype_is_int(uint32_t t) {
    return t <= LM_GGUF_INT32 || t == LM_GGUF_BOOL || t == LM_GGUF_UINT64 || t == LM_GGUF_INT64;
}

/* Read a GGUF string (u64 length, then bytes) at p; validated at open. */
static lm_gguf_str str_at(const uint8_t *p) {
    lm_gguf_str s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

/* ------------------------------------------------------------------------ */
/* Name indexes (open addressing, FNV-1a)                                    */
/* ------------------------------------------------------------------------ */

/* FNV-1a over n bytes. */
static uint64_t hash_bytes(const char *s, uint64_t n) {
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Name of entry i of the key or tensor table. */
static lm_gguf_str kv_name(const lm_gguf *g, uint64_t i) { return g->kv[i].key; }
static lm_gguf_str tensor_name(const lm_gguf *g, uint64_t i) {
    lm_gguf_str s = {strlen(g->tensors[i].name), g->tensors[i].name};
    return s;
}

typedef lm_gguf_str (*name_fn)(const lm_gguf *g, uint64_t i);

/* Slot holding name (s, n), or the empty slot where it would go. */
static uint64_t idx_probe(const lm_gguf *g, const uint64_t *slots, uint64_t mask, name_fn get, const char *s,
                          uint64_t n) {
    uint64_t at = hash_bytes(s, n) & mask;
    for (;;) {
        if (!slots[at]) return at;
        lm_gguf_str e = get(g, slots[at] - 1);
        if (e.len == n && memcmp(e.ptr, s, n) == 0) return at;
        at = (at + 1) & mask;
    }
}

/* Entry index of a name, or -1. */
static int64_t idx_find(const lm_gguf *g, const uint64_t *slots, uint64_t mask, name_fn get, const char *s,
                        uint64_t n) {
    if (!slots) return -1;
    uint64_t at = idx_probe(g, slots, mask, get, s, n);
    return slots[at] ? (int64_t)(slots[at] - 1) : -1;
}

/* Bytes of the table idx_insert would allocate next (for messages). */
static size_t idx_next_bytes(const uint64_t *slots, uint64_t mask) {
    return (size_t)(slots ? (mask + 1) * 2 : 16) * sizeof *slots;
}

/* Insert entry `count` (entries 0..count-1 already in), growing the table to
 * keep it at most half full. Returns -1 on allocation failure, else the index
 * of an earlier entry with the same name (not inserted), else `count`. */
static int64_t idx_insert(const lm_gguf *g, uint64_t **slots, uint64_t *mask, name_fn get, uint64_t count) {
    uint64_t cap = *slots ? *mask + 1 : 0;
    if ((count + 1) * 2 > cap) {
        uint64_t ncap = cap ? cap * 2 : 16;
        uint64_t *ns = lm_calloc(ncap, sizeof *ns);
        if (!ns) return -1;
        for (uint64_t i = 0; i < count; i++) {
            lm_gguf_str e = get(g, i);
            ns[idx_probe(g, ns, ncap - 1, get, e.ptr, e.len)] = i + 1;
        }
        lm_free(*slots);
        *slots = ns;
        *mask = ncap - 1;
    }
    lm_gguf_str e = get(g, count);
    uint64_t at = idx_probe(g, *slots, *mask, get, e.ptr, e.len);
    if ((*slots)[at]) return (int64_t)((*slots)[at] - 1);
    (*slots)[at] = count + 1;
    return (int64_t)count;
}

/* ------------------------------------------------------------------------ */
/* Bounded cursor                                                            */
/* ------------------------------------------------------------------------ */

typedef struct parser {
    const uint8_t *base; /* the mapping */
    uint64_t size;       /* file size */
    uint64_t off;        /* cursor */
    const char *path;
    lm_err *err;
    /* the item being parsed, for messages: "header", "key", "tensor" */
    const char *kind;
    uint64_t index;
    lm_gguf_str name; /* .ptr NULL until the item's name is read */
} parser;

/* Fail with "<path>: <item>: <message>" and the given code; corruption goes
 * through lm_corrupt_at with the caller's line (see perr below). */
LM_PRINTF(4, 5)
static int perr_at(parser *p, int code, int line, const char *fmt, ...) {
    char msg[700], item[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->name.ptr && p->name.len)
        snprintf(item, sizeof item, "%s '%.*s'", p->kind, (int)(p->name.len > 200 ? 200 : p->name.len), p->name.ptr);
    else if (strcmp(p->kind, "key") != 0 && strcmp(p->kind, "tensor") != 0)
        snprintf(item, sizeof item, "%s", p->kind);
    else
        snprintf(item, sizeof item, "%s #%llu", p->kind, (unsigned long long)p->index);
    if (code == LM_ECORRUPT) return lm_corrupt_at(p->err, line, "%s: %s: %s", p->path, item, msg);
    return lm_fail(p->err, code, "%s: %s: %s", p->path, item, msg);
}
#define perr(p, ...) perr_at((p), LM_ECORRUPT, __LINE__, __VA_ARGS__)
#define perr_code(p, code, ...) perr_at((p), (code), __LINE__, __VA_ARGS__)

/* Bytes left after the cursor. */
static inline uint64_t left(const parser *p) { return p->size - p->off; }

/* Claim n bytes at the cursor: *out points at them, the cursor moves past. */
static int take(parser *p, uint64_t n, const char *what, const uint8_t **out) {
    if (n > left(p))
        return perr(p, "truncated: %s needs %llu bytes at offset %llu, file size %llu", what, (unsigned long long)n,
                    (unsigned long long)p->off, (unsigned long long)p->size);
    *out = p->base + p->off;
    p->off += n;
    return LM_OK;
}

/* A little-endian u32 at the cursor. */
static int take_u32(parser *p, const char *what, uint32_t *v) {
    const uint8_t *q = NULL;
    int rc = take(p, 4, what, &q);
    if (!rc) memcpy(v, q, 4);
    return rc;
}

/* A little-endian u64 at the cursor. */
static int take_u64(parser *p, const char *what, uint64_t *v) {
    const uint8_t *q = NULL;
    int rc = take(p, 8, what, &q);
    if (!rc) memcpy(v, q, 8);
    return rc;
}

/* A string: u64 length, then that many bytes, all inside the file. */
static int take_str(parser *p, const char *what, lm_gguf_str *s) {
    int rc = take_u64(p, what, &s->len);
    if (rc) return rc;
    if (s->len > left(p))
        return perr(p, "%s: length %llu at offset %llu runs past end of file (%llu bytes left)", what,
                    (unsigned long long)s->len, (unsigned long long)(p->off - 8), (unsigned long long)left(p));
    s->ptr = (const char *)p->base + p->off;
    p->off += s->len;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Stages                                                                    */
/* ------------------------------------------------------------------------ */

/* Stage 1: magic, version and the two counts. */
static int parse_header(parser *p, lm_gguf *g) {
    p->kind = "header";
    if (p->size < 4)
        return LM_CORRUPT(p->err, "%s: not a GGUF file (%llu bytes, too short for the magic)", p->path,
                          (unsigned long long)p->size);
    if (memcmp(p->base, "GGUF", 4) != 0)
        return LM_CORRUPT(p->err, "%s: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", p->path,
                          p->base[0], p->base[1], p->base[2], p->base[3]);
    p->off = 4;
    int rc = take_u32(p, "version", &g->version);
    if (rc) return rc;
    if (g->version == 1)
        return lm_fail(p->err, LM_EUNSUPPORTED, "%s: GGUF version 1 is not supported (expected 2 or 3)", p->path);
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return lm_fail(p->err, LM_EUNSUPPORTED, "%s: big-endian GGUF (version %u byte-swapped) is not supported",
                       p->path, g->version >> 24);
    if (g->version != 2 && g->version != 3)
        return lm_fail(p->err, LM_EUNSUPPORTED, "%s: GGUF version %u is not supported (expected 2 or 3)", p->path,
                       g->version);
    if ((rc = take_u64(p, "tensor count", &g->n_tensors)) || (rc = take_u64(p, "key-value count", &g->n_kv)))
        return rc;
    /* each key-value and tensor info takes some bytes: a count the rest of
     * the file cannot hold is corrupt, caught before any allocation */
    if (g->n_kv > left(p) / MIN_KV_BYTES)
        return perr(p, "key-value count %llu is impossible: the %llu bytes left hold at most %llu",
                    (unsigned long long)g->n_kv, (unsigned long long)left(p),
                    (unsigned long long)(left(p) / MIN_KV_BYTES));
    if (g->n_tensors > (left(p) - g->n_kv * MIN_KV_BYTES) / MIN_TENSOR_BYTES)
        return perr(p, "tensor count %llu is impossible: the %llu bytes left after %llu key-values hold at most %llu",
                    (unsigned long long)g->n_tensors, (unsigned long long)left(p), (unsigned long long)g->n_kv,
                    (unsigned long long)((left(p) - g->n_kv * MIN_KV_BYTES) / MIN_TENSOR_BYTES));
    return LM_OK;
}

/* The value of one key-value (after its key). */
static int parse_value(parser *p, lm_gguf_kv *kv) {
    int rc = take_u32(p, "value type", &kv->type);
    if (rc) return rc;
    uint32_t et = kv->type; /* element type */
    kv->n = 1;
    if (kv->type == LM_GGUF_ARRAY) {
        if ((rc = take_u32(p, "array element type", &kv->arr_type))) return rc;
        et = kv->arr_type;
        if (et == LM_GGUF_ARRAY)
            return perr_code(p, LM_EUNSUPPORTED, "nested arrays are not supported");
        if (et >= N_VALUE_TYPES)
            return perr(p, "unknown array element type %u (expected 0..12)", et);
        if ((rc = take_u64(p, "array length", &kv->n))) return rc;
    } else if (et >= N_VALUE_TYPES) {
        return perr(p, "unknown value type %u (expected 0..12)", et);
    }
    kv->data = p->base + p->off;

    if (et != LM_GGUF_STRING) {
        uint64_t esize = vtype_size(et), bytes;
        if (lm_mul_overflow(kv->n, esize, &bytes) || bytes > left(p))
            return perr(p, "%s of %llu %s (%llu bytes each) runs past end of file: %llu bytes left at offset %llu",
                        kv->type == LM_GGUF_ARRAY ? "array" : "value", (unsigned long long)kv->n, vtype_name(et),
                        (unsigned long long)esize, (unsigned long long)left(p), (unsigned long long)p->off);
        p->off += bytes;
        return LM_OK;
    }
    if (kv->type == LM_GGUF_STRING) { /* data points at the length prefix */
        lm_gguf_str s;
        return take_str(p, "string value", &s);
    }
    /* array of strings: index every element (at least 8 bytes each) */
    if (kv->n > left(p) / 8)
        return perr(p, "array of %llu strings cannot fit in the %llu bytes left", (unsigned long long)kv->n,
                    (unsigned long long)left(p));
    if (kv->n == 0) return LM_OK;
    kv->strs = lm_malloc((size_t)kv->n * sizeof *kv->strs);
    if (!kv->strs) return lm_nomem(p->err, (size_t)kv->n * sizeof *kv->strs, "GGUF string array index");
    for (uint64_t i = 0; i < kv->n; i++) {
        kv->strs[i] = p->base + p->off;
        uint64_t len;
        if ((rc = take_u64(p, "string array element length", &len))) return rc;
        if (len > left(p))
            return perr(p, "string %llu of %llu: length %llu at offset %llu runs past end of file (%llu bytes left)",
                        (unsigned long long)i, (unsigned long long)kv->n, (unsigned long long)len,
                        (unsigned long long)(p->off - 8), (unsigned long long)left(p));
        p->off += len;
    }
    return LM_OK;
}

/* Grow an array of elements of size esz to hold at least n (doubling,
 * zeroing the new part). */
static int grow(void **arr, uint64_t *cap, uint64_t n, size_t esz, lm_err *err, const char *what) {
    if (n <= *cap) return LM_OK;
    uint64_t ncap = *cap ? *cap : 16;
    while (ncap < n) ncap *= 2;
    void *na = lm_realloc(*arr, (size_t)ncap * esz);
    if (!na) return lm_nomem(err, (size_t)ncap * esz, what);
    memset((char *)na + *cap * esz, 0, (size_t)(ncap - *cap) * esz);
    *arr = na;
    *cap = ncap;
    return LM_OK;
}

/* Stage 2: the key-values; then general.alignment. Arrays grow as entries are
 * read so that a lying count cannot make us allocate for it up front. */
static int parse_kvs(parser *p, lm_gguf *g) {
    const uint64_t n_kv = g->n_kv;
    uint64_t cap = 0;
    int rc;
    g->n_kv = 0; /* entries started so far: what lm_gguf_close frees */
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((rc = grow((void **)&g->kv, &cap, i + 1, sizeof *g->kv, p->err, "GGUF key-values"))) return rc;
        g->n_kv = i + 1;
        lm_gguf_kv *kv = &g->kv[i];
        p->kind = "key";
        p->index = i;
        p->name.ptr = NULL;
        if ((rc = take_str(p, "key name", &kv->key))) return rc;
        p->name = kv->key;
        int64_t other = idx_insert(g, &g->kv_slots, &g->kv_mask, kv_name, i);
        if (other < 0) return lm_nomem(p->err, idx_next_bytes(g->kv_slots, g->kv_mask), "GGUF key index");
        if ((uint64_t)other != i) return perr(p, "duplicate key (also key #%lld)", (long long)other);
        if ((rc = parse_value(p, kv))) return rc;
    }

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const lm_gguf_kv *a = lm_gguf_find(g, "general.alignment");
    if (a) {
        p->kind = "key";
        p->name = a->key;
        if (a->type == LM_GGUF_ARRAY || a->type == LM_GGUF_BOOL || !vtype_is_int(a->type))
            return perr(p, "has type %s, expected UINT32", vtype_name(a->type));
        int64_t v = lm_gguf_arr_int(a, 0);
        if (v <= 0 || (v & (v - 1)) != 0)
            return perr(p, "alignment %lld is not a power of two", (long long)v);
        g->alignment = (uint64_t)v;
    }
    return LM_OK;
}

/* One tensor info (stage 3); off receives its data offset. */
static int parse_tensor_info(parser *p, lm_gguf *g, uint64_t i, uint64_t *off) {
    lm_tensor *t = &g->tensors[i];
    lm_gguf_str name;
    int rc = take_str(p, "tensor name", &name);
    if (rc) return rc;
    p->name = name;
    if (name.len >= sizeof t->name)
        return perr(p, "name of %llu bytes is too long (at most %zu)", (unsigned long long)name.len,
                    sizeof t->name - 1);
    if (memchr(name.ptr, 0, name.len)) return perr(p, "name contains a NUL byte");
    memcpy(t->name, name.ptr, name.len);
    t->name[name.len] = 0;
    int64_t other = idx_insert(g, &g->t_slots, &g->t_mask, tensor_name, i);
    if (other < 0) return lm_nomem(p->err, idx_next_bytes(g->t_slots, g->t_mask), "GGUF tensor index");
    if ((uint64_t)other != i) return perr(p, "duplicate tensor name (also tensor #%lld)", (long long)other);

    uint32_t n_dims;
    if ((rc = take_u32(p, "n_dims", &n_dims))) return rc;
    if (n_dims < 1 || n_dims > 4) return perr(p, "n_dims %u (expected 1..4)", n_dims);
    uint64_t ne[4], nelem = 1;
    int overflow = 0;
    for (uint32_t j = 0; j < n_dims; j++) {
        if ((rc = take_u64(p, "dimension", &ne[j]))) return rc;
        if (ne[j] > (uint64_t)INT64_MAX)
            return perr(p, "ne[%u] = %llu is out of range", j, (unsigned long long)ne[j]);
        overflow |= lm_mul_overflow(nelem, ne[j], &nelem) || nelem > (uint64_t)INT64_MAX;
    }
    if (overflow) {
        char dims[120];
        int len = 0;
        for (uint32_t j = 0; j < n_dims; j++)
            len += snprintf(dims + len, sizeof dims - (size_t)len, "%s%llu", j ? ", " : "", (unsigned long long)ne[j]);
        return perr(p, "element count overflows: ne = [%s]", dims);
    }

    uint32_t type;
    if ((rc = take_u32(p, "ggml type", &type))) return rc;
    if (!ggml_type_known(type))
        return perr_code(p, LM_EUNSUPPORTED, "unknown ggml type %u (a newer GGUF than layermap knows?)", type);
    const uint32_t blck = ggml_types[type].blck;
    if (ne[0] % blck)
        return perr(p, "ne[0] = %llu is not a multiple of the %s block size %u", (unsigned long long)ne[0],
                    ggml_types[type].name, blck);
    uint64_t nbytes;
    if (lm_mul_overflow(nelem / blck, ggml_types[type].bytes, &nbytes) || nbytes > SIZE_MAX)
        return perr(p, "data size overflows (%llu elements of %s)", (unsigned long long)nelem, ggml_types[type].name);
    if ((rc = take_u64(p, "data offset", off))) return rc;
    if (*off % g->alignment)
        return perr(p, "data offset %llu is not a multiple of the alignment %llu", (unsigned long long)*off,
                    (unsigned long long)g->alignment);

    t->dtype = ggml_types[type].dtype >= 0 ? (lm_dtype)ggml_types[type].dtype : LM_DT_COUNT;
    snprintf(t->file_type, sizeof t->file_type, "%s", ggml_types[type].name);
    t->ndim = (int)n_dims;
    for (uint32_t j = 0; j < n_dims; j++) t->shape[n_dims - 1 - j] = (int64_t)ne[j];
    t->nbytes = (size_t)nbytes;
    t->qk_perm_heads = 0;
    return LM_OK;
}

/* A tensor's data extent, for the overlap check. */
typedef struct span {
    uint64_t start, end, idx;
} span;

/* qsort order of spans: by start, then end. */
static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Stages 3 and 4: tensor infos, then the data section and each tensor's
 * place in it. */
static int parse_tensors(parser *p, lm_gguf *g) {
    const uint64_t n = g->n_tensors;
    uint64_t cap = 0, off_cap = 0, *offs = NULL;
    span *spans = NULL;
    int rc = LM_OK;
    g->n_tensors = 0;
    for (uint64_t i = 0; i < n; i++) {
        if ((rc = grow((void **)&g->tensors, &cap, i + 1, sizeof *g->tensors, p->err, "GGUF tensors")) ||
            (rc = grow((void **)&offs, &off_cap, i + 1, sizeof *offs, p->err, "GGUF tensor offsets")))
            goto done;
        g->n_tensors = i + 1;
        p->kind = "tensor";
        p->index = i;
        p->name.ptr = NULL;
        if ((rc = parse_tensor_info(p, g, i, &offs[i]))) goto done;
    }

    /* the data section starts at the next multiple of the alignment */
    p->kind = "data section";
    p->name.ptr = NULL;
    uint64_t pad = (g->alignment - p->off % g->alignment) % g->alignment;
    if (lm_add_overflow(p->off, pad, &g->data_offset)) {
        rc = perr(p, "data section offset overflows");
        goto done;
    }
    if (n == 0) goto done;
    if (g->data_offset > p->size) {
        rc = perr(p, "data section starts at %llu (tensor infos end at %llu, alignment %llu), past end of file "
                     "(size %llu)",
                  (unsigned long long)g->data_offset, (unsigned long long)p->off, (unsigned long long)g->alignment,
                  (unsigned long long)p->size);
        goto done;
    }

    spans = lm_malloc((size_t)n * sizeof *spans);
    if (!spans) {
        rc = lm_nomem(p->err, (size_t)n * sizeof *spans, "GGUF tensor extents");
        goto done;
    }
    p->kind = "tensor";
    for (uint64_t i = 0; i < n; i++) {
        lm_tensor *t = &g->tensors[i];
        p->name.ptr = t->name;
        p->name.len = strlen(t->name);
        uint64_t start, end;
        if (lm_add_overflow(g->data_offset, offs[i], &start) || lm_add_overflow(start, t->nbytes, &end)) {
            rc = perr(p, "data offset %llu (+ %zu bytes) past end of file (size %llu)", (unsigned long long)offs[i],
                      t->nbytes, (unsigned long long)p->size);
            goto done;
        }
        if (end > p->size) {
            rc = perr(p, "data [%llu..%llu) past end of file (size %llu)", (unsigned long long)start,
                      (unsigned long long)end, (unsigned long long)p->size);
            goto done;
        }
        t->data = p->base + start;
        t->path = g->file.path;
        spans[i] = (span){start, end, i};
    }
    qsort(spans, (size_t)n, sizeof *spans, span_cmp);
    const span *prev = NULL;
    for (uint64_t i = 0; i < n; i++) {
        if (spans[i].start == spans[i].end) continue; /* empty tensors overlap nothing */
        if (prev && spans[i].start < prev->end) {
            const lm_tensor *a = &g->tensors[prev->idx], *b = &g->tensors[spans[i].idx];
            p->name.ptr = b->name;
            p->name.len = strlen(b->name);
            rc = perr(p, "data [%llu..%llu) overlaps tensor '%s' [%llu..%llu)", (unsigned long long)spans[i].start,
                      (unsigned long long)spans[i].end, a->name, (unsigned long long)prev->start,
                      (unsigned long long)prev->end);
            goto done;
        }
        prev = &spans[i];
    }
done:
    lm_free(offs);
    lm_free(spans);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Open / close                                                              */
/* ------------------------------------------------------------------------ */

/* Map and validate a GGUF file; on error *out is NULL and err says why. */
int lm_gguf_open(lm_gguf **out, const char *path, lm_err *err) {
    *out = NULL;
    lm_gguf *g = lm_calloc(1, sizeof *g);
    if (!g) return lm_nomem(err, sizeof *g, "GGUF reader");
    int rc = lm_file_map(&g->file, path, err);
    if (rc) goto fail;
    parser p = {.base = g->file.data, .size = g->file.size, .path = g->file.path, .err = err, .kind = "header"};
    if ((rc = parse_header(&p, g)) || (rc = parse_kvs(&p, g)) || (rc = parse_tensors(&p, g))) goto fail;
    *out = g;
    return LM_OK;
fail:
    lm_gguf_close(g);
    return rc;
}

/* Unmap the file and free everything (NULL is fine). */
void lm_gguf_close(lm_gguf *g) {
    if (!g) return;
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) lm_free(g->kv[i].strs);
    lm_free(g->kv);
    lm_free(g->tensors);
    lm_free(g->kv_slots);
    lm_free(g->t_slots);
    lm_file_unmap(&g->file);
    lm_free(g);
}

/* ------------------------------------------------------------------------ */
/* Lookup and typed getters                                                  */
/* ------------------------------------------------------------------------ */

/* The key-value named key, or NULL. */
const lm_gguf_kv *lm_gguf_find(const lm_gguf *g, const char *key) {
    int64_t i = idx_find(g, g->kv_slots, g->kv_mask, kv_name, key, strlen(key));
    return i < 0 ? NULL : &g->kv[i];
}

/* The tensor named name, or NULL. */
const lm_tensor *lm_gguf_find_tensor(const lm_gguf *g, const char *name) {
    int64_t i = idx_find(g, g->t_slots, g->t_mask, tensor_name, name, strlen(name));
    return i < 0 ? NULL : &g->tensors[i];
}

/* Element type of a key-value (the array's element type for arrays). */
static uint32_t elem_type(const lm_gguf_kv *kv) { return kv->type == LM_GGUF_ARRAY ? kv->arr_type : kv->type; }

/* Fail for a key present with the wrong type. */
static int wrong_type(const lm_gguf *g, const lm_gguf_kv *kv, const char *want, lm_err *err) {
    if (kv->type == LM_GGUF_ARRAY)
        return LM_CORRUPT(err, "%s: key '%.*s' is an array of %s, expected %s", g->file.path, (int)kv->key.len,
                          kv->key.ptr, vtype_name(kv->arr_type), want);
    return LM_CORRUPT(err, "%s: key '%.*s' has type %s, expected %s", g->file.path, (int)kv->key.len, kv->key.ptr,
                      vtype_name(kv->type), want);
}

/* An integer (any integer type or bool) as int64. */
int lm_gguf_get_int(const lm_gguf *g, const char *key, int64_t *out, lm_err *err) {
    const lm_gguf_kv *kv = lm_gguf_find(g, key);
    if (!kv) return -1;
    if (kv->type == LM_GGUF_ARRAY || !vtype_is_int(kv->type)) return wrong_type(g, kv, "an integer", err);
    if (kv->type == LM_GGUF_UINT64) {
        uint64_t v;
        memcpy(&v, kv->data, 8);
        if (v > (uint64_t)INT64_MAX)
            return LM_CORRUPT(err, "%s: key '%s': value %llu does not fit in int64", g->file.path, key,
                              (unsigned long long)v);
    }
    *out = lm_gguf_arr_int(kv, 0);
    return LM_OK;
}

/* A float32/float64 or integer as double. */
int lm_gguf_get_float(const lm_gguf *g, const char *key, double *out, lm_err *err) {
    const lm_gguf_kv *kv = lm_gguf_find(g, key);
    if (!kv) return -1;
    if (kv->type == LM_GGUF_ARRAY || kv->type == LM_GGUF_STRING || kv->type == LM_GGUF_BOOL)
        return wrong_type(g, kv, "a number", err);
    *out = lm_gguf_arr_float(kv, 0);
    return LM_OK;
}

/* A string (pointing into the mapping). */
int lm_gguf_get_str(const lm_gguf *g, const char *key, lm_gguf_str *out, lm_err *err) {
    const lm_gguf_kv *kv = lm_gguf_find(g, key);
    if (!kv) return -1;
    if (kv->type != LM_GGUF_STRING) return wrong_type(g, kv, "STRING", err);
    *out = str_at(kv->data);
    return LM_OK;
}

/* Copy s into buf as a C string, truncated to size-1 bytes. */
void lm_gguf_str_copy(lm_gguf_str s, char *buf, size_t size) {
    if (!size) return;
    size_t n = s.len < size - 1 ? (size_t)s.len : size - 1;
    if (n) memcpy(buf, s.ptr, n);
    buf[n] = 0;
}

/* Element i of a string array (or the value of a string key when i == 0);
 * an empty string for anything else. */
lm_gguf_str lm_gguf_arr_str(const lm_gguf_kv *kv, uint64_t i) {
    lm_gguf_str none = {0, ""};
    if (kv->type == LM_GGUF_STRING) return i == 0 ? str_at(kv->data) : none;
    if (kv->type == LM_GGUF_ARRAY && kv->arr_type == LM_GGUF_STRING && i < kv->n) return str_at(kv->strs[i]);
    return none;
}

/* Numeric element i (of an array, or of a scalar when i == 0) as double; 0
 * for strings or i out of range. */
double lm_gguf_arr_float(const lm_gguf_kv *kv, uint64_t i) {
    const uint32_t t = elem_type(kv);
    if (i >= kv->n || t == LM_GGUF_STRING || t >= N_VALUE_TYPES) return 0;
    const uint8_t *q = kv->data + i * vtype_size(t);
    switch (t) {
    case LM_GGUF_FLOAT32: {
        float f;
        memcpy(&f, q, 4);
        return f;
    }
    case LM_GGUF_FLOAT64: {
        double d;
        memcpy(&d, q, 8);
        return d;
    }
    case LM_GGUF_UINT64: {
        uint64_t u;
        memcpy(&u, q, 8);
        return (double)u;
    }
    default: return (double)lm_gguf_arr_int(kv, i);
    }
}

/* Numeric element i as int64: integers as stored (UINT64 above INT64_MAX
 * saturates), bools 0/1, floats truncated toward zero when in range, else 0. */
int64_t lm_gguf_arr_int(const lm_gguf_kv *kv, uint64_t i) {
    const uint32_t t = elem_type(kv);
    if (i >= kv->n || t == LM_GGUF_STRING || t >= N_VALUE_TYPES) return 0;
    const uint8_t *q = kv->data + i * vtype_size(t);
    switch (t) {
    case LM_GGUF_UINT8: return q[0];
    case LM_GGUF_INT8: return (int8_t)q[0];
    case LM_GGUF_BOOL: return q[0] != 0;
    case LM_GGUF_UINT16: { uint16_t v; memcpy(&v, q, 2); return v; }
    case LM_GGUF_INT16: { int16_t v; memcpy(&v, q, 2); return v; }
    case LM_GGUF_UINT32: { uint32_t v; memcpy(&v, q, 4); return v; }
    case LM_GGUF_INT32: { int32_t v; memcpy(&v, q, 4); return v; }
    case LM_GGUF_UINT64: { uint64_t v; memcpy(&v, q, 8); return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v; }
    case LM_GGUF_INT64: { int64_t v; memcpy(&v, q, 8); return v; }
    default: {
        double d = lm_gguf_arr_float(kv, i);
        return d > -9.2e18 && d < 9.2e18 ? (int64_t)d : 0; /* NaN fails both tests */
    }
    }
}
