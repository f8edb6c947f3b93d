/*
 * The emitter: a config written back as YAML (block style, what a person would write) or JSON, such that the
 * loader reads it back as the same config (ptc_config_eq) when it is loaded over ptc_config_init_default with
 * the same base directory.
 *
 *  - Every setting is written, defaults included, except what is absent by default and then means the same:
 *    an unset authority, pid_file, TLS file or admin setting, a route without its own CORS policy, header
 *    rules or JWT requirement, an unset JWT setting (issuer, audiences, jwks_*, forward_payload, jwt.default),
 *    and the global CORS policy when none is configured (no file can say "no policy"; the defaults have none).
 *    The global header rules and the jwt section are always written, `{}` when empty: a file without them
 *    would keep the current ones.
 *  - File names under cfg->base_dir are written relative to it again, so that a config loaded from
 *    /x/portico.yaml and written back there refers to the same files. A relative name not under it (given
 *    on the command line, relative to the working directory) is made absolute.
 *  - Strings are written plain only when they are made of characters that cannot mean anything else in YAML
 *    (letters, digits, '.', '_', '/', '-', ':' not last) and are not a YAML 1.1 boolean or null word;
 *    everything else is double-quoted. The escapes used (\" \\ \b \f \n \r \t \uXXXX) mean the same in
 *    JSON and in YAML; besides the control characters, the characters YAML 1.1 counts as line breaks or
 *    refuses in a stream (C1 controls, U+2028, U+2029, U+FEFF, U+FFFE, U+FFFF) are escaped.
 *  - Secrets go through emit_secret, which writes PTC_CONFIG_REDACTED under PTC_CONFIG_EMIT_REDACT. A
 *    token read from a file is not written at all (the file is the setting); only an inline one is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "portico/config_internal.h"

#define MAX_DEPTH 8 /* root, listeners, a listener, its tls, certificates, a certificate: 6 (as deep: a route's rules) */

typedef struct st_frame_t {
    bool map;
    bool inline_first; /* YAML: a mapping in a sequence, its first key written after the "- " */
    bool after_key;    /* the value of a key (not an item of a sequence, nor the root) */
    size_t count;      /* entries written */
    size_t indent;     /* YAML: the column of its keys or "- "; JSON: the column of its brackets */
} frame_t;

typedef struct st_emitter_t {
    ptc_config_format_t fmt;
    unsigned flags;
    const char *base_dir; /* "" or ending in '/' */
    size_t base_len;
    char *cwd; /* the working directory, asked for when first needed */
    char *buf;
    size_t len, cap;
    int err; /* the first error; once set, nothing more is written */
    bool at_bol;
    frame_t stack[MAX_DEPTH];
    size_t depth;
} emitter_t;

static void put(emitter_t *e, const char *s, size_t n)
{
    if (e->err != 0)
        return;
    if (n >= e->cap - e->len) {
        size_t cap = e->cap == 0 ? 4096 : e->cap;
        while (n >= cap - e->len) {
            if (cap > SIZE_MAX / 2) {
                e->err = PTC_ENOMEM;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(e->buf, cap);
        if (p == NULL) {
            e->err = PTC_ENOMEM;
            return;
        }
        e->buf = p;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    e->buf[e->len] = '\0';
}

static void puts_(emitter_t *e, const char *s)
{
    put(e, s, strlen(s));
}

static void spaces(emitter_t *e, size_t n)
{
    static const char sp[] = "                                ";
    while (n > 0) {
        size_t k = PTC_MIN(n, sizeof(sp) - 1);
        put(e, sp, k);
        n -= k;
    }
}

static void newline(emitter_t *e)
{
    put(e, "\n", 1);
    e->at_bol = true;
}

/* ---- scalars ---- */

/* True for the code points written as escapes (see the top of this file). */
static bool must_escape(uint32_t c)
{
    return c < 0x20 || c == '"' || c == '\\' || (c >= 0x7f && c <= 0x9f) || c == 0x2028 || c == 0x2029 || c == 0xfeff ||
           c == 0xfffe || c == 0xffff;
}

static void put_quoted(emitter_t *e, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;

    put(e, "\"", 1);
    while (p < end) {
        const unsigned char *run = p;
        uint32_t c = 0;
        size_t n;
        /* copy runs of characters that need no escape at once */
        while (p < end && (n = ptc_utf8_decode(p, end, &c)) != 0 && !must_escape(c))
            p += n;
        put(e, (const char *)run, (size_t)(p - run));
        if (p == end)
            break;
        if ((n = ptc_utf8_decode(p, end, &c)) == 0) {
            if (e->err == 0)
                e->err = PTC_EINVAL; /* not UTF-8: neither YAML nor JSON can carry it */
            return;
        }
        char esc[8];
        switch (c) {
        case '"':
            puts_(e, "\\\"");
            break;
        case '\\':
            puts_(e, "\\\\");
            break;
        case '\b':
            puts_(e, "\\b");
            break;
        case '\f':
            puts_(e, "\\f");
            break;
        case '\n':
            puts_(e, "\\n");
            break;
        case '\r':
            puts_(e, "\\r");
            break;
        case '\t':
            puts_(e, "\\t");
            break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)c);
            puts_(e, esc);
            break;
        }
        p += n;
    }
    put(e, "\"", 1);
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* True when YAML reads s (len > 0) written plain as the same string (see the top of this file). */
static bool plain_ok(const char *s, size_t len)
{
    static const char *const words[] = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"};
    if (len == 0 || !(is_alpha(s[0]) || s[0] == '/') || s[len - 1] == ':')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(is_alpha(s[i]) || (s[i] >= '0' && s[i] <= '9') || strchr("._/-:", s[i]) != NULL) || s[i] == '\0')
            return false;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(words); i++)
        if (strlen(words[i]) == len && strncasecmp(words[i], s, len) == 0)
            return false;
    return true;
}

typedef enum {
    SCALAR_STRING, /* any text */
    SCALAR_WORD,   /* generated text of letters, digits and '.' (a duration, a size): plain in YAML, a string in JSON */
    SCALAR_RAW,    /* a number or a boolean: unquoted in both */
} scalar_kind_t;

/* Before a value: in a sequence, the "- " (YAML) or the separator (JSON) of a new item. */
static void begin_item(emitter_t *e)
{
    frame_t *f = &e->stack[e->depth - 1];

    if (f->map) {
        if (e->fmt == PTC_CONFIG_YAML)
            put(e, " ", 1);
        return;
    }
    if (e->fmt == PTC_CONFIG_YAML) {
        if (!e->at_bol)
            newline(e);
        spaces(e, f->indent);
        put(e, "- ", 2);
        e->at_bol = false;
    } else {
        put(e, f->count != 0 ? ",\n" : "\n", f->count != 0 ? 2 : 1);
        spaces(e, f->indent + 2);
    }
    f->count++;
}

static void scalar(emitter_t *e, const char *s, size_t len, scalar_kind_t kind)
{
    begin_item(e);
    if (kind == SCALAR_RAW || (kind == SCALAR_WORD && e->fmt == PTC_CONFIG_YAML) ||
        (kind == SCALAR_STRING && e->fmt == PTC_CONFIG_YAML && plain_ok(s, len)))
        put(e, s, len);
    else
        put_quoted(e, s, len);
    if (e->fmt == PTC_CONFIG_YAML)
        newline(e);
}

static void str(emitter_t *e, const char *s)
{
    scalar(e, s, strlen(s), SCALAR_STRING);
}

static void boolean(emitter_t *e, bool b)
{
    scalar(e, b ? "true" : "false", b ? 4 : 5, SCALAR_RAW);
}

/* ---- containers ---- */

/* Past MAX_DEPTH (not reached by the config's shape) the frame is dropped and the emit fails; the stack stays in bounds. */
static void push(emitter_t *e, frame_t f)
{
    if (e->depth == MAX_DEPTH) {
        e->err = e->err != 0 ? e->err : PTC_EINVAL;
        return;
    }
    e->stack[e->depth++] = f;
}

/* Opens the root mapping (depth 0) or a mapping that is an item of the current sequence. */
static void begin_map(emitter_t *e)
{
    frame_t f = {true, false, false, 0, 0};

    if (e->depth > 0) {
        begin_item(e); /* YAML: "- "; JSON: the separator */
        f.inline_first = true;
        f.indent = e->stack[e->depth - 1].indent + 2;
    }
    if (e->fmt == PTC_CONFIG_JSON)
        put(e, "{", 1);
    push(e, f);
}

/* A key of the current mapping: one of ours (data false: written as it is), or text from the config (quoted and
 * escaped as a string value would be, e.g. a claim path). */
static void key_text(emitter_t *e, const char *name, bool data)
{
    frame_t *f = &e->stack[e->depth - 1];

    if (e->fmt == PTC_CONFIG_YAML) {
        if (!(f->count == 0 && f->inline_first)) {
            if (!e->at_bol)
                newline(e);
            spaces(e, f->indent);
        }
        if (data && !plain_ok(name, strlen(name)))
            put_quoted(e, name, strlen(name));
        else
            puts_(e, name);
        put(e, ":", 1);
    } else {
        put(e, f->count != 0 ? ",\n" : "\n", f->count != 0 ? 2 : 1);
        spaces(e, f->indent + 2);
        if (data) {
            put_quoted(e, name, strlen(name));
        } else {
            put(e, "\"", 1);
            puts_(e, name);
            put(e, "\"", 1);
        }
        put(e, ": ", 2);
    }
    e->at_bol = false;
    f->count++;
}

static void key(emitter_t *e, const char *name)
{
    key_text(e, name, false);
}

/* Writes a key whose value is a mapping or a sequence, and opens that. */
static void key_open(emitter_t *e, const char *name, bool map)
{
    key(e, name);
    frame_t f = {map, false, true, 0, e->stack[e->depth - 1].indent + 2};
    if (e->fmt == PTC_CONFIG_JSON)
        put(e, map ? "{" : "[", 1);
    push(e, f); /* YAML: its first entry starts a new line */
}

static void end(emitter_t *e)
{
    if (e->depth == 0)
        return;
    frame_t f = e->stack[--e->depth];

    if (e->fmt == PTC_CONFIG_YAML) {
        if (f.count == 0) {
            if (f.after_key) /* not after "- ", nor at the start of the root */
                put(e, " ", 1);
            put(e, f.map ? "{}" : "[]", 2);
            newline(e);
        }
        return;
    }
    if (f.count != 0) {
        newline(e);
        spaces(e, f.indent);
    }
    put(e, f.map ? "}" : "]", 1);
    if (e->depth == 0)
        newline(e);
}

/* ---- values ---- */

static void key_str(emitter_t *e, const char *name, const char *value)
{
    key(e, name);
    str(e, value);
}

static void key_bool(emitter_t *e, const char *name, bool value)
{
    key(e, name);
    boolean(e, value);
}

static void key_fields(emitter_t *e, const ptc__field_t *fields, const void *obj)
{
    for (const ptc__field_t *f = fields; f->name != NULL; f++) {
        char v[PTC__VALUE_SIZE];
        ptc__field_format(f, obj, v, sizeof(v));
        key(e, f->name);
        scalar(e, v, strlen(v), f->kind == PTC__FIELD_SIZE32 || f->kind == PTC__FIELD_DURATION ? SCALAR_WORD : SCALAR_RAW);
    }
}

static void key_section(emitter_t *e, const char *name, const ptc__field_t *fields, const void *obj)
{
    key_open(e, name, true);
    key_fields(e, fields, obj);
    end(e);
}

/* Every secret is written through here. */
static void key_secret(emitter_t *e, const char *name, const char *value)
{
    key_str(e, name, (e->flags & PTC_CONFIG_EMIT_REDACT) != 0 ? PTC_CONFIG_REDACTED : value);
}

static void key_path(emitter_t *e, const char *name, const char *path)
{
    if (path == NULL)
        return;
    key(e, name);
    if (e->base_len != 0 && strncmp(path, e->base_dir, e->base_len) == 0 && path[e->base_len] != '\0' && path[e->base_len] != '/') {
        str(e, path + e->base_len);
    } else if (e->base_len != 0 && path[0] != '/') {
        /* relative to the working directory, but the loader would resolve it against base_dir */
        if (e->cwd == NULL && (e->cwd = getcwd(NULL, 0)) == NULL) {
            e->err = e->err != 0 ? e->err : errno == ENOMEM ? PTC_ENOMEM : PTC_EINVAL;
            return;
        }
        size_t clen = strlen(e->cwd), plen = strlen(path);
        char *abs = malloc(clen + 1 + plen + 1);
        if (abs == NULL) {
            e->err = e->err != 0 ? e->err : PTC_ENOMEM;
            return;
        }
        memcpy(abs, e->cwd, clen);
        abs[clen] = '/';
        memcpy(abs + clen + 1, path, plen + 1);
        str(e, abs);
        free(abs);
    } else {
        str(e, path);
    }
}

static void hostport(emitter_t *e, const ptc_hostport_t *hp)
{
    const char *host = hp->host != NULL ? hp->host : "";
    bool v6 = strchr(host, ':') != NULL;
    size_t len = strlen(host) + 16;
    char *s = malloc(len);

    if (s == NULL) {
        e->err = e->err != 0 ? e->err : PTC_ENOMEM;
        return;
    }
    snprintf(s, len, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)hp->port);
    str(e, s);
    free(s);
}

static void key_strings(emitter_t *e, const char *name, char *const *list, size_t n)
{
    if (n == 0) /* the loader refuses empty lists; absent means the default */
        return;
    key_open(e, name, false);
    for (size_t i = 0; i < n; i++)
        str(e, list[i]);
    end(e);
}

/* allow_methods is stored as its header value, "GET, POST, OPTIONS"; the file has a list. */
static void key_methods(emitter_t *e, const char *methods)
{
    const char *p = methods;
    bool any = false;

    while (*p != '\0') {
        size_t skip = strspn(p, ", \t"), len;
        p += skip;
        if ((len = strcspn(p, ", \t")) == 0)
            continue;
        if (!any)
            key_open(e, "allow_methods", false);
        any = true;
        scalar(e, p, len, SCALAR_STRING);
        p += len;
    }
    if (any)
        end(e);
}

static void cors_policy(emitter_t *e, const char *name, const ptc_cors_config_t *c)
{
    char v[PTC__VALUE_SIZE];

    key_open(e, name, true);
    if (c->num_origins != 0) {
        key_open(e, "allow_origins", false);
        for (size_t i = 0; i < c->num_origins; i++)
            str(e, c->origins[i].text);
        end(e);
    }
    key_bool(e, "allow_credentials", c->allow_credentials);
    if (c->allow_methods != NULL)
        key_methods(e, c->allow_methods);
    if (c->reflect_headers)
        key_str(e, "allow_headers", "*");
    else
        key_strings(e, "allow_headers", c->allow_headers, c->num_allow_headers);
    key_strings(e, "expose_headers", c->expose_headers, c->num_expose_headers);
    ptc__format_duration(c->max_age_s <= UINT64_MAX / 1000 ? c->max_age_s * 1000 : UINT64_MAX, v, sizeof(v));
    key(e, "max_age");
    scalar(e, v, strlen(v), SCALAR_WORD);
    key_bool(e, "allow_private_network", c->allow_private_network);
    end(e);
}

static void listener(emitter_t *e, const ptc_listener_config_t *l)
{
    static const char *const client_auth[] = {"none", "optional", "required"};
    const ptc_listener_tls_config_t *tls = l->tls;

    begin_map(e);
    key(e, "address");
    hostport(e, &l->addr);
    if (tls != NULL) {
        key_open(e, "tls", true);
        if (tls->num_certs != 0) {
            key_path(e, "cert", tls->certs[0].cert);
            key_path(e, "key", tls->certs[0].key);
        }
        if (tls->num_certs > 1) {
            key_open(e, "certificates", false);
            for (size_t i = 1; i < tls->num_certs; i++) {
                begin_map(e);
                key_path(e, "cert", tls->certs[i].cert);
                key_path(e, "key", tls->certs[i].key);
                end(e);
            }
            end(e);
        }
        key_str(e, "client_auth", (size_t)tls->client_auth < PTC_ARRAY_SIZE(client_auth) ? client_auth[tls->client_auth] : "?");
        key_path(e, "client_ca", tls->client_ca);
        key_str(e, "min_version", tls->min_version == PTC_TLS_1_3 ? "1.3" : "1.2");
        end(e);
    }
    end(e);
}

static void upstream(emitter_t *e, const ptc_upstream_config_t *up)
{
    begin_map(e);
    key_str(e, "name", up->name != NULL ? up->name : "");
    if (up->num_endpoints != 0) {
        key_open(e, "endpoints", false);
        for (size_t i = 0; i < up->num_endpoints; i++)
            hostport(e, &up->endpoints[i]);
        end(e);
    }
    if (up->authority != NULL)
        key_str(e, "authority", up->authority);
    key_fields(e, ptc__upstream_fields, up);
    key_section(e, "backoff", ptc__backoff_fields, up);
    if (up->tls != NULL) {
        key_open(e, "tls", true);
        key_path(e, "ca", up->tls->ca);
        if (up->tls->server_name != NULL)
            key_str(e, "server_name", up->tls->server_name);
        key_path(e, "cert", up->tls->cert);
        key_path(e, "key", up->tls->key);
        key_bool(e, "insecure_skip_verify", up->tls->insecure_skip_verify);
        end(e);
    }
    key_str(e, "balancing",
            (size_t)up->balancing < PTC_ARRAY_SIZE(ptc__balancing_names) ? ptc__balancing_names[up->balancing] : "?");
    key_fields(e, ptc__upstream_policy_fields, up);
    if (up->health_check.enabled) {
        key_open(e, "health_check", true);
        key_str(e, "service", up->health_check.service != NULL ? up->health_check.service : "");
        key_fields(e, ptc__health_check_fields, &up->health_check);
        end(e);
    }
    if (up->outlier.enabled)
        key_section(e, "outlier", ptc__outlier_fields, &up->outlier);
    end(e);
}

static void invalid(emitter_t *e)
{
    e->err = e->err != 0 ? e->err : PTC_EINVAL;
}

static void rule_list(emitter_t *e, const char *name, const ptc_header_rule_config_t *rules, size_t n)
{
    if (n == 0) /* the loader refuses empty lists; absent means none */
        return;
    key_open(e, name, false);
    for (size_t i = 0; i < n; i++) {
        const ptc_header_rule_config_t *r = &rules[i];
        if ((int)r->op < (int)PTC_HEADER_ADD || (int)r->op > (int)PTC_HEADER_RENAME || r->name == NULL) {
            invalid(e);
            break;
        }
        begin_map(e);
        key_str(e, ptc__header_op_names[r->op], r->name);
        if (r->value != NULL)
            key_str(e, "value", r->value);
        if (r->to != NULL)
            key_str(e, "to", r->to);
        end(e);
    }
    end(e);
}

static void header_rules(emitter_t *e, const ptc_header_rules_config_t *h)
{
    key_open(e, "headers", true);
    rule_list(e, "request", h->request, h->num_request);
    rule_list(e, "response", h->response, h->num_response);
    rule_list(e, "trailers", h->trailers, h->num_trailers);
    end(e);
}

/* jwt.default or a route's jwt; nothing when not set. */
static void jwt_requirement(emitter_t *e, const ptc_config_t *cfg, const char *name, const ptc_jwt_requirement_config_t *r)
{
    if (!r->set)
        return;
    if (r->disabled) {
        key_str(e, name, "disabled");
        return;
    }
    if (r->num_providers == 0) { /* a check without providers: no file says that (providers are required) */
        invalid(e);
        return;
    }
    key_open(e, name, true);
    key_open(e, "providers", false);
    for (size_t i = 0; i < r->num_providers; i++) {
        if (r->providers[i] >= cfg->num_jwt_providers || cfg->jwt_providers[r->providers[i]].name == NULL) {
            invalid(e);
            break;
        }
        str(e, cfg->jwt_providers[r->providers[i]].name);
    }
    end(e);
    key_bool(e, "optional", r->optional);
    if (r->num_claims != 0) {
        key_open(e, "require_claims", true);
        for (size_t i = 0; i < r->num_claims; i++) {
            key_text(e, r->claims[i].claim != NULL ? r->claims[i].claim : "", true);
            str(e, r->claims[i].value != NULL ? r->claims[i].value : "");
        }
        end(e);
    }
    end(e);
}

static void jwt_provider(emitter_t *e, const ptc_jwt_provider_config_t *p)
{
    begin_map(e);
    key_str(e, "name", p->name != NULL ? p->name : "");
    if (p->issuer != NULL)
        key_str(e, "issuer", p->issuer);
    key_strings(e, "audiences", p->audiences, p->num_audiences);
    key_open(e, "from", true);
    if ((int)p->from < (int)PTC_JWT_FROM_HEADER || (int)p->from > (int)PTC_JWT_FROM_QUERY)
        invalid(e);
    else
        key_str(e, ptc__jwt_from_names[p->from], p->from_name != NULL ? p->from_name : "");
    if (p->from_prefix != NULL)
        key_str(e, "prefix", p->from_prefix);
    end(e);
    key_path(e, "jwks_file", p->jwks_file);
    if (p->jwks_url != NULL)
        key_str(e, "jwks_url", p->jwks_url);
    key_path(e, "jwks_ca", p->jwks_ca);
    key_fields(e, ptc__jwt_provider_fields, p);
    if (p->num_claim_headers != 0) {
        key_open(e, "claims_to_headers", false);
        for (size_t i = 0; i < p->num_claim_headers; i++) {
            begin_map(e);
            key_str(e, "claim", p->claim_headers[i].claim != NULL ? p->claim_headers[i].claim : "");
            key_str(e, "header", p->claim_headers[i].header != NULL ? p->claim_headers[i].header : "");
            end(e);
        }
        end(e);
    }
    if (p->forward_payload != NULL)
        key_str(e, "forward_payload", p->forward_payload);
    end(e);
}

/* The filters' sections: always written (`headers: {}`, `jwt: {}` say "none", which leaving them out would not:
 * a file without them keeps the current ones). */
static void filters(emitter_t *e, const ptc_config_t *cfg)
{
    key_open(e, "request_id", true);
    key_bool(e, "enabled", cfg->request_id.enabled);
    key_str(e, "header", cfg->request_id.header != NULL ? cfg->request_id.header : "");
    key_fields(e, ptc__request_id_fields, &cfg->request_id);
    end(e);
    key_open(e, "trace", true);
    key_bool(e, "enabled", cfg->trace.enabled);
    key_fields(e, ptc__trace_fields, &cfg->trace);
    end(e);
    header_rules(e, &cfg->headers);
    key_open(e, "jwt", true);
    if (cfg->num_jwt_providers != 0) {
        key_open(e, "providers", false);
        for (size_t i = 0; i < cfg->num_jwt_providers; i++)
            jwt_provider(e, &cfg->jwt_providers[i]);
        end(e);
    }
    jwt_requirement(e, cfg, "default", &cfg->jwt_default);
    end(e);
}

static void route(emitter_t *e, const ptc_config_t *cfg, const ptc_route_config_t *r)
{
    if (r->upstream_index >= cfg->num_upstreams || cfg->upstreams[r->upstream_index].name == NULL) {
        e->err = e->err != 0 ? e->err : PTC_EINVAL; /* not a valid config: no name to write */
        return;
    }
    begin_map(e);
    key_str(e, r->match == PTC_ROUTE_EXACT ? "path" : "prefix", r->path != NULL ? r->path : "");
    key_str(e, "upstream", cfg->upstreams[r->upstream_index].name);
    if (r->cors != NULL)
        cors_policy(e, "cors", r->cors);
    if (r->headers.num_request + r->headers.num_response + r->headers.num_trailers != 0)
        header_rules(e, &r->headers);
    jwt_requirement(e, cfg, "jwt", &r->jwt);
    key_bool(e, "native_filters", r->native_filters);
    if (r->get_cache_control != NULL)
        key_str(e, "get_cache_control", r->get_cache_control);
    end(e);
}

static void emit_config(emitter_t *e, const ptc_config_t *cfg)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", "off"};
    char v[PTC__VALUE_SIZE];

    begin_map(e);
    snprintf(v, sizeof(v), "%u", (unsigned)cfg->workers);
    key(e, "workers");
    scalar(e, v, strlen(v), SCALAR_RAW);
    key_str(e, "log_level", (size_t)cfg->log_level < PTC_ARRAY_SIZE(levels) ? levels[cfg->log_level] : "info");
    if (cfg->health_path != NULL)
        key_str(e, "health_path", cfg->health_path);
    key_bool(e, "watch", cfg->watch);
    key_path(e, "pid_file", cfg->pid_file);
    const ptc_admin_config_t *admin = &cfg->admin;
    if (admin->address != NULL || admin->token_file != NULL || admin->token != NULL) {
        key_open(e, "admin", true);
        if (admin->address != NULL) {
            key(e, "address");
            hostport(e, admin->address);
        }
        if (admin->token_file != NULL)
            key_path(e, "token_file", admin->token_file); /* the token is read from it again */
        else if (admin->token != NULL)
            key_secret(e, "token", admin->token);
        end(e);
    }
    if (cfg->num_listeners != 0) {
        key_open(e, "listeners", false);
        for (size_t i = 0; i < cfg->num_listeners; i++)
            listener(e, &cfg->listeners[i]);
        end(e);
    }
    if (cfg->num_upstreams != 0) {
        key_open(e, "upstreams", false);
        for (size_t i = 0; i < cfg->num_upstreams; i++)
            upstream(e, &cfg->upstreams[i]);
        end(e);
    }
    if (cfg->num_routes != 0) {
        key_open(e, "routes", false);
        for (size_t i = 0; i < cfg->num_routes; i++) /* already in match order, which loading keeps */
            route(e, cfg, &cfg->routes[i]);
        end(e);
    }
    key_section(e, "limits", ptc__limits_fields, &cfg->limits);
    key_section(e, "timeouts", ptc__timeouts_fields, &cfg->timeouts);
    key_section(e, "compression", ptc__compression_fields, &cfg->compression);
    key_section(e, "websocket", ptc__websocket_fields, &cfg->websocket);
    key_section(e, "metrics", ptc__metrics_fields, &cfg->metrics);
    if (cfg->access_log.path != NULL) {
        key_open(e, "access_log", true);
        if (strcmp(cfg->access_log.path, PTC_ACCESS_LOG_STDERR) == 0)
            key_str(e, "path", cfg->access_log.path);
        else
            key_path(e, "path", cfg->access_log.path);
        key_str(e, "format", cfg->access_log.format != NULL ? cfg->access_log.format : PTC_ACCESS_LOG_JSON);
        ptc__format_size(cfg->access_log.buffer_size, v, sizeof(v));
        key(e, "buffer");
        scalar(e, v, strlen(v), SCALAR_WORD);
        end(e);
    }
    if (cfg->cors.enabled)
        cors_policy(e, "cors", &cfg->cors);
    filters(e, cfg);
    end(e);
}

int ptc_config_emit(const ptc_config_t *cfg, ptc_config_format_t fmt, unsigned flags, char **out, size_t *outlen)
{
    emitter_t e = {.fmt = fmt, .flags = flags, .base_dir = cfg->base_dir != NULL ? cfg->base_dir : "", .at_bol = true};

    e.base_len = strlen(e.base_dir);
    emit_config(&e, cfg);
    free(e.cwd);
    if (e.err != 0) {
        free(e.buf);
        return e.err;
    }
    *out = e.buf;
    if (outlen != NULL)
        *outlen = e.len;
    return 0;
}
