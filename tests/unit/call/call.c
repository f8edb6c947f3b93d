/*
 * Unit tests for src/call/call.c: the gRPC-Web ⇄ gRPC translator between a fake downstream and a fake
 * upstream client, with no sockets on the call's path.
 *
 * The setting is real: a snapshot built from YAML (with its filter pipeline), a worker on a real event
 * base (not started: the test drives its loop), and requests that go through the policy step
 * (ptc_request_handle) as the adapters' do. Two things are fakes:
 *
 *  - the downstream (fake_ds_t): a ptc_downstream_t that records every callback (head, body bytes, end,
 *    trailers, abort, done, pause) so that the exact bytes a browser would get can be reassembled, and
 *    whose pending() returns what the test says;
 *  - the upstream (fake_up_t): a ptc_upstream_t whose client interface is the test's (upstream.h: calls
 *    read nothing of a pool but its client), put in the worker's pools[] in place of the real pool. It
 *    records start (the request header block), cancel (with the unconsumed count) and consume credits,
 *    pulls the request body the way nghttp2 does (read_request, then write_request for a DATA frame),
 *    and lets the test deliver the upstream's side (headers, data, trailers, close, errors) in any order.
 *
 * Every test checks exact bytes: the response body is decoded (base64 per frame in text mode) and split
 * into frames, and compared with what was expected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <zlib.h>

#include "portico/access_log.h"
#include "portico/alloc.h"
#include "portico/call.h"
#include "portico/codec.h"
#include "portico/config.h"
#include "portico/filter.h"
#include "portico/listener.h"
#include "portico/log.h"
#include "portico/snapshot.h"
#include "portico/upstream.h"
#include "portico/worker.h"

#include "../failmalloc.h"

/* ---- header field lists, copied (what the call hands over is valid only during the callback) ---- */

#define FS_MAX 64

typedef struct {
    size_t n;
    const char *name[FS_MAX], *value[FS_MAX];
    char mem[16384];
    size_t used;
} fieldset_t;

typedef struct {
    const char *name, *value;
} kv_t;

static const char *fs_copy(fieldset_t *fs, const char *p, size_t len)
{
    assert_true(fs->used + len + 1 <= sizeof(fs->mem));
    char *dst = fs->mem + fs->used;
    if (len != 0)
        memcpy(dst, p, len);
    dst[len] = '\0';
    fs->used += len + 1;
    return dst;
}

static void fs_add(fieldset_t *fs, const char *name, size_t nlen, const char *value, size_t vlen)
{
    assert_true(fs->n < FS_MAX);
    fs->name[fs->n] = fs_copy(fs, name, nlen);
    fs->value[fs->n] = fs_copy(fs, value, vlen);
    fs->n++;
}

static void fs_clear(fieldset_t *fs)
{
    fs->n = 0;
    fs->used = 0;
}

static const char *fs_get(const fieldset_t *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->name[i], name) == 0)
            return fs->value[i];
    return NULL;
}

static size_t kv_count(const kv_t *kv)
{
    size_t n = 0;
    while (kv != NULL && kv[n].name != NULL)
        n++;
    return n;
}

/* The list holds exactly these fields, in this order. */
static void assert_fields(const fieldset_t *fs, const kv_t *want)
{
    size_t n = kv_count(want);
    for (size_t i = 0; i < PTC_MAX(n, fs->n); i++) {
        if (i >= n || i >= fs->n || strcmp(fs->name[i], want[i].name) != 0 || strcmp(fs->value[i], want[i].value) != 0) {
            for (size_t j = 0; j < fs->n; j++)
                print_error("  got  %s: %s\n", fs->name[j], fs->value[j]);
            for (size_t j = 0; j < n; j++)
                print_error("  want %s: %s\n", want[j].name, want[j].value);
            fail_msg("field %zu differs", i);
        }
    }
}

/* ---- the fake downstream ---- */

#define BODY_MAX (1u << 17)

typedef struct {
    ptc_downstream_t super;
    ptc_call_t *call; /* the adapter's slot: on_call_done and abort clear it, as the adapters do */
    char log[256];    /* one letter per callback: H head, h head with end_stream, B body (runs of one), E end,
                       * T trailers, R respond, A abort, D done */
    size_t loglen;
    int heads, status, respond_status;
    fieldset_t head, trailers;
    uint8_t body[BODY_MAX];
    size_t body_len;
    size_t pending; /* what pending() says */
    bool paused;
    int pauses, resumes;
    bool gone; /* detached: any callback from now on is a bug */
} fake_ds_t;

static fake_ds_t *ds_of(ptc_downstream_t *ds)
{
    fake_ds_t *f = (fake_ds_t *)(void *)ds;
    if (f->gone)
        fail_msg("the call used its downstream after ptc_call_detach_downstream()");
    return f;
}

static void ds_log(fake_ds_t *f, char c)
{
    if (c == 'B' && f->loglen != 0 && f->log[f->loglen - 1] == 'B')
        return;
    assert_true(f->loglen + 1 < sizeof(f->log));
    f->log[f->loglen++] = c;
    f->log[f->loglen] = '\0';
}

static void ds_send_head(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, bool end_stream)
{
    fake_ds_t *f = ds_of(ds);
    ds_log(f, end_stream ? 'h' : 'H');
    f->heads++;
    f->status = status;
    fs_clear(&f->head);
    for (size_t i = 0; i < n; i++)
        fs_add(&f->head, headers[i].name.base, headers[i].name.len, headers[i].value.base, headers[i].value.len);
}

static void ds_send_body(ptc_downstream_t *ds, struct evbuffer *buf)
{
    fake_ds_t *f = ds_of(ds);
    size_t n = evbuffer_get_length(buf);
    ds_log(f, 'B');
    assert_true(f->body_len + n <= sizeof(f->body));
    assert_int_equal(evbuffer_remove(buf, f->body + f->body_len, n), (int)n);
    f->body_len += n;
    assert_int_equal(evbuffer_get_length(buf), 0); /* moved whole */
}

static void ds_send_end(ptc_downstream_t *ds)
{
    ds_log(ds_of(ds), 'E');
}

static size_t ds_pending(ptc_downstream_t *ds)
{
    return ds_of(ds)->pending;
}

static void ds_pause_read(ptc_downstream_t *ds, bool pause)
{
    fake_ds_t *f = ds_of(ds);
    f->paused = pause;
    if (pause)
        f->pauses++;
    else
        f->resumes++;
}

static void ds_on_call_done(ptc_downstream_t *ds)
{
    fake_ds_t *f = ds_of(ds);
    ds_log(f, 'D');
    f->call = NULL;
}

static void ds_send_trailers(ptc_downstream_t *ds, const ptc_header_t *trailers, size_t n)
{
    fake_ds_t *f = ds_of(ds);
    ds_log(f, 'T');
    fs_clear(&f->trailers);
    for (size_t i = 0; i < n; i++)
        fs_add(&f->trailers, trailers[i].name.base, trailers[i].name.len, trailers[i].value.base, trailers[i].value.len);
}

static void ds_respond(ptc_downstream_t *ds, int status, const ptc_header_t *headers, size_t n, const char *body)
{
    (void)headers;
    (void)n;
    (void)body;
    fake_ds_t *f = ds_of(ds);
    ds_log(f, 'R');
    f->respond_status = status;
}

static void ds_abort(ptc_downstream_t *ds)
{
    fake_ds_t *f = ds_of(ds);
    ds_log(f, 'A');
    f->call = NULL;
}

static const ptc_downstream_cb_t fake_ds_cb = {
    .send_head = ds_send_head,
    .send_body = ds_send_body,
    .send_end = ds_send_end,
    .pending = ds_pending,
    .pause_read = ds_pause_read,
    .on_call_done = ds_on_call_done,
    .send_trailers = ds_send_trailers,
    .respond = ds_respond,
    .abort = ds_abort,
};

/* ---- the fake upstream ---- */

typedef struct {
    ptc_upstream_t pool;      /* first: stands in the worker's pools[]; calls read only pool.client */
    ptc_upstream_stream_t *s; /* the stream, from start() until it is closed, cancelled or failed */
    int starts, cancels, resumes, consumes;
    size_t unconsumed_at_cancel; /* what cancel() was told */
    size_t consumed;             /* credits in all */
    fieldset_t req;              /* the request header block */
    bool nv_no_copy;             /* every field was flagged NO_COPY_NAME | NO_COPY_VALUE (NO_INDEX allowed) */
    const char *refuse;          /* start() fails the stream at once with this (a pool over max_pending) */
    struct evbuffer *wire;       /* where write_request() puts DATA frames */
    uint8_t body[BODY_MAX];      /* the request body as pulled */
    size_t body_len;
    bool eof; /* the data provider said EOF */
} fake_up_t;

static void up_start(ptc_upstream_client_t *c, ptc_upstream_stream_t *s)
{
    fake_up_t *u = (fake_up_t *)(void *)c;
    const nghttp2_nv *nva;
    size_t n;

    u->starts++;
    assert_null(u->s);
    if (u->refuse != NULL) {
        s->cb->on_error(s, u->refuse); /* the client never took the stream: s->client stays NULL */
        return;
    }
    s->client = c;
    u->s = s;
    s->cb->request_headers(s, &nva, &n);
    fs_clear(&u->req);
    u->nv_no_copy = true;
    for (size_t i = 0; i < n; i++) {
        fs_add(&u->req, (const char *)nva[i].name, nva[i].namelen, (const char *)nva[i].value, nva[i].valuelen);
        u->nv_no_copy = u->nv_no_copy && (nva[i].flags & ~NGHTTP2_NV_FLAG_NO_INDEX) == (NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    }
}

static fake_up_t *up_of(ptc_upstream_stream_t *s)
{
    assert_non_null(s->client);
    fake_up_t *u = (fake_up_t *)(void *)s->client;
    assert_ptr_equal(u->s, s);
    return u;
}

static void up_cancel(ptc_upstream_stream_t *s, size_t unconsumed)
{
    fake_up_t *u = up_of(s);
    u->cancels++;
    u->unconsumed_at_cancel = unconsumed;
    s->client = NULL;
    u->s = NULL;
}

static void up_resume_data(ptc_upstream_stream_t *s)
{
    up_of(s)->resumes++;
}

static void up_consume(ptc_upstream_stream_t *s, size_t n)
{
    fake_up_t *u = up_of(s);
    u->consumes++;
    u->consumed += n;
}

static const ptc_upstream_client_cb_t fake_client_cb = {up_start, up_cancel, up_resume_data, up_consume};

/* ---- the fixture: snapshot, worker, fakes ---- */

typedef struct {
    ptc_snapshot_t *snap;
    ptc_worker_t w;
    ptc_upstream_t *real_pools[8]; /* put back before the worker is disposed */
    fake_up_t up;
    fake_ds_t ds;
    ptc_http_headers_param_t *hparam;
    ptc_header_t reqhdrs[512];
    char reqmem[16384];
    size_t snapshots_before;
} fix_t;

static const char BASE_YAML[] = "upstreams: [{name: backend, endpoints: ['127.0.0.1:1']}]\n"
                                "routes: [{prefix: /, upstream: backend}]\n";

static ptc_snapshot_t *snap_new(const char *extra, void (*tweak)(ptc_config_t *), uint64_t version)
{
    ptc_config_t cfg = {0};
    ptc_snapshot_t *s = NULL;
    char err[512], yaml[4096];
    /* extra YAML goes after the base, unless it brings its own upstreams (and routes) */
    bool own = extra != NULL && strncmp(extra, "upstreams:", 10) == 0;
    snprintf(yaml, sizeof(yaml), "%s%s", own ? "" : BASE_YAML, extra != NULL ? extra : "");
    assert_int_equal(ptc_config_init_default(&cfg), 0);
    if (ptc_config_load_string(&cfg, "test.yaml", yaml, strlen(yaml), err, sizeof(err)) != 0)
        fail_msg("%s", err);
    if (tweak != NULL)
        tweak(&cfg);
    if (ptc_snapshot_new(&s, &cfg, version, NULL, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return s;
}

static fix_t *fix_new_with(const char *extra, void (*tweak)(ptc_config_t *))
{
    fix_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->snapshots_before = ptc_snapshot_live_count();
    f->snap = snap_new(extra, tweak, 1);
    char host[] = "127.0.0.1";
    ptc_hostport_t hp = {host, 0};
    char err[256];
    int fd = -1;
    if (ptc_listen_socket(&hp, &fd, err, sizeof(err)) != 0) /* the worker wants one; nothing connects to it */
        fail_msg("%s", err);
    assert_true(f->snap->config.num_listeners == 1);
    assert_int_equal(ptc_worker_init(&f->w, 0, f->snap, &fd, -1), 0);
    assert_true(f->snap->config.num_upstreams <= PTC_ARRAY_SIZE(f->real_pools));
    f->up.pool.client = (ptc_upstream_client_t){&fake_client_cb, &f->snap->config.upstreams[0]};
    for (size_t i = 0; i < f->snap->config.num_upstreams; i++) {
        f->real_pools[i] = f->w.pools[i];
        f->w.pools[i] = &f->up.pool;
    }
    f->up.wire = evbuffer_new();
    assert_non_null(f->up.wire);
    f->ds.super.cb = &fake_ds_cb;
    return f;
}

static fix_t *fix_new(const char *extra)
{
    return fix_new_with(extra, NULL);
}

static void fix_free(fix_t *f)
{
    assert_int_equal(f->w.num_calls, 0); /* every call was freed */
    for (size_t i = 0; i < f->snap->config.num_upstreams; i++)
        f->w.pools[i] = f->real_pools[i];
    ptc_worker_dispose(&f->w);
    ptc_snapshot_release(f->snap);
    assert_int_equal(ptc_snapshot_live_count(), f->snapshots_before); /* no call kept a reference */
    evbuffer_free(f->up.wire);
    free(f->hparam);
    free(f);
}

/* Forgets what the fakes recorded (between two calls of one test). */
static void fix_reset(fix_t *f)
{
    assert_null(f->up.s);
    assert_null(f->ds.call);
    memset(&f->ds, 0, sizeof(f->ds));
    f->ds.super.cb = &fake_ds_cb;
    f->up.starts = f->up.cancels = f->up.resumes = f->up.consumes = 0;
    f->up.unconsumed_at_cancel = f->up.consumed = 0;
    fs_clear(&f->up.req);
    f->up.body_len = 0;
    f->up.eof = false;
    evbuffer_drain(f->up.wire, evbuffer_get_length(f->up.wire));
}

/* The standard metadata of the tests' requests. */
static const kv_t RID[] = {{"x-request-id", "req-42"}, {NULL, NULL}};

/*
 * A request through the policy step, as an adapter makes it: POST path with that content type (none when
 * NULL) and these fields. The request's storage is scribbled over afterwards: its slices are valid only
 * during ptc_request_handle(), and the call must have copied what it keeps.
 */
static ptc_iovec_t req_copy(fix_t *f, size_t *used, const char *s)
{
    size_t n = strlen(s);
    assert_true(*used + n + 1 <= sizeof(f->reqmem));
    char *dst = f->reqmem + *used;
    memcpy(dst, s, n + 1);
    *used += n + 1;
    return ptc_iov(dst, n);
}

static void start_req(fix_t *f, const char *path, const char *ctype, const kv_t *fields)
{
    size_t n = 0, used = 0;
    fix_reset(f);
    assert_true(ptc_request_headers_cap(&f->snap->config.limits) <= PTC_ARRAY_SIZE(f->reqhdrs));
    if (ctype != NULL) {
        f->reqhdrs[n].name = req_copy(f, &used, "content-type");
        f->reqhdrs[n++].value = req_copy(f, &used, ctype);
    }
    for (size_t i = 0; i < kv_count(fields); i++) {
        f->reqhdrs[n].name = req_copy(f, &used, fields[i].name);
        f->reqhdrs[n++].value = req_copy(f, &used, fields[i].value);
    }
    ptc_request_t req = {
        .method = PTC_STRLIT("POST"),
        .path = req_copy(f, &used, path),
        .scheme = PTC_STRLIT("http"),
        .authority = req_copy(f, &used, "gw.test:8080"),
        .headers = f->reqhdrs,
        .num_headers = n,
        .peer = "192.0.2.7:4711",
        .snap = f->snap,
        .allow_native = ctype != NULL && ptc_ctype_classify(ptc_iov(ctype, strlen(ctype))).kind == PTC_CT_GRPC,
    };
    ptc_request_handle(&f->w, &f->ds.super, &req, &f->hparam, &f->ds.call);
    memset(f->reqmem, 'X', sizeof(f->reqmem));
}

static void start_web(fix_t *f, bool text)
{
    start_req(f, "/pkg.Svc/Method", text ? "application/grpc-web-text" : "application/grpc-web+proto", RID);
}

/* ---- driving the request side ---- */

static void req_body(fix_t *f, const void *p, size_t n)
{
    if (f->ds.call != NULL)
        ptc_call_on_request_body(f->ds.call, p, n);
}

static void req_end(fix_t *f)
{
    if (f->ds.call != NULL)
        ptc_call_on_request_end(f->ds.call);
}

/* One turn of nghttp2's data provider: read, then write a DATA frame. False when it deferred (or ended). */
static bool up_pull_once(fix_t *f, size_t max_frame)
{
    fake_up_t *u = &f->up;
    if (u->s == NULL || u->eof)
        return false;
    uint32_t flags = 0;
    ssize_t n = u->s->cb->read_request(u->s, max_frame, &flags);
    if (n == NGHTTP2_ERR_DEFERRED)
        return false;
    assert_true(n >= 0 && (size_t)n <= max_frame);
    if ((flags & NGHTTP2_DATA_FLAG_NO_COPY) != 0) {
        uint8_t hd[9] = {
            (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n, 0, (flags & NGHTTP2_DATA_FLAG_EOF) != 0 ? 1 : 0, 0, 0, 0, 1};
#ifdef PTC_TEST_FAILMALLOC
        /* the DATA frame goes to the pool's output buffer, whose allocations are not the call's to fail */
        long countdown = failmalloc_countdown;
        failmalloc_countdown = -1;
#endif
        u->s->cb->write_request(u->s, u->wire, hd, (size_t)n);
#ifdef PTC_TEST_FAILMALLOC
        failmalloc_countdown = countdown;
#endif
        assert_int_equal(evbuffer_get_length(u->wire), 9 + (size_t)n);
        uint8_t got9[9];
        assert_int_equal(evbuffer_remove(u->wire, got9, 9), 9);
        assert_memory_equal(got9, hd, 9);
        assert_true(u->body_len + (size_t)n <= sizeof(u->body));
        assert_int_equal(evbuffer_remove(u->wire, u->body + u->body_len, (size_t)n), (int)n);
        u->body_len += (size_t)n;
    } else {
        assert_int_equal(n, 0); /* only an empty END_STREAM frame goes without the copy callback */
    }
    if ((flags & NGHTTP2_DATA_FLAG_EOF) != 0)
        u->eof = true;
    return !u->eof;
}

/* What nghttp2 does when the stream may send: DATA frames until the provider defers or ends. */
static void up_pull_max(fix_t *f, size_t max_frame)
{
    while (up_pull_once(f, max_frame)) {
    }
}

static void up_pull(fix_t *f)
{
    up_pull_max(f, 16384);
}

/* ---- driving the upstream side ---- */

static ptc_upstream_stream_t *open_stream(fix_t *f)
{
    if (f->up.s == NULL)
        fail_msg("the upstream stream is not open");
    return f->up.s;
}

static void up_headers(fix_t *f, nghttp2_headers_category cat, const kv_t *kv, bool end_stream)
{
    ptc_upstream_stream_t *s = open_stream(f);
    for (size_t i = 0; i < kv_count(kv); i++)
        s->cb->on_header(s, cat, (const uint8_t *)kv[i].name, strlen(kv[i].name), (const uint8_t *)kv[i].value,
                         strlen(kv[i].value));
    s->cb->on_headers_end(s, cat, end_stream);
}

static const kv_t GRPC_HEAD[] = {{":status", "200"}, {"content-type", "application/grpc"}, {NULL, NULL}};
static const kv_t OK_TRAILERS[] = {{"grpc-status", "0"}, {NULL, NULL}};

static void up_head(fix_t *f, const kv_t *kv)
{
    up_headers(f, NGHTTP2_HCAT_RESPONSE, kv, false);
}

static void up_trailers(fix_t *f, const kv_t *kv)
{
    up_headers(f, NGHTTP2_HCAT_HEADERS, kv, true);
}

static void up_data(fix_t *f, const void *p, size_t n)
{
    ptc_upstream_stream_t *s = open_stream(f);
    s->cb->on_data(s, p, n);
}

static void up_data_end(fix_t *f)
{
    ptc_upstream_stream_t *s = open_stream(f);
    s->cb->on_data_end(s);
}

/* The stream closed (the pool detaches it before it says so). */
static void up_close(fix_t *f, uint32_t code, const char *conn_error)
{
    ptc_upstream_stream_t *s = open_stream(f);
    s->client = NULL;
    f->up.s = NULL;
    s->cb->on_close(s, code, conn_error);
}

static void up_error(fix_t *f, const char *msg)
{
    ptc_upstream_stream_t *s = open_stream(f);
    s->client = NULL;
    f->up.s = NULL;
    s->cb->on_error(s, msg);
}

/* Ends the upstream stream cleanly if it is still open (trailers came with END_STREAM: on_close follows). */
static void up_finish(fix_t *f)
{
    if (f->up.s != NULL)
        up_close(f, NGHTTP2_NO_ERROR, NULL);
}

/* ---- bytes: frames, base64, gzip ---- */

typedef struct {
    uint8_t b[BODY_MAX];
    size_t len;
} bytes_t;

static bytes_t scratch, want, got; /* big: not on the stack */

static void bytes_add(bytes_t *b, const void *p, size_t n)
{
    assert_true(b->len + n <= sizeof(b->b));
    if (n != 0)
        memcpy(b->b + b->len, p, n);
    b->len += n;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Padded base64, written independently of src/grpcweb/base64.c. */
static void b64_add(bytes_t *out, const uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        char q[4] = {B64[v >> 18 & 63], B64[v >> 12 & 63], B64[v >> 6 & 63], B64[v & 63]};
        bytes_add(out, q, 4);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        char q[4] = {B64[v >> 18 & 63], B64[v >> 12 & 63], '=', '='};
        bytes_add(out, q, 4);
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        char q[4] = {B64[v >> 18 & 63], B64[v >> 12 & 63], B64[v >> 6 & 63], '='};
        bytes_add(out, q, 4);
    }
}

/* Decodes concatenated padded base64 segments (4-character quanta, '=' only at the end of a quantum). */
static void b64_decode(bytes_t *out, const uint8_t *p, size_t n)
{
    out->len = 0;
    if (n % 4 != 0)
        fail_msg("text body of %zu characters: not whole base64 quanta", n);
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            const char *c = p[i + (size_t)j] != '\0' ? strchr(B64, p[i + (size_t)j]) : NULL;
            if (p[i + (size_t)j] == '=' && j >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            if (c == NULL || pad != 0)
                fail_msg("invalid base64 at %zu", i + (size_t)j);
            v = v << 6 | (uint32_t)(c - B64);
        }
        uint8_t q[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        bytes_add(out, q, (size_t)(3 - pad));
    }
}

/* One gRPC frame, binary or as a padded base64 segment of its own (text mode). */
static void frame_add(bytes_t *out, uint8_t flags, const void *payload, size_t n, bool text)
{
    uint8_t hdr[5] = {flags, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    if (!text) {
        bytes_add(out, hdr, 5);
        bytes_add(out, payload, n);
        return;
    }
    scratch.len = 0;
    bytes_add(&scratch, hdr, 5);
    bytes_add(&scratch, payload, n);
    b64_add(out, scratch.b, scratch.len);
}

static void msg_add(bytes_t *out, const char *msg, bool text)
{
    frame_add(out, 0, msg, strlen(msg), text);
}

/* The trailer frame a gRPC-Web client gets for these fields: `name:value\r\n` each. */
static void trailer_add(bytes_t *out, const kv_t *kv, bool text)
{
    char block[4096];
    size_t n = 0;
    for (size_t i = 0; i < kv_count(kv); i++)
        n += (size_t)snprintf(block + n, sizeof(block) - n, "%s:%s\r\n", kv[i].name, kv[i].value);
    assert_true(n < sizeof(block));
    frame_add(out, 0x80, block, n, text);
}

static void gzip_bytes(bytes_t *out, const void *p, size_t n, int window_bits)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = out->b + out->len;
    z.avail_out = (uInt)(sizeof(out->b) - out->len);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    out->len = sizeof(out->b) - z.avail_out;
    deflateEnd(&z);
}

static void gunzip_bytes(bytes_t *out, const uint8_t *p, size_t n)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = out->b;
    z.avail_out = (uInt)sizeof(out->b);
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    out->len = sizeof(out->b) - z.avail_out;
    inflateEnd(&z);
}

/* grpc-message is percent-encoded on the wire. */
static const char *pct_decode(const char *s)
{
    static char buf[8192];
    size_t n = 0;
    for (size_t i = 0; s[i] != '\0' && n + 1 < sizeof(buf); i++) {
        unsigned v;
        if (s[i] == '%' && sscanf(s + i + 1, "%2x", &v) == 1) {
            buf[n++] = (char)v;
            i += 2;
        } else {
            buf[n++] = s[i];
        }
    }
    buf[n] = '\0';
    return buf;
}

/* ---- what a gRPC-Web client would make of the response ---- */

typedef struct {
    bool trailers_only;
    size_t n; /* message frames */
    uint8_t flags[64];
    const uint8_t *msg[64];
    size_t len[64];
    fieldset_t tr;       /* the trailer frame's fields (the head's for trailers-only) */
    int status;          /* grpc-status */
    const char *message; /* grpc-message, decoded ("" when absent) */
} web_t;

static bytes_t decoded, rebuilt; /* parse_web's */

static int status_of(const fieldset_t *fs)
{
    const char *v = fs_get(fs, "grpc-status");
    if (v == NULL)
        fail_msg("no grpc-status");
    char *end;
    long st = strtol(v, &end, 10);
    assert_true(*end == '\0' && end != v);
    return (int)st;
}

/*
 * Checks that the downstream got one complete, well-formed gRPC-Web response and parses it: either
 * trailers-only (a head with end_stream and grpc-status, no body), or a head, whole frames, exactly one
 * trailer frame at the end, the end of the body and on_call_done. Text mode: every frame is a padded base64
 * segment of its own.
 */
static void parse_web(fix_t *f, bool text, web_t *r)
{
    fake_ds_t *ds = &f->ds;
    memset(r, 0, sizeof(*r));
    assert_int_equal(ds->heads, 1);
    assert_int_equal(ds->status, 200);
    assert_null(ds->call);
    if (strcmp(ds->log, "hD") == 0) {
        r->trailers_only = true;
        assert_int_equal(ds->body_len, 0);
        for (size_t i = 0; i < ds->head.n; i++)
            fs_add(&r->tr, ds->head.name[i], strlen(ds->head.name[i]), ds->head.value[i], strlen(ds->head.value[i]));
    } else {
        if (strcmp(ds->log, "HBED") != 0)
            fail_msg("downstream saw '%s'", ds->log);
        const uint8_t *p = ds->body;
        size_t n = ds->body_len;
        if (text) {
            b64_decode(&decoded, ds->body, ds->body_len);
            p = decoded.b;
            n = decoded.len;
        }
        size_t off = 0;
        bool trailer = false;
        while (off < n) {
            assert_false(trailer); /* nothing after the trailer frame */
            assert_true(off + 5 <= n);
            uint32_t len = (uint32_t)p[off + 1] << 24 | (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 8 | p[off + 4];
            assert_true(off + 5 + len <= n);
            if (p[off] == 0x80) {
                trailer = true;
                const char *t = (const char *)p + off + 5, *end = t + len;
                while (t < end) {
                    const char *crlf = memchr(t, '\r', (size_t)(end - t)), *colon = memchr(t, ':', (size_t)(end - t));
                    assert_non_null(crlf);
                    assert_true(crlf + 1 < end && crlf[1] == '\n');
                    assert_true(colon != NULL && colon < crlf && colon > t);
                    for (const char *c = t; c < colon; c++)
                        assert_false(*c >= 'A' && *c <= 'Z');
                    fs_add(&r->tr, t, (size_t)(colon - t), colon + 1, (size_t)(crlf - colon - 1));
                    t = crlf + 2;
                }
            } else {
                assert_true(r->n < PTC_ARRAY_SIZE(r->msg));
                assert_true(p[off] == 0 || p[off] == 1);
                r->flags[r->n] = p[off];
                r->msg[r->n] = p + off + 5;
                r->len[r->n++] = len;
            }
            off += 5 + len;
        }
        assert_true(trailer);
        if (text) { /* per frame: the text is the frames' base64, one padded segment each */
            rebuilt.len = 0;
            for (off = 0; off < n;) {
                uint32_t len = (uint32_t)p[off + 1] << 24 | (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 8 | p[off + 4];
                b64_add(&rebuilt, p + off, 5 + len);
                off += 5 + len;
            }
            assert_int_equal(rebuilt.len, ds->body_len);
            assert_memory_equal(rebuilt.b, ds->body, rebuilt.len);
        }
    }
    r->status = status_of(&r->tr);
    const char *m = fs_get(&r->tr, "grpc-message");
    r->message = m != NULL ? pct_decode(m) : "";
}

/* The response is a complete gRPC-Web response with exactly these body bytes (frames as built). */
static void assert_body(fix_t *f, const bytes_t *b)
{
    if (f->ds.body_len != b->len || memcmp(f->ds.body, b->b, b->len) != 0) {
        print_error("body: got %zu bytes, want %zu\n", f->ds.body_len, b->len);
        assert_memory_equal(f->ds.body, b->b, PTC_MIN(b->len, f->ds.body_len));
        fail_msg("body length differs");
    }
}

/* A gateway-made error in trailers-only form: the head, exactly. */
static void assert_error_head(fix_t *f, const char *ctype, int status, const char *message)
{
    web_t r;
    char code[8];
    parse_web(f, false, &r);
    assert_true(r.trailers_only);
    snprintf(code, sizeof(code), "%d", status);
    assert_string_equal(fs_get(&f->ds.head, "content-type"), ctype);
    assert_string_equal(fs_get(&f->ds.head, "grpc-status"), code);
    if (message != NULL)
        assert_string_equal(r.message, message);
}

/* ---- tests ---- */

/* The header block sent upstream: pseudo-headers, content type, te, grpc-accept-encoding, metadata in
 * order, hop-by-hop fields gone (also those Connection names), filter-made fields, no query in :path. */
static void test_request_headers(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const kv_t in[] = {
        {"host", "gw.test:8080"},
        {"x-grpc-web", "1"},
        {"accept", "*/*"},
        {"user-agent", "test/1.0"},
        {"connection", "keep-alive, X-Hop"},
        {"keep-alive", "timeout=5"},
        {"x-hop", "secret"},
        {"te", "gzip"},
        {"transfer-encoding", "chunked"},
        {"content-length", "12"},
        {"upgrade", "h2c"},
        {"proxy-connection", "keep-alive"},
        {"expect", "100-continue"},
        {"trailer", "x-foo"},
        {"http2-settings", "AAMAAABkAAQAAP__"},
        {"grpc-accept-encoding", "gzip, identity"},
        {"authorization", "Bearer abc"},
        {"x-custom-bin", "AAEC"},
        {"x-request-id", "req-42"},
        {"accept-encoding", "gzip, deflate"},
        {"x-multi", "a"},
        {"x-multi", "b"},
        {NULL, NULL},
    };
    start_req(f, "/pkg.Svc/Method?$x=1&y=2", "application/grpc-web+proto", in);
    assert_non_null(f->ds.call);
    assert_int_equal(f->up.starts, 1);
    assert_true(f->up.nv_no_copy);
    /* the last one: traceparent, made by the trace filter (a new span of ours, a new trace here) */
    assert_true(f->up.req.n >= 1);
    const char *tp = f->up.req.value[f->up.req.n - 1];
    assert_string_equal(f->up.req.name[f->up.req.n - 1], "traceparent");
    assert_int_equal(strlen(tp), 55);
    assert_memory_equal(tp, "00-", 3);
    f->up.req.n--;
    static const kv_t want_req[] = {
        {":method", "POST"},
        {":scheme", "http"},
        {":path", "/pkg.Svc/Method"},
        {":authority", "gw.test:8080"},
        {"content-type", "application/grpc"},
        {"te", "trailers"},
        {"grpc-accept-encoding", "gzip, identity"},
        {"x-grpc-web", "1"},
        {"accept", "*/*"},
        {"user-agent", "test/1.0"},
        {"authorization", "Bearer abc"},
        {"x-custom-bin", "AAEC"},
        {"accept-encoding", "gzip, deflate"},
        {"x-multi", "a"},
        {"x-multi", "b"},
        {"x-request-id", "req-42"},
        {NULL, NULL},
    };
    assert_fields(&f->up.req, want_req);
    up_head(f, GRPC_HEAD);
    up_trailers(f, OK_TRAILERS);
    up_finish(f);
    assert_string_equal(f->ds.log, "HBED");

    /* no grpc-accept-encoding from the client: identity; a codec is kept in the content type */
    static const kv_t json[] = {{"x-request-id", "req-42"}, {NULL, NULL}};
    start_req(f, "/pkg.Svc/Method", "application/grpc-web-text+json", json);
    assert_string_equal(fs_get(&f->up.req, "content-type"), "application/grpc+json");
    assert_string_equal(fs_get(&f->up.req, "grpc-accept-encoding"), "identity");
    assert_null(fs_get(&f->up.req, "grpc-timeout"));
    up_close(f, NGHTTP2_CANCEL, NULL);
    assert_error_head(f, "application/grpc-web-text+json", PTC_GRPC_CANCELLED, NULL);
    fix_free(f);

    /* the upstream's configured authority replaces the client's */
    f = fix_new("upstreams: [{name: backend, endpoints: ['127.0.0.1:1'], authority: echo.internal}]\n"
                "routes: [{prefix: /, upstream: backend}]\n");
    start_web(f, false);
    assert_string_equal(fs_get(&f->up.req, ":authority"), "echo.internal");
    up_error(f, "gone");
    fix_free(f);
}

/* grpc-timeout: parsed, clamped to timeouts.max_grpc_timeout, defaulted, forwarded in its finest unit. */
static void test_grpc_timeout_forwarded(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *in, *out;
    } cases[] = {
        {"", "1S", "1000000u"},
        {"", "50m", "50000000n"},
        {"", "99999999M", "99999999M"},
        {"", "123456789012S", "5124096H"}, /* over 8 digits: saturates rather than overflows */
        {"timeouts: {max_grpc_timeout: 300ms}\n", "10S", "300000u"},
        {"timeouts: {max_grpc_timeout: 300ms}\n", "200m", "200000u"},
        {"timeouts: {max_grpc_timeout: 300ms}\n", "999999999999999999999999H", "300000u"},
        {"timeouts: {default_grpc_timeout: 1.5s}\n", NULL, "1500000u"},
        {"timeouts: {default_grpc_timeout: 1.5s}\n", "2S", "2000000u"},
        {"timeouts: {default_grpc_timeout: 5s, max_grpc_timeout: 2s}\n", NULL, "2000000u"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(cases); i++) {
        fix_t *f = fix_new(cases[i].yaml);
        kv_t h[] = {{"x-request-id", "req-42"}, {"grpc-timeout", cases[i].in}, {NULL, NULL}};
        if (cases[i].in == NULL)
            h[1].name = NULL;
        start_req(f, "/pkg.Svc/Method", "application/grpc-web", h);
        if (f->up.starts != 1)
            fail_msg("case %zu: not started", i);
        const char *v = fs_get(&f->up.req, "grpc-timeout");
        if (v == NULL || strcmp(v, cases[i].out) != 0)
            fail_msg("case %zu: grpc-timeout %s, want %s", i, v != NULL ? v : "(none)", cases[i].out);
        up_error(f, "x");
        fix_free(f);
    }

    /* malformed: INVALID_ARGUMENT at once, nothing sent upstream */
    static const char *const bad[] = {"1x", "S", "-1S", "1.5S", ""};
    fix_t *f = fix_new(NULL);
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        kv_t h[] = {{"x-request-id", "req-42"}, {"grpc-timeout", bad[i]}, {NULL, NULL}};
        start_req(f, "/pkg.Svc/Method", "application/grpc-web-text", h);
        assert_null(f->ds.call);
        assert_int_equal(f->up.starts, 0);
        assert_error_head(f, "application/grpc-web-text+proto", PTC_GRPC_INVALID_ARGUMENT, NULL);
        assert_string_equal(fs_get(&f->ds.head, "x-request-id"), "req-42");
    }
    fix_free(f);
}

/* Runs the worker's loop until the downstream is done with the call (a deadline firing). */
static void run_until_done(fix_t *f)
{
    for (int i = 0; i < 1000 && f->ds.call != NULL; i++)
        event_base_loop(f->w.base, EVLOOP_ONCE);
    assert_null(f->ds.call);
}

static void test_deadline(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    kv_t h[] = {{"x-request-id", "req-42"}, {"grpc-timeout", "20m"}, {NULL, NULL}};

    /* before the response head: trailers-only DEADLINE_EXCEEDED, the stream cancelled */
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", h);
    assert_int_equal(f->up.starts, 1);
    run_until_done(f);
    assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_DEADLINE_EXCEEDED, "deadline of 20 ms exceeded (grpc-timeout)");
    assert_int_equal(f->up.cancels, 1);
    assert_int_equal(f->up.unconsumed_at_cancel, 0);
    assert_string_equal(fs_get(&f->ds.head, "x-request-id"), "req-42");
    assert_int_equal(f->w.num_calls, 0);

    /* after a message, with bytes the stalled client has not taken: a trailer frame, the window given back */
    for (int text = 0; text < 2; text++) {
        start_req(f, "/pkg.Svc/Method", text ? "application/grpc-web-text" : "application/grpc-web", h);
        f->ds.pending = 1u << 30; /* the client does not read */
        up_head(f, GRPC_HEAD);
        want.len = 0;
        msg_add(&want, "first", false);
        up_data(f, want.b, want.len);
        assert_int_equal(f->up.consumes, 0);
        run_until_done(f);
        assert_int_equal(f->up.cancels, 1);
        assert_int_equal(f->up.unconsumed_at_cancel, 10);
        want.len = 0;
        msg_add(&want, "first", text);
        static const kv_t t[] = {{"grpc-status", "4"}, {"grpc-message", "deadline of 20 ms exceeded (grpc-timeout)"}, {NULL, NULL}};
        trailer_add(&want, t, text);
        web_t r;
        parse_web(f, text, &r);
        assert_body(f, &want);
        assert_int_equal(r.status, PTC_GRPC_DEADLINE_EXCEEDED);
    }

    /* a call that ends in time leaves no timer behind */
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", h);
    up_head(f, GRPC_HEAD);
    up_trailers(f, OK_TRAILERS);
    up_finish(f);
    assert_string_equal(f->ds.log, "HBED");
    usleep(30000);
    event_base_loop(f->w.base, EVLOOP_NONBLOCK);
    assert_string_equal(f->ds.log, "HBED");
    fix_free(f);
}

/* Head, messages, trailers: binary and text, every upstream trailer kept, hop-by-hop ones dropped. */
static void test_unary_and_streaming(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const kv_t head[] = {{":status", "200"},
                                {"content-type", "application/grpc+proto"},
                                {"x-served-by", "up1"},
                                {"content-length", "99"},
                                {"grpc-accept-encoding", "identity,gzip"},
                                {"x-meta-bin", "AAEC"},
                                {NULL, NULL}};
    static const kv_t trailers[] = {{"grpc-status", "0"},    {"grpc-message", "fine%20thanks"},
                                    {"x-trailer-meta", "v"}, {"x-bin-bin", "AAEC"},
                                    {"te", "trailers"},      {"content-type", "x"},
                                    {"content-length", "1"}, {NULL, NULL}};
    static const kv_t kept[] = {
        {"grpc-status", "0"}, {"grpc-message", "fine%20thanks"}, {"x-trailer-meta", "v"}, {"x-bin-bin", "AAEC"}, {NULL, NULL}};
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        /* request: one message, as the client sends it */
        bytes_t *rq = &got;
        rq->len = 0;
        msg_add(rq, "ping", text);
        req_body(f, rq->b, rq->len);
        req_end(f);
        up_pull(f);
        want.len = 0;
        msg_add(&want, "ping", false);
        assert_int_equal(f->up.body_len, want.len);
        assert_memory_equal(f->up.body, want.b, want.len);
        assert_true(f->up.eof);

        up_head(f, head);
        assert_string_equal(f->ds.log, "H");
        kv_t want_head[] = {{"content-type", text ? "application/grpc-web-text+proto" : "application/grpc-web+proto"},
                            {"x-served-by", "up1"},
                            {"grpc-accept-encoding", "identity,gzip"},
                            {"x-meta-bin", "AAEC"},
                            {"x-request-id", "req-42"},
                            {NULL, NULL}};
        assert_fields(&f->ds.head, want_head);
        /* three messages, one of them empty, in DATA frames that do not follow their boundaries */
        bytes_t *up = &got;
        up->len = 0;
        msg_add(up, "pong", false);
        msg_add(up, "", false);
        msg_add(up, "a longer message of forty-two bytes......", false);
        up_data(f, up->b, 7);
        up_data(f, up->b + 7, up->len - 7);
        assert_int_equal(f->up.consumed, up->len); /* the client keeps up: every byte credited */
        up_trailers(f, trailers);
        up_finish(f);
        want.len = 0;
        msg_add(&want, "pong", text);
        msg_add(&want, "", text);
        msg_add(&want, "a longer message of forty-two bytes......", text);
        trailer_add(&want, kept, text);
        web_t r;
        parse_web(f, text, &r);
        assert_body(f, &want);
        assert_int_equal(r.n, 3);
        assert_int_equal(r.status, 0);
        assert_int_equal(f->up.cancels, 0);
    }
    fix_free(f);
}

/* Response DATA split at every offset (and byte by byte) gives the same bytes downstream. */
static void test_response_split_at_every_offset(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {call_buffer_size: 64}\n"); /* frames over 59 bytes stream through unheld */
    static bytes_t up;
    up.len = 0;
    msg_add(&up, "a", false);
    msg_add(&up, "bc", false);
    msg_add(&up, "", false);
    char big[200];
    for (size_t i = 0; i < sizeof(big) - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[sizeof(big) - 1] = '\0';
    msg_add(&up, big, false);
    msg_add(&up, "def", false);
    for (int text = 0; text < 2; text++) {
        want.len = 0;
        msg_add(&want, "a", text);
        msg_add(&want, "bc", text);
        msg_add(&want, "", text);
        msg_add(&want, big, text);
        msg_add(&want, "def", text);
        trailer_add(&want, OK_TRAILERS, text);
        for (size_t split = 0; split <= up.len + 1; split++) {
            start_web(f, text);
            req_end(f);
            up_head(f, GRPC_HEAD);
            if (split <= up.len) {
                up_data(f, up.b, split);
                up_data(f, up.b + split, up.len - split);
            } else {
                for (size_t i = 0; i < up.len; i++)
                    up_data(f, up.b + i, 1);
            }
            up_trailers(f, OK_TRAILERS);
            up_finish(f);
            web_t r;
            parse_web(f, text, &r);
            assert_body(f, &want);
            assert_int_equal(f->up.consumed, up.len);
        }
    }
    fix_free(f);
}

/* The request body, binary or base64 text, split at every offset: the upstream gets the same frames. */
static void test_request_split_at_every_offset(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static bytes_t frames, inputs[4];
    frames.len = 0;
    msg_add(&frames, "hello", false);
    char big[300];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    msg_add(&frames, big, false);
    msg_add(&frames, "", false);

    /* binary; text as one base64 string; text as one padded segment per frame (grpc-web's streaming
     * client); text with line breaks */
    inputs[0] = frames;
    inputs[1].len = 0;
    b64_add(&inputs[1], frames.b, frames.len);
    inputs[2].len = 0;
    msg_add(&inputs[2], "hello", true);
    msg_add(&inputs[2], big, true);
    msg_add(&inputs[2], "", true);
    inputs[3].len = 0;
    for (size_t i = 0; i < inputs[1].len; i++) {
        bytes_add(&inputs[3], inputs[1].b + i, 1);
        if (i % 76 == 75)
            bytes_add(&inputs[3], "\r\n", 2);
    }
    for (size_t k = 0; k < PTC_ARRAY_SIZE(inputs); k++) {
        const bytes_t *in = &inputs[k];
        for (size_t split = 0; split <= in->len + 1; split++) {
            start_web(f, k != 0);
            if (split <= in->len) {
                req_body(f, in->b, split);
                up_pull(f); /* the upstream reads what is there, then waits (DEFERRED) */
                req_body(f, in->b + split, in->len - split);
            } else {
                for (size_t i = 0; i < in->len; i++) {
                    req_body(f, in->b + i, 1);
                    if (i % 7 == 0)
                        up_pull_max(f, 3);
                }
            }
            req_end(f);
            up_pull(f);
            if (f->up.body_len != frames.len || memcmp(f->up.body, frames.b, frames.len) != 0)
                fail_msg("input %zu split at %zu: the upstream got %zu bytes, want %zu", k, split, f->up.body_len, frames.len);
            assert_true(f->up.eof);
            assert_true(f->up.resumes >= 1);
            static const kv_t only[] = {
                {":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", "0"}, {NULL, NULL}};
            up_headers(f, NGHTTP2_HCAT_RESPONSE, only, true);
            up_finish(f);
            assert_string_equal(f->ds.log, "hD");
        }
    }
    fix_free(f);
}

/* Request bodies the gateway refuses: trailers-only answers, the upstream stream cancelled. */
static void test_request_body_errors(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const struct {
        bool text;
        const char *body;
        size_t len;
        int status;
        const char *message;
    } cases[] = {
        {true, "AAAA!AAA", 8, PTC_GRPC_INVALID_ARGUMENT, "request body is not valid base64 (application/grpc-web-text)"},
        {true, "AAAAAAAAA", 9, PTC_GRPC_INVALID_ARGUMENT,
         "request body is not valid base64: a single character is left at the end"},
        {false, "\0\0\0\0\5abc", 8, PTC_GRPC_INVALID_ARGUMENT,
         "request body ended inside a gRPC message (a 5-byte message was cut short)"},
        {false, "\0\0\0", 3, PTC_GRPC_INVALID_ARGUMENT, NULL},
        {false, "\x80\0\0\0\0", 5, PTC_GRPC_INTERNAL, "request frame with flags 0x80: trailer frames are only sent by servers"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(cases); i++) {
        start_web(f, cases[i].text);
        req_body(f, cases[i].body, cases[i].len);
        req_end(f);
        assert_int_equal(f->up.cancels, 1);
        assert_error_head(f, cases[i].text ? "application/grpc-web-text+proto" : "application/grpc-web+proto", cases[i].status,
                          cases[i].message);
        assert_int_equal(f->w.num_calls, 0);
    }
    fix_free(f);
}

/* Trailers-only: grpc-status in the head, no body and no trailer frame, in binary and text. */
static void test_trailers_only(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const kv_t only[] = {{":status", "200"},   {"content-type", "application/grpc"},
                                {"grpc-status", "5"}, {"grpc-message", "no%20such"},
                                {"x-why", "missing"}, {NULL, NULL}};
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        req_end(f);
        up_headers(f, NGHTTP2_HCAT_RESPONSE, only, true);
        assert_null(f->ds.call); /* done at once */
        up_finish(f);
        kv_t want_head[] = {{"content-type", text ? "application/grpc-web-text+proto" : "application/grpc-web+proto"},
                            {"grpc-status", "5"},
                            {"grpc-message", "no%20such"},
                            {"x-why", "missing"},
                            {"x-request-id", "req-42"},
                            {NULL, NULL}};
        assert_string_equal(f->ds.log, "hD");
        assert_fields(&f->ds.head, want_head);
        assert_int_equal(f->ds.body_len, 0);
        assert_int_equal(f->up.cancels, 0);
    }
    /* a trailers-only answer without grpc-status is no answer */
    static const kv_t nostatus[] = {{":status", "200"}, {"content-type", "application/grpc"}, {NULL, NULL}};
    start_web(f, false);
    up_headers(f, NGHTTP2_HCAT_RESPONSE, nostatus, true);
    assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_UNKNOWN, "upstream ended the call without grpc-status");
    assert_int_equal(f->up.cancels, 1);
    fix_free(f);
}

/* An error status after messages: the messages, then the status in the trailer frame. */
static void test_error_after_messages(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const kv_t t[] = {{"grpc-status", "13"}, {"grpc-message", "boom%0Aat%20item%202"}, {NULL, NULL}};
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        req_end(f);
        up_head(f, GRPC_HEAD);
        got.len = 0;
        msg_add(&got, "item 1", false);
        msg_add(&got, "item 2", false);
        up_data(f, got.b, got.len);
        up_trailers(f, t);
        up_finish(f);
        want.len = 0;
        msg_add(&want, "item 1", text);
        msg_add(&want, "item 2", text);
        trailer_add(&want, t, text);
        web_t r;
        parse_web(f, text, &r);
        assert_body(f, &want);
        assert_int_equal(r.status, PTC_GRPC_INTERNAL);
        assert_string_equal(r.message, "boom\nat item 2");
    }
    fix_free(f);
}

/* An upstream that does not speak gRPC: the status from its HTTP status, its body quoted in grpc-message. */
static void test_non_grpc_upstream(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const kv_t h503[] = {{":status", "503"}, {"content-type", "text/html"}, {"x-lb", "1"}, {NULL, NULL}};
    static const char html[] = "<html>\n<body>upstream overloaded: 100% busy</body>\n</html>\n";
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        req_end(f);
        up_head(f, h503);
        assert_string_equal(f->ds.log, ""); /* nothing goes out until the body explains */
        up_data(f, html, 20);
        up_data(f, html + 20, strlen(html) - 20);
        assert_int_equal(f->up.consumed, strlen(html));
        up_data_end(f);
        assert_error_head(f, text ? "application/grpc-web-text+proto" : "application/grpc-web+proto", PTC_GRPC_UNAVAILABLE, NULL);
        char msg[256];
        snprintf(msg, sizeof(msg), "upstream answered HTTP 503 (content-type 'text/html'), not gRPC: %s", html);
        assert_string_equal(pct_decode(fs_get(&f->ds.head, "grpc-message")), msg);
        assert_null(strchr(fs_get(&f->ds.head, "grpc-message"), '\n')); /* percent-encoded on the wire */
        assert_null(fs_get(&f->ds.head, "x-lb"));
        assert_string_equal(fs_get(&f->ds.head, "x-request-id"), "req-42");
        up_finish(f); /* harmless: the call cancelled the stream already */
    }

    /* other statuses; a head-only answer; a reset after a non-gRPC head */
    static const struct {
        const char *status, *ctype;
        bool end_stream;
        int grpc;
    } cases[] = {
        {"200", "text/plain", false, PTC_GRPC_UNKNOWN},     {"404", "text/html", true, PTC_GRPC_UNIMPLEMENTED},
        {"502", "text/plain", true, PTC_GRPC_UNAVAILABLE},  {"401", "application/json", false, PTC_GRPC_UNAUTHENTICATED},
        {"429", "text/plain", false, PTC_GRPC_UNAVAILABLE}, {"500", "application/grpc", true, PTC_GRPC_UNKNOWN},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(cases); i++) {
        kv_t h[] = {{":status", cases[i].status}, {"content-type", cases[i].ctype}, {NULL, NULL}};
        start_web(f, false);
        up_headers(f, NGHTTP2_HCAT_RESPONSE, h, cases[i].end_stream);
        if (!cases[i].end_stream) {
            up_data(f, "oops", 4);
            up_close(f, NGHTTP2_NO_ERROR, NULL);
        }
        assert_error_head(f, "application/grpc-web+proto", cases[i].grpc, NULL);
        char msg[256];
        snprintf(msg, sizeof(msg), "upstream answered HTTP %s (content-type '%s'), not gRPC: %s", cases[i].status, cases[i].ctype,
                 cases[i].end_stream ? "" : "oops");
        assert_string_equal(pct_decode(fs_get(&f->ds.head, "grpc-message")), msg);
        up_finish(f);
    }

    /* a long body: 512 bytes are enough to explain; the rest is not read, and its window comes back */
    static char long_body[2000];
    memset(long_body, 'x', sizeof(long_body));
    start_web(f, false);
    up_head(f, h503);
    up_data(f, long_body, 300);
    assert_int_equal(f->up.consumed, 300);
    up_data(f, long_body, 1000);
    assert_int_equal(f->up.cancels, 1);
    assert_int_equal(f->up.unconsumed_at_cancel, 1000);
    assert_int_equal(f->up.consumed, 300);
    assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_UNAVAILABLE, NULL);
    assert_int_equal(strlen(pct_decode(fs_get(&f->ds.head, "grpc-message"))),
                     strlen("upstream answered HTTP 503 (content-type 'text/html'), not gRPC: ") + 512);
    fix_free(f);
}

static const struct {
    uint32_t code;
    int status;
    const char *name;
} RESETS[] = {
    {NGHTTP2_REFUSED_STREAM, PTC_GRPC_UNAVAILABLE, "REFUSED_STREAM"},
    {NGHTTP2_CANCEL, PTC_GRPC_CANCELLED, "CANCEL"},
    {NGHTTP2_ENHANCE_YOUR_CALM, PTC_GRPC_RESOURCE_EXHAUSTED, "ENHANCE_YOUR_CALM"},
    {NGHTTP2_INADEQUATE_SECURITY, PTC_GRPC_PERMISSION_DENIED, "INADEQUATE_SECURITY"},
    {NGHTTP2_PROTOCOL_ERROR, PTC_GRPC_INTERNAL, "PROTOCOL_ERROR"},
    {NGHTTP2_INTERNAL_ERROR, PTC_GRPC_INTERNAL, "INTERNAL_ERROR"},
    {NGHTTP2_FLOW_CONTROL_ERROR, PTC_GRPC_INTERNAL, "FLOW_CONTROL_ERROR"},
};

/*
 * Where the upstream can fail, and what a gRPC-Web client gets for each: before the head (trailers-only),
 * after the head or between messages (a trailer frame), inside a small message (held, so dropped: the
 * body still ends with a clean trailer frame), inside a large message of which part went out (the
 * response is cut off), after the trailers (nothing: the response is complete).
 */
typedef enum {
    AT_BEFORE_HEAD,
    AT_AFTER_HEAD,
    AT_BETWEEN_MESSAGES,
    AT_IN_FRAME_HEADER, /* 3 bytes of the next frame's 5-byte header: nothing of it went out */
    AT_IN_SMALL,
    AT_IN_LARGE,
    AT_AFTER_TRAILERS,
    AT_COUNT
} point_t;

static const char *const POINTS[] = {"before head",      "after head",       "between messages", "in a frame header",
                                     "in small message", "in large message", "after trailers"};

static char LARGE[3000]; /* over the 1 KiB call buffer of fail_at's fixture: streams through */

/* Runs a call up to point `at`, then end() ends it; checks the client's view. */
static void fail_at(fix_t *f, point_t at, bool text, void (*end)(fix_t *f, const void *arg), const void *arg, int status,
                    const char *message)
{
    start_web(f, text);
    req_end(f);
    want.len = 0;
    if (at != AT_BEFORE_HEAD) {
        up_head(f, GRPC_HEAD);
        if (at != AT_AFTER_HEAD) {
            got.len = 0;
            msg_add(&got, "complete", false);
            up_data(f, got.b, got.len);
            msg_add(&want, "complete", text);
        }
        if (at == AT_IN_FRAME_HEADER) {
            up_data(f, "\0\0\0", 3);
        } else if (at == AT_IN_SMALL) {
            got.len = 0;
            msg_add(&got, "cut short", false);
            up_data(f, got.b, 8); /* header and 3 bytes of 9 */
        } else if (at == AT_IN_LARGE) {
            got.len = 0;
            msg_add(&got, LARGE, false);
            up_data(f, got.b, 1001);
            assert_int_equal(f->ds.log[f->ds.loglen - 1], 'B'); /* part of it went out */
        } else if (at == AT_AFTER_TRAILERS) {
            up_trailers(f, OK_TRAILERS);
            trailer_add(&want, OK_TRAILERS, text);
        }
    }
    end(f, arg);
    if (f->up.s != NULL) /* the call did not cancel it (AT_AFTER_TRAILERS) */
        up_finish(f);
    assert_null(f->ds.call);
    assert_int_equal(f->w.num_calls, 0);
    if (at == AT_IN_LARGE) {
        /* cut off: the complete message and the part of the large one received, then abort; no end */
        assert_string_equal(f->ds.log, "HBA");
        got.len = 0;
        msg_add(&got, LARGE, false);
        if (!text) {
            bytes_add(&want, got.b, 1001);
            assert_body(f, &want);
        } else {
            size_t prefix = want.len;
            b64_add(&want, got.b, 999); /* whole 3-byte groups go out as they come; the rest waits */
            assert_body(f, &want);
            assert_true(f->ds.body_len > prefix);
        }
        return;
    }
    if (strcmp(f->ds.log, "HBED") != 0 && strcmp(f->ds.log, "hD") != 0)
        fail_msg("%s: the downstream saw '%s'", POINTS[at], f->ds.log);
    web_t r;
    parse_web(f, text, &r);
    if (at == AT_AFTER_TRAILERS) {
        assert_body(f, &want);
        assert_int_equal(r.status, 0);
        return;
    }
    if (r.trailers_only != (at == AT_BEFORE_HEAD) || r.status != status || (message != NULL && strcmp(r.message, message) != 0))
        fail_msg("%s: grpc-status %d '%s', want %d '%s'", POINTS[at], r.status, r.message, status, message != NULL ? message : "");
    if (!r.trailers_only) {
        char code[8];
        snprintf(code, sizeof(code), "%d", status);
        kv_t t[] = {{"grpc-status", code}, {"grpc-message", fs_get(&r.tr, "grpc-message")}, {NULL, NULL}};
        trailer_add(&want, t, text);
        assert_body(f, &want);
        assert_int_equal(r.n, at == AT_AFTER_HEAD ? 0 : 1);
    }
}

static void do_reset(fix_t *f, const void *arg)
{
    up_close(f, *(const uint32_t *)arg, NULL);
}

static void do_conn_lost(fix_t *f, const void *arg)
{
    up_close(f, NGHTTP2_INTERNAL_ERROR, arg);
}

static void test_upstream_reset(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {call_buffer_size: 1KiB}\n");
    memset(LARGE, 'L', sizeof(LARGE) - 1);
    for (int text = 0; text < 2; text++) {
        for (size_t i = 0; i < PTC_ARRAY_SIZE(RESETS); i++) {
            char msg[128];
            snprintf(msg, sizeof(msg), "upstream reset the stream (HTTP/2 error %s)", RESETS[i].name);
            for (point_t at = 0; at < AT_COUNT; at++)
                fail_at(f, at, text, do_reset, &RESETS[i].code, RESETS[i].status, msg);
        }
        /* closed with NO_ERROR but without trailers */
        uint32_t none = NGHTTP2_NO_ERROR;
        for (point_t at = 0; at < AT_COUNT; at++)
            fail_at(f, at, text, do_reset, &none, PTC_GRPC_INTERNAL, "upstream closed the stream without trailers");
    }
    fix_free(f);
}

static void test_connection_lost(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {call_buffer_size: 1KiB}\n");
    memset(LARGE, 'L', sizeof(LARGE) - 1);
    for (int text = 0; text < 2; text++)
        for (point_t at = 0; at < AT_COUNT; at++)
            fail_at(f, at, text, do_conn_lost, "upstream connection lost: GOAWAY received", PTC_GRPC_UNAVAILABLE,
                    "upstream connection lost: GOAWAY received");
    fix_free(f);
}

/* The upstream stream ends (END_STREAM on DATA) without trailers. */
static void do_data_end(fix_t *f, const void *arg)
{
    (void)arg;
    up_data_end(f);
}

static void test_data_end_without_trailers(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {call_buffer_size: 1KiB}\n");
    memset(LARGE, 'L', sizeof(LARGE) - 1);
    for (int text = 0; text < 2; text++) {
        for (point_t at = AT_AFTER_HEAD; at < AT_AFTER_TRAILERS; at++) {
            int st = PTC_GRPC_INTERNAL;
            fail_at(f, at, text, do_data_end, NULL, st, "upstream ended the stream without trailers");
        }
    }
    fix_free(f);
}

/* No stream could be opened: UNAVAILABLE with the pool's reason, whether start() said so at once or later. */
static void test_upstream_error_before_stream(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const char why[] = "upstream 'backend' unavailable: connect: Connection refused (next attempt in 100 ms)";
    start_web(f, true);
    assert_non_null(f->ds.call);
    req_body(f, "AAAAAAFh", 8);
    up_error(f, why);
    assert_error_head(f, "application/grpc-web-text+proto", PTC_GRPC_UNAVAILABLE, why);
    assert_string_equal(fs_get(&f->ds.head, "x-request-id"), "req-42");
    assert_int_equal(f->up.cancels, 0);

    /* from inside start(): the call is over before ptc_call_start() returns */
    fix_reset(f);
    f->up.refuse = "upstream 'backend' overloaded: 1024 calls already waiting for a connection (max_pending)";
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", RID);
    assert_null(f->ds.call);
    assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_UNAVAILABLE,
                      "upstream 'backend' overloaded: 1024 calls already waiting for a connection (max_pending)");
    assert_int_equal(f->w.num_calls, 0);
    f->up.refuse = NULL;
    fix_free(f);
}

/* grpc-status must be 1-9 digits: anything else is UNKNOWN, in trailers and in a trailers-only head. */
static void test_invalid_grpc_status(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const char *const bad[] = {"1x", "-1", "", " 0", "0 ", "+1", "1234567890", "٣"};
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        char msg[64];
        snprintf(msg, sizeof(msg), "upstream sent an invalid grpc-status '%s'", bad[i]);
        kv_t t[] = {{"grpc-status", bad[i]}, {"grpc-message", "ignored"}, {NULL, NULL}};
        for (int text = 0; text < 2; text++) {
            start_web(f, text);
            req_end(f);
            up_head(f, GRPC_HEAD);
            up_data(f, "\0\0\0\0\2hi", 7);
            up_trailers(f, t);
            web_t r;
            parse_web(f, text, &r);
            assert_int_equal(r.n, 1);
            assert_int_equal(r.status, PTC_GRPC_UNKNOWN);
            assert_string_equal(r.message, msg);
            assert_int_equal(f->up.cancels, 1);
        }
        kv_t only[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", bad[i]}, {NULL, NULL}};
        start_web(f, false);
        up_headers(f, NGHTTP2_HCAT_RESPONSE, only, true);
        assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_UNKNOWN, msg);
    }
    /* trailers without grpc-status */
    static const kv_t none[] = {{"grpc-message", "where is it"}, {NULL, NULL}};
    start_web(f, false);
    up_head(f, GRPC_HEAD);
    up_trailers(f, none);
    web_t r;
    parse_web(f, false, &r);
    assert_int_equal(r.status, PTC_GRPC_UNKNOWN);
    assert_string_equal(r.message, "upstream trailers carry no grpc-status");
    fix_free(f);
}

/* The client goes away: the upstream stream is cancelled with the window it was never credited, and the
 * downstream hears nothing more. */
static void test_client_goes_away(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {call_buffer_size: 100}\n");
    static const kv_t h[] = {{"x-request-id", "req-42"}, {"grpc-timeout", "5m"}, {NULL, NULL}};
    for (int at = 0; at < 4; at++) {
        start_req(f, "/pkg.Svc/Method", at % 2 != 0 ? "application/grpc-web-text" : "application/grpc-web", h);
        ptc_call_t *call = f->ds.call;
        size_t unconsumed = 0;
        if (at >= 1) {
            if (at % 2 != 0)
                req_body(f, "AAAAAAF4", 8); /* the same message in base64 */
            else
                req_body(f, "\0\0\0\0\1x", 6);
            up_head(f, GRPC_HEAD);
        }
        if (at >= 2) {
            f->ds.pending = 101; /* over the call buffer: the client is slow */
            up_data(f, "\0\0\0\0\3abc", 8);
            up_data(f, "\0\0\0\0\1d\0", 7);
            unconsumed = 15;
            assert_int_equal(f->up.consumes, 0);
        }
        if (at == 3) {
            f->ds.pending = 0;
            ptc_call_on_downstream_writable(call);
            assert_int_equal(f->up.consumed, 15);
            f->ds.pending = 1000;
            up_data(f, "\0\0\0", 3); /* inside a frame header, not credited */
            unconsumed = 3;
        }
        char before[256];
        snprintf(before, sizeof(before), "%s", f->ds.log);
        f->ds.call = NULL;
        f->ds.gone = true;
        ptc_call_detach_downstream(call, "connection reset by peer");
        assert_int_equal(f->up.cancels, 1);
        assert_int_equal(f->up.unconsumed_at_cancel, unconsumed);
        assert_null(f->up.s);
        assert_int_equal(f->w.num_calls, 0);
        assert_string_equal(f->ds.log, before);
        /* the deadline would have fired by now: its timer went with the call */
        usleep(10000);
        event_base_loop(f->w.base, EVLOOP_NONBLOCK);
        assert_string_equal(f->ds.log, before);
    }

    /* the upstream answered already but the call still waits for on_close: nothing to cancel */
    start_web(f, false);
    req_end(f);
    up_pull(f);
    static const kv_t only[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", "0"}, {NULL, NULL}};
    up_headers(f, NGHTTP2_HCAT_RESPONSE, only, true);
    assert_null(f->ds.call);
    assert_int_equal(f->w.num_calls, 1); /* until the stream closes */
    up_finish(f);
    assert_int_equal(f->w.num_calls, 0);
    assert_int_equal(f->up.cancels, 0);
    fix_free(f);
}

/* ptc_call_abort (the gateway shuts down): a well-formed ending with the gateway's status. */
static void test_call_abort(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        ptc_call_abort(f->ds.call, PTC_GRPC_UNAVAILABLE, "gateway shutting down (drain timeout)");
        assert_int_equal(f->up.cancels, 1);
        assert_error_head(f, text ? "application/grpc-web-text+proto" : "application/grpc-web+proto", PTC_GRPC_UNAVAILABLE,
                          "gateway shutting down (drain timeout)");

        start_web(f, text);
        up_head(f, GRPC_HEAD);
        up_data(f, "\0\0\0\0\2hi\0\0\0", 10); /* a message and part of the next */
        ptc_call_abort(f->ds.call, PTC_GRPC_UNAVAILABLE, "gateway shutting down (drain timeout)");
        want.len = 0;
        msg_add(&want, "hi", text);
        static const kv_t t[] = {{"grpc-status", "14"}, {"grpc-message", "gateway shutting down (drain timeout)"}, {NULL, NULL}};
        trailer_add(&want, t, text);
        web_t r;
        parse_web(f, text, &r);
        assert_body(f, &want);
        assert_int_equal(f->w.num_calls, 0);
    }
    fix_free(f);
}

/*
 * The recording hook: every way a call ends and a local answer are counted in the worker's metrics exactly once,
 * and written to the access log as one JSON line each.
 */
static void test_metrics_and_access_log(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    char path[] = "/tmp/ptc-call-alog-XXXXXX", err[256], json[] = "json";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    ptc_access_log_config_t acfg = {path, json, 65536};
    assert_int_equal(ptc_access_log_new(&f->snap->access_log, &acfg, 1, err, sizeof(err)), 0);
    ptc_worker_metrics_t *m = &f->w.metrics;

    /* 1: OK, binary, one message each way */
    start_web(f, false);
    got.len = 0;
    msg_add(&got, "ping", false);
    req_body(f, got.b, got.len);
    req_end(f);
    up_pull(f);
    up_head(f, GRPC_HEAD);
    got.len = 0;
    msg_add(&got, "pong", false);
    up_data(f, got.b, got.len);
    up_trailers(f, OK_TRAILERS);
    up_finish(f);
    size_t out1 = f->ds.body_len;
    /* 2: a server stream in text mode: three messages, then NOT_FOUND with a percent-encoded message */
    start_web(f, true);
    got.len = 0;
    msg_add(&got, "ping", true);
    req_body(f, got.b, got.len);
    req_end(f);
    up_head(f, GRPC_HEAD);
    got.len = 0;
    msg_add(&got, "a", false);
    msg_add(&got, "b", false);
    msg_add(&got, "c", false);
    up_data(f, got.b, got.len);
    static const kv_t nf[] = {{"grpc-status", "5"}, {"grpc-message", "no%20such%20thing"}, {NULL, NULL}};
    up_trailers(f, nf);
    up_finish(f);
    /* 3: the client goes away */
    start_web(f, false);
    ptc_call_t *call = f->ds.call;
    f->ds.call = NULL;
    f->ds.gone = true;
    ptc_call_detach_downstream(call, "connection reset by peer");
    /* 4: a gateway-made error (the deadline) */
    start_web(f, false);
    ptc_call_abort(f->ds.call, PTC_GRPC_DEADLINE_EXCEEDED, "deadline of 5 ms exceeded (grpc-timeout)");
    up_finish(f);
    /* 5: a local answer: not gRPC-Web */
    start_req(f, "/pkg.Svc/Method", "text/plain", RID);

    const ptc_method_stats_t *e = ptc_metrics_method(m, PTC_STRLIT("/pkg.Svc/Method"), 1000);
    assert_int_equal(atomic_load(&m->num_methods), 1);
    assert_int_equal(e->started, 4);
    assert_int_equal(e->handled[PTC_GRPC_OK], 1);
    assert_int_equal(e->handled[PTC_GRPC_NOT_FOUND], 1);
    assert_int_equal(e->handled[PTC_GRPC_CANCELLED], 1);
    assert_int_equal(e->handled[PTC_GRPC_DEADLINE_EXCEEDED], 1);
    assert_int_equal(e->msg_received, 2);
    assert_int_equal(e->msg_sent, 4);
    assert_int_equal(e->shape, PTC_SHAPE_SERVER_STREAM);
    uint64_t count = 0;
    for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++)
        count += e->handling.bucket[i];
    assert_int_equal(count, 4);
    assert_int_equal(m->calls_started, 4);
    assert_int_equal(m->calls_ended, 4);
    const ptc_transport_stats_t *bin = &m->transports[PTC_TRANSPORT_HTTP1][PTC_PROTO_GRPC_WEB];
    const ptc_transport_stats_t *txt = &m->transports[PTC_TRANSPORT_HTTP1][PTC_PROTO_GRPC_WEB_TEXT];
    assert_int_equal(bin->bytes_in, 9);
    assert_int_equal(bin->bytes_out, out1); /* the two errors were trailers-only: no body */
    assert_int_equal(txt->bytes_in, 12);    /* 9 bytes in base64 */
    assert_int_equal(bin->msgs_out, 1);
    assert_int_equal(txt->msgs_out, 3);
    size_t s415 = 0;
    while (ptc_local_statuses[s415] != 415)
        s415++;
    assert_int_equal(m->local[s415][PTC_GRPC_CODES], 1); /* 415, not gRPC */
    ptc_upstream_stats_t *up = ptc_metrics_upstream(m, "backend");
    count = 0;
    for (size_t i = 0; i <= PTC_HIST_BUCKETS; i++)
        count += up->duration.bucket[i];
    assert_int_equal(count, 4);
    assert_int_equal(m->access_log_lines, 5);
    assert_int_equal(m->access_log_dropped, 0);

    fix_free(f); /* the snapshot goes, and with it the sink */
    assert_true(ptc_access_log_wait_all(5000));
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char lines[5][PTC_ACCESS_LOG_LINE_MAX];
    for (int i = 0; i < 5; i++)
        assert_non_null(fgets(lines[i], sizeof(lines[i]), fp));
    assert_null(fgets(lines[0] + 4000, 10, fp));
    fclose(fp);
    unlink(path);
    static const char *const want_parts[5][4] = {
        {"\"kind\":\"call\"", "\"grpc_status\":0,\"grpc_message\":null", "\"messages_in\":1,\"messages_out\":1", "\"peer\":\"192.0.2.7:4711\""},
        {"\"encoding\":\"text\"", "\"grpc_status\":5,\"grpc_message\":\"no such thing\"", "\"bytes_in\":12", "\"messages_out\":3"},
        {"\"grpc_status\":1,\"grpc_message\":\"connection reset by peer\"", "\"http_status\":0", "\"ttfb_ms\":null",
         "\"request_id\":\"req-42\""},
        {"\"grpc_status\":4,\"grpc_message\":\"deadline of 5 ms exceeded (grpc-timeout)\"", "\"http_status\":200",
         "\"upstream\":\"backend\"", "\"route\":\"/\""},
        {"\"kind\":\"local\"", "\"http_status\":415", "\"protocol\":\"http\"", "\"grpc_status\":null"},
    };
    for (int i = 0; i < 5; i++) {
        assert_true(lines[i][0] == '{' && strstr(lines[i], "}\n") != NULL);
        for (int j = 0; j < 4; j++)
            if (strstr(lines[i], want_parts[i][j]) == NULL)
                fail_msg("line %d: no %s in %s", i + 1, want_parts[i][j], lines[i]);
    }
}

/* End-to-end flow control: the upstream is credited only while the client keeps up. */
static void test_backpressure_response(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {call_buffer_size: 1000}\n");
    start_web(f, false);
    req_end(f);
    up_head(f, GRPC_HEAD);
    f->ds.pending = 1000; /* at the limit: still credited */
    up_data(f, "\0\0\0\0\3abc", 8);
    assert_int_equal(f->up.consumed, 8);
    f->ds.pending = 1001;
    up_data(f, "\0\0\0\0\3def", 8);
    up_data(f, "\0\0\0\0\1g", 6);
    assert_int_equal(f->up.consumed, 8);
    assert_int_equal(f->up.consumes, 1);
    assert_int_equal(f->ds.body_len, 22); /* the bytes went to the client all the same */
    ptc_call_on_downstream_writable(f->ds.call);
    assert_int_equal(f->up.consumed, 22);
    ptc_call_on_downstream_writable(f->ds.call); /* nothing more to credit */
    assert_int_equal(f->up.consumes, 2);
    f->ds.pending = 0;
    up_data(f, "\0\0\0\0\1h", 6);
    assert_int_equal(f->up.consumed, 28);
    up_trailers(f, OK_TRAILERS);
    up_finish(f);
    web_t r;
    parse_web(f, false, &r);
    assert_int_equal(r.n, 4);
    fix_free(f);
}

/* A request body over call_buffer_size stops the client's reads; the upstream draining it resumes them. */
static void test_backpressure_request(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {call_buffer_size: 1000}\n");
    static char msg[400];
    memset(msg, 'm', sizeof(msg) - 1);
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        got.len = 0;
        for (int i = 0; i < 3; i++)
            msg_add(&got, msg, text);
        size_t per = got.len / 3;
        req_body(f, got.b, per);
        req_body(f, got.b + per, per);
        assert_false(f->ds.paused); /* 808 bytes buffered */
        req_body(f, got.b + 2 * per, per);
        assert_true(f->ds.paused); /* 1212 */
        assert_int_equal(f->ds.pauses, 1);
        /* the upstream reads 100 bytes per DATA frame; reads resume once at most half the buffer is left */
        while (f->ds.paused) {
            assert_true(f->up.body_len < 1212 - 500);
            assert_true(up_pull_once(f, 100));
        }
        assert_int_equal(f->ds.resumes, 1);
        assert_int_equal(f->up.body_len, 800); /* 412 left */
        req_end(f);
        up_pull(f);
        assert_int_equal(f->up.body_len, 1212);
        assert_true(f->up.eof);
        up_error(f, "done");
        assert_null(f->ds.call);
    }
    fix_free(f);
}

/* limits.max_message_size, both ways: RESOURCE_EXHAUSTED. */
static void test_message_size_limits(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {max_message_size: 1KiB}\n");
    static char m[1026];
    memset(m, 'q', sizeof(m) - 1);

    /* request: exactly the limit passes, one byte more does not */
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        m[1024] = '\0';
        got.len = 0;
        msg_add(&got, m, text);
        req_body(f, got.b, got.len);
        req_end(f);
        up_pull(f);
        assert_int_equal(f->up.body_len, 1029);
        up_error(f, "x");

        start_web(f, text);
        m[1024] = 'q';
        got.len = 0;
        msg_add(&got, m, text);
        req_body(f, got.b, 20);
        assert_int_equal(f->up.cancels, 1);
        assert_error_head(f, text ? "application/grpc-web-text+proto" : "application/grpc-web+proto", PTC_GRPC_RESOURCE_EXHAUSTED,
                          "request message of 1025 bytes exceeds the gateway limit of 1024 bytes (limits.max_message_size)");
        assert_int_equal(f->w.num_calls, 0);
    }

    /* response: the messages before it, then RESOURCE_EXHAUSTED in the trailer frame */
    for (int text = 0; text < 2; text++) {
        start_web(f, text);
        req_end(f);
        up_head(f, GRPC_HEAD);
        got.len = 0;
        m[1024] = '\0';
        msg_add(&got, m, false);
        m[1024] = 'q';
        msg_add(&got, m, false);
        up_data(f, got.b, got.len);
        assert_int_equal(f->up.cancels, 1);
        assert_int_equal(f->up.unconsumed_at_cancel, got.len);
        want.len = 0;
        m[1024] = '\0';
        msg_add(&want, m, text);
        m[1024] = 'q';
        static const kv_t t[] = {
            {"grpc-status", "8"},
            {"grpc-message", "response message of 1025 bytes exceeds the gateway limit of 1024 bytes (limits.max_message_size)"},
            {NULL, NULL}};
        trailer_add(&want, t, text);
        web_t r;
        parse_web(f, text, &r);
        assert_body(f, &want);
    }
    fix_free(f);
}

/* grpc-encoding gzip/deflate frames are inflated for gRPC-Web clients; corrupt or unknown ones fail. */
static void test_compressed_response(void **state)
{
    (void)state;
    fix_t *f = fix_new("limits: {max_message_size: 2KiB}\n");
    static char plain[1500];
    for (size_t i = 0; i < sizeof(plain) - 1; i++)
        plain[i] = (char)('a' + i % 7);
    static bytes_t z;
    static const struct {
        const char *name;
        int bits;
    } encs[] = {{"gzip", 16 + MAX_WBITS}, {"deflate", MAX_WBITS}, {"GZip", 16 + MAX_WBITS}};
    for (int text = 0; text < 2; text++) {
        for (size_t e = 0; e < PTC_ARRAY_SIZE(encs); e++) {
            kv_t head[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-encoding", encs[e].name}, {NULL, NULL}};
            start_web(f, text);
            req_end(f);
            up_head(f, head);
            assert_null(fs_get(&f->ds.head, "grpc-encoding")); /* the client gets plain frames */
            z.len = 0;
            gzip_bytes(&z, plain, strlen(plain), encs[e].bits);
            got.len = 0;
            frame_add(&got, 1, z.b, z.len, false); /* compressed */
            msg_add(&got, "plain too", false);     /* a frame may also come uncompressed */
            for (size_t i = 0; i < got.len; i += 13)
                up_data(f, got.b + i, PTC_MIN((size_t)13, got.len - i));
            up_trailers(f, OK_TRAILERS);
            up_finish(f);
            want.len = 0;
            msg_add(&want, plain, text);
            msg_add(&want, "plain too", text);
            trailer_add(&want, OK_TRAILERS, text);
            web_t r;
            parse_web(f, text, &r);
            assert_body(f, &want);
            assert_int_equal(r.flags[0], 0);
        }
    }

    /* what cannot be inflated */
    z.len = 0;
    gzip_bytes(&z, plain, strlen(plain), 16 + MAX_WBITS);
    static char bigger[2100];
    memset(bigger, 'b', sizeof(bigger) - 1);
    static bytes_t zbig;
    zbig.len = 0;
    gzip_bytes(&zbig, bigger, strlen(bigger), 16 + MAX_WBITS);
    static const struct {
        const char *enc;
        int mangle; /* 0: as is; 1: corrupt; 2: truncated; 3: too big inflated; 4: trailing garbage */
        int status;
        const char *message;
    } bad[] = {
        {"snappy", 0, PTC_GRPC_INTERNAL,
         "upstream sent a compressed message with grpc-encoding 'snappy', which the gateway cannot decode"},
        {NULL, 0, PTC_GRPC_INTERNAL,
         "upstream sent a compressed message with grpc-encoding 'identity', which the gateway cannot decode"},
        {"gzip", 1, PTC_GRPC_INTERNAL, NULL},
        {"gzip", 2, PTC_GRPC_INTERNAL, NULL},
        {"gzip", 3, PTC_GRPC_RESOURCE_EXHAUSTED,
         "decompressed response message exceeds the gateway limit of 2048 bytes (limits.max_message_size)"},
        {"gzip", 4, PTC_GRPC_INTERNAL, NULL},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(bad); i++) {
        kv_t head[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-encoding", bad[i].enc}, {NULL, NULL}};
        if (bad[i].enc == NULL)
            head[2].name = NULL;
        start_web(f, false);
        req_end(f);
        up_head(f, head);
        got.len = 0;
        msg_add(&got, "first", false);
        const bytes_t *src = bad[i].mangle == 3 ? &zbig : &z;
        static bytes_t payload;
        payload = *src;
        if (bad[i].mangle == 1)
            payload.b[payload.len / 2] ^= 0x55;
        if (bad[i].mangle == 2)
            payload.len -= 9;
        if (bad[i].mangle == 4)
            bytes_add(&payload, "junk", 4);
        frame_add(&got, 1, payload.b, payload.len, false);
        up_data(f, got.b, got.len);
        assert_int_equal(f->up.cancels, 1);
        web_t r;
        parse_web(f, false, &r);
        assert_int_equal(r.n, 1); /* "first" */
        assert_memory_equal(r.msg[0], "first", 5);
        assert_int_equal(r.status, bad[i].status);
        if (bad[i].message != NULL)
            assert_string_equal(r.message, bad[i].message);
        else
            assert_non_null(strstr(r.message, "upstream sent a corrupt gzip-compressed message"));
    }
    fix_free(f);
}

/* Native gRPC (HTTP/2 clients): content type, grpc-encoding and compressed frames pass through unchanged,
 * trailers go out as HTTP/2 trailers. */
static void test_native_grpc(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const kv_t head[] = {
        {":status", "200"}, {"content-type", "application/grpc+proto"}, {"grpc-encoding", "gzip"}, {"x-meta", "1"}, {NULL, NULL}};
    static const kv_t trailers[] = {{"grpc-status", "0"}, {"x-tmeta", "t"}, {NULL, NULL}};
    start_req(f, "/pkg.Svc/Method", "application/grpc", RID);
    assert_string_equal(fs_get(&f->up.req, "content-type"), "application/grpc");
    got.len = 0;
    msg_add(&got, "req", false);
    req_body(f, got.b, got.len);
    req_end(f);
    up_pull(f);
    assert_int_equal(f->up.body_len, got.len);
    up_head(f, head);
    static const kv_t want_head[] = {{"content-type", "application/grpc+proto"},
                                     {"grpc-encoding", "gzip"},
                                     {"x-meta", "1"},
                                     {"x-request-id", "req-42"},
                                     {NULL, NULL}};
    assert_fields(&f->ds.head, want_head);
    got.len = 0;
    frame_add(&got, 1, "\x1f\x8b not inflated", 15, false);
    msg_add(&got, "plain", false);
    up_data(f, got.b, 9);
    up_data(f, got.b + 9, got.len - 9);
    up_trailers(f, trailers);
    up_finish(f);
    assert_string_equal(f->ds.log, "HBTD");
    assert_int_equal(f->ds.body_len, got.len);
    assert_memory_equal(f->ds.body, got.b, got.len);
    assert_fields(&f->ds.trailers, trailers);

    /* trailers-only, and a gateway-made error after the head */
    static const kv_t only[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", "7"}, {NULL, NULL}};
    start_req(f, "/pkg.Svc/Method", "application/grpc", RID);
    up_headers(f, NGHTTP2_HCAT_RESPONSE, only, true);
    up_finish(f);
    static const kv_t want_only[] = {
        {"content-type", "application/grpc"}, {"grpc-status", "7"}, {"x-request-id", "req-42"}, {NULL, NULL}};
    assert_string_equal(f->ds.log, "hD");
    assert_fields(&f->ds.head, want_only);

    start_req(f, "/pkg.Svc/Method", "application/grpc", RID);
    up_head(f, head);
    up_data(f, "\0\0\0\0\2hi\0", 8);
    up_close(f, NGHTTP2_REFUSED_STREAM, NULL);
    assert_string_equal(f->ds.log, "HBTD");
    assert_int_equal(f->ds.body_len, 7);
    static const kv_t want_err[] = {
        {"grpc-status", "14"}, {"grpc-message", "upstream reset the stream (HTTP/2 error REFUSED_STREAM)"}, {NULL, NULL}};
    assert_fields(&f->ds.trailers, want_err);
    fix_free(f);
}

/* Content-Encoding: gzip of a gRPC-Web response body (compression.gzip, Accept-Encoding: gzip). */
static void test_gzip_content_encoding(void **state)
{
    (void)state;
    fix_t *f = fix_new("compression: {gzip: true, min_size: 10}\n");
    static const kv_t ae[] = {{"x-request-id", "req-42"}, {"accept-encoding", "br, gzip;q=0.5"}, {NULL, NULL}};
    for (int big = 0; big < 2; big++) {
        start_req(f, "/pkg.Svc/Method", "application/grpc-web", ae);
        req_end(f);
        up_head(f, GRPC_HEAD);
        assert_string_equal(f->ds.log, ""); /* the head waits for the first message */
        got.len = 0;
        msg_add(&got, big ? "a message long enough" : "short", false);
        msg_add(&got, "second", false);
        up_data(f, got.b, got.len);
        up_trailers(f, OK_TRAILERS);
        up_finish(f);
        assert_string_equal(f->ds.log, "HBED");
        assert_string_equal(fs_get(&f->ds.head, "vary"), "Accept-Encoding");
        want.len = 0;
        msg_add(&want, big ? "a message long enough" : "short", false);
        msg_add(&want, "second", false);
        trailer_add(&want, OK_TRAILERS, false);
        if (big) {
            assert_string_equal(fs_get(&f->ds.head, "content-encoding"), "gzip");
            static bytes_t plain;
            gunzip_bytes(&plain, f->ds.body, f->ds.body_len);
            assert_int_equal(plain.len, want.len);
            assert_memory_equal(plain.b, want.b, want.len);
        } else {
            assert_null(fs_get(&f->ds.head, "content-encoding"));
            assert_body(f, &want);
        }
    }
    /* an error before the first message: trailers-only as usual, no gzip */
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", ae);
    up_head(f, GRPC_HEAD);
    up_close(f, NGHTTP2_CANCEL, NULL);
    assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_CANCELLED, NULL);
    assert_null(fs_get(&f->ds.head, "content-encoding"));
    fix_free(f);
}

/* Header rules that add to response heads and trailers (set in the configuration structure: the YAML
 * loader does not read them yet). */
static void add_rules(ptc_config_t *cfg)
{
    ptc_header_rule_config_t *resp = calloc(2, sizeof(*resp)), *trl = calloc(1, sizeof(*trl));
    assert_true(resp != NULL && trl != NULL);
    resp[0] = (ptc_header_rule_config_t){PTC_HEADER_ADD, strdup("x-gw"), strdup("portico %UPSTREAM%"), NULL};
    resp[1] = (ptc_header_rule_config_t){PTC_HEADER_SET, strdup("x-ua"), strdup("%REQ(user-agent)%"), NULL};
    trl[0] = (ptc_header_rule_config_t){PTC_HEADER_ADD, strdup("x-gw-trailer"), strdup("id=%REQUEST_ID%"), NULL};
    cfg->headers.response = resp;
    cfg->headers.num_response = 2;
    cfg->headers.trailers = trl;
    cfg->headers.num_trailers = 1;
}

/* The response side of the pipeline: the request id (on by default) and header rules on every head the
 * call writes (upstream's, trailers-only, gateway-made), trailer rules on every trailer frame. */
static void test_response_filters(void **state)
{
    (void)state;
    fix_t *f = fix_new_with(NULL, add_rules);
    static const kv_t in[] = {{"x-request-id", "req-42"}, {"user-agent", "grpc-web-javascript/0.1"}, {NULL, NULL}};

    /* a normal response */
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", in);
    up_head(f, GRPC_HEAD);
    static const kv_t want_head[] = {{"content-type", "application/grpc-web+proto"},
                                     {"x-request-id", "req-42"},
                                     {"x-gw", "portico backend"},
                                     {"x-ua", "grpc-web-javascript/0.1"},
                                     {NULL, NULL}};
    assert_fields(&f->ds.head, want_head);
    up_data(f, "\0\0\0\0\0", 5);
    up_trailers(f, OK_TRAILERS);
    up_finish(f);
    want.len = 0;
    msg_add(&want, "", false);
    static const kv_t t[] = {{"grpc-status", "0"}, {"x-gw-trailer", "id=req-42"}, {NULL, NULL}};
    trailer_add(&want, t, false);
    web_t r;
    parse_web(f, false, &r);
    assert_body(f, &want);

    /* trailers-only from upstream */
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", in);
    static const kv_t only[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", "9"}, {NULL, NULL}};
    up_headers(f, NGHTTP2_HCAT_RESPONSE, only, true);
    up_finish(f);
    static const kv_t want_only[] = {{"content-type", "application/grpc-web+proto"},
                                     {"grpc-status", "9"},
                                     {"x-request-id", "req-42"},
                                     {"x-gw", "portico backend"},
                                     {"x-ua", "grpc-web-javascript/0.1"},
                                     {NULL, NULL}};
    assert_fields(&f->ds.head, want_only);

    /* gateway-made: before the head (trailers-only) and after it (trailer frame) */
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", in);
    up_error(f, "no connection");
    static const kv_t want_err[] = {{"content-type", "application/grpc-web+proto"},
                                    {"grpc-status", "14"},
                                    {"grpc-message", "no connection"},
                                    {"x-request-id", "req-42"},
                                    {"x-gw", "portico backend"},
                                    {"x-ua", "grpc-web-javascript/0.1"},
                                    {NULL, NULL}};
    assert_fields(&f->ds.head, want_err);

    start_req(f, "/pkg.Svc/Method", "application/grpc-web-text", in);
    up_head(f, GRPC_HEAD);
    up_close(f, NGHTTP2_NO_ERROR, "upstream connection lost: EOF");
    want.len = 0;
    static const kv_t te[] = {
        {"grpc-status", "14"}, {"grpc-message", "upstream connection lost: EOF"}, {"x-gw-trailer", "id=req-42"}, {NULL, NULL}};
    trailer_add(&want, te, true);
    parse_web(f, true, &r);
    assert_body(f, &want);

    /* an error the call makes before it starts the stream (a bad grpc-timeout) */
    static const kv_t badto[] = {{"x-request-id", "req-42"}, {"grpc-timeout", "soon"}, {NULL, NULL}};
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", badto);
    assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_INVALID_ARGUMENT, NULL);
    assert_string_equal(fs_get(&f->ds.head, "x-request-id"), "req-42");
    assert_string_equal(fs_get(&f->ds.head, "x-gw"), "portico backend");

    /* no incoming id: one is made, forwarded, and returned */
    start_req(f, "/pkg.Svc/Method", "application/grpc-web", NULL);
    const char *id = fs_get(&f->up.req, "x-request-id");
    assert_non_null(id);
    assert_int_equal(strlen(id), 36);
    char made[40];
    snprintf(made, sizeof(made), "%s", id);
    up_close(f, NGHTTP2_INTERNAL_ERROR, NULL);
    assert_string_equal(fs_get(&f->ds.head, "x-request-id"), made);
    fix_free(f);
}

/* A request that began under a snapshot whose upstream is gone from the worker's current one. */
static void test_upstream_removed_by_reload(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    ptc_snapshot_t *old =
        snap_new("upstreams: [{name: other, endpoints: ['127.0.0.1:2']}]\nroutes: [{prefix: /, upstream: other}]\n", NULL, 0);
    ptc_snapshot_t *cur = f->snap;
    f->snap = old; /* the request's snapshot (start_req builds requests under f->snap) */
    start_web(f, false);
    f->snap = cur;
    assert_int_equal(f->up.starts, 0);
    assert_error_head(f, "application/grpc-web+proto", PTC_GRPC_UNAVAILABLE,
                      "upstream 'other' was removed by a configuration reload");
    ptc_snapshot_release(old);
    fix_free(f);
}

/* ---- allocation failures ---- */

#ifdef PTC_TEST_FAILMALLOC
static void free_caches(fix_t *f)
{
    while (f->w.num_evbuf_cache != 0)
        evbuffer_free(f->w.evbuf_cache[--f->w.num_evbuf_cache]);
    ptc_alloc_thread_release();
}

/* One unary exchange in the usual order, each step only while its side still listens (as the adapters and
 * the pool do). */
static void unary_exchange(fix_t *f, bool text, bool compressed)
{
    static const kv_t h[] = {
        {"x-request-id", "req-42"}, {"grpc-timeout", "10S"}, {"user-agent", "ua"}, {"accept-encoding", "gzip"}, {NULL, NULL}};
    static const kv_t gz[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-encoding", "gzip"}, {NULL, NULL}};
    static const kv_t t[] = {{"grpc-status", "0"}, {"grpc-message", "ok"}, {"x-t", "1"}, {NULL, NULL}};
    static bytes_t rq, rs[2];
    rq.len = 0;
    msg_add(&rq, "ping", text);
    if (rs[compressed].len == 0) { /* made once, at the warm-up: the test's own allocations are not to fail */
        if (compressed) {
            static bytes_t z;
            gzip_bytes(&z, "pong pong pong", 14, 16 + MAX_WBITS);
            frame_add(&rs[1], 1, z.b, z.len, false);
        } else {
            msg_add(&rs[0], "pong pong pong", false);
        }
    }
    start_req(f, "/pkg.Svc/Method", text ? "application/grpc-web-text" : "application/grpc-web", h);
    req_body(f, rq.b, rq.len);
    req_end(f);
    if (f->up.s != NULL)
        up_pull(f);
    if (f->up.s != NULL)
        up_head(f, compressed ? gz : GRPC_HEAD);
    if (f->up.s != NULL)
        up_data(f, rs[compressed].b, rs[compressed].len);
    if (f->up.s != NULL)
        up_trailers(f, t);
    up_finish(f);
}

/*
 * Whatever reached the client is one well-formed response: complete (and then exact when OK) or cut off.
 * Returns its grpc-status (-1: cut off).
 */
static int check_outcome(fix_t *f, bool text, long i)
{
    assert_null(f->ds.call);
    assert_null(f->up.s);
    assert_int_equal(f->w.num_calls, 0);
    if (strcmp(f->ds.log, "hD") != 0 && strcmp(f->ds.log, "HBED") != 0) {
        /* an abort may follow a head and part of a body, nothing else */
        if (strcmp(f->ds.log, "HA") != 0 && strcmp(f->ds.log, "HBA") != 0)
            fail_msg("allocation %ld failing: the downstream saw '%s'", i, f->ds.log);
        return -1;
    }
    const char *ce = fs_get(&f->ds.head, "content-encoding");
    if (ce != NULL) { /* compression.gzip: what the client reads is the inflated body */
        assert_string_equal(ce, "gzip");
        static bytes_t plain;
        gunzip_bytes(&plain, f->ds.body, f->ds.body_len);
        memcpy(f->ds.body, plain.b, plain.len);
        f->ds.body_len = plain.len;
    }
    web_t r;
    parse_web(f, text, &r);
    if (r.status == PTC_GRPC_OK) {
        assert_false(r.trailers_only);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.len[0], 14);
        assert_memory_equal(r.msg[0], "pong pong pong", 14);
        assert_int_equal(f->up.body_len, 9);
        assert_memory_equal(f->up.body, "\0\0\0\0\4ping", 9);
    }
    return r.status;
}

/* Runs an exchange failing its i-th allocation, for every i until none fails: each outcome checked, no leak. */
typedef struct {
    void (*run)(fix_t *f, const void *arg);
    void (*check)(fix_t *f, long i, const void *arg);
    const void *arg;
} failmalloc_case_t;

static void failmalloc_loop(fix_t *f, const failmalloc_case_t *c)
{
    c->run(f, c->arg); /* warm-up: one-time allocations (the timer heap) are made */
    c->check(f, -1, c->arg);
    free_caches(f);

    long injected = 0;
    for (long i = 0;; i++) {
        free_caches(f);
        long live = failmalloc_live;
        failmalloc_countdown = i;
        c->run(f, c->arg);
        bool hit = failmalloc_countdown < 0;
        failmalloc_countdown = -1;
        c->check(f, i, c->arg);
        free_caches(f);
        if (failmalloc_live != live)
            fail_msg("allocation %ld failing: %ld blocks leaked", i, failmalloc_live - live);
        if (!hit)
            break;
        injected++;
    }
    assert_true(injected >= 8);
}

typedef struct {
    bool text, compressed;
} web_case_t;

static void web_run(fix_t *f, const void *arg)
{
    const web_case_t *w = arg;
    unary_exchange(f, w->text, w->compressed);
}

static void web_check(fix_t *f, long i, const void *arg)
{
    int st = check_outcome(f, ((const web_case_t *)arg)->text, i);
    if (i < 0)
        assert_int_equal(st, PTC_GRPC_OK);
}

static void failmalloc_pass(const char *yaml, void (*tweak)(ptc_config_t *), bool text, bool compressed)
{
    fix_t *f = fix_new_with(yaml, tweak);
    web_case_t w = {text, compressed};
    failmalloc_case_t c = {web_run, web_check, &w};
    failmalloc_loop(f, &c);
    fix_free(f);
}
#endif

/* ---- Connect ---- */

/* A unary Connect exchange: "ping" up (with or without content-length), "pong pong pong" and trailers back. */
static void connect_unary_exchange(fix_t *f, bool with_length, size_t req_split, size_t resp_split)
{
    static const kv_t with_cl[] = {{"connect-protocol-version", "1"}, {"content-length", "4"}, {"connect-timeout-ms", "5000"},
                                   {"x-request-id", "req-42"},           {NULL, NULL}};
    static const kv_t without_cl[] = {{"connect-protocol-version", "1"}, {"connect-timeout-ms", "5000"}, {"x-request-id", "req-42"},
                                      {NULL, NULL}};
    static const kv_t t[] = {{"grpc-status", "0"}, {"x-t", "1"}, {"x-t", "2"}, {NULL, NULL}};
    static bytes_t rs;
    rs.len = 0;
    msg_add(&rs, "pong pong pong", false);
    start_req(f, "/pkg.Svc/Method", "application/proto", with_length ? with_cl : without_cl);
    req_body(f, "ping", PTC_MIN(req_split, (size_t)4));
    req_body(f, "ping" + PTC_MIN(req_split, (size_t)4), 4 - PTC_MIN(req_split, (size_t)4));
    req_end(f);
    if (f->up.s != NULL)
        up_pull(f);
    if (f->up.s != NULL)
        up_head(f, GRPC_HEAD);
    resp_split = PTC_MIN(resp_split, rs.len);
    if (f->up.s != NULL)
        up_data(f, rs.b, resp_split);
    if (f->up.s != NULL)
        up_data(f, rs.b + resp_split, rs.len - resp_split);
    if (f->up.s != NULL)
        up_trailers(f, t);
    up_finish(f);
}

/* The request framed whole, whatever the splits; one response with the message as its body and the trailers as
 * trailer-* fields in its head. */
static void test_connect_unary(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    for (int cl = 0; cl < 2; cl++) {
        for (size_t split = 0; split <= 4; split++) {
            for (size_t rsplit = 0; rsplit <= 19; rsplit++) {
                connect_unary_exchange(f, cl != 0, split, rsplit);
                assert_string_equal(f->ds.log, "HBED");
                assert_int_equal(f->ds.status, 200);
                static const kv_t head[] = {{"content-type", "application/proto"}, {"content-length", "14"},
                                            {"trailer-x-t", "1"},                  {"trailer-x-t", "2"},
                                            {"x-request-id", "req-42"},           {NULL, NULL}};
                assert_fields(&f->ds.head, head);
                assert_int_equal(f->ds.body_len, 14);
                assert_memory_equal(f->ds.body, "pong pong pong", 14);
                assert_int_equal(f->up.body_len, 9);
                assert_memory_equal(f->up.body, "\0\0\0\0\4ping", 9);
                assert_string_equal(fs_get(&f->up.req, "content-type"), "application/grpc");
                assert_string_equal(fs_get(&f->up.req, "grpc-timeout"), "5000000u");
                assert_null(fs_get(&f->up.req, "connect-protocol-version"));
                assert_null(fs_get(&f->up.req, "connect-timeout-ms"));
            }
        }
    }
    fix_free(f);
}

/* A unary error: the HTTP status of its code, a JSON body, the upstream's head and trailers in the head. */
static void test_connect_unary_error(void **state)
{
    (void)state;
    fix_t *f = fix_new(NULL);
    static const kv_t t[] = {{"grpc-status", "5"}, {"grpc-message", "no%20such"}, {"x-t", "1"}, {NULL, NULL}};
    static const kv_t head[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"x-h", "h"}, {NULL, NULL}};
    start_req(f, "/pkg.Svc/Method", "application/json", NULL);
    req_body(f, "{}", 2);
    req_end(f);
    up_pull(f);
    up_head(f, head);
    up_trailers(f, t);
    up_finish(f);
    assert_string_equal(f->ds.log, "HBED");
    assert_int_equal(f->ds.status, 404);
    assert_string_equal(fs_get(&f->ds.head, "content-type"), "application/json");
    assert_string_equal(fs_get(&f->ds.head, "x-h"), "h");
    assert_string_equal(fs_get(&f->ds.head, "trailer-x-t"), "1");
    const char want_body[] = "{\"code\":\"not_found\",\"message\":\"no such\"}";
    assert_int_equal(f->ds.body_len, sizeof(want_body) - 1);
    assert_memory_equal(f->ds.body, want_body, sizeof(want_body) - 1);
    assert_string_equal(fs_get(&f->up.req, "content-type"), "application/grpc+json");
    fix_free(f);
}

/*
 * A Connect stream whose client reads gzip: a message of min_size or more leaves as a gzip member of its own with
 * flag 0x01, a short one plain, one the upstream compressed (grpc-encoding gzip) is inflated and compressed again,
 * and the end-of-stream envelope is plain; whatever the split of the upstream's bytes.
 */
static void test_connect_stream_gzip_envelopes(void **state)
{
    (void)state;
    static const kv_t accept[] = {{"connect-accept-encoding", "br, gzip"}, {NULL, NULL}};
    static const kv_t head[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-encoding", "gzip"}, {NULL, NULL}};
    static bytes_t rs, z, msg;
    char big[300], other[400];
    memset(big, 'a', sizeof(big));
    memset(other, 'b', sizeof(other));
    rs.len = 0;
    frame_add(&rs, 0, big, sizeof(big), false);
    frame_add(&rs, 0, "short", 5, false);
    z.len = 0;
    gzip_bytes(&z, other, sizeof(other), 16 + MAX_WBITS);
    frame_add(&rs, 1, z.b, z.len, false);

    fix_t *f = fix_new("compression: {gzip: true, min_size: 100}\n");
    for (size_t split = 0; split <= rs.len; split++) {
        start_req(f, "/pkg.Svc/Method", "application/connect+proto", accept);
        req_body(f, "\0\0\0\0\0", 5);
        req_end(f);
        up_pull(f);
        up_head(f, head);
        up_data(f, rs.b, split);
        up_data(f, rs.b + split, rs.len - split);
        up_trailers(f, OK_TRAILERS);
        up_finish(f);
        assert_int_equal(f->ds.status, 200);
        assert_string_equal(fs_get(&f->ds.head, "connect-content-encoding"), "gzip");
        assert_null(fs_get(&f->ds.head, "content-encoding"));
        assert_null(fs_get(&f->ds.head, "grpc-encoding"));
        /* the envelopes: [1 gzip(a*300)] [0 "short"] [1 gzip(b*400)] [2 {}] */
        const uint8_t *p = f->ds.body, *end = f->ds.body + f->ds.body_len;
        static const struct {
            uint8_t flags;
            const char *plain;
            size_t len;
        } envs[] = {{1, NULL, 300}, {0, "short", 5}, {1, NULL, 400}, {2, "{}", 2}};
        for (size_t i = 0; i < PTC_ARRAY_SIZE(envs); i++) {
            assert_true(end - p >= 5);
            uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
            assert_int_equal(p[0], envs[i].flags);
            assert_true((size_t)(end - p - 5) >= len);
            if (envs[i].flags == 1) {
                assert_true(len < envs[i].len);
                gunzip_bytes(&msg, p + 5, len);
                assert_int_equal(msg.len, envs[i].len);
                assert_memory_equal(msg.b, i == 0 ? big : other, msg.len);
            } else {
                assert_int_equal(len, envs[i].len);
                assert_memory_equal(p + 5, envs[i].plain, len);
            }
            p += 5 + len;
        }
        assert_ptr_equal(p, end);
    }
    fix_free(f);
}

#ifdef PTC_TEST_FAILMALLOC
static void connect_run(fix_t *f, const void *arg)
{
    connect_unary_exchange(f, *(const bool *)arg, 2, 7);
}

/* Whatever reached the client is one well-formed Connect response, or a cut-off one. */
static void check_connect_outcome(fix_t *f, long i, const void *arg)
{
    (void)arg;
    assert_null(f->ds.call);
    assert_null(f->up.s);
    assert_int_equal(f->w.num_calls, 0);
    if (strcmp(f->ds.log, "HBED") != 0 && strcmp(f->ds.log, "HED") != 0 && strcmp(f->ds.log, "hD") != 0) {
        if (strcmp(f->ds.log, "A") != 0 && strcmp(f->ds.log, "HA") != 0)
            fail_msg("allocation %ld failing: the downstream saw '%s'", i, f->ds.log);
        return;
    }
    const char *cl = fs_get(&f->ds.head, "content-length");
    if (i < 0)
        assert_int_equal(f->ds.status, 200); /* the warm-up */
    if (f->ds.status == 200) {
        assert_string_equal(cl, "14");
        assert_memory_equal(f->ds.body, "pong pong pong", 14);
    } else {
        /* an error: JSON, and the length it says (0 if even the JSON could not be made) */
        assert_string_equal(fs_get(&f->ds.head, "content-type"), "application/json");
        assert_true(cl == NULL || (size_t)atoi(cl) == f->ds.body_len);
    }
}
#endif

static void test_connect_allocation_failures(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    for (int cl = 0; cl < 2; cl++) {
        fix_t *f = fix_new_with(NULL, NULL);
        bool with_length = cl != 0;
        failmalloc_case_t c = {connect_run, check_connect_outcome, &with_length};
        failmalloc_loop(f, &c);
        fix_free(f);
    }
#else
    skip();
#endif
}

static void test_allocation_failures(void **state)
{
    (void)state;
#ifdef PTC_TEST_FAILMALLOC
    failmalloc_pass(NULL, NULL, false, false);
    failmalloc_pass(NULL, add_rules, true, false);
    failmalloc_pass(NULL, NULL, true, true);
    failmalloc_pass("compression: {gzip: true, min_size: 1}\n", NULL, false, false);
#else
    skip();
#endif
}

int main(void)
{
    /* libevent is left on plain malloc here (the gateway installs ptc_alloc_install_libevent()): served from
     * the per-thread cache, most of its allocations would never reach failmalloc's malloc. The call's own
     * ptc_malloc blocks reach it too, as the allocation-failure test empties that cache before each run. */
    ptc_log_set_level(getenv("PTC_TEST_LOG") != NULL ? PTC_LOG_DEBUG : PTC_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_grpc_timeout_forwarded),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_unary_and_streaming),
        cmocka_unit_test(test_response_split_at_every_offset),
        cmocka_unit_test(test_request_split_at_every_offset),
        cmocka_unit_test(test_request_body_errors),
        cmocka_unit_test(test_trailers_only),
        cmocka_unit_test(test_error_after_messages),
        cmocka_unit_test(test_non_grpc_upstream),
        cmocka_unit_test(test_upstream_reset),
        cmocka_unit_test(test_connection_lost),
        cmocka_unit_test(test_data_end_without_trailers),
        cmocka_unit_test(test_upstream_error_before_stream),
        cmocka_unit_test(test_invalid_grpc_status),
        cmocka_unit_test(test_client_goes_away),
        cmocka_unit_test(test_call_abort),
        cmocka_unit_test(test_backpressure_response),
        cmocka_unit_test(test_backpressure_request),
        cmocka_unit_test(test_message_size_limits),
        cmocka_unit_test(test_compressed_response),
        cmocka_unit_test(test_native_grpc),
        cmocka_unit_test(test_gzip_content_encoding),
        cmocka_unit_test(test_metrics_and_access_log),
        cmocka_unit_test(test_response_filters),
        cmocka_unit_test(test_upstream_removed_by_reload),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_connect_unary),
        cmocka_unit_test(test_connect_unary_error),
        cmocka_unit_test(test_connect_stream_gzip_envelopes),
        cmocka_unit_test(test_connect_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
