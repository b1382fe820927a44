/* quantd: the daemon's main. Reads the configuration, opens the store, starts the scheduler
 * (libuv loop thread + worker pool) and the HTTP server (libmicrohttpd threads), then waits for
 * signals on this thread with sigwait: no code runs in signal-handler context at all (the
 * signals are blocked in every thread, and this one takes them synchronously).
 *
 *   SIGHUP           re-read the token file
 *   SIGTERM, SIGINT  stop accepting connections, stop running jobs and requeue them (they run
 *                    again at the next start), end event streams, exit 0
 *
 * With systemd (Type=notify) it reports READY=1 once listening and STOPPING=1 on the way out. */
#include "config.h"
#include "api/server.h"
#include "daemon/conf.h"
#include "common/log.h"
#include "jobs/debug_jobs.h"
#include "jobs/retention.h"
#include "jobs/webhook.h"
#include "jobs/scheduler.h"
#include "jobs/store.h"

#include <pthread.h>
#include <quant/tensor.h>
#include <quant/threadpool.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#define notify(...) sd_notifyf(0, __VA_ARGS__)
#else
#define notify(...) ((void)0)
#endif

/* glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so the
 * buffers of a few MiB that each pipeline step allocates and frees (weight copies, observers,
 * small models' plans) come from the heap afterwards, where freed ones stay resident: a PTQ job's
 * peak RSS grew with each checked step. A fixed threshold keeps blocks of 1 MiB and more in
 * mappings of their own, returned when freed. */
static void malloc_policy(void)
{
#ifdef M_MMAP_THRESHOLD
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
}

int main(int argc, char **argv)
{
    malloc_policy();
    qd_config cfg;
    char err[1024];
    int rc = qd_config_load(&cfg, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "quantd: %s\n", err);
        qd_config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    qd_log_init(cfg.log_level);
    qs_set_max_tensor_bytes((size_t)cfg.max_tensor_size);   /* uploads and jobs alike */

    /* Before any thread starts, so that every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    qd_store *st = NULL;
    qd_server *srv = NULL;
    qd_sched *sched = NULL;
    qs_threadpool *pool = NULL;
    qd_retention *rt = NULL;
    qd_webhooks *wh = NULL;
    qd_store_opts sto = { .state_dir = cfg.state_dir, .url = cfg.store, .artifact_dir = cfg.artifact_dir,
                          .host_id = cfg.host_id, .lease_s = cfg.lease_seconds };
    if (qd_store_open_ex(&sto, &st, err, sizeof err) < 0)
        goto fail;
    qd_server_options so_http = qd_config_server_options(&cfg);
    if (!(srv = qd_server_new(&so_http, st, err, sizeof err)))
        goto fail;
    /* the port first: a daemon that cannot serve must not requeue or start any job */
    char addr[128];
    if (qd_server_bind(srv, addr, sizeof addr, err, sizeof err) < 0)
        goto fail;
    /* One pool of compute threads for every job: jobs running at once share it instead of each
     * starting threads of its own. Its workers take job_nice as the job threads do. */
    qs_err qe = {0};
    if (!(pool = qs_threadpool_new(cfg.engine_threads, cfg.job_nice, &qe))) {
        snprintf(err, sizeof err, "%s", qe.msg);
        goto fail;
    }
    /* deliveries run on their own thread: the scheduler only queues them (on_end) */
    qd_webhook_opts wo = { .secret = cfg.webhook_secret, .attempts = cfg.webhook_attempts,
                           .backoff_ms = cfg.webhook_backoff_ms, .timeout_s = cfg.webhook_timeout,
                           .notify = qd_server_notify, .ud = srv };
    wh = qd_webhooks_start(st, &wo);
    qd_sched_opts so = {
        .workers = cfg.workers, .pool = pool, .job_nice = cfg.job_nice,
        .max_queue = cfg.max_queue, .poll_ms = cfg.poll_interval_ms,
        .extra_types = cfg.debug_jobs ? qd_debug_job_types : NULL, .notify = qd_server_notify, .ud = srv,
        .on_end = wh ? qd_webhooks_job_ended : NULL, .end_ud = wh,
    };
    if (qd_sched_start(st, &so, &sched, err, sizeof err) < 0)
        goto fail;
    /* after the scheduler's start, which settles jobs a dead process left running */
    rt = qd_retention_start(st, cfg.job_retention_days * 86400.0, cfg.max_state_bytes, cfg.retention_interval);
    if (qd_server_listen(srv, sched, err, sizeof err) < 0)
        goto fail;
    QD_LOG_NOTICE("quantd %s listening on http://%s (state %s, %d worker%s, auth %s%s)", PACKAGE_VERSION, addr,
                  cfg.state_dir, cfg.workers, cfg.workers > 1 ? "s" : "", cfg.token_file[0] ? "on" : "off",
                  cfg.debug_jobs ? ", debug jobs on" : "");
    notify("READY=1\nSTATUS=listening on %s", addr);

    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            QD_LOG_NOTICE("SIGHUP: reloading tokens");
            qd_server_reload_tokens(srv);
            continue;
        }
        QD_LOG_NOTICE("%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    notify("STOPPING=1\nSTATUS=stopping: requeueing running jobs");
    qd_server_quiesce(srv);
    qd_retention_stop(rt);
    int left = qd_sched_stop(sched, cfg.shutdown_timeout);
    qd_webhooks_stop(wh);   /* after the scheduler (no new deliveries), before the server (notify) */
    qd_server_stop(srv);
    if (left) {
        /* Workers still inside the engine may touch the store; their records are requeued
         * already, so leave without tearing down what they use. */
        QD_LOG_WARNING("exiting with %d job%s still stopping; requeued for the next start", left, left > 1 ? "s" : "");
        _exit(0);
    }
    qd_sched_free(sched);
    qd_server_free(srv);
    qd_store_close(st);
    qs_threadpool_free(pool);
    QD_LOG_NOTICE("stopped");
    qd_config_free(&cfg);
    return 0;

fail:
    QD_LOG_ERROR("%s", err);
    notify("STATUS=failed: %s", err);
    qd_retention_stop(rt);
    if (sched && qd_sched_stop(sched, cfg.shutdown_timeout) > 0)
        _exit(1);   /* a job still runs (it is requeued): leave its memory alone */
    qd_webhooks_stop(wh);
    qd_sched_free(sched);
    qd_server_free(srv);
    qd_store_close(st);
    qs_threadpool_free(pool);
    qd_config_free(&cfg);
    return 1;
}
