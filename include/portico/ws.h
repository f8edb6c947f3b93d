/*
 * WebSocket transport for gRPC-Web calls: improbable-eng's `grpc-websockets` protocol (PROTOCOL.md §3.3;
 * improbable-eng/grpc-web go/grpcweb/websocket_wrapper.go and client/grpc-web/src/transports/websocket/
 * websocket.ts), which gives browsers client and bidi streaming:
 *
 *   upgrade      HTTP/1.1 GET with Upgrade: websocket and Sec-WebSocket-Protocol naming grpc-websockets,
 *                answered 101 with that subprotocol (RFC 6455 §4.2.2) once the origin is allowed
 *   client       first message (binary): the call's header block, `name: value\r\n` lines, merged over the
 *                upgrade request's headers (the method becomes POST, the path is the upgrade's); then one
 *                binary message per gRPC frame, prefixed with 0x00; a message of the single byte 0x01
 *                ends the request (half-close)
 *   server       a 0x80 frame with the response header block, the gRPC-Web body (data frames, then one
 *                0x80 trailer frame with lower-case names — always, also for errors), then close 1000
 *
 * This header has the protocol's pure parts (handshake key, header blocks); the adapter is src/ws/server.c.
 */
#ifndef PORTICO_WS_H
#define PORTICO_WS_H

#include <stdbool.h>
#include <stddef.h>

#include "portico/common.h"

struct bufferevent;
typedef struct st_ptc_worker_t ptc_worker_t;

#define PTC_WS_SUBPROTOCOL "grpc-websockets"
#define PTC_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 */

/* Close codes (RFC 6455 §7.4.1) the gateway uses. */
enum {
    PTC_WS_CLOSE_NORMAL = 1000,      /* the call is over (after its trailers) */
    PTC_WS_CLOSE_GOING_AWAY = 1001,  /* the gateway drains or shuts down; idle timeout */
    PTC_WS_CLOSE_PROTOCOL = 1002,    /* malformed header block, unexpected message */
    PTC_WS_CLOSE_UNSUPPORTED = 1003, /* a text message */
    PTC_WS_CLOSE_POLICY = 1008,      /* handshake timeout */
    PTC_WS_CLOSE_TOO_BIG = 1009,     /* a message over the limit */
    PTC_WS_CLOSE_INTERNAL = 1011,    /* out of memory */
};

/*
 * The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 §4.2.2: base64(SHA-1(key + GUID))).
 * The key must be the base64 of 16 bytes (24 characters, after trimming). Returns 0 (out holds the value
 * and a NUL) or PTC_EINVAL.
 */
int ptc_ws_accept_key(ptc_iovec_t key, char out[PTC_WS_ACCEPT_LEN + 1]) PTC_WARN_UNUSED;

/*
 * Parses a header block in place: `name: value` lines separated by CRLF (a bare LF is accepted, the last
 * line needs no terminator, empty lines are skipped). Names are HTTP tokens, lower-cased in buf; values are
 * trimmed and may not hold control characters other than HTAB. Fills up to cap fields (slices into buf).
 * Returns 0, or PTC_EINVAL / PTC_ETOOBIG (more than cap fields) with *why saying what is wrong.
 */
int ptc_ws_header_block_parse(char *buf, size_t len, ptc_header_t *out, size_t cap, size_t *n, const char **why) PTC_WARN_UNUSED;

/*
 * A session: one gRPC-Web call over one WebSocket, whatever carries the WebSocket's bytes. The transport
 * (ptc_ws_io_t) is an upgraded HTTP/1.1 connection (ptc_ws_start() below) or an HTTP/2 stream opened with
 * extended CONNECT (RFC 8441, src/h2/server.c).
 */
typedef struct st_ptc_ws_t ptc_ws_t;
typedef struct st_ptc_ws_io_t ptc_ws_io_t;
struct st_ptc_request_t;
struct st_ptc_snapshot_t;
struct evbuffer;

typedef struct st_ptc_ws_io_cb_t {
    /* io->out has new bytes: send what can go now. Nonzero: the transport failed (the session then frees itself). */
    int (*write)(ptc_ws_io_t *io);
    /* Stop (true) or resume (false) delivering input: backpressure from the call. */
    void (*pause_read)(ptc_ws_io_t *io, bool pause);
    /* The session is over and freed; clean: the close handshake completed. The transport ends (the
     * connection closes; the HTTP/2 stream ends, or is reset when not clean). */
    void (*close)(ptc_ws_io_t *io, bool clean);
} ptc_ws_io_cb_t;

struct st_ptc_ws_io_t {
    const ptc_ws_io_cb_t *cb;
    struct evbuffer *in;  /* bytes received: the session takes frames from here */
    struct evbuffer *out; /* the session writes frames here; what is in it counts as not sent yet */
};

/*
 * The policy on a WebSocket handshake, the same for HTTP/1.1 upgrades and HTTP/2 extended CONNECT:
 * websocket.enabled, Sec-WebSocket-Version 13, the grpc-websockets subprotocol offered, a route for the
 * path, and an origin the route's CORS policy allows (a WebSocket gets no preflight: this is the only
 * defence against cross-site WebSocket hijacking). Returns 0 (accepted), or the HTTP status to refuse
 * with (400, 403, 404, 426) and why in `why`; refusals are logged and counted.
 */
int ptc_ws_check(ptc_worker_t *w, const struct st_ptc_request_t *req, char *why, size_t len) PTC_WARN_UNUSED;

/* A session for an accepted upgrade (its slices are copied); NULL when out of memory. The transport calls: */
ptc_ws_t *ptc_ws_new(ptc_worker_t *w, struct st_ptc_snapshot_t *snap, const struct st_ptc_request_t *upgrade, bool tls, ptc_ws_io_t *io);
void ptc_ws_on_input(ptc_ws_t *ws);                        /* io->in has new bytes */
void ptc_ws_on_writable(ptc_ws_t *ws);                     /* io->out drained (some of it was sent) */
void ptc_ws_on_end(ptc_ws_t *ws);                          /* the peer sends no more (HTTP/2 END_STREAM) */
void ptc_ws_drain(ptc_ws_t *ws);                           /* the gateway drains: close once the call is over */
void ptc_ws_fail_calls(ptc_ws_t *ws, const char *message); /* end the call with UNAVAILABLE, then close */
void ptc_ws_close(ptc_ws_t *ws, const char *reason);       /* close now (the transport's close is called) */
void ptc_ws_detach(ptc_ws_t *ws, const char *reason);      /* the transport is gone: free, without calling it */

/*
 * Takes over an upgraded HTTP/1.1 connection (the 101 was written to bev's output already): serves one
 * gRPC-Web call over it. The upgrade request is given as it was parsed (its slices are copied); listener:
 * the id of the listener that accepted it.
 */
void ptc_ws_start(ptc_worker_t *w, struct bufferevent *bev, const struct st_ptc_request_t *upgrade, unsigned listener, bool tls);

#endif
