/*
 * evbuffer helpers shared by the adapters.
 */
#ifndef PORTICO_BUFFER_H
#define PORTICO_BUFFER_H

#include "portico/common.h"

struct evbuffer;

/*
 * Moves `length` bytes from src to out between a prefix and a suffix (a frame header, a chunk-size
 * line, a CRLF). Small pieces are assembled and added in one step — cheaper than moving buffer chains
 * and one callback on a bufferevent's output instead of three; large ones move without a copy.
 * Returns 0, or -1 when an allocation failed: out then holds part of it (the caller must not send it
 * on as if whole), and of the `length` bytes what was not moved may be still in src or lost.
 */
int ptc_evbuffer_add_framed(struct evbuffer *out, const void *prefix, size_t plen, struct evbuffer *src, size_t length,
                             const void *suffix, size_t slen);

#endif
