/*
 * common.c -- pieces every layermap command shares: error messages, the
 * progress bar, the output options (-o, --norm, ...) and their emission, and
 * strict number parsing.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static int progress_on_screen; /* a bar is drawn on stderr and not yet cleared */

/* Erase a progress bar so that a message starts on a clean line. */
static void clear_progress_line(void) {
    if (!progress_on_screen) return;
    fputs(isatty(STDERR_FILENO) ? "\r\x1b[K" : "\n", stderr);
    progress_on_screen = 0;
}

/* See cli.h. */
int cli_error(const lm_err *err) {
    clear_progress_line();
    if (err && err->msg[0])
        fprintf(stderr, "layermap: %s\n", err->msg);
    else
        fprintf(stderr, "layermap: %s\n", lm_strerror(err ? err->code : LM_EINTERNAL));
    return 1;
}

/* See cli.h. */
int cli_errorf(const char *fmt, ...) {
    clear_progress_line();
    va_list ap;
    va_start(ap, fmt);
    fputs("layermap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Progress bar                                                              */
/* ------------------------------------------------------------------------ */

/* Monotonic seconds. */
/* Monotonic seconds. */
double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Progress goes to stderr unless --progress 0 or LM_PROGRESS=0: a bar on a
 * terminal, a line every cli_progress_secs elsewhere (a log file). */
static int progress_enabled(void) {
    const char *e = getenv("LM_PROGRESS");
    if (e && *e && !strcmp(e, "0")) return 0;
    return cli_progress_secs > 0;
}

/* See cli.h. */
void cli_progress_init(cli_progress *p) {
    p->t0 = cli_now();
    p->last = 0;
    p->shown = 0;
    p->base = 0;
    p->unit = NULL;
}

/* A count with an SI suffix: 950, 12.3k, 4.56M. */
static void si(char *buf, size_t n, double v) {
    const char *suf[] = {"", "k", "M", "G", "T"};
    int i = 0;
    while (v >= 1000 && i < 4) {
        v /= 1000;
        i++;
    }
    snprintf(buf, n, i ? "%.3g%s" : "%.0f%s", v, suf[i]);
}

/* Seconds as m:ss or h:mm:ss. */
static void hms(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 359999) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = lround(s);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* See cli.h: "what [#####.....]  42%  1.2k/s  ETA 0:13", only once the work
 * has lasted a second; on a terminal redrawn in place at most ten times a
 * second. Elsewhere (a log) one line every cli_progress_secs:
 * "layermap: what: 1.2k/4.5k tok (27%), 1.1k tok/s, ETA 0:03, 0:01 elapsed". */
void cli_progress_cb(void *ctx, double done, double total, const char *what) {
    cli_progress *p = ctx;
    if (!p) return;
    double t = cli_now(), el = t - p->t0;
    if (el < 1.0 || t - p->last < 0.1) return;
    if (!progress_enabled()) return;
    int tty = isatty(STDERR_FILENO);
    if (!tty && (p->last > 0 ? t - p->last : el) < cli_progress_secs) return; /* first line after one interval */
    p->last = t;
    if (!tty) { /* a log line */
        char d[32], tot[32], rate[32], eta[32], elap[32];
        double r = done > p->base ? (done - p->base) / el : 0;
        const char *u = p->unit ? p->unit : "";
        si(d, sizeof d, done);
        si(tot, sizeof tot, total);
        si(rate, sizeof rate, r);
        hms(eta, sizeof eta, r > 0 && total > 0 ? (total - done) / r : -1);
        hms(elap, sizeof elap, el);
        fprintf(stderr, "layermap: %s: %s/%s%s%s (%.0f%%), %s %s/s, ETA %s, %s elapsed\n", what ? what : "", d, tot,
                *u ? " " : "", u, total > 0 ? 100 * done / total : 0.0, rate, *u ? u : "", eta, elap);
        fflush(stderr);
        return;
    }
    int width = 80;
    struct winsize ws;
    if (tty && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width = ws.ws_col;
    char rate[32], eta[32], tail[96];
    double r = done > p->base ? (done - p->base) / el : 0;
    si(rate, sizeof rate, r);
    if (total > 0) {
        double f = done / total;
        if (f < 0) f = 0;
        if (f > 1) f = 1;
        hms(eta, sizeof eta, r > 0 ? (total - done) / r : -1);
        snprintf(tail, sizeof tail, " %3.0f%%  %s/s  ETA %s", 100 * f, rate, eta);
        int bar = width - 1 - (int)strlen(what ? what : "") - 3 - (int)strlen(tail);
        if (bar > 40) bar = 40;
        fprintf(stderr, "%s%s [", tty ? "\r" : "", what ? what : "");
        if (bar > 0) {
            int fill = (int)(f * bar + 0.5);
            for (int i = 0; i < bar; i++) fputc(i < fill ? '#' : '.', stderr);
        }
        fprintf(stderr, "]%s", tail);
    } else {
        char cnt[32];
        si(cnt, sizeof cnt, done);
        hms(eta, sizeof eta, el);
        fprintf(stderr, "%s%s %s  %s/s  %s", tty ? "\r" : "", what ? what : "", cnt, rate, eta);
    }
    fputs(tty ? "\x1b[K" : "\n", stderr);
    fflush(stderr);
    p->shown = 1;
    progress_on_screen = tty;
}

/* See cli.h: clear the bar's line if one was drawn. */
void cli_progress_end(cli_progress *p) {
    if (p && p->shown) {
        if (isatty(STDERR_FILENO)) fputs("\r\x1b[K", stderr);
        fflush(stderr);
        p->shown = 0;
    }
    progress_on_screen = 0;
}

/* ------------------------------------------------------------------------ */
/* Number parsing                                                            */
/* ------------------------------------------------------------------------ */

/* See cli.h. */
int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        cli_errorf("%s: '%s' is not an integer in [%ld, %ld]", opt, s ? s : "", lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* See cli.h: a finite number. */
int cli_parse_double(const char *opt, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v)) {
        cli_errorf("%s: '%s' is not a finite number", opt, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* See cli.h. */
int cli_parse_compute(const char *opt, const char *s, int *out) {
    int c = s ? lm_compute_parse(s) : -1;
    if (c < 0) {
        cli_errorf("%s: '%s' is not one of f32, bf16, bf16-ref, auto", opt, s ? s : "");
        return -1;
    }
    *out = c;
    return 0;
}

void cli_compute_note(const lm_engine *e, int asked) {
    int got = lm_engine_compute(e);
    if (asked == LM_COMPUTE_AUTO && got == LM_COMPUTE_F32)
        fprintf(stderr, "layermap: --compute auto: no bf16 instructions (AVX512_BF16 / AMX) or no oneDNN here: "
                        "computing in f32\n");
    if (cli_verbose) fprintf(stderr, "layermap: products in %s\n", lm_compute_name(got));
}

const char cli_compute_help[] =
    "  --compute C         matrix products: f32 (default, the reference) | bf16 (inputs rounded to\n"
    "                      bf16, F32 accumulation, element-wise work in F32: oneDNN on AMX or\n"
    "                      AVX512_BF16; an error on other CPUs) | auto (bf16 where the CPU has it,\n"
    "                      else f32) | bf16-ref (bf16's rounding on any CPU at f32 speed: to check\n"
    "                      accuracy). README \"bf16\" has its measured accuracy\n";

/* ------------------------------------------------------------------------ */
/* Output options                                                            */
/* ------------------------------------------------------------------------ */

const char *const cli_out_help =
    "\noutput options:\n"
    "  -o, --output FILE   write FILE, its kind chosen by the extension: .png .svg .pdf\n"
    "                      (heatmap figure), .csv or .json (the matrix); repeatable\n"
    "  --csv FILE.csv      --json FILE.json   the same, for one kind\n"
    "  --norm N            none (default) | layer (each layer's row sums to 1) |\n"
    "                      module (each column sums to 1) | global (the matrix sums to 1);\n"
    "                      sums of absolute values, so signs are kept\n"
    "  --title T           figure title (default: MODEL - METHOD)\n"
    "  --center X          value drawn white (default: 0 for signed quantities such as\n"
    "                      ablate, act-grad, ig, grad-weight-signed, with a range [-M, M]\n"
    "                      symmetric about it; the median of the values for magnitudes)\n"
    "  --vmin X, --vmax X  colour range, values beyond are clipped (default: the data's\n"
    "                      range); one alone fixes that end only (for a signed quantity,\n"
    "                      both: -X to X)\n"
    "  --shared-scale      one colour scale for every matrix of a figure, even when they\n"
    "                      show different quantities (default: shared only for the same one)\n"
    "  --label-step N      label every Nth layer (default: about 10 labels)\n"
    "  -q, --quiet         no heatmap on stdout (printed in colour on a terminal unless\n"
    "                      NO_COLOR is set)\n";

/* See cli.h. */
void cli_out_init(cli_out *o) {
    memset(o, 0, sizeof *o);
    o->norm = LM_NORM_NONE;
    lm_plot_opts_default(&o->plot);
    o->plot.vmin = NAN; /* unset until --vmin / --vmax */
    o->plot.vmax = NAN;
}

enum { KIND_NONE, KIND_FIGURE, KIND_CSV, KIND_JSON };

/* Kind of output file from its extension (case-insensitive). */
static int out_kind(const char *path) {
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash) || dot == path || (slash && dot == slash + 1)) return KIND_NONE;
    if (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".svg") || !strcasecmp(dot, ".pdf")) return KIND_FIGURE;
    if (!strcasecmp(dot, ".csv")) return KIND_CSV;
    if (!strcasecmp(dot, ".json")) return KIND_JSON;
    return KIND_NONE;
}

/* If arg is option name ("--norm") or "name=value", set *val (the next
 * argument, or the text after '=') and return 1; -1 when the value is
 * missing; 0 when arg is another option. */
static int opt_value(const char *name, int argc, char **argv, int *i, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n)) return 0;
    if (a[n] == '=' && name[1] == '-') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n]) return 0;
    if (*i + 1 >= argc) {
        cli_errorf("%s needs a value (see --help)", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

/* Check an output file before the work starts: a known extension (or the one
 * its option asks for), room in the list, and a directory that exists and
 * can be written. */
static int add_file(cli_out *o, const char *opt, const char *path, int want) {
    int kind = out_kind(path);
    if (!*path) return cli_errorf("%s: empty file name", opt), -1;
    if (kind == KIND_NONE)
        return cli_errorf("%s %s: unknown output kind (use .png, .svg, .pdf, .csv or .json)", opt, path), -1;
    if (want && kind != want)
        return cli_errorf("%s %s: the file name must end in %s", opt, path, want == KIND_CSV ? ".csv" : ".json"), -1;
    for (int k = 0; k < o->n_files; k++)
        if (!strcmp(o->files[k], path)) return 1; /* named twice: write once */
    if (o->n_files >= CLI_MAX_OUT) return cli_errorf("%s: at most %d output files", opt, CLI_MAX_OUT), -1;
    /* whether it can be written: cli_out_check_writable, before any work */
    o->files[o->n_files++] = path;
    return 1;
}

/* See cli.h. */
int cli_out_parse(cli_out *o, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v = NULL;
    int r;
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
        o->quiet = 1;
        return 1;
    }
    if (!strcmp(a, "--shared-scale")) {
        o->plot.scales = LM_PLOT_SCALE_SHARED;
        return 1;
    }
    if ((r = opt_value("-o", argc, argv, i, &v)) || (r = opt_value("--output", argc, argv, i, &v)))
        return r < 0 ? -1 : add_file(o, a, v, KIND_NONE);
    if ((r = opt_value("--csv", argc, argv, i, &v))) return r < 0 ? -1 : add_file(o, "--csv", v, KIND_CSV);
    if ((r = opt_value("--json", argc, argv, i, &v))) return r < 0 ? -1 : add_file(o, "--json", v, KIND_JSON);
    if ((r = opt_value("--norm", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (lm_norm_parse(v, &o->norm)) {
            cli_errorf("--norm: '%s' is not none, layer, module or global", v);
            return -1;
        }
        return 1;
    }
    if ((r = opt_value("--title", argc, argv, i, &v))) {
        if (r < 0) return -1;
        o->plot.title = v;
        return 1;
    }
    if ((r = opt_value("--center", argc, argv, i, &v)) || (r = opt_value("--centre", argc, argv, i, &v))) {
        if (r < 0 || cli_parse_double("--center", v, &o->plot.center)) return -1;
        o->plot.has_center = 1;
        return 1;
    }
    if ((r = opt_value("--vmin", argc, argv, i, &v))) {
        if (r < 0 || cli_parse_double("--vmin", v, &o->plot.vmin)) return -1;
        o->plot.has_range = !isnan(o->plot.vmin) && !isnan(o->plot.vmax);
        return 1;
    }
    if ((r = opt_value("--vmax", argc, argv, i, &v))) {
        if (r < 0 || cli_parse_double("--vmax", v, &o->plot.vmax)) return -1;
        o->plot.has_range = !isnan(o->plot.vmin) && !isnan(o->plot.vmax);
        return 1;
    }
    if ((r = opt_value("--label-step", argc, argv, i, &v))) {
        long n;
        if (r < 0 || cli_parse_int("--label-step", v, 1, 1000000, &n)) return -1;
        o->plot.label_step = (int)n;
        return 1;
    }
    return 0;
}

/* Final plot options for ms: a lone --vmin or --vmax gets its other end from
 * the data (the largest / smallest finite value, or the centre if that is
 * beyond); for a signed quantity without --center, the mirror of the given
 * end about 0 when that gives a range, so 0 stays white and the range
 * symmetric. 0, or -1 after printing an error. */
static int plot_opts_for(const cli_out *o, lm_matrix *const *ms, int n, lm_plot_opts *po) {
    *po = o->plot;
    int has_min = !isnan(po->vmin), has_max = !isnan(po->vmax);
    if (has_min && has_max) {
        if (!(po->vmin < po->vmax)) return cli_errorf("--vmin %g must be below --vmax %g", po->vmin, po->vmax), -1;
        po->has_range = 1;
        return 0;
    }
    po->has_range = 0;
    if (!has_min && !has_max) return 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < (size_t)ms[i]->n_layer * LM_N_MODULES; k++) {
            double x = ms[i]->v[k];
            if (!isfinite(x)) continue;
            if (x < lo) lo = x;
            if (x > hi) hi = x;
        }
    if (po->has_center) {
        lo = fmin(lo, po->center);
        hi = fmax(hi, po->center);
    }
    int sym = !po->has_center && lm_plot_is_signed((const lm_matrix *const *)ms, n);
    if (has_min) po->vmax = sym && -po->vmin > po->vmin ? -po->vmin : hi;
    if (has_max) po->vmin = sym && -po->vmax < po->vmax ? -po->vmax : lo;
    if (!(po->vmin < po->vmax))
        return cli_errorf("--%s %g leaves no range for the data (%s %g)", has_min ? "vmin" : "vmax",
                          has_min ? po->vmin : po->vmax, has_min ? "largest value" : "smallest value",
                          has_min ? hi : lo),
               -1;
    po->has_range = 1;
    return 0;
}

/* Colour on stdout: a terminal and no NO_COLOR (https://no-color.org). */
static int stdout_color(void) {
    const char *nc = getenv("NO_COLOR");
    return isatty(STDOUT_FILENO) && !(nc && *nc);
}

/* Write one csv/json file; 0 or 1 after printing the error. */
static int write_data(const char *path, const lm_matrix *m) {
    lm_err err = {0};
    int rc = out_kind(path) == KIND_CSV ? lm_matrix_write_csv(m, path, &err) : lm_matrix_write_json(m, path, &err);
    return rc ? cli_error(&err) : 0;
}

/* Normalise every matrix, print them unless quiet; 0 or 1. */
static int normalize_and_print(const cli_out *o, lm_matrix *const *ms, int n) {
    lm_err err = {0};
    for (int i = 0; i < n; i++)
        if (lm_matrix_normalize(ms[i], o->norm, &err)) return cli_error(&err);
    if (!o->quiet) {
        int color = stdout_color();
        for (int i = 0; i < n; i++) {
            if (i) fputc('\n', stdout);
            lm_matrix_print(ms[i], stdout, color);
        }
        fflush(stdout);
    }
    return 0;
}

/* Report a written file on stderr (unless quiet). */
static void wrote(const cli_out *o, const char *path) {
    if (!o->quiet) fprintf(stderr, "layermap: wrote %s\n", path);
}

/* See cli.h. Every file is attempted even after one fails, so a long
 * computation keeps whatever can be saved. */
int cli_out_emit(const cli_out *o, lm_matrix *m) {
    lm_plot_opts po;
    if (normalize_and_print(o, &m, 1)) return 1;
    if (o->n_files && plot_opts_for(o, &m, 1, &po)) return 1;
    int bad = 0;
    for (int k = 0; k < o->n_files; k++) {
        const char *path = o->files[k];
        int rc;
        if (out_kind(path) == KIND_FIGURE) {
            lm_err err = {0};
            const lm_matrix *one[1] = {m};
            rc = lm_plot_write(one, 1, &po, path, &err) ? cli_error(&err) : 0;
        } else {
            rc = write_data(path, m);
        }
        if (rc)
            bad = 1;
        else
            wrote(o, path);
    }
    return bad;
}

/* Copy s into dst keeping [A-Za-z0-9._+-] and turning anything else into '_'. */
static void sanitize(char *dst, size_t n, const char *s) {
    size_t k = 0;
    for (; *s && k + 1 < n; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '+' || c == '-';
        dst[k++] = ok ? c : '_';
    }
    dst[k] = 0;
}

/* 1 when the strings field(ms[i]) are all non-empty and distinct. */
static int all_distinct(lm_matrix *const *ms, int n, int use_model) {
    for (int i = 0; i < n; i++) {
        const char *a = use_model ? ms[i]->model : ms[i]->method;
        if (!a[0]) return 0;
        for (int j = 0; j < i; j++)
            if (!strcmp(a, use_model ? ms[j]->model : ms[j]->method)) return 0;
    }
    return 1;
}

/* See cli.h. The suffix of each data file is the matrix's method; when the
 * methods are not all distinct, its model; failing that, 1, 2, ... */
int cli_out_emit_many(const cli_out *o, lm_matrix **ms, int n) {
    if (n == 1) return cli_out_emit(o, ms[0]);
    lm_plot_opts po;
    if (normalize_and_print(o, ms, n)) return 1;
    if (o->n_files && plot_opts_for(o, ms, n, &po)) return 1;
    int by_method = all_distinct(ms, n, 0), by_model = !by_method && all_distinct(ms, n, 1);
    int bad = 0;
    for (int k = 0; k < o->n_files; k++) {
        const char *path = o->files[k];
        if (out_kind(path) == KIND_FIGURE) {
            lm_err err = {0};
            if (lm_plot_write((const lm_matrix *const *)ms, n, &po, path, &err))
                bad = cli_error(&err);
            else
                wrote(o, path);
            continue;
        }
        const char *dot = strrchr(path, '.');
        for (int i = 0; i < n; i++) {
            char suffix[300], name[4096 + 320];
            if (by_method || by_model)
                sanitize(suffix, sizeof suffix, by_method ? ms[i]->method : ms[i]->model);
            else
                snprintf(suffix, sizeof suffix, "%d", i + 1);
            snprintf(name, sizeof name, "%.*s-%s%s", (int)(dot - path), path, suffix, dot);
            if (write_data(name, ms[i]))
                bad = 1;
            else
                wrote(o, name);
        }
    }
    return bad;
}

/* See cli.h. */
int cli_read_matrix(const char *path, lm_matrix **m) {
    lm_err err = {0};
    size_t n = strlen(path);
    int rc;
    if (n >= 4 && !strcasecmp(path + n - 4, ".csv"))
        rc = lm_matrix_read_csv(m, path, &err);
    else if (n >= 5 && !strcasecmp(path + n - 5, ".json"))
        rc = lm_matrix_read_json(m, path, &err);
    else
        return cli_errorf("%s: not a .csv or .json matrix", path);
    return rc ? cli_error(&err) : 0;
}

