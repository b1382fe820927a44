/* Small graphs built by hand for the QuantSim tests (tests/test-quantsim.c, placement and
 * numerics; tests/test-quantsim-export.c, QDQ and encodings export): builders for values, weights
 * and nodes, the models both use (conv-relu-conv, residual, concat, pool-gemm, matmul, a tiny Gemm
 * whose every product is exact), and helpers that make a sim, calibrate it, run a graph and
 * export it. Weights come from a fixed xorshift stream, so every run sees the same numbers. */
#ifndef QD_TESTS_QSIM_GRAPHS_H
#define QD_TESTS_QSIM_GRAPHS_H

#include "tests/harness.h"

#include "engine/quant/export.h"
#include "tests/qsim-util.h"

/* --- graph building -------------------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ull;
static inline float urand(float lo, float hi)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 11) * (1.0 / 9007199254740992.0));
}

static inline qs_graph *new_graph(int opset)
{
    qs_graph *g = qs_graph_new();
    ASSERT(g);
    ASSERT_EQ(qs_graph_set_opset(g, "", opset), 0);
    return g;
}

/* a float input with a symbolic batch dim */
static inline int add_input(qs_graph *g, const char *name, int ndim, const int64_t *shape)
{
    int v = qs_graph_value(g, name);
    g->values[v].dtype = QS_F32;
    g->values[v].ndim = ndim;
    memcpy(g->values[v].shape, shape, ndim * sizeof *shape);
    g->values[v].shape[0] = -1;
    g->inputs = realloc(g->inputs, (g->ninputs + 1) * sizeof *g->inputs);
    g->inputs[g->ninputs++] = v;
    return v;
}

static inline void add_output(qs_graph *g, const char *name)
{
    g->outputs = realloc(g->outputs, (g->noutputs + 1) * sizeof *g->outputs);
    g->outputs[g->noutputs++] = qs_graph_value(g, name);
}

/* random weights in [-1, 1) (or the given values) */
static inline int add_weight(qs_graph *g, const char *name, int ndim, const int64_t *shape, const float *v)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = v ? v[i] : urand(-1, 1);
    int id = qs_graph_value(g, name);
    qs_graph_set_init_steal(g, id, t);
    return id;
}

/* ins/outs: comma-separated value names ("" for an omitted input) */
static inline int split_names(qs_graph *g, const char *list, int *ids)
{
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *s = buf, *tok; (tok = strsep(&s, ",")) != NULL;)
        ids[n++] = *tok ? qs_graph_value(g, tok) : -1;
    return n;
}

static inline qs_node *add_node(qs_graph *g, const char *op, const char *name, const char *ins, const char *outs)
{
    int in[8], out[8];
    int nin = split_names(g, ins, in), nout = split_names(g, outs, out);
    int id = qs_graph_add_node(g, op, name, nin, in, nout, out);
    ASSERT(id >= 0);
    return &g->nodes[id];
}

static inline void conv(qs_graph *g, const char *name, const char *x, const char *y, int cin, int cout, int k, int bias)
{
    char wn[64], bn[64], ins[256];
    int64_t ws[4] = { cout, cin, k, k }, bs[1] = { cout };
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    add_weight(g, wn, 4, ws, NULL);
    if (bias)
        add_weight(g, bn, 1, bs, NULL);
    snprintf(ins, sizeof ins, bias ? "%s,%s,%s" : "%s,%s", x, wn, bn);
    qs_node *n = add_node(g, "Conv", name, ins, y);
    int64_t pads[4] = { k / 2, k / 2, k / 2, k / 2 };
    qs_node_set_ints(n, "pads", 4, pads);
}

/* x [N,2,5,5] → conv1 → relu1 → conv2 → y */
static inline qs_graph *conv_relu_conv(void)
{
    qs_graph *g = new_graph(13);
    int64_t xs[4] = { 1, 2, 5, 5 };
    add_input(g, "x", 4, xs);
    conv(g, "conv1", "x", "c1", 2, 3, 3, 1);
    add_node(g, "Relu", "relu1", "c1", "r1");
    conv(g, "conv2", "r1", "y", 3, 2, 1, 1);
    add_output(g, "y");
    return g;
}

static inline qs_tensor *rand_tensor(int ndim, const int64_t *shape, float lo, float hi)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = urand(lo, hi);
    return t;
}

static inline qs_quantsim *make_sim(const qs_graph *g, const qs_qsim_config *cfg)
{
    qs_err e = {0};
    qs_quantsim *sim = qs_quantsim_new(g, cfg, &e);
    if (!sim)
        QT_FAIL_("qs_quantsim_new: %s", e.msg);
    return sim;
}

static inline const qs_quantizer *get_q(const qs_quantsim *sim, const char *name)
{
    int i = qs_quantsim_find(sim, name);
    if (i < 0)
        QT_FAIL_("no quantizer named '%s'", name);
    return &sim->q[i];
}

static inline int count_ops(const qs_graph *g, const char *op)
{
    int k = 0;
    for (int i = 0; i < g->nnodes; i++)
        k += !strcmp(g->nodes[i].op, op);
    return k;
}

static inline qs_tensor *run_one(qs_graph *g, const qs_tensor *x)
{
    qs_err e = {0};
    qs_tensor *out[4] = { 0 };
    const qs_tensor *in[1] = { x };
    if (qsu_run(g, in, out, &e) < 0)
        QT_FAIL_("run: %s", e.msg);
    for (int i = 1; i < g->noutputs; i++)
        qs_tensor_free(out[i]);
    return out[0];
}

static inline void assert_same(const qs_tensor *a, const qs_tensor *b)
{
    ASSERT(qs_shape_eq(a, b));
    for (int64_t i = 0; i < qs_numel(a); i++)
        if (memcmp(&qs_f32(a)[i], &qs_f32(b)[i], sizeof(float)))
            QT_FAIL_("element %lld differs: %.9g vs %.9g", (long long)i, qs_f32(a)[i], qs_f32(b)[i]);
}

static inline void calibrate(qs_quantsim *sim, const qs_tensor *x)
{
    qs_err e = {0};
    const qs_tensor *in[1] = { x };
    if (qsu_calibrate_minmax(sim, in, &e) < 0)
        QT_FAIL_("calibration: %s", e.msg);
}

static inline qs_graph *export_qdq(const qs_quantsim *sim)
{
    qs_err e = {0};
    qs_graph *q = NULL;
    if (qs_export_qdq(sim, &q, &e) < 0)
        QT_FAIL_("export: %s", e.msg);
    return q;
}

static inline const qs_value *find(const qs_graph *g, const char *name)
{
    int v = qs_graph_find_value(g, name);
    if (v < 0)
        QT_FAIL_("no value '%s' in the export", name);
    return &g->values[v];
}

/* --- models ---------------------------------------------------------------------------------- */

/* x → conv a → relu → conv b ─┐
 *   └────────────────────────── Add → Relu → out    (residual Add + Relu quantized once, at the Relu) */
static inline qs_graph *residual(int relu_after_add)
{
    qs_graph *g = new_graph(13);
    int64_t xs[4] = { 1, 3, 4, 4 };
    add_input(g, "x", 4, xs);
    conv(g, "conv_a", "x", "a", 3, 3, 3, 1);
    add_node(g, "Relu", "relu_a", "a", "ra");
    conv(g, "conv_b", "ra", "b", 3, 3, 3, 1);
    add_node(g, "Add", "add", "b,x", relu_after_add ? "s" : "out");
    if (relu_after_add)
        add_node(g, "Relu", "relu_out", "s", "out");
    add_output(g, "out");
    return g;
}

static inline qs_graph *concat_model(void)
{
    qs_graph *g = new_graph(13);
    int64_t xs[4] = { 1, 2, 4, 4 };
    add_input(g, "x", 4, xs);
    conv(g, "c1", "x", "y1", 2, 2, 3, 1);
    conv(g, "c2", "x", "y2", 2, 3, 1, 1);
    qs_node *n = add_node(g, "Concat", "cat", "y1,y2", "cat_out");
    qs_node_set_int(n, "axis", 1);
    conv(g, "c3", "cat_out", "out", 5, 2, 1, 1);
    add_output(g, "out");
    return g;
}

/* conv → relu → MaxPool → Flatten → Gemm(transB) → logits */
static inline qs_graph *pool_gemm_model(void)
{
    qs_graph *g = new_graph(13);
    int64_t xs[4] = { 1, 2, 4, 4 }, ws[2] = { 5, 12 }, bs[1] = { 5 };
    add_input(g, "x", 4, xs);
    conv(g, "conv", "x", "c", 2, 3, 3, 1);
    add_node(g, "Relu", "relu", "c", "r");
    qs_node *n = add_node(g, "MaxPool", "pool", "r", "p");
    int64_t k[2] = { 2, 2 };
    qs_node_set_ints(n, "kernel_shape", 2, k);
    qs_node_set_ints(n, "strides", 2, k);
    add_node(g, "Flatten", "flat", "p", "f");
    add_weight(g, "fc.weight", 2, ws, NULL);
    add_weight(g, "fc.bias", 1, bs, NULL);
    n = add_node(g, "Gemm", "fc", "f,fc.weight,fc.bias", "logits");
    qs_node_set_int(n, "transB", 1);
    add_output(g, "logits");
    return g;
}

/* x [N,4] → MatMul W [4,3] → Add bias → Relu → y */
static inline qs_graph *matmul_model(void)
{
    qs_graph *g = new_graph(13);
    int64_t xs[2] = { 1, 4 }, ws[2] = { 4, 3 }, bs[1] = { 3 };
    add_input(g, "x", 2, xs);
    add_weight(g, "W", 2, ws, NULL);
    add_weight(g, "bias", 1, bs, NULL);
    add_node(g, "MatMul", "mm", "x,W", "m");
    add_node(g, "Add", "bias_add", "m,bias", "s");
    add_node(g, "Relu", "relu", "s", "y");
    add_output(g, "y");
    return g;
}

/* x [1,2] → Gemm(W [2,2], b [2], transB) → y, every number picked so that each product is exact */
static inline qs_graph *tiny_gemm(void)
{
    qs_graph *g = new_graph(13);
    int64_t xs[2] = { 1, 2 }, ws[2] = { 2, 2 }, bs[1] = { 2 };
    float w[4] = { 0.5f, -0.26f, 0.74f, 0.1f }, b[2] = { 0.01f, -0.3f };
    add_input(g, "x", 2, xs);
    add_weight(g, "W", 2, ws, w);
    add_weight(g, "b", 1, bs, b);
    qs_node *n = add_node(g, "Gemm", "fc", "x,W,b", "y");
    qs_node_set_int(n, "transB", 1);
    add_output(g, "y");
    return g;
}

static inline qs_quantsim *tiny_sim(qs_graph *g)
{
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(sim->nq, 4);
    qs_quantsim_set(sim, qs_quantsim_find(sim, "x"), -1, 0.0625f, 128);
    int w = qs_quantsim_find(sim, "W");
    qs_quantsim_set(sim, w, 0, 0.125f, 0);
    qs_quantsim_set(sim, w, 1, 0.25f, 0);
    qs_quantsim_set(sim, qs_quantsim_find(sim, "y"), -1, 0.125f, 128);
    return sim;
}

#endif
