/* Plumbing shared by the pipelines (engine/pipeline/, engine/quant/ptq.c, …): events with ETA,
 * opening data sets against a model's inputs, streaming accuracy, files written atomically.
 * Internal to the engine. */
#ifndef QS_PIPELINE_UTIL_H
#define QS_PIPELINE_UTIL_H

#include <jansson.h>

#include "data.h"
#include "graph.h"
#include "pipeline.h"
#include "runner.h"

double qs_now(void);   /* monotonic seconds */

/* Progress with an ETA from the stage's start time (t0). */
void qs_pl_progress(const qs_pipeline_io *io, const char *stage, double done, double total, double t0);
void qs_pl_log(const qs_pipeline_io *io, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void qs_pl_metric(const qs_pipeline_io *io, const char *name, double value);
void qs_pl_artifact(const qs_pipeline_io *io, const char *name);
int qs_pl_aborted(const qs_pipeline_io *io);

/* Inputs of a graph fed from a data set: a .npy feeds a single-input model; a .npz is keyed by
 * input name (a single-input model may also take a .npz with one array). Checks each array's
 * sample shape against the model's and that every array has the same number of samples, and
 * binds the inputs' symbolic dims to the samples' sizes (qs_graph_bind_data): open the data
 * before cloning the graph for the pipeline's stages. */
typedef struct qs_pl_data {
    qs_dataset *d;
    int arrays[16];
    int64_t rows;
} qs_pl_data;

int qs_pl_open_inputs(const char *path, const char *what, qs_graph *g, qs_pl_data *out, qs_err *e);
void qs_pl_close(qs_pl_data *d);
/* Fails with a message naming the input and sample when any of the first n samples holds NaN/Inf. */
int qs_pl_check_finite(const qs_pl_data *d, const qs_graph *g, int64_t n, const char *what, qs_err *e);

/* Class labels: a .npy (or the single array of a .npz) of N integers (or N×1). Owned int64 array. */
int qs_pl_load_labels(const char *path, int64_t expect_rows, int64_t **labels, qs_err *e);

/* Top-1 and top-5 accuracy of output 0 (logits [N, C]) over the data set; top5 < 0 when C < 5. */
typedef struct qs_pl_acc { double top1, top5; int64_t samples; double seconds; } qs_pl_acc;
int qs_pl_accuracy(qs_graph *g, const qs_pl_data *d, const int64_t *labels, int64_t batch,
                   const qs_pipeline_io *io, const char *stage, qs_pl_acc *out, qs_err *e);

/* Writes JSON / a graph to dir/name via a temp file and rename, and emits an artifact event. */
int qs_pl_write_json(const qs_pipeline_io *io, const char *name, json_t *j, qs_err *e);
int qs_pl_write_onnx(const qs_pipeline_io *io, const char *name, const qs_graph *g, qs_err *e);

#endif
