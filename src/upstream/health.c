/*
 * Upstream health shared by all threads (include/portico/health.h): the status objects and their table, the
 * threshold and outlier rules, and the grpc.health.v1 messages (encoded and decoded by hand: two fields).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portico/health.h"

/* ---- status objects ---- */

static ptc_endpoint_status_t *endpoint_new(const char *upstream, const ptc_hostport_t *addr)
{
    ptc_endpoint_status_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    if ((st->upstream = strdup(upstream)) == NULL || (st->addr.host = strdup(addr->host)) == NULL) {
        free(st->upstream);
        free(st);
        return NULL;
    }
    st->addr.port = addr->port;
    snprintf(st->label, sizeof(st->label), strchr(addr->host, ':') != NULL ? "[%.64s]:%u" : "%.64s:%u", addr->host, addr->port);
    atomic_init(&st->_refs, 1);
    atomic_init(&st->health, PTC_HEALTH_UNKNOWN);
    pthread_mutex_init(&st->lock, NULL);
    return st;
}

void ptc_endpoint_status_release(ptc_endpoint_status_t *st)
{
    if (st == NULL || atomic_fetch_sub_explicit(&st->_refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&st->lock);
    free(st->upstream);
    free(st->addr.host);
    free(st);
}

static void upstream_release(ptc_upstream_status_t *u)
{
    if (u == NULL || atomic_fetch_sub_explicit(&u->_refs, 1, memory_order_acq_rel) != 1)
        return;
    free(u->name);
    free(u);
}

/* The entry of prev for an upstream name, or NULL. */
static const ptc_status_table_entry_t *prev_entry(const ptc_status_table_t *prev, const char *name)
{
    for (size_t i = 0; prev != NULL && i < prev->num_upstreams; i++)
        if (strcmp(prev->upstreams[i].up->name, name) == 0)
            return &prev->upstreams[i];
    return NULL;
}

int ptc_status_table_new(ptc_status_table_t **out, const ptc_config_t *cfg, const ptc_status_table_t *prev)
{
    ptc_status_table_t *t = calloc(1, sizeof(*t));

    if (t == NULL || (t->upstreams = calloc(cfg->num_upstreams + 1, sizeof(*t->upstreams))) == NULL)
        goto nomem;
    t->num_upstreams = cfg->num_upstreams;
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        const ptc_upstream_config_t *uc = &cfg->upstreams[i];
        const ptc_status_table_entry_t *old = prev_entry(prev, uc->name);
        ptc_status_table_entry_t *e = &t->upstreams[i];
        if (old != NULL) {
            e->up = old->up;
            atomic_fetch_add_explicit(&e->up->_refs, 1, memory_order_relaxed);
        } else if ((e->up = calloc(1, sizeof(*e->up))) == NULL || (e->up->name = strdup(uc->name)) == NULL) {
            free(e->up);
            e->up = NULL;
            goto nomem;
        } else {
            atomic_init(&e->up->_refs, 1);
        }
        if ((e->endpoints = calloc(uc->num_endpoints + 1, sizeof(*e->endpoints))) == NULL)
            goto nomem;
        e->num_endpoints = uc->num_endpoints;
        for (size_t j = 0; j < uc->num_endpoints; j++) {
            for (size_t k = 0; old != NULL && k < old->num_endpoints && e->endpoints[j] == NULL; k++)
                if (ptc_hostport_eq(&old->endpoints[k]->addr, &uc->endpoints[j]))
                    e->endpoints[j] = ptc_endpoint_status_ref(old->endpoints[k]);
            if (e->endpoints[j] == NULL && (e->endpoints[j] = endpoint_new(uc->name, &uc->endpoints[j])) == NULL)
                goto nomem;
        }
    }
    *out = t;
    return 0;

nomem:
    ptc_status_table_free(t);
    return PTC_ENOMEM;
}

void ptc_status_table_free(ptc_status_table_t *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; t->upstreams != NULL && i < t->num_upstreams; i++) {
        for (size_t j = 0; t->upstreams[i].endpoints != NULL && j < t->upstreams[i].num_endpoints; j++)
            ptc_endpoint_status_release(t->upstreams[i].endpoints[j]);
        free(t->upstreams[i].endpoints);
        upstream_release(t->upstreams[i].up);
    }
    free(t->upstreams);
    free(t);
}

/* ---- rules ---- */

bool ptc_endpoint_available(ptc_endpoint_status_t *st, const ptc_health_check_config_t *hc, uint64_t now_ms)
{
    int h = atomic_load_explicit(&st->health, memory_order_relaxed);
    if (atomic_load_explicit(&st->ejected_until_ms, memory_order_relaxed) > now_ms)
        return false;
    return hc->enabled ? h == PTC_HEALTH_HEALTHY : h != PTC_HEALTH_UNHEALTHY;
}

bool ptc_outlier_failure(ptc_endpoint_status_t *st, const ptc_outlier_config_t *cfg, uint64_t now_ms, const char *why)
{
    if (!cfg->enabled)
        return false;
    unsigned n = atomic_fetch_add_explicit(&st->consecutive_failures, 1, memory_order_relaxed) + 1;
    if (n < cfg->consecutive_failures)
        return false;
    /* the failure that reaches the threshold ejects; the count starts again for when it comes back */
    atomic_store_explicit(&st->consecutive_failures, 0, memory_order_relaxed);
    atomic_store_explicit(&st->ejected_until_ms, now_ms + cfg->ejection_ms, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->ejections, 1, memory_order_relaxed);
    pthread_mutex_lock(&st->lock);
    snprintf(st->eject_reason, sizeof(st->eject_reason), "%u consecutive failures, the last: %.100s", n, why);
    pthread_mutex_unlock(&st->lock);
    return true;
}

void ptc_outlier_success(ptc_endpoint_status_t *st)
{
    if (atomic_load_explicit(&st->consecutive_failures, memory_order_relaxed) != 0)
        atomic_store_explicit(&st->consecutive_failures, 0, memory_order_relaxed);
}

ptc_health_t ptc_health_next(ptc_health_t cur, bool ok, unsigned successes, unsigned failures, const ptc_health_check_config_t *hc)
{
    if (cur == PTC_HEALTH_UNKNOWN)
        return ok ? PTC_HEALTH_HEALTHY : PTC_HEALTH_UNHEALTHY;
    if (ok)
        return cur == PTC_HEALTH_UNHEALTHY && successes < hc->healthy_threshold ? PTC_HEALTH_UNHEALTHY : PTC_HEALTH_HEALTHY;
    return cur == PTC_HEALTH_HEALTHY && failures < hc->unhealthy_threshold ? PTC_HEALTH_HEALTHY : PTC_HEALTH_UNHEALTHY;
}

ptc_health_t ptc_health_record(ptc_endpoint_status_t *st, const ptc_health_check_config_t *hc, bool ok, const char *result,
                               uint64_t wall_ms, ptc_health_t *before)
{
    unsigned successes = 0, failures = 0;
    if (ok) {
        successes = atomic_fetch_add_explicit(&st->check_successes, 1, memory_order_relaxed) + 1;
        atomic_store_explicit(&st->check_failures, 0, memory_order_relaxed);
    } else {
        failures = atomic_fetch_add_explicit(&st->check_failures, 1, memory_order_relaxed) + 1;
        atomic_store_explicit(&st->check_successes, 0, memory_order_relaxed);
    }
    ptc_health_t cur = (ptc_health_t)atomic_load_explicit(&st->health, memory_order_relaxed);
    ptc_health_t next = ptc_health_next(cur, ok, successes, failures, hc);
    pthread_mutex_lock(&st->lock);
    snprintf(st->check_result, sizeof(st->check_result), "%s", result);
    st->check_ok = ok;
    st->check_wall_ms = wall_ms;
    pthread_mutex_unlock(&st->lock);
    atomic_store_explicit(&st->health, (int)next, memory_order_relaxed);
    *before = cur;
    return next;
}

void ptc_health_reset(ptc_endpoint_status_t *st)
{
    atomic_store_explicit(&st->health, PTC_HEALTH_UNKNOWN, memory_order_relaxed);
    atomic_store_explicit(&st->check_successes, 0, memory_order_relaxed);
    atomic_store_explicit(&st->check_failures, 0, memory_order_relaxed);
    pthread_mutex_lock(&st->lock);
    st->check_result[0] = '\0';
    st->check_ok = false;
    st->check_wall_ms = 0;
    pthread_mutex_unlock(&st->lock);
}

const char *ptc_health_name(ptc_health_t h)
{
    switch (h) {
    case PTC_HEALTH_HEALTHY:
        return "healthy";
    case PTC_HEALTH_UNHEALTHY:
        return "unhealthy";
    default:
        return "unknown";
    }
}

void ptc_health_status_name(int status, char *buf, size_t len)
{
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    if (status >= 0 && (size_t)status < PTC_ARRAY_SIZE(names))
        snprintf(buf, len, "%s", names[status]);
    else
        snprintf(buf, len, "status %d", status);
}

/* ---- grpc.health.v1 messages (protobuf wire format by hand) ---- */

size_t ptc_health_encode_request(const char *service, uint8_t *buf, size_t cap)
{
    size_t slen = strlen(service), msg = 0, n = 5;

    if (slen > PTC_CONFIG_MAX_HEALTH_SERVICE)
        return 0;
    if (slen != 0)
        msg = 1 + (slen < 128 ? 1u : 2u) + slen; /* tag (field 1, length-delimited), varint length, bytes */
    if (cap < 5 + msg)
        return 0;
    buf[0] = 0; /* uncompressed */
    buf[1] = (uint8_t)(msg >> 24);
    buf[2] = (uint8_t)(msg >> 16);
    buf[3] = (uint8_t)(msg >> 8);
    buf[4] = (uint8_t)msg;
    if (slen != 0) {
        buf[n++] = 0x0a;
        if (slen >= 128) {
            buf[n++] = (uint8_t)(0x80 | (slen & 0x7f));
            buf[n++] = (uint8_t)(slen >> 7);
        } else {
            buf[n++] = (uint8_t)slen;
        }
        memcpy(buf + n, service, slen);
        n += slen;
    }
    return n;
}

/* A base-128 varint at *p (advanced past it); -1 when truncated or longer than 10 bytes. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*p == end)
            return -1;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
    }
    return -1;
}

int ptc_health_decode_response(const uint8_t *msg, size_t len, int *status)
{
    const uint8_t *p = msg, *end = msg + len;
    uint64_t key, v;

    *status = PTC_HEALTH_STATUS_UNKNOWN;
    while (p < end) {
        if (read_varint(&p, end, &key) != 0 || (key >> 3) == 0)
            return -1;
        switch (key & 7) {
        case 0: /* varint */
            if (read_varint(&p, end, &v) != 0)
                return -1;
            if ((key >> 3) == 1)
                *status = (int)(int32_t)(uint32_t)v; /* an enum is an int32: negative values are sign-extended */
            break;
        case 1: /* 64-bit */
            if ((key >> 3) == 1 || end - p < 8)
                return -1;
            p += 8;
            break;
        case 2: /* length-delimited */
            if ((key >> 3) == 1 || read_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return -1;
            p += v;
            break;
        case 5: /* 32-bit */
            if ((key >> 3) == 1 || end - p < 4)
                return -1;
            p += 4;
            break;
        default: /* groups (3, 4) and reserved wire types */
            return -1;
        }
    }
    return 0;
}
