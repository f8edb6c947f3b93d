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
#include "portico/metrics.h"
#include "portico/snapshot.h"
#include "portico/worker.h"

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

    if (src == NULL || b == NULL) {
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
    if (ptc_metrics_render(b, src, n, &p, om) != 0) {
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
