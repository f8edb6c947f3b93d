/* Shared by the files of src/connect/. */
#ifndef PORTICO_CONNECT_INTERNAL_H
#define PORTICO_CONNECT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence (RFC 3629: no overlongs, surrogates or code points past U+10FFFF)
 * starting at p (avail bytes), or 0 when the bytes there are not one. */
size_t ptc__utf8_seq_len(const uint8_t *p, size_t avail);

#endif
