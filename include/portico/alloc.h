/*
 * The allocator behind libevent, nghttp2 and the per-call objects: freed small blocks (up to 4 KiB)
 * wait in a cache per thread, by size class, for the next allocation of their class; everything else
 * is plain malloc.
 *
 * Why: one unary call allocates and frees ~20 small objects (evbuffer chains, nghttp2 streams and
 * frames, the call). Under load a worker serves dozens of calls per wake-up, which overflows glibc's
 * per-thread cache (7 blocks per size) and sends the rest through its slower arena paths; this cache
 * keeps up to 1024 blocks per class (2 MiB per thread in all).
 *
 * Every block is malloc's own (classes are glibc chunk sizes, and a block's class is read back with
 * malloc_usable_size()), so a block may be freed by any thread, by free() too, and memory per block
 * is what malloc alone would use. Built with AddressSanitizer nothing is cached, so use-after-free is
 * still caught.
 */
#ifndef PORTICO_ALLOC_H
#define PORTICO_ALLOC_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

void *ptc_malloc(size_t size);
void *ptc_calloc(size_t nmemb, size_t size);
void *ptc_realloc(void *ptr, size_t size);
void ptc_free(void *ptr);

/* Makes libevent allocate through ptc_malloc & co. Call before any other libevent function. */
void ptc_alloc_install_libevent(void);
/* For nghttp2_session_*_new3(). */
nghttp2_mem *ptc_alloc_nghttp2_mem(void);
/* Returns this thread's cached blocks to malloc (a thread calls it before it exits). */
void ptc_alloc_thread_release(void);

/* Bytes cached by this thread (for tests). */
size_t ptc_alloc_thread_cached(void);

#endif
