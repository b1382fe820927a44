/* The persistent store: models, data sets, jobs and every job's event log in one SQLite database
 * (<state>/quantd.db, WAL), plus the files they name under the state dir:
 *
 *   <state>/models/<id>.onnx      <state>/datasets/<id>.npy|.npz
 *   <state>/jobs/<id>/            a finished job's artifacts (renamed into place whole)
 *   <state>/tmp/                  uploads and running jobs' outputs in progress (emptied at start)
 *
 * Records come out as jansson objects in the API's shape, so routes reply with them as they are.
 * Every function is thread-safe (one connection behind a mutex; statements are short). A job's
 * state only changes through qd_store_job_transition, a conditional update (from → to) that also
 * appends the `state` event in the same transaction: two threads racing to move a job (cancel vs
 * start) cannot both win, and the event log always agrees with the record.
 *
 *   qd_store *st;
 *   if (qd_store_open("/var/lib/quantd", &st, err, sizeof err) < 0) …
 *   json_t *m = qd_store_get(st, QD_MODEL, "mdl_…");   // NULL when absent
 *   qd_store_close(st); */
#ifndef QD_STORE_H
#define QD_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qd_store qd_store;

enum {
    QD_ST_OK = 0,
    QD_ST_NOTFOUND = -1,   /* no such record */
    QD_ST_BUSY = -2,       /* a live (queued or running) job uses it */
    QD_ST_CONFLICT = -3,   /* the job is not in the expected state */
    QD_ST_DB = -4,         /* SQLite failed (logged) */
    QD_ST_FULL = -5,       /* the state dir's disk is full (SQLITE_FULL): nothing was written */
};

typedef enum qd_kind { QD_MODEL = 0, QD_DATASET = 1 } qd_kind;

int qd_store_open(const char *state_dir, qd_store **out, char *err, size_t errlen);
/* Where the store lives. url NULL, "" or "sqlite": SQLite in the state dir; "postgresql://…": a
 * PostgreSQL database several hosts share (each with its own state dir and the same artifact dir).
 * Schema migrations run at open (store_schema.c). */
typedef struct qd_store_opts {
    const char *state_dir;      /* this host's: the lock, SQLite's database */
    const char *url;
    const char *artifact_dir;   /* models, data sets, job folders, temp files; NULL: the state dir */
    const char *host_id;        /* lease owner name; NULL: <hostname>-<pid> */
    double lease_s;             /* a running job's lease (PostgreSQL); 0: 30 s */
} qd_store_opts;
int qd_store_open_ex(const qd_store_opts *o, qd_store **out, char *err, size_t errlen);
int qd_store_shared(const qd_store *st);   /* other hosts share the queue (PostgreSQL) */
const char *qd_store_host(const qd_store *st);
double qd_store_lease_s(const qd_store *st);
void qd_store_close(qd_store *st);
const char *qd_store_dir(const qd_store *st);   /* the artifact dir */
/* Rewrites, in place, the paths under the state dir in msg relative to it ("/var/lib/quantd/models/
 * mdl_1.onnx: …" → "models/mdl_1.onnx: …"): job errors, events and upload replies reach clients,
 * who have no business knowing the server's file system. Returns msg. Any thread. */
char *qd_store_relative(const qd_store *st, char *msg);

/* A fresh id: prefix + 16 hex digits from the kernel's random source ("mdl_3f…"). */
void qd_store_new_id(const char *prefix, char out[32]);
double qd_now(void);   /* unix time, seconds */
/* "2026-11-27T10:30:21.123Z" (UTC) into out[32]. */
void qd_time_str(double t, char out[32]);

/* Creates an empty temp file under <state>/tmp (mode 0600); path receives its name. fd or -1. */
int qd_store_tmpfile(qd_store *st, const char *suffix, char *path, size_t n);
/* Where an upload's file lives (ext: "onnx", "npy" or "npz"). */
void qd_store_file_path(const qd_store *st, qd_kind kind, const char *id, const char *ext, char *out,
                        size_t n);
/* <state>/jobs/<id> */
void qd_store_job_dir(const qd_store *st, const char *id, char *out, size_t n);

/* --- models and data sets ---------------------------------------------------------------- */
/* rec: {id, name, sha256, size, ext, …info}; borrowed. The file must already be in place. */
int qd_store_add(qd_store *st, qd_kind kind, json_t *rec);
json_t *qd_store_get(qd_store *st, qd_kind kind, const char *id);          /* new ref or NULL */
/* All records, newest first; sha256 (may be NULL) keeps only those with that hash. */
json_t *qd_store_list(qd_store *st, qd_kind kind, const char *sha256);
/* Deletes the record and its file; QD_ST_BUSY when a live job references it. */
int qd_store_delete(qd_store *st, qd_kind kind, const char *id);

/* --- jobs ---------------------------------------------------------------------------------- */
typedef struct qd_ref { const char *field; qd_kind kind; const char *id; } qd_ref;

/* Inserts a queued job referencing the given uploads, with its first `state` event. When a
 * reference does not exist: QD_ST_NOTFOUND and *bad_field = its field. */
int qd_store_job_create(qd_store *st, const char *id, const char *type, json_t *spec, int nrefs,
                        const qd_ref *refs, const char **bad_field);
json_t *qd_store_job_get(qd_store *st, const char *id);                     /* new ref or NULL */
/* The job's state into out[16] (QD_ST_NOTFOUND when absent). */
int qd_store_job_state(qd_store *st, const char *id, char out[16]);
json_t *qd_store_job_spec(qd_store *st, const char *id);                    /* new ref or NULL */
/* Ids of the jobs in state, oldest first (new ref: array of strings). */
json_t *qd_store_job_ids(qd_store *st, const char *state);

typedef struct qd_job_update {
    int set_started, set_finished, clear_times;
    json_t *result;      /* borrowed; NULL = unchanged */
    json_t *error;       /* {code, message} or NULL */
    json_t *artifacts;   /* [{name, size, sha256}] or NULL */
    json_t *event_extra; /* extra fields merged into the state event (borrowed, may be NULL) */
    const char *owner;   /* with set_started: takes the lease (lease_s); else: only if it holds it */
    double lease_s;
} qd_job_update;

/* Moves the job from state `from` (NULL: any non-terminal state) to `to`, applies u (may be NULL)
 * and appends a `state` event; *seq (may be NULL) receives the event's id. QD_ST_CONFLICT when the
 * job was not in `from`, QD_ST_NOTFOUND when it does not exist. */
int qd_store_job_transition(qd_store *st, const char *id, const char *from, const char *to,
                            const qd_job_update *u, int64_t *seq);
/* A job left running by a previous process → queued again (with a `state` event saying so). */
int qd_store_requeue(qd_store *st, const char *id);
/* Every such job (several hosts: those whose lease this host holds); returns how many were requeued, and appends to left (may be NULL) the ids of
 * those that could not be (a full disk). */
int qd_store_requeue_running(qd_store *st, json_t *left);
/* counts[state] for the states in qd_job_states (queued, running, succeeded, failed, cancelled). */
extern const char *const qd_job_states[5];
int qd_store_job_counts(qd_store *st, int64_t counts[5]);

/* --- events ------------------------------------------------------------------------------- */
typedef struct qd_event_in { const char *job; const char *type; json_t *data; } qd_event_in;

/* Appends events (data borrowed) in one transaction, in order; a `progress` event also becomes
 * the job's current progress. */
int qd_store_events_add(qd_store *st, int n, const qd_event_in *ev);

/* One event read back: data is its JSON text. */
typedef struct qd_event_out { int64_t seq; double ts; char type[16]; char *data; } qd_event_out;
/* Events of job with seq > after, oldest first, at most max; returns the count (or <0).
 * Caller frees each data. */
int qd_store_events_read(qd_store *st, const char *job, int64_t after, int max, qd_event_out *out);

/* --- deletion, pages, retention (store_admin.c) ------------------------------------------ */

/* Deletes a finished (succeeded, failed, cancelled) job: its record, references, events and its
 * folder of artifacts. QD_ST_CONFLICT when it is queued or running, QD_ST_NOTFOUND. */
int qd_store_job_delete(qd_store *st, const char *id);
/* Ids of the jobs (newest first, at most max) that reference the upload; live_only: only the
 * queued and running ones. New ref: array of strings. */
json_t *qd_store_ref_jobs(qd_store *st, const char *upload_id, int live_only, int max);

/* A page of a list, newest first: at most limit items after the cursor `after` (0: from the
 * start; else a page's *next); filters left NULL do not apply. Cursors are positions in the list,
 * so deleting items between two requests skips nothing. */
typedef struct qd_list_query {
    int limit;
    int64_t after;
    const char *state, *type;   /* jobs only */
    const char *name;           /* uploads: their name; jobs: the spec's name */
    const char *sha256;         /* uploads only */
} qd_list_query;
/* *items: the page (new ref); *next: the cursor of the next page, 0 when this one is the last. */
int qd_store_job_page(qd_store *st, const qd_list_query *q, json_t **items, int64_t *next);
int qd_store_upload_page(qd_store *st, qd_kind kind, const qd_list_query *q, json_t **items, int64_t *next);

/* Bytes the state dir holds: the database, uploads, job folders and temp files. */
int64_t qd_store_bytes(qd_store *st);
/* Retention: removes finished jobs that ended more than max_age_s ago (0: no age limit), then, while
 * the state dir holds more than max_bytes (0: no limit), the oldest finished jobs, then the oldest
 * uploads no job references. Counts go to *jobs and *uploads (may be NULL). */
int qd_store_prune(qd_store *st, double max_age_s, int64_t max_bytes, int *jobs, int *uploads);

/* Appends one event to the job's log unless the job is gone (QD_ST_NOTFOUND): for writers that
 * run after a job ended (webhooks), when it may have been deleted meanwhile. */
int qd_store_event_add_if_job(qd_store *st, const char *job, const char *type, json_t *data);

/* Finished jobs whose spec has a `notify` URL that no webhook event reports delivered and that
 * had fewer than max_attempts attempts: [[id, attempts made], …], oldest first (new ref). What a
 * stopped or killed daemon left undelivered. */
json_t *qd_store_webhooks_pending(qd_store *st, int max_attempts);

/* --- several hosts (store_lease.c) -------------------------------------------------------- */
/* Claims the oldest queued job no other host is claiming (FOR UPDATE SKIP LOCKED): it becomes
 * running under this host's lease. 1 and its id, 0 when there is none, or a QD_ST_* code. */
int qd_store_claim(qd_store *st, char id[32]);
/* Renews this host's lease of a running job. 0 (*cancel: someone asked to cancel it),
 * QD_ST_CONFLICT when the lease is lost (requeued by another host, ended), or a QD_ST_* code. */
int qd_store_lease_renew(qd_store *st, const char *id, int *cancel);
/* Asks the host that runs the job to cancel it (it sees the flag at its next renewal). 1 when the
 * job is running, QD_ST_CONFLICT when it is not, QD_ST_NOTFOUND. */
int qd_store_request_cancel(qd_store *st, const char *id);
/* Running jobs whose lease expired (their host died) → queued again (cancelled, if a cancellation
 * was asked meanwhile: their ids are appended to cancelled, may be NULL), with a `state` event
 * naming the host. Returns how many, or a QD_ST_* code. */
int qd_store_requeue_expired(qd_store *st, json_t *cancelled);

/* Removes a directory tree (no symlinks followed); for the state dir's temp and job folders. */
void qd_rm_rf(const char *path);

#endif
