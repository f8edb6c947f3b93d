/*
 * GET /metrics on the admin listener: the workers' records summed (include/portico/metrics.h) plus what the
 * control thread knows itself (configuration version and reloads, the access-log writers, the process).
 * Runs on the control thread; the workers keep running and are never locked.
 */
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "control_internal.h"
#include "portico/access_log.h"
#include "portico/health.h"
#include "portico/metrics.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

/* The endpoints of the running configuration from the shared health table (what GET /upstreams shows). */
static ptc_metrics_endpoint_t *collect_endpoints(const ptc_snapshot_t *snap, size_t *count)
{
    const ptc_config_t *cfg = &snap->config;
    const ptc_status_table_t *t = snap->status;
    uint64_t now = ptc_now_ms();
    size_t n = 0, k = 0;

    for (size_t i = 0; i < cfg->num_upstreams; i++)
        n += cfg->upstreams[i].num_endpoints;
    ptc_metrics_endpoint_t *e = calloc(n + 1, sizeof(*e));
    if (e == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        const ptc_upstream_config_t *uc = &cfg->upstreams[i];
        for (size_t j = 0; j < uc->num_endpoints; j++, k++) {
            ptc_endpoint_status_t *st = t->upstreams[i].endpoints[j];
            e[k] = (ptc_metrics_endpoint_t){
                .upstream = uc->name,
                .address = st->label,
                .health = ptc_health_name((ptc_health_t)atomic_load(&st->health)),
                .available = ptc_endpoint_available(st, &uc->health_check, now),
                .ejected = atomic_load(&st->ejected_until_ms) > now,
            };
        }
    }
    *count = k;
    return e;
}

void ptc__admin_metrics(ptc_control_t *ctl, struct evhttp_request *req)
{
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
    bool om = ptc_metrics_wants_openmetrics(accept);
    size_t n = ctl->workers != NULL ? ctl->nworkers : 0;
    ptc_metrics_source_t *src = calloc(n + 1, sizeof(*src));
    struct evbuffer *b = evbuffer_new();
    ptc_metrics_process_t p = {
        .config_version = ctl->snap->version,
        .reloads_ok = ctl->reloads_ok,
        .reloads_failed = ctl->reloads_failed,
        .workers = ctl->nworkers,
    };

    ptc_metrics_endpoint_t *endpoints = collect_endpoints(ctl->snap, &p.num_endpoints);
    p.endpoints = endpoints;
    if (src == NULL || b == NULL || endpoints == NULL) {
        free(endpoints);
        free(src);
        if (b != NULL)
            evbuffer_free(b);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++)
        src[i] = (ptc_metrics_source_t){&ctl->workers[i].metrics, &ctl->workers[i].filter_stats, &ctl->workers[i].limit_stats};
    ptc_access_log_totals_t t;
    ptc_access_log_totals(&t);
    p.access_log_bytes = t.bytes;
    p.access_log_write_errors = t.write_errors;
    p.access_log_lost = t.lost;
    p.access_log_reopens = t.reopens;
    ptc_metrics_read_process(&p);
    int rendered = ptc_metrics_render(b, src, n, &p, om);
    free(endpoints);
    if (rendered != 0) {
        free(src);
        evbuffer_free(b);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    free(src);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", om ? PTC_METRICS_OPENMETRICS_CTYPE : PTC_METRICS_TEXT_CTYPE);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, 200, NULL, b);
    evbuffer_free(b);
}
