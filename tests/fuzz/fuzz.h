/*
 * fuzz.h -- what every harness in tests/fuzz/ shares.
 *
 * A harness is one file fuzz_NAME.c defining
 *     int LLVMFuzzerInitialize(int *argc, char ***argv);        setup, once
 *     int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
 * It is built two ways (see the Makefile):
 *   - with clang -fsanitize=fuzzer,address,undefined into build/fuzz/NAME
 *     (make fuzz; tests/fuzz/fuzz.sh runs the campaigns);
 *   - with the project's compiler, the two functions renamed to
 *     NAME_init / NAME_one, linked into test_fuzz_replay (tests/fuzz/replay.c),
 *     which replays tests/fuzz/corpus/NAME/ in make test / make asan.
 * The readers take file names, as the CLI gives them: a harness writes its
 * input into a per-process directory in /dev/shm (memory, not the disk) and
 * opens it through the same call the CLI makes.
 */
#ifndef LM_FUZZ_H
#define LM_FUZZ_H

#include "layermap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Setup failures (a fixture file missing): the message, for replay.c and for
 * the harness itself, which aborts on its first input so a campaign never
 * runs on a half-built fixture. */
static char fz_setup_error[1024];

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void FZ_SETUP_FAIL(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fz_setup_error, sizeof fz_setup_error, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fuzz setup: %s\n", fz_setup_error);
}

static inline void fz_require_setup(void) {
    if (fz_setup_error[0]) {
        fprintf(stderr, "fuzz setup failed: %s\n", fz_setup_error);
        abort();
    }
}

/* Remove dir and the plain files and symlinks in it (one level of sub-directories). */
static void fz_rmtree(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && depth > 0)
                fz_rmtree(p, depth - 1);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static char fz_dir_[256];
static pid_t fz_dir_pid_;

static void fz_cleanup(void) {
    if (fz_dir_[0] && fz_dir_pid_ == getpid()) fz_rmtree(fz_dir_, 2);
}

/* The per-process scratch directory of this harness:
 * /dev/shm/layermap-fuzz-PID-HARNESS (or under $TMPDIR when /dev/shm is
 * missing), removed at exit. HARNESS is the file being compiled
 * (__BASE_FILE__), so the harnesses linked together in test_fuzz_replay
 * each have their own. */
static inline const char *fz_dir(void) {
    if (!fz_dir_[0]) {
        const char *base = "/dev/shm";
        struct stat st;
        if (stat(base, &st) != 0 || !S_ISDIR(st.st_mode)) base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        const char *me = strrchr(__BASE_FILE__, '/');
        me = me ? me + 1 : __BASE_FILE__;
        snprintf(fz_dir_, sizeof fz_dir_, "%s/layermap-fuzz-%ld-%.*s", base, (long)getpid(),
                 (int)(strcspn(me, ".")), me);
        fz_rmtree(fz_dir_, 2); /* a leftover of an earlier process with our pid */
        if (mkdir(fz_dir_, 0700) != 0) {
            perror(fz_dir_);
            abort();
        }
        fz_dir_pid_ = getpid();
        atexit(fz_cleanup);
    }
    return fz_dir_;
}

/* buf = fz_dir()/rel (rel may name a sub-directory made with fz_subdir). */
static inline const char *fz_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", fz_dir(), rel);
    return buf;
}

/* Make fz_dir()/rel; returns its path in buf. */
static inline const char *fz_subdir(char *buf, size_t n, const char *rel) {
    fz_path(buf, n, rel);
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
        perror(buf);
        abort();
    }
    return buf;
}

/* Write data to path (replacing it). Aborts on failure: the harness is broken, not the reader. */
static inline void fz_write_file(const char *path, const void *data, size_t size) {
    unlink(path); /* a symlink left by setup is replaced, never written through */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const uint8_t *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w;
        size -= (size_t)w;
    }
    close(fd);
}

/* Write data to fz_dir()/rel and return the path in buf. */
static inline const char *fz_input(char *buf, size_t n, const char *rel, const void *data, size_t size) {
    fz_path(buf, n, rel);
    fz_write_file(buf, data, size);
    return buf;
}

/* Link fz_dir()/rel to an absolute copy of target (a fixture the input sits beside). */
static inline int fz_link(const char *rel, const char *target) {
    char p[4096], abs[4096];
    if (!realpath(target, abs)) {
        FZ_SETUP_FAIL("%s: %s", target, strerror(errno));
        return -1;
    }
    fz_path(p, sizeof p, rel);
    unlink(p);
    if (symlink(abs, p) != 0) {
        FZ_SETUP_FAIL("symlink %s: %s", p, strerror(errno));
        return -1;
    }
    return 0;
}

/* Fixtures: tests/data/REL (from the repository root, where make and
 * fuzz.sh run) and the shared models ($LM_MODELS, else ../shared/models). */
static inline const char *fz_data(char *buf, size_t n, const char *rel) {
    const char *root = getenv("LM_ROOT");
    snprintf(buf, n, "%s/tests/data/%s", root && *root ? root : ".", rel);
    return buf;
}

static inline const char *fz_model(char *buf, size_t n, const char *rel) {
    const char *d = getenv("LM_MODELS");
    snprintf(buf, n, "%s/%s", d && *d ? d : "../shared/models", rel);
    return buf;
}

/* An error must be one line that says something. */
static inline void fz_check_err(int rc, const lm_err *err) {
    if (rc > LM_OK && (!err->msg[0] || strchr(err->msg, '\n'))) {
        fprintf(stderr, "error message is empty or not one line: code %d '%s'\n", rc, err->msg);
        abort();
    }
}

#endif
