/*
 * Upstream pool and HTTP/2 client connections (nghttp2 client sessions over libevent bufferevents).
 *
 * Flow control: the session is created with automatic WINDOW_UPDATE off. A stream's window is
 * credited (ptc_upstream_consume) only after the call has handed the bytes to its downstream and the
 * downstream is not backed up, so a slow browser stops the upstream instead of growing our buffers.
 * The connection-level window is opened wide; the per-stream windows are the bound.
 *
 * Re-entrancy: nghttp2 forbids nghttp2_session_send() inside its callbacks and freeing the session
 * from them. While a connection is inside nghttp2 (in_nghttp2), sends are recorded in want_send and a
 * close in want_close; both are carried out by the outermost caller once nghttp2 returns.
 *
 * TLS upstreams (config->tls): the connection is a bufferevent_openssl in connecting state whose socket is
 * connected by bufferevent_socket_connect_hostname like a plain one; BEV_EVENT_CONNECTED then means the TCP
 * connection and the TLS handshake (verification included) are done, and ALPN must have selected "h2". A
 * handshake failure is the connection's failure reason, so the calls waiting for it end with
 * UNAVAILABLE and OpenSSL's reason (e.g. "certificate verify failed: unable to get local issuer certificate").
 */
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
#include "portico/h2io.h"
#include "portico/log.h"
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
    char addr[80];         /* "host:port" of the endpoint, for log lines */
    struct bufferevent *bev;
    nghttp2_session *session;
    h2c_state_t state;
    struct event *timer;   /* connect + handshake deadline */
    struct event *send_ev; /* deferred nghttp2_session_send(): one per loop pass for all calls */
    bool direct_write;     /* cleartext: written by conn_send() itself (ptc_bev_write_now()) */
    bool write_blocked;
    size_t num_streams;  /* streams opened and not yet closed (with or without a call) */
    TAILQ_HEAD(, st_ptc_upstream_stream_t) streams; /* open streams that still have an owner */
    TAILQ_ENTRY(st_ptc_h2client_t) link;
    unsigned in_nghttp2;
    bool want_send;
    bool want_close;
    char close_reason[160];
    ptc_upstream_stats_t *stats; /* the worker's metrics of this upstream: connection states */
    bool counted;                /* stats->conns[state] counts it */
};

static void conn_close(ptc_h2client_t *conn, const char *reason);
static void dispatch(ptc_upstream_t *up);

/* The gauge of the connection's state in the worker's metrics (portico_upstream_connections{state}). */
static ptc_counter_t *state_gauge(ptc_h2client_t *conn)
{
    static const int gauge[] = {[H2C_CONNECTING] = PTC_UPSTREAM_CONNECTING, [H2C_READY] = PTC_UPSTREAM_READY,
                                [H2C_DRAINING] = PTC_UPSTREAM_DRAINING};
    return &conn->stats->conns[gauge[conn->state]];
}

static void conn_set_state(ptc_h2client_t *conn, h2c_state_t state)
{
    if (conn->counted)
        PTC_STAT_ADD(*state_gauge(conn), -1);
    conn->state = state;
    conn->counted = true;
    PTC_STAT_INC(*state_gauge(conn));
}
static void stream_detach(ptc_upstream_stream_t *s);
static void conn_send(ptc_h2client_t *conn);

/*
 * Sends requested by calls (new streams, request bodies, window credits) are batched: they run once
 * at the end of the loop pass, for every call that asked, instead of once per call.
 */
static void conn_want_send(ptc_h2client_t *conn)
{
    if (conn->in_nghttp2 != 0 || conn->session == NULL)
        conn->want_send = true;
    else
        event_active(conn->send_ev, EV_WRITE, 0);
}

static void on_send_ev(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    conn_send(arg);
}

static const ptc_upstream_config_t *up_config(const ptc_upstream_t *up)
{
    return up->client.config;
}

/* ---- sending ---- */

static void conn_send(ptc_h2client_t *conn)
{
    if (conn->in_nghttp2 != 0 || conn->session == NULL) {
        conn->want_send = true;
        return;
    }
    conn->in_nghttp2++;
    int rv = ptc_h2_send(conn->session, conn->bev, conn->direct_write ? &conn->write_blocked : NULL, &conn->want_send);
    if (rv != 0) {
        snprintf(conn->close_reason, sizeof(conn->close_reason), "HTTP/2 send failed: %s",
                 rv == PTC_EIO ? strerror(errno) : nghttp2_strerror(rv));
        conn->want_close = true;
    }
    conn->in_nghttp2--;
    if (conn->want_close) {
        conn_close(conn, conn->close_reason);
        return;
    }
    if (!nghttp2_session_want_read(conn->session) && !nghttp2_session_want_write(conn->session) &&
        evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0)
        conn_close(conn, "HTTP/2 session finished");
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags, void *user_data)
{
    (void)session;
    (void)flags;
    ptc_h2client_t *conn = user_data;
    return ptc_h2_write(bufferevent_get_output(conn->bev), data, length);
}

static ssize_t read_request(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data)
{
    (void)buf;
    (void)source;
    (void)user_data;
    ptc_upstream_stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL) /* the stream was withdrawn; its RST_STREAM is queued */
        return NGHTTP2_ERR_DEFERRED;
    return s->cb->read_request(s, length, data_flags);
}

static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user_data)
{
    (void)source;
    ptc_h2client_t *conn = user_data;
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    ptc_upstream_stream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);

    if (s == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (evbuffer_get_length(out) >= PTC_H2_OUTPUT_WOULDBLOCK)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (s->cb->write_request(s, out, framehd, length) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* a partial frame: the connection cannot go on */
    return 0;
}

/* ---- receiving ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    (void)frame;
    (void)user_data;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    ptc_upstream_stream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s != NULL)
        s->cb->on_header(s, frame->headers.cat, name, namelen, value, valuelen);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    ptc_h2client_t *conn = user_data;
    ptc_upstream_stream_t *s;

    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0 && conn->state == H2C_CONNECTING) {
            conn_set_state(conn, H2C_READY);
            evtimer_del(conn->timer);
            if (conn->endpoint != SIZE_MAX) {
                conn->up->endpoints[conn->endpoint].backoff_ms = 0;
                conn->up->endpoints[conn->endpoint].retry_at_ms = 0;
            } else {
                conn_set_state(conn, H2C_DRAINING); /* its endpoint was removed while it connected */
            }
            ptc_log_debug("upstream %s: connected to %s (max concurrent streams %" PRIu32 ")", up_config(conn->up)->name, conn->addr,
                          nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
            dispatch(conn->up);
        } else if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
            /* MAX_CONCURRENT_STREAMS may have grown */
            dispatch(conn->up);
        }
        break;
    case NGHTTP2_HEADERS:
        if ((s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id)) != NULL)
            s->cb->on_headers_end(s, frame->headers.cat, (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 &&
            (s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id)) != NULL)
            s->cb->on_data_end(s);
        break;
    case NGHTTP2_GOAWAY:
        ptc_log_info("upstream %s: GOAWAY from %s (last stream %" PRId32 ", error %" PRIu32 ")", up_config(conn->up)->name,
                     conn->addr, frame->goaway.last_stream_id, frame->goaway.error_code);
        conn_set_state(conn, H2C_DRAINING);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data)
{
    (void)flags;
    (void)user_data;
    ptc_upstream_stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL) {
        /* nobody will read these bytes; give the window back so the connection does not stall */
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    s->cb->on_data(s, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    ptc_h2client_t *conn = user_data;
    ptc_upstream_stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);

    conn->num_streams--;
    if (s != NULL) {
        stream_detach(s);
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
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
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    ptc_h2client_t *conn = arg;

    conn->in_nghttp2++;
    int rv = ptc_h2_feed(conn->session, bufferevent_get_input(bev), &conn->want_close);
    conn->in_nghttp2--;
    if (rv != 0 && !conn->want_close) {
        snprintf(conn->close_reason, sizeof(conn->close_reason), "HTTP/2 protocol error from upstream: %s", nghttp2_strerror(rv));
        conn->want_close = true;
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
    if (conn->session != NULL)
        conn_send(conn);
}

static int session_create(ptc_h2client_t *conn)
{
    const ptc_config_t *cfg = &conn->up->snap->config;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    int rv;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return PTC_ENOMEM;
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return PTC_ENOMEM;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    rv = nghttp2_session_client_new3(&conn->session, cbs, conn, opt, ptc_alloc_nghttp2_mem());
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        return PTC_ENOMEM;

    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->limits.stream_window_size},
    };
    if (nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, iv, PTC_ARRAY_SIZE(iv)) != 0 ||
        nghttp2_session_set_local_window_size(conn->session, NGHTTP2_FLAG_NONE, 0, CONNECTION_WINDOW_SIZE) != 0)
        return PTC_ENOMEM;
    return 0;
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
        if (ssl != NULL && !ptc_tls_alpn_is_h2(ssl)) {
            conn_close(conn, "TLS: the server did not select HTTP/2 with ALPN (it must offer \"h2\")");
            return;
        }
        if (session_create(conn) != 0) {
            conn_close(conn, "cannot create HTTP/2 session (out of memory)");
            return;
        }
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
    if (conn->in_nghttp2 != 0) {
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

/* Backoff bookkeeping for a connection that never became ready. */
static void endpoint_failed(ptc_upstream_t *up, size_t ep, const char *reason)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    ptc_endpoint_state_t *st = &up->endpoints[ep];
    st->backoff_ms = st->backoff_ms == 0 ? cfg->backoff_initial_ms : PTC_MIN(st->backoff_ms * 2, cfg->backoff_max_ms);
    st->retry_at_ms = ptc_now_ms() + st->backoff_ms;
    PTC_STAT_INC(ptc_metrics_upstream(&up->worker->metrics, cfg->name)->connect_failures);
    snprintf(st->last_error, sizeof(st->last_error), "%.64s:%u: %.160s", cfg->endpoints[ep].host, cfg->endpoints[ep].port, reason);
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

    if (conn->in_nghttp2 != 0) {
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
    if (conn->counted)
        PTC_STAT_ADD(*state_gauge(conn), -1);
    while ((s = TAILQ_FIRST(&conn->streams)) != NULL) {
        stream_detach(s);
        char msg[240];
        snprintf(msg, sizeof(msg), "upstream connection lost: %s", why);
        s->cb->on_close(s, NGHTTP2_INTERNAL_ERROR, msg);
    }
    if (conn->session != NULL)
        nghttp2_session_del(conn->session);
    bufferevent_free(conn->bev);
    event_free(conn->timer);
    event_free(conn->send_ev);
    free(conn);
    dispatch(up);
    if (up->retired && ptc_upstream_idle(up))
        ptc_worker_pool_idle(up->worker);
}

/* Picks the next endpoint round-robin among those not backing off; SIZE_MAX when all are. */
static size_t pick_endpoint(ptc_upstream_t *up)
{
    uint64_t now = ptc_now_ms();
    size_t n = up_config(up)->num_endpoints;
    for (size_t i = 0; i < n; i++) {
        size_t ep = (up->rr_next + i) % n;
        if (up->endpoints[ep].retry_at_ms <= now) {
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
    conn_set_state(conn, H2C_CONNECTING);
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
    TAILQ_INSERT_TAIL(&up->conns, conn, link);
    up->num_conns++;
    struct timeval tv = {(time_t)(cfg->connect_timeout_ms / 1000), (suseconds_t)(cfg->connect_timeout_ms % 1000 * 1000)};
    evtimer_add(conn->timer, &tv);
    ptc_log_debug("upstream %s: connecting to %s", cfg->name, conn->addr);
    /* name resolution goes through evdns; numeric hosts are parsed without a query. Failure is reported
     * through on_event, possibly before this returns, so conn must already be fully set up. */
    conn->in_nghttp2++;
    bufferevent_socket_connect_hostname(conn->bev, up->worker->dns, AF_UNSPEC, hp->host, hp->port);
    conn->in_nghttp2--;
    if (conn->want_close) {
        conn_close(conn, conn->close_reason);
        return NULL;
    }
    return conn;
}

static bool conn_has_capacity(ptc_h2client_t *conn)
{
    return conn->state == H2C_READY &&
           conn->num_streams < nghttp2_session_get_remote_settings(conn->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

/* Takes a stream off its connection's list (the nghttp2 stream itself is the caller's business). */
const char *ptc_upstream_stream_peer(const ptc_upstream_stream_t *s)
{
    return s->conn != NULL ? s->conn->addr : NULL;
}

static void stream_detach(ptc_upstream_stream_t *s)
{
    TAILQ_REMOVE(&s->conn->streams, s, conn_link);
    s->conn = NULL;
    s->client = NULL;
}

/* Opens an HTTP/2 stream for s on conn; returns false if the connection cannot take it. */
static bool submit(ptc_h2client_t *conn, ptc_upstream_stream_t *s)
{
    const nghttp2_nv *nva;
    size_t n;
    nghttp2_data_provider prd = {.source = {.ptr = NULL}, .read_callback = read_request};

    s->cb->request_headers(s, &nva, &n);
    int32_t id = nghttp2_submit_request(conn->session, NULL, nva, n, &prd, s);
    if (id < 0) {
        if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
            conn_set_state(conn, H2C_DRAINING);
        ptc_log_warn("upstream %s: cannot open a stream: %s", up_config(conn->up)->name, nghttp2_strerror(id));
        return false;
    }
    s->conn = conn;
    s->stream_id = id;
    conn->num_streams++;
    TAILQ_INSERT_TAIL(&conn->streams, s, conn_link);
    conn_want_send(conn);
    return true;
}

static void pending_remove(ptc_upstream_t *up, ptc_upstream_stream_t *s)
{
    TAILQ_REMOVE(&up->pending, s, pending_link);
    s->pending = false;
    up->num_pending--;
}

static void fail_pending(ptc_upstream_t *up, const char *message)
{
    ptc_upstream_stream_t *s;
    while ((s = TAILQ_FIRST(&up->pending)) != NULL) {
        pending_remove(up, s);
        s->client = NULL;
        s->cb->on_error(s, message);
    }
}

/*
 * Every endpoint not backing off gets a connection (within max_connections), so that streams spread over
 * all of them rather than only failing over.
 */
static void connect_endpoints(ptc_upstream_t *up)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    uint64_t now = ptc_now_ms();
    for (size_t ep = 0; ep < cfg->num_endpoints && up->num_conns < cfg->max_connections; ep++) {
        ptc_h2client_t *conn;
        bool have = false;
        TAILQ_FOREACH(conn, &up->conns, link)
        have = have || conn->endpoint == ep;
        if (!have && up->endpoints[ep].retry_at_ms <= now)
            conn_open(up, ep); /* a synchronous failure puts the endpoint in backoff */
    }
}

/* The next connection with a free stream, round-robin; NULL when none has one. */
static ptc_h2client_t *pick_conn(ptc_upstream_t *up, bool *connecting)
{
    ptc_h2client_t *conn;
    size_t eligible = 0;
    *connecting = false;
    TAILQ_FOREACH(conn, &up->conns, link)
    {
        if (conn->state == H2C_CONNECTING)
            *connecting = true;
        else if (conn_has_capacity(conn))
            eligible++;
    }
    if (eligible == 0)
        return NULL;
    size_t k = up->conn_rr++ % eligible;
    TAILQ_FOREACH(conn, &up->conns, link)
    {
        if (conn->state != H2C_CONNECTING && conn_has_capacity(conn) && k-- == 0)
            return conn;
    }
    return NULL;
}

/* Moves queued streams onto connections with free streams, opening connections as needed. */
static void dispatch(ptc_upstream_t *up)
{
    const ptc_upstream_config_t *cfg = up_config(up);
    ptc_upstream_stream_t *s;

    if (!TAILQ_EMPTY(&up->pending))
        connect_endpoints(up);
    while ((s = TAILQ_FIRST(&up->pending)) != NULL) {
        bool connecting;
        ptc_h2client_t *target = pick_conn(up, &connecting);
        if (target != NULL) {
            pending_remove(up, s);
            if (!submit(target, s)) {
                TAILQ_INSERT_HEAD(&up->pending, s, pending_link);
                s->pending = true;
                up->num_pending++;
            }
            continue;
        }
        if (connecting)
            return; /* wait for it */
        if (up->num_conns < cfg->max_connections) {
            size_t ep = pick_endpoint(up);
            if (ep != SIZE_MAX) {
                if (conn_open(up, ep) != NULL)
                    return;
                continue; /* failed at once (e.g. bad address); its endpoint now backs off */
            }
            if (up->num_conns == 0) {
                /* every endpoint is backing off: report the one that comes back first */
                const ptc_endpoint_state_t *st = &up->endpoints[0];
                for (size_t i = 1; i < cfg->num_endpoints; i++)
                    if (up->endpoints[i].retry_at_ms < st->retry_at_ms)
                        st = &up->endpoints[i];
                uint64_t now = ptc_now_ms(), wait = st->retry_at_ms > now ? st->retry_at_ms - now : 0;
                char msg[400];
                snprintf(msg, sizeof(msg), "upstream '%.64s' unavailable: %s (next attempt in %" PRIu64 " ms)", cfg->name,
                         st->last_error[0] != '\0' ? st->last_error : "no endpoint available", wait);
                fail_pending(up, msg);
            }
        }
        return; /* all connections are busy: wait for a stream to close */
    }
}

/* ---- the client interface ---- */

static void client_start(ptc_upstream_client_t *c, ptc_upstream_stream_t *s)
{
    ptc_upstream_t *up = (ptc_upstream_t *)(void *)c;

    if (up->num_pending >= up_config(up)->max_pending) {
        char msg[160];
        snprintf(msg, sizeof(msg), "upstream '%s' overloaded: %zu calls already waiting for a connection (max_pending)",
                 up_config(up)->name, up->num_pending);
        s->cb->on_error(s, msg);
        return;
    }
    s->client = c;
    TAILQ_INSERT_TAIL(&up->pending, s, pending_link);
    s->pending = true;
    up->num_pending++;
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
    int32_t id = s->stream_id;
    stream_detach(s);
    nghttp2_session_set_stream_user_data(conn->session, id, NULL);
    if (unconsumed != 0)
        nghttp2_session_consume_connection(conn->session, unconsumed);
    nghttp2_submit_rst_stream(conn->session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    conn_want_send(conn);
}

static void client_resume_data(ptc_upstream_stream_t *s)
{
    if (s->conn == NULL)
        return;
    nghttp2_session_resume_data(s->conn->session, s->stream_id);
    conn_want_send(s->conn);
}

static void client_consume(ptc_upstream_stream_t *s, size_t n)
{
    if (s->conn == NULL || n == 0)
        return;
    nghttp2_session_consume(s->conn->session, s->stream_id, n);
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
    dispatch(up);
    return 0;
}

void ptc_upstream_retire(ptc_upstream_t *up)
{
    ptc_h2client_t *conn, *next;

    up->retired = true; /* idempotent: the worker calls it again while the pool waits to be freed */
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
    fail_pending(up, "gateway shutting down");
    while ((conn = TAILQ_FIRST(&up->conns)) != NULL)
        conn_close(conn, "gateway shutting down");
    free(up->endpoints);
    ptc_snapshot_release(up->snap);
    free(up);
}
