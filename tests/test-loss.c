/* Losses: hand values, finite-difference gradients, numerical stability, refusals. */
#include <math.h>

#include "tests/optest.h"
#include "engine/ops/loss.h"

TEST(xent_hand_values)
{
    qs_tensor *x = TF(SHAPE(1, 2), F(0, 0)), *d = TF(SHAPE(1, 2), NULL);
    ASSERT_CLOSE(qs_loss_softmax_xent(x, I(0), d), 0.6931472, 1e-6, 0);   /* ln 2 */
    expect_f32(d, SHAPE(1, 2), F(-0.5f, 0.5f), 1e-7);
    /* mean of −log softmax: (−log 0.6652409 + log 3) / 2 */
    qs_tensor *y = TF(SHAPE(2, 3), F(1, 2, 3, 1, 1, 1));
    ASSERT_CLOSE(qs_loss_softmax_xent(y, I(2, 0), NULL), 0.7531091, 1e-6, 0);
    /* huge logits stay finite */
    ASSERT_CLOSE(qs_loss_softmax_xent(TF(SHAPE(1, 2), F(1000, 0)), I(0), NULL), 0, 0, 1e-6);
    ASSERT_CLOSE(qs_loss_softmax_xent(TF(SHAPE(1, 2), F(1000, 0)), I(1), NULL), 1000, 1e-6, 0);
}

TEST(xent_grad_matches_finite_differences)
{
    qs_tensor *x = opcheck_rand(2, (int64_t[]){ 4, 5 }, -2, 2), *d = TF(SHAPE(4, 5), NULL);
    const int64_t *labels = I(0, 4, 2, 2);
    qs_loss_softmax_xent(x, labels, d);
    for (int64_t i = 0; i < 20; i++) {
        float keep = qs_f32(x)[i];
        qs_f32(x)[i] = keep + 1e-2f;
        double lp = qs_loss_softmax_xent(x, labels, NULL);
        qs_f32(x)[i] = keep - 1e-2f;
        double lm = qs_loss_softmax_xent(x, labels, NULL);
        qs_f32(x)[i] = keep;
        ASSERT_CLOSE(qs_f32(d)[i], (lp - lm) / 2e-2, 2e-3, 2e-4);
    }
}

TEST(mse)
{
    qs_tensor *y = TF(SHAPE(3), F(1, 2, 3)), *t = TF(SHAPE(3), F(1, 0, 5)), *d = TF(SHAPE(3), NULL);
    ASSERT_CLOSE(qs_loss_mse(y, t, d), 8.0 / 3, 1e-6, 0);
    expect_f32(d, SHAPE(3), F(0, 4.f / 3, -4.f / 3), 1e-6);
    qs_tensor *a = opcheck_rand(2, (int64_t[]){ 3, 4 }, -1, 1), *b = opcheck_rand(2, (int64_t[]){ 3, 4 }, -1, 1);
    qs_tensor *da = TF(SHAPE(3, 4), NULL);
    qs_loss_mse(a, b, da);
    for (int64_t i = 0; i < 12; i++) {
        float keep = qs_f32(a)[i];
        qs_f32(a)[i] = keep + 1e-2f;
        double lp = qs_loss_mse(a, b, NULL);
        qs_f32(a)[i] = keep - 1e-2f;
        double lm = qs_loss_mse(a, b, NULL);
        qs_f32(a)[i] = keep;
        ASSERT_CLOSE(qs_f32(da)[i], (lp - lm) / 2e-2, 2e-3, 2e-4);
    }
}

TEST(bad_input_is_nan)
{
    qs_tensor *x = TF(SHAPE(2, 3), NULL), *d = TF(SHAPE(2, 3), F(7, 7, 7, 7, 7, 7));
    ASSERT(isnan(qs_loss_softmax_xent(x, I(0, 3), d)));      /* label out of range */
    ASSERT(isnan(qs_loss_softmax_xent(x, I(-1, 0), NULL)));
    ASSERT_EQ(qs_f32(d)[0], 7);                              /* gradient untouched */
    ASSERT(isnan(qs_loss_softmax_xent(TF(SHAPE(6), NULL), I(0), NULL)));   /* not [N, C] */
    ASSERT(isnan(qs_loss_softmax_xent(x, I(0, 1), TF(SHAPE(3, 2), NULL))));
    ASSERT(isnan(qs_loss_mse(x, TF(SHAPE(3, 2), NULL), NULL)));
    ASSERT(isnan(qs_loss_mse(x, TI(SHAPE(2, 3), NULL), NULL)));
}

TEST_MAIN(xent_hand_values, xent_grad_matches_finite_differences, mse, bad_input_is_nan)
