/* The job scheduler; see scheduler.h.
 *
 * Ownership: s->mu protects the queue (ids in FIFO order), the list of running jobs and the
 * counters; it is taken by HTTP threads (submit, cancel) and by the loop thread (start, finish),
 * never by workers. A state change is always a conditional store transition made under s->mu,
 * so "cancel a queued job" and "start it" cannot both happen. Workers only touch their own `run`
 * and push events into s->ev (its own mutex), then uv_async_send; the loop drains the list into
 * one store transaction per wake-up (sends merge, so a burst costs one commit).
 *
 * Output files: a job writes into <state>/tmp/<id>/ and that folder is renamed to
 * <state>/jobs/<id>/ when the job succeeds, so a job folder is either complete or absent. When
 * a job is interrupted (daemon stopped or killed) its temp folder stays; at the next start a
 * resumable type (qat) gets it as io.resume (renamed <id>.resume), others start clean. */
#include "jobs/scheduler.h"
#include "jobs/sched_int.h"
#include "common/log.h"
#include "common/sha256.h"
#include "pipeline.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

const double qd_duration_bounds[QD_DURATION_BUCKETS] = { 1, 5, 15, 30, 60, 300, 900, 1800, 3600, INFINITY };


double qd_sched_mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- files --------------------------------------------------------------------------------- */


static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
                  json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

/* The artifacts of a finished job: the regular files at the top of its output folder (folders,
 * such as checkpoints, and hidden files are not served), hashed now so that downloads can carry
 * ETag = sha256 without reading the file again. */
static json_t *list_artifacts(const char *dir, qs_err *e)
{
    DIR *d = opendir(dir);
    if (!d) {
        qs_error(e, QS_EIO, "listing the job's output %s: %s", dir, strerror(errno));
        return NULL;
    }
    json_t *items[256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 256) {
        if (de->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        char hex[65];
        int64_t size;
        if (qd_sha256_file(path, hex, &size) < 0)
            continue;
        items[n++] = json_pack("{s:s, s:I, s:s}", "name", de->d_name, "size", (json_int_t)size, "sha256", hex);
    }
    closedir(d);
    qsort(items, (size_t)n, sizeof items[0], cmp_names);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, items[i]);
    return arr;
}

/* ---- events from workers ----------------------------------------------------------------- */

static void push_event(qd_sched *s, const char *job, const char *type, json_t *data)
{
    pending *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(data);
        return;
    }
    snprintf(p->job, sizeof p->job, "%s", job);
    p->type = type;
    p->data = data;
    pthread_mutex_lock(&s->ev_mu);
    *s->ev_tail = p;
    s->ev_tail = &p->next;
    pthread_mutex_unlock(&s->ev_mu);
    uv_async_send(&s->wake);
}

/* The engine's callback, on the worker thread. Progress is thinned to a few events a second per
 * stage (a stage change, the last step and the first step always pass): the log keeps its shape
 * while a 10,000-iteration AdaRound does not write 10,000 rows. */
static void on_engine_event(void *ud, const qs_event *ev)
{
    run *r = ud;
    json_t *data = NULL;
    const char *type = NULL;
    switch (ev->type) {
    case QS_EV_PROGRESS: {
        double now = qd_sched_mono_now();
        const char *stage = ev->stage ? ev->stage : "";
        int same = !strcmp(stage, r->last_stage);
        if (same && ev->done < ev->total && ev->done > 0 && now - r->last_progress < 0.25)
            return;
        r->last_progress = now;
        snprintf(r->last_stage, sizeof r->last_stage, "%s", stage);
        type = "progress";
        data = json_pack("{s:s, s:f, s:f}", "stage", stage, "done", ev->done, "total", ev->total);
        if (ev->eta_s >= 0 && isfinite(ev->eta_s))
            json_object_set_new(data, "eta_s", json_real(ev->eta_s));
        else
            json_object_set_new(data, "eta_s", json_null());
        break;
    }
    case QS_EV_LOG: {
        char msg[sizeof r->err.msg];
        snprintf(msg, sizeof msg, "%s", ev->message ? ev->message : "");
        type = "log";
        data = json_pack("{s:s, s:s}", "level", ev->level ? ev->level : "info", "message",
                         qd_store_relative(r->s->st, msg));
        break;
    }
    case QS_EV_METRIC:
        type = "metric";
        data = json_pack("{s:s, s:f}", "name", ev->name ? ev->name : "", "value", ev->value);
        if (!isfinite(ev->value)) {   /* JSON has no NaN */
            json_decref(data);
            data = json_pack("{s:s, s:n}", "name", ev->name ? ev->name : "", "value");
        }
        break;
    case QS_EV_ARTIFACT:
        /* Announced once the job has succeeded and its folder is in place (with size and
         * sha256); a file the pipeline is still writing is not downloadable yet. */
        return;
    }
    if (data)
        push_event(r->s, r->id, type, data);
}

/* Events of these jobs could not be stored: a running job among them stops and fails with that
 * reason (once its end can be recorded), rather than going on with a log nobody can read. */
static void lost_events(qd_sched *s, const pending *head)
{
    pthread_mutex_lock(&s->mu);
    for (run *r = s->running; r; r = r->next)
        for (const pending *p = head; p; p = p->next)
            if (!strcmp(p->job, r->id)) {
                r->unrecorded_events = 1;
                atomic_store(&r->abort, 1);
                break;
            }
    pthread_mutex_unlock(&s->mu);
}

/* Writes the queued events to the store (one transaction) and tells the listeners. Loop thread. */
static void flush_events(qd_sched *s)
{
    pthread_mutex_lock(&s->ev_mu);
    pending *head = s->ev_head;
    s->ev_head = NULL;
    s->ev_tail = &s->ev_head;
    pthread_mutex_unlock(&s->ev_mu);
    if (!head)
        return;
    int n = 0;
    for (pending *p = head; p; p = p->next)
        n++;
    qd_event_in *ev = calloc((size_t)n, sizeof *ev);
    if (ev) {
        int i = 0;
        for (pending *p = head; p; p = p->next, i++)
            ev[i] = (qd_event_in){ .job = p->job, .type = p->type, .data = p->data };
        if (qd_store_events_add(s->st, n, ev) < 0) {
            QD_LOG_ERROR("could not record %d job events", n);
            lost_events(s, head);
        }
        free(ev);
    }
    const char *last = "";
    for (pending *p = head; p; p = p->next)
        if (strcmp(p->job, last)) {   /* one wake-up per job and burst */
            if (s->o.notify)
                s->o.notify(s->o.ud, p->job);
            last = p->job;
        }
    while (head) {
        pending *next = head->next;
        json_decref(head->data);
        free(head);
        head = next;
    }
}

/* ---- running a job --------------------------------------------------------------------------- */

/* The engine's job types, then the service's extra ones (the test-only types of debug_jobs). */
static const qs_pipeline_type *job_type(const qd_sched *s, const char *type)
{
    const qs_pipeline_type *t = qs_pipeline_find(NULL, type);
    if (!t && s->o.extra_types)
        t = qs_pipeline_find(s->o.extra_types, type);
    return t;
}

static void work_cb(uv_work_t *req)
{
    run *r = req->data;
    /* On Linux nice is per thread: the job's own thread computes too (it takes chunks of its
     * parallel loops), and the shared pool's workers were started with the same nice value. Jobs
     * then only take the CPU time the HTTP threads leave. */
    if (r->s->o.job_nice > 0)
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), r->s->o.job_nice);
    qs_pipeline_io io = {
        .model = r->paths[0], .calib = r->paths[1], .train = r->paths[2], .train_labels = r->paths[3],
        .val = r->paths[4], .val_labels = r->paths[5], .outdir = r->outdir,
        .resume = r->has_resume ? r->resume : NULL,
        .config = json_object_get(r->spec, "config"),
        .event = on_engine_event, .ud = r, .abort = &r->abort, .pool = r->s->o.pool,
    };
    r->err.code = 0;
    r->err.msg[0] = 0;
    /* the engine's types go through qs_pipeline_run (its checks; a type neither table knows fails
     * there, with the engine's message), the extra types straight to their driver */
    if (r->jt && !qs_pipeline_find(NULL, r->type))
        r->rc = r->jt->run(&io, &r->result, &r->err);
    else
        r->rc = qs_pipeline_run(r->type, &io, &r->result, &r->err);
    if (r->rc == 0) {
        /* a pipeline may record where it wrote; here that temp folder is about to be renamed
         * and means nothing to a client (artifact URLs say where things are) */
        const char *od = json_string_value(json_object_get(r->result, "outdir"));
        if (od && !strcmp(od, r->outdir))
            json_object_del(r->result, "outdir");
        r->artifacts = list_artifacts(r->outdir, &r->err);
        if (!r->artifacts)
            r->rc = r->err.code ? r->err.code : QS_EIO;
    }
}

static const char *job_error_code(int rc)
{
    switch (rc) {
    case QS_EINVAL: return "invalid_input";
    case QS_ENOMEM: return "out_of_memory";
    case QS_EUNSUPPORTED: return "unsupported";
    case QS_EIO: return "io_error";
    case QS_ESHAPE: return "shape_mismatch";
    case QS_EFORMAT: return "bad_format";
    case QS_ELIMIT: return "too_large";
    default: return "pipeline_failed";
    }
}

static void run_free(run *r)
{
    if (!r)
        return;
    json_decref(r->spec);
    json_decref(r->result);
    json_decref(r->artifacts);
    for (int i = 0; i < 6; i++)
        free(r->paths[i]);
    free(r);
}

static void count_finished(qd_sched *s, int which, double duration)
{
    s->stats.finished[which]++;
    if (duration < 0)
        return;
    s->stats.dur_count++;
    s->stats.dur_sum += duration;
    for (int b = 0; b < QD_DURATION_BUCKETS; b++)
        if (duration <= qd_duration_bounds[b])
            s->stats.dur_bucket[b]++;
}

static void maybe_close(qd_sched *s);
static void start_jobs(qd_sched *s);
static void on_retry(uv_timer_t *t);
static int queue_push(qd_sched *s, const char *id);

/* Jobs the previous process left running whose requeue at start failed: into the queue once their
 * record says queued (called with mu held). */
static void requeue_orphans(qd_sched *s)
{
    for (size_t i = 0; i < json_array_size(s->orphans);) {
        const char *id = json_string_value(json_array_get(s->orphans, i));
        int rc = qd_store_requeue(s->st, id);
        if (rc == 0 && queue_push(s, id) < 0)
            return;   /* out of memory: the record is queued, and the next start runs it */
        if (rc == 0 || rc == QD_ST_CONFLICT || rc == QD_ST_NOTFOUND) {
            if (rc == 0)
                QD_LOG_NOTICE("job %s left running by the previous process requeued", id);
            json_array_remove(s->orphans, i);
        } else {
            i++;
        }
    }
}

/* On the loop thread, after anything that may free a worker: start queued jobs, or close down. */
void qd_sched_next_step(qd_sched *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->stopping)
        maybe_close(s);
    else
        start_jobs(s);
    pthread_mutex_unlock(&s->mu);
}

/* Loop thread, s->mu held: the job's outcome, and the files that go with it (once). */
static void decide_end(qd_sched *s, run *r)
{
    /* another host owns the job now: its files and its record are that host's to settle */
    if (!r->lost && r->rc == 0 && s->shared && !qd_sched_lease_held(s, r))
        r->lost = 1;
    if (r->lost) {
        r->end = "lost";
        return;
    }
    int aborted = r->rc == QS_EABORTED || (r->rc != 0 && atomic_load(&r->abort));
    int requeue = aborted && r->shutdown && !r->cancelled;
    if (!requeue && r->has_resume)   /* files settle before the state says so */
        qd_rm_rf(r->resume);
    if (r->rc == 0 && r->unrecorded_events) {
        qs_error(&r->err, QS_EIO, "the job's events could not be recorded: the state dir's disk is full");
        r->rc = QS_EIO;
    } else if (aborted && r->unrecorded_events && !requeue && !r->cancelled) {
        qs_error(&r->err, QS_EIO, "stopped: the job's events could not be recorded (the state dir's disk is full)");
        r->rc = QS_EIO;
        aborted = 0;
    }
    if (r->rc == 0) {
        char final[PATH_MAX];
        qd_store_job_dir(s->st, r->id, final, sizeof final);
        qd_rm_rf(final);
        if (rename(r->outdir, final) < 0) {
            qs_error(&r->err, QS_EIO, "publishing the artifacts (%s → %s): %s", r->outdir, final, strerror(errno));
            r->rc = QS_EIO;
        }
    }
    if (r->rc == 0) {
        r->end = "succeeded";
    } else if (requeue) {
        r->end = "queued";
    } else {
        qd_rm_rf(r->outdir);
        r->end = aborted ? "cancelled" : "failed";
    }
}

/* A final state was recorded: tell the on_end hook (webhooks). */
static void ended(qd_sched *s, const char *id)
{
    if (s->o.on_end)
        s->o.on_end(s->o.end_ud, id);
}

/* Loop thread, s->mu held: writes the decided end to the store. 0, or a QD_ST_* code (the caller
 * retries later). */
static int record_end(qd_sched *s, run *r)
{
    int rc;
    const char *owner = s->shared ? qd_store_host(s->st) : NULL;   /* every end checks the lease */
    if (!strcmp(r->end, "lost")) {
        QD_LOG_WARNING("job %s (%s): its lease was lost (another host runs it now); nothing recorded", r->id, r->type);
        return 0;
    }
    if (!strcmp(r->end, "succeeded")) {
        /* artifact events first, so a client that sees "succeeded" can download everything */
        if (!r->end_events_done) {
            size_t i;
            json_t *a;
            int n = (int)json_array_size(r->artifacts), k = 0;
            qd_event_in *ev = calloc((size_t)n + 1, sizeof *ev);
            if (!ev)
                return QD_ST_DB;
            json_array_foreach(r->artifacts, i, a) {
                json_t *d = json_deep_copy(a);
                char url[512];
                snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/%s", r->id, json_string_value(json_object_get(a, "name")));
                json_object_set_new(d, "url", json_string(url));
                ev[k++] = (qd_event_in){ .job = r->id, .type = "artifact", .data = d };
            }
            rc = qd_store_events_add(s->st, k, ev);
            for (int j = 0; j < k; j++)
                json_decref(ev[j].data);
            free(ev);
            if (rc < 0)
                return rc;
            r->end_events_done = 1;
        }
        qd_job_update u = { .set_finished = 1, .result = r->result ? r->result : json_object(),
                            .artifacts = r->artifacts, .owner = owner };
        rc = qd_store_job_transition(s->st, r->id, "running", "succeeded", &u, NULL);
        if (!r->result)
            json_decref(u.result);
        if (rc == 0) {
            count_finished(s, 0, r->duration);
            QD_LOG_INFO("job %s (%s) succeeded in %.1f s", r->id, r->type, r->duration);
            ended(s, r->id);
        }
    } else if (!strcmp(r->end, "queued")) {
        json_t *extra = json_pack("{s:s}", "reason", "requeued: the daemon is stopping");
        qd_job_update u = { .event_extra = extra, .owner = owner };
        rc = qd_store_job_transition(s->st, r->id, "running", "queued", &u, NULL);
        json_decref(extra);
        if (rc == 0)
            QD_LOG_INFO("job %s (%s) stopped for shutdown; requeued", r->id, r->type);
    } else if (!strcmp(r->end, "cancelled")) {
        qd_job_update u = { .set_finished = 1, .owner = owner };
        rc = qd_store_job_transition(s->st, r->id, "running", "cancelled", &u, NULL);
        if (rc == 0) {
            count_finished(s, 2, r->duration);
            QD_LOG_INFO("job %s (%s) cancelled after %.1f s", r->id, r->type, r->duration);
            ended(s, r->id);
        }
    } else {
        json_t *err = json_pack("{s:s, s:s}", "code", job_error_code(r->rc), "message",
                                r->err.msg[0] ? qd_store_relative(s->st, r->err.msg) : qs_strerror(r->rc));
        qd_job_update u = { .set_finished = 1, .error = err, .owner = owner };
        rc = qd_store_job_transition(s->st, r->id, "running", "failed", &u, NULL);
        json_decref(err);
        if (rc == 0) {
            count_finished(s, 1, r->duration);
            QD_LOG_INFO("job %s (%s) failed: %s", r->id, r->type, r->err.msg);
            ended(s, r->id);
        }
    }
    /* a job no longer running (cancelled by a racing request, gone) has nothing left to record */
    return rc == QD_ST_CONFLICT || rc == QD_ST_NOTFOUND ? 0 : rc;
}

static void arm_retry(qd_sched *s)
{
    if (!uv_is_active((uv_handle_t *)&s->retry) && !s->closing)
        uv_timer_start(&s->retry, on_retry, RETRY_MS, RETRY_MS);
}

/* Loop thread: the worker is done; record the outcome. */
static void after_work_cb(uv_work_t *req, int status)
{
    run *r = req->data;
    qd_sched *s = r->s;
    (void)status;
    flush_events(s);   /* the job's own events go before its final state */

    pthread_mutex_lock(&s->mu);
    for (run **pp = &s->running; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            s->nrunning--;
            break;
        }
    pthread_cond_broadcast(&s->cv);
    if (s->abandoned) {   /* qd_sched_stop gave up waiting and requeued the record already */
        pthread_mutex_unlock(&s->mu);
        run_free(r);
        return;
    }
    r->duration = qd_sched_mono_now() - r->started;
    decide_end(s, r);
    int rc = record_end(s, r);
    if (rc < 0) {
        QD_LOG_ERROR("job %s: recording its end (%s) failed (%d); retrying", r->id, r->end, rc);
        r->next = s->ending;
        s->ending = r;
        arm_retry(s);
        r = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (r) {
        if (s->o.notify)
            s->o.notify(s->o.ud, r->id);
        run_free(r);
    }
    qd_sched_next_step(s);
}

/* The retry timer (loop thread): ends not yet recorded, then the stalled queue. */
static void on_retry(uv_timer_t *t)
{
    qd_sched *s = t->data;
    flush_events(s);
    pthread_mutex_lock(&s->mu);
    run *done_list = NULL;
    for (run **pp = &s->ending; *pp;) {
        run *r = *pp;
        if (record_end(s, r) == 0) {
            *pp = r->next;
            r->next = done_list;
            done_list = r;
        } else {
            pp = &r->next;
        }
    }
    requeue_orphans(s);
    s->stalled = 0;
    if (s->stopping)
        maybe_close(s);
    else
        start_jobs(s);
    if (!s->ending && !s->stalled && !json_array_size(s->orphans))
        uv_timer_stop(&s->retry);
    pthread_mutex_unlock(&s->mu);
    while (done_list) {
        run *next = done_list->next;
        if (s->o.notify)
            s->o.notify(s->o.ud, done_list->id);
        run_free(done_list);
        done_list = next;
    }
}

/* Resolves the spec's references into file paths. */
static void set_path(qd_sched *s, run *r, int slot, qd_kind kind, json_t *id)
{
    if (!json_is_string(id))
        return;
    json_t *rec = qd_store_get(s->st, kind, json_string_value(id));
    if (!rec)
        return;   /* impossible while the job is live (delete refuses); the pipeline reports it */
    char path[PATH_MAX];
    qd_store_file_path(s->st, kind, json_string_value(id), json_string_value(json_object_get(rec, "format")),
                       path, sizeof path);
    r->paths[slot] = strdup(path);
    json_decref(rec);
}

/* Loop thread, s->mu held: starts queued jobs while workers are free. */
static void start_jobs(qd_sched *s)
{
    while (s->nrunning < s->o.workers && (s->shared || s->qlen > 0)) {
        char id[32];
        if (s->shared) {   /* the store's queue, shared with the other hosts: a claim takes the lease */
            int c = qd_store_claim(s->st, id);
            if (c <= 0) {
                if (c < 0)
                    QD_LOG_WARNING("claiming a job failed (%d); trying again at the next poll", c);
                break;
            }
        } else {
            memcpy(id, s->queue[s->qhead], sizeof id);
            s->qhead++;
            s->qlen--;
        }
        run *r = calloc(1, sizeof *r);
        if (!r) {
            QD_LOG_ERROR("out of memory starting job %s", id);
            if (s->shared)   /* claimed: let the lease lapse, another host or a later poll runs it */
                QD_LOG_WARNING("job %s is requeued when its lease expires", id);
            break;
        }
        r->s = s;
        memcpy(r->id, id, sizeof id);
        r->spec = qd_store_job_spec(s->st, id);
        snprintf(r->type, sizeof r->type, "%s", json_string_value(json_object_get(r->spec, "type")));
        json_t *sp = r->spec;
        set_path(s, r, 0, QD_MODEL, json_object_get(sp, "model"));
        set_path(s, r, 1, QD_DATASET, json_object_get(sp, "calibration"));
        set_path(s, r, 2, QD_DATASET, json_object_get(json_object_get(sp, "train"), "data"));
        set_path(s, r, 3, QD_DATASET, json_object_get(json_object_get(sp, "train"), "labels"));
        set_path(s, r, 4, QD_DATASET, json_object_get(json_object_get(sp, "validation"), "data"));
        set_path(s, r, 5, QD_DATASET, json_object_get(json_object_get(sp, "validation"), "labels"));

        const char *dir = qd_store_dir(s->st);
        snprintf(r->outdir, sizeof r->outdir, "%s/tmp/%s", dir, id);
        snprintf(r->resume, sizeof r->resume, "%s/tmp/%s.resume", dir, id);
        r->jt = job_type(s, r->type);
        int resumable = r->jt && r->jt->resumable;
        if (s->shared) {
            qd_sched_attempt_dirs(s, r, resumable);
        } else if (resumable && exists(r->outdir)) {   /* the last attempt's output is the newest */
            qd_rm_rf(r->resume);
            rename(r->outdir, r->resume);
        }
        if (!resumable)
            qd_rm_rf(r->resume);
        if (!s->shared)
            qd_rm_rf(r->outdir);
        r->has_resume = resumable && exists(r->resume);

        /* the folder first: a full disk then leaves the job queued, as if not tried yet */
        int rc = 0, full = 0;
        if (mkdir(r->outdir, 0750) < 0) {
            QD_LOG_ERROR("job %s: cannot create %s: %s", id, r->outdir, strerror(errno));
            full = errno == ENOSPC || errno == EDQUOT;
            if (!full) {
                char msg[512];
                snprintf(msg, sizeof msg, "cannot create the job's output folder tmp/%s: %s", id, strerror(errno));
                json_t *err = json_pack("{s:s, s:s}", "code", "io_error", "message", msg);
                qd_job_update f = { .set_finished = 1, .error = err, .owner = s->shared ? qd_store_host(s->st) : NULL };
                rc = qd_store_job_transition(s->st, id, s->shared ? "running" : "queued", "failed", &f, NULL);
                json_decref(err);
                if (rc == 0)
                    ended(s, id);
                full = rc == QD_ST_DB || rc == QD_ST_FULL;
                rc = -1;
            }
        } else if (!s->shared) {
            qd_job_update u = { .set_started = 1 };
            rc = qd_store_job_transition(s->st, id, "queued", "running", &u, NULL);
            full = rc == QD_ST_DB || rc == QD_ST_FULL;
            if (rc < 0)
                rmdir(r->outdir);
        }
        if (full && s->shared) {   /* back to the shared queue */
            QD_LOG_WARNING("job %s: cannot start it now (the artifact dir's disk is full?); requeued", id);
            qd_store_requeue(s->st, id);
            run_free(r);
            break;
        }
        if (full) {   /* back to the head of the queue; the retry timer tries again */
            QD_LOG_WARNING("job %s: cannot start it now (the state dir's disk is full?); retrying", id);
            s->qhead--;
            s->qlen++;
            s->stalled = 1;
            arm_retry(s);
            run_free(r);
            break;
        }
        if (s->o.notify)
            s->o.notify(s->o.ud, id);
        if (rc < 0) {
            run_free(r);
            continue;
        }
        r->started = r->renewed = qd_sched_mono_now();
        r->req.data = r;
        r->next = s->running;
        s->running = r;
        s->nrunning++;
        QD_LOG_INFO("job %s (%s) started%s", id, r->type, r->has_resume ? " (resuming)" : "");
        uv_queue_work(&s->loop, &r->req, work_cb, after_work_cb);
    }
    if (s->qhead > 64 && s->qhead > s->qcap / 2) {   /* compact the consumed front */
        memmove(s->queue, s->queue + s->qhead, (size_t)s->qlen * sizeof s->queue[0]);
        s->qhead = 0;
    }
}

static void on_close(uv_handle_t *h) { (void)h; }

/* s->mu held. The loop ends once its handles are closed. Ends that still cannot be recorded stay
 * "running" in the store: the next start requeues those jobs. */
static void maybe_close(qd_sched *s)
{
    if (s->stopping && s->nrunning == 0 && !s->closing) {
        s->closing = 1;
        for (run *r = s->ending; r; r = r->next)
            QD_LOG_WARNING("job %s: its end (%s) was never recorded; it runs again at the next start", r->id, r->end);
        uv_close((uv_handle_t *)&s->retry, on_close);
        uv_close((uv_handle_t *)&s->poll, on_close);
        uv_close((uv_handle_t *)&s->wake, on_close);
    }
}

static void on_wake(uv_async_t *h)
{
    qd_sched *s = h->data;
    flush_events(s);
    qd_sched_next_step(s);
}

static void loop_main(void *arg)
{
    qd_sched *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* s->mu held */
static int queue_push(qd_sched *s, const char *id)
{
    if (s->qhead + s->qlen == s->qcap) {
        int cap = s->qcap ? s->qcap * 2 : 64;
        void *q = realloc(s->queue, (size_t)cap * sizeof s->queue[0]);
        if (!q)
            return -1;
        s->queue = q;
        s->qcap = cap;
    }
    snprintf(s->queue[s->qhead + s->qlen], sizeof s->queue[0], "%s", id);
    s->qlen++;
    return 0;
}

/* ---- public ---------------------------------------------------------------------------------- */

int qd_sched_start(qd_store *st, const qd_sched_opts *o, qd_sched **out, char *err, size_t n)
{
    *out = NULL;
    qd_sched *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    s->st = st;
    s->o = *o;
    s->shared = qd_store_shared(st);
    s->stats.workers = o->workers;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->ev_mu, NULL);
    s->ev_tail = &s->ev_head;

    /* libuv sizes its pool from this variable when the first work item is queued */
    char size[16];
    snprintf(size, sizeof size, "%d", o->workers);
    setenv("UV_THREADPOOL_SIZE", size, 1);

    s->orphans = json_array();
    int requeued = qd_store_requeue_running(st, s->orphans);
    if (requeued)
        QD_LOG_NOTICE("%d job%s left running by the previous process requeued", requeued, requeued > 1 ? "s" : "");
    if (json_array_size(s->orphans))   /* a full disk, say: the retry timer tries again */
        QD_LOG_WARNING("%zu job%s left running by the previous process could not be requeued yet",
                       json_array_size(s->orphans), json_array_size(s->orphans) > 1 ? "s" : "");
    json_t *ids = s->shared ? json_array() : qd_store_job_ids(st, "queued");   /* shared: claimed as they come */
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
        queue_push(s, json_string_value(v));
    json_decref(ids);
    /* temp outputs of jobs that will not run again */
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/tmp", qd_store_dir(st));
    DIR *d = opendir(tmp);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strncmp(de->d_name, "job_", 4))
                continue;
            char id[32];
            snprintf(id, sizeof id, "%.*s", (int)strcspn(de->d_name, "."), de->d_name);
            char state[16];
            /* kept while the job may run again (queued), or runs (on another host, or left by a
             * process whose requeue failed) */
            if (qd_store_job_state(st, id, state) < 0 || !strcmp(state, "succeeded") ||
                !strcmp(state, "failed") || !strcmp(state, "cancelled")) {
                char p[PATH_MAX];
                snprintf(p, sizeof p, "%s/%s", tmp, de->d_name);
                qd_rm_rf(p);
            }
        }
        closedir(d);
    }

    if (uv_loop_init(&s->loop) < 0 || uv_async_init(&s->loop, &s->wake, on_wake) < 0) {
        snprintf(err, n, "libuv: cannot initialise the loop");
        json_decref(s->orphans);
        free(s);
        return -1;
    }
    s->wake.data = s;
    uv_timer_init(&s->loop, &s->retry);
    s->retry.data = s;
    uv_timer_init(&s->loop, &s->poll);
    s->poll.data = s;
    if (s->shared)
        qd_sched_hosts_start(s);
    if (json_array_size(s->orphans))
        arm_retry(s);
    if (uv_thread_create(&s->thread, loop_main, s) < 0) {
        snprintf(err, n, "libuv: cannot start the loop thread");
        return -1;
    }
    if (s->qlen)
        QD_LOG_INFO("%d queued job%s", s->qlen, s->qlen > 1 ? "s" : "");
    uv_async_send(&s->wake);
    *out = s;
    return 0;
}

int qd_sched_type_known(const qd_sched *s, const char *type)
{
    return job_type(s, type) != NULL;
}

int qd_sched_submit(qd_sched *s, const char *id, const char *type, json_t *spec, int nrefs,
                    const qd_ref *refs, const char **bad_field)
{
    *bad_field = NULL;
    pthread_mutex_lock(&s->mu);
    int rc;
    if (s->stopping)
        rc = QD_SCHED_STOPPING;
    else if ((s->shared ? qd_sched_shared_queued(s) : s->qlen) >= s->o.max_queue)
        rc = QD_SCHED_FULL;
    else if ((rc = qd_store_job_create(s->st, id, type, spec, nrefs, refs, bad_field)) == 0 && !s->shared)
        rc = queue_push(s, id) < 0 ? QD_ST_DB : 0;
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) {
        if (s->o.notify)
            s->o.notify(s->o.ud, id);
        uv_async_send(&s->wake);
    }
    return rc;
}

int qd_sched_cancel(qd_sched *s, const char *id)
{
    pthread_mutex_lock(&s->mu);
    for (run *r = s->running; r; r = r->next)
        if (!strcmp(r->id, id)) {
            r->cancelled = 1;
            atomic_store(&r->abort, 1);
            pthread_mutex_unlock(&s->mu);
            return 1;
        }
    qd_job_update u = { .set_finished = 1 };
    int rc = qd_store_job_transition(s->st, id, "queued", "cancelled", &u, NULL);
    if (rc == QD_ST_CONFLICT && s->shared) {   /* running on another host: it reads the request back */
        rc = qd_store_request_cancel(s->st, id);
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    if (rc == 0) {
        for (int i = 0; i < s->qlen; i++)
            if (!strcmp(s->queue[s->qhead + i], id)) {
                memmove(s->queue + s->qhead + i, s->queue + s->qhead + i + 1,
                        (size_t)(s->qlen - i - 1) * sizeof s->queue[0]);
                s->qlen--;
                break;
            }
        count_finished(s, 2, -1);
        ended(s, id);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == 0 && s->o.notify)
        s->o.notify(s->o.ud, id);
    return rc;
}

void qd_sched_get_stats(qd_sched *s, qd_sched_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->queued = s->shared ? qd_sched_shared_queued(s) : s->qlen;
    out->running = s->nrunning;
    pthread_mutex_unlock(&s->mu);
}

int qd_sched_stop(qd_sched *s, int timeout_s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    for (run *r = s->running; r; r = r->next) {
        r->shutdown = 1;
        atomic_store(&r->abort, 1);
    }
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->wake);

    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_s;
    pthread_mutex_lock(&s->mu);
    while (s->nrunning > 0)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT)
            break;
    int left = s->nrunning;
    if (left) {
        /* The engine did not poll its abort flag in time. The records go back to the queue now;
         * the next start runs those jobs again. */
        s->abandoned = 1;
        for (run *r = s->running; r; r = r->next) {
            qd_store_requeue(s->st, r->id);
            QD_LOG_WARNING("job %s did not stop within %d s; requeued", r->id, timeout_s);
        }
    }
    int closing = s->closing;
    pthread_mutex_unlock(&s->mu);
    if (!left) {
        if (!closing)
            uv_async_send(&s->wake);   /* let the loop close its handle and return */
        uv_thread_join(&s->thread);
    }
    return left;
}

void qd_sched_free(qd_sched *s)
{
    if (!s)
        return;
    uv_loop_close(&s->loop);
    while (s->ev_head) {   /* events of jobs that ended after the loop stopped: already moot */
        pending *next = s->ev_head->next;
        json_decref(s->ev_head->data);
        free(s->ev_head);
        s->ev_head = next;
    }
    while (s->ending) {
        run *next = s->ending->next;
        run_free(s->ending);
        s->ending = next;
    }
    json_decref(s->orphans);
    free(s->queue);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->ev_mu);
    free(s);
}
