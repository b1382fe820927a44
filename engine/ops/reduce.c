/* Reductions (ReduceSum, ReduceMean, ReduceSumSquare, ReduceL1, ReduceL2, ReduceLogSum,
 * ReduceLogSumExp, ReduceProd, ReduceMax, ReduceMin) over any set of axes, with a float32 backward,
 * and ArgMax/ArgMin along one axis. A float32 row that folds into one output accumulates in
 * double; other types accumulate through double (exact for the integers of shape arithmetic). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ops/opsutil.h"

/* ------------------------------------------------------------------------------------------------
 * reductions: ReduceSum, ReduceMean, ReduceSumSquare, ReduceL1, ReduceL2, ReduceLogSum,
 * ReduceLogSumExp, ReduceProd, ReduceMax, ReduceMin. Each is a fold: acc = comb(acc, term(x)) from
 * init, then fin(acc). */

enum redop { R_SUM, R_MEAN, R_SUMSQ, R_L1, R_L2, R_LOGSUM, R_LOGSUMEXP, R_PROD, R_MAX, R_MIN };

static enum redop redop_of(const qs_kctx *c)
{
    static const char *const names[] = { "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                                         "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "ReduceMax", "ReduceMin" };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(c->node->op, names[i]))
            return (enum redop)i;
    return R_SUM;
}

static double red_init(enum redop op)
{
    return op == R_MAX ? -INFINITY : op == R_MIN ? INFINITY : op == R_PROD ? 1 : 0;
}

static inline double red_term(enum redop op, double v)
{
    switch (op) {
    case R_SUMSQ: case R_L2: return v * v;
    case R_L1: return fabs(v);
    case R_LOGSUMEXP: return exp(v);
    default: return v;
    }
}

static inline double red_comb(enum redop op, double a, double t)
{
    switch (op) {
    /* NaN propagates */
    case R_MAX: return t > a || t != t ? t : a;
    case R_MIN: return t < a || t != t ? t : a;
    case R_PROD: return a * t;
    default: return a + t;
    }
}

static double red_fin(enum redop op, double a, int64_t count)
{
    switch (op) {
    case R_MEAN: return count ? a / (double)count : NAN;
    case R_L2: return sqrt(a);
    case R_LOGSUM: case R_LOGSUMEXP: return log(a);
    default: return a;
    }
}

/* Which dims are reduced (red[d] = 1) and the output shape with keepdims, from the axes attribute
 * (ReduceSum before opset 13, the others before 18) or the axes input. */
static int red_axes(qs_kctx *c, int red[QS_MAX_DIMS], int64_t keep[QS_MAX_DIMS])
{
    const qs_tensor *x = c->in[0];
    int rank = x->ndim;
    int64_t axes[QS_MAX_DIMS];
    int n = 0;
    int from_input = c->opset >= (redop_of(c) == R_SUM ? 13 : 18);
    if (from_input) {
        if (qs_opt_in(c, 1)) {
            const qs_tensor *t = c->in[1];
            if (qs_numel(t) > QS_MAX_DIMS)
                return qs_op_error(c, QS_EINVAL, "axes has %lld values for rank %d", (long long)qs_numel(t), rank);
            if ((n = qs_known_ints(c, 1, "axes", axes, QS_MAX_DIMS)) < 0)
                return n;
        }
    } else {
        const int64_t *v;
        n = qs_node_ints(c->node, "axes", &v);
        if (n > QS_MAX_DIMS)
            return qs_op_error(c, QS_EINVAL, "axes has %d values for rank %d", n, rank);
        if (n)
            memcpy(axes, v, n * sizeof *v);
    }
    int noop = from_input && n == 0 && qs_node_int(c->node, "noop_with_empty_axes", 0);
    for (int d = 0; d < rank; d++)
        red[d] = n == 0 && !noop;
    for (int i = 0; i < n; i++) {
        int a;
        int rc = qs_norm_axis(c, axes[i], rank, "axes value", &a);
        if (rc < 0)
            return rc;
        if (red[a])
            return qs_op_error(c, QS_EINVAL, "axis %lld is listed twice", (long long)axes[i]);
        red[a] = 1;
    }
    for (int d = 0; d < rank; d++)
        keep[d] = red[d] ? 1 : x->shape[d];
    return 0;
}

static int red_infer(qs_kctx *c)
{
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "expects a data input");
    const qs_tensor *x = c->in[0];
    if (!qs_dtype_numeric(x->dtype))
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(x->dtype));
    int red[QS_MAX_DIMS];
    int64_t keep[QS_MAX_DIMS], shape[QS_MAX_DIMS];
    int rc = red_axes(c, red, keep);
    if (rc < 0)
        return rc;
    if (qs_node_int(c->node, "keepdims", 1)) {
        qs_set_shape(c->out[0], x->dtype, x->ndim, keep);
        return 0;
    }
    int nd = 0;
    for (int d = 0; d < x->ndim; d++)
        if (!red[d])
            shape[nd++] = x->shape[d];
    qs_set_shape(c->out[0], x->dtype, nd, shape);
    return 0;
}

/* The iteration space is x's shape; the output, viewed with keepdims, broadcasts over it. */
static int red_setup(qs_kctx *c, qs_bcast *b, int64_t *count)
{
    const qs_tensor *x = c->in[0];
    int red[QS_MAX_DIMS];
    qs_tensor keep;
    memset(&keep, 0, sizeof keep);
    int rc = red_axes(c, red, keep.shape);
    if (rc < 0)
        return rc;
    keep.ndim = x->ndim;
    const qs_tensor *ops[2] = { x, &keep };
    qs_bcast_init(b, x->ndim, x->shape, 2, ops);
    int64_t nout = qs_numel(&keep);
    *count = nout ? qs_numel(x) / nout : 0;
    return 0;
}

static int red_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    enum redop op = redop_of(c);
    qs_bcast b;
    int64_t count;
    int rc = red_setup(c, &b, &count);
    if (rc < 0)
        return rc;
    int64_t ny = qs_numel(y), n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b);
    int64_t sy = b.st[1][b.ndim - 1];
    qs_bcast_pos p;
    qs_bcast_start(&p);
    if (x->dtype == QS_F32) {
        const float *X = qs_f32(x);
        float *Y = qs_f32(y);
        int plain = op == R_SUM || op == R_MEAN;
        for (int64_t i = 0; i < ny; i++)
            Y[i] = (float)red_init(op);
        for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p)) {
            const float *px = X + p.off[0];
            float *py = Y + p.off[1];
            if (sy == 0) {   /* the whole row folds into one output, accumulated in double */
                double acc = *py;
                if (plain)
                    for (int64_t i = 0; i < n; i++)
                        acc += px[i];
                else
                    for (int64_t i = 0; i < n; i++)
                        acc = red_comb(op, acc, red_term(op, px[i]));
                *py = (float)acc;
            } else if (plain) {
                for (int64_t i = 0; i < n; i++)
                    py[i] += px[i];
            } else {
                for (int64_t i = 0; i < n; i++)
                    py[i] = (float)red_comb(op, py[i], red_term(op, px[i]));
            }
        }
        for (int64_t i = 0; i < ny; i++)
            Y[i] = (float)red_fin(op, Y[i], count);
        return 0;
    }
    /* other types: accumulate in the output through double (exact for the integers shape math uses) */
    int is_int = qs_dtype_is_int(x->dtype);
    for (int64_t i = 0; i < ny; i++) {
        if (is_int && (op == R_MAX || op == R_MIN))
            qs_store_i64(y->data, y->dtype, i, op == R_MAX ? INT64_MIN : INT64_MAX);
        else
            qs_store_f64(y->data, y->dtype, i, red_init(op));
    }
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p))
        for (int64_t i = 0; i < n; i++) {
            int64_t ix = p.off[0] + i, iy = p.off[1] + i * sy;
            qs_store_f64(y->data, y->dtype, iy, red_comb(op, qs_get_f64(y, iy), red_term(op, qs_get_f64(x, ix))));
        }
    if (op == R_MEAN || op == R_L2 || op == R_LOGSUM || op == R_LOGSUMEXP)
        for (int64_t i = 0; i < ny; i++)
            qs_store_f64(y->data, y->dtype, i, red_fin(op, qs_get_f64(y, i), count));
    return 0;
}

static int red_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    const qs_tensor *x = c->in[0], *y = c->out[0], *gt = c->dout[0];
    float *D = qs_f32(c->din[0]);
    memset(D, 0, qs_nbytes(c->din[0]));
    if (!gt || x->dtype != QS_F32)
        return 0;
    enum redop op = redop_of(c);
    qs_bcast b;
    int64_t count;
    int rc = red_setup(c, &b, &count);
    if (rc < 0)
        return rc;
    int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b);
    int64_t sy = b.st[1][b.ndim - 1];
    const float *X = qs_f32(x), *Y = qs_f32(y), *G = qs_f32(gt);
    float scale = op == R_MEAN ? 1.f / (float)count : 1.f;
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p))
        for (int64_t i = 0; i < n; i++) {
            int64_t ix = p.off[0] + i, iy = p.off[1] + i * sy;
            float v = X[ix], o = Y[iy], g = G[iy];
            switch (op) {
            case R_SUM: case R_MEAN: D[ix] = g * scale; break;
            case R_SUMSQ: D[ix] = 2 * v * g; break;
            case R_L1: D[ix] = v > 0 ? g : v < 0 ? -g : 0.f; break;
            case R_L2: D[ix] = o > 0 ? g * v / o : 0.f; break;
            case R_LOGSUM: D[ix] = g / expf(o); break;          /* 1 / Σx */
            case R_LOGSUMEXP: D[ix] = g * expf(v - o); break;   /* softmax */
            case R_PROD: break;   /* registered without a backward (zeros make y/x wrong) */
            /* every element equal to the extreme gets the gradient (ties are measure zero) */
            case R_MAX: case R_MIN: D[ix] = v == o ? g : 0.f; break;
            }
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * ArgMax / ArgMin along one axis: int64 indices, first (or last) occurrence of the extreme */

static int arg_infer(qs_kctx *c)
{
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "expects 1 input");
    const qs_tensor *x = c->in[0];
    if (!qs_dtype_numeric(x->dtype))
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(x->dtype));
    int axis;
    int rc = qs_norm_axis(c, qs_node_int(c->node, "axis", 0), x->ndim, "axis", &axis);
    if (rc < 0)
        return rc;
    int64_t shape[QS_MAX_DIMS];
    int nd = 0, keep = (int)qs_node_int(c->node, "keepdims", 1);
    for (int d = 0; d < x->ndim; d++)
        if (d != axis)
            shape[nd++] = x->shape[d];
        else if (keep)
            shape[nd++] = 1;
    qs_set_shape(c->out[0], QS_I64, nd, shape);
    return 0;
}

static int arg_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0];
    int axis;
    qs_norm_axis(c, qs_node_int(c->node, "axis", 0), x->ndim, "axis", &axis);
    int is_max = !strcmp(c->node->op, "ArgMax"), last = c->opset >= 12 && qs_node_int(c->node, "select_last_index", 0);
    int64_t outer = qs_shape_numel(axis, x->shape), n = x->shape[axis];
    int64_t inner = qs_shape_numel(x->ndim - axis - 1, x->shape + axis + 1);
    int64_t *Y = qs_i64(c->out[0]);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t best = 0, base = o * n * inner + j;
            double bv = n ? qs_get_f64(x, base) : 0;
            for (int64_t k = 1; k < n; k++) {
                double v = qs_get_f64(x, base + k * inner);
                int better = is_max ? (last ? v >= bv : v > bv) : (last ? v <= bv : v < bv);
                if (better) {
                    best = k;
                    bv = v;
                }
            }
            Y[o * inner + j] = best;
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */

#define RED(name) { .domain = "", .op = name, .infer = red_infer, .forward = red_forward, .backward = red_backward }

const qs_op_def qs_ops_reduce[] = {
    RED("ReduceSum"), RED("ReduceMean"), RED("ReduceSumSquare"), RED("ReduceL1"), RED("ReduceL2"),
    RED("ReduceLogSum"), RED("ReduceLogSumExp"), RED("ReduceMax"), RED("ReduceMin"),
    { .domain = "", .op = "ReduceProd", .infer = red_infer, .forward = red_forward },
    { .domain = "", .op = "ArgMax", .infer = arg_infer, .forward = arg_forward },
    { .domain = "", .op = "ArgMin", .infer = arg_infer, .forward = arg_forward },
    { .op = NULL },
};
