/*
 * Counters of what the request pipeline decided, one set per worker: only the worker's thread writes
 * them, with a relaxed load and store (a plain add, no locked instruction: PTC_STAT_INC), and other
 * threads read them with relaxed loads when they sum the workers' sets (the admin API, metrics).
 */
#ifndef PORTICO_STATS_H
#define PORTICO_STATS_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t ptc_counter_t;

/* Single-writer increment: no read-modify-write instruction is needed when only one thread writes. */
#define PTC_STAT_INC(c) atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + 1, memory_order_relaxed)

/* name, what it counts */
#define PTC_FILTER_STATS_MAP(XX)                                                                                                   \
    XX(cors_preflights, "answered with 204")                                                                                       \
    XX(cors_preflights_refused, "answered with 403")                                                                               \
    XX(cors_allowed, "requests from an allowed origin")                                                                            \
    XX(cors_denied, "requests refused for their origin (403)")                                                                     \
    XX(health, "health checks answered")                                                                                           \
    XX(request_id_accepted, "a valid incoming id kept")                                                                            \
    XX(request_id_generated, "none came (or it was invalid, or incoming ids are not trusted)")                                     \
    XX(request_id_replaced, "of those generated: an invalid incoming one was replaced")                                            \
    XX(trace_continued, "a valid traceparent came: a span of ours in its trace")                                                   \
    XX(trace_started, "none came, or it was invalid: a new trace")                                                                 \
    XX(tracestate_dropped, "an invalid tracestate was not forwarded")                                                              \
    XX(header_rules, "header rules applied (request, response, trailers)")                                                         \
    XX(jwt_ok, "a token verified (or found in the cache) and the route's claims held")                                             \
    XX(jwt_cached, "of those, served from the verified-token cache")                                                               \
    XX(jwt_missing, "no token where one was required: UNAUTHENTICATED")                                                            \
    XX(jwt_absent_allowed, "no token on a route where it is optional")                                                             \
    XX(jwt_invalid, "a token that did not verify: UNAUTHENTICATED")                                                                \
    XX(jwt_forbidden, "a valid token without the required claims: PERMISSION_DENIED")                                              \
    XX(websocket_upgrades, "WebSocket upgrades accepted (101)")                                                                    \
    XX(websocket_refused, "WebSocket upgrades refused (origin, route, malformed handshake)")                                       \
    XX(websocket_protocol_errors, "WebSockets closed for breaking the grpc-websockets protocol")

/* Refusals by the limits and the HTTP/2 abuse guards (README "Limits and abuse"); each also logs a line. */
#define PTC_LIMIT_STATS_MAP(XX)                                                                                                    \
    XX(connections_refused, "connections closed at accept: limits.max_connections or max_connections_total reached")               \
    XX(accept_paused, "accepting paused for 100 ms: out of file descriptors (EMFILE, ENFILE) or memory")                           \
    XX(headers_too_large, "requests answered 431 or 414: limits.max_header_size or max_headers")                                   \
    XX(messages_too_large, "calls ended with RESOURCE_EXHAUSTED: a message over limits.max_message_size")                          \
    XX(h2_streams_refused, "HTTP/2 streams refused with RST_STREAM REFUSED_STREAM (limits.max_concurrent_streams)")                \
    XX(h2_stream_errors, "HTTP/2 streams reset for a protocol error of the client (PROTOCOL_ERROR, FLOW_CONTROL_ERROR, ...)")      \
    XX(h2_connection_errors, "HTTP/2 connections ended for a protocol error of the client (GOAWAY with its code)")                 \
    XX(h2_rapid_resets, "HTTP/2 connections ended (ENHANCE_YOUR_CALM): too many streams reset before their response ended")        \
    XX(h2_floods, "HTTP/2 connections ended (ENHANCE_YOUR_CALM): control or empty frames beyond their budget, unread ACKs")        \
    XX(h2_continuation_floods, "HTTP/2 connections ended (ENHANCE_YOUR_CALM): a header block in too many CONTINUATION frames")     \
    XX(h2_header_timeouts, "HTTP/2 connections ended: a header block not completed within timeouts.header_read")

typedef struct st_ptc_limit_stats_t {
#define XX(name, _) ptc_counter_t name;
    PTC_LIMIT_STATS_MAP(XX)
#undef XX
} ptc_limit_stats_t;

typedef struct st_ptc_filter_stats_t {
#define XX(name, _) ptc_counter_t name;
    PTC_FILTER_STATS_MAP(XX)
#undef XX
} ptc_filter_stats_t;

#endif
