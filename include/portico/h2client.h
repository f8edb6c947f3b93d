/*
 * The HTTP/2 client protocol of an upstream connection (src/upstream/h2client.c): framing, flow control,
 * stream states and header checks of RFC 9113 for a client that only opens streams (no push), with HPACK
 * decoding by nghttp2's inflater and its own encoder (static table and plain literals: nothing it sends
 * depends on state the server keeps, so there is no dynamic table to mirror and no Huffman coding).
 *
 * It does no I/O: frames are appended to `out`, and ptc_h2c_feed() is given what the socket read. The pool
 * (src/upstream/pool.c) owns the connection, the bufferevent and the streams' owners; the streams themselves
 * are ptc_upstream_stream_t (include/portico/upstream.h), whose owner's callbacks (cb) hear headers and data.
 *
 * Re-entrancy: every callback may open, withdraw or credit streams (ptc_h2c_submit/cancel/consume/resume);
 * none may free the ptc_h2c_t. After a callback into a stream's owner the stream may be gone (withdrawn,
 * its owner freed): the client looks it up again by id.
 */
#ifndef PORTICO_H2CLIENT_H
#define PORTICO_H2CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "portico/upstream.h"

typedef struct st_ptc_h2c_t ptc_h2c_t;

typedef struct st_ptc_h2c_cb_t {
    /* The server's SETTINGS arrived (first: the connection's first frame from the server). */
    void (*on_settings)(ptc_h2c_t *c, bool first);
    /* GOAWAY: streams above last_stream_id are closed (REFUSED_STREAM) right after this returns. */
    void (*on_goaway)(ptc_h2c_t *c, int32_t last_stream_id, uint32_t error_code);
    /* A response or trailer field named c->watch of an open stream (already checked), before s->cb->on_header
     * hears it (the others go to s->cb->on_header alone). */
    void (*on_watched)(ptc_h2c_t *c, ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *value,
                       size_t valuelen);
    /* The stream is closed (both directions ended, or reset by either side with error_code) and forgotten. */
    void (*on_stream_close)(ptc_h2c_t *c, ptc_upstream_stream_t *s, uint32_t error_code);
} ptc_h2c_cb_t;

struct st_ptc_h2c_t {
    const ptc_h2c_cb_t *cb;
    void *user;
    const char *label; /* for log lines: "upstream NAME: connection to HOST:PORT" (the pool's) */
    const char *watch; /* the field name cb->on_watched hears of (the owner's; none when NULL) */
    size_t watch_len;
    struct evbuffer *out;
    nghttp2_hd_inflater *inflater;
    /* the server's settings */
    uint32_t max_concurrent;
    uint32_t max_frame_size;
    int32_t initial_window; /* the server's SETTINGS_INITIAL_WINDOW_SIZE: our streams' send windows start here */
    bool got_settings;
    /* ours */
    int32_t local_window;   /* SETTINGS_INITIAL_WINDOW_SIZE we announced (the streams' receive windows) */
    int64_t send_window;    /* connection send window */
    int64_t recv_window;    /* connection receive window: bytes the server may still send */
    int64_t recv_window_size; /* what it was opened to */
    uint64_t recv_credit;     /* bytes consumed and not yet announced with WINDOW_UPDATE */
    int32_t next_stream_id;
    int32_t last_stream_id; /* highest opened */
    bool goaway;
    /* a header block being received (HEADERS, CONTINUATION...) */
    bool hb_active;
    bool hb_end_stream;
    bool hb_forward;        /* the stream is open and the block is well-formed so far: fields go to its owner */
    bool hb_status;         /* :status seen */
    bool hb_regular;        /* a regular field seen (pseudo-header fields must come first) */
    bool hb_informational;  /* a 1xx response: skipped */
    uint8_t hb_cat;         /* nghttp2_headers_category */
    int32_t hb_stream;
    uint32_t hb_frames;
    size_t hb_bytes;
    const char *hb_error;   /* why the block is malformed (a stream error at its end) */
    struct st_ptc_h2c_hbslot_t *hb_rec; /* where the block (pure, in one frame) is being kept decoded, or NULL */
    /* header blocks kept decoded (h2client.c, "repeated header blocks"); allocated with the first */
    struct st_ptc_h2c_hbcache_t *hbcache;
    uint64_t hpack_gen; /* 1 + the header blocks decoded that may have changed the HPACK dynamic table */
    /* streams: a hash table by id, chained through h2_next */
    ptc_upstream_stream_t **buckets;
    uint32_t nbuckets; /* a power of two */
    uint32_t nstreams;
    TAILQ_HEAD(, st_ptc_upstream_stream_t) sendq; /* streams that may have request DATA to send */
    bool failed;
    char error[160];
    size_t staged;      /* bytes in stage */
    uint8_t stage[4096]; /* frames on their way to out (h2client.c: stage_out) */
};

/* Sets c up and appends the connection preface, our SETTINGS and the connection window's opening to out.
 * Returns 0 or PTC_ENOMEM. */
int ptc_h2c_init(ptc_h2c_t *c, const ptc_h2c_cb_t *cb, void *user, struct evbuffer *out, uint32_t stream_window,
                 uint32_t conn_window) PTC_WARN_UNUSED;
/* Frees what c holds (not the streams: the pool ends them first). */
void ptc_h2c_free(ptc_h2c_t *c);

/* Can another stream be opened (the server's MAX_CONCURRENT_STREAMS, stream ids left, no GOAWAY)? */
bool ptc_h2c_can_open(const ptc_h2c_t *c);
/* Opens a stream for s: its HEADERS (s->cb->request_headers) are written now, its DATA in ptc_h2c_flush().
 * Frames written outside ptc_h2c_flush() and ptc_h2c_feed() (HEADERS here, RST_STREAM and WINDOW_UPDATE from
 * cancel and consume) are staged: they reach out in the next ptc_h2c_flush(), which must follow.
 * Returns 0, PTC_ENOMEM, or PTC_ETOOBIG when no stream id is left (the connection must drain). */
int ptc_h2c_submit(ptc_h2c_t *c, ptc_upstream_stream_t *s) PTC_WARN_UNUSED;
/* Withdraws an open stream: RST_STREAM CANCEL, forgotten at once; unconsumed bytes go back to the connection window. */
void ptc_h2c_cancel(ptc_h2c_t *c, ptc_upstream_stream_t *s, size_t unconsumed);
/* The stream's owner has more request body (after read_request answered NGHTTP2_ERR_DEFERRED). */
void ptc_h2c_resume(ptc_h2c_t *c, ptc_upstream_stream_t *s);
/* n response bytes were passed on: credit the stream's and the connection's windows (WINDOW_UPDATE at half). */
void ptc_h2c_consume(ptc_h2c_t *c, ptc_upstream_stream_t *s, size_t n);
/* The stream with this id, or NULL. */
ptc_upstream_stream_t *ptc_h2c_stream(const ptc_h2c_t *c, int32_t id);

/* Writes request DATA of the streams that have some, round-robin, while the windows allow and out holds less
 * than cap. Returns true when it stopped at cap with more to write. On a failure (out of memory) c->failed is
 * set and c->error says why. */
bool ptc_h2c_flush(ptc_h2c_t *c, size_t cap);
/* Processes what `in` holds, frame by frame, draining what was processed; stops when *stop becomes true.
 * Returns 0, or -1 on a connection error: GOAWAY was appended to out, c->error says why. */
int ptc_h2c_feed(ptc_h2c_t *c, struct evbuffer *in, const bool *stop) PTC_WARN_UNUSED;

/* RFC 9113 §8.2.1 checks of a received field, as nghttp2_check_header_name() and
 * nghttp2_check_header_value_rfc9113() make them (a name may be a pseudo-header field's, ':' first). */
bool ptc_h2_valid_name(const uint8_t *name, size_t len);
bool ptc_h2_valid_value(const uint8_t *value, size_t len);

#endif
