/* Shape ops: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout (inference), Transpose, Concat,
 * Split, Slice, Gather, Pad, Expand, Tile, DepthToSpace, SpaceToDepth, Shape, Size, Constant,
 * ConstantOfShape, Range.
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

#include "ops/opsutil.h"

static void contig_strides(int ndim, const int64_t *shape, int64_t *st)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= shape[d];
    }
}

/* dst[Σ i_d·dst_st[d]] = src[Σ i_d·src_st[d]] over the index space shape[ndim] (element strides). */
static void strided_copy(char *dst, const int64_t *dst_st, const char *src, const int64_t *src_st, int ndim,
                         const int64_t *shape, size_t es)
{
    int64_t total = qs_shape_numel(ndim, shape);
    if (total == 0)
        return;
    if (ndim == 0) {
        memcpy(dst, src, es);
        return;
    }
    int64_t n = shape[ndim - 1], sd = dst_st[ndim - 1], ss = src_st[ndim - 1];
    int64_t rows = total / n, idx[QS_MAX_DIMS] = { 0 }, od = 0, os = 0;
    for (int64_t r = 0; r < rows; r++) {
        char *d = dst + od * (int64_t)es;
        const char *s = src + os * (int64_t)es;
        if (sd == 1 && ss == 1)
            memcpy(d, s, n * es);
        else if (es == 4)
            for (int64_t i = 0; i < n; i++)
                memcpy(d + i * sd * 4, s + i * ss * 4, 4);
        else
            for (int64_t i = 0; i < n; i++)
                memcpy(d + i * sd * (int64_t)es, s + i * ss * (int64_t)es, es);
        for (int k = ndim - 2; k >= 0; k--) {
            idx[k]++;
            od += dst_st[k];
            os += src_st[k];
            if (idx[k] < shape[k])
                break;
            od -= dst_st[k] * shape[k];
            os -= src_st[k] * shape[k];
            idx[k] = 0;
        }
    }
}

static int need_input(qs_kctx *c, int n)
{
    for (int i = 0; i < n; i++)
        if (i >= c->nin || !c->in[i])
            return qs_op_error(c, QS_EINVAL, "missing input %d", i);
    if (!qs_dtype_size(c->in[0]->dtype))
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(c->in[0]->dtype));
    return 0;
}

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
    int rc = need_input(c, 1);
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
    int rc = need_input(c, 1);
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
    int rc = need_input(c, 1);
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
    int rc = need_input(c, 1);
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
    int rc = need_input(c, 1);
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
    int rc = need_input(c, 1), perm[QS_MAX_DIMS];
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
    contig_strides(x->ndim, x->shape, xst);
    contig_strides(y->ndim, y->shape, yst);
    for (int d = 0; d < x->ndim; d++)
        sst[d] = xst[perm[d]];   /* output dim d walks input dim perm[d] */
    strided_copy(y->data, yst, x->data, sst, y->ndim, y->shape, qs_dtype_size(x->dtype));
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
    contig_strides(x->ndim, x->shape, xst);
    contig_strides(y->ndim, y->shape, yst);
    for (int d = 0; d < x->ndim; d++)
        dst[d] = xst[perm[d]];
    strided_copy(c->din[0]->data, dst, c->dout[0]->data, yst, y->ndim, y->shape, sizeof(float));
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Concat and Split: blocks of (outer, dim·inner) along the axis */

static int concat_axis(qs_kctx *c, int *axis)
{
    const qs_attr *a = qs_node_attr(c->node, "axis");
    if (!a && c->opset >= 4)
        return qs_op_error(c, QS_EINVAL, "missing attribute 'axis'");
    return qs_norm_axis(c, a ? a->i : 1, c->in[0]->ndim, "axis", axis);
}

static int concat_infer(qs_kctx *c)
{
    if (c->nin < 1)
        return qs_op_error(c, QS_EINVAL, "expects at least 1 input");
    int rc = need_input(c, c->nin), axis;
    if (rc < 0 || (rc = concat_axis(c, &axis)) < 0)
        return rc;
    const qs_tensor *x0 = c->in[0];
    int64_t shape[QS_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    for (int i = 1; i < c->nin; i++) {
        const qs_tensor *x = c->in[i];
        if (x->dtype != x0->dtype)
            return qs_op_error(c, QS_EINVAL, "input %d has type %s, input 0 has %s", i, qs_dtype_name(x->dtype),
                               qs_dtype_name(x0->dtype));
        int ok = x->ndim == x0->ndim;
        for (int d = 0; ok && d < x->ndim; d++)
            ok = d == axis || x->shape[d] == x0->shape[d];
        if (!ok) {
            char a[160], b[160];
            return qs_op_error(c, QS_ESHAPE, "input %d of shape %s does not fit input 0 of shape %s along axis %d",
                               i, qs_shape_str(x->ndim, x->shape, a, sizeof a),
                               qs_shape_str(x0->ndim, x0->shape, b, sizeof b), axis);
        }
        shape[axis] += x->shape[axis];
    }
    qs_set_shape(c->out[0], x0->dtype, x0->ndim, shape);
    return 0;
}

/* Copies the inputs' blocks into the output, one (outer, dim·inner) block per input. */
static int concat_forward(qs_kctx *c)
{
    int axis;
    concat_axis(c, &axis);
    qs_tensor *y = c->out[0];
    size_t es = qs_dtype_size(y->dtype);
    int64_t outer = qs_shape_numel(axis, y->shape);
    int64_t inner = qs_shape_numel(y->ndim - axis - 1, y->shape + axis + 1) * (int64_t)es;
    int64_t row = y->shape[axis] * inner, at = 0;
    for (int i = 0; i < c->nin; i++) {
        int64_t blk = c->in[i]->shape[axis] * inner;
        for (int64_t o = 0; o < outer && blk; o++)
            memcpy((char *)y->data + o * row + at, (const char *)c->in[i]->data + o * blk, blk);
        at += blk;
    }
    return 0;
}

static int concat_backward(qs_kctx *c)
{
    int axis;
    concat_axis(c, &axis);
    const qs_tensor *g = c->dout[0], *y = c->out[0];
    int64_t outer = qs_shape_numel(axis, y->shape);
    int64_t inner = qs_shape_numel(y->ndim - axis - 1, y->shape + axis + 1) * (int64_t)sizeof(float);
    int64_t row = y->shape[axis] * inner, at = 0;
    for (int i = 0; i < c->nin; i++) {
        int64_t blk = c->in[i]->shape[axis] * inner;
        qs_tensor *d = c->din[i];
        if (d && !g)
            memset(d->data, 0, qs_nbytes(d));
        else if (d)
            for (int64_t o = 0; o < outer && blk; o++)
                memcpy((char *)d->data + o * blk, (const char *)g->data + o * row + at, blk);
        at += blk;   /* inputs without a requested gradient still take their place */
    }
    return 0;
}

/* Split sizes from the split attribute (before 13) or input (13+), else equal parts; from opset 18
 * num_outputs may leave a smaller last part. */
static int split_sizes(qs_kctx *c, int axis, int64_t *sizes)
{
    const qs_tensor *x = c->in[0];
    int nout = c->nout;
    int64_t dim = x->shape[axis], v[256];
    if (nout > 256)
        return qs_op_error(c, QS_EUNSUPPORTED, "at most 256 outputs supported");
    int n = 0;
    if (c->opset >= 13 && qs_opt_in(c, 1)) {
        if ((n = qs_known_ints(c, 1, "split", v, 256)) < 0)
            return n;
    } else if (c->opset < 13) {
        const int64_t *a;
        n = qs_node_ints(c->node, "split", &a);
        if (n > 256)
            return qs_op_error(c, QS_EUNSUPPORTED, "at most 256 parts supported");
        if (n)
            memcpy(v, a, n * sizeof *a);
    }
    if (n) {
        if (n != nout)
            return qs_op_error(c, QS_EINVAL, "split has %d values for %d outputs", n, nout);
        int64_t sum = 0;
        for (int i = 0; i < n; i++) {
            if (v[i] < 0)
                return qs_op_error(c, QS_EINVAL, "split[%d] = %lld is negative", i, (long long)v[i]);
            sizes[i] = v[i];
            sum += v[i];
        }
        if (sum != dim)
            return qs_op_error(c, QS_ESHAPE, "split sums to %lld but axis %d has size %lld", (long long)sum, axis,
                               (long long)dim);
        return 0;
    }
    const qs_attr *no = qs_node_attr(c->node, "num_outputs");
    if (c->opset >= 18 && no) {
        if (no->i != nout)
            return qs_op_error(c, QS_EINVAL, "num_outputs is %lld but the node has %d outputs", (long long)no->i,
                               nout);
        int64_t chunk = (dim + nout - 1) / nout;
        for (int i = 0; i < nout; i++) {
            int64_t left = dim - chunk * i;
            sizes[i] = left < 0 ? 0 : left < chunk ? left : chunk;
        }
        return 0;
    }
    if (nout == 0 || dim % nout)
        return qs_op_error(c, QS_ESHAPE, "axis %d of size %lld does not split into %d equal parts", axis,
                           (long long)dim, nout);
    for (int i = 0; i < nout; i++)
        sizes[i] = dim / nout;
    return 0;
}

static int split_infer(qs_kctx *c)
{
    int rc = need_input(c, 1), axis;
    if (rc < 0 || (rc = qs_norm_axis(c, qs_node_int(c->node, "axis", 0), c->in[0]->ndim, "axis", &axis)) < 0)
        return rc;
    int64_t sizes[256];
    if ((rc = split_sizes(c, axis, sizes)) < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    for (int i = 0; i < c->nout; i++) {
        int64_t shape[QS_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[axis] = sizes[i];
        if (c->out[i])
            qs_set_shape(c->out[i], x->dtype, x->ndim, shape);
    }
    return 0;
}

static int split_forward(qs_kctx *c)
{
    int axis;
    qs_norm_axis(c, qs_node_int(c->node, "axis", 0), c->in[0]->ndim, "axis", &axis);
    int64_t sizes[256];
    int rc = split_sizes(c, axis, sizes);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    size_t es = qs_dtype_size(x->dtype);
    int64_t outer = qs_shape_numel(axis, x->shape);
    int64_t inner = qs_shape_numel(x->ndim - axis - 1, x->shape + axis + 1) * (int64_t)es;
    int64_t row = x->shape[axis] * inner, at = 0;
    for (int i = 0; i < c->nout; i++) {
        int64_t blk = sizes[i] * inner;
        if (c->out[i])   /* omitted outputs still take their share of the axis */
            for (int64_t o = 0; o < outer && blk; o++)
                memcpy((char *)c->out[i]->data + o * blk, (const char *)x->data + o * row + at, blk);
        at += blk;
    }
    return 0;
}

static int split_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    for (int i = 1; i < c->nin; i++)
        if (c->din[i])
            memset(c->din[i]->data, 0, qs_nbytes(c->din[i]));
    int axis;
    qs_norm_axis(c, qs_node_int(c->node, "axis", 0), c->in[0]->ndim, "axis", &axis);
    int64_t sizes[256];
    int rc = split_sizes(c, axis, sizes);
    if (rc < 0)
        return rc;
    qs_tensor *d = c->din[0];
    int64_t outer = qs_shape_numel(axis, d->shape);
    int64_t inner = qs_shape_numel(d->ndim - axis - 1, d->shape + axis + 1) * (int64_t)sizeof(float);
    int64_t row = d->shape[axis] * inner, at = 0;
    for (int i = 0; i < c->nout; i++) {
        int64_t blk = sizes[i] * inner;
        const qs_tensor *g = c->dout[i];
        for (int64_t o = 0; o < outer && blk; o++) {
            char *w = (char *)d->data + o * row + at;
            if (g)
                memcpy(w, (const char *)g->data + o * blk, blk);
            else
                memset(w, 0, blk);
        }
        at += blk;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Slice */

struct slice_plan {
    int64_t start[QS_MAX_DIMS], step[QS_MAX_DIMS], count[QS_MAX_DIMS];
};

static int slice_plan(qs_kctx *c, struct slice_plan *sp)
{
    const qs_tensor *x = c->in[0];
    int r = x->ndim;
    int64_t starts[QS_MAX_DIMS], ends[QS_MAX_DIMS], axes[QS_MAX_DIMS], steps[QS_MAX_DIMS];
    int n, na = -1, ns = -1;
    if (c->opset >= 10) {
        if ((n = qs_known_ints(c, 1, "starts", starts, QS_MAX_DIMS)) < 0)
            return n;
        int ne = qs_known_ints(c, 2, "ends", ends, QS_MAX_DIMS);
        if (ne < 0)
            return ne;
        if (ne != n)
            return qs_op_error(c, QS_EINVAL, "starts has %d values but ends has %d", n, ne);
        if (qs_opt_in(c, 3) && (na = qs_known_ints(c, 3, "axes", axes, QS_MAX_DIMS)) < 0)
            return na;
        if (qs_opt_in(c, 4) && (ns = qs_known_ints(c, 4, "steps", steps, QS_MAX_DIMS)) < 0)
            return ns;
    } else {
        const int64_t *s, *e, *a;
        n = qs_node_ints(c->node, "starts", &s);
        int ne = qs_node_ints(c->node, "ends", &e);
        if (ne != n || n > QS_MAX_DIMS)
            return qs_op_error(c, QS_EINVAL, "starts has %d values but ends has %d", n, ne);
        if (n)
            memcpy(starts, s, n * sizeof *s);
        if (n)
            memcpy(ends, e, n * sizeof *e);
        if (qs_node_attr(c->node, "axes")) {
            na = qs_node_ints(c->node, "axes", &a);
            if (na > QS_MAX_DIMS)
                return qs_op_error(c, QS_EINVAL, "axes has %d values", na);
            if (na)
                memcpy(axes, a, na * sizeof *a);
        }
    }
    if (na >= 0 && na != n)
        return qs_op_error(c, QS_EINVAL, "axes has %d values but starts has %d", na, n);
    if (ns >= 0 && ns != n)
        return qs_op_error(c, QS_EINVAL, "steps has %d values but starts has %d", ns, n);
    int seen[QS_MAX_DIMS] = { 0 };
    for (int d = 0; d < r; d++) {
        sp->start[d] = 0;
        sp->step[d] = 1;
        sp->count[d] = x->shape[d];
    }
    for (int i = 0; i < n; i++) {
        int a = i;
        if (na >= 0) {
            int rc = qs_norm_axis(c, axes[i], r, "axes value", &a);
            if (rc < 0)
                return rc;
        } else if (i >= r) {
            return qs_op_error(c, QS_EINVAL, "%d starts for an input of rank %d", n, r);
        }
        if (seen[a])
            return qs_op_error(c, QS_EINVAL, "axis %d is sliced twice", a);
        seen[a] = 1;
        int64_t dim = x->shape[a], st = ns >= 0 ? steps[i] : 1, s = starts[i], e = ends[i];
        if (st == 0)
            return qs_op_error(c, QS_EINVAL, "steps[%d] is 0", i);
        if (s < 0)
            s += dim;
        if (e < 0)
            e += dim;
        int64_t cnt;
        if (st > 0) {
            s = s < 0 ? 0 : s > dim ? dim : s;
            e = e < 0 ? 0 : e > dim ? dim : e;
            cnt = e > s ? (e - s + st - 1) / st : 0;
        } else {
            s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
            e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
            cnt = s > e ? (s - e + (-st) - 1) / (-st) : 0;
        }
        sp->start[a] = cnt ? s : 0;
        sp->step[a] = st;
        sp->count[a] = cnt;
    }
    return 0;
}

static int slice_infer(qs_kctx *c)
{
    int rc = need_input(c, 1);
    if (rc < 0)
        return rc;
    struct slice_plan sp;
    if ((rc = slice_plan(c, &sp)) < 0)
        return rc;
    qs_set_shape(c->out[0], c->in[0]->dtype, c->in[0]->ndim, sp.count);
    return 0;
}

/* The input's strides for the slice, and the element offset of the first selected element. */
static int64_t slice_strides(const qs_tensor *x, const struct slice_plan *sp, int64_t *sst)
{
    int64_t xst[QS_MAX_DIMS], off = 0;
    contig_strides(x->ndim, x->shape, xst);
    for (int d = 0; d < x->ndim; d++) {
        sst[d] = xst[d] * sp->step[d];
        off += sp->start[d] * xst[d];
    }
    return off;
}

static int slice_forward(qs_kctx *c)
{
    struct slice_plan sp;
    int rc = slice_plan(c, &sp);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    size_t es = qs_dtype_size(x->dtype);
    int64_t sst[QS_MAX_DIMS], yst[QS_MAX_DIMS];
    int64_t off = slice_strides(x, &sp, sst);
    contig_strides(y->ndim, y->shape, yst);
    strided_copy(y->data, yst, (const char *)x->data + off * (int64_t)es, sst, y->ndim, y->shape, es);
    return 0;
}

static int slice_backward(qs_kctx *c)
{
    for (int i = 1; i < c->nin; i++)
        if (c->din[i])
            memset(c->din[i]->data, 0, qs_nbytes(c->din[i]));
    if (!c->din[0])
        return 0;
    qs_tensor *d = c->din[0];
    memset(d->data, 0, qs_nbytes(d));
    if (!c->dout[0])
        return 0;
    struct slice_plan sp;
    int rc = slice_plan(c, &sp);
    if (rc < 0)
        return rc;
    const qs_tensor *y = c->out[0];
    int64_t sst[QS_MAX_DIMS], yst[QS_MAX_DIMS];
    int64_t off = slice_strides(c->in[0], &sp, sst);
    contig_strides(y->ndim, y->shape, yst);
    strided_copy((char *)d->data + off * (int64_t)sizeof(float), sst, c->dout[0]->data, yst, y->ndim, y->shape,
                 sizeof(float));
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Gather: out = data[:axis] + indices.shape + data[axis+1:] */

static int gather_infer(qs_kctx *c)
{
    int rc = need_input(c, 2), axis;
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0], *idx = c->in[1];
    if ((rc = qs_norm_axis(c, qs_node_int(c->node, "axis", 0), x->ndim, "axis", &axis)) < 0)
        return rc;
    if (idx->dtype != QS_I64 && idx->dtype != QS_I32)
        return qs_op_error(c, QS_EINVAL, "indices must be int64 or int32, got %s", qs_dtype_name(idx->dtype));
    int r = x->ndim - 1 + idx->ndim;
    if (r > QS_MAX_DIMS)
        return qs_op_error(c, QS_EUNSUPPORTED, "output rank %d exceeds %d", r, QS_MAX_DIMS);
    int64_t shape[QS_MAX_DIMS];
    int k = 0;
    for (int d = 0; d < axis; d++)
        shape[k++] = x->shape[d];
    for (int d = 0; d < idx->ndim; d++)
        shape[k++] = idx->shape[d];
    for (int d = axis + 1; d < x->ndim; d++)
        shape[k++] = x->shape[d];
    qs_set_shape(c->out[0], x->dtype, r, shape);
    return 0;
}

/* Calls back per (outer o, index position j, source row) with byte offsets; checks indices. */
static int gather_index(qs_kctx *c, int axis, int64_t j, int64_t *row)
{
    const qs_tensor *x = c->in[0], *idx = c->in[1];
    int64_t dim = x->shape[axis], v = qs_load_i64(idx, j);
    if (v < -dim || v >= dim)
        return qs_op_error(c, QS_EINVAL, "index %lld is out of range for axis %d of size %lld", (long long)v, axis,
                           (long long)dim);
    *row = v < 0 ? v + dim : v;
    return 0;
}

static int gather_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0], *idx = c->in[1];
    int axis;
    qs_norm_axis(c, qs_node_int(c->node, "axis", 0), x->ndim, "axis", &axis);
    size_t es = qs_dtype_size(x->dtype);
    int64_t outer = qs_shape_numel(axis, x->shape), dim = x->shape[axis], nidx = qs_numel(idx);
    int64_t inner = qs_shape_numel(x->ndim - axis - 1, x->shape + axis + 1) * (int64_t)es;
    char *Y = c->out[0]->data;
    for (int64_t j = 0; j < nidx; j++) {
        int64_t row;
        int rc = gather_index(c, axis, j, &row);
        if (rc < 0)
            return rc;
        for (int64_t o = 0; o < outer; o++)
            memcpy(Y + (o * nidx + j) * inner, (const char *)x->data + (o * dim + row) * inner, inner);
    }
    return 0;
}

static int gather_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    const qs_tensor *x = c->in[0], *idx = c->in[1];
    float *D = qs_f32(c->din[0]);
    memset(D, 0, qs_nbytes(c->din[0]));
    if (!c->dout[0])
        return 0;
    int axis;
    qs_norm_axis(c, qs_node_int(c->node, "axis", 0), x->ndim, "axis", &axis);
    int64_t outer = qs_shape_numel(axis, x->shape), dim = x->shape[axis], nidx = qs_numel(idx);
    int64_t inner = qs_shape_numel(x->ndim - axis - 1, x->shape + axis + 1);
    const float *G = qs_f32(c->dout[0]);
    for (int64_t j = 0; j < nidx; j++) {
        int64_t row;
        int rc = gather_index(c, axis, j, &row);
        if (rc < 0)
            return rc;
        for (int64_t o = 0; o < outer; o++) {
            float *d = D + (o * dim + row) * inner;
            const float *g = G + (o * nidx + j) * inner;
            for (int64_t i = 0; i < inner; i++)
                d[i] += g[i];   /* repeated indices add up */
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Pad: pads [x1_begin, x2_begin, …, x1_end, x2_end, …] (negative pads crop) */

enum padmode { P_CONSTANT, P_REFLECT, P_EDGE, P_WRAP };

struct pad_plan {
    enum padmode mode;
    int64_t begin[QS_MAX_DIMS];
    uint8_t value[8];   /* the constant, in the data's type */
};

static int pad_plan(qs_kctx *c, struct pad_plan *pp, int64_t *oshape)
{
    const qs_tensor *x = c->in[0];
    int r = x->ndim;
    const char *mode = qs_node_string(c->node, "mode", "constant");
    if (!strcmp(mode, "constant")) pp->mode = P_CONSTANT;
    else if (!strcmp(mode, "reflect")) pp->mode = P_REFLECT;
    else if (!strcmp(mode, "edge")) pp->mode = P_EDGE;
    else if (!strcmp(mode, "wrap") && c->opset >= 19) pp->mode = P_WRAP;
    else return qs_op_error(c, QS_EINVAL, "mode \"%s\" is not supported (constant, reflect, edge, wrap)", mode);
    int64_t pads[2 * QS_MAX_DIMS], axes[QS_MAX_DIMS];
    int np, na = r;
    memset(pp->value, 0, sizeof pp->value);
    if (c->opset >= 11) {
        if ((np = qs_known_ints(c, 1, "pads", pads, 2 * QS_MAX_DIMS)) < 0)
            return np;
        if (qs_opt_in(c, 3)) {
            if ((na = qs_known_ints(c, 3, "axes", axes, QS_MAX_DIMS)) < 0)
                return na;
        } else {
            for (int d = 0; d < r; d++)
                axes[d] = d;
        }
        const qs_tensor *v = qs_opt_in(c, 2);
        if (v) {
            if (v->dtype != x->dtype || qs_numel(v) != 1)
                return qs_op_error(c, QS_EINVAL, "constant_value must be one %s value", qs_dtype_name(x->dtype));
            if (v->data)
                memcpy(pp->value, v->data, qs_dtype_size(v->dtype));
        }
    } else {
        const int64_t *p;
        np = qs_node_ints(c->node, c->opset < 2 ? "paddings" : "pads", &p);
        if (np > 2 * QS_MAX_DIMS)
            return qs_op_error(c, QS_EINVAL, "pads has %d values for rank %d", np, r);
        if (np)
            memcpy(pads, p, np * sizeof *p);
        for (int d = 0; d < r; d++)
            axes[d] = d;
        qs_store_f64(pp->value, x->dtype, 0, qs_node_float(c->node, "value", 0.f));
    }
    if (np != 2 * na)
        return qs_op_error(c, QS_EINVAL, "pads has %d values, expected %d (2 per padded axis)", np, 2 * na);
    int64_t end[QS_MAX_DIMS];
    for (int d = 0; d < r; d++)
        pp->begin[d] = end[d] = 0;
    for (int i = 0; i < na; i++) {
        int a;
        int rc = qs_norm_axis(c, axes[i], r, "axes value", &a);
        if (rc < 0)
            return rc;
        pp->begin[a] = pads[i];
        end[a] = pads[na + i];
    }
    for (int d = 0; d < r; d++) {
        oshape[d] = x->shape[d] + pp->begin[d] + end[d];
        if (oshape[d] < 0)
            return qs_op_error(c, QS_ESHAPE, "pads %lld and %lld crop axis %d of size %lld below zero",
                               (long long)pp->begin[d], (long long)end[d], d, (long long)x->shape[d]);
        if (pp->mode != P_CONSTANT && x->shape[d] == 0 && oshape[d] > 0)
            return qs_op_error(c, QS_ESHAPE, "mode %s cannot pad the empty axis %d", mode, d);
    }
    return 0;
}

/* Input coordinate of output coordinate o along one dim, or -1 for the constant. */
static int64_t pad_map(enum padmode m, int64_t o, int64_t begin, int64_t dim)
{
    int64_t i = o - begin;
    if (i >= 0 && i < dim)
        return i;
    switch (m) {
    case P_CONSTANT: return -1;
    case P_EDGE: return i < 0 ? 0 : dim - 1;
    case P_WRAP: return ((i % dim) + dim) % dim;
    case P_REFLECT: {
        if (dim == 1)
            return 0;
        int64_t period = 2 * (dim - 1), k = ((i % period) + period) % period;
        return k < dim ? k : period - k;
    }
    }
    return -1;
}

static int pad_infer(qs_kctx *c)
{
    int rc = need_input(c, 1);
    if (rc < 0)
        return rc;
    struct pad_plan pp;
    int64_t shape[QS_MAX_DIMS];
    if ((rc = pad_plan(c, &pp, shape)) < 0)
        return rc;
    qs_set_shape(c->out[0], c->in[0]->dtype, c->in[0]->ndim, shape);
    return 0;
}

/* Walks the output; per element calls with the output index and the input index (-1: constant). */
#define PAD_WALK(BODY)                                                                 \
    do {                                                                               \
        int64_t xst[QS_MAX_DIMS], o_[QS_MAX_DIMS] = { 0 }, total_ = qs_numel(y);      \
        contig_strides(x->ndim, x->shape, xst);                                        \
        for (int64_t oi = 0; oi < total_; oi++) {                                      \
            int64_t xi = 0;                                                            \
            for (int d_ = 0; d_ < x->ndim && xi >= 0; d_++) {                          \
                int64_t m_ = pad_map(pp.mode, o_[d_], pp.begin[d_], x->shape[d_]);     \
                xi = m_ < 0 ? -1 : xi + m_ * xst[d_];                                  \
            }                                                                          \
            BODY;                                                                      \
            for (int d_ = x->ndim - 1; d_ >= 0; d_--) {                                \
                if (++o_[d_] < y->shape[d_])                                           \
                    break;                                                             \
                o_[d_] = 0;                                                            \
            }                                                                          \
        }                                                                              \
    } while (0)

static int pad_forward(qs_kctx *c)
{
    struct pad_plan pp;
    int64_t shape[QS_MAX_DIMS];
    int rc = pad_plan(c, &pp, shape);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    size_t es = qs_dtype_size(x->dtype);
    char *Y = y->data;
    const char *X = x->data;
    PAD_WALK(memcpy(Y + oi * (int64_t)es, xi < 0 ? (const char *)pp.value : X + xi * (int64_t)es, es));
    return 0;
}

static int pad_backward(qs_kctx *c)
{
    for (int i = 1; i < c->nin; i++)
        if (c->din[i])
            memset(c->din[i]->data, 0, qs_nbytes(c->din[i]));
    if (c->din[0])
        memset(c->din[0]->data, 0, qs_nbytes(c->din[0]));
    if (!c->dout[0])
        return 0;
    struct pad_plan pp;
    int64_t shape[QS_MAX_DIMS];
    int rc = pad_plan(c, &pp, shape);
    if (rc < 0)
        return rc;
    const qs_tensor *x = c->in[0], *y = c->out[0];
    float *D = c->din[0] ? qs_f32(c->din[0]) : NULL;
    const float *G = qs_f32(c->dout[0]);
    double dv = 0;
    PAD_WALK(if (xi < 0) dv += G[oi]; else if (D) D[xi] += G[oi]);
    /* the constant's gradient: every padded position holds it */
    if (c->opset >= 11 && c->nin > 2 && c->din[2])
        qs_f32(c->din[2])[0] = (float)dv;
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Expand: broadcast input and shape (both ways) */

static int expand_infer(qs_kctx *c)
{
    int rc = need_input(c, 1);
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
    contig_strides(y->ndim, y->shape, yst);
    strided_copy(y->data, yst, x->data, sst, y->ndim, y->shape, qs_dtype_size(x->dtype));
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
    int rc = need_input(c, 1);
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
        contig_strides(x->ndim, x->shape, xst);                                        \
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
    int rc = need_input(c, 1);
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
    contig_strides(6, pl.shape, dst);
    strided_copy(c->out[0]->data, dst, c->in[0]->data, pl.src, 6, pl.shape, qs_dtype_size(c->in[0]->dtype));
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
    contig_strides(6, pl.shape, st);
    /* a permutation: every input element is written exactly once */
    strided_copy(c->din[0]->data, pl.src, c->dout[0]->data, st, 6, pl.shape, sizeof(float));
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
    int rc = need_input(c, 1), s, e;
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
    int rc = need_input(c, 1);
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

#define VIEW(name, inf) { .domain = "", .op = name, .infer = inf, .forward = view_forward, .backward = view_backward }

const qs_op_def qs_ops_shape[] = {
    VIEW("Identity", identity_infer), VIEW("Reshape", reshape_infer), VIEW("Flatten", flatten_infer),
    VIEW("Squeeze", squeeze_infer), VIEW("Unsqueeze", unsqueeze_infer),
    { .domain = "", .op = "Dropout", .infer = dropout_infer, .forward = dropout_forward, .backward = view_backward },
    { .domain = "", .op = "Transpose", .infer = transpose_infer, .forward = transpose_forward,
      .backward = transpose_backward },
    { .domain = "", .op = "Concat", .infer = concat_infer, .forward = concat_forward, .backward = concat_backward },
    { .domain = "", .op = "Split", .infer = split_infer, .forward = split_forward, .backward = split_backward },
    { .domain = "", .op = "Slice", .infer = slice_infer, .forward = slice_forward, .backward = slice_backward },
    { .domain = "", .op = "Gather", .infer = gather_infer, .forward = gather_forward, .backward = gather_backward },
    { .domain = "", .op = "Pad", .infer = pad_infer, .forward = pad_forward, .backward = pad_backward },
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
