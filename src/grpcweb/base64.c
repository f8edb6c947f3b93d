/*
 * Streaming base64 for gRPC-Web text mode. The decoder accepts what real clients and proxies send:
 * one contiguous string (Google's client), concatenated padded segments (per-frame or per-flush
 * encoders, PROTOCOL-WEB.md "potential padding"), whitespace, and input split at any byte.
 */
#include "portico/codec.h"

static const char enc_table[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for alphabet characters, 64 for '=', 65 for skippable whitespace, 255 otherwise */
#define B64_PAD 64
#define B64_WS 65
#define B64_BAD 255

int ptc_b64_char_value(uint8_t c, unsigned alphabets)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if ((alphabets & PTC_B64_STD) != 0 && (c == '+' || c == '/'))
        return c == '+' ? 62 : 63;
    if ((alphabets & PTC_B64_URL) != 0 && (c == '-' || c == '_'))
        return c == '-' ? 62 : 63;
    return -1;
}

static uint8_t dec_value(uint8_t c)
{
    int v = ptc_b64_char_value(c, PTC_B64_STD);
    if (v >= 0)
        return (uint8_t)v;
    switch (c) {
    case '=':
        return B64_PAD;
    case ' ':
    case '\t':
    case '\r':
    case '\n':
        return B64_WS;
    default:
        return B64_BAD;
    }
}

void ptc_b64_decoder_init(ptc_b64_decoder_t *d)
{
    memset(d, 0, sizeof(*d));
}

/* Writes the bytes of the quantum in d->_q (d->_n alphabet chars, 2..4) and resets it. */
static size_t flush_quantum(ptc_b64_decoder_t *d, uint8_t *dst)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++)
        v = v << 6 | (i < d->_n ? d->_q[i] : 0);
    size_t out = (size_t)d->_n - 1; /* 4 chars -> 3 bytes, 3 -> 2, 2 -> 1 */
    dst[0] = (uint8_t)(v >> 16);
    if (out > 1)
        dst[1] = (uint8_t)(v >> 8);
    if (out > 2)
        dst[2] = (uint8_t)v;
    d->_n = 0;
    d->_pad = 0;
    return out;
}

ssize_t ptc_b64_decode_update(ptc_b64_decoder_t *d, const char *src, size_t len, uint8_t *dst)
{
    size_t out = 0;

    for (size_t i = 0; i < len; i++) {
        uint8_t v = dec_value((uint8_t)src[i]);
        if (v == B64_WS)
            continue;
        if (v == B64_BAD)
            return PTC_EBADB64;
        if (v == B64_PAD) {
            /* padding may only complete a quantum that already holds 2 or 3 characters */
            if (d->_n + d->_pad < 2)
                return PTC_EBADB64;
            d->_pad++;
            if (d->_n + d->_pad == 4)
                out += flush_quantum(d, dst + out);
            continue;
        }
        if (d->_pad != 0)
            return PTC_EBADB64; /* a character after '=' inside one quantum, e.g. "QQ=Q" */
        d->_q[d->_n++] = v;
        if (d->_n == 4)
            out += flush_quantum(d, dst + out);
    }
    return (ssize_t)out;
}

ssize_t ptc_b64_decode_final(ptc_b64_decoder_t *d, uint8_t dst[2])
{
    if (d->_n == 0 && d->_pad == 0)
        return 0;
    if (d->_n < 2)
        return PTC_EBADB64; /* a single character cannot encode a byte */
    return (ssize_t)flush_quantum(d, dst);
}

void ptc_b64_encoder_init(ptc_b64_encoder_t *e)
{
    memset(e, 0, sizeof(*e));
}

static void encode3(const uint8_t in[3], char *dst)
{
    uint32_t v = (uint32_t)in[0] << 16 | (uint32_t)in[1] << 8 | in[2];
    dst[0] = enc_table[v >> 18];
    dst[1] = enc_table[(v >> 12) & 63];
    dst[2] = enc_table[(v >> 6) & 63];
    dst[3] = enc_table[v & 63];
}

size_t ptc_b64_encode_update(ptc_b64_encoder_t *e, const uint8_t *src, size_t len, char *dst)
{
    char *p = dst;

    /* complete a quantum held from the previous call; leaves _n == 0 unless the input ran out */
    while (e->_n != 0 && len > 0) {
        if (e->_n == 1) {
            e->_rem[e->_n++] = *src++;
            len--;
            continue;
        }
        uint8_t q[3] = {e->_rem[0], e->_rem[1], *src++};
        len--;
        encode3(q, p);
        p += 4;
        e->_n = 0;
    }
    for (; len >= 3; src += 3, len -= 3, p += 4)
        encode3(src, p);
    for (size_t i = 0; i < len; i++)
        e->_rem[e->_n++] = src[i];
    return (size_t)(p - dst);
}

size_t ptc_b64_encode_final(ptc_b64_encoder_t *e, char dst[4])
{
    if (e->_n == 0)
        return 0;
    uint8_t q[3] = {e->_rem[0], e->_n > 1 ? e->_rem[1] : 0, 0};
    encode3(q, dst);
    dst[3] = '=';
    if (e->_n == 1)
        dst[2] = '=';
    e->_n = 0;
    return 4;
}

size_t ptc_b64url_encode(char *dst, const uint8_t *src, size_t len)
{
    ptc_b64_encoder_t e;
    ptc_b64_encoder_init(&e);
    size_t n = ptc_b64_encode_update(&e, src, len, dst);
    n += ptc_b64_encode_final(&e, dst + n);
    while (n > 0 && dst[n - 1] == '=') /* RFC 4648 §5 as JWS uses it: no padding */
        n--;
    for (size_t i = 0; i < n; i++)
        dst[i] = dst[i] == '+' ? '-' : dst[i] == '/' ? '_' : dst[i];
    return n;
}
