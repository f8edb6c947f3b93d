/*
 * The control thread (see include/portico/control.h).
 *
 * A change, whatever asked for it, goes through apply(): build a snapshot (validation done, TLS files
 * read, listening sockets bound for new addresses), then queue it to every worker. Anything that fails
 * before the hand-over leaves the running configuration exactly as it was. Workers acknowledge through
 * an eventfd once they have put it in service.
 *
 * Listening sockets: the control thread keeps, per configured address, one SO_REUSEPORT socket per
 * worker (socks[], in the order of the snapshot's listeners). A reload reuses the sockets of addresses
 * that stay, binds new ones for new addresses, and hands the workers the whole set; a worker closes the
 * sockets of addresses that went away once it has emptied their accept queues.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "portico/control.h"
#include "portico/file.h"
#include "portico/filewatch.h"
#include "portico/listener.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/tls.h"
#include "portico/worker.h"

/* The sockets of one listening address, one per worker. */
typedef struct st_lsock_t {
    ptc_hostport_t addr;
    int *fds;
} lsock_t;

typedef struct st_control_t {
    const ptc_control_options_t *opts;
    struct event_base *base;
    int sig_fd;
    struct event *sig_ev;
    int ack_fd;
    struct event *ack_ev;
    ptc_worker_t *workers;
    size_t nworkers;
    ptc_snapshot_t *snap; /* in service (the newest applied) */
    lsock_t *socks;       /* per snap->config.listeners entry */
    size_t nsocks;
    uint64_t announced;   /* the last version all workers were seen to run */
    uint64_t reloads_ok, reloads_failed;
    ptc_filewatch_t fw;   /* the configuration file (watching: fw is set up) */
    bool watching;
    struct event *fw_ev;       /* fw's inotify descriptor readable */
    struct event *debounce_ev; /* the file is checked once events stop for fw.debounce_ms */
} control_t;

/* ---- configuration ---- */

int ptc_control_load(ptc_config_t *cfg, const char *file, const char *text, size_t len, const ptc_overrides_t *o, char *err,
                     size_t errlen)
{
    int ret;

    memset(cfg, 0, sizeof(*cfg));
    if ((ret = ptc_config_init_default(cfg)) != 0) {
        snprintf(err, errlen, "out of memory");
        return ret;
    }
    if (file != NULL && text != NULL)
        ret = ptc_config_load_string(cfg, file, text, len, err, errlen);
    else if (file != NULL)
        ret = ptc_config_load_file(cfg, file, err, errlen);
    if (ret != 0)
        goto fail;
    ret = PTC_ENOMEM;
    if (o->num_listen != 0 && ptc_config_set_listeners(cfg, o->listen, o->num_listen) != 0)
        goto nomem;
    if (o->num_upstream != 0 && ptc_config_set_upstream_endpoints(cfg, 0, o->upstream, o->num_upstream) != 0)
        goto nomem;
    if (o->tls_cert != NULL && ptc_config_set_listener_cert(cfg, o->tls_cert, o->tls_key) != 0)
        goto nomem;
    for (size_t i = 0; i < o->num_allow_origin; i++) {
        char why[256];
        if ((ret = ptc_config_add_allow_origin(cfg, o->allow_origin[i], why, sizeof(why))) != 0) {
            snprintf(err, errlen, "--allow-origin '%s': %s", o->allow_origin[i], why);
            goto fail;
        }
    }
    if (o->workers >= 0)
        cfg->workers = (uint32_t)o->workers;
    if (o->log_level != NULL && ptc_log_level_parse(o->log_level, &cfg->log_level) != 0) {
        snprintf(err, errlen, "--log-level '%s': expected debug, info, warn or error", o->log_level);
        ret = PTC_EINVAL;
        goto fail;
    }
    if ((ret = ptc_config_validate(cfg, err, errlen)) != 0)
        goto fail;
    return 0;

nomem:
    snprintf(err, errlen, "out of memory");
fail:
    ptc_config_dispose(cfg);
    memset(cfg, 0, sizeof(*cfg));
    return ret;
}

/* ---- listening sockets ---- */

static bool hostport_eq(const ptc_hostport_t *a, const ptc_hostport_t *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static void socks_free(lsock_t *socks, size_t n, size_t nworkers, bool close_fds)
{
    for (size_t i = 0; socks != NULL && i < n; i++) {
        for (size_t j = 0; close_fds && socks[i].fds != NULL && j < nworkers; j++)
            if (socks[i].fds[j] >= 0)
                close(socks[i].fds[j]);
        free(socks[i].fds);
        ptc_hostport_dispose(&socks[i].addr);
    }
    free(socks);
}

/*
 * The socket table for cfg's listeners: the sockets of addresses in cur (n entries) are reused, new
 * addresses get nworkers new sockets each. *fresh[i] tells which entries are new (their sockets are the
 * caller's to close should the change be abandoned). Returns 0 or an error with the reason in err.
 */
static int socks_build(const ptc_config_t *cfg, const lsock_t *cur, size_t n, size_t nworkers, lsock_t **out, bool **fresh,
                       char *err, size_t errlen)
{
    lsock_t *socks = calloc(cfg->num_listeners + 1, sizeof(*socks));
    bool *isnew = calloc(cfg->num_listeners + 1, sizeof(*isnew));
    int ret = 0;
    size_t i;

    if (socks == NULL || isnew == NULL) {
        snprintf(err, errlen, "out of memory");
        free(socks);
        free(isnew);
        return PTC_ENOMEM;
    }
    for (i = 0; i < cfg->num_listeners && ret == 0; i++) {
        const ptc_hostport_t *hp = &cfg->listeners[i].addr;
        size_t j = 0;
        while (j < n && !hostport_eq(&cur[j].addr, hp))
            j++;
        if ((socks[i].fds = malloc(nworkers * sizeof(int))) == NULL || (socks[i].addr.host = strdup(hp->host)) == NULL) {
            snprintf(err, errlen, "out of memory");
            ret = PTC_ENOMEM;
            break;
        }
        socks[i].addr.port = hp->port;
        if (j < n) {
            memcpy(socks[i].fds, cur[j].fds, nworkers * sizeof(int));
            continue;
        }
        isnew[i] = true;
        for (size_t k = 0; k < nworkers; k++)
            socks[i].fds[k] = -1;
        for (size_t k = 0; k < nworkers && ret == 0; k++) {
            char why[300];
            if ((ret = ptc_listen_socket(hp, &socks[i].fds[k], why, sizeof(why))) != 0)
                snprintf(err, errlen, "listeners[%zu].address: %s", i, why);
        }
    }
    if (ret != 0) {
        /* close what was opened here; reused sockets belong to the running configuration */
        for (size_t k = 0; k < cfg->num_listeners; k++) {
            if (!isnew[k] && socks[k].fds != NULL) {
                free(socks[k].fds);
                socks[k].fds = NULL;
            }
        }
        socks_free(socks, cfg->num_listeners, nworkers, true);
        free(isnew);
        return ret;
    }
    *out = socks;
    *fresh = isnew;
    return 0;
}

/* ---- applying a change ---- */

static size_t workers_for(const ptc_config_t *cfg)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cfg->workers != 0 ? cfg->workers : (size_t)(cores > 0 ? cores : 1);
}

/*
 * Puts cfg in service (taking it over; it is disposed on failure). trigger names what asked, for the
 * log. Returns 0, or an error with "what is wrong" in err and the running configuration unchanged.
 */
static int apply(control_t *ctl, ptc_config_t *cfg, const char *trigger, char *err, size_t errlen)
{
    ptc_snapshot_t *snap = NULL;
    lsock_t *socks = NULL;
    bool *fresh = NULL;
    int ret;

    if (workers_for(cfg) != ctl->nworkers) {
        ptc_log_warn("configuration (%s): workers: %zu -> %zu needs a restart; %zu workers keep running", trigger, ctl->nworkers,
                     workers_for(cfg), ctl->nworkers);
    }
    if ((ret = ptc_snapshot_new(&snap, cfg, ctl->snap->version + 1, err, errlen)) != 0) {
        ptc_config_dispose(cfg);
        return ret;
    }
    if ((ret = socks_build(&snap->config, ctl->socks, ctl->nsocks, ctl->nworkers, &socks, &fresh, err, errlen)) != 0) {
        ptc_snapshot_release(snap);
        return ret;
    }
    int *col = malloc((snap->config.num_listeners + 1) * sizeof(*col));
    if (col == NULL) {
        snprintf(err, errlen, "out of memory");
        for (size_t k = 0; k < snap->config.num_listeners; k++)
            if (!fresh[k]) {
                free(socks[k].fds);
                socks[k].fds = NULL;
            }
        socks_free(socks, snap->config.num_listeners, ctl->nworkers, true);
        free(fresh);
        ptc_snapshot_release(snap);
        return PTC_ENOMEM;
    }
    /* the hand-over: from here the change happens (a worker that runs out of memory keeps the old one) */
    for (size_t w = 0; w < ctl->nworkers; w++) {
        for (size_t i = 0; i < snap->config.num_listeners; i++)
            col[i] = socks[i].fds[w];
        if (ptc_worker_update(&ctl->workers[w], snap, col) != 0) {
            ptc_log_error("configuration version %" PRIu64 ": worker %zu: out of memory; it keeps version %" PRIu64,
                          snap->version, w, ctl->snap->version);
            for (size_t i = 0; i < snap->config.num_listeners; i++)
                if (fresh[i]) {
                    close(socks[i].fds[w]);
                    socks[i].fds[w] = -1;
                }
        }
    }
    free(col);
    free(fresh);
    /* the sockets of removed addresses are the workers' to close now */
    socks_free(ctl->socks, ctl->nsocks, ctl->nworkers, false);
    ctl->socks = socks;
    ctl->nsocks = snap->config.num_listeners;
    ptc_log_set_level(snap->config.log_level);
    ptc_log_info("configuration version %" PRIu64 " applied (%s)", snap->version, trigger);
    ptc_snapshot_set(&ctl->snap, snap);
    ptc_snapshot_release(snap);
    ctl->reloads_ok++;
    return 0;
}

/*
 * Reloads the configuration file (and the overrides) whose content is text: SIGHUP and file changes.
 * Returns true when the new configuration was applied.
 */
static bool reload_text(control_t *ctl, const char *text, size_t len, const char *trigger)
{
    ptc_config_t cfg;
    char err[1024];

    if (ptc_control_load(&cfg, ctl->opts->config_file, text, len, ctl->opts->overrides, err, sizeof(err)) != 0 ||
        apply(ctl, &cfg, trigger, err, sizeof(err)) != 0) {
        ctl->reloads_failed++;
        ptc_log_error("configuration reload (%s) failed; version %" PRIu64 " stays in service: %s", trigger, ctl->snap->version,
                      err);
        return false;
    }
    if (ctl->watching)
        ptc_filewatch_set_loaded(&ctl->fw, text, len);
    return true;
}

/* SIGHUP: the file is read again even when its text is unchanged (certificate files may have changed). */
static void reload(control_t *ctl, const char *trigger)
{
    char *text = NULL, err[512];
    size_t len = 0;

    if (ctl->opts->config_file != NULL && ptc_read_file(ctl->opts->config_file, PTC_FILEWATCH_MAX_SIZE, &text, &len, err, sizeof(err)) != 0) {
        ctl->reloads_failed++;
        ptc_log_error("configuration reload (%s) failed; version %" PRIu64 " stays in service: %s", trigger, ctl->snap->version,
                      err);
        return;
    }
    reload_text(ctl, text, len, trigger);
    free(text);
}

static void on_file_event(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    control_t *ctl = arg;
    if (ptc_filewatch_read_events(&ctl->fw)) {
        struct timeval tv = {(time_t)(ctl->fw.debounce_ms / 1000), (suseconds_t)(ctl->fw.debounce_ms % 1000 * 1000)};
        evtimer_add(ctl->debounce_ev, &tv);
    }
}

static void on_file_settled(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    control_t *ctl = arg;
    char *text = NULL, err[512];
    size_t len = 0;

    switch (ptc_filewatch_check(&ctl->fw, &text, &len, err, sizeof(err))) {
    case 1:
        reload_text(ctl, text, len, "file changed");
        break;
    case 0:
        break; /* the same text again (an editor's extra events, or our own write-back) */
    default:
        /* e.g. deleted, or half-way through a swap: the next event brings it back */
        ptc_log_warn("configuration file: %s; version %" PRIu64 " stays in service", err, ctl->snap->version);
        break;
    }
    free(text);
}

/*
 * Starts watching the configuration file and reads its first text through the watcher, so that a change
 * made between the first load and the start of the watch cannot go unnoticed. *text is NULL when there is
 * no watch (it failed: a warning is logged and the file is read at load time as usual).
 */
static void watch_start(control_t *ctl, char **text, size_t *len)
{
    char err[512];
    int ret;

    *text = NULL;
    if (ctl->opts->config_file == NULL)
        return;
    if (ptc_filewatch_init(&ctl->fw, ctl->opts->config_file, err, sizeof(err)) != 0) {
        ptc_log_warn("configuration file: %s; changes are applied on SIGHUP only", err);
        return;
    }
    if ((ret = ptc_filewatch_check(&ctl->fw, text, len, err, sizeof(err))) != 1) {
        if (ret < 0)
            fprintf(stderr, "portico: %s\n", err);
        ptc_filewatch_dispose(&ctl->fw);
        *text = NULL;
        return;
    }
    ctl->watching = true;
}

/* ---- events ---- */

static void on_ack(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    control_t *ctl = arg;
    uint64_t count;
    if (read(fd, &count, sizeof(count)) < 0) {
        /* EAGAIN: nothing new */
    }
    uint64_t v = ctl->snap->version;
    for (size_t i = 0; i < ctl->nworkers; i++)
        v = PTC_MIN(v, (uint64_t)atomic_load(&ctl->workers[i].applied_version));
    if (v > ctl->announced) {
        ctl->announced = v;
        ptc_log_debug("configuration version %" PRIu64 " in service on all %zu workers", v, ctl->nworkers);
    }
}

static void on_signal(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    control_t *ctl = arg;
    struct signalfd_siginfo si;

    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGHUP:
            reload(ctl, "SIGHUP");
            break;
        case SIGTERM:
        case SIGINT:
            ptc_log_info("%s: draining (up to %" PRIu64 " ms)", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT",
                         ctl->snap->config.timeouts.drain_ms);
            event_base_loopbreak(ctl->base);
            return;
        default:
            break;
        }
    }
}

/* ---- start-up and shutdown ---- */

static int setup_events(control_t *ctl, const sigset_t *sigs)
{
    if ((ctl->base = event_base_new()) == NULL)
        return PTC_ENOMEM;
    if (ctl->watching /* MERGE: && config.watch */) {
        ctl->fw_ev = event_new(ctl->base, ptc_filewatch_fd(&ctl->fw), EV_READ | EV_PERSIST, on_file_event, ctl);
        ctl->debounce_ev = evtimer_new(ctl->base, on_file_settled, ctl);
        if (ctl->fw_ev == NULL || ctl->debounce_ev == NULL || event_add(ctl->fw_ev, NULL) != 0)
            return PTC_ENOMEM;
    }
    if ((ctl->sig_fd = signalfd(-1, sigs, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
        return PTC_EIO;
    if ((ctl->ack_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        return PTC_EIO;
    ctl->sig_ev = event_new(ctl->base, ctl->sig_fd, EV_READ | EV_PERSIST, on_signal, ctl);
    ctl->ack_ev = event_new(ctl->base, ctl->ack_fd, EV_READ | EV_PERSIST, on_ack, ctl);
    if (ctl->sig_ev == NULL || ctl->ack_ev == NULL || event_add(ctl->sig_ev, NULL) != 0 || event_add(ctl->ack_ev, NULL) != 0)
        return PTC_ENOMEM;
    return 0;
}

static void teardown_events(control_t *ctl)
{
    if (ctl->fw_ev != NULL)
        event_free(ctl->fw_ev);
    if (ctl->debounce_ev != NULL)
        event_free(ctl->debounce_ev);
    if (ctl->watching)
        ptc_filewatch_dispose(&ctl->fw);
    if (ctl->sig_ev != NULL)
        event_free(ctl->sig_ev);
    if (ctl->ack_ev != NULL)
        event_free(ctl->ack_ev);
    if (ctl->sig_fd >= 0)
        close(ctl->sig_fd);
    if (ctl->ack_fd >= 0)
        close(ctl->ack_fd);
    if (ctl->base != NULL)
        event_base_free(ctl->base);
}

int ptc_control_run(const ptc_control_options_t *opts)
{
    control_t ctl = {.opts = opts, .sig_fd = -1, .ack_fd = -1};
    ptc_config_t cfg;
    char err[1024], *text;
    size_t len;
    bool *fresh = NULL;
    int rv;

    watch_start(&ctl, &text, &len);
    rv = ptc_control_load(&cfg, opts->config_file, text, len, opts->overrides, err, sizeof(err));
    if (rv == 0 && ctl.watching)
        ptc_filewatch_set_loaded(&ctl.fw, text, len);
    free(text);
    if (rv != 0) {
        fprintf(stderr, "portico: %s\n", err);
        teardown_events(&ctl);
        return 1;
    }
    ptc_log_set_level(cfg.log_level);
    ctl.nworkers = workers_for(&cfg);
    if (ptc_snapshot_new(&ctl.snap, &cfg, 1, err, sizeof(err)) != 0) {
        fprintf(stderr, "portico: %s: %s\n", cfg.source, err);
        ptc_config_dispose(&cfg);
        teardown_events(&ctl);
        return 1;
    }
    ptc_tls_log_warnings(&ctl.snap->config);
    if (socks_build(&ctl.snap->config, NULL, 0, ctl.nworkers, &ctl.socks, &fresh, err, sizeof(err)) != 0) {
        ptc_log_error("%s", err);
        ptc_snapshot_release(ctl.snap);
        teardown_events(&ctl);
        return 1;
    }
    free(fresh);
    ctl.nsocks = ctl.snap->config.num_listeners;

    /* Signals are taken by the control thread only, through a signalfd; workers inherit the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rv = setup_events(&ctl, &sigs) != 0 ? PTC_EIO : 0;
    if (rv == 0 && (ctl.workers = calloc(ctl.nworkers, sizeof(*ctl.workers))) == NULL)
        rv = PTC_ENOMEM;
    size_t started = 0, inited = 0;
    int *col = rv == 0 ? malloc((ctl.nsocks + 1) * sizeof(*col)) : NULL;
    if (rv == 0 && col == NULL)
        rv = PTC_ENOMEM;
    for (size_t i = 0; rv == 0 && i < ctl.nworkers; i++) {
        for (size_t k = 0; k < ctl.nsocks; k++) {
            col[k] = ctl.socks[k].fds[i];
            ctl.socks[k].fds[i] = -1; /* the worker owns it now, also if its start-up fails */
        }
        inited++;
        if ((rv = ptc_worker_init(&ctl.workers[i], (unsigned)i, ctl.snap, col, ctl.ack_fd)) != 0)
            ptc_log_error("worker %zu: start-up failed: %s", i, ptc_strerror(rv));
    }
    bool table_owns = rv != 0; /* sockets not handed to a worker (start-up failed) are closed below */
    if (rv == 0) {
        /* the workers own the sockets; the table keeps their numbers to tell addresses that stay */
        for (size_t i = 0; i < ctl.nworkers; i++)
            for (size_t k = 0; k < ctl.nsocks; k++)
                ctl.socks[k].fds[i] = ctl.workers[i].listeners[k].fd;
    }
    free(col);
    for (size_t i = 0; rv == 0 && i < ctl.nworkers; i++) {
        if ((rv = ptc_worker_start(&ctl.workers[i])) != 0)
            ptc_log_error("worker %zu: cannot start its thread", i);
        else
            started++;
    }
    if (rv == 0) {
        const ptc_config_t *c = &ctl.snap->config;
        for (size_t i = 0; i < c->num_listeners; i++)
            ptc_log_info("portico %s listening on %s:%u (%zu workers)%s", PTC_VERSION, c->listeners[i].addr.host, c->listeners[i].addr.port,
                         ctl.nworkers, c->listeners[i].tls != NULL ? ", TLS" : "");
        event_base_dispatch(ctl.base);
    }
    for (size_t i = 0; i < started; i++)
        ptc_worker_request_drain(&ctl.workers[i]);
    for (size_t i = 0; i < started; i++)
        ptc_worker_join(&ctl.workers[i]);
    for (size_t i = 0; i < inited; i++)
        ptc_worker_dispose(&ctl.workers[i]);
    free(ctl.workers);
    socks_free(ctl.socks, ctl.nsocks, ctl.nworkers, table_owns);
    teardown_events(&ctl);
    ptc_snapshot_release(ctl.snap);
    if (rv == 0)
        ptc_log_info("stopped");
    return rv == 0 ? 0 : 1;
}
