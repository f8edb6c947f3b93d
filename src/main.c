/*
 * portico: argv, then the control thread (src/control/control.c) or a one-shot command (--check-config,
 * -s SIGNAL). Nothing else lives here.
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
#include "portico/control.h"
#include "portico/log.h"
#include "portico/snapshot.h"

static const char usage[] =
    "usage: portico [options]\n"
    "       portico -s reload|stop [--config FILE | --pid-file FILE]\n"
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
    "  --admin HOST:PORT    serve the admin API (configuration read and edits) on this address (replaces\n"
    "                       admin.address; off by default)\n"
    "  -s reload|stop       signal a running portico (SIGHUP: reload the configuration; SIGTERM: drain and\n"
    "                       stop) found through its pid file (pid_file in --config, or --pid-file)\n"
    "  --pid-file FILE      the pid file -s reads (default: pid_file of --config)\n"
    "  --version            print the version and exit\n"
    "  --help               print this help and exit\n";

typedef struct st_options_t {
    const char *config_file;
    bool check_only;
    const char *signal_name; /* -s */
    const char *pid_file;    /* --pid-file */
    ptc_hostport_t admin;    /* --admin (host NULL: not given) */
    ptc_overrides_t o;
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
        OPT_ADMIN,
        OPT_PID_FILE,
        OPT_VERSION,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},       {"check-config", no_argument, NULL, OPT_CHECK},
        {"listen", required_argument, NULL, OPT_LISTEN},       {"upstream", required_argument, NULL, OPT_UPSTREAM},
        {"workers", required_argument, NULL, OPT_WORKERS},     {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"allow-origin", required_argument, NULL, OPT_ALLOW_ORIGIN},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},   {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"admin", required_argument, NULL, OPT_ADMIN},         {"pid-file", required_argument, NULL, OPT_PID_FILE},
        {"version", no_argument, NULL, OPT_VERSION},           {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;

    o->o.workers = -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (strcmp(optarg, "reload") != 0 && strcmp(optarg, "stop") != 0) {
                fprintf(stderr, "portico: -s '%s': expected reload or stop\n", optarg);
                return 2;
            }
            o->signal_name = optarg;
            break;
        case OPT_PID_FILE:
            o->pid_file = optarg;
            break;
        case OPT_ADMIN:
            if (o->admin.host != NULL)
                ptc_hostport_dispose(&o->admin);
            if (ptc_hostport_parse(optarg, &o->admin) != 0) {
                fprintf(stderr, "portico: --admin '%s': expected HOST:PORT (e.g. 127.0.0.1:9901)\n", optarg);
                return 2;
            }
            o->o.admin = &o->admin;
            break;
        case OPT_CONFIG:
            o->config_file = optarg;
            break;
        case OPT_CHECK:
            o->check_only = true;
            break;
        case OPT_LISTEN:
        case OPT_UPSTREAM: {
            ptc_hostport_t *arr = c == OPT_LISTEN ? o->o.listen : o->o.upstream;
            size_t *n = c == OPT_LISTEN ? &o->o.num_listen : &o->o.num_upstream;
            if (*n == PTC_MAX_FLAG_ADDRS) {
                fprintf(stderr, "portico: too many --%s flags (max %d)\n", c == OPT_LISTEN ? "listen" : "upstream", PTC_MAX_FLAG_ADDRS);
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
            if (o->o.num_allow_origin == PTC_MAX_FLAG_ORIGINS) {
                fprintf(stderr, "portico: too many --allow-origin flags (max %d)\n", PTC_MAX_FLAG_ORIGINS);
                return 2;
            }
            if (ptc_origin_pattern_parse(optarg, &p, why, sizeof(why)) != 0) {
                fprintf(stderr, "portico: --allow-origin '%s': %s\n", optarg, why);
                return 2;
            }
            ptc_origin_pattern_dispose(&p);
            o->o.allow_origin[o->o.num_allow_origin++] = optarg;
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
            o->o.workers = v;
            break;
        }
        case OPT_LOG_LEVEL:
            o->o.log_level = optarg;
            break;
        case OPT_TLS_CERT:
            o->o.tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            o->o.tls_key = optarg;
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
    if ((o->o.tls_cert == NULL) != (o->o.tls_key == NULL)) {
        fprintf(stderr, "portico: --tls-cert and --tls-key go together\n");
        return 2;
    }
    return 0;
}

static void free_flag_addrs(options_t *o)
{
    if (o->admin.host != NULL)
        ptc_hostport_dispose(&o->admin);
    for (size_t i = 0; i < o->o.num_listen; i++)
        ptc_hostport_dispose(&o->o.listen[i]);
    for (size_t i = 0; i < o->o.num_upstream; i++)
        ptc_hostport_dispose(&o->o.upstream[i]);
}

/* --check-config: everything a start-up would check, certificates included, without listening. */
static int check_config(const options_t *opts)
{
    ptc_config_t cfg;
    ptc_snapshot_t *snap;
    char err[1024];

    if (ptc_control_load(&cfg, opts->config_file, NULL, 0, &opts->o, err, sizeof(err)) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        return 1;
    }
    if (ptc_snapshot_new(&snap, &cfg, 1, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "portico: %s: %s\n", cfg.source, err);
        ptc_config_dispose(&cfg);
        return 1;
    }
    printf("portico: configuration %s is valid\n", snap->config.source);
    ptc_snapshot_release(snap);
    return 0;
}

/* -s reload|stop: the pid comes from --pid-file, or from the pid_file the configuration names. */
static int signal_running(const options_t *opts)
{
    const char *path = opts->pid_file;
    ptc_config_t cfg = {0};
    char err[1024], buf[32];
    int rv = 1;

    if (path == NULL) {
        if (ptc_control_load(&cfg, opts->config_file, NULL, 0, &opts->o, err, sizeof(err)) != 0) {
            fprintf(stderr, "portico: %s\n", err);
            return 1;
        }
        if ((path = cfg.pid_file) == NULL) {
            fprintf(stderr, "portico: -s %s: no pid file: set pid_file in the configuration, or give --pid-file\n", opts->signal_name);
            goto exit;
        }
    }
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        fprintf(stderr, "portico: -s %s: cannot read %s: %s (is portico running?)\n", opts->signal_name, path, strerror(errno));
        goto exit;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long pid = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || pid <= 1) {
        fprintf(stderr, "portico: -s %s: %s does not hold a process id\n", opts->signal_name, path);
        goto exit;
    }
    int sig = strcmp(opts->signal_name, "reload") == 0 ? SIGHUP : SIGTERM;
    if (kill((pid_t)pid, sig) != 0) {
        fprintf(stderr, "portico: -s %s: process %ld (from %s): %s\n", opts->signal_name, pid, path, strerror(errno));
        goto exit;
    }
    printf("portico: sent %s to process %ld\n", sig == SIGHUP ? "SIGHUP (reload)" : "SIGTERM (stop)", pid);
    rv = 0;
exit:
    ptc_config_dispose(&cfg);
    return rv;
}

int main(int argc, char **argv)
{
    options_t opts = {0};
    int rv;

    ptc_alloc_install_libevent(); /* before anything else touches libevent */
    if ((rv = parse_args(argc, argv, &opts)) != 0) {
        free_flag_addrs(&opts);
        return rv == 1 ? 0 : rv;
    }
    if (opts.signal_name != NULL) {
        rv = signal_running(&opts);
    } else if (opts.check_only) {
        rv = check_config(&opts);
    } else {
        ptc_control_options_t copts = {.config_file = opts.config_file, .overrides = &opts.o};
        rv = ptc_control_run(&copts);
    }
    free_flag_addrs(&opts);
    libevent_global_shutdown();
    ptc_alloc_thread_release();
    return rv;
}
