/*
 * gguf_write.c -- the GGUF writer of gguf_write.h: three growing byte
 * buffers (key-values, tensor infos, data) joined behind the header on save.
 */
#include "format/gguf.h"
#include "format/gguf_write.h"

#include <string.h>

#define GGUF_ALIGN 32
#define GGML_TYPE_F32 0
#define GGML_MAX_NAME 64 /* ggml's tensor name limit, NUL included */

typedef lm_bytes bytes;

struct lm_gguf_w {
    bytes kv, info, data;
    uint64_t n_kv, n_tensors;
    int rc;         /* first failure of an adder, LM_OK until then */
    char msg[256];  /* its message */
};

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

static void w_fail(lm_gguf_w *w, int rc, const char *msg, const char *what) {
    if (w->rc) return;
    w->rc = rc;
    snprintf(w->msg, sizeof w->msg, "%s: %s", msg, what);
}

/* Append n bytes of src (NULL: zeros). */
static void put(lm_gguf_w *w, bytes *b, const void *src, size_t n) {
    if (w->rc) return;
    lm_bytes_put(b, src, n);
    if (b->oom) w_fail(w, LM_ENOMEM, "out of memory writing GGUF", "buffer");
}

/* Little-endian scalars (x86-64 and every target layermap builds for). */
static void put_u32(lm_gguf_w *w, bytes *b, uint32_t v) { put(w, b, &v, 4); }
static void put_u64(lm_gguf_w *w, bytes *b, uint64_t v) { put(w, b, &v, 8); }
static void put_str(lm_gguf_w *w, bytes *b, const char *s) {
    size_t n = strlen(s);
    put_u64(w, b, n);
    put(w, b, s, n);
}

/* ------------------------------------------------------------------------ */
/* Adders                                                                    */
/* ------------------------------------------------------------------------ */

lm_gguf_w *lm_gguf_w_new(void) { return lm_calloc(1, sizeof(lm_gguf_w)); }

void lm_gguf_w_free(lm_gguf_w *w) {
    if (!w) return;
    lm_free(w->kv.p);
    lm_free(w->info.p);
    lm_free(w->data.p);
    lm_free(w);
}

void lm_gguf_w_str(lm_gguf_w *w, const char *key, const char *val) {
    put_str(w, &w->kv, key);
    put_u32(w, &w->kv, LM_GGUF_STRING);
    put_str(w, &w->kv, val);
    w->n_kv++;
}

void lm_gguf_w_u32(lm_gguf_w *w, const char *key, uint32_t val) {
    put_str(w, &w->kv, key);
    put_u32(w, &w->kv, LM_GGUF_UINT32);
    put_u32(w, &w->kv, val);
    w->n_kv++;
}

void lm_gguf_w_str_arr(lm_gguf_w *w, const char *key, const char *const *vals, int n) {
    if (n < 0) return w_fail(w, LM_EARG, "GGUF string array with a negative count", key);
    put_str(w, &w->kv, key);
    put_u32(w, &w->kv, LM_GGUF_ARRAY);
    put_u32(w, &w->kv, LM_GGUF_STRING);
    put_u64(w, &w->kv, (uint64_t)n);
    for (int i = 0; i < n; i++) put_str(w, &w->kv, vals[i]);
    w->n_kv++;
}

void lm_gguf_w_f32(lm_gguf_w *w, const char *name, const int64_t *ne, int n_dims, const float *data) {
    if (n_dims < 1 || n_dims > 4) return w_fail(w, LM_EARG, "GGUF tensor needs 1..4 dimensions", name);
    if (strlen(name) >= GGML_MAX_NAME) return w_fail(w, LM_EARG, "GGUF tensor name longer than 63 bytes", name);
    uint64_t count = 1;
    for (int i = 0; i < n_dims; i++)
        if (ne[i] < 1 || lm_mul_overflow(count, (uint64_t)ne[i], &count) || count > SIZE_MAX / 8)
            return w_fail(w, LM_EARG, "GGUF tensor has a bad shape", name);
    int nd = 1; /* ggml_n_dims: trailing axes of size 1 are not written */
    for (int i = n_dims - 1; i >= 1; i--)
        if (ne[i] > 1) {
            nd = i + 1;
            break;
        }
    put_str(w, &w->info, name);
    put_u32(w, &w->info, (uint32_t)nd);
    for (int i = 0; i < nd; i++) put_u64(w, &w->info, (uint64_t)ne[i]);
    put_u32(w, &w->info, GGML_TYPE_F32);
    put_u64(w, &w->info, w->data.n); /* offset into the data section: always aligned */
    size_t nb = (size_t)count * sizeof(float);
    put(w, &w->data, data, nb);
    put(w, &w->data, NULL, (GGUF_ALIGN - nb % GGUF_ALIGN) % GGUF_ALIGN);
    w->n_tensors++;
}

/* ------------------------------------------------------------------------ */
/* Save                                                                      */
/* ------------------------------------------------------------------------ */

int lm_gguf_w_save(const lm_gguf_w *w, const char *path, lm_err *err) {
    if (!w) return lm_nomem(err, sizeof(lm_gguf_w), "GGUF writer");
    if (w->rc == LM_ENOMEM) return lm_nomem(err, w->kv.n + w->info.n + w->data.n, "GGUF buffers");
    if (w->rc) return lm_fail(err, w->rc, "%s: %s", path, w->msg);
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) return rc;
    uint32_t version = 3;
    uint64_t head_n = 4 + 4 + 8 + 8 + w->kv.n + w->info.n;
    static const uint8_t zeros[GGUF_ALIGN];
    size_t pad = (GGUF_ALIGN - head_n % GGUF_ALIGN) % GGUF_ALIGN;
    /* a short write sets the stream's error flag, which the commit reports */
    fwrite("GGUF", 1, 4, a.f);
    fwrite(&version, 4, 1, a.f);
    fwrite(&w->n_tensors, 8, 1, a.f);
    fwrite(&w->n_kv, 8, 1, a.f);
    if (w->kv.n) fwrite(w->kv.p, 1, w->kv.n, a.f);
    if (w->info.n) fwrite(w->info.p, 1, w->info.n, a.f);
    if (pad) fwrite(zeros, 1, pad, a.f);
    if (w->data.n) fwrite(w->data.p, 1, w->data.n, a.f);
    return lm_atomic_commit(&a, err);
}
