/*
 * test.h -- the tiny test harness every tests/test_*.c uses.
 *
 * CHECK(cond, fmt, ...) records a pass or a failure (printing the failure
 * with file:line). A test file ends main with `return TEST_END();`, which
 * prints "RESULT <file> <passed> <failed>" for tests/run.sh and returns
 * non-zero when anything failed: a failing check always fails the run.
 */
#ifndef LM_TEST_H
#define LM_TEST_H

#include "layermap.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int t_pass, t_fail;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (cond) {                                                         \
            t_pass++;                                                       \
        } else {                                                            \
            t_fail++;                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
        }                                                                   \
    } while (0)

/* |a - b| <= atol + rtol * |b|, NaN never close */
#define CHECK_CLOSE(a, b, atol, rtol, what)                                              \
    do {                                                                                 \
        double ta_ = (double)(a), tb_ = (double)(b);                                     \
        CHECK(fabs(ta_ - tb_) <= (atol) + (rtol)*fabs(tb_), "%s: got %.9g want %.9g", \
              (what), ta_, tb_);                                                         \
    } while (0)

/* A call that must succeed: prints the library's message when it does not. */
#define CHECK_OK(call, err)                                                        \
    do {                                                                           \
        int rc_ = (call);                                                          \
        CHECK(rc_ == LM_OK, "%s -> %d (%s)", #call, rc_, rc_ ? (err)->msg : ""); \
    } while (0)

#define TEST_END() test_end_(__FILE__)
static inline int test_end_(const char *file) {
    const char *b = strrchr(file, '/');
    printf("RESULT %s %d %d\n", b ? b + 1 : file, t_pass, t_fail);
    return t_fail ? 1 : 0;
}

/* Directory of the shared test models ($LM_MODELS, else ../shared/models). */
static inline const char *models_dir(void) {
    const char *d = getenv("LM_MODELS");
    return d && *d ? d : "../shared/models";
}

/* buf = models_dir()/rel */
static inline const char *model_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", models_dir(), rel);
    return buf;
}

/* buf = the real models' cache ($LAYERMAP_CACHE, else ~/.cache/layermap:
 * scripts/fetch_models.sh puts them there)/file */
static inline const char *cache_path(char *buf, size_t n, const char *file) {
    const char *c = getenv("LAYERMAP_CACHE");
    if (c && *c)
        snprintf(buf, n, "%s/%s", c, file);
    else
        snprintf(buf, n, "%s/.cache/layermap/%s", getenv("HOME") ? getenv("HOME") : "/root", file);
    return buf;
}

/* buf = tests/data/rel: the test data in the repository (tests run from its
 * root, as make test and tests/run.sh do). */
static inline const char *data_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "tests/data/%s", rel);
    return buf;
}

/* Run a shell command (printf-style) with its stdout and stderr, those of
 * background jobs too, into out (a pipe: not a terminal; NUL-terminated, at
 * most n - 1 bytes); its exit status, -1 when it did not exit. test_sh: the
 * command given whole. */
static inline int test_run(char *out, size_t n, const char *fmt, ...) {
    char cmd[8192], full[8300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "{ %s\n} 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
static inline int test_sh(char *out, size_t n, const char *cmd) { return test_run(out, n, "%s", cmd); }

/* A scratch directory for files a test writes ($TMPDIR-based, made once). */
static inline const char *scratch_dir(void) {
    static char dir[512];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/layermap-test-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return dir;
}

/* lm_attribute_many of methods[0..n) over ds on a new engine of m with eo,
 * batch 2 and ig_steps 4 (the tests' packed pair of sequences); the engine
 * is freed. LM_OK or the error (in *err). */
static inline int test_attr_many(const lm_model *m, const lm_dataset *ds, const lm_engine_opts *eo,
                                 const lm_method *methods, int n, lm_attr_result *res, lm_err *err) {
    lm_engine *e = NULL;
    int rc = lm_engine_new(&e, m, eo, err);
    if (rc) return rc;
    lm_attr_opts ao;
    lm_attr_opts_default(&ao);
    ao.batch = 2;
    ao.ig_steps = 4;
    rc = lm_attribute_many(e, ds, methods, n, &ao, res, err);
    lm_engine_free(e);
    return rc;
}

#endif
