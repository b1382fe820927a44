/* Test driver for cli/remote.c (the quant CLI's --server mode) until the CLI wires it in:
 *
 *   tests/qd-remote URL TYPE [--token T] [--model M] [--calib X] [--train X] [--train-labels Y]
 *                   [--val X] [--labels Y] [--config JSON] [-o OUTDIR] [--json]
 *
 * Exits with qd_remote_run's status. SIGINT raises the interrupt flag (the job is cancelled). */
#include "cli/remote.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static atomic_int stop;

static void on_sigint(int sig)
{
    (void)sig;
    atomic_store(&stop, 1);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: qd-remote URL TYPE [options]\n");
        return 2;
    }
    qd_remote_paths p = { 0 };
    const char *token = NULL, *outdir = NULL, *config = NULL;
    int json_out = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = !strcmp(a, "--token") ? &token : !strcmp(a, "--model") ? &p.model
                          : !strcmp(a, "--calib") ? &p.calib : !strcmp(a, "--train") ? &p.train
                          : !strcmp(a, "--train-labels") ? &p.train_labels : !strcmp(a, "--val") ? &p.val
                          : !strcmp(a, "--labels") ? &p.val_labels : !strcmp(a, "--config") ? &config
                          : !strcmp(a, "-o") ? &outdir : NULL;
        if (!strcmp(a, "--json")) {
            json_out = 1;
        } else if (slot && v) {
            *slot = v;
            i++;
        } else {
            fprintf(stderr, "qd-remote: bad argument %s\n", a);
            return 2;
        }
    }
    json_t *cfg = NULL;
    if (config) {
        json_error_t je;
        if (!(cfg = json_loads(config, 0, &je))) {
            fprintf(stderr, "qd-remote: --config: %s\n", je.text);
            return 2;
        }
    }
    struct sigaction sa = { .sa_handler = on_sigint };
    sigaction(SIGINT, &sa, NULL);
    qd_remote_opts o = { .server = argv[1], .token = token, .interrupt = &stop };
    json_t *result = NULL;
    int rc = qd_remote_run(&o, argv[2], &p, cfg, outdir, json_out ? &result : NULL);
    if (result) {
        json_dumpf(result, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        fputc('\n', stdout);
        json_decref(result);
    }
    json_decref(cfg);
    return rc;
}
