/* LayerNormalization (opset 17), GroupNormalization (18; 21's per-channel scale) and
 * InstanceNormalization (float32), forward and backward: the normalizations over each sample's own
 * elements, which need no running statistics.
 *
 * All three normalize "rows" of M contiguous elements: LayerNorm's rows are X's elements from axis
 * on (one row per index of the leading dims), GroupNorm's the C/G channels of one group of one
 * sample, InstanceNorm's one channel of one sample (GroupNorm with G = C). Per row: μ and the biased
 * σ² in double (two passes), r = 1/sqrt(σ² + ε), x̂ = (x − μ)·r, y = x̂·scale + bias. LayerNorm's
 * scale and bias are indexed by the position in the row (broadcast to X.shape[axis:]), the others'
 * by channel (GroupNorm before opset 21: by group).
 *
 * Backward, with g = dy·scale: dx = r·(g − mean(g) − x̂·mean(g·x̂)); LayerNorm's optional Mean and
 * InvStdDev outputs add gμ/M and −gr·r²·x̂/M. dscale = Σ dy·x̂ and dbias = Σ dy over the rows (and
 * the spatial positions, for the channel-wise ones). QAT trains through scale and bias.
 *
 * Rows are split over threads. The reductions across rows (LayerNorm's parameter gradients, a
 * channel's sums over the batch) run afterwards from per-row values kept in scratch, so no two
 * threads write the same place and nothing is allocated. */
#include "ops/kernels.h"
#include "ops/opsutil.h"

#include <math.h>
#include <string.h>

enum { LN, GN, IN };   /* which op */

typedef struct rn_p {
    int kind;
    int64_t R, M;          /* rows, elements per row */
    int64_t G, Cg, S;      /* channel-wise: groups per sample, channels per group, spatial size */
    int per_group;         /* GroupNorm before opset 21: one scale/bias per group */
    int axis;              /* LayerNorm: the first normalized dim */
    int expand_scale, expand_bias;   /* LayerNorm: scale/bias broadcast to the row (not M values) */
    float eps;
} rn_p;

static const char *bias_name(int kind) { return kind == GN ? "bias" : "B"; }

static int check_f32(qs_kctx *c, int i, const char *name)
{
    if (c->in[i]->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "input %s is %s; only float32 is supported", name,
                           qs_dtype_name(c->in[i]->dtype));
    return 0;
}

static int check_stash(qs_kctx *c)
{
    /* the statistics are computed in double and stored as float32: right for float32 and double */
    int64_t st = qs_node_int(c->node, "stash_type", 1);
    if (st != 1 && st != 11)
        return qs_op_error(c, QS_EUNSUPPORTED, "attribute stash_type = %lld is not supported (1 = float32 or "
                           "11 = double)", (long long)st);
    return 0;
}

static int ln_params(qs_kctx *c, rn_p *p)
{
    char sx[128], sp[128];
    int rc;
    memset(p, 0, sizeof *p);
    p->kind = LN;
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "needs inputs X and Scale (B is optional)");
    const qs_tensor *X = c->in[0], *b = qs_opt_in(c, 2);
    if ((rc = check_f32(c, 0, "X")) < 0 || (rc = check_f32(c, 1, "Scale")) < 0 ||
        (b && (rc = check_f32(c, 2, "B")) < 0) || (rc = check_stash(c)) < 0)
        return rc;
    if (c->nout > 3)
        return qs_op_error(c, QS_EINVAL, "has %d outputs; at most 3 (Y, Mean, InvStdDev)", c->nout);
    if ((rc = qs_norm_axis(c, qs_node_int(c->node, "axis", -1), X->ndim, "attribute axis", &p->axis)) < 0)
        return rc;
    p->R = qs_shape_numel(p->axis, X->shape);
    p->M = qs_shape_numel(X->ndim - p->axis, X->shape + p->axis);
    int nd = X->ndim - p->axis;
    const int64_t *ns = X->shape + p->axis;
    qs_shape_str(nd, ns, sx, sizeof sx);
    for (int i = 1; i < 3; i++) {
        const qs_tensor *t = i == 1 ? c->in[1] : b;
        if (!t)
            continue;
        if (!qs_broadcasts_to(t, nd, ns))
            return qs_op_error(c, QS_ESHAPE, "%s has shape %s, which does not broadcast to the normalized shape "
                               "%s (X's dims from axis %d)", i == 1 ? "Scale" : "B",
                               qs_shape_str(t->ndim, t->shape, sp, sizeof sp), sx, p->axis);
        if (qs_numel(t) != p->M)
            *(i == 1 ? &p->expand_scale : &p->expand_bias) = 1;
    }
    p->eps = qs_node_float(c->node, "epsilon", 1e-5f);
    if (!(p->eps >= 0))
        return qs_op_error(c, QS_EINVAL, "attribute epsilon = %g must not be negative", (double)p->eps);
    return 0;
}

/* GroupNormalization (kind GN) and InstanceNormalization (IN) */
static int cn_params(qs_kctx *c, rn_p *p, int kind)
{
    char sx[128], sp[128];
    int rc;
    memset(p, 0, sizeof *p);
    p->kind = kind;
    if (c->nin < 3 || !c->in[0] || !c->in[1] || !c->in[2])
        return qs_op_error(c, QS_EINVAL, "needs 3 inputs (%s, scale, %s)", kind == GN ? "X" : "input",
                           bias_name(kind));
    const qs_tensor *X = c->in[0];
    if ((rc = check_f32(c, 0, kind == GN ? "X" : "input")) < 0 || (rc = check_f32(c, 1, "scale")) < 0 ||
        (rc = check_f32(c, 2, bias_name(kind))) < 0)
        return rc;
    if (kind == GN && (rc = check_stash(c)) < 0)
        return rc;
    if (c->nout > 1)
        return qs_op_error(c, QS_EINVAL, "has %d outputs; expected 1", c->nout);
    qs_shape_str(X->ndim, X->shape, sx, sizeof sx);
    if (X->ndim < 2)
        return qs_op_error(c, QS_ESHAPE, "input %s has shape %s; expected [N, C, ...]", kind == GN ? "X" : "input", sx);
    int64_t N = X->shape[0], C = X->shape[1];
    p->S = qs_shape_numel(X->ndim - 2, X->shape + 2);
    if (kind == GN) {
        const qs_attr *a = qs_node_attr(c->node, "num_groups");
        if (!a)
            return qs_op_error(c, QS_EINVAL, "attribute num_groups is required");
        p->G = qs_node_int(c->node, "num_groups", 0);
        if (p->G <= 0 || C % p->G)
            return qs_op_error(c, QS_EINVAL, "attribute num_groups = %lld must be positive and divide the %lld "
                               "channels of X %s", (long long)p->G, (long long)C, sx);
        p->per_group = c->opset < 21;
    } else {
        p->G = C;
    }
    p->Cg = p->G ? C / p->G : 0;
    p->R = N * p->G;
    p->M = p->Cg * p->S;
    int64_t want = p->per_group ? p->G : C;
    for (int i = 1; i < 3; i++)
        if (c->in[i]->ndim != 1 || c->in[i]->shape[0] != want)
            return qs_op_error(c, QS_ESHAPE, "%s has shape %s; expected [%lld] (%s) for X %s",
                               i == 1 ? "scale" : bias_name(kind),
                               qs_shape_str(c->in[i]->ndim, c->in[i]->shape, sp, sizeof sp), (long long)want,
                               p->per_group ? "one value per group before opset 21" : "one value per channel", sx);
    p->eps = qs_node_float(c->node, "epsilon", 1e-5f);
    if (!(p->eps >= 0))
        return qs_op_error(c, QS_EINVAL, "attribute epsilon = %g must not be negative", (double)p->eps);
    return 0;
}

static int gn_params(qs_kctx *c, rn_p *p) { return cn_params(c, p, GN); }
static int in_params(qs_kctx *c, rn_p *p) { return cn_params(c, p, IN); }

QS_OP_PARAMS(ln, rn_p, ln_params)
QS_OP_PARAMS(gn, rn_p, gn_params)
QS_OP_PARAMS(inorm, rn_p, in_params)

static int has_out(const qs_kctx *c, int i)
{
    return i < c->nout && c->out && c->out[i] && (c->node->nout <= i || c->node->out[i] >= 0);
}

static int ln_infer(qs_kctx *c)
{
    rn_p p;
    int rc = ln_params(c, &p);
    if (rc < 0)
        return rc;
    const qs_tensor *X = c->in[0];
    qs_set_shape(c->out[0], QS_F32, X->ndim, X->shape);
    int64_t st[QS_MAX_DIMS];   /* Mean, InvStdDev: X's shape with the normalized dims set to 1 */
    for (int d = 0; d < X->ndim; d++)
        st[d] = d < p.axis ? X->shape[d] : 1;
    for (int i = 1; i < c->nout; i++)
        if (c->out[i])
            qs_set_shape(c->out[i], QS_F32, X->ndim, st);
    return 0;
}

static int gn_infer(qs_kctx *c)
{
    rn_p p;
    int rc = gn_params(c, &p);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

static int inorm_infer(qs_kctx *c)
{
    rn_p p;
    int rc = in_params(c, &p);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

/* Scratch: per-row mean and r (double), LayerNorm's expanded scale/bias and its parameter gradients
 * before the reduction to a broadcast shape (M each), and the channel-wise ops' per-(row, channel)
 * sums Σdy·x̂, Σdy. */
typedef struct rn_scratch {
    double *mean, *inv;     /* [R] */
    float *scale, *bias;    /* [M] expanded (LayerNorm, when broadcast) */
    double *ds, *db;        /* [M] (LayerNorm) or [R·Cg] (channel-wise) */
} rn_scratch;

static size_t rn_scratch_bytes(const rn_p *p)
{
    int64_t cols = p->kind == LN ? p->M : p->R * p->Cg;
    return (size_t)(2 * p->R + 2 * cols) * sizeof(double) + (size_t)(2 * p->M) * sizeof(float) + 64;
}

static void rn_scratch_map(const rn_p *p, void *buf, rn_scratch *s)
{
    int64_t cols = p->kind == LN ? p->M : p->R * p->Cg;
    double *d = buf;
    s->mean = d;
    s->inv = d + p->R;
    s->ds = d + 2 * p->R;
    s->db = s->ds + cols;
    s->scale = (float *)(s->db + cols);
    s->bias = s->scale + p->M;
}

static size_t ln_scratch(const qs_kctx *c)
{
    rn_p p;
    return ln_get((qs_kctx *)c, &p) < 0 ? 0 : rn_scratch_bytes(&p);
}
static size_t gn_scratch(const qs_kctx *c)
{
    rn_p p;
    return gn_get((qs_kctx *)c, &p) < 0 ? 0 : rn_scratch_bytes(&p);
}
static size_t inorm_scratch(const qs_kctx *c)
{
    rn_p p;
    return inorm_get((qs_kctx *)c, &p) < 0 ? 0 : rn_scratch_bytes(&p);
}

/* t broadcast to the normalized shape (X's dims from axis) into dst[M] */
static void expand_to_row(float *dst, const qs_tensor *t, const qs_tensor *X, int axis)
{
    int nd = X->ndim - axis;
    qs_tensor full;
    memset(&full, 0, sizeof full);
    full.ndim = nd;
    memcpy(full.shape, X->shape + axis, (size_t)nd * sizeof full.shape[0]);
    const qs_tensor *ops[2] = { t, &full };
    qs_bcast b;
    qs_bcast_init(&b, nd, full.shape, 2, ops);
    int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b), sd = b.st[0][b.ndim - 1];
    const float *src = qs_f32(t);
    qs_bcast_pos q;
    qs_bcast_start(&q);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &q))
        for (int64_t i = 0; i < n; i++)
            dst[q.off[1] + i] = src[q.off[0] + i * sd];
}

/* mean and r = 1/sqrt(var + eps) of a row, two passes in double; four partial sums each break the
 * addition chain (the compiler may not reorder floating-point sums itself) */
QS_HOT static void row_stats(const float *x, int64_t M, float eps, double *mean, double *inv)
{
    double s[4] = { 0, 0, 0, 0 }, q[4] = { 0, 0, 0, 0 };
    int64_t i = 0;
    for (; i + 4 <= M; i += 4)
        for (int k = 0; k < 4; k++)
            s[k] += x[i + k];
    for (; i < M; i++)
        s[0] += x[i];
    double m = M ? (s[0] + s[1] + s[2] + s[3]) / (double)M : 0;
    for (i = 0; i + 4 <= M; i += 4)
        for (int k = 0; k < 4; k++) {
            double d = x[i + k] - m;
            q[k] += d * d;
        }
    for (; i < M; i++) {
        double d = x[i] - m;
        q[0] += d * d;
    }
    *mean = m;
    *inv = 1.0 / sqrt((M ? (q[0] + q[1] + q[2] + q[3]) / (double)M : 0) + eps);
}

typedef struct rn_job {
    const rn_p *p;
    qs_kctx *c;
    rn_scratch s;
    const float *scale, *bias;   /* LayerNorm: [M] (expanded when broadcast); else per channel/group */
} rn_job;

/* scale/bias index of channel k of group g (channel-wise ops) */
static inline int64_t cn_index(const rn_p *p, int64_t g, int64_t k) { return p->per_group ? g : g * p->Cg + k; }

QS_HOT static void rn_forward_rows(void *arg, int64_t r0, int64_t r1, int worker)
{
    const rn_job *j = arg;
    const rn_p *p = j->p;
    qs_kctx *c = j->c;
    const float *x = qs_f32(c->in[0]);
    float *y = qs_f32(c->out[0]);
    float *om = p->kind == LN && has_out(c, 1) ? qs_f32(c->out[1]) : NULL;
    float *oi = p->kind == LN && has_out(c, 2) ? qs_f32(c->out[2]) : NULL;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * p->M;
        float *yr = y + r * p->M;
        double mean, inv;
        row_stats(xr, p->M, p->eps, &mean, &inv);
        if (om)
            om[r] = (float)mean;
        if (oi)
            oi[r] = (float)inv;
        if (p->kind == LN) {
            float m = (float)mean, ri = (float)inv;
            const float *s = j->scale, *b = j->bias;
            if (b)
                for (int64_t i = 0; i < p->M; i++)
                    yr[i] = (xr[i] - m) * ri * s[i] + b[i];
            else
                for (int64_t i = 0; i < p->M; i++)
                    yr[i] = (xr[i] - m) * ri * s[i];
        } else {
            int64_t g = r % p->G;
            for (int64_t k = 0; k < p->Cg; k++) {
                int64_t pi = cn_index(p, g, k);
                double a = j->scale[pi] * inv;
                qs_vec_affine(p->S, (float)a, (float)(j->bias[pi] - mean * a), xr + k * p->S, yr + k * p->S);
            }
        }
    }
}

static int64_t row_chunk(const rn_p *p) { return p->M >= 16384 ? 1 : 16384 / (p->M ? p->M : 1); }

static int rn_setup(qs_kctx *c, const rn_p *p, rn_job *j)
{
    memset(j, 0, sizeof *j);
    j->p = p;
    j->c = c;
    if (!c->scratch || c->scratch_size < rn_scratch_bytes(p))
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes is too small (%zu needed)", c->scratch_size,
                           rn_scratch_bytes(p));
    rn_scratch_map(p, c->scratch, &j->s);
    j->scale = qs_f32(c->in[1]);
    const qs_tensor *b = qs_opt_in(c, 2);
    j->bias = b ? qs_f32(b) : NULL;
    if (p->expand_scale) {
        expand_to_row(j->s.scale, c->in[1], c->in[0], p->axis);
        j->scale = j->s.scale;
    }
    if (p->expand_bias) {
        expand_to_row(j->s.bias, b, c->in[0], p->axis);
        j->bias = j->s.bias;
    }
    return 0;
}

static int rn_forward(qs_kctx *c, const rn_p *p)
{
    rn_job j;
    int rc = rn_setup(c, p, &j);
    if (rc < 0)
        return rc;
    qs_threadpool_for(c->pool, c->nthreads, p->R, row_chunk(p), rn_forward_rows, &j);
    return 0;
}

static int ln_forward(qs_kctx *c)
{
    rn_p p;
    int rc = ln_get(c, &p);
    return rc < 0 ? rc : rn_forward(c, &p);
}
static int gn_forward(qs_kctx *c)
{
    rn_p p;
    int rc = gn_get(c, &p);
    return rc < 0 ? rc : rn_forward(c, &p);
}
static int inorm_forward(qs_kctx *c)
{
    rn_p p;
    int rc = inorm_get(c, &p);
    return rc < 0 ? rc : rn_forward(c, &p);
}

static const float *opt_dout(const qs_kctx *c, int i) { return i < c->nout && c->dout[i] ? qs_f32(c->dout[i]) : NULL; }

/* dx for the rows [r0, r1) and, channel-wise, the per-(row, channel) sums for dscale/dbias */
QS_HOT static void rn_backward_rows(void *arg, int64_t r0, int64_t r1, int worker)
{
    const rn_job *j = arg;
    const rn_p *p = j->p;
    qs_kctx *c = j->c;
    const float *x = qs_f32(c->in[0]), *dy = opt_dout(c, 0);
    const float *gm = p->kind == LN ? opt_dout(c, 1) : NULL, *gi = p->kind == LN ? opt_dout(c, 2) : NULL;
    float *dx = c->din[0] ? qs_f32(c->din[0]) : NULL;
    double M = (double)p->M;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * p->M, *dr = dy ? dy + r * p->M : NULL;
        double mean, inv;
        row_stats(xr, p->M, p->eps, &mean, &inv);
        j->s.mean[r] = mean;
        j->s.inv[r] = inv;
        double sg = 0, sgx = 0;   /* Σg and Σg·(x − μ), g = dy·scale */
        if (p->kind == LN) {
            if (dr)
                for (int64_t i = 0; i < p->M; i++) {
                    double g = (double)dr[i] * j->scale[i];
                    sg += g;
                    sgx += g * (xr[i] - mean);
                }
        } else {
            int64_t g = r % p->G;
            for (int64_t k = 0; k < p->Cg; k++) {
                const float *xk = xr + k * p->S, *dk = dr ? dr + k * p->S : NULL;
                double sdy = 0, sdyx = 0;
                for (int64_t i = 0; dk && i < p->S; i++) {
                    sdy += dk[i];
                    sdyx += dk[i] * (xk[i] - mean);
                }
                double sc = j->scale[cn_index(p, g, k)];
                sg += sc * sdy;
                sgx += sc * sdyx;
                j->s.ds[r * p->Cg + k] = sdyx * inv;
                j->s.db[r * p->Cg + k] = sdy;
            }
        }
        if (!dx)
            continue;
        /* dx = r·g − r·Σg/M − (x − μ)·r³·Σg(x − μ)/M + gμ/M − gr·r³·(x − μ)/M */
        double cx = -inv * inv * inv * sgx / M - (gi ? gi[r] : 0) * inv * inv * inv / M;
        double c0 = -inv * sg / M + (gm ? gm[r] : 0) / M - cx * mean;
        float *o = dx + r * p->M;
        if (p->kind == LN) {
            for (int64_t i = 0; i < p->M; i++)
                o[i] = (float)((dr ? inv * dr[i] * j->scale[i] : 0) + cx * xr[i] + c0);
        } else {
            int64_t g = r % p->G;
            for (int64_t k = 0; k < p->Cg; k++) {
                double a = inv * j->scale[cn_index(p, g, k)];
                const float *xk = xr + k * p->S, *dk = dr ? dr + k * p->S : NULL;
                float *ok = o + k * p->S;
                for (int64_t i = 0; i < p->S; i++)
                    ok[i] = (float)((dk ? a * dk[i] : 0) + cx * xk[i] + c0);
            }
        }
    }
}

/* LayerNorm's parameter gradients for the row positions [i0, i1): sums over the rows */
static void ln_param_cols(void *arg, int64_t i0, int64_t i1, int worker)
{
    const rn_job *j = arg;
    const rn_p *p = j->p;
    const float *x = qs_f32(j->c->in[0]), *dy = opt_dout(j->c, 0);
    for (int64_t i = i0; i < i1; i++)
        j->s.ds[i] = j->s.db[i] = 0;
    if (!dy)
        return;
    for (int64_t r = 0; r < p->R; r++) {
        const float *xr = x + r * p->M, *dr = dy + r * p->M;
        double m = j->s.mean[r], inv = j->s.inv[r];
        for (int64_t i = i0; i < i1; i++) {
            j->s.ds[i] += dr[i] * ((xr[i] - m) * inv);
            j->s.db[i] += dr[i];
        }
    }
}

/* dst (shaped like t, which broadcasts to X's dims from axis) = the row sums src[M] reduced */
static void reduce_from_row(float *dst, const qs_tensor *t, const double *src, const rn_p *p, const qs_tensor *X,
                            float *tmp)
{
    for (int64_t i = 0; i < p->M; i++)
        tmp[i] = (float)src[i];
    if (qs_numel(t) == p->M) {
        memcpy(dst, tmp, (size_t)p->M * sizeof *dst);
        return;
    }
    qs_reduce_to(dst, t, tmp, X->ndim - p->axis, X->shape + p->axis);
}

static int rn_backward(qs_kctx *c, const rn_p *p)
{
    rn_job j;
    int rc = rn_setup(c, p, &j);
    if (rc < 0)
        return rc;
    qs_threadpool_for(c->pool, c->nthreads, p->R, row_chunk(p), rn_backward_rows, &j);
    float *dscale = c->din[1] ? qs_f32(c->din[1]) : NULL;
    float *dbias = c->nin > 2 && c->din[2] ? qs_f32(c->din[2]) : NULL;
    if (!dscale && !dbias)
        return 0;
    if (p->kind == LN) {
        int64_t chunk = p->R * 64 >= 16384 ? 64 : 16384 / (p->R ? p->R : 1);
        qs_threadpool_for(c->pool, c->nthreads, p->M, chunk, ln_param_cols, &j);
        /* the expanded copies are no longer needed: their room holds the float sums */
        if (dscale)
            reduce_from_row(dscale, c->in[1], j.s.ds, p, c->in[0], j.s.scale);
        if (dbias)
            reduce_from_row(dbias, c->in[2], j.s.db, p, c->in[0], j.s.scale);
        return 0;
    }
    int64_t np = p->per_group ? p->G : p->G * p->Cg;
    /* sums over the batch in double, per parameter, in row order (deterministic) */
    for (int64_t pi = 0; pi < np; pi++) {
        double s = 0, b = 0;
        int64_t g = p->per_group ? pi : pi / p->Cg;
        int64_t k0 = p->per_group ? 0 : pi % p->Cg, k1 = p->per_group ? p->Cg : k0 + 1;
        for (int64_t r = g; r < p->R; r += p->G)
            for (int64_t k = k0; k < k1; k++) {
                s += j.s.ds[r * p->Cg + k];
                b += j.s.db[r * p->Cg + k];
            }
        if (dscale)
            dscale[pi] = (float)s;
        if (dbias)
            dbias[pi] = (float)b;
    }
    return 0;
}

static int ln_backward(qs_kctx *c)
{
    rn_p p;
    int rc = ln_get(c, &p);
    return rc < 0 ? rc : rn_backward(c, &p);
}
static int gn_backward(qs_kctx *c)
{
    rn_p p;
    int rc = gn_get(c, &p);
    return rc < 0 ? rc : rn_backward(c, &p);
}
static int inorm_backward(qs_kctx *c)
{
    rn_p p;
    int rc = inorm_get(c, &p);
    return rc < 0 ? rc : rn_backward(c, &p);
}

const qs_op_def qs_ops_layernorm[] = {
    { .domain = "", .op = "LayerNormalization", .infer = ln_infer, .prepare = ln_prepare, .scratch = ln_scratch,
      .forward = ln_forward, .backward = ln_backward },
    { .domain = "", .op = "GroupNormalization", .infer = gn_infer, .prepare = gn_prepare, .scratch = gn_scratch,
      .forward = gn_forward, .backward = gn_backward },
    { .domain = "", .op = "InstanceNormalization", .infer = inorm_infer, .prepare = inorm_prepare,
      .scratch = inorm_scratch, .forward = inorm_forward, .backward = inorm_backward },
    { .op = NULL },
};
