/*
 * test_gguf.c -- the GGUF reader: real models, every corruption the reader
 * checks for, truncation at every byte, allocation failure at every
 * allocation, a replayed fuzz corpus and a deterministic mutation fuzzer.
 *
 * Small files are built here, byte by byte, from a `spec` whose knobs each
 * break one rule of the format; they are written into scratch_dir().
 */
#include "test.h"

#include "model/dequant.h"
#include "format/gguf.h"

#include <dirent.h>
#include <stdint.h>

/* ---- byte buffer ----------------------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
} wbuf;

/* Append n bytes (aborts on allocation failure: test code). */
static void wb_put(wbuf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
/* Little-endian scalars and GGUF strings (u64 length + bytes). */
static void wb_u8(wbuf *b, uint8_t v) { wb_put(b, &v, 1); }
static void wb_u32(wbuf *b, uint32_t v) { wb_put(b, &v, 4); }
static void wb_u64(wbuf *b, uint64_t v) { wb_put(b, &v, 8); }
static void wb_f32(wbuf *b, float v) { wb_put(b, &v, 4); }
static void wb_strn(wbuf *b, const char *s, size_t n) {
    wb_u64(b, n);
    wb_put(b, s, n);
}
static void wb_str(wbuf *b, const char *s) { wb_strn(b, s, strlen(s)); }
/* Zero bytes up to a multiple of align. */
static void wb_pad(wbuf *b, uint64_t align) {
    while (b->n % align) wb_u8(b, 0);
}

/* Write bytes to scratch_dir()/name; returns the path (static buffer). */
static const char *write_file(const char *name, const void *p, size_t n) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", scratch_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
    return path;
}

/* ---- the small test file ----------------------------------------------------- */

/* A valid GGUF v3 with 6 key-values and 2 tensors:
 *   a.weight  F32  ne = [32, 2]  (PyTorch shape (2, 32)), values i * 0.5
 *   b.weight  Q8_0 ne = [64, 2]  (2, 64), d = 1/4 (f16 0x3400), q = j - 16
 * Each knob breaks one rule; zero means "as valid". */
typedef struct spec {
    uint32_t version;      /* 0: 3 */
    const char *magic;     /* NULL: "GGUF" */
    uint64_t n_kv_force;   /* written as n_kv */
    uint64_t n_t_force;    /* written as n_tensors */
    int dup_key;           /* an extra key-value repeating general.name */
    int dup_tensor;        /* b.weight named a.weight */
    int nested_array;      /* tokens: an array of arrays */
    uint32_t bad_vtype;    /* general.name gets this value type */
    int str_past_end;      /* general.name's length runs past the end */
    int tokens_past_end;   /* last token's length runs past the end */
    int tokens_huge_n;     /* tokens array claims 2^60 strings */
    int scores_huge_n;     /* scores array claims 2^61 floats */
    int n_dims_a;          /* 0: 2; else this n_dims for a.weight, ne all 1 */
    uint64_t ne0_b;        /* 0: 64; ne[0] of b.weight */
    uint32_t type_b;       /* 0: Q8_0 (8); ggml type of b.weight */
    int ne_overflow;       /* a.weight: n_dims 3, ne = 2^32 each */
    int ne_negative;       /* a.weight: ne[1] = 2^63 */
    uint64_t alignment;    /* 0: key absent (32) */
    int align_float;       /* general.alignment written as FLOAT32 */
    int off_b_set;         /* use off_b as b.weight's offset */
    uint64_t off_b;
    int long_name;         /* b.weight's name is 200 bytes */
    int nul_name;          /* b.weight's name contains a NUL */
} spec;

/* Bytes of ne0*rows elements of a ggml type as the builder lays them out. */
static uint64_t type_bytes(uint32_t type, uint64_t nelem) {
    switch (type) {
    case 0: return nelem * 4;
    case 8: return nelem / 32 * 34;
    case 16: return nelem / 256 * 66; /* IQ2_XXS */
    default: return nelem;
    }
}

/* Write the file described by s into b (b->n reset). */
static void build(wbuf *b, const spec *s) {
    const uint64_t align = s->alignment ? s->alignment : 32;
    const uint32_t type_b = s->type_b ? s->type_b : 8;
    const uint64_t ne0_b = s->ne0_b ? s->ne0_b : 64;
    const uint64_t bytes_a = 32 * 2 * 4, bytes_b = type_bytes(type_b, ne0_b * 2);
    const uint64_t off_b = s->off_b_set ? s->off_b : (bytes_a + align - 1) / align * align;
    const uint64_t n_kv = 5 + (s->alignment != 0) + (s->dup_key != 0);

    b->n = 0;
    wb_put(b, s->magic ? s->magic : "GGUF", 4);
    wb_u32(b, s->version ? s->version : 3);
    wb_u64(b, s->n_t_force ? s->n_t_force : 2);
    wb_u64(b, s->n_kv_force ? s->n_kv_force : n_kv);

    wb_str(b, "general.architecture");
    wb_u32(b, LM_GGUF_STRING);
    wb_str(b, "llama");

    wb_str(b, "general.name");
    wb_u32(b, s->bad_vtype ? s->bad_vtype : LM_GGUF_STRING);
    if (s->str_past_end) wb_u64(b, (uint64_t)1 << 40);
    else wb_str(b, "tiny");

    wb_str(b, "layermap.u32");
    wb_u32(b, LM_GGUF_UINT32);
    wb_u32(b, 7);

    wb_str(b, "tokenizer.ggml.tokens");
    wb_u32(b, LM_GGUF_ARRAY);
    if (s->nested_array) {
        wb_u32(b, LM_GGUF_ARRAY);
        wb_u64(b, 1);
        wb_u32(b, LM_GGUF_UINT8);
        wb_u64(b, 1);
        wb_u8(b, 0);
    } else {
        wb_u32(b, LM_GGUF_STRING);
        wb_u64(b, s->tokens_huge_n ? (uint64_t)1 << 60 : 3);
        wb_str(b, "<unk>");
        wb_str(b, "");
        if (s->tokens_past_end) wb_u64(b, (uint64_t)1 << 62);
        else wb_str(b, "\xe2\x96\x81the");
    }

    wb_str(b, "tokenizer.ggml.scores");
    wb_u32(b, LM_GGUF_ARRAY);
    wb_u32(b, LM_GGUF_FLOAT32);
    wb_u64(b, s->scores_huge_n ? (uint64_t)1 << 61 : 3);
    wb_f32(b, 0.0f);
    wb_f32(b, -1.5f);
    wb_f32(b, -2.25f);

    if (s->alignment) {
        wb_str(b, "general.alignment");
        if (s->align_float) {
            wb_u32(b, LM_GGUF_FLOAT32);
            wb_f32(b, (float)s->alignment);
        } else {
            wb_u32(b, LM_GGUF_UINT32);
            wb_u32(b, (uint32_t)s->alignment);
        }
    }
    if (s->dup_key) {
        wb_str(b, "general.name");
        wb_u32(b, LM_GGUF_STRING);
        wb_str(b, "again");
    }

    /* tensor infos */
    wb_str(b, "a.weight");
    if (s->ne_overflow) {
        wb_u32(b, 3);
        for (int i = 0; i < 3; i++) wb_u64(b, (uint64_t)1 << 32);
    } else if (s->ne_negative) {
        wb_u32(b, 2);
        wb_u64(b, 32);
        wb_u64(b, (uint64_t)1 << 63);
    } else if (s->n_dims_a) {
        wb_u32(b, (uint32_t)s->n_dims_a);
        for (int i = 0; i < s->n_dims_a; i++) wb_u64(b, i == 0 ? 64 : 1);
    } else {
        wb_u32(b, 2);
        wb_u64(b, 32);
        wb_u64(b, 2);
    }
    wb_u32(b, 0);
    wb_u64(b, 0);

    if (s->long_name) {
        char name[201];
        memset(name, 'x', 200);
        name[200] = 0;
        wb_str(b, name);
    } else if (s->nul_name) {
        wb_strn(b, "b.w\0ight", 8);
    } else {
        wb_str(b, s->dup_tensor ? "a.weight" : "b.weight");
    }
    wb_u32(b, 2);
    wb_u64(b, ne0_b);
    wb_u64(b, 2);
    wb_u32(b, type_b);
    wb_u64(b, off_b);

    /* data */
    wb_pad(b, align);
    size_t data = b->n;
    for (int i = 0; i < 64; i++) wb_f32(b, (float)i * 0.5f);
    if (off_b > 4096) return; /* "past end" cases: no data for b.weight */
    while (b->n < data + off_b) wb_u8(b, 0);
    if (off_b < bytes_a) b->n = data + off_b; /* overlapping: b's bytes overwrite a's tail */
    for (uint64_t o = 0; o < bytes_b && o < 4096; o++) {
        if (type_b == 8) {
            uint64_t j = o % 34;
            wb_u8(b, j == 0 ? 0x00 : j == 1 ? 0x34 : (uint8_t)(int8_t)((int)j - 2 - 16));
        } else {
            wb_u8(b, (uint8_t)o);
        }
    }
}

/* Open the file built from s; returns the code, err filled. */
static int open_spec(const spec *s, const char *name, lm_err *err) {
    wbuf b = {0};
    build(&b, s);
    const char *path = write_file(name, b.p, b.n);
    free(b.p);
    lm_gguf *g = NULL;
    int rc = lm_gguf_open(&g, path, err);
    CHECK((rc == LM_OK) == (g != NULL), "%s: *out set iff success", name);
    lm_gguf_close(g);
    return rc;
}

/* ---- the valid small file ------------------------------------------------------ */

/* The built file as is: header, getters, shapes, values; alignments 1 and 64. */
static void test_small_valid(void) {
    spec s = {0};
    wbuf b = {0};
    build(&b, &s);
    const char *path = write_file("valid.gguf", b.p, b.n);
    lm_gguf *g = NULL;
    lm_err err = {0};
    CHECK_OK(lm_gguf_open(&g, path, &err), &err);
    if (g) {
        CHECK(g->version == 3 && g->n_kv == 5 && g->n_tensors == 2 && g->alignment == 32, "header fields");
        const lm_tensor *a = lm_gguf_find_tensor(g, "a.weight"), *w = lm_gguf_find_tensor(g, "b.weight");
        CHECK(a && w, "both tensors found");
        CHECK(lm_gguf_find_tensor(g, "c.weight") == NULL && lm_gguf_find_tensor(g, "a.weigh") == NULL,
              "absent names not found");
        if (a && w) {
            CHECK(a->dtype == LM_DT_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 32, "a.weight shape");
            CHECK(w->dtype == LM_DT_Q8_0 && w->shape[0] == 2 && w->shape[1] == 64 && w->nbytes == 136,
                  "b.weight shape/nbytes");
            CHECK(strcmp(w->file_type, "Q8_0") == 0 && w->qk_perm_heads == 0, "b.weight file type");
            CHECK(a->path && strcmp(a->path, path) == 0, "tensor path");
            CHECK(w->data == g->file.data + g->data_offset + 256 && g->data_offset % 32 == 0, "data pointers");
            float out[128];
            CHECK_OK(lm_tensor_read_rows(a, 0, 2, out, &err), &err);
            CHECK(out[0] == 0.0f && out[63] == 31.5f, "a.weight values");
            CHECK_OK(lm_tensor_read_rows(w, 1, 1, out, &err), &err);
            CHECK(out[0] == -4.0f && out[31] == 3.75f && out[32] == -4.0f, "b.weight values %g %g", out[0], out[31]);
        }
        const lm_gguf_kv *tok = lm_gguf_find(g, "tokenizer.ggml.tokens");
        CHECK(tok && tok->type == LM_GGUF_ARRAY && tok->arr_type == LM_GGUF_STRING && tok->n == 3, "tokens kv");
        if (tok) {
            lm_gguf_str t0 = lm_gguf_arr_str(tok, 0), t1 = lm_gguf_arr_str(tok, 1), t2 = lm_gguf_arr_str(tok, 2);
            CHECK(t0.len == 5 && memcmp(t0.ptr, "<unk>", 5) == 0, "token 0");
            CHECK(t1.len == 0, "token 1 empty");
            CHECK(t2.len == 6 && memcmp(t2.ptr, "\xe2\x96\x81the", 6) == 0, "token 2");
            CHECK(lm_gguf_arr_str(tok, 3).len == 0, "out-of-range element is empty");
        }
        const lm_gguf_kv *sc = lm_gguf_find(g, "tokenizer.ggml.scores");
        CHECK(sc && lm_gguf_arr_float(sc, 2) == -2.25 && lm_gguf_arr_int(sc, 1) == -1, "scores");
        int64_t v = 0;
        CHECK(lm_gguf_get_int(g, "layermap.u32", &v, &err) == LM_OK && v == 7, "u32 key");
        double d = 0;
        CHECK(lm_gguf_get_float(g, "layermap.u32", &d, &err) == LM_OK && d == 7.0, "u32 as float");
        lm_gguf_str str;
        CHECK(lm_gguf_get_str(g, "general.name", &str, &err) == LM_OK && str.len == 4, "name");
        char buf[3];
        lm_gguf_str_copy(str, buf, sizeof buf);
        CHECK(strcmp(buf, "ti") == 0, "str_copy truncates: %s", buf);
        CHECK(lm_gguf_get_int(g, "nope", &v, &err) == -1, "missing key -> -1");
        CHECK(lm_gguf_get_int(g, "tokenizer.ggml.scores", &v, &err) == LM_ECORRUPT, "array as int");
        CHECK(strstr(err.msg, "tokenizer.ggml.scores") && strstr(err.msg, "FLOAT32"), "message: %s", err.msg);
        lm_gguf_close(g);
    }

    /* alignment 1: tensors at odd-looking addresses still read correctly */
    s.alignment = 1;
    build(&b, &s);
    path = write_file("align1.gguf", b.p, b.n);
    CHECK_OK(lm_gguf_open(&g, path, &err), &err);
    if (g) {
        float out[128];
        CHECK(g->alignment == 1, "alignment 1");
        CHECK_OK(lm_tensor_read_rows(lm_gguf_find_tensor(g, "a.weight"), 0, 2, out, &err), &err);
        CHECK(out[5] == 2.5f, "a.weight with alignment 1");
        CHECK_OK(lm_tensor_read_rows(lm_gguf_find_tensor(g, "b.weight"), 0, 2, out, &err), &err);
        CHECK(out[64] == -4.0f, "b.weight with alignment 1");
        lm_gguf_close(g);
    }
    s.alignment = 64;
    CHECK(open_spec(&s, "align64.gguf", &err) == LM_OK, "alignment 64: %s", err.msg);
    s.alignment = 0;
    s.version = 2; /* v2 and v3 share the little-endian layout */
    CHECK(open_spec(&s, "v2.gguf", &err) == LM_OK, "version 2: %s", err.msg);
    free(b.p);
}

/* ---- every corruption ------------------------------------------------------- */

typedef struct bad_case {
    const char *name;
    spec s;
    int code;
    const char *msg1, *msg2; /* substrings the message must contain */
} bad_case;

/* One file per broken rule: the code and the message (file, item, values). */
static void test_corrupt(void) {
    const bad_case cases[] = {
        {"magic", {.magic = "GGML"}, LM_ECORRUPT, "not a GGUF file", "47 47 4d 4c"},
        {"version 1", {.version = 1}, LM_EUNSUPPORTED, "version 1", "expected 2 or 3"},
        {"version 99", {.version = 99}, LM_EUNSUPPORTED, "version 99", "expected 2 or 3"},
        {"big-endian", {.version = 0x03000000}, LM_EUNSUPPORTED, "big-endian", NULL},
        {"huge n_kv", {.n_kv_force = (uint64_t)1 << 40}, LM_ECORRUPT, "key-value count 1099511627776", "impossible"},
        {"huge n_kv max", {.n_kv_force = UINT64_MAX}, LM_ECORRUPT, "impossible", NULL},
        {"huge n_tensors", {.n_t_force = UINT64_MAX}, LM_ECORRUPT, "tensor count", "impossible"},
        {"n_tensors too big", {.n_t_force = 3}, LM_ECORRUPT, "tensor #2", NULL},
        {"string past end", {.str_past_end = 1}, LM_ECORRUPT, "key 'general.name'", "runs past end of file"},
        {"token past end", {.tokens_past_end = 1}, LM_ECORRUPT, "key 'tokenizer.ggml.tokens'", "string 2 of 3"},
        {"tokens count", {.tokens_huge_n = 1}, LM_ECORRUPT, "tokenizer.ggml.tokens", "cannot fit"},
        {"scores count", {.scores_huge_n = 1}, LM_ECORRUPT, "tokenizer.ggml.scores", "runs past end"},
        {"duplicate key", {.dup_key = 1}, LM_ECORRUPT, "key 'general.name'", "duplicate key (also key #1)"},
        {"duplicate tensor", {.dup_tensor = 1}, LM_ECORRUPT, "tensor 'a.weight'", "duplicate tensor name"},
        {"nested array", {.nested_array = 1}, LM_EUNSUPPORTED, "tokenizer.ggml.tokens", "nested arrays"},
        {"value type 13", {.bad_vtype = 13}, LM_ECORRUPT, "key 'general.name'", "unknown value type 13"},
        {"value type huge", {.bad_vtype = 0xdeadbeef}, LM_ECORRUPT, "unknown value type", NULL},
        {"n_dims 5", {.n_dims_a = 5}, LM_ECORRUPT, "tensor 'a.weight'", "n_dims 5 (expected 1..4)"},
        {"ne[0] not whole blocks", {.ne0_b = 48}, LM_ECORRUPT, "tensor 'b.weight'",
         "ne[0] = 48 is not a multiple of the Q8_0 block size 32"},
        {"ne overflow", {.ne_overflow = 1}, LM_ECORRUPT, "tensor 'a.weight'", "element count overflows"},
        {"ne negative", {.ne_negative = 1}, LM_ECORRUPT, "tensor 'a.weight'", "out of range"},
        {"misaligned offset", {.off_b_set = 1, .off_b = 260}, LM_ECORRUPT, "tensor 'b.weight'",
         "not a multiple of the alignment 32"},
        {"overlap", {.off_b_set = 1, .off_b = 224}, LM_ECORRUPT, "tensor 'b.weight'", "overlaps tensor 'a.weight'"},
        {"past end", {.off_b_set = 1, .off_b = 1 << 20}, LM_ECORRUPT, "tensor 'b.weight': data [",
         "past end of file (size"},
        {"offset overflow", {.off_b_set = 1, .off_b = UINT64_MAX - 31}, LM_ECORRUPT, "tensor 'b.weight'",
         "past end of file"},
        {"alignment 24", {.alignment = 24}, LM_ECORRUPT, "general.alignment", "24 is not a power of two"},
        {"alignment float", {.alignment = 32, .align_float = 1}, LM_ECORRUPT, "general.alignment",
         "FLOAT32, expected UINT32"},
        {"long name", {.long_name = 1}, LM_ECORRUPT, "name of 200 bytes is too long", NULL},
        {"NUL in name", {.nul_name = 1}, LM_ECORRUPT, "NUL", NULL},
        {"unknown ggml type", {.type_b = 77}, LM_EUNSUPPORTED, "tensor 'b.weight'", "unknown ggml type 77"},
        {"removed ggml type", {.type_b = 4}, LM_EUNSUPPORTED, "unknown ggml type 4", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bad_case c = cases[i];
        lm_err err = {0};
        int rc = open_spec(&c.s, "bad.gguf", &err);
        CHECK(rc == c.code, "%s: code %d, want %d (%s)", c.name, rc, c.code, err.msg);
        if (rc != LM_OK) {
            CHECK(strstr(err.msg, "bad.gguf") != NULL, "%s: message names the file: %s", c.name, err.msg);
            CHECK(!c.msg1 || strstr(err.msg, c.msg1), "%s: message has '%s': %s", c.name, c.msg1, err.msg);
            CHECK(!c.msg2 || strstr(err.msg, c.msg2), "%s: message has '%s': %s", c.name, c.msg2, err.msg);
            CHECK(!strchr(err.msg, '\n'), "%s: one line", c.name);
        }
    }

    /* n_dims 0: patch the valid file's a.weight n_dims (ne[0] becomes the type) */
    spec s = {0};
    wbuf b = {0};
    build(&b, &s);
    uint8_t *p = memmem(b.p, b.n, "a.weight", 8);
    CHECK(p != NULL, "a.weight in the built file");
    if (p) {
        uint32_t zero = 0;
        memcpy(p + 8, &zero, 4);
        lm_gguf *g = NULL;
        lm_err err = {0};
        int rc = lm_gguf_open(&g, write_file("ndims0.gguf", b.p, b.n), &err);
        CHECK(rc == LM_ECORRUPT && strstr(err.msg, "n_dims 0 (expected 1..4)"), "n_dims 0: %d %s", rc, err.msg);
        lm_gguf_close(g);
    }

    /* a type ggml defines but layermap does not decode: opens, fails on read */
    s.type_b = 16; /* IQ2_XXS */
    s.ne0_b = 256;
    build(&b, &s);
    lm_gguf *g = NULL;
    lm_err err = {0};
    CHECK_OK(lm_gguf_open(&g, write_file("iq2.gguf", b.p, b.n), &err), &err);
    if (g) {
        const lm_tensor *t = lm_gguf_find_tensor(g, "b.weight");
        CHECK(t && t->dtype == LM_DT_COUNT && strcmp(t->file_type, "IQ2_XXS") == 0 && t->nbytes == 132,
              "IQ2_XXS tensor recorded");
        float out[512];
        int rc = t ? lm_tensor_read_rows(t, 0, 1, out, &err) : -1;
        CHECK(rc == LM_EUNSUPPORTED && strstr(err.msg, "unsupported type IQ2_XXS") && strstr(err.msg, "b.weight"),
              "read of IQ2_XXS: %d %s", rc, err.msg);
        lm_gguf_close(g);
    }
    CHECK(lm_gguf_dtype_from_ggml(16) == -1 && lm_gguf_dtype_from_ggml(12) == LM_DT_Q4_K &&
              lm_gguf_dtype_from_ggml(30) == LM_DT_BF16 && lm_gguf_dtype_from_ggml(4) == -1 &&
              lm_gguf_dtype_from_ggml(1000) == -1,
          "dtype_from_ggml");
    CHECK(strcmp(lm_gguf_ggml_type_name(23), "IQ4_XS") == 0 && strcmp(lm_gguf_ggml_type_name(99), "unknown") == 0,
          "ggml type names");

    /* empty file, missing file, a directory */
    int rc = lm_gguf_open(&g, write_file("empty.gguf", "", 0), &err);
    CHECK(rc == LM_ECORRUPT && g == NULL, "empty file: %d %s", rc, err.msg);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/does-not-exist.gguf", scratch_dir());
    rc = lm_gguf_open(&g, missing, &err);
    CHECK(rc == LM_EIO && strstr(err.msg, "does-not-exist.gguf"), "missing file: %d %s", rc, err.msg);
    rc = lm_gguf_open(&g, scratch_dir(), &err);
    CHECK(rc == LM_EIO, "directory: %d %s", rc, err.msg);
    free(b.p);
}

/* ---- truncation at every byte ------------------------------------------------ */

/* Every prefix of the valid file fails with LM_ECORRUPT (LM_EIO allowed). */
static void test_truncation(void) {
    spec s = {0};
    wbuf b = {0};
    build(&b, &s);
    int bad = 0;
    for (size_t len = 0; len < b.n; len++) {
        lm_gguf *g = NULL;
        lm_err err = {0};
        int rc = lm_gguf_open(&g, write_file("trunc.gguf", b.p, len), &err);
        if (!(rc == LM_ECORRUPT || rc == LM_EIO) || g != NULL) {
            if (bad++ < 5) CHECK(0, "truncated to %zu of %zu bytes: code %d (%s)", len, b.n, rc, err.msg);
            lm_gguf_close(g);
        }
    }
    CHECK(bad == 0, "%d of %zu truncations not rejected", bad, b.n);
    printf("gguf: %zu truncations rejected\n", b.n);
    free(b.p);
}

/* ---- allocation failure at every allocation ----------------------------------- */

/* Fail the 1st, 2nd, ... allocation of an open until one run succeeds: each
 * failing run must return LM_ENOMEM with *out NULL (leaks: LeakSanitizer). */
static void fault_loop(const char *path, const char *what) {
    long n;
    int bad = 0;
    for (n = 1; n < 10000; n++) {
        lm_gguf *g = NULL;
        lm_err err = {0};
        lm_fault_arm(n);
        int rc = lm_gguf_open(&g, path, &err);
        long hits = lm_fault_hits();
        lm_fault_arm(0);
        if (rc == LM_OK) {
            CHECK(hits == 0, "%s: success although allocation %ld failed", what, n);
            CHECK(g && g->n_tensors > 0, "%s: usable after fault loop", what);
            lm_gguf_close(g);
            break;
        }
        if (rc != LM_ENOMEM || g != NULL || hits == 0) {
            if (bad++ < 5) CHECK(0, "%s: fault at allocation %ld: code %d (%s)", what, n, rc, err.msg);
        }
        lm_gguf_close(g);
    }
    CHECK(bad == 0, "%s: %d fault runs misbehaved", what, bad);
    CHECK(n > 2 && n < 10000, "%s: fault loop ended after %ld allocations", what, n - 1);
    printf("gguf: %s opens with %ld allocations; failing each one gives LM_ENOMEM\n", what, n - 1);
}

/* ---- reading everything a file offers (for fuzzing) ------------------------------ */

/* Touch every key-value element and read every decodable tensor: overruns
 * show under AddressSanitizer. */
static void read_everything(const lm_gguf *g) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const lm_gguf_kv *kv = &g->kv[i];
        volatile uint64_t sink = 0;
        for (uint64_t j = 0; j < kv->n && j < 100000; j++) {
            lm_gguf_str s = lm_gguf_arr_str(kv, j);
            for (uint64_t k = 0; k < s.len; k++) sink += (uint8_t)s.ptr[k];
            sink += (uint64_t)lm_gguf_arr_int(kv, j);
            double d = lm_gguf_arr_float(kv, j);
            sink += d == d;
        }
        char key[64];
        lm_gguf_str_copy(kv->key, key, sizeof key);
        lm_err err;
        int64_t v;
        double d;
        lm_gguf_str s;
        (void)lm_gguf_get_int(g, key, &v, &err);
        (void)lm_gguf_get_float(g, key, &d, &err);
        (void)lm_gguf_get_str(g, key, &s, &err);
        (void)sink;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const lm_tensor *t = &g->tensors[i];
        CHECK(lm_gguf_find_tensor(g, t->name) == t, "tensor '%s' found by name", t->name);
        int64_t rows = lm_tensor_rows(t), cols = lm_tensor_cols(t);
        if (rows <= 0 || cols <= 0 || (double)rows * (double)cols > 1e7) continue;
        float *out = malloc((size_t)(rows * cols) * sizeof(float));
        lm_err err;
        int rc = lm_tensor_read_rows(t, 0, rows, out, &err);
        CHECK(rc == LM_OK || (rc == LM_EUNSUPPORTED && t->dtype == LM_DT_COUNT), "read '%s': %d %s", t->name, rc,
              err.msg);
        free(out);
    }
}

/* Open a file that may be anything: it must open or fail cleanly. */
static int open_any(const char *path, const char *what) {
    lm_gguf *g = NULL;
    lm_err err = {0};
    int rc = lm_gguf_open(&g, path, &err);
    CHECK(rc == LM_OK || rc == LM_ECORRUPT || rc == LM_EUNSUPPORTED, "%s: code %d (%s)", what, rc, err.msg);
    CHECK((rc == LM_OK) == (g != NULL), "%s: *out set iff success", what);
    if (rc != LM_OK) CHECK(err.msg[0] && !strchr(err.msg, '\n'), "%s: one-line message", what);
    if (g) read_everything(g);
    lm_gguf_close(g);
    return rc;
}

/* ---- fuzz corpus and mutation fuzzer ------------------------------------------- */

/* tests/data/<rel>, found from this source file (tests/LAYER/; tests run from the root). */
static const char *data_dir(char *buf, size_t n, const char *rel) {
    const char *f = __FILE__, *slash = strrchr(f, '/');
    snprintf(buf, n, "%.*s/../data/%s", slash ? (int)(slash - f) : 1, slash ? f : ".", rel);
    return buf;
}

/* Replay tests/data/fuzz/gguf/ (written by tests/ref/gen_gguf_fuzz.py). */
static void test_fuzz_corpus(void) {
    char dir[1024];
    data_dir(dir, sizeof dir, "fuzz/gguf");
    DIR *d = opendir(dir);
    CHECK(d != NULL, "fuzz corpus %s exists", dir);
    if (!d) return;
    int n = 0, ok = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ok += open_any(path, e->d_name) == LM_OK;
        n++;
    }
    closedir(d);
    CHECK(n >= 10, "fuzz corpus has %d files", n);
    printf("gguf: fuzz corpus: %d files replayed (%d open)\n", n, ok);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Deterministic mutations of the small valid file: random bytes, bit flips,
 * interesting 32/64-bit values at random places, truncation. */
static void test_mutations(int iters) {
    spec s = {0};
    wbuf b = {0};
    build(&b, &s);
    uint8_t *m = malloc(b.n);
    int ok = 0;
    static const uint64_t interesting[] = {0, 1, 2, 4, 5, 31, 32, 33, 255, 256, 0x7fffffff, 0x80000000,
                                           0xffffffff, (uint64_t)1 << 32, (uint64_t)INT64_MAX, UINT64_MAX};
    for (int it = 0; it < iters; it++) {
        memcpy(m, b.p, b.n);
        size_t len = b.n;
        int nmut = 1 + (int)(rnd() % 4);
        for (int k = 0; k < nmut; k++) {
            size_t at = (size_t)(rnd() % len);
            switch (rnd() % 5) {
            case 0: m[at] = (uint8_t)rnd(); break;
            case 1: m[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 2: {
                uint64_t v = interesting[rnd() % (sizeof interesting / sizeof interesting[0])];
                size_t w = rnd() % 2 ? 8 : 4;
                if (at + w <= len) memcpy(m + at, &v, w);
                break;
            }
            case 3: {
                uint64_t v = len - at + rnd() % 16 - 8; /* a length near "the rest of the file" */
                if (at + 8 <= len) memcpy(m + at, &v, 8);
                break;
            }
            default: len = at; break;
            }
            if (len == 0) break;
        }
        ok += open_any(write_file("mut.gguf", m, len), "mutation") == LM_OK;
    }
    printf("gguf: %d mutations, %d still open\n", iters, ok);
    free(m);
    free(b.p);
}

/* ---- the real models ------------------------------------------------------- */

/* stories260K.gguf and its Q8_0 twin: metadata, shapes, values, Q8_0 error
 * bound, and the fault loop on a real file. */
static void test_stories(void) {
    char path[1024], qpath[1024];
    model_path(path, sizeof path, "stories260K.gguf");
    model_path(qpath, sizeof qpath, "stories260K-q8_0.gguf");
    lm_gguf *g = NULL, *q = NULL;
    lm_err err = {0};
    CHECK_OK(lm_gguf_open(&g, path, &err), &err);
    CHECK_OK(lm_gguf_open(&q, qpath, &err), &err);
    if (!g || !q) {
        lm_gguf_close(g);
        lm_gguf_close(q);
        return;
    }
    CHECK(g->version == 3 && g->n_tensors == 47 && g->n_kv == 22 && g->alignment == 32, "stories header: v%u %llu %llu",
          g->version, (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv);
    lm_gguf_str s;
    char buf[64];
    CHECK_OK(lm_gguf_get_str(g, "general.architecture", &s, &err), &err);
    lm_gguf_str_copy(s, buf, sizeof buf);
    CHECK(strcmp(buf, "llama") == 0, "architecture %s", buf);
    int64_t v = 0;
    CHECK(lm_gguf_get_int(g, "llama.block_count", &v, &err) == LM_OK && v == 5, "block_count %lld", (long long)v);
    CHECK(lm_gguf_get_int(g, "llama.embedding_length", &v, &err) == LM_OK && v == 64, "dim");
    CHECK(lm_gguf_get_int(g, "llama.attention.head_count", &v, &err) == LM_OK && v == 8, "heads");
    CHECK(lm_gguf_get_int(g, "llama.attention.head_count_kv", &v, &err) == LM_OK && v == 4, "kv heads");
    CHECK(lm_gguf_get_int(g, "llama.feed_forward_length", &v, &err) == LM_OK && v == 172, "ffn");
    CHECK(lm_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v, &err) == LM_OK && v == 1, "add_bos (bool)");
    double d = 0;
    CHECK(lm_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &d, &err) == LM_OK && d == (double)1e-5f,
          "rms eps %g", d);
    CHECK(lm_gguf_get_float(g, "llama.rope.freq_base", &d, &err) == LM_OK && d == 10000.0, "rope base");
    CHECK(lm_gguf_get_int(g, "general.architecture", &v, &err) == LM_ECORRUPT, "string as int -> LM_ECORRUPT");
    CHECK(strstr(err.msg, "stories260K.gguf") && strstr(err.msg, "general.architecture") &&
              strstr(err.msg, "STRING"),
          "message: %s", err.msg);
    CHECK(lm_gguf_get_str(g, "llama.block_count", &s, &err) == LM_ECORRUPT, "int as string -> LM_ECORRUPT");
    CHECK(lm_gguf_get_float(g, "general.name", &d, &err) == LM_ECORRUPT, "string as float -> LM_ECORRUPT");
    CHECK(lm_gguf_get_int(g, "llama.no_such_key", &v, &err) == -1, "missing -> -1");

    const lm_gguf_kv *tok = lm_gguf_find(g, "tokenizer.ggml.tokens");
    CHECK(tok && tok->type == LM_GGUF_ARRAY && tok->arr_type == LM_GGUF_STRING && tok->n == 512, "tokens: 512 strings");
    if (tok) {
        lm_gguf_str t = lm_gguf_arr_str(tok, 0);
        CHECK(t.len == 5 && memcmp(t.ptr, "<unk>", 5) == 0, "token 0 <unk>");
        t = lm_gguf_arr_str(tok, 300);
        CHECK(t.len == 5 && memcmp(t.ptr, "\xe2\x96\x81ha", 5) == 0, "token 300 is '\\u2581ha'");
    }
    const lm_gguf_kv *sc = lm_gguf_find(g, "tokenizer.ggml.scores"), *tt = lm_gguf_find(g, "tokenizer.ggml.token_type");
    CHECK(sc && sc->n == 512 && lm_gguf_arr_float(sc, 300) == -41.0 && lm_gguf_arr_float(sc, 511) == -252.0,
          "scores");
    CHECK(tt && tt->arr_type == LM_GGUF_INT32 && lm_gguf_arr_int(tt, 0) == 2 && lm_gguf_arr_int(tt, 3) == 6 &&
              lm_gguf_arr_int(tt, 300) == 1,
          "token types");

    /* shapes in PyTorch order */
    const lm_tensor *emb = lm_gguf_find_tensor(g, "token_embd.weight"), *down = lm_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    const lm_tensor *k = lm_gguf_find_tensor(g, "blk.4.attn_k.weight"), *norm = lm_gguf_find_tensor(g, "output_norm.weight");
    CHECK(emb && emb->ndim == 2 && emb->shape[0] == 512 && emb->shape[1] == 64 && emb->dtype == LM_DT_F32, "token_embd (512, 64)");
    CHECK(down && down->shape[0] == 64 && down->shape[1] == 172, "ffn_down (64, 172)");
    CHECK(k && k->shape[0] == 32 && k->shape[1] == 64 && k->nbytes == 32 * 64 * 4, "attn_k (32, 64)");
    CHECK(norm && norm->ndim == 1 && norm->shape[0] == 64 && lm_tensor_rows(norm) == 1, "output_norm (64)");
    CHECK(lm_gguf_find_tensor(g, "output.weight") == NULL, "no output.weight (tied)");
    const lm_tensor *wq = lm_gguf_find_tensor(g, "blk.0.attn_q.weight");
    if (wq) {
        float row[64];
        CHECK_OK(lm_tensor_read_rows(wq, 0, 1, row, &err), &err);
        CHECK(row[0] == 0x1.6baa6cp-5f && row[2] == -0x1.24773cp-7f, "attn_q[0][0..2] %.9g %.9g", row[0], row[2]);
    }

    /* Q8_0 file: same tensors; Q8_0 ones within the quantization error bound
     * of each 32-block (d = amax/127 rounded to f16, q rounded to nearest),
     * F32 ones identical */
    CHECK(q->n_tensors == g->n_tensors, "same tensor count");
    int n_q8 = 0;
    double worst = 0;
    for (uint64_t i = 0; i < q->n_tensors; i++) {
        const lm_tensor *tq = &q->tensors[i], *tf = lm_gguf_find_tensor(g, tq->name);
        CHECK(tf != NULL, "%s in both files", tq->name);
        if (!tf) continue;
        CHECK(tq->ndim == tf->ndim && lm_tensor_nelem(tq) == lm_tensor_nelem(tf) &&
                  memcmp(tq->shape, tf->shape, sizeof tq->shape) == 0,
              "%s: same shape", tq->name);
        int64_t n = lm_tensor_nelem(tf);
        float *a = malloc((size_t)n * sizeof(float)), *bq = malloc((size_t)n * sizeof(float));
        CHECK_OK(lm_tensor_read_rows(tf, 0, lm_tensor_rows(tf), a, &err), &err);
        CHECK_OK(lm_tensor_read_rows(tq, 0, lm_tensor_rows(tq), bq, &err), &err);
        if (tq->dtype == LM_DT_F32) {
            CHECK(memcmp(a, bq, (size_t)n * sizeof(float)) == 0, "%s: F32 in both, identical", tq->name);
        } else {
            CHECK(tq->dtype == LM_DT_Q8_0, "%s is Q8_0 (%s)", tq->name, lm_dtype_name(tq->dtype));
            n_q8++;
            int64_t over = 0;
            for (int64_t b0 = 0; b0 < n; b0 += 32) {
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(a[b0 + j]));
                double bound = amax / 127.0 * (0.5 + 127.0 / 2048.0) * (1 + 1e-5);
                for (int j = 0; j < 32; j++) {
                    double e = fabs((double)a[b0 + j] - bq[b0 + j]);
                    if (e > bound) over++;
                    if (amax > 0 && e / (amax / 127.0) > worst) worst = e / (amax / 127.0);
                }
            }
            CHECK(over == 0, "%s: %lld values beyond the Q8_0 error bound", tq->name, (long long)over);
        }
        free(a);
        free(bq);
    }
    CHECK(n_q8 == 31, "31 Q8_0 tensors (%d)", n_q8);
    CHECK(worst > 0.1 && worst <= 0.5 + 127.0 / 2048.0, "largest Q8_0 error %.3f steps: real quantization", worst);
    printf("gguf: stories260K Q8_0 vs F32: %d tensors, largest error %.3f quantization steps\n", n_q8, worst);
    lm_gguf_close(g);
    lm_gguf_close(q);

    fault_loop(path, "stories260K.gguf");
}

int main(int argc, char **argv) {
    /* optional: number of mutations and a seed, for longer fuzzing runs */
    int iters = argc > 1 ? atoi(argv[1]) : 3000;
    if (argc > 2) rng_state = strtoull(argv[2], NULL, 0) | 1;
    test_small_valid();
    test_corrupt();
    test_truncation();
    {
        spec s = {0};
        wbuf b = {0};
        build(&b, &s);
        fault_loop(write_file("fault.gguf", b.p, b.n), "small file");
        free(b.p);
    }
    test_stories();
    test_fuzz_corpus();
    test_mutations(iters);
    return TEST_END();
}
