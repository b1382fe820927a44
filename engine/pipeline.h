/* Pipelines: the jobs quantd runs (eval, ptq, analyze, qat), driven by the job spec's JSON and
 * reporting progress through a callback. The CLI runs them locally; the daemon runs them on its
 * worker pool. One table of job types (engine/pipeline/types.c) names each type's driver (one
 * file each in engine/pipeline/, calling down into engine/quant/) and whether it resumes. A
 * pipeline writes its artifacts into io->outdir (which must exist and be empty); callers that
 * publish artifacts atomically give a temp folder and rename it afterwards.
 *
 *   qs_pipeline_io io = { .model = "m.onnx", .calib = "x.npy", .outdir = tmp, .config = cfg,
 *                         .event = on_event, .ud = job, .abort = &job->cancel };
 *   json_t *result = NULL;
 *   int rc = qs_pipeline_run("ptq", &io, &result, &e);   // result: {"fp32_accuracy":…, …}
 *
 * Several pipelines may run at once on one pool (the daemon hands every job the same one).
 * Events are delivered on the calling (worker) thread; the callback must be quick and thread-safe
 * on the caller's side (the daemon queues them for its loop thread). */
#ifndef QS_PIPELINE_H
#define QS_PIPELINE_H

#include <jansson.h>
#include <stdatomic.h>

#include "error.h"
#include "threadpool.h"

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
    json_t *config;                    /* the job spec's "config" object (borrowed; NULL = preset) */
    qs_event_fn event;
    void *ud;
    atomic_int *abort;                 /* raised → the pipeline stops with QS_EABORTED */
    qs_threadpool *pool;               /* the kernels' threads (borrowed; NULL: the run makes its own
                                          pool of qs_threadpool_default_size() threads) */
} qs_pipeline_io;

/* type: "eval", "ptq", "analyze", "qat". *result (new reference) holds the figures the CLI prints
 * with --json and the daemon stores as the job's result. Unknown type → QS_EINVAL. */
int qs_pipeline_run(const char *type, const qs_pipeline_io *io, json_t **result, qs_err *e);

/* A job type: its driver, and whether an interrupted run continues from its last output, given as
 * io->resume (qat: from its checkpoint) rather than starting over. A service may keep job types of
 * its own in the same shape (quantd's test-only jobs/debug_jobs.c). */
typedef struct qs_pipeline_type {
    const char *name;
    int (*run)(const qs_pipeline_io *io, json_t **result, qs_err *e);   /* *result as qs_pipeline_run's */
    int resumable;
} qs_pipeline_type;

/* The engine's job types, ended by an entry whose name is NULL. */
const qs_pipeline_type *qs_pipeline_types(void);
/* The entry of type name in table (NULL: the engine's); NULL when there is none. */
const qs_pipeline_type *qs_pipeline_find(const qs_pipeline_type *table, const char *name);

#endif
