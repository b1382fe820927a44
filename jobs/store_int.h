/* The store's internals, shared by its files (store.c: records, events, transitions;
 * store_admin.c: deletion, pages of records, retention; store_schema.c: opening, migrations;
 * store_lease.c: claims, leases, cancellation across hosts), all written against the SQL seam
 * (db.h). Not a public header: everything else goes through store.h. */
#ifndef QD_STORE_INT_H
#define QD_STORE_INT_H

#include <jansson.h>
#include <pthread.h>
#include "jobs/db.h"
#include <stdint.h>

enum {
    S_BEGIN, S_SYNC_NORMAL, S_SYNC_FULL, S_COMMIT, S_ROLLBACK,
    S_UPLOAD_INSERT_M, S_UPLOAD_INSERT_D, S_UPLOAD_GET_M, S_UPLOAD_GET_D,
    S_UPLOAD_DEL_M, S_UPLOAD_DEL_D, S_REF_LIVE,
    S_JOB_INSERT, S_REF_INSERT, S_JOB_GET, S_JOB_STATE, S_JOB_SPEC,
    S_EVENT_NEXT, S_EVENT_INSERT, S_EVENT_ONE, S_EVENT_READ, S_JOB_PROGRESS, S_JOB_LOCK,
    S_NSLOTS
};

/* A connection with its statement cache, used by one thread at a time. */
typedef struct conn {
    pthread_mutex_t mu;
    qd_db *db;
    qd_stmt *stmt[S_NSLOTS];
} conn;

struct qd_store {
    conn w;    /* writes and every transaction */
    conn r;    /* reads: WAL lets them proceed while a write transaction waits on fsync */
    char *dir;         /* the artifact dir: models/, datasets/, jobs/, tmp/ (shared between hosts) */
    char *state_dir;   /* this host's: the lock (and SQLite's database) */
    int lock_fd;       /* flock on <state>/quantd.lock: one daemon per state dir */
    int shared;        /* PostgreSQL: other hosts run the same queue */
    char host[64];     /* lease owner name */
    double lease_s;
};

static inline int qd_st_pg(const conn *c) { return qd_db_kind_of(c->db) == QD_DB_PG; }
/* The database's clock in unix seconds, as SQL: leases are timed by one clock for every host. */
static inline const char *qd_st_now_sql(const conn *c)
{
    return qd_st_pg(c) ? "extract(epoch from clock_timestamp())::float8" : "((julianday('now') - 2440587.5) * 86400.0)";
}

extern const char *const qd_st_tables[2];   /* by qd_kind: "models", "datasets" */

/* The job columns qd_st_job_row reads, in its order. */
#define QD_ST_JOB_COLS "id,type,state,created,started,finished,spec,progress,result,error,artifacts,attempts"
/* The upload columns qd_st_upload_row reads. */
#define QD_ST_UPLOAD_COLS "id,name,sha256,size,ext,created,info"
/* The text that reads a JSON field of a column: json_extract(col, '$.key') or (col::jsonb->>'key'). */
const char *qd_st_json_field(const conn *c, const char *col, const char *key, char *buf, size_t n);

/* Statement helpers (store.c); the caller holds the connection's mutex. */
void qd_st_done(qd_stmt *s);                       /* reset + clear bindings */
int qd_st_step_done(conn *c, qd_stmt *s);          /* step once, then done; 0 or QD_ST_* */
int qd_st_begin(conn *c);
int qd_st_commit(conn *c);                              /* rolls back when the commit fails */
void qd_st_rollback(conn *c);
void qd_st_bind_text(qd_stmt *s, int i, const char *v);
void qd_st_bind_json(qd_stmt *s, int i, const json_t *v);
json_t *qd_st_col_json(qd_stmt *s, int i);
json_t *qd_st_col_time(qd_stmt *s, int i);
json_t *qd_st_upload_row(qd_stmt *s);              /* a row of QD_ST_UPLOAD_COLS → record */
json_t *qd_st_job_row(qd_stmt *s);                 /* a row of QD_ST_JOB_COLS → job object */
int qd_st_is_terminal(const char *state);
/* qd_store_job_transition's body, inside the caller's write transaction (store.c). */
int qd_st_transition_locked(conn *c, const char *id, const char *from, const char *to,
                            const qd_job_update *u, int64_t *seq);
/* Ids of the running jobs whose lease this host holds (store_lease.c; new ref). */
json_t *qd_st_leased_ids(qd_store *st);
/* Brings the schema to the newest version (store_schema.c). */
int qd_st_migrate(conn *c, char *err, size_t n);
/* Appends one event inside the caller's write transaction; QD_ST_NOTFOUND when the job is gone. */
int qd_st_event_insert(conn *c, const char *job, const char *type, const json_t *data, int64_t *seq);

#endif
