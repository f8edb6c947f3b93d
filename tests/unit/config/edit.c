/* Unit tests for src/config/edit.c: deep copies and the admin API's edits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/config.h"

#include "../failmalloc.h"
#include "rich_config.h"

static int load(ptc_config_t *cfg, const char *yaml, char *err, size_t errlen)
{
    return ptc_config_load_string(cfg, "t.yaml", yaml, strlen(yaml), err, errlen);
}

static bool allowed(const ptc_cors_config_t *c, const char *origin)
{
    return ptc_cors_origin_allowed(c, ptc_iov(origin, strlen(origin)));
}

/* No string of the copy is shared with the original. */
static void assert_not_shared(const char *a, const char *b)
{
    if (a != NULL)
        assert_true(a != b);
}

static void test_copy(void **state)
{
    (void)state;
    ptc_config_t src, copy, again;
    char err[256];

    load_rich(&src);
    memset(&copy, 0x5a, sizeof(copy)); /* dst need not be initialised */
    assert_int_equal(ptc_config_copy(&copy, &src), 0);
    assert_true(ptc_config_eq(&src, &copy));
    assert_string_equal(copy.source, src.source);
    assert_string_equal(copy.base_dir, src.base_dir);
    assert_int_equal(copy.workers, 3);
    assert_false(copy.watch);
    assert_string_equal(copy.admin.token, "rich-token");
    assert_int_equal(copy.admin.address->port, 9901);
    assert_int_equal(copy.listeners[1].tls->num_certs, 3);
    assert_int_equal(copy.upstreams[0].num_endpoints, 4);
    assert_non_null(copy.routes[0].cors);
    assert_null(copy.routes[3].cors);
    assert_false(copy.request_id.enabled);
    assert_true(copy.trace.sampled);
    assert_int_equal(copy.headers.num_trailers, 2);
    assert_int_equal(copy.num_jwt_providers, 3);
    assert_int_equal(copy.jwt_default.num_providers, 2);
    assert_true(copy.jwt_default.optional);
    assert_true(copy.routes[0].jwt.disabled);
    assert_false(copy.routes[2].native_filters);
    assert_string_equal(copy.routes[2].get_cache_control, src.routes[2].get_cache_control);
    assert_not_shared(copy.routes[2].get_cache_control, src.routes[2].get_cache_control);

    /* deep: nothing points into the original */
    assert_not_shared(copy.source, src.source);
    assert_not_shared(copy.base_dir, src.base_dir);
    assert_not_shared(copy.health_path, src.health_path);
    assert_not_shared(copy.pid_file, src.pid_file);
    assert_not_shared(copy.admin.token, src.admin.token);
    assert_not_shared(copy.admin.token_file, src.admin.token_file);
    assert_true(copy.admin.address != src.admin.address);
    assert_not_shared(copy.admin.address->host, src.admin.address->host);
    assert_true(copy.listeners != src.listeners);
    assert_true(copy.listeners[1].tls != src.listeners[1].tls);
    assert_not_shared(copy.listeners[1].tls->certs[2].key, src.listeners[1].tls->certs[2].key);
    assert_not_shared(copy.listeners[1].tls->client_ca, src.listeners[1].tls->client_ca);
    assert_true(copy.upstreams[0].endpoints != src.upstreams[0].endpoints);
    assert_not_shared(copy.upstreams[0].endpoints[3].host, src.upstreams[0].endpoints[3].host);
    assert_not_shared(copy.upstreams[0].tls->server_name, src.upstreams[0].tls->server_name);
    assert_true(copy.routes[0].cors != src.routes[0].cors);
    assert_true(copy.cors.origins[2].regex != src.cors.origins[2].regex); /* recompiled */
    assert_not_shared(copy.request_id.header, src.request_id.header);
    assert_true(copy.headers.request != src.headers.request);
    assert_not_shared(copy.headers.request[0].value, src.headers.request[0].value);
    assert_not_shared(copy.headers.request[3].to, src.headers.request[3].to);
    assert_not_shared(copy.headers.trailers[1].name, src.headers.trailers[1].name);
    assert_true(copy.jwt_providers != src.jwt_providers);
    assert_true(copy.jwt_providers[0].audiences != src.jwt_providers[0].audiences);
    assert_not_shared(copy.jwt_providers[0].audiences[2], src.jwt_providers[0].audiences[2]);
    assert_not_shared(copy.jwt_providers[0].from_prefix, src.jwt_providers[0].from_prefix);
    assert_not_shared(copy.jwt_providers[0].jwks_ca, src.jwt_providers[0].jwks_ca);
    assert_not_shared(copy.jwt_providers[0].claim_headers[1].claim, src.jwt_providers[0].claim_headers[1].claim);
    assert_not_shared(copy.jwt_providers[2].jwks_url, src.jwt_providers[2].jwks_url);
    assert_true(copy.jwt_default.providers != src.jwt_default.providers);
    assert_not_shared(copy.jwt_default.claims[4].value, src.jwt_default.claims[4].value);
    assert_true(copy.routes[2].headers.request != src.routes[2].headers.request);
    assert_not_shared(copy.routes[2].headers.trailers[0].to, src.routes[2].headers.trailers[0].to);
    assert_true(copy.routes[2].jwt.providers != src.routes[2].jwt.providers);
    assert_not_shared(copy.routes[2].jwt.claims[0].claim, src.routes[2].jwt.claims[0].claim);

    /* the copy lives on its own */
    ptc_config_dispose(&src);
    assert_true(allowed(&copy.cors, "https://shop.example.org"));
    assert_false(allowed(copy.routes[2].cors, "https://shop.example.org"));
    assert_true(allowed(copy.routes[2].cors, "https://other.example"));
    assert_int_equal(ptc_config_validate(&copy, err, sizeof(err)), 0);
    assert_int_equal(ptc_config_copy(&again, &copy), 0);
    assert_true(ptc_config_eq(&again, &copy));
    ptc_config_dispose(&copy);
    ptc_config_dispose(&again);

    /* the default config, and one without listeners, upstreams and routes (empty arrays stay NULL) */
    assert_int_equal(ptc_config_init_default(&src), 0);
    assert_int_equal(ptc_config_copy(&copy, &src), 0);
    assert_true(ptc_config_eq(&src, &copy));
    assert_null(copy.admin.address);
    assert_null(copy.pid_file);
    assert_false(copy.cors.enabled);
    ptc_config_dispose(&copy);
    ptc_config_dispose(&src);
    ptc_config_t empty = {0};
    assert_int_equal(ptc_config_copy(&copy, &empty), 0);
    assert_null(copy.listeners);
    assert_null(copy.upstreams);
    assert_null(copy.routes);
    assert_null(copy.source);
    assert_true(ptc_config_eq(&empty, &copy));
    ptc_config_dispose(&copy);
}

static void test_remove_allow_origin(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];

    assert_int_equal(ptc_config_init_default(&cfg), 0);
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "*"), PTC_EINVAL); /* no policy */
    assert_int_equal(
        load(&cfg,
             "cors:\n  allow_origins: [https://a.test, \"~^https://[a-z]+\\\\.test$\", https://b.test, https://a.test]\n"
             "routes:\n  - {prefix: /, upstream: default, cors: {allow_origins: [https://r.test]}}\n",
             err, sizeof(err)),
        0);

    /* exactly the text: neither another spelling nor what a pattern matches */
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "https://A.test"), PTC_EINVAL);
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "https://x.test"), PTC_EINVAL);
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "~^https://[a-z]+\\.test"), PTC_EINVAL);
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "https://r.test"), PTC_EINVAL); /* a route's, not the global one */
    assert_int_equal(cfg.cors.num_origins, 4);

    /* every copy of it goes; the others keep their order */
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "https://a.test"), 0);
    assert_int_equal(cfg.cors.num_origins, 2);
    assert_string_equal(cfg.cors.origins[0].text, "~^https://[a-z]+\\.test$");
    assert_string_equal(cfg.cors.origins[1].text, "https://b.test");
    assert_true(allowed(&cfg.cors, "https://a.test")); /* still, by the regex */
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "~^https://[a-z]+\\.test$"), 0);
    assert_false(allowed(&cfg.cors, "https://a.test"));
    assert_true(allowed(&cfg.cors, "https://b.test"));
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "https://a.test"), PTC_EINVAL);

    /* the last one: an enabled policy allowing nothing */
    assert_int_equal(ptc_config_remove_allow_origin(&cfg, "https://b.test"), 0);
    assert_int_equal(cfg.cors.num_origins, 0);
    assert_null(cfg.cors.origins);
    assert_true(cfg.cors.enabled);
    assert_false(allowed(&cfg.cors, "https://b.test"));
    assert_true(allowed(cfg.routes[0].cors, "https://r.test"));
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    /* and origins can be added again */
    assert_int_equal(ptc_config_add_allow_origin(&cfg, "https://c.test", err, sizeof(err)), 0);
    assert_true(allowed(&cfg.cors, "https://c.test"));
    ptc_config_dispose(&cfg);
}

static void test_find_and_set_route_upstream(void **state)
{
    (void)state;
    ptc_config_t cfg;
    char err[256];

    load_rich(&cfg);
    /* routes in match order: exact paths first, then the longest prefixes */
    assert_int_equal(ptc_config_find_route(&cfg, "path", "/portico.test.Echo/Private"), 0);
    assert_int_equal(ptc_config_find_route(&cfg, "path", "/a.B/C"), 1);
    assert_int_equal(ptc_config_find_route(&cfg, "prefix", "/portico.test.Echo/"), 2);
    assert_int_equal(ptc_config_find_route(&cfg, "prefix", "/"), 5);
    assert_int_equal(ptc_config_find_route(&cfg, "path", "/"), -1);
    assert_int_equal(ptc_config_find_route(&cfg, "prefix", "/a.B/C"), -1);
    assert_int_equal(ptc_config_find_route(&cfg, "prefix", "/portico.test.Echo"), -1);
    assert_int_equal(ptc_config_find_route(&cfg, "exact", "/a.B/C"), -1);
    assert_int_equal(ptc_config_find_route(&cfg, "Prefix", "/"), -1);

    assert_int_equal(ptc_config_find_upstream(&cfg, "echo"), 0);
    assert_int_equal(ptc_config_find_upstream(&cfg, "1.5"), 4);
    assert_int_equal(ptc_config_find_upstream(&cfg, "Echo"), -1);
    assert_int_equal(ptc_config_find_upstream(&cfg, ""), -1);

    int r = ptc_config_find_route(&cfg, "prefix", "/");
    assert_int_equal(cfg.routes[r].upstream_index, 0);
    assert_int_equal(ptc_config_set_route_upstream(&cfg, (size_t)r, "sys", err, sizeof(err)), 0);
    assert_int_equal(cfg.routes[r].upstream_index, 2);
    assert_int_equal(ptc_config_route(&cfg, ptc_iov("/any.Thing/X", 12)), 2);
    assert_int_equal(ptc_config_validate(&cfg, err, sizeof(err)), 0);

    assert_int_equal(ptc_config_set_route_upstream(&cfg, (size_t)r, "nope", err, sizeof(err)), PTC_EINVAL);
    assert_string_equal(err, "routes[5].upstream: unknown upstream \"nope\"");
    assert_int_equal(cfg.routes[r].upstream_index, 2);
    assert_int_equal(ptc_config_set_route_upstream(&cfg, 6, "echo", err, sizeof(err)), PTC_EINVAL);
    assert_string_equal(err, "routes[6]: no such route (there are 6)");
    assert_int_equal(ptc_config_set_route_upstream(&cfg, 99, "echo", NULL, 0), PTC_EINVAL);
    ptc_config_dispose(&cfg);
}

/* Every allocation of a copy fails once: the target stays as it was (here: untouched bytes) and nothing leaks;
 * the edits allocate nothing. */
static void test_allocation_failures(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    ptc_config_t src;
    char err[256];

    load_rich(&src);
    for (long i = 0;; i++) {
        ptc_config_t copy;
        long live = failmalloc_live;
        memset(&copy, 0x5a, sizeof(copy));
        failmalloc_countdown = i;
        int ret = ptc_config_copy(&copy, &src);
        int injected = failmalloc_countdown < 0;
        failmalloc_countdown = -1;
        if (ret == 0) {
            assert_true(!injected || failmalloc_failed_in_libpcre2()); /* JIT: the interpreter takes over */
            assert_true(ptc_config_eq(&copy, &src));
            ptc_config_dispose(&copy);
        } else {
            assert_true(injected);
            assert_int_equal(ret, PTC_ENOMEM);
            for (size_t j = 0; j < sizeof(copy); j++)
                assert_int_equal(((unsigned char *)&copy)[j], 0x5a);
        }
        assert_int_equal(failmalloc_live, live);
        if (!injected)
            break;
    }

    failmalloc_countdown = 0;
    assert_int_equal(ptc_config_remove_allow_origin(&src, "*"), 0);
    assert_int_equal(ptc_config_set_route_upstream(&src, 0, "echo", err, sizeof(err)), 0);
    assert_int_equal(ptc_config_find_route(&src, "prefix", "/"), 5);
    assert_int_equal(ptc_config_find_upstream(&src, "dev"), 1);
    assert_int_equal(failmalloc_countdown, 0); /* no allocation was attempted */
    failmalloc_countdown = -1;
    ptc_config_dispose(&src);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy, tls_setup, tls_teardown),
        cmocka_unit_test(test_remove_allow_origin),
        cmocka_unit_test_setup_teardown(test_find_and_set_route_upstream, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
