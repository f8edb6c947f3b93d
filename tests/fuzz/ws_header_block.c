/*
 * The grpc-websockets header block (src/ws/proto.c): accepted fields have lower-case token names and
 * values without control characters other than HTAB, trimmed.
 */
#include <string.h>

#include "fuzz_util.h"
#include "portico/template.h"
#include "portico/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_cstr(data, size);
    ptc_header_t fields[64];
    size_t n = 0;
    const char *why = NULL;
    int rv = ptc_ws_header_block_parse(buf, size, fields, 64, &n, &why);
    if (rv == 0) {
        FUZZ_CHECK(n <= 64);
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(ptc_http_token_valid(fields[i].name));
            for (size_t k = 0; k < fields[i].name.len; k++)
                FUZZ_CHECK(!(fields[i].name.base[k] >= 'A' && fields[i].name.base[k] <= 'Z'));
            ptc_iovec_t v = fields[i].value;
            for (size_t k = 0; k < v.len; k++)
                FUZZ_CHECK((unsigned char)v.base[k] >= 0x20 ? v.base[k] != 0x7f : v.base[k] == '\t');
            FUZZ_CHECK(v.len == 0 || (v.base[0] != ' ' && v.base[v.len - 1] != ' '));
        }
    } else {
        FUZZ_CHECK(why != NULL);
    }
    free(buf);
    return 0;
}
