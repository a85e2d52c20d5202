/*
 * engine.c -- forward and backward passes of a Llama-family model on the CPU.
 *
 * One readable path from tokens to loss and back (docs/METHODS.md is the
 * definition). The engine's state is split by lifetime (engine.h):
 *   eng_weights  the dequantized-layer cache: F32 layers made resident on
 *                demand, evicted least-recently-used, file pages released
 *                while streaming; the F32 output head;
 *   eng_rope     RoPE tables, fixed for the engine's life;
 *   eng_pass     what one pass leaves for the next call: the packed
 *                sequences, each layer's stored input residual (L+1, S, D),
 *                and the layer intermediates kept (or recomputed) for the
 *                backward;
 *   eng_scratch  buffers overwritten within one call, each named for what
 *                it holds.
 * Every float buffer is declared once in an X-macro table with its shape;
 * sizes and pointers are both derived from it. Memory is bounded by design:
 * a forward stores only each layer's input; the backward recomputes a
 * layer's intermediates from it unless they were kept; weight gradients are
 * never formed here (hooks receive dL/dY, Y, X and W per module). The output
 * head runs over chunks of tokens so n x vocab logits never exist at once
 * unless the caller asks for them.
 */
#include "compute/backend.h"
#include "compute/bf16.h"
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
/* Shapes and buffer tables                                                  */
/* ------------------------------------------------------------------------ */

/* The sizes every buffer's shape is written in. */
typedef struct eng_dims {
    size_t S;    /* row capacity of a pass: max_seq * max_batch */
    size_t MS;   /* longest sequence */
    size_t MB;   /* sequences packed into one pass */
    size_t L, D, F, H, KV, QD, KD, V;
    size_t HALF; /* head_dim / 2 */
    size_t HC;   /* tokens per output-head chunk */
    size_t ATT;  /* floats of attention-backward scratch */
    size_t CX;   /* widest product input: max(D, QD, F) */
} eng_dims;

/* One layer's intermediates for one pass: X(name, rows, cols). */
#define ACT_BUFFERS(X)                                                          \
    X(x, S, D)            /* attn-normed input */                               \
    X(rstd1, S, 1)                                                              \
    X(q, S, QD)           /* module outputs */                                  \
    X(k, S, KD)                                                                 \
    X(v, S, KD)                                                                 \
    X(qr, S, QD)          /* q, k after qk-norm and rope */                     \
    X(kr, S, KD)                                                                \
    X(q_rstd, S, H)       /* qk-norm */                                         \
    X(k_rstd, S, KV)                                                            \
    X(P, H * MB, MS * MS) /* per sequence s: (H, n_s, n_s) softmax, one after another */ \
    X(att, S, QD)         /* attention output = o's input */                    \
    X(o, S, D)            /* o output (before post-norm) */                     \
    X(o_rstd, S, 1)                                                             \
    X(hmid, S, D)         /* residual after attention */                        \
    X(x2, S, D)           /* ffn-normed */                                      \
    X(rstd2, S, 1)                                                              \
    X(g, S, F)            /* gate, up outputs; a = act(g) * u */                \
    X(u, S, F)                                                                  \
    X(a, S, F)                                                                  \
    X(d, S, D)            /* down output (before post-norm) */                  \
    X(d_rstd, S, 1)

/* Stored layer inputs of a pass. */
#define PASS_BUFFERS(X)                                                         \
    X(hs_clean, (L + 1) * S, D) /* layer inputs of the last full forward */     \
    X(hs_work, (L + 1) * S, D)  /* layer inputs of forward_from runs */

/* RoPE tables of positions 0..MS-1. */
#define ROPE_BUFFERS(X)                                                         \
    X(cos_g, MS, HALF) /* global-attention layers */                           \
    X(sin_g, MS, HALF)                                                          \
    X(cos_l, MS, HALF) /* sliding-window layers */                             \
    X(sin_l, MS, HALF)

/* Scratch of one call, named for what each holds ("dX" = dL/dX). */
#define SCRATCH_BUFFERS(X)                                                      \
    X(xn, S, D)           /* final-normed residual (the head's input) */       \
    X(rstd_f, S, 1)                                                             \
    X(logit_chunk, HC, V) /* one chunk of logits, then their gradient */       \
    X(d_xn, S, D)                                                               \
    X(dh, S, D)           /* d residual, carried down the layers */            \
    X(d_d, S, D)          /* d down output */                                  \
    X(d_a, S, F)                                                                \
    X(d_g, S, F)                                                                \
    X(d_u, S, F)                                                                \
    X(d_x2, S, D)                                                               \
    X(d_o, S, D)          /* d o output */                                     \
    X(d_att, S, QD)                                                             \
    X(d_qr, S, QD)        /* d q, k after rope; d v */                         \
    X(d_kr, S, KD)                                                              \
    X(d_v, S, KD)                                                               \
    X(d_q, S, QD)         /* d q, k outputs, through qk-norm */                \
    X(d_k, S, KD)                                                               \
    X(d_x, S, D)                                                                \
    X(attn_scratch, ATT, 1) /* attention backward (attention_scratch_floats) */ \
    X(h_redo, S, D)       /* a recomputed layer's output (unused: the next input is stored) */ \
    X(compat_x, S, CX)    /* ggml_compat: a product's input rounded as ggml does */

#define DECLARE_PTR(name, rows, cols) float *name;
#define COUNT_ONE(name, rows, cols) +1
#define SIZE_OF(name, rows, cols) (size_t)(rows) * (size_t)(cols),
#define PTR_OF(name, rows, cols) &b->name,
#define NAME_OF(name, rows, cols) #name,

/* Local names for the dims, so tables read as shapes. */
#define DIMS_LOCALS(dm)                                                                                       \
    const size_t S = (dm)->S, MS = (dm)->MS, MB = (dm)->MB, L = (dm)->L, D = (dm)->D, F = (dm)->F,            \
                 H = (dm)->H, KV = (dm)->KV, QD = (dm)->QD, KD = (dm)->KD, V = (dm)->V, HALF = (dm)->HALF,    \
                 HC = (dm)->HC, ATT = (dm)->ATT, CX = (dm)->CX;                                               \
    (void)S, (void)MS, (void)MB, (void)L, (void)D, (void)F, (void)H, (void)KV, (void)QD, (void)KD, (void)V,   \
        (void)HALF, (void)HC, (void)ATT, (void)CX

/* A family of buffers in one allocation: block is carved into the named
 * pointers of the table, each 16-float aligned (views into one backend
 * buffer: the engine passes them to the backend, never reads them). TABLE_STRUCT declares the
 * struct; TABLE_FUNCS its size, carve and free from the same table. */
#define TABLE_STRUCT(type, TABLE)                                                      \
    typedef struct type {                                                              \
        float *block; /* the allocation */                                             \
        TABLE(DECLARE_PTR)                                                             \
    } type;                                                                            \
    enum { type##_count = 0 TABLE(COUNT_ONE) };                                        \
    _Static_assert(sizeof(type) == (type##_count + 1) * sizeof(float *), #type " has a field outside its table")

#define TABLE_FUNCS(type, TABLE)                                                       \
    static size_t type##_floats(const eng_dims *dm) {                                  \
        DIMS_LOCALS(dm);                                                               \
        size_t sz[] = {TABLE(SIZE_OF)}, t = 0;                                         \
        for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) t += (sz[i] + 15) & ~(size_t)15; \
        return t;                                                                      \
    }                                                                                  \
    /* Allocate (a backend buffer) and carve; LM_ENOMEM leaves b empty. */             \
    static int type##_alloc(type *b, const eng_dims *dm, const lm_backend *be) {       \
        DIMS_LOCALS(dm);                                                               \
        size_t sz[] = {TABLE(SIZE_OF)};                                                \
        float **ptr[] = {TABLE(PTR_OF)};                                               \
        _Static_assert(sizeof sz / sizeof sz[0] == sizeof ptr / sizeof ptr[0], #type); \
        memset(b, 0, sizeof *b);                                                       \
        b->block = be->alloc(be, type##_floats(dm) * sizeof(float));                   \
        if (!b->block) return LM_ENOMEM;                                               \
        float *cur = b->block;                                                         \
        for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {                        \
            *ptr[i] = cur;                                                             \
            cur += (sz[i] + 15) & ~(size_t)15;                                         \
        }                                                                              \
        return LM_OK;                                                                  \
    }                                                                                  \
    static void type##_release(type *b, const lm_backend *be) {                        \
        be->release(be, b->block);                                                     \
        memset(b, 0, sizeof *b);                                                       \
    }

TABLE_STRUCT(layer_acts, ACT_BUFFERS);
TABLE_STRUCT(pass_bufs, PASS_BUFFERS);
TABLE_STRUCT(eng_rope, ROPE_BUFFERS);
TABLE_STRUCT(eng_scratch, SCRATCH_BUFFERS);
TABLE_FUNCS(layer_acts, ACT_BUFFERS)
TABLE_FUNCS(pass_bufs, PASS_BUFFERS)
TABLE_FUNCS(eng_rope, ROPE_BUFFERS)
TABLE_FUNCS(eng_scratch, SCRATCH_BUFFERS)

/* The fields of layer_acts that element-wise work and attention's forward
 * remake from the others and the layer's input (layer_forward with light =
 * 1): the normed inputs, q and k after qk-norm and rope, the softmax, the
 * residual after attention and the GLU product. A compact set holds only the
 * rest (the module outputs, attention's output and the norms' rstd: 0.40 of a
 * full set for SmolLM2 at seq 512, 0.49 for a Llama-2-7B) and points these into the
 * pass's shared full set. */
#define ACT_DERIVED(Y) Y(x) Y(qr) Y(kr) Y(P) Y(hmid) Y(x2) Y(a)
#define DERIVED_PTR(name) &b->name,

/* Is p (a field of *b) one of ACT_DERIVED? */
static int act_derived(layer_acts *b, float **p) {
    float **d[] = {ACT_DERIVED(DERIVED_PTR)};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i] == p) return 1;
    return 0;
}

/* Floats of a compact set. */
static size_t layer_acts_kept_floats(const eng_dims *dm) {
    DIMS_LOCALS(dm);
    layer_acts t, *b = &t;
    size_t sz[] = {ACT_BUFFERS(SIZE_OF)}, n = 0;
    float **ptr[] = {ACT_BUFFERS(PTR_OF)};
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++)
        if (!act_derived(b, ptr[i])) n += (sz[i] + 15) & ~(size_t)15;
    return n;
}

/* A compact set: its own block for the kept fields, the derived ones
 * shared's (a full set). LM_ENOMEM leaves b empty; released by
 * layer_acts_release (the block only). */
static int layer_acts_alloc_kept(layer_acts *b, const eng_dims *dm, const lm_backend *be, const layer_acts *shared) {
    DIMS_LOCALS(dm);
    size_t sz[] = {ACT_BUFFERS(SIZE_OF)};
    float **ptr[] = {ACT_BUFFERS(PTR_OF)};
    memset(b, 0, sizeof *b);
    b->block = be->alloc(be, layer_acts_kept_floats(dm) * sizeof(float));
    if (!b->block) return LM_ENOMEM;
    float *cur = b->block;
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        if (act_derived(b, ptr[i])) {
            *ptr[i] = *(float *const *)((const char *)shared + ((const char *)ptr[i] - (const char *)b));
        } else {
            *ptr[i] = cur;
            cur += (sz[i] + 15) & ~(size_t)15;
        }
    }
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Weights: the dequantized-layer cache                                      */
/* ------------------------------------------------------------------------ */

/* One layer's weights in F32 (one allocation, split into named pointers). */
typedef struct layer_f32 {
    float *block;   /* the allocation; NULL when not loaded */
    size_t bytes;
    long last_use;  /* for eviction */
    float *w[LM_N_MODULES];    /* (out, in) */
    void *wc[LM_N_MODULES];    /* w's copy in the backend's product format (bf16), or NULL */
    float *b[LM_N_MODULES];    /* (out) or NULL */
    float *attn_norm, *ffn_norm;      /* (dim) */
    float *q_norm, *k_norm;           /* (head_dim) or NULL */
    float *post_attn_norm, *post_ffn_norm; /* (dim) or NULL */
} layer_f32;

typedef struct eng_weights {
    const lm_backend *be; /* owns the buffers */
    const lm_model *m;
    int n_layer;
    layer_f32 *lw;       /* [n_layer] */
    size_t budget;       /* bytes of F32 layer weights kept */
    size_t used;
    long use_clock;
    int streaming;       /* not every layer fits: layers are dequantized per pass, file pages dropped */
    float *out_w;        /* (V, D) output head, F32 */
    void *out_wc;        /* its product-format copy, or NULL */
    float *out_norm;     /* (D) */
} eng_weights;

/* Dequantize a whole tensor into the buffer dst (rows x cols F32). */
static int read_tensor(const lm_backend *be, const lm_tensor *t, float *dst, lm_err *err) {
    return be->read_rows(be, dst, t, 0, lm_tensor_rows(t), err);
}

/* Bytes of the product-format copy of a weight (64-byte multiples), 0 when
 * the backend multiplies F32 weights. */
static size_t wcopy_bytes(const lm_backend *be, const lm_tensor *t) {
    if (!be->wcopy_bytes) return 0;
    return (be->wcopy_bytes(be, (long)lm_tensor_rows(t), (long)lm_tensor_cols(t)) + 63) / 64 * 64;
}

/* Bytes of one layer's weights: F32, then the modules' product-format copies. */
static size_t layer_bytes(const lm_backend *be, const lm_model *m, int l) {
    const lm_layer_weights *L = &m->layers[l];
    const lm_tensor *all[] = {L->attn_norm, L->ffn_norm, L->q_norm, L->k_norm, L->post_attn_norm, L->post_ffn_norm};
    size_t n = 0, copies = 0;
    for (int i = 0; i < LM_N_MODULES; i++) {
        n += (size_t)lm_tensor_nelem(L->w[i]);
        if (L->bias[i]) n += (size_t)lm_tensor_nelem(L->bias[i]);
        copies += wcopy_bytes(be, L->w[i]);
    }
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) n += (size_t)lm_tensor_nelem(all[i]);
    return (n * sizeof(float) + 63) / 64 * 64 + copies;
}

static void layer_unload(eng_weights *ws, int l) {
    layer_f32 *w = &ws->lw[l];
    if (!w->block) return;
    ws->be->release(ws->be, w->block);
    ws->used -= w->bytes;
    memset(w, 0, sizeof *w);
}

/* Make layer l's F32 weights resident, evicting least-recently-used layers
 * when over budget (at least one layer is always allowed). */
static int weights_layer(eng_weights *ws, int l, layer_f32 **out, lm_err *err) {
    layer_f32 *w = &ws->lw[l];
    w->last_use = ++ws->use_clock;
    if (w->block) {
        *out = w;
        return LM_OK;
    }
    size_t bytes = layer_bytes(ws->be, ws->m, l);
    float *p = NULL; /* an evicted layer's buffer, reused: a fresh one faults in and zeroes every page */
    size_t alloc = bytes;
    while (ws->used > 0 && ws->used + bytes > ws->budget) {
        int victim = -1;
        for (int i = 0; i < ws->n_layer; i++)
            if (ws->lw[i].block && i != l && (victim < 0 || ws->lw[i].last_use < ws->lw[victim].last_use)) victim = i;
        if (victim < 0) break;
        if (!p && ws->lw[victim].bytes >= bytes) {
            p = ws->lw[victim].block;
            alloc = ws->lw[victim].bytes;
            ws->used -= ws->lw[victim].bytes;
            memset(&ws->lw[victim], 0, sizeof ws->lw[victim]);
        } else {
            layer_unload(ws, victim);
        }
    }
    if (!p) p = ws->be->alloc(ws->be, bytes);
    if (!p) return lm_nomem(err, bytes, "layer weights");
    const lm_layer_weights *L = &ws->m->layers[l];
    float *cur = p;
    int rc = LM_OK;
#define TAKE(dst, t)                                              \
    do {                                                          \
        if ((t) && rc == LM_OK) {                                 \
            (dst) = cur;                                          \
            rc = read_tensor(ws->be, (t), cur, err);              \
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
    if (rc == LM_OK && ws->be->wcopy_bytes) { /* the copies, after the F32 values */
        char *cp = (char *)p + ((size_t)((char *)cur - (char *)p) + 63) / 64 * 64;
        for (int i = 0; i < LM_N_MODULES; i++) {
            w->wc[i] = cp;
            ws->be->wcopy_make(ws->be, cp, w->w[i], (long)lm_tensor_rows(L->w[i]), (long)lm_tensor_cols(L->w[i]));
            cp += wcopy_bytes(ws->be, L->w[i]);
        }
    }
    if (rc != LM_OK) {
        ws->be->release(ws->be, p);
        memset(w, 0, sizeof *w);
        return rc;
    }
    if (ws->streaming) { /* the F32 copy will be evicted: drop the file pages from our RSS too */
        for (int i = 0; i < LM_N_MODULES; i++) lm_release_pages(L->w[i]->data, L->w[i]->nbytes);
    }
    w->block = p;
    w->bytes = alloc;
    w->last_use = ws->use_clock;
    ws->used += alloc;
    *out = w;
    return LM_OK;
}

static void weights_free(eng_weights *ws) {
    if (!ws) return;
    if (ws->lw)
        for (int l = 0; l < ws->n_layer; l++) layer_unload(ws, l);
    lm_free(ws->lw);
    ws->be->release(ws->be, ws->out_w);
    ws->be->release(ws->be, ws->out_wc);
    ws->be->release(ws->be, ws->out_norm);
    lm_free(ws);
}

/* The cache for m with a budget of F32 bytes; the output head is read now,
 * and every layer too when all of them fit. */
static int weights_new(eng_weights **out, const lm_model *m, size_t budget, const lm_backend *be, lm_err *err) {
    *out = NULL;
    const lm_config *c = &m->cfg;
    eng_weights *ws = lm_calloc(1, sizeof *ws);
    if (!ws) return lm_nomem(err, sizeof *ws, "weight cache");
    ws->be = be;
    ws->m = m;
    ws->n_layer = c->n_layer;
    ws->budget = budget;
    size_t total_w = 0;
    for (int l = 0; l < c->n_layer; l++) total_w += layer_bytes(be, m, l);
    ws->streaming = total_w > budget;
    size_t vw = (size_t)c->vocab * (size_t)c->dim;
    ws->lw = lm_calloc((size_t)c->n_layer, sizeof *ws->lw);
    ws->out_w = be->alloc(be, vw * sizeof(float));
    ws->out_norm = be->alloc(be, (size_t)c->dim * sizeof(float));
    if (!ws->lw || !ws->out_w || !ws->out_norm) {
        weights_free(ws);
        return lm_nomem(err, vw * sizeof(float), "output head");
    }
    int rc = read_tensor(be, m->output, ws->out_w, err);
    if (rc == LM_OK) rc = read_tensor(be, m->out_norm, ws->out_norm, err);
    if (rc == LM_OK && be->wcopy_bytes) {
        ws->out_wc = be->alloc(be, wcopy_bytes(be, m->output));
        if (!ws->out_wc)
            rc = lm_nomem(err, wcopy_bytes(be, m->output), "output head (bf16 copy)");
        else
            be->wcopy_make(be, ws->out_wc, ws->out_w, c->vocab, c->dim);
        /* the head is only ever multiplied (no method reads it): its copy suffices */
        if (rc == LM_OK) {
            be->release(be, ws->out_w);
            ws->out_w = NULL;
        }
    }
    /* a model whose F32 weights fit the cache is dequantized now, once */
    for (int l = 0; rc == LM_OK && total_w <= budget && l < c->n_layer; l++) {
        layer_f32 *lw;
        rc = weights_layer(ws, l, &lw, err);
    }
    if (rc != LM_OK) {
        weights_free(ws);
        return rc;
    }
    *out = ws;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Pass state: the packed sequences, stored inputs, kept intermediates       */
/* ------------------------------------------------------------------------ */

typedef struct eng_pass {
    const lm_backend *be; /* owns the buffers */
    int n;               /* rows of the last forward */
    int nseg;            /* sequences in it */
    int *seg;            /* host (MB + 1) row offsets of the sequences */
    int32_t *tok;        /* host (S) */
    int32_t *target;     /* host (S) next token of each row */
    uint8_t *mask;       /* host (S) loss positions */
    int32_t *target_b;   /* buffer (S): target, uploaded for the loss */
    uint8_t *mask_b;     /* buffer (S): mask */
    pass_bufs hs;        /* stored layer inputs */
    float *hs_cur;       /* hs.hs_clean or hs.hs_work: which one the backward uses */
    int grad_ready;      /* the last forward prepared dL/dh for a backward */
    /* layer intermediates: layers 0..n_store-1 keep their own set; the
     * others share acts[n_store], and the backward recomputes them (their
     * forward again) unless the shared set still holds that layer. When not
     * every full set fits (compact), the stored sets are compact: their
     * derived fields (ACT_DERIVED) are the shared set's, and the backward
     * remakes those first (element-wise work and attention's forward, no
     * product with a weight) unless the shared set holds that layer's */
    layer_acts *acts;    /* [n_sets] */
    int n_sets, n_store;
    int compact;         /* stored sets are compact (then n_sets = n_store + 1) */
    int shared_layer;    /* layer whose intermediates the shared set holds, -1 none */
} eng_pass;

static void pass_free(eng_pass *ps) {
    if (!ps) return;
    for (int i = 0; ps->acts && i < ps->n_sets; i++) layer_acts_release(&ps->acts[i], ps->be);
    lm_free(ps->acts);
    pass_bufs_release(&ps->hs, ps->be);
    ps->be->release(ps->be, ps->target_b);
    ps->be->release(ps->be, ps->mask_b);
    lm_free(ps->seg);
    lm_free(ps->tok);
    lm_free(ps->target);
    lm_free(ps->mask);
    lm_free(ps);
}

/* act_budget: bytes of layer intermediates kept (as many layers as fit keep
 * theirs; at least one shared set). */
static int pass_new(eng_pass **out, const eng_dims *dm, size_t act_budget, const lm_backend *be, lm_err *err) {
    *out = NULL;
    eng_pass *ps = lm_calloc(1, sizeof *ps);
    if (!ps) return lm_nomem(err, sizeof *ps, "pass state");
    ps->be = be;
    ps->shared_layer = -1;
    size_t per_layer = layer_acts_floats(dm) * sizeof(float), fit = act_budget / per_layer, L = dm->L;
    size_t per_kept = layer_acts_kept_floats(dm) * sizeof(float);
    if (fit >= L) { /* every layer keeps a full set */
        ps->n_store = (int)L;
        ps->n_sets = (int)L;
    } else { /* one shared full set, then as many compact sets as the rest holds */
        size_t rest = act_budget > per_layer ? act_budget - per_layer : 0, nk = rest / per_kept;
        ps->compact = nk > 0;
        ps->n_store = nk >= L ? (int)L : (int)nk;
        ps->n_sets = ps->n_store + 1;
    }
    int rc = LM_OK;
    if (pass_bufs_alloc(&ps->hs, dm, be) != LM_OK)
        rc = lm_nomem(err, pass_bufs_floats(dm) * sizeof(float), "stored layer inputs (lower --seq-len)");
    ps->acts = rc ? NULL : lm_calloc((size_t)ps->n_sets, sizeof *ps->acts);
    if (!rc && !ps->acts) rc = lm_nomem(err, sizeof *ps->acts, "activation table");
    if (rc == LM_OK && ps->compact) { /* the shared set first: the compact ones point into it */
        if (layer_acts_alloc(&ps->acts[ps->n_store], dm, be) != LM_OK)
            rc = lm_nomem(err, per_layer, "layer activations (lower --seq-len)");
        for (int i = 0; rc == LM_OK && i < ps->n_store; i++)
            if (layer_acts_alloc_kept(&ps->acts[i], dm, be, &ps->acts[ps->n_store]) != LM_OK)
                rc = lm_nomem(err, per_kept, "layer activations (lower --seq-len or --act-cache)");
    }
    for (int i = 0; rc == LM_OK && !ps->compact && i < ps->n_sets; i++)
        if (layer_acts_alloc(&ps->acts[i], dm, be) != LM_OK)
            rc = lm_nomem(err, per_layer, "layer activations (lower --seq-len)");
    if (rc == LM_OK) {
        ps->tok = lm_calloc(dm->S, sizeof *ps->tok);
        ps->target = lm_calloc(dm->S, sizeof *ps->target);
        ps->mask = lm_calloc(dm->S, 1);
        ps->seg = lm_calloc(dm->MB + 1, sizeof *ps->seg);
        ps->target_b = be->alloc(be, dm->S * sizeof(int32_t));
        ps->mask_b = be->alloc(be, dm->S);
        if (!ps->tok || !ps->target || !ps->mask || !ps->seg || !ps->target_b || !ps->mask_b)
            rc = lm_nomem(err, dm->S * 14, "token buffers");
    }
    if (rc) {
        pass_free(ps);
        return rc;
    }
    *out = ps;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* The engine                                                                */
/* ------------------------------------------------------------------------ */

struct lm_engine {
    const lm_model *m;
    lm_config c;
    const lm_backend *be;
    lm_backend *own_be;  /* the bf16 backend the engine made for opts.compute, or NULL */
    int compute;         /* LM_COMPUTE_F32 / BF16 / BF16_REF: what the products do */
    int threads;
    int max_seq;         /* longest sequence */
    int max_batch;       /* sequences packed into one pass */
    int QD, KD;          /* n_head * head_dim, n_kv_head * head_dim */
    int ggml_compat;     /* round activations as llama.cpp does (agreement checks) */
    eng_dims dm;
    eng_weights *w;      /* lifetime: the engine's; contents: the cache's policy */
    eng_rope rope;       /* the engine's */
    eng_pass *ps;        /* one pass to the next call */
    eng_scratch sc;      /* within one call */
};

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
const lm_model *lm_eng_model(const lm_engine *e) { return e->m; }
int lm_eng_threads(const lm_engine *e) { return e->threads; }
int lm_eng_max_batch(const lm_engine *e) { return e->max_batch; }
const lm_backend *lm_eng_backend(const lm_engine *e) { return e->be; }

int lm_eng_weight(lm_engine *e, int l, int m, const float **w, lm_err *err) {
    layer_f32 *lw;
    int rc = weights_layer(e->w, l, &lw, err);
    if (rc) return rc;
    *w = lw->w[m];
    return LM_OK;
}

static size_t mem_total_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && psize > 0 ? (size_t)pages * (size_t)psize : (size_t)8 << 30;
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
    e->compute = LM_COMPUTE_F32;
    int want = o ? o->compute : LM_COMPUTE_F32;
    if (o && o->backend) {
        e->be = o->backend;
        if (o->backend->wcopy_bytes) e->compute = LM_COMPUTE_BF16;
    } else if (want == LM_COMPUTE_BF16 || want == LM_COMPUTE_BF16_REF ||
               (want == LM_COMPUTE_AUTO && lm_compute_bf16_available())) {
        int rc = lm_backend_bf16_new(&e->own_be, want == LM_COMPUTE_BF16_REF ? LM_BF16_REF : LM_BF16_HW, err);
        if (rc) {
            lm_free(e);
            return rc;
        }
        e->be = e->own_be;
        e->compute = want == LM_COMPUTE_BF16_REF ? LM_COMPUTE_BF16_REF : LM_COMPUTE_BF16;
    } else if (want != LM_COMPUTE_F32 && want != LM_COMPUTE_AUTO) {
        lm_free(e);
        return lm_fail(err, LM_EARG, "engine: unknown compute %d", want);
    }
    e->threads = lm_num_threads(o ? o->threads : 0);
    e->max_seq = o && o->max_seq > 0 ? o->max_seq : 512;
    e->max_batch = o && o->max_batch > 0 ? o->max_batch : 1;
    e->ggml_compat = o ? o->ggml_compat : 0;
    e->QD = c->n_head * c->head_dim;
    e->KD = c->n_kv_head * c->head_dim;
    omp_set_num_threads(e->threads);
    lm_blas_set_threads(e->threads);

    eng_dims *dm = &e->dm;
    dm->MS = (size_t)e->max_seq;
    dm->MB = (size_t)e->max_batch;
    dm->S = dm->MS * dm->MB;
    dm->L = (size_t)c->n_layer;
    dm->D = (size_t)c->dim;
    dm->F = (size_t)c->ffn_dim;
    dm->H = (size_t)c->n_head;
    dm->KV = (size_t)c->n_kv_head;
    dm->QD = (size_t)e->QD;
    dm->KD = (size_t)e->KD;
    dm->V = (size_t)c->vocab;
    dm->HALF = (size_t)c->head_dim / 2;
    dm->HC = (size_t)head_chunk(c->vocab);
    dm->ATT = e->be->attn_scratch_floats(e->be, e->max_seq, c->n_head, c->head_dim);
    dm->CX = dm->D > dm->QD ? dm->D : dm->QD;
    if (dm->F > dm->CX) dm->CX = dm->F;

    /* F32 weights: a long pass does ~2n flops per weight, so dequantizing a
     * layer again for each pass costs little and a few layers are cached; short
     * passes (generation, ablations of short texts) reuse weights many times
     * and cache up to a third of RAM */
    size_t budget = o && o->weight_cache_bytes ? o->weight_cache_bytes
                    : dm->S >= 256                ? 3 * layer_bytes(e->be, m, 0)
                                                  : mem_total_bytes() / 3;
    size_t act_budget = o && o->act_cache_bytes ? o->act_cache_bytes : (size_t)256 << 20;
    int rc = LM_OK;
    if (eng_scratch_alloc(&e->sc, dm, e->be) != LM_OK)
        rc = lm_nomem(err, eng_scratch_floats(dm) * sizeof(float), "activations (lower --seq-len)");
    else if (eng_rope_alloc(&e->rope, dm, e->be) != LM_OK)
        rc = lm_nomem(err, eng_rope_floats(dm) * sizeof(float), "rope tables");
    if (rc == LM_OK) rc = pass_new(&e->ps, dm, act_budget, e->be, err);
    if (rc == LM_OK) rc = weights_new(&e->w, m, budget, e->be, err);
    if (rc != LM_OK) {
        lm_engine_free(e);
        return rc;
    }
    /* the tables are made on the host and uploaded */
    size_t tab = (size_t)e->max_seq * dm->HALF;
    float *ct = lm_malloc(sizeof(float) * tab * 2);
    if (!ct) {
        lm_engine_free(e);
        return lm_nomem(err, sizeof(float) * tab * 2, "rope tables");
    }
    rope_tables(ct, ct + tab, e->max_seq, c->head_dim, c->rope_theta, c->rope_type, c->rope_factor,
                c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_orig_max_pos);
    e->be->upload(e->be, e->rope.cos_g, ct, sizeof(float) * tab);
    e->be->upload(e->be, e->rope.sin_g, ct + tab, sizeof(float) * tab);
    rope_tables(ct, ct + tab, e->max_seq, c->head_dim, c->rope_theta_local > 0 ? c->rope_theta_local : c->rope_theta,
                0, 1, 0, 0, 0);
    e->be->upload(e->be, e->rope.cos_l, ct, sizeof(float) * tab);
    e->be->upload(e->be, e->rope.sin_l, ct + tab, sizeof(float) * tab);
    lm_free(ct);
    *out = e;
    return LM_OK;
}

void lm_engine_free(lm_engine *e) {
    if (!e) return;
    weights_free(e->w);
    pass_free(e->ps);
    eng_rope_release(&e->rope, e->be);
    eng_scratch_release(&e->sc, e->be);
    lm_backend_bf16_free(e->own_be);
    lm_free(e);
}

int lm_compute_bf16_available(void) { return lm_bf16_have_onednn() && lm_bf16_hw_supported(); }

int lm_engine_compute(const lm_engine *e) { return e->compute; }

const char *lm_compute_name(int compute) {
    switch (compute) {
    case LM_COMPUTE_F32: return "f32";
    case LM_COMPUTE_BF16: return "bf16";
    case LM_COMPUTE_BF16_REF: return "bf16-ref";
    case LM_COMPUTE_AUTO: return "auto";
    default: return "?";
    }
}

int lm_compute_parse(const char *s) {
    for (int c = LM_COMPUTE_F32; c <= LM_COMPUTE_AUTO; c++)
        if (!strcmp(s, lm_compute_name(c))) return c;
    return -1;
}
/* ------------------------------------------------------------------------ */
/* One layer, forward                                                        */
/* ------------------------------------------------------------------------ */

/* Offset of packed sequence s's attention probabilities in layer_acts.P. */
static long seg_p_off(const lm_engine *e, int s) {
    long off = 0;
    for (int i = 0; i < s; i++) {
        long ns = e->ps->seg[i + 1] - e->ps->seg[i];
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

/* y (n, out) = x (n, in) W^T, W (out, in) with its product-format copy wc
 * (or NULL): the products with a weight. */
static void mul_wt(const lm_backend *be, int n, int out, int in, const float *x, const float *W, const void *wc,
                   float *y) {
    if (wc)
        be->gemm_nt_w(be, n, out, in, x, in, W, wc, 0.0f, y, out);
    else
        be->gemm_nt(be, n, out, in, x, in, W, in, 0.0f, y, out);
}
/* dx (n, in) = beta dx + dy (n, out) W, W (out, in). */
static void mul_w(const lm_backend *be, int n, int out, int in, const float *dy, const float *W, const void *wc,
                  float beta, float *dx) {
    if (wc)
        be->gemm_nn_w(be, n, in, out, dy, out, W, wc, beta, dx, in);
    else
        be->gemm_nn(be, n, in, out, dy, out, W, in, beta, dx, in);
}

/* y (n, out) = x (n, in) W^T + b, then the intervention if it targets (l, m). */
static void linear_forward(lm_engine *e, float *y, const float *x, const layer_f32 *w, int l, int m,
                           int n, const lm_interv *iv) {
    const lm_backend *be = e->be;
    int out = lm_eng_module_out(e, m), in = lm_eng_module_in(e, m);
    if (e->ggml_compat) { /* the input as ggml rounds it for this weight's type */
        int kind = ggml_act_kind(e->m->layers[l].w[m]->dtype);
        if (kind) {
            be->copy(be, e->sc.compat_x, x, sizeof(float) * (size_t)n * in);
            be->act_round(be, e->sc.compat_x, n, in, kind);
            x = e->sc.compat_x;
        }
    }
    mul_wt(be, n, out, in, x, w->w[m], w->wc[m], y);
    if (w->b[m]) be->add_rows(be, y, w->b[m], n, out);
    if (iv && iv->kind != LM_IV_NONE && iv->layer == l && iv->module == m) {
        if (iv->kind == LM_IV_SCALE)
            be->scale(be, y, iv->alpha, (long)n * out);
        else
            be->set_rows(be, y, iv->vec, n, out);
    }
}

#define HOOK(call)                    \
    do {                              \
        int hrc_ = (call);            \
        if (hrc_) return hrc_;        \
    } while (0)

/* Forward of layer l: h_out (n, D) from h_in (n, D); every intermediate is
 * left in the layer's set of e->ps->acts for the backward. light = 1 (a
 * compact set, before its backward): the module outputs, attention's output
 * and the rstd are the set's already; only the derived fields are made again,
 * by the same calls on the same values, so bit for bit as the forward made
 * them (no product with a weight, no hook, no intervention, no h_out). */
static int layer_forward(lm_engine *e, int l, const float *h_in, float *h_out, int n,
                         const lm_interv *iv, const lm_hooks *hk, int light, lm_err *err) {
    const lm_config *c = &e->c;
    layer_f32 *w;
    int rc = weights_layer(e->w, l, &w, err);
    if (rc) return rc;
    eng_pass *ps = e->ps;
    layer_acts *a = &ps->acts[l < ps->n_store ? l : ps->n_store];
    int D = c->dim, F = c->ffn_dim, H = c->n_head, KV = c->n_kv_head, hd = c->head_dim;
    int win = layer_window(c, l);
    const float *cs = win ? e->rope.cos_l : e->rope.cos_g, *sn = win ? e->rope.sin_l : e->rope.sin_g;
    const lm_backend *be = e->be;
    if (l >= ps->n_store || ps->compact) ps->shared_layer = l;
    if (light) hk = NULL, iv = NULL;

    /* attention */
    be->rmsnorm_fwd(be, a->x, a->rstd1, h_in, w->attn_norm, n, D, c->norm_eps, c->norm_add_one);
    if (!light) {
        linear_forward(e, a->q, a->x, w, l, LM_MOD_Q, n, iv);
        linear_forward(e, a->k, a->x, w, l, LM_MOD_K, n, iv);
        linear_forward(e, a->v, a->x, w, l, LM_MOD_V, n, iv);
    }
    if (hk && hk->fwd) {
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_Q, a->q, a->x, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_K, a->k, a->x, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_V, a->v, a->x, n));
    }
    if (c->has_qk_norm) {
        be->rmsnorm_fwd(be, a->qr, a->q_rstd, a->q, w->q_norm, n * H, hd, c->norm_eps, c->norm_add_one);
        be->rmsnorm_fwd(be, a->kr, a->k_rstd, a->k, w->k_norm, n * KV, hd, c->norm_eps, c->norm_add_one);
    } else {
        be->copy(be, a->qr, a->q, sizeof(float) * (size_t)n * e->QD);
        be->copy(be, a->kr, a->k, sizeof(float) * (size_t)n * e->KD);
    }
    /* each packed sequence: positions from 0, attention within itself */
    for (int s = 0; s < ps->nseg; s++) {
        int r0 = ps->seg[s], ns = ps->seg[s + 1] - r0;
        be->rope_fwd(be, a->qr + (long)r0 * e->QD, cs, sn, ns, H, hd);
        be->rope_fwd(be, a->kr + (long)r0 * e->KD, cs, sn, ns, KV, hd);
        if (e->ggml_compat) { /* F16 KV cache; q meets K in F16 */
            be->act_round(be, a->qr + (long)r0 * e->QD, ns, e->QD, 3);
            be->act_round(be, a->kr + (long)r0 * e->KD, ns, e->KD, 3);
            if (!light) be->act_round(be, a->v + (long)r0 * e->KD, ns, e->KD, 3); /* v is kept, rounded */
        }
        be->attn_fwd(be, a->att + (long)r0 * e->QD, a->P + seg_p_off(e, s), a->qr + (long)r0 * e->QD,
                          a->kr + (long)r0 * e->KD, a->v + (long)r0 * e->KD, ns, H, KV, hd, c->attn_scale, win);
    }
    if (!light) linear_forward(e, a->o, a->att, w, l, LM_MOD_O, n, iv);
    if (hk && hk->fwd) HOOK(hk->fwd(hk->ctx, l, LM_MOD_O, a->o, a->att, n));
    long nD = (long)n * D;
    if (c->has_post_norms) {
        be->rmsnorm_fwd(be, a->hmid, a->o_rstd, a->o, w->post_attn_norm, n, D, c->norm_eps, c->norm_add_one);
        be->add(be, a->hmid, a->hmid, h_in, nD);
    } else {
        be->add(be, a->hmid, h_in, a->o, nD);
    }

    /* MLP */
    be->rmsnorm_fwd(be, a->x2, a->rstd2, a->hmid, w->ffn_norm, n, D, c->norm_eps, c->norm_add_one);
    if (!light) {
        linear_forward(e, a->g, a->x2, w, l, LM_MOD_GATE, n, iv);
        linear_forward(e, a->u, a->x2, w, l, LM_MOD_UP, n, iv);
    }
    be->glu_fwd(be, a->a, a->g, a->u, (long)n * F,
                c->act != LM_ACT_GELU_TANH ? LM_GLU_SILU : e->ggml_compat ? LM_GLU_GELU_GGML : LM_GLU_GELU);
    if (light) return LM_OK; /* d and its rstd are kept; h_out is the next layer's stored input */
    linear_forward(e, a->d, a->a, w, l, LM_MOD_DOWN, n, iv);
    if (hk && hk->fwd) {
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_UP, a->u, a->x2, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_DOWN, a->d, a->a, n));
        HOOK(hk->fwd(hk->ctx, l, LM_MOD_GATE, a->g, a->x2, n));
    }
    if (c->has_post_norms) {
        be->rmsnorm_fwd(be, h_out, a->d_rstd, a->d, w->post_ffn_norm, n, D, c->norm_eps, c->norm_add_one);
        be->add(be, h_out, h_out, a->hmid, nD);
    } else {
        be->add(be, h_out, a->hmid, a->d, nD);
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

static void scale_buf(const lm_backend *be, float *x, long cnt, float s) {
    if (s != 1.0f) be->scale(be, x, s, cnt);
}

/* dy (n, D) = dL/dy of a branch output y whose (optional) post-norm w feeds
 * the residual with gradient dh: through the norm, or dh itself without one. */
static void post_norm_backward(const lm_backend *be, float *dy, const float *dh, const float *y, const float *w,
                               const float *rstd, int n, int D, int add_one) {
    if (w) {
        be->zero(be, dy, sizeof(float) * (size_t)n * D);
        be->rmsnorm_bwd(be, dy, dh, y, w, rstd, n, D, add_one);
    } else {
        be->copy(be, dy, dh, sizeof(float) * (size_t)n * D);
    }
}

/* Backward of layer l, whose forward intermediates are in its set of
 * e->ps->acts (recomputed by the caller). On entry e->sc.dh (n, D) =
 * dL/dh_out; on exit dL/dh_in.
 * need_dx = 0 skips the input gradient (lowest layer of a partial backward). */
static int layer_backward(lm_engine *e, int l, const float *h_in, int n, const lm_interv *iv,
                          const lm_hooks *hk, int need_dx, lm_err *err) {
    const lm_config *c = &e->c;
    layer_f32 *w;
    int rc = weights_layer(e->w, l, &w, err);
    if (rc) return rc;
    eng_pass *ps = e->ps;
    layer_acts *a = &ps->acts[l < ps->n_store ? l : ps->n_store];
    int D = c->dim, F = c->ffn_dim, H = c->n_head, KV = c->n_kv_head, hd = c->head_dim;
    int QD = e->QD, KD = e->KD;
    int win = layer_window(c, l);
    const float *cs = win ? e->rope.cos_l : e->rope.cos_g, *sn = win ? e->rope.sin_l : e->rope.sin_g;
    long nD = (long)n * D, nF = (long)n * F;
    eng_scratch *sc = &e->sc;
    float *dh = sc->dh;
    const lm_backend *be = e->be;
    int glu = c->act == LM_ACT_GELU_TANH ? LM_GLU_GELU : LM_GLU_SILU;

    /* ---- MLP branch: h_out = hmid + post(d) ---- */
    float *dd = sc->d_d;
    post_norm_backward(be, dd, dh, a->d, c->has_post_norms ? w->post_ffn_norm : NULL, a->d_rstd, n, D,
                       c->norm_add_one);
    if (hk && hk->bwd) HOOK(hk->bwd(hk->ctx, l, LM_MOD_DOWN, dd, a->d, a->a, w->w[LM_MOD_DOWN], n));
    scale_buf(be, dd, nD, iv_factor(iv, l, LM_MOD_DOWN));
    float *da = sc->d_a, *dg = sc->d_g, *du = sc->d_u;
    mul_w(be, n, D, F, dd, w->w[LM_MOD_DOWN], w->wc[LM_MOD_DOWN], 0.0f, da);
    be->glu_bwd(be, dg, du, da, a->g, a->u, nF, glu);
    if (hk && hk->bwd) {
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_UP, du, a->u, a->x2, w->w[LM_MOD_UP], n));
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_GATE, dg, a->g, a->x2, w->w[LM_MOD_GATE], n));
    }
    scale_buf(be, du, nF, iv_factor(iv, l, LM_MOD_UP));
    scale_buf(be, dg, nF, iv_factor(iv, l, LM_MOD_GATE));
    float *dx2 = sc->d_x2;
    mul_w(be, n, F, D, du, w->w[LM_MOD_UP], w->wc[LM_MOD_UP], 0.0f, dx2);
    mul_w(be, n, F, D, dg, w->w[LM_MOD_GATE], w->wc[LM_MOD_GATE], 1.0f, dx2);
    be->rmsnorm_bwd(be, dh, dx2, a->hmid, w->ffn_norm, a->rstd2, n, D, c->norm_add_one); /* dh = dL/dhmid */

    /* ---- attention branch: hmid = h_in + post(o) ---- */
    float *dO = sc->d_o;
    post_norm_backward(be, dO, dh, a->o, c->has_post_norms ? w->post_attn_norm : NULL, a->o_rstd, n, D,
                       c->norm_add_one);
    if (hk && hk->bwd) HOOK(hk->bwd(hk->ctx, l, LM_MOD_O, dO, a->o, a->att, w->w[LM_MOD_O], n));
    scale_buf(be, dO, nD, iv_factor(iv, l, LM_MOD_O));
    float *datt = sc->d_att;
    mul_w(be, n, D, QD, dO, w->w[LM_MOD_O], w->wc[LM_MOD_O], 0.0f, datt);
    float *dqr = sc->d_qr, *dkr = sc->d_kr, *dv = sc->d_v;
    for (int s = 0; s < ps->nseg; s++) {
        int r0 = ps->seg[s], ns = ps->seg[s + 1] - r0;
        long oq = (long)r0 * QD, ok = (long)r0 * KD;
        be->attn_bwd(be, dqr + oq, dkr + ok, dv + ok, datt + oq, a->P + seg_p_off(e, s), a->qr + oq, a->kr + ok,
                     a->v + ok, sc->attn_scratch, e->dm.ATT, ns, H, KV, hd, c->attn_scale, win);
        be->rope_bwd(be, dqr + oq, cs, sn, ns, H, hd);
        be->rope_bwd(be, dkr + ok, cs, sn, ns, KV, hd);
    }
    float *dq = dqr, *dk = dkr;
    if (c->has_qk_norm) { /* through the per-head norms */
        dq = sc->d_q;
        dk = sc->d_k;
        be->zero(be, dq, sizeof(float) * (size_t)n * QD);
        be->zero(be, dk, sizeof(float) * (size_t)n * KD);
        be->rmsnorm_bwd(be, dq, dqr, a->q, w->q_norm, a->q_rstd, n * H, hd, c->norm_add_one);
        be->rmsnorm_bwd(be, dk, dkr, a->k, w->k_norm, a->k_rstd, n * KV, hd, c->norm_add_one);
    }
    if (hk && hk->bwd) {
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_Q, dq, a->q, a->x, w->w[LM_MOD_Q], n));
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_K, dk, a->k, a->x, w->w[LM_MOD_K], n));
        HOOK(hk->bwd(hk->ctx, l, LM_MOD_V, dv, a->v, a->x, w->w[LM_MOD_V], n));
    }
    if (!need_dx) return LM_OK;
    scale_buf(be, dq, (long)n * QD, iv_factor(iv, l, LM_MOD_Q));
    scale_buf(be, dk, (long)n * KD, iv_factor(iv, l, LM_MOD_K));
    scale_buf(be, dv, (long)n * KD, iv_factor(iv, l, LM_MOD_V));
    float *dx = sc->d_x;
    mul_w(be, n, QD, D, dq, w->w[LM_MOD_Q], w->wc[LM_MOD_Q], 0.0f, dx);
    mul_w(be, n, KD, D, dk, w->w[LM_MOD_K], w->wc[LM_MOD_K], 1.0f, dx);
    mul_w(be, n, KD, D, dv, w->w[LM_MOD_V], w->wc[LM_MOD_V], 1.0f, dx);
    be->rmsnorm_bwd(be, dh, dx, h_in, w->attn_norm, a->rstd1, n, D, c->norm_add_one); /* dh = dL/dh_in */
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Embedding and head                                                        */
/* ------------------------------------------------------------------------ */

/* h (n, D) = the embedding rows of tok (host), times the model's scale. */
static int embed_forward(lm_engine *e, float *h, const int32_t *tok, int n, lm_err *err) {
    float s = e->c.embed_scale != 1.0f && e->c.embed_scale != 0.0f ? e->c.embed_scale : 1.0f;
    return e->be->gather_rows(e->be, h, e->m->tok_embd, tok, n, s, err);
}

/* Final norm, logits over chunks of tokens, loss on masked positions and, with
 * grad, e->sc.dh = dL/dh_final. logits (n - logits_from, V) or NULL. */
static double head_forward(lm_engine *e, const float *h, int n, int use_loss, int grad, float *logits,
                           int logits_from) {
    int D = e->c.dim, V = e->c.vocab;
    eng_scratch *sc = &e->sc;
    const eng_weights *ws = e->w;
    const eng_pass *ps = e->ps;
    const lm_backend *be = e->be;
    be->rmsnorm_fwd(be, sc->xn, sc->rstd_f, h, ws->out_norm, n, D, e->c.norm_eps, e->c.norm_add_one);
    float *dxn = sc->d_xn;
    if (grad) be->zero(be, dxn, sizeof(float) * (size_t)n * D);
    double loss = 0.0;
    int start = 0;
    if (!use_loss && !grad) start = logits_from; /* only the requested rows */
    int hc = head_chunk(V);
    for (int c0 = start; c0 < n; c0 += hc) {
        int cs = n - c0 < hc ? n - c0 : hc;
        int any = 0;
        if (use_loss)
            for (int i = 0; i < cs; i++) any |= ps->mask[c0 + i];
        int want_logits = logits && c0 + cs > logits_from;
        if (!any && !want_logits) continue;
        const float *xin = sc->xn + (long)c0 * D;
        if (e->ggml_compat && ggml_act_kind(e->m->output->dtype)) {
            be->copy(be, sc->compat_x, xin, sizeof(float) * (size_t)cs * D);
            be->act_round(be, sc->compat_x, cs, D, ggml_act_kind(e->m->output->dtype));
            xin = sc->compat_x;
        }
        mul_wt(be, cs, V, D, xin, ws->out_w, ws->out_wc, sc->logit_chunk);
        if (want_logits) { /* rows from logits_from on, to the host */
            int i0 = logits_from > c0 ? logits_from - c0 : 0;
            be->download(be, logits + (long)(c0 + i0 - logits_from) * V, sc->logit_chunk + (long)i0 * V,
                         sizeof(float) * (size_t)(cs - i0) * V);
        }
        if (use_loss && any) {
            loss += be->xent(be, sc->logit_chunk, ps->target_b + c0, ps->mask_b + c0, cs, V, grad);
            if (grad) mul_w(be, cs, V, D, sc->logit_chunk, ws->out_w, ws->out_wc, 0.0f, dxn + (long)c0 * D);
        }
    }
    if (grad) {
        be->zero(be, sc->dh, sizeof(float) * (size_t)n * D);
        be->rmsnorm_bwd(be, sc->dh, dxn, h, ws->out_norm, sc->rstd_f, n, D, e->c.norm_add_one);
    }
    return loss;
}

/* ------------------------------------------------------------------------ */
/* Whole passes                                                              */
/* ------------------------------------------------------------------------ */

/* Layers from..L-1 over hs (L+1, S, D), then the head. */
static int run_layers(lm_engine *e, float *hs, int from, const lm_interv *iv, const lm_hooks *hk,
                      int use_loss, int grad, double *loss, float *logits, int logits_from, lm_err *err) {
    eng_pass *ps = e->ps;
    int n = ps->n, L = e->c.n_layer;
    size_t stride = e->dm.S * e->dm.D;
    for (int l = from; l < L; l++) {
        int rc = layer_forward(e, l, hs + l * stride, hs + (l + 1) * stride, n, iv, hk, 0, err);
        if (rc) return rc;
    }
    double ls = head_forward(e, hs + L * stride, n, use_loss, grad, logits, logits_from);
    if (loss) *loss = ls;
    ps->hs_cur = hs;
    ps->grad_ready = grad;
    return LM_OK;
}

int lm_eng_forward(lm_engine *e, const lm_fwd_req *r, lm_err *err) {
    eng_pass *ps = e->ps;
    if (r->nseq <= 0 || r->nseq > e->max_batch)
        return lm_fail(err, LM_EINTERNAL, "%d sequences in one pass (engine holds 1..%d)", r->nseq, e->max_batch);
    if (r->grad && !r->use_loss) return lm_fail(err, LM_EINTERNAL, "backward requested without a loss");
    int n = 0;
    ps->seg[0] = 0;
    for (int s = 0; s < r->nseq; s++) {
        const lm_seq *q = &r->seqs[s];
        if (q->n <= 0 || q->n > e->max_seq)
            return lm_fail(err, LM_EARG, "sequence of %d tokens (engine holds 1..%d; raise --seq-len)", q->n,
                           e->max_seq);
        for (int t = 0; t < q->n; t++) {
            if (q->tok[t] < 0 || q->tok[t] >= e->c.vocab)
                return lm_fail(err, LM_EARG, "token id %d at position %d outside the vocabulary (%d)", q->tok[t], t,
                               e->c.vocab);
            ps->tok[n + t] = q->tok[t];
            ps->target[n + t] = t + 1 < q->n ? q->tok[t + 1] : 0;
            ps->mask[n + t] = r->use_loss && q->mask && t + 1 < q->n ? (q->mask[t] != 0) : 0;
        }
        n += q->n;
        ps->seg[s + 1] = n;
    }
    ps->n = n;
    ps->nseg = r->nseq;
    if (r->use_loss) {
        e->be->upload(e->be, ps->target_b, ps->target, sizeof(int32_t) * (size_t)n);
        e->be->upload(e->be, ps->mask_b, ps->mask, (size_t)n);
    }
    int rc = embed_forward(e, ps->hs.hs_clean, ps->tok, n, err);
    if (rc) return rc;
    return run_layers(e, ps->hs.hs_clean, 0, r->iv, r->hk, r->use_loss, r->grad, r->loss, r->logits, r->logits_from,
                      err);
}

void lm_eng_act_layout(const lm_engine *e, int *n_store, int *compact) {
    *n_store = e->ps->n_store;
    *compact = e->ps->compact;
}

int lm_eng_segments(const lm_engine *e, const int **off) {
    *off = e->ps->seg;
    return e->ps->nseg;
}

int lm_eng_forward_from(lm_engine *e, const lm_from_req *r, lm_err *err) {
    eng_pass *ps = e->ps;
    if (r->from < 0 || r->from >= e->c.n_layer || ps->n <= 0)
        return lm_fail(err, LM_EINTERNAL, "forward_from layer %d without a stored forward", r->from);
    size_t stride = e->dm.S * e->dm.D;
    e->be->copy(e->be, ps->hs.hs_work + r->from * stride, ps->hs.hs_clean + r->from * stride,
                sizeof(float) * (size_t)ps->n * e->c.dim);
    return run_layers(e, ps->hs.hs_work, r->from, r->iv, r->hk, r->use_loss, r->grad, r->loss, NULL, 0, err);
}

int lm_eng_backward(lm_engine *e, const lm_bwd_req *r, lm_err *err) {
    eng_pass *ps = e->ps;
    if (!ps->grad_ready) return lm_fail(err, LM_EINTERNAL, "backward without a forward that prepared gradients");
    int n = ps->n, L = e->c.n_layer;
    size_t stride = e->dm.S * e->dm.D;
    float *hs = ps->hs_cur;
    for (int l = L - 1; l >= r->to; l--) {
        /* recompute this layer's intermediates (its output is not needed: the
         * stored input of layer l+1 is already known); hooks are not re-run;
         * a compact set: only its derived fields */
        int rc = LM_OK;
        if (ps->shared_layer != l && (l >= ps->n_store || ps->compact))
            rc = layer_forward(e, l, hs + l * stride, e->sc.h_redo, n, r->iv, NULL, l < ps->n_store, err);
        if (rc) return rc;
        rc = layer_backward(e, l, hs + l * stride, n, r->iv, r->hk, l > r->to, err);
        if (rc) return rc;
    }
    ps->grad_ready = 0;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Public wrappers                                                           */
/* ------------------------------------------------------------------------ */

/* One sequence tok[0..n), no loss; logits (n - logits_from, V). */
static int forward_one(lm_engine *e, const int32_t *tok, int n, float *logits, int logits_from, lm_err *err) {
    lm_seq q = {(int32_t *)tok, NULL, n};
    return lm_eng_forward(e, &(lm_fwd_req){.seqs = &q, .nseq = 1, .logits = logits, .logits_from = logits_from}, err);
}

int lm_engine_forward(lm_engine *e, const int32_t *tok, int n, float *logits, lm_err *err) {
    return forward_one(e, tok, n, logits, 0, err);
}

int lm_engine_forward_last(lm_engine *e, const int32_t *tok, int n, lm_err *err) {
    float *logits = lm_malloc(sizeof(float) * (size_t)e->c.vocab);
    if (!logits) return lm_nomem(err, sizeof(float) * (size_t)e->c.vocab, "logits");
    int rc = forward_one(e, tok, n, logits, n - 1, err);
    lm_free(logits);
    return rc;
}

int lm_engine_loss(lm_engine *e, const lm_seq *s, double *loss, int64_t *count, lm_err *err) {
    int rc = lm_eng_forward(e, &(lm_fwd_req){.seqs = s, .nseq = 1, .use_loss = s->mask != NULL, .loss = loss}, err);
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
        int rc = forward_one(e, seq, n, logits, n - 1, err);
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
