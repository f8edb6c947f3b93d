/*
 * W3C Trace Context (https://www.w3.org/TR/trace-context/, Level 1): traceparent parsing and formatting,
 * tracestate validation, and fresh trace and span ids. Pure functions over slices; the only state is the
 * per-thread random generator behind the ids (see ptc_random_bytes).
 *
 * What the gateway does with them: a valid traceparent is propagated (as version 00) with its trace-id; an
 * invalid or missing one starts a new trace. tracestate is forwarded unchanged when ptc_tracestate_check
 * accepts it and traceparent was valid, and dropped otherwise.
 */
#ifndef PORTICO_TRACE_H
#define PORTICO_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/common.h"

#define PTC_TRACEPARENT_LEN 55       /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define PTC_TRACE_FLAG_SAMPLED 0x01u /* the caller recorded, or may have recorded, its span */
#define PTC_TRACE_FLAG_RANDOM 0x02u  /* Level 2: the trace-id's right-most 7 bytes are random */
#define PTC_TRACESTATE_MAX_MEMBERS 32

typedef struct st_ptc_traceparent_t {
    uint8_t version;      /* as received: 0x00..0xfe */
    uint8_t trace_id[16]; /* never all zero once parsed */
    uint8_t parent_id[8]; /* never all zero once parsed */
    uint8_t flags;        /* version 00: all 8 bits as received; a higher version: only PTC_TRACE_FLAG_SAMPLED */
} ptc_traceparent_t;

/*
 * Parses a traceparent header value as it arrived (surrounding spaces and tabs are ignored). Returns 0 and fills
 * *out, or PTC_EINVAL (leaving *out untouched) when the value must be ignored and the trace restarted:
 *
 *  - version, trace-id, parent-id and flags must be 2, 32, 16 and 2 lower-case hex digits joined by '-';
 *  - version ff is invalid; trace-id and parent-id may not be all zeros;
 *  - version 00 is exactly 55 characters;
 *  - a higher version is parsed by its first 55 characters when it has exactly 55 or the 56th is '-' (the
 *    specification's forward-compatibility rule), and only its sampled flag is kept: later versions may give
 *    the other bits new meanings.
 */
int ptc_traceparent_parse(ptc_iovec_t value, ptc_traceparent_t *out) PTC_WARN_UNUSED;

/*
 * Writes t as a version 00 traceparent (whatever t->version says: the gateway only speaks 00) and a NUL;
 * returns PTC_TRACEPARENT_LEN. The flags go out as they are in t: mask them first to send only known bits.
 */
size_t ptc_traceparent_format(const ptc_traceparent_t *t, char out[PTC_TRACEPARENT_LEN + 1]);

/*
 * Checks a tracestate header value (several tracestate lines joined with ',' form one value). Returns 0 and,
 * when members is not NULL, the number of list-members in *members; or PTC_EINVAL when:
 *
 *  - a member is not key "=" value (empty members and spaces or tabs around ',' are fine);
 *  - a key is neither a simple key, lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/"), nor a multi-tenant
 *    key, tenant-id "@" system-id with a tenant-id of 1 to 241 of those characters starting with lcalpha or a
 *    digit and a system-id of 1 to 14 starting with lcalpha;
 *  - a value is not 1 to 256 characters of 0x20-0x7E other than ',' and '=', ending in a non-space;
 *  - a key appears twice, or there are more than PTC_TRACESTATE_MAX_MEMBERS members.
 */
int ptc_tracestate_check(ptc_iovec_t value, size_t *members) PTC_WARN_UNUSED;

/* Fresh random ids for a new trace and for the gateway's own span; never all zero. */
void ptc_trace_new_trace_id(uint8_t id[16]);
void ptc_trace_new_span_id(uint8_t id[8]);

/*
 * Fills buf with n random bytes for ids that must be unique and hard to guess but protect nothing: trace and
 * span ids, request ids. Never for keys, tokens or nonces: use OpenSSL's RAND_bytes for those.
 *
 * The generator is ChaCha12 in fast-key-erasure mode (Bernstein), one per thread, keyed from getrandom(2) on
 * the thread's first call and again in a child after fork(2), so that parent and child never share a stream.
 * It is a stream cipher, so ids seen by a client do not reveal the ones other clients get (xoshiro256**, a
 * little faster, was rejected for that: a few outputs give its whole state away). Cost: about 20 ns per 16-byte
 * id and 16 ns per 8-byte one at -O2 on a shared AMD EPYC VM (xoshiro256**: 5-7 ns), with no lock and no
 * system call after the first.
 */
void ptc_random_bytes(void *buf, size_t n);

/* Writes n bytes as 2 * n lower-case hex digits (no NUL); returns 2 * n. */
size_t ptc_hex_encode(char *dst, const void *src, size_t n);

/*
 * Internal, exposed for the known-answer test: four ChaCha blocks (RFC 8439 §2.3 layout with a zero nonce and
 * block counters counter..counter+3) of the given number of rounds, serialized little-endian into out.
 */
void ptc__chacha_blocks(const uint32_t key[8], uint32_t counter, unsigned rounds, uint8_t out[256]);

#endif
