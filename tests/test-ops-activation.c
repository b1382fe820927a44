/* Activations: forward against hand values (numpy-computed where a calculator is needed), the
 * opset-dependent forms of Clip and Softmax, and every backward against finite differences
 * (away from the kinks). */
#include "tests/optest.h"

#include <math.h>
#include <stdlib.h>

#include "ops/kernels.h"

static qs_tensor *act(const char *op, qs_tensor *x)
{
    qs_node n = opcheck_node(op, NULL);
    return run1(&n, 14, 1, (qs_tensor *[]){ x });
}

#define V4 TF(SHAPE(4), F(-2, -0.5f, 0.5f, 2))

TEST(pointwise_forward)
{
    expect_f32(act("Relu", V4), SHAPE(4), F(0, 0, 0.5f, 2), 0);
    expect_f32(act("Sigmoid", V4), SHAPE(4), F(0.1192029f, 0.3775407f, 0.6224593f, 0.8807971f), 1e-6);
    expect_f32(act("Tanh", V4), SHAPE(4), F(-0.9640276f, -0.4621172f, 0.4621172f, 0.9640276f), 1e-6);
    expect_f32(act("HardSigmoid", V4), SHAPE(4), F(0.1f, 0.4f, 0.6f, 0.9f), 1e-6);
    expect_f32(act("HardSwish", V4), SHAPE(4), F(-0.3333333f, -0.2083333f, 0.2916667f, 1.666667f), 1e-6);
    expect_f32(act("Elu", V4), SHAPE(4), F(-0.8646647f, -0.3934693f, 0.5f, 2), 1e-6);
    expect_f32(act("Selu", V4), SHAPE(4), F(-1.520166f, -0.6917582f, 0.5253505f, 2.101402f), 1e-6);
    expect_f32(act("Softplus", V4), SHAPE(4), F(0.126928f, 0.474077f, 0.974077f, 2.126928f), 1e-6);
    expect_f32(act("Gelu", V4), SHAPE(4), F(-0.04550026f, -0.1542688f, 0.3457312f, 1.9545f), 1e-6);
    expect_f32(act("LeakyRelu", V4), SHAPE(4), F(-0.02f, -0.005f, 0.5f, 2), 1e-7);
    /* the saturated ends of HardSigmoid/HardSwish and huge sigmoid inputs */
    expect_f32(act("HardSwish", TF(SHAPE(3), F(-4, 4, 3))), SHAPE(3), F(0, 4, 3), 0);
    expect_f32(act("Sigmoid", TF(SHAPE(2), F(-100, 100))), SHAPE(2), F(0, 1), 1e-7);
    /* Relu on integers (opset 14) */
    expect_ints(act("Relu", TT(QS_I8, SHAPE(3), I(-5, 0, 7))), QS_I8, SHAPE(3), I(0, 0, 7));
}

TEST(attributes)
{
    qs_node n = opcheck_node("LeakyRelu", NULL);
    qs_node_set_float(&n, "alpha", 0.1f);
    expect_f32(run1(&n, 13, 1, (qs_tensor *[]){ V4 }), SHAPE(4), F(-0.2f, -0.05f, 0.5f, 2), 1e-7);
    qs_node h = opcheck_node("HardSigmoid", NULL);
    qs_node_set_float(&h, "alpha", 0.5f);
    qs_node_set_float(&h, "beta", 0.25f);
    expect_f32(run1(&h, 13, 1, (qs_tensor *[]){ V4 }), SHAPE(4), F(0, 0, 0.5f, 1), 1e-7);
    qs_node e = opcheck_node("Elu", NULL);
    qs_node_set_float(&e, "alpha", 2);
    expect_f32(run1(&e, 13, 1, (qs_tensor *[]){ V4 }), SHAPE(4), F(-1.729329f, -0.7869387f, 0.5f, 2), 1e-6);
    qs_node g = opcheck_node("Gelu", NULL);
    qs_node_set_string(&g, "approximate", "tanh");
    expect_f32(run1(&g, 20, 1, (qs_tensor *[]){ V4 }), SHAPE(4), F(-0.04540231f, -0.154286f, 0.345714f, 1.954598f), 1e-6);
    qs_node_set_string(&g, "approximate", "erf");
    run_fail(&g, 20, 1, (qs_tensor *[]){ V4 }, 1, QS_EINVAL);
}

TEST(pointwise_grads)
{
    /* values kept away from every kink (0 for Relu-likes, ±3 for HardSwish, ±2.5 for HardSigmoid) */
    qs_tensor *x = TF(SHAPE(2, 4), F(-2.2f, -1.1f, -0.4f, -0.2f, 0.3f, 0.7f, 1.3f, 2.1f));
    const char *ops[] = { "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
                          "Softplus", "Gelu" };
    for (int k = 0; k < (int)(sizeof ops / sizeof ops[0]); k++) {
        qs_node n = opcheck_node(ops[k], NULL);
        opcheck_grad(&n, 14, 1, (qs_tensor *[]){ x }, 1, 1e-3, 2e-3, 1e-4);
    }
    qs_node g = opcheck_node("Gelu", NULL);
    qs_node_set_string(&g, "approximate", "tanh");
    opcheck_grad(&g, 20, 1, (qs_tensor *[]){ x }, 1, 1e-3, 2e-3, 1e-4);
    qs_node h = opcheck_node("HardSwish", NULL);
    opcheck_grad(&h, 14, 1, (qs_tensor *[]){ TF(SHAPE(2), F(-3.5f, 3.5f)) }, 1, 1e-3, 2e-3, 1e-4);
}

/* The backward split across threads: a long gradient (cut into chunks) on 1 and 3 threads, bit for
 * bit the formula element by element (Relu reads x, Sigmoid y, Tanh y) */
TEST(backward_threads_match_elementwise)
{
    int64_t len = 100003;
    qs_tensor *x = opcheck_rand(1, &len, -3, 3), *g = opcheck_rand(1, &len, -1, 1);
    const char *ops[] = { "Relu", "Sigmoid", "Tanh" };
    for (int k = 0; k < 3; k++) {
        qs_node n = opcheck_node(ops[k], NULL);
        qs_tensor *y = run1(&n, 14, 1, (qs_tensor *[]){ x });
        float *want = malloc(len * sizeof *want);
        for (int64_t i = 0; i < len; i++) {
            float xi = qs_f32(x)[i], yi = qs_f32(y)[i], gi = qs_f32(g)[i];
            want[i] = k == 0 ? (xi > 0 ? gi : 0.f) : k == 1 ? gi * yi * (1.f - yi) : gi * (1.f - yi * yi);
        }
        for (int threads = 1; threads <= 3; threads += 2) {
            qs_tensor *dx = qs_tensor_new(QS_F32, 1, &len);
            qs_err e = {0};
            qs_kctx c = {.node = &n, .opset = 14, .nin = 1, .nout = 1, .in = (qs_tensor *[]){ x },
                         .out = (qs_tensor *[]){ y }, .din = (qs_tensor *[]){ dx }, .dout = (qs_tensor *[]){ g },
                         .err = &e, .pool = opcheck_pool(threads), .nthreads = threads};
            ASSERT_EQ(qs_op_find("", ops[k])->backward(&c), 0);
            if (memcmp(dx->data, want, len * sizeof *want))
                QT_FAIL_("%s on %d threads differs from the formula", ops[k], threads);
            qs_tensor_free(dx);
        }
        free(want);
    }
    opcheck_pools_free();
}

TEST(prelu)
{
    qs_node n = opcheck_node("PRelu", NULL);
    /* per-channel slope [C,1,1] on [N,C,H,W] */
    qs_tensor *x = TF(SHAPE(1, 2, 1, 2), F(-1, 2, -3, 4));
    qs_tensor *s = TF(SHAPE(2, 1, 1), F(0.5f, 0.25f));
    expect_f32(run1(&n, 9, 2, (qs_tensor *[]){ x, s }), SHAPE(1, 2, 1, 2), F(-0.5f, 2, -0.75f, 4), 0);
    /* scalar slope */
    expect_f32(run1(&n, 9, 2, (qs_tensor *[]){ TF(SHAPE(3), F(-2, 0, 2)), TF(SHAPE(1), F(0.1f)) }), SHAPE(3),
               F(-0.2f, 0, 2), 1e-7);
    /* gradients for x and for the slope (summed over the broadcast dims) */
    qs_tensor *xr = opcheck_rand(4, (int64_t[]){ 2, 3, 2, 2 }, -1, 1);
    for (int64_t i = 0; i < qs_numel(xr); i++)   /* keep away from the kink at 0 */
        if (fabsf(qs_f32(xr)[i]) < 0.05f)
            qs_f32(xr)[i] = 0.3f;
    opcheck_grad(&n, 9, 2, (qs_tensor *[]){ xr, opcheck_rand(3, (int64_t[]){ 3, 1, 1 }, 0.1f, 0.5f) }, 1, 1e-3, 2e-3,
                 1e-4);
    /* [C] does not broadcast to [N,C,H,W] (it aligns with W) */
    const char *msg = run_fail(&n, 9, 2, (qs_tensor *[]){ TF(SHAPE(1, 3, 2, 2), NULL), TF(SHAPE(3), NULL) }, 1,
                               QS_ESHAPE);
    ASSERT_STR_CONTAINS(msg, "[3]");
    ASSERT_STR_CONTAINS(msg, "[1, 3, 2, 2]");
}

TEST(clip_both_forms)
{
    qs_tensor *x = TF(SHAPE(5), F(-3, -1, 0.5f, 5, 8));
    /* opset 6: attributes */
    qs_node a = opcheck_node("Clip", NULL);
    qs_node_set_float(&a, "min", -1.5f);
    qs_node_set_float(&a, "max", 6);
    expect_f32(run1(&a, 6, 1, (qs_tensor *[]){ x }), SHAPE(5), F(-1.5f, -1, 0.5f, 5, 6), 0);
    qs_node d = opcheck_node("Clip", NULL);   /* defaults: no clipping */
    expect_f32(run1(&d, 6, 1, (qs_tensor *[]){ x }), SHAPE(5), F(-3, -1, 0.5f, 5, 8), 0);
    /* opset 11+: optional inputs; Relu6 = Clip(0, 6) */
    qs_node n = opcheck_node("Clip", NULL);
    expect_f32(run1(&n, 13, 3, (qs_tensor *[]){ x, TF(SCALAR, F(0)), TF(SCALAR, F(6)) }), SHAPE(5), F(0, 0, 0.5f, 5, 6), 0);
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ x, TF(SCALAR, F(0)) }), SHAPE(5), F(0, 0, 0.5f, 5, 8), 0);
    expect_f32(run1(&n, 13, 3, (qs_tensor *[]){ x, NULL, TF(SCALAR, F(1)) }), SHAPE(5), F(-3, -1, 0.5f, 1, 1), 0);
    expect_f32(run1(&n, 13, 1, (qs_tensor *[]){ x }), SHAPE(5), F(-3, -1, 0.5f, 5, 8), 0);
    /* min > max: everything becomes max */
    expect_f32(run1(&n, 13, 3, (qs_tensor *[]){ x, TF(SCALAR, F(2)), TF(SCALAR, F(1)) }), SHAPE(5), F(1, 1, 1, 1, 1), 0);
    /* int8 (opset 12+) */
    expect_ints(run1(&n, 13, 3, (qs_tensor *[]){ TT(QS_I8, SHAPE(3), I(-100, 5, 100)), TT(QS_I8, SCALAR, I(-10)),
                                                 TT(QS_I8, SCALAR, I(10)) }),
                QS_I8, SHAPE(3), I(-10, 5, 10));
    /* the bounds must be scalars of the input's type */
    run_fail(&n, 13, 2, (qs_tensor *[]){ x, TF(SHAPE(2), F(0, 1)) }, 1, QS_ESHAPE);
    run_fail(&n, 13, 2, (qs_tensor *[]){ x, TI(SCALAR, I(0)) }, 1, QS_EINVAL);
}

TEST(clip_grads)
{
    qs_tensor *x = TF(SHAPE(6), F(-2.3f, -0.7f, 0.2f, 3.1f, 5.9f, 7.4f));
    qs_node n = opcheck_node("Clip", NULL);
    /* gradients for x, min and max */
    opcheck_grad(&n, 13, 3, (qs_tensor *[]){ x, TF(SCALAR, F(-1)), TF(SCALAR, F(6)) }, 1, 1e-3, 2e-3, 1e-4);
    opcheck_grad(&n, 13, 2, (qs_tensor *[]){ x, TF(SCALAR, F(0)) }, 1, 1e-3, 2e-3, 1e-4);
    qs_node a = opcheck_node("Clip", NULL);
    qs_node_set_float(&a, "min", 0);
    qs_node_set_float(&a, "max", 6);
    opcheck_grad(&a, 6, 1, (qs_tensor *[]){ x }, 1, 1e-3, 2e-3, 1e-4);
}

/* x = [[[1,2,3],[4,5,6]],[[0,-1,2],[1,1,1]]], shape [2,2,3], axis = 1 */
#define SMX TF(SHAPE(2, 2, 3), F(1, 2, 3, 4, 5, 6, 0, -1, 2, 1, 1, 1))

TEST(softmax_opset_semantics)
{
    qs_node n = opcheck_node("Softmax", NULL);
    qs_node_set_int(&n, "axis", 1);
    /* opset 13: along dim 1 only */
    expect_f32(run1(&n, 13, 1, (qs_tensor *[]){ SMX }), SHAPE(2, 2, 3),
               F(0.04742587f, 0.04742587f, 0.04742587f, 0.9525741f, 0.9525741f, 0.9525741f, 0.2689414f, 0.1192029f,
                 0.7310586f, 0.7310586f, 0.8807971f, 0.2689414f), 1e-6);
    /* opset 11: coerced to [2, 6], normalised over the 6 */
    expect_f32(run1(&n, 11, 1, (qs_tensor *[]){ SMX }), SHAPE(2, 2, 3),
               F(0.004269779f, 0.01160646f, 0.03154963f, 0.08576079f, 0.233122f, 0.6336913f, 0.05913038f,
                 0.02175285f, 0.4369177f, 0.160733f, 0.160733f, 0.160733f), 1e-6);
    /* default axis: 1 before 13 (the same [2,6] coercion), -1 from 13 */
    qs_node d = opcheck_node("Softmax", NULL);
    qs_tensor *y11 = run1(&d, 11, 1, (qs_tensor *[]){ SMX });
    ASSERT_CLOSE(qs_f32(y11)[5], 0.6336913f, 1e-6, 0);
    qs_tensor *y13 = run1(&d, 13, 1, (qs_tensor *[]){ SMX });
    ASSERT_CLOSE(qs_f32(y13)[0], 0.09003057f, 1e-6, 0);
    ASSERT_CLOSE(qs_f32(y13)[9], 1.f / 3, 1e-6, 0);
    /* large inputs do not overflow */
    qs_tensor *big = run1(&d, 13, 1, (qs_tensor *[]){ TF(SHAPE(2), F(1000, 1001)) });
    expect_f32(big, SHAPE(2), F(0.2689414f, 0.7310586f), 1e-6);
    qs_node bad = opcheck_node("Softmax", NULL);
    qs_node_set_int(&bad, "axis", 3);
    ASSERT_STR_CONTAINS(run_fail(&bad, 13, 1, (qs_tensor *[]){ SMX }, 1, QS_EINVAL), "axis 3");
}

TEST(logsoftmax)
{
    qs_node n = opcheck_node("LogSoftmax", NULL);
    expect_f32(run1(&n, 13, 1, (qs_tensor *[]){ SMX }), SHAPE(2, 2, 3),
               F(-2.407606f, -1.407606f, -0.407606f, -2.407606f, -1.407606f, -0.407606f, -2.169846f, -3.169846f,
                 -0.169846f, -1.098612f, -1.098612f, -1.098612f), 1e-5);
}

TEST(softmax_grads)
{
    const char *ops[] = { "Softmax", "LogSoftmax" };
    for (int k = 0; k < 2; k++)
        for (int axis = -3; axis < 3; axis++)
            for (int opset = 11; opset <= 13; opset += 2) {
                qs_node n = opcheck_node(ops[k], NULL);
                qs_node_set_int(&n, "axis", axis);
                opcheck_grad(&n, opset, 1, (qs_tensor *[]){ opcheck_rand(3, (int64_t[]){ 2, 3, 4 }, -2, 2) }, 1, 1e-2,
                             3e-3, 1e-4);
            }
}

/* The vectorized sigmoid (ops/kernels.c) against 1/(1 + e^−x) in double over [−100, 100] in steps
 * of 1/1024 and at its range-reduction edges: within 3e-7 relative, and below 2e-38 (absolute) where
 * it returns 0. */
TEST(sigmoid_kernel)
{
    enum { N = 204801 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *z = malloc(N * sizeof *z);
    for (int i = 0; i < N; i++)
        x[i] = -100.f + i / 1024.f;
    qs_vec_sigmoid(N, x, y);
    qs_vec_silu(N, x, z);
    double worst = 0, worst_silu = 0;
    for (int i = 0; i < N; i++) {
        double want = 1.0 / (1.0 + exp(-(double)x[i])), err = fabs(y[i] - want);
        if (want < 2e-38)
            ASSERT(err < 2e-38);
        else if (err / want > worst)
            worst = err / want;
        double zw = x[i] * want;
        if (fabs(zw) > 1e-30 && fabs(z[i] - zw) / fabs(zw) > worst_silu)
            worst_silu = fabs(z[i] - zw) / fabs(zw);
    }
    ASSERT(worst < 3e-7);
    ASSERT(worst_silu < 4e-7);
    /* exactly representable checks: 0 → ½, and the in-place form */
    x[0] = 0.f;
    qs_vec_sigmoid(1, x, x);
    ASSERT(x[0] == 0.5f);
    free(x);
    free(y);
    free(z);
}

/* The vectorized HardSwish and HardSigmoid (ops/kernels.c, also the Conv epilogue's) against the
 * definitions in double over [−8, 8] in steps of 1/256 (an odd count: the loops' tails too), in place
 * as the epilogue runs them: within one rounding of each float operation (x·⅙ + ½ is off by up to
 * half an ulp of ½, times |x|, where it cancels near x = −3). */
TEST(hard_activation_kernels)
{
    enum { N = 4097 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *z = malloc(N * sizeof *z);
    for (int i = 0; i < N; i++)
        x[i] = y[i] = -8.f + i / 256.f;
    qs_vec_hardswish(N, y, y);
    qs_vec_hardsigmoid(N, 0.3f, 0.4f, x, z);
    int flat = 0;
    for (int i = 0; i < N; i++) {
        double v = x[i], s = fmin(fmax(v / 6 + 0.5, 0), 1), h = fmin(fmax(0.3f * v + 0.4f, 0), 1);
        ASSERT(fabs(y[i] - v * s) <= 2.5e-7 * fabs(v * s) + 6e-8 * fabs(v));
        ASSERT(fabs(z[i] - h) <= 2.5e-7);
        flat += (v <= -3 && y[i] == 0.f) + (v >= 3 && y[i] == x[i]);
    }
    ASSERT_EQ(flat, 2 * (5 * 256 + 1));
    free(x);
    free(y);
    free(z);
}

TEST_MAIN(pointwise_forward, sigmoid_kernel, hard_activation_kernels, attributes, pointwise_grads, backward_threads_match_elementwise, prelu, clip_both_forms, clip_grads, softmax_opset_semantics,
          logsoftmax, softmax_grads)
