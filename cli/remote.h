/* The quant command line's --server mode: run a pipeline on a quantd server instead of locally,
 * with the same inputs and the same outputs.
 *
 *   qd_remote_opts o = { .server = "http://gpu1:8080", .token = token, .interrupt = &flag };
 *   qd_remote_paths p = { .model = "m.onnx", .calib = "x.npy" };
 *   int rc = qd_remote_run(&o, "ptq", &p, config, "out", json_out);
 *
 * It uploads each file (skipped when the server already has one with the same sha256), submits
 * the job spec (../shared/DESIGN.md), follows the job's event stream with a progress bar on
 * stderr (reconnecting with Last-Event-ID if the connection drops), downloads the artifacts into
 * outdir (checked against their sha256, then put in place as a whole, replacing outdir as the
 * local pipelines do) and, when result is not NULL, hands back the job's result object (a new
 * reference, with "outdir" set to the local folder) for the caller to print as a local run would.
 * Returns an exit status: 0 the job succeeded, 1 it failed (or the server refused), 2 the spec
 * was refused (a usage error: the message names the field), 130 interrupted (the job is
 * cancelled on the server). */
#ifndef QD_REMOTE_H
#define QD_REMOTE_H

#include <jansson.h>
#include <stdatomic.h>

typedef struct qd_remote_paths {
    const char *model;                  /* ONNX file */
    const char *calib;                  /* .npy/.npz (ptq, analyze) */
    const char *train, *train_labels;   /* qat */
    const char *val, *val_labels;       /* eval; optional for the others */
} qd_remote_paths;

typedef struct qd_remote_opts {
    const char *server;     /* "http://host:8080" */
    const char *token;      /* NULL: $QUANTD_TOKEN, if set */
    atomic_int *interrupt;  /* a flag (e.g. raised by a SIGINT handler) polled while waiting: once
                               raised, the job is cancelled on the server and qd_remote_run returns
                               130; NULL: none */
    int quiet;              /* the job's stages as bars on a terminal only, never as lines (--json) */
} qd_remote_opts;

int qd_remote_run(const qd_remote_opts *o, const char *type, const qd_remote_paths *paths, json_t *config,
                  const char *outdir, json_t **result);

#endif
