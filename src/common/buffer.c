#include <event2/buffer.h>

#include "portico/buffer.h"

#define SMALL_PIECE 2048

void ptc_evbuffer_add_framed(struct evbuffer *out, const void *prefix, size_t plen, struct evbuffer *src, size_t length,
                             const void *suffix, size_t slen)
{
    char small[SMALL_PIECE];
    if (plen + length + slen <= sizeof(small)) {
        memcpy(small, prefix, plen);
        evbuffer_remove(src, small + plen, length);
        if (slen != 0)
            memcpy(small + plen + length, suffix, slen);
        evbuffer_add(out, small, plen + length + slen);
        return;
    }
    evbuffer_add(out, prefix, plen);
    evbuffer_remove_buffer(src, out, length);
    if (slen != 0)
        evbuffer_add(out, suffix, slen);
}
