/*
 * JSON escaping of access-log values (ptc_json_escape, src/filter/access_log.c), whose plain runs are scanned a word
 * at a time. Whatever the bytes, the output fits (length < cap, NUL-terminated) and, in quotes, is a JSON string
 * that jansson reads; when nothing was cut, it reads back as the input, each byte outside valid UTF-8 as U+FFFD.
 * The input's first two bytes choose the output capacity and the input cap (max).
 */
#include <string.h>

#include <jansson.h>

#include "fuzz_util.h"
#include "portico/access_log.h"
#include "portico/common.h"

/* The input as JSON should read it back (valid UTF-8 as it is, every other byte U+FFFD) into out; its length. *escaped:
 * the length of its escaped form. */
static size_t expected(const unsigned char *p, size_t n, char *out, size_t *escaped)
{
    size_t len = 0;
    *escaped = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = ptc_utf8_decode(p + i, p + n, &cp);
        if (k == 0) {
            memcpy(out + len, "\xef\xbf\xbd", 3);
            len += 3;
            *escaped += 6;
            i++;
            continue;
        }
        memcpy(out + len, p + i, k);
        len += k;
        i += k;
        if (cp == '"' || cp == '\\' || cp == '\n' || cp == '\r' || cp == '\t' || cp == '\b' || cp == '\f')
            *escaped += 2;
        else if (cp < 0x20 || cp == 0x7f)
            *escaped += 6;
        else
            *escaped += k;
    }
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t cap = 1 + data[0] * 8u, max = data[1] * 8u;
    data += 2;
    size -= 2;
    char *out = malloc(cap + 2), *want = malloc(size * 3 + 1);
    if (out == NULL || want == NULL)
        abort();
    size_t n = ptc_json_escape(out + 1, cap, ptc_iov((const char *)data, size), max);
    FUZZ_CHECK(n < cap && out[1 + n] == '\0' && strlen(out + 1) == n);

    out[0] = '"';
    out[1 + n] = '"';
    json_error_t err;
    json_t *j = json_loadb(out, n + 2, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (j == NULL)
        fprintf(stderr, "not JSON: %s: %.*s\n", err.text, (int)(n + 2), out);
    FUZZ_CHECK(j != NULL && json_is_string(j));
    size_t escaped, wlen = expected(data, size, want, &escaped);
    const char *got = json_string_value(j);
    size_t glen = json_string_length(j);
    if (size <= max && escaped < cap) { /* nothing cut: all of it, exactly */
        FUZZ_CHECK(n == escaped && glen == wlen && memcmp(got, want, wlen) == 0);
    } else { /* cut: a prefix of it, then the ellipsis when there is room for one */
        bool ellipsis = glen >= 3 && memcmp(got + glen - 3, "\xe2\x80\xa6", 3) == 0;
        FUZZ_CHECK(ellipsis || cap < 7);
        size_t plen = ellipsis ? glen - 3 : glen;
        FUZZ_CHECK(plen <= wlen && memcmp(got, want, plen) == 0);
        if (size <= max && cap >= 7) /* cut for room: it gave back at most one piece (6 bytes) more than the ellipsis needs */
            FUZZ_CHECK(n + 12 >= cap);
    }
    json_decref(j);
    free(out);
    free(want);
    return 0;
}
