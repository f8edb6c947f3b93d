/*
 * Content-Type classification and the text/binary response decision (PROTOCOL.md §1.1, §1.5).
 */
#include <stdio.h>
#include <stdlib.h>

#include "portico/codec.h"

#define GRPC_WEB_PROTO "application/grpc-web+proto"

/* The media type of a header value: up to ';', trimmed. An absent header may be {NULL, 0}: no memchr(NULL). */
static ptc_iovec_t media_type(ptc_iovec_t v)
{
    const char *semi = v.len != 0 ? memchr(v.base, ';', v.len) : NULL;
    if (semi != NULL)
        v.len = (size_t)(semi - v.base);
    return ptc_iov_trim(v);
}

bool ptc_codec_is_token(ptc_iovec_t codec)
{
    if (codec.len == 0)
        return false;
    for (size_t j = 0; j < codec.len; j++) {
        char c = codec.base[j];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

ptc_ctype_t ptc_ctype_classify(ptc_iovec_t value)
{
    static const ptc_iovec_t app = PTC_STRLIT("application/"), grpc = PTC_STRLIT("grpc"), web = PTC_STRLIT("-web"),
                             text = PTC_STRLIT("-text"), connect = PTC_STRLIT("connect+");
    ptc_ctype_t ct = {PTC_CT_OTHER, {"", 0}};

    /* what nearly every call sends (gRPC-Web from a browser, gRPC from an upstream), exactly: no parsing */
    if (value.len == sizeof(GRPC_WEB_PROTO) - 1 && memcmp(value.base, GRPC_WEB_PROTO, value.len) == 0)
        return (ptc_ctype_t){PTC_CT_GRPC_WEB, ptc_iov(value.base + value.len - 5, 5)};
    if (value.len == 16 && memcmp(value.base, "application/grpc", 16) == 0)
        return (ptc_ctype_t){PTC_CT_GRPC, {"", 0}};
    ptc_iovec_t mt = media_type(value);

    /* every type known here is application/something: that part is compared once */
    if (!ptc_iov_startswith_ci(mt, app))
        return ct;
    ptc_iovec_t sub = ptc_iov(mt.base + app.len, mt.len - app.len);
    if (ptc_iov_eq_ci(sub, PTC_STRLIT("proto")) || ptc_iov_eq_ci(sub, PTC_STRLIT("json"))) {
        ct.kind = PTC_CT_CONNECT;
        ct.codec = sub;
        return ct;
    }
    if (ptc_iov_startswith_ci(sub, connect)) {
        ptc_iovec_t codec = ptc_iov(sub.base + connect.len, sub.len - connect.len);
        if (ptc_codec_is_token(codec)) {
            ct.kind = PTC_CT_CONNECT_STREAM;
            ct.codec = codec;
        }
        return ct;
    }
    /* grpc, then -web, then -text: each a prefix of the next */
    if (!ptc_iov_startswith_ci(sub, grpc))
        return ct;
    ptc_ctype_kind_t kind = PTC_CT_GRPC;
    ptc_iovec_t rest = ptc_iov(sub.base + grpc.len, sub.len - grpc.len);
    if (ptc_iov_startswith_ci(rest, web)) {
        kind = PTC_CT_GRPC_WEB;
        rest = ptc_iov(rest.base + web.len, rest.len - web.len);
        if (ptc_iov_startswith_ci(rest, text)) {
            kind = PTC_CT_GRPC_WEB_TEXT;
            rest = ptc_iov(rest.base + text.len, rest.len - text.len);
        }
    }
    if (rest.len == 0) {
        ct.kind = kind;
        return ct;
    }
    /* "+codec"; anything else ("application/grpc-webfoo", "application/grpc-web-tex") is not gRPC at all */
    if (rest.base[0] != '+' || !ptc_codec_is_token(ptc_iov(rest.base + 1, rest.len - 1)))
        return ct;
    ct.kind = kind;
    ct.codec = ptc_iov(rest.base + 1, rest.len - 1);
    return ct;
}

bool ptc_ctype_codec_is_proto(ptc_iovec_t codec)
{
    return codec.len == 0 || ptc_iov_eq_ci(codec, PTC_STRLIT("proto"));
}

/* q-value of one Accept element's parameters, in thousandths (RFC 9110 §12.4.2); 1000 when absent. */
static int parse_q(ptc_iovec_t params)
{
    while (params.len > 0) {
        const char *semi = memchr(params.base, ';', params.len);
        size_t plen = semi != NULL ? (size_t)(semi - params.base) : params.len;
        ptc_iovec_t p = ptc_iov_trim(ptc_iov(params.base, plen));
        if (p.len >= 2 && ptc_tolower(p.base[0]) == 'q' && p.base[1] == '=') {
            int q = 0, digits = 0;
            size_t i = 2;
            if (i < p.len && (p.base[i] == '0' || p.base[i] == '1'))
                q = (p.base[i++] - '0') * 1000;
            else
                return 0;
            if (i < p.len && p.base[i] == '.') {
                for (i++; i < p.len && digits < 3 && p.base[i] >= '0' && p.base[i] <= '9'; i++, digits++)
                    q += (p.base[i] - '0') * (digits == 0 ? 100 : digits == 1 ? 10 : 1);
            }
            return q > 1000 ? 1000 : q;
        }
        if (semi == NULL)
            break;
        params = ptc_iov(semi + 1, params.len - plen - 1);
    }
    return 1000;
}

bool ptc_accept_wants_text(ptc_iovec_t accept, bool request_is_text)
{
    int q_text = -1, q_bin = -1; /* -1: not named */

    while (accept.len > 0) {
        const char *comma = memchr(accept.base, ',', accept.len);
        size_t elen = comma != NULL ? (size_t)(comma - accept.base) : accept.len;
        ptc_iovec_t elem = ptc_iov(accept.base, elen);
        const char *semi = memchr(elem.base, ';', elem.len);
        ptc_iovec_t params = semi != NULL ? ptc_iov(semi + 1, elem.len - (size_t)(semi - elem.base) - 1) : ptc_iov("", 0);
        ptc_ctype_t ct = ptc_ctype_classify(elem);
        int q = parse_q(params);
        if (q == 0)
            q = -2; /* "not acceptable" ranks below "not named" */
        if (ct.kind == PTC_CT_GRPC_WEB_TEXT && (q_text == -1 || q > q_text))
            q_text = q;
        else if (ct.kind == PTC_CT_GRPC_WEB && (q_bin == -1 || q > q_bin))
            q_bin = q;
        if (comma == NULL)
            break;
        accept = ptc_iov(comma + 1, accept.len - elen - 1);
    }
    if (q_text == q_bin)
        return request_is_text;
    return q_text > q_bin;
}

size_t ptc_response_ctype(ptc_ctype_t ct, ptc_iovec_t accept, char *buf, size_t cap, bool *text)
{
    int n;
    *text = false;
    if (ct.kind == PTC_CT_CONNECT || ct.kind == PTC_CT_CONNECT_STREAM) {
        n = snprintf(buf, cap, "application/%s%.*s", ct.kind == PTC_CT_CONNECT_STREAM ? "connect+" : "",
                     (int)PTC_MIN(ct.codec.len, (size_t)32), ct.codec.base);
    } else if (ct.kind == PTC_CT_GRPC) {
        n = snprintf(buf, cap, "application/grpc%s%.*s", ct.codec.len != 0 ? "+" : "", (int)PTC_MIN(ct.codec.len, (size_t)32), ct.codec.base);
    } else {
        *text = ptc_accept_wants_text(accept, ct.kind == PTC_CT_GRPC_WEB_TEXT);
        if (ptc_ctype_codec_is_proto(ct.codec)) { /* nearly every call: no formatting */
            ptc_iovec_t v = *text ? PTC_STRLIT("application/grpc-web-text+proto") : PTC_STRLIT(GRPC_WEB_PROTO);
            size_t len = PTC_MIN(v.len, cap - 1);
            memcpy(buf, v.base, len);
            buf[len] = '\0';
            return len;
        } else
            n = snprintf(buf, cap, "application/grpc-web%s+%.*s", *text ? "-text" : "", (int)PTC_MIN(ct.codec.len, (size_t)32), ct.codec.base);
    }
    return n > 0 ? PTC_MIN((size_t)n, cap - 1) : 0;
}
