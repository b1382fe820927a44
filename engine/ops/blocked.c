/* MaxPool, GlobalAveragePool and the squeeze-excitation Mul in the channel-blocked layout (blocked.h).
 *
 * Why MaxPool: a ResNet's stem (7x7 Conv, MaxPool) otherwise reorders the Conv's Y out of the layout
 * and the first block's Conv its X back in.
 *
 * Why: in an EfficientNet or MobileNetV3 block the depthwise Conv's output is read by a
 * GlobalAveragePool and by the Mul that scales it by the block's gate, and that Mul's output by the
 * projecting 1x1 Conv. With those two ops in NCHW only, the depthwise Conv reordered its Y out of the
 * blocked layout and the 1x1 Conv its X back in, on every block.
 *
 * The layout (exec_layout.c, oneDNN's nChw16c / nChw8c): element (n, c, i) of a [N, C, H·W] tensor
 * sits at (n·Cp + c − c mod B)·HW + i·B + c mod B, with Cp = C rounded up to whole blocks of B; for
 * [N, C, 1, 1] that is n·Cp + c. The padding channels are zero and these kernels keep them so.
 * Any of the inputs and the output may be blocked or plain (the plan decides each value alone). */
#include "ops/blocked.h"

#include <math.h>
#include <string.h>

#include "ops/conv_impl.h"   /* conv_dnnl_block: the block oneDNN's convolutions use */
#include "ops/kernels.h"

/* A block's lanes as one vector (GCC's vector types: each target clone gets its own instructions); the
 * kernels below take a whole block at a time through them, for blocks of 16 and of 8. */
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));


/* where element (n, c, i) of a [N, C, hw] tensor is, blocked (in blocks of B, cp = C padded) or plain */
static inline int64_t at(int blocked, int64_t C, int64_t cp, int64_t B, int64_t hw, int64_t n, int64_t c, int64_t i)
{
    return blocked ? (n * cp + c - c % B) * hw + i * B + c % B : (n * C + c) * hw + i;
}

/* the block for C channels, or 0 (qs_block_pads_well, as for convolutions) */
static int block_of(const qs_kctx *c, int64_t C)
{
    int B = c->training || !conv_dnnl_blocked_enabled() ? 0 : conv_dnnl_block();
    return B && qs_block_pads_well(C, B) ? B : 0;
}

static int is_f32_4d(const qs_tensor *t) { return t && t->dtype == QS_F32 && t->ndim == 4; }

/* ---- MaxPool ------------------------------------------------------------------------------------------- */

int qs_blocked_maxpool_hook(qs_kctx *c, const qs_conv_geom *g)
{
    if (strcmp(c->node->op, "MaxPool") || c->nin < 1 || !is_f32_4d(c->in[0]) || c->nout != 1 || g->nd != 2 ||
        g->dil[1] != 1 || g->dil[2] != 1)
        return 0;
    return block_of(c, c->in[0]->shape[1]);
}

typedef struct {
    const float *x;
    float *y;
    const qs_conv_geom *g;
    int64_t C, B;
    int xb, yb;
} maxpool_job;

/* The lane-wise maximum over a window's taps, a whole block at a time (GCC's vectorizer leaves a
 * 16-lane max with NaN-exact semantics, v > m ? v : m, as 16 scalar ones) */

#define WINDOW_MAX(NAME, VF, VI, LANES)                                                                        \
    static inline void NAME(const float *x, int64_t W, int64_t hlo, int64_t hhi, int64_t wlo, int64_t whi,     \
                            float *y)                                                                          \
    {                                                                                                          \
        VF m, v;                                                                                               \
        for (int l = 0; l < LANES; l++)                                                                        \
            m[l] = -INFINITY;                                                                                  \
        for (int64_t h = hlo; h < hhi; h++)                                                                    \
            for (int64_t w = wlo; w < whi; w++) {                                                              \
                memcpy(&v, x + (h * W + w) * LANES, sizeof v);                                                 \
                VI gt = v > m;   /* lanes: -1 where v wins */                                                  \
                m = (VF)(((VI)v & gt) | ((VI)m & ~gt));                                                        \
            }                                                                                                  \
        memcpy(y, &m, sizeof m);                                                                               \
    }
WINDOW_MAX(window_max16, v16f, v16i, 16)
WINDOW_MAX(window_max8, v8f, v8i, 8)

/* items (n, channel block, output row): each output pixel the lane-wise maximum over its window's
 * taps inside the input (padding is never the maximum), zeros in the padding channels */
QS_HOT static void maxpool_range(void *arg, int64_t t0, int64_t t1, int worker)
{
    (void)worker;
    const maxpool_job *j = arg;
    const qs_conv_geom *g = j->g;
    const int64_t B = j->B, C = j->C, cp = qs_block_padded(C, B), cb = cp / B, H = g->in[1], W = g->in[2];
    const int64_t OH = g->out[1], OW = g->out[2], xhw = H * W, yhw = OH * OW;
    for (int64_t t = t0; t < t1; t++) {
        int64_t oh = t % OH, n = t / OH / cb, c0 = t / OH % cb * B;
        int64_t h0 = oh * g->stride[1] - g->pad[1], hlo = h0 < 0 ? 0 : h0, hhi = h0 + g->k[1] > H ? H : h0 + g->k[1];
        for (int64_t ow = 0; ow < OW; ow++) {
            int64_t w0 = ow * g->stride[2] - g->pad[2], wlo = w0 < 0 ? 0 : w0;
            int64_t whi = w0 + g->k[2] > W ? W : w0 + g->k[2];
            float m[16];
            if (j->xb) {
                const float *x = j->x + (n * cp + c0) * xhw;
                if (B == 16)
                    window_max16(x, W, hlo, hhi, wlo, whi, m);
                else
                    window_max8(x, W, hlo, hhi, wlo, whi, m);
            } else {
                for (int64_t l = 0; l < B; l++) {
                    m[l] = c0 + l < C ? -INFINITY : 0.f;
                    for (int64_t h = hlo; h < hhi && c0 + l < C; h++)
                        for (int64_t w = wlo; w < whi; w++) {
                            float v = j->x[(n * C + c0 + l) * xhw + h * W + w];
                            m[l] = v > m[l] ? v : m[l];
                        }
                }
            }
            if (j->yb) {
                float *y = j->y + (n * cp + c0) * yhw + (oh * OW + ow) * B;
                for (int64_t l = 0; l < B; l++)
                    y[l] = c0 + l < C ? m[l] : 0.f;
            } else {
                for (int64_t l = 0; l < B && c0 + l < C; l++)
                    j->y[(n * C + c0 + l) * yhw + oh * OW + ow] = m[l];
            }
        }
    }
}

int qs_blocked_maxpool(qs_kctx *c, const qs_conv_geom *g)
{
    const qs_tensor *X = c->in[0];
    int64_t B = conv_dnnl_block();
    if (!is_f32_4d(X) || B < 1 || B > 16 || g->nd != 2)
        return qs_op_error(c, QS_EINVAL, "planned for blocked activations that this node cannot take");
    maxpool_job j = { qs_f32(X), qs_f32(c->out[0]), g, X->shape[1], B, !!(c->layout & QS_LAYOUT_X),
                      !!(c->layout & QS_LAYOUT_Y) };
    int64_t items = X->shape[0] * (qs_block_padded(j.C, B) / B) * g->out[1];
    int64_t work = g->out[2] * g->k[1] * g->k[2] * B;
    qs_threadpool_for(c->pool, c->nthreads, items, work >= 16384 ? 1 : 16384 / (work ? work : 1), maxpool_range,
                      &j);
    return 0;
}

/* ---- GlobalAveragePool ------------------------------------------------------------------------------- */

int qs_blocked_gap_hook(qs_kctx *c)
{
    if (strcmp(c->node->op, "GlobalAveragePool") || c->nin < 1 || !is_f32_4d(c->in[0]) || c->nout != 1)
        return 0;
    return block_of(c, c->in[0]->shape[1]);
}

typedef struct {
    const float *x;
    float *y;
    int64_t C, B, hw;
    int xb, yb;
} gap_job;

/* out[l] = Σ_i x[i·LANES + l] over a blocked plane of hw pixels: four running vector sums (a single
 * one would be a chain of dependent adds), added pairwise at the end */
#define BLOCK_SUM(NAME, VF, LANES)                                                                            \
    static inline void NAME(const float *x, int64_t hw, float *out)                                          \
    {                                                                                                         \
        VF a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 }, v0, v1, v2, v3;                                   \
        int64_t i = 0;                                                                                        \
        for (; i + 4 <= hw; i += 4) {                                                                         \
            memcpy(&v0, x + i * LANES, sizeof v0);                                                            \
            memcpy(&v1, x + (i + 1) * LANES, sizeof v1);                                                      \
            memcpy(&v2, x + (i + 2) * LANES, sizeof v2);                                                      \
            memcpy(&v3, x + (i + 3) * LANES, sizeof v3);                                                      \
            a0 += v0, a1 += v1, a2 += v2, a3 += v3;                                                           \
        }                                                                                                     \
        for (; i < hw; i++) {                                                                                 \
            memcpy(&v0, x + i * LANES, sizeof v0);                                                            \
            a0 += v0;                                                                                         \
        }                                                                                                     \
        a0 = (a0 + a1) + (a2 + a3);                                                                           \
        memcpy(out, &a0, sizeof a0);                                                                          \
    }
BLOCK_SUM(block_sum16, v16f, 16)
BLOCK_SUM(block_sum8, v8f, 8)

/* items (n, channel block): the block's sums lane by lane, then the means, zeros in the padding when
 * Y is blocked */
QS_HOT static void gap_range(void *arg, int64_t t0, int64_t t1, int worker)
{
    (void)worker;
    const gap_job *j = arg;
    const int64_t B = j->B, C = j->C, hw = j->hw, cp = qs_block_padded(C, B), cb = cp / B;
    for (int64_t t = t0; t < t1; t++) {
        int64_t n = t / cb, c0 = t % cb * B;
        float acc[16] = { 0 };
        if (j->xb && B == 16)
            block_sum16(j->x + (n * cp + c0) * hw, hw, acc);
        else if (j->xb)
            block_sum8(j->x + (n * cp + c0) * hw, hw, acc);
        else
            for (int64_t l = 0; l < B && c0 + l < C; l++) {
                const float *x = j->x + (n * C + c0 + l) * hw;
                for (int64_t i = 0; i < hw; i++)
                    acc[l] += x[i];
            }
        for (int64_t l = 0; l < B; l++) {
            int64_t ch = c0 + l;
            if (ch < C)
                j->y[j->yb ? n * cp + ch : n * C + ch] = acc[l] / (float)hw;
            else if (j->yb)
                j->y[n * cp + ch] = 0.f;
        }
    }
}

int qs_blocked_gap(qs_kctx *c)
{
    const qs_tensor *X = c->in[0];
    int64_t B = conv_dnnl_block();
    if (!is_f32_4d(X) || B < 1 || B > 16)
        return qs_op_error(c, QS_EINVAL, "planned for blocked activations that this node cannot take");
    gap_job j = { qs_f32(X), qs_f32(c->out[0]), X->shape[1], B, X->shape[2] * X->shape[3],
                  !!(c->layout & QS_LAYOUT_X), !!(c->layout & QS_LAYOUT_Y) };
    int64_t items = X->shape[0] * (qs_block_padded(j.C, B) / B), work = j.hw * B;
    qs_threadpool_for(c->pool, c->nthreads, items, work >= 16384 ? 1 : 16384 / (work ? work : 1), gap_range, &j);
    return 0;
}

/* ---- the gate: Mul of [N, C, H, W] by [N or 1, C, 1, 1] ---------------------------------------------- */

/* which operand is the tensor (the other is the gate), or -1 when the node is no such Mul */
static int gate_big(const qs_kctx *c)
{
    if (c->nin != 2 || c->nout != 1 || !is_f32_4d(c->out[0]))
        return -1;
    const qs_tensor *y = c->out[0];
    for (int k = 0; k < 2; k++) {
        const qs_tensor *a = c->in[k], *s = c->in[1 - k];
        if (is_f32_4d(a) && is_f32_4d(s) && qs_shape_eq(a, y) && (s->shape[0] == 1 || s->shape[0] == y->shape[0]) &&
            s->shape[1] == y->shape[1] && s->shape[2] == 1 && s->shape[3] == 1)
            return k;
    }
    return -1;
}

int qs_blocked_gate_hook(qs_kctx *c, unsigned *inputs)
{
    *inputs = 3;   /* the tensor and the gate, in either order */
    return gate_big(c) >= 0 ? block_of(c, c->out[0]->shape[1]) : 0;
}

typedef struct {
    const float *x, *s;
    float *y;
    int64_t C, B, hw;
    int xb, sb, yb, s_per_item;
} gate_job;

/* y[i·LANES + l] = x[i·LANES + l] · s[l] over a blocked plane of hw pixels */
#define BLOCK_SCALE(NAME, VF, LANES)                                                                          \
    static inline void NAME(const float *x, const float *s, int64_t hw, float *y)                            \
    {                                                                                                         \
        VF g, v;                                                                                              \
        memcpy(&g, s, sizeof g);                                                                              \
        for (int64_t i = 0; i < hw; i++) {                                                                    \
            memcpy(&v, x + i * LANES, sizeof v);                                                              \
            v *= g;                                                                                           \
            memcpy(y + i * LANES, &v, sizeof v);                                                              \
        }                                                                                                     \
    }
BLOCK_SCALE(block_scale16, v16f, 16)
BLOCK_SCALE(block_scale8, v8f, 8)

/* items (n, channel block): the block's gates (zero in the padding), then x·s */
QS_HOT static void gate_range(void *arg, int64_t t0, int64_t t1, int worker)
{
    (void)worker;
    const gate_job *j = arg;
    const int64_t B = j->B, C = j->C, hw = j->hw, cp = qs_block_padded(C, B), cb = cp / B;
    for (int64_t t = t0; t < t1; t++) {
        int64_t n = t / cb, c0 = t % cb * B, sn = j->s_per_item ? n : 0;
        float s[16] = { 0 };
        for (int64_t l = 0; l < B && c0 + l < C; l++)
            s[l] = j->s[j->sb ? sn * cp + c0 + l : sn * C + c0 + l];
        if (j->xb && j->yb) {   /* the case that matters: a vector per pixel */
            if (B == 16)   /* (calls, not a pointer: each inlines into this target clone) */
                block_scale16(j->x + (n * cp + c0) * hw, s, hw, j->y + (n * cp + c0) * hw);
            else
                block_scale8(j->x + (n * cp + c0) * hw, s, hw, j->y + (n * cp + c0) * hw);
            continue;
        }
        for (int64_t l = 0; l < B; l++) {
            int64_t ch = c0 + l;
            if (ch >= C && !j->yb)
                break;
            for (int64_t i = 0; i < hw; i++)
                j->y[at(j->yb, C, cp, B, hw, n, ch, i)] = ch < C ? j->x[at(j->xb, C, cp, B, hw, n, ch, i)] * s[l] : 0.f;
        }
    }
}

int qs_blocked_gate(qs_kctx *c)
{
    int k = gate_big(c);
    int64_t B = conv_dnnl_block();
    if (k < 0 || B < 1 || B > 16)
        return qs_op_error(c, QS_EINVAL, "planned for blocked activations that this node cannot take");
    const qs_tensor *x = c->in[k], *s = c->in[1 - k];
    int xbit = k ? QS_LAYOUT_X1 : QS_LAYOUT_X, sbit = k ? QS_LAYOUT_X : QS_LAYOUT_X1;
    gate_job j = { qs_f32(x), qs_f32(s), qs_f32(c->out[0]), x->shape[1], B, x->shape[2] * x->shape[3],
                   !!(c->layout & xbit), !!(c->layout & sbit), !!(c->layout & QS_LAYOUT_Y),
                   s->shape[0] > 1 };
    int64_t items = x->shape[0] * (qs_block_padded(j.C, B) / B), work = j.hw * B;
    qs_threadpool_for(c->pool, c->nthreads, items, work >= 16384 ? 1 : 16384 / (work ? work : 1), gate_range, &j);
    return 0;
}
