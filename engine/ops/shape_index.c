/* Shape ops that read or write the input at computed positions along axes: Concat, Split, Slice,
 * Gather, Pad. The rest of the shape family (views, Transpose, Expand, Tile, DepthToSpace, Range,
 * Shape, Constant, …) is in shape.c, and what both use in ops/shape.h.
 *
 * Concat and Split copy blocks of (outer, dim·inner) bytes; Slice is one strided copy (the step
 * scales the stride); Gather copies one inner block per outer position and index; Pad maps each
 * output position to an input position per dim (constant, reflect, edge or wrap). Starts, ends,
 * pads, split sizes and axes must be known at plan time; Gather's indices need not be. Backward is
 * float32: Concat and Split swap roles, Slice/Gather/Pad scatter the gradient back (adding where
 * indices repeat). */
#include <string.h>

#include "ops/shape.h"

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
    int rc = qs_need_inputs(c, c->nin), axis;
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
    int rc = qs_need_inputs(c, 1), axis;
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
    int rc = qs_need_inputs(c, 1);
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
    qs_contig_strides(x->ndim, x->shape, xst);
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
    qs_contig_strides(y->ndim, y->shape, yst);
    qs_strided_copy(y->data, yst, (const char *)x->data + off * (int64_t)es, sst, y->ndim, y->shape, es);
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
    qs_contig_strides(y->ndim, y->shape, yst);
    qs_strided_copy((char *)d->data + off * (int64_t)sizeof(float), sst, c->dout[0]->data, yst, y->ndim, y->shape,
                 sizeof(float));
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Gather: out = data[:axis] + indices.shape + data[axis+1:] */

static int gather_infer(qs_kctx *c)
{
    int rc = qs_need_inputs(c, 2), axis;
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
    int rc = qs_need_inputs(c, 1);
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
        qs_contig_strides(x->ndim, x->shape, xst);                                        \
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

/* ------------------------------------------------------------------------------------------------ */

const qs_op_def qs_ops_shape_index[] = {
    { .domain = "", .op = "Concat", .infer = concat_infer, .forward = concat_forward, .backward = concat_backward },
    { .domain = "", .op = "Split", .infer = split_infer, .forward = split_forward, .backward = split_backward },
    { .domain = "", .op = "Slice", .infer = slice_infer, .forward = slice_forward, .backward = slice_backward },
    { .domain = "", .op = "Gather", .infer = gather_infer, .forward = gather_forward, .backward = gather_backward },
    { .domain = "", .op = "Pad", .infer = pad_infer, .forward = pad_forward, .backward = pad_backward },
    { .op = NULL },
};
