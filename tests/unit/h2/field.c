/*
 * Unit tests for include/portico/h2field.h: the field checks the server adapter makes itself (nghttp2's HTTP
 * messaging is off) give nghttp2's own answers (nghttp2_check_header_name, nghttp2_check_header_value_rfc9113,
 * nghttp2_check_path, nghttp2_check_method, nghttp2_check_authority) for every byte value at every position of names and values of 1 to 24 bytes (the eight-byte
 * words, their overlapping last word and the byte-wise tails), and for strings of random bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>

#include "portico/h2field.h"

/* Each check against nghttp2's on `s` (exactly `len` bytes: a heap copy, so that ASan sees any read past it). */
static void compare(const uint8_t *s, size_t len)
{
    uint8_t *p = malloc(len != 0 ? len : 1);
    assert_non_null(p);
    memcpy(p, s, len);
    if (ptc_h2_name_ok(p, len) != (nghttp2_check_header_name(p, len) != 0 && (len == 0 || p[0] != ':')))
        fail_msg("name check differs on %zu bytes, first %02x", len, len ? p[0] : 0);
    if (ptc_h2_value_ok(p, len) != (nghttp2_check_header_value_rfc9113(p, len) != 0))
        fail_msg("value check differs on %zu bytes", len);
    if (ptc_h2_visible(p, len, 0x21) != (nghttp2_check_path(p, len) != 0))
        fail_msg("path check differs on %zu bytes", len);
    if ((len != 0 && ptc_h2_chars_ok(p, len, PTC_H2_METHOD)) != (nghttp2_check_method(p, len) != 0))
        fail_msg("method check differs on %zu bytes", len);
    if (ptc_h2_chars_ok(p, len, PTC_H2_AUTHORITY) != (nghttp2_check_authority(p, len) != 0))
        fail_msg("authority check differs on %zu bytes", len);
    if (len >= 4 && len <= 20 && ptc_h2_is(p, len, (const char *)s, len) != true)
        fail_msg("a string is not itself");
    free(p);
}

static void test_every_byte_at_every_position(void **state)
{
    (void)state;
    static const char *bases[] = {"content-type-and-more-xx", "x1y2z3-abc_def.ghi~jk!mn", "/portico.bench.Echo/Unar"};
    uint8_t s[24];
    for (size_t b = 0; b < sizeof(bases) / sizeof(bases[0]); b++)
        for (size_t len = 1; len <= sizeof(s); len++)
            for (size_t pos = 0; pos < len; pos++)
                for (unsigned c = 0; c < 256; c++) {
                    memcpy(s, bases[b], len);
                    s[pos] = (uint8_t)c;
                    compare(s, len);
                }
    compare(s, 0);
}

static void test_random_strings(void **state)
{
    (void)state;
    uint8_t s[40];
    srand(15);
    for (int n = 0; n < 200000; n++) {
        size_t len = (size_t)rand() % sizeof(s);
        int mode = rand() % 3; /* any byte, mostly printable, mostly lower case */
        for (size_t i = 0; i < len; i++) {
            int r = rand();
            s[i] = (uint8_t)(mode == 0 || r % 16 == 0 ? r >> 8 : mode == 1 ? 0x20 + (r >> 8) % 0x60 : 'a' + (r >> 8) % 26);
        }
        compare(s, len);
    }
}

static void test_known_answers(void **state)
{
    (void)state;
    assert_true(ptc_h2_name_ok((const uint8_t *)"content-type", 12));
    assert_false(ptc_h2_name_ok((const uint8_t *)"Content-Type", 12)); /* upper case */
    assert_false(ptc_h2_name_ok((const uint8_t *)"x a", 3));
    assert_false(ptc_h2_name_ok((const uint8_t *)"", 0));
    assert_true(ptc_h2_value_ok((const uint8_t *)"a\tb", 3));                /* HTAB inside */
    assert_false(ptc_h2_value_ok((const uint8_t *)"application/grpc ", 17)); /* trailing SP */
    assert_false(ptc_h2_value_ok((const uint8_t *)"application/g\x7fpc", 16));
    assert_true(ptc_h2_value_ok((const uint8_t *)"caf\xc3\xa9 au lait", 13)); /* obs-text */
    assert_false(ptc_h2_visible((const uint8_t *)"/a b/cdefghij", 13, 0x21));
    assert_true(PTC_H2_IS((const uint8_t *)"content-length", 14, "content-length"));
    assert_false(PTC_H2_IS((const uint8_t *)"content-lengtX", 14, "content-length"));
    assert_false(PTC_H2_IS((const uint8_t *)"Xontent-length", 14, "content-length"));
    assert_false(PTC_H2_IS((const uint8_t *)"content-lengt", 13, "content-length"));
    assert_true(PTC_H2_IS((const uint8_t *)":path", 5, ":path"));
    assert_false(PTC_H2_IS((const uint8_t *)":pbth", 5, ":path"));
    assert_true(PTC_H2_IS((const uint8_t *)"te", 2, "te"));
    assert_false(PTC_H2_IS((const uint8_t *)"transfer-encodinG", 17, "transfer-encoding"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_every_byte_at_every_position),
        cmocka_unit_test(test_random_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
