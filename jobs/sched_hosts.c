/* The scheduler on several hosts (a PostgreSQL store; see store_lease.c for the rows' side).
 *
 * There is no local queue: a host claims the oldest queued job whenever a worker is free — at once
 * after a submit through this host, else at the next poll. Every poll_ms the loop thread renews
 * the lease of each job this host runs (reading back a cancellation asked through another host),
 * requeues jobs whose lease expired (a dead host's), claims, and wakes this host's event streams
 * so that those following a job running elsewhere see its new events.
 *
 * A job whose lease cannot be renewed is stopped: when the row says another host took it
 * (requeued after expiry), or when the database has been unreachable for 3/4 of the lease — by
 * then the lease is about to expire and another host may start the job, so this one stops
 * computing and, having lost the lease, records nothing and leaves the files alone.
 *
 * Each attempt writes into a folder of its own, tmp/<id>.<random tag>: the next attempt renames
 * the newest earlier one to its resume folder, so a host that has not yet noticed it lost the
 * lease writes into a path that no longer exists (ENOENT), never into the new attempt's files. */
#include "jobs/sched_int.h"
#include "common/log.h"

#include "jobs/store.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void on_poll(uv_timer_t *t)
{
    qd_sched *s = t->data;
    double now = qd_sched_mono_now(), lease = qd_store_lease_s(s->st);
    pthread_mutex_lock(&s->mu);
    for (run *r = s->running; r; r = r->next) {
        if (r->lost)
            continue;
        int cancel = 0;
        int rc = qd_store_lease_renew(s->st, r->id, &cancel);
        if (rc == 0) {
            r->renewed = now;
            if (cancel && !r->cancelled) {
                QD_LOG_INFO("job %s: cancelled through another host", r->id);
                r->cancelled = 1;
                atomic_store(&r->abort, 1);
            }
        } else if (rc == QD_ST_CONFLICT || now - r->renewed > 0.75 * lease) {
            QD_LOG_WARNING("job %s: %s; stopping it", r->id,
                           rc == QD_ST_CONFLICT ? "its lease was taken over by another host"
                                                : "its lease could not be renewed (database unreachable)");
            r->lost = 1;
            atomic_store(&r->abort, 1);
        }
    }
    int stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (!stopping) {
        json_t *cancelled = json_array();
        int n = qd_store_requeue_expired(s->st, cancelled);
        if (n > 0)
            QD_LOG_NOTICE("%d job%s of dead hosts requeued or cancelled", n, n > 1 ? "s" : "");
        size_t i;
        json_t *v;
        json_array_foreach(cancelled, i, v)   /* a final state: its webhook goes from here */
            if (s->o.on_end)
                s->o.on_end(s->o.end_ud, json_string_value(v));
        json_decref(cancelled);
    }
    if (s->o.notify)
        s->o.notify(s->o.ud, NULL);   /* every stream re-reads its job's events */
    qd_sched_next_step(s);
}

void qd_sched_hosts_start(qd_sched *s)
{
    uint64_t ms = (uint64_t)(s->o.poll_ms > 0 ? s->o.poll_ms : 1000);
    uv_timer_start(&s->poll, on_poll, ms, ms);
}

int qd_sched_lease_held(qd_sched *s, run *r)
{
    int cancel = 0;
    return qd_store_lease_renew(s->st, r->id, &cancel) == 0;
}

int qd_sched_shared_queued(qd_sched *s)
{
    int64_t counts[5];
    if (qd_store_job_counts(s->st, counts) < 0)
        return 0;
    return (int)counts[0];
}

void qd_sched_attempt_dirs(qd_sched *s, run *r, int resumable)
{
    char tag[32], tmp[PATH_MAX];
    qd_store_new_id("", tag);
    snprintf(tmp, sizeof tmp, "%s/tmp", qd_store_dir(s->st));
    snprintf(r->outdir, sizeof r->outdir, "%s/%s.%s", tmp, r->id, tag);
    snprintf(r->resume, sizeof r->resume, "%s/%s.%s.resume", tmp, r->id, tag);
    /* earlier attempts' folders: the newest (the last created; a rename keeps a folder's mtime)
     * is the one to resume from */
    char prefix[40], newest[PATH_MAX] = "";
    struct timespec best = { 0, 0 };
    snprintf(prefix, sizeof prefix, "%s.", r->id);
    json_t *old = json_array();
    DIR *d = opendir(tmp);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (strncmp(de->d_name, prefix, strlen(prefix)))
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", tmp, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) < 0 || !S_ISDIR(sb.st_mode))
            continue;
        json_array_append_new(old, json_string(p));
        if (resumable && (sb.st_mtim.tv_sec > best.tv_sec ||
                          (sb.st_mtim.tv_sec == best.tv_sec && sb.st_mtim.tv_nsec > best.tv_nsec))) {
            best = sb.st_mtim;
            snprintf(newest, sizeof newest, "%s", p);
        }
    }
    if (d)
        closedir(d);
    if (newest[0] && rename(newest, r->resume) < 0)
        QD_LOG_WARNING("job %s: cannot take over %s: the job starts from scratch", r->id, newest);
    size_t i;
    json_t *v;
    json_array_foreach(old, i, v)
        if (strcmp(json_string_value(v), newest))
            qd_rm_rf(json_string_value(v));
    json_decref(old);
}
