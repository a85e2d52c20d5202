/*
 * scale.c -- what each method's numbers are (the quantity table), and the
 * diverging colour scale and colormap of every heatmap (figures, terminal).
 */
#include "output/scale.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Quantities                                                                */
/* ------------------------------------------------------------------------ */

/* Every matrix the library produces, by its lm_matrix.method (docs/METHODS.md
 * defines each). Losses are sums of next-token NLL in nats. */
static const lm_quantity quantities[] = {
    {"grad-weight", 0, "|W\xc2\xb7" "dL/dW|", "nats"},
    {"grad-weight-signed", 1, "W\xc2\xb7" "dL/dW", "nats"},
    {"fisher", 0, "\xce\xa3 (dL/dW)\xc2\xb2", NULL},
    {"grad-norm", 0, "||dL/dW||", NULL},
    {"act-grad", 1, "loss change, 1st order", "nats"},
    {"ig", 1, "loss change, integrated gradients", "nats"},
    {"ablate", 1, "loss change", "nats"},
    {"ablate-mean", 1, "loss change (mean ablation)", "nats"},
    {"act-sq", 0, "input energy \xce\xa3||x||\xc2\xb2", NULL},
    {"wanda", 0, "\xce\xa3 |W|\xc2\xb7||X||", NULL},
    {"diff.rel", 0, "||dW||/||W||", NULL},
    {"diff.density", 0, "fraction of entries changed", NULL},
    {"diff.cosine", 0, "cos(W_base, W_ft)", NULL},
    {"diff.rank", 0, "effective rank of dW", NULL},
    {"diff.jaccard", 0, "Jaccard of the update masks", NULL},
    {"diff.overlap", 0, "overlap coefficient of the update masks", NULL},
    {"diff.density-a", 0, "fraction of entries changed (first)", NULL},
    {"diff.density-b", 0, "fraction of entries changed (second)", NULL},
};

#define PER_PARAM " per param"

/* Length of method without a trailing " per param". */
static size_t base_len(const char *method, int *per_param) {
    size_t n = strlen(method), k = strlen(PER_PARAM);
    *per_param = n > k && !strcmp(method + n - k, PER_PARAM);
    return *per_param ? n - k : n;
}

/* See scale.h. */
const lm_quantity *lm_quantity_find(const char *method) {
    if (!method) return NULL;
    int pp;
    size_t n = base_len(method, &pp);
    for (size_t i = 0; i < sizeof quantities / sizeof quantities[0]; i++)
        if (strlen(quantities[i].method) == n && !strncmp(quantities[i].method, method, n)) return &quantities[i];
    return NULL;
}

/* 1 when some finite cell of m is negative. */
static int has_negative(const lm_matrix *m) {
    for (size_t k = 0; k < (size_t)m->n_layer * LM_N_MODULES; k++)
        if (m->v[k] < 0 && isfinite(m->v[k])) return 1;
    return 0;
}

/* See scale.h. */
int lm_matrix_is_signed(const lm_matrix *m) {
    const lm_quantity *q = lm_quantity_find(m->method);
    return q ? q->is_signed : has_negative(m);
}

/* "share of layer" etc. for a normalisation name; NULL for none. */
static const char *norm_phrase(const char *norm) {
    if (!strcmp(norm, "layer")) return "share of layer";
    if (!strcmp(norm, "module")) return "share of module";
    if (!strcmp(norm, "global")) return "share of total";
    return NULL;
}

/* See scale.h. A normalised matrix's unit is its normalisation (the
 * denominator is a sum of absolute values: a signed share keeps its sign);
 * per-param values are "per weight". */
void lm_quantity_label(char *buf, size_t n, const lm_matrix *m) {
    const lm_quantity *q = lm_quantity_find(m->method);
    int pp;
    size_t len = base_len(m->method, &pp);
    char what[128];
    if (q)
        snprintf(what, sizeof what, "%s", q->label);
    else if (len)
        snprintf(what, sizeof what, "%.*s", (int)(len < 100 ? len : 100), m->method);
    else
        snprintf(what, sizeof what, "value");
    const char *share = norm_phrase(m->norm);
    const char *unit = q ? q->unit : NULL;
    if (share)
        snprintf(buf, n, "%s%s, %s", what, pp ? " per weight" : "", share);
    else if (unit)
        snprintf(buf, n, "%s, %s%s", what, unit, pp ? " per weight" : "");
    else
        snprintf(buf, n, "%s%s", what, pp ? ", per weight" : "");
}

/* See scale.h. */
void lm_extra_label(char *buf, size_t n, const lm_matrix *m) {
    if (!strcmp(m->layer_extra_name, "block-influence"))
        snprintf(buf, n, "1 \xe2\x88\x92 cos(h_in, h_out)");
    else
        snprintf(buf, n, "%s", m->layer_extra_name[0] ? m->layer_extra_name : "per layer");
}

/* See scale.h. */
int lm_same_quantity(const lm_matrix *a, const lm_matrix *b) {
    const char *na = a->norm[0] ? a->norm : "none", *nb = b->norm[0] ? b->norm : "none";
    return !strcmp(a->method, b->method) && !strcmp(na, nb);
}

/* ------------------------------------------------------------------------ */
/* Colour scale                                                              */
/* ------------------------------------------------------------------------ */

/* qsort comparator for doubles (no NaN reaches it). */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The values a fit runs over: the cells of ms[0..n), or v[0..count) when ms
 * is NULL. */
typedef struct values {
    const lm_matrix *const *ms;
    int n;
    const double *v;
    size_t count;
} values;

static size_t vals_groups(const values *vs) { return vs->ms ? (size_t)vs->n : 1; }
static const double *vals_ptr(const values *vs, size_t g) { return vs->ms ? vs->ms[g]->v : vs->v; }
static size_t vals_len(const values *vs, size_t g) {
    return vs->ms ? (size_t)vs->ms[g]->n_layer * LM_N_MODULES : vs->count;
}

/* The fit of lm_scale_fit over vs; sym: the quantity is signed. */
static int fit(lm_scale *s, const values *vs, int sym, const lm_plot_opts *o, lm_err *err) {
    lm_plot_opts def;
    if (!o) {
        memset(&def, 0, sizeof def);
        o = &def;
    }
    if (o->has_center && !isfinite(o->center))
        return lm_fail(err, LM_EARG, "colour scale: centre %g is not a finite number", o->center);
    if (o->has_range) {
        if (!isfinite(o->vmin) || !isfinite(o->vmax) || !(o->vmin < o->vmax))
            return lm_fail(err, LM_EARG, "colour scale: need finite vmin < vmax (got %g, %g)", o->vmin, o->vmax);
        if (o->has_center && (o->center < o->vmin || o->center > o->vmax))
            return lm_fail(err, LM_EARG, "colour scale: centre %g is outside [%g, %g]", o->center, o->vmin,
                           o->vmax);
    }
    size_t count = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t g = 0; g < vals_groups(vs); g++) {
        const double *v = vals_ptr(vs, g);
        for (size_t k = 0; k < vals_len(vs, g); k++) {
            double x = v[k];
            if (!isfinite(x)) continue;
            count++;
            if (x < lo) lo = x;
            if (x > hi) hi = x;
        }
    }
    s->dmin = count ? lo : NAN;
    s->dmax = count ? hi : NAN;
    s->symmetric = 0;
    sym = sym && !o->has_center; /* an explicit centre wins */
    double c;
    if (o->has_center) {
        c = o->center;
    } else if (sym) {
        c = 0;
    } else if (count == 0) {
        c = o->has_range ? 0.5 * (o->vmin + o->vmax) : 0;
    } else {
        double *tmp = lm_malloc(count * sizeof *tmp);
        if (!tmp) return lm_nomem(err, count * sizeof *tmp, "colour scale median");
        size_t j = 0;
        for (size_t g = 0; g < vals_groups(vs); g++) {
            const double *v = vals_ptr(vs, g);
            for (size_t k = 0; k < vals_len(vs, g); k++)
                if (isfinite(v[k])) tmp[j++] = v[k];
        }
        qsort(tmp, count, sizeof *tmp, cmp_double);
        c = count % 2 ? tmp[count / 2] : 0.5 * (tmp[count / 2 - 1] + tmp[count / 2]);
        lm_free(tmp);
    }
    if (o->has_range) {
        s->vmin = o->vmin;
        s->vmax = o->vmax;
        s->center = c < s->vmin ? s->vmin : c > s->vmax ? s->vmax : c;
        s->symmetric = sym && o->vmin == -o->vmax; /* e.g. a lone --vmax X mirrored to -X */
        return LM_OK;
    }
    if (sym) { /* [-M, M]: equal magnitudes of opposite sign get mirror colours */
        double m = count ? fmax(fabs(lo), fabs(hi)) : 0;
        if (!(m > 0)) m = 1;
        s->vmin = -m;
        s->center = 0;
        s->vmax = m;
        s->symmetric = 1;
        return LM_OK;
    }
    if (count == 0) lo = hi = c;
    if (c < lo) lo = c;
    if (c > hi) hi = c;
    if (!(lo < hi)) { /* one value everywhere: a small range around it */
        double d = fabs(lo) * 0.1;
        if (!(d > 0) || !isfinite(d)) d = 1;
        lo -= d;
        hi += d;
    }
    s->vmin = lo;
    s->center = c;
    s->vmax = hi;
    return LM_OK;
}

/* See scale.h. The set is signed when any of its matrices is: then blue
 * means negative everywhere. The median runs over every finite cell of every
 * matrix. */
int lm_scale_fit(lm_scale *s, const lm_matrix *const *ms, int n, const lm_plot_opts *o, lm_err *err) {
    int sym = 0;
    for (int i = 0; i < n; i++) sym |= lm_matrix_is_signed(ms[i]);
    values vs = {.ms = ms, .n = n};
    return fit(s, &vs, sym, o, err);
}

/* See scale.h. */
int lm_scale_fit_values(lm_scale *s, const double *v, size_t count, const lm_plot_opts *o, lm_err *err) {
    values vs = {.v = v, .count = count};
    return fit(s, &vs, 0, o, err);
}

/* See scale.h: piecewise linear on each side of the centre (as a
 * two-slope norm), clipped to [-1, 1]; NaN stays NaN. */
double lm_scale_pos(const lm_scale *s, double v) {
    if (isnan(v)) return NAN;
    double t;
    if (v < s->center) {
        double den = s->center - s->vmin;
        t = den > 0 ? (v - s->center) / den : -1;
    } else if (v > s->center) {
        double den = s->vmax - s->center;
        t = den > 0 ? (v - s->center) / den : 1;
    } else {
        t = 0;
    }
    return t < -1 ? -1 : t > 1 ? 1 : t;
}

/* ------------------------------------------------------------------------ */
/* Colormap                                                                  */
/* ------------------------------------------------------------------------ */

/* sRGB component (0..1) to linear light. */
static double srgb_to_linear(double c) {
    return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4);
}

/* Linear light to sRGB component, clipped to 0..1. */
static double linear_to_srgb(double c) {
    double s = c <= 0.0031308 ? 12.92 * c : 1.055 * pow(c, 1 / 2.4) - 0.055;
    return s < 0 ? 0 : s > 1 ? 1 : s;
}

/* 0xRRGGBB to OKLab (Björn Ottosson's matrices). */
static void hex_to_oklab(unsigned hex, double lab[3]) {
    double r = srgb_to_linear(((hex >> 16) & 255) / 255.0);
    double g = srgb_to_linear(((hex >> 8) & 255) / 255.0);
    double b = srgb_to_linear((hex & 255) / 255.0);
    double l = cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b);
    double m = cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b);
    double s = cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b);
    lab[0] = 0.2104542553 * l + 0.7936177850 * m - 0.0040720468 * s;
    lab[1] = 1.9779984951 * l - 2.4285922050 * m + 0.4505937099 * s;
    lab[2] = 0.0259040371 * l + 0.7827717662 * m - 0.8086757660 * s;
}

/* OKLab to sRGB components in 0..1 (clipped). */
static void oklab_to_rgb(const double lab[3], double rgb[3]) {
    double l = lab[0] + 0.3963377774 * lab[1] + 0.2158037573 * lab[2];
    double m = lab[0] - 0.1055613458 * lab[1] - 0.0638541728 * lab[2];
    double s = lab[0] - 0.0894841775 * lab[1] - 1.2914855480 * lab[2];
    l = l * l * l;
    m = m * m * m;
    s = s * s * s;
    rgb[0] = linear_to_srgb(4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s);
    rgb[1] = linear_to_srgb(-1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s);
    rgb[2] = linear_to_srgb(-0.0041960863 * l - 0.7034186147 * m + 1.7076147010 * s);
}

/* The two halves of the colormap, from the centre outwards: ColorBrewer's
 * RdBu blues and PuOr oranges around the same light grey. */
static const unsigned cmap_blue[] = {0xf7f7f7, 0xd1e5f0, 0x92c5de, 0x4393c3, 0x2166ac};
static const unsigned cmap_orange[] = {0xf7f7f7, 0xfee0b6, 0xfdb863, 0xe66101};

/* See scale.h. Each half is interpolated in OKLab between its stops, and
 * the stops are placed by their lightness so that lightness falls linearly
 * from the centre to either end: equal steps of t look like equal steps. */
void lm_colormap(double t, double rgb[3]) {
    if (isnan(t)) t = 0;
    if (t < -1) t = -1;
    if (t > 1) t = 1;
    const unsigned *stops = t < 0 ? cmap_blue : cmap_orange;
    int ns = t < 0 ? (int)(sizeof cmap_blue / sizeof cmap_blue[0]) : (int)(sizeof cmap_orange / sizeof cmap_orange[0]);
    double u = fabs(t);
    double lab[5][3];
    for (int i = 0; i < ns; i++) hex_to_oklab(stops[i], lab[i]);
    double l0 = lab[0][0], l1 = lab[ns - 1][0];
    double prev = 0;
    for (int i = 1; i < ns; i++) {
        double pos = i == ns - 1 ? 1 : (l0 - lab[i][0]) / (l0 - l1);
        if (u <= pos || i == ns - 1) {
            double f = pos > prev ? (u - prev) / (pos - prev) : 1;
            if (f < 0) f = 0;
            if (f > 1) f = 1;
            double c[3];
            for (int k = 0; k < 3; k++) c[k] = lab[i - 1][k] + f * (lab[i][k] - lab[i - 1][k]);
            oklab_to_rgb(c, rgb);
            return;
        }
        prev = pos;
    }
}

