#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "portico/alloc.h"
#include "portico/common.h"

#define HEADER_SIZE 16 /* keeps malloc's 16-byte alignment */
#define NUM_CLASSES 8  /* 32, 64, ..., 4096 */
#define MIN_CLASS_SHIFT 5
#define CLASS_LARGE 0xff
/* Per thread and class, the cache holds at most this many bytes (and at least MIN_CACHED blocks). */
#define CACHE_BYTES_PER_CLASS (256 * 1024)
#define MIN_CACHED 32

#if defined(__SANITIZE_ADDRESS__)
#define CACHING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHING 0
#endif
#endif
#ifndef CACHING
#define CACHING 1
#endif

typedef struct st_header_t {
    uint8_t cls; /* size class, or CLASS_LARGE */
} header_t;

typedef struct st_free_block_t {
    struct st_free_block_t *next;
} free_block_t;

static _Thread_local struct {
    free_block_t *head[NUM_CLASSES];
    unsigned count[NUM_CLASSES];
} cache;

static inline size_t class_size(unsigned cls)
{
    return (size_t)1 << (cls + MIN_CLASS_SHIFT);
}

static inline unsigned class_cap(unsigned cls)
{
    size_t n = CACHE_BYTES_PER_CLASS / class_size(cls);
    return n < MIN_CACHED ? MIN_CACHED : (unsigned)n;
}

/* The smallest class that holds size, or CLASS_LARGE. */
static inline unsigned class_of(size_t size)
{
    if (size > class_size(NUM_CLASSES - 1))
        return CLASS_LARGE;
    if (size <= class_size(0))
        return 0;
    /* ceil(log2(size)) - MIN_CLASS_SHIFT */
    return (unsigned)(64 - __builtin_clzll((unsigned long long)(size - 1))) - MIN_CLASS_SHIFT;
}

static inline header_t *header_of(void *ptr)
{
    return (header_t *)((char *)ptr - HEADER_SIZE);
}

void *ptc_malloc(size_t size)
{
    unsigned cls = class_of(size);
    char *block;

    if (cls != CLASS_LARGE) {
        free_block_t *b = cache.head[cls];
        if (CACHING && b != NULL) {
            cache.head[cls] = b->next;
            cache.count[cls]--;
            return b;
        }
        if ((block = malloc(HEADER_SIZE + class_size(cls))) == NULL)
            return NULL;
    } else {
        if (size > SIZE_MAX - HEADER_SIZE || (block = malloc(HEADER_SIZE + size)) == NULL)
            return NULL;
    }
    ((header_t *)block)->cls = (uint8_t)cls;
    return block + HEADER_SIZE;
}

void *ptc_calloc(size_t nmemb, size_t size)
{
    if (size != 0 && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = ptc_malloc(nmemb * size);
    if (p != NULL)
        memset(p, 0, nmemb * size);
    return p;
}

void ptc_free(void *ptr)
{
    if (ptr == NULL)
        return;
    header_t *h = header_of(ptr);
    unsigned cls = h->cls;
    if (CACHING && cls != CLASS_LARGE && cache.count[cls] < class_cap(cls)) {
        free_block_t *b = ptr;
        b->next = cache.head[cls];
        cache.head[cls] = b;
        cache.count[cls]++;
        return;
    }
    free(h);
}

void *ptc_realloc(void *ptr, size_t size)
{
    if (ptr == NULL)
        return ptc_malloc(size);
    if (size == 0) {
        ptc_free(ptr);
        return NULL;
    }
    header_t *h = header_of(ptr);
    if (h->cls == CLASS_LARGE && class_of(size) == CLASS_LARGE) {
        if (size > SIZE_MAX - HEADER_SIZE)
            return NULL;
        char *block = realloc(h, HEADER_SIZE + size);
        return block != NULL ? block + HEADER_SIZE : NULL;
    }
    if (h->cls != CLASS_LARGE && size <= class_size(h->cls))
        return ptr;
    void *p = ptc_malloc(size);
    if (p == NULL)
        return NULL;
    size_t old = h->cls == CLASS_LARGE ? size : class_size(h->cls); /* a large block only moves when shrinking */
    memcpy(p, ptr, PTC_MIN(old, size));
    ptc_free(ptr);
    return p;
}

void ptc_alloc_thread_release(void)
{
    for (unsigned cls = 0; cls < NUM_CLASSES; cls++) {
        while (cache.head[cls] != NULL) {
            free_block_t *b = cache.head[cls];
            cache.head[cls] = b->next;
            free(header_of(b));
        }
        cache.count[cls] = 0;
    }
}

size_t ptc_alloc_thread_cached(void)
{
    size_t n = 0;
    for (unsigned cls = 0; cls < NUM_CLASSES; cls++)
        n += cache.count[cls] * class_size(cls);
    return n;
}

void ptc_alloc_install_libevent(void)
{
    event_set_mem_functions(ptc_malloc, ptc_realloc, ptc_free);
}

static void *ng_malloc(size_t size, void *ud)
{
    (void)ud;
    return ptc_malloc(size);
}

static void ng_free(void *ptr, void *ud)
{
    (void)ud;
    ptc_free(ptr);
}

static void *ng_calloc(size_t nmemb, size_t size, void *ud)
{
    (void)ud;
    return ptc_calloc(nmemb, size);
}

static void *ng_realloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    return ptc_realloc(ptr, size);
}

nghttp2_mem *ptc_alloc_nghttp2_mem(void)
{
    static nghttp2_mem mem = {NULL, ng_malloc, ng_free, ng_calloc, ng_realloc};
    return &mem;
}
