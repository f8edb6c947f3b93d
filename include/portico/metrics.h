/*
 * Prometheus metrics: what each worker records as calls and local answers end, and the scrape that sums
 * the workers' records on the control thread (GET /metrics on the admin listener, README "Operations").
 *
 * Recording: every counter belongs to one worker and only that worker's thread writes it, with a relaxed
 * load and store (PTC_STAT_INC / PTC_STAT_ADD, no locked instruction); the scrape reads them with relaxed
 * loads while the workers run. The per-method entries live in chunks that never move once published, so
 * a scrape can walk a worker's entries while the worker adds new ones: an entry is filled, then counted
 * (num_methods, release); the scrape reads the count (acquire), then the entries below it. The index the
 * worker finds its entries with is the worker's alone. After warm-up (every method and upstream seen
 * once) recording allocates nothing.
 *
 * Cardinality: methods are counted one by one only for request paths that matched a route and look like
 * gRPC method paths ("/package.Service/Method", characters [A-Za-z0-9_.-]), up to metrics.max_methods
 * per worker; the rest share grpc_service="other", grpc_method="other". Requests that match no route
 * create no method series. Upstreams are counted by configured name (at most PTC_METRICS_MAX_UPSTREAMS
 * names per worker, the rest as upstream="other").
 *
 * grpc_type: a gateway has no service descriptors, so the type of a method is learned from its calls:
 * a call that sent more than one message counts as client streaming, one that received more than one as
 * server streaming; a method's type is the widest seen on any worker (unary until then), and every series
 * of the method carries it, so started/handled/messages always join on the same labels.
 */
#ifndef PORTICO_METRICS_H
#define PORTICO_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/codec.h"
#include "portico/common.h"
#include "portico/config.h"
#include "portico/stats.h"

struct evbuffer;

#define PTC_METRICS_MAX_METHODS 65536 /* per worker, whatever metrics.max_methods says */
#define PTC_METRICS_CHUNK 64          /* method entries per allocation */
#define PTC_METRICS_MAX_UPSTREAMS 64  /* upstream names per worker */
#define PTC_GRPC_CODES 17             /* 0 (OK) .. 16 (UNAUTHENTICATED); other values count as 2 (UNKNOWN) */

/* Adds n to a single-writer counter (see PTC_STAT_INC); n may wrap for gauges kept as up/down counts. */
#define PTC_STAT_ADD(c, n)                                                                                                         \
    atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + (uint64_t)(n), memory_order_relaxed)

/* ---- histograms ---- */

#define PTC_HIST_BUCKETS 16
/* Upper bounds of the buckets in µs: 0.5 ms .. 60 s (the +Inf bucket follows). */
extern const uint64_t ptc_hist_bounds_us[PTC_HIST_BUCKETS];

typedef struct st_ptc_histogram_t {
    ptc_counter_t bucket[PTC_HIST_BUCKETS + 1]; /* observations per bucket, not cumulative; the last is +Inf */
    ptc_counter_t sum_us;
} ptc_histogram_t;

void ptc_histogram_observe(ptc_histogram_t *h, uint64_t us);

/* ---- what is recorded ---- */

typedef enum { PTC_TRANSPORT_HTTP1, PTC_TRANSPORT_H2, PTC_TRANSPORT_WEBSOCKET, PTC_TRANSPORT_COUNT } ptc_transport_t;
typedef enum { PTC_PROTO_GRPC_WEB, PTC_PROTO_GRPC_WEB_TEXT, PTC_PROTO_GRPC, PTC_PROTO_CONNECT, PTC_PROTO_COUNT } ptc_proto_t;
extern const char *const ptc_transport_names[PTC_TRANSPORT_COUNT]; /* http1, h2, websocket */
extern const char *const ptc_proto_names[PTC_PROTO_COUNT];         /* grpc-web, grpc-web-text, grpc, connect */

/* The protocol label of a request of content type kind (anything that is not gRPC or Connect: grpc-web). */
ptc_proto_t ptc_proto_of(ptc_ctype_kind_t kind);

#define PTC_SHAPE_CLIENT_STREAM 1u /* a call sent more than one message */
#define PTC_SHAPE_SERVER_STREAM 2u /* a call received more than one message */

typedef struct st_ptc_method_stats_t {
    char *path; /* "/pkg.Service/Method" (NUL-terminated, owned); NULL for the "other" entry */
    size_t path_len;
    ptc_counter_t shape; /* PTC_SHAPE_* bits seen */
    ptc_counter_t started;
    ptc_counter_t handled[PTC_GRPC_CODES];
    ptc_counter_t msg_received, msg_sent;
    ptc_histogram_t handling; /* gateway total latency of the method's calls */
} ptc_method_stats_t;

enum { PTC_UPSTREAM_CONNECTING, PTC_UPSTREAM_READY, PTC_UPSTREAM_DRAINING, PTC_UPSTREAM_CONN_STATES };
extern const char *const ptc_upstream_state_names[PTC_UPSTREAM_CONN_STATES];

typedef struct st_ptc_upstream_stats_t {
    char name[PTC_CONFIG_MAX_NAME + 1]; /* "" for the "other" entry */
    ptc_histogram_t duration;           /* per call: from the upstream stream's start until the call ended with it */
    ptc_counter_t connects, connect_failures;
    ptc_counter_t conns[PTC_UPSTREAM_CONN_STATES]; /* gauges: connections in each state now */
} ptc_upstream_stats_t;

typedef struct st_ptc_transport_stats_t {
    ptc_histogram_t duration; /* gateway total latency of calls; its count is the calls */
    ptc_counter_t bytes_in, bytes_out, msgs_in, msgs_out;
} ptc_transport_stats_t;

/* HTTP statuses of local answers, by slot (the last: any other): the gateway's refusals and the statuses of Connect's
 * error table. */
#define PTC_LOCAL_STATUS_SLOTS 20
extern const int ptc_local_statuses[PTC_LOCAL_STATUS_SLOTS - 1];

typedef struct st_ptc_worker_metrics_t {
    ptc_method_stats_t *chunks[PTC_METRICS_MAX_METHODS / PTC_METRICS_CHUNK];
    _Atomic uint32_t num_methods; /* entries published (release) */
    ptc_method_stats_t other;
    uint32_t *index; /* the worker's own: open addressing over entry number + 1 */
    size_t index_cap;
    ptc_upstream_stats_t upstreams[PTC_METRICS_MAX_UPSTREAMS + 1]; /* the last: "other" */
    _Atomic uint32_t num_upstreams;
    ptc_transport_stats_t transports[PTC_TRANSPORT_COUNT][PTC_PROTO_COUNT];
    ptc_counter_t calls_started, calls_ended; /* in flight: the difference */
    ptc_counter_t conns_opened, conns_closed; /* registered connections (an upgrade re-registers): open ones are the difference */
    ptc_counter_t conns_accepted;
    ptc_counter_t local[PTC_LOCAL_STATUS_SLOTS][PTC_GRPC_CODES + 1]; /* [status][grpc code, or PTC_GRPC_CODES: not gRPC] */
    ptc_counter_t access_log_lines, access_log_dropped; /* lines queued for the writer / dropped because its buffer was full */
} ptc_worker_metrics_t;

/* Frees what m allocated (entries and their paths, the index) and zeroes it. */
void ptc_metrics_dispose(ptc_worker_metrics_t *m);

/*
 * The entry counting calls of path (a request path that matched a route, without its query): its own
 * entry, made on first sight while the worker has fewer than max_methods, or m->other. Never NULL.
 */
ptc_method_stats_t *ptc_metrics_method(ptc_worker_metrics_t *m, ptc_iovec_t path, uint32_t max_methods);
/* The entry of an upstream name (made on first sight), or the "other" entry. Never NULL. */
ptc_upstream_stats_t *ptc_metrics_upstream(ptc_worker_metrics_t *m, const char *name);

/* A call or a local answer, as it ended. */
typedef struct st_ptc_call_record_t {
    ptc_method_stats_t *method; /* NULL: no route matched (local answers only) */
    const char *upstream;       /* upstream name, or NULL when no upstream stream was started */
    ptc_transport_t transport;
    ptc_proto_t proto;
    int grpc_status;            /* -1: a plain HTTP answer */
    int http_status;
    uint64_t bytes_in, bytes_out; /* request and response body bytes as the client sent / received them */
    uint64_t msgs_in, msgs_out;
    uint64_t duration_us;  /* from the request head to the end of the response */
    uint64_t upstream_us;  /* time on the upstream stream (calls with an upstream only) */
} ptc_call_record_t;

/* A call started (method: ptc_metrics_method()). */
void ptc_metrics_call_started(ptc_worker_metrics_t *m, ptc_method_stats_t *method);
/* A call that was started has ended. */
void ptc_metrics_call_ended(ptc_worker_metrics_t *m, const ptc_call_record_t *r);
/* A request answered by the pipeline itself (preflight, refusal, health, gRPC error): never a started call. */
void ptc_metrics_local(ptc_worker_metrics_t *m, const ptc_call_record_t *r);

/* ---- the scrape ---- */

/* One worker's records. */
typedef struct st_ptc_metrics_source_t {
    const ptc_worker_metrics_t *metrics;
    const ptc_filter_stats_t *filters; /* may be NULL */
    const ptc_limit_stats_t *limits;   /* may be NULL */
} ptc_metrics_source_t;

/* One upstream endpoint as the control thread sees it in the shared health table (what GET /upstreams reports). */
typedef struct st_ptc_metrics_endpoint_t {
    const char *upstream, *address; /* the configured names */
    const char *health;             /* "unknown", "healthy" or "unhealthy" (ptc_health_name) */
    bool available;                 /* gets calls: not unhealthy, not ejected */
    bool ejected;                   /* ejected by passive outlier detection */
} ptc_metrics_endpoint_t;

/* What the control thread adds: configuration, access log writer, endpoints, process figures. */
typedef struct st_ptc_metrics_process_t {
    const ptc_metrics_endpoint_t *endpoints; /* num_endpoints, over all upstreams of the running configuration */
    size_t num_endpoints;
    uint64_t config_version, reloads_ok, reloads_failed;
    uint64_t access_log_bytes, access_log_write_errors, access_log_lost, access_log_reopens; /* summed over the writers */
    size_t workers;
    bool have_proc; /* the figures below were read */
    double cpu_seconds, start_time_seconds;
    uint64_t resident_bytes, virtual_bytes, open_fds, max_fds;
} ptc_metrics_process_t;

/* Reads the process figures from /proc/self into p (have_proc false when /proc cannot be read). */
void ptc_metrics_read_process(ptc_metrics_process_t *p);

#define PTC_METRICS_TEXT_CTYPE "text/plain; version=0.0.4; charset=utf-8"
#define PTC_METRICS_OPENMETRICS_CTYPE "application/openmetrics-text; version=1.0.0; charset=utf-8"

/* True when an Accept header asks for OpenMetrics (application/openmetrics-text, not refused with q=0). */
bool ptc_metrics_wants_openmetrics(const char *accept);

/*
 * Renders the sum of n workers' records plus p into out: Prometheus text format 0.0.4, or OpenMetrics 1.0
 * (om: counter families named without _total, "# EOF" at the end). Returns 0 or PTC_ENOMEM.
 */
int ptc_metrics_render(struct evbuffer *out, const ptc_metrics_source_t *src, size_t n, const ptc_metrics_process_t *p,
                       bool om) PTC_WARN_UNUSED;

/*
 * Writes v as a label value (without the quotes) into out (cap bytes, NUL-terminated when cap > 0): '\' '"' and
 * LF escaped as the exposition formats want, invalid UTF-8 replaced by U+FFFD. Returns the length written (cut at
 * a character boundary when it does not fit).
 */
size_t ptc_metrics_escape_label(char *out, size_t cap, ptc_iovec_t v);

/* The go-grpc-prometheus (Go codes.Code) name of a gRPC status: "OK", "Canceled", …; "Unknown" out of range. */
const char *ptc_grpc_code_name(int code);

#endif
