/*
 * matrix.c -- the layers x 7 attribution matrix: creation, normalisation, CSV
 * and JSON files, and the terminal heatmap (colours from scale.c).
 *
 * File formats (both written atomically, both read strictly):
 *
 *   CSV   header `layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate`,
 *         then one row per layer: the layer number (0, 1, ... in order; a
 *         selection of layers has strictly increasing numbers) and
 *         seven numbers. A missing value (NaN) is an empty field; infinities
 *         are `inf` / `-inf`. Numbers are printed with the fewest digits that
 *         read back to the same double (at most 17). No comments and no
 *         metadata, so `pandas.read_csv(f, index_col=0)` and
 *         `numpy.genfromtxt(f, delimiter=',', names=True)` read it as it is.
 *
 *   JSON  {"model": str, "method": str, "norm": str, "note": str,
 *          "modules": ["attn.q", ...], "layers": N,
 *          "values": [[7 numbers or null] x N],
 *          "layer_extra": {"name": str, "values": [N numbers or null]},
 *          "layer_index": [N layer numbers],
 *          "se": [[7 numbers or null] x N], "split_half": number or null, "samples": n,
 *          "meta": {...}}
 *         (layer_extra, layer_index, meta and se/split_half/samples only when present; meta is any
 *         object, kept as it is: the run metadata the CLI records). null is NaN; infinities are
 *         written as 1e999 / -1e999, which JSON parsers read back as inf.
 */
#include "base/json.h"
#include "output/scale.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Matrix                                                                    */
/* ------------------------------------------------------------------------ */

/* A zeroed n_layer x 7 matrix with norm "none"; NULL on allocation failure or
 * a negative size. */
lm_matrix *lm_matrix_new(int n_layer) {
    if (n_layer < 0) return NULL;
    uint64_t bytes;
    if (lm_mul_overflow((uint64_t)n_layer * LM_N_MODULES, sizeof(double), &bytes) || bytes > SIZE_MAX / 2)
        return NULL;
    lm_matrix *m = lm_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->v = lm_calloc((size_t)n_layer * LM_N_MODULES, sizeof(double));
    if (!m->v) {
        lm_free(m);
        return NULL;
    }
    m->n_layer = n_layer;
    m->split_half = NAN;
    snprintf(m->norm, sizeof m->norm, "%s", "none");
    return m;
}

/* Free a matrix and its per-layer extra vector; NULL is fine. */
void lm_matrix_free(lm_matrix *m) {
    if (!m) return;
    lm_free(m->v);
    lm_free(m->layer_extra);
    lm_free(m->layer_index);
    lm_free(m->meta);
    lm_free(m->se);
    lm_free(m);
}

/* See layermap.h. */
int lm_matrix_layer(const lm_matrix *m, int row) { return m->layer_index ? m->layer_index[row] : row; }

/* See layermap.h. */
int lm_matrix_select_layers(lm_matrix *m, const uint8_t *keep, int n_keep, lm_err *err) {
    int n = 0;
    for (int r = 0; r < m->n_layer; r++) {
        int l = lm_matrix_layer(m, r);
        n += l < n_keep && keep[l];
    }
    if (n == 0) return lm_fail(err, LM_EARG, "no layer of the %d-layer matrix is selected", m->n_layer);
    int *idx = lm_malloc((size_t)n * sizeof *idx);
    if (!idx) return lm_nomem(err, (size_t)n * sizeof *idx, "layer index");
    int k = 0;
    for (int r = 0; r < m->n_layer; r++) {
        int l = lm_matrix_layer(m, r);
        if (!(l < n_keep && keep[l])) continue;
        memmove(m->v + (size_t)k * LM_N_MODULES, m->v + (size_t)r * LM_N_MODULES, LM_N_MODULES * sizeof(double));
        if (m->se)
            memmove(m->se + (size_t)k * LM_N_MODULES, m->se + (size_t)r * LM_N_MODULES, LM_N_MODULES * sizeof(double));
        if (m->layer_extra) m->layer_extra[k] = m->layer_extra[r];
        idx[k++] = l;
    }
    lm_free(m->layer_index);
    m->layer_index = idx;
    m->n_layer = n;
    return LM_OK;
}

/* See layermap.h. */
int lm_matrix_set_meta(lm_matrix *m, const char *json, lm_err *err) {
    char *c = NULL;
    if (json && !(c = lm_strdup(json))) return lm_nomem(err, strlen(json) + 1, "run metadata");
    lm_free(m->meta);
    m->meta = c;
    return LM_OK;
}

/* Value of one cell; NaN outside the matrix. */
double lm_matrix_get(const lm_matrix *m, int layer, int module) {
    if (!m || layer < 0 || layer >= m->n_layer || module < 0 || module >= LM_N_MODULES) return NAN;
    return m->v[(size_t)layer * LM_N_MODULES + (size_t)module];
}

/* Set one cell; a cell outside the matrix is ignored. */
void lm_matrix_set(lm_matrix *m, int layer, int module, double v) {
    if (!m || layer < 0 || layer >= m->n_layer || module < 0 || module >= LM_N_MODULES) return;
    m->v[(size_t)layer * LM_N_MODULES + (size_t)module] = v;
}

static const char *const norm_names[] = {"none", "layer", "module", "global"};

/* "none", "layer", "module", "global"; "?" for anything else. */
const char *lm_norm_name(lm_norm n) {
    if ((int)n < 0 || (int)n >= (int)(sizeof norm_names / sizeof norm_names[0])) return "?";
    return norm_names[n];
}

/* Parse a normalisation name; 0 or LM_EARG. */
int lm_norm_parse(const char *s, lm_norm *out) {
    for (int i = 0; s && i < (int)(sizeof norm_names / sizeof norm_names[0]); i++) {
        if (!strcmp(s, norm_names[i])) {
            *out = (lm_norm)i;
            return LM_OK;
        }
    }
    return LM_EARG;
}

/* Divide the cells v[i0 + k*stride], k < count, by the sum of their finite
 * absolute values (and their standard errors se, when given, by the same).
 * NaN cells stay NaN; a zero sum leaves the cells as they are (all zero or
 * NaN). Infinities do not enter the sum and stay infinite. */
static void normalize_group(double *v, double *se, size_t i0, size_t stride, size_t count) {
    double sum = 0;
    for (size_t k = 0; k < count; k++) {
        double x = v[i0 + k * stride];
        if (isfinite(x)) sum += fabs(x);
    }
    if (!(sum > 0) || !isfinite(sum)) return;
    for (size_t k = 0; k < count; k++) v[i0 + k * stride] /= sum;
    for (size_t k = 0; se && k < count; k++) se[i0 + k * stride] /= sum;
}

/* Normalise in place (see lm_norm) and record the normalisation in m->norm.
 * LM_NORM_NONE changes nothing. */
int lm_matrix_normalize(lm_matrix *m, lm_norm norm, lm_err *err) {
    if (!m) return lm_fail(err, LM_EARG, "normalize: no matrix");
    size_t rows = (size_t)(m->n_layer > 0 ? m->n_layer : 0), cols = LM_N_MODULES;
    switch (norm) {
    case LM_NORM_NONE:
        return LM_OK;
    case LM_NORM_LAYER:
        for (size_t r = 0; r < rows; r++) normalize_group(m->v, m->se, r * cols, 1, cols);
        break;
    case LM_NORM_MODULE:
        for (size_t c = 0; c < cols; c++) normalize_group(m->v, m->se, c, cols, rows);
        break;
    case LM_NORM_GLOBAL:
        normalize_group(m->v, m->se, 0, 1, rows * cols);
        break;
    default:
        return lm_fail(err, LM_EARG, "normalize: unknown normalisation %d", (int)norm);
    }
    snprintf(m->norm, sizeof m->norm, "%s", lm_norm_name(norm));
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                   */
/* ------------------------------------------------------------------------ */

/* The shortest %.Ng (N = 15..17) of a finite v that reads back exactly. */
static void fmt_exact(char *buf, size_t n, double v) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* Parse a whole field as a double: optional surrounding blanks, then a number
 * strtod accepts ("nan", "inf" included). 1 on success. */
static int parse_number(const char *s, size_t len, double *out) {
    char buf[128];
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end) return 0;
    /* overflow gives +-HUGE_VAL (inf), underflow a denormal or 0: both are
     * what the text means, so ERANGE is accepted */
    *out = v;
    return 1;
}

/* Copy at most n-1 bytes of a JSON string into a fixed field. */
static void set_field(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src ? src : "");
}

/* ------------------------------------------------------------------------ */
/* CSV                                                                       */
/* ------------------------------------------------------------------------ */

/* Write one value as a CSV field: empty for NaN. */
static void csv_value(FILE *f, double v) {
    char buf[40];
    if (isnan(v)) return;
    if (isinf(v)) {
        fputs(v > 0 ? "inf" : "-inf", f);
        return;
    }
    fmt_exact(buf, sizeof buf, v);
    fputs(buf, f);
}

/* See layermap.h. */
int lm_matrix_write_csv(const lm_matrix *m, const char *path, lm_err *err) {
    if (!m || !path) return lm_fail(err, LM_EARG, "write csv: no matrix or path");
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) return rc;
    fputs("layer", a.f);
    for (int c = 0; c < LM_N_MODULES; c++) fprintf(a.f, ",%s", lm_module_names[c]);
    fputc('\n', a.f);
    for (int l = 0; l < m->n_layer; l++) {
        fprintf(a.f, "%d", lm_matrix_layer(m, l));
        for (int c = 0; c < LM_N_MODULES; c++) {
            fputc(',', a.f);
            csv_value(a.f, m->v[(size_t)l * LM_N_MODULES + (size_t)c]);
        }
        fputc('\n', a.f);
    }
    return lm_atomic_commit(&a, err);
}

/* The expected CSV header, without line end. */
static void csv_header(char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "layer");
    for (int c = 0; c < LM_N_MODULES && k < n; c++) k += (size_t)snprintf(buf + k, n - k, ",%s", lm_module_names[c]);
}

/* Model name for a matrix read from a CSV: the file name without ".csv". */
static void stem_of(char *dst, size_t n, const char *path) {
    const char *b = lm_basename(path);
    size_t len = strcspn(b, "/");
    const char *dot = NULL;
    for (size_t i = 0; i < len; i++)
        if (b[i] == '.') dot = b + i;
    if (dot && dot > b) len = (size_t)(dot - b);
    if (len >= n) len = n - 1;
    memcpy(dst, b, len);
    dst[len] = 0;
}

/* See layermap.h. The model name is the file's stem; method and note are
 * empty and norm "none" (a CSV holds only the numbers). */
int lm_matrix_read_csv(lm_matrix **out, const char *path, lm_err *err) {
    *out = NULL;
    char *text;
    size_t len;
    int rc = lm_file_read_all(path, &text, &len, err);
    if (rc) return rc;
    if (strlen(text) != len) {
        lm_free(text);
        return LM_CORRUPT(err, "%s: not a text file (NUL byte)", path);
    }
    /* lines: [start, end) without "\r\n" / "\n" */
    const char *p = text, *stop = text + len;
    if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3; /* UTF-8 BOM */
    char header[128];
    csv_header(header, sizeof header);
    double *vals = NULL;
    int *nums = NULL; /* layer number of each row */
    size_t cap = 0;
    int n_layer = 0, lineno = 0, saw_header = 0, blank_at = 0, identity = 1;
    lm_matrix *m = NULL;
    rc = LM_OK;
    while (p < stop) {
        const char *eol = memchr(p, '\n', (size_t)(stop - p));
        const char *end = eol ? eol : stop;
        const char *next = eol ? eol + 1 : stop;
        lineno++;
        if (end > p && end[-1] == '\r') end--;
        size_t ll = (size_t)(end - p);
        if (ll == 0) { /* blank lines are allowed only at the end */
            if (!blank_at) blank_at = lineno;
            p = next;
            continue;
        }
        if (blank_at) {
            rc = LM_CORRUPT(err, "%s: line %d: blank line inside the table", path, blank_at);
            goto done;
        }
        if (!saw_header) {
            if (ll != strlen(header) || memcmp(p, header, ll)) {
                rc = LM_CORRUPT(err, "%s: line %d: header is not '%s'", path, lineno, header);
                goto done;
            }
            saw_header = 1;
            p = next;
            continue;
        }
        if (n_layer >= 1000000) {
            rc = LM_CORRUPT(err, "%s: line %d: more than 1000000 layers", path, lineno);
            goto done;
        }
        if ((size_t)(n_layer + 1) * LM_N_MODULES > cap) {
            size_t ncap = cap ? cap * 2 : 64 * LM_N_MODULES;
            double *nv = lm_realloc(vals, ncap * sizeof *nv);
            if (!nv) {
                rc = lm_nomem(err, ncap * sizeof *nv, "csv values");
                goto done;
            }
            vals = nv;
            int *nn = lm_realloc(nums, ncap / LM_N_MODULES * sizeof *nn);
            if (!nn) {
                rc = lm_nomem(err, ncap / LM_N_MODULES * sizeof *nn, "csv layer numbers");
                goto done;
            }
            nums = nn;
            cap = ncap;
        }
        /* fields: layer index, then 7 numbers */
        const char *f = p;
        for (int col = 0; col <= LM_N_MODULES; col++) {
            const char *comma = memchr(f, ',', (size_t)(end - f));
            const char *fe = comma ? comma : end;
            if (col < LM_N_MODULES && !comma) {
                rc = LM_CORRUPT(err, "%s: line %d: %d fields, expected %d", path, lineno, col + 1, LM_N_MODULES + 1);
                goto done;
            }
            if (col == LM_N_MODULES && comma) {
                rc = LM_CORRUPT(err, "%s: line %d: more than %d fields", path, lineno, LM_N_MODULES + 1);
                goto done;
            }
            if (col == 0) {
                /* a decimal number without sign or leading zeros, above the previous row's */
                long num = 0;
                int digits = (int)(fe - f), ok = digits >= 1 && digits <= 7 && !(digits > 1 && f[0] == '0');
                for (const char *q = f; ok && q < fe; q++) {
                    if (*q < '0' || *q > '9') ok = 0;
                    num = num * 10 + (*q - '0');
                }
                int prev = n_layer ? nums[n_layer - 1] : -1;
                if (!ok || num <= prev) {
                    rc = LM_CORRUPT(err, "%s: line %d: layer is '%.*s', expected %d (or a larger layer number)",
                                    path, lineno, (int)((fe - f) > 40 ? 40 : (fe - f)), f, prev + 1);
                    goto done;
                }
                nums[n_layer] = (int)num;
                if (num != n_layer) identity = 0;
            } else {
                double v = NAN;
                int blank = 1;
                for (const char *q = f; q < fe; q++)
                    if (*q != ' ' && *q != '\t') blank = 0;
                if (!blank && !parse_number(f, (size_t)(fe - f), &v)) {
                    rc = LM_CORRUPT(err, "%s: line %d: %s: '%.*s' is not a number", path, lineno,
                                    lm_module_names[col - 1], (int)((fe - f) > 40 ? 40 : (fe - f)), f);
                    goto done;
                }
                vals[(size_t)n_layer * LM_N_MODULES + (size_t)(col - 1)] = v;
            }
            f = fe + 1;
        }
        n_layer++;
        p = next;
    }
    if (!saw_header) {
        rc = LM_CORRUPT(err, "%s: empty file (no header)", path);
        goto done;
    }
    if (n_layer == 0) {
        rc = LM_CORRUPT(err, "%s: no layers after the header", path);
        goto done;
    }
    m = lm_matrix_new(n_layer);
    if (!m) {
        rc = lm_nomem(err, (size_t)n_layer * LM_N_MODULES * sizeof(double), "matrix");
        goto done;
    }
    memcpy(m->v, vals, (size_t)n_layer * LM_N_MODULES * sizeof(double));
    if (!identity) {
        m->layer_index = nums;
        nums = NULL;
    }
    stem_of(m->model, sizeof m->model, path);
    *out = m;
done:
    lm_free(nums);
    lm_free(vals);
    lm_free(text);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/* Write s as a JSON string literal: valid UTF-8 passed through, controls
 * escaped, each byte of an invalid sequence written as U+FFFD. */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x80) {
            int n = lm_utf8_len(p);
            if (n == 0) {
                fputs("\ufffd", f);
            } else {
                fwrite(p, 1, (size_t)n, f);
                p += n - 1;
            }
            continue;
        }
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* Write one value as a JSON number: null for NaN, +-1e999 for infinities. */
static void json_value(FILE *f, double v) {
    char buf[40];
    if (isnan(v)) {
        fputs("null", f);
    } else if (isinf(v)) {
        fputs(v > 0 ? "1e999" : "-1e999", f);
    } else {
        fmt_exact(buf, sizeof buf, v);
        fputs(buf, f);
    }
}

/* One matrix as a JSON object, each line after the first indented by ind. */
static void json_matrix(FILE *f, const lm_matrix *m, const char *ind) {
    fprintf(f, "{\n%s  \"model\": ", ind);
    json_string(f, m->model);
    fprintf(f, ",\n%s  \"method\": ", ind);
    json_string(f, m->method);
    fprintf(f, ",\n%s  \"norm\": ", ind);
    json_string(f, m->norm[0] ? m->norm : "none");
    fprintf(f, ",\n%s  \"note\": ", ind);
    json_string(f, m->note);
    fprintf(f, ",\n%s  \"modules\": [", ind);
    for (int c = 0; c < LM_N_MODULES; c++) {
        if (c) fputs(", ", f);
        json_string(f, lm_module_names[c]);
    }
    fprintf(f, "],\n%s  \"layers\": %d,\n%s  \"values\": [", ind, m->n_layer, ind);
    for (int l = 0; l < m->n_layer; l++) {
        fprintf(f, "%s%s    [", l ? ",\n" : "\n", ind);
        for (int c = 0; c < LM_N_MODULES; c++) {
            if (c) fputs(", ", f);
            json_value(f, m->v[(size_t)l * LM_N_MODULES + (size_t)c]);
        }
        fputc(']', f);
    }
    if (m->n_layer)
        fprintf(f, "\n%s  ]", ind);
    else
        fputs("]", f);
    if (m->layer_extra) {
        fprintf(f, ",\n%s  \"layer_extra\": {\"name\": ", ind);
        json_string(f, m->layer_extra_name);
        fputs(", \"values\": [", f);
        for (int l = 0; l < m->n_layer; l++) {
            if (l) fputs(", ", f);
            json_value(f, m->layer_extra[l]);
        }
        fputs("]}", f);
    }
    if (m->layer_index) {
        fprintf(f, ",\n%s  \"layer_index\": [", ind);
        for (int l = 0; l < m->n_layer; l++) fprintf(f, "%s%d", l ? ", " : "", m->layer_index[l]);
        fputc(']', f);
    }
    if (m->se) {
        fprintf(f, ",\n%s  \"se\": [", ind);
        for (int l = 0; l < m->n_layer; l++) {
            fprintf(f, "%s%s    [", l ? ",\n" : "\n", ind);
            for (int c = 0; c < LM_N_MODULES; c++) {
                if (c) fputs(", ", f);
                json_value(f, m->se[(size_t)l * LM_N_MODULES + (size_t)c]);
            }
            fputc(']', f);
        }
        fprintf(f, "\n%s  ]", ind);
    }
    if (m->se || m->n_samples) {
        fprintf(f, ",\n%s  \"split_half\": ", ind);
        json_value(f, m->split_half);
        fprintf(f, ",\n%s  \"samples\": %d", ind, m->n_samples);
    }
    if (m->meta) {
        fprintf(f, ",\n%s  \"meta\": ", ind);
        fputs(m->meta, f);
    }
    fprintf(f, "\n%s}", ind);
}

/* See layermap.h: one row of values per line, for people reading the file. */
int lm_matrix_write_json(const lm_matrix *m, const char *path, lm_err *err) {
    if (!m || !path) return lm_fail(err, LM_EARG, "write json: no matrix or path");
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) return rc;
    json_matrix(a.f, m, "");
    fputc('\n', a.f);
    return lm_atomic_commit(&a, err);
}

/* See layermap.h: {"matrices": [ <one object as lm_matrix_write_json writes>, ... ]} */
int lm_matrix_write_json_many(const lm_matrix *const *ms, int n, const char *path, lm_err *err) {
    if (!ms || n < 1 || !path) return lm_fail(err, LM_EARG, "write json: no matrices or path");
    for (int i = 0; i < n; i++)
        if (!ms[i]) return lm_fail(err, LM_EARG, "write json: matrix %d missing", i);
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) return rc;
    fputs("{\n  \"matrices\": [\n    ", a.f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(",\n    ", a.f);
        json_matrix(a.f, ms[i], "    ");
    }
    fputs("\n  ]\n}\n", a.f);
    return lm_atomic_commit(&a, err);
}


/* Read an array of exactly n numbers/nulls into out. 0 or LM_ECORRUPT. */
static int json_numbers(const cJSON *arr, int n, double *out, const char *path, const char *what, lm_err *err) {
    if (!cJSON_IsArray(arr)) return LM_CORRUPT(err, "%s: %s is not an array", path, what);
    int got = cJSON_GetArraySize(arr);
    if (got != n) return LM_CORRUPT(err, "%s: %s has %d entries, expected %d", path, what, got, n);
    int i = 0;
    for (const cJSON *x = arr->child; x; x = x->next, i++) {
        if (cJSON_IsNull(x)) {
            out[i] = NAN;
        } else if (cJSON_IsNumber(x)) {
            out[i] = x->valuedouble;
        } else {
            return LM_CORRUPT(err, "%s: %s[%d] is not a number or null", path, what, i);
        }
    }
    return LM_OK;
}

/* An optional string member: NULL when absent, LM_ECORRUPT when not a string. */
static int json_opt_string(const cJSON *root, const char *key, const char **out, const char *path, lm_err *err) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!x || cJSON_IsNull(x)) return LM_OK;
    if (!cJSON_IsString(x)) return LM_CORRUPT(err, "%s: \"%s\" is not a string", path, key);
    *out = x->valuestring;
    return LM_OK;
}

/* One matrix from a JSON object. path is the name messages give (the file,
 * or "file, matrix 2" inside a "matrices" list). "layers" and "values" are
 * required; "modules", when there, must list the seven modules in order;
 * "norm" must be a known name. */
static int json_to_matrix(const cJSON *root, const char *path, lm_matrix **out, lm_err *err) {
    int rc = LM_OK;
    lm_matrix *m = NULL;
    if (!cJSON_IsObject(root)) return LM_CORRUPT(err, "%s: not a JSON object", path);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsNumber(layers)) {
        rc = LM_CORRUPT(err, "%s: missing \"layers\" (a number)", path);
        goto done;
    }
    double nl = layers->valuedouble;
    if (!(nl >= 1 && nl <= 1000000) || nl != floor(nl)) {
        rc = LM_CORRUPT(err, "%s: \"layers\" is %g, expected an integer in 1..1000000", path, nl);
        goto done;
    }
    int n_layer = (int)nl;
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(root, "modules");
    if (mods) {
        int ok = cJSON_IsArray(mods) && cJSON_GetArraySize(mods) == LM_N_MODULES;
        int i = 0;
        for (const cJSON *x = ok ? mods->child : NULL; x; x = x->next, i++)
            if (!cJSON_IsString(x) || strcmp(x->valuestring, lm_module_names[i])) ok = 0;
        if (!ok) {
            rc = LM_CORRUPT(err, "%s: \"modules\" is not [\"attn.q\", ..., \"mlp.gate\"] in layermap's order", path);
            goto done;
        }
    }
    const cJSON *values = cJSON_GetObjectItemCaseSensitive(root, "values");
    if (!cJSON_IsArray(values)) {
        rc = LM_CORRUPT(err, "%s: missing \"values\" (an array of rows)", path);
        goto done;
    }
    if (cJSON_GetArraySize(values) != n_layer) {
        rc = LM_CORRUPT(err, "%s: \"values\" has %d rows, \"layers\" says %d", path, cJSON_GetArraySize(values),
                        n_layer);
        goto done;
    }
    m = lm_matrix_new(n_layer);
    if (!m) {
        rc = lm_nomem(err, (size_t)n_layer * LM_N_MODULES * sizeof(double), "matrix");
        goto done;
    }
    int l = 0;
    for (const cJSON *row = values->child; row; row = row->next, l++) {
        char what[48];
        snprintf(what, sizeof what, "values[%d]", l);
        rc = json_numbers(row, LM_N_MODULES, m->v + (size_t)l * LM_N_MODULES, path, what, err);
        if (rc) goto done;
    }
    const char *s;
    if ((rc = json_opt_string(root, "model", &s, path, err))) goto done;
    set_field(m->model, sizeof m->model, s);
    if ((rc = json_opt_string(root, "method", &s, path, err))) goto done;
    set_field(m->method, sizeof m->method, s);
    if ((rc = json_opt_string(root, "note", &s, path, err))) goto done;
    set_field(m->note, sizeof m->note, s);
    if ((rc = json_opt_string(root, "norm", &s, path, err))) goto done;
    if (s) {
        lm_norm nm;
        if (lm_norm_parse(s, &nm)) {
            rc = LM_CORRUPT(err, "%s: \"norm\" is '%.32s', expected none, layer, module or global", path, s);
            goto done;
        }
        set_field(m->norm, sizeof m->norm, s);
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(root, "layer_extra");
    if (extra && !cJSON_IsNull(extra)) {
        if (!cJSON_IsObject(extra)) {
            rc = LM_CORRUPT(err, "%s: \"layer_extra\" is not an object", path);
            goto done;
        }
        if ((rc = json_opt_string(extra, "name", &s, path, err))) goto done;
        set_field(m->layer_extra_name, sizeof m->layer_extra_name, s);
        m->layer_extra = lm_malloc((size_t)n_layer * sizeof(double));
        if (!m->layer_extra) {
            rc = lm_nomem(err, (size_t)n_layer * sizeof(double), "layer_extra");
            goto done;
        }
        rc = json_numbers(cJSON_GetObjectItemCaseSensitive(extra, "values"), n_layer, m->layer_extra, path,
                          "layer_extra.values", err);
        if (rc) goto done;
    }
    const cJSON *idx = cJSON_GetObjectItemCaseSensitive(root, "layer_index");
    if (idx && !cJSON_IsNull(idx)) {
        double *tmp = lm_malloc((size_t)n_layer * sizeof(double));
        m->layer_index = lm_malloc((size_t)n_layer * sizeof(int));
        if (!tmp || !m->layer_index) {
            lm_free(tmp);
            rc = lm_nomem(err, (size_t)n_layer * sizeof(double), "layer_index");
            goto done;
        }
        rc = json_numbers(idx, n_layer, tmp, path, "layer_index", err);
        for (int l = 0; !rc && l < n_layer; l++) {
            if (!(tmp[l] >= 0 && tmp[l] <= 1000000 && tmp[l] == floor(tmp[l])) ||
                (l && !(tmp[l] > tmp[l - 1])))
                rc = LM_CORRUPT(err, "%s: layer_index[%d] is %g, expected an integer above the previous one", path,
                                l, tmp[l]);
            else
                m->layer_index[l] = (int)tmp[l];
        }
        lm_free(tmp);
        if (rc) goto done;
    }
    const cJSON *se = cJSON_GetObjectItemCaseSensitive(root, "se");
    if (se && !cJSON_IsNull(se)) {
        if (!cJSON_IsArray(se) || cJSON_GetArraySize(se) != n_layer) {
            rc = LM_CORRUPT(err, "%s: \"se\" is not an array of %d rows", path, n_layer);
            goto done;
        }
        m->se = lm_malloc((size_t)n_layer * LM_N_MODULES * sizeof(double));
        if (!m->se) {
            rc = lm_nomem(err, (size_t)n_layer * LM_N_MODULES * sizeof(double), "se");
            goto done;
        }
        int r = 0;
        for (const cJSON *row = se->child; row; row = row->next, r++) {
            char what[48];
            snprintf(what, sizeof what, "se[%d]", r);
            rc = json_numbers(row, LM_N_MODULES, m->se + (size_t)r * LM_N_MODULES, path, what, err);
            if (rc) goto done;
        }
    }
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(root, "split_half");
    if (sh && !cJSON_IsNull(sh)) {
        if (!cJSON_IsNumber(sh) || !(sh->valuedouble >= -1 && sh->valuedouble <= 1)) {
            rc = LM_CORRUPT(err, "%s: \"split_half\" is not a correlation in [-1, 1]", path);
            goto done;
        }
        m->split_half = sh->valuedouble;
    }
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(root, "samples");
    if (ns && !cJSON_IsNull(ns)) {
        if (!cJSON_IsNumber(ns) || !(ns->valuedouble >= 0 && ns->valuedouble <= 2e9) ||
            ns->valuedouble != floor(ns->valuedouble)) {
            rc = LM_CORRUPT(err, "%s: \"samples\" is not a count", path);
            goto done;
        }
        m->n_samples = (int)ns->valuedouble;
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "meta");
    if (meta && !cJSON_IsNull(meta)) {
        if (!cJSON_IsObject(meta)) {
            rc = LM_CORRUPT(err, "%s: \"meta\" is not an object", path);
            goto done;
        }
        char *txt = cJSON_PrintUnformatted(meta);
        if (!txt) {
            rc = lm_nomem(err, 0, "meta");
            goto done;
        }
        rc = lm_matrix_set_meta(m, txt, err);
        cJSON_free(txt);
        if (rc) goto done;
    }
    *out = m;
    m = NULL;
done:
    lm_matrix_free(m);
    return rc;
}


/* Parse path into *root (the caller frees it with cJSON_Delete): the
 * library's one JSON reader (base/json.h: allocation failures are LM_ENOMEM,
 * bad text names the byte), and the root must be an object. */
static int json_parse_file(const char *path, cJSON **root, lm_err *err) {
    *root = NULL;
    cJSON *r = NULL;
    int rc = lm_json_read_file(&r, path, err);
    if (rc) return rc;
    if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        return LM_CORRUPT(err, "%s: not a JSON object", path);
    }
    *root = r;
    return LM_OK;
}

/* See layermap.h. */
int lm_matrix_read_json_many(lm_matrix ***out, int *n, const char *path, lm_err *err) {
    *out = NULL;
    *n = 0;
    cJSON *root;
    int rc = json_parse_file(path, &root, err);
    if (rc) return rc;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "matrices");
    int k = list ? cJSON_GetArraySize(list) : 1;
    lm_matrix **ms = NULL;
    if (list && (!cJSON_IsArray(list) || k < 1)) {
        rc = LM_CORRUPT(err, "%s: \"matrices\" is not a non-empty array", path);
        goto done;
    }
    ms = lm_calloc((size_t)k, sizeof *ms);
    if (!ms) {
        rc = lm_nomem(err, (size_t)k * sizeof *ms, "matrix list");
        goto done;
    }
    if (!list) {
        rc = json_to_matrix(root, path, &ms[0], err);
    } else {
        int i = 0;
        for (const cJSON *x = list->child; x && rc == LM_OK; x = x->next, i++) {
            char where[4200];
            snprintf(where, sizeof where, "%s, matrix %d", path, i + 1);
            rc = json_to_matrix(x, where, &ms[i], err);
        }
    }
    if (rc == LM_OK) {
        *out = ms;
        *n = k;
        ms = NULL;
    }
done:
    if (ms)
        for (int i = 0; i < k; i++) lm_matrix_free(ms[i]);
    lm_free(ms);
    cJSON_Delete(root);
    return rc;
}

/* See layermap.h. */
int lm_matrix_read_json(lm_matrix **out, const char *path, lm_err *err) {
    *out = NULL;
    lm_matrix **ms;
    int n;
    int rc = lm_matrix_read_json_many(&ms, &n, path, err);
    if (rc) return rc;
    if (n == 1) {
        *out = ms[0];
    } else {
        for (int i = 0; i < n; i++) lm_matrix_free(ms[i]);
        rc = lm_fail(err, LM_EARG, "%s: holds %d matrices (\"matrices\"); read it with lm_matrix_read_json_many or `layermap plot`",
                     path, n);
    }
    lm_free(ms);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Terminal heatmap                                                          */
/* ------------------------------------------------------------------------ */

#define CELL_W 10 /* characters per value column */

/* Background escape for the colour of scale position t, and a foreground
 * that stays readable on it. */
static void term_color(FILE *f, double t) {
    double rgb[3];
    lm_colormap(t, rgb);
    int r = (int)lround(rgb[0] * 255), g = (int)lround(rgb[1] * 255), b = (int)lround(rgb[2] * 255);
    double lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
    int fg = lum > 0.45 ? 20 : 250;
    fprintf(f, "\x1b[48;2;%d;%d;%dm\x1b[38;2;%d;%d;%dm", r, g, b, fg, fg, fg);
}

/* A value in at most 9 characters. */
static void short_value(char *buf, size_t n, double v) {
    if (isnan(v))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.3g", v);
}

/* See layermap.h. Title line, module header, one row per layer, and (in
 * colour) a legend line with the scale's range and centre. The colour scale is
 * the one lm_plot_write uses by default (median centre, data range). */
void lm_matrix_print(const lm_matrix *m, FILE *f, int color) {
    if (!m || !f) return;
    char buf[64];
    const char *model = m->model[0] ? m->model : "matrix";
    fprintf(f, "%s", model);
    if (m->method[0]) fprintf(f, " - %s", m->method);
    if (m->norm[0] && strcmp(m->norm, "none")) fprintf(f, " (norm: %s)", m->norm);
    fputc('\n', f);
    lm_scale sc;
    const lm_matrix *one[1] = {m};
    if (color && lm_scale_fit(&sc, one, 1, NULL, NULL) != LM_OK) color = 0; /* no memory for the median */
    fprintf(f, "%5s ", "layer");
    for (int c = 0; c < LM_N_MODULES; c++) fprintf(f, "%*s", CELL_W, lm_module_names[c]);
    if (m->layer_extra) fprintf(f, "  %.20s", m->layer_extra_name[0] ? m->layer_extra_name : "extra");
    fputc('\n', f);
    for (int l = 0; l < m->n_layer; l++) {
        fprintf(f, "%5d ", lm_matrix_layer(m, l));
        for (int c = 0; c < LM_N_MODULES; c++) {
            double v = m->v[(size_t)l * LM_N_MODULES + (size_t)c];
            short_value(buf, sizeof buf, v);
            if (color && !isnan(v)) {
                term_color(f, lm_scale_pos(&sc, v));
                fprintf(f, " %*s\x1b[0m", CELL_W - 1, buf);
            } else {
                fprintf(f, " %*s", CELL_W - 1, buf);
            }
        }
        if (m->layer_extra) {
            short_value(buf, sizeof buf, m->layer_extra[l]);
            fprintf(f, "  %s", buf);
        }
        fputc('\n', f);
    }
    if (color) {
        fprintf(f, "%5s %.3g ", "scale", sc.vmin);
        for (int i = 0; i <= 24; i++) {
            double t = -1 + 2.0 * i / 24; /* evenly in colour: the two sides may span different values */
            double rgb[3];
            lm_colormap(t, rgb);
            fprintf(f, "\x1b[48;2;%d;%d;%dm \x1b[0m", (int)lround(rgb[0] * 255), (int)lround(rgb[1] * 255),
                    (int)lround(rgb[2] * 255));
        }
        fprintf(f, " %.3g  (white = %.3g)\n", sc.vmax, sc.center);
    }
}

void lm_matrix_list_free(lm_matrix **ms, int n) {
    if (!ms) return;
    for (int i = 0; i < n; i++) lm_matrix_free(ms[i]);
    lm_free(ms);
}
