/*
 * PEM files: certificate chains, private keys and CA certificates loaded into OpenSSL contexts, with
 * reasons a person can act on. Shared by the configuration loader (which checks the files when it
 * loads a configuration) and src/net/tls.c (which builds the contexts); neither reaches into the other.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "portico/pem.h"

/* Takes OpenSSL's earliest queued error (the cause; later ones are consequences) and clears the queue. */
void ptc_openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    if (e != 0 && ERR_SYSTEM_ERROR(e)) /* e.g. fopen failed: errno */
        snprintf(buf, len, "%s", strerror(ERR_GET_REASON(e)));
    else if (reason != NULL)
        snprintf(buf, len, "%s", reason);
    else if (e != 0)
        snprintf(buf, len, "OpenSSL error %lx", e);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
}

/* Encrypted keys are refused rather than prompted for (that would block start-up and reloads). */
int ptc_pem_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* A better reason than OpenSSL's for a key file that would not load, from what the file holds. */
static const char *key_file_problem(const char *file)
{
    char head[8192];
    size_t n = 0;
    FILE *fp = fopen(file, "r");
    if (fp == NULL)
        return NULL;
    n = fread(head, 1, sizeof(head) - 1, fp);
    fclose(fp);
    head[n] = '\0';
    if (strstr(head, "ENCRYPTED") != NULL)
        return "encrypted private keys are not supported (decrypt it, e.g. openssl pkey -in KEY -out KEY.plain)";
    if (strstr(head, "PRIVATE KEY-----") == NULL)
        return "no PEM private key in the file";
    return NULL;
}

/*
 * Loads a certificate chain and its key into ctx. On failure writes what is wrong into why, sets
 * *key_at_fault, and returns PTC_ECONFIG (or PTC_ENOMEM).
 */
int ptc_pem_load_keypair(SSL_CTX *ctx, const char *cert, const char *key, bool *key_at_fault, char *why, size_t len)
{
    char reason[256];
    EVP_PKEY *pkey = NULL;
    BIO *bio;

    ERR_clear_error();
    *key_at_fault = false;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ptc_openssl_reason(reason, sizeof(reason));
        snprintf(why, len, "cannot load certificate chain \"%s\": %s", cert, reason);
        return PTC_ECONFIG;
    }
    *key_at_fault = true;
    if ((bio = BIO_new_file(key, "r")) != NULL) {
        pkey = PEM_read_bio_PrivateKey(bio, NULL, ptc_pem_no_password, NULL);
        BIO_free(bio);
    }
    if (pkey == NULL) {
        const char *problem = key_file_problem(key);
        ptc_openssl_reason(reason, sizeof(reason));
        snprintf(why, len, "cannot load private key \"%s\": %s", key, problem != NULL ? problem : reason);
        return PTC_ECONFIG;
    }
    int ok = SSL_CTX_use_PrivateKey(ctx, pkey) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(pkey);
    if (!ok) {
        ptc_openssl_reason(reason, sizeof(reason));
        snprintf(why, len, "private key \"%s\" does not match the certificate in \"%s\" (%s)", key, cert, reason);
        return PTC_ECONFIG;
    }
    return 0;
}

/* Loads CA certificates into ctx's verification store (and, for servers, the list of acceptable CAs sent
 * to clients). */
int ptc_pem_load_ca(SSL_CTX *ctx, const char *file, bool client_ca_list, char *why, size_t len)
{
    char reason[256];

    ERR_clear_error();
    if (SSL_CTX_load_verify_file(ctx, file) != 1) {
        ptc_openssl_reason(reason, sizeof(reason));
        snprintf(why, len, "cannot load CA certificates \"%s\": %s", file, reason);
        return PTC_ECONFIG;
    }
    if (client_ca_list) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(file);
        if (names == NULL) {
            ptc_openssl_reason(reason, sizeof(reason));
            snprintf(why, len, "cannot load CA certificates \"%s\": %s", file, reason);
            return PTC_ECONFIG;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    return 0;
}

int ptc_pem_check_keypair(const char *cert, const char *key, bool *key_at_fault, char *why, size_t len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    *key_at_fault = false;
    if (ctx == NULL) {
        snprintf(why, len, "out of memory");
        return PTC_ENOMEM;
    }
    int ret = ptc_pem_load_keypair(ctx, cert, key, key_at_fault, why, len);
    SSL_CTX_free(ctx);
    return ret;
}

int ptc_pem_check_ca(const char *file, char *why, size_t len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        snprintf(why, len, "out of memory");
        return PTC_ENOMEM;
    }
    int ret = ptc_pem_load_ca(ctx, file, false, why, len);
    SSL_CTX_free(ctx);
    return ret;
}

