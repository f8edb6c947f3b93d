/* Unit tests for src/filter/trace.c: traceparent and tracestate against the W3C test suite's cases
 * (w3c/trace-context test/test.py), the ChaCha core against RFC 8439, and the id generator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "portico/trace.h"

/* ---- helpers ---- */

static ptc_iovec_t S(const char *s)
{
    return ptc_iov(s, strlen(s));
}

static void hex_of(char *dst, const void *src, size_t n)
{
    dst[ptc_hex_encode(dst, src, n)] = '\0';
}

static bool zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* A string of n copies of c followed by tail, in a static buffer. */
static const char *repeat(char c, size_t n, const char *tail)
{
    static char buf[2048];
    assert_true(n + strlen(tail) < sizeof(buf));
    memset(buf, c, n);
    memcpy(buf + n, tail, strlen(tail) + 1);
    return buf;
}

static int tracestate(const char *v)
{
    size_t n;
    return ptc_tracestate_check(S(v), &n);
}

static size_t tracestate_members(const char *v)
{
    size_t n = 12345;
    int ret = ptc_tracestate_check(S(v), &n);
    if (ret != 0)
        print_error("tracestate \"%s\" refused\n", v);
    assert_int_equal(ret, 0);
    return n;
}

#define VALID_TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define SUITE_TRACE "12345678901234567890123456789012"
#define SUITE_PARENT "1234567890123456"

/* ---- hex and the ChaCha core ---- */

static void test_hex_encode(void **state)
{
    (void)state;
    static const uint8_t bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff};
    char out[2 * sizeof(bytes) + 1];
    memset(out, 'x', sizeof(out));
    assert_int_equal(ptc_hex_encode(out, bytes, sizeof(bytes)), 16);
    assert_int_equal(out[16], 'x'); /* no NUL */
    out[16] = '\0';
    assert_string_equal(out, "00017f80abcdefff");
    assert_int_equal(ptc_hex_encode(out, bytes, 0), 0);

    /* every byte value at every place, for lengths on both sides of the four-byte steps; nothing written past 2n */
    for (size_t n = 1; n <= 9; n++) {
        for (size_t at = 0; at < n; at++) {
            for (unsigned b = 0; b < 256; b++) {
                uint8_t in[9];
                char got[20], want[20];
                for (size_t i = 0; i < n; i++)
                    in[i] = (uint8_t)(i * 37 + 11);
                in[at] = (uint8_t)b;
                memset(got, 'x', sizeof(got));
                assert_int_equal(ptc_hex_encode(got, in, n), 2 * n);
                assert_int_equal(got[2 * n], 'x');
                got[2 * n] = '\0';
                for (size_t i = 0; i < n; i++)
                    snprintf(want + 2 * i, 3, "%02x", in[i]);
                assert_string_equal(got, want);
            }
        }
    }
}

/* RFC 8439 A.1 vectors 1 and 2 (zero key, zero nonce, blocks 0 and 1), and blocks 7..10 under key 00..1f
 * (from Python's cryptography), so all four lanes and the key load are checked; then the 8- and 12-round
 * variants of the zero-key block (draft-strombergson-chacha-test-vectors TC1). */
static void test_chacha_known_answers(void **state)
{
    (void)state;
    uint32_t key[8] = {0};
    uint8_t out[256];
    char hex[513];

    ptc__chacha_blocks(key, 0, 20, out);
    hex_of(hex, out, 128);
    assert_string_equal(hex, "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
                             "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
                             "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
                             "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f");

    ptc__chacha_blocks(key, 0, 12, out);
    hex_of(hex, out, 64);
    assert_string_equal(hex, "9bf49a6a0755f953811fce125f2683d50429c3bb49e074147e0089a52eae155f"
                             "0564f879d27ae3c02ce82834acfa8c793a629f2ca0de6919610be82f411326be");
    ptc__chacha_blocks(key, 0, 8, out);
    hex_of(hex, out, 64);
    assert_string_equal(hex, "3e00ef2f895f40d67f5bb8e81f09a5a12c840ec3ce9a7f3b181be188ef711a1e"
                             "984ce172b9216f419f445367456d5619314a42a3da86b001387bfdb80e0cfe42");

    for (uint32_t i = 0; i < 8; i++) {
        uint32_t b = 4 * i;
        key[i] = b | (b + 1) << 8 | (b + 2) << 16 | (b + 3) << 24;
    }
    ptc__chacha_blocks(key, 7, 20, out);
    hex_of(hex, out, 256);
    assert_string_equal(hex, "185838beabf85b1605467c46149350e877815eefc73f7d9b3d94b198d7fef9c9"
                             "17cd76043d85feff6cfc7272f1e6dfb201def102acf0175b4fe41f026a6d9cf2"
                             "4b562eb04c19cb21e1625bd563cc818ed0ddc55580ff29b6fd4ec5a1b1757451"
                             "a0e7a1c1faf337c1631923485771e8bc20737069f272e743da9e004eb41ab8c5"
                             "97f78e897a8551cc715db3f8901f47b7893f0ebbcd0af7d798de4ce81d171730"
                             "9bbe01e729888c5b6646c23171c70432ec34bfc647603cce95e6ef375026d607"
                             "47c181aa070870f212a5cdf13f9d32dfd93b7d9d80fb7817f9b55874e52f6ec9"
                             "426faedde352ae3915c9a9d4a4c0573f956e6018d65ee23197594b12437425fa");
}

/* ---- traceparent ---- */

static void assert_tp(const char *value, uint8_t version, const char *trace_id, const char *parent_id, uint8_t flags)
{
    ptc_traceparent_t t;
    char hex[33];
    int ret = ptc_traceparent_parse(S(value), &t);
    if (ret != 0)
        print_error("traceparent \"%s\" refused\n", value);
    assert_int_equal(ret, 0);
    assert_int_equal(t.version, version);
    hex_of(hex, t.trace_id, sizeof(t.trace_id));
    assert_string_equal(hex, trace_id);
    hex_of(hex, t.parent_id, sizeof(t.parent_id));
    assert_string_equal(hex, parent_id);
    assert_int_equal(t.flags, flags);
}

static void assert_tp_invalid(const char *value)
{
    ptc_traceparent_t t;
    memset(&t, 0xa5, sizeof(t));
    int ret = ptc_traceparent_parse(S(value), &t);
    if (ret != PTC_EINVAL)
        print_error("traceparent \"%s\" accepted\n", value);
    assert_int_equal(ret, PTC_EINVAL);
    /* untouched */
    assert_int_equal(t.version, 0xa5);
    assert_int_equal(t.trace_id[0], 0xa5);
    assert_int_equal(t.flags, 0xa5);
}

static void test_traceparent_valid(void **state)
{
    (void)state;
    assert_tp(VALID_TP, 0, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0x01);
    assert_tp("00-" SUITE_TRACE "-" SUITE_PARENT "-00", 0, SUITE_TRACE, SUITE_PARENT, 0x00);
    /* version 00 keeps every flag bit (Level 2's random flag, and ones not defined yet) */
    assert_tp("00-" SUITE_TRACE "-" SUITE_PARENT "-03", 0, SUITE_TRACE, SUITE_PARENT, 0x03);
    assert_tp("00-" SUITE_TRACE "-" SUITE_PARENT "-ff", 0, SUITE_TRACE, SUITE_PARENT, 0xff);
    /* one non-zero byte is enough */
    assert_tp("00-00000000000000000000000000000001-0000000000000001-01", 0, "00000000000000000000000000000001", "0000000000000001",
              1);
    assert_tp("00-80000000000000000000000000000000-8000000000000000-01", 0, "80000000000000000000000000000000", "8000000000000000",
              1);
    /* every hex digit */
    assert_tp("00-0123456789abcdef0123456789abcdef-fedcba9876543210-01", 0, "0123456789abcdef0123456789abcdef", "fedcba9876543210",
              1);
}

/* test_traceparent_ows_handling */
static void test_traceparent_ows(void **state)
{
    (void)state;
    static const char *const ok[] = {" " VALID_TP,  "\t" VALID_TP,        VALID_TP " ",
                                     VALID_TP "\t", "\t " VALID_TP " \t", "   " VALID_TP "   "};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(ok); i++)
        assert_tp(ok[i], 0, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0x01);
    /* only spaces and tabs are OWS; and nothing inside */
    assert_tp_invalid("\r" VALID_TP);
    assert_tp_invalid(VALID_TP "\n");
    assert_tp_invalid(VALID_TP "\v");
    assert_tp_invalid("00 -4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_tp_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736 -00f067aa0ba902b7-01");
    assert_tp_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7- 01");
}

static void test_traceparent_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        " ",
        "00",
        /* all-zero ids (test_traceparent_trace_id_all_zero, _parent_id_all_zero) */
        "00-00000000000000000000000000000000-" SUITE_PARENT "-01",
        "00-" SUITE_TRACE "-0000000000000000-01",
        "00-00000000000000000000000000000000-0000000000000000-01",
        /* version: ff, illegal characters, upper case, too long, too short */
        "ff-" SUITE_TRACE "-" SUITE_PARENT "-01",
        ".0-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "0.-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "0A-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "CC-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "FF-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "000-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "0000-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "0-" SUITE_TRACE "-" SUITE_PARENT "-01",
        "-0" SUITE_TRACE "-" SUITE_PARENT "-01",
        "g0-" SUITE_TRACE "-" SUITE_PARENT "-01",
        /* trace-id: illegal characters, upper case, too long, too short */
        "00-.2345678901234567890123456789012-" SUITE_PARENT "-01",
        "00-1234567890123456789012345678901.-" SUITE_PARENT "-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473A-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47+6-00f067aa0ba902b7-01",
        "00-123456789012345678901234567890123-" SUITE_PARENT "-01",
        "00-1234567890123456789012345678901-" SUITE_PARENT "-01",
        /* parent-id */
        "00-" SUITE_TRACE "-.234567890123456-01",
        "00-" SUITE_TRACE "-123456789012345.-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bZ-01",
        "00-" SUITE_TRACE "-12345678901234567-01",
        "00-" SUITE_TRACE "-123456789012345-01",
        /* flags */
        "00-" SUITE_TRACE "-" SUITE_PARENT "-.0",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-0.",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-0A",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-0g",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-001",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-1",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-",
        "00-" SUITE_TRACE "-" SUITE_PARENT,
        /* missing or misplaced dashes */
        "004bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473600f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b701",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736000f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "00--4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        /* version 00 is exactly 55 characters (test_traceparent_version_0x00) */
        "00-" SUITE_TRACE "-" SUITE_PARENT "-01.",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-01-what-the-future-will-be-like",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-01-",
        "00-" SUITE_TRACE "-" SUITE_PARENT "-010",
        /* a higher version with something other than '-' after the flags (test_traceparent_version_0xcc) */
        "cc-" SUITE_TRACE "-" SUITE_PARENT "-01.what-the-future-will-not-be-like",
        "cc-" SUITE_TRACE "-" SUITE_PARENT "-010",
        "cc-" SUITE_TRACE "-" SUITE_PARENT "-01 -x",
        /* a higher version still needs everything else right */
        "cc-00000000000000000000000000000000-" SUITE_PARENT "-01",
        "cc-" SUITE_TRACE "-0000000000000000-01-x",
        "cc-" SUITE_TRACE "-" SUITE_PARENT "-0",
        "cc-" SUITE_TRACE "-" SUITE_PARENT "-0A-x",
        "cc-" SUITE_TRACE "-" SUITE_PARENT,
        /* two headers joined into one value */
        VALID_TP "," VALID_TP,
        VALID_TP ", " VALID_TP,
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++)
        assert_tp_invalid(bad[i]);

    /* a NUL is a byte like any other */
    ptc_traceparent_t t;
    char buf[] = VALID_TP;
    buf[10] = '\0';
    assert_int_equal(ptc_traceparent_parse(ptc_iov(buf, sizeof(buf) - 1), &t), PTC_EINVAL);
    assert_int_equal(ptc_traceparent_parse(ptc_iov(NULL, 0), &t), PTC_EINVAL);
}

/* Every byte value at every hex digit's place: only 0-9 and a-f are digits (upper case is not), and each digit
 * decodes to its value (the ids and flags format back to the same text; the version is read). */
static void test_traceparent_every_digit(void **state)
{
    (void)state;
    for (size_t at = 0; at < PTC_TRACEPARENT_LEN; at++) {
        if (at == 2 || at == 35 || at == 52)
            continue;
        for (int c = 0; c < 256; c++) {
            char buf[] = VALID_TP, out[PTC_TRACEPARENT_LEN + 1];
            ptc_traceparent_t t;
            buf[at] = (char)c;
            bool digit = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            int ret = ptc_traceparent_parse(ptc_iov(buf, sizeof(buf) - 1), &t);
            if (!digit || (at < 2 && c == 'f' && buf[1 - at] == 'f')) {
                if (ret != PTC_EINVAL)
                    fail_msg("byte 0x%02x at %zu accepted", (unsigned)c, at);
                continue;
            }
            if (ret != 0)
                fail_msg("byte 0x%02x at %zu refused", (unsigned)c, at);
            if (at < 2) {
                unsigned v = (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
                assert_int_equal(t.version, at == 0 ? v << 4 : v);
                continue;
            }
            ptc_traceparent_format(&t, out);
            assert_string_equal(out, buf);
        }
    }
}

/* The forward-compatibility rule: a higher version is read by its first 55 characters when what follows is
 * nothing or starts with '-'; only its sampled flag means anything. */
static void test_traceparent_future_versions(void **state)
{
    (void)state;
    assert_tp("cc-" SUITE_TRACE "-" SUITE_PARENT "-01", 0xcc, SUITE_TRACE, SUITE_PARENT, 1);
    assert_tp("cc-" SUITE_TRACE "-" SUITE_PARENT "-01-what-the-future-will-be-like", 0xcc, SUITE_TRACE, SUITE_PARENT, 1);
    assert_tp("cc-" SUITE_TRACE "-" SUITE_PARENT "-01-", 0xcc, SUITE_TRACE, SUITE_PARENT, 1);
    assert_tp("01-" SUITE_TRACE "-" SUITE_PARENT "-00-x", 0x01, SUITE_TRACE, SUITE_PARENT, 0);
    assert_tp("fe-" SUITE_TRACE "-" SUITE_PARENT "-ff-anything,at all", 0xfe, SUITE_TRACE, SUITE_PARENT, 1);
    assert_tp("cc-" SUITE_TRACE "-" SUITE_PARENT "-02", 0xcc, SUITE_TRACE, SUITE_PARENT, 0);
    assert_tp(" cc-" SUITE_TRACE "-" SUITE_PARENT "-09-more\t", 0xcc, SUITE_TRACE, SUITE_PARENT, 1);
}

static void test_traceparent_format(void **state)
{
    (void)state;
    ptc_traceparent_t t;
    char out[PTC_TRACEPARENT_LEN + 1];

    assert_int_equal(ptc_traceparent_parse(S(VALID_TP), &t), 0);
    memset(out, 'x', sizeof(out));
    assert_int_equal(ptc_traceparent_format(&t, out), PTC_TRACEPARENT_LEN);
    assert_string_equal(out, VALID_TP);

    /* always sent as version 00, from just the first 55 characters */
    assert_int_equal(ptc_traceparent_parse(S("cc-" SUITE_TRACE "-" SUITE_PARENT "-01-future"), &t), 0);
    assert_int_equal(ptc_traceparent_format(&t, out), PTC_TRACEPARENT_LEN);
    assert_string_equal(out, "00-" SUITE_TRACE "-" SUITE_PARENT "-01");

    /* flags go out as they are */
    t.flags = 0xa3;
    ptc_traceparent_format(&t, out);
    assert_string_equal(out, "00-" SUITE_TRACE "-" SUITE_PARENT "-a3");

    /* fresh ids round-trip */
    for (int i = 0; i < 1000; i++) {
        ptc_traceparent_t a = {.version = 0, .flags = (uint8_t)i}, b;
        ptc_trace_new_trace_id(a.trace_id);
        ptc_trace_new_span_id(a.parent_id);
        ptc_traceparent_format(&a, out);
        assert_int_equal(strlen(out), PTC_TRACEPARENT_LEN);
        assert_int_equal(ptc_traceparent_parse(S(out), &b), 0);
        assert_memory_equal(&a, &b, sizeof(a));
    }
}

/* ---- tracestate ---- */

static void test_tracestate_valid(void **state)
{
    (void)state;
    assert_int_equal(tracestate_members(""), 0);
    assert_int_equal(tracestate_members(" "), 0);
    assert_int_equal(tracestate_members(",,, \t,"), 0);
    assert_int_equal(tracestate_members("foo=1"), 1);
    assert_int_equal(tracestate_members("foo=1,bar=2"), 2);
    assert_int_equal(tracestate_members("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), 2);
    /* test_tracestate_ows_handling */
    assert_int_equal(tracestate_members("foo=1 \t , \t bar=2, \t baz=3"), 3);
    assert_int_equal(tracestate_members("foo=1\t \t,\t \tbar=2,\t \tbaz=3"), 3);
    assert_int_equal(tracestate_members(" foo=1"), 1);
    assert_int_equal(tracestate_members("\tfoo=1"), 1);
    assert_int_equal(tracestate_members("foo=1 "), 1);
    assert_int_equal(tracestate_members("foo=1\t"), 1);
    assert_int_equal(tracestate_members("\t foo=1 \t"), 1);
    /* empty members, as several lines joined make them (test_tracestate_empty_header) */
    assert_int_equal(tracestate_members("foo=1,"), 1);
    assert_int_equal(tracestate_members(",foo=1"), 1);
    assert_int_equal(tracestate_members("foo=1,,bar=2"), 2);
    assert_int_equal(tracestate_members("foo=1, ,\t, bar=2"), 2);
    /* test_tracestate_multiple_headers_different_keys, joined */
    assert_int_equal(tracestate_members("foo=1,bar=2,rojo=1,congo=2,baz=3"), 5);
    /* a value may hold spaces (not at its end), and start with one */
    assert_int_equal(tracestate_members("foo=a b c"), 1);
    assert_int_equal(tracestate_members("foo= x"), 1);
    /* test_tracestate_all_allowed_characters */
    static const char key[] = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    char value[128], member[512];
    size_t n = 0;
    for (int c = 0x20; c <= 0x7e; c++)
        if (c != ',' && c != '=')
            value[n++] = (char)c;
    value[n] = '\0';
    snprintf(member, sizeof(member), "%s=%s", key, value);
    assert_int_equal(tracestate_members(member), 1);
    snprintf(member, sizeof(member), "%s@a-z0-9_-*/=%s", key, value);
    assert_int_equal(tracestate_members(member), 1);
    /* members may be NULL */
    assert_int_equal(ptc_tracestate_check(S("foo=1"), NULL), 0);
    assert_int_equal(ptc_tracestate_check(ptc_iov(NULL, 0), NULL), 0);
}

/* test_tracestate_member_count_limit */
static void test_tracestate_member_limit(void **state)
{
    (void)state;
    char buf[1024];
    size_t len = 0;
    for (int i = 1; i <= 33; i++) {
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%sbar%02d=%02d", i > 1 ? "," : "", i, i);
        assert_int_equal(tracestate(buf), i <= 32 ? 0 : PTC_EINVAL);
    }
    /* 32 members and empty ones around them are fine */
    char *comma = strrchr(buf, ',');
    *comma = '\0';
    assert_int_equal(tracestate_members(buf), 32);
    char padded[sizeof(buf) + 16];
    snprintf(padded, sizeof(padded), ",,\t,%s,, ,", buf);
    assert_int_equal(tracestate_members(padded), 32);
}

/* test_tracestate_key_length_limit, and values of 256 and 257 characters */
static void test_tracestate_lengths(void **state)
{
    (void)state;
    char buf[1024];

    assert_int_equal(tracestate(repeat('z', 256, "=1")), 0);
    assert_int_equal(tracestate(repeat('z', 257, "=1")), PTC_EINVAL);
    snprintf(buf, sizeof(buf), "foo=1,%s", repeat('z', 257, "=1"));
    assert_int_equal(tracestate(buf), PTC_EINVAL);

    snprintf(buf, sizeof(buf), "%s", repeat('t', 241, "@"));
    snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s", repeat('v', 14, "=1"));
    assert_int_equal(tracestate(buf), 0);
    assert_int_equal(tracestate(repeat('t', 242, "@v=1")), PTC_EINVAL);
    assert_int_equal(tracestate(repeat('v', 14, "=1")), 0);
    snprintf(buf, sizeof(buf), "t@%s", repeat('v', 14, "=1"));
    assert_int_equal(tracestate(buf), 0);
    snprintf(buf, sizeof(buf), "t@%s", repeat('v', 15, "=1"));
    assert_int_equal(tracestate(buf), PTC_EINVAL);
    assert_int_equal(tracestate("t@v=1"), 0);

    assert_int_equal(tracestate(repeat('x', 256, "")), PTC_EINVAL); /* no '=' */
    snprintf(buf, sizeof(buf), "foo=%s", repeat('x', 256, ""));
    assert_int_equal(tracestate(buf), 0);
    snprintf(buf, sizeof(buf), "foo=%s", repeat('x', 257, ""));
    assert_int_equal(tracestate(buf), PTC_EINVAL);
    /* 256 with trailing OWS trimmed; 255 then a space inside is fine */
    snprintf(buf, sizeof(buf), "foo=%s", repeat('x', 256, " \t, bar=1"));
    assert_int_equal(tracestate_members(buf), 2);
    snprintf(buf, sizeof(buf), "foo= %s", repeat('x', 255, ""));
    assert_int_equal(tracestate(buf), 0);
    snprintf(buf, sizeof(buf), "foo= %s", repeat('x', 256, ""));
    assert_int_equal(tracestate(buf), PTC_EINVAL);
}

static void test_tracestate_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        /* test_tracestate_key_illegal_characters */
        "foo =1",
        "FOO=1",
        "Foo=1",
        "foo.bar=1",
        "foo\tbar=1",
        "foo:bar=1",
        "1foo=1", /* a simple key starts with lcalpha */
        "_foo=1",
        "*=1",
        "=1",
        "foo",
        "foo,bar=1",
        /* test_tracestate_key_illegal_vendor_format */
        "foo@=1,bar=2",
        "@foo=1,bar=2",
        "foo@@bar=1,bar=2",
        "foo@bar@baz=1,bar=2",
        "foo@1bar=1", /* a system-id starts with lcalpha */
        "foo@_bar=1",
        "_foo@bar=1", /* a tenant-id starts with lcalpha or a digit */
        "Foo@bar=1",
        "foo@Bar=1",
        "foo@bar.baz=1",
        /* test_tracestate_value_illegal_characters */
        "foo=bar=baz",
        "foo=,bar=3",
        "foo=",
        "foo= ",
        "foo=\t",
        "foo=a\tb",
        "foo=a\x7f",
        "foo=\xc3\xa9",
        "foo=a\r\nbar=1",
        "foo=1;bar=2 baz=3",
        /* test_tracestate_duplicated_keys */
        "foo=1,foo=1",
        "foo=1,foo=2",
        "foo=1, bar=2 ,foo=3",
        "t@v=1,t@v=2",
        /* and an invalid member anywhere spoils the whole list */
        "foo=1,bar=2,BAZ=3",
        "foo=1,bar=2,baz",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        int ret = tracestate(bad[i]);
        if (ret != PTC_EINVAL)
            print_error("tracestate \"%s\" accepted\n", bad[i]);
        assert_int_equal(ret, PTC_EINVAL);
    }
    /* keys are case-sensitive and the tenant is part of the key: not duplicates */
    assert_int_equal(tracestate_members("foo=1,t@foo=2,foo@t=3,u@foo=4"), 4);
    /* a NUL byte inside the value */
    static const char nul[] = "foo=a\0b";
    assert_int_equal(ptc_tracestate_check(ptc_iov(nul, sizeof(nul) - 1), NULL), PTC_EINVAL);
}

/* ---- ids and the generator ---- */

#define DRAWS 200000

static int cmp16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static int cmp8(const void *a, const void *b)
{
    return memcmp(a, b, 8);
}

static void test_ids_never_zero_and_distinct(void **state)
{
    (void)state;
    uint8_t(*trace)[16] = malloc(DRAWS * sizeof(*trace));
    uint8_t(*span)[8] = malloc(DRAWS * sizeof(*span));
    assert_non_null(trace);
    assert_non_null(span);
    for (size_t i = 0; i < DRAWS; i++) {
        ptc_trace_new_trace_id(trace[i]);
        ptc_trace_new_span_id(span[i]);
        assert_false(zero(trace[i], 16));
        assert_false(zero(span[i], 8));
    }
    qsort(trace, DRAWS, sizeof(*trace), cmp16);
    qsort(span, DRAWS, sizeof(*span), cmp8);
    for (size_t i = 1; i < DRAWS; i++) {
        assert_memory_not_equal(trace[i - 1], trace[i], 16);
        assert_memory_not_equal(span[i - 1], span[i], 8); /* a collision among 2^64: ~1e-9 */
    }
    free(trace);
    free(span);
}

/* Sizes across refills give the same kind of bytes: each bit set about half the time, every byte value seen. */
static void test_random_bytes(void **state)
{
    (void)state;
    enum { N = 1 << 20 };
    uint8_t *buf = calloc(1, N + 1);
    assert_non_null(buf);
    size_t off = 0, step = 0;
    while (off < N) {
        size_t n = PTC_MIN((step * 37) % 1100, N - off); /* 0 .. 1099: below, at and above a refill's 480 bytes */
        ptc_random_bytes(buf + off, n);
        off += n;
        step++;
    }
    ptc_random_bytes(buf + N, 0); /* nothing */
    assert_int_equal(buf[N], 0);

    size_t ones[8] = {0}, seen[256] = {0};
    for (size_t i = 0; i < N; i++) {
        seen[buf[i]]++;
        for (int b = 0; b < 8; b++)
            ones[b] += (buf[i] >> b) & 1;
    }
    for (int b = 0; b < 8; b++) /* mean N/2, sd 512: 10 sd */
        assert_in_range(ones[b], N / 2 - 5120, N / 2 + 5120);
    for (int v = 0; v < 256; v++) /* mean 4096, sd 64 */
        assert_in_range(seen[v], 4096 - 640, 4096 + 640);
    free(buf);
}

static void *draw_thread(void *arg)
{
    ptc_random_bytes(arg, 64);
    return NULL;
}

/* Each thread keys its own generator: two threads (and the main one) never see the same stream. */
static void test_threads_differ(void **state)
{
    (void)state;
    uint8_t a[64], b[64], m[64];
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, draw_thread, a), 0);
    assert_int_equal(pthread_create(&tb, NULL, draw_thread, b), 0);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);
    ptc_random_bytes(m, sizeof(m));
    assert_memory_not_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, m, sizeof(a));
    assert_memory_not_equal(b, m, sizeof(b));
    assert_false(zero(a, sizeof(a)));
    assert_false(zero(b, sizeof(b)));
}

/* A child of fork(2) rekeys: it must not hand out the ids its parent hands out next. */
static void test_fork_rekeys(void **state)
{
    (void)state;
    uint8_t warm[8], parent[32], child[32];
    int fds[2];
    ptc_random_bytes(warm, sizeof(warm)); /* this thread is keyed before the fork */
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t c[32];
        ptc_random_bytes(c, sizeof(c));
        _exit(write(fds[1], c, sizeof(c)) == (ssize_t)sizeof(c) ? 0 : 1);
    }
    ptc_random_bytes(parent, sizeof(parent));
    assert_int_equal(read(fds[0], child, sizeof(child)), sizeof(child));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    close(fds[1]);
    assert_memory_not_equal(parent, child, sizeof(parent));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_chacha_known_answers),
        cmocka_unit_test(test_traceparent_valid),
        cmocka_unit_test(test_traceparent_ows),
        cmocka_unit_test(test_traceparent_invalid),
        cmocka_unit_test(test_traceparent_every_digit),
        cmocka_unit_test(test_traceparent_future_versions),
        cmocka_unit_test(test_traceparent_format),
        cmocka_unit_test(test_tracestate_valid),
        cmocka_unit_test(test_tracestate_member_limit),
        cmocka_unit_test(test_tracestate_lengths),
        cmocka_unit_test(test_tracestate_invalid),
        cmocka_unit_test(test_ids_never_zero_and_distinct),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_threads_differ),
        cmocka_unit_test(test_fork_rekeys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
