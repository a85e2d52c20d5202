/*
 * cmd_lora.c -- `layermap lora MATRIX --model MODEL --budget-params N [--rank R]
 * -o lora.json`: put LoRA adapters where the matrix says they matter, within a
 * parameter budget, as a PEFT LoraConfig JSON.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --help text. */
static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap lora MATRIX --model MODEL --budget-params N -o lora.json [options]\n\n"
            "Choose which (layer, module) get a LoRA adapter, and at which rank, so that the\n"
            "adapters' parameters, sum of r * (in + out), stay within N, putting them where\n"
            "the matrix (.csv or .json from attribute or diff) scores highest. Writes a PEFT\n"
            "LoraConfig JSON: peft.LoraConfig(**json.load(open(\"lora.json\"))).\n\n"
            "How: each module's score v is divided by its parameter count in * out (read from\n"
            "MODEL; --no-per-param uses the raw score). Ranks come from the ladder R, 2R, 4R,\n"
            "... up to --max-rank; a module at rank r is worth v * log2(1 + r/R): adding it at\n"
            "R is worth v, doubling its rank 0.58 v, doubling again 0.74 v for twice the\n"
            "cost, ... Greedy: take the step (add a module at R, or double a rank) with the\n"
            "most worth per LoRA parameter that still fits the budget, until none fits.\n"
            "Cells that are NaN or <= 0 get no adapter.\n\n"
            "  --model MODEL         the model the matrix is for (HF directory or .gguf):\n"
            "                        the layer count and each module's in/out dims\n"
            "  --budget-params N     most LoRA parameters in total (an integer, or 2e6, 150k, 3M)\n"
            "  --rank R              first rung and PEFT's default r (default 8)\n"
            "  --max-rank M          top of the ladder (default 64; never above min(in, out))\n"
            "  --per-param           score / (in * out) (the default)\n"
            "  --no-per-param        the raw score\n"
            "  --alpha-ratio A       lora_alpha = A * r for every module (default 2)\n"
            "  -o FILE               the LoraConfig JSON (required)\n"
            "  -q, --quiet           no table of the chosen modules on stdout\n"
            "  -h, --help            this text\n\n"
            "The JSON: target_modules (q_proj k_proj v_proj o_proj up_proj down_proj gate_proj,\n"
            "those chosen somewhere), layers_to_transform (the layers with an adapter),\n"
            "exclude_modules (\"layers.L.self_attn.q_proj\" for each module of that product\n"
            "that gets none), r and lora_alpha, and rank_pattern / alpha_pattern keyed\n"
            "\"layers.L.mlp.down_proj\" for the modules whose rank is not R (PEFT matches a key\n"
            "as the regex (.*\\.)?(KEY)$ against the module name).\n\n"
            "example:\n"
            "  layermap lora grad.json --model SmolLM2-135M --budget-params 2M --rank 8 -o lora.json\n");
}

/* "150000", "150k", "2M", "2e6", "1.5G" -> a whole number of parameters in
 * [0, 2^62]. 0, or -1 after printing. */
static int parse_budget(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    double mul = 1;
    if (end != s && *end && !end[1]) {
        switch (*end) {
        case 'k': case 'K': mul = 1e3; end++; break;
        case 'm': case 'M': mul = 1e6; end++; break;
        case 'g': case 'G': mul = 1e9; end++; break;
        default: break;
        }
    }
    x *= mul;
    if (end == s || *end || errno || !isfinite(x) || x < 0 || x > 4.6e18 || x != floor(x)) {
        cli_errorf("lora: --budget-params '%s' is not a whole number of parameters >= 0", s);
        return -1;
    }
    *out = (int64_t)x;
    return 0;
}

/* See usage(). */
int cmd_lora(int argc, char **argv) {
    const char *input = NULL, *model_path = NULL, *out_path = NULL;
    int have_budget = 0, quiet = 0;
    lm_lora_opts o;
    lm_lora_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--per-param")) {
            o.per_param = 1;
        } else if (!strcmp(a, "--no-per-param")) {
            o.per_param = 0;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--budget-params") || !strcmp(a, "--rank") ||
                   !strcmp(a, "--max-rank") || !strcmp(a, "--alpha-ratio") || !strcmp(a, "-o") ||
                   !strcmp(a, "--output")) {
            if (!v) return cli_errorf("lora: %s needs a value (see --help)", a) ? 2 : 2;
            i++;
            long r;
            if (!strcmp(a, "--model")) {
                model_path = v;
            } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
                out_path = v;
            } else if (!strcmp(a, "--budget-params")) {
                if (parse_budget(v, &o.budget_params)) return 2;
                have_budget = 1;
            } else if (!strcmp(a, "--alpha-ratio")) {
                if (cli_parse_double(a, v, &o.alpha_ratio)) return 2;
                if (!(o.alpha_ratio > 0) || !isfinite(o.alpha_ratio))
                    return cli_errorf("lora: --alpha-ratio must be > 0") ? 2 : 2;
            } else {
                if (cli_parse_int(a, v, 1, 65536, &r)) return 2;
                if (!strcmp(a, "--rank")) o.rank = (int)r;
                else o.max_rank = (int)r;
            }
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("lora: unknown or incomplete option '%s' (see --help)", a);
            return 2;
        } else {
            if (input) return cli_errorf("lora: one matrix only ('%s' and '%s')", input, a) ? 2 : 2;
            input = a;
        }
    }
    if (!input) {
        usage(stderr);
        return 2;
    }
    if (!model_path) return cli_errorf("lora: --model MODEL is required (see --help)") ? 2 : 2;
    if (!have_budget) return cli_errorf("lora: --budget-params N is required (see --help)") ? 2 : 2;
    if (!out_path) return cli_errorf("lora: -o FILE.json is required (see --help)") ? 2 : 2;
    size_t ol = strlen(out_path);
    if (ol < 5 || strcasecmp(out_path + ol - 5, ".json"))
        return cli_errorf("lora: %s: the LoraConfig is written as .json", out_path) ? 2 : 2;
    if (o.max_rank < o.rank) {
        /* a --rank above the default ladder top lifts the top with it, unless --max-rank says otherwise */
        int explicit_max = 0;
        for (int i = 1; i < argc; i++) explicit_max |= !strcmp(argv[i], "--max-rank");
        if (explicit_max) return cli_errorf("lora: --max-rank %d is below --rank %d", o.max_rank, o.rank) ? 2 : 2;
        o.max_rank = o.rank;
    }

    lm_matrix *m = NULL;
    lm_model *model = NULL;
    lm_lora_plan plan = {0};
    lm_err err = {0};
    int rc = cli_read_matrix(input, &m);
    if (!rc && lm_model_open(&model, model_path, &err)) rc = cli_error(&err);
    if (!rc && model->cfg.n_layer != m->n_layer)
        rc = cli_errorf("lora: %s has %d layers but %s has %d", input, m->n_layer, model_path, model->cfg.n_layer);
    if (!rc && lm_lora_select_model(m, model, &o, &plan, &err)) rc = cli_error(&err);
    if (!rc && lm_lora_write_json(&plan, &o, out_path, &err)) rc = cli_error(&err);
    if (!rc && !quiet) {
        int n = 0;
        printf("%-6s %-9s %-22s %5s %10s\n", "layer", "module", "name", "r", "params");
        for (int l = 0; l < plan.n_layer; l++)
            for (int c = 0; c < LM_N_MODULES; c++) {
                size_t i = (size_t)l * LM_N_MODULES + c;
                if (!plan.rank[i]) continue;
                char name[64];
                snprintf(name, sizeof name, "layers.%d.%s", l, lm_lora_hf_name(c));
                printf("%-6d %-9s %-22s %5d %10lld\n", l, lm_module_names[c], name, plan.rank[i],
                       (long long)plan.rank[i] * (long long)(plan.in[i] + plan.out[i]));
                n++;
            }
        printf("%d modules, %lld of %lld LoRA parameters (%.1f%%), %s scores; wrote %s\n", n,
               (long long)plan.params, (long long)o.budget_params,
               o.budget_params ? 100.0 * (double)plan.params / (double)o.budget_params : 0.0,
               o.per_param ? "per-parameter" : "raw", out_path);
    }
    lm_lora_plan_free(&plan);
    lm_model_close(model);
    lm_matrix_free(m);
    return rc ? 1 : 0;
}
