/*
 * Shared basics: slices, errors, attributes.
 */
#ifndef PORTICO_COMMON_H
#define PORTICO_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PTC_WARN_UNUSED __attribute__((warn_unused_result))
#define PTC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define PTC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PTC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PTC_MAX(a, b) ((a) > (b) ? (a) : (b))

/* A slice of bytes; wire data is never assumed to be NUL-terminated. Compatible in spirit with iovec. */
typedef struct st_ptc_iovec_t {
    const char *base;
    size_t len;
} ptc_iovec_t;

#define PTC_STRLIT(s) ((ptc_iovec_t){(s), sizeof(s) - 1})

static inline ptc_iovec_t ptc_iov(const char *base, size_t len)
{
    return (ptc_iovec_t){base, len};
}

/* One header or trailer field. */
typedef struct st_ptc_header_t {
    ptc_iovec_t name;
    ptc_iovec_t value;
} ptc_header_t;

/*
 * Error codes of synchronous calls: 0 or a negative PTC_E*. One list generates the enum and the strings.
 */
#define PTC_ERRNO_MAP(XX)                                                                                                          \
    XX(EINVAL, "invalid argument")                                                                                                 \
    XX(ENOMEM, "out of memory")                                                                                                    \
    XX(ETOOBIG, "value exceeds the configured limit")                                                                              \
    XX(EBADB64, "invalid base64 data")                                                                                             \
    XX(EPROTO, "protocol error")                                                                                                   \
    XX(ECONFIG, "configuration error")                                                                                             \
    XX(EIO, "i/o error")

typedef enum {
    PTC_OK = 0,
#define XX(code, _) PTC_##code,
    PTC__ERRNO_FIRST = -100,
    PTC_ERRNO_MAP(XX)
#undef XX
} ptc_errno_t;

const char *ptc_strerror(int err);

/* Writes a message into err (when err is not NULL and errlen > 0) and returns ret: `return ptc_errorf(PTC_EIO, ...)`. */
int ptc_errorf(int ret, char *err, size_t errlen, const char *fmt, ...) PTC_PRINTF(4, 5);

static inline char ptc_tolower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Eight bytes lower-cased at once: 'A'-'Z' get 0x20, nothing else changes. */
static inline void ptc_lower8(char *dst, const char *src)
{
    uint64_t x, low7, upper;
    memcpy(&x, src, 8);
    low7 = x & 0x7f7f7f7f7f7f7f7fULL;
    /* per byte, high bit: (>= 'A') xor (> 'Z'), for bytes below 0x80 only (no carry crosses a byte) */
    upper = ((low7 + 0x3f3f3f3f3f3f3f3fULL) ^ (low7 + 0x2525252525252525ULL)) & ~x & 0x8080808080808080ULL;
    x |= upper >> 2;
    memcpy(dst, &x, 8);
}

/* Copies n bytes lower-cased (ASCII letters only), eight at a time: header names on every call. */
static inline void ptc_lower_copy(char *dst, const char *src, size_t n)
{
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8)
            ptc_lower8(dst + i, src + i);
        ptc_lower8(dst + n - 8, src + n - 8); /* the last (partial) eight, overlapping: the same bytes again */
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = ptc_tolower(src[i]);
    }
}

/* Case-insensitive ASCII comparisons on slices (inline: header lookups run them on every request). */
static inline int ptc_iov_eq_ci(ptc_iovec_t a, ptc_iovec_t b)
{
    size_t i = 0;
    if (a.len != b.len)
        return 0;
    /* eight bytes at a time while they are identical (the same case: the usual), then byte by byte */
    for (; i + 8 <= a.len; i += 8) {
        uint64_t x, y;
        memcpy(&x, a.base + i, 8);
        memcpy(&y, b.base + i, 8);
        if (x != y)
            break;
    }
    for (; i < a.len; i++)
        if (a.base[i] != b.base[i] && ptc_tolower(a.base[i]) != ptc_tolower(b.base[i]))
            return 0;
    return 1;
}

/* Exact comparison; for header names, which Portico keeps in lower case (see ptc_request_t). */
static inline int ptc_iov_eq(ptc_iovec_t a, ptc_iovec_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

static inline int ptc_iov_startswith_ci(ptc_iovec_t s, ptc_iovec_t prefix)
{
    return s.len >= prefix.len && ptc_iov_eq_ci(ptc_iov(s.base, prefix.len), prefix);
}

ptc_iovec_t ptc_iov_trim(ptc_iovec_t s);
/* True when the comma-separated list (e.g. a Connection or Allow-Methods value) holds token, ignoring case and spaces. */
bool ptc_iov_list_contains_ci(ptc_iovec_t list, ptc_iovec_t token);
/* True when an Accept-style list ("a;q=0.5, b") names token (case-insensitive, parameters after ';' apart) without
 * refusing it with q=0. */
bool ptc_iov_list_accepts(ptc_iovec_t list, ptc_iovec_t token);
/* True when an Accept-Encoding list (or Connect's connect-accept-encoding) accepts gzip: named with a non-zero q, or
 * not named and `*` accepted. Unknown codings are ignored; the order of preference does not matter (gzip is the only
 * coding the gateway writes). */
bool ptc_accept_encoding_gzip(ptc_iovec_t list);

/* Decodes one UTF-8 sequence at p (no overlongs, surrogates or code points above U+10FFFF); returns its length
 * (1..4) with the code point in *cp, or 0 when the bytes at p (before end) are not one. */
size_t ptc_utf8_decode(const unsigned char *p, const unsigned char *end, uint32_t *cp);

/* Parses 1 to max_digits (at most 19) ASCII digits and nothing else. Returns 0 with the value, or PTC_EINVAL. */
int ptc_digits_parse(ptc_iovec_t v, size_t max_digits, uint64_t *out) PTC_WARN_UNUSED;
/* 0..15 for a hex digit (either case), else -1. */
int ptc_hexval(char c);
/*
 * Decodes a form-encoded (application/x-www-form-urlencoded) query component into dst: %XX escapes, '+' as
 * a space. Returns the decoded length, -1 for a bad escape, or -2 when it needs more than cap bytes.
 */
long ptc_form_decode(ptc_iovec_t s, char *dst, size_t cap);

/* Monotonic clock in milliseconds. */
uint64_t ptc_now_ms(void);
/* The same clock at the kernel tick's resolution (a few ms), cheaper: for timeouts. */
uint64_t ptc_now_coarse_ms(void);
/* The monotonic clock in microseconds: for durations that are reported. */
uint64_t ptc_now_us(void);

#endif
