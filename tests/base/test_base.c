/*
 * test_base.c -- the base layer: the UTF-8 validator against a reference
 * built from the definition (every 1-, 2- and 3-byte sequence, every code
 * point, the edges of the 4-byte forms), the shape formatter, error messages,
 * the allocator's fault injection, files and atomic output, small helpers.
 */
#include "test.h"
#include "fault.h"

#include "base/base.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */
/* ------------------------------------------------------------------------ */

/* The reference: cp as UTF-8 by the definition's bit patterns (RFC 3629 §3),
 * written without the library's encoder. Returns the length. */
static int ref_encode(uint32_t cp, unsigned char out[4]) {
    if (cp <= 0x7f) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    int len = cp <= 0x7ff ? 2 : cp <= 0xffff ? 3 : 4;
    static const unsigned char lead[5] = {0, 0, 0xc0, 0xe0, 0xf0};
    for (int k = len - 1; k > 0; k--) {
        out[k] = (unsigned char)(0x80 | (cp & 0x3f));
        cp >>= 6;
    }
    out[0] = (unsigned char)(lead[len] | cp);
    return len;
}

/* Scalar values: every code point but the surrogates. */
static int is_scalar(uint32_t cp) { return cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff); }

/* The set of valid 2- and 3-byte sequences as bitmaps indexed by the bytes
 * read big-endian, filled by encoding every scalar value of that length.
 * What is not in a set is invalid: that is the definition of well-formed
 * UTF-8 (one encoding per scalar value, nothing else). */
static uint8_t valid2[1 << 16 >> 3], valid3[1 << 24 >> 3];
static void build_sets(void) {
    for (uint32_t cp = 0x80; cp <= 0xffff; cp++) {
        if (!is_scalar(cp)) continue;
        unsigned char u[4];
        int l = ref_encode(cp, u);
        uint32_t key = l == 2 ? (uint32_t)u[0] << 8 | u[1] : (uint32_t)u[0] << 16 | (uint32_t)u[1] << 8 | u[2];
        uint8_t *set = l == 2 ? valid2 : valid3;
        set[key >> 3] |= (uint8_t)(1u << (key & 7));
    }
}
static int in_set(const uint8_t *set, uint32_t key) { return set[key >> 3] >> (key & 7) & 1; }

/* What lm_utf8_char must say for s[0..n), n <= 3, from the sets: the length
 * of the valid character at the start, or 0. */
static size_t ref_char3(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    if (s[0] < 0x80) return 1;
    if (n >= 2 && in_set(valid2, (uint32_t)s[0] << 8 | s[1])) return 2;
    if (n >= 3 && in_set(valid3, (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2])) return 3;
    return 0;
}

/* Every 1- and 2-byte input, every 3-byte input, each in a buffer of exactly
 * its length (reads past it show under ASan). */
static void test_utf8_short(void) {
    build_sets();
    long bad1 = 0, bad2 = 0, bad3 = 0, n_valid2 = 0, n_valid3 = 0;
    unsigned char *b = malloc(3);
    for (unsigned x = 0; x < 256; x++) {
        b[0] = (unsigned char)x;
        size_t want = x < 0x80;
        if (lm_utf8_char((char *)b, 1) != want && bad1++ < 5) CHECK(0, "1 byte %02x", x);
    }
    for (unsigned x = 0; x < 1u << 16; x++) {
        b[0] = (unsigned char)(x >> 8), b[1] = (unsigned char)x;
        size_t got = lm_utf8_char((char *)b, 2), want = ref_char3(b, 2);
        n_valid2 += want == 2;
        if (got != want && bad2++ < 5) CHECK(0, "2 bytes %04x: got %zu want %zu", x, got, want);
    }
    for (unsigned x = 0; x < 1u << 24; x++) {
        b[0] = (unsigned char)(x >> 16), b[1] = (unsigned char)(x >> 8), b[2] = (unsigned char)x;
        size_t got = lm_utf8_char((char *)b, 3), want = ref_char3(b, 3);
        n_valid3 += want == 3;
        if (got != want && bad3++ < 5) CHECK(0, "3 bytes %06x: got %zu want %zu", x, got, want);
    }
    free(b);
    CHECK(bad1 == 0, "all 256 single bytes: %ld wrong", bad1);
    CHECK(bad2 == 0, "all 65536 byte pairs: %ld wrong", bad2);
    CHECK(bad3 == 0, "all 2^24 byte triples: %ld wrong", bad3);
    /* the sets are what the standard says they are */
    CHECK(n_valid2 == 0x800 - 0x80, "valid 2-byte sequences: %ld", n_valid2);
    CHECK(n_valid3 == 0x10000 - 0x800 - 0x800, "valid 3-byte sequences: %ld (no surrogates)", n_valid3);
}

/* Every code point: scalar values round-trip through lm_utf8_char,
 * lm_utf8_decode and lm_utf8_encode; surrogates are refused; every valid
 * sequence cut short is refused. */
static void test_utf8_code_points(void) {
    long bad = 0, n = 0;
    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        unsigned char u[4], e[4];
        size_t l = (size_t)ref_encode(cp, u), dl = 0;
        if (!is_scalar(cp)) {
            if (lm_utf8_char((char *)u, l) != 0 && bad++ < 5) CHECK(0, "surrogate U+%04X accepted", cp);
            continue;
        }
        n++;
        int ok = lm_utf8_char((char *)u, l) == l && lm_utf8_decode((char *)u, &dl) == cp && dl == l &&
                 lm_utf8_encode(cp, (char *)e) == l && !memcmp(e, u, l) && lm_utf8_lead_len(u[0]) == l;
        for (size_t cut = 1; ok && cut < l; cut++) ok = lm_utf8_char((char *)u, cut) == 0;
        if (!ok && bad++ < 5) CHECK(0, "U+%04X", cp);
    }
    CHECK(bad == 0 && n == 0x110000 - 0x800, "%ld scalar values round-trip, %ld wrong", n, bad);
}

/* The edges of the 4-byte forms: every lead byte F0..FF with every second
 * byte and the edge values of the third and fourth, against decoding by the
 * definition (four bytes 11110xxx 10xxxxxx 10xxxxxx 10xxxxxx giving a code
 * point in U+10000..U+10FFFF). */
static void test_utf8_four(void) {
    static const unsigned char edge[] = {0x00, 0x3f, 0x7f, 0x80, 0x81, 0xbe, 0xbf, 0xc0, 0xf0, 0xff};
    const int ne = (int)sizeof edge;
    long bad = 0, valid = 0;
    unsigned char *b = malloc(4);
    for (unsigned b0 = 0xf0; b0 <= 0xff; b0++)
        for (unsigned b1 = 0; b1 < 256; b1++)
            for (int i = 0; i < ne; i++)
                for (int j = 0; j < ne; j++) {
                    b[0] = (unsigned char)b0, b[1] = (unsigned char)b1, b[2] = edge[i], b[3] = edge[j];
                    int cont = (b[1] & 0xc0) == 0x80 && (b[2] & 0xc0) == 0x80 && (b[3] & 0xc0) == 0x80;
                    uint32_t cp = (uint32_t)(b0 & 0x07) << 18 | (uint32_t)(b[1] & 0x3f) << 12 |
                                  (uint32_t)(b[2] & 0x3f) << 6 | (b[3] & 0x3f);
                    size_t want = (b0 & 0xf8) == 0xf0 && cont && cp >= 0x10000 && cp <= 0x10ffff ? 4 : 0;
                    size_t got = lm_utf8_char((char *)b, 4);
                    valid += want == 4;
                    if (got != want && bad++ < 5)
                        CHECK(0, "4 bytes %02x %02x %02x %02x: got %zu want %zu", b[0], b[1], b[2], b[3], got, want);
                }
    free(b);
    CHECK(bad == 0, "4-byte edges: %ld wrong", bad);
    CHECK(valid > 0, "some 4-byte sequences are valid (%ld)", valid);
    /* the named edges */
    CHECK(lm_utf8_char("\xf0\x90\x80\x80", 4) == 4, "U+10000, the first");
    CHECK(lm_utf8_char("\xf4\x8f\xbf\xbf", 4) == 4, "U+10FFFF, the last");
    CHECK(lm_utf8_char("\xf4\x90\x80\x80", 4) == 0, "U+110000 refused");
    CHECK(lm_utf8_char("\xf0\x8f\xbf\xbf", 4) == 0, "overlong U+FFFF refused");
    CHECK(lm_utf8_char("\xf5\x80\x80\x80", 4) == 0, "lead F5 refused");
    CHECK(lm_utf8_char("\xef\xbf\xbf", 3) == 3 && lm_utf8_char("\xee\x80\x80", 3) == 3, "U+FFFF, U+E000");
    CHECK(lm_utf8_char("\xed\x9f\xbf", 3) == 3 && lm_utf8_char("\xed\xa0\x80", 3) == 0, "U+D7FF yes, U+D800 no");
    CHECK(lm_utf8_char("\xe0\x9f\xbf", 3) == 0 && lm_utf8_char("\xe0\xa0\x80", 3) == 3, "overlong U+07FF, U+0800");
    CHECK(lm_utf8_char("\xc1\xbf", 2) == 0 && lm_utf8_char("\xc2\x80", 2) == 2, "overlong U+007F, U+0080");
}

/* lm_utf8_check's offsets and lm_utf8_len's stop at the NUL. */
static void test_utf8_strings(void) {
    static const struct {
        const char *s;
        size_t len, off;
    } cases[] = {
        {"", 0, 0},
        {"plain ascii", 11, 11},
        {"caf\xc3\xa9", 5, 5},
        {"abc\xc3\x28", 5, 3},            /* bad continuation */
        {"\xf0\x9f\x98\x80 ok", 7, 7},    /* emoji */
        {"a\xed\xa0\x80", 4, 1},          /* surrogate */
        {"ok\xf4\x90\x80\x80", 6, 2},     /* above U+10FFFF */
        {"\xc0\xaf", 2, 0},               /* overlong '/' */
        {"x\xe0\x80\xaf", 4, 1},          /* overlong, 3 bytes */
        {"xy\xf0\x80\x80\xaf", 6, 2},     /* overlong, 4 bytes */
        {"ab\xe2\x82", 4, 2},             /* cut short at the end */
        {"\x80", 1, 0},                   /* lone continuation */
        {"a\0b", 3, 3},                   /* NUL is a character */
        {"\xe2\x82\xac\xe2\x82\xac\xff", 7, 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t got = lm_utf8_check(cases[i].s, cases[i].len);
        CHECK(got == cases[i].off, "lm_utf8_check case %zu: %zu, want %zu", i, got, cases[i].off);
    }
    /* NUL-terminated, in buffers of exactly their size */
    static const struct {
        const char *s;
        int len;
    } z[] = {{"a", 1}, {"\xc3\xa9", 2}, {"\xc3", 0}, {"\xe2\x82", 0}, {"\xf0\x9f\x98", 0},
             {"\xf0\x9f\x98\x80", 4}, {"\xed\xbf\xbf", 0}, {"\xff", 0}};
    for (size_t i = 0; i < sizeof z / sizeof z[0]; i++) {
        size_t n = strlen(z[i].s) + 1;
        char *b = malloc(n);
        memcpy(b, z[i].s, n);
        CHECK(lm_utf8_len((unsigned char *)b) == z[i].len, "lm_utf8_len case %zu", i);
        free(b);
    }
}

/* ------------------------------------------------------------------------ */
/* Shapes, errors, allocation                                                */
/* ------------------------------------------------------------------------ */

static void test_fmt_shape(void) {
    char b[64];
    const int64_t s[4] = {576, 1536, -1, INT64_MAX};
    CHECK(!strcmp(lm_fmt_shape(b, sizeof b, s, 0), "[]"), "0-D: %s", b);
    CHECK(!strcmp(lm_fmt_shape(b, sizeof b, s, 1), "[576]"), "1-D: %s", b);
    CHECK(!strcmp(lm_fmt_shape(b, sizeof b, s, 2), "[576, 1536]"), "2-D: %s", b);
    CHECK(!strcmp(lm_fmt_shape(b, sizeof b, s, 4), "[576, 1536, -1, 9223372036854775807]"), "4-D: %s", b);
    CHECK(lm_fmt_shape(b, sizeof b, s, 2) == b, "returns buf");
    /* cut short: NUL-terminated inside the buffer, a prefix of the whole */
    for (size_t n = 1; n <= 12; n++) {
        char small[12];
        memset(small, 'x', sizeof small);
        lm_fmt_shape(small, n, s, 2);
        CHECK(memchr(small, 0, n) && !strncmp(small, "[576, 1536]", strlen(small)), "n=%zu: '%s'", n, small);
    }
}

static void test_errors(void) {
    lm_err err = {0};
    CHECK(lm_fail(&err, LM_EIO, "%s: line one\nline two", "f.txt") == LM_EIO && err.code == LM_EIO, "code");
    CHECK(!strcmp(err.msg, "f.txt: line one line two"), "one line: '%s'", err.msg);
    CHECK(lm_fail(NULL, LM_EARG, "x") == LM_EARG, "no err: code still returned");
    CHECK(LM_CORRUPT(&err, "%s: bad", "g.gguf") == LM_ECORRUPT && !strncmp(err.msg, "g.gguf: bad", 11), "%s",
          err.msg);
    CHECK(lm_nomem(&err, 123, "rows") == LM_ENOMEM && !strcmp(err.msg, "out of memory (123 bytes for rows)"), "%s",
          err.msg);
    const int codes[] = {LM_OK,   LM_EIO,    LM_ECORRUPT,  LM_EUNSUPPORTED, LM_ENOMEM,
                         LM_EARG, LM_ESHAPE, LM_EENCODING, LM_EINTERNAL,    LM_ECANCELED};
    const int nc = (int)(sizeof codes / sizeof codes[0]);
    for (int i = 0; i < nc; i++) {
        CHECK(strcmp(lm_strerror(codes[i]), "unknown error") != 0, "code %d has a text", codes[i]);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(lm_strerror(codes[i]), lm_strerror(codes[j])), "codes %d, %d: same text", codes[i], codes[j]);
    }
    CHECK(!strcmp(lm_strerror(12345), "unknown error"), "unknown code");
}

/* The fault is persistent: the Nth allocation and every later one fail. */
static void test_alloc(void) {
    lm_fault_arm(2);
    void *a = lm_malloc(8), *b = lm_calloc(2, 4), *c = lm_realloc(NULL, 8);
    char *d = lm_strdup("x");
    CHECK(a && !b && !c && !d && lm_fault_hits() == 3, "arm(2): first ok, then all fail (hits %ld)", lm_fault_hits());
    lm_fault_arm(0);
    CHECK(lm_fault_hits() == 0, "arm resets the hits");
    b = lm_malloc(0);
    CHECK(b != NULL, "a zero size is one byte, not NULL");
    d = lm_strndup("abcdef", 3);
    CHECK(d && !strcmp(d, "abc"), "strndup");
    lm_free(a);
    lm_free(b);
    lm_free(d);
    uint64_t r;
    CHECK(lm_mul_overflow(UINT64_MAX / 2 + 1, 2, &r) && !lm_mul_overflow(1u << 31, 1u << 31, &r) && r == 1ull << 62,
          "mul overflow");
    CHECK(lm_add_overflow(UINT64_MAX, 1, &r) && !lm_add_overflow(1, 2, &r) && r == 3, "add overflow");
}

/* ------------------------------------------------------------------------ */
/* Files and atomic output                                                   */
/* ------------------------------------------------------------------------ */

/* scratch_dir()/name in buf. */
static const char *spath(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", scratch_dir(), name);
    return buf;
}

/* Files in the scratch directory whose name holds ".tmp.". */
static int temp_files(void) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '\\.tmp\\.' > /dev/null", scratch_dir());
    return system(cmd) == 0;
}

/* Atomic write of "hello\n" to the path ctx (fault-injection run): no file
 * and no temp file after a failure. */
static int fault_atomic(void *ctx, lm_err *err, const char **why) {
    unlink(ctx);
    lm_atomic a;
    int rc = lm_atomic_open(&a, ctx, err);
    if (rc == LM_OK) {
        fputs("hello\n", a.f);
        rc = lm_atomic_commit(&a, err);
    }
    if (rc != LM_OK && (access(ctx, F_OK) == 0 || temp_files())) *why = "a file after a failure";
    return rc;
}

/* Read the file ctx whole (fault-injection run): "hello\n". */
static int fault_read(void *ctx, lm_err *err, const char **why) {
    char *t = NULL;
    size_t n = 0;
    int rc = lm_file_read_all(ctx, &t, &n, err);
    if (rc != LM_OK && t) *why = "a buffer after a failure";
    if (rc == LM_OK && (n != 6 || strcmp(t, "hello\n"))) *why = "wrong contents";
    lm_free(t);
    return rc;
}

static void test_files(void) {
    char p[1024], q[1024];
    lm_err err = {0};
    spath(p, sizeof p, "a.txt");
    fault_sweep("atomic write", fault_atomic, p, 100);
    fault_sweep("read_all", fault_read, p, 100);
    /* abort leaves the old file as it was and no temp file */
    lm_atomic a;
    CHECK_OK(lm_atomic_open(&a, p, &err), &err);
    fputs("half", a.f);
    lm_atomic_abort(&a);
    CHECK(!temp_files(), "no temp file after abort");
    lm_file f;
    CHECK_OK(lm_file_map(&f, p, &err), &err);
    CHECK(f.size == 6 && f.data && !memcmp(f.data, "hello\n", 6) && !strcmp(f.path, p), "old file after abort");
    lm_release_pages(f.data, f.size);
    CHECK(f.data[0] == 'h', "readable after page release");
    lm_file_unmap(&f);
    CHECK(!f.data && !f.path, "unmap clears");
    /* an empty file maps to no data; a directory and a missing file are LM_EIO naming the path */
    FILE *e = fopen(spath(q, sizeof q, "empty"), "wb");
    if (e) fclose(e);
    CHECK(lm_file_map(&f, q, &err) == LM_OK && f.size == 0 && f.data == NULL, "empty file");
    lm_file_unmap(&f);
    CHECK(lm_file_map(&f, scratch_dir(), &err) == LM_EIO && strstr(err.msg, "not a regular file"), "dir: %s",
          err.msg);
    CHECK(lm_file_map(&f, spath(q, sizeof q, "missing"), &err) == LM_EIO && strstr(err.msg, q), "missing: %s",
          err.msg);
    CHECK(lm_atomic_open(&a, spath(q, sizeof q, "no/such/dir/x"), &err) == LM_EIO && strstr(err.msg, "cannot write"),
          "unwritable: %s", err.msg);
    unlink(p);
    unlink(spath(q, sizeof q, "empty"));
    rmdir(scratch_dir());
}

/* ------------------------------------------------------------------------ */
/* Small things                                                              */
/* ------------------------------------------------------------------------ */

static void test_misc(void) {
    CHECK(!strcmp(lm_basename("model.gguf"), "model.gguf"), "no dir");
    CHECK(!strcmp(lm_basename("a/b/model.gguf"), "model.gguf"), "dirs");
    CHECK(!strncmp(lm_basename("a/stories260K-hf/"), "stories260K-hf", 14), "trailing slash");
    CHECK(lm_ends_with("x.gguf", ".gguf") && !lm_ends_with("gguf", ".gguf"), "ends_with");
    CHECK(lm_num_threads(3) == 3 && lm_num_threads(0) >= 1, "threads");
    double t0 = lm_now(), t1 = lm_now();
    CHECK(t1 >= t0, "monotonic clock");
    /* half precision: named values, exact */
    CHECK(lm_f16_to_f32(0x3c00) == 1.0f && lm_f16_to_f32(0xc000) == -2.0f, "1, -2");
    CHECK(lm_f16_to_f32(0x7bff) == 65504.0f, "largest half");
    CHECK(lm_f16_to_f32(0x0001) == ldexpf(1.0f, -24) && lm_f16_to_f32(0x0400) == ldexpf(1.0f, -14), "subnormal");
    CHECK(isinf(lm_f16_to_f32(0x7c00)) && isnan(lm_f16_to_f32(0x7e00)), "inf, nan");
    CHECK(lm_f16_to_f32(0x8000) == 0.0f && signbit(lm_f16_to_f32(0x8000)), "-0");
}

int main(void) {
    test_utf8_short();
    test_utf8_code_points();
    test_utf8_four();
    test_utf8_strings();
    test_fmt_shape();
    test_errors();
    test_alloc();
    test_files();
    test_misc();
    return TEST_END();
}
