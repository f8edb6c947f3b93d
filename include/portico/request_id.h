/*
 * Request ids: checking one a client or a front proxy sent (x-request-id and the like), and making a new one.
 */
#ifndef PORTICO_REQUEST_ID_H
#define PORTICO_REQUEST_ID_H

#include <stdbool.h>
#include <stddef.h>

#include "portico/common.h"

#define PTC_REQUEST_ID_UUID_LEN 36 /* "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" */

/*
 * True when v is 1 to max_len characters of A-Z a-z 0-9 and - _ . : / + =. That covers UUIDs, ULIDs, hex and
 * base64 (standard and URL-safe) ids, and "host:pid/seq" styles, and keeps out everything that could split,
 * quote or confuse a header value or a log line: spaces, control characters, quotes, commas, semicolons,
 * backslashes and non-ASCII bytes. An id that fails is replaced, not repaired.
 */
bool ptc_request_id_valid(ptc_iovec_t v, size_t max_len);

/*
 * Writes a new random UUID (RFC 9562 version 4: 122 random bits from ptc_random_bytes, the version and
 * variant bits set) in canonical lower-case form, NUL-terminated; returns PTC_REQUEST_ID_UUID_LEN.
 */
size_t ptc_request_id_generate(char out[PTC_REQUEST_ID_UUID_LEN + 1]);

#endif
