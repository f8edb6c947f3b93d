/*
 * The policy step on a complete request head, shared by the HTTP/1.1 and HTTP/2 adapters: the route
 * is matched once, its filter chain runs (include/portico/filter.h), and the request becomes a call
 * unless a filter answered it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "portico/call.h"
#include "portico/filter.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

size_t ptc_downstream_cors_fields(const ptc_downstream_t *ds, const ptc_header_t *sent, size_t nsent, ptc_header_t *out,
                                  size_t cap, ptc_cors_scratch_t *scratch)
{
    return ptc_cors_response_headers(&ds->cors, sent, nsent, out, cap, scratch);
}

void ptc_request_handle(ptc_worker_t *w, ptc_downstream_t *ds, ptc_request_t *req, ptc_http_headers_param_t **hparam,
                        ptc_call_t **call)
{
    const ptc_snapshot_t *snap = req->snap;
    const ptc_config_t *cfg = &snap->config;
    const char *q = memchr(req->path.base, '?', req->path.len);
    ptc_iovec_t path = ptc_iov(req->path.base, q != NULL ? (size_t)(q - req->path.base) : req->path.len);
    const ptc_route_config_t *route = ptc_config_match_route(cfg, path);
    ptc_call_info_t info = {.route = route};
    char inline_mem[512]; /* a request id and a traceparent fit: most requests never malloc for their values */
    ptc_filter_ctx_t ctx = {
        .worker = w,
        .snap = snap,
        .route = route,
        .chain = route != NULL ? &snap->pipeline->routes[route - cfg->routes] : &snap->pipeline->noroute,
        .req = req,
        .headers_cap = ptc_request_headers_cap(&cfg->limits),
        .ds = ds,
        .hparam = hparam,
        .path = path,
        .info = &info,
        .start_us = ptc_now_us(),
        .inline_mem = inline_mem,
        .inline_cap = sizeof(inline_mem),
    };

    *call = NULL;
    ds->cors = (ptc_cors_decision_t){PTC_CORS_NONE, NULL, {"", 0}};
    const ptc_header_t *origin = ptc_filter_find(&ctx, PTC_STRLIT("origin"));
    ctx.origin = origin != NULL ? ptc_iov_trim(origin->value) : ptc_iov("", 0);
    info.chain = ctx.chain;
    info.upstream = route != NULL ? cfg->upstreams[route->upstream_index].name : NULL;
    const char *peer = req->peer != NULL ? req->peer : "-";
    size_t plen = PTC_MIN(strlen(peer), sizeof(info.peer) - 1);
    memcpy(info.peer, peer, plen);
    info.peer[plen] = '\0';
    if (w != NULL && route != NULL)
        info.method = ptc_metrics_method(&w->metrics, path, cfg->metrics.max_methods);
    if (snap->access_log != NULL) {
        /* what the access log says of the request, as the client sent it (filters may edit it) */
        if (ctx.origin.len != 0) /* out of memory: the line says null */
            info.origin = strndup(ctx.origin.base, PTC_MIN(ctx.origin.len, (size_t)PTC_ACCESS_LOG_ORIGIN_MAX - 1));
        if (ptc_access_log_capture(ptc_access_log_template(snap->access_log), PTC_TEMPLATE_REQ, req->headers, req->num_headers,
                                   &info.log_req) != 0)
            info.log_req = (ptc_access_capture_t){NULL, 0}; /* out of memory: the line has empty values */
    }
    if (ptc_pipeline_run(&ctx) == PTC_FILTER_CONTINUE)
        ptc_call_start(w, ds, &ctx, call); /* takes info over */
    ptc_call_info_dispose(&info);
    ptc_filter_ctx_dispose(&ctx);
}
