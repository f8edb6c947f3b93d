/*
 * Logging: one line per event on stderr, written with a single write(2) so lines from different
 * workers never interleave. Format: `2026-11-25T12:00:00.123Z warn [w1] message`.
 */
#ifndef PORTICO_LOG_H
#define PORTICO_LOG_H

#include "portico/common.h"

typedef enum { PTC_LOG_DEBUG, PTC_LOG_INFO, PTC_LOG_WARN, PTC_LOG_ERROR, PTC_LOG_OFF } ptc_log_level_t;

/* Process-wide threshold, set once at start-up (and on reload) before workers log. */
void ptc_log_set_level(ptc_log_level_t level);
ptc_log_level_t ptc_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns 0 or PTC_EINVAL. */
int ptc_log_level_parse(const char *s, ptc_log_level_t *out) PTC_WARN_UNUSED;
/* Names the calling thread in log lines (e.g. "w0", "main"). */
void ptc_log_set_thread_name(const char *name);

void ptc_log(ptc_log_level_t level, const char *fmt, ...) PTC_PRINTF(2, 3);

#define PTC_LOG_ENABLED(level) ((level) >= ptc_log_get_level())
#define ptc_log_debug(...) (PTC_LOG_ENABLED(PTC_LOG_DEBUG) ? ptc_log(PTC_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define ptc_log_info(...) (PTC_LOG_ENABLED(PTC_LOG_INFO) ? ptc_log(PTC_LOG_INFO, __VA_ARGS__) : (void)0)
#define ptc_log_warn(...) (PTC_LOG_ENABLED(PTC_LOG_WARN) ? ptc_log(PTC_LOG_WARN, __VA_ARGS__) : (void)0)
#define ptc_log_error(...) (PTC_LOG_ENABLED(PTC_LOG_ERROR) ? ptc_log(PTC_LOG_ERROR, __VA_ARGS__) : (void)0)

#endif
