/* Unit tests for src/config/config.c and src/config/yaml.c: defaults, the YAML loader, its error messages,
 * the value parsers, validation and routing. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/config.h"

/*
 * Allocation-failure injection (nghttp2's failmalloc, curl's torture mode): malloc and friends are replaced
 * process-wide, so the failures reach strdup, libyaml and our own code alike. AddressSanitizer brings its
 * own allocator, so there the test is skipped; the leak check there is LeakSanitizer's.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PTC_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define PTC_TEST_ASAN 1
#endif
#ifndef PTC_TEST_ASAN
#define PTC_TEST_FAILMALLOC 1
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

static long failmalloc_countdown = -1; /* the allocation at which this reaches 0 fails; -1 = never */
static long failmalloc_live;           /* blocks allocated and not freed */
static void *failmalloc_caller;        /* return address of the allocation that failed */

#define failmalloc_fail() failmalloc_fail_at(__builtin_return_address(0))
static int failmalloc_fail_at(void *caller)
{
    if (failmalloc_countdown < 0 || failmalloc_countdown-- != 0)
        return 0;
    failmalloc_caller = caller;
    return 1;
}

/* libyaml 0.2.5 leaks on some of its own allocation failures (yaml_parser_load_mapping/sequence free the
 * tag but not the pair/item stack when pushing the node fails); those are not ours to check. */
static int failmalloc_failed_in_libyaml(void)
{
    Dl_info info;
    return dladdr(failmalloc_caller, &info) != 0 && info.dli_fname != NULL && strstr(info.dli_fname, "libyaml") != NULL;
}

void *malloc(size_t size)
{
    void *p = failmalloc_fail() ? NULL : __libc_malloc(size);
    if (p != NULL)
        failmalloc_live++;
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *p = failmalloc_fail() ? NULL : __libc_calloc(n, size);
    if (p != NULL)
        failmalloc_live++;
    return p;
}

void *realloc(void *p, size_t size)
{
    if (p == NULL)
        return malloc(size);
    if (size == 0) {
        free(p);
        return NULL;
    }
    return failmalloc_fail() ? NULL : __libc_realloc(p, size);
}

void free(void *p)
{
    if (p != NULL)
        failmalloc_live--;
    __libc_free(p);
}
#endif

static const char FULL_EXAMPLE[] = "workers: 2                 # 0 or absent = number of cores\n"
                                   "log_level: warn            # debug|info|warn|error\n"
                                   "health_path: /health\n"
                                   "listeners:\n"
                                   "  - address: 127.0.0.1:8080\n"
                                   "  - \"[::1]:8081\"\n"
                                   "upstreams:\n"
                                   "  - name: echo\n"
                                   "    endpoints: [127.0.0.1:50051, \"[::1]:50052\", backend.local:50051]\n"
                                   "    authority: echo.internal\n"
                                   "    connect_timeout: 1.5s\n"
                                   "    max_connections: 8\n"
                                   "    max_pending: 16\n"
                                   "    backoff: {initial: 250ms, max: 1m}\n"
                                   "  - name: other\n"
                                   "    endpoints:\n"
                                   "      - other.local:9000\n"
                                   "routes:\n"
                                   "  - prefix: /portico.test.Echo/\n"
                                   "    upstream: echo\n"
                                   "  - path: /other.Service/Method\n"
                                   "    upstream: other\n"
                                   "  - prefix: /\n"
                                   "    upstream: echo\n"
                                   "limits:\n"
                                   "  max_message_size: 8MiB\n"
                                   "  max_header_size: 32KiB\n"
                                   "  max_headers: 50\n"
                                   "  call_buffer_size: 1MiB\n"
                                   "  stream_window_size: 65535\n"
                                   "  max_connections: 500\n"
                                   "timeouts:\n"
                                   "  max_grpc_timeout: 5m\n"
                                   "  default_grpc_timeout: 30\n"
                                   "  idle: 2m\n"
                                   "  header_read: 5s\n"
                                   "  drain: 0\n";

static int load(ptc_config_t *cfg, const char *yaml, char *err, size_t errlen)
{
    return ptc_config_load_string(cfg, "t.yaml", yaml, strlen(yaml), err, errlen);
}

static int route(const ptc_config_t *cfg, const char *path)
{
    return ptc_config_route(cfg, ptc_iov(path, strlen(path)));
}

static void assert_is_default(const ptc_config_t *cfg)
{
    assert_int_equal(cfg->num_listeners, 1);
    assert_string_equal(cfg->listeners[0].addr.host, "127.0.0.1");
    assert_int_equal(cfg->listeners[0].addr.port, 8080);
    assert_int_equal(cfg->num_upstreams, 1);
    const ptc_upstream_config_t *up = &cfg->upstreams[0];
    assert_string_equal(up->name, "default");
    assert_int_equal(up->num_endpoints, 1);
    assert_string_equal(up->endpoints[0].host, "127.0.0.1");
    assert_int_equal(up->endpoints[0].port, 50051);
    assert_null(up->authority);
    assert_int_equal(up->connect_timeout_ms, 3000);
    assert_int_equal(up->max_connections, 4);
    assert_int_equal(up->max_pending, 1024);
    assert_int_equal(up->backoff_initial_ms, 100);
    assert_int_equal(up->backoff_max_ms, 5000);
    assert_int_equal(cfg->num_routes, 1);
    assert_int_equal(cfg->routes[0].match, PTC_ROUTE_PREFIX);
    assert_string_equal(cfg->routes[0].path, "/");
    assert_int_equal(cfg->routes[0].upstream_index, 0);
    assert_int_equal(cfg->limits.max_message_size, 4 * 1024 * 1024);
    assert_int_equal(cfg->limits.max_header_size, 16 * 1024);
    assert_int_equal(cfg->limits.max_headers, 100);
    assert_int_equal(cfg->limits.call_buffer_size, 256 * 1024);
    assert_int_equal(cfg->limits.stream_window_size, 256 * 1024);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->timeouts.max_grpc_timeout_ms, 0);
    assert_int_equal(cfg->timeouts.default_grpc_timeout_ms, 0);
    assert_int_equal(cfg->timeouts.idle_ms, 60000);
    assert_int_equal(cfg->timeouts.header_read_ms, 10000);
    assert_int_equal(cfg->timeouts.drain_ms, 10000);
    assert_string_equal(cfg->health_path, "/healthz");
    assert_int_equal(cfg->workers, 0);
    assert_int_equal(cfg->log_level, PTC_LOG_INFO);
}

static void test_defaults(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_string_equal(cfg.source, "<default>");
    assert_is_default(&cfg);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    assert_int_equal(route(&cfg, "/any.Service/Method"), 0);
    ptc_config_dispose(&cfg);
}

static void test_empty_file(void **state)
{
    (void)state;
    static const char *const empties[] = {"", "\n", "# only a comment\n", "~\n", "---\n", "---\n...\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        ptc_config_t cfg;
        char err[256];
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        assert_int_equal(load(&cfg, empties[i], err, sizeof(err)), 0);
        assert_string_equal(err, "");
        assert_string_equal(cfg.source, "t.yaml");
        assert_is_default(&cfg);
        ptc_config_dispose(&cfg);
    }
}

static void test_full_example(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    int ret = load(&cfg, FULL_EXAMPLE, err, sizeof(err));
    if (ret != 0)
        print_message("%s\n", err);
    assert_int_equal(ret, 0);

    assert_int_equal(cfg.workers, 2);
    assert_int_equal(cfg.log_level, PTC_LOG_WARN);
    assert_string_equal(cfg.health_path, "/health");

    assert_int_equal(cfg.num_listeners, 2);
    assert_string_equal(cfg.listeners[0].addr.host, "127.0.0.1");
    assert_int_equal(cfg.listeners[0].addr.port, 8080);
    assert_string_equal(cfg.listeners[1].addr.host, "::1");
    assert_int_equal(cfg.listeners[1].addr.port, 8081);

    assert_int_equal(cfg.num_upstreams, 2);
    const ptc_upstream_config_t *echo = &cfg.upstreams[0], *other = &cfg.upstreams[1];
    assert_string_equal(echo->name, "echo");
    assert_int_equal(echo->num_endpoints, 3);
    assert_string_equal(echo->endpoints[0].host, "127.0.0.1");
    assert_int_equal(echo->endpoints[0].port, 50051);
    assert_string_equal(echo->endpoints[1].host, "::1");
    assert_int_equal(echo->endpoints[1].port, 50052);
    assert_string_equal(echo->endpoints[2].host, "backend.local");
    assert_int_equal(echo->endpoints[2].port, 50051);
    assert_string_equal(echo->authority, "echo.internal");
    assert_int_equal(echo->connect_timeout_ms, 1500);
    assert_int_equal(echo->max_connections, 8);
    assert_int_equal(echo->max_pending, 16);
    assert_int_equal(echo->backoff_initial_ms, 250);
    assert_int_equal(echo->backoff_max_ms, 60000);
    assert_string_equal(other->name, "other");
    assert_int_equal(other->num_endpoints, 1);
    assert_string_equal(other->endpoints[0].host, "other.local");
    assert_int_equal(other->endpoints[0].port, 9000);
    assert_null(other->authority);
    assert_int_equal(other->connect_timeout_ms, 3000);
    assert_int_equal(other->max_connections, 4);
    assert_int_equal(other->max_pending, 1024);
    assert_int_equal(other->backoff_initial_ms, 100);
    assert_int_equal(other->backoff_max_ms, 5000);

    /* match order: exact first, then prefixes longest first */
    assert_int_equal(cfg.num_routes, 3);
    assert_int_equal(cfg.routes[0].match, PTC_ROUTE_EXACT);
    assert_string_equal(cfg.routes[0].path, "/other.Service/Method");
    assert_int_equal(cfg.routes[0].upstream_index, 1);
    assert_int_equal(cfg.routes[1].match, PTC_ROUTE_PREFIX);
    assert_string_equal(cfg.routes[1].path, "/portico.test.Echo/");
    assert_int_equal(cfg.routes[1].upstream_index, 0);
    assert_string_equal(cfg.routes[2].path, "/");
    assert_int_equal(cfg.routes[2].upstream_index, 0);

    assert_int_equal(cfg.limits.max_message_size, 8 * 1024 * 1024);
    assert_int_equal(cfg.limits.max_header_size, 32 * 1024);
    assert_int_equal(cfg.limits.max_headers, 50);
    assert_int_equal(cfg.limits.call_buffer_size, 1024 * 1024);
    assert_int_equal(cfg.limits.stream_window_size, 65535);
    assert_int_equal(cfg.limits.max_connections, 500);
    assert_int_equal(cfg.timeouts.max_grpc_timeout_ms, 300000);
    assert_int_equal(cfg.timeouts.default_grpc_timeout_ms, 30000);
    assert_int_equal(cfg.timeouts.idle_ms, 120000);
    assert_int_equal(cfg.timeouts.header_read_ms, 5000);
    assert_int_equal(cfg.timeouts.drain_ms, 0);

    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    ptc_config_dispose(&cfg);
}

/* The example from the documentation block in config.c, verbatim apart from the second listener. */
static void test_documented_example(void **state)
{
    (void)state;
    static const char yaml[] = "workers: 2\n"
                               "log_level: info\n"
                               "health_path: /healthz\n"
                               "listeners:\n"
                               "  - address: 127.0.0.1:8080\n"
                               "upstreams:\n"
                               "  - name: echo\n"
                               "    endpoints: [127.0.0.1:50051, \"[::1]:50052\", backend.local:50051]\n"
                               "    authority: echo.internal\n"
                               "    connect_timeout: 3s\n"
                               "    max_connections: 4\n"
                               "    max_pending: 1024\n"
                               "    backoff: {initial: 100ms, max: 5s}\n"
                               "routes:\n"
                               "  - prefix: /portico.test.Echo/\n"
                               "    upstream: echo\n"
                               "  - prefix: /\n"
                               "    upstream: echo\n"
                               "limits:\n"
                               "  max_message_size: 4MiB\n"
                               "  max_header_size: 16KiB\n"
                               "  max_headers: 100\n"
                               "  call_buffer_size: 256KiB\n"
                               "  stream_window_size: 256KiB\n"
                               "  max_connections: 10000\n"
                               "timeouts:\n"
                               "  max_grpc_timeout: 0\n"
                               "  default_grpc_timeout: 0\n"
                               "  idle: 60s\n"
                               "  header_read: 10s\n"
                               "  drain: 10s\n";
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), 0);
    assert_int_equal(cfg.num_upstreams, 1);
    assert_string_equal(cfg.upstreams[0].name, "echo");
    assert_int_equal(cfg.num_routes, 2);
    assert_string_equal(cfg.routes[0].path, "/portico.test.Echo/");
    assert_int_equal(cfg.limits.stream_window_size, 256 * 1024);
    assert_int_equal(cfg.timeouts.idle_ms, 60000);
    ptc_config_dispose(&cfg);
}

static void test_bare_listener_and_single_upstream(void **state)
{
    (void)state;
    static const char yaml[] = "listeners:\n"
                               "  - 0.0.0.0:9090\n"
                               "  - address: \"[::]:9091\"\n"
                               "upstreams:\n"
                               "  - name: only\n"
                               "    endpoints: [localhost:50051]\n"
                               "    authority: ~\n"
                               "limits: ~\n"
                               "timeouts:\n";
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), 0);
    assert_int_equal(cfg.num_listeners, 2);
    assert_string_equal(cfg.listeners[0].addr.host, "0.0.0.0");
    assert_int_equal(cfg.listeners[0].addr.port, 9090);
    assert_string_equal(cfg.listeners[1].addr.host, "::");
    assert_int_equal(cfg.listeners[1].addr.port, 9091);
    assert_int_equal(cfg.num_upstreams, 1);
    assert_null(cfg.upstreams[0].authority);
    /* upstreams without routes: a catch-all to the only upstream */
    assert_int_equal(cfg.num_routes, 1);
    assert_int_equal(cfg.routes[0].match, PTC_ROUTE_PREFIX);
    assert_string_equal(cfg.routes[0].path, "/");
    assert_int_equal(cfg.routes[0].upstream_index, 0);
    assert_int_equal(cfg.limits.max_headers, 100);
    ptc_config_dispose(&cfg);
}

/* A file that sets only some sections keeps the rest of the config it is loaded over. */
static void test_partial_overrides(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);

    /* listeners only: default upstream and route stay */
    assert_int_equal(load(&cfg, "listeners: [127.0.0.1:1234]\nlimits: {max_headers: 7}\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.listeners[0].addr.port, 1234);
    assert_string_equal(cfg.upstreams[0].name, "default");
    assert_int_equal(cfg.num_routes, 1);
    assert_int_equal(cfg.limits.max_headers, 7);
    assert_int_equal(cfg.limits.max_connections, 10000);

    /* routes only: they may name the existing upstream; earlier overrides persist */
    assert_int_equal(load(&cfg, "routes:\n  - path: /a.B/C\n    upstream: default\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.listeners[0].addr.port, 1234);
    assert_int_equal(cfg.limits.max_headers, 7);
    assert_int_equal(cfg.num_routes, 1);
    assert_int_equal(cfg.routes[0].match, PTC_ROUTE_EXACT);
    assert_int_equal(route(&cfg, "/a.B/C"), 0);
    assert_int_equal(route(&cfg, "/a.B/D"), -1);

    /* new upstreams without routes replace the old routes with a catch-all */
    assert_int_equal(load(&cfg, "upstreams: [{name: x, endpoints: [h:1]}]\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.num_routes, 1);
    assert_string_equal(cfg.routes[0].path, "/");
    assert_int_equal(route(&cfg, "/a.B/D"), 0);
    assert_string_equal(cfg.upstreams[0].name, "x");
    ptc_config_dispose(&cfg);
}

static void test_load_over_zeroed_config(void **state)
{
    (void)state;
    ptc_config_t cfg = {0};
    char err[256];
    assert_int_equal(load(&cfg, "workers: 3\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.limits.max_headers, 100);
    assert_string_equal(cfg.upstreams[0].name, "default");
    ptc_config_dispose(&cfg);
}

typedef struct {
    const char *yaml;
    const char *message;
} error_case_t;

static const error_case_t error_cases[] = {
    /* unknown and duplicate keys */
    {"worker: 2\n", "t.yaml:1: worker: unknown key"},
    {"workers: 1\nlimits:\n  max_mesage_size: 1\n", "t.yaml:3: limits.max_mesage_size: unknown key"},
    {"upstreams:\n  - name: a\n    endpoint: [h:1]\n", "t.yaml:3: upstreams[0].endpoint: unknown key"},
    {"routes:\n  - prefix: /\n    upstream: default\n    weight: 2\n", "t.yaml:4: routes[0].weight: unknown key"},
    {"listeners:\n  - address: h:1\n    tls: true\n", "t.yaml:3: listeners[0].tls: unknown key"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    backoff: {initial: 1s, maximum: 2s}\n",
     "t.yaml:4: upstreams[0].backoff.maximum: unknown key"},
    {"workers: 1\nworkers: 2\n", "t.yaml:2: workers: duplicate key"},
    {"? [a]\n: 1\n", "t.yaml:1: keys must be strings, got a sequence"},
    /* wrong types */
    {"- a\n", "t.yaml:1: expected a mapping, got a sequence"},
    {"just text\n", "t.yaml:1: expected a mapping, got a string"},
    {"workers: [1]\n", "t.yaml:1: workers: expected an integer, got a sequence"},
    {"workers:\n", "t.yaml:1: workers: expected an integer, got null"},
    {"listeners: 127.0.0.1:80\n", "t.yaml:1: listeners: expected a sequence, got a string"},
    {"listeners:\n", "t.yaml:1: listeners: expected a sequence, got null"},
    {"limits: 5\n", "t.yaml:1: limits: expected a mapping, got a string"},
    {"timeouts: [1s]\n", "t.yaml:1: timeouts: expected a mapping, got a sequence"},
    {"upstreams:\n  - echo\n", "t.yaml:2: upstreams[0]: expected a mapping, got a string"},
    {"routes:\n  - /\n", "t.yaml:2: routes[0]: expected a mapping, got a string"},
    {"listeners:\n  - [h, 1]\n", "t.yaml:2: listeners[0]: expected an address (HOST:PORT), got a sequence"},
    {"upstreams:\n  - name: {a: 1}\n", "t.yaml:2: upstreams[0].name: expected a string, got a mapping"},
    {"limits:\n  max_message_size: [1]\n", "t.yaml:2: limits.max_message_size: expected a size, got a sequence"},
    {"timeouts:\n  idle: {}\n", "t.yaml:2: timeouts.idle: expected a duration, got a mapping"},
    {"log_level: [info]\n", "t.yaml:1: log_level: expected a log level, got a sequence"},
    {"health_path: \"/a\\0b\"\n", "t.yaml:1: health_path: must not contain NUL bytes"},
    /* integers */
    {"workers: two\n", "t.yaml:1: workers: invalid integer \"two\""},
    {"workers: -1\n", "t.yaml:1: workers: invalid integer \"-1\""},
    {"workers: 0x10\n", "t.yaml:1: workers: invalid integer \"0x10\""},
    {"workers: 1025\n", "t.yaml:1: workers: must be between 0 and 1024"},
    {"workers: 99999999999999999999999\n", "t.yaml:1: workers: must be between 0 and 1024"},
    {"limits:\n  max_headers: 0\n", "t.yaml:2: limits.max_headers: must be between 1 and 4294967295"},
    {"limits:\n  max_connections: 4294967296\n", "t.yaml:2: limits.max_connections: must be between 1 and 4294967295"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    max_connections: 0\n",
     "t.yaml:4: upstreams[0].max_connections: must be between 1 and 4294967295"},
    /* sizes */
    {"limits:\n  max_message_size: 4XB\n",
     "t.yaml:2: limits.max_message_size: invalid size \"4XB\": expected a number of bytes, optionally followed by KiB, MiB or GiB"},
    {"limits:\n  max_message_size: 1.5MiB\n",
     "t.yaml:2: limits.max_message_size: invalid size \"1.5MiB\": expected a number of bytes, optionally followed by KiB, MiB or "
     "GiB"},
    {"limits:\n  max_message_size: 4GiB\n", "t.yaml:2: limits.max_message_size: must be between 1 and 4294967295 bytes"},
    {"limits:\n  call_buffer_size: 0\n", "t.yaml:2: limits.call_buffer_size: must be between 1 and 4294967295 bytes"},
    {"limits:\n  max_header_size: 99999999999999999999\n",
     "t.yaml:2: limits.max_header_size: invalid size \"99999999999999999999\": too large"},
    {"limits:\n  stream_window_size: 1023\n", "t.yaml:2: limits.stream_window_size: must be between 1024 and 2147483647 bytes"},
    {"limits:\n  stream_window_size: 2GiB\n", "t.yaml:2: limits.stream_window_size: must be between 1024 and 2147483647 bytes"},
    /* durations */
    {"timeouts:\n  idle: 5x\n", "t.yaml:2: timeouts.idle: invalid duration \"5x\": expected a number followed by ms, s, m or h"},
    {"timeouts:\n  drain: 1.5ms\n", "t.yaml:2: timeouts.drain: invalid duration \"1.5ms\": finer than a millisecond"},
    {"timeouts:\n  drain: 99999999999999999999s\n",
     "t.yaml:2: timeouts.drain: invalid duration \"99999999999999999999s\": too large"},
    {"timeouts:\n  idle: 0\n", "t.yaml:2: timeouts.idle: must be greater than 0"},
    {"timeouts:\n  header_read: 0ms\n", "t.yaml:2: timeouts.header_read: must be greater than 0"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    connect_timeout: 0\n",
     "t.yaml:4: upstreams[0].connect_timeout: must be greater than 0"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    backoff: {initial: 10s, max: 1s}\n",
     "t.yaml:4: upstreams[0].backoff.max: must not be less than initial (10000ms)"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    backoff:\n      initial: 10s\n",
     "t.yaml:5: upstreams[0].backoff.initial: must not be greater than max (5000ms)"},
    /* addresses */
    {"listeners:\n  - 127.0.0.1\n", "t.yaml:2: listeners[0]: invalid address \"127.0.0.1\": missing :PORT"},
    {"listeners:\n  - address: 127.0.0.1:0\n",
     "t.yaml:2: listeners[0].address: invalid address \"127.0.0.1:0\": port must be a number between 1 and 65535"},
    {"listeners:\n  - {}\n", "t.yaml:2: listeners[0].address: is required"},
    {"listeners: []\n", "t.yaml:1: listeners: must not be empty"},
    {"listeners: [h:1, \"[::1]:2\", h:1]\n", "t.yaml:1: listeners[2]: same address as listeners[0]"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1, \"h:65536\"]\n",
     "t.yaml:3: upstreams[0].endpoints[1]: invalid address \"h:65536\": port must be a number between 1 and 65535"},
    {"upstreams:\n  - name: a\n    endpoints:\n      - h:1\n      - ::1:50051\n",
     "t.yaml:5: upstreams[0].endpoints[1]: invalid address \"::1:50051\": IPv6 addresses must be in brackets, e.g. [::1]:50051"},
    {"upstreams:\n  - name: a\n    endpoints: [\":80\"]\n",
     "t.yaml:3: upstreams[0].endpoints[0]: invalid address \":80\": host is empty"},
    {"upstreams:\n  - name: a\n    endpoints: [\"[nope]:80\"]\n",
     "t.yaml:3: upstreams[0].endpoints[0]: invalid address \"[nope]:80\": invalid IPv6 address"},
    {"upstreams:\n  - name: a\n    endpoints: [\"a b:80\"]\n",
     "t.yaml:3: upstreams[0].endpoints[0]: invalid address \"a b:80\": invalid character in host"},
    /* upstreams */
    {"upstreams: []\n", "t.yaml:1: upstreams: must not be empty"},
    {"upstreams:\n  - endpoints: [h:1]\n", "t.yaml:2: upstreams[0].name: is required"},
    {"upstreams:\n  - name: a\n", "t.yaml:2: upstreams[0].endpoints: is required"},
    {"upstreams:\n  - name: a\n    endpoints: []\n", "t.yaml:3: upstreams[0].endpoints: must not be empty"},
    {"upstreams:\n  - name: my upstream\n    endpoints: [h:1]\n",
     "t.yaml:2: upstreams[0].name: may only contain A-Z a-z 0-9 . _ -"},
    {"upstreams:\n  - name: \"\"\n    endpoints: [h:1]\n", "t.yaml:2: upstreams[0].name: must be 1 to 63 characters long"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    authority: \"\"\n", "t.yaml:4: upstreams[0].authority: must not be empty"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n  - name: b\n    endpoints: [h:2]\n  - name: a\n    endpoints: [h:3]\n",
     "t.yaml:6: upstreams[2].name: duplicate upstream name \"a\" (also upstreams[0])"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n  - name: b\n    endpoints: [h:2]\n",
     "t.yaml:1: routes: required when more than one upstream is defined"},
    /* routes */
    {"routes: []\n", "t.yaml:1: routes: must not be empty"},
    {"routes:\n  - prefix: /\n    upstream: nope\n", "t.yaml:3: routes[0].upstream: unknown upstream \"nope\""},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\nroutes:\n  - prefix: /\n    upstream: default\n",
     "t.yaml:6: routes[0].upstream: unknown upstream \"default\""},
    {"routes:\n  - prefix: portico.Echo/\n    upstream: default\n", "t.yaml:2: routes[0].prefix: must start with '/'"},
    {"routes:\n  - path: \"/a b\"\n    upstream: default\n",
     "t.yaml:2: routes[0].path: must not contain spaces or control characters"},
    {"routes:\n  - prefix: /a/\n    path: /a/b\n    upstream: default\n",
     "t.yaml:3: routes[0].path: only one of prefix and path may be given"},
    {"routes:\n  - upstream: default\n", "t.yaml:2: routes[0]: needs a prefix or a path"},
    {"routes:\n  - prefix: /\n", "t.yaml:2: routes[0].upstream: is required"},
    {"routes:\n  - prefix: /a/\n    upstream: default\n  - path: /a/\n    upstream: default\n  - prefix: /a/\n    upstream: "
     "default\n",
     "t.yaml:6: routes[2].prefix: duplicate of routes[0]"},
    {"routes:\n  - prefix: /\n    upstream: [default]\n",
     "t.yaml:3: routes[0].upstream: expected an upstream name, got a sequence"},
    /* scalars */
    {"health_path: healthz\n", "t.yaml:1: health_path: must start with '/'"},
    {"log_level: verbose\n", "t.yaml:1: log_level: invalid log level \"verbose\" (expected debug, info, warn, error or off)"},
    /* documents */
    {"workers: 1\n---\nworkers: 2\n", "t.yaml:3: only one YAML document is allowed"},
};

/* Every error leaves the config as it was, and names file, line and key exactly. */
static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        ptc_config_t cfg;
        char err[512];
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        int ret = load(&cfg, error_cases[i].yaml, err, sizeof(err));
        if (ret != PTC_ECONFIG || strcmp(err, error_cases[i].message) != 0)
            print_error("case %zu:\n%s\nexpected: %s\ngot (%d): %s\n", i, error_cases[i].yaml, error_cases[i].message, ret, err);
        assert_int_equal(ret, PTC_ECONFIG);
        assert_string_equal(err, error_cases[i].message);
        assert_string_equal(cfg.source, "<default>");
        assert_is_default(&cfg);
        ptc_config_dispose(&cfg);
    }
}

/* libyaml's own messages are not ours to pin down; the FILE:LINE: prefix is. */
static void test_syntax_errors(void **state)
{
    (void)state;
    static const error_case_t cases[] = {
        {"workers: 1\nlimits: [1\n", "t.yaml:3: syntax error: "},
        {"workers: 1\n  bad: indent\n", "t.yaml:2: syntax error: "},
        {"a: *undefined\n", "t.yaml:1: syntax error: "},
        {"workers: 1\nlog_level: \"x\x01\"\n", "t.yaml:2: syntax error: "},
        {"workers: 1\n\nhealth_path: \"/a\n", "t.yaml:4: syntax error: "},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ptc_config_t cfg;
        char err[512];
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        int ret = load(&cfg, cases[i].yaml, err, sizeof(err));
        if (ret != PTC_ECONFIG || strncmp(err, cases[i].message, strlen(cases[i].message)) != 0)
            print_error("case %zu: expected prefix %s, got (%d): %s\n", i, cases[i].message, ret, err);
        assert_int_equal(ret, PTC_ECONFIG);
        assert_true(strncmp(err, cases[i].message, strlen(cases[i].message)) == 0);
        assert_true(strlen(err) > strlen(cases[i].message));
        assert_is_default(&cfg);
        ptc_config_dispose(&cfg);
    }
}

/* An error deep in the file after many allocations leaves nothing behind (checked under ASan) and the config
 * usable; a small err buffer truncates without overflowing. */
static void test_dispose_after_failure(void **state)
{
    (void)state;
    char yaml[sizeof(FULL_EXAMPLE) + 64];
    snprintf(yaml, sizeof(yaml), "%stimeouts_typo: 1\n", FULL_EXAMPLE);
    ptc_config_t cfg;
    char err[16];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "t.yaml:38: time");
    assert_is_default(&cfg);
    assert_int_equal(load(&cfg, yaml, NULL, 0), PTC_ECONFIG);

    /* the same after a successful load: the loaded config survives a failed one */
    char big[256];
    assert_int_equal(load(&cfg, FULL_EXAMPLE, big, sizeof(big)), 0);
    assert_int_equal(load(&cfg, "routes:\n  - prefix: /\n    upstream: nope\n", big, sizeof(big)), PTC_ECONFIG);
    assert_int_equal(cfg.num_upstreams, 2);
    assert_int_equal(cfg.num_routes, 3);
    assert_int_equal(route(&cfg, "/other.Service/Method"), 1);
    ptc_config_dispose(&cfg);
    ptc_config_dispose(&cfg); /* idempotent */

    ptc_config_t zero = {0};
    ptc_config_dispose(&zero);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/ptc-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char yaml[] = "workers: 4\nlimits:\n  max_headers: x\n";
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);

    ptc_config_t cfg;
    char err[512], expected[600];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(ptc_config_load_file(&cfg, path, err, sizeof(err)), PTC_ECONFIG);
    snprintf(expected, sizeof(expected), "%s:3: limits.max_headers: invalid integer \"x\"", path);
    assert_string_equal(err, expected);

    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("workers: 4\n", fp);
    fclose(fp);
    assert_int_equal(ptc_config_load_file(&cfg, path, err, sizeof(err)), 0);
    assert_int_equal(cfg.workers, 4);
    assert_string_equal(cfg.source, path);
    unlink(path);

    assert_int_equal(ptc_config_load_file(&cfg, path, err, sizeof(err)), PTC_EIO);
    snprintf(expected, sizeof(expected), "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, expected);
    assert_int_equal(cfg.workers, 4);
    ptc_config_dispose(&cfg);
}

static void test_duration_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"250ms", 250},
        {"3s", 3000},
        {"1.5s", 1500},
        {"2m", 120000},
        {"1h", 3600000},
        {"0", 0},
        {"0ms", 0},
        {"30", 30000},
        {"0.5", 500},
        {"1.25m", 75000},
        {"0.001s", 1},
        {"1.0ms", 1},
        {"007s", 7000},
        {"0.0000000000s", 0},
        {"1.500000000000s", 1500},
        {"18446744073709551615ms", UINT64_MAX},
        {"5124095576030h", 5124095576030ull * 3600000},
    };
    static const char *const bad[] = {
        "",
        "s",
        "ms",
        "-1s",
        "+1s",
        " 1s",
        "1s ",
        "1 s",
        "1.s",
        ".5s",
        "1sec",
        "1S",
        "1d",
        "0x10",
        "1e3",
        "1,5s",
        "1.5ms",
        "0.0001s",
        "1.0000000001h",
        "1..5s",
        "1.5.5s",
        "18446744073709551616ms",
        "18446744073709551615s",
        "5124095576031h",
        "99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t ms = 12345;
        if (ptc_duration_parse(good[i].s, &ms) != 0 || ms != good[i].ms)
            print_error("duration \"%s\"\n", good[i].s);
        assert_int_equal(ptc_duration_parse(good[i].s, &ms), 0);
        assert_true(ms == good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms = 12345;
        if (ptc_duration_parse(bad[i], &ms) != PTC_EINVAL)
            print_error("duration \"%s\" accepted\n", bad[i]);
        assert_int_equal(ptc_duration_parse(bad[i], &ms), PTC_EINVAL);
        assert_true(ms == 12345);
    }
}

static void test_size_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0", 0},
        {"4194304", 4194304},
        {"64KiB", 64 << 10},
        {"4MiB", 4 << 20},
        {"1GiB", 1 << 30},
        {"1k", 1024},
        {"1K", 1024},
        {"1KB", 1024},
        {"2M", 2 << 20},
        {"2MB", 2 << 20},
        {"3G", 3ull << 30},
        {"3GB", 3ull << 30},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183GiB", 17179869183ull << 30},
    };
    static const char *const bad[] = {
        "",
        "KiB",
        "1.5MiB",
        "1 MiB",
        "1kib",
        "1mb",
        "1m",
        "-1",
        "+1",
        "1KiBx",
        "1B",
        "1TiB",
        " 1",
        "1 ",
        "0x10",
        "1e3",
        "18446744073709551616",
        "17179869184GiB",
        "18014398509481984KiB",
        "99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 12345;
        if (ptc_size_parse(good[i].s, &v) != 0 || v != good[i].v)
            print_error("size \"%s\"\n", good[i].s);
        assert_int_equal(ptc_size_parse(good[i].s, &v), 0);
        assert_true(v == good[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 12345;
        if (ptc_size_parse(bad[i], &v) != PTC_EINVAL)
            print_error("size \"%s\" accepted\n", bad[i]);
        assert_int_equal(ptc_size_parse(bad[i], &v), PTC_EINVAL);
        assert_true(v == 12345);
    }
}

static void test_hostport_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s, *host;
        uint16_t port;
    } good[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080},
        {"[::1]:50052", "::1", 50052},
        {"backend.local:50051", "backend.local", 50051},
        {"h:1", "h", 1},
        {"h:65535", "h", 65535},
        {"h:00080", "h", 80},
        {"my_host-1.example:443", "my_host-1.example", 443},
        {"[2001:db8::1]:443", "2001:db8::1", 443},
        {"[::ffff:10.0.0.1]:1", "::ffff:10.0.0.1", 1},
        {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
    };
    static const char *const bad[] = {
        "",        ":80",    "h",      "h:",     "h:0",     "h:65536",      "h:0x50",        "h:+80",
        "h:-1",    "h:80 ",  " h:80",  "::1:80", "[::1]",   "[::1]80",      "[]:80",         "[zz]:80",
        "[::1:80", "h h:80", "h/x:80", "u@h:80", "[::1]:0", "[1.2.3.4]:80", "[fe80::1%]:80", "h:99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ptc_hostport_t hp = {NULL, 0};
        int ret = ptc_hostport_parse(good[i].s, &hp);
        if (ret != 0)
            print_error("hostport \"%s\"\n", good[i].s);
        assert_int_equal(ret, 0);
        assert_string_equal(hp.host, good[i].host);
        assert_int_equal(hp.port, good[i].port);
        ptc_hostport_dispose(&hp);
        assert_null(hp.host);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ptc_hostport_t hp = {NULL, 7};
        if (ptc_hostport_parse(bad[i], &hp) != PTC_EINVAL)
            print_error("hostport \"%s\" accepted\n", bad[i]);
        assert_int_equal(ptc_hostport_parse(bad[i], &hp), PTC_EINVAL);
        assert_null(hp.host);
        assert_int_equal(hp.port, 7);
    }
}

static void test_route_order_and_match(void **state)
{
    (void)state;
    static const char yaml[] = "upstreams:\n"
                               "  - {name: u0, endpoints: [h:1]}\n"
                               "  - {name: u1, endpoints: [h:2]}\n"
                               "  - {name: u2, endpoints: [h:3]}\n"
                               "  - {name: u3, endpoints: [h:4]}\n"
                               "  - {name: u4, endpoints: [h:5]}\n"
                               "routes:\n"
                               "  - {prefix: /, upstream: u0}\n"
                               "  - {prefix: /a.S/, upstream: u1}\n"
                               "  - {path: /a.S/M, upstream: u2}\n"
                               "  - {prefix: /a.T/, upstream: u3}\n" /* same length as /a.S/: keeps file order */
                               "  - {prefix: /a., upstream: u4}\n"
                               "  - {path: /b.S/M, upstream: u4}\n";
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), 0);

    static const struct {
        ptc_route_match_t match;
        const char *path;
        size_t upstream;
    } order[] = {
        {PTC_ROUTE_EXACT, "/a.S/M", 2}, {PTC_ROUTE_EXACT, "/b.S/M", 4}, {PTC_ROUTE_PREFIX, "/a.S/", 1},
        {PTC_ROUTE_PREFIX, "/a.T/", 3}, {PTC_ROUTE_PREFIX, "/a.", 4},   {PTC_ROUTE_PREFIX, "/", 0},
    };
    assert_int_equal(cfg.num_routes, sizeof(order) / sizeof(order[0]));
    for (size_t i = 0; i < cfg.num_routes; i++) {
        assert_int_equal(cfg.routes[i].match, order[i].match);
        assert_string_equal(cfg.routes[i].path, order[i].path);
        assert_int_equal(cfg.routes[i].upstream_index, order[i].upstream);
    }

    assert_int_equal(route(&cfg, "/a.S/M"), 2);  /* exact beats a longer-listed prefix */
    assert_int_equal(route(&cfg, "/a.S/M2"), 1); /* exact does not match a longer path */
    assert_int_equal(route(&cfg, "/a.S/"), 1);
    assert_int_equal(route(&cfg, "/a.T/X"), 3);
    assert_int_equal(route(&cfg, "/a.U/X"), 4); /* longest prefix wins */
    assert_int_equal(route(&cfg, "/b.S/M"), 4);
    assert_int_equal(route(&cfg, "/b.S/N"), 0);
    assert_int_equal(route(&cfg, "/"), 0);
    assert_int_equal(route(&cfg, ""), -1);
    assert_int_equal(route(&cfg, "/A.S/M"), 0); /* case-sensitive */
    /* the path slice need not be NUL-terminated */
    assert_int_equal(ptc_config_route(&cfg, ptc_iov("/a.S/Mxyz", 6)), 2);

    /* without a catch-all, unmatched paths give -1 */
    assert_int_equal(load(&cfg, "routes:\n  - {path: /a.S/M, upstream: u2}\n  - {prefix: /a.T/, upstream: u3}\n", err, sizeof(err)),
                     0);
    assert_int_equal(cfg.num_routes, 2);
    assert_int_equal(route(&cfg, "/a.S/M"), 2);
    assert_int_equal(route(&cfg, "/a.T/Q"), 3);
    assert_int_equal(route(&cfg, "/a.S/MM"), -1);
    assert_int_equal(route(&cfg, "/c"), -1);
    ptc_config_dispose(&cfg);
}

static void test_set_listeners_and_endpoints(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    char h1[] = "0.0.0.0", h2[] = "::";
    ptc_hostport_t addrs[] = {{h1, 80}, {h2, 81}};
    assert_int_equal(ptc_config_init_default(&cfg), 0);

    assert_int_equal(ptc_config_set_listeners(&cfg, addrs, 0), PTC_EINVAL);
    assert_int_equal(ptc_config_set_listeners(&cfg, addrs, 2), 0);
    assert_int_equal(cfg.num_listeners, 2);
    assert_string_equal(cfg.listeners[1].addr.host, "::");
    assert_true(cfg.listeners[1].addr.host != h2); /* copied */
    assert_int_equal(cfg.listeners[1].addr.port, 81);

    assert_int_equal(ptc_config_set_upstream_endpoints(&cfg, 1, addrs, 1), PTC_EINVAL);
    assert_int_equal(ptc_config_set_upstream_endpoints(&cfg, 0, addrs, 0), PTC_EINVAL);
    assert_int_equal(ptc_config_set_upstream_endpoints(&cfg, 0, addrs, 2), 0);
    assert_int_equal(cfg.upstreams[0].num_endpoints, 2);
    assert_string_equal(cfg.upstreams[0].endpoints[0].host, "0.0.0.0");
    assert_int_equal(cfg.upstreams[0].endpoints[1].port, 81);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    ptc_config_dispose(&cfg);
}

static void test_validate(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);

    size_t n = cfg.num_listeners;
    cfg.num_listeners = 0;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "<default>: listeners: at least one listener is required");
    cfg.num_listeners = n;

    cfg.routes[0].upstream_index = 1;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "<default>: routes[0].upstream: no upstream with index 1");
    cfg.routes[0].upstream_index = 0;

    cfg.limits.stream_window_size = 100;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "<default>: limits.stream_window_size: must be between 1024 and 2147483647");
    cfg.limits.stream_window_size = 0x80000000u;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    cfg.limits.stream_window_size = 0x7fffffffu;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    cfg.upstreams[0].backoff_max_ms = 1;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "<default>: upstreams[0].backoff.max: must not be less than backoff.initial");
    cfg.upstreams[0].backoff_max_ms = 5000;

    cfg.health_path[0] = 'x';
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "<default>: health_path: must start with '/'");
    cfg.health_path[0] = '/';

    cfg.workers = 5000;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "<default>: workers: must be between 0 and 1024");
    cfg.workers = 0;

    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    ptc_config_dispose(&cfg);

    /* routes out of match order (built by hand) */
    static const char yaml[] = "routes:\n  - {prefix: /a/, upstream: default}\n  - {prefix: /, upstream: default}\n";
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), 0);
    ptc_route_config_t tmp = cfg.routes[0];
    cfg.routes[0] = cfg.routes[1];
    cfg.routes[1] = tmp;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "t.yaml: routes[1]: not in match order (exact paths first, then longest prefixes)");
    ptc_config_dispose(&cfg);
}

#ifdef PTC_TEST_FAILMALLOC
/* Runs init + load (+ a second load over the result) failing the i-th allocation, for every i. */
static void failmalloc_run(const char *yaml, int expected, size_t num_routes)
{
    for (long i = 0;; i++) {
        ptc_config_t cfg;
        char err[256];
        long live = failmalloc_live;
        int ret;

        failmalloc_countdown = i;
        if ((ret = ptc_config_init_default(&cfg)) == 0) {
            if ((ret = load(&cfg, yaml, err, sizeof(err))) == PTC_ENOMEM)
                assert_is_default(&cfg); /* untouched */
            if (ret == expected && (ret = load(&cfg, yaml, err, sizeof(err))) == PTC_ENOMEM)
                assert_int_equal(cfg.num_routes, num_routes); /* the first load survives */
        }
        int injected = failmalloc_countdown < 0;
        failmalloc_countdown = -1;
        if (injected) {
            if (ret != PTC_ENOMEM)
                print_error("allocation %ld: got %d %s\n", i, ret, err);
            assert_int_equal(ret, PTC_ENOMEM);
            if (cfg.source != NULL) /* init_default failed: it disposed of cfg itself */
                ptc_config_dispose(&cfg);
        } else {
            assert_int_equal(ret, expected);
            ptc_config_dispose(&cfg);
        }
        if (!injected || !failmalloc_failed_in_libyaml())
            assert_int_equal(failmalloc_live, live);
        failmalloc_live = live;
        if (!injected)
            break;
    }
}
#endif

static void test_allocation_failures(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    char bad[sizeof(FULL_EXAMPLE) + 64];
    snprintf(bad, sizeof(bad), "%stimeouts_typo: 1\n", FULL_EXAMPLE);
    failmalloc_run(FULL_EXAMPLE, 0, 3);
    failmalloc_run(bad, PTC_ECONFIG, 1);
    failmalloc_run("upstreams: [{name: x, endpoints: [h:1]}]\n", 0, 1); /* the generated catch-all route */
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_documented_example),
        cmocka_unit_test(test_bare_listener_and_single_upstream),
        cmocka_unit_test(test_partial_overrides),
        cmocka_unit_test(test_load_over_zeroed_config),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_dispose_after_failure),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_size_parse),
        cmocka_unit_test(test_hostport_parse),
        cmocka_unit_test(test_route_order_and_match),
        cmocka_unit_test(test_set_listeners_and_endpoints),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
