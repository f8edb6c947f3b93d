/*
 * Content-type classification and the response content type (src/grpcweb/content_type.c): the first
 * half of the input is a Content-Type, the rest an Accept. The decision is always a gRPC-Web or gRPC
 * type (a Connect one, never text, for Connect requests) that fits the buffer.
 */
#include <string.h>

#include "fuzz_util.h"
#include "portico/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t split = fuzz_take_split(&data, &size);
    ptc_ctype_t ct = ptc_ctype_classify(ptc_iov((const char *)data, split));
    char buf[64];
    bool text = false;
    if (ct.kind == PTC_CT_OTHER)
        return 0;
    size_t n = ptc_response_ctype(ct, ptc_iov((const char *)data + split, size - split), buf, sizeof(buf), &text);
    FUZZ_CHECK(n > 0 && n < sizeof(buf));
    bool connect = ct.kind == PTC_CT_CONNECT || ct.kind == PTC_CT_CONNECT_STREAM;
    FUZZ_CHECK(strncmp(buf, "application/grpc", 16) == 0 || (connect && strncmp(buf, "application/", 12) == 0 && !text));
    FUZZ_CHECK(!text || strncmp(buf, "application/grpc-web-text", 25) == 0);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(buf[i] > 0x20 && buf[i] < 0x7f && buf[i] != ';' ? true : buf[i] == ';' || buf[i] == ' ');
    return 0;
}
