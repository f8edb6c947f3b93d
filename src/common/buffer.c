#include <event2/buffer.h>

#include "portico/buffer.h"

#define SMALL_PIECE 2048

int ptc_evbuffer_add_framed(struct evbuffer *out, const void *prefix, size_t plen, struct evbuffer *src, size_t length,
                            const void *suffix, size_t slen)
{
    char small[SMALL_PIECE];
    if (plen + length + slen <= sizeof(small)) {
        memcpy(small, prefix, plen);
        if (evbuffer_remove(src, small + plen, length) != (int)length)
            return -1;
        if (slen != 0)
            memcpy(small + plen + length, suffix, slen);
        return evbuffer_add(out, small, plen + length + slen);
    }
    if (evbuffer_add(out, prefix, plen) != 0)
        return -1;
    /* libevent 2.1's evbuffer_remove_buffer() copies the part of a chain it cannot move whole without
     * checking that copy's allocation: it then reports the bytes moved while they are gone. The length of
     * out tells. */
    size_t want = evbuffer_get_length(out) + length;
    if (evbuffer_remove_buffer(src, out, length) != (int)length || evbuffer_get_length(out) != want)
        return -1;
    return slen != 0 ? evbuffer_add(out, suffix, slen) : 0;
}
