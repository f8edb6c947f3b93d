/* grpc-timeout (src/grpcweb/timeout.c): whatever parses formats to a value that parses again, never longer. */
#include "fuzz_util.h"
#include "portico/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t ns, again;
    if (ptc_grpc_timeout_parse(ptc_iov((const char *)data, size), &ns) != 0)
        return 0;
    char out[PTC_GRPC_TIMEOUT_STRLEN];
    size_t n = ptc_grpc_timeout_format(ns, out);
    FUZZ_CHECK(n > 1 && n <= 9);
    FUZZ_CHECK(ptc_grpc_timeout_parse(ptc_iov(out, n), &again) == 0);
    FUZZ_CHECK(again >= ns); /* formatting rounds up to the next unit, never shortens a deadline */
    return 0;
}
