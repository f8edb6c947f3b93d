/*
 * The downstream adapters end to end over an in-memory connection: the input is what a client sends on
 * one connection (HTTP/1.1 requests, pipelined or not, WebSocket upgrades and frames, or the HTTP/2
 * preface and frames, which switch the connection to the HTTP/2 adapter), fed in two pieces (the split
 * comes from the input) into a socketpair whose other end is handed to ptc_h1conn_start() on a real
 * worker. The worker's upstream pools are replaced by a fake that answers every stream with a response
 * head, one message and trailers. Then the client closes and the connection must go away: no crash, no
 * leak (LeakSanitizer), no call left alive, no snapshot reference left behind.
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "fuzz_util.h"
#include "portico/config.h"
#include "portico/http1.h"
#include "portico/log.h"
#include "portico/listener.h"
#include "portico/snapshot.h"
#include "portico/upstream.h"
#include "portico/worker.h"

#define MAX_STREAMS 64

typedef struct {
    ptc_upstream_t pool; /* first: stands in the worker's pools[] */
    ptc_upstream_stream_t *streams[MAX_STREAMS];
    size_t n;
} fake_up_t;

static fake_up_t up;

static void up_start(ptc_upstream_client_t *c, ptc_upstream_stream_t *s)
{
    (void)c;
    if (up.n == MAX_STREAMS) {
        s->cb->on_error(s, "fuzz: too many streams");
        return;
    }
    const nghttp2_nv *nva;
    size_t n;
    s->cb->request_headers(s, &nva, &n);
    s->client = &up.pool.client;
    up.streams[up.n++] = s;
}

static void forget(ptc_upstream_stream_t *s)
{
    for (size_t i = 0; i < up.n; i++)
        if (up.streams[i] == s) {
            up.streams[i] = up.streams[--up.n];
            return;
        }
}

static void up_cancel(ptc_upstream_stream_t *s, size_t unconsumed)
{
    (void)unconsumed;
    s->client = NULL;
    forget(s);
}

static void up_resume(ptc_upstream_stream_t *s)
{
    (void)s;
}

static void up_consume(ptc_upstream_stream_t *s, size_t n)
{
    (void)s;
    (void)n;
}

static const ptc_upstream_client_cb_t fake_cb = {up_start, up_cancel, up_resume, up_consume};

static bool alive(const ptc_upstream_stream_t *s)
{
    for (size_t i = 0; i < up.n; i++)
        if (up.streams[i] == s)
            return true;
    return false; /* the call cancelled it: as with the real pool, no callback follows */
}

/* Answers the oldest open stream: pulls its request body, then head, one message, trailers, close. */
static void answer_one(void)
{
    static const uint8_t msg[] = {0, 0, 0, 0, 7, 0x0a, 0x05, 'h', 'e', 'l', 'l', 'o'};
    ptc_upstream_stream_t *s = up.streams[0];
    uint32_t flags = 0;
    struct evbuffer *sink = evbuffer_new();
    uint8_t hd[9] = {0};
    for (int i = 0; i < 64 && !(flags & NGHTTP2_DATA_FLAG_EOF); i++) {
        ssize_t len = s->cb->read_request(s, 16384, &flags);
        if (len <= 0)
            break;
        s->cb->write_request(s, sink, hd, (size_t)len);
    }
    evbuffer_free(sink);
#define H(cat, n, v) s->cb->on_header(s, cat, (const uint8_t *)(n), strlen(n), (const uint8_t *)(v), strlen(v))
    H(NGHTTP2_HCAT_RESPONSE, ":status", "200");
    H(NGHTTP2_HCAT_RESPONSE, "content-type", "application/grpc");
    H(NGHTTP2_HCAT_RESPONSE, "x-from-upstream", "yes");
    s->cb->on_headers_end(s, NGHTTP2_HCAT_RESPONSE, false);
    if (!alive(s))
        return;
    s->cb->on_data(s, msg, sizeof(msg));
    if (!alive(s))
        return;
    H(NGHTTP2_HCAT_HEADERS, "grpc-status", "0");
    H(NGHTTP2_HCAT_HEADERS, "grpc-message", "ok");
    s->cb->on_headers_end(s, NGHTTP2_HCAT_HEADERS, true);
#undef H
    if (!alive(s))
        return;
    forget(s);
    s->client = NULL;
    s->cb->on_close(s, 0, NULL);
}

static ptc_snapshot_t *snap;
static ptc_worker_t w;
static ptc_upstream_t *real_pool; /* kept reachable: the process ends with the fuzzer, the pool is never freed */

static void init_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    signal(SIGPIPE, SIG_IGN); /* as main() does: a peer that closed is an error return, not a signal */
    ptc_log_set_level(PTC_LOG_ERROR);
    static const char yaml[] = "listeners: ['127.0.0.1:1']\n" /* not bound: the worker gets an ephemeral socket */
                               "upstreams: [{name: echo, endpoints: ['127.0.0.1:1']}]\n"
                               "routes: [{prefix: /, upstream: echo}]\n"
                               "cors: {allow_origins: ['http://app.example']}\n"
                               "limits: {max_header_size: 4KiB, max_message_size: 64KiB, call_buffer_size: 16KiB}\n"
                               "timeouts: {header_read: 1s, idle: 1s}\n";
    ptc_config_t cfg;
    char err[512];
    if (ptc_config_init_default(&cfg) != 0 || ptc_config_load_string(&cfg, "fuzz.yaml", yaml, sizeof(yaml) - 1, err, sizeof(err)) != 0 ||
        ptc_snapshot_new(&snap, &cfg, 1, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz downstream: %s\n", err);
        abort();
    }
    int fd = -1;
    char host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, 0};
    if (ptc_listen_socket(&hp, &fd, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz downstream: %s\n", err);
        abort();
    }
    if (ptc_worker_init(&w, 0, snap, &fd, -1) != 0)
        abort();
    up.pool.client = (ptc_upstream_client_t){&fake_cb, &snap->config.upstreams[0]};
    real_pool = w.pools[0];
    w.pools[0] = &up.pool;
}

static void spin(int rounds)
{
    for (int i = 0; i < rounds; i++)
        event_base_loop(w.base, EVLOOP_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    size_t split = fuzz_take_split(&data, &size);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        abort();
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    int bufsize = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
    struct bufferevent *bev = bufferevent_socket_new(w.base, sv[1], BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        abort();
    ptc_h1conn_start(&w, bev, "127.0.0.1:1", 0, false);

    char sink[65536];
    size_t parts[2] = {split, size - split};
    const uint8_t *p = data;
    for (int k = 0; k < 2; k++) {
        size_t off = 0;
        while (off < parts[k]) {
            ssize_t n = write(sv[0], p + off, parts[k] - off);
            if (n <= 0)
                break;
            off += (size_t)n;
            spin(2);
            while (read(sv[0], sink, sizeof(sink)) > 0) {
            }
        }
        p += parts[k];
        spin(4);
        while (up.n > 0)
            answer_one(), spin(2);
        while (read(sv[0], sink, sizeof(sink)) > 0) {
        }
    }
    /* the client goes away: the connection (and any call) must follow */
    close(sv[0]);
    for (int i = 0; i < 200 && (w.num_conns > 0 || w.num_calls > 0); i++) {
        spin(1);
        while (up.n > 0)
            answer_one();
    }
    FUZZ_CHECK(w.num_conns == 0);
    FUZZ_CHECK(w.num_calls == 0);
    FUZZ_CHECK(up.n == 0);
    return 0;
}
