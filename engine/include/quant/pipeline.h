/* Pipelines: the jobs quantd runs (eval, ptq, analyze, qat), driven by the job spec's "config"
 * object and reporting progress through a callback. The CLI runs them locally; the daemon runs them
 * on its worker pool. A pipeline writes its artifacts into io->outdir (which must exist and be
 * empty); callers that publish artifacts atomically give a temp folder and rename it afterwards.
 *
 *   qs_pipeline_io io = { .model = "m.onnx", .calib = "x.npy", .outdir = tmp,
 *                         .config_json = "{\"weights\": {\"bits\": 4}}",
 *                         .event = on_event, .ud = job, .abort = &job->cancel };
 *   char *result = NULL;
 *   int rc = qs_pipeline_run("ptq", &io, &result, &e);   // result: {"fp32_accuracy":…, …}; free()
 *
 * Events are delivered on the calling (worker) thread; the callback must be quick and thread-safe
 * on the caller's side (the daemon queues them for its loop thread). */
#ifndef QUANT_PIPELINE_H
#define QUANT_PIPELINE_H

#include <stdatomic.h>

#include <quant/error.h>

typedef enum qs_event_type {
    QS_EV_PROGRESS,   /* stage, done, total, eta_s */
    QS_EV_LOG,        /* level, message */
    QS_EV_METRIC,     /* name, value (e.g. "fp32_accuracy") */
    QS_EV_ARTIFACT,   /* name: a file written into outdir */
} qs_event_type;

typedef struct qs_event {
    qs_event_type type;
    const char *stage;     /* PROGRESS: "calibration", "adaround conv1", … */
    double done, total, eta_s;
    const char *level;     /* LOG: "info", "warning" */
    const char *message;   /* LOG */
    const char *name;      /* METRIC, ARTIFACT */
    double value;          /* METRIC */
} qs_event;

typedef void (*qs_event_fn)(void *ud, const qs_event *ev);

typedef struct qs_pipeline_io {
    const char *model;                 /* ONNX file */
    const char *calib;                 /* .npy/.npz, unlabeled (ptq, analyze) */
    const char *train, *train_labels;  /* qat */
    const char *val, *val_labels;      /* optional: accuracy before/after; eval: the data to score */
    const char *outdir;
    const char *resume;                /* qat: a previous outdir to resume from (checkpoint) */
    const char *config_json;           /* the job spec's "config" object as JSON text (NULL = preset) */
    qs_event_fn event;
    void *ud;
    atomic_int *abort;                 /* raised → the pipeline stops with QS_EABORTED */
    int threads;                       /* 0: default */
} qs_pipeline_io;

/* type: "eval", "ptq", "analyze", "qat". *result_json (malloc'd JSON text, the caller frees it)
 * holds the figures the CLI prints with --json and the daemon stores as the job's result.
 * Unknown type → QS_EINVAL. */
int qs_pipeline_run(const char *type, const qs_pipeline_io *io, char **result_json, qs_err *e);

#endif
