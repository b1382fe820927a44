/* Memory placement: where each activation lives in the arena (inference and training plans).
 *
 * Each value's lifetime runs from the node that writes it to the last node that reads it; graph
 * inputs and outputs live throughout, and in training every value does (backward reads them). The
 * values are placed first-fit: the lowest offset whose bytes no overlapping lifetime holds.
 *
 * In place: a Conv whose Y and fused residual are both held blocked (exec_layout.c) adds the
 * residual inside oneDNN's kernel (a sum post-op over what Y holds), so when nothing reads the
 * residual after that Conv, Y takes the residual's bytes and the copy of the residual into Y goes
 * (a ResNet block's output then stays where its input was). Such values form groups (a chain of
 * blocks) that are placed as one, over the union of their lifetimes.
 *
 * Views: in an inference plan, the output of a Reshape, Flatten, Squeeze, Unsqueeze or Identity
 * shares its input's bytes (its forward then copies nothing), since no value is written after the
 * node that defines it. The one write over another value's bytes, a Conv's Y over its residual, is
 * made only when nothing reads the residual's group after the Conv. */
#include <limits.h>
#include <stdlib.h>

#include "exec_impl.h"

static size_t align_up(size_t n) { return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

typedef struct { size_t off, size; int def, last; } block;

/* the first offset where size bytes fit beside the placed blocks whose lifetimes meet [def, last] */
static size_t place(block *live, int nlive, size_t size, int def, int last)
{
    size_t off = 0;
    for (;;) {
        int moved = 0;
        for (int b = 0; b < nlive; b++) {
            if (live[b].last < def || live[b].def > last)
                continue;   /* lifetimes do not overlap */
            if (off < live[b].off + live[b].size && live[b].off < off + size) {
                off = live[b].off + live[b].size;
                moved = 1;
            }
        }
        if (!moved)
            return off;
    }
}

/* the lowest value of v's group (union-find over alias[]) */
static int root(int *alias, int v)
{
    while (alias[v] != v)
        v = alias[v] = alias[alias[v]];
    return v;
}

static void join(int *alias, int a, int b)
{
    a = root(alias, a);
    b = root(alias, b);
    if (a != b)
        alias[a > b ? a : b] = a < b ? a : b;
}

/* the value x->in[i][k] or x->out[i][k] points at, or -1 (none, or an unnamed output) */
static int value_of(const qs_exec *x, const qs_tensor *t)
{
    return t && t >= x->val && t < x->val + x->nvalues ? (int)(t - x->val) : -1;
}

/* alias[v]: the lowest value of v's group (v alone: v); the root's defn/last widen to the group's */
static void alias_groups(qs_exec *x, const int *owner, int *defn, int *last, int *alias)
{
    int nv = x->nvalues;
    for (int v = 0; v < nv; v++)
        alias[v] = v;
    for (int i = 0; x->mode == QS_EXEC_INFER && i < x->nnodes; i++) {   /* views */
        if (x->folded[i] || !(x->def[i]->flags & QS_OP_VIEW) || x->g->nodes[i].nin < 1 || x->g->nodes[i].nout < 1)
            continue;
        int v = value_of(x, x->in[i][0]), y = value_of(x, x->out[i][0]);
        if (v >= 0 && y >= 0 && (x->kind[v] == V_INPUT || x->kind[v] == V_ACT) &&
            x->kind[y] == V_ACT && qs_exec_value_bytes(x, v) == qs_exec_value_bytes(x, y))
            join(alias, v, y);
    }
    for (int i = 0; x->nblocked && i < x->nnodes; i++) {
        int r = x->resid[i], y = x->out[i] ? value_of(x, x->out[i][0]) : -1;
        if (x->folded[i] || (x->layout[i] & (QS_LAYOUT_R | QS_LAYOUT_Y)) != (QS_LAYOUT_R | QS_LAYOUT_Y) || r < 0 ||
            y < 0 || last[r] == INT_MAX || x->keep[r] || qs_exec_value_bytes(x, r) != qs_exec_value_bytes(x, y))
            continue;
        /* no reader of r's group from node i on (its X included) but the Add this Conv absorbed */
        int ok = 1, gr = root(alias, r);
        for (int j = i; j < x->nnodes && ok; j++) {
            const qs_node *n = &x->g->nodes[j];
            if (x->folded[j] == 1 || (x->folded[j] == 2 && owner[j] == i))
                continue;
            for (int k = 0; k < n->nin; k++)
                ok &= n->in[k] < 0 || root(alias, n->in[k]) != gr;
        }
        if (ok)
            join(alias, r, y);
    }
    for (int v = 0; v < nv; v++) {
        int g = alias[v] = root(alias, v);
        defn[g] = defn[v] < defn[g] ? defn[v] : defn[g];
        last[g] = last[v] > last[g] ? last[v] : last[g];
    }
}

int qs_exec_place(qs_exec *x, const int *owner, size_t *total, qs_err *e)
{
    const qs_graph *g = x->g;
    int nv = x->nvalues, nn = x->nnodes, nlive = 0;
    int *last = malloc((nv + 1) * sizeof *last), *defn = malloc((nv + 1) * sizeof *defn);
    int *alias = malloc((nv + 1) * sizeof *alias);
    block *live = malloc((nv + 1) * sizeof *live);
    if (!last || !defn || !alias || !live) {
        free(last);
        free(defn);
        free(alias);
        free(live);
        return qs_error(e, QS_ENOMEM, "out of memory planning the graph");
    }
    /* lifetimes: def = producing node (-1 for inputs), last = last reader (INT_MAX for outputs
     * and, in training, for everything) */
    for (int v = 0; v < nv; v++) {
        defn[v] = -1;
        last[v] = x->mode == QS_EXEC_TRAIN ? INT_MAX : -1;
    }
    for (int i = 0; i < nn; i++) {
        const qs_node *n = &g->nodes[i];
        if (x->folded[i] == 1)
            continue;
        /* an absorbed node's inputs count as read at its own place: a fused residual stays live
         * from before its Conv until then */
        for (int j = 0; j < n->nin; j++)
            if (n->in[j] >= 0 && last[n->in[j]] < i)
                last[n->in[j]] = i;
        if (x->xscale[i] >= 0) {   /* a folded Mul's operands are read here */
            int a = (int)(x->in[i][0] - x->val), s = x->xscale[i];
            last[a] = last[a] < i ? i : last[a];
            last[s] = last[s] < i ? i : last[s];
        }
        if (x->folded[i] == 2) {   /* fused: its producer defines its output */
            defn[n->out[0]] = owner[i];
            continue;
        }
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0 && x->kind[n->out[j]] != V_NONE)
                defn[n->out[j]] = i;
    }
    for (int k = 0; k < g->noutputs; k++)
        last[g->outputs[k]] = INT_MAX;
    for (int k = 0; k < g->ninputs; k++)
        last[g->inputs[k]] = INT_MAX;   /* callers may read back their inputs */
    alias_groups(x, owner, defn, last, alias);
    *total = 0;
    for (int v = 0; v < nv; v++) {
        if (x->kind[v] != V_INPUT && x->kind[v] != V_ACT)
            continue;
        if (alias[v] != v) {   /* its group's root, a lower value, is placed already */
            x->offset[v] = x->offset[alias[v]];
            continue;
        }
        size_t sz = align_up(qs_exec_value_bytes(x, v) + 1);
        int lst = last[v] < defn[v] ? defn[v] : last[v];
        x->offset[v] = place(live, nlive, sz, defn[v], lst);
        live[nlive++] = (block){ x->offset[v], sz, defn[v], lst };
        if (x->offset[v] + sz > *total)
            *total = x->offset[v] + sz;
    }
    free(last);
    free(defn);
    free(alias);
    free(live);
    return 0;
}
