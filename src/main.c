/*
 * portico: argv, configuration, workers, signals. Nothing else lives here.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "portico/alloc.h"
#include "portico/config.h"
#include "portico/log.h"
#include "portico/tls.h"
#include "portico/worker.h"

#define MAX_FLAG_ADDRS 64
#define MAX_FLAG_ORIGINS 64

static const char usage[] =
    "usage: portico [options]\n"
    "\n"
    "A gRPC-Web gateway: browsers call it with gRPC-Web over HTTP/1.1 (cleartext or TLS); it forwards each\n"
    "call to a gRPC server over HTTP/2 (h2c, or TLS as configured).\n"
    "\n"
    "options:\n"
    "  --config FILE        load configuration from a YAML file (default: built-in, see README)\n"
    "  --check-config       validate the configuration and exit (0 if valid)\n"
    "  --listen HOST:PORT   listen address (repeatable; replaces the configured listeners)\n"
    "  --upstream HOST:PORT upstream gRPC server (repeatable; replaces the endpoints of the first upstream)\n"
    "  --tls-cert FILE      serve TLS with this certificate chain (PEM) on the --listen addresses (on every\n"
    "                       listener without --listen); needs --tls-key\n"
    "  --tls-key FILE       the private key (PEM, unencrypted) of --tls-cert\n"
    "  --allow-origin ORIGIN\n"
    "                       allow browser calls from ORIGIN (repeatable; added to the configured CORS\n"
    "                       allow_origins): an exact origin (https://app.example.com), a wildcard origin\n"
    "                       (https://*.example.com: subdomains only), ~REGEX (anchored), or *\n"
    "  --workers N          worker threads (default: number of cores)\n"
    "  --log-level LEVEL    debug, info, warn or error (default: info)\n"
    "  --version            print the version and exit\n"
    "  --help               print this help and exit\n";

typedef struct st_options_t {
    const char *config_file;
    bool check_only;
    ptc_hostport_t listen[MAX_FLAG_ADDRS];
    size_t num_listen;
    ptc_hostport_t upstream[MAX_FLAG_ADDRS];
    size_t num_upstream;
    const char *allow_origin[MAX_FLAG_ORIGINS];
    size_t num_allow_origin;
    long workers; /* -1: not given */
    const char *log_level;
    const char *tls_cert;
    const char *tls_key;
} options_t;

static int parse_args(int argc, char **argv, options_t *o)
{
    enum {
        OPT_CONFIG = 256,
        OPT_CHECK,
        OPT_LISTEN,
        OPT_UPSTREAM,
        OPT_ALLOW_ORIGIN,
        OPT_WORKERS,
        OPT_LOG_LEVEL,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_VERSION,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},       {"check-config", no_argument, NULL, OPT_CHECK},
        {"listen", required_argument, NULL, OPT_LISTEN},       {"upstream", required_argument, NULL, OPT_UPSTREAM},
        {"workers", required_argument, NULL, OPT_WORKERS},     {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"allow-origin", required_argument, NULL, OPT_ALLOW_ORIGIN},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},   {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"version", no_argument, NULL, OPT_VERSION},           {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;

    o->workers = -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG:
            o->config_file = optarg;
            break;
        case OPT_CHECK:
            o->check_only = true;
            break;
        case OPT_LISTEN:
        case OPT_UPSTREAM: {
            ptc_hostport_t *arr = c == OPT_LISTEN ? o->listen : o->upstream;
            size_t *n = c == OPT_LISTEN ? &o->num_listen : &o->num_upstream;
            if (*n == MAX_FLAG_ADDRS) {
                fprintf(stderr, "portico: too many --%s flags (max %d)\n", c == OPT_LISTEN ? "listen" : "upstream", MAX_FLAG_ADDRS);
                return 2;
            }
            if (ptc_hostport_parse(optarg, &arr[*n]) != 0) {
                fprintf(stderr, "portico: --%s '%s': expected HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)\n",
                        c == OPT_LISTEN ? "listen" : "upstream", optarg);
                return 2;
            }
            (*n)++;
            break;
        }
        case OPT_ALLOW_ORIGIN: {
            /* checked here so that a bad value is a usage error (exit 2); applied after the config file */
            ptc_origin_pattern_t p;
            char why[256];
            if (o->num_allow_origin == MAX_FLAG_ORIGINS) {
                fprintf(stderr, "portico: too many --allow-origin flags (max %d)\n", MAX_FLAG_ORIGINS);
                return 2;
            }
            if (ptc_origin_pattern_parse(optarg, &p, why, sizeof(why)) != 0) {
                fprintf(stderr, "portico: --allow-origin '%s': %s\n", optarg, why);
                return 2;
            }
            ptc_origin_pattern_dispose(&p);
            o->allow_origin[o->num_allow_origin++] = optarg;
            break;
        }
        case OPT_WORKERS: {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || end == optarg || v < 0 || v > 1024) {
                fprintf(stderr, "portico: --workers '%s': expected a number from 0 to 1024 (0 = number of cores)\n", optarg);
                return 2;
            }
            o->workers = v;
            break;
        }
        case OPT_LOG_LEVEL:
            o->log_level = optarg;
            break;
        case OPT_TLS_CERT:
            o->tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            o->tls_key = optarg;
            break;
        case OPT_VERSION:
            printf("portico %s\n", PTC_VERSION);
            return 1;
        case OPT_HELP:
            fputs(usage, stdout);
            return 1;
        default:
            if (optopt != 0)
                fprintf(stderr, "portico: option '%s' needs a value\n", argv[optind - 1]);
            else
                fprintf(stderr, "portico: unknown option '%s'\n", argv[optind - 1]);
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "portico: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if ((o->tls_cert == NULL) != (o->tls_key == NULL)) {
        fprintf(stderr, "portico: --tls-cert and --tls-key go together\n");
        return 2;
    }
    return 0;
}

static void free_flag_addrs(options_t *o)
{
    for (size_t i = 0; i < o->num_listen; i++)
        ptc_hostport_dispose(&o->listen[i]);
    for (size_t i = 0; i < o->num_upstream; i++)
        ptc_hostport_dispose(&o->upstream[i]);
}

/* Applies command-line flags over the loaded configuration. */
static int apply_flags(ptc_config_t *cfg, const options_t *o)
{
    if (o->num_listen != 0 && ptc_config_set_listeners(cfg, o->listen, o->num_listen) != 0)
        return PTC_ENOMEM;
    if (o->num_upstream != 0 && ptc_config_set_upstream_endpoints(cfg, 0, o->upstream, o->num_upstream) != 0)
        return PTC_ENOMEM;
    if (o->tls_cert != NULL && ptc_config_set_listener_cert(cfg, o->tls_cert, o->tls_key) != 0)
        return PTC_ENOMEM;
    for (size_t i = 0; i < o->num_allow_origin; i++) {
        char err[256];
        int ret;
        if ((ret = ptc_config_add_allow_origin(cfg, o->allow_origin[i], err, sizeof(err))) != 0) {
            fprintf(stderr, "portico: --allow-origin '%s': %s\n", o->allow_origin[i], err);
            return ret;
        }
    }
    if (o->workers >= 0)
        cfg->workers = (uint32_t)o->workers;
    if (o->log_level != NULL && ptc_log_level_parse(o->log_level, &cfg->log_level) != 0) {
        fprintf(stderr, "portico: --log-level '%s': expected debug, info, warn or error\n", o->log_level);
        return PTC_EINVAL;
    }
    return 0;
}

/*
 * SIGHUP: the certificate, key and CA files named by the configuration are read again and the workers
 * switch new connections to them; connections already open keep their certificates. Anything else in the
 * configuration needs a restart. A file that fails to load keeps the current certificates in service.
 */
static void reload_certificates(const ptc_config_t *cfg, ptc_worker_t *workers, size_t n)
{
    ptc_tls_contexts_t *tls;
    char err[512];

    if (!ptc_config_uses_tls(cfg)) {
        ptc_log_info("SIGHUP: no TLS certificates to reload (configuration reload is not supported; restart to apply "
                     "changes)");
        return;
    }
    if (ptc_tls_contexts_new(&tls, cfg, err, sizeof(err)) != 0) {
        ptc_log_error("SIGHUP: certificate reload failed, the current certificates stay in use: %s", err);
        return;
    }
    size_t ok = 0;
    for (size_t i = 0; i < n; i++)
        if (ptc_worker_set_tls(&workers[i], tls) == 0)
            ok++;
    ptc_tls_contexts_free(tls); /* each worker holds its own references now */
    if (ok != n)
        ptc_log_error("SIGHUP: out of memory: %zu of %zu workers keep the previous certificates", n - ok, n);
    ptc_log_info("SIGHUP: TLS certificates reloaded for new connections (only certificates: configuration reload is not "
                 "supported; restart to apply other changes)");
}

int main(int argc, char **argv)
{
    options_t opts = {0};
    ptc_config_t cfg;
    char err[512];
    int rv;

    ptc_alloc_install_libevent(); /* before anything else touches libevent */
    if ((rv = parse_args(argc, argv, &opts)) != 0) {
        free_flag_addrs(&opts);
        return rv == 1 ? 0 : rv;
    }
    if (ptc_config_init_default(&cfg) != 0) {
        fprintf(stderr, "portico: out of memory\n");
        return 1;
    }
    if (opts.config_file != NULL && ptc_config_load_file(&cfg, opts.config_file, err, sizeof(err)) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        ptc_config_dispose(&cfg);
        free_flag_addrs(&opts);
        return 1;
    }
    rv = apply_flags(&cfg, &opts);
    free_flag_addrs(&opts);
    if (rv != 0 || ptc_config_validate(&cfg, err, sizeof(err)) != 0) {
        if (rv == 0)
            fprintf(stderr, "portico: %s\n", err);
        ptc_config_dispose(&cfg);
        return 1;
    }
    /* certificates given by flags are checked here; those of a file were already checked by its loader */
    ptc_tls_contexts_t *tls = NULL;
    if (ptc_config_uses_tls(&cfg) && ptc_tls_contexts_new(&tls, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "portico: %s: %s\n", cfg.source, err);
        ptc_config_dispose(&cfg);
        return 1;
    }
    if (opts.check_only) {
        printf("portico: configuration %s is valid\n", cfg.source);
        ptc_tls_contexts_free(tls);
        ptc_config_dispose(&cfg);
        return 0;
    }
    ptc_log_set_level(cfg.log_level);
    ptc_tls_log_warnings(&cfg);

    /* Signals are taken synchronously by this thread only (sigwait); workers inherit the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* no evthread_use_pthreads(): each event base is used by one thread only (workers are woken
     * through an eventfd), so libevent runs without locks */

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nworkers = cfg.workers != 0 ? cfg.workers : (size_t)(cores > 0 ? cores : 1);
    ptc_worker_t *workers = calloc(nworkers, sizeof(*workers));
    if (workers == NULL) {
        ptc_tls_contexts_free(tls);
        ptc_config_dispose(&cfg);
        return 1;
    }
    size_t started = 0;
    rv = 0;
    for (size_t i = 0; i < nworkers && rv == 0; i++) {
        if ((rv = ptc_worker_init(&workers[i], (unsigned)i, &cfg, tls)) != 0) {
            ptc_log_error("worker %zu: start-up failed: %s", i, ptc_strerror(rv));
            ptc_worker_dispose(&workers[i]);
            break;
        }
        started++;
    }
    for (size_t i = 0; i < started && rv == 0; i++)
        if ((rv = ptc_worker_start(&workers[i])) != 0)
            ptc_log_error("worker %zu: cannot start its thread", i);
    if (rv != 0) {
        /* threads already running are drained and joined below */
        for (size_t i = 0; i < started; i++)
            if (workers[i].thread != 0)
                ptc_worker_request_drain(&workers[i]);
    } else {
        for (size_t i = 0; i < cfg.num_listeners; i++)
            ptc_log_info("portico %s listening on %s:%u (%zu workers)%s", PTC_VERSION, cfg.listeners[i].addr.host,
                         cfg.listeners[i].addr.port, nworkers, cfg.listeners[i].tls != NULL ? ", TLS" : "");
        for (;;) {
            int sig = 0;
            if (sigwait(&sigs, &sig) != 0)
                continue;
            if (sig == SIGHUP) {
                reload_certificates(&cfg, workers, started);
                continue;
            }
            ptc_log_info("%s: draining (up to %" PRIu64 " ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg.timeouts.drain_ms);
            break;
        }
        for (size_t i = 0; i < started; i++)
            ptc_worker_request_drain(&workers[i]);
    }
    for (size_t i = 0; i < started; i++) {
        if (workers[i].thread != 0)
            ptc_worker_join(&workers[i]);
        ptc_worker_dispose(&workers[i]);
    }
    free(workers);
    ptc_tls_contexts_free(tls);
    ptc_config_dispose(&cfg);
    libevent_global_shutdown();
    ptc_alloc_thread_release();
    if (rv == 0)
        ptc_log_info("stopped");
    return rv == 0 ? 0 : 1;
}
