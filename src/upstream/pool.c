/*
 * Upstream pool and HTTP/2 client connections (src/upstream/h2client.c's protocol over libevent bufferevents).
 *
 * Flow control: a stream's window is credited (ptc_upstream_consume) only after the call has handed the
 * bytes to its downstream and the downstream is not backed up, so a slow browser stops the upstream
 * instead of growing our buffers. The connection-level window is opened wide; the per-stream windows are
 * the bound.
 *
 * Re-entrancy: while a connection is inside its protocol code (in_h2: reading frames or writing DATA), whose
 * callbacks reach the calls, sends are recorded in want_send and a close in want_close; both are carried out
 * by the outermost caller once it returns.
 *
 * TLS upstreams (config->tls): the connection is a bufferevent_openssl in connecting state whose socket is
 * connected by bufferevent_socket_connect_hostname like a plain one; BEV_EVENT_CONNECTED then means the TCP
 * connection and the TLS handshake (verification included) are done, and ALPN must have selected "h2". A
 * handshake failure is the connection's failure reason, so the calls waiting for it end with
 * UNAVAILABLE and OpenSSL's reason (e.g. "certificate verify failed: unable to get local issuer certificate").
 *
 * Choosing where a call goes (dispatch()): a connection with a free stream to a usable endpoint (not
 * ejected, not failing its health checks: ptc_endpoint_usable), picked round-robin or, with least_request,
 * to the endpoint with the fewest streams this pool has open on it (ties in turn). Pinned streams (health
 * checks) go to their endpoint only, usable or not, and go first when a stream frees up; they open a
 * connection to it when it has none (also beyond max_connections, which bounds the connections opened for
 * calls), and wait for a free stream when it has some. A call that finds no usable
 * endpoint fails at once; one that finds every connection full waits in the pending queue (max_pending).
 *
 * Shared counts: each connection holds a reference to its endpoint's ptc_endpoint_status_t and keeps its
 * counts there (connections by state, open streams), so that the admin API sees every worker's; the pool
 * reports failed connection attempts and grpc-status 14 answers to the passive outlier detection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "portico/alloc.h"
#include "portico/conn.h"
#include "portico/h2client.h"
#include "portico/h2io.h"
#include "portico/health.h"
#include "portico/log.h"
#include "portico/monitor.h"
#include "portico/tls.h"
#include "portico/upstream.h"
#include "portico/worker.h"

#define CONNECTION_WINDOW_SIZE ((1 << 30) - 1)

typedef enum {
    H2C_CONNECTING, /* TCP connect or waiting for the server's SETTINGS */
    H2C_READY,      /* takes new streams */
    H2C_DRAINING,   /* GOAWAY received or stream ids exhausted: no new streams, open ones finish */
} h2c_state_t;

struct st_ptc_h2client_t {
    ptc_upstream_t *up;
    size_t endpoint;       /* index in up's endpoints; SIZE_MAX once a reload removed the endpoint */
    ptc_endpoint_status_t *st; /* its endpoint's shared status (one reference); counts this connection by state */
    char addr[80];         /* "host:port" of the endpoint, for log lines */
    char peer[PTC_HEALTH_ADDR_STRLEN]; /* the address connected to ("" until connected, or unknown) */
    unsigned dns_gen;                  /* st->dns_generation when peer was last found among the resolved addresses */
    struct bufferevent *bev;
    ptc_h2c_t h2;
    bool h2_on;  /* h2 is set up (the connection is connected) */
    char label[128]; /* "upstream NAME: connection to HOST:PORT", h2's log prefix */
    h2c_state_t state;
    struct event *timer;   /* connect + handshake deadline */
    struct event *send_ev; /* deferred sends: one per loop pass for all calls */
    bool send_queued;      /* send_ev is active (conn_want_send) */
    bool direct_write;     /* cleartext: written by conn_send() itself (ptc_bev_write_now()) */
    bool write_blocked;
    size_t num_streams;  /* streams opened and not yet closed (with or without a call) */
    TAILQ_HEAD(, st_ptc_upstream_stream_t) streams; /* open streams that still have an owner */
    TAILQ_ENTRY(st_ptc_h2client_t) link;
    unsigned in_h2;
    bool want_send;
    bool want_close;
    char close_reason[160];
    ptc_upstream_stats_t *stats; /* the worker's metrics of this upstream: connection states */
    bool counted;                /* stats->conns[state] and (but for draining) st's count of its state count it */
};

static void conn_close(ptc_h2client_t *conn, const char *reason);
static void conn_close_later(ptc_h2client_t *conn, const char *reason);
static void dispatch(ptc_upstream_t *up);

static void stream_detach(ptc_upstream_stream_t *s);
static void conn_send(ptc_h2client_t *conn);

/*
 * Sends requested by calls (new streams, request bodies, window credits) are batched: they run once
 * at the end of the loop pass, for every call that asked, instead of once per call.
 */
static void conn_want_send(ptc_h2client_t *conn)
{
    if (conn->in_h2 != 0 || !conn->h2_on) {
        conn->want_send = true;
    } else if (!conn->send_queued) {
        conn->send_queued = true;
        event_active(conn->send_ev, EV_WRITE, 0);
    }
}

static void on_send_ev(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_h2client_t *conn = arg;
    conn->send_queued = false;
    conn_send(conn);
}

static const ptc_upstream_config_t *up_config(const ptc_upstream_t *up)
{
    return up->client.config;
}

static ptc_endpoint_status_t *ep_status(const ptc_upstream_t *up, size_t ep)
{
    return up->snap->status->upstreams[up->index].endpoints[ep];
}

static ptc_upstream_status_t *up_status(const ptc_upstream_t *up)
{
    return up->snap->status->upstreams[up->index].up;
}

/* The count of the endpoint's shared status (include/portico/health.h) a connection in this state is part of (none
 * while draining). */
static atomic_int *state_counter(ptc_h2client_t *conn)
{
    if (!conn->counted)
        return NULL;
    switch (conn->state) {
    case H2C_CONNECTING:
        return &conn->st->conns_connecting;
    case H2C_READY:
        return &conn->st->conns_ready;
    default:
        return NULL;
    }
}

/* The gauge of the connection's state in the worker's metrics (portico_upstream_connections{state}). */
static ptc_counter_t *state_gauge(ptc_h2client_t *conn)
{
    static const int gauge[] = {[H2C_CONNECTING] = PTC_UPSTREAM_CONNECTING, [H2C_READY] = PTC_UPSTREAM_READY,
                                [H2C_DRAINING] = PTC_UPSTREAM_DRAINING};
    return &conn->stats->conns[gauge[conn->state]];
}

/* Out of both counts: its endpoint's shared status and the worker's metrics. */
static void conn_uncount(ptc_h2client_t *conn)
{
    atomic_int *from = state_counter(conn);
    if (from != NULL)
        atomic_fetch_sub_explicit(from, 1, memory_order_relaxed);
    if (conn->counted)
        PTC_STAT_ADD(*state_gauge(conn), -1);
    conn->counted = false;
}

/* Moves conn to state in both counts (it is counted from its first state on, once it is set up). */
static void conn_set_state(ptc_h2client_t *conn, h2c_state_t state)
{
    conn_uncount(conn);
    conn->state = state;
    conn->counted = true;
    PTC_STAT_INC(*state_gauge(conn));
    atomic_int *to = state_counter(conn);
    if (to != NULL)
        atomic_fetch_add_explicit(to, 1, memory_order_relaxed);
}

/* n streams opened (n > 0) or closed (n < 0) on conn. */
static void conn_streams_add(ptc_h2client_t *conn, int n)
{
    conn->num_streams = (size_t)((ptrdiff_t)conn->num_streams + n);
    atomic_fetch_add_explicit(&conn->st->active_streams, n, memory_order_relaxed);
    if (conn->endpoint != SIZE_MAX)
        conn->up->endpoints[conn->endpoint].streams = (size_t)((ptrdiff_t)conn->up->endpoints[conn->endpoint].streams + n);
}

/* ---- sending ---- */

/*
 * Writes what the connection has to send: request DATA of the streams that have some (their HEADERS went out
 * when they opened), while the output holds less than PTC_H2_OUTPUT_WOULDBLOCK; on cleartext the output is
 * written to the socket at once (ptc_bev_write_now()), and more DATA follows when the socket took it all.
 */
static void conn_send(ptc_h2client_t *conn)
{
    if (conn->in_h2 != 0 || !conn->h2_on) {
        conn->want_send = true;
        return;
    }
    if (conn->want_close) {
        conn_close(conn, conn->close_reason);
        return;
    }
    conn->in_h2++;
    do {
        conn->want_send = false;
        bool capped = ptc_h2c_flush(&conn->h2, PTC_H2_OUTPUT_WOULDBLOCK);
        if (conn->h2.failed) {
            snprintf(conn->close_reason, sizeof(conn->close_reason), "%.150s", conn->h2.error);
            conn->want_close = true;
            break;
        }
        if (conn->direct_write && !conn->write_blocked) {
            if (ptc_bev_write_now(conn->bev, &conn->write_blocked) != 0) {
                snprintf(conn->close_reason, sizeof(conn->close_reason), "HTTP/2 send failed: %s", strerror(errno));
                conn->want_close = true;
                break;
            }
            if (capped && !conn->write_blocked)
                conn->want_send = true;
        }
    } while (conn->want_send && !conn->want_close);
    conn->in_h2--;
    if (conn->want_close)
        conn_close(conn, conn->close_reason);
}

/* ---- receiving ---- */

/* A call's grpc-status (trailers, or a trailers-only answer) for the passive outlier detection: 14 is a failure of
 * the endpoint, anything else a success. */
static void note_grpc_status(ptc_h2client_t *conn, const uint8_t *value, size_t valuelen)
{
    const ptc_upstream_config_t *cfg = up_config(conn->up);
    if (!cfg->outlier.enabled)
        return;
    if (valuelen != 2 || value[0] != '1' || value[1] != '4') {
        ptc_outlier_success(conn->st);
        return;
    }
    if (ptc_outlier_failure(conn->st, &cfg->outlier, ptc_now_ms(), "grpc-status 14 (UNAVAILABLE)"))
        ptc_log_warn("upstream %s: endpoint %s ejected for %" PRIu64 " ms after %u consecutive failures (the last: grpc-status 14)",
                     cfg->name, conn->st->label, cfg->outlier.ejection_ms, cfg->outlier.consecutive_failures);
}

static ptc_h2client_t *conn_of(ptc_h2c_t *c)
{
    return c->user;
}

/* grpc-status (the connection's watched field) */
static void h2_on_watched(ptc_h2c_t *c, ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *value,
                          size_t valuelen)
{
    (void)cat;
    if (s->pin == 0)
        note_grpc_status(conn_of(c), value, valuelen);
}

static void h2_on_settings(ptc_h2c_t *c, bool first)
{
    ptc_h2client_t *conn = conn_of(c);
    if (first && conn->state == H2C_CONNECTING) {
        conn_set_state(conn, H2C_READY);
        evtimer_del(conn->timer);
        atomic_store_explicit(&conn->st->connect_failed, false, memory_order_relaxed);
        ptc_outlier_success(conn->st);
        if (conn->endpoint != SIZE_MAX) {
            conn->up->endpoints[conn->endpoint].backoff_ms = 0;
            conn->up->endpoints[conn->endpoint].retry_at_ms = 0;
        } else {
            conn_set_state(conn, H2C_DRAINING); /* its endpoint was removed while it connected */
        }
        ptc_log_debug("upstream %s: connected to %s (max concurrent streams %" PRIu32 ")", up_config(conn->up)->name, conn->addr,
                      c->max_concurrent);
    }
    dispatch(conn->up); /* READY, or MAX_CONCURRENT_STREAMS may have grown */
}

static void h2_on_goaway(ptc_h2c_t *c, int32_t last_stream_id, uint32_t error_code)
{
    ptc_h2client_t *conn = conn_of(c);
    ptc_log_info("upstream %s: GOAWAY from %s (last stream %" PRId32 ", error %s)", up_config(conn->up)->name, conn->addr,
                 last_stream_id, nghttp2_http2_strerror(error_code));
    conn_set_state(conn, H2C_DRAINING);
    if (conn->num_streams == 0) {
        snprintf(conn->close_reason, sizeof(conn->close_reason), "drained after GOAWAY");
        conn->want_close = true;
    }
}

static void h2_on_stream_close(ptc_h2c_t *c, ptc_upstream_stream_t *s, uint32_t error_code)
{
    ptc_h2client_t *conn = conn_of(c);

    conn_streams_add(conn, -1);
    if (s->conn != NULL) {
        stream_detach(s);
        s->cb->on_close(s, error_code, NULL);
    }
    if (conn->state == H2C_DRAINING && conn->num_streams == 0) {
        snprintf(conn->close_reason, sizeof(conn->close_reason), "%s",
                 conn->endpoint == SIZE_MAX ? "endpoint removed by a reload" : "drained after GOAWAY");
        conn->want_close = true;
    } else if (conn->up->retired && conn->num_streams == 0 && conn->up->num_pending == 0) {
        snprintf(conn->close_reason, sizeof(conn->close_reason), "upstream removed or replaced by a reload");
        conn->want_close = true;
    } else {
        dispatch(conn->up);
    }
}

static const ptc_h2c_cb_t h2_callbacks = {h2_on_settings, h2_on_goaway, h2_on_watched, h2_on_stream_close};

static void on_read(struct bufferevent *bev, void *arg)
{
    ptc_h2client_t *conn = arg;

    if (!conn->h2_on)
        return;
    conn->in_h2++;
    int rv = ptc_h2c_feed(&conn->h2, bufferevent_get_input(bev), &conn->want_close);
    conn->in_h2--;
    if (rv != 0 && !conn->want_close) {
        snprintf(conn->close_reason, sizeof(conn->close_reason), "HTTP/2 protocol error from upstream: %.120s", conn->h2.error);
        conn->want_close = true;
        if (conn->direct_write && !conn->write_blocked) /* its GOAWAY, if the socket takes it */
            (void)ptc_bev_write_now(bev, &conn->write_blocked);
    }
    if (conn->want_close) {
        conn_close(conn, conn->close_reason);
        return;
    }
    conn_send(conn);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    ptc_h2client_t *conn = arg;
    if (conn->direct_write)
        ptc_bev_write_drained(bev, &conn->write_blocked);
    if (conn->h2_on)
        conn_send(conn);
}

static int session_create(ptc_h2client_t *conn)
{
    const ptc_config_t *cfg = &conn->up->snap->config;
    if (ptc_h2c_init(&conn->h2, &h2_callbacks, conn, bufferevent_get_output(conn->bev), cfg->limits.stream_window_size,
                     CONNECTION_WINDOW_SIZE) != 0)
        return PTC_ENOMEM;
    snprintf(conn->label, sizeof(conn->label), "upstream %s: connection to %s", up_config(conn->up)->name, conn->addr);
    conn->h2.label = conn->label;
    conn->h2.watch = "grpc-status"; /* for the outlier detection */
    conn->h2.watch_len = 11;
    conn->h2_on = true;
    return 0;
}

/* Remembers the address the connection reached, to tell when its host name stops resolving to it. */
static void conn_note_peer(ptc_h2client_t *conn, evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    conn->peer[0] = '\0';
    conn->dns_gen = atomic_load_explicit(&conn->st->dns_generation, memory_order_relaxed);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    const void *a = ss.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                             : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
        return;
    if (inet_ntop(ss.ss_family, a, conn->peer, sizeof(conn->peer)) == NULL)
        conn->peer[0] = '\0';
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    ptc_h2client_t *conn = arg;
    char reason[160];

    if (events & BEV_EVENT_CONNECTED) {
        evutil_socket_t fd = bufferevent_getfd(bev);
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_note_peer(conn, fd);
        if (ssl != NULL && !ptc_tls_alpn_is_h2(ssl)) {
            conn_close(conn, "TLS: the server did not select HTTP/2 with ALPN (it must offer \"h2\")");
            return;
        }
        if (session_create(conn) != 0) {
            conn_close(conn, "cannot create HTTP/2 session (out of memory)");
            return;
        }
        if (ssl == NULL)
            ptc_bev_read_direct(bev); /* readv without ioctl(FIONREAD); EV_READ is not added yet: cannot fail */
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        conn->direct_write = ssl == NULL;
        if (conn->direct_write)
            bufferevent_disable(bev, EV_WRITE); /* see ptc_bev_write_now() */
        conn_send(conn); /* preface and SETTINGS; READY once the server's SETTINGS arrive */
        return;
    }
    if (events & BEV_EVENT_ERROR) {
        int dnserr = bufferevent_socket_get_dns_error(bev);
        char tls_err[128] = "";
        if (bufferevent_openssl_get_ssl(bev) != NULL)
            ptc_tls_bev_error(bev, tls_err, sizeof(tls_err));
        if (tls_err[0] != '\0')
            snprintf(reason, sizeof(reason), "TLS: %s%s", tls_err,
                     ptc_tls_client_cert_missing(bufferevent_openssl_get_ssl(bev)) ? " (the server asked for a client certificate "
                                                                                    "and tls.cert is not configured)"
                                                                                  : "");
        else if (dnserr != 0)
            snprintf(reason, sizeof(reason), "cannot resolve %s: %s", conn->addr, evutil_gai_strerror(dnserr));
        else
            snprintf(reason, sizeof(reason), "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    } else if (events & BEV_EVENT_EOF) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (ssl != NULL && conn->state == H2C_CONNECTING && ptc_tls_client_cert_missing(ssl))
            snprintf(reason, sizeof(reason), "connection closed by upstream: it asked for a client certificate and tls.cert is "
                                             "not configured");
        else
            snprintf(reason, sizeof(reason), "connection closed by upstream");
    } else {
        return;
    }
    if (conn->in_h2 != 0) {
        snprintf(conn->close_reason, sizeof(conn->close_reason), "%s", reason);
        conn->want_close = true;
        return;
    }
    conn_close(conn, reason);
}

static void on_timeout(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_h2client_t *conn = arg;
    char reason[96];
    snprintf(reason, sizeof(reason), "no HTTP/2 connection within %" PRIu64 " ms (connect_timeout)",
             up_config(conn->up)->connect_timeout_ms);
    conn_close(conn, reason);
}

/* Backoff bookkeeping for a connection that never became ready; a failure for the outlier detection too. */
static void endpoint_failed(ptc_upstream_t *up, size_t ep, const char *reason)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    ptc_endpoint_state_t *st = &up->endpoints[ep];
    ptc_endpoint_status_t *shared = ep_status(up, ep);
    uint64_t now = ptc_now_ms();
    st->backoff_ms = st->backoff_ms == 0 ? cfg->backoff_initial_ms : PTC_MIN(st->backoff_ms * 2, cfg->backoff_max_ms);
    st->retry_at_ms = now + st->backoff_ms;
    PTC_STAT_INC(ptc_metrics_upstream(&up->worker->metrics, cfg->name)->connect_failures);
    snprintf(st->last_error, sizeof(st->last_error), "%.64s:%u: %.160s", cfg->endpoints[ep].host, cfg->endpoints[ep].port, reason);
    atomic_store_explicit(&shared->connect_failed, true, memory_order_relaxed);
    pthread_mutex_lock(&shared->lock);
    snprintf(shared->last_error, sizeof(shared->last_error), "%s", reason);
    pthread_mutex_unlock(&shared->lock);
    if (ptc_outlier_failure(shared, &cfg->outlier, now, reason))
        ptc_log_warn("upstream %s: endpoint %s ejected for %" PRIu64 " ms after %u consecutive failures (the last: %s)", cfg->name,
                     shared->label, cfg->outlier.ejection_ms, cfg->outlier.consecutive_failures, reason);
}

/*
 * Closes a connection: every call still on it ends with a connection error, the endpoint backs off
 * if the connection never became ready, and queued calls are dispatched elsewhere (or failed).
 */
static void conn_close(ptc_h2client_t *conn, const char *reason)
{
    ptc_upstream_t *up = conn->up;
    char why[200];
    ptc_upstream_stream_t *s;

    if (conn->in_h2 != 0) {
        if (reason != conn->close_reason)
            snprintf(conn->close_reason, sizeof(conn->close_reason), "%s", reason);
        conn->want_close = true;
        return;
    }
    snprintf(why, sizeof(why), "%s", reason);
    if (conn->state == H2C_CONNECTING && conn->endpoint != SIZE_MAX) {
        endpoint_failed(up, conn->endpoint, why);
        ptc_log_warn("upstream %s: connection to %s failed: %s (retry in %" PRIu64 " ms)", up_config(up)->name, conn->addr, why,
                     up->endpoints[conn->endpoint].backoff_ms);
    } else {
        ptc_log_info("upstream %s: connection to %s closed: %s", up_config(up)->name, conn->addr, why);
    }

    TAILQ_REMOVE(&up->conns, conn, link);
    up->num_conns--;
    while ((s = TAILQ_FIRST(&conn->streams)) != NULL) {
        stream_detach(s);
        char msg[240];
        snprintf(msg, sizeof(msg), "upstream connection lost: %s", why);
        s->cb->on_close(s, NGHTTP2_INTERNAL_ERROR, msg);
    }
    conn_streams_add(conn, -(int)conn->num_streams);
    conn_uncount(conn);
    ptc_endpoint_status_release(conn->st);
    if (conn->h2_on)
        ptc_h2c_free(&conn->h2);
    bufferevent_free(conn->bev);
    event_free(conn->timer);
    event_free(conn->send_ev);
    free(conn);
    dispatch(up);
    if (up->retired && ptc_upstream_idle(up))
        ptc_worker_pool_idle(up->worker);
}

/* Closes conn from the loop, outside of whatever is running now (it must have a session). */
static void conn_close_later(ptc_h2client_t *conn, const char *reason)
{
    snprintf(conn->close_reason, sizeof(conn->close_reason), "%s", reason);
    conn->want_close = true;
    event_active(conn->send_ev, EV_WRITE, 0);
}

/* May endpoint ep take a call now: usable (health, ejection) and not backing off. */
static bool endpoint_open(ptc_upstream_t *up, size_t ep, uint64_t now)
{
    return up->endpoints[ep].retry_at_ms <= now && ptc_endpoint_usable(ep_status(up, ep), now);
}

/* Picks the next endpoint round-robin among those open to calls; SIZE_MAX when none is. */
static size_t pick_endpoint(ptc_upstream_t *up)
{
    uint64_t now = ptc_now_ms();
    size_t n = up_config(up)->num_endpoints;
    for (size_t i = 0; i < n; i++) {
        size_t ep = (up->rr_next + i) % n;
        if (endpoint_open(up, ep, now)) {
            up->rr_next = (ep + 1) % n;
            return ep;
        }
    }
    return SIZE_MAX;
}

static ptc_h2client_t *conn_open(ptc_upstream_t *up, size_t ep)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    const ptc_hostport_t *hp = &cfg->endpoints[ep];
    SSL_CTX *tls_ctx = up->snap->tls != NULL ? up->snap->tls->upstreams[up->index] : NULL;
    ptc_h2client_t *conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        endpoint_failed(up, ep, "out of memory"); /* back off: dispatch() must not retry it at once */
        return NULL;
    }
    conn->up = up;
    conn->endpoint = ep;
    snprintf(conn->addr, sizeof(conn->addr), strchr(hp->host, ':') != NULL ? "[%.64s]:%u" : "%.64s:%u", hp->host, hp->port);
    conn->stats = ptc_metrics_upstream(&up->worker->metrics, cfg->name);
    PTC_STAT_INC(conn->stats->connects);
    conn->state = H2C_DRAINING; /* counted from when it is set up (conn_set_state) */
    TAILQ_INIT(&conn->streams);
    if (cfg->tls != NULL) {
        SSL *ssl = tls_ctx != NULL ? ptc_tls_client_new(tls_ctx, cfg, hp->host) : NULL;
        /* From here libevent owns ssl: it is freed with the bufferevent (BEV_OPT_CLOSE_ON_FREE). Dirty shutdowns
         * stay errors here, so that a socket error (connection refused) is reported as such; a peer closing
         * without close_notify is still a plain EOF (SSL_OP_IGNORE_UNEXPECTED_EOF). */
        conn->bev = ssl != NULL ? bufferevent_openssl_socket_new(up->worker->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                                 BEV_OPT_CLOSE_ON_FREE)
                                : NULL;
    } else {
        conn->bev = bufferevent_socket_new(up->worker->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    conn->timer = evtimer_new(up->worker->base, on_timeout, conn);
    conn->send_ev = event_new(up->worker->base, -1, 0, on_send_ev, conn);
    if (conn->bev == NULL || conn->timer == NULL || conn->send_ev == NULL) {
        if (conn->bev != NULL)
            bufferevent_free(conn->bev);
        if (conn->timer != NULL)
            event_free(conn->timer);
        if (conn->send_ev != NULL)
            event_free(conn->send_ev);
        free(conn);
        endpoint_failed(up, ep, "out of memory");
        return NULL;
    }
    bufferevent_setcb(conn->bev, on_read, on_write, on_event, conn);
    bufferevent_setwatermark(conn->bev, EV_WRITE, PTC_H2_OUTPUT_LOW_WATERMARK, 0);
    conn->st = ptc_endpoint_status_ref(ep_status(up, ep));
    conn_set_state(conn, H2C_CONNECTING);
    TAILQ_INSERT_TAIL(&up->conns, conn, link);
    up->num_conns++;
    struct timeval tv = {(time_t)(cfg->connect_timeout_ms / 1000), (suseconds_t)(cfg->connect_timeout_ms % 1000 * 1000)};
    evtimer_add(conn->timer, &tv);
    ptc_log_debug("upstream %s: connecting to %s", cfg->name, conn->addr);
    /* name resolution goes through evdns; numeric hosts are parsed without a query. Failure is reported
     * through on_event, possibly before this returns, so conn must already be fully set up. */
    conn->in_h2++;
    bufferevent_socket_connect_hostname(conn->bev, up->worker->dns, AF_UNSPEC, hp->host, hp->port);
    conn->in_h2--;
    if (conn->want_close) {
        conn_close(conn, conn->close_reason);
        return NULL;
    }
    return conn;
}

static bool conn_has_capacity(ptc_h2client_t *conn)
{
    return conn->state == H2C_READY && conn->num_streams < conn->h2.max_concurrent && ptc_h2c_can_open(&conn->h2);
}

const char *ptc_upstream_stream_peer(const ptc_upstream_stream_t *s)
{
    return s->conn != NULL ? s->conn->addr : NULL;
}

/* Takes a stream off its connection's list (the HTTP/2 stream itself is the caller's business). */
static void stream_detach(ptc_upstream_stream_t *s)
{
    TAILQ_REMOVE(&s->conn->streams, s, conn_link);
    s->conn = NULL;
    s->client = NULL;
}

/* Opens an HTTP/2 stream for s on conn; returns false if the connection cannot take it. */
static bool submit(ptc_h2client_t *conn, ptc_upstream_stream_t *s)
{
    int rv = ptc_h2c_submit(&conn->h2, s);
    if (rv != 0) {
        if (rv == PTC_ETOOBIG)
            conn_set_state(conn, H2C_DRAINING);
        else
            conn_close_later(conn, conn->h2.failed ? conn->h2.error : "out of memory opening a stream");
        ptc_log_warn("upstream %s: cannot open a stream: %s", up_config(conn->up)->name,
                     rv == PTC_ETOOBIG ? "stream ids exhausted" : "out of memory");
        return false;
    }
    s->conn = conn;
    conn_streams_add(conn, 1);
    TAILQ_INSERT_TAIL(&conn->streams, s, conn_link);
    if (!ptc_h2c_can_open(&conn->h2) && conn->h2.next_stream_id <= 0)
        conn_set_state(conn, H2C_DRAINING); /* that was its last stream id */
    conn_want_send(conn);
    return true;
}

/* The queue a stream waits in: pinned streams (health checks) apart from calls. */
static void pending_add(ptc_upstream_t *up, ptc_upstream_stream_t *s, bool head)
{
    if (s->pin != 0) {
        if (head)
            TAILQ_INSERT_HEAD(&up->pinned, s, pending_link);
        else
            TAILQ_INSERT_TAIL(&up->pinned, s, pending_link);
    } else {
        if (head)
            TAILQ_INSERT_HEAD(&up->pending, s, pending_link);
        else
            TAILQ_INSERT_TAIL(&up->pending, s, pending_link);
        up->num_pending_calls++;
        atomic_fetch_add_explicit(&up_status(up)->pending, 1, memory_order_relaxed);
    }
    s->pending = true;
    up->num_pending++;
}

static void pending_remove(ptc_upstream_t *up, ptc_upstream_stream_t *s)
{
    if (s->pin != 0) {
        TAILQ_REMOVE(&up->pinned, s, pending_link);
    } else {
        TAILQ_REMOVE(&up->pending, s, pending_link);
        up->num_pending_calls--;
        atomic_fetch_sub_explicit(&up_status(up)->pending, 1, memory_order_relaxed);
    }
    s->pending = false;
    up->num_pending--;
}

/* Takes s out of its queue and tells its owner why no stream could be opened. */
static void fail_stream(ptc_upstream_t *up, ptc_upstream_stream_t *s, const char *message)
{
    pending_remove(up, s);
    s->client = NULL;
    s->cb->on_error(s, message);
}

static void fail_pending(ptc_upstream_t *up, const char *message)
{
    ptc_upstream_stream_t *s;
    while ((s = TAILQ_FIRST(&up->pinned)) != NULL || (s = TAILQ_FIRST(&up->pending)) != NULL)
        fail_stream(up, s, message);
}

/* Does endpoint ep take calls now (health, ejection)? Removed endpoints (SIZE_MAX) count as usable: their
 * connections drain and count toward max_connections as before. */
static bool conn_usable(const ptc_h2client_t *conn, uint64_t now)
{
    return conn->endpoint == SIZE_MAX || ptc_endpoint_usable(conn->st, now);
}

/* Connections that serve or will serve calls: all but those to endpoints out of service. */
static size_t calls_conns(ptc_upstream_t *up, uint64_t now)
{
    ptc_h2client_t *conn;
    size_t n = 0;
    TAILQ_FOREACH(conn, &up->conns, link)
    n += conn_usable(conn, now);
    return n;
}

/*
 * Every endpoint open to calls gets a connection (within max_connections), so that streams spread over all of
 * them rather than only failing over.
 */
static void connect_endpoints(ptc_upstream_t *up, uint64_t now)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    size_t n = calls_conns(up, now);
    for (size_t ep = 0; ep < cfg->num_endpoints && n < cfg->max_connections; ep++) {
        ptc_h2client_t *conn;
        bool have = false;
        TAILQ_FOREACH(conn, &up->conns, link)
        have = have || conn->endpoint == ep;
        if (!have && endpoint_open(up, ep, now) && conn_open(up, ep) != NULL) /* a synchronous failure backs off */
            n++;
    }
}

/*
 * A connection whose host name no longer resolves to the address it reached takes no new streams, and closes
 * once its streams are done (the next connection resolves the name again). Checked when the monitoring
 * worker published new addresses (dns_generation moved).
 */
static void conn_check_dns(ptc_h2client_t *conn)
{
    ptc_endpoint_status_t *st = conn->st;
    unsigned gen = atomic_load_explicit(&st->dns_generation, memory_order_relaxed);
    bool found = false, known = false;

    if (gen == conn->dns_gen)
        return;
    conn->dns_gen = gen;
    if (conn->peer[0] == '\0')
        return;
    pthread_mutex_lock(&st->lock);
    known = st->num_resolved != 0;
    for (size_t i = 0; i < st->num_resolved && i < PTC_HEALTH_MAX_RESOLVED && !found; i++)
        found = strcmp(st->resolved[i], conn->peer) == 0;
    pthread_mutex_unlock(&st->lock);
    if (found || !known) /* a failed resolution changes nothing: keep what works */
        return;
    ptc_log_info("upstream %s: %s no longer resolves to %s; its connection there takes no new streams", up_config(conn->up)->name,
                 conn->addr, conn->peer);
    conn_set_state(conn, H2C_DRAINING);
    if (conn->num_streams == 0)
        conn_close_later(conn, "the endpoint's name resolves to other addresses");
}

/*
 * The connection for the next call: one with a free stream to an endpoint that takes calls, in turn
 * (round_robin) or on the endpoint with the fewest open streams (least_request; ties in turn). NULL when none
 * has a free stream. *connecting: a connection to a usable endpoint is being set up; *usable: connections that
 * serve or will serve calls.
 */
static ptc_h2client_t *pick_conn(ptc_upstream_t *up, uint64_t now, bool *connecting, size_t *usable)
{
    ptc_h2client_t *conn, *best = NULL;
    size_t eligible = 0;
    *connecting = false;
    *usable = 0;
    TAILQ_FOREACH(conn, &up->conns, link)
    {
        if (!conn_usable(conn, now))
            continue;
        ++*usable;
        if (conn->state == H2C_CONNECTING)
            *connecting = true;
        else if (conn->state == H2C_READY && conn->endpoint != SIZE_MAX)
            conn_check_dns(conn);
        if (conn_has_capacity(conn))
            eligible++;
    }
    if (eligible == 0)
        return NULL;
    size_t k = up->conn_rr++ % eligible, i = 0, best_load = SIZE_MAX;
    bool least = up_config(up)->balancing == PTC_BALANCE_LEAST_REQUEST;
    /* eligible connections in turn from the k-th: the first one (round_robin), or the first least loaded one */
    for (size_t pass = 0; pass < 2 && (best == NULL || least); pass++) {
        i = 0;
        TAILQ_FOREACH(conn, &up->conns, link)
        {
            if (!conn_usable(conn, now) || !conn_has_capacity(conn))
                continue;
            bool in_turn = pass == 0 ? i >= k : i < k;
            i++;
            if (!in_turn)
                continue;
            if (!least)
                return conn;
            size_t load = conn->endpoint != SIZE_MAX ? up->endpoints[conn->endpoint].streams : conn->num_streams;
            if (load < best_load) {
                best = conn;
                best_load = load;
            }
        }
    }
    return best;
}

/*
 * The connection for a stream pinned to endpoint ep: any with a free stream. NULL otherwise, with *wait set when
 * the stream should wait rather than open a connection: one is being set up, or the endpoint has connections
 * (all busy) and the pool is at max_connections (a check may open a connection beyond it only to an endpoint
 * that has none, so that checks never make connections pile up on a saturated endpoint).
 */
static ptc_h2client_t *pinned_conn(ptc_upstream_t *up, size_t ep, bool *wait)
{
    ptc_h2client_t *conn;
    bool any = false;
    *wait = false;
    TAILQ_FOREACH(conn, &up->conns, link)
    {
        if (conn->endpoint != ep || conn->state == H2C_DRAINING)
            continue;
        any = true;
        if (conn->state == H2C_CONNECTING)
            *wait = true;
        else if (conn_has_capacity(conn))
            return conn;
    }
    *wait = *wait || (any && up->num_conns >= up_config(up)->max_connections);
    return NULL;
}

/*
 * Why no endpoint can take a call: those out of service (unhealthy, ejected) with the reason, or else the
 * endpoint that comes back from its backoff first.
 */
static void unavailable_message(ptc_upstream_t *up, uint64_t now, char *buf, size_t len)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    size_t pos, out = 0;
    int n = snprintf(buf, len, "upstream '%.64s' unavailable: ", cfg->name);
    pos = n > 0 ? PTC_MIN((size_t)n, len - 1) : 0;

    for (size_t ep = 0; ep < cfg->num_endpoints && pos + 1 < len; ep++) {
        ptc_endpoint_status_t *st = ep_status(up, ep);
        uint64_t until = atomic_load_explicit(&st->ejected_until_ms, memory_order_relaxed);
        char why[200] = "";
        pthread_mutex_lock(&st->lock);
        if (until > now)
            snprintf(why, sizeof(why), "ejected for %" PRIu64 " s more (%.150s)", (until - now + 999) / 1000, st->eject_reason);
        else if (atomic_load_explicit(&st->health, memory_order_relaxed) == PTC_HEALTH_UNHEALTHY)
            snprintf(why, sizeof(why), "unhealthy (health check: %.150s)", st->check_result);
        pthread_mutex_unlock(&st->lock);
        if (why[0] == '\0')
            continue;
        n = snprintf(buf + pos, len - pos, "%s%s %s", out == 0 ? "no healthy endpoint: " : "; ", st->label, why);
        pos = n > 0 ? PTC_MIN(pos + (size_t)n, len - 1) : pos;
        out++;
    }
    if (out == cfg->num_endpoints)
        return;
    /* the others are backing off: the one that comes back first */
    const ptc_endpoint_state_t *first = NULL;
    for (size_t ep = 0; ep < cfg->num_endpoints; ep++)
        if (ptc_endpoint_usable(ep_status(up, ep), now) && (first == NULL || up->endpoints[ep].retry_at_ms < first->retry_at_ms))
            first = &up->endpoints[ep];
    if (first == NULL || pos + 1 >= len)
        return;
    uint64_t wait = first->retry_at_ms > now ? first->retry_at_ms - now : 0;
    snprintf(buf + pos, len - pos, "%s%s (next attempt in %" PRIu64 " ms)", out != 0 ? "; " : "",
             first->last_error[0] != '\0' ? first->last_error : "no endpoint available", wait);
}

/* What a call waiting for a stream waits for, and which limit keeps it waiting (for max_pending's message). */
static void wait_reason(ptc_upstream_t *up, char *buf, size_t len)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    ptc_h2client_t *conn;
    size_t ready = 0, connecting = 0;
    uint32_t streams = 0;
    TAILQ_FOREACH(conn, &up->conns, link)
    {
        if (conn->state == H2C_CONNECTING)
            connecting++;
        else if (conn->state == H2C_READY) {
            ready++;
            streams = conn->h2.max_concurrent;
        }
    }
    if (ready == 0 && connecting != 0)
        snprintf(buf, len, "waiting for a connection (connect_timeout %" PRIu64 " ms)", cfg->connect_timeout_ms);
    else
        snprintf(buf, len,
                 "waiting for a free stream: %zu connections (max_connections %" PRIu32 ") with up to %" PRIu32
                 " concurrent streams each (the server's SETTINGS_MAX_CONCURRENT_STREAMS) are in use",
                 ready, cfg->max_connections, streams);
}

/* Pinned streams (health checks): onto a connection to their endpoint, which is opened when there is none. */
static void dispatch_pinned(ptc_upstream_t *up)
{
    ptc_upstream_stream_t *s, *next;
    if (TAILQ_EMPTY(&up->pinned))
        return;
    uint64_t now = ptc_now_ms();
restart:
    for (s = TAILQ_FIRST(&up->pinned); s != NULL; s = next) {
        next = TAILQ_NEXT(s, pending_link);
        size_t ep = s->pin - 1;
        bool wait;
        ptc_h2client_t *target = ep < up_config(up)->num_endpoints ? pinned_conn(up, ep, &wait) : NULL;
        if (ep >= up_config(up)->num_endpoints) {
            fail_stream(up, s, "endpoint removed by a reload");
            goto restart; /* the owner's callback may have changed the queue */
        }
        if (target != NULL) {
            pending_remove(up, s);
            if (!submit(target, s)) {
                pending_add(up, s, true);
                if (target->state != H2C_DRAINING) {
                    fail_stream(up, s, "cannot open an HTTP/2 stream");
                    goto restart;
                }
            }
            goto restart;
        }
        if (wait)
            continue; /* a stream closing or the connection becoming ready dispatches again */
        if (up->endpoints[ep].retry_at_ms > now || conn_open(up, ep) == NULL) {
            char msg[300];
            snprintf(msg, sizeof(msg), "%s (next connection attempt in %" PRIu64 " ms)",
                     up->endpoints[ep].last_error[0] != '\0' ? up->endpoints[ep].last_error : "cannot connect",
                     up->endpoints[ep].retry_at_ms > now ? up->endpoints[ep].retry_at_ms - now : 0);
            fail_stream(up, s, msg);
            goto restart;
        }
    }
}

/* Calls: the queue's head onto a connection with a free stream, opening connections as needed (see the top). */
static void dispatch_calls(ptc_upstream_t *up)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    ptc_upstream_stream_t *s;

    if (TAILQ_EMPTY(&up->pending))
        return;
    uint64_t now = ptc_now_ms(); /* one reading for the pass */
    connect_endpoints(up, now);
    while ((s = TAILQ_FIRST(&up->pending)) != NULL) {
        bool connecting;
        size_t usable;
        ptc_h2client_t *target = pick_conn(up, now, &connecting, &usable);
        if (target != NULL) {
            pending_remove(up, s);
            if (!submit(target, s)) {
                pending_add(up, s, true);
                if (target->state != H2C_DRAINING) /* not a lack of stream ids: out of memory */
                    fail_stream(up, s, "gateway out of memory (cannot open an HTTP/2 stream)");
            }
            continue;
        }
        if (connecting)
            return; /* wait for it */
        if (usable < cfg->max_connections) {
            size_t ep = pick_endpoint(up);
            if (ep != SIZE_MAX) {
                if (conn_open(up, ep) != NULL)
                    return;
                continue; /* failed at once (e.g. bad address); its endpoint now backs off */
            }
            if (usable == 0) {
                /* no endpoint can take it: out of service, or backing off */
                char msg[600];
                unavailable_message(up, now, msg, sizeof(msg));
                while ((s = TAILQ_FIRST(&up->pending)) != NULL)
                    fail_stream(up, s, msg);
            }
        }
        return; /* all connections are busy: wait for a stream to close */
    }
}

/* Moves queued streams onto connections. Callbacks it makes may come back here: that asks for another pass. */
static void dispatch(ptc_upstream_t *up)
{
    if (up->dispatching) {
        up->redispatch = true;
        return;
    }
    up->dispatching = true;
    do {
        up->redispatch = false;
        dispatch_pinned(up);
        dispatch_calls(up);
    } while (up->redispatch);
    up->dispatching = false;
}

/* ---- the client interface ---- */

static void client_start(ptc_upstream_client_t *c, ptc_upstream_stream_t *s)
{
    ptc_upstream_t *up = (ptc_upstream_t *)(void *)c;
    const ptc_upstream_config_t *cfg = up_config(up);

    if (s->pin == 0) {
        uint64_t now = ptc_now_coarse_ms();
        bool any = false;
        for (size_t ep = 0; ep < cfg->num_endpoints && !any; ep++)
            any = ptc_endpoint_usable(ep_status(up, ep), now);
        if (!any) { /* fail fast: every endpoint is unhealthy or ejected */
            char msg[600];
            unavailable_message(up, ptc_now_ms(), msg, sizeof(msg));
            s->cb->on_error(s, msg);
            return;
        }
        size_t waiting = up->num_pending_calls;
        if (waiting >= cfg->max_pending) {
            char msg[400], why[240];
            wait_reason(up, why, sizeof(why));
            snprintf(msg, sizeof(msg), "upstream '%s' overloaded: %zu calls already waiting (max_pending %" PRIu32 "), %s",
                     cfg->name, waiting, cfg->max_pending, why);
            s->cb->on_error(s, msg);
            return;
        }
    }
    s->client = c;
    pending_add(up, s, false);
    dispatch(up);
}

static void client_cancel(ptc_upstream_stream_t *s, size_t unconsumed)
{
    ptc_upstream_t *up = (ptc_upstream_t *)(void *)s->client;

    if (s->pending) {
        pending_remove(up, s);
        s->client = NULL;
        if (up->retired)
            ptc_worker_pool_idle(up->worker); /* its idle connections may close now */
        return;
    }
    ptc_h2client_t *conn = s->conn;
    if (conn == NULL)
        return;
    stream_detach(s);
    ptc_h2c_cancel(&conn->h2, s, unconsumed);
    conn_streams_add(conn, -1);
    conn_want_send(conn);
}

static void client_resume_data(ptc_upstream_stream_t *s)
{
    if (s->conn == NULL)
        return;
    if (s->data_deferred) /* only a stream whose read_request said so waits */
        ptc_h2c_resume(&s->conn->h2, s);
    conn_want_send(s->conn);
}

static void client_consume(ptc_upstream_stream_t *s, size_t n)
{
    if (s->conn == NULL || n == 0)
        return;
    ptc_h2c_consume(&s->conn->h2, s, n);
    conn_want_send(s->conn);
}

static const ptc_upstream_client_cb_t pool_client = {client_start, client_cancel, client_resume_data, client_consume};

/* ---- pools and reloads ---- */

ptc_upstream_t *ptc_upstream_new(ptc_worker_t *w, ptc_snapshot_t *snap, size_t index)
{
    const ptc_upstream_config_t *cfg = &snap->config.upstreams[index];
    ptc_upstream_t *up = calloc(1, sizeof(*up));

    if (up == NULL || (up->endpoints = calloc(cfg->num_endpoints, sizeof(*up->endpoints))) == NULL) {
        free(up);
        return NULL;
    }
    up->client.cb = &pool_client;
    up->client.config = cfg;
    up->worker = w;
    up->snap = ptc_snapshot_ref(snap);
    up->index = index;
    TAILQ_INIT(&up->conns);
    TAILQ_INIT(&up->pending);
    TAILQ_INIT(&up->pinned);
    if (ptc_monitor_start(up) != 0)
        ptc_log_error("upstream %s: out of memory; its health checks and DNS refresh do not run", cfg->name);
    return up;
}

int ptc_upstream_update(ptc_upstream_t *up, ptc_snapshot_t *snap, size_t index)
{
    const ptc_upstream_config_t *old = up_config(up), *cfg = &snap->config.upstreams[index];
    ptc_endpoint_state_t *states = calloc(cfg->num_endpoints, sizeof(*states));
    size_t *map = calloc(old->num_endpoints, sizeof(*map)); /* old endpoint index -> new (SIZE_MAX: removed) */
    ptc_h2client_t *conn, *next;

    if (states == NULL || map == NULL) {
        free(states);
        free(map);
        return PTC_ENOMEM;
    }
    ptc_monitor_stop(up); /* its checks are pinned to endpoint indexes; it starts again on the new list below */
    for (size_t i = 0; i < old->num_endpoints; i++) {
        map[i] = SIZE_MAX;
        for (size_t j = 0; j < cfg->num_endpoints && map[i] == SIZE_MAX; j++)
            if (ptc_hostport_eq(&old->endpoints[i], &cfg->endpoints[j])) {
                map[i] = j;
                states[j] = up->endpoints[i]; /* an endpoint that stays keeps its backoff */
            }
    }
    free(up->endpoints);
    up->endpoints = states;
    up->rr_next = 0;
    up->client.config = cfg;
    up->index = index;
    /* the old snapshot goes only after every pointer into it (old, the endpoint hosts) was replaced */
    ptc_snapshot_t *prev = up->snap;
    up->snap = ptc_snapshot_ref(snap);
    for (conn = TAILQ_FIRST(&up->conns); conn != NULL; conn = next) {
        next = TAILQ_NEXT(conn, link);
        if (conn->endpoint == SIZE_MAX || (conn->endpoint = map[conn->endpoint]) != SIZE_MAX)
            continue;
        /* its endpoint is gone: no new streams; it closes once the open ones are done */
        if (conn->num_streams == 0)
            conn_close(conn, "endpoint removed by a reload");
        else if (conn->state != H2C_CONNECTING)
            conn_set_state(conn, H2C_DRAINING);
    }
    free(map);
    ptc_snapshot_release(prev);
    if (ptc_monitor_start(up) != 0)
        ptc_log_error("upstream %s: out of memory; its health checks and DNS refresh do not run", cfg->name);
    dispatch(up);
    return 0;
}

void ptc_upstream_retire(ptc_upstream_t *up)
{
    ptc_h2client_t *conn, *next;

    up->retired = true; /* idempotent: the worker calls it again while the pool waits to be freed */
    ptc_monitor_stop(up); /* the pool that replaces it (if any) checks the endpoints from now on */
    if (up->num_pending != 0)
        return; /* queued streams still need the connections; the last stream to close closes them */
    for (conn = TAILQ_FIRST(&up->conns); conn != NULL; conn = next) {
        next = TAILQ_NEXT(conn, link);
        if (conn->num_streams == 0)
            conn_close(conn, "upstream removed or replaced by a reload");
    }
}

bool ptc_upstream_idle(const ptc_upstream_t *up)
{
    return up->num_conns == 0 && up->num_pending == 0;
}

void ptc_upstream_free(ptc_upstream_t *up)
{
    ptc_h2client_t *conn;

    if (up == NULL)
        return;
    up->retired = true; /* conn_close must not dispatch into fresh connections */
    ptc_monitor_stop(up);
    fail_pending(up, "gateway shutting down");
    while ((conn = TAILQ_FIRST(&up->conns)) != NULL)
        conn_close(conn, "gateway shutting down");
    free(up->endpoints);
    ptc_snapshot_release(up->snap);
    free(up);
}
