/* Fuzz harness: in-process HTTP request handling (api/).
 *
 * The real server (qd_server over a store and a scheduler in a temp state dir) listens on
 * 127.0.0.1:<any port> inside this process. Each input is sent as the raw bytes of one client
 * connection; the harness then half-closes it and reads until the server closes. It checks that
 *   - nothing crashes (ASan/UBSan watch the server's threads too),
 *   - the connection ends: the server answers or closes within a bound (no hang; the harness
 *     stops reading once the whole input is sent and a reply framed by its Content-Length is in,
 *     or 100 ms after the last reply bytes otherwise),
 *   - what comes back is HTTP: a status line, and a JSON body (with its Content-Length) that
 *     parses — the error replies quote client bytes and must stay valid JSON (UTF-8),
 *   - a complete bodiless GET gets a reply.
 * Timeouts are short (header_timeout = body_timeout = 1 s) so that an input holding a connection
 * open ends quickly; limits are small so that uploads stay cheap. */
#include "config.h"
#include "api/server.h"
#include "daemon/conf.h"
#include "common/log.h"
#include "jobs/scheduler.h"
#include "jobs/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MAX (1 << 20)
#define HANG_MS 8000   /* well above header_timeout + body_timeout + the reaper's tick */

static int port;

/* Every failure names itself: the run script shows these lines, not only libFuzzer's "deadly signal". */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    int err = errno;
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz-http: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (errno %d: %s)\n", err, strerror(err));
    abort();
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void start_server(void)
{
    static char dir[] = "/tmp/fuzz-http-XXXXXX";
    if (!mkdtemp(dir))
        die("cannot make the state dir %s", dir);
    char *argv[] = { "fuzz-http", "--listen", "127.0.0.1:0", "--state-dir", dir, "--log-level", "error",
                     "--set", "header_timeout=1", "--set", "body_timeout=1",
                     "--set", "max_model_size=64K", "--set", "max_dataset_size=64K", "--set", "max_json_size=16K",
                     "--set", "max_connections_per_ip=0", NULL };
    static qd_config cfg;
    char err[512], addr[128];
    if (qd_config_load(&cfg, (int)(sizeof argv / sizeof argv[0]) - 1, argv, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz-http: %s\n", err);
        abort();
    }
    qd_log_init(cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    qd_store *st;
    qd_server *srv;
    qd_server_options so_http = qd_config_server_options(&cfg);
    qd_sched *sched;
    if (qd_store_open(cfg.state_dir, &st, err, sizeof err) < 0 || !(srv = qd_server_new(&so_http, st, err, sizeof err))) {
        fprintf(stderr, "fuzz-http: %s\n", err);
        abort();
    }
    qd_sched_opts so = { .workers = 1, .max_queue = 4, .notify = qd_server_notify, .ud = srv };
    if (qd_server_bind(srv, addr, sizeof addr, err, sizeof err) < 0 || qd_sched_start(st, &so, &sched, err, sizeof err) < 0 ||
        qd_server_listen(srv, sched, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz-http: %s\n", err);
        abort();
    }
    port = atoi(strrchr(addr, ':') + 1);
    /* the server lives as long as the process: libFuzzer never returns from its loop */
}

static const char *find(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle));
}

/* Whether buf holds a whole reply framed by its Content-Length (then nothing more is waited for). */
static int reply_framed(const char *buf, size_t n)
{
    const char *end = find(buf, n, "\r\n\r\n");
    if (!end)
        return 0;
    const char *cl = find(buf, (size_t)(end - buf), "\r\nContent-Length: ");
    return cl && (size_t)(end + 4 - buf) + strtoul(cl + 18, NULL, 10) <= n;
}

/* Sends data and reads the reply into buf; returns its length. Aborts on a hang. */
static size_t exchange(const uint8_t *data, size_t size, char *buf, size_t cap, int must_reply)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS))
        die("cannot connect to the server on port %d", port);
    size_t sent = 0, got = 0;
    int wr_open = 1;
    double t0 = now_ms(), last_rx = 0, all_sent = 0;
    for (;;) {
        /* replied, all sent, and quiet: done. (libmicrohttpd may notice the half-close only at
         * the next deadline, which is no bug of the request and would slow the fuzzing down.) */
        if (!wr_open && got && (reply_framed(buf, got) || now_ms() - last_rx > 100))
            break;
        /* Nothing back 50 ms after an input that needs no answer yet (an unfinished request):
         * libmicrohttpd notices a client's half-close only at the header deadline, and waiting
         * for that 408 (tests/py/test_http_abuse.py checks it) would cut the rate to a few a
         * second. */
        if (!wr_open && !got && !must_reply && now_ms() - all_sent > 50)
            break;
        if (now_ms() - t0 > HANG_MS) {
            fprintf(stderr, "fuzz-http: no reply and no close after %d ms (sent %zu of %zu bytes)\n", HANG_MS,
                    sent, size);
            abort();
        }
        struct pollfd p = { .fd = fd, .events = POLLIN | (wr_open ? POLLOUT : 0) };
        if (poll(&p, 1, 100) < 0 && errno != EINTR)
            die("poll failed");
        if (wr_open && (p.revents & POLLOUT)) {
            ssize_t w = sent < size ? send(fd, data + sent, size - sent, MSG_NOSIGNAL) : 0;
            if (w > 0)
                sent += (size_t)w;
            if (sent == size || (w < 0 && errno != EAGAIN && errno != EINTR)) {
                shutdown(fd, SHUT_WR);   /* the whole input is one connection's bytes */
                wr_open = 0;
                all_sent = now_ms();
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            char tmp[16384];
            ssize_t r = recv(fd, tmp, sizeof tmp, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break;   /* closed (or reset) by the server */
            if (r > 0) {
                size_t k = (size_t)r < cap - got ? (size_t)r : cap - got;
                memcpy(buf + got, tmp, k);
                got += k;
                last_rx = now_ms();
            }
        }
    }
    close(fd);
    return got;
}

/* Checks every reply in buf (a kept-alive connection may carry several). A reply to HEAD has the
 * Content-Length of the GET reply but no body, and the harness does not parse which request each
 * reply answers: when the input holds a HEAD, a "body" that starts with a status line is the next
 * reply (a JSON body never starts so). */
static void check_replies(const char *buf, size_t n, int has_head)
{
    for (int first = 1; n; first = 0) {
        /* libmicrohttpd 0.9.75 itself sends the header block of its 400 for a malformed
         * Content-Length twice: only the first reply's start is held to the rule */
        if (!first && (n < 12 || memcmp(buf, "HTTP/1.", 7)))
            return;
        /* (a later reply may also be cut short: the harness stops reading once the first is in
         * and the input is sent, whatever of the next has arrived by then) */
        if (n < 12 || memcmp(buf, "HTTP/1.", 7)) {
            fprintf(stderr, "fuzz-http: not an HTTP reply: %.*s\n", (int)(n < 80 ? n : 80), buf);
            abort();
        }
        const char *end = find(buf, n, "\r\n\r\n");
        if (!end)
            return;   /* cut off (the reply buffer's cap) */
        size_t head = (size_t)(end + 4 - buf);
        const char *cl = NULL, *json = NULL;
        for (const char *l = buf; l < end; l = (const char *)memchr(l, '\n', (size_t)(end - l)) + 1) {
            if (!strncasecmp(l, "Content-Length:", 15))
                cl = l + 15;
            if (!strncasecmp(l, "Content-Type: application/json", 30))
                json = l;
            if (!memchr(l, '\n', (size_t)(end - l)))
                break;
        }
        if (!cl)
            return;   /* chunked (an event stream) or no body: nothing more to frame */
        size_t len = strtoul(cl, NULL, 10);
        if (has_head && n - head >= 7 && !memcmp(buf + head, "HTTP/1.", 7)) {
            buf += head;   /* a HEAD's reply, with another reply pipelined behind it */
            n -= head;
            continue;
        }
        if (head + len > n)
            return;   /* HEAD, or cut off */
        if (json && len) {
            json_error_t e;
            json_t *j = json_loadb(buf + head, len, 0, &e);
            if (!j) {
                fprintf(stderr, "fuzz-http: reply body is not JSON (%s): %.*s\n", e.text, (int)len, buf + head);
                abort();
            }
            json_decref(j);
        }
        buf += head + len;
        n -= head + len;
    }
}

/* A complete GET without a body, in plain ASCII lines: libmicrohttpd or quantd must answer it. */
static int simple_get(const uint8_t *d, size_t n)
{
    const char *s = (const char *)d;
    const char *end = find(s, n, "\r\n\r\n");
    if (n < 16 || memcmp(s, "GET /", 5) || !end || (size_t)(end + 4 - s) != n)
        return 0;
    for (const char *p = s; p < end; p++)
        if ((unsigned char)*p < 0x20 && *p != '\r' && *p != '\n')
            return 0;
        else if ((unsigned char)*p >= 0x7f)
            return 0;
    return find(s, n, " HTTP/1.1\r\n") && !find(s, n, "\r\n\r\n\r") && !find(s, n, "ength:") &&
           !find(s, n, "ncoding:") && !find(s, n, "xpect:") && !find(s, n, "\n ") && !find(s, n, "\n\t");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *buf;
    if (!port) {
        start_server();
        buf = malloc(REPLY_MAX);
        if (!buf)
            die("out of memory");
    }
    int must_reply = simple_get(data, size);
    size_t n = exchange(data, size, buf, REPLY_MAX, must_reply);
    check_replies(buf, n, find((const char *)data, size, "HEAD ") != NULL);
    if (!n && must_reply) {
        fprintf(stderr, "fuzz-http: a complete GET got no reply\n");
        abort();
    }
    return 0;
}
