/*
 * The access log (src/filter/access_log.c): JSON escaping, the lines (JSON and templates), the ring buffer,
 * and sinks end to end: a file, a FIFO nobody reads (lines dropped, never a stall), a reopen after a rename.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "portico/access_log.h"
#include "portico/filter.h"

static char dir[] = "/tmp/ptc-alog-XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *esc(const char *in, size_t max, size_t cap)
{
    static char out[512];
    assert_true(cap <= sizeof(out));
    size_t n = ptc_json_escape(out, cap, ptc_iov(in, strlen(in)), max);
    assert_int_equal(n, strlen(out));
    assert_true(n < cap);
    return out;
}

static void test_json_escape(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain /pkg.Svc/M", "plain /pkg.Svc/M"},
        {"say \"hi\" \\o/", "say \\\"hi\\\" \\\\o/"},
        {"a\nb\rc\td\be\ff", "a\\nb\\rc\\td\\be\\ff"},
        {"\x01\x1f\x7f", "\\u0001\\u001f\\u007f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}, /* valid UTF-8 stays */
        {"x\xffy", "x\\ufffdy"},
        {"\xc0\xaf", "\\ufffd\\ufffd"},             /* overlong */
        {"\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"},  /* a surrogate */
        {"\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"}, /* above U+10FFFF */
        {"end\xe2\x82", "end\\ufffd\\ufffd"},     /* cut short by the sender */
        {"\xe2\x80\xa8", "\xe2\x80\xa8"},           /* U+2028 is valid JSON */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(esc(cases[i].in, 1024, 512), cases[i].out);

    /* max: the input is cut at a character boundary and ends with an ellipsis */
    assert_string_equal(esc("abcdef", 3, 512), "abc\\u2026");
    assert_string_equal(esc("ab\xc3\xa9z", 3, 512), "ab\\u2026"); /* é does not fit whole in 3 bytes */
    assert_string_equal(esc("ab\xc3\xa9z", 4, 512), "ab\xc3\xa9\\u2026");
    assert_string_equal(esc("abc", 3, 512), "abc");
    /* the output capacity: whole pieces go until the ellipsis fits; an escape is never cut */
    assert_string_equal(esc("abcdefghij", 1024, 11), "abcdefghij");
    assert_string_equal(esc("abcdefghijk", 1024, 11), "abcd\\u2026");
    assert_string_equal(esc("\n\n\n\n\n\n", 1024, 11), "\\n\\n\\u2026");
    assert_string_equal(esc("\x01\x01", 1024, 11), "\\u2026");
    assert_string_equal(esc("abcdef\"gh", 1024, 10), "abc\\u2026");   /* a plain run is cut where the ellipsis fits */
    assert_string_equal(esc("ab\"cd\"ef", 1024, 10), "ab\\u2026");    /* an escape is not */
    assert_string_equal(esc("ab\"cd\"ef", 1024, 11), "ab\\\"cd\\\"ef"); /* exactly full: no ellipsis */
    assert_string_equal(esc("abc", 1024, 4), "abc");
    assert_string_equal(esc("abcd", 1024, 4), "abc"); /* no room for the ellipsis at all */
    /* plain runs are scanned a word at a time: each byte that needs escaping, at each place in a word, is found */
    static const struct {
        const char *in, *out;
    } specials[] = {{"\"", "\\\""}, {"\\", "\\\\"}, {"\x01", "\\u0001"}, {"\x1f", "\\u001f"}, {"\x7f", "\\u007f"},
                    {"\x80", "\\ufffd"}, {"\xff", "\\ufffd"}, {"\xc3\xa9", "\xc3\xa9"}, {" ", " "}, {"~", "~"}};
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
        for (size_t at = 0; at < 20; at++) {
            char in[64], want[64];
            snprintf(in, sizeof(in), "%.*s%s%.*s", (int)at, "abcdefghijklmnopqrstuvwxyz", specials[k].in, (int)(20 - at), "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
            snprintf(want, sizeof(want), "%.*s%s%.*s", (int)at, "abcdefghijklmnopqrstuvwxyz", specials[k].out, (int)(20 - at),
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
            assert_string_equal(esc(in, 1024, 512), want);
        }
    }
    char one[1];
    assert_int_equal(ptc_json_escape(one, 1, PTC_STRLIT("x"), 10), 0);
    assert_int_equal(one[0], '\0');
}

static void test_ring(void **state)
{
    (void)state;
    ptc_log_ring_t r;
    ptc_iovec_t p[2];
    char out[64];

    assert_int_equal(ptc_log_ring_init(&r, 16), 0);
    assert_int_equal(ptc_log_ring_peek(&r, p), 0);
    assert_true(ptc_log_ring_push(&r, "0123456789", 10));
    assert_false(ptc_log_ring_push(&r, "abcdefg", 7)); /* 6 bytes free: the line is dropped whole */
    assert_true(ptc_log_ring_push(&r, "abcdef", 6));    /* exactly full */
    assert_false(ptc_log_ring_push(&r, "x", 1));
    assert_int_equal(ptc_log_ring_peek(&r, p), 16);
    assert_int_equal(p[0].len, 16);
    assert_int_equal(p[1].len, 0);
    ptc_log_ring_consume(&r, 12); /* "0123456789ab" written */
    assert_true(ptc_log_ring_push(&r, "WXYZ", 4)); /* wraps around to the start */
    assert_int_equal(ptc_log_ring_peek(&r, p), 8);
    memcpy(out, p[0].base, p[0].len);
    memcpy(out + p[0].len, p[1].base, p[1].len);
    assert_int_equal(p[0].len, 4);
    assert_memory_equal(out, "cdefWXYZ", 8);
    ptc_log_ring_consume(&r, 8);
    assert_int_equal(ptc_log_ring_peek(&r, p), 0);
    /* a line as big as the ring fits only into an empty one */
    assert_true(ptc_log_ring_push(&r, "................", 16));
    assert_false(ptc_log_ring_push(&r, "", 1));
    ptc_log_ring_dispose(&r);
}

static ptc_access_entry_t sample_entry(ptc_call_info_t *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->peer, sizeof(info->peer), "[2001:db8::1]:4711");
    snprintf(info->request_id, sizeof(info->request_id), "req-\"1\"");
    snprintf(info->trace_id, sizeof(info->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    info->upstream = "echo";
    return (ptc_access_entry_t){
        .start_us = 1700000000123456ull, /* 2023-11-14T22:13:20.123Z */
        .info = info,
        .origin = PTC_STRLIT("https://app.example"),
        .http_method = PTC_STRLIT("POST"),
        .path = PTC_STRLIT("/pkg.Svc/M\n"),
        .protocol = "grpc-web-text",
        .transport = "h2",
        .grpc_status = 5,
        .grpc_message = PTC_STRLIT("not \xff found"),
        .http_status = 200,
        .bytes_in = 12,
        .bytes_out = 345,
        .msgs_in = 1,
        .msgs_out = 3,
        .ttfb_us = 1500,
        .duration_us = 2000042,
        .upstream_host = "127.0.0.1:50051",
    };
}

static void test_format(void **state)
{
    (void)state;
    ptc_call_info_t info;
    ptc_access_entry_t e = sample_entry(&info);
    char line[PTC_ACCESS_LOG_LINE_MAX];

    size_t n = ptc_access_log_format(NULL, &e, line, sizeof(line));
    line[n] = '\0';
    assert_string_equal(line, "{\"time\":\"2023-11-14T22:13:20.123Z\",\"kind\":\"call\",\"request_id\":\"req-\\\"1\\\"\","
                              "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"peer\":\"[2001:db8::1]:4711\","
                              "\"origin\":\"https://app.example\",\"http_method\":\"POST\",\"path\":\"/pkg.Svc/M\\n\","
                              "\"protocol\":\"grpc-web-text\",\"transport\":\"h2\",\"encoding\":\"text\",\"grpc_status\":5,"
                              "\"grpc_message\":\"not \\ufffd found\",\"http_status\":200,\"bytes_in\":12,\"bytes_out\":345,"
                              "\"messages_in\":1,\"messages_out\":3,\"ttfb_ms\":1.500,\"duration_ms\":2000.042,\"upstream\":\"echo\","
                              "\"upstream_host\":\"127.0.0.1:50051\",\"route\":null,\"jwt_sub\":null}\n");

    /* a local HTTP answer: no gRPC fields, no ids yet */
    memset(&info, 0, sizeof(info));
    e = (ptc_access_entry_t){.local = true, .start_us = 0, .info = &info, .http_method = PTC_STRLIT("OPTIONS"), .path = PTC_STRLIT("/x"),
                             .transport = "http1", .grpc_status = -1, .http_status = 204, .ttfb_us = -1};
    n = ptc_access_log_format(NULL, &e, line, sizeof(line));
    line[n] = '\0';
    assert_string_equal(line, "{\"time\":\"1970-01-01T00:00:00.000Z\",\"kind\":\"local\",\"request_id\":null,\"trace_id\":null,"
                              "\"peer\":null,\"origin\":null,\"http_method\":\"OPTIONS\",\"path\":\"/x\",\"protocol\":\"http\","
                              "\"transport\":\"http1\",\"encoding\":null,\"grpc_status\":null,\"grpc_message\":null,\"http_status\":204,"
                              "\"bytes_in\":0,\"bytes_out\":0,\"messages_in\":0,\"messages_out\":0,\"ttfb_ms\":null,"
                              "\"duration_ms\":0.000,\"upstream\":null,\"upstream_host\":null,\"route\":null,\"jwt_sub\":null}\n");

    /* the time down to the second is kept per thread: the next second, and back, are formatted anew */
    static const struct {
        uint64_t start_us, duration_us;
        const char *time, *duration;
    } times[] = {
        {1700000000999999ull, 0, "\"time\":\"2023-11-14T22:13:20.999Z\"", "\"duration_ms\":0.000,"},
        {1700000001000000ull, 999, "\"time\":\"2023-11-14T22:13:21.000Z\"", "\"duration_ms\":0.999,"},
        {1700000001001000ull, 1000, "\"time\":\"2023-11-14T22:13:21.001Z\"", "\"duration_ms\":1.000,"},
        {1700000000000000ull, UINT64_MAX, "\"time\":\"2023-11-14T22:13:20.000Z\"", "\"duration_ms\":18446744073709551.615,"},
    };
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        e.start_us = times[i].start_us;
        e.duration_us = times[i].duration_us;
        n = ptc_access_log_format(NULL, &e, line, sizeof(line));
        line[n] = '\0';
        assert_non_null(strstr(line, times[i].time));
        assert_non_null(strstr(line, times[i].duration));
    }

    /* values the gateway made are escaped too */
    e = sample_entry(&info);
    snprintf(info.peer, sizeof(info.peer), "odd\"peer\x01");
    e.transport = "h\\2";
    n = ptc_access_log_format(NULL, &e, line, sizeof(line));
    line[n] = '\0';
    assert_non_null(strstr(line, ",\"peer\":\"odd\\\"peer\\u0001\","));
    assert_non_null(strstr(line, ",\"transport\":\"h\\\\2\","));
    info.peer[0] = '\0';
    e.transport = NULL;
    n = ptc_access_log_format(NULL, &e, line, sizeof(line));
    line[n] = '\0';
    assert_non_null(strstr(line, ",\"peer\":null,"));
    assert_non_null(strstr(line, ",\"transport\":null,"));

    /* long values are cut: a line always ends with its '\n' and stays JSON */
    char big[4000];
    memset(big, '"', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    e = sample_entry(&info);
    e.path = ptc_iov(big, strlen(big));
    e.grpc_message = ptc_iov(big, strlen(big));
    n = ptc_access_log_format(NULL, &e, line, sizeof(line));
    assert_true(n < 2 * PTC_ACCESS_LOG_VALUE_MAX + 1024);
    assert_int_equal(line[n - 1], '\n');
    assert_int_equal(line[n - 2], '}');
    line[n] = '\0';
    assert_non_null(strstr(line, "\\\"\\u2026\",\"protocol\""));

    /* a template: the header-rule variables and the log variables, control characters as spaces */
    ptc_template_t t;
    char err[256];
    assert_int_equal(ptc_template_parse_log("%START_TIME% %KIND% %PEER% %CLIENT_IP% \"%HTTP_METHOD% %PATH% %PROTOCOL%/%TRANSPORT%\" "
                                            "%GRPC_STATUS% %HTTP_STATUS% %BYTES_IN%/%BYTES_OUT% %MESSAGES_IN%/%MESSAGES_OUT% "
                                            "%TTFB_MS% %DURATION_MS% %UPSTREAM%@%UPSTREAM_HOST% %REQUEST_ID% [%REQ(user-agent)%] "
                                            "[%RESP(x-served-by)%] [%JWT(sub)%] %GRPC_MESSAGE% %ROUTE%",
                                            &t, err, sizeof(err)),
                     0);
    e = sample_entry(&info);
    ptc_header_t reqf[] = {{PTC_STRLIT("user-agent"), PTC_STRLIT("curl/8")}, {PTC_STRLIT("x-other"), PTC_STRLIT("no")}};
    ptc_header_t respf[] = {{PTC_STRLIT("x-served-by"), PTC_STRLIT("up\r\n1")}};
    ptc_access_capture_t req, resp;
    assert_int_equal(ptc_access_log_capture(&t, PTC_TEMPLATE_REQ, reqf, 2, &req), 0);
    assert_int_equal(ptc_access_log_capture(&t, PTC_TEMPLATE_RESP, respf, 1, &resp), 0);
    assert_int_equal(req.n, 1);
    e.req = &req;
    e.resp = &resp;
    n = ptc_access_log_format(&t, &e, line, sizeof(line));
    line[n] = '\0';
    assert_string_equal(line, "2023-11-14T22:13:20.123Z call [2001:db8::1]:4711 2001:db8::1 \"POST /pkg.Svc/M  grpc-web-text/h2\" 5 200 "
                              "12/345 1/3 1.500 2000.042 echo@127.0.0.1:50051 req-\"1\" [curl/8] [up  1] [] not \xff found \n");
    free(req.fields);
    free(resp.fields);
    /* a template without header variables captures nothing */
    ptc_template_t plain;
    assert_int_equal(ptc_template_parse_log("%PATH%", &plain, err, sizeof(err)), 0);
    assert_int_equal(ptc_access_log_capture(&plain, PTC_TEMPLATE_REQ, reqf, 2, &req), 0);
    assert_null(req.fields);
    /* header rules refuse the log variables */
    ptc_template_t bad;
    assert_int_equal(ptc_template_parse("%PATH%", &bad, err, sizeof(err)), PTC_EINVAL);
    assert_string_equal(err, "%PATH% is for access logs only");
    ptc_template_dispose(&plain);
    ptc_template_dispose(&t);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 20];
    *len = fread(buf, 1, sizeof(buf) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* A file: every line arrives whole and in order per worker; a rename and a reopen start a new file. */
/* The value of key in a JSON line, as written (between the key and the next field). */
static const char *field_of(const char *line, const char *key, char *out, size_t cap)
{
    char k[64];
    snprintf(k, sizeof(k), ",\"%s\":", key);
    const char *p = strstr(line, k);
    assert_non_null(p);
    p += strlen(k);
    const char *end = strstr(p, ",\"");
    if (end == NULL)
        end = strstr(p, "}\n");
    assert_non_null(end);
    assert_true((size_t)(end - p) < cap);
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return out;
}

/* Every value of a line is written as ptc_json_escape makes it (capped at PTC_ACCESS_LOG_VALUE_MAX): plain values
 * are copied whole, the others escaped, at every length around the scan's 8- and 16-byte steps and the cap, with
 * each kind of byte that needs escaping at each place; numbers as printf writes them. */
static void test_format_values(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 23, 24, 31, 32, 33, 47, 48, 63, 64, 65, 1015, 1016, 1023, 1024, 1025, 1040, 3000};
    static const char *specials[] = {"\"", "\\", "\n", "\r", "\t", "\b", "\f", "\x01", "\x1f", "\x7f", "\x80", "\xff", "\xc3\xa9",
                                     "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xe2\x82", "\xc0\xaf", " ", "~"};
    static char value[3100], want[2 * PTC_ACCESS_LOG_VALUE_MAX], got[2 * PTC_ACCESS_LOG_VALUE_MAX];
    char line[PTC_ACCESS_LOG_LINE_MAX];
    ptc_call_info_t info;

    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        for (size_t si = 0; si <= sizeof(specials) / sizeof(specials[0]); si++) {
            size_t len = lens[li], sl = si < sizeof(specials) / sizeof(specials[0]) ? strlen(specials[si]) : 0;
            /* the special at every place in the first 40 bytes and the last 40 (si past the end: none) */
            for (size_t at = 0; at < len || at == 0; at++) {
                if (at >= 40 && at + 40 < len)
                    at = len - 40;
                memset(value, 'a' + (int)(at % 26), len);
                if (sl != 0 && at + sl <= len)
                    memcpy(value + at, specials[si], sl);
                ptc_iovec_t v = ptc_iov(value, len);
                size_t wn = ptc_json_escape(want + 1, PTC_ACCESS_LOG_VALUE_MAX + 1, v, PTC_ACCESS_LOG_VALUE_MAX);
                want[0] = '"';
                memcpy(want + 1 + wn, "\"", 2);

                ptc_access_entry_t e = sample_entry(&info);
                e.path = v;
                e.grpc_message = v;
                e.origin = v;
                memcpy(info.peer, value, PTC_MIN(len, sizeof(info.peer) - 1));
                info.peer[PTC_MIN(len, sizeof(info.peer) - 1)] = '\0';
                size_t n = ptc_access_log_format(NULL, &e, line, sizeof(line));
                line[n] = '\0';
                assert_string_equal(field_of(line, "path", got, sizeof(got)), want);
                assert_string_equal(field_of(line, "grpc_message", got, sizeof(got)), len != 0 ? want : "null");
                assert_string_equal(field_of(line, "origin", got, sizeof(got)), len != 0 ? want : "null");
                size_t pn = strlen(info.peer);
                wn = ptc_json_escape(want + 1, PTC_ACCESS_LOG_VALUE_MAX + 1, ptc_iov(info.peer, pn), PTC_ACCESS_LOG_VALUE_MAX);
                memcpy(want + 1 + wn, "\"", 2);
                assert_string_equal(field_of(line, "peer", got, sizeof(got)), pn != 0 ? want : "null");
                if (len == 0)
                    break;
            }
        }
    }

    /* numbers: every length of digits, the powers of ten and their neighbours */
    ptc_access_entry_t e = sample_entry(&info);
    for (uint64_t p = 1, k = 0; k < 20; k++, p = p * 10) {
        uint64_t vs[] = {p - 1, p, p + 1, p * 9 + (p - 1), UINT64_MAX - k};
        for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
            char num[64], ms[64];
            e.bytes_in = e.bytes_out = e.msgs_in = e.msgs_out = vs[i];
            e.duration_us = vs[i];
            e.ttfb_us = (int64_t)(vs[i] >> 1);
            size_t n = ptc_access_log_format(NULL, &e, line, sizeof(line));
            line[n] = '\0';
            snprintf(num, sizeof(num), "%" PRIu64, vs[i]);
            assert_string_equal(field_of(line, "bytes_in", got, sizeof(got)), num);
            assert_string_equal(field_of(line, "bytes_out", got, sizeof(got)), num);
            assert_string_equal(field_of(line, "messages_in", got, sizeof(got)), num);
            assert_string_equal(field_of(line, "messages_out", got, sizeof(got)), num);
            snprintf(ms, sizeof(ms), "%" PRIu64 ".%03" PRIu64, vs[i] / 1000, vs[i] % 1000);
            assert_string_equal(field_of(line, "duration_ms", got, sizeof(got)), ms);
            snprintf(ms, sizeof(ms), "%" PRIu64 ".%03" PRIu64, (vs[i] >> 1) / 1000, (vs[i] >> 1) % 1000);
            assert_string_equal(field_of(line, "ttfb_ms", got, sizeof(got)), ms);
        }
    }
    for (int st = 0; st < 1000; st += 7) {
        char num[16];
        e.http_status = st;
        e.grpc_status = st % 17;
        size_t n = ptc_access_log_format(NULL, &e, line, sizeof(line));
        line[n] = '\0';
        snprintf(num, sizeof(num), "%d", st);
        assert_string_equal(field_of(line, "http_status", got, sizeof(got)), num);
        snprintf(num, sizeof(num), "%d", st % 17);
        assert_string_equal(field_of(line, "grpc_status", got, sizeof(got)), num);
    }

    /* the time, against strftime, over seconds, days and years (each thread keeps the last second it formatted) */
    for (uint64_t t = 0; t < 4102444800ull; t += 86399ull * 37 + 1) {
        uint64_t us = t * 1000000 + (t % 1000) * 1000 + t % 997;
        time_t secs = (time_t)t;
        struct tm tm;
        char ts[64], wt[80];
        gmtime_r(&secs, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(wt, sizeof(wt), "{\"time\":\"%s.%03" PRIu64 "Z\",", ts, us / 1000 % 1000);
        e.start_us = us;
        size_t n = ptc_access_log_format(NULL, &e, line, sizeof(line));
        line[n] = '\0';
        assert_memory_equal(line, wt, strlen(wt));
    }

    /* the longest line there can be: every value past the cap and escaped, every number at its widest */
    static char big[3000];
    memset(big, '\x01', sizeof(big) - 1);
    e = sample_entry(&info);
    e.origin = e.path = e.grpc_message = e.http_method = ptc_iov(big, sizeof(big) - 1);
    memset(info.peer, '\x01', sizeof(info.peer) - 1);
    memset(info.request_id, '\x01', sizeof(info.request_id) - 1);
    memset(info.trace_id, '\x01', sizeof(info.trace_id) - 1);
    info.upstream = big + 1;
    e.upstream_host = big + 2;
    e.protocol = big + 3;
    e.transport = big + 4;
    ptc_route_config_t route = {.path = big + 5};
    info.route = &route;
    e.bytes_in = e.bytes_out = e.msgs_in = e.msgs_out = e.duration_us = UINT64_MAX;
    e.ttfb_us = INT64_MAX;
    e.http_status = -1;
    e.start_us = UINT64_MAX;
    size_t n = ptc_access_log_format(NULL, &e, line, sizeof(line));
    assert_true(n < sizeof(line));
    assert_int_equal(line[n - 1], '\n');
    assert_int_equal(line[n - 2], '}');
    line[n] = '\0';
    assert_non_null(strstr(line, ",\"route\":\"\\u0001"));
    /* a buffer shorter than a line: the line is cut, and still ends with its newline */
    char small[100];
    n = ptc_access_log_format(NULL, &e, small, sizeof(small));
    assert_int_equal(n, sizeof(small));
    assert_memory_equal(small, line, sizeof(small) - 1);
    assert_int_equal(small[n - 1], '\n');
}

static void test_sink_file(void **state)
{
    (void)state;
    char path[256], rotated[256], err[256], line[64];
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/access.log.1", dir);
    char json[] = "json", tmpl[] = "%PATH%";
    ptc_access_log_config_t cfg = {path, json, 16384};
    ptc_access_log_t *l;
    ptc_access_log_totals_t t0, t;

    ptc_access_log_totals(&t0);
    assert_int_equal(ptc_access_log_new(&l, &cfg, 2, err, sizeof(err)), 0);
    assert_true(ptc_access_log_same(l, &cfg));
    ptc_access_log_config_t other = {path, tmpl, 16384};
    assert_false(ptc_access_log_same(l, &other));
    assert_null(ptc_access_log_template(l));
    size_t sent = 0;
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(line, sizeof(line), "worker %d line %04d\n", i % 2, i);
        /* a writer keeps up with this easily; a full ring would be retried */
        while (!ptc_access_log_append(l, (size_t)(i % 2), line, (size_t)n))
            usleep(1000);
        sent += (size_t)n;
    }
    assert_false(ptc_access_log_append(l, 2, "x\n", 2)); /* no such worker */
    for (int tries = 0; tries < 500; tries++) {
        ptc_access_log_totals(&t);
        if (t.bytes - t0.bytes == sent)
            break;
        usleep(10000);
    }
    assert_int_equal(t.bytes - t0.bytes, sent);
    size_t len;
    char *text = slurp(path, &len);
    assert_int_equal(len, sent);
    assert_int_equal(count_lines(text), 2000);
    assert_non_null(strstr(text, "worker 1 line 1999\n"));

    /* logrotate: rename, reopen, write: the new lines go to a new file of the old name */
    assert_int_equal(rename(path, rotated), 0);
    assert_int_equal(ptc_access_log_reopen(l, err, sizeof(err)), 0);
    assert_true(ptc_access_log_append(l, 0, "after the reopen\n", 17));
    ptc_access_log_release(l);
    assert_true(ptc_access_log_wait_all(3000));
    ptc_access_log_totals(&t);
    assert_int_equal(t.reopens - t0.reopens, 1);
    assert_int_equal(t.write_errors - t0.write_errors, 0);
    assert_int_equal(t.lost - t0.lost, 0);
    text = slurp(path, &len);
    assert_string_equal(text, "after the reopen\n");
    text = slurp(rotated, &len);
    assert_int_equal(count_lines(text), 2000);

    /* what cannot be opened is an error, said with the path */
    char nowhere[] = "/nonexistent/dir/a.log";
    ptc_access_log_config_t missing = {nowhere, json, 16384};
    assert_int_equal(ptc_access_log_new(&l, &missing, 1, err, sizeof(err)), PTC_EIO);
    assert_string_equal(err, "access_log.path: cannot open \"/nonexistent/dir/a.log\": No such file or directory");
}

/* A FIFO that nobody reads: appends never block; once the pipe and the ring are full, lines are dropped. */
static void test_sink_stalled(void **state)
{
    (void)state;
    char path[256], err[256], line[200];
    snprintf(path, sizeof(path), "%s/fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    char json[] = "json";
    ptc_access_log_config_t cfg = {path, json, 16384};
    ptc_access_log_t *l;

    /* no reader at all: refused, rather than a hang */
    assert_int_equal(ptc_access_log_new(&l, &cfg, 1, err, sizeof(err)), PTC_EIO);
    assert_non_null(strstr(err, "No such device or address"));
    int rd = open(path, O_RDONLY | O_NONBLOCK); /* a reader that never reads */
    assert_true(rd >= 0);
    assert_int_equal(ptc_access_log_new(&l, &cfg, 1, err, sizeof(err)), 0);
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    /* the writer fills the pipe, then the ring fills, then lines are dropped; no append ever waits */
    size_t ok = 0, dropped = 0;
    uint64_t slowest = 0;
    for (int i = 0; i < 3000 && (dropped < 100 || ok < 200); i++) {
        uint64_t t0 = ptc_now_us();
        if (ptc_access_log_append(l, 0, line, sizeof(line)))
            ok++;
        else
            dropped++;
        slowest = PTC_MAX(slowest, ptc_now_us() - t0);
        usleep(200);
    }
    assert_true(dropped >= 100);
    assert_true(ok >= 200);   /* more than the ring holds: the writer took some until the pipe was full */
    assert_true(slowest < 50000); /* an append is a copy (and sometimes a wake-up write), never a wait */
    /* released while stalled: the writer gives up after its bounded wait, the lines are counted lost */
    ptc_access_log_totals_t t0, t1;
    ptc_access_log_totals(&t0);
    ptc_access_log_release(l);
    assert_true(ptc_access_log_wait_all(5000));
    ptc_access_log_totals(&t1);
    assert_true(t1.lost - t0.lost > 0 && t1.lost - t0.lost <= 16384 / sizeof(line)); /* what was in the ring */
    close(rd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escape), cmocka_unit_test(test_ring),          cmocka_unit_test(test_format), cmocka_unit_test(test_format_values),
        cmocka_unit_test(test_sink_file),   cmocka_unit_test(test_sink_stalled),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
