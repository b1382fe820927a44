/* Progress bars and stage lines (progress.h). The ETA is the pipeline's own estimate where it gives
 * one (it knows when a stage's steady part began: AdaRound's iterations, after its layer inputs are
 * gathered), else the elapsed time scaled by the remaining fraction, which is what a steady batch
 * loop gives. Redraws are throttled so a fast loop does not spend its time writing to the
 * terminal, and stage lines come at most once a minute so a log stays readable for a job of hours. */
#include "cli/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum { SHOW_NONE, SHOW_BAR, SHOW_LINES };
enum { LINE_EVERY_S = 60 };

struct cli_progress {
    int mode;
    char label[128], who[32];
    double start, last_draw;
    int64_t done, total;
    double eta;                  /* the caller's estimate of the time left; < 0: none */
    int width, drawn;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* What to show: QUANT_PROGRESS if set, else a bar on a terminal and lines (where the caller
 * accepts them) elsewhere. */
static int show_mode(void)
{
    const char *force = getenv("QUANT_PROGRESS");
    if (force && *force) {
        if (!strcmp(force, "0"))
            return SHOW_NONE;
        return !strcmp(force, "lines") ? SHOW_LINES : SHOW_BAR;
    }
    return isatty(STDERR_FILENO) ? SHOW_BAR : SHOW_LINES;
}

static cli_progress *make(int mode, const char *who, const char *label)
{
    cli_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->mode = mode;
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->who, sizeof p->who, "%s", who ? who : "quant");
    p->start = now();
    p->last_draw = -1;
    p->done = p->total = -1;
    struct winsize ws;
    p->width = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40 ? ws.ws_col : 80;
    return p;
}

cli_progress *cli_progress_new(const char *label)
{
    return show_mode() == SHOW_BAR ? make(SHOW_BAR, NULL, label) : NULL;
}

cli_progress *cli_progress_stage(const char *who, const char *stage)
{
    int mode = show_mode();
    return mode == SHOW_NONE ? NULL : make(mode, who, stage);
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

/* the time left: the caller's estimate, else the elapsed time scaled by the remaining fraction */
static double eta(const cli_progress *p, double el, double frac)
{
    return p->eta >= 0 ? p->eta : el * (1 - frac) / frac;
}

static void draw_bar(cli_progress *p, double t)
{
    double frac = p->total > 0 ? (double)p->done / p->total : 0, el = t - p->start;
    char tail[96], e1[16], e2[16] = "";
    fmt_time(e1, sizeof e1, el);
    if (frac > 0 && p->done < p->total) {
        fmt_time(e2, sizeof e2, eta(p, el, frac));
        snprintf(tail, sizeof tail, " %3d%%  %lld/%lld  %s  eta %s", (int)(frac * 100), (long long)p->done,
                 (long long)p->total, e1, e2);
    } else {
        snprintf(tail, sizeof tail, " %3d%%  %lld/%lld  %s", (int)(frac * 100), (long long)p->done,
                 (long long)p->total, e1);
    }
    int llen = (int)strlen(p->label), lmax = p->width - 2 - (int)strlen(tail);   /* one row, or \r fails */
    if (llen > lmax)
        llen = lmax > 8 ? lmax : 8;
    int bar = p->width - 1 - llen - 3 - (int)strlen(tail);
    if (bar > 40)
        bar = 40;
    char line[512];
    int k = snprintf(line, sizeof line, "\r%.*s ", llen, p->label);
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
    p->drawn = 1;
}

/* "started, total 800" / "45% (4500/10000), 1m00s, eta 1m13s" */
static void print_line(cli_progress *p, double t, int first)
{
    char e1[16], e2[16];
    double el = t - p->start;
    if (first) {
        fprintf(stderr, "%s: %s: started, total %lld\n", p->who, p->label, (long long)p->total);
    } else {
        double frac = p->total > 0 ? (double)p->done / p->total : 0;
        fmt_time(e1, sizeof e1, el);
        fmt_time(e2, sizeof e2, frac > 0 ? eta(p, el, frac) : 0);
        fprintf(stderr, "%s: %s: %d%% (%lld/%lld), %s, eta %s\n", p->who, p->label, (int)(frac * 100),
                (long long)p->done, (long long)p->total, e1, frac > 0 ? e2 : "?");
    }
    fflush(stderr);
}

void cli_progress_update(cli_progress *p, int64_t done, int64_t total) { cli_progress_update_eta(p, done, total, -1); }

void cli_progress_update_eta(cli_progress *p, int64_t done, int64_t total, double eta_s)
{
    if (!p)
        return;
    p->eta = eta_s;
    double t = now();
    int first = p->total < 0;
    p->done = done;
    p->total = total;
    if (p->mode == SHOW_LINES) {
        if (first || (t - p->last_draw >= LINE_EVERY_S && done < total)) {   /* the end has its own line */
            print_line(p, t, first);
            p->last_draw = t;
        }
        return;
    }
    if (p->last_draw >= 0 && t - p->last_draw < 0.1 && done < total)
        return;
    p->last_draw = t;
    draw_bar(p, t);
}

void cli_progress_cb(void *ud, int64_t done, int64_t total) { cli_progress_update(ud, done, total); }

void cli_progress_clear(cli_progress *p)
{
    if (!p || p->mode != SHOW_BAR || !p->drawn)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->drawn = 0;
    p->last_draw = -1;   /* the next update redraws at once */
}

void cli_progress_end(cli_progress *p)
{
    if (!p)
        return;
    if (p->mode == SHOW_BAR) {
        cli_progress_clear(p);
    } else if (p->total >= 0) {
        char e1[16], at[64] = "";
        fmt_time(e1, sizeof e1, now() - p->start);
        if (p->done < p->total)   /* a stage may end early (a converged optimisation) or fail */
            snprintf(at, sizeof at, " at %lld/%lld", (long long)p->done, (long long)p->total);
        fprintf(stderr, "%s: %s: ended%s after %s\n", p->who, p->label, at, e1);
        fflush(stderr);
    }
    free(p);
}

/* ---- a pipeline's stages ------------------------------------------------------------------------ */

void cli_stages_update(cli_stages *s, const char *stage, double done, double total, double eta_s)
{
    if (strcmp(s->stage, stage) || done < s->done || !s->stage[0]) {
        cli_stages_end(s);
        snprintf(s->stage, sizeof s->stage, "%s", stage);
        s->bar = s->quiet ? cli_progress_new(stage) : cli_progress_stage(s->who, stage);
    } else if (s->ended) {
        return;   /* a finished stage's last count again */
    }
    s->done = done;
    cli_progress_update_eta(s->bar, (int64_t)done, (int64_t)total, eta_s);
    if (total > 0 && done >= total) {
        cli_progress_end(s->bar);
        s->bar = NULL;
        s->ended = 1;
    }
}

void cli_stages_clear(cli_stages *s) { cli_progress_clear(s->bar); }

void cli_stages_end(cli_stages *s)
{
    cli_progress_end(s->bar);
    s->bar = NULL;
    s->stage[0] = 0;
    s->done = 0;
    s->ended = 0;
}
