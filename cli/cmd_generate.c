/*
 * cmd_generate.c -- `layermap generate MODEL "prompt" -n N`: greedy decoding,
 * a quick sanity check that a model loads and computes as it should.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap generate MODEL [PROMPT | -f FILE] [-n N] [--ids] [--no-bos] [-t N] [--compute C]\n\n"
            "Greedy continuation of PROMPT (default: empty, i.e. from BOS) by N tokens (default 32).\n"
            "  -f FILE    read the prompt from FILE\n"
            "  --ids      print the token ids of prompt + continuation instead of text\n"
            "  --bench R  time the prompt forward R times after one warm-up; report the median\n"
            "The prompt's processing speed (one forward, last logits only) goes to stderr.\n"
            "  --no-bos   do not add BOS even if the model adds one\n"
            "  --llamacpp-arith  round activations as llama.cpp does (8-bit for quantized\n"
            "             products, F16 KV cache) to compare with it token for token\n"
            "%s",
            cli_compute_help);
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *prompt_file = NULL;
    long n_new = 32, threads = 0, bench = 0;
    int ids = 0, no_bos = 0, compat = 0, compute = LM_COMPUTE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (i + 1 < argc && (!strcmp(a, "-f") || !strcmp(a, "--file"))) {
            prompt_file = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--bench")) {
            if (cli_parse_int(a, argv[++i], 1, 1000, &bench)) return 2;
        } else if (!strcmp(a, "--ids")) {
            ids = 1;
        } else if (!strcmp(a, "--no-bos")) {
            no_bos = 1;
        } else if (i + 1 < argc && (!strcmp(a, "-n") || !strcmp(a, "--tokens"))) {
            if (cli_parse_int(a, argv[++i], 0, 1 << 20, &n_new)) return 2;
        } else if (!strcmp(a, "--llamacpp-arith")) {
            compat = 1;
        } else if (i + 1 < argc && !strcmp(a, "--compute")) {
            if (cli_parse_compute(a, argv[++i], &compute)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--threads")) {
            if (cli_parse_int(a, argv[++i], 1, 4096, &threads)) return 2;
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("generate: unknown or incomplete option '%s' (see --help)", a);
            return 2;
        } else if (!model) {
            model = a;
        } else if (!prompt) {
            prompt = a;
        } else {
            cli_errorf("generate: unexpected argument '%s'", a);
            return 2;
        }
    }
    if (compat && compute != LM_COMPUTE_F32)
        return cli_errorf("generate: --llamacpp-arith rounds as llama.cpp's F32 path does: it needs --compute f32") ? 2
                                                                                                                 : 2;
    if (!model) {
        usage(stderr);
        return 2;
    }
    lm_err err = {0};
    char *file_text = NULL;
    if (prompt_file) {
        FILE *f = fopen(prompt_file, "rb");
        if (!f) {
            cli_errorf("%s: cannot open", prompt_file);
            return 1;
        }
        size_t cap = 1 << 16, len = 0;
        file_text = malloc(cap + 1);
        size_t r;
        while (file_text && (r = fread(file_text + len, 1, cap - len, f)) > 0) {
            len += r;
            if (len == cap) {
                char *nb = realloc(file_text, 2 * cap + 1);
                if (!nb) {
                    free(file_text);
                    file_text = NULL;
                    break;
                }
                file_text = nb;
                cap *= 2;
            }
        }
        fclose(f);
        if (!file_text) {
            cli_errorf("%s: out of memory", prompt_file);
            return 1;
        }
        file_text[len] = 0;
        prompt = file_text;
    }
    if (!prompt) prompt = "";
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    lm_engine *e = NULL;
    int32_t *p = NULL, *outv = NULL;
    char *text = NULL;
    int np = 0, nout = 0, rc = 1;
    char hub_path[4096], hub_name[256];
    if (cli_resolve_model(&model, hub_path, sizeof hub_path, hub_name, sizeof hub_name)) goto done;
    if (lm_model_open(&m, model, &err) || lm_tokenizer_open(&tok, m, &err)) goto fail;
    if (lm_tokenize(tok, prompt, strlen(prompt), no_bos ? 0 : -1, &p, &np, &err)) goto fail;
    if (np == 0) {
        cli_errorf("generate: empty prompt and the model adds no BOS: give a prompt");
        goto done;
    }
    lm_engine_opts eo = {
        .threads = (int)threads, .max_seq = (int)(np + n_new), .ggml_compat = compat, .compute = compute};
    if (lm_engine_new(&e, m, &eo, &err)) goto fail;
    cli_compute_note(e, compute);
    {   /* prompt processing speed: one forward, logits of the last position only */
        double times[1001];
        int runs = bench > 0 ? (int)bench + 1 : 1;
        for (int r = 0; r < runs; r++) {
            double t0 = cli_now();
            if (lm_engine_forward_last(e, p, np, &err)) goto fail;
            times[r] = cli_now() - t0;
        }
        double t = times[0];
        if (bench > 0) { /* median of the timed runs (the first was the warm-up) */
            for (int a = 1; a < runs; a++)
                for (int b = a + 1; b < runs; b++)
                    if (times[b] < times[a]) {
                        double x = times[a];
                        times[a] = times[b];
                        times[b] = x;
                    }
            t = times[1 + (runs - 1) / 2];
        }
        fprintf(stderr, "layermap: prompt %d tokens in %.3f s (%.1f tokens/s)%s\n", np, t, t > 0 ? np / t : 0.0,
                bench > 0 ? ", median of the timed runs" : "");
        if (cli_verbose) fprintf(stderr, "layermap: %s\n", lm_engine_kernel_name());
    }
    if (lm_generate_greedy(e, p, np, (int)n_new, &outv, &nout, &err)) goto fail;
    if (ids) {
        for (int i = 0; i < nout; i++) printf("%d%c", outv[i], i + 1 < nout ? ' ' : '\n');
    } else {
        if (lm_detokenize(tok, outv, nout, &text, &err)) goto fail;
        printf("%s\n", text);
    }
    rc = 0;
    goto done;
fail:
    cli_error(&err);
done:
    free(text);
    free(file_text);
    free(p);
    free(outv);
    lm_engine_free(e);
    lm_tokenizer_free(tok);
    lm_model_close(m);
    return rc;
}
