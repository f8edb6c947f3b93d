/*
 * The upstream monitor: on one worker (the monitoring worker, worker 0), each pool runs the active health
 * checks of its endpoints (grpc.health.v1.Health/Check, over its own HTTP/2 connections through the
 * upstream client interface, pinned to one endpoint each) and re-resolves host-name endpoints every
 * dns_refresh (evdns, never blocking the loop). Results go to the endpoints' shared status
 * (include/portico/health.h), which every worker's pool reads: one check per endpoint and interval for the
 * whole process, whatever the number of workers. DESIGN.md ("Upstream health") says why.
 *
 * The pool drives it: ptc_monitor_start when it is made and after a reload updated it, ptc_monitor_stop
 * before an update, when it is retired and when it is freed.
 */
#ifndef PORTICO_MONITOR_H
#define PORTICO_MONITOR_H

#include "portico/common.h"

typedef struct st_ptc_upstream_t ptc_upstream_t;
typedef struct st_ptc_monitor_t ptc_monitor_t;

/* The worker whose pools monitor their endpoints. */
#define PTC_MONITOR_WORKER 0u

/*
 * Starts checking and resolving up's endpoints as its configuration says, if up's worker is the monitoring
 * one (otherwise, or when there is nothing to do, it does nothing). The first checks start at once. Returns 0
 * or PTC_ENOMEM (nothing started).
 */
int ptc_monitor_start(ptc_upstream_t *up) PTC_WARN_UNUSED;
/* Cancels the checks in flight (no callback follows) and the timers, and frees the monitor. Idempotent. */
void ptc_monitor_stop(ptc_upstream_t *up);

#endif
