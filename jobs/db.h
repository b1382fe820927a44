/* The store's SQL seam: one small statement API over two drivers, SQLite (embedded, the default)
 * and PostgreSQL (libpq, several hosts on one database). The store's logic (store.c,
 * store_admin.c, store_lease.c) is written once against it; where the dialects differ the caller
 * picks the text with qd_db_kind.
 *
 * SQL is written in SQLite's form: parameters `?` or `?N`. For PostgreSQL they become `$N`
 * (outside quoted literals) and are sent typed (text, int8, float8), so `?2 IS NULL OR x = ?2`
 * works on both. Results are read by column; PostgreSQL's come back as text and are converted.
 *
 *   qd_stmt *s = qd_db_prepare(db, "SELECT state FROM jobs WHERE id=?");
 *   qd_stmt_bind_text(s, 1, id);
 *   if (qd_stmt_step(s) == 1) puts(qd_stmt_text(s, 0));
 *   qd_stmt_finalize(s);
 *
 * A connection is used by one thread at a time (the store holds a mutex around it). */
#ifndef QD_DB_H
#define QD_DB_H

#include <stdint.h>
#include <stddef.h>

typedef struct qd_db qd_db;
typedef struct qd_stmt qd_stmt;

typedef enum qd_db_kind { QD_DB_SQLITE = 0, QD_DB_PG = 1 } qd_db_kind;

/* SQLite: path of the database file (create: make it if absent; WAL, synchronous=FULL). */
int qd_db_open_sqlite(const char *path, int create, qd_db **out, char *err, size_t n);
/* PostgreSQL: a libpq connection URI (postgresql://user@host/db, ?host=/socket/dir …). */
int qd_db_open_pg(const char *url, qd_db **out, char *err, size_t n);
void qd_db_close(qd_db *db);
qd_db_kind qd_db_kind_of(const qd_db *db);
const char *qd_db_errmsg(const qd_db *db);
/* Runs one or more statements without parameters; 0 or a QD_ST_* code (logged). */
int qd_db_exec(qd_db *db, const char *sql);

/* NULL on a syntax error (logged). A statement may be stepped, reset and stepped again. */
qd_stmt *qd_db_prepare(qd_db *db, const char *sql);
void qd_stmt_finalize(qd_stmt *s);
void qd_stmt_reset(qd_stmt *s);   /* back to the start, bindings cleared */
void qd_stmt_bind_text(qd_stmt *s, int i, const char *v);   /* NULL → SQL NULL */
void qd_stmt_bind_text_free(qd_stmt *s, int i, char *v);    /* takes v (malloc'd) */
void qd_stmt_bind_int64(qd_stmt *s, int i, int64_t v);
void qd_stmt_bind_double(qd_stmt *s, int i, double v);
void qd_stmt_bind_null(qd_stmt *s, int i);
/* 1: a row is ready; 0: done; <0: QD_ST_DB, or QD_ST_FULL when the disk is full (logged). */
int qd_stmt_step(qd_stmt *s);
int qd_stmt_isnull(qd_stmt *s, int col);
const char *qd_stmt_text(qd_stmt *s, int col);   /* NULL for SQL NULL; valid until the next step */
int64_t qd_stmt_int64(qd_stmt *s, int col);
double qd_stmt_double(qd_stmt *s, int col);

#endif
