/*
 * The gRPC-Web codec: I/O-free, allocation-free pieces that the call translator, the unit tests and
 * the fuzzers share. Every parser here is incremental: feeding input split at any offset gives the
 * same result as feeding it whole.
 */
#ifndef PORTICO_CODEC_H
#define PORTICO_CODEC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "portico/common.h"

/* ---- framing: 1 flag byte + 4-byte big-endian length (gRPC PROTOCOL-HTTP2.md, PROTOCOL-WEB.md) ---- */

#define PTC_FRAME_HEADER_SIZE 5
#define PTC_FRAME_FLAG_COMPRESSED 0x01
#define PTC_FRAME_FLAG_TRAILER 0x80

typedef enum {
    PTC_FRAME_EV_HEADER, /* a frame starts: flags and length are valid; data is NULL */
    PTC_FRAME_EV_DATA,   /* a piece of the current frame's payload */
    PTC_FRAME_EV_END,    /* the current frame is complete (follows HEADER directly for empty frames) */
} ptc_frame_event_t;

/*
 * Called for each event. A non-zero return stops the parser, which returns that value from
 * ptc_frame_parser_feed() and stays stopped (every later feed returns PTC_EPROTO).
 */
typedef int (*ptc_frame_cb)(void *ctx, ptc_frame_event_t ev, uint8_t flags, uint32_t length, const uint8_t *data, size_t len);

typedef struct st_ptc_frame_parser_t {
    uint8_t _hdr[PTC_FRAME_HEADER_SIZE];
    uint8_t _hdr_len;    /* bytes of the current header collected so far */
    uint8_t flags;       /* flags of the current frame */
    bool _failed;        /* a callback returned non-zero */
    uint32_t length;     /* length of the current frame */
    uint32_t _remaining; /* payload bytes of the current frame still to come */
    uint64_t frames;     /* complete frames seen */
} ptc_frame_parser_t;

void ptc_frame_parser_init(ptc_frame_parser_t *p);
/* Feeds bytes; returns 0, or the first non-zero callback result. */
int ptc_frame_parser_feed(ptc_frame_parser_t *p, const uint8_t *data, size_t len, ptc_frame_cb cb, void *ctx) PTC_WARN_UNUSED;
/* True when the parser is between frames (no partial header or payload pending). */
bool ptc_frame_parser_at_boundary(const ptc_frame_parser_t *p);

void ptc_frame_header_encode(uint8_t out[PTC_FRAME_HEADER_SIZE], uint8_t flags, uint32_t length);

/*
 * Trailer block: `name:value\r\n` per field with lower-cased names and no terminating blank line,
 * the exact bytes Envoy emits (PROTOCOL.md §1.3). Values are copied as they are (so `-bin` values stay
 * base64). Returns the encoded length; ptc_trailer_encode() writes exactly that many bytes to dst.
 */
size_t ptc_trailer_encoded_len(const ptc_header_t *fields, size_t n);
size_t ptc_trailer_encode(uint8_t *dst, const ptc_header_t *fields, size_t n);

/* ---- base64 (RFC 4648): one character ---- */

#define PTC_B64_STD 1 /* the standard alphabet's 62 and 63: '+' '/' */
#define PTC_B64_URL 2 /* the URL-safe alphabet's: '-' '_' */

/* The value (0..63) of a base64 character in the alphabets named (PTC_B64_STD, PTC_B64_URL or both), or -1
 * (padding and whitespace included: what to do with them is the caller's). */
int ptc_b64_char_value(uint8_t c, unsigned alphabets);

/* ---- streaming base64 (RFC 4648 standard alphabet) ---- */

/*
 * Decoder for `application/grpc-web-text` bodies. Works in 4-character quanta and keeps at most 3
 * characters between calls. Accepts: input split anywhere, `=` padding at the end of any quantum
 * followed by more base64 (concatenated padded segments), ASCII whitespace anywhere (skipped), and a
 * missing final padding (2 or 3 characters left at the end decode to 1 or 2 bytes).
 */
typedef struct st_ptc_b64_decoder_t {
    uint8_t _q[4];
    uint8_t _n;   /* characters in _q */
    uint8_t _pad; /* '=' seen in the current quantum */
} ptc_b64_decoder_t;

#define PTC_B64_DECODED_MAX(len) (((len) + 3) / 4 * 3 + 3)

void ptc_b64_decoder_init(ptc_b64_decoder_t *d);
/* Decodes src into dst (room for PTC_B64_DECODED_MAX(len) bytes). Returns bytes written or PTC_EBADB64. */
ssize_t ptc_b64_decode_update(ptc_b64_decoder_t *d, const char *src, size_t len, uint8_t *dst) PTC_WARN_UNUSED;
/* Ends the stream: writes up to 2 bytes of an unpadded last quantum. Returns bytes written or PTC_EBADB64. */
ssize_t ptc_b64_decode_final(ptc_b64_decoder_t *d, uint8_t dst[2]) PTC_WARN_UNUSED;

/*
 * Encoder: emits 4 characters per complete 3 input bytes as soon as they arrive, holding at most 2
 * bytes. ptc_b64_encode_final() pads the last quantum, which ends one base64 segment (one gRPC frame).
 */
typedef struct st_ptc_b64_encoder_t {
    uint8_t _rem[2];
    uint8_t _n;
} ptc_b64_encoder_t;

#define PTC_B64_ENCODED_MAX(len) (((len) + 2) / 3 * 4 + 4)

void ptc_b64_encoder_init(ptc_b64_encoder_t *e);
size_t ptc_b64_encode_update(ptc_b64_encoder_t *e, const uint8_t *src, size_t len, char *dst);
size_t ptc_b64_encode_final(ptc_b64_encoder_t *e, char dst[4]);
/* Encodes len bytes at once in the URL-safe alphabet without padding (RFC 4648 §5, as JWS uses it); dst
 * needs PTC_B64_ENCODED_MAX(len) bytes. Returns the length written. */
size_t ptc_b64url_encode(char *dst, const uint8_t *src, size_t len);

/* ---- grpc-timeout (PROTOCOL-HTTP2.md: TimeoutValue TimeoutUnit) ---- */

#define PTC_GRPC_TIMEOUT_STRLEN 10 /* 8 digits, a unit, NUL */

/*
 * Parses a grpc-timeout value into nanoseconds. The spec allows at most 8 digits; longer values (the
 * Google grpc-web client sends an unbounded number of `m` digits) are accepted and saturate at
 * UINT64_MAX instead of overflowing. Returns 0, or PTC_EINVAL for an empty value, a non-digit, or a
 * unit other than H M S m u n.
 */
int ptc_grpc_timeout_parse(ptc_iovec_t value, uint64_t *out_ns) PTC_WARN_UNUSED;
/* Formats ns in the finest unit whose value fits 8 digits, rounding up; returns the length (no NUL counted). */
size_t ptc_grpc_timeout_format(uint64_t ns, char out[PTC_GRPC_TIMEOUT_STRLEN]);

/* ---- grpc-message percent-encoding (PROTOCOL-HTTP2.md Status-Message) ---- */

/* Encodes bytes outside %x20-%x24 / %x26-%x7E as %XX. Writes at most cap bytes, never splitting an
 * escape; returns the length written. */
size_t ptc_grpc_message_encode(char *dst, size_t cap, const char *src, size_t len);
/* Decodes %XX escapes (a '%' not followed by two hex digits stays as it is, as the spec asks of receivers). Writes
 * at most cap bytes; returns the length written. */
size_t ptc_grpc_message_decode(char *dst, size_t cap, ptc_iovec_t src);

/* ---- status codes ---- */

enum {
    PTC_GRPC_OK = 0,
    PTC_GRPC_CANCELLED = 1,
    PTC_GRPC_UNKNOWN = 2,
    PTC_GRPC_INVALID_ARGUMENT = 3,
    PTC_GRPC_DEADLINE_EXCEEDED = 4,
    PTC_GRPC_NOT_FOUND = 5,
    PTC_GRPC_ALREADY_EXISTS = 6,
    PTC_GRPC_PERMISSION_DENIED = 7,
    PTC_GRPC_RESOURCE_EXHAUSTED = 8,
    PTC_GRPC_FAILED_PRECONDITION = 9,
    PTC_GRPC_ABORTED = 10,
    PTC_GRPC_OUT_OF_RANGE = 11,
    PTC_GRPC_UNIMPLEMENTED = 12,
    PTC_GRPC_INTERNAL = 13,
    PTC_GRPC_UNAVAILABLE = 14,
    PTC_GRPC_DATA_LOSS = 15,
    PTC_GRPC_UNAUTHENTICATED = 16,
};

const char *ptc_grpc_status_name(int status);
/*
 * The one parser for status codes on the wire (`grpc-status`, `:status`): 1 to 9 ASCII digits and nothing
 * else (no sign, no spaces). Returns 0 with the value, or PTC_EINVAL (*out untouched).
 */
int ptc_status_parse(ptc_iovec_t value, int *out) PTC_WARN_UNUSED;
/* grpc/grpc doc/http-grpc-status-mapping.md, as Envoy's httpToGrpcStatus. */
int ptc_grpc_status_from_http(int http_status);
/* PROTOCOL-HTTP2.md "Errors": RST_STREAM error code → status. */
int ptc_grpc_status_from_h2_error(uint32_t h2_error);

/* ---- content types ---- */

typedef enum {
    PTC_CT_OTHER = 0,
    PTC_CT_GRPC_WEB,      /* application/grpc-web[+codec] */
    PTC_CT_GRPC_WEB_TEXT, /* application/grpc-web-text[+codec] */
    PTC_CT_GRPC,          /* application/grpc[+codec] (native gRPC) */
    PTC_CT_CONNECT,       /* Connect unary: application/proto, application/json (and GET requests) */
    PTC_CT_CONNECT_STREAM, /* Connect streaming: application/connect+codec */
} ptc_ctype_kind_t;

typedef struct st_ptc_ctype_t {
    ptc_ctype_kind_t kind;
    ptc_iovec_t codec; /* the codec after '+', e.g. "proto", "json"; empty when absent */
} ptc_ctype_t;

/*
 * Classifies a Content-Type value: media type matched case-insensitively, parameters ignored. Connect's
 * unary types are recognised by name (application/proto, application/json); a unary call with another
 * codec ("application/" codec) is Connect only with connect-protocol-version, which the pipeline checks.
 */
ptc_ctype_t ptc_ctype_classify(ptc_iovec_t value);
/* True when codec is a codec name: letters, digits, '-', '.', '_' (at least one). */
bool ptc_codec_is_token(ptc_iovec_t codec);
/* True when the codec is protobuf (absent or "proto", any case). */
bool ptc_ctype_codec_is_proto(ptc_iovec_t codec);
/*
 * Decides the response encoding from the request's Accept header (PROTOCOL.md §1.5): the grpc-web
 * media range (text or binary) with the higher q-value wins; with none named (Accept absent, `* / *`,
 * or other types) the response uses the request's encoding. Returns true for text.
 */
bool ptc_accept_wants_text(ptc_iovec_t accept, bool request_is_text);
/*
 * The response content type for a request of type ct (a gRPC-Web kind or native gRPC) with that Accept
 * value: the same codec, text or binary per ptc_accept_wants_text (*text), `application/grpc[+codec]` for
 * native gRPC, `application/codec` and `application/connect+codec` for Connect. Used for every response to a
 * gRPC request, gateway-made errors included (but a Connect unary error, which is application/json). Writes
 * into buf (64 bytes hold any; NUL-terminated) and returns the length.
 */
size_t ptc_response_ctype(ptc_ctype_t ct, ptc_iovec_t accept, char *buf, size_t cap, bool *text);

#endif
