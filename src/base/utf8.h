/*
 * utf8.h -- the library's one UTF-8 validator, and the decoding and encoding
 * of text it has validated.
 *
 * Valid means the Unicode standard's well-formed UTF-8 (Table 3-7): no
 * overlong forms (C0, C1, E0 80..9F, F0 80..8F), no surrogates (ED A0..BF,
 * U+D800..U+DFFF), nothing above U+10FFFF (F4 90.., F5..FF), every
 * continuation byte 80..BF, no sequence cut short.
 */
#ifndef LM_BASE_UTF8_H
#define LM_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1-4) of the valid character at the start of s[0..n), 0 when s does
 * not start one (n == 0 included). Reads at most min(n, 4) bytes. */
size_t lm_utf8_char(const char *s, size_t n);
/* Offset of the first byte that is not part of a valid character, or len
 * when all of s[0..len) is valid. */
size_t lm_utf8_check(const char *s, size_t len);
/* lm_utf8_char for a NUL-terminated string at p (p[0] != 0): never reads
 * past the NUL, which ends every sequence. */
int lm_utf8_len(const unsigned char *p);

/* Length of the character whose lead byte is c, in text already validated. */
static inline size_t lm_utf8_lead_len(uint8_t c) {
    return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* Decode the character at s (validated text); *n = its length. */
static inline uint32_t lm_utf8_decode(const char *str, size_t *n) {
    const uint8_t *s = (const uint8_t *)str;
    size_t l = lm_utf8_lead_len(s[0]);
    uint32_t cp = l == 1 ? s[0] : l == 2 ? s[0] & 0x1f : l == 3 ? s[0] & 0x0f : s[0] & 0x07;
    for (size_t k = 1; k < l; k++) cp = cp << 6 | (s[k] & 0x3f);
    *n = l;
    return cp;
}

/* Encode cp (at most U+10FFFF, not a surrogate) into out, which has room for
 * 4 bytes; returns its length. */
static inline size_t lm_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

#endif
