/* Unit tests for src/net/tls.c: the contexts built from a configuration, driven through in-memory handshakes
 * (a BIO pair, no sockets): versions, ALPN choice, SNI certificate choice, client certificates, and the
 * upstream side's verification, name and ALPN. Certificates are made with the openssl CLI in a temporary
 * directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h> /* after the headers it needs */

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "portico/config.h"
#include "portico/tls.h"

static char dir[64];

static int run(const char *fmt, ...) PTC_PRINTF(1, 2);
static int run(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* A CA and, signed by it: server certificates for localhost, other.test and *.wild.test; a client
 * certificate; and a self-signed certificate nobody trusts. */
static int setup(void **state)
{
    static const char *const leaves[][3] = {
        {"localhost", "localhost", "DNS:localhost,IP:127.0.0.1"},
        {"other", "other.test", "DNS:other.test"},
        {"wild", "wild.test", "DNS:*.wild.test"},
        {"client", "client", "DNS:client"},
    };
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/ptc-tls-unit-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    if (run("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 "
            "-subj /CN=ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null",
            dir) != 0)
        return -1;
    if (run("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rogue.key -out rogue.pem "
            "-days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null",
            dir) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        if (run("cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.csr -subj /CN=%s "
                "2>/dev/null && printf 'subjectAltName=%s\\n' > %s.ext && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key "
                "-set_serial %zu -days 2 -extfile %s.ext -out %s.pem 2>/dev/null",
                dir, leaves[i][0], leaves[i][0], leaves[i][1], leaves[i][2], leaves[i][0], leaves[i][0], 100 + i, leaves[i][0],
                leaves[i][0]) != 0)
            return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return run("rm -rf %s", dir) == 0 ? 0 : -1;
}

/* Loads yaml as the file DIR/t.yaml (file names relative to DIR) and builds its contexts. */
static void load(ptc_config_t *cfg, ptc_tls_contexts_t **ctxs, const char *yaml)
{
    char name[128], err[512];
    snprintf(name, sizeof(name), "%s/t.yaml", dir);
    assert_int_equal(ptc_config_init_default(cfg), 0);
    int ret = ptc_config_load_string(cfg, name, yaml, strlen(yaml), err, sizeof(err));
    if (ret != 0)
        print_error("%s\n", err);
    assert_int_equal(ret, 0);
    ret = ptc_tls_contexts_new(ctxs, cfg, err, sizeof(err));
    if (ret != 0)
        print_error("%s\n", err);
    assert_int_equal(ret, 0);
}

static void path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

/* A bare client: no verification unless a CA is given; ALPN list in wire format (may be NULL). */
static SSL *client_new(const char *sni, const unsigned char *alpn, size_t alpn_len, int max_version, const char *cert)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char file[128];
    assert_non_null(ctx);
    if (alpn != NULL)
        assert_int_equal(SSL_CTX_set_alpn_protos(ctx, alpn, (unsigned)alpn_len), 0);
    if (max_version != 0)
        SSL_CTX_set_max_proto_version(ctx, max_version);
    if (cert != NULL) {
        snprintf(file, sizeof(file), "%s/%s.pem", dir, cert);
        assert_int_equal(SSL_CTX_use_certificate_file(ctx, file, SSL_FILETYPE_PEM), 1);
        snprintf(file, sizeof(file), "%s/%s.key", dir, cert);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, file, SSL_FILETYPE_PEM), 1);
    }
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    assert_non_null(ssl);
    if (sni != NULL)
        SSL_set_tlsext_host_name(ssl, sni);
    return ssl;
}

/*
 * Runs a handshake between client and server over a BIO pair, then one application-data round trip so that
 * TLS 1.3 client-certificate checks (which the client only learns about afterwards) take effect. Returns 0
 * or -1; on failure *reason is OpenSSL's reason for the first error.
 */
static int handshake(SSL *client, SSL *server, const char **reason)
{
    BIO *cb, *sb;
    assert_int_equal(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
    SSL_set_bio(client, cb, cb);
    SSL_set_bio(server, sb, sb);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    *reason = NULL;
    ERR_clear_error();
    bool cdone = false, sdone = false;
    for (int i = 0; i < 50 && !(cdone && sdone); i++) {
        int rc = cdone ? 1 : SSL_do_handshake(client), rs = sdone ? 1 : SSL_do_handshake(server);
        int ec = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(client, rc), es = rs == 1 ? SSL_ERROR_NONE : SSL_get_error(server, rs);
        cdone = rc == 1;
        sdone = rs == 1;
        if ((ec != SSL_ERROR_NONE && ec != SSL_ERROR_WANT_READ && ec != SSL_ERROR_WANT_WRITE) ||
            (es != SSL_ERROR_NONE && es != SSL_ERROR_WANT_READ && es != SSL_ERROR_WANT_WRITE)) {
            *reason = ERR_reason_error_string(ERR_peek_error());
            ERR_clear_error();
            return -1;
        }
    }
    if (!(cdone && sdone))
        return -1;
    char buf[8];
    size_t n;
    for (int i = 0; i < 10; i++) { /* ping from the client; the server reads it (and the client its tickets) */
        if (i == 0 && SSL_write_ex(client, "ping", 4, &n) != 1)
            break;
        if (SSL_read_ex(server, buf, sizeof(buf), &n) == 1 && n == 4)
            return 0;
        int e = SSL_get_error(server, 0);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            break;
        SSL_read_ex(client, buf, sizeof(buf), &n);
    }
    *reason = ERR_reason_error_string(ERR_peek_error());
    ERR_clear_error();
    return -1;
}

static const char *peer_cn(SSL *client)
{
    static char cn[64];
    X509 *cert = SSL_get0_peer_certificate(client);
    assert_non_null(cert);
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) > 0);
    return cn;
}

static const char *alpn_of(SSL *ssl)
{
    static char proto[32];
    const unsigned char *p;
    unsigned int len;
    SSL_get0_alpn_selected(ssl, &p, &len);
    snprintf(proto, sizeof(proto), "%.*s", (int)len, len != 0 ? (const char *)p : "");
    return proto;
}

static const char LISTENER[] = "listeners:\n"
                               "  - address: 127.0.0.1:1\n"
                               "  - address: 127.0.0.1:2\n"
                               "    tls:\n"
                               "      cert: localhost.pem\n"
                               "      key: localhost.key\n"
                               "      certificates:\n"
                               "        - {cert: other.pem, key: other.key}\n"
                               "        - {cert: wild.pem, key: wild.key}\n";

static void test_alpn_and_versions(void **state)
{
    (void)state;
    static const struct {
        const char *offer; /* wire format */
        size_t len;
        const char *selected;
    } cases[] = {
        {"\x02h2\x08http/1.1", 12, "h2"},
        {"\x08http/1.1\x02h2", 12, "h2"}, /* the server's preference wins */
        {"\x08http/1.1", 9, "http/1.1"},
        {"\x06spdy/3\x08http/1.0", 16, ""}, /* nothing we speak: no ALPN, HTTP/1.1 */
        {NULL, 0, ""},
    };
    ptc_config_t cfg;
    ptc_tls_contexts_t *ctxs;
    const char *reason;

    load(&cfg, &ctxs, LISTENER);
    assert_null(ctxs->listeners[0]);
    assert_non_null(ctxs->listeners[1]);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL *c = client_new("localhost", (const unsigned char *)cases[i].offer, cases[i].len, 0, NULL);
        SSL *s = SSL_new(ctxs->listeners[1]);
        assert_int_equal(handshake(c, s, &reason), 0);
        assert_string_equal(alpn_of(s), cases[i].selected);
        assert_int_equal(ptc_tls_alpn_is_h2(s), strcmp(cases[i].selected, "h2") == 0);
        assert_string_equal(SSL_get_version(s), "TLSv1.3");
        SSL_free(c);
        SSL_free(s);
    }
    /* TLS 1.2: an ECDHE + AEAD suite; TLS 1.1: refused */
    SSL *c = client_new("localhost", NULL, 0, TLS1_2_VERSION, NULL);
    SSL *s = SSL_new(ctxs->listeners[1]);
    assert_int_equal(handshake(c, s, &reason), 0);
    assert_string_equal(SSL_get_cipher_name(s), "ECDHE-ECDSA-AES128-GCM-SHA256");
    SSL_free(c);
    SSL_free(s);
    c = client_new("localhost", NULL, 0, TLS1_1_VERSION, NULL);
    SSL_set_security_level(c, 0);
    s = SSL_new(ctxs->listeners[1]);
    assert_int_equal(handshake(c, s, &reason), -1);
    SSL_free(c);
    SSL_free(s);
    ptc_tls_contexts_free(ctxs);
    ptc_config_dispose(&cfg);

    /* min_version "1.3" */
    load(&cfg, &ctxs,
         "listeners:\n  - address: 127.0.0.1:2\n    tls: {cert: localhost.pem, key: localhost.key, min_version: \"1.3\"}\n");
    c = client_new("localhost", NULL, 0, TLS1_2_VERSION, NULL);
    s = SSL_new(ctxs->listeners[0]);
    assert_int_equal(handshake(c, s, &reason), -1);
    SSL_free(c);
    SSL_free(s);
    ptc_tls_contexts_free(ctxs);
    ptc_config_dispose(&cfg);
}

static void test_sni(void **state)
{
    (void)state;
    static const struct {
        const char *sni;
        const char *cn;
    } cases[] = {
        {"localhost", "localhost"}, {"other.test", "other.test"},   {"OTHER.test", "other.test"},  {"x.wild.test", "wild.test"},
        {"wild.test", "localhost"}, {"a.b.wild.test", "localhost"}, {"unknown.test", "localhost"}, {NULL, "localhost"},
    };
    ptc_config_t cfg;
    ptc_tls_contexts_t *ctxs;
    const char *reason;

    load(&cfg, &ctxs, LISTENER);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL *c = client_new(cases[i].sni, (const unsigned char *)"\x02h2", 3, 0, NULL);
        SSL *s = SSL_new(ctxs->listeners[1]);
        assert_int_equal(handshake(c, s, &reason), 0);
        if (strcmp(peer_cn(c), cases[i].cn) != 0)
            print_error("SNI %s: got %s\n", cases[i].sni != NULL ? cases[i].sni : "(none)", peer_cn(c));
        assert_string_equal(peer_cn(c), cases[i].cn);
        assert_string_equal(alpn_of(s), "h2"); /* the SNI contexts are set up alike */
        SSL_free(c);
        SSL_free(s);
    }
    /* the SNI table lives as long as the default context, even when the contexts are freed mid-handshake */
    SSL *c = client_new("other.test", NULL, 0, 0, NULL);
    SSL *s = SSL_new(ctxs->listeners[1]);
    ptc_tls_contexts_free(ctxs);
    assert_int_equal(handshake(c, s, &reason), 0);
    assert_string_equal(peer_cn(c), "other.test");
    SSL_free(c);
    SSL_free(s);
    ptc_config_dispose(&cfg);
}

static void test_client_certificates(void **state)
{
    (void)state;
    static const struct {
        const char *client_auth;
        const char *cert;
        int version;
        int result;
    } cases[] = {
        {"required", NULL, TLS1_2_VERSION, -1},    {"required", NULL, TLS1_3_VERSION, -1},
        {"required", "client", TLS1_2_VERSION, 0}, {"required", "client", TLS1_3_VERSION, 0},
        {"required", "rogue", TLS1_3_VERSION, -1}, {"optional", NULL, TLS1_3_VERSION, 0},
        {"optional", "client", TLS1_3_VERSION, 0}, {"optional", "rogue", TLS1_2_VERSION, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ptc_config_t cfg;
        ptc_tls_contexts_t *ctxs;
        const char *reason;
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 "listeners:\n  - address: 127.0.0.1:2\n    tls:\n      cert: localhost.pem\n      key: localhost.key\n"
                 "      certificates: [{cert: other.pem, key: other.key}]\n      client_auth: %s\n      client_ca: ca.pem\n",
                 cases[i].client_auth);
        load(&cfg, &ctxs, yaml);
        /* through an SNI context too: it must verify clients the same way */
        for (int sni = 0; sni < 2; sni++) {
            SSL *c = client_new(sni ? "other.test" : "localhost", NULL, 0, cases[i].version, cases[i].cert);
            SSL *s = SSL_new(ctxs->listeners[0]);
            int ret = handshake(c, s, &reason);
            if (ret != cases[i].result)
                print_error("case %zu (sni %d): got %d (%s)\n", i, sni, ret, reason != NULL ? reason : "-");
            assert_int_equal(ret, cases[i].result);
            if (ret == 0 && cases[i].cert != NULL)
                assert_non_null(SSL_get0_peer_certificate(s));
            SSL_free(c);
            SSL_free(s);
        }
        ptc_tls_contexts_free(ctxs);
        ptc_config_dispose(&cfg);
    }
}

static void test_upstream_client(void **state)
{
    (void)state;
    static const struct {
        const char *tls;      /* the upstream's tls mapping */
        const char *endpoint; /* its host */
        const char *server;   /* the server's certificate (file name without .pem) */
        int result;
        long verify; /* SSL_get_verify_result on the client */
    } cases[] = {
        {"{ca: ca.pem}", "localhost", "localhost", 0, X509_V_OK},
        {"{ca: ca.pem}", "127.0.0.1", "localhost", 0, X509_V_OK}, /* an IP address, verified as such */
        {"{ca: ca.pem}", "other.test", "other", 0, X509_V_OK},
        {"{ca: ca.pem, server_name: other.test}", "10.0.0.1", "other", 0, X509_V_OK},
        {"{ca: ca.pem}", "a.wild.test", "wild", 0, X509_V_OK},
        {"{ca: ca.pem}", "other.test", "localhost", -1, X509_V_ERR_HOSTNAME_MISMATCH},
        {"{ca: ca.pem}", "127.0.0.2", "localhost", -1, X509_V_ERR_IP_ADDRESS_MISMATCH},
        {"{ca: ca.pem}", "localhost", "rogue", -1, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT},
        {"{ca: rogue.pem}", "localhost", "localhost", -1, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY},
        /* insecure: the chain is still checked (hence the result) but nothing is enforced */
        {"{insecure_skip_verify: true}", "localhost", "rogue", 0, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT},
        {"{insecure_skip_verify: true, server_name: nope.test}", "localhost", "rogue", 0, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ptc_config_t cfg;
        ptc_tls_contexts_t *ctxs;
        const char *reason;
        char yaml[512], cert[128], key[128];
        snprintf(yaml, sizeof(yaml), "upstreams:\n  - name: u\n    endpoints: [\"%s:443\"]\n    tls: %s\n", cases[i].endpoint,
                 cases[i].tls);
        load(&cfg, &ctxs, yaml);
        assert_non_null(ctxs->upstreams[0]);
        SSL *c = ptc_tls_client_new(ctxs->upstreams[0], &cfg.upstreams[0], cfg.upstreams[0].endpoints[0].host);
        assert_non_null(c);
        /* the server: a plain context with the certificate, offering h2 */
        SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
        path(cert, sizeof(cert), cases[i].server);
        strcat(cert, ".pem");
        path(key, sizeof(key), cases[i].server);
        strcat(key, ".key");
        assert_int_equal(SSL_CTX_use_certificate_file(sctx, cert, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM), 1);
        SSL *s = SSL_new(sctx);
        SSL_CTX_free(sctx);
        int ret = handshake(c, s, &reason);
        if (ret != cases[i].result || SSL_get_verify_result(c) != cases[i].verify)
            print_error("case %zu: got %d, verify %ld (%s)\n", i, ret, SSL_get_verify_result(c), reason != NULL ? reason : "-");
        assert_int_equal(ret, cases[i].result);
        assert_int_equal(SSL_get_verify_result(c), cases[i].verify);
        /* SNI: the name, except for IP addresses */
        const char *sni = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
        if (ret == 0 && strcmp(cases[i].endpoint, "127.0.0.1") == 0)
            assert_null(sni);
        SSL_free(c);
        SSL_free(s);
        ptc_tls_contexts_free(ctxs);
        ptc_config_dispose(&cfg);
    }

    /* the authority (without its port) names the server when there is no server_name; ALPN offers h2 only */
    ptc_config_t cfg;
    ptc_tls_contexts_t *ctxs;
    const char *reason;
    load(&cfg, &ctxs,
         "upstreams:\n  - name: u\n    endpoints: [\"10.0.0.1:443\"]\n    authority: other.test:8443\n    tls: {ca: ca.pem}\n");
    SSL *c = ptc_tls_client_new(ctxs->upstreams[0], &cfg.upstreams[0], "10.0.0.1");
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    char cert[128], key[128];
    path(cert, sizeof(cert), "other.pem");
    path(key, sizeof(key), "other.key");
    assert_int_equal(SSL_CTX_use_certificate_file(sctx, cert, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM), 1);
    SSL *s = SSL_new(sctx);
    SSL_CTX_free(sctx);
    assert_int_equal(handshake(c, s, &reason), 0);
    assert_string_equal(SSL_get_servername(s, TLSEXT_NAMETYPE_host_name), "other.test");
    assert_false(ptc_tls_alpn_is_h2(c)); /* this server has no ALPN callback: the pool refuses such a connection */
    assert_false(ptc_tls_client_cert_missing(c));
    SSL_free(c);
    SSL_free(s);
    ptc_tls_contexts_free(ctxs);
    ptc_config_dispose(&cfg);
}

static void test_upstream_client_certificate(void **state)
{
    (void)state;
    for (int with_cert = 0; with_cert < 2; with_cert++) {
        ptc_config_t cfg;
        ptc_tls_contexts_t *ctxs, *server;
        const char *reason;
        load(&cfg, &ctxs,
             with_cert
                 ? "upstreams:\n  - name: u\n    endpoints: [\"localhost:443\"]\n    tls: {ca: ca.pem, cert: client.pem, key: "
                   "client.key}\n"
                 : "upstreams:\n  - name: u\n    endpoints: [\"localhost:443\"]\n    tls: {ca: ca.pem}\n");
        ptc_config_t scfg;
        load(&scfg, &server,
             "listeners:\n  - address: 127.0.0.1:2\n    tls: {cert: localhost.pem, key: localhost.key, client_auth: required, "
             "client_ca: ca.pem}\n");
        SSL *c = ptc_tls_client_new(ctxs->upstreams[0], &cfg.upstreams[0], "localhost");
        SSL *s = SSL_new(server->listeners[0]);
        assert_int_equal(handshake(c, s, &reason), with_cert ? 0 : -1);
        assert_int_equal(ptc_tls_client_cert_missing(c), !with_cert);
        if (with_cert)
            assert_true(ptc_tls_alpn_is_h2(c)); /* our listener selects h2 */
        SSL_free(c);
        SSL_free(s);
        ptc_tls_contexts_free(ctxs);
        ptc_tls_contexts_free(server);
        ptc_config_dispose(&cfg);
        ptc_config_dispose(&scfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alpn_and_versions),           cmocka_unit_test(test_sni),
        cmocka_unit_test(test_client_certificates),         cmocka_unit_test(test_upstream_client),
        cmocka_unit_test(test_upstream_client_certificate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
