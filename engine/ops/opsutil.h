/* Small helpers shared by the light op families (elementwise, activation, shape): optional inputs,
 * axis normalisation, reading shape-like int lists, and the broadcasting iterator.
 *
 * Broadcasting: qs_bcast describes an iteration space (the output shape, or the input shape for a
 * reduction) and, for up to QS_BCAST_MAXOPS operands, element strides with 0 along broadcast dims.
 * Adjacent dims that every operand walks contiguously are merged, so a same-shape Add becomes one
 * flat loop and [N,C,H,W] + [1,C,1,1] becomes rows of H*W with a scalar per row. The innermost
 * stride of each operand is then 0 or 1, and kernels specialise their inner loop on that:
 *
 *   qs_bcast b; const qs_tensor *ops[3] = {a, bb, y};
 *   qs_bcast_init(&b, y->ndim, y->shape, 3, ops);
 *   qs_bcast_pos p; qs_bcast_start(&p);
 *   for (int64_t r = 0; r < qs_bcast_rows(&b); r++, qs_bcast_next(&b, &p))
 *       ... row r: operand k starts at p.off[k], steps b.st[k][b.ndim - 1] for b.shape[b.ndim - 1]
 *
 * Everything is static inline so that each family compiles it into its own loops. */
#ifndef QS_OPSUTIL_H
#define QS_OPSUTIL_H

#include <stdint.h>
#include <string.h>

#include "ops/ops.h"

/* in[i], or NULL when the input is absent (past nin or omitted) */
static inline qs_tensor *qs_opt_in(const qs_kctx *c, int i)
{
    return i < c->nin ? c->in[i] : NULL;
}

/* Maps axis in [-rank, rank) to [0, rank); refuses others naming the attribute/input. */
static inline int qs_norm_axis(qs_kctx *c, int64_t axis, int rank, const char *what, int *out)
{
    *out = 0;
    if (axis < -rank || axis >= rank || rank == 0)
        return qs_op_error(c, QS_EINVAL, "%s %lld is out of range for rank %d", what, (long long)axis, rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return 0;
}

/* Reads a shape-like int32/int64 input (1-D or scalar) that must be known at plan time.
 * Returns the count (>= 0) and fills up to max values, or a negative error naming the input. */
static inline int qs_known_ints(qs_kctx *c, int i, const char *what, int64_t *v, int max)
{
    const qs_tensor *t = qs_opt_in(c, i);
    if (!t)
        return qs_op_error(c, QS_EINVAL, "missing input %d (%s)", i, what);
    if (!t->data)
        return qs_op_error(c, QS_EUNSUPPORTED,
                           "input %d (%s) must be known at plan time (an initializer, a Constant, or "
                           "computed from them), but it is computed at run time", i, what);
    if (t->dtype != QS_I64 && t->dtype != QS_I32)
        return qs_op_error(c, QS_EINVAL, "input %d (%s) must be int64 or int32, got %s", i, what,
                           qs_dtype_name(t->dtype));
    if (t->ndim > 1)
        return qs_op_error(c, QS_EINVAL, "input %d (%s) must be 1-D, got rank %d", i, what, t->ndim);
    int64_t n = qs_numel(t);
    if (n > max)
        return qs_op_error(c, QS_EINVAL, "input %d (%s) has %lld values, at most %d supported", i, what,
                           (long long)n, max);
    for (int64_t k = 0; k < n; k++)
        v[k] = qs_get_i64(t, k);
    return (int)n;
}

/* Element stores for the generic (non-float32) paths. Float to integer conversion truncates toward
 * zero like C, but NaN and out-of-range values are defined here (NaN → 0, saturate to int64, then
 * keep the low bits as numpy's astype does) instead of being undefined behaviour. */
static inline int64_t qs_f64_to_i64(double v)
{
    if (v != v)
        return 0;
    if (v >= 9223372036854775807.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}

static inline void qs_store_i64(void *data, qs_dtype t, int64_t i, int64_t v)
{
    switch (t) {
    case QS_F32: ((float *)data)[i] = (float)v; break;
    case QS_F64: ((double *)data)[i] = (double)v; break;
    case QS_I64: ((int64_t *)data)[i] = v; break;
    case QS_I32: ((int32_t *)data)[i] = (int32_t)(uint32_t)v; break;
    case QS_I16: ((int16_t *)data)[i] = (int16_t)(uint16_t)v; break;
    case QS_U16: ((uint16_t *)data)[i] = (uint16_t)v; break;
    case QS_I8: case QS_I4: ((int8_t *)data)[i] = (int8_t)(uint8_t)v; break;
    case QS_U8: case QS_U4: ((uint8_t *)data)[i] = (uint8_t)v; break;
    case QS_BOOL: ((uint8_t *)data)[i] = v != 0; break;
    default: break;
    }
}

static inline void qs_store_f64(void *data, qs_dtype t, int64_t i, double v)
{
    switch (t) {
    case QS_F32: ((float *)data)[i] = (float)v; break;
    case QS_F64: ((double *)data)[i] = v; break;
    case QS_BOOL: ((uint8_t *)data)[i] = v != 0; break;
    default: qs_store_i64(data, t, i, qs_f64_to_i64(v)); break;
    }
}

/* Exact integer load (qs_get_i64 goes through double for small types, which is exact too). */
static inline int64_t qs_load_i64(const qs_tensor *t, int64_t i)
{
    return t->dtype == QS_I64 ? ((const int64_t *)t->data)[i] : qs_get_i64(t, i);
}

/* The numeric types the generic kernels handle. */
static inline int qs_dtype_numeric(qs_dtype t)
{
    switch (t) {
    case QS_F32: case QS_F64: case QS_I64: case QS_I32: case QS_I16: case QS_U16: case QS_I8: case QS_U8:
        return 1;
    default:
        return 0;
    }
}

/* for (int64_t i = 0; i < n; i++) { body } in blocks of 16: GCC's vectorizer at -O2 only takes
 * loops it can replace entirely, which a fixed 16-trip inner loop is; ivdep because an output may
 * be the very buffer of an input (in-place elementwise), which is never a cross-iteration hazard. */
#if defined(__clang__)
#define QS_IVDEP_   /* clang has no ivdep; asking it to vectorize warns where it cannot */
#else
#define QS_IVDEP_ _Pragma("GCC ivdep")
#endif
#define QS_VFOR(i, n, ...)                                                             \
    do {                                                                               \
        int64_t i##_b_ = 0, i##_n_ = (n);                                              \
        for (; i##_b_ + 16 <= i##_n_; i##_b_ += 16) {                                  \
            QS_IVDEP_                                                                  \
            for (int i##_k_ = 0; i##_k_ < 16; i##_k_++) {                              \
                int64_t i = i##_b_ + i##_k_;                                           \
                __VA_ARGS__;                                                           \
            }                                                                          \
        }                                                                              \
        for (int64_t i = i##_b_; i < i##_n_; i++) {                                    \
            __VA_ARGS__;                                                               \
        }                                                                              \
    } while (0)

#define QS_BCAST_MAXOPS 4

typedef struct qs_bcast {
    int ndim;                                 /* >= 1 */
    int nops;
    int64_t shape[QS_MAX_DIMS];
    int64_t st[QS_BCAST_MAXOPS][QS_MAX_DIMS]; /* element strides; 0 along broadcast dims */
} qs_bcast;

typedef struct qs_bcast_pos {
    int64_t idx[QS_MAX_DIMS];
    int64_t off[QS_BCAST_MAXOPS];
} qs_bcast_pos;

/* Each operand's shape must broadcast to shape (right-aligned, dims equal or 1); the caller
 * checked that at infer time. */
static inline void qs_bcast_init(qs_bcast *b, int ndim, const int64_t *shape, int nops,
                                 const qs_tensor *const *ops)
{
    int64_t st[QS_BCAST_MAXOPS][QS_MAX_DIMS];
    for (int k = 0; k < nops; k++) {
        int64_t s = 1;
        for (int d = ndim - 1; d >= 0; d--) {
            int id = d - (ndim - ops[k]->ndim);
            int64_t dim = id >= 0 ? ops[k]->shape[id] : 1;
            st[k][d] = dim == 1 ? 0 : s;
            s *= dim;
        }
    }
    b->nops = nops;
    b->ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1)
            continue;   /* contributes nothing to any offset */
        int n = b->ndim, merge = n > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = b->st[k][n - 1] == st[k][d] * shape[d];
        if (merge) {
            b->shape[n - 1] *= shape[d];
            for (int k = 0; k < nops; k++)
                b->st[k][n - 1] = st[k][d];
        } else {
            b->shape[n] = shape[d];
            for (int k = 0; k < nops; k++)
                b->st[k][n] = st[k][d];
            b->ndim++;
        }
    }
    if (b->ndim == 0) {
        b->ndim = 1;
        b->shape[0] = 1;
        for (int k = 0; k < nops; k++)
            b->st[k][0] = 0;
    }
}

static inline int64_t qs_bcast_inner(const qs_bcast *b) { return b->shape[b->ndim - 1]; }

static inline int64_t qs_bcast_rows(const qs_bcast *b)
{
    int64_t r = 1;
    for (int d = 0; d < b->ndim - 1; d++)
        r *= b->shape[d];
    return qs_bcast_inner(b) ? r : 0;
}

static inline void qs_bcast_start(qs_bcast_pos *p) { memset(p, 0, sizeof *p); }

/* Advances p to the next row (all dims but the innermost). */
static inline void qs_bcast_next(const qs_bcast *b, qs_bcast_pos *p)
{
    for (int d = b->ndim - 2; d >= 0; d--) {
        p->idx[d]++;
        for (int k = 0; k < b->nops; k++)
            p->off[k] += b->st[k][d];
        if (p->idx[d] < b->shape[d])
            return;
        for (int k = 0; k < b->nops; k++)
            p->off[k] -= b->st[k][d] * b->shape[d];
        p->idx[d] = 0;
    }
}

/* Checks that t broadcasts to shape (one-directionally: t's dims are 1 or equal). */
static inline int qs_broadcasts_to(const qs_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim > ndim)
        return 0;
    for (int i = 0; i < t->ndim; i++) {
        int64_t d = t->shape[t->ndim - 1 - i];
        if (d != 1 && d != shape[ndim - 1 - i])
            return 0;
    }
    return 1;
}

/* Sums g (shaped like the iteration space shape[ndim]) into dst, shaped like t which broadcasts
 * to it: the gradient of a broadcast. dst is overwritten. */
static inline void qs_reduce_to(float *dst, const qs_tensor *t, const float *g, int ndim, const int64_t *shape)
{
    qs_tensor full;
    memset(&full, 0, sizeof full);
    full.ndim = ndim;
    memcpy(full.shape, shape, ndim * sizeof *shape);
    const qs_tensor *ops[2] = { t, &full };
    qs_bcast b;
    qs_bcast_init(&b, ndim, shape, 2, ops);
    memset(dst, 0, (size_t)qs_numel(t) * sizeof *dst);
    int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b);
    int64_t sd = b.st[0][b.ndim - 1];
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p)) {
        float *d = dst + p.off[0];
        const float *s = g + p.off[1];
        if (sd) {
            for (int64_t i = 0; i < n; i++)
                d[i] += s[i];
        } else {
            double acc = 0;
            for (int64_t i = 0; i < n; i++)
                acc += s[i];
            d[0] += (float)acc;
        }
    }
}

#endif
