/*
 * cmd_attribute.c -- `layermap attribute MODEL --data FILE --method M`:
 * the layers x modules attribution matrix from calibration data.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap attribute MODEL --data FILE [options]\n\n"
            "Attribution of each (layer, module) from calibration data; docs/METHODS.md defines each method.\n\n"
            "  --data FILE         plain text, JSONL {\"text\"}, or JSONL {\"prompt\",\"completion\"} (loss on completion)\n"
            "  -m, --method M      grad-weight (default) | grad-weight-signed | fisher | grad-norm |\n"
            "                      act-grad | ig | ablate | ablate-mean | act-stats (act-sq + wanda + block influence)\n"
            "  --seq-len N         tokens per sequence (default 512)\n"
            "  --max-tokens N      stop reading data after N tokens (default: all)\n"
            "  --batch N           sequences packed into one pass (default 1; helps short sequences)\n"
            "  --steps N           integrated-gradients steps (default 32)\n"
            "  --threads N         worker threads (default: all cores)\n"
            "  --checkpoint FILE   save the accumulated sums there while running\n"
            "  --resume            continue an interrupted run from --checkpoint (ends identical)\n"
            "  --act-cache MB      memory for layer activations kept between forward and backward\n"
            "                      (default 256; layers that do not fit are recomputed)\n"
            "  --weight-cache MB   memory for weights dequantized to F32 (default: 3 layers for\n"
            "                      sequences of 256+ tokens, else up to a third of RAM)\n"
            "  --per-param         divide each cell by the module's parameter count (mean per weight:\n"
            "                      compares modules of different sizes, e.g. for LoRA targets)\n"
            "%s",
            cli_out_help);
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
    const char *model = NULL, *data = NULL, *method_s = "grad-weight", *ckpt = NULL;
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
    int act_stats = !strcmp(method_s, "act-stats");
    lm_method method = LM_METHOD_ACT_SQ;
    if (!act_stats && lm_method_parse(method_s, &method) != LM_OK)
        return cli_errorf("attribute: unknown method '%s' (see --help)", method_s) ? 2 : 2;
    if (resume && !ckpt) return cli_errorf("attribute: --resume needs --checkpoint FILE") ? 2 : 2;

    lm_err err = {0};
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_dataset *ds = NULL;
    lm_engine *e = NULL;
    lm_attr_result res = {0};
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
    int arc = lm_attribute(e, ds, method, &ao, &res, &err);
    cli_progress_end(&prog);
    if (arc) goto fail;
    summary(&res, act_stats ? "act-stats" : method_s, res.seconds);
    fprintf(stderr, "layermap: %s\n", lm_engine_kernel_name());

    char note[512];
    snprintf(note, sizeof note, "data=%s tokens=%lld seq_len=%ld%s", data, (long long)res.n_tokens, seq_len,
             method == LM_METHOD_IG ? " ig" : "");
    lm_matrix *ms[2] = {res.m, res.also};
    for (int i = 0; i < 2; i++)
        if (ms[i]) {
            snprintf(ms[i]->model, sizeof ms[i]->model, "%s", m->name);
            snprintf(ms[i]->note, sizeof ms[i]->note, "%s", note);
        }
    for (int i = 0; per_param && i < 2; i++) {
        if (!ms[i]) continue;
        for (int l = 0; l < ms[i]->n_layer; l++)
            for (int k = 0; k < LM_N_MODULES; k++)
                lm_matrix_set(ms[i], l, k, lm_matrix_get(ms[i], l, k) / (double)lm_model_module_params(m, l, k));
        snprintf(ms[i]->method + strlen(ms[i]->method), sizeof ms[i]->method - strlen(ms[i]->method), " per param");
    }
    if (method == LM_METHOD_IG) {
        fprintf(stderr, "layermap: ig: %d steps, completeness gap %.3g%% (sum |IG - exact ablation| / sum |exact|)\n",
                (int)steps, 100.0 * res.ig_gap);
        snprintf(res.m->note + strlen(res.m->note), sizeof res.m->note - strlen(res.m->note),
                 " steps=%ld completeness_gap=%.6g", steps, res.ig_gap);
    }
    if (act_stats) {
        fprintf(stderr, "layermap: block influence (1 - cos(h_in, h_out)) per layer:");
        for (int l = 0; l < m->cfg.n_layer; l++) fprintf(stderr, " %.4g", res.block_influence[l]);
        fprintf(stderr, "\n");
        rc = cli_out_emit_many(&out, ms, 2);
    } else {
        rc = cli_out_emit(&out, res.m);
    }
    goto done;
fail:
    cli_error(&err);
    rc = 1;
done:
    lm_attr_result_free(&res);
    lm_engine_free(e);
    lm_dataset_free(ds);
    lm_tokenizer_free(tok);
    lm_model_close(m);
    return rc;
}
