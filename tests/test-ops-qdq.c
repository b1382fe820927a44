/* QuantizeLinear / DequantizeLinear against hand-computed values: round half to even on ties,
 * saturation for every quantized type, per-tensor, per-axis and blocked scales, the ONNX
 * conformance examples, and the shape/type refusals. */
#include "tests/optest.h"

static qs_tensor *q(int64_t opset, qs_node *n, qs_tensor *x, qs_tensor *s, qs_tensor *z)
{
    return run1(n, opset, z ? 3 : 2, (qs_tensor *[]){ x, s, z });
}

TEST(quantize_rounds_half_to_even)
{
    qs_node n = opcheck_node("QuantizeLinear", NULL);
    qs_tensor *x = TF(SHAPE(8), F(2.5f, 3.5f, -2.5f, 0.5f, 1.5f, -0.5f, -1.5f, 2.4999998f));
    expect_ints(q(13, &n, x, TF(SCALAR, F(1)), TT(QS_I8, SCALAR, I(0))), QS_I8, SHAPE(8), I(2, 4, -2, 0, 2, 0, -2, 2));
    /* ties after the division by the scale */
    expect_ints(q(13, &n, TF(SHAPE(3), F(1.25f, 1.75f, -0.25f)), TF(SCALAR, F(0.5f)), TT(QS_I8, SCALAR, I(0))), QS_I8,
                SHAPE(3), I(2, 4, 0));
    /* the zero point is added after rounding: 0.5 + 1 -> round(0.5) + 1 = 1 */
    expect_ints(q(13, &n, TF(SHAPE(2), F(0.5f, 1.5f)), TF(SCALAR, F(1)), TT(QS_U8, SCALAR, I(1))), QS_U8, SHAPE(2), I(1, 3));
}

TEST(quantize_saturates)
{
    qs_node n = opcheck_node("QuantizeLinear", NULL);
    /* no zero point: uint8, zero point 0 */
    expect_ints(q(13, &n, TF(SHAPE(5), F(-1, 0, 1.4f, 254.5f, 300)), TF(SCALAR, F(1)), NULL), QS_U8, SHAPE(5),
                I(0, 0, 1, 254, 255));
    expect_ints(q(13, &n, TF(SHAPE(4), F(-200, -1.5f, 1.5f, 200)), TF(SCALAR, F(1)), TT(QS_U8, SCALAR, I(128))), QS_U8,
                SHAPE(4), I(0, 126, 130, 255));
    expect_ints(q(13, &n, TF(SHAPE(4), F(-1000, -128.5f, 127.5f, 1e30f)), TF(SCALAR, F(1)), TT(QS_I8, SCALAR, I(0))),
                QS_I8, SHAPE(4), I(-128, -128, 127, 127));
    /* ONNX's conformance example (test_quantizelinear) */
    expect_ints(q(13, &n, TF(SHAPE(6), F(0, 2, 3, 1000, -254, -1000)), TF(SCALAR, F(2)), TT(QS_U8, SCALAR, I(128))),
                QS_U8, SHAPE(6), I(128, 129, 130, 255, 1, 0));
    /* 16- and 4-bit types (opset 21) */
    expect_ints(q(21, &n, TF(SHAPE(3), F(-1e6f, 5, 1e6f)), TF(SCALAR, F(1)), TT(QS_I16, SCALAR, I(0))), QS_I16, SHAPE(3),
                I(-32768, 5, 32767));
    expect_ints(q(21, &n, TF(SHAPE(3), F(-1, 70000, 5)), TF(SCALAR, F(1)), TT(QS_U16, SCALAR, I(0))), QS_U16, SHAPE(3),
                I(0, 65535, 5));
    qs_node o = opcheck_node("QuantizeLinear", NULL);
    qs_node_set_int(&o, "output_dtype", QS_I4);
    expect_ints(q(21, &o, TF(SHAPE(4), F(-10, -8.5f, 6.5f, 10)), TF(SCALAR, F(1)), NULL), QS_I4, SHAPE(4), I(-8, -8, 6, 7));
    qs_node_set_int(&o, "output_dtype", QS_U4);
    expect_ints(q(21, &o, TF(SHAPE(3), F(-1, 7.5f, 99)), TF(SCALAR, F(1)), NULL), QS_U4, SHAPE(3), I(0, 8, 15));
    qs_node_set_int(&o, "output_dtype", QS_I8);
    /* output_dtype and a zero point of another type contradict each other */
    run_fail(&o, 21, 3, (qs_tensor *[]){ TF(SHAPE(1), F(0)), TF(SCALAR, F(1)), TT(QS_U8, SCALAR, I(0)) }, 1, QS_EINVAL);
}

TEST(quantize_per_axis_and_blocked)
{
    qs_node n = opcheck_node("QuantizeLinear", NULL);
    qs_tensor *x = TF(SHAPE(1, 3, 2), F(1, 2, 4, 5, 8, 10));
    qs_tensor *s = TF(SHAPE(3), F(1, 2, 4));
    qs_tensor *z = TT(QS_U8, SHAPE(3), I(0, 10, 20));
    /* default axis 1: channel 1 is (4,5)/2 + 10 = (12, 12 [2.5 -> 2]), channel 2 (8,10)/4 + 20 */
    expect_ints(q(13, &n, x, s, z), QS_U8, SHAPE(1, 3, 2), I(1, 2, 12, 12, 22, 22));
    qs_node_set_int(&n, "axis", -2);
    expect_ints(q(13, &n, x, s, z), QS_U8, SHAPE(1, 3, 2), I(1, 2, 12, 12, 22, 22));
    /* axis 2 with size 2 */
    qs_node_set_int(&n, "axis", 2);
    expect_ints(q(13, &n, x, TF(SHAPE(2), F(1, 0.5f)), TT(QS_I8, SHAPE(2), I(0, -1))), QS_I8, SHAPE(1, 3, 2),
                I(1, 3, 4, 9, 8, 19));
    /* the scale must match the axis */
    qs_node_set_int(&n, "axis", 1);
    const char *msg = run_fail(&n, 13, 2, (qs_tensor *[]){ x, TF(SHAPE(2), F(1, 2)) }, 1, QS_ESHAPE);
    ASSERT_STR_CONTAINS(msg, "axis 1");
    run_fail(&n, 13, 3, (qs_tensor *[]){ x, s, TT(QS_U8, SHAPE(2), I(0, 0)) }, 1, QS_ESHAPE);
    run_fail(&n, 13, 2, (qs_tensor *[]){ x, TI(SCALAR, I(1)) }, 1, QS_EUNSUPPORTED);
    run_fail(&n, 13, 3, (qs_tensor *[]){ x, TF(SCALAR, F(1)), TF(SCALAR, F(0)) }, 1, QS_EUNSUPPORTED);
    /* blocked (opset 21): block_size 2 along axis 1 of [2, 4] */
    qs_node b = opcheck_node("QuantizeLinear", NULL);
    qs_node_set_int(&b, "block_size", 2);
    qs_node_set_int(&b, "output_dtype", QS_I8);
    expect_ints(q(21, &b, TF(SHAPE(2, 4), F(1, 2, 4, 8, 4, 8, 16, 32)), TF(SHAPE(2, 2), F(1, 2, 4, 8)), NULL), QS_I8,
                SHAPE(2, 4), I(1, 2, 2, 4, 1, 2, 2, 4));
    /* a partial last block: ceil(3 / 2) = 2 scales */
    expect_ints(q(21, &b, TF(SHAPE(1, 3), F(3, 3, 3)), TF(SHAPE(1, 2), F(1, 3)), NULL), QS_I8, SHAPE(1, 3), I(3, 3, 1));
    run_fail(&b, 21, 2, (qs_tensor *[]){ TF(SHAPE(1, 3), F(3, 3, 3)), TF(SHAPE(1, 3), F(1, 1, 1)) }, 1, QS_ESHAPE);
}

TEST(dequantize)
{
    qs_node n = opcheck_node("DequantizeLinear", NULL);
    /* ONNX's conformance example (test_dequantizelinear) */
    expect_f32(run1(&n, 13, 3, (qs_tensor *[]){ TT(QS_U8, SHAPE(4), I(0, 3, 128, 255)), TF(SCALAR, F(2)),
                                                TT(QS_U8, SCALAR, I(128)) }),
               SHAPE(4), F(-256, -250, 0, 254), 0);
    /* int32 bias, no zero point */
    expect_f32(run1(&n, 13, 2, (qs_tensor *[]){ TT(QS_I32, SHAPE(3), I(-300, 0, 70000)), TF(SCALAR, F(0.5f)) }),
               SHAPE(3), F(-150, 0, 35000), 0);
    /* per-axis int8 weights on axis 0 */
    qs_node_set_int(&n, "axis", 0);
    expect_f32(run1(&n, 13, 3, (qs_tensor *[]){ TT(QS_I8, SHAPE(2, 2), I(-128, 127, -128, 127)), TF(SHAPE(2), F(1, 0.5f)),
                                                TT(QS_I8, SHAPE(2), I(0, -2)) }),
               SHAPE(2, 2), F(-128, 127, -63, 64.5f), 0);
    /* 4-bit, blocked */
    qs_node b = opcheck_node("DequantizeLinear", NULL);
    qs_node_set_int(&b, "axis", 0);
    qs_node_set_int(&b, "block_size", 2);
    expect_f32(run1(&b, 21, 2, (qs_tensor *[]){ TT(QS_I4, SHAPE(3, 1), I(-8, 7, 1)), TF(SHAPE(2, 1), F(0.5f, 4)) }),
               SHAPE(3, 1), F(-4, 3.5f, 4), 0);
    /* refusals */
    run_fail(&n, 13, 2, (qs_tensor *[]){ TF(SHAPE(2), F(0, 1)), TF(SCALAR, F(1)) }, 1, QS_EUNSUPPORTED);
    run_fail(&n, 13, 3, (qs_tensor *[]){ TT(QS_I8, SHAPE(2), I(0, 1)), TF(SCALAR, F(1)), TT(QS_U8, SCALAR, I(0)) }, 1,
             QS_EINVAL);
}

/* DQ(Q(x)) is within half a step of x inside the grid, and exactly a grid point */
TEST(roundtrip_error_bound)
{
    qs_node qn = opcheck_node("QuantizeLinear", NULL), dn = opcheck_node("DequantizeLinear", NULL);
    qs_tensor *x = opcheck_rand(1, (int64_t[]){ 1000 }, -3, 3), *s = TF(SCALAR, F(0.03f)), *z = TT(QS_I8, SCALAR, I(3));
    qs_tensor *qx = run1(&qn, 13, 3, (qs_tensor *[]){ x, s, z });
    qs_tensor *y = run1(&dn, 13, 3, (qs_tensor *[]){ qx, s, z });
    for (int64_t i = 0; i < 1000; i++) {
        float v = qs_f32(x)[i], r = qs_f32(y)[i];
        if (v / 0.03f + 3 > 127 || v / 0.03f + 3 < -128)
            continue;
        ASSERT(fabsf(v - r) <= 0.015f + 1e-6f);
        ASSERT_CLOSE(r / 0.03f - round(r / 0.03f), 0, 0, 1e-3);
    }
}

TEST_MAIN(quantize_rounds_half_to_even, quantize_saturates, quantize_per_axis_and_blocked, dequantize,
          roundtrip_error_bound)
