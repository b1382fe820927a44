/* The executor: build → plan → compute, forward and backward.
 *
 *   qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);         // borrows g (must outlive x)
 *   qs_exec_plan(x, 64, &e);                                // concrete shapes for batch 64
 *   qs_exec_set_input(x, 0, batch_tensor, &e);              // copied into the plan's buffer
 *   qs_exec_forward(x, &e);
 *   const qs_tensor *y = qs_exec_output(x, 0);              // borrowed, valid until next run
 *
 * Plan: nodes in topological order; shapes inferred for the chosen batch (the leading dim of each
 * input whose declared dim is symbolic or -1; a fixed leading dim is kept — see qs_exec_batch);
 * nodes whose inputs are all known at plan time (Shape → Gather → Concat → Reshape chains,
 * Constant) are evaluated once then and never again. In inference mode activation buffers are
 * reused once their last reader has run; in training mode every value is kept for backward.
 * An abort flag is polled between nodes; a progress callback gets (done, total) nodes. */
#ifndef QUANT_EXEC_H
#define QUANT_EXEC_H

#include <stdatomic.h>

#include <quant/graph.h>
#include <quant/tensor.h>
#include <quant/threadpool.h>

typedef struct qs_exec qs_exec;

enum { QS_EXEC_INFER = 0, QS_EXEC_TRAIN = 1 };

typedef void (*qs_progress_fn)(void *ud, int64_t done, int64_t total);

qs_exec *qs_exec_new(qs_graph *g, int mode, qs_err *e);
void qs_exec_free(qs_exec *x);

/* Concrete shapes for this batch size; must be called before running and again after the graph
 * changes. Fails with one message listing every unsupported op (type, node, opset). */
int qs_exec_plan(qs_exec *x, int64_t batch, qs_err *e);
/* The batch the plan really uses: 1 when the model fixes its batch dim to 1. */
int64_t qs_exec_batch(const qs_exec *x);

/* Checks a graph without planning: every op known for its opset, every type supported.
 * The message lists all problems, one per line. */
int qs_exec_check(const qs_graph *g, qs_err *e);

int qs_exec_set_input(qs_exec *x, int i, const qs_tensor *t, qs_err *e);  /* copies into the plan */
qs_tensor *qs_exec_input(qs_exec *x, int i);       /* the plan's buffer, to fill in place */
int qs_exec_forward(qs_exec *x, qs_err *e);
const qs_tensor *qs_exec_output(const qs_exec *x, int i);
/* Any value after a forward (training mode keeps all; inference only outputs, inputs, constants). */
const qs_tensor *qs_exec_value(const qs_exec *x, int value);
/* Multiply-accumulates of node n (a Conv, ConvTranspose, Gemm or MatMul of the default domain) at
 * the plan's batch, from the planned shapes; 0 for any other node. */
double qs_exec_node_macs(const qs_exec *x, int n);

/* Training mode: backpropagates from output grads (NULL for outputs without a loss term). After it,
 * qs_exec_grad gives d(loss)/d(value) for inputs and initializers (NULL when not reached). */
int qs_exec_backward(qs_exec *x, const qs_tensor *const *dout, qs_err *e);
const qs_tensor *qs_exec_grad(const qs_exec *x, int value);
/* Restricts which initializers get gradients (default: every float initializer). */
void qs_exec_set_trainable(qs_exec *x, int value, int on);

/* Called after each node's forward with its outputs (calibration observers, per-layer statistics);
 * the tensors are only valid during the call in inference mode. With fusion on, a fused chain makes
 * one call, for its last node with its output; the values inside the chain never exist. */
typedef void (*qs_node_fn)(void *ud, int node, qs_tensor *const *out, int nout);
void qs_exec_set_observer(qs_exec *x, qs_node_fn fn, void *ud);

void qs_exec_set_abort(qs_exec *x, atomic_int *flag);
void qs_exec_set_progress(qs_exec *x, qs_progress_fn fn, void *ud);
/* The pool the kernels' parallel loops run on (borrowed: it must outlive x's runs), split as many
 * ways as it has threads; takes effect at the next plan (scratch is sized per thread). Default:
 * NULL, everything on the calling thread. Executors on other threads may share the pool. */
void qs_exec_set_pool(qs_exec *x, qs_threadpool *tp);
/* Inference only, from the next plan: a Relu or Clip that is the only reader of a Conv,
 * ConvTranspose, Gemm or MatMul output is applied inside that kernel; for Conv, so is a residual
 * Add that is its output's only reader (the other operand, of the same shape, computed earlier),
 * and then a Relu/Clip after that Add. The values in between are never materialised
 * (qs_exec_value gives NULL for them, observers do not see them). Off by default; the runner turns
 * it on unless an observer that needs every node's output is set. */
void qs_exec_set_fusion(qs_exec *x, int on);
/* From the next plan: fusion never hides this value (an observer watches it). */
void qs_exec_keep_value(qs_exec *x, int value);
/* Peak bytes of activation and scratch memory the plan allocated (for benchmarks). */
size_t qs_exec_arena_bytes(const qs_exec *x);

#endif
