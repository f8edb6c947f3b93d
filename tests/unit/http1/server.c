/*
 * Unit tests for src/http1/server.c: the HTTP/1.1 adapter over one end of a socketpair, on a real worker
 * whose loop the test drives; the test is the client on the other end. Only answers the gateway makes
 * itself are used (health check, HTTP errors, timeouts), so no upstream is involved: pipelining and its
 * order, keep-alive, each timeout (idle, header read), the staged close after an error (answer, write side
 * shut, the client's leftover bytes read and dropped, no reset), a drain, the switch to HTTP/2 on the
 * preface, and the refusal counters.
 */
#include <fcntl.h>
#include <stdio.h>

#include "../support/worker_fixture.h"
#include "portico/conn.h"
#include "portico/http1.h"

static const char YAML[] = "workers: 1\n"
                           "upstreams: [{name: echo, endpoints: ['127.0.0.1:1']}]\n"
                           "limits: {max_header_size: 2KiB, max_headers: 10}\n"
                           "timeouts: {idle: 300ms, header_read: 200ms}\n";

static fix_t *fix_new(void)
{
    return fix_start(YAML, ptc_h1conn_start);
}

static bool has(fix_t *f, const void *text)
{
    return strstr(f->in, text) != NULL;
}

static void send_text(fix_t *f, const char *text)
{
    send_bytes(f, text, strlen(text));
}

/* Counts the occurrences of `needle` in what was received. */
static size_t count(const fix_t *f, const char *needle)
{
    size_t n = 0;
    for (const char *p = f->in; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static const char HEALTH_OK[] = "HTTP/1.1 200 OK\r\n";

static void test_keep_alive_and_pipelining_in_order(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    /* three requests in one write: answered one at a time, in order; HEAD gets no body */
    send_text(f, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                 "HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
    run(f, has, "HTTP/1.1 4", 2000);
    const char *first = strstr(f->in, HEALTH_OK), *second = first != NULL ? strstr(first + 1, HEALTH_OK) : NULL;
    const char *third = strstr(f->in, "HTTP/1.1 4");
    assert_non_null(first);
    assert_non_null(second);
    assert_non_null(third);
    assert_true(first < second && second < third);
    assert_non_null(strstr(first, "\r\n\r\nok\n"));
    assert_true(strstr(first, "\r\n\r\nok\n") < second); /* the body belongs to the GET */
    assert_null(strstr(second, "ok\n"));                 /* HEAD: none */
    assert_false(f->eof);                                /* kept alive */
    /* and a fourth, later, on the same connection */
    f->len = 0;
    f->in[0] = '\0';
    send_text(f, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    run(f, has, "ok\n", 2000);
    assert_non_null(strstr(f->in, HEALTH_OK));
    fix_free(f);
}

static void test_idle_timeout_closes(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    send_text(f, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    run(f, has, "ok\n", 2000);
    uint64_t t0 = ptc_now_ms();
    run(f, no_conns, NULL, 3000);
    uint64_t waited = ptc_now_ms() - t0;
    assert_int_equal(f->w.num_conns, 0);
    assert_true(waited >= 250 && waited < 2000); /* timeouts.idle: 300 ms */
    run(f, closed, NULL, 1000);
    assert_true(f->eof);
    fix_free(f);
}

static void test_header_read_timeout_408(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    uint64_t t0 = ptc_now_ms();
    send_text(f, "GET /healthz HTTP/1.1\r\nHost: a\r\n"); /* the head never ends */
    run(f, has, "HTTP/1.1 408 ", 3000);
    uint64_t waited = ptc_now_ms() - t0;
    assert_non_null(strstr(f->in, "HTTP/1.1 408 Request Timeout\r\n"));
    assert_non_null(strstr(f->in, "request head not received within 200 ms (timeouts.header_read)"));
    assert_true(waited >= 150 && waited < 2000);
    run(f, closed, NULL, 2000);
    assert_true(f->eof);
    fix_free(f);
}

static void test_staged_close_after_431(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    char req[4096];
    snprintf(req, sizeof(req), "POST /x HTTP/1.1\r\nHost: a\r\nX-Big: %03000d\r\n\r\n", 0);
    send_text(f, req);
    run(f, closed, NULL, 2000);
    assert_non_null(strstr(f->in, "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert_non_null(strstr(f->in, "request header fields too large (limits.max_header_size)"));
    assert_true(f->eof);                 /* the gateway shut its write side ... */
    assert_int_equal(f->w.num_conns, 1); /* ... but still reads, dropping what comes */
    send_text(f, "more bytes of the refused request\r\n");
    run(f, NULL, NULL, 50);
    assert_int_equal(f->w.num_conns, 1);
    /* the client closes: so does the gateway, with nothing left (no reset was needed) */
    shutdown(f->client, SHUT_WR);
    run(f, no_conns, NULL, 3000);
    assert_int_equal(f->w.num_conns, 0);
    assert_int_equal(f->w.limit_stats.headers_too_large, 1);
    fix_free(f);
}

static void test_too_many_fields_431_and_long_uri_414(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"GET /healthz HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\nI: 1\r\nJ: 1\r\nK: 1\r\n\r\n",
         "too many request header fields (limits.max_headers)"},
        {NULL, "request URI too long (limits.max_header_size)"},
    };
    char uri[4096];
    snprintf(uri, sizeof(uri), "GET /%03000d HTTP/1.1\r\nHost: a\r\n\r\n", 7);
    cases[1][0] = uri;
    for (size_t i = 0; i < 2; i++) {
        fix_t *f = fix_new();
        send_text(f, cases[i][0]);
        run(f, closed, NULL, 2000);
        assert_non_null(strstr(f->in, i == 0 ? "HTTP/1.1 431 " : "HTTP/1.1 414 URI Too Long\r\n"));
        assert_non_null(strstr(f->in, cases[i][1]));
        assert_int_equal(f->w.limit_stats.headers_too_large, 1);
        fix_free(f);
    }
}

static void test_malformed_requests_400_and_417(void **state)
{
    (void)state;
    static const char *const cases[][3] = {
        {"GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n",
         "obsolete line folding (obs-fold) in a header field"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n",
         "Content-Length can't be present with Transfer-Encoding"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc-web\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
         "HTTP/1.1 400 Bad Request\r\n", "Invalid character in chunk size"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", "HTTP/1.1 417 Expectation Failed\r\n",
         "only 'Expect: 100-continue' is supported"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(cases); i++) {
        fix_t *f = fix_new();
        send_text(f, cases[i][0]);
        run(f, closed, NULL, 2000);
        if (strstr(f->in, cases[i][1]) != f->in || strstr(f->in, cases[i][2]) == NULL || count(f, "\r\nHTTP/1.1 ") != 0)
            fail_msg("case %zu: got %s", i, f->in);
        assert_true(f->eof);
        assert_int_equal(f->w.limit_stats.headers_too_large, 0);
        fix_free(f);
    }
}

/*
 * A request answered at its head (415 here) whose body then turns out malformed: the one answer is flushed and
 * the connection closes; no second response (a client would take it for the answer to a request never sent).
 */
static void test_malformed_body_after_a_local_answer(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    send_text(f, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    run(f, has, "Portico accepts", 2000);
    send_text(f, "zz\r\n");
    run(f, closed, NULL, 2000);
    assert_true(strstr(f->in, "HTTP/1.1 415 Unsupported Media Type\r\n") == f->in);
    assert_int_equal(count(f, "HTTP/1.1 "), 1);
    assert_true(f->eof);
    fix_free(f);
}

static void test_drain_closes_after_the_exchange(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    send_text(f, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    run(f, has, "ok\n", 2000);
    assert_int_equal(f->w.num_conns, 1);
    ptc_conn_t *c = TAILQ_FIRST(&f->w.conns);
    c->cb->drain(c); /* idle between requests: it closes at once */
    run(f, closed, NULL, 2000);
    assert_int_equal(f->w.num_conns, 0);
    assert_true(f->eof);
    fix_free(f);
}

static void test_drain_answers_a_request_in_progress(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    send_text(f, "GET /healthz HTTP/1.1\r\nHost: a\r\n"); /* half a head */
    run(f, NULL, NULL, 20);
    ptc_conn_t *c = TAILQ_FIRST(&f->w.conns);
    c->cb->drain(c);
    send_text(f, "\r\n");
    run(f, closed, NULL, 2000);
    assert_true(strstr(f->in, HEALTH_OK) == f->in);
    assert_non_null(strstr(f->in, "connection: close\r\n"));
    assert_true(f->eof);
    fix_free(f);
}

static void test_http2_preface_switches(void **state)
{
    (void)state;
    fix_t *f = fix_new();
    /* the preface in two pieces: the adapter waits for all 24 bytes before it decides */
    send_text(f, "PRI * HTTP/2.0\r\n");
    run(f, NULL, NULL, 20);
    assert_int_equal(f->len, 0);
    send_text(f, "\r\nSM\r\n\r\n");
    send(f->client, "\0\0\0\4\0\0\0\0\0", 9, MSG_NOSIGNAL); /* an empty SETTINGS */
    run(f, NULL, NULL, 100);
    assert_true(f->len >= 9);
    assert_int_equal((unsigned char)f->in[3], 4); /* the gateway's SETTINGS frame first */
    assert_int_equal((unsigned char)f->in[4], 0);
    assert_int_equal(f->w.num_conns, 1); /* now an HTTP/2 connection */
    fix_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_alive_and_pipelining_in_order),
        cmocka_unit_test(test_idle_timeout_closes),
        cmocka_unit_test(test_header_read_timeout_408),
        cmocka_unit_test(test_staged_close_after_431),
        cmocka_unit_test(test_too_many_fields_431_and_long_uri_414),
        cmocka_unit_test(test_malformed_requests_400_and_417),
        cmocka_unit_test(test_malformed_body_after_a_local_answer),
        cmocka_unit_test(test_drain_closes_after_the_exchange),
        cmocka_unit_test(test_drain_answers_a_request_in_progress),
        cmocka_unit_test(test_http2_preface_switches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
