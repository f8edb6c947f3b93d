/* Unit tests for src/filter/cors.c: origin patterns and matching, decisions, preflight answers, the headers of
 * actual responses (Expose-Headers), and the $httpHeaders URL parameter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/cors.h"

/* ---- helpers ---- */

static ptc_iovec_t S(const char *s)
{
    return ptc_iov(s, strlen(s));
}

/* A policy allowing the given patterns, otherwise ptc_cors_config_init's defaults. */
static void policy_init(ptc_cors_config_t *c, const char *const *patterns, size_t n)
{
    char err[256];
    ptc_cors_config_init(c);
    c->enabled = true;
    if (n == 0)
        return;
    c->origins = calloc(n, sizeof(*c->origins));
    assert_non_null(c->origins);
    for (size_t i = 0; i < n; i++) {
        int ret = ptc_origin_pattern_parse(patterns[i], &c->origins[i], err, sizeof(err));
        if (ret != 0)
            print_error("pattern \"%s\": %s\n", patterns[i], err);
        assert_int_equal(ret, 0);
        c->num_origins++;
    }
}

static char **strings(const char *const *s, size_t n)
{
    char **out = calloc(n, sizeof(char *));
    assert_non_null(out);
    for (size_t i = 0; i < n; i++)
        assert_non_null(out[i] = strdup(s[i]));
    return out;
}

static bool pattern_matches(const char *pattern, const char *origin)
{
    ptc_origin_pattern_t p;
    char err[256];
    int ret = ptc_origin_pattern_parse(pattern, &p, err, sizeof(err));
    if (ret != 0)
        print_error("pattern \"%s\": %s\n", pattern, err);
    assert_int_equal(ret, 0);
    bool m = ptc_origin_pattern_match(&p, S(origin));
    ptc_origin_pattern_dispose(&p);
    return m;
}

static void assert_match(const char *pattern, const char *origin, bool expected)
{
    bool m = pattern_matches(pattern, origin);
    if (m != expected)
        print_error("pattern \"%s\" %s origin \"%s\"\n", pattern, m ? "matches" : "does not match", origin);
    assert_true(m == expected);
}

typedef struct {
    const char *name, *value;
} field_t;

static void assert_fields(const ptc_header_t *got, size_t n, const field_t *want, size_t m)
{
    bool same = n == m;
    for (size_t i = 0; same && i < n; i++)
        same = got[i].name.len == strlen(want[i].name) && memcmp(got[i].name.base, want[i].name, got[i].name.len) == 0 &&
               got[i].value.len == strlen(want[i].value) && memcmp(got[i].value.base, want[i].value, got[i].value.len) == 0;
    if (!same) {
        print_error("got %zu fields:\n", n);
        for (size_t i = 0; i < n; i++)
            print_error("  %.*s: %.*s\n", (int)got[i].name.len, got[i].name.base, (int)got[i].value.len, got[i].value.base);
        print_error("expected %zu fields:\n", m);
        for (size_t i = 0; i < m; i++)
            print_error("  %s: %s\n", want[i].name, want[i].value);
    }
    assert_true(same);
}

static const char PREFLIGHT_VARY[] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/* ---- origin patterns ---- */

static void test_pattern_parse(void **state)
{
    (void)state;
    ptc_origin_pattern_t p;
    char err[256];

    assert_int_equal(ptc_origin_pattern_parse("https://app.example.com", &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, PTC_ORIGIN_EXACT);
    assert_string_equal(p.text, "https://app.example.com");
    ptc_origin_pattern_dispose(&p);

    assert_int_equal(ptc_origin_pattern_parse("HTTPS://*.Example.COM:8443", &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, PTC_ORIGIN_WILDCARD);
    assert_string_equal(p.text, "HTTPS://*.Example.COM:8443");
    assert_string_equal(p.scheme, "https");
    assert_string_equal(p.suffix, ".example.com");
    assert_string_equal(p.port, ":8443");
    ptc_origin_pattern_dispose(&p);

    assert_int_equal(ptc_origin_pattern_parse("~^https://[a-z]+\\.example\\.org$", &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, PTC_ORIGIN_REGEX);
    assert_non_null(p.regex);
    ptc_origin_pattern_dispose(&p);
    assert_null(p.text); /* dispose zeroes */
    ptc_origin_pattern_dispose(&p);

    assert_int_equal(ptc_origin_pattern_parse("*", &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, PTC_ORIGIN_ANY);
    ptc_origin_pattern_dispose(&p);

    assert_int_equal(ptc_origin_pattern_parse("null", &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, PTC_ORIGIN_EXACT);
    ptc_origin_pattern_dispose(&p);

    assert_int_equal(ptc_origin_pattern_parse("http://[::1]:8080", &p, err, sizeof(err)), 0);
    ptc_origin_pattern_dispose(&p);

    static const struct {
        const char *pattern, *message;
    } bad[] = {
        {"", "empty origin"},
        {"https://app.example.com/", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://app.example.com/path", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"app.example.com", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://app.example.com:", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://app.example.com:x", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://user@app.example.com", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://a*.example.com", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://a.*.example.com", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"**", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://*.example.com/", "invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com"},
        {"https://*.com.*", "invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com"},
        {"https://*.example.com:", "invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com"},
        {"https://*..example.com", "invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com"},
        {"https://.example.com", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://*.[::1]", "invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com"},
        {"~(", "invalid origin regex at offset 1: missing closing parenthesis"},
        {"~https://[a-z.example.com", "invalid origin regex at offset 24: missing terminating ] for character class"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        memset(&p, 0x55, sizeof(p));
        int ret = ptc_origin_pattern_parse(bad[i].pattern, &p, err, sizeof(err));
        if (ret != PTC_EINVAL || strcmp(err, bad[i].message) != 0)
            print_error("pattern \"%s\": %d %s\n", bad[i].pattern, ret, err);
        assert_int_equal(ret, PTC_EINVAL);
        assert_string_equal(err, bad[i].message);
        /* nothing left to free */
        assert_null(p.text);
        assert_null(p.regex);
        assert_null(p.suffix);
    }
}

static void test_match_exact(void **state)
{
    (void)state;
    const char *pat = "https://app.example.com";
    assert_match(pat, "https://app.example.com", true);
    assert_match(pat, "HTTPS://APP.Example.COM", true); /* scheme and host are case-insensitive */
    assert_match(pat, "http://app.example.com", false);
    assert_match(pat, "https://app.example.com:443", false); /* the port is part of the origin */
    assert_match(pat, "https://app.example.com:8443", false);
    assert_match(pat, "https://app.example.com/", false);
    assert_match(pat, "https://app.example.com/path", false);
    assert_match(pat, "https://app.example.com.evil.com", false);
    assert_match(pat, "https://evil.app.example.com", false);
    assert_match(pat, "https://app.example.co", false);
    assert_match(pat, "https://app.example.com ", false);
    assert_match(pat, "null", false);
    assert_match(pat, "", false);

    pat = "https://app.example.com:8443";
    assert_match(pat, "https://app.example.com:8443", true);
    assert_match(pat, "https://app.example.com", false);
    assert_match(pat, "https://app.example.com:8444", false);

    /* the origin slice need not be NUL-terminated */
    ptc_origin_pattern_t p;
    char err[256];
    assert_int_equal(ptc_origin_pattern_parse("https://app.example.com", &p, err, sizeof(err)), 0);
    assert_true(ptc_origin_pattern_match(&p, ptc_iov("https://app.example.comXYZ", 23)));
    assert_false(ptc_origin_pattern_match(&p, ptc_iov("https://app.example.comXYZ", 22)));
    ptc_origin_pattern_dispose(&p);
}

static void test_match_wildcard(void **state)
{
    (void)state;
    const char *pat = "https://*.example.com";
    assert_match(pat, "https://a.example.com", true);
    assert_match(pat, "https://a.b.example.com", true);
    assert_match(pat, "https://A.EXAMPLE.COM", true);
    assert_match(pat, "HTTPS://a.example.com", true);
    assert_match(pat, "https://a-1.example.com", true);

    assert_match(pat, "https://example.com", false);
    assert_match(pat, "https://evil-example.com", false);
    assert_match(pat, "https://aexample.com", false);
    assert_match(pat, "http://a.example.com", false);
    assert_match(pat, "wss://a.example.com", false);
    assert_match(pat, "https://a.example.com:8443", false);
    assert_match(pat, "https://a.example.com:443", false);
    assert_match(pat, "https://a.example.com.evil.com", false);
    assert_match(pat, "https://a.example.com.", false);
    assert_match(pat, "https://.example.com", false);
    assert_match(pat, "https://..example.com", false);
    assert_match(pat, "https://a..example.com", false);
    assert_match(pat, "https://a..b.example.com", false);
    assert_match(pat, "https://a.example.com/", false);
    assert_match(pat, "https://a.example.com/x", false);
    assert_match(pat, "https://a.example.com?x", false);
    assert_match(pat, "https://a.example.com#x", false);
    assert_match(pat, "https://u@a.example.com", false);
    assert_match(pat, "https://u:p@a.example.com", false);
    assert_match(pat, "https://a_b.example.com", false);
    assert_match(pat, "https://a b.example.com", false);
    assert_match(pat, "https://[::1].example.com", false);
    assert_match(pat, "null", false);
    assert_match(pat, "", false);

    pat = "https://*.example.com:8443";
    assert_match(pat, "https://a.example.com:8443", true);
    assert_match(pat, "https://a.example.com", false);
    assert_match(pat, "https://a.example.com:443", false);
    assert_match(pat, "https://a.example.com:84430", false);

    pat = "http://*.localhost.test";
    assert_match(pat, "http://app.localhost.test", true);
    assert_match(pat, "https://app.localhost.test", false);
}

static void test_match_regex(void **state)
{
    (void)state;
    /* anchored at both ends whether or not the pattern says so */
    assert_match("~https://x\\.com", "https://x.com", true);
    assert_match("~https://x\\.com", "https://x.com.evil", false);
    assert_match("~https://x\\.com", "https://x.com:443", false);
    assert_match("~https://x\\.com", "xhttps://x.com", false);
    assert_match("~https://x\\.com", "https://x.com/", false);
    assert_match("~https://a\\.com|https://b\\.com", "https://b.com", true);
    assert_match("~https://a\\.com|https://b\\.com", "https://a.com.evil", false);
    assert_match("~https://a\\.com|https://b\\.com", "https://evil.b.com", false);
    assert_match("~^https://[a-z]+\\.example\\.org$", "https://shop.example.org", true);
    assert_match("~^https://[a-z]+\\.example\\.org$", "https://shop.example.org.evil", false);
    assert_match("~^https://[a-z]+\\.example\\.org$", "https://a.b.example.org", false);
    assert_match("~https://x\\.com(:[0-9]+)?", "https://x.com:8080", true);

    /* a regex only ever sees well-formed origins: never "null", paths or junk */
    assert_match("~.*", "https://x.com", true);
    assert_match("~.*", "null", false);
    assert_match("~.*", "", false);
    assert_match("~.*", "https://x.com/path", false);
    assert_match("~.*", "https://u@x.com", false);
    assert_match("~.*", "not an origin", false);
    assert_match("~https://.*", "https://x.com/", false);

    /* invalid UTF-8 in the origin is a mismatch, not a crash */
    assert_match("~https://.*", "https://\xff.com", false);

    /* catastrophic backtracking is cut off by the match limits */
    char origin[1000];
    snprintf(origin, sizeof(origin), "https://%0*d!", 100, 0);
    for (char *p = origin + 8; *p != '!'; p++)
        *p = 'a';
    assert_match("~https://(a+)+b", origin, false);
}

static void test_match_any_and_null(void **state)
{
    (void)state;
    assert_match("*", "https://x.com", true);
    assert_match("*", "http://localhost:3000", true);
    assert_match("*", "http://127.0.0.1:8080", true);
    assert_match("*", "http://[::1]:8080", true);
    assert_match("*", "chrome-extension://abcdef", true);
    assert_match("*", "null", false);
    assert_match("*", "NULL", false);
    assert_match("*", "", false);

    assert_match("null", "null", true);
    assert_match("null", "https://x.com", false);
    assert_match("null", "", false);

    /* "null" only when listed literally */
    static const char *const list[] = {"*", "https://*.example.com", "~.*"};
    ptc_cors_config_t c;
    policy_init(&c, list, PTC_ARRAY_SIZE(list));
    assert_true(ptc_cors_origin_allowed(&c, S("https://x.com")));
    assert_false(ptc_cors_origin_allowed(&c, S("null")));
    ptc_cors_config_dispose(&c);

    static const char *const with_null[] = {"https://x.com", "null"};
    policy_init(&c, with_null, PTC_ARRAY_SIZE(with_null));
    assert_true(ptc_cors_origin_allowed(&c, S("null")));
    assert_true(ptc_cors_origin_allowed(&c, S("https://x.com")));
    assert_false(ptc_cors_origin_allowed(&c, S("https://y.com")));
    ptc_cors_config_dispose(&c);
}

/* Malformed origins never match, whatever the pattern. */
static void test_malformed_origins(void **state)
{
    (void)state;
    static const char *const patterns[] = {"*", "https://*.example.com", "~.*", "~https://.*"};
    static const char *const origins[] = {
        "",
        "null",
        "https://",
        "https:///",
        "https://:443",
        "https://a.example.com/",
        "https://a.example.com/x",
        "https://a.example.com?q",
        "https://a.example.com#f",
        "https://u@a.example.com",
        "https://a.example.com:",
        "https://a.example.com:x",
        "https://a.example.com:1234567",
        "https://a.example.com:-1",
        "https://a.example.com:80:80",
        "a.example.com",
        "//a.example.com",
        "://a.example.com",
        "1https://a.example.com",
        "ht tps://a.example.com",
        " https://a.example.com",
        "https://a.example.com ",
        "https:/a.example.com",
        "https:a.example.com",
        "https://a .example.com",
        "https://a\t.example.com",
        "https://a.example.com\r\n",
        "https://[::1",
        "https://[::1]x",
        "https://[::1]:",
        "https://.a.example.com",
        "https://a..example.com",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(patterns); i++)
        for (size_t j = 0; j < PTC_ARRAY_SIZE(origins); j++)
            assert_match(patterns[i], origins[j], false);

    /* NUL inside the slice */
    ptc_cors_config_t c;
    policy_init(&c, patterns, PTC_ARRAY_SIZE(patterns));
    assert_false(ptc_cors_origin_allowed(&c, ptc_iov("https://a.example.com\0x", 23)));
    assert_true(ptc_cors_origin_allowed(&c, ptc_iov("https://a.example.com\0x", 21)));

    /* longer than any real origin */
    char big[2048];
    memset(big, 'a', sizeof(big));
    memcpy(big, "https://", 8);
    memcpy(big + sizeof(big) - 12, ".example.com", 12);
    assert_false(ptc_cors_origin_allowed(&c, ptc_iov(big, sizeof(big))));
    ptc_cors_config_dispose(&c);
}

static void test_config_lifecycle(void **state)
{
    (void)state;
    ptc_cors_config_t c, copy;

    ptc_cors_config_init(&c);
    assert_false(c.enabled);
    assert_int_equal(c.num_origins, 0);
    assert_false(c.allow_credentials);
    assert_null(c.allow_methods);
    assert_true(c.reflect_headers);
    assert_int_equal(c.max_age_s, 600);
    assert_false(c.allow_private_network);
    assert_false(ptc_cors_origin_allowed(&c, S("https://x.com")));
    ptc_cors_config_dispose(&c);
    ptc_cors_config_dispose(&c); /* idempotent */

    static const char *const list[] = {"https://x.com", "https://*.example.com:8443", "~https://(a|b)\\.org", "*"};
    policy_init(&c, list, PTC_ARRAY_SIZE(list));
    static const char *const hdrs[] = {"authorization", "x-api-key"};
    static const char *const expose[] = {"x-trace-id"};
    assert_non_null(c.allow_methods = strdup("POST, GET"));
    c.allow_headers = strings(hdrs, 2);
    c.num_allow_headers = 2;
    c.reflect_headers = false;
    c.expose_headers = strings(expose, 1);
    c.num_expose_headers = 1;
    c.allow_credentials = true;
    c.max_age_s = 7;

    assert_int_equal(ptc_cors_config_copy(&copy, &c), 0);
    ptc_cors_config_dispose(&c); /* the copy owns everything it points to */
    assert_true(copy.enabled);
    assert_int_equal(copy.num_origins, 4);
    assert_string_equal(copy.origins[2].text, "~https://(a|b)\\.org");
    assert_string_equal(copy.allow_methods, "POST, GET");
    assert_int_equal(copy.num_allow_headers, 2);
    assert_string_equal(copy.allow_headers[1], "x-api-key");
    assert_false(copy.reflect_headers);
    assert_int_equal(copy.num_expose_headers, 1);
    assert_string_equal(copy.expose_headers[0], "x-trace-id");
    assert_true(copy.allow_credentials);
    assert_int_equal(copy.max_age_s, 7);
    assert_true(ptc_cors_origin_allowed(&copy, S("https://b.org")));
    assert_true(ptc_cors_origin_allowed(&copy, S("https://q.example.com:8443")));
    assert_false(ptc_cors_origin_allowed(&copy, S("null")));
    ptc_cors_config_dispose(&copy);

    /* an empty policy copies to an empty policy */
    ptc_cors_config_init(&c);
    assert_int_equal(ptc_cors_config_copy(&copy, &c), 0);
    assert_null(copy.origins);
    assert_null(copy.allow_methods);
    ptc_cors_config_dispose(&copy);
}

/* ptc_cors_config_eq: field by field, origins by their text, lists in order. */
static void test_config_eq(void **state)
{
    (void)state;
    static const char *const list[] = {"https://x.com", "https://*.example.com", "~^https://[a-z]+\\.org$", "*"};
    static const char *const hdrs[] = {"authorization", "x-api-key"};
    ptc_cors_config_t a, b, c;

    ptc_cors_config_init(&a);
    ptc_cors_config_init(&b);
    assert_true(ptc_cors_config_eq(&a, &b));
    b.enabled = true;
    assert_false(ptc_cors_config_eq(&a, &b));
    ptc_cors_config_dispose(&b);

    policy_init(&a, list, PTC_ARRAY_SIZE(list));
    a.allow_headers = strings(hdrs, 2);
    a.num_allow_headers = 2;
    a.reflect_headers = false;
    a.expose_headers = strings(hdrs, 1);
    a.num_expose_headers = 1;
    assert_non_null(a.allow_methods = strdup("POST"));
    assert_int_equal(ptc_cors_config_copy(&b, &a), 0);
    assert_true(ptc_cors_config_eq(&a, &b));
    assert_true(ptc_cors_config_eq(&b, &a));

    /* every field counts; each change is undone before the next */
    b.allow_credentials = true;
    assert_false(ptc_cors_config_eq(&a, &b));
    b.allow_credentials = false;
    b.max_age_s = 1;
    assert_false(ptc_cors_config_eq(&a, &b));
    b.max_age_s = a.max_age_s;
    b.allow_private_network = true;
    assert_false(ptc_cors_config_eq(&a, &b));
    b.allow_private_network = false;
    b.reflect_headers = true;
    assert_false(ptc_cors_config_eq(&a, &b));
    b.reflect_headers = false;
    b.allow_headers[1][0] = 'X';
    assert_false(ptc_cors_config_eq(&a, &b));
    b.allow_headers[1][0] = 'x';
    b.num_allow_headers = 1;
    assert_false(ptc_cors_config_eq(&a, &b));
    b.num_allow_headers = 2;
    b.expose_headers[0][0] = 'A';
    assert_false(ptc_cors_config_eq(&a, &b));
    b.expose_headers[0][0] = 'a';
    b.allow_methods[0] = 'G';
    assert_false(ptc_cors_config_eq(&a, &b));
    b.allow_methods[0] = 'P';
    char *methods = b.allow_methods;
    b.allow_methods = NULL; /* the default differs from any text, even "POST, OPTIONS" */
    assert_false(ptc_cors_config_eq(&a, &b));
    assert_false(ptc_cors_config_eq(&b, &a));
    b.allow_methods = methods;
    assert_true(ptc_cors_config_eq(&a, &b));

    /* origins: by text and in order */
    b.origins[2].text[1] = '$';
    assert_false(ptc_cors_config_eq(&a, &b));
    b.origins[2].text[1] = '^';
    b.num_origins = 3;
    assert_false(ptc_cors_config_eq(&a, &b));
    b.num_origins = 4;
    ptc_origin_pattern_t tmp = b.origins[0];
    b.origins[0] = b.origins[1];
    b.origins[1] = tmp;
    assert_false(ptc_cors_config_eq(&a, &b));
    b.origins[1] = b.origins[0];
    b.origins[0] = tmp;
    assert_true(ptc_cors_config_eq(&a, &b));

    /* a policy built from the same texts is equal: compiled regexes are not compared */
    policy_init(&c, list, PTC_ARRAY_SIZE(list));
    assert_false(ptc_cors_config_eq(&a, &c)); /* ... but the other fields still differ */
    c.reflect_headers = false;
    c.allow_headers = strings(hdrs, 2);
    c.num_allow_headers = 2;
    c.expose_headers = strings(hdrs, 1);
    c.num_expose_headers = 1;
    assert_non_null(c.allow_methods = strdup("POST"));
    assert_true(ptc_cors_config_eq(&a, &c));
    ptc_cors_config_dispose(&a);
    ptc_cors_config_dispose(&b);
    ptc_cors_config_dispose(&c);
}

/* ---- decisions and actual responses ---- */

static void test_decide(void **state)
{
    (void)state;
    static const char *const list[] = {"https://app.example.com"};
    ptc_cors_config_t c, off;
    policy_init(&c, list, 1);
    ptc_cors_config_init(&off);

    ptc_cors_decision_t d = ptc_cors_decide(&c, S("https://app.example.com"), S("http://gw.local:8080"));
    assert_int_equal(d.verdict, PTC_CORS_ALLOWED);
    assert_ptr_equal(d.policy, &c);
    assert_int_equal(d.origin.len, strlen("https://app.example.com"));
    assert_int_equal(ptc_cors_decide(&c, S("https://evil.com"), S("http://gw.local:8080")).verdict, PTC_CORS_DENIED);
    assert_int_equal(ptc_cors_decide(&c, S("null"), S("http://gw.local:8080")).verdict, PTC_CORS_DENIED);
    assert_int_equal(ptc_cors_decide(&c, ptc_iov(NULL, 0), S("http://gw.local:8080")).verdict, PTC_CORS_NONE); /* not a browser */
    /* same-origin: the page came from the gateway's own origin; no policy needed */
    assert_int_equal(ptc_cors_decide(&c, S("http://GW.local:8080"), S("http://gw.local:8080")).verdict, PTC_CORS_NONE);
    assert_int_equal(ptc_cors_decide(NULL, S("http://gw.local:8080"), S("http://gw.local:8080")).verdict, PTC_CORS_NONE);
    assert_int_equal(ptc_cors_decide(&c, S("http://gw.local:8081"), S("http://gw.local:8080")).verdict, PTC_CORS_DENIED);
    /* without a policy every cross-origin request is denied (a simple request must not reach the upstream) */
    assert_int_equal(ptc_cors_decide(NULL, S("https://app.example.com"), S("http://gw.local:8080")).verdict, PTC_CORS_DENIED);
    assert_int_equal(ptc_cors_decide(&off, S("https://app.example.com"), S("http://gw.local:8080")).verdict, PTC_CORS_DENIED);

    assert_true(ptc_cors_is_preflight(S("OPTIONS"), true, true));
    assert_true(ptc_cors_is_preflight(S("options"), true, true));
    assert_false(ptc_cors_is_preflight(S("OPTIONS"), false, true));
    assert_false(ptc_cors_is_preflight(S("OPTIONS"), true, false));
    assert_false(ptc_cors_is_preflight(S("POST"), true, true));
    ptc_cors_config_dispose(&c);
}

static void test_response_headers(void **state)
{
    (void)state;
    static const char *const list[] = {"https://app.example.com", "*"};
    ptc_cors_config_t c;
    ptc_cors_scratch_t scratch;
    ptc_header_t out[PTC_CORS_MAX_FIELDS];
    size_t n;
    policy_init(&c, list, PTC_ARRAY_SIZE(list));

    /* nothing sent: the three grpc names only */
    ptc_cors_decision_t d = ptc_cors_decide(&c, S("https://app.example.com"), S("http://gw.local:8080"));
    n = ptc_cors_response_headers(&d, NULL, 0, out, PTC_ARRAY_SIZE(out), &scratch);
    static const field_t minimal[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-expose-headers", "grpc-status, grpc-message, grpc-status-details-bin"},
        {"vary", "Origin"},
    };
    assert_fields(out, n, minimal, PTC_ARRAY_SIZE(minimal));

    /* what was sent, lower-cased and deduplicated, without safelisted and CORS names; configured extras last */
    static const ptc_header_t sent[] = {
        {PTC_STRLIT("Content-Type"), PTC_STRLIT("application/grpc-web+proto")},
        {PTC_STRLIT("X-Custom-Meta"), PTC_STRLIT("1")},
        {PTC_STRLIT("content-length"), PTC_STRLIT("12")},
        {PTC_STRLIT("x-custom-meta"), PTC_STRLIT("2")},
        {PTC_STRLIT("Grpc-Status"), PTC_STRLIT("0")},
        {PTC_STRLIT("access-control-allow-origin"), PTC_STRLIT("https://x")},
        {PTC_STRLIT("Access-Control-Max-Age"), PTC_STRLIT("1")},
        {PTC_STRLIT("cache-control"), PTC_STRLIT("no-cache")},
        {PTC_STRLIT("Vary"), PTC_STRLIT("Accept")},
        {PTC_STRLIT("expires"), PTC_STRLIT("0")},
        {PTC_STRLIT("last-modified"), PTC_STRLIT("x")},
        {PTC_STRLIT("content-language"), PTC_STRLIT("en")},
        {PTC_STRLIT("pragma"), PTC_STRLIT("no-cache")},
        {PTC_STRLIT("transfer-encoding"), PTC_STRLIT("chunked")},
        {PTC_STRLIT("connection"), PTC_STRLIT("keep-alive")},
        {PTC_STRLIT("x-trace-bin"), PTC_STRLIT("AAA")},
        {PTC_STRLIT("bad name"), PTC_STRLIT("x")},
        {PTC_STRLIT(""), PTC_STRLIT("x")},
    };
    static const char *const expose[] = {"X-Configured", "x-custom-meta", "grpc-message"};
    c.expose_headers = strings(expose, PTC_ARRAY_SIZE(expose));
    c.num_expose_headers = PTC_ARRAY_SIZE(expose);
    n = ptc_cors_response_headers(&d, sent, PTC_ARRAY_SIZE(sent), out, PTC_ARRAY_SIZE(out), &scratch);
    static const field_t full[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-expose-headers",
         "grpc-status, grpc-message, grpc-status-details-bin, x-custom-meta, x-trace-bin, x-configured"},
        {"vary", "Origin"},
    };
    assert_fields(out, n, full, PTC_ARRAY_SIZE(full));

    /* credentials only when configured; "*" still echoes the origin */
    c.allow_credentials = true;
    d = ptc_cors_decide(&c, S("https://other.test"), S("http://gw.local:8080"));
    assert_int_equal(d.verdict, PTC_CORS_ALLOWED);
    n = ptc_cors_response_headers(&d, NULL, 0, out, PTC_ARRAY_SIZE(out), &scratch);
    static const field_t creds[] = {
        {"access-control-allow-origin", "https://other.test"},
        {"access-control-allow-credentials", "true"},
        {"access-control-expose-headers", "grpc-status, grpc-message, grpc-status-details-bin, x-configured, x-custom-meta"},
        {"vary", "Origin"},
    };
    assert_fields(out, n, creds, PTC_ARRAY_SIZE(creds));

    /* a policy but no Origin: only Vary, so caches keep the cross-origin and same-origin answers apart */
    d = ptc_cors_decide(&c, ptc_iov(NULL, 0), S("http://gw.local:8080"));
    n = ptc_cors_response_headers(&d, sent, PTC_ARRAY_SIZE(sent), out, PTC_ARRAY_SIZE(out), &scratch);
    static const field_t vary_only[] = {{"vary", "Origin"}};
    assert_fields(out, n, vary_only, 1);

    /* denied: no CORS fields at all */
    d = ptc_cors_decide(&c, S("null"), S("http://gw.local:8080"));
    assert_int_equal(d.verdict, PTC_CORS_DENIED);
    assert_int_equal(ptc_cors_response_headers(&d, sent, PTC_ARRAY_SIZE(sent), out, PTC_ARRAY_SIZE(out), &scratch), 0);

    /* no policy: denied cross-origin, nothing added; same-origin: nothing added either */
    d = ptc_cors_decide(NULL, S("https://app.example.com"), S("http://gw.local:8080"));
    assert_int_equal(d.verdict, PTC_CORS_DENIED);
    assert_int_equal(ptc_cors_response_headers(&d, sent, PTC_ARRAY_SIZE(sent), out, PTC_ARRAY_SIZE(out), &scratch), 0);
    ptc_cors_config_t off;
    ptc_cors_config_init(&off);
    d = ptc_cors_decide(&off, S("http://gw.local:8080"), S("http://gw.local:8080"));
    assert_int_equal(d.verdict, PTC_CORS_NONE);
    assert_int_equal(ptc_cors_response_headers(&d, sent, PTC_ARRAY_SIZE(sent), out, PTC_ARRAY_SIZE(out), &scratch), 0);

    /* more names than the scratch holds: the list is cut, never overrun */
    static ptc_header_t many[600];
    static char names[600][16];
    for (size_t i = 0; i < PTC_ARRAY_SIZE(many); i++) {
        int len = snprintf(names[i], sizeof(names[i]), "x-meta-%04zu", i);
        many[i] = (ptc_header_t){ptc_iov(names[i], (size_t)len), PTC_STRLIT("v")};
    }
    d = ptc_cors_decide(&c, S("https://app.example.com"), S("http://gw.local:8080"));
    n = ptc_cors_response_headers(&d, many, PTC_ARRAY_SIZE(many), out, PTC_ARRAY_SIZE(out), &scratch);
    assert_int_equal(n, 4);
    assert_true(out[2].value.len <= sizeof(scratch.buf));
    assert_true(out[2].value.len > sizeof(scratch.buf) - 20);
    assert_memory_equal(out[2].value.base, "grpc-status, grpc-message, grpc-status-details-bin, x-meta-0000", 63);
    ptc_cors_config_dispose(&c);
}

/* ---- preflight ---- */

static int preflight(const ptc_cors_config_t *c, const char *origin, const char *method, const char *req_headers, bool pna,
                     ptc_header_t *out, size_t *n, ptc_cors_scratch_t *scratch, const char **why)
{
    ptc_preflight_t pf = {S(origin), S(method), S(req_headers), pna};
    *why = NULL;
    return ptc_cors_preflight(c, &pf, out, PTC_CORS_MAX_FIELDS, n, scratch, why);
}

static void test_preflight_allowed(void **state)
{
    (void)state;
    static const char *const list[] = {"https://app.example.com", "https://*.example.org"};
    ptc_cors_config_t c;
    ptc_cors_scratch_t scratch;
    ptc_header_t out[PTC_CORS_MAX_FIELDS];
    const char *why;
    size_t n;
    policy_init(&c, list, PTC_ARRAY_SIZE(list));

    /* what grpc-web sends: the request's names reflected, the grpc-web essentials added */
    assert_int_equal(preflight(&c, "https://app.example.com", "POST", "X-Grpc-Web, content-type,x-user-agent ,  authorization",
                               false, out, &n, &scratch, &why),
                     204);
    static const field_t basic[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-allow-methods", "GET, POST, OPTIONS"},
        {"access-control-allow-headers", "x-grpc-web, content-type, x-user-agent, authorization, grpc-timeout, connect-protocol-version, connect-timeout-ms"},
        {"access-control-max-age", "600"},
        {"vary", PREFLIGHT_VARY},
    };
    assert_fields(out, n, basic, PTC_ARRAY_SIZE(basic));

    /* nothing asked for: the essentials; junk names are dropped */
    assert_int_equal(preflight(&c, "https://a.example.org", "POST", "", false, out, &n, &scratch, &why), 204);
    static const field_t essentials[] = {
        {"access-control-allow-origin", "https://a.example.org"},
        {"access-control-allow-methods", "GET, POST, OPTIONS"},
        {"access-control-allow-headers", "content-type, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms"},
        {"access-control-max-age", "600"},
        {"vary", PREFLIGHT_VARY},
    };
    assert_fields(out, n, essentials, PTC_ARRAY_SIZE(essentials));
    assert_int_equal(preflight(&c, "https://a.example.org", "POST", " , bad name,x\"y, ,,", false, out, &n, &scratch, &why), 204);
    assert_fields(out, n, essentials, PTC_ARRAY_SIZE(essentials));

    /* credentials when configured; private network only when configured and asked for; max_age 0 omits */
    c.allow_credentials = true;
    c.allow_private_network = true;
    c.max_age_s = 0;
    assert_int_equal(preflight(&c, "https://app.example.com", "POST", "x-custom", true, out, &n, &scratch, &why), 204);
    static const field_t all[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-allow-methods", "GET, POST, OPTIONS"},
        {"access-control-allow-headers", "x-custom, content-type, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms"},
        {"access-control-allow-credentials", "true"},
        {"access-control-allow-private-network", "true"},
        {"vary", PREFLIGHT_VARY},
    };
    assert_fields(out, n, all, PTC_ARRAY_SIZE(all));
    assert_int_equal(preflight(&c, "https://app.example.com", "POST", "x-custom", false, out, &n, &scratch, &why), 204);
    static const field_t no_pna[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-allow-methods", "GET, POST, OPTIONS"},
        {"access-control-allow-headers", "x-custom, content-type, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms"},
        {"access-control-allow-credentials", "true"},
        {"vary", PREFLIGHT_VARY},
    };
    assert_fields(out, n, no_pna, PTC_ARRAY_SIZE(no_pna));
    c.allow_credentials = false;
    c.allow_private_network = false;
    c.max_age_s = 86400;
    assert_int_equal(preflight(&c, "https://app.example.com", "POST", "x-custom", true, out, &n, &scratch, &why), 204);
    static const field_t pna_not_configured[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-allow-methods", "GET, POST, OPTIONS"},
        {"access-control-allow-headers", "x-custom, content-type, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms"},
        {"access-control-max-age", "86400"},
        {"vary", PREFLIGHT_VARY},
    };
    assert_fields(out, n, pna_not_configured, PTC_ARRAY_SIZE(pna_not_configured));

    /* a configured header list replaces the reflection; configured methods replace the default */
    static const char *const hdrs[] = {"Authorization", "x-api-key", "content-type"};
    c.allow_headers = strings(hdrs, PTC_ARRAY_SIZE(hdrs));
    c.num_allow_headers = PTC_ARRAY_SIZE(hdrs);
    c.reflect_headers = false;
    assert_non_null(c.allow_methods = strdup("GET, POST"));
    assert_int_equal(preflight(&c, "https://app.example.com", "get", "x-other, authorization", false, out, &n, &scratch, &why),
                     204);
    static const field_t configured[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-allow-methods", "GET, POST"},
        {"access-control-allow-headers", "authorization, x-api-key, content-type, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms"},
        {"access-control-max-age", "86400"},
        {"vary", PREFLIGHT_VARY},
    };
    assert_fields(out, n, configured, PTC_ARRAY_SIZE(configured));

    /* huge Access-Control-Request-Headers: cut to the scratch buffer, never overrun */
    c.reflect_headers = true;
    static char big[20000];
    size_t len = 0;
    for (int i = 0; len + 16 < sizeof(big); i++)
        len += (size_t)snprintf(big + len, sizeof(big) - len, "x-h%05d, ", i);
    assert_int_equal(preflight(&c, "https://app.example.com", "POST", big, false, out, &n, &scratch, &why), 204);
    assert_int_equal(n, 5);
    assert_true(out[2].value.base >= scratch.buf && out[2].value.base + out[2].value.len <= out[3].value.base);
    assert_memory_equal(out[3].value.base, "86400", 5);
    ptc_cors_config_dispose(&c);
}

static void test_preflight_refused(void **state)
{
    (void)state;
    static const char *const list[] = {"https://app.example.com"};
    ptc_cors_config_t c, off;
    ptc_cors_scratch_t scratch;
    ptc_header_t out[PTC_CORS_MAX_FIELDS];
    const char *why;
    size_t n = 99;
    policy_init(&c, list, 1);
    ptc_cors_config_init(&off);

    assert_int_equal(preflight(&c, "https://evil.com", "POST", "x-grpc-web", false, out, &n, &scratch, &why), 403);
    assert_int_equal(n, 0);
    assert_string_equal(why, "origin not allowed");
    n = 99;
    assert_int_equal(preflight(&c, "null", "POST", "", false, out, &n, &scratch, &why), 403);
    assert_int_equal(n, 0);
    assert_int_equal(preflight(&c, "", "POST", "", false, out, &n, &scratch, &why), 403);

    n = 99;
    assert_int_equal(preflight(NULL, "https://app.example.com", "POST", "", false, out, &n, &scratch, &why), 403);
    assert_int_equal(n, 0);
    assert_string_equal(why, "no CORS policy is configured");
    assert_int_equal(preflight(&off, "https://app.example.com", "POST", "", false, out, &n, &scratch, &why), 403);
    assert_string_equal(why, "no CORS policy is configured");

    n = 99;
    assert_int_equal(preflight(&c, "https://app.example.com", "PUT", "", false, out, &n, &scratch, &why), 403);
    assert_int_equal(n, 0);
    assert_string_equal(why, "requested method not allowed");
    assert_int_equal(preflight(&c, "https://app.example.com", "POS", "", false, out, &n, &scratch, &why), 403);
    assert_int_equal(preflight(&c, "https://app.example.com", "POSTX", "", false, out, &n, &scratch, &why), 403);
    assert_int_equal(preflight(&c, "https://app.example.com", "", "", false, out, &n, &scratch, &why), 403);
    assert_non_null(c.allow_methods = strdup("GET"));
    assert_int_equal(preflight(&c, "https://app.example.com", "POST", "", false, out, &n, &scratch, &why), 403);
    assert_int_equal(preflight(&c, "https://app.example.com", "GET", "", false, out, &n, &scratch, &why), 204);

    /* an output array too small for every field is refused rather than overrun */
    ptc_preflight_t pf = {S("https://app.example.com"), S("GET"), S(""), false};
    n = 99;
    assert_int_equal(ptc_cors_preflight(&c, &pf, out, PTC_CORS_MAX_FIELDS - 1, &n, &scratch, &why), 403);
    assert_int_equal(n, 0);
    ptc_cors_config_dispose(&c);
}

/* ---- $httpHeaders ---- */

static ptc_http_headers_param_t hp;

static int parse_url(const char *url, const char **why)
{
    *why = NULL;
    memset(&hp, 0x55, sizeof(hp));
    return ptc_http_headers_param_parse(S(url), &hp, why);
}

static void assert_param_fields(const field_t *want, size_t m)
{
    assert_true(hp.present);
    assert_fields(hp.fields, hp.num_fields, want, m);
}

static void assert_param_refused(const char *url, int expected, const char *message)
{
    const char *why;
    int ret = parse_url(url, &why);
    if (ret != expected || why == NULL || strcmp(why, message) != 0)
        print_error("url %.200s: %d %s\n", url, ret, why != NULL ? why : "(null)");
    assert_int_equal(ret, expected);
    assert_non_null(why);
    assert_string_equal(why, message);
}

static void test_http_headers_absent(void **state)
{
    (void)state;
    const char *why;
    static const char *const urls[] = {
        "/svc.S/M",
        "/svc.S/M?",
        "/svc.S/M?a=1&b=2",
        "/svc.S/M?httpHeaders=x:1",
        "/svc.S/M?$httpHeaders",
        "/svc.S/M?$httpHeadersX=a:1",
        "/svc.S/M?x$httpHeaders=a:1",
        "/svc.S/M?%24httpheaders=a:1",
        "",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(urls); i++) {
        assert_int_equal(parse_url(urls[i], &why), 0);
        assert_false(hp.present);
        assert_int_equal(hp.num_fields, 0);
        assert_null(why);
    }
    /* present but empty */
    assert_int_equal(parse_url("/svc.S/M?$httpHeaders=", &why), 0);
    assert_true(hp.present);
    assert_int_equal(hp.num_fields, 0);
    assert_int_equal(parse_url("/svc.S/M?$httpHeaders=%0D%0A%0D%0A&x=1", &why), 0);
    assert_true(hp.present);
    assert_int_equal(hp.num_fields, 0);
}

static void test_http_headers_grpc_web(void **state)
{
    (void)state;
    const char *why;
    /* what grpc-web's suppressCorsPreflight sends (goog.net.rpc.HttpCors: encodeURIComponent of name:value\r\n) */
    static const char enc[] = "Content-Type%3Aapplication%2Fgrpc-web-text%0D%0AX-Grpc-Web%3A1%0D%0A"
                              "X-User-Agent%3Agrpc-web-javascript%2F0.1%0D%0A";
    static const field_t want[] = {
        {"content-type", "application/grpc-web-text"},
        {"x-grpc-web", "1"},
        {"x-user-agent", "grpc-web-javascript/0.1"},
    };
    char url[512];

    snprintf(url, sizeof(url), "/portico.test.Echo/Echo?$httpHeaders=%s", enc);
    assert_int_equal(parse_url(url, &why), 0);
    assert_param_fields(want, PTC_ARRAY_SIZE(want));

    snprintf(url, sizeof(url), "/portico.test.Echo/Echo?%%24httpHeaders=%s", enc);
    assert_int_equal(parse_url(url, &why), 0);
    assert_param_fields(want, PTC_ARRAY_SIZE(want));

    snprintf(url, sizeof(url), "/portico.test.Echo/Echo?a=1&$httpHeaders=%s&b=%%0A", enc);
    assert_int_equal(parse_url(url, &why), 0);
    assert_param_fields(want, PTC_ARRAY_SIZE(want));

    /* the url slice need not be NUL-terminated; the parameter ends where the slice does */
    snprintf(url, sizeof(url), "/x?$httpHeaders=%sX-Extra%%3A1", enc);
    size_t len = strlen(url);
    assert_int_equal(ptc_http_headers_param_parse(ptc_iov(url, len - strlen("X-Extra%3A1")), &hp, &why), 0);
    assert_param_fields(want, PTC_ARRAY_SIZE(want));

    /* the last line needs no CRLF; values are trimmed; '+' is a space; encoded '&', '=', '%' in values */
    assert_int_equal(parse_url("/x?$httpHeaders=Authorization:+Bearer+abc%3D%3D+%0D%0Ax-a:%20%25%26%3D%09%0D%0A%0D%0Ax-b:", &why),
                     0);
    static const field_t misc[] = {
        {"authorization", "Bearer abc=="},
        {"x-a", "%&="},
        {"x-b", ""},
    };
    assert_param_fields(misc, PTC_ARRAY_SIZE(misc));

    /* values may contain ':' and obs-text; duplicates are kept in order */
    assert_int_equal(parse_url("/x?$httpHeaders=x-a:1:2%0D%0Ax-a:%C3%A9", &why), 0);
    static const field_t dup[] = {{"x-a", "1:2"}, {"x-a", "\xc3\xa9"}};
    assert_param_fields(dup, PTC_ARRAY_SIZE(dup));

    /* the first occurrence wins */
    assert_int_equal(parse_url("/x?$httpHeaders=x-a:1&$httpHeaders=host:evil", &why), 0);
    static const field_t first[] = {{"x-a", "1"}};
    assert_param_fields(first, 1);
}

static void test_http_headers_limits(void **state)
{
    (void)state;
    const char *why;
    static char url[3 * PTC_HTTP_HEADERS_MAX_BYTES + 64];

    /* exactly 8192 decoded bytes fit; one more does not */
    int n = snprintf(url, sizeof(url), "/x?$httpHeaders=x-a:");
    memset(url + n, 'v', PTC_HTTP_HEADERS_MAX_BYTES - 4);
    url[(size_t)n + PTC_HTTP_HEADERS_MAX_BYTES - 4] = '\0';
    assert_int_equal(parse_url(url, &why), 0);
    assert_int_equal(hp.num_fields, 1);
    assert_int_equal(hp.fields[0].value.len, PTC_HTTP_HEADERS_MAX_BYTES - 4);
    memcpy(url + strlen(url), "v", 2);
    assert_param_refused(url, PTC_ETOOBIG, "$httpHeaders exceeds 8192 bytes");

    /* the limit counts decoded bytes: %41 is one byte */
    n = snprintf(url, sizeof(url), "/x?$httpHeaders=x-a:");
    for (size_t i = 0; i < PTC_HTTP_HEADERS_MAX_BYTES - 4; i++)
        memcpy(url + n + 3 * i, "%41", 4);
    assert_int_equal(parse_url(url, &why), 0);
    assert_int_equal(hp.fields[0].value.len, PTC_HTTP_HEADERS_MAX_BYTES - 4);
    memcpy(url + strlen(url), "%41", 4);
    assert_param_refused(url, PTC_ETOOBIG, "$httpHeaders exceeds 8192 bytes");

    /* 64 fields fit; 65 do not */
    n = snprintf(url, sizeof(url), "/x?$httpHeaders=");
    for (int i = 0; i < PTC_HTTP_HEADERS_MAX_FIELDS; i++)
        n += snprintf(url + n, sizeof(url) - (size_t)n, "x-h%d:%d%%0D%%0A", i, i);
    assert_int_equal(parse_url(url, &why), 0);
    assert_int_equal(hp.num_fields, PTC_HTTP_HEADERS_MAX_FIELDS);
    assert_memory_equal(hp.fields[63].name.base, "x-h63", 5);
    snprintf(url + n, sizeof(url) - (size_t)n, "x-last:1");
    assert_param_refused(url, PTC_ETOOBIG, "$httpHeaders has more than 64 fields");

    /* many empty lines are not fields */
    n = snprintf(url, sizeof(url), "/x?$httpHeaders=");
    for (int i = 0; i < 1000; i++)
        n += snprintf(url + n, sizeof(url) - (size_t)n, "%%0D%%0A");
    snprintf(url + n, sizeof(url) - (size_t)n, "x-a:1");
    assert_int_equal(parse_url(url, &why), 0);
    assert_int_equal(hp.num_fields, 1);
}

static void test_http_headers_hostile(void **state)
{
    (void)state;
    static const char STRAY[] = "$httpHeaders has a stray CR, LF or NUL inside a line";
    static const char PCT[] = "$httpHeaders has invalid percent-encoding";
    static const char REFUSED[] = "$httpHeaders may not set host, origin, cookie, forwarding, CORS or hop-by-hop headers";
    static const char BADNAME[] = "$httpHeaders has an invalid header name";
    static const char PSEUDO[] = "$httpHeaders may not set pseudo-headers";

    /* CRLF injection */
    assert_param_refused("/x?$httpHeaders=x-a:1%0Ahost:evil", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-a:1%0Dhost:evil", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-a:1%0A", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-a:1%0D", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-a:1%0A%0D", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-a:1%0D%0D%0Ax-b:2", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-a:1%00x", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-%00a:1", PTC_EINVAL, STRAY);
    assert_param_refused("/x?$httpHeaders=x-a:1\nhost:evil", PTC_EINVAL, STRAY); /* raw, should a parser let it through */
    /* obs-fold: a continuation line has no name */
    assert_param_refused("/x?$httpHeaders=x-a:1%0D%0A%20host:evil", PTC_EINVAL, BADNAME);

    /* pseudo-headers */
    assert_param_refused("/x?$httpHeaders=:path:/x", PTC_EINVAL, PSEUDO);
    assert_param_refused("/x?$httpHeaders=x-a:1%0D%0A:authority:evil", PTC_EINVAL, PSEUDO);
    assert_param_refused("/x?$httpHeaders=%3Amethod:GET", PTC_EINVAL, PSEUDO);

    /* fields that decide routing or security, and hop-by-hop fields */
    static const char *const refused[] = {
        "host",
        "Host",
        "origin",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "X-Forwarded-Proto",
        "x-forwarded-host",
        "access-control-request-method",
        "Access-Control-Allow-Origin",
        "sec-fetch-site",
        "Sec-WebSocket-Key",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "content-length",
        "expect",
        "http2-settings",
        "proxy-authorization",
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(refused); i++) {
        char url[256];
        snprintf(url, sizeof(url), "/x?$httpHeaders=x-ok:1%%0D%%0A%s:v", refused[i]);
        assert_param_refused(url, PTC_EINVAL, REFUSED);
    }
    /* close relatives are fine */
    const char *why;
    assert_int_equal(
        parse_url("/x?$httpHeaders=authorization:a%0D%0Ahosts:b%0D%0Ax-forwarded:c%0D%0Asecret:d%0D%0Ax-origin:e", &why), 0);
    assert_int_equal(hp.num_fields, 5);

    /* bad percent-encoding */
    assert_param_refused("/x?$httpHeaders=x-a:%zz", PTC_EINVAL, PCT);
    assert_param_refused("/x?$httpHeaders=x-a:%4", PTC_EINVAL, PCT);
    assert_param_refused("/x?$httpHeaders=x-a:%", PTC_EINVAL, PCT);
    assert_param_refused("/x?$httpHeaders=x-a:%4g", PTC_EINVAL, PCT);
    assert_param_refused("/x?$httpHeaders=x-a:%%41", PTC_EINVAL, PCT);
    /* percent-encoding in other parameters is not ours to judge */
    assert_int_equal(parse_url("/x?$httpHeaders=x-a:1&b=2%", &why), 0);
    assert_int_equal(hp.num_fields, 1);
}

/* Names that are not tokens, and lines without a name. */
static void test_http_headers_names(void **state)
{
    (void)state;
    static const char NONAME[] = "$httpHeaders line without a 'name:' part";
    static const char BADNAME[] = "$httpHeaders has an invalid header name";
    static const char *const bad[] = {"x+y:1",   "x%20y:1",  "x-a%20:1", "x%22y:1", "x(y):1", "x/y:1", "x@y:1",
                                      "x%7By:1", "%C3%A9:1", "x%09y:1",  "x%7Fy:1", "x,y:1",  "x;y:1", "x=y:1"};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        char url[128];
        snprintf(url, sizeof(url), "/x?$httpHeaders=%s", bad[i]);
        assert_param_refused(url, PTC_EINVAL, BADNAME);
    }
    assert_param_refused("/x?$httpHeaders=novalue", PTC_EINVAL, NONAME);
    assert_param_refused("/x?$httpHeaders=x-a:1%0D%0Anovalue%0D%0A", PTC_EINVAL, NONAME);
    assert_param_refused("/x?$httpHeaders=:1", PTC_EINVAL, "$httpHeaders may not set pseudo-headers");
    assert_param_refused("/x?$httpHeaders=+", PTC_EINVAL, NONAME);

    /* every tchar is fine, and names are lower-cased */
    const char *why;
    assert_int_equal(parse_url("/x?$httpHeaders=A-Z.0_9!%23$%25%26'*%2B^`|~:v", &why), 0);
    static const field_t tchars[] = {{"a-z.0_9!#$%&'*+^`|~", "v"}};
    assert_param_fields(tchars, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pattern_parse),         cmocka_unit_test(test_match_exact),
        cmocka_unit_test(test_match_wildcard),        cmocka_unit_test(test_match_regex),
        cmocka_unit_test(test_match_any_and_null),    cmocka_unit_test(test_malformed_origins),
        cmocka_unit_test(test_config_lifecycle),      cmocka_unit_test(test_config_eq),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_response_headers),      cmocka_unit_test(test_preflight_allowed),
        cmocka_unit_test(test_preflight_refused),     cmocka_unit_test(test_http_headers_absent),
        cmocka_unit_test(test_http_headers_grpc_web), cmocka_unit_test(test_http_headers_limits),
        cmocka_unit_test(test_http_headers_hostile),  cmocka_unit_test(test_http_headers_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
