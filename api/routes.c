/* The route table, and the service routes: health, metrics, the OpenAPI document.
 * Adding a route: one line here, its handler in a routes_*.c file, its entry in api/openapi.json. */
#include "config.h"
#include "api/api.h"
#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const qd_route qd_routes[] = {
    { .method = "GET", .pattern = "/v1/health", .handler = qd_h_health, .public = 1 },
    { .method = "GET", .pattern = "/metrics", .handler = qd_h_metrics, .public = 1 },
    { .method = "GET", .pattern = "/v1/openapi.json", .handler = qd_h_openapi },
    { .method = "GET", .pattern = "/v1/presets", .handler = qd_h_presets },
    { .method = "POST", .pattern = "/v1/models", .handler = qd_h_model_upload, .body = QD_BODY_MODEL },
    { .method = "GET", .pattern = "/v1/models", .handler = qd_h_model_list },
    { .method = "GET", .pattern = "/v1/models/{id}", .handler = qd_h_model_get },
    { .method = "DELETE", .pattern = "/v1/models/{id}", .handler = qd_h_model_delete },
    { .method = "POST", .pattern = "/v1/datasets", .handler = qd_h_dataset_upload, .body = QD_BODY_DATASET },
    { .method = "GET", .pattern = "/v1/datasets", .handler = qd_h_dataset_list },
    { .method = "GET", .pattern = "/v1/datasets/{id}", .handler = qd_h_dataset_get },
    { .method = "DELETE", .pattern = "/v1/datasets/{id}", .handler = qd_h_dataset_delete },
    { .method = "POST", .pattern = "/v1/jobs", .handler = qd_h_job_submit, .body = QD_BODY_JSON },
    { .method = "GET", .pattern = "/v1/jobs", .handler = qd_h_job_list },
    { .method = "GET", .pattern = "/v1/jobs/{id}", .handler = qd_h_job_get },
    { .method = "DELETE", .pattern = "/v1/jobs/{id}", .handler = qd_h_job_delete },
    { .method = "GET", .pattern = "/v1/jobs/{id}/events", .handler = qd_h_job_events },
    { .method = "GET", .pattern = "/v1/jobs/{id}/artifacts", .handler = qd_h_artifact_list },
    { .method = "GET", .pattern = "/v1/jobs/{id}/artifacts/{name}", .handler = qd_h_artifact },
    /* the web dashboard (api/static.c): last, so that every route above wins over "/{file}" */
    { .method = "GET", .pattern = "/", .handler = qd_h_static, .public = 1 },
    { .method = "GET", .pattern = "/{file}", .handler = qd_h_static, .public = 1 },
    { .method = "GET", .pattern = "/pages/{file}", .handler = qd_h_static, .public = 1 },
    { .method = "GET", .pattern = "/vendor/chart.js", .handler = qd_h_static, .public = 1 },
};
const int qd_nroutes = (int)(sizeof qd_routes / sizeof qd_routes[0]);

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Cheap on purpose (no database): load balancers and systemd probes call it often. */
int qd_h_health(qd_req *r)
{
    qd_sched_stats s;
    qd_sched_get_stats(r->srv->sched, &s);
    return qd_reply_json(r, 200,
                         json_pack("{s:s, s:s, s:f, s:{s:i, s:i, s:i}}", "status", "ok", "version",
                                   PACKAGE_VERSION, "uptime_s", mono() - r->srv->started, "jobs", "queued",
                                   s.queued, "running", s.running, "workers", s.workers),
                         NULL);
}

/* The committed document with the job spec's "config" schema spliced in, generated from the
 * engine's spec table (engine/spec_rows.c) so that the two cannot disagree; built once. */
static char *openapi_doc;
static pthread_once_t openapi_once = PTHREAD_ONCE_INIT;

static void openapi_build(void)
{
    json_t *doc = json_loads(qd_openapi_json, 0, NULL);
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    json_t *props = json_object_get(json_object_get(schemas, "JobSpec"), "properties");
    json_t *config = qs_spec_config_schema();
    if (props && config) {
        json_object_set_new(config, "description",
                            json_string("Settings; every field overrides the preset's default. Generated from the "
                                        "engine's spec table (GET /v1/presets has each preset's defaults). "
                                        "Which fields a job takes depends on its type (see each field)."));
        json_object_set_new(schemas, "JobConfig", config);
        json_object_set_new(props, "config", json_pack("{s:s}", "$ref", "#/components/schemas/JobConfig"));
    } else {
        json_decref(config);
    }
    openapi_doc = doc ? json_dumps(doc, JSON_INDENT(1)) : NULL;
    json_decref(doc);
}

int qd_h_openapi(qd_req *r)
{
    pthread_once(&openapi_once, openapi_build);
    const char *doc = openapi_doc ? openapi_doc : qd_openapi_json;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(doc), (void *)doc, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return QD_H_CLOSE;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    return qd_reply(r, 200, resp);
}

/* Every config field's effective default per preset, from the engine's spec table: what the
 * dashboard's form shows for an untouched field; and the presets offered, in order of cost, each
 * with what it does and costs (the text under the form's choice). */
int qd_h_presets(qd_req *r)
{
    json_t *offered = json_array();
    for (int i = 0; qs_spec_preset_name(i); i++)
        json_array_append_new(offered, json_pack("{s:s, s:s}", "name", qs_spec_preset_name(i), "about",
                                                 qs_spec_preset_about(qs_spec_preset_name(i))));
    return qd_reply_json(r, 200, json_pack("{s:o, s:o}", "presets", qs_spec_presets_json(), "offered", offered),
                         NULL);
}

/* Prometheus text exposition format (version 0.0.4). */
int qd_h_metrics(qd_req *r)
{
    qd_server *srv = r->srv;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "out of memory");
    int64_t counts[5];
    qd_store_job_counts(srv->st, counts);
    qd_sched_stats s;
    qd_sched_get_stats(srv->sched, &s);

    fprintf(f, "# HELP quantd_jobs Jobs in the store by state.\n# TYPE quantd_jobs gauge\n");
    for (int i = 0; i < 5; i++)
        fprintf(f, "quantd_jobs{state=\"%s\"} %lld\n", qd_job_states[i], (long long)counts[i]);
    fprintf(f, "# HELP quantd_queue_length Jobs waiting for a worker.\n# TYPE quantd_queue_length gauge\n"
               "quantd_queue_length %d\n", s.queued);
    fprintf(f, "# HELP quantd_jobs_running Jobs running now.\n# TYPE quantd_jobs_running gauge\n"
               "quantd_jobs_running %d\n", s.running);
    fprintf(f, "# HELP quantd_workers Jobs that may run at once.\n# TYPE quantd_workers gauge\n"
               "quantd_workers %d\n", s.workers);
    fprintf(f, "# HELP quantd_jobs_finished_total Jobs ended since start, by outcome.\n"
               "# TYPE quantd_jobs_finished_total counter\n");
    static const char *const outcome[3] = { "succeeded", "failed", "cancelled" };
    for (int i = 0; i < 3; i++)
        fprintf(f, "quantd_jobs_finished_total{state=\"%s\"} %lld\n", outcome[i], (long long)s.finished[i]);
    fprintf(f, "# HELP quantd_job_duration_seconds Run time of jobs that ended since start.\n"
               "# TYPE quantd_job_duration_seconds histogram\n");
    for (int b = 0; b < QD_DURATION_BUCKETS; b++) {
        if (b == QD_DURATION_BUCKETS - 1)
            fprintf(f, "quantd_job_duration_seconds_bucket{le=\"+Inf\"} %lld\n", (long long)s.dur_bucket[b]);
        else
            fprintf(f, "quantd_job_duration_seconds_bucket{le=\"%g\"} %lld\n", qd_duration_bounds[b],
                    (long long)s.dur_bucket[b]);
    }
    fprintf(f, "quantd_job_duration_seconds_sum %.3f\nquantd_job_duration_seconds_count %lld\n", s.dur_sum,
            (long long)s.dur_count);
    fprintf(f, "# HELP quantd_http_requests_total HTTP requests answered, by route and status.\n"
               "# TYPE quantd_http_requests_total counter\n");
    for (int i = 0; i <= qd_nroutes; i++)
        for (int k = 0; k < QD_NSTATUS; k++) {
            long c = atomic_load(&srv->http_count[i * QD_NSTATUS + k]);
            if (!c)
                continue;
            char status[8];
            if (qd_status_list[k])
                snprintf(status, sizeof status, "%u", qd_status_list[k]);
            else
                snprintf(status, sizeof status, "other");
            if (i < qd_nroutes)
                fprintf(f, "quantd_http_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} %ld\n",
                        qd_routes[i].method, qd_routes[i].pattern, status, c);
            else
                fprintf(f, "quantd_http_requests_total{method=\"\",route=\"unmatched\",status=\"%s\"} %ld\n",
                        status, c);
        }
    fprintf(f, "# HELP quantd_http_request_duration_seconds Time from a request's headers to its completion "
               "(event streams excluded).\n# TYPE quantd_http_request_duration_seconds histogram\n");
    for (int i = 0; i <= qd_nroutes; i++) {
        long n = atomic_load(&srv->lat_bucket[i * QD_NLAT + QD_NLAT - 1]);
        if (!n)
            continue;
        char labels[160];
        if (i < qd_nroutes)
            snprintf(labels, sizeof labels, "method=\"%s\",route=\"%s\"", qd_routes[i].method, qd_routes[i].pattern);
        else
            snprintf(labels, sizeof labels, "method=\"\",route=\"unmatched\"");
        for (int b = 0; b < QD_NLAT; b++) {
            long c = atomic_load(&srv->lat_bucket[i * QD_NLAT + b]);
            if (b == QD_NLAT - 1)
                fprintf(f, "quantd_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %ld\n", labels, c);
            else
                fprintf(f, "quantd_http_request_duration_seconds_bucket{%s,le=\"%g\"} %ld\n", labels,
                        qd_lat_bounds[b], c);
        }
        fprintf(f, "quantd_http_request_duration_seconds_sum{%s} %.6f\n", labels,
                atomic_load(&srv->lat_sum_us[i]) / 1e6);
        fprintf(f, "quantd_http_request_duration_seconds_count{%s} %ld\n", labels, n);
    }
    pthread_mutex_lock(&srv->hub_mu);
    int streams = srv->nstreams;
    pthread_mutex_unlock(&srv->hub_mu);
    fprintf(f, "# HELP quantd_event_streams Open event streams.\n# TYPE quantd_event_streams gauge\n"
               "quantd_event_streams %d\n", streams);
    fprintf(f, "# HELP quantd_http_requests_in_flight Requests being served.\n"
               "# TYPE quantd_http_requests_in_flight gauge\nquantd_http_requests_in_flight %ld\n",
            atomic_load(&srv->http_inflight));
    fclose(f);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return QD_H_CLOSE;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return qd_reply(r, 200, resp);
}
