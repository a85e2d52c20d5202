/*
 * gemm_peak.c -- the matrix-product rates of this machine, for bench_attr.sh:
 * the peak of the libraries layermap calls (OpenBLAS sgemm; oneDNN bf16
 * matmul on operands already in bf16) on a large product, and layermap's own
 * backend products (lm_backend_cpu / the bf16 backend: rounding included) on
 * the shapes of a SmolLM2-135M pass (512 tokens).
 *
 *   cc -O2 -fopenmp -Iinclude -Isrc bench/gemm_peak.c build/liblayermap.a $(LIBS) -o gemm_peak
 *   ./gemm_peak [THREADS]          prints "name GFLOP/s" lines
 */
#include "compute/backend.h"
#include "compute/bf16.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if LM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* best of 3 timings of `reps` calls, in GFLOP/s */
#define RATE(flop, reps, call)                                                                                         \
    ({                                                                                                                 \
        double best_ = 1e30;                                                                                           \
        call;                                                                                                          \
        for (int r_ = 0; r_ < 3; r_++) {                                                                               \
            double t_ = now();                                                                                         \
            for (int k_ = 0; k_ < (reps); k_++) call;                                                                  \
            t_ = (now() - t_) / (reps);                                                                                \
            if (t_ < best_) best_ = t_;                                                                                \
        }                                                                                                              \
        (flop) / best_ * 1e-9;                                                                                         \
    })

static float *rnd(long n) {
    float *x = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    return x;
}

#if LM_HAVE_DNNL
/* oneDNN bf16 matmul C (M,N) = A (M,K) B^T with A, B already bf16: the library's peak. */
static double dnnl_peak(int M, int N, int K) {
    dnnl_engine_t eng;
    dnnl_stream_t st;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) || dnnl_stream_create(&st, eng, dnnl_stream_default_flags)) return 0;
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t ad = {M, K}, as = {K, 1}, bd = {K, N}, bs = {1, K}, cd = {M, N}, cs = {N, 1};
    dnnl_memory_desc_init_by_strides(&a, 2, ad, dnnl_bf16, as);
    dnnl_memory_desc_init_by_strides(&b, 2, bd, dnnl_bf16, bs);
    dnnl_memory_desc_init_by_strides(&c, 2, cd, dnnl_f32, cs);
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    dnnl_matmul_desc_init(&md, &a, &b, NULL, &c);
    if (dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) || dnnl_primitive_create(&p, pd)) return 0;
    uint16_t *A = calloc((size_t)M * K, 2), *B = calloc((size_t)N * K, 2);
    float *C = calloc((size_t)M * N, 4);
    float *F = rnd((long)M * K);
    lm_bf16_round(A, F, M, K, K);
    free(F);
    F = rnd((long)N * K);
    lm_bf16_round(B, F, N, K, K);
    free(F);
    dnnl_memory_t am, bm, cm;
    dnnl_memory_create(&am, &a, eng, A);
    dnnl_memory_create(&bm, &b, eng, B);
    dnnl_memory_create(&cm, &c, eng, C);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    double g = RATE(2.0 * M * N * K, 10, (dnnl_primitive_execute(p, st, 3, args), dnnl_stream_wait(st)));
    dnnl_memory_destroy(am), dnnl_memory_destroy(bm), dnnl_memory_destroy(cm);
    dnnl_primitive_destroy(p), dnnl_primitive_desc_destroy(pd);
    dnnl_stream_destroy(st), dnnl_engine_destroy(eng);
    free(A), free(B), free(C);
    return g;
}
#endif

/* a backend's y = x W^T (with W's product-format copy when it keeps one) */
static double backend_rate(const lm_backend *be, int M, int N, int K) {
    float *x = rnd((long)M * K), *W = rnd((long)N * K), *y = calloc((size_t)M * N, 4);
    void *wc = NULL;
    if (be->wcopy_bytes) {
        wc = malloc(be->wcopy_bytes(be, N, K));
        be->wcopy_make(be, wc, W, N, K);
    }
    double g = wc ? RATE(2.0 * M * N * K, 5, be->gemm_nt_w(be, M, N, K, x, K, W, wc, 0.0f, y, N))
                  : RATE(2.0 * M * N * K, 5, be->gemm_nt(be, M, N, K, x, K, W, K, 0.0f, y, N));
    free(x), free(W), free(y), free(wc);
    return g;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (threads > 0) omp_set_num_threads(threads);
    lm_blas_set_threads(threads > 0 ? threads : omp_get_max_threads());
    int S = 2048;
    float *A = rnd((long)S * S), *B = rnd((long)S * S), *C = calloc((size_t)S * S, 4);
    printf("peak sgemm-openblas %.1f\n",
           RATE(2.0 * S * S * S, 3, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, S, 1.0f, A, S, B, S,
                                                0.0f, C, S)));
    free(A), free(B), free(C);
#if LM_HAVE_DNNL
    if (lm_bf16_hw_supported()) printf("peak bf16-onednn %.1f\n", dnnl_peak(S, S, S));
#endif
    /* SmolLM2-135M: dim 576, ffn 1536, kv 192, vocab 49152; 512 tokens */
    int shapes[][3] = {{512, 1536, 576}, {512, 576, 1536}, {512, 576, 576}, {512, 192, 576}, {512, 49152, 576}};
    const lm_backend *cpu = lm_backend_cpu();
    lm_backend *bf = NULL;
    lm_err err;
    if (lm_compute_bf16_available()) lm_backend_bf16_new(&bf, LM_BF16_HW, &err);
    for (int s = 0; s < 5; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        printf("f32 %dx%dx%d %.1f\n", M, N, K, backend_rate(cpu, M, N, K));
        if (bf) printf("bf16 %dx%dx%d %.1f\n", M, N, K, backend_rate(bf, M, N, K));
    }
    lm_backend_bf16_free(bf);
    return 0;
}
