/* The persistent store; see store.h.
 *
 * Design: two SQLite connections, each behind its own mutex: one for writes, one for reads. The
 * daemon's statements are tiny (a row by primary key, a few events), so serialising them costs
 * less than a connection per thread would, and serialised writes make every multi-statement
 * operation (check references + insert, conditional state change + event) trivially atomic. In
 * WAL mode a reader never waits for the writer, so GET requests are not held up by a commit's
 * fsync. Statements are prepared once per connection and cached by slot. synchronous=FULL: a
 * reply is sent only after its transaction is on disk, so an acknowledged upload or job survives
 * a crash or a power cut.
 *
 * Event ids are per job (1, 2, 3, …): the SSE stream's `id:` lines, so Last-Event-ID is simply
 * "the last seq I saw". */
#include "jobs/store.h"
#include "jobs/store_int.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

const char *const qd_job_states[5] = { "queued", "running", "succeeded", "failed", "cancelled" };
const char *const qd_st_tables[2] = { "models", "datasets" };

static const char *const SQL[S_NSLOTS] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_SYNC_NORMAL] = "PRAGMA synchronous=NORMAL",
    [S_SYNC_FULL] = "PRAGMA synchronous=FULL",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_UPLOAD_INSERT_M] = "INSERT INTO models(id,name,sha256,size,ext,created,info) VALUES(?,?,?,?,?,?,?)",
    [S_UPLOAD_INSERT_D] = "INSERT INTO datasets(id,name,sha256,size,ext,created,info) VALUES(?,?,?,?,?,?,?)",
    [S_UPLOAD_GET_M] = "SELECT id,name,sha256,size,ext,created,info FROM models WHERE id=?",
    [S_UPLOAD_GET_D] = "SELECT id,name,sha256,size,ext,created,info FROM datasets WHERE id=?",
    [S_UPLOAD_DEL_M] = "DELETE FROM models WHERE id=?",
    [S_UPLOAD_DEL_D] = "DELETE FROM datasets WHERE id=?",
    [S_REF_LIVE] = "SELECT j.id FROM job_refs r JOIN jobs j ON j.id=r.job"
                   " WHERE r.ref=? AND j.state IN ('queued','running') LIMIT 1",
    [S_JOB_INSERT] = "INSERT INTO jobs(id,type,state,created,spec) VALUES(?,?,'queued',?,?)",
    [S_REF_INSERT] = "INSERT INTO job_refs(job,ref) VALUES(?,?)",
    [S_JOB_GET] = "SELECT id,type,state,created,started,finished,spec,progress,result,error,artifacts,"
                  "attempts FROM jobs WHERE id=?",
    [S_JOB_STATE] = "SELECT state FROM jobs WHERE id=?",
    [S_JOB_SPEC] = "SELECT spec FROM jobs WHERE id=?",
    /* the per-job sequence: the row lock orders writers from every host (migration 2) */
    [S_EVENT_NEXT] = "UPDATE jobs SET last_seq=last_seq+1 WHERE id=? RETURNING last_seq",
    [S_JOB_LOCK] = "SELECT state, lease_owner FROM jobs WHERE id=?",
    [S_EVENT_INSERT] = "INSERT INTO events(job,seq,ts,type,data) VALUES(?,?,?,?,?)",
    [S_EVENT_ONE] = "",   /* PostgreSQL only */
    [S_EVENT_READ] = "SELECT seq,ts,type,data FROM events WHERE job=? AND seq>? ORDER BY seq LIMIT ?",
    [S_JOB_PROGRESS] = "UPDATE jobs SET progress=? WHERE id=?",
};

/* PostgreSQL's text where it differs ("": a statement that does not apply there). */
static const char *const SQL_PG[S_NSLOTS] = {
    [S_BEGIN] = "BEGIN",
    [S_SYNC_NORMAL] = "SET synchronous_commit=off",
    [S_SYNC_FULL] = "SET synchronous_commit=on",
    /* two hosts moving the same job wait for each other here */
    [S_JOB_LOCK] = "SELECT state, lease_owner FROM jobs WHERE id=? FOR UPDATE",
    /* S_EVENT_NEXT + S_EVENT_INSERT in one round trip (a short job writes a few dozen events) */
    [S_EVENT_ONE] = "WITH s AS (UPDATE jobs SET last_seq=last_seq+1 WHERE id=?1 RETURNING last_seq)"
                    " INSERT INTO events(job,seq,ts,type,data) SELECT ?1, last_seq, ?2, ?3, ?4 FROM s RETURNING seq",
};

/* ---- helpers --------------------------------------------------------------------------- */

double qd_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

void qd_time_str(double t, char out[32])
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t k = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, 32 - k, ".%03dZ", (int)((t - (double)s) * 1000) % 1000);
}

void qd_store_new_id(const char *prefix, char out[32])
{
    uint8_t r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {   /* never on Linux ≥ 3.17; be safe */
        uint64_t x = (uint64_t)(qd_now() * 1e6) ^ ((uint64_t)getpid() << 32);
        memcpy(r, &x, sizeof r);
    }
    int k = snprintf(out, 32, "%s", prefix);
    for (int i = 0; i < 8 && k + 2 < 32; i++)
        k += snprintf(out + k, 32 - (size_t)k, "%02x", r[i]);
}

static qd_stmt *prep(conn *c, int slot)
{
    if (!c->stmt[slot]) {
        const char *sql = qd_db_kind_of(c->db) == QD_DB_PG && SQL_PG[slot] ? SQL_PG[slot] : SQL[slot];
        if (!sql[0])
            return NULL;
        c->stmt[slot] = qd_db_prepare(c->db, sql);
    }
    return c->stmt[slot];
}

void qd_st_done(qd_stmt *s) { qd_stmt_reset(s); }

int qd_st_step_done(conn *c, qd_stmt *s)
{
    (void)c;
    int rc = qd_stmt_step(s);
    qd_st_done(s);
    return rc < 0 ? rc : 0;
}

static int exec_slot(conn *c, int slot)
{
    if (qd_db_kind_of(c->db) == QD_DB_PG && SQL_PG[slot] && !SQL_PG[slot][0])
        return 0;   /* no such setting there */
    qd_stmt *s = prep(c, slot);
    return s ? qd_st_step_done(c, s) : QD_ST_DB;
}

int qd_st_begin(conn *c) { return exec_slot(c, S_BEGIN); }
int qd_st_commit(conn *c)
{
    int rc = exec_slot(c, S_COMMIT);
    if (rc < 0)
        exec_slot(c, S_ROLLBACK);
    return rc;
}
void qd_st_rollback(conn *c) { exec_slot(c, S_ROLLBACK); }

void qd_st_bind_text(qd_stmt *s, int i, const char *v) { qd_stmt_bind_text(s, i, v); }

/* Binds a JSON value as its compact text (NULL → SQL NULL). */
void qd_st_bind_json(qd_stmt *s, int i, const json_t *v)
{
    qd_stmt_bind_text_free(s, i, v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10)) : NULL);
}

json_t *qd_st_col_json(qd_stmt *s, int i)
{
    const char *t = qd_stmt_text(s, i);
    if (!t)
        return json_null();
    json_t *v = json_loads(t, JSON_DECODE_ANY, NULL);
    return v ? v : json_null();
}

json_t *qd_st_col_time(qd_stmt *s, int i)
{
    if (qd_stmt_isnull(s, i))
        return json_null();
    char buf[32];
    qd_time_str(qd_stmt_double(s, i), buf);
    return json_string(buf);
}

void qd_rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        struct stat sb;
        if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
            qd_rm_rf(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

const char *qd_store_dir(const qd_store *st) { return st->dir; }

char *qd_store_relative(const qd_store *st, char *msg)
{
    size_t dl = strlen(st->dir);
    for (char *p = msg; (p = strstr(p, st->dir));) {
        if (p[dl] == '/')
            memmove(p, p + dl + 1, strlen(p + dl + 1) + 1);
        else
            p += dl;
    }
    return msg;
}

int qd_store_tmpfile(qd_store *st, const char *suffix, char *path, size_t n)
{
    char id[32];
    qd_store_new_id("up_", id);
    snprintf(path, n, "%s/tmp/%s%s", st->dir, id, suffix ? suffix : "");
    return open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

void qd_store_file_path(const qd_store *st, qd_kind kind, const char *id, const char *ext, char *out, size_t n)
{
    snprintf(out, n, "%s/%s/%s.%s", st->dir, qd_st_tables[kind], id, ext);
}

void qd_store_job_dir(const qd_store *st, const char *id, char *out, size_t n)
{
    snprintf(out, n, "%s/jobs/%s", st->dir, id);
}

/* ---- models and data sets ---------------------------------------------------------------- */

/* Row (id,name,sha256,size,ext,created,info) → {id, name, sha256, size, format, created, …info} */
json_t *qd_st_upload_row(qd_stmt *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(qd_stmt_text(s, 0)));
    json_object_set_new(o, "name", json_string(qd_stmt_text(s, 1)));
    json_object_set_new(o, "sha256", json_string(qd_stmt_text(s, 2)));
    json_object_set_new(o, "size", json_integer(qd_stmt_int64(s, 3)));
    json_object_set_new(o, "format", json_string(qd_stmt_text(s, 4)));
    json_object_set_new(o, "created", qd_st_col_time(s, 5));
    json_t *info = qd_st_col_json(s, 6);
    if (json_is_object(info))
        json_object_update(o, info);
    json_decref(info);
    return o;
}

int qd_store_add(qd_store *st, qd_kind kind, json_t *rec)
{
    json_t *info = json_deep_copy(rec);
    static const char *const own[] = { "id", "name", "sha256", "size", "ext", "format", "created" };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        json_object_del(info, own[i]);
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    int rc = QD_ST_DB;
    qd_stmt *s = prep(c, kind == QD_MODEL ? S_UPLOAD_INSERT_M : S_UPLOAD_INSERT_D);
    if (s) {
        qd_st_bind_text(s, 1, json_string_value(json_object_get(rec, "id")));
        qd_st_bind_text(s, 2, json_string_value(json_object_get(rec, "name")));
        qd_st_bind_text(s, 3, json_string_value(json_object_get(rec, "sha256")));
        qd_stmt_bind_int64(s, 4, json_integer_value(json_object_get(rec, "size")));
        qd_st_bind_text(s, 5, json_string_value(json_object_get(rec, "ext")));
        qd_stmt_bind_double(s, 6, qd_now());
        qd_st_bind_json(s, 7, info);
        rc = qd_st_step_done(c, s);
    }
    pthread_mutex_unlock(&c->mu);
    json_decref(info);
    return rc;
}

json_t *qd_store_get(qd_store *st, qd_kind kind, const char *id)
{
    json_t *o = NULL;
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = prep(c, kind == QD_MODEL ? S_UPLOAD_GET_M : S_UPLOAD_GET_D);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (qd_stmt_step(s) == 1)
            o = qd_st_upload_row(s);
        qd_st_done(s);
    }
    pthread_mutex_unlock(&c->mu);
    return o;
}

json_t *qd_store_list(qd_store *st, qd_kind kind, const char *sha256)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT id,name,sha256,size,ext,created,info FROM %s %s ORDER BY created DESC, rowid DESC",
             qd_st_tables[kind], sha256 ? "WHERE sha256=?" : "");
    json_t *arr = json_array();
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s;
    if ((s = qd_db_prepare(c->db, sql)) != NULL) {
        if (sha256)
            qd_st_bind_text(s, 1, sha256);
        while (qd_stmt_step(s) == 1)
            json_array_append_new(arr, qd_st_upload_row(s));
        qd_stmt_finalize(s);
    }
    pthread_mutex_unlock(&c->mu);
    return arr;
}

int qd_store_delete(qd_store *st, qd_kind kind, const char *id)
{
    char ext[16] = "";
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    int rc = qd_st_begin(c);
    if (rc == 0) {
        qd_stmt *s = prep(c, S_REF_LIVE);
        qd_st_bind_text(s, 1, id);
        int live = qd_stmt_step(s) == 1;
        qd_st_done(s);
        if (live) {
            rc = QD_ST_BUSY;
        } else {
            s = prep(c, kind == QD_MODEL ? S_UPLOAD_GET_M : S_UPLOAD_GET_D);
            qd_st_bind_text(s, 1, id);
            if (qd_stmt_step(s) == 1)
                snprintf(ext, sizeof ext, "%s", qd_stmt_text(s, 4));
            else
                rc = QD_ST_NOTFOUND;
            qd_st_done(s);
            if (rc == 0) {
                s = prep(c, kind == QD_MODEL ? S_UPLOAD_DEL_M : S_UPLOAD_DEL_D);
                qd_st_bind_text(s, 1, id);
                rc = qd_st_step_done(c, s);
            }
        }
        if (rc == 0)
            rc = qd_st_commit(c);
        else
            qd_st_rollback(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) {   /* the record is gone: from here on no job can reference the file */
        char path[PATH_MAX];
        qd_store_file_path(st, kind, id, ext, path, sizeof path);
        if (unlink(path) < 0 && errno != ENOENT)
            QD_LOG_WARNING("deleting %s: %s", path, strerror(errno));
    }
    return rc;
}

/* ---- events ---------------------------------------------------------------------------- */

/* Appends one event; the caller holds the write lock and a transaction (the next seq is read and
 * used inside it). */
int qd_st_event_insert(conn *c, const char *job, const char *type, const json_t *data, int64_t *seq)
{
    if (qd_st_pg(c)) {
        qd_stmt *s = prep(c, S_EVENT_ONE);
        if (!s)
            return QD_ST_DB;
        qd_st_bind_text(s, 1, job);
        qd_stmt_bind_double(s, 2, qd_now());
        qd_st_bind_text(s, 3, type);
        qd_st_bind_json(s, 4, data);
        int rc = qd_stmt_step(s);
        if (rc == 1 && seq)
            *seq = qd_stmt_int64(s, 0);
        qd_st_done(s);
        return rc == 1 ? 0 : rc < 0 ? rc : QD_ST_NOTFOUND;   /* no row: no such job */
    }
    qd_stmt *s = prep(c, S_EVENT_NEXT);
    if (!s)
        return QD_ST_DB;
    qd_st_bind_text(s, 1, job);
    int step = qd_stmt_step(s);
    int64_t next = step == 1 ? qd_stmt_int64(s, 0) : 0;
    qd_st_done(s);
    if (step <= 0)
        return step < 0 ? step : QD_ST_NOTFOUND;   /* no such job */
    if (!(s = prep(c, S_EVENT_INSERT)))
        return QD_ST_DB;
    qd_st_bind_text(s, 1, job);
    qd_stmt_bind_int64(s, 2, next);
    qd_stmt_bind_double(s, 3, qd_now());
    qd_st_bind_text(s, 4, type);
    qd_st_bind_json(s, 5, data);
    int rc = qd_stmt_step(s);
    if (rc)
        QD_LOG_ERROR("store: adding event: %s", qd_db_errmsg(c->db));
    else if (seq)
        *seq = next;
    qd_st_done(s);
    return rc;
}

int qd_store_events_add(qd_store *st, int n, const qd_event_in *ev)
{
    if (n <= 0)
        return 0;
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    /* Progress, log and metric events are committed without waiting for fsync: they reach the
     * disk with the next synchronous commit (WAL keeps the order), at the latest with the job's
     * final state, and until then a crash of the process loses nothing (only a power cut could
     * lose the last few). Event streams see them a disk-flush sooner. */
    exec_slot(c, S_SYNC_NORMAL);
    int rc = qd_st_begin(c);
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = qd_st_event_insert(c, ev[i].job, ev[i].type, ev[i].data, NULL);
        if (rc == QD_ST_NOTFOUND) {   /* the job was deleted meanwhile: its events go with it */
            rc = 0;
            continue;
        }
        if (rc == 0 && !strcmp(ev[i].type, "progress")) {
            qd_stmt *s = prep(c, S_JOB_PROGRESS);
            qd_st_bind_json(s, 1, ev[i].data);
            qd_st_bind_text(s, 2, ev[i].job);
            rc = qd_st_step_done(c, s);
        }
    }
    if (rc == 0)
        rc = qd_st_commit(c);
    else
        qd_st_rollback(c);
    exec_slot(c, S_SYNC_FULL);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int qd_store_events_read(qd_store *st, const char *job, int64_t after, int max, qd_event_out *out)
{
    int k = 0;
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = prep(c, S_EVENT_READ);
    if (!s) {
        pthread_mutex_unlock(&c->mu);
        return QD_ST_DB;
    }
    qd_st_bind_text(s, 1, job);
    qd_stmt_bind_int64(s, 2, after);
    qd_stmt_bind_int64(s, 3, max);
    while (k < max && qd_stmt_step(s) == 1) {
        out[k].seq = qd_stmt_int64(s, 0);
        out[k].ts = qd_stmt_double(s, 1);
        snprintf(out[k].type, sizeof out[k].type, "%s", qd_stmt_text(s, 2));
        out[k].data = strdup(qd_stmt_text(s, 3));
        if (!out[k].data)
            break;
        k++;
    }
    qd_st_done(s);
    pthread_mutex_unlock(&c->mu);
    return k;
}

/* ---- jobs -------------------------------------------------------------------------------- */

int qd_store_job_create(qd_store *st, const char *id, const char *type, json_t *spec, int nrefs,
                        const qd_ref *refs, const char **bad_field)
{
    *bad_field = NULL;
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    int rc = qd_st_begin(c);
    for (int i = 0; rc == 0 && i < nrefs; i++) {
        qd_stmt *s = prep(c, refs[i].kind == QD_MODEL ? S_UPLOAD_GET_M : S_UPLOAD_GET_D);
        qd_st_bind_text(s, 1, refs[i].id);
        int found = qd_stmt_step(s) == 1;
        qd_st_done(s);
        if (!found) {
            *bad_field = refs[i].field;
            rc = QD_ST_NOTFOUND;
            break;
        }
        s = prep(c, S_REF_INSERT);
        qd_st_bind_text(s, 1, id);
        qd_st_bind_text(s, 2, refs[i].id);
        rc = qd_st_step_done(c, s);
    }
    if (rc == 0) {
        qd_stmt *s = prep(c, S_JOB_INSERT);
        qd_st_bind_text(s, 1, id);
        qd_st_bind_text(s, 2, type);
        qd_stmt_bind_double(s, 3, qd_now());
        qd_st_bind_json(s, 4, spec);
        rc = qd_st_step_done(c, s);
    }
    if (rc == 0) {
        json_t *data = json_pack("{s:s}", "state", "queued");
        rc = qd_st_event_insert(c, id, "state", data, NULL);
        json_decref(data);
    }
    if (rc == 0)
        rc = qd_st_commit(c);
    else
        qd_st_rollback(c);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Row of S_JOB_GET → the API's job object. */
json_t *qd_st_job_row(qd_stmt *s)
{
    const char *id = qd_stmt_text(s, 0);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "type", json_string(qd_stmt_text(s, 1)));
    json_object_set_new(o, "state", json_string(qd_stmt_text(s, 2)));
    json_object_set_new(o, "created", qd_st_col_time(s, 3));
    json_object_set_new(o, "started", qd_st_col_time(s, 4));
    json_object_set_new(o, "finished", qd_st_col_time(s, 5));
    json_object_set_new(o, "progress", qd_st_col_json(s, 7));
    json_object_set_new(o, "spec", qd_st_col_json(s, 6));
    json_object_set_new(o, "result", qd_st_col_json(s, 8));
    json_object_set_new(o, "error", qd_st_col_json(s, 9));
    json_t *arts = qd_st_col_json(s, 10);
    if (!json_is_array(arts)) {
        json_decref(arts);
        arts = json_array();
    }
    size_t i;
    json_t *a;
    json_array_foreach(arts, i, a) {
        const char *name = json_string_value(json_object_get(a, "name"));
        if (!name)
            continue;
        /* Built here rather than stored, so a record never holds a stale URL. Names are plain
         * file names: the scheduler lists only regular files, never a '/'. */
        char url[512];
        snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/%s", id, name);
        json_object_set_new(a, "url", json_string(url));
    }
    json_object_set_new(o, "artifacts", arts);
    json_object_set_new(o, "attempts", json_integer(qd_stmt_int64(s, 11)));
    if (!qd_stmt_isnull(s, 4) && !qd_stmt_isnull(s, 5))
        json_object_set_new(o, "duration_s",
                            json_real(qd_stmt_double(s, 5) - qd_stmt_double(s, 4)));
    return o;
}

json_t *qd_store_job_get(qd_store *st, const char *id)
{
    json_t *o = NULL;
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = prep(c, S_JOB_GET);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (qd_stmt_step(s) == 1)
            o = qd_st_job_row(s);
        qd_st_done(s);
    }
    pthread_mutex_unlock(&c->mu);
    return o;
}

int qd_store_job_state(qd_store *st, const char *id, char out[16])
{
    int rc = QD_ST_NOTFOUND;
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = prep(c, S_JOB_STATE);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (qd_stmt_step(s) == 1) {
            snprintf(out, 16, "%s", qd_stmt_text(s, 0));
            rc = 0;
        }
        qd_st_done(s);
    } else {
        rc = QD_ST_DB;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

json_t *qd_store_job_spec(qd_store *st, const char *id)
{
    json_t *o = NULL;
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = prep(c, S_JOB_SPEC);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (qd_stmt_step(s) == 1)
            o = qd_st_col_json(s, 0);
        qd_st_done(s);
    }
    pthread_mutex_unlock(&c->mu);
    return o;
}

json_t *qd_store_job_ids(qd_store *st, const char *state)
{
    json_t *arr = json_array();
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s;
    if ((s = qd_db_prepare(c->db, "SELECT id FROM jobs WHERE state=? ORDER BY n")) != NULL) {
        qd_st_bind_text(s, 1, state);
        while (qd_stmt_step(s) == 1)
            json_array_append_new(arr, json_string(qd_stmt_text(s, 0)));
        qd_stmt_finalize(s);
    }
    pthread_mutex_unlock(&c->mu);
    return arr;
}

int qd_st_is_terminal(const char *state)
{
    return !strcmp(state, "succeeded") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

/* The caller holds the write lock and a transaction. */
int qd_st_transition_locked(conn *c, const char *id, const char *from, const char *to,
                            const qd_job_update *u, int64_t *seq)
{
    char cur[16], owner[64] = "";
    qd_stmt *s = prep(c, S_JOB_LOCK);
    if (!s)
        return QD_ST_DB;
    qd_st_bind_text(s, 1, id);
    int found = qd_stmt_step(s);
    if (found == 1) {
        snprintf(cur, sizeof cur, "%s", qd_stmt_text(s, 0));
        snprintf(owner, sizeof owner, "%s", qd_stmt_text(s, 1) ? qd_stmt_text(s, 1) : "");
    }
    qd_st_done(s);
    if (found <= 0)
        return found < 0 ? found : QD_ST_NOTFOUND;
    if (from ? strcmp(cur, from) != 0 : qd_st_is_terminal(cur))
        return QD_ST_CONFLICT;
    /* a host that lost its lease never writes the job's end: another host runs it now */
    if (u && u->owner && !u->set_started && strcmp(owner, u->owner))
        return QD_ST_CONFLICT;

    /* the columns to set vary with u; a handful of combinations, prepared on the fly */
    char sql[512];
    size_t k = (size_t)snprintf(sql, sizeof sql, "UPDATE jobs SET state=?1");
    if (u && u->set_started)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", started=?2, finished=NULL, attempts=attempts+1");
    if (u && u->set_started && u->owner)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", lease_owner=?7, lease_expires=%s+?8", qd_st_now_sql(c));
    if (strcmp(to, "running"))
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", lease_owner=NULL, lease_expires=NULL, cancel_requested=0");
    if (u && u->set_finished)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", finished=?2");
    if (u && u->clear_times)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", started=NULL, finished=NULL, progress=NULL");
    if (u && u->result)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", result=?3");
    if (u && u->error)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", error=?4");
    if (u && u->artifacts)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", artifacts=?5");
    snprintf(sql + k, sizeof sql - k, " WHERE id=?6");
    if (!(s = qd_db_prepare(c->db, sql)))
        return QD_ST_DB;
    qd_st_bind_text(s, 1, to);
    qd_stmt_bind_double(s, 2, qd_now());
    if (u) {
        qd_st_bind_json(s, 3, u->result);
        qd_st_bind_json(s, 4, u->error);
        qd_st_bind_json(s, 5, u->artifacts);
    }
    qd_st_bind_text(s, 6, id);
    if (u && u->set_started && u->owner) {
        qd_st_bind_text(s, 7, u->owner);
        qd_stmt_bind_double(s, 8, u->lease_s);
    }
    int rc = qd_stmt_step(s);
    if (rc)
        QD_LOG_ERROR("store: job %s -> %s: %s", id, to, qd_db_errmsg(c->db));
    qd_stmt_finalize(s);
    if (rc)
        return rc;

    json_t *data = json_pack("{s:s}", "state", to);
    if (u && u->error)
        json_object_set(data, "error", u->error);
    if (u && u->event_extra)
        json_object_update(data, u->event_extra);
    rc = qd_st_event_insert(c, id, "state", data, seq);
    json_decref(data);
    return rc;
}

int qd_store_job_transition(qd_store *st, const char *id, const char *from, const char *to,
                            const qd_job_update *u, int64_t *seq)
{
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    int rc = qd_st_begin(c);
    if (rc == 0) {
        rc = qd_st_transition_locked(c, id, from, to, u, seq);
        if (rc == 0)
            rc = qd_st_commit(c);
        else
            qd_st_rollback(c);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int qd_store_requeue(qd_store *st, const char *id)
{
    json_t *extra = json_pack("{s:s}", "reason", "requeued: the daemon stopped while the job ran");
    qd_job_update u = { .event_extra = extra, .owner = st->shared ? st->host : NULL };
    int rc = qd_store_job_transition(st, id, "running", "queued", &u, NULL);
    json_decref(extra);
    return rc;
}

int qd_store_requeue_running(qd_store *st, json_t *left)
{
    json_t *ids = st->shared ? qd_st_leased_ids(st) : qd_store_job_ids(st, "running");
    int n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        if (qd_store_requeue(st, json_string_value(v)) == 0)
            n++;
        else if (left)
            json_array_append(left, v);
    }
    json_decref(ids);
    return n;
}

int qd_store_job_counts(qd_store *st, int64_t counts[5])
{
    memset(counts, 0, 5 * sizeof counts[0]);
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s;
    int rc = QD_ST_DB;
    if ((s = qd_db_prepare(c->db, "SELECT state, COUNT(*) FROM jobs GROUP BY state")) != NULL) {
        while (qd_stmt_step(s) == 1) {
            const char *state = qd_stmt_text(s, 0);
            for (int i = 0; i < 5; i++)
                if (!strcmp(state, qd_job_states[i]))
                    counts[i] = qd_stmt_int64(s, 1);
        }
        qd_stmt_finalize(s);
        rc = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
