#ifndef PORTICO_BEV_H
#define PORTICO_BEV_H

#include <stdbool.h>

struct bufferevent;

/*
 * Direct writes for cleartext bufferevents. Left to itself, a bufferevent arms EV_WRITE whenever its
 * output gets bytes and disarms it once the output is empty: two epoll_ctl calls and one more loop
 * pass per burst of output. A connection that produces its output in bursts (a response, a batch of
 * HTTP/2 frames) keeps EV_WRITE disabled and calls ptc_bev_write_now() at the end of each burst: it
 * writes what the socket takes now, and only when bytes remain enables EV_WRITE and sets *blocked,
 * so that the bufferevent writes the rest. The write callback then calls ptc_bev_write_drained(),
 * which returns to direct writes once the output is empty. Not for TLS bufferevents.
 */
/* 0, or -1 on a write error (errno says which; the connection is broken). Nothing is done while *blocked. */
int ptc_bev_write_now(struct bufferevent *bev, bool *blocked);
void ptc_bev_write_drained(struct bufferevent *bev, bool *blocked);

/*
 * Direct reads for cleartext bufferevents. libevent's bufferevent_socket sizes every read with
 * ioctl(FIONREAD) and reads at most 4 KiB per readv: two syscalls per small request, two per 4 KiB of a
 * stream. This replaces the callback of the bufferevent's read event (its public ev_read, see
 * event2/bufferevent_struct.h) with one that reads with readv into space reserved in the input buffer:
 * up to ~4 KiB first, then (while reads fill what was asked) ~64 KiB at a time, at most 256 KiB per
 * readiness, never past the read high watermark. Everything else stays the bufferevent's: enabling and
 * disabling EV_READ (bufferevent_enable() adds this same event), the watermark's suspension, the read
 * callback (bufferevent_trigger()), EOF and errors (BEV_EVENT_READING|EOF/ERROR through the event
 * callback, after EV_READ is disabled, as libevent does). Call it once the socket is set (for a
 * connecting bufferevent: on BEV_EVENT_CONNECTED); bufferevent_setfd() would undo it. Not for TLS
 * bufferevents. Returns 0, or -1 when the event could not be re-added (out of memory).
 */
int ptc_bev_read_direct(struct bufferevent *bev);

/*
 * Frees the chains an empty input evbuffer still holds: a read that found nothing leaves the space it reserved
 * (bufferevent_openssl reserves up to 16 KiB per SSL_read; the direct reads above up to 64 KiB). For idle
 * connections (ptc_conn_idle()); a no-op when the buffer holds bytes or cannot be written to.
 */
void ptc_bev_trim_input(struct bufferevent *bev);

#endif
