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
#include <sqlite3.h>
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

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS models ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,"
    "  ext TEXT NOT NULL, created REAL NOT NULL, info TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS models_sha ON models(sha256);"
    "CREATE TABLE IF NOT EXISTS datasets ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,"
    "  ext TEXT NOT NULL, created REAL NOT NULL, info TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS datasets_sha ON datasets(sha256);"
    /* n orders jobs by submission (ids are random) */
    "CREATE TABLE IF NOT EXISTS jobs ("
    "  n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"
    "  state TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,"
    "  spec TEXT NOT NULL, progress TEXT, result TEXT, error TEXT, artifacts TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, n);"
    /* which uploads a job uses: DELETE of a model or data set checks its live jobs here */
    "CREATE TABLE IF NOT EXISTS job_refs (job TEXT NOT NULL, ref TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS job_refs_ref ON job_refs(ref);"
    "CREATE TABLE IF NOT EXISTS events ("
    "  job TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL,"
    "  data TEXT NOT NULL, PRIMARY KEY (job, seq)) WITHOUT ROWID;";

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
    [S_EVENT_NEXT] = "SELECT COALESCE(MAX(seq),0)+1 FROM events WHERE job=?",
    [S_EVENT_INSERT] = "INSERT INTO events(job,seq,ts,type,data) VALUES(?,?,?,?,?)",
    [S_EVENT_READ] = "SELECT seq,ts,type,data FROM events WHERE job=? AND seq>? ORDER BY seq LIMIT ?",
    [S_JOB_PROGRESS] = "UPDATE jobs SET progress=? WHERE id=?",
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

static sqlite3_stmt *prep(conn *c, int slot)
{
    if (!c->stmt[slot] &&
        sqlite3_prepare_v3(c->db, SQL[slot], -1, SQLITE_PREPARE_PERSISTENT, &c->stmt[slot], NULL) != SQLITE_OK) {
        QD_LOG_ERROR("sqlite: preparing \"%s\": %s", SQL[slot], sqlite3_errmsg(c->db));
        return NULL;
    }
    return c->stmt[slot];
}

void qd_st_done(sqlite3_stmt *s)
{
    if (s) {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
    }
}

/* A failed step's code: a full disk is worth telling apart, since it passes (callers retry). */
static int db_error(conn *c)
{
    return (sqlite3_extended_errcode(c->db) & 0xff) == SQLITE_FULL ? QD_ST_FULL : QD_ST_DB;
}

int qd_st_step_done(conn *c, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    int err = rc != SQLITE_DONE && rc != SQLITE_ROW ? db_error(c) : 0;
    if (err)
        QD_LOG_ERROR("sqlite: %s", sqlite3_errmsg(c->db));
    qd_st_done(s);
    return err;
}

static int exec_slot(conn *c, int slot)
{
    sqlite3_stmt *s = prep(c, slot);
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

void qd_st_bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

/* Binds a JSON value as its compact text (NULL → SQL NULL). */
void qd_st_bind_json(sqlite3_stmt *s, int i, const json_t *v)
{
    if (!v) {
        sqlite3_bind_null(s, i);
        return;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
    if (text)
        sqlite3_bind_text(s, i, text, -1, free);
    else
        sqlite3_bind_null(s, i);
}

json_t *qd_st_col_json(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    if (!t)
        return json_null();
    json_t *v = json_loads(t, JSON_DECODE_ANY, NULL);
    return v ? v : json_null();
}

json_t *qd_st_col_time(sqlite3_stmt *s, int i)
{
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return json_null();
    char buf[32];
    qd_time_str(sqlite3_column_double(s, i), buf);
    return json_string(buf);
}

static int mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0750) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0750) < 0 && errno != EEXIST ? -1 : 0;
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

/* ---- open / close ------------------------------------------------------------------------ */

static int conn_open(conn *c, const char *path, int create, char *err, size_t n)
{
    pthread_mutex_init(&c->mu, NULL);
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    char *msg = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, &msg);
    if (rc == SQLITE_OK && create)
        rc = sqlite3_exec(c->db, SCHEMA, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, n, "database %s: %s", path, msg ? msg : sqlite3_errmsg(c->db));
        sqlite3_free(msg);
        return -1;
    }
    sqlite3_busy_timeout(c->db, 10000);
    return 0;
}

static void conn_close(conn *c)
{
    for (int i = 0; i < S_NSLOTS; i++)
        sqlite3_finalize(c->stmt[i]);
    if (c->db)
        sqlite3_close(c->db);
    pthread_mutex_destroy(&c->mu);
}

int qd_store_open(const char *dir, qd_store **out, char *err, size_t n)
{
    *out = NULL;
    static const char *const subdirs[] = { "", "/models", "/datasets", "/jobs", "/tmp" };
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s%s", dir, subdirs[i]);
        if (mkdir_p(p) < 0) {
            snprintf(err, n, "state dir: cannot create %s: %s", p, strerror(errno));
            return -1;
        }
    }
    /* One daemon per state dir: two schedulers would run the same queue. The lock goes away with
     * the process, however it ends. */
    char lockp[PATH_MAX];
    snprintf(lockp, sizeof lockp, "%s/quantd.lock", dir);
    int lock_fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        snprintf(err, n, "state dir %s is in use by another quantd (%s)", dir, strerror(errno));
        if (lock_fd >= 0)
            close(lock_fd);
        return -1;
    }
    /* Leftovers of a previous process: half-received uploads. (Unfinished job outputs, named
     * after their job, are the scheduler's: a requeued QAT job resumes from them.) */
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    DIR *d = opendir(tmp);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (!strncmp(de->d_name, "up_", 3)) {
                char sub[PATH_MAX];
                snprintf(sub, sizeof sub, "%s/%s", tmp, de->d_name);
                qd_rm_rf(sub);
            }
        closedir(d);
    }

    qd_store *st = calloc(1, sizeof *st);
    if (!st || !(st->dir = strdup(dir))) {
        free(st);
        close(lock_fd);
        snprintf(err, n, "out of memory");
        return -1;
    }
    /* "state/" → "state": every path below is dir + "/…", which qd_store_relative recognises */
    for (size_t k = strlen(st->dir); k > 1 && st->dir[k - 1] == '/'; k--)
        st->dir[k - 1] = 0;
    st->lock_fd = lock_fd;
    char db[PATH_MAX];
    snprintf(db, sizeof db, "%s/quantd.db", dir);
    if (conn_open(&st->w, db, 1, err, n) < 0 || conn_open(&st->r, db, 0, err, n) < 0) {
        qd_store_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

void qd_store_close(qd_store *st)
{
    if (!st)
        return;
    conn_close(&st->r);
    conn_close(&st->w);
    close(st->lock_fd);
    free(st->dir);
    free(st);
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
json_t *qd_st_upload_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string((const char *)sqlite3_column_text(s, 0)));
    json_object_set_new(o, "name", json_string((const char *)sqlite3_column_text(s, 1)));
    json_object_set_new(o, "sha256", json_string((const char *)sqlite3_column_text(s, 2)));
    json_object_set_new(o, "size", json_integer(sqlite3_column_int64(s, 3)));
    json_object_set_new(o, "format", json_string((const char *)sqlite3_column_text(s, 4)));
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
    sqlite3_stmt *s = prep(c, kind == QD_MODEL ? S_UPLOAD_INSERT_M : S_UPLOAD_INSERT_D);
    if (s) {
        qd_st_bind_text(s, 1, json_string_value(json_object_get(rec, "id")));
        qd_st_bind_text(s, 2, json_string_value(json_object_get(rec, "name")));
        qd_st_bind_text(s, 3, json_string_value(json_object_get(rec, "sha256")));
        sqlite3_bind_int64(s, 4, json_integer_value(json_object_get(rec, "size")));
        qd_st_bind_text(s, 5, json_string_value(json_object_get(rec, "ext")));
        sqlite3_bind_double(s, 6, qd_now());
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
    sqlite3_stmt *s = prep(c, kind == QD_MODEL ? S_UPLOAD_GET_M : S_UPLOAD_GET_D);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (sqlite3_step(s) == SQLITE_ROW)
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
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) == SQLITE_OK) {
        if (sha256)
            qd_st_bind_text(s, 1, sha256);
        while (sqlite3_step(s) == SQLITE_ROW)
            json_array_append_new(arr, qd_st_upload_row(s));
        sqlite3_finalize(s);
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
        sqlite3_stmt *s = prep(c, S_REF_LIVE);
        qd_st_bind_text(s, 1, id);
        int live = sqlite3_step(s) == SQLITE_ROW;
        qd_st_done(s);
        if (live) {
            rc = QD_ST_BUSY;
        } else {
            s = prep(c, kind == QD_MODEL ? S_UPLOAD_GET_M : S_UPLOAD_GET_D);
            qd_st_bind_text(s, 1, id);
            if (sqlite3_step(s) == SQLITE_ROW)
                snprintf(ext, sizeof ext, "%s", (const char *)sqlite3_column_text(s, 4));
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
    sqlite3_stmt *s = prep(c, S_EVENT_NEXT);
    if (!s)
        return QD_ST_DB;
    qd_st_bind_text(s, 1, job);
    int64_t next = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 1;
    qd_st_done(s);
    if (!(s = prep(c, S_EVENT_INSERT)))
        return QD_ST_DB;
    qd_st_bind_text(s, 1, job);
    sqlite3_bind_int64(s, 2, next);
    sqlite3_bind_double(s, 3, qd_now());
    qd_st_bind_text(s, 4, type);
    qd_st_bind_json(s, 5, data);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_error(c);
    if (rc)
        QD_LOG_ERROR("sqlite: adding event: %s", sqlite3_errmsg(c->db));
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
        if (rc == 0 && !strcmp(ev[i].type, "progress")) {
            sqlite3_stmt *s = prep(c, S_JOB_PROGRESS);
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
    sqlite3_stmt *s = prep(c, S_EVENT_READ);
    if (!s) {
        pthread_mutex_unlock(&c->mu);
        return QD_ST_DB;
    }
    qd_st_bind_text(s, 1, job);
    sqlite3_bind_int64(s, 2, after);
    sqlite3_bind_int(s, 3, max);
    while (k < max && sqlite3_step(s) == SQLITE_ROW) {
        out[k].seq = sqlite3_column_int64(s, 0);
        out[k].ts = sqlite3_column_double(s, 1);
        snprintf(out[k].type, sizeof out[k].type, "%s", (const char *)sqlite3_column_text(s, 2));
        out[k].data = strdup((const char *)sqlite3_column_text(s, 3));
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
        sqlite3_stmt *s = prep(c, refs[i].kind == QD_MODEL ? S_UPLOAD_GET_M : S_UPLOAD_GET_D);
        qd_st_bind_text(s, 1, refs[i].id);
        int found = sqlite3_step(s) == SQLITE_ROW;
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
        sqlite3_stmt *s = prep(c, S_JOB_INSERT);
        qd_st_bind_text(s, 1, id);
        qd_st_bind_text(s, 2, type);
        sqlite3_bind_double(s, 3, qd_now());
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
json_t *qd_st_job_row(sqlite3_stmt *s)
{
    const char *id = (const char *)sqlite3_column_text(s, 0);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "type", json_string((const char *)sqlite3_column_text(s, 1)));
    json_object_set_new(o, "state", json_string((const char *)sqlite3_column_text(s, 2)));
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
    json_object_set_new(o, "attempts", json_integer(sqlite3_column_int64(s, 11)));
    if (sqlite3_column_type(s, 4) != SQLITE_NULL && sqlite3_column_type(s, 5) != SQLITE_NULL)
        json_object_set_new(o, "duration_s",
                            json_real(sqlite3_column_double(s, 5) - sqlite3_column_double(s, 4)));
    return o;
}

json_t *qd_store_job_get(qd_store *st, const char *id)
{
    json_t *o = NULL;
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    sqlite3_stmt *s = prep(c, S_JOB_GET);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (sqlite3_step(s) == SQLITE_ROW)
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
    sqlite3_stmt *s = prep(c, S_JOB_STATE);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (sqlite3_step(s) == SQLITE_ROW) {
            snprintf(out, 16, "%s", (const char *)sqlite3_column_text(s, 0));
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
    sqlite3_stmt *s = prep(c, S_JOB_SPEC);
    if (s) {
        qd_st_bind_text(s, 1, id);
        if (sqlite3_step(s) == SQLITE_ROW)
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
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, "SELECT id FROM jobs WHERE state=? ORDER BY n", -1, &s, NULL) == SQLITE_OK) {
        qd_st_bind_text(s, 1, state);
        while (sqlite3_step(s) == SQLITE_ROW)
            json_array_append_new(arr, json_string((const char *)sqlite3_column_text(s, 0)));
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&c->mu);
    return arr;
}

int qd_st_is_terminal(const char *state)
{
    return !strcmp(state, "succeeded") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

/* The caller holds the write lock and a transaction. */
static int transition_locked(conn *c, const char *id, const char *from, const char *to,
                             const qd_job_update *u, int64_t *seq)
{
    char cur[16];
    sqlite3_stmt *s = prep(c, S_JOB_STATE);
    qd_st_bind_text(s, 1, id);
    int found = sqlite3_step(s) == SQLITE_ROW;
    if (found)
        snprintf(cur, sizeof cur, "%s", (const char *)sqlite3_column_text(s, 0));
    qd_st_done(s);
    if (!found)
        return QD_ST_NOTFOUND;
    if (from ? strcmp(cur, from) != 0 : qd_st_is_terminal(cur))
        return QD_ST_CONFLICT;

    /* the columns to set vary with u; a handful of combinations, prepared on the fly */
    char sql[512];
    size_t k = (size_t)snprintf(sql, sizeof sql, "UPDATE jobs SET state=?1");
    if (u && u->set_started)
        k += (size_t)snprintf(sql + k, sizeof sql - k, ", started=?2, finished=NULL, attempts=attempts+1");
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
    if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK) {
        QD_LOG_ERROR("sqlite: %s", sqlite3_errmsg(c->db));
        return QD_ST_DB;
    }
    qd_st_bind_text(s, 1, to);
    sqlite3_bind_double(s, 2, qd_now());
    if (u) {
        qd_st_bind_json(s, 3, u->result);
        qd_st_bind_json(s, 4, u->error);
        qd_st_bind_json(s, 5, u->artifacts);
    }
    qd_st_bind_text(s, 6, id);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_error(c);
    if (rc)
        QD_LOG_ERROR("sqlite: job %s -> %s: %s", id, to, sqlite3_errmsg(c->db));
    sqlite3_finalize(s);
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
        rc = transition_locked(c, id, from, to, u, seq);
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
    qd_job_update u = { .event_extra = extra };
    int rc = qd_store_job_transition(st, id, "running", "queued", &u, NULL);
    json_decref(extra);
    return rc;
}

int qd_store_requeue_running(qd_store *st, json_t *left)
{
    json_t *ids = qd_store_job_ids(st, "running");
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
    sqlite3_stmt *s;
    int rc = QD_ST_DB;
    if (sqlite3_prepare_v2(c->db, "SELECT state, COUNT(*) FROM jobs GROUP BY state", -1, &s, NULL) == SQLITE_OK) {
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *state = (const char *)sqlite3_column_text(s, 0);
            for (int i = 0; i < 5; i++)
                if (!strcmp(state, qd_job_states[i]))
                    counts[i] = sqlite3_column_int64(s, 1);
        }
        sqlite3_finalize(s);
        rc = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
