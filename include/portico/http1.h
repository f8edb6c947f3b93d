/*
 * HTTP/1.1 downstream connections.
 */
#ifndef PORTICO_HTTP1_H
#define PORTICO_HTTP1_H

struct bufferevent;
typedef struct st_ptc_worker_t ptc_worker_t;

#include <stdbool.h>

/* Serves HTTP/1.1 on a connected bufferevent (plain or TLS); takes ownership of bev. */
void ptc_h1conn_start(ptc_worker_t *w, struct bufferevent *bev, const char *peer, unsigned listener, bool tls);

#endif
