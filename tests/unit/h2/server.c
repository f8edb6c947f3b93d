/*
 * Unit tests for src/h2/server.c: the HTTP/2 adapter over one end of a socketpair, on a real worker whose
 * loop the test drives; the test is the client on the other end, writing frames itself (HPACK through
 * nghttp2's deflater) so that it can also break the rules. The upstream is a listening socket that never
 * accepts: a call waits on it (connection open at the TCP level, no SETTINGS) for as long as the test needs.
 * Covered: flow control both ways (the gateway holds DATA the client's window has no room for; a client that
 * sends beyond the stream window the gateway advertised gets FLOW_CONTROL_ERROR), RST_STREAM from the client
 * cancelling its call while the connection goes on, and GOAWAY on drain (streams in flight finish, then the
 * connection closes).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

#include <nghttp2/nghttp2.h>

#include "../support/worker_fixture.h"
#include "portico/conn.h"
#include "portico/h2.h"

enum { F_DATA = 0, F_HEADERS = 1, F_RST_STREAM = 3, F_SETTINGS = 4, F_GOAWAY = 7, F_WINDOW_UPDATE = 8 };
enum { END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4 };

typedef struct {
    uint8_t type, flags;
    uint32_t sid;
    const uint8_t *payload;
    size_t len;
} frame_t;

typedef struct {
    fix_t *f;
    int blackhole;                /* the upstream's listening socket, never accepted from */
    nghttp2_hd_deflater *deflate; /* the client's HPACK state */
} h2fix_t;

/* A listening socket on 127.0.0.1 that nobody accepts from: connections to it complete in the backlog and
 * hear nothing, so a call waits for the upstream's SETTINGS. */
static int blackhole(uint16_t *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void send_frame(fix_t *f, uint8_t type, uint8_t flags, uint32_t sid, const void *payload, size_t len)
{
    uint8_t hd[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type, flags,
                     (uint8_t)(sid >> 24),  (uint8_t)(sid >> 16), (uint8_t)(sid >> 8), (uint8_t)sid};
    send_bytes(f, hd, sizeof(hd));
    if (len != 0)
        send_bytes(f, payload, len);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The frames received so far, in order (up to max); returns how many. */
static size_t frames(const fix_t *f, frame_t *out, size_t max)
{
    const uint8_t *p = (const uint8_t *)f->in, *end = p + f->len;
    size_t n = 0;
    while (end - p >= 9 && n < max) {
        size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
        if ((size_t)(end - p) < 9 + len)
            break;
        out[n++] = (frame_t){p[3], p[4], get32(p + 5) & 0x7fffffffu, p + 9, len};
        p += 9 + len;
    }
    return n;
}

/* The first frame of this type on this stream, or NULL. */
static const frame_t *find(const fix_t *f, uint8_t type, uint32_t sid, frame_t *out)
{
    frame_t fr[256];
    size_t n = frames(f, fr, 256);
    for (size_t i = 0; i < n; i++) {
        if (fr[i].type == type && fr[i].sid == sid) {
            *out = fr[i];
            return out;
        }
    }
    return NULL;
}

typedef struct {
    uint8_t type;
    uint32_t sid;
} want_t;

static bool has_frame(fix_t *f, const void *arg)
{
    const want_t *w = arg;
    frame_t fr;
    return find(f, w->type, w->sid, &fr) != NULL;
}

/* Waits for a frame of this type on this stream; fails the test when none comes within 2 s. */
static frame_t wait_frame(fix_t *f, uint8_t type, uint32_t sid)
{
    want_t w = {type, sid};
    frame_t fr;
    run(f, has_frame, &w, 2000);
    if (find(f, type, sid, &fr) == NULL)
        fail_msg("no frame of type %u on stream %u (%zu bytes received)", type, sid, f->len);
    return fr;
}

/* The :status of the response HEADERS on sid: every HEADERS frame inflated in order (the dynamic table). */
static int status_of(const fix_t *f, uint32_t sid)
{
    frame_t fr[256];
    size_t n = frames(f, fr, 256);
    nghttp2_hd_inflater *inf;
    int status = -1;
    assert_int_equal(nghttp2_hd_inflate_new(&inf), 0);
    for (size_t i = 0; i < n; i++) {
        if (fr[i].type != F_HEADERS)
            continue;
        const uint8_t *in = fr[i].payload;
        size_t left = fr[i].len;
        for (;;) {
            nghttp2_nv nv;
            int flags = 0;
            ssize_t used = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, left, 1);
            assert_true(used >= 0);
            in += used, left -= (size_t)used;
            if ((flags & NGHTTP2_HD_INFLATE_EMIT) && fr[i].sid == sid && nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0)
                status = atoi((const char *)nv.value); /* nghttp2 NUL-terminates what it emits */
            if (flags & NGHTTP2_HD_INFLATE_FINAL) {
                nghttp2_hd_inflate_end_headers(inf);
                break;
            }
            if (used == 0 && left == 0)
                break;
        }
    }
    nghttp2_hd_inflate_del(inf);
    return status;
}

#define NV(n, v) {(uint8_t *)(uintptr_t)(n), (uint8_t *)(uintptr_t)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}

static void send_headers(h2fix_t *h, uint32_t sid, const nghttp2_nv *nv, size_t n, bool end_stream)
{
    uint8_t block[1024];
    ssize_t len = nghttp2_hd_deflate_hd(h->deflate, block, sizeof(block), nv, n);
    assert_true(len > 0);
    send_frame(h->f, F_HEADERS, (uint8_t)(END_HEADERS | (end_stream ? END_STREAM : 0)), sid, block, (size_t)len);
}

static void get_health(h2fix_t *h, uint32_t sid)
{
    const nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "a"), NV(":path", "/healthz")};
    send_headers(h, sid, nv, PTC_ARRAY_SIZE(nv), true);
}

/* A gRPC-Web call's head (the body follows in DATA frames). */
static void call_head(h2fix_t *h, uint32_t sid)
{
    const nghttp2_nv nv[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":authority", "a"),
                             NV(":path", "/portico.test.Echo/Unary"), NV("content-type", "application/grpc-web+proto")};
    send_headers(h, sid, nv, PTC_ARRAY_SIZE(nv), false);
}

/* A whole unary call: head and one empty message with END_STREAM. */
static void call(h2fix_t *h, uint32_t sid)
{
    static const uint8_t empty_message[5] = {0};
    call_head(h, sid);
    send_frame(h->f, F_DATA, END_STREAM, sid, empty_message, sizeof(empty_message));
}

static uint64_t calls_in_flight(const fix_t *f)
{
    return atomic_load(&f->w.metrics.calls_started) - atomic_load(&f->w.metrics.calls_ended);
}

static bool calls_done(fix_t *f, const void *arg)
{
    (void)arg;
    return calls_in_flight(f) == 0;
}

/* A worker serving HTTP/2 to the test, routes to the black hole; `limits` is YAML for limits: {…};
 * `client_window` the client's SETTINGS_INITIAL_WINDOW_SIZE (-1: not sent). The gateway's SETTINGS are
 * received and acknowledged. */
static h2fix_t h2fix_new(const char *limits, int64_t client_window)
{
    h2fix_t h = {0};
    char yaml[512];
    uint16_t port;
    h.blackhole = blackhole(&port);
    snprintf(yaml, sizeof(yaml),
             "workers: 1\n"
             "upstreams: [{name: hole, endpoints: ['127.0.0.1:%u'], connect_timeout: 30s}]\n"
             "routes: [{prefix: /, upstream: hole}]\n"
             "limits: {%s}\n",
             port, limits);
    h.f = fix_start(yaml, ptc_h2conn_start);
    assert_int_equal(nghttp2_hd_deflate_new(&h.deflate, 4096), 0);

    uint8_t settings[6];
    send_bytes(h.f, PTC_H2_PREFACE, PTC_H2_PREFACE_LEN);
    if (client_window >= 0) {
        settings[0] = 0, settings[1] = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
        put32(settings + 2, (uint32_t)client_window);
    }
    send_frame(h.f, F_SETTINGS, 0, 0, settings, client_window >= 0 ? 6 : 0);
    wait_frame(h.f, F_SETTINGS, 0);
    send_frame(h.f, F_SETTINGS, ACK, 0, NULL, 0);
    return h;
}

static void h2fix_free(h2fix_t *h)
{
    nghttp2_hd_deflate_del(h->deflate);
    fix_free(h->f);
    close(h->blackhole);
}

/* The gateway never sends DATA the client has no window for: the health answer's body waits for WINDOW_UPDATE. */
static void test_response_waits_for_the_client_window(void **state)
{
    (void)state;
    h2fix_t h = h2fix_new("", 0);
    get_health(&h, 1);
    wait_frame(h.f, F_HEADERS, 1);
    assert_int_equal(status_of(h.f, 1), 200);
    run(h.f, NULL, NULL, 100);
    frame_t fr;
    assert_null(find(h.f, F_DATA, 1, &fr)); /* a window of 0: no DATA, not even an empty one carrying bytes */

    uint8_t inc[4];
    put32(inc, 2); /* room for two of the three bytes of "ok\n" */
    send_frame(h.f, F_WINDOW_UPDATE, 0, 1, inc, 4);
    fr = wait_frame(h.f, F_DATA, 1);
    assert_int_equal(fr.len, 2);
    assert_memory_equal(fr.payload, "ok", 2);
    assert_int_equal(fr.flags & END_STREAM, 0);

    size_t before = h.f->len;
    send_frame(h.f, F_WINDOW_UPDATE, 0, 1, inc, 4);
    run(h.f, NULL, NULL, 100);
    const frame_t *last = NULL;
    frame_t all[256];
    size_t n = frames(h.f, all, 256);
    for (size_t i = 0; i < n; i++)
        if (all[i].type == F_DATA && all[i].sid == 1)
            last = &all[i];
    assert_true(h.f->len > before);
    assert_non_null(last);
    assert_int_equal(last->len, 1);
    assert_memory_equal(last->payload, "\n", 1);
    assert_int_equal(last->flags & END_STREAM, END_STREAM);
    h2fix_free(&h);
}

/*
 * The gateway advertises limits.stream_window_size (here its minimum, 1 KiB) and enforces it: a stream's DATA
 * up to the window is taken, one frame beyond it is FLOW_CONTROL_ERROR and counted. One DATA frame makes the
 * case exact: the gateway cannot have credited anything back for a stream before its first DATA arrives.
 */
static void test_data_beyond_the_stream_window(void **state)
{
    (void)state;
    h2fix_t h = h2fix_new("stream_window_size: 1KiB", -1);
    frame_t fr;
    uint8_t body[2000];
    memset(body, 0, sizeof(body)); /* a message head announcing 0 bytes, then bytes of the next messages */

    call_head(&h, 1);
    send_frame(h.f, F_DATA, 0, 1, body, 1024); /* exactly the window */
    run(h.f, NULL, NULL, 100);
    assert_null(find(h.f, F_RST_STREAM, 1, &fr));
    assert_null(find(h.f, F_GOAWAY, 0, &fr));
    assert_int_equal(calls_in_flight(h.f), 1);

    call_head(&h, 3);
    send_frame(h.f, F_DATA, 0, 3, body, sizeof(body)); /* 2000 > 1024 */
    want_t rst = {F_RST_STREAM, 3}, goaway = {F_GOAWAY, 0};
    uint64_t until = ptc_now_ms() + 2000;
    while (!has_frame(h.f, &rst) && !has_frame(h.f, &goaway) && ptc_now_ms() < until)
        run(h.f, NULL, NULL, 10);
    if (find(h.f, F_RST_STREAM, 3, &fr) != NULL) {
        assert_int_equal(get32(fr.payload), NGHTTP2_FLOW_CONTROL_ERROR);
        assert_int_equal(atomic_load(&h.f->w.limit_stats.h2_stream_errors), 1);
        assert_null(find(h.f, F_RST_STREAM, 1, &fr)); /* the stream within its window goes on */
    } else {
        fr = wait_frame(h.f, F_GOAWAY, 0);
        assert_int_equal(get32(fr.payload + 4), NGHTTP2_FLOW_CONTROL_ERROR);
        assert_int_equal(atomic_load(&h.f->w.limit_stats.h2_connection_errors), 1);
    }
    h2fix_free(&h);
}

/* RST_STREAM from the client ends its call (the upstream stream would be cancelled) and nothing else. */
static void test_rst_stream_cancels_the_call(void **state)
{
    (void)state;
    h2fix_t h = h2fix_new("", -1);
    frame_t fr;
    call(&h, 1);
    call(&h, 3);
    run(h.f, NULL, NULL, 100);
    assert_int_equal(calls_in_flight(h.f), 2); /* both wait for the black hole's SETTINGS */

    uint8_t code[4];
    put32(code, NGHTTP2_CANCEL);
    send_frame(h.f, F_RST_STREAM, 0, 1, code, 4);
    run(h.f, NULL, NULL, 100);
    assert_int_equal(calls_in_flight(h.f), 1);
    assert_null(find(h.f, F_HEADERS, 1, &fr)); /* nothing is answered on a stream the client reset */
    assert_null(find(h.f, F_RST_STREAM, 1, &fr));

    get_health(&h, 5); /* the connection serves on */
    wait_frame(h.f, F_HEADERS, 5);
    assert_int_equal(status_of(h.f, 5), 200);
    assert_null(find(h.f, F_GOAWAY, 0, &fr));
    assert_int_equal(atomic_load(&h.f->w.limit_stats.h2_stream_errors), 0);

    send_frame(h.f, F_RST_STREAM, 0, 3, code, 4);
    run(h.f, calls_done, NULL, 1000);
    assert_int_equal(calls_in_flight(h.f), 0);
    assert_int_equal(h.f->w.num_conns, 1);
    h2fix_free(&h);
}

/* A drain sends GOAWAY NO_ERROR naming the last stream taken: that stream finishes, a newer one is refused,
 * and the connection closes when the last stream is gone. */
static void test_drain_goaway_then_close(void **state)
{
    (void)state;
    h2fix_t h = h2fix_new("", -1);
    call(&h, 1);
    run(h.f, NULL, NULL, 100);
    assert_int_equal(calls_in_flight(h.f), 1);

    ptc_conn_t *c = TAILQ_FIRST(&h.f->w.conns);
    c->cb->drain(c);
    frame_t fr = wait_frame(h.f, F_GOAWAY, 0);
    assert_int_equal(get32(fr.payload) & 0x7fffffffu, 1); /* last stream id */
    assert_int_equal(get32(fr.payload + 4), NGHTTP2_NO_ERROR);
    assert_false(h.f->eof);

    get_health(&h, 3); /* after the GOAWAY: not processed */
    run(h.f, NULL, NULL, 100);
    assert_null(find(h.f, F_HEADERS, 3, &fr));
    assert_int_equal(h.f->w.num_conns, 1); /* stream 1 is still in flight */

    uint8_t code[4];
    put32(code, NGHTTP2_CANCEL);
    send_frame(h.f, F_RST_STREAM, 0, 1, code, 4);
    run(h.f, no_conns, NULL, 2000);
    assert_int_equal(h.f->w.num_conns, 0);
    run(h.f, closed, NULL, 1000);
    assert_true(h.f->eof);
    h2fix_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_response_waits_for_the_client_window),
        cmocka_unit_test(test_data_beyond_the_stream_window),
        cmocka_unit_test(test_rst_stream_cancels_the_call),
        cmocka_unit_test(test_drain_goaway_then_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
