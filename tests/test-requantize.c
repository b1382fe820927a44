/* Requantizing an already-quantized model (engine/quant/requantize.c): a QDQ Gemm built by hand —
 * input and output Q/DQ pairs, an int8 weight per output channel, an int32 bias — becomes the float
 * Gemm with (q − zero point) · scale weights, outputs checked against values worked out by hand;
 * what has no float form is refused by name. */
#include "harness.h"

#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/quant/requantize.h"

static int init(qs_graph *g, const char *name, qs_dtype t, int ndim, const int64_t *shape, const double *v)
{
    int id = qs_graph_value(g, name);
    qs_tensor *x = qs_tensor_new(t, ndim, shape);
    for (int64_t i = 0; i < qs_numel(x); i++) {
        switch (t) {
        case QS_F32: qs_f32(x)[i] = (float)v[i]; break;
        case QS_I8: ((int8_t *)x->data)[i] = (int8_t)v[i]; break;
        case QS_U8: ((uint8_t *)x->data)[i] = (uint8_t)v[i]; break;
        case QS_I32: ((int32_t *)x->data)[i] = (int32_t)v[i]; break;
        default: QS_ASSERT(!"type");
        }
    }
    qs_graph_set_init_steal(g, id, x);
    return id;
}

static int node(qs_graph *g, const char *op, const char *name, int nin, const int *in, const char *out)
{
    int o = qs_graph_value(g, out);
    qs_graph_add_node(g, op, name, nin, in, 1, &o);
    return o;
}

/* x [N, 2] → Q/DQ (0.05, 128) → Gemm(W [3, 2] int8 per channel, bias int32) → Q/DQ → y */
static qs_graph *qdq_gemm(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = qs_graph_value(g, "x");
    g->values[x].dtype = QS_F32;
    g->values[x].ndim = 2;
    g->values[x].shape[0] = -1;
    g->values[x].shape[1] = 2;
    g->inputs = malloc(sizeof *g->inputs);
    g->inputs[g->ninputs++] = x;
    int64_t one = 1, three = 3, ws[2] = { 3, 2 };
    int s = init(g, "s_x", QS_F32, 0, &one, (double[]){ 0.05 }), z = init(g, "z_x", QS_U8, 0, &one, (double[]){ 128 });
    int xq = node(g, "QuantizeLinear", "q_x", 3, (int[]){ x, s, z }, "x_q");
    int xd = node(g, "DequantizeLinear", "dq_x", 3, (int[]){ xq, s, z }, "x_dq");
    int wq = init(g, "w_q", QS_I8, 2, ws, (double[]){ 10, -20, 4, 8, -127, 0 });
    int ws_ = init(g, "w_s", QS_F32, 1, &three, (double[]){ 0.5, 0.25, 0.125 });
    int wz = init(g, "w_z", QS_I8, 1, &three, (double[]){ 0, 0, 0 });
    int wd = node(g, "DequantizeLinear", "dq_w", 3, (int[]){ wq, ws_, wz }, "w");
    qs_node_set_int(&g->nodes[g->nnodes - 1], "axis", 0);
    int bq = init(g, "b_q", QS_I32, 1, &three, (double[]){ 40, -80, 0 });
    int bs = init(g, "b_s", QS_F32, 1, &three, (double[]){ 0.025, 0.0125, 0.00625 });
    int bd = node(g, "DequantizeLinear", "dq_b", 2, (int[]){ bq, bs }, "b");
    qs_node_set_int(&g->nodes[g->nnodes - 1], "axis", 0);
    int h = node(g, "Gemm", "fc", 3, (int[]){ xd, wd, bd }, "h");
    qs_node_set_int(&g->nodes[g->nnodes - 1], "transB", 1);
    int s2 = init(g, "s_y", QS_F32, 0, &one, (double[]){ 0.5 }), z2 = init(g, "z_y", QS_I8, 0, &one, (double[]){ 0 });
    int hq = node(g, "QuantizeLinear", "q_y", 3, (int[]){ h, s2, z2 }, "h_q");
    int y = node(g, "DequantizeLinear", "dq_y", 3, (int[]){ hq, s2, z2 }, "y");
    g->outputs = malloc(sizeof *g->outputs);
    g->outputs[g->noutputs++] = y;
    qs_err e = {0};
    ASSERT_EQ(qs_graph_toposort(g, &e), 0);
    return g;
}

TEST(qdq_gemm_back_to_float)
{
    qs_graph *g = qdq_gemm();
    char ops[128];
    ASSERT_EQ(qs_graph_quantized_ops(g, ops, sizeof ops), 6);
    ASSERT_STR_EQ(ops, "QuantizeLinear 2, DequantizeLinear 4");
    qs_err e = {0};
    int nw, np;
    ASSERT_EQ(qs_requantize(g, &nw, &np, &e), 0);
    ASSERT_EQ(nw, 2);
    ASSERT_EQ(np, 2);
    ASSERT_EQ(qs_graph_quantized_ops(g, ops, sizeof ops), 0);
    ASSERT_EQ(g->nnodes, 2);   /* the Gemm, and an Identity that keeps the output's name */
    const qs_node *fc = &g->nodes[0];
    ASSERT_STR_EQ(fc->op, "Gemm");
    ASSERT_STR_EQ(g->values[fc->in[0]].name, "x");
    const qs_tensor *w = g->values[fc->in[1]].init, *b = g->values[fc->in[2]].init;
    ASSERT(w && b && w->dtype == QS_F32 && b->dtype == QS_F32);
    ASSERT_STR_EQ(g->values[fc->in[1]].name, "w");
    const float wf[6] = { 5, -10, 1, 2, -15.875f, 0 }, bf[3] = { 1, -1, 0 };
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(qs_f32(w)[i], wf[i]);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(qs_f32(b)[i], bf[i]);
    ASSERT_STR_EQ(g->nodes[1].op, "Identity");
    ASSERT_STR_EQ(g->values[g->outputs[0]].name, "y");
    ASSERT(qs_graph_find_value(g, "w_q") < 0 || !g->values[qs_graph_find_value(g, "w_q")].init);
    /* runs, in float: y = x·Wᵀ + b */
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT(x && qs_exec_plan(x, 1, &e) == 0);
    qs_tensor *in = qs_tensor_new(QS_F32, 2, (int64_t[]){ 1, 2 });
    qs_f32(in)[0] = 0.3f;
    qs_f32(in)[1] = -0.7f;
    ASSERT_EQ(qs_exec_set_input(x, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_forward(x, &e), 0);
    const qs_tensor *y = qs_exec_output(x, 0);
    for (int o = 0; o < 3; o++)
        ASSERT_CLOSE(qs_f32(y)[o], 0.3 * wf[2 * o] - 0.7 * wf[2 * o + 1] + bf[o], 1e-5, 1e-6);
    qs_tensor_free(in);
    qs_exec_free(x);
    qs_graph_free(g);
}

TEST(what_has_no_float_form_is_named)
{
    qs_graph *g = qdq_gemm();
    /* the input's QuantizeLinear also feeds a node that is not a DequantizeLinear: the pair stays */
    int xq = qs_graph_find_value(g, "x_q"), o = qs_graph_value(g, "other");
    qs_graph_add_node(g, "QLinearMatMul", "qmm", 1, &xq, 1, &o);
    qs_err e = {0};
    int nw, np;
    ASSERT_EQ(qs_requantize(g, &nw, &np, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "has no float form");
    ASSERT_STR_CONTAINS(e.msg, "QuantizeLinear 'q_x'");
    qs_graph_free(g);
    ASSERT(qs_op_is_quantized("QLinearConv") && qs_op_is_quantized("MatMulInteger") &&
           qs_op_is_quantized("DequantizeLinear") && !qs_op_is_quantized("Conv") && !qs_op_is_quantized("Integer"));
}

TEST_MAIN(qdq_gemm_back_to_float, what_has_no_float_form_is_named)
