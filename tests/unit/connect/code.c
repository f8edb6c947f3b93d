/* Unit tests for src/connect/code.c: the Connect error table both ways, and connect-timeout-ms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/codec.h"
#include "portico/connect.h"

/* connectrpc.com/docs/protocol "Error Codes": every code, its name and its HTTP status. */
static const struct {
    int status;
    const char *name;
    int http;
} table[] = {
    {PTC_GRPC_CANCELLED, "canceled", 499},
    {PTC_GRPC_UNKNOWN, "unknown", 500},
    {PTC_GRPC_INVALID_ARGUMENT, "invalid_argument", 400},
    {PTC_GRPC_DEADLINE_EXCEEDED, "deadline_exceeded", 504},
    {PTC_GRPC_NOT_FOUND, "not_found", 404},
    {PTC_GRPC_ALREADY_EXISTS, "already_exists", 409},
    {PTC_GRPC_PERMISSION_DENIED, "permission_denied", 403},
    {PTC_GRPC_RESOURCE_EXHAUSTED, "resource_exhausted", 429},
    {PTC_GRPC_FAILED_PRECONDITION, "failed_precondition", 400},
    {PTC_GRPC_ABORTED, "aborted", 409},
    {PTC_GRPC_OUT_OF_RANGE, "out_of_range", 400},
    {PTC_GRPC_UNIMPLEMENTED, "unimplemented", 501},
    {PTC_GRPC_INTERNAL, "internal", 500},
    {PTC_GRPC_UNAVAILABLE, "unavailable", 503},
    {PTC_GRPC_DATA_LOSS, "data_loss", 500},
    {PTC_GRPC_UNAUTHENTICATED, "unauthenticated", 401},
};

static void test_code_to_name_and_http(void **state)
{
    (void)state;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(table); i++) {
        assert_string_equal(ptc_connect_code_name(table[i].status), table[i].name);
        assert_int_equal(ptc_connect_http_status(table[i].status), table[i].http);
    }
    assert_int_equal(ptc_connect_http_status(PTC_GRPC_OK), 200);
    /* a status no client can name */
    assert_string_equal(ptc_connect_code_name(17), "unknown");
    assert_string_equal(ptc_connect_code_name(-1), "unknown");
    assert_int_equal(ptc_connect_http_status(17), 500);
}

static void test_name_to_code(void **state)
{
    (void)state;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(table); i++)
        assert_int_equal(ptc_connect_code_parse(ptc_iov(table[i].name, strlen(table[i].name))), table[i].status);
    assert_int_equal(ptc_connect_code_parse(PTC_STRLIT("ok")), -1);
    assert_int_equal(ptc_connect_code_parse(PTC_STRLIT("cancelled")), -1); /* gRPC's spelling is not Connect's */
    assert_int_equal(ptc_connect_code_parse(PTC_STRLIT("UNKNOWN")), -1);
    assert_int_equal(ptc_connect_code_parse(PTC_STRLIT("")), -1);
}

/* "HTTP to Error Code": what a client infers from a status without a Connect body. */
static void test_http_to_code(void **state)
{
    (void)state;
    static const int want[][2] = {
        {400, PTC_GRPC_INTERNAL},      {401, PTC_GRPC_UNAUTHENTICATED}, {403, PTC_GRPC_PERMISSION_DENIED},
        {404, PTC_GRPC_UNIMPLEMENTED}, {429, PTC_GRPC_UNAVAILABLE},     {502, PTC_GRPC_UNAVAILABLE},
        {503, PTC_GRPC_UNAVAILABLE},   {504, PTC_GRPC_UNAVAILABLE},     {500, PTC_GRPC_UNKNOWN},
        {409, PTC_GRPC_UNKNOWN},       {415, PTC_GRPC_UNKNOWN},         {200, PTC_GRPC_UNKNOWN},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(want); i++)
        assert_int_equal(ptc_connect_code_from_http(want[i][0]), want[i][1]);
    /* both ways: every code that gRPC's table names survives a round trip through its HTTP status */
    for (size_t i = 0; i < PTC_ARRAY_SIZE(table); i++) {
        int back = ptc_connect_code_from_http(table[i].http);
        if (table[i].status == PTC_GRPC_UNAUTHENTICATED || table[i].status == PTC_GRPC_PERMISSION_DENIED)
            assert_int_equal(back, table[i].status);
    }
}

static void test_timeout(void **state)
{
    (void)state;
    uint64_t ms = 7;
    assert_int_equal(ptc_connect_timeout_parse(PTC_STRLIT("0"), &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(ptc_connect_timeout_parse(PTC_STRLIT("5000"), &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(ptc_connect_timeout_parse(PTC_STRLIT("9999999999"), &ms), 0); /* 10 digits: > 100 days */
    assert_int_equal(ms, 9999999999ull);
    ms = 7;
    static const char *const bad[] = {"", "12345678901", "-1", "+5", "5s", " 5", "5 ", "1.5", "0x10"};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        assert_int_equal(ptc_connect_timeout_parse(ptc_iov(bad[i], strlen(bad[i])), &ms), PTC_EINVAL);
        assert_int_equal(ms, 7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_to_name_and_http),
        cmocka_unit_test(test_name_to_code),
        cmocka_unit_test(test_http_to_code),
        cmocka_unit_test(test_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
