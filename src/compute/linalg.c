/*
 * linalg.c -- the CPU backend's pieces of diff (backend.h, "diff's linear
 * algebra"): the streaming sums of a checkpoint difference, Householder
 * orthonormalization and the singular values of a thin matrix, in double
 * through LAPACK (OpenBLAS's). Workspaces are allocated per call: a call
 * follows a pass over a whole tensor, so their cost is small beside it.
 */
#include "compute/kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* LAPACK (Fortran ABI, in libopenblas). Character arguments carry their
 * hidden length at the end, as gfortran expects. */
extern void dgelqf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
                    const int *lwork, int *info);
extern void dorglq_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau,
                    double *work, const int *lwork, int *info);
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t uplo_len);

/* The statistics loop is the hot loop of a streaming diff: built for AVX-512
 * and AVX2 besides the baseline, picked at load time (GCC/Clang function
 * multiversioning). Reduction order follows the vector width, so sums agree
 * across machines to rounding, and exactly across runs and thread counts. */
#if defined(__x86_64__) && defined(__gnu_linux__) && !defined(LM_NO_CLONES) && \
    (defined(__clang__) ? __clang_major__ >= 14 : __GNUC__ >= 6)
#define DIFF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DIFF_CLONES
#endif

/* The difference of two F32 values is exact in double, so density compares
 * the exact |D| with tol; d becomes D rounded once to F32. */
/* (The cloned functions are static, called by plain exported ones: clang
 * emits the dispatcher of a target_clones function only where it is used.) */
DIFF_CLONES static void block_stats(lm_diff_sums *st, const float *restrict a, float *restrict d, long k,
                                    double tol) {
    double dd = 0, aa = 0, bb = 0, ab = 0;
    int64_t cnt = 0;
#pragma omp simd reduction(+ : dd, aa, bb, ab, cnt)
    for (long i = 0; i < k; i++) {
        double x = a[i], y = d[i];
        double dv = y - x;
        dd += dv * dv;
        aa += x * x;
        bb += y * y;
        ab += x * y;
        cnt += fabs(dv) > tol;
        d[i] = (float)dv;
    }
    st->dd += dd;
    st->aa += aa;
    st->bb += bb;
    st->ab += ab;
    st->cnt += cnt;
}

DIFF_CLONES static void overlap_counts(int64_t n[3], const float *restrict base, const float *restrict a,
                                       const float *restrict b, long cnt, double tol) {
    int64_t na = 0, nb = 0, nab = 0;
#pragma omp simd reduction(+ : na, nb, nab)
    for (long i = 0; i < cnt; i++) {
        int ia = fabs((double)a[i] - (double)base[i]) > tol, ib = fabs((double)b[i] - (double)base[i]) > tol;
        na += ia;
        nb += ib;
        nab += ia & ib;
    }
    n[0] += na;
    n[1] += nb;
    n[2] += nab;
}

void diff_block_stats(lm_diff_sums *st, const float *a, float *d, long k, double tol) { block_stats(st, a, d, k, tol); }

void mask_overlap_counts(int64_t n[3], const float *base, const float *a, const float *b, long cnt, double tol) {
    overlap_counts(n, base, a, b, cnt, tol);
}

static double *alloc_doubles(int64_t n, lm_err *err, const char *what, int *rc) {
    if (*rc) return NULL;
    uint64_t bytes;
    if (n < 0 || lm_mul_overflow((uint64_t)n, sizeof(double), &bytes) || (uint64_t)(size_t)bytes != bytes) {
        *rc = lm_fail(err, LM_ENOMEM, "out of memory (%s: size overflows)", what);
        return NULL;
    }
    double *p = lm_malloc(bytes ? (size_t)bytes : 1);
    if (!p) *rc = lm_nomem(err, (size_t)bytes, what);
    return p;
}

/* A row-major rows x l matrix is the column-major l x rows matrix x^T;
 * x^T = L Q' (LQ) makes the rows of Q' orthonormal, i.e. the columns of
 * x = Q'^T L^T. Rank-deficient input still gives orthonormal columns. */
int orthonormalize(float *x, int64_t rows, int l, lm_err *err) {
    int64_t k = rows * l;
    int M = l, N = (int)rows, info = 0, q = -1, rc = LM_OK;
    double *qd = alloc_doubles(k, err, "diff QR", &rc), *tau = alloc_doubles(l, err, "diff QR", &rc);
    double wq1 = 0, wq2 = 0, *work = NULL;
    if (rc == LM_OK) {
        dgelqf_(&M, &N, qd, &M, tau, &wq1, &q, &info);
        dorglq_(&M, &N, &M, qd, &M, tau, &wq2, &q, &info);
    }
    int lwork = (int)(wq1 > wq2 ? wq1 : wq2) + l + 1;
    work = alloc_doubles(lwork, err, "LAPACK workspace", &rc);
    if (rc == LM_OK) {
        for (int64_t i = 0; i < k; i++) qd[i] = x[i];
        info = 0;
        dgelqf_(&M, &N, qd, &M, tau, work, &lwork, &info);
        if (info == 0) dorglq_(&M, &N, &M, qd, &M, tau, work, &lwork, &info);
        if (info != 0) rc = lm_fail(err, LM_EINTERNAL, "diff: LAPACK LQ failed (info %d)", info);
    }
    if (rc == LM_OK)
        for (int64_t i = 0; i < k; i++) x[i] = (float)qd[i];
    lm_free(qd);
    lm_free(tau);
    lm_free(work);
    return rc;
}

int singular_values(const float *z, int64_t n, int l, double *sv, lm_err *err) {
    int64_t k = n * l;
    int rc = LM_OK, N = l, info = 0, q = -1, liq = -1, iq = 0;
    double *qd = alloc_doubles(k, err, "diff Gram", &rc), *g = alloc_doubles((int64_t)l * l, err, "diff Gram", &rc);
    double *w = alloc_doubles(l, err, "diff eigenvalues", &rc), wq = 0, *work = NULL;
    int *iwork = NULL;
    if (rc == LM_OK) dsyevd_("N", "L", &N, g, &N, w, &wq, &q, &iq, &liq, &info, 1, 1);
    int lwork = (int)wq + 2 * l + 1, liwork = iq > 1 ? iq : 1;
    work = alloc_doubles(lwork, err, "LAPACK workspace", &rc);
    if (rc == LM_OK) {
        iwork = lm_malloc(sizeof(int) * (size_t)liwork);
        if (!iwork) rc = lm_nomem(err, sizeof(int) * (size_t)liwork, "LAPACK workspace");
    }
    if (rc == LM_OK) {
        for (int64_t i = 0; i < k; i++) qd[i] = z[i];
        /* g = qd^T qd, upper triangle in row-major = lower in column-major */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, l, (int)n, 1.0, qd, l, 0.0, g, l);
        info = 0;
        dsyevd_("N", "L", &N, g, &N, w, work, &lwork, iwork, &liwork, &info, 1, 1);
        if (info != 0) rc = lm_fail(err, LM_EINTERNAL, "diff: LAPACK dsyevd failed (info %d)", info);
    }
    for (int i = 0; rc == LM_OK && i < l; i++) { /* ascending -> descending */
        double e = w[l - 1 - i];
        sv[i] = e > 0 ? sqrt(e) : 0.0;
    }
    lm_free(qd);
    lm_free(g);
    lm_free(w);
    lm_free(work);
    lm_free(iwork);
    return rc;
}
