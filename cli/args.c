/*
 * args.c -- what every command's argument parsing shares: one pass over argv
 * before a command sees it (--opt=value split in two, -t as --threads, the
 * global options -v/--verbose and --progress N taken out), method names with
 * a helpful error, the --layers list, and the check that an output file can
 * be created before any work starts.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_verbose = 0;
double cli_progress_secs = 10.0;

static char cmdline[4096]; /* the command line as given, for run metadata */
char **cli_argv_storage;   /* the rewritten argv, alive until exit like argv itself (not static:
                           * a global the leak checker sees) */

/* See cli.h. */
const char *cli_command_line(void) { return cmdline; }

/* Append argv[0..argc) to cmdline, space-separated, quoting arguments with
 * characters a shell would split on. */
static void record_cmdline(int argc, char **argv) {
    size_t k = 0;
    for (int i = 0; i < argc && k + 4 < sizeof cmdline; i++) {
        const char *a = argv[i];
        int quote = !*a || strpbrk(a, " \t\n'\"\\$`*?;&|<>()") != NULL;
        if (i) cmdline[k++] = ' ';
        if (quote) cmdline[k++] = '\'';
        for (; *a && k + 6 < sizeof cmdline; a++) {
            if (quote && *a == '\'') {
                memcpy(cmdline + k, "'\\''", 4);
                k += 4;
            } else {
                cmdline[k++] = *a;
            }
        }
        if (quote) cmdline[k++] = '\'';
    }
    cmdline[k] = 0;
}

/* See cli.h. argv[0] is the program, argv[1] the command. After a lone "--"
 * nothing is rewritten (a TEXT argument may start with dashes). */
int cli_prepare_args(int *argc, char ***argv) {
    int n = *argc;
    char **in = *argv;
    record_cmdline(n, in);
    /* each argument becomes at most two */
    char **out = cli_argv_storage = malloc(((size_t)n * 2 + 1) * sizeof *out);
    if (!out) return cli_errorf("out of memory"), 2;
    int k = 0, literal = 0;
    for (int i = 0; i < n; i++) {
        char *a = in[i];
        if (i < 2 || literal || a[0] != '-') {
            out[k++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            literal = 1;
            out[k++] = a;
            continue;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            cli_verbose = 1;
            continue;
        }
        char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
        const char *val = NULL;
        if (eq) {
            *eq = 0; /* argv strings are writable (C11 5.1.2.2.1) */
            val = eq + 1;
        }
        if (!strcmp(a, "--progress")) {
            if (!val) {
                if (i + 1 >= n) return cli_errorf("--progress needs a number of seconds (0: off)"), 2;
                val = in[++i];
            }
            if (cli_parse_double("--progress", val, &cli_progress_secs)) return 2;
            if (cli_progress_secs < 0) return cli_errorf("--progress: %g is negative", cli_progress_secs), 2;
            if (cli_progress_secs > 0 && cli_progress_secs < 0.1) cli_progress_secs = 0.1;
            continue;
        }
        if (!strcmp(a, "--revision")) {
            if (!val) {
                if (i + 1 >= n) return cli_errorf("--revision needs a branch, tag or commit hash"), 2;
                val = in[++i];
            }
            if (!*val) return cli_errorf("--revision: empty"), 2;
            cli_revision = val;
            continue;
        }
        out[k++] = !strcmp(a, "-t") ? "--threads" : a;
        if (val) out[k++] = (char *)val;
    }
    out[k] = NULL;
    *argc = k;
    *argv = out; /* lives until exit, as argv does */
    return 0;
}

/* See cli.h. */
int cli_parse_method(const char *s, lm_method *out) {
    if (!strcmp(s, "act-stats")) {
        *out = LM_METHOD_ACT_SQ;
        return 0;
    }
    if (lm_method_parse(s, out) == LM_OK) return 0;
    struct stat st;
    size_t n = strlen(s);
    int looks_model = stat(s, &st) == 0 || (n > 5 && !strcmp(s + n - 5, ".gguf")) ||
                      (n > 12 && !strcmp(s + n - 12, ".safetensors"));
    if (looks_model) {
        cli_errorf("-m takes a method; MODEL comes first (layermap attribute MODEL --data FILE -m METHOD); "
                   "'%s' is a model", s);
        return -1;
    }
    char list[512];
    size_t k = 0;
    for (int i = 0; i < LM_METHOD_COUNT && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s, ", lm_method_names[i]);
    cli_errorf("unknown method '%s' (methods: %sact-stats)", s, list);
    return -1;
}

/* See cli.h. */
int cli_parse_layers(const char *s, uint8_t **mask, int *max_layer) {
    /* first pass: the largest index, and the syntax */
    long hi = -1;
    const char *p = s;
    if (!*s) return cli_errorf("--layers: empty list"), -1;
    for (int pass = 0; pass < 2; pass++) {
        p = s;
        while (*p) {
            char *end;
            errno = 0;
            long a = strtol(p, &end, 10), b;
            if (end == p || a < 0 || errno || a > 1000000) goto bad;
            b = a;
            p = end;
            if (*p == '-') {
                b = strtol(p + 1, &end, 10);
                if (end == p + 1 || b < a || errno || b > 1000000) goto bad;
                p = end;
            }
            if (*p && *p != ',') goto bad;
            if (*p == ',' && !p[1]) goto bad;
            if (*p) p++;
            if (pass == 0) {
                if (b > hi) hi = b;
            } else {
                for (long l = a; l <= b; l++) (*mask)[l] = 1;
            }
        }
        if (pass == 0) {
            *mask = calloc((size_t)hi + 1, 1);
            if (!*mask) return cli_errorf("out of memory"), -1;
        }
    }
    *max_layer = (int)hi;
    return 0;
bad:
    return cli_errorf("--layers: '%s' is not a list like 0-5,20 (layer numbers from 0, ranges low-high)", s), -1;
}

/* See cli.h. */
int cli_check_writable(const char *opt, const char *path) {
    if (!path || !*path) return cli_errorf("%s: empty file name", opt);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return cli_errorf("%s %s: is a directory", opt, path);
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return cli_errorf("out of memory");
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path); /* what the atomic writer creates */
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return cli_errorf("%s %s: cannot create a file there: %s", opt, path, strerror(e));
    }
    close(fd);
    unlink(tmp);
    free(tmp);
    return 0;
}

/* See cli.h. */
int cli_out_check_writable(const cli_out *o) {
    for (int k = 0; k < o->n_files; k++)
        if (cli_check_writable("-o", o->files[k])) return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* SIGINT / SIGTERM during long work                                         */
/* ------------------------------------------------------------------------ */

static volatile int cancel_flag;          /* read by the library between passes */
static volatile sig_atomic_t cancel_sig;  /* the signal that set it */
static struct sigaction old_int, old_term;

/* First signal: ask the work to stop at the next pass (it saves its
 * checkpoint); second: leave now. */
static void on_signal(int sig) {
    if (cancel_flag) _exit(128 + sig);
    cancel_sig = sig;
    cancel_flag = 1;
    static const char msg[] = "\nlayermap: stopping after the current pass (again to quit at once)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

/* See cli.h. */
volatile int *cli_cancel_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    return &cancel_flag;
}

/* See cli.h. */
int cli_cancel_signal(void) { return cancel_sig; }

/* See cli.h. */
void cli_cancel_uninstall(void) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
}
