/*
 * atomic.c -- atomic output: temp file, then rename into place (atomic.h).
 */
#include "base/atomic.h"
#include "base/alloc.h"
#include "base/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int lm_atomic_open(lm_atomic *a, const char *path, lm_err *err) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    a->path = lm_strdup(path);
    a->tmp_path = lm_malloc(n + 16);
    if (!a->path || !a->tmp_path) {
        lm_free(a->path);
        lm_free(a->tmp_path);
        memset(a, 0, sizeof *a);
        return lm_nomem(err, n + 16, "output file name");
    }
    snprintf(a->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp_path);
    if (fd < 0) {
        int e = errno;
        lm_free(a->path);
        lm_free(a->tmp_path);
        memset(a, 0, sizeof *a);
        return lm_fail(err, LM_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    /* mkstemp makes 0600; outputs are ordinary files */
    mode_t um = umask(0);
    umask(um);
    fchmod(fd, 0666 & ~um);
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        int e = errno;
        close(fd);
        unlink(a->tmp_path);
        lm_free(a->path);
        lm_free(a->tmp_path);
        memset(a, 0, sizeof *a);
        return lm_fail(err, LM_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return LM_OK;
}

/* Free the names; the struct is finished. */
static void atomic_done(lm_atomic *a) {
    lm_free(a->path);
    lm_free(a->tmp_path);
    memset(a, 0, sizeof *a);
}

int lm_atomic_commit(lm_atomic *a, lm_err *err) {
    int rc = LM_OK;
    /* stdio keeps what a failed write() could not take and tries it again
     * here, so errno names the error (EFBIG past ulimit -f, ENOSPC, EIO) */
    errno = 0;
    int bad = fflush(a->f) != 0 || ferror(a->f);
    int e = errno ? errno : EIO;
    if (!bad && fsync(fileno(a->f)) != 0 && errno != EINVAL) {
        bad = 1;
        e = errno;
    }
    if (fclose(a->f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    a->f = NULL;
    if (bad) {
        rc = lm_fail(err, LM_EIO, "%s: write failed: %s", a->path, strerror(e));
        unlink(a->tmp_path);
    } else if (rename(a->tmp_path, a->path) != 0) {
        rc = lm_fail(err, LM_EIO, "%s: cannot rename into place: %s", a->path, strerror(errno));
        unlink(a->tmp_path);
    }
    atomic_done(a);
    return rc;
}

void lm_atomic_abort(lm_atomic *a) {
    if (a->f) fclose(a->f);
    if (a->tmp_path) unlink(a->tmp_path);
    atomic_done(a);
}
