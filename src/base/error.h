/*
 * error.h -- how the library reports a failure: one line in an lm_err and an
 * LM_* code. lm_fail() formats the line and returns the code, so a failing
 * path reads `return lm_fail(err, LM_EIO, "%s: ...", path);`. LM_CORRUPT()
 * does the same for corruption and records the source line, one place to set
 * a breakpoint (as SQLite's SQLITE_CORRUPT_BKPT). lm_strerror (layermap.h)
 * names a code.
 */
#ifndef LM_BASE_ERROR_H
#define LM_BASE_ERROR_H

#include "layermap.h"

#include <stddef.h>

#if defined(__GNUC__)
#define LM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LM_PRINTF(a, b)
#endif

/* Record code and the message in err (NULL: nothing recorded); returns code.
 * A newline in the message is folded to a space: messages are one line. */
int lm_fail(lm_err *err, int code, const char *fmt, ...) LM_PRINTF(3, 4);
/* lm_fail(err, LM_ECORRUPT, ...); debug builds (-DLM_DEBUG) append
 * " [line N]", the reporting source line. Call it through LM_CORRUPT. */
int lm_corrupt_at(lm_err *err, int line, const char *fmt, ...) LM_PRINTF(3, 4);
#define LM_CORRUPT(err, ...) lm_corrupt_at((err), __LINE__, __VA_ARGS__)
/* lm_fail for allocation failure: "out of memory (N bytes for WHAT)" */
int lm_nomem(lm_err *err, size_t bytes, const char *what);

#endif
