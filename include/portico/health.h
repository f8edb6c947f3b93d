/*
 * Upstream health, shared by every thread: what the pools of all workers and the admin API know about an
 * endpoint (health from active checks, passive outlier ejection, connection and stream counts, resolved
 * addresses), and the tiny grpc.health.v1 protobuf messages the checks exchange.
 *
 * Ownership (DESIGN.md, "Upstream health"): a ptc_endpoint_status_t is keyed by (upstream name, endpoint
 * address) and reference-counted. Each snapshot holds a table of them (ptc_status_table_t, built by
 * ptc_snapshot_new from the previous snapshot's table, so an endpoint that stays keeps its object and its
 * history across reloads); a pool's connection holds a reference to the object of its endpoint. The last
 * reference frees it, on whichever thread.
 *
 * Writers, all without locks on the request path:
 *  - health, check_successes, check_failures and the check texts: the monitoring worker only (worker 0,
 *    src/upstream/monitor.c), which runs the active checks over its own pools;
 *  - ejection and the passive counters: every worker's pool, with relaxed atomics (the counts are a
 *    consensus of all workers: one worker's failures can eject an endpoint for all);
 *  - resolved addresses: the monitoring worker (src/upstream/monitor.c).
 * Readers: every pool (ptc_endpoint_usable(): two relaxed loads per candidate), the admin API.
 * The texts (last check result, last error, resolved addresses) are guarded by the object's mutex, taken
 * when they change and when the admin API or a failing call reads them, never to route a call.
 */
#ifndef PORTICO_HEALTH_H
#define PORTICO_HEALTH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/config.h"

#define PTC_HEALTH_MAX_RESOLVED 16 /* addresses kept per endpoint (more are counted, not listed) */
#define PTC_HEALTH_ADDR_STRLEN 46  /* INET6_ADDRSTRLEN */

typedef enum {
    PTC_HEALTH_UNKNOWN,   /* no active check configured, or none answered yet */
    PTC_HEALTH_HEALTHY,   /* the checks pass (healthy_threshold in a row, or the first one) */
    PTC_HEALTH_UNHEALTHY, /* the checks fail (unhealthy_threshold in a row, or the first one): no calls */
} ptc_health_t;

/* grpc.health.v1.HealthCheckResponse.ServingStatus */
enum {
    PTC_HEALTH_STATUS_UNKNOWN = 0,
    PTC_HEALTH_STATUS_SERVING = 1,
    PTC_HEALTH_STATUS_NOT_SERVING = 2,
    PTC_HEALTH_STATUS_SERVICE_UNKNOWN = 3
};

typedef struct st_ptc_endpoint_status_t {
    atomic_uint _refs;
    char *upstream;      /* the key: upstream name ... */
    ptc_hostport_t addr; /* ... and endpoint address */
    char label[80];      /* "host:port" or "[v6]:port", for messages */
    /* active checks (monitoring worker only) */
    _Atomic int health;          /* ptc_health_t */
    atomic_uint check_successes; /* in a row */
    atomic_uint check_failures;  /* in a row */
    /* passive (every pool) */
    atomic_uint_fast64_t ejected_until_ms; /* monotonic ms (ptc_now_ms); ejected while now is before it */
    atomic_uint consecutive_failures;      /* failed connection attempts and grpc-status 14 answers in a row */
    atomic_uint_fast64_t ejections;        /* how many times it was ejected */
    atomic_int active_streams;             /* open streams over all workers */
    atomic_int conns_ready, conns_connecting;
    atomic_bool connect_failed; /* the last connection attempt failed (any worker); cleared by a success */
    atomic_uint dns_generation; /* +1 each time the resolved addresses change */
    pthread_mutex_t lock;       /* guards the rest */
    char check_result[160];     /* "SERVING", "NOT_SERVING", "timeout after 1000 ms", ...; "" before any */
    bool check_ok;
    uint64_t check_wall_ms;    /* when (Unix time, ms); 0: never */
    char last_error[200];      /* why the last connection attempt failed; "" when none did */
    char eject_reason[160];    /* why it was last ejected */
    size_t num_resolved;       /* numeric addresses the host resolves to, in resolved */
    char dns_error[128];       /* why the last resolution failed; "" after a success */
    uint64_t resolved_wall_ms; /* when it was last resolved; 0: never */
    char resolved[PTC_HEALTH_MAX_RESOLVED][PTC_HEALTH_ADDR_STRLEN];
} ptc_endpoint_status_t;

typedef struct st_ptc_upstream_status_t {
    atomic_uint _refs;
    char *name;
    atomic_long pending; /* calls waiting for a connection or a free stream, over all workers */
} ptc_upstream_status_t;

/* One upstream of a status table: its object and one per endpoint. */
typedef struct st_ptc_status_table_entry_t {
    ptc_upstream_status_t *up;
    ptc_endpoint_status_t **endpoints; /* per config.upstreams[i].endpoints entry */
    size_t num_endpoints;
} ptc_status_table_entry_t;

/* What one snapshot's upstreams share: an entry per config.upstreams entry. */
typedef struct st_ptc_status_table_t {
    size_t num_upstreams;
    ptc_status_table_entry_t *upstreams;
} ptc_status_table_t;

/*
 * The table for cfg, taking over the objects of prev (may be NULL) whose keys stay. Returns 0 or PTC_ENOMEM.
 * Runs on the control thread while prev's objects are in use: it only takes references.
 */
int ptc_status_table_new(ptc_status_table_t **out, const ptc_config_t *cfg, const ptc_status_table_t *prev) PTC_WARN_UNUSED;
void ptc_status_table_free(ptc_status_table_t *t);

static inline ptc_endpoint_status_t *ptc_endpoint_status_ref(ptc_endpoint_status_t *st)
{
    atomic_fetch_add_explicit(&st->_refs, 1, memory_order_relaxed);
    return st;
}
void ptc_endpoint_status_release(ptc_endpoint_status_t *st);

/* Not ejected at now_ms (monotonic, ptc_now_ms) and not failing its active checks: may take calls. */
static inline bool ptc_endpoint_usable(ptc_endpoint_status_t *st, uint64_t now_ms)
{
    return atomic_load_explicit(&st->health, memory_order_relaxed) != PTC_HEALTH_UNHEALTHY &&
           atomic_load_explicit(&st->ejected_until_ms, memory_order_relaxed) <= now_ms;
}

/*
 * Counts toward readiness: not ejected, and healthy by its checks when hc is enabled (unknown does not count:
 * readiness waits for the first answer), otherwise not known to be unhealthy.
 */
bool ptc_endpoint_available(ptc_endpoint_status_t *st, const ptc_health_check_config_t *hc, uint64_t now_ms);

/*
 * Passive outlier detection. A failure (a connection attempt that failed, a grpc-status 14 answer) counts;
 * consecutive_failures of them in a row eject the endpoint until now_ms + ejection_ms. Returns true when this
 * failure ejected it (the caller logs), false otherwise (also when cfg is disabled: nothing is counted). A
 * success resets the count.
 */
bool ptc_outlier_failure(ptc_endpoint_status_t *st, const ptc_outlier_config_t *cfg, uint64_t now_ms, const char *why);
void ptc_outlier_success(ptc_endpoint_status_t *st);

/*
 * The health an endpoint moves to after a check (thresholds counted in successes / failures, the run so far
 * including this check): the first answer decides at once; afterwards unhealthy_threshold failures in a
 * row make a healthy (or unknown) endpoint unhealthy and healthy_threshold successes make an unhealthy one
 * healthy.
 */
ptc_health_t ptc_health_next(ptc_health_t cur, bool ok, unsigned successes, unsigned failures, const ptc_health_check_config_t *hc);

/*
 * Records the outcome of an active check (monitoring worker): the counts, the text, the new health. Returns the
 * new health; *before gets the previous one (the caller logs a change).
 */
ptc_health_t ptc_health_record(ptc_endpoint_status_t *st, const ptc_health_check_config_t *hc, bool ok, const char *result,
                               uint64_t wall_ms, ptc_health_t *before);

/* Back to "no active check" (the upstream's health_check section was removed): unknown, counts cleared. */
void ptc_health_reset(ptc_endpoint_status_t *st);

/* "unknown", "healthy", "unhealthy"; a ServingStatus as its name ("SERVING", ..., "status 7" for others). */
const char *ptc_health_name(ptc_health_t h);
void ptc_health_status_name(int status, char *buf, size_t len);

/* The grpc.health.v1.Health/Check method's path. */
#define PTC_HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"

/*
 * The request body of a check: one gRPC frame (flag 0, 4-byte big-endian length) holding HealthCheckRequest
 * {string service = 1} (an empty service is an empty message). Returns the number of bytes written, or 0
 * when cap is too small (service is at most PTC_CONFIG_MAX_HEALTH_SERVICE bytes: 5 + 1 + 2 + 200 fit in 256).
 */
size_t ptc_health_encode_request(const char *service, uint8_t *buf, size_t cap);

/*
 * Decodes a HealthCheckResponse {ServingStatus status = 1} message (without the frame prefix): unknown fields
 * are skipped, an absent status is UNKNOWN (0), the last one wins. Returns 0 with *status set, or -1 when the
 * message is malformed (a truncated field, a bad wire type).
 */
int ptc_health_decode_response(const uint8_t *msg, size_t len, int *status) PTC_WARN_UNUSED;

#endif
