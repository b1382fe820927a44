/* Opening the store, and its schema as numbered migrations (see store.h).
 *
 * Each backend has a list of migrations; migration k brings the schema from version k-1 to k, and
 * the table schema_version records the versions applied. At open, the missing ones run in one
 * transaction (PostgreSQL: under an advisory lock, so hosts starting together migrate once).
 * Adding one: append its SQL to both lists (the same text when the dialects agree), never edit a
 * shipped one; databases made before schema_version existed start at migration 1, whose
 * CREATE … IF NOT EXISTS leaves their tables as they are. */
#include "jobs/store.h"
#include "jobs/store_int.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* 2: the per-job event sequence (a counter on the row, so writers on several hosts serialise on
 * the row lock) and the lease of a running job. */
#define MIGRATION_2 \
    "ALTER TABLE jobs ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;" \
    "UPDATE jobs SET last_seq = (SELECT COALESCE(MAX(seq), 0) FROM events WHERE events.job = jobs.id);" \
    "ALTER TABLE jobs ADD COLUMN lease_owner TEXT;" \
    "ALTER TABLE jobs ADD COLUMN lease_expires DOUBLE PRECISION;" \
    "ALTER TABLE jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;"

static const char *const LITE[] = {
    /* 1: the schema from before migrations */
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
    "  data TEXT NOT NULL, PRIMARY KEY (job, seq)) WITHOUT ROWID;",
    MIGRATION_2,
};

/* The same tables; uploads get the rowid column SQLite has implicitly (their list's order). */
static const char *const PG[] = {
    "CREATE TABLE models ("
    "  rowid BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL,"
    "  size BIGINT NOT NULL, ext TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, info TEXT NOT NULL);"
    "CREATE INDEX models_sha ON models(sha256);"
    "CREATE TABLE datasets ("
    "  rowid BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL,"
    "  size BIGINT NOT NULL, ext TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, info TEXT NOT NULL);"
    "CREATE INDEX datasets_sha ON datasets(sha256);"
    "CREATE TABLE jobs ("
    "  n BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"
    "  state TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION,"
    "  finished DOUBLE PRECISION, spec TEXT NOT NULL, progress TEXT, result TEXT, error TEXT,"
    "  artifacts TEXT, attempts BIGINT NOT NULL DEFAULT 0);"
    "CREATE INDEX jobs_state ON jobs(state, n);"
    "CREATE TABLE job_refs (job TEXT NOT NULL, ref TEXT NOT NULL);"
    "CREATE INDEX job_refs_ref ON job_refs(ref);"
    "CREATE INDEX job_refs_job ON job_refs(job);"
    "CREATE TABLE events ("
    "  job TEXT NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, type TEXT NOT NULL,"
    "  data TEXT NOT NULL, PRIMARY KEY (job, seq));",
    MIGRATION_2,
};

_Static_assert(sizeof LITE == sizeof PG, "every migration exists for both backends");
enum { NMIGRATIONS = (int)(sizeof LITE / sizeof LITE[0]) };

static const char *migration(int pg, int v) { return pg ? PG[v - 1] : LITE[v - 1]; }

const char *qd_st_json_field(const conn *c, const char *col, const char *key, char *buf, size_t n)
{
    if (qd_st_pg(c))
        snprintf(buf, n, "(%s::jsonb->>'%s')", col, key);
    else
        snprintf(buf, n, "json_extract(%s, '$.%s')", col, key);
    return buf;
}

int qd_st_migrate(conn *c, char *err, size_t n)
{
    int pg = qd_st_pg(c);
    int rc = qd_db_exec(c->db, pg ? "BEGIN; SELECT pg_advisory_xact_lock(7242197);" : "BEGIN IMMEDIATE");
    if (rc == 0)
        rc = qd_db_exec(c->db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    int cur = 0;
    if (rc == 0) {
        qd_stmt *s = qd_db_prepare(c->db, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
        rc = s && qd_stmt_step(s) == 1 ? 0 : QD_ST_DB;
        if (rc == 0)
            cur = (int)qd_stmt_int64(s, 0);
        qd_stmt_finalize(s);
    }
    if (rc == 0 && cur > NMIGRATIONS) {
        snprintf(err, n, "the database's schema (version %d) is newer than this quantd's (%d)", cur, NMIGRATIONS);
        qd_db_exec(c->db, "ROLLBACK");
        return -1;
    }
    for (int v = cur + 1; rc == 0 && v <= NMIGRATIONS; v++) {
        rc = qd_db_exec(c->db, migration(pg, v));
        if (rc == 0) {
            qd_stmt *s = qd_db_prepare(c->db, "INSERT INTO schema_version(version) VALUES(?)");
            if (s) {
                qd_stmt_bind_int64(s, 1, v);
                rc = qd_stmt_step(s) < 0 ? QD_ST_DB : 0;
            } else {
                rc = QD_ST_DB;
            }
            qd_stmt_finalize(s);
            if (rc == 0 && cur == 0)   /* a new database: nothing worth a line at start */
                QD_LOG_DEBUG("store: schema migrated to version %d", v);
            else if (rc == 0)
                QD_LOG_NOTICE("store: schema migrated to version %d", v);
        }
    }
    if (rc == 0)
        rc = qd_db_exec(c->db, "COMMIT");
    if (rc != 0) {
        snprintf(err, n, "database schema: %s", qd_db_errmsg(c->db));
        qd_db_exec(c->db, "ROLLBACK");
        return -1;
    }
    return 0;
}

/* ---- open / close ------------------------------------------------------------------------ */

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

static int conn_open(conn *c, const qd_store_opts *o, int pg, int create, char *err, size_t n)
{
    pthread_mutex_init(&c->mu, NULL);
    if (pg)
        return qd_db_open_pg(o->url, &c->db, err, n);
    char db[PATH_MAX];
    snprintf(db, sizeof db, "%s/quantd.db", o->state_dir);
    return qd_db_open_sqlite(db, create, &c->db, err, n);
}

static void conn_close(conn *c)
{
    for (int i = 0; i < S_NSLOTS; i++)
        qd_stmt_finalize(c->stmt[i]);
    qd_db_close(c->db);
    pthread_mutex_destroy(&c->mu);
}

/* "dir/" → "dir": every path below is dir + "/…", which qd_store_relative recognises */
static char *dir_dup(const char *d)
{
    char *s = strdup(d);
    for (size_t k = s ? strlen(s) : 0; k > 1 && s[k - 1] == '/'; k--)
        s[k - 1] = 0;
    return s;
}

/* Leftovers of a previous process: half-received uploads. (Unfinished job outputs, named after
 * their job, are the scheduler's: a requeued QAT job resumes from them.) With other hosts on the
 * same artifact dir only day-old ones go: a live host's upload is never that slow. */
static void sweep_uploads(const char *adir, int shared)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/tmp", adir);
    DIR *d = opendir(tmp);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, "up_", 3)) {
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", tmp, de->d_name);
            struct stat sb;
            if (!shared || (lstat(sub, &sb) == 0 && sb.st_mtime < time(NULL) - 86400))
                qd_rm_rf(sub);
        }
    closedir(d);
}

int qd_store_open_ex(const qd_store_opts *o, qd_store **out, char *err, size_t n)
{
    *out = NULL;
    int pg = o->url && (!strncmp(o->url, "postgresql:", 11) || !strncmp(o->url, "postgres:", 9));
    if (o->url && o->url[0] && !pg && strcmp(o->url, "sqlite")) {
        snprintf(err, n, "store: '%s' is neither sqlite nor a postgresql:// URL", o->url);
        return -1;
    }
    const char *adir = o->artifact_dir && o->artifact_dir[0] ? o->artifact_dir : o->state_dir;
    static const char *const subdirs[] = { "", "/models", "/datasets", "/jobs", "/tmp" };
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s%s", adir, subdirs[i]);
        if (mkdir_p(p) < 0 || (i == 0 && mkdir_p(o->state_dir) < 0)) {
            snprintf(err, n, "%s: cannot create %s: %s", i ? "artifact dir" : "state dir",
                     i ? p : o->state_dir, strerror(errno));
            return -1;
        }
    }
    /* One daemon per state dir: two schedulers would run the same queue. The lock goes away with
     * the process, however it ends. */
    char lockp[PATH_MAX];
    snprintf(lockp, sizeof lockp, "%s/quantd.lock", o->state_dir);
    int lock_fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        snprintf(err, n, "state dir %s is in use by another quantd (%s)", o->state_dir, strerror(errno));
        if (lock_fd >= 0)
            close(lock_fd);
        return -1;
    }
    sweep_uploads(adir, pg);

    qd_store *st = calloc(1, sizeof *st);
    if (!st || !(st->dir = dir_dup(adir)) || !(st->state_dir = dir_dup(o->state_dir))) {
        if (st)
            free(st->dir);
        free(st);
        close(lock_fd);
        snprintf(err, n, "out of memory");
        return -1;
    }
    st->lock_fd = lock_fd;
    st->shared = pg;
    st->lease_s = o->lease_s > 0 ? o->lease_s : 30;
    if (o->host_id && o->host_id[0]) {
        snprintf(st->host, sizeof st->host, "%s", o->host_id);
    } else {
        char hn[48] = "host";
        gethostname(hn, sizeof hn - 1);
        snprintf(st->host, sizeof st->host, "%s-%d", hn, (int)getpid());
    }
    if (conn_open(&st->w, o, pg, 1, err, n) < 0 || qd_st_migrate(&st->w, err, n) < 0 ||
        conn_open(&st->r, o, pg, 0, err, n) < 0) {
        qd_store_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

int qd_store_open(const char *dir, qd_store **out, char *err, size_t n)
{
    qd_store_opts o = { .state_dir = dir };
    return qd_store_open_ex(&o, out, err, n);
}

void qd_store_close(qd_store *st)
{
    if (!st)
        return;
    conn_close(&st->r);
    conn_close(&st->w);
    close(st->lock_fd);
    free(st->dir);
    free(st->state_dir);
    free(st);
}

int qd_store_shared(const qd_store *st) { return st->shared; }
const char *qd_store_host(const qd_store *st) { return st->host; }
double qd_store_lease_s(const qd_store *st) { return st->lease_s; }
