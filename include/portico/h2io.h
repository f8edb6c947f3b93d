/*
 * Plumbing shared by the HTTP/2 server (downstream) and client (upstream) sessions: moving nghttp2's
 * bytes between a session and a bufferevent, with the output bounded.
 */
#ifndef PORTICO_H2IO_H
#define PORTICO_H2IO_H

#include <stdbool.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#include "portico/common.h"

struct bufferevent;
struct evbuffer;

/* nghttp2 stops writing into a connection's output beyond this (nghttp2's libevent-server.c uses 64 KiB);
 * the bufferevent's write callback resumes it below the low watermark. */
#define PTC_H2_OUTPUT_WOULDBLOCK (64 * 1024)
#define PTC_H2_OUTPUT_LOW_WATERMARK (16 * 1024)

/* Body of an nghttp2_send_callback: appends to out, or NGHTTP2_ERR_WOULDBLOCK when out is full. */
ssize_t ptc_h2_write(struct evbuffer *out, const uint8_t *data, size_t length);

/*
 * Feeds what `in` holds to the session, extent by extent (no linearising copy), draining what was
 * consumed; stops early when *stop becomes true (a callback decided to close). Returns 0 or the
 * negative nghttp2 error of nghttp2_session_mem_recv().
 */
int ptc_h2_feed(nghttp2_session *session, struct evbuffer *in, const bool *stop);

/*
 * Runs nghttp2_session_send() until the session has nothing more to write. On cleartext connections
 * (blocked != NULL) the output is written straight away (ptc_bev_write_now(), *blocked as there), and
 * the session is asked again when it had stopped at PTC_H2_OUTPUT_WOULDBLOCK. Callbacks that want
 * another pass while it runs set *again. Returns 0, a negative nghttp2 error, or PTC_EIO when the
 * socket write failed (errno says why).
 */
int ptc_h2_send(nghttp2_session *session, struct bufferevent *bev, bool *blocked, bool *again);

#endif
