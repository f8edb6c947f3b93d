/* Unit tests for src/connect/query.c: decoding the query of a Connect unary GET. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/connect.h"

typedef struct {
    const char *query;
    const char *encoding, *compression;
    bool base64, has_connect;
    const char *message; /* expected bytes */
    size_t message_len;
} good_t;

static const good_t good[] = {
    /* connect-es's order: connect, base64, compression, encoding, message */
    {"connect=v1&encoding=json&message=%7B%22message%22%3A%22hi%22%7D", "json", "", false, true, "{\"message\":\"hi\"}", 16},
    {"encoding=json&message=%7B%7D", "json", "", false, false, "{}", 2},
    /* any order, unknown parameters, '+' as a space */
    {"message=%7B%22a%22%3A+1%7D&x=y&encoding=json&connect=v1&z", "json", "", false, true, "{\"a\": 1}", 8},
    /* base64, URL-safe, unpadded: 0a 02 fb ff */
    {"connect=v1&base64=1&encoding=proto&message=CgL7_w", "proto", "", true, true, "\x0a\x02\xfb\xff", 4},
    /* the standard alphabet, and padding percent-encoded */
    {"base64=1&encoding=proto&message=CgL7%2Fw%3D%3D", "proto", "", true, false, "\x0a\x02\xfb\xff", 4},
    /* padding not encoded ('=' inside a value is kept) */
    {"base64=1&encoding=proto&message=CgL7_w==", "proto", "", true, false, "\x0a\x02\xfb\xff", 4},
    /* an empty message is a message (an empty protobuf) */
    {"connect=v1&encoding=proto&message=", "proto", "", false, true, "", 0},
    {"connect=v1&base64=1&encoding=proto&message=", "proto", "", true, true, "", 0},
    /* base64 with another value is ignored: the message is text */
    {"base64=0&encoding=json&message=abc", "json", "", false, false, "abc", 3},
    {"connect=v1&base64=1&compression=gzip&encoding=proto&message=H4sI", "proto", "gzip", true, true, "\x1f\x8b\x08", 3},
    {"compression=identity&encoding=json&message=%7B%7D", "json", "identity", false, false, "{}", 2},
    /* UTF-8 text */
    {"encoding=json&message=%22%C3%A9%E2%82%AC%F0%9F%98%80%22", "json", "", false, false,
     "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", 11},
    /* percent-encoded parameter names */
    {"%65ncoding=json&%6Dessage=1", "json", "", false, false, "1", 1},
};

static void check_good(const good_t *g)
{
    size_t qlen = strlen(g->query);
    uint8_t *scratch = malloc(PTC_CONNECT_GET_SCRATCH(qlen));
    ptc_connect_get_t out;
    const char *why = NULL;
    assert_non_null(scratch);
    int rv = ptc_connect_get_parse(ptc_iov(g->query, qlen), scratch, PTC_CONNECT_GET_SCRATCH(qlen), &out, &why);
    if (rv != 0)
        fail_msg("%s: %s", g->query, why);
    assert_true(ptc_connect_query_is_get(ptc_iov(g->query, qlen)));
    assert_int_equal(out.encoding.len, strlen(g->encoding));
    assert_memory_equal(out.encoding.base, g->encoding, out.encoding.len);
    assert_int_equal(out.compression.len, strlen(g->compression));
    if (out.compression.len != 0)
        assert_memory_equal(out.compression.base, g->compression, out.compression.len);
    assert_int_equal(out.base64, g->base64);
    assert_int_equal(out.has_connect, g->has_connect);
    assert_int_equal(out.message.len, g->message_len);
    if (g->message_len != 0)
        assert_memory_equal(out.message.base, g->message, g->message_len);
    free(scratch);
}

static void test_good(void **state)
{
    (void)state;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(good); i++)
        check_good(&good[i]);
}

static const struct {
    const char *query, *why;
} bad[] = {
    {"connect=v2&encoding=json&message=1", "unsupported Connect protocol version"},
    {"connect=&encoding=json&message=1", "unsupported Connect protocol version"},
    {"connect=v1&message=1", "'encoding' parameter is missing"},
    {"connect=v1&encoding=&message=1", "'encoding' parameter is missing"},
    {"connect=v1&encoding=json", "'message' parameter is missing"},
    {"connect=v1&encoding=json&message=1&message=2", "'message' parameter is given twice"},
    {"encoding=json&encoding=proto&message=1", "'encoding' parameter is given twice"},
    {"encoding=js%2Fon&message=1", "not a codec name"},
    {"encoding=json&message=%7", "bad percent-encoding"},
    {"encoding=json&message=%zz", "bad percent-encoding"},
    {"encoding=json%&message=1", "bad percent-encoding"},
    {"encoding=proto&message=%FF%FE", "not UTF-8"},
    {"encoding=json&message=%C3", "not UTF-8"},
    {"encoding=json&message=%ED%A0%80", "not UTF-8"}, /* a surrogate */
    {"encoding=json&message=%C0%80", "not UTF-8"},    /* overlong */
    {"base64=1&encoding=proto&message=C", "not valid base64"},
    {"base64=1&encoding=proto&message=Cg%3D", "not valid base64"},
    {"base64=1&encoding=proto&message=Cg=A", "not valid base64"},
    {"base64=1&encoding=proto&message=C*==", "not valid base64"},
    {"base64=1&encoding=proto&message=Cg+B", "not valid base64"}, /* '+' is a space in a query */
    {"compression=gzip&encoding=proto&message=abc", "must be base64-encoded"},
};

static void test_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        size_t qlen = strlen(bad[i].query);
        uint8_t *scratch = malloc(PTC_CONNECT_GET_SCRATCH(qlen));
        ptc_connect_get_t out;
        const char *why = NULL;
        assert_non_null(scratch);
        assert_int_equal(ptc_connect_get_parse(ptc_iov(bad[i].query, qlen), scratch, PTC_CONNECT_GET_SCRATCH(qlen), &out, &why),
                         PTC_EINVAL);
        assert_non_null(why);
        if (strstr(why, bad[i].why) == NULL)
            fail_msg("%s: got '%s', want '%s'", bad[i].query, why, bad[i].why);
        free(scratch);
    }
}

static void test_is_get(void **state)
{
    (void)state;
    static const char *const yes[] = {"connect=v1", "encoding=json", "message=", "a=b&message=x", "%6Dessage=1", "connect"};
    static const char *const no[] = {"", "a=b", "$httpHeaders=x", "messages=1", "base64=1&compression=gzip", "&&"};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(yes); i++)
        assert_true(ptc_connect_query_is_get(ptc_iov(yes[i], strlen(yes[i]))));
    for (size_t i = 0; i < PTC_ARRAY_SIZE(no); i++)
        if (ptc_connect_query_is_get(ptc_iov(no[i], strlen(no[i]))))
            fail_msg("'%s' is not a Connect GET query", no[i]);
}

/* Every prefix of a valid query parses or fails cleanly; the scratch space is never overrun. */
static void test_every_prefix(void **state)
{
    (void)state;
    const char *q = "connect=v1&base64=1&compression=gzip&encoding=proto&message=H4sIAAAAAAAA_-NiYGBgBAA";
    size_t qlen = strlen(q);
    for (size_t n = 0; n <= qlen; n++) {
        char *copy = malloc(n + 1); /* exactly n bytes readable (ASan catches a read past them) */
        uint8_t *scratch = malloc(PTC_CONNECT_GET_SCRATCH(n));
        ptc_connect_get_t out;
        const char *why = NULL;
        assert_non_null(copy);
        assert_non_null(scratch);
        memcpy(copy, q, n);
        int rv = ptc_connect_get_parse(ptc_iov(copy, n), scratch, PTC_CONNECT_GET_SCRATCH(n), &out, &why);
        assert_true(rv == 0 || (rv == PTC_EINVAL && why != NULL));
        free(copy);
        free(scratch);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_is_get),
        cmocka_unit_test(test_every_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
