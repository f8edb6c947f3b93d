/*
 * grpc-timeout: `TimeoutValue TimeoutUnit`, value at most 8 ASCII digits (PROTOCOL-HTTP2.md).
 * Envoy 1.18 fixed a remotely exploitable overflow here; every step below saturates instead.
 */
#include <inttypes.h>
#include <stdio.h>

#include "portico/codec.h"

#define GRPC_TIMEOUT_MAX_VALUE 99999999u

static const struct {
    char unit;
    uint64_t ns;
} units[] = {{'n', 1}, {'u', 1000}, {'m', 1000000}, {'S', 1000000000}, {'M', 60000000000}, {'H', 3600000000000}};

int ptc_grpc_timeout_parse(ptc_iovec_t value, uint64_t *out_ns)
{
    value = ptc_iov_trim(value);
    if (value.len < 2)
        return PTC_EINVAL;

    uint64_t mult = 0;
    for (size_t i = 0; i < PTC_ARRAY_SIZE(units); i++)
        if (value.base[value.len - 1] == units[i].unit)
            mult = units[i].ns;
    if (mult == 0)
        return PTC_EINVAL;

    uint64_t n = 0;
    bool saturated = false;
    for (size_t i = 0; i + 1 < value.len; i++) {
        char c = value.base[i];
        if (c < '0' || c > '9')
            return PTC_EINVAL;
        uint64_t digit = (uint64_t)(c - '0');
        if (n > (UINT64_MAX - digit) / 10)
            saturated = true;
        else
            n = n * 10 + digit;
    }
    if (saturated || n > UINT64_MAX / mult)
        *out_ns = UINT64_MAX;
    else
        *out_ns = n * mult;
    return 0;
}

size_t ptc_grpc_timeout_format(uint64_t ns, char out[PTC_GRPC_TIMEOUT_STRLEN])
{
    uint64_t v = GRPC_TIMEOUT_MAX_VALUE;
    char unit = 'H';
    for (size_t i = 0; i < PTC_ARRAY_SIZE(units); i++) {
        uint64_t q = ns / units[i].ns + (ns % units[i].ns != 0); /* round up: never shorten a deadline */
        if (q <= GRPC_TIMEOUT_MAX_VALUE) {
            v = q;
            unit = units[i].unit;
            break;
        }
    }
    int n = snprintf(out, PTC_GRPC_TIMEOUT_STRLEN, "%" PRIu64 "%c", v, unit);
    return n < 0 ? 0 : (size_t)n;
}
