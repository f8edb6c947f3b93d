/* Unit tests for src/upstream/health.c: the shared status table across reloads, the threshold and outlier
 * rules, and the grpc.health.v1 messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include "portico/health.h"

static void load(ptc_config_t *cfg, const char *yaml)
{
    char err[512];
    assert_int_equal(ptc_config_init_default(cfg), 0);
    int ret = ptc_config_load_string(cfg, "t.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (ret != 0)
        print_error("%s\n", err);
    assert_int_equal(ret, 0);
}

static const ptc_health_check_config_t HC = {
    .enabled = true, .interval_ms = 1000, .timeout_ms = 100, .healthy_threshold = 2, .unhealthy_threshold = 3};

/* ---- the table ---- */

static void test_table_keeps_what_stays(void **state)
{
    (void)state;
    ptc_config_t a, b;
    ptc_status_table_t *ta, *tb;

    load(&a, "upstreams:\n  - {name: x, endpoints: [h:1, h:2]}\n  - {name: y, endpoints: [\"[::1]:3\"]}\n"
             "routes: [{prefix: /, upstream: x}]\n");
    load(&b, "upstreams:\n  - {name: y, endpoints: [\"[::1]:3\", h:4]}\n  - {name: x, endpoints: [h:2]}\n"
             "routes: [{prefix: /, upstream: x}]\n");
    assert_int_equal(ptc_status_table_new(&ta, &a, NULL), 0);
    assert_int_equal(ta->num_upstreams, 2);
    assert_int_equal(ta->upstreams[0].num_endpoints, 2);
    assert_string_equal(ta->upstreams[0].endpoints[1]->label, "h:2");
    assert_string_equal(ta->upstreams[1].endpoints[0]->label, "[::1]:3");
    assert_string_equal(ta->upstreams[1].endpoints[0]->upstream, "y");
    atomic_store(&ta->upstreams[0].endpoints[1]->health, PTC_HEALTH_UNHEALTHY);
    atomic_store(&ta->upstreams[0].up->pending, 3);

    assert_int_equal(ptc_status_table_new(&tb, &b, ta), 0);
    /* by name and address, whatever the order */
    assert_ptr_equal(tb->upstreams[1].up, ta->upstreams[0].up);
    assert_ptr_equal(tb->upstreams[1].endpoints[0], ta->upstreams[0].endpoints[1]);
    assert_int_equal(atomic_load(&tb->upstreams[1].endpoints[0]->health), PTC_HEALTH_UNHEALTHY);
    assert_ptr_equal(tb->upstreams[0].endpoints[0], ta->upstreams[1].endpoints[0]);
    assert_ptr_not_equal(tb->upstreams[0].endpoints[1], NULL);
    assert_int_equal(atomic_load(&tb->upstreams[0].endpoints[1]->health), PTC_HEALTH_UNKNOWN);
    assert_int_equal(atomic_load(&tb->upstreams[1].up->pending), 3);
    /* the old table can go first: the objects that stay are the new one's */
    ptc_endpoint_status_t *kept = ptc_endpoint_status_ref(ta->upstreams[0].endpoints[0]); /* h:1, removed */
    ptc_status_table_free(ta);
    assert_string_equal(kept->label, "h:1"); /* alive while a connection holds it */
    ptc_endpoint_status_release(kept);
    assert_string_equal(tb->upstreams[1].endpoints[0]->label, "h:2");
    ptc_status_table_free(tb);
    ptc_status_table_free(NULL);
    ptc_config_dispose(&a);
    ptc_config_dispose(&b);
}

/* ---- rules ---- */

static void test_health_thresholds(void **state)
{
    (void)state;
    /* the first answer decides */
    assert_int_equal(ptc_health_next(PTC_HEALTH_UNKNOWN, true, 1, 0, &HC), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_next(PTC_HEALTH_UNKNOWN, false, 0, 1, &HC), PTC_HEALTH_UNHEALTHY);
    /* then the thresholds */
    assert_int_equal(ptc_health_next(PTC_HEALTH_HEALTHY, false, 0, 1, &HC), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_next(PTC_HEALTH_HEALTHY, false, 0, 2, &HC), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_next(PTC_HEALTH_HEALTHY, false, 0, 3, &HC), PTC_HEALTH_UNHEALTHY);
    assert_int_equal(ptc_health_next(PTC_HEALTH_UNHEALTHY, true, 1, 0, &HC), PTC_HEALTH_UNHEALTHY);
    assert_int_equal(ptc_health_next(PTC_HEALTH_UNHEALTHY, true, 2, 0, &HC), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_next(PTC_HEALTH_HEALTHY, true, 9, 0, &HC), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_next(PTC_HEALTH_UNHEALTHY, false, 0, 9, &HC), PTC_HEALTH_UNHEALTHY);

    /* recorded through a status object: the runs reset each other */
    ptc_config_t cfg;
    ptc_status_table_t *t;
    ptc_health_t before;
    load(&cfg, "upstreams: [{name: x, endpoints: [h:1]}]\n");
    assert_int_equal(ptc_status_table_new(&t, &cfg, NULL), 0);
    ptc_endpoint_status_t *st = t->upstreams[0].endpoints[0];
    assert_int_equal(ptc_health_record(st, &HC, true, "SERVING", 1000, &before), PTC_HEALTH_HEALTHY);
    assert_int_equal(before, PTC_HEALTH_UNKNOWN);
    assert_int_equal(ptc_health_record(st, &HC, false, "NOT_SERVING", 2000, &before), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_record(st, &HC, false, "NOT_SERVING", 3000, &before), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_record(st, &HC, true, "SERVING", 4000, &before), PTC_HEALTH_HEALTHY); /* the run is broken */
    for (int i = 0; i < 2; i++)
        assert_int_equal(ptc_health_record(st, &HC, false, "timeout after 100 ms", 5000, &before), PTC_HEALTH_HEALTHY);
    assert_int_equal(ptc_health_record(st, &HC, false, "timeout after 100 ms", 6000, &before), PTC_HEALTH_UNHEALTHY);
    assert_int_equal(before, PTC_HEALTH_HEALTHY);
    assert_string_equal(st->check_result, "timeout after 100 ms");
    assert_false(st->check_ok);
    assert_int_equal(st->check_wall_ms, 6000);
    assert_int_equal(atomic_load(&st->check_failures), 3);
    assert_false(ptc_endpoint_usable(st, 0));
    assert_false(ptc_endpoint_available(st, &HC, 0));
    ptc_health_reset(st);
    assert_int_equal(atomic_load(&st->health), PTC_HEALTH_UNKNOWN);
    assert_string_equal(st->check_result, "");
    assert_true(ptc_endpoint_usable(st, 0));
    assert_false(ptc_endpoint_available(st, &HC, 0)); /* checked upstreams wait for the first answer */
    ptc_health_check_config_t off = HC;
    off.enabled = false;
    assert_true(ptc_endpoint_available(st, &off, 0));
    assert_string_equal(ptc_health_name(PTC_HEALTH_HEALTHY), "healthy");
    assert_string_equal(ptc_health_name(PTC_HEALTH_UNHEALTHY), "unhealthy");
    assert_string_equal(ptc_health_name(PTC_HEALTH_UNKNOWN), "unknown");
    ptc_status_table_free(t);
    ptc_config_dispose(&cfg);
}

static void test_outlier(void **state)
{
    (void)state;
    ptc_config_t cfg;
    ptc_status_table_t *t;
    const ptc_outlier_config_t oc = {.enabled = true, .consecutive_failures = 3, .ejection_ms = 500}, off = {0};

    load(&cfg, "upstreams: [{name: x, endpoints: [h:1]}]\n");
    assert_int_equal(ptc_status_table_new(&t, &cfg, NULL), 0);
    ptc_endpoint_status_t *st = t->upstreams[0].endpoints[0];
    assert_false(ptc_outlier_failure(st, &off, 100, "x")); /* disabled: not even counted */
    assert_int_equal(atomic_load(&st->consecutive_failures), 0);
    assert_false(ptc_outlier_failure(st, &oc, 100, "refused"));
    assert_false(ptc_outlier_failure(st, &oc, 100, "refused"));
    ptc_outlier_success(st); /* breaks the run */
    assert_false(ptc_outlier_failure(st, &oc, 100, "refused"));
    assert_false(ptc_outlier_failure(st, &oc, 100, "refused"));
    assert_true(ptc_endpoint_usable(st, 100));
    assert_true(ptc_outlier_failure(st, &oc, 100, "grpc-status 14"));
    assert_int_equal(atomic_load(&st->ejections), 1);
    assert_string_equal(st->eject_reason, "3 consecutive failures, the last: grpc-status 14");
    assert_false(ptc_endpoint_usable(st, 100));
    assert_false(ptc_endpoint_usable(st, 599));
    assert_false(ptc_endpoint_available(st, &(ptc_health_check_config_t){0}, 599));
    assert_true(ptc_endpoint_usable(st, 600)); /* back after the ejection */
    assert_int_equal(atomic_load(&st->consecutive_failures), 0);
    ptc_status_table_free(t);
    ptc_config_dispose(&cfg);
}

/* ---- messages ---- */

static void test_encode_request(void **state)
{
    (void)state;
    uint8_t buf[256];
    char big[PTC_CONFIG_MAX_HEALTH_SERVICE + 2];

    assert_int_equal(ptc_health_encode_request("", buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "\0\0\0\0\0", 5);
    assert_int_equal(ptc_health_encode_request("pkg.Svc", buf, sizeof(buf)), 5 + 2 + 7);
    assert_memory_equal(buf, "\0\0\0\0\x09\x0a\x07pkg.Svc", 14);
    /* a two-byte length */
    memset(big, 's', PTC_CONFIG_MAX_HEALTH_SERVICE);
    big[PTC_CONFIG_MAX_HEALTH_SERVICE] = '\0';
    assert_int_equal(ptc_health_encode_request(big, buf, sizeof(buf)), 5 + 3 + 200);
    assert_memory_equal(buf, "\0\0\0\0\xcb\x0a\xc8\x01", 8);
    assert_int_equal(buf[5 + 3 + 199], 's');
    assert_int_equal(ptc_health_encode_request(big, buf, 5 + 3 + 199), 0); /* too small */
    big[PTC_CONFIG_MAX_HEALTH_SERVICE] = 's';
    big[PTC_CONFIG_MAX_HEALTH_SERVICE + 1] = '\0';
    assert_int_equal(ptc_health_encode_request(big, buf, sizeof(buf)), 0); /* too long */
    assert_int_equal(ptc_health_encode_request("", buf, 4), 0);
}

static void test_decode_response(void **state)
{
    (void)state;
    int status = -5;
    static const struct {
        const char *bytes;
        size_t len;
        int ret, status;
    } cases[] = {
        {"", 0, 0, PTC_HEALTH_STATUS_UNKNOWN},
        {"\x08\x01", 2, 0, PTC_HEALTH_STATUS_SERVING},
        {"\x08\x02", 2, 0, PTC_HEALTH_STATUS_NOT_SERVING},
        {"\x08\x03", 2, 0, PTC_HEALTH_STATUS_SERVICE_UNKNOWN},
        {"\x08\x01\x08\x02", 4, 0, PTC_HEALTH_STATUS_NOT_SERVING},   /* the last one wins */
        {"\x08\x81\x00", 3, 0, 1},                                   /* a redundant varint byte */
        {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, 0, -1}, /* a negative enum, sign-extended */
        {"\x12\x03"
         "abc\x08\x01",
         7, 0, PTC_HEALTH_STATUS_SERVING}, /* unknown fields are skipped */
        {"\x19"
         "12345678\x08\x01\x25"
         "abcd",
         16, 0, PTC_HEALTH_STATUS_SERVING},
        {"\x10\x07\x08\x01", 4, 0, PTC_HEALTH_STATUS_SERVING},
        {"\x08", 1, -1, 0}, /* truncated */
        {"\x08\x80", 2, -1, 0},
        {"\x12\x05"
         "abc",
         5, -1, 0}, /* a length past the end */
        {"\x19"
         "1234567",
         8, -1, 0},
        {"\x0a\x01x", 3, -1, 0},                                         /* status with the wrong wire type */
        {"\x0b", 1, -1, 0},                                              /* a group */
        {"\x00\x01", 2, -1, 0},                                          /* field 0 */
        {"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12, -1, 0}, /* a varint over 10 bytes */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int ret = ptc_health_decode_response((const uint8_t *)cases[i].bytes, cases[i].len, &status);
        if (ret != cases[i].ret || (ret == 0 && status != cases[i].status))
            print_error("case %zu: %d %d\n", i, ret, status);
        assert_int_equal(ret, cases[i].ret);
        if (ret == 0)
            assert_int_equal(status, cases[i].status);
    }
    char name[32];
    ptc_health_status_name(PTC_HEALTH_STATUS_NOT_SERVING, name, sizeof(name));
    assert_string_equal(name, "NOT_SERVING");
    ptc_health_status_name(7, name, sizeof(name));
    assert_string_equal(name, "status 7");
    ptc_health_status_name(-1, name, sizeof(name));
    assert_string_equal(name, "status -1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_keeps_what_stays), cmocka_unit_test(test_health_thresholds), cmocka_unit_test(test_outlier),
        cmocka_unit_test(test_encode_request),         cmocka_unit_test(test_decode_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
