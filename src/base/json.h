/*
 * json.h -- JSON parsing for every reader of the library (config.json,
 * tokenizer.json, safetensors headers and index, JSONL data, matrices).
 */
#ifndef LM_BASE_JSON_H
#define LM_BASE_JSON_H

#include "base/base.h"

#include <cJSON.h>

/* Parse len bytes of JSON text (need not be NUL-terminated) with
 * cJSON, whose allocations are routed through lm_malloc/lm_free so that fault
 * injection reaches them. Errors: LM_ENOMEM when an allocation failed,
 * LM_ECORRUPT "<path>: invalid JSON at byte N (near '...')" otherwise, where
 * N counts from base (the offset of the text in its file). Free *out with
 * cJSON_Delete. */
int lm_json_parse(cJSON **out, const char *text, size_t len, size_t base, const char *path, lm_err *err);
/* Read and parse a whole JSON file (lm_file_read_all + lm_json_parse). */
int lm_json_read_file(cJSON **out, const char *path, lm_err *err);

#endif
