/*
 * The upstream HTTP/2 client (src/upstream/pool.c over src/upstream/h2client.c) fed a hostile server: the
 * target listens on a loopback port, the worker's real pool for that endpoint opens a stream (a gRPC request
 * with an empty body), and
 * what the server sends on the accepted connection is the input (seeds start with a valid SETTINGS frame so
 * the connection gets READY; then HEADERS, DATA, RST_STREAM, GOAWAY, bad HPACK, oversized headers, frames
 * after END_STREAM...). Then the server closes. Whatever came, the stream must end exactly once (closed or
 * failed), the callbacks must come in a sensible order, and nothing may leak.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "fuzz_util.h"
#include "portico/config.h"
#include "portico/listener.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/upstream.h"
#include "portico/worker.h"

typedef struct {
    ptc_upstream_stream_t s; /* first */
    int ends;                /* on_close + on_error */
    bool got_headers_end, got_data_end;
    size_t data;
} test_stream_t;

static ssize_t read_request(ptc_upstream_stream_t *s, size_t length, uint32_t *flags)
{
    (void)s;
    (void)length;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
}

static int write_request(ptc_upstream_stream_t *s, struct evbuffer *out, const uint8_t *framehd, size_t length)
{
    (void)s;
    (void)out;
    (void)framehd;
    FUZZ_CHECK(length == 0);
    return 0;
}

static void on_header(ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen)
{
    (void)cat;
    (void)value;
    (void)valuelen;
    test_stream_t *t = (test_stream_t *)s;
    FUZZ_CHECK(t->ends == 0);
    FUZZ_CHECK(namelen > 0 && name != NULL); /* the client refuses empty names */
}

static void on_headers_end(ptc_upstream_stream_t *s, nghttp2_headers_category cat, bool end_stream)
{
    (void)cat;
    (void)end_stream;
    test_stream_t *t = (test_stream_t *)s;
    FUZZ_CHECK(t->ends == 0);
    t->got_headers_end = true;
}

static void on_data(ptc_upstream_stream_t *s, const uint8_t *data, size_t len)
{
    (void)data;
    test_stream_t *t = (test_stream_t *)s;
    FUZZ_CHECK(t->ends == 0 && len > 0);
    t->data += len;
    s->client->cb->consume(s, len); /* credit the window, as a call does once the bytes moved on */
}

static void on_data_end(ptc_upstream_stream_t *s)
{
    test_stream_t *t = (test_stream_t *)s;
    FUZZ_CHECK(t->ends == 0);
    t->got_data_end = true;
}

static void on_close(ptc_upstream_stream_t *s, uint32_t error_code, const char *conn_error)
{
    (void)error_code;
    (void)conn_error;
    ((test_stream_t *)s)->ends++;
}

static void on_error(ptc_upstream_stream_t *s, const char *message)
{
    FUZZ_CHECK(message != NULL && message[0] != '\0');
    ((test_stream_t *)s)->ends++;
}

static const ptc_upstream_stream_cb_t stream_cb = {fuzz_request_headers, read_request, write_request, on_header, on_headers_end,
                                                   on_data,     on_data_end,  on_close,      on_error};

static ptc_snapshot_t *snap;
static ptc_worker_t w;
static int lfd = -1;

static void init_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    signal(SIGPIPE, SIG_IGN);
    ptc_log_set_level(getenv("FUZZ_VERBOSE") != NULL ? PTC_LOG_DEBUG : PTC_LOG_OFF);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) != 0)
        abort();
    char yaml[512], err[512];
    int n = snprintf(yaml, sizeof(yaml),
                     "listeners: ['127.0.0.1:1']\n"
                     "upstreams: [{name: up, endpoints: ['127.0.0.1:%u'], connect_timeout: 200ms,"
                     " backoff: {initial: 1ms, max: 1ms}}]\n"
                     "routes: [{prefix: /, upstream: up}]\n"
                     "limits: {max_message_size: 64KiB, max_header_size: 4KiB, stream_window_size: 64KiB}\n",
                     ntohs(sa.sin_port));
    ptc_config_t cfg;
    if (ptc_config_init_default(&cfg) != 0 || ptc_config_load_string(&cfg, "fuzz.yaml", yaml, (size_t)n, err, sizeof(err)) != 0 ||
        ptc_snapshot_new(&snap, &cfg, 1, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz upstream: %s\n", err);
        abort();
    }
    int fd = -1;
    char host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, 0};
    if (ptc_listen_socket(&hp, &fd, err, sizeof(err)) != 0 || ptc_worker_init(&w, 0, snap, &fd, -1) != 0)
        abort();
}

static void spin(void)
{
    event_base_loop(w.base, EVLOOP_NONBLOCK);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    size_t split = fuzz_take_split(&data, &size);
    ptc_upstream_t *pool = w.pools[0];
    test_stream_t t = {.s = {.cb = &stream_cb}};

    /* a clean start: the previous input's connections are gone (the server closed them) and nothing
     * waits in the listen backlog, so the connection accepted below is the one this stream uses */
    uint64_t deadline = now_us() + 500000;
    do {
        int stale;
        while ((stale = accept(lfd, NULL, NULL)) >= 0)
            close(stale);
        spin();
    } while (pool->num_conns != 0 && now_us() < deadline && (usleep(100), true));
    FUZZ_CHECK(pool->num_conns == 0);
    pool->client.cb->start(&pool->client, &t.s);

    /* the pool connects (after its 1 ms backoff if the last connection failed) */
    int cfd = -1;
    deadline = now_us() + 500000;
    while (t.ends == 0 && (cfd = accept(lfd, NULL, NULL)) < 0 && now_us() < deadline) {
        spin();
        usleep(100);
    }
    if (cfd >= 0) {
        char sink[65536];
        fcntl(cfd, F_SETFL, O_NONBLOCK);
        for (int i = 0; i < 8; i++) {
            spin();
            while (read(cfd, sink, sizeof(sink)) > 0) {
            }
        }
        size_t parts[2] = {split, size - split};
        const uint8_t *p = data;
        for (int k = 0; k < 2; k++) {
            if (parts[k] != 0 && write(cfd, p, parts[k]) < 0) {
            }
            p += parts[k];
            for (int i = 0; i < 4; i++) {
                spin();
                while (read(cfd, sink, sizeof(sink)) > 0) {
                }
            }
        }
        close(cfd);
    }
    deadline = now_us() + 2000000; /* beyond connect_timeout: a stream the pool queued for a new connection fails by then */
    while (t.ends == 0 && now_us() < deadline) {
        spin();
        usleep(50);
    }
    if (t.ends == 0 && t.s.client != NULL) {
        fprintf(stderr, "fuzz upstream: the stream did not end after the server closed\n");
        abort();
    }
    FUZZ_CHECK(t.ends == 1);
    FUZZ_CHECK(t.s.client == NULL);
    if (getenv("FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "fuzz upstream: accepted %d, headers %d, data %zu, data end %d\n", cfd >= 0, t.got_headers_end, t.data,
                t.got_data_end);
    for (int i = 0; i < 4; i++)
        spin();
    return 0;
}
