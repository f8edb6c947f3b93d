/*
 * The Connect codec (src/connect/): the first byte picks a parser, the rest is its input.
 *
 *   0  the query of a unary GET, with scratch space of exactly the documented size: on success the
 *      message is no longer than the query and the encoding is a codec name
 *   1  a unary error's JSON (status, grpc-message, grpc-status-details-bin split from the input)
 *   2  an end-of-stream JSON, with metadata fields made of the input's lines
 *   3  a request body of envelopes split in two at a point the input chooses: the same events as whole,
 *      and every flag the gateway lets through is 0 or compressed
 *
 * Every JSON the gateway writes must be one valid JSON value in valid UTF-8: checked by a small validator.
 */
#include <string.h>

#include "fuzz_util.h"
#include "portico/codec.h"
#include "portico/connect.h"

/* ---- a strict JSON validator (RFC 8259), enough for what the gateway writes ---- */

static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1fu : len == 3 ? c & 0x0fu : c & 0x07u;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    return cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : len;
}

static bool ws_value(const uint8_t **p, const uint8_t *end, int depth);

static bool string(const uint8_t **p, const uint8_t *end)
{
    if (*p == end || **p != '"')
        return false;
    for ((*p)++; *p < end;) {
        uint8_t c = **p;
        if (c == '"') {
            (*p)++;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (end - *p < 2)
                return false;
            uint8_t e = (*p)[1];
            if (e == 'u') {
                if (end - *p < 6)
                    return false;
                for (int i = 2; i < 6; i++)
                    if (!strchr("0123456789abcdefABCDEF", (*p)[i]) || (*p)[i] == 0)
                        return false;
                *p += 6;
            } else if (e != '\0' && strchr("\"\\/bfnrt", e) != NULL) {
                *p += 2;
            } else {
                return false;
            }
            continue;
        }
        size_t n = utf8_len(*p, (size_t)(end - *p));
        if (n == 0)
            return false;
        *p += n;
    }
    return false;
}

static void skip_ws(const uint8_t **p, const uint8_t *end)
{
    while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
        (*p)++;
}

static bool ws_value(const uint8_t **p, const uint8_t *end, int depth)
{
    skip_ws(p, end);
    if (*p == end || depth > 16)
        return false;
    uint8_t c = **p;
    if (c == '"')
        return string(p, end);
    if (c == '{' || c == '[') {
        uint8_t close = c == '{' ? '}' : ']';
        (*p)++;
        skip_ws(p, end);
        if (*p < end && **p == close) {
            (*p)++;
            return true;
        }
        for (;;) {
            if (c == '{') {
                skip_ws(p, end);
                if (!string(p, end))
                    return false;
                skip_ws(p, end);
                if (*p == end || **p != ':')
                    return false;
                (*p)++;
            }
            if (!ws_value(p, end, depth + 1))
                return false;
            skip_ws(p, end);
            if (*p == end)
                return false;
            if (**p == close) {
                (*p)++;
                return true;
            }
            if (**p != ',')
                return false;
            (*p)++;
        }
    }
    return false; /* the gateway writes no numbers, booleans or nulls */
}

static void check_json(const char *s, size_t len)
{
    FUZZ_CHECK(s != NULL);
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    FUZZ_CHECK(ws_value(&p, end, 0));
    skip_ws(&p, end);
    FUZZ_CHECK(p == end);
}

/* ---- targets ---- */

static void query(const uint8_t *data, size_t size)
{
    uint8_t *scratch = malloc(PTC_CONNECT_GET_SCRATCH(size)); /* exactly: ASan sees an overrun */
    char *q = fuzz_cstr(data, size);
    ptc_connect_get_t get;
    const char *why = NULL;
    if (ptc_connect_get_parse(ptc_iov(q, size), scratch, PTC_CONNECT_GET_SCRATCH(size), &get, &why) == 0) {
        FUZZ_CHECK(ptc_connect_query_is_get(ptc_iov(q, size)));
        FUZZ_CHECK(get.message.len <= size && get.encoding.len != 0 && ptc_codec_is_token(get.encoding));
    } else {
        FUZZ_CHECK(why != NULL);
    }
    free(q);
    free(scratch);
}

static void error_json(const uint8_t *data, size_t size, bool end_stream)
{
    if (size < 1)
        return;
    int status = data[0] % 20;
    data++, size--;
    size_t split = fuzz_take_split(&data, &size);
    ptc_connect_error_t e = {status, ptc_iov((const char *)data, split), (status & 1) != 0,
                             ptc_iov((const char *)data + split, size - split)};
    size_t len = 0;
    char *json;
    if (!end_stream) {
        json = ptc_connect_error_json(&e, &len);
    } else {
        /* metadata: "name:value" lines of the message part; the details part stays the details */
        ptc_header_t md[16];
        size_t n = 0;
        const char *p = (const char *)data, *end = p + split;
        while (p < end && n < 16) {
            const char *nl = memchr(p, '\n', (size_t)(end - p)), *stop = nl != NULL ? nl : end;
            const char *colon = memchr(p, ':', (size_t)(stop - p));
            md[n++] = colon != NULL
                          ? (ptc_header_t){ptc_iov(p, (size_t)(colon - p)), ptc_iov(colon + 1, (size_t)(stop - colon - 1))}
                          : (ptc_header_t){ptc_iov(p, (size_t)(stop - p)), ptc_iov("", 0)};
            p = nl != NULL ? nl + 1 : end;
        }
        json = ptc_connect_end_stream_json(status % 2 == 0 ? &e : NULL, md, n, &len);
    }
    check_json(json, len);
    free(json);
}

typedef struct {
    uint8_t log[4096];
    size_t len;
    bool bad_flags;
} rec_t;

static int record(void *ctx, ptc_frame_event_t ev, uint8_t flags, uint32_t length, const uint8_t *data, size_t len)
{
    rec_t *r = ctx;
    if (ev == PTC_FRAME_EV_HEADER && ptc_connect_request_flags_error(flags) != NULL) {
        r->bad_flags = true;
        return -1; /* as the call does */
    }
    if (ev == PTC_FRAME_EV_HEADER)
        FUZZ_CHECK((flags & ~PTC_CONNECT_FLAG_COMPRESSED) == 0);
    uint8_t head[6] = {(uint8_t)ev,    flags, (uint8_t)(length >> 24), (uint8_t)(length >> 16), (uint8_t)(length >> 8),
                       (uint8_t)length};
    const uint8_t *add = ev == PTC_FRAME_EV_DATA ? data : head;
    size_t n = ev == PTC_FRAME_EV_DATA ? len : sizeof(head);
    n = PTC_MIN(n, sizeof(r->log) - r->len);
    memcpy(r->log + r->len, add, n);
    r->len += n;
    return 0;
}

static void envelopes(const uint8_t *data, size_t size)
{
    size_t split = fuzz_take_split(&data, &size);
    static rec_t whole, parts;
    ptc_frame_parser_t a, b;
    memset(&whole, 0, sizeof(whole));
    memset(&parts, 0, sizeof(parts));
    ptc_frame_parser_init(&a);
    ptc_frame_parser_init(&b);
    int ra = ptc_frame_parser_feed(&a, data, size, record, &whole);
    int rb = ptc_frame_parser_feed(&b, data, split, record, &parts);
    if (rb == 0)
        rb = ptc_frame_parser_feed(&b, data + split, size - split, record, &parts);
    FUZZ_CHECK((ra != 0) == (rb != 0) && whole.bad_flags == parts.bad_flags);
    /* data events may be cut differently: compare what they carry, headers in between */
    if (ra == 0) {
        FUZZ_CHECK(a.frames == b.frames && ptc_frame_parser_at_boundary(&a) == ptc_frame_parser_at_boundary(&b));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 4;
    data++, size--;
    switch (mode) {
    case 0:
        query(data, size);
        break;
    case 1:
        error_json(data, size, false);
        break;
    case 2:
        error_json(data, size, true);
        break;
    default:
        envelopes(data, size);
        break;
    }
    return 0;
}
