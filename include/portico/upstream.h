/*
 * Upstream pool: per worker and per named upstream, persistent HTTP/2 (h2c or TLS) connections that
 * multiplex streams, honour the server's SETTINGS_MAX_CONCURRENT_STREAMS (another connection is opened
 * when all are full), reconnect with exponential backoff per endpoint, and balance over the endpoints
 * (round-robin, or least-request). Host names are resolved with evdns, never blocking the loop.
 *
 * Health (include/portico/health.h): endpoints that fail their active health checks or were ejected by
 * passive outlier detection get no calls; when no endpoint can take one, a call fails at once with
 * UNAVAILABLE and a message naming the upstream and why each endpoint is out. The pool feeds the passive
 * detection (failed connection attempts, grpc-status 14 answers) and the shared counts (connections,
 * streams, waiting calls). On the monitoring worker the pool also runs the active checks and the DNS
 * refresh of its endpoints (include/portico/monitor.h), as streams of its own through the client interface.
 *
 * The pool knows streams, not calls (DESIGN.md, "Upstream client"): whoever wants an upstream stream
 * embeds a ptc_upstream_stream_t, gives it callbacks, and drives it through the client interface
 * (ptc_upstream_client_t). A call does; so can health checks, key fetches and unit tests, which may put
 * a fake client in the pool's place.
 *
 * Lifetime and reloads: a pool belongs to a worker and holds a reference to the snapshot whose settings
 * it uses. A reload that keeps an upstream's name and transport settings keeps the pool and its
 * connections (ptc_upstream_update: new endpoints are connected as needed, connections to removed ones
 * finish their streams and close); one that removes an upstream or changes how it is reached retires the
 * pool (ptc_upstream_retire): it takes no new streams, finishes the ones it has, and is freed once idle.
 */
#ifndef PORTICO_UPSTREAM_H
#define PORTICO_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#include "portico/config.h"

struct evbuffer;
struct ssl_ctx_st;
typedef struct st_ptc_worker_t ptc_worker_t;
typedef struct st_ptc_snapshot_t ptc_snapshot_t;
typedef struct st_ptc_h2client_t ptc_h2client_t;
typedef struct st_ptc_upstream_t ptc_upstream_t;
typedef struct st_ptc_upstream_stream_t ptc_upstream_stream_t;
typedef struct st_ptc_upstream_client_t ptc_upstream_client_t;

/* What the owner of a stream hears and provides. Every callback may be called from inside the pool's
 * nghttp2 callbacks: they must not call back into the client synchronously except as noted. */
typedef struct st_ptc_upstream_stream_cb_t {
    /* The request header block for nghttp2_submit_request(); it must stay valid until the stream closes. */
    void (*request_headers)(ptc_upstream_stream_t *s, const nghttp2_nv **nva, size_t *n);
    /* Data provider read callback body (NGHTTP2_DATA_FLAG_NO_COPY); see nghttp2_data_source_read_callback. */
    ssize_t (*read_request)(ptc_upstream_stream_t *s, size_t length, uint32_t *data_flags);
    /* Writes a DATA frame: its 9-byte header and length bytes of request body. Returns 0, or -1 when an
     * allocation failed: part of the frame may be in out, so the connection is closed. */
    int (*write_request)(ptc_upstream_stream_t *s, struct evbuffer *out, const uint8_t *framehd, size_t length);
    void (*on_header)(ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *name, size_t namelen,
                      const uint8_t *value, size_t valuelen);
    void (*on_headers_end)(ptc_upstream_stream_t *s, nghttp2_headers_category cat, bool end_stream);
    void (*on_data)(ptc_upstream_stream_t *s, const uint8_t *data, size_t len);
    void (*on_data_end)(ptc_upstream_stream_t *s);
    /* The stream closed (error_code is the RST_STREAM code or 0; conn_error says why when the whole
     * connection was lost). The stream is detached from the pool already. */
    void (*on_close)(ptc_upstream_stream_t *s, uint32_t error_code, const char *conn_error);
    /* No stream could be opened; message says why. The stream is detached from the pool already. May be
     * called before start() returns. */
    void (*on_error)(ptc_upstream_stream_t *s, const char *message);
} ptc_upstream_stream_cb_t;

/* An upstream stream as its owner embeds it. Set cb (and pin), leave the rest zero; the client manages it. */
struct st_ptc_upstream_stream_t {
    const ptc_upstream_stream_cb_t *cb;
    uint32_t pin;                  /* set by the owner: 0 = balanced over the usable endpoints (calls); k + 1 = on endpoint k
                                    * only, healthy or not (health checks: never counted as a call, never refused) */
    ptc_upstream_client_t *client; /* set by start() while the stream is queued or open; NULL otherwise */
    ptc_h2client_t *conn;  /* NULL until a stream is open, and again after it closed */
    int32_t stream_id;
    bool pending;          /* in the pool's pending queue */
    bool data_deferred;    /* the client's: read_request answered NGHTTP2_ERR_DEFERRED and resume_data was not called since */
    /* the HTTP/2 client's (src/upstream/h2client.c), while the stream is open */
    uint8_t h2_flags;
    int32_t send_window;     /* request DATA the server takes now */
    int32_t recv_window;     /* response DATA the server may still send */
    uint32_t recv_credit;    /* consumed and not yet announced (WINDOW_UPDATE) */
    int64_t content_length;  /* of the response, -1 when it has none */
    uint64_t data_received;
    const char *reset_reason; /* set when the gateway reset the stream for a malformed response: why (a literal) */
    struct st_ptc_upstream_stream_t *h2_next;          /* in the client's hash bucket */
    TAILQ_ENTRY(st_ptc_upstream_stream_t) send_link;  /* in the client's send queue, while flagged so */
    TAILQ_ENTRY(st_ptc_upstream_stream_t) pending_link; /* in ptc_upstream_t.pending (or .pinned), while pending */
    TAILQ_ENTRY(st_ptc_upstream_stream_t) conn_link;    /* in the connection's list, while conn != NULL */
};

/*
 * The client interface. The pool implements it (ptc_upstream_t begins with one); a test may implement
 * its own. A call reads nothing of the pool ptc_worker_pool() gives it but its client
 * (ptc_upstream_client()), so a unit test stands a fake in for a pool by putting a ptc_upstream_t whose
 * only field set is client (the test's callbacks and the upstream's config) in the worker's pools[] while
 * its calls run, and the real pool back before ptc_worker_dispose() (tests/unit/call/call.c).
 */
typedef struct st_ptc_upstream_client_cb_t {
    /* Opens a stream now, or queues it until a connection is ready; failures come through cb->on_error. */
    void (*start)(ptc_upstream_client_t *c, ptc_upstream_stream_t *s);
    /* Withdraws a stream: removes it from the queue, or resets it (RST_STREAM CANCEL). unconsumed is the
     * number of DATA bytes received but never credited; the connection window gets them back. No
     * callback follows. A stream that is neither queued nor open is left alone. */
    void (*cancel)(ptc_upstream_stream_t *s, size_t unconsumed);
    /* More request body is available. */
    void (*resume_data)(ptc_upstream_stream_t *s);
    /* n bytes of response DATA were passed on: credit the stream's flow-control window. */
    void (*consume)(ptc_upstream_stream_t *s, size_t n);
} ptc_upstream_client_cb_t;

/* "host:port" of the endpoint whose connection carries s, or NULL (not open, or not a pool's stream). */
const char *ptc_upstream_stream_peer(const ptc_upstream_stream_t *s);

struct st_ptc_upstream_client_t {
    const ptc_upstream_client_cb_t *cb;
    const ptc_upstream_config_t *config; /* the upstream's settings (name, authority, endpoints, tls) */
};

typedef struct st_ptc_endpoint_state_t {
    uint64_t retry_at_ms;  /* monotonic ms before which no new connection is attempted */
    uint64_t backoff_ms;   /* next backoff; 0 after a success */
    char last_error[256];  /* why the last connection attempt failed */
    size_t streams;        /* streams open on this pool's connections to it (least_request) */
} ptc_endpoint_state_t;

struct st_ptc_upstream_t {
    ptc_upstream_client_t client; /* first: the interface calls use */
    ptc_worker_t *worker;
    ptc_snapshot_t *snap;          /* one reference: client.config points into it */
    size_t index;                  /* of client.config in snap->config.upstreams */
    ptc_endpoint_state_t *endpoints; /* per client.config->endpoints entry */
    size_t rr_next; /* next endpoint to connect to */
    size_t conn_rr; /* round-robin position over connections with free streams */
    TAILQ_HEAD(, st_ptc_h2client_t) conns;
    size_t num_conns;
    TAILQ_HEAD(, st_ptc_upstream_stream_t) pending; /* calls waiting for a connection or a free stream */
    TAILQ_HEAD(, st_ptc_upstream_stream_t) pinned;  /* pinned streams (health checks) waiting for their endpoint */
    size_t num_pending;                             /* in both queues */
    size_t num_pending_calls;                       /* in pending (what max_pending bounds) */
    bool dispatching;                               /* inside dispatch(): a nested call only asks for another pass (redispatch) */
    bool redispatch;
    struct st_ptc_monitor_t *monitor; /* active checks and DNS refresh; NULL but on the monitoring worker */
    bool retired; /* removed or replaced by a reload: finishes what it has, takes nothing new */
    TAILQ_ENTRY(st_ptc_upstream_t) retired_link; /* in the worker's list of retired pools */
};

/* A pool for upstream `index` of snap (the pool takes its own reference); NULL when out of memory. */
ptc_upstream_t *ptc_upstream_new(ptc_worker_t *w, ptc_snapshot_t *snap, size_t index);
/*
 * Moves a pool to upstream `index` of a newer snapshot whose settings for it differ at most in the
 * endpoint list (ptc_upstream_config_same_transport): connections to endpoints that remain are kept,
 * those to removed endpoints take no new streams and close once their streams are done. Returns 0, or
 * PTC_ENOMEM (the pool is left as it was).
 */
int ptc_upstream_update(ptc_upstream_t *up, ptc_snapshot_t *snap, size_t index) PTC_WARN_UNUSED;
/* Retires a pool (see above). The worker frees it once ptc_upstream_idle() says so. */
void ptc_upstream_retire(ptc_upstream_t *up);
/* True when a retired pool has nothing left: no connection, no queued stream. */
bool ptc_upstream_idle(const ptc_upstream_t *up);
/* Closes every connection (streams end with a connection error, queued ones fail) and frees the pool. */
void ptc_upstream_free(ptc_upstream_t *up);

/* The client interface of a pool. */
static inline ptc_upstream_client_t *ptc_upstream_client(ptc_upstream_t *up)
{
    return &up->client;
}

#endif
