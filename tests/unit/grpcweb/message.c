/* Unit tests for src/grpcweb/message.c: grpc-message percent-encoding and the gRPC status tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "portico/codec.h"

#define CANARY 'Z'

/* ---- helpers ---- */

/* Encodes src[0..len) with the given cap into a canary-filled buffer; checks nothing is written past cap. */
static size_t encode_capped(const char *src, size_t len, size_t cap, char *out, size_t out_size)
{
    assert_true(cap + 8 <= out_size);
    memset(out, CANARY, out_size);
    size_t n = ptc_grpc_message_encode(out, cap, src, len);
    assert_true(n <= cap);
    for (size_t i = n; i < out_size; i++)
        assert_int_equal(out[i], CANARY);
    return n;
}

static void assert_encodes(const char *src, size_t len, const char *want)
{
    char out[1024];
    size_t n = encode_capped(src, len, sizeof(out) - 8, out, sizeof(out));
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
}

#define ASSERT_ENCODES(src, want) assert_encodes((src), sizeof(src) - 1, (want))

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes, asserting only uppercase %XX escapes and unreserved bytes appear. */
static size_t percent_decode(const char *src, size_t len, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)src[i];
        assert_true(c >= 0x20 && c <= 0x7e);
        if (c == '%') {
            assert_true(i + 2 < len);
            int hi = hex_value(src[i + 1]), lo = hex_value(src[i + 2]);
            assert_true(hi >= 0 && lo >= 0);
            dst[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = (char)c;
        }
    }
    return o;
}

/* ---- percent-encoding ---- */

static void test_printable_ascii_passes(void **state)
{
    (void)state;
    char src[95], want[97];
    size_t n = 0;
    for (int c = 0x20; c <= 0x7e; c++)
        if (c != '%')
            src[n++] = (char)c;
    assert_int_equal(n, 94);
    memcpy(want, src, n);
    want[n] = '\0';
    assert_encodes(src, n, want);

    ASSERT_ENCODES("hello world", "hello world");
    ASSERT_ENCODES("Method not found: /pkg.Svc/Do", "Method not found: /pkg.Svc/Do");
    ASSERT_ENCODES("a+b=c&d?e#f\"g'h<i>\\~", "a+b=c&d?e#f\"g'h<i>\\~");
}

static void test_percent_is_escaped(void **state)
{
    (void)state;
    ASSERT_ENCODES("%", "%25");
    ASSERT_ENCODES("100%", "100%25");
    ASSERT_ENCODES("%%", "%25%25");
    /* already-escaped input is escaped again: the encoder does not guess */
    ASSERT_ENCODES("%20", "%2520");
}

static void test_control_chars_escaped(void **state)
{
    (void)state;
    ASSERT_ENCODES("\t", "%09");
    ASSERT_ENCODES("line1\r\nline2", "line1%0D%0Aline2");
    ASSERT_ENCODES("\x7f", "%7F");
    ASSERT_ENCODES("\x1f", "%1F");
    ASSERT_ENCODES("a\0b", "a%00b");
    ASSERT_ENCODES("\x01\x02\x1b[0m", "%01%02%1B[0m");
}

static void test_utf8_bytes_escaped(void **state)
{
    (void)state;
    ASSERT_ENCODES("h\xc3\xa9llo", "h%C3%A9llo");                     /* héllo */
    ASSERT_ENCODES("\xe2\x82\xac", "%E2%82%AC");                      /* € */
    ASSERT_ENCODES("\xf0\x9f\x98\x80!", "%F0%9F%98%80!");             /* 😀 */
    ASSERT_ENCODES("\xff\xfe\x80", "%FF%FE%80");                      /* not UTF-8 at all: bytes all the same */
    ASSERT_ENCODES("\xe6\x97\xa5\xe6\x9c\xac", "%E6%97%A5%E6%9C%AC"); /* 日本 */
}

static void test_every_byte(void **state)
{
    (void)state;
    for (unsigned c = 0; c < 256; c++) {
        char src = (char)c, out[16];
        size_t n = encode_capped(&src, 1, 3, out, sizeof(out));
        if (c >= 0x20 && c <= 0x7e && c != '%') {
            assert_int_equal(n, 1);
            assert_int_equal(out[0], (char)c);
        } else {
            char want[8];
            snprintf(want, sizeof(want), "%%%02X", c);
            assert_int_equal(n, 3);
            assert_memory_equal(out, want, 3);
        }
    }
    /* all 256 bytes together decode back to themselves */
    char all[256], enc[1024], back[256];
    for (unsigned c = 0; c < 256; c++)
        all[c] = (char)c;
    size_t n = encode_capped(all, sizeof(all), 1000, enc, sizeof(enc));
    assert_int_equal(n, 94 + 3 * 162);
    assert_int_equal(percent_decode(enc, n, back), 256);
    assert_memory_equal(back, all, 256);
}

static void test_empty_input(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(encode_capped("", 0, 8, out, sizeof(out)), 0);
    assert_int_equal(encode_capped("abc", 0, 8, out, sizeof(out)), 0);
    assert_int_equal(encode_capped("", 0, 0, out, sizeof(out)), 0);
    /* an absent message and a zero cap touch no memory */
    assert_int_equal(ptc_grpc_message_encode(out, sizeof(out), NULL, 0), 0);
    assert_int_equal(ptc_grpc_message_encode(NULL, 0, NULL, 0), 0);
    assert_int_equal(ptc_grpc_message_encode(NULL, 0, "abc%", 4), 0);
}

static void test_cap_truncates_without_splitting_escapes(void **state)
{
    (void)state;
    static const char src[] = "h\xc3\xa9llo %x\n";
    static const char full[] = "h%C3%A9llo %25x%0A";
    /* for every cap, the output is the longest prefix of whole units (1 char or a 3-char escape) */
    for (size_t cap = 0; cap <= sizeof(full) + 2; cap++) {
        char out[64];
        size_t n = encode_capped(src, sizeof(src) - 1, cap, out, sizeof(out));
        size_t want = 0;
        for (size_t i = 0; i < sizeof(full) - 1;) {
            size_t unit = full[i] == '%' ? 3 : 1;
            if (want + unit > cap)
                break;
            want += unit;
            i += unit;
        }
        assert_int_equal(n, want);
        assert_memory_equal(out, full, n);
        /* never a dangling '%' or a half escape at the end */
        if (n >= 1)
            assert_true(out[n - 1] != '%');
        if (n >= 2)
            assert_true(out[n - 2] != '%');
    }

    char out[16];
    assert_int_equal(encode_capped("h\xc3\xa9", 3, 1, out, sizeof(out)), 1);
    assert_int_equal(encode_capped("h\xc3\xa9", 3, 3, out, sizeof(out)), 1);
    assert_int_equal(encode_capped("h\xc3\xa9", 3, 4, out, sizeof(out)), 4);
    assert_memory_equal(out, "h%C3", 4);
    assert_int_equal(encode_capped("h\xc3\xa9", 3, 7, out, sizeof(out)), 7);
    assert_memory_equal(out, "h%C3%A9", 7);
    /* truncation stops at the first unit that does not fit: later short units are not squeezed in */
    assert_int_equal(encode_capped("a%b", 3, 3, out, sizeof(out)), 1);
    assert_memory_equal(out, "a", 1);
    assert_int_equal(encode_capped("%", 1, 2, out, sizeof(out)), 0);
    assert_int_equal(encode_capped("abc", 3, 0, out, sizeof(out)), 0);
    assert_int_equal(encode_capped("abc", 3, 2, out, sizeof(out)), 2);
    assert_memory_equal(out, "ab", 2);
}

static void test_long_message_round_trip(void **state)
{
    (void)state;
    char src[512], enc[1600], back[512];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof(src); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        src[i] = (char)(x >> 24);
    }
    size_t n = encode_capped(src, sizeof(src), 3 * sizeof(src), enc, sizeof(enc));
    assert_int_equal(percent_decode(enc, n, back), sizeof(src));
    assert_memory_equal(back, src, sizeof(src));
}

/* ---- status codes ---- */

static void test_status_names(void **state)
{
    (void)state;
    static const char *const names[] = {
        "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED",
    };
    for (int s = 0; s < (int)PTC_ARRAY_SIZE(names); s++)
        assert_string_equal(ptc_grpc_status_name(s), names[s]);
    assert_string_equal(ptc_grpc_status_name(PTC_GRPC_OK), "OK");
    assert_string_equal(ptc_grpc_status_name(PTC_GRPC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal(ptc_grpc_status_name(PTC_GRPC_UNAUTHENTICATED), "UNAUTHENTICATED");
    /* out of range: a fixed string, never an out-of-bounds read */
    assert_string_equal(ptc_grpc_status_name(17), "UNKNOWN_STATUS");
    assert_string_equal(ptc_grpc_status_name(-1), "UNKNOWN_STATUS");
    assert_string_equal(ptc_grpc_status_name(1000), "UNKNOWN_STATUS");
    assert_string_equal(ptc_grpc_status_name(INT32_MIN), "UNKNOWN_STATUS");
    assert_string_equal(ptc_grpc_status_name(INT32_MAX), "UNKNOWN_STATUS");
}

static void test_status_from_http(void **state)
{
    (void)state;
    /* grpc/grpc doc/http-grpc-status-mapping.md */
    assert_int_equal(ptc_grpc_status_from_http(400), PTC_GRPC_INTERNAL);
    assert_int_equal(ptc_grpc_status_from_http(401), PTC_GRPC_UNAUTHENTICATED);
    assert_int_equal(ptc_grpc_status_from_http(403), PTC_GRPC_PERMISSION_DENIED);
    assert_int_equal(ptc_grpc_status_from_http(404), PTC_GRPC_UNIMPLEMENTED);
    assert_int_equal(ptc_grpc_status_from_http(429), PTC_GRPC_UNAVAILABLE);
    assert_int_equal(ptc_grpc_status_from_http(502), PTC_GRPC_UNAVAILABLE);
    assert_int_equal(ptc_grpc_status_from_http(503), PTC_GRPC_UNAVAILABLE);
    assert_int_equal(ptc_grpc_status_from_http(504), PTC_GRPC_UNAVAILABLE);
    /* everything else is UNKNOWN, including 200 (a gRPC response without grpc-status) */
    static const int unknown[] = {0, 100, 200, 204, 206, 301, 302, 304, 402, 405, 408, 413, 415, 431, 500, 501, 505, 599, 600, -1};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(unknown); i++)
        assert_int_equal(ptc_grpc_status_from_http(unknown[i]), PTC_GRPC_UNKNOWN);
}

static void test_status_from_h2_error(void **state)
{
    (void)state;
    /* PROTOCOL-HTTP2.md "Errors" */
    static const struct {
        uint32_t code;
        int status;
    } map[] = {
        {0x0, PTC_GRPC_INTERNAL},           /* NO_ERROR */
        {0x1, PTC_GRPC_INTERNAL},           /* PROTOCOL_ERROR */
        {0x2, PTC_GRPC_INTERNAL},           /* INTERNAL_ERROR */
        {0x3, PTC_GRPC_INTERNAL},           /* FLOW_CONTROL_ERROR */
        {0x4, PTC_GRPC_INTERNAL},           /* SETTINGS_TIMEOUT */
        {0x5, PTC_GRPC_INTERNAL},           /* STREAM_CLOSED */
        {0x6, PTC_GRPC_INTERNAL},           /* FRAME_SIZE_ERROR */
        {0x7, PTC_GRPC_UNAVAILABLE},        /* REFUSED_STREAM */
        {0x8, PTC_GRPC_CANCELLED},          /* CANCEL */
        {0x9, PTC_GRPC_INTERNAL},           /* COMPRESSION_ERROR */
        {0xa, PTC_GRPC_INTERNAL},           /* CONNECT_ERROR */
        {0xb, PTC_GRPC_RESOURCE_EXHAUSTED}, /* ENHANCE_YOUR_CALM */
        {0xc, PTC_GRPC_PERMISSION_DENIED},  /* INADEQUATE_SECURITY */
        {0xd, PTC_GRPC_INTERNAL},           /* HTTP_1_1_REQUIRED */
        {0xe, PTC_GRPC_INTERNAL},           /* unknown codes */
        {0xff, PTC_GRPC_INTERNAL},          {UINT32_MAX, PTC_GRPC_INTERNAL},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(map); i++)
        assert_int_equal(ptc_grpc_status_from_h2_error(map[i].code), map[i].status);
}

static void test_status_parse(void **state)
{
    (void)state;
    int v = -7;
    assert_int_equal(ptc_status_parse(PTC_STRLIT("0"), &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ptc_status_parse(PTC_STRLIT("16"), &v), 0);
    assert_int_equal(v, 16);
    assert_int_equal(ptc_status_parse(PTC_STRLIT("200"), &v), 0);
    assert_int_equal(v, 200);
    assert_int_equal(ptc_status_parse(PTC_STRLIT("999999999"), &v), 0);
    assert_int_equal(v, 999999999);
    v = -7;
    /* every byte that is not a digit, anywhere, is refused; so are empty and over-long values */
    static const char *const bad[] = {"", " 1", "1 ", "+1", "-1", "1a", "a1", "0x1", "1.0", "1000000000", "１"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(ptc_status_parse(ptc_iov(bad[i], strlen(bad[i])), &v), PTC_EINVAL);
        assert_int_equal(v, -7);
    }
    for (int c = 0; c < 256; c++) {
        char b[2] = {'1', (char)c};
        assert_int_equal(ptc_status_parse(ptc_iov(b, 2), &v) == 0, c >= '0' && c <= '9');
    }
}

static void test_decode(void **state)
{
    (void)state;
    char out[64];
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"no%20such", "no such"}, {"%E2%82%AC%0a", "\xe2\x82\xac\n"}, {"100%", "100%"}, {"%2", "%2"},
        {"%zz%4", "%zz%4"},       {"%%41", "%A"},                         {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = ptc_grpc_message_decode(out, sizeof(out), ptc_iov(cases[i].in, strlen(cases[i].in)));
        assert_int_equal(n, strlen(cases[i].out));
        assert_memory_equal(out, cases[i].out, n);
    }
    /* what encode writes, decode gives back; the cap is kept */
    char enc[3 * 256], all[256];
    for (int c = 0; c < 256; c++)
        all[c] = (char)c;
    size_t n = ptc_grpc_message_encode(enc, sizeof(enc), all, sizeof(all));
    char back[256];
    assert_int_equal(ptc_grpc_message_decode(back, sizeof(back), ptc_iov(enc, n)), 256);
    assert_memory_equal(back, all, 256);
    assert_int_equal(ptc_grpc_message_decode(out, 3, PTC_STRLIT("a%20bc")), 3);
    assert_memory_equal(out, "a b", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_printable_ascii_passes),
        cmocka_unit_test(test_percent_is_escaped),
        cmocka_unit_test(test_control_chars_escaped),
        cmocka_unit_test(test_utf8_bytes_escaped),
        cmocka_unit_test(test_every_byte),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_cap_truncates_without_splitting_escapes),
        cmocka_unit_test(test_long_message_round_trip),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_status_from_http),
        cmocka_unit_test(test_status_from_h2_error),
        cmocka_unit_test(test_status_parse),
        cmocka_unit_test(test_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
