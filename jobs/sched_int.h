/* The scheduler's internals, shared by scheduler.c (one host's queue and workers) and
 * sched_hosts.c (several hosts on one PostgreSQL queue). Not a public header. */
#ifndef QD_SCHED_INT_H
#define QD_SCHED_INT_H

#include "jobs/scheduler.h"
#include "pipeline.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

enum { RETRY_MS = 500 };

typedef struct run {
    struct run *next;
    qd_sched *s;
    uv_work_t req;
    char id[32];
    char type[16];
    const qs_pipeline_type *jt;   /* its entry in the engine's table or the extra types; NULL: unknown */
    json_t *spec;
    atomic_int abort;
    int cancelled;      /* a user asked (DELETE) */
    int shutdown;       /* the daemon is stopping: requeue rather than cancel */
    double started;
    char *paths[6];     /* model, calib, train, train_labels, val, val_labels */
    char outdir[PATH_MAX], resume[PATH_MAX];
    int has_resume;
    /* set by the worker */
    int rc;
    qs_err err;
    json_t *result, *artifacts;
    /* progress throttling, worker thread only */
    double last_progress;
    char last_stage[128];
    /* the end, once decided (loop thread) */
    int unrecorded_events;   /* some of the job's events could not be stored (disk full) */
    int lost;                /* several hosts: the lease is gone (another host runs the job now) */
    double renewed;          /* several hosts: monotonic time of the last lease renewal */
    const char *end;         /* "succeeded", "failed", "cancelled" or "queued" (requeued) */
    int end_events_done;     /* the artifact events of a success are stored */
    double duration;
} run;

typedef struct pending {
    struct pending *next;
    char job[32];
    const char *type;   /* static string */
    json_t *data;
} pending;

struct qd_sched {
    qd_store *st;
    qd_sched_opts o;
    uv_loop_t loop;
    uv_async_t wake;
    uv_thread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cv;       /* signalled when a job leaves the running list */
    char (*queue)[32];
    int qhead, qlen, qcap;   /* queue[qhead .. qhead+qlen) */
    run *running;
    int nrunning;
    /* A full disk (SQLITE_FULL) must not strand a job: an end that could not be recorded waits in
     * `ending` and a start that could not be recorded stays at the queue's head; the retry timer
     * tries again every RETRY_MS until the store takes the writes. */
    uv_timer_t retry;
    uv_timer_t poll;         /* several hosts: claims, lease renewals, expired leases (sched_hosts.c) */
    int shared;
    run *ending;
    int stalled;
    json_t *orphans;         /* ids left running by a previous process, not yet requeued (full disk) */
    int stopping, closing, abandoned;
    qd_sched_stats stats;

    pthread_mutex_t ev_mu;
    pending *ev_head, **ev_tail;
};

double qd_sched_mono_now(void);
/* Loop thread, s->mu not held: start queued jobs while workers are free, or close down. */
void qd_sched_next_step(qd_sched *s);
/* Several hosts: r's folders for this attempt, tmp/<id>.<tag> and tmp/<id>.<tag>.resume (the
 * newest earlier attempt's output, when resumable), the older attempts' removed. */
void qd_sched_attempt_dirs(qd_sched *s, run *r, int resumable);
/* Several hosts: the queued jobs in the store (the local queue is not used). */
int qd_sched_shared_queued(qd_sched *s);
/* Several hosts: starts the poll timer on the loop (loop thread or before it runs). */
void qd_sched_hosts_start(qd_sched *s);
/* s->mu held: whether r's lease still holds before its output is published. */
int qd_sched_lease_held(qd_sched *s, run *r);

#endif
