/*
 * engine.c -- forward and backward passes of a Llama-family model on the CPU.
 *
 * One readable path from tokens to loss and back (docs/METHODS.md is the
 * definition). Memory is bounded by design:
 *   - weights are dequantized to F32 one layer at a time and cached while the
 *     cache budget allows (all layers of a small model; a sliding few of a 7B);
 *   - a forward stores only each layer's input residual (L+1, n, dim);
 *   - the backward recomputes one layer's intermediates from its stored input,
 *     then backpropagates through it (activation checkpointing per layer);
 *   - weight gradients are never formed here: hooks receive dL/dY, Y, X and W
 *     per module and reduce what their method needs.
 * The output head runs over chunks of tokens so n x vocab logits never exist
 * at once unless the caller asks for them.
 */
#include "compute/backend.h"
#include "compute/engine.h"
#include "compute/kernels.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Tokens per output-head chunk: as many as keep the chunk's logits within
 * 32 MiB, between 64 and 256 (bigger products run faster). */
static int head_chunk(int vocab) {
    long r = (32L << 20) / ((long)vocab * (long)sizeof(float));
    return r < 64 ? 64 : r > 256 ? 256 : (int)r;
}

/* ------------------------------------------------------------------------ */
/* Structures                                                                */
/* ------------------------------------------------------------------------ */

/* One layer's weights in F32 (one allocation, split into named pointers). */
typedef struct layer_f32 {
    float *block;   /* the allocation; NULL when not loaded */
    size_t bytes;
    long last_use;  /* for eviction */
    float *w[LM_N_MODULES];    /* (out, in) */
    float *b[LM_N_MODULES];    /* (out) or NULL */
    float *attn_norm, *ffn_norm;      /* (dim) */
    float *q_norm, *k_norm;           /* (head_dim) or NULL */
    float *post_attn_norm, *post_ffn_norm; /* (dim) or NULL */
} layer_f32;

/* One layer's intermediates for one sequence (recomputed in the backward). */
typedef struct layer_acts {
    float *block;    /* the allocation all below point into */
    float *x;        /* (n, D)  attn-normed input */
    float *rstd1;    /* (n) */
    float *q, *k, *v;     /* (n, QD), (n, KD), (n, KD) module outputs */
    float *qr, *kr;       /* (n, QD), (n, KD) after qk-norm and rope */
    float *q_rstd, *k_rstd; /* (n, H), (n, KV) qk-norm */
    float *P;        /* per sequence s: (H, n_s, n_s) attention probabilities, one after another */
    float *att;      /* (n, QD) attention output = o's input */
    float *o;        /* (n, D) o output (before post-norm) */
    float *o_rstd;   /* (n) */
    float *hmid;     /* (n, D) residual after attention */
    float *x2;       /* (n, D) ffn-normed */
    float *rstd2;    /* (n) */
    float *g, *u, *a;     /* (n, F) */
    float *d;        /* (n, D) down output (before post-norm) */
    float *d_rstd;   /* (n) */
} layer_acts;

struct lm_engine {
    const lm_model *m;
    lm_config c;
    const lm_backend *be;
    int threads;
    int max_seq;         /* longest sequence */
    int max_batch;       /* sequences packed into one pass */
    int rows;            /* row capacity: max_seq * max_batch */
    int nseg;            /* sequences in the current pass */
    int *seg;            /* (max_batch + 1) row offsets of the sequences */
    int QD, KD;          /* n_head * head_dim, n_kv_head * head_dim */

    /* weights */
    layer_f32 *lw;       /* [n_layer] */
    size_t cache_budget; /* bytes of F32 layer weights kept */
    size_t cache_used;
    long use_clock;
    int streaming;       /* not every layer fits the cache: layers are dequantized per pass */
    float *out_w;        /* (V, D) output head, F32 */
    float *out_norm;     /* (D) */

    /* rope tables (max_seq, hd/2) */
    float *cos_g, *sin_g, *cos_l, *sin_l;

    /* per-sequence state */
    int n;               /* length of the last forward */
    int32_t *tok;        /* (rows) */
    int *target;         /* (rows) */
    uint8_t *mask;       /* (rows) */
    float *hs_clean;     /* (L+1, rows, D) layer inputs of the last full forward */
    float *hs_work;      /* (L+1, rows, D) layer inputs of forward_from runs */
    float *hs_cur;       /* which one the backward uses */
    int grad_ready;
    int ggml_compat;     /* round activations as llama.cpp does (agreement checks) */
    float *compat_x;     /* (rows, max(D, QD, F)) */

    /* layer intermediates: layers 0..n_store-1 keep their own set (the
     * backward uses it as is); the others share acts[n_store], and the
     * backward recomputes them unless the shared set still holds that layer */
    layer_acts *acts;
    int n_store;
    int shared_layer;    /* layer whose intermediates the shared set holds, -1 none */
    float *xn;           /* (rows, D) final-normed */
    float *rstd_f;       /* (rows) */
    float *logit_chunk;  /* (head_chunk(V), V) */
    float *dh;           /* (rows, D) */
    float *dtmp;         /* (rows, D) */
    float *dD2;          /* (rows, max(D, QD)) */
    float *dF1, *dF2, *dF3; /* (rows, F) */
    float *dq, *dk, *dv; /* (rows, QD/KD) */
    float *dq2, *dk2;    /* (rows, QD/KD) through qk-norm */
    float *dnn;          /* attention backward scratch (attention_scratch_floats) */
    void *arena;         /* one allocation for all of the above */
};

/* ------------------------------------------------------------------------ */
/* Weights                                                                   */
/* ------------------------------------------------------------------------ */

int lm_eng_module_out(const lm_engine *e, int m) {
    switch (m) {
    case LM_MOD_Q: return e->QD;
    case LM_MOD_K: case LM_MOD_V: return e->KD;
    case LM_MOD_O: case LM_MOD_DOWN: return e->c.dim;
    default: return e->c.ffn_dim;
    }
}

int lm_eng_module_in(const lm_engine *e, int m) {
    switch (m) {
    case LM_MOD_O: return e->QD;
    case LM_MOD_DOWN: return e->c.ffn_dim;
    default: return e->c.dim;
    }
}

const lm_config *lm_eng_config(const lm_engine *e) { return &e->c; }
int lm_eng_threads(const lm_engine *e) { return e->threads; }
int lm_eng_max_batch(const lm_engine *e) { return e->max_batch; }

/* Dequantize a whole tensor into dst (rows x cols F32), rows split over threads. */
static int read_tensor(const lm_tensor *t, float *dst, lm_err *err) {
    int64_t rows = lm_tensor_rows(t), cols = lm_tensor_cols(t);
    int64_t chunk = 64;
    int64_t nchunks = (rows + chunk - 1) / chunk;
    int rc = LM_OK;
    lm_err first = {0};
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; c++) {
        if (rc != LM_OK) continue;
        int64_t r0 = c * chunk, nr = rows - r0 < chunk ? rows - r0 : chunk;
        lm_err e2;
        int r = lm_tensor_read_rows(t, r0, nr, dst + r0 * cols, &e2);
        if (r != LM_OK) {
#pragma omp critical
            if (rc == LM_OK) {
                rc = r;
                first = e2;
            }
        }
    }
    if (rc != LM_OK && err) *err = first;
    return rc;
}

/* Bytes of F32 weights of one layer. */
static size_t layer_bytes(const lm_model *m, int l) {
    const lm_layer_weights *L = &m->layers[l];
    const lm_tensor *all[] = {L->attn_norm, L->ffn_norm, L->q_norm, L->k_norm, L->post_attn_norm, L->post_ffn_norm};
    size_t n = 0;
    for (int i = 0; i < LM_N_MODULES; i++) {
        n += (size_t)lm_tensor_nelem(L->w[i]);
        if (L->bias[i]) n += (size_t)lm_tensor_nelem(L->bias[i]);
    }
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) n += (size_t)lm_tensor_nelem(all[i]);
    return n * sizeof(float);
}

static void layer_unload(lm_engine *e, int l) {
    layer_f32 *w = &e->lw[l];
    if (!w->block) return;
    lm_free(w->block);
    e->cache_used -= w->bytes;
    memset(w, 0, sizeof *w);
}

/* Make layer l's F32 weights resident, evicting least-recently-used layers
 * when over budget (at least one layer is always allowed). */
static int layer_get(lm_engine *e, int l, layer_f32 **out, lm_err *err) {
    layer_f32 *w = &e->lw[l];
    w->last_use = ++e->use_clock;
    if (w->block) {
        *out = w;
        return LM_OK;
    }
    size_t bytes = layer_bytes(e->m, l);
    float *p = NULL; /* an evicted layer's buffer, reused: a fresh one faults in and zeroes every page */
    size_t alloc = bytes;
    while (e->cache_used > 0 && e->cache_used + bytes > e->cache_budget) {
        int victim = -1;
        for (int i = 0; i < e->c.n_layer; i++)
            if (e->lw[i].block && i != l && (victim < 0 || e->lw[i].last_use < e->lw[victim].last_use)) victim = i;
        if (victim < 0) break;
        if (!p && e->lw[victim].bytes >= bytes) {
            p = e->lw[victim].block;
            alloc = e->lw[victim].bytes;
            e->cache_used -= e->lw[victim].bytes;
            memset(&e->lw[victim], 0, sizeof e->lw[victim]);
        } else {
            layer_unload(e, victim);
        }
    }
    if (!p) p = lm_malloc(bytes);
    if (!p) return lm_nomem(err, bytes, "layer weights");
    const lm_layer_weights *L = &e->m->layers[l];
    float *cur = p;
    int rc = LM_OK;
#define TAKE(dst, t)                                              \
    do {                                                          \
        if ((t) && rc == LM_OK) {                                 \
            (dst) = cur;                                          \
            rc = read_tensor((t), cur, err);                      \
            cur += lm_tensor_nelem(t);                            \
        }                                                         \
    } while (0)
    for (int i = 0; i < LM_N_MODULES; i++) {
        TAKE(w->w[i], L->w[i]);
        TAKE(w->b[i], L->bias[i]);
    }
    TAKE(w->attn_norm, L->attn_norm);
    TAKE(w->ffn_norm, L->ffn_norm);
    TAKE(w->q_norm, L->q_norm);
    TAKE(w->k_norm, L->k_norm);
    TAKE(w->post_attn_norm, L->post_attn_norm);
    TAKE(w->post_ffn_norm, L->post_ffn_norm);
#undef TAKE
    if (rc != LM_OK) {
        lm_free(p);
        memset(w, 0, sizeof *w);
        return rc;
    }
    if (e->streaming) { /* the F32 copy will be evicted: drop the file pages from our RSS too */
        for (int i = 0; i < LM_N_MODULES; i++) lm_release_pages(L->w[i]->data, L->w[i]->nbytes);
    }
    w->block = p;
    w->bytes = alloc;
    w->last_use = e->use_clock;
    e->cache_used += alloc;
    *out = w;
    return LM_OK;
}

int lm_eng_weight(lm_engine *e, int l, int m, const float **w, lm_err *err) {
    layer_f32 *lw;
    int rc = layer_get(e, l, &lw, err);
    if (rc) return rc;
    *w = lw->w[m];
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Construction                                                              */
/* ------------------------------------------------------------------------ */

static size_t mem_total_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && psize > 0 ? (size_t)pages * (size_t)psize : (size_t)8 << 30;
}

/* Sizes of one layer's intermediates (floats each), in layer_acts order. */
static int acts_sizes(const lm_engine *e, size_t *sz) {
    size_t S = (size_t)e->rows, D = (size_t)e->c.dim, F = (size_t)e->c.ffn_dim, MS = (size_t)e->max_seq;
    size_t H = (size_t)e->c.n_head, KV = (size_t)e->c.n_kv_head, QD = (size_t)e->QD, KD = (size_t)e->KD;
    size_t v[] = {S * D, S, S * QD, S * KD, S * KD, S * QD, S * KD, S * H, S * KV,
                  H * MS * MS * (size_t)e->max_batch, S * QD, S * D, S,
                  S * D, S * D, S, S * F, S * F, S * F, S * D, S};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) sz[i] = v[i];
    return (int)(sizeof v / sizeof v[0]);
}

static size_t acts_floats(const lm_engine *e) {
    size_t sz[32], total = 0;
    int n = acts_sizes(e, sz);
    for (int i = 0; i < n; i++) total += (sz[i] + 15) & ~(size_t)15;
    return total;
}

/* One allocation for a layer's intermediates, carved into named pointers. */
static int acts_alloc(lm_engine *e, layer_acts *a) {
    size_t sz[32];
    int n = acts_sizes(e, sz);
    a->block = lm_calloc(acts_floats(e), sizeof(float));
    if (!a->block) return LM_ENOMEM;
    float **ptrs[] = {&a->x, &a->rstd1, &a->q, &a->k, &a->v, &a->qr, &a->kr, &a->q_rstd, &a->k_rstd,
                      &a->P, &a->att, &a->o, &a->o_rstd, &a->hmid, &a->x2, &a->rstd2, &a->g, &a->u,
                      &a->a, &a->d, &a->d_rstd};
    float *cur = a->block;
    for (int i = 0; i < n; i++) {
        *ptrs[i] = cur;
        cur += (sz[i] + 15) & ~(size_t)15;
    }
    return LM_OK;
}

int lm_engine_new(lm_engine **out, const lm_model *m, const lm_engine_opts *o, lm_err *err) {
    *out = NULL;
    const lm_config *c = &m->cfg;
    if (c->n_head <= 0 || c->n_kv_head <= 0 || c->n_head % c->n_kv_head || c->head_dim % 2 ||
        c->dim <= 0 || c->ffn_dim <= 0 || c->vocab <= 0 || c->n_layer <= 0)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: model shape not supported by the engine (heads %d/%d, head_dim %d)",
                       m->path, c->n_head, c->n_kv_head, c->head_dim);
    lm_engine *e = lm_calloc(1, sizeof *e);
    if (!e) return lm_nomem(err, sizeof *e, "engine");
    e->m = m;
    e->c = *c;
    e->be = lm_backend_cpu();
    e->threads = lm_num_threads(o ? o->threads : 0);
    e->max_seq = o && o->max_seq > 0 ? o->max_seq : 512;
    e->max_batch = o && o->max_batch > 0 ? o->max_batch : 1;
    e->rows = e->max_seq * e->max_batch;
    e->ggml_compat = o ? o->ggml_compat : 0;
    e->QD = c->n_head * c->head_dim;
    e->KD = c->n_kv_head * c->head_dim;
    omp_set_num_threads(e->threads);
    lm_blas_set_threads(e->threads);

    size_t total_w = 0;
    for (int l = 0; l < c->n_layer; l++) total_w += layer_bytes(m, l);
    /* F32 weights: a long pass does ~2n flops per weight, so dequantizing a
     * layer again for each pass costs little and a few layers are cached; short
     * passes (generation, ablations of short texts) reuse weights many times
     * and cache up to a third of RAM */
    size_t budget = o && o->weight_cache_bytes ? o->weight_cache_bytes
                    : (size_t)e->max_seq * (size_t)e->max_batch >= 256 ? 3 * layer_bytes(m, 0)
                                                                         : mem_total_bytes() / 3;
    e->cache_budget = budget;
    e->streaming = total_w > budget;

    e->lw = lm_calloc((size_t)c->n_layer, sizeof *e->lw);
    if (!e->lw) {
        lm_free(e);
        return lm_nomem(err, sizeof *e->lw * (size_t)c->n_layer, "layer table");
    }

    /* scratch arena */
    size_t S = (size_t)e->rows, MS = (size_t)e->max_seq, D = (size_t)c->dim, F = (size_t)c->ffn_dim;
    size_t V = (size_t)c->vocab;
    size_t QD = (size_t)e->QD, KD = (size_t)e->KD;
    size_t half = (size_t)c->head_dim / 2, L = (size_t)c->n_layer;
    size_t DQ = D > QD ? D : QD;
    size_t sizes[] = {
        /* rope */ MS * half, MS * half, MS * half, MS * half,
        /* seq */ (L + 1) * S * D, (L + 1) * S * D,
        /* head */ S * D, S, (size_t)head_chunk(c->vocab) * V,
        /* backward */ S * D, S * D, S * DQ, S * F, S * F, S * F, S * QD, S * KD, S * KD, attention_scratch_floats((int)MS, c->n_head, c->head_dim, e->threads), S * QD, S * KD,
        /* compat */ S * (DQ > F ? DQ : F),
    };
    size_t nsz = sizeof sizes / sizeof sizes[0], total = 0;
    for (size_t i = 0; i < nsz; i++) total += (sizes[i] + 15) & ~(size_t)15;
    float *arena = lm_calloc(total, sizeof(float));
    if (!arena) {
        lm_free(e->lw);
        lm_free(e);
        return lm_nomem(err, total * sizeof(float), "activations (lower --seq-len)");
    }
    e->arena = arena;
    float **ptrs[] = {
        &e->cos_g, &e->sin_g, &e->cos_l, &e->sin_l,
        &e->hs_clean, &e->hs_work,
        &e->xn, &e->rstd_f, &e->logit_chunk,
        &e->dh, &e->dtmp, &e->dD2, &e->dF1, &e->dF2, &e->dF3, &e->dq, &e->dk, &e->dv, &e->dnn, &e->dq2, &e->dk2,
        &e->compat_x,
    };
    float *cur = arena;
    for (size_t i = 0; i < nsz; i++) {
        *ptrs[i] = cur;
        cur += (sizes[i] + 15) & ~(size_t)15;
    }
    /* layer intermediates: as many layers as the budget holds keep theirs */
    size_t act_budget = o && o->act_cache_bytes ? o->act_cache_bytes : (size_t)256 << 20;
    size_t per_layer = acts_floats(e) * sizeof(float);
    size_t fit = act_budget / per_layer;
    e->n_store = fit >= L ? (int)L : fit > 1 ? (int)fit - 1 : 0;
    e->shared_layer = -1;
    int n_sets = e->n_store == (int)L ? (int)L : e->n_store + 1;
    e->acts = lm_calloc((size_t)n_sets, sizeof *e->acts);
    if (!e->acts) {
        lm_engine_free(e);
        return lm_nomem(err, sizeof *e->acts, "activation table");
    }
    for (int i = 0; i < n_sets; i++)
        if (acts_alloc(e, &e->acts[i]) != LM_OK) {
            lm_engine_free(e);
            return lm_nomem(err, per_layer, "layer activations (lower --seq-len)");
        }
    e->tok = lm_calloc(S, sizeof *e->tok);
    e->target = lm_calloc(S, sizeof *e->target);
    e->mask = lm_calloc(S, 1);
    e->seg = lm_calloc((size_t)e->max_batch + 1, sizeof *e->seg);
    if (!e->tok || !e->target || !e->mask || !e->seg) {
        lm_engine_free(e);
        return lm_nomem(err, S * 9, "token buffers");
    }
    rope_tables(e->cos_g, e->sin_g, e->max_seq, c->head_dim, c->rope_theta, c->rope_type, c->rope_factor,
                c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_orig_max_pos);
    rope_tables(e->cos_l, e->sin_l, e->max_seq, c->head_dim,
                c->rope_theta_local > 0 ? c->rope_theta_local : c->rope_theta, 0, 1, 0, 0, 0);

    /* output head and final norm in F32 */
    size_t vw = V * D;
    e->out_w = lm_malloc(vw * sizeof(float));
    e->out_norm = lm_malloc(D * sizeof(float));
    if (!e->out_w || !e->out_norm) {
        lm_engine_free(e);
        return lm_nomem(err, vw * sizeof(float), "output head");
    }
    int rc = read_tensor(m->output, e->out_w, err);
    if (rc == LM_OK) rc = read_tensor(m->out_norm, e->out_norm, err);
    /* a model whose F32 weights fit the cache is dequantized now, once */
    for (int l = 0; rc == LM_OK && total_w <= budget && l < c->n_layer; l++) {
        layer_f32 *lw;
        rc = layer_get(e, l, &lw, err);
    }
    if (rc != LM_OK) {
        lm_engine_free(e);
        return rc;
    }
    *out = e;
    return LM_OK;
}

void lm_engine_free(lm_engine *e) {
    if (!e) return;
    if (e->lw)
        for (int l = 0; l < e->c.n_layer; l++) layer_unload(e, l);
    lm_free(e->lw);
    if (e->acts)
        for (int i = 0; i <= e->n_store && i < e->c.n_layer; i++) lm_free(e->acts[i].block);
    lm_free(e->acts);
    lm_free(e->arena);
    lm_free(e->tok);
    lm_free(e->target);
    lm_free(e->mask);
    lm_free(e->seg);
    lm_free(e->out_w);
    lm_free(e->out_norm);
    lm_free(e);
}

/* ------------------------------------------------------------------------ */
/* One layer, forward                                                        */
/* ------------------------------------------------------------------------ */

/* Offset of packed sequence s's attention probabilities in layer_acts.P. */
static long seg_p_off(const lm_engine *e, int s) {
    long off = 0;
    for (int i = 0; i < s; i++) {
        long ns = e->seg[i + 1] - e->seg[i];
        off += ns * ns;
    }
    return off * e->c.n_head;
}

/* Is layer l a sliding-window layer? */
static int layer_window(const lm_config *c, int l) {
    if (c->sliding_window <= 0) return 0;
    if (c->sliding_pattern > 0 && (l + 1) % c->sliding_pattern == 0) return 0;
    return c->sliding_window;
}

/* y (n, out) = x (n, in) W^T + b, then the intervention if it targets (l, m). */
static void linear_forward(lm_engine *e, float *y, const float *x, const layer_f32 *w, int l, int m,
                           int n, const lm_interv *iv) {
    int out = lm_eng_module_out(e, m), in = lm_eng_module_in(e, m);
    if (e->ggml_compat) { /* the input as ggml rounds it for this weight's type */
        int kind = ggml_act_kind(e->m->layers[l].w[m]->dtype);
        if (kind) {
            memcpy(e->compat_x, x, sizeof(float) * (size_t)n * in);
            ggml_act_round(e->compat_x, n, in, kind);
            x = e->compat_x;
        }
    }
    e->be->gemm_nt(n, out, in, x, in, w->w[m], in, 0.0f, y, out);
    if (w->b[m]) {
        const float *b = w->b[m];
#pragma omp parallel for schedule(static) if ((long)n * out > 65536)
        for (int t = 0; t < n; t++)
            for (int j = 0; j < out; j++) y[(long)t * out + j] += b[j];
    }
    if (iv && iv->kind != LM_IV_NONE && iv->layer == l && iv->module == m) {
        long cnt = (long)n * out;
        if (iv->kind == LM_IV_SCALE) {
            for (long i = 0; i < cnt; i++) y[i] *= iv->alpha;
        } else {
            for (int t = 0; t < n; t++) memcpy(y + (long)t * out, iv->vec, sizeof(float) * (size_t)out);
        }
    }
}

#define HOOK(call)                    \
    do {                              \
        int hrc_ = (call);            \
        if (hrc_) return hrc_;        \
    } while (0)

/* Forward of layer l: h_out (n, D) from h_in (n, D); every intermediate is
 * left in e->a for the backward. */
static int layer_forward(lm_engine *e, int l, const float *h_in, float *h_out, int n,
                         const lm_interv *iv, const lm_hooks *hk, lm_err *err) {
    const lm_config *c = &e->c;
    layer_f32 *w;
    int rc = layer_get(e, l, &w, err);
    if (rc) return rc;
    layer_acts *a = &e->acts[l < e->n_store ? l : e->n_store];
    int D = c->dim, F = c->ffn_dim, H = c->n_head, KV = c->n_kv_head, hd = c->head_dim;
    int win = layer_window(c, l);
    const float *cs = win ? e->cos_l : e->cos_g, *sn = win ? e->sin_l : e->sin_g;
    if (l >= e->n_store) e->shared_layer = l;

    /* attention */
    rmsnorm_forward(a->x, a->rstd1, h_in, w->attn_norm, n, D, c->norm_eps, c->norm_add_one);
    linear_forward(e, a->q, a->x, w, l, LM_MOD_Q, n, iv);
    linear_forward(e, a->k, a->x, w, l, LM_MOD_K, n, iv);
    linear_forward(e, a->v, a->x, w, l, LM_MOD_V, n, iv);
    if (hk && hk->fwd) {
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_Q, a->q, a->x, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_K, a->k, a->x, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_V, a->v, a->x, n));
    }
    if (c->has_qk_norm) {
        rmsnorm_forward(a->qr, a->q_rstd, a->q, w->q_norm, n * H, hd, c->norm_eps, c->norm_add_one);
        rmsnorm_forward(a->kr, a->k_rstd, a->k, w->k_norm, n * KV, hd, c->norm_eps, c->norm_add_one);
    } else {
        memcpy(a->qr, a->q, sizeof(float) * (size_t)n * e->QD);
        memcpy(a->kr, a->k, sizeof(float) * (size_t)n * e->KD);
    }
    /* each packed sequence: positions from 0, attention within itself */
    for (int s = 0; s < e->nseg; s++) {
        int r0 = e->seg[s], ns = e->seg[s + 1] - r0;
        rope_forward(a->qr + (long)r0 * e->QD, cs, sn, ns, H, hd);
        rope_forward(a->kr + (long)r0 * e->KD, cs, sn, ns, KV, hd);
        if (e->ggml_compat) { /* F16 KV cache; q meets K in F16 */
            ggml_act_round(a->qr + (long)r0 * e->QD, ns, e->QD, 3);
            ggml_act_round(a->kr + (long)r0 * e->KD, ns, e->KD, 3);
            ggml_act_round(a->v + (long)r0 * e->KD, ns, e->KD, 3);
        }
        attention_forward(e->be, a->att + (long)r0 * e->QD, a->P + seg_p_off(e, s), a->qr + (long)r0 * e->QD,
                          a->kr + (long)r0 * e->KD, a->v + (long)r0 * e->KD, ns, H, KV, hd, c->attn_scale, win);
    }
    linear_forward(e, a->o, a->att, w, l, LM_MOD_O, n, iv);
    if (hk && hk->fwd) HOOK(hk->fwd(hk->ctx, l, LM_MOD_O, a->o, a->att, n));
    long nD = (long)n * D;
    if (c->has_post_norms) {
        rmsnorm_forward(a->hmid, a->o_rstd, a->o, w->post_attn_norm, n, D, c->norm_eps, c->norm_add_one);
        for (long i = 0; i < nD; i++) a->hmid[i] += h_in[i];
    } else {
        for (long i = 0; i < nD; i++) a->hmid[i] = h_in[i] + a->o[i];
    }

    /* MLP */
    rmsnorm_forward(a->x2, a->rstd2, a->hmid, w->ffn_norm, n, D, c->norm_eps, c->norm_add_one);
    linear_forward(e, a->g, a->x2, w, l, LM_MOD_GATE, n, iv);
    linear_forward(e, a->u, a->x2, w, l, LM_MOD_UP, n, iv);
    if (e->ggml_compat && c->act == LM_ACT_GELU_TANH)
        glu_forward_ggml(a->a, a->g, a->u, (long)n * F);
    else
        glu_forward(a->a, a->g, a->u, (long)n * F, c->act == LM_ACT_GELU_TANH);
    linear_forward(e, a->d, a->a, w, l, LM_MOD_DOWN, n, iv);
    if (hk && hk->fwd) {
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_UP, a->u, a->x2, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_DOWN, a->d, a->a, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_GATE, a->g, a->x2, n));
    }
    if (c->has_post_norms) {
        rmsnorm_forward(h_out, a->d_rstd, a->d, w->post_ffn_norm, n, D, c->norm_eps, c->norm_add_one);
        for (long i = 0; i < nD; i++) h_out[i] += a->hmid[i];
    } else {
        for (long i = 0; i < nD; i++) h_out[i] = a->hmid[i] + a->d[i];
    }
    if (hk && hk->block) HOOK(hk->block(hk->ctx, l, h_in, h_out, n));
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* One layer, backward                                                       */
/* ------------------------------------------------------------------------ */

/* The factor the gradient at module (l, m)'s output is multiplied by on its
 * way to the module's weights and input: alpha for a scaled output, 0 for a
 * replaced one. */
static float iv_factor(const lm_interv *iv, int l, int m) {
    if (!iv || iv->kind == LM_IV_NONE || iv->layer != l || iv->module != m) return 1.0f;
    return iv->kind == LM_IV_SCALE ? iv->alpha : 0.0f;
}

static void scale_buf(float *x, long cnt, float s) {
    if (s == 1.0f) return;
    for (long i = 0; i < cnt; i++) x[i] *= s;
}

/* dy (n, D) = dL/dy of a branch output y whose (optional) post-norm w feeds
 * the residual with gradient dh: through the norm, or dh itself without one. */
static void post_norm_backward(float *dy, const float *dh, const float *y, const float *w, const float *rstd, int n,
                               int D, int add_one) {
    if (w) {
        memset(dy, 0, sizeof(float) * (size_t)n * D);
        rmsnorm_backward(dy, dh, y, w, rstd, n, D, add_one);
    } else {
        memcpy(dy, dh, sizeof(float) * (size_t)n * D);
    }
}

/* Backward of layer l, whose forward intermediates are in e->a (recomputed
 * by the caller). On entry e->dh (n, D) = dL/dh_out; on exit dL/dh_in.
 * need_dx = 0 skips the input gradient (lowest layer of a partial backward). */
static int layer_backward(lm_engine *e, int l, const float *h_in, int n, const lm_interv *iv,
                          const lm_hooks *hk, int need_dx, lm_err *err) {
    const lm_config *c = &e->c;
    layer_f32 *w;
    int rc = layer_get(e, l, &w, err);
    if (rc) return rc;
    layer_acts *a = &e->acts[l < e->n_store ? l : e->n_store];
    int D = c->dim, F = c->ffn_dim, H = c->n_head, KV = c->n_kv_head, hd = c->head_dim;
    int QD = e->QD, KD = e->KD;
    int win = layer_window(c, l);
    const float *cs = win ? e->cos_l : e->cos_g, *sn = win ? e->sin_l : e->sin_g;
    long nD = (long)n * D, nF = (long)n * F;
    float *dh = e->dh;
    int gelu = c->act == LM_ACT_GELU_TANH;

    /* ---- MLP branch: h_out = hmid + post(d) ---- */
    float *dd = e->dtmp; /* dL/dd */
    post_norm_backward(dd, dh, a->d, c->has_post_norms ? w->post_ffn_norm : NULL, a->d_rstd, n, D, c->norm_add_one);
    if (hk && hk->bwd) HOOK(hk->bwd(hk->ctx, l, LM_MOD_DOWN, dd, a->d, a->a, w->w[LM_MOD_DOWN], n));
    scale_buf(dd, nD, iv_factor(iv, l, LM_MOD_DOWN));
    float *da = e->dF1, *dg = e->dF2, *du = e->dF3;
    e->be->gemm_nn(n, F, D, dd, D, w->w[LM_MOD_DOWN], F, 0.0f, da, F);
    glu_backward(dg, du, da, a->g, a->u, nF, gelu);
    if (hk && hk->bwd) {
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_UP, du, a->u, a->x2, w->w[LM_MOD_UP], n));
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_GATE, dg, a->g, a->x2, w->w[LM_MOD_GATE], n));
    }
    scale_buf(du, nF, iv_factor(iv, l, LM_MOD_UP));
    scale_buf(dg, nF, iv_factor(iv, l, LM_MOD_GATE));
    float *dx2 = e->dD2;
    e->be->gemm_nn(n, D, F, du, F, w->w[LM_MOD_UP], D, 0.0f, dx2, D);
    e->be->gemm_nn(n, D, F, dg, F, w->w[LM_MOD_GATE], D, 1.0f, dx2, D);
    rmsnorm_backward(dh, dx2, a->hmid, w->ffn_norm, a->rstd2, n, D, c->norm_add_one); /* dh = dL/dhmid */

    /* ---- attention branch: hmid = h_in + post(o) ---- */
    float *dO = e->dtmp;
    post_norm_backward(dO, dh, a->o, c->has_post_norms ? w->post_attn_norm : NULL, a->o_rstd, n, D, c->norm_add_one);
    if (hk && hk->bwd) HOOK(hk->bwd(hk->ctx, l, LM_MOD_O, dO, a->o, a->att, w->w[LM_MOD_O], n));
    scale_buf(dO, nD, iv_factor(iv, l, LM_MOD_O));
    float *datt = e->dD2; /* (n, QD) */
    e->be->gemm_nn(n, QD, D, dO, D, w->w[LM_MOD_O], QD, 0.0f, datt, QD);
    float *dqr = e->dq, *dkr = e->dk, *dv = e->dv;
    for (int s = 0; s < e->nseg; s++) {
        int r0 = e->seg[s], ns = e->seg[s + 1] - r0;
        long oq = (long)r0 * QD, ok = (long)r0 * KD;
        attention_backward(e->be, dqr + oq, dkr + ok, dv + ok, datt + oq, a->P + seg_p_off(e, s), a->qr + oq,
                           a->kr + ok, a->v + ok, e->dnn, e->threads, ns, H, KV, hd, c->attn_scale, win);
        rope_backward(dqr + oq, cs, sn, ns, H, hd);
        rope_backward(dkr + ok, cs, sn, ns, KV, hd);
    }
    float *dq = dqr, *dk = dkr;
    if (c->has_qk_norm) { /* through the per-head norms */
        dq = e->dq2;
        dk = e->dk2;
        memset(dq, 0, sizeof(float) * (size_t)n * QD);
        memset(dk, 0, sizeof(float) * (size_t)n * KD);
        rmsnorm_backward(dq, dqr, a->q, w->q_norm, a->q_rstd, n * H, hd, c->norm_add_one);
        rmsnorm_backward(dk, dkr, a->k, w->k_norm, a->k_rstd, n * KV, hd, c->norm_add_one);
    }
    if (hk && hk->bwd) {
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_Q, dq, a->q, a->x, w->w[LM_MOD_Q], n));
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_K, dk, a->k, a->x, w->w[LM_MOD_K], n));
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_V, dv, a->v, a->x, w->w[LM_MOD_V], n));
    }
    if (!need_dx) return LM_OK;
    scale_buf(dq, (long)n * QD, iv_factor(iv, l, LM_MOD_Q));
    scale_buf(dk, (long)n * KD, iv_factor(iv, l, LM_MOD_K));
    scale_buf(dv, (long)n * KD, iv_factor(iv, l, LM_MOD_V));
    float *dx = e->dtmp;
    e->be->gemm_nn(n, D, QD, dq, QD, w->w[LM_MOD_Q], D, 0.0f, dx, D);
    e->be->gemm_nn(n, D, KD, dk, KD, w->w[LM_MOD_K], D, 1.0f, dx, D);
    e->be->gemm_nn(n, D, KD, dv, KD, w->w[LM_MOD_V], D, 1.0f, dx, D);
    rmsnorm_backward(dh, dx, h_in, w->attn_norm, a->rstd1, n, D, c->norm_add_one); /* dh = dL/dh_in */
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Embedding and head                                                        */
/* ------------------------------------------------------------------------ */

static int embed_forward(lm_engine *e, float *h, const int32_t *tok, int n, lm_err *err) {
    int D = e->c.dim;
    for (int t = 0; t < n; t++) {
        int rc = lm_tensor_read_rows(e->m->tok_embd, tok[t], 1, h + (long)t * D, err);
        if (rc) return rc;
    }
    if (e->c.embed_scale != 1.0f && e->c.embed_scale != 0.0f) {
        float s = e->c.embed_scale;
        for (long i = 0; i < (long)n * D; i++) h[i] *= s;
    }
    return LM_OK;
}

/* Final norm, logits over chunks of tokens, loss on masked positions and, with
 * grad, e->dh = dL/dh_final. logits (n - logits_from, V) or NULL. */
static double head_forward(lm_engine *e, const float *h, int n, int use_loss, int grad, float *logits,
                           int logits_from) {
    int D = e->c.dim, V = e->c.vocab;
    rmsnorm_forward(e->xn, e->rstd_f, h, e->out_norm, n, D, e->c.norm_eps, e->c.norm_add_one);
    float *dxn = e->dtmp;
    if (grad) memset(dxn, 0, sizeof(float) * (size_t)n * D);
    double loss = 0.0;
    int start = 0;
    if (!use_loss && !grad) start = logits_from; /* only the requested rows */
    int hc = head_chunk(V);
    for (int c0 = start; c0 < n; c0 += hc) {
        int cs = n - c0 < hc ? n - c0 : hc;
        int any = 0;
        if (use_loss)
            for (int i = 0; i < cs; i++) any |= e->mask[c0 + i];
        int want_logits = logits && c0 + cs > logits_from;
        if (!any && !want_logits) continue;
        const float *xin = e->xn + (long)c0 * D;
        if (e->ggml_compat && ggml_act_kind(e->m->output->dtype)) {
            memcpy(e->compat_x, xin, sizeof(float) * (size_t)cs * D);
            ggml_act_round(e->compat_x, cs, D, ggml_act_kind(e->m->output->dtype));
            xin = e->compat_x;
        }
        e->be->gemm_nt(cs, V, D, xin, D, e->out_w, D, 0.0f, e->logit_chunk, V);
        if (want_logits) {
            for (int i = 0; i < cs; i++)
                if (c0 + i >= logits_from)
                    memcpy(logits + (long)(c0 + i - logits_from) * V, e->logit_chunk + (long)i * V,
                           sizeof(float) * (size_t)V);
        }
        if (use_loss && any) {
            loss += cross_entropy_forward_backward(e->logit_chunk, e->target + c0, e->mask + c0, cs, V, grad);
            if (grad) e->be->gemm_nn(cs, D, V, e->logit_chunk, V, e->out_w, D, 0.0f, dxn + (long)c0 * D, D);
        }
    }
    if (grad) {
        memset(e->dh, 0, sizeof(float) * (size_t)n * D);
        rmsnorm_backward(e->dh, dxn, h, e->out_norm, e->rstd_f, n, D, e->c.norm_add_one);
    }
    return loss;
}

/* ------------------------------------------------------------------------ */
/* Whole passes                                                              */
/* ------------------------------------------------------------------------ */

/* Layers from..L-1 over hs (L+1, max_seq, D), then the head. */
static int run_layers(lm_engine *e, float *hs, int from, const lm_interv *iv, const lm_hooks *hk,
                      int use_loss, int grad, double *loss, float *logits, int logits_from, lm_err *err) {
    int n = e->n, L = e->c.n_layer;
    size_t stride = (size_t)e->rows * e->c.dim;
    for (int l = from; l < L; l++) {
        int rc = layer_forward(e, l, hs + l * stride, hs + (l + 1) * stride, n, iv, hk, err);
        if (rc) return rc;
    }
    double ls = head_forward(e, hs + L * stride, n, use_loss, grad, logits, logits_from);
    if (loss) *loss = ls;
    e->hs_cur = hs;
    e->grad_ready = grad;
    return LM_OK;
}

int lm_eng_forward_batch(lm_engine *e, const lm_seq *seqs, int nseq, int use_loss, const lm_interv *iv,
                         const lm_hooks *hk, int grad, double *loss, float *logits, int logits_from, lm_err *err) {
    if (nseq <= 0 || nseq > e->max_batch)
        return lm_fail(err, LM_EINTERNAL, "%d sequences in one pass (engine holds 1..%d)", nseq, e->max_batch);
    if (grad && !use_loss) return lm_fail(err, LM_EINTERNAL, "backward requested without a loss");
    int n = 0;
    e->seg[0] = 0;
    for (int s = 0; s < nseq; s++) {
        const lm_seq *q = &seqs[s];
        if (q->n <= 0 || q->n > e->max_seq)
            return lm_fail(err, LM_EARG, "sequence of %d tokens (engine holds 1..%d; raise --seq-len)", q->n,
                           e->max_seq);
        for (int t = 0; t < q->n; t++) {
            if (q->tok[t] < 0 || q->tok[t] >= e->c.vocab)
                return lm_fail(err, LM_EARG, "token id %d at position %d outside the vocabulary (%d)", q->tok[t], t,
                               e->c.vocab);
            e->tok[n + t] = q->tok[t];
            e->target[n + t] = t + 1 < q->n ? q->tok[t + 1] : 0;
            e->mask[n + t] = use_loss && q->mask && t + 1 < q->n ? (q->mask[t] != 0) : 0;
        }
        n += q->n;
        e->seg[s + 1] = n;
    }
    e->n = n;
    e->nseg = nseq;
    int rc = embed_forward(e, e->hs_clean, e->tok, n, err);
    if (rc) return rc;
    return run_layers(e, e->hs_clean, 0, iv, hk, use_loss, grad, loss, logits, logits_from, err);
}

int lm_eng_forward(lm_engine *e, const int32_t *tok, int n, const uint8_t *mask, const lm_interv *iv,
                   const lm_hooks *hk, int grad, double *loss, float *logits, int logits_from, lm_err *err) {
    lm_seq q = {(int32_t *)tok, (uint8_t *)mask, n};
    return lm_eng_forward_batch(e, &q, 1, mask != NULL, iv, hk, grad, loss, logits, logits_from, err);
}

int lm_eng_segments(const lm_engine *e, const int **off) {
    *off = e->seg;
    return e->nseg;
}

int lm_eng_forward_from(lm_engine *e, int from, int use_loss, const lm_interv *iv,
                        const lm_hooks *hk, int grad, double *loss, lm_err *err) {
    if (from < 0 || from >= e->c.n_layer || e->n <= 0)
        return lm_fail(err, LM_EINTERNAL, "forward_from layer %d without a stored forward", from);
    size_t stride = (size_t)e->rows * e->c.dim;
    memcpy(e->hs_work + from * stride, e->hs_clean + from * stride, sizeof(float) * (size_t)e->n * e->c.dim);
    return run_layers(e, e->hs_work, from, iv, hk, use_loss, grad, loss, NULL, 0, err);
}

int lm_eng_backward(lm_engine *e, int to, const lm_interv *iv, const lm_hooks *hk, lm_err *err) {
    if (!e->grad_ready) return lm_fail(err, LM_EINTERNAL, "backward without a forward that prepared gradients");
    int n = e->n, L = e->c.n_layer;
    size_t stride = (size_t)e->rows * e->c.dim;
    float *hs = e->hs_cur;
    for (int l = L - 1; l >= to; l--) {
        /* recompute this layer's intermediates (its output goes to the free
         * xn buffer: the stored input of layer l+1 is already known); hooks
         * are not re-run */
        int rc = LM_OK;
        if (l >= e->n_store && e->shared_layer != l) rc = layer_forward(e, l, hs + l * stride, e->xn, n, iv, NULL, err);
        if (rc) return rc;
        rc = layer_backward(e, l, hs + l * stride, n, iv, hk, l > to, err);
        if (rc) return rc;
    }
    e->grad_ready = 0;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Public wrappers                                                           */
/* ------------------------------------------------------------------------ */

int lm_engine_forward(lm_engine *e, const int32_t *tok, int n, float *logits, lm_err *err) {
    return lm_eng_forward(e, tok, n, NULL, NULL, NULL, 0, NULL, logits, 0, err);
}

int lm_engine_forward_last(lm_engine *e, const int32_t *tok, int n, lm_err *err) {
    float *logits = lm_malloc(sizeof(float) * (size_t)e->c.vocab);
    if (!logits) return lm_nomem(err, sizeof(float) * (size_t)e->c.vocab, "logits");
    int rc = lm_eng_forward(e, tok, n, NULL, NULL, NULL, 0, NULL, logits, n - 1, err);
    lm_free(logits);
    return rc;
}

int lm_engine_loss(lm_engine *e, const lm_seq *s, double *loss, int64_t *count, lm_err *err) {
    int rc = lm_eng_forward(e, s->tok, s->n, s->mask, NULL, NULL, 0, loss, NULL, 0, err);
    if (rc) return rc;
    int64_t c = 0;
    for (int t = 0; t + 1 < s->n; t++) c += s->mask[t] != 0;
    if (count) *count = c;
    return LM_OK;
}

int lm_generate_greedy(lm_engine *e, const int32_t *prompt, int n_prompt, int n_new, int32_t **out,
                       int *n_out, lm_err *err) {
    *out = NULL;
    *n_out = 0;
    if (n_prompt <= 0) return lm_fail(err, LM_EARG, "generate: empty prompt");
    int cap = n_prompt + n_new;
    if (cap > e->max_seq) cap = e->max_seq;
    int32_t *seq = lm_malloc(sizeof(int32_t) * (size_t)(cap > n_prompt ? cap : n_prompt));
    float *logits = lm_malloc(sizeof(float) * (size_t)e->c.vocab);
    if (!seq || !logits) {
        lm_free(seq);
        lm_free(logits);
        return lm_nomem(err, sizeof(float) * (size_t)e->c.vocab, "generation");
    }
    memcpy(seq, prompt, sizeof(int32_t) * (size_t)n_prompt);
    int n = n_prompt;
    while (n < cap) {
        int rc = lm_eng_forward(e, seq, n, NULL, NULL, NULL, 0, NULL, logits, n - 1, err);
        if (rc) {
            lm_free(seq);
            lm_free(logits);
            return rc;
        }
        int best = 0;
        for (int j = 1; j < e->c.vocab; j++)
            if (logits[j] > logits[best]) best = j;
        seq[n++] = best;
        if (best == e->c.eos_id) break;
    }
    lm_free(logits);
    *out = seq;
    *n_out = n;
    return LM_OK;
}
