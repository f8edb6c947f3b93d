/*
 * The pure parts of the grpc-websockets protocol: see include/portico/ws.h.
 */
#include <openssl/evp.h>

#include "portico/codec.h"
#include "portico/ws.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int ptc_ws_accept_key(ptc_iovec_t key, char out[PTC_WS_ACCEPT_LEN + 1])
{
    key = ptc_iov_trim(key);
    /* 16 bytes in base64: 22 characters and "==" */
    if (key.len != 24 || key.base[22] != '=' || key.base[23] != '=')
        return PTC_EINVAL;
    for (size_t i = 0; i < 22; i++) {
        char c = key.base[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return PTC_EINVAL;
    }
    unsigned char md[EVP_MAX_MD_SIZE], in[24 + sizeof(WS_GUID)];
    unsigned mdlen = 0;
    memcpy(in, key.base, 24);
    memcpy(in + 24, WS_GUID, sizeof(WS_GUID) - 1);
    if (EVP_Digest(in, 24 + sizeof(WS_GUID) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return PTC_ENOMEM;
    ptc_b64_encoder_t e;
    ptc_b64_encoder_init(&e);
    size_t n = ptc_b64_encode_update(&e, md, mdlen, out);
    n += ptc_b64_encode_final(&e, out + n);
    out[n] = '\0';
    return n == PTC_WS_ACCEPT_LEN ? 0 : PTC_EINVAL;
}

static bool tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int ptc_ws_header_block_parse(char *buf, size_t len, ptc_header_t *out, size_t cap, size_t *n, const char **why)
{
    size_t pos = 0;
    *n = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && buf[end] != '\n')
            end++;
        char *line = buf + pos;
        size_t ll = end - pos;
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        pos = end < len ? end + 1 : end;
        if (ll == 0)
            continue;
        char *colon = memchr(line, ':', ll);
        if (colon == NULL || colon == line) {
            *why = colon == NULL ? "a header line without a colon" : "a header line without a name";
            return PTC_EINVAL;
        }
        size_t nl = (size_t)(colon - line);
        for (size_t i = 0; i < nl; i++) {
            if (!tchar(line[i])) {
                *why = "a header name that is not an HTTP token";
                return PTC_EINVAL;
            }
            line[i] = ptc_tolower(line[i]);
        }
        ptc_iovec_t v = ptc_iov_trim(ptc_iov(colon + 1, ll - nl - 1));
        for (size_t i = 0; i < v.len; i++) {
            unsigned char c = (unsigned char)v.base[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                *why = "a control character in a header value";
                return PTC_EINVAL;
            }
        }
        if (*n == cap) {
            *why = "too many header fields";
            return PTC_ETOOBIG;
        }
        out[(*n)++] = (ptc_header_t){ptc_iov(line, nl), v};
    }
    return 0;
}
