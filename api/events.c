/* Event streams: GET /v1/jobs/{id}/events as Server-Sent Events, from the job's event log in the
 * store.
 *
 * A stream is an MHD response whose reader callback formats the events after the last id sent.
 * When there is nothing new it does not wait (that would block an HTTP thread): it puts the
 * request on the hub's waiter list and suspends the connection (hub.c, which wakes it up again).
 * Checking for events and suspending happen under the hub lock, and qd_server_notify takes the
 * same lock after the commit, so a wake-up cannot slip in between.
 *
 * Replay: ids are the per-job event seq; `Last-Event-ID` (or ?after=N) resumes after it, the
 * default replays from the start. The stream ends after the job's terminal `state` event; a
 * request for an ended job with nothing left to send gets 204, which also tells a browser's
 * EventSource not to reconnect. */
#include "api/api.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 64

static int terminal(const char *state)
{
    return !strcmp(state, "succeeded") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

static int append(qd_sse *s, const char *text, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b)
            return -1;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, text, n);
    s->len += n;
    return 0;
}

/* Formats events (consuming their data) into the stream's buffer. */
static void format_events(qd_sse *s, qd_event_out *ev, int n)
{
    for (int i = 0; i < n; i++) {
        if (!s->ended) {
            char ts[32], head[160];
            qd_time_str(ev[i].ts, ts);
            int k = snprintf(head, sizeof head, "id: %" PRId64 "\nevent: %s\ndata: {\"ts\":\"%s\"", ev[i].seq,
                             ev[i].type, ts);
            append(s, head, (size_t)k);
            /* splice the stored object's members after ts: {"ts":…,"state":…} */
            const char *d = ev[i].data;
            size_t dl = strlen(d);
            if (dl > 2 && d[0] == '{') {
                append(s, ",", 1);
                append(s, d + 1, dl - 1);
            } else {
                append(s, "}", 1);
            }
            append(s, "\n\n", 2);
            s->last = ev[i].seq;
            if (!strcmp(ev[i].type, "state")) {
                json_t *o = json_loads(d, 0, NULL);
                const char *st = json_string_value(json_object_get(o, "state"));
                if (st && terminal(st))
                    s->ended = 1;
                json_decref(o);
            }
        }
        free(ev[i].data);
    }
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    qd_req *r = cls;
    qd_sse *s = &r->sse;
    qd_server *srv = r->srv;
    (void)pos;
    if (s->off == s->len) {
        s->off = s->len = 0;
        if (s->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&srv->hub_mu);
        if (srv->hub_closing) {
            pthread_mutex_unlock(&srv->hub_mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        /* The state is read before the events: a job's final state and its last event are
         * committed together, so a job found ended here has all its events readable below, and
         * finding none new then means everything was sent. (Read the other way round, a job
         * ending between the two reads cut the stream before its last events.) */
        char state[16] = "";
        int gone = qd_store_job_state(srv->st, r->args[0], state) < 0;
        qd_event_out ev[BATCH];
        int n = qd_store_events_read(srv->st, r->args[0], s->last, BATCH, ev);
        if (n > 0) {
            format_events(s, ev, n);
        } else {
            if (n < 0 || gone || terminal(state)) {
                /* gone, or ended with everything sent */
                pthread_mutex_unlock(&srv->hub_mu);
                return MHD_CONTENT_READER_END_OF_STREAM;
            }
            if (s->keepalive) {
                s->keepalive = 0;
                append(s, ": keep-alive\n\n", 14);
            } else {
                qd_hub_park(srv, r);
                pthread_mutex_unlock(&srv->hub_mu);
                return 0;
            }
        }
        pthread_mutex_unlock(&srv->hub_mu);
        if (s->len == 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;   /* out of memory */
    }
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->buf + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

int qd_h_job_events(qd_req *r)
{
    qd_server *srv = r->srv;
    const char *id = r->args[0];
    char state[16];
    if (qd_store_job_state(srv->st, id, state) < 0)
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no job with id %s", id);
    const char *last = qd_header(r, "Last-Event-ID");
    const char *field = "Last-Event-ID";
    if (!last || !*last) {
        last = qd_arg(r, "after");
        field = "after";
    }
    int64_t after = 0;
    if (last && *last) {
        char *end;
        errno = 0;
        long long v = strtoll(last, &end, 10);
        if (end == last || *end || errno || v < 0)
            return qd_reply_error(r, QD_E_BAD_REQUEST, field, "%s '%s' is not an event id (a number)", field, last);
        after = v;
    }
    if (terminal(state)) {
        qd_event_out ev[1];
        int n = qd_store_events_read(srv->st, id, after, 1, ev);
        if (n > 0)
            free(ev[0].data);
        if (n <= 0) {
            struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
            return qd_reply(r, 204, resp);
        }
    }
    r->sse.last = after;
    append(&r->sse, "retry: 2000\n\n", 13);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, r, NULL);
    if (!resp)
        return QD_H_CLOSE;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");   /* proxies: do not buffer */
    pthread_mutex_lock(&srv->hub_mu);
    srv->nstreams++;
    pthread_mutex_unlock(&srv->hub_mu);
    r->sse.counted = 1;
    return qd_reply(r, 200, resp);
}
