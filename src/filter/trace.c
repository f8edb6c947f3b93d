/*
 * W3C Trace Context Level 1 (https://www.w3.org/TR/trace-context/): traceparent, tracestate, and the per-thread
 * random generator behind trace, span and request ids.
 *
 * Generator (see ptc_random_bytes in trace.h for the why): ChaCha with 12 rounds, the choice of Rust's StdRng
 * (the best attacks reach 7 rounds), run in fast-key-erasure mode: each refill computes RNG_BLOCKS blocks with
 * a zero nonce, the first 32 bytes become the next key and the rest are handed out. So there is no counter to
 * manage, and the bytes already handed out cannot be recomputed from the state that remains. Four blocks are
 * computed side by side in vectors of four words (GCC's vector extension, no intrinsics).
 *
 * The only shared state is a pthread_once that registers the fork handler; everything else is per thread.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>

#include "portico/trace.h"

/* ---- hex ---- */

/* the two digits of every byte value: one load and one store per byte (ids are encoded on every request) */
#define HEX_ROW(h) h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h "c" h "d" h "e" h "f"
static const char hex_pairs[] = HEX_ROW("0") HEX_ROW("1") HEX_ROW("2") HEX_ROW("3") HEX_ROW("4") HEX_ROW("5") HEX_ROW("6")
    HEX_ROW("7") HEX_ROW("8") HEX_ROW("9") HEX_ROW("a") HEX_ROW("b") HEX_ROW("c") HEX_ROW("d") HEX_ROW("e") HEX_ROW("f");

/* The two digits of byte b as they lie in memory, read as a 16-bit number. */
static inline uint64_t hex_pair16(uint8_t b)
{
    uint16_t v;
    memcpy(&v, hex_pairs + 2 * b, 2);
    return v;
}

size_t ptc_hex_encode(char *dst, const void *src, size_t n)
{
    const uint8_t *s = src;
    size_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* four bytes' digits in one 8-byte store (the first byte's pair lowest, so first in memory) */
    for (; i + 4 <= n; i += 4) {
        uint64_t w = hex_pair16(s[i]) | hex_pair16(s[i + 1]) << 16 | hex_pair16(s[i + 2]) << 32 | hex_pair16(s[i + 3]) << 48;
        memcpy(dst + 2 * i, &w, 8);
    }
#endif
    for (; i < n; i++)
        memcpy(dst + 2 * i, hex_pairs + 2 * s[i], 2);
    return 2 * n;
}

/* The value of each lower-case hex digit with bit 4 set (0x10-0x1f); 0 for every other byte, upper case too (invalid in
 * trace context): a digit pair is two loads, and one AND over them all says whether every byte was a digit. */
#define HV(c, v) [c] = 0x10 | (v)
static const uint8_t hex_lc[256] = {HV('0', 0),  HV('1', 1),  HV('2', 2),  HV('3', 3),  HV('4', 4),  HV('5', 5),
                                    HV('6', 6),  HV('7', 7),  HV('8', 8),  HV('9', 9),  HV('a', 10), HV('b', 11),
                                    HV('c', 12), HV('d', 13), HV('e', 14), HV('f', 15)};
#undef HV

/* Decodes 2 * n lower-case hex digits; false when one is not (dst then holds garbage). */
static bool hex_decode_lc(uint8_t *dst, const char *src, size_t n)
{
    const unsigned char *s = (const unsigned char *)src;
    unsigned ok = 0x10;
    for (size_t i = 0; i < n; i++) {
        unsigned hi = hex_lc[s[2 * i]], lo = hex_lc[s[2 * i + 1]];
        ok &= hi & lo;
        dst[i] = (uint8_t)(hi << 4 | (lo & 0x0f));
    }
    return ok != 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* ---- traceparent ---- */

int ptc_traceparent_parse(ptc_iovec_t value, ptc_traceparent_t *out)
{
    ptc_iovec_t v = ptc_iov_trim(value);
    const char *s = v.base;
    ptc_traceparent_t t;

    /* version "-" trace-id "-" parent-id "-" flags: dashes at 2, 35 and 52 */
    if (v.len < PTC_TRACEPARENT_LEN || !hex_decode_lc(&t.version, s, 1) || s[2] != '-' || t.version == 0xff)
        return PTC_EINVAL;
    if (t.version == 0 ? v.len != PTC_TRACEPARENT_LEN : v.len > PTC_TRACEPARENT_LEN && s[PTC_TRACEPARENT_LEN] != '-')
        return PTC_EINVAL;
    if (!hex_decode_lc(t.trace_id, s + 3, sizeof(t.trace_id)) || s[35] != '-' ||
        !hex_decode_lc(t.parent_id, s + 36, sizeof(t.parent_id)) || s[52] != '-' || !hex_decode_lc(&t.flags, s + 53, 1))
        return PTC_EINVAL;
    if (all_zero(t.trace_id, sizeof(t.trace_id)) || all_zero(t.parent_id, sizeof(t.parent_id)))
        return PTC_EINVAL;
    if (t.version != 0)
        t.flags &= PTC_TRACE_FLAG_SAMPLED;
    *out = t;
    return 0;
}

size_t ptc_traceparent_format(const ptc_traceparent_t *t, char out[PTC_TRACEPARENT_LEN + 1])
{
    char *p = out;
    *p++ = '0';
    *p++ = '0';
    *p++ = '-';
    p += ptc_hex_encode(p, t->trace_id, sizeof(t->trace_id));
    *p++ = '-';
    p += ptc_hex_encode(p, t->parent_id, sizeof(t->parent_id));
    *p++ = '-';
    p += ptc_hex_encode(p, &t->flags, 1);
    *p = '\0';
    return PTC_TRACEPARENT_LEN;
}

/* ---- tracestate ---- */

#define KEY_MAX 256
#define TENANT_MAX 241
#define SYSTEM_MAX 14
#define VALUE_MAX 256

static bool is_lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_key_char(char c)
{
    return is_lcalpha(c) || is_digit(c) || c == '_' || c == '-' || c == '*' || c == '/';
}

/* simple-key, or tenant-id "@" system-id */
static bool key_ok(ptc_iovec_t k)
{
    const char *at = memchr(k.base, '@', k.len);
    size_t tenant = at != NULL ? (size_t)(at - k.base) : k.len;
    for (size_t i = 0; i < k.len; i++)
        if (i != tenant && !is_key_char(k.base[i])) /* a second '@' too */
            return false;
    if (at == NULL)
        return k.len >= 1 && k.len <= KEY_MAX && is_lcalpha(k.base[0]);
    size_t system = k.len - tenant - 1;
    return tenant >= 1 && tenant <= TENANT_MAX && system >= 1 && system <= SYSTEM_MAX &&
           (is_lcalpha(k.base[0]) || is_digit(k.base[0])) && is_lcalpha(at[1]);
}

/* 1*256 of chr = %x20-2B / %x2D-3C / %x3E-7E, the last one not a space */
static bool value_ok(ptc_iovec_t v)
{
    if (v.len < 1 || v.len > VALUE_MAX || v.base[v.len - 1] == ' ')
        return false;
    for (size_t i = 0; i < v.len; i++)
        if (v.base[i] < 0x20 || v.base[i] > 0x7e || v.base[i] == ',' || v.base[i] == '=')
            return false;
    return true;
}

int ptc_tracestate_check(ptc_iovec_t value, size_t *members)
{
    ptc_iovec_t keys[PTC_TRACESTATE_MAX_MEMBERS];
    size_t n = 0;

    while (value.len > 0) {
        const char *comma = memchr(value.base, ',', value.len);
        size_t seg = comma != NULL ? (size_t)(comma - value.base) : value.len;
        ptc_iovec_t m = ptc_iov_trim(ptc_iov(value.base, seg));
        /* list-member = (key "=" value) / OWS: empty ones are allowed (joining several lines can make them) */
        if (m.len != 0) {
            const char *eq = memchr(m.base, '=', m.len);
            if (eq == NULL || n == PTC_TRACESTATE_MAX_MEMBERS)
                return PTC_EINVAL;
            ptc_iovec_t k = ptc_iov(m.base, (size_t)(eq - m.base)), v = ptc_iov(eq + 1, m.len - k.len - 1);
            if (!key_ok(k) || !value_ok(v))
                return PTC_EINVAL;
            for (size_t i = 0; i < n; i++)
                if (ptc_iov_eq(keys[i], k))
                    return PTC_EINVAL;
            keys[n++] = k;
        }
        if (comma == NULL)
            break;
        value = ptc_iov(comma + 1, value.len - seg - 1);
    }
    if (members != NULL)
        *members = n;
    return 0;
}

/* ---- random ids ---- */

#define RNG_ROUNDS 12
#define RNG_BLOCKS 8 /* per refill: 512 bytes, 32 of which become the next key */
#define LANES 4      /* blocks computed side by side by ptc__chacha_blocks */

typedef struct st_rng_t {
    uint32_t key[8];
    uint8_t buf[RNG_BLOCKS * 64];
    size_t pos;  /* next byte of buf to hand out; bytes before it are zeroed */
    bool seeded; /* false in a new thread and, after fork(2), in the child */
} rng_t;

static _Thread_local rng_t rng;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Four lanes in one vector (GCC and Clang vector extensions: SSE2 on x86-64, NEON on arm64, plain code elsewhere).
 * The loop-per-lane form this replaces was left scalar by GCC 12 at -O3: 4,960 instructions for four blocks. */
typedef uint32_t v4u32_t __attribute__((vector_size(16)));

#define ROTL32(v, n) (((v) << (n)) | ((v) >> (32 - (n))))
#define QUARTER(a, b, c, d)                                                                                                        \
    do {                                                                                                                           \
        x[a] += x[b];                                                                                                              \
        x[d] = ROTL32(x[d] ^ x[a], 16);                                                                                            \
        x[c] += x[d];                                                                                                              \
        x[b] = ROTL32(x[b] ^ x[c], 12);                                                                                            \
        x[a] += x[b];                                                                                                              \
        x[d] = ROTL32(x[d] ^ x[a], 8);                                                                                             \
        x[c] += x[d];                                                                                                              \
        x[b] = ROTL32(x[b] ^ x[c], 7);                                                                                             \
    } while (0)

void ptc__chacha_blocks(const uint32_t key[8], uint32_t counter, unsigned rounds, uint8_t out[256])
{
    static const uint32_t sigma[4] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574}; /* "expand 32-byte k" */
    v4u32_t in[16], x[16]; /* word i of the four blocks; lane l is block counter + l */

    for (size_t i = 0; i < 4; i++)
        in[i] = (v4u32_t){sigma[i], sigma[i], sigma[i], sigma[i]};
    for (size_t i = 0; i < 8; i++)
        in[4 + i] = (v4u32_t){key[i], key[i], key[i], key[i]};
    in[12] = (v4u32_t){counter, counter + 1, counter + 2, counter + 3};
    in[13] = in[14] = in[15] = (v4u32_t){0, 0, 0, 0};
    for (size_t i = 0; i < 16; i++)
        x[i] = in[i];
    for (unsigned r = 0; r < rounds; r += 2) {
        QUARTER(0, 4, 8, 12);
        QUARTER(1, 5, 9, 13);
        QUARTER(2, 6, 10, 14);
        QUARTER(3, 7, 11, 15);
        QUARTER(0, 5, 10, 15);
        QUARTER(1, 6, 11, 12);
        QUARTER(2, 7, 8, 13);
        QUARTER(3, 4, 9, 14);
    }
    for (size_t i = 0; i < 16; i++)
        x[i] += in[i];
    for (size_t l = 0; l < LANES; l++) {
        for (size_t i = 0; i < 16; i++) {
            uint32_t v = x[i][l];
            uint8_t *p = out + 64 * l + 4 * i;
            p[0] = (uint8_t)v;
            p[1] = (uint8_t)(v >> 8);
            p[2] = (uint8_t)(v >> 16);
            p[3] = (uint8_t)(v >> 24);
        }
    }
}

static uint32_t load32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void refill(void)
{
    for (uint32_t b = 0; b < RNG_BLOCKS; b += LANES)
        ptc__chacha_blocks(rng.key, b, RNG_ROUNDS, rng.buf + 64 * b);
    for (size_t i = 0; i < 8; i++)
        rng.key[i] = load32le(rng.buf + 4 * i);
    memset(rng.buf, 0, sizeof(rng.key));
    rng.pos = sizeof(rng.key);
}

/* Runs in the child, in the thread that forked (the only one there): its copy of the stream is the parent's. */
static void on_fork_child(void)
{
    rng.seeded = false;
}

static void register_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, on_fork_child);
}

static void seed(void)
{
    uint8_t k[sizeof(rng.key)];
    size_t got = 0;

    (void)pthread_once(&atfork_once, register_atfork);
    while (got < sizeof(k)) {
        ssize_t r = getrandom(k + got, sizeof(k) - got, 0);
        if (r > 0)
            got += (size_t)r;
        else if (r < 0 && errno != EINTR)
            break;
    }
    if (got < sizeof(k)) {
        /* No getrandom (a seccomp filter, an ancient kernel): ids must still differ between threads, processes
         * and runs, so mix in the clocks, the thread and this thread's state address (ASLR). Guessable, but
         * unique; there is no better source that needs no file. */
        struct timespec rt, mono;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        uint64_t mix[4] = {(uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec,
                           (uint64_t)mono.tv_sec * 1000000000u + (uint64_t)mono.tv_nsec, (uint64_t)pthread_self(),
                           (uint64_t)(uintptr_t)&rng};
        for (size_t i = got; i < sizeof(k); i++)
            k[i] = (uint8_t)(mix[i % 4] >> (8 * (i / 4 % 8)));
    }
    for (size_t i = 0; i < 8; i++)
        rng.key[i] = load32le(k + 4 * i);
    memset(k, 0, sizeof(k));
    rng.pos = sizeof(rng.buf);
    rng.seeded = true;
}

void ptc_random_bytes(void *buf, size_t n)
{
    uint8_t *out = buf;
    if (!rng.seeded)
        seed();
    while (n > 0) {
        if (rng.pos == sizeof(rng.buf))
            refill();
        size_t k = PTC_MIN(n, sizeof(rng.buf) - rng.pos);
        memcpy(out, rng.buf + rng.pos, k);
        memset(rng.buf + rng.pos, 0, k);
        rng.pos += k;
        out += k;
        n -= k;
    }
}

void ptc_trace_new_trace_id(uint8_t id[16])
{
    do
        ptc_random_bytes(id, 16);
    while (all_zero(id, 16));
}

void ptc_trace_new_span_id(uint8_t id[8])
{
    do
        ptc_random_bytes(id, 8);
    while (all_zero(id, 8));
}
