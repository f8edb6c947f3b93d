/*
 * The control thread: the process's main thread once the workers run. It owns the configuration as the
 * operator gave it (the file, plus command-line overrides), builds snapshots from it, binds listening
 * sockets, hands both to the workers, and listens for what asks for a change: SIGHUP, the config file
 * changing on disk, the admin API. Nothing it does blocks a worker: reloads are built here, off the
 * workers' loops, and handed over whole.
 */
#ifndef PORTICO_CONTROL_H
#define PORTICO_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include "portico/common.h"
#include "portico/config.h"

#define PTC_MAX_FLAG_ADDRS 64
#define PTC_MAX_FLAG_ORIGINS 64

/* Command-line settings, applied over every configuration loaded from the file (at start-up and reload). */
typedef struct st_ptc_overrides_t {
    ptc_hostport_t listen[PTC_MAX_FLAG_ADDRS]; /* --listen: replaces the listeners */
    size_t num_listen;
    ptc_hostport_t upstream[PTC_MAX_FLAG_ADDRS]; /* --upstream: replaces the first upstream's endpoints */
    size_t num_upstream;
    const char *allow_origin[PTC_MAX_FLAG_ORIGINS]; /* --allow-origin: added to the global CORS policy */
    size_t num_allow_origin;
    long workers; /* --workers; -1: not given */
    const char *log_level;
    const char *tls_cert; /* --tls-cert / --tls-key */
    const char *tls_key;
    const ptc_hostport_t *admin; /* --admin: the admin API's address */
} ptc_overrides_t;

/*
 * Builds the configuration to run: the embedded default, then the file (NULL: none) whose content is
 * given in text/len (text NULL: read the file now), then the overrides, then validation. On success *cfg
 * is the result (dispose it). On failure returns the error and writes "FILE:LINE: KEY: what is wrong" (or
 * what else is wrong) into err; *cfg is left zeroed.
 */
int ptc_control_load(ptc_config_t *cfg, const char *file, const char *text, size_t len, const ptc_overrides_t *o, char *err,
                     size_t errlen) PTC_WARN_UNUSED;

/* Options of the running process that are not configuration. */
typedef struct st_ptc_control_options_t {
    const char *config_file; /* NULL: the embedded default */
    const ptc_overrides_t *overrides;
} ptc_control_options_t;

/*
 * Runs the gateway: loads the configuration, starts the workers, and serves reloads until SIGTERM or
 * SIGINT, then drains. Returns the process exit status.
 */
int ptc_control_run(const ptc_control_options_t *opts);

#endif
