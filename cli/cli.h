/*
 * cli.h -- shared pieces of the layermap command-line tool. The CLI is a thin
 * layer over layermap.h: parse options, call the library, print and exit.
 */
#ifndef LM_CLI_H
#define LM_CLI_H

#include "layermap.h"

/* Every command: argc/argv start at the command name; returns the exit code. */
int cmd_inspect(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_attribute(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_lora(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* Print "layermap: <msg>" to stderr and return 1 (exit code for errors). */
int cli_error(const lm_err *err);
int cli_errorf(const char *fmt, ...);

/* Progress bar on stderr for work that lasts over a second; only when stderr
 * is a terminal (or LM_PROGRESS=1). Use as an lm_progress_fn with ctx = a
 * cli_progress. */
typedef struct cli_progress {
    double t0;
    double last;
    int shown;
} cli_progress;
void cli_progress_init(cli_progress *p);
void cli_progress_cb(void *ctx, double done, double total, const char *what);
void cli_progress_end(cli_progress *p);

/* Output options every matrix-producing command takes:
 *   -o FILE        .png/.svg/.pdf heatmap, or .csv/.json matrix (by extension; repeatable)
 *   --csv FILE     --json FILE
 *   --norm none|layer|module|global
 *   --title T      --center X      --vmin X --vmax X     --label-step N
 *   --quiet        no terminal heatmap on stdout
 */
#define CLI_MAX_OUT 8
typedef struct cli_out {
    const char *files[CLI_MAX_OUT];
    int n_files;
    lm_norm norm;
    lm_plot_opts plot;
    int quiet;
} cli_out;

void cli_out_init(cli_out *o);
/* If argv[*i] is an output option, consume it (and its value), return 1;
 * return 0 if not an output option; -1 (after printing) on a bad value. */
int cli_out_parse(cli_out *o, int argc, char **argv, int *i);
/* Text for --help of the output options. */
extern const char *const cli_out_help;
/* Normalise, print the terminal heatmap (unless quiet), write every file.
 * Returns 0 or prints the error and returns 1. */
int cli_out_emit(const cli_out *o, lm_matrix *m);
/* Same for several matrices: images become a grid with a shared scale; csv/json
 * files get "-<method>" inserted before the extension for each matrix. */
int cli_out_emit_many(const cli_out *o, lm_matrix **ms, int n);

/* Monotonic seconds (for the timings commands print). */
double cli_now(void);

/* Parse helpers: return 0 ok, print an error and return -1 otherwise. */
int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_double(const char *opt, const char *s, double *out);

#endif
