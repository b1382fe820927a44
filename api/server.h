/* The HTTP server: libmicrohttpd (epoll, a pool of polling threads, suspend/resume for event
 * streams) serving REST API v1 over the store and the scheduler.
 *
 *   qd_server_options o = { .listen = "127.0.0.1:8080", .http_threads = 4, … };   // quantd: from its conf
 *   qd_server *srv = qd_server_new(&o, store, err, sizeof err);
 *   qd_sched_opts o = { …, .notify = qd_server_notify, .ud = srv };   // event streams wake up
 *   qd_server_bind(srv, addr, sizeof addr, err, sizeof err);   // before any job is touched
 *   qd_server_listen(srv, sched, err, sizeof err);
 *   …
 *   qd_server_quiesce(srv);   // stop accepting (SIGTERM)
 *   qd_server_stop(srv);      // end event streams, close connections
 *   qd_server_free(srv); */
#ifndef QD_SERVER_H
#define QD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "jobs/scheduler.h"
#include "jobs/store.h"

typedef struct qd_server qd_server;

/* What the server needs to know (daemon/conf.c documents each as a config key). Copied by
 * qd_server_new; the strings are borrowed and must outlive the server. */
typedef struct qd_server_options {
    const char *listen;           /* "ADDR:PORT", "[V6]:PORT", "*:PORT" */
    int http_threads;
    int max_connections;
    int max_connections_per_ip;   /* 0 = no limit */
    const char *token_file;       /* "" = no auth */
    int sse_keepalive;            /* seconds between SSE comment lines on an idle stream */
    const char *web_root;         /* the dashboard's files ("" = the default place, api/static.c) */
    const char *chartjs;          /* Chart.js, served at /vendor/chart.js */
    int header_timeout;           /* seconds for a request's line and headers */
    int body_timeout;             /* seconds for a body, plus one per body_min_rate bytes */
    int64_t body_min_rate;        /* bytes per second */
    const char *allowed_hosts;    /* names accepted in Host besides IP addresses and localhost */
    const char *allowed_origins;  /* origins allowed to send state-changing requests */
    int max_queue;                /* the scheduler's, for the 429 message */
    int debug_jobs;               /* accept the test-only job types (jobs/debug_jobs.c) */
    int64_t max_model_size, max_dataset_size, max_json_size;
} qd_server_options;

qd_server *qd_server_new(const qd_server_options *opt, qd_store *st, char *err, size_t errlen);
/* Binds opt->listen; the bound address goes into addr (may be NULL). -1 with the reason (a port in
 * use: "cannot listen on 127.0.0.1:8080: Address already in use"). */
int qd_server_bind(qd_server *srv, char *addr, size_t addrlen, char *err, size_t errlen);
/* Starts serving on the bound socket. */
int qd_server_listen(qd_server *srv, qd_sched *sched, char *err, size_t errlen);
/* qd_notify_fn: events of job were committed; wakes the event streams following it. Any thread. */
void qd_server_notify(void *srv, const char *job);
/* Re-reads the token file (SIGHUP). 0, or -1 (the old tokens stay) with the reason logged. */
int qd_server_reload_tokens(qd_server *srv);
void qd_server_quiesce(qd_server *srv);
void qd_server_stop(qd_server *srv);
void qd_server_free(qd_server *srv);

#endif
