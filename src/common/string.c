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
