/* TargetMac (domain "quantd"): a Conv, Gemm or MatMul computed the way ONNX Runtime's x86 integer
 * kernels compute its QDQ form (QLinearConv, QGemm, MatMulInteger…), so that quant/target.c can
 * measure what a deployed model loses to that arithmetic. quant/target.h has the background.
 *
 * Inputs: x (float32 on the input quantizer's grid), w (float32 on the weight grid), b (float32 or
 * omitted), x_scale, x_zero (scalars), w_scale (scalar or one per output channel). Attributes: the
 * layer's own (strides, pads, dilations, group, auto_pad; transB) plus
 *   layer     "Conv", "Gemm" (transA 0, alpha = beta = 1) or "MatMul" (w: [K, N])
 *   x_offset  added to the activation codes before the products: 0 for uint8 activations, 128 for
 *             int8 ones (MLAS flips their sign bit to run them on the u8·s8 kernel)
 *   saturate  1: pairs of products are added into a saturating int16 (see below); 0: exact.
 *
 * The arithmetic, after MLAS's AVX2/AVX-512BW u8s8 kernels (VPMADDUBSW then VPMADDWD): the codes
 * a = round(x / x_scale) + x_zero + x_offset (0..255) and w = round(w / w_scale) (int8) are
 * multiplied along K in adjacent pairs, each pair's sum a₂ⱼ·w₂ⱼ + a₂ⱼ₊₁·w₂ⱼ₊₁ clamped to
 * [-32768, 32767] (Intel SDM, PMADDUBSW: "SaturateToSignedWord"), the pairs summed in int32, and
 * the zero point taken off afterwards with the exact Σw:
 *   acc = Σⱼ sat16(pair j) − (x_zero + x_offset)·Σw,   y = x_scale·w_scale·acc + b.
 * K runs over the kernel taps with the input channels innermost (ORT's QLinearConv works on NHWC
 * data), so a pair is two channels at one tap. A depthwise Conv (one input channel per group) never
 * saturates: MLAS's depthwise kernel widens to 16 bits before multiplying. */
#include "ops/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct tm_p {
    int kind;             /* 0 Conv, 1 Gemm, 2 MatMul */
    int64_t rows, K, N;   /* Gemm / MatMul: [rows, K] × [K, N] */
    int64_t batch, C, M, group, Cg, Mg, kvol, yvol;
    qs_conv_geom g;
} tm_p;

static int tm_params(qs_kctx *c, tm_p *p)
{
    const char *layer = qs_node_string(c->node, "layer", "");
    const qs_tensor *x = c->in[0], *w = c->nin > 1 ? c->in[1] : NULL;
    memset(p, 0, sizeof *p);
    if (c->nin < 6 || !x || !w || !c->in[3] || !c->in[4] || !c->in[5])
        return qs_op_error(c, QS_EINVAL, "needs x, w, b, x_scale, x_zero and w_scale");
    if (x->dtype != QS_F32 || w->dtype != QS_F32)
        return qs_op_error(c, QS_EINVAL, "x and w must be float32");
    if (!strcmp(layer, "Conv")) {
        if (x->ndim < 3 || x->ndim > 5 || w->ndim != x->ndim)
            return qs_op_error(c, QS_ESHAPE, "Conv: x and w must be 3-D to 5-D tensors of the same rank");
        p->batch = x->shape[0], p->C = x->shape[1], p->M = w->shape[0], p->Cg = w->shape[1];
        p->group = qs_node_int(c->node, "group", 1);
        if (p->group < 1 || p->C != p->Cg * p->group || p->M % p->group)
            return qs_op_error(c, QS_ESHAPE, "Conv: channels do not match the groups");
        p->Mg = p->M / p->group;
        int rc = qs_conv_geom_init(c, x->ndim - 2, x->shape + 2, w->shape + 2, 0, 1, &p->g);
        if (rc < 0)
            return rc;
        p->kvol = qs_geom_kvol(&p->g), p->yvol = qs_geom_outvol(&p->g);
        p->K = p->kvol * p->Cg, p->N = p->M;
        return 0;
    }
    p->kind = !strcmp(layer, "Gemm") ? 1 : !strcmp(layer, "MatMul") ? 2 : -1;
    if (p->kind < 0)
        return qs_op_error(c, QS_EINVAL, "layer '%s': expected Conv, Gemm or MatMul", layer);
    if (w->ndim != 2 || (p->kind == 1 && x->ndim != 2) || x->ndim < 1)
        return qs_op_error(c, QS_ESHAPE, "%s: w must be 2-D (and x too for Gemm)", layer);
    int tb = p->kind == 1 && qs_node_int(c->node, "transB", 0);
    p->K = tb ? w->shape[1] : w->shape[0];
    p->N = tb ? w->shape[0] : w->shape[1];
    if (x->shape[x->ndim - 1] != p->K)
        return qs_op_error(c, QS_ESHAPE, "%s: x has %lld columns, w %lld rows", layer,
                           (long long)x->shape[x->ndim - 1], (long long)p->K);
    p->rows = qs_numel(x) / (p->K ? p->K : 1);
    return 0;
}

QS_OP_PARAMS(tm, tm_p, tm_params)

static int tm_infer(qs_kctx *c)
{
    tm_p p;
    int rc = tm_params(c, &p);
    if (rc < 0)
        return rc;
    int64_t shape[QS_MAX_DIMS];
    const qs_tensor *x = c->in[0];
    memcpy(shape, x->shape, x->ndim * sizeof *shape);
    if (p.kind == 0) {
        shape[1] = p.M;
        for (int i = 0; i < p.g.nd; i++)
            shape[2 + i] = p.g.out[3 - p.g.nd + i];
    } else {
        shape[x->ndim - 1] = p.N;
    }
    qs_set_shape(c->out[0], QS_F32, x->ndim, shape);
    return 0;
}

/* Σ over K of a·w, adjacent pairs first added into a saturating int16 (VPMADDUBSW), then the
 * pairs' sums into int32 (VPMADDWD with ones, VPADDD). */
QS_HOT static int32_t dot_pairs(const int16_t *a, const int16_t *w, int64_t K, int saturate)
{
    int32_t acc = 0;
    int64_t k = 0;
    for (; k + 1 < K; k += 2) {
        int32_t s = a[k] * w[k] + a[k + 1] * w[k + 1];
        if (saturate)
            s = s < -32768 ? -32768 : s > 32767 ? 32767 : s;
        acc += s;
    }
    if (k < K)   /* MLAS pads K with zeros: the last product has no partner */
        acc += a[k] * w[k];
    return acc;
}

static int16_t code(float v, float s, float z) { return (int16_t)(nearbyintf(v / s) + z); }

static int tm_forward(qs_kctx *c)
{
    tm_p p;
    int rc = tm_get(c, &p);
    if (rc < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]), *b = c->in[2] ? qs_f32(c->in[2]) : NULL;
    const float xs = qs_f32(c->in[3])[0], xz = qs_f32(c->in[4])[0], *ws = qs_f32(c->in[5]);
    const int64_t nws = qs_numel(c->in[5]), off = qs_node_int(c->node, "x_offset", 0);
    const float za = xz + (float)off;   /* the zero point as the kernel sees it */
    int saturate = (int)qs_node_int(c->node, "saturate", 1);
    if (p.kind == 0 && p.Cg == 1 && p.group > 1)
        saturate = 0;   /* depthwise: widened to 16 bits first */
    int tb = p.kind == 1 && qs_node_int(c->node, "transB", 0);
    int64_t arows = p.kind == 0 ? p.yvol : p.rows;
    /* wq: [N][K] weight codes in the kernel's K order; a: [arows][K] activation codes; wsum: Σw */
    int16_t *wq = malloc((size_t)(p.N * p.K + 1) * sizeof *wq), *a = malloc((size_t)(arows * p.K + 1) * sizeof *a);
    int64_t *wsum = calloc((size_t)p.N + 1, sizeof *wsum);
    if (!wq || !a || !wsum) {
        rc = qs_op_error(c, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int64_t m = 0; m < p.N; m++) {
        float s = ws[nws > 1 ? m : 0];
        for (int64_t k = 0; k < p.K; k++) {
            float v;
            if (p.kind == 0)   /* w [M, Cg, taps]; K index = tap·Cg + channel */
                v = w[(m * p.Cg + k % p.Cg) * p.kvol + k / p.Cg];
            else
                v = tb ? w[m * p.K + k] : w[k * p.N + m];
            wq[m * p.K + k] = code(v, s, 0);
            wsum[m] += wq[m * p.K + k];
        }
    }
    float *y = qs_f32(c->out[0]);
    if (p.kind != 0) {
        for (int64_t r = 0; r < p.rows; r++)
            for (int64_t k = 0; k < p.K; k++)
                a[r * p.K + k] = (int16_t)(code(x[r * p.K + k], xs, xz) + off);
        for (int64_t r = 0; r < p.rows; r++)
            for (int64_t m = 0; m < p.N; m++) {
                int32_t acc = dot_pairs(a + r * p.K, wq + m * p.K, p.K, saturate);
                y[r * p.N + m] = (float)((double)xs * ws[nws > 1 ? m : 0] * ((double)acc - za * (double)wsum[m])) +
                                 (b ? b[m] : 0.f);
            }
        goto out;
    }
    const qs_conv_geom *g = &p.g;
    const int64_t xvol = qs_geom_invol(g);
    for (int64_t n = 0; n < p.batch; n++)
        for (int64_t gi = 0; gi < p.group; gi++) {
            /* the group's activation codes, im2col in NHWC order; padding reads the zero point */
            int64_t r = 0;
            for (int64_t o0 = 0; o0 < g->out[0]; o0++)
                for (int64_t o1 = 0; o1 < g->out[1]; o1++)
                    for (int64_t o2 = 0; o2 < g->out[2]; o2++, r++) {
                        int16_t *row = a + r * p.K;
                        int64_t tap = 0;
                        for (int64_t k0 = 0; k0 < g->k[0]; k0++)
                            for (int64_t k1 = 0; k1 < g->k[1]; k1++)
                                for (int64_t k2 = 0; k2 < g->k[2]; k2++, tap++) {
                                    int64_t i0 = o0 * g->stride[0] - g->pad[0] + k0 * g->dil[0];
                                    int64_t i1 = o1 * g->stride[1] - g->pad[1] + k1 * g->dil[1];
                                    int64_t i2 = o2 * g->stride[2] - g->pad[2] + k2 * g->dil[2];
                                    int in = i0 >= 0 && i0 < g->in[0] && i1 >= 0 && i1 < g->in[1] && i2 >= 0 &&
                                             i2 < g->in[2];
                                    int64_t at = (i0 * g->in[1] + i1) * g->in[2] + i2;
                                    for (int64_t ch = 0; ch < p.Cg; ch++) {
                                        const float *xp = x + (n * p.C + gi * p.Cg + ch) * xvol;
                                        row[tap * p.Cg + ch] = in ? (int16_t)(code(xp[at], xs, xz) + off)
                                                                  : (int16_t)za;
                                    }
                                }
                    }
            for (int64_t mm = 0; mm < p.Mg; mm++) {
                int64_t m = gi * p.Mg + mm;
                double sc = (double)xs * ws[nws > 1 ? m : 0], corr = za * (double)wsum[m];
                float *yp = y + (n * p.M + m) * p.yvol;
                for (int64_t q = 0; q < p.yvol; q++)
                    yp[q] = (float)(sc * ((double)dot_pairs(a + q * p.K, wq + m * p.K, p.K, saturate) - corr)) +
                            (b ? b[m] : 0.f);
            }
        }
out:
    free(wq);
    free(a);
    free(wsum);
    return rc;
}

const qs_op_def qs_ops_targetmac[] = {
    { .domain = "quantd", .op = "TargetMac", .infer = tm_infer, .prepare = tm_prepare, .forward = tm_forward },
    { .op = NULL },
};
