/*
 * TLS contexts and the accept-side handshake (OpenSSL 3, libevent bufferevent_openssl).
 *
 * Settings and why (both directions unless said otherwise):
 *  - TLS 1.2 and 1.3 only (min_version may raise the floor to 1.3 on listeners). Every browser and gRPC
 *    implementation in use speaks 1.2; 1.0/1.1 are deprecated (RFC 8996).
 *  - TLS 1.2 cipher suites: ECDHE key exchange with AEAD ciphers only (AES-GCM, ChaCha20-Poly1305), i.e.
 *    Mozilla's "intermediate" list without the DHE suites. Forward secrecy, no CBC (Lucky13/padding oracles),
 *    no RSA key exchange, no SHA-1 MACs; and it is what HTTP/2 requires anyway (RFC 9113 §9.2.2, whose
 *    block list covers everything else), which matters for ALPN h2 on both sides. DHE is left out: it needs
 *    DH parameters, is slow, and every client that has DHE also has ECDHE.
 *  - TLS 1.3 cipher suites: OpenSSL's defaults (AES-256-GCM, ChaCha20-Poly1305, AES-128-GCM), all AEAD.
 *  - Groups X25519, P-256, P-384 (Mozilla intermediate): no finite-field groups, no rarely used curves.
 *  - Listeners: server cipher preference, with ChaCha20 preferred for clients that put it first (phones
 *    without AES instructions: SSL_OP_PRIORITIZE_CHACHA). No compression (CRIME), no renegotiation (a
 *    client-triggered CPU sink, and nothing here needs it), no 0-RTT early data (replayable; OpenSSL's
 *    default). Session tickets and the session cache stay on (OpenSSL defaults): resumption saves a full
 *    handshake for returning browsers. SSL_MODE_RELEASE_BUFFERS: idle keep-alive connections do not hold
 *    OpenSSL's ~34 KiB of record buffers.
 *  - A peer that closes without close_notify is treated as a normal close (SSL_OP_IGNORE_UNEXPECTED_EOF):
 *    browsers do it all the time, and HTTP/1.1 and HTTP/2 delimit their messages themselves, so truncation
 *    is detected above TLS.
 *  - ALPN on listeners: "h2" if offered, else "http/1.1"; a client that offers neither (or no ALPN) gets
 *    no ALPN and HTTP/1.1. Upstreams: "h2" is offered and required (gRPC is HTTP/2 only).
 *  - Upstream verification: the chain against the configured CA file or the system store, and the name
 *    (server_name, else the authority, else the endpoint host) with X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, as
 *    curl does. The gateway's own HTTPS requests (JWKS: ptc_tls_client_ctx_new) get the same, without ALPN.
 *    Private keys must be unencrypted (a passphrase prompt would block start-up and reloads).
 *
 * SNI: the default SSL_CTX of a listener carries (in ex_data, freed with it) the table of the other
 * certificates' contexts; the servername callback moves the SSL to the context whose certificate matches
 * the name (X509_check_host: SAN DNS names, else the CN, wildcards allowed). All contexts of a listener are
 * configured alike, because OpenSSL consults the new context for ALPN, client verification and the CA
 * list once SSL_set_SSL_CTX has run. The SSL keeps a reference to the default context (its session_ctx)
 * for its whole life, so the table outlives every handshake that may consult it, including across a reload.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "portico/conn.h"
#include "portico/pem.h"
#include "portico/log.h"
#include "portico/tls.h"
#include "portico/worker.h"

#define TLS12_CIPHERS                                                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"         \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:P-256:P-384"
#define SESSION_ID_CONTEXT "portico"

/* ---- errors ---- */

/* ---- contexts ---- */

/* What every context gets, server or client. Returns false when OpenSSL refuses a setting. */
static bool ctx_common(SSL_CTX *ctx, int min_version)
{
    static char groups[] = TLS_GROUPS; /* writable: OpenSSL's macro casts the const away */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_default_passwd_cb(ctx, ptc_pem_no_password);
    return SSL_CTX_set_min_proto_version(ctx, min_version) == 1 && SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) == 1 &&
           SSL_CTX_set1_groups_list(ctx, groups) == 1;
}

/* RFC 7301: the server picks from the client's list by its own preference. */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned int inlen,
                          void *arg)
{
    static const struct {
        unsigned char len;
        const char *name;
    } prefs[] = {{2, "h2"}, {8, "http/1.1"}};
    (void)ssl;
    (void)arg;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(prefs); i++) {
        for (const unsigned char *p = in, *end = in + inlen; p < end && (size_t)(end - p) > *p; p += 1 + *p) {
            if (*p == prefs[i].len && memcmp(p + 1, prefs[i].name, prefs[i].len) == 0) {
                *out = p + 1;
                *outlen = *p;
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK; /* proceed without ALPN: HTTP/1.1 */
}

typedef struct st_sni_table_t {
    size_t n;
    SSL_CTX *ctx[]; /* the listener's other certificates, in configuration order */
} sni_table_t;

static int sni_index = -1;
static pthread_once_t sni_once = PTHREAD_ONCE_INIT;

static void sni_table_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    sni_table_t *t = ptr;
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        SSL_CTX_free(t->ctx[i]);
    free(t);
}

static void sni_init(void)
{
    sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, sni_table_free);
}

static bool ctx_matches(SSL_CTX *ctx, const char *name)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    return cert != NULL && X509_check_host(cert, name, strlen(name), 0, NULL) == 1;
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    const sni_table_t *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (name == NULL || ctx_matches(SSL_get_SSL_CTX(ssl), name))
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < t->n; i++) {
        if (ctx_matches(t->ctx[i], name)) {
            SSL_set_SSL_CTX(ssl, t->ctx[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* no match: the default certificate */
}

/* One listener context with certificate kp. key names the listener in messages ("listeners[0].tls"). */
static int server_ctx_new(SSL_CTX **out, const ptc_listener_tls_config_t *tls, size_t cert_index, const char *key, char *err,
                          size_t errlen)
{
    const ptc_tls_keypair_config_t *kp = &tls->certs[cert_index];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char why[512], where[96];
    bool key_at_fault;
    int ret;

    if (cert_index == 0)
        snprintf(where, sizeof(where), "%s", key);
    else
        snprintf(where, sizeof(where), "%s.certificates[%zu]", key, cert_index - 1);
    if (ctx == NULL)
        return PTC_ENOMEM;
    if (!ctx_common(ctx, tls->min_version == PTC_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION)) {
        ptc_openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "%s: cannot set up TLS: %s", where, why);
        SSL_CTX_free(ctx);
        return PTC_ECONFIG;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
    /* sessions are resumable only into a context with the same id; required once client verification is on */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SESSION_ID_CONTEXT, sizeof(SESSION_ID_CONTEXT) - 1);
    if ((ret = ptc_pem_load_keypair(ctx, kp->cert, kp->key, &key_at_fault, why, sizeof(why))) != 0) {
        snprintf(err, errlen, "%s.%s: %s", where, key_at_fault ? "key" : "cert", why);
        SSL_CTX_free(ctx);
        return ret;
    }
    if (tls->client_auth != PTC_TLS_CLIENT_AUTH_NONE) {
        if ((ret = ptc_pem_load_ca(ctx, tls->client_ca, true, why, sizeof(why))) != 0) {
            snprintf(err, errlen, "%s.client_ca: %s", key, why);
            SSL_CTX_free(ctx);
            return ret;
        }
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | (tls->client_auth == PTC_TLS_CLIENT_AUTH_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    }
    *out = ctx;
    return 0;
}

static int listener_ctx_new(SSL_CTX **out, const ptc_listener_tls_config_t *tls, size_t index, char *err, size_t errlen)
{
    char key[64];
    SSL_CTX *ctx;
    sni_table_t *t;
    int ret;

    snprintf(key, sizeof(key), "listeners[%zu].tls", index);
    if ((ret = server_ctx_new(&ctx, tls, 0, key, err, errlen)) != 0)
        return ret;
    if (tls->num_certs > 1) {
        pthread_once(&sni_once, sni_init);
        if (sni_index < 0 || (t = calloc(1, sizeof(*t) + (tls->num_certs - 1) * sizeof(SSL_CTX *))) == NULL) {
            SSL_CTX_free(ctx);
            return PTC_ENOMEM;
        }
        /* owned by ctx from here: freed with it by sni_table_free */
        if (SSL_CTX_set_ex_data(ctx, sni_index, t) != 1) {
            free(t);
            SSL_CTX_free(ctx);
            return PTC_ENOMEM;
        }
        for (size_t i = 1; i < tls->num_certs; i++) {
            if ((ret = server_ctx_new(&t->ctx[t->n], tls, i, key, err, errlen)) != 0) {
                SSL_CTX_free(ctx);
                return ret;
            }
            t->n++;
        }
        SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
        SSL_CTX_set_tlsext_servername_arg(ctx, t);
    }
    *out = ctx;
    return 0;
}

static int cert_requested_index = -1;
static pthread_once_t cert_requested_once = PTHREAD_ONCE_INIT;

static void cert_requested_init(void)
{
    cert_requested_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Called by OpenSSL only when the server requests a certificate and none is configured: remember it. */
static int on_client_cert_requested(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    (void)x509;
    (void)pkey;
    if (cert_requested_index >= 0)
        SSL_set_ex_data(ssl, cert_requested_index, ssl);
    return 0; /* continue without one */
}

bool ptc_tls_client_cert_missing(const SSL *ssl)
{
    return cert_requested_index >= 0 && SSL_get_ex_data(ssl, cert_requested_index) != NULL;
}

/* Clients verify the server's chain against ca (a PEM file) or, when ca is NULL, the system store. */
static int client_verify(SSL_CTX *ctx, const char *ca, char *why, size_t len)
{
    char reason[256];

    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca != NULL)
        return ptc_pem_load_ca(ctx, ca, false, why, len);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ptc_openssl_reason(reason, sizeof(reason));
        snprintf(why, len, "cannot load the system CA store: %s", reason);
        return PTC_ECONFIG;
    }
    return 0;
}

static int upstream_ctx_new(SSL_CTX **out, const ptc_upstream_config_t *up, size_t index, char *err, size_t errlen)
{
    static const unsigned char alpn_h2[] = {2, 'h', '2'};
    const ptc_upstream_tls_config_t *tls = up->tls;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char why[512];
    bool key_at_fault;
    int ret;

    if (ctx == NULL)
        return PTC_ENOMEM;
    if (!ctx_common(ctx, TLS1_2_VERSION) || SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2)) != 0) {
        ptc_openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "upstreams[%zu].tls: cannot set up TLS: %s", index, why);
        SSL_CTX_free(ctx);
        return PTC_ECONFIG;
    }
    if (tls->insecure_skip_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else if ((ret = client_verify(ctx, tls->ca, why, sizeof(why))) != 0) {
        snprintf(err, errlen, "upstreams[%zu].tls%s: %s", index, tls->ca != NULL ? ".ca" : "", why);
        SSL_CTX_free(ctx);
        return ret;
    }
    if (tls->cert != NULL && (ret = ptc_pem_load_keypair(ctx, tls->cert, tls->key, &key_at_fault, why, sizeof(why))) != 0) {
        snprintf(err, errlen, "upstreams[%zu].tls.%s: %s", index, key_at_fault ? "key" : "cert", why);
        SSL_CTX_free(ctx);
        return ret;
    }
    if (tls->cert == NULL) {
        pthread_once(&cert_requested_once, cert_requested_init);
        SSL_CTX_set_client_cert_cb(ctx, on_client_cert_requested);
    }
    *out = ctx;
    return 0;
}

int ptc_tls_client_ctx_new(SSL_CTX **out, const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char why[512];
    int ret;

    if (ctx == NULL)
        return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
    if (!ctx_common(ctx, TLS1_2_VERSION)) {
        ptc_openssl_reason(why, sizeof(why));
        SSL_CTX_free(ctx);
        return ptc_errorf(PTC_ECONFIG, err, errlen, "cannot set up TLS: %s", why);
    }
    if ((ret = client_verify(ctx, ca_file, why, sizeof(why))) != 0) {
        SSL_CTX_free(ctx);
        return ptc_errorf(ret, err, errlen, "%s", why);
    }
    *out = ctx;
    return 0;
}

static ptc_tls_contexts_t *contexts_alloc(size_t num_listeners, size_t num_upstreams)
{
    ptc_tls_contexts_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->listeners = calloc(num_listeners != 0 ? num_listeners : 1, sizeof(*t->listeners));
    t->upstreams = calloc(num_upstreams != 0 ? num_upstreams : 1, sizeof(*t->upstreams));
    if (t->listeners == NULL || t->upstreams == NULL) {
        free(t->listeners);
        free(t->upstreams);
        free(t);
        return NULL;
    }
    t->num_listeners = num_listeners;
    t->num_upstreams = num_upstreams;
    return t;
}

int ptc_tls_contexts_new(ptc_tls_contexts_t **out, const ptc_config_t *cfg, char *err, size_t errlen)
{
    ptc_tls_contexts_t *t = contexts_alloc(cfg->num_listeners, cfg->num_upstreams);
    int ret = 0;

    if (t == NULL)
        ret = PTC_ENOMEM;
    for (size_t i = 0; ret == 0 && i < cfg->num_listeners; i++)
        if (cfg->listeners[i].tls != NULL)
            ret = listener_ctx_new(&t->listeners[i], cfg->listeners[i].tls, i, err, errlen);
    for (size_t i = 0; ret == 0 && i < cfg->num_upstreams; i++)
        if (cfg->upstreams[i].tls != NULL)
            ret = upstream_ctx_new(&t->upstreams[i], &cfg->upstreams[i], i, err, errlen);
    if (ret != 0) {
        if (ret == PTC_ENOMEM)
            snprintf(err, errlen, "out of memory");
        ptc_tls_contexts_free(t);
        return ret;
    }
    *out = t;
    return 0;
}

ptc_tls_contexts_t *ptc_tls_contexts_dup(const ptc_tls_contexts_t *src)
{
    ptc_tls_contexts_t *t = contexts_alloc(src->num_listeners, src->num_upstreams);
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < src->num_listeners; i++)
        if ((t->listeners[i] = src->listeners[i]) != NULL)
            SSL_CTX_up_ref(t->listeners[i]);
    for (size_t i = 0; i < src->num_upstreams; i++)
        if ((t->upstreams[i] = src->upstreams[i]) != NULL)
            SSL_CTX_up_ref(t->upstreams[i]);
    return t;
}

void ptc_tls_contexts_free(ptc_tls_contexts_t *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->num_listeners; i++)
        SSL_CTX_free(t->listeners[i]);
    for (size_t i = 0; i < t->num_upstreams; i++)
        SSL_CTX_free(t->upstreams[i]);
    free(t->listeners);
    free(t->upstreams);
    free(t);
}

void ptc_tls_log_warnings(const ptc_config_t *cfg)
{
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        const ptc_upstream_config_t *up = &cfg->upstreams[i];
        if (up->tls != NULL && up->tls->insecure_skip_verify)
            ptc_log_warn("upstream %s: tls.insecure_skip_verify is set: the server's certificate and name are NOT verified "
                         "(for development only)",
                         up->name);
    }
}

/* ---- client side ---- */

static bool is_ip_address(const char *s)
{
    unsigned char bin[16];
    return inet_pton(AF_INET, s, bin) == 1 || inet_pton(AF_INET6, s, bin) == 1;
}

SSL *ptc_tls_client_new(SSL_CTX *ctx, const ptc_upstream_config_t *up, const char *endpoint_host)
{
    char name[256];

    if (up->tls->server_name != NULL) {
        snprintf(name, sizeof(name), "%s", up->tls->server_name);
    } else if (up->authority != NULL) {
        /* "host:port", "[v6]:port", "[v6]" or "host": the host part */
        const char *a = up->authority, *end;
        if (a[0] == '[' && (end = strchr(a, ']')) != NULL)
            a++;
        else
            end = strrchr(a, ':') != NULL ? strrchr(a, ':') : a + strlen(a);
        snprintf(name, sizeof(name), "%.*s", (int)(end - a), a);
    } else {
        snprintf(name, sizeof(name), "%s", endpoint_host);
    }
    return ptc_tls_client_ssl_new(ctx, name, !up->tls->insecure_skip_verify);
}

SSL *ptc_tls_client_ssl_new(SSL_CTX *ctx, const char *name, bool verify_name)
{
    SSL *ssl;

    if ((ssl = SSL_new(ctx)) == NULL)
        return NULL;
    bool ip = is_ip_address(name);
    /* RFC 6066 §3: SNI carries host names only, never IP literals */
    char sni[256]; /* a DNS name is at most 253 characters; OpenSSL's macro takes a writable pointer */
    if (!ip && (strlen(name) >= sizeof(sni) || SSL_set_tlsext_host_name(ssl, strcpy(sni, name)) != 1))
        goto fail;
    if (verify_name) {
        if (ip) {
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1)
                goto fail;
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (SSL_set1_host(ssl, name) != 1)
                goto fail;
        }
    }
    return ssl;

fail:
    SSL_free(ssl);
    return NULL;
}

bool ptc_tls_alpn_is_h2(const SSL *ssl)
{
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    return len == 2 && memcmp(proto, "h2", 2) == 0;
}

void ptc_tls_bev_error(struct bufferevent *bev, char *buf, size_t len)
{
    unsigned long errs[8], e, first = 0;
    size_t n = 0;

    /* libevent 2.1 records SSL_get_error()'s code (SSL_ERROR_SSL, SSL_ERROR_SYSCALL: small numbers), then
     * OpenSSL's queue, and hands them back last first; the cause is the earliest queue entry */
    while ((e = bufferevent_get_openssl_error(bev)) != 0)
        if (n < PTC_ARRAY_SIZE(errs))
            errs[n++] = e;
    while (n > 0 && first == 0) {
        e = errs[--n];
        if (e > 0xff)
            first = e;
    }
    if (first == 0) {
        if (len > 0)
            buf[0] = '\0';
        return;
    }
    const char *reason = ERR_reason_error_string(first);
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long verify = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (ERR_SYSTEM_ERROR(first))
        snprintf(buf, len, "%s", strerror(ERR_GET_REASON(first)));
    else if (reason == NULL)
        snprintf(buf, len, "OpenSSL error %lx", first);
    else if (ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK)
        snprintf(buf, len, "%s: %s", reason, X509_verify_cert_error_string(verify));
    else
        snprintf(buf, len, "%s", reason);
}

/* ---- accepting ---- */

/* A connection while its handshake runs; registered with the worker so that drains and limits see it. */
typedef struct st_tls_handshake_t {
    ptc_conn_t super;
    struct bufferevent *bev;
    struct event *timer; /* handshake deadline (timeouts.header_read) */
} tls_handshake_t;

static void handshake_free(tls_handshake_t *hs)
{
    if (hs->bev != NULL)
        bufferevent_free(hs->bev);
    event_free(hs->timer);
    ptc_conn_unregister(&hs->super);
    free(hs);
}

static void handshake_close(ptc_conn_t *c)
{
    tls_handshake_t *hs = (tls_handshake_t *)(void *)c;
    ptc_log_debug("tls %s: closed during the handshake", hs->super.peer);
    handshake_free(hs);
}

static void handshake_fail_calls(ptc_conn_t *c, const char *message)
{
    (void)message;
    handshake_close(c);
}

static const ptc_conn_cb_t handshake_callbacks = {handshake_close, handshake_fail_calls, handshake_close, NULL};

static void on_handshake_event(struct bufferevent *bev, short events, void *arg)
{
    tls_handshake_t *hs = arg;
    char why[256];

    if (events & BEV_EVENT_CONNECTED) {
        ptc_worker_t *w = hs->super.worker;
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        const unsigned char *alpn = NULL;
        unsigned int alpn_len = 0;
        const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        char peer[sizeof(hs->super.peer)];
        unsigned listener = hs->super.listener;

        SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
        ptc_log_debug("tls %s: %s %s, ALPN %.*s, SNI %s%s", hs->super.peer, SSL_get_version(ssl), SSL_get_cipher_name(ssl),
                      alpn_len != 0 ? (int)alpn_len : 4, alpn_len != 0 ? (const char *)alpn : "none", sni != NULL ? sni : "none",
                      SSL_session_reused(ssl) ? ", resumed" : "");
        memcpy(peer, hs->super.peer, sizeof(peer));
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
        hs->bev = NULL; /* handed over below */
        handshake_free(hs);
        ptc_conn_serve(w, bev, peer, listener, ptc_tls_alpn_is_h2(ssl));
        return;
    }
    ptc_tls_bev_error(bev, why, sizeof(why));
    if (why[0] == '\0') {
        int err = EVUTIL_SOCKET_ERROR();
        snprintf(why, sizeof(why), "%s",
                 (events & BEV_EVENT_EOF) || err == 0 ? "connection closed by the client" : evutil_socket_error_to_string(err));
    }
    ptc_log_info("tls %s: handshake failed: %s", hs->super.peer, why);
    handshake_free(hs);
}

static void on_handshake_timeout(evutil_socket_t fd, short events, void *arg)
{
    tls_handshake_t *hs = arg;
    (void)fd;
    (void)events;
    ptc_log_info("tls %s: handshake failed: not complete within %" PRIu64 " ms (timeouts.header_read)", hs->super.peer,
                 hs->super.snap->config.timeouts.header_read_ms);
    handshake_free(hs);
}

void ptc_tls_accept(ptc_worker_t *w, evutil_socket_t fd, const char *peer, unsigned listener, SSL_CTX *ctx)
{
    tls_handshake_t *hs = calloc(1, sizeof(*hs));
    SSL *ssl = SSL_new(ctx);

    if (hs == NULL || ssl == NULL || (hs->timer = evtimer_new(w->base, on_handshake_timeout, hs)) == NULL) {
        ptc_log_error("tls %s: out of memory", peer);
        SSL_free(ssl);
        if (hs != NULL && hs->timer != NULL)
            event_free(hs->timer);
        free(hs);
        evutil_closesocket(fd);
        return;
    }
    /* On failure libevent has usually freed ssl and closed fd already (BEV_OPT_CLOSE_ON_FREE), but not when
     * its first allocation failed; a leak under memory exhaustion beats a double free. */
    if ((hs->bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        ptc_log_error("tls %s: out of memory", peer);
        event_free(hs->timer);
        free(hs);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(hs->bev, 1);
    bufferevent_setcb(hs->bev, NULL, NULL, on_handshake_event, hs);
    ptc_conn_register(w, &hs->super, &handshake_callbacks, peer, listener);
    uint64_t ms = hs->super.snap->config.timeouts.header_read_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(hs->timer, &tv);
}
