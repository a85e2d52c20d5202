/*
 * main.c -- the layermap command: dispatch to one command per file (cmd_*.c).
 */
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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
    {"compare", cmd_compare, "rank agreement (Spearman, Kendall, top-k) of saved matrices"},
    {"lora", cmd_lora, "PEFT LoraConfig JSON: which modules get adapters, at which rank"},
    {"recipe", cmd_recipe, "llama.cpp quantization types per tensor within a bits-per-weight budget"},
    {"report", cmd_report, "one self-contained HTML report of saved matrices"},
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

/* Settings that OpenBLAS and OpenMP read only when they load, so they are
 * put in the environment and the program runs again (once):
 *  - OpenBLAS chooses its kernels from the CPU it recognises or from
 *    OPENBLAS_CORETYPE. Debian's 0.3.21 does not recognise recent AVX-512 CPUs
 *    and runs its slowest core (sgemm 5x slower): ask for the core this CPU
 *    supports. A core the user chose is kept (--version says if it is not the best).
 *  - OpenMP threads that spin while waiting fight OpenBLAS's threads and any
 *    other load for the cores (seen here: 10x slower on a busy 2-core machine):
 *    wait passively unless the user chose otherwise. */
static void fix_runtime_env(char **argv) {
    if (getenv("LAYERMAP_NO_REEXEC")) return;
    int again = 0;
    const char *want = lm_blas_wanted_core();
    if (want && !getenv("OPENBLAS_CORETYPE") && strcasecmp(lm_blas_core(), want)) {
        setenv("OPENBLAS_CORETYPE", want, 1);
        again = 1;
    }
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        again = 1;
    }
    if (!again) return;
    setenv("LAYERMAP_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on as we are; --version tells the user the core */
}

static int run(int argc, char **argv);

int main(int argc, char **argv) {
    /* Past a file-size limit (ulimit -f) the kernel sends SIGXFSZ, whose default
     * kills us mid-write and leaves the temp file behind; ignored, write()
     * fails with EFBIG and the writer reports it and removes its temp file. */
    signal(SIGXFSZ, SIG_IGN);
    fix_runtime_env(argv);
    cli_mpi_init(&argc, &argv); /* after the re-exec: the process MPI knows is this image */
    return cli_mpi_exit(run(argc, argv));
}

/* Under mpirun only attribute, ppl and diff share out their work; every
 * other command would run once per rank and write the same files. */
static int one_process_only(const char *cmd) {
    if (cli_mpi_size() < 2 || !strcmp(cmd, "attribute") || !strcmp(cmd, "ppl") || !strcmp(cmd, "diff")) return 0;
    lm_err err = {.code = LM_EARG};
    snprintf(err.msg, sizeof err.msg, "%s runs as one process (under mpirun only attribute, ppl and diff share their work; "
             "use -np 1)", cmd);
    cli_mpi_agree(1, &err); /* every rank fails here alike: one message, no MPI_Abort */
    return cli_error(&err);
}

static int run(int argc, char **argv) {
    /* Which OpenBLAS build the loader gave us is a property of the process:
     * said once, here, for every command (src/compute/blas_info.c says why it
     * matters), so that a slow install shows before the slow run. */
    const char *blas_warning = lm_blas_warning();
    if (blas_warning && !getenv("LAYERMAP_NO_BLAS_WARNING")) fprintf(stderr, "layermap: warning: %s\n", blas_warning);
    if (argc >= 2 && cli_prepare_args(&argc, &argv)) return 2;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("layermap %s\nmatrix kernel: %s\nblas library: %s (%s build)\n", LM_VERSION, lm_engine_kernel_name(),
               lm_blas_library(), lm_blas_variant());
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            return one_process_only(argv[1]) ? 2 : commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "layermap: unknown command '%s' (try layermap --help)\n", argv[1]);
    return 2;
}
