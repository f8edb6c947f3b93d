/*
 * Workers: each thread runs its own event base with its own SO_REUSEPORT listeners (the kernel spreads
 * connections over them), its own downstream connections and its own upstream pools.
 *
 * Drain (SIGTERM/SIGINT): the main thread wakes the worker through its eventfd; it closes its listeners and its
 * idle connections, lets calls in flight finish, and leaves its loop when the last connection closes
 * or when timeouts.drain expires, whichever comes first.
 *
 * TLS: a TLS listener's connections go through ptc_tls_accept (handshake, then ptc_conn_serve with the
 * ALPN result). The worker owns references to the contexts in w->tls; a certificate reload hands it a new
 * set through the atomic tls_next and the eventfd (ptc_worker_set_tls), which it swaps in from its own thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include <event2/bufferevent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "portico/alloc.h"
#include "portico/conn.h"
#include "portico/log.h"
#include "portico/tls.h"
#include "portico/upstream.h"
#include "portico/worker.h"

#define ACCEPT_RETRY_MS 100 /* listeners pause this long after EMFILE/ENFILE instead of spinning */

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
    (void)socklen;
    ptc_worker_t *w = arg;
    if (w->draining || w->num_conns >= w->config->limits.max_connections) {
        ptc_log_warn("refusing connection: %s", w->draining ? "draining" : "limits.max_connections reached");
        evutil_closesocket(fd);
        return;
    }
    char peer[64];
    int one = 1;
    ptc_conn_format_peer(sa, peer, sizeof(peer));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (size_t i = 0; w->tls != NULL && i < w->num_listeners; i++) {
        if (w->listeners[i] == l && w->tls->listeners[i] != NULL) {
            ptc_tls_accept(w, fd, peer, w->tls->listeners[i]);
            return;
        }
    }
    struct bufferevent *bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    ptc_conn_serve(w, bev, peer, false);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    ptc_worker_t *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    ptc_log_error("accept failed: %s", evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* out of descriptors: stop accepting for a moment rather than spin on a level-triggered listener */
        evconnlistener_disable(l);
        struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
        evtimer_add(w->accept_retry, &tv);
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
        evconnlistener_enable(w->listeners[i]);
}

static void maybe_exit(ptc_worker_t *w)
{
    if (w->draining && w->num_conns == 0)
        event_base_loopexit(w->base, NULL);
}

static void on_drain(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_worker_t *w = arg;

    if (w->draining)
        return;
    w->draining = true;
    for (size_t i = 0; i < w->num_listeners; i++) {
        evconnlistener_free(w->listeners[i]);
        w->listeners[i] = NULL;
    }
    w->num_listeners = 0;
    ptc_log_info("draining: %zu connections, %zu calls in flight", w->num_conns, w->num_calls);
    for (ptc_conn_t *c = TAILQ_FIRST(&w->conns), *next; c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        c->cb->drain(c);
    }
    uint64_t ms = w->config->timeouts.drain_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(w->drain_timer, &tv);
    maybe_exit(w);
}

#define DRAIN_FLUSH_MS 1000 /* after the drain timeout: how long the final answers may take to flush */

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

/* Points the upstreams at the current client contexts. */
static void upstreams_use_tls(ptc_worker_t *w)
{
    for (size_t i = 0; i < w->config->num_upstreams; i++)
        w->upstreams[i].tls_ctx = w->tls != NULL ? w->tls->upstreams[i] : NULL;
}

/*
 * Cross-thread wake-ups: the main thread sets a flag (drain) or a pointer (TLS contexts) and writes
 * to the worker's eventfd; the worker acts on them from its own loop. This keeps libevent free of
 * locks (no evthread_use_pthreads): nothing else in a worker's base is touched by another thread.
 */
static void notify(ptc_worker_t *w)
{
    uint64_t one = 1;
    ssize_t n = write(w->notify_fd, &one, sizeof(one));
    (void)n; /* EAGAIN only when the counter is already set: the worker wakes up anyway */
}

static void on_drain(evutil_socket_t fd, short events, void *arg);
static void on_notify(evutil_socket_t fd, short events, void *arg);

static void on_tls_update(ptc_worker_t *w)
{
    ptc_tls_contexts_t *next = atomic_exchange(&w->tls_next, NULL);
    if (next == NULL)
        return;
    ptc_tls_contexts_free(w->tls); /* open connections hold their own references */
    w->tls = next;
    upstreams_use_tls(w);
    ptc_log_debug("TLS certificates updated for new connections");
}

int ptc_worker_set_tls(ptc_worker_t *w, const ptc_tls_contexts_t *tls)
{
    ptc_tls_contexts_t *copy = ptc_tls_contexts_dup(tls);
    if (copy == NULL)
        return PTC_ENOMEM;
    /* a set the worker has not taken yet is simply replaced: it never saw it */
    ptc_tls_contexts_free(atomic_exchange(&w->tls_next, copy));
    notify(w);
    return 0;
}

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

int ptc_worker_head_block(ptc_worker_t *w, ptc_head_block_t *b)
{
    const ptc_limits_config_t *lim = &w->config->limits;
    size_t head = ((size_t)lim->max_header_size + 15) & ~(size_t)15;
    size_t offs = (size_t)lim->max_headers * sizeof(ptc_head_off_t);
    size_t views = ((size_t)lim->max_headers + PTC_HTTP_HEADERS_MAX_FIELDS) * sizeof(ptc_header_t);

    if (w->num_block_cache != 0)
        b->mem = w->block_cache[--w->num_block_cache];
    else if ((b->mem = malloc(head + offs + views)) == NULL)
        return PTC_ENOMEM;
    b->head = b->mem;
    b->offs = (ptc_head_off_t *)(void *)((char *)b->mem + head);
    b->views = (ptc_header_t *)(void *)((char *)b->mem + head + offs);
    return 0;
}

void ptc_worker_head_block_release(ptc_worker_t *w, ptc_head_block_t *b)
{
    if (b->mem != NULL) {
        if (w->num_block_cache == PTC_ARRAY_SIZE(w->block_cache))
            free(b->mem);
        else
            w->block_cache[w->num_block_cache++] = b->mem;
    }
    *b = (ptc_head_block_t){NULL, NULL, NULL, NULL};
}

void ptc_worker_on_conn_closed(ptc_worker_t *w)
{
    maybe_exit(w);
}

static int listen_on(ptc_worker_t *w, const ptc_hostport_t *hp, struct evconnlistener **out)
{
    struct evutil_addrinfo hints = {0}, *res = NULL;
    char port[8];
    int rv;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG;
    snprintf(port, sizeof(port), "%u", hp->port);
    /* start-up only: listener addresses are resolved before the loop runs */
    if ((rv = evutil_getaddrinfo(hp->host, port, &hints, &res)) != 0) {
        ptc_log_error("listen %s:%u: cannot resolve: %s", hp->host, hp->port, evutil_gai_strerror(rv));
        return PTC_EIO;
    }
    *out = evconnlistener_new_bind(w->base, on_accept, w,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC, 1024,
                                   res->ai_addr, (int)res->ai_addrlen);
    evutil_freeaddrinfo(res);
    if (*out == NULL) {
        ptc_log_error("listen %s:%u: %s", hp->host, hp->port, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return PTC_EIO;
    }
    evconnlistener_set_error_cb(*out, on_accept_error);
    return 0;
}

int ptc_worker_init(ptc_worker_t *w, unsigned id, const ptc_config_t *config, const ptc_tls_contexts_t *tls)
{
    memset(w, 0, sizeof(*w));
    w->notify_fd = -1;
    w->id = id;
    w->config = config;
    TAILQ_INIT(&w->conns);
    if ((w->base = event_base_new()) == NULL)
        return PTC_ENOMEM;
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (w->dns == NULL) {
        /* no resolv.conf: numeric addresses and /etc/hosts still work */
        w->dns = evdns_base_new(w->base, 0);
        if (w->dns != NULL)
            evdns_base_load_hosts(w->dns, NULL);
    }
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->drain_ev = w->notify_fd >= 0 ? event_new(w->base, w->notify_fd, EV_READ | EV_PERSIST, on_notify, w) : NULL;
    if (w->drain_ev != NULL)
        event_add(w->drain_ev, NULL);
    atomic_init(&w->drain_requested, false);
    w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
    w->accept_retry = evtimer_new(w->base, on_accept_retry, w);
    atomic_init(&w->tls_next, NULL);
    if (tls != NULL && (w->tls = ptc_tls_contexts_dup(tls)) == NULL)
        return PTC_ENOMEM;
    w->listeners = calloc(config->num_listeners, sizeof(*w->listeners));
    w->upstreams = calloc(config->num_upstreams, sizeof(*w->upstreams));
    if (w->dns == NULL || w->drain_ev == NULL || w->drain_timer == NULL || w->accept_retry == NULL ||
        w->listeners == NULL || w->upstreams == NULL)
        return PTC_ENOMEM;
    for (size_t i = 0; i < config->num_upstreams; i++)
        ptc_upstream_init(&w->upstreams[i], w, &config->upstreams[i]);
    upstreams_use_tls(w);
    for (size_t i = 0; i < config->num_listeners; i++) {
        int rv = listen_on(w, &config->listeners[i].addr, &w->listeners[i]);
        if (rv != 0)
            return rv;
        w->num_listeners++;
    }
    return 0;
}

static void *run(void *arg)
{
    ptc_worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "w%u", w->id);
    ptc_log_set_thread_name(name);
    event_base_dispatch(w->base);
    ptc_alloc_thread_release();
    return NULL;
}

int ptc_worker_start(ptc_worker_t *w)
{
    return pthread_create(&w->thread, NULL, run, w) == 0 ? 0 : PTC_EIO;
}

void ptc_worker_request_drain(ptc_worker_t *w)
{
    atomic_store(&w->drain_requested, true);
    notify(w);
}

static void on_notify(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    ptc_worker_t *w = arg;
    uint64_t count;
    ssize_t n = read(fd, &count, sizeof(count));
    (void)n;
    on_tls_update(w);
    if (atomic_load(&w->drain_requested))
        on_drain(-1, 0, w);
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
    for (size_t i = 0; i < w->num_listeners; i++)
        if (w->listeners[i] != NULL)
            evconnlistener_free(w->listeners[i]);
    if (w->upstreams != NULL) {
        for (size_t i = 0; i < w->config->num_upstreams; i++)
            ptc_upstream_dispose(&w->upstreams[i]);
    }
    free(w->upstreams);
    free(w->listeners);
    if (w->drain_ev != NULL)
        event_free(w->drain_ev);
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
    ptc_tls_contexts_free(atomic_exchange(&w->tls_next, NULL));
    ptc_tls_contexts_free(w->tls);
    if (w->dns != NULL)
        evdns_base_free(w->dns, 0);
    if (w->base != NULL)
        event_base_free(w->base);
    memset(w, 0, sizeof(*w));
    w->notify_fd = -1;
}
