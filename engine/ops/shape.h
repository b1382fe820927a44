/* What the two shape-op families share: shape.c (views, Transpose, Expand, Tile, DepthToSpace, Range,
 * Shape, Size, Constant, …) and shape_index.c (Concat, Split, Slice, Gather, Pad). Both move bytes
 * of any element size, and their layout changes come down to one strided copy:
 *
 *   int64_t xst[QS_MAX_DIMS];
 *   qs_contig_strides(x->ndim, x->shape, xst);          // then scale, permute or zero some of them
 *   qs_strided_copy(y->data, yst, x->data, xst, y->ndim, y->shape, qs_dtype_size(x->dtype));
 *
 * Static inline, like opsutil.h, so that each family compiles the copy into its own loops. */
#ifndef QS_OPS_SHAPE_H
#define QS_OPS_SHAPE_H

#include <stdint.h>
#include <string.h>

#include "ops/opsutil.h"

/* shape_index.c's op table; registry.c lists it beside qs_ops_shape[] */
extern const qs_op_def qs_ops_shape_index[];

/* Element strides of a contiguous tensor of this shape. */
static inline void qs_contig_strides(int ndim, const int64_t *shape, int64_t *st)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= shape[d];
    }
}

/* dst[Σ i_d·dst_st[d]] = src[Σ i_d·src_st[d]] over the index space shape[ndim] (element strides). */
static inline void qs_strided_copy(char *dst, const int64_t *dst_st, const char *src, const int64_t *src_st,
                                   int ndim, const int64_t *shape, size_t es)
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

/* Inputs 0..n-1 are present, and input 0 has a type the byte-moving kernels know the size of. */
static inline int qs_need_inputs(qs_kctx *c, int n)
{
    for (int i = 0; i < n; i++)
        if (i >= c->nin || !c->in[i])
            return qs_op_error(c, QS_EINVAL, "missing input %d", i);
    if (!qs_dtype_size(c->in[0]->dtype))
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(c->in[0]->dtype));
    return 0;
}

#endif
