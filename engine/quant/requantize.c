/* Already-quantized models (see requantize.h): spotting them, and turning a QDQ model back into a
 * float one that the pipelines can quantize again.
 *
 * A QDQ model (ONNX Runtime's format, and our own export) keeps weights as integer initializers
 * read through DequantizeLinear, and puts a QuantizeLinear → DequantizeLinear pair on activations.
 * Requantizing folds each weight's DequantizeLinear into a float initializer ((q − zero point) ·
 * scale, per tensor or per axis) under the DequantizeLinear's output name, and removes each
 * activation pair, its readers reading the pair's float input again. What is left — QLinear or
 * integer ops, a DequantizeLinear of a computed tensor without its QuantizeLinear — has no float
 * form this pass can recover, and is refused by name. */
#include "quant/requantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qs_op_is_quantized(const char *op)
{
    size_t n = strlen(op);
    return !strcmp(op, "QuantizeLinear") || !strcmp(op, "DequantizeLinear") || !strcmp(op, "DynamicQuantizeLinear") ||
           !strncmp(op, "QLinear", 7) || (n > 7 && !strcmp(op + n - 7, "Integer")) || !strcmp(op, "QGemm");
}

int qs_graph_quantized_ops(const qs_graph *g, char *msg, size_t n)
{
    int count = 0;
    size_t k = 0;
    if (n)
        msg[0] = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const char *op = g->nodes[i].op;
        if (!qs_op_is_quantized(op))
            continue;
        int first = 1, same = 0;
        for (int j = 0; j < i && first; j++)
            first = strcmp(g->nodes[j].op, op) != 0;
        for (int j = i; j < g->nnodes && first; j++)
            same += !strcmp(g->nodes[j].op, op);
        if (first && k < n)
            k += (size_t)snprintf(msg + k, n - k, "%s%s %d", count ? ", " : "", op, same);
        count++;
    }
    return count;
}

/* (q − zero point) · scale of DequantizeLinear node i, whose input is the integer initializer q;
 * NULL with e set when its scale or zero point is not constant or does not fit. */
static qs_tensor *dequantize(const qs_graph *g, int i, const qs_tensor *q, qs_err *e)
{
    const qs_node *nd = &g->nodes[i];
    const qs_tensor *s = qs_graph_const_of(g, nd->nin > 1 ? nd->in[1] : -1);
    const qs_tensor *z = nd->nin > 2 ? qs_graph_const_of(g, nd->in[2]) : NULL;
    char b[256];
    qs_node_label(g, i, b, sizeof b);
    if (!s || (s->dtype != QS_F32) || (nd->nin > 2 && nd->in[2] >= 0 && !z)) {
        qs_error(e, QS_EUNSUPPORTED, "requantize: %s: the scale and zero point must be constant float / integer tensors",
                 b);
        return NULL;
    }
    if (qs_node_int(nd, "block_size", 0)) {
        qs_error(e, QS_EUNSUPPORTED, "requantize: %s: blocked quantization (block_size) is not supported", b);
        return NULL;
    }
    int64_t axis = qs_node_int(nd, "axis", 1), ns = qs_numel(s);
    if (axis < 0)
        axis += q->ndim;
    int per_axis = ns > 1;
    if ((per_axis && (axis < 0 || axis >= q->ndim || q->shape[axis] != ns)) || (z && qs_numel(z) != ns)) {
        qs_error(e, QS_ESHAPE, "requantize: %s: %lld scales do not fit a weight of %d dims along axis %lld", b,
                 (long long)ns, q->ndim, (long long)axis);
        return NULL;
    }
    int64_t inner = 1;
    for (int d = per_axis ? (int)axis + 1 : q->ndim; d < q->ndim; d++)
        inner *= q->shape[d];
    qs_tensor *w = qs_tensor_new(QS_F32, q->ndim, q->shape);
    if (!w) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    for (int64_t k = 0; k < qs_numel(q); k++) {
        int64_t c = per_axis ? (k / inner) % ns : 0;
        double zp = z ? (double)qs_get_i64(z, c) : 0;
        qs_f32(w)[k] = (float)(((double)qs_get_i64(q, k) - zp) * qs_f32(s)[c]);
    }
    return w;
}

static void replace_reads(qs_graph *g, int from, int to)
{
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            if (g->nodes[i].in[j] == from)
                g->nodes[i].in[j] = to;
}

int qs_requantize(qs_graph *g, int *nweights, int *npairs, qs_err *e)
{
    *nweights = *npairs = 0;
    char *drop = calloc(2 * (size_t)g->nnodes + 1, 1);   /* room for the Identity nodes added */
    int *ids = malloc((2 * (size_t)g->nnodes + 1) * sizeof *ids);
    int rc = 0;
    if (!drop || !ids) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    /* weights: DequantizeLinear of an integer initializer → the float initializer itself */
    for (int i = 0; i < g->nnodes; i++) {
        qs_node *nd = &g->nodes[i];
        if (!qs_node_is_op(nd, "DequantizeLinear") || nd->nin < 2 || nd->nout != 1 || nd->out[0] < 0 ||
            qs_graph_is_output(g, nd->out[0]))
            continue;
        const qs_tensor *q = nd->in[0] >= 0 ? g->values[nd->in[0]].init : NULL;
        if (!q || !qs_dtype_is_int(q->dtype))
            continue;
        qs_tensor *w = dequantize(g, i, q, e);
        if (!w) {
            rc = e ? e->code : QS_EINVAL;
            goto out;
        }
        qs_value *v = &g->values[nd->out[0]];
        qs_graph_set_init_steal(g, nd->out[0], w);
        v->dtype = QS_F32;
        v->ndim = w->ndim;
        memcpy(v->shape, w->shape, sizeof v->shape);
        drop[i] = 1;
        (*nweights)++;
    }
    /* activations: QuantizeLinear → DequantizeLinear(s); the readers read the float input again */
    for (int i = 0; i < g->nnodes; i++) {
        qs_node *qn = &g->nodes[i];
        if (!qs_node_is_op(qn, "QuantizeLinear") || qn->nin < 1 || qn->nout != 1 || qn->out[0] < 0 ||
            qs_graph_is_output(g, qn->out[0]))
            continue;
        int nc = qs_graph_consumers(g, qn->out[0], ids, g->nnodes), all_dq = nc > 0;
        for (int k = 0; k < nc && all_dq; k++)
            all_dq = qs_node_is_op(&g->nodes[ids[k]], "DequantizeLinear") && g->nodes[ids[k]].in[0] == qn->out[0] &&
                     g->nodes[ids[k]].nout == 1 && g->nodes[ids[k]].out[0] >= 0;
        if (!all_dq)
            continue;
        int x = qn->in[0];
        for (int k = 0; k < nc; k++) {
            qs_node *dq = &g->nodes[ids[k]];
            int y = dq->out[0];
            drop[ids[k]] = 1;
            if (!qs_graph_is_output(g, y)) {
                replace_reads(g, y, x);
            } else {   /* the output keeps its name: Identity(x) replaces the DequantizeLinear */
                char name[300];
                snprintf(name, sizeof name, "%s", dq->name ? dq->name : "");
                if (qs_graph_add_node(g, "Identity", name, 1, &x, 1, &y) < 0) {
                    rc = qs_error(e, QS_ENOMEM, "out of memory");
                    goto out;
                }
                qn = &g->nodes[i];   /* (the node array may have moved) */
            }
        }
        drop[i] = 1;
        (*npairs)++;
    }
    qs_graph_remove_nodes(g, drop);
    /* the integer weights, scales and zero points no node reads any more */
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].init && !qs_graph_consumers(g, v, ids, 1) && !qs_graph_is_output(g, v)) {
            qs_tensor_free(g->values[v].init);
            g->values[v].init = NULL;
        }
    for (int i = 0; i < g->nnodes; i++)
        if (qs_op_is_quantized(g->nodes[i].op)) {
            char b[256];
            rc = qs_error(e, QS_EUNSUPPORTED, "requantize: %s has no float form to go back to (only weights read "
                          "through DequantizeLinear and QuantizeLinear → DequantizeLinear pairs have one)",
                          qs_node_label(g, i, b, sizeof b));
            goto out;
        }
    rc = qs_graph_toposort(g, e);
out:
    free(drop);
    free(ids);
    return rc;
}
