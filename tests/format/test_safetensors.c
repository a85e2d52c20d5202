/*
 * test_safetensors.c -- the safetensors reader (src/safetensors.c): a real
 * checkpoint, files the test writes, and every corruption safetensors.h
 * promises to catch, each of which must give the right code and a message
 * naming the file. Ends with a mutation fuzz and a fault-injection loop.
 */
#include "test.h"
#include "fault.h"

#include "format/safetensors.h"

#include <stdint.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Writing test files                                                        */
/* ------------------------------------------------------------------------ */

/* path = scratch_dir()/name */
static const char *scratch(char *buf, size_t n, const char *name) {
    if ((size_t)snprintf(buf, n, "%s/%s", scratch_dir(), name) >= n) {
        fprintf(stderr, "scratch path too long\n");
        exit(2);
    }
    return buf;
}

/* Write n bytes to path; exits on failure (a broken test machine). */
static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f)) {
        perror(path);
        exit(2);
    }
}

/* A safetensors file with header text hdr (its length written as hlen) and
 * ndata bytes of data. */
static void write_raw(const char *path, uint64_t hlen, const char *hdr, size_t ndata) {
    size_t hl = strlen(hdr), n = 8 + hl + ndata;
    uint8_t *b = calloc(1, n);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hl);
    for (size_t i = 0; i < ndata; i++) b[8 + hl + i] = (uint8_t)(i * 7 + 1);
    write_bytes(path, b, n);
    free(b);
}

/* Same, with the true header length. */
static void write_hdr(const char *path, const char *hdr, size_t ndata) { write_raw(path, strlen(hdr), hdr, ndata); }

/* Read a whole file into malloc'd memory. */
static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* A small valid file: three F32/F16/BF16 tensors, header padded with spaces
 * to a multiple of 8 as the reference writer does. Returns its path. */
static const char *small_valid(char *buf, size_t n) {
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[24,36]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"c\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[36,44]}}";
    char padded[512];
    size_t hl = strlen(hdr);
    memcpy(padded, hdr, hl);
    while (hl % 8) padded[hl++] = ' ';
    padded[hl] = 0;
    scratch(buf, n, "small.safetensors");
    write_hdr(buf, padded, 44);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */
/* ------------------------------------------------------------------------ */

/* Open path; the code must be want and (on failure) the message must contain
 * the file's path and, when given, the text part. */
static void expect_open(const char *path, int want, const char *part, const char *what) {
    lm_st_file *f = NULL;
    lm_err err = {0};
    int rc = lm_st_open(&f, path, &err);
    CHECK(rc == want, "%s: code %d, want %d (%s)", what, rc, want, rc ? err.msg : "opened");
    if (rc) {
        CHECK(f == NULL, "%s: *out not NULL on failure", what);
        CHECK(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", what, err.msg);
        if (part) CHECK(strstr(err.msg, part) != NULL, "%s: message lacks '%s': %s", what, part, err.msg);
        CHECK(!strchr(err.msg, '\n'), "%s: message is not one line", what);
    }
    lm_st_close(f);
}

/* The real checkpoint: names, shapes, dtypes, data pointers. */
static void test_real_file(void) {
    char p[512];
    model_path(p, sizeof p, "stories260K-hf/model.safetensors");
    lm_st_file *f;
    lm_err err = {0};
    CHECK_OK(lm_st_open(&f, p, &err), &err);
    if (!f) return;
    CHECK(f->n_tensors == 47, "stories260K has 47 tensors, got %d", f->n_tensors);
    for (int i = 1; i < f->n_tensors; i++)
        CHECK(strcmp(f->tensors[i - 1].name, f->tensors[i].name) < 0, "tensors sorted by name at %d", i);
    int found = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const lm_tensor *t = &f->tensors[i];
        CHECK(t->dtype == LM_DT_F32 && !strcmp(t->file_type, "F32"), "%s: dtype", t->name);
        CHECK(t->data >= f->file.data && t->data + t->nbytes <= f->file.data + f->file.size, "%s: inside file",
              t->name);
        CHECK(t->path == f->file.path, "%s: path", t->name);
        if (!strcmp(t->name, "model.layers.0.mlp.down_proj.weight")) {
            found = 1;
            CHECK(t->ndim == 2 && t->shape[0] == 64 && t->shape[1] == 172, "down_proj shape [%lld, %lld]",
                  (long long)t->shape[0], (long long)t->shape[1]);
            CHECK(t->nbytes == 64 * 172 * 4, "down_proj bytes %zu", t->nbytes);
        }
    }
    CHECK(found, "down_proj found");
    lm_st_close(f);

    /* the directory as a set */
    lm_st_set *s;
    model_path(p, sizeof p, "stories260K-hf");
    CHECK_OK(lm_st_set_open(&s, p, &err), &err);
    if (!s) return;
    CHECK(s->n_files == 1 && s->n_tensors == 47, "set: %d files, %d tensors", s->n_files, s->n_tensors);
    const lm_tensor *t = lm_st_set_find(s, "model.embed_tokens.weight");
    CHECK(t && t->shape[0] == 512 && t->shape[1] == 64, "embed found with shape");
    CHECK(lm_st_set_find(s, "model.embed_tokens") == NULL, "no prefix match");
    CHECK(lm_st_set_find(s, "zzz") == NULL && lm_st_set_find(s, "") == NULL, "absent names");
    lm_st_set_close(s);
}

/* A file the test writes: values read back through the views. */
static void test_small_file(void) {
    char p[512];
    small_valid(p, sizeof p);
    lm_st_file *f;
    lm_err err = {0};
    CHECK_OK(lm_st_open(&f, p, &err), &err);
    if (!f) return;
    CHECK(f->n_tensors == 3, "__metadata__ is not a tensor: %d", f->n_tensors);
    CHECK(!strcmp(f->tensors[0].name, "a") && !strcmp(f->tensors[2].name, "c"), "sorted");
    CHECK(f->tensors[0].dtype == LM_DT_F32 && f->tensors[1].dtype == LM_DT_F16 && f->tensors[2].dtype == LM_DT_BF16,
          "dtypes");
    CHECK(f->tensors[2].ndim == 1 && f->tensors[2].shape[0] == 4 && f->tensors[2].nbytes == 8, "1-D tensor");
    size_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | f->file.data[i];
    CHECK(hl % 8 == 0, "test file header padded to 8");
    CHECK(f->tensors[0].data == f->file.data + 8 + hl && f->tensors[1].data == f->tensors[0].data + 24,
          "data pointers follow the offsets");
    lm_st_close(f);

    /* scalars, empty tensors, a known dtype layermap does not decode */
    scratch(p, sizeof p, "edge.safetensors");
    write_hdr(p,
              "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
              "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
              "\"e2\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
              "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[4,20]}}  \n",
              20);
    CHECK_OK(lm_st_open(&f, p, &err), &err);
    if (!f) return;
    const lm_tensor *e = &f->tensors[0], *i64 = &f->tensors[2], *s = &f->tensors[3];
    CHECK(!strcmp(s->name, "s") && s->ndim == 1 && s->shape[0] == 1 && s->nbytes == 4, "scalar is a 1-D tensor of 1");
    CHECK(!strcmp(e->name, "e") && e->nbytes == 0 && e->shape[0] == 0, "empty tensor");
    CHECK(!strcmp(i64->name, "i") && i64->dtype == LM_DT_COUNT && !strcmp(i64->file_type, "I64") && i64->nbytes == 16,
          "I64 tensor kept with dtype LM_DT_COUNT, file_type I64");
    lm_st_close(f);
}

/* Every corruption of one file the header comment lists. */
static void test_corrupt(void) {
    char p[512];
    scratch(p, sizeof p, "bad.safetensors");
    const char *okent = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[1024];

    write_bytes(p, "", 0);
    expect_open(p, LM_ECORRUPT, "too short", "empty file");
    write_bytes(p, "\x10\x00\x00", 3);
    expect_open(p, LM_ECORRUPT, "too short", "3-byte file");
    write_raw(p, 1000, "{}", 0);
    expect_open(p, LM_ECORRUPT, "header length 1000", "header length past EOF");
    write_raw(p, UINT64_MAX, "{}", 0);
    expect_open(p, LM_ECORRUPT, "past the end", "header length 2^64-1");
    write_raw(p, 0, "", 8);
    expect_open(p, LM_ECORRUPT, "header length is 0", "zero header");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",", 8);
    expect_open(p, LM_ECORRUPT, "invalid JSON", "truncated JSON");
    write_hdr(p, "{\"a\" 1}", 8);
    expect_open(p, LM_ECORRUPT, "invalid JSON at byte 13", "bad JSON reports the file offset");
    snprintf(h, sizeof h, "{%s} x", okent);
    write_hdr(p, h, 8);
    expect_open(p, LM_ECORRUPT, "after the JSON", "trailing garbage");
    write_hdr(p, "[1,2]", 0);
    expect_open(p, LM_ECORRUPT, "not a JSON object", "array header");
    write_hdr(p, "{\"a\":3}", 0);
    expect_open(p, LM_ECORRUPT, "'a'", "entry not an object");
    write_hdr(p, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_open(p, LM_ECORRUPT, "dtype", "missing dtype");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8);
    expect_open(p, LM_ECORRUPT, "shape", "missing shape");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8);
    expect_open(p, LM_ECORRUPT, "data_offsets", "missing offsets");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8);
    expect_open(p, LM_ECORRUPT, "shape[0]", "negative dimension");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 10);
    expect_open(p, LM_ECORRUPT, "shape[0]", "fractional dimension");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2,1,1,2],\"data_offsets\":[0,16]}}", 16);
    expect_open(p, LM_EUNSUPPORTED, "5 dimensions", "5-D tensor");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8);
    expect_open(p, LM_ECORRUPT, "overflows", "shape product overflow");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", 8);
    expect_open(p, LM_ECORRUPT, "overflows", "byte size overflow");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    expect_open(p, LM_ECORRUPT, "needs 12 bytes", "shape product vs byte size");
    write_hdr(p, "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 8);
    expect_open(p, LM_ECORRUPT, "needs 8 bytes", "bf16 size mismatch");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8);
    expect_open(p, LM_ECORRUPT, "reversed", "reversed offsets");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8);
    expect_open(p, LM_ECORRUPT, "past the end of the data", "offsets past the file");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8);
    expect_open(p, LM_ECORRUPT, "data_offsets", "offset beyond 2^53");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8);
    expect_open(p, LM_ECORRUPT, "data_offsets", "one offset");
    write_hdr(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              12);
    expect_open(p, LM_ECORRUPT, "overlap", "overlapping tensors");
    write_hdr(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}",
              8);
    expect_open(p, LM_ECORRUPT, "overlap", "aliased tensors");
    write_hdr(p, "{\"a\":{\"dtype\":\"XYZ\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_open(p, LM_EUNSUPPORTED, "'XYZ'", "unknown dtype names it");
    write_hdr(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
              16);
    expect_open(p, LM_ECORRUPT, "twice", "duplicate name");
    char longname[300];
    memset(longname, 'n', 200);
    longname[200] = 0;
    snprintf(h, sizeof h, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", longname);
    write_hdr(p, h, 8);
    expect_open(p, LM_EUNSUPPORTED, "at most 127", "name too long");
    scratch(p, sizeof p, "does-not-exist.safetensors");
    expect_open(p, LM_EIO, "No such file", "missing file");

    /* the valid file cut at every length: always corruption, never a crash */
    char v[512];
    small_valid(v, sizeof v);
    size_t n;
    uint8_t *b = slurp(v, &n);
    int bad = 0;
    for (size_t cut = 0; cut < n; cut++) {
        write_bytes(p, b, cut);
        lm_st_file *f = NULL;
        lm_err err = {0};
        int rc = lm_st_open(&f, p, &err);
        if (rc != LM_ECORRUPT || !strstr(err.msg, p)) {
            if (!bad++) CHECK(0, "cut at %zu of %zu: code %d (%s)", cut, n, rc, err.msg);
        }
        lm_st_close(f);
    }
    CHECK(bad == 0, "%d truncations not reported as corruption", bad);
    free(b);

    /* the real checkpoint cut at a spread of offsets */
    char r[512];
    model_path(r, sizeof r, "stories260K-hf/model.safetensors");
    b = slurp(r, &n);
    CHECK(b != NULL, "read %s", r);
    if (b) {
        size_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
        size_t cuts[] = {0, 1, 7, 8, 9, 100, 8 + hl / 2, 8 + hl - 1, 8 + hl, 8 + hl + 1, n / 2, n - 4, n - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            scratch(p, sizeof p, "cut.safetensors");
            write_bytes(p, b, cuts[i]);
            char what[64];
            snprintf(what, sizeof what, "stories cut at %zu", cuts[i]);
            expect_open(p, LM_ECORRUPT, NULL, what);
        }
        free(b);
    }
}

/* Random byte changes in the header of a valid file: the reader must answer
 * OK, corrupt or unsupported, and never read out of bounds (ASan). */
static void test_fuzz(void) {
    char v[512], p[512];
    small_valid(v, sizeof v);
    scratch(p, sizeof p, "fuzz.safetensors");
    size_t n;
    uint8_t *b = slurp(v, &n);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int bad = 0, ok = 0;
    for (int it = 0; it < 3000; it++) {
        uint8_t *c = malloc(n);
        memcpy(c, b, n);
        int k = 1 + it % 4;
        for (int j = 0; j < k; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            size_t at = (size_t)(s >> 8) % (n < 200 ? n : 200);
            static const char pool[] = "{}[],:\"0123456789-.eE FBI \x00\xff";
            c[at] = (s & 1) ? (uint8_t)pool[(s >> 40) % (sizeof pool - 1)] : (uint8_t)(s >> 32);
        }
        write_bytes(p, c, n);
        free(c);
        lm_st_file *f = NULL;
        lm_err err = {0};
        int rc = lm_st_open(&f, p, &err);
        if (rc == LM_OK)
            ok++;
        else if ((rc != LM_ECORRUPT && rc != LM_EUNSUPPORTED) || !strstr(err.msg, p)) {
            if (!bad++) CHECK(0, "fuzz %d: code %d (%s)", it, rc, err.msg);
        }
        lm_st_close(f);
    }
    CHECK(bad == 0, "fuzz: %d bad answers", bad);
    CHECK(ok > 0 && ok < 3000, "fuzz: %d of 3000 mutations still open (some must, most must not)", ok);
    free(b);
}

/* ------------------------------------------------------------------------ */
/* Sharded directories                                                       */
/* ------------------------------------------------------------------------ */

/* dir/name = text */
static void write_text(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_bytes(p, text, strlen(text));
}

/* A fresh empty directory scratch_dir()/name. */
static const char *fresh_dir(char *buf, size_t n, const char *name) {
    scratch(buf, n, name);
    mkdir(buf, 0755);
    return buf;
}

/* Two shards: x (tensors a, b) and y (tensor c). */
static void write_two_shards(const char *d) {
    char p[1024];
    snprintf(p, sizeof p, "%s/x.safetensors", d);
    write_hdr(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
              12);
    snprintf(p, sizeof p, "%s/y.safetensors", d);
    write_hdr(p, "{\"c\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
}

/* Open dir as a set: code want, message containing part. */
static void expect_set(const char *dir, int want, const char *part, const char *what) {
    lm_st_set *s = NULL;
    lm_err err = {0};
    int rc = lm_st_set_open(&s, dir, &err);
    CHECK(rc == want, "%s: code %d, want %d (%s)", what, rc, want, rc ? err.msg : "opened");
    if (rc && part) CHECK(strstr(err.msg, part) != NULL, "%s: message lacks '%s': %s", what, part, err.msg);
    CHECK(rc == LM_OK || s == NULL, "%s: *out set on failure", what);
    lm_st_set_close(s);
}

static void test_sharded(void) {
    char d[512];
    fresh_dir(d, sizeof d, "shards-ok");
    write_two_shards(d);
    write_text(d, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":16},\"weight_map\":{\"a\":\"x.safetensors\",\"c\":\"y.safetensors\","
               "\"b\":\"x.safetensors\"}}");
    lm_st_set *s;
    lm_err err = {0};
    CHECK_OK(lm_st_set_open(&s, d, &err), &err);
    if (s) {
        CHECK(s->n_files == 2 && s->n_tensors == 3, "2 shards, 3 tensors: %d %d", s->n_files, s->n_tensors);
        const lm_tensor *c = lm_st_set_find(s, "c");
        CHECK(c && c->dtype == LM_DT_F16 && strstr(c->path, "y.safetensors"), "c found in y");
        CHECK(lm_st_set_find(s, "a") && lm_st_set_find(s, "b"), "a, b found");
        lm_st_set_close(s);
    }

    fresh_dir(d, sizeof d, "shards-missing");
    write_two_shards(d);
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"x.safetensors\",\"c\":\"z.safetensors\"}}");
    expect_set(d, LM_EIO, "z.safetensors", "index names a missing shard");

    fresh_dir(d, sizeof d, "shards-wrong");
    write_two_shards(d);
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"y.safetensors\",\"c\":\"y.safetensors\"}}");
    expect_set(d, LM_ECORRUPT, "'a' is listed in shard 'y.safetensors'", "tensor listed in the wrong shard");

    fresh_dir(d, sizeof d, "shards-dup");
    write_two_shards(d);
    char p[1024];
    snprintf(p, sizeof p, "%s/y.safetensors", d);
    write_hdr(p,
              "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"c\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}",
              8);
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"x.safetensors\",\"b\":\"y.safetensors\"}}");
    expect_set(d, LM_ECORRUPT, NULL, "tensor listed in the wrong shard (2)");
    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"x.safetensors\",\"b\":\"x.safetensors\","
               "\"c\":\"y.safetensors\"}}");
    expect_set(d, LM_ECORRUPT, "in both", "tensor in two shards");

    fresh_dir(d, sizeof d, "shards-badjson");
    write_two_shards(d);
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"x.safetensors\",");
    expect_set(d, LM_ECORRUPT, "model.safetensors.index.json", "bad index JSON");
    write_text(d, "model.safetensors.index.json", "{\"metadata\":{}}");
    expect_set(d, LM_ECORRUPT, "weight_map", "index without weight_map");
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    expect_set(d, LM_ECORRUPT, "not a file name", "shard outside the directory");
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":7}}");
    expect_set(d, LM_ECORRUPT, "'a'", "shard name not a string");

    fresh_dir(d, sizeof d, "shards-corrupt-shard");
    write_two_shards(d);
    snprintf(p, sizeof p, "%s/y.safetensors", d);
    write_hdr(p, "{\"c\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4);
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"x.safetensors\",\"c\":\"y.safetensors\"}}");
    expect_set(d, LM_ECORRUPT, "y.safetensors", "corrupt shard is named");

    fresh_dir(d, sizeof d, "empty-dir");
    expect_set(d, LM_EIO, "no model.safetensors", "empty directory");
}

/* ------------------------------------------------------------------------ */
/* Fault injection                                                           */
/* ------------------------------------------------------------------------ */

/* One lm_st_open of the file ctx (fault-injection run). */
static int fault_file(void *ctx, lm_err *err, const char **why) {
    lm_st_file *f = NULL;
    int rc = lm_st_open(&f, ctx, err);
    if (rc != LM_OK && f) *why = "file not NULL after a failure";
    lm_st_close(f);
    return rc;
}

/* One lm_st_set_open of the directory ctx (fault-injection run). */
static int fault_set(void *ctx, lm_err *err, const char **why) {
    lm_st_set *s = NULL;
    int rc = lm_st_set_open(&s, ctx, err);
    if (rc != LM_OK && s) *why = "set not NULL after a failure";
    lm_st_set_close(s);
    return rc;
}

/* Fail the 1st, 2nd, ... allocation of an open until one finishes without a
 * fault: each run must succeed or return LM_ENOMEM (no leak: make asan). */
static void test_faults(void) {
    char f1[512], d[512];
    model_path(f1, sizeof f1, "stories260K-hf/model.safetensors");
    scratch(d, sizeof d, "shards-ok");
    long runs = fault_sweep("st file", fault_file, f1, 10000);
    runs += fault_sweep("st set", fault_set, d, 10000);
    CHECK(runs > 10, "fault loop ran %ld times", runs);
}

/* nftw callback: remove one entry of the scratch tree. */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Remove the scratch directory and everything the test wrote there, unless
 * LM_KEEP_SCRATCH is set (to look at the files after a failure). */
static void remove_scratch(void) {
    const char *keep = getenv("LM_KEEP_SCRATCH");
    if (keep && *keep) {
        fprintf(stderr, "scratch files kept in %s\n", scratch_dir());
        return;
    }
    nftw(scratch_dir(), rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    test_real_file();
    test_small_file();
    test_corrupt();
    test_fuzz();
    test_sharded();
    test_faults();
    remove_scratch();
    return TEST_END();
}
