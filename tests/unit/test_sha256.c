/* SHA-256 against the FIPS 180-4 examples and block-boundary lengths. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/sha256.h"

static void test_known_vectors(void **state)
{
    (void)state;
    char hex[AD_SHA256_HEX_LEN + 1];
    ad_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ad_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ad_sha256_hex(two_blocks, strlen(two_blocks), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_million_a_in_pieces(void **state)
{
    (void)state;
    struct ad_sha256 ctx;
    unsigned char digest[32];
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    ad_sha256_init(&ctx);
    /* Uneven pieces cross the 64-byte blocks at every offset. */
    size_t left = 1000000, step = 1;
    while (left > 0) {
        size_t n = step < left ? step : left;
        ad_sha256_update(&ctx, chunk, n);
        left -= n;
        step = step % 997 + 1;
    }
    ad_sha256_final(&ctx, digest);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_lengths_around_padding(void **state)
{
    /* Lengths 55, 56 and 64 take the padding paths that differ; compare with sha256sum. */
    (void)state;
    for (size_t len = 50; len <= 70; len++) {
        char data[80], cmd[256], want[80] = "", hex[65];
        memset(data, 'x', len);
        ad_sha256_hex(data, len, hex);
        snprintf(cmd, sizeof cmd, "head -c %zu /dev/zero | tr '\\0' x | sha256sum", len);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        assert_non_null(fgets(want, sizeof want, p));
        pclose(p);
        want[64] = '\0';
        assert_string_equal(hex, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_million_a_in_pieces),
        cmocka_unit_test(test_lengths_around_padding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
