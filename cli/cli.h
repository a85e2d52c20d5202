/*
 * cli.h -- shared pieces of the layermap command-line tool. The CLI is a thin
 * layer over layermap.h: parse options, call the library, print and exit.
 */
#ifndef LM_CLI_H
#define LM_CLI_H

#include "layermap.h"

#include <signal.h>

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
int cmd_recipe(int argc, char **argv);

/* Print "layermap: <msg>" to stderr and return 1 (exit code for errors). */
int cli_error(const lm_err *err);
int cli_errorf(const char *fmt, ...);

/* Progress on stderr for work that lasts over a second: a bar when stderr is a
 * terminal, else a line every cli_progress_secs (--progress N; 0 or
 * LM_PROGRESS=0: none). Use as an lm_progress_fn with ctx = a cli_progress. */
typedef struct cli_progress {
    double t0;
    double last;
    int shown;
    double base;      /* done at the start of this run (resumed work): rates count from it */
    const char *unit; /* "tok", ... for log lines; NULL: none */
} cli_progress;
void cli_progress_init(cli_progress *p);
void cli_progress_cb(void *ctx, double done, double total, const char *what);
void cli_progress_end(cli_progress *p);

/* Output options every matrix-producing command takes:
 *   -o FILE        .png/.svg/.pdf heatmap, or .csv/.json matrix (by extension; repeatable)
 *   --csv FILE     --json FILE
 *   --norm none|layer|module|global
 *   --title T      --center X      --vmin X --vmax X     --label-step N   --shared-scale
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
/* Same for several matrices: images become a grid (one colour scale when they
 * show the same quantity or --shared-scale asks, else one each); csv/json
 * files get "-<method>" inserted before the extension for each matrix. */
int cli_out_emit_many(const cli_out *o, lm_matrix **ms, int n);

/* Read one matrix by its extension (.csv or .json): 0, or 1 after printing the
 * error (a file of another extension is an error naming it). */
int cli_read_matrix(const char *path, lm_matrix **m);

/* Monotonic seconds (for the timings commands print). */
double cli_now(void);

/* Parse helpers: return 0 ok, print an error and return -1 otherwise. */
int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_double(const char *opt, const char *s, double *out);
/* --compute NAME (f32 | bf16 | bf16-ref | auto) into *out (LM_COMPUTE_*). */
int cli_parse_compute(const char *opt, const char *s, int *out);
/* After lm_engine_new with compute `asked`: says (one line, stderr) when auto
 * fell back to F32, and with -v what the products run on. */
void cli_compute_note(const lm_engine *e, int asked);
/* The help lines of --compute. */
extern const char cli_compute_help[];

/* ---- args.c: conventions shared by every command ------------------------ */

extern int cli_verbose;          /* -v / --verbose */
extern double cli_progress_secs; /* --progress N: seconds between progress lines when stderr is
                                    not a terminal (default 10); 0 = no progress at all */
extern const char *cli_revision; /* --revision R for hub ids (hub.c) */
/* Before a command parses: every "--opt=value" becomes "--opt" "value", -t
 * becomes --threads, and the global options (-v/--verbose, --progress N,
 * --revision R) are taken out. Arguments after a lone "--" are left alone.
 * 0, or 2 after printing a usage error. */
int cli_prepare_args(int *argc, char ***argv);
extern char **cli_argv_storage; /* what *argv points to afterwards */
/* The command line as given (shell-quoted), for run metadata. */
const char *cli_command_line(void);
/* A method name: one of lm_method_names, or "act-stats" (-> LM_METHOD_ACT_SQ;
 * the caller tells it apart by name). 0, or -1 after printing an error that
 * lists the methods, or that says "-m takes a method; MODEL comes first" when
 * s is a model (exists on disk, or ends in .gguf / .safetensors). */
int cli_parse_method(const char *s, lm_method *out);
/* --layers "0-5,20": *mask = calloc'd [*max_layer + 1] with 1 for a selected
 * layer (caller frees). 0, or -1 after printing. */
int cli_parse_layers(const char *s, uint8_t **mask, int *max_layer);
/* Can a file be created at path (its directory exists and takes a new file)?
 * Tried by creating and removing "<path>.tmp.XXXXXX", as the atomic writer
 * will. 0, or 1 after printing "OPT PATH: cannot create a file there: ...". */
int cli_check_writable(const char *opt, const char *path);
/* The same for every output file of o. */
int cli_out_check_writable(const cli_out *o);

/* ---- mpi.c: data parallelism over MPI ranks (make MPI=1; stubs otherwise) -- */

/* Start MPI when a launcher (mpirun, srun) started this process; ranks > 0
 * then print nothing but their own failures. Call once, first thing in main. */
void cli_mpi_init(int *argc, char ***argv);
int cli_mpi_rank(void); /* 0 when alone */
int cli_mpi_size(void); /* 1 when alone or built without MPI */
/* For lm_attr_opts.dist: NULL when alone. */
const lm_attr_dist *cli_mpi_dist(void);
/* buf[0..n) summed over every rank, the same on each (reduce to 0 + bcast). */
int cli_mpi_sum(double *buf, size_t n);
/* The reductions so far (the library's sum() and cli_mpi_sum): calls,
 * doubles reduced and seconds in them, waits for slower ranks included. */
void cli_mpi_stats(long *calls, double *doubles, double *secs);
/* Collective, at a point every rank reaches: failed != 0 on the ranks that
 * failed (err their message). Returns 1 on every rank when any failed, with
 * err the first failing rank's message ("rank R of N: ..." when R > 0), so
 * that each can return it and rank 0 alone prints it; 0 when none failed. */
int cli_mpi_agree(int failed, lm_err *err);
/* Collective: does every rank hold a model of rank 0's shapes and the same
 * dataset (tokens and masks hashed)? 0, or 1 on every rank as cli_mpi_agree,
 * the message naming the model or path and the rank that differs. 0 when alone. */
int cli_mpi_same_data(const lm_model *m, const lm_dataset *d, const char *path, lm_err *err);
/* Did every rank open models of the same layers, module shapes, dtypes and
 * sizes as rank 0 (diff: each rank reads its share of them)? 0, or 1 on
 * every rank as cli_mpi_agree, naming this rank's differing model. */
int cli_mpi_same_models(lm_model *const *ms, int n, lm_err *err);
/* Every rank ended its work at the same point (attribute canceled at a sync
 * point of the library): a non-zero exit then finalizes instead of aborting. */
void cli_mpi_stopped_together(void);
/* With several ranks: print "layermap: rank R of N: msg" on this rank's
 * stderr and end the whole job (MPI_Abort); does nothing when alone. For a
 * failure the others learn of at no known point. */
void cli_mpi_fail(const lm_err *err);
/* main's exit: MPI_Finalize, or MPI_Abort for a failure that cli_mpi_agree
 * did not share (the other ranks may wait in a collective). Returns rc. */
int cli_mpi_exit(int rc);

/* ---- hub.c --------------------------------------------------------------- */

/* If *path is not a file or directory but a hub id (ORG/NAME, or
 * ORG/NAME/FILE), point *path at the snapshot in the local Hugging Face cache
 * (stored in buf) and put a display name (NAME or FILE) in name; never uses the
 * network. 0 (also when *path is left alone), or 1 after printing an error that
 * names the paths looked at. */
int cli_resolve_model(const char **path, char *buf, size_t n, char *name, size_t name_n);

/* ---- signals (args.c) ----------------------------------------------------- */

/* SIGINT/SIGTERM set the returned flag (for lm_attr_opts.cancel); a second
 * signal exits at once with 128+signal. cli_cancel_signal(): the signal that
 * set the flag, 0 if none. */
volatile int *cli_cancel_install(void);
int cli_cancel_signal(void);
void cli_cancel_uninstall(void);

/* ---- meta.c: run metadata ------------------------------------------------ */

/* What a run was: filled by the command, turned into the "meta" JSON object. */
typedef struct cli_meta {
    const char *command;        /* "attribute", "diff" */
    const lm_model *model;      /* main model (attribute), or base (diff) */
    const lm_model *model2;     /* diff: the fine-tuned model */
    const char *data;           /* data file or NULL */
    int64_t tokens, predicted;  /* -1: not applicable */
    double loss;                /* mean NLL per predicted token, NAN: n/a */
    double seconds;
    int threads;
    const char *options;        /* JSON object text of method options, or NULL */
} cli_meta;
/* The "meta" object's text (malloc'd; NULL after printing an error). */
char *cli_meta_json(const cli_meta *mt);

#endif
