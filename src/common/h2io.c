#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "portico/bev.h"
#include "portico/h2io.h"

ssize_t ptc_h2_write(struct evbuffer *out, const uint8_t *data, size_t length)
{
    if (evbuffer_get_length(out) >= PTC_H2_OUTPUT_WOULDBLOCK)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (evbuffer_add(out, data, length) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)length;
}

int ptc_h2_feed(nghttp2_session *session, struct evbuffer *in, const bool *stop)
{
    struct evbuffer_iovec vec[8];

    while (evbuffer_get_length(in) > 0 && !*stop) {
        int n = evbuffer_peek(in, -1, NULL, vec, PTC_ARRAY_SIZE(vec));
        size_t consumed = 0;
        for (int i = 0; i < n && i < (int)PTC_ARRAY_SIZE(vec) && !*stop; i++) {
            ssize_t rv = nghttp2_session_mem_recv(session, vec[i].iov_base, vec[i].iov_len);
            if (rv < 0) {
                evbuffer_drain(in, consumed);
                return (int)rv;
            }
            consumed += (size_t)rv;
        }
        evbuffer_drain(in, consumed);
    }
    return 0;
}

int ptc_h2_send(nghttp2_session *session, struct bufferevent *bev, bool *blocked, bool *again)
{
    do {
        *again = false;
        int rv = nghttp2_session_send(session);
        if (rv != 0)
            return rv;
        if (blocked != NULL && !*blocked) {
            bool full = evbuffer_get_length(bufferevent_get_output(bev)) >= PTC_H2_OUTPUT_WOULDBLOCK;
            if (ptc_bev_write_now(bev, blocked) != 0)
                return PTC_EIO;
            if (full && !*blocked)
                *again = true; /* nghttp2 stopped at the cap and may have more */
        }
    } while (*again);
    return 0;
}
