/*
 * HTTP(S) GET of remote documents (JWKS) for the control thread, and the refresher that keeps one fresh.
 *
 * Why a small client of our own rather than evhttp's: evhttp (2.1) reduces every failure to an enum
 * (EVREQ_HTTP_EOF, ...), so "connection refused", "certificate verify failed: ..." and "hostname mismatch"
 * would all read alike in the logs, which is what an operator debugging a JWKS URL needs most; it retries
 * connections on its own, resolves names with blocking getaddrinfo() when given no evdns base, and its
 * TLS error path is known to be awkward. What is needed here is small: one GET, `Connection: close`, a
 * status, five headers and a capped body. llhttp (already used by the HTTP/1 server) parses the response,
 * including chunked and close-delimited bodies.
 *
 * One GET goes through these steps, each bounded by the one deadline (timer):
 *   kick       an event made active by ptc_fetch_start(), so that the callback never runs inside it;
 *   resolve    IP literals and localhost need no lookup; names go through evdns_getaddrinfo();
 *   connect    a non-blocking socket per address, in order, until one connects (SO_ERROR tells why not);
 *   exchange   a bufferevent (bufferevent_openssl in connecting state for https) on the connected socket:
 *              the request is queued at once and sent when the handshake is done; the response is fed to
 *              llhttp as it arrives and the GET ends when the message is complete.
 * The result is delivered by deliver(), which first tears the GET down (reset()), so the callback may free
 * the fetcher or start another GET, and then never touches the fetcher again.
 *
 * The bufferevent runs without BEV_OPT_DEFER_CALLBACKS: errno is read in the event callback, and a deferred
 * callback would find it overwritten by whatever ran in between. Nothing here calls into the bufferevent in
 * a way that runs our callbacks synchronously (the request is queued before the handshake, in connecting
 * state), and freeing a bufferevent from its own callback is safe (libevent holds a reference meanwhile).
 *
 * A body delimited by the close (no Content-Length, not chunked) is accepted; over TLS a peer closing
 * without close_notify counts as a close (SSL_OP_IGNORE_UNEXPECTED_EOF, see tls.c), so such a body cut
 * short by a forged FIN would pass as complete. It cannot be altered, and a cut JSON document does not parse.
 *
 * Canceling a DNS query: evdns calls the callback of a canceled evdns_getaddrinfo() later, from the loop,
 * with EVUTIL_EAI_CANCEL. The query's argument is therefore a small resolve_t that outlives the fetcher
 * and is freed by that callback; reset() only clears its pointer back.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <llhttp.h>
#include <openssl/ssl.h>

#include "portico/fetch.h"
#include "portico/log.h"
#include "portico/tls.h"

#define MAX_HEAD_BYTES (64 * 1024)    /* status line and header fields of a response */
#define MAX_ADDRS 8                   /* addresses of a name tried in turn */
#define MAX_DELTA_SECONDS 2147483648u /* RFC 9111 §1.2.2: larger delta-seconds count as this */

/* ---- small growable buffer ---- */

typedef struct st_dynbuf_t {
    char *base; /* NUL-terminated after len bytes once anything was added */
    size_t len;
    size_t cap;
} dynbuf_t;

static bool dynbuf_reserve(dynbuf_t *b, size_t more)
{
    if (more >= SIZE_MAX - b->len)
        return false;
    size_t need = b->len + more + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap != 0 ? b->cap : 64;
    while (cap < need)
        cap = cap <= SIZE_MAX / 2 ? cap * 2 : need;
    char *p = realloc(b->base, cap);
    if (p == NULL)
        return false;
    b->base = p;
    b->cap = cap;
    b->base[b->len] = '\0';
    return true;
}

static bool dynbuf_add(dynbuf_t *b, const char *p, size_t n)
{
    if (!dynbuf_reserve(b, n))
        return false;
    if (n != 0)
        memcpy(b->base + b->len, p, n);
    b->len += n;
    b->base[b->len] = '\0';
    return true;
}

static void dynbuf_free(dynbuf_t *b)
{
    free(b->base);
    *b = (dynbuf_t){NULL, 0, 0};
}

static ptc_iovec_t dynbuf_iov(const dynbuf_t *b, bool present)
{
    return present ? ptc_iov(b->base != NULL ? b->base : "", b->len) : ptc_iov(NULL, 0);
}

/* ---- HTTP-date (RFC 9110 §5.6.7) ---- */

typedef struct st_cursor_t {
    const char *p;
    const char *end;
} cursor_t;

static bool take_char(cursor_t *c, char ch)
{
    if (c->p == c->end || *c->p != ch)
        return false;
    c->p++;
    return true;
}

static bool take_digits(cursor_t *c, size_t n, int *out)
{
    int v = 0;
    if ((size_t)(c->end - c->p) < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (c->p[i] < '0' || c->p[i] > '9')
            return false;
        v = v * 10 + (c->p[i] - '0');
    }
    c->p += n;
    *out = v;
    return true;
}

static size_t take_alpha(cursor_t *c)
{
    size_t n = 0;
    while (c->p != c->end && ((*c->p >= 'a' && *c->p <= 'z') || (*c->p >= 'A' && *c->p <= 'Z'))) {
        c->p++;
        n++;
    }
    return n;
}

/* month = "Jan" / ... (matched without regard to case, as most clients do); *mon is 1..12 */
static bool take_month(cursor_t *c, int *mon)
{
    static const char names[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    if (c->end - c->p < 3)
        return false;
    for (int i = 0; i < 12; i++) {
        if (ptc_tolower(c->p[0]) == names[3 * i] && ptc_tolower(c->p[1]) == names[3 * i + 1] &&
            ptc_tolower(c->p[2]) == names[3 * i + 2]) {
            c->p += 3;
            *mon = i + 1;
            return true;
        }
    }
    return false;
}

/* time-of-day = hour ":" minute ":" second */
static bool take_time(cursor_t *c, int *h, int *m, int *s)
{
    return take_digits(c, 2, h) && take_char(c, ':') && take_digits(c, 2, m) && take_char(c, ':') && take_digits(c, 2, s);
}

static bool take_gmt(cursor_t *c)
{
    return take_char(c, ' ') && take_char(c, 'G') && take_char(c, 'M') && take_char(c, 'T');
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

bool ptc_fetch_parse_http_date(ptc_iovec_t s, int64_t now, int64_t *out)
{
    s = ptc_iov_trim(s);
    cursor_t c = {s.base, s.base + s.len};
    int day, mon, year, h, mi, sec;

    if (s.base == NULL || take_alpha(&c) < 3) /* day-name or day-name-l; not checked against the date */
        return false;
    if (take_char(&c, ',')) {
        if (!take_char(&c, ' ') || !take_digits(&c, 2, &day))
            return false;
        if (take_char(&c, ' ')) { /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
            if (!take_month(&c, &mon) || !take_char(&c, ' ') || !take_digits(&c, 4, &year) || !take_char(&c, ' ') ||
                !take_time(&c, &h, &mi, &sec) || !take_gmt(&c))
                return false;
        } else { /* rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT */
            int yy;
            if (!take_char(&c, '-') || !take_month(&c, &mon) || !take_char(&c, '-') || !take_digits(&c, 2, &yy) ||
                !take_char(&c, ' ') || !take_time(&c, &h, &mi, &sec) || !take_gmt(&c))
                return false;
            /* "MUST interpret a timestamp in rfc850-date format, which uses a two-digit year, that appears to be
             * more than 50 years in the future as representing the most recent year in the past that had the
             * same last two digits" */
            time_t t = (time_t)now;
            struct tm tm;
            if (gmtime_r(&t, &tm) == NULL)
                return false;
            int this_year = tm.tm_year + 1900;
            year = this_year - this_year % 100 + yy;
            if (year > this_year + 50)
                year -= 100;
        }
    } else { /* asctime-date: Sun Nov  6 08:49:37 1994 */
        if (!take_char(&c, ' ') || !take_month(&c, &mon) || !take_char(&c, ' '))
            return false;
        if (take_char(&c, ' ')) {
            if (!take_digits(&c, 1, &day))
                return false;
        } else if (!take_digits(&c, 2, &day)) {
            return false;
        }
        if (!take_char(&c, ' ') || !take_time(&c, &h, &mi, &sec) || !take_char(&c, ' ') || !take_digits(&c, 4, &year))
            return false;
    }
    if (c.p != c.end || day < 1 || day > days_in_month(year, mon) || h > 23 || mi > 59 || sec > 60)
        return false;
    *out = days_from_civil(year, mon, day) * 86400 + h * 3600 + mi * 60 + sec;
    return true;
}

/* ---- Cache-Control (RFC 9111 §5.2), Expires, Age ---- */

/* delta-seconds = 1*DIGIT, saturating at MAX_DELTA_SECONDS */
static bool parse_delta_seconds(ptc_iovec_t s, uint64_t *out)
{
    uint64_t v = 0;
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        if (s.base[i] < '0' || s.base[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.base[i] - '0');
        if (v > MAX_DELTA_SECONDS)
            v = MAX_DELTA_SECONDS;
    }
    *out = v;
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * The next directive of a Cache-Control list: `name [ "=" ( token / quoted-string ) ]`, with any amount of
 * whitespace and empty elements around. A quoted value is returned without its quotes (escapes are left as
 * they are: no directive used here has one in a valid value), and may hold commas. Returns false at the end.
 */
static bool next_directive(ptc_iovec_t *list, ptc_iovec_t *name, ptc_iovec_t *value, bool *has_value)
{
    const char *p = list->base, *end = list->base + list->len;

    while (p != end && (*p == ',' || is_ows(*p)))
        p++;
    if (p == end) {
        *list = ptc_iov(end, 0);
        return false;
    }
    const char *n = p;
    while (p != end && *p != '=' && *p != ',' && !is_ows(*p))
        p++;
    *name = ptc_iov(n, (size_t)(p - n));
    while (p != end && is_ows(*p))
        p++;
    *has_value = false;
    *value = ptc_iov(p, 0);
    if (p != end && *p == '=') {
        p++;
        while (p != end && is_ows(*p))
            p++;
        *has_value = true;
        if (p != end && *p == '"') {
            const char *v = ++p;
            while (p != end && *p != '"')
                p += *p == '\\' && p + 1 != end ? 2 : 1;
            *value = ptc_iov(v, (size_t)(p - v));
            if (p != end)
                p++;
        } else {
            const char *v = p;
            while (p != end && *p != ',')
                p++;
            *value = ptc_iov_trim(ptc_iov(v, (size_t)(p - v)));
        }
    }
    while (p != end && *p != ',') /* junk after the directive */
        p++;
    *list = ptc_iov(p, (size_t)(end - p));
    return true;
}

uint64_t ptc_fetch_freshness_ms(ptc_iovec_t cache_control, ptc_iovec_t expires, ptc_iovec_t date, ptc_iovec_t age, int64_t now)
{
    ptc_iovec_t list = cache_control, name, value;
    bool has_value, have_max_age = false, stale = false;
    uint64_t lifetime = 0, current_age = 0;

    while (list.base != NULL && next_directive(&list, &name, &value, &has_value)) {
        if (ptc_iov_eq_ci(name, PTC_STRLIT("no-store"))) {
            stale = true;
        } else if (ptc_iov_eq_ci(name, PTC_STRLIT("no-cache")) && !has_value) {
            stale = true; /* no-cache="field" only forbids reusing those fields */
        } else if (ptc_iov_eq_ci(name, PTC_STRLIT("max-age")) && !have_max_age) {
            /* §4.2.1: the first occurrence counts; non-integer content is invalid freshness information, stale */
            have_max_age = true;
            if (!has_value || !parse_delta_seconds(value, &lifetime))
                stale = true;
        }
    }
    if (stale)
        return 0;
    if (!have_max_age) {
        int64_t exp, served;
        if (expires.base == NULL)
            return 0;
        if (!ptc_fetch_parse_http_date(expires, now, &exp)) /* §5.3: invalid (e.g. "0") means already expired */
            return 0;
        if (date.base == NULL || !ptc_fetch_parse_http_date(date, now, &served))
            served = now;
        if (exp <= served)
            return 0;
        lifetime = (uint64_t)(exp - served) < MAX_DELTA_SECONDS ? (uint64_t)(exp - served) : MAX_DELTA_SECONDS;
    }
    if (lifetime == 0)
        return 0;
    if (age.base != NULL && !parse_delta_seconds(ptc_iov_trim(age), &current_age))
        current_age = 0;
    if (current_age >= lifetime) /* served stale by a cache on the way: refresh as soon as allowed */
        return 1;
    return (lifetime - current_age) * 1000;
}

/* ---- the fetcher ---- */

typedef struct st_resolve_t resolve_t;

/* The response header fields that matter here. */
enum { H_CACHE_CONTROL, H_EXPIRES, H_DATE, H_AGE, H_CONTENT_ENCODING, H_NUM };
static const ptc_iovec_t header_names[H_NUM] = {
    PTC_STRLIT("cache-control"), PTC_STRLIT("expires"), PTC_STRLIT("date"), PTC_STRLIT("age"), PTC_STRLIT("content-encoding"),
};
/* Lists (RFC 9110 §5.3: several lines are one comma-separated value); the others keep their first line. */
static const bool header_is_list[H_NUM] = {true, false, false, false, true};

/* What one GET holds; zeroed between GETs (reset()). */
typedef struct st_get_state_t {
    bool busy;
    ptc_fetch_cb cb;
    void *arg;
    uint64_t timeout_ms;
    size_t max_body;
    char setup_error[64]; /* found by ptc_fetch_start, reported by the kick */
    /* resolve */
    resolve_t *resolve; /* the query in flight, or NULL */
    struct evdns_getaddrinfo_request *dns_req;
    bool resolving_sync; /* inside evdns_getaddrinfo(): the answer may come before it returns */
    int gai_err;
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlens[MAX_ADDRS];
    size_t naddrs, next_addr;
    /* connect */
    struct event *connect_ev; /* the socket being connected (its fd is ours to close) */
    char connect_error[96];   /* why the last address failed */
    /* exchange */
    struct bufferevent *bev;
    bool handshake_done;
    bool got_bytes;
    llhttp_t parser;
    int status;
    bool complete;     /* the final response was parsed whole */
    size_t head_bytes; /* of the current response head, against MAX_HEAD_BYTES */
    char name[24];     /* the header name being read (longer ones are of no interest) */
    size_t name_len;
    int cur; /* H_* of the value being read, or -1 */
    dynbuf_t headers[H_NUM];
    bool seen[H_NUM];
    dynbuf_t body;
    char error[192]; /* set by a parser callback: the GET failed */
} get_state_t;

struct st_ptc_fetch_t {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *tls;   /* NULL: http:// */
    char *host;     /* as resolved: without brackets */
    char *tls_name; /* SNI and the name verified: host without a trailing dot */
    bool no_lookup; /* an IP literal or localhost */
    bool localhost;
    uint16_t port;
    char *request; /* the whole GET, built once */
    size_t request_len;
    struct event *kick;  /* begins a GET from the loop */
    struct event *timer; /* the GET's deadline */
    get_state_t st;
};

struct st_resolve_t {
    ptc_fetch_t *f; /* NULL once the GET no longer waits for this query */
};

static struct timeval tv_of_ms(uint64_t ms)
{
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
}

/* Tears the GET down: closes what is open, cancels what is pending, frees what it held. */
static void reset(ptc_fetch_t *f)
{
    get_state_t *st = &f->st;

    if (f->kick != NULL)
        event_del(f->kick);
    if (f->timer != NULL)
        event_del(f->timer);
    if (st->resolve != NULL) {
        st->resolve->f = NULL;
        evdns_getaddrinfo_cancel(st->dns_req); /* its callback frees st->resolve later */
    }
    if (st->connect_ev != NULL) {
        evutil_closesocket(event_get_fd(st->connect_ev));
        event_free(st->connect_ev);
    }
    if (st->bev != NULL)
        bufferevent_free(st->bev); /* closes the socket; safe inside the bufferevent's own callbacks */
    for (size_t i = 0; i < H_NUM; i++)
        dynbuf_free(&st->headers[i]);
    dynbuf_free(&st->body);
    memset(st, 0, sizeof(*st));
}

/* Ends the GET: tears it down, then runs the callback, after which f may be gone. */
static void deliver(ptc_fetch_t *f, ptc_fetch_result_t *r)
{
    ptc_fetch_cb cb = f->st.cb;
    void *arg = f->st.arg;
    r->status = f->st.status;
    reset(f);
    cb(arg, r);
}

static void fail(ptc_fetch_t *f, const char *fmt, ...) PTC_PRINTF(2, 3);
static void fail(ptc_fetch_t *f, const char *fmt, ...)
{
    char error[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, sizeof(error), fmt, ap);
    va_end(ap);
    ptc_fetch_result_t r = {.error = error};
    deliver(f, &r);
}

static void succeed(ptc_fetch_t *f)
{
    get_state_t *st = &f->st;
    dynbuf_t body = st->body;
    ptc_fetch_result_t r = {
        .body = body.base != NULL ? body.base : "",
        .len = body.len,
        .max_age_ms = ptc_fetch_freshness_ms(dynbuf_iov(&st->headers[H_CACHE_CONTROL], st->seen[H_CACHE_CONTROL]),
                                             dynbuf_iov(&st->headers[H_EXPIRES], st->seen[H_EXPIRES]),
                                             dynbuf_iov(&st->headers[H_DATE], st->seen[H_DATE]),
                                             dynbuf_iov(&st->headers[H_AGE], st->seen[H_AGE]), (int64_t)time(NULL)),
    };
    st->body = (dynbuf_t){NULL, 0, 0}; /* ours until the callback returns */
    deliver(f, &r);
    free(body.base);
}

/* -- the response, through llhttp -- */

static ptc_fetch_t *fetch_of(llhttp_t *p)
{
    return p->data;
}

/* Records why the GET fails (the first reason counts) and makes llhttp stop. */
static int stop(ptc_fetch_t *f, const char *fmt, ...) PTC_PRINTF(2, 3);
static int stop(ptc_fetch_t *f, const char *fmt, ...)
{
    if (f->st.error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->st.error, sizeof(f->st.error), fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int count_head(ptc_fetch_t *f, size_t len)
{
    f->st.head_bytes += len;
    return f->st.head_bytes > MAX_HEAD_BYTES ? stop(f, "response header larger than %d bytes", MAX_HEAD_BYTES) : 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    return count_head(fetch_of(p), len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    ptc_fetch_t *f = fetch_of(p);
    if (f->st.name_len + len <= sizeof(f->st.name))
        memcpy(f->st.name + f->st.name_len, at, len);
    f->st.name_len += len; /* too long for the buffer: matches no name of interest */
    return count_head(f, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    get_state_t *st = &fetch_of(p)->st;
    st->cur = -1;
    if (st->name_len <= sizeof(st->name)) {
        for (int i = 0; i < H_NUM; i++) {
            if (ptc_iov_eq_ci(ptc_iov(st->name, st->name_len), header_names[i]) && (header_is_list[i] || !st->seen[i])) {
                st->cur = i;
                /* a further line of a list continues it after a comma */
                if (st->seen[i] && !dynbuf_add(&st->headers[i], ",", 1))
                    return stop(fetch_of(p), "out of memory");
                st->seen[i] = true;
                break;
            }
        }
    }
    st->name_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    ptc_fetch_t *f = fetch_of(p);
    if (f->st.cur >= 0 && !dynbuf_add(&f->st.headers[f->st.cur], at, len))
        return stop(f, "out of memory");
    return count_head(f, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    fetch_of(p)->st.cur = -1;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    ptc_fetch_t *f = fetch_of(p);
    get_state_t *st = &f->st;
    int status = llhttp_get_status_code(p);

    if (status >= 100 && status < 200 && status != 101)
        return 0; /* an interim response (103 Early Hints): the final one follows */
    st->status = status;
    if (status >= 300 && status < 400)
        return stop(f, "HTTP %d (redirects are not followed)", status);
    if (status != 200)
        return stop(f, "HTTP %d", status);
    /* nothing was asked for but identity (no Accept-Encoding); a coded body is not the document */
    ptc_iovec_t list = dynbuf_iov(&st->headers[H_CONTENT_ENCODING], st->seen[H_CONTENT_ENCODING]), name, value;
    bool has_value;
    while (list.base != NULL && next_directive(&list, &name, &value, &has_value))
        if (!ptc_iov_eq_ci(name, PTC_STRLIT("identity")))
            return stop(f, "unsupported Content-Encoding \"%.*s\"", (int)PTC_MIN(name.len, 32), name.base);
    if ((p->flags & F_CONTENT_LENGTH) != 0) {
        if (p->content_length > st->max_body)
            return stop(f, "body larger than %zu bytes", st->max_body);
        if (!dynbuf_reserve(&st->body, (size_t)p->content_length))
            return stop(f, "out of memory");
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    ptc_fetch_t *f = fetch_of(p);
    if (len > f->st.max_body - f->st.body.len)
        return stop(f, "body larger than %zu bytes", f->st.max_body);
    return dynbuf_add(&f->st.body, at, len) ? 0 : stop(f, "out of memory");
}

static int on_message_complete(llhttp_t *p)
{
    get_state_t *st = &fetch_of(p)->st;
    int status = llhttp_get_status_code(p);
    if (status >= 100 && status < 200 && status != 101) {
        /* the interim response's fields are not the final response's */
        for (size_t i = 0; i < H_NUM; i++) {
            dynbuf_free(&st->headers[i]);
            st->seen[i] = false;
        }
        st->head_bytes = 0;
        return 0;
    }
    st->complete = true;
    return HPE_PAUSED; /* anything after the response is of no interest */
}

static const llhttp_settings_t parser_settings = {
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Ends the GET if parsing decided it: a reason recorded by a callback, a complete response, or bad input. */
static bool after_parse(ptc_fetch_t *f, llhttp_errno_t e)
{
    if (f->st.error[0] != '\0')
        fail(f, "%s", f->st.error);
    else if (f->st.complete)
        succeed(f);
    else if (e != HPE_OK)
        fail(f, "malformed response: %s", llhttp_get_error_reason(&f->st.parser));
    else
        return false;
    return true;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    ptc_fetch_t *f = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    llhttp_errno_t e = HPE_OK;
    size_t n;

    while (e == HPE_OK && (n = evbuffer_get_contiguous_space(in)) > 0) {
        const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)n); /* already contiguous: no copy */
        if (p == NULL) {
            fail(f, "out of memory");
            return;
        }
        f->st.got_bytes = true;
        e = llhttp_execute(&f->st.parser, (const char *)p, n);
        evbuffer_drain(in, n);
    }
    after_parse(f, e);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    ptc_fetch_t *f = arg;
    int sockerr = EVUTIL_SOCKET_ERROR();
    char why[160] = "";

    if (events & BEV_EVENT_CONNECTED) { /* the TLS handshake is done, the server verified */
        f->st.handshake_done = true;
        return;
    }
    if (f->tls != NULL)
        ptc_tls_bev_error(bev, why, sizeof(why));
    if (why[0] != '\0') {
        fail(f, "TLS: %s", why);
        return;
    }
    if ((events & BEV_EVENT_ERROR) && sockerr != 0) {
        if (f->tls != NULL && !f->st.handshake_done)
            fail(f, "TLS: %s", evutil_socket_error_to_string(sockerr));
        else
            fail(f, "%s: %s", (events & BEV_EVENT_WRITING) ? "send" : "receive", evutil_socket_error_to_string(sockerr));
        return;
    }
    /* the server closed the connection (or vanished without a reason) */
    if (f->tls != NULL && !f->st.handshake_done) {
        fail(f, "TLS: connection closed during the handshake");
        return;
    }
    (void)llhttp_finish(&f->st.parser); /* completes a body delimited by the close; else the response is cut short */
    if (!after_parse(f, HPE_OK))
        fail(f, "connection closed before %s", f->st.got_bytes ? "the response was complete" : "a response");
}

/* The socket is connected: wrap it, queue the request, read the response. */
static void exchange(ptc_fetch_t *f, evutil_socket_t fd)
{
    struct bufferevent *bev;

    if (f->tls != NULL) {
        SSL *ssl = ptc_tls_client_ssl_new(f->tls, f->tls_name, true);
        if (ssl == NULL) {
            evutil_closesocket(fd);
            fail(f, "out of memory");
            return;
        }
        /* on failure libevent frees ssl (BEV_OPT_CLOSE_ON_FREE) but leaves fd open */
        bev = bufferevent_openssl_socket_new(f->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        evutil_closesocket(fd);
        fail(f, "out of memory");
        return;
    }
    f->st.bev = bev;
    bufferevent_setcb(bev, on_read, NULL, on_event, f);
    llhttp_init(&f->st.parser, HTTP_RESPONSE, &parser_settings);
    f->st.parser.data = f;
    f->st.cur = -1;
    if (bufferevent_write(bev, f->request, f->request_len) != 0 || bufferevent_enable(bev, EV_READ | EV_WRITE) != 0)
        fail(f, "out of memory");
}

static void connect_next(ptc_fetch_t *f);

static void on_connect(evutil_socket_t fd, short events, void *arg)
{
    ptc_fetch_t *f = arg;
    int err = 0;
    socklen_t len = sizeof(err);
    (void)events;

    event_free(f->st.connect_ev);
    f->st.connect_ev = NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        snprintf(f->st.connect_error, sizeof(f->st.connect_error), "connect: %s", strerror(err));
        evutil_closesocket(fd);
        connect_next(f);
        return;
    }
    exchange(f, fd);
}

/* Tries the remaining addresses in turn; fails the GET with the last reason when none is left. */
static void connect_next(ptc_fetch_t *f)
{
    get_state_t *st = &f->st;

    while (st->next_addr < st->naddrs) {
        size_t i = st->next_addr++;
        int fd = socket(st->addrs[i].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0) {
            snprintf(st->connect_error, sizeof(st->connect_error), "socket: %s", strerror(errno));
            continue;
        }
        if (connect(fd, (const struct sockaddr *)&st->addrs[i], st->addrlens[i]) == 0) {
            exchange(f, fd);
            return;
        }
        if (errno == EINPROGRESS) {
            if ((st->connect_ev = event_new(f->base, fd, EV_WRITE, on_connect, f)) == NULL ||
                event_add(st->connect_ev, NULL) != 0) {
                if (st->connect_ev != NULL)
                    event_free(st->connect_ev);
                st->connect_ev = NULL;
                evutil_closesocket(fd);
                fail(f, "out of memory");
            }
            return;
        }
        snprintf(st->connect_error, sizeof(st->connect_error), "connect: %s", strerror(errno));
        evutil_closesocket(fd);
    }
    fail(f, "%s", st->connect_error[0] != '\0' ? st->connect_error : "connect: no address");
}

static void add_addr(get_state_t *st, const struct sockaddr *sa, size_t len)
{
    if (st->naddrs < MAX_ADDRS && len <= sizeof(st->addrs[0]) && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
        memcpy(&st->addrs[st->naddrs], sa, len);
        st->addrlens[st->naddrs++] = (socklen_t)len;
    }
}

/* The addresses of an IP literal, or localhost's: 127.0.0.1 first (what servers bind most), then ::1. */
static void literal_addrs(ptc_fetch_t *f)
{
    static const char *const loopback[] = {"127.0.0.1", "::1"};
    const char *const literal[] = {f->host};
    const char *const *hosts = f->localhost ? loopback : literal;
    size_t n = f->localhost ? PTC_ARRAY_SIZE(loopback) : 1;

    for (size_t i = 0; i < n; i++) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(f->port)};
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(f->port)};
        if (inet_pton(AF_INET, hosts[i], &sin.sin_addr) == 1)
            add_addr(&f->st, (const struct sockaddr *)&sin, sizeof(sin));
        else if (inet_pton(AF_INET6, hosts[i], &sin6.sin6_addr) == 1)
            add_addr(&f->st, (const struct sockaddr *)&sin6, sizeof(sin6));
    }
}

static void resolved(ptc_fetch_t *f)
{
    if (f->st.gai_err != 0)
        fail(f, "resolve %s: %s", f->host, evutil_gai_strerror(f->st.gai_err));
    else if (f->st.naddrs == 0)
        fail(f, "resolve %s: no IPv4 or IPv6 address", f->host);
    else
        connect_next(f);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    resolve_t *rs = arg;
    ptc_fetch_t *f = rs->f;

    free(rs);
    if (f != NULL) {
        f->st.resolve = NULL;
        f->st.dns_req = NULL;
        f->st.gai_err = result;
        for (struct evutil_addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
            add_addr(&f->st, ai->ai_addr, ai->ai_addrlen);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (f != NULL && !f->st.resolving_sync)
        resolved(f);
}

static void on_kick(evutil_socket_t fd, short events, void *arg)
{
    ptc_fetch_t *f = arg;
    (void)fd;
    (void)events;

    if (f->st.setup_error[0] != '\0') {
        fail(f, "%s", f->st.setup_error);
        return;
    }
    if (f->no_lookup) {
        literal_addrs(f);
        connect_next(f);
        return;
    }
    resolve_t *rs = malloc(sizeof(*rs));
    if (rs == NULL) {
        fail(f, "out of memory");
        return;
    }
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)f->port);
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    rs->f = f;
    f->st.resolve = rs;
    /* answers from /etc/hosts (and errors) come inside the call: its callback then leaves resolved() to us */
    f->st.resolving_sync = true;
    struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(f->dns, f->host, port, &hints, on_resolved, rs);
    f->st.resolving_sync = false;
    if (req == NULL) { /* answered already; rs is freed */
        resolved(f);
        return;
    }
    f->st.dns_req = req;
}

static void on_timeout(evutil_socket_t fd, short events, void *arg)
{
    ptc_fetch_t *f = arg;
    (void)fd;
    (void)events;
    fail(f, "timeout after %" PRIu64 " ms", f->st.timeout_ms);
}

bool ptc_fetch_start(ptc_fetch_t *f, uint64_t timeout_ms, size_t max_body, ptc_fetch_cb cb, void *arg)
{
    if (f->st.busy)
        return false;
    f->st.busy = true;
    f->st.cb = cb;
    f->st.arg = arg;
    f->st.timeout_ms = timeout_ms != 0 ? timeout_ms : PTC_FETCH_DEFAULT_TIMEOUT_MS;
    f->st.max_body = max_body != 0 ? max_body : PTC_FETCH_DEFAULT_MAX_BODY;
    struct timeval tv = tv_of_ms(f->st.timeout_ms);
    if (evtimer_add(f->timer, &tv) != 0) /* a GET without its deadline could hang forever */
        snprintf(f->st.setup_error, sizeof(f->st.setup_error), "cannot arm the timeout (out of memory)");
    event_active(f->kick, EV_TIMEOUT, 1);
    return true;
}

/* -- the URL -- */

static bool is_loopback(const char *host)
{
    unsigned char a[16];
    static const unsigned char v4[4] = {127, 0, 0, 1}, v6[16] = {[15] = 1};
    if (inet_pton(AF_INET, host, a) == 1)
        return memcmp(a, v4, 4) == 0;
    if (inet_pton(AF_INET6, host, a) == 1)
        return memcmp(a, v6, 16) == 0;
    return strcasecmp(host, "localhost") == 0;
}

/* A DNS name: letters, digits, '-', '_' and dots (no percent-encoding, no other sub-delims). */
static bool is_dns_name(const char *s)
{
    if (*s == '\0' || strlen(s) > 253)
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' ||
              *s == '.'))
            return false;
    return true;
}

/* Visible ASCII only: nothing that could split or bend the request line. */
static bool is_clean(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Fills f from url and builds the request. Returns 0 or PTC_EINVAL / PTC_ENOMEM with err set. */
static int parse_url(ptc_fetch_t *f, const char *url, bool have_dns, bool *is_https, char *err, size_t errlen)
{
    struct evhttp_uri *uri = evhttp_uri_parse_with_flags(url, 0);
    int ret = PTC_EINVAL;
    const char *why = NULL;

    if (uri == NULL)
        return ptc_errorf(PTC_EINVAL, err, errlen, "URL \"%.200s\": not a valid URL", url);
    const char *scheme = evhttp_uri_get_scheme(uri), *host = evhttp_uri_get_host(uri), *path = evhttp_uri_get_path(uri),
               *query = evhttp_uri_get_query(uri);
    int port = evhttp_uri_get_port(uri);
    bool https = *is_https = scheme != NULL && strcasecmp(scheme, "https") == 0;
    bool bracketed = host != NULL && host[0] == '[';
    unsigned char bin[16];

    if (scheme == NULL || (!https && strcasecmp(scheme, "http") != 0)) {
        why = "the scheme must be https";
        goto out;
    }
    if (evhttp_uri_get_userinfo(uri) != NULL) {
        why = "credentials in the URL are not supported";
        goto out;
    }
    if (host == NULL || host[0] == '\0') {
        why = "no host";
        goto out;
    }
    if (port == 0) {
        why = "port 0";
        goto out;
    }
    if (path == NULL || path[0] == '\0')
        path = "/";
    if (!is_clean(path) || (query != NULL && !is_clean(query)) || path[0] != '/') {
        why = "invalid path or query";
        goto out;
    }
    if ((f->host = strdup(bracketed ? host + 1 : host)) == NULL)
        goto nomem;
    if (bracketed) {
        f->host[strlen(f->host) - 1] = '\0'; /* evhttp_uri checked the closing bracket */
        if (inet_pton(AF_INET6, f->host, bin) != 1) {
            why = "invalid IPv6 address";
            goto out;
        }
    } else if (inet_pton(AF_INET, f->host, bin) != 1 && !is_dns_name(f->host)) {
        why = "invalid host name";
        goto out;
    }
    f->localhost = strcasecmp(f->host, "localhost") == 0;
    f->no_lookup = bracketed || f->localhost || inet_pton(AF_INET, f->host, bin) == 1;
    if (!https && !is_loopback(f->host)) {
        why = "plain http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost): use https://";
        goto out;
    }
    if (!f->no_lookup && !have_dns) {
        why = "the host is a name and no DNS resolver is available here: use an IP address";
        goto out;
    }
    f->port = (uint16_t)(port > 0 ? port : https ? 443 : 80);
    if ((f->tls_name = strdup(f->host)) == NULL)
        goto nomem;
    size_t n = strlen(f->tls_name);
    if (n > 1 && f->tls_name[n - 1] == '.') /* SNI carries no trailing dot (RFC 6066 §3) */
        f->tls_name[n - 1] = '\0';

    /* RFC 9112 §3.2: Host is the authority without userinfo; the port only when it is not the default */
    char portpart[16] = "";
    if (port > 0 && port != (https ? 443 : 80))
        snprintf(portpart, sizeof(portpart), ":%d", port);
#define REQUEST_FORMAT                                                                                                             \
    "GET %s%s%s HTTP/1.1\r\nHost: %s%s\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: portico\r\n\r\n"
    const char *q = query != NULL ? "?" : "";
    query = query != NULL ? query : "";
    int len = snprintf(NULL, 0, REQUEST_FORMAT, path, q, query, host, portpart);
    if (len < 0 || (f->request = malloc((size_t)len + 1)) == NULL)
        goto nomem;
    snprintf(f->request, (size_t)len + 1, REQUEST_FORMAT, path, q, query, host, portpart);
#undef REQUEST_FORMAT
    f->request_len = (size_t)len;
    ret = 0;
    goto out;

nomem:
    ret = PTC_ENOMEM;
    why = "out of memory";
out:
    if (why != NULL)
        ptc_errorf(ret, err, errlen, "URL \"%.200s\": %s", url, why);
    evhttp_uri_free(uri);
    return ret;
}

void ptc_fetch_free(ptc_fetch_t *f)
{
    if (f == NULL)
        return;
    reset(f);
    if (f->kick != NULL)
        event_free(f->kick);
    if (f->timer != NULL)
        event_free(f->timer);
    SSL_CTX_free(f->tls);
    free(f->host);
    free(f->tls_name);
    free(f->request);
    free(f);
}

int ptc_fetch_new(ptc_fetch_t **out, struct event_base *base, struct evdns_base *dns, const char *url, const char *ca_file,
                  char *err, size_t errlen)
{
    ptc_fetch_t *f = calloc(1, sizeof(*f));
    int ret;

    if (f == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    f->base = base;
    f->dns = dns;
    bool https = false;
    if ((ret = parse_url(f, url, dns != NULL, &https, err, errlen)) != 0)
        goto fail;
    if (https && (ret = ptc_tls_client_ctx_new(&f->tls, ca_file, err, errlen)) != 0)
        goto fail;
    f->kick = event_new(base, -1, 0, on_kick, f);
    f->timer = evtimer_new(base, on_timeout, f);
    if (f->kick == NULL || f->timer == NULL) {
        ret = ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
        goto fail;
    }
    *out = f;
    return 0;

fail:
    ptc_fetch_free(f);
    return ret;
}

/* ---- the refresher ---- */

struct st_ptc_refresher_t {
    ptc_fetch_t *fetch;
    ptc_refresher_options_t opts; /* defaults applied */
    char *url;                    /* for log lines */
    ptc_refresher_cb cb;
    void *arg;
    struct event *timer;  /* the next fetch */
    struct event *expiry; /* the good document's end of life */
    char *doc;            /* the good document (NUL-terminated), or NULL */
    size_t doc_len;
    uint64_t expires_ms;
    uint64_t backoff_ms;  /* the wait after the next failure */
    char last_error[256]; /* since the last success; "" when none */
};

static void arm(ptc_refresher_t *r, struct event *ev, uint64_t ms)
{
    struct timeval tv = tv_of_ms(ms);
    if (evtimer_add(ev, &tv) != 0)
        ptc_log_error("fetch %s: cannot arm a timer (out of memory): the document is no longer refreshed", r->url);
}

static void refresh_failed(ptc_refresher_t *r, const char *error)
{
    uint64_t wait = r->backoff_ms, now = ptc_now_ms();

    snprintf(r->last_error, sizeof(r->last_error), "%s", error);
    r->backoff_ms = PTC_MIN(r->backoff_ms * 2, r->opts.backoff_max_ms);
    arm(r, r->timer, wait);
    if (r->doc != NULL)
        ptc_log_warn("fetch %s failed: %s; retrying in %" PRIu64 " ms, the last good document expires in %" PRIu64 " ms", r->url,
                     error, wait, r->expires_ms > now ? r->expires_ms - now : 0);
    else
        ptc_log_warn("fetch %s failed: %s; retrying in %" PRIu64 " ms (no document)", r->url, error, wait);
}

static void on_fetched(void *arg, const ptc_fetch_result_t *res)
{
    ptc_refresher_t *r = arg;

    if (res->error != NULL) {
        refresh_failed(r, res->error);
        return;
    }
    bool changed = r->doc == NULL || r->doc_len != res->len || memcmp(r->doc, res->body, res->len) != 0;
    if (changed) {
        char *copy = malloc(res->len + 1);
        if (copy == NULL) {
            refresh_failed(r, "out of memory");
            return;
        }
        memcpy(copy, res->body, res->len);
        copy[res->len] = '\0';
        free(r->doc);
        r->doc = copy;
        r->doc_len = res->len;
    }
    /* the schedule of fetch.h: 80% of the lifetime, within [min_interval, default_ttl]; the document lives
     * at least a quarter of the wait past its refresh */
    uint64_t lifetime = res->max_age_ms != 0 ? res->max_age_ms : r->opts.default_ttl_ms;
    uint64_t wait = PTC_MAX(PTC_MIN(lifetime - lifetime / 5, r->opts.default_ttl_ms), r->opts.min_interval_ms);
    uint64_t keep = PTC_MAX(lifetime, wait + wait / 4);
    r->expires_ms = ptc_now_ms() + keep;
    r->backoff_ms = r->opts.backoff_initial_ms;
    r->last_error[0] = '\0';
    arm(r, r->timer, wait);
    arm(r, r->expiry, keep);
    ptc_log_debug("fetch %s: %zu bytes%s, good for %" PRIu64 " ms, next fetch in %" PRIu64 " ms", r->url, res->len,
                  changed ? " (changed)" : "", keep, wait);
    r->cb(r->arg, r->doc, r->doc_len, changed, false, NULL);
}

static void on_refresh_timer(evutil_socket_t fd, short events, void *arg)
{
    ptc_refresher_t *r = arg;
    (void)fd;
    (void)events;
    ptc_fetch_start(r->fetch, r->opts.timeout_ms, r->opts.max_body, on_fetched, r); /* never busy: armed only after a GET */
}

static void on_expiry(evutil_socket_t fd, short events, void *arg)
{
    ptc_refresher_t *r = arg;
    const char *why = r->last_error[0] != '\0' ? r->last_error : "no refresh completed in time";
    (void)fd;
    (void)events;

    free(r->doc);
    r->doc = NULL;
    r->doc_len = 0;
    r->expires_ms = 0;
    ptc_log_warn("fetch %s: the document expired without a successful refresh (%s)", r->url, why);
    r->cb(r->arg, NULL, 0, true, true, why);
}

int ptc_refresher_new(ptc_refresher_t **out, struct event_base *base, struct evdns_base *dns, const char *url, const char *ca_file,
                      const ptc_refresher_options_t *opts, ptc_refresher_cb cb, void *arg, char *err, size_t errlen)
{
    ptc_refresher_t *r;
    int ret;

    if (opts == NULL || opts->default_ttl_ms == 0)
        return ptc_errorf(PTC_EINVAL, err, errlen, "a default lifetime (default_ttl_ms) is required");
    if ((r = calloc(1, sizeof(*r))) == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    r->opts = *opts;
    if (r->opts.min_interval_ms == 0)
        r->opts.min_interval_ms = 5000;
    if (r->opts.backoff_initial_ms == 0)
        r->opts.backoff_initial_ms = 1000;
    if (r->opts.backoff_max_ms == 0)
        r->opts.backoff_max_ms = 60000;
    r->opts.backoff_max_ms = PTC_MAX(r->opts.backoff_max_ms, r->opts.backoff_initial_ms);
    r->backoff_ms = r->opts.backoff_initial_ms;
    r->cb = cb;
    r->arg = arg;
    if ((ret = ptc_fetch_new(&r->fetch, base, dns, url, ca_file, err, errlen)) != 0) {
        free(r);
        return ret;
    }
    r->url = strdup(url);
    r->timer = evtimer_new(base, on_refresh_timer, r);
    r->expiry = evtimer_new(base, on_expiry, r);
    if (r->url == NULL || r->timer == NULL || r->expiry == NULL) {
        ptc_refresher_free(r);
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    }
    arm(r, r->timer, 0);
    *out = r;
    return 0;
}

void ptc_refresher_free(ptc_refresher_t *r)
{
    if (r == NULL)
        return;
    ptc_fetch_free(r->fetch);
    if (r->timer != NULL)
        event_free(r->timer);
    if (r->expiry != NULL)
        event_free(r->expiry);
    free(r->doc);
    free(r->url);
    free(r);
}

const char *ptc_refresher_document(const ptc_refresher_t *r, size_t *len, uint64_t *expires_ms)
{
    if (len != NULL)
        *len = r->doc_len;
    if (expires_ms != NULL)
        *expires_ms = r->expires_ms;
    return r->doc;
}
