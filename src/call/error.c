/*
 * The shape of a gateway-made error in each protocol (include/portico/call.h, "Gateway-made errors").
 * Nothing else in the gateway writes grpc-status for an error of its own, or a Connect error body.
 */
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>

#include "portico/call.h"
#include "portico/codec.h"
#include "portico/connect.h"

static void add(ptc_error_reply_t *r, ptc_iovec_t name, ptc_iovec_t value)
{
    r->fields[r->num_fields++] = (ptc_header_t){name, value};
}

/* Connect: the error (or end of stream) as the body, with its length. */
static int connect_body(ptc_error_reply_t *r, ptc_ctype_t ct, const ptc_connect_error_t *e, const ptc_header_t *md, size_t nmd)
{
    char *json;
    size_t len;
    bool stream = ct.kind == PTC_CT_CONNECT_STREAM && r->http_status == 200;

    if (stream) {
        /* the end-of-stream envelope: flag 0x02, length, the JSON */
        if ((json = ptc_connect_end_stream_json(e, md, nmd, &len)) == NULL ||
            (r->body = malloc(len + PTC_FRAME_HEADER_SIZE)) == NULL) {
            free(json);
            return PTC_ENOMEM;
        }
        ptc_frame_header_encode((uint8_t *)r->body, PTC_CONNECT_FLAG_END_STREAM, (uint32_t)len);
        memcpy(r->body + PTC_FRAME_HEADER_SIZE, json, len);
        free(json);
        r->body_len = len + PTC_FRAME_HEADER_SIZE;
    } else {
        if ((r->body = ptc_connect_error_json(e, &len)) == NULL)
            return PTC_ENOMEM;
        r->body_len = len;
    }
    int n = snprintf(r->_len, sizeof(r->_len), "%zu", r->body_len);
    add(r, PTC_STRLIT("content-length"), ptc_iov(r->_len, n > 0 ? (size_t)n : 0));
    return 0;
}

int ptc_error_reply_init(ptc_error_reply_t *r, ptc_ctype_t ct, ptc_iovec_t accept, const ptc_connect_error_t *e, int http_status,
                         const ptc_header_t *md, size_t nmd)
{
    bool text;
    size_t ctlen;

    r->num_fields = 0;
    r->body = NULL;
    r->body_len = 0;
    r->plain = false;
    if (ct.kind == PTC_CT_CONNECT || ct.kind == PTC_CT_CONNECT_STREAM) {
        bool stream = ct.kind == PTC_CT_CONNECT_STREAM && http_status == 0;
        r->http_status = http_status != 0 ? http_status : stream ? 200 : ptc_connect_http_status(e->status);
        if (stream) {
            ctlen = ptc_response_ctype(ct, accept, r->_ctype, sizeof(r->_ctype), &text);
            add(r, PTC_STRLIT("content-type"), ptc_iov(r->_ctype, ctlen));
        } else {
            /* a unary error is JSON whatever the codec (and so is a refusal: the client reads the code) */
            add(r, PTC_STRLIT("content-type"), PTC_STRLIT("application/json"));
        }
        return connect_body(r, ct, e, md, nmd);
    }

    /* gRPC-Web (binary, text) and native gRPC */
    ptc_iovec_t msg = e->message;
    size_t mlen = PTC_MIN(msg.len, (size_t)PTC_ERROR_MESSAGE_MAX);
    if (http_status != 0) {
        /* a refusal that is not gRPC: the status says it all, the text says why */
        r->http_status = http_status;
        r->plain = true;
        if ((r->body = malloc(mlen + 2)) == NULL)
            return PTC_ENOMEM;
        memcpy(r->body, msg.base, mlen);
        r->body[mlen] = '\n';
        r->body[mlen + 1] = '\0';
        r->body_len = mlen + 1;
        return 0;
    }
    r->http_status = 200;
    if (ct.kind == PTC_CT_OTHER)
        ct = (ptc_ctype_t){PTC_CT_GRPC_WEB, {"", 0}};
    ctlen = ptc_response_ctype(ct, accept, r->_ctype, sizeof(r->_ctype), &text);
    snprintf(r->_code, sizeof(r->_code), "%d", e->status);
    add(r, PTC_STRLIT("content-type"), ptc_iov(r->_ctype, ctlen));
    add(r, PTC_STRLIT("grpc-status"), ptc_iov(r->_code, strlen(r->_code)));
    if (e->pct_encoded)
        add(r, PTC_STRLIT("grpc-message"), ptc_iov(msg.base, mlen));
    else
        add(r, PTC_STRLIT("grpc-message"), ptc_iov(r->_msg, ptc_grpc_message_encode(r->_msg, sizeof(r->_msg), msg.base, mlen)));
    return 0;
}

void ptc_error_reply_dispose(ptc_error_reply_t *r)
{
    free(r->body);
    r->body = NULL;
}

void ptc_error_reply_send(const ptc_error_reply_t *r, ptc_downstream_t *ds, const ptc_header_t *extra, size_t nextra)
{
    ptc_header_t stack[16], *h = stack;
    size_t n = 0;

    if (r->plain) {
        ds->cb->respond(ds, r->http_status, extra, nextra, r->body != NULL ? r->body : "");
        return;
    }
    if (r->num_fields + nextra > PTC_ARRAY_SIZE(stack) && (h = malloc((r->num_fields + nextra) * sizeof(*h))) == NULL) {
        h = stack;
        nextra = PTC_ARRAY_SIZE(stack) - r->num_fields; /* the error's own fields first */
    }
    for (size_t i = 0; i < r->num_fields; i++)
        h[n++] = r->fields[i];
    for (size_t i = 0; i < nextra; i++)
        h[n++] = extra[i];
    bool body = r->body != NULL && r->body_len != 0;
    ds->cb->send_head(ds, r->http_status, h, n, !body);
    if (body) {
        struct evbuffer *b = evbuffer_new();
        if (b != NULL && evbuffer_add(b, r->body, r->body_len) == 0)
            ds->cb->send_body(ds, b);
        if (b != NULL)
            evbuffer_free(b);
        ds->cb->send_end(ds);
    }
    if (h != stack)
        free(h);
}
