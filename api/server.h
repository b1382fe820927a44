/* The HTTP server: libmicrohttpd (epoll, a pool of polling threads, suspend/resume for event
 * streams) serving REST API v1 over the store and the scheduler.
 *
 *   qd_server *srv = qd_server_new(&cfg, store, err, sizeof err);
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

#include "daemon/conf.h"
#include "jobs/scheduler.h"
#include "jobs/store.h"

typedef struct qd_server qd_server;

qd_server *qd_server_new(const qd_config *cfg, qd_store *st, char *err, size_t errlen);
/* Binds cfg->listen; the bound address goes into addr (may be NULL). -1 with the reason (a port in
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
