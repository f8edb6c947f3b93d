/*
 * The upstream HTTP/2 client protocol (src/upstream/h2client.c) fed a hostile server in memory, much faster than
 * the socket-level target (upstream.c): three streams are open (ids 1, 3, 5; the third withdrawn halfway), the
 * input is what the server sends, handed over in two pieces (frames straddle the split). Seeds start with the
 * server's SETTINGS. Whatever came: every callback is for a stream that is still open, a stream ends at most once
 * and hears nothing after, fields are non-empty lower-case names, the flow-control windows never go past 2^31-1,
 * and nothing leaks (ASan). The client's field checks are also compared with nghttp2's on the raw input.
 */
#include <string.h>

#include <event2/buffer.h>

#include "fuzz_util.h"
#include "portico/h2client.h"
#include "portico/log.h"

typedef struct {
    ptc_upstream_stream_t s; /* first */
    int ends;
    bool response, trailers, data_end;
    ptc_h2c_t *c;
} test_stream_t;

static ssize_t read_request(ptc_upstream_stream_t *s, size_t length, uint32_t *flags)
{
    (void)s;
    size_t n = PTC_MIN(length, 5);
    if (n == 5)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int write_request(ptc_upstream_stream_t *s, struct evbuffer *out, const uint8_t *framehd, size_t length)
{
    (void)s;
    static const uint8_t body[5] = {0};
    FUZZ_CHECK(length <= 5);
    return evbuffer_add(out, framehd, 9) != 0 || evbuffer_add(out, body, length) != 0 ? -1 : 0;
}

static test_stream_t *ts(ptc_upstream_stream_t *s)
{
    test_stream_t *t = (test_stream_t *)s;
    FUZZ_CHECK(t->ends == 0 && ptc_h2c_stream(t->c, s->stream_id) == s);
    return t;
}

static void on_header(ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *name, size_t namelen,
                      const uint8_t *value, size_t valuelen)
{
    (void)value;
    (void)valuelen;
    test_stream_t *t = ts(s);
    FUZZ_CHECK(namelen > 0 && name != NULL);
    for (size_t i = 0; i < namelen; i++)
        FUZZ_CHECK(name[i] < 'A' || name[i] > 'Z');
    FUZZ_CHECK(cat == (t->response ? NGHTTP2_HCAT_HEADERS : NGHTTP2_HCAT_RESPONSE));
    FUZZ_CHECK(name[0] != ':' || cat == NGHTTP2_HCAT_RESPONSE);
}

static void on_headers_end(ptc_upstream_stream_t *s, nghttp2_headers_category cat, bool end_stream)
{
    test_stream_t *t = ts(s);
    if (cat == NGHTTP2_HCAT_RESPONSE) {
        FUZZ_CHECK(!t->response);
        t->response = true;
    } else {
        FUZZ_CHECK(t->response && !t->trailers && end_stream);
        t->trailers = true;
    }
}

static void on_data(ptc_upstream_stream_t *s, const uint8_t *data, size_t len)
{
    (void)data;
    test_stream_t *t = ts(s);
    FUZZ_CHECK(t->response && !t->trailers && len > 0);
    ptc_h2c_consume(t->c, s, len); /* re-entrant, as a call's credit is */
}

static void on_data_end(ptc_upstream_stream_t *s)
{
    test_stream_t *t = ts(s);
    FUZZ_CHECK(t->response && !t->data_end);
    t->data_end = true;
}

static void on_close(ptc_upstream_stream_t *s, uint32_t error_code, const char *conn_error)
{
    (void)s;
    (void)error_code;
    (void)conn_error;
    FUZZ_CHECK(0); /* the pool's callback; the client calls h2_on_stream_close instead */
}

static void on_error(ptc_upstream_stream_t *s, const char *message)
{
    (void)s;
    (void)message;
    FUZZ_CHECK(0);
}

static const ptc_upstream_stream_cb_t stream_cb = {fuzz_request_headers, read_request, write_request, on_header, on_headers_end,
                                                   on_data,     on_data_end,  on_close,      on_error};

static void h2_on_settings(ptc_h2c_t *c, bool first)
{
    (void)c;
    (void)first;
}

static void h2_on_goaway(ptc_h2c_t *c, int32_t last, uint32_t code)
{
    (void)c;
    (void)code;
    FUZZ_CHECK(last >= 0);
}

static void h2_on_watched(ptc_h2c_t *c, ptc_upstream_stream_t *s, nghttp2_headers_category cat, const uint8_t *value,
                          size_t valuelen)
{
    (void)cat;
    (void)valuelen;
    FUZZ_CHECK(value != NULL);
    ts(s);
    if (valuelen == 1 && value[0] == 'x' && s->stream_id == 1)
        ptc_h2c_cancel(c, s, 0); /* a stream may be withdrawn here too */
}

static void h2_on_stream_close(ptc_h2c_t *c, ptc_upstream_stream_t *s, uint32_t code)
{
    (void)code;
    test_stream_t *t = (test_stream_t *)s;
    FUZZ_CHECK(t->ends == 0 && ptc_h2c_stream(c, s->stream_id) == NULL);
    t->ends++;
}

static const ptc_h2c_cb_t h2_cb = {h2_on_settings, h2_on_goaway, h2_on_watched, h2_on_stream_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        ptc_log_set_level(getenv("FUZZ_VERBOSE") != NULL ? PTC_LOG_DEBUG : PTC_LOG_OFF);
        quiet = true;
    }
    /* the field checks agree with nghttp2's on every input (and every suffix of it: other alignments) */
    for (size_t k = 0; k < size && k < 16; k++) {
        FUZZ_CHECK(ptc_h2_valid_value(data + k, size - k) == (nghttp2_check_header_value_rfc9113(data + k, size - k) != 0));
        FUZZ_CHECK(ptc_h2_valid_name(data + k, size - k) == (nghttp2_check_header_name(data + k, size - k) != 0));
    }
    size_t split = fuzz_take_split(&data, &size);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    ptc_h2c_t c;
    test_stream_t t[3];
    bool stop = false;

    FUZZ_CHECK(out != NULL && in != NULL);
    FUZZ_CHECK(ptc_h2c_init(&c, &h2_cb, NULL, out, 1024, 1 << 20) == 0);
    c.watch = "grpc-status";
    c.watch_len = 11;
    for (int i = 0; i < 3; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].s.cb = &stream_cb;
        t[i].c = &c;
        FUZZ_CHECK(ptc_h2c_submit(&c, &t[i].s) == 0);
        FUZZ_CHECK(t[i].s.stream_id == 2 * i + 1);
    }
    ptc_h2c_flush(&c, 1 << 20);
    int rv = 0;
    const uint8_t *parts[2] = {data, data + split};
    size_t lens[2] = {split, size - split};
    for (int p = 0; p < 2 && rv == 0; p++) {
        evbuffer_add(in, parts[p], lens[p]);
        rv = ptc_h2c_feed(&c, in, &stop);
        if (p == 0 && t[2].ends == 0)
            ptc_h2c_cancel(&c, &t[2].s, 0);
        ptc_h2c_flush(&c, 1 << 20);
        FUZZ_CHECK(c.send_window <= 0x7fffffff);
        for (int i = 0; i < 3; i++)
            FUZZ_CHECK(t[i].s.send_window <= 0x7fffffff);
    }
    FUZZ_CHECK(rv == 0 || (c.failed && c.error[0] != '\0'));
    ptc_h2c_free(&c);
    evbuffer_free(out);
    evbuffer_free(in);
    return 0;
}
