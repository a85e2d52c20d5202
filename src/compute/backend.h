/*
 * backend.h -- the matrix-multiply interface the engine computes through.
 *
 * Everything heavy in a transformer's forward and backward pass is one of
 * three products; a backend provides them for row-major F32 matrices. The CPU
 * backend (backend_cpu.c) calls OpenBLAS sgemm. The engine takes its backend
 * from lm_eng_set_backend (engine.h; lm_backend_cpu() by default), and every
 * product of a pass goes through it: the seven modules' forward and input
 * gradients, attention's QK^T, PV and their backward (kernels.c), the output
 * head, and the methods' weight gradients dW = dY^T X (attribute.c).
 * tests/compute/test_backend_wrap.c shows a second backend (a copying
 * wrapper) passing the engine's reference tests with no change elsewhere.
 *
 * Not yet behind this interface (issue 9, part 3): the element-wise and
 * reduction kernels (RMSNorm, RoPE, softmax, GLU, cross-entropy, the methods'
 * grad_reduce/dot_reduce), dequantization, and diff.c's BLAS/LAPACK calls all
 * run on host pointers, so a device backend today would still copy operands
 * per product; buffers are not yet allocated through the backend.
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
