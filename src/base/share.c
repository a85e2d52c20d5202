/*
 * share.c -- see share.h: a sort of the items, then a min-heap of the parts
 * by weight (O(n log n + n log parts)).
 */
#include "base/share.h"

#include "base/alloc.h"
#include "base/error.h"

#include <stdlib.h>

/* The fewer weight first, then the lower part. */
static int part_less(const double *load, int a, int b) { return load[a] < load[b] || (load[a] == load[b] && a < b); }

/* Restore the heap h[0..n) of parts ordered by part_less, from position i down. */
static void sift(int *h, int n, const double *load, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && part_less(load, h[l], h[m])) m = l;
        if (r < n && part_less(load, h[r], h[m])) m = r;
        if (m == i) return;
        int t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

typedef struct item {
    double w;
    int index;
} item;

/* More weight first, then the lower index. */
static int item_cmp(const void *pa, const void *pb) {
    const item *a = pa, *b = pb;
    if (a->w != b->w) return a->w > b->w ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

int lm_share_greedy(const double *w, int n, int parts, int *owner, double *load_out, lm_err *err) {
    if (parts < 1) return lm_fail(err, LM_EARG, "shares: %d parts (must be >= 1)", parts);
    item *it = lm_malloc(sizeof(item) * (size_t)(n > 0 ? n : 1));
    double *load = lm_calloc((size_t)parts, sizeof(double));
    int *heap = lm_malloc(sizeof(int) * (size_t)parts);
    if (!it || !load || !heap) {
        lm_free(it);
        lm_free(load);
        lm_free(heap);
        return lm_nomem(err, sizeof(item) * (size_t)n + 12 * (size_t)parts, "shares");
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        owner[i] = -1;
        if (w[i] >= 0) it[m++] = (item){w[i], i};
    }
    qsort(it, (size_t)m, sizeof *it, item_cmp);
    for (int p = 0; p < parts; p++) heap[p] = p; /* all loads 0: ordered by part already */
    for (int k = 0; k < m; k++) {
        int p = heap[0]; /* the part with the least weight */
        owner[it[k].index] = p;
        load[p] += it[k].w;
        sift(heap, parts, load, 0);
    }
    for (int p = 0; load_out && p < parts; p++) load_out[p] = load[p];
    lm_free(it);
    lm_free(load);
    lm_free(heap);
    return LM_OK;
}
