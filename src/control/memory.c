/*
 * Memory given back after a fall in connections (control thread).
 *
 * Each worker allocates from its own malloc arena. When thousands of connections close, their memory goes back to
 * the arenas' free lists, and glibc only returns the top of a heap to the system: the process keeps its peak RSS
 * (10,000 idle h2c connections leave ~158 MiB behind). Every MEMORY_CHECK_MS the control thread reads the open
 * connections and their peak since its last look (ptc_conn_peak_take, kept by the workers as they register
 * connections, so a burst between two looks counts too); once at least MEMORY_TRIM_DROP have closed since the peak
 * and at most half of the peak are left, malloc_trim(0) gives the free pages of every arena back (madvise), and the
 * peak starts again from there. malloc_trim holds one arena's lock at a time: a worker allocating meanwhile waits
 * for that arena, and this happens once per such fall, not per connection.
 */
#include <inttypes.h>
#include <malloc.h>

#include <event2/event.h>

#include "control_internal.h"
#include "portico/conn.h"
#include "portico/log.h"
#include "portico/metrics.h"

#define MEMORY_CHECK_MS 2000
#define MEMORY_TRIM_DROP 1000

/* Resident bytes of the process, 0 when unknown (the figure /metrics reports). */
static uint64_t resident_bytes(void)
{
    ptc_metrics_process_t p = {0};
    ptc_metrics_read_process(&p);
    return p.have_proc ? p.resident_bytes : 0;
}

static void on_memory_check(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ptc_control_t *ctl = arg;
    uint64_t peak = ptc_conn_peak_take(), open = ptc_conn_total();

    ctl->conns_peak = PTC_MAX(ctl->conns_peak, PTC_MAX(peak, open)); /* the peak is a hint: never below open */
    if (ctl->conns_peak - open < MEMORY_TRIM_DROP || open > ctl->conns_peak / 2)
        return;
    uint64_t before = resident_bytes();
    malloc_trim(0);
    uint64_t after = resident_bytes();
    ctl->memory_trims++;
    ptc_log_info("memory: %" PRIu64 " of %" PRIu64 " connections closed since the peak; %.1f MiB given back to the system "
                 "(resident %.1f → %.1f MiB)",
                 ctl->conns_peak - open, ctl->conns_peak, before > after ? (double)(before - after) / 1048576.0 : 0.0,
                 (double)before / 1048576.0, (double)after / 1048576.0);
    ctl->conns_peak = open;
}

int ptc__memory_start(ptc_control_t *ctl)
{
    struct timeval tv = {MEMORY_CHECK_MS / 1000, MEMORY_CHECK_MS % 1000 * 1000};
    ctl->memory_ev = event_new(ctl->base, -1, EV_PERSIST, on_memory_check, ctl);
    if (ctl->memory_ev == NULL || event_add(ctl->memory_ev, &tv) != 0)
        return PTC_ENOMEM;
    return 0;
}

void ptc__memory_stop(ptc_control_t *ctl)
{
    if (ctl->memory_ev != NULL)
        event_free(ctl->memory_ev);
    ctl->memory_ev = NULL;
}
