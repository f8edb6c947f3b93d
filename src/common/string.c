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
