/*
 * scale.h -- what a matrix's numbers are (quantity, unit, signed or not) and
 * the diverging colour scale that draws them, shared by the figures (plot.c)
 * and the terminal heatmap (matrix.c).
 *
 * A signed quantity (a loss change, a signed Taylor term) is drawn centred on
 * 0 with a symmetric range [-M, M], M = max |value|, so that blue always means
 * negative and white zero. A magnitude (an energy, a norm, a fraction) is drawn
 * centred on its median over the data's range, so that its spread shows.
 */
#ifndef LM_OUTPUT_SCALE_H
#define LM_OUTPUT_SCALE_H

#include "base/base.h"

/* ---- quantities --------------------------------------------------------- */

typedef struct lm_quantity {
    const char *method; /* lm_matrix.method as the library writes it: "grad-weight", "diff.rel" */
    int is_signed;      /* 1: the sign means something (centre 0, symmetric range) */
    const char *label;  /* what the number is, for the colour bar: "|W·dL/dW|" */
    const char *unit;   /* "nats", or NULL (a ratio, a count, arbitrary units) */
} lm_quantity;

/* The table entry of a method name (a trailing " per param", which
 * `attribute --per-param` appends, is ignored); NULL for a name not in it. */
const lm_quantity *lm_quantity_find(const char *method);
/* 1 when m is drawn as a signed quantity: its method is signed in the table,
 * or its method is unknown and it has a negative value. */
int lm_matrix_is_signed(const lm_matrix *m);
/* Colour-bar label of m: "<quantity>, <unit or normalisation>", e.g.
 * "loss change, nats", "|W·dL/dW|, share of layer", "||dW||/||W||". An
 * unknown method gives its own name (or "value"). */
void lm_quantity_label(char *buf, size_t n, const lm_matrix *m);
/* Colour-bar label of a matrix's per-layer vector (layer_extra). */
void lm_extra_label(char *buf, size_t n, const lm_matrix *m);
/* 1 when a and b show the same quantity (method, per-param and
 * normalisation), so that one colour scale compares them fairly. */
int lm_same_quantity(const lm_matrix *a, const lm_matrix *b);

/* ---- colour scale ------------------------------------------------------- */

typedef struct lm_scale {
    double vmin, center, vmax; /* vmin <= center <= vmax, vmin < vmax */
    double dmin, dmax;         /* the data's finite range (NaN when it has no finite value) */
    int symmetric;             /* 1: a signed quantity centred on 0 with vmin = -vmax (fitted, or
                                * a range the caller gave that way) */
} lm_scale;

/* Fit one scale to the finite values of ms[0..n). o may be NULL. Centre:
 * o->center if given; else 0 when any matrix is signed (lm_matrix_is_signed),
 * with the range [-M, M] unless o gives one; else the median of every finite
 * cell. Range: o->vmin/vmax, or the data's range widened to hold the centre.
 * LM_EARG for inconsistent options, LM_ENOMEM. */
int lm_scale_fit(lm_scale *s, const lm_matrix *const *ms, int n, const lm_plot_opts *o, lm_err *err);
/* The same for a plain vector v[0..count) of a magnitude (median centre). */
int lm_scale_fit_values(lm_scale *s, const double *v, size_t count, const lm_plot_opts *o, lm_err *err);
/* Position of v on the scale in [-1, 1]: vmin -> -1, center -> 0, vmax -> 1. */
double lm_scale_pos(const lm_scale *s, double v);
/* Blue-white-orange colour at t in [-1, 1] (sRGB, each in [0, 1]). */
void lm_colormap(double t, double rgb[3]);

#endif /* LM_OUTPUT_SCALE_H */
