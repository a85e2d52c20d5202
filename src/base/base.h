/*
 * internal.h -- helpers shared by the library's source files (not public).
 *
 * Error reporting: lm_fail() formats one line into an lm_err and returns its
 * code, so a failing path reads `return lm_fail(err, LM_ECORRUPT, "%s: ...", path);`.
 * LM_CORRUPT() does the same for corruption and records the source line, one
 * place to set a breakpoint (as SQLite's SQLITE_CORRUPT_BKPT).
 *
 * Memory: every allocation in the library goes through lm_malloc/lm_calloc/
 * lm_realloc so that tests can fail the Nth allocation (fault injection).
 */
#ifndef LM_INTERNAL_H
#define LM_INTERNAL_H

#include "layermap.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define LM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LM_PRINTF(a, b)
#endif

/* ---- errors ------------------------------------------------------------ */

int lm_fail(lm_err *err, int code, const char *fmt, ...) LM_PRINTF(3, 4);
int lm_corrupt_at(lm_err *err, int line, const char *fmt, ...) LM_PRINTF(3, 4);
#define LM_CORRUPT(err, ...) lm_corrupt_at((err), __LINE__, __VA_ARGS__)
/* lm_fail for allocation failure: "out of memory (N bytes for WHAT)" */
int lm_nomem(lm_err *err, size_t bytes, const char *what);

/* ---- allocation with fault injection ------------------------------------ */

void *lm_malloc(size_t n);
void *lm_calloc(size_t count, size_t size);
void *lm_realloc(void *p, size_t n);
void lm_free(void *p);
char *lm_strdup(const char *s);
char *lm_strndup(const char *s, size_t n);
/* Test hook: fail the Nth allocation from now (1 = the next), 0 = never.
 * lm_fault_hits() returns how many allocations were failed since the last arm. */
void lm_fault_arm(long nth);
long lm_fault_hits(void);

/* ---- checked arithmetic ------------------------------------------------- */

/* 0 on success; 1 on overflow (then *out is unspecified). */
static inline int lm_mul_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int lm_add_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

/* ---- memory-mapped files ------------------------------------------------ */

typedef struct lm_file {
    char *path;          /* owned copy */
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} lm_file;

/* Map a whole file read-only. Errors: LM_EIO "<path>: <strerror>". */
int lm_file_map(lm_file *f, const char *path, lm_err *err);
void lm_file_unmap(lm_file *f);
/* Read a whole (small) file into a NUL-terminated malloc'd buffer. */
int lm_file_read_all(const char *path, char **out, size_t *len, lm_err *err);
/* Drop the pages of [p, p+n) inside a read-only mapping from this process's
 * resident set (madvise MADV_DONTNEED on the page-aligned interior). The data
 * stays valid: a later read faults it in again from the page cache. */
void lm_release_pages(const void *p, size_t n);

/* ---- atomic output ------------------------------------------------------ */

/* Write to "<path>.tmp.XXXXXX" in the same directory, then rename over path.
 * lm_atomic_open gives a FILE*; lm_atomic_commit flushes, checks for write
 * errors, fsyncs and renames; lm_atomic_abort removes the temp file. After
 * either, the struct is finished. */
typedef struct lm_atomic {
    FILE *f;
    char *tmp_path;
    char *path;
} lm_atomic;

int lm_atomic_open(lm_atomic *a, const char *path, lm_err *err);
int lm_atomic_commit(lm_atomic *a, lm_err *err);
void lm_atomic_abort(lm_atomic *a);

/* ---- small things ------------------------------------------------------- */

const char *lm_basename(const char *path); /* pointer into path */
bool lm_ends_with(const char *s, const char *suffix);
int lm_num_threads(int requested); /* requested > 0 ? requested : cores */
double lm_now(void);               /* monotonic seconds */

/* IEEE half and bfloat16 to float. */
float lm_f16_to_f32(uint16_t h);
static inline float lm_bf16_to_f32(uint16_t b) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)b << 16;
    return v.f;
}

/* ---- text --------------------------------------------------------------- */

/* Length (1-4) of the valid UTF-8 sequence at p, 0 if p starts an invalid one
 * (p[0] != 0; never reads past a NUL). */
int lm_utf8_len(const unsigned char *p);

#endif /* LM_INTERNAL_H */
