/*
 * Listening sockets, made by the control thread (start-up and reloads) and handed to the workers: one
 * socket per worker and address, all bound with SO_REUSEPORT so the kernel spreads connections over
 * the workers. Making them before a reload is applied is part of validating it: an address that cannot
 * be bound fails the reload, and nothing changes.
 */
#ifndef PORTICO_LISTENER_H
#define PORTICO_LISTENER_H

#include <stddef.h>

#include "portico/common.h"
#include "portico/config.h"

/*
 * Opens a non-blocking, close-on-exec TCP socket listening on hp (SO_REUSEADDR, SO_REUSEPORT, backlog
 * 1024). Resolves hp->host with getaddrinfo (blocking: the control thread only). Returns 0 or PTC_EIO with
 * "cannot listen on HOST:PORT: REASON" in err.
 */
int ptc_listen_socket(const ptc_hostport_t *hp, int *fd, char *err, size_t errlen) PTC_WARN_UNUSED;

#endif
