/*
 * membw.c -- memory bandwidth of this machine, the yardstick of bench_diff.sh.
 *
 *   membw [MiB]      (default 1024)
 *
 * Prints two lines, best of 5 runs each over a buffer of MiB:
 *   memcpy_GBps X    bytes copied per second by memcpy, one thread
 *   read_GBps X      bytes read per second, summing 64-bit words on every core
 * The buffers are touched first, so page faults are not timed.
 */
#define _GNU_SOURCE
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Monotonic seconds. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t n = mib << 20;
    uint8_t *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        fprintf(stderr, "membw: cannot allocate 2 x %zu MiB\n", mib);
        return 1;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t = now_s();
        memcpy(b, a, n);
        t = now_s() - t;
        if (t < best) best = t;
    }
    printf("memcpy_GBps %.2f\n", (double)n / best / 1e9);

    const uint64_t *w = (const uint64_t *)a;
    size_t nw = n / 8;
    uint64_t sink = b[n / 2];
    best = 1e30;
    for (int r = 0; r < 5; r++) {
        uint64_t s = 0;
        double t = now_s();
#pragma omp parallel for reduction(+ : s) schedule(static)
        for (size_t i = 0; i < nw; i++) s += w[i];
        t = now_s() - t;
        sink += s;
        if (t < best) best = t;
    }
    printf("read_GBps %.2f\n", (double)n / best / 1e9);
    printf("threads %d\n", omp_get_max_threads());
    free(a);
    free(b);
    return sink == 42 ? 2 : 0; /* keep the sums alive */
}
