/*
 * Private to src/config/: shared by config.c (defaults, parsers, validation, routing) and yaml.c
 * (the YAML loader). Not for use outside the config module.
 */
#ifndef PORTICO_CONFIG_INTERNAL_H
#define PORTICO_CONFIG_INTERNAL_H

#include "portico/config.h"

/* Defaults (see the format description at the top of src/config/config.c). */
#define PTC_CONFIG_MAX_CACHE_CONTROL 256 /* bytes of a route's get_cache_control */
#define PTC_CONFIG_DEFAULT_LISTEN_HOST "127.0.0.1"
#define PTC_CONFIG_DEFAULT_LISTEN_PORT 8080
#define PTC_CONFIG_DEFAULT_UPSTREAM_NAME "default"
#define PTC_CONFIG_DEFAULT_UPSTREAM_HOST "127.0.0.1"
#define PTC_CONFIG_DEFAULT_UPSTREAM_PORT 50051
#define PTC_CONFIG_DEFAULT_HEALTH_PATH "/healthz"
#define PTC_CONFIG_DEFAULT_REQUEST_ID_HEADER "x-request-id"
#define PTC_CONFIG_DEFAULT_JWT_HEADER "authorization"
#define PTC_CONFIG_DEFAULT_JWT_PREFIX "Bearer "

/* Bounds checked both by the loader (with a line number) and by ptc_config_validate. */
#define PTC_CONFIG_MAX_WORKERS 1024
#define PTC_CONFIG_MIN_STREAM_WINDOW 1024
#define PTC_CONFIG_MAX_STREAM_WINDOW 0x7fffffffu /* RFC 9113 §6.9.1: 2^31-1 */
#define PTC_CONFIG_MAX_CONCURRENT_STREAMS 65536u /* limits.max_concurrent_streams */
#define PTC_CONFIG_MAX_REQUEST_ID_LENGTH 128     /* PTC_REQUEST_ID_MAX (portico/filter.h), checked in config.c */
#define PTC_CONFIG_MIN_JWT_TOKEN_SIZE 256u
#define PTC_CONFIG_MAX_JWT_TOKEN_SIZE (1u << 20)
#define PTC_CONFIG_MAX_METHODS 65536               /* PTC_METRICS_MAX_METHODS (portico/metrics.h) */
#define PTC_CONFIG_MIN_ACCESS_LOG_BUFFER (16u << 10)
#define PTC_CONFIG_MAX_ACCESS_LOG_BUFFER (1u << 30)
#define PTC_CONFIG_DEFAULT_ACCESS_LOG_BUFFER (256u << 10)

/*
 * Parsers behind ptc_hostport_parse / ptc_duration_parse / ptc_size_parse. On failure they return PTC_EINVAL
 * and point *why at a fixed string saying what is wrong (for messages such as `invalid size "4XB": WHY`).
 */
int ptc__hostport_parse(const char *s, ptc_hostport_t *out, const char **why) PTC_WARN_UNUSED;
int ptc__duration_parse(const char *s, uint64_t *out_ms, const char **why) PTC_WARN_UNUSED;
int ptc__size_parse(const char *s, uint64_t *out, const char **why) PTC_WARN_UNUSED;

/*
 * The inverse of the parsers: the shortest exact text the loader reads back as the same value. Sizes use the
 * largest binary unit that divides them ("4MiB", "1000"), durations the largest of h, m, s, ms ("1h", "90s",
 * "250ms", "0s"). buf should have PTC__VALUE_SIZE bytes.
 */
#define PTC__VALUE_SIZE 32
void ptc__format_size(uint64_t v, char *buf, size_t len);
void ptc__format_duration(uint64_t ms, char *buf, size_t len);

/*
 * Scalar settings described once for comparison, diffs and the emitter (the loader has its own tables, with
 * bounds; the emitter's round-trip tests keep the two in step). Each table ends with a NULL name.
 */
typedef enum {
    PTC__FIELD_UINT32,   /* uint32_t, written as a decimal integer */
    PTC__FIELD_SIZE32,   /* uint32_t, written as a size */
    PTC__FIELD_DURATION, /* uint64_t milliseconds, written as a duration */
    PTC__FIELD_BOOL,     /* bool */
} ptc__field_kind_t;

typedef struct st_ptc__field_t {
    const char *name; /* the key in the file */
    ptc__field_kind_t kind;
    size_t offset;
} ptc__field_t;

extern const ptc__field_t ptc__limits_fields[];      /* in ptc_limits_config_t */
extern const ptc__field_t ptc__timeouts_fields[];    /* in ptc_timeouts_config_t */
extern const ptc__field_t ptc__compression_fields[]; /* in ptc_compression_config_t */
extern const ptc__field_t ptc__websocket_fields[];   /* in ptc_websocket_config_t */
extern const ptc__field_t ptc__upstream_fields[];    /* connect_timeout, max_connections, max_pending: in ptc_upstream_config_t */
extern const ptc__field_t ptc__backoff_fields[];     /* initial, max: in ptc_upstream_config_t too */
extern const ptc__field_t ptc__upstream_policy_fields[]; /* dns_refresh: in ptc_upstream_config_t (not transport) */
extern const ptc__field_t ptc__health_check_fields[];    /* interval, timeout, thresholds: in ptc_health_check_config_t */
extern const ptc__field_t ptc__outlier_fields[];         /* consecutive_failures, ejection: in ptc_outlier_config_t */
extern const ptc__field_t ptc__request_id_fields[];  /* max_length, trust_incoming: in ptc_request_id_config_t */
extern const ptc__field_t ptc__trace_fields[];       /* sampled: in ptc_trace_config_t */
extern const ptc__field_t ptc__jwt_provider_fields[]; /* jwks_cache, clock_skew, max_token_size, strip_token */
extern const ptc__field_t ptc__metrics_fields[];      /* in ptc_metrics_config_t */

/* The keys of a header rule by ptc_header_op_t, and of a provider's `from` by ptc_jwt_from_t. */
extern const char *const ptc__header_op_names[4];
extern const char *const ptc__jwt_from_names[3];
/* The values of an upstream's `balancing` by ptc_balancing_t. */
extern const char *const ptc__balancing_names[2];

bool ptc__field_eq(const ptc__field_t *f, const void *a, const void *b);
/* Writes the field's value as the loader reads it ("true", "16KiB", "3s", "100"); buf: PTC__VALUE_SIZE bytes. */
void ptc__field_format(const ptc__field_t *f, const void *obj, char *buf, size_t len);

/* Name and path rules; return NULL when valid, otherwise what is wrong. */
const char *ptc__upstream_name_check(const char *name);
const char *ptc__path_check(const char *path);
/* What is wrong with a Cache-Control value (RFC 9111 §5.2: directives `token[=token|quoted-string]`, comma-separated), or
 * NULL. */
const char *ptc__cache_control_check(const char *value);
/* A health_check.service: at most PTC_CONFIG_MAX_HEALTH_SERVICE bytes, no control characters. */
const char *ptc__health_service_check(const char *service);
/* A claim path (require_claims, claims_to_headers): non-empty printable ASCII without spaces. */
const char *ptc__claim_path_check(const char *path);

/* Copies the settings that own no memory (limits, timeouts, compression, workers, log_level, watch). */
void ptc__config_copy_scalars(ptc_config_t *dst, const ptc_config_t *src);
/* Sets an upstream's numeric fields to their defaults (leaves name, endpoints, authority alone; health_check.service
 * stays NULL, which means ""). */
void ptc__upstream_init_defaults(ptc_upstream_config_t *up);
/* The defaults of a health_check / outlier section that is given (enabled); the service is left alone. */
void ptc__health_check_init_defaults(ptc_health_check_config_t *hc);
void ptc__outlier_init_defaults(ptc_outlier_config_t *o);
/* True when two upstreams' balancing, dns_refresh, health_check and outlier settings are the same. */
bool ptc__upstream_policy_eq(const ptc_upstream_config_t *a, const ptc_upstream_config_t *b);
/* Sets the request id settings to their defaults (the header is strdup'ed; the old one is not freed). Returns 0 or
 * PTC_ENOMEM (then header is NULL). */
int ptc__request_id_init(ptc_request_id_config_t *r) PTC_WARN_UNUSED;
/* Sets a provider's scalar settings to their defaults (leaves the strings and lists alone). */
void ptc__jwt_provider_init_defaults(ptc_jwt_provider_config_t *p);
void ptc__upstream_dispose(ptc_upstream_config_t *up);
/* Deep copy; returns 0 or PTC_ENOMEM. */
int ptc__hostport_copy(ptc_hostport_t *dst, const ptc_hostport_t *src) PTC_WARN_UNUSED;
/* Deep-copies n (> 0) addresses into a new array; NULL on allocation failure. */
ptc_hostport_t *ptc__hostports_copy(const ptc_hostport_t *addrs, size_t n) PTC_WARN_UNUSED;
/* Free what TLS settings own, and the struct itself; NULL is a no-op. */
void ptc__listener_tls_free(ptc_listener_tls_config_t *tls);
void ptc__upstream_tls_free(ptc_upstream_tls_config_t *tls);
/* Frees what the admin settings own (wiping the token) and zeroes them. */
void ptc__admin_dispose(ptc_admin_config_t *admin);
/* Frees a heap-allocated address and what it owns; NULL is a no-op. */
void ptc__hostport_free(ptc_hostport_t *hp);
/* Frees what a route owns (its path, CORS policy, header rules and JWT requirement) and zeroes it. */
void ptc__route_dispose(ptc_route_config_t *r);
void ptc__header_rules_dispose(ptc_header_rules_config_t *h);
void ptc__jwt_provider_dispose(ptc_jwt_provider_config_t *p);
void ptc__jwt_requirement_dispose(ptc_jwt_requirement_config_t *r);
/* Deep copy into a zeroed dst; on failure dst holds what was copied so far, for the caller to dispose. Returns 0 or
 * PTC_ENOMEM. */
int ptc__route_copy(ptc_route_config_t *dst, const ptc_route_config_t *src) PTC_WARN_UNUSED;
/* Stable sort into match order: exact paths first, then prefixes longest first. */
void ptc__routes_sort(ptc_route_config_t *routes, size_t n);

#endif
