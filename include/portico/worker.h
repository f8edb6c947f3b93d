/*
 * A worker: one thread, one event base, its own SO_REUSEPORT listeners, its own downstream
 * connections and its own upstream pools. Nothing on the request path is shared between workers.
 */
#ifndef PORTICO_WORKER_H
#define PORTICO_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "portico/config.h"
#include "portico/metrics.h"
#include "portico/snapshot.h"
#include "portico/stats.h"

struct evconnlistener;
struct evdns_base;
typedef struct st_ptc_upstream_t ptc_upstream_t;
typedef struct st_ptc_conn_t ptc_conn_t;
typedef struct st_ptc_snapshot_t ptc_snapshot_t;

/* One listening socket of a worker (SO_REUSEPORT: every worker has its own socket per address). */
typedef struct st_ptc_listener_t {
    int fd;                   /* created by the control thread (ptc_listen_socket), owned by the worker */
    size_t index;             /* in the current snapshot's config.listeners */
    struct evconnlistener *ev;
    unsigned id;              /* connections remember it, so that removing the listener drains them */
} ptc_listener_t;

/*
 * A configuration change for one worker: the new snapshot and this worker's socket for each of its
 * listeners (the same descriptor as before for an address that stays, a new one for a new address).
 * Queued by ptc_worker_update(), applied in order by the worker's own thread.
 */
typedef struct st_ptc_worker_update_t {
    struct st_ptc_worker_update_t *next;
    ptc_snapshot_t *snap; /* one reference, handed to the worker */
    int *fds;             /* snap->config.num_listeners descriptors */
} ptc_worker_update_t;

typedef struct st_ptc_worker_t {
    unsigned id;
    ptc_snapshot_t *snap; /* the snapshot new connections and requests use (one reference) */
    struct event_base *base;
    struct evdns_base *dns;
    ptc_listener_t *listeners;
    size_t num_listeners;
    unsigned next_listener_id;
    ptc_upstream_t **pools; /* one per snap->config.upstreams entry, same order */
    TAILQ_HEAD(, st_ptc_upstream_t) retired_pools; /* removed or replaced by a reload; freed once idle */
    struct event *gc_ev;                           /* frees retired pools that became idle */
    TAILQ_HEAD(, st_ptc_conn_t) conns; /* downstream connections (ptc_conn_t) */
    TAILQ_HEAD(, st_ptc_conn_t) idle_conns; /* idle ones, oldest first (ptc_conn_idle()) */
    struct event *idle_ev;                  /* runs ptc_conn_idle_sweep() */
    size_t num_conns;
    size_t num_calls;           /* calls in flight */
    int notify_fd;              /* eventfd the control thread writes to (updates, drain); see worker.c */
    struct event *notify_ev;    /* reads notify_fd */
    atomic_bool drain_requested;
    atomic_bool exited;           /* the worker's loop has ended (drained); the control thread is told through ack_fd */
    pthread_mutex_t updates_lock; /* guards the update queue only (never taken on the request path) */
    ptc_worker_update_t *updates;
    atomic_uint_fast64_t applied_version; /* version of the last snapshot this worker put in service */
    int ack_fd;                 /* eventfd of the control thread, written after each applied update; -1: none */
    struct event *drain_timer;  /* drain deadline */
    struct event *accept_retry; /* re-enables listeners after EMFILE */
    bool draining;
    bool drain_expired; /* the drain timeout passed: calls were failed, connections are flushing */
    pthread_t thread;
    struct evbuffer *evbuf_cache[256]; /* empty evbuffers kept for the next calls (no malloc per call; three a call) */
    size_t num_evbuf_cache;
    void *block_cache[64]; /* request-head blocks (ptc_worker_head_block()) given back */
    size_t num_block_cache;
    size_t block_cache_size; /* the size of the cached blocks: the current snapshot's head_block_size */
    ptc_filter_stats_t filter_stats; /* written by this worker only */
    ptc_worker_metrics_t metrics;    /* written by this worker only (include/portico/metrics.h) */
    ptc_limit_stats_t limit_stats;   /* written by this worker only */
    uint64_t refused_logged_ms;      /* when refused connections were last logged (ptc_now_ms) */
    uint64_t refused_unlogged;       /* connections refused since */
    void *jwt_cache;                 /* ptc_jwt_cache_t of verified tokens, made on first use */
} ptc_worker_t;

/*
 * Creates the event base, listeners and pools for snapshot snap (the worker takes its own reference).
 * fds holds this worker's listening socket for each of snap's listeners (ptc_listen_socket); the worker
 * owns them from here on, also on failure. ack_fd: see ptc_worker_t. Returns 0 or a negative PTC_E*; logs
 * the reason.
 */
int ptc_worker_init(ptc_worker_t *w, unsigned id, ptc_snapshot_t *snap, const int *fds, int ack_fd) PTC_WARN_UNUSED;
/* Runs the loop on a new thread. */
int ptc_worker_start(ptc_worker_t *w) PTC_WARN_UNUSED;
/*
 * Thread-safe: queues a configuration change (see ptc_worker_update_t; the worker takes the snapshot
 * reference and the descriptors). Returns 0 or PTC_ENOMEM (nothing was taken).
 */
int ptc_worker_update(ptc_worker_t *w, ptc_snapshot_t *snap, const int *fds) PTC_WARN_UNUSED;
/* Thread-safe: asks the worker to drain and exit its loop. */
void ptc_worker_request_drain(ptc_worker_t *w);
void ptc_worker_join(ptc_worker_t *w);
void ptc_worker_dispose(ptc_worker_t *w);

/*
 * The pool serving upstream `index` of snapshot snap: the pool of the worker's current configuration
 * with the same name (snap may be older than the worker's: a request that began before a reload). NULL
 * when the current configuration has no upstream of that name any more.
 */
ptc_upstream_t *ptc_worker_pool(ptc_worker_t *w, const ptc_snapshot_t *snap, size_t index);
/* Asks the worker to look for idle retired pools to free (at the end of this loop pass). */
void ptc_worker_pool_idle(ptc_worker_t *w);

/* An empty evbuffer, from the worker's cache when it has one; NULL when out of memory. */
struct evbuffer *ptc_worker_evbuffer(ptc_worker_t *w);
/* Gives an evbuffer back (drained here); NULL is ignored. */
void ptc_worker_evbuffer_release(ptc_worker_t *w, struct evbuffer *b);

/* Where one request header field lies in a head block's bytes. */
typedef struct st_ptc_head_off_t {
    uint32_t name, name_len, value, value_len;
} ptc_head_off_t;

/*
 * Request-head working memory, one block from a cache per worker: limits.max_header_size bytes of
 * head, an offset entry per field (limits.max_headers) and the ptc_header_t views handed to the
 * policy step (ptc_request_headers_cap()), for the limits of the snapshot the request
 * is read under. Held only while a request head is being read and dispatched, so idle connections and
 * running calls cost little; never zeroed. The cache holds blocks of the current snapshot's size only: a
 * reload that changes the limits empties it, and a block for an older snapshot is never cached.
 */
typedef struct st_ptc_head_block_t {
    void *mem; /* NULL: none held */
    size_t size;
    char *head;
    ptc_head_off_t *offs;
    ptc_header_t *views;
} ptc_head_block_t;

/* A block sized for snap's limits. 0, or PTC_ENOMEM. */
int ptc_worker_head_block(ptc_worker_t *w, const ptc_snapshot_t *snap, ptc_head_block_t *b);
/* Gives the block back (if any) and clears b. */
void ptc_worker_head_block_release(ptc_worker_t *w, ptc_head_block_t *b);

/* Called by connections when they close, so a draining worker can finish. */
void ptc_worker_on_conn_closed(ptc_worker_t *w);

#endif
