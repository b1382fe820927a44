/* The runner: a graph over N samples in batches, hiding the executor's batch handling.
 *
 *   qs_runner *r = qs_runner_new(g, 32, &e);               // borrows g; plans for batch 32
 *   qs_tensor *out[1];
 *   qs_runner_run(r, inputs, out, progress, ud, &abort, &e); // inputs: N rows each; out: N rows, owned
 *   qs_runner_free(r);
 *
 * Inputs may be of any numeric type; rows are converted to each graph input's type as they are
 * copied into the plan. A model that fixes its batch dim (qs_exec_batch) runs that many samples at
 * a time; one that cannot be planned for the batch asked for but can for one sample (a Reshape with
 * the batch baked in, or too little memory) runs one at a time. The last partial batch runs on a
 * second, smaller plan (or, for a fixed batch, zero-padded with the padding rows dropped), so
 * outputs are exact and never depend on the batch size.
 *
 * The streaming form reads samples from a data set in batches and hands each output batch to a
 * callback, so neither the inputs nor the outputs need to fit in memory:
 *
 *   int arrays[] = { qs_dataset_find(d, "input") };       // one data set array per graph input
 *   qs_runner_stream(r, d, arrays, 0, -1, on_batch, ud, NULL, NULL, NULL, &e);
 */
#ifndef QUANT_RUNNER_H
#define QUANT_RUNNER_H

#include <stdatomic.h>

#include <quant/data.h>
#include <quant/exec.h>
#include <quant/graph.h>

typedef struct qs_runner qs_runner;

/* Called (when not NULL: an observer may be all a caller needs) once per batch with rows [start, start+n) of every graph output (borrowed, shape [n, …],
 * valid until the callback returns) and the executor that produced them (for qs_exec_value; its
 * values may hold padding rows beyond n). A negative return stops the run with that code. */
typedef int (*qs_runner_sink)(void *ud, int64_t start, int64_t n, const qs_tensor *const *outputs,
                              qs_exec *x, qs_err *e);

/* Arena bytes a runner's plan may take by default: a larger batch is lowered to fit. */
#define QS_RUNNER_ARENA_BUDGET ((size_t)512 << 20)

qs_runner *qs_runner_new(qs_graph *g, int64_t batch, qs_err *e);
void qs_runner_free(qs_runner *r);
/* Re-plans after the graph changed (nodes or initializers replaced). */
int qs_runner_plan(qs_runner *r, qs_err *e);
/* Samples per forward pass: the batch asked for (lowered to fit the arena budget), or the model's
 * fixed batch. */
int64_t qs_runner_batch(const qs_runner *r);
/* Sets the arena budget (0: none) and re-plans. */
int qs_runner_set_arena_budget(qs_runner *r, size_t bytes, qs_err *e);
/* The pool the kernels run on (borrowed; see qs_exec_set_pool). Default: NULL, the calling thread. */
void qs_runner_set_pool(qs_runner *r, qs_threadpool *tp);
/* Per-node observer on every plan the runner uses (see qs_exec_set_observer). Padding rows of a
 * fixed-batch model are visible to it. */
void qs_runner_set_observer(qs_runner *r, qs_node_fn fn, void *ud);
/* The same, keeping Relu/Clip fusion (see qs_exec_set_fusion): for observers that only need values
 * fusion keeps (qs_exec_value is not NULL for them), such as the outputs of fused groups. Cheaper:
 * the activation is applied inside the producer instead of in a pass of its own. */
void qs_runner_set_observer_fused(qs_runner *r, qs_node_fn fn, void *ud);
/* Keeps a value from being fused away on every plan (qs_exec_keep_value), from the next plan on
 * (qs_runner_plan re-plans). -1 when out of memory. */
int qs_runner_keep_value(qs_runner *r, int value);
/* The main plan (batch qs_runner_batch): shapes of every value, arena size. */
qs_exec *qs_runner_exec(qs_runner *r);

/* inputs[qs_graph_input_count(g)]: tensors with N rows each. outputs[qs_graph_output_count(g)]: filled with new tensors of N
 * rows (the caller frees them; NULL on failure). progress gets (samples done, N) after each batch;
 * abort (may be NULL) is polled between nodes and batches. */
int qs_runner_run(qs_runner *r, const qs_tensor *const *inputs, qs_tensor **outputs, qs_progress_fn progress,
                  void *progress_ud, atomic_int *abort, qs_err *e);

/* arrays[qs_graph_input_count(g)]: the data set array feeding each graph input. Runs samples [start, start+count)
 * (count < 0: to the end) and calls sink per batch. */
int qs_runner_stream(qs_runner *r, const qs_dataset *d, const int *arrays, int64_t start, int64_t count,
                     qs_runner_sink sink, void *sink_ud, qs_progress_fn progress, void *progress_ud,
                     atomic_int *abort, qs_err *e);

#endif
