/*
 * fuzz_matrix.c -- the matrix reader `plot` uses for its inputs: the input is
 * written as m.csv and as m.json and read with lm_matrix_read_csv and
 * lm_matrix_read_json; a matrix that reads is normalised every way, printed
 * as the terminal heatmap (to /dev/null) and written back as CSV and JSON.
 * See fuzz.h.
 */
#include "fuzz.h"

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_dir();
    devnull = fopen("/dev/null", "w");
    if (!devnull) FZ_SETUP_FAIL("/dev/null: %s", strerror(errno));
    return fz_setup_error[0] ? -1 : 0;
}

static void use(lm_matrix *m) {
    char p[4096];
    lm_err err;
    lm_matrix_print(m, devnull, 1);
    fz_check_err(lm_matrix_write_csv(m, fz_path(p, sizeof p, "out.csv"), &err), &err);
    fz_check_err(lm_matrix_write_json(m, fz_path(p, sizeof p, "out.json"), &err), &err);
    for (int k = LM_NORM_GLOBAL; k >= LM_NORM_NONE; k--) {
        fz_check_err(lm_matrix_normalize(m, (lm_norm)k, &err), &err);
        lm_matrix_print(m, devnull, 0);
    }
    lm_matrix_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_require_setup();
    char path[4096];
    lm_matrix *m = NULL;
    lm_err err = {0};
    int rc = lm_matrix_read_csv(&m, fz_input(path, sizeof path, "m.csv", data, size), &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (m != NULL)) abort();
    if (m) use(m);
    m = NULL;
    rc = lm_matrix_read_json(&m, fz_input(path, sizeof path, "m.json", data, size), &err);
    fz_check_err(rc, &err);
    if ((rc == LM_OK) != (m != NULL)) abort();
    if (m) use(m);
    return 0;
}
