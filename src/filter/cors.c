/*
 * CORS policy: origin matching, preflight answers, and the headers of actual responses.
 *
 * Choices (PROTOCOL.md §1.12, §2.3, §5 items 6 and 13):
 *  - Allow-Origin always echoes the request's origin, never `*`, so credentials work and caches see
 *    `Vary: Origin`.
 *  - Expose-Headers is computed per response from what actually went out (plus grpc-status,
 *    grpc-message, grpc-status-details-bin), as improbable's proxy does, so trailers-only statuses and
 *    custom metadata are readable.
 *  - Preflights are answered here, never forwarded and never authenticated; a disallowed origin gets a
 *    403 without CORS headers.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>

#include "portico/cors.h"

#define REGEX_MATCH_LIMIT 100000
#define REGEX_DEPTH_LIMIT 1000
#define MAX_ORIGIN_LEN 1024

/* The gRPC-Web and Connect essentials a preflight must allow whatever the configuration lists. */
static const ptc_iovec_t essential_headers[] = {PTC_STRLIT("content-type"),      PTC_STRLIT("x-grpc-web"),
                                                PTC_STRLIT("x-user-agent"),      PTC_STRLIT("grpc-timeout"),
                                                PTC_STRLIT("connect-protocol-version"), PTC_STRLIT("connect-timeout-ms")};
/* Always exposed: a browser must be able to read the status of a trailers-only response. */
static const ptc_iovec_t always_exposed[] = {PTC_STRLIT("grpc-status"), PTC_STRLIT("grpc-message"),
                                             PTC_STRLIT("grpc-status-details-bin")};
/* CORS-safelisted response headers (Fetch §3.2.6) and the CORS headers themselves: never listed. */
static const ptc_iovec_t not_exposed[] = {PTC_STRLIT("cache-control"), PTC_STRLIT("content-language"), PTC_STRLIT("content-length"),
                                          PTC_STRLIT("content-type"),  PTC_STRLIT("expires"),          PTC_STRLIT("last-modified"),
                                          PTC_STRLIT("pragma"),        PTC_STRLIT("vary"),             PTC_STRLIT("connection"),
                                          PTC_STRLIT("transfer-encoding")};

static bool in_list(ptc_iovec_t name, const ptc_iovec_t *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ptc_iov_eq_ci(name, list[i]))
            return true;
    return false;
}

static bool is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
           c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' || c == '+' || c == '^' || c == '`' ||
           c == '|' || c == '~';
}

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* ---- origins ---- */

typedef struct st_origin_parts_t {
    ptc_iovec_t scheme, host, port; /* port includes the ':' */
} origin_parts_t;

/* Splits "scheme://host[:port]" (no path, no userinfo). Returns false for anything else, "null" included. */
static bool split_origin(ptc_iovec_t o, origin_parts_t *out)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < o.len; i++) {
        if (o.base[i] == ':' && o.base[i + 1] == '/' && o.base[i + 2] == '/') {
            sep = o.base + i;
            break;
        }
    }
    if (sep == NULL || sep == o.base || o.len > MAX_ORIGIN_LEN)
        return false;
    out->scheme = ptc_iov(o.base, (size_t)(sep - o.base));
    for (size_t i = 0; i < out->scheme.len; i++) {
        char c = out->scheme.base[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))))
            return false;
    }
    const char *h = sep + 3, *end = o.base + o.len;
    const char *colon = NULL;
    if (h < end && *h == '[') { /* IPv6 literal */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (rb == NULL)
            return false;
        colon = rb + 1 < end ? rb + 1 : NULL;
        if (colon != NULL && *colon != ':')
            return false;
        out->host = ptc_iov(h, (size_t)(rb + 1 - h));
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        out->host = ptc_iov(h, (size_t)((colon != NULL ? colon : end) - h));
        if (out->host.len == 0)
            return false;
        for (size_t i = 0; i < out->host.len; i++) /* no empty label: ".a.com", "a..b.com" */
            if (!is_host_char(out->host.base[i]) || (out->host.base[i] == '.' && (i == 0 || out->host.base[i - 1] == '.')))
                return false;
    }
    out->port = colon != NULL ? ptc_iov(colon, (size_t)(end - colon)) : ptc_iov("", 0);
    if (colon != NULL) {
        if (out->port.len < 2 || out->port.len > 6)
            return false;
        for (size_t i = 1; i < out->port.len; i++)
            if (out->port.base[i] < '0' || out->port.base[i] > '9')
                return false;
    }
    return true;
}

static char *dup_lower(ptc_iovec_t s)
{
    char *d = malloc(s.len + 1);
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < s.len; i++)
        d[i] = ptc_tolower(s.base[i]);
    d[s.len] = '\0';
    return d;
}

int ptc_origin_pattern_parse(const char *text, ptc_origin_pattern_t *out, char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (text == NULL || text[0] == '\0') {
        snprintf(errbuf, errlen, "empty origin");
        return PTC_EINVAL;
    }
    if ((out->text = strdup(text)) == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return PTC_ENOMEM;
    }
    if (strcmp(text, "*") == 0) {
        out->kind = PTC_ORIGIN_ANY;
        return 0;
    }
    if (text[0] == '~') {
        int code;
        PCRE2_SIZE off;
        out->kind = PTC_ORIGIN_REGEX;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)(text + 1), PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF,
                                       &code, &off, NULL);
        if (re == NULL && code == PCRE2_ERROR_HEAP_FAILED) {
            snprintf(errbuf, errlen, "out of memory");
            ptc_origin_pattern_dispose(out);
            return PTC_ENOMEM;
        }
        if (re == NULL) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof(msg));
            snprintf(errbuf, errlen, "invalid origin regex at offset %zu: %s", (size_t)off, (const char *)msg);
            ptc_origin_pattern_dispose(out);
            return PTC_EINVAL;
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter where JIT is unavailable */
        out->regex = re;
        return 0;
    }
    if (strcmp(text, "null") == 0) {
        out->kind = PTC_ORIGIN_EXACT;
        return 0;
    }
    origin_parts_t parts;
    const char *star = strstr(text, "://*.");
    if (star != NULL) {
        /* "scheme:" "//" "*.host[:port]": validate as an origin with the '*' replaced by a label */
        char probe[MAX_ORIGIN_LEN + 2];
        int n = snprintf(probe, sizeof(probe), "%.*sx%s", (int)(star + 3 - text), text, star + 4);
        if (n < 0 || (size_t)n >= sizeof(probe) || !split_origin(ptc_iov(probe, (size_t)n), &parts) || parts.host.base[0] == '[' ||
            memchr(parts.host.base + 1, '.', parts.host.len - 1) == NULL) {
            snprintf(errbuf, errlen, "invalid wildcard origin: expected SCHEME://*.DOMAIN[:PORT], e.g. https://*.example.com");
            ptc_origin_pattern_dispose(out);
            return PTC_EINVAL;
        }
        out->kind = PTC_ORIGIN_WILDCARD;
        out->scheme = dup_lower(parts.scheme);
        out->suffix = dup_lower(ptc_iov(parts.host.base + 1, parts.host.len - 1)); /* ".example.com" */
        out->port = dup_lower(parts.port);
        if (out->scheme == NULL || out->suffix == NULL || out->port == NULL) {
            snprintf(errbuf, errlen, "out of memory");
            ptc_origin_pattern_dispose(out);
            return PTC_ENOMEM;
        }
        return 0;
    }
    if (strchr(text, '*') != NULL || !split_origin(ptc_iov(text, strlen(text)), &parts)) {
        snprintf(errbuf, errlen, "invalid origin: expected SCHEME://HOST[:PORT] (no path), *.-wildcard, ~REGEX, or *");
        ptc_origin_pattern_dispose(out);
        return PTC_EINVAL;
    }
    out->kind = PTC_ORIGIN_EXACT;
    return 0;
}

void ptc_origin_pattern_dispose(ptc_origin_pattern_t *p)
{
    free(p->text);
    free(p->scheme);
    free(p->suffix);
    free(p->port);
    if (p->regex != NULL)
        pcre2_code_free(p->regex);
    memset(p, 0, sizeof(*p));
}

static bool regex_match(const ptc_origin_pattern_t *p, ptc_iovec_t origin)
{
    pcre2_match_context *mctx = pcre2_match_context_create(NULL);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->regex, NULL);
    bool matched = false;
    if (mctx != NULL && md != NULL) {
        pcre2_set_match_limit(mctx, REGEX_MATCH_LIMIT);
        pcre2_set_depth_limit(mctx, REGEX_DEPTH_LIMIT);
        /* NO_UTF_CHECK is not used: the origin is untrusted input */
        int rc = pcre2_match(p->regex, (PCRE2_SPTR)origin.base, origin.len, 0, 0, md, mctx);
        matched = rc >= 0;
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    return matched;
}

bool ptc_origin_pattern_match(const ptc_origin_pattern_t *p, ptc_iovec_t origin)
{
    origin_parts_t parts;

    switch (p->kind) {
    case PTC_ORIGIN_ANY:
        return split_origin(origin, &parts);
    case PTC_ORIGIN_EXACT:
        return ptc_iov_eq_ci(origin, ptc_iov(p->text, strlen(p->text)));
    case PTC_ORIGIN_REGEX:
        return split_origin(origin, &parts) && regex_match(p, origin); /* never "null" or a malformed origin */
    case PTC_ORIGIN_WILDCARD: {
        if (!split_origin(origin, &parts) || parts.host.base[0] == '[')
            return false;
        size_t slen = strlen(p->suffix);
        /* a real subdomain: at least one label before ".example.com", and no empty label */
        if (parts.host.len <= slen || parts.host.base[0] == '.' || parts.host.base[parts.host.len - slen - 1] == '.')
            return false;
        return ptc_iov_eq_ci(parts.scheme, ptc_iov(p->scheme, strlen(p->scheme))) &&
               ptc_iov_eq_ci(ptc_iov(parts.host.base + parts.host.len - slen, slen), ptc_iov(p->suffix, slen)) &&
               ptc_iov_eq_ci(parts.port, ptc_iov(p->port, strlen(p->port)));
    }
    }
    return false;
}

bool ptc_cors_origin_allowed(const ptc_cors_config_t *c, ptc_iovec_t origin)
{
    if (c == NULL || !c->enabled || origin.len == 0)
        return false;
    for (size_t i = 0; i < c->num_origins; i++)
        if (ptc_origin_pattern_match(&c->origins[i], origin))
            return true;
    return false;
}

/* ---- configuration lifecycle ---- */

void ptc_cors_config_init(ptc_cors_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->reflect_headers = true;
    c->max_age_s = 600;
}

/* s may be NULL with n != 0: ptc_cors_config_copy sets the counts before it allocates the arrays. */
static void free_strings(char **s, size_t n)
{
    for (size_t i = 0; s != NULL && i < n; i++)
        free(s[i]);
    free(s);
}

void ptc_cors_config_dispose(ptc_cors_config_t *c)
{
    for (size_t i = 0; i < c->num_origins; i++)
        ptc_origin_pattern_dispose(&c->origins[i]);
    free(c->origins);
    free(c->allow_methods);
    free_strings(c->allow_headers, c->num_allow_headers);
    free_strings(c->expose_headers, c->num_expose_headers);
    memset(c, 0, sizeof(*c));
}

static int copy_strings(char ***dst, char *const *src, size_t n)
{
    *dst = NULL;
    if (n == 0)
        return 0;
    if ((*dst = calloc(n, sizeof(char *))) == NULL)
        return PTC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (((*dst)[i] = strdup(src[i])) == NULL)
            return PTC_ENOMEM;
    return 0;
}

int ptc_cors_config_copy(ptc_cors_config_t *dst, const ptc_cors_config_t *src)
{
    char err[200];
    *dst = *src;
    dst->origins = NULL;
    dst->num_origins = 0;
    dst->allow_methods = NULL;
    dst->allow_headers = dst->expose_headers = NULL;
    dst->num_allow_headers = src->num_allow_headers;
    dst->num_expose_headers = src->num_expose_headers;
    if ((src->allow_methods != NULL && (dst->allow_methods = strdup(src->allow_methods)) == NULL) ||
        copy_strings(&dst->allow_headers, src->allow_headers, src->num_allow_headers) != 0 ||
        copy_strings(&dst->expose_headers, src->expose_headers, src->num_expose_headers) != 0)
        goto nomem;
    if (src->num_origins != 0) {
        if ((dst->origins = calloc(src->num_origins, sizeof(*dst->origins))) == NULL)
            goto nomem;
        for (size_t i = 0; i < src->num_origins; i++) {
            if (ptc_origin_pattern_parse(src->origins[i].text, &dst->origins[i], err, sizeof(err)) != 0)
                goto nomem;
            dst->num_origins++;
        }
    }
    return 0;
nomem:
    ptc_cors_config_dispose(dst);
    return PTC_ENOMEM;
}

static bool str_eq(const char *a, const char *b)
{
    return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

static bool strings_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return false;
    return true;
}

bool ptc_cors_config_eq(const ptc_cors_config_t *a, const ptc_cors_config_t *b)
{
    if (a->enabled != b->enabled || a->num_origins != b->num_origins || a->allow_credentials != b->allow_credentials ||
        a->reflect_headers != b->reflect_headers || a->max_age_s != b->max_age_s ||
        a->allow_private_network != b->allow_private_network || !str_eq(a->allow_methods, b->allow_methods) ||
        !strings_eq(a->allow_headers, a->num_allow_headers, b->allow_headers, b->num_allow_headers) ||
        !strings_eq(a->expose_headers, a->num_expose_headers, b->expose_headers, b->num_expose_headers))
        return false;
    for (size_t i = 0; i < a->num_origins; i++)
        if (!str_eq(a->origins[i].text, b->origins[i].text))
            return false;
    return true;
}

/* ---- decisions ---- */

bool ptc_cors_is_preflight(ptc_iovec_t method, bool has_origin, bool has_request_method)
{
    return has_origin && has_request_method && ptc_iov_eq_ci(method, PTC_STRLIT("OPTIONS"));
}

ptc_cors_decision_t ptc_cors_decide(const ptc_cors_config_t *policy, ptc_iovec_t origin, ptc_iovec_t self_origin)
{
    ptc_cors_decision_t d = {PTC_CORS_NONE, policy, origin};
    if (origin.len == 0 || (self_origin.len != 0 && ptc_iov_eq_ci(origin, self_origin)))
        return d;
    d.verdict = ptc_cors_origin_allowed(policy, origin) ? PTC_CORS_ALLOWED : PTC_CORS_DENIED;
    return d;
}

ptc_cors_decision_t ptc_cors_decide_for(const ptc_cors_config_t *policy, ptc_iovec_t origin, ptc_iovec_t scheme, ptc_iovec_t authority)
{
    char self[300];
    int len = 0;
    if (origin.len != 0 && authority.len != 0)
        len = snprintf(self, sizeof(self), "%.*s://%.*s", (int)PTC_MIN(scheme.len, (size_t)8), scheme.base,
                       (int)PTC_MIN(authority.len, (size_t)256), authority.base);
    return ptc_cors_decide(policy, origin, ptc_iov(self, len > 0 ? PTC_MIN((size_t)len, sizeof(self) - 1) : 0));
}

/* A comma-separated list builder over the scratch buffer; drops names that do not fit. */
typedef struct st_list_t {
    char *base;
    size_t len, cap;
} list_t;

static bool list_has(const list_t *l, ptc_iovec_t name)
{
    const char *p = l->base, *end = l->base + l->len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = (size_t)((comma != NULL ? comma : end) - p);
        if (ptc_iov_eq_ci(ptc_iov(p, n), name))
            return true;
        p += n + (comma != NULL ? 2 : 0); /* ", " */
    }
    return false;
}

static void list_add(list_t *l, ptc_iovec_t name)
{
    if (name.len == 0 || list_has(l, name))
        return;
    for (size_t i = 0; i < name.len; i++)
        if (!is_token_char(name.base[i]))
            return;
    size_t need = name.len + (l->len != 0 ? 2 : 0);
    if (l->len + need > l->cap)
        return;
    if (l->len != 0) {
        l->base[l->len++] = ',';
        l->base[l->len++] = ' ';
    }
    for (size_t i = 0; i < name.len; i++)
        l->base[l->len++] = ptc_tolower(name.base[i]);
}

static ptc_iovec_t list_iov(const list_t *l)
{
    return ptc_iov(l->base, l->len);
}

size_t ptc_cors_response_headers(const ptc_cors_decision_t *d, const ptc_header_t *sent, size_t nsent, ptc_header_t *out,
                                 size_t cap, ptc_cors_scratch_t *scratch)
{
    size_t n = 0;

    if (d->policy == NULL || !d->policy->enabled || cap < 4)
        return 0;
    if (d->verdict != PTC_CORS_ALLOWED) {
        /* the answer still depends on the origin for caches */
        if (d->verdict == PTC_CORS_NONE)
            out[n++] = (ptc_header_t){PTC_STRLIT("vary"), PTC_STRLIT("Origin")};
        return n;
    }
    out[n++] = (ptc_header_t){PTC_STRLIT("access-control-allow-origin"), d->origin};
    if (d->policy->allow_credentials)
        out[n++] = (ptc_header_t){PTC_STRLIT("access-control-allow-credentials"), PTC_STRLIT("true")};
    list_t l = {scratch->buf, 0, sizeof(scratch->buf)};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(always_exposed); i++)
        list_add(&l, always_exposed[i]);
    for (size_t i = 0; i < nsent; i++) {
        if (!in_list(sent[i].name, not_exposed, PTC_ARRAY_SIZE(not_exposed)) &&
            !ptc_iov_startswith_ci(sent[i].name, PTC_STRLIT("access-control-")))
            list_add(&l, sent[i].name);
    }
    for (size_t i = 0; i < d->policy->num_expose_headers; i++)
        list_add(&l, ptc_iov(d->policy->expose_headers[i], strlen(d->policy->expose_headers[i])));
    out[n++] = (ptc_header_t){PTC_STRLIT("access-control-expose-headers"), list_iov(&l)};
    out[n++] = (ptc_header_t){PTC_STRLIT("vary"), PTC_STRLIT("Origin")};
    return n;
}


int ptc_cors_preflight(const ptc_cors_config_t *policy, const ptc_preflight_t *pf, ptc_header_t *out, size_t cap, size_t *nout,
                       ptc_cors_scratch_t *scratch, const char **why)
{
    /* GET: a Connect GET that carries a header of its own (connect-timeout-ms, authorization) is preflighted */
    const char *methods = policy != NULL && policy->allow_methods != NULL ? policy->allow_methods : "GET, POST, OPTIONS";
    size_t n = 0;

    *nout = 0;
    if (!ptc_cors_origin_allowed(policy, pf->origin)) {
        *why = policy == NULL || !policy->enabled ? "no CORS policy is configured" : "origin not allowed";
        return 403;
    }
    if (!ptc_iov_list_contains_ci(ptc_iov(methods, strlen(methods)), ptc_iov_trim(pf->request_method))) {
        *why = "requested method not allowed";
        return 403;
    }
    if (cap < PTC_CORS_MAX_FIELDS) {
        *why = "internal: header array too small";
        return 403;
    }

    /* Allow-Headers: what was asked for (reflect) or the configured list, plus the grpc-web essentials */
    list_t l = {scratch->buf, 0, sizeof(scratch->buf) - 32};
    if (policy->reflect_headers) {
        ptc_iovec_t rest = pf->request_headers;
        while (rest.len > 0) {
            const char *comma = memchr(rest.base, ',', rest.len);
            size_t len = comma != NULL ? (size_t)(comma - rest.base) : rest.len;
            list_add(&l, ptc_iov_trim(ptc_iov(rest.base, len)));
            if (comma == NULL)
                break;
            rest = ptc_iov(comma + 1, rest.len - len - 1);
        }
    } else {
        for (size_t i = 0; i < policy->num_allow_headers; i++)
            list_add(&l, ptc_iov(policy->allow_headers[i], strlen(policy->allow_headers[i])));
    }
    for (size_t i = 0; i < PTC_ARRAY_SIZE(essential_headers); i++)
        list_add(&l, essential_headers[i]);
    char *age = scratch->buf + sizeof(scratch->buf) - 24;
    int agelen = snprintf(age, 24, "%llu", (unsigned long long)policy->max_age_s);

    out[n++] = (ptc_header_t){PTC_STRLIT("access-control-allow-origin"), pf->origin};
    out[n++] = (ptc_header_t){PTC_STRLIT("access-control-allow-methods"), ptc_iov(methods, strlen(methods))};
    out[n++] = (ptc_header_t){PTC_STRLIT("access-control-allow-headers"), list_iov(&l)};
    if (policy->max_age_s != 0 && agelen > 0)
        out[n++] = (ptc_header_t){PTC_STRLIT("access-control-max-age"), ptc_iov(age, (size_t)agelen)};
    if (policy->allow_credentials)
        out[n++] = (ptc_header_t){PTC_STRLIT("access-control-allow-credentials"), PTC_STRLIT("true")};
    if (policy->allow_private_network && pf->request_private_network)
        out[n++] = (ptc_header_t){PTC_STRLIT("access-control-allow-private-network"), PTC_STRLIT("true")};
    out[n++] = (ptc_header_t){PTC_STRLIT("vary"), PTC_STRLIT("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")};
    *nout = n;
    return 204;
}

/* ---- $httpHeaders ---- */

static bool refused_name(ptc_iovec_t name)
{
    static const ptc_iovec_t refused[] = {
        PTC_STRLIT("host"),          PTC_STRLIT("connection"),     PTC_STRLIT("keep-alive"), PTC_STRLIT("proxy-connection"),
        PTC_STRLIT("transfer-encoding"), PTC_STRLIT("upgrade"),    PTC_STRLIT("te"),         PTC_STRLIT("trailer"),
        PTC_STRLIT("content-length"), PTC_STRLIT("expect"),        PTC_STRLIT("origin"),     PTC_STRLIT("cookie"),
        PTC_STRLIT("forwarded"),     PTC_STRLIT("http2-settings"), PTC_STRLIT("proxy-authorization")};
    return in_list(name, refused, PTC_ARRAY_SIZE(refused)) || ptc_iov_startswith_ci(name, PTC_STRLIT("x-forwarded-")) ||
           ptc_iov_startswith_ci(name, PTC_STRLIT("access-control-")) || ptc_iov_startswith_ci(name, PTC_STRLIT("sec-"));
}

int ptc_http_headers_param_parse(ptc_iovec_t url, ptc_http_headers_param_t *out, const char **why)
{
    static const ptc_iovec_t names[] = {PTC_STRLIT("$httpHeaders="), PTC_STRLIT("%24httpHeaders=")};
    out->present = false;
    out->num_fields = 0;

    const char *q = memchr(url.base, '?', url.len);
    if (q == NULL)
        return 0;
    ptc_iovec_t rest = ptc_iov(q + 1, url.len - (size_t)(q + 1 - url.base)), value = {NULL, 0};
    while (rest.len > 0 && value.base == NULL) {
        const char *amp = memchr(rest.base, '&', rest.len);
        ptc_iovec_t param = ptc_iov(rest.base, amp != NULL ? (size_t)(amp - rest.base) : rest.len);
        for (size_t i = 0; i < PTC_ARRAY_SIZE(names); i++)
            if (param.len >= names[i].len && memcmp(param.base, names[i].base, names[i].len) == 0)
                value = ptc_iov(param.base + names[i].len, param.len - names[i].len);
        if (amp == NULL)
            break;
        rest = ptc_iov(amp + 1, rest.len - param.len - 1);
    }
    if (value.base == NULL)
        return 0;
    out->present = true;

    long len = ptc_form_decode(value, out->buf, sizeof(out->buf));
    if (len == -2) {
        *why = "$httpHeaders exceeds 8192 bytes";
        return PTC_ETOOBIG;
    }
    if (len < 0) {
        *why = "$httpHeaders has invalid percent-encoding";
        return PTC_EINVAL;
    }
    char *p = out->buf, *end = out->buf + len;
    while (p < end) {
        char *eol = NULL;
        for (char *c = p; c < end; c++) {
            if (*c == '\r' && c + 1 < end && c[1] == '\n') {
                eol = c;
                break;
            }
            if (*c == '\r' || *c == '\n' || *c == '\0') {
                *why = "$httpHeaders has a stray CR, LF or NUL inside a line";
                return PTC_EINVAL;
            }
        }
        char *line_end = eol != NULL ? eol : end;
        if (line_end == p) { /* tolerate an empty line */
            p = eol != NULL ? eol + 2 : end;
            continue;
        }
        char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon == NULL || colon == p) {
            *why = *p == ':' ? "$httpHeaders may not set pseudo-headers" : "$httpHeaders line without a 'name:' part";
            return PTC_EINVAL;
        }
        ptc_iovec_t name = ptc_iov(p, (size_t)(colon - p));
        for (size_t i = 0; i < name.len; i++) {
            if (!is_token_char(name.base[i])) {
                *why = "$httpHeaders has an invalid header name";
                return PTC_EINVAL;
            }
            p[i] = ptc_tolower(p[i]);
        }
        if (refused_name(name)) {
            *why = "$httpHeaders may not set host, origin, cookie, forwarding, CORS or hop-by-hop headers";
            return PTC_EINVAL;
        }
        if (out->num_fields == PTC_HTTP_HEADERS_MAX_FIELDS) {
            *why = "$httpHeaders has more than 64 fields";
            return PTC_ETOOBIG;
        }
        out->fields[out->num_fields++] = (ptc_header_t){name, ptc_iov_trim(ptc_iov(colon + 1, (size_t)(line_end - colon - 1)))};
        p = eol != NULL ? eol + 2 : end;
    }
    return 0;
}
