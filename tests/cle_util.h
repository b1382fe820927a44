/* Helpers shared by the CLE tests (test-cle.c, test-cle-absorb.c): small graphs built node by node,
 * run through the executor, and compared. */
#ifndef QS_TESTS_CLE_UTIL_H
#define QS_TESTS_CLE_UTIL_H

#include "tests/opcheck.h"
#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/quant/cle.h"

static inline int init_t(qs_graph *g, const char *name, qs_tensor *t)
{
    int id = qs_graph_value(g, name);
    qs_graph_set_init_steal(g, id, t);
    return id;
}

static inline int init(qs_graph *g, const char *name, int ndim, const int64_t *shape, float lo, float hi)
{
    return init_t(g, name, opcheck_rand(ndim, shape, lo, hi));
}

static inline int input(qs_graph *g, const char *name, int ndim, const int64_t *shape)
{
    int id = qs_graph_value(g, name);
    qs_value *v = &g->values[id];
    v->dtype = QS_F32;
    v->ndim = ndim;
    memcpy(v->shape, shape, ndim * sizeof *shape);
    v->shape[0] = -1;
    g->inputs = realloc(g->inputs, (g->ninputs + 1) * sizeof *g->inputs);
    g->inputs[g->ninputs++] = id;
    return id;
}

static inline void output(qs_graph *g, const char *name)
{
    g->outputs = realloc(g->outputs, (g->noutputs + 1) * sizeof *g->outputs);
    g->outputs[g->noutputs++] = qs_graph_value(g, name);
}

static inline qs_node *node(qs_graph *g, const char *op, const char *name, int nin, const int *in, const char *out)
{
    int o = qs_graph_value(g, out);
    int id = qs_graph_add_node(g, op, name, nin, in, 1, &o);
    return &g->nodes[id];
}

static inline int val(qs_graph *g, const char *name) { return qs_graph_value(g, name); }

static inline qs_graph *graph(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    return g;
}

/* Conv named name reading x with a random weight [m, cin/group, k, k] whose output channel i is
 * multiplied by spread^(i − m/2) (the imbalance CLE is for), and a random bias. */
static inline void conv(qs_graph *g, const char *name, const char *x, int64_t cin, int64_t m, int64_t k, int64_t group,
                 float spread, int pad, const char *out)
{
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s_W", name);
    snprintf(bn, sizeof bn, "%s_b", name);
    int64_t ws[] = { m, cin / group, k, k };
    qs_tensor *w = opcheck_rand(4, ws, -1, 1);
    int64_t per = qs_numel(w) / m;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < per; j++)
            qs_f32(w)[i * per + j] *= powf(spread, (float)i - m / 2.f);
    int in[] = { val(g, x), init_t(g, wn, w), init(g, bn, 1, &m, -0.5f, 0.5f) };
    qs_node *n = node(g, "Conv", name, 3, in, out);
    qs_node_set_int(n, "group", group);
    if (pad) {
        int64_t pads[] = { pad, pad, pad, pad };
        qs_node_set_ints(n, "pads", 4, pads);
    }
}

static inline void act(qs_graph *g, const char *op, const char *name, const char *x, const char *out)
{
    int in[] = { val(g, x) };
    node(g, op, name, 1, in, out);
}

static inline qs_tensor *run(qs_graph *g, const qs_tensor *in)
{
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    if (!x || qs_exec_plan(x, in->shape[0], &e) < 0 || qs_exec_set_input(x, 0, in, &e) < 0 ||
        qs_exec_forward(x, &e) < 0)
        QT_FAIL_("running the graph: %s", e.msg);
    qs_tensor *y = qs_tensor_copy(qs_exec_output(x, 0));
    qs_exec_free(x);
    return y;
}

/* max |a − b| ≤ rtol · max |b|; returns the relative difference */
static inline double assert_same(const qs_tensor *a, const qs_tensor *b, double rtol)
{
    ASSERT(qs_shape_eq(a, b));
    double diff = 0, mag = 0;
    for (int64_t i = 0; i < qs_numel(a); i++) {
        diff = fmax(diff, fabs(qs_f32(a)[i] - qs_f32(b)[i]));
        mag = fmax(mag, fabs(qs_f32(b)[i]));
    }
    if (!(diff <= rtol * mag + 1e-30))
        QT_FAIL_("outputs differ by %g (largest output %g, rtol %g)", diff, mag, rtol);
    return diff / (mag > 0 ? mag : 1);
}

static inline const qs_node *find_node(const qs_graph *g, const char *name)
{
    for (int i = 0; i < g->nnodes; i++)
        if (!strcmp(g->nodes[i].name, name))
            return &g->nodes[i];
    return NULL;
}

static inline const qs_tensor *weight(const qs_graph *g, const char *layer)
{
    const qs_node *n = find_node(g, layer);
    ASSERT(n);
    return g->values[n->in[1]].init;
}

static inline const qs_tensor *bias(const qs_graph *g, const char *layer)
{
    const qs_node *n = find_node(g, layer);
    ASSERT(n && n->nin > 2 && n->in[2] >= 0);
    return g->values[n->in[2]].init;
}


static inline qs_cle_report *cle(qs_graph *g, qs_bn_record *bn, int nbn, const qs_cle_config *cfg)
{
    qs_cle_report *r = NULL;
    qs_err e = {0};
    if (qs_cle(g, bn, nbn, cfg, &r, &e) < 0)
        QT_FAIL_("qs_cle: %s", e.msg);
    ASSERT(r);
    qs_err te = {0};
    if (qs_graph_toposort(g, &te) < 0)
        QT_FAIL_("graph after CLE: %s", te.msg);
    return r;
}


#endif
