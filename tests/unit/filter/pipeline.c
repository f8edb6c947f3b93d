/*
 * Unit tests for src/filter/pipeline.c, ids.c and headers.c: the request pipeline run on request heads
 * without sockets, against a fake downstream that records what would be answered. Each test builds a
 * snapshot (configuration → chains), runs the chain of the request's route, and checks the decision:
 * answers (status, fields, body), the request headers that would go upstream, the call info, and the
 * response-side edits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "portico/call.h"
#include "portico/config.h"
#include "portico/filter.h"
#include "portico/snapshot.h"

/* ---- a downstream that records ---- */

typedef struct st_fake_ds_t {
    ptc_downstream_t super;
    int status;        /* of the answer; 0: none */
    bool grpc;         /* answered through send_head (a gRPC answer), not respond */
    bool done;         /* on_call_done seen */
    ptc_header_t fields[32];
    char store[4096];  /* copies of the answer's fields */
    size_t nfields, used;
    char body[512];
} fake_ds_t;

static void record(fake_ds_t *d, int status, const ptc_header_t *h, size_t n)
{
    d->status = status;
    d->nfields = 0;
    d->used = 0;
    for (size_t i = 0; i < n && i < PTC_ARRAY_SIZE(d->fields); i++) {
        char *name = d->store + d->used;
        memcpy(name, h[i].name.base, h[i].name.len);
        d->used += h[i].name.len;
        char *value = d->store + d->used;
        memcpy(value, h[i].value.base, h[i].value.len);
        d->used += h[i].value.len;
        d->fields[d->nfields++] = (ptc_header_t){ptc_iov(name, h[i].name.len), ptc_iov(value, h[i].value.len)};
    }
}

static void ds_send_head(ptc_downstream_t *ds, int status, const ptc_header_t *h, size_t n, bool end)
{
    fake_ds_t *d = (fake_ds_t *)ds;
    (void)end;
    record(d, status, h, n);
    d->grpc = true;
}

static void ds_respond(ptc_downstream_t *ds, int status, const ptc_header_t *h, size_t n, const char *body)
{
    fake_ds_t *d = (fake_ds_t *)ds;
    record(d, status, h, n);
    snprintf(d->body, sizeof(d->body), "%s", body != NULL ? body : "");
}

static void ds_on_call_done(ptc_downstream_t *ds)
{
    ((fake_ds_t *)ds)->done = true;
}

static const ptc_downstream_cb_t fake_cb = {.send_head = ds_send_head, .respond = ds_respond, .on_call_done = ds_on_call_done};

static const char *field(const fake_ds_t *d, const char *name)
{
    static char buf[1024];
    for (size_t i = 0; i < d->nfields; i++) {
        if (ptc_iov_eq(d->fields[i].name, ptc_iov(name, strlen(name)))) {
            snprintf(buf, sizeof(buf), "%.*s", (int)d->fields[i].value.len, d->fields[i].value.base);
            return buf;
        }
    }
    return NULL;
}

/* ---- running the pipeline ---- */

static ptc_snapshot_t *snap_of_cfg(ptc_config_t *cfg)
{
    ptc_snapshot_t *s = NULL;
    char err[512];
    if (ptc_snapshot_new(&s, cfg, 1, NULL, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return s;
}

static ptc_snapshot_t *snap_of(const char *yaml)
{
    ptc_config_t cfg = {0};
    char err[512];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    if (ptc_config_load_string(&cfg, "test.yaml", yaml, strlen(yaml), err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return snap_of_cfg(&cfg);
}

typedef struct st_run_t {
    fake_ds_t ds;
    ptc_request_t req;
    ptc_header_t headers[300];
    ptc_call_info_t info;
    ptc_filter_ctx_t ctx;
    ptc_http_headers_param_t *hparam;
    ptc_filter_action_t action;
} run_t;

/* Runs the chain for method path with "name: value" header lines (NULL-terminated). */
static void run(run_t *r, ptc_snapshot_t *s, const char *method, const char *path, const char *const *headers)
{
    memset(r, 0, sizeof(*r));
    r->ds.super.cb = &fake_cb;
    r->req = (ptc_request_t){.method = ptc_iov(method, strlen(method)), .path = ptc_iov(path, strlen(path)), .scheme = PTC_STRLIT("http"),
                             .authority = PTC_STRLIT("gw.test"), .headers = r->headers, .peer = "10.1.2.3:4567", .snap = s};
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        const char *colon = strchr(headers[i], ':');
        ptc_iovec_t v = ptc_iov_trim(ptc_iov(colon + 1, strlen(colon + 1)));
        r->headers[r->req.num_headers++] = (ptc_header_t){ptc_iov(headers[i], (size_t)(colon - headers[i])), v};
    }
    const char *q = strchr(path, '?');
    ptc_iovec_t p = ptc_iov(path, q != NULL ? (size_t)(q - path) : strlen(path));
    const ptc_route_config_t *route = ptc_config_match_route(&s->config, p);
    r->info.route = route;
    snprintf(r->info.peer, sizeof(r->info.peer), "%s", r->req.peer);
    r->ctx = (ptc_filter_ctx_t){.snap = s, .route = route,
                                .chain = route != NULL ? &s->pipeline->routes[route - s->config.routes] : &s->pipeline->noroute,
                                .req = &r->req, .headers_cap = PTC_ARRAY_SIZE(r->headers), .ds = &r->ds.super, .hparam = &r->hparam,
                                .path = p, .info = &r->info};
    r->info.chain = r->ctx.chain;
    r->info.upstream = route != NULL ? s->config.upstreams[route->upstream_index].name : NULL;
    const ptc_header_t *o = ptc_filter_find(&r->ctx, PTC_STRLIT("origin"));
    r->ctx.origin = o != NULL ? o->value : ptc_iov("", 0);
    r->action = ptc_pipeline_run(&r->ctx);
}

static void done(run_t *r)
{
    ptc_call_info_dispose(&r->info);
    ptc_filter_ctx_dispose(&r->ctx);
    free(r->hparam);
}

/* The value of a request header as it would go upstream. */
static const char *upstream(run_t *r, const char *name)
{
    static char buf[1024];
    const ptc_header_t *h = ptc_filter_find(&r->ctx, ptc_iov(name, strlen(name)));
    if (h == NULL)
        return NULL;
    snprintf(buf, sizeof(buf), "%.*s", (int)h->value.len, h->value.base);
    return buf;
}

static size_t count(run_t *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->req.num_headers; i++)
        n += ptc_iov_eq(r->req.headers[i].name, ptc_iov(name, strlen(name))) ? 1u : 0u;
    return n;
}

static const char *const GRPC_WEB[] = {"content-type: application/grpc-web+proto", NULL};

#define CORS "cors: {allow_origins: ['https://app.example']}\n"

/* ---- edge filters ---- */

static void test_preflight_answered_before_anything(void **state)
{
    (void)state;
    ptc_snapshot_t *s = snap_of(CORS);
    run_t r;
    const char *const h[] = {"origin: https://app.example", "access-control-request-method: POST",
                             "access-control-request-headers: x-grpc-web,content-type", NULL};
    run(&r, s, "OPTIONS", "/any/path", h);
    assert_int_equal(r.action, PTC_FILTER_STOP);
    assert_int_equal(r.ds.status, 204);
    assert_false(r.ds.grpc);
    assert_string_equal(field(&r.ds, "access-control-allow-origin"), "https://app.example");
    assert_string_equal(r.info.request_id, ""); /* preflights never reach the request id filter */
    done(&r);
    const char *const bad[] = {"origin: https://evil.example", "access-control-request-method: POST", NULL};
    run(&r, s, "OPTIONS", "/any/path", bad);
    assert_int_equal(r.ds.status, 403);
    done(&r);
    ptc_snapshot_release(s);
}

static void test_origin_health_method_content_type(void **state)
{
    (void)state;
    ptc_snapshot_t *s = snap_of(CORS);
    run_t r;
    const char *const evil[] = {"origin: https://evil.example", "content-type: application/grpc-web", NULL};
    run(&r, s, "POST", "/x.Y/Z", evil);
    assert_int_equal(r.ds.status, 403);
    assert_string_equal(r.ds.body, "origin not allowed by the CORS policy\n");
    done(&r);
    run(&r, s, "GET", "/healthz", NULL);
    assert_int_equal(r.ds.status, 200);
    assert_string_equal(r.ds.body, "ok\n");
    done(&r);
    run(&r, s, "GET", "/x.Y/Z", NULL);
    assert_int_equal(r.ds.status, 405);
    assert_string_equal(field(&r.ds, "allow"), "POST, OPTIONS");
    done(&r);
    const char *const xml[] = {"content-type: application/xml", NULL};
    run(&r, s, "POST", "/x.Y/Z", xml);
    assert_int_equal(r.ds.status, 415);
    done(&r);
    /* application/json is Connect's unary type */
    const char *const json[] = {"content-type: application/json", NULL};
    run(&r, s, "POST", "/x.Y/Z", json);
    assert_int_equal(r.action, PTC_FILTER_CONTINUE);
    assert_int_equal(r.ctx.ct.kind, PTC_CT_CONNECT);
    done(&r);
    const char *const native[] = {"content-type: application/grpc", NULL};
    run(&r, s, "POST", "/x.Y/Z", native); /* native gRPC over HTTP/1.1: not accepted */
    assert_int_equal(r.ds.status, 415);
    done(&r);
    run(&r, s, "POST", "/x.Y/Z", GRPC_WEB);
    assert_int_equal(r.action, PTC_FILTER_CONTINUE);
    assert_int_equal(r.ctx.ct.kind, PTC_CT_GRPC_WEB);
    assert_int_equal(r.ds.status, 0);
    done(&r);
    ptc_snapshot_release(s);
}

static void test_no_route_is_a_grpc_error_with_cors_and_id(void **state)
{
    (void)state;
    ptc_snapshot_t *s = snap_of(CORS "routes: [{prefix: /only/, upstream: default}]\n");
    run_t r;
    const char *const h[] = {"origin: https://app.example", "content-type: application/grpc-web-text", "accept: application/grpc-web-text",
                             "x-request-id: abc-1", NULL};
    run(&r, s, "POST", "/other/M", h);
    assert_int_equal(r.action, PTC_FILTER_STOP);
    assert_true(r.ds.grpc && r.ds.done);
    assert_int_equal(r.ds.status, 200);
    assert_string_equal(field(&r.ds, "grpc-status"), "12");
    assert_string_equal(field(&r.ds, "content-type"), "application/grpc-web-text+proto"); /* the caller's protocol */
    assert_string_equal(field(&r.ds, "x-request-id"), "abc-1");
    assert_int_equal(r.ds.super.cors.verdict, PTC_CORS_ALLOWED); /* the adapter adds the CORS fields from this */
    done(&r);
    ptc_snapshot_release(s);
}

static void test_http_headers_param_merged(void **state)
{
    (void)state;
    ptc_snapshot_t *s = snap_of("");
    run_t r;
    const char *const h[] = {"content-type: text/plain", "x-keep: 1", NULL};
    /* $httpHeaders=content-type:application/grpc-web+proto\r\nx-grpc-web:1\r\n */
    run(&r, s, "POST", "/a.B/C?%24httpHeaders=content-type%3Aapplication%2Fgrpc-web%2Bproto%0D%0Ax-grpc-web%3A1%0D%0A", h);
    assert_int_equal(r.action, PTC_FILTER_CONTINUE);
    assert_string_equal(upstream(&r, "content-type"), "application/grpc-web+proto");
    assert_int_equal(count(&r, "content-type"), 1);
    assert_string_equal(upstream(&r, "x-keep"), "1");
    done(&r);
    run(&r, s, "POST", "/a.B/C?%24httpHeaders=host%3Aevil%0D%0A", GRPC_WEB);
    assert_int_equal(r.action, PTC_FILTER_STOP);
    assert_string_equal(field(&r.ds, "grpc-status"), "3");
    done(&r);
    ptc_snapshot_release(s);
}

/* ---- request ids and trace context ---- */

static void test_request_id(void **state)
{
    (void)state;
    ptc_snapshot_t *s = snap_of("");
    run_t r;
    run(&r, s, "POST", "/a.B/C", GRPC_WEB);
    assert_int_equal(strlen(r.info.request_id), 36);
    assert_int_equal(r.info.request_id[14], '4');
    assert_string_equal(upstream(&r, "x-request-id"), r.info.request_id);
    done(&r);
    const char *const in[] = {"content-type: application/grpc-web", "x-request-id: client.id-7", "x-request-id: second", NULL};
    run(&r, s, "POST", "/a.B/C", in);
    assert_string_equal(r.info.request_id, "client.id-7");
    assert_int_equal(count(&r, "x-request-id"), 1); /* one value upstream */
    done(&r);
    ptc_snapshot_release(s);

    /* a renamed header, incoming ids not trusted */
    ptc_config_t cfg = {0};
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    free(cfg.request_id.header);
    cfg.request_id.header = strdup("x-correlation-id");
    cfg.request_id.trust_incoming = false;
    s = snap_of_cfg(&cfg);
    const char *const in2[] = {"content-type: application/grpc-web", "x-correlation-id: mine", NULL};
    run(&r, s, "POST", "/a.B/C", in2);
    assert_int_equal(strlen(r.info.request_id), 36);
    assert_string_equal(upstream(&r, "x-correlation-id"), r.info.request_id);
    assert_null(upstream(&r, "x-request-id"));
    /* and it goes back on the response */
    ptc_header_t hv[8] = {{PTC_STRLIT("content-type"), PTC_STRLIT("application/grpc-web+proto")}};
    ptc_filter_fields_t l = {hv, 1, 8, NULL, 0, 0};
    ptc_pipeline_response(&r.info, &l);
    const ptc_header_t *f = ptc_filter_fields_find(&l, PTC_STRLIT("x-correlation-id"));
    assert_non_null(f);
    assert_true(ptc_iov_eq(f->value, ptc_iov(r.info.request_id, 36)));
    ptc_filter_fields_dispose(&l);
    done(&r);
    ptc_snapshot_release(s);

    cfg = (ptc_config_t){0};
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    cfg.request_id.enabled = false;
    cfg.trace.enabled = false;
    s = snap_of_cfg(&cfg);
    run(&r, s, "POST", "/a.B/C", GRPC_WEB);
    assert_string_equal(r.info.request_id, "");
    assert_null(upstream(&r, "x-request-id"));
    assert_null(upstream(&r, "traceparent"));
    done(&r);
    ptc_snapshot_release(s);
}

static void test_trace_context(void **state)
{
    (void)state;
    ptc_snapshot_t *s = snap_of("");
    run_t r;
    const char *const in[] = {"content-type: application/grpc-web", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                              "tracestate: congo=t61rcWkgMzE", NULL};
    run(&r, s, "POST", "/a.B/C", in);
    const char *tp = upstream(&r, "traceparent");
    assert_non_null(tp);
    assert_int_equal(strncmp(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36), 0);
    assert_int_equal(strcmp(tp + 52, "-01"), 0);
    assert_true(strncmp(tp + 36, "00f067aa0ba902b7", 16) != 0);
    assert_int_equal(strncmp(tp + 36, r.info.span_id, 16), 0);
    assert_string_equal(r.info.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(upstream(&r, "tracestate"), "congo=t61rcWkgMzE");
    done(&r);
    const char *const bad[] = {"content-type: application/grpc-web", "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                               "tracestate: congo=t61rcWkgMzE", NULL};
    run(&r, s, "POST", "/a.B/C", bad);
    assert_string_not_equal(r.info.trace_id, "00000000000000000000000000000000");
    assert_int_equal(strlen(r.info.trace_id), 32);
    assert_null(upstream(&r, "tracestate"));
    assert_int_equal(strcmp(upstream(&r, "traceparent") + 52, "-00"), 0); /* trace.sampled false */
    done(&r);
    ptc_snapshot_release(s);
}

/* ---- header rules ---- */

static ptc_header_rule_config_t rule(ptc_header_op_t op, const char *name, const char *value, const char *to)
{
    return (ptc_header_rule_config_t){op, strdup(name), value != NULL ? strdup(value) : NULL, to != NULL ? strdup(to) : NULL};
}

static void test_header_rules(void **state)
{
    (void)state;
    ptc_config_t cfg = {0};
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    cfg.headers.request = calloc(5, sizeof(ptc_header_rule_config_t));
    cfg.headers.request[cfg.headers.num_request++] = rule(PTC_HEADER_SET, "x-origin", "from %REQ(origin)% via %CLIENT_IP%", NULL);
    cfg.headers.request[cfg.headers.num_request++] = rule(PTC_HEADER_ADD, "x-rid", "%REQUEST_ID%", NULL);
    cfg.headers.request[cfg.headers.num_request++] = rule(PTC_HEADER_REMOVE, "x-debug", NULL, NULL);
    cfg.headers.request[cfg.headers.num_request++] = rule(PTC_HEADER_RENAME, "x-old", NULL, "x-new");
    cfg.headers.request[cfg.headers.num_request++] = rule(PTC_HEADER_SET, "x-route", "%ROUTE% %UPSTREAM%", NULL);
    cfg.routes[0].headers.response = calloc(2, sizeof(ptc_header_rule_config_t));
    cfg.routes[0].headers.response[cfg.routes[0].headers.num_response++] = rule(PTC_HEADER_SET, "x-echo", "%REQ(x-in)%/%RESP(x-up)%", NULL);
    cfg.routes[0].headers.response[cfg.routes[0].headers.num_response++] = rule(PTC_HEADER_REMOVE, "server", NULL, NULL);
    cfg.routes[0].headers.trailers = calloc(1, sizeof(ptc_header_rule_config_t));
    cfg.routes[0].headers.trailers[cfg.routes[0].headers.num_trailers++] = rule(PTC_HEADER_ADD, "x-trace", "%TRACE_ID%", NULL);
    ptc_snapshot_t *s = snap_of_cfg(&cfg);
    run_t r;
    const char *const in[] = {"content-type: application/grpc-web", "origin: http://gw.test", "x-debug: 1", "x-old: v",
                              "x-in: evil\r\nx-injected: 1", NULL};
    run(&r, s, "POST", "/a.B/C", in);
    assert_int_equal(r.action, PTC_FILTER_CONTINUE);
    assert_string_equal(upstream(&r, "x-origin"), "from http://gw.test via 10.1.2.3");
    assert_string_equal(upstream(&r, "x-rid"), r.info.request_id);
    assert_null(upstream(&r, "x-debug"));
    assert_null(upstream(&r, "x-old"));
    assert_string_equal(upstream(&r, "x-new"), "v");
    assert_string_equal(upstream(&r, "x-route"), "/ default");

    /* the response side reads what was captured of the request: x-in, with its CR LF made spaces */
    ptc_header_t hv[8] = {{PTC_STRLIT("content-type"), PTC_STRLIT("application/grpc-web+proto")}, {PTC_STRLIT("x-up"), PTC_STRLIT("U")},
                          {PTC_STRLIT("server"), PTC_STRLIT("upstream")}};
    ptc_filter_fields_t l = {hv, 3, 8, NULL, 0, 0};
    ptc_pipeline_response(&r.info, &l);
    const ptc_header_t *f = ptc_filter_fields_find(&l, PTC_STRLIT("x-echo"));
    assert_non_null(f);
    assert_true(ptc_iov_eq(f->value, PTC_STRLIT("evil  x-injected: 1/U")));
    assert_null(ptc_filter_fields_find(&l, PTC_STRLIT("server")));
    assert_non_null(ptc_filter_fields_find(&l, PTC_STRLIT("x-request-id")));
    ptc_filter_fields_dispose(&l);
    ptc_header_t tv[4] = {{PTC_STRLIT("grpc-status"), PTC_STRLIT("0")}};
    ptc_filter_fields_t t = {tv, 1, 4, NULL, 0, 0};
    ptc_pipeline_trailers(&r.info, &t);
    f = ptc_filter_fields_find(&t, PTC_STRLIT("x-trace"));
    assert_non_null(f);
    assert_true(ptc_iov_eq(f->value, ptc_iov(r.info.trace_id, 32)));
    ptc_filter_fields_dispose(&t);
    done(&r);
    ptc_snapshot_release(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preflight_answered_before_anything),
        cmocka_unit_test(test_origin_health_method_content_type),
        cmocka_unit_test(test_no_route_is_a_grpc_error_with_cors_and_id),
        cmocka_unit_test(test_http_headers_param_merged),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_trace_context),
        cmocka_unit_test(test_header_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
