/* Unit tests for the request pipeline's sections of the loader (src/config/yaml.c) and their checks in
 * ptc_config_validate (src/config/config.c): request_id, trace, header rules (global and per route), JWT providers
 * and requirements, native_filters. */
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
#include "load_failmalloc.h"
#include "tls_files.h"

/* A JWKS for the tests; the loader only checks that the file can be read. */
#define JWKS "{\"keys\": []}\n"

/* The sections as documented in the format comment of config.c, with every key. */
static const char FILTERS_EXAMPLE[] = "request_id:\n"
                                      "  enabled: true\n"
                                      "  header: X-Correlation-Id\n"
                                      "  max_length: 64\n"
                                      "  trust_incoming: false\n"
                                      "trace:\n"
                                      "  enabled: true\n"
                                      "  sampled: true\n"
                                      "headers:\n"
                                      "  request:\n"
                                      "    - {set: x-forwarded-origin, value: \"%REQ(origin)%\"}\n"
                                      "    - {add: X-Gateway, value: portico}\n"
                                      "    - {remove: x-debug}\n"
                                      "    - {rename: x-old, to: X-New}\n"
                                      "  response: [{set: x-served-by, value: \"portico %UPSTREAM% %RESP(Content-Type)%\"}]\n"
                                      "  trailers:\n"
                                      "    - {value: \"100%%\", add: x-done}\n"
                                      "jwt:\n"
                                      "  default:\n"
                                      "    providers: [main, cookie]\n"
                                      "    optional: false\n"
                                      "    require_claims: {scope: read, \"realm_access.roles\": admin, level: 3}\n"
                                      "  providers:\n"
                                      "    - name: main\n"
                                      "      issuer: https://issuer.example/\n"
                                      "      audiences: [api://portico, other]\n"
                                      "      from: {header: Authorization, prefix: \"Bearer \"}\n"
                                      "      jwks_file: keys.json\n"
                                      "      jwks_url: https://issuer.example/.well-known/jwks.json\n"
                                      "      jwks_ca: a.pem\n"
                                      "      jwks_cache: 5m\n"
                                      "      clock_skew: 30s\n"
                                      "      max_token_size: 16KiB\n"
                                      "      claims_to_headers:\n"
                                      "        - {claim: sub, header: X-Auth-User-Id}\n"
                                      "        - {claim: realm_access.roles, header: x-auth-roles}\n"
                                      "      forward_payload: X-Jwt-Payload\n"
                                      "      strip_token: true\n"
                                      "    - name: cookie\n"
                                      "      audiences: single\n"
                                      "      from: {cookie: Session}\n"
                                      "      jwks_url: http://127.0.0.1:8081/jwks\n"
                                      "    - name: query\n"
                                      "      from: {query: access_token}\n"
                                      "      jwks_file: keys.json\n"
                                      "      jwks_url: \"http://[::1]/jwks\"\n"
                                      "routes:\n"
                                      "  - prefix: /pkg.Svc/\n"
                                      "    upstream: default\n"
                                      "    headers:\n"
                                      "      request: [{set: x-route, value: \"%ROUTE%\"}]\n"
                                      "      response: [{remove: x-a}]\n"
                                      "      trailers: [{add: x-t, value: \"%RESP(x-t)%\"}]\n"
                                      "    jwt: {providers: [query], optional: true, require_claims: {tenant: acme}}\n"
                                      "    native_filters: false\n"
                                      "  - path: /pkg.Svc/Open\n"
                                      "    upstream: default\n"
                                      "    jwt: disabled\n"
                                      "  - prefix: /\n"
                                      "    upstream: default\n";

static int load(ptc_config_t *cfg, const char *yaml, char *err, size_t errlen)
{
    return ptc_config_load_string(cfg, "t.yaml", yaml, strlen(yaml), err, errlen);
}

/* load_in_dir, failing the test with the message on error. */
static void load_ok(ptc_config_t *cfg, const char *yaml)
{
    char err[512];
    int ret = load_in_dir(cfg, yaml, err, sizeof(err));
    if (ret != 0)
        print_error("%s\n---\n%s\n", err, yaml);
    assert_int_equal(ret, 0);
}

static void assert_no_rules(const ptc_header_rules_config_t *h)
{
    assert_int_equal(h->num_request, 0);
    assert_int_equal(h->num_response, 0);
    assert_int_equal(h->num_trailers, 0);
    assert_null(h->request);
    assert_null(h->response);
    assert_null(h->trailers);
}

static void assert_rule(const ptc_header_rule_config_t *r, ptc_header_op_t op, const char *name, const char *value, const char *to)
{
    assert_int_equal(r->op, op);
    assert_string_equal(r->name, name);
    if (value == NULL)
        assert_null(r->value);
    else
        assert_string_equal(r->value, value);
    if (to == NULL)
        assert_null(r->to);
    else
        assert_string_equal(r->to, to);
}

/* The filters' settings of ptc_config_init_default. */
static void assert_filters_default(const ptc_config_t *cfg)
{
    assert_true(cfg->request_id.enabled);
    assert_string_equal(cfg->request_id.header, "x-request-id");
    assert_int_equal(cfg->request_id.max_length, 128);
    assert_true(cfg->request_id.trust_incoming);
    assert_true(cfg->trace.enabled);
    assert_false(cfg->trace.sampled);
    assert_no_rules(&cfg->headers);
    assert_int_equal(cfg->num_jwt_providers, 0);
    assert_null(cfg->jwt_providers);
    assert_false(cfg->jwt_default.set);
    assert_int_equal(cfg->jwt_default.num_providers, 0);
    assert_int_equal(cfg->jwt_default.num_claims, 0);
    for (size_t i = 0; i < cfg->num_routes; i++) {
        assert_no_rules(&cfg->routes[i].headers);
        assert_false(cfg->routes[i].jwt.set);
        assert_true(cfg->routes[i].native_filters);
    }
}

static void test_defaults(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_filters_default(&cfg);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    /* an empty file, and one with other keys, keep them */
    assert_int_equal(load(&cfg, "", err, sizeof(err)), 0);
    assert_filters_default(&cfg);
    assert_int_equal(load(&cfg, "routes: [{prefix: /a/, upstream: default}, {prefix: /, upstream: default}]\n", err, sizeof(err)), 0);
    assert_filters_default(&cfg);
    /* empty sections: no rules, no providers */
    assert_int_equal(load(&cfg, "headers: {}\njwt: {}\n", err, sizeof(err)), 0);
    assert_filters_default(&cfg);
    ptc_config_dispose(&cfg);
}

/* FILTERS_EXAMPLE over the defaults, with the JWKS file it names; valid. */
static void load_example(ptc_config_t *cfg)
{
    char err[512];

    write_file("keys.json", JWKS);
    assert_int_equal(ptc_config_init_default(cfg), 0);
    load_ok(cfg, FILTERS_EXAMPLE);
    assert_int_equal(ptc_config_validate(cfg, err, sizeof(err)), 0);
}

static void test_example(void **state)
{
    (void)state;
    ptc_config_t cfg;

    load_example(&cfg);

    /* request ids, trace context: header names lower-cased */
    assert_true(cfg.request_id.enabled);
    assert_string_equal(cfg.request_id.header, "x-correlation-id");
    assert_int_equal(cfg.request_id.max_length, 64);
    assert_false(cfg.request_id.trust_incoming);
    assert_true(cfg.trace.enabled);
    assert_true(cfg.trace.sampled);

    /* global rules: names lower-cased, values kept as written */
    assert_int_equal(cfg.headers.num_request, 4);
    assert_rule(&cfg.headers.request[0], PTC_HEADER_SET, "x-forwarded-origin", "%REQ(origin)%", NULL);
    assert_rule(&cfg.headers.request[1], PTC_HEADER_ADD, "x-gateway", "portico", NULL);
    assert_rule(&cfg.headers.request[2], PTC_HEADER_REMOVE, "x-debug", NULL, NULL);
    assert_rule(&cfg.headers.request[3], PTC_HEADER_RENAME, "x-old", NULL, "x-new");
    assert_int_equal(cfg.headers.num_response, 1);
    assert_rule(&cfg.headers.response[0], PTC_HEADER_SET, "x-served-by", "portico %UPSTREAM% %RESP(Content-Type)%", NULL);
    assert_int_equal(cfg.headers.num_trailers, 1);
    assert_rule(&cfg.headers.trailers[0], PTC_HEADER_ADD, "x-done", "100%%", NULL);

    /* providers */
    assert_int_equal(cfg.num_jwt_providers, 3);
    const ptc_jwt_provider_config_t *p = &cfg.jwt_providers[0];
    assert_string_equal(p->name, "main");
    assert_string_equal(p->issuer, "https://issuer.example/");
    assert_int_equal(p->num_audiences, 2);
    assert_string_equal(p->audiences[0], "api://portico");
    assert_string_equal(p->audiences[1], "other");
    assert_int_equal(p->from, PTC_JWT_FROM_HEADER);
    assert_string_equal(p->from_name, "authorization");
    assert_string_equal(p->from_prefix, "Bearer ");
    assert_path(p->jwks_file, "keys.json"); /* relative to the config file's directory, like TLS files */
    assert_string_equal(p->jwks_url, "https://issuer.example/.well-known/jwks.json");
    assert_path(p->jwks_ca, "a.pem");
    assert_int_equal(p->jwks_cache_ms, 5 * 60 * 1000);
    assert_int_equal(p->clock_skew_ms, 30 * 1000);
    assert_int_equal(p->max_token_size, 16 * 1024);
    assert_int_equal(p->num_claim_headers, 2);
    assert_string_equal(p->claim_headers[0].claim, "sub");
    assert_string_equal(p->claim_headers[0].header, "x-auth-user-id");
    assert_string_equal(p->claim_headers[1].claim, "realm_access.roles");
    assert_string_equal(p->claim_headers[1].header, "x-auth-roles");
    assert_string_equal(p->forward_payload, "x-jwt-payload");
    assert_true(p->strip_token);

    /* the defaults of what the others leave out; a single audience; a cookie name keeps its case */
    p = &cfg.jwt_providers[1];
    assert_string_equal(p->name, "cookie");
    assert_null(p->issuer);
    assert_int_equal(p->num_audiences, 1);
    assert_string_equal(p->audiences[0], "single");
    assert_int_equal(p->from, PTC_JWT_FROM_COOKIE);
    assert_string_equal(p->from_name, "Session");
    assert_null(p->from_prefix);
    assert_null(p->jwks_file);
    assert_string_equal(p->jwks_url, "http://127.0.0.1:8081/jwks"); /* plain http to the loopback address */
    assert_null(p->jwks_ca);
    assert_int_equal(p->jwks_cache_ms, 10 * 60 * 1000);
    assert_int_equal(p->clock_skew_ms, 60 * 1000);
    assert_int_equal(p->max_token_size, 8 * 1024);
    assert_int_equal(p->num_claim_headers, 0);
    assert_null(p->forward_payload);
    assert_false(p->strip_token);
    p = &cfg.jwt_providers[2];
    assert_int_equal(p->from, PTC_JWT_FROM_QUERY);
    assert_string_equal(p->from_name, "access_token");
    assert_null(p->from_prefix);
    assert_int_equal(p->num_audiences, 0);
    assert_null(p->audiences);

    /* the default requirement (given before the providers it names) */
    const ptc_jwt_requirement_config_t *r = &cfg.jwt_default;
    assert_true(r->set);
    assert_false(r->disabled);
    assert_false(r->optional);
    assert_int_equal(r->num_providers, 2);
    assert_int_equal(r->providers[0], 0);
    assert_int_equal(r->providers[1], 1);
    assert_int_equal(r->num_claims, 3);
    assert_string_equal(r->claims[0].claim, "scope");
    assert_string_equal(r->claims[0].value, "read");
    assert_string_equal(r->claims[1].claim, "realm_access.roles");
    assert_string_equal(r->claims[1].value, "admin");
    assert_string_equal(r->claims[2].claim, "level");
    assert_string_equal(r->claims[2].value, "3"); /* compared as text */

    /* routes, in match order */
    assert_int_equal(cfg.num_routes, 3);
    const ptc_route_config_t *rt = &cfg.routes[0];
    assert_string_equal(rt->path, "/pkg.Svc/Open");
    assert_true(rt->jwt.set);
    assert_true(rt->jwt.disabled);
    assert_int_equal(rt->jwt.num_providers, 0);
    assert_no_rules(&rt->headers);
    assert_true(rt->native_filters);
    rt = &cfg.routes[1];
    assert_string_equal(rt->path, "/pkg.Svc/");
    assert_false(rt->native_filters);
    assert_int_equal(rt->headers.num_request, 1);
    assert_rule(&rt->headers.request[0], PTC_HEADER_SET, "x-route", "%ROUTE%", NULL);
    assert_int_equal(rt->headers.num_response, 1);
    assert_rule(&rt->headers.response[0], PTC_HEADER_REMOVE, "x-a", NULL, NULL);
    assert_int_equal(rt->headers.num_trailers, 1);
    assert_rule(&rt->headers.trailers[0], PTC_HEADER_ADD, "x-t", "%RESP(x-t)%", NULL);
    assert_true(rt->jwt.set);
    assert_false(rt->jwt.disabled);
    assert_true(rt->jwt.optional);
    assert_int_equal(rt->jwt.num_providers, 1);
    assert_int_equal(rt->jwt.providers[0], 2);
    assert_int_equal(rt->jwt.num_claims, 1);
    assert_string_equal(rt->jwt.claims[0].claim, "tenant");
    assert_string_equal(rt->jwt.claims[0].value, "acme");
    rt = &cfg.routes[2];
    assert_string_equal(rt->path, "/");
    assert_false(rt->jwt.set); /* jwt.default applies */
    assert_no_rules(&rt->headers);
    assert_true(rt->native_filters);
    ptc_config_dispose(&cfg);
}

/* `request_id` and `trace` as booleans, and as whole sections. */
static void test_request_id_and_trace(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg, "request_id: false\ntrace: false\n", err, sizeof(err)), 0);
    assert_false(cfg.request_id.enabled);
    assert_string_equal(cfg.request_id.header, "x-request-id");
    assert_false(cfg.trace.enabled);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
    assert_int_equal(load(&cfg, "request_id: true\ntrace: true\n", err, sizeof(err)), 0);
    assert_true(cfg.request_id.enabled);
    assert_true(cfg.trace.enabled);
    assert_int_equal(load(&cfg, "request_id: {enabled: false}\ntrace: {enabled: false, sampled: true}\n", err, sizeof(err)), 0);
    assert_false(cfg.request_id.enabled);
    assert_false(cfg.trace.enabled);
    assert_true(cfg.trace.sampled);

    /* a section replaces the whole of the current one: what it leaves out takes the default */
    assert_int_equal(load(&cfg, "request_id: {header: X-Id, max_length: 1, trust_incoming: false}\n", err, sizeof(err)), 0);
    assert_true(cfg.request_id.enabled);
    assert_string_equal(cfg.request_id.header, "x-id");
    assert_int_equal(cfg.request_id.max_length, 1);
    assert_false(cfg.trace.enabled); /* not in the file: kept */
    assert_true(cfg.trace.sampled);
    assert_int_equal(load(&cfg, "request_id: {max_length: 128}\ntrace: {}\n", err, sizeof(err)), 0);
    assert_string_equal(cfg.request_id.header, "x-request-id");
    assert_true(cfg.request_id.trust_incoming);
    assert_true(cfg.trace.enabled);
    assert_false(cfg.trace.sampled);

    /* a file without them keeps them, a failed load too */
    assert_int_equal(load(&cfg, "request_id: {header: x-id}\ntrace: {sampled: true}\n", err, sizeof(err)), 0);
    assert_int_equal(load(&cfg, "workers: 2\n", err, sizeof(err)), 0);
    assert_string_equal(cfg.request_id.header, "x-id");
    assert_true(cfg.trace.sampled);
    assert_int_equal(load(&cfg, "request_id: false\ntrace: false\nworkers: x\n", err, sizeof(err)), PTC_ECONFIG);
    assert_true(cfg.request_id.enabled);
    assert_string_equal(cfg.request_id.header, "x-id");
    assert_true(cfg.trace.enabled);
    assert_true(cfg.trace.sampled);
    ptc_config_dispose(&cfg);
}

/* Header rules: a file without `headers` keeps the current global rules; a route without has none of its own. */
static void test_headers_kept_and_replaced(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(load(&cfg,
                          "headers: {request: [{set: x-a, value: \"1\"}], response: [{remove: x-b}, {rename: x-c, to: x-d}]}\n"
                          "routes:\n"
                          "  - {prefix: /a/, upstream: default, headers: {trailers: [{add: x-e, value: \"%RESP(grpc-status)%\"}]}}\n"
                          "  - {prefix: /, upstream: default}\n",
                          err, sizeof(err)),
                     0);
    assert_int_equal(cfg.headers.num_request, 1);
    assert_int_equal(cfg.headers.num_response, 2);
    assert_int_equal(cfg.headers.num_trailers, 0);
    assert_rule(&cfg.headers.response[1], PTC_HEADER_RENAME, "x-c", NULL, "x-d");
    assert_int_equal(cfg.routes[0].headers.num_trailers, 1);
    assert_no_rules(&cfg.routes[1].headers);

    assert_int_equal(load(&cfg, "workers: 1\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.headers.num_response, 2);
    assert_int_equal(cfg.routes[0].headers.num_trailers, 1);
    assert_int_equal(load(&cfg, "headers: {request: [{remove: x-z}]}\nworkers: x\n", err, sizeof(err)), PTC_ECONFIG);
    assert_int_equal(cfg.headers.num_request, 1);
    assert_string_equal(cfg.headers.request[0].name, "x-a");

    /* a new section replaces the old one entirely; new routes have only what they say */
    assert_int_equal(load(&cfg, "headers: {trailers: [{remove: x-z}]}\nroutes: [{prefix: /, upstream: default}]\n", err, sizeof(err)),
                     0);
    assert_int_equal(cfg.headers.num_request, 0);
    assert_int_equal(cfg.headers.num_response, 0);
    assert_int_equal(cfg.headers.num_trailers, 1);
    assert_no_rules(&cfg.routes[0].headers);
    assert_int_equal(load(&cfg, "headers: {}\n", err, sizeof(err)), 0);
    assert_no_rules(&cfg.headers);
    ptc_config_dispose(&cfg);
}

/* Provider names: resolved against this file's providers, or the current ones; the current routes follow a new list. */
static void test_jwt_names(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[512], expected[512];

    write_file("keys.json", JWKS);
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    load_ok(&cfg, "jwt:\n"
                  "  providers:\n"
                  "    - {name: a, jwks_file: keys.json}\n"
                  "    - {name: b, jwks_file: keys.json}\n"
                  "  default: {providers: [b]}\n");
    assert_int_equal(cfg.jwt_default.providers[0], 1);

    /* routes of a file without jwt name the current providers (routes before or after: the same) */
    load_ok(&cfg, "routes:\n"
                  "  - {prefix: /x/, upstream: default, jwt: {providers: [b, a]}}\n"
                  "  - {prefix: /, upstream: default}\n");
    assert_int_equal(cfg.num_jwt_providers, 2);
    assert_int_equal(cfg.routes[0].jwt.num_providers, 2);
    assert_int_equal(cfg.routes[0].jwt.providers[0], 1);
    assert_int_equal(cfg.routes[0].jwt.providers[1], 0);
    assert_false(cfg.routes[1].jwt.set);
    assert_int_equal(cfg.jwt_default.providers[0], 1); /* kept */
    const ptc_route_config_t *before = cfg.routes;

    /* a new provider list with the current routes: their indexes follow the names */
    load_ok(&cfg, "jwt:\n  providers:\n    - {name: c, jwks_file: keys.json}\n    - {name: a, jwks_file: keys.json}\n"
                  "    - {name: b, jwks_file: keys.json}\n");
    assert_true(cfg.routes != before); /* copied, as a routes section would have been given */
    assert_int_equal(cfg.num_routes, 2);
    assert_string_equal(cfg.routes[0].path, "/x/");
    assert_int_equal(cfg.routes[0].jwt.providers[0], 2);
    assert_int_equal(cfg.routes[0].jwt.providers[1], 1);
    assert_false(cfg.jwt_default.set); /* the jwt section is whole */
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    /* ... and one that drops a provider they name is an error; the config is kept */
    assert_int_equal(load_in_dir(&cfg, "workers: 1\njwt:\n  providers:\n    - {name: a, jwks_file: keys.json}\n", err, sizeof(err)),
                     PTC_ECONFIG);
    expand(expected, sizeof(expected),
           "@/t.yaml:3: jwt: the current routes[0] require provider \"b\", which this file does not define; give the routes too");
    assert_string_equal(err, expected);
    assert_int_equal(cfg.num_jwt_providers, 3);
    assert_int_equal(cfg.routes[0].jwt.providers[0], 2);
    /* fine together with routes, or upstreams (which bring their own catch-all route) */
    load_ok(&cfg, "jwt:\n  providers:\n    - {name: a, jwks_file: keys.json}\nroutes: [{prefix: /, upstream: default, jwt: {providers: [a]}}]\n");
    assert_int_equal(cfg.num_routes, 1);
    assert_int_equal(cfg.routes[0].jwt.providers[0], 0);
    load_ok(&cfg, "jwt: {}\nupstreams: [{name: u, endpoints: [h:1]}]\n");
    assert_int_equal(cfg.num_jwt_providers, 0);
    assert_false(cfg.routes[0].jwt.set);

    /* routes without jwt requirements are borrowed, not copied */
    load_ok(&cfg, "jwt:\n  providers:\n    - {name: a, jwks_file: keys.json}\n");
    before = cfg.routes;
    load_ok(&cfg, "jwt:\n  providers:\n    - {name: z, jwks_file: keys.json}\n");
    assert_ptr_equal(cfg.routes, before);

    /* `default: disabled` says what no default says, and is written back as such */
    load_ok(&cfg, "jwt: {default: disabled}\n");
    assert_true(cfg.jwt_default.set);
    assert_true(cfg.jwt_default.disabled);
    char *text;
    ptc_config_t back;
    assert_int_equal(ptc_config_emit(&cfg, PTC_CONFIG_YAML, 0, &text, NULL), 0);
    assert_non_null(strstr(text, "\njwt:\n  default: disabled\n"));
    assert_int_equal(ptc_config_init_default(&back), 0);
    assert_int_equal(ptc_config_load_string_in(&back, "emitted", cfg.base_dir, text, strlen(text), err, sizeof(err)), 0);
    assert_true(ptc_config_eq(&cfg, &back));
    free(text);
    ptc_config_dispose(&back);
    ptc_config_dispose(&cfg);
}

typedef struct {
    const char *yaml;
    const char *message; /* '@' stands for tls_dir; a trailing '*': the message starts with this */
} error_case_t;

#define P "jwt:\n  providers:\n    - name: p\n      jwks_file: keys.json\n" /* lines 1-4 */
#define R "routes:\n  - prefix: /\n    upstream: default\n"               /* lines 1-3 */

static const error_case_t error_cases[] = {
    /* request_id, trace */
    {"request_id: yes\n", "@/t.yaml:1: request_id: invalid value \"yes\" (expected true, false or a mapping)"},
    {"request_id:\n", "@/t.yaml:1: request_id: expected a mapping, true or false, got null"},
    {"request_id: [x-id]\n", "@/t.yaml:1: request_id: expected a mapping, true or false, got a sequence"},
    {"request_id:\n  header: content-length\n",
     "@/t.yaml:2: request_id.header: cannot set header \"content-length\": the gateway frames each message itself"},
    {"request_id: {header: \"x id\"}\n", "@/t.yaml:1: request_id.header: cannot set header \"x id\": the name is not an HTTP token"},
    {"request_id: {header: Connection}\n", "@/t.yaml:1: request_id.header: cannot set header \"connection\": it is a hop-by-hop header"},
    {"request_id: {header: \"\"}\n", "@/t.yaml:1: request_id.header: cannot set header \"\": the name is empty"},
    {"request_id: {header: [x]}\n", "@/t.yaml:1: request_id.header: expected a header name, got a sequence"},
    {"request_id: {max_length: 0}\n", "@/t.yaml:1: request_id.max_length: must be between 1 and 128"},
    {"request_id: {max_length: 129}\n", "@/t.yaml:1: request_id.max_length: must be between 1 and 128"},
    {"request_id: {trust: true}\n", "@/t.yaml:1: request_id.trust: unknown key"},
    {"request_id: {enabled: on}\n", "@/t.yaml:1: request_id.enabled: invalid boolean \"on\" (expected true or false)"},
    {"request_id: {enabled: true, enabled: false}\n", "@/t.yaml:1: request_id.enabled: duplicate key"},
    {"trace: {sampled: 1}\n", "@/t.yaml:1: trace.sampled: invalid boolean \"1\" (expected true or false)"},
    {"trace: off\n", "@/t.yaml:1: trace: invalid value \"off\" (expected true, false or a mapping)"},
    {"trace: {sample: true}\n", "@/t.yaml:1: trace.sample: unknown key"},
    /* header rules: structure */
    {"headers:\n", "@/t.yaml:1: headers: expected a mapping, got null"},
    {"headers: []\n", "@/t.yaml:1: headers: expected a mapping, got a sequence"},
    {"headers: {requests: []}\n", "@/t.yaml:1: headers.requests: unknown key"},
    {"headers: {request: []}\n", "@/t.yaml:1: headers.request: must not be empty"},
    {"headers: {response: {set: a}}\n", "@/t.yaml:1: headers.response: expected a sequence, got a mapping"},
    {"headers:\n  request:\n    - x-a\n", "@/t.yaml:3: headers.request[0]: expected a mapping, got a string"},
    {"headers:\n  request:\n    - {value: x}\n", "@/t.yaml:3: headers.request[0]: needs one of add, set, remove or rename"},
    {"headers:\n  request:\n    - {set: x-a, add: x-b, value: v}\n",
     "@/t.yaml:3: headers.request[0].add: only one of add, set, remove and rename may be given"},
    {"headers:\n  request:\n    - {sett: x-a}\n", "@/t.yaml:3: headers.request[0].sett: unknown key"},
    {"headers:\n  request:\n    - {set: x-a, value: v, value: w}\n", "@/t.yaml:3: headers.request[0].value: duplicate key"},
    {"headers:\n  request:\n    - {set: x-a}\n", "@/t.yaml:3: headers.request[0].value: is required with add and set"},
    {"headers:\n  trailers:\n    - add: x-a\n", "@/t.yaml:3: headers.trailers[0].value: is required with add and set"},
    {"headers:\n  request:\n    - {remove: x-a, value: v}\n", "@/t.yaml:3: headers.request[0].value: only used with add and set"},
    {"headers:\n  request:\n    - {rename: x-a, value: v, to: x-b}\n", "@/t.yaml:3: headers.request[0].value: only used with add and set"},
    {"headers:\n  request:\n    - {rename: x-a}\n", "@/t.yaml:3: headers.request[0].to: is required with rename"},
    {"headers:\n  request:\n    - {set: x-a, value: v, to: x-b}\n", "@/t.yaml:3: headers.request[0].to: only used with rename"},
    {"headers:\n  request:\n    - {remove: x-a, to: x-b}\n", "@/t.yaml:3: headers.request[0].to: only used with rename"},
    /* header rules: names */
    {"headers:\n  request:\n    - {set: content-length, value: \"1\"}\n",
     "@/t.yaml:3: headers.request[0].set: cannot set header \"content-length\": the gateway frames each message itself"},
    {"headers:\n  request:\n    - {add: TE, value: trailers}\n",
     "@/t.yaml:3: headers.request[0].add: cannot add header \"te\": it is a hop-by-hop header"},
    {"headers:\n  response:\n    - {remove: \":status\"}\n",
     "@/t.yaml:3: headers.response[0].remove: cannot remove header \":status\": it is a pseudo-header"},
    {"headers:\n  request:\n    - {rename: Transfer-Encoding, to: x-te}\n",
     "@/t.yaml:3: headers.request[0].rename: cannot rename header \"transfer-encoding\": the gateway frames each message itself"},
    {"headers:\n  request:\n    - {rename: x-a, to: Host}\n",
     "@/t.yaml:3: headers.request[0].to: cannot set header \"host\": the gateway derives it from the request's authority"},
    {"headers:\n  request:\n    - {set: \"x(a)\", value: v}\n",
     "@/t.yaml:3: headers.request[0].set: cannot set header \"x(a)\": the name is not an HTTP token"},
    {"headers:\n  request:\n    - {remove: [x-a]}\n", "@/t.yaml:3: headers.request[0].remove: expected a header name, got a sequence"},
    {"headers:\n  request:\n    - {rename: x-a, to: ~}\n", "@/t.yaml:3: headers.request[0].to: expected a header name, got null"},
    /* header rules: values */
    {"headers:\n  response:\n    - {remove: x-a}\n    - {set: x-b, value: \"%FOO%\"}\n",
     "@/t.yaml:4: headers.response[1].value: unknown variable %FOO%"},
    {"headers:\n  request:\n    - {set: x-a, value: \"a %RESP(Content-Type)%\"}\n",
     "@/t.yaml:3: headers.request[0].value: %RESP(content-type)% cannot be used in request rules: there is no response yet"},
    {"headers:\n  request:\n    - {set: x-a, value: \"50%\"}\n",
     "@/t.yaml:3: headers.request[0].value: unterminated variable at offset 2 (write %% for a literal %)"},
    {"headers:\n  request:\n    - {set: x-a, value: \"a\\nb\"}\n",
     "@/t.yaml:3: headers.request[0].value: control character 0x0a at offset 1"},
    {"headers:\n  request:\n    - {set: x-a, value: \"%REQ()%\"}\n", "@/t.yaml:3: headers.request[0].value: %REQ()% needs a header name"},
    {"headers:\n  request:\n    - {set: x-a, value: [v]}\n", "@/t.yaml:3: headers.request[0].value: expected a header value, got a sequence"},
    {"headers:\n  request:\n    - {set: x-a, value: }\n", "@/t.yaml:3: headers.request[0].value: expected a header value, got null"},
    /* header rules in a route; native_filters */
    {R "    headers: {response: [{set: Host, value: x}]}\n",
     "@/t.yaml:4: routes[0].headers.response[0].set: cannot set header \"host\": the gateway derives it from the request's authority"},
    {R "    headers:\n      request:\n        - {set: x-a, value: \"%RESP(x)%\"}\n",
     "@/t.yaml:6: routes[0].headers.request[0].value: %RESP(x)% cannot be used in request rules: there is no response yet"},
    {R "    headers: {requst: []}\n", "@/t.yaml:4: routes[0].headers.requst: unknown key"},
    {R "    headers: ~\n", "@/t.yaml:4: routes[0].headers: expected a mapping, got null"},
    {R "    native_filters: no\n", "@/t.yaml:4: routes[0].native_filters: invalid boolean \"no\" (expected true or false)"},
    /* get_cache_control */
    {R "    get_cache_control: \"\"\n",
     "@/t.yaml:4: routes[0].get_cache_control: must be Cache-Control directives: token or token=value, separated by commas (e.g. \"public, max-age=60\")"},
    {R "    get_cache_control: \"max-age=60,,\"\n",
     "@/t.yaml:4: routes[0].get_cache_control: must be Cache-Control directives: token or token=value, separated by commas (e.g. \"public, max-age=60\")"},
    {R "    get_cache_control: \"max-age=\"\n", "@/t.yaml:4: routes[0].get_cache_control: has a directive with '=' but no value"},
    {R "    get_cache_control: \"max age=1\"\n",
     "@/t.yaml:4: routes[0].get_cache_control: must be Cache-Control directives: token or token=value, separated by commas (e.g. \"public, max-age=60\")"},
    {R "    get_cache_control: \"private=\\\"x\"\n", "@/t.yaml:4: routes[0].get_cache_control: has an unterminated quoted-string or a control character"},
    {R "    get_cache_control: \"no-cache\\r\\nx: y\"\n",
     "@/t.yaml:4: routes[0].get_cache_control: must be Cache-Control directives: token or token=value, separated by commas (e.g. \"public, max-age=60\")"},
    {R "    get_cache_control: [max-age=1]\n", "@/t.yaml:4: routes[0].get_cache_control: expected a Cache-Control value, got a sequence"},
    /* jwt: structure */
    {"jwt:\n", "@/t.yaml:1: jwt: expected a mapping, got null"},
    {"jwt: disabled\n", "@/t.yaml:1: jwt: expected a mapping, got a string"},
    {"jwt: {provider: []}\n", "@/t.yaml:1: jwt.provider: unknown key"},
    {"jwt: {providers: []}\n", "@/t.yaml:1: jwt.providers: must not be empty"},
    {"jwt: {providers: {name: a}}\n", "@/t.yaml:1: jwt.providers: expected a sequence, got a mapping"},
    {P "      jwks: x\n", "@/t.yaml:5: jwt.providers[0].jwks: unknown key"},
    /* jwt: providers */
    {"jwt:\n  providers:\n    - {jwks_file: keys.json}\n", "@/t.yaml:3: jwt.providers[0].name: is required"},
    {"jwt:\n  providers:\n    - {name: my provider, jwks_file: keys.json}\n",
     "@/t.yaml:3: jwt.providers[0].name: may only contain A-Z a-z 0-9 . _ -"},
    {"jwt:\n  providers:\n    - {name: a, jwks_file: keys.json}\n    - {name: a, jwks_file: keys.json}\n",
     "@/t.yaml:4: jwt.providers[1].name: duplicate provider name \"a\" (also jwt.providers[0])"},
    {"jwt:\n  providers:\n    - name: a\n", "@/t.yaml:3: jwt.providers[0]: needs jwks_file or jwks_url"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_file: nope.json\n",
     "@/t.yaml:4: jwt.providers[0].jwks_file: cannot read \"@/nope.json\": No such file or directory"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_file: .\n", "@/t.yaml:4: jwt.providers[0].jwks_file: cannot read \"@/.\": Is a directory"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_file: \"\"\n", "@/t.yaml:4: jwt.providers[0].jwks_file: must not be empty"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: ftp://issuer.example/jwks\n",
     "@/t.yaml:4: jwt.providers[0].jwks_url: must be an https:// URL"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: http://issuer.example/jwks\n",
     "@/t.yaml:4: jwt.providers[0].jwks_url: http:// is only allowed for 127.0.0.1, localhost and [::1]; use https://"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: http://127.0.0.1.evil.example/jwks\n",
     "@/t.yaml:4: jwt.providers[0].jwks_url: http:// is only allowed for 127.0.0.1, localhost and [::1]; use https://"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: https:///jwks\n", "@/t.yaml:4: jwt.providers[0].jwks_url: has no valid host"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: \"https://[::1/jwks\"\n",
     "@/t.yaml:4: jwt.providers[0].jwks_url: has no valid host"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: \"https://a b/\"\n",
     "@/t.yaml:4: jwt.providers[0].jwks_url: must not contain spaces, control characters or non-ASCII characters (percent-encode "
     "them)"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: \"\"\n", "@/t.yaml:4: jwt.providers[0].jwks_url: must not be empty"},
    {P "      jwks_ca: a.pem\n", "@/t.yaml:5: jwt.providers[0].jwks_ca: only used with jwks_url"},
    {"jwt:\n  providers:\n    - name: a\n      jwks_url: https://i.example/k\n      jwks_ca: junk.pem\n",
     "@/t.yaml:5: jwt.providers[0].jwks_ca: cannot load CA certificates \"@/junk.pem\": *"},
    {P "      jwks_cache: 0\n", "@/t.yaml:5: jwt.providers[0].jwks_cache: must be greater than 0"},
    {P "      clock_skew: 1x\n",
     "@/t.yaml:5: jwt.providers[0].clock_skew: invalid duration \"1x\": expected a number followed by ms, s, m or h"},
    {P "      max_token_size: 255\n", "@/t.yaml:5: jwt.providers[0].max_token_size: must be between 256 and 1048576 bytes"},
    {P "      max_token_size: 2MiB\n", "@/t.yaml:5: jwt.providers[0].max_token_size: must be between 256 and 1048576 bytes"},
    {P "      issuer: \"\"\n", "@/t.yaml:5: jwt.providers[0].issuer: must not be empty"},
    {P "      issuer: [a]\n", "@/t.yaml:5: jwt.providers[0].issuer: expected an issuer, got a sequence"},
    {P "      audiences: []\n", "@/t.yaml:5: jwt.providers[0].audiences: must not be empty"},
    {P "      audiences: \"\"\n", "@/t.yaml:5: jwt.providers[0].audiences: must not be empty"},
    {P "      audiences: [a, \"\"]\n", "@/t.yaml:5: jwt.providers[0].audiences[1]: must not be empty"},
    {P "      audiences: {a: 1}\n", "@/t.yaml:5: jwt.providers[0].audiences: expected an audience or a sequence of them, got a mapping"},
    {P "      audiences:\n", "@/t.yaml:5: jwt.providers[0].audiences: expected an audience or a sequence of them, got null"},
    {P "      audiences: [[a]]\n", "@/t.yaml:5: jwt.providers[0].audiences[0]: expected an audience, got a sequence"},
    {P "      strip_token: yes\n", "@/t.yaml:5: jwt.providers[0].strip_token: invalid boolean \"yes\" (expected true or false)"},
    {P "      forward_payload: Host\n",
     "@/t.yaml:5: jwt.providers[0].forward_payload: cannot set header \"host\": the gateway derives it from the request's authority"},
    /* jwt: from */
    {P "      from: authorization\n", "@/t.yaml:5: jwt.providers[0].from: expected a mapping, got a string"},
    {P "      from: {}\n", "@/t.yaml:5: jwt.providers[0].from: needs one of header, cookie or query"},
    {P "      from: {prefix: \"Bearer \"}\n", "@/t.yaml:5: jwt.providers[0].from: needs one of header, cookie or query"},
    {P "      from: {header: a, cookie: b}\n",
     "@/t.yaml:5: jwt.providers[0].from.cookie: only one of header, cookie and query may be given"},
    {P "      from: {cookie: s, prefix: \"Bearer \"}\n", "@/t.yaml:5: jwt.providers[0].from.prefix: only used with header"},
    {P "      from: {header: \"x y\"}\n", "@/t.yaml:5: jwt.providers[0].from.header: invalid header name \"x y\": must be an HTTP token"},
    {P "      from: {cookie: \"a;b\"}\n", "@/t.yaml:5: jwt.providers[0].from.cookie: invalid cookie name \"a;b\": must be an HTTP token"},
    {P "      from: {query: \"a&b\"}\n",
     "@/t.yaml:5: jwt.providers[0].from.query: invalid query parameter name \"a&b\": must be printable ASCII without spaces, &, = "
     "or #"},
    {P "      from: {query: \"\"}\n",
     "@/t.yaml:5: jwt.providers[0].from.query: invalid query parameter name \"\": must be printable ASCII without spaces, &, = or #"},
    {P "      from: {header: x, prefix: \"\"}\n", "@/t.yaml:5: jwt.providers[0].from.prefix: must not be empty"},
    {P "      from: {header: x, prefix: \"a\\nb\"}\n", "@/t.yaml:5: jwt.providers[0].from.prefix: must not contain control characters"},
    {P "      from: {header: [x]}\n", "@/t.yaml:5: jwt.providers[0].from.header: expected a header name, got a sequence"},
    {P "      from: {query: ~}\n", "@/t.yaml:5: jwt.providers[0].from.query: expected a query parameter name, got null"},
    /* jwt: claims_to_headers */
    {P "      claims_to_headers: []\n", "@/t.yaml:5: jwt.providers[0].claims_to_headers: must not be empty"},
    {P "      claims_to_headers: [{claim: sub}]\n", "@/t.yaml:5: jwt.providers[0].claims_to_headers[0].header: is required"},
    {P "      claims_to_headers: [{header: x-sub}]\n", "@/t.yaml:5: jwt.providers[0].claims_to_headers[0].claim: is required"},
    {P "      claims_to_headers: [{claim: \"a b\", header: x}]\n",
     "@/t.yaml:5: jwt.providers[0].claims_to_headers[0].claim: must be printable ASCII without spaces"},
    {P "      claims_to_headers: [{claim: \"\", header: x}]\n", "@/t.yaml:5: jwt.providers[0].claims_to_headers[0].claim: must not be empty"},
    {P "      claims_to_headers: [{claim: sub, header: Content-Length}]\n",
     "@/t.yaml:5: jwt.providers[0].claims_to_headers[0].header: cannot set header \"content-length\": the gateway frames each message "
     "itself"},
    {P "      claims_to_headers:\n        - {claim: sub, header: x-user}\n        - {claim: email, header: X-User}\n",
     "@/t.yaml:7: jwt.providers[0].claims_to_headers[1].header: same header as jwt.providers[0].claims_to_headers[0]"},
    {P "      claims_to_headers: [{claim: sub, header: x, as: y}]\n", "@/t.yaml:5: jwt.providers[0].claims_to_headers[0].as: unknown key"},
    /* jwt: requirements */
    {"jwt:\n  default: {}\n", "@/t.yaml:2: jwt.default.providers: is required"},
    {"jwt:\n  default: {providers: []}\n", "@/t.yaml:2: jwt.default.providers: must not be empty"},
    {"jwt:\n  default: {providers: [nope]}\n", "@/t.yaml:2: jwt.default.providers[0]: unknown provider \"nope\""},
    {P "  default: {providers: [p, p]}\n", "@/t.yaml:5: jwt.default.providers[1]: duplicate provider \"p\""},
    {P "  default: {providers: [[p]]}\n", "@/t.yaml:5: jwt.default.providers[0]: expected a provider name, got a sequence"},
    {P "  default: {providers: [p], optional: maybe}\n",
     "@/t.yaml:5: jwt.default.optional: invalid boolean \"maybe\" (expected true or false)"},
    {P "  default: {providers: [p], extra: 1}\n", "@/t.yaml:5: jwt.default.extra: unknown key"},
    {P "  default: {providers: [p], require_claims: {}}\n", "@/t.yaml:5: jwt.default.require_claims: must not be empty"},
    {P "  default: {providers: [p], require_claims: [scope]}\n",
     "@/t.yaml:5: jwt.default.require_claims: expected a mapping, got a sequence"},
    {P "  default:\n    providers: [p]\n    require_claims:\n      \"a b\": x\n",
     "@/t.yaml:8: jwt.default.require_claims.a b: must be printable ASCII without spaces"},
    {P "  default:\n    providers: [p]\n    require_claims:\n      scope: \"\"\n",
     "@/t.yaml:8: jwt.default.require_claims.scope: must not be empty"},
    {P "  default:\n    providers: [p]\n    require_claims:\n      scope: [a]\n",
     "@/t.yaml:8: jwt.default.require_claims.scope: expected a claim value, got a sequence"},
    {P "  default:\n    providers: [p]\n    require_claims:\n      scope: a\n      scope: b\n",
     "@/t.yaml:9: jwt.default.require_claims.scope: duplicate key"},
    {P "  default:\n    providers: [p]\n    require_claims:\n      ? [a]\n      : b\n",
     "@/t.yaml:8: jwt.default.require_claims: keys must be strings, got a sequence"},
    {P "  default: [p]\n", "@/t.yaml:5: jwt.default: expected a mapping or disabled, got a sequence"},
    {P "  default: off\n", "@/t.yaml:5: jwt.default: invalid value \"off\" (expected disabled or a mapping)"},
    {R "    jwt: enabled\n", "@/t.yaml:4: routes[0].jwt: invalid value \"enabled\" (expected disabled or a mapping)"},
    {R "    jwt: ~\n", "@/t.yaml:4: routes[0].jwt: expected a mapping or disabled, got null"},
    {R "    jwt: {optional: true}\n", "@/t.yaml:4: routes[0].jwt.providers: is required"},
    {R "    jwt:\n      providers:\n        - nope\n", "@/t.yaml:6: routes[0].jwt.providers[0]: unknown provider \"nope\""},
    {P "routes:\n  - {prefix: /a/, upstream: default}\n  - {prefix: /, upstream: default, jwt: {providers: [q]}}\n",
     "@/t.yaml:7: routes[1].jwt.providers[0]: unknown provider \"q\""},
};

static void test_errors(void **state)
{
    (void)state;
    write_file("keys.json", JWKS);
    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        ptc_config_t cfg;
        assert_int_equal(ptc_config_init_default(&cfg), 0);
        assert_load_error(&cfg, i, error_cases[i].yaml, error_cases[i].message);
        assert_filters_default(&cfg); /* untouched */
        ptc_config_dispose(&cfg);
    }
}

/* What the loader refuses with a line number, ptc_config_validate refuses in configs built by hand. */
static void test_validate(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[512];

    load_example(&cfg);
#define INVALID(msg)                                                                                                               \
    do {                                                                                                                           \
        assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), PTC_ECONFIG);                                                \
        assert_true(strncmp(err, tls_dir, strlen(tls_dir)) == 0);                                                                  \
        assert_string_equal(err + strlen(tls_dir), "/t.yaml: " msg);                                                               \
    } while (0)

    cfg.request_id.max_length = 129;
    INVALID("request_id.max_length: must be between 1 and 128");
    cfg.request_id.max_length = 0;
    INVALID("request_id.max_length: must be between 1 and 128");
    cfg.request_id.max_length = 1;
    cfg.request_id.header[0] = ':';
    INVALID("request_id.header: missing or not a header the gateway may set");
    cfg.request_id.header[0] = 'x';

    char *saved = cfg.headers.request[0].value;
    cfg.headers.request[0].value = NULL;
    INVALID("headers.request[0].value: missing");
    cfg.headers.request[0].value = saved;
    cfg.headers.request[2].value = saved;
    INVALID("headers.request[2].value: only used with add and set");
    cfg.headers.request[2].value = NULL;
    cfg.headers.request[3].op = PTC_HEADER_SET;
    INVALID("headers.request[3].value: missing");
    cfg.headers.request[3].op = PTC_HEADER_RENAME;
    cfg.headers.request[3].to[0] = 'X';
    INVALID("headers.request[3].to: missing or unsettable header name");
    cfg.headers.request[3].to[0] = 'x';
    cfg.routes[1].headers.response[0].name[0] = ':';
    INVALID("routes[1].headers.response[0]: missing or unsettable header name");
    cfg.routes[1].headers.response[0].name[0] = 'x';

    cfg.routes[1].jwt.providers[0] = 3;
    INVALID("routes[1].jwt.providers[0]: no provider with index 3");
    cfg.routes[1].jwt.providers[0] = 2;
    cfg.jwt_default.providers[1] = 7;
    INVALID("jwt.default.providers[1]: no provider with index 7");
    cfg.jwt_default.providers[1] = 1;
    cfg.jwt_providers[2].name[0] = 'm';
    cfg.jwt_providers[2].name[1] = 'a';
    cfg.jwt_providers[2].name[2] = 'i';
    cfg.jwt_providers[2].name[3] = 'n';
    cfg.jwt_providers[2].name[4] = '\0';
    INVALID("jwt.providers[2].name: duplicate provider name \"main\"");
    cfg.jwt_providers[2].name[0] = 'q';
    cfg.jwt_providers[1].max_token_size = 100;
    INVALID("jwt.providers[1].max_token_size: must be between 256 and 1048576 bytes");
    cfg.jwt_providers[1].max_token_size = 1u << 20;
    char *url = cfg.jwt_providers[1].jwks_url;
    cfg.jwt_providers[1].jwks_url = NULL;
    INVALID("jwt.providers[1]: needs jwks_file or jwks_url");
    cfg.jwt_providers[1].jwks_url = url;
    cfg.jwt_providers[0].claim_headers[1].header[0] = ':';
    INVALID("jwt.providers[0].claims_to_headers[1]: invalid");
    cfg.jwt_providers[0].claim_headers[1].header[0] = 'x';
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);
#undef INVALID
    ptc_config_dispose(&cfg);
}

#ifdef PTC_TEST_FAILMALLOC
static void has_two_providers(const ptc_config_t *cfg)
{
    assert_int_equal(cfg->num_jwt_providers, 2);
}

static void failmalloc_run(const char *yaml, int expected)
{
    failmalloc_load_run(load_in_dir, yaml, NULL, expected, assert_filters_default,
                        expected == 0 ? has_two_providers : assert_filters_default);
}

/* After the remap below failed: the first config, routes[1] naming provider 0. */
static void has_routes_unmapped(const ptc_config_t *cfg)
{
    has_two_providers(cfg);
    assert_int_equal(cfg->routes[1].jwt.providers[0], 0);
}
#endif

/* Every allocation of the new loader paths fails once (the CA check is OpenSSL's and left out). */
static void test_allocation_failures(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    static const char yaml[] = "request_id: {header: X-Id, max_length: 7}\n"
                               "trace: {sampled: true}\n"
                               "headers:\n"
                               "  request: [{set: x-a, value: \"%REQ(b)% c\"}, {rename: x-b, to: x-c}]\n"
                               "  response: [{add: x-d, value: \"%RESP(e)%\"}]\n"
                               "  trailers: [{remove: x-e}]\n"
                               "jwt:\n"
                               "  providers:\n"
                               "    - name: main\n"
                               "      issuer: https://i.example/\n"
                               "      audiences: [a, b]\n"
                               "      from: {header: x-token, prefix: \"Token \"}\n"
                               "      jwks_file: keys.json\n"
                               "      claims_to_headers: [{claim: sub, header: x-sub}]\n"
                               "      forward_payload: x-payload\n"
                               "    - name: other\n"
                               "      audiences: c\n"
                               "      jwks_url: https://o.example/jwks\n"
                               "  default: {providers: [other, main], require_claims: {scope: read}}\n"
                               "routes:\n"
                               "  - prefix: /a/\n"
                               "    upstream: default\n"
                               "    headers: {request: [{set: x-r, value: \"%ROUTE%\"}]}\n"
                               "    jwt: {providers: [main], optional: true, require_claims: {a.b: c}}\n"
                               "    native_filters: false\n"
                               "  - {path: /b/c, upstream: default, jwt: disabled}\n"
                               "  - {prefix: /, upstream: default}\n";
    char bad[sizeof(yaml) + 64];

    write_file("keys.json", JWKS);
    failmalloc_run(yaml, 0);
    snprintf(bad, sizeof(bad), "%sworkers: x\n", yaml);
    failmalloc_run(bad, PTC_ECONFIG);
    failmalloc_run("headers: {request: [{set: x-a, value: \"%RESP(b)%\"}]}\n", PTC_ECONFIG);

    /* the current routes copied to follow a new provider list */
    failmalloc_load_run(load_in_dir, yaml, "jwt: {providers: [{name: z, jwks_file: keys.json}, {name: main, jwks_file: keys.json}]}\n",
                        0, assert_filters_default, has_routes_unmapped);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_example, tls_setup, tls_teardown),
        cmocka_unit_test(test_request_id_and_trace),
        cmocka_unit_test(test_headers_kept_and_replaced),
        cmocka_unit_test_setup_teardown(test_jwt_names, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_errors, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_validate, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
