/* QuantSim's QDQ and encodings export (paper §3), on the small graphs of tests/qsim-graphs.h:
 * that the exported QDQ graph (and its ONNX round trip) computes exactly what the simulation
 * computes, with the right integers, Q/DQ placement, bit widths and opsets, that what has no ONNX
 * form is refused by name, and that the AIMET encodings carry the right names, scales and offsets. */
#include "tests/harness.h"

#include <jansson.h>

#include "engine/onnx.h"
#include "tests/qsim-graphs.h"

/* call must report into a qs_err named e in scope */
#define CHECK(call) do { if ((call) < 0) QT_FAIL_("%s: %s", #call, e.msg); } while (0)

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

TEST_MAIN(export_runs_bit_identical, export_integers_by_hand, export_repeats_qdq_after_pass_through,
          export_refusals, export_4_and_16_bit_activations_at_opset_21, export_raises_old_opsets,
          encodings_aimet_1_0_0)
