/*
 * HTTP/1.1 downstream adapter (llhttp, strict mode): turns bytes into request heads and body pieces
 * for a call, and writes the call's response (chunked). It knows HTTP, not gRPC-Web.
 *
 * One exchange at a time: after a request is complete, parsing pauses (llhttp HPE_PAUSED) until its
 * response is complete, so pipelined requests are answered in order; their bytes wait in the input
 * buffer, which a read high-water mark bounds.
 *
 * Timers: idle_ms while no request is in progress (keep-alive), header_read_ms from a request's first
 * byte to the end of its head. Nothing times out a call in progress: its deadline is grpc-timeout.
 *
 * A WebSocket upgrade for the grpc-websockets transport is checked here (handshake, route, origin) and,
 * once accepted, the connection is handed to the WebSocket adapter (src/ws/server.c) after the 101.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <llhttp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "portico/fault.h"
#include "portico/alloc.h"
#include "portico/buffer.h"
#include "portico/call.h"
#include "portico/codec.h"
#include "portico/conn.h"
#include "portico/cors.h"
#include "portico/h2.h"
#include "portico/http1.h"
#include "portico/log.h"
#include "portico/worker.h"
#include "portico/ws.h"

#define CLOSE_LINGER_MS 5000 /* how long a closing connection may take to flush its last response */
#define SHUT_LINGER_MS 2000  /* then, half-closed, how long it reads (and drops) what the client still sends */
#define DRAIN_FRESH_MS 1000  /* draining: how long a connection that has not sent a request yet may still send one */

typedef enum {
    CB_NONE,
    CB_URL,
    CB_FIELD,
    CB_VALUE,
} last_cb_t;

typedef struct st_ptc_h1conn_t ptc_h1conn_t;

struct st_ptc_h1conn_t {
    ptc_downstream_t super; /* the call's view of this connection */
    ptc_conn_t base;        /* the worker's view */
    ptc_worker_t *worker;
    struct bufferevent *bev;
    llhttp_t parser;
    struct event *timer;
    uint64_t deadline_ms; /* the current timeout (0: none); the timer may be armed earlier, see timer_set() */
    uint64_t timer_at_ms; /* when the armed timer fires (0: not armed) */
    struct event *resume_ev; /* deferred re-parse of buffered input */

    /* request head, accumulated across reads; capped at limits.max_header_size / max_headers. Bytes,
     * field offsets and views live in one worker block, held only while a request is in progress. */
    ptc_head_block_t headblk;
    size_t head_len;
    size_t url_off, url_len;
    size_t num_hdrs;
    last_cb_t last_cb;
    int head_error; /* HTTP status to answer when a callback stopped the parser (400, 414, 431, 505) */
    const char *head_error_msg;
    const char *exec_start; /* the buffer given to the current llhttp_execute() */
    char prev_last;         /* the last byte of the previous llhttp_execute() buffer */

    ptc_http_headers_param_t *hparam;  /* $httpHeaders of the current request (allocated on first use) */

    ptc_call_t *call;
    bool in_request;        /* between message begin and message complete */
    bool request_complete;  /* the current request's message is complete */
    bool response_active;   /* a response is being written (head sent, end not yet) */
    bool response_complete; /* the current exchange's response is complete */
    bool parser_paused;     /* waiting for the response before parsing the next request */
    bool keep_alive;
    bool http10;
    bool chunked;
    bool discard_body;      /* request body bytes are ignored (local answer, or the call ended) */
    size_t discarded;
    bool read_paused;       /* the call applied backpressure */
    bool closing;           /* close once the output is flushed */
    bool out_broken;        /* a write to the output failed (out of memory): reset from the loop, write nothing more */
    bool shut;              /* closing, output flushed and the write side shut: waiting for the client's FIN */
    bool close_after_response;
    bool in_message_complete;
    bool tls;
    bool write_blocked; /* direct writes: the socket is full, the bufferevent writes until the output is empty */
    bool flush_queued;  /* resume_ev is active with EV_WRITE: on_resume() flushes what is added until then */
    bool wm_stopped;    /* cleartext: reading stopped because the input reached the high watermark (read_bound()) */
    uint16_t stage_len; /* bytes in stage (at most STAGE_SIZE) */
    bool protocol_known; /* the first bytes were not the HTTP/2 preface */
    char ws_accept[PTC_WS_ACCEPT_LEN + 1]; /* a WebSocket upgrade was accepted: its Sec-WebSocket-Accept */
    unsigned exchanges;     /* requests begun on this connection */
    bool *freed;            /* set to true when the connection is freed (see h2o's generator_disposed) */
    char *stage;            /* cleartext: response bytes not yet in the output (see out_add()); NULL: none held */
    SSL *ssl;               /* TLS, while released: the connection's SSL, without a BIO (conn_release_idle()) */
};

static void conn_free(ptc_h1conn_t *conn, const char *reason);
static void parse_input(ptc_h1conn_t *conn);

static void timer_arm(ptc_h1conn_t *conn, uint64_t now, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(conn->timer, &tv);
    conn->timer_at_ms = now + ms;
}

/*
 * Sets the connection's one timeout, ms from now (0: none). A keep-alive connection moves it three
 * times per call (header read, call running, idle), nearly always later; so the timer is re-armed only
 * when the new deadline is earlier than the armed one, and on_timer() re-arms for the rest of a
 * deadline that moved. A busy connection touches libevent's timer heap about once per timeout instead
 * of three times per call.
 */
static void timer_set(ptc_h1conn_t *conn, uint64_t ms)
{
    if (ms == 0) {
        conn->deadline_ms = 0; /* an armed timer fires for nothing */
        return;
    }
    uint64_t now = ptc_now_coarse_ms();
    conn->deadline_ms = now + ms;
    if (conn->timer_at_ms == 0 || conn->deadline_ms < conn->timer_at_ms)
        timer_arm(conn, now, ms);
}

/* ---- writing ---- */

static struct evbuffer *output(ptc_h1conn_t *conn)
{
    return bufferevent_get_output(conn->bev);
}

/*
 * Cleartext connections write their output themselves, once per loop pass (resume_ev with EV_WRITE,
 * run after the callbacks that produced it), straight after the response is produced. Left to the
 * bufferevent, every response would cost two epoll_ctl calls (arm EV_WRITE, disarm it once empty)
 * and one more loop pass before the write. EV_WRITE is enabled only while the socket refuses bytes
 * (write_blocked). TLS connections leave writing to bufferevent_openssl.
 */
static void want_flush(ptc_h1conn_t *conn)
{
    if (!conn->tls && !conn->write_blocked && !conn->flush_queued) {
        conn->flush_queued = true; /* a response adds its head, body and end: one activation serves them all */
        event_active(conn->resume_ev, EV_WRITE, 0);
    }
}

/*
 * A write to the output failed (out of memory), so what follows it would not be the response the call
 * produced: nothing more is written, and the connection is reset from the loop (on_resume), where the
 * call is detached and its upstream stream cancelled. The client sees a cut-off response, never a
 * corrupt one.
 */
static void out_fail(ptc_h1conn_t *conn)
{
    if (conn->out_broken)
        return;
    conn->out_broken = true;
    ptc_log_warn("http1 %s: out of memory writing the response: resetting the connection", conn->base.peer);
    event_active(conn->resume_ev, EV_READ, 0);
}

/*
 * Cleartext responses are staged: a unary response (head, body chunk, trailer chunk, end) collects in one
 * STAGE_SIZE block, which flush_output() writes with one send() when the output is empty. Every evbuffer_add
 * to a bufferevent's output runs its callbacks, and writing from the evbuffer costs more again (~500
 * instructions a call). The staged bytes always come after what the output holds: whatever does not fit
 * (or a TLS connection, or one whose socket refuses bytes) moves them to the output first (stage_spill()).
 * The block is given back once written: idle connections hold none.
 */
#define STAGE_SIZE 2040 /* a size class of ptc_malloc()'s cache */

/* Room for n more staged bytes (false: write to the output instead). */
static bool stage_room(ptc_h1conn_t *conn, size_t n)
{
    if (conn->tls || conn->write_blocked || conn->stage_len + n > STAGE_SIZE)
        return false;
    return conn->stage != NULL || (conn->stage = ptc_malloc(STAGE_SIZE)) != NULL;
}

/* Moves the staged bytes to the end of the output. */
static void stage_spill(ptc_h1conn_t *conn)
{
    if (conn->stage_len == 0)
        return;
    if (!conn->out_broken && evbuffer_add(output(conn), conn->stage, conn->stage_len) != 0)
        out_fail(conn);
    conn->stage_len = 0;
}

static void stage_free(ptc_h1conn_t *conn)
{
    ptc_free(conn->stage);
    conn->stage = NULL;
    conn->stage_len = 0;
}

/* Writes the staged bytes: with one send() when the output is empty, else after it. 0, or -1 with errno. */
static int stage_send(ptc_h1conn_t *conn)
{
    if (evbuffer_get_length(output(conn)) == 0) {
        ssize_t n;
        do
            n = send(bufferevent_getfd(conn->bev), conn->stage, conn->stage_len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        size_t sent = n > 0 ? (size_t)n : 0;
        conn->stage_len = (uint16_t)(conn->stage_len - sent);
        memmove(conn->stage, conn->stage + sent, conn->stage_len);
    }
    stage_spill(conn); /* the rest: ptc_bev_write_now() tries it, then leaves it to the bufferevent */
    stage_free(conn);
    return 0;
}

static size_t out_pending(ptc_h1conn_t *conn)
{
    return evbuffer_get_length(output(conn)) + conn->stage_len;
}

static void out_add(ptc_h1conn_t *conn, const void *data, size_t len)
{
    if (conn->out_broken)
        return;
    if (stage_room(conn, len)) {
        memcpy(conn->stage + conn->stage_len, data, len);
        conn->stage_len = (uint16_t)(conn->stage_len + len);
    } else {
        stage_spill(conn);
        if (conn->out_broken || evbuffer_add(output(conn), data, len) != 0) {
            out_fail(conn);
            return;
        }
    }
    want_flush(conn);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/*
 * A response head is assembled in one buffer and added to the output once: every evbuffer_add to a
 * bufferevent's output runs its callbacks, and a head has a dozen pieces.
 */
typedef struct st_headbuf_t {
    char stack[2048];
    char *p;
    size_t len, cap;
    bool failed; /* out of memory: the head is dropped and the connection closes */
} headbuf_t;

static void hb_init(headbuf_t *hb)
{
    hb->p = hb->stack;
    hb->len = 0;
    hb->cap = sizeof(hb->stack);
    hb->failed = false;
}

static void hb_add(headbuf_t *hb, const char *s, size_t n)
{
    if (hb->failed)
        return;
    if (hb->len + n > hb->cap) {
        size_t cap = PTC_MAX(hb->cap * 2, hb->len + n);
        char *np = hb->p == hb->stack ? malloc(cap) : realloc(hb->p, cap);
        if (np == NULL) {
            hb->failed = true;
            return;
        }
        if (hb->p == hb->stack)
            memcpy(np, hb->stack, hb->len);
        hb->p = np;
        hb->cap = cap;
    }
    if (n != 0)
        memcpy(hb->p + hb->len, s, n);
    hb->len += n;
}

static void hb_header(headbuf_t *hb, ptc_iovec_t name, ptc_iovec_t value)
{
    size_t n = name.len + value.len + 4;
    if (!hb->failed && hb->len + n <= hb->cap) { /* the usual case: it fits, one check for the four pieces */
        char *p = hb->p + hb->len;
        memcpy(p, name.base, name.len);
        p += name.len;
        *p++ = ':';
        *p++ = ' ';
        if (value.len != 0)
            memcpy(p, value.base, value.len);
        p += value.len;
        *p++ = '\r';
        *p = '\n';
        hb->len += n;
        return;
    }
    hb_add(hb, name.base, name.len);
    hb_add(hb, ": ", 2);
    hb_add(hb, value.base, value.len);
    hb_add(hb, "\r\n", 2);
}

static void hb_status_line(ptc_h1conn_t *conn, headbuf_t *hb, int status)
{
    if (status == 200 && !conn->http10) { /* nearly every response */
        hb_add(hb, "HTTP/1.1 200 OK\r\n", 17);
        return;
    }
    char code[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10), (char)('0' + status % 10), ' '};
    const char *reason = reason_phrase(status);
    hb_add(hb, conn->http10 ? "HTTP/1.0 " : "HTTP/1.1 ", 9);
    hb_add(hb, code, 4);
    hb_add(hb, reason, strlen(reason));
    hb_add(hb, "\r\n", 2);
}

/* The CORS fields the exchange's decision calls for, given the fields already in the head. */
static void hb_cors(ptc_h1conn_t *conn, headbuf_t *hb, const ptc_header_t *sent, size_t nsent)
{
    ptc_header_t f[PTC_CORS_MAX_FIELDS];
    ptc_cors_scratch_t scratch;
    size_t n = ptc_downstream_cors_fields(&conn->super, sent, nsent, f, PTC_ARRAY_SIZE(f), &scratch);
    for (size_t i = 0; i < n; i++)
        hb_header(hb, f[i].name, f[i].value);
}

/* Ends the head with the connection decision and adds it to the output. */
static void hb_finish(ptc_h1conn_t *conn, headbuf_t *hb)
{
    if (!conn->keep_alive || conn->close_after_response || conn->worker->draining) {
        conn->close_after_response = true;
        hb_add(hb, "connection: close\r\n\r\n", 21);
    } else {
        hb_add(hb, "\r\n", 2);
    }
    if (!hb->failed)
        out_add(conn, hb->p, hb->len);
    else
        out_fail(conn);
    if (hb->p != hb->stack)
        free(hb->p);
}

/* Lower-case hex of v without a NUL; returns the length. */
static size_t hex(char *dst, size_t v)
{
    char tmp[2 * sizeof(size_t)];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* A complete local (non-gRPC) answer with a small text body. */
static void write_simple(ptc_h1conn_t *conn, int status, const ptc_header_t *extra, size_t nextra, const char *body)
{
    char len[24];
    size_t blen = body != NULL ? strlen(body) : 0;
    headbuf_t hb;

    hb_init(&hb);
    hb_status_line(conn, &hb, status);
    for (size_t i = 0; i < nextra; i++)
        hb_header(&hb, extra[i].name, extra[i].value);
    hb_cors(conn, &hb, extra, nextra);
    if (status != 204) {
        if (blen != 0)
            hb_header(&hb, PTC_STRLIT("content-type"), PTC_STRLIT("text/plain; charset=utf-8"));
        int n = snprintf(len, sizeof(len), "%zu", blen);
        hb_header(&hb, PTC_STRLIT("content-length"), ptc_iov(len, n > 0 ? (size_t)n : 0));
    }
    if (blen != 0 && llhttp_get_method(&conn->parser) != HTTP_HEAD) {
        /* the body goes out with the head */
        bool close = !conn->keep_alive || conn->close_after_response || conn->worker->draining;
        if (close) {
            conn->close_after_response = true;
            hb_add(&hb, "connection: close\r\n", 19);
        }
        hb_add(&hb, "\r\n", 2);
        hb_add(&hb, body, blen);
        if (!hb.failed)
            out_add(conn, hb.p, hb.len);
        if (hb.p != hb.stack)
            free(hb.p);
    } else {
        hb_finish(conn, &hb);
    }
    conn->response_complete = true;
}

/*
 * The last response is out: shut the write side and keep reading (dropping what comes) until the
 * client closes or SHUT_LINGER_MS pass. Closing at once with request bytes still unread (say the rest
 * of an upload refused as too large) makes the kernel answer with a RST, which can destroy the response
 * before the client has read it (RFC 9112 §9.6: a server closes in stages).
 */
static void shut_output(ptc_h1conn_t *conn)
{
    if (conn->shut)
        return;
    conn->shut = true;
    shutdown(bufferevent_getfd(conn->bev), SHUT_WR);
    bufferevent_enable(conn->bev, EV_READ); /* parse_input() drops input while closing */
    timer_set(conn, SHUT_LINGER_MS);
}

/* Closes after the output is flushed (bounded by CLOSE_LINGER_MS), in stages (shut_output()). */
static void start_closing(ptc_h1conn_t *conn)
{
    if (conn->closing)
        return;
    conn->closing = true;
    bufferevent_disable(conn->bev, EV_READ);
    bufferevent_setwatermark(conn->bev, EV_WRITE, 0, 0);
    timer_set(conn, CLOSE_LINGER_MS);
    if (out_pending(conn) == 0)
        event_active(conn->resume_ev, EV_TIMEOUT, 0);
    else
        want_flush(conn);
}

/* Answers an HTTP-level error and closes the connection. */
static void fail_http(ptc_h1conn_t *conn, int status, const char *fmt, ...) PTC_PRINTF(3, 4);
static void fail_http(ptc_h1conn_t *conn, int status, const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    n = PTC_MIN(n, (int)sizeof(body) - 2);
    ptc_log_info("http1 %s: %d %s: %s", conn->base.peer, status, reason_phrase(status), body);
    body[n] = '\n';
    body[n + 1] = '\0';
    conn->close_after_response = true;
    if (!conn->response_active)
        write_simple(conn, status, NULL, 0, body);
    start_closing(conn);
}

/* ---- the call's view (ptc_downstream_cb_t) ---- */

static void ds_send_head(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, bool end_stream)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    headbuf_t hb;

    hb_init(&hb);
    hb_status_line(conn, &hb, status);
    for (size_t i = 0; i < n; i++)
        hb_header(&hb, headers[i].name, headers[i].value);
    hb_cors(conn, &hb, headers, n);
    bool sized = false; /* the call knows the body's length (a Connect unary response): no chunked coding */
    for (size_t i = 0; i < n && !sized; i++)
        sized = ptc_iov_eq(headers[i].name, PTC_STRLIT("content-length"));
    if (end_stream) {
        if (!sized)
            hb_header(&hb, PTC_STRLIT("content-length"), PTC_STRLIT("0"));
    } else if (sized) {
        conn->chunked = false;
    } else if (conn->http10) {
        conn->close_after_response = true; /* HTTP/1.0 has no chunked coding: the body ends at close */
    } else {
        conn->chunked = true;
        hb_header(&hb, PTC_STRLIT("transfer-encoding"), PTC_STRLIT("chunked"));
    }
    hb_finish(conn, &hb);
    conn->response_active = !end_stream;
}

/* A body piece's chunk size line in line (chunked coding), or nothing: its length. */
static size_t chunk_line(const ptc_h1conn_t *conn, char *line, size_t len)
{
    if (!conn->chunked)
        return 0;
    size_t n = hex(line, len);
    line[n++] = '\r';
    line[n++] = '\n';
    return n;
}

/* Stages a body piece (with its chunk's size line and CRLF), from buf or else from data; false when it does not fit. */
static bool stage_body(ptc_h1conn_t *conn, struct evbuffer *buf, const uint8_t *data, size_t len)
{
    char line[2 * sizeof(size_t) + 2];
    size_t n = chunk_line(conn, line, len);
    if (!stage_room(conn, n + len + (conn->chunked ? 2 : 0)))
        return false;
    char *p = conn->stage + conn->stage_len;
    memcpy(p, line, n);
    if (buf == NULL) {
        memcpy(p + n, data, len);
    } else if (evbuffer_remove(buf, p + n, len) != (int)len) {
        out_fail(conn);
        return true;
    }
    conn->stage_len = (uint16_t)(conn->stage_len + n + len);
    if (conn->chunked) {
        memcpy(p + n + len, "\r\n", 2);
        conn->stage_len = (uint16_t)(conn->stage_len + 2);
    }
    return true;
}

/* Chunked coding: size line, data and CRLF go to the output together. */
static void ds_send_body(ptc_downstream_t *ds, struct evbuffer *buf)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    size_t len = evbuffer_get_length(buf);
    if (len == 0)
        return;
    int rc;
    if (!conn->out_broken && !stage_body(conn, buf, NULL, len))
        stage_spill(conn); /* a bigger piece goes to the output, after what was staged */
    if (conn->out_broken) {
        rc = -1;
    } else if (evbuffer_get_length(buf) == 0) {
        rc = 0; /* staged */
    } else if (!conn->chunked) {
        rc = evbuffer_add_buffer(output(conn), buf);
    } else {
        char line[2 * sizeof(size_t) + 2];
        size_t n = chunk_line(conn, line, len);
        rc = ptc_evbuffer_add_framed(output(conn), line, n, buf, len, "\r\n", 2);
    }
    if (rc != 0) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        out_fail(conn);
        return;
    }
    want_flush(conn);
}

/* The same from memory: staged, or else added to the output with its chunk framing. */
static void ds_send_bytes(ptc_downstream_t *ds, const uint8_t *data, size_t len)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    if (len == 0 || conn->out_broken)
        return;
    if (!stage_body(conn, NULL, data, len)) {
        char line[2 * sizeof(size_t) + 2];
        size_t n = chunk_line(conn, line, len);
        stage_spill(conn);
        struct evbuffer *out = output(conn);
        if (!conn->out_broken && ((n != 0 && evbuffer_add(out, line, n) != 0) || evbuffer_add(out, data, len) != 0 ||
                                  (conn->chunked && evbuffer_add(out, "\r\n", 2) != 0)))
            out_fail(conn);
    }
    want_flush(conn);
}

static void ds_send_end(ptc_downstream_t *ds)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    if (conn->chunked)
        out_add(conn, "0\r\n\r\n", 5);
    conn->chunked = false;
    conn->response_active = false;
}

static size_t ds_pending(ptc_downstream_t *ds)
{
    return out_pending((ptc_h1conn_t *)ds);
}

static void ds_pause_read(ptc_downstream_t *ds, bool pause)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    conn->read_paused = pause;
    if (pause) {
        bufferevent_disable(conn->bev, EV_READ);
    } else if (!conn->closing) {
        bufferevent_enable(conn->bev, EV_READ);
        event_active(conn->resume_ev, EV_READ, 0); /* bytes may be waiting in the input buffer */
    }
}

/* The exchange is over when both the request and the response are complete. */
static void exchange_done(ptc_h1conn_t *conn)
{
    if (conn->close_after_response || conn->worker->draining) {
        start_closing(conn);
        return;
    }
    conn->in_request = false;
    conn->request_complete = false;
    conn->response_complete = false;
    conn->discard_body = false;
    /* idle keep-alive connections hold no head memory (and nothing may point into it) */
    conn->super.cors = (ptc_cors_decision_t){PTC_CORS_NONE, NULL, {"", 0}};
    ptc_worker_head_block_release(conn->worker, &conn->headblk);
    ptc_conn_refresh(&conn->base); /* an idle connection does not hold on to an old configuration */
    conn->discarded = 0;
    conn->chunked = false;
    timer_set(conn, conn->base.snap->config.timeouts.idle_ms);
    ptc_conn_idle(&conn->base); /* its bufferevent goes after a second of silence (conn_release_idle()) */
    if (conn->parser_paused) {
        conn->parser_paused = false;
        llhttp_resume(&conn->parser);
        event_active(conn->resume_ev, EV_READ, 0);
    }
}

static void ds_on_call_done(ptc_downstream_t *ds)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    conn->call = NULL;
    conn->response_complete = true;
    conn->response_active = false;
    if (conn->read_paused)
        ds_pause_read(ds, false);
    if (conn->request_complete && !conn->in_message_complete)
        exchange_done(conn);
    else
        conn->discard_body = true; /* the rest of the request body has nowhere to go */
}

static void ds_respond(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, const char *body)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    conn->discard_body = true;
    write_simple(conn, status, headers, n, body);
}

static void ds_send_trailers(ptc_downstream_t *ds, const ptc_header_t *trailers, size_t n)
{
    /* HTTP/1.1 downstreams only carry gRPC-Web, whose trailers are in the body */
    (void)trailers;
    (void)n;
    ds_send_end(ds);
}

static void ds_abort(ptc_downstream_t *ds)
{
    ptc_h1conn_t *conn = (ptc_h1conn_t *)ds;
    conn->call = NULL;
    conn->response_active = false;
    conn->close_after_response = true;
    start_closing(conn); /* what was queued is flushed; the terminating chunk never is */
}

static const ptc_downstream_cb_t ds_callbacks = {
    .send_head = ds_send_head,
    .send_body = ds_send_body,
    .send_bytes = ds_send_bytes,
    .send_end = ds_send_end,
    .pending = ds_pending,
    .pause_read = ds_pause_read,
    .on_call_done = ds_on_call_done,
    .abort = ds_abort,
    .send_trailers = ds_send_trailers,
    .respond = ds_respond,
};

/* ---- request dispatch ---- */

static const ptc_header_t *find(ptc_h1conn_t *conn, ptc_iovec_t name)
{
    for (size_t i = 0; i < conn->num_hdrs; i++)
        if (ptc_iov_eq(conn->headblk.views[i].name, name))
            return &conn->headblk.views[i];
    return NULL;
}

static void request_of(ptc_h1conn_t *conn, ptc_request_t *req)
{
    const char *mname = llhttp_method_name(llhttp_get_method(&conn->parser));
    const ptc_header_t *host = find(conn, PTC_STRLIT("host"));
    *req = (ptc_request_t){
        .method = ptc_iov(mname, strlen(mname)),
        .path = ptc_iov(conn->headblk.head + conn->url_off, conn->url_len),
        .scheme = conn->tls ? PTC_STRLIT("https") : PTC_STRLIT("http"),
        .authority = host != NULL ? host->value : ptc_iov("", 0),
        .headers = conn->headblk.views,
        .num_headers = conn->num_hdrs,
        .peer = conn->base.peer,
        .snap = conn->base.snap,
        .allow_native = false,
        .transport = PTC_TRANSPORT_HTTP1,
    };
}

/* Refuses a WebSocket upgrade with an HTTP answer (the connection closes after it). */
static void ws_refuse(ptc_h1conn_t *conn, int status, const ptc_header_t *extra, size_t nextra, const char *why)
{
    char body[340];
    snprintf(body, sizeof(body), "WebSocket upgrade refused: %s\n", why);
    conn->close_after_response = true;
    write_simple(conn, status, extra, nextra, body);
}

/*
 * A request with `Upgrade: websocket` (RFC 6455 §4.2.1). Accepted (ws_accept set; parse_input() hands the
 * connection over) when it is a well-formed handshake naming the grpc-websockets subprotocol, on a routed
 * path, from an origin the route's CORS policy allows: a WebSocket gets no preflight, so this is the only
 * defence against cross-site WebSocket hijacking. Anything else is answered here.
 */
static void ws_upgrade(ptc_h1conn_t *conn, const ptc_request_t *req)
{
    const ptc_header_t *connection = find(conn, PTC_STRLIT("connection")), *key = find(conn, PTC_STRLIT("sec-websocket-key"));
    static const ptc_header_t v13 = {PTC_STRLIT("sec-websocket-version"), PTC_STRLIT("13")};
    char why[300];

    if (!ptc_iov_eq(req->method, PTC_STRLIT("GET")) || conn->http10 || connection == NULL ||
        !ptc_iov_list_contains_ci(connection->value, PTC_STRLIT("upgrade"))) {
        PTC_STAT_INC(conn->worker->filter_stats.websocket_refused);
        ws_refuse(conn, 400, NULL, 0, "a WebSocket handshake is an HTTP/1.1 GET with 'Connection: Upgrade'");
        return;
    }
    int status = ptc_ws_check(conn->worker, req, why, sizeof(why));
    if (status == 0 && (key == NULL || ptc_ws_accept_key(key->value, conn->ws_accept) != 0)) {
        status = 400;
        snprintf(why, sizeof(why), "Sec-WebSocket-Key is not the base64 of 16 bytes");
        PTC_STAT_INC(conn->worker->filter_stats.websocket_refused);
    }
    if (status != 0) {
        conn->ws_accept[0] = '\0';
        ws_refuse(conn, status, status == 426 ? &v13 : NULL, status == 426 ? 1 : 0, why);
        return;
    }
    conn->ws_accept[PTC_WS_ACCEPT_LEN] = '\0';
}

/* The upgrade was accepted and its head consumed: the 101, then the WebSocket adapter takes the connection. */
static void ws_handoff(ptc_h1conn_t *conn)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                     "sec-websocket-accept: %s\r\nsec-websocket-protocol: " PTC_WS_SUBPROTOCOL "\r\n\r\n",
                     conn->ws_accept);
    ptc_request_t req;
    request_of(conn, &req);
    stage_spill(conn);
    if (conn->out_broken || evbuffer_add(output(conn), head, (size_t)n) != 0) {
        conn_free(conn, "out of memory answering the WebSocket upgrade");
        return;
    }
    PTC_STAT_INC(conn->worker->filter_stats.websocket_upgrades);
    struct bufferevent *bev = conn->bev;
    conn->bev = NULL;
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    ptc_ws_start(conn->worker, bev, &req, conn->base.listener, conn->tls);
    conn_free(conn, "upgraded to WebSocket");
}

/* Decides what to do with a complete request head. Returns 0, or -1 when the connection was failed. */
static int on_head(ptc_h1conn_t *conn)
{
    const ptc_header_t *h;
    ptc_request_t req;

    for (size_t i = 0; i < conn->num_hdrs; i++)
        conn->headblk.views[i] = (ptc_header_t){ptc_iov(conn->headblk.head + conn->headblk.offs[i].name, conn->headblk.offs[i].name_len),
                                            ptc_iov(conn->headblk.head + conn->headblk.offs[i].value, conn->headblk.offs[i].value_len)};
    if (llhttp_get_http_major(&conn->parser) != 1) {
        /* a request line without a version (HTTP/0.9) */
        conn->head_error = 400;
        conn->head_error_msg = "request line without HTTP/1.x version";
        return -1;
    }
    conn->http10 = llhttp_get_http_minor(&conn->parser) == 0;
    conn->keep_alive = llhttp_should_keep_alive(&conn->parser) != 0;
    timer_set(conn, 0);
    request_of(conn, &req);

    if ((h = find(conn, PTC_STRLIT("upgrade"))) != NULL && ptc_iov_list_contains_ci(h->value, PTC_STRLIT("websocket"))) {
        ws_upgrade(conn, &req);
        return 0;
    }
    if ((h = find(conn, PTC_STRLIT("expect"))) != NULL) {
        if (!ptc_iov_eq_ci(ptc_iov_trim(h->value), PTC_STRLIT("100-continue"))) {
            conn->discard_body = true;
            conn->close_after_response = true;
            write_simple(conn, 417, NULL, 0, "only 'Expect: 100-continue' is supported\n");
            return 0;
        }
        /* a final answer may still follow at once (RFC 9110 §10.1.1); the body is then discarded */
        out_add(conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    ptc_request_handle(conn->worker, &conn->super, &req, &conn->hparam, &conn->call);
    return 0;
}

/* ---- llhttp callbacks ---- */

static ptc_h1conn_t *conn_of(llhttp_t *p)
{
    return p->data;
}

static int head_append(ptc_h1conn_t *conn, const char *at, size_t len, bool lower)
{
    size_t cap = conn->base.snap->config.limits.max_header_size;
    if (conn->head_len + len > cap) {
        conn->head_error = conn->last_cb == CB_URL ? 414 : 431;
        conn->head_error_msg = conn->last_cb == CB_URL ? "request URI too long (limits.max_header_size)"
                                                       : "request header fields too large (limits.max_header_size)";
        return HPE_USER;
    }
    if (lower)
        ptc_lower_copy(conn->headblk.head + conn->head_len, at, len);
    else
        memcpy(conn->headblk.head + conn->head_len, at, len);
    conn->head_len += len;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    ptc_h1conn_t *conn = conn_of(p);
    /* a new exchange: it runs under the newest configuration (nothing points into the old one now) */
    if (conn->headblk.mem == NULL)
        ptc_conn_refresh(&conn->base);
    if (conn->headblk.mem == NULL && ptc_worker_head_block(conn->worker, conn->base.snap, &conn->headblk) != 0) {
        conn->head_error = 503;
        conn->head_error_msg = "gateway out of memory";
        return HPE_USER;
    }
    conn->in_request = true;
    conn->exchanges++;
    conn->request_complete = false;
    conn->response_complete = false;
    conn->head_len = 0;
    conn->url_off = conn->url_len = 0;
    conn->num_hdrs = 0;
    conn->last_cb = CB_NONE;
    conn->head_error = 0;
    conn->head_error_msg = NULL;
    conn->super.cors = (ptc_cors_decision_t){PTC_CORS_NONE, NULL, {"", 0}};
    timer_set(conn, conn->base.snap->config.timeouts.header_read_ms);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    ptc_h1conn_t *conn = conn_of(p);
    if (conn->last_cb != CB_URL) {
        conn->last_cb = CB_URL;
        conn->url_off = conn->head_len;
    }
    conn->url_len += len;
    return head_append(conn, at, len, false);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    ptc_h1conn_t *conn = conn_of(p);
    if (conn->last_cb != CB_FIELD) {
        if (conn->num_hdrs == conn->base.snap->config.limits.max_headers) {
            conn->head_error = 431;
            conn->head_error_msg = "too many request header fields (limits.max_headers)";
            return HPE_USER;
        }
        conn->last_cb = CB_FIELD;
        conn->headblk.offs[conn->num_hdrs++] = (ptc_head_off_t){(uint32_t)conn->head_len, 0, 0, 0};
    }
    conn->headblk.offs[conn->num_hdrs - 1].name_len += (uint32_t)len;
    return head_append(conn, at, len, true); /* names in lower case from here on */
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    ptc_h1conn_t *conn = conn_of(p);
    ptc_head_off_t *h = &conn->headblk.offs[conn->num_hdrs - 1];
    /* llhttp 8 accepts obs-fold (a value continued on a line starting with SP/HT) even in strict mode;
     * RFC 9112 §5.2 lets a server reject it, and a proxy must not forward it. A value piece that
     * starts right after a line feed is such a continuation. */
    char prev = at > conn->exec_start ? at[-1] : conn->prev_last;
    if (len != 0 && prev == '\n') { /* an empty value is reported as a 0-length piece at the next line */
        conn->head_error = 400;
        conn->head_error_msg = "obsolete line folding (obs-fold) in a header field";
        return HPE_USER;
    }
    if (conn->last_cb != CB_VALUE) {
        conn->last_cb = CB_VALUE;
        h->value = (uint32_t)conn->head_len;
    }
    h->value_len += (uint32_t)len;
    return head_append(conn, at, len, false);
}

static int on_headers_complete(llhttp_t *p)
{
    ptc_h1conn_t *conn = conn_of(p);
    bool freed = false;
    /* llhttp stops after a message with Upgrade; h2c is not offered: such a request is answered as plain
     * HTTP/1.1 and the connection parsed on. An accepted WebSocket upgrade pauses the parser right after the
     * head instead: parse_input() hands the connection over. */
    p->upgrade = 0;
    conn->freed = &freed;
    int rv = on_head(conn);
    if (freed)
        return HPE_USER;
    conn->freed = NULL;
    if (rv == 0 && conn->ws_accept[0] != '\0')
        return HPE_PAUSED;
    return rv == 0 ? 0 : HPE_USER;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    ptc_h1conn_t *conn = conn_of(p);
    if (conn->call != NULL) {
        ptc_call_on_request_body(conn->call, at, len);
        return 0;
    }
    /* discarding: a body after a local answer or an ended call; bounded so it cannot run forever */
    conn->discarded += len;
    if (conn->discarded > (size_t)conn->base.snap->config.limits.max_message_size + 1024) {
        conn->close_after_response = true;
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    ptc_h1conn_t *conn = conn_of(p);
    bool freed = false;

    conn->request_complete = true;
    conn->in_request = false;
    if (conn->call != NULL) {
        conn->freed = &freed;
        conn->in_message_complete = true;
        ptc_call_on_request_end(conn->call);
        if (freed)
            return HPE_USER;
        conn->in_message_complete = false;
        conn->freed = NULL;
    }
    if (conn->response_complete && !conn->closing) {
        exchange_done(conn);
        if (conn->closing)
            return HPE_PAUSED;
        return 0;
    }
    /* the response is still coming: the next request waits (pipelining, answered in order) */
    conn->parser_paused = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- input ---- */

static void parse_error(ptc_h1conn_t *conn, llhttp_errno_t err)
{
    if (conn->head_error != 0) {
        if (conn->head_error == 431 || conn->head_error == 414)
            PTC_STAT_INC(conn->worker->limit_stats.headers_too_large);
        fail_http(conn, conn->head_error, "%s", conn->head_error_msg);
        return;
    }
    if (err == HPE_USER && conn->close_after_response && conn->discard_body) {
        /* an unread body grew past the limit */
        ptc_log_info("http1 %s: closing: discarded request body exceeds the limit", conn->base.peer);
        start_closing(conn);
        return;
    }
    if (conn->response_complete) {
        /* this request was answered already (a local answer while its body came in): a second answer would
         * be read as the answer to a request never sent; the first is flushed and the connection closes */
        ptc_log_info("http1 %s: malformed request body after its answer (%s: %s); closing", conn->base.peer, llhttp_errno_name(err),
                     llhttp_get_error_reason(&conn->parser));
        start_closing(conn);
        return;
    }
    if (conn->response_active) {
        /* the response is under way: nothing well-formed can follow, only closing is left */
        ptc_log_info("http1 %s: malformed request body (%s: %s); closing", conn->base.peer, llhttp_errno_name(err),
                     llhttp_get_error_reason(&conn->parser));
        conn_free(conn, "malformed request");
        return;
    }
    if (conn->call != NULL) {
        /* no response byte went out yet: the call is cancelled and the client gets a 400 */
        ptc_call_t *call = conn->call;
        conn->call = NULL;
        ptc_call_detach_downstream(call, "malformed request body");
    }
    const char *reason = llhttp_get_error_reason(&conn->parser);
    bool bad_version = err == HPE_INVALID_VERSION && reason != NULL && strcmp(reason, "Invalid HTTP version") == 0;
    fail_http(conn, bad_version ? 505 : 400, "malformed HTTP/1.1 request: %s (%s)", reason, llhttp_errno_name(err));
}

/*
 * Cleartext HTTP/2 with prior knowledge (RFC 9113 §3.3): a connection that opens with the HTTP/2
 * preface is handed to the HTTP/2 adapter. Returns true when the connection is gone or more bytes
 * are needed to decide.
 */
static bool switch_to_h2(ptc_h1conn_t *conn, struct evbuffer *in)
{
    char buf[PTC_H2_PREFACE_LEN];
    size_t n = PTC_MIN(evbuffer_get_length(in), (size_t)PTC_H2_PREFACE_LEN);

    evbuffer_copyout(in, buf, n);
    if (memcmp(buf, PTC_H2_PREFACE, n) != 0) {
        conn->protocol_known = true;
        return false;
    }
    if (n < PTC_H2_PREFACE_LEN)
        return true;
    struct bufferevent *bev = conn->bev;
    char peer[sizeof(conn->base.peer)];
    memcpy(peer, conn->base.peer, sizeof(peer));
    conn->bev = NULL;
    if (!conn->tls) { /* the HTTP/2 adapter reads under libevent's watermark (see bev_setup()) */
        ptc_fault_hold(true);
        bufferevent_setwatermark(bev, EV_READ, 0, bev->wm_read.high);
        ptc_fault_hold(false);
    }
    ptc_h2conn_start(conn->worker, bev, peer, conn->base.listener, conn->tls);
    conn_free(conn, "switched to HTTP/2");
    return true;
}

/*
 * Cleartext: input that waits (a pipelined request while the one before it is answered) stops reading at the
 * high watermark, and reading resumes once parsing took it below (see bev_setup()).
 */
static void read_bound(ptc_h1conn_t *conn, struct evbuffer *in)
{
    if (evbuffer_get_length(in) >= conn->bev->wm_read.high) {
        conn->wm_stopped = true;
        bufferevent_disable(conn->bev, EV_READ);
    } else if (conn->wm_stopped) {
        conn->wm_stopped = false;
        if (!conn->read_paused && !conn->closing)
            bufferevent_enable(conn->bev, EV_READ);
    }
}

static void parse_input(ptc_h1conn_t *conn)
{
    struct evbuffer *in = bufferevent_get_input(conn->bev);
    bool freed = false;

    if (conn->closing) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (!conn->protocol_known && switch_to_h2(conn, in))
        return;
    while (!conn->parser_paused && !conn->read_paused && !conn->closing && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        conn->freed = &freed;
        conn->exec_start = v.iov_base;
        llhttp_errno_t err = llhttp_execute(&conn->parser, v.iov_base, v.iov_len);
        if (freed)
            return;
        conn->freed = NULL;
        size_t consumed = v.iov_len;
        if (err == HPE_PAUSED) {
            consumed = (size_t)(llhttp_get_error_pos(&conn->parser) - (const char *)v.iov_base);
        } else if (err != HPE_OK) {
            parse_error(conn, err);
            return;
        }
        if (consumed != 0)
            conn->prev_last = ((const char *)v.iov_base)[consumed - 1];
        evbuffer_drain(in, consumed);
        if (conn->ws_accept[0] != '\0') {
            ws_handoff(conn);
            return;
        }
        if (conn->discard_body && conn->in_request)
            timer_set(conn, conn->base.snap->config.timeouts.header_read_ms);
    }
    if (!conn->tls)
        read_bound(conn, in);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    parse_input(arg);
}

/* Direct write (see want_flush()). Returns false when the connection was freed. */
static bool flush_output(ptc_h1conn_t *conn)
{
    if ((conn->stage_len != 0 && stage_send(conn) != 0) || ptc_bev_write_now(conn->bev, &conn->write_blocked) != 0) {
        conn_free(conn, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return false;
    }
    if (conn->write_blocked)
        return true; /* the bufferevent writes the rest; on_write() hands back */
    /* what on_write() would do once the output is empty */
    if (conn->closing) {
        shut_output(conn);
        return true;
    }
    if (conn->call != NULL)
        ptc_call_on_downstream_writable(conn->call);
    return true;
}

static void on_write(struct bufferevent *bev, void *arg)
{
    ptc_h1conn_t *conn = arg;
    if (!conn->tls)
        ptc_bev_write_drained(bev, &conn->write_blocked); /* back to direct writes once empty */
    if (conn->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            shut_output(conn);
        return;
    }
    if (conn->call != NULL)
        ptc_call_on_downstream_writable(conn->call);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    (void)bev;
    ptc_h1conn_t *conn = arg;
    if (events & BEV_EVENT_EOF)
        conn_free(conn, "client closed the connection");
    else if (events & BEV_EVENT_ERROR)
        conn_free(conn, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/*
 * TLS: an idle connection that the gateway closes (idle timeout, drain) says so with a close_notify first (RFC
 * 8446 §6.1); nothing waits in its output. A released one gets a socket BIO for it, taken away again before
 * SSL_free(): the freed bufferevent_openssl's destructor may still look for one (conn_release_idle()).
 */
static void close_notify(ptc_h1conn_t *conn)
{
    if (!conn->tls || (conn->bev != NULL && out_pending(conn) != 0))
        return;
    if (conn->bev != NULL) {
        SSL_shutdown(bufferevent_openssl_get_ssl(conn->bev));
    } else {
        BIO *bio = conn->ssl != NULL ? BIO_new_socket(event_get_fd(conn->resume_ev), BIO_NOCLOSE) : NULL;
        if (bio == NULL)
            return;
        SSL_set_bio(conn->ssl, bio, bio);
        SSL_shutdown(conn->ssl);
        SSL_set_bio(conn->ssl, NULL, NULL);
    }
    ERR_clear_error(); /* a client gone already (EPIPE): not for the next connection's error report to find */
}

static void on_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_h1conn_t *conn = arg;
    conn->timer_at_ms = 0;
    if (conn->deadline_ms == 0)
        return;
    uint64_t now = ptc_now_coarse_ms();
    if (now < conn->deadline_ms) { /* moved later since the timer was armed */
        timer_arm(conn, now, conn->deadline_ms - now);
        return;
    }
    conn->deadline_ms = 0;
    if (conn->closing) {
        conn_free(conn, conn->shut ? "closed after response" : "client did not read the last response");
    } else if (conn->in_request && conn->call == NULL && !conn->response_complete) {
        fail_http(conn, 408, "request head not received within %" PRIu64 " ms (timeouts.header_read)",
                  conn->base.snap->config.timeouts.header_read_ms);
    } else if (conn->in_request) {
        ptc_log_info("http1 %s: closing: request body stalled", conn->base.peer);
        conn_free(conn, "request body stalled");
    } else if (conn->call == NULL) {
        ptc_log_debug("http1 %s: idle keep-alive connection timed out", conn->base.peer);
        close_notify(conn);
        conn_free(conn, "idle timeout");
    }
}

static void on_resume(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    ptc_h1conn_t *conn = arg;
    if ((events & EV_WRITE) != 0)
        conn->flush_queued = false;
    if (conn->out_broken) {
        conn_free(conn, "out of memory writing the response");
        return;
    }
    if ((events & EV_WRITE) != 0 && !conn->tls && !conn->write_blocked && !flush_output(conn))
        return;
    if ((events & (EV_READ | EV_TIMEOUT)) == 0)
        return;
    if (conn->closing) {
        if (out_pending(conn) == 0)
            shut_output(conn);
        return;
    }
    parse_input(conn);
}

/* ---- lifecycle ---- */

static void conn_free(ptc_h1conn_t *conn, const char *reason)
{
    if (conn->freed != NULL)
        *conn->freed = true;
    if (conn->call != NULL) {
        ptc_call_t *call = conn->call;
        conn->call = NULL;
        ptc_call_detach_downstream(call, reason);
    }
    ptc_log_debug("http1 %s: connection closed: %s", conn->base.peer, reason);
    evutil_socket_t idle_fd = event_get_fd(conn->resume_ev); /* >= 0 while released (conn_release_idle()) */
    if (conn->bev != NULL)
        bufferevent_free(conn->bev);
    event_free(conn->timer);
    event_free(conn->resume_ev);
    SSL_free(conn->ssl); /* released TLS: the SSL is ours */
    if (conn->bev == NULL && idle_fd >= 0)
        evutil_closesocket(idle_fd);
    ptc_worker_head_block_release(conn->worker, &conn->headblk);
    free(conn->hparam);
    stage_free(conn);
    ptc_conn_unregister(&conn->base);
    free(conn);
}

static void conn_drain(ptc_conn_t *c);
static void conn_fail_calls(ptc_conn_t *c, const char *message);
static void conn_close(ptc_conn_t *c);
static void conn_release_idle(ptc_conn_t *c);
static ptc_h1conn_t *from_base(ptc_conn_t *c);

static const ptc_conn_cb_t conn_callbacks = {
    .drain = conn_drain,
    .fail_calls = conn_fail_calls,
    .close = conn_close,
    .release_idle = conn_release_idle,
};

/* Callbacks, limits and events of conn->bev (a new connection's, or one made again by conn_wake()). */
static int bev_setup(ptc_h1conn_t *conn)
{
    const ptc_limits_config_t *lim = &conn->base.snap->config.limits;

    size_t high = (size_t)lim->max_header_size + 64 * 1024;

    bufferevent_setcb(conn->bev, on_read, on_write, on_event, conn);
    /* pipelined input waiting for its turn is bounded: reading stops above this. Cleartext: the direct reads
     * (ptc_bev_read_direct()) never read past the high watermark, and read_bound() stops and resumes reading;
     * libevent's watermark callback would run on every read and every drain of the input (~400 instructions a
     * call). TLS: libevent's watermark (2.1.12 does not check the allocation of the callback it needs and then
     * dereferences NULL: not injected). */
    conn->wm_stopped = false;
    if (conn->tls) {
        ptc_fault_hold(true);
        bufferevent_setwatermark(conn->bev, EV_READ, 0, high);
        ptc_fault_hold(false);
    } else {
        conn->bev->wm_read.low = 0;
        conn->bev->wm_read.high = high;
    }
    bufferevent_setwatermark(conn->bev, EV_WRITE, lim->call_buffer_size / 2, 0);
    if (!conn->tls)
        bufferevent_disable(conn->bev, EV_WRITE); /* enabled by default in a new bufferevent; see want_flush() */
    /* the first events on a new descriptor number allocate (libevent's evmap): without them the connection
     * would never be read and hang until the client gives up */
    return bufferevent_enable(conn->bev, conn->tls ? EV_READ | EV_WRITE : EV_READ);
}

/*
 * An idle connection gives back its bufferevent (two evbuffers, two events, callbacks: about 1 KB; over TLS
 * also bufferevent_openssl's state and the empty ~14 KiB input chain it reserved for its last SSL_read) after
 * PTC_CONN_IDLE_RELEASE_MS of silence. resume_ev, unused while idle, watches the socket (conn->bev == NULL, the
 * socket is resume_ev's); its first readable event makes the bufferevent again. The socket keeps a read event
 * in epoll throughout (the new one is added before the old one is deleted), so neither step costs an epoll_ctl.
 *
 * TLS: the SSL stays (session, keys, sequence numbers; OpenSSL gave its record buffers back already:
 * SSL_MODE_RELEASE_BUFFERS, tls.c). conn->ssl holds a reference of ours, and the SSL loses its socket BIO, so
 * that the freed bufferevent_openssl (BEV_OPT_CLOSE_ON_FREE: its destructor closes the socket that the SSL's
 * BIO names, and drops its reference to the SSL) closes nothing. libevent runs that destructor later in the
 * same loop pass (a bufferevent's finalizer is a deferred callback), so the SSL must not get a BIO on the
 * socket again before then: a released TLS connection wakes only for its socket's readiness, which the next
 * loop pass reports, and anything else that would wake it closes it instead (conn_fail_calls(): it is idle).
 * A connection is not released while OpenSSL holds bytes (SSL_has_pending(): plaintext, or part of a record;
 * epoll would not report them) or has a record to write. Waking makes a bufferevent_openssl in
 * BUFFEREVENT_SSL_OPEN state around the same SSL (with a new socket BIO); whatever the client sent meanwhile (a
 * request, a close_notify, a TLS 1.3 KeyUpdate) is read by it as usual.
 */
static void on_idle_readable(evutil_socket_t fd, short events, void *arg);

static void conn_release_idle(ptc_conn_t *c)
{
    ptc_h1conn_t *conn = from_base(c);
    if (conn->bev == NULL || conn->in_request || conn->call != NULL || conn->response_active || conn->closing ||
        conn->close_after_response || conn->read_paused || conn->write_blocked || conn->out_broken ||
        evbuffer_get_length(bufferevent_get_input(conn->bev)) != 0 || out_pending(conn) != 0 ||
        event_pending(conn->resume_ev, EV_READ | EV_WRITE | EV_TIMEOUT, NULL) != 0)
        return;
    SSL *ssl = conn->tls ? bufferevent_openssl_get_ssl(conn->bev) : NULL;
    if (ssl != NULL && (SSL_has_pending(ssl) || SSL_want_write(ssl))) {
        ptc_conn_idle(c); /* OpenSSL holds bytes (read, or to write): try again later */
        return;
    }
    evutil_socket_t fd = bufferevent_getfd(conn->bev);
    event_assign(conn->resume_ev, conn->worker->base, fd, EV_READ | EV_PERSIST, on_idle_readable, conn);
    if (event_add(conn->resume_ev, NULL) != 0 || (ssl != NULL && SSL_up_ref(ssl) != 1)) {
        event_del(conn->resume_ev);
        event_assign(conn->resume_ev, conn->worker->base, -1, 0, on_resume, conn);
        return;
    }
    if (ssl != NULL) {
        SSL_set_bio(ssl, NULL, NULL); /* frees the socket BIO, which does not close the socket */
        conn->ssl = ssl;
    } else {
        bufferevent_setfd(conn->bev, -1); /* the socket stays open */
    }
    bufferevent_free(conn->bev);
    conn->bev = NULL;
    free(conn->hparam); /* made again on first use */
    conn->hparam = NULL;
    ptc_log_debug("http1 %s: idle: buffers released", conn->base.peer);
}

/* A bufferevent_openssl around the SSL of a released TLS connection; NULL when out of memory (the SSL is freed). */
static struct bufferevent *tls_bev_again(ptc_h1conn_t *conn, evutil_socket_t fd)
{
    SSL *ssl = conn->ssl;
    conn->ssl = NULL; /* the bufferevent's from here on (libevent frees it when it cannot make one) */
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(conn->worker->base, fd, ssl, BUFFEREVENT_SSL_OPEN, BEV_OPT_CLOSE_ON_FREE);
    if (bev != NULL && SSL_get_wbio(ssl) == NULL) { /* its socket BIO could not be made: it would read nothing */
        bufferevent_free(bev);
        return NULL;
    }
    if (bev != NULL)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1); /* as the handshake's (tls.c) */
    return bev;
}

/* Makes the bufferevent of a released connection again. False when the connection was freed (out of memory). */
static bool conn_wake(ptc_h1conn_t *conn)
{
    if (conn->bev != NULL)
        return true;
    evutil_socket_t fd = event_get_fd(conn->resume_ev);
    bool made;
    if (conn->ssl != NULL) {
        made = (conn->bev = tls_bev_again(conn, fd)) != NULL;
    } else {
        conn->bev = bufferevent_socket_new(conn->worker->base, fd, BEV_OPT_CLOSE_ON_FREE);
        made = conn->bev != NULL && ptc_bev_read_direct(conn->bev) == 0;
    }
    if (!made || bev_setup(conn) != 0) {
        ptc_log_warn("http1 %s: out of memory waking an idle connection", conn->base.peer);
        conn_free(conn, "out of memory");
        return false;
    }
    event_del(conn->resume_ev);
    event_assign(conn->resume_ev, conn->worker->base, -1, 0, on_resume, conn);
    ptc_log_debug("http1 %s: idle connection woke up", conn->base.peer);
    return true;
}

static void on_idle_readable(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    ptc_h1conn_t *conn = arg;
    char byte;
    /* most idle connections end with the client's close: that needs no buffers */
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(conn, n == 0 ? "client closed the connection" : evutil_socket_error_to_string(errno));
        return;
    }
    if (conn_wake(conn))
        event_active(&conn->bev->ev_read, EV_READ, 1); /* read now rather than at the next epoll_wait */
}

void ptc_h1conn_start(ptc_worker_t *w, struct bufferevent *bev, const char *peer, unsigned listener, bool tls)
{
    ptc_h1conn_t *conn = calloc(1, sizeof(*conn));

    if (conn == NULL) {
        bufferevent_free(bev);
        return;
    }
    conn->super.cb = &ds_callbacks;
    conn->worker = w;
    conn->bev = bev;
    conn->tls = tls;
    conn->timer = evtimer_new(w->base, on_timer, conn);
    conn->resume_ev = event_new(w->base, -1, 0, on_resume, conn);
    if (conn->timer == NULL || conn->resume_ev == NULL) {
        bufferevent_free(bev);
        if (conn->timer != NULL)
            event_free(conn->timer);
        if (conn->resume_ev != NULL)
            event_free(conn->resume_ev);
        free(conn);
        return;
    }
    llhttp_init(&conn->parser, HTTP_REQUEST, &parser_settings);
    conn->parser.data = conn;
    ptc_conn_register(w, &conn->base, &conn_callbacks, peer, listener);

    if (bev_setup(conn) != 0) {
        ptc_log_warn("http1 %s: out of memory accepting the connection", conn->base.peer);
        conn_free(conn, "out of memory");
        return;
    }
    timer_set(conn, conn->base.snap->config.timeouts.idle_ms);
    ptc_conn_idle(&conn->base);
    ptc_log_debug("http1 %s: accepted", conn->base.peer);
    if (evbuffer_get_length(bufferevent_get_input(bev)) != 0)
        event_active(conn->resume_ev, EV_READ, 0); /* bytes read while another layer looked at them */
}

static ptc_h1conn_t *from_base(ptc_conn_t *c)
{
    return (ptc_h1conn_t *)(void *)((char *)c - offsetof(ptc_h1conn_t, base));
}

static void conn_drain(ptc_conn_t *c)
{
    ptc_h1conn_t *conn = from_base(c);
    if (conn->closing)
        return;
    conn->close_after_response = true;
    if (conn->in_request || conn->call != NULL || conn->response_active)
        return; /* closes once this exchange is done */
    if (conn->exchanges == 0 || (conn->bev != NULL && evbuffer_get_length(bufferevent_get_input(conn->bev)) != 0)) {
        /* just accepted (or bytes are waiting): its first request may be on its way; it gets an answer and
         * the connection closes after it, or it closes after a short grace */
        timer_set(conn, DRAIN_FRESH_MS);
        return;
    }
    close_notify(conn);
    conn_free(conn, "gateway draining");
}

static void conn_fail_calls(ptc_conn_t *c, const char *message)
{
    ptc_h1conn_t *conn = from_base(c);
    if (conn->ssl != NULL) { /* released TLS: idle, and not woken from here (conn_release_idle()) */
        close_notify(conn);
        conn_free(conn, message);
        return;
    }
    if (!conn_wake(conn))
        return;
    conn->close_after_response = true;
    if (conn->call != NULL)
        ptc_call_abort(conn->call, PTC_GRPC_UNAVAILABLE, message);
    else if (!conn->closing)
        start_closing(conn);
}

static void conn_close(ptc_conn_t *c)
{
    conn_free(from_base(c), "gateway shutting down");
}
