/*
 * model_internal.h -- what other library files may know about an open model
 * beyond layermap.h (the struct lm_source itself stays private to model.c).
 */
#ifndef LM_MODEL_INTERNAL_H
#define LM_MODEL_INTERNAL_H

#include "gguf.h"
#include "internal.h"

#include <cJSON.h>

/* The GGUF file of a model opened from a .gguf (metadata, tokenizer arrays);
 * NULL for a safetensors (HF) model. Valid until lm_model_close. */
const lm_gguf *lm_model_gguf(const lm_model *m);

/* The directory of an HF model (config.json, tokenizer.json live there);
 * NULL for a GGUF model. Valid until lm_model_close. */
const char *lm_model_dir(const lm_model *m);

/* config.c: fill cfg from an HF config.json (+ tokenizer_config.json) in dir,
 * or from GGUF metadata. On error cfg is unspecified and err names the file
 * and the key. */
int lm_config_from_hf(lm_config *cfg, const char *dir, lm_err *err);
int lm_config_from_gguf(lm_config *cfg, const lm_gguf *g, lm_err *err);

/* config.c: parse len bytes of JSON text (need not be NUL-terminated) with
 * cJSON, whose allocations are routed through lm_malloc/lm_free so that fault
 * injection reaches them. Errors: LM_ENOMEM when an allocation failed,
 * LM_ECORRUPT "<path>: invalid JSON at byte N (near '...')" otherwise, where
 * N counts from base (the offset of the text in its file). Free *out with
 * cJSON_Delete. */
int lm_json_parse(cJSON **out, const char *text, size_t len, size_t base, const char *path, lm_err *err);
/* Read and parse a whole JSON file (lm_file_read_all + lm_json_parse). */
int lm_json_read_file(cJSON **out, const char *path, lm_err *err);

#endif
