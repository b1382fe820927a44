/* GlobalAveragePool and the squeeze-excitation Mul in the channel-blocked layout (blocked.h).
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

#include <string.h>

#include "ops/conv_impl.h"   /* conv_dnnl_block: the block oneDNN's convolutions use */
#include "ops/kernels.h"

static int64_t padded(int64_t C, int64_t B) { return (C + B - 1) / B * B; }

/* where element (n, c, i) of a [N, C, hw] tensor is, blocked (in blocks of B) or plain */
static inline int64_t at(int blocked, int64_t C, int64_t B, int64_t hw, int64_t n, int64_t c, int64_t i)
{
    return blocked ? (n * padded(C, B) + c - c % B) * hw + i * B + c % B : (n * C + c) * hw + i;
}

static int block_of(const qs_kctx *c)
{
    return c->training || !conv_dnnl_blocked_enabled() ? 0 : conv_dnnl_block();
}

static int is_f32_4d(const qs_tensor *t) { return t && t->dtype == QS_F32 && t->ndim == 4; }

/* ---- GlobalAveragePool ------------------------------------------------------------------------------- */

int qs_blocked_gap_hook(qs_kctx *c)
{
    if (strcmp(c->node->op, "GlobalAveragePool") || c->nin < 1 || !is_f32_4d(c->in[0]) || c->nout != 1)
        return 0;
    return block_of(c);
}

typedef struct {
    const float *x;
    float *y;
    int64_t C, B, hw;
    int xb, yb;
} gap_job;

/* items (n, channel block): the block's sums lane by lane, in double (a plane has up to 12544
 * elements at 112x112), then the means, zeros in the padding when Y is blocked */
QS_HOT static void gap_range(void *arg, int64_t t0, int64_t t1, int worker)
{
    (void)worker;
    const gap_job *j = arg;
    const int64_t B = j->B, C = j->C, hw = j->hw, cb = padded(C, B) / B;
    for (int64_t t = t0; t < t1; t++) {
        int64_t n = t / cb, c0 = t % cb * B;
        double acc[16] = { 0 };
        if (j->xb) {
            const float *x = j->x + (n * padded(C, B) + c0) * hw;
            for (int64_t i = 0; i < hw; i++)
                for (int64_t l = 0; l < B; l++)
                    acc[l] += x[i * B + l];
        } else {
            for (int64_t l = 0; l < B && c0 + l < C; l++) {
                const float *x = j->x + (n * C + c0 + l) * hw;
                for (int64_t i = 0; i < hw; i++)
                    acc[l] += x[i];
            }
        }
        for (int64_t l = 0; l < B; l++) {
            int64_t ch = c0 + l;
            if (ch < C)
                j->y[j->yb ? n * padded(C, B) + ch : n * C + ch] = (float)(acc[l] / (double)hw);
            else if (j->yb)
                j->y[n * padded(C, B) + ch] = 0.f;
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
    int64_t items = X->shape[0] * (padded(j.C, B) / B), work = j.hw * B;
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

int qs_blocked_gate_hook(qs_kctx *c) { return gate_big(c) >= 0 ? block_of(c) : 0; }

int qs_blocked_gate_input(qs_kctx *c, int k)
{
    (void)c;
    return k == 0 || k == 1;
}

typedef struct {
    const float *x, *s;
    float *y;
    int64_t C, B, hw;
    int xb, sb, yb, s_per_item;
} gate_job;

/* items (n, channel block): the block's gates (zero in the padding), then x·s */
QS_HOT static void gate_range(void *arg, int64_t t0, int64_t t1, int worker)
{
    (void)worker;
    const gate_job *j = arg;
    const int64_t B = j->B, C = j->C, hw = j->hw, cp = padded(C, B), cb = cp / B;
    for (int64_t t = t0; t < t1; t++) {
        int64_t n = t / cb, c0 = t % cb * B, sn = j->s_per_item ? n : 0;
        float s[16] = { 0 };
        for (int64_t l = 0; l < B && c0 + l < C; l++)
            s[l] = j->s[j->sb ? sn * cp + c0 + l : sn * C + c0 + l];
        if (j->xb && j->yb) {   /* the case that matters: lane by lane, a vector per pixel */
            const float *x = j->x + (n * cp + c0) * hw;
            float *y = j->y + (n * cp + c0) * hw;
            for (int64_t i = 0; i < hw; i++)
                for (int64_t l = 0; l < B; l++)
                    y[i * B + l] = x[i * B + l] * s[l];
            continue;
        }
        for (int64_t l = 0; l < B; l++) {
            int64_t ch = c0 + l;
            if (ch >= C && !j->yb)
                break;
            for (int64_t i = 0; i < hw; i++)
                j->y[at(j->yb, C, B, hw, n, ch, i)] = ch < C ? j->x[at(j->xb, C, B, hw, n, ch, i)] * s[l] : 0.f;
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
    int64_t items = x->shape[0] * (padded(j.C, B) / B), work = j.hw * B;
    qs_threadpool_for(c->pool, c->nthreads, items, work >= 16384 ? 1 : 16384 / (work ? work : 1), gate_range, &j);
    return 0;
}
