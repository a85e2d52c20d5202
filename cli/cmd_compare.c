/*
 * cmd_compare.c -- `layermap compare A.csv B.json ... [--top K] [-o FILE.csv|.json]`:
 * rank agreement (Spearman, Kendall tau-b, top-k overlap) of every pair.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_INPUTS 64
#define MAX_OUT 8

/* --help text. */
static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap compare MATRIX MATRIX [MATRIX ...] [--top K] [-o FILE.csv|FILE.json]\n\n"
            "How much do matrices agree on where things happen? For every pair of matrices\n"
            "(.csv or .json, as written by diff and attribute; same number of layers), over\n"
            "the layers x 7 cells:\n"
            "  spearman   rank correlation (ties share their average rank)\n"
            "  kendall    Kendall's tau-b (ties handled as in scipy.stats.kendalltau)\n"
            "  top-k      |the k largest cells of A & the k largest of B| / k (ties at the\n"
            "             cut: the lower cell, layer * 7 + module, first)\n"
            "A cell that is NaN (no value) in either matrix is left out of that pair; 'n' is\n"
            "the number of cells used. A correlation with fewer than 2 cells or a constant\n"
            "side is printed as nan.\n\n"
            "  --top K        k of the top-k overlap (default 10; at most the cells used)\n"
            "  -o FILE        write the table as .csv or .json (repeatable)\n"
            "  -q, --quiet    no table on stdout\n"
            "  -h, --help     this text\n\n"
            "example:\n"
            "  layermap compare grad.json fisher.json act.csv --top 20 -o agree.csv\n");
}

/* "%.4f" or "nan" into buf. */
static const char *num(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "nan");
    else snprintf(buf, n, "%.4f", v);
    return buf;
}

/* See usage(). */
int cmd_compare(int argc, char **argv) {
    const char *inputs[MAX_INPUTS], *outs[MAX_OUT];
    int n_in = 0, n_out = 0, quiet = 0;
    long top = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--top") || !strncmp(a, "--top=", 6)) {
            const char *v = a[5] == '=' ? a + 6 : i + 1 < argc ? argv[++i] : NULL;
            if (!v) return cli_errorf("compare: --top needs a value (see --help)") ? 2 : 2;
            if (cli_parse_int("--top", v, 1, 1000000, &top)) return 2;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) return cli_errorf("compare: %s needs a file (see --help)", a) ? 2 : 2;
            if (n_out >= MAX_OUT) return cli_errorf("compare: at most %d output files", MAX_OUT) ? 2 : 2;
            const char *o = argv[++i];
            size_t n = strlen(o);
            if (!((n >= 4 && !strcasecmp(o + n - 4, ".csv")) || (n >= 5 && !strcasecmp(o + n - 5, ".json"))))
                return cli_errorf("compare: %s: the table is written as .csv or .json", o) ? 2 : 2;
            outs[n_out++] = o;
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("compare: unknown or incomplete option '%s' (see --help)", a);
            return 2;
        } else {
            if (n_in >= MAX_INPUTS) return cli_errorf("compare: at most %d matrices", MAX_INPUTS) ? 2 : 2;
            inputs[n_in++] = a;
        }
    }
    if (n_in < 2) {
        if (n_in == 1) cli_errorf("compare: needs at least two matrices (see --help)");
        else usage(stderr);
        return 2;
    }

    lm_matrix *ms[MAX_INPUTS] = {0};
    int n_pairs = n_in * (n_in - 1) / 2;
    lm_compare_stats *st = calloc((size_t)n_pairs, sizeof *st);
    int rc = st ? 0 : cli_errorf("compare: out of memory");
    for (int i = 0; i < n_in && !rc; i++) rc = cli_read_matrix(inputs[i], &ms[i]);
    for (int i = 1; i < n_in && !rc; i++)
        if (ms[i]->n_layer != ms[0]->n_layer)
            rc = cli_errorf("compare: %s has %d layers but %s has %d", inputs[0], ms[0]->n_layer, inputs[i],
                            ms[i]->n_layer);
    for (int i = 0, p = 0; i < n_in && !rc; i++)
        for (int j = i + 1; j < n_in && !rc; j++, p++) {
            lm_err err = {0};
            if (lm_compare(ms[i], ms[j], (int)top, &st[p], &err)) rc = cli_error(&err);
        }
    if (!rc && !quiet) {
        int w = 1;
        for (int i = 0; i < n_in; i++) w = (int)strlen(inputs[i]) > w ? (int)strlen(inputs[i]) : w;
        if (w > 40) w = 40;
        printf("%-*s  %-*s  %5s  %8s  %8s  %s\n", w, "A", w, "B", "cells", "spearman", "kendall", "top-k");
        char b1[32], b2[32], b3[32];
        for (int i = 0, p = 0; i < n_in; i++)
            for (int j = i + 1; j < n_in; j++, p++)
                printf("%-*s  %-*s  %5d  %8s  %8s  %s (k=%d)\n", w, inputs[i], w, inputs[j], st[p].n,
                       num(b1, sizeof b1, st[p].spearman), num(b2, sizeof b2, st[p].kendall),
                       num(b3, sizeof b3, st[p].topk), st[p].k);
    }
    for (int k = 0; k < n_out && !rc; k++) {
        lm_err err = {0};
        if (lm_compare_write(inputs, n_in, st, outs[k], &err)) rc = cli_error(&err);
    }
    for (int i = 0; i < n_in; i++) lm_matrix_free(ms[i]);
    free(st);
    return rc ? 1 : 0;
}
