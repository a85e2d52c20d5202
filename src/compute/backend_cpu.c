/*
 * backend_cpu.c -- the CPU backend: OpenBLAS sgemm, and the check that
 * OpenBLAS runs the best core this CPU supports.
 *
 * Debian's OpenBLAS 0.3.21 does not know newer AVX-512 CPUs (AMD Zen 4 among
 * them) and falls back to its Prescott core: sgemm runs 5x slower. The CPU's
 * features say which core it can run; OpenBLAS reads OPENBLAS_CORETYPE when
 * it loads, so the fix is applied by the program before then (cli/main.c
 * re-executes itself with the variable set).
 */
#include "compute/backend.h"
#include "base/base.h"

#include <cblas.h>
#include <stdio.h>
#include <string.h>

static void gemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

static void gemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

static void gemm_tn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

static const lm_backend cpu_backend = {"cpu-openblas", gemm_nt, gemm_nn, gemm_tn};

const lm_backend *lm_backend_cpu(void) { return &cpu_backend; }

const char *lm_blas_core(void) {
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

/* The OpenBLAS core name matching the CPU's best vector extension. */
const char *lm_blas_wanted_core(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void lm_blas_set_threads(int n) { openblas_set_num_threads(n); }

const char *lm_engine_kernel_name(void) {
    static char buf[160];
    const char *cfg = openblas_get_config();
    const char *want = lm_blas_wanted_core();
    const char *core = lm_blas_core();
    int ok = !want || !strcasecmp(want, core);
    snprintf(buf, sizeof buf, "sgemm: %s, core %s%s%s%s", cfg ? cfg : "OpenBLAS", core,
             ok ? "" : " (CPU supports ", ok ? "" : want, ok ? "" : "; set OPENBLAS_CORETYPE)");
    return buf;
}
