/*
 * Allocation-failure injection for unit tests (nghttp2's failmalloc, curl's torture mode). Include it in one
 * test source per executable: it replaces malloc and friends process-wide, so the failures reach strdup,
 * libyaml, PCRE2 and our own code alike. Under AddressSanitizer (its own allocator) PTC_TEST_FAILMALLOC is
 * left undefined and the tests that need it skip; the leak check there is LeakSanitizer's.
 *
 * Use: set failmalloc_countdown = i before the code under test (the i-th allocation from then on fails),
 * read failmalloc_countdown < 0 afterwards to learn whether a failure was injected, and compare
 * failmalloc_live before and after to find leaks.
 */
#ifndef PTC_TEST_FAILMALLOC_H
#define PTC_TEST_FAILMALLOC_H

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
static inline int failmalloc_fail_at(void *caller)
{
    if (failmalloc_countdown < 0 || failmalloc_countdown-- != 0)
        return 0;
    failmalloc_caller = caller;
    errno = ENOMEM; /* as malloc does: callers such as fopen report it */
    return 1;
}

/* libyaml 0.2.5 leaks on some of its own allocation failures (yaml_parser_load_mapping/sequence free the
 * tag but not the pair/item stack when pushing the node fails); those are not ours to check. */
static inline int failmalloc_failed_in(const char *lib)
{
    Dl_info info;
    return dladdr(failmalloc_caller, &info) != 0 && info.dli_fname != NULL && strstr(info.dli_fname, lib) != NULL;
}

static inline int failmalloc_failed_in_libyaml(void)
{
    return failmalloc_failed_in("libyaml");
}

/* PCRE2's JIT compiler failing is not an error: origin patterns then run on the interpreter. */
static inline int failmalloc_failed_in_libpcre2(void)
{
    return failmalloc_failed_in("libpcre2");
}

/* stdio falls back to an unbuffered stream when it cannot allocate its buffer: not an error either. */
static inline int failmalloc_failed_in_libc(void)
{
    return failmalloc_failed_in("/libc.so");
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

#endif
