/*
 * grpc-message percent-encoding and gRPC status tables.
 */
#include "portico/codec.h"

size_t ptc_grpc_message_encode(char *dst, size_t cap, const char *src, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)src[i];
        if (c >= 0x20 && c <= 0x7e && c != '%') {
            if (o + 1 > cap)
                break;
            dst[o++] = (char)c;
        } else {
            if (o + 3 > cap)
                break;
            dst[o++] = '%';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    return o;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

size_t ptc_grpc_message_decode(char *dst, size_t cap, ptc_iovec_t src)
{
    size_t o = 0;
    for (size_t i = 0; i < src.len && o < cap; i++) {
        int hi, lo;
        if (src.base[i] == '%' && i + 2 < src.len && (hi = hexval(src.base[i + 1])) >= 0 && (lo = hexval(src.base[i + 2])) >= 0) {
            dst[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = src.base[i];
        }
    }
    return o;
}

const char *ptc_grpc_status_name(int status)
{
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    if (status < 0 || (size_t)status >= PTC_ARRAY_SIZE(names))
        return "UNKNOWN_STATUS";
    return names[status];
}

int ptc_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return PTC_GRPC_INTERNAL;
    case 401:
        return PTC_GRPC_UNAUTHENTICATED;
    case 403:
        return PTC_GRPC_PERMISSION_DENIED;
    case 404:
        return PTC_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return PTC_GRPC_UNAVAILABLE;
    default:
        return PTC_GRPC_UNKNOWN;
    }
}

int ptc_grpc_status_from_h2_error(uint32_t h2_error)
{
    switch (h2_error) {
    case 0x7: /* REFUSED_STREAM: the server did not process the stream */
        return PTC_GRPC_UNAVAILABLE;
    case 0x8: /* CANCEL */
        return PTC_GRPC_CANCELLED;
    case 0xb: /* ENHANCE_YOUR_CALM */
        return PTC_GRPC_RESOURCE_EXHAUSTED;
    case 0xc: /* INADEQUATE_SECURITY */
        return PTC_GRPC_PERMISSION_DENIED;
    default: /* NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, ... */
        return PTC_GRPC_INTERNAL;
    }
}

int ptc_status_parse(ptc_iovec_t value, int *out)
{
    uint64_t v;
    if (ptc_digits_parse(value, 9, &v) != 0)
        return PTC_EINVAL;
    *out = (int)v;
    return 0;
}
