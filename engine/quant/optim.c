/* The trainer's optimisers (SGD with momentum or Nesterov, Adam with decoupled weight decay, as
 * PyTorch's SGD and AdamW compute them), learning-rate schedules and global gradient-norm clipping
 * (declared in quant/qat.h; tests/test-qat.c checks them against PyTorch's numbers). */
#include "quant/qat.h"

#include <math.h>

/* --- optimisers ------------------------------------------------------------------------------ */

qs_optim qs_optim_make(qs_optim_kind kind, double momentum, double weight_decay)
{
    return (qs_optim){ .kind = kind, .momentum = momentum, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .weight_decay = weight_decay };
}

void qs_optim_update(const qs_optim *o, float *w, const float *g, float *m, float *v, int64_t n, double lr,
                     int64_t t, int decay)
{
    double wd = decay ? o->weight_decay : 0;
    if (o->kind == QS_OPT_ADAM) {
        double b1 = o->beta1, b2 = o->beta2;
        double c1 = 1 - pow(b1, (double)t), c2 = 1 - pow(b2, (double)t);
        for (int64_t i = 0; i < n; i++) {
            double wi = w[i] * (1 - lr * wd);
            m[i] = (float)(b1 * m[i] + (1 - b1) * g[i]);
            v[i] = (float)(b2 * v[i] + (1 - b2) * (double)g[i] * g[i]);
            wi -= lr * (m[i] / c1) / (sqrt(v[i] / c2) + o->eps);
            w[i] = (float)wi;
        }
        return;
    }
    double mu = o->momentum;
    for (int64_t i = 0; i < n; i++) {
        double d = g[i] + wd * w[i];
        if (mu > 0) {
            m[i] = (float)(mu * m[i] + d);
            d = o->kind == QS_OPT_NESTEROV ? d + mu * m[i] : m[i];
        }
        w[i] = (float)(w[i] - lr * d);
    }
}

/* --- schedules, clipping --------------------------------------------------------------------- */

double qs_lr_at(qs_sched_kind k, double lr, int64_t t, int64_t total, int64_t warmup)
{
    if (warmup > 0 && t < warmup)
        return lr * (double)(t + 1) / (double)warmup;
    int64_t T = total - (warmup > 0 ? warmup : 0), u = t - (warmup > 0 ? warmup : 0);
    if (T <= 0)
        return lr;
    switch (k) {
    case QS_SCHED_COSINE:
        return lr * 0.5 * (1 + cos(M_PI * (double)u / (double)T));
    case QS_SCHED_STEP:
        return lr * (2 * u >= T ? 0.1 : 1) * (4 * u >= 3 * T ? 0.1 : 1);
    default:
        return lr;
    }
}

double qs_clip_grad_norm(float *const *g, const int64_t *n, int k, double max_norm)
{
    double ss = 0;
    for (int i = 0; i < k; i++)
        for (int64_t j = 0; j < n[i]; j++)
            ss += (double)g[i][j] * g[i][j];
    double norm = sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        float f = (float)(max_norm / norm);
        for (int i = 0; i < k; i++)
            for (int64_t j = 0; j < n[i]; j++)
                g[i][j] *= f;
    }
    return norm;
}
