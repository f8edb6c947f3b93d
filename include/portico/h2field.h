/*
 * HTTP/2 field checks (RFC 9113 §8.2.1) as nghttp2 1.52 makes them with its HTTP messaging on, for the server adapter,
 * which makes them itself (src/h2/server.c: field_check): the same answers as nghttp2_check_header_name,
 * nghttp2_check_header_value_rfc9113, nghttp2_check_path, nghttp2_check_method and
 * nghttp2_check_authority, eight bytes at a time where it can
 * (tests/unit/h2/field.c compares them).
 */
#ifndef PORTICO_H2FIELD_H
#define PORTICO_H2FIELD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Character classes (nghttp2's tables): a field name's (RFC 9110 tchar, lower case only), a method's (tchar), an
 * authority's (nghttp2_check_authority). */
enum { PTC_H2_NAME = 1, PTC_H2_METHOD = 2, PTC_H2_AUTHORITY = 4 };
static const uint8_t ptc_h2_chars[256] = {
    ['!'] = 7, ['#'] = 3, ['$' ... '\''] = 7, ['('] = 4, [')'] = 4, ['*' ... '+'] = 7, [','] = 4, ['-' ... '.'] = 7,
    ['0' ... '9'] = 7, [':'] = 4, [';'] = 4, ['='] = 4, ['@'] = 4, ['A' ... 'Z'] = 6, ['['] = 4, [']'] = 4,
    ['^'] = 3, ['_'] = 7, ['`'] = 3, ['a' ... 'z'] = 7, ['|'] = 3, ['~'] = 7,
};

/* Every byte of the class (an empty string too). */
static inline bool ptc_h2_chars_ok(const uint8_t *s, size_t len, uint8_t cls)
{
    uint8_t bad = 0;
    for (size_t i = 0; i < len; i++)
        bad |= (uint8_t)~ptc_h2_chars[s[i]];
    return (bad & cls) == 0;
}

#define PTC_BYTES(b) (0x0101010101010101ULL * (uint64_t)(b))

static inline uint64_t ptc_h2_load8(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Eight bytes of a-z and '-' only (most field names): the top bit of each byte of the result says so. */
static inline uint64_t ptc_h2_word_lower(uint64_t w)
{
    uint64_t lo7 = w & PTC_BYTES(0x7f), dash = lo7 ^ PTC_BYTES('-');
    uint64_t az = (lo7 + PTC_BYTES(0x80 - 'a')) & ~(lo7 + PTC_BYTES(0x80 - 'z' - 1));
    return (az | ~((dash + PTC_BYTES(0x7f)) | dash)) & ~w & PTC_BYTES(0x80);
}

/* A field name: eight bytes at a time when they are a-z and '-' (the last word overlapping the one before), else by the table. */
static inline bool ptc_h2_name_ok(const uint8_t *name, size_t len)
{
    if (len >= 8) {
        uint64_t all = ptc_h2_word_lower(ptc_h2_load8(name + len - 8));
        for (size_t i = 0; i + 8 < len; i += 8)
            all &= ptc_h2_word_lower(ptc_h2_load8(name + i));
        if (all == PTC_BYTES(0x80))
            return true;
    }
    return len != 0 && ptc_h2_chars_ok(name, len, PTC_H2_NAME);
}

/* The top bit of each byte below `lo` (at most 0x80) or DEL, and maybe of bytes above one: none if there is none (a
 * borrow starts only at such a byte). */
static inline uint64_t ptc_h2_word_low(uint64_t w, uint8_t lo)
{
    uint64_t del = w ^ PTC_BYTES(0x7f);
    return (((w - PTC_BYTES(lo)) & ~w) | ((del - PTC_BYTES(1)) & ~del)) & PTC_BYTES(0x80);
}

/* No byte below `lo` (at most 0x80) nor DEL: eight at a time, the last word overlapping the one before. */
static inline bool ptc_h2_visible(const uint8_t *v, size_t len, uint8_t lo)
{
    if (len < 8) {
        uint8_t bad = 0;
        for (size_t i = 0; i < len; i++)
            bad |= (uint8_t)((v[i] < lo) | (v[i] == 0x7f));
        return bad == 0;
    }
    uint64_t bad = ptc_h2_word_low(ptc_h2_load8(v + len - 8), lo);
    for (size_t i = 0; i + 8 < len; i += 8)
        bad |= ptc_h2_word_low(ptc_h2_load8(v + i), lo);
    return bad == 0;
}

/* A field value (nghttp2_check_header_value_rfc9113): no control but HTAB, no DEL, no SP or HTAB at either end. */
static inline bool ptc_h2_value_ok(const uint8_t *v, size_t len)
{
    if (len == 0)
        return true;
    if (v[0] == ' ' || v[0] == '\t' || v[len - 1] == ' ' || v[len - 1] == '\t')
        return false;
    if (ptc_h2_visible(v, len, 0x20))
        return true;
    for (size_t i = 0; i < len; i++) /* a control: HTAB is the one allowed */
        if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return false;
    return true;
}

/* Whether `s` (of `len` bytes) is the literal `lit` (of n bytes, a constant: the compiler makes it two or four loads). */
static inline bool ptc_h2_is(const uint8_t *s, size_t len, const char *lit, size_t n)
{
    uint32_t a, b, c, d;
    uint64_t e, f, g, h;
    if (len != n)
        return false;
    if (n < 4)
        return memcmp(s, lit, n) == 0;
    if (n <= 8) {
        memcpy(&a, s, 4), memcpy(&b, lit, 4), memcpy(&c, s + n - 4, 4), memcpy(&d, lit + n - 4, 4);
        return a == b && c == d;
    }
    if (n <= 16) {
        memcpy(&e, s, 8), memcpy(&f, lit, 8), memcpy(&g, s + n - 8, 8), memcpy(&h, lit + n - 8, 8);
        return e == f && g == h;
    }
    return memcmp(s, lit, n) == 0;
}
#define PTC_H2_IS(s, len, lit) ptc_h2_is(s, len, lit, sizeof(lit) - 1)

/* A connection-specific field (RFC 9113 §8.2.2), which HTTP/2 forbids: connection, keep-alive, proxy-connection,
 * transfer-encoding, upgrade (te is checked apart: "trailers" is allowed). */
static inline bool ptc_h2_connection_specific(const uint8_t *name, size_t len)
{
    switch (len) {
    case 7:
        return PTC_H2_IS(name, len, "upgrade");
    case 10:
        return PTC_H2_IS(name, len, "connection") || PTC_H2_IS(name, len, "keep-alive");
    case 16:
        return PTC_H2_IS(name, len, "proxy-connection");
    case 17:
        return PTC_H2_IS(name, len, "transfer-encoding");
    default:
        return false;
    }
}

/* A content-length value: ASCII digits only, not empty, no overflow; -1 otherwise. */
static inline int64_t ptc_h2_content_length(const uint8_t *s, size_t len)
{
    int64_t n = 0;
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || n > (INT64_MAX - (s[i] - '0')) / 10)
            return -1;
        n = n * 10 + (s[i] - '0');
    }
    return n;
}

#endif
