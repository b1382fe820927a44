/* Uniform affine / symmetric quantizers. The fast path clamps x/s to the grid before rounding
 * (rounding is monotonic and the bounds are integers, so clamp∘round = round∘clamp when z is an
 * integer) and rounds with the 1.5·2^23 trick, which the compiler vectorises and which rounds half
 * to even exactly like nearbyintf for |v| < 2^22 — the grid is at most 16 bits, far inside that. */
#include "quant/quantizer.h"

#include <string.h>

#include "ops/kernels.h"
#include "ops/opsutil.h"

qs_grid qs_grid_make(int bits, int is_signed)
{
    qs_grid g = { .bits = bits, .is_signed = is_signed };
    if (is_signed) {
        g.qmin = -ldexpf(1.f, bits - 1);
        g.qmax = ldexpf(1.f, bits - 1) - 1;
    } else {
        g.qmin = 0;
        g.qmax = ldexpf(1.f, bits) - 1;
    }
    return g;
}

static float pow2_ceil(float s)
{
    int ex;
    float m = frexpf(s, &ex);   /* s = m · 2^ex, m in [0.5, 1) */
    return m == 0.5f ? s : ldexpf(1.f, ex);
}

void qs_qparams_from_range(qs_grid g, float lo, float hi, int symmetric, int pow2, float *scale,
                           int32_t *zero_point)
{
    if (!(lo <= 0)) lo = 0;       /* also catches NaN */
    if (!(hi >= 0)) hi = 0;
    float s;
    int32_t z = 0;
    if (symmetric) {
        float m = g.is_signed ? fmaxf(-lo, hi) : hi;
        s = m / g.qmax;
        if (g.is_signed == 0)
            z = 0;
    } else {
        s = (hi - lo) / (g.qmax - g.qmin);
    }
    if (!(s > 0) || !isfinite(s))
        s = 1.f;
    if (pow2)
        s = pow2_ceil(s);
    if (!symmetric) {
        float zf = qs_round_even(g.qmin - lo / s);
        z = (int32_t)(zf < g.qmin ? g.qmin : zf > g.qmax ? g.qmax : zf);
    }
    *scale = s;
    *zero_point = z;
}

void qs_qparams_range(qs_grid g, float scale, float zero_point, float *lo, float *hi)
{
    *lo = (g.qmin - zero_point) * scale;
    *hi = (g.qmax - zero_point) * scale;
}

/* Splits a tensor into [outer, channels, inner] around axis (axis < 0: one channel). */
static void split_axis(const qs_tensor *x, int axis, int64_t *outer, int64_t *ch, int64_t *inner)
{
    *outer = 1, *ch = 1, *inner = 1;
    if (axis < 0) {
        *inner = qs_numel(x);
        return;
    }
    for (int d = 0; d < x->ndim; d++) {
        if (d < axis) *outer *= x->shape[d];
        else if (d == axis) *ch = x->shape[d];
        else *inner *= x->shape[d];
    }
}

void qs_fake_quant_ref(const qs_tensor *x, qs_tensor *y, int axis, const float *s, const float *z, qs_grid g)
{
    int64_t outer, ch, inner;
    split_axis(x, axis, &outer, &ch, &inner);
    const float *xp = qs_f32(x);
    float *yp = qs_f32(y);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < ch; c++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t k = (o * ch + c) * inner + i;
                yp[k] = qs_fake_quant1(xp[k], s[c], z[c], g);
            }
}

/* qs_fake_quant1's arithmetic element by element (so bit-identical to it), for a fractional offset
 * (QAT's learned ones) or a grid wider than 2^22 (int32 biases), where the rounding trick below no
 * longer holds. Selects only, so it is one vector loop: the AVX2 / AVX-512 copies round with one
 * instruction where the baseline build calls nearbyintf per element (a QAT step's activation
 * quantizers all come here). */
QS_HOT static void fq_span_exact(const float *x, float *y, int64_t n, float s, float z, qs_grid g)
{
    QS_VFOR(i, n, float q = nearbyintf(x[i] / s) + z; q = q < g.qmin ? g.qmin : q; q = q > g.qmax ? g.qmax : q;
            y[i] = (q - z) * s);
}

void qs_fake_quant_span(const float *x, float *y, int64_t n, float s, float z, qs_grid g)
{
    if (z != nearbyintf(z) || g.qmax - g.qmin > 4194304.f) {
        fq_span_exact(x, y, n, s, z, g);
        return;
    }
    const float lo = g.qmin - z, hi = g.qmax - z, magic = 12582912.f;   /* 1.5 · 2^23 */
    /* the compiler keeps (v + magic) − magic since -ffast-math is off */
    QS_VFOR(i, n, float v = x[i] / s; v = v < lo ? lo : v; v = v > hi ? hi : v; y[i] = ((v + magic) - magic) * s);
}

void qs_fake_quant(const qs_tensor *x, qs_tensor *y, int axis, const float *s, const float *z, qs_grid g)
{
    int64_t outer, ch, inner;
    split_axis(x, axis, &outer, &ch, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < ch; c++) {
            int64_t k = (o * ch + c) * inner;
            qs_fake_quant_span(qs_f32(x) + k, qs_f32(y) + k, inner, s[c], z[c], g);
        }
}

int qs_quantize_tensor(const qs_tensor *x, qs_tensor *q, int axis, const float *s, const int32_t *z, qs_grid g,
                       qs_err *e)
{
    if (x->dtype != QS_F32 || !qs_shape_eq(x, q))
        return qs_error(e, QS_EINVAL, "quantize: shapes or types differ");
    int64_t outer, ch, inner;
    split_axis(x, axis, &outer, &ch, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < ch; c++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t k = (o * ch + c) * inner + i;
                float v = qs_quantize1(qs_f32(x)[k], s[c], (float)z[c], g);
                switch (q->dtype) {
                case QS_I8: case QS_I4: qs_i8(q)[k] = (int8_t)v; break;
                case QS_U8: case QS_U4: qs_u8(q)[k] = (uint8_t)v; break;
                case QS_I16: ((int16_t *)q->data)[k] = (int16_t)v; break;
                case QS_U16: ((uint16_t *)q->data)[k] = (uint16_t)v; break;
                case QS_I32: qs_i32(q)[k] = (int32_t)v; break;
                default: return qs_error(e, QS_EUNSUPPORTED, "quantize: no %s target", qs_dtype_name(q->dtype));
                }
            }
    return 0;
}

double qs_quant_sse(const float *x, int64_t n, float s, float z, qs_grid g)
{
    double sse = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)qs_fake_quant1(x[i], s, z, g) - x[i];
        sse += d * d;
    }
    return sse;
}
