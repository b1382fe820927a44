/* Configuration table and parsers; see conf.h.
 *
 * Every key is one row of `keys[]`: the defaults, the file parser, --set and --print-config all
 * walk that table, so a new setting is one line here plus its field in qd_config. Values are
 * checked against the row's bounds wherever they come from, and an error names the key and, for
 * the file, the line. */
#include "config.h"
#include "daemon/conf.h"
#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef QD_SRCDIR
#define QD_SRCDIR ""
#endif
#ifndef QD_WEBDIR
#define QD_WEBDIR_DOC "$(pkgdatadir)/web"
#else
#define QD_WEBDIR_DOC QD_WEBDIR
#endif
#ifndef QD_CHARTJS   /* configure --with-chartjs=FILE */
#define QD_CHARTJS "/usr/share/javascript/chart.js/chart.min.js"
#endif

typedef enum { T_STRING, T_INT, T_SIZE, T_BOOL, T_LEVEL } key_type;

typedef struct key {
    const char *name, *section;
    key_type type;
    size_t offset;
    const char *dflt;
    int64_t min, max;
    const char *doc;
} key;

#define F(field) offsetof(qd_config, field)
#define GiB (1024LL * 1024 * 1024)
static const key keys[] = {
    { .name = "listen", .section = "http", .type = T_STRING, .offset = F(listen),
      .dflt = "127.0.0.1:8080",
      .doc = "Address and port to listen on: ADDR:PORT, [IPV6]:PORT or *:PORT (all addresses)." },
    { .name = "http_threads", .section = "http", .type = T_INT, .offset = F(http_threads),
      .dflt = "2", .min = 1, .max = 64,
      .doc = "Threads serving HTTP (each with its own epoll set)." },
    { .name = "max_connections", .section = "http", .type = T_INT, .offset = F(max_connections),
      .dflt = "1024", .min = 4, .max = 65536,
      .doc = "Open connections at most, event streams included; more are refused at accept." },
    { .name = "token_file", .section = "http", .type = T_STRING, .offset = F(token_file), .dflt = "",
      .doc = "File of bearer tokens, one per line (# comments). When set, every /v1 route but\n"
             "/v1/health needs `Authorization: Bearer TOKEN`. Empty: no authentication.\n"
             "SIGHUP re-reads it." },
    { .name = "sse_keepalive", .section = "http", .type = T_INT, .offset = F(sse_keepalive),
      .dflt = "15", .min = 1, .max = 3600,
      .doc = "Seconds between keep-alive comments on an idle event stream (detects gone clients)." },
    { .name = "web_root", .section = "http", .type = T_STRING, .offset = F(web_root), .dflt = "",
      .doc = "Folder of the web dashboard's files, served at /. Empty: web/ of the source tree when\n"
             "the binary sits in it, else the installed copy (" QD_WEBDIR_DOC ")." },
    { .name = "chartjs", .section = "http", .type = T_STRING, .offset = F(chartjs), .dflt = QD_CHARTJS,
      .doc = "Chart.js for the dashboard's charts (Debian package libjs-chart.js), served at\n"
             "/vendor/chart.js." },
    { .name = "max_connections_per_ip", .section = "http", .type = T_INT,
      .offset = F(max_connections_per_ip), .dflt = "64", .min = 0, .max = 65536,
      .doc = "Open connections at most from one client address (0: no limit beyond\n"
             "max_connections); more are refused at accept, so one client cannot lock out the rest." },
    { .name = "header_timeout", .section = "http", .type = T_INT, .offset = F(header_timeout),
      .dflt = "20", .min = 1, .max = 3600,
      .doc = "Seconds a request's line and headers may take to arrive, counted from the connection's\n"
             "opening or the previous reply; a slower client gets 408 and the connection is closed.\n"
             "Also how long an idle keep-alive connection stays open." },
    { .name = "body_timeout", .section = "http", .type = T_INT, .offset = F(body_timeout),
      .dflt = "20", .min = 1, .max = 86400,
      .doc = "Seconds a request body may take, plus one second for every body_min_rate bytes\n"
             "received: an upload that keeps that rate is never cut off, one that stalls is (408)." },
    { .name = "body_min_rate", .section = "http", .type = T_SIZE, .offset = F(body_min_rate),
      .dflt = "500", .min = 1, .max = GiB,
      .doc = "Bytes per second that extend body_timeout by one second (K, M suffixes)." },
    { .name = "allowed_hosts", .section = "http", .type = T_STRING, .offset = F(allowed_hosts),
      .dflt = "",
      .doc = "Host names (comma-separated) accepted in the Host header besides IP addresses and\n"
             "localhost; other Hosts get 403 (DNS rebinding). \"*\": any." },
    { .name = "allowed_origins", .section = "http", .type = T_STRING, .offset = F(allowed_origins),
      .dflt = "",
      .doc = "Origins (comma-separated, e.g. https://dash.example.com) besides the server's own that may\n"
             "send POST, PUT, PATCH or DELETE requests (a dashboard hosted elsewhere); other\n"
             "Origins get 403 (cross-site request forgery). \"*\": any." },
    { .name = "state_dir", .section = "jobs", .type = T_STRING, .offset = F(state_dir), .dflt = "",
      .doc = "Where models, data sets, jobs, artifacts and the database live. Empty: ./var of the\n"
             "source tree when the binary sits in it, $STATE_DIRECTORY under systemd, else\n"
             "/var/lib/quantd." },
    { .name = "store", .section = "jobs", .type = T_STRING, .offset = F(store), .dflt = "sqlite",
      .doc = "The job store: sqlite (embedded, <state_dir>/quantd.db) or a PostgreSQL connection URI,\n"
             "postgresql://user@host/db (several quantd hosts on one database share its queue; each\n"
             "host keeps its own state_dir and they all mount the same artifact_dir)." },
    { .name = "artifact_dir", .section = "jobs", .type = T_STRING, .offset = F(artifact_dir), .dflt = "",
      .doc = "Where models, data sets, job folders and temp files live. Empty: state_dir. With\n"
             "PostgreSQL, a file system every host mounts (NFS) that renames atomically and gives\n"
             "close-to-open consistency (docs/deployment.md, \"Several hosts\")." },
    { .name = "host_id", .section = "jobs", .type = T_STRING, .offset = F(host_id), .dflt = "",
      .doc = "This host's name in job leases and events. Empty: <hostname>-<pid>." },
    { .name = "lease_seconds", .section = "jobs", .type = T_INT, .offset = F(lease_seconds), .dflt = "30",
      .min = 2, .max = 3600,
      .doc = "PostgreSQL: a running job's lease. Its host renews it every poll_interval_ms; when a host\n"
             "dies, another requeues its jobs once their lease has expired." },
    { .name = "poll_interval_ms", .section = "jobs", .type = T_INT, .offset = F(poll_interval_ms),
      .dflt = "1000", .min = 50, .max = 60000,
      .doc = "PostgreSQL: how often a host looks for queued jobs, renews its leases (and reads\n"
             "cancellations asked through other hosts) and requeues expired ones." },
    { .name = "workers", .section = "jobs", .type = T_INT, .offset = F(workers), .dflt = "1",
      .min = 1, .max = 64, .doc = "Jobs running at once (the libuv worker pool's size)." },
    { .name = "engine_threads", .section = "jobs", .type = T_INT, .offset = F(engine_threads),
      .dflt = "0", .min = 0, .max = 256,
      .doc = "Compute threads of the engine's one pool, which the running jobs share\n"
             "(0: the online CPUs, or QUANTD_THREADS)." },
    { .name = "job_nice", .section = "jobs", .type = T_INT, .offset = F(job_nice), .dflt = "10",
      .min = 0, .max = 19,
      .doc = "Nice value of the threads that run jobs: compute yields the CPU to the HTTP threads,\n"
             "so the API stays responsive while jobs use every core." },
    { .name = "max_queue", .section = "jobs", .type = T_INT, .offset = F(max_queue), .dflt = "100",
      .min = 1, .max = 1000000,
      .doc = "Queued jobs at most; beyond it POST /v1/jobs answers 429 with Retry-After." },
    { .name = "shutdown_timeout", .section = "jobs", .type = T_INT, .offset = F(shutdown_timeout),
      .dflt = "20", .min = 0, .max = 3600,
      .doc = "Seconds to wait, on SIGTERM, for running jobs to stop before exiting anyway\n"
             "(they are requeued either way)." },
    { .name = "debug_jobs", .section = "jobs", .type = T_BOOL, .offset = F(debug_jobs),
      .dflt = "false",
      .doc = "Accept the job type \"sleep\" (config {seconds, fail}): a job that only waits and\n"
             "reports progress, for testing the service without the engine. Off in production." },
    { .name = "job_retention_days", .section = "jobs", .type = T_INT, .offset = F(job_retention_days),
      .dflt = "0", .min = 0, .max = 36500,
      .doc = "Finished jobs (succeeded, failed, cancelled) that ended more than this many days ago are\n"
             "removed with their events and artifacts, and so are uploads older than that which no\n"
             "remaining job uses. At start, then every retention_interval. 0: keep everything." },
    { .name = "max_state_bytes", .section = "jobs", .type = T_SIZE, .offset = F(max_state_bytes),
      .dflt = "0", .min = 0, .max = 1024 * 1024 * GiB,
      .doc = "When the state dir holds more than this (K, M, G suffixes), the oldest finished jobs\n"
             "are removed, then the oldest uploads no job uses, until it fits (queued and running\n"
             "jobs and what they use are never removed). At start, then every retention_interval.\n"
             "0: no limit." },
    { .name = "retention_interval", .section = "jobs", .type = T_INT, .offset = F(retention_interval),
      .dflt = "3600", .min = 1, .max = 86400 * 7,
      .doc = "Seconds between two passes of job_retention_days and max_state_bytes." },
    { .name = "webhook_secret", .section = "jobs", .type = T_STRING, .offset = F(webhook_secret), .dflt = "",
      .doc = "Key of the webhook signatures: a job spec's `notify` URL gets the final job object\n"
             "POSTed with X-Quantd-Signature: sha256=<hex HMAC-SHA256 of the body under this key>.\n"
             "Empty: webhooks go unsigned (no header). Keep this file private when set." },
    { .name = "webhook_attempts", .section = "jobs", .type = T_INT, .offset = F(webhook_attempts),
      .dflt = "5", .min = 1, .max = 50,
      .doc = "Webhook deliveries tried at most (anything but a 2xx answer is retried)." },
    { .name = "webhook_backoff_ms", .section = "jobs", .type = T_INT, .offset = F(webhook_backoff_ms),
      .dflt = "2000", .min = 1, .max = 3600000,
      .doc = "Milliseconds before a webhook's second attempt; each next wait doubles." },
    { .name = "webhook_timeout", .section = "jobs", .type = T_INT, .offset = F(webhook_timeout),
      .dflt = "10", .min = 1, .max = 600,
      .doc = "Seconds a webhook attempt may take (connection and answer)." },
    { .name = "max_model_size", .section = "limits", .type = T_SIZE, .offset = F(max_model_size),
      .dflt = "2G", .min = 1024, .max = 1024 * GiB,
      .doc = "Largest model upload (bytes; K, M, G suffixes). Larger: 413." },
    { .name = "max_dataset_size", .section = "limits", .type = T_SIZE,
      .offset = F(max_dataset_size), .dflt = "16G", .min = 1024, .max = 1024 * GiB,
      .doc = "Largest data set upload. Larger: 413." },
    { .name = "max_json_size", .section = "limits", .type = T_SIZE, .offset = F(max_json_size),
      .dflt = "1M", .min = 1024, .max = GiB, .doc = "Largest JSON request body. Larger: 413." },
    { .name = "max_tensor_size", .section = "limits", .type = T_SIZE, .offset = F(max_tensor_size),
      .dflt = "2G", .min = 1024, .max = 1024 * GiB,
      .doc = "Largest tensor a model may create: an initializer, a Constant, a value computed\n"
             "while planning (ConstantOfShape, Expand, Tile, …) or an activation at the job's\n"
             "batch size. Larger: the upload or the job fails with an error naming the tensor." },
    { .name = "log_level", .section = "daemon", .type = T_LEVEL, .offset = F(log_level),
      .dflt = "info", .doc = "error, warning, notice, info or debug." },
};
#define NKEYS (int)(sizeof keys / sizeof keys[0])
static const char *const sections[] = { "http", "jobs", "limits", "daemon" };

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static const key *find_key(const char *name)
{
    for (int i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

static int parse_size(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    int64_t mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mul = 1024; end++; break;
    case 'M': mul = 1024 * 1024; end++; break;
    case 'G': mul = GiB; end++; break;
    case 'T': mul = 1024 * GiB; end++; break;
    default: return -1;
    }
    if (toupper((unsigned char)*end) == 'B')   /* "16GB", "512KB" */
        end++;
    if (*end || v > INT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* Parses text into the key's field, checking bounds. */
static int set_value(qd_config *c, const key *k, const char *text, char *err, size_t n)
{
    char *p = (char *)c + k->offset;
    switch (k->type) {
    case T_STRING: {
        char *dup = strdup(text);
        if (!dup)
            return fail(err, n, "out of memory");
        free(*(char **)p);
        *(char **)p = dup;
        return 0;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (end == text || *end || errno)
            return fail(err, n, "%s: '%s' is not an integer", k->name, text);
        if (v < k->min || v > k->max)
            return fail(err, n, "%s: %ld is out of range [%lld, %lld]", k->name, v, (long long)k->min,
                        (long long)k->max);
        *(int *)p = (int)v;
        return 0;
    }
    case T_SIZE: {
        int64_t v;
        if (parse_size(text, &v) < 0)
            return fail(err, n, "%s: '%s' is not a size (e.g. 512M, 2G)", k->name, text);
        if (v < k->min || v > k->max)
            return fail(err, n, "%s: %s is out of range [%lld, %lld] bytes", k->name, text,
                        (long long)k->min, (long long)k->max);
        *(int64_t *)p = v;
        return 0;
    }
    case T_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "yes") || !strcmp(text, "on") || !strcmp(text, "1"))
            *(int *)p = 1;
        else if (!strcmp(text, "false") || !strcmp(text, "no") || !strcmp(text, "off") || !strcmp(text, "0"))
            *(int *)p = 0;
        else
            return fail(err, n, "%s: '%s' is not a boolean (true/false)", k->name, text);
        return 0;
    case T_LEVEL: {
        int lvl = qd_log_parse_level(text);
        if (lvl < 0)
            return fail(err, n, "%s: '%s' is not a level (error, warning, notice, info, debug)", k->name,
                        text);
        *(int *)p = lvl;
        return 0;
    }
    }
    return fail(err, n, "%s: bad key type", k->name);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

static int load_file(qd_config *c, const char *path, char *err, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(err, n, "config file %s: %s", path, strerror(errno));
    char line[4096], sub[3584];
    const char *section = NULL;
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1]) {
                rc = fail(err, n, "%s:%d: malformed section header", path, lineno);
                break;
            }
            *e = 0;
            const char *name = trim(s + 1);
            section = NULL;
            for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
                if (!strcmp(sections[i], name))
                    section = sections[i];
            if (!section)
                rc = fail(err, n, "%s:%d: unknown section [%s] (known: http, jobs, limits, daemon)", path,
                          lineno, name);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fail(err, n, "%s:%d: expected `key = value`", path, lineno);
            break;
        }
        *eq = 0;
        char *name = trim(s), *value = trim(eq + 1);
        size_t vl = strlen(value);   /* "quoted values" keep inner spaces and '#' */
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = 0;
            value++;
        }
        const key *k = find_key(name);
        if (!k) {
            rc = fail(err, n, "%s:%d: unknown key '%s'", path, lineno, name);
            break;
        }
        if (section && strcmp(section, k->section)) {
            rc = fail(err, n, "%s:%d: key '%s' belongs in [%s], not [%s]", path, lineno, name, k->section,
                      section);
            break;
        }
        if (set_value(c, k, value, sub, sizeof sub) < 0)
            rc = fail(err, n, "%s:%d: %s", path, lineno, sub);
    }
    fclose(f);
    return rc;
}

/* The default state dir: the source tree's var/ when this binary was built in it (the developer
 * running ./quickstart), systemd's StateDirectory= when started by a unit, else the FHS place. */
static char *default_state_dir(void)
{
    const char *sd = getenv("STATE_DIRECTORY");
    if (sd && *sd) {
        size_t len = strcspn(sd, ":");   /* several directories are ':'-separated */
        return strndup(sd, len);
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    size_t sl = strlen(QD_SRCDIR);
    if (len > 0 && sl > 0) {
        exe[len] = 0;
        if (!strncmp(exe, QD_SRCDIR, sl) && exe[sl] == '/') {
            char *out = malloc(sl + 5);
            if (out)
                snprintf(out, sl + 5, "%s/var", QD_SRCDIR);
            return out;
        }
    }
    return strdup("/var/lib/quantd");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: quantd [--config FILE] [--listen ADDR:PORT] [--state-dir DIR] [--workers N]\n"
            "              [--token-file FILE] [--log-level LEVEL] [--set KEY=VALUE]...\n"
            "       quantd --print-config | --version | --help\n"
            "\n"
            "Quantizes ONNX models as a service: REST API v1 on ADDR:PORT (default 127.0.0.1:8080).\n"
            "Every key of the config file can also be given with --set; `--print-config` writes a\n"
            "documented config file with the defaults.\n");
}

int qd_config_load(qd_config *c, int argc, char **argv, char *err, size_t n)
{
    memset(c, 0, sizeof *c);
    char sub[512];
    for (int i = 0; i < NKEYS; i++)
        if (set_value(c, &keys[i], keys[i].dflt, sub, sizeof sub) < 0)
            return fail(err, n, "default of %s", sub);

    enum { O_SET = 256, O_PRINT };
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "listen", required_argument, NULL, 'l' },
        { "state-dir", required_argument, NULL, 's' },
        { "workers", required_argument, NULL, 'w' },
        { "token-file", required_argument, NULL, 't' },
        { "log-level", required_argument, NULL, 'L' },
        { "set", required_argument, NULL, O_SET },
        { "print-config", no_argument, NULL, O_PRINT },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    /* Flags are collected first and applied after the file, so they win whatever their order. */
    const char *file = NULL;
    const char **over_key = calloc((size_t)argc + 1, sizeof *over_key);
    const char **over_val = calloc((size_t)argc + 1, sizeof *over_val);
    char **owned = calloc((size_t)argc + 1, sizeof *owned);
    int nover = 0, rc = 0;
    if (!over_key || !over_val || !owned) {
        rc = fail(err, n, "out of memory");
        goto out;
    }
    optind = 1;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, "c:l:s:w:t:L:Vh", opts, NULL)) != -1) {
        switch (o) {
        case 'c': file = optarg; break;
        case 'l': over_key[nover] = "listen"; over_val[nover++] = optarg; break;
        case 's': over_key[nover] = "state_dir"; over_val[nover++] = optarg; break;
        case 'w': over_key[nover] = "workers"; over_val[nover++] = optarg; break;
        case 't': over_key[nover] = "token_file"; over_val[nover++] = optarg; break;
        case 'L': over_key[nover] = "log_level"; over_val[nover++] = optarg; break;
        case O_SET: {
            char *dup = strdup(optarg), *eq = dup ? strchr(dup, '=') : NULL;
            if (!eq) {
                free(dup);
                rc = fail(err, n, "--set %s: expected KEY=VALUE", optarg);
                goto out;
            }
            *eq = 0;
            owned[nover] = dup;
            over_key[nover] = dup;
            over_val[nover++] = eq + 1;
            break;
        }
        case O_PRINT: c->print_config = 1; break;
        case 'V': printf("quantd %s\n", PACKAGE_VERSION); rc = 1; goto out;
        case 'h': usage(stdout); rc = 1; goto out;
        default:
            if (optopt)
                rc = fail(err, n, "option -%c: %s (see quantd --help)", optopt,
                          strchr("clswtL", optopt) ? "needs a value" : "unknown option");
            else
                rc = fail(err, n, "%s: unknown option or missing value (see quantd --help)",
                          argv[optind - 1]);
            goto out;
        }
    }
    if (optind < argc) {
        rc = fail(err, n, "unexpected argument '%s' (see quantd --help)", argv[optind]);
        goto out;
    }
    if (c->print_config) {
        qd_config_print(stdout);
        rc = 1;
        goto out;
    }
    if (file) {
        if ((rc = load_file(c, file, err, n)) < 0)
            goto out;
        c->config_file = strdup(file);
    }
    for (int i = 0; i < nover; i++) {
        const key *k = find_key(over_key[i]);
        if (!k) {
            rc = fail(err, n, "--set: unknown key '%s'", over_key[i]);
            goto out;
        }
        if ((rc = set_value(c, k, over_val[i], err, n)) < 0)
            goto out;
    }
    {   /* the listen address's form now, so that a typo fails before anything starts */
        const char *colon = strrchr(c->listen, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || end == colon + 1 || *end || port < 0 || port > 65535) {
            rc = fail(err, n, "listen: '%s' is not ADDR:PORT (e.g. 127.0.0.1:8080, [::1]:8080, *:8080)", c->listen);
            goto out;
        }
    }
    if (!c->state_dir[0]) {
        char *d = default_state_dir();
        if (!d) {
            rc = fail(err, n, "out of memory");
            goto out;
        }
        free(c->state_dir);
        c->state_dir = d;
    }
out:
    for (int i = 0; owned && i < nover; i++)
        free(owned[i]);
    free(owned);
    free(over_key);
    free(over_val);
    return rc;
}

void qd_config_print(FILE *f)
{
    fprintf(f, "# quantd configuration. Every key with its default; flags override this file\n"
               "# (quantd --help). Sizes take K, M, G suffixes. Generated by `quantd --print-config`.\n");
    for (size_t s = 0; s < sizeof sections / sizeof sections[0]; s++) {
        fprintf(f, "\n[%s]\n", sections[s]);
        for (int i = 0; i < NKEYS; i++) {
            const key *k = &keys[i];
            if (strcmp(k->section, sections[s]))
                continue;
            fputs("\n# ", f);
            for (const char *p = k->doc; *p; p++) {
                fputc(*p, f);
                if (*p == '\n')
                    fputs("# ", f);
            }
            if (k->type == T_INT)
                fprintf(f, "\n# (%lld to %lld)", (long long)k->min, (long long)k->max);
            fprintf(f, "\n%s = %s\n", k->name, k->type == T_STRING && !k->dflt[0] ? "" : k->dflt);
        }
    }
}

void qd_config_free(qd_config *c)
{
    for (int i = 0; i < NKEYS; i++)
        if (keys[i].type == T_STRING) {
            char **p = (char **)((char *)c + keys[i].offset);
            free(*p);
            *p = NULL;
        }
    free(c->config_file);
    c->config_file = NULL;
}

qd_server_options qd_config_server_options(const qd_config *c)
{
    return (qd_server_options){
        .listen = c->listen, .http_threads = c->http_threads, .max_connections = c->max_connections,
        .max_connections_per_ip = c->max_connections_per_ip, .token_file = c->token_file,
        .sse_keepalive = c->sse_keepalive, .web_root = c->web_root, .chartjs = c->chartjs,
        .header_timeout = c->header_timeout, .body_timeout = c->body_timeout, .body_min_rate = c->body_min_rate,
        .allowed_hosts = c->allowed_hosts, .allowed_origins = c->allowed_origins, .max_queue = c->max_queue,
        .debug_jobs = c->debug_jobs, .max_model_size = c->max_model_size, .max_dataset_size = c->max_dataset_size,
        .max_json_size = c->max_json_size,
    };
}
