/*
 * imatrix_cmp.c -- compare two llama.cpp imatrix GGUF files (the peer test's
 * judge, tests/output/imatrix_peer.sh), read with layermap's GGUF reader:
 *
 *   imatrix_cmp A.gguf B.gguf RTOL
 *
 * Exit 0 when both have general.type "imatrix", equal imatrix.chunk_size and
 * imatrix.chunk_count, the same weights (NAME.in_sum2 + NAME.counts), equal
 * counts, and every in_sum2 value of A within RTOL relative of B's (|a - b| <=
 * RTOL * |b|, cells where b == 0 need a == 0). Prints the worst cell and a
 * line per mismatch (at most 10); exit 1 otherwise, 2 on a usage error.
 */
#include "layermap.h"
#include "format/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad;

static void fail(const char *fmt, const char *a, const char *b) {
    if (bad++ < 10) {
        fprintf(stderr, "imatrix_cmp: ");
        fprintf(stderr, fmt, a, b);
        fputc('\n', stderr);
    }
}

static int64_t get_int(const lm_gguf *g, const char *key, const char *path) {
    int64_t v = -1;
    lm_err err = {0};
    if (lm_gguf_get_int(g, key, &v, &err) != LM_OK) fail("%s: no %s", path, key);
    return v;
}

static float f32_at(const lm_tensor *t, int64_t i) {
    float f;
    memcpy(&f, t->data + 4 * i, 4);
    return f;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: imatrix_cmp A.gguf B.gguf RTOL\n");
        return 2;
    }
    double rtol = atof(argv[3]);
    lm_gguf *g[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        lm_err err = {0};
        if (lm_gguf_open(&g[i], argv[1 + i], &err)) {
            fprintf(stderr, "imatrix_cmp: %s\n", err.msg);
            return 1;
        }
        lm_gguf_str s;
        char type[64] = "";
        if (lm_gguf_get_str(g[i], "general.type", &s, &err) == LM_OK) lm_gguf_str_copy(s, type, sizeof type);
        if (strcmp(type, "imatrix")) fail("%s: general.type is '%s', not imatrix", argv[1 + i], type);
    }
    const char *keys[2] = {"imatrix.chunk_size", "imatrix.chunk_count"};
    for (int k = 0; k < 2; k++) {
        int64_t a = get_int(g[0], keys[k], argv[1]), b = get_int(g[1], keys[k], argv[2]);
        printf("%s: %lld / %lld\n", keys[k], (long long)a, (long long)b);
        if (a != b) fail("%s differs (%s)", keys[k], "see above");
    }
    if (g[0]->n_tensors != g[1]->n_tensors) fail("%s and %s have different tensor counts", argv[1], argv[2]);
    double worst = 0;
    char worst_name[160] = "";
    int64_t worst_j = 0, cells = 0;
    for (uint64_t i = 0; i < g[0]->n_tensors; i++) {
        const lm_tensor *a = &g[0]->tensors[i], *b = lm_gguf_find_tensor(g[1], a->name);
        if (!b) {
            fail("%s is not in %s", a->name, argv[2]);
            continue;
        }
        int64_t n = a->ndim == 1 ? a->shape[0] : -1;
        if (a->dtype != LM_DT_F32 || b->dtype != LM_DT_F32 || b->ndim != 1 || b->shape[0] != n) {
            fail("%s: shape or type differs (%s)", a->name, argv[2]);
            continue;
        }
        int is_count = strstr(a->name, ".counts") != NULL;
        for (int64_t j = 0; j < n; j++) {
            double x = f32_at(a, j), y = f32_at(b, j);
            if (is_count) {
                if (x != y) fail("%s: counts differ (%s)", a->name, "tokens counted");
                continue;
            }
            cells++;
            double d = y != 0 ? fabs(x - y) / fabs(y) : (x == 0 ? 0 : INFINITY);
            if (!(d <= worst)) {
                worst = d;
                worst_j = j;
                snprintf(worst_name, sizeof worst_name, "%s", a->name);
            }
        }
    }
    printf("in_sum2: %lld cells, worst relative difference %.3g%% (%s[%lld])\n", (long long)cells, 100 * worst,
           worst_name, (long long)worst_j);
    if (!(worst <= rtol)) fail("worst relative difference above the tolerance (%s vs %s)", argv[1], argv[2]);
    lm_gguf_close(g[0]);
    lm_gguf_close(g[1]);
    return bad ? 1 : 0;
}
