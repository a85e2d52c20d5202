/*
 * checkpoint.c -- the attribution checkpoint (format LMCKPT04, layout in
 * checkpoint.h) and the fingerprint of a run: the model, the data, the
 * method set and every option that changes the sums.
 *
 * The file is built in memory and written atomically (temp file + rename),
 * so that a checkpoint is always whole; it is read whole, its size and its
 * sha256 trailer checked before anything in it is believed, then parsed over
 * a bounded cursor. A file of another run is refused naming what differs.
 */
#include "method/checkpoint.h"

#include "base/sha256.h"
#include "compute/engine.h"
#include "model/model.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------ */
/* Fingerprint                                                               */
/* ------------------------------------------------------------------------ */

/* "0-5,20" of the layers l < min(n, L) with keep[l]; "all" when that is every layer. */
static void layers_text(char *buf, size_t size, const uint8_t *keep, int n, int L) {
    snprintf(buf, size, "all");
    if (!keep) return;
    int every = 1;
    for (int l = 0; l < L; l++) every &= l < n && keep[l];
    if (every) return;
    size_t used = 0;
    buf[0] = 0;
    for (int l = 0; l < L && l < n;) {
        if (!keep[l]) {
            l++;
            continue;
        }
        int e = l;
        while (e + 1 < L && e + 1 < n && keep[e + 1]) e++;
        int w = e > l ? snprintf(buf + used, size - used, "%s%d-%d", used ? "," : "", l, e)
                      : snprintf(buf + used, size - used, "%s%d", used ? "," : "", l);
        if (w < 0 || (size_t)w >= size - used) break; /* truncated: 256 bytes hold any real selection */
        used += (size_t)w;
        l = e + 1;
    }
    if (!used) snprintf(buf, size, "none");
}

/* The file being built. */
typedef lm_bytes ckpt_buf;

static void put(ckpt_buf *b, const void *v, size_t n) { lm_bytes_put(b, v, n); }

static void put_i32(ckpt_buf *b, int32_t v) { put(b, &v, 4); }
static void put_i64(ckpt_buf *b, int64_t v) { put(b, &v, 8); }
static void put_f64(ckpt_buf *b, double v) { put(b, &v, 8); }
/* A string into exactly n bytes, NUL-padded (truncated to n - 1). */
static void put_str(ckpt_buf *b, const char *s, size_t n) {
    char tmp[256] = {0};
    size_t l = strlen(s);
    if (l > n - 1) l = n - 1;
    memcpy(tmp, s, l);
    put(b, tmp, n);
}

/* The fingerprint record as it is in the file; with_name 0 leaves the
 * model's name out (what the run's sha256 is taken over). */
static void put_fp(ckpt_buf *b, const lm_attr_fingerprint *fp, int with_name) {
    put(b, fp->model_sha256, 64);
    put_i64(b, fp->model_bytes);
    if (with_name) put_str(b, fp->model_name, 256);
    put(b, fp->data_sha256, 64);
    put_i32(b, fp->n_seq);
    put_i32(b, fp->longest);
    put_i64(b, fp->n_tokens);
    put_i32(b, fp->n_methods);
    for (int i = 0; i < LM_METHOD_COUNT; i++) put_i32(b, i < fp->n_methods ? fp->methods[i] : -1);
    put_i32(b, fp->batch);
    put_i32(b, fp->ig_steps);
    put_i32(b, fp->n_layer);
    put_str(b, fp->layers, 256);
    put_f64(b, fp->until_stable);
    put_i32(b, fp->compute);
}

/* See layermap.h. */
int lm_attr_fingerprint_of(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                           const lm_attr_opts *o, lm_attr_fingerprint *fp, lm_err *err) {
    memset(fp, 0, sizeof *fp);
    if (!e || !d || !methods || n < 1 || n > LM_METHOD_COUNT)
        return lm_fail(err, LM_EARG, "fingerprint: no engine, data or methods");
    const lm_model *m = lm_eng_model(e);
    int rc = lm_model_sha256(m, fp->model_sha256, &fp->model_bytes, err);
    if (rc) return rc;
    snprintf(fp->model_name, sizeof fp->model_name, "%.255s", m->path);
    lm_dataset_sha256(d, fp->data_sha256);
    fp->n_seq = d->n_seq;
    fp->n_tokens = d->n_tokens;
    for (int s = 0; s < d->n_seq; s++)
        if (d->seqs[s].n > fp->longest) fp->longest = d->seqs[s].n;
    int has_ig = 0;
    fp->n_methods = n;
    for (int i = 0; i < n; i++) {
        int v = (int)methods[i], j = i;
        for (; j > 0 && fp->methods[j - 1] > v; j--) fp->methods[j] = fp->methods[j - 1]; /* insertion: ascending */
        fp->methods[j] = v;
        has_ig |= methods[i] == LM_METHOD_IG;
    }
    fp->batch = o && o->batch > 0 ? o->batch : 1;
    fp->ig_steps = has_ig ? (o && o->ig_steps > 0 ? o->ig_steps : 32) : 0;
    fp->n_layer = lm_eng_config(e)->n_layer;
    layers_text(fp->layers, sizeof fp->layers, o ? o->layers : NULL, o ? o->n_layers : 0, fp->n_layer);
    fp->until_stable = o && o->until_stable > 0 ? o->until_stable : 0.0;
    fp->compute = lm_engine_compute(e);
    ckpt_buf b = {0};
    put_fp(&b, fp, 0);
    if (b.oom) {
        lm_free(b.p);
        return lm_nomem(err, CKPT_FP_BYTES, "checkpoint fingerprint");
    }
    lm_sha256 h;
    lm_sha256_init(&h);
    lm_sha256_update(&h, b.p, b.n);
    lm_sha256_hex(&h, fp->sha256);
    lm_free(b.p);
    return LM_OK;
}

/* "grad-weight,fisher" */
static void join_methods(char *buf, size_t n, const int *ids, int k) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < k && used + 1 < n; i++) {
        const char *nm = ids[i] >= 0 && ids[i] < LM_METHOD_COUNT ? lm_method_names[ids[i]] : "?";
        int w = snprintf(buf + used, n - used, "%s%s", i ? "," : "", nm);
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* have (the file's) against want (this run's): LM_OK, or LM_EARG naming
 * the first thing that differs, in the order model, data, methods, options. */
static int fp_compare(const char *p, const lm_attr_fingerprint *have, const lm_attr_fingerprint *want, lm_err *err) {
    static const char *const del = "delete it to start over";
    if (memcmp(have->model_sha256, want->model_sha256, 64) || have->model_bytes != want->model_bytes ||
        have->n_layer != want->n_layer)
        return lm_fail(err, LM_EARG,
                       "%s: checkpoint is for another model (%.300s: %d layers, %lld bytes of tensors, sha256 %.12s), "
                       "not %.300s (%d layers, %lld bytes, sha256 %.12s); %s",
                       p, have->model_name, have->n_layer, (long long)have->model_bytes, have->model_sha256,
                       want->model_name, want->n_layer, (long long)want->model_bytes, want->model_sha256, del);
    if (memcmp(have->data_sha256, want->data_sha256, 64) || have->n_seq != want->n_seq ||
        have->n_tokens != want->n_tokens || have->longest != want->longest) {
        if (have->n_seq == want->n_seq && have->n_tokens == want->n_tokens && have->longest == want->longest)
            return lm_fail(err, LM_EARG,
                           "%s: checkpoint is for other data of the same size (%d sequences, %lld tokens; sha256 "
                           "%.12s, not %.12s); %s",
                           p, have->n_seq, (long long)have->n_tokens, have->data_sha256, want->data_sha256, del);
        return lm_fail(err, LM_EARG,
                       "%s: checkpoint is for other data or sequence length (%d sequences of up to %d tokens, %lld "
                       "tokens), not %d sequences of up to %d tokens (%lld tokens); %s",
                       p, have->n_seq, have->longest, (long long)have->n_tokens, want->n_seq, want->longest,
                       (long long)want->n_tokens, del);
    }
    if (have->n_methods != want->n_methods ||
        memcmp(have->methods, want->methods, sizeof(int) * (size_t)want->n_methods)) {
        char a[256], b[256];
        join_methods(a, sizeof a, have->methods, have->n_methods);
        join_methods(b, sizeof b, want->methods, want->n_methods);
        return lm_fail(err, LM_EARG, "%s: checkpoint is for method %s, not %s; %s", p, a, b, del);
    }
    if (have->batch != want->batch)
        return lm_fail(err, LM_EARG, "%s: checkpoint is for batch size %d, not %d; %s", p, have->batch,
                       want->batch, del);
    if (have->ig_steps != want->ig_steps)
        return lm_fail(err, LM_EARG, "%s: checkpoint is for ig with %d steps, not %d; %s", p, have->ig_steps,
                       want->ig_steps, del);
    if (strcmp(have->layers, want->layers))
        return lm_fail(err, LM_EARG, "%s: checkpoint is for layers %s, not %s; %s", p, have->layers, want->layers, del);
    if (have->until_stable != want->until_stable) {
        char a[32] = "none", b[32] = "none";
        if (have->until_stable > 0) snprintf(a, sizeof a, "%g", have->until_stable);
        if (want->until_stable > 0) snprintf(b, sizeof b, "%g", want->until_stable);
        return lm_fail(err, LM_EARG, "%s: checkpoint is for until-stable %s, not %s; %s", p, a, b, del);
    }
    if (have->compute != want->compute)
        return lm_fail(err, LM_EARG, "%s: checkpoint is for --compute %s, not %s; %s", p, lm_compute_name(have->compute),
                       lm_compute_name(want->compute), del);
    return LM_OK;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

/* See checkpoint.h. */
int lm_ckpt_write(const char *path, const lm_attr_fingerprint *fp, const lm_ckpt_method *ms, lm_err *err) {
    ckpt_buf b = {0};
    put(&b, CKPT_MAGIC, 8);
    put_i64(&b, 0); /* the size, once known */
    put_fp(&b, fp, 1);
    for (int i = 0; i < fp->n_methods; i++) {
        const lm_ckpt_method *c = &ms[i];
        put_i32(&b, c->method);
        put_i32(&b, c->phase);
        put_i32(&b, c->n_samples);
        put_i32(&b, c->stable_runs);
        put_i32(&b, c->stopped_stable);
        put_i32(&b, c->n_slots);
        put_i64(&b, c->n_targets);
        put_i64(&b, c->n_tokens);
        put_i64(&b, c->n_pos_mean);
        put_f64(&b, c->loss_sum);
        put_i64(&b, (int64_t)c->n_sum);
        put_i64(&b, (int64_t)c->n_bi);
        put_i64(&b, (int64_t)c->n_vec);
        for (int k = 0; k < c->n_slots; k += 8) {
            uint8_t byte = 0;
            for (int j = 0; j < 8 && k + j < c->n_slots; j++) byte |= (uint8_t)((c->done[k + j] != 0) << j);
            put(&b, &byte, 1);
        }
        put(&b, c->sum, sizeof(double) * c->n_sum);
        put(&b, c->aux, sizeof(double) * c->n_sum);
        put(&b, c->bi, sizeof(double) * c->n_bi);
        put(&b, c->vec, sizeof(double) * c->n_vec);
        put(&b, c->sum2, sizeof(double) * c->n_sum);
        put(&b, c->half, sizeof(double) * 2 * c->n_sum);
    }
    uint64_t size = b.n + 64;
    if (!b.oom) memcpy(b.p + 8, &size, 8);
    char hex[65];
    lm_sha256 h;
    lm_sha256_init(&h);
    if (!b.oom) lm_sha256_update(&h, b.p, b.n);
    lm_sha256_hex(&h, hex);
    put(&b, hex, 64);
    if (b.oom) {
        lm_free(b.p);
        return lm_nomem(err, (size_t)size, "checkpoint");
    }
    lm_atomic f;
    int rc = lm_atomic_open(&f, path, err);
    if (rc) {
        lm_free(b.p);
        return rc;
    }
    errno = 0;
    int ok = fwrite(b.p, 1, b.n, f.f) == b.n;
    lm_free(b.p);
    if (!ok) {
        int e = errno ? errno : EIO;
        lm_atomic_abort(&f);
        return lm_fail(err, LM_EIO, "%s: cannot write checkpoint: %s", path, strerror(e));
    }
    return lm_atomic_commit(&f, err);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/* ------------------------------------------------------------------------ */

/* A bounded cursor over the file. */
typedef struct ckpt_cur {
    const uint8_t *p;
    size_t n, at;
} ckpt_cur;

static int get(ckpt_cur *c, void *v, size_t n) {
    if (n > c->n - c->at) return 0;
    if (n) memcpy(v, c->p + c->at, n);
    c->at += n;
    return 1;
}

static int get_i32(ckpt_cur *c, int32_t *v) { return get(c, v, 4); }
static int get_i64(ckpt_cur *c, int64_t *v) { return get(c, v, 8); }
/* n bytes of a NUL-padded string into s[n] (made NUL-terminated) */
static int get_str(ckpt_cur *c, char *s, size_t n) {
    if (!get(c, s, n)) return 0;
    s[n - 1] = 0;
    return 1;
}

static int get_fp(ckpt_cur *c, lm_attr_fingerprint *fp) {
    memset(fp, 0, sizeof *fp);
    int32_t v;
    int ok = get(c, fp->model_sha256, 64) && get_i64(c, &fp->model_bytes) && get_str(c, fp->model_name, 256) &&
             get(c, fp->data_sha256, 64);
    ok = ok && get_i32(c, &v) && ((fp->n_seq = v), 1) && get_i32(c, &v) && ((fp->longest = v), 1) &&
         get_i64(c, &fp->n_tokens) && get_i32(c, &v) && ((fp->n_methods = v), 1);
    for (int i = 0; ok && i < LM_METHOD_COUNT; i++) ok = get_i32(c, &v) && ((fp->methods[i] = v), 1);
    ok = ok && get_i32(c, &v) && ((fp->batch = v), 1) && get_i32(c, &v) && ((fp->ig_steps = v), 1) &&
         get_i32(c, &v) && ((fp->n_layer = v), 1) && get_str(c, fp->layers, 256) && get(c, &fp->until_stable, 8) &&
         get_i32(c, &v) && ((fp->compute = v), 1);
    return ok;
}

/* One method's part into c (sizes as the caller set them). */
static int get_method(ckpt_cur *cur, const char *p, int want_method, lm_ckpt_method *c, lm_err *err) {
    int32_t h[6];
    int64_t q[7];
    for (int i = 0; i < 6; i++)
        if (!get_i32(cur, &h[i])) return LM_CORRUPT(err, "%s: checkpoint truncated in a method's head", p);
    double loss;
    for (int i = 0; i < 3; i++)
        if (!get_i64(cur, &q[i])) return LM_CORRUPT(err, "%s: checkpoint truncated in a method's head", p);
    if (!get(cur, &loss, 8)) return LM_CORRUPT(err, "%s: checkpoint truncated in a method's head", p);
    for (int i = 3; i < 6; i++)
        if (!get_i64(cur, &q[i])) return LM_CORRUPT(err, "%s: checkpoint truncated in a method's head", p);
    const char *name = lm_method_names[want_method];
    if (h[0] != want_method) return LM_CORRUPT(err, "%s: checkpoint's method list and sums disagree", p);
    if (h[5] != c->n_slots || (uint64_t)q[3] != c->n_sum || (uint64_t)q[4] != c->n_bi || (uint64_t)q[5] != c->n_vec)
        return LM_CORRUPT(err, "%s: checkpoint's %s has %d samples and %lld/%lld/%lld sums, expected %d and %llu/%llu/%llu",
                          p, name, h[5], (long long)q[3], (long long)q[4], (long long)q[5], c->n_slots,
                          (unsigned long long)c->n_sum, (unsigned long long)c->n_bi, (unsigned long long)c->n_vec);
    if (h[1] < 0 || h[2] < 0 || h[2] > c->n_slots || h[3] < 0 || (h[4] != 0 && h[4] != 1) || q[0] < 0 || q[1] < 0 ||
        q[2] < 0 || q[0] > q[1])
        return LM_CORRUPT(err, "%s: checkpoint's %s: counts out of range (phase %d, %d samples, %lld of %lld tokens)",
                          p, name, h[1], h[2], (long long)q[0], (long long)q[1]);
    c->method = h[0];
    c->phase = h[1];
    c->n_samples = h[2];
    c->stable_runs = h[3];
    c->stopped_stable = h[4];
    c->n_targets = q[0];
    c->n_tokens = q[1];
    c->n_pos_mean = q[2];
    c->loss_sum = loss;
    for (int k = 0; k < c->n_slots; k += 8) {
        uint8_t byte;
        if (!get(cur, &byte, 1)) return LM_CORRUPT(err, "%s: checkpoint truncated in %s's finished samples", p, name);
        for (int j = 0; j < 8; j++) {
            if (k + j < c->n_slots)
                c->done[k + j] = (byte >> j) & 1;
            else if ((byte >> j) & 1)
                return LM_CORRUPT(err, "%s: checkpoint marks a sample past the last one", p);
        }
    }
    int ok = get(cur, c->sum, sizeof(double) * c->n_sum) && get(cur, c->aux, sizeof(double) * c->n_sum) &&
             get(cur, c->bi, sizeof(double) * c->n_bi) && get(cur, c->vec, sizeof(double) * c->n_vec) &&
             get(cur, c->sum2, sizeof(double) * c->n_sum) && get(cur, c->half, sizeof(double) * 2 * c->n_sum);
    if (!ok) return LM_CORRUPT(err, "%s: checkpoint truncated in %s's sums", p, name);
    return LM_OK;
}

/* See checkpoint.h. */
int lm_ckpt_read(const char *path, const lm_attr_fingerprint *fp, lm_ckpt_method *ms, lm_err *err) {
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) return -1;
    char *data = NULL;
    size_t n = 0;
    int rc = lm_file_read_all(path, &data, &n, err);
    if (rc) return rc;
    const uint8_t *p = (const uint8_t *)data;
    uint64_t size = 0;
    char want_hex[65], have_hex[65];
    lm_attr_fingerprint have;
    ckpt_cur cur = {p, n >= 64 ? n - 64 : 0, 16};
    if (n < 8 || memcmp(p, "LMCKPT", 6)) {
        rc = LM_CORRUPT(err, "%s: not a layermap checkpoint", path);
    } else if (memcmp(p, CKPT_MAGIC, 8)) {
        int older = memcmp(p, CKPT_MAGIC, 8) < 0;
        rc = lm_fail(err, older ? LM_EARG : LM_EUNSUPPORTED,
                     "%s: checkpoint of %s layermap (format %.8s, this one reads %s); delete it to start over", path,
                     older ? "an older" : "a newer", data, CKPT_MAGIC);
    } else if (n < 16 + CKPT_FP_BYTES + 64) {
        rc = LM_CORRUPT(err, "%s: checkpoint truncated (%zu bytes)", path, n);
    } else if (memcpy(&size, p + 8, 8), size != n) {
        rc = size > n ? LM_CORRUPT(err, "%s: checkpoint truncated (%zu of %llu bytes)", path, n, (unsigned long long)size)
                      : LM_CORRUPT(err, "%s: checkpoint has %zu bytes, its header says %llu", path, n,
                                   (unsigned long long)size);
    } else {
        lm_sha256 h;
        lm_sha256_init(&h);
        lm_sha256_update(&h, p, n - 64);
        lm_sha256_hex(&h, want_hex);
        memcpy(have_hex, p + n - 64, 64);
        have_hex[64] = 0;
        if (memcmp(want_hex, have_hex, 64))
            rc = LM_CORRUPT(err, "%s: checkpoint corrupt (its sha256 does not match its contents)", path);
        else if (!get_fp(&cur, &have))
            rc = LM_CORRUPT(err, "%s: checkpoint truncated in its fingerprint", path);
        else
            rc = fp_compare(path, &have, fp, err);
    }
    for (int i = 0; rc == LM_OK && i < fp->n_methods; i++) rc = get_method(&cur, path, fp->methods[i], &ms[i], err);
    if (rc == LM_OK && cur.at != cur.n)
        rc = LM_CORRUPT(err, "%s: checkpoint has %zu bytes past its sums", path, cur.n - cur.at);
    lm_free(data);
    return rc;
}
