/*
 * JWT verification: compact JWS tokens (RFC 7515, RFC 7519) against a JWKS (RFC 7517), pure code with no I/O
 * and no event loop, for the JWT filter. Fetching and refreshing the JWKS, and mapping results to responses,
 * are the filter's business.
 *
 * Why OpenSSL 3 EVP and jansson rather than cjose: cjose 0.6 lacks the flexibility we need for PS* and EdDSA,
 * makes its own JSON and crypto choices, and verifies against whichever single JWK the caller hands it, leaving
 * key selection and the binding of algorithm to key type to us anyway. We want that binding explicit: every key
 * here carries the exact set of algorithms it may verify, fixed when the JWKS is parsed from its kty, crv, size
 * and "alg", and a token is checked only against keys whose set holds its "alg" (an HS256 token never meets an
 * RSA key). OpenSSL is linked for TLS already; jansson is a Debian package and rejects duplicate member names on
 * request. Nothing is vendored.
 *
 * Policy, in the order ptc_jwt_verify applies it:
 *  - A token longer than max_token_size is TOO_LARGE before anything else is read.
 *  - Three base64url parts, strictly: the URL-safe alphabet only, no padding, no whitespace, and the unused
 *    low bits of a part's last character zero (one token, one encoding). Anything else is MALFORMED.
 *  - The header is a JSON object without duplicate names; "alg" a string. "none" (in any case), names we do
 *    not support, and algorithms outside allowed_algs are BAD_ALG. A "crit" member is MALFORMED: we understand
 *    no extension (RFC 7515 §4.1.11). "typ" and "cty" are ignored. Keys embedded or referenced by the token
 *    ("jwk", "jku", "x5c", "x5u") are ignored: keys come only from the configured set.
 *  - Key selection. A key is a candidate when it accepts the token's alg. No key in the set accepts it:
 *    BAD_ALG. With a "kid", the candidates are the keys with that exact kid (a key without kid does not
 *    match): none has it, UNKNOWN_KID; some have it but none accepts the alg, BAD_ALG. Without a "kid", every
 *    candidate is tried in set order (what most verifiers do; sets are small, and a JWKS holds at most
 *    PTC_JWKS_MAX_KEYS keys). No candidate verifies: BAD_SIGNATURE.
 *  - Only after the signature holds is the payload decoded; it must be a JSON object without duplicates.
 *  - "exp" is required (MALFORMED without it) unless allow_missing_exp. Valid while now < exp + clock_skew_s
 *    (exactly at exp, with no skew, the token is EXPIRED). "nbf": valid once now + clock_skew_s >= nbf. "iat",
 *    when present, must not be after now + clock_skew_s (NOT_YET_VALID). These must be numbers (MALFORMED
 *    otherwise); fractions round up.
 *  - issuer: "iss" must equal it exactly. audiences: "aud" (a string, or an array of strings) must hold at
 *    least one of them. Unset, the claim is not looked at.
 *
 * Messages written into `why` name claims and state facts ("token expired 30 s ago", "issuer does not
 * match") but never carry the token or a claim's value: they may reach a browser.
 *
 * Threads: a ptc_jwks_t is immutable and may be used by any number of threads at once, as may a ptc_jwt_t.
 * A ptc_jwt_cache_t belongs to one thread.
 */
#ifndef PORTICO_JWT_H
#define PORTICO_JWT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "portico/common.h"

/* Signature algorithms (RFC 7518 §3, RFC 8037 §3.1), as bits for ptc_jwt_params_t.allowed_algs. */
#define PTC_JWT_ALG_MAP(XX)                                                                                                        \
    XX(RS256, 0)                                                                                                                   \
    XX(RS384, 1)                                                                                                                   \
    XX(RS512, 2)                                                                                                                   \
    XX(PS256, 3)                                                                                                                   \
    XX(PS384, 4)                                                                                                                   \
    XX(PS512, 5)                                                                                                                   \
    XX(ES256, 6)                                                                                                                   \
    XX(ES384, 7)                                                                                                                   \
    XX(EdDSA, 8)                                                                                                                   \
    XX(HS256, 9)                                                                                                                   \
    XX(HS384, 10)                                                                                                                  \
    XX(HS512, 11)

enum {
#define XX(name, bit) PTC_JWT_ALG_##name = 1 << (bit),
    PTC_JWT_ALG_MAP(XX)
#undef XX
};
#define PTC_JWT_ALG_ALL 0xfffu
#define PTC_JWT_ALG_RSA                                                                                                            \
    (PTC_JWT_ALG_RS256 | PTC_JWT_ALG_RS384 | PTC_JWT_ALG_RS512 | PTC_JWT_ALG_PS256 | PTC_JWT_ALG_PS384 | PTC_JWT_ALG_PS512)
#define PTC_JWT_ALG_HMAC (PTC_JWT_ALG_HS256 | PTC_JWT_ALG_HS384 | PTC_JWT_ALG_HS512)

/* The bit of an algorithm named as in a JOSE header ("RS256", case-sensitive), or 0 when unsupported. */
uint32_t ptc_jwt_alg_from_name(const char *name);
/* The JOSE name of one PTC_JWT_ALG_* bit, or NULL. */
const char *ptc_jwt_alg_name(uint32_t alg);

/* ---- key sets ---- */

#define PTC_JWKS_MAX_KEYS 100
#define PTC_JWKS_MIN_RSA_BITS 2048
#define PTC_JWKS_MIN_HMAC_BYTES 32 /* RFC 7518 §3.2: at least the hash size; HS384 and HS512 need 48 and 64 */

typedef struct st_ptc_jwks_t ptc_jwks_t; /* an immutable parsed key set, reference-counted */

/*
 * Parses a JWKS ({"keys": [...]}) or a single JWK. Usable keys: RSA (n, e; at least 2048 bits), EC (crv P-256 or
 * P-384, x, y: a point on the curve), OKP (crv Ed25519, x) and oct (k, for HS*; at least 32 bytes). A key is
 * skipped, with a note (ptc_jwks_notes) and counted (ptc_jwks_num_skipped), when its "use" is not "sig", its
 * "key_ops" lacks "verify", its kty or crv is not one of those, a member is missing or malformed (base64url with
 * or without padding is accepted here), or its "alg" does not suit it. A key's "kid" and "alg" are kept: a key
 * with "alg" verifies that algorithm only. Private members ("d", ...) are ignored.
 *
 * Returns 0, PTC_EINVAL when the document is not JSON, not a JWKS or JWK, or holds no usable key (err says why,
 * followed by the notes on the skipped keys), or PTC_ENOMEM (never a key skipped for want of memory).
 */
int ptc_jwks_parse(const char *json, size_t len, ptc_jwks_t **out, char *err, size_t errlen) PTC_WARN_UNUSED;
/* Another reference: the gateway shares one set between configuration snapshots. Thread-safe. */
ptc_jwks_t *ptc_jwks_ref(ptc_jwks_t *k);
/* Drops one reference; the last frees the set. NULL is a no-op. */
void ptc_jwks_free(ptc_jwks_t *k);
/* Usable keys. */
size_t ptc_jwks_size(const ptc_jwks_t *k);
size_t ptc_jwks_num_skipped(const ptc_jwks_t *k);
/* Why keys were skipped, "keys[i]: reason" joined by "; " (at most ~1 KiB, then "..."), or "" (for logs). */
const char *ptc_jwks_notes(const ptc_jwks_t *k);

/* ---- verification ---- */

#define PTC_JWT_RESULT_MAP(XX)                                                                                                     \
    XX(OK, "ok")                                                                                                                   \
    XX(MALFORMED, "malformed token")                                                                                               \
    XX(TOO_LARGE, "token too large")                                                                                               \
    XX(BAD_ALG, "algorithm not accepted") /* none, unsupported, not allowed, or no key for it */                                   \
    XX(UNKNOWN_KID, "unknown key id")                                                                                              \
    XX(BAD_SIGNATURE, "invalid signature")                                                                                         \
    XX(EXPIRED, "token expired")                                                                                                   \
    XX(NOT_YET_VALID, "token not yet valid")                                                                                       \
    XX(BAD_ISSUER, "issuer not accepted")                                                                                          \
    XX(BAD_AUDIENCE, "audience not accepted")                                                                                      \
    XX(INTERNAL_ERROR, "internal error") /* out of memory, no key set: not the token's fault */

typedef enum {
#define XX(name, _) PTC_JWT_##name,
    PTC_JWT_RESULT_MAP(XX)
#undef XX
} ptc_jwt_result_t;

const char *ptc_jwt_result_str(ptc_jwt_result_t r);

#define PTC_JWT_DEFAULT_MAX_TOKEN_SIZE 8192

typedef struct st_ptc_jwt_params_t {
    const ptc_jwks_t *keys;
    const char *issuer;           /* NULL: "iss" is not checked */
    const char *const *audiences; /* one of them must be in "aud"; NULL or none: "aud" is not checked */
    size_t num_audiences;
    uint64_t clock_skew_s;  /* leeway for exp, nbf and iat */
    size_t max_token_size;  /* bytes of the compact token; 0: PTC_JWT_DEFAULT_MAX_TOKEN_SIZE */
    uint32_t allowed_algs;  /* PTC_JWT_ALG_* bits; 0: all supported */
    bool allow_missing_exp; /* accept tokens without "exp" (they never expire; a cache keeps them max_age_s) */
} ptc_jwt_params_t;

typedef struct st_ptc_jwt_t ptc_jwt_t; /* a verified token: header and claims; reference-counted, immutable */

/*
 * Verifies a compact JWS at time now_s (seconds since the epoch) under the policy in the comment at the top.
 * On success returns PTC_JWT_OK and, when out is not NULL, the token in *out (release with ptc_jwt_free). On
 * failure returns why in a result and, when why is not NULL, a short reason fit for a client.
 */
ptc_jwt_result_t ptc_jwt_verify(const ptc_jwt_params_t *p, ptc_iovec_t token, uint64_t now_s, ptc_jwt_t **out, char *why,
                                size_t whylen);
/* Another reference. Thread-safe. */
ptc_jwt_t *ptc_jwt_ref(ptc_jwt_t *t);
/* Drops one reference. NULL is a no-op. */
void ptc_jwt_free(ptc_jwt_t *t);

/*
 * A claim by path: names separated by '.', descending into objects ("realm_access.roles"); a '\' makes the next
 * character literal, so "https://example\.com/tenant" names one top-level claim and "a\\b" the name `a\b`.
 * Strings come out as they are; numbers, true, false and null as JSON text; an array of strings as its
 * elements joined by ','; any other array or object as compact JSON.
 *
 * Like snprintf, writes at most cap - 1 bytes and a NUL into out (nothing when cap is 0), never cutting a UTF-8
 * sequence, and returns the length of the whole value: a return >= cap means the output was truncated. Returns
 * -1 when the claim is absent, PTC_ENOMEM when formatting JSON text needed memory that was not there.
 */
ssize_t ptc_jwt_claim(const ptc_jwt_t *t, const char *path, char *out, size_t cap);
/* The same for the protected header ("kid", "alg", ...). */
ssize_t ptc_jwt_header_param(const ptc_jwt_t *t, const char *path, char *out, size_t cap);
/* The decoded payload exactly as received (a JSON object), for forwarding. */
ptc_iovec_t ptc_jwt_payload_json(const ptc_jwt_t *t);
/* "exp" in seconds (fractions rounded up), 0 when the token has none. */
uint64_t ptc_jwt_expiry(const ptc_jwt_t *t);

/* Signature verifications attempted by this process (one per candidate key), for tests and metrics. */
uint64_t ptc_jwt_signature_checks(void);

/* ---- cache ---- */

/*
 * A bounded cache of verified tokens for one thread: a token verified once costs a hash lookup afterwards, no
 * signature check and no JSON parse. Entries are keyed by the exact token bytes and a params id; an entry
 * serves until the token's exp + clock_skew_s (exactly as long as ptc_jwt_verify would accept it, except that
 * nbf and iat are not looked at again: time only moves forward) and at most max_age_s after it was verified;
 * then the token is verified again. At capacity the least recently used entry is evicted. Only successes are
 * cached. Memory: at most capacity × (max_token_size + the decoded payload and its JSON tree).
 */
typedef struct st_ptc_jwt_cache_t ptc_jwt_cache_t;

typedef struct st_ptc_jwt_cache_stats_t {
    uint64_t hits;        /* answered from the cache */
    uint64_t misses;      /* verified (absent, or dropped as stale just now) */
    uint64_t evictions;   /* dropped to make room */
    uint64_t expirations; /* dropped because exp + skew or max_age_s had passed */
    size_t size;          /* entries now */
} ptc_jwt_cache_stats_t;

/* capacity 0: nothing is cached (every call verifies). max_age_s 0: entries live until exp + skew. Returns 0 or PTC_ENOMEM. */
int ptc_jwt_cache_new(size_t capacity, uint64_t max_age_s, ptc_jwt_cache_t **out) PTC_WARN_UNUSED;
void ptc_jwt_cache_free(ptc_jwt_cache_t *c);
/* Drops every entry (references handed out stay valid). */
void ptc_jwt_cache_clear(ptc_jwt_cache_t *c);
void ptc_jwt_cache_get_stats(const ptc_jwt_cache_t *c, ptc_jwt_cache_stats_t *out);

/*
 * ptc_jwt_verify through the cache. params_id names p: it must differ whenever anything p says differs (keys
 * included) and never be reused for other params; take it from ptc_jwt_params_new_id() when p is built. (A
 * pointer is not enough: freed params' address comes back with other keys.) On success *out, when out is not
 * NULL, is a reference the caller releases with ptc_jwt_free; it stays valid after the entry is evicted.
 */
ptc_jwt_result_t ptc_jwt_cache_verify(ptc_jwt_cache_t *c, const ptc_jwt_params_t *p, uint64_t params_id, ptc_iovec_t token,
                                      uint64_t now_s, ptc_jwt_t **out, char *why, size_t whylen);
/* A process-wide unique params id (never 0). Thread-safe. */
uint64_t ptc_jwt_params_new_id(void);

#endif
