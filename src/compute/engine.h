/*
 * engine_internal.h -- the engine's interface to the attribution methods.
 *
 * A pass over one sequence is a forward (which stores each layer's input
 * residual) and optionally a backward, which walks the layers top-down,
 * recomputing each layer's activations from its stored input, so activation
 * memory is O(layers * n * dim) + one layer's intermediates.
 *
 * Methods observe the pass through hooks (module outputs and inputs in the
 * forward, output gradients in the backward) and steer it with one
 * intervention on one module's output.
 */
#ifndef LM_ENGINE_INTERNAL_H
#define LM_ENGINE_INTERNAL_H

#include "base/base.h"

enum { LM_IV_NONE = 0, LM_IV_SCALE, LM_IV_REPLACE };

/* An intervention on the output y of module `module` of layer `layer`:
 * SCALE: y := alpha * y;  REPLACE: every row of y := vec (out features). */
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

/* Full forward of tok[0..n) from the embeddings. Stores the layer inputs for
 * a later backward / forward_from. mask (n) selects the loss positions
 * (target tok[i+1]); NULL = no loss. grad: prepare dL/dh of the last residual
 * for lm_eng_backward. logits (n - logits_from, V) or NULL. */
int lm_eng_forward(lm_engine *e, const int32_t *tok, int n, const uint8_t *mask,
                   const lm_interv *iv, const lm_hooks *hk, int grad, double *loss,
                   float *logits, int logits_from, lm_err *err);
/* The same for nseq sequences packed into one pass (rows one after another,
 * attention within each sequence, RoPE positions from 0 in each): exactly
 * the sum of separate passes, with larger matrix products. use_loss: the
 * sequences' masks select the loss positions. logits (rows, V) or NULL. */
int lm_eng_forward_batch(lm_engine *e, const lm_seq *seqs, int nseq, int use_loss, const lm_interv *iv,
                         const lm_hooks *hk, int grad, double *loss, float *logits, int logits_from,
                         lm_err *err);
/* Row offsets of the sequences of the last pass: off[0..nseq]. Returns nseq. */
int lm_eng_segments(const lm_engine *e, const int **off);
/* Forward from the stored (clean) input of layer `from` of the last full
 * forward, with an intervention at or above that layer; the loss positions
 * are those of that forward. Does not disturb the stored clean inputs. */
int lm_eng_forward_from(lm_engine *e, int from, int use_loss, const lm_interv *iv,
                        const lm_hooks *hk, int grad, double *loss, lm_err *err);
/* Backward of the last forward (which had grad = 1), from the top layer down
 * to layer `to` (0 = all), calling hk->bwd for every module on the way. */
int lm_eng_backward(lm_engine *e, int to, const lm_interv *iv, const lm_hooks *hk, lm_err *err);

/* F32 weight of module m in layer l (dequantized, cached or streamed). */
int lm_eng_weight(lm_engine *e, int l, int m, const float **w, lm_err *err);
const lm_config *lm_eng_config(const lm_engine *e);
int lm_eng_module_out(const lm_engine *e, int m); /* output features of module m */
int lm_eng_module_in(const lm_engine *e, int m);  /* input features of module m */
int lm_eng_threads(const lm_engine *e);
int lm_eng_max_batch(const lm_engine *e);

#endif
