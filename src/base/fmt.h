/*
 * fmt.h -- formatting for messages: the one way a shape is written.
 */
#ifndef LM_BASE_FMT_H
#define LM_BASE_FMT_H

#include <stddef.h>
#include <stdint.h>

/* shape[0..ndim) as "[a, b, c]" (PyTorch order, as stored) into buf of n >= 1
 * bytes, cut short (still NUL-terminated) when it does not fit; returns buf,
 * so that a call can be an argument of lm_fail. ndim 0 gives "[]". */
const char *lm_fmt_shape(char *buf, size_t n, const int64_t *shape, int ndim);

#endif
