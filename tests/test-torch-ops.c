/* Resize/Upsample and the sample-wise normalizations against PyTorch: the committed models in
 * tests/fixtures/torchops (made by tests/fixtures/make_torch_ops.py from F.interpolate, nn.LayerNorm,
 * nn.GroupNorm, nn.InstanceNorm2d) run forward and backward in the executor, and their output and
 * the gradients w.r.t. the input (and the norms' weight and bias) must match torch's, saved beside
 * them. No torch at test time. */
#include "tests/harness.h"

#include "data.h"
#include "exec.h"
#include "onnx.h"

#define RTOL 1e-4
#define ATOL 2e-5

static void expect_close(const char *what, const char *name, const qs_tensor *got, const qs_tensor *want)
{
    char a[128], b[128];
    if (!got)
        QT_FAIL_("%s %s: no tensor", name, what);
    if (!qs_shape_eq(got, want))
        QT_FAIL_("%s %s: shape %s, expected %s", name, what, qs_shape_str(got->ndim, got->shape, a, sizeof a),
                 qs_shape_str(want->ndim, want->shape, b, sizeof b));
    for (int64_t i = 0; i < qs_numel(want); i++) {
        double g = qs_f32(got)[i], w = qs_f32(want)[i];
        if (!(fabs(g - w) <= ATOL + RTOL * fabs(w)))
            QT_FAIL_("%s %s[%lld]: %.9g, torch %.9g", name, what, (long long)i, g, w);
    }
}

static const qs_tensor *array(const qs_dataset *d, const char *name)
{
    int i = qs_dataset_find(d, name);
    return i < 0 ? NULL : qs_dataset_array(d, i);
}

static int find_value(const qs_graph *g, const char *name)
{
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].name && !strcmp(g->values[v].name, name))
            return v;
    return -1;
}

/* Runs case `name`; returns how many gradients were compared (input + parameters). */
static int check_case(const char *name)
{
    char path[1024];
    qs_err e = { 0 };
    qs_graph *g;
    qs_dataset *d;
    snprintf(path, sizeof path, "%s/tests/fixtures/torchops/%s.onnx", QD_SRCDIR, name);
    ASSERT_FIXTURE(path);
    if (qs_onnx_load(path, &g, &e) < 0)
        QT_FAIL_("%s: %s", name, e.msg);
    snprintf(path, sizeof path, "%s/tests/fixtures/torchops/%s.npz", QD_SRCDIR, name);
    ASSERT_FIXTURE(path);
    if (qs_dataset_open(path, &d, &e) < 0)
        QT_FAIL_("%s: %s", name, e.msg);
    const qs_tensor *x = array(d, "x"), *y = array(d, "y"), *dy = array(d, "dy"), *dx = array(d, "dx");
    ASSERT(x && y && dy && dx);
    qs_exec *ex = qs_exec_new(g, QS_EXEC_TRAIN, &e);
    if (!ex || qs_exec_plan(ex, x->shape[0], &e) < 0 || qs_exec_set_input(ex, 0, x, &e) < 0 ||
        qs_exec_forward(ex, &e) < 0)
        QT_FAIL_("%s: %s", name, e.msg);
    expect_close("output", name, qs_exec_output(ex, 0), y);
    const qs_tensor *douts[1] = { dy };
    if (qs_exec_backward(ex, douts, &e) < 0)
        QT_FAIL_("%s backward: %s", name, e.msg);
    expect_close("d/dx", name, qs_exec_grad(ex, g->inputs[0]), dx);
    int compared = 1;
    const char *params[] = { "weight", "bias" };
    for (int k = 0; k < 2; k++) {
        char key[32];
        snprintf(key, sizeof key, "d%s", params[k]);
        const qs_tensor *want = array(d, key);
        if (!want)
            continue;
        int v = find_value(g, params[k]);
        ASSERT(v >= 0);
        expect_close(key, name, qs_exec_grad(ex, v), want);
        compared++;
    }
    qs_exec_free(ex);
    qs_dataset_close(d);
    qs_graph_free(g);
    return compared;
}

TEST(torch_interpolate_nearest)
{
    check_case("resize_nearest_up");
    check_case("resize_nearest_down");
    check_case("resize_nearest_up_opset11");
    check_case("upsample_nearest_opset9");
}

TEST(torch_interpolate_linear)
{
    check_case("resize_bilinear_up");
    check_case("resize_bilinear_up_ac");
    check_case("resize_bilinear_down");
    check_case("resize_linear1d");
    check_case("resize_bilinear_antialias");
}

TEST(torch_interpolate_bicubic)
{
    check_case("resize_bicubic_up");
    check_case("resize_bicubic_up_ac");
    check_case("resize_bicubic_down");
    check_case("resize_bicubic_antialias");
}

TEST(torch_norms)
{
    ASSERT_EQ(check_case("layernorm"), 3);
    ASSERT_EQ(check_case("layernorm_2d"), 3);
    ASSERT_EQ(check_case("groupnorm"), 3);
    ASSERT_EQ(check_case("groupnorm_exported"), 1);   /* InstanceNormalization + Reshape + Mul + Add */
    ASSERT_EQ(check_case("instancenorm"), 3);
}

TEST_MAIN(torch_interpolate_nearest, torch_interpolate_linear, torch_interpolate_bicubic, torch_norms)
