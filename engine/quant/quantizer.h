/* Uniform quantizers (paper §2.2): a grid [qmin, qmax] of integers, a scale s and a zero point z per
 * tensor or per channel. Quantize is exactly ONNX QuantizeLinear — q = clamp(round_half_even(x / s)
 * + z, qmin, qmax) in float32 — and dequantize is DequantizeLinear, (q − z)·s, so the simulation and
 * ONNX Runtime's execution of an exported model agree bit for bit.
 *
 *   qs_grid g = qs_grid_make(8, 1);                       // int8: [-128, 127]
 *   float s; int32_t z;
 *   qs_qparams_from_range(g, -1.f, 3.f, 0, &s, &z);        // asymmetric
 *   float y = qs_fake_quant1(x, s, (float)z, g);
 *
 * The vectorised tensor versions (qs_fake_quant) are checked against the scalar reference
 * (qs_fake_quant_ref) in tests/test-quantizer.c. */
#ifndef QS_QUANTIZER_H
#define QS_QUANTIZER_H

#include <math.h>
#include <stdint.h>

#include "tensor.h"

typedef struct qs_grid {
    int bits;        /* 2..16 */
    int is_signed;   /* int grid [-2^(b-1), 2^(b-1)-1] or uint grid [0, 2^b - 1] */
    float qmin, qmax;
} qs_grid;

qs_grid qs_grid_make(int bits, int is_signed);

/* Scale and zero point from a real range [lo, hi]. The range is first widened to contain 0 (so
 * that 0 is exactly representable, paper §2.2). symmetric: z = 0 (signed grid) and s = max(|lo|,
 * |hi|) / qmax; on an unsigned grid symmetric means z = 0 and s = hi / qmax (all-positive data).
 * Asymmetric: s = (hi − lo) / (qmax − qmin), z = clamp(round(qmin − lo / s)). pow2 rounds s up to
 * a power of two. A degenerate range (hi == lo == 0) gets s = 1 so nothing divides by zero. */
void qs_qparams_from_range(qs_grid g, float lo, float hi, int symmetric, int pow2, float *scale,
                           int32_t *zero_point);

/* The real range a grid covers: [(qmin − z)·s, (qmax − z)·s]. */
void qs_qparams_range(qs_grid g, float scale, float zero_point, float *lo, float *hi);

/* round half to even, as QuantizeLinear (nearbyintf in the default rounding mode) */
static inline float qs_round_even(float v) { return nearbyintf(v); }

static inline float qs_quantize1(float x, float s, float z, qs_grid g)
{
    float q = qs_round_even(x / s) + z;
    return q < g.qmin ? g.qmin : q > g.qmax ? g.qmax : q;
}

static inline float qs_fake_quant1(float x, float s, float z, qs_grid g)
{
    return (qs_quantize1(x, s, z, g) - z) * s;
}

/* Fake-quantizes x into y (may alias) with per-tensor (axis < 0, one scale) or per-channel scales
 * along axis. z holds zero points (integer-valued for export; QAT may learn fractional offsets). */
void qs_fake_quant_ref(const qs_tensor *x, qs_tensor *y, int axis, const float *s, const float *z, qs_grid g);
void qs_fake_quant(const qs_tensor *x, qs_tensor *y, int axis, const float *s, const float *z, qs_grid g);
/* qs_fake_quant's kernel on n contiguous elements of one channel (x may be y): for callers that
 * split a tensor across threads (the FakeQuant op) */
void qs_fake_quant_span(const float *x, float *y, int64_t n, float s, float z, qs_grid g);

/* Quantizes x into integers (q: int8/uint8/int16/int32 tensor of x's shape, or uint8/int8 for 4-bit). */
int qs_quantize_tensor(const qs_tensor *x, qs_tensor *q, int axis, const float *s, const int32_t *z, qs_grid g,
                       qs_err *e);

/* Sum of squared errors between x and its fake-quantized version, per channel or per tensor —
 * the quantity MSE range setting minimises. */
double qs_quant_sse(const float *x, int64_t n, float s, float z, qs_grid g);

#endif
