/* FakeQuant (domain "quantd"): quantize-dequantize in float, the simulation node QuantSim inserts.
 *
 *   y = (clamp(round_half_even(x / s) + z, qmin, qmax) − z) · s
 *
 * Inputs: x, scale (scalar or [C]), zero_point (same shape, float: integer-valued except while QAT
 * learns the offset). Attributes: qmin, qmax (ints), axis (channel axis when scale has C entries),
 * bypass (1: y = x, gradient 1 — calibration and the debugging flow switch quantizers off this way).
 *
 * Backward (paper §4.1–4.2): straight-through estimator for x (gradient 1 inside the grid, 0 where
 * clamped) and LSQ-style gradients for the range parameters:
 *   ∂y/∂s = round(x/s) − x/s inside,  qmin − z below,  qmax − z above
 *   ∂y/∂z = 0 inside,                −s outside
 * summed per channel. */
#include "ops/kernels.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>

#include "quant/quantizer.h"

static int fq_params(qs_kctx *c, qs_grid *g, int *axis, int64_t *nch)
{
    const qs_tensor *x = c->in[0], *s = c->in[1], *z = c->nin > 2 ? c->in[2] : NULL;
    if (c->nin < 2 || !x || !s)
        return qs_op_error(c, QS_EINVAL, "needs inputs x and scale");
    if (x->dtype != QS_F32 || s->dtype != QS_F32 || (z && z->dtype != QS_F32))
        return qs_op_error(c, QS_EINVAL, "x, scale and zero_point must be float32");
    g->qmin = (float)qs_node_int(c->node, "qmin", -128);
    g->qmax = (float)qs_node_int(c->node, "qmax", 127);
    g->bits = 0;
    g->is_signed = g->qmin < 0;
    if (!(g->qmin < g->qmax))
        return qs_op_error(c, QS_EINVAL, "qmin %g must be below qmax %g", g->qmin, g->qmax);
    *nch = qs_numel(s);
    *axis = -1;
    if (*nch > 1) {
        int64_t a = qs_node_int(c->node, "axis", 0);
        if (a < 0)
            a += x->ndim;
        if (a < 0 || a >= x->ndim || x->shape[a] != *nch)
            return qs_op_error(c, QS_ESHAPE, "%lld scales do not match axis %lld of an input with %d dims",
                               (long long)*nch, (long long)qs_node_int(c->node, "axis", 0), x->ndim);
        *axis = (int)a;
    }
    if (z && qs_numel(z) != *nch)
        return qs_op_error(c, QS_ESHAPE, "zero_point has %lld entries, scale %lld", (long long)qs_numel(z),
                           (long long)*nch);
    return 0;
}

static int fq_infer(qs_kctx *c)
{
    qs_grid g;
    int axis;
    int64_t nch;
    int rc = fq_params(c, &g, &axis, &nch);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

/* zero points as floats, one per channel (zero when the input is omitted) */
static const float *fq_zero(qs_kctx *c, int64_t nch, float *buf)
{
    if (c->nin > 2 && c->in[2])
        return qs_f32(c->in[2]);
    for (int64_t i = 0; i < nch && i < 1; i++)
        buf[i] = 0;
    return buf;
}

/* A tensor as outer × ch × inner (ch the quantizer's channels, 1 per-tensor), each row of inner
 * elements cut into `pieces` (a per-tensor quantizer's one long row) for the thread pool. */
#define FQ_SPAN 16384   /* elements per piece or chunk at least */

typedef struct {
    const float *x;
    float *y;
    const float *s, *z;
    qs_grid g;
    int64_t outer, ch, inner, pieces;
} fq_job;

static void fq_split(const qs_tensor *x, int axis, int64_t nch, fq_job *j)
{
    j->outer = j->ch = j->inner = 1;
    if (axis >= 0) {
        for (int d = 0; d < axis; d++) j->outer *= x->shape[d];
        j->ch = nch;
        for (int d = axis + 1; d < x->ndim; d++) j->inner *= x->shape[d];
    } else {
        j->inner = qs_numel(x);
    }
    int64_t rows = j->outer * j->ch;
    j->pieces = rows == 1 ? (j->inner + FQ_SPAN - 1) / FQ_SPAN : 1;
    if (j->pieces < 1)
        j->pieces = 1;
}

/* units [u0, u1): unit u is piece u % pieces of row u / pieces (row = o · ch + channel) */
static void fq_units(void *arg, int64_t u0, int64_t u1, int worker)
{
    const fq_job *j = arg;
    int64_t piece = (j->inner + j->pieces - 1) / j->pieces;
    for (int64_t u = u0; u < u1; u++) {
        int64_t row = u / j->pieces, b = (u % j->pieces) * piece, e = b + piece < j->inner ? b + piece : j->inner;
        int64_t ci = row % j->ch, k = row * j->inner + b;
        if (b < e)
            qs_fake_quant_span(j->x + k, j->y + k, e - b, j->s[ci], j->z[ci], j->g);
    }
}

static int fq_forward(qs_kctx *c)
{
    qs_grid g;
    int axis;
    int64_t nch;
    int rc = fq_params(c, &g, &axis, &nch);
    if (rc < 0)
        return rc;
    float zbuf[1];
    if (nch > 1 && !(c->nin > 2 && c->in[2]))
        return qs_op_error(c, QS_EINVAL, "per-channel FakeQuant needs a zero_point input");
    if (qs_node_int(c->node, "bypass", 0)) {
        if (c->out[0]->data != c->in[0]->data)
            memcpy(c->out[0]->data, c->in[0]->data, qs_nbytes(c->in[0]));
        return 0;
    }
    const float *s = qs_f32(c->in[1]);
    for (int64_t i = 0; i < nch; i++)
        if (!(s[i] > 0) || !isfinite(s[i]))
            return qs_op_error(c, QS_EINVAL, "scale[%lld] = %g is not a positive number", (long long)i, s[i]);
    fq_job j = { qs_f32(c->in[0]), qs_f32(c->out[0]), s, fq_zero(c, nch, zbuf), g, 1, 1, 1, 0 };
    fq_split(c->in[0], axis, nch, &j);
    /* element by element, so any split gives the same bits */
    int64_t min_units = j.pieces > 1 || j.inner >= FQ_SPAN || j.inner < 1 ? 1 : (FQ_SPAN + j.inner - 1) / j.inner;
    qs_threadpool_for(c->pool, c->nthreads, j.outer * j.ch * j.pieces, min_units, fq_units, &j);
    return 0;
}

/* a when the mask m is all ones, b when it is zero: a select on the bits, so that GCC has no branch
 * to move the floating-point operations around it into (it does with c ? a : b, and then, since a
 * float operation may trap, no longer vectorizes the loop for AVX2, which has no masked operations) */
static inline float fq_sel(uint32_t m, float a, float b)
{
    uint32_t ua, ub;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, sizeof a);
    return a;
}

/* The backward over n elements of one channel: dx (when wanted) and the channel's sums
 * Σ dy·∂y/∂s into *gs and Σ dy over the clamped elements into *gz (∂y/∂z = −s there). The sums run
 * in 16 partial sums in double, element i into lane i mod 16 and the tail into lane 0, added in
 * lane order at the end: the scale's gradient is a sum of terms of both signs that nearly cancel,
 * and float partial sums changed QAT's trajectory measurably. Each 16-element block is one vector
 * loop for the float terms, selects on bits only (as fq_span_exact's clamps, so the AVX2 and
 * AVX-512 copies both vectorize it and round with one instruction), then their widening into the
 * double lanes: the same terms in the same order as an element-by-element loop, so the same bits. */
QS_HOT static void fqb_span(const float *restrict x, const float *restrict dy, float *dx, int64_t n, float s,
                            float z, qs_grid g, double *gs, double *gz)
{
    const float below_s = g.qmin - z, above_s = g.qmax - z;
    double as[16] = { 0 }, az[16] = { 0 };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float keep[16], ts[16], tz[16];   /* dy inside the grid (0 where clamped), dy·∂y/∂s, dy where clamped */
        float *k_out = dx ? dx + i : keep;
        for (int l = 0; l < 16; l++) {
            float v = x[i + l] / s, r = nearbyintf(v), q = r + z, d = dy[i + l];
            uint32_t lo = -(uint32_t)(q < g.qmin), hi = -(uint32_t)(q > g.qmax);
            k_out[l] = fq_sel(lo | hi, 0.f, d);
            ts[l] = d * fq_sel(lo, below_s, fq_sel(hi, above_s, r - v));
            tz[l] = fq_sel(lo | hi, d, 0.f);
        }
        for (int l = 0; l < 16; l++) {
            as[l] += ts[l];
            az[l] += tz[l];
        }
    }
    for (; i < n; i++) {
        float v = x[i] / s, r = nearbyintf(v), q = r + z, d = dy[i];
        int lo = q < g.qmin, hi = q > g.qmax;
        if (dx)
            dx[i] = lo | hi ? 0.f : d;
        as[0] += d * (lo ? below_s : hi ? above_s : r - v);
        az[0] += lo | hi ? d : 0.f;
    }
    for (int l = 0; l < 16; l++) {
        *gs += as[l];
        *gz += az[l];
    }
}

#define FQB_MAXPART 256  /* pieces of one per-tensor quantizer at most */

typedef struct {
    const float *x, *dy;
    float *dx;
    const float *s, *z;
    qs_grid g;
    int64_t outer, ch, inner, piece;
    double gs[FQB_MAXPART], gz[FQB_MAXPART];   /* per piece */
    float *ds, *dz;                            /* per channel */
} fqb_job;

/* pieces [p0, p1) of a per-tensor quantizer's one span */
static void fqb_pieces(void *arg, int64_t p0, int64_t p1, int worker)
{
    fqb_job *j = arg;
    for (int64_t p = p0; p < p1; p++) {
        int64_t b = p * j->piece, e = b + j->piece < j->inner ? b + j->piece : j->inner;
        j->gs[p] = j->gz[p] = 0;
        if (b < e)
            fqb_span(j->x + b, j->dy + b, j->dx ? j->dx + b : NULL, e - b, j->s[0], j->z[0], j->g, &j->gs[p],
                     &j->gz[p]);
    }
}

/* channels [c0, c1) of a per-channel quantizer: each channel's rows on one thread, in order, so
 * the sums do not depend on the threads */
static void fqb_channels(void *arg, int64_t c0, int64_t c1, int worker)
{
    fqb_job *j = arg;
    for (int64_t ci = c0; ci < c1; ci++)
        for (int64_t o = 0; o < j->outer; o++) {
            double gs = 0, gz = 0;
            int64_t k = (o * j->ch + ci) * j->inner;
            fqb_span(j->x + k, j->dy + k, j->dx ? j->dx + k : NULL, j->inner, j->s[ci], j->z[ci], j->g, &gs, &gz);
            if (j->ds) j->ds[ci] += (float)gs;
            if (j->dz) j->dz[ci] += (float)(-j->s[ci] * gz);
        }
}

static int fq_backward(qs_kctx *c)
{
    qs_grid g;
    int axis;
    int64_t nch;
    int rc = fq_params(c, &g, &axis, &nch);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0], *dy = c->dout[0];
    qs_tensor *dx = c->din[0], *ds = c->din[1], *dz = c->nin > 2 ? c->din[2] : NULL;
    float zbuf[1];
    const float *s = qs_f32(c->in[1]), *z = fq_zero(c, nch, zbuf);
    fq_job geo;
    fq_split(x, axis, nch, &geo);
    int64_t outer = geo.outer, inner = geo.inner, ch = geo.ch;
    if (ds) memset(ds->data, 0, qs_nbytes(ds));
    if (dz) memset(dz->data, 0, qs_nbytes(dz));
    if (qs_node_int(c->node, "bypass", 0)) {
        if (dx) memcpy(dx->data, dy->data, qs_nbytes(dy));
        return 0;
    }
    fqb_job j = { qs_f32(x), qs_f32(dy), dx ? qs_f32(dx) : NULL, s, z, g, outer, ch, inner, 0, { 0 }, { 0 }, NULL, NULL };
    /* spans of at least FQ_SPAN elements; a per-tensor quantizer's one long span is cut into pieces */
    int64_t rows = outer * ch, pieces = rows == 1 ? (inner + FQ_SPAN - 1) / FQ_SPAN : 1;
    if (pieces > FQB_MAXPART)
        pieces = FQB_MAXPART;
    j.piece = (inner + pieces - 1) / pieces;
    if (rows == 1) {
        qs_threadpool_for(c->pool, c->nthreads, pieces, 1, fqb_pieces, &j);
        double gs = 0, gz = 0;   /* the pieces' partial sums, in a fixed order whatever the threads */
        for (int64_t k = 0; k < pieces; k++) {
            gs += j.gs[k];
            gz += j.gz[k];
        }
        if (ds) qs_f32(ds)[0] = (float)gs;
        if (dz) qs_f32(dz)[0] = (float)(-s[0] * gz);
        return 0;
    }
    j.ds = ds ? qs_f32(ds) : NULL;
    j.dz = dz ? qs_f32(dz) : NULL;
    int64_t per_ch = outer * inner, min_ch = per_ch >= FQ_SPAN || per_ch < 1 ? 1 : (FQ_SPAN + per_ch - 1) / per_ch;
    qs_threadpool_for(c->pool, c->nthreads, ch, min_ch, fqb_channels, &j);
    return 0;
}

const qs_op_def qs_ops_fakequant[] = {
    { .domain = "quantd", .op = "FakeQuant", .infer = fq_infer, .forward = fq_forward, .backward = fq_backward },
    { .op = NULL },
};
