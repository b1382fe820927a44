/* Folding of constant weights (constweights.h): each node of a constant chain that ends in a
 * layer's weight or bias is run once by its kernel, its outputs become initializers and the node
 * is dropped. */
#include "quant/constweights.h"

#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"

static const char *const LAYER_OPS[] = { "Conv", "ConvTranspose", "Gemm", "MatMul", NULL };

static int is_layer(const qs_node *n)
{
    if (n->domain && n->domain[0])
        return 0;
    for (int k = 0; LAYER_OPS[k]; k++)
        if (!strcmp(n->op, LAYER_OPS[k]))
            return 1;
    return 0;
}

/* Weights the model computes from constants (an initializer reshaped or transposed by a node, a
 * Constant node, as in the ONNX zoo's mnist-8) are folded into initializers first, so the layer
 * reading them gets a weight quantizer like any other. Only chains ending in a layer's weight or
 * bias input are folded: other constant subgraphs stay as the model wrote them. */
static int fold_node(qs_graph *g, int i, qs_err *e)
{
    const qs_node *n = &g->nodes[i];
    const qs_op_def *d = qs_op_find(n->domain, n->op);
    char b[300];
    if (!d || n->nin > 16 || n->nout > 8)
        return 0;
    qs_tensor *in[17] = { 0 }, heads[8], *outs[8] = { 0 };
    memset(heads, 0, sizeof heads);
    for (int j = 0; j < n->nin; j++)
        in[j] = n->in[j] >= 0 ? g->values[n->in[j]].init : NULL;
    for (int j = 0; j < n->nout; j++)
        outs[j] = &heads[j];
    qs_kctx c = { .node = n, .opset = qs_graph_opset(g, ""), .nin = n->nin, .nout = n->nout, .in = in,
                  .out = outs, .nthreads = 1, .err = e };
    int rc = d->infer(&c);
    for (int j = 0; rc == 0 && j < n->nout; j++)
        if (!(outs[j] = qs_tensor_new(heads[j].dtype, heads[j].ndim, heads[j].shape)))
            rc = qs_error(e, QS_ENOMEM, "out of memory");
    size_t ss = rc == 0 && d->scratch ? d->scratch(&c) : 0;
    void *scratch = ss ? malloc(ss) : NULL;
    c.scratch = scratch;
    c.scratch_size = ss;
    if (rc == 0)
        rc = ss && !scratch ? qs_error(e, QS_ENOMEM, "out of memory") : d->forward(&c);
    free(scratch);
    for (int j = 0; j < n->nout; j++) {
        if (rc == 0 && g->nodes[i].out[j] >= 0) {
            qs_graph_set_init_steal(g, g->nodes[i].out[j], outs[j]);
            outs[j] = NULL;
        }
        if (outs[j] != &heads[j])
            qs_tensor_free(outs[j]);
    }
    if (rc < 0)
        qs_error_prefix(e, "folding the constant weights of %s: ", qs_node_label(g, i, b, sizeof b));
    return rc;
}

int qs_fold_const_weights(qs_graph *g, qs_err *e)
{
    int nv = g->nvalues, nn = g->nnodes, rc = 0, nfold = 0;
    char *dyn = calloc(nv + 1, 1), *want = calloc(nv + 1, 1), *drop = calloc(nn + 1, 1);
    if (!dyn || !want || !drop) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < g->ninputs; k++)
        dyn[g->inputs[k]] = !g->values[g->inputs[k]].init;
    for (int i = 0; i < nn; i++) {
        const qs_node *n = &g->nodes[i];
        int d = 0;
        for (int j = 0; j < n->nin; j++)
            d |= n->in[j] >= 0 && dyn[n->in[j]];
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0)
                dyn[n->out[j]] = (char)d;
        if (is_layer(n))
            for (int j = qs_node_is_op(n, "MatMul") ? 0 : 1; j < n->nin && j < 3; j++)
                if (n->in[j] >= 0 && !g->values[n->in[j]].init && g->values[n->in[j]].producer >= 0)
                    want[n->in[j]] = 1;
    }
    /* a wanted value's constant producer wants its inputs too (walk backwards) */
    for (int i = nn - 1; i >= 0; i--) {
        const qs_node *n = &g->nodes[i];
        int w = 0, d = 0;
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0) {
                w |= want[n->out[j]];
                d |= dyn[n->out[j]] || qs_graph_is_output(g, n->out[j]);
            }
        if (!w || d)
            continue;
        for (int j = 0; j < n->nin; j++)
            if (n->in[j] >= 0)
                want[n->in[j]] = 1;
    }
    for (int i = 0; i < nn && rc == 0; i++) {
        const qs_node *n = &g->nodes[i];
        int w = 0, ok = n->nout > 0;
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0) {
                w |= want[n->out[j]];
                ok &= !dyn[n->out[j]] && !qs_graph_is_output(g, n->out[j]);
            }
        for (int j = 0; j < n->nin; j++)
            ok &= n->in[j] < 0 || g->values[n->in[j]].init != NULL;
        if (!w || !ok)
            continue;
        if ((rc = fold_node(g, i, e)) == 0) {
            drop[i] = 1;
            nfold++;
        }
    }
    if (rc == 0 && nfold)
        qs_graph_remove_nodes(g, drop);
out:
    free(dyn);
    free(want);
    free(drop);
    return rc;
}

