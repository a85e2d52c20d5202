/*
 * attribute.c -- attribution methods from data (docs/METHODS.md).
 *
 * Every method is a sum over sequences of a per-sequence quantity, reduced
 * per (layer, module) while the engine's pass runs: weight gradients
 * G = dY^T X are formed one module at a time inside a hook and reduced at
 * once, never stored. The accumulated sums are checkpointed so that an
 * interrupted run resumes and ends bit-identical to an uninterrupted one.
 * The hooks' arguments are buffers of the engine's backend: every reduction
 * of them runs through it (be->grad_reduce, be->dot, be->col_sumsq ...), and
 * only the resulting doubles are summed here.
 */
#include "compute/backend.h"
#include "compute/engine.h"

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
    o->checkpoint_secs = 30.0;
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
    a->vec_off = lm_calloc((size_t)L * NM + 1, sizeof(size_t));
    a->red = lm_malloc(maxv * sizeof(double));
    a->mu_host = lm_malloc(maxv * sizeof(float));
    a->mu = a->be->alloc(a->be, maxv * sizeof(float));
    if (!a->sum || !a->aux || !a->bi || !a->vec_off || !a->red || !a->mu_host || !a->mu || !a->sum2 || !a->half ||
        !a->prev)
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
/* Checkpoint file                                                           */
/* ------------------------------------------------------------------------ */

/* Layout: ckpt_file (the method set), then for each method of the set, in
 * the file's order, a ckpt_head and its sums as doubles: sum (L*7),
 * aux (L*7), bi (L), vec (vec_len), sum2 (L*7), half (2*L*7). */
#define CKPT_MAGIC "LMCKPT03"

typedef struct ckpt_file {
    char magic[8];
    int32_t n_methods;
    int32_t methods[LM_METHOD_COUNT]; /* the first n_methods are the set */
} ckpt_file;

typedef struct ckpt_head {
    int32_t method, L, phase, next_seq;
    int32_t ig_steps, n_seq, batch, n_samples;
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

/* "grad-weight,fisher" for messages */
static void join_methods(char *buf, size_t n, const int32_t *ids, int k) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < k && used + 1 < n; i++) {
        const char *nm = ids[i] >= 0 && ids[i] < LM_METHOD_COUNT ? lm_method_names[ids[i]] : "?";
        int w = snprintf(buf + used, n - used, "%s%s", i ? "," : "", nm);
        if (w < 0) break;
        used += (size_t)w;
    }
}

static int ckpt_write_one(FILE *f, const acc *a, const lm_dataset *d, const lm_attr_opts *o, uint64_t hash) {
    ckpt_head h;
    memset(&h, 0, sizeof h);
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
    h.n_samples = a->n_samples;
    h.data_hash = hash;
    h.loss_sum = a->loss_sum;
    h.vec_len = a->vec_off[a->L * NM];
    size_t LM7 = (size_t)a->L * NM;
    return fwrite(&h, sizeof h, 1, f) == 1 && fwrite(a->sum, sizeof(double), LM7, f) == LM7 &&
           fwrite(a->aux, sizeof(double), LM7, f) == LM7 &&
           fwrite(a->bi, sizeof(double), (size_t)a->L, f) == (size_t)a->L &&
           (h.vec_len == 0 || fwrite(a->vec, sizeof(double), h.vec_len, f) == h.vec_len) &&
           fwrite(a->sum2, sizeof(double), LM7, f) == LM7 && fwrite(a->half, sizeof(double), 2 * LM7, f) == 2 * LM7;
}

static int ckpt_save(const acc *accs, int n, const lm_dataset *d, const lm_attr_opts *o, lm_err *err) {
    lm_atomic f;
    int rc = lm_atomic_open(&f, o->checkpoint_path, err);
    if (rc) return rc;
    ckpt_file fh;
    memset(&fh, 0, sizeof fh);
    memcpy(fh.magic, CKPT_MAGIC, 8);
    fh.n_methods = n;
    for (int i = 0; i < n; i++) fh.methods[i] = accs[i].method;
    uint64_t hash = data_hash(d);
    errno = 0;
    int ok = fwrite(&fh, sizeof fh, 1, f.f) == 1;
    for (int i = 0; ok && i < n; i++) ok = ckpt_write_one(f.f, &accs[i], d, o, hash);
    if (!ok) {
        int e = errno ? errno : EIO;
        lm_atomic_abort(&f);
        return lm_fail(err, LM_EIO, "%s: cannot write checkpoint: %s", o->checkpoint_path, strerror(e));
    }
    return lm_atomic_commit(&f, err);
}

/* One method's part of the checkpoint into a. */
static int ckpt_read_one(FILE *f, acc *a, const lm_dataset *d, const lm_attr_opts *o, uint64_t hash, lm_err *err) {
    const char *p = o->checkpoint_path;
    size_t LM7 = (size_t)a->L * NM;
    ckpt_head h;
    if (fread(&h, sizeof h, 1, f) != 1) return LM_CORRUPT(err, "%s: checkpoint truncated", p);
    if (h.method != (int32_t)a->method) return LM_CORRUPT(err, "%s: checkpoint's method list and sums disagree", p);
    if (h.L != a->L || h.vec_len != a->vec_off[a->L * NM] || h.ig_steps != o->ig_steps || h.batch != o->batch)
        return lm_fail(err, LM_EARG, "%s: checkpoint is for another model, batch size or step count (%s: %d layers, batch %d, %d steps)",
                       p, lm_method_names[a->method], h.L, h.batch, h.ig_steps);
    if (h.n_seq != d->n_seq || h.data_hash != hash)
        return lm_fail(err, LM_EARG, "%s: checkpoint is for other data (%d sequences)", p, h.n_seq);
    if (h.next_seq < 0 || h.next_seq > d->n_seq || h.phase < 0 || h.phase >= a->def->phases)
        return LM_CORRUPT(err, "%s: checkpoint position %d out of range", p, h.next_seq);
    if (h.n_samples < 0 || h.n_samples > d->n_seq)
        return LM_CORRUPT(err, "%s: checkpoint holds %d samples of %d sequences", p, h.n_samples, d->n_seq);
    if (fread(a->sum, sizeof(double), LM7, f) != LM7 || fread(a->aux, sizeof(double), LM7, f) != LM7 ||
        fread(a->bi, sizeof(double), (size_t)a->L, f) != (size_t)a->L ||
        (h.vec_len && fread(a->vec, sizeof(double), h.vec_len, f) != h.vec_len) ||
        fread(a->sum2, sizeof(double), LM7, f) != LM7 || fread(a->half, sizeof(double), 2 * LM7, f) != 2 * LM7)
        return LM_CORRUPT(err, "%s: checkpoint truncated", p);
    a->n_samples = h.n_samples;
    a->phase = h.phase;
    a->next_seq = h.next_seq;
    a->n_targets = h.n_targets;
    a->n_tokens = h.n_tokens;
    a->n_pos_mean = h.n_pos_mean;
    a->loss_sum = h.loss_sum;
    return LM_OK;
}

/* Load a checkpoint into accs[0..n); LM_OK on success, -1 when the file does
 * not exist, an error naming the file when it belongs to another run (another
 * method set, model, batch size or data). */
static int ckpt_load(acc *accs, int n, const lm_dataset *d, const lm_attr_opts *o, lm_err *err) {
    FILE *f = fopen(o->checkpoint_path, "rb");
    if (!f) return -1;
    const char *p = o->checkpoint_path;
    ckpt_file fh;
    int rc = LM_OK;
    int32_t want[LM_METHOD_COUNT];
    for (int i = 0; i < n; i++) want[i] = accs[i].method;
    if (fread(&fh, sizeof fh, 1, f) != 1 || memcmp(fh.magic, "LMCKPT", 6)) {
        rc = LM_CORRUPT(err, "%s: not a layermap checkpoint (or truncated)", p);
    } else if (memcmp(fh.magic, CKPT_MAGIC, 8)) {
        rc = lm_fail(err, LM_EARG, "%s: checkpoint of an older layermap (format %.8s); run again without --resume", p,
                     fh.magic);
    } else if (fh.n_methods < 1 || fh.n_methods > LM_METHOD_COUNT) {
        rc = LM_CORRUPT(err, "%s: checkpoint holds %d methods", p, (int)fh.n_methods);
    } else {
        /* the same set of methods, in any order */
        int same = fh.n_methods == n;
        for (int i = 0; same && i < n; i++) {
            int found = 0;
            for (int j = 0; j < n; j++) found |= fh.methods[j] == want[i];
            same = found;
        }
        if (!same) {
            char have[256], asked[256];
            join_methods(have, sizeof have, fh.methods, fh.n_methods);
            join_methods(asked, sizeof asked, want, n);
            rc = lm_fail(err, LM_EARG, "%s: checkpoint is for method %s, not %s", p, have, asked);
        }
    }
    uint64_t hash = rc == LM_OK ? data_hash(d) : 0;
    for (int k = 0; rc == LM_OK && k < n; k++) {
        int j = 0;
        while (accs[j].method != (lm_method)fh.methods[k]) j++;
        rc = ckpt_read_one(f, &accs[j], d, o, hash, err);
    }
    fclose(f);
    return rc;
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

/* Spearman correlation of the odd and even samples' sums over the cells
 * where both are finite; NaN with fewer than 2 samples, 3 cells or no spread.
 * Scratch: 5 * L * 7 doubles/ints from the heap (NaN on failure). */
static double split_half(const acc *a) {
    int LM7 = a->L * NM;
    if (a->n_samples < 2) return NAN;
    const double *h0 = a->half, *h1 = a->half + LM7;
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
    memset(g, 0, sizeof *g);
}

/* After g->mem[0..n) are set: the union of what the members need. */
static int group_init(group *g, lm_engine *e, lm_err *err) {
    g->e = e;
    g->own = g->mem[0]->def->own_pass;
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
        const char *what = o->checkpoint_path ? "a checkpoint" : o->max_seqs > 0 ? "a sequence limit (max_seqs)"
                           : o->until_stable > 0                ? "--until-stable"
                                                                : NULL;
        if (what) /* each would stop at a point that depends on which process ran which sample */
            return lm_fail(err, LM_EARG, "attribute: %s is not yet supported with more than one rank (%d ranks)", what,
                           dist->size);
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

/* Tokens of finished phases and sequences of group g (for progress). */
static double group_done_tokens(const group *g, const lm_dataset *d) {
    const acc *a = g->mem[0];
    double t = (double)d->n_tokens * a->phase;
    for (int s = 0; s < a->next_seq; s++) t += d->seqs[s].n;
    return t;
}

int lm_attribute_many(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                      const lm_attr_opts *opts, lm_attr_result *res, lm_err *err) {
    if (res && n > 0 && n <= LM_METHOD_COUNT) memset(res, 0, sizeof *res * (size_t)n);
    lm_attr_opts o;
    if (opts)
        o = *opts;
    else
        lm_attr_opts_default(&o);
    int rc = check_args(e, d, methods, n, &o, err);
    if (rc) return rc;
    double t0 = lm_now();
    const lm_attr_dist *dist = o.dist && o.dist->size > 1 ? o.dist : NULL;
    int *owner = NULL; /* several processes: owner[k] runs sample k */
    acc accs[LM_METHOD_COUNT];
    group groups[LM_METHOD_COUNT];
    memset(accs, 0, sizeof accs);
    memset(groups, 0, sizeof groups);
    int n_acc = 0, n_groups = 0;
    for (; n_acc < n; n_acc++)
        if ((rc = acc_init(&accs[n_acc], e, methods[n_acc], err))) goto out;
    for (int i = 0; i < n; i++) {
        accs[i].keep = o.layers;
        accs[i].n_keep = o.n_layers;
    }
    /* the shared pass first, then each own-pass method */
    for (int i = 0; i < n; i++)
        if (!accs[i].def->own_pass) groups[0].mem[groups[0].n++] = &accs[i];
    if (groups[0].n) n_groups = 1;
    for (int i = 0; i < n; i++)
        if (accs[i].def->own_pass) {
            groups[n_groups].mem[0] = &accs[i];
            groups[n_groups++].n = 1;
        }
    for (int gi = 0; gi < n_groups; gi++)
        if ((rc = group_init(&groups[gi], e, err))) goto out;
    if (o.checkpoint_path && o.resume) {
        rc = ckpt_load(accs, n, d, &o, err);
        if (rc == -1) rc = LM_OK; /* nothing to resume: start fresh */
        if (rc) goto out;
        for (int gi = 0; gi < n_groups; gi++)
            for (int i = 1; i < groups[gi].n; i++)
                if (groups[gi].mem[i]->next_seq != groups[gi].mem[0]->next_seq) {
                    rc = LM_CORRUPT(err, "%s: checkpoint's methods of one pass stand at different sequences",
                                    o.checkpoint_path);
                    goto out;
                }
    }
    /* several processes: the samples this one runs (owner[first / batch]),
     * and its share of the tokens, to scale its progress to the whole data */
    double own_tokens = (double)d->n_tokens;
    if (dist) {
        owner = lm_malloc(sizeof(int) * (size_t)((d->n_seq - 1) / o.batch + 1));
        if (!owner) {
            rc = lm_nomem(err, sizeof(int) * (size_t)d->n_seq, "data shares");
            goto out;
        }
        if ((rc = lm_dataset_share(d, o.batch, dist->size, owner, err))) goto out;
        own_tokens = 0.0;
        for (int s = 0; s < d->n_seq; s++)
            if (owner[s / o.batch] == dist->rank) own_tokens += d->seqs[s].n;
    }
    double total = 0.0, done_tok = 0.0, own_total = 0.0;
    for (int gi = 0; gi < n_groups; gi++) {
        total += (double)d->n_tokens * groups[gi].mem[0]->def->phases;
        own_total += own_tokens * groups[gi].mem[0]->def->phases;
        done_tok += group_done_tokens(&groups[gi], d);
    }
    double prog_scale = own_total > 0 ? total / own_total : 1.0;
    double last_save = lm_now();
    int done_this_call = 0, stopped = 0, canceled = 0;
    for (int gi = 0; gi < n_groups && !stopped && !canceled; gi++) {
        group *g = &groups[gi];
        acc *a0 = g->mem[0];
        int phases = a0->def->phases;
        for (;;) {
            while (a0->next_seq < d->n_seq) {
                if (o.max_seqs > 0 && done_this_call >= o.max_seqs) {
                    stopped = 1;
                    break;
                }
                if (o.cancel && *o.cancel) {
                    canceled = 1;
                    break;
                }
                int first = a0->next_seq;
                int nb = d->n_seq - first < o.batch ? d->n_seq - first : o.batch;
                if (owner && owner[first / o.batch] != dist->rank) { /* another process's sample */
                    for (int i = 0; i < g->n; i++) g->mem[i]->next_seq += nb;
                    continue;
                }
                int last_phase = a0->phase + 1 == phases;
                if (last_phase)
                    for (int i = 0; i < g->n; i++) sample_begin(g->mem[i]);
                rc = group_batch(g, &d->seqs[first], nb, &o, err);
                if (rc) goto out;
                if (last_phase)
                    for (int i = 0; i < g->n; i++) sample_end(g->mem[i], first / o.batch);
                for (int i = 0; i < g->n; i++) g->mem[i]->next_seq += nb;
                done_this_call += nb;
                for (int s = first; s < first + nb; s++) done_tok += d->seqs[s].n;
                if (o.progress) o.progress(o.progress_ctx, done_tok * prog_scale, total, g->label);
                if (o.checkpoint_path && lm_now() - last_save >= o.checkpoint_secs) {
                    rc = ckpt_save(accs, n, d, &o, err);
                    if (rc) goto out;
                    last_save = lm_now();
                }
                /* --until-stable: every member's split-half correlation at or
                 * above the bound for STABLE_RUNS samples in a row (and at
                 * least STABLE_MIN samples): the group has read enough */
                if (o.until_stable > 0 && last_phase && a0->next_seq < d->n_seq) {
                    double worst = INFINITY;
                    int any = 0;
                    for (int i = 0; i < g->n; i++) {
                        if (g->mem[i]->def->no_se) continue;
                        double rho = g->mem[i]->n_samples >= STABLE_MIN ? split_half(g->mem[i]) : NAN;
                        any = 1;
                        if (!(rho >= worst)) worst = rho; /* NaN counts as unstable */
                    }
                    g->stable_runs = any && worst >= o.until_stable ? g->stable_runs + 1 : 0;
                    if (g->stable_runs >= STABLE_RUNS) {
                        for (int i = 0; i < g->n; i++) g->mem[i]->stopped_stable = 1;
                        break;
                    }
                }
            }
            if (stopped || canceled || a0->phase + 1 >= phases || a0->stopped_stable) break;
            for (int i = 0; dist && i < g->n; i++)
                if ((rc = dist_sum_phase(dist, g->mem[i], err))) goto out;
            for (int i = 0; i < g->n; i++) {
                g->mem[i]->phase++;
                g->mem[i]->next_seq = 0;
            }
        }
    }
    if (stopped || canceled) {
        if (o.checkpoint_path) rc = ckpt_save(accs, n, d, &o, err);
        if (rc == LM_OK && canceled) {
            if (o.checkpoint_path)
                rc = lm_fail(err, LM_ECANCELED, "attribute: canceled; the sums so far are in %s (--resume continues)",
                             o.checkpoint_path);
            else
                rc = lm_fail(err, LM_ECANCELED, "attribute: canceled");
        }
    } else {
        if (dist) rc = dist_sum_final(dist, accs, n, err);
        for (int i = 0; rc == LM_OK && i < n; i++) {
            rc = accs[i].def->finish(&accs[i], &res[i], err);
            res[i].complete = 1;
            res[i].stopped_stable = accs[i].stopped_stable;
            if (rc == LM_OK) mask_layers(&accs[i], &res[i]);
            if (rc == LM_OK) rc = attach_se(&accs[i], &res[i], err);
        }
        if (rc == LM_OK && o.checkpoint_path) rc = ckpt_save(accs, n, d, &o, err);
    }
out:
    for (int i = 0; i < n; i++) {
        res[i].loss_sum = accs[i].loss_sum;
        res[i].n_targets = accs[i].n_targets;
        res[i].n_tokens = accs[i].n_tokens;
        res[i].n_seq_done = accs[i].next_seq;
        res[i].seconds = lm_now() - t0;
        if (rc) lm_attr_result_free(&res[i]);
    }
    for (int gi = 0; gi < n_groups; gi++) group_free(&groups[gi]);
    for (int i = 0; i < n_acc; i++) acc_free(&accs[i]);
    lm_free(owner);
    return rc;
}
