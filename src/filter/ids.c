/*
 * The request id and W3C trace context filters (include/portico/filter.h).
 *
 * request_id: a valid incoming id (the configured header, include/portico/request_id.h for what is
 * valid) is kept when incoming ids are trusted, else a UUIDv4 is made; either way it replaces what the
 * client sent upstream, goes back to the client in the response head (also on errors), and names the
 * call in every log line.
 *
 * trace: a valid traceparent continues its trace with a span of the gateway's own (a new parent id
 * upstream, the caller's flags kept) and its tracestate when valid; an absent or invalid one starts a
 * new trace (sampled flag from the configuration) and its tracestate is dropped (W3C Trace Context §3.3:
 * a vendor must not forward tracestate without a valid traceparent). Trace and span ids name the call in
 * the log.
 */
#include <stdlib.h>

#include "portico/call.h"
#include "portico/filter.h"
#include "portico/log.h"
#include "portico/request_id.h"
#include "portico/trace.h"
#include "portico/worker.h"

static ptc_iovec_t cstr(const char *s)
{
    return ptc_iov(s, strlen(s));
}

/* ---- request id ---- */

static ptc_filter_action_t request_id_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    const ptc_request_id_config_t *c = f->conf;
    ptc_iovec_t name = cstr(c->header);
    const ptc_header_t *h = ptc_filter_find(ctx, name);
    ptc_call_info_t *info = ctx->info;
    ptc_iovec_t in = h != NULL ? ptc_iov_trim(h->value) : ptc_iov("", 0);

    if (c->trust_incoming && h != NULL && ptc_request_id_valid(in, PTC_MIN(c->max_length, (uint32_t)PTC_REQUEST_ID_MAX))) {
        memcpy(info->request_id, in.base, in.len);
        info->request_id[in.len] = '\0';
        PTC_FILTER_STAT(ctx, request_id_accepted);
    } else {
        if (h != NULL && c->trust_incoming) {
            PTC_FILTER_STAT(ctx, request_id_replaced);
            ptc_log_debug("request %.*s from %s: %s '%.*s' is not a valid request id; a new one is made",
                          (int)PTC_MIN(ctx->path.len, (size_t)200), ctx->path.base, ctx->req->peer, c->header,
                          (int)PTC_MIN(in.len, (size_t)64), in.base);
        }
        ptc_request_id_generate(info->request_id);
        PTC_FILTER_STAT(ctx, request_id_generated);
    }
    if (ptc_filter_set(ctx, name, cstr(info->request_id)) != 0)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    return PTC_FILTER_CONTINUE;
}

static void request_id_on_response(const ptc_filter_t *f, const ptc_call_info_t *info, ptc_filter_fields_t *head)
{
    const ptc_request_id_config_t *c = f->conf;
    /* info is the call's: its request id outlives the head being edited */
    if (info->request_id[0] != '\0' && ptc_filter_fields_put(head, cstr(c->header), cstr(info->request_id), true) != 0) {
        /* no room left: the head goes out without it rather than not at all */
    }
}

const ptc_filter_type_t ptc_request_id_filter = {"request_id", request_id_on_request, request_id_on_response, NULL, NULL};

/* ---- trace context ---- */

static ptc_filter_action_t trace_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    const ptc_trace_config_t *c = f->conf;
    const ptc_header_t *tp = ptc_filter_find(ctx, PTC_STRLIT("traceparent"));
    ptc_traceparent_t t;
    char out[PTC_TRACEPARENT_LEN + 1];

    if (tp != NULL && ptc_traceparent_parse(tp->value, &t) == 0) {
        PTC_FILTER_STAT(ctx, trace_continued);
        /* a version this gateway does not know is propagated as the version it knows (Trace Context §3.2.4) */
        t.version = 0;
        const ptc_header_t *ts = ptc_filter_find(ctx, PTC_STRLIT("tracestate"));
        size_t members;
        if (ts != NULL && ptc_tracestate_check(ts->value, &members) != 0) {
            PTC_FILTER_STAT(ctx, tracestate_dropped);
            ptc_filter_remove(ctx, PTC_STRLIT("tracestate"));
        }
    } else {
        PTC_FILTER_STAT(ctx, trace_started);
        if (tp != NULL)
            ptc_log_debug("request %.*s from %s: invalid traceparent '%.*s'; a new trace is started",
                          (int)PTC_MIN(ctx->path.len, (size_t)200), ctx->path.base, ctx->req->peer,
                          (int)PTC_MIN(tp->value.len, (size_t)64), tp->value.base);
        if (ptc_filter_find(ctx, PTC_STRLIT("tracestate")) != NULL) {
            PTC_FILTER_STAT(ctx, tracestate_dropped);
            ptc_filter_remove(ctx, PTC_STRLIT("tracestate"));
        }
        t.version = 0;
        ptc_trace_new_trace_id(t.trace_id);
        t.flags = c->sampled ? PTC_TRACE_FLAG_SAMPLED : 0;
    }
    ptc_trace_new_span_id(t.parent_id); /* the gateway's span is the upstream's parent */
    size_t n = ptc_traceparent_format(&t, out);
    /* the ids' hex is in the traceparent just made: "00-" trace-id "-" parent-id "-" flags */
    memcpy(ctx->info->trace_id, out + 3, 2 * sizeof(t.trace_id));
    ctx->info->trace_id[2 * sizeof(t.trace_id)] = '\0';
    memcpy(ctx->info->span_id, out + 4 + 2 * sizeof(t.trace_id), 2 * sizeof(t.parent_id));
    ctx->info->span_id[2 * sizeof(t.parent_id)] = '\0';
    if (ptc_filter_set(ctx, PTC_STRLIT("traceparent"), ptc_iov(out, n)) != 0)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    return PTC_FILTER_CONTINUE;
}

const ptc_filter_type_t ptc_trace_filter = {"trace", trace_on_request, NULL, NULL, NULL};
