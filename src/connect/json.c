/*
 * The JSON the gateway writes for Connect clients: the Error object (a unary error's body, the "error"
 * of a stream's end) and the EndStreamResponse, with grpc-status-details-bin decoded into "details"
 * (connectrpc.com/docs/protocol#error-end-stream). The google.rpc.Status inside grpc-status-details-bin is
 * read by hand: three fields, and the two of each Any.
 *
 * Writers run twice, first counting (jw.p NULL), then writing into an allocation of that size.
 */
#include <stdlib.h>

#include "portico/codec.h"
#include "portico/connect.h"

#include "connect_internal.h"

size_t ptc__utf8_seq_len(const uint8_t *p, size_t avail)
{
    uint8_t c = p[0];
    size_t n;
    uint32_t cp, min;

    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* ---- google.rpc.Status ---- */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p == end)
            return PTC_EINVAL;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return PTC_EINVAL;
}

/*
 * Reads the next field of a message: its number, wire type and, for length-delimited ones, the bytes.
 * Skips the value of the other wire types. Groups (3, 4) are refused: no message here has them.
 */
static int next_field(const uint8_t **p, const uint8_t *end, uint32_t *field, ptc_iovec_t *bytes, int *wire)
{
    uint64_t tag, v;
    if (read_varint(p, end, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return PTC_EINVAL;
    *field = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    switch (*wire) {
    case 0:
        return read_varint(p, end, &v);
    case 1:
    case 5: {
        size_t n = *wire == 1 ? 8 : 4;
        if ((size_t)(end - *p) < n)
            return PTC_EINVAL;
        *p += n;
        return 0;
    }
    case 2:
        if (read_varint(p, end, &v) != 0 || v > (uint64_t)(end - *p))
            return PTC_EINVAL;
        *bytes = ptc_iov((const char *)*p, (size_t)v);
        *p += v;
        return 0;
    default:
        return PTC_EINVAL;
    }
}

int ptc_rpc_status_details(const uint8_t *pb, size_t len, void (*cb)(void *ctx, ptc_iovec_t type_url, ptc_iovec_t value), void *ctx)
{
    const uint8_t *p = pb, *end = pb + len;
    while (p < end) {
        uint32_t field;
        int wire;
        ptc_iovec_t any = {"", 0};
        if (next_field(&p, end, &field, &any, &wire) != 0)
            return PTC_EINVAL;
        if (field != 3)
            continue; /* code, message, and fields a newer Status may add */
        if (wire != 2)
            return PTC_EINVAL;
        ptc_iovec_t type_url = {"", 0}, value = {"", 0};
        const uint8_t *q = (const uint8_t *)any.base, *qend = q + any.len;
        while (q < qend) {
            ptc_iovec_t b = {"", 0};
            if (next_field(&q, qend, &field, &b, &wire) != 0)
                return PTC_EINVAL;
            if ((field == 1 || field == 2) && wire != 2)
                return PTC_EINVAL;
            if (field == 1)
                type_url = b;
            else if (field == 2)
                value = b;
        }
        cb(ctx, type_url, value);
    }
    return 0;
}

/* ---- JSON ---- */

typedef struct st_jw_t {
    char *p; /* NULL: counting */
    size_t len;
} jw_t;

static void jw_raw(jw_t *w, const char *s, size_t n)
{
    if (w->p != NULL && n != 0)
        memcpy(w->p + w->len, s, n);
    w->len += n;
}

#define JW_LIT(w, s) jw_raw((w), (s), sizeof(s) - 1)

/* A JSON string of bytes taken as UTF-8: escapes what JSON requires, invalid sequences become U+FFFD. */
static void jw_string(jw_t *w, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    JW_LIT(w, "\"");
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jw_raw(w, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jw_raw(w, e, 6);
            i++;
        } else {
            size_t len = ptc__utf8_seq_len(s + i, n - i);
            if (len == 0) {
                JW_LIT(w, "\\ufffd");
                i++;
            } else {
                jw_raw(w, (const char *)s + i, len);
                i += len;
            }
        }
    }
    JW_LIT(w, "\"");
}

static void jw_iov_string(jw_t *w, ptc_iovec_t s)
{
    jw_string(w, (const uint8_t *)s.base, s.len);
}

/* Standard base64 without padding, as Connect writes detail values. */
static void jw_b64_raw(jw_t *w, ptc_iovec_t v)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *s = (const uint8_t *)v.base;
    size_t i = 0;
    for (; i + 3 <= v.len; i += 3) {
        uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        char o[4] = {tbl[x >> 18], tbl[(x >> 12) & 63], tbl[(x >> 6) & 63], tbl[x & 63]};
        jw_raw(w, o, 4);
    }
    if (v.len - i == 1) {
        uint32_t x = (uint32_t)s[i] << 16;
        char o[2] = {tbl[x >> 18], tbl[(x >> 12) & 63]};
        jw_raw(w, o, 2);
    } else if (v.len - i == 2) {
        uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        char o[3] = {tbl[x >> 18], tbl[(x >> 12) & 63], tbl[(x >> 6) & 63]};
        jw_raw(w, o, 3);
    }
}

typedef struct st_details_ctx_t {
    jw_t *w;
    size_t n;
} details_ctx_t;

static void write_detail(void *arg, ptc_iovec_t type_url, ptc_iovec_t value)
{
    details_ctx_t *d = arg;
    /* "type.googleapis.com/google.rpc.RetryInfo" -> "google.rpc.RetryInfo" */
    const char *slash = type_url.len != 0 ? memrchr(type_url.base, '/', type_url.len) : NULL;
    ptc_iovec_t type = slash != NULL ? ptc_iov(slash + 1, type_url.len - (size_t)(slash + 1 - type_url.base)) : type_url;
    if (d->n++ == 0)
        JW_LIT(d->w, ",\"details\":[");
    else
        JW_LIT(d->w, ",");
    JW_LIT(d->w, "{\"type\":");
    jw_iov_string(d->w, type);
    JW_LIT(d->w, ",\"value\":\"");
    jw_b64_raw(d->w, value);
    JW_LIT(d->w, "\"}");
}

static void count_detail(void *arg, ptc_iovec_t type_url, ptc_iovec_t value)
{
    (void)type_url;
    (void)value;
    (*(size_t *)arg)++;
}

/* The decoded parts of an error, prepared once for both passes. */
typedef struct st_prepared_t {
    uint8_t *msg; /* percent-decoded message (heap) or NULL: the message as given */
    size_t msg_len;
    uint8_t *details; /* the decoded Status when it parses and has details (heap), else NULL */
    size_t details_len;
} prepared_t;

static int prepare(const ptc_connect_error_t *e, prepared_t *pr)
{
    memset(pr, 0, sizeof(*pr));
    if (e->pct_encoded && e->message.len != 0 && memchr(e->message.base, '%', e->message.len) != NULL) {
        /* grpc-message: %XX decoded; a '%' not followed by two hex digits stays as it is (PROTOCOL-HTTP2.md) */
        if ((pr->msg = malloc(e->message.len)) == NULL)
            return PTC_ENOMEM;
        const char *s = e->message.base;
        for (size_t i = 0; i < e->message.len; i++) {
            int hi = -1, lo = -1;
            if (s[i] == '%' && i + 2 < e->message.len) {
                hi = ptc_hexval(s[i + 1]);
                lo = ptc_hexval(s[i + 2]);
            }
            if (hi >= 0 && lo >= 0) {
                pr->msg[pr->msg_len++] = (uint8_t)(hi << 4 | lo);
                i += 2;
            } else {
                pr->msg[pr->msg_len++] = (uint8_t)s[i];
            }
        }
    }
    if (e->details_bin.len != 0) {
        ptc_b64_decoder_t d;
        uint8_t tail[2];
        if ((pr->details = malloc(PTC_B64_DECODED_MAX(e->details_bin.len))) == NULL) {
            free(pr->msg);
            return PTC_ENOMEM;
        }
        ptc_b64_decoder_init(&d);
        ssize_t n = ptc_b64_decode_update(&d, e->details_bin.base, e->details_bin.len, pr->details);
        ssize_t m = n >= 0 ? ptc_b64_decode_final(&d, tail) : -1;
        size_t count = 0;
        if (m >= 0) {
            memcpy(pr->details + n, tail, (size_t)m);
            pr->details_len = (size_t)(n + m);
        }
        /* a Status that does not parse, or has no details, adds nothing */
        if (m < 0 || ptc_rpc_status_details(pr->details, pr->details_len, count_detail, &count) != 0 || count == 0) {
            free(pr->details);
            pr->details = NULL;
            pr->details_len = 0;
        }
    }
    return 0;
}

static void prepared_dispose(prepared_t *pr)
{
    free(pr->msg);
    free(pr->details);
}

static void write_error(jw_t *w, const ptc_connect_error_t *e, const prepared_t *pr)
{
    const char *code = ptc_connect_code_name(e->status);
    JW_LIT(w, "{\"code\":\"");
    jw_raw(w, code, strlen(code));
    JW_LIT(w, "\"");
    if (e->message.len != 0) {
        JW_LIT(w, ",\"message\":");
        if (pr->msg != NULL)
            jw_string(w, pr->msg, pr->msg_len);
        else
            jw_iov_string(w, e->message);
    }
    if (pr->details != NULL) {
        details_ctx_t d = {w, 0};
        if (ptc_rpc_status_details(pr->details, pr->details_len, write_detail, &d) == 0 && d.n != 0)
            JW_LIT(w, "]");
    }
    JW_LIT(w, "}");
}

static void write_metadata(jw_t *w, const ptc_header_t *md, size_t n)
{
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = ptc_iov_eq_ci(md[j].name, md[i].name);
        if (seen)
            continue;
        if (first)
            JW_LIT(w, "\"metadata\":{");
        else
            JW_LIT(w, ",");
        first = false;
        jw_iov_string(w, md[i].name);
        JW_LIT(w, ":[");
        for (size_t j = i; j < n; j++) {
            if (!ptc_iov_eq_ci(md[j].name, md[i].name))
                continue;
            if (j != i)
                JW_LIT(w, ",");
            jw_iov_string(w, md[j].value);
        }
        JW_LIT(w, "]");
    }
    if (!first)
        JW_LIT(w, "}");
}

/* Runs write twice (count, then fill) and returns the malloc'ed text. */
static char *render(const ptc_connect_error_t *e, const ptc_header_t *md, size_t n, bool end_stream, size_t *len)
{
    prepared_t pr = {0};
    char *out = NULL;

    if (e != NULL && prepare(e, &pr) != 0)
        return NULL;
    for (int pass = 0; pass < 2; pass++) {
        jw_t w = {out, 0};
        if (!end_stream) {
            write_error(&w, e, &pr);
        } else {
            bool err = e != NULL && e->status != PTC_GRPC_OK;
            JW_LIT(&w, "{");
            if (err) {
                JW_LIT(&w, "\"error\":");
                write_error(&w, e, &pr);
            }
            if (n != 0 && err)
                JW_LIT(&w, ",");
            write_metadata(&w, md, n);
            JW_LIT(&w, "}");
        }
        if (pass == 0 && (out = malloc(w.len != 0 ? w.len : 1)) == NULL)
            break;
        *len = w.len;
    }
    if (e != NULL)
        prepared_dispose(&pr);
    return out;
}

char *ptc_connect_error_json(const ptc_connect_error_t *e, size_t *len)
{
    return render(e, NULL, 0, false, len);
}

char *ptc_connect_end_stream_json(const ptc_connect_error_t *e, const ptc_header_t *metadata, size_t n, size_t *len)
{
    return render(e, metadata, n, true, len);
}
