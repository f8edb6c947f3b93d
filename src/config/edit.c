/*
 * Deep copies and the small edits of the admin API. Every function leaves its target as it was when it
 * fails: a copy is built aside and handed over at the end; an edit checks everything before it changes
 * anything, and needs no memory once it does.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portico/config_internal.h"

/* *dst = a copy of src (NULL stays NULL); returns 0 or PTC_ENOMEM. */
static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    return src != NULL && (*dst = strdup(src)) == NULL ? PTC_ENOMEM : 0;
}

static int copy_listener_tls(ptc_listener_tls_config_t **dst, const ptc_listener_tls_config_t *src)
{
    ptc_listener_tls_config_t *t;

    *dst = NULL;
    if (src == NULL)
        return 0;
    if ((t = calloc(1, sizeof(*t))) == NULL)
        return PTC_ENOMEM;
    t->client_auth = src->client_auth;
    t->min_version = src->min_version;
    if (src->num_certs != 0) {
        if ((t->certs = calloc(src->num_certs, sizeof(*t->certs))) == NULL)
            goto nomem;
        t->num_certs = src->num_certs; /* zeroed entries are safe to free */
        for (size_t i = 0; i < src->num_certs; i++)
            if (dup_opt(&t->certs[i].cert, src->certs[i].cert) != 0 || dup_opt(&t->certs[i].key, src->certs[i].key) != 0)
                goto nomem;
    }
    if (dup_opt(&t->client_ca, src->client_ca) != 0)
        goto nomem;
    *dst = t;
    return 0;
nomem:
    ptc__listener_tls_free(t);
    return PTC_ENOMEM;
}

static int copy_upstream_tls(ptc_upstream_tls_config_t **dst, const ptc_upstream_tls_config_t *src)
{
    ptc_upstream_tls_config_t *t;

    *dst = NULL;
    if (src == NULL)
        return 0;
    if ((t = calloc(1, sizeof(*t))) == NULL)
        return PTC_ENOMEM;
    t->insecure_skip_verify = src->insecure_skip_verify;
    if (dup_opt(&t->ca, src->ca) != 0 || dup_opt(&t->server_name, src->server_name) != 0 || dup_opt(&t->cert, src->cert) != 0 ||
        dup_opt(&t->key, src->key) != 0) {
        ptc__upstream_tls_free(t);
        return PTC_ENOMEM;
    }
    *dst = t;
    return 0;
}

/* dst is zeroed; on failure it holds what was copied so far, for the caller to dispose. */
static int copy_upstream(ptc_upstream_config_t *dst, const ptc_upstream_config_t *src)
{
    *dst = *src;
    dst->name = dst->authority = NULL;
    dst->endpoints = NULL;
    dst->num_endpoints = 0;
    dst->tls = NULL;
    dst->health_check.service = NULL;
    if (dup_opt(&dst->name, src->name) != 0 || dup_opt(&dst->authority, src->authority) != 0 ||
        dup_opt(&dst->health_check.service, src->health_check.service) != 0 || copy_upstream_tls(&dst->tls, src->tls) != 0)
        return PTC_ENOMEM;
    if (src->num_endpoints != 0) {
        if ((dst->endpoints = ptc__hostports_copy(src->endpoints, src->num_endpoints)) == NULL)
            return PTC_ENOMEM;
        dst->num_endpoints = src->num_endpoints;
    }
    return 0;
}

/* calloc(n, size), with n == 0 giving NULL without failing; false on allocation failure. */
static bool alloc_array(void **out, size_t n, size_t size)
{
    *out = n != 0 ? calloc(n, size) : NULL;
    return n == 0 || *out != NULL;
}

/* *dst (zeroed) = a copy of the n rules of src; *ndst counts them as soon as they exist (zeroed entries are safe to
 * dispose). */
static int copy_rules(ptc_header_rule_config_t **dst, size_t *ndst, const ptc_header_rule_config_t *src, size_t n)
{
    void *p;

    if (!alloc_array(&p, n, sizeof(**dst)))
        return PTC_ENOMEM;
    *dst = p;
    *ndst = n;
    for (size_t i = 0; i < n; i++) {
        (*dst)[i].op = src[i].op;
        if (dup_opt(&(*dst)[i].name, src[i].name) != 0 || dup_opt(&(*dst)[i].value, src[i].value) != 0 ||
            dup_opt(&(*dst)[i].to, src[i].to) != 0)
            return PTC_ENOMEM;
    }
    return 0;
}

/* dst is zeroed; on failure it holds what was copied so far, for the caller to dispose. */
static int copy_header_rules(ptc_header_rules_config_t *dst, const ptc_header_rules_config_t *src)
{
    return copy_rules(&dst->request, &dst->num_request, src->request, src->num_request) != 0 ||
                   copy_rules(&dst->response, &dst->num_response, src->response, src->num_response) != 0 ||
                   copy_rules(&dst->trailers, &dst->num_trailers, src->trailers, src->num_trailers) != 0
               ? PTC_ENOMEM
               : 0;
}

/* Likewise. */
static int copy_requirement(ptc_jwt_requirement_config_t *dst, const ptc_jwt_requirement_config_t *src)
{
    void *p;

    dst->set = src->set;
    dst->disabled = src->disabled;
    dst->optional = src->optional;
    if (!alloc_array(&p, src->num_providers, sizeof(*dst->providers)))
        return PTC_ENOMEM;
    dst->providers = p;
    dst->num_providers = src->num_providers;
    if (src->num_providers != 0)
        memcpy(dst->providers, src->providers, src->num_providers * sizeof(*dst->providers));
    if (!alloc_array(&p, src->num_claims, sizeof(*dst->claims)))
        return PTC_ENOMEM;
    dst->claims = p;
    dst->num_claims = src->num_claims;
    for (size_t i = 0; i < src->num_claims; i++)
        if (dup_opt(&dst->claims[i].claim, src->claims[i].claim) != 0 || dup_opt(&dst->claims[i].value, src->claims[i].value) != 0)
            return PTC_ENOMEM;
    return 0;
}

/* Likewise. */
static int copy_jwt_provider(ptc_jwt_provider_config_t *dst, const ptc_jwt_provider_config_t *src)
{
    void *p;

    dst->from = src->from;
    dst->jwks_cache_ms = src->jwks_cache_ms;
    dst->clock_skew_ms = src->clock_skew_ms;
    dst->max_token_size = src->max_token_size;
    dst->strip_token = src->strip_token;
    if (dup_opt(&dst->name, src->name) != 0 || dup_opt(&dst->issuer, src->issuer) != 0 ||
        dup_opt(&dst->from_name, src->from_name) != 0 || dup_opt(&dst->from_prefix, src->from_prefix) != 0 ||
        dup_opt(&dst->jwks_file, src->jwks_file) != 0 || dup_opt(&dst->jwks_url, src->jwks_url) != 0 ||
        dup_opt(&dst->jwks_ca, src->jwks_ca) != 0 || dup_opt(&dst->forward_payload, src->forward_payload) != 0)
        return PTC_ENOMEM;
    if (!alloc_array(&p, src->num_audiences, sizeof(*dst->audiences)))
        return PTC_ENOMEM;
    dst->audiences = p;
    dst->num_audiences = src->num_audiences;
    for (size_t i = 0; i < src->num_audiences; i++)
        if (dup_opt(&dst->audiences[i], src->audiences[i]) != 0)
            return PTC_ENOMEM;
    if (!alloc_array(&p, src->num_claim_headers, sizeof(*dst->claim_headers)))
        return PTC_ENOMEM;
    dst->claim_headers = p;
    dst->num_claim_headers = src->num_claim_headers;
    for (size_t i = 0; i < src->num_claim_headers; i++)
        if (dup_opt(&dst->claim_headers[i].claim, src->claim_headers[i].claim) != 0 ||
            dup_opt(&dst->claim_headers[i].header, src->claim_headers[i].header) != 0)
            return PTC_ENOMEM;
    return 0;
}

int ptc__route_copy(ptc_route_config_t *dst, const ptc_route_config_t *src)
{
    dst->match = src->match;
    dst->upstream_index = src->upstream_index;
    dst->native_filters = src->native_filters;
    if (dup_opt(&dst->path, src->path) != 0 || dup_opt(&dst->get_cache_control, src->get_cache_control) != 0 ||
        copy_header_rules(&dst->headers, &src->headers) != 0 ||
        copy_requirement(&dst->jwt, &src->jwt) != 0)
        return PTC_ENOMEM;
    if (src->cors != NULL) {
        if ((dst->cors = malloc(sizeof(*dst->cors))) == NULL)
            return PTC_ENOMEM;
        if (ptc_cors_config_copy(dst->cors, src->cors) != 0) { /* it leaves dst->cors zeroed */
            free(dst->cors);
            dst->cors = NULL;
            return PTC_ENOMEM;
        }
    }
    return 0;
}

static int copy_admin(ptc_admin_config_t *dst, const ptc_admin_config_t *src)
{
    if (src->address != NULL) {
        if ((dst->address = malloc(sizeof(*dst->address))) == NULL)
            return PTC_ENOMEM;
        if (ptc__hostport_copy(dst->address, src->address) != 0) {
            free(dst->address);
            dst->address = NULL;
            return PTC_ENOMEM;
        }
    }
    return dup_opt(&dst->token_file, src->token_file) != 0 || dup_opt(&dst->token, src->token) != 0 ? PTC_ENOMEM : 0;
}

int ptc_config_copy(ptc_config_t *dst, const ptc_config_t *src)
{
    ptc_config_t c = {0};
    void *p;

    ptc__config_copy_scalars(&c, src);
    if (dup_opt(&c.source, src->source) != 0 || dup_opt(&c.base_dir, src->base_dir) != 0 ||
        dup_opt(&c.health_path, src->health_path) != 0 || dup_opt(&c.pid_file, src->pid_file) != 0 ||
        dup_opt(&c.access_log.path, src->access_log.path) != 0 || dup_opt(&c.access_log.format, src->access_log.format) != 0 ||
        dup_opt(&c.request_id.header, src->request_id.header) != 0 ||
        copy_admin(&c.admin, &src->admin) != 0 || ptc_cors_config_copy(&c.cors, &src->cors) != 0 ||
        copy_header_rules(&c.headers, &src->headers) != 0 || copy_requirement(&c.jwt_default, &src->jwt_default) != 0)
        goto nomem;

    /* each array counts its entries as soon as it exists: zeroed and partly copied entries are safe to dispose */
    if (!alloc_array(&p, src->num_listeners, sizeof(*c.listeners)))
        goto nomem;
    c.listeners = p;
    c.num_listeners = src->num_listeners;
    for (size_t i = 0; i < src->num_listeners; i++)
        if (ptc__hostport_copy(&c.listeners[i].addr, &src->listeners[i].addr) != 0 ||
            copy_listener_tls(&c.listeners[i].tls, src->listeners[i].tls) != 0)
            goto nomem;
    if (!alloc_array(&p, src->num_upstreams, sizeof(*c.upstreams)))
        goto nomem;
    c.upstreams = p;
    c.num_upstreams = src->num_upstreams;
    for (size_t i = 0; i < src->num_upstreams; i++)
        if (copy_upstream(&c.upstreams[i], &src->upstreams[i]) != 0)
            goto nomem;
    if (!alloc_array(&p, src->num_routes, sizeof(*c.routes)))
        goto nomem;
    c.routes = p;
    c.num_routes = src->num_routes;
    for (size_t i = 0; i < src->num_routes; i++)
        if (ptc__route_copy(&c.routes[i], &src->routes[i]) != 0)
            goto nomem;
    if (!alloc_array(&p, src->num_jwt_providers, sizeof(*c.jwt_providers)))
        goto nomem;
    c.jwt_providers = p;
    c.num_jwt_providers = src->num_jwt_providers;
    for (size_t i = 0; i < src->num_jwt_providers; i++)
        if (copy_jwt_provider(&c.jwt_providers[i], &src->jwt_providers[i]) != 0)
            goto nomem;
    *dst = c;
    return 0;

nomem:
    ptc_config_dispose(&c);
    return PTC_ENOMEM;
}

int ptc_config_remove_allow_origin(ptc_config_t *cfg, const char *pattern)
{
    ptc_cors_config_t *c = &cfg->cors;
    size_t n = 0;

    for (size_t i = 0; i < c->num_origins; i++)
        if (strcmp(c->origins[i].text, pattern) == 0)
            n++;
    if (n == 0)
        return PTC_EINVAL;
    n = 0;
    for (size_t i = 0; i < c->num_origins; i++) {
        if (strcmp(c->origins[i].text, pattern) == 0)
            ptc_origin_pattern_dispose(&c->origins[i]);
        else
            c->origins[n++] = c->origins[i];
    }
    c->num_origins = n;
    if (n == 0) {
        free(c->origins);
        c->origins = NULL;
    }
    return 0;
}

int ptc_config_find_route(const ptc_config_t *cfg, const char *match, const char *path)
{
    ptc_route_match_t m;

    if (strcmp(match, "prefix") == 0)
        m = PTC_ROUTE_PREFIX;
    else if (strcmp(match, "path") == 0)
        m = PTC_ROUTE_EXACT;
    else
        return -1;
    for (size_t i = 0; i < cfg->num_routes && i <= INT_MAX; i++)
        if (cfg->routes[i].match == m && strcmp(cfg->routes[i].path, path) == 0)
            return (int)i;
    return -1;
}

int ptc_config_find_upstream(const ptc_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->num_upstreams && i <= INT_MAX; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0)
            return (int)i;
    return -1;
}

int ptc_config_set_route_upstream(ptc_config_t *cfg, size_t route_index, const char *upstream_name, char *err, size_t errlen)
{
    int u;

    if (route_index >= cfg->num_routes) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "routes[%zu]: no such route (there are %zu)", route_index, cfg->num_routes);
        return PTC_EINVAL;
    }
    if ((u = ptc_config_find_upstream(cfg, upstream_name)) < 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "routes[%zu].upstream: unknown upstream \"%s\"", route_index, upstream_name);
        return PTC_EINVAL;
    }
    cfg->routes[route_index].upstream_index = (size_t)u;
    return 0;
}
