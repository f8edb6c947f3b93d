#include <stdarg.h>
#include <stdio.h>

#include "portico/common.h"

const char *ptc_strerror(int err)
{
    switch (err) {
    case PTC_OK:
        return "success";
#define XX(code, s)                                                                                                                \
    case PTC_##code:                                                                                                               \
        return s;
        PTC_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

ptc_iovec_t ptc_iov_trim(ptc_iovec_t s)
{
    while (s.len > 0 && (s.base[0] == ' ' || s.base[0] == '\t')) {
        s.base++;
        s.len--;
    }
    while (s.len > 0 && (s.base[s.len - 1] == ' ' || s.base[s.len - 1] == '\t'))
        s.len--;
    return s;
}

bool ptc_iov_list_contains_ci(ptc_iovec_t list, ptc_iovec_t token)
{
    while (list.len > 0) {
        const char *comma = memchr(list.base, ',', list.len);
        size_t n = comma != NULL ? (size_t)(comma - list.base) : list.len;
        if (ptc_iov_eq_ci(ptc_iov_trim(ptc_iov(list.base, n)), token))
            return true;
        if (comma == NULL)
            break;
        list = ptc_iov(comma + 1, list.len - n - 1);
    }
    return false;
}

/* True when the parameters after an element's ';' hold q=0 (or 0.0…). */
static bool q_zero(ptc_iovec_t params)
{
    while (params.len > 0) {
        const char *semi = memchr(params.base, ';', params.len);
        size_t n = semi != NULL ? (size_t)(semi - params.base) : params.len;
        ptc_iovec_t p = ptc_iov_trim(ptc_iov(params.base, n));
        if (p.len >= 3 && ptc_tolower(p.base[0]) == 'q' && p.base[1] == '=' && p.base[2] == '0') {
            bool zero = true;
            for (size_t i = 3; i < p.len; i++)
                zero = zero && (p.base[i] == '.' || p.base[i] == '0');
            return zero;
        }
        if (semi == NULL)
            break;
        params = ptc_iov(semi + 1, params.len - n - 1);
    }
    return false;
}

/* How an Accept-style list treats token: 1 named with a non-zero q (any of its mentions), 0 named only with q=0,
 * -1 not named. */
static int list_q(ptc_iovec_t list, ptc_iovec_t token)
{
    int found = -1;
    while (list.len > 0) {
        const char *comma = memchr(list.base, ',', list.len);
        size_t n = comma != NULL ? (size_t)(comma - list.base) : list.len;
        ptc_iovec_t elem = ptc_iov_trim(ptc_iov(list.base, n)), name = elem, params = {"", 0};
        const char *semi = memchr(elem.base, ';', elem.len);
        if (semi != NULL) {
            name = ptc_iov_trim(ptc_iov(elem.base, (size_t)(semi - elem.base)));
            params = ptc_iov(semi + 1, elem.len - (size_t)(semi + 1 - elem.base));
        }
        if (ptc_iov_eq_ci(name, token)) {
            if (!q_zero(params))
                return 1;
            found = 0;
        }
        if (comma == NULL)
            break;
        list = ptc_iov(comma + 1, list.len - n - 1);
    }
    return found;
}

bool ptc_iov_list_accepts(ptc_iovec_t list, ptc_iovec_t token)
{
    return list_q(list, token) > 0;
}

bool ptc_accept_encoding_gzip(ptc_iovec_t list)
{
    int gzip = list_q(list, PTC_STRLIT("gzip"));
    return gzip > 0 || (gzip < 0 && list_q(list, PTC_STRLIT("*")) > 0);
}

int ptc_digits_parse(ptc_iovec_t v, size_t max_digits, uint64_t *out)
{
    uint64_t n = 0;
    if (v.len == 0 || v.len > max_digits || v.len > 19)
        return PTC_EINVAL;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return PTC_EINVAL;
        n = n * 10 + (uint64_t)(v.base[i] - '0');
    }
    *out = n;
    return 0;
}

int ptc_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long ptc_form_decode(ptc_iovec_t s, char *dst, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.base[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= s.len || (hi = ptc_hexval(s.base[i + 1])) < 0 || (lo = ptc_hexval(s.base[i + 2])) < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o == cap)
            return -2;
        dst[o++] = c;
    }
    return (long)o;
}

int ptc_errorf(int ret, char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return ret;
}

size_t ptc_utf8_decode(const unsigned char *p, const unsigned char *end, uint32_t *cp)
{
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (p >= end)
        return 0;
    size_t n = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3 : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0 || (size_t)(end - p) < n)
        return 0;
    uint32_t c = n == 1 ? p[0] : (uint32_t)(p[0] & (0x7f >> n));
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (uint32_t)(p[i] & 0x3f);
    }
    if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}
