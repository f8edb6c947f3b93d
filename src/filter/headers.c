/*
 * Header rules (include/portico/filter.h): add / set / remove / rename on the request sent upstream,
 * on the response head and on the trailers, with values from templates (include/portico/template.h).
 * One filter per chain holds the global rules followed by the route's, compiled when the snapshot is
 * built. The configuration loader already refused what no rule may do (pseudo-headers, hop-by-hop and
 * framing headers, control characters; %RESP()% in request rules), and a value from a variable never
 * holds CR, LF or NUL (the template module replaces them).
 *
 * Response and trailer rules run long after the request head is gone: the request headers their
 * templates read (%REQ(name)%) are captured into the call's info when the request passes, and the
 * other variables come from the info too (ids, route, upstream, client address, the verified token).
 */
#include <stdio.h>
#include <stdlib.h>

#include "portico/call.h"
#include "portico/filter.h"
#include "portico/jwt.h"
#include "portico/log.h"
#include "portico/template.h"

#define MAX_VALUE 4096 /* an expanded value longer than this is cut */

typedef struct st_rule_t {
    ptc_header_op_t op;
    ptc_iovec_t name, to;
    ptc_template_t value;
} rule_t;

typedef struct st_rules_t {
    rule_t *list[3]; /* request, response, trailers */
    size_t n[3];
    ptc_iovec_t *capture; /* request header names the response and trailer templates read */
    size_t num_capture;
} rules_t;

enum { REQUEST, RESPONSE, TRAILERS };

/* ---- values ---- */

/* The client's address without its port ("1.2.3.4", "::1"). */
static ptc_iovec_t client_ip(const ptc_call_info_t *info)
{
    const char *p = info->peer, *colon = strrchr(p, ':');
    size_t len = colon != NULL ? (size_t)(colon - p) : strlen(p);
    if (len >= 2 && p[0] == '[' && p[len - 1] == ']')
        return ptc_iov(p + 1, len - 2);
    return ptc_iov(p, len);
}

typedef struct st_source_ctx_t {
    const ptc_call_info_t *info;
    ptc_filter_ctx_t *req_ctx;           /* request side: the live request */
    const ptc_filter_fields_t *resp;     /* response side: the head or trailers being edited */
    char claim[1024];
} source_ctx_t;

static ptc_iovec_t source_get(void *arg, ptc_template_var_t kind, ptc_iovec_t name)
{
    source_ctx_t *s = arg;
    const ptc_call_info_t *info = s->info;
    const ptc_header_t *h;

    switch (kind) {
    case PTC_TEMPLATE_REQ:
        if (s->req_ctx != NULL)
            return (h = ptc_filter_find(s->req_ctx, name)) != NULL ? h->value : ptc_iov("", 0);
        for (size_t i = 0; i < info->num_captured; i++)
            if (ptc_iov_eq(info->captured[i].name, name))
                return info->captured[i].value;
        return ptc_iov("", 0);
    case PTC_TEMPLATE_RESP:
        return s->resp != NULL && (h = ptc_filter_fields_find(s->resp, name)) != NULL ? h->value : ptc_iov("", 0);
    case PTC_TEMPLATE_REQUEST_ID:
        return ptc_iov(info->request_id, strlen(info->request_id));
    case PTC_TEMPLATE_TRACE_ID:
        return ptc_iov(info->trace_id, strlen(info->trace_id));
    case PTC_TEMPLATE_UPSTREAM:
        return info->upstream != NULL ? ptc_iov(info->upstream, strlen(info->upstream)) : ptc_iov("", 0);
    case PTC_TEMPLATE_ROUTE:
        return info->route != NULL ? ptc_iov(info->route->path, strlen(info->route->path)) : ptc_iov("", 0);
    case PTC_TEMPLATE_CLIENT_IP:
        return client_ip(info);
    case PTC_TEMPLATE_JWT: {
        char path[256];
        if (info->jwt == NULL || name.len >= sizeof(path))
            return ptc_iov("", 0);
        memcpy(path, name.base, name.len);
        path[name.len] = '\0';
        ssize_t n = ptc_jwt_claim(info->jwt, path, s->claim, sizeof(s->claim));
        return n > 0 ? ptc_iov(s->claim, strlen(s->claim)) : ptc_iov("", 0);
    }
    default:
        return ptc_iov("", 0);
    }
}

/* ---- the filter ---- */

static ptc_filter_action_t headers_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    const rules_t *r = f->conf;
    ptc_call_info_t *info = ctx->info;
    source_ctx_t sc; /* not zeroed whole: claim is scratch (a 1 KiB memset on every request otherwise) */
    sc.info = info;
    sc.req_ctx = ctx;
    sc.resp = NULL;
    ptc_template_source_t src = {source_get, &sc};
    char value[MAX_VALUE];

    /* what the response rules will read of the request, as the client sent it */
    if (r->num_capture != 0) {
        size_t bytes = 0;
        for (size_t i = 0; i < r->num_capture; i++) {
            const ptc_header_t *h = ptc_filter_find(ctx, r->capture[i]);
            bytes += h != NULL ? h->value.len : 0;
        }
        if ((info->captured = malloc(r->num_capture * sizeof(*info->captured) + bytes + 1)) == NULL)
            return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        info->mem = (char *)info->captured; /* one block; ptc_call_info_dispose frees it */
        char *p = (char *)(info->captured + r->num_capture);
        for (size_t i = 0; i < r->num_capture; i++) {
            const ptc_header_t *h = ptc_filter_find(ctx, r->capture[i]);
            ptc_iovec_t v = h != NULL ? h->value : ptc_iov("", 0);
            if (v.len != 0)
                memcpy(p, v.base, v.len);
            info->captured[i] = (ptc_header_t){r->capture[i], ptc_iov(p, v.len)};
            p += v.len;
        }
        info->num_captured = r->num_capture;
    }
    for (size_t i = 0; i < r->n[REQUEST]; i++) {
        const rule_t *rule = &r->list[REQUEST][i];
        int ret = 0;
        switch (rule->op) {
        case PTC_HEADER_REMOVE:
            ptc_filter_remove(ctx, rule->name);
            break;
        case PTC_HEADER_RENAME:
            ptc_filter_rename(ctx, rule->name, rule->to);
            break;
        case PTC_HEADER_ADD:
        case PTC_HEADER_SET: {
            size_t n = ptc_template_expand(&rule->value, &src, value, sizeof(value), NULL);
            ret = rule->op == PTC_HEADER_SET ? ptc_filter_set(ctx, rule->name, ptc_iov(value, n))
                                             : ptc_filter_add(ctx, rule->name, ptc_iov(value, n));
            break;
        }
        }
        if (ret == PTC_ENOMEM)
            return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        if (ret != 0)
            return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "header rules: more than %d fields added to the request",
                                          PTC_FILTER_MAX_ADDED_HEADERS);
        PTC_FILTER_STAT(ctx, header_rules);
    }
    return PTC_FILTER_CONTINUE;
}

static void apply_fields(const rules_t *r, int which, const ptc_call_info_t *info, ptc_filter_fields_t *l)
{
    source_ctx_t sc; /* claim is scratch, as in headers_on_request */
    sc.info = info;
    sc.req_ctx = NULL;
    sc.resp = l;
    ptc_template_source_t src = {source_get, &sc};
    char value[MAX_VALUE];

    for (size_t i = 0; i < r->n[which]; i++) {
        const rule_t *rule = &r->list[which][i];
        switch (rule->op) {
        case PTC_HEADER_REMOVE:
            ptc_filter_fields_remove(l, rule->name);
            break;
        case PTC_HEADER_RENAME:
            ptc_filter_fields_rename(l, rule->name, rule->to);
            break;
        case PTC_HEADER_ADD:
        case PTC_HEADER_SET: {
            size_t n = ptc_template_expand(&rule->value, &src, value, sizeof(value), NULL);
            if (ptc_filter_fields_set(l, rule->name, ptc_iov(value, n), rule->op == PTC_HEADER_SET) != 0)
                ptc_log_warn("header rules: no room for %.*s in a response (dropped)", (int)rule->name.len, rule->name.base);
            break;
        }
        }
    }
}

static void headers_on_response(const ptc_filter_t *f, const ptc_call_info_t *info, ptc_filter_fields_t *head)
{
    apply_fields(f->conf, RESPONSE, info, head);
}

static void headers_on_trailers(const ptc_filter_t *f, const ptc_call_info_t *info, ptc_filter_fields_t *trailers)
{
    apply_fields(f->conf, TRAILERS, info, trailers);
}

static void rules_free(void *conf)
{
    rules_t *r = conf;
    for (int w = 0; w < 3; w++) {
        for (size_t i = 0; i < r->n[w]; i++)
            ptc_template_dispose(&r->list[w][i].value);
        free(r->list[w]);
    }
    free(r->capture);
    free(r);
}

const ptc_filter_type_t ptc_headers_filter = {"headers", headers_on_request, headers_on_response, headers_on_trailers, rules_free};

/* ---- compiling ---- */

static int compile_list(rules_t *r, int which, const ptc_header_rule_config_t *const *lists, const size_t *counts, char *err,
                        size_t errlen)
{
    size_t total = counts[0] + counts[1];
    if (total == 0)
        return 0;
    if ((r->list[which] = calloc(total, sizeof(rule_t))) == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            const ptc_header_rule_config_t *c = &lists[l][i];
            rule_t *rule = &r->list[which][r->n[which]];
            rule->op = c->op;
            rule->name = ptc_iov(c->name, strlen(c->name));
            rule->to = c->to != NULL ? ptc_iov(c->to, strlen(c->to)) : ptc_iov("", 0);
            if ((c->op == PTC_HEADER_ADD || c->op == PTC_HEADER_SET) &&
                ptc_template_parse(c->value != NULL ? c->value : "", &rule->value, err, errlen) != 0)
                return PTC_ECONFIG; /* the loader checked it: only out of memory gets here */
            r->n[which]++;
            /* response templates read request headers that must be kept for them */
            for (size_t p = 0; which != REQUEST && p < rule->value.num_parts; p++) {
                const ptc_template_part_t *part = &rule->value.parts[p];
                bool seen = false;
                if (part->kind != PTC_TEMPLATE_REQ)
                    continue;
                for (size_t k = 0; k < r->num_capture && !seen; k++)
                    seen = ptc_iov_eq(r->capture[k], part->arg);
                if (seen)
                    continue;
                ptc_iovec_t *grown = realloc(r->capture, (r->num_capture + 1) * sizeof(*grown));
                if (grown == NULL)
                    return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
                r->capture = grown;
                r->capture[r->num_capture++] = part->arg;
            }
        }
    }
    return 0;
}

/*
 * The header-rules filter for the global rules followed by the route's (route NULL: global only), or
 * NULL in *out when there are none. Returns 0 or an error.
 */
int ptc__headers_filter_new(void **out, size_t *added, const ptc_header_rules_config_t *global, const ptc_header_rules_config_t *route,
                            char *err, size_t errlen)
{
    static const ptc_header_rules_config_t none = {0};
    const ptc_header_rules_config_t *g = global, *rt = route != NULL ? route : &none;
    rules_t *r;
    int ret;

    *out = NULL;
    *added = 0;
    if (g->num_request + g->num_response + g->num_trailers + rt->num_request + rt->num_response + rt->num_trailers == 0)
        return 0;
    if ((r = calloc(1, sizeof(*r))) == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    const ptc_header_rule_config_t *req[] = {g->request, rt->request}, *resp[] = {g->response, rt->response},
                                   *trl[] = {g->trailers, rt->trailers};
    size_t nreq[] = {g->num_request, rt->num_request}, nresp[] = {g->num_response, rt->num_response},
           ntrl[] = {g->num_trailers, rt->num_trailers};
    if ((ret = compile_list(r, REQUEST, req, nreq, err, errlen)) != 0 || (ret = compile_list(r, RESPONSE, resp, nresp, err, errlen)) != 0 ||
        (ret = compile_list(r, TRAILERS, trl, ntrl, err, errlen)) != 0) {
        rules_free(r);
        return ret;
    }
    for (int w = RESPONSE; w <= TRAILERS; w++)
        for (size_t i = 0; i < r->n[w]; i++)
            *added += r->list[w][i].op == PTC_HEADER_ADD || r->list[w][i].op == PTC_HEADER_SET;
    *out = r;
    return 0;
}
