/*
 * safetensors.c -- reader for .safetensors files and sharded HF checkpoints
 * (format and checks: safetensors.h).
 *
 * A file is mapped read-only and parsed in stages: the 8-byte header length,
 * the JSON header, one lm_tensor per entry (dtype, shape, byte range checked
 * against the file), then the checks that need every entry at once (unique
 * names, no two byte ranges overlapping). Tensors are views into the mapping;
 * nothing is copied.
 */
#include "format/safetensors.h"
#include "base/json.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Largest integer a JSON number (an IEEE double in cJSON) holds exactly. */
#define ST_MAX_EXACT ((uint64_t)1 << 53)

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

/* A JSON number that is a non-negative integer below 2^53 (exact in a double). */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d >= (double)ST_MAX_EXACT || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* Bytes per element of a safetensors dtype string, 0 for a name this reader
 * does not know. *dt is the lm_dtype for the three layermap decodes and
 * LM_DT_COUNT for the others of known size (I64, F64, F8_E4M3, ...): such a
 * tensor still has its layout checked, and only fails when it is read, the
 * way GGUF tensors of undecodable types do (lm_tensor.file_type names it). */
static size_t st_dtype(const char *s, lm_dtype *dt) {
    static const struct {
        const char *name;
        lm_dtype dt;
        size_t size;
    } tab[] = {
        {"F32", LM_DT_F32, 4},    {"F16", LM_DT_F16, 2},       {"BF16", LM_DT_BF16, 2},     {"F64", LM_DT_COUNT, 8},
        {"I64", LM_DT_COUNT, 8},  {"U64", LM_DT_COUNT, 8},     {"I32", LM_DT_COUNT, 4},     {"U32", LM_DT_COUNT, 4},
        {"I16", LM_DT_COUNT, 2},  {"U16", LM_DT_COUNT, 2},     {"I8", LM_DT_COUNT, 1},      {"U8", LM_DT_COUNT, 1},
        {"BOOL", LM_DT_COUNT, 1}, {"F8_E4M3", LM_DT_COUNT, 1}, {"F8_E5M2", LM_DT_COUNT, 1}, {"F8_E8M0", LM_DT_COUNT, 1},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(s, tab[i].name)) {
            *dt = tab[i].dt;
            return tab[i].size;
        }
    return 0;
}

/* qsort comparator: lm_tensor by name. */
static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const lm_tensor *)a)->name, ((const lm_tensor *)b)->name);
}

/* qsort/bsearch comparator: lm_tensor pointers by name. */
static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(const lm_tensor *const *)a)->name, (*(const lm_tensor *const *)b)->name);
}

/* qsort comparator: lm_tensor pointers by first byte. */
static int cmp_tensor_ptr_data(const void *a, const void *b) {
    const uint8_t *x = (*(const lm_tensor *const *)a)->data, *y = (*(const lm_tensor *const *)b)->data;
    return x < y ? -1 : x > y;
}

/* Find a tensor by name in an array sorted by name. */
static const lm_tensor *find_sorted(const lm_tensor *ts, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(ts[mid].name, name);
        if (c == 0) return &ts[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* One file                                                                  */
/* ------------------------------------------------------------------------ */

/* Fill t from one header entry {"dtype", "shape", "data_offsets"}; data is
 * the start of the data section, data_size its length. */
static int st_parse_entry(lm_tensor *t, const char *path, const cJSON *e, const uint8_t *data, uint64_t data_size,
                          lm_err *err) {
    const char *name = e->string;
    if (strlen(name) >= sizeof t->name)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: tensor name '%.60s...' is %zu bytes, layermap takes at most %zu",
                       path, name, strlen(name), sizeof t->name - 1);
    memcpy(t->name, name, strlen(name) + 1);
    t->path = path;
    if (!cJSON_IsObject(e)) return LM_CORRUPT(err, "%s: tensor '%s': header entry is not a JSON object", path, name);

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(jd)) return LM_CORRUPT(err, "%s: tensor '%s': no \"dtype\" string", path, name);
    size_t esize = st_dtype(jd->valuestring, &t->dtype);
    if (!esize)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: tensor '%s': unknown dtype '%s' (layermap reads F32, F16 and BF16)",
                       path, name, jd->valuestring);
    snprintf(t->file_type, sizeof t->file_type, "%s", jd->valuestring);

    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(js)) return LM_CORRUPT(err, "%s: tensor '%s': no \"shape\" array", path, name);
    int ndim = cJSON_GetArraySize(js);
    if (ndim > 4)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: tensor '%s': %d dimensions, layermap takes at most 4", path, name,
                       ndim);
    uint64_t nelem = 1;
    int i = 0;
    for (const cJSON *d = js->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_u64(d, &v) || v > INT64_MAX)
            return LM_CORRUPT(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name, i);
        t->shape[i] = (int64_t)v;
        if (lm_mul_overflow(nelem, v, &nelem))
            return LM_CORRUPT(err, "%s: tensor '%s': shape product overflows 64 bits", path, name);
    }
    t->ndim = ndim;
    if (ndim == 0) { /* a scalar: one element, seen as a 1-D tensor of one */
        t->ndim = 1;
        t->shape[0] = 1;
    }

    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_u64(jo->child, &begin) ||
        !json_u64(jo->child->next, &end))
        return LM_CORRUPT(err, "%s: tensor '%s': \"data_offsets\" is not an array of two non-negative integers", path,
                          name);
    if (begin > end)
        return LM_CORRUPT(err, "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", path, name,
                          (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return LM_CORRUPT(
            err, "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data section (%llu bytes)", path, name,
            (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
    uint64_t want;
    char sh[96];
    lm_fmt_shape(sh, sizeof sh, t->shape, t->ndim);
    if (lm_mul_overflow(nelem, esize, &want))
        return LM_CORRUPT(err, "%s: tensor '%s': shape %s of %s: byte size overflows 64 bits", path, name, sh,
                          jd->valuestring);
    if (want != end - begin)
        return LM_CORRUPT(err, "%s: tensor '%s': shape %s of %s needs %llu bytes, data_offsets [%llu, %llu] give %llu",
                          path, name, sh, jd->valuestring, (unsigned long long)want, (unsigned long long)begin,
                          (unsigned long long)end, (unsigned long long)(end - begin));
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    t->qk_perm_heads = 0;
    return LM_OK;
}

/* Checks over all tensors of a file: names unique, byte ranges disjoint. The
 * tensors are left sorted by name. */
static int st_check_all(lm_st_file *f, const uint8_t *data, lm_err *err) {
    const char *path = f->file.path;
    int n = f->n_tensors;
    qsort(f->tensors, (size_t)n, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < n; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name))
            return LM_CORRUPT(err, "%s: tensor name '%s' appears twice in the header", path, f->tensors[i].name);

    lm_tensor **by = lm_malloc((size_t)n * sizeof *by);
    if (!by) return lm_nomem(err, (size_t)n * sizeof *by, "safetensors overlap check");
    int m = 0;
    for (int i = 0; i < n; i++)
        if (f->tensors[i].nbytes) by[m++] = &f->tensors[i]; /* empty tensors occupy no bytes */
    qsort(by, (size_t)m, sizeof *by, cmp_tensor_ptr_data);
    int rc = LM_OK;
    for (int i = 1; i < m; i++) {
        const lm_tensor *a = by[i - 1], *b = by[i];
        if (b->data < a->data + a->nbytes) {
            rc = LM_CORRUPT(err, "%s: tensors '%s' (bytes %zu..%zu) and '%s' (bytes %zu..%zu) overlap", path, a->name,
                            (size_t)(a->data - data), (size_t)(a->data - data) + a->nbytes, b->name,
                            (size_t)(b->data - data), (size_t)(b->data - data) + b->nbytes);
            break;
        }
    }
    lm_free(by);
    return rc;
}

/* Parse the mapped file f->file into f->tensors. */
static int st_parse(lm_st_file *f, lm_err *err) {
    const char *path = f->file.path;
    size_t size = f->file.size;
    const uint8_t *p = f->file.data;
    if (size < 8) return LM_CORRUPT(err, "%s: file is %zu bytes, too short for the 8-byte header length", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    if (hlen > size - 8)
        return LM_CORRUPT(err, "%s: header length %llu is past the end of the file (%zu bytes follow the length field)",
                          path, (unsigned long long)hlen, size - 8);
    if (hlen == 0) return LM_CORRUPT(err, "%s: header length is 0, expected a JSON object", path);

    cJSON *root = NULL;
    int rc = lm_json_parse(&root, (const char *)p + 8, (size_t)hlen, 8, path, err);
    if (rc) return rc;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return LM_CORRUPT(err, "%s: header is not a JSON object", path);
    }
    int n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__")) n++;
    f->tensors = lm_calloc((size_t)n, sizeof *f->tensors);
    if (!f->tensors) {
        cJSON_Delete(root);
        return lm_nomem(err, (size_t)n * sizeof *f->tensors, "safetensors tensor table");
    }
    const uint8_t *data = p + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    int i = 0;
    for (const cJSON *e = root->child; e && rc == LM_OK; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        rc = st_parse_entry(&f->tensors[i++], path, e, data, data_size, err);
    }
    cJSON_Delete(root);
    if (rc) return rc;
    f->n_tensors = n;
    return st_check_all(f, data, err);
}

int lm_st_open(lm_st_file **out, const char *path, lm_err *err) {
    *out = NULL;
    lm_st_file *f = lm_calloc(1, sizeof *f);
    if (!f) return lm_nomem(err, sizeof *f, "safetensors file");
    int rc = lm_file_map(&f->file, path, err);
    if (rc) {
        lm_free(f);
        return rc;
    }
    rc = st_parse(f, err);
    if (rc) {
        lm_st_close(f);
        return rc;
    }
    *out = f;
    return LM_OK;
}

void lm_st_close(lm_st_file *f) {
    if (!f) return;
    lm_file_unmap(&f->file);
    lm_free(f->tensors);
    lm_free(f);
}

/* ------------------------------------------------------------------------ */
/* A checkpoint directory                                                    */
/* ------------------------------------------------------------------------ */

/* 1 if path is a regular file. */
static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Append file f to s->files (s->files has room: sized by the caller). */
static void set_add_file(lm_st_set *s, lm_st_file *f) { s->files[s->n_files++] = f; }

/* Build s->tensors: every tensor of every file, sorted by name; a name in two
 * files is corruption. */
static int set_index(lm_st_set *s, const char *where, lm_err *err) {
    int n = 0;
    for (int i = 0; i < s->n_files; i++) n += s->files[i]->n_tensors;
    s->tensors = lm_malloc((size_t)n * sizeof *s->tensors);
    if (!s->tensors) return lm_nomem(err, (size_t)n * sizeof *s->tensors, "safetensors index");
    int k = 0;
    for (int i = 0; i < s->n_files; i++)
        for (int j = 0; j < s->files[i]->n_tensors; j++) s->tensors[k++] = &s->files[i]->tensors[j];
    s->n_tensors = n;
    qsort(s->tensors, (size_t)n, sizeof *s->tensors, cmp_tensor_ptr_name);
    for (int i = 1; i < n; i++)
        if (!strcmp(s->tensors[i - 1]->name, s->tensors[i]->name))
            return LM_CORRUPT(err, "%s: tensor '%s' is in both %s and %s", where, s->tensors[i]->name,
                              s->tensors[i - 1]->path, s->tensors[i]->path);
    return LM_OK;
}

/* Open the shards named by the index file ipath (in directory dir). */
static int set_open_sharded(lm_st_set *s, const char *dir, const char *ipath, lm_err *err) {
    cJSON *root = NULL;
    int rc = lm_json_read_file(&root, ipath, err);
    if (rc) return rc;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const char **names = NULL; /* distinct shard names, pointers into root */
    int n_names = 0;
    char *spath = NULL;
    if (!cJSON_IsObject(wm)) {
        rc = LM_CORRUPT(err, "%s: no \"weight_map\" object", ipath);
        goto done;
    }
    int n_entries = cJSON_GetArraySize(wm);
    names = lm_malloc((size_t)n_entries * sizeof *names);
    if (!names) {
        rc = lm_nomem(err, (size_t)n_entries * sizeof *names, "shard names");
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            rc = LM_CORRUPT(err, "%s: weight_map entry for tensor '%s' is not a file name", ipath, e->string);
        else if (strchr(e->valuestring, '/'))
            rc = LM_CORRUPT(err, "%s: tensor '%s': shard '%s' is not a file name in the same directory", ipath,
                            e->string, e->valuestring);
        if (rc) goto done;
        int j = 0;
        while (j < n_names && strcmp(names[j], e->valuestring)) j++;
        if (j == n_names) names[n_names++] = e->valuestring;
    }
    s->files = lm_calloc((size_t)n_names, sizeof *s->files);
    size_t cap = strlen(dir) + 2;
    for (int j = 0; j < n_names; j++)
        if (strlen(names[j]) + strlen(dir) + 2 > cap) cap = strlen(names[j]) + strlen(dir) + 2;
    spath = lm_malloc(cap);
    if (!s->files || !spath) {
        rc = lm_nomem(err, cap + (size_t)n_names * sizeof *s->files, "shard table");
        goto done;
    }
    for (int j = 0; j < n_names; j++) {
        snprintf(spath, cap, "%s/%s", dir, names[j]);
        lm_st_file *f;
        rc = lm_st_open(&f, spath, err);
        if (rc == LM_EIO) {
            /* name the index too: the shard it lists cannot be read */
            lm_err e2 = *err;
            rc = lm_fail(err, LM_EIO, "%s: shard '%s' it lists cannot be read: %s", ipath, names[j], e2.msg);
        }
        if (rc) goto done;
        set_add_file(s, f);
    }
    /* every tensor the index lists is in the shard it names */
    for (const cJSON *e = wm->child; e; e = e->next) {
        int j = 0;
        while (strcmp(names[j], e->valuestring)) j++;
        const lm_st_file *f = s->files[j];
        if (!find_sorted(f->tensors, f->n_tensors, e->string)) {
            rc = LM_CORRUPT(err, "%s: tensor '%s' is listed in shard '%s' but that file does not have it", ipath,
                            e->string, names[j]);
            goto done;
        }
    }
    rc = set_index(s, ipath, err);
done:
    lm_free(spath);
    lm_free(names);
    cJSON_Delete(root);
    return rc;
}

int lm_st_set_open(lm_st_set **out, const char *dir, lm_err *err) {
    *out = NULL;
    size_t n = strlen(dir) + 64;
    char *single = lm_malloc(n), *index = lm_malloc(n);
    lm_st_set *s = lm_calloc(1, sizeof *s);
    int rc = LM_OK;
    if (!single || !index || !s) {
        rc = lm_nomem(err, 2 * n + sizeof *s, "safetensors set");
        goto done;
    }
    snprintf(single, n, "%s/model.safetensors", dir);
    snprintf(index, n, "%s/model.safetensors.index.json", dir);
    if (is_file(single)) { /* as transformers: the single file wins over an index */
        s->files = lm_calloc(1, sizeof *s->files);
        if (!s->files) {
            rc = lm_nomem(err, sizeof *s->files, "safetensors set");
            goto done;
        }
        lm_st_file *f;
        rc = lm_st_open(&f, single, err);
        if (rc) goto done;
        set_add_file(s, f);
        rc = set_index(s, single, err);
    } else if (is_file(index)) {
        rc = set_open_sharded(s, dir, index, err);
    } else {
        rc = lm_fail(err, LM_EIO, "%s: no model.safetensors or model.safetensors.index.json in this directory", dir);
    }
done:
    lm_free(single);
    lm_free(index);
    if (rc) {
        lm_st_set_close(s);
        return rc;
    }
    *out = s;
    return LM_OK;
}

void lm_st_set_close(lm_st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) lm_st_close(s->files[i]);
    lm_free(s->files);
    lm_free(s->tensors);
    lm_free(s);
}

const lm_tensor *lm_st_set_find(const lm_st_set *s, const char *name) {
    int lo = 0, hi = s->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(s->tensors[mid]->name, name);
        if (c == 0) return s->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}
