/*
 * Request ids: validation of received ones and UUIDv4 generation (RFC 9562 §5.4).
 */
#include "portico/request_id.h"
#include "portico/trace.h"

static bool is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
           c == ':' || c == '/' || c == '+' || c == '=';
}

bool ptc_request_id_valid(ptc_iovec_t v, size_t max_len)
{
    if (v.len == 0 || v.len > max_len)
        return false;
    for (size_t i = 0; i < v.len; i++)
        if (!is_id_char(v.base[i]))
            return false;
    return true;
}

size_t ptc_request_id_generate(char out[PTC_REQUEST_ID_UUID_LEN + 1])
{
    uint8_t b[16];
    char hex[32];

    ptc_random_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10xx (RFC 9562) */
    ptc_hex_encode(hex, b, sizeof(b));
    /* 8-4-4-4-12 hex digits: copies of fixed sizes, which the compiler makes a few moves */
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[36] = '\0';
    return PTC_REQUEST_ID_UUID_LEN;
}
