/*
 * cmd_ppl.c -- `layermap ppl MODEL FILE`: perplexity of a model on a text.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap ppl MODEL [FILE | -f FILE] [--seq-len N] [--max-tokens N] [-t N] [--compute C]\n"
            "                    [--llamacpp-arith]\n\n"
            "Perplexity = exp(mean next-token negative log-likelihood over every predicted token).\n"
            "The text is split into sequences of --seq-len tokens (default 512; a shorter text is one\n"
            "sequence), each starting with BOS when the model's metadata says to add it.\n"
            "  --llamacpp-arith  round activations as llama.cpp does (8-bit for quantized products,\n"
            "                    F16 KV cache) to compare with it\n"
            "  --max-tokens N    only the first N >= 1 tokens (default: all)\n"
            "  -t, --threads N   worker threads (default: all cores)\n"
            "%s"
            "MODEL: a .gguf, an HF directory, or a hub id ORG/NAME in the local HF cache (--revision R).\n",
            cli_compute_help);
}

int cmd_ppl(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    long seq_len = 512, max_tokens = 0, threads = 0;
    int compat = 0, compute = LM_COMPUTE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (i + 1 < argc && !strcmp(a, "--seq-len")) {
            if (cli_parse_int(a, argv[++i], 2, 1 << 20, &seq_len)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--max-tokens")) {
            if (cli_parse_int(a, argv[++i], 1, (long)1 << 50, &max_tokens)) return 2;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (i + 1 >= argc) return cli_errorf("ppl: %s needs a file name", a) ? 2 : 2;
            if (file) return cli_errorf("ppl: give the text file once (FILE or -f FILE)") ? 2 : 2;
            file = argv[++i];
        } else if (!strcmp(a, "--llamacpp-arith")) {
            compat = 1;
        } else if (i + 1 < argc && !strcmp(a, "--compute")) {
            if (cli_parse_compute(a, argv[++i], &compute)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--threads")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &threads)) return 2;
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("ppl: unknown or incomplete option '%s' (see --help)", a);
            return 2;
        } else if (!model) {
            model = a;
        } else if (!file) {
            file = a; /* `ppl MODEL FILE` as before */
        } else {
            cli_errorf("ppl: unexpected argument '%s'", a);
            return 2;
        }
    }
    if (!model || !file) {
        usage(stderr);
        return 2;
    }
    if (compat && compute != LM_COMPUTE_F32)
        return cli_errorf("ppl: --llamacpp-arith rounds as llama.cpp's F32 path does: it needs --compute f32") ? 2 : 2;
    lm_err err = {0};
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_dataset *ds = NULL;
    lm_engine *e = NULL;
    int rc = 1;
    char hub_path[4096], hub_name[256];
    if (cli_resolve_model(&model, hub_path, sizeof hub_path, hub_name, sizeof hub_name)) return 1;
    int *owner = NULL; /* under mpirun: owner[s] computes sequence s (lm_dataset_share) */
    /* every rank loads; all learn of any rank's failure at cli_mpi_agree */
    if (lm_model_open(&m, model, &err) || lm_tokenizer_open(&tok, m, &err)) goto loaded;
    lm_data_opts dopt = {.seq_len = (int)seq_len, .max_tokens = max_tokens};
    if (lm_dataset_load(&ds, file, tok, &dopt, &err)) goto loaded;
    int longest = 0;
    for (int s = 0; s < ds->n_seq; s++)
        if (ds->seqs[s].n > longest) longest = ds->seqs[s].n;
    lm_engine_opts eo = {.threads = (int)threads, .max_seq = longest, .ggml_compat = compat, .compute = compute};
    if (lm_engine_new(&e, m, &eo, &err)) goto loaded;
    cli_compute_note(e, compute);
    if (cli_mpi_size() > 1 && (!(owner = malloc(sizeof(int) * (size_t)(ds->n_seq ? ds->n_seq : 1))) ||
                               lm_dataset_share(ds, 1, cli_mpi_size(), owner, &err))) {
        if (!err.code) {
            err.code = LM_ENOMEM;
            snprintf(err.msg, sizeof err.msg, "out of memory for the data shares");
        }
    }
loaded:
    if (cli_mpi_agree(err.code != 0, &err) || cli_mpi_same_data(m, ds, file, &err)) goto fail;
    cli_progress prog;
    cli_progress_init(&prog);
    prog.unit = "tok";
    double nll = 0.0, t0 = cli_now(), mine = (double)ds->n_tokens; /* this rank's tokens */
    if (owner) {
        mine = 0;
        for (int s = 0; s < ds->n_seq; s++)
            if (owner[s] == cli_mpi_rank()) mine += ds->seqs[s].n;
    }
    int64_t count = 0, done = 0;
    for (int s = 0; s < ds->n_seq; s++) {
        if (owner && owner[s] != cli_mpi_rank()) continue;
        double l;
        int64_t c;
        if (lm_engine_loss(e, &ds->seqs[s], &l, &c, &err)) {
            cli_progress_end(&prog);
            cli_mpi_fail(&err); /* several ranks: ends them all */
            goto fail;
        }
        nll += l;
        count += c;
        done += ds->seqs[s].n;
        /* rank 0's share scaled to the whole text: an estimate of the global progress */
        if (cli_mpi_rank() == 0) cli_progress_cb(&prog, (double)done * (double)ds->n_tokens / mine, (double)ds->n_tokens, "ppl");
    }
    cli_progress_end(&prog);
    if (owner) { /* the sums over every rank (the count exact as a double below 2^53) */
        double sums[2] = {nll, (double)count};
        cli_mpi_sum(sums, 2);
        nll = sums[0];
        count = (int64_t)sums[1];
    }
    double secs = cli_now() - t0;
    if (cli_mpi_rank() > 0) { /* rank 0 alone prints */
        rc = 0;
        goto done;
    }
    if (count == 0) {
        cli_errorf("%s: no token to predict (text too short?)", file);
        goto done;
    }
    printf("perplexity %.4f\n", exp(nll / (double)count));
    printf("nll/token  %.6f\n", nll / (double)count);
    printf("tokens     %lld in %d sequence%s, %lld predicted\n", (long long)ds->n_tokens, ds->n_seq,
           ds->n_seq == 1 ? "" : "s", (long long)count);
    fprintf(stderr, "layermap: %.2f s, %.1f tokens/s\n", secs, secs > 0 ? (double)ds->n_tokens / secs : 0.0);
    if (cli_mpi_size() > 1) fprintf(stderr, "layermap: %d ranks\n", cli_mpi_size());
    if (cli_verbose) fprintf(stderr, "layermap: %s\n", lm_engine_kernel_name());
    rc = 0;
    goto done;
fail:
    cli_error(&err);
done:
    free(owner);
    lm_engine_free(e);
    lm_dataset_free(ds);
    lm_tokenizer_free(tok);
    lm_model_close(m);
    return rc;
}
