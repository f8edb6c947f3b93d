/*
 * Unit tests for src/upstream/pool.c through its client interface, against an in-process HTTP/2 server
 * (nghttp2, on the worker's own event base, whose loop the test drives): the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS is honoured (a second connection opens when the first is full, up to
 * max_connections; beyond that streams wait and open as others close), endpoints that refuse back off
 * exponentially up to backoff.max and recover, and a server that accepts but never speaks HTTP/2 fails
 * the waiting streams after connect_timeout.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <nghttp2/nghttp2.h>

#include "portico/config.h"
#include "portico/listener.h"
#include "portico/snapshot.h"
#include "portico/upstream.h"
#include "portico/worker.h"

/* A header field of string literals (nghttp2 takes non-const pointers; it does not write through them). */
#define NV(n, v)                                                                                                                   \
    {                                                                                                                              \
        (uint8_t *)(uintptr_t)(n), (uint8_t *)(uintptr_t)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE                   \
    }

/* ---- the server ---- */

#define MAX_CONNS 8

typedef struct st_server_t server_t;

typedef struct {
    server_t *srv;
    struct bufferevent *bev;
    nghttp2_session *session;
    int32_t ended[64]; /* streams whose request ended, not answered yet */
    size_t num_ended;
    size_t streams; /* opened on this connection */
} sconn_t;

struct st_server_t {
    struct evconnlistener *listener;
    uint16_t port;
    uint32_t max_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
    bool silent;          /* accept, then say nothing (no SETTINGS) */
    sconn_t *conns[MAX_CONNS];
    size_t num_conns;
};

static ssize_t s_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags, void *user_data)
{
    (void)session;
    (void)flags;
    sconn_t *c = user_data;
    evbuffer_add(bufferevent_get_output(c->bev), data, len);
    return (ssize_t)len;
}

static int s_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    (void)frame;
    ((sconn_t *)user_data)->streams++;
    return 0;
}

static int s_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    sconn_t *c = user_data;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 &&
        c->num_ended < PTC_ARRAY_SIZE(c->ended))
        c->ended[c->num_ended++] = frame->hd.stream_id;
    return 0;
}

static void s_read(struct bufferevent *bev, void *arg)
{
    sconn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (c->srv->silent) {
        evbuffer_drain(in, len);
        return;
    }
    assert_true(nghttp2_session_mem_recv(c->session, evbuffer_pullup(in, -1), len) == (ssize_t)len);
    evbuffer_drain(in, len);
    assert_int_equal(nghttp2_session_send(c->session), 0);
}

static void s_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
    (void)l;
    (void)sa;
    (void)socklen;
    server_t *srv = arg;
    sconn_t *c = calloc(1, sizeof(*c));
    nghttp2_session_callbacks *cbs;
    assert_non_null(c);
    assert_true(srv->num_conns < MAX_CONNS);
    srv->conns[srv->num_conns++] = c;
    c->srv = srv;
    c->bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(c->bev);
    bufferevent_setcb(c->bev, s_read, NULL, NULL, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (srv->silent)
        return;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, s_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, s_begin_headers);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, s_frame_recv);
    assert_int_equal(nghttp2_session_server_new(&c->session, cbs, c), 0);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->max_streams}};
    assert_int_equal(nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 1), 0);
    assert_int_equal(nghttp2_session_send(c->session), 0);
}

static void server_start(server_t *srv, struct event_base *base, uint16_t port, uint32_t max_streams, bool silent)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    *srv = (server_t){.max_streams = max_streams, .silent = silent};
    srv->listener = evconnlistener_new_bind(base, s_accept, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                            (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(srv->listener);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&sin, &len), 0);
    srv->port = ntohs(sin.sin_port);
}

/* Answers (:status 200, END_STREAM) the first n requests that ended on connection i. */
static void server_answer(server_t *srv, size_t i, size_t n)
{
    sconn_t *c = srv->conns[i];
    static const nghttp2_nv nva[] = {NV(":status", "200")};
    assert_true(n <= c->num_ended);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(nghttp2_submit_response(c->session, c->ended[k], nva, 1, NULL), 0);
    memmove(c->ended, c->ended + n, (c->num_ended - n) * sizeof(c->ended[0]));
    c->num_ended -= n;
    assert_int_equal(nghttp2_session_send(c->session), 0);
}

static void server_stop(server_t *srv)
{
    for (size_t i = 0; i < srv->num_conns; i++) {
        if (srv->conns[i]->session != NULL)
            nghttp2_session_del(srv->conns[i]->session);
        bufferevent_free(srv->conns[i]->bev);
        free(srv->conns[i]);
    }
    evconnlistener_free(srv->listener);
    srv->num_conns = 0;
}

/* ---- streams ---- */

typedef struct {
    ptc_upstream_stream_t s; /* first */
    int status;
    bool closed, failed;
    uint32_t code;
    char error[400];
} tstream_t;

static void t_request_headers(ptc_upstream_stream_t *s, const nghttp2_nv **nva, size_t *n)
{
    (void)s;
    static const nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", "/t.S/M"),
        NV(":authority", "t"),
    };
    *nva = hdrs;
    *n = PTC_ARRAY_SIZE(hdrs);
}

static ssize_t t_read_request(ptc_upstream_stream_t *s, size_t length, uint32_t *data_flags)
{
    (void)s;
    (void)length;
    *data_flags |= NGHTTP2_DATA_FLAG_EOF; /* no body */
    return 0;
}

static int t_write_request(ptc_upstream_stream_t *s, struct evbuffer *out, const uint8_t *framehd, size_t length)
{
    (void)s;
    assert_int_equal(length, 0);
    return evbuffer_add(out, framehd, 9);
}

static void t_on_header(ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen)
{
    (void)cat;
    tstream_t *t = (tstream_t *)s;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        for (size_t i = 0; i < valuelen; i++)
            t->status = t->status * 10 + (value[i] - '0');
}

static void t_on_headers_end(ptc_upstream_stream_t *s, nghttp2_headers_category cat, bool end_stream)
{
    (void)s;
    (void)cat;
    (void)end_stream;
}

static void t_on_data(ptc_upstream_stream_t *s, const uint8_t *data, size_t len)
{
    (void)s;
    (void)data;
    (void)len;
}

static void t_on_data_end(ptc_upstream_stream_t *s)
{
    (void)s;
}

static void t_on_close(ptc_upstream_stream_t *s, uint32_t error_code, const char *conn_error)
{
    tstream_t *t = (tstream_t *)s;
    t->closed = true;
    t->code = error_code;
    snprintf(t->error, sizeof(t->error), "%s", conn_error != NULL ? conn_error : "");
}

static void t_on_error(ptc_upstream_stream_t *s, const char *message)
{
    tstream_t *t = (tstream_t *)s;
    t->failed = true;
    snprintf(t->error, sizeof(t->error), "%s", message);
}

static const ptc_upstream_stream_cb_t tstream_cb = {t_request_headers, t_read_request,   t_write_request,
                                                    t_on_header,       t_on_headers_end, t_on_data,
                                                    t_on_data_end,     t_on_close,       t_on_error};

/* ---- fixture ---- */

typedef struct {
    ptc_worker_t w;
    ptc_snapshot_t *snap;
    ptc_upstream_t *up;
} fix_t;

static fix_t *fix_new(uint16_t port)
{
    fix_t *f = calloc(1, sizeof(*f));
    ptc_config_t cfg = {0};
    char yaml[512], err[512], host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, 0};
    int fd = -1;

    assert_non_null(f);
    snprintf(yaml, sizeof(yaml),
             "upstreams:\n  - name: up\n    endpoints: ['127.0.0.1:%u']\n    max_connections: 2\n    connect_timeout: 200ms\n"
             "    backoff: {initial: 100ms, max: 400ms}\n",
             port);
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    if (ptc_config_load_string(&cfg, "test.yaml", yaml, strlen(yaml), err, sizeof(err)) != 0)
        fail_msg("%s", err);
    if (ptc_snapshot_new(&f->snap, &cfg, 1, NULL, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    if (ptc_listen_socket(&hp, &fd, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(ptc_worker_init(&f->w, 0, f->snap, &fd, -1), 0);
    f->up = f->w.pools[0];
    return f;
}

static void fix_free(fix_t *f)
{
    ptc_worker_dispose(&f->w);
    ptc_snapshot_release(f->snap);
    free(f);
}

typedef bool (*pred_t)(const void *arg);

/* Runs the loop until pred(arg) or ms pass; returns pred(arg). */
static bool run(fix_t *f, pred_t pred, const void *arg, uint64_t ms)
{
    uint64_t end = ptc_now_ms() + ms;
    while (!(pred != NULL && pred(arg)) && ptc_now_ms() < end) {
        event_base_loop(f->w.base, EVLOOP_NONBLOCK);
        usleep(500);
    }
    return pred != NULL && pred(arg);
}

static void start(fix_t *f, tstream_t *t)
{
    *t = (tstream_t){.s = {.cb = &tstream_cb}};
    ptc_upstream_client_t *c = ptc_upstream_client(f->up);
    c->cb->start(c, &t->s);
}

typedef struct {
    const server_t *srv;
    size_t want;
} count_arg_t;

static bool server_has_ended(const void *arg)
{
    const count_arg_t *a = arg;
    size_t n = 0;
    for (size_t i = 0; i < a->srv->num_conns; i++)
        n += a->srv->conns[i]->num_ended;
    return n >= a->want;
}

static bool stream_done(const void *arg)
{
    const tstream_t *t = arg;
    return t->closed || t->failed;
}

/* A free loopback port (bound and closed again: nothing listens on it). */
static uint16_t free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* ---- tests ---- */

static void test_max_concurrent_streams_and_connections(void **state)
{
    (void)state;
    server_t srv;
    uint16_t port = free_port();
    fix_t *f = fix_new(port);
    tstream_t t[5];

    server_start(&srv, f->w.base, port, 2, false);
    for (size_t i = 0; i < 5; i++)
        start(f, &t[i]);
    /* 2 streams on each of max_connections (2) connections; the fifth waits */
    count_arg_t four = {&srv, 4};
    assert_true(run(f, server_has_ended, &four, 3000));
    run(f, NULL, NULL, 50);
    assert_int_equal(srv.num_conns, 2);
    assert_int_equal(srv.conns[0]->streams, 2);
    assert_int_equal(srv.conns[1]->streams, 2);
    assert_int_equal(f->up->num_conns, 2);
    assert_int_equal(f->up->num_pending, 1);
    assert_false(t[4].closed || t[4].failed);
    /* one stream of the first connection ends: the waiting one takes its place there */
    server_answer(&srv, 0, 1);
    count_arg_t again_four = {&srv, 4}; /* 3 left unanswered and the one that waited */
    assert_true(run(f, stream_done, &t[0], 2000));
    assert_true(run(f, server_has_ended, &again_four, 2000));
    run(f, NULL, NULL, 50);
    assert_int_equal(f->up->num_pending, 0);
    assert_int_equal(srv.conns[0]->streams, 3);
    assert_int_equal(srv.num_conns, 2);
    assert_true(t[0].closed && t[0].code == 0 && t[0].status == 200);
    /* the rest are answered */
    server_answer(&srv, 0, srv.conns[0]->num_ended);
    server_answer(&srv, 1, srv.conns[1]->num_ended);
    for (size_t i = 0; i < 5; i++) {
        assert_true(run(f, stream_done, &t[i], 2000));
        assert_true(t[i].closed && !t[i].failed && t[i].code == 0 && t[i].status == 200);
    }
    server_stop(&srv);
    fix_free(f);
}

static void test_backoff_doubles_to_max_then_recovers(void **state)
{
    (void)state;
    uint16_t port = free_port();
    fix_t *f = fix_new(port);
    tstream_t t;
    const uint64_t expect[] = {100, 200, 400, 400};

    for (size_t round = 0; round < PTC_ARRAY_SIZE(expect); round++) {
        if (round != 0) /* wait out the backoff: the next attempt connects again */
            run(f, NULL, NULL, f->up->endpoints[0].retry_at_ms - ptc_now_ms() + 5);
        start(f, &t);
        assert_true(run(f, stream_done, &t, 2000));
        assert_true(t.failed);
        if (strstr(t.error, "upstream 'up' unavailable: 127.0.0.1:") != t.error || strstr(t.error, "next attempt in") == NULL)
            fail_msg("round %zu: %s", round, t.error);
        assert_int_equal(f->up->endpoints[0].backoff_ms, expect[round]);
        /* while it backs off, a stream fails at once, without a new attempt */
        tstream_t quick;
        start(f, &quick);
        assert_true(quick.failed);
        assert_int_equal(f->up->num_conns, 0);
        assert_int_equal(f->up->endpoints[0].backoff_ms, expect[round]);
    }
    /* the endpoint comes back: after the backoff, streams are served and the backoff is forgotten */
    server_t srv;
    server_start(&srv, f->w.base, port, 10, false);
    run(f, NULL, NULL, f->up->endpoints[0].retry_at_ms - ptc_now_ms() + 5);
    start(f, &t);
    count_arg_t one = {&srv, 1};
    assert_true(run(f, server_has_ended, &one, 2000));
    server_answer(&srv, 0, 1);
    assert_true(run(f, stream_done, &t, 2000));
    assert_true(t.closed && t.status == 200);
    assert_int_equal(f->up->endpoints[0].backoff_ms, 0);
    server_stop(&srv);
    fix_free(f);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    server_t srv;
    uint16_t port = free_port();
    fix_t *f = fix_new(port);
    tstream_t t;

    server_start(&srv, f->w.base, port, 10, true); /* accepts, never sends SETTINGS */
    uint64_t t0 = ptc_now_ms();
    start(f, &t);
    assert_true(run(f, stream_done, &t, 3000));
    uint64_t waited = ptc_now_ms() - t0;
    assert_true(t.failed);
    if (strstr(t.error, "no HTTP/2 connection within 200 ms (connect_timeout)") == NULL)
        fail_msg("%s", t.error);
    assert_true(waited >= 190 && waited < 1500);
    assert_int_equal(f->up->endpoints[0].backoff_ms, 100);
    assert_int_equal(srv.num_conns, 1);
    server_stop(&srv);
    fix_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_concurrent_streams_and_connections),
        cmocka_unit_test(test_backoff_doubles_to_max_then_recovers),
        cmocka_unit_test(test_connect_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
