/*
 * A worker whose loop a unit test drives, with one downstream connection over a socketpair: the test is the
 * client on the other end. Shared by the adapter tests (tests/unit/http1/server.c, tests/unit/h2/server.c).
 * Header-only: every test source is its own executable.
 */
#ifndef PTC_TEST_WORKER_FIXTURE_H
#define PTC_TEST_WORKER_FIXTURE_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "portico/config.h"
#include "portico/listener.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

typedef struct {
    ptc_worker_t w;
    ptc_snapshot_t *snap;
    int client;     /* the test's end of the socketpair */
    char in[65536]; /* what the gateway sent (NUL-terminated for the text protocols) */
    size_t len;
    bool eof; /* the gateway shut its write side or closed */
} fix_t;

/* Starts a worker on a snapshot of `yaml` and hands it the server end of a socketpair through `start`. */
static fix_t *fix_start(const char *yaml, void (*start)(ptc_worker_t *w, struct bufferevent *bev, const char *peer, unsigned listener,
                                                        bool tls))
{
    fix_t *f = calloc(1, sizeof(*f));
    ptc_config_t cfg = {0};
    char err[512], host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, 0};
    int fd = -1, sv[2];

    assert_non_null(f);
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    if (ptc_config_load_string(&cfg, "test.yaml", yaml, strlen(yaml), err, sizeof(err)) != 0)
        fail_msg("%s", err);
    if (ptc_snapshot_new(&f->snap, &cfg, 1, NULL, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    if (ptc_listen_socket(&hp, &fd, err, sizeof(err)) != 0) /* the worker wants one; nothing connects to it */
        fail_msg("%s", err);
    assert_int_equal(ptc_worker_init(&f->w, 0, f->snap, &fd, -1), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    f->client = sv[0];
    struct bufferevent *bev = bufferevent_socket_new(f->w.base, sv[1], BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(bev);
    start(&f->w, bev, "test-peer", 1, false);
    assert_int_equal(f->w.num_conns, 1);
    return f;
}

static void fix_free(fix_t *f)
{
    if (f->client >= 0)
        close(f->client);
    ptc_worker_dispose(&f->w);
    ptc_snapshot_release(f->snap);
    free(f);
}

/* Runs the worker's loop and reads what the gateway sent, until `until` holds or `ms` pass. */
static void run(fix_t *f, bool (*until)(fix_t *f, const void *arg), const void *arg, uint64_t ms)
{
    uint64_t end = ptc_now_ms() + ms;
    while (!(until != NULL && until(f, arg)) && ptc_now_ms() < end) {
        event_base_loop(f->w.base, EVLOOP_NONBLOCK);
        ssize_t n = recv(f->client, f->in + f->len, sizeof(f->in) - 1 - f->len, 0);
        if (n > 0) {
            f->len += (size_t)n;
            f->in[f->len] = '\0';
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            f->eof = true;
        } else {
            usleep(1000);
        }
    }
}

static bool closed(fix_t *f, const void *arg)
{
    (void)arg;
    return f->eof;
}

static bool no_conns(fix_t *f, const void *arg)
{
    (void)arg;
    return f->w.num_conns == 0;
}

static void send_bytes(fix_t *f, const void *p, size_t n)
{
    assert_int_equal(send(f->client, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

#endif
