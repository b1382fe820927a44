/* The read-only accessors of <quant/graph.h>: what code outside the engine (the CLI's `quant
 * info`, the daemon's model upload, programs built on libquant) may know about a graph without
 * seeing its structs, so that the IR can change without breaking them. Ids out of range are
 * programmer errors and abort (QS_ASSERT), as an index past an array's end would. */
#include "graph.h"

static const qs_value *value_at(const qs_graph *g, int v)
{
    QS_ASSERT(v >= 0 && v < g->nvalues);
    return &g->values[v];
}

static const qs_node *node_at(const qs_graph *g, int n)
{
    QS_ASSERT(n >= 0 && n < g->nnodes);
    return &g->nodes[n];
}

const char *qs_graph_name(const qs_graph *g) { return g->name; }
const char *qs_graph_producer_name(const qs_graph *g) { return g->producer_name; }
const char *qs_graph_producer_version(const qs_graph *g) { return g->producer_version; }
int64_t qs_graph_ir_version(const qs_graph *g) { return g->ir_version; }

int qs_graph_opset_count(const qs_graph *g) { return g->nopsets; }

const char *qs_graph_opset_domain(const qs_graph *g, int i)
{
    QS_ASSERT(i >= 0 && i < g->nopsets);
    return g->opsets[i].domain ? g->opsets[i].domain : "";
}

int64_t qs_graph_opset_version(const qs_graph *g, int i)
{
    QS_ASSERT(i >= 0 && i < g->nopsets);
    return g->opsets[i].version;
}

int qs_graph_input_count(const qs_graph *g) { return g->ninputs; }
int qs_graph_output_count(const qs_graph *g) { return g->noutputs; }

int qs_graph_input(const qs_graph *g, int i)
{
    QS_ASSERT(i >= 0 && i < g->ninputs);
    return g->inputs[i];
}

int qs_graph_output(const qs_graph *g, int i)
{
    QS_ASSERT(i >= 0 && i < g->noutputs);
    return g->outputs[i];
}

int qs_graph_value_count(const qs_graph *g) { return g->nvalues; }
const char *qs_graph_value_name(const qs_graph *g, int v) { return value_at(g, v)->name; }
qs_dtype qs_graph_value_dtype(const qs_graph *g, int v) { return value_at(g, v)->dtype; }
int qs_graph_value_ndim(const qs_graph *g, int v) { return value_at(g, v)->ndim; }
const qs_tensor *qs_graph_value_init(const qs_graph *g, int v) { return value_at(g, v)->init; }

int64_t qs_graph_value_dim(const qs_graph *g, int v, int d)
{
    const qs_value *val = value_at(g, v);
    QS_ASSERT(d >= 0 && d < val->ndim);
    return val->shape[d];
}

const char *qs_graph_value_dim_param(const qs_graph *g, int v, int d)
{
    const qs_value *val = value_at(g, v);
    QS_ASSERT(d >= 0 && d < val->ndim);
    return val->dim_param[d];
}

int64_t qs_graph_param_count(const qs_graph *g)
{
    int64_t n = 0;
    for (int v = 0; v < g->nvalues; v++) {
        const qs_tensor *t = g->values[v].init;
        if (t && (t->dtype == QS_F32 || t->dtype == QS_F64))
            n += qs_numel(t);
    }
    return n;
}

int qs_graph_node_count(const qs_graph *g) { return g->nnodes; }
const char *qs_graph_node_op(const qs_graph *g, int n) { return node_at(g, n)->op; }
const char *qs_graph_node_name(const qs_graph *g, int n) { return node_at(g, n)->name; }
int qs_graph_node_input_count(const qs_graph *g, int n) { return node_at(g, n)->nin; }
int qs_graph_node_output_count(const qs_graph *g, int n) { return node_at(g, n)->nout; }

const char *qs_graph_node_domain(const qs_graph *g, int n)
{
    const qs_node *node = node_at(g, n);
    return node->domain ? node->domain : "";
}

int qs_graph_node_input(const qs_graph *g, int n, int i)
{
    const qs_node *node = node_at(g, n);
    QS_ASSERT(i >= 0 && i < node->nin);
    return node->in[i];
}

int qs_graph_node_output(const qs_graph *g, int n, int i)
{
    const qs_node *node = node_at(g, n);
    QS_ASSERT(i >= 0 && i < node->nout);
    return node->out[i];
}

int64_t qs_graph_node_int(const qs_graph *g, int n, const char *attr, int64_t dflt)
{
    return qs_node_int(node_at(g, n), attr, dflt);
}
