/*
 * Configuration snapshots. A snapshot is one whole validated configuration plus what is derived from it
 * (TLS contexts today; filter chains and route tables as they come), immutable once built, with an atomic
 * reference count.
 *
 * Who holds references (see DESIGN.md, "Threads and memory"):
 *  - the control thread: the snapshot in service (the newest one);
 *  - each worker: its current snapshot (w->snap), swapped when the control thread hands it a new one;
 *  - each downstream connection: the snapshot its current exchange started under (refreshed between
 *    exchanges, so a keep-alive connection picks up a reload at its next request);
 *  - each call, each HTTP/2 stream and each upstream pool: the snapshot it works with, until it ends.
 * Nothing keeps a pointer into a snapshot (its config, a CORS policy, an upstream's settings) without
 * holding a reference to that snapshot, directly or through its owner. A snapshot is freed by whichever
 * thread lets go of the last reference.
 */
#ifndef PORTICO_SNAPSHOT_H
#define PORTICO_SNAPSHOT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/common.h"
#include "portico/config.h"

typedef struct st_ptc_tls_contexts_t ptc_tls_contexts_t;
typedef struct st_ptc_status_table_t ptc_status_table_t;
typedef struct st_ptc_pipeline_t ptc_pipeline_t;
typedef struct st_ptc_access_log_t ptc_access_log_t;
struct st_ptc_snapshot_inputs_t;

typedef struct st_ptc_snapshot_t {
    atomic_uint _refs;
    uint64_t version;         /* 1 for the configuration the process started with, +1 per applied change */
    ptc_config_t config;      /* validated; never modified */
    ptc_tls_contexts_t *tls;  /* contexts of config's TLS listeners and upstreams; NULL when none uses TLS */
    ptc_pipeline_t *pipeline; /* the filter chains of config's routes */
    size_t head_block_size;   /* bytes of one request-head block for config.limits (ptc_worker_head_block) */
    ptc_access_log_t *access_log; /* the sink of config.access_log (one reference), or NULL; attached by the control
                                   * thread before the snapshot is handed to the workers (include/portico/access_log.h) */
    ptc_status_table_t *status; /* the upstreams' shared state (include/portico/health.h): the objects are shared with
                                 * the snapshots before and after, the table is this snapshot's */
} ptc_snapshot_t;

/*
 * Builds a snapshot from a validated configuration, which it takes over (*cfg is zeroed on success, left
 * as it was on failure). Reads the TLS and JWKS files again and builds the contexts and the filter chains
 * (remote JWKS documents come from in, which may be NULL), and the upstream status table (taking over
 * in->prev's objects for what stays). Returns 0 with one reference
 * held by the caller, PTC_ECONFIG with "KEY: what is wrong" in err (a certificate that no longer loads),
 * or PTC_ENOMEM.
 */
int ptc_snapshot_new(ptc_snapshot_t **out, ptc_config_t *cfg, uint64_t version, const struct st_ptc_snapshot_inputs_t *in,
                     char *err, size_t errlen) PTC_WARN_UNUSED;

static inline ptc_snapshot_t *ptc_snapshot_ref(ptc_snapshot_t *s)
{
    atomic_fetch_add_explicit(&s->_refs, 1, memory_order_relaxed);
    return s;
}

/* Drops one reference; the last one frees the snapshot. NULL is a no-op. */
void ptc_snapshot_release(ptc_snapshot_t *s);

/* Replaces the reference in *slot with one to s (which may be the same snapshot, or NULL). */
void ptc_snapshot_set(ptc_snapshot_t **slot, ptc_snapshot_t *s);

/* Snapshots alive in the process (for tests and the admin API). */
size_t ptc_snapshot_live_count(void);

/* The size of one request-head block for these limits: head bytes, field offsets and header views. */
size_t ptc_head_block_size(const ptc_limits_config_t *lim);
/* How many header fields a request's view array holds: max_headers, $httpHeaders fields, filter additions. */
size_t ptc_request_headers_cap(const ptc_limits_config_t *lim);

#endif
