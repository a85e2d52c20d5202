/*
 * misc.h -- small things with no better home: path names, the thread count,
 * the clock, and IEEE half precision.
 */
#ifndef LM_BASE_MISC_H
#define LM_BASE_MISC_H

#include <stdbool.h>
#include <stdint.h>

/* The last component of path, a pointer into it ("a/b" and "a/b/" give "b"...). */
const char *lm_basename(const char *path);
bool lm_ends_with(const char *s, const char *suffix);
int lm_num_threads(int requested); /* requested > 0 ? requested : cores */
double lm_now(void);               /* monotonic seconds */

/* IEEE half -> float, every input exact (subnormals, Inf, NaN): the scalar
 * reference for the vectorized converter of model/dequant.c. */
float lm_f16_to_f32(uint16_t h);

#endif
