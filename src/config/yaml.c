/*
 * The YAML loader: libyaml's document API turns the text into a node tree with line marks; a table-driven walk
 * turns the tree into a ptc_config_t. The format is described at the top of config.c.
 *
 * Loading is transactional: the new config is built in a separate struct that borrows whatever the file does
 * not replace from the old one, is validated, and only then replaces it. On any error the caller's config
 * is untouched.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "portico/config_internal.h"
#include "portico/template.h"
#include "portico/pem.h"

#define KEY_SIZE 256                      /* longest key path kept in messages */
#define MAX_FILE_SIZE (16u * 1024 * 1024) /* a config file larger than this is surely a mistake */
#define MAX_FIELDS 16

typedef struct st_loader_t {
    const char *name; /* file name for messages */
    char *err;
    size_t errlen;
    yaml_document_t *doc;
    ptc_config_t *next; /* being built */
    /* per route in file order: the node naming the upstream and the prefix/path node, for resolving names
     * (upstreams may come after routes) and reporting duplicates once the whole file has been walked */
    yaml_node_t **route_upstream;
    yaml_node_t **route_match;
    yaml_node_t **route_jwt;             /* the providers sequence of a route's jwt, or NULL; resolved like upstreams */
    yaml_node_t *jwt_default_providers; /* the same for jwt.default */
    yaml_node_t *jwt_node;              /* the jwt section, for an error about the routes it leaves behind */
    bool has_listeners, has_upstreams, has_routes, has_cors, has_admin, has_pid_file, has_headers, has_jwt, has_access_log;
    yaml_node_t *admin_address; /* the admin.address node, for a clash with a listener found after the walk */
    const char *dir;            /* relative file names in the config are relative to this ("" or ending in '/') */
    size_t dir_len;
} loader_t;

typedef int (*field_cb)(loader_t *l, const char *key, yaml_node_t *value, void *obj);

typedef enum { FIELD_UINT32, FIELD_SIZE32, FIELD_DURATION, FIELD_BOOL, FIELD_PATH, FIELD_CUSTOM } field_kind_t;

/* One key of a mapping. FIELD_UINT32 / FIELD_SIZE32 store a uint32_t and FIELD_DURATION a uint64_t (ms) at
 * obj + offset, range-checked against [min, max]; FIELD_BOOL stores a bool (true or false); FIELD_PATH stores
 * a file name resolved against the config file's directory (a char *, malloc'ed); FIELD_CUSTOM calls cb with
 * the same obj. */
typedef struct st_field_t {
    const char *name;
    field_kind_t kind;
    size_t offset;
    uint64_t min, max;
    field_cb cb;
} field_t;

PTC_PRINTF(4, 5) static int fail(loader_t *l, const yaml_node_t *node, const char *key, const char *fmt, ...)
{
    if (l->err == NULL || l->errlen == 0)
        return PTC_ECONFIG;
    int n = snprintf(l->err, l->errlen, "%s:%zu: %s%s", l->name, node->start_mark.line + 1, key, key[0] != '\0' ? ": " : "");
    if (n >= 0 && (size_t)n < l->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return PTC_ECONFIG;
}

static int nomem(const char *name, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: out of memory", name);
    return PTC_ENOMEM;
}

static yaml_node_t *node_at(loader_t *l, int index)
{
    return yaml_document_get_node(l->doc, index);
}

static const char *scalar_value(const yaml_node_t *node)
{
    return (const char *)node->data.scalar.value;
}

static bool is_null(const yaml_node_t *node)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(nulls); i++)
        if (strcmp(scalar_value(node), nulls[i]) == 0)
            return true;
    return false;
}

static const char *kind_name(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    default:
        return is_null(node) ? "null" : "a string";
    }
}

static size_t seq_len(const yaml_node_t *node)
{
    return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
}

/* Appends s to the key path in buf (KEY_SIZE bytes); paths that do not fit are cut short, as they only
 * ever appear in messages. */
static void key_append(char *buf, const char *s)
{
    size_t len = strlen(buf), n = strlen(s);
    if (n > KEY_SIZE - 1 - len)
        n = KEY_SIZE - 1 - len;
    memcpy(buf + len, s, n);
    buf[len + n] = '\0';
}

static void key_join(char *buf, const char *parent, const char *name)
{
    buf[0] = '\0';
    key_append(buf, parent);
    if (parent[0] != '\0')
        key_append(buf, ".");
    key_append(buf, name);
}

static void key_index(char *buf, const char *parent, size_t index)
{
    char num[32];
    snprintf(num, sizeof(num), "[%zu]", index);
    buf[0] = '\0';
    key_append(buf, parent);
    key_append(buf, num);
}

/* Checks that node is a non-null scalar without NUL bytes; what names the expected value ("an integer"). */
static int want_scalar(loader_t *l, const char *key, yaml_node_t *node, const char *what, const char **out)
{
    if (node->type != YAML_SCALAR_NODE || is_null(node))
        return fail(l, node, key, "expected %s, got %s", what, kind_name(node));
    if (strlen(scalar_value(node)) != node->data.scalar.length)
        return fail(l, node, key, "must not contain NUL bytes");
    *out = scalar_value(node);
    return 0;
}

static int want_sequence(loader_t *l, const char *key, yaml_node_t *node)
{
    if (node->type != YAML_SEQUENCE_NODE)
        return fail(l, node, key, "expected a sequence, got %s", kind_name(node));
    if (seq_len(node) == 0)
        return fail(l, node, key, "must not be empty");
    return 0;
}

/*
 * Checks that value is a non-empty sequence and returns a zeroed array of as many elements of size bytes, with their
 * number in *n, for the caller to store in one statement (zeroed and partly parsed entries are safe to dispose); on
 * error NULL, with *ret set.
 */
static void *new_items(loader_t *l, const char *key, yaml_node_t *value, size_t size, size_t *n, int *ret)
{
    void *items;

    if ((*ret = want_sequence(l, key, value)) != 0)
        return NULL;
    if ((items = calloc(seq_len(value), size)) == NULL) {
        *ret = nomem(l->name, l->err, l->errlen);
        return NULL;
    }
    *n = seq_len(value);
    return items;
}

/* The i-th item of the sequence seq at key; its own key ("KEY[i]") goes into item_key (KEY_SIZE bytes). */
static yaml_node_t *seq_item(loader_t *l, const char *key, yaml_node_t *seq, size_t i, char *item_key)
{
    key_index(item_key, key, i);
    return node_at(l, seq->data.sequence.items.start[i]);
}

static int dup_string(loader_t *l, const char *s, char **out)
{
    if ((*out = strdup(s)) == NULL)
        return nomem(l->name, l->err, l->errlen);
    return 0;
}

/* A file name from the config, made relative to the base directory (normally the config file's) unless absolute. */
static int parse_path(loader_t *l, const char *key, yaml_node_t *value, char **out)
{
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "a file name", &s)) != 0)
        return ret;
    if (s[0] == '\0')
        return fail(l, value, key, "must not be empty");
    size_t dir_len = s[0] == '/' ? 0 : l->dir_len, len = strlen(s);
    if ((*out = malloc(dir_len + len + 1)) == NULL)
        return nomem(l->name, l->err, l->errlen);
    memcpy(*out, l->dir, dir_len);
    memcpy(*out + dir_len, s, len + 1);
    return 0;
}

static int apply_field(loader_t *l, const field_t *f, const char *key, yaml_node_t *value, void *obj)
{
    char *dst = (char *)obj + f->offset;
    const char *s, *why;
    uint64_t v = 0;
    int ret;

    switch (f->kind) {
    case FIELD_UINT32:
        if ((ret = want_scalar(l, key, value, "an integer", &s)) != 0)
            return ret;
        if (s[0] == '\0' || strspn(s, "0123456789") != strlen(s))
            return fail(l, value, key, "invalid integer \"%s\"", s);
        for (const char *p = s; *p != '\0'; p++) {
            if (v > f->max) /* also keeps v * 10 below overflow */
                break;
            v = v * 10 + (uint64_t)(*p - '0');
        }
        if (v < f->min || v > f->max)
            return fail(l, value, key, "must be between %" PRIu64 " and %" PRIu64, f->min, f->max);
        memcpy(dst, &(uint32_t){(uint32_t)v}, sizeof(uint32_t));
        return 0;
    case FIELD_SIZE32:
        if ((ret = want_scalar(l, key, value, "a size", &s)) != 0)
            return ret;
        if (ptc__size_parse(s, &v, &why) != 0)
            return fail(l, value, key, "invalid size \"%s\": %s", s, why);
        if (v < f->min || v > f->max)
            return fail(l, value, key, "must be between %" PRIu64 " and %" PRIu64 " bytes", f->min, f->max);
        memcpy(dst, &(uint32_t){(uint32_t)v}, sizeof(uint32_t));
        return 0;
    case FIELD_DURATION:
        if ((ret = want_scalar(l, key, value, "a duration", &s)) != 0)
            return ret;
        if (ptc__duration_parse(s, &v, &why) != 0)
            return fail(l, value, key, "invalid duration \"%s\": %s", s, why);
        if (v < f->min)
            return fail(l, value, key, "must be greater than 0");
        memcpy(dst, &v, sizeof(uint64_t));
        return 0;
    case FIELD_BOOL:
        if ((ret = want_scalar(l, key, value, "a boolean", &s)) != 0)
            return ret;
        if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0)
            return fail(l, value, key, "invalid boolean \"%s\" (expected true or false)", s);
        memcpy(dst, &(bool){s[0] == 't'}, sizeof(bool));
        return 0;
    case FIELD_PATH: {
        char *path;
        if ((ret = parse_path(l, key, value, &path)) != 0)
            return ret;
        memcpy(dst, &path, sizeof(path));
        return 0;
    }
    case FIELD_CUSTOM:
        return f->cb(l, key, value, obj);
    }
    return 0;
}

/*
 * Walks a mapping against its fields. values[i] / keys[i] (nfields entries each, zeroed by the caller; keys
 * may be NULL) receive the value / key node of fields[i] when present. A null node counts as an empty
 * mapping when null_ok.
 */
static int walk_mapping(loader_t *l, const char *key, yaml_node_t *node, const field_t *fields, size_t nfields, void *obj,
                        bool null_ok, yaml_node_t **values, yaml_node_t **keys)
{
    if (null_ok && is_null(node))
        return 0;
    if (node->type != YAML_MAPPING_NODE)
        return fail(l, node, key, "expected a mapping, got %s", kind_name(node));

    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = node_at(l, pair->key), *v = node_at(l, pair->value);
        char child[KEY_SIZE];
        size_t i;
        int ret;

        if (k->type != YAML_SCALAR_NODE || is_null(k))
            return fail(l, k, key, "keys must be strings, got %s", kind_name(k));
        key_join(child, key, scalar_value(k));
        for (i = 0; i < nfields; i++)
            if (strcmp(fields[i].name, scalar_value(k)) == 0)
                break;
        if (i == nfields)
            return fail(l, k, child, "unknown key");
        if (values[i] != NULL)
            return fail(l, k, child, "duplicate key");
        values[i] = v;
        if (keys != NULL)
            keys[i] = k;
        if ((ret = apply_field(l, &fields[i], child, v, obj)) != 0)
            return ret;
    }
    return 0;
}

static int parse_address(loader_t *l, const char *key, yaml_node_t *node, ptc_hostport_t *out)
{
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, node, "an address (HOST:PORT)", &s)) != 0)
        return ret;
    if ((ret = ptc__hostport_parse(s, out, &why)) == PTC_ENOMEM)
        return nomem(l->name, l->err, l->errlen);
    if (ret != 0)
        return fail(l, node, key, "invalid address \"%s\": %s", s, why);
    return 0;
}

/* ---- listeners ---- */

static int on_listener_address(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_listener_config_t *listener = obj;
    return parse_address(l, key, value, &listener->addr);
}

/* ---- TLS ---- */

/* Loads cert and key (they must match), blaming the node of the file at fault. */
static int check_keypair(loader_t *l, const char *parent, const char *cert, yaml_node_t *cert_node, const char *key,
                         yaml_node_t *key_node)
{
    char why[512], child[KEY_SIZE];
    bool key_at_fault;

    if (ptc_pem_check_keypair(cert, key, &key_at_fault, why, sizeof(why)) == 0)
        return 0;
    key_join(child, parent, key_at_fault ? "key" : "cert");
    return fail(l, key_at_fault ? key_node : cert_node, child, "%s", why);
}

static int check_ca(loader_t *l, const char *parent, const char *name, const char *file, yaml_node_t *node)
{
    char why[512], child[KEY_SIZE];

    if (ptc_pem_check_ca(file, why, sizeof(why)) == 0)
        return 0;
    key_join(child, parent, name);
    return fail(l, node, child, "%s", why);
}

/* Fails on mapping node `at` for a missing key. */
static int missing(loader_t *l, yaml_node_t *at, const char *parent, const char *name, const char *what)
{
    char child[KEY_SIZE];
    key_join(child, parent, name);
    return fail(l, at, child, "%s", what);
}

static const field_t keypair_fields[] = {
    {"cert", FIELD_PATH, offsetof(ptc_tls_keypair_config_t, cert), 0, 0, NULL},
    {"key", FIELD_PATH, offsetof(ptc_tls_keypair_config_t, key), 0, 0, NULL},
};

static int on_listener_tls_certificates(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_listener_tls_config_t *tls = obj;
    int ret;

    if ((ret = want_sequence(l, key, value)) != 0)
        return ret;
    size_t n = seq_len(value);
    ptc_tls_keypair_config_t *certs = realloc(tls->certs, (1 + n) * sizeof(*certs));
    if (certs == NULL)
        return nomem(l->name, l->err, l->errlen);
    memset(certs + 1, 0, n * sizeof(*certs));
    tls->certs = certs;
    tls->num_certs = 1 + n; /* zeroed entries are safe to free */
    for (size_t i = 0; i < n; i++) {
        char item_key[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        yaml_node_t *values[PTC_ARRAY_SIZE(keypair_fields)] = {NULL};
        ptc_tls_keypair_config_t *kp = &tls->certs[1 + i];
        if ((ret = walk_mapping(l, item_key, item, keypair_fields, PTC_ARRAY_SIZE(keypair_fields), kp, false, values, NULL)) != 0)
            return ret;
        if (values[0] == NULL)
            return missing(l, item, item_key, "cert", "is required");
        if (values[1] == NULL)
            return missing(l, item, item_key, "key", "is required");
        if ((ret = check_keypair(l, item_key, kp->cert, values[0], kp->key, values[1])) != 0)
            return ret;
    }
    return 0;
}

static int on_listener_tls_cert(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_listener_tls_config_t *tls = obj;
    return parse_path(l, key, value, &tls->certs[0].cert);
}

static int on_listener_tls_key(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_listener_tls_config_t *tls = obj;
    return parse_path(l, key, value, &tls->certs[0].key);
}

/* One of n names (expected lists them for messages); *index is set to its position. */
static int parse_enum(loader_t *l, const char *key, yaml_node_t *value, const char *const *names, size_t n, const char *expected,
                      size_t *index)
{
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, expected, &s)) != 0)
        return ret;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *index = i;
            return 0;
        }
    }
    return fail(l, value, key, "invalid value \"%s\" (expected %s)", s, expected);
}

static int on_listener_tls_client_auth(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    static const char *const names[] = {"none", "optional", "required"};
    ptc_listener_tls_config_t *tls = obj;
    size_t i = 0;
    int ret = parse_enum(l, key, value, names, PTC_ARRAY_SIZE(names), "none, optional or required", &i);

    if (ret == 0)
        tls->client_auth = (ptc_tls_client_auth_t)i;
    return ret;
}

static int on_listener_tls_min_version(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_listener_tls_config_t *tls = obj;
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "a TLS version", &s)) != 0)
        return ret;
    if (strcmp(s, "1.2") == 0)
        tls->min_version = PTC_TLS_1_2;
    else if (strcmp(s, "1.3") == 0)
        tls->min_version = PTC_TLS_1_3;
    else
        return fail(l, value, key, "invalid TLS version \"%s\" (expected \"1.2\" or \"1.3\")", s);
    return 0;
}

enum { LTLS_CERT, LTLS_KEY, LTLS_CERTIFICATES, LTLS_CLIENT_AUTH, LTLS_CLIENT_CA, LTLS_MIN_VERSION };

static const field_t listener_tls_fields[] = {
    [LTLS_CERT] = {"cert", FIELD_CUSTOM, 0, 0, 0, on_listener_tls_cert},
    [LTLS_KEY] = {"key", FIELD_CUSTOM, 0, 0, 0, on_listener_tls_key},
    [LTLS_CERTIFICATES] = {"certificates", FIELD_CUSTOM, 0, 0, 0, on_listener_tls_certificates},
    [LTLS_CLIENT_AUTH] = {"client_auth", FIELD_CUSTOM, 0, 0, 0, on_listener_tls_client_auth},
    [LTLS_CLIENT_CA] = {"client_ca", FIELD_PATH, offsetof(ptc_listener_tls_config_t, client_ca), 0, 0, NULL},
    [LTLS_MIN_VERSION] = {"min_version", FIELD_CUSTOM, 0, 0, 0, on_listener_tls_min_version},
};

static int on_listener_tls(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_listener_config_t *listener = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(listener_tls_fields)] = {NULL};
    ptc_listener_tls_config_t *tls;
    int ret;

    if ((tls = listener->tls = calloc(1, sizeof(*tls))) == NULL || (tls->certs = calloc(1, sizeof(*tls->certs))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    tls->num_certs = 1; /* [0] is cert/key */
    ret = walk_mapping(l, key, value, listener_tls_fields, PTC_ARRAY_SIZE(listener_tls_fields), tls, false, values, NULL);
    if (ret != 0)
        return ret;
    if (values[LTLS_CERT] == NULL)
        return missing(l, value, key, "cert", "is required");
    if (values[LTLS_KEY] == NULL)
        return missing(l, value, key, "key", "is required");
    if (tls->client_auth != PTC_TLS_CLIENT_AUTH_NONE && values[LTLS_CLIENT_CA] == NULL)
        return missing(l, value, key, "client_ca", "is required when client_auth is optional or required");
    if (tls->client_auth == PTC_TLS_CLIENT_AUTH_NONE && values[LTLS_CLIENT_CA] != NULL) {
        char child[KEY_SIZE];
        key_join(child, key, "client_ca");
        return fail(l, values[LTLS_CLIENT_CA], child, "only used with client_auth optional or required");
    }
    if ((ret = check_keypair(l, key, tls->certs[0].cert, values[LTLS_CERT], tls->certs[0].key, values[LTLS_KEY])) != 0)
        return ret;
    if (tls->client_ca != NULL && (ret = check_ca(l, key, "client_ca", tls->client_ca, values[LTLS_CLIENT_CA])) != 0)
        return ret;
    return 0;
}

static const field_t listener_fields[] = {
    {"address", FIELD_CUSTOM, 0, 0, 0, on_listener_address},
    {"tls", FIELD_CUSTOM, 0, 0, 0, on_listener_tls},
};

static int on_listeners(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    int ret;

    l->has_listeners = true;
    if ((next->listeners = new_items(l, key, value, sizeof(*next->listeners), &next->num_listeners, &ret)) == NULL)
        return ret;

    for (size_t i = 0; i < next->num_listeners; i++) {
        char item_key[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        ptc_listener_config_t *listener = &next->listeners[i];
        if (item->type == YAML_MAPPING_NODE) {
            yaml_node_t *values[PTC_ARRAY_SIZE(listener_fields)] = {NULL};
            if ((ret = walk_mapping(l, item_key, item, listener_fields, PTC_ARRAY_SIZE(listener_fields), listener, false, values,
                                    NULL)) != 0)
                return ret;
            if (values[0] == NULL)
                return missing(l, item, item_key, "address", "is required");
        } else if ((ret = parse_address(l, item_key, item, &listener->addr)) != 0) {
            return ret;
        }
        for (size_t j = 0; j < i; j++) {
            const ptc_hostport_t *a = &next->listeners[j].addr, *b = &listener->addr;
            if (a->port == b->port && strcmp(a->host, b->host) == 0)
                return fail(l, item, item_key, "same address as %s[%zu]", key, j);
        }
    }
    return 0;
}

/* ---- upstreams ---- */

/* An upstream's or a JWT provider's name. */
static int parse_name(loader_t *l, const char *key, yaml_node_t *value, char **out)
{
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, value, "a string", &s)) != 0)
        return ret;
    if ((why = ptc__upstream_name_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    return dup_string(l, s, out);
}

static int on_upstream_name(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_config_t *up = obj;
    return parse_name(l, key, value, &up->name);
}

static int on_upstream_endpoints(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_config_t *up = obj;
    int ret;

    if ((up->endpoints = new_items(l, key, value, sizeof(*up->endpoints), &up->num_endpoints, &ret)) == NULL)
        return ret;
    for (size_t i = 0; i < up->num_endpoints; i++) {
        char item_key[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        if ((ret = parse_address(l, item_key, item, &up->endpoints[i])) != 0)
            return ret;
    }
    return 0;
}

static int on_upstream_authority(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_config_t *up = obj;
    const char *s;
    int ret;

    if (is_null(value))
        return 0;
    if ((ret = want_scalar(l, key, value, "a string", &s)) != 0)
        return ret;
    if (s[0] == '\0')
        return fail(l, value, key, "must not be empty");
    for (const char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return fail(l, value, key, "must not contain spaces or control characters");
    return dup_string(l, s, &up->authority);
}

static const field_t backoff_fields[] = {
    {"initial", FIELD_DURATION, offsetof(ptc_upstream_config_t, backoff_initial_ms), 1, UINT64_MAX, NULL},
    {"max", FIELD_DURATION, offsetof(ptc_upstream_config_t, backoff_max_ms), 1, UINT64_MAX, NULL},
};

static int on_upstream_backoff(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_config_t *up = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(backoff_fields)] = {NULL};
    char child[KEY_SIZE];
    int ret;

    if ((ret = walk_mapping(l, key, value, backoff_fields, PTC_ARRAY_SIZE(backoff_fields), up, true, values, NULL)) != 0)
        return ret;
    if (up->backoff_initial_ms > up->backoff_max_ms) {
        /* blame what was written: max if given, otherwise initial (above the default max) */
        if (values[1] != NULL) {
            key_join(child, key, "max");
            return fail(l, values[1], child, "must not be less than initial (%" PRIu64 "ms)", up->backoff_initial_ms);
        }
        key_join(child, key, "initial");
        return fail(l, values[0], child, "must not be greater than max (%" PRIu64 "ms)", up->backoff_max_ms);
    }
    return 0;
}

static int on_upstream_tls_server_name(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_tls_config_t *tls = obj;
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "a host name", &s)) != 0)
        return ret;
    if (s[0] == '\0')
        return fail(l, value, key, "must not be empty");
    for (const char *p = s; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr(".-_:", *p) != NULL))
            return fail(l, value, key, "invalid host name \"%s\"", s);
    return dup_string(l, s, &tls->server_name);
}

enum { UTLS_CA, UTLS_SERVER_NAME, UTLS_CERT, UTLS_KEY, UTLS_INSECURE };

static const field_t upstream_tls_fields[] = {
    [UTLS_CA] = {"ca", FIELD_PATH, offsetof(ptc_upstream_tls_config_t, ca), 0, 0, NULL},
    [UTLS_SERVER_NAME] = {"server_name", FIELD_CUSTOM, 0, 0, 0, on_upstream_tls_server_name},
    [UTLS_CERT] = {"cert", FIELD_PATH, offsetof(ptc_upstream_tls_config_t, cert), 0, 0, NULL},
    [UTLS_KEY] = {"key", FIELD_PATH, offsetof(ptc_upstream_tls_config_t, key), 0, 0, NULL},
    [UTLS_INSECURE] = {"insecure_skip_verify", FIELD_BOOL, offsetof(ptc_upstream_tls_config_t, insecure_skip_verify), 0, 0, NULL},
};

static int on_upstream_tls(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_config_t *up = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(upstream_tls_fields)] = {NULL};
    ptc_upstream_tls_config_t *tls;
    int ret;

    if ((tls = up->tls = calloc(1, sizeof(*tls))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    ret = walk_mapping(l, key, value, upstream_tls_fields, PTC_ARRAY_SIZE(upstream_tls_fields), tls, false, values, NULL);
    if (ret != 0)
        return ret;
    if (values[UTLS_CERT] != NULL && values[UTLS_KEY] == NULL)
        return missing(l, value, key, "key", "is required with cert");
    if (values[UTLS_KEY] != NULL && values[UTLS_CERT] == NULL)
        return missing(l, value, key, "cert", "is required with key");
    if (tls->insecure_skip_verify && tls->ca != NULL) {
        char child[KEY_SIZE];
        key_join(child, key, "ca");
        return fail(l, values[UTLS_CA], child, "not used with insecure_skip_verify: true");
    }
    if (tls->ca != NULL && (ret = check_ca(l, key, "ca", tls->ca, values[UTLS_CA])) != 0)
        return ret;
    if (tls->cert != NULL && (ret = check_keypair(l, key, tls->cert, values[UTLS_CERT], tls->key, values[UTLS_KEY])) != 0)
        return ret;
    return 0;
}

static int on_upstream_balancing(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_config_t *up = obj;
    size_t i = 0;
    int ret =
        parse_enum(l, key, value, ptc__balancing_names, PTC_ARRAY_SIZE(ptc__balancing_names), "round_robin or least_request", &i);

    if (ret == 0)
        up->balancing = (ptc_balancing_t)i;
    return ret;
}

static int on_health_check_service(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_health_check_config_t *hc = obj;
    const char *s, *why;
    int ret;

    if (is_null(value))
        return 0; /* "" */
    if ((ret = want_scalar(l, key, value, "a service name", &s)) != 0)
        return ret;
    if ((why = ptc__health_service_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    return s[0] == '\0' ? 0 : dup_string(l, s, &hc->service); /* NULL means "" */
}

static const field_t health_check_fields[] = {
    {"service", FIELD_CUSTOM, 0, 0, 0, on_health_check_service},
    {"interval", FIELD_DURATION, offsetof(ptc_health_check_config_t, interval_ms), 1, UINT64_MAX, NULL},
    {"timeout", FIELD_DURATION, offsetof(ptc_health_check_config_t, timeout_ms), 1, UINT64_MAX, NULL},
    {"healthy_threshold", FIELD_UINT32, offsetof(ptc_health_check_config_t, healthy_threshold), 1, 1000, NULL},
    {"unhealthy_threshold", FIELD_UINT32, offsetof(ptc_health_check_config_t, unhealthy_threshold), 1, 1000, NULL},
};

static int section_switch(loader_t *l, const char *key, yaml_node_t *value, bool *enabled);

/* `health_check: {…}` (keys not given take the defaults), `true` (all defaults) or `false` / absent (none). */
static int on_upstream_health_check(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_health_check_config_t *hc = &((ptc_upstream_config_t *)obj)->health_check;
    yaml_node_t *values[PTC_ARRAY_SIZE(health_check_fields)] = {NULL};
    int ret;

    ptc__health_check_init_defaults(hc);
    if ((ret = section_switch(l, key, value, &hc->enabled)) != 0)
        return ret < 0 ? ret : 0;
    return walk_mapping(l, key, value, health_check_fields, PTC_ARRAY_SIZE(health_check_fields), hc, false, values, NULL);
}

static const field_t outlier_fields[] = {
    {"consecutive_failures", FIELD_UINT32, offsetof(ptc_outlier_config_t, consecutive_failures), 1, 1000000, NULL},
    {"ejection", FIELD_DURATION, offsetof(ptc_outlier_config_t, ejection_ms), 1, UINT64_MAX, NULL},
};

/* `outlier: {…}`, `true` (the defaults) or `false` / absent (no ejection). */
static int on_upstream_outlier(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_outlier_config_t *o = &((ptc_upstream_config_t *)obj)->outlier;
    yaml_node_t *values[PTC_ARRAY_SIZE(outlier_fields)] = {NULL};
    int ret;

    ptc__outlier_init_defaults(o);
    if ((ret = section_switch(l, key, value, &o->enabled)) != 0)
        return ret < 0 ? ret : 0;
    return walk_mapping(l, key, value, outlier_fields, PTC_ARRAY_SIZE(outlier_fields), o, false, values, NULL);
}

static const field_t upstream_fields[] = {
    {"name", FIELD_CUSTOM, 0, 0, 0, on_upstream_name},
    {"endpoints", FIELD_CUSTOM, 0, 0, 0, on_upstream_endpoints},
    {"authority", FIELD_CUSTOM, 0, 0, 0, on_upstream_authority},
    {"connect_timeout", FIELD_DURATION, offsetof(ptc_upstream_config_t, connect_timeout_ms), 1, UINT64_MAX, NULL},
    {"max_connections", FIELD_UINT32, offsetof(ptc_upstream_config_t, max_connections), 1, UINT32_MAX, NULL},
    {"max_pending", FIELD_UINT32, offsetof(ptc_upstream_config_t, max_pending), 0, UINT32_MAX, NULL},
    {"backoff", FIELD_CUSTOM, 0, 0, 0, on_upstream_backoff},
    {"tls", FIELD_CUSTOM, 0, 0, 0, on_upstream_tls},
    {"balancing", FIELD_CUSTOM, 0, 0, 0, on_upstream_balancing},
    {"dns_refresh", FIELD_DURATION, offsetof(ptc_upstream_config_t, dns_refresh_ms), 0, UINT64_MAX, NULL},
    {"health_check", FIELD_CUSTOM, 0, 0, 0, on_upstream_health_check},
    {"outlier", FIELD_CUSTOM, 0, 0, 0, on_upstream_outlier},
};

static int on_upstreams(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    int ret;

    l->has_upstreams = true;
    if ((next->upstreams = new_items(l, key, value, sizeof(*next->upstreams), &next->num_upstreams, &ret)) == NULL)
        return ret;

    for (size_t i = 0; i < next->num_upstreams; i++) {
        char item_key[KEY_SIZE], child[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        yaml_node_t *values[PTC_ARRAY_SIZE(upstream_fields)] = {NULL};
        ptc_upstream_config_t *up = &next->upstreams[i];

        ptc__upstream_init_defaults(up);
        if ((ret = walk_mapping(l, item_key, item, upstream_fields, PTC_ARRAY_SIZE(upstream_fields), up, false, values, NULL)) != 0)
            return ret;
        if (values[0] == NULL) {
            key_join(child, item_key, "name");
            return fail(l, item, child, "is required");
        }
        if (values[1] == NULL) {
            key_join(child, item_key, "endpoints");
            return fail(l, item, child, "is required");
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(next->upstreams[j].name, up->name) == 0) {
                key_join(child, item_key, "name");
                return fail(l, values[0], child, "duplicate upstream name \"%s\" (also %s[%zu])", up->name, key, j);
            }
        }
    }
    return 0;
}

/* ---- cors ---- */

/* RFC 9110 §5.6.2: token = 1*tchar */
static bool is_token(const char *s)
{
    static const char tchar_punct[] = "!#$%&'*+-.^_`|~";
    if (s[0] == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr(tchar_punct, c) != NULL))
            return false;
    }
    return true;
}

/* A non-empty sequence of tokens (what: "method", "header name"), copied into *out / *n. */
static int parse_tokens(loader_t *l, const char *key, yaml_node_t *value, const char *what, char ***out, size_t *n)
{
    int ret;

    if ((*out = new_items(l, key, value, sizeof(char *), n, &ret)) == NULL)
        return ret;
    for (size_t i = 0; i < *n; i++) {
        char item_key[KEY_SIZE], expected[64];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        const char *s;
        snprintf(expected, sizeof(expected), "a %s", what);
        if ((ret = want_scalar(l, item_key, item, expected, &s)) != 0)
            return ret;
        if (!is_token(s))
            return fail(l, item, item_key, "invalid %s \"%s\": must be an HTTP token", what, s);
        if ((ret = dup_string(l, s, &(*out)[i])) != 0)
            return ret;
    }
    return 0;
}

static int on_cors_allow_origins(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_cors_config_t *c = obj;
    int ret;

    if ((c->origins = new_items(l, key, value, sizeof(*c->origins), &c->num_origins, &ret)) == NULL)
        return ret;
    for (size_t i = 0; i < c->num_origins; i++) {
        char item_key[KEY_SIZE], why[256];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        const char *s;
        if ((ret = want_scalar(l, item_key, item, "an origin", &s)) != 0)
            return ret;
        if ((ret = ptc_origin_pattern_parse(s, &c->origins[i], why, sizeof(why))) == PTC_ENOMEM)
            return nomem(l->name, l->err, l->errlen);
        if (ret != 0)
            return fail(l, item, item_key, "%s", why);
    }
    return 0;
}

static int on_cors_allow_methods(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_cors_config_t *c = obj;
    char **methods = NULL;
    size_t n = 0, len = 0;
    int ret;

    if ((ret = parse_tokens(l, key, value, "method", &methods, &n)) == 0) {
        /* stored as the header value: joined with ", " */
        for (size_t i = 0; i < n; i++)
            len += strlen(methods[i]) + 2;
        if ((c->allow_methods = malloc(len + 1)) == NULL) {
            ret = nomem(l->name, l->err, l->errlen);
        } else {
            char *p = c->allow_methods;
            for (size_t i = 0; i < n; i++) {
                size_t mlen = strlen(methods[i]);
                if (i != 0) {
                    memcpy(p, ", ", 2);
                    p += 2;
                }
                memcpy(p, methods[i], mlen);
                p += mlen;
            }
            *p = '\0';
        }
    }
    for (size_t i = 0; i < n; i++)
        free(methods[i]);
    free(methods);
    return ret;
}

static int on_cors_allow_headers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_cors_config_t *c = obj;
    int ret;

    if (value->type == YAML_SCALAR_NODE && !is_null(value)) {
        if (strcmp(scalar_value(value), "*") != 0)
            return fail(l, value, key, "must be \"*\" or a sequence of header names");
        c->reflect_headers = true;
        return 0;
    }
    if (value->type != YAML_SEQUENCE_NODE)
        return fail(l, value, key, "expected \"*\" or a sequence of header names, got %s", kind_name(value));
    if ((ret = parse_tokens(l, key, value, "header name", &c->allow_headers, &c->num_allow_headers)) != 0)
        return ret;
    for (size_t i = 0; i < c->num_allow_headers; i++) {
        if (strcmp(c->allow_headers[i], "*") == 0) {
            char item_key[KEY_SIZE];
            key_index(item_key, key, i);
            return fail(l, node_at(l, value->data.sequence.items.start[i]), item_key,
                        "\"*\" cannot be listed; use allow_headers: \"*\" to reflect the requested headers");
        }
    }
    c->reflect_headers = false;
    return 0;
}

static int on_cors_expose_headers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_cors_config_t *c = obj;
    return parse_tokens(l, key, value, "header name", &c->expose_headers, &c->num_expose_headers);
}

static int on_cors_max_age(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_cors_config_t *c = obj;
    const char *s, *why;
    uint64_t ms;
    int ret;

    if ((ret = want_scalar(l, key, value, "a duration", &s)) != 0)
        return ret;
    if (ptc__duration_parse(s, &ms, &why) != 0)
        return fail(l, value, key, "invalid duration \"%s\": %s", s, why);
    if (ms % 1000 != 0)
        return fail(l, value, key, "must be a whole number of seconds");
    c->max_age_s = ms / 1000;
    return 0;
}

static const field_t cors_fields[] = {
    {"allow_origins", FIELD_CUSTOM, 0, 0, 0, on_cors_allow_origins},
    {"allow_credentials", FIELD_BOOL, offsetof(ptc_cors_config_t, allow_credentials), 0, 0, NULL},
    {"allow_methods", FIELD_CUSTOM, 0, 0, 0, on_cors_allow_methods},
    {"allow_headers", FIELD_CUSTOM, 0, 0, 0, on_cors_allow_headers},
    {"expose_headers", FIELD_CUSTOM, 0, 0, 0, on_cors_expose_headers},
    {"max_age", FIELD_CUSTOM, 0, 0, 0, on_cors_max_age},
    {"allow_private_network", FIELD_BOOL, offsetof(ptc_cors_config_t, allow_private_network), 0, 0, NULL},
};

/* A whole policy: keys not given take the defaults of ptc_cors_config_init. c must be zeroed or disposed. */
static int parse_cors(loader_t *l, const char *key, yaml_node_t *value, ptc_cors_config_t *c)
{
    yaml_node_t *values[PTC_ARRAY_SIZE(cors_fields)] = {NULL};

    ptc_cors_config_init(c);
    c->enabled = true;
    return walk_mapping(l, key, value, cors_fields, PTC_ARRAY_SIZE(cors_fields), c, false, values, NULL);
}

/* ---- header rules ---- */

/* A header name the gateway sets (or removes), lower-cased into *out (NULL before; owned by the caller's struct
 * even on failure); refused as ptc_header_name_unsettable_reason says, e.g. `cannot set header "host": ...`. */
static int parse_settable_name(loader_t *l, const char *key, yaml_node_t *value, const char *verb, char **out)
{
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, value, "a header name", &s)) != 0 || (ret = dup_string(l, s, out)) != 0)
        return ret;
    for (char *p = *out; *p != '\0'; p++)
        *p = ptc_tolower(*p);
    if ((why = ptc_header_name_unsettable_reason(ptc_iov(*out, strlen(*out)))) != NULL)
        return fail(l, value, key, "cannot %s header \"%s\": %s", verb, *out, why);
    return 0;
}

typedef struct st_rule_parse_t {
    ptc_header_rule_config_t *rule;
    yaml_node_t *op, *value, *to; /* the value nodes of the operation's key, of `value` and of `to` */
} rule_parse_t;

static int on_rule_op(loader_t *l, const char *key, yaml_node_t *value, rule_parse_t *rp, ptc_header_op_t op)
{
    if (rp->op != NULL)
        return fail(l, value, key, "only one of add, set, remove and rename may be given");
    rp->op = value;
    rp->rule->op = op;
    return parse_settable_name(l, key, value, ptc__header_op_names[op], &rp->rule->name);
}

static int on_rule_add(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_rule_op(l, key, value, obj, PTC_HEADER_ADD);
}

static int on_rule_set(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_rule_op(l, key, value, obj, PTC_HEADER_SET);
}

static int on_rule_remove(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_rule_op(l, key, value, obj, PTC_HEADER_REMOVE);
}

static int on_rule_rename(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_rule_op(l, key, value, obj, PTC_HEADER_RENAME);
}

/* value and to are parsed once the operation is known (it may come after them) */
static int on_rule_value(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    (void)l, (void)key;
    ((rule_parse_t *)obj)->value = value;
    return 0;
}

static int on_rule_to(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    (void)l, (void)key;
    ((rule_parse_t *)obj)->to = value;
    return 0;
}

static const field_t rule_fields[] = {
    {"add", FIELD_CUSTOM, 0, 0, 0, on_rule_add},       {"set", FIELD_CUSTOM, 0, 0, 0, on_rule_set},
    {"remove", FIELD_CUSTOM, 0, 0, 0, on_rule_remove}, {"rename", FIELD_CUSTOM, 0, 0, 0, on_rule_rename},
    {"value", FIELD_CUSTOM, 0, 0, 0, on_rule_value},   {"to", FIELD_CUSTOM, 0, 0, 0, on_rule_to},
};

/* The value of an add or set rule: a template, checked here and kept as written (the runtime parses it again).
 * Request rules run before there is a response, so %RESP(...)% would always be empty there: refused. */
static int parse_rule_value(loader_t *l, const char *key, yaml_node_t *value, bool request, char **out)
{
    ptc_template_t t;
    char why[256];
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "a header value", &s)) != 0)
        return ret;
    if ((ret = ptc_template_parse(s, &t, why, sizeof(why))) == PTC_ENOMEM)
        return nomem(l->name, l->err, l->errlen);
    if (ret != 0)
        return fail(l, value, key, "%s", why);
    for (size_t i = 0; request && i < t.num_parts; i++) {
        if (t.parts[i].kind == PTC_TEMPLATE_RESP) {
            ret = fail(l, value, key, "%%RESP(%.*s)%% cannot be used in request rules: there is no response yet",
                       (int)t.parts[i].arg.len, t.parts[i].arg.base);
            break;
        }
    }
    ptc_template_dispose(&t);
    return ret != 0 ? ret : dup_string(l, s, out);
}

/* A non-empty sequence of rules; request: the rules of the request sent upstream. */
static int parse_rules(loader_t *l, const char *key, yaml_node_t *value, bool request, ptc_header_rule_config_t **out, size_t *n)
{
    int ret;

    if ((*out = new_items(l, key, value, sizeof(**out), n, &ret)) == NULL)
        return ret;
    for (size_t i = 0; i < *n; i++) {
        char item_key[KEY_SIZE], child[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        yaml_node_t *values[PTC_ARRAY_SIZE(rule_fields)] = {NULL};
        ptc_header_rule_config_t *rule = &(*out)[i];
        rule_parse_t rp = {rule, NULL, NULL, NULL};

        if ((ret = walk_mapping(l, item_key, item, rule_fields, PTC_ARRAY_SIZE(rule_fields), &rp, false, values, NULL)) != 0)
            return ret;
        if (rp.op == NULL)
            return fail(l, item, item_key, "needs one of add, set, remove or rename");
        bool with_value = rule->op == PTC_HEADER_ADD || rule->op == PTC_HEADER_SET;
        if (rp.value != NULL && !with_value) {
            key_join(child, item_key, "value");
            return fail(l, rp.value, child, "only used with add and set");
        }
        if (rp.to != NULL && rule->op != PTC_HEADER_RENAME) {
            key_join(child, item_key, "to");
            return fail(l, rp.to, child, "only used with rename");
        }
        if (with_value && rp.value == NULL)
            return missing(l, item, item_key, "value", "is required with add and set");
        if (rule->op == PTC_HEADER_RENAME && rp.to == NULL)
            return missing(l, item, item_key, "to", "is required with rename");
        if (rp.value != NULL) {
            key_join(child, item_key, "value");
            if ((ret = parse_rule_value(l, child, rp.value, request, &rule->value)) != 0)
                return ret;
        }
        if (rp.to != NULL) {
            key_join(child, item_key, "to");
            if ((ret = parse_settable_name(l, child, rp.to, "set", &rule->to)) != 0)
                return ret;
        }
    }
    return 0;
}

static int on_rules_request(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_header_rules_config_t *h = obj;
    return parse_rules(l, key, value, true, &h->request, &h->num_request);
}

static int on_rules_response(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_header_rules_config_t *h = obj;
    return parse_rules(l, key, value, false, &h->response, &h->num_response);
}

static int on_rules_trailers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_header_rules_config_t *h = obj;
    return parse_rules(l, key, value, false, &h->trailers, &h->num_trailers);
}

static const field_t header_rules_fields[] = {
    {"request", FIELD_CUSTOM, 0, 0, 0, on_rules_request},
    {"response", FIELD_CUSTOM, 0, 0, 0, on_rules_response},
    {"trailers", FIELD_CUSTOM, 0, 0, 0, on_rules_trailers},
};

/* A whole `headers` section into h (zeroed). */
static int parse_header_rules(loader_t *l, const char *key, yaml_node_t *value, ptc_header_rules_config_t *h)
{
    yaml_node_t *values[PTC_ARRAY_SIZE(header_rules_fields)] = {NULL};
    return walk_mapping(l, key, value, header_rules_fields, PTC_ARRAY_SIZE(header_rules_fields), h, false, values, NULL);
}

/* ---- JWT ---- */

static int want_nonempty(loader_t *l, const char *key, yaml_node_t *value, const char *what, const char **out)
{
    int ret;
    if ((ret = want_scalar(l, key, value, what, out)) != 0)
        return ret;
    if ((*out)[0] == '\0')
        return fail(l, value, key, "must not be empty");
    return 0;
}

static int on_jwt_provider_name(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_provider_config_t *p = obj;
    return parse_name(l, key, value, &p->name);
}

static int on_jwt_issuer(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_provider_config_t *p = obj;
    const char *s;
    int ret;

    if ((ret = want_nonempty(l, key, value, "an issuer", &s)) != 0)
        return ret;
    return dup_string(l, s, &p->issuer);
}

/* A non-empty sequence of audiences, or a single one. */
static int on_jwt_audiences(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_provider_config_t *p = obj;
    bool seq = value->type == YAML_SEQUENCE_NODE;
    int ret;

    if (value->type == YAML_MAPPING_NODE || is_null(value))
        return fail(l, value, key, "expected an audience or a sequence of them, got %s", kind_name(value));
    if (seq && (ret = want_sequence(l, key, value)) != 0)
        return ret;
    size_t n = seq ? seq_len(value) : 1;
    if ((p->audiences = calloc(n, sizeof(*p->audiences))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    p->num_audiences = n; /* NULL entries are safe to free */
    for (size_t i = 0; i < n; i++) {
        char item_key[KEY_SIZE];
        yaml_node_t *item = seq ? seq_item(l, key, value, i, item_key) : value;
        const char *s;
        if ((ret = want_nonempty(l, seq ? item_key : key, item, "an audience", &s)) != 0 ||
            (ret = dup_string(l, s, &p->audiences[i])) != 0)
            return ret;
    }
    return 0;
}

typedef struct st_from_parse_t {
    ptc_jwt_provider_config_t *provider;
    yaml_node_t *where, *prefix; /* the value nodes of header/cookie/query and of prefix */
} from_parse_t;

static int on_from_where(loader_t *l, const char *key, yaml_node_t *value, from_parse_t *fp, ptc_jwt_from_t from)
{
    static const char *const what[] = {[PTC_JWT_FROM_HEADER] = "header name", [PTC_JWT_FROM_COOKIE] = "cookie name",
                                       [PTC_JWT_FROM_QUERY] = "query parameter name"};
    char expected[64];
    const char *s;
    char *name;
    int ret;

    if (fp->where != NULL)
        return fail(l, value, key, "only one of header, cookie and query may be given");
    fp->where = value;
    fp->provider->from = from;
    snprintf(expected, sizeof(expected), "a %s", what[from]);
    if ((ret = want_scalar(l, key, value, expected, &s)) != 0 || (ret = dup_string(l, s, &fp->provider->from_name)) != 0)
        return ret;
    name = fp->provider->from_name;
    switch (from) {
    case PTC_JWT_FROM_HEADER:
        for (char *p = name; *p != '\0'; p++)
            *p = ptc_tolower(*p);
        /* fall through */
    case PTC_JWT_FROM_COOKIE: /* RFC 6265 §4.1.1: cookie-name = token */
        if (!ptc_http_token_valid(ptc_iov(name, strlen(name))))
            return fail(l, value, key, "invalid %s \"%s\": must be an HTTP token", what[from], name);
        break;
    case PTC_JWT_FROM_QUERY:
        if (name[0] == '\0' || strpbrk(name, "&=#") != NULL || ptc__claim_path_check(name) != NULL)
            return fail(l, value, key, "invalid %s \"%s\": must be printable ASCII without spaces, &, = or #", what[from], name);
        break;
    }
    return 0;
}

static int on_from_header(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_from_where(l, key, value, obj, PTC_JWT_FROM_HEADER);
}

static int on_from_cookie(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_from_where(l, key, value, obj, PTC_JWT_FROM_COOKIE);
}

static int on_from_query(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_from_where(l, key, value, obj, PTC_JWT_FROM_QUERY);
}

static int on_from_prefix(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    from_parse_t *fp = obj;
    const char *s;
    int ret;

    fp->prefix = value;
    if ((ret = want_nonempty(l, key, value, "a prefix", &s)) != 0)
        return ret;
    if (!ptc_header_value_literal_ok(s))
        return fail(l, value, key, "must not contain control characters");
    return dup_string(l, s, &fp->provider->from_prefix);
}

static const field_t from_fields[] = {
    {"header", FIELD_CUSTOM, 0, 0, 0, on_from_header},
    {"cookie", FIELD_CUSTOM, 0, 0, 0, on_from_cookie},
    {"query", FIELD_CUSTOM, 0, 0, 0, on_from_query},
    {"prefix", FIELD_CUSTOM, 0, 0, 0, on_from_prefix},
};

/* A whole `from`: without a prefix, the whole value is the token. */
static int on_jwt_from(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    from_parse_t fp = {obj, NULL, NULL};
    yaml_node_t *values[PTC_ARRAY_SIZE(from_fields)] = {NULL};
    int ret;

    if ((ret = walk_mapping(l, key, value, from_fields, PTC_ARRAY_SIZE(from_fields), &fp, false, values, NULL)) != 0)
        return ret;
    if (fp.where == NULL)
        return fail(l, value, key, "needs one of header, cookie or query");
    if (fp.prefix != NULL && fp.provider->from != PTC_JWT_FROM_HEADER) {
        char child[KEY_SIZE];
        key_join(child, key, "prefix");
        return fail(l, fp.prefix, child, "only used with header");
    }
    return 0;
}

/* NULL when s is a URL the gateway may fetch keys from, otherwise what is wrong. Plain http is for tests and
 * local key servers only: keys fetched in the clear could be replaced on the way. */
static const char *jwks_url_check(const char *s)
{
    static const char *const local[] = {"127.0.0.1", "localhost", "[::1]"};
    bool http = false;
    const char *host;

    if (strncasecmp(s, "https://", 8) == 0)
        host = s + 8;
    else if (strncasecmp(s, "http://", 7) == 0)
        host = s + 7, http = true;
    else
        return "must be an https:// URL";
    for (const char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "must not contain spaces, control characters or non-ASCII characters (percent-encode them)";
    size_t hlen = strcspn(host, ":/?#");
    if (host[0] == '[') {
        const char *close = strchr(host, ']');
        hlen = close != NULL ? (size_t)(close - host) + 1 : 0;
    }
    if (hlen == 0 || (host[hlen] != '\0' && strchr(":/?#", host[hlen]) == NULL))
        return "has no valid host";
    if (http) {
        for (size_t i = 0; i < PTC_ARRAY_SIZE(local); i++)
            if (strlen(local[i]) == hlen && strncasecmp(host, local[i], hlen) == 0)
                return NULL;
        return "http:// is only allowed for 127.0.0.1, localhost and [::1]; use https://";
    }
    return NULL;
}

static int on_jwt_jwks_url(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_provider_config_t *p = obj;
    const char *s, *why;
    int ret;

    if ((ret = want_nonempty(l, key, value, "a URL", &s)) != 0)
        return ret;
    if ((why = jwks_url_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    return dup_string(l, s, &p->jwks_url);
}

/* A claim path into *out. */
static int parse_claim_path(loader_t *l, const char *key, yaml_node_t *value, char **out)
{
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, value, "a claim path", &s)) != 0)
        return ret;
    if ((why = ptc__claim_path_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    return dup_string(l, s, out);
}

static int on_claim_header_claim(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_claim_header_t *ch = obj;
    return parse_claim_path(l, key, value, &ch->claim);
}

static int on_claim_header_header(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_claim_header_t *ch = obj;
    return parse_settable_name(l, key, value, "set", &ch->header);
}

static const field_t claim_header_fields[] = {
    {"claim", FIELD_CUSTOM, 0, 0, 0, on_claim_header_claim},
    {"header", FIELD_CUSTOM, 0, 0, 0, on_claim_header_header},
};

static int on_jwt_claims_to_headers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_provider_config_t *p = obj;
    int ret;

    if ((p->claim_headers = new_items(l, key, value, sizeof(*p->claim_headers), &p->num_claim_headers, &ret)) == NULL)
        return ret;
    for (size_t i = 0; i < p->num_claim_headers; i++) {
        char item_key[KEY_SIZE], child[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        yaml_node_t *values[PTC_ARRAY_SIZE(claim_header_fields)] = {NULL};
        ptc_jwt_claim_header_t *ch = &p->claim_headers[i];

        ret = walk_mapping(l, item_key, item, claim_header_fields, PTC_ARRAY_SIZE(claim_header_fields), ch, false, values, NULL);
        if (ret != 0)
            return ret;
        if (values[0] == NULL)
            return missing(l, item, item_key, "claim", "is required");
        if (values[1] == NULL)
            return missing(l, item, item_key, "header", "is required");
        for (size_t j = 0; j < i; j++) {
            if (strcmp(p->claim_headers[j].header, ch->header) == 0) {
                key_join(child, item_key, "header");
                return fail(l, values[1], child, "same header as %s[%zu]", key, j);
            }
        }
    }
    return 0;
}

static int on_jwt_forward_payload(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_provider_config_t *p = obj;
    return parse_settable_name(l, key, value, "set", &p->forward_payload);
}

/* Checks that the file can be opened and read, blaming node; what it holds is the runtime's business. */
static int check_readable(loader_t *l, const char *key, yaml_node_t *node, const char *file)
{
    char byte;
    int ret = 0;

    FILE *fp = fopen(file, "rb");
    if (fp == NULL && errno == ENOMEM)
        return nomem(l->name, l->err, l->errlen);
    if (fp == NULL)
        return fail(l, node, key, "cannot read \"%s\": %s", file, strerror(errno));
    size_t n = fread(&byte, 1, 1, fp); /* a directory opens, and fails here */
    (void)n;
    if (ferror(fp))
        ret = fail(l, node, key, "cannot read \"%s\": %s", file, strerror(errno));
    fclose(fp);
    return ret;
}

enum {
    JP_NAME,
    JP_ISSUER,
    JP_AUDIENCES,
    JP_FROM,
    JP_JWKS_FILE,
    JP_JWKS_URL,
    JP_JWKS_CA,
    JP_JWKS_CACHE,
    JP_CLOCK_SKEW,
    JP_MAX_TOKEN_SIZE,
    JP_CLAIMS_TO_HEADERS,
    JP_FORWARD_PAYLOAD,
    JP_STRIP_TOKEN,
};

static const field_t jwt_provider_fields[] = {
    [JP_NAME] = {"name", FIELD_CUSTOM, 0, 0, 0, on_jwt_provider_name},
    [JP_ISSUER] = {"issuer", FIELD_CUSTOM, 0, 0, 0, on_jwt_issuer},
    [JP_AUDIENCES] = {"audiences", FIELD_CUSTOM, 0, 0, 0, on_jwt_audiences},
    [JP_FROM] = {"from", FIELD_CUSTOM, 0, 0, 0, on_jwt_from},
    [JP_JWKS_FILE] = {"jwks_file", FIELD_PATH, offsetof(ptc_jwt_provider_config_t, jwks_file), 0, 0, NULL},
    [JP_JWKS_URL] = {"jwks_url", FIELD_CUSTOM, 0, 0, 0, on_jwt_jwks_url},
    [JP_JWKS_CA] = {"jwks_ca", FIELD_PATH, offsetof(ptc_jwt_provider_config_t, jwks_ca), 0, 0, NULL},
    [JP_JWKS_CACHE] = {"jwks_cache", FIELD_DURATION, offsetof(ptc_jwt_provider_config_t, jwks_cache_ms), 1, UINT64_MAX, NULL},
    [JP_CLOCK_SKEW] = {"clock_skew", FIELD_DURATION, offsetof(ptc_jwt_provider_config_t, clock_skew_ms), 0, UINT64_MAX, NULL},
    [JP_MAX_TOKEN_SIZE] = {"max_token_size", FIELD_SIZE32, offsetof(ptc_jwt_provider_config_t, max_token_size),
                           PTC_CONFIG_MIN_JWT_TOKEN_SIZE, PTC_CONFIG_MAX_JWT_TOKEN_SIZE, NULL},
    [JP_CLAIMS_TO_HEADERS] = {"claims_to_headers", FIELD_CUSTOM, 0, 0, 0, on_jwt_claims_to_headers},
    [JP_FORWARD_PAYLOAD] = {"forward_payload", FIELD_CUSTOM, 0, 0, 0, on_jwt_forward_payload},
    [JP_STRIP_TOKEN] = {"strip_token", FIELD_BOOL, offsetof(ptc_jwt_provider_config_t, strip_token), 0, 0, NULL},
};

static int on_jwt_providers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    int ret;

    if ((next->jwt_providers = new_items(l, key, value, sizeof(*next->jwt_providers), &next->num_jwt_providers, &ret)) == NULL)
        return ret;

    for (size_t i = 0; i < next->num_jwt_providers; i++) {
        char item_key[KEY_SIZE], child[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        yaml_node_t *values[PTC_ARRAY_SIZE(jwt_provider_fields)] = {NULL};
        ptc_jwt_provider_config_t *p = &next->jwt_providers[i];

        ptc__jwt_provider_init_defaults(p);
        ret = walk_mapping(l, item_key, item, jwt_provider_fields, PTC_ARRAY_SIZE(jwt_provider_fields), p, false, values, NULL);
        if (ret != 0)
            return ret;
        if (values[JP_NAME] == NULL)
            return missing(l, item, item_key, "name", "is required");
        for (size_t j = 0; j < i; j++) {
            if (strcmp(next->jwt_providers[j].name, p->name) == 0) {
                key_join(child, item_key, "name");
                return fail(l, values[JP_NAME], child, "duplicate provider name \"%s\" (also %s[%zu])", p->name, key, j);
            }
        }
        if (values[JP_FROM] == NULL && ((ret = dup_string(l, PTC_CONFIG_DEFAULT_JWT_HEADER, &p->from_name)) != 0 ||
                                        (ret = dup_string(l, PTC_CONFIG_DEFAULT_JWT_PREFIX, &p->from_prefix)) != 0))
            return ret;
        if (p->jwks_file == NULL && p->jwks_url == NULL)
            return fail(l, item, item_key, "needs jwks_file or jwks_url");
        if (p->jwks_ca != NULL && p->jwks_url == NULL) {
            key_join(child, item_key, "jwks_ca");
            return fail(l, values[JP_JWKS_CA], child, "only used with jwks_url");
        }
        if (p->jwks_file != NULL) {
            key_join(child, item_key, "jwks_file");
            if ((ret = check_readable(l, child, values[JP_JWKS_FILE], p->jwks_file)) != 0)
                return ret;
        }
        if (p->jwks_ca != NULL && (ret = check_ca(l, item_key, "jwks_ca", p->jwks_ca, values[JP_JWKS_CA])) != 0)
            return ret;
    }
    return 0;
}

/* A requirement (jwt.default, a route's jwt) while it is parsed. */
typedef struct st_requirement_parse_t {
    ptc_jwt_requirement_config_t *req;
    yaml_node_t *providers; /* the sequence of names, resolved once every provider is known */
} requirement_parse_t;

static int on_requirement_providers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    requirement_parse_t *rp = obj;
    int ret;

    if ((ret = want_sequence(l, key, value)) != 0)
        return ret;
    for (size_t i = 0; i < seq_len(value); i++) {
        char item_key[KEY_SIZE];
        const char *s;
        if ((ret = want_scalar(l, item_key, seq_item(l, key, value, i, item_key), "a provider name", &s)) != 0)
            return ret;
    }
    rp->providers = value;
    return 0;
}

static int on_requirement_optional(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    static const field_t optional = {"optional", FIELD_BOOL, offsetof(ptc_jwt_requirement_config_t, optional), 0, 0, NULL};
    requirement_parse_t *rp = obj;
    return apply_field(l, &optional, key, value, rp->req);
}

/* A non-empty mapping of claim path -> value. */
static int on_requirement_require_claims(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_jwt_requirement_config_t *req = ((requirement_parse_t *)obj)->req;

    if (value->type != YAML_MAPPING_NODE)
        return fail(l, value, key, "expected a mapping, got %s", kind_name(value));
    size_t n = (size_t)(value->data.mapping.pairs.top - value->data.mapping.pairs.start);
    if (n == 0)
        return fail(l, value, key, "must not be empty");
    if ((req->claims = calloc(n, sizeof(*req->claims))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    req->num_claims = n; /* zeroed entries are safe to dispose */
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pair = &value->data.mapping.pairs.start[i];
        yaml_node_t *k = node_at(l, pair->key), *v = node_at(l, pair->value);
        char child[KEY_SIZE];
        const char *claim, *s;
        int ret;

        if (k->type != YAML_SCALAR_NODE || is_null(k))
            return fail(l, k, key, "keys must be strings, got %s", kind_name(k));
        claim = scalar_value(k);
        key_join(child, key, claim);
        if ((ret = parse_claim_path(l, child, k, &req->claims[i].claim)) != 0)
            return ret;
        for (size_t j = 0; j < i; j++)
            if (strcmp(req->claims[j].claim, claim) == 0)
                return fail(l, k, child, "duplicate key");
        if ((ret = want_nonempty(l, child, v, "a claim value", &s)) != 0 || (ret = dup_string(l, s, &req->claims[i].value)) != 0)
            return ret;
    }
    return 0;
}

static const field_t requirement_fields[] = {
    {"providers", FIELD_CUSTOM, 0, 0, 0, on_requirement_providers},
    {"optional", FIELD_CUSTOM, 0, 0, 0, on_requirement_optional},
    {"require_claims", FIELD_CUSTOM, 0, 0, 0, on_requirement_require_claims},
};

/* `disabled` or a mapping into req (zeroed); *providers gets the node of the provider names (NULL when disabled). */
static int parse_requirement(loader_t *l, const char *key, yaml_node_t *value, ptc_jwt_requirement_config_t *req,
                             yaml_node_t **providers)
{
    requirement_parse_t rp = {req, NULL};
    yaml_node_t *values[PTC_ARRAY_SIZE(requirement_fields)] = {NULL};
    int ret;

    req->set = true;
    *providers = NULL;
    if (value->type == YAML_SCALAR_NODE && !is_null(value)) {
        if (strcmp(scalar_value(value), "disabled") != 0)
            return fail(l, value, key, "invalid value \"%s\" (expected disabled or a mapping)", scalar_value(value));
        req->disabled = true;
        return 0;
    }
    if (value->type != YAML_MAPPING_NODE)
        return fail(l, value, key, "expected a mapping or disabled, got %s", kind_name(value));
    if ((ret = walk_mapping(l, key, value, requirement_fields, PTC_ARRAY_SIZE(requirement_fields), &rp, false, values, NULL)) != 0)
        return ret;
    if (rp.providers == NULL)
        return missing(l, value, key, "providers", "is required");
    *providers = rp.providers;
    return 0;
}

/* Turns the names of node (the sequence at key) into indexes into provs. */
static int resolve_requirement(loader_t *l, const char *key, yaml_node_t *node, ptc_jwt_requirement_config_t *req,
                               const ptc_jwt_provider_config_t *provs, size_t nprovs)
{
    size_t n = seq_len(node);

    if ((req->providers = calloc(n, sizeof(*req->providers))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    req->num_providers = n;
    for (size_t i = 0; i < n; i++) {
        char item_key[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, node, i, item_key);
        const char *name = scalar_value(item);
        size_t u;

        for (u = 0; u < nprovs; u++)
            if (strcmp(provs[u].name, name) == 0)
                break;
        if (u == nprovs)
            return fail(l, item, item_key, "unknown provider \"%s\"", name);
        for (size_t j = 0; j < i; j++)
            if (req->providers[j] == u)
                return fail(l, item, item_key, "duplicate provider \"%s\"", name);
        req->providers[i] = u;
    }
    return 0;
}

static int on_jwt_default(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    return parse_requirement(l, key, value, &next->jwt_default, &l->jwt_default_providers);
}

static const field_t jwt_fields[] = {
    {"providers", FIELD_CUSTOM, 0, 0, 0, on_jwt_providers},
    {"default", FIELD_CUSTOM, 0, 0, 0, on_jwt_default},
};

/* A whole section: no `default` means none, no `providers` none either. */
static int on_jwt(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(jwt_fields)] = {NULL};
    char child[KEY_SIZE];
    int ret;

    l->has_jwt = true;
    l->jwt_node = value;
    if ((ret = walk_mapping(l, key, value, jwt_fields, PTC_ARRAY_SIZE(jwt_fields), next, false, values, NULL)) != 0)
        return ret;
    if (l->jwt_default_providers == NULL)
        return 0;
    key_join(child, key, "default.providers");
    return resolve_requirement(l, child, l->jwt_default_providers, &next->jwt_default, next->jwt_providers, next->num_jwt_providers);
}

/* ---- routes ---- */

typedef struct st_route_parse_t {
    ptc_route_config_t *route;
    yaml_node_t *match_node;
    yaml_node_t *upstream_node;
    yaml_node_t *jwt_providers;
} route_parse_t;

static int on_route_match(loader_t *l, const char *key, yaml_node_t *value, route_parse_t *rp, ptc_route_match_t match)
{
    const char *s, *why;
    int ret;

    if (rp->route->path != NULL)
        return fail(l, value, key, "only one of prefix and path may be given");
    if ((ret = want_scalar(l, key, value, "a path", &s)) != 0)
        return ret;
    if ((why = ptc__path_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    rp->route->match = match;
    rp->match_node = value;
    return dup_string(l, s, &rp->route->path);
}

static int on_route_prefix(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_route_match(l, key, value, obj, PTC_ROUTE_PREFIX);
}

static int on_route_path(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    return on_route_match(l, key, value, obj, PTC_ROUTE_EXACT);
}

static int on_route_upstream(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    route_parse_t *rp = obj;
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "an upstream name", &s)) != 0)
        return ret;
    rp->upstream_node = value; /* resolved once all upstreams are known */
    return 0;
}

static int on_route_cors(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    route_parse_t *rp = obj;

    if ((rp->route->cors = calloc(1, sizeof(*rp->route->cors))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    return parse_cors(l, key, value, rp->route->cors);
}

static int on_route_headers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    route_parse_t *rp = obj;
    return parse_header_rules(l, key, value, &rp->route->headers);
}

static int on_route_jwt(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    route_parse_t *rp = obj;
    return parse_requirement(l, key, value, &rp->route->jwt, &rp->jwt_providers);
}

static int on_route_native_filters(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    static const field_t native = {"native_filters", FIELD_BOOL, offsetof(ptc_route_config_t, native_filters), 0, 0, NULL};
    route_parse_t *rp = obj;
    return apply_field(l, &native, key, value, rp->route);
}

static int on_route_get_cache_control(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    route_parse_t *rp = obj;
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, value, "a Cache-Control value", &s)) != 0)
        return ret;
    if ((why = ptc__cache_control_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    return dup_string(l, s, &rp->route->get_cache_control);
}

static const field_t route_fields[] = {
    {"prefix", FIELD_CUSTOM, 0, 0, 0, on_route_prefix},
    {"path", FIELD_CUSTOM, 0, 0, 0, on_route_path},
    {"upstream", FIELD_CUSTOM, 0, 0, 0, on_route_upstream},
    {"cors", FIELD_CUSTOM, 0, 0, 0, on_route_cors},
    {"headers", FIELD_CUSTOM, 0, 0, 0, on_route_headers},
    {"jwt", FIELD_CUSTOM, 0, 0, 0, on_route_jwt},
    {"native_filters", FIELD_CUSTOM, 0, 0, 0, on_route_native_filters},
    {"get_cache_control", FIELD_CUSTOM, 0, 0, 0, on_route_get_cache_control},
};

static int on_routes(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    int ret;

    l->has_routes = true;
    if ((ret = want_sequence(l, key, value)) != 0)
        return ret;
    size_t n = seq_len(value);
    if ((next->routes = calloc(n, sizeof(*next->routes))) == NULL ||
        (l->route_upstream = calloc(n, sizeof(yaml_node_t *))) == NULL ||
        (l->route_match = calloc(n, sizeof(yaml_node_t *))) == NULL || (l->route_jwt = calloc(n, sizeof(yaml_node_t *))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    next->num_routes = n;

    for (size_t i = 0; i < n; i++) {
        char item_key[KEY_SIZE], child[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        yaml_node_t *values[PTC_ARRAY_SIZE(route_fields)] = {NULL};
        route_parse_t rp = {&next->routes[i], NULL, NULL, NULL};

        next->routes[i].native_filters = true;
        if ((ret = walk_mapping(l, item_key, item, route_fields, PTC_ARRAY_SIZE(route_fields), &rp, false, values, NULL)) != 0)
            return ret;
        if (rp.match_node == NULL)
            return fail(l, item, item_key, "needs a prefix or a path");
        if (rp.upstream_node == NULL) {
            key_join(child, item_key, "upstream");
            return fail(l, item, child, "is required");
        }
        l->route_match[i] = rp.match_node;
        l->route_upstream[i] = rp.upstream_node;
        l->route_jwt[i] = rp.jwt_providers;
    }
    return 0;
}

/* Gives routes their upstream index and their providers' indexes, rejects duplicates, and sorts them into match
 * order. */
static int resolve_routes(loader_t *l, const ptc_upstream_config_t *ups, size_t nups, const ptc_jwt_provider_config_t *provs,
                          size_t nprovs)
{
    ptc_config_t *next = l->next;
    char key[KEY_SIZE];
    int ret;

    for (size_t i = 0; i < next->num_routes; i++) {
        ptc_route_config_t *r = &next->routes[i];
        const char *name = scalar_value(l->route_upstream[i]);
        size_t u;
        if (l->route_jwt[i] != NULL) {
            snprintf(key, sizeof(key), "routes[%zu].jwt.providers", i);
            if ((ret = resolve_requirement(l, key, l->route_jwt[i], &r->jwt, provs, nprovs)) != 0)
                return ret;
        }
        for (u = 0; u < nups; u++)
            if (strcmp(ups[u].name, name) == 0)
                break;
        if (u == nups) {
            snprintf(key, sizeof(key), "routes[%zu].upstream", i);
            return fail(l, l->route_upstream[i], key, "unknown upstream \"%s\"", name);
        }
        r->upstream_index = u;
        for (size_t j = 0; j < i; j++) {
            if (next->routes[j].match == r->match && strcmp(next->routes[j].path, r->path) == 0) {
                snprintf(key, sizeof(key), "routes[%zu].%s", i, r->match == PTC_ROUTE_EXACT ? "path" : "prefix");
                return fail(l, l->route_match[i], key, "duplicate of routes[%zu]", j);
            }
        }
    }
    ptc__routes_sort(next->routes, next->num_routes);
    return 0;
}

/*
 * The file replaces the providers but keeps the current routes: routes that name providers (by index into the
 * current list) are copied with their indexes following the names into the new list, and the copies replace the
 * current routes as a routes section would. A provider they name that the file drops is an error.
 */
static int remap_kept_routes(loader_t *l, const ptc_config_t *cfg)
{
    ptc_config_t *next = l->next;
    bool any = false;

    for (size_t i = 0; i < cfg->num_routes; i++)
        any = any || cfg->routes[i].jwt.num_providers != 0;
    if (!any)
        return 0; /* borrowed as they are */
    if ((next->routes = calloc(cfg->num_routes, sizeof(*next->routes))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    next->num_routes = cfg->num_routes;
    l->has_routes = true;
    for (size_t i = 0; i < cfg->num_routes; i++) {
        ptc_jwt_requirement_config_t *req = &next->routes[i].jwt;
        if (ptc__route_copy(&next->routes[i], &cfg->routes[i]) != 0)
            return nomem(l->name, l->err, l->errlen);
        for (size_t j = 0; j < req->num_providers; j++) {
            const char *name = req->providers[j] < cfg->num_jwt_providers ? cfg->jwt_providers[req->providers[j]].name : NULL;
            size_t u = 0;
            while (u < next->num_jwt_providers && !(name != NULL && strcmp(next->jwt_providers[u].name, name) == 0))
                u++;
            if (u == next->num_jwt_providers)
                return fail(l, l->jwt_node, "jwt", "the current routes[%zu] require provider \"%s\", which this file does not define; "
                            "give the routes too", i, name != NULL ? name : "?");
            req->providers[j] = u;
        }
    }
    return 0;
}

/* ---- top level ---- */

static int on_log_level(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "a log level", &s)) != 0)
        return ret;
    if (ptc_log_level_parse(s, &next->log_level) != 0)
        return fail(l, value, key, "invalid log level \"%s\" (expected debug, info, warn, error or off)", s);
    return 0;
}

static int on_health_path(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, value, "a path", &s)) != 0)
        return ret;
    if ((why = ptc__path_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    return dup_string(l, s, &next->health_path);
}

static const field_t limits_fields[] = {
    {"max_message_size", FIELD_SIZE32, offsetof(ptc_limits_config_t, max_message_size), 1, UINT32_MAX, NULL},
    {"max_header_size", FIELD_SIZE32, offsetof(ptc_limits_config_t, max_header_size), 1, UINT32_MAX, NULL},
    {"max_headers", FIELD_UINT32, offsetof(ptc_limits_config_t, max_headers), 1, UINT32_MAX, NULL},
    {"call_buffer_size", FIELD_SIZE32, offsetof(ptc_limits_config_t, call_buffer_size), 1, UINT32_MAX, NULL},
    {"stream_window_size", FIELD_SIZE32, offsetof(ptc_limits_config_t, stream_window_size), PTC_CONFIG_MIN_STREAM_WINDOW,
     PTC_CONFIG_MAX_STREAM_WINDOW, NULL},
    {"max_connections", FIELD_UINT32, offsetof(ptc_limits_config_t, max_connections), 1, UINT32_MAX, NULL},
    {"max_connections_total", FIELD_UINT32, offsetof(ptc_limits_config_t, max_connections_total), 0, UINT32_MAX, NULL},
    {"max_concurrent_streams", FIELD_UINT32, offsetof(ptc_limits_config_t, max_concurrent_streams), 1,
     PTC_CONFIG_MAX_CONCURRENT_STREAMS, NULL},
};

static const field_t timeouts_fields[] = {
    {"max_grpc_timeout", FIELD_DURATION, offsetof(ptc_timeouts_config_t, max_grpc_timeout_ms), 0, UINT64_MAX, NULL},
    {"default_grpc_timeout", FIELD_DURATION, offsetof(ptc_timeouts_config_t, default_grpc_timeout_ms), 0, UINT64_MAX, NULL},
    {"idle", FIELD_DURATION, offsetof(ptc_timeouts_config_t, idle_ms), 1, UINT64_MAX, NULL},
    {"header_read", FIELD_DURATION, offsetof(ptc_timeouts_config_t, header_read_ms), 1, UINT64_MAX, NULL},
    {"drain", FIELD_DURATION, offsetof(ptc_timeouts_config_t, drain_ms), 0, UINT64_MAX, NULL},
    {"drain_delay", FIELD_DURATION, offsetof(ptc_timeouts_config_t, drain_delay_ms), 0, UINT64_MAX, NULL},
};

static const field_t compression_fields[] = {
    {"gzip", FIELD_BOOL, offsetof(ptc_compression_config_t, gzip), 0, 0, NULL},
    {"min_size", FIELD_SIZE32, offsetof(ptc_compression_config_t, min_size), 0, UINT32_MAX, NULL},
    {"level", FIELD_UINT32, offsetof(ptc_compression_config_t, level), 1, 9, NULL},
};

static int on_compression(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(compression_fields)] = {NULL};
    return walk_mapping(l, key, value, compression_fields, PTC_ARRAY_SIZE(compression_fields), &next->compression, true, values,
                        NULL);
}

static const field_t websocket_fields[] = {
    {"enabled", FIELD_BOOL, offsetof(ptc_websocket_config_t, enabled), 0, 0, NULL},
    {"ping_interval", FIELD_DURATION, offsetof(ptc_websocket_config_t, ping_interval_ms), 0, UINT64_MAX, NULL},
};

static int on_websocket(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(websocket_fields)] = {NULL};
    return walk_mapping(l, key, value, websocket_fields, PTC_ARRAY_SIZE(websocket_fields), &next->websocket, true, values, NULL);
}

static int on_limits(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(limits_fields)] = {NULL};
    return walk_mapping(l, key, value, limits_fields, PTC_ARRAY_SIZE(limits_fields), &next->limits, true, values, NULL);
}

static int on_timeouts(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(timeouts_fields)] = {NULL};
    return walk_mapping(l, key, value, timeouts_fields, PTC_ARRAY_SIZE(timeouts_fields), &next->timeouts, true, values, NULL);
}

static int on_cors(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;

    l->has_cors = true;
    return parse_cors(l, key, value, &next->cors);
}

static int on_pid_file(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;

    l->has_pid_file = true;
    if (is_null(value))
        return 0;
    return parse_path(l, key, value, &next->pid_file);
}

/* ---- metrics and the access log ---- */

static const field_t metrics_fields[] = {
    {"max_methods", FIELD_UINT32, offsetof(ptc_metrics_config_t, max_methods), 0, PTC_CONFIG_MAX_METHODS, NULL},
};

static int on_metrics(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(metrics_fields)] = {NULL};
    return walk_mapping(l, key, value, metrics_fields, PTC_ARRAY_SIZE(metrics_fields), &next->metrics, true, values, NULL);
}

static int on_access_log_path(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_access_log_config_t *al = obj;
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "a file name or \"-\" (stderr)", &s)) != 0)
        return ret;
    if (strcmp(s, PTC_ACCESS_LOG_STDERR) == 0)
        return dup_string(l, s, &al->path);
    return parse_path(l, key, value, &al->path);
}

static int on_access_log_format(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_access_log_config_t *al = obj;
    ptc_template_t t;
    char why[256];
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "json or a template", &s)) != 0)
        return ret;
    if (strcmp(s, PTC_ACCESS_LOG_JSON) != 0) {
        if ((ret = ptc_template_parse_log(s, &t, why, sizeof(why))) == PTC_ENOMEM)
            return nomem(l->name, l->err, l->errlen);
        ptc_template_dispose(&t);
        if (ret != 0)
            return fail(l, value, key, "%s", why);
    }
    free(al->format);
    al->format = NULL;
    return dup_string(l, s, &al->format);
}

static const field_t access_log_fields[] = {
    {"path", FIELD_CUSTOM, 0, 0, 0, on_access_log_path},
    {"format", FIELD_CUSTOM, 0, 0, 0, on_access_log_format},
    {"buffer", FIELD_SIZE32, offsetof(ptc_access_log_config_t, buffer_size), PTC_CONFIG_MIN_ACCESS_LOG_BUFFER,
     PTC_CONFIG_MAX_ACCESS_LOG_BUFFER, NULL},
};

/* `access_log: ~` (or no section) is off; a section without a path is an error. */
static int on_access_log(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(access_log_fields)] = {NULL};
    int ret;

    l->has_access_log = true;
    if (is_null(value))
        return 0;
    if ((ret = walk_mapping(l, key, value, access_log_fields, PTC_ARRAY_SIZE(access_log_fields), &next->access_log, false, values,
                            NULL)) != 0)
        return ret;
    if (next->access_log.path == NULL)
        return fail(l, value, key, "path: missing (a file name, or \"-\" for stderr)");
    if (next->access_log.format == NULL)
        return dup_string(l, PTC_ACCESS_LOG_JSON, &next->access_log.format);
    return 0;
}

/* ---- request ids, trace context, header rules ---- */

/* For a section that may also be written `true` or `false`: sets *enabled and returns 1 for those, returns 0 for a
 * mapping (to walk), or an error. */
static int section_switch(loader_t *l, const char *key, yaml_node_t *value, bool *enabled)
{
    if (value->type == YAML_MAPPING_NODE)
        return 0;
    if (value->type != YAML_SCALAR_NODE || is_null(value))
        return fail(l, value, key, "expected a mapping, true or false, got %s", kind_name(value));
    const char *s = scalar_value(value);
    if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0)
        return fail(l, value, key, "invalid value \"%s\" (expected true, false or a mapping)", s);
    *enabled = s[0] == 't';
    return 1;
}

static int on_request_id_header(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_request_id_config_t *r = obj;
    free(r->header); /* the default */
    r->header = NULL;
    return parse_settable_name(l, key, value, "set", &r->header);
}

static const field_t request_id_fields[] = {
    {"enabled", FIELD_BOOL, offsetof(ptc_request_id_config_t, enabled), 0, 0, NULL},
    {"header", FIELD_CUSTOM, 0, 0, 0, on_request_id_header},
    {"max_length", FIELD_UINT32, offsetof(ptc_request_id_config_t, max_length), 1, PTC_CONFIG_MAX_REQUEST_ID_LENGTH, NULL},
    {"trust_incoming", FIELD_BOOL, offsetof(ptc_request_id_config_t, trust_incoming), 0, 0, NULL},
};

static int on_request_id(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_request_id_config_t *r = &((ptc_config_t *)obj)->request_id;
    yaml_node_t *values[PTC_ARRAY_SIZE(request_id_fields)] = {NULL};
    int ret;

    /* a whole section: what it does not give takes the defaults, not the current values */
    free(r->header);
    if (ptc__request_id_init(r) != 0)
        return nomem(l->name, l->err, l->errlen);
    if ((ret = section_switch(l, key, value, &r->enabled)) != 0)
        return ret < 0 ? ret : 0;
    return walk_mapping(l, key, value, request_id_fields, PTC_ARRAY_SIZE(request_id_fields), r, false, values, NULL);
}

static const field_t trace_fields[] = {
    {"enabled", FIELD_BOOL, offsetof(ptc_trace_config_t, enabled), 0, 0, NULL},
    {"sampled", FIELD_BOOL, offsetof(ptc_trace_config_t, sampled), 0, 0, NULL},
};

static int on_trace(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_trace_config_t *t = &((ptc_config_t *)obj)->trace;
    yaml_node_t *values[PTC_ARRAY_SIZE(trace_fields)] = {NULL};
    int ret;

    *t = (ptc_trace_config_t){.enabled = true, .sampled = false};
    if ((ret = section_switch(l, key, value, &t->enabled)) != 0)
        return ret < 0 ? ret : 0;
    return walk_mapping(l, key, value, trace_fields, PTC_ARRAY_SIZE(trace_fields), t, false, values, NULL);
}

static int on_headers(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;

    l->has_headers = true;
    return parse_header_rules(l, key, value, &next->headers);
}

/* ---- admin ---- */

#define MAX_TOKEN_SIZE 4096

/* Returns NULL when s (len bytes, already trimmed) is acceptable as a bearer token, otherwise what is wrong. */
static const char *token_check(const char *s, size_t len)
{
    if (len == 0)
        return "is empty";
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return "must be one line without control characters";
    /* a redacted document sent back (GET /config, then PUT /config) must not set a publicly known token */
    if (len == sizeof(PTC_CONFIG_REDACTED) - 1 && memcmp(s, PTC_CONFIG_REDACTED, len) == 0)
        return "is the redaction placeholder " PTC_CONFIG_REDACTED ", not a token";
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Reads the token from admin->token_file (already resolved), blaming node (the token_file value). */
static int read_token(loader_t *l, const char *key, yaml_node_t *node, ptc_admin_config_t *admin)
{
    char buf[MAX_TOKEN_SIZE + 1];
    const char *why;
    size_t n = 0;
    int ret = 0;

    FILE *fp = fopen(admin->token_file, "rb");
    if (fp == NULL && errno == ENOMEM)
        return nomem(l->name, l->err, l->errlen);
    if (fp == NULL)
        return fail(l, node, key, "cannot read \"%s\": %s", admin->token_file, strerror(errno));
    n = fread(buf, 1, sizeof(buf), fp);
    if (ferror(fp)) {
        ret = fail(l, node, key, "cannot read \"%s\": %s", admin->token_file, strerror(errno));
        goto exit;
    }
    if (n > MAX_TOKEN_SIZE) {
        ret = fail(l, node, key, "\"%s\" is larger than %u bytes", admin->token_file, MAX_TOKEN_SIZE);
        goto exit;
    }
    const char *start = buf, *end = buf + n;
    while (start < end && is_space(*start))
        start++;
    while (end > start && is_space(end[-1]))
        end--;
    if ((why = token_check(start, (size_t)(end - start))) != NULL) {
        ret = fail(l, node, key, "\"%s\" %s", admin->token_file, why);
        goto exit;
    }
    if ((admin->token = malloc((size_t)(end - start) + 1)) == NULL) {
        ret = nomem(l->name, l->err, l->errlen);
        goto exit;
    }
    memcpy(admin->token, start, (size_t)(end - start));
    admin->token[end - start] = '\0';
exit:
    explicit_bzero(buf, sizeof(buf));
    fclose(fp);
    return ret;
}

static int on_admin_address(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_admin_config_t *admin = obj;

    if ((admin->address = calloc(1, sizeof(*admin->address))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    l->admin_address = value;
    return parse_address(l, key, value, admin->address);
}

static int on_admin_token(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_admin_config_t *admin = obj;
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, value, "a token", &s)) != 0)
        return ret;
    if ((why = token_check(s, strlen(s))) != NULL)
        return fail(l, value, key, "%s", why);
    return dup_string(l, s, &admin->token);
}

enum { ADMIN_ADDRESS, ADMIN_TOKEN_FILE, ADMIN_TOKEN };

static const field_t admin_fields[] = {
    [ADMIN_ADDRESS] = {"address", FIELD_CUSTOM, 0, 0, 0, on_admin_address},
    [ADMIN_TOKEN_FILE] = {"token_file", FIELD_PATH, offsetof(ptc_admin_config_t, token_file), 0, 0, NULL},
    [ADMIN_TOKEN] = {"token", FIELD_CUSTOM, 0, 0, 0, on_admin_token},
};

static int on_admin(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_config_t *next = obj;
    yaml_node_t *values[PTC_ARRAY_SIZE(admin_fields)] = {NULL};
    char child[KEY_SIZE];
    int ret;

    l->has_admin = true;
    if ((ret = walk_mapping(l, key, value, admin_fields, PTC_ARRAY_SIZE(admin_fields), &next->admin, true, values, NULL)) != 0)
        return ret;
    if (values[ADMIN_TOKEN] != NULL && values[ADMIN_TOKEN_FILE] != NULL) {
        key_join(child, key, "token");
        return fail(l, values[ADMIN_TOKEN], child, "give token or token_file, not both");
    }
    if (values[ADMIN_TOKEN_FILE] != NULL) {
        key_join(child, key, "token_file");
        return read_token(l, child, values[ADMIN_TOKEN_FILE], &next->admin);
    }
    return 0;
}

enum { TOP_UPSTREAMS = 4 };

static const field_t top_fields[] = {
    {"workers", FIELD_UINT32, offsetof(ptc_config_t, workers), 0, PTC_CONFIG_MAX_WORKERS, NULL},
    {"log_level", FIELD_CUSTOM, 0, 0, 0, on_log_level},
    {"health_path", FIELD_CUSTOM, 0, 0, 0, on_health_path},
    {"listeners", FIELD_CUSTOM, 0, 0, 0, on_listeners},
    [TOP_UPSTREAMS] = {"upstreams", FIELD_CUSTOM, 0, 0, 0, on_upstreams},
    {"routes", FIELD_CUSTOM, 0, 0, 0, on_routes},
    {"limits", FIELD_CUSTOM, 0, 0, 0, on_limits},
    {"timeouts", FIELD_CUSTOM, 0, 0, 0, on_timeouts},
    {"cors", FIELD_CUSTOM, 0, 0, 0, on_cors},
    {"compression", FIELD_CUSTOM, 0, 0, 0, on_compression},
    {"websocket", FIELD_CUSTOM, 0, 0, 0, on_websocket},
    {"admin", FIELD_CUSTOM, 0, 0, 0, on_admin},
    {"pid_file", FIELD_CUSTOM, 0, 0, 0, on_pid_file},
    {"watch", FIELD_BOOL, offsetof(ptc_config_t, watch), 0, 0, NULL},
    {"request_id", FIELD_CUSTOM, 0, 0, 0, on_request_id},
    {"trace", FIELD_CUSTOM, 0, 0, 0, on_trace},
    {"headers", FIELD_CUSTOM, 0, 0, 0, on_headers},
    {"jwt", FIELD_CUSTOM, 0, 0, 0, on_jwt},
    {"metrics", FIELD_CUSTOM, 0, 0, 0, on_metrics},
    {"access_log", FIELD_CUSTOM, 0, 0, 0, on_access_log},
};

/* Loads doc over cfg; relative file names are resolved against the directory dir[0..dir_len) ("" = the working directory). */
static int load_document(ptc_config_t *cfg, const char *name, const char *dir, size_t dir_len, yaml_document_t *doc, char *err,
                         size_t errlen)
{
    ptc_config_t next = {0};
    loader_t l = {.name = name, .err = err, .errlen = errlen, .doc = doc, .next = &next};
    yaml_node_t *values[PTC_ARRAY_SIZE(top_fields)] = {NULL}, *keys[PTC_ARRAY_SIZE(top_fields)] = {NULL};
    yaml_node_t *root = yaml_document_get_root_node(doc);
    int ret;

    ptc__config_copy_scalars(&next, cfg);
    if ((ret = dup_string(&l, name, &next.source)) != 0 ||
        (ret = dup_string(&l, cfg->request_id.header != NULL ? cfg->request_id.header : PTC_CONFIG_DEFAULT_REQUEST_ID_HEADER,
                          &next.request_id.header)) != 0)
        goto fail;
    if ((next.base_dir = malloc(dir_len + 2)) == NULL) {
        ret = nomem(name, err, errlen);
        goto fail;
    }
    memcpy(next.base_dir, dir, dir_len);
    if (dir_len > 0 && dir[dir_len - 1] != '/')
        next.base_dir[dir_len++] = '/';
    next.base_dir[dir_len] = '\0';
    l.dir = next.base_dir;
    l.dir_len = dir_len;
    if (root != NULL && (ret = walk_mapping(&l, "", root, top_fields, PTC_ARRAY_SIZE(top_fields), &next, true, values, keys)) != 0)
        goto fail;

    /* routes refer to the upstreams and JWT providers of this file, or to the current ones when it has none */
    if (l.has_routes) {
        if ((ret = resolve_routes(&l, l.has_upstreams ? next.upstreams : cfg->upstreams,
                                  l.has_upstreams ? next.num_upstreams : cfg->num_upstreams,
                                  l.has_jwt ? next.jwt_providers : cfg->jwt_providers,
                                  l.has_jwt ? next.num_jwt_providers : cfg->num_jwt_providers)) != 0)
            goto fail;
    } else if (l.has_upstreams) {
        if (next.num_upstreams != 1) {
            ret = fail(&l, keys[TOP_UPSTREAMS], "routes", "required when more than one upstream is defined");
            goto fail;
        }
        if ((next.routes = calloc(1, sizeof(*next.routes))) == NULL || (next.routes[0].path = strdup("/")) == NULL) {
            ret = nomem(name, err, errlen);
            goto fail;
        }
        next.num_routes = 1;
        next.routes[0].match = PTC_ROUTE_PREFIX;
        next.routes[0].upstream_index = 0;
        next.routes[0].native_filters = true;
    } else if (l.has_jwt && (ret = remap_kept_routes(&l, cfg)) != 0) {
        goto fail;
    }

    /* the result: next, plus whatever the file did not replace borrowed from cfg */
    ptc_config_t result = next;
    if (!l.has_listeners) {
        result.listeners = cfg->listeners;
        result.num_listeners = cfg->num_listeners;
    }
    if (!l.has_upstreams) {
        result.upstreams = cfg->upstreams;
        result.num_upstreams = cfg->num_upstreams;
        if (!l.has_routes) {
            result.routes = cfg->routes;
            result.num_routes = cfg->num_routes;
        }
    }
    if (!l.has_cors)
        result.cors = cfg->cors;
    if (next.health_path == NULL)
        result.health_path = cfg->health_path;
    if (!l.has_admin)
        result.admin = cfg->admin;
    if (!l.has_pid_file)
        result.pid_file = cfg->pid_file;
    if (!l.has_access_log) {
        result.access_log.path = cfg->access_log.path;
        result.access_log.format = cfg->access_log.format;
    }
    if (!l.has_headers)
        result.headers = cfg->headers;
    if (!l.has_jwt) {
        result.jwt_providers = cfg->jwt_providers;
        result.num_jwt_providers = cfg->num_jwt_providers;
        result.jwt_default = cfg->jwt_default;
    }
    if (l.admin_address != NULL) {
        for (size_t i = 0; i < result.num_listeners; i++) {
            if (ptc_hostport_eq(result.admin.address, &result.listeners[i].addr)) {
                ret = fail(&l, l.admin_address, "admin.address", "same address as listeners[%zu]", i);
                goto fail;
            }
        }
    }
    if ((ret = ptc_config_validate(&result, err, errlen)) != 0)
        goto fail;

    /* commit: detach what result borrowed, release the rest of the old config */
    if (!l.has_listeners) {
        cfg->listeners = NULL;
        cfg->num_listeners = 0;
    }
    if (!l.has_upstreams) {
        cfg->upstreams = NULL;
        cfg->num_upstreams = 0;
        if (!l.has_routes) {
            cfg->routes = NULL;
            cfg->num_routes = 0;
        }
    }
    if (!l.has_cors)
        memset(&cfg->cors, 0, sizeof(cfg->cors));
    if (result.health_path == cfg->health_path)
        cfg->health_path = NULL;
    if (!l.has_admin)
        memset(&cfg->admin, 0, sizeof(cfg->admin));
    if (!l.has_pid_file)
        cfg->pid_file = NULL;
    if (!l.has_access_log) {
        cfg->access_log.path = NULL;
        cfg->access_log.format = NULL;
    }
    if (!l.has_headers)
        memset(&cfg->headers, 0, sizeof(cfg->headers));
    if (!l.has_jwt) {
        cfg->jwt_providers = NULL;
        cfg->num_jwt_providers = 0;
        memset(&cfg->jwt_default, 0, sizeof(cfg->jwt_default));
    }
    ptc_config_dispose(cfg);
    *cfg = result;
    ret = 0;
    goto exit;

fail:
    ptc_config_dispose(&next);
exit:
    free(l.route_upstream);
    free(l.route_match);
    free(l.route_jwt);
    return ret;
}

static size_t line_of_offset(const char *text, size_t len, size_t offset)
{
    size_t line = 1;
    for (size_t i = 0; i < offset && i < len; i++)
        if (text[i] == '\n')
            line++;
    return line;
}

static int syntax_error(const yaml_parser_t *parser, const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    /* libyaml's loader does not set an error when its own strdup of a tag fails */
    if (parser->error == YAML_MEMORY_ERROR || parser->error == YAML_NO_ERROR)
        return nomem(name, err, errlen);
    if (err == NULL || errlen == 0)
        return PTC_ECONFIG;
    const char *problem = parser->problem != NULL ? parser->problem : "malformed YAML";
    if (parser->error == YAML_READER_ERROR) {
        snprintf(err, errlen, "%s:%zu: syntax error: %s", name, line_of_offset(yaml, len, parser->problem_offset), problem);
    } else if (parser->context != NULL) {
        snprintf(err, errlen, "%s:%zu: syntax error: %s (%s at line %zu)", name, parser->problem_mark.line + 1, problem,
                 parser->context, parser->context_mark.line + 1);
    } else {
        snprintf(err, errlen, "%s:%zu: syntax error: %s", name, parser->problem_mark.line + 1, problem);
    }
    return PTC_ECONFIG;
}

static int load_string(ptc_config_t *cfg, const char *name, const char *dir, size_t dir_len, const char *yaml, size_t len,
                       char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    int ret;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (cfg->source == NULL && (ret = ptc_config_init_default(cfg)) != 0)
        return nomem(name, err, errlen);
    if (!yaml_parser_initialize(&parser))
        return nomem(name, err, errlen);
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        ret = syntax_error(&parser, name, yaml, len, err, errlen);
        goto exit_parser;
    }
    /* a document without a root node marks the end of the stream; anything after the first is an error */
    if (yaml_document_get_root_node(&doc) != NULL) {
        if (!yaml_parser_load(&parser, &extra)) {
            ret = syntax_error(&parser, name, yaml, len, err, errlen);
            goto exit_doc;
        }
        yaml_node_t *root = yaml_document_get_root_node(&extra);
        size_t line = root != NULL ? root->start_mark.line + 1 : 0;
        yaml_document_delete(&extra);
        if (root != NULL) {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "%s:%zu: only one YAML document is allowed", name, line);
            ret = PTC_ECONFIG;
            goto exit_doc;
        }
    }
    ret = load_document(cfg, name, dir, dir_len, &doc, err, errlen);

exit_doc:
    yaml_document_delete(&doc);
exit_parser:
    yaml_parser_delete(&parser);
    return ret;
}

int ptc_config_load_string(ptc_config_t *cfg, const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    const char *slash = strrchr(name, '/');
    return load_string(cfg, name, name, slash != NULL ? (size_t)(slash - name) + 1 : 0, yaml, len, err, errlen);
}

int ptc_config_load_string_in(ptc_config_t *cfg, const char *name, const char *base_dir, const char *yaml, size_t len, char *err,
                              size_t errlen)
{
    if (base_dir == NULL)
        base_dir = "";
    return load_string(cfg, name, base_dir, strlen(base_dir), yaml, len, err, errlen);
}

int ptc_config_load_file(ptc_config_t *cfg, const char *path, char *err, size_t errlen)
{
    FILE *fp;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int ret;

    if ((fp = fopen(path, "rb")) == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return PTC_EIO;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_FILE_SIZE) {
                if (err != NULL && errlen > 0)
                    snprintf(err, errlen, "%s: larger than %u bytes", path, MAX_FILE_SIZE);
                ret = PTC_ECONFIG;
                goto exit;
            }
            cap = cap == 0 ? 4096 : cap * 2;
            char *p = realloc(buf, cap);
            if (p == NULL) {
                ret = nomem(path, err, errlen);
                goto exit;
            }
            buf = p;
        }
        size_t n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0) {
            if (ferror(fp)) {
                if (err != NULL && errlen > 0)
                    snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
                ret = PTC_EIO;
                goto exit;
            }
            break;
        }
    }
    ret = ptc_config_load_string(cfg, path, buf != NULL ? buf : "", len, err, errlen);

exit:
    free(buf);
    fclose(fp);
    return ret;
}
