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
