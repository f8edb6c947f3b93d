/* Unit tests for src/filter/request_id.c: which received ids are kept, and the UUIDs made for the others. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/request_id.h"

static ptc_iovec_t S(const char *s)
{
    return ptc_iov(s, strlen(s));
}

static void test_valid(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "a",
        "0",
        "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "F47AC10B-58CC-4372-A567-0E02B2C3D479",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",       /* ULID */
        "4bf92f3577b34da6a3ce929d0e0e4736", /* hex */
        "dGhpcyBpcyBhbiBpZA==",             /* base64 */
        "a-_b.c",                           /* base64url */
        "host-1:4242/17",
        "req+1=2",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/+=",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(ok); i++) {
        if (!ptc_request_id_valid(S(ok[i]), 128))
            print_error("\"%s\" refused\n", ok[i]);
        assert_true(ptc_request_id_valid(S(ok[i]), 128));
    }
}

static void test_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "a b",
        " a",
        "a ",
        "a\tb",
        "a\r\nx-evil: 1",
        "a\n",
        "\"a\"",
        "'a'",
        "a,b",
        "a;b",
        "a\\b",
        "a%20b",
        "a<b>",
        "a(b)",
        "a[b]",
        "a{b}",
        "a@b",
        "a#b",
        "a?b",
        "a&b",
        "a!b",
        "a*b",
        "a$b",
        "a^b",
        "a|b",
        "a~b",
        "a`b",
        "\x7f",
        "\x01",
        "\xc3\xa9t\xc3\xa9",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        if (ptc_request_id_valid(S(bad[i]), 128))
            print_error("\"%s\" accepted\n", bad[i]);
        assert_false(ptc_request_id_valid(S(bad[i]), 128));
    }
    /* every byte outside the set */
    for (int c = 0; c < 256; c++) {
        char s[3] = {'a', (char)c, 'b'};
        bool in_set = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-_.:/+=", c) != NULL;
        assert_int_equal(ptc_request_id_valid(ptc_iov(s, 3), 128), in_set && c != 0);
    }
    assert_false(ptc_request_id_valid(ptc_iov(NULL, 0), 128));
}

static void test_length_limit(void **state)
{
    (void)state;
    char buf[300];
    memset(buf, 'x', sizeof(buf));
    assert_true(ptc_request_id_valid(ptc_iov(buf, 1), 1));
    assert_false(ptc_request_id_valid(ptc_iov(buf, 2), 1));
    assert_true(ptc_request_id_valid(ptc_iov(buf, 128), 128));
    assert_false(ptc_request_id_valid(ptc_iov(buf, 129), 128));
    assert_true(ptc_request_id_valid(ptc_iov(buf, 300), 300));
    assert_false(ptc_request_id_valid(ptc_iov(buf, 1), 0)); /* nothing fits in 0 */
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 8-4-4-4-12 lower-case hex, version nibble 4, variant 10xx, NUL at 36, and a valid request id itself. */
static void assert_uuid_v4(const char *u)
{
    assert_int_equal(strlen(u), 36);
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(u[i], '-');
        else
            assert_true(hexval(u[i]) >= 0);
    }
    assert_int_equal(u[14], '4');
    assert_int_equal(hexval(u[19]) & 0xc, 0x8);
    assert_true(ptc_request_id_valid(S(u), 36));
}

static void test_generate_format(void **state)
{
    (void)state;
    char out[PTC_REQUEST_ID_UUID_LEN + 2];
    memset(out, 'Z', sizeof(out));
    assert_int_equal(ptc_request_id_generate(out), 36);
    assert_int_equal(out[36], '\0');
    assert_int_equal(out[37], 'Z'); /* nothing past the NUL */
    assert_uuid_v4(out);
}

#define DRAWS 100000

static int cmp(const void *a, const void *b)
{
    return memcmp(a, b, PTC_REQUEST_ID_UUID_LEN + 1);
}

/* 100k draws: all well-formed, all different, and the 122 random bits each set about half the time. */
static void test_generate_unique(void **state)
{
    (void)state;
    char(*ids)[PTC_REQUEST_ID_UUID_LEN + 1] = malloc(DRAWS * sizeof(*ids));
    assert_non_null(ids);
    size_t ones[32][4] = {{0}}; /* per hex digit position (without dashes), per bit */
    size_t variant_seen[4] = {0};
    for (size_t i = 0; i < DRAWS; i++) {
        assert_int_equal(ptc_request_id_generate(ids[i]), 36);
        assert_uuid_v4(ids[i]);
        for (size_t j = 0, d = 0; j < 36; j++) {
            if (ids[i][j] == '-')
                continue;
            int v = hexval(ids[i][j]);
            for (int b = 0; b < 4; b++)
                ones[d][b] += (size_t)(v >> b) & 1;
            d++;
        }
        variant_seen[hexval(ids[i][19]) & 3]++;
    }
    qsort(ids, DRAWS, sizeof(*ids), cmp);
    for (size_t i = 1; i < DRAWS; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    for (size_t d = 0; d < 32; d++) {
        for (int b = 0; b < 4; b++) {
            if (d == 12 || (d == 16 && b >= 2))
                continue;                                                    /* the version nibble and the variant bits are fixed */
            assert_in_range(ones[d][b], DRAWS / 2 - 2000, DRAWS / 2 + 2000); /* sd 158 */
        }
    }
    assert_int_equal(ones[12][2], DRAWS); /* 0100 */
    assert_int_equal(ones[12][0] + ones[12][1] + ones[12][3], 0);
    assert_int_equal(ones[16][3], DRAWS); /* 10xx */
    assert_int_equal(ones[16][2], 0);
    for (int v = 0; v < 4; v++) /* the two random bits after the variant take all four values */
        assert_in_range(variant_seen[v], DRAWS / 4 - 2000, DRAWS / 4 + 2000);
    free(ids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_invalid),         cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_generate_format), cmocka_unit_test(test_generate_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
