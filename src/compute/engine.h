/*
 * engine.h -- the engine's interface to the attribution methods.
 *
 * Lifetimes. An lm_engine (lm_engine_new / lm_engine_free) owns four parts,
 * each with its own new/free in engine.c:
 *   weights  the F32 copy of the model's layers: dequantized on first use,
 *            kept while the cache budget allows (all layers of a small model,
 *            a sliding few of a 7B), evicted least-recently-used, the file's
 *            pages released while streaming; the output head; lives as long
 *            as the engine, its contents change with the cache policy;
 *   rope     RoPE tables for positions 0..max_seq-1, fixed at creation;
 *   pass     what one forward leaves for the calls that follow it: the packed
 *            sequences, each layer's input residual (L+1, rows, D), and the
 *            layer intermediates kept for the backward (as many layers as the
 *            activation budget holds; the others are recomputed from the
 *            stored input); valid until the next lm_eng_forward;
 *   scratch  buffers overwritten within one call, each named for what it holds.
 * Every buffer is declared once, with its shape, in a table in engine.c.
 *
 * A pass over sequences is a forward (lm_eng_forward) and optionally a
 * backward (lm_eng_backward) that walks the layers top-down. Methods observe
 * the pass through hooks (module outputs and inputs in the forward, output
 * gradients in the backward) and steer it with one intervention on one
 * module's output. Every float pointer below (hook arguments, weights,
 * interventions' vec) is a buffer of the engine's backend (backend.h): read
 * it through the backend, never directly. Requests are structs with named fields:
 *   lm_eng_forward(e, &(lm_fwd_req){.seqs = s, .nseq = 2, .use_loss = 1, .grad = 1, .loss = &l}, err);
 */
#ifndef LM_ENGINE_INTERNAL_H
#define LM_ENGINE_INTERNAL_H

#include "base/base.h"
#include "compute/backend.h"

enum { LM_IV_NONE = 0, LM_IV_SCALE, LM_IV_REPLACE };

/* An intervention on the output y of module `module` of layer `layer`:
 * SCALE: y := alpha * y;  REPLACE: every row of y := vec (out features, a
 * backend buffer). */
typedef struct lm_interv {
    int kind;
    int layer, module;
    float alpha;
    const float *vec;
} lm_interv;

typedef struct lm_hooks {
    void *ctx;
    /* Forward: module (l, m) produced Y (n, out) from its input X (n, in). */
    int (*fwd)(void *ctx, int l, int m, const float *Y, const float *X, int n);
    /* Backward: dY (n, out) = dL/dY at the module output Y (after any
     * intervention), X (n, in) its input, W (out, in) its F32 weight. */
    int (*bwd)(void *ctx, int l, int m, const float *dY, const float *Y, const float *X,
               const float *W, int n);
    /* Forward: residual stream into and out of layer l, (n, dim) each. */
    int (*block)(void *ctx, int l, const float *h_in, const float *h_out, int n);
} lm_hooks;

/* A full forward from the embeddings of nseq sequences packed into one pass
 * (rows one after another, attention within each sequence, RoPE positions
 * from 0 in each): exactly the sum of separate passes, with larger matrix
 * products. Stores the layer inputs for a later backward / forward_from. */
typedef struct lm_fwd_req {
    const lm_seq *seqs;     /* [nseq], 1 <= nseq <= the engine's max_batch */
    int nseq;
    int use_loss;           /* the sequences' masks select the loss positions (target tok[i+1]) */
    const lm_interv *iv;    /* NULL: none */
    const lm_hooks *hk;     /* forward hooks (fwd, block); NULL: none */
    int grad;               /* prepare dL/dh of the last residual for lm_eng_backward (needs use_loss) */
    double *loss;           /* out: summed loss over the loss positions, or NULL */
    float *logits;          /* out: (rows - logits_from, V), or NULL */
    int logits_from;
} lm_fwd_req;

/* A forward from the stored (clean) input of layer `from` of the last full
 * forward, with an intervention at or above that layer; the loss positions
 * are those of that forward. Does not disturb the stored clean inputs. */
typedef struct lm_from_req {
    int from;
    int use_loss;
    const lm_interv *iv;
    const lm_hooks *hk;
    int grad;
    double *loss;           /* out, or NULL */
} lm_from_req;

/* The backward of the last forward (which had grad = 1), from the top layer
 * down to layer `to` (0 = all), calling hk->bwd for every module on the way;
 * iv must be the forward's intervention. */
typedef struct lm_bwd_req {
    int to;
    const lm_interv *iv;
    const lm_hooks *hk;
} lm_bwd_req;

int lm_eng_forward(lm_engine *e, const lm_fwd_req *r, lm_err *err);
int lm_eng_forward_from(lm_engine *e, const lm_from_req *r, lm_err *err);
int lm_eng_backward(lm_engine *e, const lm_bwd_req *r, lm_err *err);
/* Row offsets of the sequences of the last pass: off[0..nseq]. Returns nseq. */
int lm_eng_segments(const lm_engine *e, const int **off);
/* How the pass keeps layer intermediates (--act-cache): layers 0..n_store-1
 * keep theirs, in compact sets (compact = 1: the backward remakes their
 * derived fields) or full ones; the others are recomputed (tests). */
void lm_eng_act_layout(const lm_engine *e, int *n_store, int *compact);

/* F32 weight of module m in layer l (dequantized, cached or streamed). */
int lm_eng_weight(lm_engine *e, int l, int m, const float **w, lm_err *err);
const lm_config *lm_eng_config(const lm_engine *e);
const lm_model *lm_eng_model(const lm_engine *e); /* the model the engine was made from */
int lm_eng_module_out(const lm_engine *e, int m); /* output features of module m */
int lm_eng_module_in(const lm_engine *e, int m);  /* input features of module m */
int lm_eng_threads(const lm_engine *e);
int lm_eng_max_batch(const lm_engine *e);
/* The backend the engine computes through, lm_engine_opts.backend or
 * lm_backend_cpu(): every buffer the hooks and lm_eng_weight hand out is its
 * buffer, read and reduced through it (methods call be->dot, be->grad_reduce
 * ...), never dereferenced on the host. */
const lm_backend *lm_eng_backend(const lm_engine *e);

#endif
