/* LayerNormalization, GroupNormalization, InstanceNormalization: forward against hand-computed
 * values and the defining formula, ONNX's InstanceNormalization conformance data (its models are
 * opset 6, below what the executor plans, so the tensors are run through the kernel here), finite
 * differences for every backward (X, scale, bias, and LayerNorm's Mean/InvStdDev outputs), the
 * threaded split against one thread, and bad attributes and shapes named in the errors. */
#include "tests/optest.h"
#include "onnx.h"

#include <sys/stat.h>

static qs_node ln_node(void) { return opcheck_node("LayerNormalization", NULL); }

/* y = (x − mean)/sqrt(var + eps)·s + b over rows of M, reference in double */
static void ln_ref(const float *x, int64_t R, int64_t M, const float *s, const float *b, float eps, double *y)
{
    for (int64_t r = 0; r < R; r++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < M; i++)
            m += x[r * M + i];
        m /= M;
        for (int64_t i = 0; i < M; i++)
            v += (x[r * M + i] - m) * (x[r * M + i] - m);
        v /= M;
        for (int64_t i = 0; i < M; i++)
            y[r * M + i] = (x[r * M + i] - m) / sqrt(v + eps) * s[i] + (b ? b[i] : 0);
    }
}

TEST(layernorm_hand_computed)
{
    /* rows {1, 2, 3, 6}: mean 3, var (4 + 1 + 0 + 9)/4 = 3.5 */
    qs_tensor *x = TF(SHAPE(1, 4), F(1, 2, 3, 6)), *s = TF(SHAPE(4), F(1, 2, 1, 1)), *b = TF(SHAPE(4), F(0, 0, 1, 0));
    qs_node n = ln_node();
    qs_node_set_float(&n, "epsilon", 0.f);
    qs_tensor *out[3];
    opcheck_forward(&n, 17, 3, (qs_tensor *[]){ x, s, b }, 3, out);
    double r = 1 / sqrt(3.5);
    expect_f32(out[0], SHAPE(1, 4), F((float)(-2 * r), (float)(-2 * r), 1, (float)(3 * r)), 1e-6);
    expect_f32(out[1], SHAPE(1, 1), F(3), 1e-6);
    expect_f32(out[2], SHAPE(1, 1), F((float)r), 1e-6);
}

TEST(layernorm_axes_and_broadcast_scale)
{
    /* [2, 3, 4] normalized over axis 1 (rows of 12) with Scale [1, 4] broadcast over the 3 */
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 2, 3, 4 }, -2, 3);
    qs_tensor *s = opcheck_rand(2, (int64_t[]){ 1, 4 }, 0.5f, 1.5f), *b = opcheck_rand(1, (int64_t[]){ 4 }, -1, 1);
    qs_node n = ln_node();
    qs_node_set_int(&n, "axis", -2);
    qs_tensor *out[3];
    opcheck_forward(&n, 17, 3, (qs_tensor *[]){ x, s, b }, 3, out);
    float sf[12], bf[12];
    for (int i = 0; i < 12; i++) {
        sf[i] = qs_f32(s)[i % 4];
        bf[i] = qs_f32(b)[i % 4];
    }
    double want[24];
    ln_ref(qs_f32(x), 2, 12, sf, bf, 1e-5f, want);
    for (int i = 0; i < 24; i++)
        ASSERT_CLOSE(qs_f32(out[0])[i], want[i], 1e-5, 1e-5);
    expect_shape(out[1], SHAPE(2, 1, 1));
    /* no B, axis 0: one row */
    qs_node m = ln_node();
    qs_node_set_int(&m, "axis", 0);
    qs_tensor *s24 = opcheck_rand(3, (int64_t[]){ 2, 3, 4 }, 0.5f, 1.5f);
    qs_tensor *y = run1(&m, 17, 2, (qs_tensor *[]){ x, s24 });
    ln_ref(qs_f32(x), 1, 24, qs_f32(s24), NULL, 1e-5f, want);
    for (int i = 0; i < 24; i++)
        ASSERT_CLOSE(qs_f32(y)[i], want[i], 1e-5, 1e-5);
}

TEST(layernorm_backward_finite_differences)
{
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 2, 3, 4 }, -1, 1);
    qs_tensor *s = opcheck_rand(1, (int64_t[]){ 4 }, 0.5f, 1.5f), *b = opcheck_rand(1, (int64_t[]){ 4 }, -1, 1);
    qs_node n = ln_node();
    opcheck_grad(&n, 17, 3, (qs_tensor *[]){ x, s, b }, 1, 1e-2, 1e-2, 2e-3);
    opcheck_grad(&n, 17, 3, (qs_tensor *[]){ x, s, b }, 3, 1e-2, 1e-2, 2e-3);   /* + Mean, InvStdDev */
    qs_node m = ln_node();
    qs_node_set_int(&m, "axis", 1);
    qs_tensor *sb = opcheck_rand(2, (int64_t[]){ 3, 1 }, 0.5f, 1.5f), *bb = opcheck_rand(1, (int64_t[]){ 1 }, -1, 1);
    opcheck_grad(&m, 17, 3, (qs_tensor *[]){ x, sb, bb }, 3, 1e-2, 1e-2, 2e-3);   /* broadcast Scale and B */
    opcheck_grad(&m, 17, 2, (qs_tensor *[]){ x, sb }, 1, 1e-2, 1e-2, 2e-3);
}

/* forward and backward split 3 ways on a pool agree with one thread */
static void expect_threads_agree(const qs_node *n, int64_t opset, int nin, qs_tensor **in)
{
    const qs_op_def *d = qs_op_find("", n->op);
    qs_tensor *y1[1], *y3;
    opcheck_forward(n, opset, nin, in, 1, y1);
    y3 = qs_tensor_new(QS_F32, y1[0]->ndim, y1[0]->shape);
    qs_tensor *din1[3] = { 0 }, *din3[3] = { 0 }, *dy = opcheck_rand(y1[0]->ndim, y1[0]->shape, -1, 1);
    for (int i = 0; i < nin; i++) {
        din1[i] = qs_tensor_new(QS_F32, in[i]->ndim, in[i]->shape);
        din3[i] = qs_tensor_new(QS_F32, in[i]->ndim, in[i]->shape);
    }
    qs_err e = { 0 };
    for (int t = 1; t <= 3; t += 2) {
        qs_kctx c = { .node = n, .opset = opset, .nin = nin, .nout = 1, .in = in, .out = t == 1 ? y1 : &y3,
                      .din = t == 1 ? din1 : din3, .dout = &dy, .nthreads = t, .pool = opcheck_pool(t), .err = &e };
        c.scratch_size = d->scratch(&c);
        c.scratch = malloc(c.scratch_size);
        ASSERT_EQ(d->forward(&c), 0);
        ASSERT_EQ(d->backward(&c), 0);
        free(c.scratch);
    }
    for (int64_t k = 0; k < qs_numel(y3); k++)
        ASSERT_EQ(qs_f32(y3)[k], qs_f32(y1[0])[k]);
    for (int i = 0; i < nin; i++)
        for (int64_t k = 0; k < qs_numel(din1[i]); k++)
            ASSERT_EQ(qs_f32(din3[i])[k], qs_f32(din1[i])[k]);
}

TEST(norms_threaded_match_one_thread)
{
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 37, 5, 16 }, -1, 1);
    qs_node n = ln_node();
    expect_threads_agree(&n, 17, 3, (qs_tensor *[]){ x, opcheck_rand(1, (int64_t[]){ 16 }, 0.5f, 1.5f),
                                                     opcheck_rand(1, (int64_t[]){ 16 }, -1, 1) });
    qs_node g = opcheck_node("GroupNormalization", NULL);
    qs_node_set_int(&g, "num_groups", 2);
    qs_tensor *x4 = opcheck_rand(4, (int64_t[]){ 9, 4, 3, 5 }, -1, 1);
    expect_threads_agree(&g, 21, 3, (qs_tensor *[]){ x4, opcheck_rand(1, (int64_t[]){ 4 }, 0.5f, 1.5f),
                                                     opcheck_rand(1, (int64_t[]){ 4 }, -1, 1) });
    opcheck_pools_free();   /* join the workers before the harness's _exit */
}

/* y per (n, c) of X [N, C, S] normalized over the rows of groups of C/G channels; scale per channel */
static void gn_ref(const float *x, int64_t N, int64_t C, int64_t S, int64_t G, const float *s, const float *b,
                   float eps, double *y)
{
    int64_t M = C / G * S;
    for (int64_t r = 0; r < N * G; r++) {
        const float *xr = x + r * M;
        double m = 0, v = 0;
        for (int64_t i = 0; i < M; i++)
            m += xr[i];
        m /= M;
        for (int64_t i = 0; i < M; i++)
            v += (xr[i] - m) * (xr[i] - m);
        v /= M;
        for (int64_t i = 0; i < M; i++) {
            int64_t ch = (r % G) * (C / G) + i / S;
            y[r * M + i] = (xr[i] - m) / sqrt(v + eps) * s[ch] + b[ch];
        }
    }
}

TEST(groupnorm_per_channel_and_per_group)
{
    qs_tensor *x = opcheck_rand(4, (int64_t[]){ 2, 6, 2, 3 }, -2, 2);
    qs_tensor *s = opcheck_rand(1, (int64_t[]){ 6 }, 0.5f, 1.5f), *b = opcheck_rand(1, (int64_t[]){ 6 }, -1, 1);
    qs_node n = opcheck_node("GroupNormalization", NULL);
    qs_node_set_int(&n, "num_groups", 3);
    qs_node_set_float(&n, "epsilon", 1e-3f);
    double want[72];
    gn_ref(qs_f32(x), 2, 6, 6, 3, qs_f32(s), qs_f32(b), 1e-3f, want);
    qs_tensor *y = run1(&n, 21, 3, (qs_tensor *[]){ x, s, b });
    for (int i = 0; i < 72; i++)
        ASSERT_CLOSE(qs_f32(y)[i], want[i], 1e-5, 1e-5);
    opcheck_grad(&n, 21, 3, (qs_tensor *[]){ x, s, b }, 1, 1e-2, 1e-2, 2e-3);
    /* opset 18: one scale and bias per group, i.e. the same value for the group's channels */
    qs_tensor *sg = opcheck_rand(1, (int64_t[]){ 3 }, 0.5f, 1.5f), *bg = opcheck_rand(1, (int64_t[]){ 3 }, -1, 1);
    float sc[6], bc[6];
    for (int i = 0; i < 6; i++) {
        sc[i] = qs_f32(sg)[i / 2];
        bc[i] = qs_f32(bg)[i / 2];
    }
    gn_ref(qs_f32(x), 2, 6, 6, 3, sc, bc, 1e-3f, want);
    y = run1(&n, 18, 3, (qs_tensor *[]){ x, sg, bg });
    for (int i = 0; i < 72; i++)
        ASSERT_CLOSE(qs_f32(y)[i], want[i], 1e-5, 1e-5);
    opcheck_grad(&n, 18, 3, (qs_tensor *[]){ x, sg, bg }, 1, 1e-2, 1e-2, 2e-3);
}

TEST(instancenorm_formula_and_backward)
{
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 3, 4, 5 }, -2, 2);
    qs_tensor *s = opcheck_rand(1, (int64_t[]){ 4 }, 0.5f, 1.5f), *b = opcheck_rand(1, (int64_t[]){ 4 }, -1, 1);
    qs_node n = opcheck_node("InstanceNormalization", NULL);
    double want[60];
    gn_ref(qs_f32(x), 3, 4, 5, 4, qs_f32(s), qs_f32(b), 1e-5f, want);
    qs_tensor *y = run1(&n, 13, 3, (qs_tensor *[]){ x, s, b });
    for (int i = 0; i < 60; i++)
        ASSERT_CLOSE(qs_f32(y)[i], want[i], 1e-5, 1e-5);
    opcheck_grad(&n, 13, 3, (qs_tensor *[]){ x, s, b }, 1, 1e-2, 1e-2, 2e-3);
}

/* ONNX's test_instancenorm_* cases: opset-6 models, so the kernel runs on their tensors directly */
TEST(instancenorm_onnx_conformance_data)
{
    const char *root = getenv("QD_ONNX_TESTDATA") ? getenv("QD_ONNX_TESTDATA") : "/usr/share/libonnx-testdata/data";
    const char *cases[] = { "test_instancenorm_example", "test_instancenorm_epsilon" };
    const float eps[] = { 1e-5f, 1e-2f };   /* the cases' epsilon attributes */
    char path[1024];
    struct stat st;
    snprintf(path, sizeof path, "%s/node/%s", root, cases[0]);
    if (stat(path, &st))
        SKIP("no ONNX conformance data under %s (libonnx-testdata)", root);
    for (int k = 0; k < 2; k++) {
        qs_tensor *in[3], *want;
        char *name;
        qs_err e = { 0 };
        for (int i = 0; i < 4; i++) {
            snprintf(path, sizeof path, "%s/node/%s/test_data_set_0/%s_%d.pb", root, cases[k], i < 3 ? "input" : "output",
                     i < 3 ? i : 0);
            ASSERT_EQ(qs_onnx_load_tensor(path, i < 3 ? &in[i] : &want, &name, &e), 0);
            free(name);
        }
        qs_node n = opcheck_node("InstanceNormalization", NULL);
        qs_node_set_float(&n, "epsilon", eps[k]);
        qs_tensor *y = run1(&n, 6, 3, in);
        ASSERT(qs_shape_eq(y, want));
        for (int64_t i = 0; i < qs_numel(y); i++)
            ASSERT_CLOSE(qs_f32(y)[i], qs_f32(want)[i], 1e-3, 1e-5);
    }
}

TEST(norms_bad_input_named)
{
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 2, 3, 4 }, -1, 1), *s4 = opcheck_rand(1, (int64_t[]){ 4 }, 1, 2);
    qs_tensor *s3 = opcheck_rand(1, (int64_t[]){ 3 }, 1, 2);
    qs_node n = ln_node();
    n.name = (char *)"ln1";
    ASSERT_STR_CONTAINS(run_fail(&n, 17, 2, (qs_tensor *[]){ x, s3 }, 1, QS_ESHAPE),
                        "LayerNormalization 'ln1': Scale has shape [3], which does not broadcast to the normalized "
                        "shape [4]");
    qs_node_set_int(&n, "axis", 3);
    ASSERT_STR_CONTAINS(run_fail(&n, 17, 2, (qs_tensor *[]){ x, s4 }, 1, QS_EINVAL), "attribute axis 3 is out of range");
    qs_node_set_int(&n, "axis", -1);
    qs_node_set_int(&n, "stash_type", 10);
    ASSERT_STR_CONTAINS(run_fail(&n, 17, 2, (qs_tensor *[]){ x, s4 }, 1, QS_EUNSUPPORTED), "stash_type = 10");
    qs_node g = opcheck_node("GroupNormalization", NULL);
    g.name = (char *)"gn1";
    ASSERT_STR_CONTAINS(run_fail(&g, 21, 3, (qs_tensor *[]){ x, s3, s3 }, 1, QS_EINVAL),
                        "GroupNormalization 'gn1': attribute num_groups is required");
    qs_node_set_int(&g, "num_groups", 2);
    ASSERT_STR_CONTAINS(run_fail(&g, 21, 3, (qs_tensor *[]){ x, s3, s3 }, 1, QS_EINVAL),
                        "num_groups = 2 must be positive and divide the 3 channels");
    qs_node_set_int(&g, "num_groups", 3);
    ASSERT_STR_CONTAINS(run_fail(&g, 18, 3, (qs_tensor *[]){ x, s4, s3 }, 1, QS_ESHAPE),
                        "scale has shape [4]; expected [3] (one value per group before opset 21)");
    qs_node i = opcheck_node("InstanceNormalization", NULL);
    ASSERT_STR_CONTAINS(run_fail(&i, 13, 3, (qs_tensor *[]){ x, s3, s4 }, 1, QS_ESHAPE),
                        "B has shape [4]; expected [3] (one value per channel)");
    qs_node_set_float(&i, "epsilon", -1.f);
    ASSERT_STR_CONTAINS(run_fail(&i, 13, 3, (qs_tensor *[]){ x, s3, s3 }, 1, QS_EINVAL), "epsilon = -1");
}

TEST_MAIN(layernorm_hand_computed, layernorm_axes_and_broadcast_scale, layernorm_backward_finite_differences,
          norms_threaded_match_one_thread, groupnorm_per_channel_and_per_group, instancenorm_formula_and_backward,
          instancenorm_onnx_conformance_data, norms_bad_input_named)
