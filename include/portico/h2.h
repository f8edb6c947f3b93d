/*
 * HTTP/2 downstream connections (nghttp2 server sessions).
 */
#ifndef PORTICO_H2_H
#define PORTICO_H2_H

#include <stdbool.h>

struct bufferevent;
typedef struct st_ptc_worker_t ptc_worker_t;

/* The HTTP/2 connection preface a client sends first (RFC 9113 §3.4). */
#define PTC_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PTC_H2_PREFACE_LEN 24

/* Serves HTTP/2 on a connected bufferevent (after ALPN h2, or after seeing the preface on a plain
 * connection: bytes already in the input buffer are processed first). Takes ownership of bev. */
void ptc_h2conn_start(ptc_worker_t *w, struct bufferevent *bev, const char *peer, unsigned listener, bool tls);

#endif
