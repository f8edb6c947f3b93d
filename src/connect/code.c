/*
 * Connect error codes, their HTTP statuses both ways, and connect-timeout-ms
 * (connectrpc.com/docs/protocol: "Error Codes", "HTTP to Error Code", Timeout-Milliseconds).
 */
#include "portico/codec.h"
#include "portico/connect.h"

/* Indexed by gRPC status: the Connect name and the HTTP status of a unary error. */
static const struct {
    const char *name;
    int http;
} codes[] = {
    {"ok", 200},
    {"canceled", 499},
    {"unknown", 500},
    {"invalid_argument", 400},
    {"deadline_exceeded", 504},
    {"not_found", 404},
    {"already_exists", 409},
    {"permission_denied", 403},
    {"resource_exhausted", 429},
    {"failed_precondition", 400},
    {"aborted", 409},
    {"out_of_range", 400},
    {"unimplemented", 501},
    {"internal", 500},
    {"unavailable", 503},
    {"data_loss", 500},
    {"unauthenticated", 401},
};

const char *ptc_connect_code_name(int grpc_status)
{
    if (grpc_status <= 0 || (size_t)grpc_status >= PTC_ARRAY_SIZE(codes))
        return "unknown"; /* OK is no error; a status from the future is one the client cannot name */
    return codes[grpc_status].name;
}

int ptc_connect_code_parse(ptc_iovec_t name)
{
    for (size_t i = 1; i < PTC_ARRAY_SIZE(codes); i++)
        if (ptc_iov_eq(name, ptc_iov(codes[i].name, strlen(codes[i].name))))
            return (int)i;
    return -1;
}

int ptc_connect_http_status(int grpc_status)
{
    if (grpc_status < 0 || (size_t)grpc_status >= PTC_ARRAY_SIZE(codes))
        return 500;
    return codes[grpc_status].http;
}

int ptc_connect_code_from_http(int http_status)
{
    /* Connect's table is gRPC's (grpc/grpc doc/http-grpc-status-mapping.md): one implementation */
    return ptc_grpc_status_from_http(http_status);
}

int ptc_connect_timeout_parse(ptc_iovec_t value, uint64_t *out_ms)
{
    return ptc_digits_parse(value, 10, out_ms);
}

const char *ptc_connect_request_flags_error(uint8_t flags)
{
    if ((flags & PTC_CONNECT_FLAG_END_STREAM) != 0)
        return "a request envelope has the end-of-stream flag (0x02): only responses end with one";
    if ((flags & ~(PTC_CONNECT_FLAG_COMPRESSED | PTC_CONNECT_FLAG_END_STREAM)) != 0)
        return "a request envelope has reserved flag bits set";
    return NULL;
}
