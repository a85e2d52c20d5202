/*
 * test_atomic.c -- atomic output under write failures, in the library itself:
 * with a file-size limit (setrlimit RLIMIT_FSIZE, SIGXFSZ ignored as the CLI
 * does) every writer -- lm_atomic_* directly, the CSV and JSON matrix writers,
 * PNG/SVG/PDF figures and (through the CLI, in tests/cli/test_write_fail.sh)
 * the checkpoint -- must return LM_EIO with one line naming the file and
 * "File too large", leave the previous file byte for byte and no temp file.
 */
#include "test.h"
#include "base/base.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>

static const char *const previous = "the previous content\n";

static void put(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(s, f);
    fclose(f);
}

static int same_as_previous(const char *path) {
    char buf[256];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == strlen(previous) && !memcmp(buf, previous, n);
}

static int temp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* Limit regular files this process writes to 'bytes' (restored with -1). */
static void limit_fsize(long bytes) {
    static struct rlimit saved;
    static int have;
    if (!have) {
        getrlimit(RLIMIT_FSIZE, &saved);
        have = 1;
    }
    struct rlimit r = saved;
    if (bytes >= 0) r.rlim_cur = (rlim_t)bytes;
    if (setrlimit(RLIMIT_FSIZE, &r) != 0) {
        perror("setrlimit");
        exit(2);
    }
}

/* The checks after one failed write of path. */
static void check_failed(const char *what, int rc, const lm_err *err, const char *path, const char *dir) {
    CHECK(rc == LM_EIO, "%s: code %d (%s)", what, rc, err->msg);
    CHECK(strstr(err->msg, path) && strstr(err->msg, "File too large") && !strchr(err->msg, '\n'),
          "%s: message '%s' names the file and the reason", what, err->msg);
    CHECK(same_as_previous(path), "%s: previous file unchanged", what);
    CHECK(temp_files(dir) == 0, "%s: no temp file left", what);
}

int main(void) {
    signal(SIGXFSZ, SIG_IGN);
    const char *dir = scratch_dir();
    char path[1024];
    lm_err err = {0};

    /* lm_atomic directly: 64 KiB through stdio, limit 1000 bytes */
    snprintf(path, sizeof path, "%s/raw.bin", dir);
    put(path, previous);
    lm_atomic a;
    CHECK_OK(lm_atomic_open(&a, path, &err), &err);
    limit_fsize(1000);
    for (int i = 0; i < 1024; i++) fputs("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", a.f);
    int rc = lm_atomic_commit(&a, &err);
    limit_fsize(-1);
    check_failed("lm_atomic", rc, &err, path, dir);

    /* the same below the limit succeeds (the limit is what failed) */
    CHECK_OK(lm_atomic_open(&a, path, &err), &err);
    limit_fsize(1000);
    fputs("small\n", a.f);
    rc = lm_atomic_commit(&a, &err);
    limit_fsize(-1);
    CHECK(rc == LM_OK, "small write under the limit: %d %s", rc, err.msg);

    /* matrix and figure writers, each at limits 0 (the first write fails)
     * and 300 bytes (a partial file) */
    lm_matrix *m = lm_matrix_new(12);
    CHECK(m != NULL, "matrix");
    if (!m) return TEST_END();
    for (int l = 0; l < 12; l++)
        for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, l, c, 0.001 * (l * 7 + c) + 1e-9 * l);
    snprintf(m->model, sizeof m->model, "test");
    snprintf(m->method, sizeof m->method, "diff.rel");
    static const char *const exts[] = {"csv", "json", "png", "svg", "pdf"};
    static const long limits[] = {0, 300};
    for (int k = 0; k < 5; k++)
        for (int j = 0; j < 2; j++) {
            snprintf(path, sizeof path, "%s/out.%s", dir, exts[k]);
            put(path, previous);
            const lm_matrix *ms[1] = {m};
            limit_fsize(limits[j]);
            if (k == 0)
                rc = lm_matrix_write_csv(m, path, &err);
            else if (k == 1)
                rc = lm_matrix_write_json(m, path, &err);
            else
                rc = lm_plot_write(ms, 1, NULL, path, &err);
            limit_fsize(-1);
            char what[64];
            snprintf(what, sizeof what, ".%s at %ld bytes", exts[k], limits[j]);
            check_failed(what, rc, &err, path, dir);
        }
    lm_matrix_free(m);
    return TEST_END();
}
