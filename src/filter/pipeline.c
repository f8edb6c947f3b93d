/*
 * The request pipeline: chains built per snapshot, the context filters work on, local answers, and the
 * edge filters every chain starts with (see include/portico/filter.h). The filters with settings of
 * their own live beside this file: ids.c (request id, trace context), headers.c (header rules), jwt.c.
 *
 * Edge filters, in order:
 *   cors          preflights are answered here, for any path, and never go further (PROTOCOL.md §1.13
 *                 item 12: before authentication); a disallowed origin gets 403 and is not forwarded
 *   health        GET/HEAD health_path → 200 "ok"
 *   http_headers  $httpHeaders (grpc-web suppressCorsPreflight) merged over the request's headers
 *   grpc          POST with a gRPC-Web (or, over HTTP/2, gRPC) content type; else 405 / 415
 *   route         no route matched → UNIMPLEMENTED
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "portico/access_log.h"
#include "portico/call.h"
#include "portico/connect.h"
#include "portico/filter.h"
#include "portico/jwt.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

ptc_filter_stats_t *ptc_filter_stats_of(ptc_worker_t *w)
{
    return &w->filter_stats;
}

/* ---- request storage and header edits ---- */

void *ptc_filter_alloc(ptc_filter_ctx_t *ctx, size_t n)
{
    /* the caller's inline space first (see ptc_filter_ctx_t): most requests never malloc here */
    if (ctx->mem == NULL && ctx->inline_cap - ctx->inline_used >= n) {
        char *p = ctx->inline_mem + ctx->inline_used;
        ctx->inline_used += n;
        return p;
    }
    if (ctx->mem_cap - ctx->mem_used < n) {
        /* a new block; the old one stays alive (values already point into it): blocks are chained */
        size_t cap = PTC_MAX(n + sizeof(void *), (size_t)4096);
        char *blk = malloc(cap);
        if (blk == NULL)
            return NULL;
        memcpy(blk, &ctx->mem, sizeof(void *)); /* link to the previous block */
        ctx->mem = blk;
        ctx->mem_used = sizeof(void *);
        ctx->mem_cap = cap;
    }
    char *p = ctx->mem + ctx->mem_used;
    ctx->mem_used += n;
    return p;
}

char *ptc_filter_strdup(ptc_filter_ctx_t *ctx, ptc_iovec_t s)
{
    char *p = ptc_filter_alloc(ctx, s.len + 1);
    if (p == NULL)
        return NULL;
    if (s.len != 0)
        memcpy(p, s.base, s.len);
    p[s.len] = '\0';
    return p;
}

void ptc_filter_ctx_dispose(ptc_filter_ctx_t *ctx)
{
    while (ctx->mem != NULL) {
        char *prev;
        memcpy(&prev, ctx->mem, sizeof(void *));
        free(ctx->mem);
        ctx->mem = prev;
    }
    ctx->mem_used = ctx->mem_cap = 0;
}

const ptc_header_t *ptc_filter_find(const ptc_filter_ctx_t *ctx, ptc_iovec_t name)
{
    for (size_t i = 0; i < ctx->req->num_headers; i++)
        if (ptc_iov_eq(ctx->req->headers[i].name, name))
            return &ctx->req->headers[i];
    return NULL;
}

/* The edits shared by request headers and response field lists (names in lower case). */
static void fields_remove(ptc_header_t *v, size_t *num, ptc_iovec_t name)
{
    size_t i = 0, n;
    while (i < *num && !ptc_iov_eq(v[i].name, name))
        i++; /* the usual case: absent, and nothing moves */
    for (n = i; i < *num; i++)
        if (!ptc_iov_eq(v[i].name, name))
            v[n++] = v[i];
    *num = n;
}

static void fields_rename(ptc_header_t *v, size_t num, ptc_iovec_t name, ptc_iovec_t to)
{
    for (size_t i = 0; i < num; i++)
        if (ptc_iov_eq(v[i].name, name))
            v[i].name = to; /* `to` is configuration: it lives as long as the snapshot */
}

void ptc_filter_remove(ptc_filter_ctx_t *ctx, ptc_iovec_t name)
{
    fields_remove(ctx->req->headers, &ctx->req->num_headers, name);
}

void ptc_filter_rename(ptc_filter_ctx_t *ctx, ptc_iovec_t name, ptc_iovec_t to)
{
    fields_rename(ctx->req->headers, ctx->req->num_headers, name, to);
}

static int add_field(ptc_filter_ctx_t *ctx, ptc_iovec_t name, ptc_iovec_t value)
{
    ptc_request_t *req = ctx->req;
    if (req->num_headers >= ctx->headers_cap)
        return PTC_ETOOBIG;
    char *v = ptc_filter_strdup(ctx, value);
    if (v == NULL)
        return PTC_ENOMEM;
    req->headers[req->num_headers++] = (ptc_header_t){name, ptc_iov(v, value.len)};
    return 0;
}

int ptc_filter_add(ptc_filter_ctx_t *ctx, ptc_iovec_t name, ptc_iovec_t value)
{
    return add_field(ctx, name, value);
}

int ptc_filter_set(ptc_filter_ctx_t *ctx, ptc_iovec_t name, ptc_iovec_t value)
{
    ptc_filter_remove(ctx, name);
    return add_field(ctx, name, value);
}

/* ---- answers ---- */

/*
 * Metrics and the access log of an answer the pipeline made itself (grpc_status -1: a plain HTTP answer;
 * proto: for a gRPC one). fields: the answer's own header fields, for %RESP()% in an access-log template.
 */
static void record_local(ptc_filter_ctx_t *ctx, int http_status, int grpc_status, ptc_proto_t proto, const char *msg,
                         const ptc_header_t *fields, size_t n, size_t body_len)
{
    ptc_worker_t *w = ctx->worker;
    ptc_access_log_t *al = ctx->snap->access_log;
    const ptc_call_info_t *info = ctx->info;

    if (w == NULL)
        return;
    uint64_t now = ptc_now_us(), dur = ctx->start_us != 0 && now > ctx->start_us ? now - ctx->start_us : 0;
    ptc_call_record_t r = {
        .method = info != NULL ? info->method : NULL,
        .transport = ctx->req->transport,
        .proto = proto,
        .grpc_status = grpc_status,
        .http_status = http_status,
        .bytes_out = body_len,
        .duration_us = dur,
    };
    ptc_metrics_local(&w->metrics, &r);
    if (al == NULL)
        return;
    ptc_access_capture_t resp = {NULL, 0};
    if (ptc_access_log_capture(ptc_access_log_template(al), PTC_TEMPLATE_RESP, fields, n, &resp) != 0)
        resp = (ptc_access_capture_t){NULL, 0};
    ptc_access_entry_t e = {
        .local = true,
        .start_us = ptc_access_log_wall_us(ctx->start_us, now),
        .info = info,
        .origin = ctx->origin,
        .http_method = ctx->req->method,
        .path = ctx->path,
        .protocol = grpc_status >= 0 ? ptc_proto_names[proto] : NULL,
        .transport = ptc_transport_names[ctx->req->transport],
        .grpc_status = grpc_status,
        .grpc_message = msg != NULL ? ptc_iov(msg, strlen(msg)) : ptc_iov("", 0),
        .http_status = http_status,
        .bytes_out = body_len,
        .ttfb_us = (int64_t)dur,
        .duration_us = dur,
        .req = info != NULL ? &info->log_req : NULL,
        .resp = &resp,
    };
    if (ptc_access_log_write(al, w->id, &e))
        PTC_STAT_INC(w->metrics.access_log_lines);
    else
        PTC_STAT_INC(w->metrics.access_log_dropped);
    free(resp.fields);
}

ptc_filter_action_t ptc_filter_answer_http(ptc_filter_ctx_t *ctx, int status, const ptc_header_t *fields, size_t n,
                                           const char *body)
{
    /* recorded first: nothing of the request is touched once the downstream has the answer */
    record_local(ctx, status, -1, PTC_PROTO_GRPC_WEB, NULL, fields, n, body != NULL ? strlen(body) : 0);
    ctx->ds->cb->respond(ctx->ds, status, fields, n, body);
    return PTC_FILTER_STOP;
}

ptc_ctype_t ptc_filter_protocol(ptc_filter_ctx_t *ctx)
{
    ptc_request_t *req = ctx->req;
    ptc_ctype_t ct = ctx->ct;
    if (ct.kind != PTC_CT_OTHER)
        return ct;
    const ptc_header_t *h = ptc_filter_find(ctx, PTC_STRLIT("content-type"));
    ct = h != NULL ? ptc_ctype_classify(h->value) : ct;
    bool connect = ct.kind == PTC_CT_CONNECT || ct.kind == PTC_CT_CONNECT_STREAM;
    if (!req->websocket && !connect && ptc_iov_eq_ci(req->method, PTC_STRLIT("GET")) && ctx->path.len < req->path.len &&
        ptc_connect_query_is_get(ptc_iov(req->path.base + ctx->path.len + 1, req->path.len - ctx->path.len - 1)))
        return (ptc_ctype_t){PTC_CT_CONNECT, PTC_STRLIT("proto")};
    if (ct.kind == PTC_CT_OTHER || (ct.kind == PTC_CT_GRPC && !req->allow_native) || (connect && req->websocket))
        ct = (ptc_ctype_t){PTC_CT_GRPC_WEB, {"", 0}};
    return ct;
}

/* Sends an error reply with the request id, and ends the exchange. */
static ptc_filter_action_t answer(ptc_filter_ctx_t *ctx, int http_status, int status, const ptc_header_t *fields, size_t n, const char *msg)
{
    const char *rid = ctx->info != NULL ? ctx->info->request_id : "";
    ptc_connect_error_t e = {status, ptc_iov(msg, strlen(msg)), false, {"", 0}};
    ptc_error_reply_t r;
    ptc_header_t extra[8];
    size_t k = 0;

    /* the caller's protocol decides the shape, and for gRPC-Web the encoding its Accept asks for */
    const ptc_header_t *accept = ptc_filter_find(ctx, PTC_STRLIT("accept"));
    ptc_ctype_t ct = ptc_filter_protocol(ctx);
    (void)ptc_error_reply_init(&r, ct, accept != NULL ? accept->value : ptc_iov("", 0), &e, http_status, NULL, 0);
    for (size_t i = 0; i < n && k + 1 < PTC_ARRAY_SIZE(extra); i++)
        extra[k++] = fields[i];
    if (rid[0] != '\0' && !r.plain)
        extra[k++] = (ptc_header_t){ptc_iov(ctx->snap->config.request_id.header, strlen(ctx->snap->config.request_id.header)),
                                    ptc_iov(rid, strlen(rid))};
    /* recorded first: nothing of the request is touched once the downstream has the answer; a plain-text refusal
     * is an HTTP answer, anything else one in the caller's protocol with a gRPC status */
    ptc_header_t sent[PTC_ARRAY_SIZE(r.fields) + PTC_ARRAY_SIZE(extra)];
    size_t nsent = 0;
    for (size_t i = 0; i < r.num_fields; i++)
        sent[nsent++] = r.fields[i];
    for (size_t i = 0; i < k; i++)
        sent[nsent++] = extra[i];
    record_local(ctx, r.http_status, r.plain ? -1 : status, ptc_proto_of(ct.kind), msg, sent, nsent, r.body_len);
    ptc_error_reply_send(&r, ctx->ds, extra, k);
    if (!r.plain)
        ctx->ds->cb->on_call_done(ctx->ds);
    ptc_error_reply_dispose(&r);
    return PTC_FILTER_STOP;
}

ptc_filter_action_t ptc_filter_answer_grpc(ptc_filter_ctx_t *ctx, int status, const char *fmt, ...)
{
    char msg[PTC_ERROR_MESSAGE_MAX];
    va_list ap;
    ptc_request_t *req = ctx->req;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *rid = ctx->info != NULL ? ctx->info->request_id : "";
    ptc_log_info("request %.*s from %s%s%s: grpc-status %d: %s", (int)PTC_MIN(ctx->path.len, (size_t)200), ctx->path.base, req->peer,
                 rid[0] != '\0' ? " id " : "", rid, status, msg);
    return answer(ctx, 0, status, NULL, 0, msg);
}

ptc_filter_action_t ptc_filter_refuse(ptc_filter_ctx_t *ctx, int http_status, int grpc_status, const ptc_header_t *fields, size_t n,
                                      const char *fmt, ...)
{
    char msg[PTC_ERROR_MESSAGE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return answer(ctx, http_status, grpc_status, fields, n, msg);
}

/* ---- edge filters ---- */

static ptc_iovec_t header_value(const ptc_filter_ctx_t *ctx, const char *name)
{
    const ptc_header_t *h = ptc_filter_find(ctx, ptc_iov(name, strlen(name)));
    return h != NULL ? h->value : ptc_iov("", 0);
}

static ptc_filter_action_t answer_preflight(ptc_filter_ctx_t *ctx, const ptc_cors_config_t *policy)
{
    const ptc_header_t *rh = ptc_filter_find(ctx, PTC_STRLIT("access-control-request-headers"));
    const ptc_header_t *pn = ptc_filter_find(ctx, PTC_STRLIT("access-control-request-private-network"));
    ptc_preflight_t pf = {
        .origin = ctx->origin,
        .request_method = header_value(ctx, "access-control-request-method"),
        .request_headers = rh != NULL ? rh->value : ptc_iov("", 0),
        .request_private_network = pn != NULL && ptc_iov_eq_ci(ptc_iov_trim(pn->value), PTC_STRLIT("true")),
    };
    ptc_header_t f[PTC_CORS_MAX_FIELDS];
    ptc_cors_scratch_t scratch;
    size_t n;
    const char *why = NULL;

    if (ptc_cors_preflight(policy, &pf, f, PTC_ARRAY_SIZE(f), &n, &scratch, &why) == 204) {
        PTC_FILTER_STAT(ctx, cors_preflights);
        return ptc_filter_answer_http(ctx, 204, f, n, NULL);
    }
    PTC_FILTER_STAT(ctx, cors_preflights_refused);
    ptc_log_warn("request from %s: CORS preflight refused for origin '%.*s' (method '%.*s'): %s", ctx->req->peer,
                 (int)PTC_MIN(ctx->origin.len, (size_t)200), ctx->origin.base, (int)PTC_MIN(pf.request_method.len, (size_t)32),
                 pf.request_method.base, why);
    return ptc_filter_answer_http(ctx, 403, NULL, 0, "CORS preflight refused\n");
}

static const ptc_header_t allow_post = {PTC_STRLIT("allow"), PTC_STRLIT("POST, OPTIONS")};

static ptc_filter_action_t cors_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    (void)f;
    ptc_request_t *req = ctx->req;
    const ptc_cors_config_t *policy = ptc_config_cors_for(&ctx->snap->config, ctx->route);

    if (ptc_iov_eq_ci(req->method, PTC_STRLIT("OPTIONS"))) {
        bool has_origin = ptc_filter_find(ctx, PTC_STRLIT("origin")) != NULL;
        if (ptc_cors_is_preflight(req->method, has_origin, ptc_filter_find(ctx, PTC_STRLIT("access-control-request-method")) != NULL))
            return answer_preflight(ctx, policy);
        return ptc_filter_answer_http(ctx, 204, &allow_post, 1, NULL);
    }
    ctx->ds->cors = ptc_cors_decide_for(policy, ctx->origin, req->scheme, req->authority);
    if (ctx->ds->cors.verdict == PTC_CORS_ALLOWED)
        PTC_FILTER_STAT(ctx, cors_allowed);
    if (ctx->ds->cors.verdict == PTC_CORS_DENIED) {
        PTC_FILTER_STAT(ctx, cors_denied);
        ptc_log_warn("request %.*s %.*s from %s refused: origin '%.*s' is not allowed by the CORS policy",
                     (int)PTC_MIN(req->method.len, (size_t)16), req->method.base, (int)PTC_MIN(ctx->path.len, (size_t)200), ctx->path.base,
                     req->peer, (int)PTC_MIN(ctx->origin.len, (size_t)200), ctx->origin.base);
        return ptc_filter_refuse(ctx, 403, PTC_GRPC_PERMISSION_DENIED, NULL, 0, "origin not allowed by the CORS policy");
    }
    return PTC_FILTER_CONTINUE;
}

static ptc_filter_action_t health_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    (void)f;
    const char *hp = ctx->snap->config.health_path;
    bool get_or_head = ptc_iov_eq_ci(ctx->req->method, PTC_STRLIT("GET")) || ptc_iov_eq_ci(ctx->req->method, PTC_STRLIT("HEAD"));
    if (get_or_head && ptc_iov_eq(ctx->path, ptc_iov(hp, strlen(hp)))) {
        PTC_FILTER_STAT(ctx, health);
        return ptc_filter_answer_http(ctx, 200, NULL, 0, "ok\n");
    }
    return PTC_FILTER_CONTINUE;
}

/*
 * Merges the $httpHeaders URL parameter (grpc-web suppressCorsPreflight) over the request's headers:
 * its fields come first and replace same-named ones. Only for POST: other methods are answered by the
 * grpc filter anyway.
 */
static ptc_filter_action_t http_headers_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    (void)f;
    ptc_request_t *req = ctx->req;
    const char *why = NULL;

    if (ctx->path.len == req->path.len || !ptc_iov_eq_ci(req->method, PTC_STRLIT("POST")))
        return PTC_FILTER_CONTINUE; /* no query */
    if (*ctx->hparam == NULL && (*ctx->hparam = malloc(sizeof(**ctx->hparam))) == NULL)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    ptc_http_headers_param_t *hp = *ctx->hparam;
    if (ptc_http_headers_param_parse(req->path, hp, &why) != 0)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_INVALID_ARGUMENT, "%s", why);
    if (!hp->present)
        return PTC_FILTER_CONTINUE;
    size_t n = hp->num_fields;
    ptc_header_t *v = req->headers;
    memmove(v + n, v, req->num_headers * sizeof(*v));
    memcpy(v, hp->fields, n * sizeof(*v));
    size_t total = n;
    for (size_t i = n; i < n + req->num_headers; i++) {
        bool replaced = false;
        for (size_t j = 0; j < n && !replaced; j++)
            replaced = ptc_iov_eq(v[i].name, v[j].name);
        if (!replaced)
            v[total++] = v[i];
    }
    req->num_headers = total;
    return PTC_FILTER_CONTINUE;
}

static ptc_filter_action_t grpc_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    (void)f;
    ptc_request_t *req = ctx->req;
    ptc_filter_action_t action;

    if (ptc__connect_on_request(ctx, &action))
        return action;
    if (!ptc_iov_eq_ci(req->method, PTC_STRLIT("POST"))) {
        ptc_log_info("request %.*s %.*s from %s: 405", (int)PTC_MIN(req->method.len, (size_t)16), req->method.base,
                     (int)PTC_MIN(req->path.len, (size_t)200), req->path.base, req->peer);
        return ptc_filter_refuse(ctx, 405, PTC_GRPC_UNIMPLEMENTED, &allow_post, 1,
                                 "method %.*s is not allowed here: gRPC-Web calls use POST (Connect: POST, or GET with a message)",
                                 (int)PTC_MIN(req->method.len, (size_t)16), req->method.base);
    }
    const ptc_header_t *h = ptc_filter_find(ctx, PTC_STRLIT("content-type"));
    ctx->ct = h != NULL ? ptc_ctype_classify(h->value) : (ptc_ctype_t){PTC_CT_OTHER, {"", 0}};
    bool accepted = ctx->ct.kind == PTC_CT_GRPC_WEB || ctx->ct.kind == PTC_CT_GRPC_WEB_TEXT || (ctx->ct.kind == PTC_CT_GRPC && req->allow_native);
    if (!accepted || ctx->ct.codec.len > 32) {
        ptc_log_info("request POST %.*s from %s: 415 (content-type '%.*s')", (int)PTC_MIN(req->path.len, (size_t)200), req->path.base,
                     req->peer, h != NULL ? (int)PTC_MIN(h->value.len, (size_t)100) : 0, h != NULL ? h->value.base : "");
        ctx->ct = (ptc_ctype_t){PTC_CT_OTHER, {"", 0}};
        return ptc_filter_refuse(ctx, 415, PTC_GRPC_UNIMPLEMENTED, NULL, 0,
                                 "unsupported content type '%.*s': Portico accepts application/grpc-web[+proto|+json|+codec], "
                                 "application/grpc-web-text[+proto|+codec]%s, and Connect (application/proto, application/json, "
                                 "application/connect+proto|+json)",
                                 h != NULL ? (int)PTC_MIN(h->value.len, (size_t)100) : 0, h != NULL ? h->value.base : "",
                                 req->allow_native ? ", application/grpc over HTTP/2" : "");
    }
    ctx->native = ctx->ct.kind == PTC_CT_GRPC;
    return PTC_FILTER_CONTINUE;
}

static ptc_filter_action_t route_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    (void)f;
    if (ctx->route == NULL)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_UNIMPLEMENTED, "no route for %.*s", (int)PTC_MIN(ctx->path.len, (size_t)200),
                                      ctx->path.base);
    return PTC_FILTER_CONTINUE;
}

static const ptc_filter_type_t cors_filter = {"cors", cors_on_request, NULL, NULL, NULL};
static const ptc_filter_type_t health_filter = {"health", health_on_request, NULL, NULL, NULL};
static const ptc_filter_type_t http_headers_filter = {"http_headers", http_headers_on_request, NULL, NULL, NULL};
static const ptc_filter_type_t grpc_filter = {"grpc", grpc_on_request, NULL, NULL, NULL};
static const ptc_filter_type_t route_filter = {"route", route_on_request, NULL, NULL, NULL};

static const ptc_filter_type_t *const edge_filters[] = {&cors_filter, &health_filter, &http_headers_filter, &grpc_filter};

/* ---- chains ---- */

static void chain_dispose(ptc_filter_chain_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->filters[i].type->dispose != NULL)
            c->filters[i].type->dispose(c->filters[i].conf);
    free(c->filters);
    memset(c, 0, sizeof(*c));
}

/* Appends a filter; its response hooks count for the chain. */
static void chain_add(ptc_filter_chain_t *c, const ptc_filter_type_t *type, void *conf, size_t fields)
{
    c->filters[c->n++] = (ptc_filter_t){type, conf};
    if (type->on_response != NULL || type->on_trailers != NULL) {
        c->has_response = true;
        c->extra_fields += fields;
    }
}

/* The chain for one route (route NULL: requests without one). */
static int chain_build(ptc_filter_chain_t *c, const ptc_pipeline_t *p, const ptc_config_t *cfg, const ptc_route_config_t *route,
                       char *err, size_t errlen)
{
    size_t cap = PTC_ARRAY_SIZE(edge_filters) + 6, added;
    void *conf;
    int ret;

    if ((c->filters = calloc(cap, sizeof(*c->filters))) == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    for (size_t i = 0; i < PTC_ARRAY_SIZE(edge_filters); i++)
        chain_add(c, edge_filters[i], NULL, 0);
    if (cfg->request_id.enabled)
        chain_add(c, &ptc_request_id_filter, (void *)(uintptr_t)&cfg->request_id, 1);
    if (cfg->trace.enabled)
        chain_add(c, &ptc_trace_filter, (void *)(uintptr_t)&cfg->trace, 0);
    c->route_filters = c->n; /* from here on: what a route with native_filters false skips for native gRPC */
    chain_add(c, &route_filter, NULL, 0);
    if (route == NULL)
        return 0;
    /* the token first: header rules may read its claims (%JWT()%) */
    const ptc_jwt_requirement_config_t *rq = route->jwt.set ? &route->jwt : &cfg->jwt_default;
    if ((ret = ptc__auth_filter_new(&conf, rq, p->providers, err, errlen)) != 0)
        return ret;
    if (conf != NULL)
        chain_add(c, &ptc_auth_filter, conf, 0);
    if ((ret = ptc__headers_filter_new(&conf, &added, &cfg->headers, &route->headers, err, errlen)) != 0)
        return ret;
    if (conf != NULL)
        chain_add(c, &ptc_headers_filter, conf, added);
    return 0;
}

int ptc_pipeline_new(ptc_pipeline_t **out, const ptc_config_t *cfg, const ptc_snapshot_inputs_t *in, char *err, size_t errlen)
{
    ptc_pipeline_t *p = calloc(1, sizeof(*p));
    int ret;

    if (p == NULL || (p->routes = calloc(cfg->num_routes + 1, sizeof(*p->routes))) == NULL) {
        free(p);
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    }
    if ((ret = ptc__jwt_providers_new(&p->providers, cfg, in, err, errlen)) != 0)
        goto fail;
    p->num_providers = cfg->num_jwt_providers;
    if ((ret = chain_build(&p->noroute, p, cfg, NULL, err, errlen)) != 0)
        goto fail;
    for (; p->num_routes < cfg->num_routes; p->num_routes++)
        if ((ret = chain_build(&p->routes[p->num_routes], p, cfg, &cfg->routes[p->num_routes], err, errlen)) != 0)
            goto fail;
    *out = p;
    return 0;

fail:
    ptc_pipeline_free(p);
    return ret;
}

void ptc_pipeline_free(ptc_pipeline_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i <= p->num_routes; i++) /* routes has a spare entry: the one a failed build was making */
        chain_dispose(&p->routes[i]);
    chain_dispose(&p->noroute);
    ptc__jwt_providers_free(p->providers, p->num_providers);
    free(p->routes);
    free(p);
}

ptc_filter_action_t ptc_pipeline_run(ptc_filter_ctx_t *ctx)
{
    const ptc_filter_chain_t *c = ctx->chain;
    for (size_t i = 0; i < c->n; i++) {
        /* native gRPC clients skip the route's own filters when the route says so */
        if (ctx->native && ctx->route != NULL && !ctx->route->native_filters && i > c->route_filters)
            break;
        if (c->filters[i].type->on_request(&c->filters[i], ctx) == PTC_FILTER_STOP)
            return PTC_FILTER_STOP;
    }
    return PTC_FILTER_CONTINUE;
}

void ptc_pipeline_response(const ptc_call_info_t *info, ptc_filter_fields_t *head)
{
    const ptc_filter_chain_t *c = info->chain;
    for (size_t i = 0; c != NULL && c->has_response && i < c->n; i++)
        if (c->filters[i].type->on_response != NULL)
            c->filters[i].type->on_response(&c->filters[i], info, head);
}

void ptc_pipeline_trailers(const ptc_call_info_t *info, ptc_filter_fields_t *trailers)
{
    const ptc_filter_chain_t *c = info->chain;
    for (size_t i = 0; c != NULL && c->has_response && i < c->n; i++)
        if (c->filters[i].type->on_trailers != NULL)
            c->filters[i].type->on_trailers(&c->filters[i], info, trailers);
}

void ptc_call_info_dispose(ptc_call_info_t *info)
{
    free(info->mem);
    info->mem = NULL;
    info->captured = NULL;
    info->num_captured = 0;
    ptc_jwt_free(info->jwt);
    info->jwt = NULL;
    free(info->origin);
    info->origin = NULL;
    free(info->log_req.fields);
    free(info->log_resp.fields);
    info->log_req = info->log_resp = (ptc_access_capture_t){NULL, 0};
}

/* ---- field lists ---- */

const ptc_header_t *ptc_filter_fields_find(const ptc_filter_fields_t *l, ptc_iovec_t name)
{
    for (size_t i = 0; i < l->n; i++)
        if (ptc_iov_eq(l->fields[i].name, name))
            return &l->fields[i];
    return NULL;
}

void ptc_filter_fields_remove(ptc_filter_fields_t *l, ptc_iovec_t name)
{
    fields_remove(l->fields, &l->n, name);
}

void ptc_filter_fields_rename(ptc_filter_fields_t *l, ptc_iovec_t name, ptc_iovec_t to)
{
    fields_rename(l->fields, l->n, name, to);
}

int ptc_filter_fields_put(ptc_filter_fields_t *l, ptc_iovec_t name, ptc_iovec_t value, bool replace)
{
    if (replace)
        ptc_filter_fields_remove(l, name);
    if (l->n == l->cap)
        return PTC_ETOOBIG;
    l->fields[l->n++] = (ptc_header_t){name, value};
    return 0;
}

int ptc_filter_fields_set(ptc_filter_fields_t *l, ptc_iovec_t name, ptc_iovec_t value, bool replace)
{
    if (replace)
        ptc_filter_fields_remove(l, name);
    if (l->n == l->cap)
        return PTC_ETOOBIG;
    if (l->arena_cap - l->arena_used < value.len) {
        /* values already in the arena must stay put: a full arena refuses (the cap is generous) */
        if (l->arena == NULL) {
            size_t cap = PTC_MAX(value.len, (size_t)2048);
            if ((l->arena = malloc(cap)) == NULL)
                return PTC_ENOMEM;
            l->arena_cap = cap;
            l->arena_used = 0;
        } else {
            return PTC_ETOOBIG;
        }
    }
    char *v = l->arena + l->arena_used;
    if (value.len != 0)
        memcpy(v, value.base, value.len);
    l->arena_used += value.len;
    l->fields[l->n++] = (ptc_header_t){name, ptc_iov(v, value.len)};
    return 0;
}

void ptc_filter_fields_dispose(ptc_filter_fields_t *l)
{
    free(l->arena);
    l->arena = NULL;
    l->arena_used = l->arena_cap = 0;
}
