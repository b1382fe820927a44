/* Daemon configuration (conf, not config: "config.h" is autoconf's header). One declarative table
 * of keys (name, section, type, default, bounds, doc) in conf.c drives the defaults, the INI-like
 * file, the command-line flags and the documented sample that `quantd --print-config` writes
 * (deploy/quantd.conf is that output).
 *
 *   qd_config c;
 *   char err[512];
 *   if (qd_config_load(&c, argc, argv, err, sizeof err) < 0) { fprintf(stderr, "%s\n", err); … }
 *
 * File syntax: `key = value` lines, `# comments`, optional `[section]` headers (a key may sit under
 * its own section or before any section). Sizes take K/M/G suffixes (powers of 1024). Flags
 * override the file: --config FILE --listen ADDR:PORT --state-dir DIR --workers N
 * --token-file FILE --log-level LEVEL, and --set KEY=VALUE for any key. */
#ifndef QD_CONF_H
#define QD_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "api/server.h"

typedef struct qd_config {
    /* http */
    char *listen;             /* "127.0.0.1:8080" */
    int http_threads;
    int max_connections;
    char *token_file;         /* "" = no auth */
    int sse_keepalive;        /* seconds between SSE comment lines on an idle stream */
    char *web_root;           /* the dashboard's files ("" = the default place, api/static.c) */
    char *chartjs;            /* Chart.js, served at /vendor/chart.js */
    int max_connections_per_ip;  /* 0 = no limit */
    int header_timeout;       /* seconds for a request's line and headers */
    int body_timeout;         /* seconds for a body, plus one per body_min_rate bytes */
    int64_t body_min_rate;    /* bytes per second */
    char *allowed_hosts;      /* names accepted in Host besides IP addresses and localhost */
    char *allowed_origins;    /* origins allowed to send state-changing requests */
    /* jobs */
    char *state_dir;          /* "" until resolved by qd_config_load */
    char *store;              /* "sqlite" or a postgresql:// URI */
    char *artifact_dir;       /* "" = state_dir */
    char *host_id;            /* "" = <hostname>-<pid> */
    int lease_seconds;
    int poll_interval_ms;
    int workers;
    int engine_threads;
    int job_nice;
    int max_queue;
    int shutdown_timeout;
    int debug_jobs;
    int job_retention_days;   /* 0 = keep finished jobs */
    int64_t max_state_bytes;  /* 0 = no limit */
    int retention_interval;   /* seconds between retention passes */
    char *webhook_secret;     /* HMAC-SHA256 key of webhook signatures ("" = unsigned) */
    int webhook_attempts;
    int webhook_backoff_ms;
    int webhook_timeout;      /* seconds per attempt */
    /* limits */
    int64_t max_model_size;
    int64_t max_dataset_size;
    int64_t max_json_size;
    int64_t max_tensor_size;
    /* daemon */
    int log_level;

    char *config_file;        /* the file read, NULL when none */
    int print_config;         /* --print-config was given */
} qd_config;

/* Defaults, then the config file, then the flags. Returns 0, 1 when the program should exit
 * successfully (--help, --version, --print-config printed), or -1 with err filled. */
int qd_config_load(qd_config *c, int argc, char **argv, char *err, size_t errlen);
/* Writes the documented sample configuration (every key with its default and doc). */
void qd_config_print(FILE *f);
void qd_config_free(qd_config *c);
/* The server's part of the configuration (strings borrowed from c). */
qd_server_options qd_config_server_options(const qd_config *c);

#endif
