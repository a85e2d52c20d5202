/*
 * imatrix.c -- llama.cpp's importance matrix from act-sq's per-column input
 * energies (layermap.h: lm_imatrix_write), in the GGUF layout of
 * llama-imatrix's save_imatrix or the legacy .dat of save_imatrix_legacy
 * (llama.cpp tools/imatrix/imatrix.cpp; read back by common/imatrix-loader.cpp).
 */
#include "format/gguf_write.h"
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NM LM_N_MODULES

/* One weight's entry: its llama.cpp name and its sums in the result. */
typedef struct entry {
    char name[128];
    const double *sum; /* [n_in] */
    int64_t n_in;
} entry;

static int cmp_entry(const void *a, const void *b) { return strcmp(((const entry *)a)->name, ((const entry *)b)->name); }

/* The entries of the layers asked for, sorted by name (llama-imatrix sorts
 * them so: "blk.0.attn_k.weight" < "blk.0.attn_output.weight" < ...
 * < "blk.10..." < "blk.2..."). *out is lm_malloc'd. */
static int collect(const lm_model *m, const lm_attr_result *r, const lm_imatrix_info *info, const char *path,
                   entry **out, int *n_out, lm_err *err) {
    int L = m->cfg.n_layer, n = 0;
    entry *e = lm_malloc(sizeof *e * (size_t)L * NM);
    if (!e) return lm_nomem(err, sizeof *e * (size_t)L * NM, "imatrix entries");
    for (int l = 0; l < L; l++) {
        if (info->layers && (l >= info->n_layers || !info->layers[l])) continue;
        for (int mod = 0; mod < NM; mod++) {
            entry *x = &e[n++];
            lm_model_gguf_name(m, l, mod, x->name, sizeof x->name);
            size_t i = (size_t)l * NM + mod;
            x->sum = r->in_sum2 + r->in_sum2_off[i];
            x->n_in = (int64_t)(r->in_sum2_off[i + 1] - r->in_sum2_off[i]);
            int rc = LM_OK;
            if (x->n_in != m->layers[l].w[mod]->shape[1])
                rc = lm_fail(err, LM_ESHAPE, "%s: %s has %lld input columns but the act-sq sums %lld", path, x->name,
                             (long long)m->layers[l].w[mod]->shape[1], (long long)x->n_in);
            for (int64_t j = 0; j < x->n_in && !rc; j++)
                if (!isfinite(x->sum[j]))
                    rc = lm_fail(err, LM_EARG, "%s: %s: input column %lld has a non-finite sum of squares (%g); "
                                 "llama-quantize refuses such an imatrix", path, x->name, (long long)j, x->sum[j]);
            if (rc) {
                lm_free(e);
                return rc;
            }
        }
    }
    qsort(e, (size_t)n, sizeof *e, cmp_entry);
    *out = e;
    *n_out = n;
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* GGUF                                                                      */
/* ------------------------------------------------------------------------ */

static int write_gguf(const entry *e, int n, double count, const lm_imatrix_info *info, const char *path,
                      lm_err *err) {
    lm_gguf_w *w = lm_gguf_w_new();
    if (!w) return lm_nomem(err, 64, "GGUF writer");
    int64_t maxin = 1;
    for (int i = 0; i < n; i++)
        if (e[i].n_in > maxin) maxin = e[i].n_in;
    float *buf = lm_malloc(sizeof(float) * (size_t)maxin);
    if (!buf) {
        lm_gguf_w_free(w);
        return lm_nomem(err, sizeof(float) * (size_t)maxin, "imatrix row");
    }
    const char *ds[1] = {info->dataset};
    lm_gguf_w_str(w, "general.type", "imatrix");
    lm_gguf_w_str_arr(w, "imatrix.datasets", ds, info->dataset ? 1 : 0);
    lm_gguf_w_u32(w, "imatrix.chunk_count", (uint32_t)info->chunk_count);
    lm_gguf_w_u32(w, "imatrix.chunk_size", (uint32_t)info->chunk_size);
    for (int i = 0; i < n; i++) {
        char name[160];
        for (int64_t j = 0; j < e[i].n_in; j++) buf[j] = (float)e[i].sum[j];
        int64_t ne[2] = {e[i].n_in, 1}, ne1[2] = {1, 1};
        snprintf(name, sizeof name, "%s.in_sum2", e[i].name);
        lm_gguf_w_f32(w, name, ne, 2, buf);
        float c = (float)count;
        snprintf(name, sizeof name, "%s.counts", e[i].name);
        lm_gguf_w_f32(w, name, ne1, 2, &c);
    }
    int rc = lm_gguf_w_save(w, path, err);
    lm_free(buf);
    lm_gguf_w_free(w);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Legacy .dat                                                               */
/* ------------------------------------------------------------------------ */

static void put_i32(FILE *f, int32_t v) { fwrite(&v, 4, 1, f); }

static int write_dat(const entry *e, int n, double count, const lm_imatrix_info *info, const char *path,
                     lm_err *err) {
    if (count > INT32_MAX) return lm_fail(err, LM_EARG, "%s: %.0f tokens: too many for the legacy .dat format", path, count);
    int64_t maxin = 1;
    for (int i = 0; i < n; i++)
        if (e[i].n_in > maxin) maxin = e[i].n_in;
    float *buf = lm_malloc(sizeof(float) * (size_t)maxin);
    if (!buf) return lm_nomem(err, sizeof(float) * (size_t)maxin, "imatrix row");
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) {
        lm_free(buf);
        return rc;
    }
    /* ncall: ceil(count / chunk_size), as llama-imatrix rounds it ("to avoid accidental zeros") */
    int32_t ncall = (int32_t)(((int64_t)count + info->chunk_size - 1) / info->chunk_size);
    put_i32(a.f, n);
    for (int i = 0; i < n; i++) {
        int32_t len = (int32_t)strlen(e[i].name);
        put_i32(a.f, len);
        fwrite(e[i].name, 1, (size_t)len, a.f);
        put_i32(a.f, ncall);
        put_i32(a.f, (int32_t)e[i].n_in);
        for (int64_t j = 0; j < e[i].n_in; j++)
            buf[j] = count > 0 ? (float)(e[i].sum[j] / count * ncall) : (float)ncall; /* no data: 1 per call, as llama.cpp */
        fwrite(buf, sizeof(float), (size_t)e[i].n_in, a.f);
    }
    put_i32(a.f, info->chunk_count);
    int32_t dl = info->dataset ? (int32_t)strlen(info->dataset) : 0;
    put_i32(a.f, dl);
    if (dl) fwrite(info->dataset, 1, (size_t)dl, a.f);
    lm_free(buf);
    return lm_atomic_commit(&a, err);
}

/* ------------------------------------------------------------------------ */
/* API                                                                       */
/* ------------------------------------------------------------------------ */

int lm_imatrix_write(const lm_model *m, const lm_attr_result *r, const lm_imatrix_info *info, const char *path,
                     lm_err *err) {
    if (!m || !r || !info || !path) return lm_fail(err, LM_EARG, "lm_imatrix_write: missing argument");
    if (!r->in_sum2 || !r->in_sum2_off)
        return lm_fail(err, LM_EARG, "%s: an imatrix needs the per-column sums of act-sq or wanda", path);
    if (info->chunk_size < 1 || info->chunk_count < 0)
        return lm_fail(err, LM_EARG, "%s: imatrix chunk size %d / chunk count %d (need >= 1 / >= 0)", path,
                       info->chunk_size, info->chunk_count);
    entry *e = NULL;
    int n = 0;
    int rc = collect(m, r, info, path, &e, &n, err);
    if (rc) return rc;
    if (n == 0) rc = lm_fail(err, LM_EARG, "%s: no layer to write into the imatrix", path);
    else if (lm_ends_with(path, ".dat")) rc = write_dat(e, n, (double)r->n_tokens, info, path, err);
    else rc = write_gguf(e, n, (double)r->n_tokens, info, path, err);
    lm_free(e);
    return rc;
}
