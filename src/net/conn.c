#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#include "portico/conn.h"
#include "portico/h2.h"
#include "portico/http1.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

/* Downstream connections of all workers (limits.max_connections_total), and their most since the control thread
 * last looked (ptc_conn_peak_take; an update racing another worker's may be lost: it is a hint). */
static atomic_size_t conns_total, conns_peak;

size_t ptc_conn_total(void)
{
    return atomic_load_explicit(&conns_total, memory_order_relaxed);
}

size_t ptc_conn_peak_take(void)
{
    return atomic_exchange_explicit(&conns_peak, atomic_load_explicit(&conns_total, memory_order_relaxed), memory_order_relaxed);
}

void ptc_conn_register(ptc_worker_t *w, ptc_conn_t *c, const ptc_conn_cb_t *cb, const char *peer, unsigned listener)
{
    c->cb = cb;
    c->worker = w;
    c->snap = ptc_snapshot_ref(w->snap);
    c->listener = listener;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    w->num_conns++;
    PTC_STAT_INC(w->metrics.conns_opened);
    size_t now = atomic_fetch_add_explicit(&conns_total, 1, memory_order_relaxed) + 1;
    if (now > atomic_load_explicit(&conns_peak, memory_order_relaxed))
        atomic_store_explicit(&conns_peak, now, memory_order_relaxed);
}

void ptc_conn_unregister(ptc_conn_t *c)
{
    ptc_worker_t *w = c->worker;
    TAILQ_REMOVE(&w->conns, c, link);
    if (c->idle_listed)
        TAILQ_REMOVE(&w->idle_conns, c, idle_link);
    c->idle_listed = false;
    w->num_conns--;
    PTC_STAT_INC(w->metrics.conns_closed);
    atomic_fetch_sub_explicit(&conns_total, 1, memory_order_relaxed);
    ptc_snapshot_release(c->snap);
    c->snap = NULL;
    ptc_worker_on_conn_closed(w);
}

void ptc_conn_refresh(ptc_conn_t *c)
{
    ptc_snapshot_set(&c->snap, c->worker->snap);
}

#define IDLE_SWEEP_MIN_MS 100 /* the idle timer batches connections that became idle within this */

static void idle_arm(ptc_worker_t *w, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(w->idle_ev, &tv); /* on failure (out of memory) the next ptc_conn_idle() tries again */
}

void ptc_conn_idle(ptc_conn_t *c)
{
    ptc_worker_t *w = c->worker;
    if (w->idle_ev == NULL)
        return;
    if (c->idle_listed)
        TAILQ_REMOVE(&w->idle_conns, c, idle_link);
    c->idle_listed = true;
    c->idle_since_ms = ptc_now_coarse_ms();
    TAILQ_INSERT_TAIL(&w->idle_conns, c, idle_link);
    if (!evtimer_pending(w->idle_ev, NULL))
        idle_arm(w, PTC_CONN_IDLE_RELEASE_MS);
}

void ptc_conn_idle_sweep(ptc_worker_t *w)
{
    uint64_t now = ptc_now_coarse_ms();
    ptc_conn_t *c;
    while ((c = TAILQ_FIRST(&w->idle_conns)) != NULL && c->idle_since_ms + PTC_CONN_IDLE_RELEASE_MS <= now) {
        TAILQ_REMOVE(&w->idle_conns, c, idle_link);
        c->idle_listed = false;
        c->cb->release_idle(c);
    }
    if (c != NULL)
        idle_arm(w, PTC_MAX(c->idle_since_ms + PTC_CONN_IDLE_RELEASE_MS - now, (uint64_t)IDLE_SWEEP_MIN_MS));
}

int ptc_conn_park(struct event *ev, struct bufferevent *bev, void (*cb)(int, short, void *), void *arg)
{
    struct event_base *base = bufferevent_get_base(bev);
    evutil_socket_t fd = bufferevent_getfd(bev);
    event_callback_fn old_cb = event_get_callback(ev);
    void *old_arg = event_get_callback_arg(ev);
    event_assign(ev, base, fd, EV_READ | EV_PERSIST, cb, arg);
    if (event_add(ev, NULL) != 0) {
        event_assign(ev, base, -1, 0, old_cb, old_arg);
        return -1;
    }
    bufferevent_setfd(bev, -1); /* the socket stays open */
    bufferevent_free(bev);
    return 0;
}

int ptc_conn_parked_peek(int fd)
{
    char byte;
    /* most idle connections end with the client's close: that needs no buffers */
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK);
    if (n > 0)
        return 1;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n == 0)
        errno = 0;
    return -1;
}

struct bufferevent *ptc_conn_unpark(struct event *ev)
{
    struct bufferevent *bev = bufferevent_socket_new(event_get_base(ev), event_get_fd(ev), BEV_OPT_CLOSE_ON_FREE);
    if (bev != NULL && ptc_bev_read_direct(bev) != 0) { /* not added yet: cannot fail */
        bufferevent_setfd(bev, -1);
        bufferevent_free(bev);
        return NULL;
    }
    return bev;
}

void ptc_conn_unparked(struct event *ev, struct bufferevent *bev, void (*cb)(int, short, void *), void *arg)
{
    event_del(ev); /* after bev's read event was added: the socket stays in epoll */
    event_assign(ev, event_get_base(ev), -1, 0, cb, arg);
    event_active(&bev->ev_read, EV_READ, 1); /* read now rather than at the next epoll_wait */
}

void ptc_conn_format_peer(const struct sockaddr *sa, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
        snprintf(buf, len, "[%s]:%u", a, ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
        snprintf(buf, len, "%s:%u", a, ntohs(s4->sin_port));
    } else {
        snprintf(buf, len, "unix");
    }
}

void ptc_conn_serve(ptc_worker_t *w, struct bufferevent *bev, const char *peer, unsigned listener, bool h2)
{
    bool tls = bufferevent_openssl_get_ssl(bev) != NULL;
    if (h2)
        ptc_h2conn_start(w, bev, peer, listener, tls);
    else
        ptc_h1conn_start(w, bev, peer, listener, tls); /* switches to HTTP/2 itself on a cleartext preface */
}
