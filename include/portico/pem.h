/*
 * PEM files for TLS: see src/common/pem.c.
 */
#ifndef PORTICO_PEM_H
#define PORTICO_PEM_H

#include <stdbool.h>
#include <stddef.h>

#include "portico/common.h"

struct ssl_ctx_st;

/* A pem_password_cb that refuses: encrypted keys are not prompted for (it would block start-up and reloads). */
int ptc_pem_no_password(char *buf, int size, int rwflag, void *u);
/* OpenSSL's earliest queued error (the cause; later ones are consequences) as text; clears the queue. */
void ptc_openssl_reason(char *buf, size_t len);
/*
 * Loads a certificate chain and its (unencrypted) key into ctx and checks that they match. On failure
 * writes what is wrong into why (naming the file), sets *key_at_fault when the key is the problem, and
 * returns PTC_ECONFIG (or PTC_ENOMEM).
 */
int ptc_pem_load_keypair(struct ssl_ctx_st *ctx, const char *cert, const char *key, bool *key_at_fault, char *why,
                         size_t len) PTC_WARN_UNUSED;
/* Loads CA certificates into ctx's verification store (and, client_ca_list, the CA list a server sends). */
int ptc_pem_load_ca(struct ssl_ctx_st *ctx, const char *file, bool client_ca_list, char *why, size_t len) PTC_WARN_UNUSED;
/*
 * The same checks without a context of the caller's (the configuration loader): 0, or PTC_ECONFIG with what
 * is wrong in why. ptc_pem_check_keypair's *key_at_fault tells which file the message is about.
 */
int ptc_pem_check_keypair(const char *cert, const char *key, bool *key_at_fault, char *why, size_t len) PTC_WARN_UNUSED;
int ptc_pem_check_ca(const char *file, char *why, size_t len) PTC_WARN_UNUSED;

#endif
