/*
 * The HTTP/2 client protocol of upstream connections (include/portico/h2client.h).
 *
 * Why not nghttp2's session: on a 10-byte unary call the client session cost ~10k instructions of the ~27k the
 * gateway spends (HPACK-encoding and Huffman-coding the request's fields afresh, copying and checking them,
 * allocating a stream and an outbound item, the priority tree), for a client that opens streams in order, sends one
 * HEADERS and some DATA on each and reads one response. This file does that and nothing more, by the RFC:
 *
 * - Sending: HEADERS (split into CONTINUATION frames beyond the server's MAX_FRAME_SIZE) encoded with the HPACK
 *   static table and literals "without indexing" or "never indexed" (RFC 7541 §6.2.2/§6.2.3), no Huffman: what we
 *   send never changes the server's dynamic table, so its SETTINGS_HEADER_TABLE_SIZE is irrelevant (§4.2). DATA
 *   within both send windows (RFC 9113 §6.9), round-robin over the streams that have some, a frame at a time.
 * - Receiving: frames are taken from contiguous memory (a frame that straddles buffer chains is pulled up, at most
 *   16,393 bytes, the largest frame we allow); header blocks go through nghttp2's HPACK inflater; response fields
 *   are checked as nghttp2 checked them (field names and values, pseudo-header fields, connection-specific fields,
 *   content-length against the DATA received); a malformed response is a stream error (RST_STREAM), a broken
 *   connection a connection error (GOAWAY, then the pool closes it).
 * - Flow control: our receive windows are credited only as the owner consumes (ptc_h2c_consume), announced when
 *   half a window is owed, like nghttp2's; DATA for a stream we withdrew is credited to the connection at once.
 *
 * Streams we withdrew or closed are forgotten at once: frames for them (which the server may have sent before it
 * saw our RST_STREAM) are ignored, header blocks still decoded to keep HPACK in step. A stream id the client never
 * opened is a connection error PROTOCOL_ERROR (the server cannot open streams: no push).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "portico/alloc.h"
#include "portico/h2client.h"
#include "portico/h2field.h"
#include "portico/log.h"

#define FRAME_HEADER 9
#define OUR_MAX_FRAME 16384       /* SETTINGS_MAX_FRAME_SIZE we accept: the default (we do not announce another) */
#define DEFAULT_WINDOW 65535
#define MAX_WINDOW 0x7fffffff
#define HB_MAX_BYTES (256 * 1024) /* a response header block, decoded */
#define HB_MAX_FRAMES 64          /* HEADERS + CONTINUATION frames of one block (a CONTINUATION flood ends here) */
#define CONTROL_BACKLOG (8 * 1024 * 1024) /* output beyond the DATA cap that control frames (PING and SETTINGS acks...) may fill */

enum { T_DATA, T_HEADERS, T_PRIORITY, T_RST_STREAM, T_SETTINGS, T_PUSH_PROMISE, T_PING, T_GOAWAY, T_WINDOW_UPDATE, T_CONTINUATION };
enum { F_END_STREAM = 0x1, F_ACK = 0x1, F_END_HEADERS = 0x4, F_PADDED = 0x8, F_PRIORITY = 0x20 };

/* ptc_upstream_stream_t.h2_flags */
enum {
    S_LOCAL_CLOSED = 0x1,  /* our END_STREAM sent */
    S_REMOTE_CLOSED = 0x2, /* the server's END_STREAM received */
    S_IN_SENDQ = 0x4,
    S_RESPONSE = 0x8,      /* the final response's header block received: the next one is the trailers */
};

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* ---- small helpers ---- */

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void frame_header(uint8_t *h, size_t len, uint8_t type, uint8_t flags, int32_t id)
{
    h[0] = (uint8_t)(len >> 16);
    h[1] = (uint8_t)(len >> 8);
    h[2] = (uint8_t)len;
    h[3] = type;
    h[4] = flags;
    put32(h + 5, (uint32_t)id & 0x7fffffffu);
}

/*
 * Frames but request DATA are staged in c->stage and go to out together (stage_out): an evbuffer_add costs some 200
 * instructions however little it adds, and a loop pass opens many streams. What is staged goes out before any DATA
 * (ptc_h2c_flush), at the end of ptc_h2c_feed, and when the stage is full.
 */
static bool stage_out(ptc_h2c_t *c)
{
    size_t n = c->staged;
    if (n == 0)
        return true;
    c->staged = 0;
    if (evbuffer_add(c->out, c->stage, n) != 0) {
        if (!c->failed) {
            c->failed = true;
            snprintf(c->error, sizeof(c->error), "out of memory writing a frame");
        }
        return false;
    }
    return true;
}

/* Room for n bytes at the end of the stage (what it held goes out first when it lacks them); NULL when n is more
 * than it holds, or on a failure (c->failed). */
static uint8_t *stage_room(ptc_h2c_t *c, size_t n)
{
    if (c->staged + n > sizeof(c->stage) && (!stage_out(c) || n > sizeof(c->stage)))
        return NULL;
    return c->stage + c->staged;
}

/* A frame with a small payload (control frames). Out of memory is remembered: the pool closes the connection. */
static void send_frame(ptc_h2c_t *c, uint8_t type, uint8_t flags, int32_t id, const void *payload, size_t len)
{
    len = PTC_MIN(len, 64);
    uint8_t *buf = stage_room(c, FRAME_HEADER + len);
    if (buf == NULL)
        return;
    frame_header(buf, len, type, flags, id);
    if (len != 0)
        memcpy(buf + FRAME_HEADER, payload, len);
    c->staged += FRAME_HEADER + len;
}

static void send_rst(ptc_h2c_t *c, int32_t id, uint32_t code)
{
    uint8_t p[4];
    put32(p, code);
    send_frame(c, T_RST_STREAM, 0, id, p, 4);
}

static void send_window_update(ptc_h2c_t *c, int32_t id, uint32_t inc)
{
    uint8_t p[4];
    put32(p, inc);
    send_frame(c, T_WINDOW_UPDATE, 0, id, p, 4);
}

/* A connection error: GOAWAY with code and the reason as debug data. Returns -1 for ptc_h2c_feed(). */
static int conn_error(ptc_h2c_t *c, uint32_t code, const char *fmt, ...) PTC_PRINTF(3, 4);
static int conn_error(ptc_h2c_t *c, uint32_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
    size_t dlen = PTC_MIN(strlen(c->error), 56);
    uint8_t p[64];
    put32(p, 0); /* the server cannot open streams: none was processed */
    put32(p + 4, code);
    memcpy(p + 8, c->error, dlen);
    send_frame(c, T_GOAWAY, 0, 0, p, 8 + dlen);
    c->failed = true;
    return -1;
}

/* ---- streams ---- */

static ptc_upstream_stream_t **bucket(const ptc_h2c_t *c, int32_t id)
{
    return &c->buckets[((uint32_t)id >> 1) & (c->nbuckets - 1)];
}

ptc_upstream_stream_t *ptc_h2c_stream(const ptc_h2c_t *c, int32_t id)
{
    ptc_upstream_stream_t *s = *bucket(c, id);
    while (s != NULL && s->stream_id != id)
        s = s->h2_next;
    return s;
}

/* Doubles the table when it has more streams than buckets; a failed allocation only makes the chains longer. */
static void maybe_grow(ptc_h2c_t *c)
{
    if (c->nstreams < c->nbuckets || c->nbuckets >= (1u << 16))
        return;
    uint32_t n = c->nbuckets * 2;
    ptc_upstream_stream_t **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (uint32_t i = 0; i < c->nbuckets; i++) {
        ptc_upstream_stream_t *s = c->buckets[i], *next;
        for (; s != NULL; s = next) {
            next = s->h2_next;
            ptc_upstream_stream_t **head = &b[((uint32_t)s->stream_id >> 1) & (n - 1)];
            s->h2_next = *head;
            *head = s;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

static void sendq_add(ptc_h2c_t *c, ptc_upstream_stream_t *s)
{
    if ((s->h2_flags & (S_IN_SENDQ | S_LOCAL_CLOSED)) == 0) {
        s->h2_flags |= S_IN_SENDQ;
        TAILQ_INSERT_TAIL(&c->sendq, s, send_link);
    }
}

static void sendq_remove(ptc_h2c_t *c, ptc_upstream_stream_t *s)
{
    if (s->h2_flags & S_IN_SENDQ) {
        s->h2_flags &= (uint8_t)~S_IN_SENDQ;
        TAILQ_REMOVE(&c->sendq, s, send_link);
    }
}

/* Forgets s (it stays the owner's). */
static void forget(ptc_h2c_t *c, ptc_upstream_stream_t *s)
{
    ptc_upstream_stream_t **p = bucket(c, s->stream_id);
    while (*p != s)
        p = &(*p)->h2_next;
    *p = s->h2_next;
    s->h2_next = NULL;
    sendq_remove(c, s);
    c->nstreams--;
}

static void stream_close(ptc_h2c_t *c, ptc_upstream_stream_t *s, uint32_t code)
{
    forget(c, s);
    c->cb->on_stream_close(c, s, code);
}

/* A stream error: RST_STREAM with code, and the stream ends with it. */
static void stream_error(ptc_h2c_t *c, ptc_upstream_stream_t *s, uint32_t code, const char *why)
{
    ptc_log_warn("%s: stream %" PRId32 ": %s: RST_STREAM %s", c->label, s->stream_id, why, nghttp2_http2_strerror(code));
    send_rst(c, s->stream_id, code);
    s->reset_reason = why;
    stream_close(c, s, code);
}

/* Both directions ended: the stream is done. */
static void maybe_done(ptc_h2c_t *c, ptc_upstream_stream_t *s)
{
    if ((s->h2_flags & (S_LOCAL_CLOSED | S_REMOTE_CLOSED)) == (S_LOCAL_CLOSED | S_REMOTE_CLOSED))
        stream_close(c, s, NGHTTP2_NO_ERROR);
}

/* ---- set-up ---- */

int ptc_h2c_init(ptc_h2c_t *c, const ptc_h2c_cb_t *cb, void *user, struct evbuffer *out, uint32_t stream_window,
                 uint32_t conn_window)
{
    memset(c, 0, sizeof(*c));
    c->cb = cb;
    c->user = user;
    c->label = "upstream";
    c->out = out;
    c->max_concurrent = UINT32_MAX;
    c->max_frame_size = OUR_MAX_FRAME;
    c->initial_window = DEFAULT_WINDOW;
    c->local_window = (int32_t)PTC_MIN(stream_window, (uint32_t)MAX_WINDOW);
    c->send_window = DEFAULT_WINDOW;
    c->recv_window_size = PTC_MAX((int64_t)PTC_MIN(conn_window, (uint32_t)MAX_WINDOW), DEFAULT_WINDOW);
    c->recv_window = c->recv_window_size;
    c->next_stream_id = 1;
    c->hpack_gen = 1;
    TAILQ_INIT(&c->sendq);
    c->nbuckets = 16;
    if ((c->buckets = calloc(c->nbuckets, sizeof(*c->buckets))) == NULL)
        return PTC_ENOMEM;
    if (nghttp2_hd_inflate_new2(&c->inflater, ptc_alloc_nghttp2_mem()) != 0) {
        free(c->buckets);
        c->buckets = NULL;
        return PTC_ENOMEM;
    }
    /* preface, SETTINGS (ENABLE_PUSH 0, INITIAL_WINDOW_SIZE), WINDOW_UPDATE opening the connection window */
    uint8_t buf[sizeof(PREFACE) - 1 + FRAME_HEADER + 12 + FRAME_HEADER + 4], *p = buf;
    memcpy(p, PREFACE, sizeof(PREFACE) - 1);
    p += sizeof(PREFACE) - 1;
    frame_header(p, 12, T_SETTINGS, 0, 0);
    p += FRAME_HEADER;
    p[0] = 0, p[1] = NGHTTP2_SETTINGS_ENABLE_PUSH, put32(p + 2, 0);
    p[6] = 0, p[7] = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, put32(p + 8, (uint32_t)c->local_window);
    p += 12;
    size_t len = (size_t)(p - buf);
    if (c->recv_window_size > DEFAULT_WINDOW) {
        frame_header(p, 4, T_WINDOW_UPDATE, 0, 0);
        put32(p + FRAME_HEADER, (uint32_t)(c->recv_window_size - DEFAULT_WINDOW));
        len += FRAME_HEADER + 4;
    }
    if (evbuffer_add(out, buf, len) != 0) {
        ptc_h2c_free(c);
        return PTC_ENOMEM;
    }
    return 0;
}

void ptc_h2c_free(ptc_h2c_t *c)
{
    if (c->inflater != NULL)
        nghttp2_hd_inflate_del(c->inflater);
    c->inflater = NULL;
    ptc_free(c->hbcache);
    c->hbcache = NULL;
    c->hb_rec = NULL;
    free(c->buckets);
    c->buckets = NULL;
    c->nstreams = 0;
}

bool ptc_h2c_can_open(const ptc_h2c_t *c)
{
    return !c->goaway && !c->failed && c->nstreams < c->max_concurrent && c->next_stream_id > 0;
}

/* ---- HPACK encoding (RFC 7541): static table names, plain literals ---- */

/* The static table index of a name (RFC 7541 Appendix A: the first entry with that name), 0 when it has none. */
static unsigned static_name(const uint8_t *name, size_t len)
{
#define N(s, i)                                                                                                                    \
    if (memcmp(name, s, sizeof(s) - 1) == 0)                                                                                       \
    return i
    switch (len) {
    case 3:
        N("age", 21);
        N("via", 60);
        return 0;
    case 4:
        N("date", 33);
        N("etag", 34);
        N("from", 37);
        N("host", 38);
        N("link", 45);
        N("vary", 59);
        return 0;
    case 5:
        N(":path", 4);
        N("allow", 22);
        N("range", 50);
        return 0;
    case 6:
        N("accept", 19);
        N("cookie", 32);
        N("expect", 35);
        N("server", 54);
        return 0;
    case 7:
        N(":method", 2);
        N(":scheme", 6);
        N(":status", 8);
        N("expires", 36);
        N("referer", 51);
        N("refresh", 52);
        return 0;
    case 8:
        N("if-match", 39);
        N("if-range", 42);
        N("location", 46);
        return 0;
    case 10:
        N(":authority", 1);
        N("set-cookie", 55);
        N("user-agent", 58);
        return 0;
    case 11:
        N("retry-after", 53);
        return 0;
    case 12:
        N("content-type", 31);
        N("max-forwards", 47);
        return 0;
    case 13:
        N("accept-ranges", 18);
        N("authorization", 23);
        N("cache-control", 24);
        N("content-range", 30);
        N("if-none-match", 41);
        N("last-modified", 44);
        return 0;
    case 14:
        N("accept-charset", 15);
        N("content-length", 28);
        return 0;
    case 15:
        N("accept-encoding", 16);
        N("accept-language", 17);
        return 0;
    case 16:
        N("content-encoding", 26);
        N("content-language", 27);
        N("content-location", 29);
        N("www-authenticate", 61);
        return 0;
    case 17:
        N("if-modified-since", 40);
        N("transfer-encoding", 57);
        return 0;
    case 18:
        N("proxy-authenticate", 48);
        return 0;
    case 19:
        N("content-disposition", 25);
        N("if-unmodified-since", 43);
        N("proxy-authorization", 49);
        return 0;
    case 25:
        N("strict-transport-security", 56);
        return 0;
    case 27:
        N("access-control-allow-origin", 20);
        return 0;
    default:
        return 0;
    }
#undef N
}

/* An HPACK integer with an n-bit prefix (§5.1); first holds the pattern bits above the prefix. */
static uint8_t *hpack_int(uint8_t *p, uint8_t first, unsigned bits, size_t v)
{
    size_t max = (1u << bits) - 1;
    if (v < max) {
        *p++ = (uint8_t)(first | v);
        return p;
    }
    *p++ = (uint8_t)(first | max);
    v -= max;
    while (v >= 128) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static uint8_t *hpack_str(uint8_t *p, const uint8_t *s, size_t len)
{
    p = hpack_int(p, 0, 7, len); /* H = 0: no Huffman */
    memcpy(p, s, len);
    return p + len;
}

/* Encodes one field; p has room for namelen + valuelen + 16. */
static uint8_t *hpack_field(uint8_t *p, const nghttp2_nv *nv)
{
    unsigned idx = static_name(nv->name, nv->namelen);
    if (idx == 2 && nv->valuelen == 4 && memcmp(nv->value, "POST", 4) == 0) {
        *p++ = 0x80 | 3; /* :method POST */
        return p;
    }
    if (idx == 6 && nv->valuelen == 4 && memcmp(nv->value, "http", 4) == 0) {
        *p++ = 0x80 | 6; /* :scheme http */
        return p;
    }
    if (idx == 6 && nv->valuelen == 5 && memcmp(nv->value, "https", 5) == 0) {
        *p++ = 0x80 | 7; /* :scheme https */
        return p;
    }
    /* literal without indexing (0000) or never indexed (0001), the name by index or literal */
    uint8_t first = (nv->flags & NGHTTP2_NV_FLAG_NO_INDEX) != 0 ? 0x10 : 0x00;
    p = hpack_int(p, first, 4, idx);
    if (idx == 0)
        p = hpack_str(p, nv->name, nv->namelen);
    return hpack_str(p, nv->value, nv->valuelen);
}

/* ---- sending ---- */

int ptc_h2c_submit(ptc_h2c_t *c, ptc_upstream_stream_t *s)
{
    const nghttp2_nv *nva;
    size_t n, bound = 0;
    uint8_t stack[2048], *buf = stack;

    if (c->next_stream_id <= 0)
        return PTC_ETOOBIG;
    s->cb->request_headers(s, &nva, &n);
    for (size_t i = 0; i < n; i++)
        bound += nva[i].namelen + nva[i].valuelen + 16;
    size_t frames = bound / c->max_frame_size + 1;
    size_t total = bound + frames * FRAME_HEADER;
    uint8_t *staged = stage_room(c, total); /* the usual small block: one frame (the stage is below a frame's size) */
    if (staged != NULL)
        buf = staged;
    else if (c->failed)
        return PTC_ENOMEM;
    else if (total > sizeof(stack) && (buf = ptc_malloc(total)) == NULL)
        return PTC_ENOMEM;

    /* the block after room for the HEADERS frame header; CONTINUATION headers are inserted below */
    uint8_t *p = buf + FRAME_HEADER;
    for (size_t i = 0; i < n; i++)
        p = hpack_field(p, &nva[i]);
    size_t block = (size_t)(p - buf) - FRAME_HEADER;
    int32_t id = c->next_stream_id;
    int rv = 0;
    if (staged != NULL) {
        frame_header(buf, block, T_HEADERS, F_END_HEADERS, id);
        c->staged += FRAME_HEADER + block;
    } else if (block <= c->max_frame_size) {
        frame_header(buf, block, T_HEADERS, F_END_HEADERS, id);
        rv = evbuffer_add(c->out, buf, FRAME_HEADER + block);
    } else {
        uint8_t hd[FRAME_HEADER];
        const uint8_t *q = buf + FRAME_HEADER;
        size_t left = block;
        for (uint8_t type = T_HEADERS; left > 0 && rv == 0; type = T_CONTINUATION) {
            size_t len = PTC_MIN(left, c->max_frame_size);
            frame_header(hd, len, type, len == left ? F_END_HEADERS : 0, id);
            rv = evbuffer_add(c->out, hd, FRAME_HEADER) != 0 || evbuffer_add(c->out, q, len) != 0 ? -1 : 0;
            q += len;
            left -= len;
        }
    }
    if (buf != stack && buf != staged)
        ptc_free(buf);
    if (rv != 0) { /* part of a header block may be out: the connection cannot go on */
        c->failed = true;
        snprintf(c->error, sizeof(c->error), "out of memory writing a request's HEADERS");
        return PTC_ENOMEM;
    }
    c->next_stream_id = id <= MAX_WINDOW - 2 ? id + 2 : -1;
    c->last_stream_id = id;
    s->stream_id = id;
    s->h2_flags = 0;
    s->send_window = c->initial_window;
    s->recv_window = c->local_window; /* our SETTINGS went before any HEADERS: the server counts with it */
    s->recv_credit = 0;
    s->content_length = -1;
    s->data_received = 0;
    s->reset_reason = NULL;
    s->data_deferred = false;
    ptc_upstream_stream_t **head = bucket(c, id);
    s->h2_next = *head;
    *head = s;
    c->nstreams++;
    maybe_grow(c);
    sendq_add(c, s);
    return 0;
}

bool ptc_h2c_flush(ptc_h2c_t *c, size_t cap)
{
    ptc_upstream_stream_t *s;
    uint8_t hd[FRAME_HEADER];

    while (stage_out(c) && (s = TAILQ_FIRST(&c->sendq)) != NULL) {
        if (evbuffer_get_length(c->out) >= cap)
            return true;
        sendq_remove(c, s);
        int32_t id = s->stream_id;
        int64_t max = PTC_MIN((int64_t)s->send_window, c->send_window);
        max = PTC_MAX(PTC_MIN(max, (int64_t)c->max_frame_size), 0);
        uint32_t flags = 0;
        ssize_t len = s->cb->read_request(s, (size_t)max, &flags);
        if (len == NGHTTP2_ERR_DEFERRED) {
            s->data_deferred = true;
            continue;
        }
        if (len < 0 || len > max) {
            stream_error(c, s, NGHTTP2_INTERNAL_ERROR, "request body cannot be read");
            continue;
        }
        bool eof = (flags & NGHTTP2_DATA_FLAG_EOF) != 0;
        if (len == 0 && !eof) {
            if (max == 0 && c->send_window <= 0) { /* the connection's window: every stream waits for it */
                TAILQ_INSERT_HEAD(&c->sendq, s, send_link);
                s->h2_flags |= S_IN_SENDQ;
                break;
            }
            continue; /* the stream's window: its WINDOW_UPDATE puts it back */
        }
        frame_header(hd, (size_t)len, T_DATA, eof ? F_END_STREAM : 0, id);
        if (s->cb->write_request(s, c->out, hd, (size_t)len) != 0) {
            c->failed = true;
            snprintf(c->error, sizeof(c->error), "out of memory writing request DATA");
            return false;
        }
        c->send_window -= len;
        if ((s = ptc_h2c_stream(c, id)) == NULL)
            continue;
        s->send_window -= (int32_t)len;
        if (eof) {
            s->h2_flags |= S_LOCAL_CLOSED;
            maybe_done(c, s);
        } else {
            sendq_add(c, s);
        }
    }
    return false; /* the stage is empty (or c->failed) */
}

void ptc_h2c_resume(ptc_h2c_t *c, ptc_upstream_stream_t *s)
{
    s->data_deferred = false;
    sendq_add(c, s);
}

static void credit(ptc_h2c_t *c, ptc_upstream_stream_t *s, size_t n);

void ptc_h2c_cancel(ptc_h2c_t *c, ptc_upstream_stream_t *s, size_t unconsumed)
{
    forget(c, s);
    if ((s->h2_flags & (S_LOCAL_CLOSED | S_REMOTE_CLOSED)) != (S_LOCAL_CLOSED | S_REMOTE_CLOSED))
        send_rst(c, s->stream_id, NGHTTP2_CANCEL);
    credit(c, NULL, unconsumed); /* the connection's share: nobody reads those bytes now */
}

/* Credits n bytes to the connection window (and to s's, when s is not NULL), announcing at half a window. */
static void credit(ptc_h2c_t *c, ptc_upstream_stream_t *s, size_t n)
{
    c->recv_credit += n;
    if (c->recv_credit >= (uint64_t)c->recv_window_size / 2) {
        send_window_update(c, 0, (uint32_t)c->recv_credit);
        c->recv_window += (int64_t)c->recv_credit;
        c->recv_credit = 0;
    }
    if (s == NULL || (s->h2_flags & S_REMOTE_CLOSED) != 0)
        return;
    s->recv_credit += (uint32_t)n;
    if (s->recv_credit >= (uint32_t)c->local_window / 2) {
        send_window_update(c, s->stream_id, s->recv_credit);
        s->recv_window += (int32_t)s->recv_credit;
        s->recv_credit = 0;
    }
}

void ptc_h2c_consume(ptc_h2c_t *c, ptc_upstream_stream_t *s, size_t n)
{
    credit(c, s, n);
}

/* ---- receiving: header blocks ---- */

bool ptc_h2_valid_name(const uint8_t *p, size_t len)
{
    if (len != 0 && p[0] == ':') { /* a pseudo-header field's name */
        p++;
        len--;
    }
    return ptc_h2_name_ok(p, len);
}

bool ptc_h2_valid_value(const uint8_t *p, size_t len)
{
    return ptc_h2_value_ok(p, len);
}

/* The checks of a decoded field that depend on nothing but the field (RFC 9113 §8.2, §8.2.2): NULL when it passes,
 * else what is wrong. */
static const char *field_syntax(const nghttp2_nv *nv)
{
    if (!ptc_h2_valid_name(nv->name, nv->namelen))
        return "invalid field name";
    if (!ptc_h2_valid_value(nv->value, nv->valuelen))
        return "invalid field value";
    if (nv->name[0] == ':')
        return NULL;
    if (ptc_h2_connection_specific(nv->name, nv->namelen))
        return "connection-specific field";
    if (PTC_H2_IS(nv->name, nv->namelen, "te") && !ptc_iov_eq_ci(ptc_iov((const char *)nv->value, nv->valuelen), PTC_STRLIT("trailers")))
        return "te other than trailers";
    return NULL;
}

/* The checks of a field (field_syntax passed) against the block and the stream so far (RFC 9113 §8.3.2, §8.1.1). */
static const char *field_in_block(ptc_h2c_t *c, ptc_upstream_stream_t *s, const nghttp2_nv *nv)
{
    if (nv->name[0] == ':') {
        if (c->hb_cat != NGHTTP2_HCAT_RESPONSE)
            return "pseudo-header field in trailers";
        if (c->hb_regular)
            return "pseudo-header field after a regular field";
        if (nv->namelen != 7 || memcmp(nv->name, ":status", 7) != 0)
            return "pseudo-header field other than :status in a response";
        if (c->hb_status)
            return "two :status fields";
        if (nv->valuelen != 3 || ptc_h2_content_length(nv->value, 3) < 100)
            return ":status is not a three-digit code";
        c->hb_status = true;
        if (nv->value[0] == '1') {
            if (nv->value[1] == '0' && nv->value[2] == '1')
                return ":status 101 over HTTP/2";
            c->hb_informational = true;
        }
        return NULL;
    }
    c->hb_regular = true;
    if (nv->namelen == 14 && memcmp(nv->name, "content-length", 14) == 0 && c->hb_cat == NGHTTP2_HCAT_RESPONSE) {
        int64_t n = ptc_h2_content_length(nv->value, nv->valuelen);
        if (n < 0 || (s->content_length >= 0 && s->content_length != n))
            return "invalid content-length";
        s->content_length = n;
    }
    return NULL;
}

/* A decoded field; syntax is field_syntax's answer for it (made by the caller, or kept with a cached block). */
static void hb_field(ptc_h2c_t *c, const nghttp2_nv *nv, const char *syntax)
{
    c->hb_bytes += nv->namelen + nv->valuelen + 32;
    if (!c->hb_forward)
        return;
    ptc_upstream_stream_t *s = ptc_h2c_stream(c, c->hb_stream);
    if (s == NULL) { /* withdrawn by a callback */
        c->hb_forward = false;
        return;
    }
    const char *bad = c->hb_bytes > HB_MAX_BYTES ? "response header block too large" : syntax;
    if (bad == NULL)
        bad = field_in_block(c, s, nv);
    if (bad != NULL) {
        c->hb_error = bad;
        c->hb_forward = false;
        return;
    }
    if (c->hb_informational)
        return;
    if (nv->namelen == c->watch_len && c->watch != NULL && memcmp(nv->name, c->watch, c->watch_len) == 0) {
        c->cb->on_watched(c, s, (nghttp2_headers_category)c->hb_cat, nv->value, nv->valuelen);
        if ((s = ptc_h2c_stream(c, c->hb_stream)) == NULL) {
            c->hb_forward = false;
            return;
        }
    }
    s->cb->on_header(s, (nghttp2_headers_category)c->hb_cat, nv->name, nv->namelen, nv->value, nv->valuelen);
}

/* ---- receiving: repeated header blocks ---- */

/*
 * A server answers call after call with the same few header blocks, and once its dynamic table holds their fields
 * they are the same bytes too (":status 200, content-type" as two indexed fields, "grpc-status 0" as one). A block
 * that leaves the dynamic table as it is (RFC 7541 §6: indexed fields, literals without indexing or never indexed,
 * no size update: "pure") decodes to the same fields whenever the table is as it was; the table changes only with
 * a block that is not pure. So pure blocks, as received in one HEADERS frame, are kept decoded with their fields'
 * field_syntax answers, stamped with the count of impure blocks decoded so far (hpack_gen); the same bytes under
 * the same stamp are answered from here, without the inflater (which stays in step: the block would not change it).
 */
#define HBC_SLOTS 4    /* blocks kept per connection: a response's headers and trailers, and a spare pair */
#define HBC_BLOCK 96   /* a kept block's encoded bytes at most */
#define HBC_FIELDS 8   /* its fields at most */
#define HBC_DATA 320   /* their decoded names and values at most */

struct st_ptc_h2c_hbslot_t {
    uint64_t gen;      /* c->hpack_gen it was decoded under; 0: none */
    uint16_t len;      /* of block */
    uint16_t nfields;
    uint16_t used;     /* of data */
    bool ok;           /* while recorded: every field fits and passed field_syntax */
    uint8_t block[HBC_BLOCK];
    nghttp2_nv nv[HBC_FIELDS]; /* into data */
    uint8_t data[HBC_DATA];
};
typedef struct st_ptc_h2c_hbslot_t hbc_slot_t;

struct st_ptc_h2c_hbcache_t {
    hbc_slot_t slot[HBC_SLOTS];
    unsigned next; /* the slot recorded into next */
};

/* Reads an HPACK integer (§5.1) with an n-bit prefix at *p; false when it is cut short or beyond 2^21 (not ours to judge). */
static bool hpack_read_int(const uint8_t **p, const uint8_t *end, unsigned bits, uint32_t *v)
{
    uint32_t max = (1u << bits) - 1, n = *(*p)++ & max;
    if (n == max) {
        for (unsigned shift = 0;; shift += 7) {
            if (*p == end || shift > 14)
                return false;
            uint8_t b = *(*p)++;
            n += (uint32_t)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
                break;
        }
    }
    *v = n;
    return true;
}

/* Whether a header block is pure (see above). Whatever it cannot read is not: the inflater judges that. */
static bool hpack_pure(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    uint32_t v;
    while (p < end) {
        if (*p & 0x80) { /* indexed (§6.1) */
            if (!hpack_read_int(&p, end, 7, &v) || v == 0)
                return false;
            continue;
        }
        if (*p & 0x60) /* 01: with incremental indexing (§6.2.1); 001: dynamic table size update (§6.3) */
            return false;
        if (!hpack_read_int(&p, end, 4, &v)) /* without indexing or never indexed (§6.2.2, §6.2.3): name index */
            return false;
        for (int strings = v == 0 ? 2 : 1; strings > 0; strings--) {
            if (p == end || !hpack_read_int(&p, end, 7, &v) || v > (size_t)(end - p))
                return false;
            p += v;
        }
    }
    return true;
}

/* The block kept decoded as these bytes under the current stamp, or NULL. */
static const hbc_slot_t *hbc_find(const ptc_h2c_t *c, const uint8_t *p, size_t len)
{
    if (c->hbcache == NULL)
        return NULL;
    for (unsigned i = 0; i < HBC_SLOTS; i++) {
        const hbc_slot_t *k = &c->hbcache->slot[i];
        if (k->gen == c->hpack_gen && k->len == len && memcmp(k->block, p, len) == 0)
            return k;
    }
    return NULL;
}

/* A slot to record a pure block of one frame into as the inflater decodes it (NULL when out of memory). */
static hbc_slot_t *hbc_record(ptc_h2c_t *c, const uint8_t *p, size_t len)
{
    if (c->hbcache == NULL && (c->hbcache = ptc_calloc(1, sizeof(*c->hbcache))) == NULL)
        return NULL;
    hbc_slot_t *k = &c->hbcache->slot[c->hbcache->next];
    c->hbcache->next = (c->hbcache->next + 1) % HBC_SLOTS;
    k->gen = 0;
    k->len = (uint16_t)len;
    k->nfields = k->used = 0;
    k->ok = true;
    memcpy(k->block, p, len);
    return k;
}

/* Sanitized and debug builds (the ASan integration runs, the fuzzers) decode a kept block again on every use and
 * stop if the fields differ: the inflater stays in step (the block is pure), so this changes nothing else. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HBC_VERIFY 1
#endif
#endif
#if !defined(HBC_VERIFY) && (defined(__SANITIZE_ADDRESS__) || !defined(NDEBUG))
#define HBC_VERIFY 1
#endif
#ifdef HBC_VERIFY
/* 0, or -1 when the inflater failed (out of memory: a connection error, as it would be without the kept block). */
static int hbc_verify(ptc_h2c_t *c, const hbc_slot_t *k)
{
    const uint8_t *in = k->block;
    size_t len = k->len;
    uint16_t i = 0;
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t rv = nghttp2_hd_inflate_hd2(c->inflater, &nv, &flags, in, len, 1);
        if (rv < 0)
            return conn_error(c, NGHTTP2_COMPRESSION_ERROR, "header block cannot be decoded (HPACK: %s)", nghttp2_strerror((int)rv));
        in += rv;
        len -= (size_t)rv;
        if (flags & NGHTTP2_HD_INFLATE_EMIT) {
            if (i == k->nfields || nv.namelen != k->nv[i].namelen || nv.valuelen != k->nv[i].valuelen ||
                memcmp(nv.name, k->nv[i].name, nv.namelen) != 0 || memcmp(nv.value, k->nv[i].value, nv.valuelen) != 0)
                break;
            i++;
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(c->inflater);
            if (i == k->nfields)
                return 0;
            break;
        }
    }
    ptc_log_error("%s: a kept header block decodes to other fields", c->label);
    abort();
}
#endif

/* A field of the block being recorded. */
static void hbc_add(hbc_slot_t *k, const nghttp2_nv *nv, const char *syntax)
{
    if (!k->ok || syntax != NULL || k->nfields == HBC_FIELDS || nv->namelen + nv->valuelen > (size_t)(HBC_DATA - k->used)) {
        k->ok = false;
        return;
    }
    nghttp2_nv *to = &k->nv[k->nfields++];
    to->name = k->data + k->used;
    memcpy(to->name, nv->name, nv->namelen);
    to->namelen = nv->namelen;
    to->value = to->name + nv->namelen;
    memcpy(to->value, nv->value, nv->valuelen);
    to->valuelen = nv->valuelen;
    to->flags = NGHTTP2_NV_FLAG_NONE;
    k->used = (uint16_t)(k->used + nv->namelen + nv->valuelen);
}

/* Feeds part of a header block to the inflater. Returns 0 or -1 (connection error). */
static int hb_inflate(ptc_h2c_t *c, const uint8_t *in, size_t len, bool final)
{
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t rv = nghttp2_hd_inflate_hd2(c->inflater, &nv, &flags, in, len, final);
        if (rv < 0)
            return conn_error(c, NGHTTP2_COMPRESSION_ERROR, "header block cannot be decoded (HPACK: %s)", nghttp2_strerror((int)rv));
        in += rv;
        len -= (size_t)rv;
        if (flags & NGHTTP2_HD_INFLATE_EMIT) {
            const char *syntax = c->hb_forward || c->hb_rec != NULL ? field_syntax(&nv) : NULL;
            if (c->hb_rec != NULL)
                hbc_add(c->hb_rec, &nv, syntax);
            hb_field(c, &nv, syntax);
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(c->inflater);
            if (c->hb_rec != NULL && c->hb_rec->ok)
                c->hb_rec->gen = c->hpack_gen; /* kept */
            c->hb_rec = NULL;
            return 0;
        }
        if ((flags & NGHTTP2_HD_INFLATE_EMIT) == 0 && len == 0)
            return 0;
    }
}

/* The block is complete: hand it over (or end the stream it broke). */
static void hb_end(ptc_h2c_t *c)
{
    c->hb_active = false;
    ptc_upstream_stream_t *s = ptc_h2c_stream(c, c->hb_stream);
    if (s == NULL || (!c->hb_forward && c->hb_error == NULL))
        return;
    if (c->hb_error == NULL && c->hb_cat == NGHTTP2_HCAT_RESPONSE && !c->hb_status)
        c->hb_error = "response without :status";
    if (c->hb_error == NULL && c->hb_informational && c->hb_end_stream)
        c->hb_error = "1xx response ending the stream";
    if (c->hb_error != NULL) {
        stream_error(c, s, NGHTTP2_PROTOCOL_ERROR, c->hb_error);
        return;
    }
    if (c->hb_informational)
        return; /* the final response follows */
    int32_t id = s->stream_id;
    if (c->hb_cat == NGHTTP2_HCAT_RESPONSE)
        s->h2_flags |= S_RESPONSE;
    if (c->hb_end_stream) {
        if (s->content_length >= 0 && (uint64_t)s->content_length != s->data_received) {
            stream_error(c, s, NGHTTP2_PROTOCOL_ERROR, "response body does not match its content-length");
            return;
        }
        s->h2_flags |= S_REMOTE_CLOSED; /* the request side goes on until its owner ends or withdraws it */
    }
    s->cb->on_headers_end(s, (nghttp2_headers_category)c->hb_cat, c->hb_end_stream);
    if (c->hb_end_stream && (s = ptc_h2c_stream(c, id)) != NULL)
        maybe_done(c, s);
}

/* ---- receiving: frames ---- */

/* Checks the id of a frame that belongs to a stream: 0 or one we never opened is a connection error. */
static int stream_id_check(ptc_h2c_t *c, const char *type, int32_t id)
{
    if (id == 0)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "%s on stream 0", type);
    if ((id & 1) == 0 || id > c->last_stream_id)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "%s on stream %" PRId32 ", which the gateway did not open", type, id);
    return 0;
}

/* The payload without its padding (PADDED flag): -1 on a bad pad length. */
static int unpad(ptc_h2c_t *c, uint8_t flags, const uint8_t **p, size_t *len, const char *type)
{
    if ((flags & F_PADDED) == 0)
        return 0;
    if (*len < 1 || (*p)[0] >= *len)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "%s padding longer than the frame", type);
    *len -= (size_t)(*p)[0] + 1;
    (*p)++;
    return 0;
}

/*
 * A DATA frame whose payload (flen bytes) is in v[0..nv) — one piece when it was contiguous, several when it
 * straddled buffer chains (handed over piece by piece: no copy).
 */
static int on_data(ptc_h2c_t *c, uint8_t flags, int32_t id, const struct evbuffer_iovec *v, int nv, size_t flen)
{
    size_t from = 0, to = flen; /* the data between the padding */
    if (stream_id_check(c, "DATA", id) != 0)
        return -1;
    if (flags & F_PADDED) {
        if (flen < 1 || ((const uint8_t *)v[0].iov_base)[0] >= flen)
            return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "DATA padding longer than the frame");
        from = 1;
        to = flen - ((const uint8_t *)v[0].iov_base)[0];
    }
    size_t len = to - from;
    if ((c->recv_window -= (int64_t)flen) < 0)
        return conn_error(c, NGHTTP2_FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    ptc_upstream_stream_t *s = ptc_h2c_stream(c, id);
    if (s == NULL) { /* withdrawn or closed: nobody reads these bytes */
        credit(c, NULL, flen);
        return 0;
    }
    const char *bad = NULL;
    uint32_t code = NGHTTP2_PROTOCOL_ERROR;
    if ((s->recv_window -= (int32_t)flen) < 0)
        bad = "DATA beyond the stream window", code = NGHTTP2_FLOW_CONTROL_ERROR;
    else if (s->h2_flags & S_REMOTE_CLOSED)
        bad = "DATA after the end of the stream", code = NGHTTP2_STREAM_CLOSED;
    else if ((s->h2_flags & S_RESPONSE) == 0)
        bad = "DATA before the response's HEADERS";
    else if (s->content_length >= 0 &&
             (s->data_received + len > (uint64_t)s->content_length ||
              ((flags & F_END_STREAM) && s->data_received + len != (uint64_t)s->content_length)))
        bad = "response body does not match its content-length";
    if (bad != NULL) {
        credit(c, NULL, flen);
        stream_error(c, s, code, bad);
        return 0;
    }
    s->data_received += len;
    if (flen != len)
        credit(c, s, flen - len); /* the padding is the gateway's to give back */
    if (flags & F_END_STREAM)
        s->h2_flags |= S_REMOTE_CLOSED;
    size_t off = 0, given = 0;
    for (int i = 0; i < nv && given < len; i++) {
        size_t a = PTC_MAX(off, from), b = PTC_MIN(off + v[i].iov_len, to);
        off += v[i].iov_len;
        if (a >= b)
            continue;
        s->cb->on_data(s, (const uint8_t *)v[i].iov_base + (a - (off - v[i].iov_len)), b - a);
        given += b - a;
        if ((s = ptc_h2c_stream(c, id)) == NULL) {
            credit(c, NULL, len - given); /* withdrawn meanwhile: the rest is nobody's */
            return 0;
        }
    }
    if (flags & F_END_STREAM) {
        s->cb->on_data_end(s);
        if ((s = ptc_h2c_stream(c, id)) != NULL)
            maybe_done(c, s);
    }
    return 0;
}

static int on_headers(ptc_h2c_t *c, uint8_t flags, int32_t id, const uint8_t *p, size_t len)
{
    if (stream_id_check(c, "HEADERS", id) != 0 || unpad(c, flags, &p, &len, "HEADERS") != 0)
        return -1;
    if (flags & F_PRIORITY) {
        if (len < 5)
            return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "HEADERS too short for its priority");
        p += 5;
        len -= 5;
    }
    ptc_upstream_stream_t *s = ptc_h2c_stream(c, id);
    c->hb_active = true;
    c->hb_stream = id;
    c->hb_end_stream = (flags & F_END_STREAM) != 0;
    c->hb_forward = s != NULL;
    c->hb_status = c->hb_regular = c->hb_informational = false;
    c->hb_cat = s != NULL && (s->h2_flags & S_RESPONSE) ? NGHTTP2_HCAT_HEADERS : NGHTTP2_HCAT_RESPONSE;
    c->hb_frames = 1;
    c->hb_bytes = 0;
    c->hb_error = NULL;
    if (s != NULL && (s->h2_flags & S_REMOTE_CLOSED)) {
        c->hb_forward = false;
        stream_error(c, s, NGHTTP2_STREAM_CLOSED, "HEADERS after the end of the stream");
    } else if (s != NULL && c->hb_cat == NGHTTP2_HCAT_HEADERS && !c->hb_end_stream) {
        c->hb_forward = false;
        c->hb_error = "trailers without END_STREAM";
    }
    bool whole = (flags & F_END_HEADERS) != 0;
    const hbc_slot_t *k = whole ? hbc_find(c, p, len) : NULL;
    if (k != NULL) { /* decoded before: the same fields */
#ifdef HBC_VERIFY
        if (hbc_verify(c, k) != 0)
            return -1;
#endif
        for (uint16_t i = 0; i < k->nfields; i++)
            hb_field(c, &k->nv[i], NULL);
        hb_end(c);
        return 0;
    }
    c->hb_rec = NULL;
    if (whole && hpack_pure(p, len)) {
        if (len <= HBC_BLOCK)
            c->hb_rec = hbc_record(c, p, len);
    } else {
        c->hpack_gen++; /* the table may change: what is kept was decoded under another */
    }
    if (hb_inflate(c, p, len, whole) != 0)
        return -1;
    if (whole)
        hb_end(c);
    return 0;
}

static int on_continuation(ptc_h2c_t *c, uint8_t flags, int32_t id, const uint8_t *p, size_t len)
{
    if (!c->hb_active || id != c->hb_stream)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "CONTINUATION without a header block to continue");
    if (++c->hb_frames > HB_MAX_FRAMES)
        return conn_error(c, NGHTTP2_ENHANCE_YOUR_CALM, "header block in more than %d frames", HB_MAX_FRAMES);
    if (hb_inflate(c, p, len, (flags & F_END_HEADERS) != 0) != 0)
        return -1;
    if (flags & F_END_HEADERS)
        hb_end(c);
    return 0;
}

static int on_settings(ptc_h2c_t *c, uint8_t flags, int32_t id, const uint8_t *p, size_t len)
{
    if (id != 0)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "SETTINGS on stream %" PRId32, id);
    if (flags & F_ACK) {
        if (len != 0)
            return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
        return 0;
    }
    if (len % 6 != 0)
        return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "SETTINGS of %zu bytes", len);
    for (size_t i = 0; i < len; i += 6) {
        uint16_t key = (uint16_t)(p[i] << 8 | p[i + 1]);
        uint32_t v = get32(p + i + 2);
        switch (key) {
        case NGHTTP2_SETTINGS_ENABLE_PUSH:
            if (v != 0)
                return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH %" PRIu32 " from a server", v);
            break;
        case NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS:
            c->max_concurrent = v;
            break;
        case NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE: {
            if (v > MAX_WINDOW)
                return conn_error(c, NGHTTP2_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE %" PRIu32, v);
            int64_t delta = (int64_t)v - c->initial_window;
            c->initial_window = (int32_t)v;
            for (uint32_t b = 0; b < c->nbuckets && delta != 0; b++)
                for (ptc_upstream_stream_t *s = c->buckets[b]; s != NULL; s = s->h2_next) {
                    if ((int64_t)s->send_window + delta > MAX_WINDOW)
                        return conn_error(c, NGHTTP2_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window");
                    s->send_window = (int32_t)(s->send_window + delta);
                    if (delta > 0 && !s->data_deferred)
                        sendq_add(c, s);
                }
            break;
        }
        case NGHTTP2_SETTINGS_MAX_FRAME_SIZE:
            if (v < 16384 || v > 16777215)
                return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE %" PRIu32, v);
            c->max_frame_size = v;
            break;
        case NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL:
            if (v > 1)
                return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL %" PRIu32, v);
            break;
        default: /* HEADER_TABLE_SIZE: our encoder uses no dynamic table; MAX_HEADER_LIST_SIZE: advisory; unknown: ignored */
            break;
        }
    }
    send_frame(c, T_SETTINGS, F_ACK, 0, NULL, 0);
    bool first = !c->got_settings;
    c->got_settings = true;
    c->cb->on_settings(c, first);
    return 0;
}

static int on_goaway(ptc_h2c_t *c, int32_t id, const uint8_t *p, size_t len)
{
    if (id != 0)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "GOAWAY on stream %" PRId32, id);
    if (len < 8)
        return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "GOAWAY of %zu bytes", len);
    int32_t last = (int32_t)(get32(p) & 0x7fffffffu);
    c->goaway = true;
    c->cb->on_goaway(c, last, get32(p + 4));
    /* streams the server did not process: refused (safe to retry elsewhere) */
    for (uint32_t b = 0; b < c->nbuckets; b++) {
        ptc_upstream_stream_t *s = c->buckets[b];
        while (s != NULL) {
            if (s->stream_id > last) {
                stream_close(c, s, NGHTTP2_REFUSED_STREAM); /* callbacks may withdraw others: start over */
                s = c->buckets[b];
            } else {
                s = s->h2_next;
            }
        }
    }
    return 0;
}

static int on_window_update(ptc_h2c_t *c, int32_t id, const uint8_t *p, size_t len)
{
    if (len != 4)
        return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "WINDOW_UPDATE of %zu bytes", len);
    uint32_t inc = get32(p) & 0x7fffffffu;
    if (id == 0) {
        if (inc == 0)
            return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection");
        if (c->send_window + inc > MAX_WINDOW)
            return conn_error(c, NGHTTP2_FLOW_CONTROL_ERROR, "WINDOW_UPDATE beyond 2^31-1 on the connection");
        c->send_window += inc;
        return 0;
    }
    if (stream_id_check(c, "WINDOW_UPDATE", id) != 0)
        return -1;
    ptc_upstream_stream_t *s = ptc_h2c_stream(c, id);
    if (s == NULL)
        return 0;
    if (inc == 0)
        stream_error(c, s, NGHTTP2_PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
    else if ((int64_t)s->send_window + inc > MAX_WINDOW)
        stream_error(c, s, NGHTTP2_FLOW_CONTROL_ERROR, "WINDOW_UPDATE beyond 2^31-1");
    else if ((s->send_window += (int32_t)inc) > 0 && !s->data_deferred)
        sendq_add(c, s);
    return 0;
}

static int frame(ptc_h2c_t *c, uint8_t type, uint8_t flags, int32_t id, const uint8_t *p, size_t len)
{
    if (c->hb_active && type != T_CONTINUATION)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "frame of type %u inside a header block", type);
    if (!c->got_settings && type != T_SETTINGS)
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "the server's first frame is not SETTINGS (type %u)", type);
    switch (type) {
    case T_DATA: {
        struct evbuffer_iovec v = {(void *)(uintptr_t)p, len};
        return on_data(c, flags, id, &v, 1, len);
    }
    case T_HEADERS:
        return on_headers(c, flags, id, p, len);
    case T_PRIORITY:
        if (id == 0)
            return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "PRIORITY on stream 0");
        return len != 5 ? conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "PRIORITY of %zu bytes", len) : 0;
    case T_RST_STREAM: {
        if (stream_id_check(c, "RST_STREAM", id) != 0)
            return -1;
        if (len != 4)
            return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "RST_STREAM of %zu bytes", len);
        ptc_upstream_stream_t *s = ptc_h2c_stream(c, id);
        if (s != NULL)
            stream_close(c, s, get32(p));
        return 0;
    }
    case T_SETTINGS:
        return on_settings(c, flags, id, p, len);
    case T_PUSH_PROMISE:
        return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "PUSH_PROMISE, though push is disabled");
    case T_PING:
        if (id != 0)
            return conn_error(c, NGHTTP2_PROTOCOL_ERROR, "PING on stream %" PRId32, id);
        if (len != 8)
            return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "PING of %zu bytes", len);
        if ((flags & F_ACK) == 0)
            send_frame(c, T_PING, F_ACK, 0, p, 8);
        return 0;
    case T_GOAWAY:
        return on_goaway(c, id, p, len);
    case T_WINDOW_UPDATE:
        return on_window_update(c, id, p, len);
    case T_CONTINUATION:
        return on_continuation(c, flags, id, p, len);
    default: /* extension frames are ignored (§5.5) */
        return 0;
    }
}

/* A DATA frame (its header at h, made contiguous) whose payload spans buffer chains: handed over in place. */
static int data_across_chains(ptc_h2c_t *c, struct evbuffer *in, const uint8_t *h, size_t flen)
{
    struct evbuffer_iovec v[8], *vp = v;
    uint8_t flags = h[4];
    int32_t id = (int32_t)(get32(h + 5) & 0x7fffffffu);
    struct evbuffer_ptr pos;
    if (evbuffer_ptr_set(in, &pos, FRAME_HEADER, EVBUFFER_PTR_SET) != 0)
        return conn_error(c, NGHTTP2_INTERNAL_ERROR, "cannot read a DATA frame");
    int n = evbuffer_peek(in, (ev_ssize_t)flen, &pos, NULL, 0);
    if (n > (int)PTC_ARRAY_SIZE(v) && (vp = ptc_malloc((size_t)n * sizeof(*vp))) == NULL)
        return conn_error(c, NGHTTP2_INTERNAL_ERROR, "out of memory reading a frame");
    n = evbuffer_peek(in, (ev_ssize_t)flen, &pos, vp, n);
    int rv = on_data(c, flags, id, vp, n, flen);
    if (vp != v)
        ptc_free(vp);
    evbuffer_drain(in, FRAME_HEADER + flen);
    return rv;
}

static int feed(ptc_h2c_t *c, struct evbuffer *in, const bool *stop)
{
    while (!*stop && !c->failed) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return 0;
        const uint8_t *base = v.iov_base;
        size_t off = 0, flen = 0;
        int rv = 0;
        /* every whole frame in the first chain, straight from it */
        while (off + FRAME_HEADER <= v.iov_len && rv == 0 && !*stop && !c->failed) {
            const uint8_t *h = base + off;
            flen = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
            if (flen > OUR_MAX_FRAME) {
                rv = conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "frame of %zu bytes (SETTINGS_MAX_FRAME_SIZE is %d)", flen, OUR_MAX_FRAME);
                break;
            }
            if (off + FRAME_HEADER + flen > v.iov_len)
                break;
            off += FRAME_HEADER + flen;
            rv = frame(c, h[3], h[4], (int32_t)(get32(h + 5) & 0x7fffffffu), h + FRAME_HEADER, flen);
        }
        evbuffer_drain(in, off);
        if (rv != 0 || c->failed)
            return -1;
        if (*stop)
            return 0;
        /* a frame across chains: DATA is handed over in place, anything else made contiguous (at most 16,393 bytes) */
        size_t avail = evbuffer_get_length(in);
        if (avail < FRAME_HEADER)
            return 0;
        const uint8_t *h = evbuffer_pullup(in, FRAME_HEADER);
        if (h == NULL)
            return conn_error(c, NGHTTP2_INTERNAL_ERROR, "out of memory reading a frame");
        flen = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        if (flen > OUR_MAX_FRAME)
            return conn_error(c, NGHTTP2_FRAME_SIZE_ERROR, "frame of %zu bytes (SETTINGS_MAX_FRAME_SIZE is %d)", flen, OUR_MAX_FRAME);
        if (avail < FRAME_HEADER + flen)
            return 0;
        if (h[3] == T_DATA && !c->hb_active && c->got_settings) { /* its payload stays where it is */
            if ((rv = data_across_chains(c, in, h, flen)) != 0)
                return rv;
            continue;
        }
        if (evbuffer_pullup(in, (ev_ssize_t)(FRAME_HEADER + flen)) == NULL)
            return conn_error(c, NGHTTP2_INTERNAL_ERROR, "out of memory reading a frame");
    }
    return c->failed ? -1 : 0;
}

int ptc_h2c_feed(ptc_h2c_t *c, struct evbuffer *in, const bool *stop)
{
    int rv = feed(c, in, stop);
    if (!stage_out(c) || rv != 0)
        return -1;
    if (evbuffer_get_length(c->out) > CONTROL_BACKLOG + 64 * 1024) {
        conn_error(c, NGHTTP2_ENHANCE_YOUR_CALM, "the server sends more control frames than it reads answers to");
        stage_out(c); /* the GOAWAY */
        return -1;
    }
    return 0;
}
