/*
 * main.c -- the layermap command: dispatch to one command per file (cmd_*.c).
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"inspect", cmd_inspect, "architecture, tensors and parameter counts of a model"},
    {"diff", cmd_diff, "compare two checkpoints (base vs fine-tuned) per layer and module"},
    {"attribute", cmd_attribute, "attribution matrix from calibration data (gradients, ablation, ...)"},
    {"plot", cmd_plot, "re-plot saved matrices (csv/json) as heatmaps, alone or as a grid"},
    {"ppl", cmd_ppl, "perplexity of a model on a text"},
    {"tokenize", cmd_tokenize, "print token ids and pieces of a text"},
    {"generate", cmd_generate, "greedy continuation of a prompt"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f,
            "layermap %s -- where in a transformer LLM does something happen?\n\n"
            "usage: layermap COMMAND [options]   (layermap COMMAND --help for details)\n\n"
            "commands:\n",
            LM_VERSION);
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nmodules (matrix columns): ");
    for (int i = 0; i < LM_N_MODULES; i++) fprintf(f, "%s%s", lm_module_names[i], i + 1 < LM_N_MODULES ? " " : "\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("layermap %s\nmatrix kernel: %s\n", LM_VERSION, lm_engine_kernel_name());
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "layermap: unknown command '%s' (try layermap --help)\n", argv[1]);
    return 2;
}
