/*
 * meta.c -- run metadata: the "meta" object of a matrix JSON file, so that a
 * result says what made it (machine-readable, where the "note" is free text):
 *
 *   {"layermap_version": "0.1.0", "command": "attribute", "command_line": "...",
 *    "model": {"path": P, "format": "gguf"|"safetensors",
 *              "files": [{"name": "x.gguf", "header_bytes": N, "header_sha256": H}]},
 *    "data": {"path": P, "bytes": N, "sha256": H},
 *    "tokens": N, "predicted_tokens": N, "loss": X, "ppl": X,
 *    "seconds": X, "threads": N, "blas_kernel": "sgemm: OpenBLAS ...",
 *    "options": {...}}
 *
 * A model is identified by the sha256 of its header, not of its weights (a
 * 7B model is 14 GB): for GGUF the bytes before the data section (header,
 * metadata, tensor infos); for an HF directory the whole config.json and the
 * header of each *.safetensors file (its 8-byte length and its JSON). Both
 * name every tensor with its type, shape and offset. Data files are hashed
 * whole. diff adds "finetuned" shaped like "model".
 */
#include "cli.h"

#include "base/base.h"
#include "base/sha256.h"
#include "format/gguf.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* sha256 of the first `limit` bytes of path (all of it when limit is
 * UINT64_MAX); *bytes = how many were read. 0, or -1 after printing. */
static int hash_file(const char *path, uint64_t limit, char hex[65], uint64_t *bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return cli_errorf("%s: cannot read for its sha256: %s", path, strerror(errno)), -1;
    static unsigned char buf[1 << 16];
    lm_sha256 h;
    lm_sha256_init(&h);
    uint64_t n = 0;
    while (n < limit) {
        size_t want = limit - n < sizeof buf ? (size_t)(limit - n) : sizeof buf;
        size_t r = fread(buf, 1, want, f);
        if (r == 0) break;
        lm_sha256_update(&h, buf, r);
        n += r;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) return cli_errorf("%s: read error while hashing", path), -1;
    lm_sha256_hex(&h, hex);
    *bytes = n;
    return 0;
}

/* Add {"name", "header_bytes", "header_sha256"} (or "bytes"/"sha256" when
 * whole) for path's first limit bytes to the array. 0 or -1. */
static int add_file(cJSON *arr, const char *path, uint64_t limit, int whole) {
    char hex[65];
    uint64_t n;
    if (hash_file(path, limit, hex, &n)) return -1;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", lm_basename(path));
    cJSON_AddNumberToObject(o, whole ? "bytes" : "header_bytes", (double)n);
    cJSON_AddStringToObject(o, whole ? "sha256" : "header_sha256", hex);
    cJSON_AddItemToArray(arr, o);
    return 0;
}

/* Length of a safetensors header (8 + the u64 little-endian JSON length). */
static int st_header_len(const char *path, uint64_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char b[8];
    int ok = f && fread(b, 1, 8, f) == 8;
    if (f) fclose(f);
    if (!ok) return cli_errorf("%s: cannot read its header length", path), -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    *len = 8 + n;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The "model" object of m. NULL after printing. */
static cJSON *model_json(const lm_model *m) {
    cJSON *o = cJSON_CreateObject(), *files = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "path", m->path);
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddStringToObject(o, "format", m->format);
    cJSON_AddStringToObject(o, "arch", lm_arch_name(m->cfg.arch));
    cJSON_AddNumberToObject(o, "layers", m->cfg.n_layer);
    cJSON_AddItemToObject(o, "files", files);
    if (!strcmp(m->format, "gguf")) {
        lm_gguf *g = NULL;
        lm_err err = {0};
        if (lm_gguf_open(&g, m->path, &err)) {
            cli_error(&err);
            goto fail;
        }
        uint64_t off = g->data_offset;
        lm_gguf_close(g);
        if (add_file(files, m->path, off, 0)) goto fail;
        return o;
    }
    /* HF directory (or a path inside one): config.json and every *.safetensors */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", m->path);
    size_t dl = strlen(dir);
    if (dl > 12 && !strcmp(dir + dl - 12, ".safetensors")) {
        char *sl = strrchr(dir, '/');
        if (sl)
            *sl = 0;
        else
            snprintf(dir, sizeof dir, ".");
    }
    char path[4400];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (add_file(files, path, UINT64_MAX, 1)) goto fail;
    DIR *d = opendir(dir);
    if (!d) {
        cli_errorf("%s: cannot list: %s", dir, strerror(errno));
        goto fail;
    }
    char *names[256];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 256) {
        size_t l = strlen(e->d_name);
        if (l > 12 && !strcmp(e->d_name + l - 12, ".safetensors")) names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof *names, cmp_str);
    int bad = 0;
    for (int i = 0; i < nn; i++) {
        uint64_t len;
        snprintf(path, sizeof path, "%s/%s", dir, names[i] ? names[i] : "");
        if (!bad && (!names[i] || st_header_len(path, &len) || add_file(files, path, len, 0))) bad = 1;
        free(names[i]);
    }
    if (bad) goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* See cli.h. */
char *cli_meta_json(const cli_meta *mt) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "layermap_version", LM_VERSION);
    cJSON_AddStringToObject(o, "command", mt->command);
    cJSON_AddStringToObject(o, "command_line", cli_command_line());
    for (int k = 0; k < 2; k++) {
        const lm_model *m = k ? mt->model2 : mt->model;
        if (!m) continue;
        cJSON *mj = model_json(m);
        if (!mj) goto fail;
        cJSON_AddItemToObject(o, k ? "finetuned" : "model", mj);
    }
    if (mt->data) {
        char hex[65];
        uint64_t n;
        if (hash_file(mt->data, UINT64_MAX, hex, &n)) goto fail;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "path", mt->data);
        cJSON_AddNumberToObject(d, "bytes", (double)n);
        cJSON_AddStringToObject(d, "sha256", hex);
        cJSON_AddItemToObject(o, "data", d);
    }
    if (mt->tokens >= 0) cJSON_AddNumberToObject(o, "tokens", (double)mt->tokens);
    if (mt->predicted >= 0) cJSON_AddNumberToObject(o, "predicted_tokens", (double)mt->predicted);
    if (isfinite(mt->loss)) {
        cJSON_AddNumberToObject(o, "loss", mt->loss);
        cJSON_AddNumberToObject(o, "ppl", exp(mt->loss));
    }
    cJSON_AddNumberToObject(o, "seconds", mt->seconds);
    cJSON_AddNumberToObject(o, "threads", lm_num_threads(mt->threads));
    cJSON_AddStringToObject(o, "blas_kernel", lm_engine_kernel_name());
    if (mt->options) {
        cJSON *opt = cJSON_Parse(mt->options);
        if (!opt) {
            cli_errorf("internal: method options are not JSON: %s", mt->options);
            goto fail;
        }
        cJSON_AddItemToObject(o, "options", opt);
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt) cli_errorf("out of memory (run metadata)");
    return txt;
fail:
    cJSON_Delete(o);
    return NULL;
}
