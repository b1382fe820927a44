/* The squeeze-excitation gate folded into the Conv after it (plan time, inference, fusion on).
 *
 * EfficientNet's and MobileNetV3's squeeze-excitation blocks end in x·s, s of shape [N, C, 1, 1] (a
 * Sigmoid or HardSigmoid of the squeezed branch): at batch 32 a memory-bound pass over the whole
 * activation, read back at once by a 1x1 projection Conv. That Conv computes W·(diag(s_n)·X_n), which
 * is (W·diag(s_n))·X_n: scaling W's columns per item costs M×C multiplies instead of C×H×W, and the
 * Mul's output is never written. exec.c asks here, at each node, whether its in[0] is such a Mul's
 * output; the op's xscale() hook says which of its paths can take it (conv.c). */
#include "exec_impl.h"

/* A squeeze-excitation gate: node i (an op with an xscale() hook, Conv) whose in[0] is the float32
 * output v of a Mul (node *mul) of an activation a by s of shape [N or 1, C, 1, 1], v read by node i
 * alone and only as in[0], not a graph output nor kept for an observer. When the hook takes it,
 * node i reads a in place of v and applies s itself (for a 1x1 Conv, W·diag(s_n): M×C multiplies
 * per item instead of a pass over the activation); returns s, else -1. On success x->in[i][0] is
 * left pointing at a. */
int qs_exec_scaled_input(qs_exec *x, int i, const int *prod, const int *nreaders, int *mul)
{
    const qs_node *n = &x->g->nodes[i];
    if (!x->fuse || x->mode != QS_EXEC_INFER || !x->def[i]->xscale || n->nin < 2 || n->in[0] < 0)
        return -1;
    int v = n->in[0], j = prod[v];
    if (j < 0 || x->folded[j] || !(x->def[j]->flags & QS_OP_MUL) || x->g->nodes[j].nin != 2 ||
        x->g->nodes[j].nout != 1 || x->kind[v] != V_ACT || nreaders[v] != 1 || qs_graph_is_output(x->g, v) ||
        x->keep[v] || x->val[v].dtype != QS_F32 || x->val[v].ndim < 3)
        return -1;
    for (int k = 1; k < n->nin; k++)
        if (n->in[k] == v)
            return -1;
    for (int k = 0; k < 2; k++) {
        int a = x->g->nodes[j].in[k], s = x->g->nodes[j].in[1 - k];
        if (a < 0 || s < 0 || a == s || (x->kind[a] != V_ACT && x->kind[a] != V_INPUT) ||
            x->kind[s] == V_NONE || !qs_shape_eq(&x->val[a], &x->val[v]) || x->val[a].dtype != QS_F32)
            continue;
        qs_tensor *was = x->in[i][0];
        x->in[i][0] = &x->val[a];
        qs_kctx c = qs_exec_node_ctx(x, i, NULL);
        c.in_scale = &x->val[s];
        if (x->def[i]->xscale(&c)) {
            *mul = j;
            return s;
        }
        x->in[i][0] = was;
    }
    return -1;
}
