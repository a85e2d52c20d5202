/*
 * cmd_attribute.c -- `layermap attribute MODEL --data FILE --method M`:
 * the layers x modules attribution matrix from calibration data.
 */
#include "cli.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Ctrl-C during a run with --checkpoint: the library saves the sums between
 * passes and returns LM_ECANCELED; --resume continues. (sig_atomic_t is int
 * on the platforms layermap builds for; lm_attr_opts.cancel is an int.) */
static volatile int cancel_flag;
static void on_sigint(int sig) {
    (void)sig;
    cancel_flag = 1;
}

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
            "  --max-tokens N      stop reading data after N tokens (default: all)\n"
            "  --batch N           sequences packed into one pass (default 1; helps short sequences)\n"
            "  --steps N           integrated-gradients steps (default 32)\n"
            "  --threads N         worker threads (default: all cores)\n"
            "  --checkpoint FILE   save the accumulated sums there while running\n"
            "  --resume            continue an interrupted run from --checkpoint (ends identical;\n"
            "                      with --checkpoint, Ctrl-C saves the sums and stops)\n"
            "  --act-cache MB      memory for layer activations kept between forward and backward\n"
            "                      (default 256; layers that do not fit are recomputed)\n"
            "  --weight-cache MB   memory for weights dequantized to F32 (default: 3 layers for\n"
            "                      sequences of 256+ tokens, else up to a third of RAM)\n"
            "  --per-param         divide each cell by the module's parameter count (mean per weight:\n"
            "                      compares modules of different sizes, e.g. for LoRA targets)\n"
            "%s",
            cli_out_help);
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
        if (!as && lm_method_parse(name, &m) != LM_OK)
            return cli_errorf("attribute: unknown method '%s' (see --help)", name) ? 2 : 2;
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

/* Print the run summary to stderr. */
static void summary(const lm_attr_result *r, const char *method, double secs) {
    double ppl = r->n_targets ? exp(r->loss_sum / (double)r->n_targets) : NAN;
    fprintf(stderr, "layermap: %s: %lld tokens, %lld predicted, loss %.4f/token (ppl %.3f), %.1f s, %.1f tokens/s\n",
            method, (long long)r->n_tokens, (long long)r->n_targets,
            r->n_targets ? r->loss_sum / (double)r->n_targets : NAN, ppl, secs,
            secs > 0 ? (double)r->n_tokens / secs : 0.0);
}

int cmd_attribute(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *method_s = NULL, *ckpt = NULL;
    long seq_len = 512, max_tokens = 0, steps = 32, threads = 0, batch = 1, act_mb = 0, weight_mb = 0;
    int resume = 0, per_param = 0;
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
        } else if (!strcmp(a, "--per-param")) {
            per_param = 1;
        } else if (i + 1 < argc && !strcmp(a, "--data")) {
            data = argv[++i];
        } else if (i + 1 < argc && (!strcmp(a, "-m") || !strcmp(a, "--method"))) {
            if (method_s) return cli_errorf("attribute: -m given twice (list several as -m a,b,c)") ? 2 : 2;
            method_s = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--checkpoint")) {
            ckpt = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--seq-len")) {
            if (cli_parse_int(a, argv[++i], 2, 1 << 20, &seq_len)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--max-tokens")) {
            if (cli_parse_int(a, argv[++i], 0, (long)1 << 50, &max_tokens)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--act-cache")) {
            if (cli_parse_int(a, argv[++i], 1, 1L << 30, &act_mb)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--weight-cache")) {
            if (cli_parse_int(a, argv[++i], 1, 1L << 30, &weight_mb)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--batch")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &batch)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--steps")) {
            if (cli_parse_int(a, argv[++i], 1, 100000, &steps)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--threads")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &threads)) return 2;
        } else if (a[0] == '-' && a[1]) {
            return cli_errorf("attribute: unknown or incomplete option '%s' (see --help)", a) ? 2 : 2;
        } else if (!model) {
            model = a;
        } else {
            return cli_errorf("attribute: unexpected argument '%s'", a) ? 2 : 2;
        }
    }
    if (!model || !data) {
        usage(stderr);
        return 2;
    }
    method_set set;
    if (parse_methods(method_s ? method_s : "grad-weight", &set)) return 2;
    if (check_outputs(&out, set.n)) return 2;
    if (resume && !ckpt) return cli_errorf("attribute: --resume needs --checkpoint FILE") ? 2 : 2;

    lm_err err = {0};
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_dataset *ds = NULL;
    lm_engine *e = NULL;
    lm_attr_result res[LM_METHOD_COUNT];
    memset(res, 0, sizeof res);
    int rc = 1;
    if (lm_model_open(&m, model, &err) || lm_tokenizer_open(&tok, m, &err)) goto fail;
    lm_data_opts dopt = {(int)seq_len, max_tokens};
    if (lm_dataset_load(&ds, data, tok, &dopt, &err)) goto fail;
    int longest = 0;
    for (int s = 0; s < ds->n_seq; s++)
        if (ds->seqs[s].n > longest) longest = ds->seqs[s].n;
    if (batch > ds->n_seq) batch = ds->n_seq;
    lm_engine_opts eo = {.threads = (int)threads, .max_seq = longest, .max_batch = (int)batch,
                         .act_cache_bytes = (size_t)act_mb << 20, .weight_cache_bytes = (size_t)weight_mb << 20};
    if (lm_engine_new(&e, m, &eo, &err)) goto fail;

    lm_attr_opts ao;
    lm_attr_opts_default(&ao);
    ao.ig_steps = (int)steps;
    ao.batch = (int)batch;
    ao.checkpoint_path = ckpt;
    ao.resume = resume;
    cli_progress prog;
    cli_progress_init(&prog);
    ao.progress = cli_progress_cb;
    ao.progress_ctx = &prog;
    if (ckpt) {
        ao.cancel = &cancel_flag;
        signal(SIGINT, on_sigint);
    }
    int arc = lm_attribute_many(e, ds, set.m, set.n, &ao, res, &err);
    if (ckpt) signal(SIGINT, SIG_DFL);
    cli_progress_end(&prog);
    if (arc) goto fail;
    lm_matrix *ms[2 * LM_METHOD_COUNT];
    const char *names[2 * LM_METHOD_COUNT];
    int k = 0;
    for (int q = 0; q < set.n; q++) {
        lm_method method = set.m[q];
        lm_attr_result *r = &res[q];
        summary(r, set.act_stats[q] ? "act-stats" : lm_method_names[method], r->seconds);
        char note[512];
        snprintf(note, sizeof note, "data=%s tokens=%lld seq_len=%ld%s", data, (long long)r->n_tokens, seq_len,
                 method == LM_METHOD_IG ? " ig" : "");
        lm_matrix *two[2] = {r->m, r->also};
        for (int i = 0; i < 2; i++)
            if (two[i]) {
                snprintf(two[i]->model, sizeof two[i]->model, "%s", m->name);
                snprintf(two[i]->note, sizeof two[i]->note, "%s", note);
            }
        for (int i = 0; per_param && i < 2; i++) {
            if (!two[i]) continue;
            for (int l = 0; l < two[i]->n_layer; l++)
                for (int c = 0; c < LM_N_MODULES; c++)
                    lm_matrix_set(two[i], l, c, lm_matrix_get(two[i], l, c) / (double)lm_model_module_params(m, l, c));
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
            for (int l = 0; l < m->cfg.n_layer; l++) fprintf(stderr, " %.4g", r->block_influence[l]);
            fprintf(stderr, "\n");
            names[k] = lm_method_names[LM_METHOD_WANDA];
            ms[k++] = r->also;
        }
    }
    fprintf(stderr, "layermap: %s\n", lm_engine_kernel_name());
    rc = emit_outputs(&out, ms, names, k, set.n);
    goto done;
fail:
    cli_error(&err);
    rc = 1;
done:
    for (int q = 0; q < LM_METHOD_COUNT; q++) lm_attr_result_free(&res[q]);
    lm_engine_free(e);
    lm_dataset_free(ds);
    lm_tokenizer_free(tok);
    lm_model_close(m);
    return rc;
}
