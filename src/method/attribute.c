/*
 * attribute.c -- attribution methods from data (docs/METHODS.md).
 *
 * Every method is a sum over sequences of a per-sequence quantity, reduced
 * per (layer, module) while the engine's pass runs: weight gradients
 * G = dY^T X are formed one module at a time inside a hook and reduced at
 * once, never stored. The accumulated sums are checkpointed so that an
 * interrupted run resumes and ends bit-identical to an uninterrupted one.
 */
#include "compute/backend.h"
#include "compute/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const lm_method_names[LM_METHOD_COUNT] = {
    "grad-weight", "grad-weight-signed", "fisher", "grad-norm", "act-grad",
    "ig", "ablate", "ablate-mean", "act-sq", "wanda",
};

int lm_method_parse(const char *s, lm_method *out) {
    for (int i = 0; i < LM_METHOD_COUNT; i++)
        if (!strcmp(s, lm_method_names[i])) {
            *out = (lm_method)i;
            return LM_OK;
        }
    return LM_EARG;
}

void lm_attr_opts_default(lm_attr_opts *o) {
    memset(o, 0, sizeof *o);
    o->ig_steps = 32;
    o->batch = 1;
    o->checkpoint_secs = 30.0;
}

/* ------------------------------------------------------------------------ */
/* Accumulated state (what the checkpoint holds)                             */
/* ------------------------------------------------------------------------ */

#define NM LM_N_MODULES

typedef struct acc {
    lm_engine *e;
    lm_method method;
    int L;
    double *sum;     /* (L, 7) the method's value */
    double *aux;     /* (L, 7) IG: exact deltas; ACT_SQ/WANDA: unused */
    double *vec;     /* ACT_SQ/WANDA: per-module input column sums of squares; ABLATE_MEAN: output sums */
    size_t *vec_off; /* (L*7 + 1) offsets into vec */
    double *bi;      /* (L) block influence sums */
    double loss_sum;
    int64_t n_targets, n_tokens, n_pos_mean;
    int next_seq;    /* sequences done (pass 2 for ABLATE_MEAN) */
    int phase;       /* ABLATE_MEAN: 0 = collecting means, 1 = ablating */
    /* per-call scratch */
    float *dW;       /* largest out*in */
    float *mu;       /* ABLATE_MEAN: F32 means of the current module */
    int target_l, target_m; /* IG hook: the module being integrated */
    float alpha;
    double ig_dot;   /* IG hook result */
} acc;

static int is_weight_method(lm_method m) {
    return m == LM_METHOD_GRAD_WEIGHT || m == LM_METHOD_GRAD_WEIGHT_SIGNED || m == LM_METHOD_FISHER ||
           m == LM_METHOD_GRAD_NORM;
}

/* Size of the per-module vectors of a method (0 = none). */
static size_t vec_len(const lm_engine *e, lm_method method, int m) {
    if (method == LM_METHOD_ACT_SQ || method == LM_METHOD_WANDA) return (size_t)lm_eng_module_in(e, m);
    if (method == LM_METHOD_ABLATE_MEAN) return (size_t)lm_eng_module_out(e, m);
    return 0;
}

static void acc_free(acc *a) {
    lm_free(a->sum);
    lm_free(a->aux);
    lm_free(a->vec);
    lm_free(a->vec_off);
    lm_free(a->bi);
    lm_free(a->dW);
    lm_free(a->mu);
    memset(a, 0, sizeof *a);
}

static int acc_init(acc *a, lm_engine *e, lm_method method, lm_err *err) {
    memset(a, 0, sizeof *a);
    a->e = e;
    a->method = method;
    a->L = lm_eng_config(e)->n_layer;
    int L = a->L;
    a->sum = lm_calloc((size_t)L * NM, sizeof(double));
    a->aux = lm_calloc((size_t)L * NM, sizeof(double));
    a->bi = lm_calloc((size_t)L, sizeof(double));
    a->vec_off = lm_calloc((size_t)L * NM + 1, sizeof(size_t));
    size_t maxw = 0, maxout = 0;
    for (int m = 0; m < NM; m++) {
        size_t w = (size_t)lm_eng_module_out(e, m) * (size_t)lm_eng_module_in(e, m);
        if (w > maxw) maxw = w;
        if ((size_t)lm_eng_module_out(e, m) > maxout) maxout = (size_t)lm_eng_module_out(e, m);
    }
    if (!a->sum || !a->aux || !a->bi || !a->vec_off) goto nomem;
    for (int i = 0; i < L * NM; i++) a->vec_off[i + 1] = a->vec_off[i] + vec_len(e, method, i % NM);
    if (a->vec_off[L * NM]) {
        a->vec = lm_calloc(a->vec_off[L * NM], sizeof(double));
        if (!a->vec) goto nomem;
    }
    if (is_weight_method(method)) {
        a->dW = lm_malloc(maxw * sizeof(float));
        if (!a->dW) goto nomem;
    }
    if (method == LM_METHOD_ABLATE_MEAN) {
        a->mu = lm_malloc(maxout * sizeof(float));
        if (!a->mu) goto nomem;
    }
    return LM_OK;
nomem:
    acc_free(a);
    return lm_nomem(err, maxw * sizeof(float), "attribution sums");
}

/* ------------------------------------------------------------------------ */
/* Checkpoint file: magic, shape, fingerprint, then the sums as doubles      */
/* ------------------------------------------------------------------------ */

#define CKPT_MAGIC "LMCKPT01"

typedef struct ckpt_head {
    char magic[8];
    int32_t method, L, phase, next_seq;
    int32_t ig_steps, n_seq, batch, pad;
    int64_t n_targets, n_tokens, n_pos_mean;
    uint64_t data_hash;
    double loss_sum;
    uint64_t vec_len;
} ckpt_head;

/* FNV-1a over every token and mask byte: the checkpoint belongs to this data. */
static uint64_t data_hash(const lm_dataset *d) {
    uint64_t h = 1469598103934665603ull;
    for (int s = 0; s < d->n_seq; s++) {
        const lm_seq *q = &d->seqs[s];
        for (int t = 0; t < q->n; t++) {
            uint32_t v = (uint32_t)q->tok[t] ^ ((uint32_t)q->mask[t] << 31);
            for (int b = 0; b < 4; b++) {
                h ^= (v >> (8 * b)) & 0xff;
                h *= 1099511628211ull;
            }
        }
        h ^= 0xff;
        h *= 1099511628211ull;
    }
    return h;
}

static int ckpt_save(const acc *a, const lm_dataset *d, const lm_attr_opts *o, lm_err *err) {
    lm_atomic f;
    int rc = lm_atomic_open(&f, o->checkpoint_path, err);
    if (rc) return rc;
    ckpt_head h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CKPT_MAGIC, 8);
    h.method = a->method;
    h.L = a->L;
    h.phase = a->phase;
    h.next_seq = a->next_seq;
    h.ig_steps = o->ig_steps;
    h.batch = o->batch;
    h.n_seq = d->n_seq;
    h.n_targets = a->n_targets;
    h.n_tokens = a->n_tokens;
    h.n_pos_mean = a->n_pos_mean;
    h.data_hash = data_hash(d);
    h.loss_sum = a->loss_sum;
    h.vec_len = a->vec_off[a->L * NM];
    size_t LM7 = (size_t)a->L * NM;
    int ok = fwrite(&h, sizeof h, 1, f.f) == 1 && fwrite(a->sum, sizeof(double), LM7, f.f) == LM7 &&
             fwrite(a->aux, sizeof(double), LM7, f.f) == LM7 &&
             fwrite(a->bi, sizeof(double), (size_t)a->L, f.f) == (size_t)a->L &&
             (h.vec_len == 0 || fwrite(a->vec, sizeof(double), h.vec_len, f.f) == h.vec_len);
    if (!ok) {
        lm_atomic_abort(&f);
        return lm_fail(err, LM_EIO, "%s: cannot write checkpoint", o->checkpoint_path);
    }
    return lm_atomic_commit(&f, err);
}

/* Load a checkpoint into a; LM_OK with a->next_seq > 0 on success, -1 when
 * the file does not exist, an error when it belongs to another run. */
static int ckpt_load(acc *a, const lm_dataset *d, const lm_attr_opts *o, lm_err *err) {
    FILE *f = fopen(o->checkpoint_path, "rb");
    if (!f) return -1;
    ckpt_head h;
    const char *p = o->checkpoint_path;
    size_t LM7 = (size_t)a->L * NM;
    int rc = LM_OK;
    if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, CKPT_MAGIC, 8)) {
        rc = LM_CORRUPT(err, "%s: not a layermap checkpoint (or truncated)", p);
    } else if (h.method != (int32_t)a->method || h.L != a->L || h.vec_len != a->vec_off[a->L * NM] ||
               h.ig_steps != o->ig_steps || h.batch != o->batch) {
        rc = lm_fail(err, LM_EARG, "%s: checkpoint is for another method, model or batch size (method %s, %d layers, batch %d)", p,
                     h.method >= 0 && h.method < LM_METHOD_COUNT ? lm_method_names[h.method] : "?", h.L, h.batch);
    } else if (h.n_seq != d->n_seq || h.data_hash != data_hash(d)) {
        rc = lm_fail(err, LM_EARG, "%s: checkpoint is for other data (%d sequences)", p, h.n_seq);
    } else if (h.next_seq < 0 || h.next_seq > d->n_seq || h.phase < 0 || h.phase > 1) {
        rc = LM_CORRUPT(err, "%s: checkpoint position %d out of range", p, h.next_seq);
    } else if (fread(a->sum, sizeof(double), LM7, f) != LM7 || fread(a->aux, sizeof(double), LM7, f) != LM7 ||
               fread(a->bi, sizeof(double), (size_t)a->L, f) != (size_t)a->L ||
               (h.vec_len && fread(a->vec, sizeof(double), h.vec_len, f) != h.vec_len)) {
        rc = LM_CORRUPT(err, "%s: checkpoint truncated", p);
    } else {
        a->phase = h.phase;
        a->next_seq = h.next_seq;
        a->n_targets = h.n_targets;
        a->n_tokens = h.n_tokens;
        a->n_pos_mean = h.n_pos_mean;
        a->loss_sum = h.loss_sum;
    }
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Hooks                                                                     */
/* ------------------------------------------------------------------------ */

/* Reduce one sequence's weight gradient G (out*in = cnt) with W for the method. */
static double reduce_grad(lm_method method, const float *W, const float *G, long cnt) {
    double s = 0.0;
    switch (method) {
    case LM_METHOD_GRAD_WEIGHT:
#pragma omp parallel for reduction(+ : s) schedule(static)
        for (long i = 0; i < cnt; i++) s += fabs((double)W[i] * G[i]);
        return s;
    case LM_METHOD_GRAD_WEIGHT_SIGNED:
#pragma omp parallel for reduction(+ : s) schedule(static)
        for (long i = 0; i < cnt; i++) s += (double)W[i] * G[i];
        return s;
    default: /* fisher, grad-norm */
#pragma omp parallel for reduction(+ : s) schedule(static)
        for (long i = 0; i < cnt; i++) s += (double)G[i] * G[i];
        return method == LM_METHOD_GRAD_NORM ? sqrt(s) : s;
    }
}

/* Weight-gradient methods: G_s = dY_s^T X_s (out, in) for each sequence s of
 * the pass, reduced with W at once and never stored. */
static int hook_weight(void *ctx, int l, int m, const float *dY, const float *Y, const float *X,
                       const float *W, int n) {
    (void)Y;
    (void)n;
    acc *a = ctx;
    int out = lm_eng_module_out(a->e, m), in = lm_eng_module_in(a->e, m);
    const int *off;
    int nseg = lm_eng_segments(a->e, &off);
    for (int sg = 0; sg < nseg; sg++) {
        lm_backend_cpu()->gemm_tn(out, in, off[sg + 1] - off[sg], dY + (long)off[sg] * out, out,
                                  X + (long)off[sg] * in, in, 0.0f, a->dW, in);
        a->sum[l * NM + m] += reduce_grad(a->method, W, a->dW, (long)out * in);
    }
    return 0;
}

/* sum over the sequence of dY . Y */
static double dot_rows(const float *dY, const float *Y, long cnt) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (long i = 0; i < cnt; i++) s += (double)dY[i] * Y[i];
    return s;
}

static int hook_act_grad(void *ctx, int l, int m, const float *dY, const float *Y, const float *X,
                         const float *W, int n) {
    (void)X;
    (void)W;
    acc *a = ctx;
    a->sum[l * NM + m] -= dot_rows(dY, Y, (long)n * lm_eng_module_out(a->e, m));
    return 0;
}

/* IG: y . g(alpha) at the one module being integrated; Y here is alpha * y. */
static int hook_ig(void *ctx, int l, int m, const float *dY, const float *Y, const float *X,
                   const float *W, int n) {
    (void)X;
    (void)W;
    acc *a = ctx;
    if (l == a->target_l && m == a->target_m)
        a->ig_dot = dot_rows(dY, Y, (long)n * lm_eng_module_out(a->e, m)) / a->alpha;
    return 0;
}

/* act-sq / wanda: input energy, total and per input column. */
static int hook_act_stats(void *ctx, int l, int m, const float *Y, const float *X, int n) {
    (void)Y;
    acc *a = ctx;
    int in = lm_eng_module_in(a->e, m);
    double *col = a->vec + a->vec_off[l * NM + m];
    double tot = 0.0;
#pragma omp parallel for reduction(+ : tot) schedule(static)
    for (int j = 0; j < in; j++) {
        double s = 0.0;
        for (int t = 0; t < n; t++) {
            double x = X[(long)t * in + j];
            s += x * x;
        }
        col[j] += s;
        tot += s;
    }
    a->sum[l * NM + m] += tot;
    return 0;
}

/* per-layer 1 - cos(h_in, h_out), summed over tokens */
static int hook_block(void *ctx, int l, const float *h_in, const float *h_out, int n) {
    acc *a = ctx;
    int D = lm_eng_config(a->e)->dim;
    double s = 0.0;
    for (int t = 0; t < n; t++) {
        const float *x = h_in + (long)t * D, *y = h_out + (long)t * D;
        double xy = 0, xx = 0, yy = 0;
        for (int j = 0; j < D; j++) {
            xy += (double)x[j] * y[j];
            xx += (double)x[j] * x[j];
            yy += (double)y[j] * y[j];
        }
        s += 1.0 - xy / (sqrt(xx) * sqrt(yy) + 1e-30);
    }
    a->bi[l] += s;
    return 0;
}

/* ablate-mean, pass 1: sum of each module's output rows. */
static int hook_mean(void *ctx, int l, int m, const float *Y, const float *X, int n) {
    (void)X;
    acc *a = ctx;
    int out = lm_eng_module_out(a->e, m);
    double *v = a->vec + a->vec_off[l * NM + m];
    for (int t = 0; t < n; t++)
        for (int j = 0; j < out; j++) v[j] += Y[(long)t * out + j];
    return 0;
}

/* ------------------------------------------------------------------------ */
/* One sequence                                                              */
/* ------------------------------------------------------------------------ */

static int seq_targets(const lm_seq *s) {
    int c = 0;
    for (int t = 0; t + 1 < s->n; t++) c += s->mask[t] != 0;
    return c;
}

/* One pass over nb sequences packed together (sums are per sequence). */
static int run_batch(acc *a, const lm_seq *s, int nb, const lm_attr_opts *o, lm_err *err) {
    lm_engine *e = a->e;
    int L = a->L, rc;
    double clean = 0.0;
    lm_hooks hk = {a, NULL, NULL, NULL};
    switch (a->method) {
    case LM_METHOD_GRAD_WEIGHT:
    case LM_METHOD_GRAD_WEIGHT_SIGNED:
    case LM_METHOD_FISHER:
    case LM_METHOD_GRAD_NORM:
    case LM_METHOD_ACT_GRAD:
        hk.bwd = a->method == LM_METHOD_ACT_GRAD ? hook_act_grad : hook_weight;
        rc = lm_eng_forward_batch(e, s, nb, 1, NULL, NULL, 1, &clean, NULL, 0, err);
        if (rc == LM_OK) rc = lm_eng_backward(e, 0, NULL, &hk, err);
        break;
    case LM_METHOD_ACT_SQ:
    case LM_METHOD_WANDA:
        hk.fwd = hook_act_stats;
        hk.block = hook_block;
        rc = lm_eng_forward_batch(e, s, nb, 1, NULL, &hk, 0, &clean, NULL, 0, err);
        break;
    case LM_METHOD_ABLATE:
    case LM_METHOD_ABLATE_MEAN:
        if (a->method == LM_METHOD_ABLATE_MEAN && a->phase == 0) {
            hk.fwd = hook_mean;
            rc = lm_eng_forward_batch(e, s, nb, 1, NULL, &hk, 0, &clean, NULL, 0, err);
            for (int i = 0; rc == LM_OK && i < nb; i++) a->n_pos_mean += s[i].n;
            return rc; /* the loss is counted in phase 1 */
        }
        rc = lm_eng_forward_batch(e, s, nb, 1, NULL, NULL, 0, &clean, NULL, 0, err);
        for (int l = 0; l < L && rc == LM_OK; l++)
            for (int m = 0; m < NM && rc == LM_OK; m++) {
                lm_interv iv = {LM_IV_SCALE, l, m, 0.0f, NULL};
                if (a->method == LM_METHOD_ABLATE_MEAN) {
                    const double *v = a->vec + a->vec_off[l * NM + m];
                    int out = lm_eng_module_out(e, m);
                    for (int j = 0; j < out; j++) a->mu[j] = (float)(v[j] / (double)a->n_pos_mean);
                    iv.kind = LM_IV_REPLACE;
                    iv.vec = a->mu;
                }
                double lab;
                rc = lm_eng_forward_from(e, l, 1, &iv, NULL, 0, &lab, err);
                if (rc == LM_OK) a->sum[l * NM + m] += lab - clean;
            }
        break;
    case LM_METHOD_IG: {
        rc = lm_eng_forward_batch(e, s, nb, 1, NULL, NULL, 0, &clean, NULL, 0, err);
        hk.bwd = hook_ig;
        int N = o->ig_steps > 0 ? o->ig_steps : 32;
        for (int l = 0; l < L && rc == LM_OK; l++)
            for (int m = 0; m < NM && rc == LM_OK; m++) {
                double integral = 0.0, l0;
                lm_interv iv = {LM_IV_SCALE, l, m, 0.0f, NULL};
                rc = lm_eng_forward_from(e, l, 1, &iv, NULL, 0, &l0, err);
                if (rc) break;
                a->aux[l * NM + m] += l0 - clean;
                a->target_l = l;
                a->target_m = m;
                for (int k = 0; k < N && rc == LM_OK; k++) {
                    iv.alpha = a->alpha = (float)((k + 0.5) / N);
                    a->ig_dot = 0.0;
                    rc = lm_eng_forward_from(e, l, 1, &iv, NULL, 1, NULL, err);
                    if (rc == LM_OK) rc = lm_eng_backward(e, l, &iv, &hk, err);
                    integral += a->ig_dot;
                }
                a->sum[l * NM + m] -= integral / N;
            }
        break;
    }
    default:
        return lm_fail(err, LM_EARG, "unknown method %d", (int)a->method);
    }
    if (rc) return rc;
    a->loss_sum += clean;
    for (int i = 0; i < nb; i++) {
        a->n_targets += seq_targets(&s[i]);
        a->n_tokens += s[i].n;
    }
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                    */
/* ------------------------------------------------------------------------ */

static lm_matrix *matrix_from(const double *v, int L, const char *method) {
    lm_matrix *m = lm_matrix_new(L);
    if (!m) return NULL;
    for (int l = 0; l < L; l++)
        for (int j = 0; j < NM; j++) lm_matrix_set(m, l, j, v[l * NM + j]);
    snprintf(m->method, sizeof m->method, "%s", method);
    return m;
}

/* wanda from the column energies: sum_ij |W_ij| sqrt(colsq_j) */
static int wanda_matrix(acc *a, double *out, lm_err *err) {
    for (int l = 0; l < a->L; l++)
        for (int m = 0; m < NM; m++) {
            const float *W;
            int rc = lm_eng_weight(a->e, l, m, &W, err);
            if (rc) return rc;
            int rows = lm_eng_module_out(a->e, m), in = lm_eng_module_in(a->e, m);
            const double *col = a->vec + a->vec_off[l * NM + m];
            double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
            for (int r = 0; r < rows; r++) {
                double rs = 0.0;
                for (int j = 0; j < in; j++) rs += fabs((double)W[(long)r * in + j]) * sqrt(col[j]);
                s += rs;
            }
            out[l * NM + m] = s;
        }
    return LM_OK;
}

static int finish(acc *a, lm_attr_result *res, lm_err *err) {
    int L = a->L;
    lm_method meth = a->method;
    double *wanda = NULL;
    if (meth == LM_METHOD_ACT_SQ || meth == LM_METHOD_WANDA) {
        wanda = lm_malloc(sizeof(double) * (size_t)L * NM);
        res->block_influence = lm_malloc(sizeof(double) * (size_t)L);
        if (!wanda || !res->block_influence) {
            lm_free(wanda);
            return lm_nomem(err, sizeof(double) * (size_t)L * NM, "wanda");
        }
        int rc = wanda_matrix(a, wanda, err);
        if (rc) {
            lm_free(wanda);
            return rc;
        }
        for (int l = 0; l < L; l++) res->block_influence[l] = a->n_tokens ? a->bi[l] / (double)a->n_tokens : 0.0;
        res->m = matrix_from(meth == LM_METHOD_WANDA ? wanda : a->sum, L, lm_method_names[meth]);
        res->also = matrix_from(meth == LM_METHOD_WANDA ? a->sum : wanda, L,
                                lm_method_names[meth == LM_METHOD_WANDA ? LM_METHOD_ACT_SQ : LM_METHOD_WANDA]);
        lm_free(wanda);
        if (res->m && res->also) {
            res->m->layer_extra = lm_malloc(sizeof(double) * (size_t)L);
            if (res->m->layer_extra) {
                memcpy(res->m->layer_extra, res->block_influence, sizeof(double) * (size_t)L);
                snprintf(res->m->layer_extra_name, sizeof res->m->layer_extra_name, "block-influence");
            }
        }
    } else {
        res->m = matrix_from(a->sum, L, lm_method_names[meth]);
        if (meth == LM_METHOD_IG) {
            res->also = matrix_from(a->aux, L, "ablate");
            double num = 0, den = 0;
            for (int i = 0; i < L * NM; i++) {
                num += fabs(a->sum[i] - a->aux[i]);
                den += fabs(a->aux[i]);
            }
            res->ig_gap = den > 0 ? num / den : 0.0;
        }
    }
    if (!res->m || ((meth == LM_METHOD_IG || meth == LM_METHOD_ACT_SQ || meth == LM_METHOD_WANDA) && !res->also))
        return lm_nomem(err, sizeof(double) * (size_t)L * NM, "result matrix");
    return LM_OK;
}

void lm_attr_result_free(lm_attr_result *r) {
    if (!r) return;
    lm_matrix_free(r->m);
    lm_matrix_free(r->also);
    lm_free(r->block_influence);
    memset(r, 0, sizeof *r);
}

int lm_attribute(lm_engine *e, const lm_dataset *d, lm_method method, const lm_attr_opts *opts,
                 lm_attr_result *res, lm_err *err) {
    memset(res, 0, sizeof *res);
    lm_attr_opts o;
    if (opts)
        o = *opts;
    else
        lm_attr_opts_default(&o);
    if (o.ig_steps <= 0) o.ig_steps = 32;
    if (o.batch <= 0) o.batch = 1;
    if (o.batch > lm_eng_max_batch(e))
        return lm_fail(err, LM_EARG, "batch of %d sequences, but the engine was made for %d", o.batch,
                       lm_eng_max_batch(e));
    if ((int)method < 0 || method >= LM_METHOD_COUNT) return lm_fail(err, LM_EARG, "unknown method %d", (int)method);
    if (!d || d->n_seq <= 0) return lm_fail(err, LM_EARG, "no data to attribute");
    double t0 = lm_now();
    acc a;
    int rc = acc_init(&a, e, method, err);
    if (rc) return rc;
    if (o.checkpoint_path && o.resume) {
        rc = ckpt_load(&a, d, &o, err);
        if (rc == -1) rc = LM_OK; /* nothing to resume: start fresh */
        if (rc) {
            acc_free(&a);
            return rc;
        }
    }
    int phases = method == LM_METHOD_ABLATE_MEAN ? 2 : 1;
    double last_save = lm_now();
    int done_this_call = 0, stopped = 0, canceled = 0;
    /* progress: tokens over all phases */
    double total = (double)d->n_tokens * phases;
    double done_tok = (double)d->n_tokens * a.phase; /* tokens of finished phases and sequences */
    for (int s = 0; s < a.next_seq; s++) done_tok += d->seqs[s].n;
    for (; a.phase < phases && !stopped; a.phase++) {
        while (a.next_seq < d->n_seq) {
            if (o.max_seqs > 0 && done_this_call >= o.max_seqs) {
                stopped = 1;
                break;
            }
            if (o.cancel && *o.cancel) { /* cancel (minimal; see lm_attribute_many) */
                stopped = canceled = 1;
                break;
            }
            int nb = d->n_seq - a.next_seq < o.batch ? d->n_seq - a.next_seq : o.batch;
            rc = run_batch(&a, &d->seqs[a.next_seq], nb, &o, err);
            if (rc) goto out;
            a.next_seq += nb;
            done_this_call += nb;
            for (int s = a.next_seq - nb; s < a.next_seq; s++) done_tok += d->seqs[s].n;
            if (o.progress) o.progress(o.progress_ctx, done_tok, total, lm_method_names[method]);
            if (o.checkpoint_path && lm_now() - last_save >= o.checkpoint_secs) {
                rc = ckpt_save(&a, d, &o, err);
                if (rc) goto out;
                last_save = lm_now();
            }
        }
        if (stopped) break;
        if (a.phase + 1 < phases) a.next_seq = 0;
    }
    if (stopped) {
        if (o.checkpoint_path) rc = ckpt_save(&a, d, &o, err);
        res->complete = 0;
        if (canceled && !rc)
            rc = lm_fail(err, LM_ECANCELED, "%s: canceled after %d of %d sequences%s", lm_method_names[method],
                         a.next_seq, d->n_seq, o.checkpoint_path ? " (checkpoint saved)" : "");
    } else {
        a.phase = phases - 1;
        rc = finish(&a, res, err);
        res->complete = 1;
        if (rc == LM_OK && o.checkpoint_path) {
            a.phase = phases - 1;
            a.next_seq = d->n_seq;
            rc = ckpt_save(&a, d, &o, err);
        }
    }
out:
    res->loss_sum = a.loss_sum;
    res->n_targets = a.n_targets;
    res->n_tokens = a.n_tokens;
    res->n_seq_done = a.next_seq;
    res->seconds = lm_now() - t0;
    acc_free(&a);
    if (rc) lm_attr_result_free(res);
    return rc;
}
