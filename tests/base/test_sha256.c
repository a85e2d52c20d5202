/*
 * test_sha256.c -- SHA-256 against the FIPS 180-4 / NIST example digests,
 * fed whole and in uneven pieces (every split point across block edges).
 */
#include "test.h"

#include "base/sha256.h"

static void digest(const char *s, size_t n, size_t piece, char hex[65]) {
    lm_sha256 h;
    lm_sha256_init(&h);
    for (size_t i = 0; i < n; i += piece) lm_sha256_update(&h, s + i, n - i < piece ? n - i : piece);
    lm_sha256_hex(&h, hex);
}

int main(void) {
    static const struct { const char *in, *want; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        for (size_t piece = 1; piece <= 130; piece++) {
            digest(v[i].in, strlen(v[i].in), piece, hex);
            CHECK(!strcmp(hex, v[i].want), "sha256 #%zu in pieces of %zu: %s", i, piece, hex);
        }
    /* one million 'a' (FIPS 180-2 example C.3) */
    static char a[1000000];
    memset(a, 'a', sizeof a);
    digest(a, sizeof a, 4096, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "sha256 1M a: %s", hex);
    return TEST_END();
}
