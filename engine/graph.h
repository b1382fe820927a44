/* The graph IR: values (named tensors: graph inputs, initializers, node outputs) and nodes (an op
 * with attributes, reading and writing values by id). Import builds it, passes rewrite it, the
 * executor plans and runs it, export writes it back.
 *
 *   qs_graph *g = qs_graph_new();
 *   int x = qs_graph_value(g, "x"), y = qs_graph_value(g, "y");
 *   int n = qs_graph_add_node(g, "Relu", "relu0", 1, &x, 1, &y);
 *   qs_graph_set_inputs/outputs(...); qs_graph_toposort(g, &e);
 *
 * Inside the engine the structs are open: passes and kernels read fields directly. Outside code
 * sees an opaque qs_graph and the accessors of <quant/graph.h> (graph_access.c). Node ids are
 * indices into g->nodes and change when nodes are removed (qs_graph_remove_nodes); value ids
 * never change. */
#ifndef QS_GRAPH_H
#define QS_GRAPH_H

#include <stdint.h>

#include "tensor.h"
#include <quant/graph.h>

/* ONNX AttributeProto.AttributeType codes */
typedef enum qs_attr_type {
    QS_ATTR_FLOAT = 1, QS_ATTR_INT = 2, QS_ATTR_STRING = 3, QS_ATTR_TENSOR = 4,
    QS_ATTR_FLOATS = 6, QS_ATTR_INTS = 7, QS_ATTR_STRINGS = 8,
} qs_attr_type;

typedef struct qs_attr {
    char *name;
    qs_attr_type type;
    float f;
    int64_t i;
    char *s;            /* STRING (NUL-terminated) */
    qs_tensor *t;       /* TENSOR (owned) */
    int n;              /* number of floats / ints / strings */
    float *floats;
    int64_t *ints;
    char **strings;
} qs_attr;

typedef struct qs_node {
    char *name;
    char *op;           /* "Conv", "QuantizeLinear", … */
    char *domain;       /* "" for the default ONNX domain, "quantd" for our own ops */
    int nin, nout;
    int *in;            /* value ids; -1 marks an omitted optional input */
    int *out;
    int nattr;
    qs_attr *attr;
} qs_node;

typedef struct qs_value {
    char *name;
    qs_dtype dtype;     /* declared type, QS_UNDEFINED when unknown */
    int ndim;           /* declared rank, -1 when unknown */
    int64_t shape[QS_MAX_DIMS];   /* declared dims, -1 where symbolic or unknown */
    char *dim_param[QS_MAX_DIMS]; /* symbolic dim names ("batch", "N"), owned, NULL if none */
    int64_t run_dim[QS_MAX_DIMS]; /* graph inputs: the size a symbolic dim other than the leading one
                                   * runs at (shapes.h: from the data or --input-shape), 0 = not set;
                                   * the declaration itself stays symbolic (export keeps it) */
    qs_tensor *init;    /* initializer / constant data (owned), NULL otherwise */
    int producer;       /* node id, -1 for graph inputs and initializers */
} qs_value;

typedef struct qs_opset { char *domain; int64_t version; } qs_opset;

typedef struct qs_graph {
    char *name;
    int nnodes, cap_nodes;
    qs_node *nodes;
    int nvalues, cap_values;
    qs_value *values;
    int ninputs, noutputs;
    int *inputs;        /* runtime inputs (value ids), initializers excluded */
    int *outputs;
    int nopsets;
    qs_opset *opsets;   /* opset imports; qs_graph_opset(g, "") is the default domain's */
    int64_t ir_version;
    char *producer_name, *producer_version, *doc;
    /* generation of the initializers' contents: whoever writes an initializer in place between
     * passes of an executor calls qs_graph_weights_changed (ops keep derived copies, e.g. Conv's
     * blocked weights, while it stays the same) */
    uint64_t wgen;
} qs_graph;

qs_graph *qs_graph_new(void);

/* The value called name, created (no type, no producer) if missing; -1 on OOM. */
int qs_graph_value(qs_graph *g, const char *name);
/* A new value with a name derived from base that is not yet used ("base", "base_1", …). */
int qs_graph_new_value(qs_graph *g, const char *base);
/* Value dst gets src's declared type and shape (symbolic dims included). */
void qs_graph_copy_decl(qs_graph *g, int dst, int src);
/* Attaches t (stolen) as the value's initializer, replacing any previous one. */
void qs_graph_set_init_steal(qs_graph *g, int value, qs_tensor *t);
/* Initializer data was written in place: copies that ops derived from it are stale. */
void qs_graph_weights_changed(qs_graph *g);

/* Adds a node; copies the arrays and strings. Sets the outputs' producer. Returns the node id or -1. */
int qs_graph_add_node(qs_graph *g, const char *op, const char *name, int nin, const int *in,
                      int nout, const int *out);
/* Attribute setters (copy their arguments; replace an attribute of the same name). */
int qs_node_set_int(qs_node *n, const char *name, int64_t v);
int qs_node_set_float(qs_node *n, const char *name, float v);
int qs_node_set_string(qs_node *n, const char *name, const char *v);
int qs_node_set_ints(qs_node *n, const char *name, int count, const int64_t *v);
int qs_node_set_floats(qs_node *n, const char *name, int count, const float *v);
int qs_node_set_domain(qs_node *n, const char *domain);

/* Attribute getters (borrowed); the default is returned when absent. */
const qs_attr *qs_node_attr(const qs_node *n, const char *name);
int64_t qs_node_int(const qs_node *n, const char *name, int64_t dflt);
float qs_node_float(const qs_node *n, const char *name, float dflt);
const char *qs_node_string(const qs_node *n, const char *name, const char *dflt);
/* ints attribute: returns the count (0 when absent) and sets *v to borrowed storage */
int qs_node_ints(const qs_node *n, const char *name, const int64_t **v);
int qs_node_floats(const qs_node *n, const char *name, const float **v);

int qs_graph_set_opset(qs_graph *g, const char *domain, int64_t version);

/* Node ids that read value v, in node order; returns the count, fills up to max ids. */
int qs_graph_consumers(const qs_graph *g, int v, int *ids, int max);
int qs_graph_is_output(const qs_graph *g, int v);
/* How often v is read: once per node input slot that names it, plus one when it is a graph output.
 * A pass may rewrite a value in place only when this is 1 (its one reader is the node at hand). */
int qs_graph_count_reads(const qs_graph *g, int v);

/* n is op in the default ONNX domain (not one of our "quantd" ops of the same name). */
int qs_node_is_op(const qs_node *n, const char *op);
/* n is our FakeQuant node (domain "quantd"). */
int qs_node_is_fakequant(const qs_node *n);
/* A constant's data (borrowed): v's initializer, or the value of the Constant node producing it
 * (exporters put Clip bounds and shapes there); NULL for a computed value or v < 0. */
const qs_tensor *qs_graph_const_of(const qs_graph *g, int v);
/* v with any chain of Identity nodes before it skipped (PyTorch's exporter shares equal
 * initializers through Identity nodes): the value the first Identity reads, or v itself. */
int qs_graph_skip_identity(const qs_graph *g, int v);

/* Turns every Constant node whose value is a tensor into an initializer of the same value (name
 * kept) and removes the node: exporters (Paddle's, some TensorFlow ones, PyTorch's without constant
 * folding) put weights there, and every pass (BN folding, CLE, quantizer placement, QAT) looks
 * for weights among initializers. A Constant that is a graph output stays. Returns how many were
 * promoted, -1 when out of memory (the graph is then unchanged). */
int qs_graph_promote_constants(qs_graph *g);
/* Sorts nodes topologically (stable for graphs already in order); fails on a cycle or on a
 * value that is read but never produced, naming it. Recomputes every value's producer. */
int qs_graph_toposort(qs_graph *g, qs_err *e);
/* Removes the nodes whose flag in drop[nnodes] is set; node ids shift, value ids stay. */
void qs_graph_remove_nodes(qs_graph *g, const char *drop);
/* Readable name for messages: "Conv 'conv1'" or "Conv (node 3)" into buf. */
const char *qs_node_label(const qs_graph *g, int node, char *buf, int n);

#endif
