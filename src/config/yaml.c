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
#include <yaml.h>

#include "portico/config_internal.h"
#include "portico/tls.h"

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
    bool has_listeners, has_upstreams, has_routes, has_cors, has_admin, has_pid_file;
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

    if (ptc_tls_check_keypair(cert, key, &key_at_fault, why, sizeof(why)) == 0)
        return 0;
    key_join(child, parent, key_at_fault ? "key" : "cert");
    return fail(l, key_at_fault ? key_node : cert_node, child, "%s", why);
}

static int check_ca(loader_t *l, const char *parent, const char *name, const char *file, yaml_node_t *node)
{
    char why[512], child[KEY_SIZE];

    if (ptc_tls_check_ca(file, why, sizeof(why)) == 0)
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

static int on_listener_tls_client_auth(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    static const char *const names[] = {"none", "optional", "required"};
    ptc_listener_tls_config_t *tls = obj;
    const char *s;
    int ret;

    if ((ret = want_scalar(l, key, value, "none, optional or required", &s)) != 0)
        return ret;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            tls->client_auth = (ptc_tls_client_auth_t)i;
            return 0;
        }
    }
    return fail(l, value, key, "invalid value \"%s\" (expected none, optional or required)", s);
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

static int on_upstream_name(loader_t *l, const char *key, yaml_node_t *value, void *obj)
{
    ptc_upstream_config_t *up = obj;
    const char *s, *why;
    int ret;

    if ((ret = want_scalar(l, key, value, "a string", &s)) != 0)
        return ret;
    if ((why = ptc__upstream_name_check(s)) != NULL)
        return fail(l, value, key, "%s", why);
    return dup_string(l, s, &up->name);
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

static const field_t upstream_fields[] = {
    {"name", FIELD_CUSTOM, 0, 0, 0, on_upstream_name},
    {"endpoints", FIELD_CUSTOM, 0, 0, 0, on_upstream_endpoints},
    {"authority", FIELD_CUSTOM, 0, 0, 0, on_upstream_authority},
    {"connect_timeout", FIELD_DURATION, offsetof(ptc_upstream_config_t, connect_timeout_ms), 1, UINT64_MAX, NULL},
    {"max_connections", FIELD_UINT32, offsetof(ptc_upstream_config_t, max_connections), 1, UINT32_MAX, NULL},
    {"max_pending", FIELD_UINT32, offsetof(ptc_upstream_config_t, max_pending), 0, UINT32_MAX, NULL},
    {"backoff", FIELD_CUSTOM, 0, 0, 0, on_upstream_backoff},
    {"tls", FIELD_CUSTOM, 0, 0, 0, on_upstream_tls},
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

/* ---- routes ---- */

typedef struct st_route_parse_t {
    ptc_route_config_t *route;
    yaml_node_t *match_node;
    yaml_node_t *upstream_node;
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

static const field_t route_fields[] = {
    {"prefix", FIELD_CUSTOM, 0, 0, 0, on_route_prefix},
    {"path", FIELD_CUSTOM, 0, 0, 0, on_route_path},
    {"upstream", FIELD_CUSTOM, 0, 0, 0, on_route_upstream},
    {"cors", FIELD_CUSTOM, 0, 0, 0, on_route_cors},
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
        (l->route_match = calloc(n, sizeof(yaml_node_t *))) == NULL)
        return nomem(l->name, l->err, l->errlen);
    next->num_routes = n;

    for (size_t i = 0; i < n; i++) {
        char item_key[KEY_SIZE], child[KEY_SIZE];
        yaml_node_t *item = seq_item(l, key, value, i, item_key);
        yaml_node_t *values[PTC_ARRAY_SIZE(route_fields)] = {NULL};
        route_parse_t rp = {&next->routes[i], NULL, NULL};

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
    }
    return 0;
}

/* Gives routes their upstream index, rejects duplicates, and sorts them into match order. */
static int resolve_routes(loader_t *l, const ptc_upstream_config_t *ups, size_t nups)
{
    ptc_config_t *next = l->next;
    char key[KEY_SIZE];

    for (size_t i = 0; i < next->num_routes; i++) {
        ptc_route_config_t *r = &next->routes[i];
        const char *name = scalar_value(l->route_upstream[i]);
        size_t u;
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
};

static const field_t timeouts_fields[] = {
    {"max_grpc_timeout", FIELD_DURATION, offsetof(ptc_timeouts_config_t, max_grpc_timeout_ms), 0, UINT64_MAX, NULL},
    {"default_grpc_timeout", FIELD_DURATION, offsetof(ptc_timeouts_config_t, default_grpc_timeout_ms), 0, UINT64_MAX, NULL},
    {"idle", FIELD_DURATION, offsetof(ptc_timeouts_config_t, idle_ms), 1, UINT64_MAX, NULL},
    {"header_read", FIELD_DURATION, offsetof(ptc_timeouts_config_t, header_read_ms), 1, UINT64_MAX, NULL},
    {"drain", FIELD_DURATION, offsetof(ptc_timeouts_config_t, drain_ms), 0, UINT64_MAX, NULL},
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
    {"admin", FIELD_CUSTOM, 0, 0, 0, on_admin},
    {"pid_file", FIELD_CUSTOM, 0, 0, 0, on_pid_file},
    {"watch", FIELD_BOOL, offsetof(ptc_config_t, watch), 0, 0, NULL},
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

    /* routes refer to the upstreams of this file, or to the current ones when the file has none */
    if (l.has_routes) {
        if ((ret = resolve_routes(&l, l.has_upstreams ? next.upstreams : cfg->upstreams,
                                  l.has_upstreams ? next.num_upstreams : cfg->num_upstreams)) != 0)
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
    ptc_config_dispose(cfg);
    *cfg = result;
    ret = 0;
    goto exit;

fail:
    ptc_config_dispose(&next);
exit:
    free(l.route_upstream);
    free(l.route_match);
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
