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

int ptc_iov_eq_ci(ptc_iovec_t a, ptc_iovec_t b)
{
    if (a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++)
        if (ptc_tolower(a.base[i]) != ptc_tolower(b.base[i]))
            return 0;
    return 1;
}

int ptc_iov_startswith_ci(ptc_iovec_t s, ptc_iovec_t prefix)
{
    return s.len >= prefix.len && ptc_iov_eq_ci(ptc_iov(s.base, prefix.len), prefix);
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
