/* The HTTP server: request life cycle, routing, auth, limits; see api.h and server.h. Replies are
 * made in reply.c, connection deadlines kept in deadline.c, event streams woken by hub.c.
 *
 * libmicrohttpd runs a pool of polling threads (epoll); handlers run on them, so a handler must
 * not block for long: the store's statements are short, uploads are written as they arrive, and
 * an event stream that has nothing to send suspends its connection (events.c) instead of waiting.
 * Routing is one table (routes.c) matched segment by segment. */
#include "config.h"
#include "api/api.h"
#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- auth ----------------------------------------------------------------------------------- */

static void free_tokens(char **t, int n)
{
    for (int i = 0; i < n; i++) {
        explicit_bzero(t[i], strlen(t[i]));
        free(t[i]);
    }
    free(t);
}

/* Token file: one token per line; blank lines and # comments skipped. */
static int load_tokens(const char *path, char ***out, int *nout, char *err, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, n, "token file %s: %s", path, strerror(errno));
        return -1;
    }
    char **t = NULL, line[1024];
    int k = 0;
    while (fgets(line, sizeof line, f)) {
        char *s = line, *e;
        while (isspace((unsigned char)*s))
            s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = 0;
        if (!*s || *s == '#')
            continue;
        char **nt = realloc(t, (size_t)(k + 1) * sizeof *t);
        if (!nt || !(nt[k] = strdup(s))) {
            t = nt ? nt : t;
            free_tokens(t, k);
            fclose(f);
            snprintf(err, n, "out of memory");
            return -1;
        }
        t = nt;
        k++;
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
    if (!k) {
        snprintf(err, n, "token file %s holds no token (one per line)", path);
        free(t);
        return -1;
    }
    *out = t;
    *nout = k;
    return 0;
}

int qd_server_reload_tokens(qd_server *srv)
{
    if (!srv->opt.token_file[0])
        return 0;
    char **t;
    int n;
    char err[512];
    if (load_tokens(srv->opt.token_file, &t, &n, err, sizeof err) < 0) {
        QD_LOG_ERROR("reloading tokens: %s (keeping the previous ones)", err);
        return -1;
    }
    pthread_rwlock_wrlock(&srv->tok_lock);
    char **old = srv->tokens;
    int nold = srv->ntokens;
    srv->tokens = t;
    srv->ntokens = n;
    pthread_rwlock_unlock(&srv->tok_lock);
    free_tokens(old, nold);
    QD_LOG_NOTICE("tokens reloaded: %d", n);
    return 0;
}

/* Compares without an early exit, so the time taken does not tell how much of a guess matched. */
static int same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static int authorized(qd_req *r)
{
    qd_server *srv = r->srv;
    if (!srv->opt.token_file[0])
        return 1;
    const char *h = qd_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7))
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    int ok = 0;
    pthread_rwlock_rdlock(&srv->tok_lock);
    for (int i = 0; i < srv->ntokens; i++)
        ok |= same_secret(h, srv->tokens[i]);
    pthread_rwlock_unlock(&srv->tok_lock);
    return ok;
}

/* ---- routing -------------------------------------------------------------------------------- */

/* Matches url against pattern, capturing {x} segments. */
static int match(const char *pattern, const char *url, char args[QD_MAX_ARGS][256])
{
    int na = 0;
    const char *p = pattern, *u = url;
    while (*p && *u) {
        if (*p != '/' || *u != '/')
            return 0;
        p++;
        u++;
        size_t pl = strcspn(p, "/"), ul = strcspn(u, "/");
        if (*p == '{') {
            if (ul == 0 || ul >= 256 || na >= QD_MAX_ARGS)
                return 0;
            memcpy(args[na], u, ul);
            args[na++][ul] = 0;
        } else if (pl != ul || memcmp(p, u, pl)) {
            return 0;
        }
        p += pl;
        u += ul;
    }
    return !*p && (!*u || !strcmp(u, "/"));
}

static int method_is(const char *route_method, const char *method)
{
    return !strcmp(route_method, method) || (!strcmp(route_method, "GET") && !strcmp(method, "HEAD"));
}

/* ---- who may ask: Host and Origin ------------------------------------------------------------ */

/* Whether item (len bytes) is in list, a comma-separated list of names (case-insensitive). */
static int in_list(const char *list, const char *item, size_t len)
{
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t k = strcspn(p, ", \t");
        if (k && ((k == 1 && *p == '*') || (k == len && !strncasecmp(p, item, len))))
            return 1;
        p += k;
    }
    return 0;
}

/* Host must name this server: an IP address, localhost, or a name the operator listed in
 * allowed_hosts. A page that rebinds its own DNS name to this machine's address sends that name,
 * which is refused; an address cannot be rebound, so any is fine. The port is not compared: a
 * browser always sends the one it connected to, and a reverse proxy may send another. */
static int host_allowed(qd_server *srv, const char *host)
{
    if (!host)   /* HTTP/1.0: no browser sends a request without Host */
        return 1;
    const char *end;
    if (host[0] == '[') {
        end = strchr(host, ']');
        if (!end)
            return 0;
        end++;
    } else {
        end = host + strcspn(host, ":");
    }
    if (*end && (*end != ':' || strspn(end + 1, "0123456789") != strlen(end + 1)))
        return 0;
    size_t len = (size_t)(end - host);
    if (in_list(srv->opt.allowed_hosts, host, len))
        return 1;
    char name[INET6_ADDRSTRLEN + 2];
    if (len < 1 || len >= sizeof name)
        return 0;
    memcpy(name, host, len);
    name[len] = 0;
    unsigned char addr[sizeof(struct in6_addr)];
    if (name[0] == '[') {
        name[len - 1] = 0;
        return inet_pton(AF_INET6, name + 1, addr) == 1;
    }
    return inet_pton(AF_INET, name, addr) == 1 || !strcasecmp(name, "localhost");
}

static int changes_state(const char *method)
{
    return !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "DELETE") ||
           !strcmp(method, "PATCH");
}

/* A state-changing request that carries an Origin must come from this server's own pages (the
 * Origin's host:port is the Host asked for) or from an origin listed in allowed_origins. Clients
 * that are not browsers send no Origin. */
static int origin_allowed(qd_server *srv, const char *origin, const char *host)
{
    if (!origin)
        return 1;
    if (in_list(srv->opt.allowed_origins, origin, strlen(origin)))
        return 1;
    const char *auth = strstr(origin, "://");
    if (!host || !auth || (strncasecmp(origin, "http://", 7) && strncasecmp(origin, "https://", 8)))
        return 0;   /* "null" (a sandboxed or file:// page) included */
    return !strcasecmp(auth + 3, host);
}

/* Content types a browser may send to another site without asking it first (a "simple" request);
 * a JSON route refuses them, so that a page elsewhere cannot post a job even without an Origin. */
static int simple_content_type(const char *ct)
{
    static const char *const simple[] = { "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data" };
    size_t len = strcspn(ct, "; \t");
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (strlen(simple[i]) == len && !strncasecmp(ct, simple[i], len))
            return 1;
    return 0;
}

static enum MHD_Result find_bad_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    const char **bad = cls;
    if (!qd_utf8_valid(key) || (value && !qd_utf8_valid(value))) {
        *bad = key;
        return MHD_NO;
    }
    return MHD_YES;
}

/* Host, Origin and query-string checks, before routing: 0, or -1 with the reply queued. */
static int check_sender(qd_req *r, int *h)
{
    const char *host = qd_header(r, "Host"), *origin = qd_header(r, "Origin");
    if (!host_allowed(r->srv, host)) {
        *h = qd_reply_error(r, QD_E_FORBIDDEN, NULL, "Host '%s' is not a name of this server (allowed_hosts)", host);
        return -1;
    }
    if (changes_state(r->method) && !origin_allowed(r->srv, origin, host)) {
        *h = qd_reply_error(r, QD_E_FORBIDDEN, NULL,
                            "%s from Origin '%s' is refused: not this server's origin (allowed_origins)",
                            r->method, origin);
        return -1;
    }
    const char *bad = NULL;
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, find_bad_arg, &bad);
    if (bad) {
        *h = qd_reply_error(r, QD_E_BAD_REQUEST, bad, "query argument '%s' is not valid UTF-8", bad);
        return -1;
    }
    return 0;
}

/* An upload's bytes: hashed and written to its temp file as they arrive. */
static void write_file(qd_req *r, const char *data, size_t n)
{
    if (r->write_errno)
        return;
    qd_sha256_update(&r->sha, data, n);
    r->file_len += (int64_t)n;
    while (n) {
        ssize_t w = write(r->fd, data, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            r->write_errno = errno;
            return;
        }
        data += w;
        n -= (size_t)w;
    }
}

/* qd_multipart's callback: the file part's bytes. */
static void form_file_data(void *ud, const char *p, size_t n) { write_file(ud, p, n); }

/* First callback: route, auth, limits; may reply at once (the body is then never read). */
static int begin_request(qd_req *r)
{
    qd_server *srv = r->srv;
    /* ".." can only come from a client trying to leave a folder: refuse it outright */
    for (const char *s = strstr(r->url, "/.."); s; s = strstr(s + 1, "/.."))
        if (s[3] == '/' || s[3] == 0)
            return qd_reply_error(r, QD_E_BAD_REQUEST, NULL, "path segments '..' are not allowed");
    int h;
    if (check_sender(r, &h) < 0)
        return h;
    int path_known = 0;
    char args[QD_MAX_ARGS][256];
    for (int i = 0; i < qd_nroutes; i++) {
        if (!match(qd_routes[i].pattern, r->url, args))
            continue;
        if (!path_known) {
            path_known = 1;
            r->allow[0] = 0;
        }
        size_t k = strlen(r->allow);
        if (!strstr(r->allow, qd_routes[i].method))   /* two routes may share a path and method */
            snprintf(r->allow + k, sizeof r->allow - k, "%s%s", k ? ", " : "", qd_routes[i].method);
        if (r->route < 0 && method_is(qd_routes[i].method, r->method)) {
            r->route = i;
            memcpy(r->args, args, sizeof args);
        }
    }
    if (r->route < 0) {
        if (path_known) {
            if (strstr(r->allow, "GET")) {
                size_t k = strlen(r->allow);
                snprintf(r->allow + k, sizeof r->allow - k, ", HEAD");
            }
            return qd_reply_error(r, QD_E_METHOD_NOT_ALLOWED, NULL, "%s is not allowed on %s (allowed: %s)",
                                  r->method, r->url, r->allow);
        }
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no such path: %s", r->url);
    }
    const qd_route *rt = &qd_routes[r->route];
    if (!rt->public && !authorized(r))
        return qd_reply_error(r, QD_E_UNAUTHORIZED, NULL,
                              qd_header(r, "Authorization") ? "the bearer token is not valid"
                                                            : "this route needs a bearer token");
    switch (rt->body) {
    case QD_BODY_MODEL: r->limit = srv->opt.max_model_size; break;
    case QD_BODY_DATASET: r->limit = srv->opt.max_dataset_size; break;
    default: r->limit = srv->opt.max_json_size; break;
    }
    const char *cl = qd_header(r, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        long long v = strtoll(cl, &end, 10);
        if (end == cl || *end || errno || v < 0)
            return qd_reply_error(r, QD_E_BAD_REQUEST, NULL, "Content-Length '%s' is not a number", cl);
        if (v > r->limit)
            return qd_reply_error(r, QD_E_TOO_LARGE, NULL, "the body has %lld bytes; the limit here is %lld",
                                  v, (long long)r->limit);
    }
    const char *ct = qd_header(r, "Content-Type");
    if (rt->body == QD_BODY_JSON && ct && simple_content_type(ct))
        return qd_reply_error(r, QD_E_MEDIA_TYPE, NULL,
                              "%s %s takes Content-Type: application/json, not '%s' (a type browsers send "
                              "across sites without asking)", r->method, rt->pattern, ct);
    if (rt->body == QD_BODY_MODEL || rt->body == QD_BODY_DATASET) {
        if (ct && !strncasecmp(ct, "multipart/", 10)) {
            size_t tl = strcspn(ct, "; \t");
            if (tl != 19 || strncasecmp(ct, "multipart/form-data", 19))
                return qd_reply_error(r, QD_E_MEDIA_TYPE, NULL, "of multipart bodies only multipart/form-data is "
                                      "accepted (or send the file's raw bytes)");
            if (!(r->mp = malloc(sizeof *r->mp)))
                return QD_H_CLOSE;
            if (qd_multipart_init(r->mp, ct, form_file_data, r) < 0)
                return qd_reply_error(r, QD_E_BAD_REQUEST, NULL, "%s", r->mp->err);
        }
        r->fd = qd_store_tmpfile(srv->st, rt->body == QD_BODY_MODEL ? ".onnx" : ".npy", r->tmp, sizeof r->tmp);
        if (r->fd < 0) {
            r->tmp[0] = 0;
            return qd_reply_error(r, qd_io_error(errno), NULL, "cannot create a temp file: %s", strerror(errno));
        }
        qd_sha256_init(&r->sha);
    }
    return QD_H_OK;
}

/* Body callbacks: never hold more than one chunk of a file upload in memory. */
static void take_body(qd_req *r, const char *data, size_t n)
{
    r->body_len += (int64_t)n;
    qd_conn_add_body(r->cn, n);
    if (r->too_large || r->write_errno)
        return;
    if (r->body_len > r->limit) {   /* chunked upload without Content-Length: answered at once */
        r->too_large = 1;
        return;
    }
    if (r->mp) {
        if (!r->mp_failed && qd_multipart_feed(r->mp, data, n) < 0)
            r->mp_failed = 1;   /* answered once the body is in */
    } else if (r->fd >= 0) {
        write_file(r, data, n);
    } else if (qd_routes[r->route].body == QD_BODY_JSON) {
        char *j = realloc(r->json, r->json_len + n + 1);
        if (!j) {
            r->write_errno = ENOMEM;
            return;
        }
        r->json = j;
        memcpy(r->json + r->json_len, data, n);
        r->json_len += n;
        r->json[r->json_len] = 0;
    }
}

static int finish_request(qd_req *r)
{
    if (r->too_large)
        return qd_reply_error(r, QD_E_TOO_LARGE, NULL, "the body exceeds the limit of %lld bytes here",
                              (long long)r->limit);
    if (r->write_errno)
        return qd_reply_error(r, qd_io_error(r->write_errno), NULL, "cannot store the upload: %s",
                              strerror(r->write_errno));
    if (r->mp && r->v.state == QD_V_NONE) {   /* once: not again when a validation resumes us */
        if (r->mp_failed || qd_multipart_finish(r->mp) < 0)
            return qd_reply_error(r, QD_E_BAD_REQUEST, NULL, "malformed multipart/form-data body: %s", r->mp->err);
        r->body_len = r->file_len;   /* the upload is the file, not its envelope */
    }
    return qd_routes[r->route].handler(r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    qd_server *srv = cls;
    qd_req *r = *con_cls;
    (void)version;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = srv;
        r->conn = conn;
        r->url = url;
        r->method = method;
        r->route = -1;
        r->fd = -1;
        r->t0 = qd_mono_now();
        *con_cls = r;
        atomic_fetch_add(&srv->http_inflight, 1);
        const union MHD_ConnectionInfo *sc = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->cn = sc ? sc->socket_context : NULL;
        int body = qd_header(r, "Content-Length") || qd_header(r, "Transfer-Encoding");
        qd_conn_set_phase(srv, r->cn, body ? QD_CONN_BODY : QD_CONN_BUSY);
        /* A request with a body is checked now, so that a refusal (401, 404, 413) goes out
         * before the body is read. One without waits for the next call: an answer queued on
         * this first call makes libmicrohttpd close the connection, and a client polling a
         * missing job or with a stale token should keep its connection. */
        if (!body)
            return MHD_YES;
        r->begun = 1;
        return begin_request(r) == QD_H_OK ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size) {
        if (!r->begun) {   /* a body after all (HTTP/1.0 without Content-Length): check now */
            r->begun = 1;
            if (begin_request(r) != QD_H_OK)
                return MHD_NO;
        }
        if (!r->replied)
            take_body(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        /* over the limit: answer now, and read no more of the body */
        if (r->too_large && !r->replied) {
            qd_refuse_mid_body(r);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (!r->begun) {
        r->begun = 1;
        if (begin_request(r) != QD_H_OK)
            return MHD_NO;
    }
    if (r->replied)
        return MHD_YES;
    /* the body is in: the client's deadlines end here, not at the reply, which may wait for an
     * upload's validation (suspended, then resumed: no 408 may cut in) */
    qd_conn_set_phase(srv, r->cn, QD_CONN_BUSY);
    return finish_request(r) == QD_H_OK ? MHD_YES : MHD_NO;
}

/* The one place a request is freed. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    qd_server *srv = cls;
    qd_req *r = *con_cls;
    (void)conn;
    if (!r)
        return;
    *con_cls = NULL;
    qd_conn_set_phase(srv, r->cn, QD_CONN_HEADERS);   /* a kept-alive connection waits for its next request */
    if (r->sse.counted)   /* an event stream (only a counted one can be on the hub's lists) */
        qd_hub_forget(srv, r);
    if (r->fd >= 0)
        close(r->fd);
    if (r->tmp[0])
        unlink(r->tmp);   /* an upload that was refused or cut off leaves nothing behind */
    double dt = qd_mono_now() - r->t0;
    if (r->replied && !r->sse.counted) {   /* an event stream's life is not a request's latency */
        int route = r->route >= 0 ? r->route : qd_nroutes;
        for (int b = 0; b < QD_NLAT; b++)
            if (dt <= qd_lat_bounds[b])
                atomic_fetch_add(&srv->lat_bucket[route * QD_NLAT + b], 1);
        atomic_fetch_add(&srv->lat_sum_us[route], (long)(dt * 1e6));
    }
    QD_LOG_DEBUG("%s %s %u %.1f ms%s", r->method, r->url, r->status, dt * 1e3,
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    free(r->json);
    free(r->mp);
    json_decref(r->v.info);
    free(r->sse.buf);
    free(r);
    atomic_fetch_sub(&srv->http_inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (QD_LOG_INFO > qd_log_level)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    qd_log_write(QD_LOG_INFO, "libmicrohttpd: %s", msg);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

qd_server *qd_server_new(const qd_server_options *opt, qd_store *st, char *err, size_t n)
{
    qd_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, n, "out of memory");
        return NULL;
    }
    srv->opt = *opt;
    srv->st = st;
    srv->listen_fd = -1;
    pthread_rwlock_init(&srv->tok_lock, NULL);
    pthread_mutex_init(&srv->hub_mu, NULL);
    pthread_cond_init(&srv->hub_cv, NULL);
    pthread_mutex_init(&srv->conn_mu, NULL);
    pthread_cond_init(&srv->conn_cv, NULL);
    pthread_mutex_init(&srv->v_mu, NULL);
    pthread_cond_init(&srv->v_cv, NULL);
    srv->v_tail = &srv->v_head;
    srv->http_count = calloc((size_t)(qd_nroutes + 1) * QD_NSTATUS, sizeof *srv->http_count);
    srv->lat_bucket = calloc((size_t)(qd_nroutes + 1) * QD_NLAT, sizeof *srv->lat_bucket);
    srv->lat_sum_us = calloc((size_t)(qd_nroutes + 1), sizeof *srv->lat_sum_us);
    if (!srv->http_count || !srv->lat_bucket || !srv->lat_sum_us) {
        snprintf(err, n, "out of memory");
        qd_server_free(srv);
        return NULL;
    }
    if (opt->token_file[0] && load_tokens(opt->token_file, &srv->tokens, &srv->ntokens, err, n) < 0) {
        qd_server_free(srv);
        return NULL;
    }
    return srv;
}

/* Opens the listening socket of opt.listen (ADDR:PORT, [V6]:PORT, *:PORT). Done before the
 * scheduler starts, so that a port in use stops the daemon before it touches any job. */
int qd_server_bind(qd_server *srv, char *addr, size_t addrlen, char *err, size_t n)
{
    const char *listen_on = srv->opt.listen;
    const char *colon = strrchr(listen_on, ':');
    if (!colon || !colon[1]) {
        snprintf(err, n, "listen '%s': expected ADDR:PORT", listen_on);
        return -1;
    }
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - listen_on), listen_on);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(!strcmp(host, "*") || !host[0] ? NULL : host, colon + 1, &hints, &ai);
    if (g) {
        snprintf(err, n, "listen '%s': %s", listen_on, gai_strerror(g));
        return -1;
    }
    int one = 1, fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)   /* as libmicrohttpd does without dual stack */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        snprintf(err, n, "cannot listen on %s: %s", listen_on, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    char h[INET6_ADDRSTRLEN] = "?", port[16] = "0";
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) == 0)
        getnameinfo((struct sockaddr *)&sa, salen, h, sizeof h, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
    if (addr)
        snprintf(addr, addrlen, sa.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, port);
    srv->listen_fd = fd;
    return 0;
}

int qd_server_listen(qd_server *srv, qd_sched *sched, char *err, size_t n)
{
    srv->sched = sched;
    srv->started = qd_mono_now();
    if (qd_hub_start(srv) < 0) {
        snprintf(err, n, "cannot start the event-stream thread");
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    errno = 0;
    srv->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, srv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv,   /* first, so that it catches everything */
        MHD_OPTION_LISTEN_SOCKET, srv->listen_fd,   /* qd_server_bind's */
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv->opt.http_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->opt.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)srv->opt.max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,   /* idle; the deadlines are deadline.c's */
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, qd_on_connection, srv,
        MHD_OPTION_END);
    if (!srv->mhd) {
        snprintf(err, n, "cannot serve on %s: %s", srv->opt.listen, errno ? strerror(errno) : "libmicrohttpd failed");
        return -1;
    }
    char reply[1024];
    size_t len = qd_raw_error_reply(reply, sizeof reply, QD_E_TIMEOUT, "the request was not received in time");
    if (qd_reaper_start(srv, reply, len) < 0) {
        snprintf(err, n, "cannot start the connection reaper thread");
        return -1;
    }
    srv->listen_fd = -1;   /* libmicrohttpd's now: it closes it when it stops */
    return 0;
}

void qd_server_quiesce(qd_server *srv)
{
    if (!srv->mhd)
        return;
    MHD_socket fd = MHD_quiesce_daemon(srv->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void qd_server_stop(qd_server *srv)
{
    if (!srv->mhd)
        return;
    qd_hub_close(srv);
    qd_uploads_stop(srv);
    MHD_stop_daemon(srv->mhd);
    srv->mhd = NULL;
    qd_reaper_stop(srv);
}

void qd_server_free(qd_server *srv)
{
    if (!srv)
        return;
    if (srv->mhd)
        qd_server_stop(srv);
    if (srv->hub_thread_started) {
        qd_hub_close(srv);   /* (again, if the server never listened) */
        pthread_join(srv->hub_thread, NULL);
    }
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    free_tokens(srv->tokens, srv->ntokens);
    free(srv->http_count);
    free(srv->lat_bucket);
    free(srv->lat_sum_us);
    pthread_rwlock_destroy(&srv->tok_lock);
    pthread_mutex_destroy(&srv->hub_mu);
    pthread_cond_destroy(&srv->hub_cv);
    pthread_mutex_destroy(&srv->conn_mu);
    pthread_cond_destroy(&srv->conn_cv);
    pthread_mutex_destroy(&srv->v_mu);
    pthread_cond_destroy(&srv->v_cv);
    free(srv);
}
