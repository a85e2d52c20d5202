/*
 * cmd_diff.c -- `layermap diff BASE FINETUNED`: how much, how densely and in
 * how many directions fine-tuning changed each (layer, module) weight.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Monotonic seconds. */

/* --help text (and the text printed when the two paths are missing). */
static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap diff BASE FINETUNED [options]\n\n"
            "Compare two checkpoints of one model (HF directories or .gguf files, formats and dtypes may\n"
            "differ) per layer and module, with D = W_ft - W_base (docs/METHODS.md, \"Two checkpoints\"):\n\n"
            "  -m, --metric M      rel (default)  ||D||_F / ||W_base||_F, relative weight change\n"
            "                      density        fraction of entries with |D_ij| > tol\n"
            "                      cosine         cosine similarity of W_base and W_ft\n"
            "                      rank           entropy effective rank exp(H(sigma / sum sigma)) of D over its\n"
            "                                     top K singular values (randomized SVD; exact when\n"
            "                                     K + P >= min(rows, cols))\n"
            "                      all            the four; each output file gets -METRIC before its\n"
            "                                     extension (x.png -> x-rel.png, ...), each with its own scale\n"
            "  --tol X             density tolerance (default 0: any change counts, right for bf16)\n"
            "  --rank-k K          singular values the rank is taken over (default 64)\n"
            "  --oversample P      extra sketch columns of the randomized SVD (default 8)\n"
            "  --power-iters Q     power iterations of the randomized SVD (default 2)\n"
            "  --seed N            seed of the random sketch (default fixed: runs are reproducible)\n"
            "  -t, --threads N     worker threads, one tensor each (default: all cores)\n"
            "  --layers L          only these layers, e.g. 0-5,20: the others are not read; rows keep\n"
            "                      their layer numbers\n"
            "BASE and FINETUNED may be hub ids ORG/NAME in the local Hugging Face cache (--revision R\n"
            "applies to both; never downloads). Options take --opt=value too.\n\n"
            "Edge values: an unchanged module has rel 0, density 0, cosine 1, rank 0; a zero base\n"
            "weight gives rel NaN (printed as -). rel, density and cosine read each weight once,\n"
            "at memory/disk speed; rank reads it 2 + 2Q times and is compute-bound.\n"
            "%s",
            cli_out_help);
}

/* Title of metric k's figure and terminal heading. */
static void metric_title(char *buf, size_t n, int k, const lm_diff_opts *o) {
    switch (k) {
    case LM_DIFF_REL: snprintf(buf, n, "relative weight change ||ΔW||/||W||"); break;
    case LM_DIFF_DENSITY: snprintf(buf, n, "update density (tol=%g)", o->tol); break;
    case LM_DIFF_COSINE: snprintf(buf, n, "cosine(W_base, W_ft)"); break;
    default: snprintf(buf, n, "effective rank of ΔW (k=%d)", o->rank_k); break;
    }
}

/* dst = path with "-suffix" inserted before its extension. */
static void with_suffix(char *dst, size_t n, const char *path, const char *suffix) {
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) dot = path + strlen(path);
    snprintf(dst, n, "%.*s-%s%s", (int)(dot - path), path, suffix, dot);
}

/* Print and write metric k of ms with its own title (and file names with
 * "-metric" when several metrics are written). 0 or 1. */
static int emit_metric(const cli_out *base_out, lm_matrix *m, int k, int many, const lm_diff_opts *o,
                       const char *base_name, const char *ft_name) {
    static char names[CLI_MAX_OUT][4096 + 32];
    cli_out out = *base_out;
    char what[160], title[1024];
    metric_title(what, sizeof what, k, o);
    if (base_out->plot.title)
        snprintf(title, sizeof title, many ? "%s: %s" : "%s", base_out->plot.title, what);
    else
        snprintf(title, sizeof title, "%.300s -> %.300s: %s", base_name, ft_name, what);
    out.plot.title = title;
    if (many)
        for (int i = 0; i < out.n_files; i++) {
            with_suffix(names[i], sizeof names[i], base_out->files[i], lm_diff_metric_names[k]);
            out.files[i] = names[i];
        }
    if (!out.quiet) {
        printf("%s%s\n", k && many ? "\n" : "", what);
        fflush(stdout);
    }
    return cli_out_emit(&out, m);
}

/* `layermap diff`: parse, open both models, lm_diff, emit the metric(s).
 * Exit 0, 1 on a run-time error, 2 on a usage error. */
int cmd_diff(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL}, *metric = "rel", *layers_s = NULL;
    long rank_k = 64, oversample = 8, power_iters = 2, threads = 0, seed = -1;
    double tol = 0;
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
        } else if (i + 1 < argc && (!strcmp(a, "-m") || !strcmp(a, "--metric"))) {
            metric = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--tol")) {
            if (cli_parse_double(a, argv[++i], &tol)) return 2;
            if (tol < 0) return cli_errorf("--tol: %g is negative", tol) ? 2 : 2;
        } else if (i + 1 < argc && !strcmp(a, "--rank-k")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &rank_k)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--oversample")) {
            if (cli_parse_int(a, argv[++i], 0, 4096, &oversample)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--power-iters")) {
            if (cli_parse_int(a, argv[++i], 0, 64, &power_iters)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--seed")) {
            if (cli_parse_int(a, argv[++i], 0, 0x7fffffffffffffffL, &seed)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--layers")) {
            layers_s = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--threads")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &threads)) return 2;
        } else if (a[0] == '-' && a[1]) {
            return cli_errorf("diff: unknown or incomplete option '%s' (see --help)", a) ? 2 : 2;
        } else if (!paths[0]) {
            paths[0] = a;
        } else if (!paths[1]) {
            paths[1] = a;
        } else {
            return cli_errorf("diff: unexpected argument '%s'", a) ? 2 : 2;
        }
    }
    if (!paths[1]) {
        usage(stderr);
        return 2;
    }
    int which = -1; /* a metric, or LM_DIFF_COUNT for all */
    if (!strcmp(metric, "all")) which = LM_DIFF_COUNT;
    for (int k = 0; k < LM_DIFF_COUNT; k++)
        if (!strcmp(metric, lm_diff_metric_names[k])) which = k;
    if (which < 0) {
        lm_method unused;
        if (strchr(metric, '/') || strstr(metric, ".gguf") || strstr(metric, ".safetensors"))
            return cli_errorf("-m takes a metric (rel, density, cosine, rank or all); BASE and FINETUNED come first, "
                              "'%s' looks like a model", metric) ? 2 : 2;
        if (!lm_method_parse(metric, &unused))
            return cli_errorf("diff: '%s' is an attribute method; diff's -m is rel, density, cosine, rank or all",
                              metric) ? 2 : 2;
        return cli_errorf("diff: unknown metric '%s' (rel, density, cosine, rank or all)", metric) ? 2 : 2;
    }

    uint8_t *keep = NULL;
    int keep_max = -1;
    if (layers_s && cli_parse_layers(layers_s, &keep, &keep_max)) return 2;
    char hub[2][4096], hub_name[2][256];
    if (cli_out_check_writable(&out) || cli_resolve_model(&paths[0], hub[0], sizeof hub[0], hub_name[0], 256) ||
        cli_resolve_model(&paths[1], hub[1], sizeof hub[1], hub_name[1], 256)) {
        free(keep);
        return 1;
    }
    lm_diff_opts o;
    lm_diff_opts_default(&o);
    o.layers = keep;
    o.n_layers_mask = keep_max + 1;
    o.tol = tol;
    o.rank_k = which == LM_DIFF_RANK || which == LM_DIFF_COUNT ? (int)rank_k : 0; /* 0: no SVD passes */
    o.oversample = (int)oversample;
    o.power_iters = (int)power_iters;
    o.threads = (int)threads;
    if (seed >= 0) o.seed = (uint64_t)seed;

    lm_err err = {0};
    lm_model *mb = NULL, *mf = NULL;
    lm_matrix *ms[LM_DIFF_COUNT] = {0};
    int rc = 1;
    if (lm_model_open(&mb, paths[0], &err) || lm_model_open(&mf, paths[1], &err)) goto fail;
    if (hub_name[0][0]) snprintf(mb->name, sizeof mb->name, "%s", hub_name[0]);
    if (hub_name[1][0]) snprintf(mf->name, sizeof mf->name, "%s", hub_name[1]);
    if (keep && keep_max >= mb->cfg.n_layer) {
        cli_errorf("--layers %s: %s has layers 0-%d", layers_s, paths[0], mb->cfg.n_layer - 1);
        goto done;
    }
    cli_progress prog;
    cli_progress_init(&prog);
    prog.unit = "B";
    o.progress = cli_progress_cb;
    o.progress_ctx = &prog;
    double t0 = cli_now();
    int drc = lm_diff(mb, mf, &o, ms, &err);
    cli_progress_end(&prog);
    if (drc) goto fail;
    double secs = cli_now() - t0;
    {
        char opts[400];
        snprintf(opts, sizeof opts,
                 "{\"metric\": \"%s\", \"tol\": %.17g, \"rank_k\": %d, \"oversample\": %d, \"power_iters\": %d, "
                 "\"seed\": %llu, \"layers\": \"%s\"}",
                 metric, o.tol, o.rank_k, o.oversample, o.power_iters, (unsigned long long)o.seed,
                 layers_s ? layers_s : "all");
        cli_meta mt = {.command = "diff", .model = mb, .model2 = mf, .tokens = -1, .predicted = -1, .loss = NAN,
                       .seconds = secs, .threads = (int)threads, .options = opts};
        char *meta = cli_meta_json(&mt);
        if (!meta) goto done;
        for (int k = 0; k < LM_DIFF_COUNT; k++)
            if (lm_matrix_set_meta(ms[k], meta, &err) || (keep && lm_matrix_select_layers(ms[k], keep, keep_max + 1, &err))) {
                free(meta);
                goto fail;
            }
        free(meta);
    }
    if (!out.quiet) {
        double bytes = 0;
        for (int l = 0; l < mb->cfg.n_layer; l++) {
            if (keep && !keep[l]) continue;
            for (int j = 0; j < LM_N_MODULES; j++)
                bytes += (double)mb->layers[l].w[j]->nbytes + (double)mf->layers[l].w[j]->nbytes;
        }
        fprintf(stderr, "layermap: diff: %d layers x %d modules, %.3g GB of weights in %.2f s (%.2f GB/s)\n",
                ms[0]->n_layer, LM_N_MODULES, bytes / 1e9, secs, secs > 0 ? bytes / 1e9 / secs : 0.0);
    }
    if (which < LM_DIFF_COUNT) {
        rc = emit_metric(&out, ms[which], which, 0, &o, mb->name, mf->name);
    } else {
        rc = 0;
        for (int k = 0; k < LM_DIFF_COUNT; k++) rc |= emit_metric(&out, ms[k], k, 1, &o, mb->name, mf->name);
    }
    goto done;
fail:
    cli_error(&err);
    rc = 1;
done:
    free(keep);
    for (int k = 0; k < LM_DIFF_COUNT; k++) lm_matrix_free(ms[k]);
    lm_model_close(mb);
    lm_model_close(mf);
    return rc;
}
