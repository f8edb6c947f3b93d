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
    /* 8-4-4-4-12 hex digits: groups of 4, 2, 2, 2 and 6 bytes */
    static const size_t groups[] = {4, 2, 2, 2, 6};
    uint8_t b[16];
    char *p = out;

    ptc_random_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10xx (RFC 9562) */
    for (size_t g = 0, off = 0; g < PTC_ARRAY_SIZE(groups); off += groups[g++]) {
        if (g != 0)
            *p++ = '-';
        p += ptc_hex_encode(p, b + off, groups[g]);
    }
    *p = '\0';
    return PTC_REQUEST_ID_UUID_LEN;
}
