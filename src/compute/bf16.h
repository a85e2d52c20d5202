/*
 * bf16.h -- bf16 products on the CPU (backend_bf16.c): the backend behind
 * --compute bf16 (oneDNN, on CPUs with AVX512_BF16 or AMX) and bf16-ref (the
 * same rounding at F32 speed, on any CPU). Products under 2^25 flops run in
 * F32 in both (backend_bf16.c: SMALL_FLOP).
 */
#ifndef LM_BF16_H
#define LM_BF16_H

#include "base/base.h"
#include "compute/backend.h"

#include <stdint.h>

enum { LM_BF16_HW = 1, LM_BF16_REF = 2 };

/* Does this CPU have the bf16 instructions oneDNN's kernels need? */
int lm_bf16_hw_supported(void);
/* Was this layermap built with oneDNN? */
int lm_bf16_have_onednn(void);
/* dst (rows, cols) dense = src (rows, cols; row stride ld) rounded to bf16
 * (nearest even; denormals to zero; NaN stays NaN). */
void lm_bf16_round(uint16_t *dst, const float *src, long rows, long cols, long ld);

/* A new bf16 backend (mode LM_BF16_HW or LM_BF16_REF); LM_EUNSUPPORTED with
 * a one-line reason when HW cannot run here. Free with lm_backend_bf16_free. */
int lm_backend_bf16_new(lm_backend **out, int mode, lm_err *err);
void lm_backend_bf16_free(lm_backend *be);
/* Products run so far and how many of them fell back to the REF (or, out of
 * memory, F32) arithmetic. */
void lm_backend_bf16_stats(const lm_backend *be, long *products, long *fallbacks);
/* Tests: make every HW product take its fallback (as if oneDNN refused it). */
void lm_backend_bf16_force_fallback(lm_backend *be, int on);
/* Tests: products of fewer than `flop` flops (2 M N K) run in F32; the
 * default is SMALL_FLOP (2^25), 0 puts every product in bf16 (so that a tiny
 * model such as stories260K exercises bf16's arithmetic). Set it before the
 * backend's first product. */
void lm_backend_bf16_set_small_flop(const lm_backend *be, double flop);

#endif
