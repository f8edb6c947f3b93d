/*
 * Unit tests for src/connect/json.c: the Error object with grpc-status-details-bin decoded into
 * "details", the EndStreamResponse, and google.rpc.Status parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/codec.h"
#include "portico/connect.h"

/* google.rpc.Status{code: 3, message: "bad", details: [Any{type_url, value}...]} */
static size_t build_status(uint8_t *out, const char *const *types, const uint8_t *const *values, const size_t *vlens, size_t n)
{
    size_t o = 0;
    out[o++] = 0x08, out[o++] = 0x03;                                 /* code = 3 */
    out[o++] = 0x12, out[o++] = 3, memcpy(out + o, "bad", 3), o += 3; /* message */
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(types[i]);
        size_t anylen = 2 + tl + 2 + vlens[i];
        assert_true(tl < 128 && vlens[i] < 128 && anylen < 128);
        out[o++] = 0x1a, out[o++] = (uint8_t)anylen;
        out[o++] = 0x0a, out[o++] = (uint8_t)tl, memcpy(out + o, types[i], tl), o += tl;
        out[o++] = 0x12, out[o++] = (uint8_t)vlens[i], memcpy(out + o, values[i], vlens[i]), o += vlens[i];
    }
    return o;
}

/* Standard padded base64, as a gRPC server writes a -bin header. */
static size_t b64(char *dst, const uint8_t *src, size_t n)
{
    ptc_b64_encoder_t e;
    ptc_b64_encoder_init(&e);
    size_t o = ptc_b64_encode_update(&e, src, n, dst);
    o += ptc_b64_encode_final(&e, dst + o);
    dst[o] = '\0';
    return o;
}

static void assert_json(char *got, size_t len, const char *want)
{
    assert_non_null(got);
    if (len != strlen(want) || memcmp(got, want, len) != 0)
        fail_msg("got  %.*s\nwant %s", (int)len, got, want);
    free(got);
}

#define ASSERT_JSON(call, want)                                                                                                    \
    do {                                                                                                                           \
        size_t jlen_ = 0;                                                                                                          \
        char *got_ = call;                                                                                                         \
        assert_json(got_, jlen_, want);                                                                                            \
    } while (0)

static void test_error_plain(void **state)
{
    (void)state;
    ptc_connect_error_t e = {PTC_GRPC_UNAVAILABLE, PTC_STRLIT("upstream down"), false, {"", 0}};
    ASSERT_JSON(ptc_connect_error_json(&e, &jlen_), "{\"code\":\"unavailable\",\"message\":\"upstream down\"}");
    /* no message: the key is left out */
    ptc_connect_error_t e2 = {PTC_GRPC_UNIMPLEMENTED, {"", 0}, true, {"", 0}};
    ASSERT_JSON(ptc_connect_error_json(&e2, &jlen_), "{\"code\":\"unimplemented\"}");
}

/* grpc-message is percent-encoded UTF-8; JSON escapes; bad UTF-8 becomes U+FFFD; a stray '%' stays. */
static void test_error_message_decoding(void **state)
{
    (void)state;
    ptc_connect_error_t e = {PTC_GRPC_INVALID_ARGUMENT, PTC_STRLIT("caf%C3%A9 \"q\" \\ %0A tab%09 bad%FF 100%"), true, {"", 0}};
    ASSERT_JSON(ptc_connect_error_json(&e, &jlen_),
                "{\"code\":\"invalid_argument\",\"message\":\"caf\xc3\xa9 \\\"q\\\" \\\\ \\u000a tab\\u0009 bad\\ufffd 100%\"}");
    /* the same bytes as plain text are not decoded */
    ptc_connect_error_t e2 = {PTC_GRPC_INTERNAL, PTC_STRLIT("50%25"), false, {"", 0}};
    ASSERT_JSON(ptc_connect_error_json(&e2, &jlen_), "{\"code\":\"internal\",\"message\":\"50%25\"}");
}

static void test_error_details(void **state)
{
    (void)state;
    /* the protocol's example: google.rpc.RetryInfo{retry_delay: 60s} is 0a 02 08 3c, "CgIIPA" unpadded */
    static const uint8_t retry[] = {0x0a, 0x02, 0x08, 0x3c}, sv[] = {0x0a, 0x01, 'x'};
    const char *types[] = {"type.googleapis.com/google.rpc.RetryInfo", "google.protobuf.StringValue"};
    const uint8_t *values[] = {retry, sv};
    size_t vlens[] = {sizeof(retry), sizeof(sv)};
    uint8_t pb[256];
    char bin[512];
    size_t n = build_status(pb, types, values, vlens, 2), len;
    b64(bin, pb, n);
    ptc_connect_error_t e = {PTC_GRPC_UNAVAILABLE, PTC_STRLIT("overloaded"), true, ptc_iov(bin, strlen(bin))};
    ASSERT_JSON(ptc_connect_error_json(&e, &jlen_), "{\"code\":\"unavailable\",\"message\":\"overloaded\",\"details\":["
                                                    "{\"type\":\"google.rpc.RetryInfo\",\"value\":\"CgIIPA\"},"
                                                    "{\"type\":\"google.protobuf.StringValue\",\"value\":\"CgF4\"}]}");
    /* unpadded base64 in the header is accepted too */
    size_t blen = strlen(bin);
    while (bin[blen - 1] == '=')
        bin[--blen] = '\0';
    e.details_bin = ptc_iov(bin, blen);
    char *j = ptc_connect_error_json(&e, &len);
    assert_non_null(strstr(j, "\"value\":\"CgIIPA\""));
    free(j);
}

/* A details header that is not base64, not a Status, or a Status without details adds nothing. */
static void test_error_details_ignored(void **state)
{
    (void)state;
    static const uint8_t trunc[] = {0x08, 0x03, 0x1a, 0x10, 0x0a}; /* an Any cut short */
    static const uint8_t group[] = {0x0b, 0x0c};                   /* a group: not a Status */
    static const uint8_t nodetails[] = {0x08, 0x03, 0x12, 0x01, 'x'};
    char bin[64];
    const char *const raw[] = {"!!!not base64", "A"};
    for (size_t i = 0; i < 5; i++) {
        ptc_connect_error_t e = {PTC_GRPC_INTERNAL, {"", 0}, true, {"", 0}};
        if (i < 2) {
            e.details_bin = ptc_iov(raw[i], strlen(raw[i]));
        } else {
            const uint8_t *v = i == 2 ? trunc : i == 3 ? group : nodetails;
            size_t vl = i == 2 ? sizeof(trunc) : i == 3 ? sizeof(group) : sizeof(nodetails);
            e.details_bin = ptc_iov(bin, b64(bin, v, vl));
        }
        ASSERT_JSON(ptc_connect_error_json(&e, &jlen_), "{\"code\":\"internal\"}");
    }
}

typedef struct {
    char log[512];
    size_t n;
} anylog_t;

static void log_any(void *ctx, ptc_iovec_t type_url, ptc_iovec_t value)
{
    anylog_t *l = ctx;
    l->n += (size_t)snprintf(l->log + l->n, sizeof(l->log) - l->n, "[%.*s|%zu]", (int)type_url.len, type_url.base, value.len);
}

static void test_status_parser(void **state)
{
    (void)state;
    /* unknown fields of every wire type are skipped, in the Status and in an Any */
    static const uint8_t pb[] = {
        0x08, 0x96, 0x01,                                                            /* code = 150 (varint, 2 bytes) */
        0x21, 1,    2,    3,    4,   5,    6,    7,    8,                            /* field 4, fixed64 */
        0x2d, 1,    2,    3,    4,                                                   /* field 5, fixed32 */
        0x1a, 0x0b, 0x0a, 0x01, 'T', 0x12, 0x02, 0xaa, 0xbb, 0x18, 0x05, 0x22, 0x00, /* Any{T, 2 bytes, f3, f4} */
        0x1a, 0x00,                                                                  /* an empty Any */
    };
    anylog_t l = {{0}, 0};
    assert_int_equal(ptc_rpc_status_details(pb, sizeof(pb), log_any, &l), 0);
    assert_string_equal(l.log, "[T|2][|0]");
    /* every truncation is refused or parses what is whole, never reads past the end */
    for (size_t n = 0; n < sizeof(pb); n++) {
        uint8_t *copy = malloc(n + 1);
        memcpy(copy, pb, n);
        l.n = 0;
        int rv = ptc_rpc_status_details(copy, n, log_any, &l);
        assert_true(rv == 0 || rv == PTC_EINVAL);
        free(copy);
    }
    /* details with the wrong wire type; a varint that never ends; field number 0 */
    static const uint8_t wrong[] = {0x18, 0x01},
                         endless[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
                         zero[] = {0x00, 0x01};
    assert_int_equal(ptc_rpc_status_details(wrong, sizeof(wrong), log_any, &l), PTC_EINVAL);
    assert_int_equal(ptc_rpc_status_details(endless, sizeof(endless), log_any, &l), PTC_EINVAL);
    assert_int_equal(ptc_rpc_status_details(zero, sizeof(zero), log_any, &l), PTC_EINVAL);
}

static void test_end_stream(void **state)
{
    (void)state;
    /* success without metadata */
    ASSERT_JSON(ptc_connect_end_stream_json(NULL, NULL, 0, &jlen_), "{}");
    ptc_connect_error_t ok = {PTC_GRPC_OK, {"", 0}, true, {"", 0}};
    ptc_header_t md[] = {
        {PTC_STRLIT("x-trailer-ok"), PTC_STRLIT("done")},
        {PTC_STRLIT("x-multi"), PTC_STRLIT("a")},
        {PTC_STRLIT("x-bin-bin"), PTC_STRLIT("AAH+/w")},
        {PTC_STRLIT("x-multi"), PTC_STRLIT("b\"c")},
    };
    ASSERT_JSON(ptc_connect_end_stream_json(&ok, md, 4, &jlen_),
                "{\"metadata\":{\"x-trailer-ok\":[\"done\"],\"x-multi\":[\"a\",\"b\\\"c\"],\"x-bin-bin\":[\"AAH+/w\"]}}");
    ptc_connect_error_t e = {PTC_GRPC_NOT_FOUND, PTC_STRLIT("no%20such"), true, {"", 0}};
    ASSERT_JSON(ptc_connect_end_stream_json(&e, md, 1, &jlen_),
                "{\"error\":{\"code\":\"not_found\",\"message\":\"no such\"},\"metadata\":{\"x-trailer-ok\":[\"done\"]}}");
    ASSERT_JSON(ptc_connect_end_stream_json(&e, NULL, 0, &jlen_), "{\"error\":{\"code\":\"not_found\",\"message\":\"no such\"}}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_plain),   cmocka_unit_test(test_error_message_decoding),
        cmocka_unit_test(test_error_details), cmocka_unit_test(test_error_details_ignored),
        cmocka_unit_test(test_status_parser), cmocka_unit_test(test_end_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
