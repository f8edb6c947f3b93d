/*
 * A configuration that sets every key, several of them to values that need quoting or escaping (file names
 * with spaces, quotes, ':' and '#'; an origin regex with control characters, quotes and non-ASCII text; claim
 * paths and header values that are not plain YAML), for the copy and emitter tests. Needs the tls_files.h fixture.
 */
#ifndef PTC_TEST_CONFIG_RICH_CONFIG_H
#define PTC_TEST_CONFIG_RICH_CONFIG_H

#include "tls_files.h"

/* A file name in tls_dir that every YAML writer must quote. */
#define ODD_PEM "odd name: #1 \"q\" 'x'.pem"
#define ODD_PEM_YAML "\"odd name: #1 \\\"q\\\" 'x'.pem\"" /* as a double-quoted YAML scalar */

/* '@' stands for tls_dir. */
static const char RICH_YAML[] =
    "workers: 3\n"
    "log_level: warn\n"
    "health_path: /health\n"
    "watch: false\n"
    "pid_file: run/portico.pid\n"
    "metrics: {max_methods: 12}\n"
    "access_log:\n"
    "  path: " ODD_PEM_YAML "\n"
    "  format: \"%START_TIME% \\\"%PATH%\\\" %GRPC_STATUS% %REQ(user-agent)% %JWT(sub)% 100%%\"\n"
    "  buffer: 64KiB\n"
    "admin:\n"
    "  address: \"[::1]:9901\"\n"
    "  token_file: admin.token\n"
    "listeners:\n"
    "  - address: 127.0.0.1:8080\n"
    "  - address: \"[::]:8443\"\n"
    "    tls:\n"
    "      cert: a.pem\n"
    "      key: a.key\n"
    "      certificates:\n"
    "        - {cert: " ODD_PEM_YAML ", key: a.key}\n"
    "        - {cert: \"@/a.pem\", key: /tmp/../@/a.key}\n"
    "      client_auth: required\n"
    "      client_ca: a.pem\n"
    "      min_version: \"1.3\"\n"
    "  - address: 0.0.0.0:8444\n"
    "    tls: {cert: a.pem, key: a.key}\n"
    "upstreams:\n"
    "  - name: echo\n"
    "    endpoints: [127.0.0.1:50051, \"[::1]:50052\", backend.local:50051, \"[fe80::1%eth0]:1\"]\n"
    "    authority: echo.internal:443\n"
    "    connect_timeout: 1.5s\n"
    "    max_connections: 8\n"
    "    max_pending: 0\n"
    "    backoff: {initial: 250ms, max: 1m}\n"
    "    balancing: least_request\n"
    "    dns_refresh: 0\n"
    "    health_check: {service: \"pkg.Svc: \\\"odd\\\" #x\", interval: 2s, timeout: 250ms, healthy_threshold: 1, "
    "unhealthy_threshold: 7}\n"
    "    outlier: {consecutive_failures: 3, ejection: 1m}\n"
    "    tls:\n"
    "      ca: a.pem\n"
    "      server_name: echo.test\n"
    "      cert: a.pem\n"
    "      key: a.key\n"
    "  - name: dev\n"
    "    endpoints: [dev.local:443]\n"
    "    tls: {insecure_skip_verify: true}\n"
    "    health_check: true\n"
    "    outlier: {}\n"
    "  - name: sys\n"
    "    endpoints: [sys.local:443]\n"
    "    max_connections: 4294967295\n"
    "    connect_timeout: 18446744073709551615ms\n"
    "    backoff: {max: 5124095576030h}\n"
    "    tls: {}\n"
    "  - name: true\n" /* names that look like other YAML types */
    "    endpoints: [null.local:80]\n"
    "  - name: \"1.5\"\n"
    "    endpoints: [n.local:80]\n"
    "routes:\n"
    "  - prefix: /portico.test.Echo/\n"
    "    upstream: echo\n"
    "    headers:\n"
    "      request: [{set: x-route, value: \"%ROUTE% %JWT(sub)%\"}, {remove: x-b}]\n"
    "      trailers: [{rename: x-c, to: x-d}]\n"
    "    jwt: {providers: [q], require_claims: {tenant: acme}}\n"
    "    native_filters: false\n"
    "    get_cache_control: \"public, max-age=60, stale-while-revalidate=\\\"30\\\"\"\n"
    "    cors:\n"
    "      allow_origins: [\"https://other.example\", \"null\"]\n"
    "      allow_credentials: true\n"
    "      allow_methods: [POST, X-Custom!]\n"
    "      allow_headers: [authorization, X-Api-Key]\n"
    "      expose_headers: [x-trace]\n"
    "      max_age: 0\n"
    "      allow_private_network: true\n"
    "  - path: /portico.test.Echo/Private\n"
    "    upstream: dev\n"
    "    cors: {}\n"
    "    jwt: disabled\n"
    "  - prefix: /sys.\n"
    "    upstream: sys\n"
    "    jwt: {providers: [main, cookie], optional: true}\n"
    "    headers: {response: [{add: x-sys, value: \"%RESP(x-a)%\"}]}\n"
    "  - prefix: \"/#x:\"\n"
    "    upstream: \"1.5\"\n"
    "  - path: /a.B/C\n"
    "    upstream: \"true\"\n"
    "  - prefix: /\n"
    "    upstream: echo\n"
    "limits: {max_message_size: 8MiB, max_header_size: 32KiB, max_headers: 50, call_buffer_size: 1000,\n"
    "         stream_window_size: 65535, max_connections: 500}\n"
    "timeouts: {max_grpc_timeout: 5m, default_grpc_timeout: 1.5s, idle: 2m, header_read: 5s, drain: 0, drain_delay: 2s}\n"
    "compression: {gzip: true, min_size: 0, level: 9}\n"
    "cors:\n"
    "  allow_origins:\n"
    "    - https://app.example.com\n"
    "    - \"https://*.example.com\"\n"
    "    - \"~^https://[a-z]+\\\\.example\\\\.org$\"\n"
    "    - \"*\"\n"
    "    - http://localhost:3000\n"
    "    - \"~^https://q\\\\.test/(\\\"|'|#|: "
    "|\\\\{|\\\\}|\\\\[|\\\\]|,|&|\\\\*|!|\\\\||>|%|=|`|\\t|\\n|\\r|\\\\\\\\|\\x7f|\\u0085|"
    "\\u2028|\\ufeff|\\u00e9|\\u20ac|\\U0001F600)$\"\n"
    "  allow_credentials: false\n"
    "  allow_methods: [POST, OPTIONS, GET]\n"
    "  allow_headers: \"*\"\n"
    "  expose_headers: [x-custom, X-Trace-Bin]\n"
    "  max_age: 1h\n"
    "  allow_private_network: false\n"
    "request_id: {enabled: false, header: X-Req, max_length: 32, trust_incoming: false}\n"
    "trace: {enabled: true, sampled: true}\n"
    "headers:\n"
    "  request:\n"
    "    - {set: x-forwarded-origin, value: \"%REQ(origin)%\"}\n"
    "    - {add: x-gateway, value: \"portico \\\"q\\\" #1: \\u00e9 100%%\"}\n"
    "    - {remove: x-debug}\n"
    "    - {rename: x-old, to: x-new}\n"
    "  response: [{set: x-served-by, value: \"%UPSTREAM% %RESP(x-a)%\"}]\n"
    "  trailers: [{add: x-t, value: \"\"}, {set: x-u, value: \"true\"}]\n"
    "jwt:\n"
    "  providers:\n"
    "    - name: main\n"
    "      issuer: https://issuer.example/\n"
    "      audiences: [api://portico, \"true\", \"#x\"]\n"
    "      from: {header: Authorization, prefix: \"Bearer \"}\n"
    "      jwks_file: keys.json\n"
    "      jwks_url: https://issuer.example/.well-known/jwks.json\n"
    "      jwks_ca: a.pem\n"
    "      jwks_cache: 90s\n"
    "      clock_skew: 0\n"
    "      max_token_size: 1MiB\n"
    "      claims_to_headers: [{claim: sub, header: x-user}, {claim: \"https://x/roles\", header: x-roles}]\n"
    "      forward_payload: x-jwt-payload\n"
    "      strip_token: true\n"
    "    - name: cookie\n"
    "      from: {cookie: Session}\n"
    "      jwks_file: \"@/keys.json\"\n"
    "    - name: q\n"
    "      audiences: single\n"
    "      from: {query: access_token}\n"
    "      jwks_url: \"http://[::1]:1/k\"\n"
    "  default:\n"
    "    providers: [cookie, main]\n"
    "    optional: true\n"
    "    require_claims: {scope: read, \"realm_access.roles\": admin, \"a:b\": \"x y\", \"yes\": \"1\", \"#k\": \"\\\"v\\\"\"}\n";

/* The regex origin above as the loader stores it. */
static const char RICH_REGEX[] = "~^https://q\\.test/(\"|'|#|: |\\{|\\}|\\[|\\]|,|&|\\*|!|\\||>|%|=|`|\t|\n|\r|\\\\|\x7f|\xc2\x85|"
                                 "\xe2\x80\xa8|\xef\xbb\xbf|\xc3\xa9|\xe2\x82\xac|\xf0\x9f\x98\x80)$";

/* Writes the extra files RICH_YAML names into tls_dir and loads it from tls_dir/t.yaml over the defaults. */
static inline void load_rich(ptc_config_t *cfg)
{
    char yaml[sizeof(RICH_YAML) + 512], err[512];

    write_file("admin.token", "  rich-token\n");
    write_file("keys.json", "{\"keys\": []}\n");
    write_file(ODD_PEM, TEST_CERT);
    expand(yaml, sizeof(yaml), RICH_YAML);
    assert_int_equal(ptc_config_init_default(cfg), 0);
    int ret = load_in_dir(cfg, yaml, err, sizeof(err));
    if (ret != 0)
        print_error("%s\n", err);
    assert_int_equal(ret, 0);
}

#endif
