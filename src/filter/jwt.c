/*
 * JWT and JWKS verification (policy: include/portico/jwt.h). Notes for maintainers:
 *  - Every key carries key->algs, the algorithms it may verify, fixed at parse time from its kty, crv, size and
 *    "alg". Selection is `key->algs & alg`, so algorithm confusion (an HS256 MAC keyed with an RSA public key's
 *    bytes) never reaches the MAC code: without an oct key there is no candidate.
 *  - No byte of the payload is interpreted before the signature holds; only the header is parsed first.
 *  - OpenSSL leaves errors on the thread's queue after a failed verification or import, and sometimes after one
 *    that recovered; every entry point here leaves the queue empty, because the TLS code of the same worker reads it.
 *  - Running out of memory is PTC_ENOMEM or INTERNAL_ERROR, never a silently skipped key (see "Key import"). A
 *    signature check is the exception: OpenSSL 3.0 fails a verification it could not allocate for like a bad
 *    signature, without always saying ERR_R_MALLOC_FAILURE, so under memory pressure a token may be refused as
 *    BAD_SIGNATURE: wrong, but closed.
 */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "portico/codec.h"
#include "portico/jwt.h"

#define JWKS_NOTES_MAX 1024
#define RSA_MAX_BITS 16384 /* OpenSSL's own limit for public-key operations */

/* ---- algorithms ---- */

typedef enum { SIG_PKCS1, SIG_PSS, SIG_ECDSA, SIG_EDDSA, SIG_HMAC } sig_kind_t;

typedef struct st_alg_info_t {
    const char *name;
    uint32_t bit;
    sig_kind_t kind;
    const char *md; /* digest; NULL for EdDSA */
    size_t size;    /* HMAC: the MAC length; ECDSA: the length of r || s; EdDSA: the signature length */
} alg_info_t;

static const alg_info_t alg_table[] = {
    {"RS256", PTC_JWT_ALG_RS256, SIG_PKCS1, "SHA256", 0},  {"RS384", PTC_JWT_ALG_RS384, SIG_PKCS1, "SHA384", 0},
    {"RS512", PTC_JWT_ALG_RS512, SIG_PKCS1, "SHA512", 0},  {"PS256", PTC_JWT_ALG_PS256, SIG_PSS, "SHA256", 0},
    {"PS384", PTC_JWT_ALG_PS384, SIG_PSS, "SHA384", 0},    {"PS512", PTC_JWT_ALG_PS512, SIG_PSS, "SHA512", 0},
    {"ES256", PTC_JWT_ALG_ES256, SIG_ECDSA, "SHA256", 64}, {"ES384", PTC_JWT_ALG_ES384, SIG_ECDSA, "SHA384", 96},
    {"EdDSA", PTC_JWT_ALG_EdDSA, SIG_EDDSA, NULL, 64},     {"HS256", PTC_JWT_ALG_HS256, SIG_HMAC, "SHA256", 32},
    {"HS384", PTC_JWT_ALG_HS384, SIG_HMAC, "SHA384", 48},  {"HS512", PTC_JWT_ALG_HS512, SIG_HMAC, "SHA512", 64},
};

static const alg_info_t *alg_by_name(const char *name)
{
    for (size_t i = 0; i < PTC_ARRAY_SIZE(alg_table); i++)
        if (strcmp(alg_table[i].name, name) == 0)
            return &alg_table[i];
    return NULL;
}

uint32_t ptc_jwt_alg_from_name(const char *name)
{
    const alg_info_t *a = alg_by_name(name);
    return a != NULL ? a->bit : 0;
}

const char *ptc_jwt_alg_name(uint32_t alg)
{
    for (size_t i = 0; i < PTC_ARRAY_SIZE(alg_table); i++)
        if (alg_table[i].bit == alg)
            return alg_table[i].name;
    return NULL;
}

const char *ptc_jwt_result_str(ptc_jwt_result_t r)
{
    switch (r) {
#define XX(name, text)                                                                                                             \
    case PTC_JWT_##name:                                                                                                           \
        return text;
        PTC_JWT_RESULT_MAP(XX)
#undef XX
    }
    return "unknown result";
}

/* ---- helpers ---- */

/* Whether OpenSSL failed for want of memory; clears its error queue either way. */
static bool ossl_out_of_memory(void)
{
    bool oom = false;
    unsigned long e;
    while ((e = ERR_get_error()) != 0)
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
            oom = true;
    ERR_clear_error(); /* popping leaves each slot's copies of file and function names allocated; this frees them */
    return oom;
}

/*
 * jansson 2.14 reports some allocation failures as syntax errors ("string or '}' expected") and survives others by
 * dropping characters of a string it is reading (its lexer ignores a failed buffer append). So its allocator is
 * wrapped: plain malloc and free, plus a per-thread flag; a load during which an allocation failed is discarded.
 * jansson's allocator is process-wide: nothing else in the gateway uses jansson, and these are malloc's own
 * functions, so objects allocated before they were installed free alike.
 */
static _Thread_local bool json_alloc_failed;
static pthread_once_t json_alloc_once = PTHREAD_ONCE_INIT;

static void *json_alloc(size_t size)
{
    void *p = malloc(size);
    if (p == NULL)
        json_alloc_failed = true;
    return p;
}

static void json_alloc_install(void)
{
    json_set_alloc_funcs(json_alloc, free);
}

/* json_loadb refusing duplicate names; *oom tells a failure for want of memory from bad input. */
static json_t *load_json(const void *data, size_t len, json_error_t *err, bool *oom)
{
    pthread_once(&json_alloc_once, json_alloc_install);
    json_alloc_failed = false;
    json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, err);
    if ((*oom = json_alloc_failed) && j != NULL) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Reference counts of key sets and tokens, which threads share. */
static void ref_acquire(atomic_size_t *refcnt)
{
    atomic_fetch_add_explicit(refcnt, 1, memory_order_relaxed);
}

/* Drops one reference; true when it was the last (the object may then be freed). */
static bool ref_release(atomic_size_t *refcnt)
{
    return atomic_fetch_sub_explicit(refcnt, 1, memory_order_acq_rel) == 1;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Room for the bytes of len base64url characters (exact for valid input). */
static size_t b64url_decoded_len(size_t len)
{
    return len / 4 * 3 + (len % 4 > 1 ? len % 4 - 1 : 0);
}

/*
 * Decodes unpadded base64url (RFC 7515 §2) into dst (b64url_decoded_len(len) bytes). Strict: the URL-safe
 * alphabet only, no length of 4k + 1, and the unused low bits of the last character zero, so that a token
 * has exactly one encoding. Returns the decoded length or -1.
 */
static ssize_t b64url_decode(const char *src, size_t len, unsigned char *dst)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;

    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = ptc_b64_char_value((uint8_t)src[i], PTC_B64_URL);
        if (v < 0)
            return -1;
        acc = ((acc << 6) | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[n++] = (unsigned char)(acc >> bits);
        }
    }
    if ((acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (ssize_t)n;
}

/* ---- key sets ---- */

typedef struct st_jwk_t {
    char *kid;             /* NULL when the JWK has none */
    uint32_t algs;         /* PTC_JWT_ALG_* this key may verify */
    EVP_PKEY *pkey;        /* RSA, EC, OKP */
    unsigned char *secret; /* oct */
    size_t secret_len;
} jwk_t;

struct st_ptc_jwks_t {
    atomic_size_t refcnt;
    jwk_t *keys;
    size_t num_keys;
    size_t num_skipped;
    size_t notes_len;
    char notes[JWKS_NOTES_MAX];
};

static void jwk_dispose(jwk_t *key)
{
    free(key->kid);
    EVP_PKEY_free(key->pkey);
    if (key->secret != NULL) {
        OPENSSL_cleanse(key->secret, key->secret_len);
        free(key->secret);
    }
}

static void add_note(ptc_jwks_t *k, const char *fmt, ...) PTC_PRINTF(2, 3);
static void add_note(ptc_jwks_t *k, const char *fmt, ...)
{
    static const char more[] = "...";
    size_t room = sizeof(k->notes) - sizeof(more);

    if (k->notes_len >= room)
        return;
    if (k->notes_len != 0)
        k->notes_len += (size_t)snprintf(k->notes + k->notes_len, room - k->notes_len, "; ");
    if (k->notes_len < room) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(k->notes + k->notes_len, room - k->notes_len, fmt, ap);
        va_end(ap);
        k->notes_len += n > 0 ? (size_t)n : 0;
    }
    if (k->notes_len >= room) { /* cut: say so */
        memcpy(k->notes + room - 1, more, sizeof(more));
        k->notes_len = sizeof(k->notes);
    }
}

/*
 * A base64url member of a JWK (trailing '=' padding tolerated: keys come from configuration or a provider, not
 * from clients), decoded into a new buffer of *len bytes. Returns 0, PTC_EINVAL (why set) or PTC_ENOMEM.
 */
static int jwk_bytes(const json_t *jwk, const char *name, unsigned char **out, size_t *len, char *why, size_t whylen)
{
    const json_t *v = json_object_get(jwk, name);
    if (v == NULL)
        return ptc_errorf(PTC_EINVAL, why, whylen, "\"%s\" is missing", name);
    if (!json_is_string(v))
        return ptc_errorf(PTC_EINVAL, why, whylen, "\"%s\" is not a string", name);
    const char *s = json_string_value(v);
    size_t slen = json_string_length(v);
    if (slen % 4 == 0) {
        for (int pad = 0; pad < 2 && slen > 0 && s[slen - 1] == '='; pad++)
            slen--;
    }
    unsigned char *buf = malloc(b64url_decoded_len(slen) + 1);
    if (buf == NULL)
        return PTC_ENOMEM;
    ssize_t n = b64url_decode(s, slen, buf);
    if (n <= 0) {
        free(buf);
        return ptc_errorf(PTC_EINVAL, why, whylen, "\"%s\" is empty or not base64url", name);
    }
    *out = buf;
    *len = (size_t)n;
    return 0;
}

/*
 * Key import. OpenSSL 3.0 does not always raise ERR_R_MALLOC_FAILURE when it runs out of memory, so its refusal
 * of a key cannot be told from a failed allocation. Everything that can make a key invalid is therefore checked
 * here first (RSA sizes and parity, EC coordinates on the curve, Ed25519 length); after that, OpenSSL failing to
 * build the key means it ran out of memory, and the parse fails with PTC_ENOMEM rather than skipping the key.
 */
static int ossl_nomem(void)
{
    ERR_clear_error();
    return PTC_ENOMEM;
}

/* Builds the public key of type `type` from params; returns 0 or PTC_ENOMEM. */
static int pkey_fromdata(const char *type, OSSL_PARAM *params, EVP_PKEY **out)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    int ok = ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 && EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : ossl_nomem();
}

static int import_rsa(jwk_t *key, const json_t *jwk, char *why, size_t whylen)
{
    unsigned char *n = NULL, *e = NULL;
    size_t nlen, elen;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    int ret;

    if ((ret = jwk_bytes(jwk, "n", &n, &nlen, why, whylen)) != 0 || (ret = jwk_bytes(jwk, "e", &e, &elen, why, whylen)) != 0)
        goto Exit;
    if ((bn_n = BN_bin2bn(n, (int)PTC_MIN(nlen, (size_t)INT_MAX), NULL)) == NULL ||
        (bn_e = BN_bin2bn(e, (int)PTC_MIN(elen, (size_t)INT_MAX), NULL)) == NULL) {
        ret = ossl_nomem();
        goto Exit;
    }
    int bits = BN_num_bits(bn_n);
    if (bits < PTC_JWKS_MIN_RSA_BITS || bits > RSA_MAX_BITS) {
        ret = ptc_errorf(PTC_EINVAL, why, whylen, "RSA key of %d bits (%d to %d accepted)", bits, PTC_JWKS_MIN_RSA_BITS,
                         RSA_MAX_BITS);
        goto Exit;
    }
    if (!BN_is_odd(bn_n) || !BN_is_odd(bn_e) || BN_is_one(bn_e) || BN_num_bits(bn_e) > 64) {
        ret = ptc_errorf(PTC_EINVAL, why, whylen, "RSA key with an invalid modulus or exponent");
        goto Exit;
    }
    if ((bld = OSSL_PARAM_BLD_new()) == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        ret = ossl_nomem();
        goto Exit;
    }
    if ((ret = pkey_fromdata("RSA", params, &key->pkey)) != 0)
        goto Exit;
    key->algs = PTC_JWT_ALG_RSA;

Exit:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    free(n);
    free(e);
    return ret;
}

/*
 * Whether (x, y), big-endian of `field` bytes each, is a point of the curve: both below p and y² = x³ + ax + b
 * (mod p). A point off the curve would open the way to invalid-curve attacks. Returns 1, 0 or PTC_ENOMEM.
 */
static int ec_on_curve(int nid, const unsigned char *x, const unsigned char *y, size_t field)
{
    EC_GROUP *group = EC_GROUP_new_by_curve_name(nid);
    BN_CTX *ctx = BN_CTX_new();
    int ret = PTC_ENOMEM;

    if (group == NULL || ctx == NULL)
        goto Exit;
    BN_CTX_start(ctx);
    BIGNUM *p = BN_CTX_get(ctx), *a = BN_CTX_get(ctx), *b = BN_CTX_get(ctx), *bx = BN_CTX_get(ctx), *by = BN_CTX_get(ctx),
           *lhs = BN_CTX_get(ctx), *rhs = BN_CTX_get(ctx);
    if (rhs == NULL || EC_GROUP_get_curve(group, p, a, b, ctx) != 1 || BN_bin2bn(x, (int)field, bx) == NULL ||
        BN_bin2bn(y, (int)field, by) == NULL)
        goto End;
    if (BN_cmp(bx, p) >= 0 || BN_cmp(by, p) >= 0) {
        ret = 0;
        goto End;
    }
    if (BN_mod_sqr(lhs, by, p, ctx) != 1 || BN_mod_sqr(rhs, bx, p, ctx) != 1 || BN_mod_add(rhs, rhs, a, p, ctx) != 1 ||
        BN_mod_mul(rhs, rhs, bx, p, ctx) != 1 || BN_mod_add(rhs, rhs, b, p, ctx) != 1)
        goto End;
    ret = BN_cmp(lhs, rhs) == 0;
End:
    BN_CTX_end(ctx);
Exit:
    BN_CTX_free(ctx);
    EC_GROUP_free(group);
    if (ret == PTC_ENOMEM)
        ERR_clear_error();
    return ret;
}

static int import_ec(jwk_t *key, const json_t *jwk, const char *crv, char *why, size_t whylen)
{
    char group[16];
    size_t field;
    uint32_t alg;
    int nid;
    if (strcmp(crv, "P-256") == 0) {
        field = 32;
        alg = PTC_JWT_ALG_ES256;
        nid = NID_X9_62_prime256v1;
    } else if (strcmp(crv, "P-384") == 0) {
        field = 48;
        alg = PTC_JWT_ALG_ES384;
        nid = NID_secp384r1;
    } else {
        return ptc_errorf(PTC_EINVAL, why, whylen, "EC curve \"%s\" is not supported", crv);
    }
    snprintf(group, sizeof(group), "%s", crv);

    unsigned char *x = NULL, *y = NULL, point[1 + 2 * 48];
    size_t xlen, ylen;
    int ret;
    if ((ret = jwk_bytes(jwk, "x", &x, &xlen, why, whylen)) != 0 || (ret = jwk_bytes(jwk, "y", &y, &ylen, why, whylen)) != 0)
        goto Exit;
    if (xlen != field || ylen != field) { /* RFC 7518 §6.2.1.2: the full field size, leading zeros kept */
        ret = ptc_errorf(PTC_EINVAL, why, whylen, "EC coordinates of %zu and %zu bytes (%zu expected)", xlen, ylen, field);
        goto Exit;
    }
    if ((ret = ec_on_curve(nid, x, y, field)) != 1) {
        if (ret == 0)
            ret = ptc_errorf(PTC_EINVAL, why, whylen, "EC point is not on the curve");
        goto Exit;
    }
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, field);
    memcpy(point + 1 + field, y, field);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
                           OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * field),
                           OSSL_PARAM_construct_end()};
    if ((ret = pkey_fromdata("EC", params, &key->pkey)) != 0)
        goto Exit;
    key->algs = alg;

Exit:
    free(x);
    free(y);
    return ret;
}

static int import_okp(jwk_t *key, const json_t *jwk, const char *crv, char *why, size_t whylen)
{
    if (strcmp(crv, "Ed25519") != 0)
        return ptc_errorf(PTC_EINVAL, why, whylen, "OKP curve \"%s\" is not supported", crv);
    unsigned char *x;
    size_t xlen;
    int ret = jwk_bytes(jwk, "x", &x, &xlen, why, whylen);
    if (ret != 0)
        return ret;
    if (xlen != 32) {
        ret = ptc_errorf(PTC_EINVAL, why, whylen, "Ed25519 key of %zu bytes (32 expected)", xlen);
    } else if ((key->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen)) == NULL) {
        ret = ossl_nomem();
    } else {
        key->algs = PTC_JWT_ALG_EdDSA;
    }
    free(x);
    return ret;
}

static int import_oct(jwk_t *key, const json_t *jwk, char *why, size_t whylen)
{
    int ret = jwk_bytes(jwk, "k", &key->secret, &key->secret_len, why, whylen);
    if (ret != 0)
        return ret;
    if (key->secret_len < PTC_JWKS_MIN_HMAC_BYTES)
        return ptc_errorf(PTC_EINVAL, why, whylen, "HMAC key of %zu bytes (at least %d required)", key->secret_len,
                          PTC_JWKS_MIN_HMAC_BYTES);
    for (size_t i = 0; i < PTC_ARRAY_SIZE(alg_table); i++)
        if (alg_table[i].kind == SIG_HMAC && key->secret_len >= alg_table[i].size)
            key->algs |= alg_table[i].bit;
    return 0;
}

/* A string member, or NULL when absent; PTC_EINVAL (why set) when present but not a string. */
static int jwk_string(const json_t *jwk, const char *name, const char **out, char *why, size_t whylen)
{
    const json_t *v = json_object_get(jwk, name);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return ptc_errorf(PTC_EINVAL, why, whylen, "\"%s\" is not a string", name);
    *out = json_string_value(v);
    return 0;
}

/* Imports one JWK into key (zeroed). Returns 0, PTC_EINVAL (the key is skipped; why says why) or PTC_ENOMEM. */
static int import_jwk(jwk_t *key, const json_t *jwk, char *why, size_t whylen)
{
    const char *kty, *crv, *use, *alg, *kid;
    int ret;

    if (!json_is_object(jwk))
        return ptc_errorf(PTC_EINVAL, why, whylen, "not a JSON object");
    if ((ret = jwk_string(jwk, "kty", &kty, why, whylen)) != 0 || (ret = jwk_string(jwk, "crv", &crv, why, whylen)) != 0 ||
        (ret = jwk_string(jwk, "use", &use, why, whylen)) != 0 || (ret = jwk_string(jwk, "alg", &alg, why, whylen)) != 0 ||
        (ret = jwk_string(jwk, "kid", &kid, why, whylen)) != 0)
        return ret;
    if (kty == NULL)
        return ptc_errorf(PTC_EINVAL, why, whylen, "\"kty\" is missing");
    if (use != NULL && strcmp(use, "sig") != 0)
        return ptc_errorf(PTC_EINVAL, why, whylen, "\"use\" is \"%s\", not \"sig\"", use);
    const json_t *ops = json_object_get(jwk, "key_ops");
    if (ops != NULL) {
        bool verify = false;
        for (size_t i = 0; i < json_array_size(ops); i++)
            verify = verify ||
                     (json_is_string(json_array_get(ops, i)) && strcmp(json_string_value(json_array_get(ops, i)), "verify") == 0);
        if (!verify)
            return ptc_errorf(PTC_EINVAL, why, whylen, "\"key_ops\" does not allow \"verify\"");
    }
    if ((strcmp(kty, "EC") == 0 || strcmp(kty, "OKP") == 0) && crv == NULL)
        return ptc_errorf(PTC_EINVAL, why, whylen, "\"crv\" is missing");

    if (strcmp(kty, "RSA") == 0) {
        ret = import_rsa(key, jwk, why, whylen);
    } else if (strcmp(kty, "EC") == 0) {
        ret = import_ec(key, jwk, crv, why, whylen);
    } else if (strcmp(kty, "OKP") == 0) {
        ret = import_okp(key, jwk, crv, why, whylen);
    } else if (strcmp(kty, "oct") == 0) {
        ret = import_oct(key, jwk, why, whylen);
    } else {
        ret = ptc_errorf(PTC_EINVAL, why, whylen, "key type \"%s\" is not supported", kty);
    }
    if (ret == 0 && alg != NULL) {
        const alg_info_t *a = alg_by_name(alg);
        if (a == NULL || (a->bit & key->algs) == 0)
            ret = ptc_errorf(PTC_EINVAL, why, whylen, "\"alg\" \"%s\" does not suit this %s key", alg, kty);
        else
            key->algs = a->bit;
    }
    if (ret == 0 && kid != NULL && (key->kid = strdup(kid)) == NULL)
        ret = PTC_ENOMEM;
    if (ret != 0) {
        jwk_dispose(key);
        memset(key, 0, sizeof(*key));
    }
    return ret;
}

int ptc_jwks_parse(const char *json, size_t len, ptc_jwks_t **out, char *err, size_t errlen)
{
    json_error_t jerr;
    bool oom;
    json_t *root = load_json(json, len, &jerr, &oom);
    ptc_jwks_t *k = NULL;
    const json_t *list = NULL;
    size_t n = 1;
    int ret;

    if (root == NULL) {
        if (oom)
            return ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
        return ptc_errorf(PTC_EINVAL, err, errlen, "JWKS is not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    }
    if (!json_is_object(root)) {
        ret = ptc_errorf(PTC_EINVAL, err, errlen, "JWKS is not a JSON object");
        goto Exit;
    }
    if ((list = json_object_get(root, "keys")) != NULL) {
        if (!json_is_array(list)) {
            ret = ptc_errorf(PTC_EINVAL, err, errlen, "JWKS \"keys\" is not an array");
            goto Exit;
        }
        n = json_array_size(list);
    } else if (json_object_get(root, "kty") == NULL) {
        ret = ptc_errorf(PTC_EINVAL, err, errlen, "neither a JWKS (\"keys\") nor a JWK (\"kty\")");
        goto Exit;
    }
    if ((k = calloc(1, sizeof(*k))) == NULL) {
        ret = ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
        goto Exit;
    }
    atomic_init(&k->refcnt, 1);
    if ((k->keys = calloc(PTC_MAX(PTC_MIN(n, PTC_JWKS_MAX_KEYS), 1), sizeof(*k->keys))) == NULL) {
        ret = ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
        goto Exit;
    }
    for (size_t i = 0; i < n; i++) {
        char why[256];
        if (i >= PTC_JWKS_MAX_KEYS) {
            add_note(k, "keys[%zu..]: more than %d keys", i, PTC_JWKS_MAX_KEYS);
            k->num_skipped += n - i;
            break;
        }
        ret = import_jwk(&k->keys[k->num_keys], list != NULL ? json_array_get(list, i) : root, why, sizeof(why));
        if (ret == PTC_ENOMEM) {
            ptc_errorf(PTC_ENOMEM, err, errlen, "out of memory");
            goto Exit;
        } else if (ret != 0) {
            if (list != NULL)
                add_note(k, "keys[%zu]: %s", i, why);
            else
                add_note(k, "key: %s", why);
            k->num_skipped++;
        } else {
            k->num_keys++;
        }
    }
    if (k->num_keys == 0) {
        ret = ptc_errorf(PTC_EINVAL, err, errlen, "no usable key in the JWKS%s%s%s", k->num_skipped != 0 ? " (" : "", k->notes,
                         k->num_skipped != 0 ? ")" : "");
        goto Exit;
    }
    ret = 0;
    *out = k;
    k = NULL;

Exit:
    ptc_jwks_free(k);
    json_decref(root);
    ERR_clear_error();
    return ret;
}

ptc_jwks_t *ptc_jwks_ref(ptc_jwks_t *k)
{
    ref_acquire(&k->refcnt);
    return k;
}

void ptc_jwks_free(ptc_jwks_t *k)
{
    if (k == NULL || !ref_release(&k->refcnt))
        return;
    if (k->keys != NULL) {
        for (size_t i = 0; i < k->num_keys; i++)
            jwk_dispose(&k->keys[i]);
        free(k->keys);
    }
    free(k);
}

size_t ptc_jwks_size(const ptc_jwks_t *k)
{
    return k->num_keys;
}

size_t ptc_jwks_num_skipped(const ptc_jwks_t *k)
{
    return k->num_skipped;
}

const char *ptc_jwks_notes(const ptc_jwks_t *k)
{
    return k->notes;
}

/* ---- signatures ---- */

static atomic_uint_fast64_t signature_checks;

uint64_t ptc_jwt_signature_checks(void)
{
    return atomic_load_explicit(&signature_checks, memory_order_relaxed);
}

typedef enum { SIG_VALID, SIG_INVALID, SIG_BAD_LENGTH, SIG_ERROR } sig_status_t;

/* Appends a DER INTEGER holding the unsigned big-endian value v[0..len) to der; returns its encoded length. */
static size_t der_integer(unsigned char *der, const unsigned char *v, size_t len)
{
    while (len > 1 && v[0] == 0) {
        v++;
        len--;
    }
    size_t pad = (v[0] & 0x80) != 0;
    der[0] = 0x02;
    der[1] = (unsigned char)(len + pad);
    der[2] = 0;
    memcpy(der + 2 + pad, v, len);
    return 2 + pad + len;
}

/* JWS carries ECDSA signatures as r || s (RFC 7518 §3.4); EVP wants DER. Returns the DER length (at most 104 for P-384). */
static size_t ecdsa_raw_to_der(unsigned char der[2 * (2 + 1 + 48) + 2], const unsigned char *raw, size_t rawlen)
{
    size_t half = rawlen / 2, len = 2;
    len += der_integer(der + len, raw, half);
    len += der_integer(der + len, raw + half, half);
    der[0] = 0x30; /* SEQUENCE; content < 128 bytes, so the short length form */
    der[1] = (unsigned char)(len - 2);
    return len;
}

static sig_status_t check_signature(const jwk_t *key, const alg_info_t *alg, ptc_iovec_t input, const unsigned char *sig,
                                    size_t siglen)
{
    atomic_fetch_add_explicit(&signature_checks, 1, memory_order_relaxed);

    if (alg->kind == SIG_HMAC) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        size_t maclen;
        if (siglen != alg->size)
            return SIG_BAD_LENGTH;
        if (EVP_Q_mac(NULL, "HMAC", NULL, alg->md, NULL, key->secret, key->secret_len, (const unsigned char *)input.base, input.len,
                      mac, sizeof(mac), &maclen) == NULL) {
            ERR_clear_error();
            return SIG_ERROR;
        }
        sig_status_t st = maclen == siglen && CRYPTO_memcmp(mac, sig, siglen) == 0 ? SIG_VALID : SIG_INVALID;
        OPENSSL_cleanse(mac, sizeof(mac));
        return st;
    }

    unsigned char der[2 * (2 + 1 + 48) + 2];
    switch (alg->kind) {
    case SIG_PKCS1:
    case SIG_PSS:
        if (siglen != (size_t)EVP_PKEY_get_size(key->pkey))
            return SIG_BAD_LENGTH;
        break;
    case SIG_ECDSA:
        if (siglen != alg->size)
            return SIG_BAD_LENGTH;
        siglen = ecdsa_raw_to_der(der, sig, siglen);
        sig = der;
        break;
    default:
        if (siglen != alg->size)
            return SIG_BAD_LENGTH;
        break;
    }

    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (ctx == NULL)
        return SIG_ERROR;
    int ok = EVP_DigestVerifyInit_ex(ctx, &pctx, alg->md, NULL, NULL, key->pkey, NULL) == 1 &&
             (alg->kind != SIG_PSS || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                                       /* RFC 7518 §3.5: the salt is as long as the hash; MGF1 uses the same hash */
                                       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1)) &&
             EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)input.base, input.len) == 1;
    EVP_MD_CTX_free(ctx);
    if (ok) {
        if (ERR_peek_error() != 0) /* a failure OpenSSL recovered from */
            ERR_clear_error();
        return SIG_VALID;
    }
    /* OpenSSL fails a bad signature and a failed allocation alike (0 or -1); ERR_R_MALLOC_FAILURE on the queue, when
     * there, tells them apart (see the top of this file). Nothing else makes INTERNAL_ERROR: no client can cause one. */
    return ossl_out_of_memory() ? SIG_ERROR : SIG_INVALID;
}

/* ---- tokens ---- */

struct st_ptc_jwt_t {
    atomic_size_t refcnt;
    json_t *header;
    json_t *claims;
    uint64_t exp;         /* 0: none */
    uint64_t valid_until; /* exp + skew (UINT64_MAX without exp): how long a cache may serve it */
    size_t payload_len;
    char payload[]; /* decoded, NUL-terminated */
};

/* `return FAIL(PTC_JWT_X, "...")` inside ptc_jwt_verify and its helpers, which all have why and whylen. */
#define FAIL(result, ...) ((ptc_jwt_result_t)ptc_errorf((int)(result), why, whylen, __VA_ARGS__))

/* Parses a decoded part as a JSON object without duplicate names. */
static ptc_jwt_result_t parse_object(const char *what, const void *data, size_t len, json_t **out, char *why, size_t whylen)
{
    json_error_t jerr;
    bool oom;
    if ((*out = load_json(data, len, &jerr, &oom)) == NULL)
        return oom ? FAIL(PTC_JWT_INTERNAL_ERROR, "out of memory") : FAIL(PTC_JWT_MALFORMED, "%s is not valid JSON", what);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return FAIL(PTC_JWT_MALFORMED, "%s is not a JSON object", what);
    }
    return PTC_JWT_OK;
}

/* The header's alg (checked against p) and kid (NULL when absent). */
static ptc_jwt_result_t check_header(const ptc_jwt_params_t *p, const json_t *header, const alg_info_t **alg, const char **kid,
                                     char *why, size_t whylen)
{
    const json_t *v = json_object_get(header, "alg");
    if (v == NULL || !json_is_string(v))
        return FAIL(PTC_JWT_MALFORMED, "header has no \"alg\" string");
    if (strcasecmp(json_string_value(v), "none") == 0)
        return FAIL(PTC_JWT_BAD_ALG, "unsecured tokens (alg none) are refused");
    if ((*alg = alg_by_name(json_string_value(v))) == NULL)
        return FAIL(PTC_JWT_BAD_ALG, "alg is not supported");
    if (p->allowed_algs != 0 && ((*alg)->bit & p->allowed_algs) == 0)
        return FAIL(PTC_JWT_BAD_ALG, "alg %s is not allowed", (*alg)->name);
    if (json_object_get(header, "crit") != NULL)
        return FAIL(PTC_JWT_MALFORMED, "header has \"crit\" extensions, none of which is understood");
    *kid = NULL;
    if ((v = json_object_get(header, "kid")) != NULL) {
        if (!json_is_string(v))
            return FAIL(PTC_JWT_MALFORMED, "header \"kid\" is not a string");
        *kid = json_string_value(v);
    }
    return PTC_JWT_OK;
}

static ptc_jwt_result_t verify_signature(const ptc_jwks_t *keys, const alg_info_t *alg, const char *kid, ptc_iovec_t input,
                                         const unsigned char *sig, size_t siglen, char *why, size_t whylen)
{
    size_t accepting = 0, named = 0, tried = 0, bad_length = 0;

    for (size_t i = 0; i < keys->num_keys; i++) {
        const jwk_t *key = &keys->keys[i];
        bool accepts = (key->algs & alg->bit) != 0, has_kid = kid != NULL && key->kid != NULL && strcmp(key->kid, kid) == 0;
        accepting += accepts;
        named += has_kid;
        if (!accepts || (kid != NULL && !has_kid))
            continue;
        tried++;
        switch (check_signature(key, alg, input, sig, siglen)) {
        case SIG_VALID:
            return PTC_JWT_OK;
        case SIG_BAD_LENGTH:
            bad_length++;
            break;
        case SIG_ERROR:
            return FAIL(PTC_JWT_INTERNAL_ERROR, "signature check failed inside OpenSSL");
        case SIG_INVALID:
            break;
        }
    }
    if (accepting == 0)
        return FAIL(PTC_JWT_BAD_ALG, "no key accepts alg %s", alg->name);
    if (kid != NULL && named == 0)
        return FAIL(PTC_JWT_UNKNOWN_KID, "no key has the token's kid");
    if (tried == 0)
        return FAIL(PTC_JWT_BAD_ALG, "the key named by kid does not accept alg %s", alg->name);
    if (bad_length == tried)
        return FAIL(PTC_JWT_BAD_SIGNATURE, "signature has the wrong length for alg %s", alg->name);
    return FAIL(PTC_JWT_BAD_SIGNATURE, "signature does not match");
}

/* A NumericDate claim as whole seconds, fractions rounded up (see the header), clamped to [0, UINT64_MAX]. */
static uint64_t numeric_date(const json_t *v)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        return i < 0 ? 0 : (uint64_t)i;
    }
    double d = ceil(json_real_value(v));
    if (d <= 0)
        return 0;
    if (d >= 18446744073709551615.0)
        return UINT64_MAX;
    return (uint64_t)d;
}

/* A NumericDate claim: 1 and *out when present, 0 when absent, -1 when not a number. */
static int date_claim(const json_t *claims, const char *name, uint64_t *out)
{
    const json_t *v = json_object_get(claims, name);
    if (v == NULL)
        return 0;
    if (!json_is_number(v))
        return -1;
    *out = numeric_date(v);
    return 1;
}

static ptc_jwt_result_t check_audience(const ptc_jwt_params_t *p, const json_t *aud, char *why, size_t whylen)
{
    if (aud == NULL)
        return FAIL(PTC_JWT_BAD_AUDIENCE, "token has no aud claim");
    if (!json_is_string(aud) && !json_is_array(aud))
        return FAIL(PTC_JWT_BAD_AUDIENCE, "aud claim is neither a string nor an array");
    size_t n = json_is_array(aud) ? json_array_size(aud) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_is_array(aud) ? json_array_get(aud, i) : aud;
        if (!json_is_string(v))
            continue;
        for (size_t j = 0; j < p->num_audiences; j++)
            if (strcmp(json_string_value(v), p->audiences[j]) == 0)
                return PTC_JWT_OK;
    }
    return FAIL(PTC_JWT_BAD_AUDIENCE, "audience does not match");
}

static ptc_jwt_result_t check_claims(const ptc_jwt_params_t *p, ptc_jwt_t *t, uint64_t now, char *why, size_t whylen)
{
    uint64_t exp = 0, nbf = 0, iat = 0, later = add_sat(now, p->clock_skew_s);
    int has;

    if ((has = date_claim(t->claims, "exp", &exp)) < 0)
        return FAIL(PTC_JWT_MALFORMED, "exp claim is not a number");
    if (has) {
        t->exp = exp;
        t->valid_until = add_sat(exp, p->clock_skew_s);
        if (now >= t->valid_until)
            return FAIL(PTC_JWT_EXPIRED, "token expired %" PRIu64 " s ago", now - exp);
    } else if (!p->allow_missing_exp) {
        return FAIL(PTC_JWT_MALFORMED, "token has no exp claim");
    } else {
        t->valid_until = UINT64_MAX;
    }
    if ((has = date_claim(t->claims, "nbf", &nbf)) < 0)
        return FAIL(PTC_JWT_MALFORMED, "nbf claim is not a number");
    if (has && later < nbf)
        return FAIL(PTC_JWT_NOT_YET_VALID, "token not valid for another %" PRIu64 " s", nbf - now);
    if ((has = date_claim(t->claims, "iat", &iat)) < 0)
        return FAIL(PTC_JWT_MALFORMED, "iat claim is not a number");
    if (has && iat > later)
        return FAIL(PTC_JWT_NOT_YET_VALID, "token issued %" PRIu64 " s in the future", iat - now);

    if (p->issuer != NULL) {
        const json_t *iss = json_object_get(t->claims, "iss");
        if (iss == NULL)
            return FAIL(PTC_JWT_BAD_ISSUER, "token has no iss claim");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), p->issuer) != 0)
            return FAIL(PTC_JWT_BAD_ISSUER, "issuer does not match");
    }
    if (p->audiences != NULL && p->num_audiences != 0)
        return check_audience(p, json_object_get(t->claims, "aud"), why, whylen);
    return PTC_JWT_OK;
}

ptc_jwt_result_t ptc_jwt_verify(const ptc_jwt_params_t *p, ptc_iovec_t token, uint64_t now_s, ptc_jwt_t **out, char *why,
                                size_t whylen)
{
    size_t max = p->max_token_size != 0 ? p->max_token_size : PTC_JWT_DEFAULT_MAX_TOKEN_SIZE;
    unsigned char *scratch = NULL;
    json_t *header = NULL;
    ptc_jwt_t *t = NULL;
    const alg_info_t *alg = NULL;
    const char *kid;
    ptc_jwt_result_t res;

    if (out != NULL)
        *out = NULL;
    if (why != NULL && whylen != 0)
        why[0] = '\0';
    if (p->keys == NULL)
        return FAIL(PTC_JWT_INTERNAL_ERROR, "no key set");
    if (token.len > max)
        return FAIL(PTC_JWT_TOO_LARGE, "token of %zu bytes exceeds the limit of %zu", token.len, max);

    /* header.payload.signature; the signature covers the first two parts as they are written */
    const char *end = token.base + token.len, *dot1, *dot2;
    if (token.len == 0 || (dot1 = memchr(token.base, '.', token.len)) == NULL ||
        (dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1))) == NULL || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) != NULL)
        return FAIL(PTC_JWT_MALFORMED, "not a compact JWS (three dot-separated parts)");
    ptc_iovec_t hpart = ptc_iov(token.base, (size_t)(dot1 - token.base)), ppart = ptc_iov(dot1 + 1, (size_t)(dot2 - dot1 - 1)),
                spart = ptc_iov(dot2 + 1, (size_t)(end - dot2 - 1)), input = ptc_iov(token.base, (size_t)(dot2 - token.base));

    size_t hmax = b64url_decoded_len(hpart.len), smax = b64url_decoded_len(spart.len);
    if ((scratch = malloc(hmax + smax + 1)) == NULL) {
        res = FAIL(PTC_JWT_INTERNAL_ERROR, "out of memory");
        goto Exit;
    }
    unsigned char *hbytes = scratch, *sig = scratch + hmax;
    ssize_t hlen = b64url_decode(hpart.base, hpart.len, hbytes), siglen;
    if (hlen < 0) {
        res = FAIL(PTC_JWT_MALFORMED, "header is not base64url");
        goto Exit;
    }
    if ((res = parse_object("header", hbytes, (size_t)hlen, &header, why, whylen)) != PTC_JWT_OK ||
        (res = check_header(p, header, &alg, &kid, why, whylen)) != PTC_JWT_OK)
        goto Exit;
    if ((siglen = b64url_decode(spart.base, spart.len, sig)) < 0) {
        res = FAIL(PTC_JWT_MALFORMED, "signature is not base64url");
        goto Exit;
    }
    /* the payload must be base64url too, but is not decoded before the signature holds */
    bool payload_ok = ppart.len % 4 != 1;
    for (size_t i = 0; i < ppart.len && payload_ok; i++)
        payload_ok = ptc_b64_char_value((uint8_t)ppart.base[i], PTC_B64_URL) >= 0;
    if (!payload_ok) {
        res = FAIL(PTC_JWT_MALFORMED, "payload is not base64url");
        goto Exit;
    }
    if ((res = verify_signature(p->keys, alg, kid, input, sig, (size_t)siglen, why, whylen)) != PTC_JWT_OK)
        goto Exit;

    size_t pmax = b64url_decoded_len(ppart.len);
    if ((t = calloc(1, offsetof(ptc_jwt_t, payload) + pmax + 1)) == NULL) {
        res = FAIL(PTC_JWT_INTERNAL_ERROR, "out of memory");
        goto Exit;
    }
    atomic_init(&t->refcnt, 1);
    ssize_t plen = b64url_decode(ppart.base, ppart.len, (unsigned char *)t->payload);
    if (plen < 0) {
        res = FAIL(PTC_JWT_MALFORMED, "payload is not base64url");
        goto Exit;
    }
    t->payload_len = (size_t)plen;
    t->payload[plen] = '\0';
    if ((res = parse_object("payload", t->payload, t->payload_len, &t->claims, why, whylen)) != PTC_JWT_OK ||
        (res = check_claims(p, t, now_s, why, whylen)) != PTC_JWT_OK)
        goto Exit;
    t->header = header;
    header = NULL;
    if (out != NULL) {
        *out = t;
        t = NULL;
    }

Exit:
    ptc_jwt_free(t);
    json_decref(header);
    free(scratch);
    return res;
}

#undef FAIL

ptc_jwt_t *ptc_jwt_ref(ptc_jwt_t *t)
{
    ref_acquire(&t->refcnt);
    return t;
}

void ptc_jwt_free(ptc_jwt_t *t)
{
    if (t == NULL || !ref_release(&t->refcnt))
        return;
    json_decref(t->header);
    json_decref(t->claims);
    free(t);
}

ptc_iovec_t ptc_jwt_payload_json(const ptc_jwt_t *t)
{
    return ptc_iov(t->payload, t->payload_len);
}

uint64_t ptc_jwt_expiry(const ptc_jwt_t *t)
{
    return t->exp;
}

/* ---- claims by path ---- */

/* Whether key[0..keylen) is the name written (with '\' escapes) as seg[0..seglen). */
static bool escaped_name_eq(const char *seg, size_t seglen, const char *key, size_t keylen)
{
    size_t i = 0, j = 0;
    for (; i < seglen; i++, j++) {
        if (seg[i] == '\\' && i + 1 < seglen)
            i++;
        if (j == keylen || key[j] != seg[i])
            return false;
    }
    return j == keylen;
}

/* The value at path (see ptc_jwt_claim) below root, or NULL. */
static json_t *lookup_path(json_t *root, const char *path)
{
    json_t *cur = root;
    const char *p = path;

    for (;;) {
        const char *seg = p;
        bool escaped = false;
        while (*p != '\0' && *p != '.') {
            if (*p == '\\' && p[1] != '\0') {
                escaped = true;
                p++;
            }
            p++;
        }
        size_t seglen = (size_t)(p - seg);
        if (!json_is_object(cur))
            return NULL;
        if (!escaped) {
            cur = json_object_getn(cur, seg, seglen);
        } else {
            const char *key;
            size_t keylen;
            json_t *v, *found = NULL;
            json_object_keylen_foreach(cur, key, keylen, v)
            {
                if (escaped_name_eq(seg, seglen, key, keylen)) {
                    found = v;
                    break;
                }
            }
            cur = found;
        }
        if (cur == NULL || *p == '\0')
            return cur;
        p++; /* the '.' */
    }
}

/* Collects output for ptc_jwt_claim: stores what fits in out, counts everything. */
typedef struct st_sink_t {
    char *out;
    size_t cap;        /* bytes of out, the NUL included */
    size_t len;        /* bytes of the whole value, stored or not */
    unsigned char cut; /* the first byte that did not fit */
} sink_t;

static void sink_put(sink_t *s, const char *src, size_t n)
{
    size_t limit = s->cap > 0 ? s->cap - 1 : 0;
    if (s->len < limit)
        memcpy(s->out + s->len, src, PTC_MIN(n, limit - s->len));
    if (s->len <= limit && s->len + n > limit)
        s->cut = (unsigned char)src[limit - s->len];
    s->len += n;
}

static int sink_dump_cb(const char *buffer, size_t size, void *data)
{
    sink_put(data, buffer, size);
    return 0;
}

/* NUL-terminates the output, backing off to the start of a UTF-8 sequence cut in two. */
static ssize_t sink_finish(sink_t *s)
{
    if (s->cap == 0)
        return (ssize_t)s->len;
    size_t n = s->len;
    if (n >= s->cap) {
        unsigned char c = s->cut;
        for (n = s->cap - 1; n > 0 && (c & 0xc0) == 0x80; c = (unsigned char)s->out[n])
            n--;
    }
    s->out[n] = '\0';
    return (ssize_t)s->len;
}

static ssize_t format_value(json_t *root, const char *path, char *out, size_t cap)
{
    json_t *v = lookup_path(root, path);
    sink_t sink = {out, cap, 0, 0};

    if (v == NULL)
        return -1;
    if (json_is_string(v)) {
        sink_put(&sink, json_string_value(v), json_string_length(v));
        return sink_finish(&sink);
    }
    if (json_is_array(v)) {
        bool strings = true;
        for (size_t i = 0; i < json_array_size(v) && strings; i++)
            strings = json_is_string(json_array_get(v, i));
        if (strings) {
            for (size_t i = 0; i < json_array_size(v); i++) {
                if (i != 0)
                    sink_put(&sink, ",", 1);
                sink_put(&sink, json_string_value(json_array_get(v, i)), json_string_length(json_array_get(v, i)));
            }
            return sink_finish(&sink);
        }
    }
    if (json_dump_callback(v, sink_dump_cb, &sink, JSON_ENCODE_ANY | JSON_COMPACT) != 0) {
        if (cap != 0)
            out[0] = '\0';
        return PTC_ENOMEM;
    }
    return sink_finish(&sink);
}

ssize_t ptc_jwt_claim(const ptc_jwt_t *t, const char *path, char *out, size_t cap)
{
    return format_value(t->claims, path, out, cap);
}

ssize_t ptc_jwt_header_param(const ptc_jwt_t *t, const char *path, char *out, size_t cap)
{
    return format_value(t->header, path, out, cap);
}

/* ---- cache ---- */

/* LRU list links: first in an entry, so a link is its entry; the cache's sentinel is a bare link */
typedef struct st_lru_link_t {
    struct st_lru_link_t *prev, *next; /* most recently used first */
} lru_link_t;

typedef struct st_cache_entry_t {
    lru_link_t lru;                 /* first */
    struct st_cache_entry_t *hnext; /* bucket chain */
    uint64_t hash;
    uint64_t params_id;
    uint64_t deadline; /* served while now < deadline */
    ptc_jwt_t *jwt;    /* one reference */
    size_t token_len;
    char token[];
} cache_entry_t;

struct st_ptc_jwt_cache_t {
    cache_entry_t **buckets; /* power of two, >= capacity */
    size_t mask;
    size_t capacity;
    uint64_t max_age_s;
    uint64_t seed;     /* random: chains do not depend on what clients send */
    lru_link_t lru; /* sentinel: lru.next the most recent, lru.prev the least */
    ptc_jwt_cache_stats_t stats;
};

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

static uint64_t hash_token(uint64_t seed, uint64_t params_id, ptc_iovec_t token)
{
    uint64_t h = mix64(seed ^ params_id) ^ token.len, w;
    size_t i = 0;
    for (; i + 8 <= token.len; i += 8) {
        memcpy(&w, token.base + i, 8);
        h = mix64(h ^ w);
    }
    w = 0;
    if (token.len > i)
        memcpy(&w, token.base + i, token.len - i);
    return mix64(h ^ w ^ ((uint64_t)(token.len - i) << 56));
}

int ptc_jwt_cache_new(size_t capacity, uint64_t max_age_s, ptc_jwt_cache_t **out)
{
    ptc_jwt_cache_t *c = calloc(1, sizeof(*c));
    size_t nbuckets = 1;

    if (c == NULL)
        return PTC_ENOMEM;
    while (nbuckets < capacity && nbuckets < (SIZE_MAX >> 1) / sizeof(*c->buckets))
        nbuckets <<= 1;
    if ((c->buckets = calloc(nbuckets, sizeof(*c->buckets))) == NULL) {
        free(c);
        return PTC_ENOMEM;
    }
    c->mask = nbuckets - 1;
    c->capacity = capacity;
    c->max_age_s = max_age_s;
    if (RAND_bytes((unsigned char *)&c->seed, sizeof(c->seed)) != 1) {
        ERR_clear_error();
        c->seed = (uint64_t)(uintptr_t)c ^ ptc_now_ms(); /* weaker, but the cache still works */
    }
    c->lru.next = c->lru.prev = &c->lru;
    *out = c;
    return 0;
}

static void lru_unlink(cache_entry_t *e)
{
    e->lru.prev->next = e->lru.next;
    e->lru.next->prev = e->lru.prev;
}

static void lru_push_front(ptc_jwt_cache_t *c, cache_entry_t *e)
{
    e->lru.prev = &c->lru;
    e->lru.next = c->lru.next;
    e->lru.next->prev = &e->lru;
    c->lru.next = &e->lru;
}

static void cache_remove(ptc_jwt_cache_t *c, cache_entry_t *e)
{
    cache_entry_t **slot = &c->buckets[e->hash & c->mask];
    while (*slot != e)
        slot = &(*slot)->hnext;
    *slot = e->hnext;
    lru_unlink(e);
    ptc_jwt_free(e->jwt);
    free(e);
    c->stats.size--;
}

void ptc_jwt_cache_clear(ptc_jwt_cache_t *c)
{
    while (c->lru.next != &c->lru)
        cache_remove(c, (cache_entry_t *)(void *)c->lru.next);
}

void ptc_jwt_cache_free(ptc_jwt_cache_t *c)
{
    if (c == NULL)
        return;
    ptc_jwt_cache_clear(c);
    free(c->buckets);
    free(c);
}

void ptc_jwt_cache_get_stats(const ptc_jwt_cache_t *c, ptc_jwt_cache_stats_t *out)
{
    *out = c->stats;
}

static void cache_insert(ptc_jwt_cache_t *c, uint64_t hash, uint64_t params_id, ptc_iovec_t token, uint64_t now, ptc_jwt_t *t)
{
    uint64_t deadline = t->valid_until;
    if (c->max_age_s != 0)
        deadline = PTC_MIN(deadline, add_sat(now, c->max_age_s));
    if (deadline <= now)
        return;
    cache_entry_t *e = malloc(offsetof(cache_entry_t, token) + token.len);
    if (e == NULL)
        return; /* not cached: the next request verifies again */
    if (c->stats.size >= c->capacity) {
        cache_remove(c, (cache_entry_t *)(void *)c->lru.prev);
        c->stats.evictions++;
    }
    e->hash = hash;
    e->params_id = params_id;
    e->deadline = deadline;
    e->jwt = ptc_jwt_ref(t);
    e->token_len = token.len;
    memcpy(e->token, token.base, token.len);
    e->hnext = c->buckets[hash & c->mask];
    c->buckets[hash & c->mask] = e;
    lru_push_front(c, e);
    c->stats.size++;
}

ptc_jwt_result_t ptc_jwt_cache_verify(ptc_jwt_cache_t *c, const ptc_jwt_params_t *p, uint64_t params_id, ptc_iovec_t token,
                                      uint64_t now_s, ptc_jwt_t **out, char *why, size_t whylen)
{
    uint64_t hash = hash_token(c->seed, params_id, token);

    for (cache_entry_t *e = c->buckets[hash & c->mask]; e != NULL; e = e->hnext) {
        if (e->hash != hash || e->params_id != params_id || e->token_len != token.len ||
            memcmp(e->token, token.base, token.len) != 0)
            continue;
        if (now_s >= e->deadline) {
            cache_remove(c, e);
            c->stats.expirations++;
            break;
        }
        lru_unlink(e);
        lru_push_front(c, e);
        c->stats.hits++;
        if (why != NULL && whylen != 0)
            why[0] = '\0';
        if (out != NULL)
            *out = ptc_jwt_ref(e->jwt);
        return PTC_JWT_OK;
    }

    c->stats.misses++;
    ptc_jwt_t *t;
    ptc_jwt_result_t res = ptc_jwt_verify(p, token, now_s, &t, why, whylen);
    if (out != NULL)
        *out = NULL;
    if (res != PTC_JWT_OK)
        return res;
    if (c->capacity != 0)
        cache_insert(c, hash, params_id, token, now_s, t);
    if (out != NULL)
        *out = t;
    else
        ptc_jwt_free(t);
    return PTC_JWT_OK;
}

uint64_t ptc_jwt_params_new_id(void)
{
    static atomic_uint_fast64_t last;
    return atomic_fetch_add_explicit(&last, 1, memory_order_relaxed) + 1;
}
