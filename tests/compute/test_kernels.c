/*
 * test_kernels.c -- kernels against naive double-precision versions on sizes
 * the tiny reference models do not reach: blocked causal attention over
 * several query blocks, with and without a sliding window, forward and
 * backward; rmsnorm and the gated activations against finite differences.
 */
#include "test.h"

#include "compute/kernels.h"

#include <omp.h>

static double frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffff) / 65536.0 * 2.0 - 1.0;
}

/* naive attention in double: att (n, H*hd), and grads for a given datt */
static void naive_attention(double *att, double *dq, double *dk, double *dv, const float *q, const float *k,
                            const float *v, const float *datt, int n, int H, int KV, int hd, double scale, int window) {
    int qs = H * hd, ks = KV * hd, group = H / KV;
    double *p = calloc((size_t)n, sizeof(double)), *dp = calloc((size_t)n, sizeof(double));
    memset(dq, 0, sizeof(double) * (size_t)n * qs);
    memset(dk, 0, sizeof(double) * (size_t)n * ks);
    memset(dv, 0, sizeof(double) * (size_t)n * ks);
    for (int h = 0; h < H; h++) {
        int g = h / group;
        for (int i = 0; i < n; i++) {
            int jf = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
            double mx = -1e300, sum = 0;
            for (int j = jf; j <= i; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)q[i * qs + h * hd + d] * k[j * ks + g * hd + d];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (int j = jf; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
            for (int j = jf; j <= i; j++) p[j] /= sum;
            for (int d = 0; d < hd; d++) {
                double a = 0;
                for (int j = jf; j <= i; j++) a += p[j] * v[j * ks + g * hd + d];
                att[i * qs + h * hd + d] = a;
            }
            /* backward of this row */
            double dot = 0;
            for (int j = jf; j <= i; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)datt[i * qs + h * hd + d] * v[j * ks + g * hd + d];
                dp[j] = s;
                dot += p[j] * s;
                for (int d = 0; d < hd; d++) dv[j * ks + g * hd + d] += p[j] * datt[i * qs + h * hd + d];
            }
            for (int j = jf; j <= i; j++) {
                double ds = p[j] * (dp[j] - dot) * scale;
                for (int d = 0; d < hd; d++) {
                    dq[i * qs + h * hd + d] += ds * k[j * ks + g * hd + d];
                    dk[j * ks + g * hd + d] += ds * q[i * qs + h * hd + d];
                }
            }
        }
    }
    free(p);
    free(dp);
}

static double max_rel(const float *a, const double *b, long n) {
    double md = 0, mb = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= md)) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / (mb > 0 ? mb : 1);
}

static void check_attention(int n, int H, int KV, int hd, int window) {
    unsigned seed = 42u + (unsigned)n + (unsigned)window;
    int qs = H * hd, ks = KV * hd;
    float *q = malloc(sizeof(float) * (size_t)n * qs), *k = malloc(sizeof(float) * (size_t)n * ks);
    float *v = malloc(sizeof(float) * (size_t)n * ks), *datt = malloc(sizeof(float) * (size_t)n * qs);
    for (long i = 0; i < (long)n * qs; i++) q[i] = (float)frand(&seed), datt[i] = (float)frand(&seed);
    for (long i = 0; i < (long)n * ks; i++) k[i] = (float)frand(&seed), v[i] = (float)frand(&seed);
    float *att = malloc(sizeof(float) * (size_t)n * qs), *P = malloc(sizeof(float) * (size_t)H * n * n);
    float *dq = malloc(sizeof(float) * (size_t)n * qs), *dk = malloc(sizeof(float) * (size_t)n * ks);
    float *dv = malloc(sizeof(float) * (size_t)n * ks);
    size_t nscr = attention_scratch_floats(n, H, hd, 4);
    float *scratch = malloc(sizeof(float) * nscr);
    /* poison what the kernels must not read */
    for (long i = 0; i < (long)H * n * n; i++) P[i] = NAN;
    for (size_t i = 0; i < nscr; i++) scratch[i] = NAN;
    double scale = 1.0 / sqrt(hd);
    const lm_backend *be = lm_backend_cpu();
    attention_forward(be, att, P, q, k, v, n, H, KV, hd, (float)scale, window);
    omp_set_num_threads(4);
    attention_backward(be, dq, dk, dv, datt, P, q, k, v, scratch, 4, n, H, KV, hd, (float)scale, window);
    double *ratt = malloc(sizeof(double) * (size_t)n * qs), *rdq = malloc(sizeof(double) * (size_t)n * qs);
    double *rdk = malloc(sizeof(double) * (size_t)n * ks), *rdv = malloc(sizeof(double) * (size_t)n * ks);
    naive_attention(ratt, rdq, rdk, rdv, q, k, v, datt, n, H, KV, hd, scale, window);
    double e1 = max_rel(att, ratt, (long)n * qs), e2 = max_rel(dq, rdq, (long)n * qs);
    double e3 = max_rel(dk, rdk, (long)n * ks), e4 = max_rel(dv, rdv, (long)n * ks);
    printf("  attention n=%d H=%d KV=%d hd=%d window=%d: att %.2g dq %.2g dk %.2g dv %.2g\n", n, H, KV, hd, window, e1,
           e2, e3, e4);
    CHECK(e1 < 1e-5 && e2 < 1e-4 && e3 < 1e-4 && e4 < 1e-4, "attention n=%d window=%d differs from the naive one", n,
          window);
    /* P: rows sum to 1, zero outside the visible keys */
    int ok = 1;
    for (int h = 0; h < H && ok; h++)
        for (int i = 0; i < n && ok; i++) {
            double s = 0;
            int jf = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
            for (int j = 0; j < n; j++) {
                float x = P[(long)h * n * n + (long)i * n + j];
                if ((j < jf || j > i) && x != 0.0f) ok = 0;
                s += x;
            }
            if (fabs(s - 1) > 1e-5) ok = 0;
        }
    CHECK(ok, "attention probabilities malformed (n=%d window=%d)", n, window);
    free(q), free(k), free(v), free(datt), free(att), free(P), free(dq), free(dk), free(dv), free(scratch);
    free(ratt), free(rdq), free(rdk), free(rdv);
}

/* rmsnorm and the gated activations: backward vs central differences */
static void check_fd(void) {
    unsigned seed = 7;
    enum { N = 3, C = 40 };
    float x[N * C], w[C], dout[N * C], out[N * C], rstd[N], dx[N * C];
    for (int i = 0; i < N * C; i++) x[i] = (float)frand(&seed) * 2, dout[i] = (float)frand(&seed);
    for (int i = 0; i < C; i++) w[i] = (float)frand(&seed);
    for (int add_one = 0; add_one < 2; add_one++) {
        memset(dx, 0, sizeof dx);
        rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f, add_one);
        rmsnorm_backward(dx, dout, x, w, rstd, N, C, add_one);
        double worst = 0;
        for (int i = 0; i < N * C; i++) {
            float save = x[i], h = 1e-3f;
            double lp = 0, lm = 0;
            x[i] = save + h;
            rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f, add_one);
            for (int j = 0; j < N * C; j++) lp += (double)out[j] * dout[j];
            x[i] = save - h;
            rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f, add_one);
            for (int j = 0; j < N * C; j++) lm += (double)out[j] * dout[j];
            x[i] = save;
            worst = fmax(worst, fabs((lp - lm) / (2 * h) - dx[i]));
        }
        CHECK(worst < 2e-3, "rmsnorm backward (add_one %d) vs finite differences: %.3g", add_one, worst);
    }
    for (int gelu = 0; gelu < 2; gelu++) {
        float g[N * C], u[N * C], a[N * C], dg[N * C], du[N * C];
        for (int i = 0; i < N * C; i++) g[i] = (float)frand(&seed) * 4, u[i] = (float)frand(&seed);
        glu_backward(dg, du, dout, g, u, N * C, gelu);
        double worst = 0;
        for (int i = 0; i < N * C; i++) {
            float h = 1e-3f, s = g[i];
            g[i] = s + h;
            glu_forward(a, g, u, N * C, gelu);
            double ap = a[i];
            g[i] = s - h;
            glu_forward(a, g, u, N * C, gelu);
            double am = a[i];
            g[i] = s;
            worst = fmax(worst, fabs((ap - am) / (2 * h) * dout[i] - dg[i]));
            glu_forward(a, g, u, N * C, gelu);
            CHECK(fabs(du[i] - dout[i] * a[i] / u[i]) < 1e-4 || fabs(u[i]) < 1e-3, "glu du");
        }
        CHECK(worst < 2e-3, "glu backward (gelu %d) vs finite differences: %.3g", gelu, worst);
    }
}

int main(void) {
    check_attention(300, 4, 2, 16, 0);   /* three query blocks, causal */
    check_attention(300, 4, 2, 16, 100); /* sliding window across blocks */
    check_attention(129, 2, 1, 8, 128);  /* window == block size, ragged last block */
    check_attention(7, 3, 3, 4, 0);      /* one short block */
    check_fd();
    return TEST_END();
}
