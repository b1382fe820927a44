/* QuantizeLinear and DequantizeLinear, exactly as the ONNX spec (and ONNX Runtime) compute them:
 *
 *   quantize:   y = saturate(round_half_to_even(x / y_scale) + y_zero_point)
 *   dequantize: y = (x - x_zero_point) * x_scale
 *
 * both in float32 arithmetic (the division and multiplication are float32, as the scale's type
 * decides), so that our simulation and ONNX Runtime's execution of an exported model agree bit for
 * bit. Granularity follows the scale's shape: a scalar (or one-element 1-D) is per-tensor, a 1-D
 * tensor of size x.shape[axis] is per-axis (opset 13+), and a tensor of x's rank with
 * ceil(x.shape[axis] / block_size) along axis is blocked (opset 21+). The zero point, when given,
 * has the scale's shape and sets the quantized type; otherwise output_dtype (opset 21+) does, and
 * the default is uint8. 4-bit types hold one value per byte in memory (tensor.h).
 *
 * No backward: quantization-aware training uses the FakeQuant node (engine/quant), whose
 * straight-through estimator needs the float input, not these integer-typed edges. */
#include <math.h>
#include <string.h>

#include "ops/opsutil.h"

static int qrange(qs_dtype t, int64_t *lo, int64_t *hi)
{
    switch (t) {
    case QS_U8: *lo = 0; *hi = 255; return 0;
    case QS_I8: *lo = -128; *hi = 127; return 0;
    case QS_U16: *lo = 0; *hi = 65535; return 0;
    case QS_I16: *lo = -32768; *hi = 32767; return 0;
    case QS_U4: *lo = 0; *hi = 15; return 0;
    case QS_I4: *lo = -8; *hi = 7; return 0;
    case QS_I32: *lo = INT32_MIN; *hi = INT32_MAX; return 0;
    default: return -1;
    }
}

/* Where each element finds its scale: element (o, ch, j) of x viewed as [outer, C, inner] uses
 * scale[(o·so) + (ch / block)·sc + j·sj]. */
struct qgrid {
    int64_t outer, C, inner;
    int64_t so, sc, sj, block;
};

static int qdq_grid(qs_kctx *c, const char *sname, struct qgrid *g)
{
    const qs_tensor *x = c->in[0], *s = c->in[1], *z = qs_opt_in(c, 2);
    char a[160], b[160];
    if (s->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "%s must be float32, got %s", sname, qs_dtype_name(s->dtype));
    if (z && !qs_shape_eq(z, s))
        return qs_op_error(c, QS_ESHAPE, "zero point shape %s differs from %s shape %s",
                           qs_shape_str(z->ndim, z->shape, a, sizeof a), sname,
                           qs_shape_str(s->ndim, s->shape, b, sizeof b));
    int64_t block = c->opset >= 21 ? qs_node_int(c->node, "block_size", 0) : 0;
    memset(g, 0, sizeof *g);
    g->outer = qs_numel(x);
    g->C = 1;
    g->inner = 1;
    g->block = 1;
    /* per-tensor: a scalar, or a one-element 1-D scale as ONNX Runtime also accepts */
    if (s->ndim == 0 || (s->ndim == 1 && s->shape[0] == 1 && block == 0))
        return 0;
    int axis;
    int rc = qs_norm_axis(c, qs_node_int(c->node, "axis", 1), x->ndim, "axis", &axis);
    if (rc < 0)
        return rc;
    g->outer = qs_shape_numel(axis, x->shape);
    g->C = x->shape[axis];
    g->inner = qs_shape_numel(x->ndim - axis - 1, x->shape + axis + 1);
    if (block < 0)
        return qs_op_error(c, QS_EINVAL, "block_size %lld is negative", (long long)block);
    if (block == 0) {   /* per-axis */
        if (s->ndim != 1 || s->shape[0] != g->C)
            return qs_op_error(c, QS_ESHAPE, "%s of shape %s does not match axis %d of x %s (per-axis needs [%lld])",
                               sname, qs_shape_str(s->ndim, s->shape, a, sizeof a), axis,
                               qs_shape_str(x->ndim, x->shape, b, sizeof b), (long long)g->C);
        g->sc = 1;
        return 0;
    }
    /* blocked: s has x's shape except ceil(C / block) along axis */
    int ok = s->ndim == x->ndim;
    for (int d = 0; ok && d < x->ndim; d++)
        ok = d == axis ? s->shape[d] == (x->shape[d] + block - 1) / block : s->shape[d] == x->shape[d];
    if (!ok)
        return qs_op_error(c, QS_ESHAPE, "%s of shape %s does not fit x %s with block_size %lld on axis %d", sname,
                           qs_shape_str(s->ndim, s->shape, a, sizeof a), qs_shape_str(x->ndim, x->shape, b, sizeof b),
                           (long long)block, axis);
    g->block = block;
    g->sc = g->inner;
    g->so = s->shape[axis] * g->inner;
    g->sj = 1;
    return 0;
}

static int qdq_inputs(qs_kctx *c)
{
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "expects x and a scale");
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */

static int q_out_type(qs_kctx *c, qs_dtype *t)
{
    const qs_tensor *z = qs_opt_in(c, 2);
    int64_t od = c->opset >= 21 ? qs_node_int(c->node, "output_dtype", 0) : 0;
    *t = z ? z->dtype : od ? (qs_dtype)od : QS_U8;
    if (z && od && od != z->dtype)
        return qs_op_error(c, QS_EINVAL, "output_dtype %s differs from the zero point's type %s",
                           qs_dtype_name((qs_dtype)od), qs_dtype_name(z->dtype));
    int64_t lo, hi;
    if (qrange(*t, &lo, &hi) < 0 || *t == QS_I32)
        return qs_op_error(c, QS_EUNSUPPORTED, "quantized type %s is not supported", qs_dtype_name(*t));
    return 0;
}

static int q_infer(qs_kctx *c)
{
    int rc = qdq_inputs(c);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    if (x->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "x must be float32, got %s", qs_dtype_name(x->dtype));
    qs_dtype t;
    struct qgrid g;
    if ((rc = q_out_type(c, &t)) < 0 || (rc = qdq_grid(c, "y_scale", &g)) < 0)
        return rc;
    qs_set_shape(c->out[0], t, x->ndim, x->shape);
    return 0;
}

/* One span of n elements sharing a scale and zero point, the common case (per tensor, per axis).
 * Clamping x/s to [lo − z, hi − z] before rounding equals rounding then saturating, since the bounds
 * are integers; the 1.5·2^23 addition rounds half to even like nearbyintf (|v| < 2^22 after the
 * clamp) and, unlike a libm call, lets the compiler vectorise the loop. NaN maps to the zero point. */
#define Q_SPAN(T)                                                                                   \
    static void q_span_##T(const float *x, T *y, int64_t n, float s, float z, float lo, float hi)   \
    {                                                                                               \
        const float a = lo - z, b = hi - z, magic = 12582912.f;                                     \
        QS_VFOR(i, n, float v = x[i] / s; v = v == v ? v : 0.f; v = v < a ? a : v; v = v > b ? b : v; \
                y[i] = (T)(int32_t)((v + magic) - magic + z));                                      \
    }
Q_SPAN(uint8_t)
Q_SPAN(int8_t)
Q_SPAN(uint16_t)
Q_SPAN(int16_t)

#define DQ_SPAN(T)                                                                                  \
    static void dq_span_##T(const T *x, float *y, int64_t n, float s, int32_t z)                    \
    {                                                                                               \
        QS_VFOR(i, n, y[i] = (float)((int32_t)x[i] - z) * s);                                      \
    }
DQ_SPAN(uint8_t)
DQ_SPAN(int8_t)
DQ_SPAN(uint16_t)
DQ_SPAN(int16_t)

static void dq_span_int32_t(const int32_t *x, float *y, int64_t n, float s, int32_t z)
{
    for (int64_t i = 0; i < n; i++)   /* int64 difference: int32 minus its zero point may overflow int32 */
        y[i] = (float)((int64_t)x[i] - z) * s;
}

/* Spans of the non-blocked layouts: per tensor is one span of everything. */
static void spans(struct qgrid *g)
{
    if (g->C == 1 && g->inner == 1 && g->so == 0) {
        g->inner = g->outer;
        g->outer = 1;
    }
}

static int q_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0], *s = c->in[1], *z = qs_opt_in(c, 2);
    qs_tensor *y = c->out[0];
    struct qgrid g;
    int rc = qdq_grid(c, "y_scale", &g);
    if (rc < 0)
        return rc;
    int64_t lo, hi;
    qrange(y->dtype, &lo, &hi);
    const float *X = qs_f32(x), *S = qs_f32(s);
    float flo = (float)lo, fhi = (float)hi;
    if (g.block == 1 && (y->dtype == QS_U8 || y->dtype == QS_I8 || y->dtype == QS_U16 || y->dtype == QS_I16)) {
        spans(&g);
        for (int64_t o = 0; o < g.outer; o++)
            for (int64_t ch = 0; ch < g.C; ch++) {
                int64_t i = (o * g.C + ch) * g.inner, k = o * g.so + ch * g.sc;
                float zp = z ? (float)qs_load_i64(z, k) : 0.f;
                switch (y->dtype) {
                case QS_U8: q_span_uint8_t(X + i, (uint8_t *)y->data + i, g.inner, S[k], zp, flo, fhi); break;
                case QS_I8: q_span_int8_t(X + i, (int8_t *)y->data + i, g.inner, S[k], zp, flo, fhi); break;
                case QS_U16: q_span_uint16_t(X + i, (uint16_t *)y->data + i, g.inner, S[k], zp, flo, fhi); break;
                default: q_span_int16_t(X + i, (int16_t *)y->data + i, g.inner, S[k], zp, flo, fhi); break;
                }
            }
        return 0;
    }
    int64_t i = 0;
    for (int64_t o = 0; o < g.outer; o++)
        for (int64_t ch = 0; ch < g.C; ch++)
            for (int64_t j = 0; j < g.inner; j++, i++) {
                int64_t k = o * g.so + (ch / g.block) * g.sc + j * g.sj;
                float zp = z ? (float)qs_load_i64(z, k) : 0.f;
                /* nearbyintf rounds half to even in the default rounding mode; saturate in float
                 * before converting so that huge or infinite values clamp instead of overflowing */
                float v = nearbyintf(X[i] / S[k]) + zp;
                v = v != v ? zp : v < flo ? flo : v > fhi ? fhi : v;
                qs_store_i64(y->data, y->dtype, i, (int64_t)v);
            }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */

static int dq_infer(qs_kctx *c)
{
    int rc = qdq_inputs(c);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0], *z = qs_opt_in(c, 2);
    int64_t lo, hi;
    if (qrange(x->dtype, &lo, &hi) < 0)
        return qs_op_error(c, QS_EUNSUPPORTED, "x type %s is not supported", qs_dtype_name(x->dtype));
    if (z && z->dtype != x->dtype)
        return qs_op_error(c, QS_EINVAL, "zero point type %s differs from x's type %s", qs_dtype_name(z->dtype),
                           qs_dtype_name(x->dtype));
    struct qgrid g;
    if ((rc = qdq_grid(c, "x_scale", &g)) < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, x->ndim, x->shape);
    return 0;
}

static int dq_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0], *s = c->in[1], *z = qs_opt_in(c, 2);
    struct qgrid g;
    int rc = qdq_grid(c, "x_scale", &g);
    if (rc < 0)
        return rc;
    const float *S = qs_f32(s);
    float *Y = qs_f32(c->out[0]);
    if (g.block == 1 && x->dtype != QS_U4 && x->dtype != QS_I4) {
        spans(&g);
        for (int64_t o = 0; o < g.outer; o++)
            for (int64_t ch = 0; ch < g.C; ch++) {
                int64_t i = (o * g.C + ch) * g.inner, k = o * g.so + ch * g.sc;
                int32_t zp = z ? (int32_t)qs_load_i64(z, k) : 0;
                switch (x->dtype) {
                case QS_U8: dq_span_uint8_t((const uint8_t *)x->data + i, Y + i, g.inner, S[k], zp); break;
                case QS_I8: dq_span_int8_t((const int8_t *)x->data + i, Y + i, g.inner, S[k], zp); break;
                case QS_U16: dq_span_uint16_t((const uint16_t *)x->data + i, Y + i, g.inner, S[k], zp); break;
                case QS_I16: dq_span_int16_t((const int16_t *)x->data + i, Y + i, g.inner, S[k], zp); break;
                default: dq_span_int32_t((const int32_t *)x->data + i, Y + i, g.inner, S[k], zp); break;
                }
            }
        return 0;
    }
    int64_t i = 0;
    for (int64_t o = 0; o < g.outer; o++)
        for (int64_t ch = 0; ch < g.C; ch++)
            for (int64_t j = 0; j < g.inner; j++, i++) {
                int64_t k = o * g.so + (ch / g.block) * g.sc + j * g.sj;
                int64_t zp = z ? qs_load_i64(z, k) : 0;
                Y[i] = (float)(qs_load_i64(x, i) - zp) * S[k];
            }
    return 0;
}

const qs_op_def qs_ops_qdq[] = {
    { .domain = "", .op = "QuantizeLinear", .infer = q_infer, .forward = q_forward },
    { .domain = "", .op = "DequantizeLinear", .flags = QS_OP_DEQUANT, .infer = dq_infer, .forward = dq_forward },
    { .op = NULL },
};
