/*
 * cmd_plot.c -- `layermap plot A.csv|A.json [B ...] -o fig.png [--grid]`:
 * re-plot saved matrices, one figure each or a grid (one colour scale for one
 * quantity, else one per panel unless --shared-scale).
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
            "usage: layermap plot MATRIX [MATRIX ...] -o FIG.png [--grid [--cols N]] [options]\n\n"
            "Re-plot matrices saved by diff or attribute (.csv or .json; a .json keeps the model,\n"
            "method and normalisation for the title, a .csv gives its file name as the model; a .json\n"
            "of several matrices from `attribute -m a,b` gives each of them).\n"
            "Prints each matrix as a heatmap on stdout and writes every -o file.\n\n"
            "  --grid              several matrices in one figure, side by side, each panel titled\n"
            "                      with its model and method (layer counts may differ); one shared\n"
            "                      colour scale when they show the same quantity (method and --norm),\n"
            "                      else one scale per panel (a warning says so; --shared-scale forces one)\n"
            "  --cols N            panels per row of the grid (default: all in one row)\n"
            "  --layers L          only these layers' rows, e.g. 0-5,20 (by layer number)\n"
            "  -h, --help          this text\n\n"
            "Without --grid, each of several matrices gets its own figure (and scale): the name\n"
            "of every -o file gets \"-<input name>\" (\"-<input name>-<method>\" for one of several\n"
            "matrices of a .json) inserted before its extension.\n\n"
            "examples:\n"
            "  layermap plot diff.json -o diff.pdf --norm layer\n"
            "  layermap plot a.json b.json c.json --grid --cols 2 -o grid.png --center 0\n"
            "%s",
            cli_out_help);
}

/* Read the matrices of path by its extension (.csv: one; .json: one, or each
 * of a {"matrices": [...]} file) into ms[*n...], at most MAX_INPUTS in all.
 * 0, or 1 after printing. */
static int read_matrices(const char *path, lm_matrix **ms, int *n) {
    lm_err err = {0};
    size_t len = strlen(path);
    int rc;
    if (len >= 4 && !strcasecmp(path + len - 4, ".csv")) {
        if (*n >= MAX_INPUTS) return cli_errorf("plot: at most %d matrices", MAX_INPUTS);
        rc = lm_matrix_read_csv(&ms[*n], path, &err);
        if (rc == LM_OK) (*n)++;
    } else if (len >= 5 && !strcasecmp(path + len - 5, ".json")) {
        lm_matrix **list;
        int k;
        rc = lm_matrix_read_json_many(&list, &k, path, &err);
        if (rc == LM_OK) {
            if (*n + k > MAX_INPUTS) {
                lm_matrix_list_free(list, k);
                return cli_errorf("plot: at most %d matrices (%s holds %d)", MAX_INPUTS, path, k);
            }
            for (int i = 0; i < k; i++) {
                ms[(*n)++] = list[i];
                list[i] = NULL;
            }
            lm_matrix_list_free(list, k);
        }
    } else {
        return cli_errorf("%s: not a .csv or .json matrix", path);
    }
    return rc ? cli_error(&err) : 0;
}

/* The stem of a path: its file name without directory and extension. */
static void stem(char *dst, size_t n, const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    size_t len = dot && dot > b ? (size_t)(dot - b) : strlen(b);
    snprintf(dst, n, "%.*s", (int)len, b);
}

/* Emit input i alone: every output name gets "-<stem of input>" before its
 * extension ("-<stem>-<method>" for one of several matrices of a .json). */
static int emit_one_of_many(const cli_out *out, lm_matrix *m, const char *input, int of_several) {
    static char names[CLI_MAX_OUT][4096 + 300];
    cli_out o = *out;
    char st[256], base[200];
    stem(base, sizeof base, input);
    if (of_several) {
        snprintf(st, sizeof st, "%s-%.40s", base, m->method);
        for (char *c = st + strlen(base); *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
                  *c == '_' || *c == '+' || *c == '-'))
                *c = '_';
    } else {
        snprintf(st, sizeof st, "%s", base);
    }
    for (int k = 0; k < o.n_files; k++) {
        const char *path = out->files[k];
        const char *slash = strrchr(path, '/');
        const char *dot = strrchr(path, '.');
        if (!dot || (slash && dot < slash)) dot = path + strlen(path);
        snprintf(names[k], sizeof names[k], "%.*s-%s%s", (int)(dot - path), path, st, dot);
        o.files[k] = names[k];
    }
    return cli_out_emit(&o, m);
}

/* See usage(). */
int cmd_plot(int argc, char **argv) {
    const char *inputs[MAX_INPUTS];
    int n_in = 0, grid = 0;
    long cols = 0;
    const char *layers_s = NULL;
    cli_out out;
    cli_out_init(&out);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_out_parse(&out, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (i + 1 < argc && !strcmp(a, "--layers")) {
            layers_s = argv[++i];
        } else if (!strcmp(a, "--grid")) {
            grid = 1;
        } else if (!strcmp(a, "--cols") || !strncmp(a, "--cols=", 7)) {
            const char *v = a[6] == '=' ? a + 7 : i + 1 < argc ? argv[++i] : NULL;
            if (!v) return cli_errorf("--cols needs a value (see --help)") ? 2 : 2;
            if (cli_parse_int("--cols", v, 1, MAX_INPUTS, &cols)) return 2;
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("plot: unknown or incomplete option '%s' (see --help)", a);
            return 2;
        } else {
            if (n_in >= MAX_INPUTS) return cli_errorf("plot: at most %d matrices", MAX_INPUTS) ? 2 : 2;
            inputs[n_in++] = a;
        }
    }
    if (n_in == 0) {
        usage(stderr);
        return 2;
    }
    if (cols && !grid) return cli_errorf("plot: --cols is for --grid") ? 2 : 2;
    out.plot.cols = (int)cols;
    uint8_t *keep = NULL;
    int keep_max = -1;
    if (layers_s && cli_parse_layers(layers_s, &keep, &keep_max)) return 2;
    if (cli_out_check_writable(&out)) {
        free(keep);
        return 1;
    }

    lm_matrix *ms[MAX_INPUTS] = {0};
    int from[MAX_INPUTS + 1]; /* matrices of input i: ms[from[i] .. from[i+1]) */
    int n_ms = 0, rc = 0;
    for (int i = 0; i < n_in && !rc; i++) {
        from[i] = n_ms;
        rc = read_matrices(inputs[i], ms, &n_ms);
        from[i + 1] = n_ms;
        for (int j = from[i]; j < n_ms && !rc && keep; j++) {
            lm_err err = {0};
            if (lm_matrix_select_layers(ms[j], keep, keep_max + 1, &err))
                rc = cli_errorf("%s: --layers %s: %s", inputs[i], layers_s, err.msg);
        }
    }
    free(keep);
    if (!rc && grid && n_ms > 1 && out.plot.scales != LM_PLOT_SCALE_SHARED &&
        !lm_plot_same_quantity((const lm_matrix *const *)ms, n_ms))
        fprintf(stderr, "layermap: plot: the matrices show different quantities (methods or --norm differ): "
                        "each panel gets its own colour scale (--shared-scale for one)\n");
    if (!rc) {
        if (n_ms == 1 || grid) {
            rc = cli_out_emit_many(&out, ms, n_ms);
        } else {
            for (int i = 0; i < n_in; i++)
                for (int j = from[i]; j < from[i + 1]; j++) {
                    if (j && !out.quiet) fputc('\n', stdout);
                    rc |= emit_one_of_many(&out, ms[j], inputs[i], from[i + 1] - from[i] > 1);
                }
        }
    }
    for (int i = 0; i < n_ms; i++) lm_matrix_free(ms[i]);
    return rc ? 1 : 0;
}
