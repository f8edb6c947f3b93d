/*
 * Files the control thread reads whole: the configuration, the admin token.
 */
#ifndef PORTICO_FILE_H
#define PORTICO_FILE_H

#include <stddef.h>

#include "portico/common.h"

/*
 * Reads the whole file at path (following symlinks) into a malloc'd, NUL-terminated buffer (the NUL is not
 * counted in *outlen). A FIFO or other non-regular file is refused without blocking. Returns 0, or PTC_EIO
 * ("cannot read PATH: REASON"), PTC_ETOOBIG (more than max bytes) or PTC_ENOMEM, with the message in err.
 */
int ptc_read_file(const char *path, size_t max, char **out, size_t *outlen, char *err, size_t errlen) PTC_WARN_UNUSED;

#endif
