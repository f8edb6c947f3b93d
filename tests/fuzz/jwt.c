/*
 * JWT verification (src/filter/jwt.c) against a fixed JWKS with an HMAC and an EC key. The first byte picks
 * the mode: raw (the input is the compact token) or signed (the input is "header JSON \n payload JSON";
 * the target base64url-encodes both and signs them with the HMAC key, so the claim checks behind a valid
 * signature are reached too). Every result has a reason; a verified token's claims can be read.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz_util.h"
#include "portico/codec.h"
#include "portico/jwt.h"

static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"alg\":\"HS256\",\"k\":\"c2VjcmV0LWtleS1mb3ItZnV6emluZy0zMi1ieXRlcyE\"},"
    "{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}";
static const char SECRET[] = "secret-key-for-fuzzing-32-bytes!";

static ptc_jwks_t *keys(void)
{
    static ptc_jwks_t *k;
    char err[256];
    if (k == NULL && ptc_jwks_parse(JWKS, sizeof(JWKS) - 1, &k, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz jwt: JWKS: %s\n", err);
        abort();
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool sign = data[0] & 1, check_iss = data[0] & 2;
    data++;
    size--;
    static const char *const auds[] = {"portico"};
    ptc_jwt_params_t p = {.keys = keys(), .issuer = check_iss ? "https://issuer.test/" : NULL,
                          .audiences = auds, .num_audiences = 1, .clock_skew_s = 30};
    char *token = malloc(size * 2 + 128);
    size_t tlen = 0;
    if (token == NULL)
        abort();
    if (!sign) {
        memcpy(token, data, size);
        tlen = size;
    } else {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t hlen = nl != NULL ? (size_t)(nl - data) : size, plen = nl != NULL ? size - hlen - 1 : 0;
        tlen = ptc_b64url_encode(token, data, hlen);
        token[tlen++] = '.';
        tlen += ptc_b64url_encode(token + tlen, nl != NULL ? nl + 1 : data, plen);
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned maclen = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)token, tlen, mac, &maclen);
        token[tlen++] = '.';
        tlen += ptc_b64url_encode(token + tlen, mac, maclen);
    }
    ptc_jwt_t *t = NULL;
    char why[256] = "";
    ptc_jwt_result_t r = ptc_jwt_verify(&p, ptc_iov(token, tlen), 1700000000, &t, why, sizeof(why));
    if (r == PTC_JWT_OK) {
        FUZZ_CHECK(t != NULL);
        char out[128];
        (void)ptc_jwt_claim(t, "sub", out, sizeof(out));
        (void)ptc_jwt_claim(t, "a.b.c", out, sizeof(out));
        FUZZ_CHECK(ptc_jwt_payload_json(t).len > 0);
        ptc_jwt_free(t);
    } else {
        FUZZ_CHECK(t == NULL && why[0] != '\0');
        FUZZ_CHECK(ptc_jwt_result_str(r) != NULL);
    }
    free(token);
    return 0;
}
