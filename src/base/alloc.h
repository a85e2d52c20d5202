/*
 * alloc.h -- every allocation of the library goes through lm_malloc,
 * lm_calloc and lm_realloc, so that a test can fail the Nth one (fault
 * injection, as SQLite's test_malloc.c; tests/fault.h sweeps N). lm_free is
 * free (memory from either allocator may be released by the other). Also the
 * checked arithmetic that every size computed from file contents goes through
 * before it is multiplied or added.
 */
#ifndef LM_BASE_ALLOC_H
#define LM_BASE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* malloc/calloc/realloc, except while a fault is armed (a zero size is
 * rounded up to one byte, so NULL always means failure). */
void *lm_malloc(size_t n);
void *lm_calloc(size_t count, size_t size);
void *lm_realloc(void *p, size_t n);
void lm_free(void *p);
/* Copies in lm_malloc'd memory; NULL when the allocation failed. */
char *lm_strdup(const char *s);
char *lm_strndup(const char *s, size_t n); /* the first n bytes of s, NUL-terminated */

/* A growing byte buffer (a file being built in memory): lm_bytes_put
 * appends n bytes of src (NULL: zeros), doubling the capacity from 4 KB;
 * after a failed allocation it sets oom and appends nothing more. Zero-
 * initialized to start; lm_free(b.p) when done. */
typedef struct lm_bytes {
    uint8_t *p;
    size_t n, cap;
    int oom;
} lm_bytes;
void lm_bytes_put(lm_bytes *b, const void *src, size_t n);

/* Test hook: fail the Nth allocation from now (1 = the next) and every one
 * after it, until the next arm; 0 = never. lm_fault_hits() returns how many
 * allocations were failed since the last arm. */
void lm_fault_arm(long nth);
long lm_fault_hits(void);

/* 0 on success; 1 on overflow (then *out is unspecified). */
static inline int lm_mul_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int lm_add_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#endif
