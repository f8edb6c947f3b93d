/*
 * Header-value templates: parsing into parts, expansion with control characters neutralized, and which header
 * names and literal values a header rule may use.
 *
 * A template is parsed twice by the same scanner: once to validate and measure, then into a single allocation
 * (parts, then the bytes their args point to, then a copy of the configured text), so disposing is one free()
 * and there is no partial state to unwind.
 */
#include <stdio.h>
#include <stdlib.h>

#include "portico/template.h"

#define ECHO_MAX 64 /* bytes of a bad argument repeated in an error message */

typedef enum {
    ARG_NONE,
    ARG_HEADER, /* an HTTP token, lower-cased */
    ARG_CLAIM,  /* printable ASCII without spaces */
} arg_kind_t;

static const struct {
    const char *name;
    ptc_template_var_t kind;
    arg_kind_t arg;
    bool log_only; /* what is known once a call has ended: access logs only */
} vars[] = {
    {"REQ", PTC_TEMPLATE_REQ, ARG_HEADER, false},
    {"RESP", PTC_TEMPLATE_RESP, ARG_HEADER, false},
    {"REQUEST_ID", PTC_TEMPLATE_REQUEST_ID, ARG_NONE, false},
    {"TRACE_ID", PTC_TEMPLATE_TRACE_ID, ARG_NONE, false},
    {"UPSTREAM", PTC_TEMPLATE_UPSTREAM, ARG_NONE, false},
    {"ROUTE", PTC_TEMPLATE_ROUTE, ARG_NONE, false},
    {"CLIENT_IP", PTC_TEMPLATE_CLIENT_IP, ARG_NONE, false},
    {"JWT", PTC_TEMPLATE_JWT, ARG_CLAIM, false},
    {"START_TIME", PTC_TEMPLATE_START_TIME, ARG_NONE, true},
    {"PEER", PTC_TEMPLATE_PEER, ARG_NONE, true},
    {"HTTP_METHOD", PTC_TEMPLATE_HTTP_METHOD, ARG_NONE, true},
    {"PATH", PTC_TEMPLATE_PATH, ARG_NONE, true},
    {"PROTOCOL", PTC_TEMPLATE_PROTOCOL, ARG_NONE, true},
    {"TRANSPORT", PTC_TEMPLATE_TRANSPORT, ARG_NONE, true},
    {"GRPC_STATUS", PTC_TEMPLATE_GRPC_STATUS, ARG_NONE, true},
    {"GRPC_MESSAGE", PTC_TEMPLATE_GRPC_MESSAGE, ARG_NONE, true},
    {"HTTP_STATUS", PTC_TEMPLATE_HTTP_STATUS, ARG_NONE, true},
    {"BYTES_IN", PTC_TEMPLATE_BYTES_IN, ARG_NONE, true},
    {"BYTES_OUT", PTC_TEMPLATE_BYTES_OUT, ARG_NONE, true},
    {"MESSAGES_IN", PTC_TEMPLATE_MESSAGES_IN, ARG_NONE, true},
    {"MESSAGES_OUT", PTC_TEMPLATE_MESSAGES_OUT, ARG_NONE, true},
    {"TTFB_MS", PTC_TEMPLATE_TTFB_MS, ARG_NONE, true},
    {"DURATION_MS", PTC_TEMPLATE_DURATION_MS, ARG_NONE, true},
    {"UPSTREAM_HOST", PTC_TEMPLATE_UPSTREAM_HOST, ARG_NONE, true},
    {"KIND", PTC_TEMPLATE_KIND, ARG_NONE, true},
};

/* Control characters a header value may not hold: all of C0 but HTAB, and DEL (RFC 9110 §5.5). */
static bool is_ctl(char c)
{
    unsigned char u = (unsigned char)c;
    return (u < 0x20 && u != '\t') || u == 0x7f;
}

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

bool ptc_http_token_valid(ptc_iovec_t s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is_tchar(s.base[i]))
            return false;
    return true;
}

/* ---- parsing ---- */

typedef struct st_builder_t {
    bool log;                   /* an access-log template: the log variables are allowed */
    ptc_template_part_t *parts; /* NULL while measuring */
    char *store;                /* where args and literal text are copied */
    size_t num_parts, store_len;
    bool last_literal;
} builder_t;

static void emit(builder_t *b, ptc_template_var_t kind, const char *s, size_t len, bool lower)
{
    bool extend = kind == PTC_TEMPLATE_LITERAL && b->last_literal;
    if (b->parts != NULL) {
        char *dst = b->store + b->store_len;
        for (size_t i = 0; i < len; i++)
            dst[i] = lower ? ptc_tolower(s[i]) : s[i];
        if (extend)
            b->parts[b->num_parts - 1].arg.len += len;
        else
            b->parts[b->num_parts] = (ptc_template_part_t){kind, ptc_iov(dst, len)};
    }
    if (!extend)
        b->num_parts++;
    b->store_len += len;
    b->last_literal = kind == PTC_TEMPLATE_LITERAL;
}

/* A bad argument as it can be shown in a message: at most ECHO_MAX bytes, control and non-ASCII ones as '?'. */
static const char *echo(char buf[ECHO_MAX + 4], ptc_iovec_t s)
{
    size_t n = PTC_MIN(s.len, ECHO_MAX);
    for (size_t i = 0; i < n; i++)
        buf[i] = s.base[i] >= 0x20 && s.base[i] < 0x7f ? s.base[i] : '?';
    if (s.len > ECHO_MAX) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static bool claim_ok(ptc_iovec_t s)
{
    for (size_t i = 0; i < s.len; i++)
        if (!(s.base[i] > 0x20 && s.base[i] < 0x7f))
            return false;
    return true;
}

/* Validates text and emits its parts into b (measuring only, when b->parts is NULL). */
static int scan(const char *text, builder_t *b, char *err, size_t errlen)
{
    const char *p = text;

    while (*p != '\0') {
        if (*p != '%') {
            const char *start = p;
            for (; *p != '\0' && *p != '%'; p++)
                if (is_ctl(*p))
                    return ptc_errorf(PTC_EINVAL, err, errlen, "control character 0x%02x at offset %zu",
                                      (unsigned)(unsigned char)*p, (size_t)(p - text));
            emit(b, PTC_TEMPLATE_LITERAL, start, (size_t)(p - start), false);
            continue;
        }
        if (p[1] == '%') {
            emit(b, PTC_TEMPLATE_LITERAL, p, 1, false);
            p += 2;
            continue;
        }

        /* '%' NAME [ '(' arg ')' ] '%' */
        const char *name = p + 1, *q = name;
        while ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_')
            q++;
        size_t name_len = (size_t)(q - name);
        ptc_iovec_t arg = {q, 0};
        bool has_arg = false;
        if (name_len != 0 && *q == '(') {
            const char *a = q + 1, *r = a;
            while (*r != '\0' && *r != ')' && *r != '%')
                r++;
            if (*r == ')') {
                arg = ptc_iov(a, (size_t)(r - a));
                has_arg = true;
                q = r + 1;
            }
        }
        if (name_len == 0 || *q != '%')
            return ptc_errorf(PTC_EINVAL, err, errlen, "unterminated variable at offset %zu (write %%%% for a literal %%)",
                              (size_t)(p - text));

        size_t v = 0;
        while (v < PTC_ARRAY_SIZE(vars) && !(strlen(vars[v].name) == name_len && memcmp(vars[v].name, name, name_len) == 0))
            v++;
        if (v == PTC_ARRAY_SIZE(vars))
            return ptc_errorf(PTC_EINVAL, err, errlen, "unknown variable %%%.*s%%", (int)name_len, name);
        if (vars[v].log_only && !b->log)
            return ptc_errorf(PTC_EINVAL, err, errlen, "%%%s%% is for access logs only", vars[v].name);
        const char *vname = vars[v].name, *what = vars[v].arg == ARG_HEADER ? "a header name" : "a claim path";
        char shown[ECHO_MAX + 4];
        switch (vars[v].arg) {
        case ARG_NONE:
            if (has_arg)
                return ptc_errorf(PTC_EINVAL, err, errlen, "%%%s%% takes no argument", vname);
            break;
        case ARG_HEADER:
        case ARG_CLAIM:
            if (!has_arg)
                return ptc_errorf(PTC_EINVAL, err, errlen, "%%%s%% needs %s: %%%s(%s)%%", vname, what, vname,
                                  vars[v].arg == ARG_HEADER ? "name" : "claim.path");
            if (arg.len == 0)
                return ptc_errorf(PTC_EINVAL, err, errlen, "%%%s()%% needs %s", vname, what);
            if (vars[v].arg == ARG_HEADER && !ptc_http_token_valid(arg))
                return ptc_errorf(PTC_EINVAL, err, errlen, "%%%s(%s)%%: the header name must be an HTTP token", vname,
                                  echo(shown, arg));
            if (vars[v].arg == ARG_CLAIM && !claim_ok(arg))
                return ptc_errorf(PTC_EINVAL, err, errlen, "%%%s(%s)%%: the claim path must be printable ASCII without spaces",
                                  vname, echo(shown, arg));
            break;
        }
        emit(b, vars[v].kind, arg.base, arg.len, vars[v].arg == ARG_HEADER);
        p = q + 1;
    }
    return 0;
}

static int parse(const char *text, bool log, ptc_template_t *out, char *err, size_t errlen)
{
    builder_t measure = {.log = log}, fill = {.log = log};
    int ret;

    memset(out, 0, sizeof(*out));
    if (text == NULL)
        return ptc_errorf(PTC_EINVAL, err, errlen, "no template");
    if ((ret = scan(text, &measure, err, errlen)) != 0)
        return ret;

    /* bounded by the text: at most one part per character, args and literals no longer than it */
    size_t text_len = strlen(text), parts_size = measure.num_parts * sizeof(ptc_template_part_t);
    char *mem = malloc(parts_size + measure.store_len + text_len + 1);
    if (mem == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    fill.parts = (ptc_template_part_t *)(void *)mem;
    fill.store = mem + parts_size;
    if (scan(text, &fill, NULL, 0) != 0 || fill.num_parts != measure.num_parts || fill.store_len != measure.store_len) {
        free(mem); /* cannot happen: the same scan over the same text */
        return ptc_errorf(PTC_EINVAL, err, errlen, "internal error");
    }
    char *copy = fill.store + fill.store_len;
    memcpy(copy, text, text_len + 1);
    out->parts = fill.parts;
    out->num_parts = fill.num_parts;
    out->text = copy;
    return 0;
}

int ptc_template_parse(const char *text, ptc_template_t *out, char *err, size_t errlen)
{
    return parse(text, false, out, err, errlen);
}

int ptc_template_parse_log(const char *text, ptc_template_t *out, char *err, size_t errlen)
{
    return parse(text, true, out, err, errlen);
}

void ptc_template_dispose(ptc_template_t *t)
{
    free(t->parts);
    memset(t, 0, sizeof(*t));
}

bool ptc_template_is_literal(const ptc_template_t *t)
{
    for (size_t i = 0; i < t->num_parts; i++)
        if (t->parts[i].kind != PTC_TEMPLATE_LITERAL)
            return false;
    return true;
}

/* ---- expansion ---- */

size_t ptc_template_expand(const ptc_template_t *t, const ptc_template_source_t *src, char *out, size_t cap, bool *truncated)
{
    size_t len = 0, room = cap > 0 ? cap - 1 : 0;
    bool cut = false;

    for (size_t i = 0; i < t->num_parts; i++) {
        const ptc_template_part_t *part = &t->parts[i];
        ptc_iovec_t v = part->arg;
        if (part->kind != PTC_TEMPLATE_LITERAL)
            v = src != NULL && src->get != NULL ? src->get(src->ctx, part->kind, part->arg) : ptc_iov(NULL, 0);
        size_t n = PTC_MIN(v.len, room - len);
        if (n < v.len)
            cut = true;
        /* literals were checked when parsed; values come from clients and tokens */
        for (size_t j = 0; j < n; j++)
            out[len + j] = is_ctl(v.base[j]) ? ' ' : v.base[j];
        len += n;
    }
    if (cap > 0)
        out[len] = '\0';
    if (truncated != NULL)
        *truncated = cut;
    return len;
}

/* ---- header names and values ---- */

/* RFC 9110 §7.6.1 and RFC 9113 §8.2.2: connection-specific fields, never forwarded or set by a rule. */
static const ptc_iovec_t hop_by_hop[] = {
    PTC_STRLIT("connection"), PTC_STRLIT("keep-alive"), PTC_STRLIT("proxy-connection"), PTC_STRLIT("te"),
    PTC_STRLIT("upgrade"),    PTC_STRLIT("trailer"),    PTC_STRLIT("http2-settings")};
/* What the gateway computes for each hop: the message's framing, and the authority it routed on. */
static const ptc_iovec_t framing[] = {PTC_STRLIT("transfer-encoding"), PTC_STRLIT("content-length")};

static bool in_list(ptc_iovec_t name, const ptc_iovec_t *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ptc_iov_eq(name, list[i]))
            return true;
    return false;
}

const char *ptc_header_name_unsettable_reason(ptc_iovec_t name)
{
    if (name.len == 0)
        return "the name is empty";
    if (name.base[0] == ':')
        return "it is a pseudo-header";
    if (!ptc_http_token_valid(name))
        return "the name is not an HTTP token";
    for (size_t i = 0; i < name.len; i++)
        if (name.base[i] >= 'A' && name.base[i] <= 'Z')
            return "the name is not lower case";
    if (in_list(name, hop_by_hop, PTC_ARRAY_SIZE(hop_by_hop)))
        return "it is a hop-by-hop header";
    if (in_list(name, framing, PTC_ARRAY_SIZE(framing)))
        return "the gateway frames each message itself";
    if (ptc_iov_eq(name, PTC_STRLIT("host")))
        return "the gateway derives it from the request's authority";
    return NULL;
}

bool ptc_header_name_settable(ptc_iovec_t name)
{
    return ptc_header_name_unsettable_reason(name) == NULL;
}

bool ptc_header_value_literal_ok(const char *v)
{
    if (v == NULL)
        return false;
    for (; *v != '\0'; v++)
        if (is_ctl(*v))
            return false;
    return true;
}
