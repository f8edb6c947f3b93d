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

struct evconnlistener;
struct evdns_base;
typedef struct st_ptc_upstream_t ptc_upstream_t;
typedef struct st_ptc_conn_t ptc_conn_t;
typedef struct st_ptc_tls_contexts_t ptc_tls_contexts_t;

typedef struct st_ptc_worker_t {
    unsigned id;
    const ptc_config_t *config;
    struct event_base *base;
    struct evdns_base *dns;
    struct evconnlistener **listeners;
    size_t num_listeners;
    ptc_upstream_t *upstreams; /* one per config->upstreams entry */
    TAILQ_HEAD(, st_ptc_conn_t) conns; /* downstream connections (ptc_conn_t) */
    size_t num_conns;
    size_t num_calls;           /* calls in flight */
    int notify_fd;              /* eventfd the main thread writes to (drain, TLS contexts); see worker.c */
    struct event *drain_ev;     /* reads notify_fd */
    atomic_bool drain_requested;
    struct event *drain_timer;  /* drain deadline */
    struct event *accept_retry; /* re-enables listeners after EMFILE */
    bool draining;
    bool drain_expired; /* the drain timeout passed: calls were failed, connections are flushing */
    ptc_tls_contexts_t *tls;                  /* contexts for new TLS connections (this worker's references); may be NULL */
    _Atomic(ptc_tls_contexts_t *) tls_next;   /* handed over by ptc_worker_set_tls, taken by the worker */
    pthread_t thread;
    struct evbuffer *evbuf_cache[64]; /* empty evbuffers kept for the next calls (no malloc per call) */
    size_t num_evbuf_cache;
    void *block_cache[64]; /* request-head blocks (ptc_worker_head_block()) given back */
    size_t num_block_cache;
} ptc_worker_t;

/*
 * Creates the event base, listeners and pools. tls holds the contexts of config's TLS listeners and upstreams
 * (ptc_tls_contexts_new; NULL when none uses TLS); the worker takes its own references. Returns 0 or a negative
 * PTC_E*; logs the reason.
 */
int ptc_worker_init(ptc_worker_t *w, unsigned id, const ptc_config_t *config, const ptc_tls_contexts_t *tls) PTC_WARN_UNUSED;
/* Runs the loop on a new thread. */
int ptc_worker_start(ptc_worker_t *w) PTC_WARN_UNUSED;
/*
 * Thread-safe: new TLS connections of this worker will use these contexts (certificate reload); connections
 * already open keep theirs. The worker takes its own references. Returns 0 or PTC_ENOMEM.
 */
int ptc_worker_set_tls(ptc_worker_t *w, const ptc_tls_contexts_t *tls) PTC_WARN_UNUSED;
/* Thread-safe: asks the worker to drain and exit its loop. */
void ptc_worker_request_drain(ptc_worker_t *w);
void ptc_worker_join(ptc_worker_t *w);
void ptc_worker_dispose(ptc_worker_t *w);

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
 * policy step (max_headers + PTC_HTTP_HEADERS_MAX_FIELDS). Held only while a request head is being
 * read and dispatched, so idle connections and running calls cost little; never zeroed.
 */
typedef struct st_ptc_head_block_t {
    void *mem; /* NULL: none held */
    char *head;
    ptc_head_off_t *offs;
    ptc_header_t *views;
} ptc_head_block_t;

/* 0, or PTC_ENOMEM. */
int ptc_worker_head_block(ptc_worker_t *w, ptc_head_block_t *b);
/* Gives the block back (if any) and clears b. */
void ptc_worker_head_block_release(ptc_worker_t *w, ptc_head_block_t *b);

/* Called by connections when they close, so a draining worker can finish. */
void ptc_worker_on_conn_closed(ptc_worker_t *w);

#endif
