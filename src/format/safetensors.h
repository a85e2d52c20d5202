/*
 * safetensors.h -- reader for .safetensors files and sharded HF checkpoints.
 *
 * File layout: u64 little-endian header length N, then N bytes of JSON
 *   { "<name>": {"dtype": "F32"|"F16"|"BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
 *     "__metadata__": {...} }
 * then the data section; offsets are relative to its start (8 + N).
 * Checks: N within the file, JSON valid, dtype known, shape product times
 * element size == end - begin (no overflow), end within the file, tensors do
 * not overlap, names unique.
 * A sharded checkpoint has model.safetensors.index.json with
 *   {"weight_map": {"<tensor name>": "model-0000X-of-0000N.safetensors", ...}};
 * every shard it names is opened and every tensor it lists must be found in
 * the shard it names.
 */
#ifndef LM_SAFETENSORS_H
#define LM_SAFETENSORS_H

#include "base/base.h"

typedef struct lm_st_file {
    lm_file file;
    int n_tensors;
    lm_tensor *tensors;
} lm_st_file;

int lm_st_open(lm_st_file **out, const char *path, lm_err *err);
void lm_st_close(lm_st_file *f);

/* A checkpoint directory: one model.safetensors or the shards of the index. */
typedef struct lm_st_set {
    int n_files;
    lm_st_file **files;
    int n_tensors;       /* over all files */
    lm_tensor **tensors; /* pointers into the files' arrays, sorted by name */
} lm_st_set;

int lm_st_set_open(lm_st_set **out, const char *dir, lm_err *err);
void lm_st_set_close(lm_st_set *s);
const lm_tensor *lm_st_set_find(const lm_st_set *s, const char *name);

#endif
