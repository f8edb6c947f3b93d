/* Unit tests for src/ws/proto.c: the RFC 6455 accept key and the grpc-websockets header block. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "portico/ws.h"

static void test_accept_key(void **state)
{
    (void)state;
    char out[PTC_WS_ACCEPT_LEN + 1];
    /* RFC 6455 §1.3 */
    assert_int_equal(ptc_ws_accept_key(PTC_STRLIT("dGhlIHNhbXBsZSBub25jZQ=="), out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(ptc_ws_accept_key(PTC_STRLIT("  dGhlIHNhbXBsZSBub25jZQ== "), out), 0); /* OWS around it */
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* the example of RFC 6455 §4.2.2 / §4.1 */
    assert_int_equal(ptc_ws_accept_key(PTC_STRLIT("x3JJHMbDL1EzLkh9GBhXDw=="), out), 0);
    assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    static const char *const bad[] = {"",
                                      "dGhlIHNhbXBsZSBub25jZQ",
                                      "dGhlIHNhbXBsZSBub25jZQ=",
                                      "dGhlIHNhbXBsZSBub25jZ===",
                                      "dGhlIHNhbXBsZSBub25jZQ==x",
                                      "dGhlIHNhbXBsZSBub25j*Q==",
                                      "c2hvcnQ=",
                                      "dGhlIHNhbXBsZSBub25jZSBsb25nZXI="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ptc_ws_accept_key(ptc_iov(bad[i], strlen(bad[i])), out), PTC_EINVAL);
}

static size_t parse(const char *text, ptc_header_t *f, size_t cap, int expect, const char *why_expected)
{
    static char buf[512]; /* the fields point into it after the return */
    size_t n = 99, len = strlen(text);
    const char *why = NULL;
    memcpy(buf, text, len);
    int rv = ptc_ws_header_block_parse(buf, len, f, cap, &n, &why);
    assert_int_equal(rv, expect);
    if (expect != 0)
        assert_string_equal(why, why_expected);
    return n;
}

static bool field_is(const ptc_header_t *f, const char *name, const char *value)
{
    return ptc_iov_eq(f->name, ptc_iov(name, strlen(name))) && ptc_iov_eq(f->value, ptc_iov(value, strlen(value)));
}

static void test_header_block(void **state)
{
    (void)state;
    ptc_header_t f[8];
    /* what the improbable client sends: "key: v1, v2\r\n" per entry */
    size_t n = parse("Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nx-user: a, b\r\n", f, 8, 0, NULL);
    assert_int_equal(n, 3);
    assert_true(field_is(&f[0], "content-type", "application/grpc-web+proto"));
    assert_true(field_is(&f[1], "x-grpc-web", "1"));
    assert_true(field_is(&f[2], "x-user", "a, b"));
}

static void test_header_block_edges(void **state)
{
    (void)state;
    ptc_header_t f[8];
    size_t n = parse("a:1\n\r\nb:  2 \t\nc:", f, 8, 0, NULL);
    assert_int_equal(n, 3);
    assert_true(field_is(&f[0], "a", "1"));
    assert_true(field_is(&f[1], "b", "2"));
    assert_true(field_is(&f[2], "c", ""));
    assert_int_equal(parse("", f, 8, 0, NULL), 0);
    assert_int_equal(parse("\r\n\r\n", f, 8, 0, NULL), 0);
    parse("no colon here\r\n", f, 8, PTC_EINVAL, "a header line without a colon");
    parse(": value\r\n", f, 8, PTC_EINVAL, "a header line without a name");
    parse("b c: 1\r\n", f, 8, PTC_EINVAL, "a header name that is not an HTTP token");
    parse("b : 1\r\n", f, 8, PTC_EINVAL, "a header name that is not an HTTP token");
    parse("a: x\ry\r\n", f, 8, PTC_EINVAL, "a control character in a header value");
    parse("a: x\x01\r\n", f, 8, PTC_EINVAL, "a control character in a header value");
    parse("a:1\r\nb:2\r\nc:3\r\n", f, 2, PTC_ETOOBIG, "too many header fields");
    /* every split of a valid block into "what was sent" parses to the same prefix of fields */
    /* the block arrives whole (one message); any cut of it parses to a prefix, or fails inside a name */
    const char *block = "content-type: application/grpc-web+proto\r\nx-a: 1\r\n";
    for (size_t cut = 0; cut <= strlen(block); cut++) {
        char buf[128];
        size_t m = 0;
        const char *why = NULL;
        memcpy(buf, block, cut);
        int rv = ptc_ws_header_block_parse(buf, cut, f, 8, &m, &why);
        if (rv == 0)
            assert_true(m <= 2 && (m == 0 || ptc_iov_eq(f[0].name, PTC_STRLIT("content-type"))));
        else
            assert_int_equal(rv, PTC_EINVAL); /* "conte" alone: no colon yet */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),
        cmocka_unit_test(test_header_block),
        cmocka_unit_test(test_header_block_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
