/*
 * compare.c -- rank agreement of two attribution matrices: Spearman, Kendall
 * tau-b and top-k overlap over the cells (layermap.h, "compare"), and the
 * pairwise table as CSV or JSON.
 *
 * The cells are few (7 x layers, under a thousand), so Kendall's tau-b is the
 * plain O(n^2) count over pairs: exact, no sort-based bookkeeping to get wrong.
 */
#include "base/base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One cell finite-or-infinite in both matrices. */
typedef struct cell {
    double a, b;
    int idx; /* layer * 7 + module */
} cell;

/* What the qsort_r comparators sort indices of: one side of the cells. */
typedef struct sort_ctx {
    const cell *cells;
    int side; /* 0: a, 1: b */
} sort_ctx;

static double side(const cell *c, int s) { return s ? c->b : c->a; }

/* Ascending by value. */
static int by_value_asc(const void *x, const void *y, void *ctx) {
    const sort_ctx *c = ctx;
    double u = side(&c->cells[*(const int *)x], c->side), v = side(&c->cells[*(const int *)y], c->side);
    return u < v ? -1 : u > v ? 1 : 0;
}

/* Descending by value, then ascending by cell index. */
static int by_value_desc_then_index(const void *x, const void *y, void *ctx) {
    const sort_ctx *c = ctx;
    const cell *p = &c->cells[*(const int *)x], *q = &c->cells[*(const int *)y];
    double u = side(p, c->side), v = side(q, c->side);
    if (u != v) return u > v ? -1 : 1;
    return p->idx < q->idx ? -1 : p->idx > q->idx;
}

/* Average ranks (1-based, ties share the mean) of side s of cells[0..n) into
 * rank[0..n); ord is scratch of n ints. */
static void avg_ranks(const cell *cells, int n, int s, int *ord, double *rank) {
    for (int i = 0; i < n; i++) ord[i] = i;
    sort_ctx ctx = {cells, s};
    qsort_r(ord, (size_t)n, sizeof *ord, by_value_asc, &ctx);
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && side(&cells[ord[j]], s) == side(&cells[ord[i]], s)) j++;
        double r = 0.5 * ((double)i + 1 + (double)j); /* mean of ranks i+1 .. j */
        for (int t = i; t < j; t++) rank[ord[t]] = r;
        i = j;
    }
}

/* Pearson correlation of x and y (n values); NaN when either is constant. */
static double pearson(const double *x, const double *y, int n) {
    double mx = 0, my = 0;
    for (int i = 0; i < n; i++) mx += x[i], my += y[i];
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if (sxx <= 0 || syy <= 0) return NAN;
    double r = sxy / sqrt(sxx * syy);
    return r > 1 ? 1 : r < -1 ? -1 : r;
}

/* Kendall tau-b by counting every pair. */
static double kendall_tau_b(const cell *c, int n) {
    int64_t conc = 0, disc = 0, tie_a = 0, tie_b = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            int sa = c[i].a == c[j].a ? 0 : c[i].a < c[j].a ? -1 : 1;
            int sb = c[i].b == c[j].b ? 0 : c[i].b < c[j].b ? -1 : 1;
            if (!sa) tie_a++;
            if (!sb) tie_b++;
            if (sa && sb) {
                if (sa == sb) conc++;
                else disc++;
            }
        }
    int64_t n0 = (int64_t)n * (n - 1) / 2;
    double den = sqrt((double)(n0 - tie_a) * (double)(n0 - tie_b));
    if (!(den > 0)) return NAN;
    double t = (double)(conc - disc) / den;
    return t > 1 ? 1 : t < -1 ? -1 : t;
}

/* |top-k of a & top-k of b| / k. mark is scratch of n chars. */
static double topk_overlap(const cell *cells, int n, int k, int *ord, unsigned char *mark) {
    memset(mark, 0, (size_t)n);
    int common = 0;
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < n; i++) ord[i] = i;
        sort_ctx ctx = {cells, s};
        qsort_r(ord, (size_t)n, sizeof *ord, by_value_desc_then_index, &ctx);
        for (int i = 0; i < k; i++) {
            if (s == 0) mark[ord[i]] = 1;
            else common += mark[ord[i]];
        }
    }
    return (double)common / k;
}

/* See layermap.h. */
int lm_compare(const lm_matrix *a, const lm_matrix *b, int k, lm_compare_stats *out, lm_err *err) {
    if (!a || !b || !out) return lm_fail(err, LM_EARG, "compare: no matrix");
    if (k < 1) return lm_fail(err, LM_EARG, "compare: top-k needs k >= 1, got %d", k);
    if (a->n_layer != b->n_layer)
        return lm_fail(err, LM_ESHAPE, "compare: %s has %d layers, %s has %d", a->model[0] ? a->model : "first matrix",
                       a->n_layer, b->model[0] ? b->model : "second matrix", b->n_layer);
    size_t total = (size_t)a->n_layer * LM_N_MODULES;
    /* plan: cells[total], ord[total] ints, ra/rb[total] doubles, mark[total] */
    cell *cells = lm_malloc((total ? total : 1) * sizeof *cells);
    int *ord = lm_malloc((total ? total : 1) * sizeof *ord);
    double *ra = lm_malloc((total ? total : 1) * sizeof *ra);
    double *rb = lm_malloc((total ? total : 1) * sizeof *rb);
    unsigned char *mark = lm_malloc(total ? total : 1);
    if (!cells || !ord || !ra || !rb || !mark) {
        lm_free(cells);
        lm_free(ord);
        lm_free(ra);
        lm_free(rb);
        lm_free(mark);
        return lm_nomem(err, total * (sizeof *cells + sizeof *ord + 2 * sizeof *ra + 1), "compare");
    }
    int n = 0;
    for (size_t i = 0; i < total; i++) {
        if (isnan(a->v[i]) || isnan(b->v[i])) continue;
        cells[n++] = (cell){.a = a->v[i], .b = b->v[i], .idx = (int)i};
    }
    *out = (lm_compare_stats){.n = n, .k = k < n ? k : n, .spearman = NAN, .kendall = NAN, .topk = NAN};
    if (n >= 2) {
        avg_ranks(cells, n, 0, ord, ra);
        avg_ranks(cells, n, 1, ord, rb);
        out->spearman = pearson(ra, rb, n);
        out->kendall = kendall_tau_b(cells, n);
    }
    if (n >= 1) out->topk = topk_overlap(cells, n, out->k, ord, mark);
    lm_free(cells);
    lm_free(ord);
    lm_free(ra);
    lm_free(rb);
    lm_free(mark);
    return LM_OK;
}

/* A number for CSV/JSON: %.17g, NaN as empty (CSV) or null (JSON). */
static void put_num(FILE *f, double v, int json) {
    if (isnan(v)) fputs(json ? "null" : "", f);
    else fprintf(f, "%.17g", v);
}

/* A string in CSV (quoted when it holds a comma, quote or newline) or JSON. */
static void put_str(FILE *f, const char *s, int json) {
    if (!json && !strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') fputs(json ? "\\\"" : "\"\"", f);
        else if (json && *p == '\\') fputs("\\\\", f);
        else if (json && *p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* See layermap.h. */
int lm_compare_write(const char *const *names, int n_names, const lm_compare_stats *st, const char *path,
                     lm_err *err) {
    if (!path || !names || n_names < 0) return lm_fail(err, LM_EARG, "compare: no output path");
    int json;
    size_t len = strlen(path);
    if (len >= 4 && !strcasecmp(path + len - 4, ".csv")) json = 0;
    else if (len >= 5 && !strcasecmp(path + len - 5, ".json")) json = 1;
    else return lm_fail(err, LM_EARG, "%s: compare writes .csv or .json", path);
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) return rc;
    FILE *f = a.f;
    fputs(json ? "{\n  \"pairs\": [" : "a,b,n,k,spearman,kendall,topk\n", f);
    int p = 0;
    for (int i = 0; i < n_names; i++)
        for (int j = i + 1; j < n_names; j++, p++) {
            const lm_compare_stats *s = &st[p];
            if (json) {
                fputs(p ? ",\n    {\"a\": " : "\n    {\"a\": ", f);
                put_str(f, names[i], 1);
                fputs(", \"b\": ", f);
                put_str(f, names[j], 1);
                fprintf(f, ", \"n\": %d, \"k\": %d, \"spearman\": ", s->n, s->k);
                put_num(f, s->spearman, 1);
                fputs(", \"kendall\": ", f);
                put_num(f, s->kendall, 1);
                fputs(", \"topk\": ", f);
                put_num(f, s->topk, 1);
                fputc('}', f);
            } else {
                put_str(f, names[i], 0);
                fputc(',', f);
                put_str(f, names[j], 0);
                fprintf(f, ",%d,%d,", s->n, s->k);
                put_num(f, s->spearman, 0);
                fputc(',', f);
                put_num(f, s->kendall, 0);
                fputc(',', f);
                put_num(f, s->topk, 0);
                fputc('\n', f);
            }
        }
    if (json) fputs(p ? "\n  ]\n}\n" : "]\n}\n", f);
    return lm_atomic_commit(&a, err);
}
