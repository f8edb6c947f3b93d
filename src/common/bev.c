/*
 * Direct writes for cleartext bufferevents: see include/portico/bev.h.
 */
#include <errno.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "portico/bev.h"

int ptc_bev_write_now(struct bufferevent *bev, bool *blocked)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    size_t len;

    if (*blocked)
        return 0;
    while ((len = evbuffer_get_length(out)) != 0) {
        evbuffer_unfreeze(out, 1); /* bufferevent_socket keeps its output's start frozen for others */
        int n = evbuffer_write(out, bufferevent_getfd(bev));
        int err = errno;
        evbuffer_freeze(out, 1);
        if (n < 0 && err == EINTR)
            continue;
        if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK))
            break;
        if (n <= 0) {
            errno = n < 0 ? err : EIO;
            return -1;
        }
        if ((size_t)n < len)
            break; /* a short write: the socket buffer is full (no need to hear EAGAIN) */
    }
    if (evbuffer_get_length(out) != 0) {
        *blocked = true;
        bufferevent_enable(bev, EV_WRITE);
    }
    return 0;
}

void ptc_bev_write_drained(struct bufferevent *bev, bool *blocked)
{
    if (*blocked && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        *blocked = false;
        bufferevent_disable(bev, EV_WRITE);
    }
}
