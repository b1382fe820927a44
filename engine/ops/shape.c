/* Shape ops: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout (inference), Transpose, Expand,
 * Tile, DepthToSpace, SpaceToDepth, Shape, Size, Constant, ConstantOfShape, Range. Concat, Split,
 * Slice, Gather and Pad are in shape_index.c, and the helpers both files use in ops/shape.h.
 *
 * These move bytes, so every kernel is generic over the element size: the same code reshapes a
 * float32 activation and concatenates int64 shape vectors during plan-time evaluation. Views
 * (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout) copy the buffer unless the executor
 * gave the output the input's storage. Layout changes (Transpose, Slice, Expand) are one strided
 * copy: each output dim walks the input with some element stride (permuted for Transpose, scaled
 * by the step for Slice, 0 for Expand's broadcast dims, a 6-D view for DepthToSpace).
 *
 * Shape-like inputs (Reshape's shape, Slice's starts/ends, Pad's pads, axes from opset 13, …) must
 * be known when the plan is built: infer reads them and refuses a run-time value, naming the input.
 * Backward is float32: views and Transpose pass the gradient through (inverse permutation), Concat
 * and Split swap roles, Slice/Gather/Pad scatter it back (adding where indices repeat), Expand sums
 * over the broadcast dims. */
#include <math.h>
#include <string.h>

#include "ops/shape.h"

static int shape_error(qs_kctx *c, const char *what, int ndim, const int64_t *shape, const qs_tensor *x)
{
    char a[160], b[160];
    return qs_op_error(c, QS_ESHAPE, "%s %s does not fit the input of shape %s", what,
                       qs_shape_str(ndim, shape, a, sizeof a), qs_shape_str(x->ndim, x->shape, b, sizeof b));
}

/* ------------------------------------------------------------------------------------------------
 * views: the output holds the input's bytes in the same order */

static int view_forward(qs_kctx *c)
{
    if (c->out[0]->data != c->in[0]->data)
        memcpy(c->out[0]->data, c->in[0]->data, qs_nbytes(c->in[0]));
    return 0;
}

static int view_backward(qs_kctx *c)
{
    for (int i = 1; i < c->nin; i++)   /* shape-like or ratio inputs: no gradient */
        if (c->din[i])
            memset(c->din[i]->data, 0, qs_nbytes(c->din[i]));
    if (!c->din[0])
        return 0;
    if (c->dout[0])
        memcpy(c->din[0]->data, c->dout[0]->data, qs_nbytes(c->din[0]));
    else
        memset(c->din[0]->data, 0, qs_nbytes(c->din[0]));
    return 0;
}

static int identity_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], c->in[0]->dtype, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

/* Dropout at inference is the identity; the optional mask is all true (bool from opset 10,
 * the input's type before). Training mode keeps it the identity too (see ops.h). */
static int dropout_infer(qs_kctx *c)
{
    int rc = identity_infer(c);
    if (rc < 0)
        return rc;
    if (c->nout > 1 && c->out[1])
        qs_set_shape(c->out[1], c->opset >= 10 ? QS_BOOL : c->in[0]->dtype, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

static int dropout_forward(qs_kctx *c)
{
    view_forward(c);
    if (c->nout > 1 && c->out[1]) {
        qs_tensor *m = c->out[1];
        for (int64_t i = 0; i < qs_numel(m); i++)
            qs_store_i64(m->data, m->dtype, i, 1);
    }
    return 0;
}

static int reshape_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    int64_t req[QS_MAX_DIMS], shape[QS_MAX_DIMS];
    int n;
    if (c->opset >= 5) {
        if ((n = qs_known_ints(c, 1, "shape", req, QS_MAX_DIMS)) < 0)
            return n;
    } else {
        const int64_t *v;
        n = qs_node_ints(c->node, "shape", &v);
        if (n > QS_MAX_DIMS)
            return qs_op_error(c, QS_EUNSUPPORTED, "shape has %d dims, at most %d supported", n, QS_MAX_DIMS);
        if (n)
            memcpy(req, v, n * sizeof *v);
    }
    int allowzero = c->opset >= 14 && qs_node_int(c->node, "allowzero", 0);
    int unknown = -1, has_zero = 0;
    int64_t prod = 1;
    for (int i = 0; i < n; i++) {
        int64_t v = req[i];
        if (v == -1) {
            if (unknown >= 0)
                return qs_op_error(c, QS_EINVAL, "shape has more than one -1");
            unknown = i;
            continue;
        }
        if (v < -1)
            return qs_op_error(c, QS_EINVAL, "shape[%d] = %lld is not a valid dim", i, (long long)v);
        if (v == 0 && !allowzero) {
            if (i >= x->ndim)
                return qs_op_error(c, QS_ESHAPE, "shape[%d] = 0 copies a dim the input (rank %d) does not have", i,
                                   x->ndim);
            v = x->shape[i];
        }
        has_zero |= v == 0;
        shape[i] = v;
        if (v && prod > INT64_MAX / v)
            return shape_error(c, "requested shape", n, req, x);
        prod *= v;
    }
    if (allowzero && has_zero && unknown >= 0)
        return qs_op_error(c, QS_EINVAL, "with allowzero=1 the shape cannot hold both 0 and -1");
    int64_t total = qs_numel(x);
    if (unknown >= 0) {
        if (prod == 0 || total % prod)
            return shape_error(c, "requested shape", n, req, x);
        shape[unknown] = total / prod;
        prod *= shape[unknown];
    }
    if (prod != total)
        return shape_error(c, "requested shape", n, req, x);
    qs_set_shape(c->out[0], x->dtype, n, shape);
    return 0;
}

static int flatten_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    int64_t axis = qs_node_int(c->node, "axis", 1);
    if (axis < -x->ndim || axis > x->ndim)
        return qs_op_error(c, QS_EINVAL, "axis %lld is out of range for rank %d", (long long)axis, x->ndim);
    if (axis < 0)
        axis += x->ndim;
    int64_t shape[2] = { qs_shape_numel((int)axis, x->shape), qs_shape_numel(x->ndim - (int)axis, x->shape + axis) };
    qs_set_shape(c->out[0], x->dtype, 2, shape);
    return 0;
}

/* axes from the attribute (before opset 13) or from input 1 (from 13); returns the count */
static int axes_arg(qs_kctx *c, int64_t *axes)
{
    if (c->opset >= 13) {
        if (!qs_opt_in(c, 1))
            return 0;
        return qs_known_ints(c, 1, "axes", axes, QS_MAX_DIMS);
    }
    const int64_t *v;
    int n = qs_node_ints(c->node, "axes", &v);
    if (n > QS_MAX_DIMS)
        return qs_op_error(c, QS_EINVAL, "axes has %d values, at most %d supported", n, QS_MAX_DIMS);
    if (n)
        memcpy(axes, v, n * sizeof *v);
    return n;
}

static int squeeze_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    int64_t axes[QS_MAX_DIMS], shape[QS_MAX_DIMS];
    int n = axes_arg(c, axes), drop[QS_MAX_DIMS] = { 0 };
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        int a;
        if ((rc = qs_norm_axis(c, axes[i], x->ndim, "axes value", &a)) < 0)
            return rc;
        if (x->shape[a] != 1) {
            char s[160];
            return qs_op_error(c, QS_ESHAPE, "cannot squeeze axis %lld of shape %s: its size is %lld, not 1",
                               (long long)axes[i], qs_shape_str(x->ndim, x->shape, s, sizeof s),
                               (long long)x->shape[a]);
        }
        drop[a] = 1;
    }
    int nd = 0;
    for (int d = 0; d < x->ndim; d++)
        if (!(n ? drop[d] : x->shape[d] == 1))
            shape[nd++] = x->shape[d];
    qs_set_shape(c->out[0], x->dtype, nd, shape);
    return 0;
}

static int unsqueeze_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    int64_t axes[QS_MAX_DIMS], shape[QS_MAX_DIMS];
    int n = axes_arg(c, axes), add[QS_MAX_DIMS] = { 0 };
    if (n < 0)
        return n;
    if (n == 0)
        return qs_op_error(c, QS_EINVAL, "axes are required");
    int r = x->ndim + n;
    if (r > QS_MAX_DIMS)
        return qs_op_error(c, QS_EUNSUPPORTED, "output rank %d exceeds %d", r, QS_MAX_DIMS);
    for (int i = 0; i < n; i++) {
        int a;
        if ((rc = qs_norm_axis(c, axes[i], r, "axes value", &a)) < 0)
            return rc;
        if (add[a])
            return qs_op_error(c, QS_EINVAL, "axis %lld is listed twice", (long long)axes[i]);
        add[a] = 1;
    }
    for (int d = 0, k = 0; d < r; d++)
        shape[d] = add[d] ? 1 : x->shape[k++];
    qs_set_shape(c->out[0], x->dtype, r, shape);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Transpose */

static int transpose_perm(qs_kctx *c, int *perm)
{
    const qs_tensor *x = c->in[0];
    const int64_t *p;
    int n = qs_node_ints(c->node, "perm", &p), seen[QS_MAX_DIMS] = { 0 };
    if (n == 0) {   /* default: reverse the dims */
        for (int d = 0; d < x->ndim; d++)
            perm[d] = x->ndim - 1 - d;
        return 0;
    }
    if (n != x->ndim)
        return qs_op_error(c, QS_EINVAL, "perm has %d values for an input of rank %d", n, x->ndim);
    for (int d = 0; d < n; d++) {
        if (p[d] < 0 || p[d] >= n || seen[p[d]])
            return qs_op_error(c, QS_EINVAL, "perm is not a permutation of 0..%d", n - 1);
        seen[p[d]] = 1;
        perm[d] = (int)p[d];
    }
    return 0;
}

static int transpose_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1), perm[QS_MAX_DIMS];
    if (rc < 0 || (rc = transpose_perm(c, perm)) < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    int64_t shape[QS_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[perm[d]];
    qs_set_shape(c->out[0], x->dtype, x->ndim, shape);
    return 0;
}

static int transpose_forward(qs_kctx *c)
{
    int perm[QS_MAX_DIMS];
    int rc = transpose_perm(c, perm);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    int64_t xst[QS_MAX_DIMS], yst[QS_MAX_DIMS], sst[QS_MAX_DIMS];
    qs_contig_strides(x->ndim, x->shape, xst);
    qs_contig_strides(y->ndim, y->shape, yst);
    for (int d = 0; d < x->ndim; d++)
        sst[d] = xst[perm[d]];   /* output dim d walks input dim perm[d] */
    qs_strided_copy(y->data, yst, x->data, sst, y->ndim, y->shape, qs_dtype_size(x->dtype));
    return 0;
}

static int transpose_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    const qs_tensor *x = c->in[0], *y = c->out[0];
    if (!c->dout[0]) {
        memset(c->din[0]->data, 0, qs_nbytes(c->din[0]));
        return 0;
    }
    int perm[QS_MAX_DIMS];
    int rc = transpose_perm(c, perm);
    if (rc < 0)
        return rc;
    /* walk dout (shaped like y) and write into din at x's positions */
    int64_t xst[QS_MAX_DIMS], yst[QS_MAX_DIMS], dst[QS_MAX_DIMS];
    qs_contig_strides(x->ndim, x->shape, xst);
    qs_contig_strides(y->ndim, y->shape, yst);
    for (int d = 0; d < x->ndim; d++)
        dst[d] = xst[perm[d]];
    qs_strided_copy(c->din[0]->data, dst, c->dout[0]->data, yst, y->ndim, y->shape, sizeof(float));
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Expand: broadcast input and shape (both ways) */

static int expand_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    qs_tensor want;
    memset(&want, 0, sizeof want);
    int n = qs_known_ints(c, 1, "shape", want.shape, QS_MAX_DIMS);
    if (n < 0)
        return n;
    want.ndim = n;
    int nd;
    int64_t shape[QS_MAX_DIMS];
    if ((rc = qs_broadcast_shape(c, c->in[0], &want, &nd, shape)) < 0)
        return rc;
    qs_set_shape(c->out[0], c->in[0]->dtype, nd, shape);
    return 0;
}

static int expand_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    int64_t sst[QS_MAX_DIMS], yst[QS_MAX_DIMS], s = 1;
    for (int d = y->ndim - 1; d >= 0; d--) {
        int id = d - (y->ndim - x->ndim);
        int64_t dim = id >= 0 ? x->shape[id] : 1;
        sst[d] = dim == 1 ? 0 : s;
        s *= dim;
    }
    qs_contig_strides(y->ndim, y->shape, yst);
    qs_strided_copy(y->data, yst, x->data, sst, y->ndim, y->shape, qs_dtype_size(x->dtype));
    return 0;
}

static int expand_backward(qs_kctx *c)
{
    if (c->nin > 1 && c->din[1])
        memset(c->din[1]->data, 0, qs_nbytes(c->din[1]));
    if (!c->din[0])
        return 0;
    if (!c->dout[0]) {
        memset(c->din[0]->data, 0, qs_nbytes(c->din[0]));
        return 0;
    }
    const qs_tensor *y = c->out[0];
    qs_reduce_to(qs_f32(c->din[0]), c->in[0], qs_f32(c->dout[0]), y->ndim, y->shape);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Tile: out[d] = x[d] * repeats[d], element o reads x at o mod x.shape per dim */

static int tile_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    int64_t rep[QS_MAX_DIMS], shape[QS_MAX_DIMS];
    int n = qs_known_ints(c, 1, "repeats", rep, QS_MAX_DIMS);
    if (n < 0)
        return n;
    if (n != x->ndim)
        return qs_op_error(c, QS_EINVAL, "repeats has %d values for an input of rank %d", n, x->ndim);
    for (int d = 0; d < n; d++) {
        if (rep[d] < 0)
            return qs_op_error(c, QS_EINVAL, "repeats[%d] = %lld is negative", d, (long long)rep[d]);
        if (rep[d] && x->shape[d] > INT64_MAX / rep[d])
            return qs_op_error(c, QS_EINVAL, "repeats[%d] = %lld times dim %lld overflows", d, (long long)rep[d],
                               (long long)x->shape[d]);
        shape[d] = x->shape[d] * rep[d];
    }
    qs_set_shape(c->out[0], x->dtype, n, shape);
    return 0;
}

/* Walks the output; BODY sees oi (output index) and xi (input index). */
#define TILE_WALK(BODY)                                                                \
    do {                                                                               \
        int64_t xst[QS_MAX_DIMS], o_[QS_MAX_DIMS] = { 0 }, total_ = qs_numel(y);      \
        qs_contig_strides(x->ndim, x->shape, xst);                                        \
        for (int64_t oi = 0; oi < total_; oi++) {                                      \
            int64_t xi = 0;                                                            \
            for (int d_ = 0; d_ < x->ndim; d_++)                                       \
                xi += (o_[d_] % x->shape[d_]) * xst[d_];                               \
            BODY;                                                                      \
            for (int d_ = x->ndim - 1; d_ >= 0; d_--) {                                \
                if (++o_[d_] < y->shape[d_])                                           \
                    break;                                                             \
                o_[d_] = 0;                                                            \
            }                                                                          \
        }                                                                              \
    } while (0)

static int tile_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0], *y = c->out[0];
    size_t es = qs_dtype_size(x->dtype);
    TILE_WALK(memcpy((char *)y->data + oi * (int64_t)es, (const char *)x->data + xi * (int64_t)es, es));
    return 0;
}

static int tile_backward(qs_kctx *c)
{
    if (c->nin > 1 && c->din[1])
        memset(c->din[1]->data, 0, qs_nbytes(c->din[1]));
    if (!c->din[0])
        return 0;
    const qs_tensor *x = c->in[0], *y = c->out[0];
    float *D = qs_f32(c->din[0]);
    memset(D, 0, qs_nbytes(c->din[0]));
    if (!c->dout[0])
        return 0;
    const float *G = qs_f32(c->dout[0]);
    TILE_WALK(D[xi] += G[oi]);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * DepthToSpace / SpaceToDepth: a reshape to 6-D, a transpose, a reshape back; done as one strided
 * copy through the 6-D view. */

struct d2s_plan {
    int64_t shape[6];   /* the 6-D output view, in output order */
    int64_t src[6];     /* input element stride for each of those dims */
};

static int d2s_plan(qs_kctx *c, struct d2s_plan *pl, int64_t *oshape)
{
    const qs_tensor *x = c->in[0];
    int to_space = !strcmp(c->node->op, "DepthToSpace");
    if (x->ndim != 4)
        return qs_op_error(c, QS_ESHAPE, "input must be 4-D [N, C, H, W], got rank %d", x->ndim);
    int64_t b = qs_node_int(c->node, "blocksize", 0);
    if (b < 1)
        return qs_op_error(c, QS_EINVAL, "blocksize must be >= 1, got %lld", (long long)b);
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t s_n = C * H * W, s_c = H * W, s_h = W;
    if (to_space) {
        if (C % (b * b))
            return qs_op_error(c, QS_ESHAPE, "channels %lld are not divisible by blocksize² = %lld", (long long)C,
                               (long long)(b * b));
        int64_t c2 = C / (b * b);
        const char *mode = qs_node_string(c->node, "mode", "DCR");
        /* output [N, c2, H, b, W, b]; input channel = (b1·b + b2)·c2 + k (DCR) or k·b² + b1·b + b2 (CRD) */
        int64_t st_k, st_b1, st_b2;
        if (!strcmp(mode, "DCR")) {
            st_k = s_c; st_b1 = b * c2 * s_c; st_b2 = c2 * s_c;
        } else if (!strcmp(mode, "CRD")) {
            st_k = b * b * s_c; st_b1 = b * s_c; st_b2 = s_c;
        } else {
            return qs_op_error(c, QS_EINVAL, "mode must be DCR or CRD, got \"%s\"", mode);
        }
        int64_t sh[6] = { N, c2, H, b, W, b }, st[6] = { s_n, st_k, s_h, st_b1, 1, st_b2 };
        memcpy(pl->shape, sh, sizeof sh);
        memcpy(pl->src, st, sizeof st);
        oshape[0] = N; oshape[1] = c2; oshape[2] = H * b; oshape[3] = W * b;
    } else {
        if (H % b || W % b)
            return qs_op_error(c, QS_ESHAPE, "H %lld and W %lld must be divisible by blocksize %lld", (long long)H,
                               (long long)W, (long long)b);
        /* output [N, b1, b2, C, H/b, W/b]: channel (b1·b + b2)·C + k reads x[n, k, h·b + b1, w·b + b2] */
        int64_t sh[6] = { N, b, b, C, H / b, W / b }, st[6] = { s_n, s_h, 1, s_c, b * s_h, b };
        memcpy(pl->shape, sh, sizeof sh);
        memcpy(pl->src, st, sizeof st);
        oshape[0] = N; oshape[1] = C * b * b; oshape[2] = H / b; oshape[3] = W / b;
    }
    return 0;
}

static int d2s_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    struct d2s_plan pl;
    int64_t shape[4];
    if ((rc = d2s_plan(c, &pl, shape)) < 0)
        return rc;
    qs_set_shape(c->out[0], c->in[0]->dtype, 4, shape);
    return 0;
}

static int d2s_forward(qs_kctx *c)
{
    struct d2s_plan pl;
    int64_t shape[4], dst[6];
    int rc = d2s_plan(c, &pl, shape);
    if (rc < 0)
        return rc;
    qs_contig_strides(6, pl.shape, dst);
    qs_strided_copy(c->out[0]->data, dst, c->in[0]->data, pl.src, 6, pl.shape, qs_dtype_size(c->in[0]->dtype));
    return 0;
}

static int d2s_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    if (!c->dout[0]) {
        memset(c->din[0]->data, 0, qs_nbytes(c->din[0]));
        return 0;
    }
    struct d2s_plan pl;
    int64_t shape[4], st[6];
    int rc = d2s_plan(c, &pl, shape);
    if (rc < 0)
        return rc;
    qs_contig_strides(6, pl.shape, st);
    /* a permutation: every input element is written exactly once */
    qs_strided_copy(c->din[0]->data, pl.src, c->dout[0]->data, st, 6, pl.shape, sizeof(float));
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Range(start, limit, delta): needs its inputs at plan time, since they decide the length */

static int range_len(qs_kctx *c, int64_t *n)
{
    for (int i = 0; i < 3; i++) {
        const qs_tensor *t = qs_opt_in(c, i);
        if (!t)
            return qs_op_error(c, QS_EINVAL, "expects 3 inputs (start, limit, delta)");
        if (t->dtype != c->in[0]->dtype || qs_numel(t) != 1)
            return qs_op_error(c, QS_EINVAL, "input %d must be a scalar of type %s", i, qs_dtype_name(c->in[0]->dtype));
        if (!t->data)
            return qs_op_error(c, QS_EUNSUPPORTED, "input %d must be known at plan time (it sets the output length)", i);
    }
    qs_dtype t = c->in[0]->dtype;
    if (t != QS_F32 && t != QS_I64 && t != QS_I32 && t != QS_I16)
        return qs_op_error(c, QS_EUNSUPPORTED, "type %s is not supported", qs_dtype_name(t));
    if (t == QS_F32) {
        double s = qs_get_f64(c->in[0], 0), l = qs_get_f64(c->in[1], 0), d = qs_get_f64(c->in[2], 0);
        if (d == 0 || d != d || s != s || l != l)
            return qs_op_error(c, QS_EINVAL, "delta must be non-zero and the bounds finite");
        double len = ceil((l - s) / d);
        if (!(len < 0x1p62))   /* also inf: the cast below would be undefined */
            return qs_op_error(c, QS_EINVAL, "the range from %g to %g by %g has too many elements", s, l, d);
        *n = len > 0 ? (int64_t)len : 0;
    } else {
        int64_t s = qs_load_i64(c->in[0], 0), l = qs_load_i64(c->in[1], 0), d = qs_load_i64(c->in[2], 0);
        if (d == 0)
            return qs_op_error(c, QS_EINVAL, "delta is 0");
        int64_t span;
        if (__builtin_sub_overflow(l, s, &span) || (span == INT64_MIN && d == -1))
            return qs_op_error(c, QS_EINVAL, "the range from %lld to %lld by %lld has too many elements",
                               (long long)s, (long long)l, (long long)d);
        /* ceil(span / d) when they have the same sign, without the overflow of span + d - 1 */
        *n = (span > 0 && d > 0) || (span < 0 && d < 0) ? span / d + (span % d != 0) : 0;
    }
    return 0;
}

static int range_infer(qs_kctx *c)
{
    int64_t n;
    int rc = range_len(c, &n);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], c->in[0]->dtype, 1, &n);
    return 0;
}

static int range_forward(qs_kctx *c)
{
    qs_tensor *y = c->out[0];
    int64_t n = qs_numel(y);
    if (y->dtype == QS_F32) {
        float s = qs_f32(c->in[0])[0], d = qs_f32(c->in[2])[0];
        for (int64_t i = 0; i < n; i++)
            qs_f32(y)[i] = s + (float)i * d;
    } else {
        int64_t s = qs_load_i64(c->in[0], 0), d = qs_load_i64(c->in[2], 0);
        for (int64_t i = 0; i < n; i++)
            qs_store_i64(y->data, y->dtype, i, s + i * d);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Shape, Size, Constant, ConstantOfShape: values that exist without reading any input data */

static void shape_range(const qs_kctx *c, int r, int *s, int *e)
{
    int64_t start = 0, end = r;
    if (c->opset >= 15) {
        start = qs_node_int(c->node, "start", 0);
        end = qs_node_int(c->node, "end", r);
    }
    if (start < 0)
        start += r;
    if (end < 0)
        end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < 0 ? 0 : end > r ? r : end;
    *s = (int)start;
    *e = (int)(end > start ? end : start);
}

static int shape_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1), s, e;
    if (rc < 0)
        return rc;
    shape_range(c, c->in[0]->ndim, &s, &e);
    int64_t n = e - s;
    qs_set_shape(c->out[0], QS_I64, 1, &n);
    return 0;
}

static int shape_forward(qs_kctx *c)
{
    int s, e;
    shape_range(c, c->in[0]->ndim, &s, &e);
    for (int d = s; d < e; d++)
        qs_i64(c->out[0])[d - s] = c->in[0]->shape[d];
    return 0;
}

static int size_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 1);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_I64, 0, NULL);
    return 0;
}

static int size_forward(qs_kctx *c)
{
    qs_i64(c->out[0])[0] = qs_numel(c->in[0]);
    return 0;
}

/* The one value attribute a Constant carries, as (dtype, shape, bytes). */
static int constant_value(qs_kctx *c, qs_dtype *dt, int *ndim, int64_t *shape, const void **data)
{
    const qs_node *n = c->node;
    int found = 0;
    for (int i = 0; i < n->nattr; i++) {
        const qs_attr *a = &n->attr[i];
        if (strncmp(a->name, "value", 5) && strcmp(a->name, "sparse_value"))
            continue;
        found++;
        if (!strcmp(a->name, "value") && a->t) {
            *dt = a->t->dtype;
            *ndim = a->t->ndim;
            memcpy(shape, a->t->shape, a->t->ndim * sizeof *shape);
            *data = a->t->data;
        } else if (!strcmp(a->name, "value_float")) {
            *dt = QS_F32; *ndim = 0; *data = &a->f;
        } else if (!strcmp(a->name, "value_int")) {
            *dt = QS_I64; *ndim = 0; *data = &a->i;
        } else if (!strcmp(a->name, "value_floats")) {
            *dt = QS_F32; *ndim = 1; shape[0] = a->n; *data = a->floats;
        } else if (!strcmp(a->name, "value_ints")) {
            *dt = QS_I64; *ndim = 1; shape[0] = a->n; *data = a->ints;
        } else {
            return qs_op_error(c, QS_EUNSUPPORTED, "attribute '%s' is not supported", a->name);
        }
    }
    if (found != 1)
        return qs_op_error(c, QS_EINVAL, "needs exactly one value attribute, has %d", found);
    if (!qs_dtype_size(*dt))
        return qs_op_error(c, QS_EUNSUPPORTED, "value type %s is not supported", qs_dtype_name(*dt));
    return 0;
}

static int constant_infer(qs_kctx *c)
{
    qs_dtype dt;
    int nd;
    int64_t shape[QS_MAX_DIMS];
    const void *data;
    int rc = constant_value(c, &dt, &nd, shape, &data);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], dt, nd, shape);
    return 0;
}

static int constant_forward(qs_kctx *c)
{
    qs_dtype dt;
    int nd;
    int64_t shape[QS_MAX_DIMS];
    const void *data;
    int rc = constant_value(c, &dt, &nd, shape, &data);
    if (rc < 0)
        return rc;
    size_t nb = qs_nbytes(c->out[0]);
    if (nb && data)
        memcpy(c->out[0]->data, data, nb);
    return 0;
}

static int cos_value(qs_kctx *c, const qs_tensor **v)
{
    const qs_attr *a = qs_node_attr(c->node, "value");
    *v = a ? a->t : NULL;
    if (a && (!a->t || qs_numel(a->t) != 1 || !qs_dtype_size(a->t->dtype)))
        return qs_op_error(c, QS_EINVAL, "value must be a one-element tensor");
    return 0;
}

static int cos_infer(qs_kctx *c)
{
    const qs_tensor *v;
    int64_t shape[QS_MAX_DIMS];
    int rc = cos_value(c, &v);
    if (rc < 0)
        return rc;
    int n = qs_known_ints(c, 0, "shape", shape, QS_MAX_DIMS);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++)
        if (shape[i] < 0)
            return qs_op_error(c, QS_EINVAL, "shape[%d] = %lld is negative", i, (long long)shape[i]);
    qs_set_shape(c->out[0], v ? v->dtype : QS_F32, n, shape);
    return 0;
}

static int cos_forward(qs_kctx *c)
{
    const qs_tensor *v;
    int rc = cos_value(c, &v);
    if (rc < 0)
        return rc;
    qs_tensor *y = c->out[0];
    size_t es = qs_dtype_size(y->dtype);
    if (!v || !v->data) {
        memset(y->data, 0, qs_nbytes(y));
        return 0;
    }
    for (int64_t i = 0; i < qs_numel(y); i++)
        memcpy((char *)y->data + i * (int64_t)es, v->data, es);
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */

#define VIEW(name, inf)                                                                                        \
    { .domain = "", .op = name, .flags = QS_OP_VIEW, .infer = inf, .forward = view_forward, .backward = view_backward }

const qs_op_def qs_ops_shape[] = {
    VIEW("Identity", identity_infer), VIEW("Reshape", reshape_infer), VIEW("Flatten", flatten_infer),
    VIEW("Squeeze", squeeze_infer), VIEW("Unsqueeze", unsqueeze_infer),
    { .domain = "", .op = "Dropout", .infer = dropout_infer, .forward = dropout_forward, .backward = view_backward },
    { .domain = "", .op = "Transpose", .infer = transpose_infer, .forward = transpose_forward,
      .backward = transpose_backward },
    { .domain = "", .op = "Expand", .infer = expand_infer, .forward = expand_forward, .backward = expand_backward },
    { .domain = "", .op = "Tile", .infer = tile_infer, .forward = tile_forward, .backward = tile_backward },
    { .domain = "", .op = "DepthToSpace", .infer = d2s_infer, .forward = d2s_forward, .backward = d2s_backward },
    { .domain = "", .op = "SpaceToDepth", .infer = d2s_infer, .forward = d2s_forward, .backward = d2s_backward },
    { .domain = "", .op = "Range", .infer = range_infer, .forward = range_forward },
    { .domain = "", .op = "Shape", .flags = QS_OP_SHAPE_ONLY, .infer = shape_infer, .forward = shape_forward },
    { .domain = "", .op = "Size", .infer = size_infer, .forward = size_forward },
    { .domain = "", .op = "Constant", .infer = constant_infer, .forward = constant_forward },
    { .domain = "", .op = "ConstantOfShape", .infer = cos_infer, .forward = cos_forward },
    { .op = NULL },
};
