/*
 * The policy step on a complete request head, shared by the HTTP/1.1 and HTTP/2 adapters:
 * preflight → origin → health → method → $httpHeaders → content type → call.
 * Preflights come first and are never authenticated or forwarded (PROTOCOL.md §1.13 item 12).
 */
#include <stdio.h>
#include <stdlib.h>

#include "portico/call.h"
#include "portico/codec.h"
#include "portico/config.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

size_t ptc_downstream_cors_fields(const ptc_downstream_t *ds, const ptc_header_t *sent, size_t nsent, ptc_header_t *out,
                                  size_t cap, ptc_cors_scratch_t *scratch)
{
    return ptc_cors_response_headers(&ds->cors, sent, nsent, out, cap, scratch);
}

static const ptc_header_t *find(const ptc_request_t *req, ptc_iovec_t name)
{
    for (size_t i = 0; i < req->num_headers; i++)
        if (ptc_iov_eq(req->headers[i].name, name))
            return &req->headers[i];
    return NULL;
}

/* A gRPC-Web error made before any call exists (the request head itself was refused). */
static void grpc_error(ptc_downstream_t *ds, const ptc_request_t *req, int status, const char *msg)
{
    char code[8], enc[1024];
    snprintf(code, sizeof(code), "%d", status);
    ptc_header_t h[] = {{PTC_STRLIT("content-type"), PTC_STRLIT("application/grpc-web+proto")},
                        {PTC_STRLIT("grpc-status"), ptc_iov(code, strlen(code))},
                        {PTC_STRLIT("grpc-message"), ptc_iov(enc, ptc_grpc_message_encode(enc, sizeof(enc), msg, strlen(msg)))}};
    ptc_log_info("request %.*s from %s: grpc-status %d: %s", (int)PTC_MIN(req->path.len, (size_t)200), req->path.base, req->peer,
                 status, msg);
    ds->cb->send_head(ds, 200, h, PTC_ARRAY_SIZE(h), true);
    ds->cb->on_call_done(ds);
}

static void answer_preflight(ptc_downstream_t *ds, const ptc_request_t *req, const ptc_cors_config_t *policy, ptc_iovec_t origin)
{
    const ptc_header_t *rm = find(req, PTC_STRLIT("access-control-request-method"));
    const ptc_header_t *rh = find(req, PTC_STRLIT("access-control-request-headers"));
    const ptc_header_t *pn = find(req, PTC_STRLIT("access-control-request-private-network"));
    ptc_preflight_t pf = {
        .origin = origin,
        .request_method = rm->value,
        .request_headers = rh != NULL ? rh->value : ptc_iov("", 0),
        .request_private_network = pn != NULL && ptc_iov_eq_ci(ptc_iov_trim(pn->value), PTC_STRLIT("true")),
    };
    ptc_header_t f[PTC_CORS_MAX_FIELDS];
    ptc_cors_scratch_t scratch;
    size_t n;
    const char *why = NULL;

    if (ptc_cors_preflight(policy, &pf, f, PTC_ARRAY_SIZE(f), &n, &scratch, &why) == 204) {
        ds->cb->respond(ds, 204, f, n, NULL);
        return;
    }
    ptc_log_warn("request from %s: CORS preflight refused for origin '%.*s' (method '%.*s'): %s", req->peer,
                 (int)PTC_MIN(origin.len, (size_t)200), origin.base, (int)PTC_MIN(pf.request_method.len, (size_t)32),
                 pf.request_method.base, why);
    ds->cb->respond(ds, 403, NULL, 0, "CORS preflight refused\n");
}

/*
 * Merges the $httpHeaders URL parameter (grpc-web suppressCorsPreflight) over the request's headers:
 * its fields come first and replace same-named ones. Returns false when the parameter was refused
 * (already answered).
 */
static bool merge_http_headers_param(ptc_downstream_t *ds, ptc_request_t *req, ptc_http_headers_param_t **hparam)
{
    const char *why = NULL;

    if (memchr(req->path.base, '?', req->path.len) == NULL)
        return true;
    if (*hparam == NULL && (*hparam = malloc(sizeof(**hparam))) == NULL) {
        grpc_error(ds, req, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        return false;
    }
    ptc_http_headers_param_t *hp = *hparam;
    if (ptc_http_headers_param_parse(req->path, hp, &why) != 0) {
        grpc_error(ds, req, PTC_GRPC_INVALID_ARGUMENT, why);
        return false;
    }
    if (!hp->present)
        return true;
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
    return true;
}

void ptc_request_handle(ptc_worker_t *w, ptc_downstream_t *ds, ptc_request_t *req, ptc_http_headers_param_t **hparam,
                        ptc_call_t **call)
{
    const ptc_config_t *cfg = &req->snap->config;
    const char *q = memchr(req->path.base, '?', req->path.len);
    ptc_iovec_t path = ptc_iov(req->path.base, q != NULL ? (size_t)(q - req->path.base) : req->path.len);
    const ptc_cors_config_t *policy = ptc_config_cors_for(cfg, ptc_config_match_route(cfg, path));
    const ptc_header_t *origin_h = find(req, PTC_STRLIT("origin")), *h;
    ptc_iovec_t origin = origin_h != NULL ? ptc_iov_trim(origin_h->value) : ptc_iov("", 0);
    ptc_header_t allow = {PTC_STRLIT("allow"), PTC_STRLIT("POST, OPTIONS")};

    *call = NULL;
    ds->cors = (ptc_cors_decision_t){PTC_CORS_NONE, NULL, {"", 0}};
    if (ptc_iov_eq_ci(req->method, PTC_STRLIT("OPTIONS"))) {
        if (ptc_cors_is_preflight(req->method, origin_h != NULL, find(req, PTC_STRLIT("access-control-request-method")) != NULL))
            answer_preflight(ds, req, policy, origin);
        else
            ds->cb->respond(ds, 204, &allow, 1, NULL);
        return;
    }
    char self[300];
    int selflen = 0;
    if (origin.len != 0 && req->authority.len != 0)
        selflen = snprintf(self, sizeof(self), "%.*s://%.*s", (int)PTC_MIN(req->scheme.len, (size_t)8), req->scheme.base,
                           (int)PTC_MIN(req->authority.len, (size_t)256), req->authority.base);
    ds->cors = ptc_cors_decide(policy, origin, ptc_iov(self, selflen > 0 ? PTC_MIN((size_t)selflen, sizeof(self) - 1) : 0));
    if (ds->cors.verdict == PTC_CORS_DENIED) {
        ptc_log_warn("request %.*s %.*s from %s refused: origin '%.*s' is not allowed by the CORS policy", (int)PTC_MIN(req->method.len, (size_t)16),
                     req->method.base, (int)PTC_MIN(path.len, (size_t)200), path.base, req->peer, (int)PTC_MIN(origin.len, (size_t)200),
                     origin.base);
        ds->cb->respond(ds, 403, NULL, 0, "origin not allowed by the CORS policy\n");
        return;
    }
    bool get_or_head = ptc_iov_eq_ci(req->method, PTC_STRLIT("GET")) || ptc_iov_eq_ci(req->method, PTC_STRLIT("HEAD"));
    if (get_or_head && path.len == strlen(cfg->health_path) && memcmp(path.base, cfg->health_path, path.len) == 0) {
        ds->cb->respond(ds, 200, NULL, 0, "ok\n");
        return;
    }
    if (!ptc_iov_eq_ci(req->method, PTC_STRLIT("POST"))) {
        char body[160];
        snprintf(body, sizeof(body), "method %.*s is not allowed here: gRPC-Web calls use POST\n", (int)PTC_MIN(req->method.len, (size_t)16),
                 req->method.base);
        ptc_log_info("request %.*s %.*s from %s: 405", (int)PTC_MIN(req->method.len, (size_t)16), req->method.base,
                     (int)PTC_MIN(req->path.len, (size_t)200), req->path.base, req->peer);
        ds->cb->respond(ds, 405, &allow, 1, body);
        return;
    }
    if (!merge_http_headers_param(ds, req, hparam))
        return;
    h = find(req, PTC_STRLIT("content-type"));
    ptc_ctype_t ct = h != NULL ? ptc_ctype_classify(h->value) : (ptc_ctype_t){PTC_CT_OTHER, {"", 0}};
    bool accepted = ct.kind == PTC_CT_GRPC_WEB || ct.kind == PTC_CT_GRPC_WEB_TEXT || (ct.kind == PTC_CT_GRPC && req->allow_native);
    if (!accepted || ct.codec.len > 32) {
        char body[400];
        snprintf(body, sizeof(body),
                 "unsupported content type '%.*s': Portico accepts application/grpc-web[+proto|+json|+codec] and "
                 "application/grpc-web-text[+proto|+codec]%s\n",
                 h != NULL ? (int)PTC_MIN(h->value.len, (size_t)100) : 0, h != NULL ? h->value.base : "",
                 req->allow_native ? " (and application/grpc over HTTP/2)" : "");
        ptc_log_info("request POST %.*s from %s: 415 (content-type '%.*s')", (int)PTC_MIN(req->path.len, (size_t)200), req->path.base,
                     req->peer, h != NULL ? (int)PTC_MIN(h->value.len, (size_t)100) : 0, h != NULL ? h->value.base : "");
        ds->cb->respond(ds, 415, NULL, 0, body);
        return;
    }
    ptc_call_start(w, ds, req, ct, call);
}
