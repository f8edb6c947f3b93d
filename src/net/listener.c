/*
 * Listening sockets for the workers: see include/portico/listener.h.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "portico/listener.h"

#define LISTEN_BACKLOG 1024

int ptc_listen_socket(const ptc_hostport_t *hp, int *out, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[8];
    int rv, fd = -1, one = 1;
    const char *what = "socket";

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_ADDRCONFIG | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", hp->port);
    if ((rv = getaddrinfo(hp->host, port, &hints, &res)) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%u: cannot resolve: %s", hp->host, hp->port, gai_strerror(rv));
        return PTC_EIO;
    }
    if ((fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol)) < 0)
        goto fail;
    what = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        goto fail;
    what = "bind";
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0)
        goto fail;
    what = "listen";
    if (listen(fd, LISTEN_BACKLOG) != 0)
        goto fail;
    freeaddrinfo(res);
    *out = fd;
    return 0;

fail:
    snprintf(err, errlen, "cannot listen on %s%s%s:%u: %s: %s", strchr(hp->host, ':') != NULL ? "[" : "", hp->host,
             strchr(hp->host, ':') != NULL ? "]" : "", hp->port, what, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return PTC_EIO;
}
