/*
 * sha256.h -- SHA-256 (FIPS 180-4), for the run metadata that identifies the
 * model and data a matrix came from.
 */
#ifndef LM_SHA256_H
#define LM_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct lm_sha256 {
    uint32_t h[8];
    uint64_t len;      /* bytes so far */
    uint8_t buf[64];   /* a partial block */
    size_t n;          /* bytes in buf */
} lm_sha256;

void lm_sha256_init(lm_sha256 *s);
void lm_sha256_update(lm_sha256 *s, const void *data, size_t len);
/* Finish: 64 lowercase hex digits and a NUL into hex[65]. */
void lm_sha256_hex(lm_sha256 *s, char hex[65]);

#endif
