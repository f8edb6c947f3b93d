/* Unit tests for src/grpcweb/timeout.c: grpc-timeout parsing and formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "portico/codec.h"

#define NS_PER_US UINT64_C(1000)
#define NS_PER_MS UINT64_C(1000000)
#define NS_PER_S UINT64_C(1000000000)
#define NS_PER_MIN (60 * NS_PER_S)
#define NS_PER_HOUR (3600 * NS_PER_S)

/* ---- helpers ---- */

static int parse_str(const char *s, uint64_t *out)
{
    return ptc_grpc_timeout_parse(ptc_iov(s, strlen(s)), out);
}

static void assert_parses(const char *s, uint64_t want)
{
    uint64_t got = 12345;
    int r = parse_str(s, &got);
    if (r != 0 || got != want)
        print_error("grpc-timeout \"%s\": r=%d got=%llu want=%llu\n", s, r, (unsigned long long)got, (unsigned long long)want);
    assert_int_equal(r, 0);
    assert_true(got == want);
}

static void assert_rejected(const char *s)
{
    uint64_t got = 0;
    int r = parse_str(s, &got);
    if (r != PTC_EINVAL)
        print_error("grpc-timeout \"%s\" accepted: r=%d got=%llu\n", s, r, (unsigned long long)got);
    assert_int_equal(r, PTC_EINVAL);
}

static uint64_t unit_ns(char unit)
{
    switch (unit) {
    case 'n':
        return 1;
    case 'u':
        return NS_PER_US;
    case 'm':
        return NS_PER_MS;
    case 'S':
        return NS_PER_S;
    case 'M':
        return NS_PER_MIN;
    case 'H':
        return NS_PER_HOUR;
    default:
        fail_msg("unexpected unit '%c'", unit);
        return 0;
    }
}

/* The next finer unit, or 0 for 'n'. */
static char finer_unit(char unit)
{
    switch (unit) {
    case 'u':
        return 'n';
    case 'm':
        return 'u';
    case 'S':
        return 'm';
    case 'M':
        return 'S';
    case 'H':
        return 'M';
    default:
        return 0;
    }
}

static void assert_formats(uint64_t ns, const char *want)
{
    char out[PTC_GRPC_TIMEOUT_STRLEN];
    memset(out, 'X', sizeof(out));
    size_t n = ptc_grpc_timeout_format(ns, out);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

/*
 * Checks the formatter's contract for ns: at most 8 digits and a valid unit, the finest such unit,
 * rounded up (never shortening the deadline) by less than one unit, and parseable back.
 */
static void check_format_contract(uint64_t ns)
{
    char out[PTC_GRPC_TIMEOUT_STRLEN];
    size_t n = ptc_grpc_timeout_format(ns, out);
    assert_true(n >= 2 && n <= PTC_GRPC_TIMEOUT_STRLEN - 1);
    assert_int_equal(out[n], '\0');
    assert_int_equal(strlen(out), n);
    for (size_t i = 0; i + 1 < n; i++)
        assert_true(out[i] >= '0' && out[i] <= '9');
    assert_true(n - 1 == 1 || out[0] != '0'); /* no leading zeros */

    char unit = out[n - 1];
    uint64_t u = unit_ns(unit);
    uint64_t value = 0;
    for (size_t i = 0; i + 1 < n; i++)
        value = value * 10 + (uint64_t)(out[i] - '0');
    assert_true(value <= 99999999);

    /* rounded up, by less than one unit: value == ceil(ns / u) */
    uint64_t ceil_q = ns / u + (ns % u != 0);
    if (value != ceil_q)
        print_error("format(%llu) = \"%s\", want %llu%c\n", (unsigned long long)ns, out, (unsigned long long)ceil_q, unit);
    assert_true(value == ceil_q);

    /* the finest unit that fits: the next finer one would need more than 8 digits */
    char f = finer_unit(unit);
    if (f != 0) {
        uint64_t fu = unit_ns(f);
        assert_true(ns / fu + (ns % fu != 0) > 99999999);
    }

    /* the round trip never shortens the deadline and stays within one unit (saturating at the top) */
    uint64_t back;
    assert_int_equal(ptc_grpc_timeout_parse(ptc_iov(out, n), &back), 0);
    assert_true(back >= ns);
    if (back != UINT64_MAX)
        assert_true(back - ns < u);
    else
        assert_true(value > UINT64_MAX / u); /* saturated only because value * u does not fit */
    /* less than one unit on a value of about 10^8 finer units: a relative error of at most ~1e-5 */
    if (back != UINT64_MAX)
        assert_true((back - ns) <= ns / 99999);
}

/* ---- parser ---- */

static void test_parse_every_unit(void **state)
{
    (void)state;
    assert_parses("1n", 1);
    assert_parses("1u", NS_PER_US);
    assert_parses("1m", NS_PER_MS);
    assert_parses("1S", NS_PER_S);
    assert_parses("1M", NS_PER_MIN);
    assert_parses("1H", NS_PER_HOUR);

    assert_parses("0n", 0);
    assert_parses("0H", 0);
    assert_parses("7n", 7);
    assert_parses("250u", 250000);
    assert_parses("100m", 100000000);
    assert_parses("30S", 30000000000);
    assert_parses("5M", 300000000000);
    assert_parses("2H", 7200000000000);
    assert_parses("007S", 7000000000);
}

static void test_parse_eight_digits(void **state)
{
    (void)state;
    assert_parses("99999999n", 99999999);
    assert_parses("99999999u", 99999999000);
    assert_parses("99999999m", 99999999000000);
    assert_parses("99999999S", 99999999000000000);
    assert_parses("99999999M", 5999999940000000000);
    assert_parses("12345678m", 12345678000000);
    assert_parses("00000001H", NS_PER_HOUR);
    /* 99999999 hours is ~3.6e20 ns: beyond uint64_t, so it saturates */
    assert_parses("99999999H", UINT64_MAX);
    assert_parses("5124095H", 5124095 * NS_PER_HOUR); /* the largest whole-hour value that fits */
    assert_parses("5124096H", UINT64_MAX);
}

static void test_parse_long_values_saturate(void **state)
{
    (void)state;
    /* more than 8 digits: accepted (the Google client sends them), exact while they fit */
    assert_parses("123456789n", 123456789);
    assert_parses("1234567890123m", 1234567890123 * NS_PER_MS);
    assert_parses("000000000000000000000000000001S", NS_PER_S); /* leading zeros never saturate */

    /* around the uint64_t limit with the 1 ns unit: exact up to UINT64_MAX, then saturated */
    assert_parses("18446744073709551615n", UINT64_MAX);
    assert_parses("18446744073709551614n", UINT64_MAX - 1);
    assert_parses("18446744073709551610n", UINT64_MAX - 5);
    assert_parses("18446744073709551609n", UINT64_MAX - 6);
    assert_parses("18446744073709551600n", UINT64_MAX - 15);
    assert_parses("1844674407370955161n", UINT64_MAX / 10);
    assert_parses("18446744073709551616n", UINT64_MAX);
    assert_parses("18446744073709551619n", UINT64_MAX);
    assert_parses("18446744073709551620n", UINT64_MAX);
    assert_parses("99999999999999999999n", UINT64_MAX);
    assert_parses("184467440737095516150n", UINT64_MAX);

    /* the multiplication by the unit saturates too */
    assert_parses("18446744073709551u", 18446744073709551000u);
    assert_parses("18446744073709552u", UINT64_MAX);
    assert_parses("18446744073709m", 18446744073709000000u);
    assert_parses("18446744073710m", UINT64_MAX);
    assert_parses("99999999999999999999999H", UINT64_MAX);
    assert_parses("99999999999999999999999999999999999999999999999999999999999999999999999999999999m", UINT64_MAX);
}

static void test_parse_rejects_garbage(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",     "m",    "H",  "10",   "10x",  "-5m",  "+5m",   "1 0m", "5mm",  "abc",  "5 m",
        "1.5S", "5h",   "5s", "5U",   "5N",   "5ms",  "0x10m", " ",    "  \t", "m5",   "5m5",
        "5\0m", "1e3m", "٣m", "5\rm", "5m\r", "\n5m", "5mH",   "5 mH", "5Hm",  "--1m", "1,000m",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++)
        assert_rejected(bad[i]);

    /* an embedded NUL is a non-digit, not a terminator */
    uint64_t ns;
    assert_int_equal(ptc_grpc_timeout_parse(ptc_iov("5\0m", 3), &ns), PTC_EINVAL);
    assert_int_equal(ptc_grpc_timeout_parse(ptc_iov("", 0), &ns), PTC_EINVAL);
    assert_int_equal(ptc_grpc_timeout_parse(ptc_iov(NULL, 0), &ns), PTC_EINVAL);
}

static void test_parse_trims_surrounding_spaces(void **state)
{
    (void)state;
    assert_parses(" 5m", 5 * NS_PER_MS);
    assert_parses("5m ", 5 * NS_PER_MS);
    assert_parses("  5m  ", 5 * NS_PER_MS);
    assert_parses("\t5m\t", 5 * NS_PER_MS);
    assert_parses(" \t 100S \t ", 100 * NS_PER_S);
    assert_rejected(" 5 m ");
    assert_rejected(" m ");
}

static void test_parse_respects_slice_length(void **state)
{
    (void)state;
    /* wire values are not NUL-terminated: only the slice counts */
    static const char buf[] = "15m99";
    uint64_t ns;
    assert_int_equal(ptc_grpc_timeout_parse(ptc_iov(buf, 3), &ns), 0);
    assert_true(ns == 15 * NS_PER_MS);
    assert_int_equal(ptc_grpc_timeout_parse(ptc_iov(buf, 2), &ns), PTC_EINVAL);
    assert_int_equal(ptc_grpc_timeout_parse(ptc_iov(buf, 4), &ns), PTC_EINVAL);
}

/* ---- formatter ---- */

static void test_format_exact_values(void **state)
{
    (void)state;
    assert_formats(0, "0n");
    assert_formats(1, "1n");
    assert_formats(999, "999n");
    assert_formats(1000, "1000n");
    assert_formats(99999999, "99999999n");
    /* 9 digits of ns: the next unit */
    assert_formats(100000000, "100000u");
    assert_formats(NS_PER_S, "1000000u");
    assert_formats(99999999 * NS_PER_US, "99999999u");
    assert_formats(100000000 * NS_PER_US, "100000m");
    assert_formats(30 * NS_PER_S, "30000000u");
    assert_formats(100 * NS_PER_S, "100000m");
    assert_formats(99999999 * NS_PER_MS, "99999999m");
    assert_formats(100000000 * NS_PER_MS, "100000S");
    assert_formats(99999999 * NS_PER_S, "99999999S");
    assert_formats(100000000 * NS_PER_S, "1666667M");
    assert_formats(100020000 * NS_PER_S, "1667000M");
    assert_formats(99999999 * NS_PER_MIN, "99999999M");
    assert_formats(100000020 * NS_PER_MIN, "1666667H");
    assert_formats(5124095 * NS_PER_HOUR, "5124095H");
    assert_formats(UINT64_MAX, "5124096H");
}

static void test_format_rounds_up(void **state)
{
    (void)state;
    assert_formats(100000001, "100001u");
    assert_formats(100000999, "100001u");
    assert_formats(100001000, "100001u");
    assert_formats(100001001, "100002u");
    assert_formats(99999999 * NS_PER_US + 1, "100000m");
    assert_formats(99999999999, "100000m");
    assert_formats(100000000000, "100000m");
    assert_formats(100000000001, "100001m");
    assert_formats(99999999 * NS_PER_MS + 1, "100000S");
    assert_formats(99999999 * NS_PER_S + 1, "1666667M");
    assert_formats(99999999 * NS_PER_MIN + 1, "1666667H");
    assert_formats(UINT64_MAX - 1, "5124096H");
}

static void test_format_contract_and_round_trip(void **state)
{
    (void)state;
    /* every power of ten and its neighbours, and every threshold between units and its neighbours */
    uint64_t p = 1;
    for (int i = 0; i < 20; i++, p = p <= UINT64_MAX / 10 ? p * 10 : UINT64_MAX) {
        check_format_contract(p - 1);
        check_format_contract(p);
        check_format_contract(p + 1);
    }
    static const uint64_t units[] = {1, NS_PER_US, NS_PER_MS, NS_PER_S, NS_PER_MIN, NS_PER_HOUR};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(units); i++) {
        uint64_t edge = 99999999 * units[i];
        for (uint64_t d = 0; d <= 3; d++) {
            check_format_contract(edge - d);
            check_format_contract(edge + d);
            check_format_contract(edge + units[i] - d);
        }
    }
    for (uint64_t d = 0; d < 1000; d++) {
        check_format_contract(d);
        check_format_contract(UINT64_MAX - d);
    }
    /* pseudo-random values of every magnitude */
    uint64_t x = 88172645463325252u;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        check_format_contract(x >> (i % 64));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_every_unit),
        cmocka_unit_test(test_parse_eight_digits),
        cmocka_unit_test(test_parse_long_values_saturate),
        cmocka_unit_test(test_parse_rejects_garbage),
        cmocka_unit_test(test_parse_trims_surrounding_spaces),
        cmocka_unit_test(test_parse_respects_slice_length),
        cmocka_unit_test(test_format_exact_values),
        cmocka_unit_test(test_format_rounds_up),
        cmocka_unit_test(test_format_contract_and_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
