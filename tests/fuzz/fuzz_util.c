#include <string.h>

#include "fuzz_util.h"

size_t fuzz_take_split(const uint8_t **data, size_t *size)
{
    if (*size < 2)
        return 0;
    size_t v = (size_t)(*data)[0] << 8 | (*data)[1];
    *data += 2;
    *size -= 2;
    return *size == 0 ? 0 : v % (*size + 1);
}

char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

static const nghttp2_nv REQ[] = {
#define NV(n, v) {(uint8_t *)(uintptr_t)(n), (uint8_t *)(uintptr_t)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}
    NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/pkg.Svc/M"), NV(":authority", "upstream"),
    NV("content-type", "application/grpc"), NV("te", "trailers"),
#undef NV
};

void fuzz_request_headers(ptc_upstream_stream_t *s, const nghttp2_nv **nva, size_t *n)
{
    (void)s;
    *nva = REQ;
    *n = PTC_ARRAY_SIZE(REQ);
}
