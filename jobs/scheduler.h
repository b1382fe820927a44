/* The job scheduler: a libuv loop on its own thread owns the queue; jobs run on libuv's worker
 * pool (uv_queue_work), at most `workers` at once, each through its entry in the engine's table of job
 * types (qs_pipeline_types: the driver, and whether an interrupted job resumes).
 *
 *   qd_sched_opts o = { .workers = 2, .max_queue = 100, .notify = on_events, .ud = hub };
 *   qd_sched *s;
 *   qd_sched_start(store, &o, &s, err, sizeof err);   // requeues jobs a dead process left running
 *   qd_sched_submit(s, id, "ptq", spec, nrefs, refs, &bad_field);
 *   qd_sched_cancel(s, id);
 *   qd_sched_stop(s, 20);                              // running jobs are stopped and requeued
 *
 * Threads: submit and cancel may be called from any thread (HTTP handlers); the engine reports
 * events on the worker threads; everything reaches the loop through mutex-protected lists with
 * uv_async_send as the wake-up, and the loop writes events to the store in batches. `notify` is
 * called (on the loop thread, or the caller's for submit/cancel) after events of a job have been
 * committed, so event-stream readers can wake up (job NULL: every job, when the store is shared
 * and other hosts write events too).
 *
 * With a PostgreSQL store several hosts share the queue: see sched_hosts.c. */
#ifndef QD_SCHEDULER_H
#define QD_SCHEDULER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jobs/store.h"
#include "pipeline.h"
#include "threadpool.h"

typedef struct qd_sched qd_sched;

typedef void (*qd_notify_fn)(void *ud, const char *job);

typedef struct qd_sched_opts {
    int workers;          /* jobs at once (also UV_THREADPOOL_SIZE) */
    qs_threadpool *pool;  /* the engine's compute threads, shared by the jobs (borrowed; qs_pipeline_io.pool) */
    int job_nice;         /* nice value of job threads (Linux: per thread) */
    int max_queue;        /* queued jobs at most */
    int poll_ms;          /* several hosts (PostgreSQL store): claims, leases, expired leases; 0: 1000 */
    const qs_pipeline_type *extra_types;   /* job types besides the engine's, ended by a NULL name
                                             (quantd's debug_jobs: jobs/debug_jobs.h); NULL: none */
    qd_notify_fn notify;
    void *ud;
    qd_notify_fn on_end;  /* a job reached its final state (succeeded, failed, cancelled), recorded;
                             called on the loop thread or the canceller's, must not block; may be NULL */
    void *end_ud;
} qd_sched_opts;

enum {
    QD_SCHED_FULL = -10,      /* the queue is at max_queue */
    QD_SCHED_STOPPING = -11,  /* the daemon is shutting down */
};

int qd_sched_start(qd_store *st, const qd_sched_opts *o, qd_sched **out, char *err, size_t errlen);

/* Records a queued job (see qd_store_job_create for refs and bad_field) and wakes the loop.
 * 0, QD_SCHED_FULL, QD_SCHED_STOPPING or a QD_ST_* code. */
int qd_sched_submit(qd_sched *s, const char *id, const char *type, json_t *spec, int nrefs,
                    const qd_ref *refs, const char **bad_field);
/* 0: a queued job is now cancelled; 1: a running job was asked to stop (it becomes cancelled at
 * the engine's next poll of its abort flag); QD_ST_CONFLICT: already finished; QD_ST_NOTFOUND. */
int qd_sched_cancel(qd_sched *s, const char *id);
/* Whether the type can run here: the engine's (qs_pipeline_types) or one of extra_types. */
int qd_sched_type_known(const qd_sched *s, const char *type);

/* Figures for /metrics. */
#define QD_DURATION_BUCKETS 10
extern const double qd_duration_bounds[QD_DURATION_BUCKETS];   /* seconds; last is +Inf */
typedef struct qd_sched_stats {
    int queued, running, workers;
    int64_t finished[3];                      /* succeeded, failed, cancelled since start */
    int64_t dur_count;
    double dur_sum;                           /* seconds, jobs that ended since start */
    int64_t dur_bucket[QD_DURATION_BUCKETS];  /* cumulative, Prometheus style */
} qd_sched_stats;
void qd_sched_get_stats(qd_sched *s, qd_sched_stats *out);

/* Stops accepting jobs, raises the abort flag of running jobs (they go back to the queue, their
 * temp output kept for a resume), waits up to timeout_s for them, stops the loop. Returns the
 * number of jobs that did not stop in time (their records are requeued anyway; the caller should
 * then exit without freeing what those workers may still touch). */
int qd_sched_stop(qd_sched *s, int timeout_s);
void qd_sched_free(qd_sched *s);

#endif
