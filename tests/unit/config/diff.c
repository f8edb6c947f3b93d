/* Unit tests for src/config/diff.c: the equality functions and the one-line summary of a reload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/config.h"

#include "tls_files.h"

/* A config touching every section; the cases below edit one thing each. '@' is not used: relative file
 * names resolve against tls_dir (load_in_dir). */
static const char BASE[] = "workers: 2\n"
                           "log_level: info\n"
                           "health_path: /healthz\n"
                           "watch: true\n"
                           "pid_file: p.pid\n"
                           "admin:\n"
                           "  address: 127.0.0.1:9901\n"
                           "  token: s3cret\n"
                           "listeners:\n"
                           "  - address: 127.0.0.1:8080\n"
                           "  - address: 127.0.0.1:8443\n"
                           "    tls:\n"
                           "      cert: a.pem\n"
                           "      key: a.key\n"
                           "      client_auth: optional\n"
                           "      client_ca: a.pem\n"
                           "upstreams:\n"
                           "  - name: echo\n"
                           "    endpoints: [127.0.0.1:50051, \"[::1]:50052\"]\n"
                           "    authority: echo.internal\n"
                           "    tls: {ca: a.pem, server_name: echo.test}\n"
                           "  - name: old\n"
                           "    endpoints: [old.local:1]\n"
                           "routes:\n"
                           "  - prefix: /portico.test.Echo/\n"
                           "    upstream: echo\n"
                           "    cors: {allow_origins: [\"https://route.example\"]}\n"
                           "    headers: {response: [{remove: x-r}]}\n"
                           "    jwt: {providers: [legacy]}\n"
                           "  - path: /a.B/C\n"
                           "    upstream: old\n"
                           "  - prefix: /\n"
                           "    upstream: echo\n"
                           "limits: {max_header_size: 16KiB}\n"
                           "timeouts: {idle: 60s}\n"
                           "compression: {gzip: false}\n"
                           "cors:\n"
                           "  allow_origins: [\"https://a.example\", \"~^https://[a-z]+\\\\.example\\\\.org$\"]\n"
                           "  expose_headers: [x-a]\n"
                           "request_id: {header: x-request-id, max_length: 128}\n"
                           "trace: {sampled: false}\n"
                           "headers:\n"
                           "  request: [{set: x-h, value: \"1\"}]\n"
                           "jwt:\n"
                           "  providers:\n"
                           "    - {name: main, jwks_file: keys.json}\n"
                           "    - {name: legacy, jwks_url: https://legacy.example/jwks}\n"
                           "  default: {providers: [main]}\n";

/* BASE with up to two replacements (find must occur exactly once), and the summary of BASE -> that. */
typedef struct {
    const char *find1, *replace1, *find2, *replace2;
    const char *summary; /* '@' stands for tls_dir */
} diff_case_t;

static const diff_case_t cases[] = {
    /* listeners */
    {"127.0.0.1:8080", "127.0.0.1:9090", NULL, NULL, "listeners: +127.0.0.1:9090, -127.0.0.1:8080"},
    {"      client_auth: optional\n      client_ca: a.pem\n", "", NULL, NULL, "listeners: 127.0.0.1:8443 tls changed"},
    {"    tls:\n      cert: a.pem\n      key: a.key\n      client_auth: optional\n      client_ca: a.pem\n", "", NULL, NULL,
     "listeners: 127.0.0.1:8443 tls off"},
    {"  - address: 127.0.0.1:8080\n", "  - address: 127.0.0.1:8080\n    tls: {cert: a.pem, key: a.key}\n", NULL, NULL,
     "listeners: 127.0.0.1:8080 tls on"},
    {"  - address: 127.0.0.1:8080\n", "", "upstreams:\n", "  - address: 127.0.0.1:8080\nupstreams:\n", "listeners: reordered"},
    {"  - address: 127.0.0.1:8080\n", "  - address: \"[::1]:8080\"\n  - address: 127.0.0.1:8081\n", NULL, NULL,
     "listeners: +[::1]:8080, +127.0.0.1:8081, -127.0.0.1:8080"},
    /* upstreams */
    {"127.0.0.1:50051,", "127.0.0.1:50053,", NULL, NULL, "upstreams: echo endpoints +127.0.0.1:50053 -127.0.0.1:50051"},
    {"[127.0.0.1:50051, \"[::1]:50052\"]", "[\"[::1]:50052\", 127.0.0.1:50051]", NULL, NULL, "upstreams: echo endpoints reordered"},
    {"authority: echo.internal", "authority: echo2.internal", NULL, NULL,
     "upstreams: echo authority echo.internal -> echo2.internal"},
    {"    authority: echo.internal\n", "", NULL, NULL, "upstreams: echo authority echo.internal -> none"},
    {"    authority: echo.internal\n", "    connect_timeout: 1500ms\n    authority: echo.internal\n", NULL, NULL,
     "upstreams: echo connect_timeout 3s -> 1500ms"},
    {"    endpoints: [old.local:1]\n", "    endpoints: [old.local:1]\n    max_connections: 8\n    max_pending: 0\n", NULL, NULL,
     "upstreams: old max_connections 4 -> 8, old max_pending 1024 -> 0"},
    {"    endpoints: [old.local:1]\n", "    endpoints: [old.local:1]\n    backoff: {initial: 250ms, max: 1m}\n", NULL, NULL,
     "upstreams: old backoff.initial 100ms -> 250ms, old backoff.max 5s -> 1m"},
    {"    endpoints: [old.local:1]\n", "    endpoints: [old.local:1]\n    balancing: least_request\n    dns_refresh: 5s\n", NULL,
     NULL, "upstreams: old balancing round_robin -> least_request, old dns_refresh 30s -> 5s"},
    {"    endpoints: [old.local:1]\n", "    endpoints: [old.local:1]\n    health_check: true\n    outlier: {}\n", NULL, NULL,
     "upstreams: old +health_check, old +outlier"},
    {"server_name: echo.test", "server_name: echo2.test", NULL, NULL, "upstreams: echo tls changed"},
    {"    tls: {ca: a.pem, server_name: echo.test}\n", "", NULL, NULL, "upstreams: echo tls off"},
    {"    endpoints: [old.local:1]\n", "    endpoints: [old.local:1]\n    tls: {}\n", NULL, NULL, "upstreams: old tls on"},
    {"name: old\n", "name: older\n", "upstream: old\n", "upstream: older\n",
     "upstreams: +older, -old; routes: path /a.B/C old -> older"},
    {"  - name: old\n    endpoints: [old.local:1]\n", "", "upstream: old\n", "upstream: echo\n",
     "upstreams: -old; routes: path /a.B/C old -> echo"},
    {"upstreams:\n", "upstreams:\n  - name: old\n    endpoints: [old.local:1]\n",
     "  - name: old\n    endpoints: [old.local:1]\nroutes", "routes", "upstreams: reordered"},
    /* routes */
    {"    upstream: old\n", "    upstream: echo\n", NULL, NULL, "routes: path /a.B/C old -> echo"},
    {"limits:", "  - prefix: /x/\n    upstream: old\nlimits:", NULL, NULL, "routes: +/x/ -> old"},
    {"  - path: /a.B/C\n    upstream: old\n", "", NULL, NULL, "routes: -path /a.B/C"},
    {"  - path: /a.B/C\n", "  - prefix: /a.B/C\n", NULL, NULL, "routes: +/a.B/C -> old, -path /a.B/C"},
    {"https://route.example", "https://route2.example", NULL, NULL, "routes: /portico.test.Echo/ cors changed"},
    {"    cors: {allow_origins: [\"https://route.example\"]}\n", "", NULL, NULL, "routes: /portico.test.Echo/ cors removed"},
    {"    upstream: old\n", "    upstream: old\n    cors: {}\n", NULL, NULL, "routes: path /a.B/C cors added"},
    {"  - prefix: /\n    upstream: echo\n",
     "  - prefix: /\n    upstream: echo\n  - prefix: /x/\n    upstream: old\n"
     "  - prefix: /y/\n    upstream: old\n",
     NULL, NULL, "routes: +/x/ -> old, +/y/ -> old"},
    /* cors */
    {"\"https://a.example\",", "\"https://b.example\",", NULL, NULL, "cors: +origin https://b.example, -origin https://a.example"},
    {"[\"https://a.example\", \"~^https://[a-z]+\\\\.example\\\\.org$\"]",
     "[\"~^https://[a-z]+\\\\.example\\\\.org$\", \"https://a.example\"]", NULL, NULL, "cors: origins reordered"},
    {"\"https://a.example\",", "\"https://a.example\", \"https://*.example.com\",", NULL, NULL,
     "cors: +origin https://*.example.com"},
    {"  expose_headers: [x-a]\n", "  expose_headers: [x-a]\n  allow_credentials: true\n  allow_private_network: true\n", NULL, NULL,
     "cors: allow_credentials false -> true, allow_private_network false -> true"},
    {"  expose_headers: [x-a]\n", "  expose_headers: [x-a]\n  allow_methods: [POST, OPTIONS]\n", NULL, NULL,
     "cors: allow_methods changed"},
    {"  expose_headers: [x-a]\n", "  expose_headers: [x-a]\n  allow_headers: [authorization]\n", NULL, NULL,
     "cors: allow_headers changed"},
    {"[x-a]", "[x-b]", NULL, NULL, "cors: expose_headers changed"},
    {"  expose_headers: [x-a]\n", "  expose_headers: [x-a]\n  max_age: 0\n", NULL, NULL, "cors: max_age 10m -> 0s"},
    /* scalar sections */
    {"max_header_size: 16KiB", "max_header_size: 65536", NULL, NULL, "limits.max_header_size 16KiB -> 64KiB"},
    {"limits: {max_header_size: 16KiB}", "limits: {max_headers: 7, max_connections: 1}", NULL, NULL,
     "limits.max_headers 100 -> 7; limits.max_connections 10000 -> 1"},
    {"idle: 60s", "idle: 2m", NULL, NULL, "timeouts.idle 1m -> 2m"},
    {"timeouts: {idle: 60s}", "timeouts: {drain: 0, max_grpc_timeout: 1.5s}", NULL, NULL,
     "timeouts.max_grpc_timeout 0s -> 1500ms; timeouts.drain 10s -> 0s"},
    {"gzip: false", "gzip: true, min_size: 0, level: 9", NULL, NULL,
     "compression.gzip false -> true; compression.min_size 1KiB -> 0; compression.level 5 -> 9"},
    /* top level */
    {"health_path: /healthz", "health_path: /health", NULL, NULL, "health_path /healthz -> /health"},
    {"workers: 2", "workers: 4", NULL, NULL, "workers 2 -> 4"},
    {"log_level: info", "log_level: debug", NULL, NULL, "log_level info -> debug"},
    {"watch: true", "watch: false", NULL, NULL, "watch true -> false"},
    {"pid_file: p.pid", "pid_file: q.pid", NULL, NULL, "pid_file @/p.pid -> @/q.pid"},
    {"pid_file: p.pid", "pid_file: ~", NULL, NULL, "pid_file @/p.pid -> none"},
    {"pid_file: p.pid", "pid_file: p.pid\nmetrics: {max_methods: 5}", NULL, NULL, "metrics.max_methods 1000 -> 5"},
    {"pid_file: p.pid", "pid_file: p.pid\naccess_log: {path: \"-\"}", NULL, NULL,
     "access_log.path none -> -; access_log.format none -> json"},
    {"pid_file: p.pid", "pid_file: p.pid\naccess_log: {path: a.log, format: \"%PATH%\", buffer: 1MiB}", NULL, NULL,
     "access_log.path none -> @/a.log; access_log.format none -> %PATH%; access_log.buffer 256KiB -> 1MiB"},
    {"address: 127.0.0.1:9901", "address: \"[::1]:9901\"", NULL, NULL, "admin.address 127.0.0.1:9901 -> [::1]:9901"},
    {"  address: 127.0.0.1:9901\n", "", NULL, NULL, "admin.address 127.0.0.1:9901 -> none"},
    {"token: s3cret", "token: other", NULL, NULL, "admin.token changed"},
    {"token: s3cret", "token_file: same.token", NULL, NULL, "admin.token_file none -> @/same.token"},
    {"token: s3cret", "token_file: other.token", NULL, NULL, "admin.token_file none -> @/other.token; admin.token changed"},
    {"  token: s3cret\n", "", NULL, NULL, "admin.token removed"},
    /* request ids, trace context, header rules */
    {"request_id: {header: x-request-id, max_length: 128}", "request_id: false", NULL, NULL, "request_id off"},
    {"request_id: {header: x-request-id, max_length: 128}", "request_id: {header: X-Req, max_length: 64, trust_incoming: false}",
     NULL, NULL,
     "request_id.header x-request-id -> x-req; request_id.max_length 128 -> 64; request_id.trust_incoming true -> false"},
    {"trace: {sampled: false}", "trace: {sampled: true}", NULL, NULL, "trace.sampled false -> true"},
    {"trace: {sampled: false}", "trace: false", NULL, NULL, "trace off"},
    {"value: \"1\"", "value: \"2\"", NULL, NULL, "headers: changed"},
    {"headers:\n  request: [{set: x-h, value: \"1\"}]\n", "headers: {}\n", NULL, NULL, "headers: changed"},
    {"    headers: {response: [{remove: x-r}]}\n", "", NULL, NULL, "routes: /portico.test.Echo/ headers changed"},
    {"  - prefix: /\n    upstream: echo\n", "  - prefix: /\n    upstream: echo\n    native_filters: false\n", NULL, NULL,
     "routes: / native_filters true -> false"},
    {"  - prefix: /\n    upstream: echo\n", "  - prefix: /\n    upstream: echo\n    get_cache_control: max-age=60\n", NULL, NULL,
     "routes: / get_cache_control none -> max-age=60"},
    {"  - path: /a.B/C\n    upstream: old\n", "  - path: /a.B/C\n    upstream: old\n    get_cache_control: \"no-store\"\n", NULL, NULL,
     "routes: path /a.B/C get_cache_control none -> no-store"},
    /* jwt */
    {"    jwt: {providers: [legacy]}\n", "    jwt: {providers: [main]}\n", NULL, NULL, "routes: /portico.test.Echo/ jwt changed"},
    {"    jwt: {providers: [legacy]}\n", "    jwt: {providers: [legacy], require_claims: {a: b}}\n", NULL, NULL,
     "routes: /portico.test.Echo/ jwt changed"},
    {"  - path: /a.B/C\n    upstream: old\n", "  - path: /a.B/C\n    upstream: old\n    jwt: disabled\n", NULL, NULL,
     "routes: path /a.B/C jwt changed"},
    {"jwks_url: https://legacy.example/jwks}", "jwks_url: https://legacy.example/jwks2}\n    - {name: new, jwks_file: keys.json}",
     NULL, NULL, "jwt: +provider new, legacy changed"},
    {"    - {name: main, jwks_file: keys.json}\n", "", "  default: {providers: [main]}\n", "  default: {providers: [legacy]}\n",
     "jwt: -provider main, default changed"},
    {"    - {name: main, jwks_file: keys.json}\n", "",
     "  default:", "    - {name: main, jwks_file: keys.json}\n  default:", "jwt: providers reordered"},
    {"  default: {providers: [main]}\n", "  default: {providers: [main], optional: true}\n", NULL, NULL, "jwt: default changed"},
    {"  default: {providers: [main]}\n", "", NULL, NULL, "jwt: default changed"},
    {"name: main, jwks_file: keys.json}", "name: main, jwks_file: keys.json, from: {cookie: c}}", "trace: {sampled: false}",
     "trace: {sampled: true}", "trace.sampled false -> true; jwt: main changed"},
    /* several at once, in a fixed order whatever the order in the file */
    {"log_level: info", "log_level: debug", "https://a.example", "https://b.example",
     "cors: +origin https://b.example, -origin https://a.example; log_level info -> debug"},
};

/* Loads BASE with the case's replacements applied. */
static void load_case(ptc_config_t *cfg, const diff_case_t *c)
{
    char yaml[4096], err[512];
    const char *finds[] = {c->find1, c->find2}, *replaces[] = {c->replace1, c->replace2};

    snprintf(yaml, sizeof(yaml), "%s", BASE);
    for (size_t i = 0; i < 2 && finds[i] != NULL; i++) {
        char *at = strstr(yaml, finds[i]);
        if (at == NULL || strstr(at + 1, finds[i]) != NULL)
            print_error("\"%s\" is not in BASE exactly once\n", finds[i]);
        assert_non_null(at);
        assert_null(strstr(at + 1, finds[i]));
        char rest[4096];
        snprintf(rest, sizeof(rest), "%s", at + strlen(finds[i]));
        snprintf(at, sizeof(yaml) - (size_t)(at - yaml), "%s%s", replaces[i], rest);
    }
    write_file("keys.json", "{\"keys\": []}\n");
    assert_int_equal(ptc_config_init_default(cfg), 0);
    int ret = load_in_dir(cfg, yaml, err, sizeof(err));
    if (ret != 0)
        print_error("%s\n%s\n", yaml, err);
    assert_int_equal(ret, 0);
}

static int load(ptc_config_t *cfg, const char *yaml, char *err, size_t errlen)
{
    return ptc_config_load_string(cfg, "t.yaml", yaml, strlen(yaml), err, errlen);
}

static void load_base(ptc_config_t *cfg)
{
    static const diff_case_t none = {NULL, NULL, NULL, NULL, NULL};
    load_case(cfg, &none);
}

static void test_hostport_eq(void **state)
{
    (void)state;
    char h1[] = "::1", h2[] = "::1", h3[] = "::2";
    ptc_hostport_t a = {h1, 80}, b = {h2, 80}, c = {h3, 80}, d = {h1, 81}, e = {NULL, 80}, f = {NULL, 80};

    assert_true(ptc_hostport_eq(&a, &b));
    assert_true(ptc_hostport_eq(&a, &a));
    assert_false(ptc_hostport_eq(&a, &c));
    assert_false(ptc_hostport_eq(&a, &d));
    assert_true(ptc_hostport_eq(NULL, NULL));
    assert_false(ptc_hostport_eq(&a, NULL));
    assert_false(ptc_hostport_eq(NULL, &a));
    assert_false(ptc_hostport_eq(&a, &e));
    assert_false(ptc_hostport_eq(&e, &a));
    assert_true(ptc_hostport_eq(&e, &f));
}

/* Every case: the configs differ (ptc_config_eq), the summary says how, and nothing is reported in reverse
 * that the forward summary did not see. */
static void test_diff_cases(void **state)
{
    (void)state;
    ptc_config_t base, cfg;
    char buf[1024], expected[512];

    write_file("same.token", "s3cret\n");
    write_file("other.token", "0ther\n");
    load_base(&base);
    assert_true(ptc_config_eq(&base, &base));
    assert_int_equal(ptc_config_diff(&base, &base, buf, sizeof(buf)), strlen("no changes"));
    assert_string_equal(buf, "no changes");

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        load_case(&cfg, &cases[i]);
        expand(expected, sizeof(expected), cases[i].summary);
        size_t n = ptc_config_diff(&base, &cfg, buf, sizeof(buf));
        if (strcmp(buf, expected) != 0)
            print_error("case %zu:\nexpected: %s\ngot:      %s\n", i, expected, buf);
        assert_string_equal(buf, expected);
        assert_int_equal(n, strlen(buf));
        assert_false(ptc_config_eq(&base, &cfg));
        assert_false(ptc_config_eq(&cfg, &base));
        assert_true(ptc_config_eq(&cfg, &cfg));
        ptc_config_diff(&cfg, &base, buf, sizeof(buf));
        assert_string_not_equal(buf, "no changes");
        ptc_config_dispose(&cfg);
    }
    ptc_config_dispose(&base);
}

/* What the file cannot express: a disabled global policy, and changes only source and base_dir see. */
static void test_diff_by_hand(void **state)
{
    (void)state;
    ptc_config_t a, b;
    char buf[256], err[256];

    load_base(&a);
    load_base(&b);
    b.cors.enabled = false;
    assert_false(ptc_config_eq(&a, &b));
    ptc_config_diff(&a, &b, buf, sizeof(buf));
    assert_string_equal(buf, "cors: disabled");
    ptc_config_diff(&b, &a, buf, sizeof(buf));
    assert_string_equal(buf, "cors: enabled");
    b.cors.enabled = true;

    /* the settings of health_check and outlier: compared only while the section is there */
    int old_up = ptc_config_find_upstream(&a, "old");
    assert_true(old_up >= 0);
    ptc_upstream_config_t *ua = &a.upstreams[old_up], *ub = &b.upstreams[old_up];
    ub->health_check.interval_ms = 1;
    ub->outlier.ejection_ms = 1;
    assert_true(ptc_config_eq(&a, &b));
    ua->health_check.enabled = ub->health_check.enabled = ua->outlier.enabled = ub->outlier.enabled = true;
    ua->health_check.interval_ms = 1000;
    ub->health_check.interval_ms = 2000;
    ub->health_check.healthy_threshold = 1;
    assert_non_null(ub->health_check.service = strdup("a.B"));
    ua->outlier.ejection_ms = 30000;
    ub->outlier.ejection_ms = 60000;
    assert_false(ptc_config_eq(&a, &b));
    ptc_config_diff(&a, &b, buf, sizeof(buf));
    assert_string_equal(buf, "upstreams: old health_check.service \"\" -> \"a.B\", old health_check.interval 1s -> 2s, "
                             "old health_check.healthy_threshold 2 -> 1, old outlier.ejection 30s -> 1m");
    ub->health_check.enabled = false;
    ptc_config_diff(&a, &b, buf, sizeof(buf));
    assert_string_equal(buf, "upstreams: old -health_check, old outlier.ejection 30s -> 1m");
    ptc_config_dispose(&a);
    ptc_config_dispose(&b);
    load_base(&a);
    load_base(&b);

    /* source and base_dir are not compared */
    assert_int_equal(ptc_config_load_string_in(&b, "PUT /config", "/elsewhere", "workers: 2\n", 11, err, sizeof(err)), 0);
    assert_string_not_equal(a.source, b.source);
    assert_string_not_equal(a.base_dir, b.base_dir);
    assert_true(ptc_config_eq(&a, &b));
    ptc_config_diff(&a, &b, buf, sizeof(buf));
    assert_string_equal(buf, "no changes");

    /* control characters never reach the log line */
    assert_int_equal(load(&b, "cors: {allow_origins: [\"~^https://a\\nb$\"]}\n", err, sizeof(err)), 0);
    ptc_config_diff(&a, &b, buf, sizeof(buf));
    assert_string_equal(buf, "cors: +origin ~^https://a?b$, -origin https://a.example, "
                             "-origin ~^https://[a-z]+\\.example\\.org$, expose_headers changed");
    ptc_config_dispose(&a);
    ptc_config_dispose(&b);
}

/* Whole sections replaced at once, as a reload of a rewritten file does. */
static void test_diff_example(void **state)
{
    (void)state;
    ptc_config_t a, b;
    char buf[1024], err[256];
    static const char before[] = "listeners: [127.0.0.1:8080, 127.0.0.1:8081]\n"
                                 "upstreams:\n"
                                 "  - {name: echo, endpoints: [127.0.0.1:50051]}\n"
                                 "  - {name: old, endpoints: [127.0.0.1:1]}\n"
                                 "routes:\n"
                                 "  - {prefix: /portico.test.Echo/, upstream: echo}\n"
                                 "  - {prefix: /, upstream: old}\n"
                                 "cors: {allow_origins: [https://a.example]}\n";
    static const char after[] = "log_level: debug\n"
                                "limits: {max_header_size: 64KiB}\n"
                                "listeners: [127.0.0.1:8080, 127.0.0.1:9090]\n"
                                "upstreams:\n"
                                "  - {name: echo, endpoints: [127.0.0.1:50052]}\n"
                                "  - {name: echo2, endpoints: [127.0.0.1:50053]}\n"
                                "  - {name: extra, endpoints: [127.0.0.1:2]}\n"
                                "routes:\n"
                                "  - {prefix: /portico.test.Echo/, upstream: echo2}\n"
                                "  - {prefix: /, upstream: extra}\n"
                                "cors: {allow_origins: [https://b.example]}\n";

    assert_int_equal(ptc_config_init_default(&a), 0);
    assert_int_equal(ptc_config_init_default(&b), 0);
    assert_int_equal(load(&a, before, err, sizeof(err)), 0);
    assert_int_equal(load(&b, after, err, sizeof(err)), 0);
    size_t n = ptc_config_diff(&a, &b, buf, sizeof(buf));
    assert_string_equal(buf, "listeners: +127.0.0.1:9090, -127.0.0.1:8081; "
                             "upstreams: +echo2, +extra, -old, echo endpoints +127.0.0.1:50052 -127.0.0.1:50051; "
                             "routes: /portico.test.Echo/ echo -> echo2, / old -> extra; "
                             "cors: +origin https://b.example, -origin https://a.example; "
                             "limits.max_header_size 16KiB -> 64KiB; log_level info -> debug");
    assert_int_equal(n, strlen(buf));
    ptc_config_dispose(&a);
    ptc_config_dispose(&b);
}

static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        size_t n = *p < 0x80 ? 0 : (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2 : (*p & 0xf8) == 0xf0 ? 3 : 4;
        if (n == 4)
            return false;
        p++;
        for (size_t i = 0; i < n; i++, p++)
            if ((*p & 0xc0) != 0x80)
                return false;
    }
    return true;
}

/* Every buffer size: a prefix of the full line at a character boundary, then "…" when cut. */
static void test_diff_truncation(void **state)
{
    (void)state;
    ptc_config_t a, b;
    char full[1024], err[256];

    assert_int_equal(ptc_config_init_default(&a), 0);
    assert_int_equal(ptc_config_init_default(&b), 0);
    assert_int_equal(load(&b,
                          "cors: {allow_origins: [\"~^https://caf\xc3\xa9\xe2\x82\xac\\\\.example$\", \"https://b.example\"]}\n"
                          "workers: 3\n",
                          err, sizeof(err)),
                     0);
    size_t full_len = ptc_config_diff(&a, &b, full, sizeof(full));
    assert_string_equal(full, "cors: enabled, +origin ~^https://caf\xc3\xa9\xe2\x82\xac\\.example$, +origin https://b.example; "
                              "workers 0 -> 3");
    assert_int_equal(full_len, strlen(full));

    for (size_t len = 0; len <= full_len + 2; len++) {
        char buf[1024];
        memset(buf, 'X', sizeof(buf));
        size_t n = ptc_config_diff(&a, &b, buf, len);
        if (len == 0) {
            assert_int_equal(n, 0);
            assert_int_equal(buf[0], 'X'); /* nothing written */
            continue;
        }
        assert_int_equal(n, strlen(buf));
        assert_true(n < len);
        assert_int_equal(buf[len], 'X'); /* nothing past the buffer */
        assert_true(valid_utf8(buf));
        if (len > full_len) {
            assert_string_equal(buf, full);
        } else if (len >= 4) {
            assert_true(n >= 3 && strcmp(buf + n - 3, "\xe2\x80\xa6") == 0);
            /* cut as late as fits (len - 4 bytes before the ellipsis), moved back to the start of a character */
            size_t k = n - 3;
            assert_memory_equal(buf, full, k);
            assert_true(k <= len - 4);
            assert_true(((unsigned char)full[k] & 0xc0) != 0x80);
            for (size_t j = k + 1; j <= len - 4; j++)
                assert_true(((unsigned char)full[j] & 0xc0) == 0x80);
        } else {
            assert_memory_equal(buf, full, n);
        }
    }
    ptc_config_dispose(&a);
    ptc_config_dispose(&b);
}

/* The pieces the runtime swaps one by one. */
static void test_listener_and_upstream_eq(void **state)
{
    (void)state;
    ptc_config_t base, cfg;

    load_base(&base);
    assert_true(ptc_listener_config_eq(&base.listeners[1], &base.listeners[1]));
    assert_false(ptc_listener_config_eq(&base.listeners[0], &base.listeners[1]));
    assert_true(ptc_upstream_config_eq(&base.upstreams[0], &base.upstreams[0]));
    assert_false(ptc_upstream_config_eq(&base.upstreams[0], &base.upstreams[1]));
    assert_false(ptc_upstream_config_same_transport(&base.upstreams[0], &base.upstreams[1]));

    static const struct {
        diff_case_t edit;
        bool listener1_eq, upstream0_eq, upstream0_transport;
    } edits[] = {
        {{"client_auth: optional", "client_auth: required", NULL, NULL, NULL}, false, true, true},
        {{"      client_auth: optional\n      client_ca: a.pem\n", "      min_version: \"1.3\"\n", NULL, NULL, NULL},
         false,
         true,
         true},
        {{"      key: a.key\n", "      key: a.key\n      certificates: [{cert: a.pem, key: a.key}]\n", NULL, NULL, NULL},
         false,
         true,
         true},
        {{"127.0.0.1:8443", "127.0.0.1:8444", NULL, NULL, NULL}, false, true, true},
        {{"127.0.0.1:50051,", "127.0.0.1:50053,", NULL, NULL, NULL}, true, false, true},
        {{"127.0.0.1:50051,", "127.0.0.1:50051, h:1,", NULL, NULL, NULL}, true, false, true},
        {{"authority: echo.internal", "authority: x", NULL, NULL, NULL}, true, false, false},
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    connect_timeout: 1s\n", NULL, NULL, NULL},
         true,
         false,
         false},
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    max_connections: 1\n", NULL, NULL, NULL},
         true,
         false,
         false},
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    max_pending: 1\n", NULL, NULL, NULL},
         true,
         false,
         false},
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    backoff: {initial: 1s}\n", NULL, NULL, NULL},
         true,
         false,
         false},
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    backoff: {max: 1m}\n", NULL, NULL, NULL},
         true,
         false,
         false},
        /* how calls are spread and endpoints judged is not how the upstream is reached */
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    balancing: least_request\n", NULL, NULL, NULL},
         true,
         false,
         true},
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    health_check: {service: x}\n", NULL, NULL, NULL},
         true,
         false,
         true},
        {{"    authority: echo.internal\n", "    authority: echo.internal\n    outlier: true\n    dns_refresh: 1s\n", NULL, NULL,
          NULL},
         true,
         false,
         true},
        {{"{ca: a.pem, server_name: echo.test}", "{ca: a.pem}", NULL, NULL, NULL}, true, false, false},
        {{"{ca: a.pem, server_name: echo.test}", "{server_name: echo.test}", NULL, NULL, NULL}, true, false, false},
        {{"{ca: a.pem, server_name: echo.test}", "{ca: a.pem, server_name: echo.test, cert: a.pem, key: a.key}", NULL, NULL, NULL},
         true,
         false,
         false},
        {{"{ca: a.pem, server_name: echo.test}", "{insecure_skip_verify: true, server_name: echo.test}", NULL, NULL, NULL},
         true,
         false,
         false},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        load_case(&cfg, &edits[i].edit);
        if (ptc_listener_config_eq(&base.listeners[1], &cfg.listeners[1]) != edits[i].listener1_eq ||
            ptc_upstream_config_eq(&base.upstreams[0], &cfg.upstreams[0]) != edits[i].upstream0_eq ||
            ptc_upstream_config_same_transport(&base.upstreams[0], &cfg.upstreams[0]) != edits[i].upstream0_transport)
            print_error("edit %zu\n", i);
        assert_true(ptc_listener_config_eq(&base.listeners[1], &cfg.listeners[1]) == edits[i].listener1_eq);
        assert_true(ptc_listener_config_eq(&base.listeners[0], &cfg.listeners[0]));
        assert_true(ptc_upstream_config_eq(&base.upstreams[0], &cfg.upstreams[0]) == edits[i].upstream0_eq);
        assert_true(ptc_upstream_config_same_transport(&base.upstreams[0], &cfg.upstreams[0]) == edits[i].upstream0_transport);
        assert_true(ptc_upstream_config_eq(&base.upstreams[1], &cfg.upstreams[1]));
        ptc_config_dispose(&cfg);
    }

    /* a renamed upstream is another transport */
    load_base(&cfg);
    cfg.upstreams[0].name[0] = 'E';
    assert_false(ptc_upstream_config_same_transport(&base.upstreams[0], &cfg.upstreams[0]));
    assert_false(ptc_upstream_config_eq(&base.upstreams[0], &cfg.upstreams[0]));
    ptc_config_dispose(&cfg);
    ptc_config_dispose(&base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostport_eq),
        cmocka_unit_test_setup_teardown(test_diff_cases, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_diff_by_hand, tls_setup, tls_teardown),
        cmocka_unit_test(test_diff_example),
        cmocka_unit_test(test_diff_truncation),
        cmocka_unit_test_setup_teardown(test_listener_and_upstream_eq, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
