/*
 * Comparing configurations: equality of the pieces the runtime swaps one by one (listeners, upstreams, the
 * whole config), and the one-line summary of what a reload changed, for the log.
 *
 * Equality is structural: the same values in the same order (origin patterns by their text), file names
 * compared as resolved, never the files' contents (certificate reload is a separate step). The summary
 * matches listeners by address, upstreams by name and routes by match and path, so that an edit reads as
 * such (`upstreams: echo endpoints +127.0.0.1:50052 -127.0.0.1:50051`) and not as one list replacing another.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "portico/config_internal.h"

static bool str_eq(const char *a, const char *b)
{
    return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

static bool fields_eq(const ptc__field_t *fields, const void *a, const void *b)
{
    for (const ptc__field_t *f = fields; f->name != NULL; f++)
        if (!ptc__field_eq(f, a, b))
            return false;
    return true;
}

static bool listener_tls_eq(const ptc_listener_tls_config_t *a, const ptc_listener_tls_config_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->num_certs != b->num_certs || a->client_auth != b->client_auth || a->min_version != b->min_version ||
        !str_eq(a->client_ca, b->client_ca))
        return false;
    for (size_t i = 0; i < a->num_certs; i++)
        if (!str_eq(a->certs[i].cert, b->certs[i].cert) || !str_eq(a->certs[i].key, b->certs[i].key))
            return false;
    return true;
}

bool ptc_listener_config_eq(const ptc_listener_config_t *a, const ptc_listener_config_t *b)
{
    return ptc_hostport_eq(&a->addr, &b->addr) && listener_tls_eq(a->tls, b->tls);
}

static bool upstream_tls_eq(const ptc_upstream_tls_config_t *a, const ptc_upstream_tls_config_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return str_eq(a->ca, b->ca) && str_eq(a->server_name, b->server_name) && str_eq(a->cert, b->cert) && str_eq(a->key, b->key) &&
           a->insecure_skip_verify == b->insecure_skip_verify;
}

bool ptc_upstream_config_same_transport(const ptc_upstream_config_t *a, const ptc_upstream_config_t *b)
{
    return str_eq(a->name, b->name) && str_eq(a->authority, b->authority) && fields_eq(ptc__upstream_fields, a, b) &&
           fields_eq(ptc__backoff_fields, a, b) && upstream_tls_eq(a->tls, b->tls);
}

static bool endpoints_eq(const ptc_upstream_config_t *a, const ptc_upstream_config_t *b)
{
    if (a->num_endpoints != b->num_endpoints)
        return false;
    for (size_t i = 0; i < a->num_endpoints; i++)
        if (!ptc_hostport_eq(&a->endpoints[i], &b->endpoints[i]))
            return false;
    return true;
}

static bool health_check_eq(const ptc_health_check_config_t *a, const ptc_health_check_config_t *b)
{
    if (!a->enabled || !b->enabled)
        return a->enabled == b->enabled; /* the settings of an absent section are not configuration */
    return fields_eq(ptc__health_check_fields, a, b) &&
           strcmp(a->service != NULL ? a->service : "", b->service != NULL ? b->service : "") == 0;
}

static bool outlier_eq(const ptc_outlier_config_t *a, const ptc_outlier_config_t *b)
{
    if (!a->enabled || !b->enabled)
        return a->enabled == b->enabled;
    return fields_eq(ptc__outlier_fields, a, b);
}

bool ptc__upstream_policy_eq(const ptc_upstream_config_t *a, const ptc_upstream_config_t *b)
{
    return a->balancing == b->balancing && fields_eq(ptc__upstream_policy_fields, a, b) &&
           health_check_eq(&a->health_check, &b->health_check) && outlier_eq(&a->outlier, &b->outlier);
}

bool ptc_upstream_config_eq(const ptc_upstream_config_t *a, const ptc_upstream_config_t *b)
{
    return endpoints_eq(a, b) && ptc_upstream_config_same_transport(a, b) && ptc__upstream_policy_eq(a, b);
}

static bool cors_eq(const ptc_cors_config_t *a, const ptc_cors_config_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return ptc_cors_config_eq(a, b);
}

static bool rules_eq(const ptc_header_rule_config_t *a, size_t na, const ptc_header_rule_config_t *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].op != b[i].op || !str_eq(a[i].name, b[i].name) || !str_eq(a[i].value, b[i].value) || !str_eq(a[i].to, b[i].to))
            return false;
    return true;
}

static bool header_rules_eq(const ptc_header_rules_config_t *a, const ptc_header_rules_config_t *b)
{
    return rules_eq(a->request, a->num_request, b->request, b->num_request) &&
           rules_eq(a->response, a->num_response, b->response, b->num_response) &&
           rules_eq(a->trailers, a->num_trailers, b->trailers, b->num_trailers);
}

static bool claims_eq(const ptc_jwt_requirement_config_t *a, const ptc_jwt_requirement_config_t *b)
{
    if (a->num_claims != b->num_claims)
        return false;
    for (size_t i = 0; i < a->num_claims; i++)
        if (!str_eq(a->claims[i].claim, b->claims[i].claim) || !str_eq(a->claims[i].value, b->claims[i].value))
            return false;
    return true;
}

/* Structurally: the same provider indexes (the providers themselves are compared on their own). */
static bool requirement_eq(const ptc_jwt_requirement_config_t *a, const ptc_jwt_requirement_config_t *b)
{
    if (a->set != b->set || a->disabled != b->disabled || a->optional != b->optional || a->num_providers != b->num_providers)
        return false;
    for (size_t i = 0; i < a->num_providers; i++)
        if (a->providers[i] != b->providers[i])
            return false;
    return claims_eq(a, b);
}

static bool jwt_provider_eq(const ptc_jwt_provider_config_t *a, const ptc_jwt_provider_config_t *b)
{
    if (!str_eq(a->name, b->name) || !str_eq(a->issuer, b->issuer) || a->num_audiences != b->num_audiences || a->from != b->from ||
        !str_eq(a->from_name, b->from_name) || !str_eq(a->from_prefix, b->from_prefix) || !str_eq(a->jwks_file, b->jwks_file) ||
        !str_eq(a->jwks_url, b->jwks_url) || !str_eq(a->jwks_ca, b->jwks_ca) || !fields_eq(ptc__jwt_provider_fields, a, b) ||
        a->num_claim_headers != b->num_claim_headers || !str_eq(a->forward_payload, b->forward_payload))
        return false;
    for (size_t i = 0; i < a->num_audiences; i++)
        if (!str_eq(a->audiences[i], b->audiences[i]))
            return false;
    for (size_t i = 0; i < a->num_claim_headers; i++)
        if (!str_eq(a->claim_headers[i].claim, b->claim_headers[i].claim) ||
            !str_eq(a->claim_headers[i].header, b->claim_headers[i].header))
            return false;
    return true;
}

static bool request_id_eq(const ptc_request_id_config_t *a, const ptc_request_id_config_t *b)
{
    return a->enabled == b->enabled && str_eq(a->header, b->header) && fields_eq(ptc__request_id_fields, a, b);
}

static bool route_eq(const ptc_route_config_t *a, const ptc_route_config_t *b)
{
    return a->match == b->match && str_eq(a->path, b->path) && a->upstream_index == b->upstream_index && cors_eq(a->cors, b->cors) &&
           header_rules_eq(&a->headers, &b->headers) && requirement_eq(&a->jwt, &b->jwt) && a->native_filters == b->native_filters &&
           str_eq(a->get_cache_control, b->get_cache_control);
}

static bool admin_eq(const ptc_admin_config_t *a, const ptc_admin_config_t *b)
{
    return ptc_hostport_eq(a->address, b->address) && str_eq(a->token_file, b->token_file) && str_eq(a->token, b->token);
}

bool ptc_config_eq(const ptc_config_t *a, const ptc_config_t *b)
{
    if (a->num_listeners != b->num_listeners || a->num_upstreams != b->num_upstreams || a->num_routes != b->num_routes)
        return false;
    for (size_t i = 0; i < a->num_listeners; i++)
        if (!ptc_listener_config_eq(&a->listeners[i], &b->listeners[i]))
            return false;
    for (size_t i = 0; i < a->num_upstreams; i++)
        if (!ptc_upstream_config_eq(&a->upstreams[i], &b->upstreams[i]))
            return false;
    for (size_t i = 0; i < a->num_routes; i++)
        if (!route_eq(&a->routes[i], &b->routes[i]))
            return false;
    if (a->num_jwt_providers != b->num_jwt_providers)
        return false;
    for (size_t i = 0; i < a->num_jwt_providers; i++)
        if (!jwt_provider_eq(&a->jwt_providers[i], &b->jwt_providers[i]))
            return false;
    if (!request_id_eq(&a->request_id, &b->request_id) || a->trace.enabled != b->trace.enabled ||
        !fields_eq(ptc__trace_fields, &a->trace, &b->trace) || !header_rules_eq(&a->headers, &b->headers) ||
        !requirement_eq(&a->jwt_default, &b->jwt_default))
        return false;
    return fields_eq(ptc__limits_fields, &a->limits, &b->limits) && fields_eq(ptc__timeouts_fields, &a->timeouts, &b->timeouts) &&
           fields_eq(ptc__compression_fields, &a->compression, &b->compression) &&
           fields_eq(ptc__websocket_fields, &a->websocket, &b->websocket) && ptc_cors_config_eq(&a->cors, &b->cors) &&
           str_eq(a->health_path, b->health_path) && a->workers == b->workers && a->log_level == b->log_level &&
           admin_eq(&a->admin, &b->admin) && str_eq(a->pid_file, b->pid_file) && a->watch == b->watch &&
           fields_eq(ptc__metrics_fields, &a->metrics, &b->metrics) && str_eq(a->access_log.path, b->access_log.path) &&
           str_eq(a->access_log.format, b->access_log.format) && a->access_log.buffer_size == b->access_log.buffer_size;
}

/* ---- the summary ---- */

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026 */

/* The line under construction: segments separated by "; ", the items of one section by ", ". */
typedef struct st_summary_t {
    char *buf;
    size_t len, pos;
    bool truncated;      /* cut short: everything more is dropped */
    const char *section; /* the section of the last item; NULL after an item that is a segment of its own */
    size_t items;
} summary_t;

/* Copies n bytes, control characters replaced by '?': the line goes to a log. */
static void copy_printable(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
}

static void put_mem(summary_t *s, const char *text, size_t n)
{
    if (s->truncated || s->len == 0)
        return;
    if (n < s->len - s->pos) {
        copy_printable(s->buf + s->pos, text, n);
        s->pos += n;
        s->buf[s->pos] = '\0';
        return;
    }
    /* keep what fits before the ellipsis, without cutting a UTF-8 sequence; the bytes considered are those
     * written so far followed by text (cut < pos + n: at least the NUL is missing) */
    s->truncated = true;
    size_t ell = sizeof(ELLIPSIS) - 1, cut = s->len - 1 >= ell ? s->len - 1 - ell : s->len - 1;
    while (cut > 0 && ((unsigned char)(cut < s->pos ? s->buf[cut] : text[cut - s->pos]) & 0xc0) == 0x80)
        cut--;
    if (cut > s->pos)
        copy_printable(s->buf + s->pos, text, cut - s->pos);
    s->pos = cut;
    if (s->len - 1 >= ell) {
        memcpy(s->buf + s->pos, ELLIPSIS, ell);
        s->pos += ell;
    }
    s->buf[s->pos] = '\0';
}

static void put(summary_t *s, const char *text)
{
    put_mem(s, text, strlen(text));
}

/* For short, bounded pieces (numbers, fixed words); strings of any length go through put. */
PTC_PRINTF(2, 3) static void putf(summary_t *s, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put_mem(s, tmp, PTC_MIN((size_t)n, sizeof(tmp) - 1));
}

/* Starts an item of section; a NULL section makes the item a segment of its own ("workers 2 -> 4"). */
static void item(summary_t *s, const char *section)
{
    if (section != NULL && s->section != NULL && strcmp(section, s->section) == 0) {
        put(s, ", ");
    } else {
        if (s->items != 0)
            put(s, "; ");
        if (section != NULL) {
            put(s, section);
            put(s, ": ");
        }
    }
    s->section = section;
    s->items++;
}

static void put_opt(summary_t *s, const char *str)
{
    put(s, str != NULL ? str : "none");
}

static void put_hostport(summary_t *s, const ptc_hostport_t *hp)
{
    if (hp == NULL) {
        put(s, "none");
        return;
    }
    bool v6 = hp->host != NULL && strchr(hp->host, ':') != NULL;
    if (v6)
        put(s, "[");
    put_opt(s, hp->host);
    putf(s, "%s:%u", v6 ? "]" : "", (unsigned)hp->port);
}

static void put_route(summary_t *s, const ptc_route_config_t *r)
{
    if (r->match == PTC_ROUTE_EXACT)
        put(s, "path ");
    put_opt(s, r->path);
}

/* "NAME OLD -> NEW" as a segment of its own, for scalar settings. */
static void changed_field(summary_t *s, const char *prefix, const ptc__field_t *f, const void *a, const void *b)
{
    char va[PTC__VALUE_SIZE], vb[PTC__VALUE_SIZE];
    ptc__field_format(f, a, va, sizeof(va));
    ptc__field_format(f, b, vb, sizeof(vb));
    item(s, NULL);
    put(s, prefix);
    put(s, f->name);
    putf(s, " %s -> %s", va, vb);
}

static void diff_fields(summary_t *s, const char *prefix, const ptc__field_t *fields, const void *a, const void *b)
{
    for (const ptc__field_t *f = fields; f->name != NULL; f++)
        if (!ptc__field_eq(f, a, b))
            changed_field(s, prefix, f, a, b);
}

static void changed_string(summary_t *s, const char *name, const char *a, const char *b)
{
    if (str_eq(a, b))
        return;
    item(s, NULL);
    put(s, name);
    put(s, " ");
    put_opt(s, a);
    put(s, " -> ");
    put_opt(s, b);
}

static const char *tls_change(bool had, bool has)
{
    return !had ? "tls on" : !has ? "tls off" : "tls changed";
}

static const ptc_listener_config_t *find_listener(const ptc_config_t *c, const ptc_hostport_t *addr)
{
    for (size_t i = 0; i < c->num_listeners; i++)
        if (ptc_hostport_eq(&c->listeners[i].addr, addr))
            return &c->listeners[i];
    return NULL;
}

static void diff_listeners(summary_t *s, const ptc_config_t *a, const ptc_config_t *b)
{
    size_t before = s->items;
    bool same = a->num_listeners == b->num_listeners;

    for (size_t i = 0; i < b->num_listeners; i++) {
        if (find_listener(a, &b->listeners[i].addr) == NULL) {
            item(s, "listeners");
            put(s, "+");
            put_hostport(s, &b->listeners[i].addr);
        }
    }
    for (size_t i = 0; i < a->num_listeners; i++) {
        same = same && ptc_listener_config_eq(&a->listeners[i], &b->listeners[i]);
        if (find_listener(b, &a->listeners[i].addr) == NULL) {
            item(s, "listeners");
            put(s, "-");
            put_hostport(s, &a->listeners[i].addr);
        }
    }
    for (size_t i = 0; i < b->num_listeners; i++) {
        const ptc_listener_config_t *old = find_listener(a, &b->listeners[i].addr);
        if (old != NULL && !listener_tls_eq(old->tls, b->listeners[i].tls)) {
            item(s, "listeners");
            put_hostport(s, &b->listeners[i].addr);
            put(s, " ");
            put(s, tls_change(old->tls != NULL, b->listeners[i].tls != NULL));
        }
    }
    if (s->items == before && !same) {
        item(s, "listeners");
        put(s, "reordered");
    }
}

static const ptc_upstream_config_t *find_upstream(const ptc_config_t *c, const char *name)
{
    for (size_t i = 0; i < c->num_upstreams; i++)
        if (str_eq(c->upstreams[i].name, name))
            return &c->upstreams[i];
    return NULL;
}

static bool has_endpoint(const ptc_upstream_config_t *up, const ptc_hostport_t *hp)
{
    for (size_t i = 0; i < up->num_endpoints; i++)
        if (ptc_hostport_eq(&up->endpoints[i], hp))
            return true;
    return false;
}

/* "NAME PREFIXFIELD OLD -> NEW" in the upstreams section, for each field of the table that differs. */
static void diff_upstream_fields(summary_t *s, const char *name, const char *prefix, const ptc__field_t *fields, const void *a,
                                 const void *b)
{
    for (const ptc__field_t *f = fields; f->name != NULL; f++) {
        if (ptc__field_eq(f, a, b))
            continue;
        char va[PTC__VALUE_SIZE], vb[PTC__VALUE_SIZE];
        ptc__field_format(f, a, va, sizeof(va));
        ptc__field_format(f, b, vb, sizeof(vb));
        item(s, "upstreams");
        put_opt(s, name);
        putf(s, " %s%s %s -> %s", prefix, f->name, va, vb);
    }
}

/* One upstream present in both: "NAME endpoints +A -B", "NAME max_connections 4 -> 8", ... */
static void diff_upstream(summary_t *s, const ptc_upstream_config_t *a, const ptc_upstream_config_t *b)
{
    if (!endpoints_eq(a, b)) {
        item(s, "upstreams");
        put_opt(s, b->name);
        put(s, " endpoints");
        size_t before = s->pos;
        for (size_t i = 0; i < b->num_endpoints; i++) {
            if (!has_endpoint(a, &b->endpoints[i])) {
                put(s, " +");
                put_hostport(s, &b->endpoints[i]);
            }
        }
        for (size_t i = 0; i < a->num_endpoints; i++) {
            if (!has_endpoint(b, &a->endpoints[i])) {
                put(s, " -");
                put_hostport(s, &a->endpoints[i]);
            }
        }
        if (s->pos == before)
            put(s, " reordered");
    }
    if (!str_eq(a->authority, b->authority)) {
        item(s, "upstreams");
        put_opt(s, b->name);
        put(s, " authority ");
        put_opt(s, a->authority);
        put(s, " -> ");
        put_opt(s, b->authority);
    }
    diff_upstream_fields(s, b->name, "", ptc__upstream_fields, a, b);
    diff_upstream_fields(s, b->name, "backoff.", ptc__backoff_fields, a, b);
    if (!upstream_tls_eq(a->tls, b->tls)) {
        item(s, "upstreams");
        put_opt(s, b->name);
        put(s, " ");
        put(s, tls_change(a->tls != NULL, b->tls != NULL));
    }
    if (a->balancing != b->balancing) {
        item(s, "upstreams");
        put_opt(s, b->name);
        putf(s, " balancing %s -> %s", ptc__balancing_names[a->balancing], ptc__balancing_names[b->balancing]);
    }
    diff_upstream_fields(s, b->name, "", ptc__upstream_policy_fields, a, b);
    const ptc_health_check_config_t *ha = &a->health_check, *hb = &b->health_check;
    if (ha->enabled != hb->enabled) {
        item(s, "upstreams");
        put_opt(s, b->name);
        put(s, hb->enabled ? " +health_check" : " -health_check");
    } else if (!health_check_eq(ha, hb)) {
        if (strcmp(ha->service != NULL ? ha->service : "", hb->service != NULL ? hb->service : "") != 0) {
            item(s, "upstreams");
            put_opt(s, b->name);
            putf(s, " health_check.service \"%.64s\" -> \"%.64s\"", ha->service != NULL ? ha->service : "",
                 hb->service != NULL ? hb->service : "");
        }
        diff_upstream_fields(s, b->name, "health_check.", ptc__health_check_fields, ha, hb);
    }
    if (a->outlier.enabled != b->outlier.enabled) {
        item(s, "upstreams");
        put_opt(s, b->name);
        put(s, b->outlier.enabled ? " +outlier" : " -outlier");
    } else if (!outlier_eq(&a->outlier, &b->outlier)) {
        diff_upstream_fields(s, b->name, "outlier.", ptc__outlier_fields, &a->outlier, &b->outlier);
    }
}

static void diff_upstreams(summary_t *s, const ptc_config_t *a, const ptc_config_t *b)
{
    size_t before = s->items;
    bool same = a->num_upstreams == b->num_upstreams;

    for (size_t i = 0; i < b->num_upstreams; i++) {
        if (find_upstream(a, b->upstreams[i].name) == NULL) {
            item(s, "upstreams");
            put(s, "+");
            put_opt(s, b->upstreams[i].name);
        }
    }
    for (size_t i = 0; i < a->num_upstreams; i++) {
        same = same && ptc_upstream_config_eq(&a->upstreams[i], &b->upstreams[i]);
        if (find_upstream(b, a->upstreams[i].name) == NULL) {
            item(s, "upstreams");
            put(s, "-");
            put_opt(s, a->upstreams[i].name);
        }
    }
    for (size_t i = 0; i < b->num_upstreams; i++) {
        const ptc_upstream_config_t *old = find_upstream(a, b->upstreams[i].name);
        if (old != NULL)
            diff_upstream(s, old, &b->upstreams[i]);
    }
    if (s->items == before && !same) {
        item(s, "upstreams");
        put(s, "reordered");
    }
}

/* The name of a requirement's i-th provider in c. */
static const char *provider_name(const ptc_config_t *c, const ptc_jwt_requirement_config_t *r, size_t i)
{
    return r->providers[i] < c->num_jwt_providers ? c->jwt_providers[r->providers[i]].name : NULL;
}

/* Whether requirement ra of a and rb of b say the same, providers compared by name (indexes move with the list). */
static bool requirement_same(const ptc_config_t *a, const ptc_jwt_requirement_config_t *ra, const ptc_config_t *b,
                             const ptc_jwt_requirement_config_t *rb)
{
    if (ra->set != rb->set || ra->disabled != rb->disabled || ra->optional != rb->optional ||
        ra->num_providers != rb->num_providers || !claims_eq(ra, rb))
        return false;
    for (size_t i = 0; i < ra->num_providers; i++)
        if (!str_eq(provider_name(a, ra, i), provider_name(b, rb, i)))
            return false;
    return true;
}

static const ptc_route_config_t *find_route(const ptc_config_t *c, const ptc_route_config_t *r)
{
    for (size_t i = 0; i < c->num_routes; i++)
        if (c->routes[i].match == r->match && str_eq(c->routes[i].path, r->path))
            return &c->routes[i];
    return NULL;
}

static const char *route_upstream(const ptc_config_t *c, const ptc_route_config_t *r)
{
    return r->upstream_index < c->num_upstreams ? c->upstreams[r->upstream_index].name : NULL;
}

static void diff_routes(summary_t *s, const ptc_config_t *a, const ptc_config_t *b)
{
    size_t before = s->items;
    bool same_order = a->num_routes == b->num_routes;

    for (size_t i = 0; i < b->num_routes; i++) {
        if (find_route(a, &b->routes[i]) == NULL) {
            item(s, "routes");
            put(s, "+");
            put_route(s, &b->routes[i]);
            put(s, " -> ");
            put_opt(s, route_upstream(b, &b->routes[i]));
        }
    }
    for (size_t i = 0; i < a->num_routes; i++) {
        same_order = same_order && a->routes[i].match == b->routes[i].match && str_eq(a->routes[i].path, b->routes[i].path);
        if (find_route(b, &a->routes[i]) == NULL) {
            item(s, "routes");
            put(s, "-");
            put_route(s, &a->routes[i]);
        }
    }
    for (size_t i = 0; i < b->num_routes; i++) {
        const ptc_route_config_t *r = &b->routes[i], *old = find_route(a, r);
        if (old == NULL)
            continue;
        const char *was = route_upstream(a, old), *is = route_upstream(b, r);
        if (!str_eq(was, is)) {
            item(s, "routes");
            put_route(s, r);
            put(s, " ");
            put_opt(s, was);
            put(s, " -> ");
            put_opt(s, is);
        }
        if (!cors_eq(old->cors, r->cors)) {
            item(s, "routes");
            put_route(s, r);
            put(s, old->cors == NULL ? " cors added" : r->cors == NULL ? " cors removed" : " cors changed");
        }
        if (!header_rules_eq(&old->headers, &r->headers)) {
            item(s, "routes");
            put_route(s, r);
            put(s, " headers changed");
        }
        if (!requirement_same(a, &old->jwt, b, &r->jwt)) {
            item(s, "routes");
            put_route(s, r);
            put(s, " jwt changed");
        }
        if (old->native_filters != r->native_filters) {
            item(s, "routes");
            put_route(s, r);
            putf(s, " native_filters %s -> %s", old->native_filters ? "true" : "false", r->native_filters ? "true" : "false");
        }
        if (!str_eq(old->get_cache_control, r->get_cache_control)) {
            item(s, "routes");
            put_route(s, r);
            put(s, " get_cache_control ");
            put_opt(s, old->get_cache_control);
            put(s, " -> ");
            put_opt(s, r->get_cache_control);
        }
    }
    /* upstream indexes that moved with their upstreams are the upstreams' reordering, not the routes' */
    if (s->items == before && !same_order) {
        item(s, "routes");
        put(s, "reordered");
    }
}

static bool has_origin(const ptc_cors_config_t *c, const char *text)
{
    for (size_t i = 0; i < c->num_origins; i++)
        if (str_eq(c->origins[i].text, text))
            return true;
    return false;
}

static void cors_flag(summary_t *s, const char *name, bool a, bool b)
{
    if (a == b)
        return;
    item(s, "cors");
    putf(s, "%s %s -> %s", name, a ? "true" : "false", b ? "true" : "false");
}

static void diff_cors(summary_t *s, const ptc_cors_config_t *a, const ptc_cors_config_t *b)
{
    size_t before = s->items;

    if (a->enabled != b->enabled) {
        item(s, "cors");
        put(s, b->enabled ? "enabled" : "disabled");
    }
    for (size_t i = 0; i < b->num_origins; i++) {
        if (!has_origin(a, b->origins[i].text)) {
            item(s, "cors");
            put(s, "+origin ");
            put_opt(s, b->origins[i].text);
        }
    }
    for (size_t i = 0; i < a->num_origins; i++) {
        if (!has_origin(b, a->origins[i].text)) {
            item(s, "cors");
            put(s, "-origin ");
            put_opt(s, a->origins[i].text);
        }
    }
    cors_flag(s, "allow_credentials", a->allow_credentials, b->allow_credentials);
    if (!str_eq(a->allow_methods, b->allow_methods)) {
        item(s, "cors");
        put(s, "allow_methods changed");
    }
    /* the header lists differ when giving b a's lists (borrowed, not copied) makes it a different policy */
    ptc_cors_config_t t = *b;
    t.reflect_headers = a->reflect_headers;
    t.allow_headers = a->allow_headers;
    t.num_allow_headers = a->num_allow_headers;
    if (!ptc_cors_config_eq(&t, b)) {
        item(s, "cors");
        put(s, "allow_headers changed");
    }
    t = *b;
    t.expose_headers = a->expose_headers;
    t.num_expose_headers = a->num_expose_headers;
    if (!ptc_cors_config_eq(&t, b)) {
        item(s, "cors");
        put(s, "expose_headers changed");
    }
    if (a->max_age_s != b->max_age_s) {
        char va[PTC__VALUE_SIZE], vb[PTC__VALUE_SIZE];
        ptc__format_duration(a->max_age_s * 1000, va, sizeof(va));
        ptc__format_duration(b->max_age_s * 1000, vb, sizeof(vb));
        item(s, "cors");
        putf(s, "max_age %s -> %s", va, vb);
    }
    cors_flag(s, "allow_private_network", a->allow_private_network, b->allow_private_network);
    if (s->items == before && !ptc_cors_config_eq(a, b)) {
        item(s, "cors");
        put(s, "origins reordered");
    }
}

static void diff_filters(summary_t *s, const ptc_config_t *a, const ptc_config_t *b)
{
    if (a->request_id.enabled != b->request_id.enabled) {
        item(s, NULL);
        put(s, b->request_id.enabled ? "request_id on" : "request_id off");
    }
    changed_string(s, "request_id.header", a->request_id.header, b->request_id.header);
    diff_fields(s, "request_id.", ptc__request_id_fields, &a->request_id, &b->request_id);
    if (a->trace.enabled != b->trace.enabled) {
        item(s, NULL);
        put(s, b->trace.enabled ? "trace on" : "trace off");
    }
    diff_fields(s, "trace.", ptc__trace_fields, &a->trace, &b->trace);
    if (!header_rules_eq(&a->headers, &b->headers)) {
        item(s, "headers");
        put(s, "changed");
    }
}

static const ptc_jwt_provider_config_t *find_jwt_provider(const ptc_config_t *c, const char *name)
{
    for (size_t i = 0; i < c->num_jwt_providers; i++)
        if (str_eq(c->jwt_providers[i].name, name))
            return &c->jwt_providers[i];
    return NULL;
}

/* "jwt: +provider new, -provider old, main changed, default changed" */
static void diff_jwt(summary_t *s, const ptc_config_t *a, const ptc_config_t *b)
{
    size_t before = s->items;
    bool same = a->num_jwt_providers == b->num_jwt_providers;

    for (size_t i = 0; i < b->num_jwt_providers; i++) {
        if (find_jwt_provider(a, b->jwt_providers[i].name) == NULL) {
            item(s, "jwt");
            put(s, "+provider ");
            put_opt(s, b->jwt_providers[i].name);
        }
    }
    for (size_t i = 0; i < a->num_jwt_providers; i++) {
        same = same && jwt_provider_eq(&a->jwt_providers[i], &b->jwt_providers[i]);
        if (find_jwt_provider(b, a->jwt_providers[i].name) == NULL) {
            item(s, "jwt");
            put(s, "-provider ");
            put_opt(s, a->jwt_providers[i].name);
        }
    }
    for (size_t i = 0; i < b->num_jwt_providers; i++) {
        const ptc_jwt_provider_config_t *old = find_jwt_provider(a, b->jwt_providers[i].name);
        if (old != NULL && !jwt_provider_eq(old, &b->jwt_providers[i])) {
            item(s, "jwt");
            put_opt(s, b->jwt_providers[i].name);
            put(s, " changed");
        }
    }
    if (!requirement_same(a, &a->jwt_default, b, &b->jwt_default)) {
        item(s, "jwt");
        put(s, "default changed");
    }
    /* provider indexes that moved with their providers are the providers' reordering, not the requirements' */
    if (s->items == before && !same) {
        item(s, "jwt");
        put(s, "providers reordered");
    }
}

static void diff_admin(summary_t *s, const ptc_admin_config_t *a, const ptc_admin_config_t *b)
{
    if (!ptc_hostport_eq(a->address, b->address)) {
        item(s, NULL);
        put(s, "admin.address ");
        put_hostport(s, a->address);
        put(s, " -> ");
        put_hostport(s, b->address);
    }
    changed_string(s, "admin.token_file", a->token_file, b->token_file);
    if (!str_eq(a->token, b->token)) { /* a secret: never its value */
        item(s, NULL);
        put(s, a->token == NULL ? "admin.token set" : b->token == NULL ? "admin.token removed" : "admin.token changed");
    }
}

size_t ptc_config_diff(const ptc_config_t *old, const ptc_config_t *next, char *buf, size_t len)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", "off"};
    summary_t s = {buf, len, 0, false, NULL, 0};

    if (len > 0)
        buf[0] = '\0';
    if (ptc_config_eq(old, next)) {
        put(&s, "no changes");
        return s.pos;
    }
    diff_listeners(&s, old, next);
    diff_upstreams(&s, old, next);
    diff_routes(&s, old, next);
    diff_cors(&s, &old->cors, &next->cors);
    diff_filters(&s, old, next);
    diff_jwt(&s, old, next);
    diff_fields(&s, "limits.", ptc__limits_fields, &old->limits, &next->limits);
    diff_fields(&s, "timeouts.", ptc__timeouts_fields, &old->timeouts, &next->timeouts);
    diff_fields(&s, "compression.", ptc__compression_fields, &old->compression, &next->compression);
    diff_fields(&s, "websocket.", ptc__websocket_fields, &old->websocket, &next->websocket);
    changed_string(&s, "health_path", old->health_path, next->health_path);
    if (old->workers != next->workers) {
        item(&s, NULL);
        putf(&s, "workers %" PRIu32 " -> %" PRIu32, old->workers, next->workers);
    }
    if (old->log_level != next->log_level) {
        item(&s, NULL);
        putf(&s, "log_level %s -> %s", (size_t)old->log_level < PTC_ARRAY_SIZE(levels) ? levels[old->log_level] : "?",
             (size_t)next->log_level < PTC_ARRAY_SIZE(levels) ? levels[next->log_level] : "?");
    }
    if (old->watch != next->watch) {
        item(&s, NULL);
        putf(&s, "watch %s -> %s", old->watch ? "true" : "false", next->watch ? "true" : "false");
    }
    changed_string(&s, "pid_file", old->pid_file, next->pid_file);
    diff_fields(&s, "metrics.", ptc__metrics_fields, &old->metrics, &next->metrics);
    changed_string(&s, "access_log.path", old->access_log.path, next->access_log.path);
    changed_string(&s, "access_log.format", old->access_log.format, next->access_log.format);
    if (old->access_log.buffer_size != next->access_log.buffer_size) {
        item(&s, NULL);
        char a[PTC__VALUE_SIZE], b[PTC__VALUE_SIZE];
        ptc__format_size(old->access_log.buffer_size, a, sizeof(a));
        ptc__format_size(next->access_log.buffer_size, b, sizeof(b));
        putf(&s, "access_log.buffer %s -> %s", a, b);
    }
    diff_admin(&s, &old->admin, &next->admin);
    if (s.items == 0) /* not reached while every field above is covered; says so rather than "no changes" */
        put(&s, "changed");
    return s.pos;
}
