/*
 * Direct writes and reads for cleartext bufferevents: see include/portico/bev.h.
 */
#include <errno.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/event_struct.h>

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

#define READ_FIRST (4096 - 64)      /* a 4 KiB evbuffer chain (its header included): a request, a batch of frames */
#define READ_MORE (64 * 1024 - 64)  /* once a read filled what was asked: a stream is coming */
#define READ_PER_EVENT (256 * 1024) /* then the loop serves others */

/* Reads what fits in `room` bytes of `in`; the number read, 0 at EOF, -1 with errno. */
static ssize_t read_into(struct evbuffer *in, evutil_socket_t fd, size_t room)
{
    struct evbuffer_iovec v[2];
    struct iovec iov[2];
    ssize_t n;

    evbuffer_unfreeze(in, 0); /* bufferevent_socket keeps its input's end frozen for others */
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)room, v, 2);
    if (nv <= 0) {
        evbuffer_freeze(in, 0);
        errno = ENOMEM;
        return -1;
    }
    size_t left = room;
    for (int i = 0; i < nv; i++) {
        v[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
        left -= v[i].iov_len;
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
    }
    do
        n = readv(fd, iov, nv);
    while (n < 0 && errno == EINTR);
    int err = errno;
    size_t fill = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < nv; i++) {
        v[i].iov_len = v[i].iov_len < fill ? v[i].iov_len : fill;
        fill -= v[i].iov_len;
    }
    if (evbuffer_commit_space(in, v, nv) != 0 && n > 0) {
        n = -1; /* cannot happen: the extents are the ones reserved */
        err = EIO;
    }
    evbuffer_freeze(in, 0);
    errno = err;
    return n;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct bufferevent *bev = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t total = 0, want = READ_FIRST;
    short failed = 0;

    (void)what; /* EV_READ: the event has no timeout */
    while (total < READ_PER_EVENT) {
        size_t room = want, len = evbuffer_get_length(in);
        if (bev->wm_read.high != 0) {
            if (len >= bev->wm_read.high)
                break; /* the watermark's callback has suspended reading */
            room = room < bev->wm_read.high - len ? room : bev->wm_read.high - len;
        }
        ssize_t n = read_into(in, fd, room);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            /* after bytes, the next readiness reports it (epoll is level-triggered: EOF stays readable) */
            if (total == 0)
                failed = n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
            break;
        }
        total += (size_t)n;
        if ((size_t)n < room)
            break; /* the socket is drained */
        want = READ_MORE;
    }
    if (total > 0) {
        bufferevent_trigger(bev, EV_READ, 0);
    } else if (failed != 0) {
        int err = errno;
        bufferevent_disable(bev, EV_READ);
        errno = err;
        bufferevent_trigger_event(bev, BEV_EVENT_READING | failed, 0);
    }
}

int ptc_bev_read_direct(struct bufferevent *bev)
{
    bool pending = event_pending(&bev->ev_read, EV_READ, NULL) != 0;
    event_del(&bev->ev_read);
    event_assign(&bev->ev_read, bufferevent_get_base(bev), bufferevent_getfd(bev), EV_READ | EV_PERSIST | EV_FINALIZE,
                 on_readable, bev);
    return pending ? event_add(&bev->ev_read, NULL) : 0;
}

void ptc_bev_trim_input(struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    /* evbuffer_drain() frees every chain when it drains all, but does nothing to an empty buffer: one byte */
    if (evbuffer_get_length(in) == 0 && evbuffer_add(in, "", 1) == 0)
        evbuffer_drain(in, 1);
}
