/*
 * Allocation-failure injection for the integration tests (curl's torture mode, nghttp2's failmalloc, at
 * the level of a whole running gateway). Built only with -DPTC_FAULT_INJECTION=ON (the ASan build in CI):
 * the portico binary is then linked with `--wrap` for malloc, calloc, realloc, strdup and strndup, so every
 * allocation made by Portico's own code — and by libevent and nghttp2, which allocate through ptc_malloc —
 * passes through a countdown. Only threads that opted in (the workers) count; the control thread, which
 * arms the countdown for the admin API's POST /debug/fail-alloc?n=N, never fails.
 *
 * In a normal build every function here is an empty inline and nothing is wrapped.
 */
#ifndef PORTICO_FAULT_H
#define PORTICO_FAULT_H

#include <stdbool.h>
#include <stddef.h>

#define PTC_FAULT_MAX_FRAMES 24

typedef struct {
    bool armed;       /* a countdown is running and has not reached its allocation */
    bool fired;       /* the allocation failed */
    long remaining;   /* allocations left before the failing one (when armed) */
    size_t size;      /* bytes the failing allocation asked for */
    int num_frames;   /* its call stack (return addresses, innermost first) */
    void *frames[PTC_FAULT_MAX_FRAMES];
} ptc_fault_state_t;

#ifdef PTC_FAULT_INJECTION
/* The calling thread's allocations count down (workers call it once at start). */
void ptc_fault_thread_enable(void);
/* The n-th counted allocation from now on (0: the next one) fails, once. */
void ptc_fault_arm(long n);
/* Stops the countdown; returns what happened since the last arm. */
ptc_fault_state_t ptc_fault_disarm(void);
/* Allocations between these (on this thread) never fail: only around library calls that cannot survive a
 * failed allocation, each with the reason where it is used. */
void ptc_fault_hold(bool hold);
#else
static inline void ptc_fault_thread_enable(void) {}
static inline void ptc_fault_hold(bool hold) { (void)hold; }
#endif

#endif
