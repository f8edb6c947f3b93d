/*
 * Configuration snapshots: see include/portico/snapshot.h.
 */
#include <stdio.h>
#include <stdlib.h>

#include "portico/access_log.h"
#include "portico/filter.h"
#include "portico/health.h"
#include "portico/snapshot.h"
#include "portico/tls.h"
#include "portico/worker.h"

static atomic_size_t live_count;

size_t ptc_request_headers_cap(const ptc_limits_config_t *lim)
{
    return (size_t)lim->max_headers + PTC_HTTP_HEADERS_MAX_FIELDS + PTC_FILTER_MAX_ADDED_HEADERS;
}

size_t ptc_head_block_size(const ptc_limits_config_t *lim)
{
    size_t head = ((size_t)lim->max_header_size + 15) & ~(size_t)15;
    size_t offs = (size_t)lim->max_headers * sizeof(ptc_head_off_t);
    size_t views = ptc_request_headers_cap(lim) * sizeof(ptc_header_t);
    return head + offs + views;
}

int ptc_snapshot_new(ptc_snapshot_t **out, ptc_config_t *cfg, uint64_t version, const ptc_snapshot_inputs_t *in, char *err,
                     size_t errlen)
{
    ptc_snapshot_t *s = calloc(1, sizeof(*s));
    int ret;

    if (s == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    /* what is derived points into the snapshot's own copy of the configuration: it moves in first */
    s->config = *cfg;
    const ptc_status_table_t *prev_status = in != NULL && in->prev != NULL ? in->prev->status : NULL;
    if ((ret = ptc_pipeline_new(&s->pipeline, &s->config, in, err, errlen)) != 0 ||
        (ptc_config_uses_tls(&s->config) && (ret = ptc_tls_contexts_new(&s->tls, &s->config, err, errlen)) != 0) ||
        (ret = ptc_status_table_new(&s->status, &s->config, prev_status)) != 0) {
        if (ret == PTC_ENOMEM && s->status == NULL)
            snprintf(err, errlen, "out of memory");
        ptc_tls_contexts_free(s->tls);
        ptc_pipeline_free(s->pipeline);
        free(s); /* *cfg still owns what s->config pointed to */
        return ret;
    }
    memset(cfg, 0, sizeof(*cfg));
    atomic_init(&s->_refs, 1);
    s->version = version;
    s->head_block_size = ptc_head_block_size(&s->config.limits);
    atomic_fetch_add(&live_count, 1);
    *out = s;
    return 0;
}

void ptc_snapshot_release(ptc_snapshot_t *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->_refs, 1, memory_order_acq_rel) != 1)
        return;
    ptc_access_log_release(s->access_log);
    ptc_tls_contexts_free(s->tls);
    ptc_pipeline_free(s->pipeline);
    ptc_status_table_free(s->status);
    ptc_config_dispose(&s->config);
    free(s);
    atomic_fetch_sub(&live_count, 1);
}

void ptc_snapshot_set(ptc_snapshot_t **slot, ptc_snapshot_t *s)
{
    if (*slot == s)
        return;
    if (s != NULL)
        ptc_snapshot_ref(s);
    ptc_snapshot_release(*slot);
    *slot = s;
}

size_t ptc_snapshot_live_count(void)
{
    return atomic_load(&live_count);
}
