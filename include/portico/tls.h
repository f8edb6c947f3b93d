/*
 * TLS (OpenSSL 3 through libevent's bufferevent_openssl): server contexts for TLS listeners (ALPN h2 /
 * http/1.1, certificates chosen by SNI, optional client certificates), client contexts for TLS upstreams
 * (ALPN h2, verification, SNI, optional client certificate), and the accept-side handshake. Loading PEM
 * files is src/common/pem.c (the configuration loader checks files with it too).
 *
 * Contexts are built by the control thread as part of a configuration snapshot (ptc_snapshot_t) and
 * shared by the workers: OpenSSL allows SSL_new() on one SSL_CTX from several threads, and every SSL
 * holds its own reference to its SSL_CTX. A reload builds a new snapshot, hence new contexts (the files
 * are read again); connections already open keep the context they started with.
 */
#ifndef PORTICO_TLS_H
#define PORTICO_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/util.h>

#include "portico/common.h"
#include "portico/config.h"

struct ssl_ctx_st;
struct ssl_st;
struct bufferevent;
typedef struct st_ptc_worker_t ptc_worker_t;

/* The contexts of one configuration; every non-NULL entry holds one SSL_CTX reference. */
typedef struct st_ptc_tls_contexts_t {
    struct ssl_ctx_st **listeners; /* per config listener; NULL = cleartext listener */
    size_t num_listeners;
    struct ssl_ctx_st **upstreams; /* per config upstream; NULL = h2c upstream */
    size_t num_upstreams;
} ptc_tls_contexts_t;

/*
 * Builds the contexts for every TLS listener and upstream of cfg, reading the certificate, key and CA
 * files. Returns 0, or PTC_ECONFIG with "KEY: what is wrong" in err (e.g. `listeners[0].tls.cert: cannot
 * load certificate chain "server.pem": no start line`), or PTC_ENOMEM. *out is set only on success; free it
 * with ptc_tls_contexts_free.
 */
int ptc_tls_contexts_new(ptc_tls_contexts_t **out, const ptc_config_t *cfg, char *err, size_t errlen) PTC_WARN_UNUSED;
/* Another reference-holding copy of the same contexts (one per worker); NULL when out of memory. */
ptc_tls_contexts_t *ptc_tls_contexts_dup(const ptc_tls_contexts_t *src);
/* Releases the references and the struct; NULL is a no-op. */
void ptc_tls_contexts_free(ptc_tls_contexts_t *t);

/*
 * Start-up warnings about the TLS settings of cfg (insecure_skip_verify), logged once by the main thread.
 */
void ptc_tls_log_warnings(const ptc_config_t *cfg);

/*
 * Accepts a connection on a TLS listener: runs the handshake (bounded by timeouts.header_read), then hands
 * the bufferevent to ptc_conn_serve() with the ALPN result. Handshake failures are logged at info with
 * OpenSSL's reason. Takes ownership of fd. While the handshake runs the connection is registered with the
 * worker (it counts against limits.max_connections, and a drain closes it).
 */
void ptc_tls_accept(ptc_worker_t *w, evutil_socket_t fd, const char *peer, unsigned listener, struct ssl_ctx_st *ctx);

/*
 * A client SSL for one connection to an upstream endpoint: SNI and the verified name are tls.server_name,
 * else the authority without its port, else the endpoint host (an IP address is verified as such and
 * sent without SNI). Returns NULL when out of memory.
 */
struct ssl_st *ptc_tls_client_new(struct ssl_ctx_st *ctx, const ptc_upstream_config_t *up, const char *endpoint_host);
/*
 * A client context for HTTPS requests the gateway makes itself (JWKS documents: src/control/fetch.c): the
 * upstream settings (TLS 1.2+, ECDHE with AEAD suites, the same groups), no ALPN, no client certificate;
 * the server's chain is verified against ca_file (PEM) or, when ca_file is NULL, the system store. Returns
 * 0, PTC_ENOMEM, or PTC_ECONFIG with what is wrong in err (`cannot load CA certificates "ca.pem": No such
 * file or directory`, "cannot load the system CA store: ..."). *out holds one reference.
 */
int ptc_tls_client_ctx_new(struct ssl_ctx_st **out, const char *ca_file, char *err, size_t errlen) PTC_WARN_UNUSED;
/*
 * A client SSL on ctx for the server called name: SNI is name unless it is an IP literal (RFC 6066 §3),
 * and with verify_name the certificate must match it (an IP address as such, else a DNS name without
 * partial wildcards). Returns NULL when out of memory.
 */
struct ssl_st *ptc_tls_client_ssl_new(struct ssl_ctx_st *ctx, const char *name, bool verify_name);
/* True when the server asked the client SSL for a certificate and it had none to give (a hint for errors). */
bool ptc_tls_client_cert_missing(const struct ssl_st *ssl);
/* True when ALPN on a finished handshake selected "h2". */
bool ptc_tls_alpn_is_h2(const struct ssl_st *ssl);
/*
 * Why a TLS bufferevent failed: OpenSSL's reason for the first error recorded on bev, with the certificate
 * verification result when that is what failed (e.g. "certificate verify failed: unable to get local
 * issuer certificate"). Writes "" when OpenSSL recorded nothing (a plain socket error or EOF).
 */
void ptc_tls_bev_error(struct bufferevent *bev, char *buf, size_t len);



#endif
