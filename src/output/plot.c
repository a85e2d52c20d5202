/*
 * plot.c -- heatmap figures of attribution matrices with cairo: PNG (300 dpi),
 * SVG and PDF, one matrix or a grid of several with one shared colour scale.
 *
 * Figure anatomy (sizes in points, 1/72 in; a 7-module heatmap is about 3.5 in
 * wide, a single-column figure of a paper):
 *
 *               title: model – method (norm: ...)
 *           ┌──────────────────────────────┐   ×10⁻³
 *         0 ┤ ▇▇ ▇▇ ▇▇ ▇▇   ▇▇ ▇▇ ▇▇        │   ▇ ┬ 4
 *   layer 3 ┤ ▇▇ ▇▇ ▇▇ ▇▇   ▇▇ ▇▇ ▇▇        │   ▇ ┼ 2      colour bar with
 *         6 ┤ ...  (layer 0 at the top, as in the CSV)  ▇ ┼ 0      1-2-5 ticks
 *             attn.q ... attn.o  mlp.up ... mlp.gate (rotated 45°)
 *
 * Rendering runs twice over the same code (render()): a measuring pass that
 * only collects the bounding box of everything it would draw, then the
 * drawing pass translated so that the box sits inside a small margin. So the
 * page is always exactly as large as its content, whatever the labels.
 */
#include "base/base.h"

#include <cairo.h>
#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <strings.h>

/* Sanitizer builds: fontconfig (under cairo's text) keeps process-wide caches
 * that it never frees; LeakSanitizer would report them at exit of every
 * program that draws a figure. They are not ours, so they are suppressed. */
#if defined(__SANITIZE_ADDRESS__)
#define LM_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LM_LSAN 1
#endif
#endif
#ifdef LM_LSAN
const char *__lsan_default_suppressions(void);
/* The suppression list LeakSanitizer asks for at start-up. */
const char *__lsan_default_suppressions(void) {
    return "leak:libfontconfig\n";
}
#endif

/* ------------------------------------------------------------------------ */
/* Style                                                                     */
/* ------------------------------------------------------------------------ */

#define FONT "DejaVu Sans"
#define FS_TITLE 10.0  /* single figure title, grid super-title */
#define FS_PANEL 9.0   /* panel titles in a grid */
#define FS_LABEL 9.0   /* axis label "layer" */
#define FS_TICK 8.0    /* tick labels */
#define CELL_W 22.0    /* heatmap cell width */
#define CELL_H_MAX 20.0
#define CELL_H_MIN 2.0
#define HEAT_H_BUDGET 300.0 /* heatmap height for many layers */
#define GROUP_GAP 3.0  /* extra space between attention and MLP columns */
#define SEP 0.75       /* white separator between cells */
#define TICK_LEN 2.5
#define TICK_PAD 2.0
#define CBAR_W 9.0
#define CBAR_MIN_H 80.0
#define MARGIN 6.0
#define PNG_DPI 300.0
#define PNG_MAX_PX 32000.0

static const double ink[3] = {0.13, 0.13, 0.13};       /* text */
static const double tick_ink[3] = {0.35, 0.35, 0.35};  /* tick marks */
static const double nan_fill[3] = {0.90, 0.90, 0.90};  /* cells without a value */
static const double nan_hatch[3] = {0.62, 0.62, 0.62};

/* See layermap.h: automatic title, labels, centre and range; one row. */
void lm_plot_opts_default(lm_plot_opts *o) {
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------------------ */
/* Canvas: draw, or only measure                                             */
/* ------------------------------------------------------------------------ */

typedef struct canvas {
    cairo_t *cr;            /* drawing context, or a 1x1 one when measuring */
    int draw;               /* 0: measuring pass (bounding box only) */
    double x0, y0, x1, y1;  /* bounding box of everything placed so far */
} canvas;

/* Grow the bounding box by a point. */
static void cv_grow(canvas *cv, double x, double y) {
    if (x < cv->x0) cv->x0 = x;
    if (x > cv->x1) cv->x1 = x;
    if (y < cv->y0) cv->y0 = y;
    if (y > cv->y1) cv->y1 = y;
}

/* Select the figure font at a size. */
static void cv_font(canvas *cv, double size, int bold) {
    cairo_select_font_face(cv->cr, FONT, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cv->cr, size);
}

/* s itself when it is valid UTF-8 (cairo refuses anything else), else a copy
 * in buf with '?' for each bad byte. */
static const char *valid_text(const char *s, char *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int k = lm_utf8_len(p);
        if (!k) break;
        p += k;
    }
    if (!*p) return s;
    size_t j = 0;
    for (p = (const unsigned char *)s; *p && j + 5 < n;) {
        int k = lm_utf8_len(p);
        if (!k) {
            buf[j++] = '?';
            p++;
        } else {
            memcpy(buf + j, p, (size_t)k);
            j += (size_t)k;
            p += k;
        }
    }
    buf[j] = 0;
    return buf;
}

/* Advance width of s in the figure font. */
static double cv_text_w(canvas *cv, const char *s, double size, int bold) {
    cairo_text_extents_t te;
    char buf[1024];
    cv_font(cv, size, bold);
    cairo_text_extents(cv->cr, valid_text(s, buf, sizeof buf), &te);
    return te.x_advance;
}

enum { VA_BASE, VA_MIDDLE, VA_TOP };

/* Place text s with its anchor at (x, y), rotated by angle (radians,
 * clockwise on the page). ha: 0 left, 0.5 centre, 1 right end at the anchor;
 * va: the anchor is the baseline, the middle of a digit, or the cap top. */
static void cv_text(canvas *cv, const char *s, double x, double y, double size, int bold, double angle, double ha,
                    int va, const double rgb[3]) {
    double w = cv_text_w(cv, s, size, bold);
    double dy = va == VA_MIDDLE ? 0.36 * size : va == VA_TOP ? 0.74 * size : 0;
    double lx0 = -ha * w, lx1 = (1 - ha) * w, ly0 = dy - 0.76 * size, ly1 = dy + 0.24 * size;
    double c = cos(angle), sn = sin(angle);
    double cx[4] = {lx0, lx1, lx0, lx1}, cy[4] = {ly0, ly0, ly1, ly1};
    for (int i = 0; i < 4; i++) cv_grow(cv, x + cx[i] * c - cy[i] * sn, y + cx[i] * sn + cy[i] * c);
    if (!cv->draw) return;
    cairo_save(cv->cr);
    cairo_translate(cv->cr, x, y);
    cairo_rotate(cv->cr, angle);
    cairo_move_to(cv->cr, lx0, dy);
    cairo_set_source_rgb(cv->cr, rgb[0], rgb[1], rgb[2]);
    char buf[1024];
    cairo_show_text(cv->cr, valid_text(s, buf, sizeof buf));
    cairo_new_path(cv->cr);
    cairo_restore(cv->cr);
}

/* Fill a rectangle. */
static void cv_rect(canvas *cv, double x, double y, double w, double h, const double rgb[3]) {
    cv_grow(cv, x, y);
    cv_grow(cv, x + w, y + h);
    if (!cv->draw || w <= 0 || h <= 0) return;
    cairo_set_source_rgb(cv->cr, rgb[0], rgb[1], rgb[2]);
    cairo_rectangle(cv->cr, x, y, w, h);
    cairo_fill(cv->cr);
}

/* A hairline from (x0, y0) to (x1, y1). */
static void cv_line(canvas *cv, double x0, double y0, double x1, double y1, double width, const double rgb[3]) {
    cv_grow(cv, x0, y0);
    cv_grow(cv, x1, y1);
    if (!cv->draw) return;
    cairo_set_source_rgb(cv->cr, rgb[0], rgb[1], rgb[2]);
    cairo_set_line_width(cv->cr, width);
    cairo_set_line_cap(cv->cr, CAIRO_LINE_CAP_BUTT);
    cairo_move_to(cv->cr, x0, y0);
    cairo_line_to(cv->cr, x1, y1);
    cairo_stroke(cv->cr);
}

/* A cell without a value: light grey with diagonal hatching. */
static void cv_nan_cell(canvas *cv, double x, double y, double w, double h) {
    cv_rect(cv, x, y, w, h, nan_fill);
    if (!cv->draw || w <= 0 || h <= 0) return;
    cairo_save(cv->cr);
    cairo_rectangle(cv->cr, x, y, w, h);
    cairo_clip(cv->cr);
    cairo_set_source_rgb(cv->cr, nan_hatch[0], nan_hatch[1], nan_hatch[2]);
    cairo_set_line_width(cv->cr, 0.45);
    for (double d = -h; d < w; d += 2.6) {
        cairo_move_to(cv->cr, x + d, y + h);
        cairo_line_to(cv->cr, x + d + h, y);
    }
    cairo_stroke(cv->cr);
    cairo_restore(cv->cr);
}

/* ------------------------------------------------------------------------ */
/* Ticks and labels                                                          */
/* ------------------------------------------------------------------------ */

/* Layer label step showing about 10 labels: n/10 rounded up, then up to the
 * next of 1..6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, ... */
static int auto_label_step(int n) {
    int raw = (n + 9) / 10;
    if (raw <= 6) return raw < 1 ? 1 : raw;
    static const int mant[] = {8, 10, 12, 15, 20, 25, 30, 40, 50, 60};
    for (long scale = 1; scale <= 100000000; scale *= 10)
        for (int i = 0; i < 10; i++)
            if ((long)mant[i] * scale >= raw) return (int)((long)mant[i] * scale);
    return raw;
}

#define MAX_TICKS 16

/* "Nice" colour-bar ticks inside [lo, hi]: multiples of 1, 2 or 5 x 10^k,
 * 4 to 7 of them, closest to 5-6; when no such step gives 4 to 7 ticks,
 * 2.5 x 10^k may. Returns the count. */
static int nice_ticks(double lo, double hi, double ticks[MAX_TICKS], double *step_out) {
    double span = hi - lo;
    if (!(span > 0) || !isfinite(span)) {
        ticks[0] = lo;
        *step_out = fabs(lo) > 0 ? fabs(lo) : 1;
        return 1;
    }
    static const double mult[] = {1, 2, 5, 2.5};
    int e0 = (int)floor(log10(span));
    double best = 0;
    int best_n = 0;
    double best_score = 1e300;
    for (int e = e0 - 2; e <= e0 + 1; e++) {
        for (int i = 0; i < 4; i++) {
            double step = mult[i] * pow(10, e);
            double k0 = ceil(lo / step - 1e-9), k1 = floor(hi / step + 1e-9);
            int cnt = (int)(k1 - k0 + 1);
            if (cnt < 2 || cnt > MAX_TICKS) continue;
            double score = fabs(cnt - 5.5) + (cnt >= 4 && cnt <= 7 ? 0 : 10) + (i == 3 ? 5 : 0);
            if (score < best_score) {
                best_score = score;
                best = step;
                best_n = cnt;
            }
        }
    }
    if (!best_n) { /* cannot happen for a finite span, but stay safe */
        ticks[0] = lo;
        ticks[1] = hi;
        *step_out = span;
        return 2;
    }
    double k0 = ceil(lo / best - 1e-9);
    for (int i = 0; i < best_n; i++) {
        double v = (k0 + i) * best;
        if (fabs(v) < best * 1e-9) v = 0;
        ticks[i] = v;
    }
    *step_out = best;
    return best_n;
}

/* Power of ten factored out of the colour-bar labels (0 for plain numbers):
 * used when the largest magnitude is below 0.01 or at least 10^4. */
static int tick_exponent(double lo, double hi) {
    double a = fmax(fabs(lo), fabs(hi));
    if (!(a > 0) || !isfinite(a)) return 0;
    if (a < 1e-2 || a >= 1e4) return (int)floor(log10(a));
    return 0;
}

/* Tick label of v / 10^e with the decimals its step needs; a leading minus is
 * the typographic U+2212. */
static void tick_label(char *buf, size_t n, double v, double step, int e) {
    double scale = pow(10, e);
    double sv = v / scale, ss = step / scale;
    int dec = 0; /* the fewest decimals that show the step exactly */
    while (dec < 12 && fabs(ss * pow(10, dec) - round(ss * pow(10, dec))) > 1e-6 * ss * pow(10, dec)) dec++;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*f", dec, sv);
    if (tmp[0] == '-') {
        int all_zero = 1;
        for (const char *p = tmp + 1; *p; p++)
            if (*p != '0' && *p != '.') all_zero = 0;
        if (all_zero)
            snprintf(buf, n, "%s", tmp + 1);
        else
            snprintf(buf, n, "\xe2\x88\x92%s", tmp + 1);
    } else {
        snprintf(buf, n, "%s", tmp);
    }
}

/* "×10⁻³" for exponent e, in superscript characters. */
static void exponent_label(char *buf, size_t n, int e) {
    static const char *const sup[] = {"\xe2\x81\xb0", "\xc2\xb9", "\xc2\xb2", "\xc2\xb3", "\xe2\x81\xb4",
                                      "\xe2\x81\xb5", "\xe2\x81\xb6", "\xe2\x81\xb7", "\xe2\x81\xb8", "\xe2\x81\xb9"};
    char digits[16];
    snprintf(digits, sizeof digits, "%d", e < 0 ? -e : e);
    size_t k = (size_t)snprintf(buf, n, "\xc3\x97" "10%s", e < 0 ? "\xe2\x81\xbb" : "");
    for (const char *p = digits; *p && k < n; p++) k += (size_t)snprintf(buf + k, n - k, "%s", sup[*p - '0']);
}

/* Default title of one matrix: "model – method (norm: layer)". */
static void default_title(char *buf, size_t n, const lm_matrix *m) {
    const char *model = m->model, *method = m->method;
    if (!model[0] && !method[0])
        snprintf(buf, n, "matrix");
    else if (!method[0])
        snprintf(buf, n, "%s", model);
    else if (!model[0])
        snprintf(buf, n, "%s", method);
    else
        snprintf(buf, n, "%s \xe2\x80\x93 %s", model, method);
    if (m->norm[0] && strcmp(m->norm, "none")) {
        size_t k = strlen(buf);
        if (k < n) snprintf(buf + k, n - k, " (norm: %s)", m->norm);
    }
}

/* Cut buf at a UTF-8 character boundary and end it with "…" so that it fits
 * width w at this size (buf holds 1024 bytes). */
static void truncate_to(canvas *cv, char *buf, double size, int bold, double w) {
    size_t len = strlen(buf);
    if (cv_text_w(cv, buf, size, bold) <= w) return;
    while (len > 0) {
        len--;
        while (len > 0 && ((unsigned char)buf[len] & 0xC0) == 0x80) len--; /* continuation byte */
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%.*s\xe2\x80\xa6", (int)len, buf);
        if (cv_text_w(cv, tmp, size, bold) <= w || len == 0) {
            snprintf(buf, 1024, "%s", tmp);
            return;
        }
    }
}

/* Fit a title into width w: shrink down to 70% of its size, then cut it.
 * Returns the size to use. */
static double fit_title(canvas *cv, char *buf, double size, int bold, double w) {
    double s = size;
    while (s > 0.7 * size && cv_text_w(cv, buf, s, bold) > w) s -= 0.25;
    truncate_to(cv, buf, s, bold, w);
    return s;
}

/* Lay a figure title out in width w: one line, shrunk to 85% of size if that
 * is enough; else two lines split at the space that makes the longer line
 * shortest (shrunk to 80% if needed; the second line cut with "…" as a last
 * resort). Fills l1, l2 (empty for one line) and *fs; returns the line count. */
static int layout_title(canvas *cv, const char *title, double size, double w, char l1[1024], char l2[1024],
                        double *fs) {
    snprintf(l1, 1024, "%s", title);
    l2[0] = 0;
    for (double s = size; s >= 0.85 * size - 1e-9; s -= 0.25) {
        if (cv_text_w(cv, l1, s, 0) <= w) {
            *fs = s;
            return 1;
        }
    }
    size_t n = strlen(l1);
    double best = INFINITY;
    size_t cut = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        if (l1[i] != ' ') continue;
        char a[1024];
        snprintf(a, sizeof a, "%.*s", (int)i, l1);
        double m = fmax(cv_text_w(cv, a, size, 0), cv_text_w(cv, l1 + i + 1, size, 0));
        if (m < best) {
            best = m;
            cut = i;
        }
    }
    if (!cut) { /* one word: shrink, then cut */
        *fs = fit_title(cv, l1, size, 0, w);
        return 1;
    }
    snprintf(l2, 1024, "%s", l1 + cut + 1);
    l1[cut] = 0;
    double s = size;
    while (s > 0.8 * size && fmax(cv_text_w(cv, l1, s, 0), cv_text_w(cv, l2, s, 0)) > w) s -= 0.25;
    if (fmax(cv_text_w(cv, l1, s, 0), cv_text_w(cv, l2, s, 0)) > w) {
        /* too long for two balanced lines: fill the first, cut the second */
        char all[2 * 1024 + 2]; /* l1 and l2 are halves of one title, but each may be 1023 bytes */
        snprintf(all, sizeof all, "%s %s", l1, l2);
        size_t fill = 0;
        for (size_t i = 1; all[i]; i++) {
            if (all[i] != ' ') continue;
            char a[1024];
            snprintf(a, sizeof a, "%.*s", (int)i, all);
            if (cv_text_w(cv, a, s, 0) <= w) fill = i;
        }
        if (fill) {
            snprintf(l1, 1024, "%.*s", (int)fill, all);
            snprintf(l2, 1024, "%s", all + fill + 1);
        }
        truncate_to(cv, l1, s, 0, w);
        truncate_to(cv, l2, s, 0, w);
    }
    *fs = s;
    return 2;
}

/* ------------------------------------------------------------------------ */
/* The figure                                                                */
/* ------------------------------------------------------------------------ */

typedef struct figure {
    const lm_matrix *const *ms;
    int n;
    const lm_plot_opts *o;
    lm_scale sc;
    int cols, rows;   /* grid */
    int max_layers;
    double cell_h;
    int any_nan;
} figure;

/* Left edge of column c inside a heatmap. */
static double col_x(int c) {
    return c * CELL_W + (c >= LM_MOD_UP ? GROUP_GAP : 0);
}

/* Everything on the page, placed in figure coordinates; the caller translates
 * so that the bounding box starts at the margin. */
static void render(canvas *cv, const figure *fg) {
    const lm_plot_opts *o = fg->o;
    const double heat_w = col_x(LM_N_MODULES - 1) + CELL_W;
    const double ch = fg->cell_h;
    const double c45 = cos(M_PI / 4), s45 = sin(M_PI / 4);
    char buf[1024];

    /* Module labels under the heatmap, rotated 45°: how far down and left. */
    double xlab_down = 0, xlab_left = 0;
    for (int c = 0; c < LM_N_MODULES; c++) {
        double w = cv_text_w(cv, lm_module_names[c], FS_TICK, 0);
        double down = w * s45 + 0.5 * FS_TICK * c45;
        if (down > xlab_down) xlab_down = down;
        double left = w * c45 + 0.5 * FS_TICK * s45 - (col_x(c) + 0.5 * CELL_W);
        if (left > xlab_left) xlab_left = left;
    }
    xlab_down += TICK_LEN + TICK_PAD;

    /* Layer labels: steps and the widest label of any panel. */
    double ylab_w = 0, ylab_fs = FS_TICK;
    for (int i = 0; i < fg->n; i++) {
        int nl = fg->ms[i]->n_layer;
        int step = o->label_step > 0 ? o->label_step : auto_label_step(nl);
        double fs = fmin(FS_TICK, fmax(4.0, step * ch * 0.95));
        if (fs < ylab_fs) ylab_fs = fs;
        for (int l = 0; l < nl; l += step) {
            snprintf(buf, sizeof buf, "%d", l);
            double w = cv_text_w(cv, buf, FS_TICK, 0);
            if (w > ylab_w) ylab_w = w;
        }
    }
    ylab_w *= ylab_fs / FS_TICK;
    const double axis_label_gap = 3.0;
    double left_space = TICK_LEN + TICK_PAD + ylab_w + axis_label_gap + FS_LABEL;
    if (xlab_left > left_space) left_space = xlab_left;
    const double hgap = 12.0, vgap = 8.0;
    const double pitch_x = left_space + heat_w + hgap;

    /* Colour bar ticks and a factored-out power of ten. */
    double ticks[MAX_TICKS], tstep;
    int nt = nice_ticks(fg->sc.vmin, fg->sc.vmax, ticks, &tstep);
    int texp = tick_exponent(fg->sc.vmin, fg->sc.vmax);
    char expl[32] = "";
    if (texp) exponent_label(expl, sizeof expl, texp);
    double cbar_x = (fg->cols - 1) * pitch_x + left_space + heat_w + 12.0;

    /* Right end of the colour bar's labels: the figure's content spans
     * [0, content_r], and titles are kept inside it. */
    double tick_w = 0;
    for (int i = 0; i < nt; i++) {
        tick_label(buf, sizeof buf, ticks[i], tstep, texp);
        tick_w = fmax(tick_w, cv_text_w(cv, buf, FS_TICK, 0));
    }
    double content_r = cbar_x + CBAR_W + TICK_LEN + TICK_PAD + tick_w;

    /* Figure title (one matrix) or super-title (grid, only when given):
     * centred over the heatmap(s), wrapped to two lines when too long. */
    int single = fg->n == 1;
    double y = 0;
    char l1[1024], l2[1024];
    double title_right = -INFINITY; /* right end of the lowest title line */
    if (single || (o->title && o->title[0])) {
        if (o->title && o->title[0])
            snprintf(buf, sizeof buf, "%s", o->title);
        else
            default_title(buf, sizeof buf, fg->ms[0]);
        double fs;
        int nl = layout_title(cv, buf, FS_TITLE, content_r, l1, l2, &fs);
        double cx = single ? left_space + 0.5 * heat_w : 0.5 * (fg->cols * pitch_x - hgap);
        for (int k = 0; k < nl; k++) {
            const char *line = k ? l2 : l1;
            double half = 0.5 * cv_text_w(cv, line, fs, 0), tx = cx;
            if (tx + half > content_r) tx = content_r - half;
            if (tx - half < 0) tx = half;
            cv_text(cv, line, tx, y, fs, 0, 0, 0.5, VA_TOP, ink);
            title_right = tx + half;
            if (k + 1 < nl) y += fs * 1.25;
        }
        y += single ? fs * 1.45 : fs * 1.6;
    }
    /* the exponent label sits above the colour bar: keep it clear of a title */
    double title_band = single ? 0 : FS_PANEL * 1.45;
    if (expl[0]) {
        if (single && title_right > cbar_x - 4) title_band += FS_TICK * 1.3;
        if (!single) title_band = fmax(title_band, FS_TICK * 1.5);
    }

    double cbar_top = 0, cbar_bot = 0;
    for (int r = 0; r < fg->rows; r++) {
        double heat_top = y + title_band, row_h = 0;
        for (int c = 0; c < fg->cols; c++) {
            int i = r * fg->cols + c;
            if (i >= fg->n) break;
            const lm_matrix *m = fg->ms[i];
            double hx = c * pitch_x + left_space;
            double hh = m->n_layer * ch;
            if (hh > row_h) row_h = hh;

            /* grid: panel title, centred over the heatmap, kept in the panel */
            if (!single) {
                default_title(buf, sizeof buf, m);
                double tfs = fit_title(cv, buf, FS_PANEL, 0, left_space + heat_w);
                double tx = hx + 0.5 * heat_w, tw = cv_text_w(cv, buf, tfs, 0);
                if (tx - 0.5 * tw < hx - left_space) tx = hx - left_space + 0.5 * tw;
                cv_text(cv, buf, tx, y, tfs, 0, 0, 0.5, VA_TOP, ink);
            }

            /* cells: white separators between them, wider between attention and MLP */
            double gy = ch >= 6 ? SEP : ch >= 3 ? 0.4 : 0;
            for (int l = 0; l < m->n_layer; l++) {
                for (int k = 0; k < LM_N_MODULES; k++) {
                    double v = m->v[(size_t)l * LM_N_MODULES + (size_t)k];
                    double x0 = hx + col_x(k) + 0.5 * SEP, y0 = heat_top + l * ch + 0.5 * gy;
                    if (isnan(v)) {
                        cv_nan_cell(cv, x0, y0, CELL_W - SEP, ch - gy);
                    } else {
                        double rgb[3];
                        lm_colormap(lm_scale_pos(&fg->sc, v), rgb);
                        cv_rect(cv, x0, y0, CELL_W - SEP, ch - gy, rgb);
                    }
                }
            }

            /* layer ticks and labels; "layer" on the first column */
            int step = o->label_step > 0 ? o->label_step : auto_label_step(m->n_layer);
            for (int l = 0; l < m->n_layer; l += step) {
                double yc = heat_top + (l + 0.5) * ch;
                cv_line(cv, hx - TICK_LEN, yc, hx, yc, 0.5, tick_ink);
                snprintf(buf, sizeof buf, "%d", l);
                cv_text(cv, buf, hx - TICK_LEN - TICK_PAD, yc, ylab_fs, 0, 0, 1, VA_MIDDLE, ink);
            }
            if (c == 0)
                cv_text(cv, "layer", hx - TICK_LEN - TICK_PAD - ylab_w - axis_label_gap - 0.5 * FS_LABEL,
                        heat_top + 0.5 * hh, FS_LABEL, 0, -M_PI / 2, 0.5, VA_MIDDLE, ink);

            /* module ticks and rotated labels */
            double hb = heat_top + hh;
            for (int k = 0; k < LM_N_MODULES; k++) {
                double xc = hx + col_x(k) + 0.5 * CELL_W;
                cv_line(cv, xc, hb, xc, hb + TICK_LEN, 0.5, tick_ink);
                cv_text(cv, lm_module_names[k], xc + 0.5 * FS_TICK * s45 * 0.3, hb + TICK_LEN + TICK_PAD, FS_TICK,
                        0, -M_PI / 4, 1, VA_MIDDLE, ink);
            }
        }
        if (r == 0) cbar_top = heat_top;
        cbar_bot = heat_top + row_h;
        y = heat_top + row_h + xlab_down + vgap;
    }

    /* colour bar: value-linear, white at the centre */
    if (cbar_bot - cbar_top < CBAR_MIN_H) cbar_bot = cbar_top + CBAR_MIN_H;
    double bh = cbar_bot - cbar_top, span = fg->sc.vmax - fg->sc.vmin;
    cv_grow(cv, cbar_x, cbar_top);
    cv_grow(cv, cbar_x + CBAR_W, cbar_bot);
    if (cv->draw) {
        cairo_pattern_t *pat = cairo_pattern_create_linear(0, cbar_bot, 0, cbar_top);
        const int per_side = 32;
        for (int side = 0; side < 2; side++) {
            double a = side ? fg->sc.center : fg->sc.vmin, b = side ? fg->sc.vmax : fg->sc.center;
            if (!(b > a)) continue;
            for (int i = 0; i <= per_side; i++) {
                double v = a + (b - a) * i / per_side, rgb[3];
                lm_colormap(lm_scale_pos(&fg->sc, v), rgb);
                cairo_pattern_add_color_stop_rgb(pat, (v - fg->sc.vmin) / span, rgb[0], rgb[1], rgb[2]);
            }
        }
        cairo_set_source(cv->cr, pat);
        cairo_rectangle(cv->cr, cbar_x, cbar_top, CBAR_W, bh);
        cairo_fill(cv->cr);
        cairo_pattern_destroy(pat);
        cairo_set_source_rgb(cv->cr, tick_ink[0], tick_ink[1], tick_ink[2]);
        cairo_set_line_width(cv->cr, 0.4);
        cairo_rectangle(cv->cr, cbar_x, cbar_top, CBAR_W, bh);
        cairo_stroke(cv->cr);
    }
    for (int i = 0; i < nt; i++) {
        double ty = cbar_bot - (ticks[i] - fg->sc.vmin) / span * bh;
        cv_line(cv, cbar_x + CBAR_W, ty, cbar_x + CBAR_W + TICK_LEN, ty, 0.5, tick_ink);
        tick_label(buf, sizeof buf, ticks[i], tstep, texp);
        cv_text(cv, buf, cbar_x + CBAR_W + TICK_LEN + TICK_PAD, ty, FS_TICK, 0, 0, 0, VA_MIDDLE, ink);
    }
    if (expl[0]) cv_text(cv, expl, cbar_x, cbar_top - 0.5 * FS_TICK - 3, FS_TICK, 0, 0, 0, VA_BASE, ink);

    /* legend for cells without a value */
    if (fg->any_nan) {
        double ly = cbar_bot + 8;
        cv_nan_cell(cv, cbar_x, ly, CBAR_W, CBAR_W);
        cv_text(cv, "no value", cbar_x + CBAR_W + TICK_PAD + 1, ly + 0.5 * CBAR_W, FS_TICK - 1, 0, 0, 0, VA_MIDDLE,
                ink);
    }
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct sink {
    FILE *f;
    int failed;
    int errnum; /* errno of the first failed write */
} sink;

/* cairo stream callback: append to the atomic temp file. A failure makes
 * cairo stop writing and report CAIRO_STATUS_WRITE_ERROR. */
static cairo_status_t sink_write(void *closure, const unsigned char *data, unsigned int length) {
    sink *s = closure;
    if (s->failed) return CAIRO_STATUS_WRITE_ERROR;
    errno = 0;
    if (fwrite(data, 1, length, s->f) != length) {
        s->failed = 1;
        s->errnum = errno ? errno : EIO;
        return CAIRO_STATUS_WRITE_ERROR;
    }
    return CAIRO_STATUS_SUCCESS;
}

/* Font options that keep text metrics independent of the output resolution
 * (so the measuring pass and the drawing pass agree). */
static void set_font_options(cairo_t *cr) {
    cairo_font_options_t *fo = cairo_font_options_create();
    cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
    cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_NONE);
    cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
    cairo_set_font_options(cr, fo);
    cairo_font_options_destroy(fo);
}

/* cairo's status as an lm error for path. */
static int cairo_fail(lm_err *err, const char *path, cairo_status_t st) {
    int code = st == CAIRO_STATUS_NO_MEMORY ? LM_ENOMEM : LM_EIO;
    return lm_fail(err, code, "%s: cairo: %s", path, cairo_status_to_string(st));
}

enum { FMT_PNG, FMT_SVG, FMT_PDF };

/* See layermap.h. */
int lm_plot_write(const lm_matrix *const *ms, int n, const lm_plot_opts *o, const char *path, lm_err *err) {
    lm_plot_opts def;
    if (!o) {
        lm_plot_opts_default(&def);
        o = &def;
    }
    if (!path || !*path) return lm_fail(err, LM_EARG, "plot: no output path");
    if (!ms || n < 1) return lm_fail(err, LM_EARG, "%s: plot: no matrix to draw", path);
    for (int i = 0; i < n; i++)
        if (!ms[i] || ms[i]->n_layer < 1 || !ms[i]->v)
            return lm_fail(err, LM_EARG, "%s: plot: matrix %d is empty", path, i + 1);
    if (o->label_step < 0) return lm_fail(err, LM_EARG, "%s: plot: label step %d is negative", path, o->label_step);
    if (o->cols < 0) return lm_fail(err, LM_EARG, "%s: plot: grid columns %d is negative", path, o->cols);
    size_t pl = strlen(path);
    int fmt;
    if (pl > 4 && !strcasecmp(path + pl - 4, ".png"))
        fmt = FMT_PNG;
    else if (pl > 4 && !strcasecmp(path + pl - 4, ".svg"))
        fmt = FMT_SVG;
    else if (pl > 4 && !strcasecmp(path + pl - 4, ".pdf"))
        fmt = FMT_PDF;
    else
        return lm_fail(err, LM_EARG, "%s: unknown figure format (use .png, .svg or .pdf)", path);

    figure fg = {.ms = ms, .n = n, .o = o};
    int rc = lm_scale_fit(&fg.sc, ms, n, o, err);
    if (rc) {
        if (rc == LM_EARG) {
            char tmp[sizeof err->msg];
            snprintf(tmp, sizeof tmp, "%s", err->msg);
            return lm_fail(err, LM_EARG, "%s: %s", path, tmp);
        }
        return rc;
    }
    fg.cols = o->cols > 0 && o->cols < n ? o->cols : n;
    fg.rows = (n + fg.cols - 1) / fg.cols;
    for (int i = 0; i < n; i++) {
        if (ms[i]->n_layer > fg.max_layers) fg.max_layers = ms[i]->n_layer;
        for (size_t k = 0; k < (size_t)ms[i]->n_layer * LM_N_MODULES; k++)
            if (isnan(ms[i]->v[k])) fg.any_nan = 1;
    }
    fg.cell_h = fmin(CELL_H_MAX, fmax(CELL_H_MIN, HEAT_H_BUDGET / fg.max_layers));

    /* pass 1: measure */
    cairo_surface_t *ms_surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 1, 1);
    cairo_t *mcr = cairo_create(ms_surf);
    set_font_options(mcr);
    canvas cv = {.cr = mcr, .draw = 0, .x0 = INFINITY, .y0 = INFINITY, .x1 = -INFINITY, .y1 = -INFINITY};
    render(&cv, &fg);
    cairo_status_t st = cairo_status(mcr);
    cairo_destroy(mcr);
    cairo_surface_destroy(ms_surf);
    if (st != CAIRO_STATUS_SUCCESS) return cairo_fail(err, path, st);
    double W = ceil(cv.x1 - cv.x0 + 2 * MARGIN), H = ceil(cv.y1 - cv.y0 + 2 * MARGIN);
    double ox = MARGIN - cv.x0 + 0.5 * (W - (cv.x1 - cv.x0 + 2 * MARGIN));
    double oy = MARGIN - cv.y0 + 0.5 * (H - (cv.y1 - cv.y0 + 2 * MARGIN));

    lm_atomic a;
    rc = lm_atomic_open(&a, path, err);
    if (rc) return rc;
    sink sk = {.f = a.f};
    cairo_surface_t *surf;
    double scale = 1;
    if (fmt == FMT_PNG) {
        scale = PNG_DPI / 72.0;
        if (fmax(W, H) * scale > PNG_MAX_PX) scale = PNG_MAX_PX / fmax(W, H);
        surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)ceil(W * scale), (int)ceil(H * scale));
    } else if (fmt == FMT_SVG) {
        surf = cairo_svg_surface_create_for_stream(sink_write, &sk, W, H);
    } else {
        surf = cairo_pdf_surface_create_for_stream(sink_write, &sk, W, H);
#if CAIRO_VERSION >= CAIRO_VERSION_ENCODE(1, 16, 0)
        char title[1024];
        if (o->title && o->title[0])
            snprintf(title, sizeof title, "%s", o->title);
        else
            default_title(title, sizeof title, ms[0]);
        char clean[1024];
        cairo_pdf_surface_set_metadata(surf, CAIRO_PDF_METADATA_TITLE, valid_text(title, clean, sizeof clean));
        cairo_pdf_surface_set_metadata(surf, CAIRO_PDF_METADATA_CREATOR, "layermap " LM_VERSION);
#endif
    }
    cairo_t *cr = cairo_create(surf);
    set_font_options(cr);
    cairo_scale(cr, scale, scale);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_translate(cr, ox, oy);
    canvas dc = {.cr = cr, .draw = 1, .x0 = INFINITY, .y0 = INFINITY, .x1 = -INFINITY, .y1 = -INFINITY};
    render(&dc, &fg);
    st = cairo_status(cr);
    cairo_destroy(cr);
    if (st == CAIRO_STATUS_SUCCESS && fmt == FMT_PNG) st = cairo_surface_write_to_png_stream(surf, sink_write, &sk);
    cairo_surface_finish(surf);
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(surf);
    cairo_surface_destroy(surf);
    if (st != CAIRO_STATUS_SUCCESS || sk.failed) {
        lm_atomic_abort(&a);
        if (sk.failed || st == CAIRO_STATUS_WRITE_ERROR)
            return lm_fail(err, LM_EIO, "%s: write failed: %s", path, strerror(sk.failed ? sk.errnum : EIO));
        return cairo_fail(err, path, st);
    }
    return lm_atomic_commit(&a, err);
}
