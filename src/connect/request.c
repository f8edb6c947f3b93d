/*
 * Connect requests in the pipeline (the grpc filter asks here first): recognises the three shapes of a
 * Connect call and checks what the gateway must check before a call starts; the call (src/call/call.c)
 * does the rest from ctx->ct and ctx->connect.
 *
 *   unary     POST, application/proto | application/json (or application/CODEC with
 *             connect-protocol-version), a bare message as the body
 *   GET       GET with ?connect=v1&encoding=…&message=…[&base64=1][&compression=…]: the message is in the URL
 *   stream    POST, application/connect+CODEC, a body of 5-byte envelopes
 *
 * Checked here: connect-protocol-version (1 when present: the header is optional, as connect-go's handlers
 * have it), connect-timeout-ms, the encoding of the messages (identity or gzip, which is forwarded to the
 * upstream as gRPC compression), whether the client reads gzip responses (accept-encoding, for streams
 * connect-accept-encoding; without it, what the request itself used), and a unary body's content-length
 * against limits.max_message_size.
 */
#include <inttypes.h>

#include "portico/call.h"
#include "portico/codec.h"
#include "portico/connect.h"
#include "portico/filter.h"
#include "portico/log.h"
#include "portico/snapshot.h"

/* The message encoding a header or the GET query names: 0 (identity), 1 (gzip) or -1 (unsupported). */
static int encoding_of(ptc_iovec_t v)
{
    v = ptc_iov_trim(v);
    if (v.len == 0 || ptc_iov_eq_ci(v, PTC_STRLIT("identity")))
        return 0;
    return ptc_iov_eq_ci(v, PTC_STRLIT("gzip")) ? 1 : -1;
}

/*
 * connect-timeout-ms, the encoding, and whether the response may be gzip: what GET and POST share. accept names the
 * header listing what the client reads (accept-encoding, or connect-accept-encoding for a stream); without it the
 * client reads what it sent (connectrpc.com/docs/protocol). Returns false when the request was answered.
 */
static bool common_checks(ptc_filter_ctx_t *ctx, ptc_iovec_t encoding, const char *what, ptc_iovec_t accept,
                          ptc_filter_action_t *action)
{
    const ptc_header_t *t = ptc_filter_find(ctx, PTC_STRLIT("connect-timeout-ms"));
    if (t != NULL) {
        if (ptc_connect_timeout_parse(ptc_iov_trim(t->value), &ctx->connect.timeout_ms) != 0) {
            *action =
                ptc_filter_answer_grpc(ctx, PTC_GRPC_INVALID_ARGUMENT, "malformed connect-timeout-ms '%.*s' (want 1 to 10 digits)",
                                       (int)PTC_MIN(t->value.len, (size_t)40), t->value.base);
            return false;
        }
        ctx->connect.has_timeout = true;
    }
    int enc = encoding_of(encoding);
    if (enc < 0) {
        *action = ptc_filter_answer_grpc(ctx, PTC_GRPC_UNIMPLEMENTED, "unsupported %s '%.*s': Portico accepts gzip and identity",
                                         what, (int)PTC_MIN(encoding.len, (size_t)40), encoding.base);
        return false;
    }
    ctx->connect.compressed = enc == 1;
    const ptc_header_t *a = ptc_filter_find(ctx, accept);
    ctx->connect.accept_gzip = a != NULL ? ptc_accept_encoding_gzip(a->value) : enc == 1;
    return true;
}

static ptc_filter_action_t on_get(ptc_filter_ctx_t *ctx, ptc_iovec_t query)
{
    const ptc_config_t *cfg = &ctx->snap->config;
    ptc_connect_get_t get;
    ptc_filter_action_t action;
    const char *why = NULL;

    ctx->ct = (ptc_ctype_t){PTC_CT_CONNECT, PTC_STRLIT("proto")}; /* errors are JSON whatever the codec */
    uint8_t *scratch = ptc_filter_alloc(ctx, PTC_CONNECT_GET_SCRATCH(query.len));
    if (scratch == NULL)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    if (ptc_connect_get_parse(query, scratch, PTC_CONNECT_GET_SCRATCH(query.len), &get, &why) != 0)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_INVALID_ARGUMENT, "bad Connect GET request: %s", why);
    ctx->ct.codec = get.encoding;
    if (!common_checks(ctx, get.compression, "compression", PTC_STRLIT("accept-encoding"), &action))
        return action;
    if (get.message.len > cfg->limits.max_message_size)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED,
                                      "request message of %zu bytes exceeds the gateway limit of %" PRIu32
                                      " bytes (limits.max_message_size)",
                                      get.message.len, cfg->limits.max_message_size);
    ctx->connect.get = true;
    ctx->connect.message = get.message;
    ctx->connect.compressed = ctx->connect.compressed && get.message.len != 0; /* an empty message is never decompressed */
    return PTC_FILTER_CONTINUE;
}

/* A POST's content type (h, classified in *ct): Connect's (unary or stream), or a custom codec announced by
 * connect-protocol-version. */
static bool connect_ctype(const ptc_header_t *h, bool versioned, ptc_ctype_t *ct)
{
    if (ct->kind == PTC_CT_CONNECT || ct->kind == PTC_CT_CONNECT_STREAM)
        return true;
    if (!versioned || ct->kind != PTC_CT_OTHER || h == NULL)
        return false;
    ptc_iovec_t mt = h->value;
    const char *semi = memchr(mt.base, ';', mt.len);
    if (semi != NULL)
        mt.len = (size_t)(semi - mt.base);
    mt = ptc_iov_trim(mt);
    ptc_iovec_t codec = ptc_iov(mt.base + 12, mt.len >= 12 ? mt.len - 12 : 0);
    if (!ptc_iov_startswith_ci(mt, PTC_STRLIT("application/")) || codec.len > 32 || !ptc_codec_is_token(codec))
        return false;
    *ct = (ptc_ctype_t){PTC_CT_CONNECT, codec};
    return true;
}

static ptc_filter_action_t on_post(ptc_filter_ctx_t *ctx, const ptc_header_t *version)
{
    const ptc_config_t *cfg = &ctx->snap->config;
    bool unary = ctx->ct.kind == PTC_CT_CONNECT;
    ptc_filter_action_t action;

    if (version != NULL && !ptc_iov_eq(ptc_iov_trim(version->value), PTC_STRLIT("1")))
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_INVALID_ARGUMENT,
                                      "unsupported connect-protocol-version '%.*s' (Portico speaks 1)",
                                      (int)PTC_MIN(version->value.len, (size_t)40), version->value.base);
    const ptc_header_t *enc = ptc_filter_find(ctx, unary ? PTC_STRLIT("content-encoding") : PTC_STRLIT("connect-content-encoding"));
    if (!common_checks(ctx, enc != NULL ? enc->value : ptc_iov("", 0), unary ? "content-encoding" : "connect-content-encoding",
                       unary ? PTC_STRLIT("accept-encoding") : PTC_STRLIT("connect-accept-encoding"), &action))
        return action;
    const ptc_header_t *cl = ptc_filter_find(ctx, PTC_STRLIT("content-length"));
    uint64_t len = 0;
    if (unary && cl != NULL && ptc_digits_parse(ptc_iov_trim(cl->value), 18, &len) == 0) { /* (the adapters checked it) */
        if (len > cfg->limits.max_message_size)
            return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED,
                                          "request message of %" PRIu64 " bytes exceeds the gateway limit of %" PRIu32
                                          " bytes (limits.max_message_size)",
                                          len, cfg->limits.max_message_size);
        ctx->connect.has_length = true;
        ctx->connect.length = len;
        ctx->connect.compressed = ctx->connect.compressed && len != 0;
    }
    return PTC_FILTER_CONTINUE;
}

bool ptc__connect_on_request(ptc_filter_ctx_t *ctx, ptc_filter_action_t *action)
{
    ptc_request_t *req = ctx->req;

    if (req->websocket)
        return false;
    if (ptc_iov_eq_ci(req->method, PTC_STRLIT("GET"))) {
        if (ctx->path.len >= req->path.len)
            return false; /* no query */
        ptc_iovec_t query = ptc_iov(req->path.base + ctx->path.len + 1, req->path.len - ctx->path.len - 1);
        if (!ptc_connect_query_is_get(query))
            return false;
        *action = on_get(ctx, query);
        return true;
    }
    if (!ptc_iov_eq_ci(req->method, PTC_STRLIT("POST")))
        return false;
    const ptc_header_t *h = ptc_filter_find(ctx, PTC_STRLIT("content-type"));
    ptc_ctype_t ct = h != NULL ? ptc_ctype_classify(h->value) : (ptc_ctype_t){PTC_CT_OTHER, {"", 0}};
    if (ct.kind == PTC_CT_GRPC_WEB || ct.kind == PTC_CT_GRPC_WEB_TEXT || ct.kind == PTC_CT_GRPC)
        return false; /* gRPC(-Web), whatever else the request says: no need to look for connect-protocol-version */
    const ptc_header_t *version = ptc_filter_find(ctx, PTC_STRLIT("connect-protocol-version"));
    if (!connect_ctype(h, version != NULL, &ct))
        return false;
    ctx->ct = ct;
    *action = on_post(ctx, version);
    return true;
}
