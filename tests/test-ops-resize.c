/* Resize and Upsample beyond ONNX's conformance cases (those run in test-conformance): opset-18/19
 * features (axes, keep_aspect_ratio_policy, half_pixel_symmetric, antialias) against hand values,
 * tf_crop_and_resize extrapolation, the backward (the interpolation's adjoint) against finite
 * differences in every mode, the threaded split against one thread, and named errors. */
#include "tests/optest.h"

static qs_node resize(const char *mode, const char *coord)
{
    qs_node n = opcheck_node("Resize", NULL);
    qs_node_set_string(&n, "mode", mode);
    if (coord)
        qs_node_set_string(&n, "coordinate_transformation_mode", coord);
    return n;
}

static qs_tensor *scales(int n, const float *v) { return TF((ot_shape){ 1, { n } }, v); }

/* inputs X, roi (absent), scales, sizes (one of them) */
static qs_tensor *run_scales(const qs_node *n, int64_t opset, qs_tensor *x, qs_tensor *s)
{
    return run1(n, opset, 3, (qs_tensor *[]){ x, NULL, s });
}
static qs_tensor *run_sizes(const qs_node *n, int64_t opset, qs_tensor *x, int k, const int64_t *sz)
{
    return run1(n, opset, 4, (qs_tensor *[]){ x, NULL, NULL, TI(((ot_shape){ 1, { k } }), sz) });
}

/* The backward w.r.t. X against central differences of L = Σ w ⊙ Resize(X) (Resize is linear in
 * X, so they are exact up to rounding); scales and roi are not differentiated. */
static void grad_x(const qs_node *n, int64_t opset, int nin, qs_tensor **in)
{
    const qs_op_def *d = qs_op_find("", n->op);
    qs_tensor *x = in[0], *y = run1(n, opset, nin, in);
    qs_tensor *w = opcheck_rand(y->ndim, y->shape, -1, 1), *dx = qs_tensor_new(QS_F32, x->ndim, x->shape);
    qs_tensor *din[4] = { dx, NULL, NULL, NULL };
    qs_err e = { 0 };
    qs_kctx c = { .node = n, .opset = opset, .nin = nin, .nout = 1, .in = in, .out = &y, .din = din, .dout = &w,
                  .nthreads = 1, .err = &e };
    c.scratch_size = d->scratch(&c);
    c.scratch = malloc(c.scratch_size);
    ASSERT_EQ(d->backward(&c), 0);
    free(c.scratch);
    for (int64_t k = 0; k < qs_numel(x); k++) {
        float keep = qs_f32(x)[k];
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            qs_f32(x)[k] = keep + (sgn ? -0.01f : 0.01f);
            qs_tensor *yk = run1(n, opset, nin, in);
            l[sgn] = 0;
            for (int64_t i = 0; i < qs_numel(yk); i++)
                l[sgn] += (double)qs_f32(w)[i] * qs_f32(yk)[i];
            qs_tensor_free(yk);
        }
        qs_f32(x)[k] = keep;
        double num = (l[0] - l[1]) / 0.02;
        if (!(fabs(qs_f32(dx)[k] - num) <= 1e-3 + 1e-3 * fabs(num)))
            QT_FAIL_("%s: dX[%lld]: backward %.6g, finite difference %.6g", n->op, (long long)k, qs_f32(dx)[k], num);
    }
}

TEST(resize_half_pixel_symmetric_on_a_plane)
{
    /* z = 1 + 2h + w is linear, so linear resizing gives z at the (edge-clamped) source coordinates,
     * which half_pixel_symmetric places at c·(1 − L_out/(s·L_in)) + (x + ½)/s − ½, c = L_in/2 */
    qs_tensor *x = TF(SHAPE(1, 1, 2, 2), F(1, 2, 3, 4));
    qs_node n = resize("linear", "half_pixel_symmetric");
    qs_tensor *y = run_scales(&n, 19, x, scales(4, F(1, 1, 2.3f, 2.94f)));
    expect_shape(y, SHAPE(1, 1, 4, 5));
    const double s[2] = { 2.3f, 2.94f };
    const int64_t L[2] = { 4, 5 };
    for (int h = 0; h < 4; h++)
        for (int w = 0; w < 5; w++) {
            double c[2];
            for (int a = 0; a < 2; a++) {
                int64_t o = a ? w : h;
                c[a] = 1.0 * (1 - L[a] / (s[a] * 2)) + (o + 0.5) / s[a] - 0.5;
                c[a] = c[a] < 0 ? 0 : c[a] > 1 ? 1 : c[a];
            }
            ASSERT_CLOSE(qs_f32(y)[h * 5 + w], 1 + 2 * c[0] + c[1], 1e-6, 1e-6);
        }
    ASSERT_CLOSE(qs_f32(y)[6], 1.72508133, 1e-6, 0);   /* ONNX's own expected value for this case */
}

TEST(resize_axes_and_keep_aspect_ratio)
{
    float v[24];
    for (int i = 0; i < 24; i++)
        v[i] = (float)i;
    qs_tensor *x = TF(SHAPE(1, 1, 4, 6), v);
    qs_node n = resize("nearest", "asymmetric");
    qs_node_set_ints(&n, "axes", 2, I(2, 3));
    /* stretch: sizes as given */
    expect_shape(run_sizes(&n, 18, x, 2, I(2, 3)), SHAPE(1, 1, 2, 3));
    /* not_larger: one scale min(2/4, 2/6) = 1/3 → round(4/3) × round(6/3) */
    qs_node_set_string(&n, "keep_aspect_ratio_policy", "not_larger");
    qs_tensor *y = run_sizes(&n, 18, x, 2, I(2, 2));
    expect_f32(y, SHAPE(1, 1, 1, 2), F(0, 3), 0);   /* columns 0 and 1·3 */
    /* not_smaller: max(2/4, 2/6) = 1/2 → 2 × 3, rows 0, 2 and columns 0, 2, 4 */
    qs_node_set_string(&n, "keep_aspect_ratio_policy", "not_smaller");
    y = run_sizes(&n, 18, x, 2, I(2, 2));
    expect_f32(y, SHAPE(1, 1, 2, 3), F(0, 2, 4, 12, 14, 16), 0);
    /* negative axes; scales name only those axes */
    qs_node m = resize("nearest", "asymmetric");
    qs_node_set_ints(&m, "axes", 1, I(-1));
    y = run_scales(&m, 18, x, scales(1, F(0.5f)));
    expect_shape(y, SHAPE(1, 1, 4, 3));
    ASSERT_EQ(qs_f32(y)[4], 8);   /* row 1, column 2 → input column 4 */
}

TEST(resize_tf_crop_extrapolates)
{
    qs_tensor *x = TF(SHAPE(1, 1, 2, 2), F(1, 2, 3, 4));
    qs_node n = resize("linear", "tf_crop_and_resize");
    qs_node_set_float(&n, "extrapolation_value", 9);
    /* W's roi [0, 2] maps output columns to 0, 1, 2: the last lies beyond the input */
    qs_tensor *roi = TF(SHAPE(8), F(0, 0, 0, 0, 1, 1, 1, 2));
    qs_tensor *y = run1(&n, 13, 4, (qs_tensor *[]){ x, roi, NULL, TI(SHAPE(4), I(1, 1, 2, 3)) });
    expect_f32(y, SHAPE(1, 1, 2, 3), F(1, 2, 9, 3, 4, 9), 1e-6);
    grad_x(&n, 13, 4, (qs_tensor *[]){ x, roi, NULL, TI(SHAPE(4), I(1, 1, 2, 3)) });   /* 0 where extrapolated */
    /* nearest, H's roi [−1, 1]: output rows at −1 (outside), 0, 1 */
    qs_node m = resize("nearest", "tf_crop_and_resize");
    qs_node_set_float(&m, "extrapolation_value", 9);
    qs_tensor *roi2 = TF(SHAPE(8), F(0, 0, -1, 0, 1, 1, 1, 1));
    y = run1(&m, 13, 4, (qs_tensor *[]){ x, roi2, NULL, TI(SHAPE(4), I(1, 1, 3, 2)) });
    expect_f32(y, SHAPE(1, 1, 3, 2), F(9, 9, 1, 2, 3, 4), 0);
}

TEST(resize_backward_finite_differences)
{
    /* the backward is linear in dY and exact: small steps suffice */
    qs_tensor *x = opcheck_rand(4, (int64_t[]){ 1, 2, 5, 4 }, -1, 1);
    struct { const char *mode, *coord; float sh, sw; int exclude, antialias; } cases[] = {
        { "nearest", "half_pixel", 1.7f, 0.6f, 0, 0 },
        { "linear", "half_pixel", 1.7f, 0.6f, 0, 0 },
        { "linear", "align_corners", 2.0f, 1.5f, 0, 0 },
        { "linear", "pytorch_half_pixel", 0.5f, 0.75f, 0, 1 },
        { "cubic", "half_pixel", 1.5f, 0.8f, 0, 0 },
        { "cubic", "asymmetric", 1.5f, 2.2f, 1, 0 },
        { "cubic", "half_pixel", 0.45f, 0.7f, 0, 1 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        qs_node n = resize(cases[k].mode, cases[k].coord);
        qs_node_set_int(&n, "exclude_outside", cases[k].exclude);
        qs_node_set_int(&n, "antialias", cases[k].antialias);
        grad_x(&n, 18, 3, (qs_tensor *[]){ x, NULL, scales(4, F(1, 1, cases[k].sh, cases[k].sw)) });
    }
    /* Upsample (opset 9) and Resize-10: X, scales */
    qs_node u = opcheck_node("Upsample", NULL);
    qs_node_set_string(&u, "mode", "linear");
    grad_x(&u, 9, 2, (qs_tensor *[]){ x, scales(4, F(1, 1, 2, 3)) });
}

TEST(resize_align_corners_uses_the_output_length)
{
    /* ONNX's test_resize_downsample_scales_*_align_corners: [1..4; 5..8] × 0.6 → 1 × 2. The output
     * column 1 reads input column 1·(4 − 1)/(2 − 1) = 3 (ONNX Runtime: 4), not 3/(2.4 − 1) (ONNX's
     * reference: 3.142857); the conformance runner skips those two cases for that reason. */
    qs_tensor *x = TF(SHAPE(1, 1, 2, 4), F(1, 2, 3, 4, 5, 6, 7, 8));
    qs_node n = resize("linear", "align_corners");
    expect_f32(run_scales(&n, 13, x, scales(4, F(1, 1, 0.6f, 0.6f))), SHAPE(1, 1, 1, 2), F(1, 4), 1e-6);
    /* cubic, 4 × 4 × 0.8 → 3 × 3: columns 0, 1.5, 3 of a linear ramp (Keys' kernel keeps ramps) */
    float v[16];
    for (int i = 0; i < 16; i++)
        v[i] = (float)(i + 1);
    qs_node c = resize("cubic", "align_corners");
    qs_tensor *y = run_scales(&c, 13, TF(SHAPE(1, 1, 4, 4), v), scales(4, F(1, 1, 0.8f, 0.8f)));
    expect_f32(y, SHAPE(1, 1, 3, 3), F(1, 2.5f, 4, 7, 8.5f, 10, 13, 14.5f, 16), 1e-5);
}

TEST(resize_opset10_and_upsample_nearest_floor)
{
    /* asymmetric coordinates, floor when upsampling: x/3 → 0, 0, 0, 1, 1, 1 */
    qs_tensor *x = TF(SHAPE(1, 2), F(5, 7));
    qs_node u = opcheck_node("Upsample", NULL);
    qs_node_set_floats(&u, "scales", 2, F(1, 3));
    expect_f32(run1(&u, 7, 1, (qs_tensor *[]){ x }), SHAPE(1, 6), F(5, 5, 5, 7, 7, 7), 0);
    qs_node r = opcheck_node("Resize", NULL);
    expect_f32(run1(&r, 10, 2, (qs_tensor *[]){ x, scales(2, F(1, 3)) }), SHAPE(1, 6), F(5, 5, 5, 7, 7, 7), 0);
}

TEST(resize_threaded_matches_one_thread)
{
    const qs_op_def *d = qs_op_find("", "Resize");
    qs_tensor *x = opcheck_rand(4, (int64_t[]){ 2, 3, 20, 17 }, -1, 1);
    const char *modes[] = { "nearest", "linear", "cubic" };
    for (int m = 0; m < 3; m++) {
        qs_node n = resize(modes[m], NULL);
        qs_tensor *in[3] = { x, NULL, scales(4, F(1, 1, 1.6f, 0.7f)) };
        qs_tensor *y1 = run1(&n, 13, 3, in), *y3 = qs_tensor_new(QS_F32, y1->ndim, y1->shape);
        qs_tensor *dy = opcheck_rand(y1->ndim, y1->shape, -1, 1);
        qs_tensor *dx[2] = { qs_tensor_new(QS_F32, 4, x->shape), qs_tensor_new(QS_F32, 4, x->shape) };
        qs_err e = { 0 };
        for (int t = 0; t < 2; t++) {
            qs_tensor *outs[1] = { t ? y3 : y1 }, *din[3] = { dx[t], NULL, NULL };
            qs_kctx c = { .node = &n, .opset = 13, .nin = 3, .nout = 1, .in = in, .out = outs, .din = din,
                          .dout = &dy, .nthreads = t ? 3 : 1, .pool = opcheck_pool(t ? 3 : 1), .err = &e };
            c.scratch_size = d->scratch(&c);
            c.scratch = malloc(c.scratch_size);
            if (t)
                ASSERT_EQ(d->forward(&c), 0);
            ASSERT_EQ(d->backward(&c), 0);
            free(c.scratch);
        }
        for (int64_t i = 0; i < qs_numel(y1); i++)
            ASSERT_EQ(qs_f32(y3)[i], qs_f32(y1)[i]);
        for (int64_t i = 0; i < qs_numel(x); i++)
            ASSERT_EQ(qs_f32(dx[1])[i], qs_f32(dx[0])[i]);
    }
    opcheck_pools_free();   /* join the workers before the harness's _exit */
}

TEST(resize_bad_input_named)
{
    qs_tensor *x = opcheck_rand(4, (int64_t[]){ 1, 1, 2, 2 }, -1, 1), *s = scales(4, F(1, 1, 2, 2));
    qs_tensor *sz = TI(SHAPE(4), I(1, 1, 4, 4));
    qs_node n = resize("linear", NULL);
    n.name = (char *)"up1";
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 4, (qs_tensor *[]){ x, NULL, s, sz }, 1, QS_EINVAL),
                        "Resize 'up1': needs exactly one of the inputs scales and sizes (both are given)");
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 3, (qs_tensor *[]){ x, NULL, scales(3, F(1, 2, 2)) }, 1, QS_EINVAL),
                        "input scales has 3 values; expected 4 (X's rank)");
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 3, (qs_tensor *[]){ x, NULL, scales(4, F(1, 1, 0, 2)) }, 1, QS_EINVAL),
                        "scale 0 for axis 2 must be positive");
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 3, (qs_tensor *[]){ x, NULL, scales(4, F(1, 1, 0.2f, 2)) }, 1, QS_ESHAPE),
                        "output dim 2 would be 0");
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 4, (qs_tensor *[]){ x, NULL, NULL, TI(SHAPE(4), I(1, 1, 1 << 30, 1 << 30)) },
                                 1, QS_EUNSUPPORTED), "is over the tensor size limit");
    qs_tensor *runtime = TI(SHAPE(4), I(1, 1, 4, 4));
    runtime->data = NULL;   /* a value computed at run time */
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 4, (qs_tensor *[]){ x, NULL, NULL, runtime }, 1, QS_EUNSUPPORTED),
                        "sizes) must be known at plan time");
    qs_node m = resize("bilinear", NULL);
    ASSERT_STR_CONTAINS(run_fail(&m, 13, 3, (qs_tensor *[]){ x, NULL, s }, 1, QS_EINVAL),
                        "attribute mode = 'bilinear' is not one of nearest, linear, cubic");
    qs_node k = resize("linear", "corners");
    ASSERT_STR_CONTAINS(run_fail(&k, 13, 3, (qs_tensor *[]){ x, NULL, s }, 1, QS_EINVAL),
                        "attribute coordinate_transformation_mode = 'corners'");
    qs_node t = resize("linear", "tf_crop_and_resize");
    ASSERT_STR_CONTAINS(run_fail(&t, 13, 3, (qs_tensor *[]){ x, NULL, s }, 1, QS_EINVAL), "needs input roi");
    qs_node a = resize("nearest", NULL);
    qs_node_set_ints(&a, "axes", 2, I(2, -2));
    ASSERT_STR_CONTAINS(run_fail(&a, 18, 3, (qs_tensor *[]){ x, NULL, scales(2, F(2, 2)) }, 1, QS_EINVAL),
                        "attribute axes names axis 2 twice");
    qs_node u = opcheck_node("Upsample", NULL);
    ASSERT_STR_CONTAINS(run_fail(&u, 7, 1, (qs_tensor *[]){ x }, 1, QS_EINVAL), "attribute scales has 0 values");
}

TEST_MAIN(resize_half_pixel_symmetric_on_a_plane, resize_axes_and_keep_aspect_ratio, resize_tf_crop_extrapolates,
          resize_backward_finite_differences, resize_align_corners_uses_the_output_length,
          resize_opset10_and_upsample_nearest_floor,
          resize_threaded_matches_one_thread, resize_bad_input_named)
