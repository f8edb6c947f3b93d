/*
 * Downstream connections as the worker sees them: a small vtable so draining and shutdown work the
 * same for HTTP/1.1 and HTTP/2 connections, plain or TLS.
 */
#ifndef PORTICO_CONN_H
#define PORTICO_CONN_H

#include <stdbool.h>
#include <sys/queue.h>

#include "portico/bev.h" /* the direct writes connections use */
#include "portico/common.h"

struct bufferevent;
struct sockaddr;
typedef struct st_ptc_worker_t ptc_worker_t;
typedef struct st_ptc_conn_t ptc_conn_t;
typedef struct st_ptc_snapshot_t ptc_snapshot_t;

typedef struct st_ptc_conn_cb_t {
    /* Draining: close now if idle, otherwise once the exchanges in progress are complete. */
    void (*drain)(ptc_conn_t *c);
    /* End every call in progress with grpc-status 14 and `message`, then close once flushed. */
    void (*fail_calls)(ptc_conn_t *c, const char *message);
    /* Close at once, cancelling calls in progress. */
    void (*close)(ptc_conn_t *c);
    /* Listed by ptc_conn_idle() PTC_CONN_IDLE_RELEASE_MS ago: give back what an idle connection does not
     * need (its buffers), if it is still idle. Must not free the connection. NULL: never listed. */
    void (*release_idle)(ptc_conn_t *c);
} ptc_conn_cb_t;

struct st_ptc_conn_t {
    const ptc_conn_cb_t *cb;
    ptc_worker_t *worker;
    ptc_snapshot_t *snap; /* pinned: the worker's snapshot when the connection (or its current exchange) began */
    unsigned listener;    /* id of the listener that accepted it (ptc_listener_t.id) */
    bool idle_listed;     /* in the worker's idle_conns, since idle_since_ms */
    TAILQ_ENTRY(st_ptc_conn_t) link;
    TAILQ_ENTRY(st_ptc_conn_t) idle_link;
    uint64_t idle_since_ms;
    char peer[64]; /* "ip:port" of the client, for logs */
};

/*
 * Adds a connection to its worker's list (counted against limits.max_connections) and pins the worker's
 * current snapshot in c->snap.
 */
void ptc_conn_register(ptc_worker_t *w, ptc_conn_t *c, const ptc_conn_cb_t *cb, const char *peer, unsigned listener);
/* Removes it and releases its snapshot; a draining worker exits when the last one is gone. */
void ptc_conn_unregister(ptc_conn_t *c);
/* Connections registered in all workers together (limits.max_connections_total); thread-safe. */
size_t ptc_conn_total(void);
/* The most connections registered at once since the last call (at least the current count, which it starts from
 * again); thread-safe, a hint (concurrent registrations may lower it slightly). */
size_t ptc_conn_peak_take(void);
/*
 * Moves the connection to the worker's current snapshot (a reload happened since it was pinned). Call it
 * only where nothing of the connection points into the old one: between exchanges.
 */
void ptc_conn_refresh(ptc_conn_t *c);

/*
 * Idle connections give their buffers back: a connection that has just become idle calls ptc_conn_idle();
 * once it has stayed listed for PTC_CONN_IDLE_RELEASE_MS the worker calls its cb->release_idle(), which
 * checks that it is still idle. Listing again moves it to the end; a connection leaves the list when it
 * is released or unregistered. Busy connections pay a list move per exchange, nothing more: the
 * buffers are made again only when a connection wakes up after a second or more of silence.
 */
#define PTC_CONN_IDLE_RELEASE_MS 1000
void ptc_conn_idle(ptc_conn_t *c);
/* The worker's idle timer: releases what has been idle long enough (worker.c arms it through ptc_conn_idle). */
void ptc_conn_idle_sweep(ptc_worker_t *w);

/*
 * Parking: a released cleartext connection has no bufferevent; `ev` (an event of the connection's that is
 * unused while idle) watches its socket instead, EV_READ | EV_PERSIST calling cb(fd, events, arg). The new
 * read event is added before the bufferevent's goes, so the socket stays in epoll and neither parking nor
 * waking costs an epoll_ctl. ptc_conn_park() frees bev (the socket stays open, event_get_fd(ev) has it);
 * -1 (out of memory) when it could not, and nothing changed.
 */
struct event;
int ptc_conn_park(struct event *ev, struct bufferevent *bev, void (*cb)(int, short, void *), void *arg);
/* What a parked socket's readiness means: 1 bytes wait (make the bufferevent again), 0 nothing (spurious),
 * -1 the client closed the connection (errno 0) or an error (errno). Peeks one byte: nothing is consumed. */
int ptc_conn_parked_peek(int fd);
/* A bufferevent (direct reads, not enabled) for the parked socket of `ev`; NULL when out of memory. Once
 * it is enabled, ptc_conn_unparked() gives `ev` back to its busy-time use (cb, arg, no descriptor) and makes
 * bev read at once (the bytes that woke the socket). */
struct bufferevent *ptc_conn_unpark(struct event *ev);
void ptc_conn_unparked(struct event *ev, struct bufferevent *bev, void (*cb)(int, short, void *), void *arg);



/* Formats a peer address as "ip:port" / "[ip6]:port". */
void ptc_conn_format_peer(const struct sockaddr *sa, char *buf, size_t len);

/*
 * Serves an accepted connection. `h2` is true when TLS negotiated ALPN "h2"; on a cleartext
 * connection HTTP/2 is chosen when the client opens with the HTTP/2 connection preface (prior
 * knowledge), HTTP/1.1 otherwise. listener: the id of the listener that accepted it. Takes ownership of bev.
 */
void ptc_conn_serve(ptc_worker_t *w, struct bufferevent *bev, const char *peer, unsigned listener, bool h2);

#endif
