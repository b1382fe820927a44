/* A model as the engine holds it: values (named tensors: graph inputs, initializers, node outputs)
 * and nodes (an op reading and writing values), behind an opaque handle. qs_onnx_load makes one;
 * these functions read it.
 *
 *   for (int i = 0; i < qs_graph_input_count(g); i++) {
 *       int v = qs_graph_input(g, i);                       // a value id
 *       printf("%s %s\n", qs_graph_value_name(g, v), qs_dtype_name(qs_graph_value_dtype(g, v)));
 *   }
 *   for (int n = 0; n < qs_graph_node_count(g); n++) puts(qs_graph_node_op(g, n));
 *
 * Ids are indices: values 0 … qs_graph_value_count(g)-1, nodes 0 … qs_graph_node_count(g)-1 (in
 * topological order after import). Strings and tensors returned are borrowed from the graph. An id
 * out of range is a programmer error (the library aborts). */
#ifndef QUANT_GRAPH_H
#define QUANT_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include <quant/error.h>
#include <quant/tensor.h>

typedef struct qs_graph qs_graph;

void qs_graph_free(qs_graph *g);
qs_graph *qs_graph_clone(const qs_graph *g);   /* deep copy, initializers included; NULL on OOM */

/* The model's metadata (NULL when the file had none). */
const char *qs_graph_name(const qs_graph *g);
const char *qs_graph_producer_name(const qs_graph *g);
const char *qs_graph_producer_version(const qs_graph *g);
int64_t qs_graph_ir_version(const qs_graph *g);
/* Opset imports: the version for a domain ("" is ONNX's default domain; 0 when not imported), or
 * the i-th import. */
int64_t qs_graph_opset(const qs_graph *g, const char *domain);
int qs_graph_opset_count(const qs_graph *g);
const char *qs_graph_opset_domain(const qs_graph *g, int i);
int64_t qs_graph_opset_version(const qs_graph *g, int i);

/* Runtime inputs (initializers excluded) and outputs, as value ids. */
int qs_graph_input_count(const qs_graph *g);
int qs_graph_input(const qs_graph *g, int i);
int qs_graph_output_count(const qs_graph *g);
int qs_graph_output(const qs_graph *g, int i);

/* Values: name, declared type and shape; the initializer's data for weights (NULL otherwise). */
int qs_graph_value_count(const qs_graph *g);
int qs_graph_find_value(const qs_graph *g, const char *name);   /* -1 if absent */
const char *qs_graph_value_name(const qs_graph *g, int v);
qs_dtype qs_graph_value_dtype(const qs_graph *g, int v);       /* QS_UNDEFINED when unknown */
int qs_graph_value_ndim(const qs_graph *g, int v);             /* -1 when the rank is unknown */
int64_t qs_graph_value_dim(const qs_graph *g, int v, int d);   /* -1 where symbolic or unknown */
const char *qs_graph_value_dim_param(const qs_graph *g, int v, int d);   /* "batch", or NULL */
const qs_tensor *qs_graph_value_init(const qs_graph *g, int v);
/* Parameters: the elements of all floating-point initializers (int64 shape constants are not). */
int64_t qs_graph_param_count(const qs_graph *g);

/* Input shapes: a model input declared [N, 3, 48, W] runs with its leading dim as the batch and its
 * other symbolic dims at sizes given here (the declaration, and so an export, stays symbolic).
 * dims has the input's rank; the leading dim is checked only where the model fixes it. A size that
 * contradicts a fixed dim or an earlier binding is an error naming the input, dim, expected and got.
 *   qs_graph_bind_text(g, "x=1x3x48x192", &e);               // quant's --input-shape
 *   qs_graph_bind_data(g, 0, data_array, "calibration", &e);  // the samples of [N, 3, 48, 192] data
 * qs_graph_unbound_dims: how many symbolic non-leading dims have no size yet (listed into msg). */
int qs_graph_bind_input(qs_graph *g, const char *name, int ndim, const int64_t *dims, qs_err *e);
int qs_graph_bind_text(qs_graph *g, const char *text, qs_err *e);
/* "x=1x3x48x192" → name (cut to nname), ndim, dims[QS_MAX_DIMS] */
int qs_shape_parse(const char *text, char *name, size_t nname, int *ndim, int64_t *dims, qs_err *e);
int qs_graph_bind_data(qs_graph *g, int input, const qs_tensor *data, const char *what, qs_err *e);
int qs_graph_unbound_dims(const qs_graph *g, char *msg, size_t n);

/* Nodes: op type, name, domain ("" for ONNX's own ops), inputs and outputs as value ids (an
 * omitted optional input is -1), and integer attributes (dflt when absent). */
int qs_graph_node_count(const qs_graph *g);
const char *qs_graph_node_op(const qs_graph *g, int n);
const char *qs_graph_node_name(const qs_graph *g, int n);
const char *qs_graph_node_domain(const qs_graph *g, int n);
int qs_graph_node_input_count(const qs_graph *g, int n);
int qs_graph_node_input(const qs_graph *g, int n, int i);
int qs_graph_node_output_count(const qs_graph *g, int n);
int qs_graph_node_output(const qs_graph *g, int n, int i);
int64_t qs_graph_node_int(const qs_graph *g, int n, const char *attr, int64_t dflt);

#endif
