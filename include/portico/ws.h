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
 * Takes over an upgraded HTTP/1.1 connection (the 101 was written to bev's output already): serves one
 * gRPC-Web call over it. The upgrade request is given as it was parsed (its slices are copied); listener:
 * the id of the listener that accepted it.
 */
struct st_ptc_request_t;
void ptc_ws_start(ptc_worker_t *w, struct bufferevent *bev, const struct st_ptc_request_t *upgrade, unsigned listener, bool tls);

#endif
