/*
 * Metrics (src/filter/metrics.c): recording into a worker's records, summing several workers, and the text the
 * scrape renders (label escaping, histogram buckets, cardinality caps, the OpenMetrics differences).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "portico/metrics.h"

static ptc_worker_metrics_t *metrics_new(void)
{
    ptc_worker_metrics_t *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    return m;
}

static void metrics_free(ptc_worker_metrics_t *m)
{
    ptc_metrics_dispose(m);
    free(m);
}

/* The scrape of n sources with process figures p as a NUL-terminated string (free it). */
static char *render_src(const ptc_metrics_source_t *src, size_t n, const ptc_metrics_process_t *p, bool om)
{
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(ptc_metrics_render(b, src, n, p, om), 0);
    size_t len = evbuffer_get_length(b);
    char *s = malloc(len + 1);
    assert_non_null(s);
    evbuffer_remove(b, s, len);
    s[len] = '\0';
    evbuffer_free(b);
    return s;
}

/* The scrape of n workers as a NUL-terminated string (free it). */
static char *render(ptc_worker_metrics_t **w, const ptc_filter_stats_t *filters, size_t n, bool om)
{
    ptc_metrics_source_t src[4];
    ptc_metrics_process_t p = {.config_version = 7, .reloads_ok = 6, .reloads_failed = 2, .workers = n, .access_log_bytes = 99};
    assert_true(n <= 4);
    for (size_t i = 0; i < n; i++)
        src[i] = (ptc_metrics_source_t){w[i], filters, NULL};
    return render_src(src, n, &p, om);
}

/* Asserts that text holds this exact line. */
static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    fail_msg("no line \"%s\" in:\n%s", line, text);
}

static void assert_no_line_with(const char *text, const char *part)
{
    if (strstr(text, part) != NULL)
        fail_msg("\"%s\" should not be in:\n%s", part, text);
}

static void test_escape_label(void **state)
{
    (void)state;
    char out[64];
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"a\\b", "a\\\\b"},
        {"say \"hi\"", "say \\\"hi\\\""},
        {"two\nlines", "two\\nlines"},
        {"tab\there\r", "tab\there\r"}, /* only \, " and LF are escaped in the exposition formats */
        {"caf\xc3\xa9", "caf\xc3\xa9"},
        {"bad\xff", "bad\xef\xbf\xbd"},
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},     /* an overlong '/' */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
        {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"},   /* cut short */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = ptc_metrics_escape_label(out, sizeof(out), ptc_iov(cases[i].in, strlen(cases[i].in)));
        assert_string_equal(out, cases[i].out);
        assert_int_equal(n, strlen(cases[i].out));
    }
    /* what does not fit is cut between characters and escapes */
    assert_int_equal(ptc_metrics_escape_label(out, 4, PTC_STRLIT("ab\"")), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(ptc_metrics_escape_label(out, 5, PTC_STRLIT("a\xc3\xa9\xc3\xa9")), 3);
    assert_string_equal(out, "a\xc3\xa9");
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    ptc_histogram_t h = {0};
    /* bounds are inclusive (le): 500 µs is in the first bucket, 501 µs in the second */
    ptc_histogram_observe(&h, 0);
    ptc_histogram_observe(&h, 500);
    ptc_histogram_observe(&h, 501);
    ptc_histogram_observe(&h, 60000000);
    ptc_histogram_observe(&h, 60000001);
    assert_int_equal(h.bucket[0], 2);
    assert_int_equal(h.bucket[1], 1);
    assert_int_equal(h.bucket[PTC_HIST_BUCKETS - 1], 1);
    assert_int_equal(h.bucket[PTC_HIST_BUCKETS], 1);
    assert_int_equal(h.sum_us, 500 + 501 + 60000000 + 60000001);

    /* rendered cumulatively, with count and sum, through a method's handling histogram */
    ptc_worker_metrics_t *w = metrics_new();
    ptc_method_stats_t *e = ptc_metrics_method(w, PTC_STRLIT("/pkg.Svc/M"), 10);
    ptc_metrics_call_started(w, e);
    ptc_metrics_call_started(w, e);
    ptc_metrics_call_started(w, e);
    ptc_call_record_t r = {.method = e, .grpc_status = 0, .http_status = 200, .duration_us = 400};
    ptc_metrics_call_ended(w, &r);
    r.duration_us = 2000;
    ptc_metrics_call_ended(w, &r);
    r.duration_us = 90000000;
    ptc_metrics_call_ended(w, &r);
    char *t = render(&w, NULL, 1, false);
    const char *L = "grpc_method=\"M\",grpc_service=\"pkg.Svc\",grpc_type=\"unary\"";
    char line[512];
    static const struct {
        const char *le;
        int count;
    } b[] = {{"0.0005", 1}, {"0.001", 1}, {"0.0025", 2}, {"1.0", 2}, {"60.0", 2}, {"+Inf", 3}};
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
        snprintf(line, sizeof(line), "grpc_server_handling_seconds_bucket{%s,le=\"%s\"} %d", L, b[i].le, b[i].count);
        assert_line(t, line);
    }
    snprintf(line, sizeof(line), "grpc_server_handling_seconds_count{%s} 3", L);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_handling_seconds_sum{%s} 90.002400", L);
    assert_line(t, line);
    /* the gateway's own latency histogram, by transport and protocol */
    assert_line(t, "portico_call_duration_seconds_count{protocol=\"grpc-web\",transport=\"http1\"} 3");
    assert_line(t, "portico_call_duration_seconds_bucket{protocol=\"grpc-web\",transport=\"http1\",le=\"0.0005\"} 1");
    free(t);
    metrics_free(w);
}

/* Two workers' records add up; a method's type is the widest any worker saw, on every family. */
static void test_sum_across_workers(void **state)
{
    (void)state;
    ptc_worker_metrics_t *w[2] = {metrics_new(), metrics_new()};
    ptc_filter_stats_t filters = {0};

    ptc_method_stats_t *a0 = ptc_metrics_method(w[0], PTC_STRLIT("/pkg.Svc/Stream"), 10);
    ptc_method_stats_t *b0 = ptc_metrics_method(w[0], PTC_STRLIT("/pkg.Svc/Unary"), 10);
    ptc_method_stats_t *a1 = ptc_metrics_method(w[1], PTC_STRLIT("/pkg.Svc/Stream"), 10);
    assert_ptr_equal(ptc_metrics_method(w[0], PTC_STRLIT("/pkg.Svc/Stream"), 10), a0); /* found again */

    ptc_metrics_call_started(w[0], a0);
    ptc_call_record_t r = {.method = a0, .upstream = "echo", .transport = PTC_TRANSPORT_H2, .proto = PTC_PROTO_GRPC,
                           .grpc_status = 0, .http_status = 200, .bytes_in = 10, .bytes_out = 100, .msgs_in = 1, .msgs_out = 1,
                           .duration_us = 1000, .upstream_us = 900};
    ptc_metrics_call_ended(w[0], &r); /* one message each way: unary as far as worker 0 knows */
    ptc_metrics_call_started(w[1], a1);
    ptc_metrics_call_started(w[1], a1);
    r.method = a1;
    r.msgs_out = 5; /* a server stream */
    ptc_metrics_call_ended(w[1], &r);
    r.grpc_status = 14;
    r.msgs_out = 0;
    ptc_metrics_call_ended(w[1], &r);
    ptc_metrics_call_started(w[0], b0);
    r = (ptc_call_record_t){.method = b0, .transport = PTC_TRANSPORT_HTTP1, .proto = PTC_PROTO_GRPC_WEB_TEXT, .grpc_status = 99,
                            .bytes_in = 8, .msgs_in = 1, .duration_us = 5};
    ptc_metrics_call_ended(w[0], &r); /* a status out of range counts as Unknown */
    PTC_STAT_INC(filters.cors_allowed);

    char *t = render(w, &filters, 2, false);
    const char *S = "grpc_method=\"Stream\",grpc_service=\"pkg.Svc\",grpc_type=\"server_stream\"";
    const char *U = "grpc_method=\"Unary\",grpc_service=\"pkg.Svc\",grpc_type=\"unary\"";
    char line[512];
    snprintf(line, sizeof(line), "grpc_server_started_total{%s} 3", S);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_handled_total{grpc_code=\"OK\",%s} 2", S);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_handled_total{grpc_code=\"Unavailable\",%s} 1", S);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_msg_received_total{%s} 3", S);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_msg_sent_total{%s} 6", S);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_handling_seconds_count{%s} 3", S);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_started_total{%s} 1", U);
    assert_line(t, line);
    snprintf(line, sizeof(line), "grpc_server_handled_total{grpc_code=\"Unknown\",%s} 1", U);
    assert_line(t, line);
    assert_no_line_with(t, "grpc_code=\"Canceled\""); /* codes never seen make no series */
    assert_line(t, "portico_request_bytes_total{protocol=\"grpc\",transport=\"h2\"} 30");
    assert_line(t, "portico_response_bytes_total{protocol=\"grpc\",transport=\"h2\"} 300");
    assert_line(t, "portico_response_messages_total{protocol=\"grpc\",transport=\"h2\"} 6");
    assert_line(t, "portico_request_bytes_total{protocol=\"grpc-web-text\",transport=\"http1\"} 8");
    assert_no_line_with(t, "transport=\"websocket\""); /* transports without calls make no series */
    assert_line(t, "portico_upstream_duration_seconds_count{upstream=\"echo\"} 3");
    assert_line(t, "portico_upstream_duration_seconds_sum{upstream=\"echo\"} 0.002700");
    assert_line(t, "portico_calls_active 0");
    assert_line(t, "portico_cors_allowed_total 2"); /* both sources were given the same filter counters */
    assert_line(t, "portico_config_version 7");
    assert_line(t, "portico_config_reloads_total{result=\"ok\"} 6");
    assert_line(t, "portico_config_reloads_total{result=\"failed\"} 2");
    assert_line(t, "portico_access_log_bytes_total 99");
    assert_line(t, "# TYPE grpc_server_started_total counter");
    assert_line(t, "# TYPE grpc_server_handling_seconds histogram");
    assert_no_line_with(t, "# EOF");
    free(t);
    metrics_free(w[0]);
    metrics_free(w[1]);
}

/* Methods are counted one by one up to the cap, and only for gRPC method paths; the rest is "other". */
static void test_cardinality(void **state)
{
    (void)state;
    ptc_worker_metrics_t *w = metrics_new();
    static const char *const bad[] = {"/pkg.Svc/M/extra", "/pkg.Svc/", "//M", "/pkg.Svc", "/pkg Svc/M", "/pkg.Svc/M\"x",
                                      "/pkg.Svc/\xc3\xa9", "pkg.Svc/M", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_ptr_equal(ptc_metrics_method(w, ptc_iov(bad[i], strlen(bad[i])), 10), &w->other);
    assert_int_equal(w->num_methods, 0);

    char path[64];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/pkg.Svc/M%d", i);
        ptc_method_stats_t *e = ptc_metrics_method(w, ptc_iov(path, strlen(path)), 2);
        assert_true(i < 2 ? e != &w->other : e == &w->other);
        ptc_metrics_call_started(w, e);
        ptc_call_record_t r = {.method = e, .grpc_status = 0, .http_status = 200, .msgs_in = 2, .msgs_out = 2};
        ptc_metrics_call_ended(w, &r);
    }
    assert_int_equal(w->num_methods, 2);
    /* a method seen before the cap keeps its own entry; many methods grow the index without losing any */
    assert_ptr_not_equal(ptc_metrics_method(w, PTC_STRLIT("/pkg.Svc/M1"), 2), &w->other);
    for (int i = 0; i < 300; i++) {
        snprintf(path, sizeof(path), "/many.Svc/Method_%d", i);
        assert_ptr_not_equal(ptc_metrics_method(w, ptc_iov(path, strlen(path)), 1000), &w->other);
    }
    for (int i = 0; i < 300; i++) {
        snprintf(path, sizeof(path), "/many.Svc/Method_%d", i);
        ptc_method_stats_t *e = ptc_metrics_method(w, ptc_iov(path, strlen(path)), 1000);
        assert_string_equal(e->path, path);
    }
    assert_int_equal(w->num_methods, 302);

    char *t = render(&w, NULL, 1, false);
    assert_line(t, "grpc_server_started_total{grpc_method=\"other\",grpc_service=\"other\",grpc_type=\"bidi_stream\"} 1");
    assert_line(t, "grpc_server_started_total{grpc_method=\"M0\",grpc_service=\"pkg.Svc\",grpc_type=\"bidi_stream\"} 1");
    assert_line(t, "grpc_server_started_total{grpc_method=\"Method_299\",grpc_service=\"many.Svc\",grpc_type=\"unary\"} 0");
    free(t);
    metrics_free(w);
}

static void test_upstreams_and_local(void **state)
{
    (void)state;
    ptc_worker_metrics_t *w = metrics_new();
    ptc_upstream_stats_t *a = ptc_metrics_upstream(w, "alpha");
    assert_ptr_equal(ptc_metrics_upstream(w, "alpha"), a);
    PTC_STAT_INC(a->connects);
    PTC_STAT_INC(a->connects);
    PTC_STAT_INC(a->connect_failures);
    PTC_STAT_INC(a->conns[PTC_UPSTREAM_READY]);
    PTC_STAT_INC(a->conns[PTC_UPSTREAM_CONNECTING]);
    PTC_STAT_ADD(a->conns[PTC_UPSTREAM_CONNECTING], -1);
    char name[32];
    for (int i = 0; i < PTC_METRICS_MAX_UPSTREAMS + 3; i++) {
        snprintf(name, sizeof(name), "u%d", i);
        ptc_upstream_stats_t *e = ptc_metrics_upstream(w, name);
        assert_true(i < PTC_METRICS_MAX_UPSTREAMS - 1 ? e != &w->upstreams[PTC_METRICS_MAX_UPSTREAMS]
                                                      : e == &w->upstreams[PTC_METRICS_MAX_UPSTREAMS]);
        PTC_STAT_INC(e->connects);
    }

    /* local answers: by HTTP status, and grpc-status for gRPC ones; a routed gRPC answer is its method's call */
    ptc_method_stats_t *m = ptc_metrics_method(w, PTC_STRLIT("/pkg.Svc/M"), 10);
    ptc_call_record_t r = {.grpc_status = -1, .http_status = 204};
    ptc_metrics_local(w, &r);
    ptc_metrics_local(w, &r);
    r.http_status = 418;
    ptc_metrics_local(w, &r);
    r = (ptc_call_record_t){.method = m, .grpc_status = 16, .http_status = 200, .duration_us = 10};
    ptc_metrics_local(w, &r);
    r.method = NULL;
    r.grpc_status = 12;
    ptc_metrics_local(w, &r);

    char *t = render(&w, NULL, 1, false);
    assert_line(t, "portico_upstream_connects_total{upstream=\"alpha\"} 2");
    assert_line(t, "portico_upstream_connect_failures_total{upstream=\"alpha\"} 1");
    assert_line(t, "portico_upstream_connections{upstream=\"alpha\",state=\"ready\"} 1");
    assert_line(t, "portico_upstream_connections{upstream=\"alpha\",state=\"connecting\"} 0");
    assert_line(t, "portico_upstream_connects_total{upstream=\"u0\"} 1");
    assert_line(t, "portico_upstream_connects_total{upstream=\"other\"} 4"); /* the names past the table */
    assert_line(t, "portico_local_responses_total{status=\"204\"} 2");
    assert_line(t, "portico_local_responses_total{status=\"other\"} 1");
    assert_line(t, "portico_local_responses_total{grpc_code=\"Unauthenticated\",status=\"200\"} 1");
    assert_line(t, "portico_local_responses_total{grpc_code=\"Unimplemented\",status=\"200\"} 1");
    assert_line(t, "grpc_server_started_total{grpc_method=\"M\",grpc_service=\"pkg.Svc\",grpc_type=\"unary\"} 1");
    assert_line(t, "grpc_server_handled_total{grpc_code=\"Unauthenticated\",grpc_method=\"M\",grpc_service=\"pkg.Svc\",grpc_type=\"unary\"} 1");
    assert_line(t, "portico_calls_active 0"); /* local answers are no calls */
    free(t);
    metrics_free(w);
}

static void test_openmetrics(void **state)
{
    (void)state;
    ptc_worker_metrics_t *w = metrics_new();
    ptc_method_stats_t *e = ptc_metrics_method(w, PTC_STRLIT("/a.B/C"), 10);
    ptc_metrics_call_started(w, e);
    char *t = render(&w, NULL, 1, true);
    /* counter families are named without _total, their samples with it; the text ends with # EOF */
    assert_line(t, "# TYPE grpc_server_started counter");
    assert_line(t, "grpc_server_started_total{grpc_method=\"C\",grpc_service=\"a.B\",grpc_type=\"unary\"} 1");
    assert_line(t, "portico_calls_active 1");
    assert_no_line_with(t, "_total counter");
    size_t len = strlen(t);
    assert_true(len > 6 && strcmp(t + len - 6, "# EOF\n") == 0);
    free(t);
    metrics_free(w);

    assert_true(ptc_metrics_wants_openmetrics("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert_true(ptc_metrics_wants_openmetrics("text/plain;q=0.5, Application/OpenMetrics-Text;q=0.9"));
    assert_false(ptc_metrics_wants_openmetrics("application/openmetrics-text;q=0, text/plain"));
    assert_false(ptc_metrics_wants_openmetrics("application/openmetrics-text; version=1.0.0; q=0.0"));
    assert_false(ptc_metrics_wants_openmetrics("text/plain; version=0.0.4"));
    assert_false(ptc_metrics_wants_openmetrics(NULL));
    assert_false(ptc_metrics_wants_openmetrics("*/*"));
}

static void test_process(void **state)
{
    (void)state;
    /* this process, read from /proc/self and getrusage: CPU time at microsecond resolution */
    ptc_metrics_process_t p = {.workers = 1};
    for (volatile unsigned i = 0; i < 20000000u; i++)
        ;
    ptc_metrics_read_process(&p);
    assert_true(p.have_proc);
    assert_true(p.cpu_seconds > 0.0 && p.cpu_seconds < 600.0);
    assert_true(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
    assert_true(p.open_fds >= 3 && p.open_fds < p.max_fds);
    assert_true(p.start_time_seconds > 1.6e9);

    p = (ptc_metrics_process_t){.workers = 1, .have_proc = true, .cpu_seconds = 0.001234, .start_time_seconds = 1700000000.5,
                                .resident_bytes = 4096, .virtual_bytes = 8192, .open_fds = 9, .max_fds = 1024};
    ptc_worker_metrics_t *w = metrics_new();
    ptc_metrics_source_t src = {w, NULL, NULL};
    char *t = render_src(&src, 1, &p, false);
    assert_line(t, "# TYPE process_cpu_seconds_total counter");
    assert_line(t, "process_cpu_seconds_total 0.001234");
    assert_line(t, "process_resident_memory_bytes 4096");
    assert_line(t, "process_virtual_memory_bytes 8192");
    assert_line(t, "process_open_fds 9");
    assert_line(t, "process_max_fds 1024");
    assert_line(t, "process_start_time_seconds 1700000000.50");
    free(t);
    metrics_free(w);
}

/* The limits' counters, summed like the filters' (a worker's may be missing); Connect calls get their own protocol label. */
static void test_limits_and_connect(void **state)
{
    (void)state;
    ptc_worker_metrics_t *w[2] = {metrics_new(), metrics_new()};
    ptc_limit_stats_t limits[2] = {{0}, {0}};
    PTC_STAT_INC(limits[0].connections_refused);
    PTC_STAT_INC(limits[1].connections_refused);
    PTC_STAT_INC(limits[1].connections_refused);
    PTC_STAT_INC(limits[1].h2_rapid_resets);
    ptc_method_stats_t *m = ptc_metrics_method(w[0], PTC_STRLIT("/a.B/C"), 10);
    ptc_metrics_call_started(w[0], m);
    ptc_call_record_t r = {.method = m, .transport = PTC_TRANSPORT_HTTP1, .proto = ptc_proto_of(PTC_CT_CONNECT), .grpc_status = 5,
                           .http_status = 404, .bytes_in = 3, .bytes_out = 40, .duration_us = 10};
    ptc_metrics_call_ended(w[0], &r);
    assert_int_equal(ptc_proto_of(PTC_CT_CONNECT_STREAM), PTC_PROTO_CONNECT);
    assert_int_equal(ptc_proto_of(PTC_CT_GRPC_WEB_TEXT), PTC_PROTO_GRPC_WEB_TEXT);
    assert_int_equal(ptc_proto_of(PTC_CT_GRPC), PTC_PROTO_GRPC);
    assert_int_equal(ptc_proto_of(PTC_CT_OTHER), PTC_PROTO_GRPC_WEB);

    ptc_metrics_source_t src[2] = {{w[0], NULL, &limits[0]}, {w[1], NULL, &limits[1]}};
    ptc_metrics_process_t p = {.workers = 2};
    char *t = render_src(src, 2, &p, false);
    assert_line(t, "portico_connections_refused_total 3");
    assert_line(t, "portico_h2_rapid_resets_total 1");
    assert_line(t, "portico_messages_too_large_total 0");
    assert_line(t, "# TYPE portico_h2_floods_total counter");
    assert_line(t, "portico_cors_allowed_total 0"); /* no filter counters given */
    assert_line(t, "portico_request_bytes_total{protocol=\"connect\",transport=\"http1\"} 3");
    assert_line(t, "grpc_server_handled_total{grpc_code=\"NotFound\",grpc_method=\"C\",grpc_service=\"a.B\",grpc_type=\"unary\"} 1");
    free(t);
    metrics_free(w[0]);
    metrics_free(w[1]);
}

/* The endpoints' health gauges: one-hot health state, availability and ejection, labels escaped. */
static void test_endpoints(void **state)
{
    (void)state;
    ptc_worker_metrics_t *w = metrics_new();
    ptc_metrics_endpoint_t e[3] = {
        {.upstream = "echo", .address = "10.0.0.1:50051", .health = "healthy", .available = true},
        {.upstream = "echo", .address = "10.0.0.2:50051", .health = "unhealthy"},
        {.upstream = "we\"ird", .address = "h:1", .health = "unknown", .ejected = true},
    };
    ptc_metrics_source_t src = {w, NULL, NULL};
    ptc_metrics_process_t p = {.workers = 1, .endpoints = e, .num_endpoints = 3};
    char *t = render_src(&src, 1, &p, false);
    assert_line(t, "# TYPE portico_upstream_endpoint_health gauge");
    assert_line(t, "portico_upstream_endpoint_health{upstream=\"echo\",endpoint=\"10.0.0.1:50051\",state=\"healthy\"} 1");
    assert_line(t, "portico_upstream_endpoint_health{upstream=\"echo\",endpoint=\"10.0.0.1:50051\",state=\"unhealthy\"} 0");
    assert_line(t, "portico_upstream_endpoint_health{upstream=\"echo\",endpoint=\"10.0.0.1:50051\",state=\"unknown\"} 0");
    assert_line(t, "portico_upstream_endpoint_health{upstream=\"echo\",endpoint=\"10.0.0.2:50051\",state=\"unhealthy\"} 1");
    assert_line(t, "portico_upstream_endpoint_available{upstream=\"echo\",endpoint=\"10.0.0.1:50051\"} 1");
    assert_line(t, "portico_upstream_endpoint_available{upstream=\"echo\",endpoint=\"10.0.0.2:50051\"} 0");
    assert_line(t, "portico_upstream_endpoint_ejected{upstream=\"we\\\"ird\",endpoint=\"h:1\"} 1");
    assert_line(t, "portico_upstream_endpoint_health{upstream=\"we\\\"ird\",endpoint=\"h:1\",state=\"unknown\"} 1");
    free(t);
    p.num_endpoints = 0; /* no upstreams: the families are announced, with no samples */
    t = render_src(&src, 1, &p, false);
    assert_line(t, "# TYPE portico_upstream_endpoint_available gauge");
    assert_no_line_with(t, "portico_upstream_endpoint_available{");
    free(t);
    metrics_free(w);
}

static void test_code_names(void **state)
{
    (void)state;
    assert_string_equal(ptc_grpc_code_name(0), "OK");
    assert_string_equal(ptc_grpc_code_name(1), "Canceled"); /* Go's spelling, as go-grpc-prometheus writes it */
    assert_string_equal(ptc_grpc_code_name(16), "Unauthenticated");
    assert_string_equal(ptc_grpc_code_name(17), "Unknown");
    assert_string_equal(ptc_grpc_code_name(-1), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_label),      cmocka_unit_test(test_histogram_buckets),  cmocka_unit_test(test_sum_across_workers),
        cmocka_unit_test(test_cardinality),       cmocka_unit_test(test_upstreams_and_local), cmocka_unit_test(test_openmetrics),
        cmocka_unit_test(test_code_names),        cmocka_unit_test(test_process),            cmocka_unit_test(test_limits_and_connect),
        cmocka_unit_test(test_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
