/*
 * Metrics (include/portico/metrics.h): recording on the worker's thread, the scrape on the control thread.
 *
 * Names: the per-method families are go-grpc-prometheus's (grpc_server_started_total, _handled_total,
 * _msg_received_total, _msg_sent_total, _handling_seconds, labels grpc_service, grpc_method, grpc_type,
 * grpc_code with Go's code names), unprefixed, so that the dashboards and alerts written for gRPC servers
 * work on the gateway as they are (the job and instance labels tell the gateway from the servers behind
 * it). Everything that is the gateway's own is portico_*, and the process figures are the process_*
 * names every Prometheus client library uses.
 *
 * The scrape sums the workers: methods are merged by path into a table of the control thread's own
 * (sorted, so the output is stable), everything else is added slot by slot.
 */
#include <dirent.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "portico/metrics.h"

const uint64_t ptc_hist_bounds_us[PTC_HIST_BUCKETS] = {500,    1000,    2500,    5000,    10000,   25000,    50000,    100000,
                                                      250000, 500000,  1000000, 2500000, 5000000, 10000000, 30000000, 60000000};

const char *const ptc_transport_names[PTC_TRANSPORT_COUNT] = {"http1", "h2", "websocket"};
const char *const ptc_proto_names[PTC_PROTO_COUNT] = {"grpc-web", "grpc-web-text", "grpc", "connect"};

ptc_proto_t ptc_proto_of(ptc_ctype_kind_t kind)
{
    switch (kind) {
    case PTC_CT_GRPC_WEB_TEXT:
        return PTC_PROTO_GRPC_WEB_TEXT;
    case PTC_CT_GRPC:
        return PTC_PROTO_GRPC;
    case PTC_CT_CONNECT:
    case PTC_CT_CONNECT_STREAM:
        return PTC_PROTO_CONNECT;
    default:
        return PTC_PROTO_GRPC_WEB;
    }
}
const char *const ptc_upstream_state_names[PTC_UPSTREAM_CONN_STATES] = {"connecting", "ready", "draining"};
const int ptc_local_statuses[PTC_LOCAL_STATUS_SLOTS - 1] = {200, 204, 400, 401, 403, 404, 405, 409, 413, 414,
                                                             415, 426, 429, 431, 499, 500, 501, 503, 504};

const char *ptc_grpc_code_name(int code)
{
    static const char *const names[PTC_GRPC_CODES] = {
        "OK",           "Canceled",         "Unknown",           "InvalidArgument", "DeadlineExceeded", "NotFound",
        "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",       "OutOfRange",
        "Unimplemented", "Internal",         "Unavailable",       "DataLoss",        "Unauthenticated"};
    return code >= 0 && code < PTC_GRPC_CODES ? names[code] : "Unknown";
}

static int code_slot(int code)
{
    return code >= 0 && code < PTC_GRPC_CODES ? code : 2; /* UNKNOWN */
}

/* ---- recording (the worker's thread) ---- */

void ptc_histogram_observe(ptc_histogram_t *h, uint64_t us)
{
    size_t i = 0;
    while (i < PTC_HIST_BUCKETS && us > ptc_hist_bounds_us[i])
        i++;
    PTC_STAT_INC(h->bucket[i]);
    PTC_STAT_ADD(h->sum_us, us);
}

static ptc_method_stats_t *entry_at(const ptc_worker_metrics_t *m, uint32_t i)
{
    return &m->chunks[i / PTC_METRICS_CHUNK][i % PTC_METRICS_CHUNK];
}

/* "/pkg.Service/Method": what a gRPC client sends; anything else is counted as "other" (see metrics.h). */
static bool method_path_ok(ptc_iovec_t p)
{
    size_t slashes = 0, last = 0;
    if (p.len < 4 || p.base[0] != '/')
        return false;
    for (size_t i = 0; i < p.len; i++) {
        char c = p.base[i];
        if (c == '/') {
            if (i == last + 1 && i != 0) /* an empty part */
                return false;
            slashes++;
            last = i;
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                     c == '-')) {
            return false;
        }
    }
    return slashes == 2 && last != p.len - 1;
}

/* The index's hash of a path: eight bytes a step (every call looks its method up), then the last few. */
static uint32_t hash(ptc_iovec_t s)
{
    uint64_t h = 0xcbf29ce484222325ull, w;
    size_t i = 0;
    for (; i + 8 <= s.len; i += 8) {
        memcpy(&w, s.base + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < s.len; i++)
        h = (h ^ (uint8_t)s.base[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

/* Puts entry i into the index (which has room). */
static void index_put(uint32_t *index, size_t cap, ptc_iovec_t path, uint32_t i)
{
    size_t slot = hash(path) & (cap - 1);
    while (index[slot] != 0)
        slot = (slot + 1) & (cap - 1);
    index[slot] = i + 1;
}

/* Keeps the index at most half full; false when out of memory. */
static bool index_grow(ptc_worker_metrics_t *m, uint32_t n)
{
    if (m->index != NULL && (size_t)(n + 1) * 2 <= m->index_cap)
        return true;
    size_t cap = m->index_cap != 0 ? m->index_cap * 2 : 64;
    uint32_t *index = calloc(cap, sizeof(*index));
    if (index == NULL)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const ptc_method_stats_t *e = entry_at(m, i);
        index_put(index, cap, ptc_iov(e->path, e->path_len), i);
    }
    free(m->index);
    m->index = index;
    m->index_cap = cap;
    return true;
}

ptc_method_stats_t *ptc_metrics_method(ptc_worker_metrics_t *m, ptc_iovec_t path, uint32_t max_methods)
{
    uint32_t n = atomic_load_explicit(&m->num_methods, memory_order_relaxed); /* only this thread writes it */

    if (m->index != NULL) {
        for (size_t slot = hash(path) & (m->index_cap - 1); m->index[slot] != 0; slot = (slot + 1) & (m->index_cap - 1)) {
            ptc_method_stats_t *e = entry_at(m, m->index[slot] - 1);
            if (ptc_iov_eq(ptc_iov(e->path, e->path_len), path))
                return e;
        }
    }
    if (n >= max_methods || n >= PTC_METRICS_MAX_METHODS || !method_path_ok(path))
        return &m->other;
    if (m->chunks[n / PTC_METRICS_CHUNK] == NULL &&
        (m->chunks[n / PTC_METRICS_CHUNK] = calloc(PTC_METRICS_CHUNK, sizeof(ptc_method_stats_t))) == NULL)
        return &m->other;
    ptc_method_stats_t *e = entry_at(m, n);
    if (!index_grow(m, n) || (e->path = malloc(path.len + 1)) == NULL)
        return &m->other;
    memcpy(e->path, path.base, path.len);
    e->path[path.len] = '\0';
    e->path_len = path.len;
    index_put(m->index, m->index_cap, path, n);
    atomic_store_explicit(&m->num_methods, n + 1, memory_order_release); /* the scrape may read it now */
    return e;
}

ptc_upstream_stats_t *ptc_metrics_upstream(ptc_worker_metrics_t *m, const char *name)
{
    uint32_t n = atomic_load_explicit(&m->num_upstreams, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(m->upstreams[i].name, name) == 0)
            return &m->upstreams[i];
    if (n == PTC_METRICS_MAX_UPSTREAMS || strlen(name) > PTC_CONFIG_MAX_NAME || name[0] == '\0')
        return &m->upstreams[PTC_METRICS_MAX_UPSTREAMS];
    strcpy(m->upstreams[n].name, name);
    atomic_store_explicit(&m->num_upstreams, n + 1, memory_order_release);
    return &m->upstreams[n];
}

void ptc_metrics_dispose(ptc_worker_metrics_t *m)
{
    for (size_t c = 0; c < PTC_ARRAY_SIZE(m->chunks) && m->chunks[c] != NULL; c++) {
        for (size_t i = 0; i < PTC_METRICS_CHUNK; i++)
            free(m->chunks[c][i].path);
        free(m->chunks[c]);
    }
    free(m->index);
    memset(m, 0, sizeof(*m));
}

void ptc_metrics_call_started(ptc_worker_metrics_t *m, ptc_method_stats_t *method)
{
    PTC_STAT_INC(m->calls_started);
    PTC_STAT_INC(method->started);
}

static void method_ended(ptc_method_stats_t *e, const ptc_call_record_t *r)
{
    uint64_t shape = (r->msgs_in > 1 ? PTC_SHAPE_CLIENT_STREAM : 0) | (r->msgs_out > 1 ? PTC_SHAPE_SERVER_STREAM : 0);
    uint64_t cur = atomic_load_explicit(&e->shape, memory_order_relaxed);
    if ((cur | shape) != cur)
        atomic_store_explicit(&e->shape, cur | shape, memory_order_relaxed);
    PTC_STAT_INC(e->handled[code_slot(r->grpc_status)]);
    PTC_STAT_ADD(e->msg_received, r->msgs_in);
    PTC_STAT_ADD(e->msg_sent, r->msgs_out);
    ptc_histogram_observe(&e->handling, r->duration_us);
}

void ptc_metrics_call_ended(ptc_worker_metrics_t *m, const ptc_call_record_t *r)
{
    ptc_transport_stats_t *t = &m->transports[r->transport][r->proto];

    PTC_STAT_INC(m->calls_ended);
    if (r->method != NULL)
        method_ended(r->method, r);
    ptc_histogram_observe(&t->duration, r->duration_us);
    PTC_STAT_ADD(t->bytes_in, r->bytes_in);
    PTC_STAT_ADD(t->bytes_out, r->bytes_out);
    PTC_STAT_ADD(t->msgs_in, r->msgs_in);
    PTC_STAT_ADD(t->msgs_out, r->msgs_out);
    if (r->upstream != NULL)
        ptc_histogram_observe(&ptc_metrics_upstream(m, r->upstream)->duration, r->upstream_us);
}

void ptc_metrics_local(ptc_worker_metrics_t *m, const ptc_call_record_t *r)
{
    size_t slot = 0;
    while (slot < PTC_ARRAY_SIZE(ptc_local_statuses) && ptc_local_statuses[slot] != r->http_status)
        slot++;
    PTC_STAT_INC(m->local[slot][r->grpc_status >= 0 ? code_slot(r->grpc_status) : PTC_GRPC_CODES]);
    if (r->method != NULL && r->grpc_status >= 0) { /* a gRPC error for a routed method: the method's call, answered here */
        PTC_STAT_INC(r->method->started);
        method_ended(r->method, r);
    }
}

/* ---- process figures ---- */

void ptc_metrics_read_process(ptc_metrics_process_t *p)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

    p->have_proc = false;
    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: the fields start after the last ')' */
    const char *q = strrchr(buf, ')');
    unsigned long long utime, stime, start, vsize;
    long long rss;
    if (q == NULL || sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                            &utime, &stime, &start, &vsize, &rss) != 5)
        return;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (tick <= 0 || page <= 0)
        return;
    /* CPU time from getrusage: microseconds, where /proc counts ticks (10 ms) */
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        p->cpu_seconds = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    else
        p->cpu_seconds = (double)(utime + stime) / (double)tick;
    p->virtual_bytes = vsize;
    p->resident_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)page : 0;

    /* start time: boot time (btime in /proc/stat) plus the start in ticks since boot */
    if ((f = fopen("/proc/stat", "re")) != NULL) {
        char line[256];
        while (fgets(line, sizeof(line), f) != NULL) {
            unsigned long long btime;
            if (sscanf(line, "btime %llu", &btime) == 1) {
                p->start_time_seconds = (double)btime + (double)start / (double)tick;
                break;
            }
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    p->open_fds = 0;
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (de->d_name[0] != '.')
                p->open_fds++;
        closedir(d);
        p->open_fds--; /* the directory's own descriptor */
    }
    struct rlimit rl;
    p->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0;
    p->have_proc = true;
}

/* ---- the scrape (the control thread) ---- */

size_t ptc_metrics_escape_label(char *out, size_t cap, ptc_iovec_t v)
{
    const unsigned char *p = (const unsigned char *)v.base, *end = p + v.len;
    size_t len = 0;

    if (cap == 0)
        return 0;
    while (p < end) {
        char esc[4];
        const char *piece = (const char *)p;
        uint32_t c;
        size_t n = ptc_utf8_decode(p, end, &c), adv = n;
        if (n == 0) {
            piece = "\xef\xbf\xbd"; /* U+FFFD */
            n = 3;
            adv = 1;
        } else if (*p == '\\' || *p == '"' || *p == '\n') {
            esc[0] = '\\';
            esc[1] = *p == '\n' ? 'n' : (char)*p;
            piece = esc;
            n = 2;
        }
        if (len + n > cap - 1)
            break;
        memcpy(out + len, piece, n);
        len += n;
        p += adv;
    }
    out[len] = '\0';
    return len;
}

bool ptc_metrics_wants_openmetrics(const char *accept)
{
    return accept != NULL && ptc_iov_list_accepts(ptc_iov(accept, strlen(accept)), PTC_STRLIT("application/openmetrics-text"));
}

/* The methods of all workers, merged by path. */
typedef struct st_merged_t {
    const char *path; /* NULL: other */
    size_t path_len;
    uint64_t shape, started, handled[PTC_GRPC_CODES], received, sent;
    uint64_t bucket[PTC_HIST_BUCKETS + 1], sum_us;
} merged_t;

typedef struct st_render_t {
    struct evbuffer *out;
    bool om;
    int err;
} render_t;

static uint64_t load(const ptc_counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void printf_(render_t *r, const char *fmt, ...) PTC_PRINTF(2, 3);
static void printf_(render_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (evbuffer_add_vprintf(r->out, fmt, ap) < 0)
        r->err = PTC_ENOMEM;
    va_end(ap);
}

/* HELP and TYPE of a family; name without _total (the text format's counters get it here). */
static void family(render_t *r, const char *name, const char *type, const char *help)
{
    const char *suffix = !r->om && strcmp(type, "counter") == 0 ? "_total" : "";
    printf_(r, "# HELP %s%s %s\n# TYPE %s%s %s\n", name, suffix, help, name, suffix, type);
}

/* A label set under construction: `k="v",k="v"`. */
typedef struct st_labels_t {
    char buf[1024];
    size_t len;
} labels_t;

static void label(labels_t *l, const char *key, ptc_iovec_t value)
{
    char esc[512];
    size_t n = ptc_metrics_escape_label(esc, sizeof(esc), value);
    int w = snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s%s=\"%.*s\"", l->len != 0 ? "," : "", key, (int)n, esc);
    if (w > 0)
        l->len = PTC_MIN(l->len + (size_t)w, sizeof(l->buf) - 1);
}

static void label_s(labels_t *l, const char *key, const char *value)
{
    label(l, key, ptc_iov(value, strlen(value)));
}

static void sample_u(render_t *r, const char *name, const char *suffix, const labels_t *l, uint64_t v)
{
    if (l != NULL && l->len != 0)
        printf_(r, "%s%s{%s} %" PRIu64 "\n", name, suffix, l->buf, v);
    else
        printf_(r, "%s%s %" PRIu64 "\n", name, suffix, v);
}

static void sample_f(render_t *r, const char *name, const labels_t *l, double v)
{
    if (l != NULL && l->len != 0)
        printf_(r, "%s{%s} %.6f\n", name, l->buf, v);
    else
        printf_(r, "%s %.6f\n", name, v);
}

static void counter(render_t *r, const char *name, const labels_t *l, uint64_t v)
{
    sample_u(r, name, "_total", l, v);
}

/* le values both formats read: "0.0005", "1.0", "+Inf" */
static void le_text(char *buf, size_t len, size_t i)
{
    if (i == PTC_HIST_BUCKETS) {
        snprintf(buf, len, "+Inf");
        return;
    }
    uint64_t us = ptc_hist_bounds_us[i];
    if (us % 1000000 == 0)
        snprintf(buf, len, "%" PRIu64 ".0", us / 1000000);
    else
        snprintf(buf, len, "%g", (double)us / 1e6);
}

/* One histogram series: cumulative buckets, then count and sum (OpenMetrics wants them together). */
static void histogram(render_t *r, const char *name, const labels_t *base, const uint64_t *bucket, uint64_t sum_us)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++) {
        labels_t l = base != NULL ? *base : (labels_t){.len = 0};
        char le[32];
        le_text(le, sizeof(le), i);
        l.buf[l.len] = '\0';
        label_s(&l, "le", le);
        cum += bucket[i];
        sample_u(r, name, "_bucket", &l, cum);
    }
    sample_u(r, name, "_count", base, cum);
    char sname[128];
    snprintf(sname, sizeof(sname), "%s_sum", name);
    sample_f(r, sname, base, (double)sum_us / 1e6);
}

static void hist_add(uint64_t *bucket, uint64_t *sum_us, const ptc_histogram_t *h)
{
    for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++)
        bucket[i] += load(&h->bucket[i]);
    *sum_us += load(&h->sum_us);
}

static void merge_method(merged_t *m, const ptc_method_stats_t *e)
{
    m->shape |= load(&e->shape);
    m->started += load(&e->started);
    for (size_t c = 0; c < PTC_GRPC_CODES; c++)
        m->handled[c] += load(&e->handled[c]);
    m->received += load(&e->msg_received);
    m->sent += load(&e->msg_sent);
    hist_add(m->bucket, &m->sum_us, &e->handling);
}

static int merged_cmp(const void *a, const void *b)
{
    const merged_t *x = a, *y = b;
    if (x->path == NULL || y->path == NULL)
        return (x->path == NULL) - (y->path == NULL); /* other last */
    return strcmp(x->path, y->path);
}

/* Every method of every worker, merged by path (other last), sorted. *out is malloc'd. */
static int merge_methods(const ptc_metrics_source_t *src, size_t n, merged_t **out, size_t *count)
{
    size_t total = 1, used = 0;
    uint32_t *nums = calloc(n + 1, sizeof(*nums));
    if (nums == NULL)
        return PTC_ENOMEM;
    for (size_t w = 0; w < n; w++)
        total += nums[w] = atomic_load_explicit(&src[w].metrics->num_methods, memory_order_acquire);
    size_t cap = 16;
    while (cap < total * 2)
        cap *= 2;
    merged_t *m = calloc(total, sizeof(*m));
    uint32_t *index = calloc(cap, sizeof(*index));
    if (m == NULL || index == NULL) {
        free(nums);
        free(m);
        free(index);
        return PTC_ENOMEM;
    }
    for (size_t w = 0; w < n; w++) {
        for (uint32_t i = 0; i < nums[w]; i++) {
            const ptc_method_stats_t *e = entry_at(src[w].metrics, i);
            ptc_iovec_t path = ptc_iov(e->path, e->path_len);
            size_t slot = hash(path) & (cap - 1);
            while (index[slot] != 0 && !ptc_iov_eq(ptc_iov(m[index[slot] - 1].path, m[index[slot] - 1].path_len), path))
                slot = (slot + 1) & (cap - 1);
            if (index[slot] == 0) {
                m[used] = (merged_t){.path = e->path, .path_len = e->path_len};
                index[slot] = (uint32_t)++used;
            }
            merge_method(&m[index[slot] - 1], e);
        }
    }
    qsort(m, used, sizeof(*m), merged_cmp);
    m[used] = (merged_t){.path = NULL};
    for (size_t w = 0; w < n; w++)
        merge_method(&m[used], &src[w].metrics->other);
    if (m[used].started != 0)
        used++;
    free(nums);
    free(index);
    *out = m;
    *count = used;
    return 0;
}

static const char *grpc_type(uint64_t shape)
{
    static const char *const types[] = {"unary", "client_stream", "server_stream", "bidi_stream"};
    return types[shape & 3];
}

static void method_labels(labels_t *l, const merged_t *m)
{
    *l = (labels_t){.len = 0};
    ptc_iovec_t svc = PTC_STRLIT("other"), meth = PTC_STRLIT("other");
    if (m->path != NULL) {
        const char *slash = memchr(m->path + 1, '/', m->path_len - 1);
        svc = ptc_iov(m->path + 1, (size_t)(slash - m->path - 1));
        meth = ptc_iov(slash + 1, m->path_len - (size_t)(slash - m->path) - 1);
    }
    label(l, "grpc_method", meth);
    label(l, "grpc_service", svc);
    label_s(l, "grpc_type", grpc_type(m->shape));
}

static void render_methods(render_t *r, const merged_t *m, size_t nm)
{
    labels_t l;

    family(r, "grpc_server_started", "counter", "Total number of RPCs started on the server.");
    for (size_t i = 0; i < nm; i++) {
        method_labels(&l, &m[i]);
        counter(r, "grpc_server_started", &l, m[i].started);
    }
    family(r, "grpc_server_handled", "counter", "Total number of RPCs completed on the server, regardless of success or failure.");
    for (size_t i = 0; i < nm; i++) {
        for (int c = 0; c < PTC_GRPC_CODES; c++) {
            if (m[i].handled[c] == 0)
                continue;
            labels_t lc = {.len = 0};
            label_s(&lc, "grpc_code", ptc_grpc_code_name(c));
            method_labels(&l, &m[i]);
            snprintf(lc.buf + lc.len, sizeof(lc.buf) - lc.len, ",%s", l.buf);
            lc.len = strlen(lc.buf);
            counter(r, "grpc_server_handled", &lc, m[i].handled[c]);
        }
    }
    family(r, "grpc_server_msg_received", "counter", "Total number of RPC stream messages received on the server.");
    for (size_t i = 0; i < nm; i++) {
        method_labels(&l, &m[i]);
        counter(r, "grpc_server_msg_received", &l, m[i].received);
    }
    family(r, "grpc_server_msg_sent", "counter", "Total number of gRPC stream messages sent by the server.");
    for (size_t i = 0; i < nm; i++) {
        method_labels(&l, &m[i]);
        counter(r, "grpc_server_msg_sent", &l, m[i].sent);
    }
    family(r, "grpc_server_handling_seconds", "histogram",
           "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.");
    for (size_t i = 0; i < nm; i++) {
        method_labels(&l, &m[i]);
        histogram(r, "grpc_server_handling_seconds", &l, m[i].bucket, m[i].sum_us);
    }
}

static void render_transports(render_t *r, const ptc_metrics_source_t *src, size_t n)
{
    static const struct {
        const char *name, *help;
        size_t offset;
    } counters[] = {
        {"portico_request_bytes", "Request body bytes received from clients (as sent: base64 in text mode).",
         offsetof(ptc_transport_stats_t, bytes_in)},
        {"portico_response_bytes", "Response body bytes sent to clients (as sent: base64 in text mode, after gzip).",
         offsetof(ptc_transport_stats_t, bytes_out)},
        {"portico_request_messages", "gRPC messages received from clients.", offsetof(ptc_transport_stats_t, msgs_in)},
        {"portico_response_messages", "gRPC messages sent to clients.", offsetof(ptc_transport_stats_t, msgs_out)},
    };
    labels_t l;

    family(r, "portico_call_duration_seconds", "histogram",
           "Gateway total latency of calls: from the request head to the end of the response, by transport and protocol.");
    for (size_t t = 0; t < PTC_TRANSPORT_COUNT; t++) {
        for (size_t p = 0; p < PTC_PROTO_COUNT; p++) {
            uint64_t bucket[PTC_HIST_BUCKETS + 1] = {0}, sum = 0;
            for (size_t w = 0; w < n; w++)
                hist_add(bucket, &sum, &src[w].metrics->transports[t][p].duration);
            uint64_t count = 0;
            for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++)
                count += bucket[i];
            if (count == 0)
                continue;
            l = (labels_t){.len = 0};
            label_s(&l, "protocol", ptc_proto_names[p]);
            label_s(&l, "transport", ptc_transport_names[t]);
            histogram(r, "portico_call_duration_seconds", &l, bucket, sum);
        }
    }
    for (size_t k = 0; k < PTC_ARRAY_SIZE(counters); k++) {
        family(r, counters[k].name, "counter", counters[k].help);
        for (size_t t = 0; t < PTC_TRANSPORT_COUNT; t++) {
            for (size_t p = 0; p < PTC_PROTO_COUNT; p++) {
                uint64_t v = 0, calls = 0;
                for (size_t w = 0; w < n; w++) {
                    const ptc_transport_stats_t *ts = &src[w].metrics->transports[t][p];
                    v += load((const ptc_counter_t *)(const void *)((const char *)ts + counters[k].offset));
                    for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++)
                        calls += load(&ts->duration.bucket[i]);
                }
                if (calls == 0)
                    continue;
                l = (labels_t){.len = 0};
                label_s(&l, "protocol", ptc_proto_names[p]);
                label_s(&l, "transport", ptc_transport_names[t]);
                counter(r, counters[k].name, &l, v);
            }
        }
    }
}

/* One upstream name summed over the workers. */
typedef struct st_upstream_sum_t {
    const char *name; /* "" for other */
    uint64_t bucket[PTC_HIST_BUCKETS + 1], sum_us, count, connects, failures, conns[PTC_UPSTREAM_CONN_STATES];
} upstream_sum_t;

static void upstream_add(upstream_sum_t *u, const ptc_upstream_stats_t *e)
{
    hist_add(u->bucket, &u->sum_us, &e->duration);
    u->connects += load(&e->connects);
    u->failures += load(&e->connect_failures);
    for (size_t s = 0; s < PTC_UPSTREAM_CONN_STATES; s++)
        u->conns[s] += load(&e->conns[s]);
}

/* The upstream names of all workers; each worker's "other" entry (and names past the table) under upstream="other". */
static void render_upstreams(render_t *r, const ptc_metrics_source_t *src, size_t n)
{
    upstream_sum_t *sums = calloc(PTC_METRICS_MAX_UPSTREAMS + 1, sizeof(*sums));
    size_t nn = 0;
    labels_t l;

    if (sums == NULL) {
        r->err = PTC_ENOMEM;
        return;
    }
    upstream_sum_t *other = &sums[PTC_METRICS_MAX_UPSTREAMS];
    other->name = "";
    for (size_t w = 0; w < n; w++) {
        uint32_t k = atomic_load_explicit(&src[w].metrics->num_upstreams, memory_order_acquire);
        for (uint32_t i = 0; i < k; i++) {
            const ptc_upstream_stats_t *e = &src[w].metrics->upstreams[i];
            size_t j = 0;
            while (j < nn && strcmp(sums[j].name, e->name) != 0)
                j++;
            if (j == nn && nn < PTC_METRICS_MAX_UPSTREAMS)
                sums[nn++].name = e->name;
            upstream_add(j < nn ? &sums[j] : other, e);
        }
        upstream_add(other, &src[w].metrics->upstreams[PTC_METRICS_MAX_UPSTREAMS]);
    }
    for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++)
        other->count += other->bucket[i];
    bool with_other = other->count != 0 || other->connects != 0;
    if (with_other)
        sums[nn++] = *other;
    for (size_t u = 0; u < nn; u++) {
        sums[u].count = 0;
        for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++)
            sums[u].count += sums[u].bucket[i];
    }
#define UPSTREAM_LABEL(u)                                                                                                              do {                                                                                                                                   l = (labels_t){.len = 0};                                                                                                          label_s(&l, "upstream", sums[u].name[0] != '\0' ? sums[u].name : "other");                                                   } while (0)
    family(r, "portico_upstream_duration_seconds", "histogram",
           "Time calls spent on their upstream stream: from its start until the call ended with it.");
    for (size_t u = 0; u < nn; u++) {
        if (sums[u].count == 0)
            continue;
        UPSTREAM_LABEL(u);
        histogram(r, "portico_upstream_duration_seconds", &l, sums[u].bucket, sums[u].sum_us);
    }
    family(r, "portico_upstream_connects", "counter", "HTTP/2 connections the gateway opened (or tried to) to upstream endpoints.");
    for (size_t u = 0; u < nn; u++) {
        UPSTREAM_LABEL(u);
        counter(r, "portico_upstream_connects", &l, sums[u].connects);
    }
    family(r, "portico_upstream_connect_failures", "counter",
           "Upstream connection attempts that failed (TCP, TLS, or HTTP/2 SETTINGS not received in time).");
    for (size_t u = 0; u < nn; u++) {
        UPSTREAM_LABEL(u);
        counter(r, "portico_upstream_connect_failures", &l, sums[u].failures);
    }
    family(r, "portico_upstream_connections", "gauge", "Upstream HTTP/2 connections by state.");
    for (size_t u = 0; u < nn; u++) {
        for (size_t s = 0; s < PTC_UPSTREAM_CONN_STATES; s++) {
            UPSTREAM_LABEL(u);
            label_s(&l, "state", ptc_upstream_state_names[s]);
            sample_u(r, "portico_upstream_connections", "", &l, sums[u].conns[s]);
        }
    }
#undef UPSTREAM_LABEL
    free(sums);
}

/* The endpoints of the running configuration: health (one-hot over the three states), availability, ejection. */
static void render_endpoints(render_t *r, const ptc_metrics_process_t *p)
{
    static const char *const states[] = {"unknown", "healthy", "unhealthy"};
    labels_t l;

#define ENDPOINT_LABEL(e)                                                                                                              \
    do {                                                                                                                               \
        l = (labels_t){.len = 0};                                                                                                      \
        label_s(&l, "upstream", (e)->upstream);                                                                                        \
        label_s(&l, "endpoint", (e)->address);                                                                                         \
    } while (0)
    family(r, "portico_upstream_endpoint_health", "gauge",
           "Active health-check state of each upstream endpoint: 1 for its current state (unknown when no check is configured or "
           "none answered yet).");
    for (size_t i = 0; i < p->num_endpoints; i++) {
        for (size_t s = 0; s < PTC_ARRAY_SIZE(states); s++) {
            ENDPOINT_LABEL(&p->endpoints[i]);
            label_s(&l, "state", states[s]);
            sample_u(r, "portico_upstream_endpoint_health", "", &l, strcmp(p->endpoints[i].health, states[s]) == 0);
        }
    }
    family(r, "portico_upstream_endpoint_available", "gauge",
           "1 when the endpoint is given calls (not unhealthy, not ejected), else 0.");
    for (size_t i = 0; i < p->num_endpoints; i++) {
        ENDPOINT_LABEL(&p->endpoints[i]);
        sample_u(r, "portico_upstream_endpoint_available", "", &l, p->endpoints[i].available);
    }
    family(r, "portico_upstream_endpoint_ejected", "gauge", "1 while passive outlier detection keeps the endpoint ejected, else 0.");
    for (size_t i = 0; i < p->num_endpoints; i++) {
        ENDPOINT_LABEL(&p->endpoints[i]);
        sample_u(r, "portico_upstream_endpoint_ejected", "", &l, p->endpoints[i].ejected);
    }
#undef ENDPOINT_LABEL
}

static void render_local(render_t *r, const ptc_metrics_source_t *src, size_t n)
{
    labels_t l;
    family(r, "portico_local_responses", "counter",
           "Requests the gateway answered itself (preflights, refusals, health checks, gRPC errors) by HTTP status and grpc-status.");
    for (size_t s = 0; s < PTC_LOCAL_STATUS_SLOTS; s++) {
        for (size_t c = 0; c <= PTC_GRPC_CODES; c++) {
            uint64_t v = 0;
            for (size_t w = 0; w < n; w++)
                v += load(&src[w].metrics->local[s][c]);
            if (v == 0)
                continue;
            char status[16];
            l = (labels_t){.len = 0};
            if (c < PTC_GRPC_CODES)
                label_s(&l, "grpc_code", ptc_grpc_code_name((int)c));
            if (s < PTC_ARRAY_SIZE(ptc_local_statuses))
                snprintf(status, sizeof(status), "%d", ptc_local_statuses[s]);
            else
                snprintf(status, sizeof(status), "other");
            label_s(&l, "status", status);
            counter(r, "portico_local_responses", &l, v);
        }
    }
}

/* Counters of a per-worker stats struct (consecutive ptc_counter_t, one per name; at `field` in each source, a
 * pointer that may be NULL), one unlabelled family each, summed over the workers: portico_NAME_total. */
static void render_stats(render_t *r, const ptc_metrics_source_t *src, size_t n, size_t field, const char *const *names,
                         const char *const *helps, size_t count, const char *what)
{
    char name[96], help[256];
    for (size_t k = 0; k < count; k++) {
        uint64_t v = 0;
        for (size_t w = 0; w < n; w++) {
            const ptc_counter_t *c = *(const ptc_counter_t *const *)(const void *)((const char *)&src[w] + field);
            v += c != NULL ? load(&c[k]) : 0;
        }
        snprintf(name, sizeof(name), "portico_%s", names[k]);
        snprintf(help, sizeof(help), "%s: %s.", what, helps[k]);
        family(r, name, "counter", help);
        counter(r, name, NULL, v);
    }
}

static void render_filters(render_t *r, const ptc_metrics_source_t *src, size_t n)
{
    static const char *const names[] = {
#define XX(name, _) #name,
        PTC_FILTER_STATS_MAP(XX)
#undef XX
    };
    static const char *const helps[] = {
#define XX(_, help) help,
        PTC_FILTER_STATS_MAP(XX)
#undef XX
    };
    static const char *const lnames[] = {
#define XX(name, _) #name,
        PTC_LIMIT_STATS_MAP(XX)
#undef XX
    };
    static const char *const lhelps[] = {
#define XX(_, help) help,
        PTC_LIMIT_STATS_MAP(XX)
#undef XX
    };
    render_stats(r, src, n, offsetof(ptc_metrics_source_t, filters), names, helps, PTC_ARRAY_SIZE(names), "Filter outcome");
    render_stats(r, src, n, offsetof(ptc_metrics_source_t, limits), lnames, lhelps, PTC_ARRAY_SIZE(lnames), "Limit");
}

/* A family with one unlabelled sample summed over the workers: a counter, or a gauge from an up and a down counter. */
static void render_sum(render_t *r, const ptc_metrics_source_t *src, size_t n, const char *name, const char *type, const char *help,
                       size_t up, size_t down)
{
    uint64_t v = 0;
    for (size_t w = 0; w < n; w++) {
        const char *base = (const char *)src[w].metrics;
        v += load((const ptc_counter_t *)(const void *)(base + up));
        if (down != SIZE_MAX)
            v -= load((const ptc_counter_t *)(const void *)(base + down));
    }
    family(r, name, type, help);
    if (strcmp(type, "counter") == 0)
        counter(r, name, NULL, v);
    else
        sample_u(r, name, "", NULL, v);
}

static void render_process(render_t *r, const ptc_metrics_process_t *p)
{
    labels_t l = {.len = 0};

    family(r, "portico_build_info", "gauge", "Always 1; the version label says which Portico this is.");
    label_s(&l, "version", PTC_VERSION);
    sample_u(r, "portico_build_info", "", &l, 1);
    family(r, "portico_workers", "gauge", "Worker threads.");
    sample_u(r, "portico_workers", "", NULL, p->workers);
    family(r, "portico_config_version", "gauge", "Version of the configuration in service (1 at start-up, +1 per applied change).");
    sample_u(r, "portico_config_version", "", NULL, p->config_version);
    family(r, "portico_config_reloads", "counter", "Configuration changes applied (ok) or refused (failed), whatever asked for them.");
    l = (labels_t){.len = 0};
    label_s(&l, "result", "ok");
    counter(r, "portico_config_reloads", &l, p->reloads_ok);
    l = (labels_t){.len = 0};
    label_s(&l, "result", "failed");
    counter(r, "portico_config_reloads", &l, p->reloads_failed);
    family(r, "portico_access_log_bytes", "counter", "Bytes of access-log lines written.");
    counter(r, "portico_access_log_bytes", NULL, p->access_log_bytes);
    family(r, "portico_access_log_write_errors", "counter", "Failed writes to the access log.");
    counter(r, "portico_access_log_write_errors", NULL, p->access_log_write_errors);
    family(r, "portico_access_log_lost", "counter",
           "Access-log lines queued but never written (failed writes, or an output still stalled when its sink was let go).");
    counter(r, "portico_access_log_lost", NULL, p->access_log_lost);
    family(r, "portico_access_log_reopens", "counter", "Times the access log file was reopened (SIGUSR1).");
    counter(r, "portico_access_log_reopens", NULL, p->access_log_reopens);
    if (!p->have_proc)
        return;
    family(r, "process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.");
    printf_(r, "process_cpu_seconds_total %.6f\n", p->cpu_seconds);
    family(r, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    sample_u(r, "process_resident_memory_bytes", "", NULL, p->resident_bytes);
    family(r, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    sample_u(r, "process_virtual_memory_bytes", "", NULL, p->virtual_bytes);
    family(r, "process_open_fds", "gauge", "Number of open file descriptors.");
    sample_u(r, "process_open_fds", "", NULL, p->open_fds);
    family(r, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    sample_u(r, "process_max_fds", "", NULL, p->max_fds);
    family(r, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    printf_(r, "process_start_time_seconds %.2f\n", p->start_time_seconds);
}

int ptc_metrics_render(struct evbuffer *out, const ptc_metrics_source_t *src, size_t n, const ptc_metrics_process_t *p, bool om)
{
    render_t r = {out, om, 0};
    merged_t *methods = NULL;
    size_t nm = 0;
    int ret;

    if ((ret = merge_methods(src, n, &methods, &nm)) != 0)
        return ret;
    render_methods(&r, methods, nm);
    free(methods);
    render_transports(&r, src, n);
    render_sum(&r, src, n, "portico_calls_active", "gauge", "Calls in flight.", offsetof(ptc_worker_metrics_t, calls_started),
               offsetof(ptc_worker_metrics_t, calls_ended));
    render_sum(&r, src, n, "portico_connections_active", "gauge", "Client connections open (HTTP/1.1, HTTP/2, WebSocket).",
               offsetof(ptc_worker_metrics_t, conns_opened), offsetof(ptc_worker_metrics_t, conns_closed));
    render_sum(&r, src, n, "portico_connections", "counter", "Client connections accepted.", offsetof(ptc_worker_metrics_t, conns_accepted),
               SIZE_MAX);
    render_upstreams(&r, src, n);
    render_endpoints(&r, p);
    render_local(&r, src, n);
    render_filters(&r, src, n);
    render_sum(&r, src, n, "portico_access_log_lines", "counter", "Access-log lines queued for the writer.",
               offsetof(ptc_worker_metrics_t, access_log_lines), SIZE_MAX);
    render_sum(&r, src, n, "portico_access_log_dropped", "counter", "Access-log lines dropped because the writer's buffer was full.",
               offsetof(ptc_worker_metrics_t, access_log_dropped), SIZE_MAX);
    render_process(&r, p);
    if (om)
        printf_(&r, "# EOF\n");
    return r.err;
}
