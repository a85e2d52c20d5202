/*
 * alloc.c -- the library's allocator: malloc underneath, with a countdown
 * that makes the Nth allocation from an arm fail (alloc.h).
 */
#include "base/alloc.h"

#include <stdlib.h>
#include <string.h>

static _Atomic long fault_countdown = 0; /* 0 = off */
static _Atomic long fault_hits = 0;

void lm_fault_arm(long nth) {
    fault_countdown = nth;
    fault_hits = 0;
}

long lm_fault_hits(void) { return fault_hits; }

/* True when this allocation must fail. Once armed, the Nth and every later
 * allocation fail (as SQLite's "persistent" fault mode), so a caller that
 * ignores one failure cannot succeed by luck. */
static int fault_now(void) {
    if (fault_countdown <= 0) return 0;
    if (fault_countdown == 1) {
        fault_hits++;
        return 1;
    }
    fault_countdown--;
    return 0;
}

void *lm_malloc(size_t n) {
    if (fault_now()) return NULL;
    return malloc(n ? n : 1);
}

void *lm_calloc(size_t count, size_t size) {
    if (fault_now()) return NULL;
    if (count == 0 || size == 0) count = size = 1;
    return calloc(count, size);
}

void *lm_realloc(void *p, size_t n) {
    if (fault_now()) return NULL;
    return realloc(p, n ? n : 1);
}

void lm_free(void *p) { free(p); }

char *lm_strndup(const char *s, size_t n) {
    char *d = lm_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *lm_strdup(const char *s) { return lm_strndup(s, strlen(s)); }

void lm_bytes_put(lm_bytes *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = lm_realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (src)
        memcpy(b->p + b->n, src, n);
    else if (n)
        memset(b->p + b->n, 0, n);
    b->n += n;
}
