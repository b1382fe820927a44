/* The quant command line's shared pieces: messages, option parsing, the interrupt flag and the
 * --server options; see cli.h. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include <quant/quant.h>

atomic_int interrupted;
qd_remote_opts cli_remote = { .interrupt = &interrupted };

static void on_interrupt(int sig)
{
    atomic_store(&interrupted, sig);
}

/* SIGINT (Ctrl-C), SIGTERM (kill, systemd, CI timeouts) and SIGHUP (the terminal went away) all
 * raise the abort flag, so the run stops at the engine's next poll and removes its temp output. */
void catch_interrupts(void)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESETHAND;   /* the second signal kills */
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
}

int usage_error(const command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "quant %s: ", c->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\nSee 'quant help %s'.\n", c->usage, c->name);
    return EXIT_USAGE;
}

int fail(const command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "quant %s: ", c->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAIL;
}

/* An engine failure: aborted by Ctrl-C (or SIGTERM, SIGHUP) → 130, otherwise the engine's message → 1. */
int engine_fail(const command *c, int rc, const qs_err *e)
{
    if (rc == QS_EABORTED && atomic_load(&interrupted)) {
        int sig = atomic_load(&interrupted);
        fprintf(stderr, "quant %s: interrupted (%s)\n", c->name,
                sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "SIGINT");
        return EXIT_INTERRUPTED;
    }
    return fail(c, "%s", e->msg[0] ? e->msg : qs_strerror(rc));
}

void cli_print_help(const command *c)
{
    printf("usage: %s\n\n%s\n", c->usage, c->help);
    if (c->help_more)
        c->help_more();
}

/* Fills options and up to maxpos positionals. Returns PARSED, or an exit status (help, usage). */
int parse_args(const command *c, int argc, char **argv, const opt *opts, const char **pos, int maxpos,
                      int *npos)
{
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_print_help(c);
            return EXIT_OK;
        }
        if (a[0] != '-' || !a[1]) {
            if (*npos == maxpos)
                return usage_error(c, "unexpected argument '%s'", a);
            pos[(*npos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const opt *o = NULL;
        for (const opt *p = opts; p->name; p++)
            if (strlen(p->name) == len && !strncmp(p->name, a, len))
                o = p;
        if (!o)
            return usage_error(c, "unknown option '%.*s'", (int)len, a);
        if (o->flag) {
            if (eq)
                return usage_error(c, "option %s takes no value", o->name);
            *o->flag = 1;
            continue;
        }
        if (!eq && i + 1 >= argc)
            return usage_error(c, "option %s needs a value", o->name);
        const char *v = eq ? eq + 1 : argv[++i];
        if (o->count) {
            if (*o->count == CLI_OPT_MAX)
                return usage_error(c, "option %s given more than %d times", o->name, CLI_OPT_MAX);
            o->val[(*o->count)++] = v;
        } else {
            *o->val = v;
        }
    }
    return PARSED;
}

/* An integer option in [lo, hi]; NULL keeps the default. Returns PARSED or EXIT_USAGE. */
int int_opt(const command *c, const char *name, const char *s, int64_t lo, int64_t hi, int64_t *v)
{
    if (!s)
        return PARSED;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi)
        return usage_error(c, "%s must be an integer from %lld to %lld, not '%s'", name, (long long)lo,
                           (long long)hi, s);
    *v = x;
    return PARSED;
}

void print_json(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    fputc('\n', stdout);
    json_decref(j);
}


int cli_bind_shapes(const command *c, qs_graph *g, const char *const *shapes, int n)
{
    for (int i = 0; i < n; i++) {
        qs_err e = {0};
        if (qs_graph_bind_text(g, shapes[i], &e) < 0)
            return fail(c, "--input-shape: %s", e.msg);
    }
    return EXIT_OK;
}

int cli_shapes_to_cfg(const command *c, json_t *cfg, const char *const *shapes, int n)
{
    if (!n)
        return EXIT_OK;
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        char name[256];
        int64_t dims[QS_MAX_DIMS];
        int nd;
        qs_err e = {0};
        if (qs_shape_parse(shapes[i], name, sizeof name, &nd, dims, &e) < 0) {
            json_decref(o);
            return usage_error(c, "%s", e.msg);
        }
        json_t *a = json_array();
        for (int d = 0; d < nd; d++)
            json_array_append_new(a, json_integer(dims[d]));
        json_object_set_new(o, name, a);
    }
    json_object_set_new(cfg, "input_shapes", o);
    return EXIT_OK;
}
