/*
 * cmd_attribute.c -- `layermap attribute MODEL --data FILE --method M`:
 * the layers x modules attribution matrix from calibration data.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap attribute MODEL --data FILE [options]\n\n"
            "Attribution of each (layer, module) from calibration data; docs/METHODS.md defines each method.\n\n"
            "  --data FILE         plain text, JSONL {\"text\"}, or JSONL {\"prompt\",\"completion\"} (loss on completion)\n"
            "  -m, --method M[,M...]  grad-weight (default) | grad-weight-signed | fisher | grad-norm |\n"
            "                      act-grad | ig | ablate | ablate-mean | act-sq | wanda |\n"
            "                      act-stats (act-sq + wanda + block influence). Several, comma-separated,\n"
            "                      share one pass over the data where they can (the gradient methods,\n"
            "                      act-grad and act-*: about the cost of one); ablate*, ig run their own.\n"
            "                      Name each output with {method}: -o out-{method}.png; a .json\n"
            "                      without {method} holds every matrix\n"
            "  --seq-len N         tokens per sequence (default 512)\n"
            "  --max-tokens N      stop reading data after N tokens, N >= 1 (default: all)\n"
            "  --layers L          only these layers, e.g. 0-5,20 (rows keep their layer numbers)\n"
            "  --batch N           sequences packed into one pass (default 1; helps short sequences)\n"
            "  --steps N           integrated-gradients steps (default 32)\n"
            "  --until-stable R    stop reading data once every method's split-half Spearman correlation\n"
            "                      (odd vs even samples) has stayed >= R (0 < R <= 1) for 3 samples, after\n"
            "                      at least 8; a sample is one pass of --batch sequences. Every data\n"
            "                      method reports it with each cell's standard error (JSON \"se\",\n"
            "                      \"split_half\", \"samples\"; the summary line)\n"
            "  -t, --threads N     worker threads (default: all cores)\n"
            "  --checkpoint FILE   where the running sums are saved (default: beside the first output,\n"
            "                      OUT.ckpt, or $XDG_CACHE_HOME/layermap/checkpoints/ without one): at\n"
            "                      most once a minute, and on Ctrl-C or SIGTERM, which stop the run.\n"
            "                      Running the same command again continues from it and ends identical;\n"
            "                      another model, data, method or option that changes the sums is\n"
            "                      refused naming what differs. The default file is removed once the\n"
            "                      outputs are written; a --checkpoint FILE is kept (a rerun then only\n"
            "                      writes the outputs)\n"
            "  --no-checkpoint     save nothing (an interrupted run is lost)\n"
            "  --resume            accepted for older scripts: continuing is the default\n"
            "  --act-cache MB      memory for layer activations kept between forward and backward\n"
            "                      (default 256; layers that do not fit are recomputed; when not all\n"
            "                      fit whole, the kept ones keep their module outputs only)\n"
            "  --weight-cache MB   memory for weights dequantized to F32 (default: 3 layers for\n"
            "                      sequences of 256+ tokens, else up to a third of RAM)\n"
            "  --per-param         divide each cell by the module's parameter count (mean per weight:\n"
            "                      compares modules of different sizes, e.g. for LoRA targets)\n"
            "  --progress N        a progress line every N s when stderr is not a terminal (default 10;\n"
            "                      0: none)\n"
            "  --imatrix FILE      also write llama.cpp's importance matrix (llama-quantize --imatrix FILE)\n"
            "                      from act-sq's sums; needs act-sq, act-stats or wanda among the methods.\n"
            "                      GGUF (default), or the legacy format when FILE ends in .dat\n"
            "  --imatrix-chunk N   cut plain text as llama-imatrix -c N does (implies --seq-len N):\n"
            "                      chunk i is tokens [iN, (i+1)N) of the text, BOS put over its first\n"
            "                      token when the model uses BOS, a partial last chunk dropped: the file\n"
            "                      then matches llama-imatrix's (within its F16 KV cache's rounding).\n"
            "                      Without it the chunks are layermap's own (--seq-len: each holds\n"
            "                      seq-len - 1 text tokens after BOS, the last short one kept)\n"
            "%s"
            "  -v, --verbose       also the BLAS kernel, and where a hub id was found\n\n"
            "MODEL is a .gguf, an HF directory, or a hub id ORG/NAME found in the local Hugging Face\n"
            "cache (--revision R: a branch, tag or commit; never downloads). Options take --opt=value too.\n"
            "%s",
            cli_compute_help, cli_out_help);
}

/* Progress of an attribute run: rank 0 draws it; rates count this run's
 * work only (a resumed run starts at done0 tokens over its passes).
 *
 * Test hook (tests/cli/test_ckpt.sh, tests/cli/test_mpi.sh), not for users:
 * LM_TEST_STOP_AFTER=K raises SIGTERM in this process once K samples
 * (passes of --batch sequences) of this run are done, the point between two
 * samples where a real signal would be seen: interrupts at a known place,
 * without timing. With LM_TEST_STOP_WAIT=FILE too, the process instead
 * creates FILE there and waits (120 s at most) for a signal from outside,
 * so that a test can signal mpirun itself at a known place. */
typedef struct attr_progress {
    cli_progress p;
    int show;              /* this rank draws it */
    double done0;          /* tokens (over passes) done before this run */
    double last;           /* last done reported */
    int any;               /* a report came */
    long stop_after, calls; /* the test hook */
    const char *stop_wait;
    volatile int *cancel;
} attr_progress;

static int subst_method(char *dst, size_t n, const char *path, const char *name);

/* The test hook's wait: FILE made, then until a signal sets the flag. */
static void test_stop_wait(const attr_progress *a) {
    FILE *f = fopen(a->stop_wait, "w");
    if (f) fclose(f);
    for (int i = 0; i < 12000 && !*a->cancel; i++) nanosleep(&(struct timespec){0, 10000000}, NULL);
}

/* lm_progress_fn: the test hook, then the progress line. */
static void attr_progress_cb(void *ctx, double done, double total, const char *what) {
    attr_progress *a = ctx;
    a->last = done;
    a->any = 1;
    if (a->stop_after > 0 && ++a->calls == a->stop_after) {
        if (a->stop_wait)
            test_stop_wait(a);
        else
            raise(SIGTERM);
    }
    if (a->show) cli_progress_cb(&a->p, done, total, what);
}

/* The default checkpoint beside the first output file (-o/--csv/--json as
 * given, else --imatrix): its path with {method} made the method list
 * ("grad-weight+fisher") and ".ckpt" added. 0 when there is no output file. */
static int ckpt_beside(char *buf, size_t n, const cli_out *out, const char *imatrix, const char *methods) {
    const char *first = out->n_files ? out->files[0] : imatrix;
    if (!first) return 0;
    char joined[256], path[4096];
    snprintf(joined, sizeof joined, "%s", methods);
    for (char *c = joined; *c; c++)
        if (*c == ',') *c = '+';
    subst_method(path, sizeof path, first, joined);
    snprintf(buf, n, "%s.ckpt", path);
    return 1;
}

/* The default checkpoint without an output file: in
 * $XDG_CACHE_HOME/layermap/checkpoints/ (else ~/.cache/...), named by the
 * run's fingerprint, the directory made. 0, or -1 after a warning. */
static int ckpt_in_cache(char *buf, size_t n, const char *sha) {
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    char dir[4096];
    if (x && x[0] == '/')
        snprintf(dir, sizeof dir, "%s/layermap/checkpoints", x);
    else if (h && *h)
        snprintf(dir, sizeof dir, "%s/.cache/layermap/checkpoints", h);
    else
        return fprintf(stderr, "layermap: warning: no $XDG_CACHE_HOME or $HOME for the checkpoint: running without "
                               "one (give an output file or --checkpoint FILE)\n"), -1;
    for (char *p = dir + 1;; p++) { /* mkdir -p */
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(dir, 0777) != 0 && errno != EEXIST)
                return fprintf(stderr, "layermap: warning: cannot make %s for the checkpoint: %s: running without "
                                       "one\n", dir, strerror(errno)), -1;
            *p = c;
            if (!c) break;
        }
    }
    snprintf(buf, n, "%s/attribute-%.16s.ckpt", dir, sha);
    return 0;
}

/* The methods of one run, as the user named them. act-stats is act-sq with
 * its wanda matrix emitted too. */
typedef struct method_set {
    lm_method m[LM_METHOD_COUNT];
    int act_stats[LM_METHOD_COUNT]; /* m[i] was asked for as act-stats */
    int n;
} method_set;

/* Parse "-m a,b,c" (every method-name check of the command is here). 0, or
 * 2 after printing the error. */
static int parse_methods(const char *s, method_set *ms) {
    ms->n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[64];
        if (len == 0 || len >= sizeof name)
            return cli_errorf("attribute: bad method list '%s': empty or overlong name (see --help)", s) ? 2 : 2;
        memcpy(name, p, len);
        name[len] = 0;
        lm_method m = LM_METHOD_ACT_SQ;
        int as = !strcmp(name, "act-stats");
        if (cli_parse_method(name, &m)) return 2; /* "-m MODEL", or the valid names */
        for (int i = 0; i < ms->n; i++)
            if (ms->m[i] == m || (as && ms->m[i] == LM_METHOD_WANDA) || (ms->act_stats[i] && m == LM_METHOD_WANDA))
                return cli_errorf("attribute: method '%s' given twice in '%s'", name, s) ? 2 : 2;
        if (ms->n >= LM_METHOD_COUNT) return cli_errorf("attribute: too many methods in '%s'", s) ? 2 : 2;
        ms->act_stats[ms->n] = as;
        ms->m[ms->n++] = m;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

/* dst = path with every "{method}" replaced by name; 1 when it had one. */
static int subst_method(char *dst, size_t n, const char *path, const char *name) {
    size_t k = 0;
    int had = 0;
    for (const char *p = path; *p && k + 1 < n;) {
        if (!strncmp(p, "{method}", 8)) {
            for (const char *q = name; *q && k + 1 < n; q++) dst[k++] = *q;
            p += 8;
            had = 1;
        } else {
            dst[k++] = *p++;
        }
    }
    dst[k] = 0;
    return had;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

/* With several methods, every -o/--csv/--json path must name each method
 * with {method}, except a .json that holds every matrix. 0, or 2 after
 * printing the error (checked before the long computation). */
static int check_outputs(const cli_out *out, int n_methods) {
    if (n_methods < 2) return 0;
    for (int k = 0; k < out->n_files; k++) {
        const char *f = out->files[k];
        if (!strstr(f, "{method}") && !ends_with(f, ".json"))
            return cli_errorf("attribute: %d methods but '%s' has no {method} placeholder (e.g. -o out-{method}.png; "
                              "a .json without one holds every matrix)", n_methods, f) ? 2 : 2;
    }
    return 0;
}

/* Emit the matrices ms[0..k) of a run of n_methods methods: paths with
 * {method} get one file per matrix; others are written as for one matrix
 * (k == 1), as act-stats writes its pair (one method), or as one .json
 * holding every matrix. Returns the exit code. */
static int emit_outputs(const cli_out *out, lm_matrix **ms, const char *const *names, int k, int n_methods) {
    static char buf[CLI_MAX_OUT][4096 + 64];
    cli_out plain = *out, tmpl = *out;
    plain.n_files = tmpl.n_files = 0;
    for (int f = 0; f < out->n_files; f++) {
        if (strstr(out->files[f], "{method}"))
            tmpl.files[tmpl.n_files++] = out->files[f];
        else
            plain.files[plain.n_files++] = out->files[f];
    }
    int bad = 0;
    /* normalise and print every matrix once, with the files that need no {method} */
    if (k == 1 || n_methods == 1) {
        bad |= cli_out_emit_many(&plain, ms, k);
    } else {
        cli_out none = plain;
        none.n_files = 0;
        bad |= cli_out_emit_many(&none, ms, k);
        for (int f = 0; f < plain.n_files; f++) { /* a .json of every matrix (check_outputs) */
            lm_err err = {0};
            if (lm_matrix_write_json_many((const lm_matrix *const *)ms, k, plain.files[f], &err))
                bad |= cli_error(&err);
            else if (!out->quiet)
                fprintf(stderr, "layermap: wrote %s\n", plain.files[f]);
        }
    }
    /* then one file per matrix for each {method} path (already normalised) */
    for (int i = 0; i < k; i++) {
        cli_out one = tmpl;
        one.norm = LM_NORM_NONE;
        one.quiet = 1;
        for (int f = 0; f < tmpl.n_files; f++) {
            subst_method(buf[f], sizeof buf[f], tmpl.files[f], names[i]);
            one.files[f] = buf[f];
        }
        for (int f = 0; f < tmpl.n_files; f++) {
            cli_out single = one;
            single.files[0] = one.files[f];
            single.n_files = 1;
            if (cli_out_emit(&single, ms[i]))
                bad = 1;
            else if (!out->quiet)
                fprintf(stderr, "layermap: wrote %s\n", one.files[f]);
        }
    }
    return bad;
}

/* Print the run summary to stderr; the rate is of this run's work. */
static void summary(const lm_attr_result *r, const char *method, double secs, const attr_progress *ap) {
    double ppl = r->n_targets ? exp(r->loss_sum / (double)r->n_targets) : NAN;
    int resumed = ap->done0 > 0;
    double work = !resumed ? (double)r->n_tokens : ap->any ? ap->last - ap->done0 : 0.0;
    fprintf(stderr, "layermap: %s: %lld tokens, %lld predicted, loss %.4f/token (ppl %.3f), %.1f s, %.1f tokens/s%s\n",
            method, (long long)r->n_tokens, (long long)r->n_targets,
            r->n_targets ? r->loss_sum / (double)r->n_targets : NAN, ppl, secs, secs > 0 ? work / secs : 0.0,
            resumed ? " (this run's work only)" : "");
    const lm_matrix *m = r->m;
    if (m && m->se && r->n_samples >= 2) { /* how much data is enough */
        double rel[LM_N_MODULES * 4096];
        int n = 0;
        for (int i = 0; i < m->n_layer * LM_N_MODULES && n < (int)(sizeof rel / sizeof rel[0]); i++)
            if (isfinite(m->se[i]) && isfinite(m->v[i]) && m->v[i] != 0) rel[n++] = m->se[i] / fabs(m->v[i]);
        for (int i = 1; i < n; i++) /* insertion sort for the median */
            for (int j = i; j > 0 && rel[j - 1] > rel[j]; j--) {
                double t = rel[j];
                rel[j] = rel[j - 1];
                rel[j - 1] = t;
            }
        fprintf(stderr, "layermap: %s stability: %d samples, split-half Spearman %.4f, standard error median %.3g%% of |cell|%s\n",
                method, r->n_samples, r->split_half, n ? 100 * rel[n / 2] : NAN,
                r->stopped_stable ? " (--until-stable: stopped, stable)" : "");
    }
}

/* One line when the method cannot see some modules on this architecture:
 * an RMSNorm right after a module's output makes the loss invariant to
 * scaling that output, so -dL/dy . y = 0 (act-grad) and the gradient along
 * the path a*y is 0 but near a = 0 (ig). */
static void warn_blind(const lm_config *c, lm_method method) {
    if (method != LM_METHOD_ACT_GRAD && method != LM_METHOD_IG) return;
    char cols[64] = "", why[160] = "";
    if (c->has_qk_norm) {
        snprintf(cols, sizeof cols, "attn.q, attn.k");
        snprintf(why, sizeof why, "q and k are RMS-normed per head");
    }
    if (c->has_post_norms) {
        snprintf(cols + strlen(cols), sizeof cols - strlen(cols), "%sattn.o, mlp.down", cols[0] ? ", " : "");
        snprintf(why + strlen(why), sizeof why - strlen(why), "%sthe block outputs are RMS-normed",
                 why[0] ? " and " : "");
    }
    if (!cols[0]) return;
    fprintf(stderr,
            "layermap: %s is blind by construction on %s: %s (%s: scaling them changes nothing), so these columns "
            "are ~0; use ablate or grad-weight for them\n",
            lm_method_names[method], lm_arch_name(c->arch), cols, why);
}

int cmd_attribute(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *method_s = NULL, *ckpt = NULL, *layers_s = NULL, *imatrix = NULL;
    long imatrix_chunk = 0, seq_len_given = 0;
    long seq_len = 512, max_tokens = 0, steps = 32, threads = 0, batch = 1, act_mb = 0, weight_mb = 0;
    int resume = 0, per_param = 0, no_ckpt = 0, compute = LM_COMPUTE_F32;
    double until_stable = 0;
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
        } else if (!strcmp(a, "--resume")) {
            resume = 1;
        } else if (!strcmp(a, "--no-checkpoint")) {
            no_ckpt = 1;
        } else if (!strcmp(a, "--per-param")) {
            per_param = 1;
        } else if (i + 1 < argc && !strcmp(a, "--data")) {
            data = argv[++i];
        } else if (i + 1 < argc && (!strcmp(a, "-m") || !strcmp(a, "--method"))) {
            if (method_s) return cli_errorf("attribute: -m given twice (list several as -m a,b,c)") ? 2 : 2;
            method_s = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--checkpoint")) {
            ckpt = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--layers")) {
            layers_s = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--seq-len")) {
            if (cli_parse_int(a, argv[++i], 2, 1 << 20, &seq_len)) return 2;
            seq_len_given = 1;
        } else if (i + 1 < argc && !strcmp(a, "--imatrix")) {
            imatrix = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--imatrix-chunk")) {
            if (cli_parse_int(a, argv[++i], 2, 1 << 20, &imatrix_chunk)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--max-tokens")) {
            if (cli_parse_int(a, argv[++i], 1, (long)1 << 50, &max_tokens)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--act-cache")) {
            if (cli_parse_int(a, argv[++i], 1, 1L << 30, &act_mb)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--weight-cache")) {
            if (cli_parse_int(a, argv[++i], 1, 1L << 30, &weight_mb)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--batch")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &batch)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--until-stable")) {
            if (cli_parse_double(a, argv[++i], &until_stable)) return 2;
            if (!(until_stable > 0 && until_stable <= 1))
                return cli_errorf("--until-stable: %g is not a correlation in (0, 1]", until_stable) ? 2 : 2;
        } else if (i + 1 < argc && !strcmp(a, "--steps")) {
            if (cli_parse_int(a, argv[++i], 1, 100000, &steps)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--threads")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &threads)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--compute")) {
            if (cli_parse_compute(a, argv[++i], &compute)) return 2;
        } else if (a[0] == '-' && a[1]) {
            return cli_errorf("attribute: unknown or incomplete option '%s' (see --help)", a) ? 2 : 2;
        } else if (!model) {
            model = a;
        } else {
            return cli_errorf("attribute: unexpected argument '%s'", a) ? 2 : 2;
        }
    }
    method_set set; /* first: "-m MODEL" is the likely mistake */
    if (parse_methods(method_s ? method_s : "grad-weight", &set)) return 2;
    if (!model || !data) {
        usage(stderr);
        return 2;
    }
    if (check_outputs(&out, set.n)) return 2;
    int imq = -1; /* the result whose column sums make the imatrix */
    for (int q = 0; q < set.n; q++)
        if (imq < 0 && (set.m[q] == LM_METHOD_ACT_SQ || set.m[q] == LM_METHOD_WANDA)) imq = q;
    if (imatrix && imq < 0)
        return cli_errorf("attribute: --imatrix needs act-sq, act-stats or wanda among the methods (-m act-stats)") ? 2
                                                                                                                   : 2;
    if (imatrix_chunk) {
        if (seq_len_given && seq_len != imatrix_chunk)
            return cli_errorf("attribute: --seq-len %ld and --imatrix-chunk %ld differ (the chunk is the sequence)",
                              seq_len, imatrix_chunk) ? 2 : 2;
        seq_len = imatrix_chunk;
    }
    if (no_ckpt && (ckpt || resume))
        return cli_errorf("attribute: --no-checkpoint and %s contradict each other", ckpt ? "--checkpoint" : "--resume")
                   ? 2
                   : 2;
    /* the checkpoint: --checkpoint FILE, else by default beside the first
     * output, else in the cache directory once the run's fingerprint is known */
    static char ckpt_buf[4200];
    int ckpt_default = 0, ckpt_cache = 0;
    if (!no_ckpt && !ckpt) {
        if (ckpt_beside(ckpt_buf, sizeof ckpt_buf, &out, imatrix, method_s ? method_s : "grad-weight"))
            ckpt = ckpt_buf;
        else
            ckpt_cache = 1;
        ckpt_default = 1;
    }
    uint8_t *keep = NULL; /* --layers */
    int keep_max = -1;
    if (layers_s && cli_parse_layers(layers_s, &keep, &keep_max)) return 2;
    /* fail before any work: outputs and a checkpoint that cannot be written */
    if (cli_out_check_writable(&out) || (ckpt && cli_mpi_rank() == 0 && cli_check_writable("--checkpoint", ckpt)) ||
        (imatrix && cli_check_writable("--imatrix", imatrix))) {
        free(keep);
        return 1;
    }
    char hub_path[4096], hub_name[256];
    if (cli_resolve_model(&model, hub_path, sizeof hub_path, hub_name, sizeof hub_name)) {
        free(keep);
        return 1;
    }

    lm_err err = {0};
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_dataset *ds = NULL;
    lm_engine *e = NULL;
    lm_attr_result res[LM_METHOD_COUNT];
    memset(res, 0, sizeof res);
    int rc = 1;
    lm_attr_opts ao;
    lm_attr_opts_default(&ao);
    ao.ig_steps = (int)steps;
    ao.batch = (int)batch;
    ao.until_stable = until_stable;
    ao.layers = keep; /* --layers: ablate, ig and act-stats skip the other layers' work */
    ao.n_layers = keep ? keep_max + 1 : 0;
    lm_attr_ckpt_info info;
    memset(&info, 0, sizeof info);
    volatile int *cancel = cli_cancel_install(); /* from here on: a signal while loading stops before the work */
    /* loading: under mpirun every rank loads, and all learn of any rank's
     * failure at `loaded` (cli_mpi_agree), so that they end together */
    if (lm_model_open(&m, model, &err) || lm_tokenizer_open(&tok, m, &err)) goto loaded;
    if (hub_name[0]) snprintf(m->name, sizeof m->name, "%s", hub_name);
    if (keep && keep_max >= m->cfg.n_layer) {
        err.code = LM_EARG;
        snprintf(err.msg, sizeof err.msg, "--layers %s: %s has layers 0-%d", layers_s, model, m->cfg.n_layer - 1);
        goto loaded;
    }
    for (int q = 0; q < set.n; q++)
        if (!set.act_stats[q]) warn_blind(&m->cfg, set.m[q]);
    lm_data_opts dopt = {.seq_len = (int)seq_len, .max_tokens = max_tokens, .llamacpp_chunks = imatrix_chunk > 0};
    if (lm_dataset_load(&ds, data, tok, &dopt, &err)) goto loaded;
    int longest = 0;
    for (int s = 0; s < ds->n_seq; s++)
        if (ds->seqs[s].n > longest) longest = ds->seqs[s].n;
    if (batch > ds->n_seq) batch = ds->n_seq;
    lm_engine_opts eo = {.threads = (int)threads, .max_seq = longest, .max_batch = (int)batch,
                         .act_cache_bytes = (size_t)act_mb << 20, .weight_cache_bytes = (size_t)weight_mb << 20,
                         .compute = compute};
    if (lm_engine_new(&e, m, &eo, &err)) goto loaded;
    if (cli_mpi_rank() == 0) cli_compute_note(e, compute);
    ao.batch = (int)batch;
    if (ckpt_cache && cli_mpi_rank() == 0) { /* no output file: the cache, named by the run */
        lm_attr_fingerprint fp;
        ao.checkpoint_path = NULL;
        if (lm_attr_fingerprint_of(e, ds, set.m, set.n, &ao, &fp, &err)) goto loaded;
        if (ckpt_in_cache(ckpt_buf, sizeof ckpt_buf, fp.sha256) == 0) ckpt = ckpt_buf;
    }
    ao.checkpoint_path = ckpt;
    if (ckpt && cli_mpi_rank() == 0) /* rank 0 alone reads and writes it */
        lm_attr_checkpoint_probe(e, ds, set.m, set.n, &ao, &info, &err);
loaded:
    if (cli_mpi_agree(err.code != 0, &err) || cli_mpi_same_data(m, ds, data, &err)) goto fail;
    /* every rank checkpoints exactly when rank 0 does (only rank 0 opens the file) */
    double on = cli_mpi_rank() == 0 && ckpt;
    cli_mpi_sum(&on, 1);
    if (cli_mpi_rank() > 0) ckpt = on > 0 ? "(rank 0's checkpoint)" : NULL;
    ao.checkpoint_path = ckpt;
    ao.resume = ckpt != NULL;
    if (cli_mpi_rank() == 0 && ckpt) {
        if (info.exists && info.finished)
            fprintf(stderr, "layermap: resuming from %s: all %d sequences done (nothing left to compute)\n", ckpt,
                    ds->n_seq);
        else if (info.exists && info.n_passes > 1)
            fprintf(stderr, "layermap: resuming from %s: %d of %d sequences done (pass %d of %d: %s)\n", ckpt,
                    info.seq_done, info.n_seq, info.pass + 1, info.n_passes, info.pass_label);
        else if (info.exists)
            fprintf(stderr, "layermap: resuming from %s: %d of %d sequences done\n", ckpt, info.seq_done, info.n_seq);
        else if (resume)
            fprintf(stderr, "layermap: no checkpoint %s yet: starting from the beginning\n", ckpt);
    }
    const char *stop_after = getenv("LM_TEST_STOP_AFTER"), *stop_wait = getenv("LM_TEST_STOP_WAIT");
    attr_progress prog = {.show = cli_mpi_rank() == 0, .done0 = info.tokens_done, .cancel = cancel,
                          .stop_after = stop_after ? atol(stop_after) : 0,
                          .stop_wait = stop_wait && *stop_wait ? stop_wait : NULL};
    cli_progress_init(&prog.p);
    prog.p.unit = "tok";
    prog.p.base = info.tokens_done;
    ao.progress = attr_progress_cb; /* rank 0 draws its share, scaled to all the data */
    ao.progress_ctx = &prog;
    ao.dist = cli_mpi_dist(); /* NULL when alone */
    ao.cancel = cancel;
    if (cli_verbose) lm_product_profile(1);
    double t_run = cli_now();
    int arc = lm_attribute_many(e, ds, set.m, set.n, &ao, res, &err);
    t_run = cli_now() - t_run;
    cli_progress_end(&prog.p);
    if (arc == LM_ECANCELED) { /* every rank stopped at the same sync point and saved together */
        int sig = cli_cancel_signal();
        cli_mpi_stopped_together();
        rc = 128 + (sig ? sig : SIGTERM);
        if (cli_mpi_rank() > 0) goto done;
        char why[64] = "interrupted (on another rank)";
        if (sig) snprintf(why, sizeof why, "interrupted (%s)", strsignal(sig));
        if (ckpt)
            cli_errorf("%s: %s; to continue, run the same command again", why, err.msg);
        else
            cli_errorf("%s: %s; nothing kept (%s)", why, err.msg, no_ckpt ? "--no-checkpoint" : "no checkpoint");
        goto done;
    }
    if (arc) cli_mpi_fail(&err); /* several ranks: the others may wait in a reduction; ends them all */
    if (cli_mpi_rank() > 0) { /* every rank holds the reduced sums; rank 0 alone writes them */
        rc = 0;
        goto done;
    }
    if (arc) goto fail;
    if (cli_verbose) {
        double ps, pf;
        long pc;
        lm_product_profile_read(&ps, &pf, &pc);
        lm_product_profile(0);
        fprintf(stderr, "layermap: %s\n", lm_engine_kernel_name());
        fprintf(stderr,
                "layermap: products (%s): %.2f s of the attribution's %.2f s (%.0f%%), %.3g TFLOP in %ld products, "
                "%.0f GFLOP/s\n",
                lm_compute_name(lm_engine_compute(e)), ps, t_run, t_run > 0 ? 100 * ps / t_run : 0, pf * 1e-12, pc,
                ps > 0 ? pf / ps * 1e-9 : 0);
        if (cli_mpi_size() > 1) { /* bench/bench_mpi.sh projects the efficiency from these */
            long nr;
            double nd, sr;
            cli_mpi_stats(&nr, &nd, &sr);
            fprintf(stderr,
                    "layermap: MPI: %d ranks, %ld reductions of %.0f doubles in all (%.1f KB), %.3f s in them "
                    "(waits for slower ranks included)\n",
                    cli_mpi_size(), nr, nd, nd * 8 / 1024, sr);
        }
    }

    lm_matrix *ms[2 * LM_METHOD_COUNT];
    const char *names[2 * LM_METHOD_COUNT];
    int k = 0;
    for (int q = 0; q < set.n; q++) {
        lm_method method = set.m[q];
        lm_attr_result *r = &res[q];
        const char *mname = set.act_stats[q] ? "act-stats" : lm_method_names[method];
        summary(r, mname, r->seconds, &prog);
        char note[512];
        snprintf(note, sizeof note, "data=%s tokens=%lld seq_len=%ld%s", data, (long long)r->n_tokens, seq_len,
                 method == LM_METHOD_IG ? " ig" : "");
        char opts[768];
        snprintf(opts, sizeof opts,
                 "{\"method\": \"%s\", \"methods\": \"%s\", \"seq_len\": %ld, \"max_tokens\": %ld, \"batch\": %ld, "
                 "\"ig_steps\": %ld, \"per_param\": %s, \"resumed\": %s, \"layers\": \"%s\", \"ranks\": %d, "
                 "\"compute\": \"%s\"}",
                 mname, method_s ? method_s : "grad-weight", seq_len, max_tokens, batch, steps,
                 per_param ? "true" : "false", info.tokens_done > 0 ? "true" : "false", layers_s ? layers_s : "all",
                 cli_mpi_size(), lm_compute_name(lm_engine_compute(e)));
        cli_meta mt = {.command = "attribute", .model = m, .data = data, .tokens = r->n_tokens,
                       .predicted = r->n_targets,
                       .loss = r->n_targets ? r->loss_sum / (double)r->n_targets : NAN,
                       .seconds = r->seconds, .threads = (int)threads, .options = opts};
        char *meta = cli_meta_json(&mt);
        if (!meta) goto done;
        lm_matrix *two[2] = {r->m, r->also};
        for (int i = 0; i < 2; i++)
            if (two[i]) {
                snprintf(two[i]->model, sizeof two[i]->model, "%s", m->name);
                snprintf(two[i]->note, sizeof two[i]->note, "%s", note);
                if (lm_matrix_set_meta(two[i], meta, &err) ||
                    (keep && lm_matrix_select_layers(two[i], keep, keep_max + 1, &err))) {
                    free(meta);
                    goto fail;
                }
            }
        free(meta);
        for (int i = 0; per_param && i < 2; i++) {
            if (!two[i]) continue;
            for (int l = 0; l < two[i]->n_layer; l++)
                for (int c = 0; c < LM_N_MODULES; c++) {
                    double np = (double)lm_model_module_params(m, lm_matrix_layer(two[i], l), c);
                    lm_matrix_set(two[i], l, c, lm_matrix_get(two[i], l, c) / np);
                    if (two[i]->se) two[i]->se[(size_t)l * LM_N_MODULES + (size_t)c] /= np;
                }
            snprintf(two[i]->method + strlen(two[i]->method), sizeof two[i]->method - strlen(two[i]->method),
                     " per param");
        }
        if (method == LM_METHOD_IG) {
            fprintf(stderr, "layermap: ig: %d steps, completeness gap %.3g%% (sum |IG - exact ablation| / sum |exact|)\n",
                    (int)steps, 100.0 * r->ig_gap);
            snprintf(r->m->note + strlen(r->m->note), sizeof r->m->note - strlen(r->m->note),
                     " steps=%ld completeness_gap=%.6g", steps, r->ig_gap);
        }
        names[k] = lm_method_names[method];
        ms[k++] = r->m;
        if (set.act_stats[q]) {
            fprintf(stderr, "layermap: block influence (1 - cos(h_in, h_out)) per layer:");
            for (int l = 0; l < m->cfg.n_layer; l++)
                if (!keep)
                    fprintf(stderr, " %.4g", r->block_influence[l]);
                else if (keep[l])
                    fprintf(stderr, " %d:%.4g", l, r->block_influence[l]);
            fprintf(stderr, "\n");
            names[k] = lm_method_names[LM_METHOD_WANDA];
            ms[k++] = r->also;
        }
    }
    rc = emit_outputs(&out, ms, names, k, set.n);
    if (imatrix) {
        /* llama.cpp's chunk count is tokens / chunk size; layermap's own chunks are the sequences */
        lm_imatrix_info ii = {.dataset = data, .chunk_size = (int)seq_len,
                              .chunk_count = imatrix_chunk ? (int)(res[imq].n_tokens / seq_len) : res[imq].n_seq_done,
                              .layers = keep, .n_layers = keep ? keep_max + 1 : 0};
        if (lm_imatrix_write(m, &res[imq], &ii, imatrix, &err))
            rc |= cli_error(&err);
        else if (!out.quiet)
            fprintf(stderr, "layermap: wrote %s (imatrix, %d chunks of %ld tokens%s)\n", imatrix, ii.chunk_count,
                    seq_len, imatrix_chunk ? ", llama-imatrix's chunks" : ", layermap's chunks");
    }
    if (cli_cancel_signal()) { /* came after the work: the outputs were still written whole */
        cli_errorf("interrupted (%s) after the work; the outputs are complete", strsignal(cli_cancel_signal()));
        rc = 128 + cli_cancel_signal();
    }
    /* every output written: the default checkpoint has served (a --checkpoint FILE stays) */
    if (rc == 0 && ckpt && ckpt_default && remove(ckpt) != 0 && errno != ENOENT)
        fprintf(stderr, "layermap: warning: cannot remove the checkpoint %s: %s\n", ckpt, strerror(errno));
    goto done;
fail:
    cli_error(&err);
    rc = 1;
done:
    cli_cancel_uninstall(); /* held until the outputs are written: a signal never leaves half a file */
    free(keep);
    for (int q = 0; q < LM_METHOD_COUNT; q++) lm_attr_result_free(&res[q]);
    lm_engine_free(e);
    lm_dataset_free(ds);
    lm_tokenizer_free(tok);
    lm_model_close(m);
    return rc;
}
