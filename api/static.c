/* The web dashboard: web/'s files at /, and Chart.js (Debian's libjs-chart.js) at /vendor/chart.js.
 *
 * The dashboard is plain HTML, CSS and JavaScript modules with hash routing (#/jobs/…), so the
 * server only hands out files: "/" is index.html, "/{file}" and "/pages/{file}" are files of the
 * web root (config key web_root), and /vendor/chart.js is the one file at config key chartjs. The
 * router's {x} matches one path segment and server.c refuses ".." segments, so a request can only
 * name a file directly in those two folders; names starting with '.' are refused as well. These
 * routes are public: the page must load before it can ask for a token, and it holds no data —
 * everything it shows comes from /v1, which keeps its auth.
 *
 * Files are sent from the descriptor with a weak validator (size and mtime) and
 * `Cache-Control: no-cache`, so an upgrade of web/ or of Chart.js is seen at the next load
 * without re-sending unchanged files. HTML goes out with a Content-Security-Policy that allows
 * nothing but this origin (no inline script, no CDN), matching how the dashboard is written. */
#include "config.h"
#include "api/api.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef QD_SRCDIR
#define QD_SRCDIR ""
#endif
#ifndef QD_WEBDIR
#define QD_WEBDIR "/usr/share/quantd/web"
#endif

/* The default web root, when web_root is empty: the source tree's web/ when this binary was
 * built in it (as for the state dir: the developer running ./quickstart), else the installed
 * copy under $(pkgdatadir). */
static char default_root[PATH_MAX];
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void find_default_root(void)
{
    char exe[PATH_MAX], src[PATH_MAX];
    const char *srcdir = QD_SRCDIR;   /* a variable: clang warns of && on a constant operand */
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    /* canonical, as /proc/self/exe is: a build configured by a re-run of ../configure has
     * abs_top_srcdir = BUILD/.. */
    if (len > 0 && srcdir[0] && realpath(srcdir, src)) {
        size_t sl = strlen(src);
        exe[len] = 0;
        if (!strncmp(exe, src, sl) && exe[sl] == '/') {
            snprintf(default_root, sizeof default_root, "%s/web", src);
            return;
        }
    }
    snprintf(default_root, sizeof default_root, "%s", QD_WEBDIR);
}

static const char *web_root(const qd_server_options *cfg)
{
    if (cfg->web_root && cfg->web_root[0])
        return cfg->web_root;
    pthread_once(&default_once, find_default_root);
    return default_root;
}

static const char *content_type(const char *path)
{
    static const struct { const char *ext, *type; } types[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },   /* module scripts need a JavaScript type */
        { ".mjs", "text/javascript; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".svg", "image/svg+xml" },
        { ".png", "image/png" },
        { ".ico", "image/x-icon" },
        { ".json", "application/json" },
        { ".txt", "text/plain; charset=utf-8" },
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

int qd_h_static(qd_req *r)
{
    const qd_server_options *cfg = &r->srv->opt;
    char path[PATH_MAX];
    const char *what;   /* for error messages: which setting names the file */
    if (!strcmp(r->url, "/vendor/chart.js")) {
        snprintf(path, sizeof path, "%s", cfg->chartjs);
        what = "chartjs";
    } else {
        /* "/" → index.html; "/app.js", "/pages/jobs.js" → the file under the web root */
        const char *rel = !strcmp(r->url, "/") ? "index.html" : r->url + 1;
        const char *base = strrchr(rel, '/');
        base = base ? base + 1 : rel;
        if (base[0] == '.' || !base[0])
            return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no such file: %s", r->url);
        if ((size_t)snprintf(path, sizeof path, "%s/%s", web_root(cfg), rel) >= sizeof path)
            return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no such file: %s", r->url);
        what = "web_root";
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        int err = fd < 0 ? errno : EISDIR;
        if (fd >= 0)
            close(fd);
        if (what[0] == 'c')
            return qd_reply_error(r, QD_E_NOT_FOUND, NULL,
                                  "Chart.js is not at %s (%s): install the Debian package libjs-chart.js "
                                  "or set the config key chartjs", path, strerror(err));
        if (!strcmp(r->url, "/"))
            return qd_reply_error(r, QD_E_NOT_FOUND, NULL,
                                  "the dashboard is not at %s (%s): set the config key web_root", path,
                                  strerror(err));
        return qd_reply_error(r, QD_E_NOT_FOUND, NULL, "no such file: %s", r->url);
    }
    char etag[64];
    snprintf(etag, sizeof etag, "W/\"%llx-%llx\"", (unsigned long long)sb.st_size,
             (unsigned long long)sb.st_mtim.tv_sec * 1000000000ull + (unsigned long long)sb.st_mtim.tv_nsec);
    const char *inm = qd_header(r, "If-None-Match");
    struct MHD_Response *resp;
    unsigned status = 200;
    if (inm && strstr(inm, etag + 2)) {   /* weak comparison: the quoted part */
        close(fd);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        status = 304;
    } else {
        resp = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
        if (!resp)
            close(fd);
    }
    if (!resp)
        return QD_H_CLOSE;
    const char *type = content_type(path);
    MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (!strncmp(type, "text/html", 9)) {
        MHD_add_response_header(resp, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                "base-uri 'none'; frame-ancestors 'none'; form-action 'self'");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    }
    return qd_reply(r, status, resp);
}
