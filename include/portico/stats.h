/*
 * Counters of what the request pipeline decided, one set per worker (no locks, no atomics on the request
 * path: only the worker's thread writes them); the metrics endpoint sums the workers' sets when scraped.
 */
#ifndef PORTICO_STATS_H
#define PORTICO_STATS_H

#include <stdint.h>

typedef struct st_ptc_filter_stats_t {
    uint64_t cors_preflights;         /* answered with 204 */
    uint64_t cors_preflights_refused; /* answered with 403 */
    uint64_t cors_allowed;            /* requests from an allowed origin */
    uint64_t cors_denied;             /* requests refused for their origin (403) */
    uint64_t health;                  /* health checks answered */
    uint64_t request_id_accepted;     /* a valid incoming id kept */
    uint64_t request_id_generated;    /* none came (or it was invalid, or incoming ids are not trusted) */
    uint64_t request_id_replaced;     /* of those generated: an invalid incoming one was replaced */
    uint64_t trace_continued;         /* a valid traceparent came: a span of ours in its trace */
    uint64_t trace_started;           /* none came, or it was invalid: a new trace */
    uint64_t tracestate_dropped;      /* an invalid tracestate was not forwarded */
    uint64_t header_rules;            /* header rules applied (request, response, trailers) */
    uint64_t jwt_ok;                  /* a token verified (or found in the cache) and the route's claims held */
    uint64_t jwt_cached;              /* of those, served from the verified-token cache */
    uint64_t jwt_missing;             /* no token where one was required: UNAUTHENTICATED */
    uint64_t jwt_absent_allowed;      /* no token on a route where it is optional */
    uint64_t jwt_invalid;             /* a token that did not verify: UNAUTHENTICATED */
    uint64_t jwt_forbidden;           /* a valid token without the required claims: PERMISSION_DENIED */
} ptc_filter_stats_t;

#endif
