/*
 * CORS policy: pure decisions on a request head (PROTOCOL.md §1.4, §1.12, §2.3). Adapters ask for a
 * decision once per request and apply it to every response head they write, including the errors
 * they make themselves, because a browser hides any cross-origin response without these headers.
 */
#ifndef PORTICO_CORS_H
#define PORTICO_CORS_H

#include <stdbool.h>
#include <stdint.h>

#include "portico/common.h"

typedef enum {
    PTC_ORIGIN_EXACT,    /* "https://app.example.com" (scheme and host compared case-insensitively) */
    PTC_ORIGIN_WILDCARD, /* "https:" "//" "*.example.com[:port]": real subdomains of that host, that scheme and port */
    PTC_ORIGIN_REGEX,    /* "~^https://.*$": anchored PCRE2 (JIT, match limits) */
    PTC_ORIGIN_ANY,      /* "*": any origin except "null" (echoed, never a literal '*') */
} ptc_origin_kind_t;

typedef struct st_ptc_origin_pattern_t {
    ptc_origin_kind_t kind;
    char *text;   /* as configured */
    char *scheme; /* WILDCARD: "https" */
    char *suffix; /* WILDCARD: ".example.com" (lower-case) */
    char *port;   /* WILDCARD: ":8443" or "" */
    void *regex;  /* REGEX: pcre2_code_8 * */
} ptc_origin_pattern_t;

typedef struct st_ptc_cors_config_t {
    bool enabled; /* a policy was configured; without one no origin is allowed */
    ptc_origin_pattern_t *origins;
    size_t num_origins;
    bool allow_credentials;
    char *allow_methods; /* header value, default "POST, OPTIONS" */
    char **allow_headers; /* NULL with reflect_headers: echo Access-Control-Request-Headers */
    size_t num_allow_headers;
    bool reflect_headers;
    char **expose_headers; /* added to the computed list */
    size_t num_expose_headers;
    uint64_t max_age_s; /* Access-Control-Max-Age; 0 = omitted */
    bool allow_private_network;
} ptc_cors_config_t;

/*
 * Parses one origin pattern: an exact origin, a `*.`-wildcard origin, `~REGEX`, or `*`. On failure
 * returns PTC_EINVAL and points *why at what is wrong (for a bad regex, at a message inside errbuf).
 */
int ptc_origin_pattern_parse(const char *text, ptc_origin_pattern_t *out, char *errbuf, size_t errlen) PTC_WARN_UNUSED;
void ptc_origin_pattern_dispose(ptc_origin_pattern_t *p);
/* Deep copy (regexes are recompiled); returns 0 or PTC_ENOMEM. */
int ptc_cors_config_copy(ptc_cors_config_t *dst, const ptc_cors_config_t *src) PTC_WARN_UNUSED;
/*
 * True when a and b are the same policy field by field: origin patterns compared by their configured text, lists
 * in order, allow_methods as the stored text (NULL, the default, differs from an explicit "POST, OPTIONS").
 */
bool ptc_cors_config_eq(const ptc_cors_config_t *a, const ptc_cors_config_t *b);
void ptc_cors_config_init(ptc_cors_config_t *c);
void ptc_cors_config_dispose(ptc_cors_config_t *c);

bool ptc_origin_pattern_match(const ptc_origin_pattern_t *p, ptc_iovec_t origin);
bool ptc_cors_origin_allowed(const ptc_cors_config_t *c, ptc_iovec_t origin);

typedef enum {
    PTC_CORS_NONE,       /* no Origin, or same-origin: nothing to add (Vary: Origin when a policy exists) */
    PTC_CORS_ALLOWED,    /* add Allow-Origin (echo), credentials, Expose-Headers, Vary */
    PTC_CORS_DENIED,     /* disallowed origin: 403, no CORS headers, not forwarded */
} ptc_cors_verdict_t;

/* The decision for one request. origin points into the request head. */
typedef struct st_ptc_cors_decision_t {
    ptc_cors_verdict_t verdict;
    const ptc_cors_config_t *policy;
    ptc_iovec_t origin;
} ptc_cors_decision_t;

/*
 * Decides for an actual (non-preflight) request. self_origin is the gateway's own origin as the
 * browser addressed it ("http://" + Host): a request from it is same-origin and needs no CORS. Any
 * other origin is allowed only by a policy that lists it; without a policy it is denied, so a simple
 * request (no preflight) from any web page cannot reach the upstream.
 */
ptc_cors_decision_t ptc_cors_decide(const ptc_cors_config_t *policy, ptc_iovec_t origin, ptc_iovec_t self_origin);
/* The same, the gateway's own origin made of the request's scheme and authority (Host / :authority). */
ptc_cors_decision_t ptc_cors_decide_for(const ptc_cors_config_t *policy, ptc_iovec_t origin, ptc_iovec_t scheme, ptc_iovec_t authority);

/* A request is a preflight when it is OPTIONS with Origin and Access-Control-Request-Method. */
bool ptc_cors_is_preflight(ptc_iovec_t method, bool has_origin, bool has_request_method);

/*
 * Response headers are written by the caller; these functions fill `out` (capacity `cap`) and return
 * how many fields they wrote. Values point into policy storage, the request, or `scratch` (which must
 * outlive the use of `out`).
 */
#define PTC_CORS_MAX_FIELDS 8

typedef struct st_ptc_cors_scratch_t {
    char buf[4096];
} ptc_cors_scratch_t;

/*
 * Headers for an actual response: Allow-Origin, Allow-Credentials, Expose-Headers (grpc-status,
 * grpc-message, grpc-status-details-bin, every non-safelisted name in `sent`, and the configured list,
 * without duplicates), and Vary: Origin.
 */
size_t ptc_cors_response_headers(const ptc_cors_decision_t *d, const ptc_header_t *sent, size_t nsent, ptc_header_t *out,
                                 size_t cap, ptc_cors_scratch_t *scratch);

typedef struct st_ptc_preflight_t {
    ptc_iovec_t origin;
    ptc_iovec_t request_method;
    ptc_iovec_t request_headers;         /* Access-Control-Request-Headers, may be empty */
    bool request_private_network;        /* Access-Control-Request-Private-Network: true */
} ptc_preflight_t;

/*
 * Answers a preflight. Returns 204 and fills `out` when the origin (and method) is allowed; otherwise
 * returns 403 with no fields, and *why says what was refused.
 */
int ptc_cors_preflight(const ptc_cors_config_t *policy, const ptc_preflight_t *pf, ptc_header_t *out, size_t cap, size_t *nout,
                       ptc_cors_scratch_t *scratch, const char **why);

/*
 * Preflight avoidance (PROTOCOL.md §1.12): Google's grpc-web client with suppressCorsPreflight moves
 * every header into the URL parameter `$httpHeaders` (URL-encoded `name:value\r\n` lines) and sends a
 * CORS simple request. The parser decodes it into fields that override the request's own headers.
 * Refused (the whole request is rejected): pseudo-headers, host, hop-by-hop fields, and fields that
 * decide routing or security (origin, cookie, forwarded, x-forwarded-*, access-control-*, sec-*),
 * bad percent-encoding, a CR or LF inside a line, names that are not tokens, and more than
 * PTC_HTTP_HEADERS_MAX_BYTES decoded bytes or PTC_HTTP_HEADERS_MAX_FIELDS fields.
 */
#define PTC_HTTP_HEADERS_MAX_BYTES 8192
#define PTC_HTTP_HEADERS_MAX_FIELDS 64

typedef struct st_ptc_http_headers_param_t {
    char buf[PTC_HTTP_HEADERS_MAX_BYTES];
    ptc_header_t fields[PTC_HTTP_HEADERS_MAX_FIELDS]; /* names lower-cased, point into buf */
    size_t num_fields;
    bool present; /* the URL carried $httpHeaders */
} ptc_http_headers_param_t;

/*
 * Looks for `$httpHeaders` (also percent-encoded as `%24httpHeaders`) in the query of url. Returns 0
 * (out->present tells whether it was there), or PTC_EINVAL / PTC_ETOOBIG with *why saying what is wrong.
 */
int ptc_http_headers_param_parse(ptc_iovec_t url, ptc_http_headers_param_t *out, const char **why) PTC_WARN_UNUSED;

#endif
