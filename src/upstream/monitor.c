/*
 * The upstream monitor (include/portico/monitor.h): active gRPC health checks and DNS refresh, run by the
 * pools of the monitoring worker.
 *
 * A check is a unary call of grpc.health.v1.Health/Check made through the pool's client interface like any
 * call, as a stream pinned to one endpoint (ptc_upstream_stream_t.pin): it goes to that endpoint whether or
 * not it is healthy (how else would it come back), opens a connection to it when there is none, and is never
 * refused by max_pending. Its request is one small gRPC frame built once per monitor; its answer is read into
 * a few bytes (a HealthCheckResponse is 2 bytes; a longer message is skipped field by field, within 64 bytes).
 * The check passes when the answer is HTTP 200, grpc-status 0 and status SERVING; anything else (a connection
 * that cannot be made, a reset, UNIMPLEMENTED from a server without the health service, NOT_SERVING, no
 * answer within timeout) fails it. Each endpoint has one check in flight at most; the next starts interval
 * after the previous one ended.
 *
 * DNS: each endpoint given by host name is resolved again every dns_refresh with evdns_getaddrinfo (the
 * worker's evdns base; /etc/hosts answers come inside the call). The numeric addresses are published to
 * the endpoint's shared status; when they change, dns_generation moves and each pool drains its connections
 * to addresses that went away (pool.c, conn_check_dns). A failed lookup keeps the addresses known before.
 * A canceled query's callback comes later from the loop (EVUTIL_EAI_CANCEL), so the query's argument is a
 * small dns_query_t that outlives its resolver and is freed by that callback.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "portico/health.h"
#include "portico/log.h"
#include "portico/monitor.h"
#include "portico/snapshot.h"
#include "portico/upstream.h"
#include "portico/worker.h"

#define CHECK_RESPONSE_MAX 64 /* bytes of a check's answer kept: a frame header and a small message */
#define CHECK_NV_MAX 8

typedef struct st_check_t {
    ptc_upstream_stream_t s; /* first: the stream callbacks get &s */
    ptc_monitor_t *m;
    size_t ep;
    struct event *timer;    /* the next check */
    struct event *deadline; /* the check in flight times out */
    bool running;
    size_t req_off; /* request bytes handed to the stream so far */
    nghttp2_nv nva[CHECK_NV_MAX];
    size_t nva_len;
    char authority[300];
    int http_status;
    bool have_grpc_status;
    int grpc_status;
    char grpc_message[96];
    uint8_t resp[CHECK_RESPONSE_MAX];
    size_t resp_len;
    bool resp_long; /* more than CHECK_RESPONSE_MAX bytes came */
} check_t;

typedef struct st_resolver_t resolver_t;

typedef struct st_dns_query_t {
    resolver_t *r; /* NULL once its resolver no longer waits for it */
} dns_query_t;

struct st_resolver_t {
    ptc_monitor_t *m;
    size_t ep;
    struct event *timer;
    dns_query_t *query; /* in flight, or NULL */
    struct evdns_getaddrinfo_request *req;
};

struct st_ptc_monitor_t {
    ptc_upstream_t *up;
    uint8_t req[5 + 3 + PTC_CONFIG_MAX_HEALTH_SERVICE]; /* the check's request frame */
    size_t req_len;
    char timeout[16]; /* grpc-timeout of the checks */
    check_t *checks;  /* per endpoint, or NULL without health_check */
    size_t num_checks;
    resolver_t *resolvers; /* per endpoint given by name (the others have none: ep == SIZE_MAX) */
    size_t num_resolvers;
};

static const ptc_upstream_config_t *mon_config(const ptc_monitor_t *m)
{
    return m->up->client.config;
}

static ptc_endpoint_status_t *mon_status(const ptc_monitor_t *m, size_t ep)
{
    return m->up->snap->status->upstreams[m->up->index].endpoints[ep];
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void timer_in(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(ev, &tv);
}

/* ---- health checks ---- */

static check_t *check_of(ptc_upstream_stream_t *s)
{
    return (check_t *)(void *)s;
}

/* Withdraws the check's stream if it is queued or open (no callback follows). */
static void check_cancel_stream(check_t *c)
{
    if (c->s.client != NULL)
        c->s.client->cb->cancel(&c->s, 0);
}

/* The outcome of the check in flight: recorded, logged when the health changes, and the next one scheduled. */
static void check_end(check_t *c, bool ok, const char *result)
{
    ptc_monitor_t *m = c->m;
    const ptc_upstream_config_t *cfg = mon_config(m);
    ptc_endpoint_status_t *st = mon_status(m, c->ep);
    ptc_health_t before;

    if (!c->running)
        return;
    c->running = false;
    evtimer_del(c->deadline);
    check_cancel_stream(c);
    ptc_health_t now = ptc_health_record(st, &cfg->health_check, ok, result, wall_ms(), &before);
    unsigned run = ok ? atomic_load(&st->check_successes) : atomic_load(&st->check_failures);
    if (now != before && now == PTC_HEALTH_UNHEALTHY)
        ptc_log_warn("upstream %s: endpoint %s is unhealthy: health check failed: %s (%u in a row)", cfg->name, st->label, result,
                     run);
    else if (now != before)
        ptc_log_info("upstream %s: endpoint %s is healthy: health check: %s (%u in a row)", cfg->name, st->label, result, run);
    else
        ptc_log_debug("upstream %s: endpoint %s: health check: %s", cfg->name, st->label, result);
    timer_in(c->timer, cfg->health_check.interval_ms);
}

static void ck_request_headers(ptc_upstream_stream_t *s, const nghttp2_nv **nva, size_t *n)
{
    check_t *c = check_of(s);
    *nva = c->nva;
    *n = c->nva_len;
}

static ssize_t ck_read_request(ptc_upstream_stream_t *s, size_t length, uint32_t *data_flags)
{
    check_t *c = check_of(s);
    size_t left = c->m->req_len - c->req_off, n = PTC_MIN(length, left);
    if (n == left)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (n != 0)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    return (ssize_t)n;
}

static int ck_write_request(ptc_upstream_stream_t *s, struct evbuffer *out, const uint8_t *framehd, size_t length)
{
    check_t *c = check_of(s);
    if (evbuffer_add(out, framehd, 9) != 0 || evbuffer_add(out, c->m->req + c->req_off, length) != 0)
        return -1; /* out of memory: the pool closes the connection, the check fails with it */
    c->req_off += length;
    return 0;
}

/* A small decimal number (":status", "grpc-status"); -1 when it is not one. */
static int small_number(const uint8_t *v, size_t len)
{
    int n = 0;
    if (len == 0 || len > 6)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

static void ck_on_header(ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen)
{
    check_t *c = check_of(s);
    if (cat == NGHTTP2_HCAT_RESPONSE && namelen == 7 && memcmp(name, ":status", 7) == 0) {
        c->http_status = small_number(value, valuelen);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        c->have_grpc_status = true;
        c->grpc_status = small_number(value, valuelen);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        /* percent-encoded; shown as sent (only printable ASCII is kept) */
        size_t n = 0;
        for (size_t i = 0; i < valuelen && n + 1 < sizeof(c->grpc_message); i++)
            c->grpc_message[n++] = value[i] >= 0x20 && value[i] < 0x7f ? (char)value[i] : '?';
        c->grpc_message[n] = '\0';
    }
}

static void ck_on_headers_end(ptc_upstream_stream_t *s, nghttp2_headers_category cat, bool end_stream)
{
    (void)s;
    (void)cat;
    (void)end_stream;
}

static void ck_on_data(ptc_upstream_stream_t *s, const uint8_t *data, size_t len)
{
    check_t *c = check_of(s);
    size_t take = PTC_MIN(len, sizeof(c->resp) - c->resp_len);
    memcpy(c->resp + c->resp_len, data, take);
    c->resp_len += take;
    c->resp_long = c->resp_long || take < len;
    s->client->cb->consume(s, len); /* read whole: the window goes back at once */
}

static void ck_on_data_end(ptc_upstream_stream_t *s)
{
    (void)s;
}

/* Judges a complete answer; writes what it says into result. */
static bool check_verdict(check_t *c, char *result, size_t len)
{
    if (c->http_status != 200) {
        snprintf(result, len, "HTTP status %d", c->http_status);
        return false;
    }
    if (c->grpc_status != 0) {
        snprintf(result, len, "grpc-status %d%s%s%s", c->grpc_status,
                 c->grpc_status == 12 ? " (the server has no health service)" : "", c->grpc_message[0] != '\0' ? ": " : "",
                 c->grpc_message);
        return false;
    }
    uint32_t n =
        c->resp_len >= 5 ? (uint32_t)c->resp[1] << 24 | (uint32_t)c->resp[2] << 16 | (uint32_t)c->resp[3] << 8 | c->resp[4] : 0;
    int status;
    if (c->resp_len < 5 || c->resp_long || c->resp_len != 5 + (size_t)n || c->resp[0] != 0 ||
        ptc_health_decode_response(c->resp + 5, n, &status) != 0) {
        snprintf(result, len, "malformed HealthCheckResponse (%zu bytes%s)", c->resp_len, c->resp_long ? " or more" : "");
        return false;
    }
    ptc_health_status_name(status, result, len);
    return status == PTC_HEALTH_STATUS_SERVING;
}

static void ck_on_close(ptc_upstream_stream_t *s, uint32_t error_code, const char *conn_error)
{
    check_t *c = check_of(s);
    char result[160];
    bool ok = false;

    if (conn_error != NULL)
        snprintf(result, sizeof(result), "%.150s", conn_error);
    else if (!c->have_grpc_status && error_code != NGHTTP2_NO_ERROR)
        snprintf(result, sizeof(result), "stream reset (HTTP/2 error %s)", nghttp2_http2_strerror(error_code));
    else if (!c->have_grpc_status)
        snprintf(result, sizeof(result), "no grpc-status in the answer (HTTP status %d)", c->http_status);
    else
        ok = check_verdict(c, result, sizeof(result));
    check_end(c, ok, result);
}

static void ck_on_error(ptc_upstream_stream_t *s, const char *message)
{
    check_end(check_of(s), false, message);
}

static const ptc_upstream_stream_cb_t check_callbacks = {
    ck_request_headers, ck_read_request, ck_write_request, ck_on_header, ck_on_headers_end,
    ck_on_data,         ck_on_data_end,  ck_on_close,      ck_on_error,
};

static void add_nv(check_t *c, const char *name, const char *value)
{
    c->nva[c->nva_len++] =
        (nghttp2_nv){(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE};
}

static void on_check_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    check_t *c = arg;
    ptc_monitor_t *m = c->m;
    const ptc_upstream_config_t *cfg = mon_config(m);

    if (c->running)
        return;
    c->running = true;
    c->req_off = 0;
    c->http_status = 0;
    c->have_grpc_status = false;
    c->grpc_status = 0;
    c->grpc_message[0] = '\0';
    c->resp_len = 0;
    c->resp_long = false;
    c->s = (ptc_upstream_stream_t){.cb = &check_callbacks, .pin = (uint32_t)c->ep + 1};
    timer_in(c->deadline, cfg->health_check.timeout_ms);
    /* the answer may come before start() returns (no connection can be made): nothing of c is used after it */
    m->up->client.cb->start(&m->up->client, &c->s);
}

static void on_check_deadline(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    check_t *c = arg;
    char result[64];
    snprintf(result, sizeof(result), "timeout after %" PRIu64 " ms", mon_config(c->m)->health_check.timeout_ms);
    check_end(c, false, result);
}

static int checks_start(ptc_monitor_t *m)
{
    ptc_upstream_t *up = m->up;
    const ptc_upstream_config_t *cfg = mon_config(m);
    const ptc_health_check_config_t *hc = &cfg->health_check;

    if (!hc->enabled) {
        /* no (more) checks: what they said no longer holds */
        for (size_t ep = 0; ep < cfg->num_endpoints; ep++) {
            ptc_endpoint_status_t *st = mon_status(m, ep);
            if (atomic_load(&st->health) != PTC_HEALTH_UNKNOWN || atomic_load(&st->check_successes) != 0 ||
                atomic_load(&st->check_failures) != 0)
                ptc_health_reset(st);
        }
        return 0;
    }
    if ((m->req_len = ptc_health_encode_request(hc->service != NULL ? hc->service : "", m->req, sizeof(m->req))) == 0)
        return PTC_EINVAL; /* cannot happen: the service's length is validated */
    snprintf(m->timeout, sizeof(m->timeout), "%" PRIu64 "m", PTC_MIN(hc->timeout_ms, (uint64_t)99999999));
    if ((m->checks = calloc(cfg->num_endpoints, sizeof(*m->checks))) == NULL)
        return PTC_ENOMEM;
    m->num_checks = cfg->num_endpoints;
    for (size_t ep = 0; ep < cfg->num_endpoints; ep++) {
        check_t *c = &m->checks[ep];
        c->m = m;
        c->ep = ep;
        c->timer = evtimer_new(up->worker->base, on_check_timer, c);
        c->deadline = evtimer_new(up->worker->base, on_check_deadline, c);
        if (c->timer == NULL || c->deadline == NULL)
            return PTC_ENOMEM;
        if (cfg->authority != NULL)
            snprintf(c->authority, sizeof(c->authority), "%s", cfg->authority);
        else
            snprintf(c->authority, sizeof(c->authority), "%s", mon_status(m, ep)->label);
        add_nv(c, ":method", "POST");
        add_nv(c, ":scheme", cfg->tls != NULL ? "https" : "http");
        add_nv(c, ":path", PTC_HEALTH_CHECK_PATH);
        add_nv(c, ":authority", c->authority);
        add_nv(c, "content-type", "application/grpc");
        add_nv(c, "te", "trailers");
        add_nv(c, "grpc-timeout", m->timeout);
        add_nv(c, "user-agent", "portico-health-check/" PTC_VERSION);
        timer_in(c->timer, 0); /* at once: readiness waits for the first answers */
    }
    return 0;
}

static void checks_stop(ptc_monitor_t *m)
{
    for (size_t i = 0; m->checks != NULL && i < m->num_checks; i++) {
        check_t *c = &m->checks[i];
        if (c->running)
            check_cancel_stream(c);
        if (c->timer != NULL)
            event_free(c->timer);
        if (c->deadline != NULL)
            event_free(c->deadline);
    }
    free(m->checks);
    m->checks = NULL;
    m->num_checks = 0;
}

/* ---- DNS refresh ---- */

/* True when host is an address rather than a name (nothing to resolve). */
static bool is_numeric(const char *host)
{
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || strchr(host, ':') != NULL;
}

static bool address_listed(char (*list)[PTC_HEALTH_ADDR_STRLEN], size_t n, const char *a)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], a) == 0)
            return true;
    return false;
}

/* Writes "a, b, c" (at most len bytes) for the log. */
static void join_addresses(char (*list)[PTC_HEALTH_ADDR_STRLEN], size_t n, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && pos + 1 < len; i++) {
        int w = snprintf(buf + pos, len - pos, "%s%s", i != 0 ? ", " : "", list[i]);
        pos = w > 0 ? PTC_MIN(pos + (size_t)w, len - 1) : pos;
    }
    if (n == 0)
        snprintf(buf, len, "nothing");
}

/* Publishes a lookup's outcome to the endpoint's shared status. */
static void resolved(resolver_t *r, int err, struct evutil_addrinfo *res)
{
    ptc_monitor_t *m = r->m;
    const ptc_upstream_config_t *cfg = mon_config(m);
    ptc_endpoint_status_t *st = mon_status(m, r->ep);
    char list[PTC_HEALTH_MAX_RESOLVED][PTC_HEALTH_ADDR_STRLEN];
    size_t n = 0;
    char now_text[400], was_text[400];

    for (struct evutil_addrinfo *ai = err == 0 ? res : NULL; ai != NULL && n < PTC_HEALTH_MAX_RESOLVED; ai = ai->ai_next) {
        const void *a = ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr
                                                  : (const void *)&((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr;
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            inet_ntop(ai->ai_family, a, list[n], sizeof(list[n])) == NULL)
            continue;
        if (!address_listed(list, n, list[n]))
            n++;
    }
    bool changed = false, first_error = false;
    pthread_mutex_lock(&st->lock);
    st->resolved_wall_ms = wall_ms();
    if (err != 0 || n == 0) {
        first_error = st->dns_error[0] == '\0';
        snprintf(st->dns_error, sizeof(st->dns_error), "%s", err != 0 ? evutil_gai_strerror(err) : "no address");
    } else {
        st->dns_error[0] = '\0';
        changed = n != st->num_resolved;
        for (size_t i = 0; i < n && !changed; i++)
            changed = !address_listed(st->resolved, st->num_resolved, list[i]);
        if (changed) {
            join_addresses(st->resolved, st->num_resolved, was_text, sizeof(was_text));
            memcpy(st->resolved, list, sizeof(list[0]) * n);
            st->num_resolved = n;
        }
    }
    pthread_mutex_unlock(&st->lock);
    if (changed) {
        atomic_fetch_add_explicit(&st->dns_generation, 1, memory_order_release);
        join_addresses(list, n, now_text, sizeof(now_text));
        ptc_log_info("upstream %s: %s resolves to %s (was %s)", cfg->name, st->label, now_text, was_text);
    } else if (first_error) {
        ptc_log_warn("upstream %s: cannot resolve %s: %s; the addresses known before stay", cfg->name, st->label,
                     err != 0 ? evutil_gai_strerror(err) : "no address");
    }
}

static void on_dns_answer(int err, struct evutil_addrinfo *res, void *arg)
{
    dns_query_t *q = arg;
    resolver_t *r = q->r;
    free(q);
    if (r != NULL && err != EVUTIL_EAI_CANCEL) {
        r->query = NULL;
        r->req = NULL;
        resolved(r, err, res);
        timer_in(r->timer, mon_config(r->m)->dns_refresh_ms);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
}

static void on_dns_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    resolver_t *r = arg;
    ptc_monitor_t *m = r->m;
    const ptc_hostport_t *hp = &mon_config(m)->endpoints[r->ep];
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    char port[8];

    if (r->query != NULL)
        return;
    dns_query_t *q = malloc(sizeof(*q));
    if (q == NULL) {
        timer_in(r->timer, mon_config(m)->dns_refresh_ms);
        return;
    }
    q->r = r;
    r->query = q;
    snprintf(port, sizeof(port), "%u", (unsigned)hp->port);
    /* an answer from /etc/hosts (or an error) comes inside the call, and frees q */
    struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(m->up->worker->dns, hp->host, port, &hints, on_dns_answer, q);
    if (req != NULL && r->query == q)
        r->req = req;
}

static int resolvers_start(ptc_monitor_t *m)
{
    const ptc_upstream_config_t *cfg = mon_config(m);
    size_t n = 0;

    if (cfg->dns_refresh_ms == 0)
        return 0;
    for (size_t ep = 0; ep < cfg->num_endpoints; ep++)
        n += !is_numeric(cfg->endpoints[ep].host);
    if (n == 0)
        return 0;
    if ((m->resolvers = calloc(n, sizeof(*m->resolvers))) == NULL)
        return PTC_ENOMEM;
    for (size_t ep = 0; ep < cfg->num_endpoints; ep++) {
        if (is_numeric(cfg->endpoints[ep].host))
            continue;
        resolver_t *r = &m->resolvers[m->num_resolvers++];
        r->m = m;
        r->ep = ep;
        if ((r->timer = evtimer_new(m->up->worker->base, on_dns_timer, r)) == NULL)
            return PTC_ENOMEM;
        timer_in(r->timer, 0);
    }
    return 0;
}

static void resolvers_stop(ptc_monitor_t *m)
{
    for (size_t i = 0; i < m->num_resolvers; i++) {
        resolver_t *r = &m->resolvers[i];
        if (r->query != NULL) {
            r->query->r = NULL;
            if (r->req != NULL)
                evdns_getaddrinfo_cancel(r->req); /* its callback frees the query later */
        }
        if (r->timer != NULL)
            event_free(r->timer);
    }
    free(m->resolvers);
    m->resolvers = NULL;
    m->num_resolvers = 0;
}

/* ---- life cycle ---- */

int ptc_monitor_start(ptc_upstream_t *up)
{
    ptc_monitor_t *m;
    int ret;

    if (up->worker == NULL || up->worker->id != PTC_MONITOR_WORKER || up->monitor != NULL)
        return 0;
    if ((m = calloc(1, sizeof(*m))) == NULL)
        return PTC_ENOMEM;
    m->up = up;
    up->monitor = m;
    if ((ret = checks_start(m)) != 0 || (ret = resolvers_start(m)) != 0) {
        ptc_monitor_stop(up);
        return ret;
    }
    if (m->checks == NULL && m->resolvers == NULL)
        ptc_monitor_stop(up); /* nothing to do */
    return 0;
}

void ptc_monitor_stop(ptc_upstream_t *up)
{
    ptc_monitor_t *m = up->monitor;
    if (m == NULL)
        return;
    up->monitor = NULL;
    checks_stop(m);
    resolvers_stop(m);
    free(m);
}
