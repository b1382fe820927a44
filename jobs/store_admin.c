/* The store's housekeeping (see store.h): deleting finished jobs, the jobs that use an upload,
 * pages of the lists, and retention.
 *
 * A job is deleted in one transaction (record, references, events), and its folder after the
 * commit: a crash in between leaves a folder no record names, which nothing serves (artifacts are
 * served only by the record's list) and a later job can never reuse (ids are random).
 *
 * Cursors: jobs are ordered by their submission number n, uploads by rowid (insertion order), both
 * newest first; a page's cursor is the key of its last item, so deletions between two requests
 * neither skip nor repeat anything. */
#include "jobs/store.h"
#include "jobs/store_int.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Runs sql with one text parameter (may be NULL: none) on c (lock held); 0 or QD_ST_*. */
static int exec1(conn *c, const char *sql, const char *arg)
{
    qd_stmt *s = qd_db_prepare(c->db, sql);
    if (!s)
        return QD_ST_DB;
    if (arg)
        qd_st_bind_text(s, 1, arg);
    int rc = qd_st_step_done(c, s);
    qd_stmt_finalize(s);
    return rc;
}

int qd_store_job_delete(qd_store *st, const char *id)
{
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    int rc = qd_st_begin(c);
    if (rc == 0) {
        qd_stmt *s = NULL;
        rc = (s = qd_db_prepare(c->db, "SELECT state FROM jobs WHERE id=?")) != NULL ? 0 : QD_ST_DB;
        if (rc == 0) {
            qd_st_bind_text(s, 1, id);
            if (qd_stmt_step(s) != 1)
                rc = QD_ST_NOTFOUND;
            else if (!qd_st_is_terminal(qd_stmt_text(s, 0)))
                rc = QD_ST_CONFLICT;
        }
        qd_stmt_finalize(s);
        if (rc == 0)
            rc = exec1(c, "DELETE FROM events WHERE job=?", id);
        if (rc == 0)
            rc = exec1(c, "DELETE FROM job_refs WHERE job=?", id);
        if (rc == 0)
            rc = exec1(c, "DELETE FROM jobs WHERE id=?", id);
        if (rc == 0)
            rc = qd_st_commit(c);
        else
            qd_st_rollback(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) {
        char dir[PATH_MAX];
        qd_store_job_dir(st, id, dir, sizeof dir);
        qd_rm_rf(dir);
    }
    return rc;
}

int qd_store_event_add_if_job(qd_store *st, const char *job, const char *type, json_t *data)
{
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    int rc = qd_st_begin(c);
    if (rc == 0) {
        rc = qd_st_event_insert(c, job, type, data, NULL);   /* QD_ST_NOTFOUND when the job is gone */
        if (rc == 0)
            rc = qd_st_commit(c);
        else
            qd_st_rollback(c);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

json_t *qd_store_webhooks_pending(qd_store *st, int max_attempts)
{
    json_t *arr = json_array();
    conn *c = &st->r;
    char notify[64], sql[640];
    snprintf(sql, sizeof sql,
             "SELECT id, n FROM (SELECT j.id, j.finished, (SELECT COUNT(*) FROM events e WHERE e.job = j.id"
             " AND e.type = 'webhook') AS n FROM jobs j WHERE j.state IN ('succeeded','failed','cancelled')"
             " AND %s IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events e WHERE e.job = j.id"
             " AND e.type = 'webhook' AND %s)) p WHERE n < ? ORDER BY finished",
             qd_st_json_field(c, "j.spec", "notify", notify, sizeof notify),
             qd_st_pg(c) ? "(e.data::jsonb->>'delivered') = 'true'" : "json_extract(e.data, '$.delivered') = 1");
    pthread_mutex_lock(&c->mu);
    qd_stmt *s;
    if ((s = qd_db_prepare(c->db, sql)) != NULL) {
        qd_stmt_bind_int64(s, 1, max_attempts);
        while (qd_stmt_step(s) == 1)
            json_array_append_new(arr, json_pack("[s, I]", qd_stmt_text(s, 0),
                                                 (json_int_t)qd_stmt_int64(s, 1)));
        qd_stmt_finalize(s);
    } else {
        QD_LOG_ERROR("store: %s", qd_db_errmsg(c->db));
    }
    pthread_mutex_unlock(&c->mu);
    return arr;
}

json_t *qd_store_ref_jobs(qd_store *st, const char *upload_id, int live_only, int max)
{
    char sql[320];
    snprintf(sql, sizeof sql,
             "SELECT j.id FROM job_refs r JOIN jobs j ON j.id=r.job WHERE r.ref=?%s GROUP BY j.id"
             " ORDER BY MAX(j.n) DESC LIMIT ?", live_only ? " AND j.state IN ('queued','running')" : "");
    json_t *arr = json_array();
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s;
    if ((s = qd_db_prepare(c->db, sql)) != NULL) {
        qd_st_bind_text(s, 1, upload_id);
        qd_stmt_bind_int64(s, 2, max);
        while (qd_stmt_step(s) == 1)
            json_array_append_new(arr, json_string(qd_stmt_text(s, 0)));
        qd_stmt_finalize(s);
    }
    pthread_mutex_unlock(&c->mu);
    return arr;
}

/* ---- pages ------------------------------------------------------------------------------- */

/* One page of sql: ?1 is the cursor (q->after), ?2.. the n filters in texts (NULL: no filter),
 * the last parameter the row count — limit+1 rows are asked for, so one more than the limit means
 * a next page, whose cursor is the ordering key (column keycol) of the last row kept. */
static int read_page(qd_store *st, const char *sql, const qd_list_query *q, const char *const *texts, int n,
                     int keycol, json_t *(*row)(qd_stmt *), json_t **items, int64_t *next)
{
    *items = json_array();
    *next = 0;
    conn *c = &st->r;
    int rc = QD_ST_DB;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s;
    if ((s = qd_db_prepare(c->db, sql)) != NULL) {
        qd_stmt_bind_int64(s, 1, q->after);
        for (int i = 0; i < n; i++)
            qd_st_bind_text(s, 2 + i, texts[i]);
        qd_stmt_bind_int64(s, 2 + n, q->limit + 1);
        int k = 0;
        int64_t last = 0;
        while (qd_stmt_step(s) == 1) {
            if (k == q->limit) {
                *next = last;
                break;
            }
            json_array_append_new(*items, row(s));
            last = qd_stmt_int64(s, keycol);
            k++;
        }
        qd_stmt_finalize(s);
        rc = 0;
    } else {
        QD_LOG_ERROR("store: %s", qd_db_errmsg(c->db));
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int qd_store_job_page(qd_store *st, const qd_list_query *q, json_t **items, int64_t *next)
{
    const char *const texts[] = { q->state, q->type, q->name };
    char name[64], sql[512];
    snprintf(sql, sizeof sql,
             "SELECT " QD_ST_JOB_COLS ",n FROM jobs WHERE (?1 = 0 OR n < ?1) AND (?2 IS NULL OR state = ?2)"
             " AND (?3 IS NULL OR type = ?3) AND (?4 IS NULL OR %s = ?4) ORDER BY n DESC LIMIT ?5",
             qd_st_json_field(&st->r, "spec", "name", name, sizeof name));
    return read_page(st, sql, q, texts, 3, 12, qd_st_job_row, items, next);
}

int qd_store_upload_page(qd_store *st, qd_kind kind, const qd_list_query *q, json_t **items, int64_t *next)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT " QD_ST_UPLOAD_COLS ",rowid FROM %s WHERE (?1 = 0 OR rowid < ?1) AND (?2 IS NULL OR name = ?2)"
             " AND (?3 IS NULL OR sha256 = ?3) ORDER BY rowid DESC LIMIT ?4", qd_st_tables[kind]);
    const char *const texts[] = { q->name, q->sha256 };
    return read_page(st, sql, q, texts, 2, 7, qd_st_upload_row, items, next);
}

/* ---- retention --------------------------------------------------------------------------- */

/* Bytes of the regular files under path (symlinks not followed). */
static int64_t tree_bytes(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) < 0)
        return 0;
    if (!S_ISDIR(sb.st_mode))
        return S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : 0;
    int64_t sum = 0;
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        sum += tree_bytes(sub);
    }
    closedir(d);
    return sum;
}

int64_t qd_store_bytes(qd_store *st) { return tree_bytes(st->dir); }

/* Ids (with a size column, or 0) that one query returns, oldest first. */
static json_t *query_ids(qd_store *st, const char *sql, double t)
{
    json_t *arr = json_array();
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s;
    if ((s = qd_db_prepare(c->db, sql)) != NULL) {
        qd_stmt_bind_double(s, 1, t);
        while (qd_stmt_step(s) == 1)
            json_array_append_new(arr, json_pack("[s, s, I]", qd_stmt_text(s, 0),
                                                 qd_stmt_text(s, 1),
                                                 (json_int_t)qd_stmt_int64(s, 2)));
        qd_stmt_finalize(s);
    } else {
        QD_LOG_ERROR("store: %s", qd_db_errmsg(c->db));
    }
    pthread_mutex_unlock(&c->mu);
    return arr;
}

/* Finished jobs ending before t, oldest end first: [id, "", 0]. */
#define OLD_JOBS "SELECT id, '', 0 FROM jobs WHERE state IN ('succeeded','failed','cancelled') AND finished < ?1" \
                 " ORDER BY finished, n"
/* Uploads of both kinds created before t that no job references, oldest first: [id, ext, size]. */
#define FREE_UPLOADS "SELECT id, ext, size FROM (SELECT id, ext, size, created FROM models UNION ALL" \
                     " SELECT id, ext, size, created FROM datasets) u WHERE created < ?1 AND NOT EXISTS" \
                     " (SELECT 1 FROM job_refs r WHERE r.ref = u.id) ORDER BY created"

static int prune_pass(qd_store *st, json_t *ids, int is_jobs, int64_t max_bytes, int64_t *bytes, int *count)
{
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        if (max_bytes && *bytes <= max_bytes)
            break;
        const char *id = json_string_value(json_array_get(v, 0));
        int64_t freed;
        int rc;
        if (is_jobs) {
            char dir[PATH_MAX];
            qd_store_job_dir(st, id, dir, sizeof dir);
            freed = tree_bytes(dir);
            rc = qd_store_job_delete(st, id);
        } else {
            freed = json_integer_value(json_array_get(v, 2));
            rc = qd_store_delete(st, !strncmp(id, "mdl_", 4) ? QD_MODEL : QD_DATASET, id);
        }
        if (rc == 0) {
            *bytes -= freed;
            ++*count;
            QD_LOG_INFO("retention: %s %s removed", is_jobs ? "job" : "upload", id);
        } else if (rc != QD_ST_NOTFOUND && rc != QD_ST_CONFLICT && rc != QD_ST_BUSY) {
            return rc;
        }
    }
    return 0;
}

int qd_store_prune(qd_store *st, double max_age_s, int64_t max_bytes, int *jobs, int *uploads)
{
    int nj = 0, nu = 0, rc = 0;
    int64_t bytes = max_bytes ? qd_store_bytes(st) : 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        /* pass 0: by age; pass 1: by size, whatever their age */
        if (pass == 0 ? max_age_s <= 0 : !max_bytes || bytes <= max_bytes)
            continue;
        double before = pass == 0 ? qd_now() - max_age_s : 1e300;
        int64_t limit = pass == 0 ? 0 : max_bytes;
        json_t *ids = query_ids(st, OLD_JOBS, before);
        rc = prune_pass(st, ids, 1, limit, &bytes, &nj);
        json_decref(ids);
        if (rc == 0) {
            ids = query_ids(st, FREE_UPLOADS, before);
            rc = prune_pass(st, ids, 0, limit, &bytes, &nu);
            json_decref(ids);
        }
    }
    if (jobs)
        *jobs = nj;
    if (uploads)
        *uploads = nu;
    return rc;
}
