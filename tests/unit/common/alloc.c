/* Unit tests for src/common/alloc.c: the thread-cached allocator behind libevent, nghttp2 and calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <malloc.h>

#include <pthread.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "portico/alloc.h"

/* Built with AddressSanitizer the allocator caches nothing (so use-after-free stays visible). */
static bool caching(void)
{
    ptc_alloc_thread_release();
    void *p = ptc_malloc(40);
    ptc_free(p);
    bool yes = ptc_alloc_thread_cached() != 0;
    ptc_alloc_thread_release();
    return yes;
}

static void test_sizes_are_usable(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 256, 257, 1000, 1024, 1025,
                                   2047, 2048, 2049, 4095, 4096, 4097, 10000, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = ptc_malloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xa5, sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            assert_int_equal(p[j], 0xa5);
        ptc_free(p);
    }
    ptc_free(NULL);
    ptc_alloc_thread_release();
    assert_int_equal(ptc_alloc_thread_cached(), 0);
}

static void test_reuse_within_class(void **state)
{
    (void)state;
    if (!caching())
        skip();
    void *a = ptc_malloc(100); /* class 104 (a glibc chunk of 112) */
    assert_true(malloc_usable_size(a) >= 104);
    ptc_free(a);
    assert_int_equal(ptc_alloc_thread_cached(), 104);
    void *b = ptc_malloc(97);
    assert_ptr_equal(a, b); /* same class: the cached block comes back */
    assert_int_equal(ptc_alloc_thread_cached(), 0);
    void *c = ptc_malloc(105); /* next class: a different block */
    assert_ptr_not_equal(b, c);
    ptc_free(b);
    ptc_free(c);
    assert_int_equal(ptc_alloc_thread_cached(), 104 + 120);
    void *big = ptc_malloc(5000); /* larger than any class: never cached */
    ptc_free(big);
    assert_int_equal(ptc_alloc_thread_cached(), 104 + 120);
    /* a block from plain malloc joins the largest class it can serve */
    void *m = malloc(300);
    size_t usable = malloc_usable_size(m);
    ptc_free(m);
    assert_int_equal(ptc_alloc_thread_cached(), 104 + 120 + usable);
    ptc_alloc_thread_release();
    assert_int_equal(ptc_alloc_thread_cached(), 0);
}

static void test_cache_is_capped(void **state)
{
    (void)state;
    enum { N = 3000 };
    void **v = calloc(N, sizeof(*v));
    assert_non_null(v);
    static const size_t sizes[] = {8, 100, 1000, 4000};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (size_t i = 0; i < N; i++)
            assert_non_null(v[i] = ptc_malloc(sizes[k]));
        for (size_t i = 0; i < N; i++)
            ptc_free(v[i]);
        size_t cached = ptc_alloc_thread_cached();
        /* at most 1024 blocks of a class, and 2 MiB in all */
        size_t cap = 1024 * (((sizes[k] <= 24 ? 24 : sizes[k]) + 7) / 16 * 16 + 8);
        if (cap > 2 * 1024 * 1024)
            cap = 2 * 1024 * 1024;
        if (cached > cap)
            print_error("size %zu: %zu bytes cached, cap %zu\n", sizes[k], cached, cap);
        assert_true(cached <= cap);
        ptc_alloc_thread_release();
    }
    free(v);
}

static void test_calloc_zeroes(void **state)
{
    (void)state;
    unsigned char *p = ptc_malloc(200);
    assert_non_null(p);
    memset(p, 0xff, 200);
    ptc_free(p);
    unsigned char *q = ptc_calloc(25, 8); /* the same class: possibly the block just freed */
    assert_non_null(q);
    for (size_t i = 0; i < 200; i++)
        assert_int_equal(q[i], 0);
    ptc_free(q);
    assert_null(ptc_calloc(SIZE_MAX / 2, 3)); /* n * size overflows */
    ptc_alloc_thread_release();
}

static void fill(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7 + 3);
}

static void check(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 7 + 3))
            fail_msg("byte %zu changed", i);
}

static void test_realloc_keeps_content(void **state)
{
    (void)state;
    /* grow through every class into a large block and beyond, then shrink back: the content stays */
    size_t sizes[] = {10, 32, 33, 500, 4096, 4097, 70000, 300000, 6000, 3000, 17, 1};
    unsigned char *p = ptc_realloc(NULL, 1);
    assert_non_null(p);
    fill(p, 1);
    size_t have = 1;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *q = ptc_realloc(p, sizes[i]);
        assert_non_null(q);
        check(q, have < sizes[i] ? have : sizes[i]);
        fill(q, sizes[i]);
        have = sizes[i];
        p = q;
    }
    /* a block that already has the room stays where it is (without the cache: realloc decides) */
    unsigned char *r = ptc_malloc(30);
    size_t room = malloc_usable_size(r);
    assert_true(room >= 30);
    unsigned char *r2 = ptc_realloc(r, room);
    assert_non_null(r2);
    if (caching())
        assert_ptr_equal(r2, r);
    assert_null(ptc_realloc(r2, 0)); /* frees */
    ptc_free(p);
    ptc_alloc_thread_release();
}

static void *free_in_thread(void *arg)
{
    void **blocks = arg;
    for (size_t i = 0; i < 16; i++)
        ptc_free(blocks[i]);
    size_t *cached = malloc(sizeof(*cached));
    *cached = ptc_alloc_thread_cached();
    ptc_alloc_thread_release();
    return cached;
}

static void test_free_in_another_thread(void **state)
{
    (void)state;
    void *blocks[16];
    for (size_t i = 0; i < 16; i++) {
        assert_non_null(blocks[i] = ptc_malloc(64));
        memset(blocks[i], 1, 64);
    }
    pthread_t t;
    void *ret;
    assert_int_equal(pthread_create(&t, NULL, free_in_thread, blocks), 0);
    assert_int_equal(pthread_join(t, &ret), 0);
    size_t cached = *(size_t *)ret;
    free(ret);
    assert_int_equal(cached, caching() ? 16 * 72 : 0); /* they joined the freeing thread's cache (class 72) */
    assert_int_equal(ptc_alloc_thread_cached(), 0);
}

/* libevent's own allocations (the evbuffer, its chains) go through ptc_malloc once installed */
static void test_libevent_uses_it(void **state)
{
    (void)state;
    bool cache = caching();
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    char chunk[700];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(evbuffer_add(b, chunk, sizeof(chunk)), 0);
    assert_int_equal(evbuffer_get_length(b), 700000);
    assert_int_equal(evbuffer_drain(b, 699999), 0);
    evbuffer_free(b);
    if (cache)
        assert_true(ptc_alloc_thread_cached() >= 1024); /* evbuffer chains came back to this cache */
    ptc_alloc_thread_release();
}

static int send_cb_sink(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s, (void)data, (void)flags;
    *(size_t *)ud += len;
    return (int)len;
}

static void test_nghttp2_uses_it(void **state)
{
    (void)state;
    nghttp2_session_callbacks *cbs;
    nghttp2_session *session;
    size_t sent = 0;
    bool cache = caching();
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, (nghttp2_send_callback)(void *)send_cb_sink);
    ptc_alloc_thread_release();
    assert_int_equal(nghttp2_session_client_new3(&session, cbs, &sent, NULL, ptc_alloc_nghttp2_mem()), 0);
    nghttp2_session_callbacks_del(cbs);
#define NV(n, v) {(uint8_t *)(uintptr_t)(n), (uint8_t *)(uintptr_t)(v), sizeof(n) - 1, sizeof(v) - 1, 0}
    nghttp2_nv nv[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/a.B/C"), NV(":authority", "x"),
                       NV("content-type", "application/grpc")};
#undef NV
    for (int i = 0; i < 50; i++)
        assert_true(nghttp2_submit_request(session, NULL, nv, 5, NULL, NULL) > 0);
    assert_int_equal(nghttp2_session_send(session), 0);
    assert_true(sent > 50 * 9);
    nghttp2_session_del(session);
    if (cache)
        assert_true(ptc_alloc_thread_cached() > 0); /* the session's streams and frames came back to this cache */
    ptc_alloc_thread_release();
}

int main(void)
{
    ptc_alloc_install_libevent(); /* before any libevent allocation */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_are_usable),    cmocka_unit_test(test_reuse_within_class),
        cmocka_unit_test(test_cache_is_capped),     cmocka_unit_test(test_calloc_zeroes),
        cmocka_unit_test(test_realloc_keeps_content),             cmocka_unit_test(test_free_in_another_thread),
        cmocka_unit_test(test_libevent_uses_it),    cmocka_unit_test(test_nghttp2_uses_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
