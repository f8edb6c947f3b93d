/*
 * A call is one RPC: it owns the gRPC-Web ⇄ gRPC translation between one downstream exchange and one
 * upstream HTTP/2 stream (content types, framing, base64 text mode, trailers, status mapping,
 * deadline, cancellation, backpressure). Downstream adapters (HTTP/1.1 today) drive it through the
 * functions below and receive its output through ptc_downstream_cb_t; they know nothing of gRPC-Web.
 *
 * Lifetime: a call is referenced by its downstream (until ptc_call_detach_downstream() or the
 * on_call_done callback) and by its upstream stream (until that stream closes). It frees itself
 * when both references are gone.
 */
#ifndef PORTICO_CALL_H
#define PORTICO_CALL_H

#include <stdbool.h>

#include "portico/codec.h"
#include "portico/common.h"
#include "portico/cors.h"
#include "portico/metrics.h"

struct evbuffer;
typedef struct st_ptc_worker_t ptc_worker_t;
typedef struct st_ptc_call_t ptc_call_t;
typedef struct st_ptc_downstream_t ptc_downstream_t;
typedef struct st_ptc_snapshot_t ptc_snapshot_t;
typedef struct st_ptc_filter_ctx_t ptc_filter_ctx_t;

typedef struct st_ptc_downstream_cb_t {
    /* Writes the response head. end_stream: the response has no body (trailers-only or a local error). */
    void (*send_head)(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, bool end_stream);
    /* Writes body bytes, moving the whole content of buf. */
    void (*send_body)(ptc_downstream_t *ds, struct evbuffer *buf);
    /*
     * Writes body bytes from memory (a small frame: no evbuffer on the way). Optional (NULL: the call uses
     * send_body); the call uses it only when nothing it wrote before waits in a buffer of its own.
     */
    void (*send_bytes)(ptc_downstream_t *ds, const uint8_t *data, size_t len);
    /* Ends the response body. */
    void (*send_end)(ptc_downstream_t *ds);
    /* Bytes written but not yet sent to the peer. */
    size_t (*pending)(ptc_downstream_t *ds);
    /* Stops (true) or resumes (false) reading the request body. */
    void (*pause_read)(ptc_downstream_t *ds, bool pause);
    /* The call is finished with the downstream: the response is complete, the call will not touch ds again. */
    void (*on_call_done)(ptc_downstream_t *ds);
    /*
     * Trailers as HTTP/2 trailers (native gRPC responses only; gRPC-Web carries them in the body).
     * Ends the response.
     */
    void (*send_trailers)(ptc_downstream_t *ds, const ptc_header_t *trailers, size_t n);
    /*
     * A complete local answer that is not gRPC (preflight, 403, 405, 415, health): status, fields and
     * an optional text body. The request's body, if any, is to be discarded.
     */
    void (*respond)(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, const char *body);
    /*
     * The call cannot end the response well-formed (it failed inside a message of which part was sent):
     * the downstream must cut the response off (e.g. close the connection without the last chunk). The
     * call will not touch ds again.
     */
    void (*abort)(ptc_downstream_t *ds);
} ptc_downstream_cb_t;

struct st_ptc_downstream_t {
    const ptc_downstream_cb_t *cb;
    ptc_cors_decision_t cors; /* decided for the current request; adapters add its fields to every head they write */
};

/*
 * Gateway-made errors in the caller's protocol: the one place that decides their shape (DESIGN.md,
 * "Protocols"). Every local error goes through it: the pipeline's (no route, authentication, bad request,
 * refused origin, method, content type) and the call's (upstream down, deadline, limits), and a Connect
 * unary call's upstream error too (its JSON body).
 *
 *   gRPC-Web, gRPC   a gRPC error is trailers-only: 200, content-type, grpc-status, grpc-message, no body;
 *                    an HTTP refusal (http_status set: 403, 405, 415) is plain text with that status
 *   Connect unary    the HTTP status of the code (or http_status), application/json, the Error object
 *   Connect stream   a gRPC error is 200, application/connect+codec and an end-of-stream envelope with the
 *                    error (and metadata); an HTTP refusal is answered as for unary
 */
#define PTC_ERROR_MESSAGE_MAX 1024 /* gateway-made messages, before percent-encoding */

typedef struct st_ptc_error_reply_t {
    int http_status;
    bool plain;          /* a plain-text HTTP answer (ds->cb->respond with body) */
    ptc_header_t fields[4];
    size_t num_fields;   /* content-type first; then grpc-status and grpc-message, or content-length */
    char *body;          /* malloc'ed: the JSON error or the end-of-stream envelope, or plain text; NULL: none */
    size_t body_len;
    char _ctype[64], _code[8], _len[24], _msg[3 * PTC_ERROR_MESSAGE_MAX];
} ptc_error_reply_t;

struct st_ptc_connect_error_t;
/*
 * Renders an error for a caller of type ct (with its Accept, for gRPC-Web text): e its status, message and
 * details; http_status 0 for a gRPC error, else the HTTP status of a refusal; md the metadata of a Connect
 * stream's end (may be NULL). Returns 0, or PTC_ENOMEM (r is then a trailers-only gRPC answer or a bodiless
 * Connect one, still sendable).
 */
int ptc_error_reply_init(ptc_error_reply_t *r, ptc_ctype_t ct, ptc_iovec_t accept, const struct st_ptc_connect_error_t *e,
                         int http_status, const ptc_header_t *md, size_t nmd);
void ptc_error_reply_dispose(ptc_error_reply_t *r);
/* Sends r through ds with extra fields (after r's): respond(), or the head, body and end. Not on_call_done. */
void ptc_error_reply_send(const ptc_error_reply_t *r, ptc_downstream_t *ds, const ptc_header_t *extra, size_t nextra);

/* The CORS fields ds->cors calls for, given the fields of the head being written (see ptc_cors_response_headers). */
size_t ptc_downstream_cors_fields(const ptc_downstream_t *ds, const ptc_header_t *sent, size_t nsent, ptc_header_t *out,
                                  size_t cap, ptc_cors_scratch_t *scratch);

/* The request head as the adapter parsed it. Slices are valid only during ptc_request_handle() / ptc_call_start(). */
typedef struct st_ptc_request_t {
    ptc_iovec_t method;
    ptc_iovec_t path;   /* as received, query included */
    ptc_iovec_t scheme; /* "http" or "https": how the client reached the gateway */
    ptc_iovec_t authority;
    /* Names in lower case: the HTTP/1.1 adapter lower-cases them as it reads, nghttp2 refuses others
     * (RFC 9113 §8.2.1), the $httpHeaders parser lower-cases its own. Room for num_headers +
     * PTC_HTTP_HEADERS_MAX_FIELDS: $httpHeaders merge in place. */
    ptc_header_t *headers;
    size_t num_headers;
    const char *peer;  /* "ip:port" of the client, for logs */
    ptc_snapshot_t *snap; /* the configuration the request is handled under (the adapter holds a reference) */
    bool allow_native; /* application/grpc is proxied as native gRPC (HTTP/2 downstreams) */
    ptc_transport_t transport; /* how the client reached the gateway: for metrics and the access log */
    bool websocket;    /* a call of the grpc-websockets transport: gRPC-Web only (no Connect) */
} ptc_request_t;

/*
 * The policy step every adapter runs on a complete request head: CORS preflights, origin check,
 * health, method, $httpHeaders, content type, then the call. Either answers locally through ds
 * (respond, or a gRPC-Web error) and leaves *call NULL, or starts a call. *hparam is scratch space for
 * $httpHeaders, allocated on first use and owned by the adapter (free() it).
 */
void ptc_request_handle(ptc_worker_t *w, ptc_downstream_t *ds, ptc_request_t *req, ptc_http_headers_param_t **hparam,
                        ptc_call_t **call);

/*
 * Starts a call for a gRPC-Web (or native gRPC) request head that went through the pipeline (ctx: its
 * route, content type, edited headers, and the call info, which the call takes over). Always answers:
 * either the call runs and *out is set, or a local gRPC error was already sent through ds (send_head +
 * on_call_done) and *out is NULL.
 */
void ptc_call_start(ptc_worker_t *w, ptc_downstream_t *ds, ptc_filter_ctx_t *ctx, ptc_call_t **out);
/* Request body bytes (as received: base64 for text requests). */
void ptc_call_on_request_body(ptc_call_t *call, const char *data, size_t len);
/* The request body is complete. */
void ptc_call_on_request_end(ptc_call_t *call);
/* The downstream drained its output below the call buffer size. */
void ptc_call_on_downstream_writable(ptc_call_t *call);
/*
 * Ends the call now with a gateway-made status (e.g. 14 when the gateway shuts down): the upstream
 * stream is reset and the downstream gets a well-formed ending through its callbacks.
 */
void ptc_call_abort(ptc_call_t *call, int status, const char *message);
/*
 * The downstream is gone (client closed, connection error): the call cancels its upstream stream
 * (RST_STREAM CANCEL) if it is still open and never touches ds again.
 */
void ptc_call_detach_downstream(ptc_call_t *call, const char *reason);

#endif
