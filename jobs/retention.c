/* The retention thread; see retention.h. It sleeps on a condition variable (so stopping is
 * immediate) and prunes through the store like any other client: a job being deleted by a user at
 * the same moment is simply not found by one of the two. */
#include "jobs/retention.h"
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct qd_retention {
    qd_store *st;
    double max_age_s;
    int64_t max_bytes;
    int interval_s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    pthread_t thread;
};

static void prune(qd_retention *rt)
{
    int jobs = 0, uploads = 0;
    if (qd_store_prune(rt->st, rt->max_age_s, rt->max_bytes, &jobs, &uploads) < 0)
        QD_LOG_WARNING("retention: pruning failed part way (%d jobs, %d uploads removed)", jobs, uploads);
    else if (jobs || uploads)
        QD_LOG_NOTICE("retention: %d finished job%s and %d upload%s removed", jobs, jobs == 1 ? "" : "s", uploads,
                      uploads == 1 ? "" : "s");
}

static void *main_loop(void *arg)
{
    qd_retention *rt = arg;
    pthread_mutex_lock(&rt->mu);
    while (!rt->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += rt->interval_s;
        while (!rt->stop && pthread_cond_timedwait(&rt->cv, &rt->mu, &until) != ETIMEDOUT)
            ;
        if (rt->stop)
            break;
        pthread_mutex_unlock(&rt->mu);
        prune(rt);
        pthread_mutex_lock(&rt->mu);
    }
    pthread_mutex_unlock(&rt->mu);
    return NULL;
}

qd_retention *qd_retention_start(qd_store *st, double max_age_s, int64_t max_bytes, int interval_s)
{
    if (max_age_s <= 0 && max_bytes <= 0)
        return NULL;
    qd_retention *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    *rt = (qd_retention){ .st = st, .max_age_s = max_age_s, .max_bytes = max_bytes,
                          .interval_s = interval_s > 0 ? interval_s : 3600 };
    prune(rt);
    pthread_mutex_init(&rt->mu, NULL);
    pthread_cond_init(&rt->cv, NULL);
    if (pthread_create(&rt->thread, NULL, main_loop, rt) != 0) {
        QD_LOG_ERROR("retention: cannot start its thread; pruning only at start");
        pthread_mutex_destroy(&rt->mu);
        pthread_cond_destroy(&rt->cv);
        free(rt);
        return NULL;
    }
    return rt;
}

void qd_retention_stop(qd_retention *rt)
{
    if (!rt)
        return;
    pthread_mutex_lock(&rt->mu);
    rt->stop = 1;
    pthread_cond_signal(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    pthread_join(rt->thread, NULL);
    pthread_mutex_destroy(&rt->mu);
    pthread_cond_destroy(&rt->cv);
    free(rt);
}
