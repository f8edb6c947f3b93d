/*
 * The admin API: a small HTTP/1.1 server (libevent's evhttp) on its own address, served by the control
 * thread, never by the workers, and never forwarded upstream. Off unless `admin.address` (or --admin) is
 * set; with `admin.token_file` every request needs `Authorization: Bearer TOKEN`.
 *
 *   GET    /status                           version in service (per worker too), reloads done and failed,
 *                                            the last failure, filter outcomes, access-log lines and drops
 *   GET    /metrics                          Prometheus text format 0.0.4, or OpenMetrics 1.0 when Accept asks
 *                                            (src/control/scrape.c, include/portico/metrics.h)
 *   GET    /config                           the configuration in service (YAML; JSON with ?format=json or
 *                                            Accept: application/json), secrets redacted; ETag "VERSION"
 *   PUT    /config                           a whole new configuration (YAML or JSON body)
 *   POST   /config/cors/origins              add an allowed origin (body: the origin, or {"origin": "…"})
 *   DELETE /config/cors/origins/ORIGIN       remove one (ORIGIN percent-encoded; or ?origin=ORIGIN)
 *   PUT    /config/routes/N/upstream         point route N (in match order, as GET /config lists them) at
 *                                            another upstream (body: the name, or {"upstream": "…"}); the
 *                                            route may also be named by ?prefix=P or ?path=P instead of N
 *   PUT    /config/upstreams/NAME/endpoints  replace an upstream's endpoints (body: ["h:p", …] or h:p lines)
 *   GET    /live                             200 while the process runs (no token needed)
 *   GET    /ready                            200 when serving: listeners open, not draining, and every upstream
 *                                            with an endpoint that can take calls; 503 otherwise, with why
 *                                            (no token needed: probes carry none)
 *   GET    /upstreams                        per upstream and endpoint: addresses, connections, health, ejection,
 *                                            streams, waiting calls (JSON)
 *   POST   /drain                            drain as SIGTERM does, then exit 0; 202 at once, or with ?wait=1 an
 *                                            answer once the drain is done, just before the process exits
 *
 * Built with -DPTC_FAULT_INJECTION=ON (tests only; include/portico/fault.h) there is also
 *   POST   /debug/fail-alloc?n=N             the N-th allocation the workers make from now on fails
 *   DELETE /debug/fail-alloc                 stop; says whether it failed, its size and call stack
 *
 * Every change is validated whole and applied atomically, or refused with 400 (what is wrong, in the
 * loader's FILE:LINE: KEY: words), 404 (no such route, upstream or origin), 409 (the command line sets
 * it) or 412 (If-Match names another version than the one in service). A change answers once every
 * worker runs it: {"version": N, "changed": true, "persisted": true}. It is written back to the
 * configuration file (persisted), so that a restart keeps it.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <yaml.h>

#include "control_internal.h"
#include "portico/access_log.h"
#include "portico/fault.h"
#include "portico/worker.h"
#include "portico/jwt.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/health.h"

#define ADMIN_MAX_BODY (1024 * 1024)
#define ADMIN_MAX_HEADERS (64 * 1024)
#define ADMIN_TIMEOUT_S 30
#define ADMIN_MAX_ENDPOINTS 256

/* ---- answers ---- */

static void json_string(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(out, "\\%c", *p);
        else if (*p < 0x20)
            evbuffer_add_printf(out, "\\u%04x", *p);
        else
            evbuffer_add(out, p, 1);
    }
    evbuffer_add(out, "\"", 1);
}

static void reply(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, NULL, body);
}

static void reply_error(struct evhttp_request *req, int code, const char *message)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"error\": ");
    json_string(b, message);
    evbuffer_add_printf(b, "}\n");
    reply(req, code, "application/json", b);
    evbuffer_free(b);
}

static void reply_result(struct evhttp_request *req, const ptc_control_result_t *res)
{
    struct evbuffer *b = evbuffer_new();
    char etag[32];
    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"version\": %" PRIu64 ", \"changed\": %s, \"persisted\": %s", res->version,
                        res->changed ? "true" : "false", res->persisted ? "true" : "false");
    if (res->warning[0] != '\0') {
        evbuffer_add_printf(b, ", \"warning\": ");
        json_string(b, res->warning);
    }
    evbuffer_add_printf(b, "}\n");
    snprintf(etag, sizeof(etag), "\"%" PRIu64 "\"", res->version);
    evhttp_add_header(evhttp_request_get_output_headers(req), "ETag", etag);
    reply(req, 200, "application/json", b);
    evbuffer_free(b);
}

/* ---- requests ---- */

#ifdef PTC_FAULT_INJECTION
/* The call stack of the allocation that failed, as "object+0xOFFSET symbol" (addr2line -e object OFFSET). */
static void fault_frames_json(struct evbuffer *b, const ptc_fault_state_t *s)
{
    evbuffer_add_printf(b, "[");
    for (int i = 0; i < s->num_frames; i++) {
        Dl_info info;
        char line[512];
        if (dladdr(s->frames[i], &info) != 0 && info.dli_fname != NULL)
            snprintf(line, sizeof(line), "%s+0x%tx %s", info.dli_fname, (char *)s->frames[i] - (char *)info.dli_fbase,
                     info.dli_sname != NULL ? info.dli_sname : "?");
        else
            snprintf(line, sizeof(line), "%p", s->frames[i]);
        evbuffer_add_printf(b, "%s", i != 0 ? ", " : "");
        json_string(b, line);
    }
    evbuffer_add_printf(b, "]");
}

static void debug_fail_alloc(struct evhttp_request *req, enum evhttp_cmd_type m, struct evkeyvalq *q)
{
    if (m == EVHTTP_REQ_POST) {
        const char *n = evhttp_find_header(q, "n");
        char *end;
        errno = 0;
        long v = n != NULL ? strtol(n, &end, 10) : -1;
        if (n == NULL || end == n || *end != '\0' || errno != 0 || v < 0) {
            reply_error(req, 400, "fail-alloc: ?n=N (N >= 0) is required");
            return;
        }
        struct evbuffer *b = evbuffer_new();
        if (b == NULL) {
            evhttp_send_error(req, 500, NULL);
            return;
        }
        ptc_fault_arm(v);
        evbuffer_add_printf(b, "{\"armed\": %ld}\n", v);
        reply(req, 200, "application/json", b);
        evbuffer_free(b);
        return;
    }
    if (m != EVHTTP_REQ_DELETE) {
        reply_error(req, 405, "method not allowed on this resource");
        return;
    }
    ptc_fault_state_t s = ptc_fault_disarm();
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"fired\": %s, \"remaining\": %ld, \"size\": %zu, \"frames\": ", s.fired ? "true" : "false",
                        s.remaining, s.size);
    fault_frames_json(b, &s);
    evbuffer_add_printf(b, "}\n");
    reply(req, 200, "application/json", b);
    evbuffer_free(b);
}
#endif

static bool authorized(ptc_control_t *ctl, struct evhttp_request *req)
{
    const char *token = ctl->snap->config.admin.token;
    if (token == NULL)
        return true;
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    size_t tlen = strlen(token);
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    auth += 7;
    while (*auth == ' ')
        auth++;
    size_t alen = strlen(auth);
    while (alen > 0 && (auth[alen - 1] == ' ' || auth[alen - 1] == '\t'))
        alen--;
    /* constant time in the token's content (its length is not a secret worth a timing channel) */
    return alen == tlen && CRYPTO_memcmp(auth, token, tlen) == 0;
}

/* The request body as a NUL-terminated string (malloc'd); NULL when out of memory. */
static char *body_text(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(in);
    char *s = malloc(*len + 1);
    if (s == NULL)
        return NULL;
    evbuffer_copyout(in, s, *len);
    s[*len] = '\0';
    return s;
}

/*
 * A small body for an edit, as YAML (JSON is YAML): a scalar, a mapping holding `key`, or a sequence of
 * scalars. Fills up to cap values (pointers into doc, valid until yaml_document_delete). Returns how many,
 * or -1 with what is wrong in err.
 */
static int body_values(const char *text, size_t len, const char *key, yaml_document_t *doc, const char **vals, size_t cap, char *err,
                       size_t errlen)
{
    yaml_parser_t parser;
    int n = -1;

    memset(doc, 0, sizeof(*doc));
    if (!yaml_parser_initialize(&parser))
        return ptc_errorf(-1, err, errlen, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, doc)) {
        snprintf(err, errlen, "body: line %zu: %s", parser.problem_mark.line + 1, parser.problem != NULL ? parser.problem : "malformed");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (root != NULL && root->type == YAML_MAPPING_NODE) {
        yaml_node_t *v = NULL;
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (k != NULL && k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
                v = yaml_document_get_node(doc, p->value);
            else
                return ptc_errorf(-1, err, errlen, "body: unknown key \"%s\" (expected \"%s\")",
                                  k != NULL && k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?", key);
        }
        root = v;
    }
    if (root == NULL)
        return ptc_errorf(-1, err, errlen, "body: expected %s", key);
    if (root->type == YAML_SCALAR_NODE) {
        vals[0] = (const char *)root->data.scalar.value;
        n = 1;
    } else if (root->type == YAML_SEQUENCE_NODE) {
        n = 0;
        for (yaml_node_item_t *it = root->data.sequence.items.start; it < root->data.sequence.items.top; it++) {
            yaml_node_t *v = yaml_document_get_node(doc, *it);
            if (v == NULL || v->type != YAML_SCALAR_NODE)
                return ptc_errorf(-1, err, errlen, "body: %s[%d]: expected a string", key, n);
            if ((size_t)n == cap)
                return ptc_errorf(-1, err, errlen, "body: more than %zu values", cap);
            vals[n++] = (const char *)v->data.scalar.value;
        }
    } else {
        return ptc_errorf(-1, err, errlen, "body: %s: expected a string", key);
    }
    return n;
}

/* ---- edits ---- */

static int edit_add_origin(ptc_control_t *ctl, ptc_config_t *cfg, const void *arg, char *err, size_t errlen)
{
    (void)ctl;
    const char *origin = arg;
    char why[256];
    for (size_t i = 0; cfg->cors.enabled && i < cfg->cors.num_origins; i++)
        if (strcmp(cfg->cors.origins[i].text, origin) == 0)
            return 0; /* already there: nothing changes */
    if (ptc_config_add_allow_origin(cfg, origin, why, sizeof(why)) != 0)
        return ptc_errorf(400, err, errlen, "cors.allow_origins: \"%s\": %s", origin, why);
    return 0;
}

static int edit_remove_origin(ptc_control_t *ctl, ptc_config_t *cfg, const void *arg, char *err, size_t errlen)
{
    const char *origin = arg;
    for (size_t i = 0; i < ctl->opts->overrides->num_allow_origin; i++)
        if (strcmp(ctl->opts->overrides->allow_origin[i], origin) == 0)
            return ptc_errorf(409, err, errlen, "origin \"%s\" is allowed by --allow-origin on the command line", origin);
    if (ptc_config_remove_allow_origin(cfg, origin) != 0)
        return ptc_errorf(404, err, errlen, "cors.allow_origins: no origin \"%s\"", origin);
    return 0;
}

typedef struct st_route_edit_t {
    size_t index;
    const char *upstream;
} route_edit_t;

static int edit_route_upstream(ptc_control_t *ctl, ptc_config_t *cfg, const void *arg, char *err, size_t errlen)
{
    (void)ctl;
    const route_edit_t *e = arg;
    if (e->index >= cfg->num_routes)
        return ptc_errorf(404, err, errlen, "routes[%zu]: no such route (there are %zu)", e->index, cfg->num_routes);
    return ptc_config_set_route_upstream(cfg, e->index, e->upstream, err, errlen) != 0 ? 400 : 0;
}

typedef struct st_endpoints_edit_t {
    const char *upstream;
    ptc_hostport_t *addrs;
    size_t n;
} endpoints_edit_t;

static int edit_endpoints(ptc_control_t *ctl, ptc_config_t *cfg, const void *arg, char *err, size_t errlen)
{
    const endpoints_edit_t *e = arg;
    int i = ptc_config_find_upstream(cfg, e->upstream);
    if (i < 0)
        return ptc_errorf(404, err, errlen, "upstreams: no upstream \"%s\"", e->upstream);
    if (i == 0 && ctl->opts->overrides->num_upstream != 0)
        return ptc_errorf(409, err, errlen, "the endpoints of upstream \"%s\" are set by --upstream on the command line", e->upstream);
    if (ptc_config_set_upstream_endpoints(cfg, (size_t)i, e->addrs, e->n) != 0)
        return ptc_errorf(500, err, errlen, "out of memory");
    return 0;
}

/* ---- handlers ---- */

static void get_config(ptc_control_t *ctl, struct evhttp_request *req, const char *query)
{
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
    bool json = (query != NULL && strstr(query, "format=json") != NULL) || (accept != NULL && strstr(accept, "application/json") != NULL);
    char *text = NULL, etag[32];
    size_t len = 0;

    if (ptc_config_emit(&ctl->snap->config, json ? PTC_CONFIG_JSON : PTC_CONFIG_YAML, PTC_CONFIG_EMIT_REDACT, &text, &len) != 0) {
        reply_error(req, 500, "out of memory");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (b == NULL || evbuffer_add(b, text, len) != 0) {
        if (b != NULL)
            evbuffer_free(b);
        free(text);
        reply_error(req, 500, "out of memory");
        return;
    }
    free(text);
    snprintf(etag, sizeof(etag), "\"%" PRIu64 "\"", ctl->snap->version);
    evhttp_add_header(evhttp_request_get_output_headers(req), "ETag", etag);
    reply(req, 200, json ? "application/json" : "application/yaml", b);
    evbuffer_free(b);
}

/* `, "section": {"name": sum, ...}`: a stats struct at `offset` in each worker, read as an array of counters. */
static void add_counters(struct evbuffer *b, const ptc_control_t *ctl, const char *section, size_t offset, const char *const *names,
                         size_t n)
{
    evbuffer_add_printf(b, ", \"%s\": {", section);
    for (size_t k = 0; k < n; k++) {
        uint64_t sum = 0;
        for (size_t i = 0; i < ctl->nworkers; i++) {
            const ptc_counter_t *c = (const ptc_counter_t *)(const void *)((const char *)&ctl->workers[i] + offset) + k;
            sum += atomic_load_explicit(c, memory_order_relaxed);
        }
        evbuffer_add_printf(b, "%s\"%s\": %" PRIu64, k != 0 ? ", " : "", names[k], sum);
    }
    evbuffer_add_printf(b, "}");
}

static void get_status(ptc_control_t *ctl, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"version\": %" PRIu64 ", \"workers\": [", ctl->snap->version);
    for (size_t i = 0; i < ctl->nworkers; i++)
        evbuffer_add_printf(b, "%s%" PRIu64, i != 0 ? ", " : "", (uint64_t)atomic_load(&ctl->workers[i].applied_version));
    evbuffer_add_printf(b, "], \"reloads\": {\"ok\": %" PRIu64 ", \"failed\": %" PRIu64 "}, \"last_error\": ", ctl->reloads_ok,
                        ctl->reloads_failed);
    if (ctl->last_error[0] != '\0')
        json_string(b, ctl->last_error);
    else
        evbuffer_add_printf(b, "null");
    /* the filters' outcomes and the limits' refusals summed over the workers (each worker writes only its own) */
    static const char *const filter_names[] = {
#define XX(name, _) #name,
        PTC_FILTER_STATS_MAP(XX)
#undef XX
    };
    static const char *const limit_names[] = {
#define XX(name, _) #name,
        PTC_LIMIT_STATS_MAP(XX)
#undef XX
    };
    add_counters(b, ctl, "filters", offsetof(ptc_worker_t, filter_stats), filter_names, PTC_ARRAY_SIZE(filter_names));
    add_counters(b, ctl, "limits", offsetof(ptc_worker_t, limit_stats), limit_names, PTC_ARRAY_SIZE(limit_names));
    uint64_t lines = 0, dropped = 0;
    ptc_access_log_totals_t t;
    for (size_t i = 0; i < ctl->nworkers && ctl->workers != NULL; i++) {
        lines += atomic_load_explicit(&ctl->workers[i].metrics.access_log_lines, memory_order_relaxed);
        dropped += atomic_load_explicit(&ctl->workers[i].metrics.access_log_dropped, memory_order_relaxed);
    }
    ptc_access_log_totals(&t);
    evbuffer_add_printf(b,
                        ", \"access_log\": {\"enabled\": %s, \"lines\": %" PRIu64 ", \"dropped\": %" PRIu64 ", \"lost\": %" PRIu64
                        ", \"bytes\": %" PRIu64 ", \"write_errors\": %" PRIu64 ", \"reopens\": %" PRIu64 "}",
                        ctl->snap->access_log != NULL ? "true" : "false", lines, dropped, t.lost, t.bytes, t.write_errors, t.reopens);
    evbuffer_add_printf(b, ", \"memory\": {\"trims\": %" PRIu64 "}", ctl->memory_trims);
    evbuffer_add_printf(b, ", \"jwt_signature_checks\": %" PRIu64 "}\n", ptc_jwt_signature_checks());
    reply(req, 200, "application/json", b);
    evbuffer_free(b);
}

/* ---- health, readiness, drain ---- */

static void get_live(ptc_control_t *ctl, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"live\": true, \"draining\": %s, \"version\": %" PRIu64 "}\n", ctl->draining ? "true" : "false",
                        ctl->snap->version);
    reply(req, 200, "application/json", b);
    evbuffer_free(b);
}

static void get_ready(ptc_control_t *ctl, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    char why[PTC_CONTROL_READY_REASONS][200];
    size_t n = ptc__control_ready(ctl, why, PTC_CONTROL_READY_REASONS);

    if (b == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"ready\": %s, \"reasons\": [", n == 0 ? "true" : "false");
    for (size_t i = 0; i < n && i < PTC_CONTROL_READY_REASONS; i++) {
        evbuffer_add_printf(b, "%s", i != 0 ? ", " : "");
        json_string(b, why[i]);
    }
    evbuffer_add_printf(b, "]}\n");
    reply(req, n == 0 ? 200 : 503, "application/json", b);
    evbuffer_free(b);
}

/* "2026-01-02T03:04:05.678Z" for Unix ms; null for 0. */
static void json_time(struct evbuffer *b, uint64_t ms)
{
    char text[40];
    struct tm tm;
    time_t t = (time_t)(ms / 1000);
    if (ms == 0 || gmtime_r(&t, &tm) == NULL || strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        evbuffer_add_printf(b, "null");
        return;
    }
    evbuffer_add_printf(b, "\"%s.%03uZ\"", text, (unsigned)(ms % 1000));
}

static void json_string_or_null(struct evbuffer *b, const char *s)
{
    if (s[0] == '\0')
        evbuffer_add_printf(b, "null");
    else
        json_string(b, s);
}

static uint64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void endpoint_json(struct evbuffer *b, ptc_endpoint_status_t *st, const ptc_upstream_config_t *uc, uint64_t now,
                          uint64_t wall)
{
    ptc_endpoint_status_t copy; /* the texts, copied under the lock */
    uint64_t until = atomic_load(&st->ejected_until_ms);
    int ready = atomic_load(&st->conns_ready), connecting = atomic_load(&st->conns_connecting);
    const char *state = until > now                        ? "ejected"
                        : ready > 0                        ? "ready"
                        : connecting > 0                   ? "connecting"
                        : atomic_load(&st->connect_failed) ? "failed"
                                                           : "idle";

    pthread_mutex_lock(&st->lock);
    memcpy(copy.check_result, st->check_result, sizeof(copy.check_result));
    copy.check_ok = st->check_ok;
    copy.check_wall_ms = st->check_wall_ms;
    memcpy(copy.last_error, st->last_error, sizeof(copy.last_error));
    memcpy(copy.eject_reason, st->eject_reason, sizeof(copy.eject_reason));
    memcpy(copy.resolved, st->resolved, sizeof(copy.resolved));
    copy.num_resolved = st->num_resolved;
    memcpy(copy.dns_error, st->dns_error, sizeof(copy.dns_error));
    copy.resolved_wall_ms = st->resolved_wall_ms;
    pthread_mutex_unlock(&st->lock);

    evbuffer_add_printf(b, "{\"address\": ");
    json_string(b, st->label);
    evbuffer_add_printf(b, ", \"resolved\": [");
    struct in_addr a4;
    if (strchr(st->addr.host, ':') != NULL || inet_pton(AF_INET, st->addr.host, &a4) == 1)
        json_string(b, st->addr.host); /* an address resolves to itself */
    for (size_t i = 0; i < copy.num_resolved && i < PTC_HEALTH_MAX_RESOLVED; i++) {
        evbuffer_add_printf(b, "%s", i != 0 ? ", " : "");
        json_string(b, copy.resolved[i]);
    }
    evbuffer_add_printf(b, "], \"resolved_at\": ");
    json_time(b, copy.resolved_wall_ms);
    evbuffer_add_printf(b, ", \"dns_error\": ");
    json_string_or_null(b, copy.dns_error);
    evbuffer_add_printf(b, ", \"state\": \"%s\", \"connections\": {\"ready\": %d, \"connecting\": %d}", state, ready, connecting);
    evbuffer_add_printf(
        b, ", \"health\": \"%s\", \"available\": %s, \"last_check\": ", ptc_health_name((ptc_health_t)atomic_load(&st->health)),
        ptc_endpoint_available(st, &uc->health_check, now) ? "true" : "false");
    if (copy.check_wall_ms == 0) {
        evbuffer_add_printf(b, "null");
    } else {
        evbuffer_add_printf(b, "{\"ok\": %s, \"result\": ", copy.check_ok ? "true" : "false");
        json_string(b, copy.check_result);
        evbuffer_add_printf(b, ", \"time\": ");
        json_time(b, copy.check_wall_ms);
        evbuffer_add_printf(b, ", \"age_ms\": %" PRIu64 "}", wall > copy.check_wall_ms ? wall - copy.check_wall_ms : 0);
    }
    evbuffer_add_printf(b, ", \"checks_in_a_row\": {\"ok\": %u, \"failed\": %u}", atomic_load(&st->check_successes),
                        atomic_load(&st->check_failures));
    evbuffer_add_printf(b, ", \"ejected\": %s, \"ejected_for_ms\": %" PRIu64 ", \"ejections\": %" PRIu64 ", \"eject_reason\": ",
                        until > now ? "true" : "false", until > now ? until - now : 0, (uint64_t)atomic_load(&st->ejections));
    json_string_or_null(b, copy.eject_reason);
    evbuffer_add_printf(b, ", \"consecutive_failures\": %u, \"active_streams\": %d, \"last_error\": ",
                        atomic_load(&st->consecutive_failures), atomic_load(&st->active_streams));
    json_string_or_null(b, copy.last_error);
    evbuffer_add_printf(b, "}");
}

static void get_upstreams(ptc_control_t *ctl, struct evhttp_request *req)
{
    const ptc_config_t *cfg = &ctl->snap->config;
    const ptc_status_table_t *t = ctl->snap->status;
    struct evbuffer *b = evbuffer_new();
    uint64_t now = ptc_now_ms(), wall = wall_now_ms();

    if (b == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"version\": %" PRIu64 ", \"upstreams\": [", ctl->snap->version);
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        const ptc_upstream_config_t *uc = &cfg->upstreams[i];
        const ptc_health_check_config_t *hc = &uc->health_check;
        size_t available = 0;
        for (size_t j = 0; j < uc->num_endpoints; j++)
            available += ptc_endpoint_available(t->upstreams[i].endpoints[j], hc, now);
        evbuffer_add_printf(b, "%s{\"name\": ", i != 0 ? ", " : "");
        json_string(b, uc->name);
        evbuffer_add_printf(b, ", \"balancing\": \"%s\", \"health_check\": ",
                            uc->balancing == PTC_BALANCE_LEAST_REQUEST ? "least_request" : "round_robin");
        if (hc->enabled) {
            evbuffer_add_printf(b, "{\"service\": ");
            json_string(b, hc->service != NULL ? hc->service : "");
            evbuffer_add_printf(b,
                                ", \"interval_ms\": %" PRIu64 ", \"timeout_ms\": %" PRIu64 ", \"healthy_threshold\": %" PRIu32
                                ", \"unhealthy_threshold\": %" PRIu32 "}",
                                hc->interval_ms, hc->timeout_ms, hc->healthy_threshold, hc->unhealthy_threshold);
        } else {
            evbuffer_add_printf(b, "null");
        }
        evbuffer_add_printf(b, ", \"outlier\": ");
        if (uc->outlier.enabled)
            evbuffer_add_printf(b, "{\"consecutive_failures\": %" PRIu32 ", \"ejection_ms\": %" PRIu64 "}",
                                uc->outlier.consecutive_failures, uc->outlier.ejection_ms);
        else
            evbuffer_add_printf(b, "null");
        evbuffer_add_printf(b,
                            ", \"dns_refresh_ms\": %" PRIu64 ", \"pending\": %ld, \"available_endpoints\": %zu, \"endpoints\": [",
                            uc->dns_refresh_ms, atomic_load(&t->upstreams[i].up->pending), available);
        for (size_t j = 0; j < uc->num_endpoints; j++) {
            evbuffer_add_printf(b, "%s", j != 0 ? ", " : "");
            endpoint_json(b, t->upstreams[i].endpoints[j], uc, now, wall);
        }
        evbuffer_add_printf(b, "]}");
    }
    evbuffer_add_printf(b, "]}\n");
    reply(req, 200, "application/json", b);
    evbuffer_free(b);
}

static void post_drain(ptc_control_t *ctl, struct evhttp_request *req, const struct evkeyvalq *q)
{
    const char *wait = evhttp_find_header(q, "wait");
    bool waiting = wait != NULL && (strcmp(wait, "1") == 0 || strcmp(wait, "true") == 0);
    const ptc_timeouts_config_t *t = &ctl->snap->config.timeouts;

    ptc__control_drain(ctl, "admin API: POST /drain");
    if (waiting && ptc__control_drain_wait(ctl, req) == 0)
        return; /* answered when the drain is done */
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"draining\": true, \"drain_delay_ms\": %" PRIu64 ", \"drain_timeout_ms\": %" PRIu64 "}\n",
                        t->drain_delay_ms, t->drain_ms);
    reply(req, 202, "application/json", b);
    evbuffer_free(b);
}

/* A change, answered with its result or its error. */
static void change(ptc_control_t *ctl, struct evhttp_request *req, ptc_control_edit_cb edit, const void *arg, ptc_config_t *next,
                   const char *trigger)
{
    ptc_control_result_t res;
    char err[1024];
    int status = ptc__control_change(ctl, edit, arg, next, trigger, &res, err, sizeof(err));
    if (status != 0) {
        ptc_log_warn("admin API: %s refused (%d): %s", trigger, status, err);
        reply_error(req, status, err);
        return;
    }
    reply_result(req, &res);
}

static void put_config(ptc_control_t *ctl, struct evhttp_request *req)
{
    ptc_config_t next = {0};
    char err[1024];
    size_t len;
    char *text = body_text(req, &len);

    if (text == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    /* relative file names in the body are relative to the configuration file, as in the file itself */
    if (ptc_config_init_default(&next) != 0 ||
        ptc_config_load_string_in(&next, "PUT /config", ctl->config.base_dir, text, len, err, sizeof(err)) != 0) {
        if (next.source == NULL)
            snprintf(err, sizeof(err), "out of memory");
        ptc_config_dispose(&next);
        free(text);
        ptc__control_failed(ctl, "admin API: PUT /config", err);
        reply_error(req, 400, err);
        return;
    }
    free(text);
    change(ctl, req, NULL, NULL, &next, "admin API: PUT /config");
}

/* The route a request names: /config/routes/N/upstream, or ?prefix= / ?path= with /config/routes/upstream. */
static int route_index(ptc_control_t *ctl, const char *rest, const struct evkeyvalq *q, size_t *index, char *err, size_t errlen)
{
    if (strcmp(rest, "upstream") == 0) {
        const char *prefix = evhttp_find_header(q, "prefix"), *path = evhttp_find_header(q, "path");
        if ((prefix == NULL) == (path == NULL))
            return ptc_errorf(400, err, errlen, "name the route: /config/routes/N/upstream, or ?prefix=P or ?path=P");
        int i = ptc_config_find_route(&ctl->config, prefix != NULL ? "prefix" : "path", prefix != NULL ? prefix : path);
        if (i < 0)
            return ptc_errorf(404, err, errlen, "routes: no route with %s \"%s\"", prefix != NULL ? "prefix" : "path",
                              prefix != NULL ? prefix : path);
        *index = (size_t)i;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long v = strtoul(rest, &end, 10);
    if (end == rest || strcmp(end, "/upstream") != 0 || errno != 0 || rest[0] == '-' || rest[0] == '+')
        return ptc_errorf(404, err, errlen, "no such resource");
    *index = (size_t)v;
    return 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    ptc_control_t *ctl = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *rawpath = uri != NULL ? evhttp_uri_get_path(uri) : NULL, *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    struct evkeyvalq q = {0};
    char *path = NULL, *text = NULL, err[1024];
    yaml_document_t doc;
    bool have_doc = false;

    TAILQ_INIT(&q);
    if (rawpath == NULL || (path = evhttp_uridecode(rawpath, 0, NULL)) == NULL) {
        reply_error(req, 400, "malformed request target");
        return;
    }
    if (query != NULL && evhttp_parse_query_str(query, &q) != 0) {
        reply_error(req, 400, "malformed query string");
        goto exit;
    }
    /* probes carry no token: liveness and readiness tell nothing worth protecting */
    if (strcmp(path, "/live") == 0 || strcmp(path, "/ready") == 0) {
        if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD)
            goto not_allowed;
        if (path[1] == 'l')
            get_live(ctl, req);
        else
            get_ready(ctl, req);
        goto exit;
    }
    if (!authorized(ctl, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer realm=\"portico admin\"");
        ptc_log_warn("admin API: %s %s refused: missing or wrong bearer token", m == EVHTTP_REQ_GET ? "GET" : "request", path);
        reply_error(req, 401, "a valid bearer token is required (Authorization: Bearer TOKEN)");
        goto exit;
    }
    const char *ifm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-Match");
    if (ifm != NULL && m != EVHTTP_REQ_GET && strcmp(ifm, "*") != 0) {
        char cur[32];
        snprintf(cur, sizeof(cur), "\"%" PRIu64 "\"", ctl->snap->version);
        if (strcmp(ifm, cur) != 0 && strcmp(ifm, cur + 1) != 0 && !(strlen(ifm) == strlen(cur) - 2 && strncmp(ifm, cur + 1, strlen(ifm)) == 0)) {
            snprintf(err, sizeof(err), "If-Match %s: version %" PRIu64 " is in service", ifm, ctl->snap->version);
            reply_error(req, 412, err);
            goto exit;
        }
    }

    size_t len;
    if (strcmp(path, "/metrics") == 0) {
        if (m != EVHTTP_REQ_GET)
            goto not_allowed;
        ptc__admin_metrics(ctl, req);
        goto exit;
    }
#ifdef PTC_FAULT_INJECTION
    if (strcmp(path, "/debug/fail-alloc") == 0) {
        debug_fail_alloc(req, m, &q);
        goto exit;
    }
#endif
    if (strcmp(path, "/upstreams") == 0) {
        if (m != EVHTTP_REQ_GET)
            goto not_allowed;
        get_upstreams(ctl, req);
        goto exit;
    }
    if (strcmp(path, "/drain") == 0) {
        if (m != EVHTTP_REQ_POST)
            goto not_allowed;
        post_drain(ctl, req, &q);
        goto exit;
    }
    if (strcmp(path, "/status") == 0) {
        if (m != EVHTTP_REQ_GET)
            goto not_allowed;
        get_status(ctl, req);
        goto exit;
    }
    if (strcmp(path, "/config") == 0) {
        if (m == EVHTTP_REQ_GET)
            get_config(ctl, req, query);
        else if (m == EVHTTP_REQ_PUT)
            put_config(ctl, req);
        else
            goto not_allowed;
        goto exit;
    }
    if (strcmp(path, "/config/cors/origins") == 0 || strncmp(path, "/config/cors/origins/", 21) == 0) {
        const char *origin = path[20] == '/' ? path + 21 : evhttp_find_header(&q, "origin");
        const char *vals[1];
        if (m == EVHTTP_REQ_POST && path[20] == '\0') {
            if ((text = body_text(req, &len)) == NULL)
                goto nomem;
            have_doc = true;
            if (body_values(text, len, "origin", &doc, vals, 1, err, sizeof(err)) != 1) {
                reply_error(req, 400, err);
                goto exit;
            }
            change(ctl, req, edit_add_origin, vals[0], NULL, "admin API: add origin");
        } else if (m == EVHTTP_REQ_DELETE) {
            if (origin == NULL || origin[0] == '\0') {
                reply_error(req, 400, "name the origin: DELETE /config/cors/origins/ORIGIN (percent-encoded) or ?origin=ORIGIN");
                goto exit;
            }
            change(ctl, req, edit_remove_origin, origin, NULL, "admin API: remove origin");
        } else {
            goto not_allowed;
        }
        goto exit;
    }
    if (strncmp(path, "/config/routes/", 15) == 0) {
        route_edit_t e;
        const char *vals[1];
        int status;
        if ((status = route_index(ctl, path + 15, &q, &e.index, err, sizeof(err))) != 0) {
            reply_error(req, status, err);
            goto exit;
        }
        if (m != EVHTTP_REQ_PUT)
            goto not_allowed;
        if ((text = body_text(req, &len)) == NULL)
            goto nomem;
        have_doc = true;
        if (body_values(text, len, "upstream", &doc, vals, 1, err, sizeof(err)) != 1) {
            reply_error(req, 400, err);
            goto exit;
        }
        e.upstream = vals[0];
        change(ctl, req, edit_route_upstream, &e, NULL, "admin API: set route upstream");
        goto exit;
    }
    if (strncmp(path, "/config/upstreams/", 18) == 0) {
        const char *name = path + 18, *slash = strchr(name, '/');
        if (slash == NULL || strcmp(slash, "/endpoints") != 0 || slash == name) {
            reply_error(req, 404, "no such resource: /config/upstreams/NAME/endpoints");
            goto exit;
        }
        if (m != EVHTTP_REQ_PUT)
            goto not_allowed;
        char upname[PTC_CONFIG_MAX_NAME + 1];
        snprintf(upname, sizeof(upname), "%.*s", (int)PTC_MIN((size_t)(slash - name), (size_t)PTC_CONFIG_MAX_NAME), name);
        const char *vals[ADMIN_MAX_ENDPOINTS];
        ptc_hostport_t addrs[ADMIN_MAX_ENDPOINTS];
        if ((text = body_text(req, &len)) == NULL)
            goto nomem;
        have_doc = true;
        int n = body_values(text, len, "endpoints", &doc, vals, ADMIN_MAX_ENDPOINTS, err, sizeof(err));
        if (n <= 0) {
            reply_error(req, 400, n == 0 ? "endpoints: must not be empty" : err);
            goto exit;
        }
        size_t parsed = 0;
        for (; parsed < (size_t)n; parsed++) {
            if (ptc_hostport_parse(vals[parsed], &addrs[parsed]) != 0) {
                snprintf(err, sizeof(err), "endpoints[%zu]: invalid address \"%s\": expected HOST:PORT or [IPV6]:PORT", parsed, vals[parsed]);
                break;
            }
        }
        if (parsed == (size_t)n) {
            endpoints_edit_t e = {upname, addrs, parsed};
            change(ctl, req, edit_endpoints, &e, NULL, "admin API: set upstream endpoints");
        } else {
            reply_error(req, 400, err);
        }
        for (size_t i = 0; i < parsed; i++)
            ptc_hostport_dispose(&addrs[i]);
        goto exit;
    }
    reply_error(req, 404, "no such resource (see the admin API in README.md)");
    goto exit;

not_allowed:
    reply_error(req, 405, "method not allowed on this resource");
    goto exit;
nomem:
    reply_error(req, 500, "out of memory");
exit:
    if (have_doc)
        yaml_document_delete(&doc);
    evhttp_clear_headers(&q);
    free(text);
    free(path);
}

/* ---- life cycle ---- */

void ptc__admin_close(ptc_control_t *ctl)
{
    if (ctl->http != NULL)
        evhttp_free(ctl->http);
    ctl->http = NULL;
    ctl->http_sock = NULL;
    ptc_hostport_dispose(&ctl->http_addr);
}

int ptc__admin_reconcile(ptc_control_t *ctl, char *err, size_t errlen)
{
    const ptc_hostport_t *want = ctl->snap->config.admin.address;

    if (want == NULL) {
        if (ctl->http != NULL)
            ptc_log_info("admin API: closed");
        ptc__admin_close(ctl);
        return 0;
    }
    if (ctl->http != NULL && ptc_hostport_eq(want, &ctl->http_addr))
        return 0;
    struct evhttp *http = evhttp_new(ctl->base);
    if (http == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    evhttp_set_max_body_size(http, ADMIN_MAX_BODY);
    evhttp_set_max_headers_size(http, ADMIN_MAX_HEADERS);
    evhttp_set_timeout(http, ADMIN_TIMEOUT_S);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE);
    evhttp_set_gencb(http, on_request, ctl);
    struct evhttp_bound_socket *sock = evhttp_bind_socket_with_handle(http, want->host, want->port);
    if (sock == NULL) {
        int e = errno;
        evhttp_free(http);
        return ptc_errorf(PTC_EIO, err, errlen, "admin.address: cannot listen on %s:%u: %s", want->host, want->port, strerror(e));
    }
    ptc_hostport_t addr = {strdup(want->host), want->port};
    if (addr.host == NULL) {
        evhttp_free(http);
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    }
    ptc__admin_close(ctl);
    ctl->http = http;
    ctl->http_sock = sock;
    ctl->http_addr = addr;
    ptc_log_info("admin API listening on %s:%u%s", addr.host, addr.port,
                 ctl->snap->config.admin.token != NULL ? " (bearer token required)" : "");
    return 0;
}
