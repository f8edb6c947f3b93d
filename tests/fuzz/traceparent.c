/*
 * W3C traceparent / tracestate (src/filter/trace.c): what parses formats (as version 00, the only one the
 * gateway speaks) to a traceparent that parses to the same ids and flags.
 */
#include <string.h>

#include "fuzz_util.h"
#include "portico/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ptc_traceparent_t t, again;
    size_t members;
    (void)ptc_tracestate_check(ptc_iov((const char *)data, size), &members);
    if (ptc_traceparent_parse(ptc_iov((const char *)data, size), &t) != 0)
        return 0;
    char out[PTC_TRACEPARENT_LEN + 1];
    size_t n = ptc_traceparent_format(&t, out);
    FUZZ_CHECK(n == PTC_TRACEPARENT_LEN);
    FUZZ_CHECK(ptc_traceparent_parse(ptc_iov(out, n), &again) == 0);
    FUZZ_CHECK(again.version == 0 && memcmp(again.trace_id, t.trace_id, 16) == 0 && memcmp(again.parent_id, t.parent_id, 8) == 0);
    FUZZ_CHECK(again.flags == t.flags);
    return 0;
}
