/*
 * The JWT filter (include/portico/filter.h) and the providers it checks tokens against.
 *
 * Providers are built with each snapshot: their key set is the local JWKS file (read again at every
 * reload) merged with the last good document fetched from jwks_url (the control thread keeps it fresh,
 * src/control/control.c, and builds a new snapshot when the keys change). A provider whose keys are not
 * there yet (a remote set never fetched) cannot accept a token: its calls get UNAVAILABLE, not
 * UNAUTHENTICATED — the client is not at fault.
 *
 * On a request (after CORS: preflights are never checked): the route's requirement names providers; the
 * first that finds a token (its header with its prefix, its cookie or its query parameter) verifies it,
 * through a per-worker cache of verified tokens (a token seen before costs a hash lookup, not a signature
 * check). No token: UNAUTHENTICATED, unless the route makes it optional. A token that does not verify:
 * UNAUTHENTICATED with the reason (never the token). A valid token without the route's required claims:
 * PERMISSION_DENIED. Then the provider's claims_to_headers replace whatever the client sent under those
 * names (a claim that is absent removes the header: a client cannot smuggle it), the payload is forwarded
 * when asked, and the token is stripped when asked. Answers are gRPC errors in the caller's protocol, with
 * CORS headers, so a browser can read them.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "portico/call.h"
#include "portico/file.h"
#include "portico/filter.h"
#include "portico/jwt.h"
#include "portico/log.h"
#include "portico/worker.h"

#define JWKS_MAX_FILE (1024 * 1024)
#define JWT_CACHE_ENTRIES 1024 /* per worker; memory bounded by entries × (max_token_size + claims) */
#define CLAIM_MAX 2048

/* ---- providers ---- */

struct st_ptc_jwt_provider_t {
    const ptc_jwt_provider_config_t *cfg;
    ptc_jwks_t *keys; /* NULL: none yet (remote set not fetched) */
    ptc_jwt_params_t params;
    uint64_t params_id;
};

/* {"keys": [...]} of both documents (either may be NULL); a single JWK counts as a set of one. */
static char *merge_jwks(const char *a, size_t alen, const char *b, size_t blen, char *err, size_t errlen)
{
    json_t *keys = json_array(), *doc = NULL;
    const char *texts[] = {a, b};
    size_t lens[] = {alen, blen};
    char *out = NULL;

    if (keys == NULL)
        return NULL;
    for (size_t i = 0; i < 2; i++) {
        if (texts[i] == NULL)
            continue;
        json_error_t je;
        json_t *d = json_loadb(texts[i], lens[i], JSON_REJECT_DUPLICATES, &je);
        if (d == NULL) {
            ptc_errorf(0, err, errlen, "%s: not JSON: %s (line %d)", i == 0 ? "jwks_file" : "jwks_url", je.text, je.line);
            goto exit;
        }
        json_t *list = json_object_get(d, "keys");
        if (json_is_array(list))
            json_array_extend(keys, list);
        else
            json_array_append(keys, d);
        json_decref(d);
    }
    if ((doc = json_pack("{s:O}", "keys", keys)) != NULL)
        out = json_dumps(doc, JSON_COMPACT);
exit:
    json_decref(doc);
    json_decref(keys);
    return out;
}

static int provider_init(ptc_jwt_provider_t *p, const ptc_jwt_provider_config_t *cfg, const ptc_snapshot_inputs_t *in, size_t index,
                         char *err, size_t errlen)
{
    char *file = NULL, *merged = NULL, why[512];
    size_t flen = 0, rlen = 0;
    const char *remote = NULL;
    int ret = 0;

    p->cfg = cfg;
    if (cfg->jwks_file != NULL &&
        (ret = ptc_read_file(cfg->jwks_file, JWKS_MAX_FILE, &file, &flen, why, sizeof(why))) != 0)
        return ptc_errorf(PTC_ECONFIG, err, errlen, "jwt.providers[%zu].jwks_file: %s", index, why);
    if (cfg->jwks_url != NULL && in != NULL && in->remote_jwks != NULL)
        remote = in->remote_jwks(in->arg, cfg->jwks_url, &rlen);
    if (file != NULL || remote != NULL) {
        if ((merged = merge_jwks(file, flen, remote, rlen, why, sizeof(why))) == NULL) {
            ret = ptc_errorf(PTC_ECONFIG, err, errlen, "jwt.providers[%zu]: %s", index, why[0] != '\0' ? why : "out of memory");
            goto exit;
        }
        if (ptc_jwks_parse(merged, strlen(merged), &p->keys, why, sizeof(why)) != 0) {
            ret = ptc_errorf(PTC_ECONFIG, err, errlen, "jwt.providers[%zu].%s: %s", index, file != NULL ? "jwks_file" : "jwks_url", why);
            goto exit;
        }
        if (ptc_jwks_num_skipped(p->keys) != 0)
            ptc_log_warn("jwt provider %s: %zu keys skipped: %s", cfg->name, ptc_jwks_num_skipped(p->keys), ptc_jwks_notes(p->keys));
    }
    p->params = (ptc_jwt_params_t){
        .keys = p->keys,
        .issuer = cfg->issuer,
        .audiences = (const char *const *)cfg->audiences,
        .num_audiences = cfg->num_audiences,
        .clock_skew_s = (cfg->clock_skew_ms + 999) / 1000,
        .max_token_size = cfg->max_token_size,
    };
    p->params_id = ptc_jwt_params_new_id();
exit:
    free(file);
    free(merged);
    return ret;
}

int ptc__jwt_providers_new(ptc_jwt_provider_t **out, const ptc_config_t *cfg, const ptc_snapshot_inputs_t *in, char *err,
                           size_t errlen)
{
    ptc_jwt_provider_t *ps = calloc(cfg->num_jwt_providers + 1, sizeof(*ps));
    int ret;

    if (ps == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    for (size_t i = 0; i < cfg->num_jwt_providers; i++) {
        if ((ret = provider_init(&ps[i], &cfg->jwt_providers[i], in, i, err, errlen)) != 0) {
            ptc__jwt_providers_free(ps, i + 1);
            return ret;
        }
    }
    *out = ps;
    return 0;
}

void ptc__jwt_providers_free(ptc_jwt_provider_t *ps, size_t n)
{
    for (size_t i = 0; ps != NULL && i < n; i++)
        ptc_jwks_free(ps[i].keys);
    free(ps);
}

/* ---- tokens ---- */

/* The token a provider finds in the request, or an empty slice. */
static ptc_iovec_t find_token(const ptc_jwt_provider_config_t *c, ptc_filter_ctx_t *ctx)
{
    ptc_iovec_t name = ptc_iov(c->from_name, strlen(c->from_name));

    switch (c->from) {
    case PTC_JWT_FROM_HEADER: {
        const ptc_header_t *h = ptc_filter_find(ctx, name);
        if (h == NULL)
            return ptc_iov("", 0);
        ptc_iovec_t v = ptc_iov_trim(h->value);
        size_t plen = c->from_prefix != NULL ? strlen(c->from_prefix) : 0;
        if (plen != 0 && !ptc_iov_startswith_ci(v, ptc_iov(c->from_prefix, plen)))
            return ptc_iov("", 0);
        return ptc_iov_trim(ptc_iov(v.base + plen, v.len - plen));
    }
    case PTC_JWT_FROM_COOKIE:
        for (size_t i = 0; i < ctx->req->num_headers; i++) {
            if (!ptc_iov_eq(ctx->req->headers[i].name, PTC_STRLIT("cookie")))
                continue;
            ptc_iovec_t v = ctx->req->headers[i].value;
            while (v.len > 0) {
                const char *semi = memchr(v.base, ';', v.len);
                size_t n = semi != NULL ? (size_t)(semi - v.base) : v.len;
                ptc_iovec_t pair = ptc_iov_trim(ptc_iov(v.base, n));
                const char *eq = memchr(pair.base, '=', pair.len);
                if (eq != NULL && ptc_iov_eq(ptc_iov(pair.base, (size_t)(eq - pair.base)), name))
                    return ptc_iov(eq + 1, pair.len - (size_t)(eq + 1 - pair.base));
                if (semi == NULL)
                    break;
                v = ptc_iov(semi + 1, v.len - n - 1);
            }
        }
        return ptc_iov("", 0);
    case PTC_JWT_FROM_QUERY: {
        const char *q = memchr(ctx->req->path.base, '?', ctx->req->path.len);
        if (q == NULL)
            return ptc_iov("", 0);
        ptc_iovec_t v = ptc_iov(q + 1, ctx->req->path.len - (size_t)(q + 1 - ctx->req->path.base));
        while (v.len > 0) {
            const char *amp = memchr(v.base, '&', v.len);
            size_t n = amp != NULL ? (size_t)(amp - v.base) : v.len;
            const char *eq = memchr(v.base, '=', n);
            if (eq != NULL && ptc_iov_eq(ptc_iov(v.base, (size_t)(eq - v.base)), name))
                return ptc_iov(eq + 1, n - (size_t)(eq + 1 - v.base));
            if (amp == NULL)
                break;
            v = ptc_iov(amp + 1, v.len - n - 1);
        }
        return ptc_iov("", 0);
    }
    }
    return ptc_iov("", 0);
}

/* Removes the token from what goes upstream (strip_token). The query never goes upstream anyway. */
static void strip_token(const ptc_jwt_provider_config_t *c, ptc_filter_ctx_t *ctx)
{
    if (c->from == PTC_JWT_FROM_HEADER) {
        ptc_filter_remove(ctx, ptc_iov(c->from_name, strlen(c->from_name)));
    } else if (c->from == PTC_JWT_FROM_COOKIE) {
        /* the cookie header without that one cookie */
        const ptc_header_t *h = ptc_filter_find(ctx, PTC_STRLIT("cookie"));
        char buf[8192];
        size_t n = 0;
        if (h == NULL || h->value.len >= sizeof(buf))
            return;
        ptc_iovec_t v = h->value, name = ptc_iov(c->from_name, strlen(c->from_name));
        while (v.len > 0) {
            const char *semi = memchr(v.base, ';', v.len);
            size_t len = semi != NULL ? (size_t)(semi - v.base) : v.len;
            ptc_iovec_t pair = ptc_iov_trim(ptc_iov(v.base, len));
            const char *eq = memchr(pair.base, '=', pair.len);
            if (pair.len != 0 && !(eq != NULL && ptc_iov_eq(ptc_iov(pair.base, (size_t)(eq - pair.base)), name))) {
                if (n != 0) {
                    memcpy(buf + n, "; ", 2);
                    n += 2;
                }
                memcpy(buf + n, pair.base, pair.len);
                n += pair.len;
            }
            if (semi == NULL)
                break;
            v = ptc_iov(semi + 1, v.len - len - 1);
        }
        ptc_filter_remove(ctx, PTC_STRLIT("cookie"));
        if (n != 0 && ptc_filter_add(ctx, PTC_STRLIT("cookie"), ptc_iov(buf, n)) != 0) {
            /* out of room: the cookie header is dropped altogether rather than forwarded with the token */
        }
    }
}

/* Whether a claim holds a required value: equal, an element of an array, or a word of a space-separated
 * string (OAuth "scope"). */
static bool claim_holds(const ptc_jwt_t *t, const ptc_jwt_claim_requirement_t *r)
{
    char buf[CLAIM_MAX];
    ssize_t n = ptc_jwt_claim(t, r->claim, buf, sizeof(buf));
    size_t want = strlen(r->value);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return false;
    if (strcmp(buf, r->value) == 0)
        return true;
    /* arrays of strings come joined with ',', scopes with ' ' */
    for (const char *p = buf; *p != '\0';) {
        size_t len = strcspn(p, ", ");
        if (len == want && memcmp(p, r->value, want) == 0)
            return true;
        p += len;
        p += strspn(p, ", ");
    }
    return false;
}

typedef struct st_auth_conf_t {
    const ptc_jwt_requirement_config_t *req;
    const ptc_jwt_provider_t *providers; /* the snapshot's, indexed as req->providers */
} auth_conf_t;

static ptc_jwt_cache_t *worker_cache(ptc_worker_t *w)
{
    if (w == NULL)
        return NULL;
    if (w->jwt_cache == NULL && ptc_jwt_cache_new(JWT_CACHE_ENTRIES, 0, (ptc_jwt_cache_t **)&w->jwt_cache) != 0)
        return NULL;
    return w->jwt_cache;
}

static ptc_filter_action_t auth_on_request(const ptc_filter_t *f, ptc_filter_ctx_t *ctx)
{
    const auth_conf_t *a = f->conf;
    const ptc_jwt_requirement_config_t *rq = a->req;
    const ptc_jwt_provider_t *used = NULL;
    ptc_jwt_t *tok = NULL;
    ptc_jwt_result_t res = PTC_JWT_OK;
    char why[256] = "";
    bool found = false, unavailable = false;
    uint64_t now = (uint64_t)time(NULL);

    for (size_t i = 0; i < rq->num_providers && tok == NULL; i++) {
        const ptc_jwt_provider_t *p = &a->providers[rq->providers[i]];
        ptc_iovec_t t = find_token(p->cfg, ctx);
        if (t.len == 0)
            continue;
        found = true;
        if (p->keys == NULL) {
            unavailable = true;
            snprintf(why, sizeof(why), "the signing keys of provider %s are not available yet", p->cfg->name);
            continue;
        }
        ptc_jwt_cache_t *cache = worker_cache(ctx->worker);
        uint64_t hits = 0;
        if (cache != NULL) {
            ptc_jwt_cache_stats_t st;
            ptc_jwt_cache_get_stats(cache, &st);
            hits = st.hits;
            res = ptc_jwt_cache_verify(cache, &p->params, p->params_id, t, now, &tok, why, sizeof(why));
            ptc_jwt_cache_get_stats(cache, &st);
            if (res == PTC_JWT_OK && st.hits > hits)
                PTC_FILTER_STAT(ctx, jwt_cached);
        } else {
            res = ptc_jwt_verify(&p->params, t, now, &tok, why, sizeof(why));
        }
        if (res == PTC_JWT_OK)
            used = p;
        else
            unavailable = unavailable && res == PTC_JWT_INTERNAL_ERROR;
    }
    if (tok == NULL) {
        if (!found) {
            if (rq->optional) {
                PTC_FILTER_STAT(ctx, jwt_absent_allowed);
                return PTC_FILTER_CONTINUE;
            }
            PTC_FILTER_STAT(ctx, jwt_missing);
            const ptc_jwt_provider_config_t *c = a->providers[rq->providers[0]].cfg;
            if (c->from == PTC_JWT_FROM_HEADER)
                return ptc_filter_answer_grpc(ctx, PTC_GRPC_UNAUTHENTICATED, "missing credentials: expected %s: %s<token>", c->from_name,
                                              c->from_prefix != NULL ? c->from_prefix : "");
            return ptc_filter_answer_grpc(ctx, PTC_GRPC_UNAUTHENTICATED, "missing credentials: expected a token in the %s %s",
                                          c->from_name, c->from == PTC_JWT_FROM_COOKIE ? "cookie" : "query parameter");
        }
        if (unavailable)
            return ptc_filter_answer_grpc(ctx, PTC_GRPC_UNAVAILABLE, "%s", why);
        PTC_FILTER_STAT(ctx, jwt_invalid);
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_UNAUTHENTICATED, "invalid token: %s", why);
    }
    for (size_t i = 0; i < rq->num_claims; i++) {
        if (!claim_holds(tok, &rq->claims[i])) {
            PTC_FILTER_STAT(ctx, jwt_forbidden);
            ptc_jwt_free(tok);
            return ptc_filter_answer_grpc(ctx, PTC_GRPC_PERMISSION_DENIED, "the token does not grant this call (claim %s)",
                                          rq->claims[i].claim);
        }
    }
    PTC_FILTER_STAT(ctx, jwt_ok);
    const ptc_jwt_provider_config_t *c = used->cfg;
    char buf[CLAIM_MAX];
    int ret = 0;
    for (size_t i = 0; i < c->num_claim_headers && ret == 0; i++) {
        ptc_iovec_t h = ptc_iov(c->claim_headers[i].header, strlen(c->claim_headers[i].header));
        ssize_t n = ptc_jwt_claim(tok, c->claim_headers[i].claim, buf, sizeof(buf));
        if (n < 0 || (size_t)n >= sizeof(buf)) {
            ptc_filter_remove(ctx, h); /* absent (or too long): never what the client sent */
            continue;
        }
        for (ssize_t k = 0; k < n; k++) /* a claim cannot split a header */
            if ((unsigned char)buf[k] < 0x20 && buf[k] != '\t')
                buf[k] = ' ';
        ret = ptc_filter_set(ctx, h, ptc_iov(buf, (size_t)n));
    }
    if (ret == 0 && c->forward_payload != NULL) {
        ptc_iovec_t pl = ptc_jwt_payload_json(tok);
        char *enc = malloc(PTC_B64_ENCODED_MAX(pl.len) + 1);
        if (enc == NULL) {
            ret = PTC_ENOMEM;
        } else {
            size_t n = ptc_b64url_encode(enc, (const uint8_t *)pl.base, pl.len);
            ret = ptc_filter_set(ctx, ptc_iov(c->forward_payload, strlen(c->forward_payload)), ptc_iov(enc, n));
            free(enc);
        }
    }
    if (ret == 0 && c->strip_token)
        strip_token(c, ctx);
    ctx->info->jwt = tok; /* owned by the call info from here (%JWT()% in response rules) */
    if (ret != 0)
        return ptc_filter_answer_grpc(ctx, PTC_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
    return PTC_FILTER_CONTINUE;
}

static void auth_free(void *conf)
{
    free(conf);
}

const ptc_filter_type_t ptc_auth_filter = {"jwt", auth_on_request, NULL, NULL, auth_free};

/* The JWT filter for a requirement, or NULL in *out when it asks for nothing. */
int ptc__auth_filter_new(void **out, const ptc_jwt_requirement_config_t *req, const ptc_jwt_provider_t *providers, char *err, size_t errlen)
{
    *out = NULL;
    if (req->disabled || req->num_providers == 0)
        return 0;
    auth_conf_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    a->req = req;
    a->providers = providers;
    *out = a;
    return 0;
}
