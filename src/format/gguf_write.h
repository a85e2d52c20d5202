/*
 * gguf_write.h -- a small GGUF writer: key-values and F32 tensors, laid out
 * as llama.cpp's gguf_write_to_file lays them out (the reader's layout in
 * gguf.h): version 3, key-values in the order added, tensor infos in the
 * order added, n_dims = 1 + the last axis of size > 1 (ggml_n_dims), the data
 * section at the default alignment of 32 with each tensor padded to 32.
 *
 * The adders copy what they are given and record the first failure (out of
 * memory, a bad argument); lm_gguf_w_save reports it, so a caller adds
 * everything and checks once. The file is written atomically (base/atomic.h).
 */
#ifndef LM_GGUF_WRITE_H
#define LM_GGUF_WRITE_H

#include "base/base.h"

typedef struct lm_gguf_w lm_gguf_w;

lm_gguf_w *lm_gguf_w_new(void); /* NULL when out of memory */
void lm_gguf_w_free(lm_gguf_w *w);

void lm_gguf_w_str(lm_gguf_w *w, const char *key, const char *val);
void lm_gguf_w_u32(lm_gguf_w *w, const char *key, uint32_t val);
void lm_gguf_w_str_arr(lm_gguf_w *w, const char *key, const char *const *vals, int n);
/* An F32 tensor of shape ne[0..n_dims) (ne[0] the contiguous axis, ggml's
 * order), 1 <= n_dims <= 4, its ne[0]*...*ne[n_dims-1] values copied. */
void lm_gguf_w_f32(lm_gguf_w *w, const char *name, const int64_t *ne, int n_dims, const float *data);

/* Write the file to path (temp + rename). Errors: the first failure of an
 * adder, LM_EIO naming path. */
int lm_gguf_w_save(const lm_gguf_w *w, const char *path, lm_err *err);

#endif
