/* Unit tests for src/config/emit.c: the YAML and JSON writers, read back by the loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/config.h"

#include "../failmalloc.h"
#include "rich_config.h"

static const char DEFAULT_YAML[] = "workers: 0\n"
                                   "log_level: info\n"
                                   "health_path: /healthz\n"
                                   "watch: true\n"
                                   "listeners:\n"
                                   "  - address: \"127.0.0.1:8080\"\n"
                                   "upstreams:\n"
                                   "  - name: default\n"
                                   "    endpoints:\n"
                                   "      - \"127.0.0.1:50051\"\n"
                                   "    connect_timeout: 3s\n"
                                   "    max_connections: 4\n"
                                   "    max_pending: 1024\n"
                                   "    backoff:\n"
                                   "      initial: 100ms\n"
                                   "      max: 5s\n"
                                   "    balancing: round_robin\n"
                                   "    dns_refresh: 30s\n"
                                   "routes:\n"
                                   "  - prefix: /\n"
                                   "    upstream: default\n"
                                   "    native_filters: true\n"
                                   "limits:\n"
                                   "  max_message_size: 4MiB\n"
                                   "  max_header_size: 16KiB\n"
                                   "  max_headers: 100\n"
                                   "  call_buffer_size: 256KiB\n"
                                   "  stream_window_size: 256KiB\n"
                                   "  max_connections: 10000\n"
                                   "  max_connections_total: 0\n"
                                   "  max_concurrent_streams: 128\n"
                                   "timeouts:\n"
                                   "  max_grpc_timeout: 0s\n"
                                   "  default_grpc_timeout: 0s\n"
                                   "  idle: 1m\n"
                                   "  header_read: 10s\n"
                                   "  drain: 10s\n"
                                   "  drain_delay: 0s\n"
                                   "compression:\n"
                                   "  gzip: false\n"
                                   "  min_size: 1KiB\n"
                                   "  level: 5\n"
                                   "websocket:\n"
                                   "  enabled: true\n"
                                   "  ping_interval: 30s\n"
                                   "metrics:\n"
                                   "  max_methods: 1000\n"
                                   "request_id:\n"
                                   "  enabled: true\n"
                                   "  header: x-request-id\n"
                                   "  max_length: 128\n"
                                   "  trust_incoming: true\n"
                                   "trace:\n"
                                   "  enabled: true\n"
                                   "  sampled: false\n"
                                   "headers: {}\n"
                                   "jwt: {}\n";

static const char DEFAULT_JSON[] = "{\n"
                                   "  \"workers\": 0,\n"
                                   "  \"log_level\": \"info\",\n"
                                   "  \"health_path\": \"/healthz\",\n"
                                   "  \"watch\": true,\n"
                                   "  \"listeners\": [\n"
                                   "    {\n"
                                   "      \"address\": \"127.0.0.1:8080\"\n"
                                   "    }\n"
                                   "  ],\n"
                                   "  \"upstreams\": [\n"
                                   "    {\n"
                                   "      \"name\": \"default\",\n"
                                   "      \"endpoints\": [\n"
                                   "        \"127.0.0.1:50051\"\n"
                                   "      ],\n"
                                   "      \"connect_timeout\": \"3s\",\n"
                                   "      \"max_connections\": 4,\n"
                                   "      \"max_pending\": 1024,\n"
                                   "      \"backoff\": {\n"
                                   "        \"initial\": \"100ms\",\n"
                                   "        \"max\": \"5s\"\n"
                                   "      },\n"
                                   "      \"balancing\": \"round_robin\",\n"
                                   "      \"dns_refresh\": \"30s\"\n"
                                   "    }\n"
                                   "  ],\n"
                                   "  \"routes\": [\n"
                                   "    {\n"
                                   "      \"prefix\": \"/\",\n"
                                   "      \"upstream\": \"default\",\n"
                                   "      \"native_filters\": true\n"
                                   "    }\n"
                                   "  ],\n"
                                   "  \"limits\": {\n"
                                   "    \"max_message_size\": \"4MiB\",\n"
                                   "    \"max_header_size\": \"16KiB\",\n"
                                   "    \"max_headers\": 100,\n"
                                   "    \"call_buffer_size\": \"256KiB\",\n"
                                   "    \"stream_window_size\": \"256KiB\",\n"
                                   "    \"max_connections\": 10000,\n"
                                   "    \"max_connections_total\": 0,\n"
                                   "    \"max_concurrent_streams\": 128\n"
                                   "  },\n"
                                   "  \"timeouts\": {\n"
                                   "    \"max_grpc_timeout\": \"0s\",\n"
                                   "    \"default_grpc_timeout\": \"0s\",\n"
                                   "    \"idle\": \"1m\",\n"
                                   "    \"header_read\": \"10s\",\n"
                                   "    \"drain\": \"10s\",\n"
                                   "    \"drain_delay\": \"0s\"\n"
                                   "  },\n"
                                   "  \"compression\": {\n"
                                   "    \"gzip\": false,\n"
                                   "    \"min_size\": \"1KiB\",\n"
                                   "    \"level\": 5\n"
                                   "  },\n"
                                   "  \"websocket\": {\n"
                                   "    \"enabled\": true,\n"
                                   "    \"ping_interval\": \"30s\"\n"
                                   "  },\n"
                                   "  \"metrics\": {\n"
                                   "    \"max_methods\": 1000\n"
                                   "  },\n"
                                   "  \"request_id\": {\n"
                                   "    \"enabled\": true,\n"
                                   "    \"header\": \"x-request-id\",\n"
                                   "    \"max_length\": 128,\n"
                                   "    \"trust_incoming\": true\n"
                                   "  },\n"
                                   "  \"trace\": {\n"
                                   "    \"enabled\": true,\n"
                                   "    \"sampled\": false\n"
                                   "  },\n"
                                   "  \"headers\": {},\n"
                                   "  \"jwt\": {}\n"
                                   "}\n";

/* ---- a strict JSON checker (RFC 8259), so that "valid JSON" is not taken on the loader's word ---- */

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *json_value(const char *p, int depth);

static const char *json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    for (;;) {
        unsigned char c = (unsigned char)*p++;
        if (c == '"')
            return p;
        if (c < 0x20) /* also the NUL at the end */
            return NULL;
        if (c == '\\') {
            c = (unsigned char)*p++;
            if (c == 'u') {
                for (int i = 0; i < 4; i++, p++)
                    if (strchr("0123456789abcdefABCDEF", *p) == NULL || *p == '\0')
                        return NULL;
            } else if (strchr("\"\\/bfnrt", c) == NULL || c == '\0') {
                return NULL;
            }
        }
    }
}

static const char *json_number(const char *p)
{
    const char *start = p;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else
        while (*p >= '0' && *p <= '9')
            p++;
    if (p == start || p[-1] == '-')
        return NULL;
    if (*p == '.') {
        const char *f = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == f)
            return NULL;
    }
    return p;
}

static const char *json_container(const char *p, char close, int depth)
{
    p = json_ws(p + 1);
    if (*p == close)
        return p + 1;
    for (;;) {
        if (close == '}') {
            if ((p = json_string(p)) == NULL)
                return NULL;
            p = json_ws(p);
            if (*p++ != ':')
                return NULL;
        }
        if ((p = json_value(p, depth + 1)) == NULL)
            return NULL;
        p = json_ws(p);
        if (*p == close)
            return p + 1;
        if (*p++ != ',')
            return NULL;
        p = json_ws(p);
    }
}

static const char *json_value(const char *p, int depth)
{
    if (depth > 32)
        return NULL;
    p = json_ws(p);
    switch (*p) {
    case '{':
        return json_container(p, '}', depth);
    case '[':
        return json_container(p, ']', depth);
    case '"':
        return json_string(p);
    case 't':
        return strncmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return strncmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return strncmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return json_number(p);
    }
}

static bool json_valid(const char *text)
{
    const char *end = json_value(text, 0);
    return end != NULL && *json_ws(end) == '\0';
}

/* ---- helpers ---- */

static char *emit(const ptc_config_t *cfg, ptc_config_format_t fmt, unsigned flags)
{
    char *out = NULL;
    size_t len = 0;
    int ret = ptc_config_emit(cfg, fmt, flags, &out, &len);
    assert_int_equal(ret, 0);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    if (fmt == PTC_CONFIG_JSON && !json_valid(out))
        print_error("not JSON:\n%s\n", out);
    if (fmt == PTC_CONFIG_JSON)
        assert_true(json_valid(out));
    return out;
}

/* Loads text over the defaults as if it came from base_dir; returns the loader's result. */
static int reload(ptc_config_t *cfg, const char *text, const char *base_dir, char *err, size_t errlen)
{
    assert_int_equal(ptc_config_init_default(cfg), 0);
    int ret = ptc_config_load_string_in(cfg, "emitted", base_dir, text, strlen(text), err, errlen);
    if (ret != 0)
        print_error("%s\n---\n%s\n", err, text);
    return ret;
}

/* load(emit(cfg)) == cfg, and emitting that again gives the same text. */
static void assert_round_trip(const ptc_config_t *cfg, ptc_config_format_t fmt)
{
    ptc_config_t back;
    char err[512];
    char *text = emit(cfg, fmt, 0);

    assert_int_equal(reload(&back, text, cfg->base_dir, err, sizeof(err)), 0);
    if (!ptc_config_eq(cfg, &back)) {
        char diff[1024];
        ptc_config_diff(cfg, &back, diff, sizeof(diff));
        print_error("round trip changed: %s\n---\n%s\n", diff, text);
    }
    assert_true(ptc_config_eq(cfg, &back));
    char *again = emit(&back, fmt, 0);
    assert_string_equal(again, text);
    free(again);
    free(text);
    ptc_config_dispose(&back);
}

static void assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL) {
        print_error("not found: \"");
        for (const char *p = needle; *p != '\0'; p++)
            print_error(*p == '\n' ? "\\n" : "%c", *p);
        print_error("\"\n");
    }
    assert_non_null(strstr(text, needle));
}

/* ---- tests ---- */

static void test_default(void **state)
{
    (void)state;
    ptc_config_t cfg;

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    char *yaml = emit(&cfg, PTC_CONFIG_YAML, 0), *json = emit(&cfg, PTC_CONFIG_JSON, 0);
    assert_string_equal(yaml, DEFAULT_YAML);
    assert_string_equal(json, DEFAULT_JSON);
    free(yaml);
    free(json);
    assert_round_trip(&cfg, PTC_CONFIG_YAML);
    assert_round_trip(&cfg, PTC_CONFIG_JSON);
    ptc_config_dispose(&cfg);
}

/* Every key, with values that need quoting, escaping and relative file names. */
static void test_rich_round_trip(void **state)
{
    (void)state;
    ptc_config_t cfg, back;
    char err[512], expected[512];

    load_rich(&cfg);
    assert_string_equal(cfg.cors.origins[5].text, RICH_REGEX);
    assert_round_trip(&cfg, PTC_CONFIG_YAML);
    assert_round_trip(&cfg, PTC_CONFIG_JSON);

    char *yaml = emit(&cfg, PTC_CONFIG_YAML, 0);
    /* spot checks, so that the round trip cannot pass by losing things on both ways */
    assert_int_equal(reload(&back, yaml, cfg.base_dir, err, sizeof(err)), 0);
    assert_string_equal(back.cors.origins[5].text, RICH_REGEX);
    assert_string_equal(back.cors.origins[2].text, "~^https://[a-z]+\\.example\\.org$");
    assert_true(ptc_cors_origin_allowed(&back.cors, ptc_iov("https://x.example.org", 21)));
    assert_int_equal(back.listeners[1].tls->num_certs, 3);
    assert_path(back.listeners[1].tls->certs[1].cert, ODD_PEM);
    assert_int_equal(back.listeners[1].tls->client_auth, PTC_TLS_CLIENT_AUTH_REQUIRED);
    assert_int_equal(back.listeners[1].tls->min_version, PTC_TLS_1_3);
    assert_string_equal(back.upstreams[0].endpoints[3].host, "fe80::1%eth0");
    assert_int_equal(back.upstreams[2].max_connections, UINT32_MAX);
    assert_true(back.upstreams[2].connect_timeout_ms == UINT64_MAX);
    assert_true(back.upstreams[2].backoff_max_ms == 5124095576030ull * 3600000);
    assert_string_equal(back.upstreams[3].name, "true");
    /* balancing and health */
    assert_int_equal(back.upstreams[0].balancing, PTC_BALANCE_LEAST_REQUEST);
    assert_int_equal(back.upstreams[0].dns_refresh_ms, 0);
    assert_true(back.upstreams[0].health_check.enabled);
    assert_string_equal(back.upstreams[0].health_check.service, "pkg.Svc: \"odd\" #x");
    assert_int_equal(back.upstreams[0].health_check.interval_ms, 2000);
    assert_int_equal(back.upstreams[0].health_check.timeout_ms, 250);
    assert_int_equal(back.upstreams[0].health_check.healthy_threshold, 1);
    assert_int_equal(back.upstreams[0].health_check.unhealthy_threshold, 7);
    assert_true(back.upstreams[0].outlier.enabled);
    assert_int_equal(back.upstreams[0].outlier.consecutive_failures, 3);
    assert_int_equal(back.upstreams[0].outlier.ejection_ms, 60000);
    assert_true(back.upstreams[1].health_check.enabled); /* `true`: the defaults */
    assert_null(back.upstreams[1].health_check.service);
    assert_int_equal(back.upstreams[1].health_check.interval_ms, 5000);
    assert_int_equal(back.upstreams[1].outlier.consecutive_failures, 5);
    assert_false(back.upstreams[2].health_check.enabled);
    assert_false(back.upstreams[2].outlier.enabled);
    assert_int_equal(back.upstreams[2].dns_refresh_ms, 30000);
    assert_int_equal(back.timeouts.drain_delay_ms, 2000);
    assert_string_equal(back.routes[4].path, "/#x:");
    assert_string_equal(back.admin.token, "rich-token");
    assert_false(back.watch);
    assert_string_equal(back.routes[2].cors->allow_methods, "POST, X-Custom!");
    /* the filters' sections */
    assert_false(back.request_id.enabled);
    assert_string_equal(back.request_id.header, "x-req");
    assert_int_equal(back.request_id.max_length, 32);
    assert_true(back.trace.sampled);
    assert_int_equal(back.headers.num_request, 4);
    assert_string_equal(back.headers.request[1].value, "portico \"q\" #1: \xc3\xa9 100%%");
    assert_int_equal(back.headers.request[3].op, PTC_HEADER_RENAME);
    assert_string_equal(back.headers.request[3].to, "x-new");
    assert_string_equal(back.headers.trailers[0].value, "");
    assert_string_equal(back.headers.trailers[1].value, "true");
    assert_int_equal(back.num_jwt_providers, 3);
    assert_path(back.jwt_providers[0].jwks_file, "keys.json");
    assert_path(back.jwt_providers[0].jwks_ca, "a.pem");
    assert_path(back.jwt_providers[1].jwks_file, "keys.json");
    assert_string_equal(back.jwt_providers[0].from_prefix, "Bearer ");
    assert_string_equal(back.jwt_providers[0].audiences[1], "true");
    assert_int_equal(back.jwt_providers[0].clock_skew_ms, 0);
    assert_int_equal(back.jwt_providers[1].from, PTC_JWT_FROM_COOKIE);
    assert_null(back.jwt_providers[1].from_prefix);
    assert_int_equal(back.jwt_providers[2].from, PTC_JWT_FROM_QUERY);
    assert_int_equal(back.jwt_default.num_claims, 5);
    assert_string_equal(back.jwt_default.claims[2].claim, "a:b");
    assert_string_equal(back.jwt_default.claims[4].claim, "#k");
    assert_string_equal(back.jwt_default.claims[4].value, "\"v\"");
    assert_int_equal(back.jwt_default.providers[0], 1);
    assert_true(back.routes[0].jwt.disabled); /* path /portico.test.Echo/Private */
    assert_int_equal(back.routes[2].jwt.providers[0], 2);
    assert_false(back.routes[2].native_filters);
    assert_string_equal(back.routes[2].get_cache_control, "public, max-age=60, stale-while-revalidate=\"30\"");
    assert_null(back.routes[4].get_cache_control);
    assert_int_equal(back.routes[2].headers.num_trailers, 1);
    assert_int_equal(back.routes[3].jwt.num_providers, 2); /* /sys. */
    assert_false(back.routes[4].jwt.set);
    assert_true(back.routes[4].native_filters);
    ptc_config_dispose(&back);

    /* file names under the base directory are written relative to it, others as they are */
    assert_contains(yaml, "\npid_file: run/portico.pid\n");
    assert_contains(yaml, "\n  token_file: admin.token\n");
    assert_contains(yaml, "\n      cert: a.pem\n");
    assert_contains(yaml, "\n        - cert: \"odd name: #1 \\\"q\\\" 'x'.pem\"\n");
    expand(expected, sizeof(expected), "\n          key: /tmp/../@/a.key\n");
    assert_contains(yaml, expected);
    const char *dir_at = strstr(yaml, tls_dir);
    assert_true(dir_at == strstr(yaml, expected) + strlen("\n          key: /tmp/../"));
    assert_null(strstr(dir_at + 1, tls_dir)); /* no other absolute name into the directory */
    /* quoted where a plain scalar would mean something else */
    assert_contains(yaml, "\n        - \"null\"\n");
    assert_contains(yaml, "\n    - \"*\"\n");
    assert_contains(yaml, "\n  allow_headers: \"*\"\n");
    assert_contains(yaml, "\n  - name: \"true\"\n");
    assert_contains(yaml, "\n    upstream: \"1.5\"\n");
    assert_contains(yaml, "\n      min_version: \"1.3\"\n");
    assert_contains(yaml, "\n  - prefix: \"/#x:\"\n");
    assert_contains(
        yaml, "\n    - \"~^https://q\\\\.test/(\\\"|'|#|: |\\\\{|\\\\}|\\\\[|\\\\]|,|&|\\\\*|!|\\\\||>|%|=|`|\\t|\\n|\\r|\\\\\\\\|"
              "\\u007F|\\u0085|\\u2028|\\uFEFF|\xc3\xa9|\xe2\x82\xac|\xf0\x9f\x98\x80)$\"\n");
    /* and plain where it cannot */
    assert_contains(yaml, "\n    - https://app.example.com\n");
    assert_contains(yaml, "\n  - prefix: /portico.test.Echo/\n");
    assert_contains(yaml, "\n    authority: echo.internal:443\n");
    assert_contains(yaml, "\n      allow_methods:\n        - POST\n        - \"X-Custom!\"\n");
    assert_contains(yaml, "\n    connect_timeout: 1500ms\n");
    assert_contains(yaml, "\n  call_buffer_size: 1000\n");
    assert_contains(yaml, "\n    cors:\n      allow_credentials: false\n      allow_headers: \"*\"\n      max_age: 10m\n");
    assert_contains(yaml, "\n    tls:\n      insecure_skip_verify: false\n    balancing: round_robin\n");
    /* the filters' sections: file names relative, claim paths quoted as keys where needed */
    assert_contains(yaml, "\nrequest_id:\n  enabled: false\n  header: x-req\n  max_length: 32\n  trust_incoming: false\n"
                          "trace:\n  enabled: true\n  sampled: true\nheaders:\n  request:\n"
                          "    - set: x-forwarded-origin\n      value: \"%REQ(origin)%\"\n");
    assert_contains(yaml, "\n    - rename: x-old\n      to: x-new\n  response:\n");
    assert_contains(yaml, "\n    - add: x-t\n      value: \"\"\n    - set: x-u\n      value: \"true\"\njwt:\n  providers:\n");
    assert_contains(yaml, "\n      from:\n        header: authorization\n        prefix: \"Bearer \"\n      jwks_file: keys.json\n"
                          "      jwks_url: https://issuer.example/.well-known/jwks.json\n      jwks_ca: a.pem\n"
                          "      jwks_cache: 90s\n      clock_skew: 0s\n      max_token_size: 1MiB\n      strip_token: true\n"
                          "      claims_to_headers:\n        - claim: sub\n          header: x-user\n");
    assert_contains(yaml, "\n    - name: cookie\n      from:\n        cookie: Session\n      jwks_file: keys.json\n");
    assert_contains(yaml, "\n  default:\n    providers:\n      - cookie\n      - main\n    optional: true\n    require_claims:\n"
                          "      scope: read\n      realm_access.roles: admin\n      a:b: \"x y\"\n      \"yes\": \"1\"\n"
                          "      \"#k\": \"\\\"v\\\"\"\n");
    assert_contains(yaml, "\n    jwt: disabled\n    native_filters: true\n");
    assert_contains(yaml, "\n    jwt:\n      providers:\n        - q\n      optional: false\n      require_claims:\n"
                          "        tenant: acme\n    native_filters: false\n");
    free(yaml);

    /* JSON: the same with the JSON spellings */
    char *json = emit(&cfg, PTC_CONFIG_JSON, 0);
    assert_contains(json, "\"pid_file\": \"run/portico.pid\"");
    assert_contains(json, "\n            \"cert\": \"odd name: #1 \\\"q\\\" 'x'.pem\",\n");
    assert_contains(json, "\"watch\": false");
    assert_contains(json, "\"max_connections\": 4294967295");
    assert_contains(json, "\"connect_timeout\": \"1500ms\"");
    assert_contains(json, "\"require_claims\": {\n        \"scope\": \"read\",\n        \"realm_access.roles\": \"admin\",\n"
                          "        \"a:b\": \"x y\",\n        \"yes\": \"1\",\n        \"#k\": \"\\\"v\\\"\"\n      }");
    assert_contains(json, "\"jwt\": \"disabled\"");
    assert_contains(json, "\"headers\": {\n    \"request\": [\n");
    free(json);
    ptc_config_dispose(&cfg);
}

/* The admin API's use: emit, write over the file the config came from, load that file. */
static void test_write_back_to_file(void **state)
{
    (void)state;
    ptc_config_t cfg, back;
    char err[512], path[256];

    load_rich(&cfg);
    snprintf(path, sizeof(path), "%s/portico.yaml", tls_dir);
    for (int fmt = 0; fmt < 2; fmt++) {
        char *text = emit(&cfg, fmt == 0 ? PTC_CONFIG_YAML : PTC_CONFIG_JSON, 0);
        write_file("portico.yaml", text);
        free(text);
        assert_int_equal(ptc_config_init_default(&back), 0);
        assert_int_equal(ptc_config_load_file(&back, path, err, sizeof(err)), 0);
        assert_true(ptc_config_eq(&cfg, &back));
        assert_string_equal(back.base_dir, cfg.base_dir);
        ptc_config_dispose(&back);
    }

    /* a file in another directory, loaded with the original base directory */
    char *text = emit(&cfg, PTC_CONFIG_YAML, 0);
    assert_int_equal(reload(&back, text, tls_dir, err, sizeof(err)), 0); /* without the trailing '/' */
    assert_true(ptc_config_eq(&cfg, &back));
    ptc_config_dispose(&back);
    free(text);
    ptc_config_dispose(&cfg);
}

static void test_redaction(void **state)
{
    (void)state;
    ptc_config_t cfg, back;
    char err[512];

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(ptc_config_load_string(&cfg, "t.yaml", "admin: {address: 127.0.0.1:9901, token: \"t0p \\\"s3cret\\\"\"}\n", 58,
                                            err, sizeof(err)),
                     0);
    assert_string_equal(cfg.admin.token, "t0p \"s3cret\"");
    assert_round_trip(&cfg, PTC_CONFIG_YAML); /* the inline token itself, without REDACT */
    assert_round_trip(&cfg, PTC_CONFIG_JSON);
    for (int fmt = 0; fmt < 2; fmt++) {
        ptc_config_format_t f = fmt == 0 ? PTC_CONFIG_YAML : PTC_CONFIG_JSON;
        char *plain = emit(&cfg, f, 0), *redacted = emit(&cfg, f, PTC_CONFIG_EMIT_REDACT);
        assert_contains(plain, "t0p \\\"s3cret\\\"");
        assert_null(strstr(redacted, "s3cret"));
        assert_contains(redacted, fmt == 0 ? "  token: \"<redacted>\"\n" : "\"token\": \"<redacted>\"");
        /* everything else is the same */
        char *p = strstr(plain, "t0p"), *r = strstr(redacted, "<redacted>");
        assert_int_equal(p - plain, r - redacted);
        assert_string_equal(p + strlen("t0p \\\"s3cret\\\""), r + strlen("<redacted>"));
        /* a redacted document does not load: it would set a known token */
        assert_int_equal(ptc_config_init_default(&back), 0);
        assert_int_equal(ptc_config_load_string(&back, "PUT /config", redacted, strlen(redacted), err, sizeof(err)), PTC_ECONFIG);
        assert_non_null(strstr(err, "admin.token: is the redaction placeholder <redacted>, not a token"));
        ptc_config_dispose(&back);
        free(plain);
        free(redacted);
    }
    ptc_config_dispose(&cfg);

    /* a token from a file is never written, in either mode; the file name is not a secret */
    load_rich(&cfg);
    for (unsigned flags = 0; flags < 2; flags++) {
        char *text = emit(&cfg, PTC_CONFIG_YAML, flags);
        assert_null(strstr(text, "rich-token"));
        assert_null(strstr(text, "<redacted>"));
        assert_contains(text, "token_file: admin.token");
        free(text);
    }
    ptc_config_dispose(&cfg);
}

/* What the command line can put in a config and a file must say differently, or cannot say at all. */
static void test_unusual_values(void **state)
{
    (void)state;
    ptc_config_t cfg, back;
    char err[512], expected[1024], cwd[512], *text = NULL;

    /* a name relative to the working directory, in a config whose names are relative to a directory */
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load_in_dir(&cfg, "workers: 1\n", err, sizeof(err)), 0);
    assert_int_equal(ptc_config_set_listener_cert(&cfg, "rel/s.pem", "/abs/s.key"), 0);
    text = emit(&cfg, PTC_CONFIG_YAML, 0);
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(expected, sizeof(expected), "      cert: %s/rel/s.pem\n      key: /abs/s.key\n", cwd);
    if (strchr(cwd, ' ') == NULL && strchr(cwd, '#') == NULL)
        assert_contains(text, expected);
    free(text);
    ptc_config_dispose(&cfg);

    /* a disabled policy is not written; an enabled one without origins is */
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    text = emit(&cfg, PTC_CONFIG_YAML, 0);
    assert_null(strstr(text, "cors"));
    free(text);
    cfg.cors.enabled = true;
    text = emit(&cfg, PTC_CONFIG_YAML, 0);
    assert_contains(text, "\ncors:\n  allow_credentials: false\n  allow_headers: \"*\"\n  max_age: 10m\n"
                          "  allow_private_network: false\n");
    free(text);
    assert_round_trip(&cfg, PTC_CONFIG_YAML);

    /* allow_methods written as a list whatever the spacing of the stored header value */
    assert_non_null(cfg.cors.allow_methods = strdup("POST,GET ,  PUT"));
    text = emit(&cfg, PTC_CONFIG_YAML, 0);
    assert_contains(text, "\n  allow_methods:\n    - POST\n    - GET\n    - PUT\n");
    assert_int_equal(reload(&back, text, "", err, sizeof(err)), 0);
    assert_string_equal(back.cors.allow_methods, "POST, GET, PUT");
    ptc_config_dispose(&back);
    free(text);
    free(cfg.cors.allow_methods); /* as the loader stores it, for the round trips below */
    assert_non_null(cfg.cors.allow_methods = strdup("POST, GET, PUT"));

    /* an --admin address and an inline token set by hand */
    char host[] = "::1";
    ptc_hostport_t hp = {host, 9901};
    assert_int_equal(ptc_config_set_admin_address(&cfg, &hp), 0);
    assert_round_trip(&cfg, PTC_CONFIG_YAML);
    assert_round_trip(&cfg, PTC_CONFIG_JSON);

    /* what no file can say: PTC_EINVAL, and *out untouched */
    char untouched[] = "untouched", *out = untouched;
    size_t len = 7;
    free(cfg.health_path);
    assert_non_null(cfg.health_path = strdup("/bad\xff"));
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_YAML, 0, &out, &len), PTC_EINVAL);
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_JSON, 0, &out, &len), PTC_EINVAL);
    cfg.health_path[4] = '\xc3'; /* a truncated sequence */
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_JSON, 0, &out, &len), PTC_EINVAL);
    cfg.health_path[4] = 'x';
    cfg.routes[0].upstream_index = 7;
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_YAML, 0, &out, &len), PTC_EINVAL);
    assert_ptr_equal(out, untouched);
    assert_int_equal(len, 7);
    cfg.routes[0].upstream_index = 0;
    cfg.routes[0].jwt.set = true; /* a JWT check without providers: `providers` is required */
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_JSON, 0, &out, &len), PTC_EINVAL);
    size_t bad_index = 3;
    cfg.routes[0].jwt.providers = &bad_index; /* a provider that is not there */
    cfg.routes[0].jwt.num_providers = 1;
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_YAML, 0, &out, &len), PTC_EINVAL);
    assert_ptr_equal(out, untouched);
    cfg.routes[0].jwt = (ptc_jwt_requirement_config_t){0};
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_YAML, 0, &out, NULL), 0); /* outlen may be NULL */
    assert_contains(out, "health_path: /badx\n");
    free(out);
    ptc_config_dispose(&cfg);
}

/* Each allocation of an emit fails once: PTC_ENOMEM, *out untouched, nothing leaked. */
static void test_allocation_failures(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    ptc_config_t cfg;

    load_rich(&cfg);
    assert_int_equal(ptc_config_set_listener_cert(&cfg, "rel.pem", "rel.key"), 0); /* getcwd too */
    for (int fmt = 0; fmt < 2; fmt++) {
        for (long i = 0;; i++) {
            char untouched[] = "untouched", *out = untouched;
            size_t len = 3;
            long live = failmalloc_live;
            failmalloc_countdown = i;
            int ret = ptc_config_emit(&cfg, fmt == 0 ? PTC_CONFIG_YAML : PTC_CONFIG_JSON, 0, &out, &len);
            int injected = failmalloc_countdown < 0;
            failmalloc_countdown = -1;
            if (ret == 0) {
                assert_true(!injected || failmalloc_failed_in_libc()); /* getcwd keeps its larger buffer */
                assert_int_equal(len, strlen(out));
                free(out);
            } else {
                assert_true(injected);
                assert_int_equal(ret, PTC_ENOMEM);
                assert_ptr_equal(out, untouched);
                assert_int_equal(len, 3);
            }
            assert_int_equal(failmalloc_live, live);
            if (!injected)
                break;
        }
    }
    ptc_config_dispose(&cfg);
#else
    skip();
#endif
}

static void test_json_checker(void **state)
{
    (void)state;
    /* the checker itself must refuse what is not JSON, or the JSON tests prove nothing */
    static const char *const good[] = {"{}", "[]", "{\"a\": [1, -2.5, true, false, null, \"x\\u00e9\\n\"]}", " {\"a\":{}} \n"};
    static const char *const bad[] = {"",      "{",        "{\"a\" 1}", "{'a': 1}",  "{\"a\": 1,}",
                                      "[1 2]", "\"a\tb\"", "\"\\x41\"", "{a: 1}",    "{\"a\": tru}",
                                      "01",    "[1.]",     "{} {}",     "\"\\u12\"", "{\"a\": \"b}"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(json_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (json_valid(bad[i]))
            print_error("accepted: %s\n", bad[i]);
        assert_false(json_valid(bad[i]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_checker),
        cmocka_unit_test(test_default),
        cmocka_unit_test_setup_teardown(test_rich_round_trip, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_write_back_to_file, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_redaction, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_unusual_values, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
