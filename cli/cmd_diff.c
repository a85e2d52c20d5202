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
            "usage: layermap diff BASE FINETUNED [options]\n"
            "       layermap diff BASE FT1 FT2 [FT3 ...] [options]    (which entries the fine-tunes updated)\n\n"
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
            "Several fine-tunes of one BASE: for every pair (FTi, FTj) the update masks\n"
            "M = {ij : |W_ft - W_base| > tol} (exact: any changed value counts at tol 0) are compared per\n"
            "layer and module, the measure of which subnetwork each run (SFT, RL, ...) updated:\n"
            "  -m jaccard (default) |Mi & Mj| / |Mi | Mj|;  overlap  |Mi & Mj| / min(|Mi|, |Mj|);\n"
            "  all  both, plus each run's density (density-a, density-b). NaN (-) where neither updated.\n"
            "  Output files get -IvJ (fine-tunes I and J, from 1) and, with -m all, -METRIC before the\n"
            "  extension when there is more than one pair or metric.\n\n"
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

/* Under several MPI ranks, after lm_diff or lm_diff_overlap failed: an error
 * of the arguments (options, shapes, layers; found before any sum, alike on
 * every rank) ends every rank with one message; any other (a read on one
 * rank, while the others wait in the sum) ends the job from the failing
 * rank, naming it. Nothing when alone. */
static void diff_failed(lm_err *err) {
    if (cli_mpi_size() < 2) return;
    if (err->code == LM_EARG || err->code == LM_ESHAPE)
        cli_mpi_agree(1, err);
    else
        cli_mpi_fail(err);
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

/* `layermap diff BASE FT1 FT2 ...`: the update-mask overlap of every pair of
 * fine-tunes. Exit 0, 1 on a run-time error, 2 on a usage error. */
static int cmd_diff_overlap(const char **paths, int n_paths, const char *metric, double tol, long threads,
                            const char *layers_s, cli_out *out) {
    int want[LM_OVERLAP_COUNT] = {0}, n_want = 0;
    if (!strcmp(metric, "all"))
        for (int k = 0; k < LM_OVERLAP_COUNT; k++) want[k] = 1;
    else if (!strcmp(metric, "jaccard"))
        want[LM_OVERLAP_JACCARD] = 1;
    else if (!strcmp(metric, "overlap"))
        want[LM_OVERLAP_COEF] = 1;
    else
        return cli_errorf("diff: with several fine-tunes, -m is jaccard, overlap or all (got '%s')", metric) ? 2 : 2;
    for (int k = 0; k < LM_OVERLAP_COUNT; k++) n_want += want[k];
    uint8_t *keep = NULL;
    int keep_max = -1;
    if (layers_s && cli_parse_layers(layers_s, &keep, &keep_max)) return 2;
    enum { MAXP = 9 };
    char hub[MAXP][4096], hub_name[MAXP][256];
    lm_model *ms[MAXP] = {0};
    lm_err err = {0};
    int rc = 1;
    if (cli_out_check_writable(out)) goto done;
    for (int i = 0; i < n_paths; i++)
        if (cli_resolve_model(&paths[i], hub[i], sizeof hub[i], hub_name[i], 256)) goto done;
    for (int i = 0; i < n_paths && !err.code; i++) {
        if (lm_model_open(&ms[i], paths[i], &err)) break;
        if (hub_name[i][0]) snprintf(ms[i]->name, sizeof ms[i]->name, "%.*s", (int)sizeof ms[i]->name - 1, hub_name[i]);
    }
    if (!err.code && keep && keep_max >= ms[0]->cfg.n_layer) {
        err.code = LM_EARG;
        snprintf(err.msg, sizeof err.msg, "--layers %.100s: %.800s has layers 0-%d", layers_s, paths[0],
                 ms[0]->cfg.n_layer - 1);
    }
    /* every rank opens: all fail together; the same models everywhere, so that
     * lm_diff_overlap's checks fail alike on every rank too */
    if (cli_mpi_agree(err.code != 0, &err) || cli_mpi_same_models(ms, n_paths, &err)) goto fail;
    lm_diff_opts o;
    lm_diff_opts_default(&o);
    o.tol = tol;
    o.threads = (int)threads;
    o.layers = keep;
    o.n_layers_mask = keep_max + 1;
    o.dist = cli_mpi_dist(); /* NULL when alone */
    int n_pairs = (n_paths - 1) * (n_paths - 2) / 2, many = n_pairs > 1 || n_want > 1;
    rc = 0;
    for (int i = 1; i < n_paths && rc == 0; i++)
        for (int j = i + 1; j < n_paths && rc == 0; j++) {
            lm_matrix *mx[LM_OVERLAP_COUNT] = {0};
            cli_progress prog;
            cli_progress_init(&prog);
            prog.unit = "B";
            o.progress = cli_progress_cb;
            o.progress_ctx = &prog;
            double t0 = cli_now();
            int drc = lm_diff_overlap(ms[0], ms[i], ms[j], &o, mx, &err);
            cli_progress_end(&prog);
            if (drc) {
                diff_failed(&err);
                goto fail;
            }
            double secs = cli_now() - t0;
            if (cli_mpi_rank() > 0) { /* every rank holds the results; rank 0 alone writes them */
                for (int k = 0; k < LM_OVERLAP_COUNT; k++) lm_matrix_free(mx[k]);
                continue;
            }
            char opts[300];
            snprintf(opts, sizeof opts,
                     "{\"metric\": \"%s\", \"tol\": %.17g, \"pair\": [%d, %d], \"layers\": \"%s\", \"ranks\": %d}",
                     metric, o.tol, i, j, layers_s ? layers_s : "all", cli_mpi_size());
            cli_meta mt = {.command = "diff", .model = ms[i], .model2 = ms[j], .tokens = -1, .predicted = -1,
                           .loss = NAN, .seconds = secs, .threads = (int)threads, .options = opts};
            char *meta = cli_meta_json(&mt);
            for (int k = 0; k < LM_OVERLAP_COUNT && meta; k++)
                if (lm_matrix_set_meta(mx[k], meta, &err) ||
                    (keep && lm_matrix_select_layers(mx[k], keep, keep_max + 1, &err))) {
                    free(meta);
                    meta = NULL;
                    rc = -1;
                }
            free(meta);
            for (int k = 0; k < LM_OVERLAP_COUNT && rc == 0; k++) {
                if (!want[k]) continue;
                static char names[CLI_MAX_OUT][4096 + 64];
                char suffix[64], title[1024];
                cli_out o2 = *out;
                if (n_want > 1)
                    snprintf(suffix, sizeof suffix, "%dv%d-%s", i, j, lm_overlap_metric_names[k]);
                else
                    snprintf(suffix, sizeof suffix, "%dv%d", i, j);
                if (many)
                    for (int f = 0; f < o2.n_files; f++) {
                        with_suffix(names[f], sizeof names[f], out->files[f], suffix);
                        o2.files[f] = names[f];
                    }
                snprintf(title, sizeof title, "%.200s vs %.200s (base %.200s): %s", ms[i]->name, ms[j]->name,
                         ms[0]->name, k == LM_OVERLAP_JACCARD ? "Jaccard of the update masks"
                                      : k == LM_OVERLAP_COEF  ? "overlap coefficient of the update masks"
                                                              : lm_overlap_metric_names[k]);
                if (out->plot.title) o2.plot.title = out->plot.title;
                else o2.plot.title = title;
                if (!out->quiet) {
                    printf("%s%s\n", k || i > 1 || j > 2 ? "\n" : "", title);
                    fflush(stdout);
                }
                rc |= cli_out_emit(&o2, mx[k]);
            }
            for (int k = 0; k < LM_OVERLAP_COUNT; k++) lm_matrix_free(mx[k]);
            if (rc < 0) goto fail;
        }
    goto done;
fail:
    cli_error(&err);
    rc = 1;
done:
    free(keep);
    for (int i = 0; i < n_paths; i++) lm_model_close(ms[i]);
    return rc;
}

/* `layermap diff`: parse, open both models, lm_diff, emit the metric(s).
 * Exit 0, 1 on a run-time error, 2 on a usage error. */
int cmd_diff(int argc, char **argv) {
    enum { MAX_FT = 8 };
    const char *paths[MAX_FT + 1] = {NULL}, *metric = NULL, *layers_s = NULL;
    int n_paths = 0;
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
        } else if (n_paths < MAX_FT + 1) {
            paths[n_paths++] = a;
        } else {
            return cli_errorf("diff: unexpected argument '%s' (at most %d fine-tunes)", a, MAX_FT) ? 2 : 2;
        }
    }
    if (n_paths < 2) {
        usage(stderr);
        return 2;
    }
    if (n_paths > 2) return cmd_diff_overlap(paths, n_paths, metric ? metric : "jaccard", tol, threads, layers_s, &out);
    if (!metric) metric = "rel";
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
    if (!lm_model_open(&mb, paths[0], &err) && !lm_model_open(&mf, paths[1], &err)) {
        if (hub_name[0][0]) snprintf(mb->name, sizeof mb->name, "%s", hub_name[0]);
        if (hub_name[1][0]) snprintf(mf->name, sizeof mf->name, "%s", hub_name[1]);
        if (keep && keep_max >= mb->cfg.n_layer) {
            err.code = LM_EARG;
            snprintf(err.msg, sizeof err.msg, "--layers %.100s: %.800s has layers 0-%d", layers_s, paths[0],
                     mb->cfg.n_layer - 1);
        }
    }
    /* every rank opens: all fail together; the same models everywhere, so that
     * lm_diff's checks fail alike on every rank too */
    lm_model *pair[2] = {mb, mf};
    if (cli_mpi_agree(err.code != 0, &err) || cli_mpi_same_models(pair, 2, &err)) goto fail;
    o.dist = cli_mpi_dist(); /* NULL when alone: several ranks share the tensors */
    cli_progress prog;
    cli_progress_init(&prog);
    prog.unit = "B";
    o.progress = cli_progress_cb;
    o.progress_ctx = &prog;
    double t0 = cli_now();
    int drc = lm_diff(mb, mf, &o, ms, &err);
    cli_progress_end(&prog);
    if (drc) {
        diff_failed(&err);
        goto fail;
    }
    double secs = cli_now() - t0;
    if (cli_mpi_rank() > 0) { /* every rank holds the results; rank 0 alone writes them */
        rc = 0;
        goto done;
    }
    {
        char opts[400];
        snprintf(opts, sizeof opts,
                 "{\"metric\": \"%s\", \"tol\": %.17g, \"rank_k\": %d, \"oversample\": %d, \"power_iters\": %d, "
                 "\"seed\": %llu, \"layers\": \"%s\", \"ranks\": %d}",
                 metric, o.tol, o.rank_k, o.oversample, o.power_iters, (unsigned long long)o.seed,
                 layers_s ? layers_s : "all", cli_mpi_size());
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
        fprintf(stderr, "layermap: diff: %d layers x %d modules, %.3g GB of weights in %.2f s (%.2f GB/s)%s\n",
                ms[0]->n_layer, LM_N_MODULES, bytes / 1e9, secs, secs > 0 ? bytes / 1e9 / secs : 0.0,
                cli_mpi_size() > 1 ? ", over the ranks" : "");
        if (cli_mpi_size() > 1) fprintf(stderr, "layermap: %d ranks\n", cli_mpi_size());
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
