#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "portico/alloc.h"
#include "portico/common.h"

/*
 * Classes follow glibc's chunk sizes (16-byte steps; a request of 16*i + 8 bytes fills a chunk
 * exactly), so a cached block wastes nothing and malloc_usable_size() tells a block's class at free
 * time without a header of our own. Class i holds blocks with at least 16*i + 8 usable bytes.
 */
#define NUM_CLASSES 257 /* 1..256: 24 B .. 4104 B */
#define MAX_CACHED_SIZE (16 * (NUM_CLASSES - 1) + 8)
#define MAX_CACHED_PER_CLASS 1024
#define MAX_CACHED_BYTES (2 * 1024 * 1024) /* per thread */

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

typedef struct st_free_block_t {
    struct st_free_block_t *next;
} free_block_t;

static _Thread_local struct {
    free_block_t *head[NUM_CLASSES];
    uint16_t count[NUM_CLASSES];
    size_t bytes;
} cache;

static inline size_t class_size(size_t cls)
{
    return 16 * cls + 8;
}

/* The smallest class whose blocks hold size bytes (size <= MAX_CACHED_SIZE). */
static inline size_t class_ceil(size_t size)
{
    return size <= 24 ? 1 : (size + 7) >> 4;
}

void *ptc_malloc(size_t size)
{
    if (CACHING && size <= MAX_CACHED_SIZE) {
        size_t cls = class_ceil(size);
        free_block_t *b = cache.head[cls];
        if (b != NULL) {
            cache.head[cls] = b->next;
            cache.count[cls]--;
            cache.bytes -= class_size(cls);
            return b;
        }
        return malloc(class_size(cls)); /* a whole chunk: reusable by the whole class later */
    }
    return malloc(size);
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
    if (CACHING) {
        size_t usable = malloc_usable_size(ptr);
        if (usable >= 24 && usable <= MAX_CACHED_SIZE) {
            size_t cls = (usable - 8) >> 4; /* the largest class this block can serve */
            if (cache.count[cls] < MAX_CACHED_PER_CLASS && cache.bytes + class_size(cls) <= MAX_CACHED_BYTES) {
                free_block_t *b = ptr;
                b->next = cache.head[cls];
                cache.head[cls] = b;
                cache.count[cls]++;
                cache.bytes += class_size(cls);
                return;
            }
        }
    }
    free(ptr);
}

void *ptc_realloc(void *ptr, size_t size)
{
    if (ptr == NULL)
        return ptc_malloc(size);
    if (size == 0) {
        ptc_free(ptr);
        return NULL;
    }
    if (CACHING && malloc_usable_size(ptr) >= size)
        return ptr;
    return realloc(ptr, size); /* every block is malloc's own */
}

void ptc_alloc_thread_release(void)
{
    for (size_t cls = 0; cls < NUM_CLASSES; cls++) {
        while (cache.head[cls] != NULL) {
            free_block_t *b = cache.head[cls];
            cache.head[cls] = b->next;
            free(b);
        }
        cache.count[cls] = 0;
    }
    cache.bytes = 0;
}

size_t ptc_alloc_thread_cached(void)
{
    return cache.bytes;
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
