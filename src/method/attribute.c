/*
 * attribute.c -- attribution methods from data (docs/METHODS.md).
 *
 * Every method is a sum over sequences of a per-sequence quantity, reduced
 * per (layer, module) while the engine's pass runs: weight gradients
 * G = dY^T X are formed one module at a time inside a hook and reduced at
 * once, never stored. The accumulated sums are checkpointed (checkpoint.c)
 * so that an interrupted run resumes and ends bit-identical to an
 * uninterrupted one.
 * The hooks' arguments are buffers of the engine's backend: every reduction
 * of them runs through it (be->grad_reduce, be->dot, be->col_sumsq ...), and
 * only the resulting doubles are summed here.
 */
#include "compute/backend.h"
#include "compute/engine.h"
#include "method/checkpoint.h"

#include <errno.h>
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
    o->checkpoint_secs = 60.0;
}

/* ------------------------------------------------------------------------ */
/* Accumulated state of one method (what the checkpoint holds)               */
/* ------------------------------------------------------------------------ */

#define NM LM_N_MODULES
/* --until-stable: the split-half correlation must hold for this many samples
 * in a row, and is not trusted below this many samples. */
#define STABLE_RUNS 3
#define STABLE_MIN 8

typedef struct method_def method_def;

typedef struct acc {
    lm_engine *e;
    lm_method method;
    const method_def *def;
    int L;
    double *sum;     /* (L, 7) the method's value */
    double *aux;     /* (L, 7) IG: exact deltas; others unused */
    double *vec;     /* ACT_SQ/WANDA: per-module input column sums of squares; ABLATE_MEAN: output sums */
    size_t *vec_off; /* (L*7 + 1) offsets into vec */
    double *bi;      /* (L) block influence sums */
    /* how much data is enough: over samples (one pass of `batch` sequences)
     * of the method's last phase, the sum of each sample's contribution
     * squared and the sums of the odd and of the even samples */
    double *sum2;    /* (L, 7) */
    double *half;    /* (2, L, 7) */
    double *prev;    /* (L, 7) sum before the current sample (not checkpointed) */
    double *xs;      /* (L, 7) the last sample's contribution, sum - prev (not checkpointed) */
    double *snap;    /* several processes with until_stable: the state before the current
                      * sample, to take it back out (acc_snapshot); NULL until needed */
    int n_samples;
    int stopped_stable; /* --until-stable ended the run before the data did */
    double loss_sum;
    int64_t n_targets, n_tokens, n_pos_mean;
    int next_seq;    /* sequences done in the current phase */
    int phase;       /* ABLATE_MEAN: 0 = collecting means, 1 = ablating; others 0 */
    /* per-call scratch */
    const lm_backend *be; /* the engine's */
    double *red;     /* (max(out, in)) per-column / per-row partial sums */
    float *mu_host;  /* ABLATE_MEAN: F32 means of the current module, made here */
    float *mu;       /* ... uploaded into this backend buffer for the intervention */
    int target_l, target_m; /* IG hook: the module being integrated */
    float alpha;
    double ig_dot;   /* IG hook result */
    const uint8_t *keep; /* lm_attr_opts.layers (NULL: all), of n_keep layers */
    int n_keep;
} acc;

/* Does the method work on layer l (lm_attr_opts.layers)? */
static int layer_on(const acc *a, int l) { return !a->keep || (l < a->n_keep && a->keep[l]); }

/* ------------------------------------------------------------------------ */
/* The method table                                                          */
/* ------------------------------------------------------------------------ */

/* A method is one row of this table: how it observes the pass and how it
 * finishes into a matrix. Methods with own_pass == 0 share one pass over the
 * data with every other such method of an lm_attribute_many call: one
 * forward (its fwd/block hooks run there) and, when any of them sets
 * backward, one backward whose hook forms each module's weight gradient
 * G = dY^T X once and hands the sums (grad_reduce) to every member's
 * from_grad. Methods with own_pass == 1 run their own forwards per batch
 * (own_batch) and follow the shared pass one after the other. */
struct method_def {
    int own_pass;
    int backward;       /* the shared pass runs the backward for it */
    unsigned grad_sums; /* GR_* sums of G it reads (0: needs no G) */
    double (*from_grad)(const double gs[GR_COUNT]); /* one sequence's value from those sums */
    int (*fwd)(acc *a, int l, int m, const float *Y, const float *X, int n);
    int (*bwd)(acc *a, int l, int m, const float *dY, const float *Y, int n);
    int (*block)(acc *a, int l, const float *h_in, const float *h_out, int n);
    size_t (*vec_len)(const lm_engine *e, int m); /* per-module vector kept in the sums, or NULL */
    int phases;         /* passes over the data */
    /* own_pass: one batch of sequences; adds the clean loss via acc_count */
    int (*own_batch)(acc *a, const lm_seq *s, int nb, const lm_attr_opts *o, lm_err *err);
    int (*finish)(acc *a, lm_attr_result *res, lm_err *err);
    int no_se;          /* the matrix is not the sum of the samples' contributions (wanda) */
};

static const method_def method_defs[LM_METHOD_COUNT];

/* ------------------------------------------------------------------------ */
/* Accumulator lifetime                                                      */
/* ------------------------------------------------------------------------ */

static void acc_free(acc *a) {
    lm_free(a->sum);
    lm_free(a->aux);
    lm_free(a->vec);
    lm_free(a->vec_off);
    lm_free(a->bi);
    lm_free(a->sum2);
    lm_free(a->half);
    lm_free(a->prev);
    lm_free(a->xs);
    lm_free(a->snap);
    lm_free(a->red);
    lm_free(a->mu_host);
    if (a->be) a->be->release(a->be, a->mu);
    memset(a, 0, sizeof *a);
}

static int acc_init(acc *a, lm_engine *e, lm_method method, lm_err *err) {
    memset(a, 0, sizeof *a);
    a->e = e;
    a->be = lm_eng_backend(e);
    a->method = method;
    a->def = &method_defs[method];
    a->L = lm_eng_config(e)->n_layer;
    int L = a->L;
    size_t maxv = 0;
    for (int m = 0; m < NM; m++) {
        if ((size_t)lm_eng_module_out(e, m) > maxv) maxv = (size_t)lm_eng_module_out(e, m);
        if ((size_t)lm_eng_module_in(e, m) > maxv) maxv = (size_t)lm_eng_module_in(e, m);
    }
    a->sum = lm_calloc((size_t)L * NM, sizeof(double));
    a->aux = lm_calloc((size_t)L * NM, sizeof(double));
    a->bi = lm_calloc((size_t)L, sizeof(double));
    a->sum2 = lm_calloc((size_t)L * NM, sizeof(double));
    a->half = lm_calloc((size_t)2 * L * NM, sizeof(double));
    a->prev = lm_calloc((size_t)L * NM, sizeof(double));
    a->xs = lm_calloc((size_t)L * NM, sizeof(double));
    a->vec_off = lm_calloc((size_t)L * NM + 1, sizeof(size_t));
    a->red = lm_malloc(maxv * sizeof(double));
    a->mu_host = lm_malloc(maxv * sizeof(float));
    a->mu = a->be->alloc(a->be, maxv * sizeof(float));
    if (!a->sum || !a->aux || !a->bi || !a->vec_off || !a->red || !a->mu_host || !a->mu || !a->sum2 || !a->half ||
        !a->prev || !a->xs)
        goto nomem;
    for (int i = 0; i < L * NM; i++)
        a->vec_off[i + 1] = a->vec_off[i] + (a->def->vec_len ? a->def->vec_len(e, i % NM) : 0);
    if (a->vec_off[L * NM]) {
        a->vec = lm_calloc(a->vec_off[L * NM], sizeof(double));
        if (!a->vec) goto nomem;
    }
    return LM_OK;
nomem:
    acc_free(a);
    return lm_nomem(err, maxv * sizeof(double), "attribution sums");
}

static int seq_targets(const lm_seq *s) {
    int c = 0;
    for (int t = 0; t + 1 < s->n; t++) c += s->mask[t] != 0;
    return c;
}

/* A finished batch: its clean loss, targets and tokens. */
static void acc_count(acc *a, const lm_seq *s, int nb, double clean) {
    a->loss_sum += clean;
    for (int i = 0; i < nb; i++) {
        a->n_targets += seq_targets(&s[i]);
        a->n_tokens += s[i].n;
    }
}

/* ------------------------------------------------------------------------ */
/* What the methods reduce (the table's entries)                             */
/* ------------------------------------------------------------------------ */

static double from_abs(const double gs[GR_COUNT]) { return gs[GR_ABS_I]; }
static double from_signed(const double gs[GR_COUNT]) { return gs[GR_SIGNED_I]; }
static double from_sq(const double gs[GR_COUNT]) { return gs[GR_SQ_I]; }
static double from_norm(const double gs[GR_COUNT]) { return sqrt(gs[GR_SQ_I]); }

/* act-grad: -sum over the sequence of dY . Y */
static int bwd_act_grad(acc *a, int l, int m, const float *dY, const float *Y, int n) {
    a->sum[l * NM + m] -= a->be->dot(a->be, dY, Y, (long)n * lm_eng_module_out(a->e, m));
    return 0;
}

/* act-sq / wanda: input energy, total and per input column. */
static int fwd_act_stats(acc *a, int l, int m, const float *Y, const float *X, int n) {
    (void)Y;
    if (!layer_on(a, l)) return 0;
    int in = lm_eng_module_in(a->e, m);
    double *col = a->vec + a->vec_off[l * NM + m], *part = a->red;
    a->be->col_sumsq(a->be, part, X, n, in);
    double tot = 0.0;
    for (int j = 0; j < in; j++) {
        col[j] += part[j];
        tot += part[j];
    }
    a->sum[l * NM + m] += tot;
    return 0;
}

/* per-layer 1 - cos(h_in, h_out), summed over tokens */
static int block_influence(acc *a, int l, const float *h_in, const float *h_out, int n) {
    a->bi[l] += a->be->cos_dist_sum(a->be, h_in, h_out, n, lm_eng_config(a->e)->dim);
    return 0;
}

static size_t vec_in(const lm_engine *e, int m) { return (size_t)lm_eng_module_in(e, m); }
static size_t vec_out(const lm_engine *e, int m) { return (size_t)lm_eng_module_out(e, m); }

/* ablate-mean, pass 1: sum of each module's output rows. */
static int fwd_mean(acc *a, int l, int m, const float *Y, const float *X, int n) {
    (void)X;
    if (!layer_on(a, l)) return 0;
    int out = lm_eng_module_out(a->e, m);
    a->be->col_sum_acc(a->be, a->vec + a->vec_off[l * NM + m], Y, n, out);
    return 0;
}

static int hook_mean(void *ctx, int l, int m, const float *Y, const float *X, int n) {
    return fwd_mean(ctx, l, m, Y, X, n);
}

/* ablate / ablate-mean: L(y := 0 or mean) - L for every module, from the
 * stored clean inputs. ablate-mean's phase 0 collects the means. */
static int own_ablate(acc *a, const lm_seq *s, int nb, const lm_attr_opts *o, lm_err *err) {
    (void)o;
    lm_engine *e = a->e;
    double clean = 0.0;
    int rc;
    if (a->method == LM_METHOD_ABLATE_MEAN && a->phase == 0) {
        lm_hooks hk = {.ctx = a, .fwd = hook_mean};
        rc = lm_eng_forward(e, &(lm_fwd_req){.seqs = s, .nseq = nb, .use_loss = 1, .hk = &hk, .loss = &clean}, err);
        for (int i = 0; rc == LM_OK && i < nb; i++) a->n_pos_mean += s[i].n;
        return rc; /* the loss is counted in phase 1 */
    }
    rc = lm_eng_forward(e, &(lm_fwd_req){.seqs = s, .nseq = nb, .use_loss = 1, .loss = &clean}, err);
    for (int l = 0; l < a->L && rc == LM_OK; l++)
        for (int m = 0; m < NM && rc == LM_OK && layer_on(a, l); m++) {
            lm_interv iv = {LM_IV_SCALE, l, m, 0.0f, NULL};
            if (a->method == LM_METHOD_ABLATE_MEAN) {
                const double *v = a->vec + a->vec_off[l * NM + m];
                int out = lm_eng_module_out(e, m);
                for (int j = 0; j < out; j++) a->mu_host[j] = (float)(v[j] / (double)a->n_pos_mean);
                a->be->upload(a->be, a->mu, a->mu_host, sizeof(float) * (size_t)out);
                iv.kind = LM_IV_REPLACE;
                iv.vec = a->mu;
            }
            double lab;
            rc = lm_eng_forward_from(e, &(lm_from_req){.from = l, .use_loss = 1, .iv = &iv, .loss = &lab}, err);
            if (rc == LM_OK) a->sum[l * NM + m] += lab - clean;
        }
    if (rc == LM_OK) acc_count(a, s, nb, clean);
    return rc;
}

/* IG: y . g(alpha) at the one module being integrated; Y here is alpha * y. */
static int hook_ig(void *ctx, int l, int m, const float *dY, const float *Y, const float *X, const float *W, int n) {
    (void)X;
    (void)W;
    acc *a = ctx;
    if (l == a->target_l && m == a->target_m)
        a->ig_dot = a->be->dot(a->be, dY, Y, (long)n * lm_eng_module_out(a->e, m)) / a->alpha;
    return 0;
}

/* ig: midpoint rule over alpha in (0, 1) of each module's output scaled by
 * alpha, plus the exact L(y := 0) - L as the completeness reference. */
static int own_ig(acc *a, const lm_seq *s, int nb, const lm_attr_opts *o, lm_err *err) {
    lm_engine *e = a->e;
    double clean = 0.0;
    int rc = lm_eng_forward(e, &(lm_fwd_req){.seqs = s, .nseq = nb, .use_loss = 1, .loss = &clean}, err);
    lm_hooks hk = {.ctx = a, .bwd = hook_ig};
    int N = o->ig_steps > 0 ? o->ig_steps : 32;
    for (int l = 0; l < a->L && rc == LM_OK; l++)
        for (int m = 0; m < NM && rc == LM_OK && layer_on(a, l); m++) {
            double integral = 0.0, l0;
            lm_interv iv = {LM_IV_SCALE, l, m, 0.0f, NULL};
            rc = lm_eng_forward_from(e, &(lm_from_req){.from = l, .use_loss = 1, .iv = &iv, .loss = &l0}, err);
            if (rc) break;
            a->aux[l * NM + m] += l0 - clean;
            a->target_l = l;
            a->target_m = m;
            for (int k = 0; k < N && rc == LM_OK; k++) {
                iv.alpha = a->alpha = (float)((k + 0.5) / N);
                a->ig_dot = 0.0;
                rc = lm_eng_forward_from(e, &(lm_from_req){.from = l, .use_loss = 1, .iv = &iv, .grad = 1}, err);
                if (rc == LM_OK) rc = lm_eng_backward(e, &(lm_bwd_req){.to = l, .iv = &iv, .hk = &hk}, err);
                integral += a->ig_dot;
            }
            a->sum[l * NM + m] -= integral / N;
        }
    if (rc == LM_OK) acc_count(a, s, nb, clean);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Finishing into matrices                                                   */
/* ------------------------------------------------------------------------ */

/* The layers a method skipped (lm_attr_opts.layers) have no value: NaN. */
static void mask_layers(const acc *a, lm_attr_result *r) {
    int skips = a->def->own_pass || a->method == LM_METHOD_ACT_SQ || a->method == LM_METHOD_WANDA;
    if (!a->keep || !skips) return;
    lm_matrix *ms[2] = {r->m, r->also};
    for (int i = 0; i < 2; i++)
        for (int l = 0; ms[i] && l < ms[i]->n_layer; l++)
            if (!layer_on(a, l))
                for (int m = 0; m < NM; m++) lm_matrix_set(ms[i], l, m, NAN);
}

static lm_matrix *matrix_from(const double *v, int L, const char *method) {
    lm_matrix *m = lm_matrix_new(L);
    if (!m) return NULL;
    for (int l = 0; l < L; l++)
        for (int j = 0; j < NM; j++) lm_matrix_set(m, l, j, v[l * NM + j]);
    snprintf(m->method, sizeof m->method, "%s", method);
    return m;
}

/* The sums as they are. */
static int finish_sum(acc *a, lm_attr_result *res, lm_err *err) {
    res->m = matrix_from(a->sum, a->L, lm_method_names[a->method]);
    return res->m ? LM_OK : lm_nomem(err, sizeof(double) * (size_t)a->L * NM, "result matrix");
}

/* ig: also the exact deltas and the completeness gap. */
static int finish_ig(acc *a, lm_attr_result *res, lm_err *err) {
    int L = a->L;
    res->m = matrix_from(a->sum, L, lm_method_names[a->method]);
    res->also = matrix_from(a->aux, L, "ablate");
    double num = 0, den = 0;
    for (int i = 0; i < L * NM; i++) {
        num += fabs(a->sum[i] - a->aux[i]);
        den += fabs(a->aux[i]);
    }
    res->ig_gap = den > 0 ? num / den : 0.0;
    return res->m && res->also ? LM_OK : lm_nomem(err, sizeof(double) * (size_t)L * NM, "result matrix");
}

/* wanda from the column energies: sum_ij |W_ij| sqrt(colsq_j) (rows summed in order) */
static int wanda_matrix(acc *a, double *out, lm_err *err) {
    for (int l = 0; l < a->L; l++)
        for (int m = 0; m < NM; m++) {
            const float *W;
            int rc = lm_eng_weight(a->e, l, m, &W, err);
            if (rc) return rc;
            int rows = lm_eng_module_out(a->e, m), in = lm_eng_module_in(a->e, m);
            out[l * NM + m] = a->be->abs_colscale_sum(a->be, W, a->vec + a->vec_off[l * NM + m], rows, in);
        }
    return LM_OK;
}

/* act-sq / wanda: both matrices (the method's own first) and block influence. */
static int finish_act_stats(acc *a, lm_attr_result *res, lm_err *err) {
    int L = a->L;
    int is_wanda = a->method == LM_METHOD_WANDA;
    double *wanda = lm_malloc(sizeof(double) * (size_t)L * NM);
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
    res->m = matrix_from(is_wanda ? wanda : a->sum, L, lm_method_names[a->method]);
    res->also = matrix_from(is_wanda ? a->sum : wanda, L,
                            lm_method_names[is_wanda ? LM_METHOD_ACT_SQ : LM_METHOD_WANDA]);
    lm_free(wanda);
    if (!res->m || !res->also) return lm_nomem(err, sizeof(double) * (size_t)L * NM, "result matrix");
    /* the per-column sums themselves (the imatrix export) */
    size_t nv = a->vec_off[L * NM];
    res->in_sum2 = lm_malloc(sizeof(double) * nv);
    res->in_sum2_off = lm_malloc(sizeof(size_t) * ((size_t)L * NM + 1));
    if (!res->in_sum2 || !res->in_sum2_off) return lm_nomem(err, sizeof(double) * nv, "input column sums");
    memcpy(res->in_sum2, a->vec, sizeof(double) * nv);
    memcpy(res->in_sum2_off, a->vec_off, sizeof(size_t) * ((size_t)L * NM + 1));
    res->m->layer_extra = lm_malloc(sizeof(double) * (size_t)L);
    if (res->m->layer_extra) {
        memcpy(res->m->layer_extra, res->block_influence, sizeof(double) * (size_t)L);
        snprintf(res->m->layer_extra_name, sizeof res->m->layer_extra_name, "block-influence");
    }
    return LM_OK;
}

/* Indexed by lm_method. */
static const method_def method_defs[LM_METHOD_COUNT] = {
    [LM_METHOD_GRAD_WEIGHT] = {.backward = 1, .grad_sums = GR_ABS, .from_grad = from_abs, .phases = 1,
                               .finish = finish_sum},
    [LM_METHOD_GRAD_WEIGHT_SIGNED] = {.backward = 1, .grad_sums = GR_SIGNED, .from_grad = from_signed,
                                      .phases = 1, .finish = finish_sum},
    [LM_METHOD_FISHER] = {.backward = 1, .grad_sums = GR_SQ, .from_grad = from_sq, .phases = 1, .finish = finish_sum},
    [LM_METHOD_GRAD_NORM] = {.backward = 1, .grad_sums = GR_SQ, .from_grad = from_norm, .phases = 1,
                             .finish = finish_sum},
    [LM_METHOD_ACT_GRAD] = {.backward = 1, .bwd = bwd_act_grad, .phases = 1, .finish = finish_sum},
    [LM_METHOD_IG] = {.own_pass = 1, .phases = 1, .own_batch = own_ig, .finish = finish_ig},
    [LM_METHOD_ABLATE] = {.own_pass = 1, .phases = 1, .own_batch = own_ablate, .finish = finish_sum},
    [LM_METHOD_ABLATE_MEAN] = {.own_pass = 1, .vec_len = vec_out, .phases = 2, .own_batch = own_ablate,
                               .finish = finish_sum},
    [LM_METHOD_ACT_SQ] = {.fwd = fwd_act_stats, .block = block_influence, .vec_len = vec_in, .phases = 1,
                          .finish = finish_act_stats},
    [LM_METHOD_WANDA] = {.fwd = fwd_act_stats, .block = block_influence, .vec_len = vec_in, .phases = 1,
                         .finish = finish_act_stats, .no_se = 1},
};

/* ------------------------------------------------------------------------ */
/* How much data is enough: standard errors and split-half stability         */
/* ------------------------------------------------------------------------ */

/* Before a sample of the method's last phase: remember the sums. */
static void sample_begin(acc *a) { memcpy(a->prev, a->sum, sizeof(double) * (size_t)a->L * NM); }

/* After it: its contribution x = sum - prev into sum2 and its half. The
 * half is the parity of the sample's place in the data (index = its first
 * sequence / batch), not of the order samples are run in: the same split
 * whichever process ran which sample. */
static void sample_end(acc *a, int index) {
    size_t LM7 = (size_t)a->L * NM;
    double *h = a->half + (size_t)(index % 2) * LM7;
    for (size_t i = 0; i < LM7; i++) {
        double x = a->sum[i] - a->prev[i];
        a->sum2[i] += x * x;
        h[i] += x;
        a->xs[i] = x;
    }
    a->n_samples++;
}

/* Average ranks (ties share their mean rank) of v[idx[0..n)] into r. */
static void rank_cells(const double *v, const int *idx, int n, double *r, int *ord) {
    for (int i = 0; i < n; i++) ord[i] = i;
    for (int i = 1; i < n; i++) { /* insertion sort by value: n <= layers x 7 */
        int k = ord[i], j = i - 1;
        while (j >= 0 && v[idx[ord[j]]] > v[idx[k]]) {
            ord[j + 1] = ord[j];
            j--;
        }
        ord[j + 1] = k;
    }
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && v[idx[ord[j + 1]]] == v[idx[ord[i]]]) j++;
        for (int k = i; k <= j; k++) r[ord[k]] = (i + j) / 2.0 + 1;
        i = j + 1;
    }
}

/* Spearman correlation of the odd and even samples' sums half[0], half[1]
 * (of n samples) over the cells where both are finite; NaN with fewer than 2
 * samples, 3 cells or no spread. Scratch: 5 * L * 7 doubles/ints from the
 * heap (NaN on failure). */
static double split_half_of(const acc *a, const double *half, int n_samples) {
    int LM7 = a->L * NM;
    if (n_samples < 2) return NAN;
    const double *h0 = half, *h1 = half + LM7;
    int *idx = lm_malloc(sizeof(int) * (size_t)LM7 * 2);
    double *r = lm_malloc(sizeof(double) * (size_t)LM7 * 2);
    double rho = NAN;
    if (!idx || !r) goto out;
    int n = 0, *ord = idx + LM7;
    for (int i = 0; i < LM7; i++)
        if (isfinite(h0[i]) && isfinite(h1[i]) && layer_on(a, i / NM)) idx[n++] = i;
    if (n < 3) goto out;
    rank_cells(h0, idx, n, r, ord);
    rank_cells(h1, idx, n, r + LM7, ord);
    double m = (n + 1) / 2.0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        double x = r[i] - m, y = r[LM7 + i] - m;
        sxy += x * y;
        sxx += x * x;
        syy += y * y;
    }
    if (sxx > 0 && syy > 0) rho = sxy / sqrt(sxx * syy);
out:
    lm_free(idx);
    lm_free(r);
    return rho;
}

static double split_half(const acc *a) { return split_half_of(a, a->half, a->n_samples); }

/* se of each cell of res->m, the split-half correlation and the sample count
 * (methods whose matrix is the sum of the samples' contributions). The total
 * S = sum_s x_s of N samples has standard error sqrt(N / (N - 1) (sum x^2 -
 * S^2 / N)) (NaN below 2 samples). Skipped layers stay NaN. */
static int attach_se(const acc *a, lm_attr_result *res, lm_err *err) {
    res->n_samples = a->n_samples;
    res->split_half = NAN;
    if (a->def->no_se || !res->m) return LM_OK;
    size_t LM7 = (size_t)a->L * NM;
    lm_matrix *m = res->m;
    m->se = lm_malloc(sizeof(double) * LM7);
    if (!m->se) return lm_nomem(err, sizeof(double) * LM7, "standard errors");
    double N = a->n_samples;
    for (size_t i = 0; i < LM7; i++) {
        double v = N >= 2 ? N / (N - 1) * (a->sum2[i] - a->sum[i] * a->sum[i] / N) : NAN;
        m->se[i] = isnan(m->v[i]) ? NAN : v > 0 ? sqrt(v) : v == 0 ? 0.0 : isnan(v) ? NAN : 0.0;
    }
    m->split_half = res->split_half = split_half(a);
    m->n_samples = a->n_samples;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Groups: the methods that one pass over the data serves                    */
/* ------------------------------------------------------------------------ */

typedef struct group {
    lm_engine *e;
    acc *mem[LM_METHOD_COUNT]; /* members; one for an own-pass method */
    int n;
    int own;                   /* an own-pass method */
    int backward;              /* the shared pass runs the backward */
    unsigned grad_sums;        /* union of the members' GR_* sums */
    float *dW;                 /* (largest out*in) one weight gradient G at a time */
    char label[128];           /* progress label: "grad-weight+fisher" */
    int stable_runs;           /* --until-stable: samples in a row at or above the bound */
    int n_se;                  /* members with standard errors (until_stable watches them) */
    /* Where the group stands (the same on every process) and the plan of
     * this call's current phase (group_plan). Sample k is sequences
     * [k * batch, (k + 1) * batch) of the data. */
    int ns;                    /* samples of a pass */
    uint8_t *done;             /* (ns) finished samples of the current phase */
    int *round;                /* (ns) the round sample k runs in (-1: done before, or none) */
    int *owner;                /* (ns) the process that runs it */
    int *rem;                  /* (ns) the samples left, ascending: n_rem */
    int *by_round;             /* (ns) the samples left in order of rounds: round j is */
    int *round_off;            /* (ns + 1) by_round[round_off[j] .. round_off[j + 1]) */
    int *mine;                 /* (ns) this process's samples, in the order it runs them */
    int n_rem, n_mine, n_rounds, next;
    int ordered;               /* until_stable's last pass: round j = rem[j*P .. (j+1)*P), slot p on process p */
    int ran;                   /* the sample this process ran in the last round, -1 none */
    double *ghalf;             /* ordered, several processes: (n_se, 2, L, 7) the halves over all
                                * of them so far, in data order */
    int gn;                    /* ... and their samples */
    double *sync;              /* the buffer of a sync point (flags, ordered: the contributions) */
    size_t n_sync;
} group;

/* Shared forward hook: every member that observes module outputs. */
static int group_fwd(void *ctx, int l, int m, const float *Y, const float *X, int n) {
    group *g = ctx;
    for (int i = 0; i < g->n; i++)
        if (g->mem[i]->def->fwd) {
            int rc = g->mem[i]->def->fwd(g->mem[i], l, m, Y, X, n);
            if (rc) return rc;
        }
    return 0;
}

static int group_block(void *ctx, int l, const float *h_in, const float *h_out, int n) {
    group *g = ctx;
    for (int i = 0; i < g->n; i++)
        if (g->mem[i]->def->block) {
            int rc = g->mem[i]->def->block(g->mem[i], l, h_in, h_out, n);
            if (rc) return rc;
        }
    return 0;
}

/* Shared backward hook: G_s = dY_s^T X_s (out, in) for each sequence s of the
 * pass, formed once, reduced with W (grad_reduce) for every member that reads
 * it, never stored; then the members' own output-gradient hooks. */
static int group_bwd(void *ctx, int l, int m, const float *dY, const float *Y, const float *X, const float *W,
                     int n) {
    group *g = ctx;
    if (g->grad_sums) {
        int out = lm_eng_module_out(g->e, m), in = lm_eng_module_in(g->e, m);
        const int *off;
        int nseg = lm_eng_segments(g->e, &off);
        const lm_backend *be = lm_eng_backend(g->e);
        for (int sg = 0; sg < nseg; sg++) {
            be->gemm_tn(be, out, in, off[sg + 1] - off[sg], dY + (long)off[sg] * out, out, X + (long)off[sg] * in, in,
                        0.0f, g->dW, in);
            double gs[GR_COUNT];
            be->grad_reduce(be, gs, W, g->dW, (long)out * in, g->grad_sums);
            for (int i = 0; i < g->n; i++)
                if (g->mem[i]->def->from_grad) g->mem[i]->sum[l * NM + m] += g->mem[i]->def->from_grad(gs);
        }
    }
    for (int i = 0; i < g->n; i++)
        if (g->mem[i]->def->bwd) {
            int rc = g->mem[i]->def->bwd(g->mem[i], l, m, dY, Y, n);
            if (rc) return rc;
        }
    return 0;
}

static void group_free(group *g) {
    if (g->e) lm_eng_backend(g->e)->release(lm_eng_backend(g->e), g->dW);
    lm_free(g->done);
    lm_free(g->round);
    lm_free(g->owner);
    lm_free(g->rem);
    lm_free(g->by_round);
    lm_free(g->round_off);
    lm_free(g->mine);
    lm_free(g->ghalf);
    lm_free(g->sync);
    memset(g, 0, sizeof *g);
}

/* After g->mem[0..n) are set: the union of what the members need, and the
 * bookkeeping of ns samples. */
static int group_init(group *g, lm_engine *e, int ns, lm_err *err) {
    g->e = e;
    g->own = g->mem[0]->def->own_pass;
    size_t n1 = (size_t)ns + 1;
    g->done = lm_calloc(n1, 1);
    g->round = lm_malloc(sizeof(int) * n1);
    g->owner = lm_malloc(sizeof(int) * n1);
    g->rem = lm_malloc(sizeof(int) * n1);
    g->by_round = lm_malloc(sizeof(int) * n1);
    g->round_off = lm_malloc(sizeof(int) * (n1 + 1));
    g->mine = lm_malloc(sizeof(int) * n1);
    if (!g->done || !g->round || !g->owner || !g->rem || !g->by_round || !g->round_off || !g->mine)
        return lm_nomem(err, 6 * sizeof(int) * n1, "sample bookkeeping");
    g->ns = ns;
    for (int i = 0; i < g->n; i++) g->n_se += !g->mem[i]->def->no_se;
    size_t used = 0;
    for (int i = 0; i < g->n; i++) {
        const method_def *d = g->mem[i]->def;
        g->backward |= d->backward;
        g->grad_sums |= d->grad_sums;
        int w = snprintf(g->label + used, sizeof g->label - used, "%s%s", i ? "+" : "",
                         lm_method_names[g->mem[i]->method]);
        if (w > 0 && used + (size_t)w < sizeof g->label) used += (size_t)w;
    }
    if (g->grad_sums) {
        size_t maxw = 0;
        for (int m = 0; m < NM; m++) {
            size_t w = (size_t)lm_eng_module_out(e, m) * (size_t)lm_eng_module_in(e, m);
            if (w > maxw) maxw = w;
        }
        g->dW = lm_eng_backend(e)->alloc(lm_eng_backend(e), maxw * sizeof(float));
        if (!g->dW) return lm_nomem(err, maxw * sizeof(float), "weight gradient");
    }
    return LM_OK;
}

/* One pass of the group over nb sequences packed together (sums per sequence). */
static int group_batch(group *g, const lm_seq *s, int nb, const lm_attr_opts *o, lm_err *err) {
    if (g->own) return g->mem[0]->def->own_batch(g->mem[0], s, nb, o, err);
    lm_hooks hk = {.ctx = g, .fwd = group_fwd, .bwd = group_bwd, .block = group_block};
    lm_hooks fwd_hk = {.ctx = g, .fwd = group_fwd, .block = group_block};
    double clean = 0.0;
    lm_fwd_req fw = {.seqs = s, .nseq = nb, .use_loss = 1, .hk = &fwd_hk, .grad = g->backward, .loss = &clean};
    int rc = lm_eng_forward(g->e, &fw, err);
    if (rc == LM_OK && g->backward) rc = lm_eng_backward(g->e, &(lm_bwd_req){.to = 0, .hk = &hk}, err);
    if (rc) return rc;
    for (int i = 0; i < g->n; i++) acc_count(g->mem[i], s, nb, clean);
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                    */
/* ------------------------------------------------------------------------ */

void lm_attr_result_free(lm_attr_result *r) {
    if (!r) return;
    lm_matrix_free(r->m);
    lm_matrix_free(r->also);
    lm_free(r->block_influence);
    lm_free(r->in_sum2);
    lm_free(r->in_sum2_off);
    memset(r, 0, sizeof *r);
}

int lm_attribute(lm_engine *e, const lm_dataset *d, lm_method method, const lm_attr_opts *opts,
                 lm_attr_result *res, lm_err *err) {
    return lm_attribute_many(e, d, &method, 1, opts, res, err);
}

/* Checks of the arguments; o gets the defaults filled in. */
static int check_args(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n, lm_attr_opts *o,
                      lm_err *err) {
    if (n < 1 || n > LM_METHOD_COUNT || !methods)
        return lm_fail(err, LM_EARG, "%d methods in one attribution call (1..%d)", n, LM_METHOD_COUNT);
    for (int i = 0; i < n; i++) {
        if ((int)methods[i] < 0 || methods[i] >= LM_METHOD_COUNT)
            return lm_fail(err, LM_EARG, "unknown method %d", (int)methods[i]);
        for (int j = 0; j < i; j++)
            if (methods[j] == methods[i])
                return lm_fail(err, LM_EARG, "method %s given twice", lm_method_names[methods[i]]);
    }
    if (o->ig_steps <= 0) o->ig_steps = 32;
    if (o->batch <= 0) o->batch = 1;
    if (o->batch > lm_eng_max_batch(e))
        return lm_fail(err, LM_EARG, "batch of %d sequences, but the engine was made for %d", o->batch,
                       lm_eng_max_batch(e));
    if (!d || d->n_seq <= 0) return lm_fail(err, LM_EARG, "no data to attribute");
    const lm_attr_dist *dist = o->dist;
    if (dist && dist->size > 1) {
        if (dist->rank < 0 || dist->rank >= dist->size || !dist->sum)
            return lm_fail(err, LM_EARG, "process %d of %d, or no sum function", dist->rank, dist->size);
        if (o->max_seqs > 0) /* a limit per process would stop at a point that depends on the split */
            return lm_fail(err, LM_EARG, "attribute: a sequence limit (max_seqs) is not supported with more than one "
                                         "process (%d)", dist->size);
    }
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Several processes (lm_attr_dist)                                          */
/* ------------------------------------------------------------------------ */

/* The split and the reductions live here, beside the sums they reduce, and
 * MPI lives in the CLI (cli/mpi.c, built only with make MPI=1), which hands
 * its collective in as lm_attr_dist.sum: the library stays free of MPI, the
 * default build has no MPI symbol, and the split is tested in one process
 * (tests/method/test_dist.c runs the "ranks" as threads with a sum over
 * shared memory). Every sum is float64 (the counts as doubles, exact below
 * 2^53), so the many-process result is the one-process result up to the order
 * of the additions. */

typedef struct dist_seg {
    double *p;
    size_t n;
} dist_seg;

/* One sum() over the segments sg[0..k) packed into one buffer. */
static int dist_sum_segs(const lm_attr_dist *dist, const dist_seg *sg, int k, lm_err *err) {
    size_t tot = 0, at = 0;
    for (int i = 0; i < k; i++) tot += sg[i].n;
    double *buf = lm_malloc(sizeof(double) * (tot ? tot : 1));
    if (!buf) return lm_nomem(err, sizeof(double) * tot, "sums to reduce across processes");
    for (int i = 0; i < k; at += sg[i].n, i++)
        if (sg[i].n) memcpy(buf + at, sg[i].p, sizeof(double) * sg[i].n);
    int rc = dist->sum(dist->ctx, buf, tot, err);
    at = 0;
    for (int i = 0; rc == LM_OK && i < k; at += sg[i].n, i++)
        if (sg[i].n) memcpy(sg[i].p, buf + at, sizeof(double) * sg[i].n);
    lm_free(buf);
    return rc;
}

/* Between the phases of a method that has two (ablate-mean): the sums the
 * next phase uses, its per-module output sums and their token count, so that
 * every process ablates with the means over all the data. */
static int dist_sum_phase(const lm_attr_dist *dist, acc *a, lm_err *err) {
    double cnt = (double)a->n_pos_mean;
    dist_seg sg[2] = {{a->vec, a->vec_off[a->L * NM]}, {&cnt, 1}};
    int rc = dist_sum_segs(dist, sg, 2, err);
    a->n_pos_mean = (int64_t)cnt;
    return rc;
}

/* At the end: every accumulated sum of every method, in one sum(). A method
 * with several phases had its vec and n_pos_mean summed between them. */
static int dist_sum_final(const lm_attr_dist *dist, acc *accs, int n, lm_err *err) {
    dist_seg sg[LM_METHOD_COUNT * 7] = {{0}};
    double cnt[LM_METHOD_COUNT][5];
    int k = 0;
    for (int i = 0; i < n; i++) {
        acc *a = &accs[i];
        size_t LM7 = (size_t)a->L * NM;
        int before = a->def->phases > 1; /* vec and n_pos_mean already global */
        cnt[i][0] = a->n_samples;
        cnt[i][1] = a->loss_sum;
        cnt[i][2] = (double)a->n_targets;
        cnt[i][3] = (double)a->n_tokens;
        cnt[i][4] = (double)a->n_pos_mean;
        sg[k++] = (dist_seg){a->sum, LM7};
        sg[k++] = (dist_seg){a->aux, LM7};
        sg[k++] = (dist_seg){a->bi, (size_t)a->L};
        sg[k++] = (dist_seg){a->vec, before ? 0 : a->vec_off[a->L * NM]};
        sg[k++] = (dist_seg){a->sum2, LM7};
        sg[k++] = (dist_seg){a->half, 2 * LM7};
        sg[k++] = (dist_seg){cnt[i], before ? 4 : 5};
    }
    int rc = dist_sum_segs(dist, sg, k, err);
    for (int i = 0; rc == LM_OK && i < n; i++) {
        acc *a = &accs[i];
        a->n_samples = (int)cnt[i][0];
        a->loss_sum = cnt[i][1];
        a->n_targets = (int64_t)cnt[i][2];
        a->n_tokens = (int64_t)cnt[i][3];
        if (a->def->phases == 1) a->n_pos_mean = (int64_t)cnt[i][4];
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* A run: its methods, groups and fingerprint                                */
/* ------------------------------------------------------------------------ */

/* Everything one lm_attribute_many call (or a probe of its checkpoint)
 * holds. Round and sync points are explained at the driver below. */
typedef struct attr_run {
    lm_engine *e;
    const lm_dataset *d;
    lm_attr_opts o;
    const lm_attr_dist *dist; /* NULL when alone */
    int P, me;                /* processes, this one */
    acc accs[LM_METHOD_COUNT];
    group groups[LM_METHOD_COUNT];
    int of_group[LM_METHOD_COUNT]; /* accs[i] is a member of groups[of_group[i]] */
    int n, n_acc, n_groups;
    lm_attr_fingerprint fp;   /* set when there is a checkpoint and this process reads or writes it */
} attr_run;

static void run_free(attr_run *r) {
    for (int gi = 0; gi < r->n_groups; gi++) group_free(&r->groups[gi]);
    for (int i = 0; i < r->n_acc; i++) acc_free(&r->accs[i]);
}

/* Tokens of sample k. */
static int64_t sample_tokens(const attr_run *r, int k) {
    int64_t t = 0;
    for (int s = k * r->o.batch; s < r->d->n_seq && s < (k + 1) * r->o.batch; s++) t += r->d->seqs[s].n;
    return t;
}

static int run_init(attr_run *r, lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                    const lm_attr_opts *opts, lm_err *err) {
    memset(r, 0, sizeof *r);
    r->e = e;
    r->d = d;
    r->n = n;
    if (opts)
        r->o = *opts;
    else
        lm_attr_opts_default(&r->o);
    int rc = check_args(e, d, methods, n, &r->o, err);
    if (rc) return rc;
    r->dist = r->o.dist && r->o.dist->size > 1 ? r->o.dist : NULL;
    r->P = r->dist ? r->dist->size : 1;
    r->me = r->dist ? r->dist->rank : 0;
    for (; r->n_acc < n; r->n_acc++)
        if ((rc = acc_init(&r->accs[r->n_acc], e, methods[r->n_acc], err))) return rc;
    for (int i = 0; i < n; i++) {
        r->accs[i].keep = r->o.layers;
        r->accs[i].n_keep = r->o.n_layers;
    }
    /* the shared pass first, then each own-pass method */
    group *g = r->groups;
    for (int i = 0; i < n; i++)
        if (!r->accs[i].def->own_pass) {
            r->of_group[i] = 0;
            g[0].mem[g[0].n++] = &r->accs[i];
        }
    if (g[0].n) r->n_groups = 1;
    for (int i = 0; i < n; i++)
        if (r->accs[i].def->own_pass) {
            r->of_group[i] = r->n_groups;
            g[r->n_groups].mem[0] = &r->accs[i];
            g[r->n_groups++].n = 1;
        }
    int ns = (d->n_seq - 1) / r->o.batch + 1;
    for (int gi = 0; gi < r->n_groups; gi++)
        if ((rc = group_init(&g[gi], e, ns, err))) return rc;
    if (r->o.checkpoint_path && r->me == 0)
        if ((rc = lm_attr_fingerprint_of(e, d, methods, n, &r->o, &r->fp, err))) return rc;
    return LM_OK;
}

static int count_done(const group *g) {
    int c = 0;
    for (int k = 0; k < g->ns; k++) c += g->done[k];
    return c;
}

/* Nothing left for the group to compute. */
static int group_finished(const group *g) {
    const acc *a0 = g->mem[0];
    return a0->stopped_stable || (a0->phase + 1 == a0->def->phases && count_done(g) == g->ns);
}

/* Sequences of the group's finished samples in its current phase. */
static int group_seqs_done(const attr_run *r, const group *g) {
    int c = 0;
    for (int k = 0; k < g->ns; k++)
        if (g->done[k]) c += r->d->n_seq - k * r->o.batch < r->o.batch ? r->d->n_seq - k * r->o.batch : r->o.batch;
    return c;
}

/* Tokens of every finished phase and sample of every group (progress units). */
static double run_done_tokens(const attr_run *r) {
    double t = 0.0;
    for (int gi = 0; gi < r->n_groups; gi++) {
        const group *g = &r->groups[gi];
        const acc *a0 = g->mem[0];
        if (group_finished(g)) {
            t += (double)r->d->n_tokens * a0->def->phases;
            continue;
        }
        t += (double)r->d->n_tokens * a0->phase;
        for (int k = 0; k < g->ns; k++)
            if (g->done[k]) t += (double)sample_tokens(r, k);
    }
    return t;
}

/* ------------------------------------------------------------------------ */
/* The sums of a method in one flat array (reductions, snapshots)            */
/* ------------------------------------------------------------------------ */

/* Layout: sum, aux, sum2 (L * 7 each), half (2 * L * 7), bi (L), vec, then
 * the counts n_samples, loss_sum, n_targets, n_tokens, n_pos_mean. */
static size_t flat_len(const acc *a) { return (size_t)5 * a->L * NM + (size_t)a->L + a->vec_off[a->L * NM] + 5; }

/* Where each of a's arrays sits in a flat array f. */
typedef struct flat_at {
    double *sum, *aux, *sum2, *half, *bi, *vec, *counts;
} flat_at;

static flat_at flat_layout(const acc *a, double *f) {
    size_t LM7 = (size_t)a->L * NM;
    flat_at v = {f, f + LM7, f + 2 * LM7, f + 3 * LM7, f + 5 * LM7, f + 5 * LM7 + a->L, NULL};
    v.counts = v.vec + a->vec_off[a->L * NM];
    return v;
}

/* ablate-mean's per-module output sums and their count, once its first phase
 * is over: the same on every process (summed between the phases), so that a
 * reduction must count them once. */
static int vec_global(const acc *a) { return a->def->phases > 1 && a->phase >= 1; }

/* a's sums into f; zero_global: leave out what every process holds alike. */
static void flat_pack(const acc *a, double *f, int zero_global) {
    size_t LM7 = (size_t)a->L * NM, nv = a->vec_off[a->L * NM];
    int zg = zero_global && vec_global(a);
    flat_at v = flat_layout(a, f);
    memcpy(v.sum, a->sum, sizeof(double) * LM7);
    memcpy(v.aux, a->aux, sizeof(double) * LM7);
    memcpy(v.sum2, a->sum2, sizeof(double) * LM7);
    memcpy(v.half, a->half, sizeof(double) * 2 * LM7);
    memcpy(v.bi, a->bi, sizeof(double) * (size_t)a->L);
    if (nv) {
        if (zg)
            memset(v.vec, 0, sizeof(double) * nv);
        else
            memcpy(v.vec, a->vec, sizeof(double) * nv);
    }
    v.counts[0] = a->n_samples;
    v.counts[1] = a->loss_sum;
    v.counts[2] = (double)a->n_targets;
    v.counts[3] = (double)a->n_tokens;
    v.counts[4] = zg ? 0.0 : (double)a->n_pos_mean;
}

static void flat_unpack(acc *a, const double *f) {
    size_t LM7 = (size_t)a->L * NM, nv = a->vec_off[a->L * NM];
    flat_at v = flat_layout(a, (double *)f);
    memcpy(a->sum, v.sum, sizeof(double) * LM7);
    memcpy(a->aux, v.aux, sizeof(double) * LM7);
    memcpy(a->sum2, v.sum2, sizeof(double) * LM7);
    memcpy(a->half, v.half, sizeof(double) * 2 * LM7);
    memcpy(a->bi, v.bi, sizeof(double) * (size_t)a->L);
    if (nv) memcpy(a->vec, v.vec, sizeof(double) * nv);
    a->n_samples = (int)v.counts[0];
    a->loss_sum = v.counts[1];
    a->n_targets = (int64_t)v.counts[2];
    a->n_tokens = (int64_t)v.counts[3];
    a->n_pos_mean = (int64_t)v.counts[4];
}

/* Several processes with until_stable: keep a's state before a sample
 * (restore 0), or put it back (restore 1), taking the sample out exactly. */
static int acc_snapshot(acc *a, int restore, lm_err *err) {
    if (!a->snap) {
        a->snap = lm_malloc(sizeof(double) * flat_len(a));
        if (!a->snap) return lm_nomem(err, sizeof(double) * flat_len(a), "sums before a sample");
    }
    if (restore)
        flat_unpack(a, a->snap);
    else
        flat_pack(a, a->snap, 0);
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Saving and resuming                                                       */
/* ------------------------------------------------------------------------ */

/* The checkpoint's view of accs[i] (its arrays, or those of the flat copy f). */
static void ckpt_view(const attr_run *r, int i, double *f, lm_ckpt_method *c) {
    const acc *a = &r->accs[i];
    const group *g = &r->groups[r->of_group[i]];
    memset(c, 0, sizeof *c);
    c->method = a->method;
    c->phase = a->phase;
    c->stable_runs = g->stable_runs;
    c->stopped_stable = a->stopped_stable;
    c->n_slots = g->ns;
    c->done = g->done;
    c->n_sum = (size_t)a->L * NM;
    c->n_bi = (uint64_t)a->L;
    c->n_vec = a->vec_off[a->L * NM];
    flat_at v = f ? flat_layout(a, f) : (flat_at){a->sum, a->aux, a->sum2, a->half, a->bi, a->vec, NULL};
    c->sum = v.sum;
    c->aux = v.aux;
    c->sum2 = v.sum2;
    c->half = v.half;
    c->bi = v.bi;
    c->vec = v.vec;
    c->n_samples = f ? (int32_t)v.counts[0] : a->n_samples;
    c->loss_sum = f ? v.counts[1] : a->loss_sum;
    c->n_targets = f ? (int64_t)v.counts[2] : a->n_targets;
    c->n_tokens = f ? (int64_t)v.counts[3] : a->n_tokens;
    c->n_pos_mean = f ? (int64_t)v.counts[4] : a->n_pos_mean;
}

/* The index in accs of the method the fingerprint lists i-th. */
static int acc_of_fp(const attr_run *r, int i) {
    int j = 0;
    while (j < r->n && (int)r->accs[j].method != r->fp.methods[i]) j++;
    return j;
}

/* Save the checkpoint. Several processes: a collective (every process calls
 * it at the same sync point); unless the sums are already reduced (at the
 * end), they are summed into a copy, and process 0 writes that. */
static int run_save(attr_run *r, int reduced, lm_err *err) {
    if (!r->o.checkpoint_path) return LM_OK;
    lm_ckpt_method ms[LM_METHOD_COUNT];
    double *flat = NULL, *at[LM_METHOD_COUNT] = {NULL};
    int rc = LM_OK;
    if (r->dist && !reduced) {
        size_t tot = 0;
        for (int i = 0; i < r->n; i++) tot += flat_len(&r->accs[i]);
        flat = lm_malloc(sizeof(double) * tot);
        if (!flat) return lm_nomem(err, sizeof(double) * tot, "checkpoint sums");
        size_t off = 0;
        for (int i = 0; i < r->n; i++) {
            at[i] = flat + off;
            flat_pack(&r->accs[i], at[i], r->me != 0);
            off += flat_len(&r->accs[i]);
        }
        rc = r->dist->sum(r->dist->ctx, flat, tot, err);
    }
    if (rc == LM_OK && r->me == 0) {
        for (int i = 0; i < r->n; i++) {
            int j = acc_of_fp(r, i);
            ckpt_view(r, j, at[j], &ms[i]);
        }
        rc = lm_ckpt_write(r->o.checkpoint_path, &r->fp, ms, err);
    }
    lm_free(flat);
    return rc;
}

/* Read the checkpoint into the run (alone, or process 0): LM_OK, -1 when
 * there is none, or an error naming the file; what it says is checked to
 * hang together (the members of a pass stand at the same place, the counts
 * match the finished samples). */
static int run_read(attr_run *r, lm_err *err) {
    const char *p = r->o.checkpoint_path;
    lm_ckpt_method ms[LM_METHOD_COUNT];
    int ns = r->groups[0].ns;
    uint8_t *done = lm_calloc((size_t)r->n * (size_t)ns, 1);
    if (!done) return lm_nomem(err, (size_t)r->n * (size_t)ns, "checkpoint's finished samples");
    for (int i = 0; i < r->n; i++) {
        ckpt_view(r, acc_of_fp(r, i), NULL, &ms[i]);
        ms[i].done = done + (size_t)i * ns;
    }
    int rc = lm_ckpt_read(p, &r->fp, ms, err);
    for (int i = 0; rc == LM_OK && i < r->n; i++) {
        acc *a = &r->accs[acc_of_fp(r, i)];
        a->phase = ms[i].phase;
        a->n_samples = ms[i].n_samples;
        a->stopped_stable = ms[i].stopped_stable;
        a->n_targets = ms[i].n_targets;
        a->n_tokens = ms[i].n_tokens;
        a->n_pos_mean = ms[i].n_pos_mean;
        a->loss_sum = ms[i].loss_sum;
        if (a->phase >= a->def->phases || (a->stopped_stable && a->phase + 1 != a->def->phases))
            rc = LM_CORRUPT(err, "%s: checkpoint's %s stands in phase %d of %d", p, lm_method_names[a->method],
                            a->phase + 1, a->def->phases);
    }
    for (int i = 0; rc == LM_OK && i < r->n; i++) { /* a pass's members agree; its state goes to the group */
        int j = acc_of_fp(r, i);
        group *g = &r->groups[r->of_group[j]];
        const acc *a0 = g->mem[0];
        if (&r->accs[j] == a0) {
            memcpy(g->done, ms[i].done, (size_t)ns);
            g->stable_runs = ms[i].stable_runs;
        }
    }
    for (int i = 0; rc == LM_OK && i < r->n; i++) {
        int j = acc_of_fp(r, i);
        const acc *a = &r->accs[j];
        const group *g = &r->groups[r->of_group[j]];
        const acc *a0 = g->mem[0];
        if (a->phase != a0->phase || a->stopped_stable != a0->stopped_stable || ms[i].stable_runs != g->stable_runs ||
            memcmp(ms[i].done, g->done, (size_t)ns)) {
            rc = LM_CORRUPT(err, "%s: checkpoint's methods of one pass (%s, %s) stand at different places", p,
                            lm_method_names[a0->method], lm_method_names[a->method]);
            break;
        }
        int last = a->phase + 1 == a->def->phases, pop = 0;
        int64_t tok = 0;
        for (int k = 0; k < ns; k++)
            if (g->done[k]) {
                pop++;
                tok += sample_tokens(r, k);
            }
        if (a->n_samples != (last ? pop : 0) || a->n_tokens != (last ? tok : 0))
            rc = LM_CORRUPT(err, "%s: checkpoint's %s counts %d samples of %lld tokens, but marks %d (%lld tokens) "
                                 "finished", p, lm_method_names[a->method], a->n_samples, (long long)a->n_tokens,
                            last ? pop : 0, (long long)(last ? tok : 0));
    }
    lm_free(done);
    return rc;
}

/* Resume: alone, read the checkpoint; several processes: process 0 reads it
 * and every process gets from it, through one sum(), where each pass stands
 * (finished samples, phase, until_stable's state) and ablate-mean's means
 * once they are complete; the other sums stay with process 0 (the others
 * start from 0, so that the final reduction counts them once). LM_OK, -1
 * when there is none, or an error. */
static int run_load(attr_run *r, lm_err *err) {
    int rc = r->me == 0 ? run_read(r, err) : LM_OK;
    if (!r->dist) return rc;
    int ns = r->groups[0].ns;
    size_t tot = 2;
    for (int gi = 0; gi < r->n_groups; gi++) tot += 3 + (size_t)ns;
    for (int i = 0; i < r->n; i++)
        if (r->accs[i].def->phases > 1) tot += r->accs[i].vec_off[r->accs[i].L * NM] + 1;
    double *b = lm_calloc(tot, sizeof(double));
    if (!b) return lm_nomem(err, sizeof(double) * tot, "checkpoint state for every process");
    if (r->me == 0) {
        size_t at = 2;
        b[0] = rc == -1 ? -1.0 : (double)rc;
        b[1] = err ? (double)err->code : 0.0;
        for (int gi = 0; rc == LM_OK && gi < r->n_groups; gi++) {
            const group *g = &r->groups[gi];
            b[at++] = g->mem[0]->phase;
            b[at++] = g->stable_runs;
            b[at++] = g->mem[0]->stopped_stable;
            for (int k = 0; k < ns; k++) b[at++] = g->done[k];
        }
        for (int i = 0; rc == LM_OK && i < r->n; i++)
            if (r->accs[i].def->phases > 1) {
                const acc *a = &r->accs[i];
                size_t nv = a->vec_off[a->L * NM];
                if (vec_global(a)) {
                    memcpy(b + at, a->vec, sizeof(double) * nv);
                    b[at + nv] = (double)a->n_pos_mean;
                }
                at += nv + 1;
            }
    }
    int src = r->dist->sum(r->dist->ctx, b, tot, err);
    if (src) {
        lm_free(b);
        return src;
    }
    if (r->me > 0) {
        rc = (int)b[0];
        if (rc > 0) {
            rc = lm_fail(err, rc, "%s: process 0 of %d could not resume from this checkpoint", r->o.checkpoint_path,
                         r->P);
        } else if (rc == LM_OK) {
            size_t at = 2;
            for (int gi = 0; gi < r->n_groups; gi++) {
                group *g = &r->groups[gi];
                int phase = (int)b[at++];
                g->stable_runs = (int)b[at++];
                int stopped = (int)b[at++];
                for (int i = 0; i < g->n; i++) {
                    g->mem[i]->phase = phase;
                    g->mem[i]->stopped_stable = stopped;
                }
                for (int k = 0; k < ns; k++) g->done[k] = b[at++] != 0.0;
            }
            for (int i = 0; i < r->n; i++)
                if (r->accs[i].def->phases > 1) {
                    acc *a = &r->accs[i];
                    size_t nv = a->vec_off[a->L * NM];
                    if (vec_global(a)) {
                        memcpy(a->vec, b + at, sizeof(double) * nv);
                        a->n_pos_mean = (int64_t)b[at + nv];
                    }
                    at += nv + 1;
                }
        }
    }
    lm_free(b);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Rounds and sync points                                                    */
/* ------------------------------------------------------------------------ */

/* The plan of group g's current phase in this call. The samples left are
 * run in rounds, with a sync point before each round and after the last:
 *  - alone, each sample is a round (the sync point is local: cancel, a due
 *    checkpoint, max_seqs, until_stable, checked after every sample);
 *  - several processes, the samples left are shared by tokens
 *    (lm_dataset_share_skip) and each process's share, in data order, is cut
 *    into rounds of about the largest sample's tokens: a round is about one
 *    sample's work on every process, so that stopping waits little;
 *  - until_stable's last pass (ordered): round j gives sample rem[j*P + p]
 *    to process p, in data order, so that the split-half statistic is
 *    checked after each sample in data order as one process checks it.
 * Every process computes the same plan (it depends on the data and the
 * finished samples alone). */
static int group_plan(attr_run *r, group *g, lm_err *err) {
    int P = r->P;
    acc *a0 = g->mem[0];
    int last_phase = a0->phase + 1 == a0->def->phases, L7 = a0->L * NM;
    g->ordered = r->o.until_stable > 0 && last_phase && g->n_se > 0;
    g->n_rem = g->n_mine = g->n_rounds = g->next = 0;
    g->ran = -1;
    for (int k = 0; k < g->ns; k++) {
        g->round[k] = g->owner[k] = -1;
        if (!g->done[k]) g->rem[g->n_rem++] = k;
    }
    if (g->ordered || P == 1) {
        int per = g->ordered ? P : 1;
        for (int pos = 0; pos < g->n_rem; pos++) {
            int k = g->rem[pos];
            g->round[k] = pos / per;
            g->owner[k] = pos % per;
            g->by_round[pos] = k;
        }
        g->n_rounds = (g->n_rem + per - 1) / per;
        for (int j = 0; j <= g->n_rounds; j++) g->round_off[j] = j * per < g->n_rem ? j * per : g->n_rem;
    } else {
        int rc = lm_dataset_share_skip(r->d, r->o.batch, P, g->done, g->owner, err);
        if (rc) return rc;
        int64_t T = 1, *cum = lm_calloc((size_t)P, sizeof(int64_t));
        if (!cum) return lm_nomem(err, sizeof(int64_t) * (size_t)P, "rounds");
        for (int pos = 0; pos < g->n_rem; pos++)
            if (sample_tokens(r, g->rem[pos]) > T) T = sample_tokens(r, g->rem[pos]);
        for (int pos = 0; pos < g->n_rem; pos++) {
            int k = g->rem[pos], p = g->owner[k];
            g->round[k] = (int)(cum[p] / T);
            cum[p] += sample_tokens(r, k);
            if (g->round[k] + 1 > g->n_rounds) g->n_rounds = g->round[k] + 1;
        }
        lm_free(cum);
        /* counting sort by round, data order kept within a round */
        for (int j = 0; j <= g->n_rounds; j++) g->round_off[j] = 0;
        for (int pos = 0; pos < g->n_rem; pos++) g->round_off[g->round[g->rem[pos]] + 1]++;
        for (int j = 0; j < g->n_rounds; j++) g->round_off[j + 1] += g->round_off[j];
        int *fill = g->mine; /* scratch until mine is built */
        for (int j = 0; j < g->n_rounds; j++) fill[j] = g->round_off[j];
        for (int pos = 0; pos < g->n_rem; pos++) {
            int k = g->rem[pos];
            g->by_round[fill[g->round[k]]++] = k;
        }
    }
    for (int i = 0; i < g->n_rem; i++)
        if (g->owner[g->by_round[i]] == r->me) g->mine[g->n_mine++] = g->by_round[i];
    /* the sync buffer: flags, and in ordered rounds of several processes each one's contributions */
    size_t need = 4 + (g->ordered && P > 1 ? (size_t)P * g->n_se * L7 : 0);
    if (need > g->n_sync) {
        lm_free(g->sync);
        g->sync = lm_malloc(sizeof(double) * need);
        if (!g->sync) return lm_nomem(err, sizeof(double) * need, "sync buffer");
    }
    g->n_sync = need;
    if (g->ordered && P > 1) { /* the halves of every process so far (process 0 holds a resumed run's) */
        size_t nh = (size_t)g->n_se * 2 * L7;
        lm_free(g->ghalf);
        g->ghalf = lm_malloc(sizeof(double) * (nh + 1));
        if (!g->ghalf) return lm_nomem(err, sizeof(double) * (nh + 1), "split halves");
        for (int i = 0, q = 0; i < g->n; i++)
            if (!g->mem[i]->def->no_se) memcpy(g->ghalf + (size_t)q++ * 2 * L7, g->mem[i]->half, sizeof(double) * 2 * L7);
        g->ghalf[nh] = a0->n_samples;
        int rc = r->dist->sum(r->dist->ctx, g->ghalf, nh + 1, err);
        if (rc) return rc;
        g->gn = (int)g->ghalf[nh];
    }
    return LM_OK;
}

/* Flags of a sync point. */
enum { SYNC_CANCEL, SYNC_SAVE, SYNC_STOP, SYNC_FLAGS = 4 };

/* A sync point: the flags (this process canceled; process 0's clock says a
 * checkpoint is due; max_seqs reached) and, in ordered rounds of several
 * processes, each process's slot holding the contributions (xs) of the
 * sample it ran in the last round; one sum() when there are several
 * processes, so that every process sees the same. */
static int group_sync(attr_run *r, group *g, int due, int stop, lm_err *err) {
    double *b = g->sync;
    memset(b, 0, sizeof(double) * g->n_sync);
    b[SYNC_CANCEL] = r->o.cancel && *r->o.cancel;
    b[SYNC_SAVE] = due;
    b[SYNC_STOP] = stop;
    if (g->ordered && r->P > 1 && g->ran >= 0) {
        size_t L7 = (size_t)g->mem[0]->L * NM;
        double *slot = b + SYNC_FLAGS + (size_t)r->me * g->n_se * L7;
        for (int i = 0, q = 0; i < g->n; i++)
            if (!g->mem[i]->def->no_se) memcpy(slot + (size_t)q++ * L7, g->mem[i]->xs, sizeof(double) * L7);
    }
    return r->dist ? r->dist->sum(r->dist->ctx, b, g->n_sync, err) : LM_OK;
}

/* until_stable, after ordered round j: the split-half correlation of every
 * member with standard errors after each of the round's samples in data
 * order (over the halves of every process); the group has read enough once
 * the worst of them has been >= the bound for STABLE_RUNS samples in a row,
 * with at least STABLE_MIN samples. 1 when that happens in this round, and
 * *keep = the slots up to the stopping sample (later ones are taken out). */
static int ordered_decide(attr_run *r, group *g, int j, int *keep) {
    int P = r->P;
    size_t L7 = (size_t)g->mem[0]->L * NM;
    *keep = P;
    for (int p = 0; p < P; p++) {
        int pos = j * P + p;
        if (pos >= g->n_rem) break;
        int k = g->rem[pos];
        if (P > 1) { /* this sample's contributions into the halves of all */
            const double *X = g->sync + SYNC_FLAGS + (size_t)p * g->n_se * L7;
            for (int q = 0; q < g->n_se; q++) {
                double *h = g->ghalf + (size_t)q * 2 * L7 + (size_t)(k % 2) * L7;
                for (size_t c = 0; c < L7; c++) h[c] += X[(size_t)q * L7 + c];
            }
            g->gn++;
        }
        if (k + 1 >= g->ns) continue; /* the data ends here anyway */
        double worst = INFINITY;
        for (int i = 0, q = 0; i < g->n; i++) {
            const acc *a = g->mem[i];
            if (a->def->no_se) continue;
            const double *half = P > 1 ? g->ghalf + (size_t)q++ * 2 * L7 : a->half;
            int ns = P > 1 ? g->gn : a->n_samples;
            double rho = ns >= STABLE_MIN ? split_half_of(a, half, ns) : NAN;
            if (!(rho >= worst)) worst = rho; /* NaN counts as unstable */
        }
        g->stable_runs = worst >= r->o.until_stable ? g->stable_runs + 1 : 0;
        if (g->stable_runs >= STABLE_RUNS) {
            *keep = p + 1;
            return 1;
        }
    }
    return 0;
}

/* After round j: its samples are finished (ordered: the first keep slots). */
static void mark_done(group *g, int j, int keep) {
    for (int i = g->round_off[j]; i < g->round_off[j + 1]; i++)
        if (!g->ordered || i - g->round_off[j] < keep) g->done[g->by_round[i]] = 1;
}

/* Is there work after group gi's current phase? */
static int work_after(const attr_run *r, int gi) {
    const acc *a0 = r->groups[gi].mem[0];
    if (a0->phase + 1 < a0->def->phases) return 1;
    for (int h = gi + 1; h < r->n_groups; h++)
        if (!group_finished(&r->groups[h])) return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                    */
/* ------------------------------------------------------------------------ */

int lm_attribute_many(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                      const lm_attr_opts *opts, lm_attr_result *res, lm_err *err) {
    if (res && n > 0 && n <= LM_METHOD_COUNT) memset(res, 0, sizeof *res * (size_t)n);
    double t0 = lm_now();
    attr_run *r = lm_malloc(sizeof *r);
    if (!r) return lm_nomem(err, sizeof *r, "attribution run");
    int rc = run_init(r, e, d, methods, n, opts, err);
    const lm_attr_opts *o = &r->o;
    if (rc == LM_OK && o->checkpoint_path && o->resume) {
        rc = run_load(r, err);
        if (rc == -1) rc = LM_OK; /* nothing to resume: start fresh */
    }
    if (rc) goto out;
    double total = 0.0;
    for (int gi = 0; gi < r->n_groups; gi++) total += (double)d->n_tokens * r->groups[gi].mem[0]->def->phases;
    double last_save = lm_now();
    int done_this_call = 0, stopped = 0, canceled = 0, canceled_here = 0;
    for (int gi = 0; gi < r->n_groups && !stopped && !canceled; gi++) {
        group *g = &r->groups[gi];
        acc *a0 = g->mem[0];
        while (!group_finished(g)) { /* phases */
            int last_phase = a0->phase + 1 == a0->def->phases;
            if ((rc = group_plan(r, g, err))) goto out;
            /* progress: every finished sample, then this process's share of
             * what is left scaled to all of it (an estimate under several) */
            double done_tok = run_done_tokens(r), left = 0.0, mine = 0.0;
            for (int i = 0; i < g->n_rem; i++) left += (double)sample_tokens(r, g->rem[i]);
            for (int i = 0; i < g->n_mine; i++) mine += (double)sample_tokens(r, g->mine[i]);
            double scale = mine > 0 ? left / mine : 1.0;
            for (int j = 0;; j++) {
                int end = j == g->n_rounds;
                int due = r->me == 0 && o->checkpoint_path && lm_now() - last_save >= o->checkpoint_secs;
                int stop = o->max_seqs > 0 && done_this_call >= o->max_seqs;
                if ((rc = group_sync(r, g, due, stop, err))) goto out;
                if (j > 0) { /* round j - 1 is over */
                    int keep = r->P;
                    if (g->ordered && ordered_decide(r, g, j - 1, &keep)) {
                        for (int i = 0; i < g->n; i++) g->mem[i]->stopped_stable = 1;
                        if (r->P > 1 && r->me >= keep && g->ran >= 0) /* this sample came after the stop */
                            for (int i = 0; i < g->n; i++)
                                if ((rc = acc_snapshot(g->mem[i], 1, err))) goto out;
                    }
                    mark_done(g, j - 1, keep);
                    if (a0->stopped_stable) break;
                }
                /* the end of the whole run: finish rather than stop */
                if (!(end && !work_after(r, gi))) {
                    if (g->sync[SYNC_CANCEL] > 0) {
                        canceled = 1;
                        canceled_here = o->cancel && *o->cancel;
                        break;
                    }
                    if (g->sync[SYNC_STOP] > 0) {
                        stopped = 1;
                        break;
                    }
                }
                if (end) break;
                if (g->sync[SYNC_SAVE] > 0) {
                    if ((rc = run_save(r, 0, err))) goto out;
                    last_save = lm_now();
                }
                /* round j: this process's samples of it */
                g->ran = -1;
                while (g->next < g->n_mine && g->round[g->mine[g->next]] == j) {
                    int k = g->mine[g->next++], first = k * o->batch;
                    int nb = d->n_seq - first < o->batch ? d->n_seq - first : o->batch;
                    for (int i = 0; g->ordered && r->P > 1 && i < g->n; i++)
                        if ((rc = acc_snapshot(g->mem[i], 0, err))) goto out;
                    if (last_phase)
                        for (int i = 0; i < g->n; i++) sample_begin(g->mem[i]);
                    if ((rc = group_batch(g, &d->seqs[first], nb, o, err))) goto out;
                    if (last_phase)
                        for (int i = 0; i < g->n; i++) sample_end(g->mem[i], k);
                    g->ran = k;
                    done_this_call += nb;
                    done_tok += (double)sample_tokens(r, k) * scale;
                    if (o->progress) o->progress(o->progress_ctx, done_tok, total, g->label);
                }
            }
            if (canceled || stopped || a0->stopped_stable || last_phase) break;
            for (int i = 0; r->dist && i < g->n; i++)
                if ((rc = dist_sum_phase(r->dist, g->mem[i], err))) goto out;
            for (int i = 0; i < g->n; i++) g->mem[i]->phase++;
            memset(g->done, 0, (size_t)g->ns);
        }
    }
    if (stopped || canceled) {
        rc = run_save(r, 0, err);
        if (rc == LM_OK && r->dist) { /* no process returns (and exits) before process 0 has written it */
            double none = 0.0;
            rc = r->dist->sum(r->dist->ctx, &none, 1, err);
        }
        if (rc == LM_OK && canceled) {
            const char *who = canceled_here ? "" : " by another process";
            if (o->checkpoint_path)
                rc = lm_fail(err, LM_ECANCELED, "attribute: canceled%s; the sums so far are in %s", who,
                             o->checkpoint_path);
            else
                rc = lm_fail(err, LM_ECANCELED, "attribute: canceled%s", who);
        }
    } else {
        if (r->dist) rc = dist_sum_final(r->dist, r->accs, n, err);
        for (int i = 0; rc == LM_OK && i < n; i++) {
            acc *a = &r->accs[i];
            rc = a->def->finish(a, &res[i], err);
            res[i].complete = 1;
            res[i].stopped_stable = a->stopped_stable;
            if (rc == LM_OK) mask_layers(a, &res[i]);
            if (rc == LM_OK) rc = attach_se(a, &res[i], err);
        }
        if (rc == LM_OK) rc = run_save(r, 1, err);
    }
out:
    for (int i = 0; i < n && i < r->n_acc; i++) {
        res[i].loss_sum = r->accs[i].loss_sum;
        res[i].n_targets = r->accs[i].n_targets;
        res[i].n_tokens = r->accs[i].n_tokens;
        res[i].n_seq_done = group_seqs_done(r, &r->groups[r->of_group[i]]);
        res[i].seconds = lm_now() - t0;
        if (rc) lm_attr_result_free(&res[i]);
    }
    run_free(r);
    lm_free(r);
    return rc;
}

/* See layermap.h. */
int lm_attr_checkpoint_probe(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                             const lm_attr_opts *opts, lm_attr_ckpt_info *info, lm_err *err) {
    memset(info, 0, sizeof *info);
    if (!opts || !opts->checkpoint_path) return lm_fail(err, LM_EARG, "checkpoint probe: no checkpoint path");
    attr_run *r = lm_malloc(sizeof *r);
    if (!r) return lm_nomem(err, sizeof *r, "attribution run");
    lm_attr_opts o = *opts;
    o.dist = NULL; /* the file as one process reads it */
    int rc = run_init(r, e, d, methods, n, &o, err);
    if (rc == LM_OK) rc = run_read(r, err);
    if (rc == -1) {
        rc = LM_OK;
    } else if (rc == LM_OK) {
        info->exists = 1;
        info->n_seq = d->n_seq;
        info->finished = 1;
        for (int gi = 0; gi < r->n_groups; gi++) {
            const group *g = &r->groups[gi];
            const acc *a0 = g->mem[0];
            if (info->finished && !group_finished(g)) {
                info->finished = 0;
                info->pass = info->n_passes + a0->phase;
                info->seq_done = group_seqs_done(r, g);
                snprintf(info->pass_label, sizeof info->pass_label, "%s%s", g->label,
                         a0->def->phases > 1 ? (a0->phase == 0 ? " (means)" : " (ablating)") : "");
            }
            info->n_passes += a0->def->phases;
        }
        if (info->finished) {
            info->pass = info->n_passes - 1;
            info->seq_done = d->n_seq;
        }
        info->tokens_done = run_done_tokens(r);
        info->tokens_total = (double)d->n_tokens * info->n_passes;
    }
    run_free(r);
    lm_free(r);
    return rc;
}
