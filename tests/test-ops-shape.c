/* Shape ops: forward against hand values (the ONNX spec's own examples where it has them), on
 * float32 and int64 tensors, opset-dependent forms (attributes vs inputs), backward against finite
 * differences, and the refusals (unknown shape inputs, impossible reshapes). */
#include "tests/optest.h"

/* a tensor whose value is computed at run time: infer sees its shape, not its data */
static qs_tensor *unknown_i64(int64_t n)
{
    qs_tensor *t = qs_tensor_new(QS_I64, 1, &n);
    free(t->data);
    t->data = NULL;
    t->owns_data = 0;
    return t;
}

static qs_tensor *reshape(int64_t opset, qs_tensor *x, qs_tensor *shape, int allowzero)
{
    qs_node n = opcheck_node("Reshape", NULL);
    if (allowzero)
        qs_node_set_int(&n, "allowzero", 1);
    return run1(&n, opset, 2, (qs_tensor *[]){ x, shape });
}

TEST(reshape)
{
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 2, 3, 4 }, -1, 1);
    qs_tensor *y = reshape(13, x, opcheck_ints(2, I(0, -1)), 0);
    expect_shape(y, SHAPE(2, 12));
    ASSERT(!memcmp(y->data, x->data, qs_nbytes(x)));
    expect_shape(reshape(13, x, opcheck_ints(1, I(-1)), 0), SHAPE(24));
    expect_shape(reshape(13, x, opcheck_ints(3, I(4, 0, -1)), 0), SHAPE(4, 3, 2));   /* 0 copies dim 1 */
    expect_shape(reshape(13, x, opcheck_ints(4, I(1, 2, 12, 1)), 0), SHAPE(1, 2, 12, 1));
    /* int64 data (shape arithmetic) */
    expect_ints(reshape(13, TI(SHAPE(4), I(1, 2, 3, 4)), opcheck_ints(2, I(2, 2)), 0), QS_I64, SHAPE(2, 2), I(1, 2, 3, 4));
    /* allowzero (opset 14): 0 is a real zero dim */
    qs_tensor *e = qs_tensor_new(QS_F32, 3, (int64_t[]){ 0, 3, 4 });
    expect_shape(reshape(14, e, opcheck_ints(3, I(3, 4, 0)), 1), SHAPE(3, 4, 0));
    /* …and without it the 0 copies x's dim 2 = 4, which cannot fit 0 elements */
    qs_node n = opcheck_node("Reshape", NULL);
    run_fail(&n, 14, 2, (qs_tensor *[]){ e, opcheck_ints(3, I(3, 4, 0)) }, 1, QS_ESHAPE);
    /* before opset 14 the attribute is ignored */
    run_fail(&n, 13, 2, (qs_tensor *[]){ e, opcheck_ints(3, I(3, 4, 0)) }, 1, QS_ESHAPE);
    /* opset 1-4: shape attribute */
    qs_node old = opcheck_node("Reshape", NULL);
    qs_node_set_ints(&old, "shape", 2, I(-1, 6));
    expect_shape(run1(&old, 4, 1, (qs_tensor *[]){ x }), SHAPE(4, 6));
}

TEST(reshape_errors)
{
    qs_tensor *x = TF(SHAPE(2, 3), NULL);
    qs_node n = opcheck_node("Reshape", NULL);
    n.name = (char *)"flat";
    const char *msg = run_fail(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(2, I(4, -1)) }, 1, QS_ESHAPE);
    ASSERT_STR_CONTAINS(msg, "Reshape 'flat'");
    ASSERT_STR_CONTAINS(msg, "[4, -1]");
    ASSERT_STR_CONTAINS(msg, "[2, 3]");
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(2, I(-1, -1)) }, 1, QS_EINVAL), "-1");
    run_fail(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(2, I(-2, 3)) }, 1, QS_EINVAL);
    run_fail(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(3, I(2, 3, 0)) }, 1, QS_ESHAPE);
    /* the shape computed at run time: a clear refusal at plan time */
    msg = run_fail(&n, 13, 2, (qs_tensor *[]){ x, unknown_i64(2) }, 1, QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(msg, "shape");
    ASSERT_STR_CONTAINS(msg, "known at plan time");
    run_fail(&n, 13, 1, (qs_tensor *[]){ x }, 1, QS_EINVAL);   /* no shape input at all */
    run_fail(&n, 13, 2, (qs_tensor *[]){ x, TF(SHAPE(2), F(3, 2)) }, 1, QS_EINVAL);   /* float shape */
}

TEST(flatten)
{
    qs_tensor *x = TF(SHAPE(2, 3, 4), NULL);
    int64_t axes[] = { 0, 1, 2, 3, -1, -3 };
    ot_shape want[] = { SHAPE(1, 24), SHAPE(2, 12), SHAPE(6, 4), SHAPE(24, 1), SHAPE(6, 4), SHAPE(1, 24) };
    for (int i = 0; i < 6; i++) {
        qs_node n = opcheck_node("Flatten", NULL);
        qs_node_set_int(&n, "axis", axes[i]);
        expect_shape(run1(&n, 13, 1, (qs_tensor *[]){ x }), want[i]);
    }
    qs_node d = opcheck_node("Flatten", NULL);
    expect_shape(run1(&d, 13, 1, (qs_tensor *[]){ x }), SHAPE(2, 12));
    qs_node_set_int(&d, "axis", 4);
    run_fail(&d, 13, 1, (qs_tensor *[]){ x }, 1, QS_EINVAL);
}

TEST(squeeze_unsqueeze)
{
    qs_tensor *x = TF(SHAPE(1, 3, 1, 2), F(1, 2, 3, 4, 5, 6));
    qs_node s = opcheck_node("Squeeze", NULL);
    expect_f32(run1(&s, 13, 1, (qs_tensor *[]){ x }), SHAPE(3, 2), F(1, 2, 3, 4, 5, 6), 0);
    expect_shape(run1(&s, 13, 2, (qs_tensor *[]){ x, opcheck_ints(1, I(-2)) }), SHAPE(1, 3, 2));
    qs_node sa = opcheck_node("Squeeze", NULL);
    qs_node_set_ints(&sa, "axes", 2, I(0, 2));
    expect_shape(run1(&sa, 11, 1, (qs_tensor *[]){ x }), SHAPE(3, 2));
    const char *msg = run_fail(&s, 13, 2, (qs_tensor *[]){ x, opcheck_ints(1, I(1)) }, 1, QS_ESHAPE);
    ASSERT_STR_CONTAINS(msg, "not 1");
    run_fail(&s, 13, 2, (qs_tensor *[]){ x, opcheck_ints(1, I(4)) }, 1, QS_EINVAL);
    run_fail(&s, 13, 2, (qs_tensor *[]){ x, unknown_i64(1) }, 1, QS_EUNSUPPORTED);

    qs_tensor *y = TF(SHAPE(3, 2), NULL);
    qs_node u = opcheck_node("Unsqueeze", NULL);
    expect_shape(run1(&u, 13, 2, (qs_tensor *[]){ y, opcheck_ints(2, I(0, -1)) }), SHAPE(1, 3, 2, 1));
    expect_shape(run1(&u, 13, 2, (qs_tensor *[]){ y, opcheck_ints(2, I(3, 1)) }), SHAPE(3, 1, 2, 1));
    qs_node ua = opcheck_node("Unsqueeze", NULL);
    qs_node_set_ints(&ua, "axes", 1, I(1));
    expect_shape(run1(&ua, 11, 1, (qs_tensor *[]){ y }), SHAPE(3, 1, 2));
    /* a scalar becomes a 1-element vector (shape arithmetic does this a lot) */
    expect_ints(run1(&u, 13, 2, (qs_tensor *[]){ TI(SCALAR, I(7)), opcheck_ints(1, I(0)) }), QS_I64, SHAPE(1), I(7));
    run_fail(&u, 13, 2, (qs_tensor *[]){ y, opcheck_ints(2, I(0, 0)) }, 1, QS_EINVAL);
    run_fail(&u, 13, 1, (qs_tensor *[]){ y }, 1, QS_EINVAL);
}

TEST(transpose)
{
    qs_node n = opcheck_node("Transpose", NULL);
    expect_f32(run1(&n, 13, 1, (qs_tensor *[]){ TF(SHAPE(2, 3), F(1, 2, 3, 4, 5, 6)) }), SHAPE(3, 2), F(1, 4, 2, 5, 3, 6), 0);
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 2, 3, 4 }, -1, 1);
    qs_node_set_ints(&n, "perm", 3, I(1, 2, 0));
    qs_tensor *y = run1(&n, 13, 1, (qs_tensor *[]){ x });
    expect_shape(y, SHAPE(3, 4, 2));
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 4; c++)
                ASSERT_EQ(qs_f32(y)[(b * 4 + c) * 2 + a] == qs_f32(x)[(a * 3 + b) * 4 + c], 1);
    /* int64 by bytes */
    expect_ints(run1(&n, 13, 1, (qs_tensor *[]){ TI(SHAPE(1, 1, 2), I(5, 6)) }), QS_I64, SHAPE(1, 2, 1), I(5, 6));
    qs_node_set_ints(&n, "perm", 3, I(0, 0, 1));
    ASSERT_STR_CONTAINS(run_fail(&n, 13, 1, (qs_tensor *[]){ x }, 1, QS_EINVAL), "permutation");
}

TEST(concat)
{
    qs_node n = opcheck_node("Concat", NULL);
    qs_node_set_int(&n, "axis", -1);
    qs_tensor *y = run1(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(2, 2), F(1, 2, 3, 4)), TF(SHAPE(2, 1), F(9, 8)) });
    expect_f32(y, SHAPE(2, 3), F(1, 2, 9, 3, 4, 8), 0);
    qs_node_set_int(&n, "axis", 0);
    y = run1(&n, 13, 3, (qs_tensor *[]){ TI(SHAPE(1), I(-1)), TI(SHAPE(0), NULL), TI(SHAPE(2), I(7, 49)) });
    expect_ints(y, QS_I64, SHAPE(3), I(-1, 7, 49));
    const char *msg = run_fail(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(2, 2), NULL), TF(SHAPE(2, 3), NULL) }, 1, QS_ESHAPE);
    ASSERT_STR_CONTAINS(msg, "[2, 3]");
    qs_node na = opcheck_node("Concat", NULL);
    ASSERT_STR_CONTAINS(run_fail(&na, 13, 1, (qs_tensor *[]){ TF(SHAPE(2), NULL) }, 1, QS_EINVAL), "axis");
}

TEST(split)
{
    qs_tensor *x = TF(SHAPE(6), F(1, 2, 3, 4, 5, 6)), *o[4] = { NULL };
    qs_node n = opcheck_node("Split", NULL);
    opcheck_forward(&n, 13, 1, (qs_tensor *[]){ x }, 3, o);
    expect_f32(o[0], SHAPE(2), F(1, 2), 0);
    expect_f32(o[2], SHAPE(2), F(5, 6), 0);
    opcheck_forward(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(2, I(2, 4)) }, 2, o);
    expect_f32(o[1], SHAPE(4), F(3, 4, 5, 6), 0);
    qs_node a = opcheck_node("Split", NULL);
    qs_node_set_ints(&a, "split", 2, I(1, 5));
    opcheck_forward(&a, 11, 1, (qs_tensor *[]){ x }, 2, o);
    expect_f32(o[0], SHAPE(1), F(1), 0);
    /* opset 18 num_outputs: the last part may be smaller */
    qs_node m = opcheck_node("Split", NULL);
    qs_node_set_int(&m, "num_outputs", 4);
    opcheck_forward(&m, 18, 1, (qs_tensor *[]){ TF(SHAPE(7), F(1, 2, 3, 4, 5, 6, 7)) }, 4, o);
    expect_f32(o[2], SHAPE(2), F(5, 6), 0);
    expect_f32(o[3], SHAPE(1), F(7), 0);
    /* a 2-D split on axis 1 */
    qs_node_set_int(&n, "axis", 1);
    opcheck_forward(&n, 13, 1, (qs_tensor *[]){ TF(SHAPE(2, 4), F(1, 2, 3, 4, 5, 6, 7, 8)) }, 2, o);
    expect_f32(o[1], SHAPE(2, 2), F(3, 4, 7, 8), 0);
    run_fail(&n, 13, 1, (qs_tensor *[]){ TF(SHAPE(2, 5), NULL) }, 2, QS_ESHAPE);
    run_fail(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(2, 5), NULL), opcheck_ints(2, I(2, 2)) }, 2, QS_ESHAPE);
}

TEST(slice)
{
    /* x = arange(20).reshape(4, 5) */
    float v[20];
    for (int i = 0; i < 20; i++)
        v[i] = (float)i;
    qs_tensor *x = TF(SHAPE(4, 5), v);
    qs_node n = opcheck_node("Slice", NULL);
    /* x[1:2, 0:3:2] */
    qs_tensor *y = run1(&n, 13, 5, (qs_tensor *[]){ x, opcheck_ints(2, I(1, 0)), opcheck_ints(2, I(2, 3)), NULL,
                                                    opcheck_ints(2, I(1, 2)) });
    expect_f32(y, SHAPE(1, 2), F(5, 7), 0);
    /* x[:, ::-1] with a huge negative end and negative axis */
    y = run1(&n, 13, 5, (qs_tensor *[]){ x, opcheck_ints(1, I(-1)), opcheck_ints(1, I(INT64_MIN)),
                                         opcheck_ints(1, I(-1)), opcheck_ints(1, I(-1)) });
    expect_f32(y, SHAPE(4, 5), F(4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 14, 13, 12, 11, 10, 19, 18, 17, 16, 15), 0);
    /* x[-3:100] on axis 0: clamped; x[3:1:-1] along axis 0 */
    y = run1(&n, 13, 4, (qs_tensor *[]){ x, opcheck_ints(1, I(-3)), opcheck_ints(1, I(100)), opcheck_ints(1, I(0)) });
    expect_shape(y, SHAPE(3, 5));
    ASSERT_EQ(qs_f32(y)[0], 5);
    y = run1(&n, 13, 5, (qs_tensor *[]){ x, opcheck_ints(1, I(3)), opcheck_ints(1, I(1)), opcheck_ints(1, I(0)),
                                         opcheck_ints(1, I(-1)) });
    expect_f32(y, SHAPE(2, 5), F(15, 16, 17, 18, 19, 10, 11, 12, 13, 14), 0);
    /* start beyond the end: empty */
    y = run1(&n, 13, 4, (qs_tensor *[]){ x, opcheck_ints(1, I(10)), opcheck_ints(1, I(20)), opcheck_ints(1, I(1)) });
    expect_shape(y, SHAPE(4, 0));
    /* int64 data with int32 starts: a shape vector's tail */
    qs_tensor *s32 = TT(QS_I32, SHAPE(1), I(2)), *e32 = TT(QS_I32, SHAPE(1), I(2147483647));
    expect_ints(run1(&n, 13, 3, (qs_tensor *[]){ TI(SHAPE(4), I(1, 3, 224, 224)), s32, e32 }), QS_I64, SHAPE(2),
                I(224, 224));
    /* opset 9: attributes */
    qs_node a = opcheck_node("Slice", NULL);
    qs_node_set_ints(&a, "starts", 2, I(1, -2));
    qs_node_set_ints(&a, "ends", 2, I(3, 1000));
    expect_f32(run1(&a, 9, 1, (qs_tensor *[]){ x }), SHAPE(2, 2), F(8, 9, 13, 14), 0);
    /* errors */
    run_fail(&n, 13, 5, (qs_tensor *[]){ x, opcheck_ints(1, I(0)), opcheck_ints(1, I(1)), NULL, opcheck_ints(1, I(0)) },
             1, QS_EINVAL);
    run_fail(&n, 13, 3, (qs_tensor *[]){ x, unknown_i64(1), opcheck_ints(1, I(1)) }, 1, QS_EUNSUPPORTED);
    run_fail(&n, 13, 4, (qs_tensor *[]){ x, opcheck_ints(1, I(0)), opcheck_ints(1, I(1)), opcheck_ints(1, I(2)) }, 1,
             QS_EINVAL);
}

TEST(gather)
{
    qs_node n = opcheck_node("Gather", NULL);
    /* the spec's examples */
    qs_tensor *d = TF(SHAPE(3, 2), F(1, 1.2f, 2.3f, 3.4f, 4.5f, 5.7f));
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ d, TI(SHAPE(2, 2), I(0, 1, 1, 2)) }), SHAPE(2, 2, 2),
               F(1, 1.2f, 2.3f, 3.4f, 2.3f, 3.4f, 4.5f, 5.7f), 0);
    qs_tensor *d3 = TF(SHAPE(3, 3), F(1, 1.2f, 1.9f, 2.3f, 3.4f, 3.9f, 4.5f, 5.7f, 5.9f));
    qs_node_set_int(&n, "axis", 1);
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ d3, TT(QS_I32, SHAPE(1, 2), I(0, 2)) }), SHAPE(3, 1, 2),
               F(1, 1.9f, 2.3f, 3.9f, 4.5f, 5.9f), 0);
    /* negative index, scalar index (drops the axis), int64 data: shape[-1] */
    qs_node_set_int(&n, "axis", 0);
    expect_ints(run1(&n, 13, 2, (qs_tensor *[]){ TI(SHAPE(4), I(1, 3, 32, 32)), TI(SCALAR, I(-1)) }), QS_I64, SCALAR,
                I(32));
    const char *msg = run_fail(&n, 13, 2, (qs_tensor *[]){ d, TI(SHAPE(1), I(3)) }, 1, QS_EINVAL);
    ASSERT_STR_CONTAINS(msg, "index 3");
    run_fail(&n, 13, 2, (qs_tensor *[]){ d, TF(SHAPE(1), F(0)) }, 1, QS_EINVAL);
}

TEST(pad)
{
    /* the spec's three examples: pads = [0, 2, 0, 0] */
    qs_tensor *x = TF(SHAPE(3, 2), F(1, 1.2f, 2.3f, 3.4f, 4.5f, 5.7f));
    qs_node n = opcheck_node("Pad", NULL);
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(4, I(0, 2, 0, 0)) }), SHAPE(3, 4),
               F(0, 0, 1, 1.2f, 0, 0, 2.3f, 3.4f, 0, 0, 4.5f, 5.7f), 0);
    qs_node_set_string(&n, "mode", "reflect");
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(4, I(0, 2, 0, 0)) }), SHAPE(3, 4),
               F(1, 1.2f, 1, 1.2f, 2.3f, 3.4f, 2.3f, 3.4f, 4.5f, 5.7f, 4.5f, 5.7f), 0);
    qs_node_set_string(&n, "mode", "edge");
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ x, opcheck_ints(4, I(0, 2, 0, 0)) }), SHAPE(3, 4),
               F(1, 1, 1, 1.2f, 2.3f, 2.3f, 2.3f, 3.4f, 4.5f, 4.5f, 4.5f, 5.7f), 0);
    /* constant_value input, both ends of both axes, and negative pads crop */
    qs_node c = opcheck_node("Pad", NULL);
    expect_f32(run1(&c, 13, 3, (qs_tensor *[]){ TF(SHAPE(1, 2), F(1, 2)), opcheck_ints(4, I(1, 0, 0, 1)),
                                                TF(SCALAR, F(9)) }),
               SHAPE(2, 3), F(9, 9, 9, 1, 2, 9), 0);
    expect_f32(run1(&c, 13, 2, (qs_tensor *[]){ TF(SHAPE(4), F(1, 2, 3, 4)), opcheck_ints(2, I(-1, 1)) }), SHAPE(4),
               F(2, 3, 4, 0), 0);
    /* reflect wider than one period of a 3-vector: numpy gives [3,2,1,2,3,2,1] for pad 2 */
    qs_node r = opcheck_node("Pad", NULL);
    qs_node_set_string(&r, "mode", "reflect");
    expect_f32(run1(&r, 13, 2, (qs_tensor *[]){ TF(SHAPE(3), F(1, 2, 3)), opcheck_ints(2, I(2, 2)) }), SHAPE(7),
               F(3, 2, 1, 2, 3, 2, 1), 0);
    /* opset 2: pads and value attributes; int64 data pads with the value converted */
    qs_node a = opcheck_node("Pad", NULL);
    qs_node_set_ints(&a, "pads", 2, I(1, 0));
    qs_node_set_float(&a, "value", -1);
    expect_f32(run1(&a, 2, 1, (qs_tensor *[]){ TF(SHAPE(2), F(5, 6)) }), SHAPE(3), F(-1, 5, 6), 0);
    expect_ints(run1(&a, 2, 1, (qs_tensor *[]){ TI(SHAPE(2), I(5, 6)) }), QS_I64, SHAPE(3), I(-1, 5, 6));
    /* opset 18: axes input picks the padded axes */
    qs_node ax = opcheck_node("Pad", NULL);
    expect_shape(run1(&ax, 18, 4, (qs_tensor *[]){ x, opcheck_ints(2, I(1, 2)), NULL, opcheck_ints(1, I(-1)) }),
                 SHAPE(3, 5));
    /* errors */
    run_fail(&c, 13, 2, (qs_tensor *[]){ x, opcheck_ints(3, I(0, 0, 0)) }, 1, QS_EINVAL);
    run_fail(&c, 13, 2, (qs_tensor *[]){ x, opcheck_ints(4, I(0, -2, 0, -1)) }, 1, QS_ESHAPE);
    run_fail(&c, 13, 2, (qs_tensor *[]){ x, unknown_i64(4) }, 1, QS_EUNSUPPORTED);
    qs_node_set_string(&c, "mode", "mirror");
    ASSERT_STR_CONTAINS(run_fail(&c, 13, 2, (qs_tensor *[]){ x, opcheck_ints(4, I(0, 0, 0, 0)) }, 1, QS_EINVAL), "mirror");
}

TEST(expand)
{
    qs_node n = opcheck_node("Expand", NULL);
    qs_tensor *y = run1(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(3, 1), F(1, 2, 3)), opcheck_ints(3, I(2, 1, 2)) });
    expect_f32(y, SHAPE(2, 3, 2), F(1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3), 0);
    /* the shape may be smaller than the input (bidirectional) */
    expect_shape(run1(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(3, 1), F(1, 2, 3)), opcheck_ints(1, I(1)) }), SHAPE(3, 1));
    run_fail(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(3, 2), NULL), opcheck_ints(1, I(4)) }, 1, QS_ESHAPE);
}

TEST(identity_dropout_shape_size)
{
    qs_tensor *x = TF(SHAPE(2, 3, 4), NULL), *o[2] = { NULL };
    qs_node id = opcheck_node("Identity", NULL);
    expect_ints(run1(&id, 13, 1, (qs_tensor *[]){ TI(SHAPE(2), I(3, 4)) }), QS_I64, SHAPE(2), I(3, 4));
    qs_node dr = opcheck_node("Dropout", NULL);
    opcheck_forward(&dr, 13, 1, (qs_tensor *[]){ TF(SHAPE(3), F(1, 2, 3)) }, 2, o);
    expect_f32(o[0], SHAPE(3), F(1, 2, 3), 0);
    expect_ints(o[1], QS_BOOL, SHAPE(3), I(1, 1, 1));
    opcheck_forward(&dr, 7, 1, (qs_tensor *[]){ TF(SHAPE(1), F(4)) }, 2, o);
    expect_f32(o[1], SHAPE(1), F(1), 0);   /* before opset 10 the mask has the input's type */

    qs_node s = opcheck_node("Shape", NULL);
    expect_ints(run1(&s, 13, 1, (qs_tensor *[]){ x }), QS_I64, SHAPE(3), I(2, 3, 4));
    qs_node_set_int(&s, "start", 1);
    expect_ints(run1(&s, 15, 1, (qs_tensor *[]){ x }), QS_I64, SHAPE(2), I(3, 4));
    expect_ints(run1(&s, 13, 1, (qs_tensor *[]){ x }), QS_I64, SHAPE(3), I(2, 3, 4));   /* no start before 15 */
    qs_node_set_int(&s, "start", -10);
    qs_node_set_int(&s, "end", -1);
    expect_ints(run1(&s, 15, 1, (qs_tensor *[]){ x }), QS_I64, SHAPE(2), I(2, 3));
    qs_node_set_int(&s, "start", 2);
    qs_node_set_int(&s, "end", 1);
    expect_shape(run1(&s, 15, 1, (qs_tensor *[]){ x }), SHAPE(0));
    /* Shape never reads the data: it works on a value computed at run time */
    qs_tensor *u = unknown_i64(5);
    qs_node s2 = opcheck_node("Shape", NULL);
    expect_ints(run1(&s2, 13, 1, (qs_tensor *[]){ u }), QS_I64, SHAPE(1), I(5));
    qs_node sz = opcheck_node("Size", NULL);
    expect_ints(run1(&sz, 13, 1, (qs_tensor *[]){ x }), QS_I64, SCALAR, I(24));
}

TEST(constants)
{
    qs_node n = opcheck_node("Constant", NULL);
    qs_node_set_floats(&n, "value_floats", 3, F(1, 2.5f, -3));
    expect_f32(run1(&n, 13, 0, NULL), SHAPE(3), F(1, 2.5f, -3), 0);
    qs_node i = opcheck_node("Constant", NULL);
    qs_node_set_int(&i, "value_int", -7);
    expect_ints(run1(&i, 13, 0, NULL), QS_I64, SCALAR, I(-7));
    qs_node is = opcheck_node("Constant", NULL);
    qs_node_set_ints(&is, "value_ints", 2, I(1, -1));
    expect_ints(run1(&is, 13, 0, NULL), QS_I64, SHAPE(2), I(1, -1));
    qs_node f = opcheck_node("Constant", NULL);
    qs_node_set_float(&f, "value_float", 0.25f);
    expect_f32(run1(&f, 13, 0, NULL), SCALAR, F(0.25f), 0);
    /* a tensor value: attach by hand as the importer does */
    qs_node t = opcheck_node("Constant", NULL);
    qs_node_set_int(&t, "value", 0);
    t.attr[0].type = QS_ATTR_TENSOR;
    t.attr[0].t = TI(SHAPE(2, 1), I(4, 5));
    expect_ints(run1(&t, 13, 0, NULL), QS_I64, SHAPE(2, 1), I(4, 5));
    /* two values are one too many */
    qs_node_set_int(&i, "value_float", 1);
    run_fail(&i, 13, 0, NULL, 1, QS_EINVAL);
    qs_node none = opcheck_node("Constant", NULL);
    run_fail(&none, 13, 0, NULL, 1, QS_EINVAL);

    qs_node cs = opcheck_node("ConstantOfShape", NULL);
    expect_f32(run1(&cs, 13, 1, (qs_tensor *[]){ opcheck_ints(2, I(2, 3)) }), SHAPE(2, 3), F(0, 0, 0, 0, 0, 0), 0);
    qs_node_set_int(&cs, "value", 0);
    cs.attr[0].type = QS_ATTR_TENSOR;
    cs.attr[0].t = TI(SHAPE(1), I(7));
    expect_ints(run1(&cs, 13, 1, (qs_tensor *[]){ opcheck_ints(1, I(3)) }), QS_I64, SHAPE(3), I(7, 7, 7));
    run_fail(&cs, 13, 1, (qs_tensor *[]){ unknown_i64(2) }, 1, QS_EUNSUPPORTED);
}

TEST(view_and_layout_grads)
{
    qs_tensor *x = opcheck_rand(3, (int64_t[]){ 2, 3, 2 }, -1, 1);
    qs_node r = opcheck_node("Reshape", NULL);
    opcheck_grad(&r, 13, 2, (qs_tensor *[]){ x, opcheck_ints(2, I(3, -1)) }, 1, 1e-2, 1e-3, 1e-4);
    qs_node f = opcheck_node("Flatten", NULL);
    opcheck_grad(&f, 13, 1, (qs_tensor *[]){ x }, 1, 1e-2, 1e-3, 1e-4);
    qs_node u = opcheck_node("Unsqueeze", NULL);
    opcheck_grad(&u, 13, 2, (qs_tensor *[]){ x, opcheck_ints(1, I(0)) }, 1, 1e-2, 1e-3, 1e-4);
    qs_node id = opcheck_node("Identity", NULL);
    opcheck_grad(&id, 13, 1, (qs_tensor *[]){ x }, 1, 1e-2, 1e-3, 1e-4);
    qs_node dr = opcheck_node("Dropout", NULL);
    opcheck_grad(&dr, 13, 1, (qs_tensor *[]){ x }, 1, 1e-2, 1e-3, 1e-4);
    qs_node t = opcheck_node("Transpose", NULL);
    qs_node_set_ints(&t, "perm", 3, I(2, 0, 1));
    opcheck_grad(&t, 13, 1, (qs_tensor *[]){ x }, 1, 1e-2, 1e-3, 1e-4);
    qs_node e = opcheck_node("Expand", NULL);
    opcheck_grad(&e, 13, 2, (qs_tensor *[]){ opcheck_rand(2, (int64_t[]){ 3, 1 }, -1, 1), opcheck_ints(3, I(2, 3, 4)) },
                 1, 1e-2, 1e-3, 1e-4);
}

TEST(concat_split_grads)
{
    qs_node c = opcheck_node("Concat", NULL);
    qs_node_set_int(&c, "axis", 1);
    opcheck_grad(&c, 13, 3, (qs_tensor *[]){ opcheck_rand(2, (int64_t[]){ 2, 1 }, -1, 1),
                                             opcheck_rand(2, (int64_t[]){ 2, 3 }, -1, 1),
                                             opcheck_rand(2, (int64_t[]){ 2, 2 }, -1, 1) }, 1, 1e-2, 1e-3, 1e-4);
    qs_node s = opcheck_node("Split", NULL);
    qs_node_set_int(&s, "axis", -1);
    opcheck_grad(&s, 13, 2, (qs_tensor *[]){ opcheck_rand(2, (int64_t[]){ 2, 5 }, -1, 1), opcheck_ints(2, I(3, 2)) }, 2,
                 1e-2, 1e-3, 1e-4);
}

TEST(slice_gather_pad_grads)
{
    qs_node s = opcheck_node("Slice", NULL);
    opcheck_grad(&s, 13, 5, (qs_tensor *[]){ opcheck_rand(2, (int64_t[]){ 3, 5 }, -1, 1), opcheck_ints(2, I(-1, 0)),
                                             opcheck_ints(2, I(INT64_MIN, 5)), opcheck_ints(2, I(1, 0)),
                                             opcheck_ints(2, I(-2, 2)) }, 1, 1e-2, 1e-3, 1e-4);
    qs_node g = opcheck_node("Gather", NULL);
    qs_node_set_int(&g, "axis", 1);
    /* repeated indices accumulate */
    opcheck_grad(&g, 13, 2, (qs_tensor *[]){ opcheck_rand(2, (int64_t[]){ 2, 3 }, -1, 1), TI(SHAPE(2, 2), I(0, 2, 2, -3)) },
                 1, 1e-2, 1e-3, 1e-4);
    const char *modes[] = { "constant", "reflect", "edge" };
    for (int m = 0; m < 3; m++) {
        qs_node p = opcheck_node("Pad", NULL);
        qs_node_set_string(&p, "mode", modes[m]);
        qs_tensor *x = opcheck_rand(2, (int64_t[]){ 2, 3 }, -1, 1);
        if (m == 0)   /* with the constant as an input, which gets a gradient too */
            opcheck_grad(&p, 13, 3, (qs_tensor *[]){ x, opcheck_ints(4, I(1, -1, 0, 2)), TF(SCALAR, F(0.5f)) }, 1, 1e-2,
                         1e-3, 1e-4);
        else
            opcheck_grad(&p, 13, 2, (qs_tensor *[]){ x, opcheck_ints(4, I(1, 2, 1, 2)) }, 1, 1e-2, 1e-3, 1e-4);
    }
}

TEST(tile)
{
    qs_node n = opcheck_node("Tile", NULL);
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(2, 2), F(1, 2, 3, 4)), opcheck_ints(2, I(2, 3)) }), SHAPE(4, 6),
               F(1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4, 1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4), 0);
    expect_ints(run1(&n, 13, 2, (qs_tensor *[]){ TI(SHAPE(2), I(7, 8)), opcheck_ints(1, I(2)) }), QS_I64, SHAPE(4),
                I(7, 8, 7, 8));
    run_fail(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(2, 2), NULL), opcheck_ints(1, I(2)) }, 1, QS_EINVAL);
    opcheck_grad(&n, 13, 2, (qs_tensor *[]){ opcheck_rand(2, (int64_t[]){ 2, 3 }, -1, 1), opcheck_ints(2, I(2, 2)) }, 1,
                 1e-2, 1e-3, 1e-4);
}

TEST(depth_to_space)
{
    /* numpy's reshape/transpose/reshape from the spec, for arange(32) as [1, 8, 2, 2], blocksize 2 */
    float v[32];
    for (int i = 0; i < 32; i++)
        v[i] = (float)i;
    qs_tensor *x = TF(SHAPE(1, 8, 2, 2), v);
    qs_node n = opcheck_node("DepthToSpace", NULL);
    qs_node_set_int(&n, "blocksize", 2);
    expect_f32(run1(&n, 13, 1, (qs_tensor *[]){ x }), SHAPE(1, 2, 4, 4),
               F(0, 8, 1, 9, 16, 24, 17, 25, 2, 10, 3, 11, 18, 26, 19, 27, 4, 12, 5, 13, 20, 28, 21, 29, 6, 14, 7, 15, 22,
                 30, 23, 31), 0);
    qs_node_set_string(&n, "mode", "CRD");
    expect_f32(run1(&n, 13, 1, (qs_tensor *[]){ x }), SHAPE(1, 2, 4, 4),
               F(0, 4, 1, 5, 8, 12, 9, 13, 2, 6, 3, 7, 10, 14, 11, 15, 16, 20, 17, 21, 24, 28, 25, 29, 18, 22, 19, 23, 26,
                 30, 27, 31), 0);
    opcheck_grad(&n, 13, 1, (qs_tensor *[]){ opcheck_rand(4, (int64_t[]){ 1, 8, 1, 2 }, -1, 1) }, 1, 1e-2, 1e-3, 1e-4);
    qs_node s = opcheck_node("SpaceToDepth", NULL);
    qs_node_set_int(&s, "blocksize", 2);
    expect_f32(run1(&s, 13, 1, (qs_tensor *[]){ TF(SHAPE(1, 1, 4, 4), v) }), SHAPE(1, 4, 2, 2),
               F(0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15), 0);
    opcheck_grad(&s, 13, 1, (qs_tensor *[]){ opcheck_rand(4, (int64_t[]){ 1, 2, 2, 4 }, -1, 1) }, 1, 1e-2, 1e-3, 1e-4);
    /* DCR DepthToSpace undoes SpaceToDepth */
    qs_node d = opcheck_node("DepthToSpace", NULL);
    qs_node_set_int(&d, "blocksize", 2);
    qs_tensor *r = opcheck_rand(4, (int64_t[]){ 2, 3, 4, 6 }, -1, 1);
    qs_tensor *back = run1(&d, 13, 1, (qs_tensor *[]){ run1(&s, 13, 1, (qs_tensor *[]){ r }) });
    expect_f32(back, SHAPE(2, 3, 4, 6), qs_f32(r), 0);
    run_fail(&d, 13, 1, (qs_tensor *[]){ TF(SHAPE(1, 6, 2, 2), NULL) }, 1, QS_ESHAPE);
}

TEST(range)
{
    qs_node n = opcheck_node("Range", NULL);
    expect_ints(run1(&n, 11, 3, (qs_tensor *[]){ TI(SCALAR, I(10)), TI(SCALAR, I(4)), TI(SCALAR, I(-3)) }), QS_I64,
                SHAPE(2), I(10, 7));
    expect_f32(run1(&n, 11, 3, (qs_tensor *[]){ TF(SCALAR, F(1)), TF(SCALAR, F(2)), TF(SCALAR, F(0.25f)) }), SHAPE(4),
               F(1, 1.25f, 1.5f, 1.75f), 0);
    expect_shape(run1(&n, 11, 3, (qs_tensor *[]){ TI(SCALAR, I(3)), TI(SCALAR, I(3)), TI(SCALAR, I(1)) }), SHAPE(0));
    run_fail(&n, 11, 3, (qs_tensor *[]){ TI(SCALAR, I(0)), TI(SCALAR, I(3)), TI(SCALAR, I(0)) }, 1, QS_EINVAL);
    qs_tensor *u = TF(SCALAR, NULL);
    free(u->data);
    u->data = NULL;
    u->owns_data = 0;
    run_fail(&n, 11, 3, (qs_tensor *[]){ u, TF(SCALAR, F(2)), TF(SCALAR, F(1)) }, 1, QS_EUNSUPPORTED);
}

TEST(empty_tensors)
{
    qs_tensor *e = qs_tensor_new(QS_F32, 2, (int64_t[]){ 0, 3 });
    qs_node t = opcheck_node("Transpose", NULL);
    expect_shape(run1(&t, 13, 1, (qs_tensor *[]){ e }), SHAPE(3, 0));
    qs_node c = opcheck_node("Concat", NULL);
    qs_node_set_int(&c, "axis", 0);
    expect_f32(run1(&c, 13, 2, (qs_tensor *[]){ e, TF(SHAPE(1, 3), F(1, 2, 3)) }), SHAPE(1, 3), F(1, 2, 3), 0);
    qs_node p = opcheck_node("Pad", NULL);
    expect_f32(run1(&p, 13, 2, (qs_tensor *[]){ e, opcheck_ints(4, I(1, 0, 0, 0)) }), SHAPE(1, 3), F(0, 0, 0), 0);
    qs_node s = opcheck_node("Slice", NULL);
    expect_shape(run1(&s, 13, 3, (qs_tensor *[]){ e, opcheck_ints(1, I(0)), opcheck_ints(1, I(5)) }), SHAPE(0, 3));
    qs_node g = opcheck_node("Gather", NULL);
    expect_shape(run1(&g, 13, 2, (qs_tensor *[]){ TF(SHAPE(2, 3), NULL), TI(SHAPE(0), NULL) }), SHAPE(0, 3));
    qs_node r = opcheck_node("Reshape", NULL);
    expect_shape(run1(&r, 13, 2, (qs_tensor *[]){ e, opcheck_ints(2, I(-1, 3)) }), SHAPE(0, 3));
    /* without allowzero the 0 copies x's dim 1 (3): 9 elements cannot come from 0 */
    run_fail(&r, 13, 2, (qs_tensor *[]){ e, opcheck_ints(2, I(3, 0)) }, 1, QS_ESHAPE);
}

TEST_MAIN(reshape, reshape_errors, flatten, squeeze_unsqueeze, transpose, concat, split, slice, gather, pad, expand,
          identity_dropout_shape_size, constants, view_and_layout_grads, concat_split_grads, slice_gather_pad_grads, tile, depth_to_space, range, empty_tensors)
