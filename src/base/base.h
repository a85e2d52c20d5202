/*
 * base.h -- the base layer in one include: what every other layer of the
 * library uses. Each part has its own header and source file:
 *   base/error.h   lm_fail, LM_CORRUPT, lm_nomem: one-line messages with a code
 *   base/alloc.h   lm_malloc & co. with fault injection; checked size arithmetic
 *   base/file.h    mapped and whole-file reading, page release
 *   base/atomic.h  output files written atomically
 *   base/utf8.h    the UTF-8 validator, decoding and encoding
 *   base/fmt.h     the shape formatter of messages
 *   base/misc.h    basename, thread count, clock, half precision
 *   base/share.h   the greedy share of weighted items among parts
 *   base/json.h    JSON parsing (cJSON through lm_malloc); not included here
 */
#ifndef LM_BASE_H
#define LM_BASE_H

#include "layermap.h"

#include "base/alloc.h"
#include "base/atomic.h"
#include "base/error.h"
#include "base/file.h"
#include "base/fmt.h"
#include "base/misc.h"
#include "base/share.h"
#include "base/utf8.h"

/* what files including base.h have relied on */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>


#endif /* LM_BASE_H */
