/* QuantSim placement (paper §2.3–2.4, §3) and its QDQ / encodings export, on small graphs built
 * by hand: which quantizers exist (kind, axis, channels, grid), that bypassing every quantizer
 * gives the FP32 graph back bit for bit, that a tiny Gemm gives the hand-computed quantized
 * result, that the exported QDQ graph (and its ONNX round trip) computes exactly what the
 * simulation computes, and that the encodings carry the right names, scales and offsets. */
#include "tests/harness.h"

#include <jansson.h>

#include "engine/onnx.h"
#include "engine/quant/export.h"
#include "tests/qsim-util.h"

/* call must report into a qs_err named e in scope */
#define CHECK(call) do { if ((call) < 0) QT_FAIL_("%s: %s", #call, e.msg); } while (0)

/* --- graph building -------------------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ull;
static float urand(float lo, float hi)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 11) * (1.0 / 9007199254740992.0));
}

static qs_graph *new_graph(int opset)
{
    qs_graph *g = qs_graph_new();
    ASSERT(g);
    ASSERT_EQ(qs_graph_set_opset(g, "", opset), 0);
    return g;
}

/* a float input with a symbolic batch dim */
static int add_input(qs_graph *g, const char *name, int ndim, const int64_t *shape)
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

static void add_output(qs_graph *g, const char *name)
{
    g->outputs = realloc(g->outputs, (g->noutputs + 1) * sizeof *g->outputs);
    g->outputs[g->noutputs++] = qs_graph_value(g, name);
}

/* random weights in [-1, 1) (or the given values) */
static int add_weight(qs_graph *g, const char *name, int ndim, const int64_t *shape, const float *v)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = v ? v[i] : urand(-1, 1);
    int id = qs_graph_value(g, name);
    qs_graph_set_init_steal(g, id, t);
    return id;
}

/* ins/outs: comma-separated value names ("" for an omitted input) */
static int split_names(qs_graph *g, const char *list, int *ids)
{
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *s = buf, *tok; (tok = strsep(&s, ",")) != NULL;)
        ids[n++] = *tok ? qs_graph_value(g, tok) : -1;
    return n;
}

static qs_node *add_node(qs_graph *g, const char *op, const char *name, const char *ins, const char *outs)
{
    int in[8], out[8];
    int nin = split_names(g, ins, in), nout = split_names(g, outs, out);
    int id = qs_graph_add_node(g, op, name, nin, in, nout, out);
    ASSERT(id >= 0);
    return &g->nodes[id];
}

static void conv(qs_graph *g, const char *name, const char *x, const char *y, int cin, int cout, int k, int bias)
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
static qs_graph *conv_relu_conv(void)
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

static qs_tensor *rand_tensor(int ndim, const int64_t *shape, float lo, float hi)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = urand(lo, hi);
    return t;
}

static qs_quantsim *make_sim(const qs_graph *g, const qs_qsim_config *cfg)
{
    qs_err e = {0};
    qs_quantsim *sim = qs_quantsim_new(g, cfg, &e);
    if (!sim)
        QT_FAIL_("qs_quantsim_new: %s", e.msg);
    return sim;
}

static const qs_quantizer *get_q(const qs_quantsim *sim, const char *name)
{
    int i = qs_quantsim_find(sim, name);
    if (i < 0)
        QT_FAIL_("no quantizer named '%s'", name);
    return &sim->q[i];
}

static int count_ops(const qs_graph *g, const char *op)
{
    int k = 0;
    for (int i = 0; i < g->nnodes; i++)
        k += !strcmp(g->nodes[i].op, op);
    return k;
}

static qs_tensor *run_one(qs_graph *g, const qs_tensor *x)
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

static void assert_same(const qs_tensor *a, const qs_tensor *b)
{
    ASSERT(qs_shape_eq(a, b));
    for (int64_t i = 0; i < qs_numel(a); i++)
        if (memcmp(&qs_f32(a)[i], &qs_f32(b)[i], sizeof(float)))
            QT_FAIL_("element %lld differs: %.9g vs %.9g", (long long)i, qs_f32(a)[i], qs_f32(b)[i]);
}

static void calibrate(qs_quantsim *sim, const qs_tensor *x)
{
    qs_err e = {0};
    const qs_tensor *in[1] = { x };
    if (qsu_calibrate_minmax(sim, in, &e) < 0)
        QT_FAIL_("calibration: %s", e.msg);
}

static qs_graph *export_qdq(const qs_quantsim *sim)
{
    qs_err e = {0};
    qs_graph *q = NULL;
    if (qs_export_qdq(sim, &q, &e) < 0)
        QT_FAIL_("export: %s", e.msg);
    return q;
}

/* --- placement --------------------------------------------------------------------------------- */

TEST(conv_relu_conv_quantizers)
{
    qs_graph *g = conv_relu_conv();
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(sim->nq, 7);
    const qs_quantizer *x = get_q(sim, "x"), *w1 = get_q(sim, "conv1.weight"), *b1 = get_q(sim, "conv1.bias"),
                       *r1 = get_q(sim, "r1"), *w2 = get_q(sim, "conv2.weight"), *b2 = get_q(sim, "conv2.bias"),
                       *y = get_q(sim, "y");
    ASSERT_EQ(x->kind, QS_Q_INPUT);
    ASSERT_EQ(x->grid.qmin, 0);
    ASSERT_EQ(x->grid.qmax, 255);
    ASSERT_EQ(w1->kind, QS_Q_WEIGHT);
    ASSERT_EQ(w1->axis, 0);
    ASSERT_EQ(w1->nch, 3);
    ASSERT_EQ(w1->grid.qmin, -128);
    ASSERT_EQ(w1->grid.qmax, 127);
    ASSERT_EQ(w1->symmetric, 1);
    ASSERT_EQ(w2->nch, 2);
    ASSERT_EQ(b1->kind, QS_Q_BIAS);
    ASSERT_EQ(b1->grid.bits, 32);
    ASSERT_EQ(b1->nch, 3);
    ASSERT_EQ(b1->axis, 0);
    ASSERT_EQ(b1->bias_of, w1 - sim->q);
    ASSERT_EQ(b1->bias_in, x - sim->q);
    ASSERT_EQ(b2->bias_in, r1 - sim->q);   /* conv2 reads the fused group's output */
    ASSERT_EQ(r1->kind, QS_Q_ACT);
    ASSERT_STR_EQ(r1->layer, "conv1");
    ASSERT_EQ(y->kind, QS_Q_ACT);
    ASSERT_EQ(qs_quantsim_find(sim, "c1"), -1);   /* inside conv1+relu1 */
    ASSERT_EQ(count_ops(sim->g, "FakeQuant"), 7);
    /* weights start from min-max: symmetric int8, s = max|w| / 127 per channel */
    const qs_tensor *W = g->values[qs_graph_find_value(g, "conv1.weight")].init;
    for (int c = 0; c < 3; c++) {
        float m = 0;
        for (int k = 0; k < 18; k++)
            m = fmaxf(m, fabsf(qs_f32(W)[c * 18 + k]));
        ASSERT_CLOSE(qs_quantsim_scales(sim, (int)(w1 - sim->q))[c], m / 127, 1e-6, 0);
        ASSERT_EQ(qs_quantsim_zeros(sim, (int)(w1 - sim->q))[c], 0);
    }
    ASSERT(w1->initialized && !x->initialized && !b1->initialized);
    /* the graph keeps its input and output names; the layer writes y_fp */
    ASSERT_STR_EQ(sim->g->values[sim->g->inputs[0]].name, "x");
    ASSERT_STR_EQ(sim->g->values[sim->g->outputs[0]].name, "y");
    ASSERT_STR_EQ(sim->g->values[y->value].name, "y_fp");
    ASSERT_EQ(y->out, sim->g->outputs[0]);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(conv_bn_relu_is_one_group)
{
    qs_graph *g = new_graph(13);
    int64_t xs[4] = { 1, 2, 4, 4 }, cs[1] = { 3 };
    add_input(g, "x", 4, xs);
    conv(g, "conv", "x", "c", 2, 3, 3, 0);
    float ones[3] = { 1, 1, 1 }, zeros[3] = { 0, 0, 0 };
    add_weight(g, "gamma", 1, cs, NULL);
    add_weight(g, "beta", 1, cs, NULL);
    add_weight(g, "mean", 1, cs, zeros);
    add_weight(g, "var", 1, cs, ones);
    add_node(g, "BatchNormalization", "bn", "c,gamma,beta,mean,var", "b");
    add_node(g, "Relu", "relu", "b", "r");
    add_node(g, "GlobalAveragePool", "gap", "r", "p");
    add_output(g, "p");
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(sim->nq, 4);   /* x, conv.weight, r, p */
    ASSERT_EQ(qs_quantsim_find(sim, "c"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "b"), -1);
    ASSERT_EQ(get_q(sim, "r")->kind, QS_Q_ACT);
    ASSERT_STR_EQ(get_q(sim, "r")->layer, "conv");
    ASSERT_EQ(get_q(sim, "p")->kind, QS_Q_ACT);   /* average pooling leaves the grid */
    ASSERT_EQ(qs_quantsim_find(sim, "gamma"), -1);   /* BN parameters are not weights */
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* x → conv a → relu → conv b ─┐
 *   └────────────────────────── Add → Relu → out    (residual Add + Relu quantized once, at the Relu) */
static qs_graph *residual(int relu_after_add)
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

TEST(residual_add)
{
    qs_graph *g = residual(1);
    qs_quantsim *sim = make_sim(g, NULL);
    /* x, a: W,b, ra, b: W,b, b (conv_b's output feeds the Add), out */
    ASSERT_EQ(sim->nq, 8);
    ASSERT_EQ(get_q(sim, "b")->kind, QS_Q_ACT);
    ASSERT_EQ(qs_quantsim_find(sim, "s"), -1);
    ASSERT_STR_EQ(get_q(sim, "out")->layer, "add");
    qs_quantsim_free(sim);
    qs_graph_free(g);

    g = residual(0);
    sim = make_sim(g, NULL);
    ASSERT_EQ(sim->nq, 8);
    ASSERT_STR_EQ(get_q(sim, "out")->layer, "add");
    ASSERT_EQ(get_q(sim, "out")->grid.qmin, 0);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

static qs_graph *concat_model(void)
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

TEST(concat_output_quantized)
{
    qs_graph *g = concat_model();
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(get_q(sim, "y1")->kind, QS_Q_ACT);
    ASSERT_EQ(get_q(sim, "y2")->kind, QS_Q_ACT);
    const qs_quantizer *cat = get_q(sim, "cat_out");
    ASSERT_EQ(cat->kind, QS_Q_ACT);
    ASSERT_EQ(get_q(sim, "c3.bias")->bias_in, cat - sim->q);
    /* the input is quantized once, for both readers */
    ASSERT_EQ(get_q(sim, "x")->kind, QS_Q_INPUT);
    ASSERT_EQ(sim->nq, 1 + 3 + 3 + 1 + 3);   /* x, c1 (W, b, y1), c2, cat_out, c3 */
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* conv → relu → MaxPool → Flatten → Gemm(transB) → logits */
static qs_graph *pool_gemm_model(void)
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

TEST(maxpool_flatten_pass_through)
{
    qs_graph *g = pool_gemm_model();
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(qs_quantsim_find(sim, "p"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "f"), -1);
    const qs_quantizer *r = get_q(sim, "r"), *fw = get_q(sim, "fc.weight"), *fb = get_q(sim, "fc.bias");
    ASSERT_EQ(fw->axis, 0);   /* transB: B is [N, K] */
    ASSERT_EQ(fw->nch, 5);
    ASSERT_EQ(fb->bias_in, r - sim->q);   /* s_in comes through MaxPool and Flatten */
    ASSERT_EQ(fb->nch, 5);
    ASSERT_EQ(get_q(sim, "logits")->kind, QS_Q_ACT);
    ASSERT_EQ(sim->nq, 7);
    qs_quantsim_free(sim);
    qs_graph_free(g);

    /* per tensor: one scale each, bias scale per tensor too */
    g = pool_gemm_model();
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.per_channel = 0;
    sim = make_sim(g, &cfg);
    ASSERT_EQ(get_q(sim, "fc.weight")->axis, -1);
    ASSERT_EQ(get_q(sim, "fc.weight")->nch, 1);
    ASSERT_EQ(get_q(sim, "fc.bias")->nch, 1);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* x [N,4] → MatMul W [4,3] → Add bias → Relu → y */
static qs_graph *matmul_model(void)
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

TEST(matmul_weight_axis_and_bias_add_fused)
{
    qs_graph *g = matmul_model();
    qs_quantsim *sim = make_sim(g, NULL);
    const qs_quantizer *w = get_q(sim, "W");
    ASSERT_EQ(w->axis, 1);   /* B [K, N]: output channels on axis 1 */
    ASSERT_EQ(w->nch, 3);
    ASSERT_EQ(qs_quantsim_find(sim, "m"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "s"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "bias"), -1);   /* an Add's constant stays float */
    ASSERT_STR_EQ(get_q(sim, "y")->layer, "mm");
    ASSERT_EQ(sim->nq, 3);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* weights computed by the model from constants: MatMul(x, Reshape(W0, shape)) and a Conv whose
 * weight is a Constant node — both folded into initializers and quantized like any weight */
TEST(constant_weights_folded)
{
    qs_graph *g = new_graph(13);
    int64_t xs[4] = { 1, 2, 3, 3 }, w0s[4] = { 18, 4, 1, 1 }, shp[2] = { 18, 4 };
    add_input(g, "x", 4, xs);
    qs_node *n = add_node(g, "Constant", "wconst", "", "cw");
    int64_t cws[4] = { 2, 2, 1, 1 };
    qs_tensor *cw = rand_tensor(4, cws, -1, 1);
    n->attr = calloc(1, sizeof *n->attr);
    n->attr[0].name = strdup("value");
    n->attr[0].type = QS_ATTR_TENSOR;
    n->attr[0].t = cw;
    n->nattr = 1;
    add_node(g, "Conv", "conv", "x,cw", "c");
    add_node(g, "Flatten", "flat", "c", "f");
    add_weight(g, "W0", 4, w0s, NULL);
    qs_tensor *st = qs_tensor_new(QS_I64, 1, (int64_t[]){ 2 });
    memcpy(st->data, shp, sizeof shp);
    qs_graph_set_init_steal(g, qs_graph_value(g, "wshape"), st);
    add_node(g, "Reshape", "wreshape", "W0,wshape", "W");
    add_node(g, "MatMul", "mm", "f,W", "y");
    add_output(g, "y");
    qs_quantsim *sim = make_sim(g, NULL);
    const qs_quantizer *w = get_q(sim, "W"), *c = get_q(sim, "cw");
    ASSERT_EQ(w->kind, QS_Q_WEIGHT);
    ASSERT_EQ(w->axis, 1);
    ASSERT_EQ(w->nch, 4);
    ASSERT_EQ(c->kind, QS_Q_WEIGHT);
    ASSERT_EQ(c->nch, 2);
    ASSERT_EQ(count_ops(sim->g, "Reshape"), 0);
    ASSERT_EQ(count_ops(sim->g, "Constant"), 0);
    /* same function: the folded sim with everything bypassed equals the FP32 graph */
    int64_t bx[4] = { 3, 2, 3, 3 };
    qs_tensor *x = rand_tensor(4, bx, -1, 1), *ref = run_one(g, x);
    qs_quantsim_bypass_kind(sim, -1, 1);
    qs_tensor *y = run_one(sim->g, x);
    assert_same(y, ref);
    qs_tensor_free(x);
    qs_tensor_free(ref);
    qs_tensor_free(y);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(exclusion_keeps_group_fp32)
{
    qs_graph *g = conv_relu_conv();
    char *ex[] = { "relu1" };
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.exclude = ex;
    cfg.nexclude = 1;
    qs_quantsim *sim = make_sim(g, &cfg);
    /* relu1 is in conv1's group: conv1's weight, bias and output stay float, and so does the
     * model input, read only by the excluded group; conv2's bias has no s_in */
    ASSERT_EQ(qs_quantsim_find(sim, "conv1.weight"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "conv1.bias"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "r1"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "x"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "conv2.bias"), -1);
    ASSERT(qs_quantsim_find(sim, "conv2.weight") >= 0);
    ASSERT(qs_quantsim_find(sim, "y") >= 0);
    ASSERT_EQ(sim->nq, 2);
    json_t *enc = qs_export_encodings(sim);
    ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(enc, "excluded_layers"), 0)), "relu1");
    json_decref(enc);
    qs_quantsim_free(sim);

    char *bad[] = { "no_such_node" };
    cfg.exclude = bad;
    qs_err e = {0};
    ASSERT(qs_quantsim_new(g, &cfg, &e) == NULL);
    ASSERT_STR_CONTAINS(e.msg, "no_such_node");
    qs_graph_free(g);
}

TEST(bad_config)
{
    qs_graph *g = conv_relu_conv();
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.abits = 1;
    qs_err e = {0};
    ASSERT(qs_quantsim_new(g, &cfg, &e) == NULL);
    ASSERT_STR_CONTAINS(e.msg, "activations.bits");
    cfg.abits = 8;
    cfg.wbits = 17;
    ASSERT(qs_quantsim_new(g, &cfg, &e) == NULL);
    ASSERT_STR_CONTAINS(e.msg, "weights.bits");
    qs_graph_free(g);
}

/* --- numerics ------------------------------------------------------------------------------------ */

TEST(bypassed_sim_equals_fp32)
{
    qs_graph *(*models[])(void) = { conv_relu_conv, concat_model, pool_gemm_model, matmul_model };
    for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
        qs_graph *g = models[m]();
        qs_quantsim *sim = make_sim(g, NULL);
        const qs_value *xin = &g->values[g->inputs[0]];
        int64_t shape[QS_MAX_DIMS];
        memcpy(shape, xin->shape, sizeof shape);
        shape[0] = 3;
        qs_tensor *x = rand_tensor(xin->ndim, shape, -2, 2);
        qs_tensor *ref = run_one(g, x);
        qs_quantsim_bypass_kind(sim, -1, 1);
        qs_tensor *y = run_one(sim->g, x);
        assert_same(y, ref);
        /* and quantizing changes it */
        calibrate(sim, x);
        qs_tensor *yq = run_one(sim->g, x);
        ASSERT(memcmp(yq->data, ref->data, qs_nbytes(ref)) != 0);
        qs_tensor_free(yq);
        qs_tensor_free(x);
        qs_tensor_free(ref);
        qs_tensor_free(y);
        qs_quantsim_free(sim);
        qs_graph_free(g);
    }
}

/* x [1,2] → Gemm(W [2,2], b [2], transB) → y, every number picked so that each product is exact */
static qs_graph *tiny_gemm(void)
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

static qs_quantsim *tiny_sim(qs_graph *g)
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

TEST(tiny_gemm_by_hand)
{
    qs_graph *g = tiny_gemm();
    qs_quantsim *sim = tiny_sim(g);
    /* bias scales follow s_x·s_w */
    int b = qs_quantsim_find(sim, "b");
    ASSERT(sim->q[b].initialized);
    ASSERT_EQ(qs_quantsim_scales(sim, b)[0], 0.0078125f);
    ASSERT_EQ(qs_quantsim_scales(sim, b)[1], 0.015625f);
    /* x = [0.3, -0.55] → q = [5, -9] → [0.3125, -0.5625]
     * W → [[4, -2], [3, 0]] → [[0.5, -0.25], [0.75, 0]]
     * b → [round(1.28), round(-19.2)] = [1, -19] → [0.0078125, -0.296875]
     * y = [0.15625 + 0.140625 + 0.0078125, 0.234375 - 0.296875] = [0.3046875, -0.0625]
     * y/0.125 = [2.4375, -0.5] → [2, -0 (half to even)] → [0.25, 0] */
    int64_t xs[2] = { 1, 2 };
    float xv[2] = { 0.3f, -0.55f };
    qs_tensor *x = qs_tensor_new(QS_F32, 2, xs);
    memcpy(x->data, xv, sizeof xv);
    qs_tensor *y = run_one(sim->g, x);
    ASSERT_EQ(qs_f32(y)[0], 0.25f);
    ASSERT_EQ(qs_f32(y)[1], 0.0f);
    /* without the output quantizer: the exact pre-quantization sums */
    qs_quantsim_bypass(sim, qs_quantsim_find(sim, "y"), 1);
    qs_tensor *y2 = run_one(sim->g, x);
    ASSERT_EQ(qs_f32(y2)[0], 0.3046875f);
    ASSERT_EQ(qs_f32(y2)[1], -0.0625f);
    qs_tensor_free(x);
    qs_tensor_free(y);
    qs_tensor_free(y2);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(minmax_ranges_from_data)
{
    qs_graph *g = tiny_gemm();
    qs_quantsim *sim = make_sim(g, NULL);
    int64_t xs[2] = { 4, 2 };
    float xv[8] = { -1.0f, 0.5f, 2.0f, -0.25f, 0.0f, 1.5f, 0.75f, -0.5f };
    qs_tensor *x = qs_tensor_new(QS_F32, 2, xs);
    memcpy(x->data, xv, sizeof xv);
    calibrate(sim, x);
    /* input over [-1, 2]: uint8 asymmetric s = 3/255, z = round(1/s) = round(85) = 85 */
    int xi = qs_quantsim_find(sim, "x");
    ASSERT_CLOSE(qs_quantsim_scales(sim, xi)[0], 3.0 / 255, 1e-7, 0);
    ASSERT_EQ(qs_quantsim_zeros(sim, xi)[0], 85);
    /* output range: calibration observes it with activation and bias quantizers off (float x,
     * float b) and weights quantized, as AIMET's compute_encodings does; the run then quantizes
     * x and b too */
    int wi = qs_quantsim_find(sim, "W"), bi = qs_quantsim_find(sim, "b"), yi = qs_quantsim_find(sim, "y");
    qs_grid ug = qs_grid_make(8, 0), sg = qs_grid_make(8, 1);
    const float *W = qs_f32(g->values[qs_graph_find_value(g, "W")].init);
    const float *B = qs_f32(g->values[qs_graph_find_value(g, "b")].init);
    float sx = qs_quantsim_scales(sim, xi)[0], zx = qs_quantsim_zeros(sim, xi)[0];
    float lo = INFINITY, hi = -INFINITY, ref[8];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 2; c++) {
            float sw = qs_quantsim_scales(sim, wi)[c], acc = 0, accq = 0;
            for (int k = 0; k < 2; k++) {
                float wq = qs_fake_quant1(W[c * 2 + k], sw, 0, sg);
                acc += xv[r * 2 + k] * wq;
                accq += qs_fake_quant1(xv[r * 2 + k], sx, zx, ug) * wq;
            }
            float sb = qs_quantsim_scales(sim, bi)[c], bq = qs_round_even(B[c] / sb) * sb;
            ref[r * 2 + c] = accq + bq;
            lo = fminf(lo, acc + B[c]);
            hi = fmaxf(hi, acc + B[c]);
        }
    float sy;
    int32_t zy;
    qs_qparams_from_range(ug, lo, hi, 0, 0, &sy, &zy);
    ASSERT_CLOSE(qs_quantsim_scales(sim, yi)[0], sy, 1e-6, 0);
    ASSERT_EQ(qs_quantsim_zeros(sim, yi)[0], zy);
    qs_tensor *y = run_one(sim->g, x);
    for (int i = 0; i < 8; i++)
        ASSERT_CLOSE(qs_f32(y)[i], qs_fake_quant1(ref[i], sy, (float)zy, ug), 0, 1e-6);
    qs_tensor_free(x);
    qs_tensor_free(y);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

static const qs_value *find(const qs_graph *g, const char *name);

/* A dead channel after BN folding: weights ~1e-12 beside a bias of 0.5. At s_in·s_w the bias
 * would be ~10^13 steps and clamp at int32; the weight scale of that channel is raised instead so
 * the bias survives, in the simulation and in the exported int32. */
TEST(dead_channel_keeps_its_bias)
{
    qs_graph *g = new_graph(13);
    int64_t xs[4] = { 1, 2, 3, 3 }, ws[4] = { 2, 2, 1, 1 }, bs[1] = { 2 };
    float w[4] = { 0.5f, -0.25f, 1e-12f, -2e-12f }, b[2] = { 0.1f, 0.5f };
    add_input(g, "x", 4, xs);
    add_weight(g, "W", 4, ws, w);
    add_weight(g, "B", 1, bs, b);
    add_node(g, "Conv", "conv", "x,W,B", "y");
    add_output(g, "y");
    qs_quantsim *sim = make_sim(g, NULL);
    int64_t bx[4] = { 4, 2, 3, 3 };
    qs_tensor *x = rand_tensor(4, bx, -1, 1);
    calibrate(sim, x);
    int wi = qs_quantsim_find(sim, "W"), bi = qs_quantsim_find(sim, "B"), xi = qs_quantsim_find(sim, "x");
    float sb = qs_quantsim_scales(sim, bi)[1];
    ASSERT(0.5f / sb <= 1073741824.f && 0.5f / sb > 1e8f);
    ASSERT_EQ(sb, qs_quantsim_scales(sim, xi)[0] * qs_quantsim_scales(sim, wi)[1]);
    ASSERT_CLOSE(qs_quantsim_scales(sim, wi)[0], 0.5 / 127, 1e-6, 0);   /* the live channel is untouched */
    qs_quantsim_bypass(sim, qs_quantsim_find(sim, "y"), 1);
    qs_tensor *y = run_one(sim->g, x);
    for (int64_t i = (2 * 2 + 1) * 9; i < (2 * 2 + 2) * 9; i++)   /* sample 2, channel 1: the bias alone */
        ASSERT_CLOSE(qs_f32(y)[i], 0.5, 0, 1e-6);
    qs_quantsim_bypass(sim, qs_quantsim_find(sim, "y"), 0);
    qs_graph *q = export_qdq(sim);
    const qs_tensor *bq = find(q, "B_quantized")->init;
    ASSERT_EQ(qs_i32(bq)[1], (int32_t)nearbyint(0.5f / sb));
    ASSERT_EQ(qs_f32(find(q, "B_scale")->init)[1], sb);
    qs_tensor_free(x);
    qs_tensor_free(y);
    qs_graph_free(q);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* --- export ---------------------------------------------------------------------------------- */

static void export_matches_sim(qs_graph *(*model)(void), const qs_qsim_config *cfg)
{
    qs_graph *g = model();
    qs_quantsim *sim = make_sim(g, cfg);
    const qs_value *xin = &g->values[g->inputs[0]];
    int64_t shape[QS_MAX_DIMS];
    memcpy(shape, xin->shape, sizeof shape);
    shape[0] = 8;
    qs_tensor *x = rand_tensor(xin->ndim, shape, -2, 2);
    calibrate(sim, x);
    qs_tensor *ys = run_one(sim->g, x);
    qs_graph *q = export_qdq(sim);
    ASSERT_EQ(count_ops(q, "FakeQuant"), 0);
    ASSERT(count_ops(q, "DequantizeLinear") > 0);
    ASSERT(qs_graph_opset(q, "") >= 13);
    ASSERT_EQ(qs_graph_opset(q, "quantd"), 0);
    ASSERT_EQ(q->ninputs, g->ninputs);
    ASSERT_EQ(q->noutputs, g->noutputs);
    ASSERT_STR_EQ(q->values[q->inputs[0]].name, g->values[g->inputs[0]].name);
    ASSERT_STR_EQ(q->values[q->outputs[0]].name, g->values[g->outputs[0]].name);
    qs_tensor *yq = run_one(q, x);
    assert_same(yq, ys);
    /* through an ONNX file and back */
    qs_err e = {0};
    void *buf;
    size_t len;
    qs_graph *q2;
    CHECK(qs_onnx_save_buffer(q, &buf, &len, &e));
    CHECK(qs_onnx_load_buffer(buf, len, NULL, &q2, &e));
    free(buf);
    qs_tensor *y2 = run_one(q2, x);
    assert_same(y2, ys);
    /* the simulation itself survives a file too (FakeQuant in the quantd domain) */
    qs_graph *s2;
    CHECK(qs_onnx_save_buffer(sim->g, &buf, &len, &e));
    CHECK(qs_onnx_load_buffer(buf, len, NULL, &s2, &e));
    free(buf);
    qs_tensor *y3 = run_one(s2, x);
    assert_same(y3, ys);
    qs_graph_free(s2);
    qs_tensor_free(y3);
    qs_tensor_free(y2);
    qs_graph_free(q2);
    qs_tensor_free(yq);
    qs_tensor_free(ys);
    qs_tensor_free(x);
    qs_graph_free(q);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

static qs_graph *residual_relu(void) { return residual(1); }

TEST(export_runs_bit_identical)
{
    qs_qsim_config pt = qs_qsim_config_default(), w4 = qs_qsim_config_default(), sym = qs_qsim_config_default();
    pt.per_channel = 0;
    w4.wbits = 4;
    sym.a_symmetric = 1;
    qs_graph *(*models[])(void) = { conv_relu_conv, concat_model, pool_gemm_model, matmul_model, residual_relu,
                                    tiny_gemm };
    for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
        export_matches_sim(models[m], NULL);
        export_matches_sim(models[m], &pt);
        export_matches_sim(models[m], &w4);
        export_matches_sim(models[m], &sym);
    }
}

static const qs_value *find(const qs_graph *g, const char *name)
{
    int v = qs_graph_find_value(g, name);
    if (v < 0)
        QT_FAIL_("no value '%s' in the export", name);
    return &g->values[v];
}

TEST(export_integers_by_hand)
{
    qs_graph *g = tiny_gemm();
    qs_quantsim *sim = tiny_sim(g);
    qs_graph *q = export_qdq(sim);
    const qs_tensor *wq = find(q, "W_quantized")->init, *bq = find(q, "b_quantized")->init,
                    *wz = find(q, "W_zero_point")->init, *xz = find(q, "x_zero_point")->init,
                    *bs = find(q, "b_scale")->init;
    ASSERT(wq && bq && wz && xz && bs);
    ASSERT_EQ(wq->dtype, QS_I8);
    int8_t wexp[4] = { 4, -2, 3, 0 };
    ASSERT_EQ(memcmp(wq->data, wexp, 4), 0);
    ASSERT_EQ(bq->dtype, QS_I32);
    ASSERT_EQ(qs_i32(bq)[0], 1);
    ASSERT_EQ(qs_i32(bq)[1], -19);
    ASSERT_EQ(wz->dtype, QS_I8);
    ASSERT_EQ(qs_numel(wz), 2);
    ASSERT_EQ(xz->dtype, QS_U8);
    ASSERT_EQ(qs_u8(xz)[0], 128);
    ASSERT_EQ(qs_f32(bs)[1], 0.015625f);
    /* the float weights are gone; per-channel weight DQ has axis 0, the bias DQ too */
    ASSERT(find(q, "W")->init == NULL);
    int ndq = 0;
    for (int i = 0; i < q->nnodes; i++) {
        const qs_node *n = &q->nodes[i];
        if (!strcmp(n->op, "DequantizeLinear") && n->in[0] == qs_graph_find_value(q, "W_quantized")) {
            ASSERT_EQ(qs_node_int(n, "axis", -1), 0);
            ndq++;
        }
    }
    ASSERT_EQ(ndq, 1);
    ASSERT_EQ(count_ops(q, "QuantizeLinear"), 2);   /* x and y */
    qs_graph_free(q);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(export_repeats_qdq_after_pass_through)
{
    qs_graph *g = pool_gemm_model();
    qs_quantsim *sim = make_sim(g, NULL);
    int64_t xs[4] = { 4, 2, 4, 4 };
    qs_tensor *x = rand_tensor(4, xs, -1, 1);
    calibrate(sim, x);
    qs_graph *q = export_qdq(sim);
    /* x, r, logits + after MaxPool and Flatten */
    ASSERT_EQ(count_ops(q, "QuantizeLinear"), 5);
    int gemm = -1;
    for (int i = 0; i < q->nnodes; i++)
        if (!strcmp(q->nodes[i].op, "Gemm"))
            gemm = i;
    ASSERT(gemm >= 0);
    int p = q->values[q->nodes[gemm].in[0]].producer;
    ASSERT(p >= 0);
    ASSERT_STR_EQ(q->nodes[p].op, "DequantizeLinear");   /* the Gemm's input comes through Q/DQ */
    ASSERT_EQ(q->nodes[p].in[1], qs_graph_find_value(q, "r_scale"));
    qs_tensor_free(x);
    qs_graph_free(q);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(export_refusals)
{
    qs_graph *g = conv_relu_conv();
    qs_err e = {0};
    qs_graph *q = NULL;
    /* activation ranges never set */
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT(qs_export_qdq(sim, &q, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "'x'");
    ASSERT_STR_CONTAINS(e.msg, "no range");
    ASSERT(q == NULL);
    qs_quantsim_free(sim);
    /* a 6-bit activation grid has no ONNX type */
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.abits = 6;
    sim = make_sim(g, &cfg);
    int64_t xs[4] = { 2, 2, 5, 5 };
    qs_tensor *x = rand_tensor(4, xs, -1, 1);
    calibrate(sim, x);
    ASSERT(qs_export_qdq(sim, &q, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "6-bit");
    ASSERT_STR_CONTAINS(e.msg, "'x'");
    /* bypassing the activation quantizers exports the weights alone */
    qs_quantsim_bypass_kind(sim, QS_Q_ACT, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_INPUT, 1);
    q = export_qdq(sim);
    ASSERT_EQ(count_ops(q, "QuantizeLinear"), 0);
    ASSERT_EQ(count_ops(q, "DequantizeLinear"), 4);
    ASSERT_STR_EQ(q->values[q->outputs[0]].name, "y");
    qs_tensor *ys = run_one(sim->g, x), *yq = run_one(q, x);
    assert_same(yq, ys);
    qs_tensor_free(ys);
    qs_tensor_free(yq);
    qs_graph_free(q);
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(export_4_and_16_bit_activations_at_opset_21)
{
    int bits[2] = { 4, 16 };
    qs_dtype types[2] = { QS_U4, QS_U16 };
    for (int k = 0; k < 2; k++) {
        qs_graph *g = conv_relu_conv();
        qs_qsim_config cfg = qs_qsim_config_default();
        cfg.abits = bits[k];
        cfg.wbits = bits[k];
        qs_quantsim *sim = make_sim(g, &cfg);
        int64_t xs[4] = { 2, 2, 5, 5 };
        qs_tensor *x = rand_tensor(4, xs, -1, 1);
        calibrate(sim, x);
        qs_graph *q = export_qdq(sim);
        ASSERT_EQ(qs_graph_opset(q, ""), 21);
        ASSERT_EQ(find(q, "x_zero_point")->init->dtype, types[k]);
        ASSERT_EQ(find(q, "r1_zero_point")->init->dtype, types[k]);
        /* weights: int8 storage for 4 bits (values within [-8, 7]), int16 for 16 */
        const qs_tensor *w = find(q, "conv1.weight_quantized")->init;
        ASSERT_EQ(w->dtype, bits[k] == 4 ? QS_I8 : QS_I16);
        for (int64_t i = 0; bits[k] == 4 && i < qs_numel(w); i++)
            ASSERT(qs_i8(w)[i] >= -8 && qs_i8(w)[i] <= 7);
        /* the file keeps the types (4-bit packed two per byte on disk) */
        qs_err e = {0};
        void *buf;
        size_t len;
        qs_graph *q2;
        CHECK(qs_onnx_save_buffer(q, &buf, &len, &e));
        CHECK(qs_onnx_load_buffer(buf, len, NULL, &q2, &e));
        free(buf);
        ASSERT_EQ(find(q2, "x_zero_point")->init->dtype, types[k]);
        ASSERT_EQ(qs_graph_opset(q2, ""), 21);
        qs_graph_free(q2);
        qs_graph_free(q);
        qs_tensor_free(x);
        qs_quantsim_free(sim);
        qs_graph_free(g);
    }
}

TEST(export_raises_old_opsets)
{
    /* opset 11: Unsqueeze/Squeeze take axes as an attribute; opset 13 as an input */
    qs_graph *g = new_graph(11);
    int64_t xs[2] = { 1, 4 }, ws[2] = { 4, 3 }, ax[1] = { 1 };
    add_input(g, "x", 2, xs);
    add_weight(g, "W", 2, ws, NULL);
    add_node(g, "MatMul", "mm", "x,W", "m");
    qs_node *n = add_node(g, "Unsqueeze", "unsq", "m", "u");
    qs_node_set_ints(n, "axes", 1, ax);
    n = add_node(g, "Squeeze", "sq", "u", "s");
    qs_node_set_ints(n, "axes", 1, ax);
    n = add_node(g, "Softmax", "softmax", "s", "y");
    add_output(g, "y");
    qs_quantsim *sim = make_sim(g, NULL);
    int64_t bs[2] = { 5, 4 };
    qs_tensor *x = rand_tensor(2, bs, -1, 1);
    calibrate(sim, x);
    qs_graph *q = export_qdq(sim);
    ASSERT_EQ(qs_graph_opset(q, ""), 13);
    for (int i = 0; i < q->nnodes; i++)
        if (!strcmp(q->nodes[i].op, "Squeeze") || !strcmp(q->nodes[i].op, "Unsqueeze")) {
            ASSERT(qs_node_attr(&q->nodes[i], "axes") == NULL);
            ASSERT_EQ(q->nodes[i].nin, 2);
            const qs_tensor *a = q->values[q->nodes[i].in[1]].init;
            ASSERT(a && a->dtype == QS_I64 && qs_i64(a)[0] == 1);
        }
    qs_tensor *ys = run_one(sim->g, x), *yq = run_one(q, x);
    assert_same(yq, ys);
    qs_tensor_free(ys);
    qs_tensor_free(yq);
    qs_graph_free(q);
    qs_quantsim_free(sim);
    qs_tensor_free(x);
    qs_graph_free(g);

    /* Softmax over all dims from axis 1 of a rank-3 input cannot become an opset-13 Softmax */
    g = new_graph(11);
    int64_t x3[3] = { 1, 2, 3 };
    add_input(g, "x", 3, x3);
    add_node(g, "Relu", "relu", "x", "r");
    n = add_node(g, "Softmax", "sm", "r", "y");
    qs_node_set_int(n, "axis", 1);
    add_output(g, "y");
    sim = make_sim(g, NULL);
    int64_t b3[3] = { 2, 2, 3 };
    x = rand_tensor(3, b3, -1, 1);
    calibrate(sim, x);
    qs_err e = {0};
    ASSERT(qs_export_qdq(sim, &q, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "Softmax 'sm'");
    ASSERT_STR_CONTAINS(e.msg, "opset 13");
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* --- encodings ------------------------------------------------------------------------------- */

static json_t *find_enc(json_t *list, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
        if (!strcmp(json_string_value(json_object_get(v, "name")), name))
            return v;
    QT_FAIL_("no encoding for '%s'", name);
}

static double num(json_t *arr, size_t i) { return json_number_value(json_array_get(arr, i)); }

TEST(encodings_aimet_1_0_0)
{
    qs_graph *g = tiny_gemm();
    qs_quantsim *sim = tiny_sim(g);
    json_t *enc = qs_export_encodings(sim);
    ASSERT_STR_EQ(json_string_value(json_object_get(enc, "version")), "1.0.0");
    json_t *acts = json_object_get(enc, "activation_encodings"), *params = json_object_get(enc, "param_encodings");
    ASSERT_EQ(json_array_size(acts), 2);
    ASSERT_EQ(json_array_size(params), 2);
    json_t *x = find_enc(acts, "x");
    ASSERT_STR_EQ(json_string_value(json_object_get(x, "enc_type")), "PER_TENSOR");
    ASSERT_STR_EQ(json_string_value(json_object_get(x, "dtype")), "INT");
    ASSERT_EQ(json_integer_value(json_object_get(x, "bw")), 8);
    ASSERT(json_is_false(json_object_get(x, "is_sym")));
    ASSERT_EQ(num(json_object_get(x, "scale"), 0), 0.0625);
    ASSERT_EQ(num(json_object_get(x, "offset"), 0), -128);   /* uint8: offset = -zero point */
    json_t *w = find_enc(params, "W");
    ASSERT_STR_EQ(json_string_value(json_object_get(w, "enc_type")), "PER_CHANNEL");
    ASSERT(json_is_true(json_object_get(w, "is_sym")));
    ASSERT_EQ(num(json_object_get(w, "scale"), 1), 0.25);
    /* AIMET's offsets are on the unsigned grid: symmetric int8 weights have offset -128 */
    ASSERT_EQ(num(json_object_get(w, "offset"), 0), -128);
    json_t *b = find_enc(params, "b");
    ASSERT_EQ(json_integer_value(json_object_get(b, "bw")), 32);
    ASSERT_EQ(num(json_object_get(b, "scale"), 0), 0.0078125);
    ASSERT_EQ(num(json_object_get(b, "offset"), 0), -2147483648.0);
    json_t *args = json_object_get(enc, "quantizer_args");
    ASSERT_EQ(json_integer_value(json_object_get(args, "param_bitwidth")), 8);
    ASSERT(json_is_true(json_object_get(args, "per_channel_quantization")));
    /* a bypassed quantizer has no encoding */
    json_decref(enc);
    qs_quantsim_bypass(sim, qs_quantsim_find(sim, "y"), 1);
    enc = qs_export_encodings(sim);
    ASSERT_EQ(json_array_size(json_object_get(enc, "activation_encodings")), 1);
    json_decref(enc);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST_MAIN(conv_relu_conv_quantizers, conv_bn_relu_is_one_group, residual_add, concat_output_quantized,
          maxpool_flatten_pass_through, matmul_weight_axis_and_bias_add_fused, constant_weights_folded,
          exclusion_keeps_group_fp32,
          bad_config, bypassed_sim_equals_fp32, tiny_gemm_by_hand, minmax_ranges_from_data, dead_channel_keeps_its_bias,
          export_runs_bit_identical, export_integers_by_hand, export_repeats_qdq_after_pass_through,
          export_refusals, export_4_and_16_bit_activations_at_opset_21, export_raises_old_opsets,
          encodings_aimet_1_0_0)
