/*
 * test_backend_wrap.c -- a second backend through the engine, unchanged:
 * a wrapper of the CPU backend that keeps its own ("device") copy of every
 * operand. Each product uploads A and B (and C when beta != 0) into buffers
 * it allocates, runs the CPU product there, downloads C into the caller's
 * buffer and poisons its copies with NaN before freeing them, as a device
 * backend's explicit upload/download would. The engine's reference
 * comparisons of test_engine.c (logits, loss, every weight gradient, every
 * method matrix against PyTorch float64) run with it on stories260K, a
 * Qwen3 (qk-norm) and a Gemma 3 (post-norms, sliding windows, GELU) model;
 * a count of the calls shows that products went through it.
 *
 * Scope: today's lm_backend holds the three GEMMs; the other operations of
 * a pass (norms, rope, softmax, reductions) are host kernels, so this shows
 * the engine computes every matrix product through the backend it is given,
 * not that a device backend could keep activations on the device.
 */
#define TEST_ENGINE_NO_MAIN
#define ENGINE_BACKEND_SETUP(e) lm_eng_set_backend((e), &wrap_backend)

#include "compute/backend.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const lm_backend wrap_backend;
static long wrap_calls;

/* Elements of a row-major (rows x cols) operand with row stride ld. */
static size_t extent(int rows, int cols, int ld) { return rows > 0 && cols > 0 ? (size_t)(rows - 1) * ld + cols : 0; }

static float *upload(const float *host, size_t n) {
    float *d = malloc(n * sizeof(float) + 1);
    if (d && n) memcpy(d, host, n * sizeof(float));
    return d;
}

static void poison_free(float *d, size_t n) {
    for (size_t i = 0; d && i < n; i++) d[i] = NAN;
    free(d);
}

/* op 0: nt, 1: nn, 2: tn (backend.h) */
static void wrap_gemm(int op, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc) {
    wrap_calls++;
    size_t na = op == 2 ? extent(K, M, lda) : extent(M, K, lda);
    size_t nb = op == 0 ? extent(N, K, ldb) : extent(K, N, ldb);
    size_t nc = extent(M, N, ldc);
    float *dA = upload(A, na), *dB = upload(B, nb), *dC = beta != 0.0f ? upload(C, nc) : malloc(nc * sizeof(float) + 1);
    if (!dA || !dB || !dC) abort(); /* the test's own allocation */
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++) dC[i] = NAN; /* a fresh device buffer holds garbage */
    const lm_backend *cpu = lm_backend_cpu();
    if (op == 0) cpu->gemm_nt(M, N, K, dA, lda, dB, ldb, beta, dC, ldc);
    if (op == 1) cpu->gemm_nn(M, N, K, dA, lda, dB, ldb, beta, dC, ldc);
    if (op == 2) cpu->gemm_tn(M, N, K, dA, lda, dB, ldb, beta, dC, ldc);
    for (int i = 0; i < M; i++) memcpy(C + (size_t)i * ldc, dC + (size_t)i * ldc, sizeof(float) * (size_t)N);
    poison_free(dA, na);
    poison_free(dB, nb);
    poison_free(dC, nc);
}

static void w_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    wrap_gemm(0, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
static void w_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    wrap_gemm(1, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
static void w_tn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    wrap_gemm(2, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

#include "test_engine.c"

static const lm_backend wrap_backend = {"test-copying-wrapper", w_nt, w_nn, w_tn};

int main(void) {
    (void)check_greedy; /* test_engine.c's other checks do not use the engine's products differently */
    (void)check_resume;
    (void)check_other_dtypes;
    char path[1024];
    tol stories = {1e-5, 1e-4, 1e-4, 1e-3};
    check_model(model_path(path, sizeof path, "stories260K-hf"), "tests/data/ref/stories260K-hf.safetensors", stories,
                1, 0, 0);
    check_model("tests/data/tiny-qwen3", "tests/data/ref/tiny-qwen3.safetensors", stories, 0, 0, 0);
    check_model("tests/data/tiny-gemma3", "tests/data/ref/tiny-gemma3.safetensors", stories, 0, 1, 1);
    printf("  %ld products through the wrapping backend\n", wrap_calls);
    CHECK(wrap_calls > 1000, "the engine's products did not go through the backend it was given (%ld calls)",
          wrap_calls);
    return TEST_END();
}
