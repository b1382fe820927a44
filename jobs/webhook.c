/* Webhook deliveries; see webhook.h.
 *
 * The pending deliveries are a list ordered by due time, under a mutex; the thread sleeps on a
 * condition variable until the earliest is due (or a new one arrives, or stop), makes that one
 * attempt without the lock, records it, and either drops the delivery or puts it back with its
 * next due time. The job object is read from the store at each attempt, so a receiver always
 * gets the record as it is, webhook events included up to the previous attempt's. */
#include "config.h"
#include "jobs/webhook.h"
#include "common/log.h"
#include "common/sha256.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct delivery {
    struct delivery *next;
    char job[32];
    int attempt;       /* attempts made */
    double due;        /* monotonic seconds */
} delivery;

struct qd_webhooks {
    qd_store *st;
    qd_webhook_opts o;
    char *secret;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    delivery *pending;   /* by due time */
    int stop;
    pthread_t thread;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* wh->mu held */
static void insert(qd_webhooks *wh, delivery *d)
{
    delivery **pp = &wh->pending;
    while (*pp && (*pp)->due <= d->due)
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    pthread_cond_signal(&wh->cv);
}

/* Queues a delivery whose `attempts` attempts were made already (by a previous process). */
static void queue(qd_webhooks *wh, const char *job, int attempts)
{
    delivery *d = calloc(1, sizeof *d);
    if (!d) {
        QD_LOG_ERROR("job %s: out of memory queueing its webhook", job);
        return;
    }
    snprintf(d->job, sizeof d->job, "%s", job);
    d->attempt = attempts;
    d->due = mono();
    pthread_mutex_lock(&wh->mu);
    insert(wh, d);
    pthread_mutex_unlock(&wh->mu);
}

void qd_webhooks_job_ended(void *arg, const char *job)
{
    if (arg)
        queue(arg, job, 0);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* One POST; the HTTP status (0 when none came) and, for a transport failure, the reason. */
static long post(qd_webhooks *wh, const char *url, const char *body, char *err, size_t errlen)
{
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "cannot start a libcurl handle");
        return 0;
    }
    char sig[128] = "", cerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "X-Quantd-Event: job.finished");
    if (wh->secret[0]) {
        uint8_t mac[32];
        char hex[65];
        qd_hmac_sha256(wh->secret, strlen(wh->secret), body, strlen(body), mac, hex);
        snprintf(sig, sizeof sig, "X-Quantd-Signature: sha256=%s", hex);
        h = curl_slist_append(h, sig);
    }
    h = curl_slist_append(h, "Expect:");   /* no 100-continue round trip */
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "quantd/" PACKAGE_VERSION);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)wh->o.timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);   /* a redirect is an answer, not a delivery */
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* Makes d's next attempt; returns the delay before another one in seconds, or -1 when done. */
static double attempt(qd_webhooks *wh, delivery *d)
{
    json_t *job = qd_store_job_get(wh->st, d->job);
    const char *url = job ? json_string_value(json_object_get(json_object_get(job, "spec"), "notify")) : NULL;
    if (!url) {   /* no webhook asked for, or the job was deleted meanwhile */
        json_decref(job);
        return -1;
    }
    char *body = json_dumps(job, JSON_COMPACT);
    char err[CURL_ERROR_SIZE + 64] = "";
    d->attempt++;
    long status = body ? post(wh, url, body, err, sizeof err) : 0;
    if (!body)
        snprintf(err, sizeof err, "out of memory");
    free(body);
    int delivered = status >= 200 && status < 300;
    double delay = -1;
    if (!delivered && d->attempt < wh->o.attempts)
        delay = wh->o.backoff_ms / 1000.0 * (double)(1LL << (d->attempt - 1 < 30 ? d->attempt - 1 : 30));
    json_t *ev = json_pack("{s:s, s:i, s:b}", "url", url, "attempt", d->attempt, "delivered", delivered);
    if (status)
        json_object_set_new(ev, "status", json_integer(status));
    else
        json_object_set_new(ev, "error", json_string(err));
    if (delay >= 0)
        json_object_set_new(ev, "retry_in_s", json_real(delay));
    int rc = qd_store_event_add_if_job(wh->st, d->job, "webhook", ev);
    json_decref(ev);
    if (rc == 0 && wh->o.notify)
        wh->o.notify(wh->o.ud, d->job);
    if (delivered)
        QD_LOG_INFO("job %s: webhook delivered to %s (%ld, attempt %d)", d->job, url, status, d->attempt);
    else if (delay >= 0)
        QD_LOG_INFO("job %s: webhook to %s failed (%s); retrying in %.1f s", d->job, url, status ? "an HTTP error" : err,
                    delay);
    else
        QD_LOG_WARNING("job %s: webhook to %s failed after %d attempts (last: %s%ld)", d->job, url, d->attempt,
                       status ? "HTTP " : err, status);
    json_decref(job);
    return rc == QD_ST_NOTFOUND ? -1 : delay;
}

static void *main_loop(void *arg)
{
    qd_webhooks *wh = arg;
    pthread_mutex_lock(&wh->mu);
    while (!wh->stop) {
        if (!wh->pending) {
            pthread_cond_wait(&wh->cv, &wh->mu);
            continue;
        }
        double wait = wh->pending->due - mono();
        if (wait > 0) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            double t = until.tv_sec + until.tv_nsec / 1e9 + wait;
            until.tv_sec = (time_t)t;
            until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
            pthread_cond_timedwait(&wh->cv, &wh->mu, &until);
            continue;   /* whatever woke us: look again */
        }
        delivery *d = wh->pending;
        wh->pending = d->next;
        pthread_mutex_unlock(&wh->mu);
        double delay = attempt(wh, d);
        pthread_mutex_lock(&wh->mu);
        if (delay < 0) {
            free(d);
        } else {
            d->due = mono() + delay;
            insert(wh, d);
        }
    }
    pthread_mutex_unlock(&wh->mu);
    return NULL;
}

qd_webhooks *qd_webhooks_start(qd_store *st, const qd_webhook_opts *o)
{
    qd_webhooks *wh = calloc(1, sizeof *wh);
    if (!wh || !(wh->secret = strdup(o->secret ? o->secret : ""))) {
        free(wh);
        return NULL;
    }
    wh->st = st;
    wh->o = *o;
    if (wh->o.attempts < 1)
        wh->o.attempts = 1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        QD_LOG_ERROR("webhooks: libcurl does not start; no webhook will be sent");
        free(wh->secret);
        free(wh);
        return NULL;
    }
    pthread_mutex_init(&wh->mu, NULL);
    pthread_cond_init(&wh->cv, NULL);
    /* what a previous process left undelivered (stopped or killed during a backoff) goes first */
    json_t *left = qd_store_webhooks_pending(st, wh->o.attempts), *v;
    size_t i;
    json_array_foreach(left, i, v)
        queue(wh, json_string_value(json_array_get(v, 0)), (int)json_integer_value(json_array_get(v, 1)));
    if (json_array_size(left))
        QD_LOG_INFO("webhooks: %zu delivery(ies) left by the previous run resumed", json_array_size(left));
    json_decref(left);
    if (pthread_create(&wh->thread, NULL, main_loop, wh) != 0) {
        QD_LOG_ERROR("webhooks: cannot start their thread; no webhook will be sent");
        for (delivery *d = wh->pending, *next; d; d = next) {
            next = d->next;
            free(d);
        }
        pthread_mutex_destroy(&wh->mu);
        pthread_cond_destroy(&wh->cv);
        curl_global_cleanup();
        free(wh->secret);
        free(wh);
        return NULL;
    }
    return wh;
}

void qd_webhooks_stop(qd_webhooks *wh)
{
    if (!wh)
        return;
    pthread_mutex_lock(&wh->mu);
    wh->stop = 1;
    pthread_cond_signal(&wh->cv);
    pthread_mutex_unlock(&wh->mu);
    pthread_join(wh->thread, NULL);   /* at most one attempt in flight: webhook_timeout */
    for (delivery *d = wh->pending, *next; d; d = next) {
        next = d->next;
        QD_LOG_WARNING("job %s: webhook not delivered yet (%d attempt%s); the next start resumes it", d->job,
                       d->attempt, d->attempt == 1 ? "" : "s");
        free(d);
    }
    pthread_mutex_destroy(&wh->mu);
    pthread_cond_destroy(&wh->cv);
    curl_global_cleanup();
    free(wh->secret);
    free(wh);
}
