/*
 * fault.h -- the one fault-injection harness of the tests (as SQLite's
 * test_malloc.c): fail the 1st, 2nd, 3rd ... allocation of a call until a run
 * completes without a fault, and check that every failing run failed cleanly.
 *
 *     static int open_run(void *ctx, lm_err *err, const char **why) {
 *         lm_gguf *g = NULL;
 *         int rc = lm_gguf_open(&g, ctx, err);
 *         if (rc != LM_OK && g) *why = "output not NULL after a failure";
 *         lm_gguf_close(g);
 *         return rc;
 *     }
 *     CHECK(fault_sweep("gguf open", open_run, path, 10000) > 2, ...);
 *
 * Leaks of a failing run show under make asan (LeakSanitizer).
 */
#ifndef LM_TEST_FAULT_H
#define LM_TEST_FAULT_H

#include "test.h"
#include "base/alloc.h"

/* One run of the call under test while allocations fail from the armed one
 * on: make the call with err, check what it left, free all it made, and
 * return the call's code. Set *why (left NULL by the harness) to a short text
 * when what the call left is wrong: after a failure, an output that is not
 * NULL or a file left behind; after a success, a result that is not the one
 * expected. */
typedef int (*fault_fn)(void *ctx, lm_err *err, const char **why);

/* Run fn with allocation N = 1, 2, ... failing (and every one after it: the
 * fault is persistent) until a run has no fault, at most max_n runs. Checks:
 *   - every run in which an allocation failed returned LM_ENOMEM with *why
 *     NULL (a success although an allocation failed is a failure nobody saw);
 *   - the run without a fault returned LM_OK with *why NULL;
 *   - that run came within max_n runs, and at least one run before it hit a
 *     fault (else the sweep tested nothing).
 * Prints "fault NAME: N runs" and returns N, the number of runs including the
 * clean one (allocations 1 .. N-1 were failed in turn); a caller that knows
 * the call makes more allocations checks N against its own bound. */
static inline long fault_sweep(const char *name, fault_fn fn, void *ctx, long max_n) {
    long runs = 0, bad = 0, faulted = 0;
    int clean = 0;
    for (long nth = 1; nth <= max_n && !clean; nth++) {
        lm_err err = {0};
        const char *why = NULL;
        lm_fault_arm(nth);
        int rc = fn(ctx, &err, &why);
        long hits = lm_fault_hits();
        lm_fault_arm(0);
        runs++;
        if (hits == 0) {
            clean = 1;
            CHECK(rc == LM_OK && !why, "fault %s: the run without a fault: code %d (%s)%s%s", name, rc, err.msg,
                  why ? ": " : "", why ? why : "");
            break;
        }
        faulted++;
        if (rc != LM_ENOMEM || why) {
            if (bad++ < 5)
                fprintf(stderr, "  fault %s: allocation %ld failed: code %d (%s)%s%s\n", name, nth, rc, err.msg,
                        why ? ": " : "", why ? why : "");
        }
    }
    CHECK(bad == 0, "fault %s: %ld of %ld runs with a failed allocation did not fail cleanly with LM_ENOMEM", name,
          bad, faulted);
    CHECK(clean, "fault %s: no run without a fault in %ld runs", name, max_n);
    CHECK(faulted > 0, "fault %s: the call made no allocation, nothing was tested", name);
    printf("fault %s: %ld runs\n", name, runs);
    return runs;
}

#endif
