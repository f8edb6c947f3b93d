/*
 * The gRPC-Web frame parser (src/grpcweb/frame.c): fed at once or split at any offset it reports the same
 * frames, and the complete frames re-encode to exactly the bytes they came from.
 */
#include <string.h>

#include "fuzz_util.h"
#include "portico/codec.h"

typedef struct {
    uint8_t out[1 << 16];
    size_t len;
    bool overflow;
    size_t complete; /* bytes of `out` that form complete frames */
} rec_t;

static void put(rec_t *r, const uint8_t *p, size_t n)
{
    if (r->len + n > sizeof(r->out)) {
        r->overflow = true;
        return;
    }
    memcpy(r->out + r->len, p, n);
    r->len += n;
}

static int on_event(void *ctx, ptc_frame_event_t ev, uint8_t flags, uint32_t length, const uint8_t *data, size_t len)
{
    rec_t *r = ctx;
    if (ev == PTC_FRAME_EV_HEADER) {
        uint8_t hdr[PTC_FRAME_HEADER_SIZE];
        ptc_frame_header_encode(hdr, flags, length);
        put(r, hdr, sizeof(hdr));
    } else if (ev == PTC_FRAME_EV_DATA) {
        FUZZ_CHECK(data != NULL && len != 0 && len <= length);
        put(r, data, len);
    } else {
        r->complete = r->len;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t split = fuzz_take_split(&data, &size);
    static rec_t whole, parts;
    ptc_frame_parser_t p;

    memset(&whole, 0, sizeof(whole));
    memset(&parts, 0, sizeof(parts));
    ptc_frame_parser_init(&p);
    FUZZ_CHECK(ptc_frame_parser_feed(&p, data, size, on_event, &whole) == 0);
    bool boundary = ptc_frame_parser_at_boundary(&p);
    ptc_frame_parser_init(&p);
    FUZZ_CHECK(ptc_frame_parser_feed(&p, data, split, on_event, &parts) == 0);
    FUZZ_CHECK(ptc_frame_parser_feed(&p, data + split, size - split, on_event, &parts) == 0);
    FUZZ_CHECK(ptc_frame_parser_at_boundary(&p) == boundary);
    if (whole.overflow || parts.overflow)
        return 0;
    /* the same events whatever the split; what was reported is the input itself */
    FUZZ_CHECK(whole.len == parts.len && whole.complete == parts.complete);
    FUZZ_CHECK(memcmp(whole.out, parts.out, whole.len) == 0);
    FUZZ_CHECK(whole.len <= size && memcmp(whole.out, data, whole.len) == 0);
    FUZZ_CHECK(!boundary || whole.complete == size);
    return 0;
}
