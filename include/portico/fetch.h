/*
 * Fetching a remote document (JWKS key sets for the JWT filter) from the control thread's event loop:
 * ptc_fetch_t runs one HTTP(S) GET at a time without ever blocking the loop, and ptc_refresher_t keeps a
 * document fresh by fetching it again before its cache lifetime ends and retrying failures.
 *
 * HTTPS only, except http:// to a loopback host (tests, a local sidecar). TLS 1.2+, the server's chain
 * verified against a CA file or the system store, its name (or IP address) checked, SNI for names (see
 * ptc_tls_client_ctx_new). HTTP/1.1 with `Connection: close`, one request per connection; no redirects, no
 * content codings, no proxies. Writing to a closed socket raises SIGPIPE: the process must ignore it (the
 * control thread does).
 */
#ifndef PORTICO_FETCH_H
#define PORTICO_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portico/common.h"

struct event_base;
struct evdns_base;

#define PTC_FETCH_DEFAULT_TIMEOUT_MS 10000
#define PTC_FETCH_DEFAULT_MAX_BODY (1024 * 1024)

typedef struct st_ptc_fetch_t ptc_fetch_t;

/* The outcome of one GET. Every pointer is valid only during the callback. */
typedef struct st_ptc_fetch_result_t {
    int status;       /* the HTTP status; 0 when no response head arrived (DNS, connect, TLS, timeout) */
    const char *body; /* on success: the body (NUL-terminated after len bytes; "" when empty), else NULL */
    size_t len;
    /*
     * On success, how long the response stays fresh from now (RFC 9111 §4.2): Cache-Control max-age
     * (s-maxage is for shared caches and ignored), else Expires minus Date (minus the time of receipt
     * without a Date), less the Age the response already has (at least 1 ms then). 0 when the response
     * gives no lifetime, forbids storing or reusing it without revalidation (no-store, no-cache, max-age=0)
     * or gives invalid freshness information (a malformed max-age or Expires, which RFC 9111 calls stale).
     */
    uint64_t max_age_ms;
    /*
     * NULL on success (status 200), else what went wrong, for log lines: "HTTP 404", "HTTP 301 (redirects
     * are not followed)", "connect: Connection refused", "resolve idp.example: ...", "TLS: certificate
     * verify failed: unable to get local issuer certificate", "timeout after 10000 ms", "body larger than
     * 1048576 bytes", "malformed response: ...", "connection closed before the response was complete".
     */
    const char *error;
} ptc_fetch_result_t;

typedef void (*ptc_fetch_cb)(void *arg, const ptc_fetch_result_t *r);

/*
 * A fetcher of url, `https://host[:port]/path[?query]` (a fragment is not sent), or `http://` when host is
 * 127.0.0.1, ::1 or localhost. ca_file: PEM CA certificates to verify the server against; NULL = the
 * system store. Host names are resolved through dns; without one (NULL) only IP literals and localhost
 * (the loopback addresses, RFC 6761 §6.3, never looked up) are accepted. The TLS context is built (and
 * ca_file read) here, once.
 *
 * Returns 0, or PTC_EINVAL (the URL) / PTC_ECONFIG (the CA file or system store) / PTC_ENOMEM with what is
 * wrong in err.
 */
int ptc_fetch_new(ptc_fetch_t **out, struct event_base *base, struct evdns_base *dns, const char *url, const char *ca_file,
                  char *err, size_t errlen) PTC_WARN_UNUSED;
/*
 * Starts a GET now. timeout_ms (0: PTC_FETCH_DEFAULT_TIMEOUT_MS) bounds the whole exchange: resolution,
 * connect, TLS handshake, response. max_body (0: PTC_FETCH_DEFAULT_MAX_BODY) caps the body, checked against
 * Content-Length and while reading. cb runs exactly once for the GET, from the event loop (never inside
 * this call); it may free f or start the next GET. Returns false, and does nothing, when a GET is already
 * in flight: its callback is the one that will run.
 */
bool ptc_fetch_start(ptc_fetch_t *f, uint64_t timeout_ms, size_t max_body, ptc_fetch_cb cb, void *arg);
/* Cancels what is in flight (its callback never runs) and frees f. NULL is a no-op. */
void ptc_fetch_free(ptc_fetch_t *f);

/*
 * Parses an HTTP-date (RFC 9110 §5.6.7) in any of its three forms: IMF-fixdate ("Sun, 06 Nov 1994
 * 08:49:37 GMT"), RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT"; a two-digit year more than 50 years ahead
 * of now is taken from the past century) and asctime ("Sun Nov  6 08:49:37 1994"). The weekday is not
 * checked against the date. Returns false when s is not one of them.
 */
bool ptc_fetch_parse_http_date(ptc_iovec_t s, int64_t now, int64_t *out) PTC_WARN_UNUSED;
/*
 * The max_age_ms of a response from its headers (base NULL: absent; Cache-Control lines joined with
 * commas), received at now (seconds since the epoch). See ptc_fetch_result_t.
 */
uint64_t ptc_fetch_freshness_ms(ptc_iovec_t cache_control, ptc_iovec_t expires, ptc_iovec_t date, ptc_iovec_t age, int64_t now);

/*
 * Keeping one document fresh.
 *
 * Schedule, with L the lifetime of a successful response (its max_age_ms, or default_ttl_ms when that is
 * 0): the next fetch is due after 80% of L, but no later than default_ttl_ms (an operator's bound on how
 * long a key rotation goes unnoticed, whatever the server says) and no sooner than min_interval_ms (a
 * server saying max-age=0 or 1 must not make us hammer it). The document stays good for L, and at least a
 * quarter of the wait longer than the next fetch is due, so that a clamped schedule never lets it expire
 * before its refresh. After a failure the fetch is retried after backoff_initial_ms, doubling up to
 * backoff_max_ms, until one succeeds (the backoff then starts over); the good document is kept meanwhile.
 * When it reaches its end of life without a successful refresh it is dropped and reported as expired;
 * retries go on.
 */
typedef struct st_ptc_refresher_t ptc_refresher_t;

typedef struct st_ptc_refresher_options_t {
    uint64_t default_ttl_ms;     /* required: the lifetime when the response gives none, and the longest wait */
    uint64_t min_interval_ms;    /* 0: 5000 */
    uint64_t backoff_initial_ms; /* 0: 1000 */
    uint64_t backoff_max_ms;     /* 0: 60000 */
    uint64_t timeout_ms;         /* per fetch; 0: PTC_FETCH_DEFAULT_TIMEOUT_MS */
    size_t max_body;             /* 0: PTC_FETCH_DEFAULT_MAX_BODY */
} ptc_refresher_options_t;

/*
 * Reports, from the event loop:
 *  - every successful fetch: body (NUL-terminated after len bytes) is the document, changed tells whether it
 *    differs from the one reported before (true for the first, and for the first after an expiry);
 *  - the end of life of the good document without a successful refresh: body NULL, changed and expired
 *    true, error the last failure ("HTTP 503", ...).
 * body is owned by the refresher: valid until the next report or ptc_refresher_free. Failed fetches are
 * logged (warn), not reported. The callback may free the refresher.
 */
typedef void (*ptc_refresher_cb)(void *arg, const char *body, size_t len, bool changed, bool expired, const char *error);

/*
 * Fetches url (see ptc_fetch_new) at once, from the event loop, and keeps it fresh until freed. Returns 0,
 * or PTC_EINVAL / PTC_ECONFIG / PTC_ENOMEM with what is wrong in err.
 */
int ptc_refresher_new(ptc_refresher_t **out, struct event_base *base, struct evdns_base *dns, const char *url, const char *ca_file,
                      const ptc_refresher_options_t *opts, ptc_refresher_cb cb, void *arg, char *err,
                      size_t errlen) PTC_WARN_UNUSED;
/* Cancels what is in flight (no callback afterwards) and frees r. NULL is a no-op. */
void ptc_refresher_free(ptc_refresher_t *r);
/*
 * The current good document (NUL-terminated after *len bytes) or NULL, and when it expires (ptc_now_ms()
 * clock; 0 when none). len and expires_ms may be NULL.
 */
const char *ptc_refresher_document(const ptc_refresher_t *r, size_t *len, uint64_t *expires_ms);

#endif
