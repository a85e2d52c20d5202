/*
 * cmd_report.c -- `layermap report A.json B.json ... -o report.html [--recipe FILE]`:
 * one self-contained HTML file with every matrix, its metadata and the method
 * agreement table.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_INPUTS 64

/* --help text. */
static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap report MATRIX [MATRIX ...] -o report.html [--recipe FILE] [--top K]\n\n"
            "One self-contained HTML file (no external URL: it opens offline) with, for every\n"
            "matrix (.json or .csv from diff or attribute): a heatmap drawn as inline SVG\n"
            "(the blue-white-orange scale of the plots, centred at the median; hover a cell\n"
            "for its value), the run metadata the file carries (model, method, norm, note\n"
            "and every key under \"meta\" of a JSON file) and its values as a table; then\n"
            "the rank agreement of every pair (as `layermap compare`: Spearman, Kendall\n"
            "tau-b, top-k overlap) and the text of a recipe file.\n\n"
            "  -o FILE         the .html file (required)\n"
            "  --recipe FILE   include this text file (e.g. a quantization recipe) verbatim\n"
            "  --top K         k of the top-k overlap (default 10)\n"
            "  -h, --help      this text\n\n"
            "example:\n"
            "  layermap report grad.json fisher.json diff.json --recipe types.txt -o report.html\n");
}

/* See usage(). */
int cmd_report(int argc, char **argv) {
    const char *inputs[MAX_INPUTS], *out = NULL, *recipe = NULL;
    int n_in = 0;
    long top = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--recipe") || !strcmp(a, "--top")) {
            if (!v) return cli_errorf("report: %s needs a value (see --help)", a) ? 2 : 2;
            i++;
            if (!strcmp(a, "--recipe")) recipe = v;
            else if (!strcmp(a, "--top")) {
                if (cli_parse_int("--top", v, 1, 1000000, &top)) return 2;
            } else out = v;
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("report: unknown or incomplete option '%s' (see --help)", a);
            return 2;
        } else {
            if (n_in >= MAX_INPUTS) return cli_errorf("report: at most %d matrices", MAX_INPUTS) ? 2 : 2;
            inputs[n_in++] = a;
        }
    }
    if (n_in == 0) {
        usage(stderr);
        return 2;
    }
    if (!out) return cli_errorf("report: -o FILE.html is required (see --help)") ? 2 : 2;
    size_t ol = strlen(out);
    if (!((ol >= 5 && !strcasecmp(out + ol - 5, ".html")) || (ol >= 4 && !strcasecmp(out + ol - 4, ".htm"))))
        return cli_errorf("report: %s: the report is written as .html", out) ? 2 : 2;
    lm_err err = {0};
    if (lm_report_write(inputs, n_in, recipe, (int)top, out, &err)) return cli_error(&err);
    printf("wrote %s (%d matri%s)\n", out, n_in, n_in == 1 ? "x" : "ces");
    return 0;
}
