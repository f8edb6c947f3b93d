/*
 * Unit tests for src/control/fetch.c: the HTTP-date and freshness rules, then real GETs against servers
 * inside this process, on the same event base: an HTTPS (or plain) responder made of an evconnlistener and
 * bufferevents (bufferevent_openssl for TLS) that answers every request head with a canned response (or
 * never). Certificates come from the openssl CLI in a temporary directory: a CA, a server certificate for
 * 127.0.0.1, one for jwks.test (resolved through an evdns base reading a hosts file there), and an unrelated
 * CA. Waits are bounded loops over the event base (run_until), never sleeps; timing assertions compare the
 * server's arrival times with the schedule, with a few ms of slack for libevent's coarse clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h> /* after the headers it needs */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "portico/fetch.h"

#define SLACK_MS 10 /* libevent's timers run on CLOCK_MONOTONIC_COARSE */

static char dir[64];

static int run(const char *fmt, ...) PTC_PRINTF(1, 2);
static int run(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static const char *path(const char *name)
{
    static char buf[4][128];
    static unsigned i;
    char *p = buf[i++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

/* ca signs ip (127.0.0.1) and name (jwks.test); rogue is a CA that signed nothing here. */
static int setup(void **state)
{
    static const char *const leaves[][3] = {
        {"ip", "127.0.0.1", "IP:127.0.0.1"},
        {"name", "jwks.test", "DNS:jwks.test"},
    };
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "/tmp/ptc-fetch-unit-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    for (int i = 0; i < 2; i++) {
        const char *name = i == 0 ? "ca" : "rogue";
        if (run("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.pem "
                "-days 2 -subj /CN=%s -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
                "2>/dev/null",
                dir, name, name, name) != 0)
            return -1;
    }
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        if (run("cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.csr -subj /CN=%s "
                "2>/dev/null && printf 'subjectAltName=%s\\n' > %s.ext && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key "
                "-set_serial %zu -days 2 -extfile %s.ext -out %s.pem 2>/dev/null",
                dir, leaves[i][0], leaves[i][0], leaves[i][1], leaves[i][2], leaves[i][0], leaves[i][0], 100 + i, leaves[i][0],
                leaves[i][0]) != 0)
            return -1;
    }
    return run("printf '127.0.0.1 jwks.test\\n' > %s/hosts", dir) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return run("rm -rf %s", dir) == 0 ? 0 : -1;
}

/* ---- running the loop ---- */

static void on_tick(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    (void)arg;
}

/* Runs base until *counter reaches target or ms pass; returns whether it did. */
static bool run_until(struct event_base *base, const int *counter, int target, uint64_t ms)
{
    uint64_t deadline = ptc_now_ms() + ms;
    struct event *tick = evtimer_new(base, on_tick, NULL);
    assert_non_null(tick);
    while (*counter < target) {
        uint64_t now = ptc_now_ms();
        if (now >= deadline)
            break;
        struct timeval tv = {(time_t)((deadline - now) / 1000), (suseconds_t)((deadline - now) % 1000 * 1000)};
        assert_int_equal(evtimer_add(tick, &tv), 0);
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    }
    event_free(tick);
    return *counter >= target;
}

/* Runs what is ready now (deferred callbacks included), a few passes. */
static void run_ready(struct event_base *base)
{
    for (int i = 0; i < 5; i++)
        assert_true(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
}

/* ---- the test server ---- */

typedef struct st_server_t server_t;

typedef struct st_sconn_t {
    server_t *srv;
    struct bufferevent *bev;
    struct st_sconn_t *next;
    bool answered;
    bool closing; /* close once the response is written */
} sconn_t;

struct st_server_t {
    struct event_base *base;
    struct evconnlistener *lis;
    SSL_CTX *ctx; /* NULL: plain TCP (an https client then waits for a handshake forever) */
    uint16_t port;
    char *response; /* sent for every request head; NULL: none (the client times out) */
    size_t response_len;
    bool hold; /* keep the connection open after the response */
    int accepted, requests, closed;
    uint64_t request_ms[64]; /* arrival of each request head */
    char request[1024];      /* the last request head */
    char sni[64];            /* the last SNI ("" when none) */
    sconn_t *conns;
    void (*on_request)(server_t *srv); /* called when a request head arrives */
    void *data;
};

static void sconn_free(sconn_t *c)
{
    for (sconn_t **p = &c->srv->conns; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    bufferevent_free(c->bev);
    free(c);
}

static void sconn_read(struct bufferevent *bev, void *arg)
{
    sconn_t *c = arg;
    server_t *s = c->srv;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);

    if (end.pos < 0 || c->answered)
        return;
    size_t n = PTC_MIN((size_t)end.pos + 4, sizeof(s->request) - 1);
    assert_int_equal(evbuffer_remove(in, s->request, n), (int)n);
    s->request[n] = '\0';
    c->answered = true;
    s->request_ms[s->requests % 64] = ptc_now_ms();
    s->requests++;
    const char *sni = s->ctx != NULL ? SSL_get_servername(bufferevent_openssl_get_ssl(bev), TLSEXT_NAMETYPE_host_name) : NULL;
    snprintf(s->sni, sizeof(s->sni), "%s", sni != NULL ? sni : "");
    if (s->on_request != NULL)
        s->on_request(s);
    if (s->response == NULL)
        return;
    if (s->response_len == 0) {
        s->closed++;
        sconn_free(c);
        return;
    }
    assert_int_equal(bufferevent_write(bev, s->response, s->response_len), 0);
    c->closing = !s->hold;
}

static void sconn_write(struct bufferevent *bev, void *arg)
{
    sconn_t *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        c->srv->closed++;
        sconn_free(c);
    }
}

static void sconn_event(struct bufferevent *bev, short events, void *arg)
{
    sconn_t *c = arg;
    (void)bev;
    if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        c->srv->closed++;
        sconn_free(c);
    }
}

static void on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    server_t *s = arg;
    sconn_t *c = calloc(1, sizeof(*c));
    (void)lis;
    (void)sa;
    (void)salen;
    assert_non_null(c);
    c->srv = s;
    if (s->ctx != NULL) {
        SSL *ssl = SSL_new(s->ctx);
        assert_non_null(ssl);
        c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
        assert_non_null(c->bev);
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
        assert_non_null(c->bev);
    }
    bufferevent_setcb(c->bev, sconn_read, sconn_write, sconn_event, c);
    assert_int_equal(bufferevent_enable(c->bev, EV_READ | EV_WRITE), 0);
    c->next = s->conns;
    s->conns = c;
    s->accepted++;
}

/* Listens on 127.0.0.1:port (0: any free port). */
static void server_listen(server_t *s, uint16_t port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    s->lis = evconnlistener_new_bind(s->base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16, (struct sockaddr *)&sin,
                                     sizeof(sin));
    assert_non_null(s->lis);
    assert_int_equal(getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&ss, &len), 0);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Stops listening (connections are refused from now on); open connections stay. */
static void server_unlisten(server_t *s)
{
    evconnlistener_free(s->lis);
    s->lis = NULL;
}

/* A server presenting certificate cert ("ip", "name"), or plain TCP with cert NULL. */
static void server_start(server_t *s, struct event_base *base, const char *cert)
{
    char file[128];
    memset(s, 0, sizeof(*s));
    s->base = base;
    if (cert != NULL) {
        s->ctx = SSL_CTX_new(TLS_server_method());
        assert_non_null(s->ctx);
        snprintf(file, sizeof(file), "%s/%s.pem", dir, cert);
        assert_int_equal(SSL_CTX_use_certificate_chain_file(s->ctx, file), 1);
        snprintf(file, sizeof(file), "%s/%s.key", dir, cert);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(s->ctx, file, SSL_FILETYPE_PEM), 1);
    }
    server_listen(s, 0);
}

static void server_stop(server_t *s)
{
    while (s->conns != NULL)
        sconn_free(s->conns);
    if (s->lis != NULL)
        evconnlistener_free(s->lis);
    SSL_CTX_free(s->ctx);
    free(s->response);
}

/* Sets the response to every request from now on ("": close without one). */
static void respond(server_t *s, const char *fmt, ...) PTC_PRINTF(2, 3);
static void respond(server_t *s, const char *fmt, ...)
{
    free(s->response);
    s->response = NULL;
    s->response_len = 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    s->response = malloc((size_t)n + 1);
    assert_non_null(s->response);
    va_start(ap, fmt);
    vsnprintf(s->response, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->response_len = (size_t)n;
}

static void respond_200(server_t *s, const char *extra_headers, const char *body)
{
    respond(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n%s", extra_headers, strlen(body),
            body);
}

/* ---- the client side ---- */

typedef struct st_got_t {
    int calls;
    int status;
    char *body; /* a copy, or NULL */
    size_t len;
    uint64_t max_age_ms;
    char error[256]; /* "" on success */
    uint64_t at_ms;
    ptc_fetch_t *f; /* for callbacks that restart or free */
    int restart;    /* start again from the callback this many times, then free f */
} got_t;

static void got_clear(got_t *g)
{
    free(g->body);
    memset(g, 0, sizeof(*g));
}

static void on_got(void *arg, const ptc_fetch_result_t *r)
{
    got_t *g = arg;
    free(g->body);
    g->body = NULL;
    g->calls++;
    g->status = r->status;
    g->len = r->len;
    g->max_age_ms = r->max_age_ms;
    g->at_ms = ptc_now_ms();
    snprintf(g->error, sizeof(g->error), "%s", r->error != NULL ? r->error : "");
    if (r->body != NULL) {
        assert_null(r->error);
        assert_int_equal(r->body[r->len], '\0');
        g->body = malloc(r->len + 1);
        assert_non_null(g->body);
        memcpy(g->body, r->body, r->len + 1);
    } else {
        assert_non_null(r->error);
    }
    if (g->f != NULL) {
        if (g->restart > 0) {
            g->restart--;
            assert_true(ptc_fetch_start(g->f, 2000, 0, on_got, g));
        } else {
            ptc_fetch_free(g->f);
            g->f = NULL;
        }
    }
}

typedef struct st_fixture_t {
    struct event_base *base;
    server_t srv;
    got_t got;
    char url[256];
} fixture_t;

static int fixture_setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL || (fx->base = event_base_new()) == NULL) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture_t *fx = *state;
    got_clear(&fx->got);
    run_ready(fx->base); /* deferred callbacks of what the test freed (canceled DNS queries) */
    event_base_free(fx->base);
    free(fx);
    return 0;
}

static const char *url_of(fixture_t *fx, const char *scheme, const char *host, const char *rest)
{
    snprintf(fx->url, sizeof(fx->url), "%s://%s:%u%s", scheme, host, (unsigned)fx->srv.port, rest);
    return fx->url;
}

/* One GET of url through a new fetcher; the result is in fx->got. */
static void fetch_with(fixture_t *fx, struct evdns_base *dns, const char *url, const char *ca, uint64_t timeout_ms, size_t max_body)
{
    char err[256];
    ptc_fetch_t *f;
    got_clear(&fx->got);
    int ret = ptc_fetch_new(&f, fx->base, dns, url, ca, err, sizeof(err));
    if (ret != 0)
        print_error("%s: %s\n", url, err);
    assert_int_equal(ret, 0);
    assert_true(ptc_fetch_start(f, timeout_ms, max_body, on_got, &fx->got));
    assert_int_equal(fx->got.calls, 0); /* never inside ptc_fetch_start */
    assert_true(run_until(fx->base, &fx->got.calls, 1, timeout_ms + 3000));
    ptc_fetch_free(f);
    run_ready(fx->base);
    assert_int_equal(fx->got.calls, 1);
}

static void fetch(fixture_t *fx, const char *url, const char *ca)
{
    fetch_with(fx, NULL, url, ca, 3000, 0);
}

/* ---- header rules ---- */

static void test_http_date(void **state)
{
    (void)state;
    static const int64_t now = 1704067200; /* 2024-01-01T00:00:00Z */
    static const struct {
        const char *s;
        bool ok;
        int64_t t;
    } cases[] = {
        {"Sun, 06 Nov 1994 08:49:37 GMT", true, 784111777},
        {"Sunday, 06-Nov-94 08:49:37 GMT", true, 784111777},
        {"Sun Nov  6 08:49:37 1994", true, 784111777},
        {"Sun Nov 16 08:49:37 1994", true, 784111777 + 10 * 86400},
        {"  Sun, 06 Nov 1994 08:49:37 GMT ", true, 784111777},
        {"sun, 06 nov 1994 08:49:37 GMT", true, 784111777},
        {"Thu, 01 Jan 1970 00:00:00 GMT", true, 0},
        {"Tue, 29 Feb 2000 12:00:00 GMT", true, 951825600},
        {"Wed, 31 Dec 1969 23:59:59 GMT", true, -1},
        {"Fri, 01 Jan 2100 00:00:00 GMT", true, 4102444800},
        {"Sat, 01-Jan-60 00:00:00 GMT", true, 2840140800}, /* 2060: not more than 50 years ahead */
        {"Wed, 01-Jan-75 00:00:00 GMT", true, 157766400},  /* 2075 would be: 1975 */
        {"Mon, 29 Feb 2100 00:00:00 GMT", false, 0},
        {"Sun, 31 Apr 1994 08:49:37 GMT", false, 0},
        {"Sun, 06 Nov 1994 24:00:00 GMT", false, 0},
        {"Sun, 06 Nov 1994 08:49:37 UTC", false, 0},
        {"Sun, 6 Nov 1994 08:49:37 GMT", false, 0},
        {"Sun, 06 Foo 1994 08:49:37 GMT", false, 0},
        {"Sun, 06 Nov 1994 08:49:37 GMT+1", false, 0},
        {"Sun, 06 Nov 94 08:49:37 GMT", false, 0},
        {"Sun Nov 6 08:49:37 1994", false, 0},
        {"0", false, 0},
        {"-1", false, 0},
        {"", false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t t = 12345;
        bool ok = ptc_fetch_parse_http_date(ptc_iov(cases[i].s, strlen(cases[i].s)), now, &t);
        if (ok != cases[i].ok || (ok && t != cases[i].t))
            print_error("\"%s\": %d %lld\n", cases[i].s, ok, (long long)t);
        assert_int_equal(ok, cases[i].ok);
        if (ok)
            assert_int_equal(t, cases[i].t);
    }
}

#define IOV(s) ((s) != NULL ? ptc_iov((s), strlen(s)) : ptc_iov(NULL, 0))

static void test_freshness(void **state)
{
    (void)state;
    static const int64_t now = 784111777; /* the Date below */
    static const char date[] = "Sun, 06 Nov 1994 08:49:37 GMT", later[] = "Sun, 06 Nov 1994 08:51:37 GMT";
    static const struct {
        const char *cc, *expires, *date, *age;
        uint64_t ms;
    } cases[] = {
        {NULL, NULL, NULL, NULL, 0},
        {"max-age=300", NULL, NULL, NULL, 300000},
        {"public, MAX-AGE=60, must-revalidate", NULL, NULL, NULL, 60000},
        {"max-age=\"120\"", NULL, NULL, NULL, 120000},
        {" ,max-age = 7 ,, ", NULL, NULL, NULL, 7000},
        {"private=\"a, max-age=1\", max-age=30", NULL, NULL, NULL, 30000}, /* a comma inside quotes */
        {"s-maxage=600, max-age=60", NULL, NULL, NULL, 60000},
        {"s-maxage=600", NULL, NULL, NULL, 0},
        {"max-age=60, max-age=10", NULL, NULL, NULL, 60000}, /* the first one */
        {"max-age=99999999999", NULL, NULL, NULL, 2147483648000},
        {"max-age=0", NULL, NULL, NULL, 0},
        {"no-store, max-age=600", NULL, NULL, NULL, 0},
        {"max-age=600, No-Cache", NULL, NULL, NULL, 0},
        {"no-cache=\"Set-Cookie\", max-age=60", NULL, NULL, NULL, 60000},
        {"max-age=abc", NULL, NULL, NULL, 0},
        {"max-age=", NULL, NULL, NULL, 0},
        {"max-age=-5", NULL, NULL, NULL, 0},
        {"max-age=60", NULL, NULL, "20", 40000},
        {"max-age=60", NULL, NULL, "60", 1},
        {"max-age=60", NULL, NULL, "soon", 60000},
        {NULL, later, date, NULL, 120000},
        {NULL, later, NULL, NULL, 120000}, /* no Date: the time of receipt */
        {NULL, later, "garbage", NULL, 120000},
        {"public", later, date, "100", 20000},
        {"max-age=10", later, date, NULL, 10000}, /* max-age wins over Expires */
        {NULL, date, later, NULL, 0},             /* Expires before Date */
        {NULL, "0", date, NULL, 0},               /* invalid: already expired */
        {"no-cache", later, date, NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = ptc_fetch_freshness_ms(IOV(cases[i].cc), IOV(cases[i].expires), IOV(cases[i].date), IOV(cases[i].age), now);
        if (ms != cases[i].ms)
            print_error("case %zu (%s): %llu\n", i, cases[i].cc != NULL ? cases[i].cc : "-", (unsigned long long)ms);
        assert_int_equal(ms, cases[i].ms);
    }
}

/* ---- ptc_fetch_new ---- */

static void test_new(void **state)
{
    fixture_t *fx = *state;
    static const struct {
        const char *url;
        bool dns;
        int ret;
        const char *message; /* a part of err */
    } cases[] = {
        {"http://127.0.0.1:8080/jwks", false, 0, NULL},
        {"http://[::1]:8080/jwks?x=1", false, 0, NULL},
        {"http://LOCALHOST/x", false, 0, NULL},
        {"https://127.0.0.1/.well-known/jwks.json", false, 0, NULL},
        {"https://[2001:db8::1]/", false, 0, NULL},
        {"https://idp.example/jwks", true, 0, NULL},
        {"https://idp.example./jwks#keys", true, 0, NULL},
        {"https://idp.example/jwks", false, PTC_EINVAL, "no DNS resolver"},
        {"http://example.com/jwks", true, PTC_EINVAL, "loopback"},
        {"http://10.0.0.1/jwks", false, PTC_EINVAL, "loopback"},
        {"http://127.0.0.2/jwks", false, PTC_EINVAL, "loopback"},
        {"ftp://127.0.0.1/jwks", false, PTC_EINVAL, "scheme"},
        {"//127.0.0.1/jwks", false, PTC_EINVAL, "scheme"},
        {"https://user:pw@127.0.0.1/", false, PTC_EINVAL, "credentials"},
        {"https:///jwks", false, PTC_EINVAL, "no host"},
        {"https://127.0.0.1:0/", false, PTC_EINVAL, "port"},
        {"https://127.0.0.1:65536/", false, PTC_EINVAL, "not a valid URL"},
        {"https://exa mple.com/", true, PTC_EINVAL, "not a valid URL"},
        {"https://exa%41mple.com/", true, PTC_EINVAL, "invalid host name"},
        {"https://[v1.x]/", true, PTC_EINVAL, "invalid IPv6 address"},
        {"https://127.0.0.1/a b", false, PTC_EINVAL, NULL},
        {"https://127.0.0.1/a\r\nX-Evil: 1", false, PTC_EINVAL, NULL},
    };
    struct evdns_base *dns = evdns_base_new(fx->base, 0);
    assert_non_null(dns);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[512] = "";
        ptc_fetch_t *f = NULL;
        int ret = ptc_fetch_new(&f, fx->base, cases[i].dns ? dns : NULL, cases[i].url, NULL, err, sizeof(err));
        if (ret != cases[i].ret || (cases[i].message != NULL && strstr(err, cases[i].message) == NULL))
            print_error("%s: %d %s\n", cases[i].url, ret, err);
        assert_int_equal(ret, cases[i].ret);
        if (cases[i].message != NULL)
            assert_non_null(strstr(err, cases[i].message));
        if (ret == 0)
            ptc_fetch_free(f);
    }
    /* the CA file is read once, here */
    char err[512];
    ptc_fetch_t *f;
    assert_int_equal(ptc_fetch_new(&f, fx->base, NULL, "https://127.0.0.1/", path("missing.pem"), err, sizeof(err)), PTC_ECONFIG);
    assert_non_null(strstr(err, "missing.pem"));
    assert_int_equal(ptc_fetch_new(&f, fx->base, NULL, "https://127.0.0.1/", path("ip.key"), err, sizeof(err)), PTC_ECONFIG);
    ptc_fetch_free(NULL);
    evdns_base_free(dns, 0);
}

/* ---- GETs ---- */

static void test_ok_max_age(void **state)
{
    fixture_t *fx = *state;
    char host[64];
    server_start(&fx->srv, fx->base, "ip");
    respond_200(&fx->srv, "Cache-Control: public, max-age=300\r\n", "{\"keys\":[]}");
    fetch(fx, url_of(fx, "https", "127.0.0.1", "/jwks?kid=1#frag"), path("ca.pem"));
    assert_string_equal(fx->got.error, "");
    assert_int_equal(fx->got.status, 200);
    assert_string_equal(fx->got.body, "{\"keys\":[]}");
    assert_int_equal(fx->got.len, 11);
    assert_int_equal(fx->got.max_age_ms, 300000);
    /* the request */
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%u\r\n", (unsigned)fx->srv.port);
    assert_true(strncmp(fx->srv.request, "GET /jwks?kid=1 HTTP/1.1\r\n", 26) == 0);
    assert_non_null(strstr(fx->srv.request, host));
    assert_non_null(strstr(fx->srv.request, "\r\nAccept: application/json\r\n"));
    assert_non_null(strstr(fx->srv.request, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(fx->srv.request, "\r\nUser-Agent: portico\r\n"));
    assert_string_equal(fx->srv.sni, ""); /* an IP address: no SNI */
    assert_true(run_until(fx->base, &fx->srv.closed, 1, 2000));
    server_stop(&fx->srv);
}

static void test_expires_and_no_store(void **state)
{
    fixture_t *fx = *state;
    server_start(&fx->srv, fx->base, "ip");
    respond_200(&fx->srv, "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nExpires: Sun, 06 Nov 1994 09:49:37 GMT\r\n", "{}");
    fetch(fx, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"));
    assert_string_equal(fx->got.error, "");
    assert_int_equal(fx->got.max_age_ms, 3600000);

    respond_200(&fx->srv, "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nAge: 600\r\nExpires: Sun, 06 Nov 1994 09:49:37 GMT\r\n", "{}");
    fetch(fx, fx->url, path("ca.pem"));
    assert_int_equal(fx->got.max_age_ms, 3000000);

    /* Cache-Control on two lines is one list */
    respond_200(&fx->srv, "Cache-Control: max-age=600\r\nCache-Control: no-store\r\n", "{\"keys\":[1]}");
    fetch(fx, fx->url, path("ca.pem"));
    assert_string_equal(fx->got.error, "");
    assert_string_equal(fx->got.body, "{\"keys\":[1]}");
    assert_int_equal(fx->got.max_age_ms, 0);

    respond_200(&fx->srv, "", "{}");
    fetch(fx, fx->url, path("ca.pem"));
    assert_int_equal(fx->got.max_age_ms, 0);
    server_stop(&fx->srv);
}

static void test_bodies(void **state)
{
    fixture_t *fx = *state;
    server_start(&fx->srv, fx->base, "ip");
    url_of(fx, "https", "127.0.0.1", "/");

    respond(&fx->srv, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=9\r\n\r\n"
                      "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n");
    fetch(fx, fx->url, path("ca.pem"));
    assert_string_equal(fx->got.error, "");
    assert_string_equal(fx->got.body, "hello world");
    assert_int_equal(fx->got.max_age_ms, 9000);

    /* delimited by the close (TLS: the server closes without close_notify) */
    respond(&fx->srv, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
    fetch(fx, fx->url, path("ca.pem"));
    assert_string_equal(fx->got.error, "");
    assert_string_equal(fx->got.body, "until the end");

    respond(&fx->srv, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    fetch(fx, fx->url, path("ca.pem"));
    assert_string_equal(fx->got.error, "");
    assert_string_equal(fx->got.body, "");
    assert_int_equal(fx->got.len, 0);

    /* an interim response first: its fields are not the final response's */
    respond(&fx->srv, "HTTP/1.1 103 Early Hints\r\nCache-Control: max-age=5\r\nLink: </k>\r\n\r\n"
                      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Encoding: identity\r\n\r\nok");
    fetch(fx, fx->url, path("ca.pem"));
    assert_string_equal(fx->got.error, "");
    assert_string_equal(fx->got.body, "ok");
    assert_int_equal(fx->got.max_age_ms, 0);
    server_stop(&fx->srv);
}

static void test_http_errors(void **state)
{
    fixture_t *fx = *state;
    static const struct {
        const char *response;
        int status;
        const char *error;
    } cases[] = {
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", 404, "HTTP 404"},
        {"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 503, "HTTP 503"},
        {"HTTP/1.1 204 No Content\r\n\r\n", 204, "HTTP 204"},
        {"HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere/\r\nContent-Length: 0\r\n\r\n", 301,
         "HTTP 301 (redirects are not followed)"},
        {"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", 302, "HTTP 302 (redirects are not followed)"},
        {"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx", 200, "unsupported Content-Encoding \"gzip\""},
        {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 200, "connection closed before the response was complete"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 0, "malformed response: "},
        {"garbage\r\n\r\n", 0, "malformed response: "},
        {"", 0, "connection closed before a response"},
    };
    server_start(&fx->srv, fx->base, "ip");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        respond(&fx->srv, "%s", cases[i].response);
        fetch(fx, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"));
        if (fx->got.status != cases[i].status || strncmp(fx->got.error, cases[i].error, strlen(cases[i].error)) != 0)
            print_error("case %zu: %d %s\n", i, fx->got.status, fx->got.error);
        assert_int_equal(fx->got.status, cases[i].status);
        assert_true(strncmp(fx->got.error, cases[i].error, strlen(cases[i].error)) == 0);
        assert_null(fx->got.body);
    }
    /* a huge response head */
    char *head = malloc(70000);
    assert_non_null(head);
    memset(head, 'a', 69999);
    head[69999] = '\0';
    respond(&fx->srv, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 0\r\n\r\n", head);
    free(head);
    fetch(fx, fx->url, path("ca.pem"));
    assert_string_equal(fx->got.error, "response header larger than 65536 bytes");
    server_stop(&fx->srv);
}

static void test_body_cap(void **state)
{
    fixture_t *fx = *state;
    server_start(&fx->srv, fx->base, "ip");
    url_of(fx, "https", "127.0.0.1", "/");

    respond_200(&fx->srv, "", "0123456789abcdef");
    fetch_with(fx, NULL, fx->url, path("ca.pem"), 3000, 16);
    assert_string_equal(fx->got.body, "0123456789abcdef");
    respond_200(&fx->srv, "", "0123456789abcdefg");
    fetch_with(fx, NULL, fx->url, path("ca.pem"), 3000, 16);
    assert_string_equal(fx->got.error, "body larger than 16 bytes");
    assert_int_equal(fx->got.status, 200);
    assert_null(fx->got.body);

    respond(&fx->srv, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n7\r\nabcdefg\r\n0\r\n\r\n");
    fetch_with(fx, NULL, fx->url, path("ca.pem"), 3000, 16);
    assert_string_equal(fx->got.error, "body larger than 16 bytes");

    /* while reading: the server announces a huge chunk, sends a little more than the cap and stays open; the
     * GET ends there and then, well before its timeout */
    fx->srv.hold = true;
    respond(&fx->srv, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n0123456789abcdefXYZ");
    uint64_t start = ptc_now_ms();
    fetch_with(fx, NULL, fx->url, path("ca.pem"), 5000, 16);
    assert_string_equal(fx->got.error, "body larger than 16 bytes");
    assert_true(fx->got.at_ms - start < 4000);
    /* the same with a close-delimited body */
    respond(&fx->srv, "HTTP/1.1 200 OK\r\n\r\n0123456789abcdefXYZ");
    fetch_with(fx, NULL, fx->url, path("ca.pem"), 5000, 16);
    assert_string_equal(fx->got.error, "body larger than 16 bytes");
    server_stop(&fx->srv);
}

static void test_connection_refused(void **state)
{
    fixture_t *fx = *state;
    server_start(&fx->srv, fx->base, "ip");
    server_unlisten(&fx->srv); /* the port is free again: nobody listens */
    fetch(fx, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"));
    assert_string_equal(fx->got.error, "connect: Connection refused");
    assert_int_equal(fx->got.status, 0);
    fetch(fx, url_of(fx, "http", "localhost", "/"), NULL); /* both loopback addresses tried */
    assert_string_equal(fx->got.error, "connect: Connection refused");
    server_stop(&fx->srv);
}

static void test_untrusted_server(void **state)
{
    fixture_t *fx = *state;
    server_start(&fx->srv, fx->base, "ip");
    respond_200(&fx->srv, "", "{}");
    fetch(fx, url_of(fx, "https", "127.0.0.1", "/"), path("rogue.pem"));
    assert_string_equal(fx->got.error, "TLS: certificate verify failed: unable to get local issuer certificate");
    assert_int_equal(fx->got.status, 0);
    fetch(fx, fx->url, NULL); /* the system store does not know the test CA either */
    assert_true(strncmp(fx->got.error, "TLS: certificate verify failed: ", 32) == 0);
    assert_int_equal(fx->srv.requests, 0);
    server_stop(&fx->srv);
}

static void test_names(void **state)
{
    fixture_t *fx = *state;
    char host[64];
    struct evdns_base *dns = evdns_base_new(fx->base, 0);
    assert_non_null(dns);
    assert_int_equal(evdns_base_load_hosts(dns, path("hosts")), 0);

    /* a certificate for jwks.test does not cover 127.0.0.1 */
    server_start(&fx->srv, fx->base, "name");
    respond_200(&fx->srv, "", "{}");
    fetch(fx, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"));
    assert_string_equal(fx->got.error, "TLS: certificate verify failed: IP address mismatch");
    /* by name: resolved (from the hosts file), SNI, Host */
    fetch_with(fx, dns, url_of(fx, "https", "jwks.test", "/keys"), path("ca.pem"), 3000, 0);
    assert_string_equal(fx->got.error, "");
    assert_string_equal(fx->got.body, "{}");
    assert_string_equal(fx->srv.sni, "jwks.test");
    snprintf(host, sizeof(host), "\r\nHost: jwks.test:%u\r\n", (unsigned)fx->srv.port);
    assert_non_null(strstr(fx->srv.request, host));
    server_stop(&fx->srv);

    /* a certificate for 127.0.0.1 does not cover jwks.test */
    server_start(&fx->srv, fx->base, "ip");
    respond_200(&fx->srv, "", "{}");
    fetch_with(fx, dns, url_of(fx, "https", "jwks.test", "/"), path("ca.pem"), 3000, 0);
    assert_string_equal(fx->got.error, "TLS: certificate verify failed: hostname mismatch");
    assert_string_equal(fx->srv.sni, "");
    server_stop(&fx->srv);
    evdns_base_free(dns, 0);
}

static void test_timeout(void **state)
{
    fixture_t *fx = *state;
    uint64_t start;

    /* the handshake is done, the request sent, no response ever comes */
    server_start(&fx->srv, fx->base, "ip");
    start = ptc_now_ms();
    fetch_with(fx, NULL, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"), 300, 0);
    assert_string_equal(fx->got.error, "timeout after 300 ms");
    assert_int_equal(fx->got.status, 0);
    assert_true(fx->got.at_ms - start >= 300 - SLACK_MS);
    assert_int_equal(fx->srv.requests, 1);
    server_stop(&fx->srv);

    /* the server accepts and never speaks TLS */
    server_start(&fx->srv, fx->base, NULL);
    fetch_with(fx, NULL, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"), 200, 0);
    assert_string_equal(fx->got.error, "timeout after 200 ms");
    assert_int_equal(fx->srv.accepted, 1);
    server_stop(&fx->srv);
}

static void test_http_loopback(void **state)
{
    fixture_t *fx = *state;
    char host[64];
    server_start(&fx->srv, fx->base, NULL);
    respond_200(&fx->srv, "Cache-Control: max-age=1\r\n", "{\"keys\":[]}");
    fetch(fx, url_of(fx, "http", "127.0.0.1", "/jwks"), NULL);
    assert_string_equal(fx->got.error, "");
    assert_string_equal(fx->got.body, "{\"keys\":[]}");
    assert_int_equal(fx->got.max_age_ms, 1000);
    fetch(fx, url_of(fx, "http", "localhost", "/jwks"), NULL);
    assert_string_equal(fx->got.error, "");
    snprintf(host, sizeof(host), "\r\nHost: localhost:%u\r\n", (unsigned)fx->srv.port);
    assert_non_null(strstr(fx->srv.request, host));
    server_stop(&fx->srv);
}

/* ---- lifetimes ---- */

typedef struct st_dns_server_t {
    int fd;
    struct event *ev;
    int queries;
} dns_server_t;

static void on_dns_query(evutil_socket_t fd, short events, void *arg)
{
    dns_server_t *d = arg;
    char buf[512];
    (void)events;
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        d->queries++; /* and never answered */
}

static void test_free_in_flight(void **state)
{
    fixture_t *fx = *state;
    char err[256];
    ptc_fetch_t *f;

    server_start(&fx->srv, fx->base, "ip");
    url_of(fx, "https", "127.0.0.1", "/");

    /* before the GET even began */
    assert_int_equal(ptc_fetch_new(&f, fx->base, NULL, fx->url, path("ca.pem"), err, sizeof(err)), 0);
    assert_true(ptc_fetch_start(f, 2000, 0, on_got, &fx->got));
    ptc_fetch_free(f);
    run_ready(fx->base);
    assert_int_equal(fx->got.calls, 0);
    assert_int_equal(fx->srv.accepted, 0);

    /* during the handshake: a server that never speaks TLS */
    server_t plain;
    server_start(&plain, fx->base, NULL);
    snprintf(fx->url, sizeof(fx->url), "https://127.0.0.1:%u/", (unsigned)plain.port);
    assert_int_equal(ptc_fetch_new(&f, fx->base, NULL, fx->url, path("ca.pem"), err, sizeof(err)), 0);
    assert_true(ptc_fetch_start(f, 2000, 0, on_got, &fx->got));
    assert_true(run_until(fx->base, &plain.accepted, 1, 2000));
    ptc_fetch_free(f);
    assert_true(run_until(fx->base, &plain.closed, 1, 2000));
    server_stop(&plain);

    /* waiting for the response */
    assert_int_equal(ptc_fetch_new(&f, fx->base, NULL, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"), err, sizeof(err)), 0);
    assert_true(ptc_fetch_start(f, 2000, 0, on_got, &fx->got));
    assert_false(ptc_fetch_start(f, 2000, 0, on_got, &fx->got)); /* one at a time */
    assert_true(run_until(fx->base, &fx->srv.requests, 1, 2000));
    ptc_fetch_free(f);
    assert_true(run_until(fx->base, &fx->srv.closed, 1, 2000));

    /* waiting for a DNS answer that never comes */
    dns_server_t d = {.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_true(d.fd >= 0);
    assert_int_equal(bind(d.fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(d.fd, (struct sockaddr *)&sin, &len), 0);
    assert_non_null(d.ev = event_new(fx->base, d.fd, EV_READ | EV_PERSIST, on_dns_query, &d));
    assert_int_equal(event_add(d.ev, NULL), 0);
    struct evdns_base *dns = evdns_base_new(fx->base, 0);
    assert_non_null(dns);
    assert_int_equal(evdns_base_nameserver_sockaddr_add(dns, (struct sockaddr *)&sin, sizeof(sin), 0), 0);
    assert_int_equal(ptc_fetch_new(&f, fx->base, dns, "https://pending.test/", path("ca.pem"), err, sizeof(err)), 0);
    assert_true(ptc_fetch_start(f, 2000, 0, on_got, &fx->got));
    assert_true(run_until(fx->base, &d.queries, 1, 2000));
    ptc_fetch_free(f);
    run_ready(fx->base); /* the canceled query's callback */
    evdns_base_free(dns, 0);
    event_free(d.ev);
    close(d.fd);

    assert_int_equal(fx->got.calls, 0);
    server_stop(&fx->srv);
}

static void test_callback_restarts_and_frees(void **state)
{
    fixture_t *fx = *state;
    char err[256];

    server_start(&fx->srv, fx->base, "ip");
    respond_200(&fx->srv, "", "{}");
    assert_int_equal(
        ptc_fetch_new(&fx->got.f, fx->base, NULL, url_of(fx, "https", "127.0.0.1", "/"), path("ca.pem"), err, sizeof(err)), 0);
    fx->got.restart = 2; /* the callback starts the next GET twice, then frees the fetcher */
    assert_true(ptc_fetch_start(fx->got.f, 2000, 0, on_got, &fx->got));
    assert_true(run_until(fx->base, &fx->got.calls, 3, 5000));
    assert_null(fx->got.f);
    assert_int_equal(fx->srv.requests, 3);
    assert_string_equal(fx->got.body, "{}");
    run_ready(fx->base);
    assert_int_equal(fx->got.calls, 3);
    server_stop(&fx->srv);
}

/* ---- the refresher ---- */

typedef struct st_report_t {
    char *body;
    size_t len;
    bool changed, expired;
    char error[128];
    uint64_t at_ms;
} report_t;

typedef struct st_reports_t {
    report_t r[32];
    int n;
    ptc_refresher_t *free_me; /* freed by the callback at its first report */
} reports_t;

static void on_report(void *arg, const char *body, size_t len, bool changed, bool expired, const char *error)
{
    reports_t *rs = arg;
    assert_true(rs->n < 32);
    report_t *r = &rs->r[rs->n++];
    r->body = body != NULL ? strndup(body, len) : NULL;
    r->len = len;
    r->changed = changed;
    r->expired = expired;
    r->at_ms = ptc_now_ms();
    snprintf(r->error, sizeof(r->error), "%s", error != NULL ? error : "");
    assert_true(expired ? body == NULL && error != NULL : body != NULL && error == NULL && body[len] == '\0');
    if (rs->free_me != NULL) {
        ptc_refresher_free(rs->free_me);
        rs->free_me = NULL;
    }
}

static void reports_clear(reports_t *rs)
{
    for (int i = 0; i < rs->n; i++)
        free(rs->r[i].body);
    memset(rs, 0, sizeof(*rs));
}

static ptc_refresher_t *refresher(fixture_t *fx, const ptc_refresher_options_t *opts, reports_t *rs)
{
    char err[256];
    ptc_refresher_t *r;
    int ret = ptc_refresher_new(&r, fx->base, NULL, fx->url, path("ca.pem"), opts, on_report, rs, err, sizeof(err));
    if (ret != 0)
        print_error("%s\n", err);
    assert_int_equal(ret, 0);
    assert_int_equal(rs->n, 0); /* the first fetch runs from the loop */
    return r;
}

static uint64_t gap(const server_t *s, int i)
{
    return s->request_ms[i] - s->request_ms[i - 1];
}

static void test_refresher_schedule(void **state)
{
    fixture_t *fx = *state;
    reports_t rs = {.n = 0};
    size_t len;
    uint64_t expires;

    server_start(&fx->srv, fx->base, "ip");
    url_of(fx, "https", "127.0.0.1", "/jwks");
    respond_200(&fx->srv, "", "{\"keys\":[\"a\"]}");

    /* no lifetime in the response: default_ttl_ms (400), refreshed after 80% (320) */
    ptc_refresher_options_t opts = {.default_ttl_ms = 400, .min_interval_ms = 50, .timeout_ms = 2000};
    ptc_refresher_t *r = refresher(fx, &opts, &rs);
    assert_null(ptc_refresher_document(r, &len, &expires));
    assert_true(run_until(fx->base, &rs.n, 1, 3000));
    assert_true(rs.r[0].changed);
    assert_false(rs.r[0].expired);
    assert_string_equal(rs.r[0].body, "{\"keys\":[\"a\"]}");
    assert_string_equal(ptc_refresher_document(r, &len, &expires), "{\"keys\":[\"a\"]}");
    assert_int_equal(len, 14);
    assert_true(expires >= rs.r[0].at_ms + 400 - SLACK_MS && expires <= rs.r[0].at_ms + 400);

    /* the same body again */
    assert_true(run_until(fx->base, &rs.n, 2, 3000));
    assert_false(rs.r[1].changed);
    assert_false(rs.r[1].expired);
    assert_true(gap(&fx->srv, 1) >= 320 - SLACK_MS);

    /* a new one */
    respond_200(&fx->srv, "", "{\"keys\":[\"b\"]}");
    assert_true(run_until(fx->base, &rs.n, 3, 3000));
    assert_true(rs.r[2].changed);
    assert_string_equal(rs.r[2].body, "{\"keys\":[\"b\"]}");
    assert_true(gap(&fx->srv, 2) >= 320 - SLACK_MS);
    ptc_refresher_free(r);
    reports_clear(&rs);

    /* max-age=1: after 800 ms, and good for 1000 */
    respond_200(&fx->srv, "Cache-Control: max-age=1\r\n", "{}");
    opts = (ptc_refresher_options_t){.default_ttl_ms = 5000, .min_interval_ms = 50};
    int base_requests = fx->srv.requests;
    r = refresher(fx, &opts, &rs);
    assert_true(run_until(fx->base, &rs.n, 2, 4000));
    assert_true(gap(&fx->srv, base_requests + 1) >= 800 - SLACK_MS);
    ptc_refresher_document(r, &len, &expires);
    assert_true(expires >= rs.r[1].at_ms + 1000 - SLACK_MS && expires <= rs.r[1].at_ms + 1000);
    ptc_refresher_free(r);
    reports_clear(&rs);

    /* no later than default_ttl_ms (300), though the document stays good for its max-age */
    opts = (ptc_refresher_options_t){.default_ttl_ms = 300, .min_interval_ms = 50};
    base_requests = fx->srv.requests;
    r = refresher(fx, &opts, &rs);
    assert_true(run_until(fx->base, &rs.n, 2, 3000));
    assert_true(gap(&fx->srv, base_requests + 1) >= 300 - SLACK_MS);
    ptc_refresher_document(r, &len, &expires);
    assert_true(expires >= rs.r[1].at_ms + 1000 - SLACK_MS && expires <= rs.r[1].at_ms + 1000);
    ptc_refresher_free(r);
    reports_clear(&rs);

    /* no sooner than min_interval_ms (200), even for a response served stale (lifetime 1 ms) */
    respond_200(&fx->srv, "Cache-Control: max-age=1\r\nAge: 5\r\n", "{}");
    opts = (ptc_refresher_options_t){.default_ttl_ms = 1000, .min_interval_ms = 200};
    base_requests = fx->srv.requests;
    r = refresher(fx, &opts, &rs);
    assert_true(run_until(fx->base, &rs.n, 2, 3000));
    assert_false(rs.r[1].expired);
    assert_true(gap(&fx->srv, base_requests + 1) >= 200 - SLACK_MS);
    ptc_refresher_document(r, &len, &expires);
    assert_true(expires >= rs.r[1].at_ms + 250 - SLACK_MS && expires <= rs.r[1].at_ms + 250);
    ptc_refresher_free(r);
    reports_clear(&rs);
    server_stop(&fx->srv);
}

/* Records, as each failing request arrives, whether the refresher still holds its document. */
typedef struct st_backoff_probe_t {
    ptc_refresher_t *r;
    bool had_doc[64];
    uint64_t expires[64];
} backoff_probe_t;

static void probe_request(server_t *s)
{
    backoff_probe_t *p = s->data;
    int i = (s->requests - 1) % 64;
    size_t len;
    p->had_doc[i] = ptc_refresher_document(p->r, &len, &p->expires[i]) != NULL;
}

static void test_refresher_backoff(void **state)
{
    fixture_t *fx = *state;
    reports_t rs = {.n = 0};
    backoff_probe_t probe = {.r = NULL};

    server_start(&fx->srv, fx->base, "ip");
    url_of(fx, "https", "127.0.0.1", "/jwks");
    respond_200(&fx->srv, "", "{\"keys\":[\"a\"]}");
    /* lifetime 1000: refreshed at 800; retries 40, 80, 160, 160... later */
    ptc_refresher_options_t opts = {
        .default_ttl_ms = 1000, .min_interval_ms = 50, .backoff_initial_ms = 40, .backoff_max_ms = 160, .timeout_ms = 2000};
    probe.r = refresher(fx, &opts, &rs);
    fx->srv.data = &probe;
    fx->srv.on_request = probe_request;
    assert_true(run_until(fx->base, &rs.n, 1, 3000));
    respond(&fx->srv, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");

    /* the refresh and three retries fail; the good document is kept until its end of life */
    assert_true(run_until(fx->base, &fx->srv.requests, 5, 4000));
    assert_true(gap(&fx->srv, 1) >= 800 - SLACK_MS);
    assert_true(gap(&fx->srv, 2) >= 40 - SLACK_MS);
    assert_true(gap(&fx->srv, 3) >= 80 - SLACK_MS);
    assert_true(gap(&fx->srv, 4) >= 160 - SLACK_MS);
    assert_true(probe.had_doc[1] && probe.had_doc[2]); /* at 800 and 840 of 1000 */
    for (int i = 1; i < 5; i++)
        if (probe.had_doc[i])
            assert_true(fx->srv.request_ms[i] <= probe.expires[i] + SLACK_MS);
    if (rs.n == 1)
        assert_non_null(ptc_refresher_document(probe.r, NULL, NULL));

    /* it expires: reported once, with the last failure */
    assert_true(run_until(fx->base, &rs.n, 2, 3000));
    assert_true(rs.r[1].expired);
    assert_true(rs.r[1].changed);
    assert_null(rs.r[1].body);
    assert_string_equal(rs.r[1].error, "HTTP 503");
    assert_true(rs.r[1].at_ms - rs.r[0].at_ms >= 1000 - SLACK_MS);
    assert_null(ptc_refresher_document(probe.r, NULL, NULL));

    /* the server recovers: the next retry brings the document back (changed, since it had expired) */
    respond_200(&fx->srv, "", "{\"keys\":[\"a\"]}");
    int before = fx->srv.requests;
    assert_true(run_until(fx->base, &rs.n, 3, 3000));
    assert_false(rs.r[2].expired);
    assert_true(rs.r[2].changed);
    assert_string_equal(rs.r[2].body, "{\"keys\":[\"a\"]}");
    assert_int_equal(fx->srv.requests, before + 1);
    assert_true(gap(&fx->srv, before) >= 160 - SLACK_MS); /* still backing off at the maximum */
    ptc_refresher_free(probe.r);
    reports_clear(&rs);
    server_stop(&fx->srv);
}

static void test_refresher_server_down(void **state)
{
    fixture_t *fx = *state;
    reports_t rs = {.n = 0};

    server_start(&fx->srv, fx->base, "ip");
    uint16_t port = fx->srv.port;
    url_of(fx, "https", "127.0.0.1", "/jwks");
    respond_200(&fx->srv, "", "{\"keys\":[]}");
    ptc_refresher_options_t opts = {.default_ttl_ms = 300, .min_interval_ms = 50, .backoff_initial_ms = 30, .backoff_max_ms = 60};
    ptc_refresher_t *r = refresher(fx, &opts, &rs);
    assert_true(run_until(fx->base, &rs.n, 1, 3000));
    server_unlisten(&fx->srv);

    /* down past the lifetime: the document is dropped and that is reported */
    assert_true(run_until(fx->base, &rs.n, 2, 3000));
    assert_true(rs.r[1].expired);
    assert_string_equal(rs.r[1].error, "connect: Connection refused");
    assert_true(rs.r[1].at_ms - rs.r[0].at_ms >= 300 - SLACK_MS);
    assert_null(ptc_refresher_document(r, NULL, NULL));

    /* back up on the same port */
    server_listen(&fx->srv, port);
    assert_true(run_until(fx->base, &rs.n, 3, 3000));
    assert_true(rs.r[2].changed);
    assert_string_equal(rs.r[2].body, "{\"keys\":[]}");
    ptc_refresher_free(r);
    reports_clear(&rs);
    server_stop(&fx->srv);
}

static void test_refresher_free(void **state)
{
    fixture_t *fx = *state;
    reports_t rs = {.n = 0};
    char err[256];
    ptc_refresher_t *r;
    ptc_refresher_options_t opts = {.default_ttl_ms = 1000};

    assert_int_equal(ptc_refresher_new(&r, fx->base, NULL, "https://127.0.0.1/", NULL, NULL, on_report, &rs, err, sizeof(err)),
                     PTC_EINVAL);
    assert_int_equal(ptc_refresher_new(&r, fx->base, NULL, "http://idp.example/", NULL, &opts, on_report, &rs, err, sizeof(err)),
                     PTC_EINVAL);
    assert_non_null(strstr(err, "loopback"));
    ptc_refresher_free(NULL);

    /* in the middle of a fetch: no report afterwards */
    server_start(&fx->srv, fx->base, "ip");
    url_of(fx, "https", "127.0.0.1", "/");
    r = refresher(fx, &opts, &rs);
    assert_true(run_until(fx->base, &fx->srv.requests, 1, 3000));
    ptc_refresher_free(r);
    assert_true(run_until(fx->base, &fx->srv.closed, 1, 3000));
    run_ready(fx->base);
    assert_int_equal(rs.n, 0);

    /* from its own callback */
    respond_200(&fx->srv, "", "{}");
    rs.free_me = refresher(fx, &opts, &rs);
    assert_true(run_until(fx->base, &rs.n, 1, 3000));
    assert_null(rs.free_me);
    run_ready(fx->base);
    assert_int_equal(rs.n, 1);
    reports_clear(&rs);
    server_stop(&fx->srv);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_http_date),
        T(test_freshness),
        T(test_new),
        T(test_ok_max_age),
        T(test_expires_and_no_store),
        T(test_bodies),
        T(test_http_errors),
        T(test_body_cap),
        T(test_connection_refused),
        T(test_untrusted_server),
        T(test_names),
        T(test_timeout),
        T(test_http_loopback),
        T(test_free_in_flight),
        T(test_callback_restarts_and_frees),
        T(test_refresher_schedule),
        T(test_refresher_backoff),
        T(test_refresher_server_down),
        T(test_refresher_free),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
