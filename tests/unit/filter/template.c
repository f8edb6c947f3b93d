/* Unit tests for src/filter/template.c: parsing every variable and escape, error messages, expansion from a fake
 * source (missing values, injection attempts, truncation), allocation failure, and the header-name and literal
 * value checks of header rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include "../failmalloc.h"
#include "portico/template.h"

/* ---- helpers ---- */

static ptc_iovec_t S(const char *s)
{
    return ptc_iov(s, strlen(s));
}

static void parse_ok(const char *text, ptc_template_t *t)
{
    char err[256] = "";
    int ret = ptc_template_parse(text, t, err, sizeof(err));
    if (ret != 0)
        print_error("template \"%s\": %s\n", text, err);
    assert_int_equal(ret, 0);
    assert_string_equal(t->text, text);
}

static void assert_part(const ptc_template_t *t, size_t i, ptc_template_var_t kind, const char *arg)
{
    assert_true(i < t->num_parts);
    assert_int_equal(t->parts[i].kind, kind);
    assert_int_equal(t->parts[i].arg.len, strlen(arg));
    assert_memory_equal(t->parts[i].arg.base, arg, strlen(arg));
}

typedef struct st_expected_part_t {
    ptc_template_var_t kind;
    const char *arg;
} expected_part_t;

#define L PTC_TEMPLATE_LITERAL

static void assert_parts(const char *text, const expected_part_t *want, size_t n)
{
    ptc_template_t t;
    parse_ok(text, &t);
    assert_int_equal(t.num_parts, n);
    for (size_t i = 0; i < n; i++)
        assert_part(&t, i, want[i].kind, want[i].arg);
    assert_false(ptc_template_is_literal(&t));
    ptc_template_dispose(&t);
}

/* One variable alone: a single part. */
static void assert_single(const char *text, ptc_template_var_t kind, const char *arg)
{
    ptc_template_t t;
    parse_ok(text, &t);
    assert_int_equal(t.num_parts, 1);
    assert_part(&t, 0, kind, arg);
    assert_false(ptc_template_is_literal(&t));
    ptc_template_dispose(&t);
}

static void assert_parse_error(const char *text, const char *message)
{
    ptc_template_t t;
    char err[256] = "";
    memset(&t, 0xa5, sizeof(t));
    int ret = ptc_template_parse(text, &t, err, sizeof(err));
    if (ret != PTC_EINVAL)
        print_error("template \"%s\" accepted\n", text);
    assert_int_equal(ret, PTC_EINVAL);
    assert_string_equal(err, message);
    assert_null(t.parts); /* zeroed */
    assert_int_equal(t.num_parts, 0);
    ptc_template_dispose(&t);
    /* err may be NULL */
    assert_int_equal(ptc_template_parse(text, &t, NULL, 0), PTC_EINVAL);
}

/* A fake request: values by (kind, arg); records every lookup. */
typedef struct st_fake_value_t {
    ptc_template_var_t kind;
    const char *arg;
    const char *value;
    size_t len; /* 0: strlen(value) */
} fake_value_t;

typedef struct st_fake_t {
    const fake_value_t *values;
    size_t num_values;
    size_t calls;
    char seen[512]; /* "kind:arg;" per lookup */
} fake_t;

static ptc_iovec_t fake_get(void *ctx, ptc_template_var_t kind, ptc_iovec_t arg)
{
    fake_t *f = ctx;
    size_t n = strlen(f->seen);
    snprintf(f->seen + n, sizeof(f->seen) - n, "%d:%.*s;", (int)kind, (int)arg.len, arg.base);
    f->calls++;
    for (size_t i = 0; i < f->num_values; i++) {
        const fake_value_t *v = &f->values[i];
        if (v->kind == kind && ptc_iov_eq(S(v->arg), arg))
            return ptc_iov(v->value, v->len != 0 ? v->len : strlen(v->value));
    }
    return ptc_iov(NULL, 0);
}

/* Expands text against values into a 1 KiB buffer; returns it (static). */
static const char *expand(const char *text, const fake_value_t *values, size_t n)
{
    static char out[1024];
    ptc_template_t t;
    fake_t f = {values, n, 0, ""};
    ptc_template_source_t src = {fake_get, &f};
    bool truncated = true;
    parse_ok(text, &t);
    size_t len = ptc_template_expand(&t, &src, out, sizeof(out), &truncated);
    assert_false(truncated);
    assert_int_equal(len, strlen(out));
    ptc_template_dispose(&t);
    return out;
}

/* ---- parsing ---- */

static void test_parse_variables(void **state)
{
    (void)state;
    assert_single("%REQ(user-agent)%", PTC_TEMPLATE_REQ, "user-agent");
    assert_single("%RESP(grpc-status)%", PTC_TEMPLATE_RESP, "grpc-status");
    assert_single("%REQUEST_ID%", PTC_TEMPLATE_REQUEST_ID, "");
    assert_single("%TRACE_ID%", PTC_TEMPLATE_TRACE_ID, "");
    assert_single("%UPSTREAM%", PTC_TEMPLATE_UPSTREAM, "");
    assert_single("%ROUTE%", PTC_TEMPLATE_ROUTE, "");
    assert_single("%CLIENT_IP%", PTC_TEMPLATE_CLIENT_IP, "");
    assert_single("%JWT(sub)%", PTC_TEMPLATE_JWT, "sub");
    /* header names are lower-cased; claim paths are kept as written */
    assert_single("%REQ(X-Request-ID)%", PTC_TEMPLATE_REQ, "x-request-id");
    assert_single("%RESP(Content-Type)%", PTC_TEMPLATE_RESP, "content-type");
    assert_single("%JWT(Realm_Access.Roles)%", PTC_TEMPLATE_JWT, "Realm_Access.Roles");
    assert_single("%JWT(https://example.com/claims/tenant)%", PTC_TEMPLATE_JWT, "https://example.com/claims/tenant");
    /* every tchar in a header name */
    assert_single("%REQ(A-Z.0_9!#$&'*+^`|~)%", PTC_TEMPLATE_REQ, "a-z.0_9!#$&'*+^`|~");
}

static void test_parse_literals_and_escapes(void **state)
{
    (void)state;
    ptc_template_t t;

    /* no variables: one literal part (none for ""), %% being one '%' merged with the text around it */
    static const struct {
        const char *text, *literal;
    } literals[] = {
        {"", ""},
        {"plain text\twith a tab, UTF-8 \xc3\xa9 and (parens)", "plain text\twith a tab, UTF-8 \xc3\xa9 and (parens)"},
        {"100%%", "100%"},
        {"%%%%", "%%"},
        {"%%REQ(x)%%", "%REQ(x)%"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(literals); i++) {
        parse_ok(literals[i].text, &t);
        assert_true(ptc_template_is_literal(&t));
        if (literals[i].literal[0] == '\0') {
            assert_int_equal(t.num_parts, 0);
        } else {
            assert_int_equal(t.num_parts, 1);
            assert_part(&t, 0, PTC_TEMPLATE_LITERAL, literals[i].literal);
        }
        ptc_template_dispose(&t);
    }

    /* literals around variables, adjacent variables, a variable between escapes, an access-log line */
    static const expected_part_t mixed[] = {{L, "a%b"}, {PTC_TEMPLATE_REQUEST_ID, ""}, {L, "c%"}};
    assert_parts("a%%b%REQUEST_ID%c%%", mixed, PTC_ARRAY_SIZE(mixed));
    static const expected_part_t adjacent[] = {
        {PTC_TEMPLATE_ROUTE, ""}, {PTC_TEMPLATE_UPSTREAM, ""}, {L, "%"}, {PTC_TEMPLATE_CLIENT_IP, ""}, {L, "%"}};
    assert_parts("%ROUTE%%UPSTREAM%%%%CLIENT_IP%%%", adjacent, PTC_ARRAY_SIZE(adjacent));
    static const expected_part_t log_line[] = {
        {PTC_TEMPLATE_CLIENT_IP, ""},     {L, " - ["}, {PTC_TEMPLATE_REQUEST_ID, ""},      {L, "] \""},
        {PTC_TEMPLATE_REQ, "user-agent"}, {L, "\" "},  {PTC_TEMPLATE_RESP, "grpc-status"}, {L, " "},
        {PTC_TEMPLATE_UPSTREAM, ""}};
    assert_parts("%CLIENT_IP% - [%REQUEST_ID%] \"%REQ(user-agent)%\" %RESP(grpc-status)% %UPSTREAM%", log_line,
                 PTC_ARRAY_SIZE(log_line));
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"%FOO%", "unknown variable %FOO%"},
        {"x-%FOO(bar)%", "unknown variable %FOO%"},
        {"%req(x)%", "unknown variable %req%"},
        {"%Request_Id%", "unknown variable %Request_Id%"},
        {"%REQUEST_ID2%", "unknown variable %REQUEST_ID2%"},
        {"%", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"x%", "unterminated variable at offset 1 (write %% for a literal %)"},
        {"50% off", "unterminated variable at offset 2 (write %% for a literal %)"},
        {"abc %REQUEST_ID", "unterminated variable at offset 4 (write %% for a literal %)"},
        {"%ROUTE%%", "unterminated variable at offset 7 (write %% for a literal %)"},
        {"%REQ(x", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"%REQ(x)", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"%REQ(x)y%", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"%REQ(a%b)%", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"%REQ(a(b)%", "%REQ(a(b)%: the header name must be an HTTP token"},
        {"%REQ-ID%", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"%(x)%", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"% ROUTE%", "unterminated variable at offset 0 (write %% for a literal %)"},
        {"%REQ()%", "%REQ()% needs a header name"},
        {"%RESP()%", "%RESP()% needs a header name"},
        {"%JWT()%", "%JWT()% needs a claim path"},
        {"%REQ%", "%REQ% needs a header name: %REQ(name)%"},
        {"%RESP%", "%RESP% needs a header name: %RESP(name)%"},
        {"%JWT%", "%JWT% needs a claim path: %JWT(claim.path)%"},
        {"%ROUTE(x)%", "%ROUTE% takes no argument"},
        {"%ROUTE()%", "%ROUTE% takes no argument"},
        {"%REQUEST_ID(x)%", "%REQUEST_ID% takes no argument"},
        {"%REQ(x y)%", "%REQ(x y)%: the header name must be an HTTP token"},
        {"%REQ(:path)%", "%REQ(:path)%: the header name must be an HTTP token"},
        {"%RESP(a\"b)%", "%RESP(a\"b)%: the header name must be an HTTP token"},
        {"%REQ(a/b)%", "%REQ(a/b)%: the header name must be an HTTP token"},
        {"%REQ(\xc3\xa9)%", "%REQ(?"
                            "?)%: the header name must be an HTTP token"},
        {"%REQ(a\tb)%", "%REQ(a?b)%: the header name must be an HTTP token"},
        {"%JWT(a b)%", "%JWT(a b)%: the claim path must be printable ASCII without spaces"},
        {"%JWT( sub)%", "%JWT( sub)%: the claim path must be printable ASCII without spaces"},
        {"%JWT(a\tb)%", "%JWT(a?b)%: the claim path must be printable ASCII without spaces"},
        {"%JWT(r\xc3\xb4le)%", "%JWT(r??le)%: the claim path must be printable ASCII without spaces"},
        {"a\r\nx-evil: 1", "control character 0x0d at offset 1"},
        {"a\nb", "control character 0x0a at offset 1"},
        {"\x01", "control character 0x01 at offset 0"},
        {"ok %ROUTE% \x7f", "control character 0x7f at offset 11"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(cases); i++)
        assert_parse_error(cases[i].text, cases[i].message);

    /* a long bad argument is cut in the message */
    char text[200], message[256];
    snprintf(text, sizeof(text), "%%REQ(%.*s %.*s)%%", 50, "12345678901234567890123456789012345678901234567890", 50,
             "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghij");
    snprintf(message, sizeof(message), "%%REQ(%.*s %.*s...)%%: the header name must be an HTTP token", 50,
             "12345678901234567890123456789012345678901234567890", 13, "abcdefghijabcdefghij");
    assert_parse_error(text, message);

    assert_parse_error(NULL, "no template");
}

/* The message is cut to the caller's buffer, NUL-terminated. */
static void test_parse_error_buffer(void **state)
{
    (void)state;
    ptc_template_t t;
    char err[8];
    memset(err, 'x', sizeof(err));
    assert_int_equal(ptc_template_parse("%FOO%", &t, err, sizeof(err)), PTC_EINVAL);
    assert_string_equal(err, "unknown");
}

/* Every allocation failure: PTC_ENOMEM, *out zeroed, nothing leaked. */
static void test_parse_nomem(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    ptc_template_t t;
    char err[64] = "";
    long live = failmalloc_live;
    failmalloc_countdown = 0;
    int ret = ptc_template_parse("x-%REQ(a)%-%%", &t, err, sizeof(err));
    failmalloc_countdown = -1;
    assert_int_equal(ret, PTC_ENOMEM);
    assert_string_equal(err, "out of memory");
    assert_null(t.parts);
    assert_int_equal(failmalloc_live, live);
    /* one allocation, so the next try succeeds */
    parse_ok("x-%REQ(a)%-%%", &t);
    assert_int_equal(failmalloc_live, live + 1);
    ptc_template_dispose(&t);
    assert_int_equal(failmalloc_live, live);
#else
    skip();
#endif
}

/* ---- expansion ---- */

static const fake_value_t request[] = {
    {PTC_TEMPLATE_REQ, "user-agent", "grpc-web-javascript/0.1", 0},
    {PTC_TEMPLATE_REQ, "x-tenant", "acme", 0},
    {PTC_TEMPLATE_RESP, "grpc-status", "0", 0},
    {PTC_TEMPLATE_REQUEST_ID, "", "f47ac10b-58cc-4372-a567-0e02b2c3d479", 0},
    {PTC_TEMPLATE_TRACE_ID, "", "4bf92f3577b34da6a3ce929d0e0e4736", 0},
    {PTC_TEMPLATE_UPSTREAM, "", "10.0.0.7:50051", 0},
    {PTC_TEMPLATE_ROUTE, "", "/echo.Echo/", 0},
    {PTC_TEMPLATE_CLIENT_IP, "", "2001:db8::1", 0},
    {PTC_TEMPLATE_JWT, "sub", "user-42", 0},
    {PTC_TEMPLATE_JWT, "realm_access.roles", "admin,dev", 0},
};

static void test_expand(void **state)
{
    (void)state;
    const size_t n = PTC_ARRAY_SIZE(request);
    assert_string_equal(expand("%REQ(User-Agent)%", request, n), "grpc-web-javascript/0.1");
    assert_string_equal(expand("%RESP(grpc-status)%", request, n), "0");
    assert_string_equal(expand("id=%REQUEST_ID% trace=%TRACE_ID%", request, n),
                        "id=f47ac10b-58cc-4372-a567-0e02b2c3d479 trace=4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(expand("%CLIENT_IP% -> %UPSTREAM% via %ROUTE%", request, n),
                        "2001:db8::1 -> 10.0.0.7:50051 via /echo.Echo/");
    assert_string_equal(expand("%JWT(sub)%@%REQ(x-tenant)%; roles=%JWT(realm_access.roles)%; 100%%", request, n),
                        "user-42@acme; roles=admin,dev; 100%");
    assert_string_equal(expand("plain", request, n), "plain");
    assert_string_equal(expand("", request, n), "");
    /* missing values are empty */
    assert_string_equal(expand("[%REQ(absent)%][%JWT(nope)%][%RESP(user-agent)%]", request, n), "[][][]");
    assert_string_equal(expand("[%ROUTE%]", NULL, 0), "[]");

    /* get sees each variable once, in order, with the lower-cased name; never the literals */
    ptc_template_t t;
    fake_t f = {request, n, 0, ""};
    ptc_template_source_t src = {fake_get, &f};
    char out[128];
    parse_ok("a%REQ(X-Tenant)%b%ROUTE%c%JWT(sub)%%%", &t);
    assert_int_equal(ptc_template_expand(&t, &src, out, sizeof(out), NULL), strlen("aacmeb/echo.Echo/cuser-42%"));
    assert_string_equal(out, "aacmeb/echo.Echo/cuser-42%");
    assert_int_equal(f.calls, 3);
    char seen[128];
    snprintf(seen, sizeof(seen), "%d:x-tenant;%d:;%d:sub;", PTC_TEMPLATE_REQ, PTC_TEMPLATE_ROUTE, PTC_TEMPLATE_JWT);
    assert_string_equal(f.seen, seen);

    /* no source, or a source without get: variables are empty */
    bool truncated = true;
    assert_int_equal(ptc_template_expand(&t, NULL, out, sizeof(out), &truncated), 4);
    assert_string_equal(out, "abc%");
    assert_false(truncated);
    ptc_template_source_t empty = {NULL, NULL};
    assert_int_equal(ptc_template_expand(&t, &empty, out, sizeof(out), &truncated), 4);
    assert_string_equal(out, "abc%");
    ptc_template_dispose(&t);
}

/* A value can never split the header: CR, LF, NUL and the other controls but HTAB become spaces. */
static void test_expand_injection(void **state)
{
    (void)state;
    static const fake_value_t hostile[] = {
        {PTC_TEMPLATE_REQ, "x-in", "a\r\nx-evil: 1\r\n\r\nGET / HTTP/1.1", 0},
        {PTC_TEMPLATE_JWT, "name", "bob\nSet-Cookie: s=1", 0},
        {PTC_TEMPLATE_JWT, "nul", "a\0b", 3},
        {PTC_TEMPLATE_REQ, "x-tab", "a\tb", 0},
        {PTC_TEMPLATE_REQ, "x-ctl", "\x01\x08\x0b\x0c\x1b\x1f\x7f", 0},
        {PTC_TEMPLATE_REQ, "x-utf8", "caf\xc3\xa9 \xe2\x9c\x93", 0},
        {PTC_TEMPLATE_ROUTE, "", "\r\n", 0},
    };
    const size_t n = PTC_ARRAY_SIZE(hostile);
    assert_string_equal(expand("v=%REQ(x-in)%", hostile, n), "v=a  x-evil: 1    GET / HTTP/1.1");
    assert_string_equal(expand("%JWT(name)%", hostile, n), "bob Set-Cookie: s=1");
    assert_string_equal(expand("[%JWT(nul)%]", hostile, n), "[a b]");
    assert_string_equal(expand("%REQ(x-tab)%", hostile, n), "a\tb");
    assert_string_equal(expand("[%REQ(x-ctl)%]", hostile, n), "[       ]");
    assert_string_equal(expand("%REQ(x-utf8)%", hostile, n), "caf\xc3\xa9 \xe2\x9c\x93"); /* obs-text passes */
    assert_string_equal(expand("%ROUTE%", hostile, n), "  ");

    /* every byte value */
    char all[256];
    for (int c = 0; c < 256; c++)
        all[c] = (char)c;
    const fake_value_t every[] = {{PTC_TEMPLATE_CLIENT_IP, "", all, sizeof(all)}};
    const char *out = expand("%CLIENT_IP%", every, 1);
    assert_int_equal(strlen(out), 256);
    for (int c = 0; c < 256; c++) {
        bool ctl = (c < 0x20 && c != '\t') || c == 0x7f;
        assert_int_equal((unsigned char)out[c], ctl ? ' ' : c);
        assert_true(ptc_header_value_literal_ok((char[]){out[c], '\0'}));
    }
}

static void test_expand_truncation(void **state)
{
    (void)state;
    static const fake_value_t values[] = {{PTC_TEMPLATE_REQUEST_ID, "", "0123456789", 0}};
    fake_t f = {values, 1, 0, ""};
    ptc_template_source_t src = {fake_get, &f};
    ptc_template_t t;
    char out[32];
    bool truncated;

    parse_ok("id=%REQUEST_ID%;", &t); /* 14 bytes */
    /* exactly enough */
    memset(out, 'x', sizeof(out));
    assert_int_equal(ptc_template_expand(&t, &src, out, 15, &truncated), 14);
    assert_false(truncated);
    assert_string_equal(out, "id=0123456789;");
    /* one short: the literal tail is cut */
    memset(out, 'x', sizeof(out));
    assert_int_equal(ptc_template_expand(&t, &src, out, 14, &truncated), 13);
    assert_true(truncated);
    assert_string_equal(out, "id=0123456789");
    /* inside the value, and nothing written past cap */
    memset(out, 'x', sizeof(out));
    assert_int_equal(ptc_template_expand(&t, &src, out, 8, &truncated), 7);
    assert_true(truncated);
    assert_string_equal(out, "id=0123");
    assert_int_equal(out[8], 'x');
    /* inside the leading literal */
    assert_int_equal(ptc_template_expand(&t, &src, out, 3, &truncated), 2);
    assert_true(truncated);
    assert_string_equal(out, "id");
    /* room for the NUL only */
    assert_int_equal(ptc_template_expand(&t, &src, out, 1, &truncated), 0);
    assert_true(truncated);
    assert_string_equal(out, "");
    /* no room at all: out is not touched and may be NULL */
    assert_int_equal(ptc_template_expand(&t, &src, NULL, 0, &truncated), 0);
    assert_true(truncated);
    /* truncated may be NULL */
    assert_int_equal(ptc_template_expand(&t, &src, out, 5, NULL), 4);
    assert_string_equal(out, "id=0");
    ptc_template_dispose(&t);

    /* an empty expansion is never truncated */
    parse_ok("%ROUTE%", &t);
    assert_int_equal(ptc_template_expand(&t, &src, NULL, 0, &truncated), 0);
    assert_false(truncated);
    assert_int_equal(ptc_template_expand(&t, &src, out, 1, &truncated), 0);
    assert_false(truncated);
    ptc_template_dispose(&t);
}

/* ---- header names and literal values ---- */

static void test_http_token(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        char s[1] = {(char)c};
        bool tchar = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        assert_int_equal(ptc_http_token_valid(ptc_iov(s, 1)), tchar);
    }
    assert_false(ptc_http_token_valid(ptc_iov(NULL, 0)));
    assert_true(ptc_http_token_valid(S("X-Request-Id")));
    assert_false(ptc_http_token_valid(S("x-request-id ")));
}

static void test_header_names(void **state)
{
    (void)state;
    static const char *const ok[] = {"x-request-id", "x-forwarded-for", "grpc-timeout", "authorization", "a",  "x!#$%&'*+-.^_`|~",
                                     "trailers",     "connection2",     "hosts",        "x-host",        "te2"};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(ok); i++) {
        const char *why = ptc_header_name_unsettable_reason(S(ok[i]));
        if (why != NULL)
            print_error("\"%s\": %s\n", ok[i], why);
        assert_null(why);
        assert_true(ptc_header_name_settable(S(ok[i])));
    }

    static const struct {
        const char *name, *why;
    } refused[] = {
        {"", "the name is empty"},
        {":path", "it is a pseudo-header"},
        {":authority", "it is a pseudo-header"},
        {":", "it is a pseudo-header"},
        {"x y", "the name is not an HTTP token"},
        {"x:y", "the name is not an HTTP token"},
        {"x\r\ny", "the name is not an HTTP token"},
        {"caf\xc3\xa9", "the name is not an HTTP token"},
        {"X-Request-Id", "the name is not lower case"},
        {"Host", "the name is not lower case"},
        {"CONNECTION", "the name is not lower case"},
        {"connection", "it is a hop-by-hop header"},
        {"keep-alive", "it is a hop-by-hop header"},
        {"proxy-connection", "it is a hop-by-hop header"},
        {"te", "it is a hop-by-hop header"},
        {"upgrade", "it is a hop-by-hop header"},
        {"trailer", "it is a hop-by-hop header"},
        {"http2-settings", "it is a hop-by-hop header"},
        {"transfer-encoding", "the gateway frames each message itself"},
        {"content-length", "the gateway frames each message itself"},
        {"host", "the gateway derives it from the request's authority"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(refused); i++) {
        const char *why = ptc_header_name_unsettable_reason(S(refused[i].name));
        if (why == NULL)
            print_error("\"%s\" settable\n", refused[i].name);
        assert_non_null(why);
        assert_string_equal(why, refused[i].why);
        assert_false(ptc_header_name_settable(S(refused[i].name)));
    }
    assert_false(ptc_header_name_settable(ptc_iov(NULL, 0)));
}

static void test_header_value_literal(void **state)
{
    (void)state;
    assert_true(ptc_header_value_literal_ok(""));
    assert_true(ptc_header_value_literal_ok("max-age=31536000; includeSubDomains"));
    assert_true(ptc_header_value_literal_ok("a\tb"));
    assert_true(ptc_header_value_literal_ok(" leading and trailing "));
    assert_true(ptc_header_value_literal_ok("caf\xc3\xa9"));
    assert_false(ptc_header_value_literal_ok("a\r\nx-evil: 1"));
    assert_false(ptc_header_value_literal_ok("a\r"));
    assert_false(ptc_header_value_literal_ok("a\n"));
    assert_false(ptc_header_value_literal_ok("\x7f"));
    assert_false(ptc_header_value_literal_ok(NULL));
    for (int c = 1; c < 256; c++) {
        char s[4] = {'a', (char)c, 'b', '\0'};
        bool ctl = (c < 0x20 && c != '\t') || c == 0x7f;
        assert_int_equal(ptc_header_value_literal_ok(s), !ctl);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_variables),      cmocka_unit_test(test_parse_literals_and_escapes),
        cmocka_unit_test(test_parse_errors),         cmocka_unit_test(test_parse_error_buffer),
        cmocka_unit_test(test_parse_nomem),          cmocka_unit_test(test_expand),
        cmocka_unit_test(test_expand_injection),     cmocka_unit_test(test_expand_truncation),
        cmocka_unit_test(test_http_token),           cmocka_unit_test(test_header_names),
        cmocka_unit_test(test_header_value_literal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
