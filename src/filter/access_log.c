/*
 * The access log (include/portico/access_log.h): the rings, the sinks and their writer threads, and the lines.
 *
 * JSON lines have a fixed schema (every key on every line, null when there is no value), see README
 * "Operations". Values from clients (path, origin, headers, grpc-message, token subject) are escaped
 * (ptc_json_escape) and capped at PTC_ACCESS_LOG_VALUE_MAX bytes; invalid UTF-8 becomes \ufffd rather than
 * being dropped, so a log reader sees that something odd was sent, and every line is valid UTF-8 JSON.
 * Template lines are expanded by the template module, which turns control characters into spaces, so a
 * value can never start a line of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "portico/access_log.h"
#include "portico/filter.h"
#include "portico/jwt.h"
#include "portico/log.h"

#define STALL_POLL_MS 100   /* a stalled output is tried again this often (and stop or reopen noticed) */
#define STOP_FLUSH_MS 2000  /* a released sink's writer gives up on lines it cannot write after this long */
#define IDLE_POLL_MS 1000   /* an idle writer looks again this often (it is woken when there is work anyway) */

/* ---- the ring ---- */

int ptc_log_ring_init(ptc_log_ring_t *r, size_t size)
{
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    r->size = size;
    return (r->buf = malloc(size)) != NULL ? 0 : PTC_ENOMEM;
}

void ptc_log_ring_dispose(ptc_log_ring_t *r)
{
    free(r->buf);
    r->buf = NULL;
}

bool ptc_log_ring_push(ptc_log_ring_t *r, const char *data, size_t len)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire); /* the bytes before it are free again */
    if (len > r->size - (size_t)(head - tail))
        return false;
    size_t at = (size_t)(head % r->size), first = PTC_MIN(len, r->size - at);
    memcpy(r->buf + at, data, first);
    memcpy(r->buf, data + first, len - first);
    atomic_store_explicit(&r->head, head + len, memory_order_release); /* the bytes are there for the writer */
    return true;
}

size_t ptc_log_ring_peek(ptc_log_ring_t *r, ptc_iovec_t piece[2])
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t n = (size_t)(head - tail), at = (size_t)(tail % r->size), first = PTC_MIN(n, r->size - at);
    piece[0] = ptc_iov(r->buf + at, first);
    piece[1] = ptc_iov(r->buf, n - first);
    return n;
}

void ptc_log_ring_consume(ptc_log_ring_t *r, size_t n)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    atomic_store_explicit(&r->tail, tail + n, memory_order_release);
}

/* ---- sinks ---- */

struct st_ptc_access_log_t {
    atomic_uint refs;
    char *path, *format; /* as configured, for ptc_access_log_same */
    uint32_t buffer_size;
    bool json;
    ptc_template_t tmpl;
    bool to_stderr;
    int fd;                /* the writer's */
    pthread_mutex_t lock;  /* guards pending_fd: the control thread hands over a reopened file */
    int pending_fd;        /* -1: none */
    int efd;               /* wakes the writer */
    atomic_bool sleeping;  /* the writer is about to wait on efd */
    atomic_bool stopping;  /* the last reference is gone */
    ptc_log_ring_t *rings;
    size_t nrings;
    bool failing;          /* the last write failed (logged once per streak) */
};

static atomic_uint_fast64_t total_bytes, total_errors, total_lost, total_reopens;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_cond = PTHREAD_COND_INITIALIZER;
static size_t live_writers;

void ptc_access_log_totals(ptc_access_log_totals_t *t)
{
    t->bytes = atomic_load(&total_bytes);
    t->write_errors = atomic_load(&total_errors);
    t->lost = atomic_load(&total_lost);
    t->reopens = atomic_load(&total_reopens);
}

/* Lines in bytes that will never be written. */
static size_t lines_in(const ptc_iovec_t *piece, size_t npieces, size_t n)
{
    size_t lines = 0;
    for (size_t i = 0; i < npieces && n > 0; i++) {
        size_t len = PTC_MIN(piece[i].len, n);
        for (const char *p = piece[i].base; (p = memchr(p, '\n', (size_t)(piece[i].base + len - p))) != NULL; p++)
            lines++;
        n -= len;
    }
    return lines;
}

bool ptc_access_log_wait_all(int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&live_lock);
    while (live_writers != 0 && pthread_cond_timedwait(&live_cond, &live_lock, &until) == 0)
        ;
    bool done = live_writers == 0;
    pthread_mutex_unlock(&live_lock);
    return done;
}

static void wake(ptc_access_log_t *l)
{
    uint64_t one = 1;
    if (write(l->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is set already, the writer wakes anyway */
    }
}

static int open_path(const char *path, int *fd, char *err, size_t errlen)
{
    if (strcmp(path, PTC_ACCESS_LOG_STDERR) == 0) {
        *fd = STDERR_FILENO;
        return 0;
    }
    /* non-blocking: a FIFO without a reader is refused (ENXIO) rather than hanging the control thread, and a full
     * one stalls only the writer, which keeps noticing stops and reopens */
    if ((*fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644)) < 0)
        return ptc_errorf(PTC_EIO, err, errlen, "access_log.path: cannot open \"%s\": %s", path, strerror(errno));
    return 0;
}

static void sink_free(ptc_access_log_t *l)
{
    for (size_t i = 0; l->rings != NULL && i < l->nrings; i++)
        ptc_log_ring_dispose(&l->rings[i]);
    free(l->rings);
    if (l->fd >= 0 && !l->to_stderr)
        close(l->fd);
    if (l->pending_fd >= 0)
        close(l->pending_fd);
    if (l->efd >= 0)
        close(l->efd);
    ptc_template_dispose(&l->tmpl);
    pthread_mutex_destroy(&l->lock);
    free(l->path);
    free(l->format);
    free(l);
}

static void take_pending(ptc_access_log_t *l)
{
    pthread_mutex_lock(&l->lock);
    int fd = l->pending_fd;
    l->pending_fd = -1;
    pthread_mutex_unlock(&l->lock);
    if (fd < 0)
        return;
    if (l->fd >= 0 && !l->to_stderr)
        close(l->fd);
    l->fd = fd;
    l->failing = false;
}

/* Writes from one ring. Returns bytes written, 0 when it is empty, -1 when the output would block. */
static ssize_t write_ring(ptc_access_log_t *l, ptc_log_ring_t *r)
{
    ptc_iovec_t piece[2];
    size_t n = ptc_log_ring_peek(r, piece);
    struct iovec iov[2] = {{(void *)(uintptr_t)piece[0].base, piece[0].len}, {(void *)(uintptr_t)piece[1].base, piece[1].len}};
    int niov = piece[1].len != 0 ? 2 : 1;

    if (n == 0)
        return 0;
    if (l->to_stderr) {
        /* one line per write: each stays whole (under PIPE_BUF) among the log lines other threads write */
        const char *nl = memchr(piece[0].base, '\n', piece[0].len);
        if (nl != NULL) {
            iov[0].iov_len = (size_t)(nl - piece[0].base) + 1;
            niov = 1;
        } else if (piece[1].len != 0 && (nl = memchr(piece[1].base, '\n', piece[1].len)) != NULL) {
            iov[1].iov_len = (size_t)(nl - piece[1].base) + 1;
        }
    }
    ssize_t w = writev(l->fd, iov, niov);
    if (w < 0 && (errno == EAGAIN || errno == EINTR))
        return -1;
    if (w < 0) {
        /* the bytes are lost (EPIPE: the reader went away; ENOSPC; EBADF after a failed reopen) */
        size_t lost = iov[0].iov_len + (niov == 2 ? iov[1].iov_len : 0);
        if (!l->failing)
            ptc_log_warn("access log %s: write failed: %s; lines are lost until it works again", l->path, strerror(errno));
        l->failing = true;
        atomic_fetch_add(&total_errors, 1);
        atomic_fetch_add(&total_lost, lines_in(piece, 2, lost));
        ptc_log_ring_consume(r, lost);
        return (ssize_t)lost;
    }
    l->failing = false;
    atomic_fetch_add(&total_bytes, (uint64_t)w);
    ptc_log_ring_consume(r, (size_t)w);
    return w;
}

static bool rings_empty(ptc_access_log_t *l)
{
    for (size_t i = 0; i < l->nrings; i++) {
        ptc_iovec_t piece[2];
        if (ptc_log_ring_peek(&l->rings[i], piece) != 0)
            return false;
    }
    return true;
}

static void wait_events(ptc_access_log_t *l, bool blocked)
{
    struct pollfd p[2] = {{l->efd, POLLIN, 0}, {l->fd, POLLOUT, 0}};
    uint64_t count;
    if (poll(p, blocked ? 2 : 1, blocked ? STALL_POLL_MS : IDLE_POLL_MS) > 0 && (p[0].revents & POLLIN) != 0 &&
        read(l->efd, &count, sizeof(count)) < 0) {
        /* EAGAIN: someone else read it */
    }
}

static void *writer_main(void *arg)
{
    ptc_access_log_t *l = arg;
    uint64_t give_up = 0;

    ptc_log_set_thread_name("log");
    for (;;) {
        bool wrote = false, blocked = false;
        take_pending(l);
        for (size_t i = 0; i < l->nrings && !blocked; i++) {
            ssize_t w;
            while ((w = write_ring(l, &l->rings[i])) > 0)
                wrote = true;
            blocked = w < 0;
        }
        if (atomic_load(&l->stopping)) {
            if (give_up == 0)
                give_up = ptc_now_ms() + STOP_FLUSH_MS;
            if (rings_empty(l) || ptc_now_ms() >= give_up)
                break;
        }
        if (wrote)
            continue;
        if (blocked) {
            wait_events(l, true);
            continue;
        }
        /* idle: say so, then look once more, so that a line pushed in between is not left waiting (the
         * producer stores its head, then reads sleeping; we store sleeping, then read the heads) */
        atomic_store(&l->sleeping, true);
        atomic_thread_fence(memory_order_seq_cst);
        if (rings_empty(l) && !atomic_load(&l->stopping))
            wait_events(l, false);
        atomic_store(&l->sleeping, false);
    }
    size_t left = 0;
    for (size_t i = 0; i < l->nrings; i++) {
        ptc_iovec_t piece[2];
        size_t n = ptc_log_ring_peek(&l->rings[i], piece);
        left += lines_in(piece, 2, n);
    }
    if (left != 0) {
        atomic_fetch_add(&total_lost, left);
        ptc_log_warn("access log %s: the output did not take the last %zu lines in %d ms; they are lost", l->path, left, STOP_FLUSH_MS);
    }
    sink_free(l);
    pthread_mutex_lock(&live_lock);
    live_writers--;
    pthread_cond_broadcast(&live_cond);
    pthread_mutex_unlock(&live_lock);
    return NULL;
}

int ptc_access_log_new(ptc_access_log_t **out, const ptc_access_log_config_t *cfg, size_t nworkers, char *err, size_t errlen)
{
    ptc_access_log_t *l = calloc(1, sizeof(*l));
    char why[256];
    int ret;

    if (l == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    atomic_init(&l->refs, 1);
    atomic_init(&l->sleeping, false);
    atomic_init(&l->stopping, false);
    pthread_mutex_init(&l->lock, NULL);
    l->fd = l->pending_fd = -1;
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->buffer_size = cfg->buffer_size;
    l->to_stderr = strcmp(cfg->path, PTC_ACCESS_LOG_STDERR) == 0;
    l->json = cfg->format == NULL || strcmp(cfg->format, PTC_ACCESS_LOG_JSON) == 0;
    l->nrings = nworkers;
    if (l->efd < 0 || (l->path = strdup(cfg->path)) == NULL ||
        (l->format = strdup(cfg->format != NULL ? cfg->format : PTC_ACCESS_LOG_JSON)) == NULL ||
        (l->rings = calloc(nworkers + 1, sizeof(*l->rings))) == NULL) {
        ret = ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nworkers; i++) {
        if (ptc_log_ring_init(&l->rings[i], cfg->buffer_size) != 0) {
            ret = ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
            goto fail;
        }
    }
    if (!l->json && (ret = ptc_template_parse_log(l->format, &l->tmpl, why, sizeof(why))) != 0) {
        ptc_errorf(ret, err, errlen, "access_log.format: %s", why);
        goto fail;
    }
    if ((ret = open_path(l->path, &l->fd, err, errlen)) != 0)
        goto fail;
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&live_lock);
    live_writers++;
    pthread_mutex_unlock(&live_lock);
    /* the writer takes no signal (the control thread's signalfd does): it starts with all of them blocked */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&thread, &attr, writer_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_attr_destroy(&attr);
        pthread_mutex_lock(&live_lock);
        live_writers--;
        pthread_mutex_unlock(&live_lock);
        ret = ptc_errorf(PTC_EIO, err, errlen, "access_log: cannot start the writer thread");
        goto fail;
    }
    pthread_attr_destroy(&attr);
    *out = l;
    return 0;

fail:
    sink_free(l);
    return ret;
}

ptc_access_log_t *ptc_access_log_ref(ptc_access_log_t *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    return l;
}

void ptc_access_log_release(ptc_access_log_t *l)
{
    if (l == NULL || atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
        return;
    atomic_store(&l->stopping, true); /* the writer finishes and frees l */
    wake(l);
}

bool ptc_access_log_same(const ptc_access_log_t *l, const ptc_access_log_config_t *cfg)
{
    return cfg->path != NULL && strcmp(l->path, cfg->path) == 0 &&
           strcmp(l->format, cfg->format != NULL ? cfg->format : PTC_ACCESS_LOG_JSON) == 0 && l->buffer_size == cfg->buffer_size;
}

int ptc_access_log_reopen(ptc_access_log_t *l, char *err, size_t errlen)
{
    int fd, ret;
    if (l->to_stderr)
        return 0;
    if ((ret = open_path(l->path, &fd, err, errlen)) != 0)
        return ret;
    pthread_mutex_lock(&l->lock);
    if (l->pending_fd >= 0)
        close(l->pending_fd);
    l->pending_fd = fd;
    pthread_mutex_unlock(&l->lock);
    atomic_fetch_add(&total_reopens, 1);
    wake(l);
    return 0;
}

bool ptc_access_log_append(ptc_access_log_t *l, size_t worker, const char *line, size_t len)
{
    if (worker >= l->nrings || !ptc_log_ring_push(&l->rings[worker], line, len))
        return false;
    /* pairs with the writer's fence: either it sees our bytes, or we see that it sleeps */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&l->sleeping, memory_order_relaxed) && atomic_exchange(&l->sleeping, false))
        wake(l);
    return true;
}

uint64_t ptc_access_log_wall_us(uint64_t mono_us, uint64_t now_us)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t wall = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000, ago = now_us > mono_us ? now_us - mono_us : 0;
    return wall > ago ? wall - ago : wall;
}

const ptc_template_t *ptc_access_log_template(const ptc_access_log_t *l)
{
    return l->json ? NULL : &l->tmpl;
}

/* ---- lines ---- */

/* Bytes a JSON string carries as they are: printable ASCII but '"' and '\'. */
static bool json_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

/* Sixteen bytes in a vector (GCC and Clang vector extensions: SSE2 on x86-64, NEON on arm64, plain code elsewhere). */
typedef signed char v16i8_t __attribute__((vector_size(16)));

/* Whether the 16 bytes at p are all plain. As signed bytes, those of 0x80 and more are negative: under 0x20 too. */
static inline bool plain16(const unsigned char *p)
{
    v16i8_t x, none = {0};
    memcpy(&x, p, 16);
    v16i8_t bad = (x < none + 0x20) | (x == none + 0x7f) | (x == none + '"') | (x == none + '\\');
    uint64_t half[2];
    memcpy(half, &bad, 16);
    return (half[0] | half[1]) == 0;
}

/* Whether the 8 bytes of x are all plain: a byte of 0x80 or more, under 0x20, '"', '\' or 0x7f sets a high bit. */
static inline bool plain8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\'), d = x ^ (ones * 0x7f);
    /* (v - ones) & ~v has the high bit of a byte set when some byte of v is 0 (and x - 0x20.. when one is under 0x20) */
    uint64_t bad = x | ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | ((d - ones) & ~d);
    return (bad & highs) == 0;
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

static inline uint64_t load32(const unsigned char *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return x;
}

/* The end of the run of plain bytes from p: sixteen at a time while a whole vector is plain, then eight while a whole
 * word is, then one at a time. */
static const unsigned char *plain_run(const unsigned char *p, const unsigned char *end)
{
    while (end - p >= 16 && plain16(p))
        p += 16;
    while (end - p >= 8 && plain8(load64(p)))
        p += 8;
    while (p < end && json_plain(*p))
        p++;
    return p;
}

/* Whether the n bytes at s are all plain: whole vectors or words, the last one overlapping the one before (so no byte
 * is looked at alone but in values under 4 bytes). */
static bool all_plain(const unsigned char *s, size_t n)
{
    if (n >= 16) {
        for (size_t i = 0; i + 16 < n; i += 16)
            if (!plain16(s + i))
                return false;
        return plain16(s + n - 16);
    }
    if (n >= 8)
        return plain8(load64(s)) && plain8(load64(s + n - 8));
    if (n >= 4)
        return plain8(load32(s) | load32(s + n - 4) << 32);
    for (size_t i = 0; i < n; i++)
        if (!json_plain(s[i]))
            return false;
    return true;
}

size_t ptc_json_escape(char *out, size_t cap, ptc_iovec_t v, size_t max)
{
    static const char hex[] = "0123456789abcdef", ellipsis[] = "\\u2026";
    const unsigned char *p = (const unsigned char *)v.base, *full = p + v.len, *end = p + PTC_MIN(v.len, max);
    /* where the last pieces began, to back off for the ellipsis: an escape or a character is one piece, a run of plain
     * bytes another (which may be cut anywhere) */
    size_t len = 0, starts[8], pieces = 0;
    bool plain[8], cut = v.len > max;

    if (cap == 0)
        return 0;
    while (p < end) {
        /* the common case: a run of plain ASCII, copied at once */
        const unsigned char *run = p;
        p = plain_run(p, end);
        if (p != run) {
            size_t n = (size_t)(p - run), room = cap - 1 - len;
            if (n > room) {
                n = room;
                p = run + n;
                cut = true;
            }
            memcpy(out + len, run, n);
            plain[pieces % PTC_ARRAY_SIZE(starts)] = true;
            starts[pieces++ % PTC_ARRAY_SIZE(starts)] = len;
            len += n;
            if (len == cap - 1 && p < end) {
                cut = true;
                break;
            }
            continue;
        }
        char esc[8];
        const char *piece = (const char *)p;
        uint32_t c;
        size_t n = ptc_utf8_decode(p, end, &c), adv = n;
        if (n == 0) {
            if (cut && ptc_utf8_decode(p, full, &c) != 0)
                break; /* a character the cap split: it goes, the ellipsis says so */
            piece = "\\ufffd";
            n = 6;
            adv = 1;
        } else if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f) {
            piece = esc;
            n = 2;
            esc[0] = '\\';
            switch (c) {
            case '"':
            case '\\':
                esc[1] = (char)c;
                break;
            case '\n':
                esc[1] = 'n';
                break;
            case '\r':
                esc[1] = 'r';
                break;
            case '\t':
                esc[1] = 't';
                break;
            case '\b':
                esc[1] = 'b';
                break;
            case '\f':
                esc[1] = 'f';
                break;
            default:
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                n = 6;
                break;
            }
        }
        if (len + n > cap - 1) {
            cut = true;
            break;
        }
        plain[pieces % PTC_ARRAY_SIZE(starts)] = false;
        starts[pieces++ % PTC_ARRAY_SIZE(starts)] = len;
        memcpy(out + len, piece, n);
        len += n;
        p += adv;
    }
    if (cut && cap - 1 >= sizeof(ellipsis) - 1) {
        /* pieces go until the ellipsis fits: escapes and characters whole, a plain run as far as needed (the others are
         * at most 6 bytes and a plain run comes between two of them at most: 8 remembered are enough) */
        size_t fits = cap - 1 - (sizeof(ellipsis) - 1);
        for (size_t back = 1; len > fits && back <= PTC_MIN(pieces, PTC_ARRAY_SIZE(starts)); back++) {
            size_t i = (pieces - back) % PTC_ARRAY_SIZE(starts);
            len = plain[i] && starts[i] <= fits ? fits : starts[i];
        }
        if (len + sizeof(ellipsis) - 1 <= cap - 1) {
            memcpy(out + len, ellipsis, sizeof(ellipsis) - 1);
            len += sizeof(ellipsis) - 1;
        }
    }
    out[len] = '\0';
    return len;
}

/* ---- JSON lines ----
 *
 * The schema is fixed, so a line is written straight through a pointer: the keys are literals of known length (the
 * compiler copies them with a few moves, no call) and no write is checked against the end of the buffer, because
 * none can pass it: each of the JSON_VALUES values that come from outside is at most PTC_ACCESS_LOG_VALUE_MAX bytes
 * once escaped (ptc_json_escape caps it), the others are short, and the longest line that makes (JSON_LINE_WORST)
 * fits a PTC_ACCESS_LOG_LINE_MAX buffer with its '\n'. */

#define JSON_VALUES 13  /* request_id trace_id peer origin http_method path protocol transport grpc_message upstream
                         * upstream_host route jwt_sub: each at most PTC_ACCESS_LOG_VALUE_MAX bytes and its quotes */
#define TIME_TEXT_MAX 70 /* time_text's buffer: the cached seconds (at most 63 bytes) and ".mmmZ" */
#define JSON_SHORT 8     /* time (TIME_TEXT_MAX), kind, encoding and the numbers (at most 20 digits and ".mmm") */
#define JSON_KEYS 512    /* keys, braces, commas: about 300 bytes */
#define JSON_LINE_WORST (JSON_VALUES * (PTC_ACCESS_LOG_VALUE_MAX + 2) + 2 * JSON_SHORT * (TIME_TEXT_MAX + 2) + JSON_KEYS)
_Static_assert(JSON_LINE_WORST < PTC_ACCESS_LOG_LINE_MAX, "the longest JSON line fits a line buffer with its newline");

/* "00" to "99": numbers are written two digits at a time */
#define DEC_ROW(d) d "0" d "1" d "2" d "3" d "4" d "5" d "6" d "7" d "8" d "9"
static const char digit_pairs[] = DEC_ROW("0") DEC_ROW("1") DEC_ROW("2") DEC_ROW("3") DEC_ROW("4") DEC_ROW("5") DEC_ROW("6")
    DEC_ROW("7") DEC_ROW("8") DEC_ROW("9");

/* Decimal digits of v into buf (at least 20 bytes, no NUL); returns their number. Every line has a dozen numbers:
 * snprintf would cost more than the rest of the line. */
static size_t u64_text(char *buf, uint64_t v)
{
    static const uint64_t pow10[19] = {10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
                                       1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
                                       100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
                                       1000000000000000000ull, 10000000000000000000ull};
    size_t n = 1;
    while (n < 20 && v >= pow10[n - 1])
        n++;
    char *q = buf + n;
    for (; v >= 100; v /= 100) {
        q -= 2;
        memcpy(q, digit_pairs + 2 * (v % 100), 2);
    }
    if (v >= 10)
        memcpy(q - 2, digit_pairs + 2 * v, 2);
    else
        q[-1] = (char)('0' + v);
    return n;
}

/* Milliseconds with microsecond digits: "2.345" (buf: at least 24 bytes, no NUL). */
static size_t ms_text(char *buf, uint64_t us)
{
    size_t n = u64_text(buf, us / 1000), frac = (size_t)(us % 1000);
    buf[n] = '.';
    buf[n + 1] = (char)('0' + frac / 100);
    memcpy(buf + n + 2, digit_pairs + 2 * (frac % 100), 2);
    return n + 4;
}

/* RFC 3339 UTC with milliseconds (buf: TIME_TEXT_MAX bytes, no NUL). The part down to the second changes once a
 * second: each thread keeps the last one it formatted. */
static size_t time_text(char *buf, uint64_t us)
{
    static __thread uint64_t cached_sec = UINT64_MAX;
    static __thread char cached[64];
    static __thread size_t cached_len;
    uint64_t sec = us / 1000000, ms = us / 1000 % 1000;
    if (sec != cached_sec) {
        time_t secs = (time_t)sec;
        struct tm tm;
        gmtime_r(&secs, &tm);
        int n = snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                         tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_len = n > 0 ? PTC_MIN((size_t)n, sizeof(cached) - 1) : 0;
        cached_sec = sec;
    }
    memcpy(buf, cached, cached_len);
    size_t n = cached_len;
    buf[n] = '.';
    buf[n + 1] = (char)('0' + ms / 100);
    memcpy(buf + n + 2, digit_pairs + 2 * (ms % 100), 2);
    buf[n + 4] = 'Z';
    return n + 5;
}

/* A literal: its length is known when compiling. */
#define LIT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) += sizeof(lit) - 1)

/* A string value, or null when it is not present. A plain one (the usual case) is copied at once; any other goes
 * through ptc_json_escape, which also makes the same bytes of a plain one, so which way a value takes changes nothing
 * in the line. */
static char *json_str(char *p, ptc_iovec_t v, bool present)
{
    const unsigned char *s = (const unsigned char *)v.base;
    if (!present) {
        LIT(p, "null");
        return p;
    }
    *p++ = '"';
    if (v.len <= PTC_ACCESS_LOG_VALUE_MAX && all_plain(s, v.len)) {
        if (v.len != 0)
            memcpy(p, v.base, v.len);
        p += v.len;
    } else {
        p += ptc_json_escape(p, PTC_ACCESS_LOG_VALUE_MAX + 1, v, PTC_ACCESS_LOG_VALUE_MAX);
    }
    *p++ = '"';
    return p;
}

/* A C string value: null when it is NULL or empty. */
static char *json_cstr(char *p, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    return json_str(p, ptc_iov(s, n), n != 0);
}

static ssize_t jwt_sub(const ptc_access_entry_t *e, char *buf, size_t len)
{
    if (e->info == NULL || e->info->jwt == NULL)
        return -1;
    ssize_t n = ptc_jwt_claim(e->info->jwt, "sub", buf, len);
    return n < 0 ? -1 : (ssize_t)strlen(buf);
}

/* The line without its '\n' into out (at least JSON_LINE_WORST bytes); returns its length. */
static size_t format_json(char *out, const ptc_access_entry_t *e)
{
    const ptc_call_info_t *info = e->info;
    char *p = out;

    LIT(p, "{\"time\":\"");
    p += time_text(p, e->start_us);
    if (e->local)
        LIT(p, "\",\"kind\":\"local\",\"request_id\":");
    else
        LIT(p, "\",\"kind\":\"call\",\"request_id\":");
    p = json_cstr(p, info != NULL ? info->request_id : NULL);
    LIT(p, ",\"trace_id\":");
    p = json_cstr(p, info != NULL ? info->trace_id : NULL);
    LIT(p, ",\"peer\":");
    p = json_cstr(p, info != NULL ? info->peer : NULL);
    LIT(p, ",\"origin\":");
    p = json_str(p, e->origin, e->origin.len != 0);
    LIT(p, ",\"http_method\":");
    p = json_str(p, e->http_method, e->http_method.len != 0);
    LIT(p, ",\"path\":");
    p = json_str(p, e->path, true);
    LIT(p, ",\"protocol\":");
    p = json_cstr(p, e->protocol != NULL ? e->protocol : "http");
    LIT(p, ",\"transport\":");
    p = json_cstr(p, e->transport);
    if (e->protocol == NULL)
        LIT(p, ",\"encoding\":null,\"grpc_status\":");
    else if (strcmp(e->protocol, "grpc-web-text") == 0)
        LIT(p, ",\"encoding\":\"text\",\"grpc_status\":");
    else
        LIT(p, ",\"encoding\":\"binary\",\"grpc_status\":");
    if (e->grpc_status >= 0)
        p += u64_text(p, (uint64_t)e->grpc_status);
    else
        LIT(p, "null");
    LIT(p, ",\"grpc_message\":");
    p = json_str(p, e->grpc_message, e->grpc_status >= 0 && e->grpc_message.len != 0);
    LIT(p, ",\"http_status\":");
    p += u64_text(p, (uint64_t)e->http_status);
    LIT(p, ",\"bytes_in\":");
    p += u64_text(p, e->bytes_in);
    LIT(p, ",\"bytes_out\":");
    p += u64_text(p, e->bytes_out);
    LIT(p, ",\"messages_in\":");
    p += u64_text(p, e->msgs_in);
    LIT(p, ",\"messages_out\":");
    p += u64_text(p, e->msgs_out);
    LIT(p, ",\"ttfb_ms\":");
    if (e->ttfb_us >= 0)
        p += ms_text(p, (uint64_t)e->ttfb_us);
    else
        LIT(p, "null");
    LIT(p, ",\"duration_ms\":");
    p += ms_text(p, e->duration_us);
    LIT(p, ",\"upstream\":");
    p = json_cstr(p, info != NULL ? info->upstream : NULL);
    LIT(p, ",\"upstream_host\":");
    p = json_cstr(p, e->upstream_host);
    LIT(p, ",\"route\":");
    p = json_cstr(p, info != NULL && info->route != NULL ? info->route->path : NULL);
    LIT(p, ",\"jwt_sub\":");
    char sub[PTC_ACCESS_LOG_VALUE_MAX];
    ssize_t sn = jwt_sub(e, sub, sizeof(sub));
    p = json_str(p, ptc_iov(sub, sn > 0 ? (size_t)sn : 0), sn >= 0);
    *p++ = '}';
    return (size_t)(p - out);
}

typedef struct st_source_t {
    const ptc_access_entry_t *e;
    char buf[PTC_ACCESS_LOG_VALUE_MAX];
} source_t;

static ptc_iovec_t captured(const ptc_access_capture_t *c, ptc_iovec_t name)
{
    for (size_t i = 0; c != NULL && i < c->n; i++)
        if (ptc_iov_eq(c->fields[i].name, name))
            return c->fields[i].value;
    return ptc_iov("", 0);
}

static ptc_iovec_t cstr(const char *s)
{
    return s != NULL ? ptc_iov(s, strlen(s)) : ptc_iov("", 0);
}

static ptc_iovec_t num(source_t *s, uint64_t v)
{
    return ptc_iov(s->buf, u64_text(s->buf, v));
}

static ptc_iovec_t source_get(void *arg, ptc_template_var_t kind, ptc_iovec_t name)
{
    source_t *s = arg;
    const ptc_access_entry_t *e = s->e;
    const ptc_call_info_t *info = e->info;

    switch (kind) {
    case PTC_TEMPLATE_REQ:
        return captured(e->req, name);
    case PTC_TEMPLATE_RESP:
        return captured(e->resp, name);
    case PTC_TEMPLATE_REQUEST_ID:
        return cstr(info != NULL ? info->request_id : NULL);
    case PTC_TEMPLATE_TRACE_ID:
        return cstr(info != NULL ? info->trace_id : NULL);
    case PTC_TEMPLATE_UPSTREAM:
        return cstr(info != NULL ? info->upstream : NULL);
    case PTC_TEMPLATE_ROUTE:
        return cstr(info != NULL && info->route != NULL ? info->route->path : NULL);
    case PTC_TEMPLATE_CLIENT_IP:
    case PTC_TEMPLATE_PEER: {
        ptc_iovec_t p = cstr(info != NULL ? info->peer : NULL);
        if (kind == PTC_TEMPLATE_PEER)
            return p;
        const char *colon = p.len != 0 ? memrchr(p.base, ':', p.len) : NULL;
        if (colon != NULL)
            p.len = (size_t)(colon - p.base);
        if (p.len >= 2 && p.base[0] == '[' && p.base[p.len - 1] == ']')
            p = ptc_iov(p.base + 1, p.len - 2);
        return p;
    }
    case PTC_TEMPLATE_JWT: {
        char path[256];
        if (info == NULL || info->jwt == NULL || name.len >= sizeof(path))
            return ptc_iov("", 0);
        memcpy(path, name.base, name.len);
        path[name.len] = '\0';
        return ptc_jwt_claim(info->jwt, path, s->buf, sizeof(s->buf)) > 0 ? cstr(s->buf) : ptc_iov("", 0);
    }
    case PTC_TEMPLATE_START_TIME:
        return ptc_iov(s->buf, time_text(s->buf, e->start_us));
    case PTC_TEMPLATE_HTTP_METHOD:
        return e->http_method;
    case PTC_TEMPLATE_PATH:
        return e->path;
    case PTC_TEMPLATE_PROTOCOL:
        return cstr(e->protocol != NULL ? e->protocol : "http");
    case PTC_TEMPLATE_TRANSPORT:
        return cstr(e->transport);
    case PTC_TEMPLATE_GRPC_STATUS:
        return e->grpc_status >= 0 ? num(s, (uint64_t)e->grpc_status) : PTC_STRLIT("-");
    case PTC_TEMPLATE_GRPC_MESSAGE:
        return e->grpc_message;
    case PTC_TEMPLATE_HTTP_STATUS:
        return num(s, (uint64_t)e->http_status);
    case PTC_TEMPLATE_BYTES_IN:
        return num(s, e->bytes_in);
    case PTC_TEMPLATE_BYTES_OUT:
        return num(s, e->bytes_out);
    case PTC_TEMPLATE_MESSAGES_IN:
        return num(s, e->msgs_in);
    case PTC_TEMPLATE_MESSAGES_OUT:
        return num(s, e->msgs_out);
    case PTC_TEMPLATE_TTFB_MS:
        return e->ttfb_us >= 0 ? ptc_iov(s->buf, ms_text(s->buf, (uint64_t)e->ttfb_us)) : PTC_STRLIT("-");
    case PTC_TEMPLATE_DURATION_MS:
        return ptc_iov(s->buf, ms_text(s->buf, e->duration_us));
    case PTC_TEMPLATE_UPSTREAM_HOST:
        return cstr(e->upstream_host);
    case PTC_TEMPLATE_KIND:
        return cstr(e->local ? "local" : "call");
    default:
        return ptc_iov("", 0);
    }
}

size_t ptc_access_log_format(const ptc_template_t *t, const ptc_access_entry_t *e, char *out, size_t cap)
{
    size_t len;
    if (cap < 2)
        return 0;
    if (t != NULL) {
        source_t s; /* buf is scratch: not zeroed */
        s.e = e;
        ptc_template_source_t src = {source_get, &s};
        len = ptc_template_expand(t, &src, out, cap - 1, NULL);
    } else if (cap > JSON_LINE_WORST) {
        len = format_json(out, e);
    } else {
        /* a buffer too short for the longest line: the line is made whole, then cut */
        char line[JSON_LINE_WORST];
        len = PTC_MIN(format_json(line, e), cap - 1);
        memcpy(out, line, len);
    }
    out[len++] = '\n';
    return len;
}

bool ptc_access_log_write(ptc_access_log_t *l, size_t worker, const ptc_access_entry_t *e)
{
    char line[PTC_ACCESS_LOG_LINE_MAX];
    size_t n = ptc_access_log_format(ptc_access_log_template(l), e, line, sizeof(line));
    return ptc_access_log_append(l, worker, line, n);
}

int ptc_access_log_capture(const ptc_template_t *t, ptc_template_var_t kind, const ptc_header_t *fields, size_t n,
                           ptc_access_capture_t *out)
{
    size_t names = 0, bytes = 0;

    out->fields = NULL;
    out->n = 0;
    for (size_t i = 0; t != NULL && i < t->num_parts; i++) {
        if (t->parts[i].kind != kind)
            continue;
        names++;
        for (size_t j = 0; j < n; j++)
            if (ptc_iov_eq(fields[j].name, t->parts[i].arg)) {
                bytes += PTC_MIN(fields[j].value.len, (size_t)PTC_ACCESS_LOG_VALUE_MAX);
                break;
            }
    }
    if (names == 0)
        return 0;
    ptc_header_t *c = malloc(names * sizeof(*c) + bytes + 1);
    if (c == NULL)
        return PTC_ENOMEM;
    char *p = (char *)(c + names);
    size_t k = 0;
    for (size_t i = 0; i < t->num_parts; i++) {
        if (t->parts[i].kind != kind)
            continue;
        ptc_iovec_t v = {"", 0};
        for (size_t j = 0; j < n; j++)
            if (ptc_iov_eq(fields[j].name, t->parts[i].arg)) {
                v = ptc_iov(fields[j].value.base, PTC_MIN(fields[j].value.len, (size_t)PTC_ACCESS_LOG_VALUE_MAX));
                break;
            }
        if (v.len != 0)
            memcpy(p, v.base, v.len);
        c[k++] = (ptc_header_t){t->parts[i].arg, ptc_iov(p, v.len)}; /* the name lives in the template */
        p += v.len;
    }
    out->fields = c;
    out->n = k;
    return 0;
}
