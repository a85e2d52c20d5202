/*
 * cmd_recipe.c -- `layermap recipe MATRIX --model MODEL --bpw B -o types.txt`:
 * a GGUF type for every weight tensor of MODEL that keeps the most of the
 * matrix within B bits per weight, as llama-quantize's --tensor-type-file.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --help text. */
static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap recipe MATRIX --model MODEL --bpw B -o types.txt [options]\n\n"
            "A quantization recipe for llama.cpp: a GGUF type for every weight tensor of MODEL\n"
            "(the 7 modules of every layer, token_embd, output) that keeps the most of the\n"
            "matrix (.csv or .json from attribute, unnormalised or --norm global) within B\n"
            "bits per weight over those tensors. Writes llama-quantize's --tensor-type-file\n"
            "(one PATTERN=type a line, e.g. ^blk\\.3\\.attn_q\\.weight$=q5_0) and prints the\n"
            "types, the size and the --tensor-type arguments of the same recipe.\n\n"
            "Types (bits per weight from ggml's blocks): q2_k 2.625, q3_k 3.4375, q4_k 4.5,\n"
            "q5_k 5.5, q6_k 6.5625 where rows (ne0, the input dim) are a multiple of 256;\n"
            "q4_0 4.5, q4_1 5.0, q5_0 5.5, q5_1 6.0, q8_0 8.5 where they are a multiple of\n"
            "32 (SmolLM2's 576 and Gemma 3's 640 take these); f16 16 (bf16: the same cost\n"
            "and more error, never chosen).\n\n"
            "How: a module of importance I (its cell: the total over its weights, as\n"
            "grad-weight, fisher, act-sq are) at type T keeps I * (1 - err(T)), err(T) the\n"
            "relative squared error of round-to-nearest on Gaussian weights with T's scheme\n"
            "(about 4x less per extra bit; q4_0 0.0072, q5_0 0.0018, q8_0 2.8e-5, q4_k 0.0064,\n"
            "q6_k 0.00035). Greedy (the Lagrangian of the knapsack): every module starts at\n"
            "its cheapest type and climbs the convex hull of the types that fit it, taking\n"
            "each time the step that removes the most I * err per byte and still fits.\n"
            "output (or token_embd when tied, as in SmolLM2 and Gemma 3) is fixed at q6_k, or\n"
            "q8_0 when rows do not fit k-quants (llama.cpp's k-quant mixtures do the same); an\n"
            "untied token_embd at q4_k, else q4_0. Their bytes come out of the budget first.\n\n"
            "  --model MODEL       the model the matrix is for (.gguf or HF directory): tensor\n"
            "                      names (llama.cpp's) and shapes\n"
            "  --bpw B             the budget, bits per weight over all those tensors\n"
            "  --per-weight        the cells are per weight (multiplied by the weight count)\n"
            "  --output-type T     the type of output (a tied token_embd) instead of the rule\n"
            "  --embd-type T       the type of an untied token_embd instead of the rule\n"
            "  -o FILE             the --tensor-type-file (required)\n"
            "  -q, --quiet         print only the summary line\n"
            "  -h, --help          this text\n\n"
            "Then: llama-quantize --imatrix imatrix.gguf --tensor-type-file types.txt \\\n"
            "        model-f32.gguf model-recipe.gguf Q8_0\n"
            "(every tensor is named, so the last argument only has to be a quantized type).\n\n"
            "example:\n"
            "  layermap attribute model.gguf --data calib.txt -m grad-weight --norm none -o gw.json\n"
            "  layermap recipe gw.json --model model.gguf --bpw 4.8 -o types.txt\n");
}

/* See usage(). */
int cmd_recipe(int argc, char **argv) {
    const char *input = NULL, *model_path = NULL, *out_path = NULL;
    int quiet = 0, have_bpw = 0;
    lm_recipe_opts o;
    lm_recipe_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--per-weight")) {
            o.per_weight = 1;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--bpw") || !strcmp(a, "-o") || !strcmp(a, "--output") ||
                   !strcmp(a, "--output-type") || !strcmp(a, "--embd-type")) {
            if (!v) return cli_errorf("recipe: %s needs a value (see --help)", a) ? 2 : 2;
            i++;
            if (!strcmp(a, "--model")) {
                model_path = v;
            } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
                out_path = v;
            } else if (!strcmp(a, "--bpw")) {
                if (cli_parse_double(a, v, &o.bpw)) return 2;
                if (!(o.bpw > 0) || !isfinite(o.bpw) || o.bpw > 32)
                    return cli_errorf("recipe: --bpw %s is not a number of bits per weight in (0, 32]", v) ? 2 : 2;
                have_bpw = 1;
            } else {
                lm_qtype t;
                lm_err err = {0};
                if (lm_qtype_parse(v, &t, &err)) return cli_errorf("recipe: %s: %s", a, err.msg) ? 2 : 2;
                if (!strcmp(a, "--output-type")) o.output_type = (int)t;
                else o.embd_type = (int)t;
            }
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("recipe: unknown or incomplete option '%s' (see --help)", a);
            return 2;
        } else {
            if (input) return cli_errorf("recipe: one matrix only ('%s' and '%s')", input, a) ? 2 : 2;
            input = a;
        }
    }
    if (!input) {
        usage(stderr);
        return 2;
    }
    if (!model_path) return cli_errorf("recipe: --model MODEL is required (see --help)") ? 2 : 2;
    if (!have_bpw) return cli_errorf("recipe: --bpw B is required (see --help)") ? 2 : 2;
    if (!out_path) return cli_errorf("recipe: -o FILE is required (see --help)") ? 2 : 2;
    if (cli_check_writable("-o", out_path)) return 1;

    lm_matrix *m = NULL;
    lm_model *model = NULL;
    lm_recipe r = {0};
    lm_err err = {0};
    int rc = cli_read_matrix(input, &m);
    if (!rc && (!strcmp(m->norm, "layer") || !strcmp(m->norm, "module")))
        rc = cli_errorf("recipe: %s is normalised per %s, so its cells are not comparable across the matrix: "
                        "use the unnormalised matrix (attribute --norm none)",
                        input, m->norm);
    char mbuf[4096], mname[256];
    if (!rc && cli_resolve_model(&model_path, mbuf, sizeof mbuf, mname, sizeof mname)) rc = 1;
    if (!rc && lm_model_open(&model, model_path, &err)) rc = cli_error(&err);
    if (!rc && lm_recipe_select_model(m, model, &o, &r, &err)) rc = cli_error(&err);
    if (!rc && lm_recipe_write(&r, out_path, &err)) rc = cli_error(&err);
    if (!rc) {
        int count[LM_QT_COUNT] = {0};
        int64_t wts[LM_QT_COUNT] = {0};
        for (int i = 0; i < r.n; i++) {
            count[r.t[i].type]++;
            wts[r.t[i].type] += r.t[i].ne0 * r.t[i].ne1;
        }
        if (!quiet) {
            /* layers x modules table of types, then the fixed tensors */
            printf("%-6s", "layer");
            for (int c = 0; c < LM_N_MODULES; c++) printf(" %-8s", lm_module_names[c]);
            printf("\n");
            for (int l = 0; l < model->cfg.n_layer; l++) {
                printf("%-6d", l);
                for (int c = 0; c < LM_N_MODULES; c++)
                    printf(" %-8s", lm_qtype_get(r.t[l * LM_N_MODULES + c].type)->name);
                printf("\n");
            }
            for (int i = model->cfg.n_layer * LM_N_MODULES; i < r.n; i++)
                printf("%s: %s (%s)\n", r.t[i].name, lm_qtype_get(r.t[i].type)->name,
                       r.t[i].module == LM_RECIPE_OUTPUT ? "output rule" : "embedding rule");
            printf("\n");
            for (int t = 0; t < LM_QT_COUNT; t++)
                if (count[t])
                    printf("%-5s %4d tensors %12lld weights (%.1f%%)\n", lm_qtype_get(t)->name, count[t],
                           (long long)wts[t], 100.0 * (double)wts[t] / (double)r.weights);
            printf("\nllama-quantize --tensor-type arguments (the same recipe):\n");
            char pat[300];
            for (int i = 0; i < r.n; i++)
                printf("--tensor-type '%s=%s'%s", lm_recipe_pattern(r.t[i].name, pat, sizeof pat),
                       lm_qtype_get(r.t[i].type)->name, i + 1 < r.n ? " " : "\n");
            printf("\n");
        }
        printf("%d tensors, %lld weights: %lld bytes = %.4f bits per weight (budget %.4f, at least %.4f); "
               "retained attribution %.6f of %s; wrote %s\n",
               r.n, (long long)r.weights, (long long)r.bytes, r.bpw, o.bpw, r.min_bpw,
               r.importance > 0 ? 1.0 - r.damage / r.importance : 1.0, input, out_path);
    }
    lm_recipe_free(&r);
    lm_model_close(model);
    lm_matrix_free(m);
    return rc ? 1 : 0;
}
