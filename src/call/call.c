/*
 * One RPC: gRPC-Web (downstream) ⇄ gRPC over HTTP/2 (upstream).
 *
 * Request side: the body (base64-decoded in 4-character quanta for text requests) is checked frame
 * by frame against the message size limit and queued (small pieces in the call itself, req_small; the rest in
 * req_buf), which the upstream stream's data provider drains with NGHTTP2_DATA_FLAG_NO_COPY (evbuffer chains move,
 * bytes are not copied). When more than limits.call_buffer_size waits the downstream stops reading.
 *
 * Response side: every upstream DATA chunk is re-framed at once (binary: as is; text: base64 per gRPC
 * frame, emitted in 3-byte-aligned pieces as they arrive, padded at the frame's end) and handed to the
 * downstream (a whole small frame as bytes, out_direct). The upstream stream's window is credited only while
 * the downstream keeps up.
 *
 * A call ends in exactly one of three ways downstream, each a well-formed gRPC-Web response:
 * trailers-only headers (grpc-status in the head, empty body), a body ended by one 0x80 trailer frame,
 * or a gateway-made error in either of those two shapes.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <zlib.h>

#include "portico/access_log.h"
#include "portico/alloc.h"
#include "portico/buffer.h"
#include "portico/call.h"
#include "portico/codec.h"
#include "portico/connect.h"
#include "portico/filter.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/upstream.h"
#include "portico/worker.h"

#define MAX_UPSTREAM_HEADER_BYTES (64 * 1024) /* response headers or trailers of one call */
#define MAX_UPSTREAM_HEADERS 256
#define NON_GRPC_BODY_PREFIX 512 /* bytes of a non-gRPC upstream body quoted in grpc-message */

/* Every log line about a call names it the same way: path, client, request id, trace and span. */
#define CALL_FMT "call %s from %s%s%s%s%s%s%s"
#define CALL_ARGS(c)                                                                                                               \
    (c)->path, (c)->info.peer, (c)->info.request_id[0] != '\0' ? " id " : "", (c)->info.request_id,                              \
        (c)->info.trace_id[0] != '\0' ? " trace " : "", (c)->info.trace_id, (c)->info.span_id[0] != '\0' ? " span " : "",           \
        (c)->info.span_id

/* A header block received from upstream, kept until it is forwarded. Names are lower-case (HTTP/2). */
typedef struct st_hdrstore_item_t {
    uint32_t name, name_len, value, value_len;
} hdrstore_item_t;

typedef struct st_hdrstore_t {
    char *buf;
    size_t len, cap;
    hdrstore_item_t *items;
    size_t n, items_cap;
    bool own_buf, own_items; /* heap storage (else the call's inline arrays, or none) */
    bool overflow;           /* a limit was hit; the block is unusable */
} hdrstore_t;

#define HDRS_INLINE_BYTES 512 /* a typical gRPC response head or trailer block fits without malloc */
#define HDRS_INLINE_ITEMS 12
#define REQ_SMALL 240 /* request bytes the call keeps in itself rather than in req_buf (see req_queue) */

typedef enum {
    RESP_NONE,         /* nothing sent downstream yet */
    RESP_HEADERS_SENT, /* head sent, body (frames) may follow */
    RESP_DONE,         /* the response is complete (or the downstream is gone) */
} resp_state_t;

struct st_ptc_call_t {
    ptc_upstream_stream_t us; /* the upstream stream (first: the pool's callbacks get a pointer to it) */
    ptc_worker_t *worker;
    ptc_snapshot_t *snap;     /* pinned for the whole call */
    const ptc_config_t *cfg;  /* &snap->config */
    ptc_downstream_t *ds; /* NULL once detached */
    ptc_upstream_client_t *up; /* the upstream the call goes to; NULL when none was found */
    uint64_t start_us;    /* monotonic: the request head was complete (the policy step began) */
    ptc_call_info_t info; /* ids, route, what the response filters read */
    ptc_transport_t transport;

    bool native; /* native gRPC (HTTP/2 downstream): headers, frames and trailers pass through unchanged */

    /* request */
    bool req_text;
    bool req_ended;  /* the downstream request body is complete */
    bool req_paused; /* we asked the downstream to stop reading */
    bool req_failed; /* request body rejected; further bytes are dropped */
    ptc_b64_decoder_t req_b64;
    ptc_frame_parser_t req_parser;
    uint16_t req_small_off, req_small_len; /* request bytes in req_small[off, len): before any in req_buf */
    struct evbuffer *req_buf;
    nghttp2_nv *nva;         /* the request's fields for upstream; borrowed from the request until nva_own() */
    size_t nva_len;
    bool nva_taken;          /* the upstream encoded nva (us_request_headers) */
    bool starting;           /* inside ptc_call_start()'s upstream start: the call is not freed there */
    char path[128]; /* for log lines, possibly truncated */

    /* response */
    bool resp_text;
    resp_state_t resp_state;
    char resp_ctype[64];
    hdrstore_t hdrs;        /* in hdrs_buf and hdrs_items (at the end) while they suffice */
    int upstream_status; /* :status of the upstream response, 0 until seen */
    bool upstream_grpc;  /* 200 with application/grpc content-type */
    bool upstream_ended; /* END_STREAM received */
    ptc_frame_parser_t resp_parser;
    ptc_b64_encoder_t resp_b64;
    struct evbuffer *out;  /* translated bytes on their way to the downstream */
    struct evbuffer *held; /* the current response frame, while it is small enough to be held whole */
    bool holding;          /* the current frame goes to held, not out */
    bool resp_in_frame;    /* a response frame's header was parsed and its end has not come (see drop_partial_frame) */
    bool resp_hdr_pending; /* resp_hdr is the current frame's header, not written yet (resp_frame_cb) */
    uint8_t resp_hdr[PTC_FRAME_HEADER_SIZE];
    bool held_lost;        /* out of memory writing to held: the held frame is incomplete and must be dropped */
    bool out_lost;         /* out of memory writing to out: the body is corrupt and can only be cut off */
    int resp_encoding;     /* 0: identity; else the zlib windowBits for the upstream's grpc-encoding */
    bool bad_encoding;     /* the upstream named a grpc-encoding we cannot decode */
    char encoding_name[32];
    z_stream *inflater;    /* decompressing the current compressed frame (gRPC-Web clients only) */
    bool gzip_ok;          /* the client accepts gzip and compression.gzip is on (gRPC-Web only) */
    bool head_pending;     /* the head waits in pending_head until the first message decides on gzip */
    hdrstore_t pending_head;
    bool first_seen;       /* first_len is the length of the first response message */
    uint32_t first_len;
    z_stream *deflater;    /* Content-Encoding: gzip of the response body */
    bool env_gzip;         /* Connect stream: connect-content-encoding gzip, messages compressed one by one (flag 0x01) */
    bool env_compress;     /* the current message is held whole (no header written yet) to be compressed at its end */
    uint8_t env_flags;     /* and its flags */
    z_stream *env_deflater; /* gzip of one message at a time (deflateReset between them) */
    size_t unconsumed;    /* upstream DATA bytes not yet credited back */
    char *non_grpc_body;  /* first bytes of a non-gRPC upstream body */
    size_t non_grpc_len;

    struct event *deadline;
    uint64_t timeout_ms;
    int final_status;

    /* what metrics and the access log say of the call (record_end) */
    uint64_t first_byte_us;     /* monotonic: the response head went out; 0: not yet */
    uint64_t upstream_start_us; /* monotonic: the upstream stream was asked for; 0: never */
    uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
    ptc_iovec_t final_message; /* set with final_status; valid until finish_downstream() returns */
    bool final_message_encoded; /* it is the upstream's grpc-message, percent-encoded */
    bool recorded;
    int http_status;        /* of the response head sent; 0: none yet */
    char upstream_host[80]; /* the endpoint that answered (access log only) */

    ptc_ctype_t ct;  /* the request's protocol; codec in codec[] */
    char codec[33];

    /* Connect (see the comment at connect_unary_end) */
    bool connect;         /* a Connect call: unary, GET or stream */
    bool connect_unary;   /* unary or GET: a bare message each way; the response is held until the trailers */
    bool req_get;         /* a GET: the message came in the query, a body is an error */
    bool req_hold;        /* unary POST without content-length: the body waits in req_held until it ends */
    struct evbuffer *req_held;
    uint8_t req_flags;    /* unary: the flags of the one request message (compressed or not) */
    uint64_t req_left;    /* unary POST with content-length: body bytes still to come */
    const char *cache_control; /* a GET on a route with get_cache_control: for successful responses */

    /* scratch space, last: not zeroed when the call is made (hdrs' and req_small's counts say what of it is in use) */
    uint8_t req_small[REQ_SMALL];
    char hdrs_buf[HDRS_INLINE_BYTES];
    hdrstore_item_t hdrs_items[HDRS_INLINE_ITEMS];
};

static void maybe_free(ptc_call_t *call);

/* Copies s into a NUL-terminated fixed buffer, truncating. */
static void copy_str(char *dst, size_t cap, ptc_iovec_t s)
{
    size_t n = PTC_MIN(s.len, cap - 1);
    memcpy(dst, s.base, n);
    dst[n] = '\0';
}

/* Withdraws the upstream stream (or queue entry), returning the window of bytes never credited. */
static void cancel_upstream(ptc_call_t *call)
{
    if (call->us.client != NULL)
        call->us.client->cb->cancel(&call->us, call->unconsumed);
    call->unconsumed = 0;
}

/* Credits n bytes of response DATA to the upstream stream's window. */
static void upstream_consume(ptc_call_t *call, size_t n)
{
    if (call->us.client != NULL)
        call->us.client->cb->consume(&call->us, n);
}

static void upstream_resume_data(ptc_call_t *call)
{
    if (call->us.client != NULL)
        call->us.client->cb->resume_data(&call->us);
}

/* ---- header store ---- */

static void hdrstore_init(hdrstore_t *h, char *buf, size_t cap, hdrstore_item_t *items, size_t icap)
{
    memset(h, 0, sizeof(*h));
    h->buf = buf;
    h->cap = cap;
    h->items = items;
    h->items_cap = icap;
}

static void hdrstore_reset(hdrstore_t *h)
{
    h->len = 0;
    h->n = 0;
    h->overflow = false;
}

static void hdrstore_dispose(hdrstore_t *h)
{
    if (h->own_buf)
        free(h->buf);
    if (h->own_items)
        free(h->items);
    memset(h, 0, sizeof(*h));
}

/* Grows *p (capacity *cap elements of size sz) to hold `need`; the first growth leaves inline storage. */
static bool grow(void **p, size_t *cap, bool *own, size_t need, size_t sz, size_t min)
{
    size_t ncap = PTC_MAX(PTC_MAX(*cap * 2, need), min);
    void *np = *own ? realloc(*p, ncap * sz) : malloc(ncap * sz);
    if (np == NULL)
        return false;
    if (!*own && *cap != 0)
        memcpy(np, *p, *cap * sz);
    *p = np;
    *cap = ncap;
    *own = true;
    return true;
}

static void hdrstore_add(hdrstore_t *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (h->overflow)
        return;
    if (h->len + nlen + vlen > MAX_UPSTREAM_HEADER_BYTES || h->n >= MAX_UPSTREAM_HEADERS) {
        h->overflow = true;
        return;
    }
    if ((h->len + nlen + vlen > h->cap && !grow((void **)&h->buf, &h->cap, &h->own_buf, h->len + nlen + vlen, 1, 1024)) ||
        (h->n == h->items_cap && !grow((void **)&h->items, &h->items_cap, &h->own_items, h->n + 1, sizeof(*h->items), 16))) {
        h->overflow = true;
        return;
    }
    h->items[h->n] = (hdrstore_item_t){(uint32_t)h->len, (uint32_t)nlen, (uint32_t)(h->len + nlen), (uint32_t)vlen};
    memcpy(h->buf + h->len, name, nlen);
    h->len += nlen;
    if (vlen != 0)
        memcpy(h->buf + h->len, value, vlen);
    h->len += vlen;
    h->n++;
}

static ptc_header_t hdrstore_get(const hdrstore_t *h, size_t i)
{
    return (ptc_header_t){ptc_iov(h->buf + h->items[i].name, h->items[i].name_len),
                          ptc_iov(h->buf + h->items[i].value, h->items[i].value_len)};
}

/* name in lower case: the store holds HTTP/2 fields, and nghttp2 refuses upper-case names (RFC 9113 §8.2.1). */
static const ptc_header_t *hdrstore_find(const hdrstore_t *h, ptc_iovec_t name, ptc_header_t *out)
{
    for (size_t i = 0; i < h->n; i++) {
        if (h->items[i].name_len == name.len && memcmp(h->buf + h->items[i].name, name.base, name.len) == 0) {
            *out = hdrstore_get(h, i);
            return out;
        }
    }
    return NULL;
}

/* Response header fields that describe the upstream hop, not the response: never forwarded. */
static bool is_hop_header(ptc_iovec_t name)
{
    static const ptc_iovec_t skip[] = {PTC_STRLIT("content-type"),     PTC_STRLIT("content-length"), PTC_STRLIT("connection"),
                                       PTC_STRLIT("keep-alive"),       PTC_STRLIT("transfer-encoding"), PTC_STRLIT("upgrade"),
                                       PTC_STRLIT("proxy-connection"), PTC_STRLIT("te"),             PTC_STRLIT("trailer")};
    if (name.len > 0 && name.base[0] == ':')
        return true;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(skip); i++)
        if (ptc_iov_eq(name, skip[i])) /* HTTP/2 names: lower case */
            return true;
    return false;
}

/* ---- downstream output ---- */

static ptc_iovec_t resp_ctype(const ptc_call_t *call)
{
    return ptc_iov(call->resp_ctype, strlen(call->resp_ctype));
}

/*
 * Sends a response head: content-type, extra, then the upstream's header fields (hop-by-hop removed),
 * edited by the response filters of the call's chain (request id, header rules).
 */
static void send_head_as(ptc_call_t *call, int status, ptc_iovec_t ctype, const hdrstore_t *hs, bool end_stream, const ptc_header_t *extra,
                         size_t nextra)
{
    ptc_header_t stack[48], *hv = stack;
    size_t room = call->info.chain != NULL ? call->info.chain->extra_fields : 0, want = hs->n + 2 + nextra + room;

    if (want > PTC_ARRAY_SIZE(stack) && (hv = malloc(want * sizeof(*hv))) == NULL)
        hv = stack; /* forward what fits rather than fail the call */
    ptc_filter_fields_t l = {hv, 0, hv == stack ? PTC_ARRAY_SIZE(stack) : want, NULL, 0, 0};
    size_t cap = l.cap - PTC_MIN(room, l.cap / 2);
    ptc_header_t ct;
    if (!call->native || hdrstore_find(hs, PTC_STRLIT("content-type"), &ct) == NULL)
        ct = (ptc_header_t){PTC_STRLIT("content-type"), ctype};
    hv[l.n++] = ct; /* native gRPC keeps the upstream's content-type */
    if (call->env_gzip && status == 200) /* the coding of the envelopes with flag 0x01 */
        hv[l.n++] = (ptc_header_t){PTC_STRLIT("connect-content-encoding"), PTC_STRLIT("gzip")};
    for (size_t i = 0; i < nextra && l.n < cap; i++)
        hv[l.n++] = extra[i];
    for (size_t i = 0; i < hs->n && l.n < cap; i++) {
        ptc_header_t f = hdrstore_get(hs, i);
        /* gRPC-Web clients get decompressed frames: the upstream's grpc-encoding no longer applies; a route's
         * Cache-Control for Connect GET replaces the upstream's */
        if (!is_hop_header(f.name) && (call->native || !ptc_iov_eq(f.name, PTC_STRLIT("grpc-encoding"))) &&
            (call->cache_control == NULL || !ptc_iov_eq(f.name, PTC_STRLIT("cache-control"))))
            hv[l.n++] = f;
    }
    ptc_pipeline_response(&call->info, &l);
    if (call->first_byte_us == 0)
        call->first_byte_us = ptc_now_us();
    call->http_status = status;
    if (call->snap->access_log != NULL && call->info.log_resp.fields == NULL &&
        ptc_access_log_capture(ptc_access_log_template(call->snap->access_log), PTC_TEMPLATE_RESP, l.fields, l.n, &call->info.log_resp) != 0)
        call->info.log_resp = (ptc_access_capture_t){NULL, 0};
    call->ds->cb->send_head(call->ds, status, l.fields, l.n, end_stream);
    ptc_filter_fields_dispose(&l);
    if (hv != stack)
        free(hv);
    call->resp_state = end_stream ? RESP_DONE : RESP_HEADERS_SENT;
}

static void send_head_from(ptc_call_t *call, const hdrstore_t *hs, bool end_stream, const ptc_header_t *extra, size_t nextra)
{
    send_head_as(call, 200, resp_ctype(call), hs, end_stream, extra, nextra);
}

static void send_head(ptc_call_t *call, bool end_stream)
{
    send_head_from(call, &call->hdrs, end_stream, NULL, 0);
}

/*
 * Compresses what src holds into dst with d, ending with `flush` (Z_SYNC_FLUSH: a stream's message is not held back;
 * Z_FINISH: the end of a gzip member). src is left as it was. Returns 0, or -1 when out of memory.
 */
static int deflate_into(z_stream *d, struct evbuffer *src, struct evbuffer *dst, int flush)
{
    struct evbuffer_ptr at;
    size_t left = evbuffer_get_length(src);
    evbuffer_ptr_set(src, &at, 0, EVBUFFER_PTR_SET);
    for (;;) {
        struct evbuffer_iovec in = {NULL, 0};
        if (left != 0 && evbuffer_peek(src, -1, &at, &in, 1) < 1)
            return -1;
        in.iov_len = PTC_MIN(in.iov_len, left);
        left -= in.iov_len;
        d->next_in = in.iov_base;
        d->avail_in = (uInt)in.iov_len;
        int rv;
        do {
            struct evbuffer_iovec v;
            if (evbuffer_reserve_space(dst, 16384, &v, 1) < 1)
                return -1;
            d->next_out = v.iov_base;
            d->avail_out = (uInt)v.iov_len;
            rv = deflate(d, left == 0 ? flush : Z_NO_FLUSH);
            v.iov_len -= d->avail_out;
            evbuffer_commit_space(dst, &v, 1);
        } while (d->avail_out == 0 && rv != Z_STREAM_END);
        if (left == 0)
            return 0;
        evbuffer_ptr_set(src, &at, in.iov_len, EVBUFFER_PTR_ADD);
    }
}

/* Compresses what is in out (Content-Encoding: gzip of the whole body); Z_FINISH at the end of the body. */
static void out_deflate(ptc_call_t *call, bool final)
{
    struct evbuffer *z = evbuffer_new();
    if (z == NULL || deflate_into(call->deflater, call->out, z, final ? Z_FINISH : Z_SYNC_FLUSH) != 0) {
        call->out_lost = true;
    } else {
        evbuffer_drain(call->out, evbuffer_get_length(call->out));
        evbuffer_add_buffer(call->out, z);
    }
    if (z != NULL)
        evbuffer_free(z);
}

/* A gzip stream for one message at a time; NULL when out of memory. */
static z_stream *gzip_stream(z_stream **zp, uint32_t level)
{
    if (*zp != NULL)
        return deflateReset(*zp) == Z_OK ? *zp : NULL;
    if ((*zp = calloc(1, sizeof(z_stream))) != NULL &&
        deflateInit2(*zp, (int)level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(*zp);
        *zp = NULL;
    }
    return *zp;
}

/*
 * Sends the head that waited for the first message: gzip when that message is big enough to gain
 * (compression.min_size), identity otherwise. Never for responses without a body.
 */
static void release_head(ptc_call_t *call)
{
    ptc_header_t extra[2];
    size_t n = 0;

    call->head_pending = false;
    extra[n++] = (ptc_header_t){PTC_STRLIT("vary"), PTC_STRLIT("Accept-Encoding")};
    if (call->first_seen && call->first_len >= call->cfg->compression.min_size &&
        gzip_stream(&call->deflater, call->cfg->compression.level) != NULL)
        extra[n++] = (ptc_header_t){PTC_STRLIT("content-encoding"), PTC_STRLIT("gzip")};
    if (call->ds != NULL)
        send_head_from(call, &call->pending_head, false, extra, n);
    hdrstore_dispose(&call->pending_head);
}

/* Appends bytes to the output, base64-encoding them in text mode. */
static struct evbuffer *out_target(ptc_call_t *call)
{
    return call->holding ? call->held : call->out;
}

/* Out of memory on the way downstream: bytes lost from the held frame cost only that frame (it is
 * dropped); bytes lost from out leave a body that can only be cut off. */
static void out_lost(ptc_call_t *call, struct evbuffer *dst)
{
    if (dst == call->held)
        call->held_lost = true;
    else
        call->out_lost = true;
}

static void out_write(ptc_call_t *call, const uint8_t *data, size_t len)
{
    struct evbuffer *dst = out_target(call);
    if (!call->resp_text) {
        if (evbuffer_add(dst, data, len) != 0)
            out_lost(call, dst);
        return;
    }
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(dst, (ev_ssize_t)PTC_B64_ENCODED_MAX(len), &v, 1) < 1) {
        out_lost(call, dst);
        return;
    }
    v.iov_len = ptc_b64_encode_update(&call->resp_b64, data, len, v.iov_base);
    evbuffer_commit_space(dst, &v, 1);
}

/* Ends a base64 segment (text mode): pads the last quantum of the current frame. */
static void out_end_segment(ptc_call_t *call)
{
    if (call->resp_text) {
        char tail[4];
        size_t n = ptc_b64_encode_final(&call->resp_b64, tail);
        if (evbuffer_add(out_target(call), tail, n) != 0)
            out_lost(call, out_target(call));
    }
}

/*
 * The response body must stay a sequence of whole frames. A frame cut short by a failure is dropped
 * when it was being held (small frames are held until complete, compressed ones inflate into held), or
 * when only part of its 5-byte header had arrived (nothing of it was written yet); returns false when
 * part of it was already sent, or bytes on their way out were lost, in which case no well-formed ending
 * is possible.
 */
static bool drop_partial_frame(ptc_call_t *call)
{
    call->resp_hdr_pending = false;
    if (call->out_lost)
        return false;
    if (call->holding) { /* also inside the frame's end event, before held moved to out */
        evbuffer_drain(call->held, evbuffer_get_length(call->held));
        call->holding = false;
        call->held_lost = false;
        ptc_b64_encoder_init(&call->resp_b64);
        return true;
    }
    if (call->inflater != NULL) {
        inflateEnd(call->inflater);
        free(call->inflater);
        call->inflater = NULL;
        evbuffer_drain(call->held, evbuffer_get_length(call->held));
        call->held_lost = false;
        return true;
    }
    return ptc_frame_parser_at_boundary(&call->resp_parser) || !call->resp_in_frame;
}

/*
 * A complete frame straight to the downstream from memory (no evbuffer on the way: for tens of bytes, adding them to
 * out and moving them on costs several times the copy) when the downstream takes bytes and nothing is queued before
 * the frame, nor would be done to it (base64, gzip, a head still held, a unary Connect response); never while a frame
 * is being held (the caller's to see). False: the caller writes it to out.
 */
static bool out_direct(ptc_call_t *call, const uint8_t *frame, size_t len)
{
    ptc_downstream_t *ds = call->ds;
    if (ds == NULL || ds->cb->send_bytes == NULL || call->resp_state != RESP_HEADERS_SENT || call->head_pending ||
        call->resp_text || call->deflater != NULL || call->connect_unary || call->out_lost ||
        evbuffer_get_length(call->out) != 0)
        return false;
    call->bytes_out += len;
    ds->cb->send_bytes(ds, frame, len);
    return true;
}

/* Body bytes to the client through ds, counted for metrics and the access log. */
static void send_body_to(ptc_call_t *call, ptc_downstream_t *ds, struct evbuffer *b)
{
    call->bytes_out += evbuffer_get_length(b);
    ds->cb->send_body(ds, b);
}

static void out_flush_to(ptc_call_t *call, ptc_downstream_t *ds)
{
    if (evbuffer_get_length(call->out) == 0 || ds == NULL || call->connect_unary)
        return; /* a unary Connect response goes out whole, with its trailers in the head */
    if (call->head_pending)
        release_head(call);
    if (call->deflater != NULL)
        out_deflate(call, false);
    if (call->out_lost) { /* corrupt: never sent; the caller cuts the response off */
        evbuffer_drain(call->out, evbuffer_get_length(call->out));
        return;
    }
    send_body_to(call, ds, call->out);
}

static void out_flush(ptc_call_t *call)
{
    out_flush_to(call, call->ds);
}

/* The last bytes of a gRPC-Web body: flushed, and the gzip stream (if any) finished. */
static void out_flush_final(ptc_call_t *call)
{
    if (call->ds == NULL)
        return;
    if (call->head_pending)
        release_head(call);
    if (call->deflater != NULL)
        out_deflate(call, true);
    if (call->out_lost)
        evbuffer_drain(call->out, evbuffer_get_length(call->out));
    else if (evbuffer_get_length(call->out) != 0)
        send_body_to(call, call->ds, call->out);
}

/* Writes one complete trailer frame (a padded base64 segment of its own in text mode). */
static void out_trailer_frame(ptc_call_t *call, const ptc_header_t *fields, size_t n)
{
    size_t len = ptc_trailer_encoded_len(fields, n);
    uint8_t stack[1024], *block = stack; /* the frame header, then the block: one write */

    if (len + PTC_FRAME_HEADER_SIZE > sizeof(stack) && (block = malloc(len + PTC_FRAME_HEADER_SIZE)) == NULL) {
        /* keep the status, drop the rest */
        block = stack;
        n = 1;
        len = ptc_trailer_encoded_len(fields, n);
    }
    ptc_trailer_encode(block + PTC_FRAME_HEADER_SIZE, fields, n);
    ptc_frame_header_encode(block, PTC_FRAME_FLAG_TRAILER, (uint32_t)len);
    if (call->holding || !out_direct(call, block, PTC_FRAME_HEADER_SIZE + len)) {
        out_write(call, block, PTC_FRAME_HEADER_SIZE + len);
        out_end_segment(call);
    }
    if (block != stack)
        free(block);
}

/* ---- Connect ----
 *
 * A unary Connect response is one HTTP response whose head carries the upstream's trailers as
 * `trailer-<name>` fields and whose status is the error's: nothing can be sent before the upstream's
 * trailers arrive. So the upstream's head waits in pending_head (head_pending, as for gzip) and the one
 * response message in out (out_flush_to() sends nothing), both bounded: the head by
 * MAX_UPSTREAM_HEADER_BYTES, the message by limits.max_message_size. A second message is an error.
 *
 * A Connect stream is gRPC-Web's shape with another ending: the trailers become the end-of-stream envelope
 * (flag 0x02, JSON {"error", "metadata"}).
 */

/* Splits trailers into the status (e) and the rest (md, room for n). */
static size_t split_status(const ptc_header_t *t, size_t n, ptc_connect_error_t *e, ptc_header_t *md)
{
    size_t nmd = 0;
    *e = (ptc_connect_error_t){PTC_GRPC_UNKNOWN, {"", 0}, true, {"", 0}};
    for (size_t i = 0; i < n; i++) {
        if (ptc_iov_eq(t[i].name, PTC_STRLIT("grpc-status"))) {
            if (ptc_status_parse(t[i].value, &e->status) != 0)
                e->status = PTC_GRPC_UNKNOWN;
        } else if (ptc_iov_eq(t[i].name, PTC_STRLIT("grpc-message"))) {
            e->message = t[i].value;
        } else if (ptc_iov_eq(t[i].name, PTC_STRLIT("grpc-status-details-bin"))) {
            e->details_bin = t[i].value;
        } else {
            md[nmd++] = t[i];
        }
    }
    return nmd;
}

/* Sends an error reply (ptc_error_reply_init) as the call's response: hs's fields and more join its head. */
static void send_reply(ptc_call_t *call, const ptc_error_reply_t *r, const hdrstore_t *hs, const ptc_header_t *more, size_t nmore)
{
    ptc_header_t stack[40], *extra = stack;
    size_t k = 0, want = r->num_fields + nmore;

    if (want > PTC_ARRAY_SIZE(stack) && (extra = malloc(want * sizeof(*extra))) == NULL) {
        extra = stack;
        nmore = 0; /* the error itself, without the upstream's metadata */
    }
    for (size_t i = 1; i < r->num_fields; i++) /* [0] is the content type */
        extra[k++] = r->fields[i];
    for (size_t i = 0; i < nmore; i++)
        extra[k++] = more[i];
    bool body = r->body != NULL && r->body_len != 0;
    send_head_as(call, r->http_status, r->fields[0].value, hs, !body, extra, k);
    if (body && call->ds != NULL) {
        struct evbuffer *b = call->out != NULL ? call->out : evbuffer_new(); /* (out may be missing: out of memory) */
        if (b != NULL && evbuffer_add(b, r->body, r->body_len) == 0)
            send_body_to(call, call->ds, b);
        if (b != NULL && b != call->out)
            evbuffer_free(b);
        call->ds->cb->send_end(call->ds);
    }
    if (extra != stack)
        free(extra);
}

/* The end of a unary Connect call: the whole response, from the held head, message and these trailers. */
static void connect_unary_end(ptc_call_t *call, const ptc_header_t *t, size_t n)
{
    ptc_connect_error_t e;
    ptc_header_t stack[32], *extra = stack;
    char clen[24], *names = NULL;
    size_t k = 0, bytes = 0;
    hdrstore_t none;
    hdrstore_init(&none, NULL, 0, NULL, 0);
    const hdrstore_t *hs = call->head_pending ? &call->pending_head : &none;

    if (n + 4 > PTC_ARRAY_SIZE(stack) && (extra = malloc((n + 4) * sizeof(*extra))) == NULL) {
        extra = stack;
        n = 0; /* out of memory: the response without its trailers rather than none */
    }
    size_t nmd = split_status(t, n, &e, extra + 4);
    if (n == 0 && t != NULL)
        e.status = PTC_GRPC_RESOURCE_EXHAUSTED, e.message = PTC_STRLIT("gateway out of memory"), e.pct_encoded = false;
    for (size_t i = 0; i < nmd; i++)
        bytes += 8 + extra[4 + i].name.len;
    if (nmd != 0 && (names = malloc(bytes)) == NULL)
        nmd = 0;
    /* trailing metadata as headers (connectrpc.com/docs/protocol, Prefixed-Trailing-Metadata) */
    for (size_t i = 0, off = 0; i < nmd; i++) {
        ptc_iovec_t name = extra[4 + i].name;
        memcpy(names + off, "trailer-", 8);
        memcpy(names + off + 8, name.base, name.len);
        extra[4 + i].name = ptc_iov(names + off, 8 + name.len);
        off += 8 + name.len;
    }
    if (e.status == PTC_GRPC_OK && call->resp_parser.frames == 0)
        e = (ptc_connect_error_t){PTC_GRPC_INTERNAL, PTC_STRLIT("upstream ended a unary call without a response message"), false, {"", 0}};
    call->head_pending = false;
    if (e.status != PTC_GRPC_OK) {
        ptc_error_reply_t r;
        ptc_ctype_t ct = {PTC_CT_CONNECT, {"", 0}};
        evbuffer_drain(call->out, evbuffer_get_length(call->out));
        (void)ptc_error_reply_init(&r, ct, ptc_iov("", 0), &e, 0, NULL, 0);
        send_reply(call, &r, hs, extra + 4, nmd);
        ptc_error_reply_dispose(&r);
    } else {
        evbuffer_drain(call->out, PTC_FRAME_HEADER_SIZE); /* the message alone is the body */
        size_t len = evbuffer_get_length(call->out);
        /* with compression on, whether a response is gzip depends on Accept-Encoding (a GET's cache must know) */
        if (call->cfg->compression.gzip)
            extra[k++] = (ptc_header_t){PTC_STRLIT("vary"), PTC_STRLIT("Accept-Encoding")};
        if (call->gzip_ok && len >= call->cfg->compression.min_size &&
            gzip_stream(&call->deflater, call->cfg->compression.level) != NULL) {
            out_deflate(call, true);
            len = evbuffer_get_length(call->out);
            extra[k++] = (ptc_header_t){PTC_STRLIT("content-encoding"), PTC_STRLIT("gzip")};
        }
        extra[k++] = (ptc_header_t){PTC_STRLIT("content-length"), ptc_iov(clen, (size_t)snprintf(clen, sizeof(clen), "%zu", len))};
        if (call->cache_control != NULL)
            extra[k++] = (ptc_header_t){PTC_STRLIT("cache-control"), ptc_iov(call->cache_control, strlen(call->cache_control))};
        memmove(extra + k, extra + 4, nmd * sizeof(*extra));
        if (call->out_lost) {
            ptc_log_warn(CALL_FMT ": out of memory compressing the response; aborting the response", CALL_ARGS(call));
            ptc_downstream_t *ds = call->ds;
            call->ds = NULL;
            ds->cb->abort(ds);
        } else {
            send_head_as(call, 200, resp_ctype(call), hs, len == 0, extra, k + nmd);
            if (len != 0 && call->ds != NULL) {
                send_body_to(call, call->ds, call->out);
                call->ds->cb->send_end(call->ds);
            }
        }
    }
    free(names);
    if (extra != stack)
        free(extra);
}

/* The end of a Connect stream: the end-of-stream envelope from these trailers. */
static void out_end_stream(ptc_call_t *call, const ptc_header_t *t, size_t n)
{
    ptc_header_t stack[32], *md = stack;
    ptc_connect_error_t e;
    uint8_t hdr[PTC_FRAME_HEADER_SIZE];
    size_t len;

    if (n > PTC_ARRAY_SIZE(stack) && (md = malloc(n * sizeof(*md))) == NULL) {
        md = stack;
        n = PTC_MIN(n, PTC_ARRAY_SIZE(stack));
    }
    size_t nmd = split_status(t, n, &e, md);
    char *json = ptc_connect_end_stream_json(&e, md, nmd, &len);
    if (json == NULL) {
        call->out_lost = true;
    } else {
        ptc_frame_header_encode(hdr, PTC_CONNECT_FLAG_END_STREAM, (uint32_t)len);
        out_write(call, hdr, sizeof(hdr));
        out_write(call, (const uint8_t *)json, len);
        free(json);
    }
    if (md != stack)
        free(md);
}

/* Sends trailers (an HTTP/2 trailer block for native gRPC, a trailer frame for gRPC-Web, the end of a Connect
 * response), edited by the filters. */
static void send_trailers(ptc_call_t *call, const ptc_header_t *fields, size_t n)
{
    ptc_header_t stack[48], *tv = stack;
    size_t room = call->info.chain != NULL ? call->info.chain->extra_fields : 0, want = n + room;

    if (want > PTC_ARRAY_SIZE(stack) && (tv = malloc(want * sizeof(*tv))) == NULL) {
        tv = stack;
        n = PTC_MIN(n, PTC_ARRAY_SIZE(stack)); /* grpc-status comes first in gateway-made trailers */
    }
    ptc_filter_fields_t l = {tv, n, tv == stack ? PTC_ARRAY_SIZE(stack) : want, NULL, 0, 0};
    memcpy(tv, fields, n * sizeof(*tv));
    ptc_pipeline_trailers(&call->info, &l);
    if (call->native) {
        out_flush(call);
        if (call->ds != NULL)
            call->ds->cb->send_trailers(call->ds, l.fields, l.n);
    } else if (call->connect_unary) {
        if (call->ds != NULL)
            connect_unary_end(call, l.fields, l.n);
    } else {
        if (call->connect && call->resp_state == RESP_NONE && call->ds != NULL) {
            /* trailers-only: a stream's response still has a head, and its body the end of stream */
            hdrstore_t none;
            hdrstore_init(&none, NULL, 0, NULL, 0);
            send_head_from(call, &none, false, NULL, 0);
        }
        if (call->connect)
            out_end_stream(call, l.fields, l.n);
        else
            out_trailer_frame(call, l.fields, l.n);
        out_flush_final(call);
        if (call->ds != NULL && call->out_lost) {
            ptc_log_warn(CALL_FMT ": out of memory writing the response body; aborting the response", CALL_ARGS(call));
            ptc_downstream_t *ds = call->ds;
            call->ds = NULL;
            ds->cb->abort(ds);
        } else if (call->ds != NULL) {
            call->ds->cb->send_end(call->ds);
        }
    }
    ptc_filter_fields_dispose(&l);
    if (tv != stack)
        free(tv);
}

/*
 * Metrics and the access log, once per call: when it is finished with its downstream (finish_downstream(),
 * which every ending passes through), or when it is freed at the latest.
 */
static void record_end(ptc_call_t *call)
{
    ptc_worker_t *w = call->worker;
    ptc_access_log_t *al = call->snap->access_log;

    if (call->recorded)
        return;
    call->recorded = true;
    uint64_t now = ptc_now_us(), dur = now > call->start_us ? now - call->start_us : 0;
    ptc_call_record_t r = {
        .method = call->info.method,
        .upstream = call->upstream_start_us != 0 ? call->info.upstream : NULL,
        .transport = call->transport,
        .proto = ptc_proto_of(call->ct.kind),
        .grpc_status = call->final_status,
        .http_status = call->http_status,
        .bytes_in = call->bytes_in,
        .bytes_out = call->bytes_out,
        .msgs_in = call->msgs_in,
        .msgs_out = call->msgs_out,
        .duration_us = dur,
        .upstream_us = call->upstream_start_us != 0 && now > call->upstream_start_us ? now - call->upstream_start_us : 0,
    };
    ptc_metrics_call_ended(&w->metrics, &r);
    if (al == NULL)
        return;
    char decoded[PTC_ACCESS_LOG_VALUE_MAX];
    ptc_iovec_t message = call->final_message;
    if (call->final_message_encoded)
        message = ptc_iov(decoded, ptc_grpc_message_decode(decoded, sizeof(decoded), message));
    ptc_access_entry_t e = {
        .start_us = ptc_access_log_wall_us(call->start_us, now),
        .info = &call->info,
        .origin = call->info.origin != NULL ? ptc_iov(call->info.origin, strlen(call->info.origin)) : ptc_iov("", 0),
        .http_method = call->req_get ? PTC_STRLIT("GET") : PTC_STRLIT("POST"),
        .path = ptc_iov(call->path, strlen(call->path)),
        .protocol = ptc_proto_names[r.proto],
        .transport = ptc_transport_names[r.transport],
        .grpc_status = call->final_status,
        .grpc_message = message,
        .http_status = r.http_status,
        .bytes_in = r.bytes_in,
        .bytes_out = r.bytes_out,
        .msgs_in = r.msgs_in,
        .msgs_out = r.msgs_out,
        .ttfb_us = call->first_byte_us != 0 ? (int64_t)(call->first_byte_us - call->start_us) : -1,
        .duration_us = dur,
        .upstream_host = call->upstream_host[0] != '\0' ? call->upstream_host : NULL,
        .req = &call->info.log_req,
        .resp = &call->info.log_resp,
    };
    if (ptc_access_log_write(al, w->id, &e))
        PTC_STAT_INC(w->metrics.access_log_lines);
    else
        PTC_STAT_INC(w->metrics.access_log_dropped);
}

/* The call is finished with its downstream. */
static void finish_downstream(ptc_call_t *call)
{
    record_end(call);
    call->final_message = ptc_iov("", 0); /* it pointed at the caller's message */
    call->resp_state = RESP_DONE;
    if (call->deadline != NULL)
        evtimer_del(call->deadline);
    ptc_downstream_t *ds = call->ds;
    if (ds != NULL) {
        call->ds = NULL;
        ds->cb->on_call_done(ds);
    }
}

static void log_done(ptc_call_t *call, int status, ptc_iovec_t message)
{
    call->final_status = status;
    call->final_message = message;
    call->final_message_encoded = false;
    if (status == PTC_GRPC_OK)
        ptc_log_debug(CALL_FMT ": OK in %" PRIu64 " ms", CALL_ARGS(call), (ptc_now_us() - call->start_us) / 1000);
    else
        ptc_log_info(CALL_FMT ": %s (%d) in %" PRIu64 " ms: %.*s", CALL_ARGS(call), ptc_grpc_status_name(status), status,
                     (ptc_now_us() - call->start_us) / 1000, (int)PTC_MIN(message.len, (size_t)512), message.base);
}

/*
 * Ends the call with a gateway-made status: withdraws the upstream stream, answers the downstream
 * (trailers-only if nothing was sent yet, else a trailer frame), and logs why.
 */
static void PTC_PRINTF(3, 4) call_fail(ptc_call_t *call, int status, const char *fmt, ...)
{
    char msg[PTC_ERROR_MESSAGE_MAX], enc[PTC_ERROR_MESSAGE_MAX * 3], code[8];
    va_list ap;

    if (call->resp_state == RESP_DONE)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_done(call, status, ptc_iov(msg, strlen(msg)));

    cancel_upstream(call);
    snprintf(code, sizeof(code), "%d", status);
    ptc_header_t fields[] = {
        {PTC_STRLIT("grpc-status"), ptc_iov(code, strlen(code))},
        {PTC_STRLIT("grpc-message"), ptc_iov(enc, ptc_grpc_message_encode(enc, sizeof(enc), msg, strlen(msg)))},
    };
    if (call->head_pending) {
        /* nothing went out yet: the error replaces the head that was waiting */
        drop_partial_frame(call);
        evbuffer_drain(call->out, evbuffer_get_length(call->out));
        hdrstore_dispose(&call->pending_head);
        call->head_pending = false;
        call->resp_state = RESP_NONE;
    }
    if (call->ds != NULL) {
        if (call->resp_state == RESP_NONE) {
            /* nothing went out: the whole answer is the error, in the caller's protocol */
            hdrstore_t none;
            ptc_error_reply_t r;
            ptc_connect_error_t e = {status, ptc_iov(msg, strlen(msg)), false, {"", 0}};
            hdrstore_init(&none, NULL, 0, NULL, 0);
            if (call->out != NULL)
                evbuffer_drain(call->out, evbuffer_get_length(call->out));
            (void)ptc_error_reply_init(&r, call->ct, resp_ctype(call), &e, 0, NULL, 0); /* the content type stands for Accept */
            send_reply(call, &r, &none, NULL, 0);
            ptc_error_reply_dispose(&r);
        } else if (drop_partial_frame(call)) {
            send_trailers(call, fields, PTC_ARRAY_SIZE(fields));
        } else {
            /* part of a large message already went out: ending the body now would hand the client a
             * corrupt message, so the response is cut off and the client sees a transport error */
            ptc_log_warn(CALL_FMT ": failed inside a %" PRIu32 "-byte response message; aborting the response", CALL_ARGS(call),
                         call->resp_parser.length);
            ptc_downstream_t *ds = call->ds;
            call->ds = NULL;
            out_flush_to(call, ds);
            ds->cb->abort(ds);
        }
    }
    finish_downstream(call);
}

/* ---- request side ---- */

static int req_frame_cb(void *ctx, ptc_frame_event_t ev, uint8_t flags, uint32_t length, const uint8_t *data, size_t len)
{
    (void)data;
    (void)len;
    ptc_call_t *call = ctx;
    if (ev != PTC_FRAME_EV_HEADER)
        return 0;
    const char *why = call->connect ? ptc_connect_request_flags_error(flags) : NULL;
    if (why != NULL) {
        call_fail(call, PTC_GRPC_INVALID_ARGUMENT, "%s", why);
        return -1;
    }
    call->msgs_in++;
    if (length > call->cfg->limits.max_message_size) {
        PTC_STAT_INC(call->worker->limit_stats.messages_too_large);
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED,
                  "request message of %" PRIu32 " bytes exceeds the gateway limit of %" PRIu32 " bytes (limits.max_message_size)",
                  length, call->cfg->limits.max_message_size);
        return -1;
    }
    if ((flags & PTC_FRAME_FLAG_TRAILER) != 0) {
        call_fail(call, PTC_GRPC_INTERNAL, "request frame with flags 0x%02x: trailer frames are only sent by servers", flags);
        return -1;
    }
    return 0;
}

/* Queues decoded request bytes for the upstream after checking their framing. */
/* Request bytes not yet written upstream. */
static size_t req_pending(const ptc_call_t *call)
{
    return (size_t)(call->req_small_len - call->req_small_off) + evbuffer_get_length(call->req_buf);
}

/*
 * Queues request bytes: into req_small while they fit and req_buf is empty (a copy of tens of bytes costs less than
 * an evbuffer's add and remove, and us_write_request() frames them from there), otherwise into req_buf.
 */
static int req_queue(ptc_call_t *call, const uint8_t *data, size_t len)
{
    if (len <= (size_t)(REQ_SMALL - call->req_small_len) && evbuffer_get_length(call->req_buf) == 0) {
        memcpy(call->req_small + call->req_small_len, data, len);
        call->req_small_len = (uint16_t)(call->req_small_len + len);
        return 0;
    }
    return evbuffer_add(call->req_buf, data, len);
}

static void req_push(ptc_call_t *call, const uint8_t *data, size_t len)
{
    if (len == 0)
        return;
    if (ptc_frame_parser_feed(&call->req_parser, data, len, req_frame_cb, call) != 0) {
        call->req_failed = true;
        return;
    }
    if (req_queue(call, data, len) != 0) {
        call->req_failed = true;
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        return;
    }
    if (!call->req_paused && req_pending(call) > call->cfg->limits.call_buffer_size && call->ds != NULL) {
        call->req_paused = true;
        call->ds->cb->pause_read(call->ds, true);
    }
    upstream_resume_data(call);
}

/*
 * A unary Connect body is the bare message: framed here. With content-length the frame header went
 * first (ptc_call_start) and the body streams after it; without, the body is held (up to the message size
 * limit) until its end gives the length.
 */
static void connect_unary_body(ptc_call_t *call, const char *data, size_t len)
{
    if (!call->req_hold) {
        if (len > call->req_left) {
            call->req_failed = true;
            call_fail(call, PTC_GRPC_INVALID_ARGUMENT, "%s",
                      call->req_get ? "a Connect GET request has no body: the message is in the query"
                                    : "request body is longer than its content-length");
            return;
        }
        call->req_left -= len;
        req_push(call, (const uint8_t *)data, len);
        return;
    }
    if (evbuffer_get_length(call->req_held) + len > call->cfg->limits.max_message_size) {
        call->req_failed = true;
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED,
                  "request body without content-length exceeds the gateway limit of %" PRIu32 " bytes (limits.max_message_size)",
                  call->cfg->limits.max_message_size);
        return;
    }
    if (evbuffer_add(call->req_held, data, len) != 0) {
        call->req_failed = true;
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    }
}

/* Frames the held body of a unary Connect call now that it is complete. */
static void connect_unary_release(ptc_call_t *call)
{
    uint8_t hdr[PTC_FRAME_HEADER_SIZE];
    size_t len = evbuffer_get_length(call->req_held);
    ptc_frame_header_encode(hdr, len != 0 ? call->req_flags : 0, (uint32_t)len); /* an empty message is never compressed */
    if (req_queue(call, hdr, sizeof(hdr)) != 0 || evbuffer_add_buffer(call->req_buf, call->req_held) != 0) {
        call->req_failed = true;
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    }
}

static void request_body(ptc_call_t *call, const char *data, size_t len)
{
    if (call->req_failed || call->resp_state == RESP_DONE)
        return;
    if (call->connect_unary) {
        connect_unary_body(call, data, len);
        return;
    }
    if (!call->req_text) {
        req_push(call, (const uint8_t *)data, len);
        return;
    }
    uint8_t buf[PTC_B64_DECODED_MAX(8192)];
    while (len > 0 && !call->req_failed && call->resp_state != RESP_DONE) {
        size_t take = PTC_MIN(len, (size_t)8192);
        ssize_t n = ptc_b64_decode_update(&call->req_b64, data, take, buf);
        if (n < 0) {
            call->req_failed = true;
            call_fail(call, PTC_GRPC_INVALID_ARGUMENT, "request body is not valid base64 (application/grpc-web-text)");
            return;
        }
        req_push(call, buf, (size_t)n);
        data += take;
        len -= take;
    }
}

void ptc_call_on_request_body(ptc_call_t *call, const char *data, size_t len)
{
    call->bytes_in += len;
    request_body(call, data, len);
    maybe_free(call);
}

static void request_end(ptc_call_t *call)
{
    if (call->req_failed || call->resp_state == RESP_DONE) {
        call->req_ended = true;
        return;
    }
    if (call->req_text) {
        uint8_t tail[2];
        ssize_t n = ptc_b64_decode_final(&call->req_b64, tail);
        if (n < 0) {
            call->req_failed = true;
            call_fail(call, PTC_GRPC_INVALID_ARGUMENT, "request body is not valid base64: a single character is left at the end");
            return;
        }
        req_push(call, tail, (size_t)n);
        if (call->req_failed)
            return;
    }
    if (call->req_hold) {
        connect_unary_release(call);
        if (call->req_failed)
            return;
    }
    if (!ptc_frame_parser_at_boundary(&call->req_parser)) {
        call->req_failed = true;
        if (call->connect_unary)
            call_fail(call, PTC_GRPC_INVALID_ARGUMENT, "request body ended %" PRIu64 " bytes short of its content-length", call->req_left);
        else
            call_fail(call, PTC_GRPC_INVALID_ARGUMENT,
                      "request body ended inside a %s (a %" PRIu32 "-byte message was cut short)",
                      call->connect ? "Connect envelope" : "gRPC message", call->req_parser.length);
        return;
    }
    call->req_ended = true;
    upstream_resume_data(call);
}

void ptc_call_on_request_end(ptc_call_t *call)
{
    request_end(call);
    maybe_free(call);
}

static ptc_call_t *call_of(ptc_upstream_stream_t *s)
{
    return (ptc_call_t *)(void *)s;
}

static void us_request_headers(ptc_upstream_stream_t *s, const nghttp2_nv **nva, size_t *n)
{
    ptc_call_t *call = call_of(s);
    *nva = call->nva;
    *n = call->nva_len;
    call->nva_taken = true;
}

static ssize_t us_read_request(ptc_upstream_stream_t *s, size_t length, uint32_t *data_flags)
{
    ptc_call_t *call = call_of(s);
    size_t avail = req_pending(call);
    if (avail == 0) {
        if (call->req_ended) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = PTC_MIN(length, avail);
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (call->req_ended && n == avail)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int us_write_request(ptc_upstream_stream_t *s, struct evbuffer *out, const uint8_t *framehd, size_t length)
{
    ptc_call_t *call = call_of(s);
    /* the frame header and what req_small holds of the payload, then the rest from req_buf */
    uint8_t stage[9 + REQ_SMALL];
    size_t k = PTC_MIN(length, (size_t)(call->req_small_len - call->req_small_off));
    memcpy(stage, framehd, 9);
    memcpy(stage + 9, call->req_small + call->req_small_off, k);
    if (length == k ? evbuffer_add(out, stage, 9 + k) != 0
                    : ptc_evbuffer_add_framed(out, stage, 9 + k, call->req_buf, length - k, NULL, 0) != 0)
        return -1;
    call->req_small_off = (uint16_t)(call->req_small_off + k);
    if (call->req_small_off == call->req_small_len)
        call->req_small_off = call->req_small_len = 0;
    if (call->req_paused && req_pending(call) <= call->cfg->limits.call_buffer_size / 2 && call->ds != NULL) {
        call->req_paused = false;
        call->ds->cb->pause_read(call->ds, false);
    }
    return 0;
}

/* ---- response side ---- */

static void us_on_header(ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen)
{
    ptc_call_t *call = call_of(s);
    if (cat == NGHTTP2_HCAT_RESPONSE && namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int status = 0;
        if (ptc_status_parse(ptc_iov((const char *)value, valuelen), &status) != 0 || status < 100 || status > 599)
            status = 502; /* nghttp2 checks :status already; anything else is not an HTTP answer */
        if (status >= 100 && status < 200) /* informational: another HEADERS follows */
            return;
        call->upstream_status = status;
    }
    hdrstore_add(&call->hdrs, (const char *)name, namelen, (const char *)value, valuelen);
}

/* Answers for an upstream that did not speak gRPC: status from its HTTP status, message from its body. */
static void fail_non_grpc(ptc_call_t *call)
{
    ptc_header_t ct = {{"", 0}, {"", 0}};
    hdrstore_find(&call->hdrs, PTC_STRLIT("content-type"), &ct);
    int status = call->upstream_status == 200 ? PTC_GRPC_UNKNOWN : ptc_grpc_status_from_http(call->upstream_status);
    call_fail(call, status, "upstream answered HTTP %d (content-type '%.*s'), not gRPC: %.*s", call->upstream_status,
              (int)PTC_MIN(ct.value.len, (size_t)64), ct.value.base, (int)call->non_grpc_len,
              call->non_grpc_body != NULL ? call->non_grpc_body : "");
}

/* Sends the upstream's trailers (hop-by-hop fields removed) to the client, in its protocol. */
static void forward_trailers(ptc_call_t *call, const hdrstore_t *hs)
{
    ptc_header_t stack[32], *tv = stack;
    stack[0] = (ptc_header_t){{NULL, 0}, {NULL, 0}}; /* for GCC's -Wmaybe-uninitialized (const argument); not all 32 */
    if (hs->n > PTC_ARRAY_SIZE(stack) && (tv = malloc(hs->n * sizeof(*tv))) == NULL)
        tv = stack; /* the first ones: grpc-status comes early */
    size_t n = 0;
    for (size_t i = 0; i < hs->n && (tv != stack || n < PTC_ARRAY_SIZE(stack)); i++) {
        ptc_header_t t = hdrstore_get(hs, i);
        if (!is_hop_header(t.name))
            tv[n++] = t;
    }
    send_trailers(call, tv, n);
    if (tv != stack)
        free(tv);
}

static void upstream_headers_end(ptc_call_t *call, nghttp2_headers_category cat, bool end_stream)
{
    ptc_header_t f;

    if (call->resp_state == RESP_DONE)
        return;
    if (call->hdrs.overflow) {
        call_fail(call, PTC_GRPC_INTERNAL, "upstream response headers exceed %d bytes or %d fields", MAX_UPSTREAM_HEADER_BYTES,
                  MAX_UPSTREAM_HEADERS);
        return;
    }
    if (cat == NGHTTP2_HCAT_RESPONSE) {
        if (call->upstream_status == 0) {
            hdrstore_reset(&call->hdrs); /* a 1xx response */
            return;
        }
        bool has_status = hdrstore_find(&call->hdrs, PTC_STRLIT("grpc-status"), &f) != NULL;
        bool grpc_ct = hdrstore_find(&call->hdrs, PTC_STRLIT("content-type"), &f) != NULL &&
                       ptc_ctype_classify(f.value).kind == PTC_CT_GRPC;
        call->upstream_grpc = call->upstream_status == 200 && (grpc_ct || (end_stream && has_status));
        if (!call->upstream_grpc) {
            if (end_stream)
                fail_non_grpc(call);
            return; /* collect the body for the message */
        }
        if (end_stream) {
            /* Trailers-Only: forwarded as the head of an empty response, with no empty trailer frame */
            if (!has_status) {
                call_fail(call, PTC_GRPC_UNKNOWN, "upstream ended the call without grpc-status");
                return;
            }
            ptc_header_t msg = {{"", 0}, {"", 0}};
            hdrstore_find(&call->hdrs, PTC_STRLIT("grpc-message"), &msg);
            hdrstore_find(&call->hdrs, PTC_STRLIT("grpc-status"), &f);
            int st;
            if (ptc_status_parse(f.value, &st) != 0) {
                call_fail(call, PTC_GRPC_UNKNOWN, "upstream sent an invalid grpc-status '%.*s'", (int)PTC_MIN(f.value.len, (size_t)16),
                          f.value.base);
                return;
            }
            log_done(call, st, msg.value);
            call->final_message_encoded = true;
            if (call->connect)
                forward_trailers(call, &call->hdrs); /* a Connect response always has a head and a body */
            else
                send_head(call, true);
            finish_downstream(call);
            return;
        }
        if (!call->native && hdrstore_find(&call->hdrs, PTC_STRLIT("grpc-encoding"), &f) != NULL) {
            ptc_iovec_t enc = ptc_iov_trim(f.value);
            if (ptc_iov_eq_ci(enc, PTC_STRLIT("gzip"))) {
                call->resp_encoding = 16 + MAX_WBITS;
            } else if (ptc_iov_eq_ci(enc, PTC_STRLIT("deflate"))) {
                call->resp_encoding = MAX_WBITS; /* gRPC's "deflate" is the zlib format */
            } else if (!ptc_iov_eq_ci(enc, PTC_STRLIT("identity"))) {
                call->bad_encoding = true;
            }
            snprintf(call->encoding_name, sizeof(call->encoding_name), "%.*s", (int)PTC_MIN(enc.len, (size_t)24), enc.base);
        }
        if (call->gzip_ok || call->connect_unary) {
            /* the head waits for the first message: is the response worth compressing? (or, for a unary
             * Connect call, for the trailers) */
            hdrstore_init(&call->pending_head, NULL, 0, NULL, 0);
            for (size_t i = 0; i < call->hdrs.n; i++) {
                ptc_header_t hf = hdrstore_get(&call->hdrs, i);
                hdrstore_add(&call->pending_head, hf.name.base, hf.name.len, hf.value.base, hf.value.len);
            }
            hdrstore_reset(&call->hdrs);
            call->head_pending = true;
            call->resp_state = RESP_HEADERS_SENT;
            return;
        }
        send_head(call, false);
        hdrstore_reset(&call->hdrs);
        return;
    }

    /* trailers */
    if (!call->upstream_grpc) {
        fail_non_grpc(call);
        return;
    }
    if (!ptc_frame_parser_at_boundary(&call->resp_parser)) {
        call_fail(call, PTC_GRPC_INTERNAL, "upstream ended the stream inside a gRPC message");
        return;
    }
    if (hdrstore_find(&call->hdrs, PTC_STRLIT("grpc-status"), &f) == NULL) {
        call_fail(call, PTC_GRPC_UNKNOWN, "upstream trailers carry no grpc-status");
        return;
    }
    int st;
    if (ptc_status_parse(f.value, &st) != 0) {
        call_fail(call, PTC_GRPC_UNKNOWN, "upstream sent an invalid grpc-status '%.*s'", (int)PTC_MIN(f.value.len, (size_t)16), f.value.base);
        return;
    }
    ptc_header_t msg = {{"", 0}, {"", 0}};
    hdrstore_find(&call->hdrs, PTC_STRLIT("grpc-message"), &msg);
    log_done(call, st, msg.value);
    call->final_message_encoded = true;
    forward_trailers(call, &call->hdrs);
    (void)end_stream;
    /* the server is done; if the client still sends, the stream is reset (PROTOCOL-HTTP2.md) */
    if (!call->req_ended || req_pending(call) != 0)
        cancel_upstream(call);
    finish_downstream(call);
}

static void us_on_headers_end(ptc_upstream_stream_t *s, nghttp2_headers_category cat, bool end_stream)
{
    ptc_call_t *call = call_of(s);
    const char *host;
    if (cat == NGHTTP2_HCAT_RESPONSE && call->snap->access_log != NULL && (host = ptc_upstream_stream_peer(s)) != NULL)
        copy_str(call->upstream_host, sizeof(call->upstream_host), ptc_iov(host, strlen(host)));
    upstream_headers_end(call, cat, end_stream);
    maybe_free(call);
}

/*
 * Writes the whole message in held to out with its frame header and empties held. A Connect stream whose client
 * reads gzip gets it compressed (flag 0x01, a gzip member of its own) when it is at least compression.min_size
 * and compressing makes it smaller; otherwise (or out of memory compressing) as it is.
 */
static void out_message(ptc_call_t *call, uint8_t flags)
{
    uint8_t hdr[PTC_FRAME_HEADER_SIZE];
    size_t n = evbuffer_get_length(call->held);
    struct evbuffer *msg = call->held, *z = NULL;
    z_stream *d;

    if (call->env_gzip && n != 0 && n >= call->cfg->compression.min_size &&
        (d = gzip_stream(&call->env_deflater, call->cfg->compression.level)) != NULL && (z = evbuffer_new()) != NULL &&
        deflate_into(d, call->held, z, Z_FINISH) == 0 && evbuffer_get_length(z) < n) {
        msg = z;
        flags |= PTC_CONNECT_FLAG_COMPRESSED;
    }
    ptc_frame_header_encode(hdr, flags, (uint32_t)evbuffer_get_length(msg));
    out_write(call, hdr, sizeof(hdr));
    while (evbuffer_get_length(msg) != 0) {
        struct evbuffer_iovec v;
        evbuffer_peek(msg, -1, NULL, &v, 1);
        out_write(call, v.iov_base, v.iov_len);
        evbuffer_drain(msg, v.iov_len);
    }
    evbuffer_drain(call->held, evbuffer_get_length(call->held));
    if (z != NULL)
        evbuffer_free(z);
    out_end_segment(call);
}

/*
 * Inflates a piece of a compressed response message into call->held, within the message size limit.
 * Returns 0, a status (the message is too big or corrupt), or -1 when out of memory.
 */
static int inflate_piece(ptc_call_t *call, const uint8_t *data, size_t len, bool finish)
{
    z_stream *z = call->inflater;
    z->next_in = (Bytef *)(uintptr_t)data;
    z->avail_in = (uInt)len;
    for (;;) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(call->held, 16384, &v, 1) < 1)
            return -1;
        z->next_out = v.iov_base;
        z->avail_out = (uInt)v.iov_len;
        int rv = inflate(z, Z_NO_FLUSH);
        v.iov_len -= z->avail_out;
        evbuffer_commit_space(call->held, &v, 1);
        if (evbuffer_get_length(call->held) > call->cfg->limits.max_message_size)
            return PTC_GRPC_RESOURCE_EXHAUSTED;
        if (rv == Z_STREAM_END)
            return z->avail_in == 0 ? 0 : PTC_GRPC_INTERNAL;
        if (rv != Z_OK && rv != Z_BUF_ERROR)
            return PTC_GRPC_INTERNAL;
        if (z->avail_in == 0 && z->avail_out != 0)
            return finish ? PTC_GRPC_INTERNAL : 0; /* all input used; at the end the stream must have ended */
    }
}

/* gRPC-Web clients cannot read compressed frames (PROTOCOL.md §1.10): they are inflated here. So are they for
 * Connect clients, whose stream may then compress them again (out_message): the decompressed size is checked
 * against limits.max_message_size, and gRPC's "deflate" (zlib) is not a coding Connect knows. */
static int compressed_frame(ptc_call_t *call, ptc_frame_event_t ev, uint32_t length, const uint8_t *data, size_t len)
{
    int st = 0;
    switch (ev) {
    case PTC_FRAME_EV_HEADER:
        if (call->resp_encoding == 0) {
            call_fail(call, PTC_GRPC_INTERNAL, "upstream sent a compressed message with grpc-encoding '%s', which the gateway cannot decode",
                      call->bad_encoding ? call->encoding_name : "identity");
            return -1;
        }
        if ((call->inflater = calloc(1, sizeof(*call->inflater))) == NULL || inflateInit2(call->inflater, call->resp_encoding) != Z_OK) {
            free(call->inflater);
            call->inflater = NULL;
            call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
            return -1;
        }
        return 0;
    case PTC_FRAME_EV_DATA:
        st = inflate_piece(call, data, len, false);
        break;
    case PTC_FRAME_EV_END:
        st = inflate_piece(call, NULL, 0, true);
        if (st == 0) {
            inflateEnd(call->inflater);
            free(call->inflater);
            call->inflater = NULL;
            out_message(call, 0);
        }
        break;
    }
    if (st < 0)
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    else if (st == PTC_GRPC_RESOURCE_EXHAUSTED) {
        PTC_STAT_INC(call->worker->limit_stats.messages_too_large);
        call_fail(call, st, "decompressed response message exceeds the gateway limit of %" PRIu32 " bytes (limits.max_message_size)",
                  call->cfg->limits.max_message_size);
    } else if (st != 0)
        call_fail(call, st, "upstream sent a corrupt %s-compressed message (%" PRIu32 " bytes)", call->encoding_name, length);
    return st != 0 ? -1 : 0;
}

/* After a frame event: a write that ran out of memory ends the call (drop_partial_frame decides how). */
static int frame_written(ptc_call_t *call)
{
    if (!call->held_lost && !call->out_lost)
        return 0;
    call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    return -1;
}

#define WHOLE_FRAME_MAX 1024 /* a response message up to this size, whole in one DATA piece, skips held */

static int resp_frame_cb(void *ctx, ptc_frame_event_t ev, uint8_t flags, uint32_t length, const uint8_t *data, size_t len)
{
    ptc_call_t *call = ctx;

    call->resp_in_frame = ev != PTC_FRAME_EV_END;
    if (ev == PTC_FRAME_EV_HEADER && call->connect_unary && call->resp_parser.frames != 0) {
        call_fail(call, PTC_GRPC_INTERNAL, "upstream sent more than one message for a unary Connect call");
        return -1;
    }
    if (ev == PTC_FRAME_EV_HEADER && (flags & PTC_FRAME_FLAG_TRAILER) == 0)
        call->msgs_out++;
    if ((flags & PTC_FRAME_FLAG_COMPRESSED) != 0 && !call->native && (flags & PTC_FRAME_FLAG_TRAILER) == 0 &&
        length <= call->cfg->limits.max_message_size) {
        if (compressed_frame(call, ev, length, data, len) != 0)
            return -1;
        return frame_written(call);
    }
    switch (ev) {
    case PTC_FRAME_EV_HEADER:
        if (length > call->cfg->limits.max_message_size) {
            PTC_STAT_INC(call->worker->limit_stats.messages_too_large);
            call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED,
                      "response message of %" PRIu32 " bytes exceeds the gateway limit of %" PRIu32 " bytes (limits.max_message_size)",
                      length, call->cfg->limits.max_message_size);
            return -1;
        }
        if ((flags & PTC_FRAME_FLAG_TRAILER) != 0) {
            call_fail(call, PTC_GRPC_INTERNAL, "upstream sent a frame with flags 0x%02x inside the body", flags);
            return -1;
        }
        if (!call->first_seen) {
            call->first_seen = true;
            call->first_len = length;
        }
        /* a message a Connect stream may compress is held whole (within max_message_size): its header
         * carries the compressed length */
        call->env_compress = call->env_gzip && length != 0 && length >= call->cfg->compression.min_size;
        if (call->env_compress) {
            call->env_flags = flags;
            call->holding = true;
            break;
        }
        /* frames up to the call buffer size are held until complete, so a failure mid-message can
         * still end the body with a clean trailer frame; larger ones stream through in pieces */
        call->holding = (uint64_t)length + PTC_FRAME_HEADER_SIZE <= call->cfg->limits.call_buffer_size;
        ptc_frame_header_encode(call->resp_hdr, flags, length); /* written with the first piece (see there) */
        call->resp_hdr_pending = true;
        break;
    case PTC_FRAME_EV_DATA:
        if (call->resp_hdr_pending) {
            call->resp_hdr_pending = false;
            if (len == length && len <= WHOLE_FRAME_MAX && call->holding && !call->resp_text) {
                /* the whole message in one piece (the usual): header and payload go to the downstream, or to out,
                 * in one write, which either adds all of it or nothing, so nothing needs holding (a failed write
                 * drops the frame as a held one would be) */
                uint8_t whole[PTC_FRAME_HEADER_SIZE + WHOLE_FRAME_MAX];
                memcpy(whole, call->resp_hdr, PTC_FRAME_HEADER_SIZE);
                memcpy(whole + PTC_FRAME_HEADER_SIZE, data, len);
                if (out_direct(call, whole, PTC_FRAME_HEADER_SIZE + len)) {
                    call->holding = false;
                    break;
                }
                if (evbuffer_add(call->out, whole, PTC_FRAME_HEADER_SIZE + len) != 0)
                    call->held_lost = true;
                else
                    call->holding = false;
                break;
            }
            out_write(call, call->resp_hdr, PTC_FRAME_HEADER_SIZE);
        }
        out_write(call, data, len);
        break;
    case PTC_FRAME_EV_END:
        if (call->resp_hdr_pending) { /* an empty message */
            call->resp_hdr_pending = false;
            out_write(call, call->resp_hdr, PTC_FRAME_HEADER_SIZE);
        }
        if (call->env_compress && !call->held_lost) {
            call->env_compress = false;
            call->holding = false;
            out_message(call, call->env_flags);
            break;
        }
        out_end_segment(call);
        if (call->holding && !call->held_lost) {
            if (evbuffer_add_buffer(call->out, call->held) == 0)
                call->holding = false;
            else
                call->held_lost = true; /* nothing moved: the frame is still held, and dropped */
        }
        break;
    }
    return frame_written(call);
}

static void upstream_data(ptc_call_t *call, const uint8_t *data, size_t len)
{
    call->unconsumed += len;
    if (call->resp_state == RESP_DONE) {
        upstream_consume(call, call->unconsumed);
        call->unconsumed = 0;
        return;
    }
    if (!call->upstream_grpc) {
        size_t take = PTC_MIN(len, NON_GRPC_BODY_PREFIX - call->non_grpc_len);
        if (take > 0) {
            if (call->non_grpc_body == NULL && (call->non_grpc_body = malloc(NON_GRPC_BODY_PREFIX)) == NULL)
                take = 0;
            else
                memcpy(call->non_grpc_body + call->non_grpc_len, data, take);
            call->non_grpc_len += take;
        }
        if (call->non_grpc_len >= NON_GRPC_BODY_PREFIX || take == 0)
            fail_non_grpc(call); /* enough to explain; the rest is not read */
        else
            upstream_consume(call, len);
        call->unconsumed = 0;
        return;
    }
    if (ptc_frame_parser_feed(&call->resp_parser, data, len, resp_frame_cb, call) != 0)
        return;
    out_flush(call);
    if (call->out_lost) { /* compressing the body ran out of memory */
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        return;
    }
    /* credit the upstream only while the downstream keeps up (end-to-end flow control) */
    if (call->ds != NULL && call->ds->cb->pending(call->ds) <= call->cfg->limits.call_buffer_size) {
        upstream_consume(call, call->unconsumed);
        call->unconsumed = 0;
    }
}

static void us_on_data(ptc_upstream_stream_t *s, const uint8_t *data, size_t len)
{
    ptc_call_t *call = call_of(s);
    upstream_data(call, data, len);
    maybe_free(call);
}

static void upstream_data_end(ptc_call_t *call)
{
    call->upstream_ended = true;
    if (call->resp_state == RESP_DONE)
        return;
    if (!call->upstream_grpc)
        fail_non_grpc(call);
    else
        call_fail(call, PTC_GRPC_INTERNAL, "upstream ended the stream without trailers");
}

static void us_on_data_end(ptc_upstream_stream_t *s)
{
    ptc_call_t *call = call_of(s);
    upstream_data_end(call);
    maybe_free(call);
}

static void us_on_close(ptc_upstream_stream_t *s, uint32_t error_code, const char *conn_error)
{
    ptc_call_t *call = call_of(s);
    if (call->resp_state != RESP_DONE) {
        if (conn_error != NULL)
            call_fail(call, PTC_GRPC_UNAVAILABLE, "%s", conn_error);
        else if (s->reset_reason != NULL)
            call_fail(call, ptc_grpc_status_from_h2_error(error_code), "invalid HTTP/2 response from upstream: %s (stream reset by the gateway)",
                      s->reset_reason);
        else if (!call->upstream_grpc && call->upstream_status != 0)
            fail_non_grpc(call);
        else if (error_code != NGHTTP2_NO_ERROR)
            call_fail(call, ptc_grpc_status_from_h2_error(error_code), "upstream reset the stream (HTTP/2 error %s)",
                      nghttp2_http2_strerror(error_code));
        else
            call_fail(call, PTC_GRPC_INTERNAL, "upstream closed the stream without trailers");
    }
    maybe_free(call);
}

static void us_on_error(ptc_upstream_stream_t *s, const char *message)
{
    ptc_call_t *call = call_of(s);
    call_fail(call, PTC_GRPC_UNAVAILABLE, "%s", message);
    maybe_free(call);
}

static const ptc_upstream_stream_cb_t upstream_stream_callbacks = {
    us_request_headers, us_read_request, us_write_request, us_on_header, us_on_headers_end,
    us_on_data,         us_on_data_end,  us_on_close,      us_on_error,
};

void ptc_call_on_downstream_writable(ptc_call_t *call)
{
    if (call->unconsumed != 0) {
        size_t n = call->unconsumed;
        call->unconsumed = 0;
        upstream_consume(call, n);
    }
}

void ptc_call_abort(ptc_call_t *call, int status, const char *message)
{
    call_fail(call, status, "%s", message);
    maybe_free(call);
}

void ptc_call_detach_downstream(ptc_call_t *call, const char *reason)
{
    call->ds = NULL;
    if (call->resp_state != RESP_DONE) {
        ptc_log_info(CALL_FMT ": client went away (%s); cancelling the upstream stream", CALL_ARGS(call), reason);
        call->final_status = PTC_GRPC_CANCELLED;
        call->final_message = ptc_iov(reason, strlen(reason));
        cancel_upstream(call);
        finish_downstream(call);
    }
    call->req_ended = true;
    maybe_free(call);
}

static void on_deadline(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_call_t *call = arg;
    call_fail(call, PTC_GRPC_DEADLINE_EXCEEDED, "deadline of %" PRIu64 " ms exceeded (grpc-timeout)", call->timeout_ms);
    maybe_free(call);
}

/* ---- start ---- */

static void maybe_free(ptc_call_t *call)
{
    if (call->ds != NULL || call->us.client != NULL || call->resp_state != RESP_DONE || call->starting)
        return;
    record_end(call);
    call->worker->num_calls--;
    if (call->deadline != NULL)
        event_free(call->deadline);
    ptc_worker_evbuffer_release(call->worker, call->req_buf);
    ptc_worker_evbuffer_release(call->worker, call->out);
    ptc_worker_evbuffer_release(call->worker, call->held);
    ptc_worker_evbuffer_release(call->worker, call->req_held);
    if (call->inflater != NULL) {
        inflateEnd(call->inflater);
        free(call->inflater);
    }
    if (call->deflater != NULL) {
        deflateEnd(call->deflater);
        free(call->deflater);
    }
    if (call->env_deflater != NULL) {
        deflateEnd(call->env_deflater);
        free(call->env_deflater);
    }
    hdrstore_dispose(&call->pending_head);
    hdrstore_dispose(&call->hdrs);
    free(call->non_grpc_body);
    ptc_free(call->nva);
    ptc_call_info_dispose(&call->info);
    ptc_snapshot_release(call->snap);
    ptc_free(call);
}

/*
 * What a request header is to the call: read by it, passed on, or not forwarded because it describes
 * the downstream hop or the gateway writes it itself (PROTOCOL.md §1.2, §1.8).
 */
typedef enum {
    REQ_HDR_FORWARD,
    REQ_HDR_ACCEPT,          /* forwarded too */
    REQ_HDR_ACCEPT_ENCODING, /* forwarded too */
    REQ_HDR_GRPC_ACCEPT_ENCODING,
    REQ_HDR_GRPC_TIMEOUT,
    REQ_HDR_CONNECTION,
    REQ_HDR_DROP, /* pseudo-headers, hop-by-hop fields, and fields the gateway writes itself */
} req_hdr_kind_t;

static bool req_hdr_forwarded(req_hdr_kind_t kind)
{
    return kind == REQ_HDR_FORWARD || kind == REQ_HDR_ACCEPT || kind == REQ_HDR_ACCEPT_ENCODING;
}

/* One switch on the length, then at most two fixed-size compares: this runs for every header of every call. */
static req_hdr_kind_t classify_request_header(ptc_iovec_t name)
{
#define IS(lit) (memcmp(name.base, lit, sizeof(lit) - 1) == 0) /* the case label checked the length */
    if (name.len == 0 || name.base[0] == ':')
        return REQ_HDR_DROP;
    switch (name.len) {
    case 2:
        return IS("te") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 4:
        return IS("host") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 6:
        return IS("accept") ? REQ_HDR_ACCEPT : IS("expect") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 7:
        return IS("upgrade") || IS("trailer") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 10:
        return IS("connection") ? REQ_HDR_CONNECTION : IS("keep-alive") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 12:
        return IS("content-type") ? REQ_HDR_DROP : IS("grpc-timeout") ? REQ_HDR_GRPC_TIMEOUT : REQ_HDR_FORWARD;
    case 14:
        return IS("content-length") || IS("http2-settings") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 15:
        return IS("accept-encoding") ? REQ_HDR_ACCEPT_ENCODING : REQ_HDR_FORWARD;
    case 16:
        return IS("proxy-connection") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 17:
        return IS("transfer-encoding") ? REQ_HDR_DROP : REQ_HDR_FORWARD;
    case 20:
        return IS("grpc-accept-encoding") ? REQ_HDR_GRPC_ACCEPT_ENCODING : REQ_HDR_FORWARD;
    default:
        return REQ_HDR_FORWARD;
    }
#undef IS
}

#define KINDS_CACHED 64 /* request headers whose kind ptc_call_start() keeps for build_request_headers() */

/* Bump allocator over the call's single header allocation. */
typedef struct {
    char *p, *end;
} arena_t;

static uint8_t *arena_copy(arena_t *a, ptc_iovec_t s)
{
    uint8_t *dst = (uint8_t *)a->p;
    if (s.len != 0)
        memcpy(a->p, s.base, s.len);
    a->p[s.len] = '\0';
    a->p += s.len + 1;
    return dst;
}

enum { NV_STATIC = 0, NV_COPY_VALUE = 2, NV_UNIQUE = 4 };

/* Request fields whose value is new on every call. */
static bool unique_per_call(ptc_iovec_t request_id_header, ptc_iovec_t name)
{
    return ptc_iov_eq(name, PTC_STRLIT("traceparent")) || ptc_iov_eq(name, PTC_STRLIT("authorization")) ||
           ptc_iov_eq(name, request_id_header);
}

/*
 * Appends a field to the upstream header block; values made on the stack are copied into the call's arena, the
 * request's own fields are borrowed (nva_own() copies them when the upstream does not encode the block while the
 * request still exists). Request names are lower case already (ptc_request_t), as HTTP/2 wants.
 */
static void add_nv(nghttp2_nv *nv, size_t *n, arena_t *a, ptc_iovec_t name, ptc_iovec_t value, int copy)
{
    nv[*n].name = (uint8_t *)(uintptr_t)name.base;
    nv[*n].namelen = name.len;
    nv[*n].value = (copy & NV_COPY_VALUE) != 0 ? arena_copy(a, value) : (uint8_t *)(uintptr_t)value.base;
    nv[*n].valuelen = value.len;
    nv[*n].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    /* values that differ on every call (request ids, trace context, tokens) would only churn the
     * HPACK dynamic table: sent as literals without indexing */
    if ((copy & NV_UNIQUE) != 0)
        nv[*n].flags |= NGHTTP2_NV_FLAG_NO_INDEX;
    (*n)++;
}

/* Request fields of the Connect protocol, which the gateway translated (or read) and does not forward:
 * connect-* (reserved by the protocol), and content-encoding, a unary message's encoding. */
static bool connect_only_header(ptc_iovec_t name)
{
    return ptc_iov_startswith_ci(name, PTC_STRLIT("connect-")) || ptc_iov_eq(name, PTC_STRLIT("content-encoding"));
}

/*
 * Builds the upstream header block in one allocation: pseudo-headers, content-type
 * application/grpc[+codec], te: trailers, grpc-timeout, grpc-accept-encoding, then the request's own
 * metadata with hop-by-hop fields removed and names lower-cased.
 */
static int build_request_headers(ptc_call_t *call, const ptc_request_t *req, const uint8_t *kinds, ptc_iovec_t path,
                                 ptc_iovec_t codec, const char *timeout, ptc_iovec_t accept_enc, ptc_iovec_t connection)
{
    const ptc_upstream_config_t *ucfg = call->up->config;
    char ct[64], authbuf[300];
    ptc_iovec_t authority = req->authority;

    if (ucfg->authority != NULL) {
        authority = ptc_iov(ucfg->authority, strlen(ucfg->authority));
    } else if (authority.len == 0) {
        int n = snprintf(authbuf, sizeof(authbuf), "%s:%u", ucfg->endpoints[0].host, ucfg->endpoints[0].port);
        authority = ptc_iov(authbuf, n > 0 ? PTC_MIN((size_t)n, sizeof(authbuf) - 1) : 0);
    }
    ptc_iovec_t ctv = PTC_STRLIT("application/grpc");
    if (!ptc_ctype_codec_is_proto(codec)) {
        int ctn = snprintf(ct, sizeof(ct), "application/grpc+%.*s", (int)codec.len, codec.base);
        ctv = ptc_iov(ct, ctn > 0 ? PTC_MIN((size_t)ctn, sizeof(ct) - 1) : 0);
    }

    size_t max_nv = 9 + req->num_headers;
    size_t bytes = authority.len + 1 + ctv.len + 1 + (timeout != NULL ? strlen(timeout) + 1 : 0); /* what is copied */

    char *mem = ptc_malloc(max_nv * sizeof(nghttp2_nv) + bytes);
    if (mem == NULL)
        return PTC_ENOMEM;
    nghttp2_nv *nv = (nghttp2_nv *)(void *)mem;
    arena_t a = {mem + max_nv * sizeof(nghttp2_nv), mem + max_nv * sizeof(nghttp2_nv) + bytes};
    size_t n = 0;

    add_nv(nv, &n, &a, PTC_STRLIT(":method"), PTC_STRLIT("POST"), NV_STATIC);
    add_nv(nv, &n, &a, PTC_STRLIT(":scheme"), ucfg->tls != NULL ? PTC_STRLIT("https") : PTC_STRLIT("http"), NV_STATIC);
    add_nv(nv, &n, &a, PTC_STRLIT(":path"), path, NV_STATIC);
    add_nv(nv, &n, &a, PTC_STRLIT(":authority"), authority, authority.base == authbuf ? NV_COPY_VALUE : NV_STATIC);
    add_nv(nv, &n, &a, PTC_STRLIT("content-type"), ctv, ctv.base == ct ? NV_COPY_VALUE : NV_STATIC);
    add_nv(nv, &n, &a, PTC_STRLIT("te"), PTC_STRLIT("trailers"), NV_STATIC);
    if (timeout != NULL)
        add_nv(nv, &n, &a, PTC_STRLIT("grpc-timeout"), ptc_iov(timeout, strlen(timeout)), NV_COPY_VALUE);
    if (accept_enc.len != 0)
        add_nv(nv, &n, &a, PTC_STRLIT("grpc-accept-encoding"), accept_enc, NV_STATIC);
    else
        add_nv(nv, &n, &a, PTC_STRLIT("grpc-accept-encoding"), PTC_STRLIT("identity"), NV_STATIC);
    if (call->connect && call->req_flags != 0) /* Connect's gzip messages go up as gRPC's */
        add_nv(nv, &n, &a, PTC_STRLIT("grpc-encoding"), PTC_STRLIT("gzip"), NV_STATIC);
    const ptc_request_id_config_t *rid = &call->cfg->request_id;
    ptc_iovec_t rid_header = rid->enabled ? ptc_iov(rid->header, strlen(rid->header)) : ptc_iov(NULL, 0);
    for (size_t i = 0; i < req->num_headers; i++) {
        if (req_hdr_forwarded(i < KINDS_CACHED ? kinds[i] : classify_request_header(req->headers[i].name)) &&
            (connection.len == 0 || !ptc_iov_list_contains_ci(connection, req->headers[i].name)) &&
            (!call->connect || !connect_only_header(req->headers[i].name)))
            add_nv(nv, &n, &a, req->headers[i].name, req->headers[i].value, unique_per_call(rid_header, req->headers[i].name) ? NV_UNIQUE : NV_STATIC);
    }
    call->nva = nv;
    call->nva_len = n;
    return 0;
}

/*
 * The upstream did not take the header block while the request existed (the call waits for a connection or a
 * stream slot): the block, names and values, copied into one allocation of the call's own.
 */
static int nva_own(ptc_call_t *call)
{
    size_t bytes = 0;
    for (size_t i = 0; i < call->nva_len; i++)
        bytes += call->nva[i].namelen + call->nva[i].valuelen + 2;
    char *mem = ptc_malloc(call->nva_len * sizeof(nghttp2_nv) + bytes);
    if (mem == NULL)
        return PTC_ENOMEM;
    nghttp2_nv *nv = (nghttp2_nv *)(void *)mem;
    arena_t a = {mem + call->nva_len * sizeof(nghttp2_nv), mem + call->nva_len * sizeof(nghttp2_nv) + bytes};
    for (size_t i = 0; i < call->nva_len; i++) {
        nv[i] = call->nva[i];
        nv[i].name = arena_copy(&a, ptc_iov((const char *)call->nva[i].name, call->nva[i].namelen));
        nv[i].value = arena_copy(&a, ptc_iov((const char *)call->nva[i].value, call->nva[i].valuelen));
    }
    ptc_free(call->nva);
    call->nva = nv;
    return 0;
}

/*
 * The request side of a unary Connect call: a GET's message framed now; a POST's frame header now when its
 * length is known, else its body held (connect_unary_body). Returns 0, or -1 when the call failed.
 */
static int connect_unary_start(ptc_call_t *call, const ptc_filter_ctx_t *ctx)
{
    uint8_t hdr[PTC_FRAME_HEADER_SIZE];
    const ptc_connect_req_t *c = &ctx->connect;
    const ptc_route_config_t *route = ctx->route;

    if (c->get) {
        call->req_get = true;
        if (route->get_cache_control != NULL)
            call->cache_control = route->get_cache_control; /* the snapshot's, which the call pins */
        ptc_frame_header_encode(hdr, call->req_flags, (uint32_t)c->message.len);
        req_push(call, hdr, sizeof(hdr));
        req_push(call, (const uint8_t *)c->message.base, c->message.len);
    } else if (c->has_length) {
        call->req_left = c->length;
        ptc_frame_header_encode(hdr, call->req_flags, (uint32_t)c->length);
        req_push(call, hdr, sizeof(hdr));
    } else {
        call->req_hold = true;
        if ((call->req_held = ptc_worker_evbuffer(call->worker)) == NULL)
            call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    }
    return call->resp_state == RESP_DONE ? -1 : 0;
}

void ptc_call_start(ptc_worker_t *w, ptc_downstream_t *ds, ptc_filter_ctx_t *ctx, ptc_call_t **out)
{
    const ptc_request_t *req = ctx->req;
    const ptc_config_t *cfg = &req->snap->config;
    ptc_ctype_t ct = ctx->ct;
    ptc_iovec_t path = ctx->path, connection = {"", 0};
    const ptc_header_t *accept = NULL, *accept_enc = NULL, *timeout_hdr = NULL, *http_accept_enc = NULL;
    uint8_t kinds[KINDS_CACHED];

    *out = NULL; /* the path has no query: gRPC servers match :path exactly; the query is for the gateway */
    for (size_t i = 0; i < req->num_headers; i++) { /* the first of each, but Connection: the last */
        const ptc_header_t *h = &req->headers[i];
        req_hdr_kind_t kind = classify_request_header(h->name);
        if (i < KINDS_CACHED)
            kinds[i] = (uint8_t)kind;
        switch (kind) {
        case REQ_HDR_ACCEPT:
            if (accept == NULL)
                accept = h;
            break;
        case REQ_HDR_GRPC_ACCEPT_ENCODING:
            if (accept_enc == NULL)
                accept_enc = h;
            break;
        case REQ_HDR_ACCEPT_ENCODING:
            if (http_accept_enc == NULL)
                http_accept_enc = h;
            break;
        case REQ_HDR_GRPC_TIMEOUT:
            if (timeout_hdr == NULL)
                timeout_hdr = h;
            break;
        case REQ_HDR_CONNECTION:
            connection = h->value; /* names hop-by-hop fields (RFC 9110 §7.6.1); one such header is expected */
            break;
        default:
            break;
        }
    }
    /* gzip for the whole body (Content-Encoding), but Connect streams compress message by message (env_gzip) when
     * the client reads that: Accept-Encoding then does not add a second layer */
    bool env_gzip = ct.kind == PTC_CT_CONNECT_STREAM && cfg->compression.gzip && ctx->connect.accept_gzip;
    bool gzip_ok = cfg->compression.gzip && ct.kind != PTC_CT_GRPC && !env_gzip &&
                   (ct.kind == PTC_CT_CONNECT ? ctx->connect.accept_gzip
                                              : http_accept_enc != NULL && ptc_accept_encoding_gzip(http_accept_enc->value));

    ptc_call_t *call = ptc_malloc(sizeof(*call));
    if (call == NULL) {
        ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        return;
    }
    memset(call, 0, offsetof(ptc_call_t, req_small)); /* the scratch space after it is not */
    w->num_calls++;
    call->us.cb = &upstream_stream_callbacks;
    hdrstore_init(&call->hdrs, call->hdrs_buf, sizeof(call->hdrs_buf), call->hdrs_items, HDRS_INLINE_ITEMS);
    call->worker = w;
    call->snap = ptc_snapshot_ref(req->snap);
    call->cfg = cfg;
    call->ds = ds;
    call->start_us = ctx->start_us != 0 ? ctx->start_us : ptc_now_us();
    call->transport = req->transport;
    call->info = *ctx->info; /* the call owns what it points to from here */
    memset(ctx->info, 0, sizeof(*ctx->info));
    if (call->info.method == NULL)
        call->info.method = &w->metrics.other;
    ptc_metrics_call_started(&w->metrics, call->info.method);
    call->native = ct.kind == PTC_CT_GRPC;
    call->connect = ct.kind == PTC_CT_CONNECT || ct.kind == PTC_CT_CONNECT_STREAM;
    call->connect_unary = ct.kind == PTC_CT_CONNECT;
    copy_str(call->codec, sizeof(call->codec), ct.codec);
    call->ct = (ptc_ctype_t){ct.kind, ptc_iov(call->codec, strlen(call->codec))};
    if (call->connect)
        call->req_flags = ctx->connect.compressed ? PTC_FRAME_FLAG_COMPRESSED : 0;
    call->gzip_ok = gzip_ok;
    call->env_gzip = env_gzip;
    call->req_text = ct.kind == PTC_CT_GRPC_WEB_TEXT;
    ptc_response_ctype(ct, accept != NULL ? accept->value : ptc_iov("", 0), call->resp_ctype, sizeof(call->resp_ctype), &call->resp_text);
    ptc_b64_decoder_init(&call->req_b64);
    ptc_b64_encoder_init(&call->resp_b64);
    ptc_frame_parser_init(&call->req_parser);
    ptc_frame_parser_init(&call->resp_parser);
    call->req_buf = ptc_worker_evbuffer(w);
    call->out = ptc_worker_evbuffer(w);
    call->held = ptc_worker_evbuffer(w);
    copy_str(call->path, sizeof(call->path), path);
    *out = call;

    const ptc_route_config_t *route = ctx->route; /* the pipeline's route filter saw to it that there is one */
    if (call->req_buf == NULL || call->out == NULL || call->held == NULL) {
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        goto fail;
    }
    ptc_upstream_t *pool = ptc_worker_pool(w, req->snap, route->upstream_index);
    if (pool == NULL) {
        call_fail(call, PTC_GRPC_UNAVAILABLE, "upstream '%s' was removed by a configuration reload",
                  cfg->upstreams[route->upstream_index].name);
        goto fail;
    }
    call->up = ptc_upstream_client(pool);

    /* deadline: parse (overflow-safe), apply the default, clamp, forward the clamped value */
    uint64_t timeout_ns = 0;
    bool has_timeout = false;
    char tbuf[PTC_GRPC_TIMEOUT_STRLEN];
    if (call->connect && ctx->connect.has_timeout) {
        timeout_ns = ctx->connect.timeout_ms * 1000000; /* at most 10 digits of ms: no overflow */
        has_timeout = true;
    } else if (timeout_hdr != NULL) {
        if (ptc_grpc_timeout_parse(timeout_hdr->value, &timeout_ns) != 0) {
            call_fail(call, PTC_GRPC_INVALID_ARGUMENT, "malformed grpc-timeout header '%.*s' (want 1-8 digits and a unit H M S m u n)",
                      (int)PTC_MIN(timeout_hdr->value.len, (size_t)40), timeout_hdr->value.base);
            goto fail;
        }
        has_timeout = true;
    } else if (cfg->timeouts.default_grpc_timeout_ms != 0) {
        timeout_ns = cfg->timeouts.default_grpc_timeout_ms * 1000000;
        has_timeout = true;
    }
    if (has_timeout && cfg->timeouts.max_grpc_timeout_ms != 0 && timeout_ns / 1000000 >= cfg->timeouts.max_grpc_timeout_ms)
        timeout_ns = cfg->timeouts.max_grpc_timeout_ms * 1000000;
    if (has_timeout)
        ptc_grpc_timeout_format(timeout_ns, tbuf);

    if (build_request_headers(call, req, kinds, path, ct.codec, has_timeout ? tbuf : NULL,
                              accept_enc != NULL ? accept_enc->value : ptc_iov("", 0), connection) != 0) {
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        goto fail;
    }
    if (call->connect_unary && connect_unary_start(call, ctx) != 0)
        goto fail;
    if (has_timeout) {
        call->timeout_ms = timeout_ns / 1000000 + (timeout_ns % 1000000 != 0);
        call->deadline = evtimer_new(w->base, on_deadline, call);
        uint64_t secs = timeout_ns / 1000000000;
        struct timeval tv = {(time_t)PTC_MIN(secs, (uint64_t)INT32_MAX * 16), (suseconds_t)(timeout_ns % 1000000000 / 1000)};
        if (call->deadline != NULL)
            evtimer_add(call->deadline, &tv);
    }
    ptc_log_debug(CALL_FMT ": starting (%s request, %s response)", CALL_ARGS(call), call->req_text ? "text" : "binary",
                  call->resp_text ? "text" : "binary");
    call->upstream_start_us = ptc_now_us();
    call->starting = true;
    call->up->cb->start(call->up, &call->us);
    call->starting = false;
    if (!call->nva_taken && call->resp_state != RESP_DONE && nva_own(call) != 0)
        call_fail(call, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    maybe_free(call); /* when the start failed at once */
    return;

fail:
    /* answered already; the call is done with its downstream */
    *out = NULL;
    maybe_free(call);
}
