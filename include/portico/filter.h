/*
 * The request pipeline: what happens to a request head between the adapter and the call (DESIGN.md,
 * "Filters"). Each configuration snapshot builds, once, one chain of filters per route (and one for
 * requests that match no route); the route is matched once, before its chain runs. A filter is a small
 * vtable over its own immutable configuration:
 *
 *   on_request   decides on the request head: continue (possibly after adding, replacing or removing
 *                request headers through the context), or answer locally (a gRPC error in the caller's
 *                protocol, or a plain HTTP answer) and stop the chain;
 *   on_response  edits the response head on its way to the client;
 *   on_trailers  edits the trailers (the gRPC-Web trailer frame, or HTTP/2 trailers for native gRPC).
 *
 * The chain of a route, in order: cors (preflights answered, origins checked), health, http_headers
 * ($httpHeaders merged), grpc (method and content type), request_id, trace, route (no route:
 * UNIMPLEMENTED), headers (the global rules, then the route's), jwt. A route with native_filters false
 * skips the filters after route for native gRPC clients (request id and trace context still apply). Filters are pure functions of (snapshot,
 * request head) where they can be, so they are tested without sockets (tests/unit/filter/pipeline.c).
 * Every answer a filter makes is a well-formed response with the CORS fields the request earned.
 */
#ifndef PORTICO_FILTER_H
#define PORTICO_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/codec.h"
#include "portico/common.h"
#include "portico/config.h"
#include "portico/access_log.h"
#include "portico/cors.h"
#include "portico/metrics.h"
#include "portico/stats.h"

typedef struct st_ptc_worker_t ptc_worker_t;
typedef struct st_ptc_snapshot_t ptc_snapshot_t;
typedef struct st_ptc_request_t ptc_request_t;
typedef struct st_ptc_downstream_t ptc_downstream_t;
typedef struct st_ptc_filter_t ptc_filter_t;
typedef struct st_ptc_filter_ctx_t ptc_filter_ctx_t;
typedef struct st_ptc_call_info_t ptc_call_info_t;
typedef struct st_ptc_template_t ptc_template_t;

/* Header fields a filter may add to a request, beyond what the client sent. */
#define PTC_FILTER_MAX_ADDED_HEADERS 64
#define PTC_REQUEST_ID_MAX 128

typedef enum { PTC_FILTER_CONTINUE, PTC_FILTER_STOP } ptc_filter_action_t;

/* A list of header fields being edited (a response head, trailers). Values point into storage that
 * lives until the list is sent; ptc_filter_fields_* manage it. */
typedef struct st_ptc_filter_fields_t {
    ptc_header_t *fields;
    size_t n, cap;
    char *arena; /* storage for values made by edits */
    size_t arena_used, arena_cap;
} ptc_filter_fields_t;

typedef struct st_ptc_filter_type_t {
    const char *name;
    ptc_filter_action_t (*on_request)(const ptc_filter_t *f, ptc_filter_ctx_t *ctx);
    /* NULL when the filter does not act on responses */
    void (*on_response)(const ptc_filter_t *f, const ptc_call_info_t *info, ptc_filter_fields_t *head);
    void (*on_trailers)(const ptc_filter_t *f, const ptc_call_info_t *info, ptc_filter_fields_t *trailers);
    void (*dispose)(void *conf);
} ptc_filter_type_t;

struct st_ptc_filter_t {
    const ptc_filter_type_t *type;
    void *conf; /* owned by the filter (type->dispose), part of the snapshot */
};

typedef struct st_ptc_filter_chain_t {
    ptc_filter_t *filters;
    size_t n;
    bool has_response;   /* some filter has on_response or on_trailers */
    size_t route_filters; /* index of the route filter: the route's own filters follow it */
    size_t extra_fields; /* how many fields the response filters may add to a head or trailers */
    size_t num_capture;        /* request headers the response templates read (%REQ(name)%) */
    const ptc_iovec_t *capture; /* their names */
} ptc_filter_chain_t;

typedef struct st_ptc_jwt_provider_t ptc_jwt_provider_t; /* a JWT provider with its keys, per snapshot (auth.c) */

/* The chains of one snapshot: routes[i] for config.routes[i], and one for requests without a route. */
typedef struct st_ptc_pipeline_t {
    ptc_filter_chain_t *routes;
    size_t num_routes;
    ptc_filter_chain_t noroute;
    ptc_jwt_provider_t *providers; /* per config.jwt_providers entry */
    size_t num_providers;
} ptc_pipeline_t;

/* What a snapshot is built from besides its configuration: documents the control thread fetched. */
typedef struct st_ptc_snapshot_inputs_t {
    /* The last good JWKS fetched from url, or NULL (never fetched, or expired). */
    const char *(*remote_jwks)(void *arg, const char *url, size_t *len);
    void *arg;
    /* The snapshot in service, whose shared upstream state (health, ejections) the new one takes over for the
     * upstreams and endpoints that stay; NULL: none (start-up). */
    const struct st_ptc_snapshot_t *prev;
} ptc_snapshot_inputs_t;

/*
 * Builds the chains for cfg (reading the providers' JWKS files, taking their remote key sets from in,
 * which may be NULL). Returns 0, or PTC_ECONFIG / PTC_ENOMEM with what is wrong in err.
 */
int ptc_pipeline_new(ptc_pipeline_t **out, const ptc_config_t *cfg, const ptc_snapshot_inputs_t *in, char *err,
                     size_t errlen) PTC_WARN_UNUSED;
void ptc_pipeline_free(ptc_pipeline_t *p);

/*
 * What a call keeps of its request after the policy step, for its log lines and for the response side
 * of the chain: ids, names, and the request values the response templates read. Lives in the call.
 */
struct st_ptc_call_info_t {
    const ptc_filter_chain_t *chain; /* of the call's snapshot, which the call pins */
    const ptc_route_config_t *route;
    const char *upstream;            /* name, in the snapshot */
    char peer[64];                   /* the client's "ip:port" */
    char request_id[PTC_REQUEST_ID_MAX + 1]; /* "" when request ids are off */
    char trace_id[33];               /* hex; "" when trace context is off */
    char span_id[17];                /* the gateway's span */
    struct st_ptc_jwt_t *jwt;        /* the verified token, or NULL; one reference, owned */
    ptc_header_t *captured;          /* chain->capture's values, or absent */
    size_t num_captured;
    char *mem;                       /* what captured points into */
    ptc_method_stats_t *method;      /* the worker's metrics entry of a routed path; NULL without a route or worker */
    /* for the access log (only when the snapshot has one): the Origin as sent (owned, NUL-terminated, at most
     * PTC_ACCESS_LOG_ORIGIN_MAX - 1 bytes; NULL when none came), and the request and response fields its template
     * reads. Allocated rather than inline: every call is zeroed when it is made, and this keeps it small. */
    char *origin;
    ptc_access_capture_t log_req, log_resp;
};

/* Frees what info owns. */
void ptc_call_info_dispose(ptc_call_info_t *info);

/* ---- built by the pipeline (one file per filter) ---- */

int ptc__jwt_providers_new(ptc_jwt_provider_t **out, const ptc_config_t *cfg, const ptc_snapshot_inputs_t *in, char *err,
                           size_t errlen) PTC_WARN_UNUSED;
void ptc__jwt_providers_free(ptc_jwt_provider_t *ps, size_t n);
int ptc__auth_filter_new(void **out, const ptc_jwt_requirement_config_t *req, const ptc_jwt_provider_t *providers, char *err,
                         size_t errlen) PTC_WARN_UNUSED;
int ptc__headers_filter_new(void **out, size_t *added, const ptc_header_rules_config_t *global, const ptc_header_rules_config_t *route,
                            char *err, size_t errlen) PTC_WARN_UNUSED;
extern const ptc_filter_type_t ptc_request_id_filter, ptc_trace_filter, ptc_headers_filter, ptc_auth_filter;

/* What the pipeline decided about a Connect request (src/connect/request.c), for the call. */
typedef struct st_ptc_connect_req_t {
    bool get;                /* a unary GET: message is the request, the body is empty */
    ptc_iovec_t message;     /* GET: the decoded message (in the context's storage) */
    bool compressed;         /* the messages are gzip: forwarded as compressed frames with grpc-encoding gzip */
    bool accept_gzip;        /* the client reads gzip responses: its accept-encoding (streams: connect-accept-encoding)
                              * accepts gzip, or, without that header, its request named gzip (connectrpc.com/docs/protocol) */
    bool has_length;         /* unary POST: the body's length is known (content-length) */
    uint64_t length;
    bool has_timeout;        /* connect-timeout-ms */
    uint64_t timeout_ms;
} ptc_connect_req_t;

/* One request going through a chain (on the stack of the policy step). */
struct st_ptc_filter_ctx_t {
    ptc_worker_t *worker;
    const ptc_snapshot_t *snap;
    const ptc_route_config_t *route; /* NULL: no route matched */
    const ptc_filter_chain_t *chain;
    ptc_request_t *req;              /* headers may be edited (room for PTC_FILTER_MAX_ADDED_HEADERS more) */
    size_t headers_cap;
    ptc_downstream_t *ds;
    struct st_ptc_http_headers_param_t **hparam;
    ptc_iovec_t path;   /* without the query */
    ptc_iovec_t origin; /* trimmed Origin, or empty */
    ptc_ctype_t ct;     /* set by the grpc filter (or, for an early answer, ptc_filter_protocol) */
    bool native;        /* native gRPC (application/grpc) */
    ptc_connect_req_t connect; /* ct is a Connect kind */
    ptc_call_info_t *info;
    uint64_t start_us;  /* monotonic: when the request head was complete */
    char *mem;          /* storage for header values filters make (freed after the policy step): blocks */
    size_t mem_used, mem_cap;
    char *inline_mem;      /* the first values go here, without a malloc: the caller's (stack) space, not zeroed */
    size_t inline_cap, inline_used;
};

/*
 * Runs the chain of ctx->route (or the no-route chain) on a complete request head. Returns
 * PTC_FILTER_CONTINUE when the request is to become a call (ctx->ct says how), or PTC_FILTER_STOP when
 * a filter answered it. ptc_filter_ctx_dispose() afterwards.
 */
ptc_filter_action_t ptc_pipeline_run(ptc_filter_ctx_t *ctx);
void ptc_filter_ctx_dispose(ptc_filter_ctx_t *ctx);

/* Response side, called by the call before it sends its head / trailers. */
void ptc_pipeline_response(const ptc_call_info_t *info, ptc_filter_fields_t *head);
void ptc_pipeline_trailers(const ptc_call_info_t *info, ptc_filter_fields_t *trailers);

/* ---- for filters ---- */

/* Counts an outcome in the worker's ptc_filter_stats_t (when there is a worker: unit tests run without). */
#define PTC_FILTER_STAT(ctx, field)                                                                                                \
    do {                                                                                                                           \
        if ((ctx)->worker != NULL)                                                                                                 \
            PTC_STAT_INC(ptc_filter_stats_of((ctx)->worker)->field);                                                               \
    } while (0)
struct st_ptc_filter_stats_t *ptc_filter_stats_of(ptc_worker_t *w);

/* n bytes of the request's storage (freed after the policy step); NULL when out of memory. */
void *ptc_filter_alloc(ptc_filter_ctx_t *ctx, size_t n);
/* Copies bytes into the request's storage; NULL when out of memory. */
char *ptc_filter_strdup(ptc_filter_ctx_t *ctx, ptc_iovec_t s);
/* The first request header of that (lower-case) name, or NULL. */
const ptc_header_t *ptc_filter_find(const ptc_filter_ctx_t *ctx, ptc_iovec_t name);
/* Replaces every field of that name with one (value copied), or appends it. 0, or PTC_ENOMEM/PTC_ETOOBIG. */
int ptc_filter_set(ptc_filter_ctx_t *ctx, ptc_iovec_t name, ptc_iovec_t value) PTC_WARN_UNUSED;
int ptc_filter_add(ptc_filter_ctx_t *ctx, ptc_iovec_t name, ptc_iovec_t value) PTC_WARN_UNUSED;
void ptc_filter_remove(ptc_filter_ctx_t *ctx, ptc_iovec_t name);
void ptc_filter_rename(ptc_filter_ctx_t *ctx, ptc_iovec_t name, ptc_iovec_t to);

/*
 * The protocol the request speaks, for an answer made before the grpc filter decided it: Connect (its content
 * types, or a GET with Connect parameters), native gRPC (where allowed), else gRPC-Web.
 */
ptc_ctype_t ptc_filter_protocol(ptc_filter_ctx_t *ctx);
/*
 * Answers with a gateway-made gRPC error in the caller's protocol (ptc_error_reply_init: gRPC-Web or native
 * gRPC trailers-only, a Connect error), with the CORS fields and the request id; logs it. Returns
 * PTC_FILTER_STOP.
 */
ptc_filter_action_t ptc_filter_answer_grpc(ptc_filter_ctx_t *ctx, int status, const char *fmt, ...) PTC_PRINTF(3, 4);
/*
 * Refuses the request with an HTTP status (403, 405, 415, …) in the caller's protocol: plain text for
 * gRPC-Web and gRPC clients, a Connect error (with that grpc status's code) for Connect clients; fields are
 * added (Allow, …). Logs nothing (the caller does). Returns PTC_FILTER_STOP.
 */
ptc_filter_action_t ptc_filter_refuse(ptc_filter_ctx_t *ctx, int http_status, int grpc_status, const ptc_header_t *fields, size_t n,
                                      const char *fmt, ...) PTC_PRINTF(6, 7);

/* The Connect part of the grpc filter (src/connect/request.c): true when the request is Connect's, with
 * *action what to do (continue into a call, or stop: it was answered). */
bool ptc__connect_on_request(ptc_filter_ctx_t *ctx, ptc_filter_action_t *action);
/* Answers with a plain HTTP response (not gRPC): status, fields, optional text body. Returns PTC_FILTER_STOP. */
ptc_filter_action_t ptc_filter_answer_http(ptc_filter_ctx_t *ctx, int status, const ptc_header_t *fields, size_t n,
                                           const char *body);

/* Field lists (response heads and trailers). */
int ptc_filter_fields_set(ptc_filter_fields_t *l, ptc_iovec_t name, ptc_iovec_t value, bool replace) PTC_WARN_UNUSED;
/* As ptc_filter_fields_set, without copying value: for values that outlive the list (the call's request id). */
int ptc_filter_fields_put(ptc_filter_fields_t *l, ptc_iovec_t name, ptc_iovec_t value, bool replace) PTC_WARN_UNUSED;
void ptc_filter_fields_remove(ptc_filter_fields_t *l, ptc_iovec_t name);
void ptc_filter_fields_rename(ptc_filter_fields_t *l, ptc_iovec_t name, ptc_iovec_t to);
const ptc_header_t *ptc_filter_fields_find(const ptc_filter_fields_t *l, ptc_iovec_t name);
void ptc_filter_fields_dispose(ptc_filter_fields_t *l);

#endif
