/*
 * Unit tests for src/net/worker.c and src/control/snapshot.c: snapshot reference counting, the request-head
 * block cache across limit changes, and the reconciliation a worker does when a new snapshot arrives
 * (listeners kept / opened / closed by socket, pools kept / updated / retired by name). A real worker on a
 * real event base, driven from the test's thread: updates are queued with ptc_worker_update() and applied
 * by running the loop once.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "portico/config.h"
#include "portico/listener.h"
#include "portico/snapshot.h"
#include "portico/upstream.h"
#include "portico/worker.h"

/* A snapshot of YAML text (over the default configuration). */
static ptc_snapshot_t *snap_of(const char *yaml, uint64_t version)
{
    ptc_config_t cfg = {0};
    ptc_snapshot_t *s = NULL;
    char err[512];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    if (ptc_config_load_string(&cfg, "test.yaml", yaml, strlen(yaml), err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(ptc_snapshot_new(&s, &cfg, version, NULL, err, sizeof(err)), 0);
    return s;
}

static int listen_fd(uint16_t port)
{
    char host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, port};
    char err[256];
    int fd = -1;
    if (ptc_listen_socket(&hp, &fd, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return fd;
}

static uint16_t port_of(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static void test_snapshot_refcount(void **state)
{
    (void)state;
    size_t before = ptc_snapshot_live_count();
    ptc_snapshot_t *s = snap_of("workers: 1\n", 7);
    assert_int_equal(s->version, 7);
    assert_int_equal(ptc_snapshot_live_count(), before + 1);
    /* a connection and a call pin it; the control thread lets go first */
    ptc_snapshot_t *conn = ptc_snapshot_ref(s), *call = ptc_snapshot_ref(s);
    ptc_snapshot_release(s);
    assert_int_equal(ptc_snapshot_live_count(), before + 1);
    ptc_snapshot_release(conn);
    assert_int_equal(ptc_snapshot_live_count(), before + 1);
    assert_int_equal(call->config.limits.max_header_size, 16 * 1024); /* still readable while pinned */
    ptc_snapshot_release(call);
    assert_int_equal(ptc_snapshot_live_count(), before);

    /* ptc_snapshot_set swaps references */
    ptc_snapshot_t *a = snap_of("workers: 1\n", 1), *b = snap_of("workers: 1\n", 2), *slot = NULL;
    ptc_snapshot_set(&slot, a);
    ptc_snapshot_release(a);
    assert_int_equal(ptc_snapshot_live_count(), before + 2);
    ptc_snapshot_set(&slot, b); /* a's last reference goes */
    assert_int_equal(ptc_snapshot_live_count(), before + 1);
    ptc_snapshot_set(&slot, b); /* the same: nothing changes */
    ptc_snapshot_release(b);
    assert_int_equal(ptc_snapshot_live_count(), before + 1);
    ptc_snapshot_set(&slot, NULL);
    assert_int_equal(ptc_snapshot_live_count(), before);
}

static void test_snapshot_with_broken_certificate_is_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/ptc-snap-XXXXXX", cert[64], yaml[512];
    ptc_config_t cfg = {0};
    ptc_snapshot_t *s = (ptc_snapshot_t *)1;
    char err[512];

    assert_non_null(mkdtemp(dir));
    snprintf(cert, sizeof(cert), "%s/c.pem", dir);
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    /* the loader checks the files; a snapshot reads them again (they may have changed since) */
    FILE *fp = fopen(cert, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(ptc_config_set_listener_cert(&cfg, cert, cert), 0);
    size_t before = ptc_snapshot_live_count();
    assert_int_not_equal(ptc_snapshot_new(&s, &cfg, 1, NULL, err, sizeof(err)), 0);
    assert_ptr_equal(s, (ptc_snapshot_t *)1);
    assert_non_null(strstr(err, "listeners[0].tls.cert"));
    assert_int_equal(ptc_snapshot_live_count(), before);
    assert_int_equal(cfg.num_listeners, 1); /* left as it was */
    ptc_config_dispose(&cfg);
    unlink(cert);
    rmdir(dir);
    (void)yaml;
}

/* A worker on snap with one listening socket per listener of snap, not started. */
static void worker_start(ptc_worker_t *w, ptc_snapshot_t *snap, int *fds)
{
    assert_int_equal(ptc_worker_init(w, 0, snap, fds, -1), 0);
}

/* Queues an update and runs the worker's loop until it has applied it. */
static void worker_apply(ptc_worker_t *w, ptc_snapshot_t *snap, const int *fds)
{
    assert_int_equal(ptc_worker_update(w, snap, fds), 0);
    for (int i = 0; i < 100 && atomic_load(&w->applied_version) != snap->version; i++)
        event_base_loop(w->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(atomic_load(&w->applied_version), snap->version);
    event_base_loop(w->base, EVLOOP_NONBLOCK); /* retired pools are freed at the end of the pass */
}

static size_t count_retired(ptc_worker_t *w)
{
    size_t n = 0;
    ptc_upstream_t *up;
    TAILQ_FOREACH(up, &w->retired_pools, retired_link)
    n++;
    return n;
}

static void test_head_blocks_follow_the_limits(void **state)
{
    (void)state;
    ptc_snapshot_t *small = snap_of("limits: {max_header_size: 8KiB, max_headers: 10}\n", 1);
    ptc_snapshot_t *big = snap_of("limits: {max_header_size: 64KiB, max_headers: 300}\n", 2);
    int fd = listen_fd(0);
    ptc_worker_t w;
    ptc_head_block_t b1, b2, b3;

    worker_start(&w, small, &fd);
    assert_int_equal(ptc_worker_head_block(&w, small, &b1), 0);
    assert_int_equal(b1.size, small->head_block_size);
    ptc_worker_head_block_release(&w, &b1);
    assert_int_equal(w.num_block_cache, 1);

    int fds[] = {fd};
    worker_apply(&w, big, fds);
    /* the reload raised the limits: the cached small block is gone, and never handed out again */
    assert_int_equal(w.num_block_cache, 0);
    assert_int_equal(ptc_worker_head_block(&w, big, &b2), 0);
    assert_int_equal(b2.size, big->head_block_size);
    assert_true(big->head_block_size > small->head_block_size);
    memset(b2.head, 'x', 64 * 1024); /* the whole head fits (ASan would catch an overrun) */
    memset(b2.views, 0, (300 + 64) * sizeof(ptc_header_t));
    /* a request that began under the old snapshot still gets an old-sized block, which is not cached */
    assert_int_equal(ptc_worker_head_block(&w, small, &b3), 0);
    assert_int_equal(b3.size, small->head_block_size);
    ptc_worker_head_block_release(&w, &b3);
    assert_int_equal(w.num_block_cache, 0);
    ptc_worker_head_block_release(&w, &b2);
    assert_int_equal(w.num_block_cache, 1);
    assert_null(b2.mem);

    ptc_worker_dispose(&w);
    ptc_snapshot_release(small);
    ptc_snapshot_release(big);
}

static void test_listeners_reconcile_by_socket(void **state)
{
    (void)state;
    int a = listen_fd(0), b = listen_fd(0), c = listen_fd(0);
    char y1[256], y2[256], y3[256];
    snprintf(y1, sizeof(y1), "listeners: ['127.0.0.1:%u', '127.0.0.1:%u']\n", port_of(a), port_of(b));
    snprintf(y2, sizeof(y2), "listeners: ['127.0.0.1:%u', '127.0.0.1:%u']\n", port_of(b), port_of(c));
    snprintf(y3, sizeof(y3), "listeners: ['127.0.0.1:%u']\n", port_of(c));
    ptc_snapshot_t *s1 = snap_of(y1, 1), *s2 = snap_of(y2, 2), *s3 = snap_of(y3, 3);
    ptc_worker_t w;

    int f1[] = {a, b};
    worker_start(&w, s1, f1);
    assert_int_equal(w.num_listeners, 2);
    unsigned id_b = w.listeners[1].id;

    /* b stays (and moves to index 0), a goes, c comes */
    int f2[] = {b, c};
    worker_apply(&w, s2, f2);
    assert_int_equal(w.num_listeners, 2);
    assert_int_equal(w.listeners[0].fd, b);
    assert_int_equal(w.listeners[0].index, 0);
    assert_int_equal(w.listeners[0].id, id_b); /* the same listener, not a new one */
    assert_int_equal(w.listeners[1].fd, c);
    assert_int_equal(w.listeners[1].index, 1);
    assert_false(fd_open(a));
    assert_true(fd_open(b));
    assert_true(fd_open(c));

    int f3[] = {c};
    worker_apply(&w, s3, f3);
    assert_int_equal(w.num_listeners, 1);
    assert_int_equal(w.listeners[0].fd, c);
    assert_false(fd_open(b));
    assert_ptr_equal(w.snap, s3);

    ptc_worker_dispose(&w);
    assert_false(fd_open(c));
    ptc_snapshot_release(s1);
    ptc_snapshot_release(s2);
    ptc_snapshot_release(s3);
}

static void test_removed_listener_serves_its_queue(void **state)
{
    (void)state;
    int a = listen_fd(0), b = listen_fd(0);
    char y1[256], y2[256];
    snprintf(y1, sizeof(y1), "listeners: ['127.0.0.1:%u', '127.0.0.1:%u']\n", port_of(a), port_of(b));
    snprintf(y2, sizeof(y2), "listeners: ['127.0.0.1:%u']\n", port_of(a));
    ptc_snapshot_t *s1 = snap_of(y1, 1), *s2 = snap_of(y2, 2);
    ptc_worker_t w;
    int f1[] = {a, b};
    worker_start(&w, s1, f1);

    /* a client whose connection waits in b's accept queue (the loop has not run) */
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port_of(b)), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int client = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(client >= 0);
    assert_int_equal(connect(client, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(w.num_conns, 0);

    int f2[] = {a};
    worker_apply(&w, s2, f2);
    /* it was accepted (not reset), and is a connection of the worker */
    assert_int_equal(w.num_conns, 1);
    assert_false(fd_open(b));
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(client, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    char buf[256] = {0};
    ssize_t n = 0;
    for (int i = 0; i < 200 && n <= 0; i++) {
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        n = recv(client, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        if (n <= 0)
            usleep(1000);
    }
    assert_true(n > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    close(client);
    ptc_worker_dispose(&w);
    ptc_snapshot_release(s1);
    ptc_snapshot_release(s2);
}

static void test_pools_reconcile_by_name(void **state)
{
    (void)state;
    int fd = listen_fd(0);
    char l[64];
    snprintf(l, sizeof(l), "listeners: ['127.0.0.1:%u']\n", port_of(fd));
    char y1[1024], y2[1024], y3[1024];
    snprintf(y1, sizeof(y1),
             "%supstreams:\n"
             "  - {name: keep, endpoints: ['127.0.0.1:1']}\n"
             "  - {name: eps, endpoints: ['127.0.0.1:2', '127.0.0.1:3']}\n"
             "  - {name: auth, endpoints: ['127.0.0.1:4']}\n"
             "  - {name: gone, endpoints: ['127.0.0.1:5']}\n"
             "routes: [{prefix: /, upstream: keep}]\n",
             l);
    /* keep: unchanged; eps: endpoints change; auth: the authority changes (a new pool); gone: removed; new: added */
    snprintf(y2, sizeof(y2),
             "%supstreams:\n"
             "  - {name: new, endpoints: ['127.0.0.1:6']}\n"
             "  - {name: auth, endpoints: ['127.0.0.1:4'], authority: other.example}\n"
             "  - {name: eps, endpoints: ['127.0.0.1:3', '127.0.0.1:7']}\n"
             "  - {name: keep, endpoints: ['127.0.0.1:1']}\n"
             "routes: [{prefix: /, upstream: keep}]\n",
             l);
    snprintf(y3, sizeof(y3), "%supstreams: [{name: keep, endpoints: ['127.0.0.1:1']}]\n", l);
    ptc_snapshot_t *s1 = snap_of(y1, 1), *s2 = snap_of(y2, 2), *s3 = snap_of(y3, 3);
    ptc_worker_t w;
    int f[] = {fd};
    worker_start(&w, s1, f);
    ptc_upstream_t *keep = w.pools[0], *eps = w.pools[1], *auth = w.pools[2];
    assert_ptr_equal(keep->snap, s1);
    /* an old endpoint's backoff is kept by endpoint, not by position */
    eps->endpoints[1].backoff_ms = 777;

    worker_apply(&w, s2, f);
    assert_ptr_equal(w.pools[3], keep);
    assert_ptr_equal(keep->snap, s2); /* moved to the new snapshot */
    assert_ptr_equal(keep->client.config, &s2->config.upstreams[3]);
    assert_ptr_equal(w.pools[2], eps);
    assert_int_equal(eps->client.config->num_endpoints, 2);
    assert_int_equal(eps->endpoints[0].backoff_ms, 777); /* 127.0.0.1:3 moved from index 1 to 0 */
    assert_int_equal(eps->endpoints[1].backoff_ms, 0);
    assert_ptr_not_equal(w.pools[1], auth);
    assert_string_equal(w.pools[1]->client.config->authority, "other.example");
    assert_string_equal(w.pools[0]->client.config->name, "new");
    /* auth's and gone's old pools had nothing in flight: freed at once */
    assert_int_equal(count_retired(&w), 0);
    /* a request that began under s1 finds its upstream by name in the current pools */
    assert_ptr_equal(ptc_worker_pool(&w, s1, 0), keep);
    assert_ptr_equal(ptc_worker_pool(&w, s1, 1), eps);
    assert_null(ptc_worker_pool(&w, s1, 3)); /* gone */

    worker_apply(&w, s3, f);
    assert_ptr_equal(w.pools[0], keep);
    assert_int_equal(count_retired(&w), 0);
    ptc_worker_dispose(&w);
    ptc_snapshot_release(s1);
    ptc_snapshot_release(s2);
    ptc_snapshot_release(s3);
}

static void test_snapshots_are_released_by_the_worker(void **state)
{
    (void)state;
    size_t before = ptc_snapshot_live_count();
    int fd = listen_fd(0);
    char l[64];
    snprintf(l, sizeof(l), "listeners: ['127.0.0.1:%u']\n", port_of(fd));
    ptc_snapshot_t *s1 = snap_of(l, 1), *s2 = snap_of(l, 2);
    ptc_worker_t w;
    int f[] = {fd};
    worker_start(&w, s1, f);
    ptc_snapshot_release(s1); /* the worker and its pool hold it now */
    assert_int_equal(ptc_snapshot_live_count(), before + 2);
    worker_apply(&w, s2, f);
    ptc_snapshot_release(s2);
    assert_int_equal(ptc_snapshot_live_count(), before + 1); /* s1 freed: nothing pinned it any more */
    ptc_worker_dispose(&w);
    assert_int_equal(ptc_snapshot_live_count(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_refcount),
        cmocka_unit_test(test_snapshot_with_broken_certificate_is_refused),
        cmocka_unit_test(test_head_blocks_follow_the_limits),
        cmocka_unit_test(test_listeners_reconcile_by_socket),
        cmocka_unit_test(test_removed_listener_serves_its_queue),
        cmocka_unit_test(test_pools_reconcile_by_name),
        cmocka_unit_test(test_snapshots_are_released_by_the_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
