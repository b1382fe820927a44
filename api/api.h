/* Internals shared by the API's files (server.c, reply.c, deadline.c, hub.c, routes*.c, events.c,
 * spec.c); not a public header. A request's life:
 *
 *   1st callback (headers)   server.c allocates the qd_req, matches the route (404/405), checks
 *                            the token (401) and Content-Length against the route's limit (413)
 *   body callbacks           JSON bodies are buffered up to max_json_size; file bodies stream
 *                            to a temp file under <state>/tmp while being hashed
 *   last callback            the route's handler runs and queues exactly one reply
 *   completion               MHD_OPTION_NOTIFY_COMPLETED frees the qd_req (and removes a temp
 *                            upload that was not kept): the one place requests are freed
 *
 * Handlers return QD_H_OK (a reply is queued, whatever its status) or QD_H_CLOSE (no reply
 * could be made; the connection is closed). */
#ifndef QD_API_H
#define QD_API_H

#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api/errors.h"
#include "api/multipart.h"
#include "api/server.h"
#include "common/sha256.h"
#include "spec_json.h"

typedef struct qd_req qd_req;
typedef struct qd_conn qd_conn;

enum { QD_H_OK = 0, QD_H_CLOSE = -1 };
typedef int (*qd_handler)(qd_req *r);

typedef enum { QD_BODY_NONE = 0, QD_BODY_JSON, QD_BODY_MODEL, QD_BODY_DATASET } qd_body;

/* An upload's validation, run on a validation thread while the request's connection is suspended
 * (routes_uploads.c): ONNX import or inflating an .npz can take seconds, and HTTP threads must
 * stay free for everyone else. */
typedef struct qd_validation {
    int state;                       /* QD_V_NONE, QD_V_QUEUED (suspended), QD_V_DONE */
    void (*fn)(qd_req *r);
    int failed;                      /* the reply to make: code and message */
    qd_errcode code;
    char msg[4096];
    json_t *info;                    /* on success: the record's fields */
    char ext[8], hex[65];
    qd_req *next;                    /* in the validation queue */
} qd_validation;
enum { QD_V_NONE = 0, QD_V_QUEUED, QD_V_DONE };

typedef struct qd_route {
    const char *method;    /* "GET" also answers HEAD */
    const char *pattern;   /* "/v1/jobs/{id}/artifacts/{name}": {x} matches one path segment */
    qd_handler handler;
    qd_body body;
    int public;            /* no token needed */
} qd_route;

extern const qd_route qd_routes[];
extern const int qd_nroutes;

#define QD_MAX_ARGS 4

/* SSE state of a GET /v1/jobs/{id}/events request (events.c) */
typedef struct qd_sse {
    int64_t last;          /* id of the last event written */
    char *buf;             /* formatted events not yet handed to MHD */
    size_t len, off, cap;
    int ended;             /* the terminal state event is in buf: end after it */
    int waiting;           /* suspended, in the hub's waiter list */
    int keepalive;         /* the hub's timer asked for a comment line */
    int counted;           /* counted in srv->nstreams */
    struct qd_req *next_waiter;
} qd_sse;

struct qd_req {
    qd_server *srv;
    struct MHD_Connection *conn;
    const char *method, *url;
    int route;                       /* index into qd_routes, -1 when none matched */
    char args[QD_MAX_ARGS][256];     /* the {x} segments, in order */
    int begun;                       /* routed and checked (begin_request ran) */
    int replied;                     /* a reply has been queued */
    unsigned status;                 /* its status (metrics, log) */
    char allow[64];                  /* for a 405: the methods of this path */
    int retry_after;                 /* for a 429: seconds */
    int write_errno;                 /* an upload could not be written */
    double t0;
    /* body */
    char *json;                      /* QD_BODY_JSON */
    size_t json_len;
    int fd;                          /* QD_BODY_MODEL/DATASET: temp file, -1 when none */
    char tmp[PATH_MAX];              /* its path; emptied once renamed into place */
    qd_sha256 sha;
    int64_t body_len, limit;
    int too_large;
    qd_multipart *mp;                /* a multipart/form-data upload's parser (NULL: a raw body) */
    int mp_failed;                   /* its body is malformed (mp->err): 400 once the body is in */
    int64_t file_len;                /* the upload's bytes (without a form's envelope) */
    qd_conn *cn;                     /* the connection's deadline record (NULL: none) */
    qd_validation v;
    qd_sse sse;
};

struct qd_server {
    qd_server_options opt;           /* qd_server_new's copy */
    qd_store *st;
    qd_sched *sched;
    struct MHD_Daemon *mhd;
    int listen_fd;                   /* bound by qd_server_bind, until libmicrohttpd takes it */
    double started;

    /* open connections, for the header and body deadlines (deadline.c) */
    pthread_mutex_t conn_mu;
    pthread_cond_t conn_cv;
    struct qd_conn *conns;
    int reaper_stop, reaper_started;
    pthread_t reaper;
    char reaper_reply[1024];         /* the 408 it writes */
    size_t reaper_reply_len;

    pthread_rwlock_t tok_lock;
    char **tokens;                   /* NULL when auth is off */
    int ntokens;

    /* event-stream hub (hub.c) */
    pthread_mutex_t hub_mu;
    pthread_cond_t hub_cv;
    qd_req *waiters;                 /* suspended SSE requests */
    int hub_closing, nstreams;
    pthread_t hub_thread;
    int hub_thread_started;

    /* upload validation threads (routes_uploads.c), started on first use */
    pthread_mutex_t v_mu;
    pthread_cond_t v_cv;
    qd_req *v_head, **v_tail;
    pthread_t v_threads[2];
    int v_nthreads, v_closing;

    /* metrics: requests by route and status */
    atomic_long *http_count;         /* [(qd_nroutes + 1) * QD_NSTATUS] */
    atomic_long http_inflight;
    /* request durations by route (event streams excluded): a Prometheus histogram with
     * QD_NLAT cumulative buckets, plus the sum in microseconds */
    atomic_long *lat_bucket;         /* [(qd_nroutes + 1) * QD_NLAT] */
    atomic_long *lat_sum_us;         /* [qd_nroutes + 1] */
};

#define QD_NLAT 12
extern const double qd_lat_bounds[QD_NLAT];         /* seconds; the last is +Inf */
#define QD_NSTATUS 24
extern const unsigned qd_status_list[QD_NSTATUS];   /* the last slot counts any other status */

/* --- replies (reply.c) --- */
/* Queues resp with status (consumes resp). */
int qd_reply(qd_req *r, unsigned status, struct MHD_Response *resp);
/* Queues the JSON value (stolen) with status; extra headers as name/value pairs, NULL-terminated. */
int qd_reply_json(qd_req *r, unsigned status, json_t *body, ...);
/* The error code for a failed write's errno: storage_full (507) for a full disk, else internal. */
qd_errcode qd_io_error(int err);
int qd_reply_error(qd_req *r, qd_errcode code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* UTF-8 (jansson accepts nothing else): qd_utf8_clean copies src into dst (size n), each invalid
 * byte replaced by U+FFFD and the copy cut between characters; qd_utf8_prefix is the length of s's
 * longest prefix of at most max bytes that does not split a character. */
void qd_utf8_clean(char *dst, size_t n, const char *src);
size_t qd_utf8_prefix(const char *s, size_t max);
int qd_utf8_valid(const char *s);
/* A query-string argument or request header (NULL when absent). */
const char *qd_arg(qd_req *r, const char *name);
const char *qd_header(qd_req *r, const char *name);
/* A whole HTTP reply carrying an error body, for the places that write to a connection's socket
 * themselves (a 413 mid-body, the reaper's 408); 0 when it cannot be built. */
size_t qd_raw_error_reply(char *out, size_t n, qd_errcode code, const char *msg);
/* A 413 in the middle of a body: written to the socket at once; returns QD_H_CLOSE (the caller
 * returns MHD_NO and libmicrohttpd closes the connection). */
int qd_refuse_mid_body(qd_req *r);

/* --- connection deadlines (deadline.c) --- */
enum { QD_CONN_HEADERS, QD_CONN_BODY, QD_CONN_BUSY, QD_CONN_KILLED };
/* c may be NULL (no record: no deadline). QD_CONN_HEADERS starts header_timeout again (a kept-alive
 * connection waiting for its next request), QD_CONN_BODY the body's clock, QD_CONN_BUSY ends both. */
void qd_conn_set_phase(qd_server *srv, qd_conn *c, int phase);
void qd_conn_add_body(qd_conn *c, size_t n);   /* body bytes received (the body deadline grows) */
/* MHD_OPTION_NOTIFY_CONNECTION: a connection's record, from its opening to its close. */
void qd_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);
/* The reaper thread, which closes connections past their deadline (with reply, len bytes, unless
 * the connection was idle). */
int qd_reaper_start(qd_server *srv, const char *reply, size_t len);
void qd_reaper_stop(qd_server *srv);
double qd_mono_now(void);   /* monotonic seconds */

/* --- handlers --- */
int qd_h_health(qd_req *r);
int qd_h_metrics(qd_req *r);
int qd_h_openapi(qd_req *r);
int qd_h_presets(qd_req *r);
int qd_h_model_upload(qd_req *r);
int qd_h_model_list(qd_req *r);
int qd_h_model_get(qd_req *r);
int qd_h_model_delete(qd_req *r);
int qd_h_dataset_upload(qd_req *r);
int qd_h_dataset_list(qd_req *r);
int qd_h_dataset_get(qd_req *r);
int qd_h_dataset_delete(qd_req *r);
int qd_h_job_submit(qd_req *r);
int qd_h_job_list(qd_req *r);
int qd_h_job_get(qd_req *r);
int qd_h_job_delete(qd_req *r);
int qd_h_job_events(qd_req *r);
int qd_h_artifact(qd_req *r);
int qd_h_artifact_list(qd_req *r);
int qd_h_static(qd_req *r);   /* the web dashboard's files (static.c) */

/* --- lists (routes_jobs.c) --- */
/* ?limit= (1–1000, default 100), ?after= (a page's `next` cursor) and ?name= into q; on a bad
 * value replies 400 naming the parameter, *ok = 0. */
int qd_list_args(qd_req *r, qd_list_query *q, int *ok);
/* {key: items (stolen), next: "cursor" | null} */
json_t *qd_page_reply(const char *key, json_t *items, int64_t next);

/* --- uploads (routes_uploads.c) --- */
/* Before MHD_stop_daemon: waits for the validations in progress, answers those not started with
 * 503 and resumes every connection they suspended. */
void qd_uploads_stop(qd_server *srv);

/* --- event streams (hub.c; the streams themselves: events.c) --- */
int qd_hub_start(qd_server *srv);
void qd_hub_close(qd_server *srv);     /* ends every stream (shutdown) */
void qd_hub_forget(qd_server *srv, qd_req *r);   /* completion of a stream */
/* hub_mu held: puts r on the waiter list and suspends its connection until a wake-up. */
void qd_hub_park(qd_server *srv, qd_req *r);

/* --- job spec (spec.c) --- */
/* Parses a POST /v1/jobs body with the engine's spec table into s; on error replies 400
 * invalid_field naming the field and returns QD_H_OK with *ok = 0 (s is then freed). */
int qd_spec_check(qd_req *r, json_t *spec, int debug_jobs, qs_job_spec *s, int *ok);
/* Takes `notify` out of spec (the engine does not know it) into url[n] ("" when absent or null),
 * checking it is an http or https URL with a host; on error replies 400 invalid_field, *ok = 0. */
int qd_spec_take_notify(qd_req *r, json_t *spec, char *url, size_t n, int *ok);
/* The models and data sets s names, with their fields (ids borrowed from s); returns the count. */
int qd_spec_refs(const qs_job_spec *s, qd_ref refs[6]);
/* That every reference exists (422 unknown_reference), the job type has the data it needs and
 * each input data set fits the model's inputs (422 data_mismatch); on error replies, *ok = 0. */
int qd_spec_check_data(qd_req *r, const qs_job_spec *s, int *ok);

/* the committed api/openapi.json, compiled in (api/openapi-json.c is generated from it) */
extern const char qd_openapi_json[];

#endif
