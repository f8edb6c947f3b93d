/*
 * Header-value templates, for header rules and access logs: text with variables, parsed once at configuration
 * time and expanded per request from whatever the caller can look up.
 *
 *   %REQ(name)%    a request header (name: an HTTP token, lower-cased when parsed)
 *   %RESP(name)%   a response header
 *   %REQUEST_ID%   %TRACE_ID%   %UPSTREAM%   %ROUTE%   %CLIENT_IP%
 *   %JWT(path)%    a claim of the verified token (path: printable ASCII without spaces, e.g. "realm_access.roles")
 *   %%             a literal '%'
 *
 * Variable names are upper case; an argument ends at the first ')' and may not contain '%'.
 *
 * Access-log templates (ptc_template_parse_log) may also use what is known once a call has ended:
 *   %START_TIME%  (RFC 3339, UTC, milliseconds)   %PEER% (ip:port)   %HTTP_METHOD%   %PATH% (without the query)
 *   %PROTOCOL% (grpc-web, grpc-web-text, grpc, or http for a local answer)   %TRANSPORT% (http1, h2, websocket)
 *   %GRPC_STATUS%   %GRPC_MESSAGE%   %HTTP_STATUS%   %BYTES_IN%   %BYTES_OUT%   %MESSAGES_IN%   %MESSAGES_OUT%
 *   %TTFB_MS%   %DURATION_MS%   %UPSTREAM_HOST%   %KIND% (call or local)
 * Header rules refuse them.
 *
 * Safety: an expansion never contains CR, LF, NUL or another control character except HTAB. Literal text with
 * one is refused when parsed, and each such byte in a looked-up value is replaced by a space, so a header value
 * can never be split, and no header smuggled, through a variable (a client's header or a token's claim).
 */
#ifndef PORTICO_TEMPLATE_H
#define PORTICO_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "portico/common.h"

typedef enum {
    PTC_TEMPLATE_LITERAL,    /* arg: the text, escapes resolved */
    PTC_TEMPLATE_REQ,        /* arg: lower-case header name */
    PTC_TEMPLATE_RESP,       /* arg: lower-case header name */
    PTC_TEMPLATE_REQUEST_ID, /* no arg (empty) from here on, except JWT */
    PTC_TEMPLATE_TRACE_ID,
    PTC_TEMPLATE_UPSTREAM,
    PTC_TEMPLATE_ROUTE,
    PTC_TEMPLATE_CLIENT_IP,
    PTC_TEMPLATE_JWT, /* arg: claim path as written */
    /* access logs only, no arg */
    PTC_TEMPLATE_START_TIME,
    PTC_TEMPLATE_PEER,
    PTC_TEMPLATE_HTTP_METHOD,
    PTC_TEMPLATE_PATH,
    PTC_TEMPLATE_PROTOCOL,
    PTC_TEMPLATE_TRANSPORT,
    PTC_TEMPLATE_GRPC_STATUS,
    PTC_TEMPLATE_GRPC_MESSAGE,
    PTC_TEMPLATE_HTTP_STATUS,
    PTC_TEMPLATE_BYTES_IN,
    PTC_TEMPLATE_BYTES_OUT,
    PTC_TEMPLATE_MESSAGES_IN,
    PTC_TEMPLATE_MESSAGES_OUT,
    PTC_TEMPLATE_TTFB_MS,
    PTC_TEMPLATE_DURATION_MS,
    PTC_TEMPLATE_UPSTREAM_HOST,
    PTC_TEMPLATE_KIND,
} ptc_template_var_t;

typedef struct st_ptc_template_part_t {
    ptc_template_var_t kind;
    ptc_iovec_t arg; /* points into the template's own storage */
} ptc_template_part_t;

/* Adjacent literal text is one part, so a template without variables has at most one part. */
typedef struct st_ptc_template_t {
    ptc_template_part_t *parts; /* one allocation holding the parts, their args and text */
    size_t num_parts;
    const char *text; /* as configured */
} ptc_template_t;

/*
 * Parses text into *out. Returns 0, PTC_ENOMEM, or PTC_EINVAL with what is wrong in err (when err is not NULL):
 * "unknown variable %FOO%", "unterminated variable at offset N (write %% for a literal %)", "%REQ()% needs a
 * header name", "%ROUTE% takes no argument", a header name that is not an HTTP token, a claim path that is not
 * printable, a control character in the literal text. On failure *out is zeroed (disposing it is harmless).
 */
int ptc_template_parse(const char *text, ptc_template_t *out, char *err, size_t errlen) PTC_WARN_UNUSED;
/* The same for an access-log line: the log variables are allowed too. */
int ptc_template_parse_log(const char *text, ptc_template_t *out, char *err, size_t errlen) PTC_WARN_UNUSED;
void ptc_template_dispose(ptc_template_t *t);
/* True when the template has no variables: its value is the same for every request. */
bool ptc_template_is_literal(const ptc_template_t *t);

/*
 * Where values come from. get returns the value of a variable for the current request, or an empty slice (any
 * base, len 0) when there is none; the slice only has to live until get is called again. A NULL source or get
 * makes every variable empty.
 */
typedef struct st_ptc_template_source_t {
    ptc_iovec_t (*get)(void *ctx, ptc_template_var_t kind, ptc_iovec_t arg);
    void *ctx;
} ptc_template_source_t;

/*
 * Expands t into out (cap bytes including the NUL; out may be NULL when cap is 0) and returns the length
 * written, without the NUL. Missing values expand to nothing; control characters in values become spaces (see
 * above). When the expansion does not fit it is cut at cap - 1 bytes (possibly inside a UTF-8 sequence) and
 * *truncated (when truncated is not NULL) is set, otherwise cleared.
 */
size_t ptc_template_expand(const ptc_template_t *t, const ptc_template_source_t *src, char *out, size_t cap, bool *truncated);

/* True when s is a non-empty HTTP token (RFC 9110 §5.6.2: 1*tchar), in any case. */
bool ptc_http_token_valid(ptc_iovec_t s);

/*
 * Whether a header rule may set (add, replace or remove) a header of this name: returns NULL when it may,
 * otherwise why not, as a phrase to follow "cannot set header \"x\": ". Refused are names that are not
 * lower-case HTTP tokens, pseudo-headers (":path"), hop-by-hop headers (connection, keep-alive,
 * proxy-connection, te, upgrade, trailer, http2-settings) and the ones the gateway derives itself for framing
 * and routing (transfer-encoding, content-length, host).
 */
const char *ptc_header_name_unsettable_reason(ptc_iovec_t name);
bool ptc_header_name_settable(ptc_iovec_t name);

/* True when the NUL-terminated v may be a literal header value: no control character other than HTAB (no CR,
 * LF, DEL). */
bool ptc_header_value_literal_ok(const char *v);

#endif
