/*
 * Connect envelopes (the 5-byte prefix of application/connect+* bodies) through the gateway's frame
 * parser, split at every offset and fed a byte at a time; and the flags a request envelope may carry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/codec.h"
#include "portico/connect.h"

typedef struct {
    char log[1024];
    size_t len;
} recorder_t;

static int record(void *ctx, ptc_frame_event_t ev, uint8_t flags, uint32_t length, const uint8_t *data, size_t len)
{
    recorder_t *r = ctx;
    int n = ev == PTC_FRAME_EV_HEADER ? snprintf(r->log + r->len, sizeof(r->log) - r->len, "<%02x/%u>", flags, length)
            : ev == PTC_FRAME_EV_DATA ? snprintf(r->log + r->len, sizeof(r->log) - r->len, "%.*s", (int)len, (const char *)data)
                                      : snprintf(r->log + r->len, sizeof(r->log) - r->len, "|");
    assert_true(n >= 0 && (size_t)n < sizeof(r->log) - r->len);
    r->len += (size_t)n;
    return 0;
}

/* A server stream as the gateway writes it: two messages, an empty one, and the end of stream. */
static size_t build(uint8_t *buf)
{
    static const char *const parts[] = {"{\"message\":\"a\"}", "{\"message\":\"bb\"}", "",
                                        "{\"error\":{\"code\":\"unavailable\"},\"metadata\":{\"x\":[\"1\"]}}"};
    static const uint8_t flags[] = {0, 0, 0, PTC_CONNECT_FLAG_END_STREAM};
    size_t n = 0;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(parts); i++) {
        size_t len = strlen(parts[i]);
        ptc_frame_header_encode(buf + n, flags[i], (uint32_t)len);
        memcpy(buf + n + 5, parts[i], len);
        n += 5 + len;
    }
    return n;
}

static const char want[] = "<00/15>{\"message\":\"a\"}|<00/16>{\"message\":\"bb\"}|<00/0>|"
                           "<02/55>{\"error\":{\"code\":\"unavailable\"},\"metadata\":{\"x\":[\"1\"]}}|";

static void test_every_split(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = build(buf);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            recorder_t r = {{0}, 0};
            ptc_frame_parser_t p;
            ptc_frame_parser_init(&p);
            assert_int_equal(ptc_frame_parser_feed(&p, buf, a, record, &r), 0);
            assert_int_equal(ptc_frame_parser_feed(&p, buf + a, b - a, record, &r), 0);
            assert_int_equal(ptc_frame_parser_feed(&p, buf + b, n - b, record, &r), 0);
            /* data events come in pieces: compare the concatenation */
            assert_string_equal(r.log, want);
            assert_true(ptc_frame_parser_at_boundary(&p));
            assert_int_equal(p.frames, 4);
        }
    }
}

static void test_byte_at_a_time(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = build(buf);
    recorder_t r = {{0}, 0};
    ptc_frame_parser_t p;
    ptc_frame_parser_init(&p);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ptc_frame_parser_feed(&p, buf + i, 1, record, &r), 0);
        assert_true(ptc_frame_parser_at_boundary(&p) == (i == n - 1 || i == 19 || i == 40 || i == 45));
    }
    assert_string_equal(r.log, want);
}

static void test_request_flags(void **state)
{
    (void)state;
    assert_null(ptc_connect_request_flags_error(0x00));
    assert_null(ptc_connect_request_flags_error(PTC_CONNECT_FLAG_COMPRESSED));
    assert_non_null(strstr(ptc_connect_request_flags_error(PTC_CONNECT_FLAG_END_STREAM), "end-of-stream"));
    assert_non_null(strstr(ptc_connect_request_flags_error(0x03), "end-of-stream"));
    for (unsigned f = 4; f < 256; f++)
        assert_non_null(ptc_connect_request_flags_error((uint8_t)f));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_request_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
