/* JWKS documents (src/filter/jwt.c ptc_jwks_parse): a set that parses has at most PTC_JWKS_MAX_KEYS keys. */
#include "fuzz_util.h"
#include "portico/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ptc_jwks_t *k = NULL;
    char err[256] = "";
    if (ptc_jwks_parse((const char *)data, size, &k, err, sizeof(err)) != 0) {
        FUZZ_CHECK(k == NULL && err[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(ptc_jwks_size(k) <= PTC_JWKS_MAX_KEYS);
    (void)ptc_jwks_notes(k);
    ptc_jwks_free(k);
    return 0;
}
