/*
 * Remote JWKS documents for the JWT providers: one refresher per (jwks_url, jwks_ca) of the running
 * configuration, on the control thread's loop (src/control/fetch.c: HTTPS, Cache-Control, refresh at
 * 80% of the document's life, backoff on failure while the last good document is kept).
 *
 * A document is accepted only when it parses as a key set: a server that starts serving junk does not
 * take the keys away (the last good document stays until it expires). When the accepted document
 * changes, or expires, the control thread builds a new snapshot from the configuration in service
 * (same configuration, new keys; logged as a configuration version like any other change), which the
 * workers take as usual: calls in flight keep the keys they started with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>

#include "control_internal.h"
#include "portico/fetch.h"
#include "portico/filter.h"
#include "portico/jwt.h"
#include "portico/log.h"
#include "portico/snapshot.h"

struct st_ptc_jwks_source_t {
    ptc_control_t *ctl;
    char *url;
    char *ca;       /* NULL: the system store */
    char *provider; /* the first provider that uses it, for log lines */
    uint64_t ttl_ms;
    ptc_refresher_t *refresher;
    char *good;     /* the last document that parsed as a key set, or NULL */
    size_t good_len;
    bool used;      /* reconciliation mark */
};

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void source_free(ptc_jwks_source_t *s)
{
    ptc_refresher_free(s->refresher);
    free(s->url);
    free(s->ca);
    free(s->provider);
    free(s->good);
    free(s);
}

static void rebuild(ptc_control_t *ctl, const char *why)
{
    ptc_config_t copy;
    char err[1024];
    if (ptc_config_copy(&copy, &ctl->config) != 0) {
        ptc__control_failed(ctl, why, "out of memory");
        return;
    }
    if (ptc__control_apply_config(ctl, &copy, why, err, sizeof(err)) != 0)
        ptc__control_failed(ctl, why, err);
}

static void on_document(void *arg, const char *body, size_t len, bool changed, bool expired, const char *error)
{
    ptc_jwks_source_t *s = arg;
    char why[512];

    if (expired) {
        ptc_log_error("jwt provider %s: the keys from %s expired (last error: %s); its tokens are refused until a fetch succeeds",
                      s->provider, s->url, error != NULL ? error : "none");
        free(s->good);
        s->good = NULL;
        s->good_len = 0;
        snprintf(why, sizeof(why), "JWKS %s expired", s->url);
        rebuild(s->ctl, why);
        return;
    }
    if (!changed)
        return;
    ptc_jwks_t *k = NULL;
    char err[512];
    if (ptc_jwks_parse(body, len, &k, err, sizeof(err)) != 0) {
        ptc_log_error("jwt provider %s: %s served an unusable key set (%s); the keys fetched before stay in use", s->provider, s->url,
                      err);
        return;
    }
    size_t n = ptc_jwks_size(k);
    ptc_jwks_free(k);
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        ptc_log_error("jwt provider %s: out of memory taking the keys from %s", s->provider, s->url);
        return;
    }
    memcpy(copy, body, len);
    copy[len] = '\0';
    free(s->good);
    s->good = copy;
    s->good_len = len;
    ptc_log_info("jwt provider %s: %zu keys from %s", s->provider, n, s->url);
    snprintf(why, sizeof(why), "JWKS %s changed", s->url);
    rebuild(s->ctl, why);
}

const char *ptc__jwks_document(void *arg, const char *url, size_t *len)
{
    ptc_control_t *ctl = arg;
    for (size_t i = 0; i < ctl->num_jwks; i++) {
        if (strcmp(ctl->jwks[i]->url, url) == 0 && ctl->jwks[i]->good != NULL) {
            *len = ctl->jwks[i]->good_len;
            return ctl->jwks[i]->good;
        }
    }
    return NULL;
}

int ptc__jwks_reconcile(ptc_control_t *ctl, char *err, size_t errlen)
{
    const ptc_config_t *cfg = &ctl->snap->config;

    for (size_t i = 0; i < ctl->num_jwks; i++)
        ctl->jwks[i]->used = false;
    for (size_t p = 0; p < cfg->num_jwt_providers; p++) {
        const ptc_jwt_provider_config_t *pc = &cfg->jwt_providers[p];
        bool have = false;
        if (pc->jwks_url == NULL)
            continue;
        for (size_t i = 0; i < ctl->num_jwks; i++) {
            ptc_jwks_source_t *s = ctl->jwks[i];
            if (strcmp(s->url, pc->jwks_url) == 0 && same_str(s->ca, pc->jwks_ca) && s->ttl_ms == pc->jwks_cache_ms) {
                s->used = have = true;
                break;
            }
        }
        if (have)
            continue;
        ptc_jwks_source_t *s = calloc(1, sizeof(*s)), **grown = realloc(ctl->jwks, (ctl->num_jwks + 1) * sizeof(*grown));
        if (grown != NULL)
            ctl->jwks = grown;
        if (s == NULL || grown == NULL || (s->url = strdup(pc->jwks_url)) == NULL || (s->provider = strdup(pc->name)) == NULL ||
            (pc->jwks_ca != NULL && (s->ca = strdup(pc->jwks_ca)) == NULL)) {
            if (s != NULL)
                source_free(s);
            return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
        }
        s->ctl = ctl;
        s->used = true;
        s->ttl_ms = pc->jwks_cache_ms;
        ptc_refresher_options_t opts = {.default_ttl_ms = pc->jwks_cache_ms};
        char why[512];
        if (ptc_refresher_new(&s->refresher, ctl->base, ctl->dns, s->url, s->ca, &opts, on_document, s, why, sizeof(why)) != 0) {
            source_free(s);
            return ptc_errorf(PTC_ECONFIG, err, errlen, "jwt.providers[%zu].jwks_url: %s", p, why);
        }
        ctl->jwks[ctl->num_jwks++] = s;
        ptc_log_info("jwt provider %s: keys from %s: fetching", pc->name, pc->jwks_url);
    }
    size_t n = 0;
    for (size_t i = 0; i < ctl->num_jwks; i++) {
        if (ctl->jwks[i]->used)
            ctl->jwks[n++] = ctl->jwks[i];
        else
            source_free(ctl->jwks[i]);
    }
    ctl->num_jwks = n;
    return 0;
}

void ptc__jwks_close(ptc_control_t *ctl)
{
    for (size_t i = 0; i < ctl->num_jwks; i++)
        source_free(ctl->jwks[i]);
    free(ctl->jwks);
    ctl->jwks = NULL;
    ctl->num_jwks = 0;
}
