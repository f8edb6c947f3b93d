/*
 * Upstream pool: per worker and per named upstream, persistent HTTP/2 (h2c) connections that
 * multiplex calls, honour the server's SETTINGS_MAX_CONCURRENT_STREAMS (another connection is opened
 * when all are full), reconnect with exponential backoff per endpoint, and balance round-robin over
 * the endpoints. Host names are resolved with evdns, never blocking the loop.
 */
#ifndef PORTICO_UPSTREAM_H
#define PORTICO_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <nghttp2/nghttp2.h>

#include "portico/config.h"

struct evbuffer;
struct ssl_ctx_st;
typedef struct st_ptc_worker_t ptc_worker_t;
typedef struct st_ptc_call_t ptc_call_t;
typedef struct st_ptc_h2client_t ptc_h2client_t;
typedef struct st_ptc_upstream_t ptc_upstream_t;

/* A call's place in the pool: its queue entry or its stream. Embedded in the call. */
typedef struct st_ptc_upstream_call_link_t {
    ptc_call_t *call;
    ptc_h2client_t *conn; /* NULL until a stream is open, and again after it closed */
    int32_t stream_id;
    bool pending;          /* in the upstream's pending queue */
    TAILQ_ENTRY(st_ptc_upstream_call_link_t) pending_link; /* in ptc_upstream_t.pending, while pending */
    TAILQ_ENTRY(st_ptc_upstream_call_link_t) conn_link;    /* in the connection's list of calls, while conn != NULL */
} ptc_upstream_call_link_t;

typedef struct st_ptc_endpoint_state_t {
    uint64_t retry_at_ms;  /* monotonic ms before which no new connection is attempted */
    uint64_t backoff_ms;   /* next backoff; 0 after a success */
    char last_error[256];  /* why the last connection attempt failed */
} ptc_endpoint_state_t;

struct st_ptc_upstream_t {
    ptc_worker_t *worker;
    const ptc_upstream_config_t *config;
    ptc_endpoint_state_t *endpoints;
    size_t rr_next; /* next endpoint to connect to */
    size_t conn_rr; /* round-robin position over connections with free streams */
    TAILQ_HEAD(, st_ptc_h2client_t) conns;
    size_t num_conns;
    TAILQ_HEAD(, st_ptc_upstream_call_link_t) pending; /* calls waiting for a stream */
    size_t num_pending;
    struct ssl_ctx_st *tls_ctx; /* config->tls != NULL: context for new connections, borrowed from the worker
                                 * (replaced on certificate reload; each connection's SSL holds its own reference) */
};


void ptc_upstream_init(ptc_upstream_t *up, ptc_worker_t *w, const ptc_upstream_config_t *config);
void ptc_upstream_dispose(ptc_upstream_t *up);

/*
 * Opens a stream for the call now, or queues it until a connection is ready. When no stream can be
 * had (all endpoints failing, queue full) the call is told through ptc__call_on_upstream_error().
 * That may happen before this returns.
 */
void ptc_upstream_start_call(ptc_upstream_t *up, ptc_call_t *call);
/*
 * Withdraws a call: removes it from the queue, or resets its stream (RST_STREAM CANCEL). unconsumed is
 * the number of DATA bytes the call received but never credited; the connection window gets them back.
 */
void ptc_upstream_cancel_call(ptc_upstream_t *up, ptc_call_t *call, size_t unconsumed);
/* More request body is available for the call's stream. */
void ptc_upstream_resume_data(ptc_call_t *call);
/* The call has passed n bytes of response DATA downstream: credit the stream's flow-control window. */
void ptc_upstream_consume(ptc_call_t *call, size_t n);

/* ---- implemented by call.c, called by the pool ---- */
ptc_upstream_call_link_t *ptc__call_link(ptc_call_t *call);
/* The request header block for nghttp2_submit_request(). */
void ptc__call_request_headers(ptc_call_t *call, const nghttp2_nv **nva, size_t *n);
/* Data provider read callback body (NGHTTP2_DATA_FLAG_NO_COPY); see nghttp2_data_source_read_callback. */
ssize_t ptc__call_read_request(ptc_call_t *call, size_t length, uint32_t *data_flags);
/* Writes a DATA frame: its 9-byte header and length bytes of request body. */
void ptc__call_write_request(ptc_call_t *call, struct evbuffer *out, const uint8_t *framehd, size_t length);
void ptc__call_on_upstream_header(ptc_call_t *call, nghttp2_headers_category cat, const uint8_t *name, size_t namelen,
                                  const uint8_t *value, size_t valuelen);
void ptc__call_on_upstream_headers_end(ptc_call_t *call, nghttp2_headers_category cat, bool end_stream);
void ptc__call_on_upstream_data(ptc_call_t *call, const uint8_t *data, size_t len);
void ptc__call_on_upstream_data_end(ptc_call_t *call);
/* The stream closed (error_code is the RST_STREAM code or 0); the link is already cleared. */
void ptc__call_on_upstream_close(ptc_call_t *call, uint32_t error_code, const char *conn_error);
/* No stream could be opened; message says why. The call is not in the queue any more. */
void ptc__call_on_upstream_error(ptc_call_t *call, const char *message);

#endif
