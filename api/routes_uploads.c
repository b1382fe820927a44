/* Models and data sets: uploads (already streamed to a temp file and hashed by server.c), their
 * validation with the engine's own readers, and the list / get / delete routes.
 *
 * An upload becomes visible only once complete and valid: the temp file is fsync'ed, renamed
 * into models/ or datasets/, and then its record is committed; the reply follows the commit. A
 * refused upload's temp file is removed when the request completes (server.c).
 *
 * Validation (ONNX import and op check, opening a data set — which may inflate an .npz) runs on
 * one of two validation threads, not on the HTTP thread: the handler suspends the connection and
 * queues the request; the validation thread fills r->v (the reply to make, or the record's
 * fields), fsyncs the file and resumes the connection; libmicrohttpd then calls the handler
 * again, which replies. So slow or hostile uploads never hold up /v1/health or anyone else. */
#include "api/api.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <quant/quant.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ?name= or a form's name field (optional, printable, ≤ 200 bytes); default: the first 12 hex
 * digits of the hash. */
static int upload_name(qd_req *r, const char *hex, char *out, size_t n, int *ok)
{
    const char *name = qd_arg(r, "name");
    if ((!name || !*name) && r->mp && r->mp->name_len)   /* a form's name field */
        name = r->mp->name;
    *ok = 0;
    if (!name || !*name) {
        snprintf(out, n, "%.12s", hex);
        *ok = 1;
        return QD_H_OK;
    }
    if (strlen(name) > 200)
        return qd_reply_error(r, QD_E_BAD_REQUEST, "name", "name is longer than 200 bytes");
    if (!qd_utf8_valid(name))
        return qd_reply_error(r, QD_E_BAD_REQUEST, "name", "name is not valid UTF-8");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return qd_reply_error(r, QD_E_BAD_REQUEST, "name", "name holds control characters");
    snprintf(out, n, "%s", name);
    *ok = 1;
    return QD_H_OK;
}

/* The engine names the file it read; the client should not see our temp path, nor any other
 * path of the server's. */
static const char *scrub(qd_req *r, char *msg)
{
    size_t tl = strlen(r->tmp);
    char *p;
    while (tl && (p = strstr(msg, r->tmp))) {
        static const char word[] = "the upload";
        size_t wl = sizeof word - 1;
        memmove(p + wl, p + tl, strlen(p + tl) + 1);
        memcpy(p, word, wl);
    }
    return qd_store_relative(r->srv->st, msg);
}

/* ---- validation threads -------------------------------------------------------------------- */

/* Validation thread: the reply the handler is to make. */
static void v_fail(qd_req *r, qd_errcode code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void v_fail(qd_req *r, qd_errcode code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->v.msg, sizeof r->v.msg, fmt, ap);
    va_end(ap);
    r->v.failed = 1;
    r->v.code = code;
}

static void *v_main(void *arg)
{
    qd_server *srv = arg;
    pthread_mutex_lock(&srv->v_mu);
    for (;;) {
        while (!srv->v_head && !srv->v_closing)
            pthread_cond_wait(&srv->v_cv, &srv->v_mu);
        qd_req *r = srv->v_head;
        if (!r)
            break;   /* closing, and nothing left */
        if (!(srv->v_head = r->v.next))
            srv->v_tail = &srv->v_head;
        int closing = srv->v_closing;
        pthread_mutex_unlock(&srv->v_mu);
        if (closing) {
            v_fail(r, QD_E_SHUTTING_DOWN, "the server is stopping; send the upload again once it is back");
        } else {
            r->v.fn(r);
            /* the reply follows the commit, which needs the bytes on disk: sync here, not on
             * the HTTP thread (publish() syncs again, by then at no cost) */
            if (!r->v.failed && fsync(r->fd) < 0)
                v_fail(r, qd_io_error(errno), "cannot store the upload: %s", strerror(errno));
        }
        r->v.state = QD_V_DONE;
        MHD_resume_connection(r->conn);
        pthread_mutex_lock(&srv->v_mu);
    }
    pthread_mutex_unlock(&srv->v_mu);
    return NULL;
}

/* Handler: queues r for fn on a validation thread (started on first use) and suspends its
 * connection; the handler runs again once fn is done. */
static int validate_later(qd_req *r, void (*fn)(qd_req *r))
{
    qd_server *srv = r->srv;
    pthread_mutex_lock(&srv->v_mu);
    int n = (int)(sizeof srv->v_threads / sizeof srv->v_threads[0]);
    while (!srv->v_closing && srv->v_nthreads < n &&
           pthread_create(&srv->v_threads[srv->v_nthreads], NULL, v_main, srv) == 0)
        srv->v_nthreads++;
    if (srv->v_closing || !srv->v_nthreads) {
        pthread_mutex_unlock(&srv->v_mu);
        return srv->v_closing ? qd_reply_error(r, QD_E_SHUTTING_DOWN, NULL, "the server is stopping")
                              : qd_reply_error(r, QD_E_INTERNAL, NULL, "cannot start a validation thread");
    }
    r->v.fn = fn;
    r->v.state = QD_V_QUEUED;
    r->v.next = NULL;
    MHD_suspend_connection(r->conn);
    *srv->v_tail = r;
    srv->v_tail = &r->v.next;
    pthread_cond_signal(&srv->v_cv);
    pthread_mutex_unlock(&srv->v_mu);
    return QD_H_OK;
}

void qd_uploads_stop(qd_server *srv)
{
    pthread_mutex_lock(&srv->v_mu);
    srv->v_closing = 1;
    pthread_cond_broadcast(&srv->v_cv);
    pthread_mutex_unlock(&srv->v_mu);
    for (int i = 0; i < srv->v_nthreads; i++)
        pthread_join(srv->v_threads[i], NULL);
    srv->v_nthreads = 0;
}

/* An .npz whose members had to be inflated (deflated, or stored misaligned) is replaced by a copy
 * of stored, aligned members, so that jobs map it in place instead of inflating it again each
 * time. The copy counts against max_dataset_size like the upload did. Validation thread; 0, or
 * -1 with the reply in r->v. */
static int store_inflated(qd_req *r, const qs_dataset *d)
{
    char stored[PATH_MAX];
    snprintf(stored, sizeof stored, "%s.stored.npz", r->tmp);
    qs_err e = { 0 };
    struct stat sb;
    int fd = -1;
    if (qs_dataset_save_stored(d, stored, &e) < 0 || (fd = open(stored, O_RDONLY | O_CLOEXEC)) < 0 ||
        fstat(fd, &sb) < 0) {
        if (fd >= 0)
            close(fd);
        unlink(stored);
        v_fail(r, QD_E_INTERNAL, "cannot store the data set uncompressed: %s",
               e.msg[0] ? qd_store_relative(r->srv->st, e.msg) : strerror(errno));
        return -1;
    }
    if (sb.st_size > r->limit) {
        close(fd);
        unlink(stored);
        v_fail(r, QD_E_TOO_LARGE, "the data set takes %lld bytes uncompressed; the limit (max_dataset_size) is %lld",
               (long long)sb.st_size, (long long)r->limit);
        return -1;
    }
    if (rename(stored, r->tmp) < 0) {
        close(fd);
        unlink(stored);
        v_fail(r, qd_io_error(errno), "cannot store the data set: %s", strerror(errno));
        return -1;
    }
    close(r->fd);   /* the file to sync and publish is the copy now */
    r->fd = fd;
    return 0;
}

/* Makes the temp file durable and moves it into place. */
static int publish(qd_req *r, const char *dest)
{
    if (fsync(r->fd) < 0 || rename(r->tmp, dest) < 0)
        return -1;
    r->tmp[0] = 0;   /* renamed: nothing to clean up any more */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", dest);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {   /* the rename itself must survive a power cut too */
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static json_t *value_info(const qs_graph *g, int v)
{
    int ndim = qs_graph_value_ndim(g, v);
    const char *name = qs_graph_value_name(g, v);
    qs_dtype dtype = qs_graph_value_dtype(g, v);
    json_t *shape = json_array();
    for (int d = 0; d < ndim; d++) {
        if (qs_graph_value_dim(g, v, d) >= 0)
            json_array_append_new(shape, json_integer(qs_graph_value_dim(g, v, d)));
        else if (qs_graph_value_dim_param(g, v, d))
            json_array_append_new(shape, json_string(qs_graph_value_dim_param(g, v, d)));
        else
            json_array_append_new(shape, json_null());
    }
    return json_pack("{s:s, s:o, s:s}", "name", name ? name : "", "shape",
                     ndim >= 0 ? shape : (json_decref(shape), json_null()), "dtype",
                     dtype ? qs_dtype_name(dtype) : "unknown");
}

/* Finishes the upload: record → store → 201. */
static int store_upload(qd_req *r, qd_kind kind, const char *prefix, const char *ext, const char *hex,
                        json_t *info)
{
    char id[32], name[256], dest[PATH_MAX];
    int ok;
    int h = upload_name(r, hex, name, sizeof name, &ok);
    if (!ok) {
        json_decref(info);
        return h;
    }
    qd_store_new_id(prefix, id);
    qd_store_file_path(r->srv->st, kind, id, ext, dest, sizeof dest);
    if (publish(r, dest) < 0) {
        json_decref(info);
        return qd_reply_error(r, qd_io_error(errno), NULL, "cannot store the upload: %s", strerror(errno));
    }
    json_object_set_new(info, "id", json_string(id));
    json_object_set_new(info, "name", json_string(name));
    json_object_set_new(info, "sha256", json_string(hex));
    json_object_set_new(info, "size", json_integer(r->body_len));
    json_object_set_new(info, "ext", json_string(ext));
    int rc = qd_store_add(r->srv->st, kind, info);
    json_decref(info);
    if (rc < 0) {
        unlink(dest);
        return rc == QD_ST_FULL ? qd_reply_error(r, QD_E_STORAGE_FULL, NULL, "cannot record the upload: the state "
                                                                           "dir's disk is full")
                                : qd_reply_error(r, QD_E_INTERNAL, NULL, "cannot record the upload");
    }
    json_t *rec = qd_store_get(r->srv->st, kind, id);
    if (!rec)
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "the upload vanished");
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/%s/%s", kind == QD_MODEL ? "models" : "datasets", id);
    QD_LOG_INFO("%s %s stored (%s, %lld bytes)", kind == QD_MODEL ? "model" : "data set", id, name,
                (long long)r->body_len);
    return qd_reply_json(r, 201, rec, "Location", loc, NULL);
}

/* Validation thread: imports the model and checks its ops. */
static void validate_model(qd_req *r)
{
    qs_err e = { 0 };
    qs_graph *g = NULL;
    if (qs_onnx_load(r->tmp, &g, &e) < 0) {
        v_fail(r, e.code == QS_EUNSUPPORTED ? QD_E_UNSUPPORTED_MODEL : QD_E_BAD_MODEL, "not a usable ONNX model: %s",
               scrub(r, e.msg));
        return;
    }
    if (qs_exec_check(g, &e) < 0) {
        qs_graph_free(g);
        v_fail(r, QD_E_UNSUPPORTED_MODEL, "%s", scrub(r, e.msg));
        return;
    }
    /* A model whose input shapes are all known (but the batch) is planned once: a shape that the
     * graph contradicts (a Conv's channels, a Reshape's sizes, …) fails now, not in its first job. One
     * with symbolic dims is accepted; the data or config.input_shapes give them later. */
    if (qs_graph_unbound_dims(g, NULL, 0) == 0) {
        qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
        int rc = x ? qs_exec_plan(x, 1, &e) : e.code;
        qs_exec_free(x);
        if (rc == QS_ESHAPE || rc == QS_EINVAL || rc == QS_EUNSUPPORTED || rc == QS_ELIMIT) {
            qs_graph_free(g);
            v_fail(r, QD_E_UNSUPPORTED_MODEL, "the model cannot run: %s", scrub(r, e.msg));
            return;
        }
    }
    json_t *info = json_object();
    json_object_set_new(info, "opset", json_integer(qs_graph_opset(g, "")));
    json_object_set_new(info, "ir_version", json_integer(qs_graph_ir_version(g)));
    if (qs_graph_producer_name(g))
        json_object_set_new(info, "producer", json_string(qs_graph_producer_name(g)));
    json_t *ins = json_array(), *outs = json_array(), *ops = json_object();
    for (int i = 0; i < qs_graph_input_count(g); i++)
        json_array_append_new(ins, value_info(g, qs_graph_input(g, i)));
    for (int i = 0; i < qs_graph_output_count(g); i++)
        json_array_append_new(outs, value_info(g, qs_graph_output(g, i)));
    for (int i = 0; i < qs_graph_node_count(g); i++) {
        const char *op = qs_graph_node_op(g, i);
        json_object_set_new(ops, op, json_integer(json_integer_value(json_object_get(ops, op)) + 1));
    }
    json_object_set_new(info, "inputs", ins);
    json_object_set_new(info, "outputs", outs);
    json_object_set_new(info, "ops", ops);
    json_object_set_new(info, "nodes", json_integer(qs_graph_node_count(g)));
    qs_graph_free(g);
    r->v.info = info;
}

/* Uploads are deduplicated by content: the same bytes sent again (whatever ?name= says) get the
 * existing record with 200 instead of a second copy with 201. Checked before the validation (a
 * repeat costs only its transfer) and again before storing (two identical uploads at once). 1 when
 * a reply was queued this way. */
static int existing_upload(qd_req *r, qd_kind kind, const char *hex, int *h)
{
    json_t *found = qd_store_list(r->srv->st, kind, hex);
    json_t *rec = json_incref(json_array_get(found, json_array_size(found) - 1));   /* the first stored */
    json_decref(found);
    if (!rec)
        return 0;
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/%s/%s", kind == QD_MODEL ? "models" : "datasets",
             json_string_value(json_object_get(rec, "id")));
    QD_LOG_INFO("upload: same bytes as %s; not stored again", loc + 4);
    *h = qd_reply_json(r, 200, rec, "Location", loc, NULL);
    return 1;
}

/* Second call, once validated: the reply. */
static int finish_upload(qd_req *r, qd_kind kind, const char *prefix)
{
    if (r->v.failed)
        return qd_reply_error(r, r->v.code, NULL, "%s", r->v.msg);
    int h;
    if (existing_upload(r, kind, r->v.hex, &h)) {
        json_decref(r->v.info);
        r->v.info = NULL;
        return h;
    }
    json_t *info = r->v.info;
    r->v.info = NULL;
    return store_upload(r, kind, prefix, r->v.ext, r->v.hex, info);
}

int qd_h_model_upload(qd_req *r)
{
    if (r->v.state == QD_V_DONE)
        return finish_upload(r, QD_MODEL, "mdl_");
    if (r->body_len == 0)
        return qd_reply_error(r, QD_E_BAD_MODEL, NULL, "the body is empty: send the .onnx file's bytes");
    qd_sha256_hex(&r->sha, r->v.hex);
    int h;
    if (existing_upload(r, QD_MODEL, r->v.hex, &h))
        return h;
    snprintf(r->v.ext, sizeof r->v.ext, "onnx");
    return validate_later(r, validate_model);
}

/* Validation thread: opens the data set (inflating at most max_dataset_size) and lists its arrays. */
static void validate_dataset(qd_req *r)
{
    qs_err e = { 0 };
    qs_dataset *d = NULL;
    /* a zip bomb stops at the limit: inflated members count like the bytes of the upload, and
     * they go to the state dir's tmp/, which the limit is about, not to a small /tmp */
    char tmpdir[PATH_MAX];
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", qd_store_dir(r->srv->st));
    int rc = qs_dataset_open_limit(r->tmp, r->limit, tmpdir, &d, &e);
    if (rc == QS_ELIMIT) {
        v_fail(r, QD_E_TOO_LARGE, "%s (max_dataset_size)", scrub(r, e.msg));
        return;
    }
    if (rc < 0) {
        v_fail(r, e.code == QS_EUNSUPPORTED ? QD_E_UNSUPPORTED_DATASET : QD_E_BAD_DATASET, "not a usable .%s file: %s",
               r->v.ext, scrub(r, e.msg));
        return;
    }
    json_t *arrays = json_array();
    for (int i = 0; i < qs_dataset_count(d); i++) {
        const qs_tensor *t = qs_dataset_array(d, i);
        json_t *shape = json_array();
        for (int k = 0; k < t->ndim; k++)
            json_array_append_new(shape, json_integer(t->shape[k]));
        json_array_append_new(arrays, json_pack("{s:s, s:o, s:s}", "name", qs_dataset_name(d, i), "shape", shape,
                                                "dtype", qs_dtype_name(t->dtype)));
    }
    rc = 0;
    if (qs_dataset_inflated(d) > 0) {
        QD_LOG_INFO("data set upload: %lld bytes inflated; storing the arrays uncompressed",
                    (long long)qs_dataset_inflated(d));
        rc = store_inflated(r, d);
    }
    qs_dataset_close(d);
    if (rc < 0)
        json_decref(arrays);
    else
        r->v.info = json_pack("{s:o}", "arrays", arrays);
}

int qd_h_dataset_upload(qd_req *r)
{
    if (r->v.state == QD_V_DONE)
        return finish_upload(r, QD_DATASET, "ds_");
    if (r->body_len == 0)
        return qd_reply_error(r, QD_E_BAD_DATASET, NULL, "the body is empty: send the .npy or .npz file's bytes");
    qd_sha256_hex(&r->sha, r->v.hex);
    int h;
    if (existing_upload(r, QD_DATASET, r->v.hex, &h))
        return h;
    /* the format by its magic bytes, not by what the client claims */
    unsigned char magic[6] = { 0 };
    if (pread(r->fd, magic, sizeof magic, 0) != (ssize_t)sizeof magic && r->body_len >= 6)
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "cannot read the upload back: %s", strerror(errno));
    const char *ext;
    if (!memcmp(magic, "\x93NUMPY", 6))
        ext = "npy";
    else if (!memcmp(magic, "PK\x03\x04", 4) || !memcmp(magic, "PK\x05\x06", 4))
        ext = "npz";
    else
        return qd_reply_error(r, QD_E_MEDIA_TYPE, NULL,
                              "not a .npy or .npz file (it starts with neither \\x93NUMPY nor a zip header)");
    snprintf(r->v.ext, sizeof r->v.ext, "%s", ext);
    /* qs_dataset_open picks the reader by file name */
    char typed[PATH_MAX];
    snprintf(typed, sizeof typed, "%.*s.%s", (int)(strlen(r->tmp) - 4), r->tmp, ext);
    if (strcmp(typed, r->tmp)) {
        if (rename(r->tmp, typed) < 0)
            return qd_reply_error(r, QD_E_INTERNAL, NULL, "cannot rename the upload: %s", strerror(errno));
        snprintf(r->tmp, sizeof r->tmp, "%s", typed);
    }
    return validate_later(r, validate_dataset);
}

/* ---- list / get / delete, the same for both kinds ------------------------------------------ */

static int list(qd_req *r, qd_kind kind)
{
    qd_list_query q;
    int ok, h = qd_list_args(r, &q, &ok);
    if (!ok)
        return h;
    const char *sha = qd_arg(r, "sha256");
    q.sha256 = sha && *sha ? sha : NULL;
    json_t *items;
    int64_t next;
    if (qd_store_upload_page(r->srv->st, kind, &q, &items, &next) < 0) {
        json_decref(items);
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "listing failed");
    }
    return qd_reply_json(r, 200, qd_page_reply(kind == QD_MODEL ? "models" : "datasets", items, next), NULL);
}

static int get(qd_req *r, qd_kind kind)
{
    json_t *rec = qd_store_get(r->srv->st, kind, r->args[0]);
    if (!rec)
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no %s with id %s", kind == QD_MODEL ? "model" : "data set",
                              r->args[0]);
    return qd_reply_json(r, 200, rec, NULL);
}

static int del(qd_req *r, qd_kind kind)
{
    const char *what = kind == QD_MODEL ? "model" : "data set";
    switch (qd_store_delete(r->srv->st, kind, r->args[0])) {
    case 0: {
        QD_LOG_INFO("%s %s deleted", what, r->args[0]);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        return qd_reply(r, 204, resp);
    }
    case QD_ST_NOTFOUND:
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no %s with id %s", what, r->args[0]);
    case QD_ST_BUSY: {   /* name the jobs, so the client knows what to wait for or cancel */
        json_t *jobs = qd_store_ref_jobs(r->srv->st, r->args[0], 1, 10);
        char list[400] = "";
        size_t k = 0, i;
        json_t *j;
        json_array_foreach(jobs, i, j)
            if (k < sizeof list)
                k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", json_string_value(j));
        json_decref(jobs);
        return qd_reply_error(r, QD_E_IN_USE, NULL, "%s %s is used by queued or running jobs: %s; wait for them "
                              "to end or cancel them (DELETE /v1/jobs/{id})", what, r->args[0], list);
    }
    default:
        return qd_reply_error(r, QD_E_INTERNAL, NULL, "deleting %s %s failed", what, r->args[0]);
    }
}

int qd_h_model_list(qd_req *r) { return list(r, QD_MODEL); }
int qd_h_model_get(qd_req *r) { return get(r, QD_MODEL); }
int qd_h_model_delete(qd_req *r) { return del(r, QD_MODEL); }
int qd_h_dataset_list(qd_req *r) { return list(r, QD_DATASET); }
int qd_h_dataset_get(qd_req *r) { return get(r, QD_DATASET); }
int qd_h_dataset_delete(qd_req *r) { return del(r, QD_DATASET); }
