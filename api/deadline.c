/* Connection deadlines.
 *
 * libmicrohttpd's connection timeout is an idle timeout: a client sending one byte every few
 * seconds keeps its connection, and enough such clients take every slot. So each connection has
 * a record here (MHD_OPTION_NOTIFY_CONNECTION) with a deadline, and a reaper thread closes the
 * ones past it: the request line and headers must arrive within header_timeout seconds of the
 * connection's opening (or of the previous reply, on a kept-alive connection); a body gets
 * body_timeout seconds plus one for each body_min_rate bytes received (mod_reqtimeout's rule).
 * Once a reply is queued, or a request has no body, the connection is the handler's and only the
 * idle timeout applies. The reaper answers 408 and shuts the socket down; libmicrohttpd then sees
 * the connection end and closes it. It only touches a socket while the record is linked, under
 * conn_mu, and libmicrohttpd calls NOTIFY_CLOSED (which unlinks it) before it closes the socket. */
#include "api/api.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

struct qd_conn {
    qd_conn *prev, *next;
    int fd;
    int phase;
    double deadline;                 /* QD_CONN_HEADERS */
    int kept;                        /* kept alive after a reply: idle, not late, at the deadline */
    double body_t0;                  /* QD_CONN_BODY */
    atomic_llong body_bytes;
};

void qd_conn_set_phase(qd_server *srv, qd_conn *c, int phase)
{
    if (!c)
        return;
    pthread_mutex_lock(&srv->conn_mu);
    if (c->phase != QD_CONN_KILLED) {
        c->phase = phase;
        if (phase == QD_CONN_HEADERS) {   /* only ever after a reply (on_connection sets the first) */
            c->deadline = qd_mono_now() + srv->opt.header_timeout;
            c->kept = 1;
        }
        else if (phase == QD_CONN_BODY)
            c->body_t0 = qd_mono_now();
    }
    pthread_mutex_unlock(&srv->conn_mu);
}

void qd_conn_add_body(qd_conn *c, size_t n)
{
    if (c)
        atomic_fetch_add(&c->body_bytes, (long long)n);
}

void qd_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    qd_server *srv = cls;
    qd_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!fd || !(c = calloc(1, sizeof *c)))
            return;   /* no deadline then; the idle timeout still applies */
        c->fd = fd->connect_fd;
        c->phase = QD_CONN_HEADERS;
        c->deadline = qd_mono_now() + srv->opt.header_timeout;
        pthread_mutex_lock(&srv->conn_mu);
        c->next = srv->conns;
        if (c->next)
            c->next->prev = c;
        srv->conns = c;
        pthread_mutex_unlock(&srv->conn_mu);
        *socket_context = c;
    } else if (c) {
        pthread_mutex_lock(&srv->conn_mu);
        if (c->prev)
            c->prev->next = c->next;
        else
            srv->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock(&srv->conn_mu);
        free(c);
        *socket_context = NULL;
    }
}

static int conn_expired(const qd_server *srv, qd_conn *c, double now)
{
    if (c->phase == QD_CONN_HEADERS)
        return now > c->deadline;
    if (c->phase == QD_CONN_BODY)
        return now > c->body_t0 + srv->opt.body_timeout +
                         (double)atomic_load(&c->body_bytes) / (double)srv->opt.body_min_rate;
    return 0;
}

static void *reaper_main(void *arg)
{
    qd_server *srv = arg;
    const char *reply = srv->reaper_reply;
    size_t len = srv->reaper_reply_len;
    pthread_mutex_lock(&srv->conn_mu);
    while (!srv->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;   /* a quarter-second tick: deadlines are seconds */
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->conn_cv, &srv->conn_mu, &ts);
        double now = qd_mono_now();
        for (qd_conn *c = srv->conns; c; c = c->next) {
            if (!conn_expired(srv, c, now))
                continue;
            /* A kept-alive connection that sent nothing more is closed without a word, as idle
             * connections are: a 408 there could meet the client's next request on the wire and
             * be read as its answer. (Half a request on it is closed the same way.) */
            int idle = c->phase == QD_CONN_HEADERS && c->kept;
            if (idle)
                QD_LOG_DEBUG("closing a kept-alive connection idle for %d s", srv->opt.header_timeout);
            else
                QD_LOG_INFO("closing a connection that was too slow to send its %s",
                            c->phase == QD_CONN_HEADERS ? "request headers" : "request body");
            c->phase = QD_CONN_KILLED;
            /* a best effort: the socket is nonblocking and the reply tiny */
            if (!idle && len && send(c->fd, reply, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                (void)0;
            shutdown(c->fd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&srv->conn_mu);
    return NULL;
}

double qd_mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int qd_reaper_start(qd_server *srv, const char *reply, size_t len)
{
    if (len > sizeof srv->reaper_reply)
        len = 0;   /* then it closes without a word */
    memcpy(srv->reaper_reply, reply, len);
    srv->reaper_reply_len = len;
    if (pthread_create(&srv->reaper, NULL, reaper_main, srv) != 0)
        return -1;
    srv->reaper_started = 1;
    return 0;
}

void qd_reaper_stop(qd_server *srv)
{
    if (!srv->reaper_started)
        return;
    pthread_mutex_lock(&srv->conn_mu);
    srv->reaper_stop = 1;
    pthread_cond_signal(&srv->conn_cv);
    pthread_mutex_unlock(&srv->conn_mu);
    pthread_join(srv->reaper, NULL);
    srv->reaper_started = 0;
}
