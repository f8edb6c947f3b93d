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

#endif
