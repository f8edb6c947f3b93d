/*
 * Private to src/control/: the control thread's state, shared by control.c (reloads, signals, the file
 * watch) and admin.c (the admin HTTP API).
 */
#ifndef PORTICO_CONTROL_INTERNAL_H
#define PORTICO_CONTROL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "portico/config.h"
#include "portico/control.h"
#include "portico/filewatch.h"

struct event_base;
struct evdns_base;
typedef struct st_ptc_jwks_source_t ptc_jwks_source_t;
struct event;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_request;
typedef struct st_ptc_worker_t ptc_worker_t;
typedef struct st_ptc_snapshot_t ptc_snapshot_t;

#define PTC_CONTROL_MAX_DRAIN_WAITERS 16 /* POST /drain?wait=1 requests held at once (more are answered at once) */
#define PTC_CONTROL_READY_REASONS 8      /* reasons /ready lists at most */

/* The sockets of one listening address, one per worker. */
typedef struct st_ptc_lsock_t {
    ptc_hostport_t addr;
    int *fds;
} ptc_lsock_t;

typedef struct st_ptc_control_t {
    const ptc_control_options_t *opts;
    struct event_base *base;
    int sig_fd;
    struct event *sig_ev;
    int ack_fd;
    struct event *ack_ev;
    ptc_worker_t *workers;
    size_t nworkers;
    ptc_config_t config;  /* the configuration as the operator wrote it: the file, or the admin API's edits of it,
                           * without the command-line overrides (what is written back to the file) */
    ptc_snapshot_t *snap; /* in service (the newest applied): config plus the overrides */
    ptc_lsock_t *socks;   /* per snap->config.listeners entry */
    size_t nsocks;
    uint64_t announced;   /* the last version all workers were seen to run */
    uint64_t reloads_ok, reloads_failed;
    char last_error[1024];     /* why the last failed change failed ("" before any) */
    ptc_filewatch_t fw;   /* the configuration file (watching: fw is set up) */
    bool watching;
    struct event *fw_ev;       /* fw's inotify descriptor readable */
    struct event *debounce_ev; /* the file is checked once events stop for fw.debounce_ms */
    struct evdns_base *dns;    /* for the fetches of remote JWKS */
    ptc_jwks_source_t **jwks;  /* remote key sets of the providers in service (jwks.c) */
    size_t num_jwks;
    struct event *admin_ev;    /* re-binds the admin API after a change, outside of its own callbacks */
    struct evhttp *http;       /* the admin API; NULL when none is configured */
    struct evhttp_bound_socket *http_sock;
    ptc_hostport_t http_addr;  /* where http_sock listens */
    /* serving and draining (see ptc__control_drain) */
    bool serving;           /* the workers run and their listeners are open */
    bool draining;          /* a drain began (SIGTERM, SIGINT, POST /drain): /ready says 503 from then on */
    bool workers_draining;  /* the workers were asked to drain (after timeouts.drain_delay) */
    struct event *drain_ev; /* drain_delay, then the workers drain */
    struct event *exit_ev;  /* the drain is done: the loop ends once the waiting answers are out (or 1 s later) */
    struct evhttp_request *drain_waiters[PTC_CONTROL_MAX_DRAIN_WAITERS]; /* POST /drain?wait=1, answered at the end */
    size_t num_drain_waiters;
    size_t drain_answers_out; /* answers to waiters not yet written */
    /* memory given back after a fall in connections (memory.c) */
    struct event *memory_ev; /* the periodic check */
    uint64_t conns_peak;     /* open connections at their peak since the last trim */
    uint64_t memory_trims;   /* malloc_trim calls made */
} ptc_control_t;

/*
 * An edit of the configuration for the admin API. Returns 0, or an HTTP status (400 bad input, 404 no such
 * thing, 409 conflicts with the command line) with what is wrong in err.
 */
typedef int (*ptc_control_edit_cb)(ptc_control_t *ctl, ptc_config_t *cfg, const void *arg, char *err, size_t errlen);

/* The outcome of a change made through the admin API. */
typedef struct st_ptc_control_result_t {
    uint64_t version;   /* in service afterwards */
    bool changed;       /* false: the edit changed nothing (no new version) */
    bool persisted;     /* written back to the configuration file */
    char warning[512];  /* why it was not persisted, or "" */
} ptc_control_result_t;

/*
 * Applies edit (cfg is a copy of ctl->config) or, with edit NULL, replaces the configuration with *next
 * (taken over). On success the configuration is in service on every worker when this returns, and written
 * back to the configuration file if there is one. Returns 0, or an HTTP status with what is wrong in err
 * (the running configuration is then unchanged).
 */
int ptc__control_change(ptc_control_t *ctl, ptc_control_edit_cb edit, const void *arg, ptc_config_t *next, const char *trigger,
                        ptc_control_result_t *res, char *err, size_t errlen);

/*
 * Puts cfg (the operator's configuration; taken over, disposed on failure) in service under trigger.
 * Returns 0 or an error with what is wrong in err (the running configuration is then unchanged).
 */
int ptc__control_apply_config(ptc_control_t *ctl, ptc_config_t *cfg, const char *trigger, char *err, size_t errlen);

/* Remote JWKS (jwks.c): the last good document of a URL (the snapshot inputs' callback, arg: ctl); the
 * refreshers for the providers in service (started, kept or stopped); all stopped. */
const char *ptc__jwks_document(void *arg, const char *url, size_t *len);
int ptc__jwks_reconcile(ptc_control_t *ctl, char *err, size_t errlen);
void ptc__jwks_close(ptc_control_t *ctl);

/* Counts and logs a change that was refused (an invalid configuration): "configuration reload (TRIGGER) failed". */
void ptc__control_failed(ptc_control_t *ctl, const char *trigger, const char *err);

/*
 * Starts a graceful drain (trigger names what asked, for the log); a second one only logs. From now on /ready
 * answers 503 and configuration changes are refused; after timeouts.drain_delay the workers close their
 * listeners and finish their calls (up to timeouts.drain), and once every worker is done the control loop
 * ends and the process exits 0.
 */
void ptc__control_drain(ptc_control_t *ctl, const char *trigger);
/* Holds req until the drain is done (its answer then goes out before the process exits). 0, or -1 when too many
 * requests wait already (answer it now). */
int ptc__control_drain_wait(ptc_control_t *ctl, struct evhttp_request *req);
/*
 * Why the gateway is not ready: up to cap reasons (listeners not open yet, draining, an upstream without an
 * endpoint that can take calls) written into why. Returns how many; 0 means ready.
 */
size_t ptc__control_ready(ptc_control_t *ctl, char (*why)[200], size_t cap);

/* The admin API: (re)binds it to the configured address, or closes it when none is configured. */
int ptc__admin_reconcile(ptc_control_t *ctl, char *err, size_t errlen);
void ptc__admin_close(ptc_control_t *ctl);
/* memory.c: the periodic check that gives memory back once many connections have closed (workers running) */
int ptc__memory_start(ptc_control_t *ctl);
void ptc__memory_stop(ptc_control_t *ctl);
/* GET /metrics (scrape.c): Prometheus text, or OpenMetrics when the request's Accept asks for it. */
struct evhttp_request;
void ptc__admin_metrics(ptc_control_t *ctl, struct evhttp_request *req);

#endif
