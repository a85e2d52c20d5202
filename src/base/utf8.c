/*
 * utf8.c -- the UTF-8 validator (utf8.h). Every other check of UTF-8 in the
 * library and the CLI is a call to lm_utf8_char.
 */
#include "base/utf8.h"

#include <string.h>

/* By lead byte, as Table 3-7 of the Unicode standard: the sequence length
 * and the range of the second byte, which is where overlong forms (E0, F0),
 * surrogates (ED) and code points past U+10FFFF (F4) are excluded. Later
 * bytes are always 80..BF. */
size_t lm_utf8_char(const char *str, size_t n) {
    const uint8_t *s = (const uint8_t *)str;
    if (n == 0) return 0;
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0; /* E0 80..9F: overlong */
        if (c == 0xed) hi = 0x9f; /* ED A0..BF: surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90; /* F0 80..8F: overlong */
        if (c == 0xf4) hi = 0x8f; /* F4 90..BF: above U+10FFFF */
    } else {
        return 0; /* 80..C1 (continuation, overlong 2-byte), F5..FF */
    }
    if (n < 2 || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if (k >= n || (s[k] & 0xc0) != 0x80) return 0;
    return len;
}

size_t lm_utf8_check(const char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        if ((uint8_t)s[i] < 0x80) { /* ASCII runs without the call */
            i++;
            continue;
        }
        size_t l = lm_utf8_char(s + i, len - i);
        if (l == 0) return i;
        i += l;
    }
    return len;
}

int lm_utf8_len(const unsigned char *p) {
    return (int)lm_utf8_char((const char *)p, strnlen((const char *)p, 4));
}
