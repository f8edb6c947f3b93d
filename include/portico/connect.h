/*
 * The Connect protocol (connectrpc.com/docs/protocol), I/O-free pieces: error codes and their HTTP
 * statuses, connect-timeout-ms, the query of a unary GET, and the JSON the gateway writes (the Error
 * object of a unary error, the EndStreamResponse of a stream) with grpc-status-details-bin decoded into
 * "details". Envelopes are gRPC's 5-byte frames (ptc_frame_parser_t) with Connect's flags.
 *
 * What the gateway does with them (the call, the pipeline) is in src/call/ and src/connect/request.c.
 */
#ifndef PORTICO_CONNECT_H
#define PORTICO_CONNECT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "portico/common.h"

/* Envelope flags: 0x01 compressed (as gRPC), 0x02 end of stream (responses only); the rest is reserved. */
#define PTC_CONNECT_FLAG_COMPRESSED 0x01
#define PTC_CONNECT_FLAG_END_STREAM 0x02

/* What is wrong with the flags of a request envelope, or NULL: end-of-stream and reserved bits are refused. */
const char *ptc_connect_request_flags_error(uint8_t flags);

/* ---- error codes ---- */

/* The Connect name of a gRPC status ("canceled" … "unauthenticated"); "unknown" for 0 and anything out of range. */
const char *ptc_connect_code_name(int grpc_status);
/* The gRPC status of a Connect code name (exact, lower case), or -1. */
int ptc_connect_code_parse(ptc_iovec_t name);
/* The HTTP status of a unary error with that code (the protocol's table); 200 for OK. */
int ptc_connect_http_status(int grpc_status);
/* The code a client infers from an HTTP status without a Connect error body (HTTP to Error Code table). */
int ptc_connect_code_from_http(int http_status);

/* ---- connect-timeout-ms: 1 to 10 ASCII digits ---- */

int ptc_connect_timeout_parse(ptc_iovec_t value, uint64_t *out_ms) PTC_WARN_UNUSED;

/* ---- unary GET: ?connect=v1&encoding=json&message=…&base64=1&compression=gzip ---- */

typedef struct st_ptc_connect_get_t {
    bool has_connect;        /* `connect` was given (it must then be "v1") */
    ptc_iovec_t encoding;    /* the codec ("proto", "json", …), required */
    ptc_iovec_t compression; /* empty: identity */
    bool base64;             /* base64=1: message is base64 (URL-safe or standard, padding optional) */
    ptc_iovec_t message;     /* the request message, decoded */
} ptc_connect_get_t;

/* Scratch space ptc_connect_get_parse() needs for a query of len bytes. */
#define PTC_CONNECT_GET_SCRATCH(len) (2 * (size_t)(len) + 16)

/* True when the query (the part after '?') names a Connect GET parameter: connect, encoding or message. */
bool ptc_connect_query_is_get(ptc_iovec_t query);
/*
 * Decodes the query of a Connect GET into out, whose slices point into scratch (PTC_CONNECT_GET_SCRATCH
 * bytes). Parameters may come in any order, unknown ones are ignored, `+` is a space (form encoding).
 * Returns 0, or PTC_EINVAL with *why saying what is wrong: bad percent-encoding, a Connect parameter given
 * twice, no encoding or no message, an encoding that is not a token, bad base64, a non-base64 message that
 * is not UTF-8, a compressed message without base64=1. Whether version, codec and compression are supported
 * is the caller's decision.
 */
int ptc_connect_get_parse(ptc_iovec_t query, uint8_t *scratch, size_t cap, ptc_connect_get_t *out,
                          const char **why) PTC_WARN_UNUSED;

/* ---- JSON the gateway writes ---- */

/*
 * The parts of an error: the status, its message (as grpc-message carries it, percent-encoded, when
 * pct_encoded; else plain text) and grpc-status-details-bin (base64 of a google.rpc.Status), empty when
 * absent. A details value that does not parse is left out, never an error.
 */
typedef struct st_ptc_connect_error_t {
    int status;
    ptc_iovec_t message;
    bool pct_encoded;
    ptc_iovec_t details_bin;
} ptc_connect_error_t;

/*
 * {"code":"…","message":"…","details":[{"type":"pkg.Msg","value":"base64, unpadded"}]}: message and
 * details only when not empty; the type is the Any's type URL after its last '/'. Strings are valid UTF-8
 * (invalid bytes become U+FFFD). Returns a malloc'ed text of *len bytes (not NUL-terminated), NULL when
 * out of memory.
 */
char *ptc_connect_error_json(const ptc_connect_error_t *e, size_t *len);
/*
 * The EndStreamResponse: {"error":{…},"metadata":{"name":["v1","v2"]}}, error only when e is not NULL and
 * its status is not OK, metadata only when there are fields (same names grouped, in the order of their
 * first appearance). Returns a malloc'ed text of *len bytes, NULL when out of memory.
 */
char *ptc_connect_end_stream_json(const ptc_connect_error_t *e, const ptc_header_t *metadata, size_t n, size_t *len);

/*
 * Iterates the details of a google.rpc.Status (protobuf, already base64-decoded): calls cb with each Any's
 * type_url and value. Returns 0, or PTC_EINVAL when the bytes are not a well-formed Status (cb may have been
 * called for the details before the fault).
 */
int ptc_rpc_status_details(const uint8_t *pb, size_t len, void (*cb)(void *ctx, ptc_iovec_t type_url, ptc_iovec_t value),
                           void *ctx) PTC_WARN_UNUSED;

#endif
