/*
 * The access log: one line per call and per request the pipeline answered itself, as JSON or from a
 * template (config `access_log`), written without ever blocking a worker.
 *
 * A sink (ptc_access_log_t) is one output (a file, or stderr) with one ring buffer per worker and a writer
 * thread. A worker formats its line on its own stack and copies it into its ring (single producer, single
 * consumer: the worker moves head, the writer moves tail, no lock); when the line does not fit, it is
 * dropped and counted (portico_access_log_dropped_total, /status) — a slow disk or a full pipe costs lines,
 * never latency. The writer sleeps on an eventfd while every ring is empty; a worker writes it only when
 * the writer said it was going to sleep. The file is opened non-blocking, so a stalled reader (a FIFO
 * nobody reads) stalls the writer only, and the writer still notices a stop or a reopen.
 *
 * Sinks are reference counted and held by configuration snapshots (ptc_snapshot_t.access_log): a reload
 * that keeps the same settings keeps the sink; one that changes them makes a new sink, and calls started
 * under the old snapshot finish their lines into the old one. When the last reference goes (on any thread),
 * the writer drains what is left, closes the file and frees the sink by itself. SIGUSR1 reopens the file of
 * the sink in service (logrotate: rename, then signal).
 */
#ifndef PORTICO_ACCESS_LOG_H
#define PORTICO_ACCESS_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/common.h"
#include "portico/config.h"
#include "portico/template.h"

typedef struct st_ptc_access_log_t ptc_access_log_t;
typedef struct st_ptc_call_info_t ptc_call_info_t;

#define PTC_ACCESS_LOG_LINE_MAX 16384/* a longer line is cut (each field is capped well below) */
#define PTC_ACCESS_LOG_VALUE_MAX 1024 /* bytes of one value (path, message, header) before it is cut */
#define PTC_ACCESS_LOG_ORIGIN_MAX 256

/* ---- the ring (exposed for its tests) ---- */

typedef struct st_ptc_log_ring_t {
    _Alignas(64) _Atomic uint64_t head; /* bytes ever written: moved by the producer */
    _Alignas(64) _Atomic uint64_t tail; /* bytes ever consumed: moved by the consumer */
    char *buf;
    size_t size;
} ptc_log_ring_t;

/* 0 or PTC_ENOMEM. */
int ptc_log_ring_init(ptc_log_ring_t *r, size_t size) PTC_WARN_UNUSED;
void ptc_log_ring_dispose(ptc_log_ring_t *r);
/* Producer: appends len bytes whole, or nothing (false) when they do not fit. */
bool ptc_log_ring_push(ptc_log_ring_t *r, const char *data, size_t len);
/* Consumer: the bytes waiting, as up to two pieces (the second when they wrap); returns their total. */
size_t ptc_log_ring_peek(ptc_log_ring_t *r, ptc_iovec_t piece[2]);
/* Consumer: n bytes of what ptc_log_ring_peek showed are done with. */
void ptc_log_ring_consume(ptc_log_ring_t *r, size_t n);

/* ---- sinks ---- */

/*
 * Opens cfg->path (created 0644, appended to; "-": stderr) and starts the writer, with one ring of
 * cfg->buffer_size bytes for each of nworkers workers. Returns 0 with one reference, or an error with what is
 * wrong in err ("access_log.path: cannot open \"…\": …").
 */
int ptc_access_log_new(ptc_access_log_t **out, const ptc_access_log_config_t *cfg, size_t nworkers, char *err,
                       size_t errlen) PTC_WARN_UNUSED;
ptc_access_log_t *ptc_access_log_ref(ptc_access_log_t *l);
/* Drops a reference; the last one lets the writer finish and free the sink (NULL: no-op). Never blocks. */
void ptc_access_log_release(ptc_access_log_t *l);
/* True when l writes what cfg asks for (same path, format and buffer): a reload keeps it. */
bool ptc_access_log_same(const ptc_access_log_t *l, const ptc_access_log_config_t *cfg);
/* Opens the path again and hands the new file to the writer (SIGUSR1). 0, or an error with the reason in err. */
int ptc_access_log_reopen(ptc_access_log_t *l, char *err, size_t errlen) PTC_WARN_UNUSED;
/* Worker `worker`'s ring: appends a whole line (with its '\n'); false when it was dropped. Never blocks. */
bool ptc_access_log_append(ptc_access_log_t *l, size_t worker, const char *line, size_t len);
/* Totals over every sink of the process. */
typedef struct st_ptc_access_log_totals_t {
    uint64_t bytes;        /* written to the outputs */
    uint64_t write_errors; /* failed writes */
    uint64_t lost;         /* lines queued that never reached the output: failed writes, or an output still stalled
                            * when its sink was let go (dropped lines, whose ring was full, are counted by the workers) */
    uint64_t reopens;
} ptc_access_log_totals_t;
void ptc_access_log_totals(ptc_access_log_totals_t *t);
/* Waits up to timeout_ms for the writers of released sinks to finish (at exit); false when one did not. */
bool ptc_access_log_wait_all(int timeout_ms);

/* ---- lines ---- */

/* Values captured for the header variables of a template (%REQ(name)%, %RESP(name)%): one block, free(fields). */
typedef struct st_ptc_access_capture_t {
    ptc_header_t *fields;
    size_t n;
} ptc_access_capture_t;

/* Everything a line says about one call or local answer. */
typedef struct st_ptc_access_entry_t {
    bool local;                  /* a local answer (kind "local"), else a call ("call") */
    uint64_t start_us;           /* wall clock: µs since the epoch when the request head was complete */
    const ptc_call_info_t *info; /* ids, peer, route, upstream, verified token (may be NULL) */
    ptc_iovec_t origin, http_method, path;
    const char *protocol;  /* grpc-web, grpc-web-text, grpc; NULL for a plain HTTP answer ("http") */
    const char *transport; /* http1, h2, websocket */
    int grpc_status;       /* -1: none */
    ptc_iovec_t grpc_message;
    int http_status;
    uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
    int64_t ttfb_us; /* -1: nothing was sent */
    uint64_t duration_us;
    const char *upstream_host; /* "host:port" of the endpoint, or NULL */
    const ptc_access_capture_t *req, *resp;
} ptc_access_entry_t;

/* The wall clock (µs since the epoch) at the monotonic instant mono_us, given the monotonic now_us. */
uint64_t ptc_access_log_wall_us(uint64_t mono_us, uint64_t now_us);
/* The sink's template, or NULL when it writes JSON. */
const ptc_template_t *ptc_access_log_template(const ptc_access_log_t *l);
/* Captures the values of t's variables of kind PTC_TEMPLATE_REQ or _RESP found in fields; 0 or PTC_ENOMEM. */
int ptc_access_log_capture(const ptc_template_t *t, ptc_template_var_t kind, const ptc_header_t *fields, size_t n,
                           ptc_access_capture_t *out);
/* Formats e as one line ending in '\n' (JSON when t is NULL) into out; returns its length (cut to fit cap). */
size_t ptc_access_log_format(const ptc_template_t *t, const ptc_access_entry_t *e, char *out, size_t cap);
/* Formats e into l's ring for worker; false when the line was dropped. */
bool ptc_access_log_write(ptc_access_log_t *l, size_t worker, const ptc_access_entry_t *e);

/*
 * Writes v as the inside of a JSON string into out (cap bytes, NUL-terminated when cap > 0): '"' '\' and control
 * characters escaped (\n \r \t \b \f, others \u00XX, DEL too), each byte that is not part of valid UTF-8 written
 * as \ufffd; valid UTF-8 as it is. At most max bytes of v are used: a longer v is cut at a character boundary and
 * ends with "…" (\u2026). Never cuts an escape. Returns the length written.
 */
size_t ptc_json_escape(char *out, size_t cap, ptc_iovec_t v, size_t max);

#endif
