/* Several hosts on one queue (PostgreSQL; see store.h): claims, leases, cancellation.
 *
 * A host claims the oldest queued job with SELECT … FOR UPDATE SKIP LOCKED (hosts claiming at the
 * same moment take different rows instead of waiting for each other) and moves it to running
 * under its lease: lease_owner = its host id, lease_expires = the database's clock + lease_s. The
 * scheduler renews the lease of each job it runs at every poll; a job whose lease expired (its
 * host was killed, or cut off from the database) is requeued by whichever host notices first.
 * Every write of a job's end checks the lease owner in the same transaction (store.c's
 * transition), so a host that lost its lease never records anything: only the new owner does.
 * Cancellation through another host sets cancel_requested on the row; the owner reads it back at
 * its next renewal (polling the row, no LISTEN/NOTIFY: one mechanism for leases and cancels). All
 * times are the database's clock, so hosts' clocks need not agree. */
#include "jobs/store.h"
#include "jobs/store_int.h"
#include "common/log.h"

#include <stdio.h>
#include <string.h>

int qd_store_claim(qd_store *st, char id[32])
{
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    int rc = qd_st_begin(c);
    if (rc == 0) {
        qd_stmt *s = qd_db_prepare(c->db, qd_st_pg(c)
            ? "SELECT id FROM jobs WHERE state='queued' ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED"
            : "SELECT id FROM jobs WHERE state='queued' ORDER BY n LIMIT 1");
        rc = s ? qd_stmt_step(s) : QD_ST_DB;
        if (rc == 1)
            snprintf(id, 32, "%s", qd_stmt_text(s, 0));
        qd_stmt_finalize(s);
        if (rc == 1) {
            json_t *extra = json_pack("{s:s}", "host", st->host);   /* who runs it, in its events */
            qd_job_update u = { .set_started = 1, .owner = st->host, .lease_s = st->lease_s, .event_extra = extra };
            int t = qd_st_transition_locked(c, id, "queued", "running", &u, NULL);
            json_decref(extra);
            if (t < 0)
                rc = t;
        }
        if (rc == 1) {
            int k = qd_st_commit(c);
            if (k < 0)
                rc = k;
        } else {
            qd_st_rollback(c);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int qd_store_lease_renew(qd_store *st, const char *id, int *cancel)
{
    *cancel = 0;
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE jobs SET lease_expires=%s+? WHERE id=? AND state='running' AND lease_owner=?"
             " RETURNING cancel_requested", qd_st_now_sql(&st->w));
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = qd_db_prepare(c->db, sql);
    int rc = QD_ST_DB;
    if (s) {
        qd_stmt_bind_double(s, 1, st->lease_s);
        qd_stmt_bind_text(s, 2, id);
        qd_stmt_bind_text(s, 3, st->host);
        rc = qd_stmt_step(s);
        if (rc == 1)
            *cancel = qd_stmt_int64(s, 0) != 0;
        rc = rc == 1 ? 0 : rc == 0 ? QD_ST_CONFLICT : rc;
        qd_stmt_finalize(s);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int qd_store_request_cancel(qd_store *st, const char *id)
{
    conn *c = &st->w;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = qd_db_prepare(c->db, "UPDATE jobs SET cancel_requested=1 WHERE id=? AND state='running' RETURNING id");
    int rc = QD_ST_DB;
    if (s) {
        qd_stmt_bind_text(s, 1, id);
        rc = qd_stmt_step(s);
        qd_stmt_finalize(s);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) {   /* not running: gone, or in another state */
        char state[16];
        rc = qd_store_job_state(st, id, state) < 0 ? QD_ST_NOTFOUND : QD_ST_CONFLICT;
    }
    return rc;
}

/* Ids from sql (one text parameter: this host), on the read connection. */
static json_t *ids_of(qd_store *st, const char *sql)
{
    json_t *arr = json_array();
    conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    qd_stmt *s = qd_db_prepare(c->db, sql);
    if (s) {
        qd_stmt_bind_text(s, 1, st->host);
        while (qd_stmt_step(s) == 1)
            json_array_append_new(arr, json_string(qd_stmt_text(s, 0)));
        qd_stmt_finalize(s);
    }
    pthread_mutex_unlock(&c->mu);
    return arr;
}

json_t *qd_st_leased_ids(qd_store *st)
{
    return ids_of(st, "SELECT id FROM jobs WHERE state='running' AND lease_owner=? ORDER BY n");
}

int qd_store_requeue_expired(qd_store *st, json_t *cancelled)
{
    conn *c = &st->w;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT id, lease_owner, cancel_requested FROM jobs WHERE state='running' AND lease_expires < %s"
             " ORDER BY n%s", qd_st_now_sql(c), qd_st_pg(c) ? " FOR UPDATE SKIP LOCKED" : "");
    pthread_mutex_lock(&c->mu);
    int rc = qd_st_begin(c), n = 0;
    if (rc == 0) {
        json_t *ids = json_array();
        qd_stmt *s = qd_db_prepare(c->db, sql);
        rc = s ? 0 : QD_ST_DB;
        int k;
        while (s && (k = qd_stmt_step(s)) == 1)
            json_array_append_new(ids, json_pack("[s, s, b]", qd_stmt_text(s, 0),
                                                 qd_stmt_text(s, 1) ? qd_stmt_text(s, 1) : "?",
                                                 qd_stmt_int64(s, 2) != 0));
        if (s && k < 0)
            rc = k;
        qd_stmt_finalize(s);
        size_t i;
        json_t *v;
        json_array_foreach(ids, i, v) {
            if (rc < 0)
                break;
            const char *id = json_string_value(json_array_get(v, 0));
            const char *host = json_string_value(json_array_get(v, 1));
            /* a cancellation asked while the host was dying ends the job rather than rerunning it */
            int cancel = json_is_true(json_array_get(v, 2));
            char why[160];
            snprintf(why, sizeof why, "%s: the lease of host %s expired", cancel ? "cancelled" : "requeued", host);
            json_t *extra = json_pack("{s:s, s:s}", "reason", why, "host", host);
            qd_job_update u = { .event_extra = extra, .set_finished = cancel };
            rc = qd_st_transition_locked(c, id, "running", cancel ? "cancelled" : "queued", &u, NULL);
            json_decref(extra);
            if (rc == 0) {
                n++;
                QD_LOG_NOTICE("job %s: %s", id, why);
                if (cancel && cancelled)
                    json_array_append_new(cancelled, json_string(id));
            }
        }
        json_decref(ids);
        if (rc == 0)
            rc = qd_st_commit(c);
        else
            qd_st_rollback(c);
        if (rc < 0 && cancelled)
            json_array_clear(cancelled);
    }
    pthread_mutex_unlock(&c->mu);
    return rc < 0 ? rc : n;
}
