/* quant --server: the client side of REST API v1, on libcurl; see remote.h.
 *
 * One curl easy handle is reused for every request (curl keeps the connection alive). Uploads
 * stream from the file (never read whole into memory) and downloads go to a temp folder beside
 * OUTDIR, are checked against the sha256 the server announced, and replace OUTDIR only when all
 * are in, like the local pipelines' atomic output. The event stream is parsed line by line as
 * it arrives (the SSE format: "id:", "event:", "data:" fields, a blank line ends an event). */
#include "config.h"
#include "cli/remote.h"
#include "cli/progress.h"
#include "common/sha256.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { RC_OK = 0, RC_FAIL = 1, RC_USAGE = 2, RC_INTERRUPTED = 130 };

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("quant: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

typedef struct buf { char *p; size_t n, cap; } buf;

static int buf_add(buf *b, const char *d, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static size_t on_body(char *d, size_t sz, size_t nm, void *ud)
{
    return buf_add(ud, d, sz * nm) < 0 ? 0 : sz * nm;
}

typedef struct client {
    CURL *c;
    char base[1024];
    char auth[1100];
    char errbuf[CURL_ERROR_SIZE];
    cli_progress *bar;     /* transfer progress (uploads, downloads) */
    atomic_int *interrupt; /* qd_remote_opts's; NULL while cancelling */
} client;

static int interrupted(const client *cl) { return cl->interrupt && atomic_load(cl->interrupt); }

/* Transfer callback: progress of uploads and downloads, and Ctrl-C. */
static int on_xfer(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    client *cl = ud;
    if (cl->bar) {
        if (ultotal > 0)
            cli_progress_update(cl->bar, ulnow, ultotal);
        else if (dltotal > 0)
            cli_progress_update(cl->bar, dlnow, dltotal);
    }
    return interrupted(cl);
}

/* One request. body/len: a request body in memory; up/upsize: or one streamed from a file.
 * out receives the response body unless sink (a FILE) is given. Returns the HTTP status, or -1
 * with the reason printed (connection failure) or -2 when interrupted. */
static long request(client *cl, const char *method, const char *path, const char *ctype, const char *body,
                    size_t len, FILE *up, curl_off_t upsize, const char *last_event_id, buf *out, FILE *sink,
                    size_t (*writer)(char *, size_t, size_t, void *), void *writer_ud)
{
    CURL *c = cl->c;
    curl_easy_reset(c);
    char url[2048];
    snprintf(url, sizeof url, "%s%s", cl->base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cl->errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "quant/" PACKAGE_VERSION);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, cl);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    struct curl_slist *h = NULL;
    if (cl->auth[0])
        h = curl_slist_append(h, cl->auth);
    char ct[128];
    if (ctype) {
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
        h = curl_slist_append(h, ct);
    }
    char lei[64];
    if (last_event_id) {
        snprintf(lei, sizeof lei, "Last-Event-ID: %s", last_event_id);
        h = curl_slist_append(h, lei);
        h = curl_slist_append(h, "Accept: text/event-stream");
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        if (up) {
            curl_easy_setopt(c, CURLOPT_READDATA, up);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, upsize);
        } else {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        }
    } else if (strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    if (writer) {
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, writer);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, writer_ud);
    } else if (sink) {
        curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    } else {
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    }
    cl->errbuf[0] = 0;
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_ABORTED_BY_CALLBACK && interrupted(cl))
        return -2;
    if (rc != CURLE_OK && !(writer && rc == CURLE_WRITE_ERROR && status)) {
        /* a stream the server ended mid-way is not fatal for the caller that reconnects */
        if (writer && status == 200)
            return status;
        say("%s %s: %s", method, url, cl->errbuf[0] ? cl->errbuf : curl_easy_strerror(rc));
        return -1;
    }
    return status;
}

/* Prints the server's error reply; returns the exit status it means. */
static int server_error(const char *what, long status, const buf *b)
{
    json_t *j = b->p ? json_loads(b->p, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *field = json_string_value(json_object_get(e, "field"));
    if (msg)
        say("%s: the server refused (%ld %s): %s%s%s", what, status, code ? code : "", msg, field ? "; field: " : "",
            field ? field : "");
    else
        say("%s: the server answered %ld", what, status);
    int rc = (status == 400 || status == 422) && code && strcmp(code, "bad_model") && strcmp(code, "bad_dataset") &&
                     strcmp(code, "unsupported_model") && strcmp(code, "unsupported_dataset")
                 ? RC_USAGE
                 : RC_FAIL;
    json_decref(j);
    return rc;
}

/* Uploads a file unless the server has it (same sha256); id receives its id. */
static int upload(client *cl, const char *kind, const char *path, char id[64])
{
    char hex[65];
    int64_t size;
    if (qd_sha256_file(path, hex, &size) < 0) {
        say("%s: %s", path, strerror(errno));
        return RC_USAGE;
    }
    char q[256];
    snprintf(q, sizeof q, "/v1/%s?sha256=%s", kind, hex);
    buf b = { 0 };
    long st = request(cl, "GET", q, NULL, NULL, 0, NULL, 0, NULL, &b, NULL, NULL, NULL);
    if (st == 200) {
        json_t *j = json_loads(b.p, 0, NULL);
        json_t *first = json_array_get(json_object_get(j, kind), 0);
        const char *have = json_string_value(json_object_get(first, "id"));
        if (have) {
            snprintf(id, 64, "%s", have);
            say("%s: already on the server (%s)", path, id);
        }
        json_decref(j);
    }
    int rc = st < 0 ? (st == -2 ? RC_INTERRUPTED : RC_FAIL) : st != 200 ? server_error(path, st, &b) : RC_OK;
    free(b.p);
    if (rc != RC_OK || id[0])
        return rc;

    FILE *f = fopen(path, "rb");
    if (!f) {
        say("%s: %s", path, strerror(errno));
        return RC_USAGE;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char *esc = curl_easy_escape(cl->c, base, 0);
    snprintf(q, sizeof q, "/v1/%s?name=%s", kind, esc ? esc : "");
    curl_free(esc);
    char label[128];
    snprintf(label, sizeof label, "upload %s", base);
    cl->bar = cli_progress_new(label);
    memset(&b, 0, sizeof b);
    st = request(cl, "POST", q, "application/octet-stream", NULL, 0, f, (curl_off_t)size, NULL, &b, NULL, NULL, NULL);
    cli_progress_end(cl->bar);
    cl->bar = NULL;
    fclose(f);
    if (st == 201) {
        json_t *j = json_loads(b.p, 0, NULL);
        snprintf(id, 64, "%s", json_string_value(json_object_get(j, "id")) ? json_string_value(json_object_get(j, "id")) : "");
        json_decref(j);
        rc = id[0] ? RC_OK : RC_FAIL;
    } else {
        rc = st == -2 ? RC_INTERRUPTED : st < 0 ? RC_FAIL : server_error(path, st, &b);
    }
    free(b.p);
    return rc;
}

/* ---- the event stream ---------------------------------------------------------------------- */

typedef struct follow {
    buf line, data;
    char event[32];
    char last_id[32];
    int terminal;
    char state[16];
    cli_stages st;
} follow;

static void dispatch(follow *f)
{
    json_t *d = json_loads(f->data.p ? f->data.p : "", 0, NULL);
    if (!strcmp(f->event, "progress")) {
        const char *stage = json_string_value(json_object_get(d, "stage"));
        if (stage)
            cli_stages_update(&f->st, stage, json_number_value(json_object_get(d, "done")),
                              json_number_value(json_object_get(d, "total")),
                              json_is_number(json_object_get(d, "eta_s")) ? json_number_value(json_object_get(d, "eta_s"))
                                                                           : -1);
    } else if (!strcmp(f->event, "log")) {
        cli_stages_clear(&f->st);   /* the message on its own line; the bar comes back */
        say("%s: %s", json_string_value(json_object_get(d, "level")) ? json_string_value(json_object_get(d, "level")) : "log",
            json_string_value(json_object_get(d, "message")) ? json_string_value(json_object_get(d, "message")) : "");
    } else if (!strcmp(f->event, "state")) {
        const char *st = json_string_value(json_object_get(d, "state"));
        if (st) {
            snprintf(f->state, sizeof f->state, "%s", st);
            f->terminal = !strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
            const char *reason = json_string_value(json_object_get(d, "reason"));
            if (reason) {
                cli_stages_end(&f->st);
                say("job %s: %s", st, reason);
            }
        }
    }
    json_decref(d);
}

static size_t on_sse(char *p, size_t sz, size_t nm, void *ud)
{
    follow *f = ud;
    size_t n = sz * nm;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (buf_add(&f->line, p + i, 1) < 0)
                return 0;
            continue;
        }
        char *l = f->line.p ? f->line.p : "";
        size_t ll = f->line.n;
        if (ll && l[ll - 1] == '\r')
            l[--ll] = 0;
        if (ll == 0) {
            if (f->data.n)
                dispatch(f);
            f->data.n = 0;
            if (f->data.p)
                f->data.p[0] = 0;
            f->event[0] = 0;
        } else if (l[0] != ':') {
            char *colon = strchr(l, ':');
            const char *v = colon ? colon + 1 + (colon[1] == ' ') : "";
            if (colon)
                *colon = 0;
            if (!strcmp(l, "id"))
                snprintf(f->last_id, sizeof f->last_id, "%s", v);
            else if (!strcmp(l, "event"))
                snprintf(f->event, sizeof f->event, "%s", v);
            else if (!strcmp(l, "data")) {
                if (f->data.n)
                    buf_add(&f->data, "\n", 1);
                buf_add(&f->data, v, strlen(v));
            }
        }
        f->line.n = 0;
    }
    return n;
}

/* Follows the job's events until its terminal state; reconnects when the stream drops. */
static int follow_job(client *cl, const char *id, const char *type, int quiet)
{
    follow f = { .last_id = "0", .st.quiet = quiet };
    snprintf(f.st.who, sizeof f.st.who, "quant %s", type);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    int failures = 0, rc = RC_OK;
    while (!f.terminal) {
        f.line.n = f.data.n = 0;
        long st = request(cl, "GET", path, NULL, NULL, 0, NULL, 0, f.last_id, NULL, NULL, on_sse, &f);
        if (st == -2) {
            rc = RC_INTERRUPTED;
            break;
        }
        if (st == 204)   /* ended, and we had everything */
            break;
        if (st != 200) {
            if (++failures > 60) {
                say("job %s: lost the event stream", id);
                rc = RC_FAIL;
                break;
            }
            sleep(1);   /* the server may be restarting: its jobs survive it */
            continue;
        }
        failures = 0;
    }
    cli_stages_end(&f.st);
    free(f.line.p);
    free(f.data.p);
    return rc;
}

/* ---- artifacts ---------------------------------------------------------------------------- */

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            struct stat sb;
            if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
                rm_rf(sub);
            else
                unlink(sub);
        }
    closedir(d);
    rmdir(path);
}

static int download(client *cl, json_t *job, const char *outdir)
{
    char tmp[PATH_MAX], old[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.part-%d", outdir, (int)getpid());
    snprintf(old, sizeof old, "%s.old-%d", outdir, (int)getpid());
    rm_rf(tmp);
    if (mkdir(tmp, 0777) < 0) {
        say("%s: %s", tmp, strerror(errno));
        return RC_FAIL;
    }
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(job, "artifacts"), i, a) {
        const char *name = json_string_value(json_object_get(a, "name"));
        const char *url = json_string_value(json_object_get(a, "url"));
        const char *sha = json_string_value(json_object_get(a, "sha256"));
        if (!name || !url || !sha || strchr(name, '/') || name[0] == '.')
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", tmp, name);
        FILE *f = fopen(path, "wb");
        if (!f) {
            say("%s: %s", path, strerror(errno));
            rm_rf(tmp);
            return RC_FAIL;
        }
        char label[160];
        snprintf(label, sizeof label, "download %s", name);
        cl->bar = cli_progress_new(label);
        long st = request(cl, "GET", url, NULL, NULL, 0, NULL, 0, NULL, NULL, f, NULL, NULL);
        cli_progress_end(cl->bar);
        cl->bar = NULL;
        int bad = fclose(f) != 0;
        char hex[65] = "";
        if (st == 200 && !bad)
            bad = qd_sha256_file(path, hex, NULL) < 0 || strcmp(hex, sha);
        if (st != 200 || bad) {
            if (st == 200)
                say("%s: the download does not match its sha256 (%s, expected %s)", name, hex, sha);
            else if (st > 0)
                say("%s: the server answered %ld", url, st);
            rm_rf(tmp);
            return st == -2 ? RC_INTERRUPTED : RC_FAIL;
        }
    }
    /* all in: put the folder in place as a whole */
    struct stat sb;
    int had = stat(outdir, &sb) == 0;
    if (had && rename(outdir, old) < 0) {
        say("%s: %s", outdir, strerror(errno));
        rm_rf(tmp);
        return RC_FAIL;
    }
    if (rename(tmp, outdir) < 0) {
        say("%s: %s", outdir, strerror(errno));
        if (had)
            rename(old, outdir);
        rm_rf(tmp);
        return RC_FAIL;
    }
    if (had)
        rm_rf(old);
    return RC_OK;
}

/* ---- the whole run -------------------------------------------------------------------------- */

int qd_remote_run(const qd_remote_opts *o, const char *type, const qd_remote_paths *p, json_t *config,
                  const char *outdir, json_t **result)
{
    const char *server = o->server, *token = o->token;
    if (result)
        *result = NULL;
    if (!server || strncmp(server, "http", 4)) {
        say("--server %s: expected a URL such as http://host:8080", server ? server : "(none)");
        return RC_USAGE;
    }
    static int inited;
    if (!inited++)
        curl_global_init(CURL_GLOBAL_DEFAULT);
    client cl = { .c = curl_easy_init(), .interrupt = o->interrupt };
    if (!cl.c) {
        say("libcurl: cannot start");
        return RC_FAIL;
    }
    snprintf(cl.base, sizeof cl.base, "%s", server);
    size_t bl = strlen(cl.base);
    while (bl && cl.base[bl - 1] == '/')
        cl.base[--bl] = 0;
    if (!token)
        token = getenv("QUANTD_TOKEN");
    if (token && *token)
        snprintf(cl.auth, sizeof cl.auth, "Authorization: Bearer %s", token);

    int rc = RC_OK;
    char ids[6][64] = { { 0 } };
    const char *files[6] = { p->model, p->calib, p->train, p->train_labels, p->val, p->val_labels };
    for (int i = 0; i < 6 && rc == RC_OK; i++)
        if (files[i])
            rc = upload(&cl, i == 0 ? "models" : "datasets", files[i], ids[i]);
    char jid[64] = "";
    json_t *job = NULL;
    if (rc == RC_OK) {   /* the same spec as the local run's, with ids for paths */
        json_t *spec = json_pack("{s:s}", "type", type);
        if (ids[0][0])
            json_object_set_new(spec, "model", json_string(ids[0]));
        if (ids[1][0])
            json_object_set_new(spec, "calibration", json_string(ids[1]));
        if (ids[2][0] || ids[3][0]) {
            json_t *t = json_object();
            if (ids[2][0])
                json_object_set_new(t, "data", json_string(ids[2]));
            if (ids[3][0])
                json_object_set_new(t, "labels", json_string(ids[3]));
            json_object_set_new(spec, "train", t);
        }
        if (ids[4][0] || ids[5][0]) {
            json_t *v = json_object();
            if (ids[4][0])
                json_object_set_new(v, "data", json_string(ids[4]));
            if (ids[5][0])
                json_object_set_new(v, "labels", json_string(ids[5]));
            json_object_set_new(spec, "validation", v);
        }
        if (config)
            json_object_set(spec, "config", config);
        char *body = json_dumps(spec, JSON_COMPACT);
        json_decref(spec);
        buf b = { 0 };
        long st = body ? request(&cl, "POST", "/v1/jobs", "application/json", body, strlen(body), NULL, 0, NULL, &b,
                                 NULL, NULL, NULL)
                       : -1;
        free(body);
        if (st == 202) {
            json_t *j = json_loads(b.p, 0, NULL);
            snprintf(jid, sizeof jid, "%s", json_string_value(json_object_get(j, "id")) ? json_string_value(json_object_get(j, "id")) : "");
            json_decref(j);
            say("job %s queued on %s", jid, cl.base);
        } else {
            rc = st == -2 ? RC_INTERRUPTED : st < 0 ? RC_FAIL : server_error("job", st, &b);
        }
        free(b.p);
    }
    if (rc == RC_OK && jid[0])
        rc = follow_job(&cl, jid, type, o->quiet);
    if (rc == RC_INTERRUPTED && jid[0]) {
        cl.interrupt = NULL;   /* the cancel itself must not be interrupted */
        char path[128];
        snprintf(path, sizeof path, "/v1/jobs/%s", jid);
        buf b = { 0 };
        long st = request(&cl, "DELETE", path, NULL, NULL, 0, NULL, 0, NULL, &b, NULL, NULL, NULL);
        free(b.p);
        say("interrupted: job %s %s", jid, st == 200 || st == 202 ? "cancelled on the server" : "may still run");
    }
    if (rc == RC_OK && jid[0]) {
        char path[128];
        snprintf(path, sizeof path, "/v1/jobs/%s", jid);
        buf b = { 0 };
        long st = request(&cl, "GET", path, NULL, NULL, 0, NULL, 0, NULL, &b, NULL, NULL, NULL);
        job = st == 200 ? json_loads(b.p, 0, NULL) : NULL;
        if (!job)
            rc = st < 0 ? RC_FAIL : server_error("job", st, &b);
        free(b.p);
    }
    if (rc == RC_OK) {
        const char *state = json_string_value(json_object_get(job, "state"));
        if (!state || strcmp(state, "succeeded")) {
            const char *msg = json_string_value(json_object_get(json_object_get(job, "error"), "message"));
            say("job %s %s%s%s", jid, state ? state : "?", msg ? ": " : "", msg ? msg : "");
            rc = RC_FAIL;
        } else {
            if (outdir)
                rc = download(&cl, job, outdir);
            if (rc == RC_OK && result) {
                json_t *r = json_object_get(job, "result");
                *result = json_is_object(r) ? json_deep_copy(r) : json_object();
                if (outdir)   /* where the artifacts are here, as a local run says */
                    json_object_set_new(*result, "outdir", json_string(outdir));
            }
        }
    }
    json_decref(job);
    curl_easy_cleanup(cl.c);
    return rc;
}
