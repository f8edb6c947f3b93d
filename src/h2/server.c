/*
 * HTTP/2 downstream adapter (nghttp2 server sessions): many gRPC-Web calls — and native gRPC calls —
 * multiplexed on one connection, over TLS (ALPN h2) or cleartext with prior knowledge.
 *
 * Flow control is end to end in both directions, with automatic WINDOW_UPDATE off:
 *  - request bodies: DATA from the browser is credited back (nghttp2_session_consume) once the call
 *    took it, except while the call applies backpressure (pause_read), so a slow upstream stops the
 *    browser's uploads;
 *  - response bodies: a stream's bytes wait in its `out` buffer until the browser's window lets
 *    nghttp2 send them; the call sees that through `pending` and stops crediting the upstream.
 *
 * WebSockets (RFC 8441): SETTINGS_ENABLE_CONNECT_PROTOCOL is advertised; an extended CONNECT with
 * :protocol websocket that passes ptc_ws_check() is answered 200 and its stream carries a grpc-websockets
 * session (src/ws/server.c) whose frames travel in DATA frames, with the same flow control as a call.
 *
 * Re-entrancy: as in the upstream client, nghttp2_session_send() is never called from inside nghttp2;
 * sends requested meanwhile are recorded in want_send and done by the outermost caller.
 *
 * Abuse guards (each refusal is logged and counted in ptc_limit_stats_t; README "Limits and abuse"):
 *  - concurrency: limits.max_concurrent_streams is advertised; nghttp2 refuses streams beyond it with
 *    RST_STREAM REFUSED_STREAM until our SETTINGS are acknowledged, and with GOAWAY PROTOCOL_ERROR after;
 *  - rapid reset (CVE-2023-44487, and "made you reset", where the client makes nghttp2 reset): a stream that
 *    closes before our side of it ended, unless we reset it ourselves, takes a token from the connection's
 *    reset bucket (2 × max_concurrent_streams, refilled in 10 s); an empty bucket ends the connection with
 *    GOAWAY ENHANCE_YOUR_CALM, so the upstream sees a bounded number of calls per connection;
 *  - floods (CVE-2019-9512/9515/9518 and WINDOW_UPDATE/PRIORITY/RST_STREAM floods): PING, SETTINGS,
 *    WINDOW_UPDATE, PRIORITY, GOAWAY, RST_STREAM of a closed stream and DATA without payload nor END_STREAM
 *    each take a token from the control bucket (CONTROL_BURST, refilled at CONTROL_RATE a second, plus two
 *    per DATA frame we send and per stream opened: WINDOW_UPDATEs and BDP PINGs follow our DATA); empty →
 *    ENHANCE_YOUR_CALM. nghttp2 itself ends a connection whose unread SETTINGS/PING ACKs pile up (max
 *    outbound ACK) or whose SETTINGS carry too many entries;
 *  - CONTINUATION floods (CVE-2024-27316 class): at most max_continuations() CONTINUATION frames per header
 *    block (nghttp2, backported to Debian's 1.52), and the block must end within timeouts.header_read; the
 *    fields kept are capped by max_header_size / max_headers (431), so memory does not grow with the block.
 * A connection ended for a protocol error or abuse sends its GOAWAY, then, cleartext, shuts its write side
 * and reads (dropping) until the client closes or CLOSE_LINGER_MS pass, so the GOAWAY is not lost to a RST.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "portico/alloc.h"
#include "portico/buffer.h"
#include "portico/call.h"
#include "portico/codec.h"
#include "portico/conn.h"
#include "portico/h2.h"
#include "portico/h2field.h"
#include "portico/h2io.h"
#include "portico/log.h"
#include "portico/worker.h"
#include "portico/ws.h"

#define CONNECTION_WINDOW_SIZE ((1 << 30) - 1)
#define CONTROL_BURST 1000      /* control frames a connection may send at once (nghttp2's default max outbound ACKs) */
#define CONTROL_RATE 100        /* ... and then per second */
#define CONTROL_EARN 2          /* tokens given back per DATA frame sent and per stream opened */
#define RESET_REFILL_S 10       /* the reset bucket refills in this many seconds */
#define MAX_OUTBOUND_ACK 1000   /* SETTINGS and PING ACKs queued unread before nghttp2 gives up (its default) */
#define MAX_SETTINGS_ENTRIES 32 /* entries in one SETTINGS frame (nghttp2's default; 7 ids are defined) */
#define CLOSE_LINGER_MS 5000    /* after an error GOAWAY: how long the connection may take to flush it and see the client close */
#define SPARE_STREAMS 16        /* freed streams a busy connection keeps for its next ones (see stream_new) */
#define SMALL_OUT 240           /* response bytes a stream keeps in itself rather than in `out` (see ds_send_body) */
#define HEAD_MEM 384            /* response head bytes a stream keeps in itself (see head_room) */
#define FRAME_STAGE 2048        /* a DATA frame up to this size is written to the connection in one piece */

/* A token bucket (per connection; times from ptc_now_coarse_ms()). */
typedef struct st_bucket_t {
    double tokens;
    uint64_t at_ms;
} bucket_t;

/* Takes one token after refilling at `rate` a second up to `burst`; false when none is left. */
static bool bucket_take(bucket_t *b, double burst, double rate)
{
    uint64_t now = ptc_now_coarse_ms();
    b->tokens = PTC_MIN(burst, b->tokens + (double)(now - b->at_ms) * rate / 1000);
    b->at_ms = now;
    if (b->tokens < 1)
        return false;
    b->tokens -= 1;
    return true;
}

typedef enum {
    TIMER_NONE,
    TIMER_IDLE,   /* no stream open: timeouts.idle */
    TIMER_HEADER, /* a header block is open: timeouts.header_read from its HEADERS frame */
    TIMER_LINGER, /* closing after an error GOAWAY: CLOSE_LINGER_MS */
} timer_kind_t;

typedef struct st_h2conn_t h2conn_t;

/* Response head bytes that did not fit in a stream's head_mem: a list freed with the stream. */
typedef struct st_head_chunk_t {
    struct st_head_chunk_t *next;
    char data[];
} head_chunk_t;

typedef struct st_h2stream_t {
    ptc_downstream_t super; /* the call's view of this stream; first, so the pointer casts */
    h2conn_t *conn;
    ptc_snapshot_t *snap;   /* pinned: the worker's configuration when the stream opened */
    int32_t id;
    TAILQ_ENTRY(st_h2stream_t) link;

    /* request head, copied from nghttp2's header callbacks; capped at limits.max_header_size / max_headers.
     * A worker block, held from the HEADERS frame to the end of the policy step (the call copies what it keeps). */
    ptc_head_block_t hb;
    size_t head_len;
    size_t num_hdrs;
    int head_error; /* HTTP status when the head was refused (431) */
    ptc_http_headers_param_t *hparam;
    char *cors_origin; /* the allowed origin the CORS decision echoes: a copy, the head block goes back early */

    ptc_call_t *call;
    bool request_ended;
    bool reset_by_us;      /* we reset it (upstream failure, ...): not the client's doing */
    bool rst_sent;         /* a RST_STREAM went out for it (ours or nghttp2's for a client error) */
    bool head_method;      /* HEAD: answers carry no body */
    bool discard;          /* request body is ignored (local answer, or the call ended) */
    bool read_paused;      /* the call applies backpressure: request DATA is not credited */
    bool data_ended;       /* a DATA frame with END_STREAM came: the stream's own window no longer matters */
    bool malformed;        /* a malformed request (RFC 9113 §8.1.1): reset with PROTOCOL_ERROR, its frames are ignored */
    uint32_t http;         /* what the request's fields said so far: HF_* (see field_check) */
    int64_t content_length; /* the request's content-length, -1 without one */
    int64_t body_length;    /* request DATA received so far (payload, without padding) */
    size_t unconsumed_req; /* request DATA received but not credited back */

    /* response: its bytes not yet sent are small[small_off, small_len), then `out` (small is used only while out is
     * empty, so that the bytes stay in order: a unary call's whole body, without an evbuffer's chains) */
    struct evbuffer *out;
    uint16_t small_off;
    uint16_t small_len;
    uint16_t head_used;       /* bytes of head_mem taken (see head_room) */
    head_chunk_t *head_chunks; /* response head bytes beyond head_mem */
    bool out_broken;       /* a write to `out` failed (out of memory): the stream is reset, nothing more is queued */
    bool head_sent;
    bool eof;              /* the body is complete once `out` drains */
    bool data_deferred;    /* read_response found nothing to send yet: nghttp2 waits for stream_resume() */
    ptc_header_t *trailers; /* native gRPC: HTTP/2 trailers to send after the body */
    size_t num_trailers;
    char *trailer_mem;

    /* a WebSocket over this stream (extended CONNECT): its session and the transport it sees */
    ptc_ws_t *ws;
    ptc_ws_io_t wsio; /* in: request DATA not yet taken by the session; out: `out` */

    struct st_h2stream_t *next_spare; /* in the connection's spare list */

    /* from here on not cleared when a spare stream is reused (stream_alloc): read only below small_len / head_used */
    char small[SMALL_OUT];
    char head_mem[HEAD_MEM];
} h2stream_t;

struct st_h2conn_t {
    ptc_conn_t base;
    ptc_worker_t *worker;
    struct bufferevent *bev;
    nghttp2_session *session;
    bool tls;
    TAILQ_HEAD(, st_h2stream_t) streams;
    size_t num_streams;
    struct event *timer; /* idle timeout, header block timeout or close linger: timer_kind */
    timer_kind_t timer_kind;
    struct event *send_ev; /* deferred nghttp2_session_send() */
    bool send_queued;      /* send_ev is active */
    unsigned in_nghttp2;
    bool want_send;
    bool want_close;
    bool write_blocked; /* cleartext: see ptc_bev_write_now() */
    bool goaway_sent;
    bool in_header_block;    /* a HEADERS frame without END_HEADERS came; its CONTINUATIONs have not ended it yet */
    int32_t header_block_stream; /* ... on this stream */
    h2stream_t *recent_st;   /* the stream last opened or looked up (stream_of); NULL: none, or freed */
    h2stream_t *spare;       /* freed streams kept for the next ones (at most SPARE_STREAMS; none while idle) */
    unsigned num_spare;
    bool error_goaway;       /* a GOAWAY with an error code went out (or a fatal error came): closing in stages */
    bool shut;               /* closing: the output is flushed and the write side shut; reading until the client closes */
    bool goaway_counted;     /* the error GOAWAY being sent was counted where it was decided (conn_error) */
    bool goaway_out;         /* an error GOAWAY went out: nothing more is sent */
    bool unique_seeded;      /* a response carried the request id indexed (see field_flags) */
    int64_t max_send_window; /* when a SETTINGS frame began: the largest send window of a stream, and ... */
    int64_t old_initial;     /* ... the client's SETTINGS_INITIAL_WINDOW_SIZE (see settings_check) */
    bucket_t resets;         /* streams the client may still close before our side ended */
    bucket_t control;        /* control and empty frames the client may still send */
    /* nghttp2's outbound frame buffer (one 16 KiB frame; ng_framebuf_realloc): page-aligned, its pages are given
     * back while the connection is idle (conn_release_idle) */
    uint8_t *framebuf;
    size_t framebuf_size; /* nonzero once allocated (even after nghttp2 freed it: only the first is it) */
};

static void conn_free(h2conn_t *conn, const char *reason);
static bool conn_wake(h2conn_t *conn);
static bool conn_send(h2conn_t *conn);
static void conn_shut(h2conn_t *conn);

/*
 * Sending is deferred to the loop (or to the end of the nghttp2 call in progress): a send can
 * complete and close a stream, which must not happen under the feet of a call that is still
 * writing its response through the stream.
 */
static void conn_want_send(h2conn_t *conn)
{
    if (conn->in_nghttp2 != 0) {
        conn->want_send = true;
    } else if (!conn->send_queued) { /* once per loop pass: a call asks several times (head, body, end) */
        conn->send_queued = true;
        event_active(conn->send_ev, EV_WRITE, 0);
    }
}

static void conn_refresh(h2conn_t *conn);

static void timer_arm(h2conn_t *conn, timer_kind_t kind, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    conn->timer_kind = kind;
    evtimer_add(conn->timer, &tv);
}

/*
 * The connection's one timer: the close linger once set; else the open header block's deadline (from its
 * HEADERS frame); else the idle timeout while no stream is open (from the last stream's end).
 */
static void timer_update(h2conn_t *conn)
{
    if (conn->timer_kind == TIMER_LINGER)
        return;
    if (conn->in_header_block) {
        if (conn->timer_kind != TIMER_HEADER)
            timer_arm(conn, TIMER_HEADER, conn->base.snap->config.timeouts.header_read_ms);
    } else if (conn->num_streams == 0) {
        if (conn->base.snap != conn->worker->snap)
            conn_refresh(conn); /* an idle connection does not hold on to an old configuration */
        timer_arm(conn, TIMER_IDLE, conn->base.snap->config.timeouts.idle_ms);
        ptc_conn_idle(&conn->base); /* its buffers go after a second without a stream (conn_release_idle()) */
    } else if (conn->timer_kind != TIMER_NONE) {
        evtimer_del(conn->timer);
        conn->timer_kind = TIMER_NONE;
    }
}

/*
 * Ends the connection for a protocol error or an abuse of the client: GOAWAY `code` with `why` as its debug
 * data, and a log line. `counter` counts the refusal (NULL: on_frame_send counts the GOAWAY by its code, as
 * for nghttp2's own). The input is dropped from here on; the connection closes once the GOAWAY is out.
 */
static void conn_error(h2conn_t *conn, uint32_t code, ptc_counter_t *counter, const char *fmt, ...) PTC_PRINTF(4, 5);
static void conn_error(h2conn_t *conn, uint32_t code, ptc_counter_t *counter, const char *fmt, ...)
{
    char why[256];
    va_list ap;

    if (conn->error_goaway)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    ptc_log_info("h2 %s: %s: GOAWAY %s", conn->base.peer, why, nghttp2_http2_strerror(code));
    if (counter != NULL) {
        PTC_STAT_INC(*counter);
        conn->goaway_counted = true;
    }
    conn->error_goaway = true;
    conn->goaway_sent = true;
    nghttp2_submit_goaway(conn->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(conn->session), code,
                          (const uint8_t *)why, strlen(why));
    conn_want_send(conn);
}

/* A control or empty frame: a token from the control bucket, or the connection ends (`what` names the flood). */
static void control_frame(h2conn_t *conn, const char *what)
{
    if (!conn->error_goaway && !bucket_take(&conn->control, CONTROL_BURST, CONTROL_RATE))
        conn_error(conn, NGHTTP2_ENHANCE_YOUR_CALM, &conn->worker->limit_stats.h2_floods,
                   "%s flood: more than %d control frames at once or %d a second", what, CONTROL_BURST, CONTROL_RATE);
}

static void control_earn(h2conn_t *conn)
{
    conn->control.tokens = PTC_MIN((double)CONTROL_BURST, conn->control.tokens + CONTROL_EARN);
}

/* The reset bucket's size for the connection's limits. */
static double reset_burst(const h2conn_t *conn)
{
    return 2.0 * conn->base.snap->config.limits.max_concurrent_streams;
}

/* Our SETTINGS, from the limits of the connection's snapshot. */
static int submit_settings(h2conn_t *conn)
{
    const ptc_limits_config_t *lim = &conn->base.snap->config.limits;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, lim->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim->stream_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, lim->max_header_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        /* WebSockets over HTTP/2 (RFC 8441); never withdrawn once sent (§3), so always on: websocket.enabled
         * false refuses the CONNECT instead */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    return nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, iv, PTC_ARRAY_SIZE(iv));
}

/*
 * A stream opened under a newer configuration than the connection's: the connection moves to it (its
 * idle timeout and limits) and tells the client about changed limits with a new SETTINGS frame. Streams
 * already open keep their own snapshots.
 */
static void conn_refresh(h2conn_t *conn)
{
    const ptc_limits_config_t *old = &conn->base.snap->config.limits;
    uint32_t window = old->stream_window_size, header = old->max_header_size, streams = old->max_concurrent_streams;
    ptc_conn_refresh(&conn->base);
    const ptc_limits_config_t *lim = &conn->base.snap->config.limits;
    if (lim->stream_window_size != window || lim->max_header_size != header || lim->max_concurrent_streams != streams) {
        submit_settings(conn);
        conn_want_send(conn);
    }
}

/* ---- streams ---- */

/*
 * A stream, with its empty `out`: a spare one when the connection has one (a connection's streams come and go in
 * batches: those a send pass ends are the next read's new ones, without an allocation and an evbuffer each), or new.
 */
static h2stream_t *stream_alloc(h2conn_t *conn)
{
    h2stream_t *st = conn->spare;
    if (st != NULL) {
        conn->spare = st->next_spare;
        conn->num_spare--;
        struct evbuffer *out = st->out;
        memset(st, 0, offsetof(h2stream_t, small));
        st->out = out;
        return st;
    }
    if ((st = ptc_calloc(1, sizeof(*st))) == NULL)
        return NULL;
    if ((st->out = evbuffer_new()) == NULL) {
        ptc_free(st);
        return NULL;
    }
    return st;
}

/* Keeps a freed stream (its `out` emptied) as a spare, or frees it. */
static void stream_dispose(h2conn_t *conn, h2stream_t *st)
{
    if (conn->num_spare < SPARE_STREAMS && evbuffer_drain(st->out, evbuffer_get_length(st->out)) == 0) {
        st->next_spare = conn->spare;
        conn->spare = st;
        conn->num_spare++;
        return;
    }
    evbuffer_free(st->out);
    ptc_free(st);
}

/* Frees the spare streams (an idle or closing connection keeps none). */
static void spare_free(h2conn_t *conn)
{
    h2stream_t *st;
    while ((st = conn->spare) != NULL) {
        conn->spare = st->next_spare;
        evbuffer_free(st->out);
        ptc_free(st);
    }
    conn->num_spare = 0;
}

static h2stream_t *stream_new(h2conn_t *conn, int32_t id)
{
    h2stream_t *st = stream_alloc(conn);
    if (st == NULL)
        return NULL;
    st->conn = conn;
    st->id = id;
    st->content_length = -1;
    if (ptc_worker_head_block(conn->worker, conn->worker->snap, &st->hb) != 0) {
        stream_dispose(conn, st);
        return NULL;
    }
    st->snap = ptc_snapshot_ref(conn->worker->snap);
    if (conn->base.snap != st->snap)
        conn_refresh(conn);
    TAILQ_INSERT_TAIL(&conn->streams, st, link);
    conn->num_streams++;
    control_earn(conn);
    timer_update(conn);
    return st;
}

static void stream_free(h2stream_t *st, const char *reason)
{
    h2conn_t *conn = st->conn;
    if (st->ws != NULL) {
        ptc_ws_t *ws = st->ws;
        st->ws = NULL;
        ptc_ws_detach(ws, reason);
    }
    if (st->wsio.in != NULL)
        evbuffer_free(st->wsio.in);
    if (st->call != NULL) {
        ptc_call_t *call = st->call;
        st->call = NULL;
        ptc_call_detach_downstream(call, reason);
    }
    TAILQ_REMOVE(&conn->streams, st, link);
    conn->num_streams--;
    if (conn->recent_st == st)
        conn->recent_st = NULL;
    ptc_worker_head_block_release(conn->worker, &st->hb);
    ptc_snapshot_release(st->snap);
    free(st->hparam);
    free(st->cors_origin);
    free(st->trailers);
    free(st->trailer_mem);
    for (head_chunk_t *c = st->head_chunks, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    stream_dispose(conn, st);
    timer_update(conn);
}

/* Resets a stream for a reason of ours (not the client's doing: see on_stream_close). */
static void stream_reset(h2stream_t *st, uint32_t code)
{
    st->reset_by_us = true;
    nghttp2_submit_rst_stream(st->conn->session, NGHTTP2_FLAG_NONE, st->id, code);
}

/* More of the response is there: nghttp2 reads it again (a stream it is not waiting on needs no call). */
static void stream_resume(h2stream_t *st)
{
    if (st->data_deferred) {
        st->data_deferred = false;
        nghttp2_session_resume_data(st->conn->session, st->id);
    }
}

/*
 * Credits request DATA back to the browser unless the call is applying backpressure: to the connection, and to the
 * stream while more DATA may come on it (after END_STREAM a WINDOW_UPDATE for it would be of no use).
 */
static void stream_credit_request(h2stream_t *st)
{
    if (st->unconsumed_req == 0 || st->read_paused)
        return;
    if (st->data_ended)
        nghttp2_session_consume_connection(st->conn->session, st->unconsumed_req);
    else
        nghttp2_session_consume(st->conn->session, st->id, st->unconsumed_req);
    st->unconsumed_req = 0;
    conn_want_send(st->conn);
}

/*
 * HPACK indexing of a response field. The request id differs on every response: indexed, each would be inserted into
 * the dynamic table and evict an older one, and every lookup of the name would walk all the ids still there (~3.7k
 * instructions a response). So it goes as a literal never indexed, but for the connection's first, which is indexed so
 * that the name stays in the table and the later ones refer to it instead of spelling (and Huffman-coding) it. Should
 * that entry be evicted, the name is spelled again: only the saving is lost.
 */
static uint8_t field_flags(h2conn_t *conn, ptc_iovec_t name, ptc_iovec_t unique)
{
    if (unique.len == 0 || !ptc_iov_eq(name, unique))
        return NGHTTP2_NV_FLAG_NONE;
    if (!conn->unique_seeded) {
        conn->unique_seeded = true;
        return NGHTTP2_NV_FLAG_NONE;
    }
    return NGHTTP2_NV_FLAG_NO_INDEX;
}

/*
 * Room for n bytes of the stream's response heads. nghttp2 is given their names and values without copying them
 * (NGHTTP2_NV_FLAG_NO_COPY_*): it reads them when it serialises the HEADERS frame, in a later send pass, and only
 * while the stream is open (a frame still queued for a closed stream is dropped unread: nghttp2 1.52,
 * session_prep_frame), so what the stream owns until it is freed (on_stream_close) outlives every read. Each head
 * takes new room: one submitted earlier may not be out yet.
 */
static char *head_room(h2stream_t *st, size_t n)
{
    if (n <= (size_t)(HEAD_MEM - st->head_used)) {
        char *p = st->head_mem + st->head_used;
        st->head_used = (uint16_t)(st->head_used + n);
        return p;
    }
    head_chunk_t *c = malloc(sizeof(*c) + n);
    if (c == NULL)
        return NULL;
    c->next = st->head_chunks;
    st->head_chunks = c;
    return c->data;
}

/*
 * Builds an nghttp2 header block: :status, the fields, and the CORS fields of the stream's decision, copied into the
 * stream (head_room) with the names lower-cased, as nghttp2 sends names it does not copy as they are.
 */
static int submit_head(h2stream_t *st, int status, const ptc_header_t *headers, size_t n, const ptc_header_t *extra, size_t nextra,
                       const nghttp2_data_provider *prd)
{
    ptc_header_t cors[PTC_CORS_MAX_FIELDS];
    ptc_cors_scratch_t scratch;
    size_t ncors = ptc_downstream_cors_fields(&st->super, headers, n, cors, PTC_ARRAY_SIZE(cors), &scratch);
    nghttp2_nv stack[48], *nva = stack;
    size_t total = 1 + n + nextra + ncors, k = 0, bytes = 3;
    char *p;

    for (size_t i = 0; i < n; i++)
        bytes += headers[i].name.len + headers[i].value.len;
    for (size_t i = 0; i < nextra; i++)
        bytes += extra[i].name.len + extra[i].value.len;
    for (size_t i = 0; i < ncors; i++)
        bytes += cors[i].name.len + cors[i].value.len;
    if ((p = head_room(st, bytes)) == NULL ||
        (total > PTC_ARRAY_SIZE(stack) && (nva = malloc(total * sizeof(*nva))) == NULL))
        return NGHTTP2_ERR_NOMEM;
    /* three digits (100-599 here), without snprintf's cost on every response */
    unsigned code = (unsigned)status, tens = code % 100;
    p[0] = (char)('0' + code / 100);
    p[1] = (char)('0' + tens / 10);
    p[2] = (char)('0' + tens % 10);
    static char status_name[] = ":status";
    nva[k++] = (nghttp2_nv){(uint8_t *)status_name, (uint8_t *)p, 7, 3, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
    p += 3;
    const ptc_request_id_config_t *rid = &st->snap->config.request_id;
    ptc_iovec_t unique = rid->enabled ? ptc_iov(rid->header, strlen(rid->header)) : ptc_iov("", 0);
#define ADD(list, count)                                                                                                           \
    for (size_t i = 0; i < (count); i++) {                                                                                         \
        ptc_iovec_t name = (list)[i].name, value = (list)[i].value;                                                                \
        ptc_lower_copy(p, name.base, name.len);                                                                                    \
        if (value.len != 0)                                                                                                        \
            memcpy(p + name.len, value.base, value.len);                                                                           \
        nva[k++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)p + name.len, name.len, value.len,                                        \
                                (uint8_t)(field_flags(st->conn, name, unique) | NGHTTP2_NV_FLAG_NO_COPY_NAME |                     \
                                          NGHTTP2_NV_FLAG_NO_COPY_VALUE)};                                                         \
        p += name.len + value.len;                                                                                                 \
    }
    ADD(headers, n)
    ADD(extra, nextra)
    ADD(cors, ncors)
#undef ADD
    int rv = nghttp2_submit_response(st->conn->session, st->id, nva, k, prd);
    if (nva != stack)
        free(nva);
    st->head_sent = true;
    return rv;
}

/* Response bytes of the stream not yet sent. */
static size_t stream_pending(const h2stream_t *st)
{
    return (size_t)(st->small_len - st->small_off) + evbuffer_get_length(st->out);
}

static ssize_t read_response(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                             nghttp2_data_source *source, void *user_data)
{
    (void)buf;
    (void)user_data;
    h2stream_t *st = source->ptr;
    size_t avail = stream_pending(st);
    if (avail == 0 && !st->eof) {
        st->data_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = PTC_MIN(length, avail);
    if (n != 0)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (st->eof && n == avail) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->trailers != NULL) {
            /* native gRPC: the stream ends with a trailer HEADERS frame instead of END_STREAM on DATA */
            nghttp2_nv nva[64];
            size_t k = 0;
            for (size_t i = 0; i < st->num_trailers && k < PTC_ARRAY_SIZE(nva); i++)
                nva[k++] = (nghttp2_nv){(uint8_t *)(uintptr_t)st->trailers[i].name.base, (uint8_t *)(uintptr_t)st->trailers[i].value.base,
                                        st->trailers[i].name.len, st->trailers[i].value.len, NGHTTP2_NV_FLAG_NONE};
            if (nghttp2_submit_trailer(session, stream_id, nva, k) != 0) {
                /* an end without the status would read as a complete answer: the stream is reset instead */
                ptc_log_warn("h2 %s: stream %d: out of memory submitting the trailers: resetting the stream", st->conn->base.peer,
                             stream_id);
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    }
    return (ssize_t)n;
}

static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)frame;
    h2conn_t *conn = user_data;
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    h2stream_t *st = source->ptr;
    if (evbuffer_get_length(out) >= PTC_H2_OUTPUT_WOULDBLOCK || conn->goaway_out)
        return NGHTTP2_ERR_WOULDBLOCK;
    /* the frame header and what small holds of the payload, then the rest from out */
    size_t k = PTC_MIN(length, (size_t)(st->small_len - st->small_off));
    char stage[FRAME_STAGE];
    memcpy(stage, framehd, 9);
    memcpy(stage + 9, st->small + st->small_off, k);
    st->small_off = (uint16_t)(st->small_off + k);
    if (st->small_off == st->small_len)
        st->small_off = st->small_len = 0;
    if (9 + length <= sizeof(stage)) {
        if ((length > k && evbuffer_remove(st->out, stage + 9 + k, length - k) != (int)(length - k)) ||
            evbuffer_add(out, stage, 9 + length) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE; /* a partial frame in the connection's output: it cannot go on */
    } else if (ptc_evbuffer_add_framed(out, stage, 9 + k, st->out, length - k, NULL, 0) != 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    control_earn(conn); /* the client's WINDOW_UPDATEs (and BDP PINGs) answer our DATA */
    /* the browser is reading: let the call credit its upstream again */
    if (st->call != NULL && stream_pending(st) <= st->snap->config.limits.call_buffer_size / 2)
        ptc_call_on_downstream_writable(st->call);
    if (st->ws != NULL)
        ptc_ws_on_writable(st->ws);
    return 0;
}

/* The response's data source: the stream (which lives until nghttp2 closes it, or with the session). */
static nghttp2_data_provider response_provider(h2stream_t *st)
{
    return (nghttp2_data_provider){.source = {.ptr = st}, .read_callback = read_response};
}

/* ---- the call's view (ptc_downstream_cb_t) ---- */

static void ds_send_head(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, bool end_stream)
{
    h2stream_t *st = (h2stream_t *)ds;
    nghttp2_data_provider prd = response_provider(st);
    /* HTTP/2 forbids connection-specific fields; the call never passes them */
    if (submit_head(st, status, headers, n, NULL, 0, end_stream ? NULL : &prd) != 0)
        stream_reset(st, NGHTTP2_INTERNAL_ERROR);
    conn_want_send(st->conn);
}

/* Does the stream's small buffer take n more response bytes? Only while they fit and nothing waits in out. */
static bool small_takes(const h2stream_t *st, size_t n)
{
    return n <= (size_t)(SMALL_OUT - st->small_len) && evbuffer_get_length(st->out) == 0;
}

/*
 * Body bytes: into small while it takes them (a copy of tens of bytes costs less than moving the buffer's chains, and
 * writing the frame takes them from the stream itself), otherwise moved into out.
 */
static int stream_queue(h2stream_t *st, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    if (small_takes(st, n)) {
        if (evbuffer_remove(buf, st->small + st->small_len, n) != (int)n)
            return -1;
        st->small_len = (uint16_t)(st->small_len + n);
        return 0;
    }
    return evbuffer_add_buffer(st->out, buf);
}

/* Out of memory queueing response bytes: what follows would not be the response the call made, so the stream is reset
 * instead (its close detaches the call, which cancels the upstream stream). */
static void stream_out_broken(h2stream_t *st)
{
    if (!st->out_broken) {
        st->out_broken = true;
        ptc_log_warn("h2 %s: stream %d: out of memory queueing the response: resetting the stream", st->conn->base.peer, st->id);
        nghttp2_submit_rst_stream(st->conn->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    }
}

static void ds_send_body(ptc_downstream_t *ds, struct evbuffer *buf)
{
    h2stream_t *st = (h2stream_t *)ds;
    if (st->out_broken || stream_queue(st, buf) != 0) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        stream_out_broken(st);
    } else {
        stream_resume(st);
    }
    conn_want_send(st->conn);
}

/* The same from memory: into small when it takes them, else added to out. */
static void ds_send_bytes(ptc_downstream_t *ds, const uint8_t *data, size_t len)
{
    h2stream_t *st = (h2stream_t *)ds;
    if (st->out_broken) {
        return;
    } else if (small_takes(st, len)) {
        memcpy(st->small + st->small_len, data, len);
        st->small_len = (uint16_t)(st->small_len + len);
        stream_resume(st);
    } else if (evbuffer_add(st->out, data, len) != 0) {
        stream_out_broken(st);
    } else {
        stream_resume(st);
    }
    conn_want_send(st->conn);
}

static void ds_send_end(ptc_downstream_t *ds)
{
    h2stream_t *st = (h2stream_t *)ds;
    st->eof = true;
    stream_resume(st);
    conn_want_send(st->conn);
}

static void ds_send_trailers(ptc_downstream_t *ds, const ptc_header_t *trailers, size_t n)
{
    h2stream_t *st = (h2stream_t *)ds;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += trailers[i].name.len + trailers[i].value.len;
    free(st->trailers);
    free(st->trailer_mem);
    st->trailers = calloc(n != 0 ? n : 1, sizeof(*st->trailers));
    st->trailer_mem = malloc(bytes != 0 ? bytes : 1);
    if (st->trailers != NULL && st->trailer_mem != NULL) {
        char *p = st->trailer_mem;
        for (size_t i = 0; i < n; i++) {
            memcpy(p, trailers[i].name.base, trailers[i].name.len);
            st->trailers[i].name = ptc_iov(p, trailers[i].name.len);
            p += trailers[i].name.len;
            if (trailers[i].value.len != 0)
                memcpy(p, trailers[i].value.base, trailers[i].value.len);
            st->trailers[i].value = ptc_iov(p, trailers[i].value.len);
            p += trailers[i].value.len;
        }
        st->num_trailers = n;
    } else {
        free(st->trailers);
        st->trailers = NULL;
        stream_reset(st, NGHTTP2_INTERNAL_ERROR);
    }
    ds_send_end(ds);
}

static size_t ds_pending(ptc_downstream_t *ds)
{
    return stream_pending((const h2stream_t *)ds);
}

static void ds_pause_read(ptc_downstream_t *ds, bool pause)
{
    h2stream_t *st = (h2stream_t *)ds;
    st->read_paused = pause;
    if (!pause)
        stream_credit_request(st);
}

static void ds_on_call_done(ptc_downstream_t *ds)
{
    h2stream_t *st = (h2stream_t *)ds;
    st->call = NULL;
    st->discard = true;
    st->read_paused = false;
    stream_credit_request(st);
}

static void ds_respond(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, const char *body)
{
    h2stream_t *st = (h2stream_t *)ds;
    char len[24];
    size_t blen = body != NULL ? strlen(body) : 0;
    ptc_header_t extra[2];
    size_t nextra = 0;
    nghttp2_data_provider prd = response_provider(st);

    st->discard = true;
    stream_credit_request(st);
    if (status != 204) {
        snprintf(len, sizeof(len), "%zu", blen);
        if (blen != 0)
            extra[nextra++] = (ptc_header_t){PTC_STRLIT("content-type"), PTC_STRLIT("text/plain; charset=utf-8")};
        extra[nextra++] = (ptc_header_t){PTC_STRLIT("content-length"), ptc_iov(len, strlen(len))};
    }
    bool with_body = blen != 0 && !st->head_method;
    if (with_body)
        evbuffer_add(st->out, body, blen);
    st->eof = true;
    if (submit_head(st, status, headers, n, extra, nextra, with_body ? &prd : NULL) != 0)
        stream_reset(st, NGHTTP2_INTERNAL_ERROR);
    conn_want_send(st->conn);
}

static void ds_abort(ptc_downstream_t *ds)
{
    h2stream_t *st = (h2stream_t *)ds;
    st->call = NULL;
    st->discard = true;
    stream_reset(st, NGHTTP2_INTERNAL_ERROR);
    conn_want_send(st->conn);
}

static const ptc_downstream_cb_t ds_callbacks = {
    .send_head = ds_send_head,
    .send_body = ds_send_body,
    .send_bytes = ds_send_bytes,
    .send_end = ds_send_end,
    .pending = ds_pending,
    .pause_read = ds_pause_read,
    .on_call_done = ds_on_call_done,
    .send_trailers = ds_send_trailers,
    .respond = ds_respond,
    .abort = ds_abort,
};

/* ---- receiving ---- */

/*
 * RFC 9113 §6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE that takes a stream's send window past 2^31-1 is a connection
 * error FLOW_CONTROL_ERROR; nghttp2 1.52 only resets that stream. So the largest send window is noted when a
 * SETTINGS frame begins (the frame is budgeted, see frame_price) and checked against the new value once applied.
 */
static void settings_begin(h2conn_t *conn)
{
    conn->max_send_window = 0;
    conn->old_initial = nghttp2_session_get_remote_settings(conn->session, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    for (h2stream_t *st = TAILQ_FIRST(&conn->streams); st != NULL; st = TAILQ_NEXT(st, link))
        conn->max_send_window =
            PTC_MAX(conn->max_send_window, (int64_t)nghttp2_session_get_stream_remote_window_size(conn->session, st->id));
}

static void settings_check(h2conn_t *conn, const nghttp2_settings *settings)
{
    for (size_t i = 0; i < settings->niv; i++) {
        const nghttp2_settings_entry *e = &settings->iv[i];
        if (e->settings_id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE &&
            conn->max_send_window + (int64_t)e->value - conn->old_initial > NGHTTP2_MAX_WINDOW_SIZE) {
            conn_error(conn, NGHTTP2_FLOW_CONTROL_ERROR, &conn->worker->limit_stats.h2_connection_errors,
                       "SETTINGS_INITIAL_WINDOW_SIZE %" PRIu32 " takes a stream's window past 2^31-1", e->value);
            return;
        }
    }
}

/*
 * The stream with this id (nghttp2's stream user data, set when a stream opens; nghttp2 finds no stream once it closed it,
 * from the return of on_stream_close, where ours is freed):
 * a call's frames come one after another (HEADERS and its fields, DATA, the close), so the stream last opened or looked
 * up is remembered; freeing it forgets it.
 */
static h2stream_t *stream_of(h2conn_t *conn, int32_t stream_id)
{
    if (conn->recent_st != NULL && conn->recent_st->id == stream_id)
        return conn->recent_st;
    h2stream_t *st = nghttp2_session_get_stream_user_data(conn->session, stream_id);
    if (st != NULL)
        conn->recent_st = st;
    return st;
}

static ptc_iovec_t stream_header(const h2stream_t *st, size_t i, bool value)
{
    const ptc_head_off_t *o = &st->hb.offs[i];
    return value ? ptc_iov(st->hb.head + o->value, o->value_len) : ptc_iov(st->hb.head + o->name, o->name_len);
}

/* ---- HTTP messaging (RFC 9113 §8.1–§8.3, RFC 8441 §4) ----
 *
 * nghttp2's own checks are off (nghttp2_option_set_no_http_messaging): they cost ~2.2k instructions a call. These
 * are the same rules, as nghttp2 1.52 applies them to a server's requests, every break a stream error PROTOCOL_ERROR:
 *  - each field (request head and trailers): a name of lower-case token characters (an optional leading ':' for a
 *    pseudo-header field); a value without controls but HTAB nor DEL, nor leading or trailing SP/HTAB (for :method
 *    a token, :path visible characters, :authority and host the characters of an authority, :scheme a scheme);
 *    nghttp2 would ignore an invalid regular field only with an on_invalid_header callback, which we have not;
 *  - pseudo-header fields: only :method, :scheme, :path, :authority and :protocol, each at most once and not
 *    empty, all before the first regular field, none in trailers; host at most once and not empty;
 *  - no connection-specific field (connection, keep-alive, proxy-connection, transfer-encoding, upgrade), and te
 *    only "trailers"; content-length at most once, digits only;
 *  - at the end of the head: :method, :scheme and :path, and :authority or host; for CONNECT without :protocol,
 *    :authority and neither :scheme nor :path (its content-length is not checked); :protocol only on CONNECT with
 *    :authority (SETTINGS_ENABLE_CONNECT_PROTOCOL is always on); an http(s) :path starts with '/' (or is '*' for
 *    OPTIONS);
 *  - trailers end the stream; the DATA received never passes content-length and is exactly it at END_STREAM.
 * The priority field (RFC 9218) is read by nghttp2 only once SETTINGS_NO_RFC7540_PRIORITIES is sent; we do not.
 */
enum {
    HF_METHOD = 1 << 0,
    HF_SCHEME = 1 << 1,
    HF_PATH = 1 << 2,
    HF_AUTHORITY = 1 << 3,
    HF_PROTOCOL = 1 << 4,
    HF_HOST = 1 << 5,
    HF_REGULAR = 1 << 6, /* a regular field came: no pseudo-header field after it */
    HF_CONNECT = 1 << 7,
    HF_OPTIONS = 1 << 8,
    HF_SCHEME_HTTP = 1 << 9, /* :scheme http or https */
    HF_PATH_SLASH = 1 << 10,
    HF_PATH_STAR = 1 << 11,
};

/* A pseudo-header field's first (and only) time, not empty. */
static bool pseudo_once(h2stream_t *st, uint32_t flag, size_t valuelen)
{
    if ((st->http & flag) != 0 || valuelen == 0)
        return false;
    st->http |= flag;
    return true;
}

/* :scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1). */
static bool scheme_ok(const uint8_t *v, size_t len)
{
    if (len == 0 || !((v[0] | 0x20) >= 'a' && (v[0] | 0x20) <= 'z'))
        return false;
    for (size_t i = 1; i < len; i++) {
        uint8_t c = v[i];
        if (!(((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static bool pseudo_ok(h2stream_t *st, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    if (PTC_H2_IS(name, namelen, ":method")) {
        if (valuelen == 0 || !ptc_h2_chars_ok(value, valuelen, PTC_H2_METHOD) || !pseudo_once(st, HF_METHOD, valuelen))
            return false;
        if (PTC_H2_IS(value, valuelen, "CONNECT"))
            st->http |= HF_CONNECT;
        else if (PTC_H2_IS(value, valuelen, "OPTIONS"))
            st->http |= HF_OPTIONS;
        return true;
    }
    if (PTC_H2_IS(name, namelen, ":path")) {
        if (!ptc_h2_visible(value, valuelen, 0x21) || !pseudo_once(st, HF_PATH, valuelen)) /* nghttp2_check_path */
            return false;
        if (value[0] == '/')
            st->http |= HF_PATH_SLASH;
        else if (valuelen == 1 && value[0] == '*')
            st->http |= HF_PATH_STAR;
        return true;
    }
    if (PTC_H2_IS(name, namelen, ":scheme")) {
        bool http = PTC_H2_IS(value, valuelen, "http") || PTC_H2_IS(value, valuelen, "https") ||
                    ptc_iov_eq_ci(ptc_iov((const char *)value, valuelen), PTC_STRLIT("http")) ||
                    ptc_iov_eq_ci(ptc_iov((const char *)value, valuelen), PTC_STRLIT("https"));
        if (!(http || scheme_ok(value, valuelen)) || !pseudo_once(st, HF_SCHEME, valuelen))
            return false;
        if (http)
            st->http |= HF_SCHEME_HTTP;
        return true;
    }
    if (PTC_H2_IS(name, namelen, ":authority"))
        return ptc_h2_chars_ok(value, valuelen, PTC_H2_AUTHORITY) && pseudo_once(st, HF_AUTHORITY, valuelen);
    if (PTC_H2_IS(name, namelen, ":protocol"))
        return ptc_h2_value_ok(value, valuelen) && pseudo_once(st, HF_PROTOCOL, valuelen);
    return false; /* :status, or unknown */
}

/* One field of the request's head or trailers; false: the request is malformed. */
static bool field_check(h2stream_t *st, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen, bool trailer)
{
    if (namelen != 0 && name[0] == ':')
        return !trailer && (st->http & HF_REGULAR) == 0 && pseudo_ok(st, name, namelen, value, valuelen);
    st->http |= HF_REGULAR;
    if (!ptc_h2_name_ok(name, namelen))
        return false;
    switch (namelen) {
    case 2:
        if (PTC_H2_IS(name, namelen, "te"))
            return ptc_iov_eq_ci(ptc_iov((const char *)value, valuelen), PTC_STRLIT("trailers"));
        break;
    case 4:
        if (PTC_H2_IS(name, namelen, "host"))
            return ptc_h2_chars_ok(value, valuelen, PTC_H2_AUTHORITY) && pseudo_once(st, HF_HOST, valuelen);
        break;
    case 14:
        if (PTC_H2_IS(name, namelen, "content-length")) {
            if (st->content_length != -1)
                return false;
            return (st->content_length = ptc_h2_content_length(value, valuelen)) != -1;
        }
        break;
    default:
        if (ptc_h2_connection_specific(name, namelen))
            return false;
        break;
    }
    return ptc_h2_value_ok(value, valuelen);
}

/* The end of the request head (nghttp2_http_on_request_headers); false: malformed. */
static bool head_check(h2stream_t *st)
{
    uint32_t f = st->http;
    if ((f & (HF_CONNECT | HF_PROTOCOL)) == HF_CONNECT) {
        if ((f & (HF_SCHEME | HF_PATH)) != 0 || (f & HF_AUTHORITY) == 0)
            return false;
        st->content_length = -1; /* a tunnel's bytes are not a body of that length */
        return true;
    }
    if ((f & (HF_METHOD | HF_SCHEME | HF_PATH)) != (HF_METHOD | HF_SCHEME | HF_PATH) || (f & (HF_AUTHORITY | HF_HOST)) == 0)
        return false;
    if ((f & HF_PROTOCOL) != 0 && (f & (HF_CONNECT | HF_AUTHORITY)) != (HF_CONNECT | HF_AUTHORITY))
        return false;
    return (f & HF_SCHEME_HTTP) == 0 || (f & HF_PATH_SLASH) != 0 || (f & (HF_OPTIONS | HF_PATH_STAR)) == (HF_OPTIONS | HF_PATH_STAR);
}

/* The stream ends: its DATA must be its content-length. */
static bool end_check(const h2stream_t *st)
{
    return st->content_length == -1 || st->content_length == st->body_length;
}

/* A malformed request: RST_STREAM PROTOCOL_ERROR (nghttp2's, not ours: counted and logged in on_frame_send, and a
 * token of the reset bucket, as when nghttp2 checked), and the stream's frames are ignored from here on. */
static void stream_malformed(h2stream_t *st)
{
    st->malformed = true;
    st->discard = true;
    nghttp2_submit_rst_stream(st->conn->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
}

/* The log lines nghttp2 wrote for a malformed request (its error callback, then the invalid frame callback). */
static void log_malformed(h2conn_t *conn, const nghttp2_frame *frame, int lib_error)
{
    ptc_log_info("h2 %s: invalid frame (type %u) on stream %" PRId32 ": %s", conn->base.peer, frame->hd.type, frame->hd.stream_id,
                 nghttp2_strerror(lib_error));
}

static void field_malformed(h2conn_t *conn, h2stream_t *st, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                            const uint8_t *value, size_t valuelen)
{
    char msg[301];
    snprintf(msg, sizeof(msg), "Invalid HTTP header field was received: frame type: %u, stream: %" PRId32 ", name: [%.*s], value: [%.*s]",
             frame->hd.type, frame->hd.stream_id, (int)PTC_MIN(namelen, (size_t)300), (const char *)name,
             (int)PTC_MIN(valuelen, (size_t)300), (const char *)value);
    ptc_log_info("h2 %s: %s", conn->base.peer, msg);
    stream_malformed(st);
    log_malformed(conn, frame, NGHTTP2_ERR_HTTP_HEADER);
}

/*
 * RFC 9113 §5.1.1: a HEADERS frame that would open a stream with an id lower than one already opened is a
 * connection error PROTOCOL_ERROR. nghttp2 1.52 silently ignores such a header block, so we check the
 * frame header ourselves: a HEADERS frame for a client stream id at or below the last one processed that
 * names no live stream (not trailers for an open one) ends the connection with GOAWAY.
 */
/* A header block opens or ends (the timer only changes when that changes: other frames do not touch it). */
static void header_block(h2conn_t *conn, bool open, int32_t stream_id)
{
    if (open)
        conn->header_block_stream = stream_id;
    if (open != conn->in_header_block) {
        conn->in_header_block = open;
        timer_update(conn);
    }
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data)
{
    h2conn_t *conn = user_data;
    if (hd->type == NGHTTP2_SETTINGS && (hd->flags & NGHTTP2_FLAG_ACK) == 0)
        settings_begin(conn);
    /* a header block is open from its HEADERS frame to the frame with END_HEADERS (timeouts.header_read); any
     * other frame than CONTINUATION also means it ended (nghttp2 reports no CONTINUATION of a block it ignores) */
    if (hd->type != NGHTTP2_CONTINUATION || (hd->flags & NGHTTP2_FLAG_END_HEADERS) != 0)
        header_block(conn, hd->type == NGHTTP2_HEADERS && (hd->flags & NGHTTP2_FLAG_END_HEADERS) == 0, hd->stream_id);
    if (hd->type != NGHTTP2_HEADERS || hd->stream_id == 0 || (hd->stream_id & 1) == 0 ||
        hd->stream_id > nghttp2_session_get_last_proc_stream_id(session) || nghttp2_session_find_stream(session, hd->stream_id) != NULL)
        return 0;
    conn_error(conn, NGHTTP2_PROTOCOL_ERROR, &conn->worker->limit_stats.h2_connection_errors,
               "HEADERS for stream %" PRId32 ", not above the last stream opened (%" PRId32 ")", hd->stream_id,
               nghttp2_session_get_last_proc_stream_id(session));
    return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    h2conn_t *conn = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2stream_t *st = stream_new(conn, frame->hd.stream_id);
    if (st == NULL) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->super.cb = &ds_callbacks;
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    conn->recent_st = st; /* a header block is contiguous (RFC 9113 §4.3): its fields are this stream's */
    return 0;
}

/*
 * memcpy for a request field's name or value, without the call for the short ones most are: up to 32 bytes as
 * words, the last ones overlapping, within [src, src + n) and [dst, dst + n) only.
 */
static inline void field_copy(char *dst, const uint8_t *src, size_t n)
{
    uint64_t a, b, c, d;
    uint32_t x, y;
    if (n - 8 <= 8) { /* 8-16 */
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n - 4 <= 3) { /* 4-7 */
        memcpy(&x, src, 4);
        memcpy(&y, src + n - 4, 4);
        memcpy(dst, &x, 4);
        memcpy(dst + n - 4, &y, 4);
    } else if (n - 17 <= 15) { /* 17-32 */
        memcpy(&a, src, 8);
        memcpy(&b, src + 8, 8);
        memcpy(&c, src + n - 16, 8);
        memcpy(&d, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + 8, &b, 8);
        memcpy(dst + n - 16, &c, 8);
        memcpy(dst + n - 8, &d, 8);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            dst[i] = (char)src[i];
    } else {
        memcpy(dst, src, n);
    }
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data)
{
    (void)session;
    (void)flags;
    h2conn_t *conn = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2stream_t *st = stream_of(conn, frame->hd.stream_id);
    if (st == NULL || st->malformed)
        return 0;
    bool trailer = frame->headers.cat != NGHTTP2_HCAT_REQUEST;
    if (!field_check(st, name, namelen, value, valuelen, trailer)) {
        field_malformed(conn, st, frame, name, namelen, value, valuelen);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the rest of the block is not reported */
    }
    if (trailer || st->head_error != 0 || st->hb.mem == NULL)
        return 0; /* request trailers carry nothing a gRPC call uses */
    const ptc_limits_config_t *lim = &st->snap->config.limits;
    if (st->head_len + namelen + valuelen > lim->max_header_size || st->num_hdrs == lim->max_headers) {
        st->head_error = 431;
        return 0;
    }
    st->hb.offs[st->num_hdrs] = (ptc_head_off_t){(uint32_t)st->head_len, (uint32_t)namelen, (uint32_t)(st->head_len + namelen),
                                                 (uint32_t)valuelen};
    field_copy(st->hb.head + st->head_len, name, namelen);
    st->head_len += namelen;
    field_copy(st->hb.head + st->head_len, value, valuelen);
    st->head_len += valuelen;
    st->num_hdrs++;
    return 0;
}

/* ---- WebSockets over HTTP/2 (RFC 8441) ---- */

static h2stream_t *stream_of_io(ptc_ws_io_t *io)
{
    return (h2stream_t *)(void *)((char *)io - offsetof(h2stream_t, wsio));
}

static int wsio_write(ptc_ws_io_t *io)
{
    h2stream_t *st = stream_of_io(io);
    stream_resume(st);
    conn_want_send(st->conn);
    return 0;
}

static void wsio_pause_read(ptc_ws_io_t *io, bool pause)
{
    h2stream_t *st = stream_of_io(io);
    st->read_paused = pause;
    if (!pause)
        stream_credit_request(st);
}

/* The session is over: the stream ends after what it wrote (clean close), or is reset. */
static void wsio_close(ptc_ws_io_t *io, bool clean)
{
    h2stream_t *st = stream_of_io(io);
    st->ws = NULL;
    st->discard = true;
    st->read_paused = false;
    stream_credit_request(st);
    if (clean) {
        st->eof = true;
        stream_resume(st);
    } else {
        stream_reset(st, NGHTTP2_CANCEL);
    }
    conn_want_send(st->conn);
}

static const ptc_ws_io_cb_t wsio_callbacks = {wsio_write, wsio_pause_read, wsio_close};

/* An extended CONNECT (:protocol present): a WebSocket for a grpc-websockets call, or a refusal. */
static void on_connect(h2conn_t *conn, h2stream_t *st, ptc_request_t *req, ptc_iovec_t protocol)
{
    static const ptc_header_t accepted = {PTC_STRLIT("sec-websocket-protocol"), PTC_STRLIT(PTC_WS_SUBPROTOCOL)};
    static const ptc_header_t v13 = {PTC_STRLIT("sec-websocket-version"), PTC_STRLIT("13")};
    char why[300], body[340];
    int status = 501;

    if (!ptc_iov_eq_ci(protocol, PTC_STRLIT("websocket"))) {
        snprintf(why, sizeof(why), "extended CONNECT for '%.*s': only websocket is served", (int)PTC_MIN(protocol.len, (size_t)40),
                 protocol.base);
        ptc_log_info("h2 %s: stream %" PRId32 ": %s", conn->base.peer, st->id, why);
        PTC_STAT_INC(conn->worker->filter_stats.websocket_refused);
    } else {
        status = ptc_ws_check(conn->worker, req, why, sizeof(why));
    }
    if (status == 0) {
        nghttp2_data_provider prd = response_provider(st);
        st->wsio = (ptc_ws_io_t){&wsio_callbacks, evbuffer_new(), st->out};
        if (st->wsio.in == NULL || (st->ws = ptc_ws_new(conn->worker, st->snap, req, conn->tls, &st->wsio)) == NULL) {
            stream_reset(st, NGHTTP2_INTERNAL_ERROR);
            conn_want_send(conn);
            return;
        }
        PTC_STAT_INC(conn->worker->filter_stats.websocket_upgrades);
        if (submit_head(st, 200, &accepted, 1, NULL, 0, &prd) != 0)
            stream_reset(st, NGHTTP2_INTERNAL_ERROR);
        conn_want_send(conn);
        return;
    }
    snprintf(body, sizeof(body), "WebSocket refused: %s\n", why);
    ds_respond(&st->super, status, status == 426 ? &v13 : NULL, status == 426 ? 1 : 0, body);
}

/* A complete request head: pseudo-headers apart, then the shared policy step. */
static void on_request_head(h2conn_t *conn, h2stream_t *st)
{
    /* a CONNECT has no :path: an empty one, not a null pointer */
    ptc_request_t req = {.scheme = PTC_STRLIT("http"),
                         .path = PTC_STRLIT(""),
                         .peer = conn->base.peer,
                         .snap = st->snap,
                         .allow_native = true,
                         .transport = PTC_TRANSPORT_H2};
    ptc_iovec_t protocol = {NULL, 0};
    size_t n = 0;

    if (st->head_error != 0) {
        PTC_STAT_INC(conn->worker->limit_stats.headers_too_large);
        ptc_log_info("h2 %s: stream %" PRId32 ": request header fields too large (limits.max_header_size or max_headers)",
                     conn->base.peer, st->id);
        ds_respond(&st->super, 431, NULL, 0, "request header fields too large\n");
        return;
    }
    for (size_t i = 0; i < st->num_hdrs; i++) {
        ptc_iovec_t name = stream_header(st, i, false), value = stream_header(st, i, true);
        if (name.len != 0 && name.base[0] == ':') {
            if (ptc_iov_eq(name, PTC_STRLIT(":method")))
                req.method = value;
            else if (ptc_iov_eq(name, PTC_STRLIT(":path")))
                req.path = value;
            else if (ptc_iov_eq(name, PTC_STRLIT(":scheme")))
                req.scheme = value;
            else if (ptc_iov_eq(name, PTC_STRLIT(":authority")))
                req.authority = value;
            else if (ptc_iov_eq(name, PTC_STRLIT(":protocol")))
                protocol = value;
            continue;
        }
        if (ptc_iov_eq(name, PTC_STRLIT("host")) && req.authority.len == 0)
            req.authority = value;
        st->hb.views[n++] = (ptc_header_t){name, value};
    }
    req.headers = st->hb.views;
    req.num_headers = n;
    st->head_method = ptc_iov_eq_ci(req.method, PTC_STRLIT("HEAD"));
    if (protocol.base != NULL) { /* nghttp2 lets :protocol through only on CONNECT, once we enabled it */
        on_connect(conn, st, &req, protocol);
        ptc_worker_head_block_release(conn->worker, &st->hb);
        return;
    }
    ptc_request_handle(conn->worker, &st->super, &req, &st->hparam, &st->call);
    /* the CORS decision still points at the request's Origin: it must outlive the head block, which goes back
     * to the worker now (a later stream's head is written into it) */
    ptc_cors_decision_t *cors = &st->super.cors;
    if (cors->origin.len != 0 && st->cors_origin == NULL) {
        if ((st->cors_origin = malloc(cors->origin.len)) != NULL) {
            memcpy(st->cors_origin, cors->origin.base, cors->origin.len);
            cors->origin = ptc_iov(st->cors_origin, cors->origin.len);
        } else {
            cors->verdict = PTC_CORS_NONE; /* out of memory: no CORS fields rather than wrong ones */
            cors->origin = ptc_iov("", 0);
        }
    }
    /* nothing else points into the head any more (ptc_request_t's slices end with the policy step) */
    ptc_worker_head_block_release(conn->worker, &st->hb);
}

/* The control bucket's price of a frame: the frames that carry no request take a token (see the top). */
static void frame_price(h2conn_t *conn, const nghttp2_frame *frame)
{
    bool ack = (frame->hd.flags & NGHTTP2_FLAG_ACK) != 0;
    switch (frame->hd.type) {
    case NGHTTP2_DATA:
        if (frame->hd.length <= frame->data.padlen && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0)
            control_frame(conn, "empty DATA frame");
        break;
    case NGHTTP2_PING:
        control_frame(conn, ack ? "PING ACK" : "PING");
        break;
    case NGHTTP2_SETTINGS:
        if (!ack) {
            control_frame(conn, "SETTINGS");
            settings_check(conn, &frame->settings);
        }
        break;
    case NGHTTP2_WINDOW_UPDATE:
        control_frame(conn, "WINDOW_UPDATE");
        break;
    case NGHTTP2_PRIORITY:
        control_frame(conn, "PRIORITY");
        break;
    case NGHTTP2_GOAWAY:
        control_frame(conn, "GOAWAY");
        break;
    case NGHTTP2_RST_STREAM: /* of a live stream: on_stream_close prices it */
        if (nghttp2_session_get_stream_user_data(conn->session, frame->hd.stream_id) == NULL)
            control_frame(conn, "RST_STREAM");
        break;
    default:
        break;
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    h2conn_t *conn = user_data;
    h2stream_t *st = stream_of(conn, frame->hd.stream_id);
    bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    frame_price(conn, frame);
    if (frame->hd.type == NGHTTP2_HEADERS)
        header_block(conn, false, 0);
    if (st == NULL || conn->error_goaway || st->malformed)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS || (frame->hd.type == NGHTTP2_DATA && end)) {
        bool head = frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
        /* the head complete, trailers (which end the stream), the stream's end at its content-length */
        if (head ? !head_check(st) : frame->hd.type == NGHTTP2_HEADERS && !end) {
            stream_malformed(st);
            log_malformed(conn, frame, NGHTTP2_ERR_HTTP_MESSAGING);
            return 0;
        }
        if (end && !end_check(st)) {
            stream_malformed(st);
            if (frame->hd.type == NGHTTP2_HEADERS)
                log_malformed(conn, frame, NGHTTP2_ERR_HTTP_MESSAGING);
            return 0;
        }
        if (head)
            on_request_head(conn, st);
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && end && !st->request_ended) {
        st->request_ended = true;
        if (st->call != NULL)
            ptc_call_on_request_end(st->call);
        if (st->ws != NULL)
            ptc_ws_on_end(st->ws);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *user_data)
{
    h2stream_t *st = stream_of(user_data, stream_id);
    if (st == NULL || st->conn->error_goaway) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    if (!st->malformed) {
        st->body_length += (int64_t)len;
        if (st->content_length != -1 && st->body_length > st->content_length)
            stream_malformed(st); /* more DATA than its content-length */
    }
    if (st->malformed) {
        nghttp2_session_consume_connection(session, len);
        return 0;
    }
    st->unconsumed_req += len;
    if (flags & NGHTTP2_FLAG_END_STREAM) /* this frame's chunks are the stream's last DATA */
        st->data_ended = true;
    if (st->call != NULL && !st->discard)
        ptc_call_on_request_body(st->call, (const char *)data, len);
    if (st->ws != NULL && !st->discard) {
        /* credited as for a call: at once, except while the session's call applies backpressure */
        evbuffer_add(st->wsio.in, data, len);
        ptc_ws_on_input(st->ws);
    }
    stream_credit_request(st);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    h2conn_t *conn = user_data;
    h2stream_t *st = stream_of(conn, stream_id);
    if (st == NULL)
        return 0;
    if (error_code != NGHTTP2_NO_ERROR && st->call != NULL)
        ptc_log_info("h2 %s: stream %" PRId32 " reset by %s (%s)", st->conn->base.peer, stream_id,
                     st->rst_sent ? "the gateway" : "the client", nghttp2_http2_strerror(error_code));
    /* rapid reset: the client (or its error, when nghttp2 reset the stream) ended it before our side ended */
    if (!st->reset_by_us && !conn->error_goaway && !nghttp2_session_get_stream_local_close(session, stream_id) &&
        !bucket_take(&conn->resets, reset_burst(conn), reset_burst(conn) / RESET_REFILL_S))
        conn_error(conn, NGHTTP2_ENHANCE_YOUR_CALM, &conn->worker->limit_stats.h2_rapid_resets,
                   "rapid reset: more than %.0f streams reset before their response ended (%.0f a second after that)",
                   reset_burst(conn), reset_burst(conn) / RESET_REFILL_S);
    stream_free(st, error_code == NGHTTP2_NO_ERROR ? "stream closed"
                    : st->rst_sent             ? "stream reset by the gateway for a protocol error of the client"
                                               : "stream reset by the client");
    return 0;
}

/* Counts and logs what we refuse: RST_STREAM and GOAWAY frames with an error code (nghttp2's own, and ours). */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    h2conn_t *conn = user_data;
    ptc_limit_stats_t *stats = &conn->worker->limit_stats;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        h2stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        uint32_t code = frame->rst_stream.error_code;
        if (st != NULL)
            st->rst_sent = true;
        if (code == NGHTTP2_REFUSED_STREAM)
            PTC_STAT_INC(stats->h2_streams_refused);
        else if (st == NULL || !st->reset_by_us)
            PTC_STAT_INC(stats->h2_stream_errors);
        if (st == NULL || !st->reset_by_us)
            ptc_log_info("h2 %s: stream %" PRId32 ": RST_STREAM %s", conn->base.peer, frame->hd.stream_id,
                         nghttp2_http2_strerror(code));
    } else if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        conn->error_goaway = true;
        conn->goaway_out = true; /* RFC 9113 §5.4.1: after an error GOAWAY, close */
        if (!conn->goaway_counted) {
            /* nghttp2's own decision; ENHANCE_YOUR_CALM from nghttp2 is a SETTINGS frame with too many entries */
            uint32_t code = frame->goaway.error_code;
            PTC_STAT_INC(*(code == NGHTTP2_ENHANCE_YOUR_CALM ? &stats->h2_floods : &stats->h2_connection_errors));
            size_t len = PTC_MIN(frame->goaway.opaque_data_len, (size_t)200);
            ptc_log_info("h2 %s: %.*s: GOAWAY %s", conn->base.peer, len != 0 ? (int)len : 16,
                         len != 0 ? (const char *)frame->goaway.opaque_data : "connection error", nghttp2_http2_strerror(code));
        }
    }
    return 0;
}

/* nghttp2 found a frame invalid (it answers with RST_STREAM or GOAWAY, counted in on_frame_send). */
static int on_invalid_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, int lib_error_code, void *user_data)
{
    (void)session;
    h2conn_t *conn = user_data;
    ptc_log_info("h2 %s: invalid frame (type %u) on stream %" PRId32 ": %s", conn->base.peer, frame->hd.type, frame->hd.stream_id,
                 nghttp2_strerror(lib_error_code));
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    (void)session;
    (void)lib_error_code;
    h2conn_t *conn = user_data;
    ptc_log_info("h2 %s: %.*s", conn->base.peer, (int)PTC_MIN(len, (size_t)300), msg);
    return 0;
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags, void *user_data)
{
    (void)session;
    (void)flags;
    h2conn_t *conn = user_data;
    if (conn->goaway_out)
        return NGHTTP2_ERR_WOULDBLOCK; /* nothing follows an error GOAWAY */
    return ptc_h2_write(bufferevent_get_output(conn->bev), data, length);
}

/* ---- connection ---- */

/* Returns false when the connection was freed. */
static bool conn_send(h2conn_t *conn)
{
    if (conn->in_nghttp2 != 0) {
        conn->want_send = true;
        return true;
    }
    if (conn->bev == NULL && !conn_wake(conn))
        return false; /* a parked connection has something to send: a GOAWAY, a SETTINGS frame */
    conn->in_nghttp2++;
    if (ptc_h2_send(conn->session, conn->bev, conn->tls ? NULL : &conn->write_blocked, &conn->want_send) != 0)
        conn->want_close = true;
    conn->in_nghttp2--;
    if (conn->want_close) {
        conn_free(conn, "HTTP/2 send failed");
        return false;
    }
    bool reading = nghttp2_session_want_read(conn->session) && !conn->error_goaway;
    if (!reading && conn->timer_kind != TIMER_LINGER)
        timer_arm(conn, TIMER_LINGER, CLOSE_LINGER_MS); /* ending: a client that does not read cannot hold it open */
    if (conn->num_streams == 0 && !conn->base.idle_listed)
        ptc_conn_idle(&conn->base); /* woken (or its frame buffer used) by a control frame: released again later */
    if (evbuffer_get_length(bufferevent_get_output(conn->bev)) != 0)
        return true;
    if (conn->goaway_out) {
        conn_shut(conn);
    } else if (!reading && !nghttp2_session_want_write(conn->session)) {
        conn_free(conn, conn->goaway_sent ? "closed after GOAWAY" : "HTTP/2 session finished");
        return false;
    }
    return true;
}

/*
 * The error GOAWAY is out: shut the write side and read (dropping what comes) until the client closes or the
 * linger ends; closing with unread input would answer with a RST that can destroy the GOAWAY in flight.
 */
static void conn_shut(h2conn_t *conn)
{
    if (conn->shut)
        return;
    conn->shut = true;
    shutdown(bufferevent_getfd(conn->bev), SHUT_WR);
    bufferevent_enable(conn->bev, EV_READ);
}

/* How many CONTINUATION frames a header block may take: enough for max_header_size in 16 KiB frames, twice over. */
static size_t max_continuations(const ptc_limits_config_t *lim)
{
    return PTC_MAX((size_t)8, (size_t)lim->max_header_size / 8192 + 2);
}

/* nghttp2 stopped reading with a fatal error: the floods it detects end the connection as ours do. */
static void on_fatal(h2conn_t *conn, int rv)
{
    ptc_limit_stats_t *stats = &conn->worker->limit_stats;
    switch (rv) {
    case NGHTTP2_ERR_FLOODED:
        conn_error(conn, NGHTTP2_ENHANCE_YOUR_CALM, &stats->h2_floods, "SETTINGS or PING flood: more than %d ACKs not read",
                   MAX_OUTBOUND_ACK);
        break;
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
        conn_error(conn, NGHTTP2_ENHANCE_YOUR_CALM, &stats->h2_continuation_floods,
                   "CONTINUATION flood: a header block in more than %zu CONTINUATION frames",
                   max_continuations(&conn->base.snap->config.limits));
        break;
    case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
        conn_error(conn, NGHTTP2_PROTOCOL_ERROR, &stats->h2_connection_errors, "invalid connection preface");
        break;
    default:
        ptc_log_info("h2 %s: protocol error from the client: %s", conn->base.peer, nghttp2_strerror(rv));
        PTC_STAT_INC(stats->h2_connection_errors);
        conn_free(conn, "HTTP/2 protocol error");
        return;
    }
    conn_send(conn);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    h2conn_t *conn = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (conn->error_goaway) { /* closing: what the client still sends is dropped */
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    conn->in_nghttp2++;
    int rv = ptc_h2_feed(conn->session, in, &conn->want_close);
    conn->in_nghttp2--;
    if (conn->want_close) {
        conn_free(conn, "closed");
        return;
    }
    if (rv != 0) {
        on_fatal(conn, rv);
        return;
    }
    conn_send(conn);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    h2conn_t *conn = arg;
    if (!conn->tls)
        ptc_bev_write_drained(bev, &conn->write_blocked); /* back to direct writes once empty */
    conn_send(conn);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    (void)bev;
    h2conn_t *conn = arg;
    if (events & BEV_EVENT_EOF)
        conn_free(conn, "client closed the connection");
    else if (events & BEV_EVENT_ERROR)
        conn_free(conn, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void on_send_ev(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    h2conn_t *conn = arg;
    conn->send_queued = false;
    conn_send(conn);
}

static void on_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    h2conn_t *conn = arg;
    timer_kind_t kind = conn->timer_kind;
    conn->timer_kind = TIMER_NONE;
    switch (kind) {
    case TIMER_LINGER:
        conn_free(conn,
                  conn->shut ? "closed after GOAWAY (the client did not close)" : "the client did not read the GOAWAY in time");
        return;
    case TIMER_HEADER:
        /* a block nghttp2 ignores (a refused stream's) has no stream of ours: its end went unseen */
        if (conn->in_header_block && nghttp2_session_get_stream_user_data(conn->session, conn->header_block_stream) == NULL)
            conn->in_header_block = false;
        if (conn->in_header_block)
            conn_error(conn, NGHTTP2_ENHANCE_YOUR_CALM, &conn->worker->limit_stats.h2_header_timeouts,
                       "header block not completed within %" PRIu64 " ms (timeouts.header_read)",
                       conn->base.snap->config.timeouts.header_read_ms);
        timer_update(conn);
        return;
    case TIMER_IDLE:
        if (conn->num_streams != 0)
            return;
        ptc_log_debug("h2 %s: idle connection timed out", conn->base.peer);
        conn->goaway_sent = true;
        nghttp2_session_terminate_session(conn->session, NGHTTP2_NO_ERROR);
        conn_send(conn);
        return;
    case TIMER_NONE:
        return;
    }
}

static void conn_free(h2conn_t *conn, const char *reason)
{
    h2stream_t *st;
    if (conn->in_nghttp2 != 0) {
        conn->want_close = true;
        return;
    }
    ptc_log_debug("h2 %s: connection closed: %s", conn->base.peer, reason);
    while ((st = TAILQ_FIRST(&conn->streams)) != NULL)
        stream_free(st, reason);
    spare_free(conn);
    nghttp2_session_del(conn->session);
    evutil_socket_t parked_fd = conn->bev == NULL ? event_get_fd(conn->send_ev) : -1; /* >= 0 while parked */
    event_free(conn->timer);
    event_free(conn->send_ev); /* before the socket closes: while parked (or failing to wake) it watches it */
    if (conn->bev != NULL)
        bufferevent_free(conn->bev);
    else if (parked_fd >= 0)
        evutil_closesocket(parked_fd);
    ptc_conn_unregister(&conn->base);
    free(conn);
}

static h2conn_t *from_base(ptc_conn_t *c)
{
    return (h2conn_t *)(void *)((char *)c - offsetof(h2conn_t, base));
}

static void conn_drain(ptc_conn_t *c)
{
    h2conn_t *conn = from_base(c);
    if (conn->goaway_sent)
        return;
    /* GOAWAY with the last stream we processed: streams in flight finish, new ones are refused */
    conn->goaway_sent = true;
    /* (not terminate_session: that stops reading at once and would cut the streams in flight; once
     * GOAWAY is out and the last stream closes, nghttp2 wants neither read nor write and conn_send closes) */
    nghttp2_submit_goaway(conn->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(conn->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
    h2stream_t *st, *next;
    for (st = TAILQ_FIRST(&conn->streams); st != NULL; st = next) {
        next = TAILQ_NEXT(st, link);
        if (st->ws != NULL)
            ptc_ws_drain(st->ws);
    }
    conn_send(conn);
}

static void conn_fail_calls(ptc_conn_t *c, const char *message)
{
    h2conn_t *conn = from_base(c);
    h2stream_t *st, *next;
    for (st = TAILQ_FIRST(&conn->streams); st != NULL; st = next) {
        next = TAILQ_NEXT(st, link);
        if (st->call != NULL)
            ptc_call_abort(st->call, PTC_GRPC_UNAVAILABLE, message);
        else if (st->ws != NULL)
            ptc_ws_fail_calls(st->ws, message);
    }
    conn_drain(c);
}

static void conn_close(ptc_conn_t *c)
{
    conn_free(from_base(c), "gateway shutting down");
}

/*
 * Idle connections (no stream for PTC_CONN_IDLE_RELEASE_MS) give back what they do not need between streams:
 * the pages of nghttp2's 16 KiB frame buffer (its content is dead between sends; they come back zeroed on the
 * next frame), and on cleartext ones the bufferevent (evbuffers, events: about 1 KB, more with an empty read
 * chain left behind), parked as HTTP/1.1 connections are (ptc_conn_park(): send_ev watches the socket).
 * nghttp2's session stays: it holds the HPACK tables and the connection's state.
 */
static void on_parked(evutil_socket_t fd, short events, void *arg);

static void conn_release_idle(ptc_conn_t *c)
{
    h2conn_t *conn = from_base(c);
    if (conn->num_streams != 0 || conn->in_header_block || conn->goaway_sent || conn->error_goaway ||
        conn->timer_kind == TIMER_LINGER || conn->bev == NULL)
        return; /* busy (the last stream's end lists it again), closing, or released already */
    spare_free(conn);
    if (conn->in_nghttp2 != 0 || conn->want_send || conn->write_blocked || nghttp2_session_want_write(conn->session) ||
        evbuffer_get_length(bufferevent_get_output(conn->bev)) != 0 ||
        evbuffer_get_length(bufferevent_get_input(conn->bev)) != 0 ||
        event_pending(conn->send_ev, EV_READ | EV_WRITE | EV_TIMEOUT, NULL) != 0) {
        ptc_conn_idle(c); /* frames still going out: try again later */
        return;
    }
    if (conn->framebuf != NULL) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        madvise(conn->framebuf, conn->framebuf_size / page * page, MADV_DONTNEED); /* allocated page-aligned */
    }
    if (conn->tls) { /* bufferevent_openssl keeps its bufferevent (OpenSSL releases its own buffers: tls.c) */
        ptc_bev_trim_input(conn->bev); /* ~16 KiB an SSL_read reserved and did not fill */
        ptc_log_debug("h2 %s: idle: frame buffer released", conn->base.peer);
        return;
    }
    if (ptc_conn_park(conn->send_ev, conn->bev, on_parked, conn) != 0)
        return;
    conn->bev = NULL;
    ptc_log_debug("h2 %s: idle: buffers released", conn->base.peer);
}

/* Callbacks, watermark and events of conn->bev (a new connection's, or one made again by conn_wake()). */
static int bev_setup(h2conn_t *conn)
{
    bufferevent_setcb(conn->bev, on_read, on_write, on_event, conn);
    bufferevent_setwatermark(conn->bev, EV_WRITE, PTC_H2_OUTPUT_LOW_WATERMARK, 0);
    if (bufferevent_enable(conn->bev, EV_READ | EV_WRITE) != 0) /* a new descriptor's events allocate (libevent's evmap) */
        return -1;
    if (!conn->tls)
        bufferevent_disable(conn->bev, EV_WRITE); /* written by conn_send() itself: see ptc_bev_write_now() */
    return 0;
}

/* Makes the bufferevent of a parked connection again. False when the connection was freed (out of memory). */
static bool conn_wake(h2conn_t *conn)
{
    if (conn->bev != NULL)
        return true;
    conn->bev = ptc_conn_unpark(conn->send_ev);
    if (conn->bev == NULL || bev_setup(conn) != 0) {
        ptc_log_warn("h2 %s: out of memory waking an idle connection", conn->base.peer);
        conn_free(conn, "out of memory");
        return false;
    }
    ptc_conn_unparked(conn->send_ev, conn->bev, on_send_ev, conn);
    ptc_log_debug("h2 %s: idle connection woke up", conn->base.peer);
    return true;
}

static void on_parked(evutil_socket_t fd, short events, void *arg)
{
    h2conn_t *conn = arg;
    if (events & EV_WRITE) { /* conn_want_send() while parked (a reload's SETTINGS) */
        conn_send(conn);
        return;
    }
    int r = ptc_conn_parked_peek(fd);
    if (r < 0)
        conn_free(conn, errno == 0 ? "client closed the connection" : evutil_socket_error_to_string(errno));
    else if (r > 0)
        conn_wake(conn); /* its read event is active: the bytes are read in this loop iteration */
}

/* nghttp2's memory functions for one session: ptc_alloc's, and the frame buffer kept page-aligned. */
#define FRAMEBUF_MIN 16384 /* the frame buffer is a whole frame (NGHTTP2_FRAMEBUF_CHUNKLEN); nothing bigger comes first */

static void *ng_framebuf_realloc(void *ptr, size_t size, void *ud)
{
    h2conn_t *conn = ud;
    if (ptr == NULL && size >= FRAMEBUF_MIN && conn->framebuf_size == 0) {
        void *p = NULL;
        if (posix_memalign(&p, (size_t)sysconf(_SC_PAGESIZE), size) != 0)
            return NULL;
        conn->framebuf = p;
        conn->framebuf_size = size;
        return p;
    }
    void *p = ptc_realloc(ptr, size);
    if (ptr != NULL && ptr == conn->framebuf)
        conn->framebuf = size != 0 ? p : NULL;
    return p;
}

static void ng_framebuf_free(void *ptr, void *ud)
{
    h2conn_t *conn = ud;
    if (ptr != NULL && ptr == conn->framebuf)
        conn->framebuf = NULL;
    ptc_free(ptr);
}

static const ptc_conn_cb_t conn_callbacks = {
    .drain = conn_drain,
    .fail_calls = conn_fail_calls,
    .close = conn_close,
    .release_idle = conn_release_idle,
};

void ptc_h2conn_start(ptc_worker_t *w, struct bufferevent *bev, const char *peer, unsigned listener, bool tls)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    h2conn_t *conn = calloc(1, sizeof(*conn));

    if (conn == NULL || nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    conn->worker = w;
    conn->bev = bev;
    conn->tls = tls;
    TAILQ_INIT(&conn->streams);
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_http_messaging(opt, 1); /* checked here instead: see field_check */
    /* nghttp2's guards, explicit (see the top): its reset limiter is a backstop behind ours, looser so ours decides */
    const ptc_limits_config_t *lim = &w->snap->config.limits;
    double resets = 2.0 * lim->max_concurrent_streams;
    nghttp2_option_set_max_outbound_ack(opt, MAX_OUTBOUND_ACK);
    nghttp2_option_set_max_settings(opt, MAX_SETTINGS_ENTRIES);
    nghttp2_option_set_max_continuations(opt, max_continuations(lim));
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)(2 * (resets + CONTROL_BURST)),
                                               (uint64_t)(2 * (resets / RESET_REFILL_S + CONTROL_RATE)));
    nghttp2_mem mem = *ptc_alloc_nghttp2_mem();
    mem.mem_user_data = conn;
    mem.realloc = ng_framebuf_realloc;
    mem.free = ng_framebuf_free;
    if (nghttp2_session_server_new3(&conn->session, cbs, conn, opt, &mem) != 0)
        goto fail;
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    opt = NULL;
    cbs = NULL;
    if ((conn->timer = evtimer_new(w->base, on_timer, conn)) == NULL ||
        (conn->send_ev = event_new(w->base, -1, 0, on_send_ev, conn)) == NULL)
        goto fail;

    ptc_conn_register(w, &conn->base, &conn_callbacks, peer, listener);
    conn->control = (bucket_t){CONTROL_BURST, ptc_now_coarse_ms()};
    conn->resets = (bucket_t){reset_burst(conn), ptc_now_coarse_ms()};
    if (submit_settings(conn) != 0 ||
        nghttp2_session_set_local_window_size(conn->session, NGHTTP2_FLAG_NONE, 0, CONNECTION_WINDOW_SIZE) != 0) {
        ptc_log_warn("h2 %s: out of memory starting the HTTP/2 session", peer);
        conn_free(conn, "out of memory");
        return;
    }

    if (bev_setup(conn) != 0) {
        ptc_log_warn("h2 %s: out of memory accepting the connection", peer);
        conn_free(conn, "out of memory");
        return;
    }
    timer_update(conn);
    ptc_log_debug("h2 %s: HTTP/2 connection%s", conn->base.peer, tls ? " (TLS)" : " (prior knowledge)");
    if (!conn_send(conn))
        return;
    if (evbuffer_get_length(bufferevent_get_input(bev)) != 0)
        on_read(bev, conn); /* the preface was already read while the protocol was being detected */
    return;

fail:
    if (opt != NULL)
        nghttp2_option_del(opt);
    if (cbs != NULL)
        nghttp2_session_callbacks_del(cbs);
    if (conn != NULL) {
        if (conn->session != NULL)
            nghttp2_session_del(conn->session);
        if (conn->timer != NULL)
            event_free(conn->timer);
        free(conn);
    }
    bufferevent_free(bev);
}
