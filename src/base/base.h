/*
 * base.h -- the base layer in one include: what every other layer of the
 * library uses. Each part has its own header and source file:
 *   base/error.h   lm_fail, LM_CORRUPT, lm_nomem: one-line messages with a code
 *   base/alloc.h   lm_malloc & co. with fault injection; checked size arithmetic
 *   base/file.h    mapped and whole-file reading, page release
 *   base/atomic.h  output files written atomically
 *   base/utf8.h    the UTF-8 validator, decoding and encoding
 *   base/fmt.h     the shape formatter of messages
 *   base/misc.h    basename, thread count, clock, half precision
 *   base/json.h    JSON parsing (cJSON through lm_malloc); not included here
 */
#ifndef LM_BASE_H
#define LM_BASE_H

#include "layermap.h"

#include "base/alloc.h"
#include "base/atomic.h"
#include "base/error.h"
#include "base/file.h"
#include "base/fmt.h"
#include "base/misc.h"
#include "base/utf8.h"

/* what files including base.h have relied on */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* ---- diverging colour scale (matrix.c; shared by plot.c and lm_matrix_print) */

typedef struct lm_scale {
    double vmin, center, vmax; /* vmin <= center <= vmax, vmin < vmax */
} lm_scale;
/* Fit a scale to the finite values of ms[0..n): centre o->center or the
 * median, range o->vmin/vmax or the data's min/max widened to hold the centre.
 * o may be NULL. LM_EARG for inconsistent options, LM_ENOMEM. */
int lm_scale_fit(lm_scale *s, const lm_matrix *const *ms, int n, const lm_plot_opts *o, lm_err *err);
/* Position of v on the scale in [-1, 1]: vmin -> -1, center -> 0, vmax -> 1. */
double lm_scale_pos(const lm_scale *s, double v);
/* Blue-white-orange colour at t in [-1, 1] (sRGB, each in [0, 1]). */
void lm_colormap(double t, double rgb[3]);

#endif /* LM_BASE_H */
