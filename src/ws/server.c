/*
 * The WebSocket adapter: one gRPC-Web call per WebSocket, improbable-eng's grpc-websockets protocol
 * (include/portico/ws.h), framed by wslay over the connection's bufferevent. It drives the same call
 * code as HTTP/1.1 and HTTP/2 through the downstream vtable (include/portico/call.h): the call sees a
 * gRPC-Web binary exchange, this file turns it into messages.
 *
 * Reading: wslay runs without message buffering; frame payloads reach us chunk by chunk. The first
 * message is the header block (collected up to limits.max_header_size, then parsed and merged over the
 * upgrade request's headers: the request then goes through the policy step like any other). Every later
 * message starts with a control byte: 0x00 and the bytes that follow are request body (streamed into the
 * call as they arrive: a 4 MiB message is never held whole), a message of the single byte 0x01 ends the
 * request. When the call asks for backpressure, the recv callback reports WOULDBLOCK and the socket is not
 * read.
 *
 * Writing: the response head becomes a 0x80 frame with the header block; body bytes (the call's gRPC-Web
 * frames, its final 0x80 trailer frame included) are sent as binary messages as they come; a response
 * without body (trailers-only, a local answer) becomes a header frame and a trailer frame. Then close
 * 1000. The pending byte count (bufferevent output and wslay's queue) is what the call compares with
 * call_buffer_size.
 *
 * Timers: the header block must arrive within timeouts.header_read; with websocket.ping_interval the
 * gateway pings, and a peer that has sent nothing (not even a pong) for two intervals is gone: the call is
 * cancelled. A browser closing the socket, or the connection dropping, cancels the upstream stream at once.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <wslay/wslay.h>

#include "portico/alloc.h"
#include "portico/call.h"
#include "portico/conn.h"
#include "portico/filter.h"
#include "portico/log.h"
#include "portico/worker.h"
#include "portico/ws.h"

#define WS_OUTPUT_WOULDBLOCK (64 * 1024) /* wslay stops writing above this; the rest waits in its queue */
#define CLOSE_LINGER_MS 5000             /* after our close frame: how long the peer may take to answer */

typedef enum {
    WS_HEAD,    /* waiting for the header block */
    WS_CALL,    /* a call runs (or was answered) */
    WS_CLOSING, /* our close frame is queued: the connection ends once it is out */
} ws_state_t;

typedef enum {
    MSG_NONE,    /* between messages */
    MSG_HEADERS, /* the header block */
    MSG_CONTROL, /* first byte of a message not seen yet */
    MSG_DATA,    /* 0x00: request body */
    MSG_END,     /* 0x01: must stay one byte long */
    MSG_IGNORE,  /* after an error: dropped */
} msg_t;

struct st_ptc_ws_t {
    ptc_downstream_t super; /* the call's view; first */
    ptc_ws_io_t *io;        /* the transport; NULL once it is gone */
    ptc_worker_t *worker;
    ptc_snapshot_t *snap;   /* pinned for the session's life */
    char peer[64];
    wslay_event_context_ptr ws;
    bool tls;
    ws_state_t state;
    msg_t msg;
    bool in_message;    /* a data message has started (continuation frames may follow) */
    bool frame_control; /* the current frame is a control frame (ping, pong, close) */
    bool read_paused;   /* the call applied backpressure */
    bool req_ended;
    bool close_queued;  /* closing was decided */
    bool close_pending; /* ... and its frame waits for the queued messages */
    uint16_t close_code;
    char close_reason[124];
    ptc_call_t *call;
    ptc_http_headers_param_t *hparam;
    /* the upgrade request, copied: path, authority and its header fields (merged under the block's) */
    char *up_mem;
    ptc_iovec_t up_path, up_authority;
    ptc_header_t *up_fields;
    size_t up_n;
    /* the header block: collected bytes, then the parsed request's working memory */
    char *hb;
    size_t hb_len;
    ptc_head_block_t views; /* ptc_request_t.headers for the policy step */
    struct event *timer;
    struct event *ping_timer;
    uint64_t last_rx_ms;
    bool in_recv; /* wslay_event_recv() runs: its callbacks must not send or free */
    /* Inside a ptc_downstream_cb_t callback the call must not be detached, nor the session freed, under the
     * call's feet: a failure there (out of memory) is finished by defer_ev once the callback has returned. */
    unsigned in_call;
    bool detach_deferred;      /* fail() wants the call detached */
    const char *free_deferred; /* ws_free() was asked for (a string literal) */
    struct event *defer_ev;
    bool *freed;  /* set when the session is freed (see ptc_ws_on_writable()) */
};

typedef struct st_ptc_ws_t ws_conn_t;

static void ws_free(ws_conn_t *c, const char *reason);
static void flush(ws_conn_t *c);

static const ptc_config_t *cfg_of(const ws_conn_t *c)
{
    return &c->snap->config;
}

static void timer_after(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(ev, &tv);
}

/* ---- closing ---- */

/*
 * Closes (once): the close frame follows the messages queued before it (wslay sends control frames ahead
 * of queued data, so flush() queues it only when they are out); the connection ends once it is written.
 */
static void close_with(ws_conn_t *c, uint16_t code, const char *reason)
{
    if (c->close_queued)
        return;
    c->close_queued = true;
    c->close_pending = true;
    c->close_code = code;
    size_t len = reason != NULL ? PTC_MIN(strlen(reason), sizeof(c->close_reason) - 1) : 0; /* a reason fits 123 bytes */
    memcpy(c->close_reason, reason != NULL ? reason : "", len);
    c->close_reason[len] = '\0';
    c->state = WS_CLOSING;
    timer_after(c->timer, CLOSE_LINGER_MS);
    if (c->read_paused && c->io != NULL) { /* the peer's close is to be read (what comes before it is dropped) */
        c->read_paused = false;
        c->io->cb->pause_read(c->io, false);
    }
    flush(c);
}

/* A protocol failure from the client: logged, answered with a close code, nothing more reaches the upstream. */
static void fail(ws_conn_t *c, uint16_t code, const char *what)
{
    if (c->state == WS_CLOSING) {
        c->msg = MSG_IGNORE; /* our close is out or on its way: what the client still sends is dropped */
        return;
    }
    ptc_log_info("websocket %s %.*s: closing (%u): %s", c->peer, (int)PTC_MIN(c->up_path.len, (size_t)200), c->up_path.base,
                 code, what);
    c->msg = MSG_IGNORE;
    if (code != PTC_WS_CLOSE_GOING_AWAY && code != PTC_WS_CLOSE_INTERNAL)
        PTC_STAT_INC(c->worker->filter_stats.websocket_protocol_errors);
    if (c->call != NULL && c->in_call != 0) {
        c->detach_deferred = true; /* with close_reason, below */
        event_active(c->defer_ev, EV_TIMEOUT, 0);
    } else if (c->call != NULL) {
        ptc_call_t *call = c->call;
        c->call = NULL;
        ptc_call_detach_downstream(call, what);
    }
    close_with(c, code, what);
}

/* ---- wslay I/O ---- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user_data)
{
    (void)ctx;
    (void)flags;
    ws_conn_t *c = user_data;
    struct evbuffer *in = c->io->in;
    if (c->read_paused || evbuffer_get_length(in) == 0) {
        wslay_event_set_error(c->ws, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    int n = evbuffer_remove(in, buf, len);
    return n > 0 ? n : 0;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user_data)
{
    (void)ctx;
    (void)flags;
    ws_conn_t *c = user_data;
    struct evbuffer *out = c->io->out;
    if (evbuffer_get_length(out) >= WS_OUTPUT_WOULDBLOCK) {
        wslay_event_set_error(c->ws, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (evbuffer_add(out, data, len) != 0) {
        wslay_event_set_error(c->ws, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Writes what wslay has queued; a finished close handshake frees the connection. */
static void flush(ws_conn_t *c)
{
    if (c->in_recv || c->io == NULL)
        return; /* inside wslay_event_recv(): ptc_ws_on_input() flushes once it returns (wslay is not reentrant) */
    if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) {
        ws_free(c, "write error");
        return;
    }
    if (c->close_pending && wslay_event_get_queued_msg_count(c->ws) == 0) {
        c->close_pending = false;
        if (!wslay_event_get_close_sent(c->ws))
            wslay_event_queue_close(c->ws, c->close_code, (const uint8_t *)c->close_reason, strlen(c->close_reason));
        if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) {
            ws_free(c, "write error");
            return;
        }
    }
    if (c->io->cb->write(c->io) != 0) {
        ws_free(c, "write error");
        return;
    }
    if (c->close_queued && wslay_event_get_close_sent(c->ws) && evbuffer_get_length(c->io->out) == 0 &&
        wslay_event_get_close_received(c->ws))
        ws_free(c, "closed");
}

static void queue_binary(ws_conn_t *c, const uint8_t *data, size_t len)
{
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, data, len};
    if (wslay_event_queue_msg(c->ws, &m) != 0 && !c->close_queued)
        fail(c, PTC_WS_CLOSE_INTERNAL, "out of memory");
}

/* ---- the request ---- */

/* The header block is complete: merged over the upgrade request, it goes through the policy step. */
static void start_call(ws_conn_t *c)
{
    const ptc_config_t *cfg = cfg_of(c);
    size_t n = 0;
    const char *why = NULL;

    if (ptc_worker_head_block(c->worker, c->snap, &c->views) != 0) {
        fail(c, PTC_WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    ptc_header_t *v = c->views.views;
    size_t room = cfg->limits.max_headers;
    int rv = ptc_ws_header_block_parse(c->hb, c->hb_len, v, room, &n, &why);
    if (rv != 0) {
        char msg[120];
        snprintf(msg, sizeof(msg), "malformed header block: %s", why);
        fail(c, rv == PTC_ETOOBIG ? PTC_WS_CLOSE_TOO_BIG : PTC_WS_CLOSE_PROTOCOL, msg);
        return;
    }
    /* Origin is the browser's (the upgrade's), never the page script's: the block cannot claim another */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!ptc_iov_eq(v[i].name, PTC_STRLIT("origin")))
            v[kept++] = v[i];
    n = kept;
    /* the upgrade's fields that the block does not name (Origin, Cookie, Authorization from the browser) */
    for (size_t i = 0; i < c->up_n; i++) {
        bool named = false;
        for (size_t j = 0; j < kept && !named; j++)
            named = ptc_iov_eq(v[j].name, c->up_fields[i].name);
        if (named)
            continue;
        if (n == room) {
            fail(c, PTC_WS_CLOSE_TOO_BIG, "the header block and the upgrade request hold more than limits.max_headers fields");
            return;
        }
        v[n++] = c->up_fields[i];
    }
    ptc_request_t req = {
        .method = PTC_STRLIT("POST"),
        .path = c->up_path,
        .scheme = c->tls ? PTC_STRLIT("https") : PTC_STRLIT("http"),
        .authority = c->up_authority,
        .headers = v,
        .num_headers = n,
        .peer = c->peer,
        .snap = c->snap,
        .allow_native = false,
        .transport = PTC_TRANSPORT_WEBSOCKET,
        .websocket = true,
    };
    c->state = WS_CALL;
    evtimer_del(c->timer);
    ptc_request_handle(c->worker, &c->super, &req, &c->hparam, &c->call);
    ptc_worker_head_block_release(c->worker, &c->views);
    free(c->hb);
    c->hb = NULL;
}

static void on_frame_start(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *arg, void *user_data)
{
    (void)ctx;
    ws_conn_t *c = user_data;
    c->last_rx_ms = ptc_now_coarse_ms();
    c->frame_control = (arg->opcode & 0x8) != 0;
    if (c->frame_control || c->msg == MSG_IGNORE)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        fail(c, PTC_WS_CLOSE_UNSUPPORTED, "text messages are not part of the protocol (binary only)");
        return;
    }
    if (arg->opcode == WSLAY_CONTINUATION_FRAME)
        return; /* the message goes on in the state it had */
    c->in_message = true;
    if (c->state == WS_HEAD) {
        c->msg = MSG_HEADERS;
    } else {
        c->msg = MSG_CONTROL;
    }
}

static void on_frame_chunk(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user_data)
{
    (void)ctx;
    ws_conn_t *c = user_data;
    const uint8_t *p = arg->data;
    size_t len = arg->data_length;

    if (c->frame_control || len == 0)
        return;
    switch (c->msg) {
    case MSG_HEADERS: {
        size_t cap = cfg_of(c)->limits.max_header_size;
        if (c->hb_len + len > cap) {
            fail(c, PTC_WS_CLOSE_TOO_BIG, "header block over limits.max_header_size");
            return;
        }
        if (c->hb == NULL && (c->hb = malloc(cap + 1)) == NULL) {
            fail(c, PTC_WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        memcpy(c->hb + c->hb_len, p, len);
        c->hb_len += len;
        return;
    }
    case MSG_CONTROL:
        if (p[0] == 0x00) {
            c->msg = MSG_DATA;
        } else if (p[0] == 0x01) {
            c->msg = MSG_END;
        } else {
            fail(c, PTC_WS_CLOSE_PROTOCOL, "a message that is neither data (0x00) nor the end of the request (0x01)");
            return;
        }
        p++;
        len--;
        if (c->msg == MSG_DATA && c->req_ended) {
            fail(c, PTC_WS_CLOSE_PROTOCOL, "data after the end of the request");
            return;
        }
        if (len == 0)
            return;
        /* fall through */
    case MSG_DATA:
        if (c->msg == MSG_END) {
            fail(c, PTC_WS_CLOSE_PROTOCOL, "the end-of-request message (0x01) carries data");
            return;
        }
        if (c->call != NULL)
            ptc_call_on_request_body(c->call, (const char *)p, len);
        return;
    case MSG_END:
        fail(c, PTC_WS_CLOSE_PROTOCOL, "the end-of-request message (0x01) carries data");
        return;
    default:
        return;
    }
}

static void on_frame_end(wslay_event_context_ptr ctx, void *user_data)
{
    ws_conn_t *c = user_data;
    (void)ctx;
    if (c->frame_control || c->msg == MSG_IGNORE)
        return;
    /* a message ends with a frame whose fin bit is set: wslay tells us through on_msg_recv below */
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user_data)
{
    (void)ctx;
    ws_conn_t *c = user_data;

    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        /* the browser closed (a tab closed, cancel()): the upstream stream is cancelled at once */
        if (c->call != NULL) {
            ptc_call_t *call = c->call;
            c->call = NULL;
            ptc_log_debug("websocket %s: closed by the client (%u)", c->peer, arg->status_code);
            ptc_call_detach_downstream(call, "the client closed the WebSocket");
        }
        c->close_queued = true; /* wslay answered the close */
        c->state = WS_CLOSING;
        return;
    }
    if ((arg->opcode & 0x8) != 0 || c->msg == MSG_IGNORE)
        return;
    msg_t kind = c->msg;
    c->msg = MSG_NONE;
    c->in_message = false;
    switch (kind) {
    case MSG_HEADERS:
        start_call(c);
        return;
    case MSG_CONTROL:
        return; /* an empty message: nothing */
    case MSG_END:
        if (!c->req_ended) {
            c->req_ended = true;
            if (c->call != NULL)
                ptc_call_on_request_end(c->call);
        }
        return;
    default:
        return;
    }
}

/* ---- bufferevent callbacks ---- */

void ptc_ws_on_input(ptc_ws_t *c)
{
    if (c->in_recv || c->io == NULL)
        return;
    c->in_recv = true;
    int rv = wslay_event_recv(c->ws);
    c->in_recv = false;
    if (rv != 0) {
        ws_free(c, rv == WSLAY_ERR_NOMEM ? "out of memory" : "protocol error");
        return;
    }
    if (!wslay_event_get_read_enabled(c->ws) && !c->close_queued) {
        /* wslay refused something (a message over the limit, a bad frame) and queued its close */
        ptc_log_info("websocket %s %.*s: closing: the client broke the framing (%u)", c->peer,
                     (int)PTC_MIN(c->up_path.len, (size_t)200), c->up_path.base, wslay_event_get_status_code_sent(c->ws));
        PTC_STAT_INC(c->worker->filter_stats.websocket_protocol_errors);
        if (c->call != NULL) {
            ptc_call_t *call = c->call;
            c->call = NULL;
            ptc_call_detach_downstream(call, "WebSocket framing error");
        }
        c->close_queued = true;
        c->state = WS_CLOSING;
        timer_after(c->timer, CLOSE_LINGER_MS);
    }
    flush(c);
}

void ptc_ws_on_writable(ptc_ws_t *c)
{
    if (c->io == NULL)
        return;
    bool freed = false;
    c->freed = &freed;
    flush(c);
    if (freed)
        return;
    c->freed = NULL;
    if (c->call != NULL && evbuffer_get_length(c->io->out) <= cfg_of(c)->limits.call_buffer_size / 2)
        ptc_call_on_downstream_writable(c->call);
}

void ptc_ws_on_end(ptc_ws_t *c)
{
    /* after the close handshake the session ends by itself; before it, the peer just left */
    if (!wslay_event_get_close_received(c->ws))
        ws_free(c, "the client ended the stream without a close frame");
}

void ptc_ws_close(ptc_ws_t *c, const char *reason)
{
    ws_free(c, reason);
}

void ptc_ws_detach(ptc_ws_t *c, const char *reason)
{
    c->io = NULL;
    ws_free(c, reason);
}

static void on_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ws_conn_t *c = arg;
    if (c->state == WS_CLOSING) {
        ws_free(c, "the client did not answer the close");
        return;
    }
    if (c->state == WS_HEAD) {
        char msg[100];
        snprintf(msg, sizeof(msg), "no header block within %" PRIu64 " ms", cfg_of(c)->timeouts.header_read_ms);
        fail(c, PTC_WS_CLOSE_POLICY, msg);
    }
}

/* What a call callback could not finish (see in_call). */
static void on_defer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ws_conn_t *c = arg;
    if (c->free_deferred != NULL) {
        ws_free(c, c->free_deferred);
        return;
    }
    if (c->detach_deferred && c->call != NULL) {
        ptc_call_t *call = c->call;
        c->call = NULL;
        c->detach_deferred = false;
        ptc_call_detach_downstream(call, c->close_reason);
    }
}

static void on_ping_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ws_conn_t *c = arg;
    uint64_t every = cfg_of(c)->websocket.ping_interval_ms;
    if (c->state == WS_CLOSING || every == 0)
        return;
    if (ptc_now_coarse_ms() - c->last_rx_ms > 2 * every) {
        fail(c, PTC_WS_CLOSE_GOING_AWAY, "no answer to pings: the client is gone");
        return;
    }
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"", 0};
    wslay_event_queue_msg(c->ws, &ping);
    timer_after(c->ping_timer, every);
    flush(c);
}

/* ---- the call's view (ptc_downstream_cb_t) ---- */

/* A 0x80 frame: a block of `name: value\r\n` lines. trailers: only the grpc-* status fields (else all but them). */
static void header_frame(ws_conn_t *c, const ptc_header_t *h, size_t n, bool trailers)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += h[i].name.len + h[i].value.len + 4;
    uint8_t *buf = malloc(len + 5);
    if (buf == NULL) {
        fail(c, PTC_WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    size_t off = 5;
    for (size_t i = 0; i < n; i++) {
        bool status = ptc_iov_eq(h[i].name, PTC_STRLIT("grpc-status")) || ptc_iov_eq(h[i].name, PTC_STRLIT("grpc-message")) ||
                      ptc_iov_eq(h[i].name, PTC_STRLIT("grpc-status-details-bin"));
        if (status != trailers)
            continue;
        memcpy(buf + off, h[i].name.base, h[i].name.len);
        off += h[i].name.len;
        memcpy(buf + off, ": ", 2);
        off += 2;
        memcpy(buf + off, h[i].value.base, h[i].value.len);
        off += h[i].value.len;
        memcpy(buf + off, "\r\n", 2);
        off += 2;
    }
    ptc_frame_header_encode(buf, PTC_FRAME_FLAG_TRAILER, (uint32_t)(off - 5));
    queue_binary(c, buf, off);
    free(buf);
}

static void ws_send_head(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, bool end_stream)
{
    ws_conn_t *c = (ws_conn_t *)ds;
    (void)status;
    if (c->state == WS_CLOSING)
        return;
    header_frame(c, headers, n, false);
    if (end_stream) {
        /* trailers-only, or an answer of the gateway: the status goes in a trailer frame, as always */
        header_frame(c, headers, n, true);
        close_with(c, PTC_WS_CLOSE_NORMAL, NULL);
        return;
    }
    flush(c);
}

static void ws_send_body(ptc_downstream_t *ds, struct evbuffer *buf)
{
    ws_conn_t *c = (ws_conn_t *)ds;
    size_t len = evbuffer_get_length(buf);
    if (c->state == WS_CLOSING || len == 0) {
        evbuffer_drain(buf, len);
        return;
    }
    unsigned char *p = evbuffer_pullup(buf, -1);
    if (p == NULL) {
        fail(c, PTC_WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    queue_binary(c, p, len);
    evbuffer_drain(buf, len);
    flush(c);
}

static void ws_send_end(ptc_downstream_t *ds)
{
    ws_conn_t *c = (ws_conn_t *)ds;
    close_with(c, PTC_WS_CLOSE_NORMAL, NULL);
}

static size_t ds_pending(ptc_downstream_t *ds)
{
    ws_conn_t *c = (ws_conn_t *)ds;
    return (c->io != NULL ? evbuffer_get_length(c->io->out) : 0) + wslay_event_get_queued_msg_length(c->ws);
}

static void ws_pause_read(ptc_downstream_t *ds, bool pause)
{
    ws_conn_t *c = (ws_conn_t *)ds;
    c->read_paused = pause;
    if (c->io == NULL)
        return;
    c->io->cb->pause_read(c->io, pause);
    if (!pause)
        ptc_ws_on_input(c); /* frames may wait in the input */
}

static void ws_on_call_done(ptc_downstream_t *ds)
{
    ws_conn_t *c = (ws_conn_t *)ds;
    c->call = NULL;
    if (!c->close_queued)
        close_with(c, PTC_WS_CLOSE_NORMAL, NULL);
}

static void ws_send_trailers(ptc_downstream_t *ds, const ptc_header_t *trailers, size_t n)
{
    /* native gRPC only (HTTP/2 trailers): a WebSocket call is gRPC-Web; keep the shape anyway */
    ws_conn_t *c = (ws_conn_t *)ds;
    header_frame(c, trailers, n, true);
    close_with(c, PTC_WS_CLOSE_NORMAL, NULL);
}

static void ws_respond(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, const char *body)
{
    /* an answer that is not gRPC (405, 415, a refused origin): the client library reads grpc-status */
    ws_conn_t *c = (ws_conn_t *)ds;
    char code[8], enc[600];
    (void)headers;
    (void)n;
    snprintf(code, sizeof(code), "%d", ptc_grpc_status_from_http(status));
    const char *msg = body != NULL ? body : "";
    size_t mlen = strlen(msg);
    while (mlen > 0 && msg[mlen - 1] == '\n')
        mlen--;
    ptc_header_t t[] = {{PTC_STRLIT("grpc-status"), ptc_iov(code, strlen(code))},
                        {PTC_STRLIT("grpc-message"), ptc_iov(enc, ptc_grpc_message_encode(enc, sizeof(enc), msg, mlen))}};
    header_frame(c, t, 2, false);
    header_frame(c, t, 2, true);
    ws_on_call_done(ds);
}

static void ws_abort(ptc_downstream_t *ds)
{
    ws_conn_t *c = (ws_conn_t *)ds;
    c->call = NULL;
    close_with(c, PTC_WS_CLOSE_INTERNAL, "the call failed inside a response message");
}

/*
 * The call's entry points: the session stays allocated, and the call attached, until each returns (see
 * in_call); what a failure inside wants done runs from defer_ev.
 */
#define WS_DS_ENTRY(name, params, args)                                                                                        \
    static void ds_##name params                                                                                               \
    {                                                                                                                          \
        ws_conn_t *c = (ws_conn_t *)ds;                                                                                        \
        c->in_call++;                                                                                                          \
        ws_##name args;                                                                                                        \
        c->in_call--;                                                                                                          \
    }
WS_DS_ENTRY(send_head, (ptc_downstream_t * ds, int status, const ptc_header_t *headers, size_t n, bool end_stream),
            (ds, status, headers, n, end_stream))
WS_DS_ENTRY(send_body, (ptc_downstream_t * ds, struct evbuffer *buf), (ds, buf))
WS_DS_ENTRY(send_end, (ptc_downstream_t * ds), (ds))
WS_DS_ENTRY(pause_read, (ptc_downstream_t * ds, bool pause), (ds, pause))
WS_DS_ENTRY(on_call_done, (ptc_downstream_t * ds), (ds))
WS_DS_ENTRY(send_trailers, (ptc_downstream_t * ds, const ptc_header_t *trailers, size_t n), (ds, trailers, n))
WS_DS_ENTRY(respond, (ptc_downstream_t * ds, int status, const ptc_header_t *headers, size_t n, const char *body),
            (ds, status, headers, n, body))
WS_DS_ENTRY(abort, (ptc_downstream_t * ds), (ds))

static const ptc_downstream_cb_t ds_callbacks = {
    .send_head = ds_send_head,
    .send_body = ds_send_body,
    .send_end = ds_send_end,
    .pending = ds_pending,
    .pause_read = ds_pause_read,
    .on_call_done = ds_on_call_done,
    .send_trailers = ds_send_trailers,
    .respond = ds_respond,
    .abort = ds_abort,
};

/* ---- the worker's view ---- */

void ptc_ws_drain(ptc_ws_t *c)
{
    if (c->call == NULL)
        close_with(c, PTC_WS_CLOSE_GOING_AWAY, "the gateway is shutting down");
    /* a call in progress finishes first; its end closes the socket */
}

void ptc_ws_fail_calls(ptc_ws_t *c, const char *message)
{
    if (c->call != NULL)
        ptc_call_abort(c->call, PTC_GRPC_UNAVAILABLE, message);
    else
        close_with(c, PTC_WS_CLOSE_GOING_AWAY, message);
}

/* ---- life cycle ---- */

static void ws_free(ws_conn_t *c, const char *reason)
{
    if (c->in_call != 0) {
        if (c->free_deferred == NULL)
            c->free_deferred = reason;
        event_active(c->defer_ev, EV_TIMEOUT, 0);
        return;
    }
    if (c->call != NULL) {
        ptc_call_t *call = c->call;
        c->call = NULL;
        ptc_call_detach_downstream(call, reason);
    }
    ptc_log_debug("websocket %s: closed: %s", c->peer, reason);
    if (c->freed != NULL)
        *c->freed = true;
    bool clean = wslay_event_get_close_sent(c->ws) && wslay_event_get_close_received(c->ws);
    wslay_event_context_free(c->ws);
    event_free(c->timer);
    event_free(c->ping_timer);
    event_free(c->defer_ev);
    ptc_worker_head_block_release(c->worker, &c->views);
    free(c->hb);
    free(c->up_mem);
    free(c->hparam);
    ptc_snapshot_release(c->snap);
    if (c->io != NULL)
        c->io->cb->close(c->io, clean);
    free(c);
}

/* Copies the upgrade request's path, authority and forwardable fields (hop-by-hop and WebSocket fields not). */
static bool copy_upgrade(ws_conn_t *c, const ptc_request_t *up)
{
    static const ptc_iovec_t skip[] = {PTC_STRLIT("connection"),
                                       PTC_STRLIT("upgrade"),
                                       PTC_STRLIT("sec-websocket-key"),
                                       PTC_STRLIT("sec-websocket-version"),
                                       PTC_STRLIT("sec-websocket-protocol"),
                                       PTC_STRLIT("sec-websocket-extensions"),
                                       PTC_STRLIT("host"),
                                       PTC_STRLIT("content-length")};
    size_t bytes = up->path.len + up->authority.len, n = 0;
    for (size_t i = 0; i < up->num_headers; i++)
        bytes += up->headers[i].name.len + up->headers[i].value.len;
    if ((c->up_mem = malloc(bytes + 1 + up->num_headers * sizeof(ptc_header_t))) == NULL)
        return false;
    c->up_fields = (ptc_header_t *)(void *)c->up_mem;
    char *p = c->up_mem + up->num_headers * sizeof(ptc_header_t);
#define COPY(dst, src)                                                                                                             \
    do {                                                                                                                           \
        memcpy(p, (src).base, (src).len);                                                                                          \
        (dst) = ptc_iov(p, (src).len);                                                                                             \
        p += (src).len;                                                                                                            \
    } while (0)
    COPY(c->up_path, up->path);
    COPY(c->up_authority, up->authority);
    for (size_t i = 0; i < up->num_headers; i++) {
        bool skipped = false;
        for (size_t k = 0; k < PTC_ARRAY_SIZE(skip) && !skipped; k++)
            skipped = ptc_iov_eq(up->headers[i].name, skip[k]);
        if (skipped)
            continue;
        COPY(c->up_fields[n].name, up->headers[i].name);
        COPY(c->up_fields[n].value, up->headers[i].value);
        n++;
    }
#undef COPY
    c->up_n = n;
    return true;
}

ptc_ws_t *ptc_ws_new(ptc_worker_t *w, ptc_snapshot_t *snap, const ptc_request_t *upgrade, bool tls, ptc_ws_io_t *io)
{
    static const struct wslay_event_callbacks callbacks = {recv_cb, send_cb, NULL, on_frame_start, on_frame_chunk, on_frame_end, on_msg};
    ws_conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL || wslay_event_context_server_init(&c->ws, &callbacks, c) != 0 ||
        (c->timer = evtimer_new(w->base, on_timer, c)) == NULL || (c->ping_timer = evtimer_new(w->base, on_ping_timer, c)) == NULL ||
        (c->defer_ev = event_new(w->base, -1, 0, on_defer, c)) == NULL || !copy_upgrade(c, upgrade)) {
        ptc_log_error("websocket %s: out of memory", upgrade->peer);
        if (c != NULL) {
            if (c->ws != NULL)
                wslay_event_context_free(c->ws);
            if (c->timer != NULL)
                event_free(c->timer);
            if (c->ping_timer != NULL)
                event_free(c->ping_timer);
            if (c->defer_ev != NULL)
                event_free(c->defer_ev);
            free(c->up_mem);
            free(c);
        }
        return NULL;
    }
    c->super.cb = &ds_callbacks;
    c->worker = w;
    c->snap = ptc_snapshot_ref(snap);
    c->io = io;
    c->tls = tls;
    c->state = WS_HEAD;
    snprintf(c->peer, sizeof(c->peer), "%s", upgrade->peer != NULL ? upgrade->peer : "-");
    const ptc_config_t *cfg = cfg_of(c);
    wslay_event_config_set_no_buffering(c->ws, 1);
    /* one gRPC frame per message, plus its control byte */
    wslay_event_config_set_max_recv_msg_length(c->ws, (uint64_t)cfg->limits.max_message_size + PTC_FRAME_HEADER_SIZE + 1);
    c->last_rx_ms = ptc_now_coarse_ms();
    timer_after(c->timer, cfg->timeouts.header_read_ms);
    if (cfg->websocket.ping_interval_ms != 0)
        timer_after(c->ping_timer, cfg->websocket.ping_interval_ms);
    ptc_log_debug("websocket %s %.*s: upgraded", c->peer, (int)PTC_MIN(c->up_path.len, (size_t)200), c->up_path.base);
    return c;
}

int ptc_ws_check(ptc_worker_t *w, const ptc_request_t *req, char *why, size_t len)
{
    const ptc_config_t *cfg = &req->snap->config;
    const ptc_header_t *version = NULL, *proto = NULL, *origin = NULL;
    const char *q = memchr(req->path.base, '?', req->path.len);
    ptc_iovec_t path = ptc_iov(req->path.base, q != NULL ? (size_t)(q - req->path.base) : req->path.len);
    int status = 400;

    for (size_t i = 0; i < req->num_headers; i++) {
        ptc_iovec_t name = req->headers[i].name;
        if (ptc_iov_eq(name, PTC_STRLIT("sec-websocket-version")))
            version = &req->headers[i];
        else if (ptc_iov_eq(name, PTC_STRLIT("sec-websocket-protocol")))
            proto = &req->headers[i];
        else if (ptc_iov_eq(name, PTC_STRLIT("origin")))
            origin = &req->headers[i];
    }
    const ptc_route_config_t *route = ptc_config_match_route(cfg, path);
    ptc_iovec_t o = origin != NULL ? ptc_iov_trim(origin->value) : ptc_iov("", 0);
    if (!cfg->websocket.enabled) {
        status = 403;
        snprintf(why, len, "the WebSocket transport is disabled (websocket.enabled: false)");
    } else if (version == NULL || !ptc_iov_eq(ptc_iov_trim(version->value), PTC_STRLIT("13"))) {
        status = 426;
        snprintf(why, len, "Sec-WebSocket-Version must be 13");
    } else if (proto == NULL || !ptc_iov_list_contains_ci(proto->value, PTC_STRLIT(PTC_WS_SUBPROTOCOL))) {
        snprintf(why, len, "Sec-WebSocket-Protocol does not offer grpc-websockets (the only subprotocol served)");
    } else if (route == NULL) {
        status = 404;
        snprintf(why, len, "no route for '%.*s'", (int)PTC_MIN(path.len, (size_t)200), path.base);
    } else if (ptc_cors_decide_for(ptc_config_cors_for(cfg, route), o, req->scheme, req->authority).verdict == PTC_CORS_DENIED) {
        ptc_log_warn("websocket %.*s from %s refused: origin '%.*s' is not allowed by the CORS policy", (int)PTC_MIN(path.len, (size_t)200),
                     path.base, req->peer, (int)PTC_MIN(o.len, (size_t)200), o.base);
        PTC_STAT_INC(w->filter_stats.websocket_refused);
        snprintf(why, len, "origin not allowed by the CORS policy");
        return 403;
    } else {
        return 0;
    }
    ptc_log_info("websocket %.*s from %s refused: %s", (int)PTC_MIN(path.len, (size_t)200), path.base, req->peer, why);
    PTC_STAT_INC(w->filter_stats.websocket_refused);
    return status;
}

/* ---- over an upgraded HTTP/1.1 connection ---- */

typedef struct st_ws_h1_t {
    ptc_ws_io_t io; /* first */
    ptc_conn_t base;
    struct bufferevent *bev;
    ptc_ws_t *ws;
    bool tls;
    bool write_blocked; /* cleartext: see ptc_bev_write_now() */
} ws_h1_t;

static int h1_write(ptc_ws_io_t *io)
{
    ws_h1_t *h = (ws_h1_t *)io;
    return h->tls ? 0 : ptc_bev_write_now(h->bev, &h->write_blocked);
}

static void h1_pause_read(ptc_ws_io_t *io, bool pause)
{
    ws_h1_t *h = (ws_h1_t *)io;
    if (pause)
        bufferevent_disable(h->bev, EV_READ);
    else
        bufferevent_enable(h->bev, EV_READ);
}

static void h1_close(ptc_ws_io_t *io, bool clean)
{
    (void)clean;
    ws_h1_t *h = (ws_h1_t *)io;
    bufferevent_free(h->bev);
    ptc_conn_unregister(&h->base);
    free(h);
}

static const ptc_ws_io_cb_t h1_io_callbacks = {h1_write, h1_pause_read, h1_close};

static void h1_on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    ptc_ws_on_input(((ws_h1_t *)arg)->ws);
}

static void h1_on_write(struct bufferevent *bev, void *arg)
{
    ws_h1_t *h = arg;
    if (!h->tls)
        ptc_bev_write_drained(bev, &h->write_blocked);
    ptc_ws_on_writable(h->ws);
}

static void h1_on_event(struct bufferevent *bev, short events, void *arg)
{
    (void)bev;
    ws_h1_t *h = arg;
    if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        ptc_ws_close(h->ws, events & BEV_EVENT_EOF ? "connection closed by the client" : "connection error");
}

static ws_h1_t *h1_from_base(ptc_conn_t *b)
{
    return (ws_h1_t *)(void *)((char *)b - offsetof(ws_h1_t, base));
}

static void h1_conn_drain(ptc_conn_t *b)
{
    ptc_ws_drain(h1_from_base(b)->ws);
}

static void h1_conn_fail_calls(ptc_conn_t *b, const char *message)
{
    ptc_ws_fail_calls(h1_from_base(b)->ws, message);
}

static void h1_conn_close(ptc_conn_t *b)
{
    ptc_ws_close(h1_from_base(b)->ws, "gateway shutting down");
}

static const ptc_conn_cb_t h1_conn_callbacks = {h1_conn_drain, h1_conn_fail_calls, h1_conn_close, NULL};

void ptc_ws_start(ptc_worker_t *w, struct bufferevent *bev, const ptc_request_t *upgrade, unsigned listener, bool tls)
{
    ws_h1_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        ptc_log_error("websocket %s: out of memory", upgrade->peer);
        bufferevent_free(bev);
        return;
    }
    h->io = (ptc_ws_io_t){&h1_io_callbacks, bufferevent_get_input(bev), bufferevent_get_output(bev)};
    h->bev = bev;
    h->tls = tls;
    ptc_conn_register(w, &h->base, &h1_conn_callbacks, upgrade->peer, listener);
    if ((h->ws = ptc_ws_new(w, h->base.snap, upgrade, tls, &h->io)) == NULL) {
        h1_close(&h->io, false);
        return;
    }
    const ptc_config_t *cfg = &h->base.snap->config;
    bufferevent_setcb(bev, h1_on_read, h1_on_write, h1_on_event, h);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_setwatermark(bev, EV_WRITE, cfg->limits.call_buffer_size / 2, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (!tls)
        bufferevent_disable(bev, EV_WRITE); /* written directly: see ptc_bev_write_now() */
    if (evbuffer_get_length(bufferevent_get_input(bev)) != 0)
        ptc_ws_on_input(h->ws); /* the first frames came with the upgrade (then the 101 goes out with what they caused) */
    else
        ptc_ws_on_writable(h->ws); /* the 101 */
}
