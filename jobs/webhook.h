/* Webhooks: when a job whose spec carries `notify` (an http or https URL) reaches its final state,
 * quantd POSTs the final job object there as JSON, signed with
 *   X-Quantd-Signature: sha256=<hex HMAC-SHA256 of the body under webhook_secret>
 * and retries with exponential backoff (webhook_attempts in all; webhook_backoff_ms, then twice that,
 * …). Every attempt becomes a `webhook` event of the job: {url, attempt, status | error,
 * delivered, retry_in_s?}. A 2xx answer is a delivery; anything else, or no answer within
 * webhook_timeout, is retried.
 *
 * One thread of its own makes the deliveries (libcurl, blocking), so neither the HTTP server nor
 * the scheduler's loop ever waits on a receiver. Nothing but the job's events records a delivery:
 * at start, a finished job with `notify`, no delivered attempt and attempts left (a daemon stopped
 * or killed in a backoff) is delivered again, its attempts counted on from its events.
 *
 *   qd_webhook_opts o = { .secret = "…", .attempts = 5, .backoff_ms = 1000, .timeout_s = 10,
 *                         .notify = qd_server_notify, .ud = srv };
 *   qd_webhooks *wh = qd_webhooks_start(store, &o);
 *   qd_webhooks_job_ended(wh, "job_…");   // any thread: the scheduler's on_end
 *   qd_webhooks_stop(wh); */
#ifndef QD_WEBHOOK_H
#define QD_WEBHOOK_H

#include "jobs/scheduler.h"
#include "jobs/store.h"

typedef struct qd_webhooks qd_webhooks;

typedef struct qd_webhook_opts {
    const char *secret;    /* "" = bodies go unsigned (no X-Quantd-Signature); copied */
    int attempts;          /* deliveries tried at most, ≥ 1 */
    int backoff_ms;        /* before the 2nd attempt; doubled before each next one */
    int timeout_s;         /* per attempt: connect + answer */
    qd_notify_fn notify;   /* a webhook event was committed (event streams wake up); may be NULL */
    void *ud;
} qd_webhook_opts;

qd_webhooks *qd_webhooks_start(qd_store *st, const qd_webhook_opts *o);
/* qd_notify_fn: job reached its final state; a delivery is queued when its spec has `notify`. */
void qd_webhooks_job_ended(void *wh, const char *job);
void qd_webhooks_stop(qd_webhooks *wh);   /* NULL-safe */

#endif
