/* engine.c -- forward/backward engine (being written). */
#include "internal.h"
const char *lm_engine_kernel_name(void) { return "pending"; }
