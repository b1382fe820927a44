/* Cross-layer equalization and high-bias absorption (paper §3.2): small graphs run through the
 * executor before and after the pass on random input — the outputs must agree — with the
 * per-channel ranges checked against the paper's definition (computed here independently, from
 * each weight's position rather than per channel), ReLU6 replacement, the chains that must be left alone,
 * and the committed fixtures. High-bias absorption's own cases are in test-cle-absorb.c. */
#include "tests/cle_util.h"
#include "tests/fixture.h"
#include "engine/onnx.h"
#include "engine/data.h"
#include "engine/quant/bnfold.h"
#include "engine/quant/quantsim.h"

/* Ranges by the paper's definition, walking every weight once: r_out[m] = max |W| of output
 * channel m; r_in[c] = max |W| over weights applied to input channel c. Conv W [M, C/g, …]: the
 * weight at (m, j) reads input channel (m / (M/g))·(C/g) + j. fc: 0 none, 1 Gemm [K, N], 2 Gemm
 * transB [N, K]. */
static void ranges(const qs_tensor *w, int64_t group, int fc, double *r_out, double *r_in)
{
    int64_t M, C, per;
    if (fc) {
        M = w->shape[fc == 1 ? 1 : 0];
        C = w->shape[fc == 1 ? 0 : 1];
        per = 1;
    } else {
        M = w->shape[0];
        C = w->shape[1] * group;
        per = qs_numel(w) / (w->shape[0] * w->shape[1]);
    }
    for (int64_t i = 0; r_out && i < M; i++)
        r_out[i] = 0;
    for (int64_t i = 0; r_in && i < C; i++)
        r_in[i] = 0;
    for (int64_t idx = 0; idx < qs_numel(w); idx++) {
        double a = fabs(qs_f32(w)[idx]);
        int64_t m, c;
        if (fc == 1) {
            c = idx / M;
            m = idx % M;
        } else if (fc == 2) {
            m = idx / C;
            c = idx % C;
        } else {
            m = idx / (w->shape[1] * per);
            int64_t j = (idx / per) % w->shape[1];
            c = (m / (M / group)) * w->shape[1] + j;
        }
        if (r_out && a > r_out[m]) r_out[m] = a;
        if (r_in && a > r_in[c]) r_in[c] = a;
    }
}

/* r_out of layer a vs r_in of layer b: equal within rtol */
static void assert_equalized(const qs_graph *g, const char *a, const char *b, int64_t group_b, int fc_a, int fc_b,
                             int64_t n, double rtol)
{
    double r1[64], r2[64];
    ranges(weight(g, a), 1, fc_a, r1, NULL);
    ranges(weight(g, b), group_b, fc_b, NULL, r2);
    for (int64_t i = 0; i < n; i++)
        ASSERT_CLOSE(r1[i], r2[i], rtol, 0);
}

TEST(two_convs_get_equal_ranges_and_same_outputs)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 4, 7, 6 };
    input(g, "x", 4, xs);
    conv(g, "c1", "x", 4, 6, 3, 1, 3.f, 1, "h");
    act(g, "Relu", "relu", "h", "a");
    conv(g, "c2", "a", 6, 5, 3, 1, 0.5f, 1, "y");
    output(g, "y");
    double r1[6], r2[6];
    ranges(weight(g, "c1"), 1, 0, r1, NULL);
    ranges(weight(g, "c2"), 1, 0, NULL, r2);
    qs_tensor *x = opcheck_rand(4, xs, -2, 2), *before = run(g, x);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    ASSERT_EQ(r->npairs, 1);
    ASSERT_STR_EQ(r->pairs[0].layer1, "c1");
    ASSERT_STR_EQ(r->pairs[0].layer2, "c2");
    ASSERT_STR_EQ(r->pairs[0].act_op, "Relu");
    ASSERT(r->converged);
    ASSERT(r->iterations >= 2 && r->iterations <= 3);   /* one sweep equalizes, the next finds s ≈ 1 */
    assert_equalized(g, "c1", "c2", 1, 0, 0, 6, 1e-6);
    /* both become sqrt(r1·r2), and s_i is the paper's sqrt(r1·r2)/r2 */
    double a1[6];
    ranges(weight(g, "c1"), 1, 0, a1, NULL);
    for (int i = 0; i < 6; i++) {
        ASSERT_CLOSE(a1[i], sqrt(r1[i] * r2[i]), 1e-6, 0);
        ASSERT_CLOSE(r->pairs[0].scale[i], sqrt(r1[i] * r2[i]) / r2[i], 1e-6, 0);
    }
    /* the report's layer table: before and after per output channel */
    ASSERT_EQ(r->nlayers, 2);
    ASSERT_STR_EQ(r->layers[0].name, "c1");
    ASSERT_EQ(r->layers[0].nch, 6);
    for (int i = 0; i < 6; i++) {
        ASSERT_CLOSE(fmax(fabs(r->layers[0].min_before[i]), fabs(r->layers[0].max_before[i])), r1[i], 1e-7, 0);
        ASSERT_CLOSE(fmax(fabs(r->layers[0].min_after[i]), fabs(r->layers[0].max_after[i])), a1[i], 1e-7, 0);
    }
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

/* pointwise → depthwise (multiplier mult) → pointwise, activations act1/act2 */
static void depthwise_chain(int64_t mult, const char *act1, const char *act2)
{
    qs_graph *g = graph();
    int64_t xs[] = { 3, 4, 8, 8 };
    input(g, "x", 4, xs);
    conv(g, "expand", "x", 4, 8, 1, 1, 2.f, 0, "h1");
    act(g, act1, "a1", "h1", "r1");
    conv(g, "dw", "r1", 8, 8 * mult, 3, 8, 1.7f, 1, "h2");
    act(g, act2, "a2", "h2", "r2");
    conv(g, "project", "r2", 8 * mult, 5, 1, 1, 1.3f, 0, "y");
    output(g, "y");
    qs_tensor *x = opcheck_rand(4, xs, -2, 2), *before = run(g, x);
    qs_cle_config cfg = qs_cle_config_default();
    cfg.tol = 1e-7;
    cfg.max_iter = 500;
    qs_cle_report *r = cle(g, NULL, 0, &cfg);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    ASSERT_EQ(r->npairs, 2);
    ASSERT(r->converged);
    printf("# depthwise x%lld (%s, %s): %d sweeps, last max |s-1| %.2g\n", (long long)mult, act1, act2,
           r->iterations, r->max_change);
    /* converged: every pair has equal ranges (to the tolerance) */
    assert_equalized(g, "expand", "dw", 8, 0, 0, 8, 1e-5);
    assert_equalized(g, "dw", "project", 1, 0, 0, 8 * mult, 1e-5);
    int dw = r->layers[1].depthwise;
    ASSERT(dw);
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(depthwise_separable_chain) { depthwise_chain(1, "Relu", "Relu"); }
TEST(depthwise_multiplier_2_leaky) { depthwise_chain(2, "LeakyRelu", "Relu"); }

/* layer 2 grouped: input channel i feeds only the output channels of group(i) */
static void grouped(int64_t group, int64_t m2)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 3, 6, 6 };
    input(g, "x", 4, xs);
    conv(g, "c1", "x", 3, 6, 3, 1, 2.5f, 1, "h");
    act(g, "Relu", "relu", "h", "a");
    conv(g, "c2", "a", 6, m2, 3, group, 1.f, 1, "y");
    output(g, "y");
    qs_tensor *x = opcheck_rand(4, xs, -2, 2), *before = run(g, x);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    ASSERT_EQ(r->npairs, 1);
    assert_equalized(g, "c1", "c2", group, 0, 0, 6, 1e-6);
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(grouped_conv_2_groups) { grouped(2, 4); }
TEST(grouped_conv_3_groups_multiplier) { grouped(3, 9); }

TEST(depthwise_then_pointwise_no_activation)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 5, 6, 6 };
    input(g, "x", 4, xs);
    conv(g, "dw", "x", 5, 5, 3, 5, 4.f, 1, "h");
    conv(g, "pw", "h", 5, 7, 1, 1, 1.f, 0, "y");
    output(g, "y");
    qs_tensor *x = opcheck_rand(4, xs, -2, 2), *before = run(g, x);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    ASSERT_EQ(r->npairs, 1);
    ASSERT_STR_EQ(r->pairs[0].act_op, "none");
    assert_equalized(g, "dw", "pw", 1, 0, 0, 5, 1e-6);
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

/* Conv → Clip(0, 6) → Conv; bounds as inputs (opset 13) or attributes (opset 10) */
static qs_graph *relu6_graph(int attrs, const char *clip_op)
{
    qs_graph *g = graph();
    if (attrs)
        qs_graph_set_opset(g, "", 10);   /* Clip's bounds became inputs in opset 11 */
    int64_t xs[] = { 2, 3, 6, 6 };
    input(g, "x", 4, xs);
    conv(g, "c1", "x", 3, 4, 3, 1, 3.f, 1, "h");
    if (!strcmp(clip_op, "Clip")) {
        float lo = 0, hi = 6;
        if (attrs) {
            int in[] = { val(g, "h") };
            qs_node *n = node(g, "Clip", "relu6", 1, in, "a");
            qs_node_set_float(n, "min", lo);
            qs_node_set_float(n, "max", hi);
        } else {
            int in[] = { val(g, "h"), init_t(g, "six_lo", opcheck_from(0, NULL, &lo)),
                         init_t(g, "six_hi", opcheck_from(0, NULL, &hi)) };
            node(g, "Clip", "relu6", 3, in, "a");
        }
    } else {
        act(g, clip_op, "relu6", "h", "a");
    }
    conv(g, "c2", "a", 4, 3, 3, 1, 1.f, 1, "y");
    output(g, "y");
    return g;
}

static void relu6_replaced(int attrs)
{
    qs_graph *g = relu6_graph(attrs, "Clip"), *ref = relu6_graph(attrs, "Relu");
    /* same weights in both */
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].init && qs_graph_find_value(ref, g->values[v].name) >= 0)
            qs_graph_set_init_steal(ref, qs_graph_find_value(ref, g->values[v].name),
                                    qs_tensor_copy(g->values[v].init));
    int64_t xs[] = { 2, 3, 6, 6 };
    qs_tensor *x = opcheck_rand(4, xs, -3, 3), *orig = run(g, x), *relu = run(ref, x);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, relu, 1e-5);   /* the function is now the ReLU model's */
    ASSERT_EQ(r->nrelu6, 1);
    ASSERT_STR_EQ(r->relu6[0], "relu6");
    ASSERT_STR_EQ(r->pairs[0].act_op, "Clip(0,6)->Relu");
    const qs_node *n = find_node(g, "relu6");
    ASSERT_STR_EQ(n->op, "Relu");
    ASSERT_EQ(n->nin, 1);
    ASSERT_EQ(n->nattr, 0);
    if (!attrs)   /* the bounds nobody reads any more are gone */
        ASSERT(!g->values[qs_graph_find_value(g, "six_hi")].init);
    /* the data does exceed 6 somewhere: the original function differed */
    double d = 0;
    for (int64_t i = 0; i < qs_numel(orig); i++)
        d = fmax(d, fabs(qs_f32(orig)[i] - qs_f32(relu)[i]));
    ASSERT(d > 1e-3);
    json_t *j = qs_cle_report_json(r);
    ASSERT_EQ(json_array_size(json_object_get(j, "relu6_replaced")), 1);
    ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(j, "relu6_replaced"), 0)), "relu6");
    json_decref(j);
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(orig);
    qs_tensor_free(relu);
    qs_tensor_free(after);
    qs_graph_free(g);
    qs_graph_free(ref);
}

TEST(relu6_replaced_and_reported) { relu6_replaced(0); }
TEST(relu6_attribute_form_replaced) { relu6_replaced(1); }

TEST(relu6_kept_when_replacement_off)
{
    qs_graph *g = relu6_graph(0, "Clip");
    qs_tensor *w1 = qs_tensor_copy(weight(g, "c1"));
    qs_cle_config cfg = qs_cle_config_default();
    cfg.replace_relu6 = 0;
    qs_cle_report *r = cle(g, NULL, 0, &cfg);
    ASSERT_EQ(r->npairs, 0);
    ASSERT_EQ(r->nrelu6, 0);
    ASSERT_EQ(r->nskipped, 1);
    ASSERT_STR_CONTAINS(r->skipped[0].reason, "Clip(0, 6)");
    ASSERT_STR_EQ(find_node(g, "relu6")->op, "Clip");
    ASSERT(!memcmp(w1->data, weight(g, "c1")->data, qs_nbytes(w1)));
    qs_tensor_free(w1);
    qs_cle_report_free(r);
    qs_graph_free(g);
}

/* x [N, 6] → Gemm (transB tb1) → Relu → Gemm (transB tb2); or MatMul first */
static void fc_chain(int tb1, int tb2, int matmul)
{
    qs_graph *g = graph();
    int64_t xs[] = { 5, 6 }, n1 = 8, n2 = 4;
    input(g, "x", 2, xs);
    int64_t w1s[] = { tb1 ? n1 : 6, tb1 ? 6 : n1 }, w2s[] = { tb2 ? n2 : n1, tb2 ? n1 : n2 };
    qs_tensor *w1 = opcheck_rand(2, w1s, -1, 1);
    for (int64_t i = 0; i < qs_numel(w1); i++) {   /* output channel j scaled by 2^(j−4) */
        int64_t j = tb1 ? i / 6 : i % n1;
        qs_f32(w1)[i] *= powf(2.f, (float)j - 4);
    }
    if (matmul) {
        int in[] = { val(g, "x"), init_t(g, "W1", w1) };
        node(g, "MatMul", "fc1", 2, in, "h");
    } else {
        int in[] = { val(g, "x"), init_t(g, "W1", w1), init(g, "b1", 1, &n1, -1, 1) };
        qs_node *n = node(g, "Gemm", "fc1", 3, in, "h");
        qs_node_set_int(n, "transB", tb1);
        qs_node_set_float(n, "alpha", 0.7f);
    }
    act(g, "Relu", "relu", "h", "a");
    int in2[] = { val(g, "a"), init(g, "W2", 2, w2s, -1, 1), init(g, "b2", 1, &n2, -1, 1) };
    qs_node *n = node(g, "Gemm", "fc2", 3, in2, "y");
    qs_node_set_int(n, "transB", tb2);
    output(g, "y");
    qs_tensor *x = opcheck_rand(2, xs, -2, 2), *before = run(g, x);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    ASSERT_EQ(r->npairs, 1);
    assert_equalized(g, "fc1", "fc2", 1, tb1 ? 2 : 1, tb2 ? 2 : 1, n1, 1e-6);
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(gemm_relu_gemm) { fc_chain(0, 0, 0); }
TEST(gemm_transB_relu_gemm_transB) { fc_chain(1, 1, 0); }
TEST(matmul_relu_gemm) { fc_chain(0, 1, 1); }

TEST(chains_left_alone)
{
    /* c1's output is read twice (a residual); c3 → Sigmoid → c4 is not equivariant; c4 → c5 → Relu
     * → c6 → c7 pair up, and c7 shares c5's parameters (CLE gives c5 a private copy) */
    qs_graph *g = graph();
    int64_t xs[] = { 2, 4, 5, 5 };
    input(g, "x", 4, xs);
    conv(g, "c1", "x", 4, 4, 3, 1, 2.f, 1, "h1");
    act(g, "Relu", "r1", "h1", "a1");
    conv(g, "c2", "a1", 4, 4, 3, 1, 1.f, 1, "h2");
    int add_in[] = { val(g, "h2"), val(g, "h1") };
    node(g, "Add", "add", 2, add_in, "s");
    conv(g, "c3", "s", 4, 4, 1, 1, 2.f, 0, "h3");
    act(g, "Sigmoid", "sig", "h3", "a3");
    conv(g, "c4", "a3", 4, 4, 1, 1, 1.f, 0, "h4");
    conv(g, "c5", "h4", 4, 4, 1, 1, 2.f, 0, "h5");
    act(g, "Relu", "r5", "h5", "a5");
    conv(g, "c6", "a5", 4, 4, 1, 1, 1.f, 0, "h6");
    int c7_in[] = { val(g, "h6"), val(g, "c5_W"), val(g, "c5_b") };   /* c7 shares c5's parameters */
    node(g, "Conv", "c7", 3, c7_in, "y");
    output(g, "y");
    qs_tensor *x = opcheck_rand(4, xs, -2, 2), *before = run(g, x);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    /* c2 → add: not a layer; c1's output has two readers */
    ASSERT_EQ(r->npairs, 3);
    ASSERT_STR_EQ(r->pairs[0].layer1, "c4");
    ASSERT_STR_EQ(r->pairs[1].layer1, "c5");
    ASSERT_STR_EQ(r->pairs[2].layer1, "c6");
    for (int i = 0; i < r->nskipped; i++)
        printf("# skipped %s -> %s: %s\n", r->skipped[i].name, r->skipped[i].name2, r->skipped[i].reason);
    ASSERT_EQ(r->nskipped, 1);
    ASSERT_STR_EQ(r->skipped[0].name, "c3");
    ASSERT_STR_CONTAINS(r->skipped[0].reason, "Sigmoid");
    /* c7 still reads the original initializer (rescaled as layer 2 of c6 → c7); c5 reads a copy */
    ASSERT_STR_EQ(g->values[find_node(g, "c7")->in[1]].name, "c5_W");
    ASSERT(strcmp(g->values[find_node(g, "c5")->in[1]].name, "c5_W"));
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

/* Conv → Relu → pool → Conv (a VGG's block boundary): the pool is channel-wise and positively
 * homogeneous, so the pair is equalized through it. AveragePool counting padded zeros does not
 * commute with absorption's shift: that chain is left alone. */
static void pool_pair(const char *op, int count_pad)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 3, 8, 8 }, two[] = { 2, 2 }, pads[] = { 1, 1, 1, 1 };
    input(g, "x", 4, xs);
    conv(g, "c1", "x", 3, 8, 3, 1, 2.7f, 1, "h");   /* channel ranges 2.7^-4 … 2.7^3: 3.4 decades */
    act(g, "Relu", "relu", "h", "a");
    int in[] = { val(g, "a") };
    qs_node *n = node(g, op, "pool", 1, in, "p");
    if (strncmp(op, "Global", 6)) {
        qs_node_set_ints(n, "kernel_shape", 2, two);
        qs_node_set_ints(n, "strides", 2, two);
    }
    if (count_pad) {
        qs_node_set_int(n, "count_include_pad", 1);
        qs_node_set_ints(n, "pads", 4, pads);
    }
    conv(g, "c2", "p", 8, 5, 1, 1, 1.f, 0, "y");
    output(g, "y");
    double r1[8], r2[8];
    ranges(weight(g, "c1"), 1, 0, r1, NULL);
    ranges(weight(g, "c2"), 1, 0, NULL, r2);
    qs_tensor *x = opcheck_rand(4, xs, -2, 2), *before = run(g, x);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    if (count_pad) {
        ASSERT_EQ(r->npairs, 0);   /* not a chain CLE knows (like a second activation): nothing changes */
        ASSERT(!memcmp(qs_f32(before), qs_f32(after), qs_nbytes(after)));
    } else {
        ASSERT_EQ(r->npairs, 1);
        ASSERT_STR_EQ(r->pairs[0].act_op, "Relu");
        ASSERT_STR_EQ(r->pairs[0].via, op);
        /* the paper's condition after CLE: r1_i = r2_i = sqrt(r1_i · r2_i), s_i = sqrt(r1_i · r2_i) / r2_i */
        assert_equalized(g, "c1", "c2", 1, 0, 0, 8, 1e-6);
        double a1[8];
        ranges(weight(g, "c1"), 1, 0, a1, NULL);
        for (int i = 0; i < 8; i++) {
            ASSERT_CLOSE(a1[i], sqrt(r1[i] * r2[i]), 1e-6, 0);
            ASSERT_CLOSE(r->pairs[0].scale[i], sqrt(r1[i] * r2[i]) / r2[i], 1e-6, 0);
        }
    }
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(maxpool_between_blocks) { pool_pair("MaxPool", 0); }
TEST(average_pool) { pool_pair("AveragePool", 0); }
TEST(global_average_pool) { pool_pair("GlobalAveragePool", 0); }
TEST(average_pool_counting_pads_left_alone) { pool_pair("AveragePool", 1); }

TEST(report_json)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 4, 5, 5 };
    input(g, "x", 4, xs);
    conv(g, "c1", "x", 4, 6, 3, 1, 3.f, 1, "h");
    act(g, "Relu", "relu", "h", "a");
    conv(g, "c2", "a", 6, 5, 3, 1, 1.f, 1, "y");
    output(g, "y");
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    json_t *j = qs_cle_report_json(r);
    char *s = json_dumps(j, JSON_COMPACT);
    ASSERT(s);
    json_t *p = json_array_get(json_object_get(j, "pairs"), 0);
    ASSERT_STR_EQ(json_string_value(json_object_get(p, "layer1")), "c1");
    ASSERT_EQ(json_array_size(json_object_get(p, "scale")), 6);
    ASSERT(json_is_null(json_object_get(p, "absorbed")));
    json_t *l = json_array_get(json_object_get(j, "layers"), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(l, "name")), "c2");
    ASSERT_EQ(json_array_size(json_object_get(json_object_get(l, "after"), "max")), 5);
    ASSERT(json_is_true(json_object_get(j, "converged")));
    ASSERT(r->iterations >= 1);
    ASSERT_EQ(json_integer_value(json_object_get(j, "iterations")), r->iterations);
    free(s);
    json_decref(j);
    qs_cle_report_free(r);
    qs_graph_free(g);
}

TEST(bad_config_is_an_error)
{
    qs_graph *g = graph();
    qs_cle_config cfg = qs_cle_config_default();
    cfg.max_iter = 0;
    qs_err e = {0};
    qs_cle_report *r = (qs_cle_report *)1;
    ASSERT_EQ(qs_cle(g, NULL, 0, &cfg, &r, &e), QS_EINVAL);
    ASSERT(!r);
    ASSERT_STR_CONTAINS(e.msg, "max_iter");
    qs_graph_free(g);
}

/* --- the MobileNetV2-style fixture ------------------------------------------------------------------ */

/* spread of a layer's per-output-channel ranges: max_c r_c / min_c r_c */
static double spread(const float *lo, const float *hi, int64_t n)
{
    double a = INFINITY, b = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = fmax(fabs(lo[i]), fabs(hi[i]));
        a = fmin(a, r);
        b = fmax(b, r);
    }
    return b / a;
}

/* SQNR (dB) of g's output with only the weights quantized, per tensor, to `bits` (min-max); only
 * layer `only`'s weight when not NULL */
static double weights_sqnr(const qs_graph *g, const qs_tensor *x, int bits, const char *only)
{
    qs_err e = {0};
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.per_channel = 0;
    cfg.wbits = bits;
    qs_quantsim *sim = qs_quantsim_new(g, &cfg, &e);
    if (!sim)
        QT_FAIL_("quantsim: %s", e.msg);
    qs_quantsim_bypass_kind(sim, -1, 1);
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_WEIGHT && (!only || !strcmp(sim->q[i].layer, only)))
            qs_quantsim_bypass(sim, i, 0);
    qs_tensor *y = run((qs_graph *)g, x), *yq = run(sim->g, x);
    double sig = 0, noise = 0;
    for (int64_t i = 0; i < qs_numel(y); i++) {
        double d = (double)qs_f32(y)[i] - qs_f32(yq)[i];
        sig += (double)qs_f32(y)[i] * qs_f32(y)[i];
        noise += d * d;
    }
    qs_tensor_free(y);
    qs_tensor_free(yq);
    qs_quantsim_free(sim);
    return 10 * log10(sig / noise);
}

TEST(fixture_resnet_bn)
{
    /* ReLU only: BN fold + CLE must keep the function exactly (residual blocks: only the convs
     * inside a block pair up) */
    qs_graph *g = qt_fixture_graph("resnet_bn.onnx");
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    int64_t s[] = { 8, 1, 28, 28 };
    qs_tensor *x = opcheck_rand(4, s, -1, 2), *before = run(g, x);
    double q8 = weights_sqnr(g, x, 8, NULL);
    qs_cle_report *r = cle(g, bn, nbn, NULL);
    qs_tensor *after = run(g, x);
    double rel = assert_same(after, before, 1e-4);
    double q8c = weights_sqnr(g, x, 8, NULL);
    printf("# resnet: %d pairs, %d sweeps, %d absorbed, max rel diff %.2g; W8 per-tensor weights-only logits SQNR "
           "%.1f dB -> %.1f dB\n", r->npairs, r->iterations, r->nabsorbed, rel, q8, q8c);
    ASSERT(r->npairs >= 3);
    ASSERT_EQ(r->nrelu6, 0);
    qs_cle_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(fixture_mobilenet_bn)
{
    qs_graph *orig = qt_fixture_graph("mobilenet_bn.onnx"), *g = qs_graph_clone(orig);
    qs_err e = {0};
    qs_tensor *x = qt_fixture_rows("mobilenet.sample.npy", -1);   /* the 64 real test images committed with the model */
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    ASSERT(nbn > 0);
    qs_graph *folded = qs_graph_clone(g);
    qs_cle_config cfg = qs_cle_config_default();
    cfg.absorb = 0;
    qs_cle_report *r = cle(g, bn, nbn, &cfg);
    printf("# %d pairs, %d sweeps (converged %d, last max |s-1| %.2g), %d ReLU6 replaced, %d skipped\n", r->npairs,
           r->iterations, r->converged, r->max_change, r->nrelu6, r->nskipped);
    ASSERT(r->npairs >= 8);
    ASSERT(r->converged);
    /* the reference: the folded model with the same ReLU6s replaced by ReLU, nothing else */
    for (int k = 0; k < r->nrelu6; k++)
        for (int i = 0; i < folded->nnodes; i++)
            if (!strcmp(folded->nodes[i].name, r->relu6[k])) {
                free(folded->nodes[i].op);
                folded->nodes[i].op = strdup("Relu");
                folded->nodes[i].nin = 1;
            }
    qs_tensor *y0 = run(orig, x), *yr = run(folded, x), *y = run(g, x);
    double rel = assert_same(y, yr, 1e-4);
    double d6 = 0, mag = 0;
    for (int64_t i = 0; i < qs_numel(y0); i++) {
        d6 = fmax(d6, fabs(qs_f32(y0)[i] - qs_f32(yr)[i]));
        mag = fmax(mag, fabs(qs_f32(y0)[i]));
    }
    printf("# BN fold + CLE vs BN fold (ReLU6 → ReLU): max rel diff %.2g; ReLU6 → ReLU itself changes the logits "
           "by %.3g of max\n", rel, d6 / mag);
    /* depthwise layers: per-channel ranges much closer after CLE, and quantizing one of them per
     * tensor (6 bits) costs less */
    int ndw = 0;
    double logsum_before = 0, logsum_after = 0, gain = 0;
    for (int i = 0; i < r->nlayers; i++) {
        const qs_cle_layer *t = &r->layers[i];
        if (!t->depthwise)
            continue;
        double sb = spread(t->min_before, t->max_before, t->nch), sa = spread(t->min_after, t->max_after, t->nch);
        double qb = weights_sqnr(folded, x, 6, t->name), qa = weights_sqnr(g, x, 6, t->name);
        printf("# depthwise %-40s channel range spread (max/min) %5.1f -> %4.2f; W6 per-tensor SQNR %4.1f -> %4.1f dB\n",
               t->name, sb, sa, qb, qa);
        ASSERT(sa < sb);
        gain += qa - qb;
        logsum_before += log(sb);
        logsum_after += log(sa);
        ndw++;
    }
    ASSERT(ndw >= 4);
    printf("# geometric mean spread over %d depthwise layers: %.1f -> %.2f\n", ndw, exp(logsum_before / ndw),
           exp(logsum_after / ndw));
    ASSERT(exp(logsum_after / ndw) * 2 < exp(logsum_before / ndw));
    printf("# mean W6 per-tensor SQNR gain over the depthwise layers: %+.1f dB\n", gain / ndw);
    ASSERT(gain / ndw > 1);
    /* the whole model, every weight per tensor (each model against its own FP32 output): on this
     * small fixture the stem conv, which CLE cannot pair (its output also feeds a residual Add),
     * dominates, so this is reported, not asserted */
    double s8 = weights_sqnr(folded, x, 8, NULL), s8c = weights_sqnr(g, x, 8, NULL);
    double s6 = weights_sqnr(folded, x, 6, NULL), s6c = weights_sqnr(g, x, 6, NULL);
    printf("# all weights per tensor, logits SQNR: W8 %.1f -> %.1f dB, W6 %.1f -> %.1f dB\n", s8, s8c, s6, s6c);
    /* high-bias absorption on top: exact except where a ReLU input falls below c (rare); pairs
     * into zero-padded layers are skipped */
    cfg.equalize = 0;
    cfg.absorb = 1;
    qs_cle_report *ra = cle(g, bn, nbn, &cfg);
    qs_tensor *ya = run(g, x);
    double da = 0, csum = 0;
    int64_t cn = 0;
    for (int64_t i = 0; i < qs_numel(y); i++)
        da = fmax(da, fabs(qs_f32(ya)[i] - qs_f32(y)[i]));
    for (int k = 0; k < ra->npairs; k++)
        for (int64_t i = 0; ra->pairs[k].absorbed && i < ra->pairs[k].nch; i++)
            csum += ra->pairs[k].absorbed[i], cn += ra->pairs[k].absorbed[i] > 0;
    printf("# absorption: %d pairs, %lld channels, mean c %.3g; logits change by %.3g of max\n", ra->nabsorbed,
           (long long)cn, cn ? csum / cn : 0, da / mag);
    if (!ra->nabsorbed)   /* this small model has no channel with β > 3|γ|: nothing may change */
        ASSERT(da == 0);
    qs_cle_report_free(ra);
    qs_tensor_free(ya);
    qs_cle_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_tensor_free(x);
    qs_tensor_free(y0);
    qs_tensor_free(yr);
    qs_tensor_free(y);
    qs_graph_free(orig);
    qs_graph_free(folded);
    qs_graph_free(g);
}

/* The issue-14 fixture (tests/fixtures/make_imbalanced.py): the trained VGG without BN with every
 * Conv → Relu (→ MaxPool) → Conv pair rescaled so that channel ranges spread over ~3 decades.
 * CLE must find all three Conv pairs (one through the MaxPool) and the Gemm head's pair, keep the
 * function, and leave each pair with r1_i = r2_i (the paper's condition, §3.2). */
TEST(fixture_vgg_imbalanced)
{
    qs_graph *g = qt_fixture_graph("vgg_imbalanced.onnx");
    qs_tensor *x = qt_fixture_rows("vgg.sample.npy", -1);
    qs_tensor *before = run(g, x);
    double q8 = weights_sqnr(g, x, 8, NULL);
    qs_cle_report *r = cle(g, NULL, 0, NULL);
    qs_tensor *after = run(g, x);
    double rel = assert_same(after, before, 1e-4);
    double q8c = weights_sqnr(g, x, 8, NULL);
    printf("# %d pairs, %d sweeps, max rel diff %.2g; W8 per-tensor weights-only logits SQNR %.1f -> %.1f dB\n",
           r->npairs, r->iterations, rel, q8, q8c);
    ASSERT(r->converged);
    ASSERT_EQ(r->npairs, 4);
    const char *l1[] = { "/0/Conv", "/2/Conv", "/5/Conv", "/11/Gemm" };
    const char *l2[] = { "/2/Conv", "/5/Conv", "/7/Conv", "/13/Gemm" };
    const int64_t nch[] = { 16, 16, 32, 16 };
    for (int k = 0; k < 4; k++) {
        ASSERT_STR_EQ(r->pairs[k].layer1, l1[k]);
        ASSERT_STR_EQ(r->pairs[k].layer2, l2[k]);
        ASSERT_STR_EQ(r->pairs[k].via, k == 1 ? "MaxPool" : "");
        assert_equalized(g, l1[k], l2[k], 1, k == 3 ? 2 : 0, k == 3 ? 2 : 0, nch[k], 1e-3);
    }
    /* the spread of the first three Convs' output-channel ranges (max/min): over 100 before, a few after */
    for (int i = 0; i < 3; i++) {
        const qs_cle_layer *t = &r->layers[i];
        double sb = spread(t->min_before, t->max_before, t->nch), sa = spread(t->min_after, t->max_after, t->nch);
        printf("# %s: channel range spread %.0f -> %.1f\n", t->name, sb, sa);
        ASSERT(sb > 100 && sa < 10);
    }
    ASSERT(q8c > q8 + 10);
    qs_cle_report_free(r);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST_MAIN(two_convs_get_equal_ranges_and_same_outputs, depthwise_separable_chain, depthwise_multiplier_2_leaky,
          grouped_conv_2_groups, grouped_conv_3_groups_multiplier, depthwise_then_pointwise_no_activation,
          relu6_replaced_and_reported, relu6_attribute_form_replaced, relu6_kept_when_replacement_off, gemm_relu_gemm,
          gemm_transB_relu_gemm_transB, matmul_relu_gemm, chains_left_alone, maxpool_between_blocks, average_pool,
          global_average_pool, average_pool_counting_pads_left_alone, report_json, bad_config_is_an_error,
          fixture_resnet_bn, fixture_mobilenet_bn, fixture_vgg_imbalanced)
