/* Unit tests for src/grpcweb/content_type.c: Content-Type classification and the Accept decision. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "portico/codec.h"

/* ---- helpers ---- */

static ptc_ctype_t classify(const char *s)
{
    return ptc_ctype_classify(ptc_iov(s, strlen(s)));
}

/* Asserts kind and codec (NULL: no codec) of a Content-Type value, and that the codec points into it. */
static void assert_ctype(const char *s, ptc_ctype_kind_t kind, const char *codec)
{
    ptc_ctype_t ct = classify(s);
    if (ct.kind != kind)
        print_error("content-type \"%s\": kind %d, want %d\n", s, (int)ct.kind, (int)kind);
    assert_int_equal(ct.kind, kind);
    if (codec == NULL) {
        assert_int_equal(ct.codec.len, 0);
    } else {
        assert_int_equal(ct.codec.len, strlen(codec));
        assert_memory_equal(ct.codec.base, codec, ct.codec.len);
        assert_true(ct.codec.base >= s && ct.codec.base + ct.codec.len <= s + strlen(s));
    }
}

static void assert_other(const char *s)
{
    assert_ctype(s, PTC_CT_OTHER, NULL);
}

static bool wants_text(const char *accept, bool request_is_text)
{
    return ptc_accept_wants_text(ptc_iov(accept, strlen(accept)), request_is_text);
}

/* Asserts the decision for both request encodings. */
static void assert_accept(const char *accept, bool for_text_request, bool for_binary_request)
{
    bool t = wants_text(accept, true), b = wants_text(accept, false);
    if (t != for_text_request || b != for_binary_request)
        print_error("accept \"%s\": text request -> %s, binary request -> %s\n", accept, t ? "text" : "binary",
                    b ? "text" : "binary");
    assert_true(t == for_text_request);
    assert_true(b == for_binary_request);
}

#define FOLLOWS_REQUEST true, false
#define ALWAYS_TEXT true, true
#define ALWAYS_BINARY false, false

/* ---- classification ---- */

static void test_grpc_web_types(void **state)
{
    (void)state;
    assert_ctype("application/grpc-web", PTC_CT_GRPC_WEB, NULL);
    assert_ctype("application/grpc-web+proto", PTC_CT_GRPC_WEB, "proto");
    assert_ctype("application/grpc-web+json", PTC_CT_GRPC_WEB, "json");
    assert_ctype("application/grpc-web-text", PTC_CT_GRPC_WEB_TEXT, NULL);
    assert_ctype("application/grpc-web-text+proto", PTC_CT_GRPC_WEB_TEXT, "proto");
    assert_ctype("application/grpc-web-text+json", PTC_CT_GRPC_WEB_TEXT, "json");
    assert_ctype("application/grpc-web+thrift", PTC_CT_GRPC_WEB, "thrift");
    assert_ctype("application/grpc-web+my-codec_v1.2", PTC_CT_GRPC_WEB, "my-codec_v1.2");
}

static void test_native_grpc_types(void **state)
{
    (void)state;
    assert_ctype("application/grpc", PTC_CT_GRPC, NULL);
    assert_ctype("application/grpc+proto", PTC_CT_GRPC, "proto");
    assert_ctype("application/grpc+json", PTC_CT_GRPC, "json");
    assert_ctype("Application/GRPC+Proto", PTC_CT_GRPC, "Proto");
}

static void test_case_insensitive(void **state)
{
    (void)state;
    assert_ctype("APPLICATION/GRPC-WEB-TEXT", PTC_CT_GRPC_WEB_TEXT, NULL);
    assert_ctype("APPLICATION/GRPC-WEB", PTC_CT_GRPC_WEB, NULL);
    assert_ctype("Application/Grpc-Web+Proto", PTC_CT_GRPC_WEB, "Proto");
    assert_ctype("application/GRPC-web-TEXT+PROTO", PTC_CT_GRPC_WEB_TEXT, "PROTO");
}

static void test_parameters_and_whitespace(void **state)
{
    (void)state;
    assert_ctype("application/grpc-web+proto; charset=utf-8", PTC_CT_GRPC_WEB, "proto");
    assert_ctype("application/grpc-web+proto;charset=utf-8", PTC_CT_GRPC_WEB, "proto");
    assert_ctype("application/grpc-web-text; charset=utf-8; foo=bar", PTC_CT_GRPC_WEB_TEXT, NULL);
    assert_ctype("application/grpc-web;", PTC_CT_GRPC_WEB, NULL);
    assert_ctype("application/grpc ; x=\"a;b\"", PTC_CT_GRPC, NULL);
    assert_ctype("  application/grpc-web-text  ", PTC_CT_GRPC_WEB_TEXT, NULL);
    assert_ctype("\tapplication/grpc-web+json\t", PTC_CT_GRPC_WEB, "json");
    assert_ctype(" application/grpc-web+proto ; charset=utf-8 ", PTC_CT_GRPC_WEB, "proto");
    /* a parameter value that looks like a grpc type does not count */
    assert_other("text/plain; x=application/grpc-web");
}

static void test_non_matches(void **state)
{
    (void)state;
    static const char *const other[] = {
        "",
        " ",
        ";",
        "application/grpc-webx",
        "application/grpc-web-textx",
        "application/grpc-webtext",
        "application/grpc-web-",
        "application/grpc-web-text-",
        "application/grpcx",
        "application/grpc-",
        "application/grpc-web+",
        "application/grpc-web-text+",
        "application/grpc+",
        "application/grpc-web++proto",
        "application/grpc-web+pro to",
        "application/grpc-web+proto+json",
        "application/grpc-web+proto/x",
        "application/grpc-web/proto",
        "application/xml",
        "text/plain",
        "application/octet-stream",
        "application/x-protobuf",
        "application/grp",
        "application/",
        "application",
        "grpc-web",
        "xapplication/grpc-web",
        "application/ grpc-web",
        "application /grpc-web",
        "*/*",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(other); i++)
        assert_other(other[i]);

    /* an absent header is a NULL, empty slice */
    ptc_ctype_t ct = ptc_ctype_classify(ptc_iov(NULL, 0));
    assert_int_equal(ct.kind, PTC_CT_OTHER);
    assert_int_equal(ct.codec.len, 0);
}

static void test_respects_slice_length(void **state)
{
    (void)state;
    /* wire values are not NUL-terminated: only the slice counts */
    static const char buf[] = "application/grpc-web-text+protoXYZ";
    ptc_ctype_t ct = ptc_ctype_classify(ptc_iov(buf, 20));
    assert_int_equal(ct.kind, PTC_CT_GRPC_WEB);
    assert_int_equal(ct.codec.len, 0);
    ct = ptc_ctype_classify(ptc_iov(buf, 25));
    assert_int_equal(ct.kind, PTC_CT_GRPC_WEB_TEXT);
    assert_int_equal(ct.codec.len, 0);
    ct = ptc_ctype_classify(ptc_iov(buf, 31));
    assert_int_equal(ct.kind, PTC_CT_GRPC_WEB_TEXT);
    assert_int_equal(ct.codec.len, 5);
    assert_memory_equal(ct.codec.base, "proto", 5);
    ct = ptc_ctype_classify(ptc_iov(buf, 26));
    assert_int_equal(ct.kind, PTC_CT_OTHER);
}

static void test_codec_is_proto(void **state)
{
    (void)state;
    assert_true(ptc_ctype_codec_is_proto(ptc_iov("", 0)));
    assert_true(ptc_ctype_codec_is_proto(ptc_iov(NULL, 0)));
    assert_true(ptc_ctype_codec_is_proto(PTC_STRLIT("proto")));
    assert_true(ptc_ctype_codec_is_proto(PTC_STRLIT("PROTO")));
    assert_true(ptc_ctype_codec_is_proto(PTC_STRLIT("Proto")));
    assert_false(ptc_ctype_codec_is_proto(PTC_STRLIT("json")));
    assert_false(ptc_ctype_codec_is_proto(PTC_STRLIT("protobuf")));
    assert_false(ptc_ctype_codec_is_proto(PTC_STRLIT("prot")));
    assert_false(ptc_ctype_codec_is_proto(PTC_STRLIT("proto ")));
    assert_false(ptc_ctype_codec_is_proto(PTC_STRLIT("thrift")));

    /* through classification, as the call translator uses it */
    assert_true(ptc_ctype_codec_is_proto(classify("application/grpc-web").codec));
    assert_true(ptc_ctype_codec_is_proto(classify("application/grpc-web-text+proto").codec));
    assert_true(ptc_ctype_codec_is_proto(classify("APPLICATION/GRPC-WEB+PROTO; charset=utf-8").codec));
    assert_false(ptc_ctype_codec_is_proto(classify("application/grpc-web+json").codec));
    assert_false(ptc_ctype_codec_is_proto(classify("application/grpc-web-text+json").codec));
}

/* ---- Accept ---- */

static void test_accept_absent_follows_request(void **state)
{
    (void)state;
    assert_true(ptc_accept_wants_text(ptc_iov(NULL, 0), true));
    assert_false(ptc_accept_wants_text(ptc_iov(NULL, 0), false));
    assert_accept("", FOLLOWS_REQUEST);
    assert_accept(" ", FOLLOWS_REQUEST);
    assert_accept(",", FOLLOWS_REQUEST);
}

static void test_accept_exact(void **state)
{
    (void)state;
    assert_accept("application/grpc-web-text", ALWAYS_TEXT);
    assert_accept("application/grpc-web", ALWAYS_BINARY);
    assert_accept("application/grpc-web-text+proto", ALWAYS_TEXT);
    assert_accept("application/grpc-web+proto", ALWAYS_BINARY);
    assert_accept("APPLICATION/GRPC-WEB-TEXT", ALWAYS_TEXT);
    assert_accept("  application/grpc-web-text  ", ALWAYS_TEXT);
    assert_accept("application/grpc-web-text; charset=utf-8", ALWAYS_TEXT);
}

static void test_accept_wildcards_and_others_follow_request(void **state)
{
    (void)state;
    assert_accept("*/*", FOLLOWS_REQUEST);
    assert_accept("application/*", FOLLOWS_REQUEST);
    assert_accept("application/json", FOLLOWS_REQUEST);
    assert_accept("text/html, application/xhtml+xml, */*;q=0.8", FOLLOWS_REQUEST);
    assert_accept("application/grpc", FOLLOWS_REQUEST);
    assert_accept("application/grpc+proto", FOLLOWS_REQUEST);
    assert_accept("application/grpc-webx", FOLLOWS_REQUEST);
    /* both named with equal preference: the request decides */
    assert_accept("application/grpc-web, application/grpc-web-text", FOLLOWS_REQUEST);
    assert_accept("application/grpc-web-text;q=0.5, application/grpc-web;q=0.5", FOLLOWS_REQUEST);
    assert_accept("application/grpc-web-text;q=0, application/grpc-web;q=0", FOLLOWS_REQUEST);
}

static void test_accept_mixed_with_other_types(void **state)
{
    (void)state;
    assert_accept("*/*, application/grpc-web-text", ALWAYS_TEXT);
    assert_accept("application/json, application/grpc-web, */*", ALWAYS_BINARY);
    assert_accept("text/plain,application/grpc-web-text,application/json", ALWAYS_TEXT);
}

static void test_accept_q_values(void **state)
{
    (void)state;
    assert_accept("application/grpc-web;q=0.5, application/grpc-web-text;q=0.9", ALWAYS_TEXT);
    assert_accept("application/grpc-web;q=0.9, application/grpc-web-text;q=0.5", ALWAYS_BINARY);
    assert_accept("application/grpc-web-text;q=0.9, application/grpc-web;q=0.5", ALWAYS_TEXT);
    assert_accept("application/grpc-web-text;q=0.5, application/grpc-web;q=0.9", ALWAYS_BINARY);
    /* an absent q is 1 */
    assert_accept("application/grpc-web, application/grpc-web-text;q=0.999", ALWAYS_BINARY);
    assert_accept("application/grpc-web;q=0.999, application/grpc-web-text", ALWAYS_TEXT);
    assert_accept("application/grpc-web;q=1, application/grpc-web-text;q=0.1", ALWAYS_BINARY);
    assert_accept("application/grpc-web;q=1.0, application/grpc-web-text;q=1.000", FOLLOWS_REQUEST);
    /* three decimals are significant */
    assert_accept("application/grpc-web;q=0.501, application/grpc-web-text;q=0.5", ALWAYS_BINARY);
    assert_accept("application/grpc-web;q=0.05, application/grpc-web-text;q=0.1", ALWAYS_TEXT);
    /* q after other parameters, spacing, and upper-case Q */
    assert_accept("application/grpc-web-text; charset=utf-8; q=0.2, application/grpc-web; q=0.3", ALWAYS_BINARY);
    assert_accept("application/grpc-web ; q=0.2 ,application/grpc-web-text ; q=0.3", ALWAYS_TEXT);
    assert_accept("application/grpc-web;Q=0.2, application/grpc-web-text;Q=0.3", ALWAYS_TEXT);
    assert_accept("application/grpc-web-text+proto;q=0.8, application/grpc-web+proto;q=0.7", ALWAYS_TEXT);
    /* the best q of a repeated range counts */
    assert_accept("application/grpc-web;q=0.1, application/grpc-web-text;q=0.5, application/grpc-web;q=0.9", ALWAYS_BINARY);
}

static void test_accept_q_zero_means_not_acceptable(void **state)
{
    (void)state;
    assert_accept("application/grpc-web-text;q=0", ALWAYS_BINARY);
    assert_accept("application/grpc-web;q=0", ALWAYS_TEXT);
    assert_accept("application/grpc-web-text;q=0.0", ALWAYS_BINARY);
    assert_accept("application/grpc-web-text;q=0.000", ALWAYS_BINARY);
    assert_accept("*/*, application/grpc-web-text;q=0", ALWAYS_BINARY);
    /* a low but non-zero q still beats not acceptable */
    assert_accept("application/grpc-web-text;q=0.001, application/grpc-web;q=0", ALWAYS_TEXT);
    assert_accept("application/grpc-web-text;q=0, application/grpc-web;q=0.001", ALWAYS_BINARY);
}

static void test_accept_request_vs_accept(void **state)
{
    (void)state;
    /* the Accept header overrides the request's encoding both ways */
    assert_false(wants_text("application/grpc-web", true));
    assert_true(wants_text("application/grpc-web-text", false));
    /* and agrees with it when they match */
    assert_true(wants_text("application/grpc-web-text", true));
    assert_false(wants_text("application/grpc-web", false));
}

/* Connect's types: unary by name (application/proto, application/json), streams as application/connect+codec. */
static void test_connect_types(void **state)
{
    (void)state;
    assert_ctype("application/proto", PTC_CT_CONNECT, "proto");
    assert_ctype("application/json", PTC_CT_CONNECT, "json");
    assert_ctype("Application/JSON; charset=utf-8", PTC_CT_CONNECT, "JSON");
    assert_ctype("application/connect+proto", PTC_CT_CONNECT_STREAM, "proto");
    assert_ctype("application/connect+json;charset=utf-8", PTC_CT_CONNECT_STREAM, "json");
    assert_ctype("application/connect+my.codec_2", PTC_CT_CONNECT_STREAM, "my.codec_2");
    assert_other("application/connect+");
    assert_other("application/connect");
    assert_other("application/connect+pro to");
    assert_other("application/connect+proto/x");
    assert_other("application/protobuf");
    assert_other("application/jsonx");
    /* the response types */
    char buf[64];
    bool text = true;
    ptc_ctype_t ct = {PTC_CT_CONNECT, PTC_STRLIT("json")};
    assert_int_equal(ptc_response_ctype(ct, PTC_STRLIT("application/grpc-web-text"), buf, sizeof(buf), &text), 16);
    assert_string_equal(buf, "application/json");
    assert_false(text);
    ct = (ptc_ctype_t){PTC_CT_CONNECT_STREAM, PTC_STRLIT("proto")};
    ptc_response_ctype(ct, PTC_STRLIT(""), buf, sizeof(buf), &text);
    assert_string_equal(buf, "application/connect+proto");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_web_types),
        cmocka_unit_test(test_native_grpc_types),
        cmocka_unit_test(test_case_insensitive),
        cmocka_unit_test(test_parameters_and_whitespace),
        cmocka_unit_test(test_non_matches),
        cmocka_unit_test(test_connect_types),
        cmocka_unit_test(test_respects_slice_length),
        cmocka_unit_test(test_codec_is_proto),
        cmocka_unit_test(test_accept_absent_follows_request),
        cmocka_unit_test(test_accept_exact),
        cmocka_unit_test(test_accept_wildcards_and_others_follow_request),
        cmocka_unit_test(test_accept_mixed_with_other_types),
        cmocka_unit_test(test_accept_q_values),
        cmocka_unit_test(test_accept_q_zero_means_not_acceptable),
        cmocka_unit_test(test_accept_request_vs_accept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
