/*
 * Configuration: defaults, value parsers, validation and routing. The YAML loader is in yaml.c.
 *
 * File format (YAML, one document; every key optional; an empty file means all defaults):
 *
 *   workers: 2                 # 0 or absent = number of cores; 0..1024
 *   log_level: info            # debug|info|warn|error (also accepted: warning, off)
 *   health_path: /healthz      # must start with '/'
 *   watch: true                # reload when the configuration file changes; default true
 *   pid_file: portico.pid      # write the process id here; default (or ~): none
 *   metrics:                   # GET /metrics on the admin listener
 *     max_methods: 1000          # method paths counted one by one per worker, 0..65536 (default 1000); the rest share
 *                                # grpc_method="other"
 *   access_log:                # one line per call and per local answer; default (or ~): none
 *     path: access.log           # required: a file (appended to, created 0644; resolved like pid_file) or "-" (stderr)
 *     format: json               # json (default) or a template: the header-rule variables and the log variables
 *                                # of include/portico/template.h ("%START_TIME% %PATH% %GRPC_STATUS%")
 *     buffer: 256KiB             # per worker: lines waiting for the writer; 16KiB..1GiB (default 256KiB)
 *   admin:                     # the admin HTTP API (read and edit the live configuration); ~ = none (the default)
 *     address: 127.0.0.1:9901  # where it listens; absent: no admin listener (unless --admin gives one)
 *     token_file: admin.token  # the bearer token: this file's contents without surrounding whitespace, read while
 *                              # loading; unreadable, empty, several lines or over 4 KiB: an error
 *     token: s3cr3t            # or the token inline (not with token_file); "<redacted>" is refused
 *   listeners:                 # replaces the default listener 127.0.0.1:8080
 *     - address: 127.0.0.1:8080
 *     - "[::1]:8080"           # a bare string item is the address
 *     - address: 0.0.0.0:8443
 *       tls:                   # TLS 1.2/1.3, ALPN h2 then http/1.1 (a mapping; cert and key required)
 *         cert: server.pem     # certificate chain, PEM, leaf first
 *         key: server.key      # its private key, PEM, unencrypted
 *         certificates:        # optional, non-empty: more certificates, chosen by the client's SNI name
 *           - {cert: other.pem, key: other.key}   # (matched against each certificate's SAN DNS names, else its
 *                                                 # CN; wildcards work); no match or no SNI: cert/key above
 *         client_auth: none    # none (default) | optional | required: client certificates (mTLS)
 *         client_ca: ca.pem    # CA file for client certificates: required with optional/required, refused with none
 *         min_version: "1.2"   # "1.2" (default) or "1.3"
 *   upstreams:                 # replaces the default upstream "default" at 127.0.0.1:50051
 *     - name: echo             # required; 1-63 characters of A-Z a-z 0-9 . _ -; unique
 *       endpoints: [127.0.0.1:50051, "[::1]:50052", backend.local:50051]   # required, non-empty
 *       authority: echo.internal     # optional; default (or ~): the request's Host
 *       connect_timeout: 3s          # default 3s; > 0
 *       max_connections: 4           # per worker, default 4; >= 1
 *       max_pending: 1024            # per worker, default 1024; 0 allowed
 *       backoff: {initial: 100ms, max: 5s}   # defaults 100ms / 5s; both > 0, initial <= max
 *       balancing: round_robin       # round_robin (default) | least_request
 *       dns_refresh: 30s             # host names resolved again this often; 0 = only when connecting; default 30s
 *       health_check:                # active grpc.health.v1.Health/Check; absent or false: none; true: the defaults
 *         service: ""                # HealthCheckRequest.service; default "" (the whole server); <= 200 bytes
 *         interval: 5s               # default 5s; > 0
 *         timeout: 1s                # default 1s; > 0
 *         healthy_threshold: 2       # default 2; 1..1000
 *         unhealthy_threshold: 3     # default 3; 1..1000
 *       outlier:                     # passive ejection; absent or false: none; true: the defaults
 *         consecutive_failures: 5    # failed connects or grpc-status 14 in a row; default 5; >= 1
 *         ejection: 30s              # default 30s; > 0
 *       tls:                         # HTTP/2 over TLS with ALPN h2 instead of h2c; a mapping, `tls: {}` = defaults
 *         ca: ca.pem                 # CA file the server is verified against; default: the system store
 *         server_name: echo.test     # SNI and verified name; default: authority without its port, else the
 *                                    # endpoint host (an IP address is verified as such and sent without SNI)
 *         cert: client.pem           # optional client certificate chain (mTLS); cert and key go together
 *         key: client.key
 *         insecure_skip_verify: false  # true: no verification at all (warned about at start-up); not with ca
 *   routes:                    # replaces the current routes
 *     - prefix: /portico.test.Echo/   # or  path: /exact.Service/Method  (exactly one; starts with '/')
 *       upstream: echo                # required; must name an upstream
 *     - prefix: /                     # catch-all
 *       upstream: echo
 *   limits:
 *     max_message_size: 4MiB     # default 4 MiB; >= 1
 *     max_header_size: 16KiB     # default 16 KiB; >= 1
 *     max_headers: 100           # default 100; >= 1
 *     call_buffer_size: 256KiB   # default 256 KiB; >= 1
 *     stream_window_size: 256KiB # default 256 KiB; 1024 .. 2^31-1
 *     max_connections: 10000     # default 10000; >= 1 (per worker)
 *     max_connections_total: 0   # all workers together; default 0 = no cap
 *     max_concurrent_streams: 128  # HTTP/2 streams per browser-side connection; default 128; 1 .. 65536
 *   timeouts:
 *     max_grpc_timeout: 0        # 0 = no clamp (default 0)
 *     default_grpc_timeout: 0    # default 0 = none
 *     idle: 60s                  # default 60s; > 0
 *     header_read: 10s           # default 10s; > 0
 *     drain: 10s                 # default 10s; 0 allowed
 *     drain_delay: 0s            # listeners stay open this long after SIGTERM (ready is 503 already); default 0
 *   compression:               # HTTP Content-Encoding of gRPC-Web responses (Accept-Encoding: gzip)
 *     gzip: false                # default false
 *     min_size: 1KiB             # only when the first message is at least this big; default 1 KiB
 *     level: 5                   # zlib level 1..9; default 5
 *   websocket:                 # grpc-websockets transport (client and bidi streams from browsers)
 *     enabled: true              # default true
 *     ping_interval: 30s         # ping idle sockets; close after two unanswered; 0 = never (default 30s)
 *   cors:                      # the global CORS policy; without this section no cross-origin request is allowed
 *     allow_origins:           # non-empty; each an exact origin, a *.-wildcard origin, ~REGEX (anchored PCRE2) or *
 *       - https://app.example.com          # exact: SCHEME://HOST[:PORT], no path; case-insensitive
 *       - WILDCARD                         # https:// followed by *.example.com (apart here only because this is a
 *                                          # C comment): real subdomains only, same scheme and port
 *       - "~^https://[a-z]+\\.example\\.org$"   # anchored at both ends
 *       - "*"                              # any origin except "null" (echoed, never a literal *)
 *     allow_credentials: false     # default false
 *     allow_methods: [POST, OPTIONS]   # tokens; default "GET, POST, OPTIONS"
 *     allow_headers: "*"           # "*" (default) = reflect what the preflight asks for; or a list of names
 *     expose_headers: [x-custom]   # names added to the computed Access-Control-Expose-Headers
 *     max_age: 10m                 # Access-Control-Max-Age, whole seconds; default 10m; 0 = omitted
 *     allow_private_network: false # default false
 *
 *   request_id:                # request ids, on by default; `request_id: false` turns them off (`true`: the defaults)
 *     enabled: true              # default true
 *     header: x-request-id       # default x-request-id; lower-cased; a header the gateway may set (see Rules)
 *     max_length: 128            # a longer incoming id (or one with other characters) is replaced; 1..128, default 128
 *     trust_incoming: true       # keep a valid incoming id (default true); false: always make a new one
 *   trace:                     # W3C Trace Context, on by default; `trace: false` turns it off (`true`: the defaults)
 *     enabled: true              # default true
 *     sampled: false             # the sampled flag of the traces the gateway starts; default false
 *   headers:                   # global header rules (default: none), run before a route's own
 *     request:                   # on the request sent upstream
 *       - {set: x-forwarded-origin, value: "%REQ(origin)%"}   # replace (or add) with a template
 *       - {add: x-gateway, value: portico}                     # add a field, keeping the others of that name
 *       - {remove: x-debug}
 *       - {rename: x-old, to: x-new}
 *     response: [{set: x-served-by, value: portico}]   # on the response head sent to the client
 *     trailers: [{remove: x-internal}]                 # on the trailers
 *   jwt:                       # JSON Web Tokens (default: no providers, no check)
 *     providers:
 *       - name: main             # required; 1-63 characters of A-Z a-z 0-9 . _ -; unique
 *         issuer: https://issuer.example/      # "iss" must equal it; default: not checked
 *         audiences: [api://portico]           # "aud" must hold one of them (a single string works too);
 *                                              # default: not checked
 *         from: {header: authorization, prefix: "Bearer "}   # where the token is; this is the default. Or
 *                                              # {cookie: NAME} or {query: NAME}; {header: NAME} without a prefix
 *                                              # takes the whole value
 *         jwks_file: keys.json   # a local JWKS (must be readable; its keys are checked when the gateway uses it)
 *         jwks_url: https://issuer.example/.well-known/jwks.json   # fetched by the gateway; at least one of
 *                                                                  # jwks_file and jwks_url is required
 *         jwks_ca: ca.pem        # CA file for jwks_url; default: the system store
 *         jwks_cache: 10m        # how long fetched keys are used when the response does not say; > 0, default 10m
 *         clock_skew: 60s        # leeway for exp and nbf; default 60s
 *         max_token_size: 8KiB   # 256 .. 1MiB, default 8KiB
 *         claims_to_headers:     # non-empty: claims copied into upstream headers (replacing what the client sent)
 *           - {claim: sub, header: x-auth-user-id}
 *         forward_payload: x-jwt-payload   # a header carrying the verified payload upstream; default: none
 *         strip_token: false     # remove the token (header, cookie or query parameter) before forwarding
 *     default:                   # what routes without their own `jwt` require; default (or `disabled`): nothing
 *       providers: [main]        # required, non-empty: one of them must accept the token
 *       optional: false          # true: a request without a token passes (a token that is there must be valid)
 *       require_claims: {scope: read, "realm_access.roles": admin}   # non-empty; all must hold
 *
 *   and in a route:
 *     - prefix: /portico.test.Echo/
 *       upstream: echo
 *       cors: {allow_origins: ["https://other.example"]}   # replaces the global policy for this route
 *       headers: {request: [{set: x-route, value: "%ROUTE%"}]}   # the route's own rules, after the global ones
 *       jwt: {providers: [main], optional: true}   # replaces jwt.default (entirely); `jwt: disabled`: no check
 *       native_filters: true       # header rules and JWT run for native gRPC clients too; default true
 *       get_cache_control: "public, max-age=60"   # Cache-Control of successful Connect GET responses; default none
 *
 * Rules:
 *  - A file without `listeners` keeps the current listeners, one without `admin` the current admin
 *    settings, and one without `access_log` the current access log. Without `upstreams` it keeps the current
 *    upstreams, and its routes (if any) may name them (e.g. `upstream: default`); without `routes` as well it
 *    keeps the current routes. With `upstreams` but no `routes`, a single upstream gets a catch-all route
 *    (prefix "/"); several upstreams without routes are an error. Other keys override one by one.
 *  - Routes are matched exact paths first, then prefixes longest first (equal lengths keep file order);
 *    the first match wins. Matching is byte-wise and case-sensitive on the path without its query.
 *  - A `cors` section (top level or in a route) is a whole policy: keys it does not give take the defaults
 *    above, not the values of the global policy. Its presence enables the policy, even when it allows no
 *    origin (`cors: {}` answers every cross-origin request with 403). A file without a top-level `cors` keeps
 *    the current global policy. Header names and methods must be HTTP tokens. Booleans are true or false.
 *  - Unknown keys, duplicate keys, wrong types, empty lists, duplicate upstream names, duplicate routes
 *    and duplicate listener addresses are errors.
 *  - `request_id`, `trace`, `headers` and `jwt` are whole sections too: keys they do not give take the
 *    defaults, and a file without one keeps the current settings. A route without `headers` has no rules of
 *    its own; a route without `jwt` gets jwt.default.
 *  - A header rule has exactly one of add, set, remove and rename; `value` goes with add and set (and only
 *    them), `to` with rename. Names are lower-cased, and must be headers a rule may set: HTTP tokens, not
 *    pseudo-headers, hop-by-hop headers, content-length, transfer-encoding or host (also for `to`,
 *    request_id.header, claims_to_headers and forward_payload). A value is a template (literal text and
 *    %VARIABLES%, see include/portico/template.h); request rules cannot use %RESP(...)%: there is no
 *    response yet. The text is kept as written.
 *  - JWT providers are referred to by name (jwt.default and a route's `jwt`), and must exist: in this file's
 *    jwt section, or the current one when the file has none. A jwks_url is https:// (http:// only for
 *    127.0.0.1, localhost and [::1]); jwks_ca goes with jwks_url only. Claim paths are printable ASCII
 *    without spaces, "a.b" reaching into nested objects; require_claims values are compared as text.
 *  - File names (TLS files, admin.token_file, pid_file, jwks_file, jwks_ca) are relative to the directory of
 *    the configuration file (as given for --tls-cert / --tls-key), or to the base directory given to
 *    ptc_config_load_string_in. The TLS files, the token file and the JWKS files are read while loading: a
 *    certificate chain that does not parse, a key that does not parse, is encrypted or does not match its
 *    certificate, a CA file without a certificate, a token file that cannot be read or is empty, or a
 *    jwks_file that cannot be read is an error naming the line and key of the file at fault. SIGHUP reads
 *    the same TLS files again (certificate reload).
 *  - The admin address must differ from every listener's.
 *  - Integers are unsigned decimal. Durations are an unsigned decimal number, optionally with a fraction,
 *    and a unit ms, s, m or h with no space ("250ms", "3s", "1.5s", "2m", "1h"); a bare number is seconds
 *    ("0", "30", "0.5"). Values finer than a millisecond ("1.5ms") are rejected.
 *  - Sizes are an unsigned decimal integer of bytes, optionally followed (no space) by KiB, MiB, GiB or the
 *    synonyms k, K, KB / M, MB / G, GB; all are powers of 1024. No fractions ("1.5MiB" is an error).
 *  - Addresses are HOST:PORT or [IPV6]:PORT. HOST is a name or an IPv4 address (A-Z a-z 0-9 . _ -); IPv6
 *    addresses must be bracketed (an optional %zone is allowed). PORT is decimal, 1..65535.
 *  - `~`, `null` or an empty value means "no overrides" for limits, timeouts and backoff and "none" for
 *    authority; anywhere else it is a type error.
 *  - Anchors and aliases work (an error inside an aliased node reports the anchor's line); merge keys
 *    (`<<:`) are not supported.
 *  - Errors read "FILE:LINE: KEY: what is wrong", LINE being the line of the offending node, e.g.
 *      portico.yaml:7: upstreams[0].endpoints[1]: invalid address "h:0": port must be a number between 1 and 65535
 *      portico.yaml:3: limits.max_mesage_size: unknown key
 *      portico.yaml:9: syntax error: did not find expected key (while parsing a block mapping at line 2)
 *    An unreadable file gives "FILE: cannot open: REASON".
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portico/config_internal.h"
#include "portico/filter.h"
#include "portico/template.h"

_Static_assert(PTC_CONFIG_MAX_REQUEST_ID_LENGTH == PTC_REQUEST_ID_MAX, "request_id.max_length bound and the filter's buffer");

static const char ERR_HOSTPORT[] = "expected HOST:PORT or [IPV6]:PORT";
static const char ERR_DURATION[] = "expected a number followed by ms, s, m or h";
static const char ERR_SIZE[] = "expected a number of bytes, optionally followed by KiB, MiB or GiB";
static const char ERR_TOO_LARGE[] = "too large";

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Accumulates one decimal digit; false on uint64 overflow. */
static bool add_digit(uint64_t *v, char c)
{
    uint64_t d = (uint64_t)(c - '0');
    if (*v > (UINT64_MAX - d) / 10)
        return false;
    *v = *v * 10 + d;
    return true;
}

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' || c == '-' || c == '_';
}

int ptc__hostport_parse(const char *s, ptc_hostport_t *out, const char **why)
{
    const char *host, *host_end, *port;

    if (s[0] == '[') {
        host = s + 1;
        if ((host_end = strchr(host, ']')) == NULL) {
            *why = "missing ']' after the IPv6 address";
            return PTC_EINVAL;
        }
        if (host_end[1] != ':') {
            *why = "missing :PORT";
            return PTC_EINVAL;
        }
        port = host_end + 2;
        if (host_end == host) {
            *why = "host is empty";
            return PTC_EINVAL;
        }
        /* validate the address part (before an optional %zone) with inet_pton */
        const char *zone = memchr(host, '%', (size_t)(host_end - host));
        size_t addr_len = (size_t)((zone != NULL ? zone : host_end) - host);
        char addr[INET6_ADDRSTRLEN];
        unsigned char bin[16];
        if (addr_len >= sizeof(addr)) {
            *why = "invalid IPv6 address";
            return PTC_EINVAL;
        }
        memcpy(addr, host, addr_len);
        addr[addr_len] = '\0';
        if (inet_pton(AF_INET6, addr, bin) != 1) {
            *why = "invalid IPv6 address";
            return PTC_EINVAL;
        }
        if (zone != NULL) {
            if (zone + 1 == host_end) {
                *why = "invalid IPv6 address";
                return PTC_EINVAL;
            }
            for (const char *p = zone + 1; p < host_end; p++) {
                if (!is_host_char(*p)) {
                    *why = "invalid IPv6 address";
                    return PTC_EINVAL;
                }
            }
        }
    } else {
        host = s;
        if ((host_end = strrchr(s, ':')) == NULL) {
            *why = s[0] == '\0' ? ERR_HOSTPORT : "missing :PORT";
            return PTC_EINVAL;
        }
        port = host_end + 1;
        if (memchr(host, ':', (size_t)(host_end - host)) != NULL) {
            *why = "IPv6 addresses must be in brackets, e.g. [::1]:50051";
            return PTC_EINVAL;
        }
        if (host_end == host) {
            *why = "host is empty";
            return PTC_EINVAL;
        }
        for (const char *p = host; p < host_end; p++) {
            if (!is_host_char(*p)) {
                *why = "invalid character in host";
                return PTC_EINVAL;
            }
        }
    }

    uint64_t v = 0;
    const char *p = port;
    for (; is_digit(*p); p++) {
        if (!add_digit(&v, *p) || v > 65535)
            break;
    }
    if (p == port || *p != '\0' || v < 1 || v > 65535) {
        *why = "port must be a number between 1 and 65535";
        return PTC_EINVAL;
    }

    size_t host_len = (size_t)(host_end - host);
    char *h = malloc(host_len + 1);
    if (h == NULL) {
        *why = "out of memory";
        return PTC_ENOMEM;
    }
    memcpy(h, host, host_len);
    h[host_len] = '\0';
    out->host = h;
    out->port = (uint16_t)v;
    return 0;
}

int ptc_hostport_parse(const char *s, ptc_hostport_t *out)
{
    const char *why;
    return ptc__hostport_parse(s, out, &why);
}

void ptc_hostport_dispose(ptc_hostport_t *hp)
{
    free(hp->host);
    hp->host = NULL;
    hp->port = 0;
}

void ptc__hostport_free(ptc_hostport_t *hp)
{
    if (hp == NULL)
        return;
    ptc_hostport_dispose(hp);
    free(hp);
}

bool ptc_hostport_eq(const ptc_hostport_t *a, const ptc_hostport_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->port != b->port)
        return false;
    return a->host != NULL && b->host != NULL ? strcmp(a->host, b->host) == 0 : a->host == b->host;
}

int ptc__hostport_copy(ptc_hostport_t *dst, const ptc_hostport_t *src)
{
    if ((dst->host = strdup(src->host != NULL ? src->host : "")) == NULL)
        return PTC_ENOMEM;
    dst->port = src->port;
    return 0;
}

int ptc__duration_parse(const char *s, uint64_t *out_ms, const char **why)
{
    /* the fraction is kept as frac / frac_scale with at most 9 digits; more non-zero digits are always
     * finer than a millisecond, because the largest unit is an hour (3.6e6 ms) */
    uint64_t whole = 0, frac = 0, frac_scale = 1, unit;
    bool sub_ms = false;
    const char *p = s;

    if (!is_digit(*p)) {
        *why = ERR_DURATION;
        return PTC_EINVAL;
    }
    for (; is_digit(*p); p++) {
        if (!add_digit(&whole, *p)) {
            *why = ERR_TOO_LARGE;
            return PTC_EINVAL;
        }
    }
    if (*p == '.') {
        p++;
        if (!is_digit(*p)) {
            *why = ERR_DURATION;
            return PTC_EINVAL;
        }
        for (; is_digit(*p); p++) {
            if (frac_scale < 1000000000) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_scale *= 10;
            } else if (*p != '0') {
                sub_ms = true;
            }
        }
    }
    if (*p == '\0' || strcmp(p, "s") == 0) {
        unit = 1000;
    } else if (strcmp(p, "ms") == 0) {
        unit = 1;
    } else if (strcmp(p, "m") == 0) {
        unit = 60 * 1000;
    } else if (strcmp(p, "h") == 0) {
        unit = 60 * 60 * 1000;
    } else {
        *why = ERR_DURATION;
        return PTC_EINVAL;
    }

    uint64_t frac_units = frac * unit; /* < 1e9 * 3.6e6, no overflow */
    if (sub_ms || frac_units % frac_scale != 0) {
        *why = "finer than a millisecond";
        return PTC_EINVAL;
    }
    if (whole > UINT64_MAX / unit || whole * unit > UINT64_MAX - frac_units / frac_scale) {
        *why = ERR_TOO_LARGE;
        return PTC_EINVAL;
    }
    *out_ms = whole * unit + frac_units / frac_scale;
    return 0;
}

int ptc_duration_parse(const char *s, uint64_t *out_ms)
{
    const char *why;
    return ptc__duration_parse(s, out_ms, &why);
}

int ptc__size_parse(const char *s, uint64_t *out, const char **why)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {{"", 1},
                 {"k", 1ull << 10},
                 {"K", 1ull << 10},
                 {"KB", 1ull << 10},
                 {"KiB", 1ull << 10},
                 {"M", 1ull << 20},
                 {"MB", 1ull << 20},
                 {"MiB", 1ull << 20},
                 {"G", 1ull << 30},
                 {"GB", 1ull << 30},
                 {"GiB", 1ull << 30}};
    uint64_t v = 0;
    const char *p = s;

    if (!is_digit(*p)) {
        *why = ERR_SIZE;
        return PTC_EINVAL;
    }
    for (; is_digit(*p); p++) {
        if (!add_digit(&v, *p)) {
            *why = ERR_TOO_LARGE;
            return PTC_EINVAL;
        }
    }
    for (size_t i = 0; i < PTC_ARRAY_SIZE(units); i++) {
        if (strcmp(p, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mult) {
                *why = ERR_TOO_LARGE;
                return PTC_EINVAL;
            }
            *out = v * units[i].mult;
            return 0;
        }
    }
    *why = ERR_SIZE;
    return PTC_EINVAL;
}

int ptc_size_parse(const char *s, uint64_t *out)
{
    const char *why;
    return ptc__size_parse(s, out, &why);
}

void ptc__format_size(uint64_t v, char *buf, size_t len)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"GiB", 30}, {"MiB", 20}, {"KiB", 10}};
    for (size_t i = 0; v != 0 && i < PTC_ARRAY_SIZE(units); i++) {
        if (v % (1ull << units[i].shift) == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", v >> units[i].shift, units[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64, v);
}

void ptc__format_duration(uint64_t ms, char *buf, size_t len)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"h", 60 * 60 * 1000}, {"m", 60 * 1000}, {"s", 1000}};
    if (ms == 0) {
        snprintf(buf, len, "0s");
        return;
    }
    for (size_t i = 0; i < PTC_ARRAY_SIZE(units); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", ms / units[i].ms, units[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64 "ms", ms);
}

const ptc__field_t ptc__limits_fields[] = {
    {"max_message_size", PTC__FIELD_SIZE32, offsetof(ptc_limits_config_t, max_message_size)},
    {"max_header_size", PTC__FIELD_SIZE32, offsetof(ptc_limits_config_t, max_header_size)},
    {"max_headers", PTC__FIELD_UINT32, offsetof(ptc_limits_config_t, max_headers)},
    {"call_buffer_size", PTC__FIELD_SIZE32, offsetof(ptc_limits_config_t, call_buffer_size)},
    {"stream_window_size", PTC__FIELD_SIZE32, offsetof(ptc_limits_config_t, stream_window_size)},
    {"max_connections", PTC__FIELD_UINT32, offsetof(ptc_limits_config_t, max_connections)},
    {"max_connections_total", PTC__FIELD_UINT32, offsetof(ptc_limits_config_t, max_connections_total)},
    {"max_concurrent_streams", PTC__FIELD_UINT32, offsetof(ptc_limits_config_t, max_concurrent_streams)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__timeouts_fields[] = {
    {"max_grpc_timeout", PTC__FIELD_DURATION, offsetof(ptc_timeouts_config_t, max_grpc_timeout_ms)},
    {"default_grpc_timeout", PTC__FIELD_DURATION, offsetof(ptc_timeouts_config_t, default_grpc_timeout_ms)},
    {"idle", PTC__FIELD_DURATION, offsetof(ptc_timeouts_config_t, idle_ms)},
    {"header_read", PTC__FIELD_DURATION, offsetof(ptc_timeouts_config_t, header_read_ms)},
    {"drain", PTC__FIELD_DURATION, offsetof(ptc_timeouts_config_t, drain_ms)},
    {"drain_delay", PTC__FIELD_DURATION, offsetof(ptc_timeouts_config_t, drain_delay_ms)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__compression_fields[] = {
    {"gzip", PTC__FIELD_BOOL, offsetof(ptc_compression_config_t, gzip)},
    {"min_size", PTC__FIELD_SIZE32, offsetof(ptc_compression_config_t, min_size)},
    {"level", PTC__FIELD_UINT32, offsetof(ptc_compression_config_t, level)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__websocket_fields[] = {
    {"enabled", PTC__FIELD_BOOL, offsetof(ptc_websocket_config_t, enabled)},
    {"ping_interval", PTC__FIELD_DURATION, offsetof(ptc_websocket_config_t, ping_interval_ms)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__metrics_fields[] = {
    {"max_methods", PTC__FIELD_UINT32, offsetof(ptc_metrics_config_t, max_methods)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__upstream_fields[] = {
    {"connect_timeout", PTC__FIELD_DURATION, offsetof(ptc_upstream_config_t, connect_timeout_ms)},
    {"max_connections", PTC__FIELD_UINT32, offsetof(ptc_upstream_config_t, max_connections)},
    {"max_pending", PTC__FIELD_UINT32, offsetof(ptc_upstream_config_t, max_pending)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__backoff_fields[] = {
    {"initial", PTC__FIELD_DURATION, offsetof(ptc_upstream_config_t, backoff_initial_ms)},
    {"max", PTC__FIELD_DURATION, offsetof(ptc_upstream_config_t, backoff_max_ms)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__upstream_policy_fields[] = {
    {"dns_refresh", PTC__FIELD_DURATION, offsetof(ptc_upstream_config_t, dns_refresh_ms)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__health_check_fields[] = {
    {"interval", PTC__FIELD_DURATION, offsetof(ptc_health_check_config_t, interval_ms)},
    {"timeout", PTC__FIELD_DURATION, offsetof(ptc_health_check_config_t, timeout_ms)},
    {"healthy_threshold", PTC__FIELD_UINT32, offsetof(ptc_health_check_config_t, healthy_threshold)},
    {"unhealthy_threshold", PTC__FIELD_UINT32, offsetof(ptc_health_check_config_t, unhealthy_threshold)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__outlier_fields[] = {
    {"consecutive_failures", PTC__FIELD_UINT32, offsetof(ptc_outlier_config_t, consecutive_failures)},
    {"ejection", PTC__FIELD_DURATION, offsetof(ptc_outlier_config_t, ejection_ms)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__request_id_fields[] = {
    {"max_length", PTC__FIELD_UINT32, offsetof(ptc_request_id_config_t, max_length)},
    {"trust_incoming", PTC__FIELD_BOOL, offsetof(ptc_request_id_config_t, trust_incoming)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__trace_fields[] = {
    {"sampled", PTC__FIELD_BOOL, offsetof(ptc_trace_config_t, sampled)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const ptc__field_t ptc__jwt_provider_fields[] = {
    {"jwks_cache", PTC__FIELD_DURATION, offsetof(ptc_jwt_provider_config_t, jwks_cache_ms)},
    {"clock_skew", PTC__FIELD_DURATION, offsetof(ptc_jwt_provider_config_t, clock_skew_ms)},
    {"max_token_size", PTC__FIELD_SIZE32, offsetof(ptc_jwt_provider_config_t, max_token_size)},
    {"strip_token", PTC__FIELD_BOOL, offsetof(ptc_jwt_provider_config_t, strip_token)},
    {NULL, PTC__FIELD_UINT32, 0},
};

const char *const ptc__header_op_names[4] = {
    [PTC_HEADER_ADD] = "add", [PTC_HEADER_SET] = "set", [PTC_HEADER_REMOVE] = "remove", [PTC_HEADER_RENAME] = "rename"};
const char *const ptc__jwt_from_names[3] = {
    [PTC_JWT_FROM_HEADER] = "header", [PTC_JWT_FROM_COOKIE] = "cookie", [PTC_JWT_FROM_QUERY] = "query"};
const char *const ptc__balancing_names[2] = {
    [PTC_BALANCE_ROUND_ROBIN] = "round_robin", [PTC_BALANCE_LEAST_REQUEST] = "least_request"};

/* The field's value widened to 64 bits (booleans as 0 or 1). */
static uint64_t field_value(const ptc__field_t *f, const void *obj)
{
    const char *p = (const char *)obj + f->offset;
    uint32_t u32;
    uint64_t u64;
    bool b;

    switch (f->kind) {
    case PTC__FIELD_UINT32:
    case PTC__FIELD_SIZE32:
        memcpy(&u32, p, sizeof(u32));
        return u32;
    case PTC__FIELD_DURATION:
        memcpy(&u64, p, sizeof(u64));
        return u64;
    case PTC__FIELD_BOOL:
        memcpy(&b, p, sizeof(b));
        return b;
    }
    return 0;
}

bool ptc__field_eq(const ptc__field_t *f, const void *a, const void *b)
{
    return field_value(f, a) == field_value(f, b);
}

void ptc__field_format(const ptc__field_t *f, const void *obj, char *buf, size_t len)
{
    uint64_t v = field_value(f, obj);

    switch (f->kind) {
    case PTC__FIELD_UINT32:
        snprintf(buf, len, "%" PRIu64, v);
        break;
    case PTC__FIELD_SIZE32:
        ptc__format_size(v, buf, len);
        break;
    case PTC__FIELD_DURATION:
        ptc__format_duration(v, buf, len);
        break;
    case PTC__FIELD_BOOL:
        snprintf(buf, len, "%s", v ? "true" : "false");
        break;
    }
}

const char *ptc__upstream_name_check(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= PTC_CONFIG_MAX_NAME)
        return "must be 1 to 63 characters long";
    for (size_t i = 0; i < len; i++)
        if (!is_host_char(name[i]))
            return "may only contain A-Z a-z 0-9 . _ -";
    return NULL;
}

const char *ptc__health_service_check(const char *service)
{
    if (strlen(service) > PTC_CONFIG_MAX_HEALTH_SERVICE)
        return "must be at most 200 bytes long";
    for (const char *p = service; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "must not contain control characters";
    return NULL;
}

const char *ptc__path_check(const char *path)
{
    if (path[0] != '/')
        return "must start with '/'";
    for (const char *p = path; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "must not contain spaces or control characters";
    return NULL;
}

/* RFC 9110 §5.6.2 tchar */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

const char *ptc__cache_control_check(const char *value)
{
    const char *p = value;
    if (strlen(value) > PTC_CONFIG_MAX_CACHE_CONTROL)
        return "is longer than 256 bytes";
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *name = p;
        while (is_tchar(*p))
            p++;
        if (p == name)
            return "must be Cache-Control directives: token or token=value, separated by commas (e.g. \"public, max-age=60\")";
        if (*p == '=') {
            p++;
            if (*p == '"') {
                for (p++; *p != '"'; p++) {
                    if (*p == '\\' && p[1] != '\0')
                        p++;
                    else if (*p == '\0' || (unsigned char)*p < 0x20 || *p == 0x7f)
                        return "has an unterminated quoted-string or a control character";
                }
                p++;
            } else {
                const char *v = p;
                while (is_tchar(*p))
                    p++;
                if (p == v)
                    return "has a directive with '=' but no value";
            }
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return NULL;
        if (*p != ',')
            return "must be Cache-Control directives: token or token=value, separated by commas (e.g. \"public, max-age=60\")";
        p++;
    }
}

const char *ptc__claim_path_check(const char *path)
{
    if (path[0] == '\0')
        return "must not be empty";
    for (const char *p = path; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "must be printable ASCII without spaces";
    return NULL;
}

int ptc__request_id_init(ptc_request_id_config_t *r)
{
    *r = (ptc_request_id_config_t){.enabled = true, .max_length = PTC_CONFIG_MAX_REQUEST_ID_LENGTH, .trust_incoming = true};
    return (r->header = strdup(PTC_CONFIG_DEFAULT_REQUEST_ID_HEADER)) == NULL ? PTC_ENOMEM : 0;
}

void ptc__jwt_provider_init_defaults(ptc_jwt_provider_config_t *p)
{
    p->from = PTC_JWT_FROM_HEADER;
    p->jwks_cache_ms = 10 * 60 * 1000;
    p->clock_skew_ms = 60 * 1000;
    p->max_token_size = 8u << 10;
    p->strip_token = false;
}

void ptc__upstream_init_defaults(ptc_upstream_config_t *up)
{
    up->connect_timeout_ms = 3000;
    up->max_connections = 4;
    up->max_pending = 1024;
    up->backoff_initial_ms = 100;
    up->backoff_max_ms = 5000;
    up->balancing = PTC_BALANCE_ROUND_ROBIN;
    up->dns_refresh_ms = 30 * 1000;
    ptc__health_check_init_defaults(&up->health_check);
    up->health_check.enabled = false;
    ptc__outlier_init_defaults(&up->outlier);
    up->outlier.enabled = false;
}

void ptc__health_check_init_defaults(ptc_health_check_config_t *hc)
{
    hc->enabled = true;
    hc->interval_ms = 5000;
    hc->timeout_ms = 1000;
    hc->healthy_threshold = 2;
    hc->unhealthy_threshold = 3;
}

void ptc__outlier_init_defaults(ptc_outlier_config_t *o)
{
    *o = (ptc_outlier_config_t){.enabled = true, .consecutive_failures = 5, .ejection_ms = 30 * 1000};
}

void ptc__upstream_dispose(ptc_upstream_config_t *up)
{
    free(up->name);
    for (size_t i = 0; i < up->num_endpoints; i++)
        ptc_hostport_dispose(&up->endpoints[i]);
    free(up->endpoints);
    free(up->authority);
    free(up->health_check.service);
    ptc__upstream_tls_free(up->tls);
    memset(up, 0, sizeof(*up));
}

void ptc__listener_tls_free(ptc_listener_tls_config_t *tls)
{
    if (tls == NULL)
        return;
    for (size_t i = 0; i < tls->num_certs; i++) {
        free(tls->certs[i].cert);
        free(tls->certs[i].key);
    }
    free(tls->certs);
    free(tls->client_ca);
    free(tls);
}

void ptc__upstream_tls_free(ptc_upstream_tls_config_t *tls)
{
    if (tls == NULL)
        return;
    free(tls->ca);
    free(tls->server_name);
    free(tls->cert);
    free(tls->key);
    free(tls);
}

void ptc__admin_dispose(ptc_admin_config_t *admin)
{
    ptc__hostport_free(admin->address);
    free(admin->token_file);
    if (admin->token != NULL) {
        explicit_bzero(admin->token, strlen(admin->token));
        free(admin->token);
    }
    memset(admin, 0, sizeof(*admin));
}

void ptc__header_rules_dispose(ptc_header_rules_config_t *h)
{
    ptc_header_rule_config_t *lists[] = {h->request, h->response, h->trailers};
    size_t counts[] = {h->num_request, h->num_response, h->num_trailers};
    for (size_t l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            free(lists[l][i].name);
            free(lists[l][i].value);
            free(lists[l][i].to);
        }
        free(lists[l]);
    }
    memset(h, 0, sizeof(*h));
}

void ptc__jwt_provider_dispose(ptc_jwt_provider_config_t *p)
{
    free(p->name);
    free(p->issuer);
    for (size_t i = 0; i < p->num_audiences; i++)
        free(p->audiences[i]);
    free(p->audiences);
    free(p->from_name);
    free(p->from_prefix);
    free(p->jwks_file);
    free(p->jwks_url);
    free(p->jwks_ca);
    for (size_t i = 0; i < p->num_claim_headers; i++) {
        free(p->claim_headers[i].claim);
        free(p->claim_headers[i].header);
    }
    free(p->claim_headers);
    free(p->forward_payload);
    memset(p, 0, sizeof(*p));
}

void ptc__jwt_requirement_dispose(ptc_jwt_requirement_config_t *r)
{
    free(r->providers);
    for (size_t i = 0; i < r->num_claims; i++) {
        free(r->claims[i].claim);
        free(r->claims[i].value);
    }
    free(r->claims);
    memset(r, 0, sizeof(*r));
}

void ptc__route_dispose(ptc_route_config_t *r)
{
    ptc__header_rules_dispose(&r->headers);
    ptc__jwt_requirement_dispose(&r->jwt);
    free(r->path);
    free(r->get_cache_control);
    if (r->cors != NULL) {
        ptc_cors_config_dispose(r->cors);
        free(r->cors);
    }
    memset(r, 0, sizeof(*r));
}

static bool route_before(const ptc_route_config_t *a, const ptc_route_config_t *b)
{
    if (a->match != b->match)
        return a->match == PTC_ROUTE_EXACT;
    return a->match == PTC_ROUTE_PREFIX && strlen(a->path) > strlen(b->path);
}

void ptc__routes_sort(ptc_route_config_t *routes, size_t n)
{
    /* insertion sort: stable, and route lists are short */
    for (size_t i = 1; i < n; i++) {
        ptc_route_config_t r = routes[i];
        size_t j = i;
        for (; j > 0 && route_before(&r, &routes[j - 1]); j--)
            routes[j] = routes[j - 1];
        routes[j] = r;
    }
}

int ptc_config_init_default(ptc_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    ptc_cors_config_init(&cfg->cors);
    cfg->limits = (ptc_limits_config_t){
        .max_message_size = 4u << 20,
        .max_header_size = 16u << 10,
        .max_headers = 100,
        .call_buffer_size = 256u << 10,
        .stream_window_size = 256u << 10,
        .max_connections = 10000,
        .max_connections_total = 0,
        .max_concurrent_streams = 128,
    };
    cfg->timeouts = (ptc_timeouts_config_t){
        .max_grpc_timeout_ms = 0,
        .default_grpc_timeout_ms = 0,
        .idle_ms = 60 * 1000,
        .header_read_ms = 10 * 1000,
        .drain_ms = 10 * 1000,
        .drain_delay_ms = 0,
    };
    cfg->compression = (ptc_compression_config_t){.gzip = false, .min_size = 1024, .level = 5};
    cfg->websocket = (ptc_websocket_config_t){.enabled = true, .ping_interval_ms = 30000};
    cfg->workers = 0;
    cfg->log_level = PTC_LOG_INFO;
    cfg->watch = true;
    cfg->trace = (ptc_trace_config_t){.enabled = true, .sampled = false};
    cfg->metrics.max_methods = 1000;
    cfg->access_log.buffer_size = PTC_CONFIG_DEFAULT_ACCESS_LOG_BUFFER;

    if (ptc__request_id_init(&cfg->request_id) != 0 || (cfg->source = strdup("<default>")) == NULL ||
        (cfg->base_dir = strdup("")) == NULL || (cfg->health_path = strdup(PTC_CONFIG_DEFAULT_HEALTH_PATH)) == NULL)
        goto nomem;

    if ((cfg->listeners = calloc(1, sizeof(*cfg->listeners))) == NULL)
        goto nomem;
    cfg->num_listeners = 1;
    if ((cfg->listeners[0].addr.host = strdup(PTC_CONFIG_DEFAULT_LISTEN_HOST)) == NULL)
        goto nomem;
    cfg->listeners[0].addr.port = PTC_CONFIG_DEFAULT_LISTEN_PORT;

    if ((cfg->upstreams = calloc(1, sizeof(*cfg->upstreams))) == NULL)
        goto nomem;
    cfg->num_upstreams = 1;
    ptc_upstream_config_t *up = &cfg->upstreams[0];
    ptc__upstream_init_defaults(up);
    if ((up->name = strdup(PTC_CONFIG_DEFAULT_UPSTREAM_NAME)) == NULL ||
        (up->endpoints = calloc(1, sizeof(*up->endpoints))) == NULL)
        goto nomem;
    up->num_endpoints = 1;
    if ((up->endpoints[0].host = strdup(PTC_CONFIG_DEFAULT_UPSTREAM_HOST)) == NULL)
        goto nomem;
    up->endpoints[0].port = PTC_CONFIG_DEFAULT_UPSTREAM_PORT;

    if ((cfg->routes = calloc(1, sizeof(*cfg->routes))) == NULL)
        goto nomem;
    cfg->num_routes = 1;
    cfg->routes[0].match = PTC_ROUTE_PREFIX;
    cfg->routes[0].upstream_index = 0;
    cfg->routes[0].native_filters = true;
    if ((cfg->routes[0].path = strdup("/")) == NULL)
        goto nomem;
    return 0;

nomem:
    ptc_config_dispose(cfg);
    return PTC_ENOMEM;
}

void ptc__config_copy_scalars(ptc_config_t *dst, const ptc_config_t *src)
{
    dst->limits = src->limits;
    dst->timeouts = src->timeouts;
    dst->compression = src->compression;
    dst->websocket = src->websocket;
    dst->workers = src->workers;
    dst->log_level = src->log_level;
    dst->watch = src->watch;
    dst->request_id = src->request_id;
    dst->request_id.header = NULL; /* the caller copies the strings */
    dst->trace = src->trace;
    dst->metrics = src->metrics;
    dst->access_log.buffer_size = src->access_log.buffer_size; /* the caller copies the strings */
}

void ptc_config_dispose(ptc_config_t *cfg)
{
    free(cfg->source);
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        ptc_hostport_dispose(&cfg->listeners[i].addr);
        ptc__listener_tls_free(cfg->listeners[i].tls);
    }
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        ptc__upstream_dispose(&cfg->upstreams[i]);
    free(cfg->upstreams);
    for (size_t i = 0; i < cfg->num_routes; i++)
        ptc__route_dispose(&cfg->routes[i]);
    free(cfg->routes);
    ptc_cors_config_dispose(&cfg->cors);
    free(cfg->health_path);
    ptc__admin_dispose(&cfg->admin);
    free(cfg->request_id.header);
    ptc__header_rules_dispose(&cfg->headers);
    for (size_t i = 0; i < cfg->num_jwt_providers; i++)
        ptc__jwt_provider_dispose(&cfg->jwt_providers[i]);
    free(cfg->jwt_providers);
    ptc__jwt_requirement_dispose(&cfg->jwt_default);
    free(cfg->pid_file);
    free(cfg->access_log.path);
    free(cfg->access_log.format);
    free(cfg->base_dir);
    memset(cfg, 0, sizeof(*cfg));
}

ptc_hostport_t *ptc__hostports_copy(const ptc_hostport_t *addrs, size_t n)
{
    ptc_hostport_t *copy = calloc(n, sizeof(*copy));
    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (ptc__hostport_copy(&copy[i], &addrs[i]) != 0) {
            for (size_t j = 0; j < i; j++)
                ptc_hostport_dispose(&copy[j]);
            free(copy);
            return NULL;
        }
    }
    return copy;
}

int ptc_config_set_listeners(ptc_config_t *cfg, const ptc_hostport_t *addrs, size_t n)
{
    if (n == 0)
        return PTC_EINVAL;
    ptc_listener_config_t *listeners = calloc(n, sizeof(*listeners));
    ptc_hostport_t *copy = ptc__hostports_copy(addrs, n);
    if (listeners == NULL || copy == NULL) {
        free(listeners);
        if (copy != NULL) {
            for (size_t i = 0; i < n; i++)
                ptc_hostport_dispose(&copy[i]);
            free(copy);
        }
        return PTC_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        listeners[i].addr = copy[i]; /* moves the host strings */
    free(copy);

    for (size_t i = 0; i < cfg->num_listeners; i++) {
        ptc_hostport_dispose(&cfg->listeners[i].addr);
        ptc__listener_tls_free(cfg->listeners[i].tls);
    }
    free(cfg->listeners);
    cfg->listeners = listeners;
    cfg->num_listeners = n;
    return 0;
}

int ptc_config_set_upstream_endpoints(ptc_config_t *cfg, size_t upstream_index, const ptc_hostport_t *addrs, size_t n)
{
    if (n == 0 || upstream_index >= cfg->num_upstreams)
        return PTC_EINVAL;
    ptc_hostport_t *copy = ptc__hostports_copy(addrs, n);
    if (copy == NULL)
        return PTC_ENOMEM;
    ptc_upstream_config_t *up = &cfg->upstreams[upstream_index];
    for (size_t i = 0; i < up->num_endpoints; i++)
        ptc_hostport_dispose(&up->endpoints[i]);
    free(up->endpoints);
    up->endpoints = copy;
    up->num_endpoints = n;
    return 0;
}

int ptc_config_set_listener_cert(ptc_config_t *cfg, const char *cert, const char *key)
{
    /* everything is allocated first, so that a failure leaves cfg as it was */
    ptc_tls_keypair_config_t *pairs = calloc(cfg->num_listeners, sizeof(*pairs));
    ptc_listener_tls_config_t **fresh = calloc(cfg->num_listeners, sizeof(*fresh));
    bool ok = pairs != NULL && fresh != NULL;

    for (size_t i = 0; ok && i < cfg->num_listeners; i++) {
        ok = (pairs[i].cert = strdup(cert)) != NULL && (pairs[i].key = strdup(key)) != NULL;
        if (ok && cfg->listeners[i].tls == NULL)
            ok = (fresh[i] = calloc(1, sizeof(*fresh[i]))) != NULL &&
                 (fresh[i]->certs = calloc(1, sizeof(*fresh[i]->certs))) != NULL;
    }
    if (!ok) {
        for (size_t i = 0; i < cfg->num_listeners; i++) {
            if (pairs != NULL) {
                free(pairs[i].cert);
                free(pairs[i].key);
            }
            if (fresh != NULL)
                ptc__listener_tls_free(fresh[i]);
        }
        free(pairs);
        free(fresh);
        return PTC_ENOMEM;
    }
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        ptc_listener_tls_config_t *tls = cfg->listeners[i].tls;
        if (tls == NULL) {
            tls = cfg->listeners[i].tls = fresh[i];
            tls->num_certs = 1; /* client_auth none, TLS 1.2 minimum: the zeroes */
        } else {
            free(tls->certs[0].cert);
            free(tls->certs[0].key);
        }
        tls->certs[0] = pairs[i];
    }
    free(pairs);
    free(fresh);
    return 0;
}

int ptc_config_set_admin_address(ptc_config_t *cfg, const ptc_hostport_t *addr)
{
    ptc_hostport_t *copy = NULL;

    if (addr != NULL) {
        if ((copy = malloc(sizeof(*copy))) == NULL)
            return PTC_ENOMEM;
        if (ptc__hostport_copy(copy, addr) != 0) {
            free(copy);
            return PTC_ENOMEM;
        }
    }
    ptc__hostport_free(cfg->admin.address);
    cfg->admin.address = copy;
    return 0;
}

bool ptc_config_uses_tls(const ptc_config_t *cfg)
{
    for (size_t i = 0; i < cfg->num_listeners; i++)
        if (cfg->listeners[i].tls != NULL)
            return true;
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        if (cfg->upstreams[i].tls != NULL)
            return true;
    return false;
}

PTC_PRINTF(4, 5) static int invalid(const ptc_config_t *cfg, char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        int n = snprintf(err, errlen, "%s: ", cfg->source != NULL ? cfg->source : "<config>");
        if (n >= 0 && (size_t)n < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return PTC_ECONFIG;
}

static bool hostport_valid(const ptc_hostport_t *hp)
{
    return hp->host != NULL && hp->host[0] != '\0' && hp->port != 0;
}

static bool settable(const char *name)
{
    return name != NULL && ptc_header_name_settable(ptc_iov(name, strlen(name)));
}

/* The header rules at prefix ("headers", "routes[2].headers"). */
static int validate_rules(const ptc_config_t *cfg, char *err, size_t errlen, const char *prefix, const ptc_header_rules_config_t *h)
{
    static const char *const lists[] = {"request", "response", "trailers"};
    const ptc_header_rule_config_t *rules[] = {h->request, h->response, h->trailers};
    size_t counts[] = {h->num_request, h->num_response, h->num_trailers};

    for (size_t l = 0; l < PTC_ARRAY_SIZE(lists); l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            const ptc_header_rule_config_t *r = &rules[l][i];
            bool with_value = r->op == PTC_HEADER_ADD || r->op == PTC_HEADER_SET, rename = r->op == PTC_HEADER_RENAME;
            if ((int)r->op < (int)PTC_HEADER_ADD || (int)r->op > (int)PTC_HEADER_RENAME)
                return invalid(cfg, err, errlen, "%s.%s[%zu]: invalid operation", prefix, lists[l], i);
            if (!settable(r->name))
                return invalid(cfg, err, errlen, "%s.%s[%zu]: missing or unsettable header name", prefix, lists[l], i);
            if (with_value != (r->value != NULL))
                return invalid(cfg, err, errlen, "%s.%s[%zu].value: %s", prefix, lists[l], i,
                               with_value ? "missing" : "only used with add and set");
            if (rename != (r->to != NULL) || (rename && !settable(r->to)))
                return invalid(cfg, err, errlen, "%s.%s[%zu].to: %s", prefix, lists[l], i,
                               rename ? "missing or unsettable header name" : "only used with rename");
        }
    }
    return 0;
}

/* A requirement at prefix ("jwt.default", "routes[2].jwt"). */
static int validate_requirement(const ptc_config_t *cfg, char *err, size_t errlen, const char *prefix,
                                const ptc_jwt_requirement_config_t *r)
{
    for (size_t i = 0; i < r->num_providers; i++)
        if (r->providers[i] >= cfg->num_jwt_providers)
            return invalid(cfg, err, errlen, "%s.providers[%zu]: no provider with index %zu", prefix, i, r->providers[i]);
    for (size_t i = 0; i < r->num_claims; i++)
        if (r->claims[i].claim == NULL || ptc__claim_path_check(r->claims[i].claim) != NULL || r->claims[i].value == NULL)
            return invalid(cfg, err, errlen, "%s.require_claims: invalid claim %zu", prefix, i);
    return 0;
}

static int validate_jwt_provider(const ptc_config_t *cfg, char *err, size_t errlen, size_t i)
{
    const ptc_jwt_provider_config_t *p = &cfg->jwt_providers[i];
    const char *why;

    if (p->name == NULL)
        return invalid(cfg, err, errlen, "jwt.providers[%zu].name: missing", i);
    if ((why = ptc__upstream_name_check(p->name)) != NULL)
        return invalid(cfg, err, errlen, "jwt.providers[%zu].name: %s", i, why);
    for (size_t j = 0; j < i; j++)
        if (strcmp(cfg->jwt_providers[j].name, p->name) == 0)
            return invalid(cfg, err, errlen, "jwt.providers[%zu].name: duplicate provider name \"%s\"", i, p->name);
    if ((int)p->from < (int)PTC_JWT_FROM_HEADER || (int)p->from > (int)PTC_JWT_FROM_QUERY || p->from_name == NULL ||
        p->from_name[0] == '\0')
        return invalid(cfg, err, errlen, "jwt.providers[%zu].from: missing name", i);
    if (p->from_prefix != NULL && p->from != PTC_JWT_FROM_HEADER)
        return invalid(cfg, err, errlen, "jwt.providers[%zu].from.prefix: only used with header", i);
    if (p->jwks_file == NULL && p->jwks_url == NULL)
        return invalid(cfg, err, errlen, "jwt.providers[%zu]: needs jwks_file or jwks_url", i);
    if (p->jwks_ca != NULL && p->jwks_url == NULL)
        return invalid(cfg, err, errlen, "jwt.providers[%zu].jwks_ca: only used with jwks_url", i);
    if (p->jwks_cache_ms == 0)
        return invalid(cfg, err, errlen, "jwt.providers[%zu].jwks_cache: must be greater than 0", i);
    if (p->max_token_size < PTC_CONFIG_MIN_JWT_TOKEN_SIZE || p->max_token_size > PTC_CONFIG_MAX_JWT_TOKEN_SIZE)
        return invalid(cfg, err, errlen, "jwt.providers[%zu].max_token_size: must be between %u and %u bytes", i,
                       PTC_CONFIG_MIN_JWT_TOKEN_SIZE, PTC_CONFIG_MAX_JWT_TOKEN_SIZE);
    for (size_t j = 0; j < p->num_claim_headers; j++)
        if (p->claim_headers[j].claim == NULL || ptc__claim_path_check(p->claim_headers[j].claim) != NULL ||
            !settable(p->claim_headers[j].header))
            return invalid(cfg, err, errlen, "jwt.providers[%zu].claims_to_headers[%zu]: invalid", i, j);
    if (p->forward_payload != NULL && !settable(p->forward_payload))
        return invalid(cfg, err, errlen, "jwt.providers[%zu].forward_payload: not a header the gateway may set", i);
    return 0;
}

/* request ids, header rules, JWT */
static int validate_access_log(const ptc_config_t *cfg, char *err, size_t errlen)
{
    const ptc_access_log_config_t *al = &cfg->access_log;
    char why[256];
    ptc_template_t t;
    int ret;

    if (al->path != NULL && al->path[0] == '\0')
        return invalid(cfg, err, errlen, "access_log.path: must not be empty");
    if (al->buffer_size < PTC_CONFIG_MIN_ACCESS_LOG_BUFFER || al->buffer_size > PTC_CONFIG_MAX_ACCESS_LOG_BUFFER)
        return invalid(cfg, err, errlen, "access_log.buffer: must be between %u and %u bytes", PTC_CONFIG_MIN_ACCESS_LOG_BUFFER,
                       PTC_CONFIG_MAX_ACCESS_LOG_BUFFER);
    if (al->format == NULL || strcmp(al->format, PTC_ACCESS_LOG_JSON) == 0)
        return 0;
    if ((ret = ptc_template_parse_log(al->format, &t, why, sizeof(why))) == PTC_ENOMEM)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    ptc_template_dispose(&t);
    if (ret != 0)
        return invalid(cfg, err, errlen, "access_log.format: %s", why);
    return 0;
}

static int validate_filters(const ptc_config_t *cfg, char *err, size_t errlen)
{
    char prefix[64];
    int ret;

    if (!settable(cfg->request_id.header))
        return invalid(cfg, err, errlen, "request_id.header: missing or not a header the gateway may set");
    if (cfg->request_id.max_length < 1 || cfg->request_id.max_length > PTC_CONFIG_MAX_REQUEST_ID_LENGTH)
        return invalid(cfg, err, errlen, "request_id.max_length: must be between 1 and %d", PTC_CONFIG_MAX_REQUEST_ID_LENGTH);
    if ((ret = validate_rules(cfg, err, errlen, "headers", &cfg->headers)) != 0)
        return ret;
    for (size_t i = 0; i < cfg->num_jwt_providers; i++)
        if ((ret = validate_jwt_provider(cfg, err, errlen, i)) != 0)
            return ret;
    if ((ret = validate_requirement(cfg, err, errlen, "jwt.default", &cfg->jwt_default)) != 0)
        return ret;
    for (size_t i = 0; i < cfg->num_routes; i++) {
        snprintf(prefix, sizeof(prefix), "routes[%zu].headers", i);
        if ((ret = validate_rules(cfg, err, errlen, prefix, &cfg->routes[i].headers)) != 0)
            return ret;
        snprintf(prefix, sizeof(prefix), "routes[%zu].jwt", i);
        if ((ret = validate_requirement(cfg, err, errlen, prefix, &cfg->routes[i].jwt)) != 0)
            return ret;
    }
    return 0;
}

int ptc_config_validate(const ptc_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->num_listeners == 0)
        return invalid(cfg, err, errlen, "listeners: at least one listener is required");
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const ptc_listener_tls_config_t *tls = cfg->listeners[i].tls;
        if (!hostport_valid(&cfg->listeners[i].addr))
            return invalid(cfg, err, errlen, "listeners[%zu]: invalid address", i);
        if (tls == NULL)
            continue;
        if (tls->num_certs == 0)
            return invalid(cfg, err, errlen, "listeners[%zu].tls: a certificate (cert and key) is required", i);
        for (size_t j = 0; j < tls->num_certs; j++)
            if (tls->certs[j].cert == NULL || tls->certs[j].key == NULL)
                return invalid(cfg, err, errlen, "listeners[%zu].tls: certificate %zu needs both cert and key", i, j);
        if (tls->client_auth != PTC_TLS_CLIENT_AUTH_NONE && tls->client_ca == NULL)
            return invalid(cfg, err, errlen, "listeners[%zu].tls.client_ca: required when client_auth is not none", i);
        if (tls->client_auth == PTC_TLS_CLIENT_AUTH_NONE && tls->client_ca != NULL)
            return invalid(cfg, err, errlen, "listeners[%zu].tls.client_ca: only used with client_auth optional or required", i);
    }

    if (cfg->num_upstreams == 0)
        return invalid(cfg, err, errlen, "upstreams: at least one upstream is required");
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        const ptc_upstream_config_t *up = &cfg->upstreams[i];
        const char *why;
        if (up->name == NULL)
            return invalid(cfg, err, errlen, "upstreams[%zu].name: missing", i);
        if ((why = ptc__upstream_name_check(up->name)) != NULL)
            return invalid(cfg, err, errlen, "upstreams[%zu].name: %s", i, why);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->upstreams[j].name, up->name) == 0)
                return invalid(cfg, err, errlen, "upstreams[%zu].name: duplicate upstream name \"%s\"", i, up->name);
        if (up->num_endpoints == 0)
            return invalid(cfg, err, errlen, "upstreams[%zu].endpoints: at least one endpoint is required", i);
        for (size_t j = 0; j < up->num_endpoints; j++)
            if (!hostport_valid(&up->endpoints[j]))
                return invalid(cfg, err, errlen, "upstreams[%zu].endpoints[%zu]: invalid address", i, j);
        if (up->authority != NULL && up->authority[0] == '\0')
            return invalid(cfg, err, errlen, "upstreams[%zu].authority: must not be empty", i);
        if (up->connect_timeout_ms == 0)
            return invalid(cfg, err, errlen, "upstreams[%zu].connect_timeout: must be greater than 0", i);
        if (up->max_connections == 0)
            return invalid(cfg, err, errlen, "upstreams[%zu].max_connections: must be at least 1", i);
        if (up->backoff_initial_ms == 0)
            return invalid(cfg, err, errlen, "upstreams[%zu].backoff.initial: must be greater than 0", i);
        if (up->backoff_initial_ms > up->backoff_max_ms)
            return invalid(cfg, err, errlen, "upstreams[%zu].backoff.max: must not be less than backoff.initial", i);
        if (up->tls != NULL && (up->tls->cert == NULL) != (up->tls->key == NULL))
            return invalid(cfg, err, errlen, "upstreams[%zu].tls: cert and key go together", i);
        if (up->tls != NULL && up->tls->insecure_skip_verify && up->tls->ca != NULL)
            return invalid(cfg, err, errlen, "upstreams[%zu].tls.ca: not used with insecure_skip_verify", i);
        if ((size_t)up->balancing >= PTC_ARRAY_SIZE(ptc__balancing_names))
            return invalid(cfg, err, errlen, "upstreams[%zu].balancing: expected round_robin or least_request", i);
        const ptc_health_check_config_t *hc = &up->health_check;
        if (hc->enabled && (hc->interval_ms == 0 || hc->timeout_ms == 0))
            return invalid(cfg, err, errlen, "upstreams[%zu].health_check.%s: must be greater than 0", i,
                           hc->interval_ms == 0 ? "interval" : "timeout");
        if (hc->enabled && (hc->healthy_threshold == 0 || hc->unhealthy_threshold == 0))
            return invalid(cfg, err, errlen, "upstreams[%zu].health_check.%s: must be at least 1", i,
                           hc->healthy_threshold == 0 ? "healthy_threshold" : "unhealthy_threshold");
        if (hc->enabled && hc->service != NULL && (why = ptc__health_service_check(hc->service)) != NULL)
            return invalid(cfg, err, errlen, "upstreams[%zu].health_check.service: %s", i, why);
        if (up->outlier.enabled && (up->outlier.consecutive_failures == 0 || up->outlier.ejection_ms == 0))
            return invalid(cfg, err, errlen, "upstreams[%zu].outlier.%s: must be %s", i,
                           up->outlier.consecutive_failures == 0 ? "consecutive_failures" : "ejection",
                           up->outlier.consecutive_failures == 0 ? "at least 1" : "greater than 0");
    }

    for (size_t i = 0; i < cfg->num_routes; i++) {
        const ptc_route_config_t *r = &cfg->routes[i];
        const char *why;
        if (r->path == NULL)
            return invalid(cfg, err, errlen, "routes[%zu]: missing path", i);
        if ((why = ptc__path_check(r->path)) != NULL)
            return invalid(cfg, err, errlen, "routes[%zu].%s: %s", i, r->match == PTC_ROUTE_EXACT ? "path" : "prefix", why);
        if (r->upstream_index >= cfg->num_upstreams)
            return invalid(cfg, err, errlen, "routes[%zu].upstream: no upstream with index %zu", i, r->upstream_index);
        if (r->get_cache_control != NULL && (why = ptc__cache_control_check(r->get_cache_control)) != NULL)
            return invalid(cfg, err, errlen, "routes[%zu].get_cache_control: %s", i, why);
        if (i > 0 && route_before(r, &cfg->routes[i - 1]))
            return invalid(cfg, err, errlen, "routes[%zu]: not in match order (exact paths first, then longest prefixes)", i);
    }

    const struct {
        const char *key;
        uint32_t value, min, max;
    } limits[] = {
        {"max_message_size", cfg->limits.max_message_size, 1, UINT32_MAX},
        {"max_header_size", cfg->limits.max_header_size, 1, UINT32_MAX},
        {"max_headers", cfg->limits.max_headers, 1, UINT32_MAX},
        {"call_buffer_size", cfg->limits.call_buffer_size, 1, UINT32_MAX},
        {"stream_window_size", cfg->limits.stream_window_size, PTC_CONFIG_MIN_STREAM_WINDOW, PTC_CONFIG_MAX_STREAM_WINDOW},
        {"max_connections", cfg->limits.max_connections, 1, UINT32_MAX},
        {"max_connections_total", cfg->limits.max_connections_total, 0, UINT32_MAX},
        {"max_concurrent_streams", cfg->limits.max_concurrent_streams, 1, PTC_CONFIG_MAX_CONCURRENT_STREAMS},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(limits); i++)
        if (limits[i].value < limits[i].min || limits[i].value > limits[i].max)
            return invalid(cfg, err, errlen, "limits.%s: must be between %" PRIu32 " and %" PRIu32, limits[i].key, limits[i].min,
                           limits[i].max);

    if (cfg->timeouts.idle_ms == 0)
        return invalid(cfg, err, errlen, "timeouts.idle: must be greater than 0");
    if (cfg->timeouts.header_read_ms == 0)
        return invalid(cfg, err, errlen, "timeouts.header_read: must be greater than 0");

    if (cfg->health_path == NULL)
        return invalid(cfg, err, errlen, "health_path: missing");
    const char *why;
    if ((why = ptc__path_check(cfg->health_path)) != NULL)
        return invalid(cfg, err, errlen, "health_path: %s", why);
    if (cfg->workers > PTC_CONFIG_MAX_WORKERS)
        return invalid(cfg, err, errlen, "workers: must be between 0 and %d", PTC_CONFIG_MAX_WORKERS);
    if ((int)cfg->log_level < (int)PTC_LOG_DEBUG || (int)cfg->log_level > (int)PTC_LOG_OFF)
        return invalid(cfg, err, errlen, "log_level: invalid");

    if (cfg->admin.address != NULL) {
        if (!hostport_valid(cfg->admin.address))
            return invalid(cfg, err, errlen, "admin.address: invalid address");
        for (size_t i = 0; i < cfg->num_listeners; i++)
            if (ptc_hostport_eq(cfg->admin.address, &cfg->listeners[i].addr))
                return invalid(cfg, err, errlen, "admin.address: same address as listeners[%zu]", i);
    }
    if (cfg->admin.token_file != NULL && cfg->admin.token_file[0] == '\0')
        return invalid(cfg, err, errlen, "admin.token_file: must not be empty");
    if (cfg->admin.token != NULL && cfg->admin.token[0] == '\0')
        return invalid(cfg, err, errlen, "admin.token: must not be empty");
    if (cfg->pid_file != NULL && cfg->pid_file[0] == '\0')
        return invalid(cfg, err, errlen, "pid_file: must not be empty");
    if (cfg->metrics.max_methods > PTC_CONFIG_MAX_METHODS)
        return invalid(cfg, err, errlen, "metrics.max_methods: must be between 0 and %d", PTC_CONFIG_MAX_METHODS);
    int ret = validate_access_log(cfg, err, errlen);
    return ret != 0 ? ret : validate_filters(cfg, err, errlen);
}

const ptc_route_config_t *ptc_config_match_route(const ptc_config_t *cfg, ptc_iovec_t path)
{
    for (size_t i = 0; i < cfg->num_routes; i++) {
        const ptc_route_config_t *r = &cfg->routes[i];
        size_t len = strlen(r->path);
        if (r->match == PTC_ROUTE_EXACT ? path.len == len : path.len >= len) {
            if (len == 0 || memcmp(path.base, r->path, len) == 0)
                return r;
        }
    }
    return NULL;
}

int ptc_config_route(const ptc_config_t *cfg, ptc_iovec_t path)
{
    const ptc_route_config_t *r = ptc_config_match_route(cfg, path);
    return r != NULL ? (int)r->upstream_index : -1;
}

const ptc_cors_config_t *ptc_config_cors_for(const ptc_config_t *cfg, const ptc_route_config_t *route)
{
    return route != NULL && route->cors != NULL ? route->cors : &cfg->cors;
}

int ptc_config_add_allow_origin(ptc_config_t *cfg, const char *pattern, char *err, size_t errlen)
{
    ptc_origin_pattern_t p;
    char why[256];
    int ret;

    if ((ret = ptc_origin_pattern_parse(pattern, &p, why, sizeof(why))) != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s", why);
        return ret;
    }
    ptc_origin_pattern_t *origins = realloc(cfg->cors.origins, (cfg->cors.num_origins + 1) * sizeof(*origins));
    if (origins == NULL) {
        ptc_origin_pattern_dispose(&p);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "out of memory");
        return PTC_ENOMEM;
    }
    origins[cfg->cors.num_origins++] = p;
    cfg->cors.origins = origins;
    cfg->cors.enabled = true;
    return 0;
}
