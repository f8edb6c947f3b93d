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
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>

#include "control_internal.h"
#include "portico/access_log.h"
#include "portico/control.h"
#include "portico/file.h"
#include "portico/filewatch.h"
#include "portico/filter.h"
#include "portico/health.h"
#include "portico/listener.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/tls.h"
#include "portico/worker.h"

/* ---- configuration ---- */

/* The default, then the file (text: its content; NULL: read it now). */
static int load_file_config(ptc_config_t *cfg, const char *file, const char *text, size_t len, char *err, size_t errlen)
{
    int ret;

    memset(cfg, 0, sizeof(*cfg));
    if ((ret = ptc_config_init_default(cfg)) != 0)
        return ptc_errorf(ret, err, errlen, "out of memory");
    if (file != NULL && text != NULL)
        ret = ptc_config_load_string(cfg, file, text, len, err, errlen);
    else if (file != NULL)
        ret = ptc_config_load_file(cfg, file, err, errlen);
    if (ret != 0) {
        ptc_config_dispose(cfg);
        memset(cfg, 0, sizeof(*cfg));
    }
    return ret;
}

/* The command-line overrides over cfg, then validation; cfg may be half-changed on failure. */
static int apply_overrides(ptc_config_t *cfg, const ptc_overrides_t *o, char *err, size_t errlen)
{
    int ret;

    if (o->num_listen != 0 && ptc_config_set_listeners(cfg, o->listen, o->num_listen) != 0)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    if (o->num_upstream != 0 && ptc_config_set_upstream_endpoints(cfg, 0, o->upstream, o->num_upstream) != 0)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    if (o->tls_cert != NULL && ptc_config_set_listener_cert(cfg, o->tls_cert, o->tls_key) != 0)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    for (size_t i = 0; i < o->num_allow_origin; i++) {
        char why[256];
        if ((ret = ptc_config_add_allow_origin(cfg, o->allow_origin[i], why, sizeof(why))) != 0)
            return ptc_errorf(ret, err, errlen, "--allow-origin '%s': %s", o->allow_origin[i], why);
    }
    if (o->admin != NULL && ptc_config_set_admin_address(cfg, o->admin) != 0)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    if (o->workers >= 0)
        cfg->workers = (uint32_t)o->workers;
    if (o->log_level != NULL && ptc_log_level_parse(o->log_level, &cfg->log_level) != 0)
        return ptc_errorf(PTC_EINVAL, err, errlen, "--log-level '%s': expected debug, info, warn or error", o->log_level);
    return ptc_config_validate(cfg, err, errlen);
}

/* The configuration to run for base: a copy with the overrides applied. */
static int effective(ptc_config_t *out, const ptc_config_t *base, const ptc_overrides_t *o, char *err, size_t errlen)
{
    int ret;
    if (ptc_config_copy(out, base) != 0)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    if ((ret = apply_overrides(out, o, err, errlen)) != 0) {
        ptc_config_dispose(out);
        memset(out, 0, sizeof(*out));
    }
    return ret;
}

int ptc_control_load(ptc_config_t *cfg, const char *file, const char *text, size_t len, const ptc_overrides_t *o, char *err,
                     size_t errlen)
{
    int ret;

    if ((ret = load_file_config(cfg, file, text, len, err, errlen)) != 0)
        return ret;
    if ((ret = apply_overrides(cfg, o, err, errlen)) != 0) {
        ptc_config_dispose(cfg);
        memset(cfg, 0, sizeof(*cfg));
    }
    return ret;
}

/* ---- listening sockets ---- */

static void socks_free(ptc_lsock_t *socks, size_t n, size_t nworkers, bool close_fds)
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
static int socks_build(const ptc_config_t *cfg, const ptc_lsock_t *cur, size_t n, size_t nworkers, ptc_lsock_t **out, bool **fresh,
                       char *err, size_t errlen)
{
    ptc_lsock_t *socks = calloc(cfg->num_listeners + 1, sizeof(*socks));
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
        while (j < n && !ptc_hostport_eq(&cur[j].addr, hp))
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
 * Gives a new snapshot its access-log sink: the one in service when the settings are the same (its file
 * stays open), else a new one (the file opened now: a failure refuses the change).
 */
static int attach_access_log(ptc_control_t *ctl, ptc_snapshot_t *snap, char *err, size_t errlen)
{
    const ptc_access_log_config_t *cfg = &snap->config.access_log;
    ptc_access_log_t *cur = ctl->snap != NULL && ctl->snap != snap ? ctl->snap->access_log : NULL;

    if (cfg->path == NULL)
        return 0;
    if (cur != NULL && ptc_access_log_same(cur, cfg)) {
        snap->access_log = ptc_access_log_ref(cur);
        return 0;
    }
    return ptc_access_log_new(&snap->access_log, cfg, ctl->nworkers, err, errlen);
}

/*
 * Puts cfg (a configuration with the overrides applied, validated) in service, taking it over (it is
 * disposed on failure). trigger names what asked, for the log. Returns 0, or an error with "what is wrong"
 * in err and the running configuration unchanged.
 */
static int apply(ptc_control_t *ctl, ptc_config_t *cfg, const char *trigger, char *err, size_t errlen)
{
    ptc_snapshot_t *snap = NULL;
    ptc_lsock_t *socks = NULL;
    bool *fresh = NULL;
    char diff[1024];
    int ret;

    if (workers_for(cfg) != ctl->nworkers) {
        ptc_log_warn("configuration (%s): workers: %zu -> %zu needs a restart; %zu workers keep running", trigger, ctl->nworkers,
                     workers_for(cfg), ctl->nworkers);
    }
    ptc_config_diff(&ctl->snap->config, cfg, diff, sizeof(diff));
    ptc_snapshot_inputs_t in = {ptc__jwks_document, ctl, ctl->snap};
    if ((ret = ptc_snapshot_new(&snap, cfg, ctl->snap->version + 1, &in, err, errlen)) != 0) {
        ptc_config_dispose(cfg);
        return ret;
    }
    if ((ret = attach_access_log(ctl, snap, err, errlen)) != 0) {
        ptc_snapshot_release(snap);
        return ret;
    }
    if ((ret = socks_build(&snap->config, ctl->socks, ctl->nsocks, ctl->nworkers, &socks, &fresh, err, errlen)) != 0) {
        ptc_snapshot_release(snap);
        return ret;
    }
    int *col = malloc((snap->config.num_listeners + 1) * sizeof(*col));
    if (col == NULL) {
        for (size_t k = 0; k < snap->config.num_listeners; k++)
            if (!fresh[k]) {
                free(socks[k].fds);
                socks[k].fds = NULL;
            }
        socks_free(socks, snap->config.num_listeners, ctl->nworkers, true);
        free(fresh);
        ptc_snapshot_release(snap);
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
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
    ptc_log_set_level(PTC_MIN(snap->config.log_level, PTC_LOG_INFO)); /* the summary is written in any case */
    ptc_log_info("configuration version %" PRIu64 " applied (%s): %s", snap->version, trigger, diff);
    ptc_log_set_level(snap->config.log_level);
    ptc_snapshot_set(&ctl->snap, snap);
    ptc_snapshot_release(snap);
    ctl->reloads_ok++;
    return 0;
}

/* Waits (up to timeout_ms) until every worker runs version v; false when one did not in time. */
static bool wait_applied(ptc_control_t *ctl, uint64_t v, int timeout_ms)
{
    uint64_t deadline = ptc_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        size_t behind = 0;
        for (size_t i = 0; i < ctl->nworkers; i++)
            behind += atomic_load(&ctl->workers[i].applied_version) < v;
        uint64_t now = ptc_now_ms();
        if (behind == 0 || now >= deadline)
            return behind == 0;
        struct pollfd p = {ctl->ack_fd, POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now)) > 0) {
            uint64_t count;
            if (read(ctl->ack_fd, &count, sizeof(count)) < 0) {
                /* EAGAIN: another reader took it */
            }
        }
    }
}

/*
 * Writes the configuration back to its file, atomically (a temporary file in the same directory, then a
 * rename over the file the path resolves to, so that a symlink stays a symlink), so that a restart
 * keeps what the admin API changed. The watcher is told it is our own text.
 */
static bool persist(ptc_control_t *ctl, char *why, size_t whylen)
{
    const char *path = ctl->opts->config_file;
    char *text = NULL, *real = NULL, tmp[PATH_MAX + 32];
    size_t len = 0;
    int fd = -1;
    bool ok = false;

    if (path == NULL) {
        ptc_errorf(0, why, whylen, "no configuration file (--config) to write the change to; it lasts until the next restart");
        return false;
    }
    if (ptc_config_emit(&ctl->config, PTC_CONFIG_YAML, 0, &text, &len) != 0) {
        ptc_errorf(0, why, whylen, "not written to %s: out of memory", path);
        return false;
    }
    if ((real = realpath(path, NULL)) == NULL) {
        ptc_errorf(0, why, whylen, "not written to %s: %s", path, strerror(errno));
        goto exit;
    }
    snprintf(tmp, sizeof(tmp), "%s.portico-%d.tmp", real, (int)getpid());
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        ptc_errorf(0, why, whylen, "not written to %s: %s: %s", path, tmp, strerror(errno));
        goto exit;
    }
    struct stat st;
    if (stat(real, &st) == 0 && fchmod(fd, st.st_mode & 07777) != 0) {
        /* the old file's permissions are a courtesy; the content is what matters */
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ptc_errorf(0, why, whylen, "not written to %s: %s", path, strerror(errno));
            goto exit;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        ptc_errorf(0, why, whylen, "not written to %s: %s", path, strerror(errno));
        goto exit;
    }
    fd = -1;
    if (rename(tmp, real) != 0) {
        ptc_errorf(0, why, whylen, "not written to %s: %s", path, strerror(errno));
        goto exit;
    }
    if (ctl->watching)
        ptc_filewatch_set_loaded(&ctl->fw, text, len);
    ok = true;

exit:
    if (fd >= 0)
        close(fd);
    if (!ok && real != NULL)
        unlink(tmp);
    free(real);
    free(text);
    return ok;
}

static void watch_reconcile(ptc_control_t *ctl);
static void drain_done(ptc_control_t *ctl);
static int change(ptc_control_t *ctl, ptc_config_t *base, const char *trigger, char *err, size_t errlen);

int ptc__control_apply_config(ptc_control_t *ctl, ptc_config_t *cfg, const char *trigger, char *err, size_t errlen)
{
    return change(ctl, cfg, trigger, err, errlen);
}

/*
 * Makes base (taken over) the operator's configuration: the overrides on a copy of it, then apply().
 * Returns 0 or an error with what is wrong in err; base is disposed on failure.
 */
static int change(ptc_control_t *ctl, ptc_config_t *base, const char *trigger, char *err, size_t errlen)
{
    ptc_config_t eff;
    int ret;

    if ((ret = effective(&eff, base, ctl->opts->overrides, err, errlen)) != 0 || (ret = apply(ctl, &eff, trigger, err, errlen)) != 0) {
        ptc_config_dispose(base);
        return ret;
    }
    ptc_config_dispose(&ctl->config);
    ctl->config = *base;
    watch_reconcile(ctl);
    char why[512];
    if (ptc__jwks_reconcile(ctl, why, sizeof(why)) != 0)
        ptc_log_error("%s", why);
    /* not from here: the change may come from the admin API's own request callback */
    event_active(ctl->admin_ev, EV_TIMEOUT, 0);
    return 0;
}

void ptc__control_failed(ptc_control_t *ctl, const char *trigger, const char *err)
{
    ctl->reloads_failed++;
    snprintf(ctl->last_error, sizeof(ctl->last_error), "%s: %s", trigger, err);
    ptc_log_error("configuration reload (%s) failed; version %" PRIu64 " stays in service: %s", trigger, ctl->snap->version, err);
}

/* Reloads the configuration file whose content is text: SIGHUP and file changes. */
static void reload_text(ptc_control_t *ctl, const char *text, size_t len, const char *trigger)
{
    ptc_config_t base;
    char err[1024];

    if (load_file_config(&base, ctl->opts->config_file, text, len, err, sizeof(err)) != 0 ||
        change(ctl, &base, trigger, err, sizeof(err)) != 0) {
        ptc__control_failed(ctl, trigger, err);
        return;
    }
    if (ctl->watching)
        ptc_filewatch_set_loaded(&ctl->fw, text, len);
}

/* SIGHUP: the file is read again even when its text is unchanged (certificate files may have changed). */
static void reload(ptc_control_t *ctl, const char *trigger)
{
    char *text = NULL, err[512];
    size_t len = 0;

    if (ctl->draining) {
        ptc_log_warn("configuration reload (%s) ignored: draining", trigger);
        return;
    }
    if (ctl->opts->config_file != NULL &&
        ptc_read_file(ctl->opts->config_file, PTC_FILEWATCH_MAX_SIZE, &text, &len, err, sizeof(err)) != 0) {
        ptc__control_failed(ctl, trigger, err);
        return;
    }
    reload_text(ctl, text, len, trigger);
    free(text);
}

int ptc__control_change(ptc_control_t *ctl, ptc_control_edit_cb edit, const void *arg, ptc_config_t *next, const char *trigger,
                        ptc_control_result_t *res, char *err, size_t errlen)
{
    ptc_config_t base;
    int status;

    memset(res, 0, sizeof(*res));
    if (ctl->draining) {
        if (edit == NULL)
            ptc_config_dispose(next);
        return ptc_errorf(503, err, errlen, "draining: the configuration no longer changes");
    }
    if (edit != NULL) {
        if (ptc_config_copy(&base, &ctl->config) != 0)
            return ptc_errorf(500, err, errlen, "out of memory");
        if ((status = edit(ctl, &base, arg, err, errlen)) != 0 || (status = ptc_config_validate(&base, err, errlen) != 0 ? 400 : 0) != 0) {
            ptc_config_dispose(&base);
            return status;
        }
    } else {
        base = *next;
    }
    if (ptc_config_eq(&base, &ctl->config)) {
        ptc_config_dispose(&base);
        res->version = ctl->snap->version;
        res->persisted = true;
        return 0;
    }
    if (change(ctl, &base, trigger, err, errlen) != 0) {
        ptc__control_failed(ctl, trigger, err);
        return 400;
    }
    res->version = ctl->snap->version;
    res->changed = true;
    if (!wait_applied(ctl, res->version, 5000))
        ptc_log_warn("configuration version %" PRIu64 ": not every worker has applied it after 5 s", res->version);
    res->persisted = persist(ctl, res->warning, sizeof(res->warning));
    if (!res->persisted)
        ptc_log_warn("configuration version %" PRIu64 ": %s", res->version, res->warning);
    return 0;
}

static void on_file_event(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_control_t *ctl = arg;
    if (ptc_filewatch_read_events(&ctl->fw)) {
        struct timeval tv = {(time_t)(ctl->fw.debounce_ms / 1000), (suseconds_t)(ctl->fw.debounce_ms % 1000 * 1000)};
        evtimer_add(ctl->debounce_ev, &tv);
    }
}

static void on_file_settled(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_control_t *ctl = arg;
    char *text = NULL, err[512];
    size_t len = 0;

    switch (ptc_filewatch_check(&ctl->fw, &text, &len, err, sizeof(err))) {
    case 1:
        if (ctl->draining)
            ptc_log_warn("configuration file changed; ignored: draining");
        else
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
static void watch_start(ptc_control_t *ctl, char **text, size_t *len)
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

/* Follows the `watch` setting: the file's events are listened to only while it is true. */
static void watch_reconcile(ptc_control_t *ctl)
{
    if (ctl->fw_ev == NULL)
        return;
    bool on = event_pending(ctl->fw_ev, EV_READ, NULL) != 0;
    if (ctl->config.watch && !on) {
        event_add(ctl->fw_ev, NULL);
    } else if (!ctl->config.watch && on) {
        event_del(ctl->fw_ev);
        event_del(ctl->debounce_ev);
        ptc_log_info("configuration file: not watched (watch: false); changes are applied on SIGHUP");
    }
}

/* ---- the pid file (portico -s reload finds the process through it) ---- */

static char *pidfile_path; /* the file this process wrote, removed at exit */

static int pidfile_write(ptc_control_t *ctl, char *err, size_t errlen)
{
    const char *path = ctl->config.pid_file;
    char buf[32];
    int fd, n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());

    if (path == NULL)
        return 0;
    if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0 || write(fd, buf, (size_t)n) != n) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return ptc_errorf(PTC_EIO, err, errlen, "pid_file: cannot write %s: %s", path, strerror(e));
    }
    close(fd);
    pidfile_path = strdup(path);
    return 0;
}

static void pidfile_remove(ptc_control_t *ctl)
{
    (void)ctl;
    if (pidfile_path != NULL) {
        unlink(pidfile_path);
        free(pidfile_path);
        pidfile_path = NULL;
    }
}

/* ---- readiness and drain ---- */

size_t ptc__control_ready(ptc_control_t *ctl, char (*why)[200], size_t cap)
{
    const ptc_config_t *cfg = &ctl->snap->config;
    uint64_t now = ptc_now_ms();
    size_t n = 0;

    if (!ctl->serving && n < cap)
        snprintf(why[n++], sizeof(why[0]), "the listeners are not open yet");
    if (ctl->draining && n < cap)
        snprintf(why[n++], sizeof(why[0]), "draining");
    for (size_t i = 0; i < cfg->num_upstreams && n < cap; i++) {
        const ptc_upstream_config_t *uc = &cfg->upstreams[i];
        ptc_endpoint_status_t **eps = ctl->snap->status->upstreams[i].endpoints;
        bool any = false;
        for (size_t j = 0; j < uc->num_endpoints && !any; j++)
            any = ptc_endpoint_available(eps[j], &uc->health_check, now);
        if (any)
            continue;
        int pos = snprintf(why[n], sizeof(why[0]), "upstream '%s': no endpoint can take calls (", uc->name);
        for (size_t j = 0; j < uc->num_endpoints && pos > 0 && (size_t)pos < sizeof(why[0]); j++) {
            ptc_endpoint_status_t *st = eps[j];
            int h = atomic_load(&st->health);
            const char *what = atomic_load(&st->ejected_until_ms) > now ? "ejected"
                               : h == PTC_HEALTH_UNKNOWN                ? "not checked yet"
                                                                        : ptc_health_name((ptc_health_t)h);
            pos += snprintf(why[n] + pos, sizeof(why[0]) - (size_t)pos, "%s%s %s", j != 0 ? ", " : "", st->label, what);
        }
        if (pos > 0 && (size_t)pos < sizeof(why[0]) - 1)
            snprintf(why[n] + pos, sizeof(why[0]) - (size_t)pos, ")");
        n++;
    }
    return n;
}

/* Every worker finished: the waiting POST /drain requests get their answer, then the loop ends. */
static void drain_done(ptc_control_t *ctl)
{
    struct timeval tv = {1, 0};
    ptc_log_info("drain complete");
    evtimer_add(ctl->exit_ev, &tv); /* in case an answer never completes (its client went away) */
    ctl->drain_answers_out = ctl->num_drain_waiters;
    for (size_t i = 0; i < ctl->num_drain_waiters; i++) {
        struct evhttp_request *req = ctl->drain_waiters[i];
        struct evbuffer *b = evbuffer_new();
        if (b != NULL)
            evbuffer_add_printf(b, "{\"drained\": true}\n");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        evhttp_send_reply(req, 200, NULL, b);
        if (b != NULL)
            evbuffer_free(b);
    }
    ctl->num_drain_waiters = 0;
    if (ctl->drain_answers_out == 0)
        event_base_loopbreak(ctl->base);
}

static void on_drain_answer_sent(struct evhttp_request *req, void *arg)
{
    (void)req;
    ptc_control_t *ctl = arg;
    if (ctl->drain_answers_out != 0 && --ctl->drain_answers_out == 0)
        event_base_loopbreak(ctl->base);
}

int ptc__control_drain_wait(ptc_control_t *ctl, struct evhttp_request *req)
{
    if (ctl->num_drain_waiters == PTC_CONTROL_MAX_DRAIN_WAITERS || event_pending(ctl->exit_ev, EV_TIMEOUT, NULL))
        return -1;
    evhttp_request_set_on_complete_cb(req, on_drain_answer_sent, ctl);
    ctl->drain_waiters[ctl->num_drain_waiters++] = req;
    return 0;
}

static void drain_workers(ptc_control_t *ctl)
{
    ctl->workers_draining = true;
    for (size_t i = 0; i < ctl->nworkers; i++)
        ptc_worker_request_drain(&ctl->workers[i]);
}

static void on_drain_delay(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    drain_workers(arg);
}

static void on_exit_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_control_t *ctl = arg;
    event_base_loopbreak(ctl->base);
}

void ptc__control_drain(ptc_control_t *ctl, const char *trigger)
{
    const ptc_timeouts_config_t *t = &ctl->snap->config.timeouts;
    if (ctl->draining) {
        ptc_log_info("%s: draining already", trigger);
        return;
    }
    ctl->draining = true; /* /ready says 503 from here, before any listener closes */
    if (t->drain_delay_ms != 0) {
        ptc_log_info("%s: draining (not ready; the listeners close in %" PRIu64 " ms, then calls in flight get up to %" PRIu64
                     " ms)",
                     trigger, t->drain_delay_ms, t->drain_ms);
        struct timeval tv = {(time_t)(t->drain_delay_ms / 1000), (suseconds_t)(t->drain_delay_ms % 1000 * 1000)};
        evtimer_add(ctl->drain_ev, &tv);
        return;
    }
    ptc_log_info("%s: draining (up to %" PRIu64 " ms)", trigger, t->drain_ms);
    drain_workers(ctl);
}

/* ---- events ---- */

static void on_admin_change(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_control_t *ctl = arg;
    char why[512];
    if (ptc__admin_reconcile(ctl, why, sizeof(why)) != 0)
        ptc_log_error("admin API: %s", why);
}

static void on_ack(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    ptc_control_t *ctl = arg;
    uint64_t count;
    if (read(fd, &count, sizeof(count)) < 0) {
        /* EAGAIN: nothing new */
    }
    uint64_t v = ctl->snap->version;
    size_t exited = 0;
    for (size_t i = 0; i < ctl->nworkers; i++) {
        v = PTC_MIN(v, (uint64_t)atomic_load(&ctl->workers[i].applied_version));
        exited += atomic_load(&ctl->workers[i].exited);
    }
    if (v > ctl->announced) {
        ctl->announced = v;
        ptc_log_debug("configuration version %" PRIu64 " in service on all %zu workers", v, ctl->nworkers);
    }
    if (ctl->workers_draining && exited == ctl->nworkers && !event_pending(ctl->exit_ev, EV_TIMEOUT, NULL))
        drain_done(ctl);
}

static void on_signal(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    ptc_control_t *ctl = arg;
    struct signalfd_siginfo si;

    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGHUP:
            reload(ctl, "SIGHUP");
            break;
        case SIGUSR1: { /* logrotate: the access log file was renamed; write to a new one under its name */
            char why[512];
            if (ctl->snap->access_log == NULL)
                break;
            if (ptc_access_log_reopen(ctl->snap->access_log, why, sizeof(why)) != 0)
                ptc_log_error("SIGUSR1: %s; the access log keeps writing to the file it had", why);
            else
                ptc_log_info("SIGUSR1: access log reopened (%s)", ctl->snap->config.access_log.path);
            break;
        }
        case SIGTERM:
        case SIGINT:
            ptc__control_drain(ctl, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        default:
            break;
        }
    }
}

/* ---- start-up and shutdown ---- */

static int setup_events(ptc_control_t *ctl, const sigset_t *sigs)
{
    if ((ctl->base = event_base_new()) == NULL)
        return PTC_ENOMEM;
    ctl->dns = evdns_base_new(ctl->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (ctl->dns == NULL && (ctl->dns = evdns_base_new(ctl->base, 0)) != NULL)
        evdns_base_load_hosts(ctl->dns, NULL); /* no resolv.conf: numeric addresses and /etc/hosts still work */
    if (ctl->dns == NULL)
        return PTC_ENOMEM;
    if (ctl->watching) {
        ctl->fw_ev = event_new(ctl->base, ptc_filewatch_fd(&ctl->fw), EV_READ | EV_PERSIST, on_file_event, ctl);
        ctl->debounce_ev = evtimer_new(ctl->base, on_file_settled, ctl);
        if (ctl->fw_ev == NULL || ctl->debounce_ev == NULL)
            return PTC_ENOMEM;
        watch_reconcile(ctl);
    }
    if ((ctl->sig_fd = signalfd(-1, sigs, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
        return PTC_EIO;
    if ((ctl->ack_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        return PTC_EIO;
    ctl->sig_ev = event_new(ctl->base, ctl->sig_fd, EV_READ | EV_PERSIST, on_signal, ctl);
    ctl->ack_ev = event_new(ctl->base, ctl->ack_fd, EV_READ | EV_PERSIST, on_ack, ctl);
    ctl->admin_ev = event_new(ctl->base, -1, 0, on_admin_change, ctl);
    ctl->drain_ev = evtimer_new(ctl->base, on_drain_delay, ctl);
    ctl->exit_ev = evtimer_new(ctl->base, on_exit_timer, ctl);
    if (ctl->sig_ev == NULL || ctl->ack_ev == NULL || ctl->admin_ev == NULL || ctl->drain_ev == NULL || ctl->exit_ev == NULL ||
        event_add(ctl->sig_ev, NULL) != 0 || event_add(ctl->ack_ev, NULL) != 0)
        return PTC_ENOMEM;
    return 0;
}

static void teardown_events(ptc_control_t *ctl)
{
    ptc__jwks_close(ctl);
    if (ctl->dns != NULL)
        evdns_base_free(ctl->dns, 0);
    if (ctl->fw_ev != NULL)
        event_free(ctl->fw_ev);
    if (ctl->debounce_ev != NULL)
        event_free(ctl->debounce_ev);
    if (ctl->watching)
        ptc_filewatch_dispose(&ctl->fw);
    if (ctl->sig_ev != NULL)
        event_free(ctl->sig_ev);
    if (ctl->admin_ev != NULL)
        event_free(ctl->admin_ev);
    if (ctl->drain_ev != NULL)
        event_free(ctl->drain_ev);
    if (ctl->exit_ev != NULL)
        event_free(ctl->exit_ev);
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
    ptc_control_t ctl = {.opts = opts, .sig_fd = -1, .ack_fd = -1};
    ptc_config_t cfg;
    char err[1024], *text;
    size_t len;
    bool *fresh = NULL;
    int rv;

    watch_start(&ctl, &text, &len);
    rv = load_file_config(&ctl.config, opts->config_file, text, len, err, sizeof(err));
    if (rv == 0 && (rv = effective(&cfg, &ctl.config, opts->overrides, err, sizeof(err))) != 0)
        ptc_config_dispose(&ctl.config);
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
    if (ptc_snapshot_new(&ctl.snap, &cfg, 1, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "portico: %s: %s\n", cfg.source, err);
        ptc_config_dispose(&cfg);
        ptc_config_dispose(&ctl.config);
        teardown_events(&ctl);
        return 1;
    }
    if (attach_access_log(&ctl, ctl.snap, err, sizeof(err)) != 0) {
        fprintf(stderr, "portico: %s: %s\n", ctl.snap->config.source, err);
        ptc_snapshot_release(ctl.snap);
        ptc_config_dispose(&ctl.config);
        teardown_events(&ctl);
        return 1;
    }
    ptc_tls_log_warnings(&ctl.snap->config);

    /* Signals are taken by the control thread only, through a signalfd; workers inherit the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rv = setup_events(&ctl, &sigs) != 0 ? PTC_EIO : 0;
    if (rv == 0 && (rv = ptc__admin_reconcile(&ctl, err, sizeof(err))) != 0)
        ptc_log_error("admin API: %s", err);
    if (rv == 0 && (rv = ptc__jwks_reconcile(&ctl, err, sizeof(err))) != 0)
        ptc_log_error("%s", err);
    /* The listeners last: the kernel accepts connections on a listening socket before any worker runs, so whoever
     * waits for a listener to accept (a probe, a deployment script) then finds the admin API bound as well. Both
     * are served once the loops run. */
    if (rv == 0 && (rv = socks_build(&ctl.snap->config, NULL, 0, ctl.nworkers, &ctl.socks, &fresh, err, sizeof(err))) != 0)
        ptc_log_error("%s", err);
    free(fresh);
    if (rv == 0)
        ctl.nsocks = ctl.snap->config.num_listeners;
    if (rv == 0 && (rv = pidfile_write(&ctl, err, sizeof(err))) != 0)
        ptc_log_error("%s", err);
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
        ctl.serving = true;
        if (ptc__memory_start(&ctl) != 0)
            ptc_log_warn("memory: cannot start the check that gives memory back after connections close (out of memory)");
        event_base_dispatch(ctl.base); /* until a drain is done (ptc__control_drain) */
    }
    ptc__memory_stop(&ctl);
    for (size_t i = 0; i < started; i++)
        ptc_worker_request_drain(&ctl.workers[i]);
    for (size_t i = 0; i < started; i++)
        ptc_worker_join(&ctl.workers[i]);
    for (size_t i = 0; i < inited; i++)
        ptc_worker_dispose(&ctl.workers[i]);
    free(ctl.workers);
    socks_free(ctl.socks, ctl.nsocks, ctl.nworkers, table_owns);
    ptc__admin_close(&ctl);
    teardown_events(&ctl);
    pidfile_remove(&ctl);
    ptc_snapshot_release(ctl.snap);
    ptc_config_dispose(&ctl.config);
    /* the access-log writers flush what the last calls wrote (a stalled output gets a bounded wait) */
    if (!ptc_access_log_wait_all(5000))
        ptc_log_warn("access log: a writer did not finish in 5 s");
    if (rv == 0)
        ptc_log_info("stopped");
    return rv == 0 ? 0 : 1;
}
