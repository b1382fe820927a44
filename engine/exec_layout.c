/* Channel-blocked activations between convolutions (plan time, inference, fusion on, no observer).
 *
 * oneDNN's convolutions run in a channel-blocked layout (nChw16c on AVX-512, nChw8c on AVX2).
 * Reordering X into it and Y out of it on every call costs 10–40% of a 3x3 layer, and makes a 1x1
 * slower than OpenBLAS (docs/benchmarks.md). So, as ONNX Runtime does with NCHWc, a value written
 * by an op that can write it blocked, and read only by ops that can read it blocked, stays blocked:
 * Conv → Conv chains, including a residual Add fused into a Conv (oneDNN's sum post-op then adds
 * it in the layout Y has). Every other reader (another op, a graph output, a value kept for an
 * observer) reads NCHW, so that value's producer reorders its Y back as before.
 *
 * One pass: start from every candidate (the live output of a node whose blocked() hook said yes, an
 * activation, not a graph output, not kept) and drop any with a reader that cannot take it
 * blocked: anything but an input that a node's hook said it can read blocked (its in[0], as a rule;
 * neither for a Conv that can write Y blocked but not read its X so, either operand of the
 * squeeze-excitation Mul), or a residual fused into such a node (oneDNN adds it inside the kernel,
 * in the blocked layout, before Y is reordered out).
 *
 * A channel count that is not a whole number of blocks (mobilenet_v2's 24, efficientnet's 40 and
 * 112) is padded up to one, as in oneDNN's own layout: the value's buffer holds whole blocks, and the
 * padding is zero (oneDNN keeps it so, and its blocked weights are zero there too). */
#include "exec_impl.h"

#include <stdlib.h>

/* may value v be held blocked at all */
static int candidate(const qs_exec *x, int v)
{
    return v >= 0 && v < x->nvalues && x->kind[v] == V_ACT && x->val[v].dtype == QS_F32 && !x->keep[v] &&
           !qs_graph_is_output(x->g, v);
}

/* drops blocked values with a reader that cannot take them */
static void drop_unreadable(qs_exec *x, const int *owner, const char *cap, const unsigned char *ins)
{
    for (int j = 0; j < x->nnodes; j++) {
        const qs_node *n = &x->g->nodes[j];
        if (x->folded[j] == 1)
            continue;
        for (int k = 0; k < n->nin; k++) {
            int v = n->in[k], ok, p;
            if (v < 0 || !x->blocked[v])
                continue;
            if (!x->folded[j]) {
                ok = cap[j] && k < 8 && (ins[j] >> k & 1);
            } else {   /* absorbed: only a residual Add reads a live value, for its owner p */
                p = owner[j];
                ok = p >= 0 && x->resid[p] == v && cap[p];
            }
            if (!ok)
                x->blocked[v] = 0;
        }
    }
}

size_t qs_exec_value_bytes(const qs_exec *x, int v)
{
    const qs_tensor *t = &x->val[v];
    size_t b = qs_nbytes(t);
    if (!x->blocked[v] || t->ndim < 2 || t->shape[1] < 1 || x->block < 1)
        return b;
    int64_t c = t->shape[1];
    return b / (size_t)c * (size_t)qs_block_padded(c, x->block);
}

int qs_exec_plan_layouts(qs_exec *x, const int *owner, size_t *scratch, qs_err *e)
{
    int nn = x->nnodes, blk = 0, rc = 0;
    int *outv = malloc((nn + 1) * sizeof *outv);
    char *cap = calloc(nn + 1, 1);
    unsigned char *ins = calloc(nn + 1, 1);   /* per node: the inputs its hook can read blocked */
    if (!outv || !cap || !ins) {
        rc = qs_error(e, QS_ENOMEM, "out of memory planning the graph");
        goto out;
    }
    for (int i = 0; i < nn; i++) {
        outv[i] = -1;
        if (x->folded[i] || !x->def[i]->blocked)
            continue;
        qs_kctx c = qs_exec_node_ctx(x, i, e);
        unsigned inputs = 1;
        int b = x->def[i]->blocked(&c, &inputs);
        if (!b || (blk && b != blk))
            continue;
        blk = b;
        cap[i] = 1;
        ins[i] = (unsigned char)inputs;
        int v = (int)(x->out[i][0] - x->val);
        if (candidate(x, v)) {
            outv[i] = v;
            x->blocked[v] = 1;
        }
    }
    drop_unreadable(x, owner, cap, ins);
    for (int i = 0; i < nn; i++) {
        const qs_node *n = &x->g->nodes[i];
        if (!cap[i])
            continue;
        int lay = (n->nin > 0 && n->in[0] >= 0 && x->blocked[n->in[0]] ? QS_LAYOUT_X : 0) |
                  (n->nin > 1 && n->in[1] >= 0 && x->blocked[n->in[1]] ? QS_LAYOUT_X1 : 0) |
                  (outv[i] >= 0 && x->blocked[outv[i]] ? QS_LAYOUT_Y : 0) |
                  (x->resid[i] >= 0 && x->blocked[x->resid[i]] ? QS_LAYOUT_R : 0);
        if (!lay)
            continue;
        x->layout[i] = lay;
        if (x->state[i])
            (x->def[i]->release ? x->def[i]->release : free)(x->state[i]);
        x->state[i] = NULL;
        qs_kctx c = qs_exec_node_ctx(x, i, e);
        if (x->def[i]->prepare && (rc = x->def[i]->prepare(&c, &x->state[i])) < 0)
            goto out;
        c.state = x->state[i];
        size_t ss = x->def[i]->scratch ? x->def[i]->scratch(&c) : 0;
        if (ss > *scratch)
            *scratch = ss;
    }
    for (int v = 0; v < x->nvalues; v++)
        x->nblocked += x->blocked[v];
    x->block = blk;
out:
    free(outv);
    free(cap);
    free(ins);
    return rc;
}
