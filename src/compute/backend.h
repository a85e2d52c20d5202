/*
 * backend.h -- the matrix-multiply interface the engine computes through.
 *
 * Everything heavy in a transformer's forward and backward pass is one of
 * three products; a backend provides them for row-major F32 matrices. The CPU
 * backend (backend_cpu.c) calls OpenBLAS sgemm. A CUDA backend implements the
 * same three calls over device buffers; data parallelism over processes (MPI)
 * sits above the engine (sequences are independent, sums are added), so
 * neither needs the engine rewritten.
 *
 *   nt: C (M x N) = beta C + A (M x K) B^T       B is (N x K): y = x W^T
 *   nn: C (M x N) = beta C + A (M x K) B         B is (K x N): dx = dy W
 *   tn: C (M x N) = beta C + A^T B               A is (K x M), B is (K x N): dW = dy^T x
 * lda/ldb/ldc are row strides (elements), so heads can be strided views.
 */
#ifndef LM_BACKEND_H
#define LM_BACKEND_H

typedef struct lm_backend {
    const char *name;
    void (*gemm_nt)(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);
    void (*gemm_nn)(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);
    void (*gemm_tn)(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);
} lm_backend;

/* The CPU backend (OpenBLAS). */
const lm_backend *lm_backend_cpu(void);

void lm_blas_set_threads(int n);

#endif
