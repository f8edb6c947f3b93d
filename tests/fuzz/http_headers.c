/*
 * The $httpHeaders URL parameter (src/filter/cors.c; grpc-web's suppressCorsPreflight): whatever is
 * accepted is a set of lower-case token names and values without CR, LF or NUL, none of them a field
 * the parameter may not carry.
 */
#include "fuzz_util.h"
#include "portico/cors.h"
#include "portico/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ptc_http_headers_param_t hp;
    const char *why = NULL;
    if (ptc_http_headers_param_parse(ptc_iov((const char *)data, size), &hp, &why) != 0) {
        FUZZ_CHECK(why != NULL);
        return 0;
    }
    FUZZ_CHECK(hp.num_fields <= PTC_HTTP_HEADERS_MAX_FIELDS);
    for (size_t i = 0; i < hp.num_fields; i++) {
        ptc_iovec_t n = hp.fields[i].name, v = hp.fields[i].value;
        FUZZ_CHECK(ptc_http_token_valid(n));
        for (size_t k = 0; k < n.len; k++)
            FUZZ_CHECK(!(n.base[k] >= 'A' && n.base[k] <= 'Z'));
        for (size_t k = 0; k < v.len; k++)
            FUZZ_CHECK(v.base[k] != '\r' && v.base[k] != '\n' && v.base[k] != '\0');
        FUZZ_CHECK(n.len == 0 || n.base[0] != ':');
    }
    return 0;
}
