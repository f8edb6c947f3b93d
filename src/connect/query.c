/*
 * The query of a Connect unary GET (connectrpc.com/docs/protocol, Unary-Get-Request): form-encoded
 * parameters in any order, unknown ones ignored; the message percent-encoded text or, with base64=1,
 * RFC 4648 §5 URL-safe base64 (the standard alphabet is accepted too, padding optional).
 */
#include "portico/codec.h"
#include "portico/connect.h"

#include "connect_internal.h"

/* Form-decodes s into dst (room for s.len bytes). Returns the length or -1. */
static long form_decode(ptc_iovec_t s, uint8_t *dst)
{
    return ptc_form_decode(s, (char *)dst, s.len);
}

/* Decodes base64 (either alphabet, padding optional but only at the end) into dst. Returns the length or -1. */
static ssize_t b64_decode(const uint8_t *s, size_t len, uint8_t *dst)
{
    size_t pad = 0, o = 0;
    while (len > 0 && s[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (len % 4 == 1 || (pad != 0 && (len + pad) % 4 != 0))
        return -1;
    uint32_t acc = 0;
    unsigned n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = ptc_b64_char_value(s[i], PTC_B64_STD | PTC_B64_URL);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        if (++n == 4) {
            dst[o++] = (uint8_t)(acc >> 16);
            dst[o++] = (uint8_t)(acc >> 8);
            dst[o++] = (uint8_t)acc;
            acc = 0;
            n = 0;
        }
    }
    if (n == 2) {
        dst[o++] = (uint8_t)(acc >> 4);
    } else if (n == 3) {
        dst[o++] = (uint8_t)(acc >> 10);
        dst[o++] = (uint8_t)(acc >> 2);
    }
    return (ssize_t)o;
}

static bool utf8_valid(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = ptc__utf8_seq_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

typedef enum { P_NONE, P_CONNECT, P_ENCODING, P_MESSAGE, P_BASE64, P_COMPRESSION } param_t;

/* Which Connect parameter a (still encoded) key names. Keys are short: a key that decodes to more is none of ours. */
static param_t param_of(ptc_iovec_t key)
{
    static const struct {
        ptc_iovec_t name;
        param_t p;
    } names[] = {{PTC_STRLIT("connect"), P_CONNECT},
                 {PTC_STRLIT("encoding"), P_ENCODING},
                 {PTC_STRLIT("message"), P_MESSAGE},
                 {PTC_STRLIT("base64"), P_BASE64},
                 {PTC_STRLIT("compression"), P_COMPRESSION}};
    uint8_t buf[16];
    if (key.len > 3 * sizeof(buf))
        return P_NONE;
    uint8_t tmp[3 * sizeof(buf)];
    long n = form_decode(key, tmp);
    if (n < 0 || (size_t)n > sizeof(buf))
        return P_NONE;
    memcpy(buf, tmp, (size_t)n);
    for (size_t i = 0; i < PTC_ARRAY_SIZE(names); i++)
        if (ptc_iov_eq(ptc_iov((const char *)buf, (size_t)n), names[i].name))
            return names[i].p;
    return P_NONE;
}

/* Calls fn for each key=value pair of the query; stops at the first non-zero return. */
static int each_param(ptc_iovec_t query, int (*fn)(void *ctx, param_t p, ptc_iovec_t value), void *ctx)
{
    while (query.len > 0) {
        const char *amp = memchr(query.base, '&', query.len);
        size_t n = amp != NULL ? (size_t)(amp - query.base) : query.len;
        ptc_iovec_t pair = ptc_iov(query.base, n);
        const char *eq = memchr(pair.base, '=', pair.len);
        ptc_iovec_t key = eq != NULL ? ptc_iov(pair.base, (size_t)(eq - pair.base)) : pair;
        ptc_iovec_t value = eq != NULL ? ptc_iov(eq + 1, pair.len - key.len - 1) : ptc_iov("", 0);
        param_t p = pair.len != 0 ? param_of(key) : P_NONE;
        int rv;
        if (p != P_NONE && (rv = fn(ctx, p, value)) != 0)
            return rv;
        if (amp == NULL)
            break;
        query = ptc_iov(amp + 1, query.len - n - 1);
    }
    return 0;
}

static int is_get_cb(void *ctx, param_t p, ptc_iovec_t value)
{
    (void)ctx;
    (void)value;
    return p == P_CONNECT || p == P_ENCODING || p == P_MESSAGE;
}

bool ptc_connect_query_is_get(ptc_iovec_t query)
{
    return each_param(query, is_get_cb, NULL) != 0;
}

typedef struct {
    uint8_t *p;
    ptc_iovec_t raw[P_COMPRESSION + 1]; /* still encoded */
    bool seen[P_COMPRESSION + 1];
    const char **why;
} parse_t;

static int parse_cb(void *ctx, param_t p, ptc_iovec_t value)
{
    static const char *const twice[] = {NULL,
                                        "the 'connect' parameter is given twice",
                                        "the 'encoding' parameter is given twice",
                                        "the 'message' parameter is given twice",
                                        "the 'base64' parameter is given twice",
                                        "the 'compression' parameter is given twice"};
    parse_t *ps = ctx;
    if (ps->seen[p]) {
        *ps->why = twice[p];
        return -1;
    }
    ps->seen[p] = true;
    ps->raw[p] = value;
    return 0;
}

/* Decodes one parameter into the scratch space. */
static int decode_param(parse_t *ps, param_t p, ptc_iovec_t *out)
{
    long n = form_decode(ps->raw[p], ps->p);
    if (n < 0) {
        *ps->why = "bad percent-encoding in the query";
        return PTC_EINVAL;
    }
    *out = ptc_iov((const char *)ps->p, (size_t)n);
    ps->p += n;
    return 0;
}

int ptc_connect_get_parse(ptc_iovec_t query, uint8_t *scratch, size_t cap, ptc_connect_get_t *out, const char **why)
{
    parse_t ps = {.p = scratch, .why = why};
    ptc_iovec_t connect = {"", 0}, base64 = {"", 0}, msg;

    memset(out, 0, sizeof(*out));
    out->encoding = out->compression = out->message = ptc_iov("", 0);
    if (cap < PTC_CONNECT_GET_SCRATCH(query.len)) {
        *why = "internal: scratch space too small";
        return PTC_EINVAL;
    }
    if (each_param(query, parse_cb, &ps) != 0)
        return PTC_EINVAL;
    if ((ps.seen[P_CONNECT] && decode_param(&ps, P_CONNECT, &connect) != 0) ||
        (ps.seen[P_ENCODING] && decode_param(&ps, P_ENCODING, &out->encoding) != 0) ||
        (ps.seen[P_COMPRESSION] && decode_param(&ps, P_COMPRESSION, &out->compression) != 0) ||
        (ps.seen[P_BASE64] && decode_param(&ps, P_BASE64, &base64) != 0) ||
        (ps.seen[P_MESSAGE] && decode_param(&ps, P_MESSAGE, &msg) != 0))
        return PTC_EINVAL;
    out->has_connect = ps.seen[P_CONNECT];
    if (out->has_connect && !ptc_iov_eq(connect, PTC_STRLIT("v1"))) {
        *why = "unsupported Connect protocol version in the 'connect' parameter (want v1)";
        return PTC_EINVAL;
    }
    if (!ps.seen[P_ENCODING] || out->encoding.len == 0) {
        *why = "the 'encoding' parameter is missing (want encoding=proto or encoding=json)";
        return PTC_EINVAL;
    }
    if (out->encoding.len > 32 || !ptc_codec_is_token(out->encoding)) {
        *why = "the 'encoding' parameter is not a codec name (letters, digits, '-', '.', '_'; at most 32)";
        return PTC_EINVAL;
    }
    if (!ps.seen[P_MESSAGE]) {
        *why = "the 'message' parameter is missing";
        return PTC_EINVAL;
    }
    out->base64 = ptc_iov_eq(base64, PTC_STRLIT("1")); /* other values are ignored (the protocol says so) */
    bool compressed = out->compression.len != 0 && !ptc_iov_eq_ci(out->compression, PTC_STRLIT("identity"));
    if (!out->base64) {
        if (compressed && msg.len != 0) {
            *why = "a compressed message must be base64-encoded (base64=1)";
            return PTC_EINVAL;
        }
        if (!utf8_valid((const uint8_t *)msg.base, msg.len)) {
            *why = "the message is not UTF-8 text: binary messages need base64=1";
            return PTC_EINVAL;
        }
        out->message = msg;
        return 0;
    }
    ssize_t n = b64_decode((const uint8_t *)msg.base, msg.len, ps.p);
    if (n < 0) {
        *why = "the message is not valid base64 (base64=1)";
        return PTC_EINVAL;
    }
    out->message = ptc_iov((const char *)ps.p, (size_t)n);
    return 0;
}
