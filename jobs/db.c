/* The SQL seam's two drivers; see db.h.
 *
 * SQLite: a thin wrapper over sqlite3_stmt. PostgreSQL: a statement keeps its translated text and
 * its bindings, and the first step after a reset runs it (PQexecParams, text results, the whole
 * result in memory: the store's statements return a row, a page or a few ids). A lost connection
 * is reset before the next statement; if it was lost inside a transaction, every statement fails
 * until the caller's ROLLBACK or COMMIT, so a transaction never half-applies on the new
 * connection. */
#include "jobs/db.h"
#include "jobs/store.h"
#include "common/log.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { MAX_PARAMS = 16 };
enum { OID_INT8 = 20, OID_TEXT = 25, OID_FLOAT8 = 701 };

struct qd_db {
    qd_db_kind kind;
    sqlite3 *lite;
    PGconn *pg;
    int in_tx, tx_broken;
    char err[256];
};

struct qd_stmt {
    qd_db *db;
    sqlite3_stmt *lite;
    /* PostgreSQL */
    char *sql;
    int nparams;
    char *vals[MAX_PARAMS];
    unsigned int types[MAX_PARAMS];
    PGresult *res;
    int row, nrows, ran;
};

qd_db_kind qd_db_kind_of(const qd_db *db) { return db->kind; }

const char *qd_db_errmsg(const qd_db *db)
{
    if (db->kind == QD_DB_SQLITE)
        return sqlite3_errmsg(db->lite);
    return db->err;
}

/* ---- SQLite ------------------------------------------------------------------------------ */

int qd_db_open_sqlite(const char *path, int create, qd_db **out, char *err, size_t n)
{
    qd_db *db = calloc(1, sizeof *db);
    if (!db) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    db->kind = QD_DB_SQLITE;
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &db->lite, flags, NULL);
    char *msg = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db->lite, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, n, "database %s: %s", path, msg ? msg : sqlite3_errmsg(db->lite));
        sqlite3_free(msg);
        qd_db_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db->lite, 10000);
    *out = db;
    return 0;
}

static int lite_error(qd_db *db)
{
    return (sqlite3_extended_errcode(db->lite) & 0xff) == SQLITE_FULL ? QD_ST_FULL : QD_ST_DB;
}

/* ---- PostgreSQL -------------------------------------------------------------------------- */

static void quiet_notice(void *arg, const char *msg) { (void)arg; (void)msg; }

int qd_db_open_pg(const char *url, qd_db **out, char *err, size_t n)
{
    qd_db *db = calloc(1, sizeof *db);
    if (!db) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    db->kind = QD_DB_PG;
    db->pg = PQconnectdb(url);
    if (!db->pg || PQstatus(db->pg) != CONNECTION_OK) {
        snprintf(err, n, "postgresql: %s", db->pg ? PQerrorMessage(db->pg) : "out of memory");
        size_t k = strlen(err);
        while (k && err[k - 1] == '\n')
            err[--k] = 0;
        qd_db_close(db);
        return -1;
    }
    PQsetNoticeProcessor(db->pg, quiet_notice, NULL);
    *out = db;
    return 0;
}

/* ?N → $N and bare ? → $k, outside '…' literals. */
static char *pg_translate(const char *sql, int *nparams)
{
    size_t n = strlen(sql);
    char *out = malloc(n * 2 + 1);
    if (!out)
        return NULL;
    int quoted = 0, bare = 0, maxn = 0;
    size_t k = 0;
    for (const char *p = sql; *p; p++) {
        if (*p == '\'')
            quoted = !quoted;
        if (quoted || *p != '?') {
            out[k++] = *p;
            continue;
        }
        int num;
        if (p[1] >= '0' && p[1] <= '9') {
            num = (int)strtol(p + 1, (char **)&p, 10);
            p--;
        } else {
            num = ++bare;
        }
        if (num > maxn)
            maxn = num;
        k += (size_t)sprintf(out + k, "$%d", num);
    }
    out[k] = 0;
    *nparams = maxn;
    return out;
}

static void pg_clear(qd_stmt *s)
{
    if (s->res)
        PQclear(s->res);
    s->res = NULL;
    s->row = -1;
    s->nrows = 0;
    s->ran = 0;
}

static void set_err(qd_db *db, const char *msg)
{
    snprintf(db->err, sizeof db->err, "%s", msg);
    size_t k = strlen(db->err);
    while (k && db->err[k - 1] == '\n')
        db->err[--k] = 0;
}

static int pg_run(qd_stmt *s)
{
    qd_db *db = s->db;
    const char *t = s->sql;
    int is_begin = !strncasecmp(t, "BEGIN", 5), is_end = !strncasecmp(t, "COMMIT", 6) || !strncasecmp(t, "ROLLBACK", 8);
    if (PQstatus(db->pg) != CONNECTION_OK) {
        PQreset(db->pg);
        if (db->in_tx)
            db->tx_broken = 1;
        if (PQstatus(db->pg) != CONNECTION_OK) {
            set_err(db, PQerrorMessage(db->pg));
            if (is_end)
                db->in_tx = db->tx_broken = 0;
            return QD_ST_DB;
        }
    }
    if (db->tx_broken) {
        if (is_end)
            db->in_tx = db->tx_broken = 0;
        set_err(db, "the connection was lost inside a transaction");
        if (is_end && !strncasecmp(t, "ROLLBACK", 8))
            return 0;
        return QD_ST_DB;
    }
    s->res = PQexecParams(db->pg, s->sql, s->nparams, s->types, (const char *const *)s->vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(s->res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(s->res, PG_DIAG_SQLSTATE);
        set_err(db, PQresultErrorMessage(s->res));
        if (is_end)
            db->in_tx = 0;
        return state && !strcmp(state, "53100") ? QD_ST_FULL : QD_ST_DB;
    }
    if (is_begin)
        db->in_tx = 1;
    if (is_end)
        db->in_tx = 0;
    s->nrows = PQntuples(s->res);
    return 0;
}

/* ---- both -------------------------------------------------------------------------------- */

void qd_db_close(qd_db *db)
{
    if (!db)
        return;
    if (db->lite)
        sqlite3_close(db->lite);
    if (db->pg)
        PQfinish(db->pg);
    free(db);
}

int qd_db_exec(qd_db *db, const char *sql)
{
    if (db->kind == QD_DB_SQLITE) {
        char *msg = NULL;
        if (sqlite3_exec(db->lite, sql, NULL, NULL, &msg) != SQLITE_OK) {
            QD_LOG_ERROR("sqlite: %s", msg ? msg : sqlite3_errmsg(db->lite));
            sqlite3_free(msg);
            return lite_error(db);
        }
        return 0;
    }
    PGresult *r = PQexec(db->pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK ? 0 : QD_ST_DB;
    if (rc) {
        set_err(db, PQresultErrorMessage(r));
        QD_LOG_ERROR("postgresql: %s", db->err);
    }
    PQclear(r);
    return rc;
}

qd_stmt *qd_db_prepare(qd_db *db, const char *sql)
{
    qd_stmt *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->db = db;
    if (db->kind == QD_DB_SQLITE) {
        if (sqlite3_prepare_v3(db->lite, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->lite, NULL) != SQLITE_OK) {
            QD_LOG_ERROR("sqlite: preparing \"%s\": %s", sql, sqlite3_errmsg(db->lite));
            free(s);
            return NULL;
        }
        return s;
    }
    s->sql = pg_translate(sql, &s->nparams);
    if (!s->sql || s->nparams > MAX_PARAMS) {
        QD_LOG_ERROR("postgresql: preparing \"%s\": too many parameters", sql);
        free(s->sql);
        free(s);
        return NULL;
    }
    s->row = -1;
    return s;
}

static void pg_unbind(qd_stmt *s)
{
    for (int i = 0; i < MAX_PARAMS; i++) {
        free(s->vals[i]);
        s->vals[i] = NULL;
        s->types[i] = 0;
    }
}

void qd_stmt_finalize(qd_stmt *s)
{
    if (!s)
        return;
    if (s->lite)
        sqlite3_finalize(s->lite);
    pg_clear(s);
    pg_unbind(s);
    free(s->sql);
    free(s);
}

void qd_stmt_reset(qd_stmt *s)
{
    if (!s)
        return;
    if (s->lite) {
        sqlite3_reset(s->lite);
        sqlite3_clear_bindings(s->lite);
        return;
    }
    pg_clear(s);
    pg_unbind(s);
}

static void pg_bind(qd_stmt *s, int i, char *v, unsigned int type)
{
    if (i < 1 || i > MAX_PARAMS) {
        free(v);
        return;
    }
    free(s->vals[i - 1]);
    s->vals[i - 1] = v;
    s->types[i - 1] = type;   /* typed even when NULL: `?2 IS NULL OR x = ?2` needs one type */
}

void qd_stmt_bind_text_free(qd_stmt *s, int i, char *v)
{
    if (s->lite) {
        if (v)
            sqlite3_bind_text(s->lite, i, v, -1, free);
        else
            sqlite3_bind_null(s->lite, i);
        return;
    }
    pg_bind(s, i, v, OID_TEXT);
}

void qd_stmt_bind_text(qd_stmt *s, int i, const char *v)
{
    if (s->lite) {
        if (v)
            sqlite3_bind_text(s->lite, i, v, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(s->lite, i);
        return;
    }
    pg_bind(s, i, v ? strdup(v) : NULL, OID_TEXT);
}

void qd_stmt_bind_int64(qd_stmt *s, int i, int64_t v)
{
    if (s->lite) {
        sqlite3_bind_int64(s->lite, i, v);
        return;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    pg_bind(s, i, strdup(buf), OID_INT8);
}

void qd_stmt_bind_double(qd_stmt *s, int i, double v)
{
    if (s->lite) {
        sqlite3_bind_double(s->lite, i, v);
        return;
    }
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    pg_bind(s, i, strdup(buf), OID_FLOAT8);
}

void qd_stmt_bind_null(qd_stmt *s, int i)
{
    if (s->lite)
        sqlite3_bind_null(s->lite, i);
    else
        pg_bind(s, i, NULL, 0);
}

int qd_stmt_step(qd_stmt *s)
{
    if (s->lite) {
        int rc = sqlite3_step(s->lite);
        if (rc == SQLITE_ROW)
            return 1;
        if (rc == SQLITE_DONE)
            return 0;
        int e = lite_error(s->db);
        QD_LOG_ERROR("sqlite: %s", sqlite3_errmsg(s->db->lite));
        return e;
    }
    if (!s->ran) {
        s->ran = 1;
        int rc = pg_run(s);
        if (rc < 0) {
            QD_LOG_ERROR("postgresql: %s", s->db->err);
            return rc;
        }
    }
    if (s->row + 1 < s->nrows) {
        s->row++;
        return 1;
    }
    return 0;
}

int qd_stmt_isnull(qd_stmt *s, int col)
{
    if (s->lite)
        return sqlite3_column_type(s->lite, col) == SQLITE_NULL;
    return !s->res || s->row < 0 || PQgetisnull(s->res, s->row, col);
}

const char *qd_stmt_text(qd_stmt *s, int col)
{
    if (s->lite)
        return (const char *)sqlite3_column_text(s->lite, col);
    return qd_stmt_isnull(s, col) ? NULL : PQgetvalue(s->res, s->row, col);
}

int64_t qd_stmt_int64(qd_stmt *s, int col)
{
    if (s->lite)
        return sqlite3_column_int64(s->lite, col);
    const char *t = qd_stmt_text(s, col);
    return t ? strtoll(t, NULL, 10) : 0;
}

double qd_stmt_double(qd_stmt *s, int col)
{
    if (s->lite)
        return sqlite3_column_double(s->lite, col);
    const char *t = qd_stmt_text(s, col);
    return t ? strtod(t, NULL) : 0;
}
