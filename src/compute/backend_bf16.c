/*
 * backend_bf16.c -- the CPU backend with bf16 matrix products (--compute bf16).
 *
 * Everything but the products is the CPU backend's (backend_cpu.c): F32
 * element-wise work, double reductions. A product rounds both inputs to bf16
 * (round to nearest even; denormal inputs become zero, as the hardware's
 * conversion does), multiplies them exactly (a product of two bf16 values
 * fits F32's mantissa) and accumulates in F32. Two implementations of that
 * arithmetic, which differ only in the order of the F32 additions:
 *
 *   LM_BF16_HW   oneDNN's matmul (Debian libdnnl), which runs AMX tiles or
 *                AVX512_BF16 dot products (its "brgemm" kernels), on CPUs
 *                that have one of them. 4-6x the F32 sgemm rate here.
 *   LM_BF16_REF  the inputs rounded to bf16 values held in F32, then
 *                OpenBLAS sgemm: the same rounding on any CPU, at F32 speed
 *                (--compute bf16-ref): what the tests use to bound bf16's
 *                error on every host, and a check of the HW path where it runs.
 *
 * Why oneDNN and not a kernel of our own: bench/bench_gemm.sh measures on this
 * machine's shapes sgemm (OpenBLAS) ~210-260 GFLOP/s, oneDNN bf16 on AMX
 * 680-1350 GFLOP/s. A hand-written AVX512_BF16 kernel (VDPBF16PS) can at best
 * double the F32 FMA rate (32 bf16 products per instruction instead of 16);
 * AMX tiles need tile configuration, packing into VNNI pairs and a blocking
 * oneDNN already maintains for each CPU generation. See bench/README.md.
 *
 * Weights. The engine keeps a product-format copy of every weight next to
 * its F32 copy (wcopy_bytes / wcopy_make): bf16 (2 bytes per value) for HW,
 * the rounded F32 values for REF. Activations are rounded per product, into
 * scratch (O(rows x cols), small against the product's O(rows x cols x n)).
 *
 * oneDNN primitives are made per shape (its JIT) and kept in a small cache.
 * Products are serialised by a mutex (scratch and the stream are shared).
 * Should oneDNN refuse a product (out of memory, a shape it rejects), that
 * product runs the REF arithmetic instead and the fallback is counted
 * (lm_backend_bf16_stats): never a wrong result, never a crash.
 */
#include "compute/backend.h"
#include "compute/bf16.h"
#include "base/base.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if LM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

/* ---- rounding F32 -> bf16 ------------------------------------------------ */

/* One value, as VCVTNEPS2BF16 does it: denormals to signed zero, NaN stays a
 * (quiet) NaN, the rest rounded to nearest even (overflow gives Inf). */
static inline uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u); /* zero or denormal */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: quiet */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float f32_of_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f,avx512bf16,avx512vl"))) static void round_rows_hw(uint16_t *d, const float *s,
                                                                                 long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(s + i));
        _mm256_storeu_si256((__m256i *)(void *)(d + i), (__m256i)h);
    }
    for (; i < n; i++) d[i] = bf16_of(s[i]);
}
#define HAVE_ROUND_HW 1
#else
#define HAVE_ROUND_HW 0
#endif

int lm_bf16_hw_supported(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* Row r of src (row stride ld) into row r of dst (dense, cols wide): bf16
 * values (hw: by the instruction), or with f32 set their F32 widening. */
static void round_row(void *dst, const float *src, long r, long cols, long ld, int hw, int f32) {
    const float *s = src + r * ld;
    if (f32) {
        float *d = (float *)dst + r * cols;
        for (long j = 0; j < cols; j++) d[j] = f32_of_bf16(bf16_of(s[j]));
        return;
    }
    uint16_t *d = (uint16_t *)dst + r * cols;
#if HAVE_ROUND_HW
    if (hw) {
        round_rows_hw(d, s, cols);
        return;
    }
#endif
    (void)hw;
    for (long j = 0; j < cols; j++) d[j] = bf16_of(s[j]);
}

/* Every row, on the threads when large (a parallel region costs ~1 us even
 * when it runs on one thread: small inputs stay outside one). */
static void round_rows(void *dst, const float *src, long rows, long cols, long ld, int f32) {
    int hw = HAVE_ROUND_HW && !f32 && lm_bf16_hw_supported();
    if (rows * cols <= 65536) {
        for (long r = 0; r < rows; r++) round_row(dst, src, r, cols, ld, hw, f32);
        return;
    }
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) round_row(dst, src, r, cols, ld, hw, f32);
}

/* dst (rows, cols) dense = bf16 of src (rows, cols) with row stride ld. */
void lm_bf16_round(uint16_t *dst, const float *src, long rows, long cols, long ld) {
    round_rows(dst, src, rows, cols, ld, 0);
}

/* dst (rows, cols) dense F32 = the bf16 values of src (rows, cols; row stride ld). */
static void round_f32(float *dst, const float *src, long rows, long cols, long ld) {
    round_rows(dst, src, rows, cols, ld, 1);
}

/* ---- the backend's state ------------------------------------------------ */

enum { K_NT = 0, K_NN, K_TN };

#if LM_HAVE_DNNL
#define NPRIM 64
typedef struct prim_key {
    int kind, M, N, K, ldc;
    float beta;
} prim_key;
typedef struct prim_ent {
    prim_key key;
    dnnl_primitive_t p;
    dnnl_memory_desc_t a, b, c;
    long last_use;
} prim_ent;
#endif

typedef struct bf16_ctx {
    int mode;                 /* LM_BF16_HW or LM_BF16_REF */
    pthread_mutex_t mu;       /* one product at a time: scratch, stream, cache */
    void *sa, *sb;            /* scratch: rounded A, B (bf16 for HW, F32 for REF) */
    float *wide;              /* WIDE floats, made with the backend: a weight copy widened a
                               * block of rows at a time when oneDNN fails and the caller
                               * kept no F32 weight (never allocates then) */
    size_t sa_bytes, sb_bytes;
    long products, fallbacks; /* statistics */
    int force_fallback;       /* tests: as if oneDNN refused every product */
    double small_flop;        /* products of fewer flops run in F32 (SMALL_FLOP; tests may lower it) */
#if LM_HAVE_DNNL
    dnnl_engine_t eng;
    dnnl_stream_t st;
    prim_ent cache[NPRIM];
    long clock;
#endif
} bf16_ctx;

static int grow(void **p, size_t *have, size_t need) {
    if (need <= *have) return 0;
    void *q = lm_malloc(need);
    if (!q) return -1;
    lm_free(*p);
    *p = q;
    *have = need;
    return 0;
}

/* ---- REF arithmetic: rounded F32 values + sgemm ------------------------- */

/* C = beta C + op(A) op(B) by OpenBLAS sgemm (F32), strides as given. */
static void sgemm_strided(int kind, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                          float *C, int ldc) {
    if (kind == K_NT)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else if (kind == K_NN)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* The product with both inputs already rounded F32 (dense): C = beta C + op(A) op(B). */
static void sgemm_kind(int kind, int M, int N, int K, const float *A, const float *B, float beta, float *C, int ldc) {
    sgemm_strided(kind, M, N, K, A, kind == K_TN ? M : K, B, kind == K_NT ? K : N, beta, C, ldc);
}

/* Rows and columns of the stored A and B of a product of kind `kind`. */
static void dims_of(int kind, int M, int N, int K, long *ar, long *ac, long *br, long *bc) {
    *ar = kind == K_TN ? K : M;
    *ac = kind == K_TN ? M : K;
    *br = kind == K_NT ? N : K;
    *bc = kind == K_NT ? K : N;
}

/* REF product from F32 inputs (B may be given as a REF weight copy: Bw). With
 * the mutex held. Returns -1 when scratch cannot be had. */
static int ref_product(bf16_ctx *x, int kind, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                       const float *Bw, float beta, float *C, int ldc) {
    long ar, ac, br, bc;
    dims_of(kind, M, N, K, &ar, &ac, &br, &bc);
    if (grow(&x->sa, &x->sa_bytes, sizeof(float) * (size_t)(ar * ac + 1))) return -1;
    round_f32(x->sa, A, ar, ac, lda);
    if (!Bw) {
        if (grow(&x->sb, &x->sb_bytes, sizeof(float) * (size_t)(br * bc + 1))) return -1;
        round_f32(x->sb, B, br, bc, ldb);
        Bw = x->sb;
    }
    sgemm_kind(kind, M, N, K, x->sa, Bw, beta, C, ldc);
    return 0;
}

/* The product when B exists only as a HW (bf16) weight copy and oneDNN
 * failed: the bf16 values widened into x->wide a block of B's rows at a
 * time, A rounded when scratch allows (the REF arithmetic), else as given. */
enum { WIDE = 1 << 20 };
static int wide_product(bf16_ctx *x, int kind, int M, int N, int K, const float *A, int lda, const uint16_t *Bw,
                        float beta, float *C, int ldc) {
    long rowlen = kind == K_NT ? K : N, nrows = kind == K_NT ? N : K;
    if (rowlen > WIDE) return -1;
    if (!grow(&x->sa, &x->sa_bytes, sizeof(float) * (size_t)((long)M * K + 1))) {
        round_f32(x->sa, A, M, K, lda);
        A = x->sa;
        lda = K;
    }
    long step = WIDE / rowlen;
    for (long r0 = 0; r0 < nrows; r0 += step) {
        long nr = nrows - r0 < step ? nrows - r0 : step;
        for (long i = 0; i < nr * rowlen; i++) x->wide[i] = f32_of_bf16(Bw[r0 * rowlen + i]);
        if (kind == K_NT) /* columns r0.. of C */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, (int)nr, K, 1.0f, A, lda, x->wide, K, beta, C + r0,
                        ldc);
        else /* the terms k = r0.. of the sum */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, (int)nr, 1.0f, A + r0, lda, x->wide, N,
                        r0 ? 1.0f : beta, C, ldc);
    }
    return 0;
}

/* ---- HW arithmetic: oneDNN matmul on bf16 operands ---------------------- */

#if LM_HAVE_DNNL
/* The strides of a (rows, cols) operand stored row-major as it is, or
 * transposed (stored (cols, rows)). */
static void op_strides(int transposed, long rows, long cols, dnnl_dims_t s) {
    s[0] = transposed ? 1 : cols;
    s[1] = transposed ? rows : 1;
}

/* The cached primitive for this product (made on a miss), or NULL. */
static prim_ent *prim_get(bf16_ctx *x, const prim_key *k) {
    prim_ent *free_e = NULL, *old = NULL;
    x->clock++;
    for (int i = 0; i < NPRIM; i++) {
        prim_ent *e = &x->cache[i];
        if (e->p && !memcmp(&e->key, k, sizeof *k)) {
            e->last_use = x->clock;
            return e;
        }
        if (!e->p && !free_e) free_e = e;
        if (e->p && (!old || e->last_use < old->last_use)) old = e;
    }
    prim_ent *e = free_e ? free_e : old;
    if (e->p) {
        dnnl_primitive_destroy(e->p);
        e->p = NULL;
    }
    long ar, ac, br, bc;
    dims_of(k->kind, k->M, k->N, k->K, &ar, &ac, &br, &bc);
    dnnl_dims_t ad = {k->M, k->K}, bd = {k->K, k->N}, cd = {k->M, k->N}, cs = {k->ldc, 1};
    dnnl_dims_t as, bs;
    /* stored A (K, M) for TN: src (M, K) has strides (1, M); stored B (N, K)
     * for NT: weights (K, N) have strides (1, K) */
    op_strides(k->kind == K_TN, k->M, k->K, as);
    op_strides(k->kind == K_NT, k->K, k->N, bs);
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p = NULL;
    int ok = dnnl_memory_desc_init_by_strides(&e->a, 2, ad, dnnl_bf16, as) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&e->b, 2, bd, dnnl_bf16, bs) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&e->c, 2, cd, dnnl_f32, cs) == dnnl_success &&
             dnnl_matmul_desc_init(&md, &e->a, &e->b, NULL, &e->c) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && k->beta != 0.0f)
        ok = dnnl_post_ops_create(&po) == dnnl_success && dnnl_post_ops_append_sum(po, k->beta) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    if (ok) ok = dnnl_primitive_desc_create(&pd, &md, attr, x->eng, NULL) == dnnl_success;
    if (ok) ok = dnnl_primitive_create(&p, pd) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) return NULL;
    e->key = *k;
    e->p = p;
    e->last_use = x->clock;
    return e;
}

/* HW product on dense bf16 operands A16, B16. Returns -1 when oneDNN refused. */
static int hw_exec(bf16_ctx *x, int kind, int M, int N, int K, const uint16_t *A16, const uint16_t *B16, float beta,
                   float *C, int ldc) {
    if (x->force_fallback) return -1;
    prim_key k = {kind, M, N, K, ldc, beta};
    prim_ent *e = prim_get(x, &k);
    if (!e) return -1;
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
    int ok = dnnl_memory_create(&am, &e->a, x->eng, (void *)A16) == dnnl_success &&
             dnnl_memory_create(&bm, &e->b, x->eng, (void *)B16) == dnnl_success &&
             dnnl_memory_create(&cm, &e->c, x->eng, C) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
        ok = dnnl_primitive_execute(e->p, x->st, 3, args) == dnnl_success && dnnl_stream_wait(x->st) == dnnl_success;
    }
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    if (cm) dnnl_memory_destroy(cm);
    return ok ? 0 : -1;
}
#endif

/* ---- the products ------------------------------------------------------- */

/* Products under SMALL_FLOP (2 M N K) run in F32 in both modes: attention's
 * blocks (128 queries x 128-512 keys x the head dimension, called from the
 * threads of the attention kernel, at most ~8 MFLOP) and one-token
 * generation's products gain nothing from bf16 (the rounding, the lock and
 * oneDNN's dispatch cost more than the product) and are the products most
 * sensitive to rounding. Every module product of a pass of 64+ tokens of a
 * model with dim >= 512 is above it. */
#define SMALL_FLOP 33554432.0 /* 2^25 */

/* C = beta C + op(A) op(B) in bf16 arithmetic. Bw is B's weight copy in
 * this backend's product format (dense) or NULL; B (F32, row stride ldb) may
 * be NULL only when Bw is given. */
static void product(const lm_backend *be, int kind, int M, int N, int K, const float *A, int lda, const float *B,
                    int ldb, const void *Bw, float beta, float *C, int ldc) {
    bf16_ctx *x = be->ctx;
    if (M <= 0 || N <= 0) return;
    long ar, ac, br, bc;
    dims_of(kind, M, N, K, &ar, &ac, &br, &bc);
    double t0 = lm_prof_begin();
    if (2.0 * M * N * K < x->small_flop && B) { /* small: F32, on the caller's thread, no lock */
        sgemm_strided(kind, M, N, K, A, lda, B, ldb, beta, C, ldc);
        lm_prof_end(t0, M, N, K);
        return;
    }
    pthread_mutex_lock(&x->mu);
    x->products++;
    int rc = -1;
#if LM_HAVE_DNNL
    if (x->mode == LM_BF16_HW && K > 0 && !grow(&x->sa, &x->sa_bytes, 2 * (size_t)(ar * ac + 1)) &&
        (Bw || !grow(&x->sb, &x->sb_bytes, 2 * (size_t)(br * bc + 1)))) {
        lm_bf16_round(x->sa, A, ar, ac, lda);
        if (!Bw) lm_bf16_round(x->sb, B, br, bc, ldb);
        rc = hw_exec(x, kind, M, N, K, x->sa, Bw ? Bw : x->sb, beta, C, ldc);
    }
#endif
    if (rc && x->mode == LM_BF16_HW && K > 0) x->fallbacks++;
    if (rc && !B && x->mode == LM_BF16_HW) { /* only the bf16 copy: widened in blocks */
        if (!wide_product(x, kind, M, N, K, A, lda, Bw, beta, C, ldc)) {
            pthread_mutex_unlock(&x->mu);
            lm_prof_end(t0, M, N, K);
            return;
        }
        pthread_mutex_unlock(&x->mu); /* (counted above) */
        for (long i = 0; i < M; i++) /* a row of B longer than 4 MiB: no result to be had */
            for (long j = 0; j < N; j++) C[i * ldc + j] = NAN;
        return;
    }
    /* REF: its copy is the rounded F32 weight; HW falling back rounds B again */
    if (rc) {
        if (!B) { /* REF copy: the rounded F32 values themselves */
            B = (const float *)Bw;
            ldb = kind == K_NT ? K : N;
        }
        rc = ref_product(x, kind, M, N, K, A, lda, B, ldb, x->mode == LM_BF16_REF ? Bw : NULL, beta, C, ldc);
    }
    if (rc && x->mode == LM_BF16_REF) x->fallbacks++;
    pthread_mutex_unlock(&x->mu);
    if (!rc) {
        lm_prof_end(t0, M, N, K);
        return;
    }
    /* no scratch to be had: the F32 product of the inputs as given (more
     * exact than bf16; counted as a fallback) */
    sgemm_strided(kind, M, N, K, A, lda, B, ldb, beta, C, ldc);
    lm_prof_end(t0, M, N, K);
}

static void b_gemm_nt(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float beta, float *C, int ldc) {
    product(be, K_NT, M, N, K, A, lda, B, ldb, NULL, beta, C, ldc);
}
static void b_gemm_nn(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float beta, float *C, int ldc) {
    product(be, K_NN, M, N, K, A, lda, B, ldb, NULL, beta, C, ldc);
}
static void b_gemm_tn(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float beta, float *C, int ldc) {
    product(be, K_TN, M, N, K, A, lda, B, ldb, NULL, beta, C, ldc);
}
static void b_gemm_nt_w(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B,
                        const void *Bw, float beta, float *C, int ldc) {
    product(be, K_NT, M, N, K, A, lda, B, K, Bw, beta, C, ldc);
}
static void b_gemm_nn_w(const lm_backend *be, int M, int N, int K, const float *A, int lda, const float *B,
                        const void *Bw, float beta, float *C, int ldc) {
    product(be, K_NN, M, N, K, A, lda, B, N, Bw, beta, C, ldc);
}

static size_t b_wcopy_bytes(const lm_backend *be, long rows, long cols) {
    const bf16_ctx *x = be->ctx;
    return (size_t)rows * (size_t)cols * (x->mode == LM_BF16_HW ? 2 : sizeof(float));
}
static void b_wcopy_make(const lm_backend *be, void *dst, const float *W, long rows, long cols) {
    const bf16_ctx *x = be->ctx;
    if (x->mode == LM_BF16_HW)
        lm_bf16_round(dst, W, rows, cols, cols);
    else
        round_f32(dst, W, rows, cols, cols);
}

/* ---- lifetime ------------------------------------------------------------ */

int lm_backend_bf16_new(lm_backend **out, int mode, lm_err *err) {
    *out = NULL;
    if (mode != LM_BF16_HW && mode != LM_BF16_REF) return lm_fail(err, LM_EARG, "bf16 backend: unknown mode %d", mode);
    if (mode == LM_BF16_HW) {
#if !LM_HAVE_DNNL
        return lm_fail(err, LM_EUNSUPPORTED, "--compute bf16: this layermap was built without oneDNN (libdnnl-dev)");
#else
        if (!lm_bf16_hw_supported())
            return lm_fail(err, LM_EUNSUPPORTED,
                           "--compute bf16: this CPU has no bf16 instructions (AVX512_BF16 or AMX); "
                           "use --compute f32, or bf16-ref for the same rounding at F32 speed");
#endif
    }
    lm_backend *be = lm_calloc(1, sizeof *be);
    bf16_ctx *x = lm_calloc(1, sizeof *x);
    if (!be || !x) {
        lm_free(be);
        lm_free(x);
        return lm_nomem(err, sizeof *be + sizeof *x, "bf16 backend");
    }
    *be = *lm_backend_cpu();
    x->mode = mode;
    x->small_flop = SMALL_FLOP;
    if (mode == LM_BF16_HW && !(x->wide = lm_malloc(sizeof(float) * WIDE))) {
        lm_free(be);
        lm_free(x);
        return lm_nomem(err, sizeof(float) * WIDE, "bf16 backend");
    }
    pthread_mutex_init(&x->mu, NULL);
#if LM_HAVE_DNNL
    if (mode == LM_BF16_HW) {
        if (dnnl_engine_create(&x->eng, dnnl_cpu, 0) != dnnl_success ||
            dnnl_stream_create(&x->st, x->eng, dnnl_stream_default_flags) != dnnl_success) {
            if (x->eng) dnnl_engine_destroy(x->eng);
            pthread_mutex_destroy(&x->mu);
            lm_free(x->wide);
            lm_free(x);
            lm_free(be);
            return lm_fail(err, LM_EUNSUPPORTED, "--compute bf16: oneDNN could not make a CPU engine");
        }
    }
#endif
    be->name = mode == LM_BF16_HW ? "cpu-bf16-onednn" : "cpu-bf16-ref";
    be->ctx = x;
    be->gemm_nt = b_gemm_nt;
    be->gemm_nn = b_gemm_nn;
    be->gemm_tn = b_gemm_tn;
    be->wcopy_bytes = b_wcopy_bytes;
    be->wcopy_make = b_wcopy_make;
    be->gemm_nt_w = b_gemm_nt_w;
    be->gemm_nn_w = b_gemm_nn_w;
    *out = be;
    return LM_OK;
}

void lm_backend_bf16_free(lm_backend *be) {
    if (!be) return;
    bf16_ctx *x = be->ctx;
#if LM_HAVE_DNNL
    for (int i = 0; i < NPRIM; i++)
        if (x->cache[i].p) dnnl_primitive_destroy(x->cache[i].p);
    if (x->st) dnnl_stream_destroy(x->st);
    if (x->eng) dnnl_engine_destroy(x->eng);
#endif
    lm_free(x->sa);
    lm_free(x->sb);
    lm_free(x->wide);
    pthread_mutex_destroy(&x->mu);
    lm_free(x);
    lm_free(be);
}

void lm_backend_bf16_stats(const lm_backend *be, long *products, long *fallbacks) {
    bf16_ctx *x = be->ctx;
    pthread_mutex_lock(&x->mu);
    if (products) *products = x->products;
    if (fallbacks) *fallbacks = x->fallbacks;
    pthread_mutex_unlock(&x->mu);
}

int lm_bf16_have_onednn(void) { return LM_HAVE_DNNL; }

void lm_backend_bf16_force_fallback(lm_backend *be, int on) {
    bf16_ctx *x = be->ctx;
    x->force_fallback = on;
}

void lm_backend_bf16_set_small_flop(const lm_backend *be, double flop) {
    bf16_ctx *x = be->ctx;
    x->small_flop = flop;
}
