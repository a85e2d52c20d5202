/*
 * plot.c -- heatmap figures of attribution matrices: PNG (300 dpi) and PDF with
 * cairo, SVG written directly (text stays text); one matrix or a grid of
 * several, with one shared colour scale or one per panel (scale.c fits them),
 * each colour bar labelled with its quantity.
 *
 * Figure anatomy (sizes in points, 1/72 in; a 7-module heatmap is about 3.5 in
 * wide, a single-column figure of a paper):
 *
 *               title: model – method (norm: ...)
 *           ┌──────────────────────────────┐        ×10⁻³
 *         0 ┤ ▇▇ ▇▇ ▇▇ ▇▇   ▇▇ ▇▇ ▇▇        │  max ━▇ ┬ 4    q
 *   layer 3 ┤ ▇▇ ▇▇ ▇▇ ▇▇   ▇▇ ▇▇ ▇▇        │       ▇ ┼ 0    u   colour bar: 1-2-5 ticks,
 *         6 ┤ ...  (layer 0 at the top)     │  min ━▇ ┼ −4   a   the quantity along it,
 *             attn.q ... attn.o  mlp.up ... mlp.gate (45°)       n   min/max when symmetric
 *
 * A grid puts panels side by side (--cols wraps them), each titled; with one
 * shared scale the bar stands right of the grid, with a scale per panel each
 * bar stands beside its panel. A matrix's per-layer vector (act-sq's block
 * influence) is one more panel, one column wide, on its own scale.
 *
 * Rendering runs twice over the same code (render()): a measuring pass that
 * only collects the bounding box of everything it would draw, then the
 * drawing pass translated so that the box sits inside a small margin. So the
 * page is always exactly as large as its content, whatever the labels.
 */
#include "output/scale.h"

#include <cairo.h>
#include <cairo-pdf.h>
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

/* See layermap.h: automatic title, labels, centre and range; one row; a
 * grid shares one scale when its matrices show the same quantity. */
void lm_plot_opts_default(lm_plot_opts *o) {
    memset(o, 0, sizeof *o);
    o->scales = LM_PLOT_SCALE_AUTO;
}

/* ------------------------------------------------------------------------ */
/* Canvas: measure, draw with cairo, or write SVG                            */
/* ------------------------------------------------------------------------ */

/* Three passes run the same layout code (render()): measuring (bounding box
 * only), drawing with cairo (PNG, PDF), and writing SVG elements. cairo's SVG
 * surface turns text into glyph outlines; ours keeps every label a <text>
 * element in a named font, editable in any SVG editor. Text is measured with
 * cairo in every pass, so the three agree. */
typedef struct canvas {
    cairo_t *cr;            /* drawing context, or a 1x1 one for text metrics (measuring, SVG) */
    int draw;               /* 0: measuring pass (bounding box only) */
    FILE *svg;              /* SVG pass: elements go here (cr only measures) */
    int n_grad;             /* SVG gradients written so far (their ids) */
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

/* "#rrggbb" of an sRGB colour. */
static void svg_color(char buf[8], const double rgb[3]) {
    int c[3];
    for (int k = 0; k < 3; k++) {
        double v = rgb[k] < 0 ? 0 : rgb[k] > 1 ? 1 : rgb[k];
        c[k] = (int)lround(v * 255);
    }
    snprintf(buf, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

/* Valid UTF-8 s as XML character data: markup characters escaped, and the
 * characters XML 1.0 forbids (controls, U+FFFE, U+FFFF) written as '?'. */
static void svg_escaped(FILE *f, const char *s) {
    char buf[1024];
    for (const unsigned char *p = (const unsigned char *)valid_text(s, buf, sizeof buf); *p; p++) {
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fputc('?', f);
            else if (p[0] == 0xef && p[1] == 0xbf && (p[2] == 0xbe || p[2] == 0xbf))
                fputc('?', f), p += 2;
            else
                fputc(*p, f);
        }
    }
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
    if (cv->svg) {
        char col[8];
        svg_color(col, rgb);
        fprintf(cv->svg, "<text transform=\"translate(%.2f %.2f)", x, y);
        if (angle != 0) fprintf(cv->svg, " rotate(%.2f)", angle * 180 / M_PI);
        fprintf(cv->svg, "\" y=\"%.2f\" font-size=\"%.2f\"%s%s fill=\"%s\">", dy, size,
                bold ? " font-weight=\"bold\"" : "",
                ha < 0.25 ? "" : ha > 0.75 ? " text-anchor=\"end\"" : " text-anchor=\"middle\"", col);
        svg_escaped(cv->svg, s);
        fputs("</text>\n", cv->svg);
        return;
    }
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
    if (cv->svg) {
        char col[8];
        svg_color(col, rgb);
        fprintf(cv->svg, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>\n", x, y, w, h, col);
        return;
    }
    cairo_set_source_rgb(cv->cr, rgb[0], rgb[1], rgb[2]);
    cairo_rectangle(cv->cr, x, y, w, h);
    cairo_fill(cv->cr);
}

/* Outline a rectangle. */
static void cv_frame(canvas *cv, double x, double y, double w, double h, double width, const double rgb[3]) {
    cv_grow(cv, x, y);
    cv_grow(cv, x + w, y + h);
    if (!cv->draw) return;
    if (cv->svg) {
        char col[8];
        svg_color(col, rgb);
        fprintf(cv->svg,
                "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"%s\" "
                "stroke-width=\"%.2f\"/>\n",
                x, y, w, h, col, width);
        return;
    }
    cairo_set_source_rgb(cv->cr, rgb[0], rgb[1], rgb[2]);
    cairo_set_line_width(cv->cr, width);
    cairo_rectangle(cv->cr, x, y, w, h);
    cairo_stroke(cv->cr);
}

/* A segment that does not grow the bounding box (it lies inside something
 * that did). */
static void cv_seg(canvas *cv, double x0, double y0, double x1, double y1, double width, const double rgb[3]) {
    if (!cv->draw) return;
    if (cv->svg) {
        char col[8];
        svg_color(col, rgb);
        fprintf(cv->svg, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"%.2f\"/>\n",
                x0, y0, x1, y1, col, width);
        return;
    }
    cairo_set_source_rgb(cv->cr, rgb[0], rgb[1], rgb[2]);
    cairo_set_line_width(cv->cr, width);
    cairo_set_line_cap(cv->cr, CAIRO_LINE_CAP_BUTT);
    cairo_move_to(cv->cr, x0, y0);
    cairo_line_to(cv->cr, x1, y1);
    cairo_stroke(cv->cr);
}

/* A hairline from (x0, y0) to (x1, y1). */
static void cv_line(canvas *cv, double x0, double y0, double x1, double y1, double width, const double rgb[3]) {
    cv_grow(cv, x0, y0);
    cv_grow(cv, x1, y1);
    cv_seg(cv, x0, y0, x1, y1, width, rgb);
}

/* A cell without a value: light grey with diagonal hatching (lines of slope
 * -1, clipped to the cell by hand so that every format draws the same). */
static void cv_nan_cell(canvas *cv, double x, double y, double w, double h) {
    cv_rect(cv, x, y, w, h, nan_fill);
    if (!cv->draw || w <= 0 || h <= 0) return;
    for (double d = -h; d < w; d += 2.6) {
        /* the line (x + d + t, y + h - t), t in [0, h], kept where 0 <= d + t <= w */
        double t0 = d < 0 ? -d : 0, t1 = d + h > w ? w - d : h;
        if (t1 > t0) cv_seg(cv, x + d + t0, y + h - t0, x + d + t1, y + h - t1, 0.45, nan_hatch);
    }
}

/* A vertical colour gradient filling a rectangle: stop k has colour rgb[k]
 * at fraction off[k] of the height, 0 = bottom, 1 = top (off increasing). */
static void cv_vgradient(canvas *cv, double x, double y, double w, double h, int n, const double *off,
                         const double (*rgb)[3]) {
    cv_grow(cv, x, y);
    cv_grow(cv, x + w, y + h);
    if (!cv->draw || n < 1) return;
    if (cv->svg) {
        int id = cv->n_grad++;
        fprintf(cv->svg, "<defs><linearGradient id=\"lmbar%d\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n", id);
        for (int k = 0; k < n; k++) {
            char col[8];
            svg_color(col, rgb[k]);
            fprintf(cv->svg, "<stop offset=\"%.5f\" stop-color=\"%s\"/>\n", off[k], col);
        }
        fprintf(cv->svg, "</linearGradient></defs>\n");
        fprintf(cv->svg, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"url(#lmbar%d)\"/>\n", x, y,
                w, h, id);
        return;
    }
    cairo_pattern_t *pat = cairo_pattern_create_linear(0, y + h, 0, y);
    for (int k = 0; k < n; k++) cairo_pattern_add_color_stop_rgb(pat, off[k], rgb[k][0], rgb[k][1], rgb[k][2]);
    cairo_set_source(cv->cr, pat);
    cairo_rectangle(cv->cr, x, y, w, h);
    cairo_fill(cv->cr);
    cairo_pattern_destroy(pat);
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

/* Layer label step of a panel of n layers with cells ch tall: the user's,
 * or about 10 labels but never closer than a 4 pt label needs. */
static int label_step(const lm_plot_opts *o, int n, double ch) {
    if (o->label_step > 0) return o->label_step;
    int s = auto_label_step(n);
    int min = (int)ceil(4.0 / (0.95 * ch) - 1e-9);
    if (s < min) s = auto_label_step(10 * min); /* the next nice step >= min */
    return s;
}

/* Size of layer labels step layers apart: 8 pt, shrunk to fit, 4 pt at least. */
static double label_fs(int step, double ch) {
    return fmin(FS_TICK, fmax(4.0, step * ch * 0.95));
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

/* A colour bar: its scale, its label, and the layout numbers render() works
 * out for it (the same in every pass). */
typedef struct bar {
    lm_scale sc;
    char label[256];  /* "loss change, nats" */
    int own;          /* 1: beside panel 'host'; 0: the shared bar right of the grid */
    int host;         /* the panel it is drawn beside (own bars) */
    int any_nan;      /* a panel it colours has cells without a value: "no value" legend */
    /* layout */
    double ticks[MAX_TICKS], tstep;
    int nt, texp;
    char expl[32];    /* "×10⁻³" or "" */
    double lead;      /* from the heatmap's right edge to the bar */
    double after;     /* from the bar's left edge to the end of its label */
    double tick_w;
    int marks;        /* draw the data's min and max on the bar */
} bar;

/* One heatmap of the figure. */
typedef struct panel {
    const lm_matrix *m; /* the matrix it comes from (titles) */
    const double *v;    /* (n_layer, ncols) row-major */
    int n_layer, ncols; /* ncols: LM_N_MODULES, or 1 for a per-layer vector (layer_extra) */
    int bar;            /* its colour bar, an index into figure.bars */
} panel;

typedef struct figure {
    const lm_matrix *const *ms;
    int n;
    const lm_plot_opts *o;
    panel *panels; /* [np]: the matrices, then their per-layer vectors */
    int np;
    bar *bars;     /* [nb] */
    int nb;
    int cols, rows; /* grid */
    double *col_left; /* [cols + 1]: left edge of each grid column (render() fills it) */
    int max_layers;
    double cell_h;
} figure;

/* Left edge of column c inside a heatmap. */
static double col_x(int c) {
    return c * CELL_W + (c >= LM_MOD_UP ? GROUP_GAP : 0);
}

/* Width of a panel's heatmap. */
static double heat_width(const panel *p) {
    return p->ncols == LM_N_MODULES ? col_x(LM_N_MODULES - 1) + CELL_W : CELL_W;
}

#define BAR_GAP 12.0     /* heatmap to colour bar */
#define MARK_FS 7.0      /* "min" / "max" beside a symmetric bar */
#define BAR_LABEL_FS 8.0 /* the quantity label along the bar */

/* Ticks, exponent and widths of a bar. */
static void bar_layout(canvas *cv, bar *b) {
    char buf[64];
    b->nt = nice_ticks(b->sc.vmin, b->sc.vmax, b->ticks, &b->tstep);
    b->texp = tick_exponent(b->sc.vmin, b->sc.vmax);
    b->expl[0] = 0;
    if (b->texp) exponent_label(b->expl, sizeof b->expl, b->texp);
    b->tick_w = 0;
    for (int i = 0; i < b->nt; i++) {
        tick_label(buf, sizeof buf, b->ticks[i], b->tstep, b->texp);
        b->tick_w = fmax(b->tick_w, cv_text_w(cv, buf, FS_TICK, 0));
    }
    b->marks = b->sc.symmetric && isfinite(b->sc.dmin) && isfinite(b->sc.dmax);
    double mark_w = b->marks ? fmax(cv_text_w(cv, "min", MARK_FS, 0), cv_text_w(cv, "max", MARK_FS, 0)) + 5 : 0;
    b->lead = BAR_GAP + mark_w;
    b->after = CBAR_W + TICK_LEN + TICK_PAD + b->tick_w + 3 + BAR_LABEL_FS;
}

/* Draw bar b with its left edge at x from top to bot: gradient (value-linear,
 * white at the centre), ticks, the power of ten above, the data's min and
 * max on a symmetric bar, the quantity label along the right side, and the
 * "no value" legend below. */
static void draw_bar(canvas *cv, const bar *b, double x, double top, double bot) {
    char buf[1024];
    double bh = bot - top, span = b->sc.vmax - b->sc.vmin;
    enum { PER_SIDE = 32 };
    double off[2 * (PER_SIDE + 1)], rgb[2 * (PER_SIDE + 1)][3];
    int ns = 0;
    for (int side = 0; side < 2; side++) {
        double a = side ? b->sc.center : b->sc.vmin, e = side ? b->sc.vmax : b->sc.center;
        if (!(e > a)) continue;
        for (int i = 0; i <= PER_SIDE; i++) {
            double v = a + (e - a) * i / PER_SIDE;
            off[ns] = (v - b->sc.vmin) / span;
            lm_colormap(lm_scale_pos(&b->sc, v), rgb[ns]);
            ns++;
        }
    }
    cv_vgradient(cv, x, top, CBAR_W, bh, ns, off, (const double(*)[3])rgb);
    cv_frame(cv, x, top, CBAR_W, bh, 0.4, tick_ink);
    for (int i = 0; i < b->nt; i++) {
        double ty = bot - (b->ticks[i] - b->sc.vmin) / span * bh;
        cv_line(cv, x + CBAR_W, ty, x + CBAR_W + TICK_LEN, ty, 0.5, tick_ink);
        tick_label(buf, sizeof buf, b->ticks[i], b->tstep, b->texp);
        cv_text(cv, buf, x + CBAR_W + TICK_LEN + TICK_PAD, ty, FS_TICK, 0, 0, 0, VA_MIDDLE, ink);
    }
    if (b->expl[0]) cv_text(cv, b->expl, x, top - 0.5 * FS_TICK - 3, FS_TICK, 0, 0, 0, VA_BASE, ink);
    if (b->marks) {
        /* a dark line across the bar at each, labelled on its left; labels
         * closer than a line apart are pushed apart around their midpoint */
        double ymax = bot - (fmin(b->sc.dmax, b->sc.vmax) - b->sc.vmin) / span * bh;
        double ymin = bot - (fmax(b->sc.dmin, b->sc.vmin) - b->sc.vmin) / span * bh;
        cv_line(cv, x - 2, ymax, x + CBAR_W, ymax, 0.8, ink);
        cv_line(cv, x - 2, ymin, x + CBAR_W, ymin, 0.8, ink);
        double lmax = ymax, lmin = ymin, need = MARK_FS * 1.05;
        if (lmin - lmax < need) {
            double mid = 0.5 * (lmin + lmax);
            lmax = mid - 0.5 * need;
            lmin = mid + 0.5 * need;
        }
        cv_text(cv, "max", x - 3, lmax, MARK_FS, 0, 0, 1, VA_MIDDLE, ink);
        cv_text(cv, "min", x - 3, lmin, MARK_FS, 0, 0, 1, VA_MIDDLE, ink);
    }
    /* the quantity, reading upwards along the bar, fitted to its height */
    snprintf(buf, sizeof buf, "%s", b->label);
    double lfs = fit_title(cv, buf, BAR_LABEL_FS, 0, fmax(bh, CBAR_MIN_H));
    double lx = x + CBAR_W + TICK_LEN + TICK_PAD + b->tick_w + 3 + 0.5 * BAR_LABEL_FS;
    cv_text(cv, buf, lx, top + 0.5 * bh, lfs, 0, -M_PI / 2, 0.5, VA_MIDDLE, ink);
    if (b->any_nan) {
        double ly = bot + 8;
        cv_nan_cell(cv, x, ly, CBAR_W, CBAR_W);
        cv_text(cv, "no value", x + CBAR_W + TICK_PAD + 1, ly + 0.5 * CBAR_W, FS_TICK - 1, 0, 0, 0, VA_MIDDLE, ink);
    }
}

/* Height of a bar beside a heatmap of height hh (and its legend below). */
static double bar_height(const bar *b, double hh) {
    return fmax(hh, CBAR_MIN_H) + (b->any_nan ? 8 + CBAR_W : 0);
}

/* Title of a panel: the matrix's default title, or the per-layer vector's
 * name ("block influence"). */
static void panel_title(char *buf, size_t n, const panel *p) {
    if (p->ncols == LM_N_MODULES) {
        default_title(buf, n, p->m);
        return;
    }
    snprintf(buf, n, "%s", p->m->layer_extra_name[0] ? p->m->layer_extra_name : "per layer");
    for (char *q = buf; *q; q++)
        if (*q == '-' || *q == '_') *q = ' ';
}

/* Everything on the page, placed in figure coordinates; the caller translates
 * so that the bounding box starts at the margin. */
static void render(canvas *cv, figure *fg) {
    const lm_plot_opts *o = fg->o;
    const double ch = fg->cell_h;
    const double c45 = cos(M_PI / 4), s45 = sin(M_PI / 4);
    char buf[1024];

    for (int k = 0; k < fg->nb; k++) bar_layout(cv, &fg->bars[k]);

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

    /* Layer labels: each panel's step and size, the widest label of any. */
    double ylab_w = 0;
    for (int i = 0; i < fg->np; i++) {
        int nl = fg->panels[i].n_layer, step = label_step(o, nl, ch);
        for (int l = 0; l < nl; l += step) {
            snprintf(buf, sizeof buf, "%d", lm_matrix_layer(fg->panels[i].m, l)); /* the model's layer number */
            double w = cv_text_w(cv, buf, label_fs(step, ch), 0);
            if (w > ylab_w) ylab_w = w;
        }
    }
    const double axis_label_gap = 3.0;
    double left_space = TICK_LEN + TICK_PAD + ylab_w + axis_label_gap + FS_LABEL;
    if (xlab_left > left_space) left_space = xlab_left;
    const double hgap = 12.0, vgap = 8.0;

    /* Columns of the grid: each as wide as its widest panel (heatmap plus,
     * for a panel with its own scale, its colour bar). */
    double *col_left = fg->col_left; /* [cols + 1] */
    col_left[0] = 0;
    for (int c = 0; c < fg->cols; c++) {
        double w = 0;
        for (int i = c; i < fg->np; i += fg->cols) {
            const panel *p = &fg->panels[i];
                const bar *b = &fg->bars[p->bar];
            w = fmax(w, left_space + heat_width(p) + (b->own && b->host == i ? b->lead + b->after : 0));
        }
        col_left[c + 1] = col_left[c] + w + hgap;
    }
    double grid_r = col_left[fg->cols] - hgap; /* right end of the panels */

    /* the shared bar, if any, right of the grid */
    const bar *shared = NULL;
    for (int k = 0; k < fg->nb; k++)
        if (!fg->bars[k].own) shared = &fg->bars[k];
    double cbar_x = shared ? grid_r + shared->lead : 0;
    double content_r = shared ? cbar_x + shared->after : grid_r;

    /* Figure title (one panel) or super-title (grid, only when given):
     * centred over the heatmap(s), wrapped to two lines when too long. */
    int single = fg->np == 1;
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
        double cx = single ? left_space + 0.5 * heat_width(&fg->panels[0]) : 0.5 * grid_r;
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
    /* exponent labels sit above their bars: keep them clear of titles */
    double title_band = single ? 0 : FS_PANEL * 1.45;
    int own_expl = 0;
    for (int k = 0; k < fg->nb; k++) own_expl |= fg->bars[k].own && fg->bars[k].expl[0];
    if (shared && shared->expl[0]) {
        if (single && title_right > cbar_x - 4) title_band += FS_TICK * 1.3;
        if (!single) title_band = fmax(title_band, FS_TICK * 1.5);
    }
    if (own_expl) title_band = FS_PANEL * 1.3 + FS_TICK * 1.4;

    double cbar_top = 0, cbar_bot = 0;
    for (int r = 0; r < fg->rows; r++) {
        double heat_top = y + title_band, row_h = 0, row_bars = 0;
        for (int c = 0; c < fg->cols; c++) {
            int i = r * fg->cols + c;
            if (i >= fg->np) break;
            const panel *p = &fg->panels[i];
            const bar *b = &fg->bars[p->bar];
            int hosts = b->own && b->host == i;
            double px = col_left[c], hx = px + left_space, hw = heat_width(p);
            double pw = left_space + hw + (hosts ? b->lead + b->after : 0);
            double hh = p->n_layer * ch;
            if (hh > row_h) row_h = hh;

            /* grid: panel title, centred over the heatmap, kept in the panel */
            if (!single) {
                panel_title(buf, sizeof buf, p);
                double tfs = fit_title(cv, buf, FS_PANEL, 0, hosts ? pw : left_space + hw);
                double tx = hx + 0.5 * hw, tw = cv_text_w(cv, buf, tfs, 0);
                if (tx + 0.5 * tw > px + pw) tx = px + pw - 0.5 * tw;
                if (tx - 0.5 * tw < px) tx = px + 0.5 * tw;
                cv_text(cv, buf, tx, y, tfs, 0, 0, 0.5, VA_TOP, ink);
            }

            /* cells: white separators between them, wider between attention and MLP */
            double gy = ch >= 6 ? SEP : ch >= 3 ? 0.4 : 0;
            for (int l = 0; l < p->n_layer; l++) {
                for (int k = 0; k < p->ncols; k++) {
                    double v = p->v[(size_t)l * (size_t)p->ncols + (size_t)k];
                    double x0 = hx + col_x(k) + 0.5 * SEP, y0 = heat_top + l * ch + 0.5 * gy;
                    if (isnan(v)) {
                        cv_nan_cell(cv, x0, y0, CELL_W - SEP, ch - gy);
                    } else {
                        double rgb[3];
                        lm_colormap(lm_scale_pos(&b->sc, v), rgb);
                        cv_rect(cv, x0, y0, CELL_W - SEP, ch - gy, rgb);
                    }
                }
            }

            /* layer ticks and labels; "layer" on the first column */
            int step = label_step(o, p->n_layer, ch);
            for (int l = 0; l < p->n_layer; l += step) {
                double yc = heat_top + (l + 0.5) * ch;
                cv_line(cv, hx - TICK_LEN, yc, hx, yc, 0.5, tick_ink);
                snprintf(buf, sizeof buf, "%d", lm_matrix_layer(p->m, l)); /* the model's layer number */
                cv_text(cv, buf, hx - TICK_LEN - TICK_PAD, yc, label_fs(step, ch), 0, 0, 1, VA_MIDDLE, ink);
            }
            if (c == 0)
                cv_text(cv, "layer", hx - TICK_LEN - TICK_PAD - ylab_w - axis_label_gap - 0.5 * FS_LABEL,
                        heat_top + 0.5 * hh, FS_LABEL, 0, -M_PI / 2, 0.5, VA_MIDDLE, ink);

            /* module ticks and rotated labels (a per-layer vector has none) */
            double hb = heat_top + hh;
            for (int k = 0; p->ncols == LM_N_MODULES && k < LM_N_MODULES; k++) {
                double xc = hx + col_x(k) + 0.5 * CELL_W;
                cv_line(cv, xc, hb, xc, hb + TICK_LEN, 0.5, tick_ink);
                cv_text(cv, lm_module_names[k], xc + 0.5 * FS_TICK * s45 * 0.3, hb + TICK_LEN + TICK_PAD, FS_TICK,
                        0, -M_PI / 4, 1, VA_MIDDLE, ink);
            }

            /* its own colour bar, beside it */
            if (hosts) {
                draw_bar(cv, b, hx + hw + b->lead, heat_top, heat_top + fmax(hh, CBAR_MIN_H));
                row_bars = fmax(row_bars, bar_height(b, hh));
            }
        }
        if (r == 0) cbar_top = heat_top;
        cbar_bot = heat_top + row_h;
        y = heat_top + fmax(row_h + xlab_down, row_bars) + vgap;
    }

    if (shared) {
        if (cbar_bot - cbar_top < CBAR_MIN_H) cbar_bot = cbar_top + CBAR_MIN_H;
        draw_bar(cv, shared, cbar_x, cbar_top, cbar_bot);
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

/* See layermap.h. */
int lm_plot_same_quantity(const lm_matrix *const *ms, int n) {
    for (int i = 1; i < n; i++)
        if (!lm_same_quantity(ms[0], ms[i])) return 0;
    return 1;
}

/* See layermap.h. */
int lm_plot_is_signed(const lm_matrix *const *ms, int n) {
    for (int i = 0; i < n; i++)
        if (lm_matrix_is_signed(ms[i])) return 1;
    return 0;
}

/* An LM_EARG from the scale fit, prefixed with the figure's path. */
static int scale_error(lm_err *err, int rc, const char *path) {
    if (rc != LM_EARG) return rc;
    char tmp[sizeof err->msg];
    snprintf(tmp, sizeof tmp, "%s", err->msg);
    return lm_fail(err, LM_EARG, "%s: %s", path, tmp);
}

/* 1 when some cell of v[0..count) is NaN. */
static int has_nan(const double *v, size_t count) {
    for (size_t k = 0; k < count; k++)
        if (isnan(v[k])) return 1;
    return 0;
}

/* Panels and colour bars of the figure (fg->ms, fg->n, fg->o set): the
 * matrices, then each per-layer vector; one shared bar or one bar each. */
static int build_figure(figure *fg, const char *path, lm_err *err) {
    const lm_matrix *const *ms = fg->ms;
    int n = fg->n;
    const lm_plot_opts *o = fg->o;
    int np = n;
    for (int i = 0; i < n; i++) np += ms[i]->layer_extra != NULL;
    fg->panels = lm_calloc((size_t)np, sizeof *fg->panels);
    fg->bars = lm_calloc((size_t)np, sizeof *fg->bars);
    if (!fg->panels || !fg->bars) return lm_nomem(err, (size_t)np * (sizeof *fg->panels + sizeof *fg->bars), "figure panels");
    fg->np = np;
    int shared = o->scales == LM_PLOT_SCALE_SHARED ||
                 (o->scales != LM_PLOT_SCALE_PER_PANEL && lm_plot_same_quantity(ms, n));
    int rc;
    if (shared) {
        bar *b = &fg->bars[fg->nb++];
        if ((rc = lm_scale_fit(&b->sc, ms, n, o, err))) return scale_error(err, rc, path);
        lm_quantity_label(b->label, sizeof b->label, ms[0]);
        for (int i = 1; i < n; i++) { /* --shared-scale over several quantities: name each once */
            char l[256];
            lm_quantity_label(l, sizeof l, ms[i]);
            if (!strstr(b->label, l)) {
                size_t k = strlen(b->label);
                snprintf(b->label + k, sizeof b->label - k, "; %s", l);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        panel *p = &fg->panels[i];
        *p = (panel){.m = ms[i], .v = ms[i]->v, .n_layer = ms[i]->n_layer, .ncols = LM_N_MODULES};
        int any_nan = has_nan(p->v, (size_t)p->n_layer * LM_N_MODULES);
        if (shared) {
            p->bar = 0;
            fg->bars[0].any_nan |= any_nan;
            continue;
        }
        p->bar = fg->nb;
        bar *b = &fg->bars[fg->nb++];
        const lm_matrix *one[1] = {ms[i]};
        if ((rc = lm_scale_fit(&b->sc, one, 1, o, err))) return scale_error(err, rc, path);
        lm_quantity_label(b->label, sizeof b->label, ms[i]);
        b->own = 1;
        b->host = i;
        b->any_nan = any_nan;
    }
    for (int i = 0, j = n; i < n; i++) {
        if (!ms[i]->layer_extra) continue;
        panel *p = &fg->panels[j++];
        *p = (panel){.m = ms[i], .v = ms[i]->layer_extra, .n_layer = ms[i]->n_layer, .ncols = 1, .bar = fg->nb};
        bar *b = &fg->bars[fg->nb++];
        /* its own quantity: the user's centre and range are for the matrices */
        if ((rc = lm_scale_fit_values(&b->sc, p->v, (size_t)p->n_layer, NULL, err))) return scale_error(err, rc, path);
        lm_extra_label(b->label, sizeof b->label, ms[i]);
        b->own = 1;
        b->host = j - 1;
        b->any_nan = has_nan(p->v, (size_t)p->n_layer);
    }
    /* a shared bar with per-layer panels after the matrices: beside the last
     * matrix, so that it stands next to what it colours */
    if (shared && np > n) {
        fg->bars[0].own = 1;
        fg->bars[0].host = n - 1;
    }
    if (np == 1) fg->bars[0].own = 0; /* one heatmap: its bar is the figure's */
    fg->cols = o->cols > 0 && o->cols < np ? o->cols : np;
    fg->rows = (np + fg->cols - 1) / fg->cols;
    fg->col_left = lm_calloc((size_t)fg->cols + 1, sizeof *fg->col_left);
    if (!fg->col_left) return lm_nomem(err, ((size_t)fg->cols + 1) * sizeof *fg->col_left, "figure columns");
    for (int i = 0; i < np; i++)
        if (fg->panels[i].n_layer > fg->max_layers) fg->max_layers = fg->panels[i].n_layer;
    fg->cell_h = fmin(CELL_H_MAX, fmax(CELL_H_MIN, HEAT_H_BUDGET / fg->max_layers));
    return LM_OK;
}

/* Free what build_figure allocated. */
static void free_figure(figure *fg) {
    lm_free(fg->panels);
    lm_free(fg->bars);
    lm_free(fg->col_left);
}

/* Write the SVG document: the drawing pass as elements, text as text in the
 * figure's font (named, with generic fallbacks). 0 or an error. */
static int write_svg(FILE *f, cairo_t *metrics, figure *fg, double W, double H, double ox, double oy) {
    char title[1024];
    if (fg->o->title && fg->o->title[0])
        snprintf(title, sizeof title, "%s", fg->o->title);
    else
        default_title(title, sizeof title, fg->ms[0]);
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%gpt\" height=\"%gpt\" viewBox=\"0 0 %g %g\" "
            "font-family=\"%s, Verdana, Arial, sans-serif\">\n<title>",
            W, H, W, H, FONT);
    svg_escaped(f, title);
    fputs("</title>\n<desc>layermap " LM_VERSION "</desc>\n", f);
    fprintf(f, "<rect width=\"%g\" height=\"%g\" fill=\"#ffffff\"/>\n<g transform=\"translate(%.3f %.3f)\">\n", W, H,
            ox, oy);
    canvas dc = {.cr = metrics, .draw = 1, .svg = f, .x0 = INFINITY, .y0 = INFINITY, .x1 = -INFINITY, .y1 = -INFINITY};
    render(&dc, fg);
    fputs("</g>\n</svg>\n", f);
    return cairo_status(metrics) == CAIRO_STATUS_SUCCESS ? 0 : -1;
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
    if ((int)o->scales < LM_PLOT_SCALE_AUTO || (int)o->scales > LM_PLOT_SCALE_PER_PANEL)
        return lm_fail(err, LM_EARG, "%s: plot: unknown scale mode %d", path, (int)o->scales);
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
    int rc = build_figure(&fg, path, err);
    if (rc) {
        free_figure(&fg);
        return rc;
    }

    /* pass 1: measure (the context stays for the SVG pass's text metrics) */
    cairo_surface_t *ms_surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 1, 1);
    cairo_t *mcr = cairo_create(ms_surf);
    set_font_options(mcr);
    canvas cv = {.cr = mcr, .draw = 0, .x0 = INFINITY, .y0 = INFINITY, .x1 = -INFINITY, .y1 = -INFINITY};
    render(&cv, &fg);
    cairo_status_t st = cairo_status(mcr);
    double W = ceil(cv.x1 - cv.x0 + 2 * MARGIN), H = ceil(cv.y1 - cv.y0 + 2 * MARGIN);
    double ox = MARGIN - cv.x0 + 0.5 * (W - (cv.x1 - cv.x0 + 2 * MARGIN));
    double oy = MARGIN - cv.y0 + 0.5 * (H - (cv.y1 - cv.y0 + 2 * MARGIN));
    lm_atomic a = {0};
    if (st != CAIRO_STATUS_SUCCESS) {
        rc = cairo_fail(err, path, st);
        goto done;
    }
    if ((rc = lm_atomic_open(&a, path, err))) goto done;

    if (fmt == FMT_SVG) {
        if (write_svg(a.f, mcr, &fg, W, H, ox, oy)) {
            lm_atomic_abort(&a);
            rc = cairo_fail(err, path, cairo_status(mcr));
            goto done;
        }
        rc = lm_atomic_commit(&a, err);
        goto done;
    }

    sink sk = {.f = a.f};
    cairo_surface_t *surf;
    double scale = 1;
    if (fmt == FMT_PNG) {
        scale = PNG_DPI / 72.0;
        if (fmax(W, H) * scale > PNG_MAX_PX) scale = PNG_MAX_PX / fmax(W, H);
        surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)ceil(W * scale), (int)ceil(H * scale));
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
            rc = lm_fail(err, LM_EIO, "%s: write failed: %s", path, strerror(sk.failed ? sk.errnum : EIO));
        else
            rc = cairo_fail(err, path, st);
        goto done;
    }
    rc = lm_atomic_commit(&a, err);
done:
    cairo_destroy(mcr);
    cairo_surface_destroy(ms_surf);
    free_figure(&fg);
    return rc;
}
