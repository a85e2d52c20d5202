/*
 * error.c -- failure reporting: the text of each LM_* code and the one-line
 * messages of lm_fail, LM_CORRUPT and lm_nomem (error.h).
 */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *lm_strerror(int code) {
    switch (code) {
    case LM_OK: return "ok";
    case LM_EIO: return "I/O error";
    case LM_ECORRUPT: return "corrupt or truncated file";
    case LM_EUNSUPPORTED: return "unsupported";
    case LM_ENOMEM: return "out of memory";
    case LM_EARG: return "bad argument";
    case LM_ESHAPE: return "shape mismatch";
    case LM_EENCODING: return "bad text encoding";
    case LM_EINTERNAL: return "internal error";
    case LM_ECANCELED: return "canceled";
    default: return "unknown error";
    }
}

/* Format the message into err (when there is one) as a single line. */
static int vfail(lm_err *err, int code, const char *fmt, va_list ap) {
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        /* one line: fold any newline a caller let through */
        for (char *p = err->msg; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return code;
}

/* Record a failure in err and return its code. */
int lm_fail(lm_err *err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, fmt, ap);
    va_end(ap);
    return code;
}

/* Corruption goes through here: one place to set a breakpoint. Debug builds
 * (-DLM_DEBUG) append the reporting source line to the message. */
int lm_corrupt_at(lm_err *err, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, LM_ECORRUPT, fmt, ap);
    va_end(ap);
#ifdef LM_DEBUG
    if (err) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " [line %d]", line);
    }
#else
    (void)line;
#endif
    return LM_ECORRUPT;
}

/* The message of an allocation that failed: its size and what it was for. */
int lm_nomem(lm_err *err, size_t bytes, const char *what) {
    return lm_fail(err, LM_ENOMEM, "out of memory (%zu bytes for %s)", bytes, what);
}
