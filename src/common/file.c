/*
 * Whole-file reads for configuration-sized files (include/portico/file.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "portico/file.h"

/* Reads the whole file (following symlinks) into a malloc'd, NUL-terminated buffer of at most max bytes. */
int ptc_read_file(const char *path, size_t max, char **out, size_t *outlen, char *err, size_t errlen)
{
    int fd, ret;
    struct stat st;
    char *buf = NULL;
    size_t len = 0, cap;

    if (max > SIZE_MAX - 2)
        max = SIZE_MAX - 2;
    /* O_NONBLOCK: a FIFO at the path must not block the caller's event loop in open(); regular files ignore it. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0)
        return ptc_errorf(PTC_EIO, err, errlen, "cannot read %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        ret = ptc_errorf(PTC_EIO, err, errlen, "cannot read %s: %s", path, strerror(errno));
        goto Exit;
    }
    if (!S_ISREG(st.st_mode)) {
        ret = ptc_errorf(PTC_EIO, err, errlen, "cannot read %s: not a regular file", path);
        goto Exit;
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > max)
        goto TooBig;

    /* The size is a hint: an in-place writer may still be at work. Read to EOF, one byte of room beyond the size to see
     * EOF in the first read, and one for the NUL. */
    cap = (size_t)st.st_size + 2;
    if ((buf = malloc(cap)) == NULL) {
        ret = ptc_errorf(PTC_ENOMEM, err, errlen, "cannot read %s: out of memory", path);
        goto Exit;
    }
    for (;;) {
        if (len + 1 == cap) {
            if (len > max)
                goto TooBig;
            size_t ncap = cap > (max + 2) / 2 ? max + 2 : cap * 2;
            char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL) {
                ret = ptc_errorf(PTC_ENOMEM, err, errlen, "cannot read %s: out of memory", path);
                goto Exit;
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            ret = ptc_errorf(PTC_EIO, err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto Exit;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > max)
        goto TooBig;
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
    ret = 0;
    goto Exit;

TooBig:
    ret = ptc_errorf(PTC_ETOOBIG, err, errlen, "cannot read %s: larger than %zu bytes", path, max);
Exit:
    free(buf);
    (void)close(fd); /* read-only: nothing to lose */
    return ret;
}
