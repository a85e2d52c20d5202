/*
 * test_dequant.c -- every block format against gguf-py's dequantization, the
 * q/k un-permutation, the dtype helpers and lm_tensor_read_rows' errors.
 *
 * Reference data: tests/data/dequant/types.gguf, written by
 * tests/ref/gen_dequant_ref.py (gguf.quants.dequantize, a NumPy transcription
 * of ggml-quants.c). Every "<type>.<kind>" tensor sits next to "<...>.ref",
 * its expected F32 values; they must match bit for bit.
 *
 * Set LM_BENCH=1 to also print single-core dequantization throughput.
 */
#include "test.h"

#include "model/dequant.h"
#include "format/gguf.h"

#include <ctype.h>
#include <stdint.h>

/* tests/data/<rel>, found from this source file (tests/LAYER/; tests run from the root). */
static const char *data_path(char *buf, size_t n, const char *rel) {
    const char *f = __FILE__, *slash = strrchr(f, '/');
    snprintf(buf, n, "%.*s/../data/%s", slash ? (int)(slash - f) : 1, slash ? f : ".", rel);
    return buf;
}

/* The bit pattern of f. */
static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Distance in units in the last place between two finite floats. */
static int64_t ulp_diff(float a, float b) {
    int64_t x = (int32_t)bits_of(a), y = (int32_t)bits_of(b);
    if (x < 0) x = INT32_MIN - x;
    if (y < 0) y = INT32_MIN - y;
    return x > y ? x - y : y - x;
}

/* Compare n floats bit for bit; report the first mismatch and the largest
 * ulp distance. Returns the number of mismatches. */
static int64_t compare_bits(const char *what, const float *got, const float *want, int64_t n) {
    int64_t bad = 0, worst = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        if (bits_of(got[i]) == bits_of(want[i])) continue;
        if (first < 0) first = i;
        bad++;
        if (!isnan(got[i]) && !isnan(want[i])) {
            int64_t u = ulp_diff(got[i], want[i]);
            if (u > worst) worst = u;
        }
    }
    CHECK(bad == 0, "%s: %lld of %lld values differ (first at %lld: got %.9g [%08x] want %.9g [%08x]; max %lld ulp)",
          what, (long long)bad, (long long)n, (long long)first, first >= 0 ? got[first] : 0.0,
          first >= 0 ? bits_of(got[first]) : 0, first >= 0 ? want[first] : 0.0,
          first >= 0 ? bits_of(want[first]) : 0, (long long)worst);
    return bad;
}

/* Read a whole tensor to F32 (NULL on failure, with a failed check). */
static float *read_all(const lm_tensor *t) {
    lm_err err = {0};
    int64_t rows = lm_tensor_rows(t), cols = lm_tensor_cols(t);
    int64_t n = rows * cols;
    float *out = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    int rc = lm_tensor_read_rows(t, 0, rows, out, &err);
    CHECK(rc == LM_OK, "read %s: %s", t->name, err.msg);
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}

/* ---- dtype helpers -------------------------------------------------------- */

/* Names, block sizes and row sizes of every dtype, and invalid dtypes. */
static void test_dtype_helpers(void) {
    /* ggml-common.h: block elements and bytes */
    static const struct { lm_dtype t; const char *name; int blck; size_t bytes; } want[] = {
        {LM_DT_F32, "F32", 1, 4},         {LM_DT_F16, "F16", 1, 2},       {LM_DT_BF16, "BF16", 1, 2},
        {LM_DT_Q4_0, "Q4_0", 32, 18},     {LM_DT_Q4_1, "Q4_1", 32, 20},   {LM_DT_Q5_0, "Q5_0", 32, 22},
        {LM_DT_Q5_1, "Q5_1", 32, 24},     {LM_DT_Q8_0, "Q8_0", 32, 34},   {LM_DT_Q2_K, "Q2_K", 256, 84},
        {LM_DT_Q3_K, "Q3_K", 256, 110},   {LM_DT_Q4_K, "Q4_K", 256, 144}, {LM_DT_Q5_K, "Q5_K", 256, 176},
        {LM_DT_Q6_K, "Q6_K", 256, 210},   {LM_DT_IQ4_NL, "IQ4_NL", 32, 18}, {LM_DT_IQ4_XS, "IQ4_XS", 256, 136},
    };
    CHECK(sizeof want / sizeof want[0] == LM_DT_COUNT, "table covers %d dtypes", (int)LM_DT_COUNT);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK(strcmp(lm_dtype_name(want[i].t), want[i].name) == 0, "name of %d: %s", (int)want[i].t,
              lm_dtype_name(want[i].t));
        CHECK(lm_dtype_block_elems(want[i].t) == want[i].blck, "%s block elems %d", want[i].name,
              lm_dtype_block_elems(want[i].t));
        CHECK(lm_dtype_block_bytes(want[i].t) == want[i].bytes, "%s block bytes %zu", want[i].name,
              lm_dtype_block_bytes(want[i].t));
        CHECK(lm_dequant_fn_for(want[i].t) != NULL, "%s has a dequantizer", want[i].name);
        CHECK(lm_dtype_row_bytes(want[i].t, 512) == 512 / (size_t)want[i].blck * want[i].bytes, "%s row bytes",
              want[i].name);
        if (want[i].blck > 1)
            CHECK(lm_dtype_row_bytes(want[i].t, want[i].blck + 16) == 0, "%s partial block row is 0", want[i].name);
    }
    CHECK(lm_dtype_row_bytes(LM_DT_F32, 3) == 12, "F32 3 cols");
    CHECK(lm_dtype_row_bytes(LM_DT_F32, -1) == 0, "negative cols");
    CHECK(lm_dtype_row_bytes(LM_DT_F32, INT64_MAX) == 0, "overflowing row");
    CHECK(lm_dtype_row_bytes(LM_DT_COUNT, 32) == 0, "invalid dtype row bytes");
    CHECK(lm_dequant_fn_for(LM_DT_COUNT) == NULL, "invalid dtype has no dequantizer");
    CHECK(strcmp(lm_dtype_name(LM_DT_COUNT), "unsupported") == 0, "invalid dtype name");
    CHECK(lm_dtype_block_elems(LM_DT_COUNT) == 0 && lm_dtype_block_bytes(LM_DT_COUNT) == 0, "invalid dtype sizes");
}

/* ---- every type against the reference ------------------------------------- */

/* Every "<type>.*" tensor vs its ".ref": whole, from an odd address, one row. */
static void test_reference(lm_gguf *g) {
    int seen[LM_DT_COUNT] = {0};
    int pairs = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const lm_tensor *t = &g->tensors[i];
        if (lm_ends_with(t->name, ".ref") || strncmp(t->name, "perm.", 5) == 0) continue;
        char refname[160];
        snprintf(refname, sizeof refname, "%s.ref", t->name);
        const lm_tensor *r = lm_gguf_find_tensor(g, refname);
        CHECK(r != NULL, "reference %s present", refname);
        if (!r) continue;
        CHECK(r->dtype == LM_DT_F32 && lm_tensor_rows(r) == lm_tensor_rows(t) && lm_tensor_cols(r) == lm_tensor_cols(t),
              "%s shape", refname);
        /* the tensor's name starts with its dtype, e.g. "q4_k.rand" */
        char tname[16];
        size_t k = 0;
        for (; t->name[k] && t->name[k] != '.' && k < sizeof tname - 1; k++) tname[k] = (char)toupper(t->name[k]);
        tname[k] = 0;
        CHECK(strcmp(lm_dtype_name(t->dtype), tname) == 0, "%s has dtype %s", t->name, lm_dtype_name(t->dtype));
        if ((unsigned)t->dtype < LM_DT_COUNT) seen[t->dtype] = 1;

        float *got = read_all(t), *want = read_all(r);
        if (got && want) {
            int64_t n = lm_tensor_nelem(t);
            compare_bits(t->name, got, want, n);
            /* the raw dequantizer on an odd address (packed structs, memcpy loads) */
            size_t nb = t->nbytes;
            uint8_t *odd = malloc(nb + 1);
            memcpy(odd + 1, t->data, nb);
            float *got2 = malloc((size_t)n * sizeof(float));
            lm_dequant_fn_for(t->dtype)(odd + 1, got2, n);
            char what[200];
            snprintf(what, sizeof what, "%s (unaligned source)", t->name);
            compare_bits(what, got2, want, n);
            free(odd);
            free(got2);
            /* a middle row on its own */
            int64_t cols = lm_tensor_cols(t);
            float *row = malloc((size_t)cols * sizeof(float));
            lm_err err = {0};
            CHECK_OK(lm_tensor_read_rows(t, 1, 1, row, &err), &err);
            snprintf(what, sizeof what, "%s row 1", t->name);
            compare_bits(what, row, want + cols, cols);
            free(row);
            pairs++;
        }
        free(got);
        free(want);
    }
    for (int d = 0; d < LM_DT_COUNT; d++) CHECK(seen[d], "types.gguf has a %s tensor", lm_dtype_name((lm_dtype)d));
    printf("dequant: %d tensors compared bit-exactly with gguf-py\n", pairs);
}

/* ---- q/k un-permutation --------------------------------------------------- */

/* Hand-computed: 2 heads of head_dim 4. HF row h*4 + a*2 + i is file row
 * h*4 + 2*i + a, so HF rows 0..7 come from file rows 0,2,1,3,4,6,5,7. */
static void test_unpermute_by_hand(void) {
    float data[8 * 3];
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 3; c++) data[r * 3 + c] = (float)(r * 10 + c);
    lm_tensor t = {.name = "hand.q", .dtype = LM_DT_F32, .ndim = 2, .shape = {8, 3},
                   .data = (const uint8_t *)data, .nbytes = sizeof data, .path = "mem", .qk_perm_heads = 2};
    static const int from[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    float out[8 * 3];
    lm_err err = {0};
    CHECK_OK(lm_tensor_read_rows(&t, 0, 8, out, &err), &err);
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 3; c++)
            CHECK(out[r * 3 + c] == (float)(from[r] * 10 + c), "HF row %d col %d: got %g want %d", r, c,
                  out[r * 3 + c], from[r] * 10 + c);
    /* a range in the middle */
    CHECK_OK(lm_tensor_read_rows(&t, 1, 5, out, &err), &err);
    for (int r = 1; r < 6; r++)
        CHECK(out[(r - 1) * 3] == (float)(from[r] * 10), "range: HF row %d from file row %d", r, from[r]);
    /* without the flag the rows come as stored */
    t.qk_perm_heads = 0;
    CHECK_OK(lm_tensor_read_rows(&t, 0, 8, out, &err), &err);
    CHECK(out[3] == 10.0f && out[6] == 20.0f, "unpermuted read keeps file order");
    /* a 1-D bias: its elements are permuted the same way */
    float b[8] = {0, 1, 2, 3, 4, 5, 6, 7}, bo[8];
    lm_tensor tb = {.name = "hand.b", .dtype = LM_DT_F32, .ndim = 1, .shape = {8},
                    .data = (const uint8_t *)b, .nbytes = sizeof b, .path = "mem", .qk_perm_heads = 2};
    CHECK_OK(lm_tensor_read_rows(&tb, 0, 1, bo, &err), &err);
    for (int i = 0; i < 8; i++) CHECK(bo[i] == (float)from[i], "bias element %d: got %g want %d", i, bo[i], from[i]);
    /* heads that do not divide the rows, or odd head_dim */
    t.qk_perm_heads = 3;
    CHECK(lm_tensor_read_rows(&t, 0, 8, out, &err) == LM_ESHAPE, "8 rows in 3 heads -> LM_ESHAPE");
    CHECK(strstr(err.msg, "hand.q") != NULL, "message names the tensor: %s", err.msg);
    t.qk_perm_heads = 8;
    CHECK(lm_tensor_read_rows(&t, 0, 8, out, &err) == LM_ESHAPE, "head_dim 1 -> LM_ESHAPE");
}

/* Against llama.cpp's permute() as applied by convert_hf_to_gguf.py. */
static void test_unpermute_reference(lm_gguf *g) {
    static const char *names[][2] = {{"perm.q", "perm.q.hf"}, {"perm.q8", "perm.q8.hf"}, {"perm.b", "perm.b.hf"}};
    for (int i = 0; i < 3; i++) {
        const lm_tensor *t0 = lm_gguf_find_tensor(g, names[i][0]), *r = lm_gguf_find_tensor(g, names[i][1]);
        CHECK(t0 && r, "%s and %s present", names[i][0], names[i][1]);
        if (!t0 || !r) continue;
        lm_tensor t = *t0;
        t.qk_perm_heads = 4;
        float *got = read_all(&t), *want = read_all(r);
        if (got && want) compare_bits(names[i][0], got, want, lm_tensor_nelem(r));
        /* and row by row, in reverse, for the 2-D ones */
        if (got && t.ndim == 2) {
            int64_t cols = lm_tensor_cols(&t);
            float *row = malloc((size_t)cols * sizeof(float));
            lm_err err = {0};
            for (int64_t k = lm_tensor_rows(&t) - 1; k >= 0; k--) {
                CHECK_OK(lm_tensor_read_rows(&t, k, 1, row, &err), &err);
                if (memcmp(row, want + k * cols, (size_t)cols * sizeof(float)) != 0) {
                    CHECK(0, "%s: single row %lld differs", names[i][0], (long long)k);
                    break;
                }
            }
            free(row);
        }
        free(got);
        free(want);
    }
}

/* ---- argument and data checks --------------------------------------------- */

/* Bad ranges, short data, partial blocks, unsupported types, shape helpers. */
static void test_errors(lm_gguf *g) {
    const lm_tensor *q = lm_gguf_find_tensor(g, "q4_k.rand");
    CHECK(q != NULL, "q4_k.rand present");
    if (!q) return;
    float buf[3 * 512];
    lm_err err = {0};
    CHECK(lm_tensor_read_rows(q, -1, 1, buf, &err) == LM_EARG, "row0 -1 -> LM_EARG");
    CHECK(lm_tensor_read_rows(q, 2, 2, buf, &err) == LM_EARG, "rows [2..4) of 3 -> LM_EARG");
    CHECK(strstr(err.msg, "q4_k.rand") && strstr(err.msg, "[2..4)") && strstr(err.msg, "3 rows"),
          "message names tensor, range and rows: %s", err.msg);
    CHECK(lm_tensor_read_rows(q, 0, INT64_MAX, buf, &err) == LM_EARG, "huge nrows -> LM_EARG");
    CHECK(lm_tensor_read_rows(q, 3, 0, buf, &err) == LM_OK, "empty range at the end is fine");
    CHECK(lm_tensor_read_rows(q, 0, 1, NULL, &err) == LM_EARG, "NULL out -> LM_EARG");
    CHECK(lm_tensor_read_rows(NULL, 0, 1, buf, &err) == LM_EARG, "NULL tensor -> LM_EARG");

    lm_tensor t = *q;
    t.nbytes -= 1;
    CHECK(lm_tensor_read_rows(&t, 0, 1, buf, &err) == LM_ECORRUPT, "short data -> LM_ECORRUPT");
    CHECK(strstr(err.msg, "q4_k.rand") != NULL, "message names the tensor: %s", err.msg);
    t = *q;
    t.shape[1] = 500; /* not whole Q4_K blocks */
    CHECK(lm_tensor_read_rows(&t, 0, 1, buf, &err) == LM_ECORRUPT, "partial block -> LM_ECORRUPT");
    CHECK(strstr(err.msg, "Q4_K") != NULL, "message names the type: %s", err.msg);
    t = *q;
    t.dtype = LM_DT_COUNT;
    snprintf(t.file_type, sizeof t.file_type, "IQ2_XXS");
    CHECK(lm_tensor_read_rows(&t, 0, 1, buf, &err) == LM_EUNSUPPORTED, "unsupported dtype -> LM_EUNSUPPORTED");
    CHECK(strstr(err.msg, "unsupported type IQ2_XXS") && strstr(err.msg, "q4_k.rand"), "message: %s", err.msg);
    t = *q;
    t.ndim = 0;
    CHECK(lm_tensor_read_rows(&t, 0, 1, buf, &err) == LM_EARG, "ndim 0 -> LM_EARG");

    /* nelem / rows / cols */
    CHECK(lm_tensor_nelem(q) == 3 * 512 && lm_tensor_rows(q) == 3 && lm_tensor_cols(q) == 512, "q4_k.rand is 3x512");
    lm_tensor e = {.ndim = 3, .shape = {2, 0, 4}};
    CHECK(lm_tensor_nelem(&e) == 0 && lm_tensor_rows(&e) == 0 && lm_tensor_cols(&e) == 4, "empty tensor");
    lm_tensor v = {.ndim = 1, .shape = {7}};
    CHECK(lm_tensor_rows(&v) == 1 && lm_tensor_cols(&v) == 7, "1-D tensor is one row");
}

/* ---- half precision: every one of the 65536 values ------------------------ */

/* The vectorized F16 path against util.c's scalar lm_f16_to_f32, all inputs. */
static void test_f16_exhaustive(void) {
    uint16_t *h = malloc(65536 * 2);
    float *y = malloc(65536 * sizeof(float));
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    lm_dequant_fn_for(LM_DT_F16)(h, y, 65536);
    int bad = 0;
    for (uint32_t i = 0; i < 65536 && bad < 5; i++) {
        float want = lm_f16_to_f32((uint16_t)i); /* util.c's scalar reference */
        if (bits_of(y[i]) != bits_of(want)) {
            bad++;
            CHECK(0, "f16 %04x: got %08x want %08x", i, bits_of(y[i]), bits_of(want));
        }
    }
    CHECK(bad == 0, "all 65536 halves convert exactly");
    free(h);
    free(y);
}

/* ---- throughput (LM_BENCH=1) ---------------------------------------------- */

/* Best-of-reps seconds for one call of fn over k elements. */
static double time_fn(lm_dequant_fn fn, const uint8_t *in, float *out, int64_t k, int reps) {
    fn(in, out, k); /* warm up, fault the pages in */
    double best = 1e9;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = lm_now();
        fn(in, out, k);
        double dt = lm_now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* Single-core throughput in GB/s of F32 output: "cache" = 64K elements
 * (256 KiB out, L2-resident, the way read_rows is used row by row), "stream"
 * = 16M elements (64 MiB out, bound by memory bandwidth). */
static void bench(lm_gguf *g) {
    static const char *names[] = {"q4_k.rand", "q8_0.quant", "bf16.quant", "f16.quant", "f32.rand",
                                  "q4_0.quant", "q4_1.quant", "q5_0.quant", "q5_1.quant", "q2_k.rand",
                                  "q3_k.rand", "q5_k.rand", "q6_k.rand", "iq4_nl.rand", "iq4_xs.rand"};
    const int64_t sizes[2] = {(int64_t)1 << 16, (int64_t)1 << 24};
    float *out = malloc((size_t)sizes[1] * sizeof(float));
    printf("bench: single core, GB/s of F32 output   cache (256 KiB)   stream (64 MiB)\n");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const lm_tensor *t = lm_gguf_find_tensor(g, names[i]);
        if (!t) continue;
        double gbs[2];
        for (int s = 0; s < 2; s++) {
            /* tile the tensor's (valid) blocks to about sizes[s] elements */
            int64_t copies = sizes[s] / lm_tensor_nelem(t);
            int64_t k = copies * lm_tensor_nelem(t);
            size_t in_bytes = (size_t)copies * t->nbytes;
            uint8_t *in = malloc(in_bytes);
            for (size_t o = 0; o < in_bytes; o += t->nbytes) memcpy(in + o, t->data, t->nbytes);
            double dt = time_fn(lm_dequant_fn_for(t->dtype), in, out, k, s == 0 ? 200 : 5);
            gbs[s] = (double)k * 4 / dt / 1e9;
            free(in);
        }
        printf("bench %-7s %32.2f %17.2f\n", lm_dtype_name(t->dtype), gbs[0], gbs[1]);
    }
    free(out);
}

int main(void) {
    test_dtype_helpers();
    test_unpermute_by_hand();
    test_f16_exhaustive();

    char path[1024];
    lm_gguf *g = NULL;
    lm_err err = {0};
    CHECK_OK(lm_gguf_open(&g, data_path(path, sizeof path, "dequant/types.gguf"), &err), &err);
    if (g) {
        test_reference(g);
        test_unpermute_reference(g);
        test_errors(g);
        const char *b = getenv("LM_BENCH");
        if (b && *b && strcmp(b, "0") != 0) bench(g);
        lm_gguf_close(g);
    }
    return TEST_END();
}
