/* The event-stream hub: the list of suspended event streams (events.c parks a stream here when it
 * has nothing new to send) and what resumes them: qd_server_notify, called once new events of a job
 * are committed, resumes that job's streams; the keep-alive thread resumes every stream every
 * sse_keepalive seconds for a comment line (so gone clients are noticed); shutdown resumes all to
 * end them. Everything here runs under srv->hub_mu. */
#include "api/api.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* Resumes waiters matching job (NULL: all); hub lock held. keepalive: ask them for a comment. */
static void wake(qd_server *srv, const char *job, int keepalive)
{
    qd_req **pp = &srv->waiters;
    while (*pp) {
        qd_req *r = *pp;
        if (!job || !strcmp(r->args[0], job)) {
            *pp = r->sse.next_waiter;
            r->sse.next_waiter = NULL;
            r->sse.waiting = 0;
            r->sse.keepalive = keepalive;
            MHD_resume_connection(r->conn);
        } else {
            pp = &r->sse.next_waiter;
        }
    }
}

void qd_server_notify(void *p, const char *job)
{
    qd_server *srv = p;
    pthread_mutex_lock(&srv->hub_mu);
    wake(srv, job, 0);
    pthread_mutex_unlock(&srv->hub_mu);
}

static void *keepalive_main(void *arg)
{
    qd_server *srv = arg;
    pthread_mutex_lock(&srv->hub_mu);
    while (!srv->hub_closing) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += srv->opt.sse_keepalive;
        if (pthread_cond_timedwait(&srv->hub_cv, &srv->hub_mu, &until) == ETIMEDOUT && !srv->hub_closing)
            wake(srv, NULL, 1);
    }
    pthread_mutex_unlock(&srv->hub_mu);
    return NULL;
}

int qd_hub_start(qd_server *srv)
{
    if (pthread_create(&srv->hub_thread, NULL, keepalive_main, srv) != 0)
        return -1;
    srv->hub_thread_started = 1;
    return 0;
}

void qd_hub_close(qd_server *srv)
{
    pthread_mutex_lock(&srv->hub_mu);
    srv->hub_closing = 1;
    wake(srv, NULL, 0);
    pthread_cond_broadcast(&srv->hub_cv);
    pthread_mutex_unlock(&srv->hub_mu);
}

void qd_hub_forget(qd_server *srv, qd_req *r)
{
    pthread_mutex_lock(&srv->hub_mu);
    for (qd_req **pp = &srv->waiters; *pp; pp = &(*pp)->sse.next_waiter)
        if (*pp == r) {
            *pp = r->sse.next_waiter;
            break;
        }
    if (r->sse.counted)
        srv->nstreams--;
    pthread_mutex_unlock(&srv->hub_mu);
}

void qd_hub_park(qd_server *srv, qd_req *r)
{
    r->sse.waiting = 1;
    r->sse.next_waiter = srv->waiters;
    srv->waiters = r;
    MHD_suspend_connection(r->conn);
}
