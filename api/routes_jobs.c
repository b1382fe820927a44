/* Jobs: submit (validated spec → scheduler), list (pages, filters), get, cancel or delete; and
 * artifacts: their list, and downloads served from the file descriptor (sendfile) with
 * Content-Length, ETag = sha256 and single Ranges. */
#include "api/api.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int qd_h_job_submit(qd_req *r)
{
    if (!r->json || !r->json_len)
        return qd_reply_error(r, QD_E_INVALID_JSON, NULL, "the body is empty: send the job spec as JSON");
    json_error_t jerr;
    json_t *spec = json_loadb(r->json, r->json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!spec)
        return qd_reply_error(r, QD_E_INVALID_JSON, NULL, "the body is not valid JSON: %s (line %d, column %d)",
                              jerr.text, jerr.line, jerr.column);
    /* parsed once, here: the job record keeps the normalised spec (every config field spelt out),
     * so what runs is what was accepted, whatever the defaults become */
    qs_job_spec js;
    int ok;
    char notify[2100];
    int h = qd_spec_take_notify(r, spec, notify, sizeof notify, &ok);
    if (!ok) {
        json_decref(spec);
        return h;
    }
    h = qd_spec_check(r, spec, r->srv->opt.debug_jobs, &js, &ok);
    json_decref(spec);
    if (!ok)
        return h;
    if ((h = qd_spec_check_data(r, &js, &ok)), !ok) {
        qs_job_spec_free(&js);
        return h;
    }
    qd_ref refs[6];
    int nrefs = qd_spec_refs(&js, refs);
    spec = qs_job_spec_to_json(&js);
    if (spec && *notify)
        json_object_set_new(spec, "notify", json_string(notify));
    char id[32];
    qd_store_new_id("job_", id);
    char type[16];
    snprintf(type, sizeof type, "%s", qs_job_type_name(js.type));
    const char *bad = NULL;
    int rc = spec ? qd_sched_submit(r->srv->sched, id, type, spec, nrefs, refs, &bad) : QS_ENOMEM;
    switch (rc) {
    case 0:
        break;
    case QD_SCHED_FULL:
        r->retry_after = 30;
        h = qd_reply_error(r, QD_E_QUEUE_FULL, NULL, "the queue holds %d jobs, its limit", r->srv->opt.max_queue);
        break;
    case QD_SCHED_STOPPING:
        h = qd_reply_error(r, QD_E_SHUTTING_DOWN, NULL, "the server is stopping and takes no new jobs");
        break;
    case QD_ST_NOTFOUND: {
        const char *missing = "an id";
        for (int i = 0; i < nrefs; i++)
            if (refs[i].field == bad)
                missing = refs[i].id;
        h = qd_reply_error(r, QD_E_UNKNOWN_REFERENCE, bad, "'%s' is %s, which does not exist (upload it first)",
                           bad, missing);
        break;
    }
    case QD_ST_FULL:
        h = qd_reply_error(r, QD_E_STORAGE_FULL, NULL, "could not record the job: the state dir's disk is full");
        break;
    default:
        h = qd_reply_error(r, QD_E_INTERNAL, NULL, "could not record the job");
        break;
    }
    json_decref(spec);
    qs_job_spec_free(&js);
    if (rc != 0)
        return h;
    QD_LOG_INFO("job %s (%s) queued", id, type);
    json_t *job = qd_store_job_get(r->srv->st, id);
    if (!job)
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "the job vanished");
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", id);
    return qd_reply_json(r, 202, job, "Location", loc, NULL);
}

int qd_list_args(qd_req *r, qd_list_query *q, int *ok)
{
    memset(q, 0, sizeof *q);
    q->limit = 100;
    *ok = 0;
    const char *l = qd_arg(r, "limit"), *after = qd_arg(r, "after"), *name = qd_arg(r, "name");
    if (l) {
        char *end;
        long v = strtol(l, &end, 10);
        if (end == l || *end || v < 1 || v > 1000)
            return qd_reply_error(r, QD_E_BAD_REQUEST, "limit", "limit must be an integer from 1 to 1000");
        q->limit = (int)v;
    }
    if (after && *after) {
        char *end;
        long long v = strtoll(after, &end, 10);
        if (end == after || *end || v < 1 || *after == '+' || *after == ' ')
            return qd_reply_error(r, QD_E_BAD_REQUEST, "after",
                                  "after must be the `next` cursor of a previous page (a positive integer)");
        q->after = v;
    }
    if (name && *name) {
        if (!qd_utf8_valid(name))
            return qd_reply_error(r, QD_E_BAD_REQUEST, "name", "name is not valid UTF-8");
        q->name = name;
    }
    *ok = 1;
    return QD_H_OK;
}

json_t *qd_page_reply(const char *key, json_t *items, int64_t next)
{
    char cur[24];
    snprintf(cur, sizeof cur, "%" PRId64, next);
    return json_pack("{s:o, s:o}", key, items, "next", next ? json_string(cur) : json_null());
}

int qd_h_job_list(qd_req *r)
{
    qd_list_query q;
    int ok, h = qd_list_args(r, &q, &ok);
    if (!ok)
        return h;
    const char *state = qd_arg(r, "state"), *type = qd_arg(r, "type");
    if (state && *state) {
        int known = 0;
        for (int i = 0; i < 5; i++)
            known |= !strcmp(state, qd_job_states[i]);
        if (!known)
            return qd_reply_error(r, QD_E_BAD_REQUEST, "state",
                                  "state '%s' is not one of queued, running, succeeded, failed, cancelled",
                                  qd_utf8_valid(state) ? state : "?");
        q.state = state;
    }
    if (type && *type) {
        if (!qd_sched_type_known(r->srv->sched, type))
            return qd_reply_error(r, QD_E_BAD_REQUEST, "type", "type '%s' is not a job type of this server "
                                  "(ptq, qat, eval, analyze)", qd_utf8_valid(type) ? type : "?");
        q.type = type;
    }
    json_t *items;
    int64_t next;
    if (qd_store_job_page(r->srv->st, &q, &items, &next) < 0) {
        json_decref(items);
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "listing the jobs failed");
    }
    return qd_reply_json(r, 200, qd_page_reply("jobs", items, next), NULL);
}

int qd_h_job_get(qd_req *r)
{
    json_t *job = qd_store_job_get(r->srv->st, r->args[0]);
    if (!job)
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no job with id %s", r->args[0]);
    return qd_reply_json(r, 200, job, NULL);
}

/* DELETE ends a job's life one step at a time: a queued job is cancelled (200), a running one
 * asked to stop (202, it becomes cancelled shortly), and a finished one — succeeded, failed or
 * cancelled — is removed with its events and artifacts (204). So "DELETE until 204 or 404"
 * removes any job. */
int qd_h_job_delete(qd_req *r)
{
    const char *id = r->args[0];
    int rc = qd_sched_cancel(r->srv->sched, id);
    if (rc == QD_ST_NOTFOUND)
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no job with id %s", id);
    if (rc == QD_ST_CONFLICT) {   /* finished: remove it */
        rc = qd_store_job_delete(r->srv->st, id);
        if (rc == QD_ST_NOTFOUND)
            return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no job with id %s", id);
        if (rc == QD_ST_CONFLICT)   /* ended, but its final state not yet stored (a full disk: retried) */
            return qd_reply_error(r, QD_E_JOB_ENDING, NULL, "job %s has stopped but its final state is not "
                                  "recorded yet; DELETE it again in a moment", id);
        if (rc < 0)
            return qd_reply_error(r, rc == QD_ST_FULL ? QD_E_STORAGE_FULL : QD_E_INTERNAL, NULL,
                                  "deleting job %s failed", id);
        QD_LOG_INFO("job %s deleted", id);
        return qd_reply(r, 204, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
    }
    if (rc < 0)
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "cancelling job %s failed", id);
    json_t *job = qd_store_job_get(r->srv->st, id);
    if (!job)
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no job with id %s", id);
    QD_LOG_INFO("job %s: cancel %s", id, rc == 1 ? "requested (running)" : "done (was queued)");
    /* 200: cancelled now; 202: a running job stops at the engine's next check of its flag */
    if (rc == 1)
        json_object_set_new(job, "cancel_requested", json_true());
    return qd_reply_json(r, rc == 1 ? 202 : 200, job, NULL);
}

/* ---- artifacts ------------------------------------------------------------------------------ */

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return "application/octet-stream";
    if (!strcmp(dot, ".json"))
        return "application/json";
    if (!strcmp(dot, ".txt") || !strcmp(dot, ".log") || !strcmp(dot, ".md") || !strcmp(dot, ".csv"))
        return "text/plain; charset=utf-8";
    if (!strcmp(dot, ".html"))
        return "text/html; charset=utf-8";
    return "application/octet-stream";
}

int qd_h_artifact_list(qd_req *r)
{
    json_t *job = qd_store_job_get(r->srv->st, r->args[0]);
    if (!job)
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no job with id %s", r->args[0]);
    json_t *arts = json_incref(json_object_get(job, "artifacts")), *a;
    size_t i;
    json_array_foreach(arts, i, a)
        json_object_set_new(a, "content_type", json_string(content_type(json_string_value(json_object_get(a, "name")))));
    json_t *body = json_pack("{s:s, s:O, s:o}", "job", r->args[0], "state", json_object_get(job, "state"),
                             "artifacts", arts);
    json_decref(job);
    return qd_reply_json(r, 200, body, NULL);
}

/* "bytes=a-b", "bytes=a-", "bytes=-n" (one range) → [*from, *to]. 1: ranged, 0: whole file
 * (no header, or a form we answer with the whole file, as RFC 9110 allows), -1: unsatisfiable. */
static int parse_range(const char *h, int64_t size, int64_t *from, int64_t *to)
{
    if (!h || strncmp(h, "bytes=", 6) || strchr(h, ','))
        return 0;
    h += 6;
    char *end;
    if (*h == '-') {
        long long n = strtoll(h + 1, &end, 10);
        if (end == h + 1 || *end || n <= 0)
            return n == 0 && end != h + 1 && !*end ? -1 : 0;
        *from = n >= size ? 0 : size - n;
        *to = size - 1;
        return size > 0 ? 1 : -1;
    }
    long long a = strtoll(h, &end, 10);
    if (end == h || *end != '-' || a < 0)
        return 0;
    const char *b = end + 1;
    long long z = size - 1;
    if (*b) {
        z = strtoll(b, &end, 10);
        if (end == b || *end || z < a)
            return 0;
        if (z > size - 1)
            z = size - 1;
    }
    if (a >= size)
        return -1;
    *from = a;
    *to = z;
    return 1;
}

int qd_h_artifact(qd_req *r)
{
    const char *id = r->args[0], *name = r->args[1];
    if (name[0] == '.' || strchr(name, '/') || strchr(name, '\\'))
        return qd_reply_error(r, QD_E_BAD_REQUEST, "name", "artifact names are plain file names");
    json_t *job = qd_store_job_get(r->srv->st, id);
    if (!job)
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no job with id %s", id);
    /* only what the job's record lists is served: nothing else in (or out of) its folder */
    json_t *art = NULL, *a;
    size_t i;
    json_array_foreach(json_object_get(job, "artifacts"), i, a)
        if (!strcmp(json_string_value(json_object_get(a, "name")), name))
            art = a;
    if (!art) {
        int rc = qd_reply_error(r, QD_E_NOT_FOUND, NULL, "job %s (%s) has no artifact named %s", id,
                                json_string_value(json_object_get(job, "state")), name);
        json_decref(job);
        return rc;
    }
    char sha[65], etag[72];
    snprintf(sha, sizeof sha, "%s", json_string_value(json_object_get(art, "sha256")));
    int64_t size = json_integer_value(json_object_get(art, "size"));
    json_decref(job);
    snprintf(etag, sizeof etag, "\"%s\"", sha);

    char dir[PATH_MAX];
    qd_store_job_dir(r->srv->st, id, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd = dfd < 0 ? -1 : openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd >= 0)
        close(dfd);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size != size) {
        if (fd >= 0)
            close(fd);
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "artifact %s of job %s is missing or changed on disk", name, id);
    }
    const char *inm = qd_header(r, "If-None-Match");
    if (inm && (strstr(inm, sha) || !strcmp(inm, "*"))) {
        close(fd);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (resp)
            MHD_add_response_header(resp, "ETag", etag);
        return qd_reply(r, 304, resp);
    }
    int64_t from = 0, to = size - 1;
    int ranged = parse_range(qd_header(r, "Range"), size, &from, &to);
    /* If-Range with another validator: the client's piece is stale, send the whole file */
    const char *ifr = qd_header(r, "If-Range");
    if (ranged == 1 && ifr && !strstr(ifr, sha)) {
        ranged = 0;
        from = 0;
        to = size - 1;
    }
    char cr[96];
    if (ranged < 0) {
        close(fd);
        snprintf(cr, sizeof cr, "bytes */%" PRId64, size);
        struct MHD_Response *resp = NULL;
        char *body = NULL;
        json_t *err = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", qd_errors[QD_E_RANGE].code, "message",
                                "the requested range starts beyond the end of the file", "hint",
                                qd_errors[QD_E_RANGE].hint);
        body = json_dumps(err, JSON_COMPACT);
        json_decref(err);
        if (body && (resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE))) {
            MHD_add_response_header(resp, "Content-Range", cr);
            MHD_add_response_header(resp, "Content-Type", "application/json");
        } else {
            free(body);
        }
        return qd_reply(r, 416, resp);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64((uint64_t)(to - from + 1), fd, (uint64_t)from);
    if (!resp) {
        close(fd);
        return QD_H_CLOSE;
    }
    char disp[PATH_MAX];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", name);
    MHD_add_response_header(resp, "Content-Type", content_type(name));
    MHD_add_response_header(resp, "Content-Disposition", disp);
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
    MHD_add_response_header(resp, "Cache-Control", "private, max-age=31536000, immutable");
    if (ranged == 1) {
        snprintf(cr, sizeof cr, "bytes %" PRId64 "-%" PRId64 "/%" PRId64, from, to, size);
        MHD_add_response_header(resp, "Content-Range", cr);
        return qd_reply(r, 206, resp);
    }
    return qd_reply(r, 200, resp);
}
