/*
 * HTTP/1.1 downstream connections.
 */
#ifndef PORTICO_HTTP1_H
#define PORTICO_HTTP1_H

#include <sys/socket.h>

#include <event2/util.h>

typedef struct st_ptc_worker_t ptc_worker_t;
typedef struct st_ptc_h1conn_t ptc_h1conn_t;

/* Takes ownership of an accepted socket. */
void ptc_h1conn_accept(ptc_worker_t *w, evutil_socket_t fd, const struct sockaddr *sa);
/* Draining: closes the worker's idle connections now, the others after their current response. */
void ptc_h1conn_drain_all(ptc_worker_t *w);
/* Ends every call in flight with grpc-status 14 and `message`, then closes the connections once flushed. */
void ptc_h1conn_fail_calls(ptc_worker_t *w, const char *message);
/* Closes every connection of the worker at once, cancelling calls in progress. */
void ptc_h1conn_close_all(ptc_worker_t *w);

#endif
