#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "portico/log.h"

static atomic_int log_level = PTC_LOG_INFO;
static _Thread_local char thread_name[16] = "main";

void ptc_log_set_level(ptc_log_level_t level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

ptc_log_level_t ptc_log_get_level(void)
{
    return (ptc_log_level_t)atomic_load_explicit(&log_level, memory_order_relaxed);
}

int ptc_log_level_parse(const char *s, ptc_log_level_t *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (ptc_log_level_t)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = PTC_LOG_WARN;
        return 0;
    }
    return PTC_EINVAL;
}

void ptc_log_set_thread_name(const char *name)
{
    snprintf(thread_name, sizeof(thread_name), "%s", name);
}

void ptc_log(ptc_log_level_t level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int r;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03dZ %s [%s] ", (int)(tv.tv_usec / 1000), names[level], thread_name);
    if (r > 0)
        n += (size_t)r;

    va_list ap;
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (r > 0)
        n += PTC_MIN((size_t)r, sizeof(line) - n - 2);
    line[n++] = '\n';
    /* one write per line; a short write to stderr is not worth retrying from the event loop */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
