/* The terminal progress bar: "label [#######.......]  45%  4500/10000  1.2s  eta 1.5s".
 * The ETA is the elapsed time scaled by the remaining fraction, which is what a steady batch loop
 * gives; redraws are throttled so a fast loop does not spend its time writing to the terminal. */
#include "cli/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct cli_progress {
    char label[32];
    double start, last_draw;
    int width;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

cli_progress *cli_progress_new(const char *label)
{
    const char *force = getenv("QUANT_PROGRESS");
    int on = force && *force ? strcmp(force, "0") != 0 : isatty(STDERR_FILENO);
    if (!on)
        return NULL;
    cli_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->start = now();
    p->last_draw = -1;
    struct winsize ws;
    p->width = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40 ? ws.ws_col : 80;
    return p;
}

static void fmt_time(char *buf, size_t n, double s)
{
    if (s < 60)
        snprintf(buf, n, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

void cli_progress_update(cli_progress *p, int64_t done, int64_t total)
{
    if (!p)
        return;
    double t = now();
    if (p->last_draw >= 0 && t - p->last_draw < 0.1 && done < total)
        return;
    p->last_draw = t;
    double frac = total > 0 ? (double)done / total : 0, el = t - p->start;
    char tail[96], e1[16], e2[16] = "";
    fmt_time(e1, sizeof e1, el);
    if (frac > 0 && done < total) {
        fmt_time(e2 + 0, sizeof e2, el * (1 - frac) / frac);
        snprintf(tail, sizeof tail, " %3d%%  %lld/%lld  %s  eta %s", (int)(frac * 100), (long long)done,
                 (long long)total, e1, e2);
    } else {
        snprintf(tail, sizeof tail, " %3d%%  %lld/%lld  %s", (int)(frac * 100), (long long)done, (long long)total, e1);
    }
    int bar = p->width - 1 - (int)strlen(p->label) - 3 - (int)strlen(tail);
    if (bar > 40)
        bar = 40;
    char line[512];
    int k = snprintf(line, sizeof line, "\r%s ", p->label);
    if (bar >= 10) {
        int fill = (int)(frac * bar);
        line[k++] = '[';
        for (int i = 0; i < bar; i++)
            line[k++] = i < fill ? '#' : '.';
        line[k++] = ']';
    }
    snprintf(line + k, sizeof line - k, "%s\033[K", tail);
    fputs(line, stderr);
    fflush(stderr);
}

void cli_progress_cb(void *ud, int64_t done, int64_t total) { cli_progress_update(ud, done, total); }

void cli_progress_end(cli_progress *p)
{
    if (!p)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    free(p);
}
