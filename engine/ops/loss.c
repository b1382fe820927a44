/* Losses for training and for AdaRound/QAT objectives. Sums run in double: a mean over a large
 * batch in float32 loses the small per-sample differences the optimiser follows. */
#include "ops/loss.h"

#include <math.h>

static int is_f32_2d(const qs_tensor *t)
{
    return t && t->dtype == QS_F32 && t->ndim == 2 && t->data;
}

float qs_loss_softmax_xent(const qs_tensor *logits, const int64_t *labels, qs_tensor *dlogits)
{
    if (!is_f32_2d(logits) || !labels || logits->shape[0] == 0 || logits->shape[1] == 0)
        return NAN;
    if (dlogits && (!is_f32_2d(dlogits) || !qs_shape_eq(dlogits, logits)))
        return NAN;
    int64_t N = logits->shape[0], C = logits->shape[1];
    for (int64_t n = 0; n < N; n++)
        if (labels[n] < 0 || labels[n] >= C)
            return NAN;
    const float *X = qs_f32(logits);
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *x = X + n * C;
        float m = x[0];
        for (int64_t k = 1; k < C; k++)
            m = x[k] > m ? x[k] : m;
        double s = 0;
        for (int64_t k = 0; k < C; k++)
            s += exp((double)x[k] - m);
        double lse = m + log(s);   /* log Σ e^x, shifted by the max for stability */
        total += lse - x[labels[n]];
        if (dlogits) {
            float *d = qs_f32(dlogits) + n * C;
            for (int64_t k = 0; k < C; k++)
                d[k] = (float)((exp((double)x[k] - lse) - (k == labels[n])) / (double)N);
        }
    }
    return (float)(total / (double)N);
}

float qs_loss_mse(const qs_tensor *y, const qs_tensor *target, qs_tensor *dy)
{
    if (!y || !target || y->dtype != QS_F32 || target->dtype != QS_F32 || !qs_shape_eq(y, target))
        return NAN;
    if (dy && (dy->dtype != QS_F32 || !qs_shape_eq(dy, y)))
        return NAN;
    int64_t n = qs_numel(y);
    if (n == 0)
        return NAN;
    const float *Y = qs_f32(y), *T = qs_f32(target);
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)Y[i] - T[i];
        s += e * e;
        if (dy)
            qs_f32(dy)[i] = (float)(2 * e / (double)n);
    }
    return (float)(s / (double)n);
}
