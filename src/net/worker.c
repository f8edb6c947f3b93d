/*
 * Workers: each thread runs its own event base with its own SO_REUSEPORT listening sockets (the kernel
 * spreads connections over them), its own downstream connections and its own upstream pools.
 *
 * Configuration: the worker holds a reference to its current snapshot (w->snap). The control thread
 * queues updates (ptc_worker_update) and wakes the worker through its eventfd; the worker applies them
 * in order from its own thread, so nothing in its event base is ever touched by another thread and
 * libevent runs without locks. Applying an update reconciles:
 *  - listeners, by descriptor: an address that stays keeps its socket (closing a SO_REUSEPORT socket
 *    would reset the connections in its accept queue); a new one gets the socket the control thread
 *    bound for it; a removed one stops accepting, accepts what is already queued, and closes; the
 *    connections it accepted drain (close once their exchanges are done);
 *  - upstream pools, by name: same name and transport settings keep the pool and its connections (the
 *    endpoint list may change: see ptc_upstream_update); otherwise the old pool is retired (its streams
 *    finish, it is freed once idle) and a new one takes the name;
 *  - the request-head block cache, emptied when the block size changes.
 * Then the new snapshot becomes current: new connections and new requests use it, while connections,
 * calls and pools keep the references they pinned.
 *
 * Drain (SIGTERM/SIGINT, POST /drain; after timeouts.drain_delay, during which the control thread already
 * answers /ready with 503): the worker closes its listeners and its idle connections, lets calls in
 * flight finish, and leaves its loop when the last connection closes or when timeouts.drain expires,
 * whichever comes first; then it tells the control thread (exited, ack_fd), which ends the process once
 * every worker is done.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "portico/alloc.h"
#include "portico/conn.h"
#include "portico/fault.h"
#include "portico/jwt.h"
#include "portico/log.h"
#include "portico/tls.h"
#include "portico/upstream.h"
#include "portico/worker.h"

#define ACCEPT_RETRY_MS 100 /* listeners pause this long after EMFILE/ENFILE instead of spinning */
#define DRAIN_FLUSH_MS 1000 /* after the drain timeout: how long the final answers may take to flush */
#define REFUSED_LOG_MS 1000 /* refused connections are logged at most this often */

static ptc_listener_t *listener_of(ptc_worker_t *w, struct evconnlistener *l)
{
    for (size_t i = 0; i < w->num_listeners; i++)
        if (w->listeners[i].ev == l)
            return &w->listeners[i];
    return NULL;
}

/* True when fd is one of the worker's listening sockets (open, or closed by a drain). */
static bool listener_known(const ptc_worker_t *w, int fd)
{
    for (size_t i = 0; i < w->num_listeners; i++)
        if (w->listeners[i].fd == fd)
            return true;
    return false;
}

/* Closes the descriptors of an update that the worker does not own yet (it will not take them). */
static void close_new_fds(const ptc_worker_t *w, const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0 && !listener_known(w, fds[i]))
            close(fds[i]);
}

/*
 * A connection closed at accept because a connection limit is reached: counted, and logged at most once a
 * second (a flood of refusals would otherwise flood the log) with the number refused since the last line.
 */
static void refused(ptc_worker_t *w, const char *limit)
{
    PTC_STAT_INC(w->limit_stats.connections_refused);
    w->refused_unlogged++;
    uint64_t now = ptc_now_ms();
    if (now - w->refused_logged_ms < REFUSED_LOG_MS && w->refused_logged_ms != 0)
        return;
    ptc_log_warn("refusing connections: %s (%zu open in this worker, %zu in all) reached; %" PRIu64
                 " refused since the last report",
                 limit, w->num_conns, ptc_conn_total(), w->refused_unlogged);
    w->refused_logged_ms = now;
    w->refused_unlogged = 0;
}

/* Serves an accepted connection under the current snapshot; li->index is its listener in that snapshot. */
static void serve(ptc_worker_t *w, const ptc_listener_t *li, evutil_socket_t fd, struct sockaddr *sa)
{
    const ptc_snapshot_t *snap = w->snap;
    char peer[64];
    int one = 1;

    const ptc_limits_config_t *lim = &snap->config.limits;
    const char *full = w->num_conns >= lim->max_connections ? "limits.max_connections"
                       : lim->max_connections_total != 0 && ptc_conn_total() >= lim->max_connections_total
                           ? "limits.max_connections_total"
                           : NULL;
    if (w->draining || full != NULL) {
        if (full != NULL)
            refused(w, full);
        else
            ptc_log_warn("refusing connection: draining");
        evutil_closesocket(fd);
        return;
    }
    PTC_STAT_INC(w->metrics.conns_accepted);
    ptc_conn_format_peer(sa, peer, sizeof(peer));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (snap->tls != NULL && snap->tls->listeners[li->index] != NULL) {
        ptc_tls_accept(w, fd, peer, li->id, snap->tls->listeners[li->index]);
        return;
    }
    struct bufferevent *bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    ptc_bev_read_direct(bev); /* readv without ioctl(FIONREAD); not added yet, so it cannot fail */
    ptc_conn_serve(w, bev, peer, li->id, false);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
    (void)socklen;
    ptc_worker_t *w = arg;
    const ptc_listener_t *li = listener_of(w, l);
    if (li == NULL) { /* cannot happen: listeners are freed with their evconnlistener */
        evutil_closesocket(fd);
        return;
    }
    serve(w, li, fd, sa);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    ptc_worker_t *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* out of descriptors: stop accepting for a moment rather than spin on a level-triggered listener */
        ptc_log_error("accept failed: %s (%zu connections open); accepting pauses for %d ms", evutil_socket_error_to_string(err),
                      w->num_conns, ACCEPT_RETRY_MS);
        PTC_STAT_INC(w->limit_stats.accept_paused);
        evconnlistener_disable(l);
        struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
        evtimer_add(w->accept_retry, &tv);
    } else {
        ptc_log_error("accept failed: %s", evutil_socket_error_to_string(err));
    }
}

static void on_accept_retry(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_worker_t *w = arg;
    if (w->draining)
        return;
    for (size_t i = 0; i < w->num_listeners; i++)
        if (w->listeners[i].ev != NULL)
            evconnlistener_enable(w->listeners[i].ev);
}

static void on_idle_sweep(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_conn_idle_sweep(arg);
}

/* Wraps a listening socket the control thread made; false when out of memory (fd is then closed). */
static bool listener_open(ptc_worker_t *w, ptc_listener_t *li, int fd, size_t index)
{
    li->fd = fd;
    li->index = index;
    li->id = ++w->next_listener_id;
    /* backlog 0: listen() was called already */
    li->ev = evconnlistener_new(w->base, on_accept, w, LEV_OPT_CLOSE_ON_FREE | (w->draining ? LEV_OPT_DISABLED : 0), 0, fd);
    if (li->ev == NULL) {
        close(fd);
        return false;
    }
    evconnlistener_set_error_cb(li->ev, on_accept_error);
    return true;
}

/*
 * A listener removed by a reload: it stops accepting, the connections it accepted before drain (close
 * once their exchanges are done), and the connections still in its accept queue are accepted and served
 * like any other (closing the socket would reset them). Runs while w->snap is still the snapshot
 * li->index refers to.
 */
static void listener_remove(ptc_worker_t *w, ptc_listener_t *li)
{
    evconnlistener_disable(li->ev);
    for (ptc_conn_t *c = TAILQ_FIRST(&w->conns), *next; c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->listener == li->id)
            c->cb->drain(c);
    }
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(li->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break; /* EAGAIN: the queue is empty */
        }
        serve(w, li, fd, (struct sockaddr *)&ss);
    }
    evconnlistener_free(li->ev);
    li->ev = NULL;
}

static void maybe_exit(ptc_worker_t *w)
{
    if (w->draining && w->num_conns == 0)
        event_base_loopexit(w->base, NULL);
}

static void on_drain(ptc_worker_t *w)
{
    if (w->draining)
        return;
    w->draining = true;
    for (size_t i = 0; i < w->num_listeners; i++) { /* the records stay: they name descriptors closed here */
        evconnlistener_free(w->listeners[i].ev);
        w->listeners[i].ev = NULL;
    }
    ptc_log_info("draining: %zu connections, %zu calls in flight", w->num_conns, w->num_calls);
    for (ptc_conn_t *c = TAILQ_FIRST(&w->conns), *next; c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        c->cb->drain(c);
    }
    uint64_t ms = w->snap->config.timeouts.drain_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(w->drain_timer, &tv);
    maybe_exit(w);
}

static void on_drain_timeout(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_worker_t *w = arg;
    if (w->drain_expired) {
        ptc_log_warn("drain: %zu connections did not flush in time; closing them", w->num_conns);
        event_base_loopexit(w->base, NULL);
        return;
    }
    w->drain_expired = true;
    ptc_log_warn("drain timeout: ending %zu calls in flight with UNAVAILABLE", w->num_calls);
    for (ptc_conn_t *c = TAILQ_FIRST(&w->conns), *next; c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        c->cb->fail_calls(c, "gateway shutting down (drain timeout)");
    }
    struct timeval tv = {DRAIN_FLUSH_MS / 1000, DRAIN_FLUSH_MS % 1000 * 1000};
    evtimer_add(w->drain_timer, &tv);
    maybe_exit(w);
}

/* ---- pools ---- */


ptc_upstream_t *ptc_worker_pool(ptc_worker_t *w, const ptc_snapshot_t *snap, size_t index)
{
    if (snap == w->snap)
        return w->pools[index];
    const char *name = snap->config.upstreams[index].name;
    for (size_t i = 0; i < w->snap->config.num_upstreams; i++)
        if (strcmp(w->snap->config.upstreams[i].name, name) == 0)
            return w->pools[i];
    return NULL;
}

void ptc_worker_pool_idle(ptc_worker_t *w)
{
    event_active(w->gc_ev, EV_TIMEOUT, 0);
}

/* Frees retired pools that have nothing left (run from the loop, never from inside a pool). */
static void on_gc(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_worker_t *w = arg;
    for (ptc_upstream_t *up = TAILQ_FIRST(&w->retired_pools), *next; up != NULL; up = next) {
        next = TAILQ_NEXT(up, retired_link);
        ptc_upstream_retire(up); /* closes connections that became idle */
        if (ptc_upstream_idle(up)) {
            TAILQ_REMOVE(&w->retired_pools, up, retired_link);
            ptc_log_debug("upstream %s: retired pool freed", up->client.config->name);
            ptc_upstream_free(up);
        }
    }
}

static void pool_retire(ptc_worker_t *w, ptc_upstream_t *up)
{
    TAILQ_INSERT_TAIL(&w->retired_pools, up, retired_link);
    ptc_upstream_retire(up);
    ptc_worker_pool_idle(w);
}

/*
 * The pools for snap's upstreams, reusing the current ones by name. Returns the new array (the pools
 * not reused are retired) or NULL when out of memory (nothing changed).
 */
static ptc_upstream_t **pools_reconcile(ptc_worker_t *w, ptc_snapshot_t *snap)
{
    const ptc_config_t *cfg = &snap->config, *cur = w->snap != NULL ? &w->snap->config : NULL;
    size_t ncur = cur != NULL ? cur->num_upstreams : 0;
    ptc_upstream_t **pools = calloc(cfg->num_upstreams, sizeof(*pools));
    size_t *from = calloc(cfg->num_upstreams + 1, sizeof(*from)); /* current index + 1 of each reused pool, 0: new */

    if (pools == NULL || from == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        for (size_t j = 0; j < ncur && from[i] == 0; j++)
            if (strcmp(cur->upstreams[j].name, cfg->upstreams[i].name) == 0 &&
                ptc_upstream_config_same_transport(&cur->upstreams[j], &cfg->upstreams[i]))
                from[i] = j + 1;
        if (from[i] == 0 && (pools[i] = ptc_upstream_new(w, snap, i)) == NULL)
            goto nomem;
    }
    /* from here nothing fails but an endpoint update, which leaves its pool as it was */
    bool *kept = calloc(ncur + 1, sizeof(*kept));
    if (kept == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        if (from[i] == 0)
            continue;
        ptc_upstream_t *up = w->pools[from[i] - 1];
        if (ptc_upstream_update(up, snap, i) != 0) {
            /* keep serving with the old endpoints rather than drop the pool's connections */
            ptc_log_error("upstream %s: out of memory while applying its new endpoints; it keeps the previous ones",
                          cfg->upstreams[i].name);
        }
        pools[i] = up;
        kept[from[i] - 1] = true;
    }
    for (size_t j = 0; j < ncur; j++)
        if (!kept[j])
            pool_retire(w, w->pools[j]);
    free(kept);
    free(from);
    return pools;

nomem:
    for (size_t i = 0; pools != NULL && from != NULL && i < cfg->num_upstreams; i++)
        if (from[i] == 0)
            ptc_upstream_free(pools[i]);
    free(pools);
    free(from);
    return NULL;
}

/* ---- updates ---- */

static void update_free(ptc_worker_update_t *u)
{
    ptc_snapshot_release(u->snap);
    free(u->fds);
    free(u);
}

static void ack(ptc_worker_t *w)
{
    uint64_t one = 1;
    if (w->ack_fd >= 0 && write(w->ack_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN only: the counter is already set and the control thread will look */
    }
}

/* Applies one update (see the top of this file). On failure the worker stays on its current snapshot. */
static void apply(ptc_worker_t *w, ptc_worker_update_t *u)
{
    ptc_snapshot_t *snap = u->snap;
    size_t n = snap->config.num_listeners;
    ptc_listener_t *ls = calloc(n + 1, sizeof(*ls));
    bool *kept = calloc(w->num_listeners + 1, sizeof(*kept));
    ptc_upstream_t **pools = NULL;

    if (w->draining) {
        /* shutting down: the listeners are closed and stay so; the configuration changes nothing now */
        close_new_fds(w, u->fds, n);
        free(ls);
        free(kept);
        return;
    }
    if (ls == NULL || kept == NULL || (pools = pools_reconcile(w, snap)) == NULL) {
        ptc_log_error("configuration version %" PRIu64 ": out of memory; this worker keeps version %" PRIu64, snap->version,
                      w->snap->version);
        close_new_fds(w, u->fds, n);
        free(ls);
        free(kept);
        return;
    }
    size_t opened = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < w->num_listeners && w->listeners[j].fd != u->fds[i])
            j++;
        if (j < w->num_listeners) {
            ls[opened] = w->listeners[j];
            ls[opened++].index = i;
            kept[j] = true;
        } else if (u->fds[i] < 0) {
            continue; /* the control thread could not give this worker a socket for it */
        } else if (listener_open(w, &ls[opened], u->fds[i], i)) {
            opened++;
        } else {
            ptc_log_error("listen %s:%u: out of memory; this worker does not accept on it", snap->config.listeners[i].addr.host,
                          snap->config.listeners[i].addr.port);
        }
    }
    for (size_t j = 0; j < w->num_listeners; j++)
        if (!kept[j])
            listener_remove(w, &w->listeners[j]); /* under the old snapshot, whose index it has */
    free(kept);
    free(w->listeners);
    w->listeners = ls;
    w->num_listeners = opened;

    free(w->pools);
    w->pools = pools;
    if (w->block_cache_size != snap->head_block_size) {
        while (w->num_block_cache != 0)
            free(w->block_cache[--w->num_block_cache]);
        w->block_cache_size = snap->head_block_size;
    }
    ptc_snapshot_set(&w->snap, snap);
    atomic_store(&w->applied_version, snap->version);
}

int ptc_worker_update(ptc_worker_t *w, ptc_snapshot_t *snap, const int *fds)
{
    size_t n = snap->config.num_listeners;
    ptc_worker_update_t *u = calloc(1, sizeof(*u));
    if (u == NULL || (u->fds = malloc((n + 1) * sizeof(*u->fds))) == NULL) {
        free(u);
        return PTC_ENOMEM;
    }
    memcpy(u->fds, fds, n * sizeof(*fds));
    u->snap = ptc_snapshot_ref(snap);
    pthread_mutex_lock(&w->updates_lock);
    ptc_worker_update_t **tail = &w->updates;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = u;
    pthread_mutex_unlock(&w->updates_lock);
    uint64_t one = 1;
    if (write(w->notify_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN only when the counter is already set: the worker wakes up anyway */
    }
    return 0;
}

static void on_notify(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    ptc_worker_t *w = arg;
    uint64_t count;
    ssize_t n = read(fd, &count, sizeof(count));
    (void)n;

    pthread_mutex_lock(&w->updates_lock);
    ptc_worker_update_t *u = w->updates;
    w->updates = NULL;
    pthread_mutex_unlock(&w->updates_lock);
    bool applied = u != NULL;
    while (u != NULL) {
        ptc_worker_update_t *next = u->next;
        apply(w, u);
        update_free(u);
        u = next;
    }
    if (applied)
        ack(w);
    if (atomic_load(&w->drain_requested))
        on_drain(w);
}

/* ---- caches ---- */

struct evbuffer *ptc_worker_evbuffer(ptc_worker_t *w)
{
    if (w->num_evbuf_cache != 0)
        return w->evbuf_cache[--w->num_evbuf_cache];
    return evbuffer_new();
}

void ptc_worker_evbuffer_release(ptc_worker_t *w, struct evbuffer *b)
{
    if (b == NULL)
        return;
    if (w->num_evbuf_cache == PTC_ARRAY_SIZE(w->evbuf_cache)) {
        evbuffer_free(b);
        return;
    }
    evbuffer_drain(b, evbuffer_get_length(b));
    w->evbuf_cache[w->num_evbuf_cache++] = b;
}

int ptc_worker_head_block(ptc_worker_t *w, const ptc_snapshot_t *snap, ptc_head_block_t *b)
{
    const ptc_limits_config_t *lim = &snap->config.limits;
    size_t head = ((size_t)lim->max_header_size + 15) & ~(size_t)15;
    size_t offs = (size_t)lim->max_headers * sizeof(ptc_head_off_t);

    if (snap->head_block_size == w->block_cache_size && w->num_block_cache != 0)
        b->mem = w->block_cache[--w->num_block_cache];
    else if ((b->mem = malloc(snap->head_block_size)) == NULL)
        return PTC_ENOMEM;
    b->size = snap->head_block_size;
    b->head = b->mem;
    b->offs = (ptc_head_off_t *)(void *)((char *)b->mem + head);
    b->views = (ptc_header_t *)(void *)((char *)b->mem + head + offs);
    return 0;
}

void ptc_worker_head_block_release(ptc_worker_t *w, ptc_head_block_t *b)
{
    if (b->mem != NULL) {
        /* a block sized for another configuration's limits is never handed out again */
        if (b->size != w->block_cache_size || w->num_block_cache == PTC_ARRAY_SIZE(w->block_cache))
            free(b->mem);
        else
            w->block_cache[w->num_block_cache++] = b->mem;
    }
    *b = (ptc_head_block_t){NULL, 0, NULL, NULL, NULL};
}

void ptc_worker_on_conn_closed(ptc_worker_t *w)
{
    maybe_exit(w);
}

/* ---- life cycle ---- */

int ptc_worker_init(ptc_worker_t *w, unsigned id, ptc_snapshot_t *snap, const int *fds, int ack_fd)
{
    const ptc_config_t *cfg = &snap->config;

    memset(w, 0, sizeof(*w));
    w->notify_fd = -1;
    w->ack_fd = ack_fd;
    w->id = id;
    TAILQ_INIT(&w->conns);
    TAILQ_INIT(&w->idle_conns);
    TAILQ_INIT(&w->retired_pools);
    pthread_mutex_init(&w->updates_lock, NULL);
    atomic_init(&w->drain_requested, false);
    atomic_init(&w->exited, false);
    atomic_init(&w->applied_version, snap->version);
    if ((w->base = event_base_new()) == NULL)
        goto nomem;
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (w->dns == NULL) {
        /* no resolv.conf: numeric addresses and /etc/hosts still work */
        w->dns = evdns_base_new(w->base, 0);
        if (w->dns != NULL)
            evdns_base_load_hosts(w->dns, NULL);
    }
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->notify_ev = w->notify_fd >= 0 ? event_new(w->base, w->notify_fd, EV_READ | EV_PERSIST, on_notify, w) : NULL;
    if (w->notify_ev != NULL)
        event_add(w->notify_ev, NULL);
    w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
    w->accept_retry = evtimer_new(w->base, on_accept_retry, w);
    w->gc_ev = event_new(w->base, -1, 0, on_gc, w);
    w->idle_ev = evtimer_new(w->base, on_idle_sweep, w);
    w->listeners = calloc(cfg->num_listeners + 1, sizeof(*w->listeners));
    if (w->dns == NULL || w->notify_ev == NULL || w->drain_timer == NULL || w->accept_retry == NULL || w->gc_ev == NULL ||
        w->idle_ev == NULL || w->listeners == NULL)
        goto nomem;
    if ((w->pools = pools_reconcile(w, snap)) == NULL)
        goto nomem;
    w->snap = ptc_snapshot_ref(snap);
    w->block_cache_size = snap->head_block_size;
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        if (!listener_open(w, &w->listeners[w->num_listeners], fds[i], i)) {
            for (size_t j = i + 1; j < cfg->num_listeners; j++)
                close(fds[j]);
            return PTC_ENOMEM;
        }
        w->num_listeners++;
    }
    return 0;

nomem:
    for (size_t i = 0; i < cfg->num_listeners; i++)
        close(fds[i]);
    return PTC_ENOMEM;
}

static void *run(void *arg)
{
    ptc_worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "w%u", w->id);
    ptc_log_set_thread_name(name);
    ptc_fault_thread_enable();
    event_base_dispatch(w->base);
    atomic_store(&w->exited, true);
    ack(w); /* the control thread ends the process once every worker is done */
    ptc_alloc_thread_release();
    return NULL;
}

int ptc_worker_start(ptc_worker_t *w)
{
    return pthread_create(&w->thread, NULL, run, w) == 0 ? 0 : PTC_EIO;
}

void ptc_worker_request_drain(ptc_worker_t *w)
{
    uint64_t one = 1;
    atomic_store(&w->drain_requested, true);
    if (write(w->notify_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN only when the counter is already set: the worker wakes up anyway */
    }
}

void ptc_worker_join(ptc_worker_t *w)
{
    pthread_join(w->thread, NULL);
}

void ptc_worker_dispose(ptc_worker_t *w)
{
    ptc_conn_t *c;
    while ((c = TAILQ_FIRST(&w->conns)) != NULL)
        c->cb->close(c);
    ptc_worker_update_t *u = w->updates;
    while (u != NULL) {
        ptc_worker_update_t *next = u->next;
        close_new_fds(w, u->fds, u->snap->config.num_listeners);
        update_free(u);
        u = next;
    }
    for (size_t i = 0; i < w->num_listeners; i++)
        if (w->listeners[i].ev != NULL)
            evconnlistener_free(w->listeners[i].ev);
    free(w->listeners);
    for (size_t i = 0; w->pools != NULL && i < w->snap->config.num_upstreams; i++)
        ptc_upstream_free(w->pools[i]);
    free(w->pools);
    ptc_upstream_t *up;
    while ((up = TAILQ_FIRST(&w->retired_pools)) != NULL) {
        TAILQ_REMOVE(&w->retired_pools, up, retired_link);
        ptc_upstream_free(up);
    }
    /* A name lookup canceled above (a pool's DNS refresh or connection) reports its end from the loop, which
     * frees it: give those callbacks their turn, or they and their requests would outlive the base. */
    for (int i = 0; i < 4 && w->base != NULL && event_base_get_num_events(w->base, EVENT_BASE_COUNT_ACTIVE) != 0; i++)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    if (w->gc_ev != NULL)
        event_free(w->gc_ev);
    if (w->idle_ev != NULL)
        event_free(w->idle_ev);
    if (w->notify_ev != NULL)
        event_free(w->notify_ev);
    if (w->drain_timer != NULL)
        event_free(w->drain_timer);
    if (w->accept_retry != NULL)
        event_free(w->accept_retry);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    while (w->num_evbuf_cache != 0)
        evbuffer_free(w->evbuf_cache[--w->num_evbuf_cache]);
    while (w->num_block_cache != 0)
        free(w->block_cache[--w->num_block_cache]);
    ptc_jwt_cache_free(w->jwt_cache);
    ptc_metrics_dispose(&w->metrics);
    ptc_snapshot_release(w->snap);
    if (w->dns != NULL)
        evdns_base_free(w->dns, 0);
    if (w->base != NULL)
        event_base_free(w->base);
    pthread_mutex_destroy(&w->updates_lock);
    memset(w, 0, sizeof(*w));
    w->notify_fd = -1;
    w->ack_fd = -1;
}
