/*
 * json.c -- the one way the library parses JSON: cJSON with its allocations
 * routed through lm_malloc (fault injection reaches them), and one error
 * format naming the file and the byte offset.
 */
#include "base/json.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>


static pthread_once_t json_once = PTHREAD_ONCE_INIT;
static _Thread_local size_t json_oom; /* size of an allocation inside cJSON that failed, 0 if none */

/* cJSON's allocator: lm_malloc, remembering failures so that a parse that
 * ran out of memory is reported as LM_ENOMEM and not as bad JSON. */
static void *json_malloc(size_t n) {
    void *p = lm_malloc(n);
    if (!p) json_oom = n ? n : 1;
    return p;
}

/* cJSON's deallocator. */
static void json_free(void *p) { lm_free(p); }

/* Route cJSON's allocations through lm_malloc (once per process). lm_malloc
 * is malloc underneath, so objects from before or after stay compatible. */
static void json_init(void) {
    cJSON_Hooks h = {json_malloc, json_free};
    cJSON_InitHooks(&h);
}

int lm_json_parse(cJSON **out, const char *text, size_t len, size_t base, const char *path, lm_err *err) {
    *out = NULL;
    pthread_once(&json_once, json_init);
    json_oom = 0;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (json_oom) {
        cJSON_Delete(j);
        return lm_nomem(err, json_oom, path);
    }
    size_t at = end && end >= text ? (size_t)(end - text) : 0;
    if (j) { /* only whitespace may follow the value (safetensors pads with spaces) */
        while (at < len && (text[at] == ' ' || text[at] == '\n' || text[at] == '\r' || text[at] == '\t')) at++;
        if (at == len) {
            *out = j;
            return LM_OK;
        }
        cJSON_Delete(j);
    }
    if (at > len) at = len;
    char near[24];
    size_t k = 0;
    for (size_t i = at; i < len && k + 1 < sizeof near; i++)
        near[k++] = (text[i] >= 0x20 && text[i] < 0x7f && text[i] != '\'') ? text[i] : '?';
    near[k] = 0;
    /* the line too, when the text is the whole file (base 0) */
    char where[48] = "";
    if (base == 0) {
        int line = 1;
        for (size_t i = 0; i < at && i < len; i++) line += text[i] == '\n';
        snprintf(where, sizeof where, "line %d, ", line);
    }
    if (j)
        return LM_CORRUPT(err, "%s: unexpected bytes after the JSON value at byte %zu (%snear '%s')", path, base + at,
                          where, near);
    return LM_CORRUPT(err, "%s: invalid JSON at byte %zu (%snear '%s')", path, base + at, where, near);
}

int lm_json_read_file(cJSON **out, const char *path, lm_err *err) {
    *out = NULL;
    char *buf;
    size_t len;
    int rc = lm_file_read_all(path, &buf, &len, err);
    if (rc) return rc;
    rc = lm_json_parse(out, buf, len, 0, path, err);
    lm_free(buf);
    return rc;
}
