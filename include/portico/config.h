/*
 * Configuration: plain structs loaded from YAML (libyaml), validated at start-up with errors that name
 * file, line and key, or built from the embedded default plus command-line flags. A loaded config is
 * immutable and shared read-only by every worker.
 */
#ifndef PORTICO_CONFIG_H
#define PORTICO_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "portico/common.h"
#include "portico/cors.h"
#include "portico/log.h"

#define PTC_CONFIG_MAX_NAME 64
#define PTC_CONFIG_MAX_HEALTH_SERVICE 200 /* bytes of health_check.service (it goes into a small request message) */
/* What ptc_config_emit writes instead of a secret with PTC_CONFIG_EMIT_REDACT; the loader refuses it as a secret. */
#define PTC_CONFIG_REDACTED "<redacted>"

/* host:port as written; host may be a name, an IPv4 address, or a bracketed IPv6 address. */
typedef struct st_ptc_hostport_t {
    char *host; /* without brackets */
    uint16_t port;
} ptc_hostport_t;

/* A certificate chain and its private key (PEM files; paths already resolved against the config file's directory). */
typedef struct st_ptc_tls_keypair_config_t {
    char *cert; /* leaf first, then intermediates */
    char *key;
} ptc_tls_keypair_config_t;

typedef enum { PTC_TLS_CLIENT_AUTH_NONE, PTC_TLS_CLIENT_AUTH_OPTIONAL, PTC_TLS_CLIENT_AUTH_REQUIRED } ptc_tls_client_auth_t;
typedef enum { PTC_TLS_1_2, PTC_TLS_1_3 } ptc_tls_version_t;

/* TLS on a listener. */
typedef struct st_ptc_listener_tls_config_t {
    ptc_tls_keypair_config_t *certs; /* [0]: cert/key, the default; then `certificates`, chosen by SNI */
    size_t num_certs;                /* >= 1 once valid */
    ptc_tls_client_auth_t client_auth;
    char *client_ca; /* CA file for client certificates; required unless client_auth is none */
    ptc_tls_version_t min_version;
} ptc_listener_tls_config_t;

typedef struct st_ptc_listener_config_t {
    ptc_hostport_t addr;
    ptc_listener_tls_config_t *tls; /* NULL: cleartext */
} ptc_listener_config_t;

/* TLS to an upstream (HTTP/2 over TLS, ALPN h2). */
typedef struct st_ptc_upstream_tls_config_t {
    char *ca;                  /* CA file; NULL = the system store */
    char *server_name;         /* SNI and verification name; NULL = authority, else the endpoint host */
    char *cert;                /* client certificate chain (mTLS); NULL = none */
    char *key;                 /* its key; set iff cert is */
    bool insecure_skip_verify; /* no verification at all (development only; warned about at start-up) */
} ptc_upstream_tls_config_t;

/* How a pool spreads calls over its endpoints. */
typedef enum {
    PTC_BALANCE_ROUND_ROBIN,   /* the ready connections in turn (the default) */
    PTC_BALANCE_LEAST_REQUEST, /* the endpoint with the fewest streams open (in this worker); ties in turn */
} ptc_balancing_t;

/* Active health checks: grpc.health.v1.Health/Check over the pool's own connections (src/upstream/monitor.c). */
typedef struct st_ptc_health_check_config_t {
    bool enabled;                 /* a health_check section was given (false: no active checks; the rest is ignored) */
    char *service;                /* HealthCheckRequest.service; "" (the default) asks about the server as a whole */
    uint64_t interval_ms;         /* between two checks of an endpoint; default 5 s; > 0 */
    uint64_t timeout_ms;          /* a check without an answer by then failed; default 1 s; > 0 */
    uint32_t healthy_threshold;   /* consecutive successes that make an unhealthy endpoint healthy; default 2; >= 1 */
    uint32_t unhealthy_threshold; /* consecutive failures that make a healthy endpoint unhealthy; default 3; >= 1 */
} ptc_health_check_config_t;

/* Passive outlier ejection: an endpoint that fails that many times in a row takes no calls for a while. */
typedef struct st_ptc_outlier_config_t {
    bool enabled;                  /* an outlier section was given (false: no ejection; the rest is ignored) */
    uint32_t consecutive_failures; /* failed connection attempts or grpc-status 14 answers in a row; default 5; >= 1 */
    uint64_t ejection_ms;          /* how long an ejected endpoint takes no calls; default 30 s; > 0 */
} ptc_outlier_config_t;

typedef struct st_ptc_upstream_config_t {
    char *name;
    ptc_hostport_t *endpoints; /* balanced over (see balancing) */
    size_t num_endpoints;
    char *authority;             /* :authority sent upstream; NULL = the request's Host */
    uint64_t connect_timeout_ms; /* TCP connect + HTTP/2 SETTINGS exchange */
    uint32_t max_connections;    /* per worker */
    uint32_t max_pending;        /* calls waiting for a connection or a free stream, per worker */
    uint64_t backoff_initial_ms; /* reconnect backoff after a failed connect, doubling up to max */
    uint64_t backoff_max_ms;
    ptc_upstream_tls_config_t *tls; /* NULL: cleartext HTTP/2 (h2c) */
    /* How calls are spread and endpoints judged; a change keeps the pool and its connections. */
    ptc_balancing_t balancing;
    uint64_t dns_refresh_ms; /* host names are resolved again this often; 0 = only when connecting; default 30 s */
    ptc_health_check_config_t health_check;
    ptc_outlier_config_t outlier;
} ptc_upstream_config_t;

typedef enum { PTC_ROUTE_PREFIX, PTC_ROUTE_EXACT } ptc_route_match_t;

/* ---- the request pipeline's filters ---- */

/* A header rule: `{add|set: NAME, value: TEMPLATE}`, `{remove: NAME}`, `{rename: NAME, to: NAME}`. */
typedef enum { PTC_HEADER_ADD, PTC_HEADER_SET, PTC_HEADER_REMOVE, PTC_HEADER_RENAME } ptc_header_op_t;

typedef struct st_ptc_header_rule_config_t {
    ptc_header_op_t op;
    char *name;  /* lower case; never a pseudo-header or a hop-by-hop header */
    char *value; /* ADD, SET: a template (literal text and %VARIABLES%, see include/portico/template.h) */
    char *to;    /* RENAME: the new name */
} ptc_header_rule_config_t;

/* Rules on the request sent upstream, on the response head sent to the client, and on its trailers. */
typedef struct st_ptc_header_rules_config_t {
    ptc_header_rule_config_t *request, *response, *trailers;
    size_t num_request, num_response, num_trailers;
} ptc_header_rules_config_t;

typedef struct st_ptc_request_id_config_t {
    bool enabled;        /* default true */
    char *header;        /* default "x-request-id" */
    uint32_t max_length; /* an incoming id longer than this (or with other characters) is replaced; default 128 */
    bool trust_incoming; /* keep a valid incoming id (default true); false: always generate */
} ptc_request_id_config_t;

typedef struct st_ptc_trace_config_t {
    bool enabled; /* W3C traceparent/tracestate propagation with a span of the gateway's own; default true */
    bool sampled; /* the sampled flag of the traces the gateway starts; default false */
} ptc_trace_config_t;

/* Where a provider finds the token: `Authorization: Bearer T` by default. */
typedef enum { PTC_JWT_FROM_HEADER, PTC_JWT_FROM_COOKIE, PTC_JWT_FROM_QUERY } ptc_jwt_from_t;

typedef struct st_ptc_jwt_claim_header_t {
    char *claim;  /* dotted path */
    char *header; /* the upstream header it is copied to (replacing whatever the client sent) */
} ptc_jwt_claim_header_t;

typedef struct st_ptc_jwt_provider_config_t {
    char *name;
    char *issuer;     /* required "iss"; NULL: not checked */
    char **audiences; /* "aud" must hold one of them; none: not checked */
    size_t num_audiences;
    ptc_jwt_from_t from;
    char *from_name;    /* header name (lower case), cookie name or query parameter; default "authorization" */
    char *from_prefix;  /* HEADER: a prefix the value must start with (case-insensitive); default "Bearer " (with the
                         * default `from`; a `from` without a prefix: NULL, the whole value is the token) */
    char *jwks_file;    /* a local JWKS (resolved like TLS paths, checked readable while loading); NULL: none */
    char *jwks_url;     /* an https:// JWKS fetched by the gateway; NULL: none (one of file or url is required) */
    char *jwks_ca;      /* CA file for jwks_url; NULL: the system store */
    uint64_t jwks_cache_ms;  /* how long fetched keys are used when the response says nothing; default 10 min */
    uint64_t clock_skew_ms;  /* leeway for exp and nbf; default 60 s */
    uint32_t max_token_size; /* default 8 KiB */
    ptc_jwt_claim_header_t *claim_headers;
    size_t num_claim_headers;
    char *forward_payload; /* a header that carries the verified payload (base64url JSON) upstream; NULL: none */
    bool strip_token;      /* remove the token (its header, cookie or query parameter) before forwarding */
} ptc_jwt_provider_config_t;

typedef struct st_ptc_jwt_claim_requirement_t {
    char *claim; /* dotted path */
    char *value; /* the claim equals it, or is an array holding it (or a space-separated string such as scope) */
} ptc_jwt_claim_requirement_t;

/* What a route (or every route, as jwt.default) requires. */
typedef struct st_ptc_jwt_requirement_config_t {
    bool set;                 /* given in the file (a route's own replaces jwt.default) */
    bool disabled;            /* `jwt: disabled`: no check */
    size_t *providers;        /* indexes into ptc_config_t.jwt_providers: one of them must accept the token */
    size_t num_providers;     /* 0 with !disabled: no check either */
    bool optional;            /* a request without a token passes; a token that is there must be valid */
    ptc_jwt_claim_requirement_t *claims; /* all must hold, else PERMISSION_DENIED (7) */
    size_t num_claims;
} ptc_jwt_requirement_config_t;

typedef struct st_ptc_route_config_t {
    ptc_route_match_t match;
    char *path;              /* the prefix or the exact path */
    size_t upstream_index;   /* index into ptc_config_t.upstreams */
    ptc_cors_config_t *cors; /* per-route CORS policy replacing the global one; NULL = global */
    ptc_header_rules_config_t headers; /* run after the global rules */
    ptc_jwt_requirement_config_t jwt;  /* jwt.set false: jwt.default applies */
    bool native_filters;     /* the filters (ids, trace, header rules, JWT) run for native gRPC clients too; default true */
    char *get_cache_control; /* Cache-Control of successful Connect GET responses (side-effect-free methods); NULL = none */
} ptc_route_config_t;

typedef struct st_ptc_limits_config_t {
    uint32_t max_message_size;   /* per gRPC message, both directions; default 4 MiB */
    uint32_t max_header_size;    /* request head bytes (HTTP/1.1 request line + headers); over → 431 */
    uint32_t max_headers;        /* header fields per request; over → 431 */
    uint32_t call_buffer_size;   /* bytes buffered per call per direction before backpressure */
    uint32_t stream_window_size; /* HTTP/2 stream window offered to upstreams */
    uint32_t max_connections;    /* downstream connections per worker; over → closed at accept */
    uint32_t max_connections_total;  /* downstream connections of all workers together; 0 = no cap (default) */
    uint32_t max_concurrent_streams; /* HTTP/2 streams a browser-side connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS) */
} ptc_limits_config_t;

/* HTTP Content-Encoding of gRPC-Web responses (not native gRPC: it has grpc-encoding). */
typedef struct st_ptc_compression_config_t {
    bool gzip;         /* answer `Accept-Encoding: gzip` with gzip; default false */
    uint32_t min_size; /* compress only when the first message is at least this big; default 1 KiB */
    uint32_t level;    /* zlib level 1..9; default 5 */
} ptc_compression_config_t;

/* The WebSocket transport (improbable-eng's grpc-websockets: client and bidi streaming from browsers). */
typedef struct st_ptc_websocket_config_t {
    bool enabled;              /* answer WebSocket upgrades on routed paths; default true */
    uint64_t ping_interval_ms; /* ping an idle WebSocket this often, close it when two go unanswered; 0 = never
                                * (default 30 s) */
} ptc_websocket_config_t;

typedef struct st_ptc_timeouts_config_t {
    uint64_t max_grpc_timeout_ms;     /* grpc-timeout is clamped to this; 0 = no clamp */
    uint64_t default_grpc_timeout_ms; /* applied when a call has none; 0 = none */
    uint64_t idle_ms;                 /* keep-alive connection with no call in progress */
    uint64_t header_read_ms;          /* from first byte of a request to the end of its head */
    uint64_t drain_ms;                /* SIGTERM: wait this long for calls in flight */
    uint64_t drain_delay_ms;          /* SIGTERM: the listeners stay open this long first (readiness is 503 already) */
} ptc_timeouts_config_t;

/* The admin HTTP API (read and edit the live configuration). */
typedef struct st_ptc_admin_config_t {
    ptc_hostport_t *address; /* where the admin API listens; NULL = no admin listener (the default) */
    char *token_file;        /* file the token was read from (resolved like TLS paths); NULL = inline token or none */
    char *token;             /* bearer token: token_file's contents, surrounding whitespace trimmed, or the inline
                              * admin.token; NULL = none. A secret: never logged, redacted by ptc_config_emit */
} ptc_admin_config_t;

/* Prometheus metrics on the admin listener (GET /metrics). */
typedef struct st_ptc_metrics_config_t {
    uint32_t max_methods; /* method paths counted one by one per worker (the rest as "other"); default 1000 */
} ptc_metrics_config_t;

#define PTC_ACCESS_LOG_STDERR "-"
#define PTC_ACCESS_LOG_JSON "json"

/* One line per call and per locally answered request (include/portico/access_log.h). */
typedef struct st_ptc_access_log_config_t {
    char *path;           /* NULL: no access log (the default); "-": stderr; else a file name (resolved like pid_file) */
    char *format;         /* "json" (the default), or a template (include/portico/template.h, with the log variables) */
    uint32_t buffer_size; /* bytes of lines waiting for the writer, per worker; a line that does not fit is dropped */
} ptc_access_log_config_t;

typedef struct st_ptc_config_t {
    char *source;   /* file name, or "<default>"; only used in messages */
    char *base_dir; /* directory relative file names were resolved against: "" (the working directory) or a path
                     * ending in '/'; the emitter writes file names under it relative to it again */
    ptc_listener_config_t *listeners;
    size_t num_listeners;
    ptc_upstream_config_t *upstreams;
    size_t num_upstreams;
    ptc_route_config_t *routes; /* in match order: exact routes first, then prefixes longest first */
    size_t num_routes;
    ptc_limits_config_t limits;
    ptc_timeouts_config_t timeouts;
    ptc_compression_config_t compression;
    ptc_websocket_config_t websocket;
    ptc_cors_config_t cors; /* global CORS policy (cors.enabled false: none, no origin allowed) */
    char *health_path;
    uint32_t workers; /* 0 = number of cores */
    ptc_log_level_t log_level;
    ptc_admin_config_t admin;
    ptc_request_id_config_t request_id;
    ptc_trace_config_t trace;
    ptc_header_rules_config_t headers; /* global header rules, before a route's own */
    ptc_jwt_provider_config_t *jwt_providers;
    size_t num_jwt_providers;
    ptc_jwt_requirement_config_t jwt_default; /* for routes without a jwt section; default: none */
    char *pid_file; /* write the gateway's process id here (resolved like TLS paths); NULL = none (the default) */
    bool watch;     /* watch the configuration file and reload it when it changes; default true */
    ptc_metrics_config_t metrics;
    ptc_access_log_config_t access_log;
} ptc_config_t;

/*
 * Fills cfg with the embedded default: listen 127.0.0.1:8080, one upstream "default" at
 * 127.0.0.1:50051, a catch-all route to it, default limits and timeouts. Returns 0 or PTC_ENOMEM.
 */
int ptc_config_init_default(ptc_config_t *cfg) PTC_WARN_UNUSED;

/*
 * Loads a YAML file over cfg (normally fresh from ptc_config_init_default; a zeroed cfg is given the defaults
 * first). The format is described at the top of src/config/config.c. On error returns PTC_ECONFIG and writes
 * a message of the form "FILE:LINE: KEY: what is wrong" into err (PTC_EIO with "FILE: cannot open: REASON"
 * when the file cannot be read; PTC_ENOMEM with "FILE: out of memory"); cfg is then left exactly as it was,
 * so it can still be used or disposed. On success the previous contents are released.
 */
int ptc_config_load_file(ptc_config_t *cfg, const char *path, char *err, size_t errlen) PTC_WARN_UNUSED;
/* Same for YAML text in memory; name is used in messages, and relative file names are relative to its directory. */
int ptc_config_load_string(ptc_config_t *cfg, const char *name, const char *yaml, size_t len, char *err,
                           size_t errlen) PTC_WARN_UNUSED;
/*
 * Same, but relative file names (TLS files, admin.token_file, pid_file, jwks_file, jwks_ca) are resolved against base_dir (a directory,
 * with or without a trailing '/'; NULL or "" = the working directory) instead of the directory of name, which is
 * then only used in messages (e.g. "PUT /config"). JSON is YAML too, so this also loads JSON text.
 */
int ptc_config_load_string_in(ptc_config_t *cfg, const char *name, const char *base_dir, const char *yaml, size_t len, char *err,
                              size_t errlen) PTC_WARN_UNUSED;

/*
 * Parses "HOST:PORT" / "[V6]:PORT" (port 1..65535, decimal); returns 0 or PTC_EINVAL (out untouched) or
 * PTC_ENOMEM. On success out->host is heap-allocated: release it with ptc_hostport_dispose.
 */
int ptc_hostport_parse(const char *s, ptc_hostport_t *out) PTC_WARN_UNUSED;
void ptc_hostport_dispose(ptc_hostport_t *hp);
/* Same host (byte-wise, as written) and port; two NULLs are equal, NULL and an address are not. */
bool ptc_hostport_eq(const ptc_hostport_t *a, const ptc_hostport_t *b);
/*
 * Parses a duration: "250ms", "3s", "1.5s", "2m", "1h", or a bare number of seconds ("0", "0.5"); returns 0 or
 * PTC_EINVAL (garbage, uint64 overflow, or finer than a millisecond; *out_ms untouched).
 */
int ptc_duration_parse(const char *s, uint64_t *out_ms) PTC_WARN_UNUSED;
/*
 * Parses a size: "4194304", "64KiB", "4MiB", "1GiB" (also k/K/KB, M/MB, G/GB as powers of 1024); returns 0 or
 * PTC_EINVAL (garbage or uint64 overflow; *out untouched).
 */
int ptc_size_parse(const char *s, uint64_t *out) PTC_WARN_UNUSED;

/*
 * Replace the listeners / one upstream's endpoints (command-line --listen / --upstream). The addresses are
 * copied. Return 0, PTC_EINVAL (n == 0 or no such upstream; cfg unchanged) or PTC_ENOMEM (cfg unchanged).
 */
int ptc_config_set_listeners(ptc_config_t *cfg, const ptc_hostport_t *addrs, size_t n) PTC_WARN_UNUSED;
int ptc_config_set_upstream_endpoints(ptc_config_t *cfg, size_t upstream_index, const ptc_hostport_t *addrs,
                                      size_t n) PTC_WARN_UNUSED;
/*
 * Makes every listener a TLS listener with this certificate chain and key (command-line --tls-cert / --tls-key;
 * paths are used as given). A listener that already has TLS settings keeps them and gets this pair as its
 * default certificate. Returns 0 or PTC_ENOMEM (cfg unchanged).
 */
int ptc_config_set_listener_cert(ptc_config_t *cfg, const char *cert, const char *key) PTC_WARN_UNUSED;
/*
 * Sets the admin API's address (command-line --admin; copied); NULL removes the admin listener. The token settings
 * are left alone. Returns 0 or PTC_ENOMEM (cfg unchanged).
 */
int ptc_config_set_admin_address(ptc_config_t *cfg, const ptc_hostport_t *addr) PTC_WARN_UNUSED;
/* True when at least one listener or upstream uses TLS. */
bool ptc_config_uses_tls(const ptc_config_t *cfg);

/*
 * Checks cross-field rules (routes name existing upstreams and are in match order, sizes sane, at least one
 * listener, upstream and endpoint). Returns 0 or PTC_ECONFIG with "SOURCE: KEY: what is wrong" in err.
 * ptc_config_load_* run it before accepting a file; call it again after ptc_config_set_*.
 */
int ptc_config_validate(const ptc_config_t *cfg, char *err, size_t errlen) PTC_WARN_UNUSED;

/* Finds the route for a request path (query already stripped): the first in match order that matches, or NULL. */
const ptc_route_config_t *ptc_config_match_route(const ptc_config_t *cfg, ptc_iovec_t path);
/* Finds the upstream for a request path (query already stripped); returns its index or -1. */
int ptc_config_route(const ptc_config_t *cfg, ptc_iovec_t path);
/*
 * The CORS policy for a request: the route's own policy when it has one, otherwise the global one (also when
 * route is NULL, e.g. no route matched). Never NULL; a policy with enabled false allows no origin.
 */
const ptc_cors_config_t *ptc_config_cors_for(const ptc_config_t *cfg, const ptc_route_config_t *route);

/*
 * Appends an origin pattern (an exact origin, a `*.`-wildcard origin, `~REGEX`, or `*`; see
 * ptc_origin_pattern_parse) to the global CORS policy and enables it (command-line --allow-origin). Returns 0,
 * PTC_EINVAL with what is wrong in err (cfg unchanged), or PTC_ENOMEM (cfg unchanged).
 */
int ptc_config_add_allow_origin(ptc_config_t *cfg, const char *pattern, char *err, size_t errlen) PTC_WARN_UNUSED;

typedef enum { PTC_CONFIG_YAML, PTC_CONFIG_JSON } ptc_config_format_t;

#define PTC_CONFIG_EMIT_REDACT 0x1u /* write PTC_CONFIG_REDACTED instead of each secret (today: an inline admin.token) */

/*
 * Writes cfg as a configuration file: YAML (block style) or JSON (which the loader reads too). Loaded with the same
 * base directory (ptc_config_load_string_in(..., cfg->base_dir, ...)) over ptc_config_init_default, the text gives
 * back a config equal to cfg (ptc_config_eq). Every setting is written, defaults included, except what is unset by
 * default (authority, pid_file, admin, per-route CORS, header rules and JWT requirements, optional JWT provider
 * settings, jwt.default, the global CORS policy when none is configured). File
 * names under cfg->base_dir are written relative to it; the admin token is not written when it comes from
 * token_file (the file is the setting), an inline one is redacted with PTC_CONFIG_EMIT_REDACT.
 *
 * On success *out is a malloc'ed NUL-terminated text of *outlen bytes (outlen may be NULL), and 0 is returned.
 * Otherwise *out is not set and the return value is PTC_ENOMEM, or PTC_EINVAL when cfg holds what no file can
 * say: a string that is not UTF-8 (a file name given on the command line, say), a route to a missing upstream,
 * or a relative file name outside base_dir while the working directory cannot be found.
 */
int ptc_config_emit(const ptc_config_t *cfg, ptc_config_format_t fmt, unsigned flags, char **out, size_t *outlen) PTC_WARN_UNUSED;

/*
 * Deep copy of src into dst (uninitialised or disposed; written only on success), regexes recompiled. Returns 0 or
 * PTC_ENOMEM.
 */
int ptc_config_copy(ptc_config_t *dst, const ptc_config_t *src) PTC_WARN_UNUSED;

/*
 * Edits for the admin API; each leaves cfg as it was when it fails, and none can make a valid config invalid.
 *
 * ptc_config_remove_allow_origin removes every origin of the global CORS policy whose configured text is exactly
 * pattern; the policy stays enabled (with no origin left it allows none). Returns 0 or PTC_EINVAL (no such origin).
 *
 * ptc_config_set_route_upstream points routes[route_index] at the upstream of that name. Returns 0 or PTC_EINVAL with
 * what is wrong in err ("routes[3]: no such route (there are 2)", "routes[0].upstream: unknown upstream \"x\"").
 *
 * ptc_config_find_route finds the route with that match ("prefix" or "path", as in the file) and path, and
 * ptc_config_find_upstream the upstream of that name; both return its index or -1.
 */
int ptc_config_remove_allow_origin(ptc_config_t *cfg, const char *pattern) PTC_WARN_UNUSED;
int ptc_config_set_route_upstream(ptc_config_t *cfg, size_t route_index, const char *upstream_name, char *err,
                                  size_t errlen) PTC_WARN_UNUSED;
int ptc_config_find_route(const ptc_config_t *cfg, const char *match, const char *path);
int ptc_config_find_upstream(const ptc_config_t *cfg, const char *name);

/*
 * Comparisons, structural: the same values in the same order. File names are compared as resolved, never the
 * files' contents. ptc_upstream_config_same_transport compares how the upstream is reached: everything but the
 * endpoints, balancing, dns_refresh, health_check and outlier (the runtime keeps an upstream's connections when only
 * those changed); ptc_listener_config_eq the address and TLS settings;
 * ptc_config_eq everything but source and base_dir.
 */
bool ptc_listener_config_eq(const ptc_listener_config_t *a, const ptc_listener_config_t *b);
bool ptc_upstream_config_eq(const ptc_upstream_config_t *a, const ptc_upstream_config_t *b);
bool ptc_upstream_config_same_transport(const ptc_upstream_config_t *a, const ptc_upstream_config_t *b);
bool ptc_config_eq(const ptc_config_t *a, const ptc_config_t *b);

/*
 * Writes a one-line summary of what changed from old to next into buf (len bytes, always NUL-terminated when len > 0),
 * for the log line after a reload, e.g.
 *   listeners: +127.0.0.1:9090, -127.0.0.1:8081; upstreams: +extra, -old, echo endpoints +127.0.0.1:50052
 *   -127.0.0.1:50051; routes: /portico.test.Echo/ echo -> echo2; cors: +origin https://b.example;
 *   limits.max_header_size 16KiB -> 64KiB; log_level info -> debug
 * or "no changes" when ptc_config_eq(old, next); the filters' sections read "request_id off", "trace.sampled false ->
 * true", "headers: changed", "routes: /pkg.Svc/ headers changed, /pkg.Svc/ jwt changed", "jwt: +provider main,
 * -provider old, other changed, default changed". Listeners are matched by address, upstreams and JWT providers by
 * name (requirements compare the names of their providers), routes by match and path (exact ones written "path /a.B/C"). Secrets are never written ("admin.token changed"), control
 * characters are written as '?'. What does not fit is cut, at a UTF-8 character boundary, and ends in "…".
 * Returns the length written (excluding the NUL).
 */
size_t ptc_config_diff(const ptc_config_t *old, const ptc_config_t *next, char *buf, size_t len);

/* Frees everything cfg owns and zeroes it; safe on a zeroed or already disposed config. */
void ptc_config_dispose(ptc_config_t *cfg);

#endif
