#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "portico/conn.h"
#include "portico/h2.h"
#include "portico/http1.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

/* Downstream connections of all workers (limits.max_connections_total). */
static atomic_size_t conns_total;

size_t ptc_conn_total(void)
{
    return atomic_load_explicit(&conns_total, memory_order_relaxed);
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
    atomic_fetch_add_explicit(&conns_total, 1, memory_order_relaxed);
}

void ptc_conn_unregister(ptc_conn_t *c)
{
    ptc_worker_t *w = c->worker;
    TAILQ_REMOVE(&w->conns, c, link);
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
