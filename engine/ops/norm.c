/* BatchNormalization (float32), forward and backward, inference and training.
 *
 * Inference: y = scale·(x − mean)/sqrt(var + ε) + B with the running statistics (inputs 3 and 4),
 * computed as y = a·x + b per channel. Training (the executor's training mode, or training_mode = 1
 * from opset 14): the statistics are the batch's (mean and biased variance over N and the spatial
 * dims), and the backward goes through them:
 *   dx = scale/(σ·m) · (m·dy − Σdy − x̂·Σ(dy·x̂)),  x̂ = (x − μ)/σ,  m = elements per channel.
 * Optional outputs: opset 14+ running_mean/running_var (input·momentum + batch·(1 − momentum));
 * before 14, mean, var, saved_mean, saved_var (the last two the batch statistics). Their gradients
 * flow back too. Before opset 9, spatial = 0 normalizes per activation: the parameters then have
 * C·D1·… entries and every (channel, position) pair is its own "channel" with inner size 1.
 *
 * Work is split by channel: one thread owns a channel's planes in every batch item, so statistics
 * and gradients need no reduction across threads and nothing is allocated. */
#include "ops/kernels.h"
#include "ops/norm.h"

#include <math.h>
#include <string.h>

typedef struct bn_p {
    int64_t N, C, S;        /* channels (per activation when spatial = 0) and inner size */
    float eps, momentum;
    int batch_stats;        /* use the batch's statistics (training) */
    int new_outputs;        /* opset >= 14: outputs 1, 2 are running_mean, running_var */
} bn_p;

static const char *const bn_names[5] = { "X", "scale", "B", "input_mean", "input_var" };

static int bn_params(qs_kctx *c, bn_p *p)
{
    char sx[128], sp[128];
    memset(p, 0, sizeof *p);
    if (c->nin < 5)
        return qs_op_error(c, QS_EINVAL, "needs 5 inputs (X, scale, B, input_mean, input_var), got %d", c->nin);
    for (int i = 0; i < 5; i++) {
        if (!c->in[i])
            return qs_op_error(c, QS_EINVAL, "input %s is missing", bn_names[i]);
        if (c->in[i]->dtype != QS_F32)
            return qs_op_error(c, QS_EUNSUPPORTED, "input %s is %s; only float32 is supported", bn_names[i],
                               qs_dtype_name(c->in[i]->dtype));
    }
    const qs_tensor *X = c->in[0];
    qs_shape_str(X->ndim, X->shape, sx, sizeof sx);
    if (X->ndim < 2)
        return qs_op_error(c, QS_ESHAPE, "input X has shape %s; expected [N, C, ...]", sx);
    p->N = X->shape[0];
    p->C = X->shape[1];
    p->S = qs_shape_numel(X->ndim - 2, X->shape + 2);
    int spatial = c->opset < 9 ? (int)qs_node_int(c->node, "spatial", 1) : 1;
    if (!spatial) {
        p->C *= p->S;
        p->S = 1;
    }
    for (int i = 1; i < 5; i++)
        if (qs_numel(c->in[i]) != p->C || (spatial && c->in[i]->ndim != 1))
            return qs_op_error(c, QS_ESHAPE, "%s has shape %s; expected %s with %lld values for X %s", bn_names[i],
                               qs_shape_str(c->in[i]->ndim, c->in[i]->shape, sp, sizeof sp),
                               spatial ? "one value per channel" : "spatial = 0: one per activation",
                               (long long)p->C, sx);
    p->eps = qs_node_float(c->node, "epsilon", 1e-5f);
    p->momentum = qs_node_float(c->node, "momentum", 0.9f);
    if (!(p->eps >= 0))
        return qs_op_error(c, QS_EINVAL, "epsilon = %g must not be negative", (double)p->eps);
    p->new_outputs = c->opset >= 14;
    int training_mode = c->opset >= 14 && qs_node_int(c->node, "training_mode", 0) != 0;
    p->batch_stats = c->training || training_mode;
    int maxout = p->new_outputs ? 3 : 5;
    if (c->nout > maxout)
        return qs_op_error(c, QS_EINVAL, "has %d outputs; at most %d at opset %lld", c->nout, maxout,
                           (long long)c->opset);
    return 0;
}

QS_OP_PARAMS(bn, bn_p, bn_params)

static int has_out(const qs_kctx *c, int i)
{
    return i < c->nout && c->out && c->out[i] && (c->node->nout <= i || c->node->out[i] >= 0);
}

static int bn_infer(qs_kctx *c)
{
    bn_p p;
    int rc = bn_params(c, &p);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, c->in[0]->ndim, c->in[0]->shape);
    for (int i = 1; i < c->nout; i++)
        if (c->out[i])
            qs_set_shape(c->out[i], QS_F32, c->in[3]->ndim, c->in[3]->shape);
    return 0;
}

/* batch mean and biased variance of channel ch (two passes, in double) */
static void channel_stats(const float *x, int64_t N, int64_t C, int64_t S, int64_t ch, double *mean, double *var)
{
    double s = 0, q = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *r = x + (n * C + ch) * S;
        for (int64_t i = 0; i < S; i++)
            s += r[i];
    }
    double m = N * S > 0 ? s / (double)(N * S) : 0;
    for (int64_t n = 0; n < N; n++) {
        const float *r = x + (n * C + ch) * S;
        for (int64_t i = 0; i < S; i++) {
            double d = r[i] - m;
            q += d * d;
        }
    }
    *mean = m;
    *var = N * S > 0 ? q / (double)(N * S) : 0;
}

int qs_bn_batch_stats(const qs_tensor *x, float *mean, float *var)
{
    if (!x || x->dtype != QS_F32 || x->ndim < 2)
        return QS_EINVAL;
    int64_t N = x->shape[0], C = x->shape[1], S = qs_shape_numel(x->ndim - 2, x->shape + 2);
    for (int64_t ch = 0; ch < C; ch++) {
        double m, v;
        channel_stats(qs_f32(x), N, C, S, ch, &m, &v);
        mean[ch] = (float)m;
        var[ch] = (float)v;
    }
    return 0;
}

typedef struct {
    const bn_p *p;
    qs_kctx *c;
} bn_job;

static float *opt_out(qs_kctx *c, int i) { return has_out(c, i) ? qs_f32(c->out[i]) : NULL; }

static void bn_forward_range(void *arg, int64_t c0, int64_t c1, int worker)
{
    const bn_job *j = arg;
    const bn_p *p = j->p;
    qs_kctx *c = j->c;
    const float *x = qs_f32(c->in[0]), *scale = qs_f32(c->in[1]), *bias = qs_f32(c->in[2]);
    const float *rmean = qs_f32(c->in[3]), *rvar = qs_f32(c->in[4]);
    float *y = qs_f32(c->out[0]);
    float *o1 = opt_out(c, 1), *o2 = opt_out(c, 2), *o3 = opt_out(c, 3), *o4 = opt_out(c, 4);
    for (int64_t ch = c0; ch < c1; ch++) {
        double mean = rmean[ch], var = rvar[ch];
        if (p->batch_stats)
            channel_stats(x, p->N, p->C, p->S, ch, &mean, &var);
        double inv = 1.0 / sqrt(var + p->eps);
        float a = (float)(scale[ch] * inv), b = (float)(bias[ch] - mean * scale[ch] * inv);
        for (int64_t n = 0; n < p->N; n++)
            qs_vec_affine(p->S, a, b, x + (n * p->C + ch) * p->S, y + (n * p->C + ch) * p->S);
        float mom = p->batch_stats ? p->momentum : 1.f;   /* inference: the running values pass through */
        if (o1)
            o1[ch] = (float)(rmean[ch] * mom + mean * (1 - mom));
        if (o2)
            o2[ch] = (float)(rvar[ch] * mom + var * (1 - mom));
        if (o3)
            o3[ch] = (float)mean;
        if (o4)
            o4[ch] = (float)var;
    }
}

static int64_t channel_chunk(const bn_p *p)
{
    int64_t work = p->N * p->S;
    return work >= 32768 ? 1 : 32768 / (work ? work : 1);
}

static int bn_forward(qs_kctx *c)
{
    bn_p p;
    int rc = bn_get(c, &p);
    if (rc < 0)
        return rc;
    bn_job j = { &p, c };
    qs_threadpool_for(c->pool, c->nthreads, p.C, channel_chunk(&p), bn_forward_range, &j);
    return 0;
}

static const float *opt_dout(qs_kctx *c, int i) { return i < c->nout && c->dout[i] ? qs_f32(c->dout[i]) : NULL; }
static float *opt_din(qs_kctx *c, int i) { return c->din[i] ? qs_f32(c->din[i]) : NULL; }

static void bn_backward_range(void *arg, int64_t c0, int64_t c1, int worker)
{
    const bn_job *j = arg;
    const bn_p *p = j->p;
    qs_kctx *c = j->c;
    const float *x = qs_f32(c->in[0]), *scale = qs_f32(c->in[1]);
    const float *rmean = qs_f32(c->in[3]), *rvar = qs_f32(c->in[4]);
    const float *dy = opt_dout(c, 0), *g1 = opt_dout(c, 1), *g2 = opt_dout(c, 2);
    const float *g3 = p->new_outputs ? NULL : opt_dout(c, 3), *g4 = p->new_outputs ? NULL : opt_dout(c, 4);
    float *dx = opt_din(c, 0), *dscale = opt_din(c, 1), *db = opt_din(c, 2), *dmean = opt_din(c, 3);
    float *dvar = opt_din(c, 4);
    double cnt = (double)(p->N * p->S);
    for (int64_t ch = c0; ch < c1; ch++) {
        double mean = rmean[ch], var = rvar[ch];
        if (p->batch_stats)
            channel_stats(x, p->N, p->C, p->S, ch, &mean, &var);
        double inv = 1.0 / sqrt(var + p->eps);
        double sdy = 0, sdyx = 0;   /* Σdy and Σdy·(x − mean) */
        if (dy)
            for (int64_t n = 0; n < p->N; n++) {
                const float *xr = x + (n * p->C + ch) * p->S, *dr = dy + (n * p->C + ch) * p->S;
                for (int64_t i = 0; i < p->S; i++) {
                    sdy += dr[i];
                    sdyx += dr[i] * (xr[i] - mean);
                }
            }
        double r1 = g1 ? g1[ch] : 0, r2 = g2 ? g2[ch] : 0;   /* grads of the running-stat outputs */
        if (dscale)
            dscale[ch] = (float)(sdyx * inv);
        if (db)
            db[ch] = (float)sdy;
        if (p->batch_stats) {
            /* y depends on x through μ and σ too; the stat outputs add their own terms */
            double gmean = (1 - p->momentum) * r1 + (g3 ? g3[ch] : 0);   /* d/d(batch mean) */
            double gvar = (1 - p->momentum) * r2 + (g4 ? g4[ch] : 0);    /* d/d(batch var) */
            double k = scale[ch] * inv;
            double c_dy = k, c_x = -k * inv * inv * sdyx / cnt + 2 * gvar / cnt;
            double c_0 = -k * sdy / cnt + gmean / cnt - c_x * mean;
            /* dx = c_dy·dy + c_x·x + c_0 (the (x − μ) terms expanded) */
            if (dx)
                for (int64_t n = 0; n < p->N; n++) {
                    const float *xr = x + (n * p->C + ch) * p->S;
                    const float *dr = dy ? dy + (n * p->C + ch) * p->S : NULL;
                    float *o = dx + (n * p->C + ch) * p->S;
                    for (int64_t i = 0; i < p->S; i++)
                        o[i] = (float)((dr ? c_dy * dr[i] : 0) + c_x * xr[i] + c_0);
                }
            if (dmean)
                dmean[ch] = (float)(p->momentum * r1);
            if (dvar)
                dvar[ch] = (float)(p->momentum * r2);
        } else {
            float a = (float)(scale[ch] * inv);
            if (dx)
                for (int64_t n = 0; n < p->N; n++) {
                    const float *dr = dy ? dy + (n * p->C + ch) * p->S : NULL;
                    float *o = dx + (n * p->C + ch) * p->S;
                    for (int64_t i = 0; i < p->S; i++)
                        o[i] = dr ? a * dr[i] : 0.f;
                }
            if (dmean)
                dmean[ch] = (float)(-scale[ch] * inv * sdy + r1);
            if (dvar)
                dvar[ch] = (float)(-0.5 * scale[ch] * sdyx * inv * inv * inv + r2);
        }
    }
}

static int bn_backward(qs_kctx *c)
{
    bn_p p;
    int rc = bn_get(c, &p);
    if (rc < 0)
        return rc;
    bn_job j = { &p, c };
    qs_threadpool_for(c->pool, c->nthreads, p.C, channel_chunk(&p), bn_backward_range, &j);
    return 0;
}

const qs_op_def qs_ops_norm[] = {
    { .domain = "", .op = "BatchNormalization", .infer = bn_infer, .prepare = bn_prepare, .forward = bn_forward, .backward = bn_backward },
    { .op = NULL },
};
