/* Unit tests for src/common/string.c: Accept-style lists (ptc_iov_list_accepts, ptc_accept_encoding_gzip). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "portico/common.h"

static bool gzip_ok(const char *list)
{
    return ptc_accept_encoding_gzip(ptc_iov(list, strlen(list)));
}

static bool accepts(const char *list, const char *token)
{
    return ptc_iov_list_accepts(ptc_iov(list, strlen(list)), ptc_iov(token, strlen(token)));
}

static void test_gzip_named(void **state)
{
    (void)state;
    assert_true(gzip_ok("gzip"));
    assert_true(gzip_ok("GZip"));
    assert_true(gzip_ok(" gzip , br"));
    assert_true(gzip_ok("br, zstd, gzip")); /* unknown codings around it are skipped */
    assert_true(gzip_ok("gzip;q=0.001"));
    assert_true(gzip_ok("gzip ; Q=1.0"));
    assert_true(gzip_ok("gzip;q=0, gzip;q=0.5")); /* any mention with a non-zero q */
}

static void test_gzip_refused_or_absent(void **state)
{
    (void)state;
    assert_false(gzip_ok(""));
    assert_false(gzip_ok("identity"));
    assert_false(gzip_ok("br, zstd"));
    assert_false(gzip_ok("gzip;q=0"));
    assert_false(gzip_ok("gzip;q=0.000"));
    assert_false(gzip_ok("x-gzip")); /* a token, not a substring */
    assert_false(gzip_ok("gzipped"));
    assert_false(gzip_ok("gzip;q=0, *")); /* refused by name: the wildcard does not bring it back */
    assert_false(gzip_ok("*, gzip;q=0"));
}

static void test_gzip_by_wildcard(void **state)
{
    (void)state;
    assert_true(gzip_ok("*"));
    assert_true(gzip_ok("br, *;q=0.1"));
    assert_false(gzip_ok("*;q=0"));
    assert_false(gzip_ok("identity, *;q=0"));
}

static void test_list_accepts(void **state)
{
    (void)state;
    assert_true(accepts("text/plain, application/openmetrics-text;q=0.5", "application/openmetrics-text"));
    assert_false(accepts("application/openmetrics-text;q=0", "application/openmetrics-text"));
    assert_true(accepts("a;q=0, a", "a"));
    assert_false(accepts("b, c", "a"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gzip_named),
        cmocka_unit_test(test_gzip_refused_or_absent),
        cmocka_unit_test(test_gzip_by_wildcard),
        cmocka_unit_test(test_list_accepts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
