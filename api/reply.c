/* Replies: every reply goes through qd_reply, which ends the connection's deadlines, drops a refused
 * upload and counts the reply for /metrics; error replies all have one shape,
 * {"error": {code, message, field?, hint}}, from the table in errors.c. See api.h. */
#include "api/api.h"
#include "common/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const unsigned qd_status_list[QD_NSTATUS] = {
    200, 201, 202, 204, 206, 304, 400, 401, 403, 404, 405, 408, 409, 411, 413, 415, 416, 422, 429,
    500, 501, 503, 507, 0 /* any other */
};

const double qd_lat_bounds[QD_NLAT] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1,
                                         INFINITY };

static int status_index(unsigned status)
{
    for (int i = 0; i < QD_NSTATUS - 1; i++)
        if (qd_status_list[i] == status)
            return i;
    return QD_NSTATUS - 1;
}

qd_errcode qd_io_error(int err)
{
    return err == ENOSPC || err == EDQUOT ? QD_E_STORAGE_FULL : QD_E_INTERNAL;
}

/* A refused upload is gone before the client hears why. */
static void drop_upload(qd_req *r)
{
    if (!r->tmp[0])
        return;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    unlink(r->tmp);
    r->tmp[0] = 0;
}

int qd_reply(qd_req *r, unsigned status, struct MHD_Response *resp)
{
    if (!resp)
        return QD_H_CLOSE;
    r->replied = 1;
    r->status = status;
    qd_conn_set_phase(r->srv, r->cn, QD_CONN_BUSY);   /* the deadlines end where the reply begins */
    if (status >= 300)
        drop_upload(r);
    int route = r->route >= 0 ? r->route : qd_nroutes;
    atomic_fetch_add(&r->srv->http_count[route * QD_NSTATUS + status_index(status)], 1);
    enum MHD_Result ok = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ok == MHD_YES ? QD_H_OK : QD_H_CLOSE;
}

static struct MHD_Response *json_response(json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(body);
    if (!text)
        return NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return resp;
}

/* When a reply's JSON cannot be built (out of memory, a string jansson refuses), the client still
 * hears something: a fixed 500 error of the usual shape. */
static int reply_fallback(qd_req *r)
{
    static const char body[] = "{\"error\":{\"code\":\"internal\",\"message\":\"the server could not encode "
                               "its reply\",\"hint\":\"the server failed; its log has the details\"}}";
    QD_LOG_ERROR("%s %s: the reply could not be encoded as JSON", r->method, r->url);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return QD_H_CLOSE;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return qd_reply(r, 500, resp);
}

int qd_reply_json(qd_req *r, unsigned status, json_t *body, ...)
{
    struct MHD_Response *resp = json_response(body);
    if (!resp)
        return reply_fallback(r);
    va_list ap;
    va_start(ap, body);
    const char *name;
    while ((name = va_arg(ap, const char *))) {
        const char *value = va_arg(ap, const char *);
        MHD_add_response_header(resp, name, value);
    }
    va_end(ap);
    return qd_reply(r, status, resp);
}

/* The error body {"error": {code, message, field?, hint}}; NULL when it cannot be built. */
static json_t *error_body(qd_errcode code, const char *field, const char *raw)
{
    char msg[4096], fld[512];
    /* messages quote what the client sent (a URL, a key, a file's header): any bytes at all */
    qd_utf8_clean(msg, sizeof msg, raw);
    const qd_error_def *d = &qd_errors[code];
    json_t *err = json_pack("{s:s, s:s, s:s}", "code", d->code, "message", msg, "hint", d->hint);
    if (err && field) {
        qd_utf8_clean(fld, sizeof fld, field);
        json_object_set_new(err, "field", json_string(fld));
    }
    return err ? json_pack("{s:o}", "error", err) : NULL;
}

int qd_reply_error(qd_req *r, qd_errcode code, const char *field, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const qd_error_def *d = &qd_errors[code];
    struct MHD_Response *resp = json_response(error_body(code, field, msg));
    if (!resp)
        return reply_fallback(r);
    char num[16];
    switch (code) {
    case QD_E_UNAUTHORIZED:
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"quantd\"");
        break;
    case QD_E_METHOD_NOT_ALLOWED:
        MHD_add_response_header(resp, "Allow", r->allow);
        break;
    case QD_E_QUEUE_FULL:
    case QD_E_SHUTTING_DOWN:
        snprintf(num, sizeof num, "%d", r->retry_after > 0 ? r->retry_after : 5);
        MHD_add_response_header(resp, "Retry-After", num);
        break;
    default:
        break;
    }
    if (d->status >= 500)
        QD_LOG_ERROR("%s %s: %s", r->method, r->url, msg);
    return qd_reply(r, d->status, resp);
}

/* see api.h */
size_t qd_raw_error_reply(char *out, size_t n, qd_errcode code, const char *msg)
{
    json_t *body = error_body(code, NULL, msg);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    unsigned status = qd_errors[code].status;
    int len = text ? snprintf(out, n, "HTTP/1.1 %u %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
                                      "Content-Length: %zu\r\n\r\n%s",
                              status, MHD_get_reason_phrase_for(status), strlen(text), text)
                     : -1;
    free(text);
    return len > 0 && (size_t)len < n ? (size_t)len : 0;
}

/* A 413 in the middle of a body. libmicrohttpd 0.9.75 queues a reply only before the body or after
 * all of it, so the reply is written to the socket here (nothing else is being written while the
 * body is read) and the caller returns MHD_NO: libmicrohttpd closes the connection and reads no
 * more. */
int qd_refuse_mid_body(qd_req *r)
{
    char msg[256], reply[1024];
    snprintf(msg, sizeof msg, "the body exceeds the limit of %lld bytes here", (long long)r->limit);
    size_t len = qd_raw_error_reply(reply, sizeof reply, QD_E_TOO_LARGE, msg);
    drop_upload(r);
    const union MHD_ConnectionInfo *fd = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (len && fd && send(fd->connect_fd, reply, len, MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
        shutdown(fd->connect_fd, SHUT_WR);   /* the reply, then the end: before any reset */
    qd_conn_set_phase(r->srv, r->cn, QD_CONN_BUSY);
    r->replied = 1;
    r->status = 413;
    int route = r->route >= 0 ? r->route : qd_nroutes;
    atomic_fetch_add(&r->srv->http_count[route * QD_NSTATUS + status_index(413)], 1);
    return QD_H_CLOSE;
}

const char *qd_arg(qd_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *qd_header(qd_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}
