#include "portico/fault.h"

#ifdef PTC_FAULT_INJECTION

#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t nmemb, size_t size);
void *__real_realloc(void *ptr, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t nmemb, size_t size);
void *__wrap_realloc(void *ptr, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static _Thread_local bool counted;
static _Thread_local unsigned held;
static atomic_long countdown = -1; /* the counted allocation at which this is 0 fails; < 0: none */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ptc_fault_state_t last;     /* under lock */

void ptc_fault_thread_enable(void)
{
    counted = true;
}

void ptc_fault_hold(bool hold)
{
    held += hold ? 1 : -1u;
}

void ptc_fault_arm(long n)
{
    void *warm[1];
    backtrace(warm, 1); /* libgcc's unwinder loads (and allocates) on first use: not inside a failing malloc */
    pthread_mutex_lock(&lock);
    memset(&last, 0, sizeof(last));
    pthread_mutex_unlock(&lock);
    atomic_store(&countdown, n);
}

ptc_fault_state_t ptc_fault_disarm(void)
{
    long left = atomic_exchange(&countdown, -1);
    pthread_mutex_lock(&lock);
    ptc_fault_state_t s = last;
    pthread_mutex_unlock(&lock);
    s.armed = left >= 0;
    s.remaining = left >= 0 ? left : 0;
    return s;
}

/* True for the one allocation the countdown picked. */
static bool fail_now(size_t size)
{
    if (!counted || held != 0 || atomic_load_explicit(&countdown, memory_order_relaxed) < 0)
        return false;
    long c = atomic_fetch_sub(&countdown, 1);
    if (c != 0) {
        if (c < 0)
            atomic_store(&countdown, -1);
        return false;
    }
    pthread_mutex_lock(&lock);
    last.fired = true;
    last.size = size;
    last.num_frames = backtrace(last.frames, PTC_FAULT_MAX_FRAMES);
    pthread_mutex_unlock(&lock);
    errno = ENOMEM;
    return true;
}

void *__wrap_malloc(size_t size)
{
    return fail_now(size) ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t nmemb, size_t size)
{
    return fail_now(nmemb * size) ? NULL : __real_calloc(nmemb, size);
}

void *__wrap_realloc(void *ptr, size_t size)
{
    return size != 0 && fail_now(size) ? NULL : __real_realloc(ptr, size);
}

char *__wrap_strdup(const char *s)
{
    return fail_now(strlen(s) + 1) ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return fail_now(strnlen(s, n) + 1) ? NULL : __real_strndup(s, n);
}

#endif
