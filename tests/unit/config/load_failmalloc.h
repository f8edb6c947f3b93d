/*
 * The allocation-failure loop of the loader tests (include after ../failmalloc.h and cmocka.h): init + load of yaml,
 * and when that gave what was expected a load of again (NULL: yaml again) over the result, with the i-th allocation
 * failing, for every i until none is left to fail; the second load is expected to give the same result. An injected failure must give PTC_ENOMEM and leave the config as it was: as
 * ptc_config_init_default made it (the first load; is_default checks) or as the first load made it (the second;
 * is_loaded checks). Failures that are not errors (PCRE2's JIT, stdio's buffer) may give the expected result instead.
 * Nothing may leak but what libyaml leaks on its own failures.
 */
#ifndef PTC_TEST_CONFIG_LOAD_FAILMALLOC_H
#define PTC_TEST_CONFIG_LOAD_FAILMALLOC_H

#ifdef PTC_TEST_FAILMALLOC
#include "portico/config.h"

typedef int (*failmalloc_load_fn)(ptc_config_t *cfg, const char *yaml, char *err, size_t errlen);
typedef void (*failmalloc_check_fn)(const ptc_config_t *cfg);

static inline void failmalloc_load_run(failmalloc_load_fn load, const char *yaml, const char *again, int expected,
                                       failmalloc_check_fn is_default, failmalloc_check_fn is_loaded)
{
    for (long i = 0;; i++) {
        ptc_config_t cfg;
        char err[512] = "";
        long live = failmalloc_live;
        int ret;

        failmalloc_countdown = i;
        if ((ret = ptc_config_init_default(&cfg)) == 0) {
            if ((ret = load(&cfg, yaml, err, sizeof(err))) == PTC_ENOMEM)
                is_default(&cfg); /* untouched */
            if (ret == expected && (ret = load(&cfg, again != NULL ? again : yaml, err, sizeof(err))) == PTC_ENOMEM)
                is_loaded(&cfg); /* the first load survives */
        }
        int injected = failmalloc_countdown < 0;
        failmalloc_countdown = -1;
        if (injected && ret == expected && (failmalloc_failed_in_libpcre2() || failmalloc_failed_in_libc())) {
            ptc_config_dispose(&cfg);
        } else if (injected) {
            if (ret != PTC_ENOMEM)
                print_error("allocation %ld: got %d %s\n", i, ret, err);
            assert_int_equal(ret, PTC_ENOMEM);
            if (cfg.source != NULL) /* init_default failed: it disposed of cfg itself */
                ptc_config_dispose(&cfg);
        } else {
            if (ret != expected)
                print_error("got %d %s\n", ret, err);
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

#endif
