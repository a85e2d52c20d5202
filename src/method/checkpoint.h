/*
 * checkpoint.h -- the attribution checkpoint file (format LMCKPT04) and the
 * run's fingerprint: what attribute.c saves and resumes from, kept apart
 * from the driver so that the file format is one page.
 *
 * Layout, every number in the machine's byte order (little-endian on every
 * platform layermap builds for), every count checked against the file size:
 *
 *   1. magic "LMCKPT04" (8 bytes; "LMCKPT01".."03" are older layermaps')
 *   2. u64 the file's size in bytes, trailer included
 *   3. the fingerprint, CKPT_FP_BYTES: model_sha256 (64 hex digits),
 *      i64 model_bytes, model_name (256 bytes, NUL-padded), data_sha256 (64),
 *      i32 n_seq, i32 longest, i64 n_tokens, i32 n_methods,
 *      i32 methods[LM_METHOD_COUNT] (ascending, unused ones -1), i32 batch,
 *      i32 ig_steps, i32 n_layer, layers (256 bytes, NUL-padded), f64 until_stable,
 *      i32 compute (LM_COMPUTE_F32 / BF16 / BF16_REF: the products' arithmetic)
 *   4. for each method of the fingerprint, in its order:
 *      a head, CKPT_HEAD_BYTES: i32 method, phase, n_samples, stable_runs,
 *      stopped_stable, n_slots; i64 n_targets, n_tokens, n_pos_mean;
 *      f64 loss_sum; u64 n_sum (L*7), n_bi (L), n_vec;
 *      the finished samples of the current phase: ceil(n_slots / 8) bytes,
 *      bit k % 8 of byte k / 8 for sample k (global index);
 *      the sums as f64: sum[n_sum], aux[n_sum], bi[n_bi], vec[n_vec],
 *      sum2[n_sum], half[2 * n_sum]
 *   5. the sha256 of every byte before it, 64 hex digits
 *
 * The sums are those of every process together (reduced): a checkpoint does
 * not depend on how many processes made it.
 */
#ifndef LM_METHOD_CHECKPOINT_H
#define LM_METHOD_CHECKPOINT_H

#include "base/base.h"

#define CKPT_MAGIC "LMCKPT04"
#define CKPT_FP_BYTES 732
#define CKPT_HEAD_BYTES 80

/* One method's state, as saved: the numbers, and views of its arrays (the
 * caller's; read fills them in place, their sizes given). */
typedef struct lm_ckpt_method {
    int32_t method, phase, n_samples, stable_runs, stopped_stable, n_slots;
    int64_t n_targets, n_tokens, n_pos_mean;
    double loss_sum;
    uint8_t *done;               /* (n_slots) 1 = finished, one byte each in memory */
    double *sum, *aux, *sum2;    /* (n_sum) */
    double *half;                /* (2 * n_sum) */
    double *bi;                  /* (n_bi) */
    double *vec;                 /* (n_vec) */
    uint64_t n_sum, n_bi, n_vec;
} lm_ckpt_method;

/* Write the checkpoint of the run fp, ms[i] for fp->methods[i], atomically. */
int lm_ckpt_write(const char *path, const lm_attr_fingerprint *fp, const lm_ckpt_method *ms, lm_err *err);
/* Read it into ms (sizes, n_slots and the arrays set by the caller): LM_OK,
 * -1 when there is no file, LM_EARG for another run's checkpoint (what
 * differs named), LM_ECORRUPT / LM_EIO naming the file. */
int lm_ckpt_read(const char *path, const lm_attr_fingerprint *fp, lm_ckpt_method *ms, lm_err *err);

#endif
