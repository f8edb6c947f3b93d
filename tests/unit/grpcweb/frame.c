/* Unit tests for src/grpcweb/frame.c: the incremental frame parser and the trailer encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "portico/codec.h"

/* Records every event as text so different splits can be compared exactly. */
typedef struct {
    char log[4096];
    size_t len;
    uint32_t fail_on_length; /* returns -1 on a HEADER with this length, when non-zero */
} recorder_t;

static int record(void *ctx, ptc_frame_event_t ev, uint8_t flags, uint32_t length, const uint8_t *data, size_t len)
{
    recorder_t *r = ctx;
    int n;
    switch (ev) {
    case PTC_FRAME_EV_HEADER:
        if (r->fail_on_length != 0 && length == r->fail_on_length)
            return -1;
        n = snprintf(r->log + r->len, sizeof(r->log) - r->len, "H%02x/%u;", flags, length);
        break;
    case PTC_FRAME_EV_DATA:
        n = snprintf(r->log + r->len, sizeof(r->log) - r->len, "%.*s", (int)len, (const char *)data);
        break;
    default:
        n = snprintf(r->log + r->len, sizeof(r->log) - r->len, ";E;");
        break;
    }
    assert_true(n > 0);
    r->len += (size_t)n;
    return 0;
}

static size_t build_stream(uint8_t *buf)
{
    size_t n = 0;
    ptc_frame_header_encode(buf + n, 0, 5);
    n += 5;
    memcpy(buf + n, "hello", 5);
    n += 5;
    ptc_frame_header_encode(buf + n, 0, 0);
    n += 5;
    ptc_frame_header_encode(buf + n, 0x80, 15);
    n += 5;
    memcpy(buf + n, "grpc-status:0\r\n", 15);
    n += 15;
    return n;
}

static void test_whole_stream(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = build_stream(buf);
    recorder_t r = {0};
    ptc_frame_parser_t p;
    ptc_frame_parser_init(&p);
    assert_int_equal(ptc_frame_parser_feed(&p, buf, n, record, &r), 0);
    assert_string_equal(r.log, "H00/5;hello;E;H00/0;;E;H80/15;grpc-status:0\r\n;E;");
    assert_true(ptc_frame_parser_at_boundary(&p));
    assert_int_equal(p.frames, 3);
}

static void test_every_split_offset(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = build_stream(buf);
    recorder_t whole = {0};
    ptc_frame_parser_t p;
    ptc_frame_parser_init(&p);
    assert_int_equal(ptc_frame_parser_feed(&p, buf, n, record, &whole), 0);

    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            recorder_t r = {0};
            ptc_frame_parser_init(&p);
            assert_int_equal(ptc_frame_parser_feed(&p, buf, a, record, &r), 0);
            assert_int_equal(ptc_frame_parser_feed(&p, buf + a, b - a, record, &r), 0);
            assert_int_equal(ptc_frame_parser_feed(&p, buf + b, n - b, record, &r), 0);
            /* DATA events may be split differently; compare the concatenated text */
            assert_string_equal(r.log, whole.log);
            assert_true(ptc_frame_parser_at_boundary(&p));
        }
    }
    /* one byte at a time */
    recorder_t r = {0};
    ptc_frame_parser_init(&p);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ptc_frame_parser_feed(&p, buf + i, 1, record, &r), 0);
        assert_true(ptc_frame_parser_at_boundary(&p) == (i + 1 == 10 || i + 1 == 15 || i + 1 == n));
    }
    assert_string_equal(r.log, whole.log);
}

static void test_callback_error_stops_parser(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = build_stream(buf);
    recorder_t r = {.fail_on_length = 15};
    ptc_frame_parser_t p;
    ptc_frame_parser_init(&p);
    assert_int_equal(ptc_frame_parser_feed(&p, buf, n, record, &r), -1);
    assert_string_equal(r.log, "H00/5;hello;E;H00/0;;E;");
    assert_int_equal(ptc_frame_parser_feed(&p, buf, n, record, &r), PTC_EPROTO);
}

static void test_big_endian_length(void **state)
{
    (void)state;
    uint8_t hdr[5];
    ptc_frame_header_encode(hdr, 0x80, 0x01020304);
    uint8_t want[5] = {0x80, 1, 2, 3, 4};
    assert_memory_equal(hdr, want, 5);
    ptc_frame_parser_t p;
    ptc_frame_parser_init(&p);
    recorder_t r = {0};
    assert_int_equal(ptc_frame_parser_feed(&p, hdr, 5, record, &r), 0);
    assert_int_equal(p.length, 0x01020304);
    assert_false(ptc_frame_parser_at_boundary(&p));
}

static void test_trailer_encode(void **state)
{
    (void)state;
    ptc_header_t f[] = {
        {PTC_STRLIT("Grpc-Status"), PTC_STRLIT("3")},
        {PTC_STRLIT("grpc-message"), PTC_STRLIT("bad%20thing")},
        {PTC_STRLIT("X-Custom-Bin"), PTC_STRLIT("AAEC")},
        {PTC_STRLIT("x-empty"), PTC_STRLIT("")},
    };
    size_t len = ptc_trailer_encoded_len(f, 4);
    const char want[] = "grpc-status:3\r\ngrpc-message:bad%20thing\r\nx-custom-bin:AAEC\r\nx-empty:\r\n";
    assert_int_equal(len, sizeof(want) - 1);
    uint8_t out[128];
    assert_int_equal(ptc_trailer_encode(out, f, 4), len);
    assert_memory_equal(out, want, len);
    assert_int_equal(ptc_trailer_encoded_len(f, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_stream),
        cmocka_unit_test(test_every_split_offset),
        cmocka_unit_test(test_callback_error_stops_parser),
        cmocka_unit_test(test_big_endian_length),
        cmocka_unit_test(test_trailer_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
