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
#include "portico/tls.h"

#include "../failmalloc.h"
#include "load_failmalloc.h"
#include "tls_files.h"

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
    assert_int_equal(up->balancing, PTC_BALANCE_ROUND_ROBIN);
    assert_int_equal(up->dns_refresh_ms, 30000);
    assert_false(up->health_check.enabled);
    assert_false(up->outlier.enabled);
    assert_int_equal(cfg->timeouts.drain_delay_ms, 0);
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
    assert_null(cfg->routes[0].cors);
    assert_false(cfg->cors.enabled);
    assert_int_equal(cfg->cors.num_origins, 0);
    assert_null(cfg->cors.origins);
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
    {"listeners:\n  - address: h:1\n    proxy_protocol: true\n", "t.yaml:3: listeners[0].proxy_protocol: unknown key"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    backoff: {initial: 1s, maximum: 2s}\n",
     "t.yaml:4: upstreams[0].backoff.maximum: unknown key"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    health_check: {intervall: 2s}\n",
     "t.yaml:4: upstreams[0].health_check.intervall: unknown key"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    balancing: random\n",
     "t.yaml:4: upstreams[0].balancing: invalid value \"random\" (expected round_robin or least_request)"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    health_check: {healthy_threshold: 0}\n",
     "t.yaml:4: upstreams[0].health_check.healthy_threshold: must be between 1 and 1000"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    health_check: {interval: 0}\n",
     "t.yaml:4: upstreams[0].health_check.interval: must be greater than 0"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    health_check: {service: \"a\\tb\"}\n",
     "t.yaml:4: upstreams[0].health_check.service: must not contain control characters"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    health_check: on\n",
     "t.yaml:4: upstreams[0].health_check: invalid value \"on\" (expected true, false or a mapping)"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    outlier: {consecutive_failures: 0}\n",
     "t.yaml:4: upstreams[0].outlier.consecutive_failures: must be between 1 and 1000000"},
    {"upstreams:\n  - name: a\n    endpoints: [h:1]\n    outlier: {ejection: 0s}\n",
     "t.yaml:4: upstreams[0].outlier.ejection: must be greater than 0"},
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
    /* cors: structure */
    {"cors:\n  allow_origin: [\"*\"]\n", "t.yaml:2: cors.allow_origin: unknown key"},
    {"cors:\n  max_age: 1s\n  max_age: 2s\n", "t.yaml:3: cors.max_age: duplicate key"},
    {"cors: [\"*\"]\n", "t.yaml:1: cors: expected a mapping, got a sequence"},
    {"cors:\n", "t.yaml:1: cors: expected a mapping, got null"},
    {"cors: true\n", "t.yaml:1: cors: expected a mapping, got a string"},
    {"routes:\n  - prefix: /\n    upstream: default\n    cors: ~\n", "t.yaml:4: routes[0].cors: expected a mapping, got null"},
    {"routes:\n  - prefix: /\n    upstream: default\n    cors:\n      origins: [\"*\"]\n",
     "t.yaml:5: routes[0].cors.origins: unknown key"},
    /* cors: origins */
    {"cors:\n  allow_origins: []\n", "t.yaml:2: cors.allow_origins: must not be empty"},
    {"cors:\n  allow_origins: \"*\"\n", "t.yaml:2: cors.allow_origins: expected a sequence, got a string"},
    {"cors:\n  allow_origins: [~]\n", "t.yaml:2: cors.allow_origins[0]: expected an origin, got null"},
    {"cors:\n  allow_origins: [[https://a.example]]\n", "t.yaml:2: cors.allow_origins[0]: expected an origin, got a sequence"},
    {"cors:\n  allow_origins: [\"\"]\n", "t.yaml:2: cors.allow_origins[0]: empty origin"},
    {"cors:\n  allow_origins:\n    - https://a.example\n    - https://b.example/\n",
     "t.yaml:4: cors.allow_origins[1]: invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
    {"cors:\n  allow_origins: [\"https://*.example.com/app\"]\n",
     "t.yaml:2: cors.allow_origins[0]: invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com"},
    {"cors:\n"
     "  allow_origins:\n"
     "    - https://app.example.com\n"
     "    - \"https://*.example.com\"\n"
     "    - \"~^https://([a-z]+\\\\.example\\\\.org$\"\n",
     "t.yaml:5: cors.allow_origins[2]: invalid origin regex at offset 31: missing closing parenthesis"},
    {"routes:\n  - prefix: /\n    upstream: default\n    cors:\n      allow_origins: [\"https://ok.example\", \"~a{2,1}\"]\n",
     "t.yaml:5: routes[0].cors.allow_origins[1]: invalid origin regex at offset 5: numbers out of order in {} quantifier"},
    /* cors: booleans */
    {"cors:\n  allow_credentials: yes\n", "t.yaml:2: cors.allow_credentials: invalid boolean \"yes\" (expected true or false)"},
    {"cors:\n  allow_private_network: 1\n", "t.yaml:2: cors.allow_private_network: invalid boolean \"1\" (expected true or false)"},
    {"cors:\n  allow_credentials: [true]\n", "t.yaml:2: cors.allow_credentials: expected a boolean, got a sequence"},
    {"cors:\n  allow_credentials:\n", "t.yaml:2: cors.allow_credentials: expected a boolean, got null"},
    /* cors: methods and header names */
    {"cors:\n  allow_methods: POST\n", "t.yaml:2: cors.allow_methods: expected a sequence, got a string"},
    {"cors:\n  allow_methods: []\n", "t.yaml:2: cors.allow_methods: must not be empty"},
    {"cors:\n  allow_methods: [POST, \"GE T\"]\n",
     "t.yaml:2: cors.allow_methods[1]: invalid method \"GE T\": must be an HTTP token"},
    {"cors:\n  allow_methods: [POST, {a: b}]\n", "t.yaml:2: cors.allow_methods[1]: expected a method, got a mapping"},
    {"cors:\n  allow_headers: x-custom\n", "t.yaml:2: cors.allow_headers: must be \"*\" or a sequence of header names"},
    {"cors:\n  allow_headers: {a: 1}\n",
     "t.yaml:2: cors.allow_headers: expected \"*\" or a sequence of header names, got a mapping"},
    {"cors:\n  allow_headers:\n", "t.yaml:2: cors.allow_headers: expected \"*\" or a sequence of header names, got null"},
    {"cors:\n  allow_headers: []\n", "t.yaml:2: cors.allow_headers: must not be empty"},
    {"cors:\n  allow_headers: [authorization, \"x y\"]\n",
     "t.yaml:2: cors.allow_headers[1]: invalid header name \"x y\": must be an HTTP token"},
    {"cors:\n  allow_headers: [authorization, \"*\"]\n",
     "t.yaml:2: cors.allow_headers[1]: \"*\" cannot be listed; use allow_headers: \"*\" to reflect the requested headers"},
    {"cors:\n  allow_headers: [\"\"]\n", "t.yaml:2: cors.allow_headers[0]: invalid header name \"\": must be an HTTP token"},
    {"cors:\n  expose_headers: [\"x-a:b\"]\n",
     "t.yaml:2: cors.expose_headers[0]: invalid header name \"x-a:b\": must be an HTTP token"},
    {"cors:\n  expose_headers: x-a\n", "t.yaml:2: cors.expose_headers: expected a sequence, got a string"},
    {"cors:\n  expose_headers:\n    - x-a\n    - \"x\\0b\"\n", "t.yaml:4: cors.expose_headers[1]: must not contain NUL bytes"},
    /* cors: max_age */
    {"cors:\n  max_age: 1.5s\n", "t.yaml:2: cors.max_age: must be a whole number of seconds"},
    {"cors:\n  max_age: 500ms\n", "t.yaml:2: cors.max_age: must be a whole number of seconds"},
    {"cors:\n  max_age: 10x\n", "t.yaml:2: cors.max_age: invalid duration \"10x\": expected a number followed by ms, s, m or h"},
    {"cors:\n  max_age: -1\n", "t.yaml:2: cors.max_age: invalid duration \"-1\": expected a number followed by ms, s, m or h"},
    {"cors:\n  max_age: [1s]\n", "t.yaml:2: cors.max_age: expected a duration, got a sequence"},
    /* compression */
    {"compression:\n  gzip: on\n", "t.yaml:2: compression.gzip: invalid boolean \"on\" (expected true or false)"},
    {"compression:\n  level: 10\n", "t.yaml:2: compression.level: must be between 1 and 9"},
    {"compression:\n  brotli: true\n", "t.yaml:2: compression.brotli: unknown key"},
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

/* The cors section as documented (README and the format comment in config.c), with a per-route override. */
static const char CORS_EXAMPLE[] = "upstreams:\n"
                                   "  - name: echo\n"
                                   "    endpoints: [127.0.0.1:50051]\n"
                                   "routes:\n"
                                   "  - prefix: /portico.test.Echo/\n"
                                   "    upstream: echo\n"
                                   "    cors: {allow_origins: [\"https://other.example\"]}\n"
                                   "  - path: /portico.test.Echo/Private\n"
                                   "    upstream: echo\n"
                                   "    cors:\n"
                                   "      allow_origins: [\"https://admin.example.com\", \"null\"]\n"
                                   "      allow_credentials: true\n"
                                   "      allow_methods: [POST]\n"
                                   "      allow_headers: [authorization, X-Api-Key]\n"
                                   "      max_age: 0\n"
                                   "      allow_private_network: true\n"
                                   "  - prefix: /\n"
                                   "    upstream: echo\n"
                                   "cors:\n"
                                   "  allow_origins: [\"https://app.example.com\", \"https://*.example.com\", "
                                   "\"~^https://[a-z]+\\\\.example\\\\.org$\", \"*\"]\n"
                                   "  allow_credentials: false        # default false\n"
                                   "  allow_methods: [POST, OPTIONS]  # default \"POST, OPTIONS\"\n"
                                   "  allow_headers: \"*\"              # \"*\" or absent = reflect\n"
                                   "  expose_headers: [x-custom, X-Trace-Bin]\n"
                                   "  max_age: 10m\n"
                                   "  allow_private_network: false\n";

static const ptc_route_config_t *match(const ptc_config_t *cfg, const char *path)
{
    return ptc_config_match_route(cfg, ptc_iov(path, strlen(path)));
}

static bool allowed(const ptc_cors_config_t *c, const char *origin)
{
    return ptc_cors_origin_allowed(c, ptc_iov(origin, strlen(origin)));
}

/* A policy with every key at its default, as ptc_cors_config_init leaves it, enabled. */
static void assert_cors_defaults_but_origins(const ptc_cors_config_t *c)
{
    assert_true(c->enabled);
    assert_false(c->allow_credentials);
    assert_null(c->allow_methods); /* "GET, POST, OPTIONS" */
    assert_true(c->reflect_headers);
    assert_null(c->allow_headers);
    assert_int_equal(c->num_allow_headers, 0);
    assert_null(c->expose_headers);
    assert_int_equal(c->num_expose_headers, 0);
    assert_int_equal(c->max_age_s, 600);
    assert_false(c->allow_private_network);
}

static void test_cors_example(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    int ret = load(&cfg, CORS_EXAMPLE, err, sizeof(err));
    if (ret != 0)
        print_message("%s\n", err);
    assert_int_equal(ret, 0);

    /* the global policy */
    const ptc_cors_config_t *g = &cfg.cors;
    assert_true(g->enabled);
    assert_int_equal(g->num_origins, 4);
    assert_int_equal(g->origins[0].kind, PTC_ORIGIN_EXACT);
    assert_string_equal(g->origins[0].text, "https://app.example.com");
    assert_int_equal(g->origins[1].kind, PTC_ORIGIN_WILDCARD);
    assert_string_equal(g->origins[1].suffix, ".example.com");
    assert_int_equal(g->origins[2].kind, PTC_ORIGIN_REGEX);
    assert_string_equal(g->origins[2].text, "~^https://[a-z]+\\.example\\.org$");
    assert_int_equal(g->origins[3].kind, PTC_ORIGIN_ANY);
    assert_false(g->allow_credentials);
    assert_string_equal(g->allow_methods, "POST, OPTIONS");
    assert_true(g->reflect_headers);
    assert_int_equal(g->num_allow_headers, 0);
    assert_int_equal(g->num_expose_headers, 2);
    assert_string_equal(g->expose_headers[0], "x-custom");
    assert_string_equal(g->expose_headers[1], "X-Trace-Bin");
    assert_int_equal(g->max_age_s, 600);
    assert_false(g->allow_private_network);
    assert_true(allowed(g, "https://shop.example.org"));
    assert_false(allowed(g, "null"));

    /* routes, in match order, keep their own policies */
    assert_int_equal(cfg.num_routes, 3);
    const ptc_route_config_t *priv = &cfg.routes[0], *echo = &cfg.routes[1], *all = &cfg.routes[2];
    assert_string_equal(priv->path, "/portico.test.Echo/Private");
    assert_string_equal(echo->path, "/portico.test.Echo/");
    assert_string_equal(all->path, "/");
    assert_null(all->cors);

    /* keys not given take the defaults, not the global values */
    assert_non_null(echo->cors);
    assert_int_equal(echo->cors->num_origins, 1);
    assert_string_equal(echo->cors->origins[0].text, "https://other.example");
    assert_cors_defaults_but_origins(echo->cors);

    const ptc_cors_config_t *p = priv->cors;
    assert_non_null(p);
    assert_true(p->enabled);
    assert_int_equal(p->num_origins, 2);
    assert_true(allowed(p, "null")); /* listed literally, and quoted: a plain null is YAML's null */
    assert_true(p->allow_credentials);
    assert_string_equal(p->allow_methods, "POST");
    assert_false(p->reflect_headers);
    assert_int_equal(p->num_allow_headers, 2);
    assert_string_equal(p->allow_headers[0], "authorization");
    assert_string_equal(p->allow_headers[1], "X-Api-Key");
    assert_int_equal(p->num_expose_headers, 0);
    assert_int_equal(p->max_age_s, 0);
    assert_true(p->allow_private_network);

    /* route lookup and the policy that applies */
    assert_ptr_equal(match(&cfg, "/portico.test.Echo/Echo"), echo);
    assert_ptr_equal(match(&cfg, "/portico.test.Echo/Private"), priv);
    assert_ptr_equal(match(&cfg, "/other.Svc/M"), all);
    assert_ptr_equal(ptc_config_cors_for(&cfg, echo), echo->cors);
    assert_ptr_equal(ptc_config_cors_for(&cfg, priv), priv->cors);
    assert_ptr_equal(ptc_config_cors_for(&cfg, all), &cfg.cors);
    assert_ptr_equal(ptc_config_cors_for(&cfg, NULL), &cfg.cors);
    assert_true(allowed(ptc_config_cors_for(&cfg, match(&cfg, "/portico.test.Echo/Echo")), "https://other.example"));
    assert_false(allowed(ptc_config_cors_for(&cfg, match(&cfg, "/portico.test.Echo/Echo")), "https://app.example.com"));
    assert_true(allowed(ptc_config_cors_for(&cfg, match(&cfg, "/x.Y/Z")), "https://app.example.com"));

    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    ptc_config_dispose(&cfg);
}

static void test_cors_minimal_and_empty(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);

    /* only origins: everything else at its default */
    assert_int_equal(load(&cfg, "cors:\n  allow_origins: [http://localhost:3000]\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.cors.num_origins, 1);
    assert_cors_defaults_but_origins(&cfg.cors);
    assert_true(allowed(&cfg.cors, "http://localhost:3000"));
    assert_false(allowed(&cfg.cors, "http://localhost:3001"));

    /* an empty section is a policy that allows no origin */
    assert_int_equal(load(&cfg, "cors: {}\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.cors.num_origins, 0);
    assert_cors_defaults_but_origins(&cfg.cors);
    assert_false(allowed(&cfg.cors, "http://localhost:3000"));

    /* single-quoted regex, lists in block style, 1h max_age */
    assert_int_equal(load(&cfg,
                          "cors:\n"
                          "  allow_origins:\n"
                          "    - '~https://(a|b)\\.test'\n"
                          "  expose_headers:\n"
                          "    - grpc-status\n"
                          "  max_age: 1h\n"
                          "  allow_credentials: true\n",
                          err, sizeof(err)),
                     0);
    assert_true(allowed(&cfg.cors, "https://b.test"));
    assert_false(allowed(&cfg.cors, "https://c.test"));
    assert_int_equal(cfg.cors.max_age_s, 3600);
    assert_true(cfg.cors.allow_credentials);
    ptc_config_dispose(&cfg);
}

/* A file without a cors section keeps the current policy, like the other sections; a failed load keeps it too. */
static void test_cors_partial_overrides(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, CORS_EXAMPLE, err, sizeof(err)), 0);

    assert_int_equal(load(&cfg, "workers: 3\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.cors.num_origins, 4);
    assert_int_equal(cfg.num_routes, 3);
    assert_non_null(cfg.routes[1].cors); /* routes kept with their policies */
    assert_true(allowed(ptc_config_cors_for(&cfg, match(&cfg, "/portico.test.Echo/E")), "https://other.example"));

    assert_int_equal(load(&cfg, "cors:\n  allow_origins: [https://x.test]\n  max_age: bad\n", err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "t.yaml:3: cors.max_age: invalid duration \"bad\": expected a number followed by ms, s, m or h");
    assert_int_equal(cfg.cors.num_origins, 4);
    assert_true(allowed(&cfg.cors, "https://app.example.com"));

    /* replaced routes take their policies with them */
    assert_int_equal(
        load(&cfg, "routes:\n  - {prefix: /, upstream: echo}\ncors: {allow_origins: [https://x.test]}\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.num_routes, 1);
    assert_null(cfg.routes[0].cors);
    assert_int_equal(cfg.cors.num_origins, 1);
    assert_ptr_equal(ptc_config_cors_for(&cfg, match(&cfg, "/portico.test.Echo/E")), &cfg.cors);
    ptc_config_dispose(&cfg);
}

/* Errors after policies were built (global, per route) free them; the config stays as it was. */
static void test_cors_dispose_after_failure(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    char yaml[sizeof(CORS_EXAMPLE) + 64];
    assert_int_equal(ptc_config_init_default(&cfg), 0);

    snprintf(yaml, sizeof(yaml), "%stimeouts_typo: 1\n", CORS_EXAMPLE);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "t.yaml:27: timeouts_typo: unknown key");
    assert_is_default(&cfg);

    /* the error is inside the second route's policy, after the first route's */
    snprintf(yaml, sizeof(yaml), "%s", CORS_EXAMPLE);
    char *p = strstr(yaml, "max_age: 0");
    assert_non_null(p);
    memcpy(p, "max_age: x", 10);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err,
                        "t.yaml:15: routes[1].cors.max_age: invalid duration \"x\": expected a number followed by ms, s, m or h");
    assert_is_default(&cfg);

    /* validation failing after the whole file was walked */
    snprintf(yaml, sizeof(yaml), "%slimits: {stream_window_size: 1}\n", CORS_EXAMPLE);
    assert_int_equal(load(&cfg, yaml, err, sizeof(err)), PTC_ECONFIG);
    assert_is_default(&cfg);
    ptc_config_dispose(&cfg);
}

static void test_add_allow_origin(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);

    /* without a cors section: a default policy with the flag's origins */
    assert_int_equal(ptc_config_add_allow_origin(&cfg, "http://localhost:3000", err, sizeof(err)), 0);
    assert_int_equal(ptc_config_add_allow_origin(&cfg, "https://*.example.com", err, sizeof(err)), 0);
    assert_true(cfg.cors.enabled);
    assert_int_equal(cfg.cors.num_origins, 2);
    assert_cors_defaults_but_origins(&cfg.cors);
    assert_true(allowed(ptc_config_cors_for(&cfg, match(&cfg, "/a.B/C")), "http://localhost:3000"));
    assert_true(allowed(&cfg.cors, "https://a.example.com"));
    assert_false(allowed(&cfg.cors, "https://example.com"));

    /* bad values leave the policy alone */
    static const struct {
        const char *pattern, *message;
    } bad[] = {
        {"", "empty origin"},
        {"localhost:3000", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://app.example.com/", "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *"},
        {"https://*.example.com/x", "invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com"},
        {"~https://(x", "invalid origin regex at offset 10: missing closing parenthesis"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(ptc_config_add_allow_origin(&cfg, bad[i].pattern, err, sizeof(err)), PTC_EINVAL);
        assert_string_equal(err, bad[i].message);
        assert_int_equal(cfg.cors.num_origins, 2);
    }
    assert_int_equal(ptc_config_add_allow_origin(&cfg, "nope", NULL, 0), PTC_EINVAL);
    ptc_config_dispose(&cfg);

    /* after a file: appended to its global policy; per-route policies are not touched */
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, CORS_EXAMPLE, err, sizeof(err)), 0);
    assert_int_equal(ptc_config_add_allow_origin(&cfg, "~https://dev-[0-9]+\\.test", err, sizeof(err)), 0);
    assert_int_equal(cfg.cors.num_origins, 5);
    assert_int_equal(cfg.cors.max_age_s, 600);
    assert_int_equal(cfg.cors.num_expose_headers, 2);
    assert_true(allowed(&cfg.cors, "https://dev-12.test"));
    assert_false(allowed(ptc_config_cors_for(&cfg, match(&cfg, "/portico.test.Echo/E")), "https://dev-12.test"));
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    ptc_config_dispose(&cfg);
}

static void test_compression(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_false(cfg.compression.gzip);
    assert_int_equal(cfg.compression.min_size, 1024);
    assert_int_equal(cfg.compression.level, 5);
    assert_int_equal(load(&cfg, "compression: {gzip: true, min_size: 4KiB, level: 9}\n", err, sizeof(err)), 0);
    assert_true(cfg.compression.gzip);
    assert_int_equal(cfg.compression.min_size, 4096);
    assert_int_equal(cfg.compression.level, 9);
    /* a later file without the section keeps it; a partial section overrides key by key */
    assert_int_equal(load(&cfg, "compression: {level: 1}\n", err, sizeof(err)), 0);
    assert_true(cfg.compression.gzip);
    assert_int_equal(cfg.compression.level, 1);
    ptc_config_dispose(&cfg);
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
    /* the same lookup returning the route */
    assert_ptr_equal(match(&cfg, "/a.S/M"), &cfg.routes[0]);
    assert_ptr_equal(match(&cfg, "/a.U/X"), &cfg.routes[4]);
    assert_ptr_equal(match(&cfg, "/"), &cfg.routes[5]);
    assert_null(match(&cfg, ""));

    /* without a catch-all, unmatched paths give -1 */
    assert_int_equal(load(&cfg, "routes:\n  - {path: /a.S/M, upstream: u2}\n  - {prefix: /a.T/, upstream: u3}\n", err, sizeof(err)),
                     0);
    assert_int_equal(cfg.num_routes, 2);
    assert_int_equal(route(&cfg, "/a.S/M"), 2);
    assert_int_equal(route(&cfg, "/a.T/Q"), 3);
    assert_int_equal(route(&cfg, "/a.S/MM"), -1);
    assert_int_equal(route(&cfg, "/c"), -1);
    assert_null(match(&cfg, "/c"));
    assert_ptr_equal(ptc_config_cors_for(&cfg, match(&cfg, "/c")), &cfg.cors);
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


/* ---- TLS ---- */

/* The TLS settings as documented (README and the format comment in config.c). */
static const char TLS_EXAMPLE[] = "listeners:\n"
                                  "  - address: 127.0.0.1:8080\n"
                                  "  - address: 127.0.0.1:8443\n"
                                  "    tls:\n"
                                  "      cert: a.pem\n"
                                  "      key: a.key\n"
                                  "      certificates:\n"
                                  "        - {cert: a.pem, key: \"@/a.key\"}\n"
                                  "      client_auth: optional\n"
                                  "      client_ca: a.pem\n"
                                  "      min_version: \"1.3\"\n"
                                  "  - address: 127.0.0.1:8444\n"
                                  "    tls: {cert: a.pem, key: a.key}\n"
                                  "upstreams:\n"
                                  "  - name: secure\n"
                                  "    endpoints: [127.0.0.1:50443]\n"
                                  "    tls:\n"
                                  "      ca: a.pem\n"
                                  "      server_name: echo.test\n"
                                  "      cert: a.pem\n"
                                  "      key: a.key\n"
                                  "      insecure_skip_verify: false\n"
                                  "  - name: system\n"
                                  "    endpoints: [backend:443]\n"
                                  "    tls: {}\n"
                                  "  - name: dev\n"
                                  "    endpoints: [backend:443]\n"
                                  "    tls: {insecure_skip_verify: true}\n"
                                  "  - name: plain\n"
                                  "    endpoints: [backend:80]\n"
                                  "routes:\n"
                                  "  - {prefix: /, upstream: secure}\n";

static void test_tls_example(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char yaml[sizeof(TLS_EXAMPLE) + 128], err[512];

    expand(yaml, sizeof(yaml), TLS_EXAMPLE);
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_false(ptc_config_uses_tls(&cfg));
    if (load_in_dir(&cfg, yaml, err, sizeof(err)) != 0)
        print_error("%s\n", err);
    assert_int_equal(load_in_dir(&cfg, yaml, err, sizeof(err)), 0);
    assert_true(ptc_config_uses_tls(&cfg));

    assert_int_equal(cfg.num_listeners, 3);
    assert_null(cfg.listeners[0].tls);
    const ptc_listener_tls_config_t *tls = cfg.listeners[1].tls;
    assert_non_null(tls);
    assert_int_equal(tls->num_certs, 2);
    assert_path(tls->certs[0].cert, "a.pem"); /* relative to the config file's directory */
    assert_path(tls->certs[0].key, "a.key");
    assert_path(tls->certs[1].cert, "a.pem");
    assert_path(tls->certs[1].key, "a.key"); /* absolute, as written */
    assert_int_equal(tls->client_auth, PTC_TLS_CLIENT_AUTH_OPTIONAL);
    assert_path(tls->client_ca, "a.pem");
    assert_int_equal(tls->min_version, PTC_TLS_1_3);
    tls = cfg.listeners[2].tls;
    assert_int_equal(tls->num_certs, 1);
    assert_int_equal(tls->client_auth, PTC_TLS_CLIENT_AUTH_NONE);
    assert_null(tls->client_ca);
    assert_int_equal(tls->min_version, PTC_TLS_1_2);

    assert_int_equal(cfg.num_upstreams, 4);
    const ptc_upstream_tls_config_t *ut = cfg.upstreams[0].tls;
    assert_path(ut->ca, "a.pem");
    assert_string_equal(ut->server_name, "echo.test");
    assert_path(ut->cert, "a.pem");
    assert_path(ut->key, "a.key");
    assert_false(ut->insecure_skip_verify);
    ut = cfg.upstreams[1].tls;
    assert_non_null(ut);
    assert_null(ut->ca);
    assert_null(ut->server_name);
    assert_null(ut->cert);
    assert_null(ut->key);
    assert_false(ut->insecure_skip_verify);
    assert_true(cfg.upstreams[2].tls->insecure_skip_verify);
    assert_null(cfg.upstreams[3].tls);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    /* the contexts build from it */
    ptc_tls_contexts_t *ctxs = NULL;
    assert_int_equal(ptc_tls_contexts_new(&ctxs, &cfg, err, sizeof(err)), 0);
    assert_null(ctxs->listeners[0]);
    assert_non_null(ctxs->listeners[1]);
    assert_non_null(ctxs->upstreams[0]);
    assert_null(ctxs->upstreams[3]);
    ptc_tls_contexts_t *copy = ptc_tls_contexts_dup(ctxs);
    assert_non_null(copy);
    assert_ptr_equal(copy->listeners[1], ctxs->listeners[1]);
    ptc_tls_contexts_free(ctxs);
    ptc_tls_contexts_free(copy);
    ptc_tls_contexts_free(NULL);

    /* a name without a directory: paths stay relative to the working directory */
    assert_int_equal(load(&cfg, "upstreams: [{name: u, endpoints: [h:1], tls: {server_name: \"[::1]\"}}]\n", err, sizeof(err)),
                     PTC_ECONFIG);
    assert_int_equal(load(&cfg, "upstreams: [{name: u, endpoints: [h:1], tls: {server_name: \"::1\"}}]\n", err, sizeof(err)), 0);
    assert_string_equal(cfg.upstreams[0].tls->server_name, "::1");
    ptc_config_dispose(&cfg);
}

typedef struct {
    const char *yaml;    /* '@' stands for the directory of the files */
    const char *message; /* '@' likewise; ends in '*': a prefix (OpenSSL's wording follows) */
} tls_error_case_t;

static const tls_error_case_t tls_error_cases[] = {
    /* structure */
    {"listeners:\n  - address: h:1\n    tls: true\n", "@/t.yaml:3: listeners[0].tls: expected a mapping, got a string"},
    {"listeners:\n  - address: h:1\n    tls:\n", "@/t.yaml:3: listeners[0].tls: expected a mapping, got null"},
    {"listeners:\n  - address: h:1\n    tls: {key: a.key}\n", "@/t.yaml:3: listeners[0].tls.cert: is required"},
    {"listeners:\n  - address: h:1\n    tls: {cert: a.pem}\n", "@/t.yaml:3: listeners[0].tls.key: is required"},
    {"listeners:\n  - address: h:1\n    tls: {cert: a.pem, key: a.key, ca: a.pem}\n", "@/t.yaml:3: listeners[0].tls.ca: unknown key"},
    {"listeners:\n  - address: h:1\n    tls: {cert: \"\", key: a.key}\n", "@/t.yaml:3: listeners[0].tls.cert: must not be empty"},
    {"listeners:\n  - address: h:1\n    tls: {cert: [a.pem], key: a.key}\n",
     "@/t.yaml:3: listeners[0].tls.cert: expected a file name, got a sequence"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      client_auth: yes\n",
     "@/t.yaml:6: listeners[0].tls.client_auth: invalid value \"yes\" (expected none, optional or required)"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      client_auth: required\n",
     "@/t.yaml:4: listeners[0].tls.client_ca: is required when client_auth is optional or required"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      client_ca: a.pem\n",
     "@/t.yaml:6: listeners[0].tls.client_ca: only used with client_auth optional or required"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      min_version: 1.1\n",
     "@/t.yaml:6: listeners[0].tls.min_version: invalid TLS version \"1.1\" (expected \"1.2\" or \"1.3\")"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      certificates: []\n",
     "@/t.yaml:6: listeners[0].tls.certificates: must not be empty"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      certificates:\n        - {cert: a.pem}\n",
     "@/t.yaml:7: listeners[0].tls.certificates[0].key: is required"},
    /* files */
    {"listeners:\n  - address: h:1\n    tls: {cert: nope.pem, key: a.key}\n",
     "@/t.yaml:3: listeners[0].tls.cert: cannot load certificate chain \"@/nope.pem\": *"},
    {"listeners:\n  - address: h:1\n    tls: {cert: junk.pem, key: a.key}\n",
     "@/t.yaml:3: listeners[0].tls.cert: cannot load certificate chain \"@/junk.pem\": *"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: b.key\n",
     "@/t.yaml:5: listeners[0].tls.key: private key \"@/b.key\" does not match the certificate in \"@/a.pem\" *"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: enc.key\n",
     "@/t.yaml:5: listeners[0].tls.key: cannot load private key \"@/enc.key\": *"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: junk.pem\n",
     "@/t.yaml:5: listeners[0].tls.key: cannot load private key \"@/junk.pem\": *"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      certificates:\n        - cert: a.pem\n"
     "          key: b.key\n",
     "@/t.yaml:8: listeners[0].tls.certificates[0].key: private key \"@/b.key\" does not match the certificate in \"@/a.pem\" *"},
    {"listeners:\n  - address: h:1\n    tls:\n      cert: a.pem\n      key: a.key\n      client_auth: optional\n      client_ca: "
     "junk.pem\n",
     "@/t.yaml:7: listeners[0].tls.client_ca: cannot load CA certificates \"@/junk.pem\": *"},
    /* upstreams */
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls: true\n", "@/t.yaml:4: upstreams[0].tls: expected a mapping, got a string"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls: {cert: a.pem}\n", "@/t.yaml:4: upstreams[0].tls.key: is required with cert"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls: {key: a.key}\n", "@/t.yaml:4: upstreams[0].tls.cert: is required with key"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls:\n      ca: a.pem\n      insecure_skip_verify: true\n",
     "@/t.yaml:5: upstreams[0].tls.ca: not used with insecure_skip_verify: true"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls: {insecure_skip_verify: 1}\n",
     "@/t.yaml:4: upstreams[0].tls.insecure_skip_verify: invalid boolean \"1\" (expected true or false)"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls: {server_name: \"a b\"}\n",
     "@/t.yaml:4: upstreams[0].tls.server_name: invalid host name \"a b\""},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls: {server_name: \"\"}\n",
     "@/t.yaml:4: upstreams[0].tls.server_name: must not be empty"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls: {sni: x}\n", "@/t.yaml:4: upstreams[0].tls.sni: unknown key"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls:\n      ca: junk.pem\n",
     "@/t.yaml:5: upstreams[0].tls.ca: cannot load CA certificates \"@/junk.pem\": *"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls:\n      cert: a.pem\n      key: b.key\n",
     "@/t.yaml:6: upstreams[0].tls.key: private key \"@/b.key\" does not match the certificate in \"@/a.pem\" *"},
    {"upstreams:\n  - name: u\n    endpoints: [h:1]\n    tls:\n      cert: /nonexistent/c.pem\n      key: a.key\n",
     "@/t.yaml:5: upstreams[0].tls.cert: cannot load certificate chain \"/nonexistent/c.pem\": *"},
};

static void test_tls_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(tls_error_cases) / sizeof(tls_error_cases[0]); i++) {
        ptc_config_t cfg;
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        assert_load_error(&cfg, i, tls_error_cases[i].yaml, tls_error_cases[i].message);
        assert_is_default(&cfg);
        ptc_config_dispose(&cfg);
    }
}

static void test_set_listener_cert(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[512], yaml[512];

    /* --tls-cert / --tls-key on the default listener: paths as given, the other settings at their defaults */
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(ptc_config_set_listener_cert(&cfg, "s.pem", "s.key"), 0);
    const ptc_listener_tls_config_t *tls = cfg.listeners[0].tls;
    assert_int_equal(tls->num_certs, 1);
    assert_string_equal(tls->certs[0].cert, "s.pem");
    assert_string_equal(tls->certs[0].key, "s.key");
    assert_int_equal(tls->client_auth, PTC_TLS_CLIENT_AUTH_NONE);
    assert_int_equal(tls->min_version, PTC_TLS_1_2);
    assert_true(ptc_config_uses_tls(&cfg));
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    /* --listen replaces the listeners (and their TLS settings) */
    char host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, 9443};
    assert_int_equal(ptc_config_set_listeners(&cfg, &hp, 1), 0);
    assert_null(cfg.listeners[0].tls);
    ptc_config_dispose(&cfg);

    /* a configured TLS listener keeps its SNI certificates and client settings; a plain one gets TLS */
    expand(yaml, sizeof(yaml),
           "listeners:\n  - address: h:1\n  - address: h:2\n    tls:\n      cert: a.pem\n      key: a.key\n"
           "      certificates: [{cert: a.pem, key: a.key}]\n      client_auth: required\n      client_ca: a.pem\n");
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load_in_dir(&cfg, yaml, err, sizeof(err)), 0);
    assert_int_equal(ptc_config_set_listener_cert(&cfg, "/x/s.pem", "/x/s.key"), 0);
    assert_string_equal(cfg.listeners[0].tls->certs[0].cert, "/x/s.pem");
    tls = cfg.listeners[1].tls;
    assert_int_equal(tls->num_certs, 2);
    assert_string_equal(tls->certs[0].cert, "/x/s.pem");
    assert_string_equal(tls->certs[0].key, "/x/s.key");
    assert_path(tls->certs[1].cert, "a.pem");
    assert_int_equal(tls->client_auth, PTC_TLS_CLIENT_AUTH_REQUIRED);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    /* cross-field rules on hand-built settings */
    cfg.listeners[1].tls->client_auth = PTC_TLS_CLIENT_AUTH_NONE;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(strchr(err, ' ') + 1, "listeners[1].tls.client_ca: only used with client_auth optional or required");
    cfg.listeners[1].tls->client_auth = PTC_TLS_CLIENT_AUTH_OPTIONAL;
    ptc_config_dispose(&cfg);

    /* the contexts report a bad file given on the command line, naming the listener */
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(ptc_config_set_listener_cert(&cfg, "/nonexistent/s.pem", "s.key"), 0);
    ptc_tls_contexts_t *ctxs = NULL;
    assert_int_equal(ptc_tls_contexts_new(&ctxs, &cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_null(ctxs);
    assert_true(strncmp(err, "listeners[0].tls.cert: cannot load certificate chain \"/nonexistent/s.pem\": ", 75) == 0);
    ptc_config_dispose(&cfg);
}

/* ---- admin, pid_file, watch ---- */

static const char ADMIN_EXAMPLE[] = "watch: false\n"
                                    "pid_file: run/portico.pid\n"
                                    "admin:\n"
                                    "  address: 127.0.0.1:9901\n"
                                    "  token_file: admin.token\n";

static void test_admin_pid_watch(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[512], path[256];

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_null(cfg.admin.address);
    assert_null(cfg.admin.token_file);
    assert_null(cfg.admin.token);
    assert_null(cfg.pid_file);
    assert_true(cfg.watch);

    /* the token is the file's contents without surrounding whitespace; paths are relative to the file */
    write_file("admin.token", " \t s3cr3t-token.42 \r\n\n");
    assert_int_equal(load_in_dir(&cfg, ADMIN_EXAMPLE, err, sizeof(err)), 0);
    assert_false(cfg.watch);
    assert_path(cfg.pid_file, "run/portico.pid");
    assert_non_null(cfg.admin.address);
    assert_string_equal(cfg.admin.address->host, "127.0.0.1");
    assert_int_equal(cfg.admin.address->port, 9901);
    assert_path(cfg.admin.token_file, "admin.token");
    assert_string_equal(cfg.admin.token, "s3cr3t-token.42");
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    /* a file without these keys keeps them */
    assert_int_equal(load(&cfg, "workers: 3\n", err, sizeof(err)), 0);
    assert_false(cfg.watch);
    assert_path(cfg.pid_file, "run/portico.pid");
    assert_int_equal(cfg.admin.address->port, 9901);
    assert_string_equal(cfg.admin.token, "s3cr3t-token.42");

    /* a failed load keeps them too */
    assert_int_equal(load(&cfg, "watch: true\nadmin: ~\npid_file: ~\nworkers: x\n", err, sizeof(err)), PTC_ECONFIG);
    assert_false(cfg.watch);
    assert_non_null(cfg.pid_file);
    assert_non_null(cfg.admin.address);

    /* ~ removes them; an inline token; an admin section without an address */
    assert_int_equal(load(&cfg, "watch: true\nadmin: ~\npid_file: ~\n", err, sizeof(err)), 0);
    assert_true(cfg.watch);
    assert_null(cfg.pid_file);
    assert_null(cfg.admin.address);
    assert_null(cfg.admin.token_file);
    assert_null(cfg.admin.token);
    assert_int_equal(load(&cfg, "admin: {token: \"abc def\"}\npid_file: /run/p.pid\n", err, sizeof(err)), 0);
    assert_null(cfg.admin.address);
    assert_null(cfg.admin.token_file);
    assert_string_equal(cfg.admin.token, "abc def");
    assert_string_equal(cfg.pid_file, "/run/p.pid"); /* absolute, as written */
    assert_int_equal(load(&cfg, "admin: {address: \"[::1]:9901\"}\n", err, sizeof(err)), 0);
    assert_string_equal(cfg.admin.address->host, "::1");
    assert_null(cfg.admin.token); /* the section is replaced as a whole */
    assert_int_equal(load(&cfg, "admin: {}\n", err, sizeof(err)), 0);
    assert_null(cfg.admin.address);

    /* an unreadable token file is an error naming the line of token_file; the config is kept */
    assert_int_equal(load(&cfg, "admin: {address: h:1, token: x}\n", err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/t.yaml", tls_dir);
    assert_int_equal(load_in_dir(&cfg, "admin:\n  address: h:2\n  token_file: nope.token\n", err, sizeof(err)), PTC_ECONFIG);
    char expected[512];
    expand(expected, sizeof(expected), "@/t.yaml:3: admin.token_file: cannot read \"@/nope.token\": No such file or directory");
    assert_string_equal(err, expected);
    assert_int_equal(cfg.admin.address->port, 1);
    assert_string_equal(cfg.admin.token, "x");
    ptc_config_dispose(&cfg);
}

/* ---- metrics, access log ---- */

static void test_metrics_access_log(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[512];

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(cfg.metrics.max_methods, 1000);
    assert_null(cfg.access_log.path);
    assert_int_equal(cfg.access_log.buffer_size, 256 * 1024);

    assert_int_equal(load_in_dir(&cfg, "metrics: {max_methods: 0}\naccess_log: {path: logs/access.log}\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.metrics.max_methods, 0);
    assert_path(cfg.access_log.path, "logs/access.log"); /* relative to the file, like pid_file */
    assert_string_equal(cfg.access_log.format, "json");
    /* "-" is stderr, never a file name; a template; a buffer size */
    assert_int_equal(load_in_dir(&cfg, "access_log: {path: \"-\", format: \"%PATH% %GRPC_STATUS% %REQ(origin)%\", buffer: 1MiB}\n",
                                 err, sizeof(err)), 0);
    assert_string_equal(cfg.access_log.path, "-");
    assert_string_equal(cfg.access_log.format, "%PATH% %GRPC_STATUS% %REQ(origin)%");
    assert_int_equal(cfg.access_log.buffer_size, 1 << 20);
    /* a file without the section keeps it; ~ turns it off */
    assert_int_equal(load(&cfg, "workers: 2\n", err, sizeof(err)), 0);
    assert_string_equal(cfg.access_log.path, "-");
    assert_int_equal(load(&cfg, "access_log: ~\n", err, sizeof(err)), 0);
    assert_null(cfg.access_log.path);
    assert_null(cfg.access_log.format);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    ptc_config_dispose(&cfg);
}

static const tls_error_case_t access_log_error_cases[] = {
    {"access_log: {format: json}\n", "@/t.yaml:1: access_log: path: missing (a file name, or \"-\" for stderr)"},
    {"access_log: {}\n", "@/t.yaml:1: access_log: path: missing (a file name, or \"-\" for stderr)"},
    {"access_log: a.log\n", "@/t.yaml:1: access_log: expected a mapping, got a string"},
    {"access_log:\n  path: a.log\n  format: \"%DURATION%\"\n", "@/t.yaml:3: access_log.format: unknown variable %DURATION%"},
    {"access_log:\n  path: a.log\n  format: \"50%\"\n",
     "@/t.yaml:3: access_log.format: unterminated variable at offset 2 (write %% for a literal %)"},
    {"access_log:\n  path: \"\"\n", "@/t.yaml:2: access_log.path: must not be empty"},
    {"access_log:\n  path: a.log\n  buffer: 1KiB\n", "@/t.yaml:3: access_log.buffer: must be between 16384 and 1073741824 bytes"},
    {"access_log:\n  path: a.log\n  fromat: json\n", "@/t.yaml:3: access_log.fromat: unknown key"},
    {"metrics: {max_methods: 65537}\n", "@/t.yaml:1: metrics.max_methods: must be between 0 and 65536"},
    {"metrics: {max_methods: -1}\n", "@/t.yaml:1: metrics.max_methods: invalid integer \"-1\""},
    /* the log variables are for access logs only */
    {"headers: {request: [{set: x-d, value: \"%DURATION_MS%\"}]}\n",
     "@/t.yaml:1: headers.request[0].value: %DURATION_MS% is for access logs only"},
};

static void test_access_log_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(access_log_error_cases) / sizeof(access_log_error_cases[0]); i++) {
        ptc_config_t cfg;
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        assert_load_error(&cfg, i, access_log_error_cases[i].yaml, access_log_error_cases[i].message);
        assert_is_default(&cfg);
        assert_null(cfg.access_log.path);
        ptc_config_dispose(&cfg);
    }
}

static const tls_error_case_t admin_error_cases[] = {
    {"admin:\n  address: h:1\n  token_file: empty.token\n", "@/t.yaml:3: admin.token_file: \"@/empty.token\" is empty"},
    {"admin:\n  token_file: two-lines.token\n",
     "@/t.yaml:2: admin.token_file: \"@/two-lines.token\" must be one line without control characters"},
    {"admin:\n  token_file: redacted.token\n",
     "@/t.yaml:2: admin.token_file: \"@/redacted.token\" is the redaction placeholder <redacted>, not a token"},
    {"admin:\n  token_file: big.token\n", "@/t.yaml:2: admin.token_file: \"@/big.token\" is larger than 4096 bytes"},
    {"admin:\n  token_file: .\n", "@/t.yaml:2: admin.token_file: cannot read \"@/.\": Is a directory"},
    {"admin:\n  token_file: \"\"\n", "@/t.yaml:2: admin.token_file: must not be empty"},
    {"admin:\n  token: \"<redacted>\"\n", "@/t.yaml:2: admin.token: is the redaction placeholder <redacted>, not a token"},
    {"admin:\n  token: \"\"\n", "@/t.yaml:2: admin.token: is empty"},
    {"admin:\n  token: \"a\\tb\"\n", "@/t.yaml:2: admin.token: must be one line without control characters"},
    {"admin:\n  token: [a]\n", "@/t.yaml:2: admin.token: expected a token, got a sequence"},
    {"admin:\n  token_file: ok.token\n  token: x\n", "@/t.yaml:3: admin.token: give token or token_file, not both"},
    {"admin:\n  address: h\n", "@/t.yaml:2: admin.address: invalid address \"h\": missing :PORT"},
    {"admin:\n  address: 127.0.0.1:8080\n", "@/t.yaml:2: admin.address: same address as listeners[0]"},
    {"listeners: [h:1, h:2]\nadmin:\n  address: h:2\n", "@/t.yaml:3: admin.address: same address as listeners[1]"},
    {"admin:\n  adress: h:1\n", "@/t.yaml:2: admin.adress: unknown key"},
    {"admin: h:1\n", "@/t.yaml:1: admin: expected a mapping, got a string"},
    {"watch: yes\n", "@/t.yaml:1: watch: invalid boolean \"yes\" (expected true or false)"},
    {"watch:\n", "@/t.yaml:1: watch: expected a boolean, got null"},
    {"pid_file: [a]\n", "@/t.yaml:1: pid_file: expected a file name, got a sequence"},
    {"pid_file: \"\"\n", "@/t.yaml:1: pid_file: must not be empty"},
};

static void test_admin_errors(void **state)
{
    (void)state;
    char big[4098];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    write_file("empty.token", " \n\t\n");
    write_file("two-lines.token", "abc\ndef\n");
    write_file("redacted.token", "<redacted>\n");
    write_file("big.token", big);
    write_file("ok.token", "ok");
    for (size_t i = 0; i < sizeof(admin_error_cases) / sizeof(admin_error_cases[0]); i++) {
        ptc_config_t cfg;
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        assert_load_error(&cfg, i, admin_error_cases[i].yaml, admin_error_cases[i].message);
        assert_is_default(&cfg);
        assert_null(cfg.admin.address);
        assert_null(cfg.admin.token);
        ptc_config_dispose(&cfg);
    }
    /* 4096 bytes is still fine */
    big[4096] = '\0';
    write_file("big.token", big);
    ptc_config_t cfg;
    char err[512];
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load_in_dir(&cfg, "admin:\n  token_file: big.token\n", err, sizeof(err)), 0);
    assert_int_equal(strlen(cfg.admin.token), 4096);
    ptc_config_dispose(&cfg);
}

static void test_set_admin_address(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256], host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, 9901};

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(ptc_config_add_allow_origin(&cfg, "https://a.test", err, sizeof(err)), 0);
    assert_int_equal(load(&cfg, "admin: {token: t0k}\n", err, sizeof(err)), 0);
    assert_int_equal(ptc_config_set_admin_address(&cfg, &hp), 0);
    assert_non_null(cfg.admin.address);
    assert_true(cfg.admin.address->host != host); /* copied */
    assert_string_equal(cfg.admin.address->host, "127.0.0.1");
    assert_int_equal(cfg.admin.address->port, 9901);
    assert_string_equal(cfg.admin.token, "t0k"); /* the token is left alone */
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    /* replacing it, and the clash with a listener that validation reports */
    hp.port = 8080;
    assert_int_equal(ptc_config_set_admin_address(&cfg, &hp), 0);
    assert_int_equal(cfg.admin.address->port, 8080);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "t.yaml: admin.address: same address as listeners[0]");
    cfg.admin.address->port = 0;
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);
    assert_string_equal(err, "t.yaml: admin.address: invalid address");

    /* NULL removes it */
    assert_int_equal(ptc_config_set_admin_address(&cfg, NULL), 0);
    assert_null(cfg.admin.address);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    ptc_config_dispose(&cfg);
}

/* ptc_config_load_string_in: relative names against base_dir, name only in messages, base_dir recorded. */
static void test_load_string_in(void **state)
{
    (void)state;
    static const char yaml[] = "pid_file: p.pid\n"
                               "admin: {token_file: admin.token}\n"
                               "listeners:\n"
                               "  - address: h:1\n"
                               "    tls: {cert: a.pem, key: a.key}\n";
    ptc_config_t cfg;
    char err[512], dir[128], expected[256];

    write_file("admin.token", "tok\n");
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_string_equal(cfg.base_dir, "");

    /* with and without the trailing slash */
    for (int slash = 0; slash < 2; slash++) {
        snprintf(dir, sizeof(dir), "%s%s", tls_dir, slash ? "/" : "");
        assert_int_equal(ptc_config_load_string_in(&cfg, "PUT /config", dir, yaml, strlen(yaml), err, sizeof(err)), 0);
        assert_string_equal(cfg.source, "PUT /config");
        snprintf(expected, sizeof(expected), "%s/", tls_dir);
        assert_string_equal(cfg.base_dir, expected);
        assert_path(cfg.pid_file, "p.pid");
        assert_path(cfg.admin.token_file, "admin.token");
        assert_string_equal(cfg.admin.token, "tok");
        assert_path(cfg.listeners[0].tls->certs[0].cert, "a.pem");
        assert_path(cfg.listeners[0].tls->certs[0].key, "a.key");
    }

    /* messages name `name`; files are looked for in base_dir, not name's directory */
    assert_int_equal(ptc_config_load_string_in(&cfg, "/elsewhere/x.yaml", tls_dir, "pid_file: [x]\n", 14, err, sizeof(err)),
                     PTC_ECONFIG);
    assert_string_equal(err, "/elsewhere/x.yaml:1: pid_file: expected a file name, got a sequence");
    assert_int_equal(ptc_config_load_string_in(&cfg, "/elsewhere/x.yaml", tls_dir, yaml, strlen(yaml), err, sizeof(err)), 0);
    assert_path(cfg.pid_file, "p.pid");

    /* NULL and "": the working directory */
    assert_int_equal(ptc_config_load_string_in(&cfg, "PUT /config", NULL, "pid_file: p.pid\n", 16, err, sizeof(err)), 0);
    assert_string_equal(cfg.pid_file, "p.pid");
    assert_string_equal(cfg.base_dir, "");
    assert_int_equal(ptc_config_load_string_in(&cfg, "PUT /config", "", "pid_file: q.pid\n", 16, err, sizeof(err)), 0);
    assert_string_equal(cfg.pid_file, "q.pid");
    assert_string_equal(cfg.base_dir, "");
    assert_int_equal(ptc_config_load_string_in(&cfg, "PUT /config", "rel/dir", "pid_file: q.pid\n", 16, err, sizeof(err)), 0);
    assert_string_equal(cfg.pid_file, "rel/dir/q.pid");
    assert_string_equal(cfg.base_dir, "rel/dir/");

    /* ptc_config_load_string: the directory of name */
    assert_int_equal(load_in_dir(&cfg, "pid_file: r.pid\n", err, sizeof(err)), 0);
    assert_path(cfg.pid_file, "r.pid");
    snprintf(expected, sizeof(expected), "%s/", tls_dir);
    assert_string_equal(cfg.base_dir, expected);
    assert_int_equal(load(&cfg, "workers: 1\n", err, sizeof(err)), 0);
    assert_string_equal(cfg.base_dir, "");
    assert_path(cfg.pid_file, "r.pid"); /* kept, already resolved */

    /* JSON is YAML */
    static const char json[] = "{\"pid_file\": \"j.pid\", \"watch\": false, \"limits\": {\"max_headers\": 7}}";
    assert_int_equal(ptc_config_load_string_in(&cfg, "PUT /config", tls_dir, json, strlen(json), err, sizeof(err)), 0);
    assert_path(cfg.pid_file, "j.pid");
    assert_false(cfg.watch);
    assert_int_equal(cfg.limits.max_headers, 7);
    ptc_config_dispose(&cfg);
}

#ifdef PTC_TEST_FAILMALLOC
static size_t loaded_routes; /* what failmalloc_run expects of a config the first load made */

static void has_loaded_routes(const ptc_config_t *cfg)
{
    assert_int_equal(cfg->num_routes, loaded_routes);
}

/* Runs init + load (+ a second load over the result) failing the i-th allocation, for every i. */
static void failmalloc_run(const char *yaml, int expected, size_t num_routes)
{
    loaded_routes = num_routes;
    failmalloc_load_run(load, yaml, NULL, expected, assert_is_default, has_loaded_routes);
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
    failmalloc_run(CORS_EXAMPLE, 0, 3);
    char cors_bad[sizeof(CORS_EXAMPLE) + 64];
    snprintf(cors_bad, sizeof(cors_bad), "%stimeouts_typo: 1\n", CORS_EXAMPLE);
    failmalloc_run(cors_bad, PTC_ECONFIG, 1);
    failmalloc_run("cors:\n  allow_origins: [\"~https://(x\"]\n", PTC_ECONFIG, 1);

    /* --tls-cert: a failure leaves the listeners as they were */
    for (long i = 0;; i++) {
        ptc_config_t cfg;
        char host[] = "h";
        ptc_hostport_t hps[2] = {{host, 1}, {host, 2}};
        long live = failmalloc_live;
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        assert_int_equal(ptc_config_set_listeners(&cfg, hps, 2), 0);
        failmalloc_countdown = i;
        int ret = ptc_config_set_listener_cert(&cfg, "c.pem", "c.key");
        if (ret == 0)
            ret = ptc_config_set_listener_cert(&cfg, "d.pem", "d.key");
        int injected = failmalloc_countdown < 0;
        failmalloc_countdown = -1;
        if (ret == 0) {
            assert_false(injected);
            assert_string_equal(cfg.listeners[1].tls->certs[0].key, "d.key");
        } else {
            assert_true(injected);
            assert_int_equal(ret, PTC_ENOMEM);
            for (size_t j = 0; j < 2; j++)
                assert_true(cfg.listeners[j].tls == NULL || strcmp(cfg.listeners[j].tls->certs[0].cert, "c.pem") == 0);
        }
        ptc_config_dispose(&cfg);
        assert_int_equal(failmalloc_live, live);
        if (!injected)
            break;
    }

    /* --allow-origin: a failure leaves the policy as it was */
    for (long i = 0;; i++) {
        ptc_config_t cfg;
        char err[256];
        long live = failmalloc_live;
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        failmalloc_countdown = i;
        int ret = ptc_config_add_allow_origin(&cfg, "https://a.test", err, sizeof(err));
        size_t before = cfg.cors.num_origins;
        if (ret == 0)
            ret = ptc_config_add_allow_origin(&cfg, "~https://[a-z]+\\.test", err, sizeof(err));
        int injected = failmalloc_countdown < 0;
        failmalloc_countdown = -1;
        if (ret == 0) {
            assert_true(!injected || failmalloc_failed_in_libpcre2()); /* JIT: the interpreter takes over */
            assert_int_equal(cfg.cors.num_origins, 2);
            assert_true(allowed(&cfg.cors, "https://b.test"));
        } else {
            assert_true(injected);
            assert_int_equal(ret, PTC_ENOMEM);
            assert_string_equal(err, "out of memory");
            assert_int_equal(cfg.cors.num_origins, before);
        }
        ptc_config_dispose(&cfg);
        assert_int_equal(failmalloc_live, live);
        if (!injected)
            break;
    }
#else
    skip();
#endif
}

/* The admin settings, pid_file and base_dir: every allocation of the load (token read from a file) and of
 * ptc_config_set_admin_address fails once; the config stays as it was. */
static void test_allocation_failures_admin(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    char yaml[512], path[256];
    snprintf(path, sizeof(path), "%s/admin.token", tls_dir);
    write_file("admin.token", "tok\n");
    snprintf(yaml, sizeof(yaml), "admin:\n  address: h:9\n  token_file: %s\npid_file: p.pid\nwatch: false\n", path);
    failmalloc_run(yaml, 0, 1);
    failmalloc_run("admin: {token: x}\npid_file: p.pid\nworkers: bad\n", PTC_ECONFIG, 1);

    for (long i = 0;; i++) {
        ptc_config_t cfg;
        char host[] = "h";
        ptc_hostport_t hp = {host, 9};
        long live = failmalloc_live;
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        failmalloc_countdown = i;
        int ret = ptc_config_set_admin_address(&cfg, &hp);
        if (ret == 0) {
            hp.port = 10;
            ret = ptc_config_set_admin_address(&cfg, &hp);
        }
        int injected = failmalloc_countdown < 0;
        failmalloc_countdown = -1;
        if (ret == 0) {
            assert_false(injected);
            assert_int_equal(cfg.admin.address->port, 10);
        } else {
            assert_true(injected);
            assert_int_equal(ret, PTC_ENOMEM);
            assert_true(cfg.admin.address == NULL || cfg.admin.address->port == 9);
        }
        ptc_config_dispose(&cfg);
        assert_int_equal(failmalloc_live, live);
        if (!injected)
            break;
    }
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
        cmocka_unit_test(test_cors_example),
        cmocka_unit_test(test_cors_minimal_and_empty),
        cmocka_unit_test(test_cors_partial_overrides),
        cmocka_unit_test(test_cors_dispose_after_failure),
        cmocka_unit_test(test_add_allow_origin),
        cmocka_unit_test(test_compression),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_size_parse),
        cmocka_unit_test(test_hostport_parse),
        cmocka_unit_test(test_route_order_and_match),
        cmocka_unit_test(test_set_listeners_and_endpoints),
        cmocka_unit_test(test_validate),
        cmocka_unit_test_setup_teardown(test_tls_example, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_errors, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_set_listener_cert, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_admin_pid_watch, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_admin_errors, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_access_log, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_access_log_errors, tls_setup, tls_teardown),
        cmocka_unit_test(test_set_admin_address),
        cmocka_unit_test_setup_teardown(test_load_string_in, tls_setup, tls_teardown),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test_setup_teardown(test_allocation_failures_admin, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
