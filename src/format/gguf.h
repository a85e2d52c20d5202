/*
 * gguf.h -- reader for GGUF v2/v3 files (llama.cpp's model format).
 *
 * File layout (little-endian), as parsed by gguf.c, in stages over a
 * bounded cursor:
 *   1. magic "GGUF" (4 bytes), version u32 (2 or 3)
 *   2. n_tensors u64, n_kv u64
 *   3. n_kv key-values: key (string), value type u32, value
 *        string = u64 length + bytes (no NUL)
 *        array  = element type u32 + u64 count + elements (no nested arrays)
 *   4. n_tensors tensor infos: name (string), n_dims u32 (1..4),
 *        ne[n_dims] u64 (ne[0] is the contiguous axis), ggml type u32,
 *        offset u64 (relative to the data section, multiple of alignment)
 *   5. padding to `general.alignment` (default 32), then the data section.
 * Checks: every read inside the file, counts checked against the bytes left,
 * no multiply overflow, keys and tensor names unique, alignment a power of
 * two, ne[0] a multiple of the block size, each tensor inside the data
 * section and no two overlapping.
 */
#ifndef LM_GGUF_H
#define LM_GGUF_H

#include "base/base.h"

enum {
    LM_GGUF_UINT8 = 0, LM_GGUF_INT8 = 1, LM_GGUF_UINT16 = 2, LM_GGUF_INT16 = 3,
    LM_GGUF_UINT32 = 4, LM_GGUF_INT32 = 5, LM_GGUF_FLOAT32 = 6, LM_GGUF_BOOL = 7,
    LM_GGUF_STRING = 8, LM_GGUF_ARRAY = 9, LM_GGUF_UINT64 = 10, LM_GGUF_INT64 = 11,
    LM_GGUF_FLOAT64 = 12
};

typedef struct lm_gguf_str {
    uint64_t len;
    const char *ptr; /* into the mapping, not NUL-terminated */
} lm_gguf_str;

typedef struct lm_gguf_kv {
    lm_gguf_str key;
    uint32_t type;        /* LM_GGUF_* */
    uint32_t arr_type;    /* element type when type == LM_GGUF_ARRAY */
    uint64_t n;           /* array length (1 for scalars) */
    const uint8_t *data;  /* scalar value / first array element, in the mapping */
    const uint8_t **strs; /* for string arrays: n pointers to each element's u64 length prefix (owned) */
} lm_gguf_kv;

typedef struct lm_gguf {
    lm_file file;
    uint32_t version;
    uint64_t n_kv;
    lm_gguf_kv *kv;
    uint64_t n_tensors;
    lm_tensor *tensors;   /* shapes converted to PyTorch order (reversed ne) */
    uint64_t alignment;
    uint64_t data_offset; /* start of the data section in the file */
    /* private to gguf.c: open-addressing hash indexes of key and tensor
     * names (slot = entry index + 1, 0 = empty; mask = slots - 1) */
    uint64_t *kv_slots, kv_mask;
    uint64_t *t_slots, t_mask;
} lm_gguf;

/* Open and validate; on error *out is NULL and err names the file and the problem. */
int lm_gguf_open(lm_gguf **out, const char *path, lm_err *err);
void lm_gguf_close(lm_gguf *g);

const lm_gguf_kv *lm_gguf_find(const lm_gguf *g, const char *key);
/* Typed getters: LM_OK if found and convertible, -1 if the key is missing,
 * LM_ECORRUPT (with err filled) if present with an incompatible type. */
int lm_gguf_get_int(const lm_gguf *g, const char *key, int64_t *out, lm_err *err);   /* any integer type or bool */
int lm_gguf_get_float(const lm_gguf *g, const char *key, double *out, lm_err *err);  /* float32/64 or integer */
int lm_gguf_get_str(const lm_gguf *g, const char *key, lm_gguf_str *out, lm_err *err);
/* Copy a GGUF string into buf as a NUL-terminated C string (truncating). */
void lm_gguf_str_copy(lm_gguf_str s, char *buf, size_t size);
/* Array element access (no bounds beyond i < kv->n are needed: validated at open). */
lm_gguf_str lm_gguf_arr_str(const lm_gguf_kv *kv, uint64_t i);
double lm_gguf_arr_float(const lm_gguf_kv *kv, uint64_t i); /* numeric element as double */
int64_t lm_gguf_arr_int(const lm_gguf_kv *kv, uint64_t i);

const lm_tensor *lm_gguf_find_tensor(const lm_gguf *g, const char *name);

/* ggml type id -> lm_dtype; -1 if layermap does not support it. */
int lm_gguf_dtype_from_ggml(uint32_t ggml_type);
const char *lm_gguf_ggml_type_name(uint32_t ggml_type); /* for messages; "type 17" style fallback not needed */

#endif
