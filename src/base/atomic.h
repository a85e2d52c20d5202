/*
 * atomic.h -- output files written atomically: a failure leaves no
 * half-written file and no temp file, and the old file (if any) untouched.
 *
 * lm_atomic_open writes to "<path>.tmp.XXXXXX" in the same directory and
 * gives a FILE*; lm_atomic_commit flushes, checks for write errors, fsyncs and
 * renames over path; lm_atomic_abort removes the temp file. After either, the
 * struct is finished (one of the two is always called after a successful
 * open).
 */
#ifndef LM_BASE_ATOMIC_H
#define LM_BASE_ATOMIC_H

#include "layermap.h"

#include <stdio.h>

typedef struct lm_atomic {
    FILE *f;
    char *tmp_path;
    char *path;
} lm_atomic;

/* Errors: LM_EIO "<path>: cannot write: <strerror>", LM_ENOMEM. */
int lm_atomic_open(lm_atomic *a, const char *path, lm_err *err);
/* Errors: LM_EIO "<path>: write failed: ..." / "cannot rename into place". */
int lm_atomic_commit(lm_atomic *a, lm_err *err);
void lm_atomic_abort(lm_atomic *a);

#endif
