/* The store's internals, shared by its files (store.c: schema, records, events, transitions;
 * store_admin.c: deletion, pages of records, retention). Not a public header: everything else
 * goes through store.h. */
#ifndef QD_STORE_INT_H
#define QD_STORE_INT_H

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

enum {
    S_BEGIN, S_SYNC_NORMAL, S_SYNC_FULL, S_COMMIT, S_ROLLBACK,
    S_UPLOAD_INSERT_M, S_UPLOAD_INSERT_D, S_UPLOAD_GET_M, S_UPLOAD_GET_D,
    S_UPLOAD_DEL_M, S_UPLOAD_DEL_D, S_REF_LIVE,
    S_JOB_INSERT, S_REF_INSERT, S_JOB_GET, S_JOB_STATE, S_JOB_SPEC,
    S_EVENT_NEXT, S_EVENT_INSERT, S_EVENT_READ, S_JOB_PROGRESS,
    S_NSLOTS
};

/* A connection with its statement cache, used by one thread at a time. */
typedef struct conn {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *stmt[S_NSLOTS];
} conn;

struct qd_store {
    conn w;    /* writes and every transaction */
    conn r;    /* reads: WAL lets them proceed while a write transaction waits on fsync */
    char *dir;
    int lock_fd;   /* flock on <state>/quantd.lock: one daemon per state dir */
};

extern const char *const qd_st_tables[2];   /* by qd_kind: "models", "datasets" */

/* The job columns qd_st_job_row reads, in its order. */
#define QD_ST_JOB_COLS "id,type,state,created,started,finished,spec,progress,result,error,artifacts,attempts"
/* The upload columns qd_st_upload_row reads. */
#define QD_ST_UPLOAD_COLS "id,name,sha256,size,ext,created,info"

/* Statement helpers (store.c); the caller holds the connection's mutex. */
void qd_st_done(sqlite3_stmt *s);                       /* reset + clear bindings */
int qd_st_step_done(conn *c, sqlite3_stmt *s);          /* step once, then done; 0 or QD_ST_* */
int qd_st_begin(conn *c);
int qd_st_commit(conn *c);                              /* rolls back when the commit fails */
void qd_st_rollback(conn *c);
void qd_st_bind_text(sqlite3_stmt *s, int i, const char *v);
void qd_st_bind_json(sqlite3_stmt *s, int i, const json_t *v);
json_t *qd_st_col_json(sqlite3_stmt *s, int i);
json_t *qd_st_col_time(sqlite3_stmt *s, int i);
json_t *qd_st_upload_row(sqlite3_stmt *s);              /* a row of QD_ST_UPLOAD_COLS → record */
json_t *qd_st_job_row(sqlite3_stmt *s);                 /* a row of QD_ST_JOB_COLS → job object */
int qd_st_is_terminal(const char *state);
/* Appends one event inside the caller's write transaction. */
int qd_st_event_insert(conn *c, const char *job, const char *type, const json_t *data, int64_t *seq);

#endif
