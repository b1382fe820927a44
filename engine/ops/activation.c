/* Activations: Relu, LeakyRelu, PRelu, Clip (Relu6), Sigmoid, Tanh, HardSigmoid, HardSwish, Elu, Selu,
 * Softplus, Gelu, Softmax and LogSoftmax, forward and backward.
 *
 * The pointwise ones share one shape (same-shape float32 in and out; Relu and Clip also take the
 * integer types) and differ only in the expression, so each is a case in act_forward/act_backward
 * with its own tight loop. Backward reads whichever of x and y makes the derivative cheapest
 * (y for Sigmoid/Tanh/Elu, x for the piecewise ones). At the kinks (x = 0 for Relu, the ends of
 * Clip's interval) the gradient passes when x is inside the closed interval, as PyTorch does.
 *
 * Softmax/LogSoftmax changed meaning at opset 13: before it, the input is coerced to 2-D at `axis`
 * (default 1) and normalised over the flattened [axis, rank) block; from 13 it is normalised along
 * the single dim `axis` (default -1). Both are the same kernel over (outer, n, inner) blocks. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ops/kernels.h"
#include "ops/opsutil.h"

enum act { A_RELU, A_LEAKY, A_SIGMOID, A_TANH, A_HSIG, A_HSWISH, A_ELU, A_SELU, A_SOFTPLUS, A_GELU };

static enum act act_of(const qs_kctx *c)
{
    static const char *const names[] = { "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
                                         "Elu", "Selu", "Softplus", "Gelu" };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(c->node->op, names[i]))
            return (enum act)i;
    return A_RELU;
}

struct act_params { float alpha, beta, gamma; int tanh_approx; };

static int act_params(qs_kctx *c, enum act op, struct act_params *p)
{
    const qs_node *n = c->node;
    memset(p, 0, sizeof *p);
    switch (op) {
    case A_LEAKY: p->alpha = qs_node_float(n, "alpha", 0.01f); break;
    case A_HSIG: p->alpha = qs_node_float(n, "alpha", 0.2f); p->beta = qs_node_float(n, "beta", 0.5f); break;
    case A_ELU: p->alpha = qs_node_float(n, "alpha", 1.f); break;
    case A_SELU:
        p->alpha = qs_node_float(n, "alpha", 1.67326319217681884765625f);
        p->gamma = qs_node_float(n, "gamma", 1.05070102214813232421875f);
        break;
    case A_GELU: {
        const char *a = qs_node_string(n, "approximate", "none");
        if (strcmp(a, "none") && strcmp(a, "tanh"))
            return qs_op_error(c, QS_EINVAL, "approximate must be \"none\" or \"tanh\", got \"%s\"", a);
        p->tanh_approx = !strcmp(a, "tanh");
        break;
    }
    default: break;
    }
    return 0;
}

static int act_infer(qs_kctx *c)
{
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "expects 1 input");
    const qs_tensor *x = c->in[0];
    enum act op = act_of(c);
    int ok = x->dtype == QS_F32 || ((op == A_RELU || op == A_LEAKY) && qs_dtype_numeric(x->dtype) &&
                                    (op == A_RELU || x->dtype == QS_F64));
    if (!ok)
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(x->dtype));
    struct act_params p;
    int rc = act_params(c, op, &p);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], x->dtype, x->ndim, x->shape);
    return 0;
}

#define ACT_LOOP(EXPR) QS_VFOR(i, n, float x = X[i]; Y[i] = (EXPR))

static inline float sigmoid(float x)
{
    float e = expf(-fabsf(x));
    return x >= 0 ? 1.f / (1.f + e) : e / (1.f + e);
}

static float gelu(float x, int tanh_approx)
{
    if (tanh_approx)
        return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
}

typedef struct {
    enum act op;
    struct act_params p;
    const float *x;
    float *y;
} act_job;

/* elements [b, e) of a float32 activation */
static void act_range(void *arg, int64_t b0, int64_t e0, int worker)
{
    const act_job *j = arg;
    const float *X = j->x + b0;
    float *Y = j->y + b0;
    int64_t n = e0 - b0;
    float a = j->p.alpha, b = j->p.beta, g = j->p.gamma;
    switch (j->op) {
    case A_RELU: ACT_LOOP(x > 0 ? x : 0.f); break;
    case A_LEAKY: ACT_LOOP(x < 0 ? a * x : x); break;
    case A_SIGMOID: qs_vec_sigmoid(n, X, Y); break;
    case A_TANH: ACT_LOOP(tanhf(x)); break;
    case A_HSIG: qs_vec_hardsigmoid(n, a, b, X, Y); break;
    case A_HSWISH: qs_vec_hardswish(n, X, Y); break;
    case A_ELU: ACT_LOOP(x < 0 ? a * (expf(x) - 1.f) : x); break;
    case A_SELU: ACT_LOOP(x <= 0 ? g * a * (expf(x) - 1.f) : g * x); break;
    /* log(1 + e^x) without overflow for large x */
    case A_SOFTPLUS: ACT_LOOP((x > 0 ? x : 0.f) + log1pf(expf(-fabsf(x)))); break;
    case A_GELU: ACT_LOOP(gelu(x, j->p.tanh_approx)); break;
    }
}

static int act_forward(qs_kctx *c)
{
    const qs_tensor *xt = c->in[0];
    qs_tensor *yt = c->out[0];
    enum act op = act_of(c);
    struct act_params p;
    act_params(c, op, &p);
    int64_t n = qs_numel(xt);
    if (xt->dtype != QS_F32) {   /* Relu on integers, LeakyRelu on float64 */
        for (int64_t i = 0; i < n; i++) {
            if (qs_dtype_is_int(xt->dtype)) {
                int64_t v = qs_load_i64(xt, i);
                qs_store_i64(yt->data, yt->dtype, i, v > 0 ? v : 0);
            } else {
                double v = qs_get_f64(xt, i);
                qs_store_f64(yt->data, yt->dtype, i, op == A_RELU ? (v > 0 ? v : 0) : (v < 0 ? p.alpha * v : v));
            }
        }
        return 0;
    }
    act_job j = { op, p, qs_f32(xt), qs_f32(yt) };
    /* chunks of at least 16k elements: smaller ones cost more to hand out than to compute */
    qs_threadpool_for(c->pool, c->nthreads, n, 16384, act_range, &j);
    return 0;
}

#define ACT_BWD(EXPR) QS_VFOR(i, n, float x = X[i]; float y = Y[i]; float g = G[i]; (void)x; (void)y; D[i] = (EXPR))

typedef struct {
    enum act op;
    struct act_params p;
    const float *x, *y, *g;
    float *d;
} act_bwd_job;

/* elements [b0, e0) of a float32 activation's gradient */
static void act_bwd_range(void *arg, int64_t b0, int64_t e0, int worker)
{
    const act_bwd_job *j = arg;
    const float *X = j->x + b0, *Y = j->y + b0, *G = j->g + b0;
    float *D = j->d + b0;
    int64_t n = e0 - b0;
    float a = j->p.alpha, b = j->p.beta, ga = j->p.gamma;
    switch (j->op) {
    case A_RELU: ACT_BWD(x > 0 ? g : 0.f); break;
    case A_LEAKY: ACT_BWD(x < 0 ? a * g : g); break;
    case A_SIGMOID: ACT_BWD(g * y * (1.f - y)); break;
    case A_TANH: ACT_BWD(g * (1.f - y * y)); break;
    case A_HSIG: ACT_BWD(a * x + b > 0 && a * x + b < 1 ? a * g : 0.f); break;
    case A_HSWISH: ACT_BWD(x < -3.f ? 0.f : x > 3.f ? g : g * (2.f * x + 3.f) / 6.f); break;
    case A_ELU: ACT_BWD(x < 0 ? g * (y + a) : g); break;
    case A_SELU: ACT_BWD(x <= 0 ? g * (y + ga * a) : g * ga); break;
    case A_SOFTPLUS: ACT_BWD(g * sigmoid(x)); break;
    case A_GELU:
        if (j->p.tanh_approx) {
            ACT_BWD(g * (0.5f * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))) +
                         0.5f * x * (1.f - powf(tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)), 2.f)) *
                             0.7978845608028654f * (1.f + 3.f * 0.044715f * x * x)));
        } else {
            /* Φ(x) + x·φ(x) */
            ACT_BWD(g * (0.5f * (1.f + erff(x * 0.7071067811865476f)) +
                         x * 0.3989422804014327f * expf(-0.5f * x * x)));
        }
        break;
    }
}

static int act_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    float *D = qs_f32(c->din[0]);
    int64_t n = qs_numel(c->in[0]);
    if (!c->dout[0] || c->in[0]->dtype != QS_F32) {
        memset(D, 0, n * sizeof *D);
        return 0;
    }
    act_bwd_job j = { .op = act_of(c), .x = qs_f32(c->in[0]), .y = qs_f32(c->out[0]), .g = qs_f32(c->dout[0]), .d = D };
    act_params(c, j.op, &j.p);
    /* element by element: the same bits however the range is split (as act_forward) */
    qs_threadpool_for(c->pool, c->nthreads, n, 16384, act_bwd_range, &j);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * PRelu: y = x < 0 ? slope·x : x, slope broadcasting one-directionally to x */

static int prelu_infer(qs_kctx *c)
{
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "expects 2 inputs (X, slope)");
    const qs_tensor *x = c->in[0], *s = c->in[1];
    if (x->dtype != QS_F32 || s->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "X and slope must be float32 (got %s and %s)",
                           qs_dtype_name(x->dtype), qs_dtype_name(s->dtype));
    if (!qs_broadcasts_to(s, x->ndim, x->shape)) {
        char a[128], b[128];
        return qs_op_error(c, QS_ESHAPE, "slope of shape %s does not broadcast to X of shape %s",
                           qs_shape_str(s->ndim, s->shape, a, sizeof a), qs_shape_str(x->ndim, x->shape, b, sizeof b));
    }
    qs_set_shape(c->out[0], QS_F32, x->ndim, x->shape);
    return 0;
}

static int prelu_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0], *s = c->in[1];
    const qs_tensor *ops[2] = { x, s };
    qs_bcast b;
    qs_bcast_init(&b, x->ndim, x->shape, 2, ops);
    int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b), ss = b.st[1][b.ndim - 1];
    const float *X = qs_f32(x), *S = qs_f32(s);
    float *Y = qs_f32(c->out[0]);
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p)) {
        const float *px = X + p.off[0], *ps = S + p.off[1];
        float *py = Y + p.off[0];
        for (int64_t i = 0; i < n; i++)
            py[i] = px[i] < 0 ? ps[i * ss] * px[i] : px[i];
    }
    return 0;
}

static int prelu_backward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0], *s = c->in[1];
    float *dX = c->din[0] ? qs_f32(c->din[0]) : NULL, *dS = c->din[1] ? qs_f32(c->din[1]) : NULL;
    if (dX)
        memset(dX, 0, qs_nbytes(x));
    if (dS)
        memset(dS, 0, qs_nbytes(s));
    if (!c->dout[0])
        return 0;
    const qs_tensor *ops[2] = { x, s };
    qs_bcast b;
    qs_bcast_init(&b, x->ndim, x->shape, 2, ops);
    int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b), ss = b.st[1][b.ndim - 1];
    const float *X = qs_f32(x), *S = qs_f32(s), *G = qs_f32(c->dout[0]);
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p))
        for (int64_t i = 0; i < n; i++) {
            int64_t ix = p.off[0] + i, is = p.off[1] + i * ss;
            float g = G[ix];
            if (X[ix] < 0) {
                if (dX)
                    dX[ix] = S[is] * g;
                if (dS)
                    dS[is] += X[ix] * g;
            } else if (dX) {
                dX[ix] = g;
            }
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Clip: min/max attributes before opset 11, optional scalar inputs from 11 */

static int clip_infer(qs_kctx *c)
{
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "expects an input");
    const qs_tensor *x = c->in[0];
    if (!qs_dtype_numeric(x->dtype) || (c->opset < 12 && x->dtype != QS_F32 && x->dtype != QS_F64))
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(x->dtype));
    if (c->opset >= 11) {
        static const char *const what[] = { "", "min", "max" };
        for (int i = 1; i <= 2; i++) {
            const qs_tensor *t = qs_opt_in(c, i);
            if (!t)
                continue;
            if (t->dtype != x->dtype)
                return qs_op_error(c, QS_EINVAL, "%s must have the input's type %s, got %s", what[i],
                                   qs_dtype_name(x->dtype), qs_dtype_name(t->dtype));
            if (qs_numel(t) != 1)
                return qs_op_error(c, QS_ESHAPE, "%s must be a scalar, got %lld values", what[i],
                                   (long long)qs_numel(t));
        }
    } else if (x->dtype != QS_F32) {
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(x->dtype));
    }
    qs_set_shape(c->out[0], x->dtype, x->ndim, x->shape);
    return 0;
}

/* The bounds as doubles; ±infinity when absent (exact for every integer type but huge int64). */
static void clip_bounds(const qs_kctx *c, double *lo, double *hi)
{
    *lo = -INFINITY;
    *hi = INFINITY;
    if (c->opset < 11) {
        *lo = qs_node_float(c->node, "min", -FLT_MAX);
        *hi = qs_node_float(c->node, "max", FLT_MAX);
        return;
    }
    const qs_tensor *tl = qs_opt_in(c, 1), *th = qs_opt_in(c, 2);
    if (tl)
        *lo = qs_get_f64(tl, 0);
    if (th)
        *hi = qs_get_f64(th, 0);
}

/* The executor's fusion: Clip's interval when it is known at plan time (attributes, or float scalar
 * inputs with their values known) — absent bounds are infinite here, not ±FLT_MAX. */
static int clip_clamp(const qs_kctx *c, float *lo, float *hi)
{
    *lo = -INFINITY;
    *hi = INFINITY;
    if (c->opset < 11) {
        *lo = qs_node_float(c->node, "min", -INFINITY);
        *hi = qs_node_float(c->node, "max", INFINITY);
        return 1;
    }
    for (int k = 1; k < c->nin && k < 3; k++) {
        const qs_tensor *t = c->in[k];
        if (!t)
            continue;
        if (!t->data || t->dtype != QS_F32 || qs_numel(t) != 1)
            return 0;
        *(k == 1 ? lo : hi) = qs_f32(t)[0];
    }
    return *lo <= *hi;
}

static int relu_clamp(const qs_kctx *c, float *lo, float *hi)
{
    (void)c;
    *lo = 0;
    *hi = INFINITY;
    return 1;
}

static int clip_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    double lo, hi;
    clip_bounds(c, &lo, &hi);
    int64_t n = qs_numel(x);
    if (x->dtype == QS_F32) {
        const float *X = qs_f32(x);
        float *Y = qs_f32(y), l = (float)lo, h = (float)hi;
        /* min(max(x, lo), hi): when lo > hi every value becomes hi, as the spec says */
        QS_VFOR(i, n, float v = X[i] < l ? l : X[i]; Y[i] = v > h ? h : v);
        return 0;
    }
    if (qs_dtype_is_int(x->dtype)) {
        const qs_tensor *tl = qs_opt_in(c, 1), *th = qs_opt_in(c, 2);
        int64_t l = tl ? qs_load_i64(tl, 0) : INT64_MIN, h = th ? qs_load_i64(th, 0) : INT64_MAX;
        for (int64_t i = 0; i < n; i++) {
            int64_t v = qs_load_i64(x, i);
            v = v < l ? l : v;
            qs_store_i64(y->data, y->dtype, i, v > h ? h : v);
        }
        return 0;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = qs_get_f64(x, i);
        v = v < lo ? lo : v;
        qs_store_f64(y->data, y->dtype, i, v > hi ? hi : v);
    }
    return 0;
}

static int clip_backward(qs_kctx *c)
{
    qs_tensor *dxt = c->din[0];
    qs_tensor *dlt = c->opset >= 11 && c->nin > 1 ? c->din[1] : NULL;
    qs_tensor *dht = c->opset >= 11 && c->nin > 2 ? c->din[2] : NULL;
    float *dX = dxt ? qs_f32(dxt) : NULL;
    int64_t n = qs_numel(c->in[0]);
    if (dX)
        memset(dX, 0, n * sizeof *dX);
    if (dlt)
        qs_f32(dlt)[0] = 0;
    if (dht)
        qs_f32(dht)[0] = 0;
    if (!c->dout[0] || c->in[0]->dtype != QS_F32)
        return 0;
    double lo, hi;
    clip_bounds(c, &lo, &hi);
    const float *X = qs_f32(c->in[0]), *G = qs_f32(c->dout[0]);
    float l = (float)lo, h = (float)hi;
    double dl = 0, dh = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = X[i] < l ? l : X[i];
        if (v > h)
            dh += G[i];          /* output is max */
        else if (X[i] < l)
            dl += G[i];          /* output is min */
        else if (dX)
            dX[i] = G[i];
    }
    if (dlt)
        qs_f32(dlt)[0] = (float)dl;
    if (dht)
        qs_f32(dht)[0] = (float)dh;
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Softmax / LogSoftmax over (outer, n, inner) blocks: element (o, k, j) at (o·n + k)·inner + j */

static int softmax_geometry(qs_kctx *c, int64_t *outer, int64_t *n, int64_t *inner)
{
    const qs_tensor *x = c->in[0];
    int r = x->ndim, axis;
    if (r == 0)
        return qs_op_error(c, QS_ESHAPE, "input must have rank >= 1");
    int64_t a = qs_node_int(c->node, "axis", c->opset >= 13 ? -1 : 1);
    int rc = qs_norm_axis(c, a, r, "axis", &axis);
    if (rc < 0)
        return rc;
    *outer = qs_shape_numel(axis, x->shape);
    if (c->opset >= 13) {
        *n = x->shape[axis];
        *inner = qs_shape_numel(r - axis - 1, x->shape + axis + 1);
    } else {   /* coerced to 2-D [outer, rest] */
        *n = qs_shape_numel(r - axis, x->shape + axis);
        *inner = 1;
    }
    return 0;
}

static int softmax_infer(qs_kctx *c)
{
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "expects 1 input");
    const qs_tensor *x = c->in[0];
    if (x->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(x->dtype));
    int64_t o, n, in;
    int rc = softmax_geometry(c, &o, &n, &in);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, x->ndim, x->shape);
    return 0;
}

static int softmax_forward(qs_kctx *c)
{
    int logsm = !strcmp(c->node->op, "LogSoftmax");
    int64_t outer, n, inner;
    int rc = softmax_geometry(c, &outer, &n, &inner);
    if (rc < 0)
        return rc;
    const float *X = qs_f32(c->in[0]);
    float *Y = qs_f32(c->out[0]);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            const float *x = X + o * n * inner + j;
            float *y = Y + o * n * inner + j;
            float m = -INFINITY;
            for (int64_t k = 0; k < n; k++)
                m = x[k * inner] > m ? x[k * inner] : m;
            double s = 0;
            for (int64_t k = 0; k < n; k++) {
                float e = expf(x[k * inner] - m);
                s += e;
                if (!logsm)
                    y[k * inner] = e;
            }
            if (logsm) {
                float ls = (float)log(s);
                for (int64_t k = 0; k < n; k++)
                    y[k * inner] = x[k * inner] - m - ls;
            } else {
                float inv = (float)(1.0 / s);
                for (int64_t k = 0; k < n; k++)
                    y[k * inner] *= inv;
            }
        }
    return 0;
}

static int softmax_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    float *D = qs_f32(c->din[0]);
    if (!c->dout[0]) {
        memset(D, 0, qs_nbytes(c->din[0]));
        return 0;
    }
    int logsm = !strcmp(c->node->op, "LogSoftmax");
    int64_t outer, n, inner;
    int rc = softmax_geometry(c, &outer, &n, &inner);
    if (rc < 0)
        return rc;
    const float *Y = qs_f32(c->out[0]), *G = qs_f32(c->dout[0]);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t base = o * n * inner + j;
            const float *y = Y + base, *g = G + base;
            float *d = D + base;
            double s = 0;
            if (logsm) {   /* dx = g − softmax·Σg */
                for (int64_t k = 0; k < n; k++)
                    s += g[k * inner];
                for (int64_t k = 0; k < n; k++)
                    d[k * inner] = g[k * inner] - expf(y[k * inner]) * (float)s;
            } else {       /* dx = y·(g − Σ g·y) */
                for (int64_t k = 0; k < n; k++)
                    s += (double)g[k * inner] * y[k * inner];
                for (int64_t k = 0; k < n; k++)
                    d[k * inner] = y[k * inner] * (g[k * inner] - (float)s);
            }
        }
    return 0;
}

/* Sigmoid, HardSwish and HardSigmoid as a producer's epilogue applies them (ops.h) */
static int act_pointwise(const qs_kctx *c, float *alpha, float *beta)
{
    switch (act_of(c)) {
    case A_SIGMOID: return QS_PW_SIGMOID;
    case A_HSWISH: return QS_PW_HARDSWISH;
    case A_HSIG:
        *alpha = qs_node_float(c->node, "alpha", 0.2f);
        *beta = qs_node_float(c->node, "beta", 0.5f);
        return QS_PW_HARDSIGMOID;
    default: return QS_PW_NONE;
    }
}

/* ------------------------------------------------------------------------------------------------ */

#define ACT(name) { .domain = "", .op = name, .infer = act_infer, .forward = act_forward, .backward = act_backward }

const qs_op_def qs_ops_activation[] = {
    { .domain = "", .op = "Relu", .clamp = relu_clamp, .infer = act_infer, .forward = act_forward,
      .backward = act_backward },
    ACT("LeakyRelu"),
    { .domain = "", .op = "Sigmoid", .flags = QS_OP_SIGMOID, .pointwise = act_pointwise, .infer = act_infer,
      .forward = act_forward, .backward = act_backward },
    ACT("Tanh"),
    { .domain = "", .op = "HardSigmoid", .pointwise = act_pointwise, .infer = act_infer, .forward = act_forward,
      .backward = act_backward },
    { .domain = "", .op = "HardSwish", .pointwise = act_pointwise, .infer = act_infer, .forward = act_forward,
      .backward = act_backward },
    ACT("Elu"), ACT("Selu"), ACT("Softplus"), ACT("Gelu"),
    { .domain = "", .op = "PRelu", .infer = prelu_infer, .forward = prelu_forward, .backward = prelu_backward },
    { .domain = "", .op = "Clip", .clamp = clip_clamp, .infer = clip_infer, .forward = clip_forward, .backward = clip_backward },
    { .domain = "", .op = "Softmax", .infer = softmax_infer, .forward = softmax_forward, .backward = softmax_backward },
    { .domain = "", .op = "LogSoftmax", .infer = softmax_infer, .forward = softmax_forward,
      .backward = softmax_backward },
    { .op = NULL },
};
