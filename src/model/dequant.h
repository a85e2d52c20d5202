/*
 * dequant.h -- block formats of GGUF and their dequantization to F32.
 *
 * Each dequantizer turns k elements (k a multiple of the block size) of one
 * row into floats, exactly as ggml defines the format (ggml-quants.c):
 *   void lm_dequant_<type>(const void *src, float *dst, int64_t k);
 * Block sizes are fixed by static_asserts in dequant.c.
 */
#ifndef LM_DEQUANT_H
#define LM_DEQUANT_H

#include "base/base.h"

typedef void (*lm_dequant_fn)(const void *src, float *dst, int64_t k);
/* The row dequantizer of a dtype (F32/F16/BF16 included). */
lm_dequant_fn lm_dequant_fn_for(lm_dtype t);
/* Bytes of one row of 'cols' elements; 0 if cols is not a multiple of the block size. */
size_t lm_dtype_row_bytes(lm_dtype t, int64_t cols);

#endif
