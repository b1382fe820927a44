/* QuantSim placement (paper §2.3–2.4, §3) and numerics, on small graphs built by hand
 * (tests/qsim-graphs.h): which quantizers exist (kind, axis, channels, grid), that bypassing every
 * quantizer gives the FP32 graph back bit for bit, that a tiny Gemm gives the hand-computed
 * quantized result, and that min-max ranges come from the data. The QDQ and encodings export is
 * tests/test-quantsim-export.c's. */
#include "tests/harness.h"

#include <jansson.h>

#include "tests/qsim-graphs.h"

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

/* x → conv → relu → Resize (mode) → LayerNormalization → y */
static qs_graph *resize_ln_model(const char *mode)
{
    qs_graph *g = new_graph(17);
    int64_t xs[4] = { 1, 2, 4, 4 }, ss[1] = { 4 }, ls[1] = { 8 };
    add_input(g, "x", 4, xs);
    conv(g, "conv", "x", "c", 2, 3, 3, 1);
    add_node(g, "Relu", "relu", "c", "r");
    add_weight(g, "scales", 1, ss, (const float[]){ 1, 1, 2, 2 });
    qs_node *n = add_node(g, "Resize", "up", "r,,scales", "u");
    qs_node_set_string(n, "mode", mode);
    add_weight(g, "ln.weight", 1, ls, NULL);
    add_weight(g, "ln.bias", 1, ls, NULL);
    add_node(g, "LayerNormalization", "ln", "u,ln.weight,ln.bias", "y");
    add_output(g, "y");
    return g;
}

TEST(resize_and_layernorm)
{
    /* nearest Resize copies values: the ReLU's grid passes through it, as ONNX Runtime expects */
    qs_graph *g = resize_ln_model("nearest");
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(qs_quantsim_find(sim, "u"), -1);
    ASSERT_EQ(get_q(sim, "y")->kind, QS_Q_ACT);   /* LayerNorm output */
    ASSERT_EQ(qs_quantsim_find(sim, "ln.weight"), -1);   /* scale and bias stay float, like BN's */
    qs_quantsim_free(sim);
    qs_graph_free(g);
    /* linear interpolates between grid points: its own output quantizer */
    g = resize_ln_model("linear");
    sim = make_sim(g, NULL);
    ASSERT_EQ(get_q(sim, "u")->kind, QS_Q_ACT);
    qs_quantsim_free(sim);
    qs_graph_free(g);
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

TEST_MAIN(conv_relu_conv_quantizers, resize_and_layernorm, conv_bn_relu_is_one_group, residual_add, concat_output_quantized,
          maxpool_flatten_pass_through, matmul_weight_axis_and_bias_add_fused, constant_weights_folded,
          exclusion_keeps_group_fp32,
          bad_config, bypassed_sim_equals_fp32, tiny_gemm_by_hand, minmax_ranges_from_data, dead_channel_keeps_its_bias)
