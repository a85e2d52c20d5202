/*
 * model.h -- what other library files may know about an open model
 * beyond layermap.h (the struct lm_source itself stays private to model.c).
 */
#ifndef LM_MODEL_INTERNAL_H
#define LM_MODEL_INTERNAL_H

#include "format/gguf.h"
#include "base/base.h"

#include "base/json.h"

/* The GGUF file of a model opened from a .gguf (metadata, tokenizer arrays);
 * NULL for a safetensors (HF) model. Valid until lm_model_close. */
const lm_gguf *lm_model_gguf(const lm_model *m);

/* The directory of an HF model (config.json, tokenizer.json live there);
 * NULL for a GGUF model. Valid until lm_model_close. */
const char *lm_model_dir(const lm_model *m);

/* llama.cpp's name of module mod's weight in layer l: the name in the file
 * for a GGUF model, "blk.<l>.attn_q.weight" etc. for an HF model. Returns
 * buf (truncated to size). */
const char *lm_model_gguf_name(const lm_model *m, int l, int mod, char *buf, size_t size);

/* The identity of the model's numbers, for attribution checkpoints: sha256
 * (64 hex digits) over its headers (GGUF: every byte before the data section,
 * i.e. metadata, tensor names, types, shapes and offsets; HF: config.json and
 * each safetensors file's header) and over every tensor's bytes, whole up to
 * 64 KiB, else 16 blocks of 4 KiB spread evenly from the first byte to the
 * last: a fine-tune with the header of its base differs, and reading it costs
 * at most 64 KiB per tensor. *bytes (may be NULL) = the bytes of every tensor.
 * Errors: config.json unreadable (LM_EIO). */
int lm_model_sha256(const lm_model *m, char hex[65], int64_t *bytes, lm_err *err);

/* config.c: fill cfg from an HF config.json (+ tokenizer_config.json) in dir,
 * or from GGUF metadata. On error cfg is unspecified and err names the file
 * and the key. */
int lm_config_from_hf(lm_config *cfg, const char *dir, lm_err *err);
int lm_config_from_gguf(lm_config *cfg, const lm_gguf *g, lm_err *err);

#endif
