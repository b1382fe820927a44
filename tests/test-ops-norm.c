/* BatchNormalization: inference and training forward against hand-computed values and the defining
 * formulas, the optional statistics outputs per opset, spatial = 0, qs_bn_batch_stats, finite
 * differences for every backward (through the batch statistics in training), and bad shapes. */
#include "tests/opcheck.h"
#include "engine/ops/norm.h"

static qs_tensor *rand_t(int ndim, const int64_t *shape, float lo, float hi) { return opcheck_rand(ndim, shape, lo, hi); }

static qs_node bn_node(void) { return opcheck_node("BatchNormalization", NULL); }

/* params [C] = scale, B, mean, var (var > 0) */
static void bn_params(int64_t C, qs_tensor **in)
{
    in[1] = rand_t(1, &C, 0.5f, 1.5f);
    in[2] = rand_t(1, &C, -0.5f, 0.5f);
    in[3] = rand_t(1, &C, -0.5f, 0.5f);
    in[4] = rand_t(1, &C, 0.5f, 1.5f);
}

TEST(bn_inference_hand_computed)
{
    /* x [1, 2, 2]: channel 0 = {1, 3}, channel 1 = {-1, 5} */
    float xv[] = { 1, 3, -1, 5 }, sv[] = { 2, 0.5f }, bv[] = { 1, -1 }, mv[] = { 2, 1 }, vv[] = { 4, 9 };
    int64_t two = 2;
    qs_tensor *in[5] = { opcheck_from(3, (int64_t[]){ 1, 2, 2 }, xv), opcheck_from(1, &two, sv),
                         opcheck_from(1, &two, bv), opcheck_from(1, &two, mv), opcheck_from(1, &two, vv) }, *y;
    qs_node n = bn_node();
    qs_node_set_float(&n, "epsilon", 0.f);
    opcheck_forward(&n, 15, 5, in, 1, &y);
    /* c0: 2·(x − 2)/2 + 1 = x − 1 → 0, 2;  c1: 0.5·(x − 1)/3 − 1 → −4/3, −1/3 */
    float want[] = { 0, 2, -1 - 1.f / 3, -1 + 2.f / 3 };
    for (int i = 0; i < 4; i++)
        ASSERT_CLOSE(qs_f32(y)[i], want[i], 1e-6, 1e-6);
}

TEST(bn_batch_stats_hand_computed)
{
    /* x [2, 2, 2]: channel 0 = {1, 2 | 3, 6}, channel 1 = {0, 0 | 4, 4} */
    float xv[] = { 1, 2, 0, 0, 3, 6, 4, 4 };
    qs_tensor *x = opcheck_from(3, (int64_t[]){ 2, 2, 2 }, xv);
    float mean[2], var[2];
    ASSERT_EQ(qs_bn_batch_stats(x, mean, var), 0);
    ASSERT_CLOSE(mean[0], 3, 1e-6, 0);
    ASSERT_CLOSE(var[0], (4 + 1 + 0 + 9) / 4.0, 1e-6, 0);   /* biased: divided by the count */
    ASSERT_CLOSE(mean[1], 2, 1e-6, 0);
    ASSERT_CLOSE(var[1], 4, 1e-6, 0);
    qs_tensor *x2 = opcheck_from(2, (int64_t[]){ 4, 2 }, xv);   /* [N, C]: no spatial dims */
    ASSERT_EQ(qs_bn_batch_stats(x2, mean, var), 0);
    ASSERT_CLOSE(mean[0], (1 + 0 + 3 + 4) / 4.0, 1e-6, 0);
    ASSERT_EQ(qs_bn_batch_stats(qs_tensor_new(QS_F32, 1, (int64_t[]){ 3 }), mean, var), QS_EINVAL);
}

TEST(bn_training_normalizes_with_batch_stats_and_running_outputs)
{
    int64_t C = 3;
    qs_tensor *in[5], *y[3];
    in[0] = rand_t(4, (int64_t[]){ 4, C, 3, 2 }, -2, 3);
    bn_params(C, in);
    float mean[3], var[3];
    qs_bn_batch_stats(in[0], mean, var);
    /* opset 14+, training_mode = 1: Y normalized with the batch stats, running stats blended by momentum */
    qs_node n = bn_node();
    qs_node_set_int(&n, "training_mode", 1);
    qs_node_set_float(&n, "momentum", 0.8f);
    opcheck_forward(&n, 15, 5, in, 3, y);
    for (int64_t c = 0; c < C; c++) {
        double inv = 1 / sqrt(var[c] + 1e-5);
        for (int64_t k = 0; k < 4 * 6; k++) {
            int64_t i = (k / 6 * C + c) * 6 + k % 6;
            double want = qs_f32(in[1])[c] * (qs_f32(in[0])[i] - mean[c]) * inv + qs_f32(in[2])[c];
            ASSERT_CLOSE(qs_f32(y[0])[i], want, 1e-5, 1e-5);
        }
        ASSERT_CLOSE(qs_f32(y[1])[c], 0.8 * qs_f32(in[3])[c] + 0.2 * mean[c], 1e-5, 1e-6);
        ASSERT_CLOSE(qs_f32(y[2])[c], 0.8 * qs_f32(in[4])[c] + 0.2 * var[c], 1e-5, 1e-6);
    }
    /* the executor's training flag alone does the same (opset 9 model, saved_mean/saved_var outputs) */
    qs_node m = bn_node();
    qs_tensor *z[5];
    qs_err e = {0};
    ASSERT_EQ(opcheck_run(&m, 9, 5, in, 5, z, 1, &e), 0);
    for (int64_t i = 0; i < qs_numel(y[0]); i++)
        ASSERT_CLOSE(qs_f32(z[0])[i], qs_f32(y[0])[i], 1e-6, 1e-6);
    for (int64_t c = 0; c < C; c++) {
        ASSERT_CLOSE(qs_f32(z[1])[c], 0.9 * qs_f32(in[3])[c] + 0.1 * mean[c], 1e-5, 1e-6);
        ASSERT_CLOSE(qs_f32(z[3])[c], mean[c], 1e-5, 1e-6);
        ASSERT_CLOSE(qs_f32(z[4])[c], var[c], 1e-5, 1e-6);
    }
    /* without training, the same node uses the running statistics */
    ASSERT_EQ(opcheck_run(&m, 9, 5, in, 1, z, 0, &e), 0);
    double inv = 1 / sqrt(qs_f32(in[4])[0] + 1e-5);
    ASSERT_CLOSE(qs_f32(z[0])[0], qs_f32(in[1])[0] * (qs_f32(in[0])[0] - qs_f32(in[3])[0]) * inv + qs_f32(in[2])[0],
                 1e-5, 1e-5);
}

TEST(bn_spatial_zero_per_activation)
{
    /* opset 7, spatial = 0: parameters [C, H] and statistics per (c, h) over N only */
    float xv[] = { 1, 2, 3, 4, 5, 6, 7, 8 };   /* [2, 2, 2] */
    float sv[] = { 1, 2, 3, 4 }, bv[] = { 0, 0, 1, 1 }, mv[] = { 1, 2, 3, 4 }, vv[] = { 1, 1, 4, 4 };
    int64_t ps[] = { 2, 2 };
    qs_tensor *in[5] = { opcheck_from(3, (int64_t[]){ 2, 2, 2 }, xv), opcheck_from(2, ps, sv), opcheck_from(2, ps, bv),
                         opcheck_from(2, ps, mv), opcheck_from(2, ps, vv) }, *y;
    qs_node n = bn_node();
    qs_node_set_int(&n, "spatial", 0);
    qs_node_set_float(&n, "epsilon", 0.f);
    opcheck_forward(&n, 7, 5, in, 1, &y);
    /* element (n, c, h) uses parameter index c·2 + h: x − mean = 0 for n = 0, 4 for n = 1 */
    float want[] = { 0, 0, 1, 1, 4, 8, 1 + 3 * 4 / 2.f, 1 + 4 * 4 / 2.f };
    for (int i = 0; i < 8; i++)
        ASSERT_CLOSE(qs_f32(y)[i], want[i], 1e-6, 1e-6);
    opcheck_grad(&n, 7, 5, in, 1, 1e-2, 1e-2, 1e-3);
}

TEST(bn_backward_inference_finite_differences)
{
    int64_t C = 3;
    qs_tensor *in[5];
    in[0] = rand_t(4, (int64_t[]){ 2, C, 2, 3 }, -1, 1);
    bn_params(C, in);
    qs_node n = bn_node();
    opcheck_grad(&n, 15, 5, in, 1, 1e-2, 1e-2, 1e-3);   /* dX, dscale, dB, dmean, dvar */
    qs_tensor *in2[5];
    in2[0] = rand_t(2, (int64_t[]){ 4, C }, -1, 1);    /* [N, C] as after a Gemm */
    bn_params(C, in2);
    opcheck_grad(&n, 15, 5, in2, 1, 1e-2, 1e-2, 1e-3);
}

TEST(bn_backward_training_finite_differences)
{
    int64_t C = 2;
    qs_tensor *in[5];
    in[0] = rand_t(4, (int64_t[]){ 3, C, 2, 2 }, -1, 1);
    bn_params(C, in);
    qs_node n = bn_node();
    opcheck_grad_ex(&n, 15, 5, in, 1, 1e-2, 1e-2, 2e-3, 1);   /* through the batch statistics */
    qs_node t = bn_node();
    qs_node_set_int(&t, "training_mode", 1);
    opcheck_grad_ex(&t, 15, 5, in, 3, 1e-2, 1e-2, 2e-3, 0);   /* with running_mean/var outputs */
    qs_node o = bn_node();
    opcheck_grad_ex(&o, 9, 5, in, 5, 1e-2, 1e-2, 2e-3, 1);    /* opset 9: mean, var, saved_mean, saved_var */
}

static void expect_error(qs_node *n, int64_t opset, qs_tensor **in, int code, const char *needle)
{
    qs_tensor *y[1];
    qs_err e = {0};
    int rc = opcheck_run(n, opset, 5, in, 1, y, 0, &e);
    ASSERT_EQ(rc, code);
    ASSERT_STR_CONTAINS(e.msg, needle);
}

TEST(bn_bad_input_named)
{
    qs_tensor *in[5];
    in[0] = rand_t(4, (int64_t[]){ 1, 3, 2, 2 }, -1, 1);
    bn_params(4, in);
    qs_node n = bn_node();
    n.name = (char *)"bn1";
    expect_error(&n, 15, in, QS_ESHAPE,
                 "BatchNormalization 'bn1': scale has shape [4]; expected one value per channel with 3 values");
    bn_params(3, in);
    in[4] = rand_t(2, (int64_t[]){ 3, 1 }, 1, 2);
    expect_error(&n, 15, in, QS_ESHAPE, "input_var has shape [3, 1]");
    bn_params(3, in);
    in[0] = rand_t(1, (int64_t[]){ 3 }, -1, 1);
    expect_error(&n, 15, in, QS_ESHAPE, "expected [N, C, ...]");
    in[0] = qs_tensor_new(QS_F64, 2, (int64_t[]){ 1, 3 });
    expect_error(&n, 15, in, QS_EUNSUPPORTED, "input X is float64; only float32");
}

TEST_MAIN(bn_inference_hand_computed, bn_batch_stats_hand_computed,
          bn_training_normalizes_with_batch_stats_and_running_outputs, bn_spatial_zero_per_activation,
          bn_backward_inference_finite_differences, bn_backward_training_finite_differences, bn_bad_input_named)
