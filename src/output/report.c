/*
 * report.c -- one self-contained HTML report of saved matrices (layermap.h,
 * lm_report_write): per matrix an inline SVG heatmap drawn here (rects and
 * text, the plots' diverging scale from matrix.c: lm_scale_fit, lm_scale_pos,
 * lm_colormap), its run metadata and values; the compare table of every
 * pair; and a recipe file verbatim. Nothing refers to an outside URL: the
 * file opens offline.
 */
#include "base/base.h"
#include "output/scale.h"
#include "base/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One input: its matrix and, for a JSON file, the parsed document (for "meta"). */
typedef struct input {
    const char *path;
    lm_matrix *m;
    cJSON *doc; /* NULL for a CSV */
} input;

/* HTML-escape s (UTF-8 passes through; invalid bytes become U+FFFD). */
static void esc(FILE *f, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x80) {
            int n = lm_utf8_len(p);
            if (n == 0) {
                fputs("\xEF\xBF\xBD", f);
            } else {
                fwrite(p, 1, (size_t)n, f);
                p += n - 1;
            }
            continue;
        }
        switch (*p) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\r': break;
        default:
            if (*p < 0x20 && *p != '\n' && *p != '\t') fputc(' ', f);
            else fputc(*p, f);
        }
    }
}

/* A value for people: 4 significant digits, "NaN" for no value. */
static const char *fmt4(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "NaN");
    else snprintf(buf, n, "%.4g", v);
    return buf;
}

/* "#rrggbb" of v on scale s; grey for NaN. */
static void colour(char out[8], const lm_scale *s, double v) {
    if (isnan(v)) {
        snprintf(out, 8, "#d0d0d0");
        return;
    }
    double rgb[3];
    lm_colormap(lm_scale_pos(s, v), rgb);
    int c[3];
    for (int k = 0; k < 3; k++) {
        double x = rgb[k] < 0 ? 0 : rgb[k] > 1 ? 1 : rgb[k];
        c[k] = (int)lround(x * 255);
    }
    snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

/* The heatmap of m as an inline SVG: a cell per (layer, module), layer labels
 * on the left, module names on top, a colour bar on the right. */
static void svg_heatmap(FILE *f, const lm_matrix *m, const lm_scale *s, int fig) {
    const int L = m->n_layer;
    const int cw = 64, ch = L <= 16 ? 20 : L <= 40 ? 12 : 8;
    const int left = 44, top = 30, barw = 16, gap = 24;
    const int W = left + LM_N_MODULES * cw + gap + barw + 90, H = top + (L ? L : 1) * ch + 20;
    fprintf(f, "<svg class=\"heatmap\" id=\"fig%d\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">\n",
            fig, W, H, W, H);
    for (int c = 0; c < LM_N_MODULES; c++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", left + c * cw + cw / 2, top - 8,
                lm_module_names[c]);
    int step = L > 20 ? (L + 9) / 10 : 1;
    for (int l = 0; l < L; l++) {
        if (l % step == 0 || l == L - 1)
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" dominant-baseline=\"middle\">%d</text>\n",
                    left - 6, top + l * ch + ch / 2, l);
        for (int c = 0; c < LM_N_MODULES; c++) {
            double v = m->v[(size_t)l * LM_N_MODULES + c];
            char col[8], num[32];
            colour(col, s, v);
            fprintf(f, "<rect class=\"cell\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\">"
                       "<title>layer %d %s: %s</title></rect>\n",
                    left + c * cw, top + l * ch, cw, ch, col, l, lm_module_names[c], fmt4(num, sizeof num, v));
        }
    }
    /* colour bar: 32 steps from vmax (top) to vmin (bottom) */
    int bx = left + LM_N_MODULES * cw + gap, bh = (L ? L : 1) * ch;
    for (int k = 0; k < 32; k++) {
        double t = 1 - (k + 0.5) / 32; /* 1 .. 0 */
        double v = s->vmin + t * (s->vmax - s->vmin);
        char col[8];
        colour(col, s, v);
        fprintf(f, "<rect class=\"bar\" x=\"%d\" y=\"%.2f\" width=\"%d\" height=\"%.2f\" fill=\"%s\"/>\n", bx,
                top + k * bh / 32.0, barw, bh / 32.0 + 0.5, col);
    }
    char a[32], b[32], c[32];
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" dominant-baseline=\"hanging\">%s</text>\n"
            "<text x=\"%d\" y=\"%.1f\" dominant-baseline=\"middle\">%s (centre)</text>\n"
            "<text x=\"%d\" y=\"%d\">%s</text>\n</svg>\n",
            bx + barw + 4, top, fmt4(a, sizeof a, s->vmax), bx + barw + 4,
            top + bh * (s->vmax - s->center) / (s->vmax - s->vmin), fmt4(b, sizeof b, s->center), bx + barw + 4,
            top + bh, fmt4(c, sizeof c, s->vmin));
}

/* One row "<tr><th>key</th><td>value</td></tr>". */
static void kv(FILE *f, const char *k, const char *v) {
    fputs("<tr><th>", f);
    esc(f, k);
    fputs("</th><td>", f);
    esc(f, v);
    fputs("</td></tr>\n", f);
}

/* One row per key of a JSON object: strings as they are, other values as
 * compact JSON. LM_ENOMEM when printing a value fails. */
static int object_rows(FILE *f, const cJSON *obj, lm_err *err) {
    for (const cJSON *x = obj->child; x; x = x->next) {
        if (cJSON_IsString(x)) {
            kv(f, x->string ? x->string : "", x->valuestring);
            continue;
        }
        char *txt = cJSON_PrintUnformatted(x);
        if (!txt) return lm_nomem(err, 0, "report metadata");
        kv(f, x->string ? x->string : "", txt);
        cJSON_free(txt);
    }
    return LM_OK;
}

/* The run metadata: model, method, norm, note, and every key under "meta".
 * LM_ENOMEM when printing a JSON value fails. */
static int meta_table(FILE *f, const input *in, lm_err *err) {
    const lm_matrix *m = in->m;
    fputs("<table class=\"meta\">\n", f);
    kv(f, "file", in->path);
    kv(f, "model", m->model);
    if (m->method[0]) kv(f, "method", m->method);
    kv(f, "norm", m->norm[0] ? m->norm : "none");
    if (m->note[0]) kv(f, "note", m->note);
    char n[32];
    snprintf(n, sizeof n, "%d", m->n_layer);
    kv(f, "layers", n);
    if (m->n_samples > 0) { /* how much data is enough */
        char b[96];
        snprintf(n, sizeof n, "%d", m->n_samples);
        kv(f, "samples", n);
        snprintf(b, sizeof b, "%.4f (Spearman, odd vs even samples)", m->split_half);
        kv(f, "split-half stability", isnan(m->split_half) ? "- (fewer than 2 samples)" : b);
        if (m->se) {
            double worst = 0, sum = 0;
            int k = 0;
            for (int i = 0; i < m->n_layer * LM_N_MODULES; i++)
                if (isfinite(m->se[i]) && isfinite(m->v[i]) && m->v[i] != 0) {
                    double r = m->se[i] / fabs(m->v[i]);
                    worst = r > worst ? r : worst;
                    sum += r;
                    k++;
                }
            snprintf(b, sizeof b, "mean %.3g%%, largest %.3g%% of |cell|", k ? 100 * sum / k : NAN, 100 * worst);
            kv(f, "standard error", b);
        }
    }
    /* "note" as an object (its keys, like "meta"), then "meta" */
    const cJSON *note = in->doc ? cJSON_GetObjectItemCaseSensitive(in->doc, "note") : NULL;
    if (cJSON_IsObject(note)) {
        int rc = object_rows(f, note, err);
        if (rc) return rc;
    }
    const cJSON *meta = in->doc ? cJSON_GetObjectItemCaseSensitive(in->doc, "meta") : NULL;
    if (cJSON_IsObject(meta)) {
        int rc = object_rows(f, meta, err);
        if (rc) return rc;
    } else if (meta) {
        char *txt = cJSON_PrintUnformatted(meta);
        if (!txt) return lm_nomem(err, 0, "report metadata");
        kv(f, "meta", txt);
        cJSON_free(txt);
    }
    fputs("</table>\n", f);
    return LM_OK;
}

/* The values as a table (folded). */
static void values_table(FILE *f, const lm_matrix *m) {
    fputs("<details><summary>values</summary>\n<table class=\"values\">\n<tr><th>layer</th>", f);
    for (int c = 0; c < LM_N_MODULES; c++) fprintf(f, "<th>%s</th>", lm_module_names[c]);
    fputs("</tr>\n", f);
    for (int l = 0; l < m->n_layer; l++) {
        fprintf(f, "<tr><th>%d</th>", l);
        for (int c = 0; c < LM_N_MODULES; c++) {
            char b[32], e[32];
            size_t i = (size_t)l * LM_N_MODULES + c;
            if (m->se)
                fprintf(f, "<td>%s &plusmn; %s</td>", fmt4(b, sizeof b, m->v[i]), fmt4(e, sizeof e, m->se[i]));
            else
                fprintf(f, "<td>%s</td>", fmt4(b, sizeof b, m->v[i]));
        }
        fputs("</tr>\n", f);
    }
    fputs("</table>\n</details>\n", f);
}

/* The compare table over every pair with equal layer counts. */
static int compare_table(FILE *f, const input *in, int n, int topk, lm_err *err) {
    fputs("<h2 id=\"compare\">Method agreement</h2>\n", f);
    if (n < 2) {
        fputs("<p>One matrix: nothing to compare.</p>\n", f);
        return LM_OK;
    }
    fprintf(f,
            "<p>Rank agreement over the cells (NaN cells left out pairwise): Spearman, Kendall tau-b, "
            "and the overlap of the %d largest cells.</p>\n<table class=\"compare\">\n"
            "<tr><th>A</th><th>B</th><th>cells</th><th>Spearman</th><th>Kendall</th><th>top-k</th></tr>\n",
            topk);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            fputs("<tr><td>", f);
            esc(f, lm_basename(in[i].path));
            fputs("</td><td>", f);
            esc(f, lm_basename(in[j].path));
            if (in[i].m->n_layer != in[j].m->n_layer) {
                fprintf(f, "</td><td colspan=\"4\">different layer counts (%d, %d)</td></tr>\n", in[i].m->n_layer,
                        in[j].m->n_layer);
                continue;
            }
            lm_compare_stats st;
            int rc = lm_compare(in[i].m, in[j].m, topk, &st, err);
            if (rc) return rc;
            char a[32], b[32], c[32];
            fprintf(f, "</td><td>%d</td><td>%s</td><td>%s</td><td>%s (k=%d)</td></tr>\n", st.n,
                    fmt4(a, sizeof a, st.spearman), fmt4(b, sizeof b, st.kendall), fmt4(c, sizeof c, st.topk), st.k);
        }
    fputs("</table>\n", f);
    return LM_OK;
}

static const char *const css =
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;margin:8px 0;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
    "table.values td{text-align:right;font-family:monospace}"
    "table.meta td{max-width:800px;word-break:break-word}"
    "pre{background:#f6f6f6;border:1px solid #ddd;padding:8px;overflow:auto;font-size:12px}"
    "svg.heatmap{display:block;margin:8px 0}";

/* Write the whole document to f. */
static int write_html(FILE *f, const input *in, int n, const char *recipe, const char *recipe_path, int topk,
                      lm_err *err) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>layermap report</title>\n"
          "<style>",
          f);
    fputs(css, f);
    fprintf(f, "</style>\n</head>\n<body>\n<h1>layermap report</h1>\n<p>layermap %s, %d matri%s.</p>\n<ul>\n",
            LM_VERSION, n, n == 1 ? "x" : "ces");
    for (int i = 0; i < n; i++) {
        fprintf(f, "<li><a href=\"#m%d\">", i);
        esc(f, lm_basename(in[i].path));
        fputs("</a>: ", f);
        esc(f, in[i].m->model);
        if (in[i].m->method[0]) {
            fputs(" / ", f);
            esc(f, in[i].m->method);
        }
        fputs("</li>\n", f);
    }
    fputs("<li><a href=\"#compare\">method agreement</a></li>\n", f);
    if (recipe) fputs("<li><a href=\"#recipe\">recipe</a></li>\n", f);
    fputs("</ul>\n", f);
    for (int i = 0; i < n; i++) {
        fprintf(f, "<section class=\"matrix\" id=\"m%d\">\n<h2>", i);
        esc(f, lm_basename(in[i].path));
        fputs("</h2>\n", f);
        const lm_matrix *one = in[i].m;
        lm_scale s;
        int rc = lm_scale_fit(&s, &one, 1, NULL, err);
        if (rc) return rc;
        svg_heatmap(f, one, &s, i);
        rc = meta_table(f, &in[i], err);
        if (rc) return rc;
        values_table(f, one);
        fputs("</section>\n", f);
    }
    int rc = compare_table(f, in, n, topk, err);
    if (rc) return rc;
    if (recipe) {
        fputs("<h2 id=\"recipe\">Recipe</h2>\n<p>", f);
        esc(f, recipe_path);
        fputs("</p>\n<pre>", f);
        esc(f, recipe);
        fputs("</pre>\n", f);
    }
    fputs("</body>\n</html>\n", f);
    return LM_OK;
}

/* Read input i: the matrix by extension, the document too for JSON. */
static int read_input(input *in, const char *path, lm_err *err) {
    in->path = path;
    size_t n = strlen(path);
    if (n >= 4 && !strcasecmp(path + n - 4, ".csv")) return lm_matrix_read_csv(&in->m, path, err);
    if (!(n >= 5 && !strcasecmp(path + n - 5, ".json")))
        return lm_fail(err, LM_EARG, "%s: not a .csv or .json matrix", path);
    int rc = lm_matrix_read_json(&in->m, path, err);
    if (!rc) rc = lm_json_read_file(&in->doc, path, err);
    return rc;
}

/* See layermap.h. */
int lm_report_write(const char *const *inputs, int n, const char *recipe_path, int topk, const char *path,
                    lm_err *err) {
    if (!inputs || n < 1 || !path) return lm_fail(err, LM_EARG, "report: no matrices or no output path");
    if (topk < 1) return lm_fail(err, LM_EARG, "report: top-k needs k >= 1, got %d", topk);
    input *in = lm_calloc((size_t)n, sizeof *in);
    if (!in) return lm_nomem(err, (size_t)n * sizeof *in, "report inputs");
    char *recipe = NULL;
    int rc = LM_OK;
    for (int i = 0; i < n && !rc; i++) rc = read_input(&in[i], inputs[i], err);
    if (!rc && recipe_path) {
        size_t len;
        rc = lm_file_read_all(recipe_path, &recipe, &len, err);
        if (!rc && strlen(recipe) != len) rc = lm_fail(err, LM_EARG, "%s: the recipe is not text (NUL byte)", recipe_path);
    }
    lm_atomic a;
    if (!rc) rc = lm_atomic_open(&a, path, err);
    if (!rc) {
        rc = write_html(a.f, in, n, recipe, recipe_path, topk, err);
        if (rc) lm_atomic_abort(&a);
        else rc = lm_atomic_commit(&a, err);
    }
    for (int i = 0; i < n; i++) {
        lm_matrix_free(in[i].m);
        if (in[i].doc) cJSON_Delete(in[i].doc);
    }
    lm_free(in);
    lm_free(recipe);
    return rc;
}
