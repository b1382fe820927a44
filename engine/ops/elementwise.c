/* Elementwise ops: binary arithmetic with numpy broadcasting (Add, Sub, Mul, Div, Pow), variadic
 * Max/Min/Sum/Mean, comparisons (Equal, Less, Greater, …) and logic (And, Or, Xor, Not), Where,
 * unary math (Sqrt, Exp, Log, Neg, Abs, …), Cast and CastLike. (Reductions and ArgMax/ArgMin are in
 * reduce.c.)
 *
 * Design: float32 is the compute type and gets tight loops. Binary ops iterate with qs_bcast
 * (opsutil.h), which merges dims so that the cases that matter — same shape (residual Add), a
 * per-channel [1,C,1,1] operand after a conv, a scalar — reduce to flat inner loops with a
 * broadcast stride of 0 or 1, specialised below. Every other numeric type (int64 shape arithmetic,
 * uint8/int8 tensors, float64) takes a generic path that computes in int64 (integer outputs, with
 * numpy's wrap-around on store) or double (float outputs). Backward is float32 only; gradients of a
 * broadcast operand are summed over its broadcast dims. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ops/blocked.h"
#include "ops/opsutil.h"

/* ------------------------------------------------------------------------------------------------
 * binary ops */

enum binop { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN, B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND, B_OR, B_XOR };

static enum binop binop_of(const qs_kctx *c)
{
    static const char *const names[] = { "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less",
                                         "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor" };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(c->node->op, names[i]))
            return (enum binop)i;
    return B_ADD;
}

static int is_compare(enum binop op) { return op >= B_EQ; }   /* bool output */
static int is_logical(enum binop op) { return op >= B_AND; }  /* bool inputs */

/* The operand headers as broadcasting sees them. Before opset 7, Add/Sub/Mul/Div broadcast only
 * with broadcast=1, aligning B at `axis` of A (suffix matching when absent); padding B's shape
 * with trailing 1s turns that into numpy broadcasting. */
static int bin_operands(qs_kctx *c, qs_tensor *a, qs_tensor *b)
{
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "expects 2 inputs, got %d", c->nin);
    *a = *c->in[0];
    *b = *c->in[1];
    if (c->opset < 7 && !is_compare(binop_of(c)) && qs_node_int(c->node, "broadcast", 0) &&
        qs_node_attr(c->node, "axis")) {
        int axis;
        int rc = qs_norm_axis(c, qs_node_int(c->node, "axis", 0), a->ndim, "axis", &axis);
        if (rc < 0)
            return rc;
        int trail = a->ndim - axis - b->ndim;
        if (trail < 0)
            return qs_op_error(c, QS_ESHAPE, "legacy broadcast: B of rank %d does not fit A of rank %d at axis %d",
                               b->ndim, a->ndim, axis);
        for (int i = 0; i < trail; i++)
            b->shape[b->ndim++] = 1;
    }
    return 0;
}

static int bin_infer(qs_kctx *c)
{
    qs_tensor a, b;
    int rc = bin_operands(c, &a, &b);
    if (rc < 0)
        return rc;
    enum binop op = binop_of(c);
    if (is_logical(op) ? a.dtype != QS_BOOL : !qs_dtype_numeric(a.dtype) && !(op == B_EQ && a.dtype == QS_BOOL))
        return qs_op_error(c, is_logical(op) ? QS_EINVAL : QS_EUNSUPPORTED, "input type %s is not supported",
                           qs_dtype_name(a.dtype));
    if (op == B_POW) {
        if (!qs_dtype_numeric(b.dtype))
            return qs_op_error(c, QS_EUNSUPPORTED, "exponent type %s is not supported", qs_dtype_name(b.dtype));
    } else if (a.dtype != b.dtype) {
        return qs_op_error(c, QS_EINVAL, "inputs have different types (%s and %s)", qs_dtype_name(a.dtype),
                           qs_dtype_name(b.dtype));
    }
    int nd;
    int64_t shape[QS_MAX_DIMS];
    if ((rc = qs_broadcast_shape(c, &a, &b, &nd, shape)) < 0)
        return rc;
    qs_set_shape(c->out[0], is_compare(op) ? QS_BOOL : a.dtype, nd, shape);
    return 0;
}

/* One row of a float32 binary op, the four stride cases spelled out so the compiler vectorises
 * the common ones: both contiguous, or one side a scalar for the row. */
#define BIN_ROW(EXPR)                                                                          \
    do {                                                                                       \
        if (sa && sb)                                                                          \
            QS_VFOR(i, n, float x = pa[i]; float y = pb[i]; po[i] = (EXPR));                   \
        else if (sa) {                                                                         \
            float y = pb[0];                                                                   \
            QS_VFOR(i, n, float x = pa[i]; po[i] = (EXPR));                                    \
        } else if (sb) {                                                                       \
            float x = pa[0];                                                                   \
            QS_VFOR(i, n, float y = pb[i]; po[i] = (EXPR));                                    \
        } else {                                                                               \
            float x = pa[0], y = pb[0];                                                        \
            QS_VFOR(i, n, po[i] = (EXPR));                                                     \
        }                                                                                      \
    } while (0)

/* one row: n elements of O from A and B at strides sa, sb (0: the row's one value) */
static inline void bin_row(enum binop op, const float *pa, int64_t sa, const float *pb, int64_t sb, float *po,
                           int64_t n)
{
    switch (op) {
    case B_ADD: BIN_ROW(x + y); break;
    case B_SUB: BIN_ROW(x - y); break;
    case B_MUL: BIN_ROW(x * y); break;
    case B_DIV: BIN_ROW(x / y); break;
    case B_POW: BIN_ROW(powf(x, y)); break;
    /* NaN propagates, as numpy's maximum/minimum do */
    case B_MAX: BIN_ROW(x >= y || x != x ? x : y); break;
    case B_MIN: BIN_ROW(x <= y || x != x ? x : y); break;
    default: break;
    }
}

static void bin_f32(enum binop op, const qs_bcast *b, const float *A, const float *B, float *O)
{
    int64_t n = qs_bcast_inner(b), rows = qs_bcast_rows(b);
    int64_t sa = b->st[0][b->ndim - 1], sb = b->st[1][b->ndim - 1];
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(b, &p))
        bin_row(op, A + p.off[0], sa, B + p.off[1], sb, O + p.off[2], n);
}

/* Operands of one shape (no broadcasting: a residual Add, a Mul by a gate): the flat range split
 * across the pool, element by element, so any split gives the same bits. Forward writes o; backward
 * (Add, Sub, Mul) writes da and db as 0 + the contribution, the bits of bin_backward's general path
 * (zeroed, then added to). */
typedef struct {
    enum binop op;
    const float *a, *b, *g;
    float *o, *da, *db;
} bin_flat_job;

static void bin_flat_fwd(void *arg, int64_t b0, int64_t e0, int worker)
{
    const bin_flat_job *j = arg;
    bin_row(j->op, j->a + b0, 1, j->b + b0, 1, j->o + b0, e0 - b0);
}

static void bin_flat_bwd(void *arg, int64_t b0, int64_t e0, int worker)
{
    const bin_flat_job *j = arg;
    const float *A = j->a, *B = j->b, *G = j->g;
    float *dA = j->da, *dB = j->db;
    if (dA) {
        if (j->op == B_MUL)
            QS_VFOR(i, e0 - b0, dA[b0 + i] = 0.f + G[b0 + i] * B[b0 + i]);
        else
            QS_VFOR(i, e0 - b0, dA[b0 + i] = 0.f + G[b0 + i]);
    }
    if (dB) {
        if (j->op == B_MUL)
            QS_VFOR(i, e0 - b0, dB[b0 + i] = 0.f + G[b0 + i] * A[b0 + i]);
        else if (j->op == B_SUB)
            QS_VFOR(i, e0 - b0, dB[b0 + i] = 0.f + -G[b0 + i]);
        else
            QS_VFOR(i, e0 - b0, dB[b0 + i] = 0.f + G[b0 + i]);
    }
}

/* x^y for integers as numpy computes it (wrapping); negative exponents give 1/x^|y| truncated. */
static int64_t ipow(int64_t x, int64_t y)
{
    if (y < 0)
        return x == 1 ? 1 : x == -1 ? (y % 2 ? -1 : 1) : 0;
    uint64_t r = 1, base = (uint64_t)x;
    while (y) {
        if (y & 1)
            r *= base;
        base *= base;
        y >>= 1;
    }
    return (int64_t)r;
}

static int bin_generic(qs_kctx *c, enum binop op, const qs_bcast *b, const qs_tensor *A, const qs_tensor *B,
                       qs_tensor *O)
{
    int64_t n = qs_bcast_inner(b), rows = qs_bcast_rows(b);
    int64_t sa = b->st[0][b->ndim - 1], sb = b->st[1][b->ndim - 1];
    /* integers compute exactly in int64; anything involving a float in double */
    int as_int = qs_dtype_is_int(A->dtype) && qs_dtype_is_int(B->dtype);
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(b, &p)) {
        for (int64_t i = 0; i < n; i++) {
            int64_t ia = p.off[0] + i * sa, ib = p.off[1] + i * sb, io = p.off[2] + i;
            if (as_int) {
                int64_t x = qs_load_i64(A, ia), y = qs_load_i64(B, ib), v = 0;
                switch (op) {
                case B_ADD: v = (int64_t)((uint64_t)x + (uint64_t)y); break;
                case B_SUB: v = (int64_t)((uint64_t)x - (uint64_t)y); break;
                case B_MUL: v = (int64_t)((uint64_t)x * (uint64_t)y); break;
                case B_DIV:
                    if (y == 0)
                        return qs_op_error(c, QS_EINVAL, "integer division by zero");
                    v = (x == INT64_MIN && y == -1) ? INT64_MIN : x / y;
                    break;
                case B_POW: v = ipow(x, y); break;
                case B_MAX: v = x > y ? x : y; break;
                case B_MIN: v = x < y ? x : y; break;
                case B_EQ: v = x == y; break;
                case B_LT: v = x < y; break;
                case B_GT: v = x > y; break;
                case B_LE: v = x <= y; break;
                case B_GE: v = x >= y; break;
                case B_AND: v = x && y; break;
                case B_OR: v = x || y; break;
                case B_XOR: v = !x != !y; break;
                }
                qs_store_i64(O->data, O->dtype, io, v);
            } else {
                double x = qs_get_f64(A, ia), y = qs_get_f64(B, ib), v = 0;
                switch (op) {
                case B_ADD: v = x + y; break;
                case B_SUB: v = x - y; break;
                case B_MUL: v = x * y; break;
                case B_DIV: v = x / y; break;
                case B_POW: v = pow(x, y); break;
                case B_MAX: v = x >= y || x != x ? x : y; break;
                case B_MIN: v = x <= y || x != x ? x : y; break;
                case B_EQ: v = x == y; break;
                case B_LT: v = x < y; break;
                case B_GT: v = x > y; break;
                case B_LE: v = x <= y; break;
                case B_GE: v = x >= y; break;
                default: break;   /* logical ops have integer (bool) inputs */
                }
                qs_store_f64(O->data, O->dtype, io, v);
            }
        }
    }
    return 0;
}

static int bin_forward(qs_kctx *c)
{
    qs_tensor a, b;
    int rc = bin_operands(c, &a, &b);
    if (rc < 0)
        return rc;
    if (c->layout)   /* a squeeze-excitation gate between blocked activations (blocked.c) */
        return qs_blocked_gate(c);
    qs_tensor *o = c->out[0];
    enum binop op = binop_of(c);
    const qs_tensor *ops[3] = { &a, &b, o };
    qs_bcast bc;
    qs_bcast_init(&bc, o->ndim, o->shape, 3, ops);
    if (a.dtype == QS_F32 && b.dtype == QS_F32 && o->dtype == QS_F32) {
        if (qs_shape_eq(&a, o) && qs_shape_eq(&b, o)) {
            bin_flat_job j = { .op = op, .a = qs_f32(&a), .b = qs_f32(&b), .o = qs_f32(o) };
            qs_threadpool_for(c->pool, c->nthreads, qs_numel(o), 16384, bin_flat_fwd, &j);
        } else {
            bin_f32(op, &bc, qs_f32(&a), qs_f32(&b), qs_f32(o));
        }
        return 0;
    }
    return bin_generic(c, op, &bc, &a, &b, o);
}

/* Gradient contributions per element; x = a, y = b, o = output, g = its gradient. */
#define BIN_BWD(GA, GB)                                                        \
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&bc, &p))                 \
        for (int64_t i = 0; i < n; i++) {                                      \
            int64_t ia = p.off[0] + i * sa, ib = p.off[1] + i * sb, io = p.off[2] + i; \
            float x = A[ia], y = B ? B[ib] : (float)qs_get_f64(&b, ib), g = G[io], o = O[io]; \
            (void)x; (void)y; (void)o;                                         \
            if (dA) dA[ia] += (GA);                                            \
            if (dB) dB[ib] += (GB);                                            \
        }

static int bin_backward(qs_kctx *c)
{
    qs_tensor a, b;
    int rc = bin_operands(c, &a, &b);
    if (rc < 0)
        return rc;
    enum binop op = binop_of(c);
    qs_tensor *dta = c->din ? c->din[0] : NULL, *dtb = c->din && c->nin > 1 ? c->din[1] : NULL;
    float *dA = dta ? qs_f32(dta) : NULL, *dB = dtb ? qs_f32(dtb) : NULL;
    const qs_tensor *gt = c->dout ? c->dout[0] : NULL;
    if (gt && (dA || dB) && (op == B_ADD || op == B_SUB || op == B_MUL) && a.dtype == QS_F32 &&
        b.dtype == QS_F32 && qs_shape_eq(&a, c->out[0]) && qs_shape_eq(&b, c->out[0])) {
        bin_flat_job j = { .op = op, .a = qs_f32(&a), .b = qs_f32(&b), .g = qs_f32(gt), .da = dA, .db = dB };
        qs_threadpool_for(c->pool, c->nthreads, qs_numel(c->out[0]), 16384, bin_flat_bwd, &j);
        return 0;
    }
    if (dA)
        memset(dA, 0, qs_nbytes(dta));
    if (dB)
        memset(dB, 0, qs_nbytes(dtb));
    if (!gt || (!dA && !dB))
        return 0;
    if (a.dtype != QS_F32 || (b.dtype != QS_F32 && op != B_POW))
        return qs_op_error(c, QS_EUNSUPPORTED, "backward needs float32 inputs");
    const qs_tensor *y = c->out[0];
    const qs_tensor *ops[3] = { &a, &b, y };
    qs_bcast bc;
    qs_bcast_init(&bc, y->ndim, y->shape, 3, ops);
    int64_t n = qs_bcast_inner(&bc), rows = qs_bcast_rows(&bc);
    int64_t sa = bc.st[0][bc.ndim - 1], sb = bc.st[1][bc.ndim - 1];
    const float *A = qs_f32(&a), *B = b.dtype == QS_F32 ? qs_f32(&b) : NULL, *G = qs_f32(gt), *O = qs_f32(y);
    qs_bcast_pos p;
    qs_bcast_start(&p);
    switch (op) {
    case B_ADD: BIN_BWD(g, g); break;
    case B_SUB: BIN_BWD(g, -g); break;
    case B_MUL: BIN_BWD(g * y, g * x); break;
    case B_DIV: BIN_BWD(g / y, -g * x / (y * y)); break;
    /* d/dx x^y = y·x^(y-1); d/dy x^y = x^y·ln x, taken as 0 where ln x is undefined (x <= 0) */
    case B_POW: BIN_BWD(y == 0 ? 0.f : g * y * powf(x, y - 1), x > 0 ? g * o * logf(x) : 0.f); break;
    default: break;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * variadic Max, Min, Sum, Mean: a fold of the binary kernels over all inputs, broadcasting */

static enum binop var_op(const qs_kctx *c)
{
    const char *op = c->node->op;
    return !strcmp(op, "Max") ? B_MAX : !strcmp(op, "Min") ? B_MIN : B_ADD;
}

static int var_infer(qs_kctx *c)
{
    if (c->nin < 1)
        return qs_op_error(c, QS_EINVAL, "expects at least 1 input");
    qs_tensor acc;
    memset(&acc, 0, sizeof acc);
    for (int i = 0; i < c->nin; i++) {
        const qs_tensor *x = c->in[i];
        if (!x)
            return qs_op_error(c, QS_EINVAL, "input %d is missing", i);
        if (!qs_dtype_numeric(x->dtype))
            return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(x->dtype));
        if (x->dtype != c->in[0]->dtype)
            return qs_op_error(c, QS_EINVAL, "input %d has type %s, input 0 has %s", i, qs_dtype_name(x->dtype),
                               qs_dtype_name(c->in[0]->dtype));
        int rc = qs_broadcast_shape(c, &acc, x, &acc.ndim, acc.shape);
        if (rc < 0)
            return rc;
    }
    qs_set_shape(c->out[0], c->in[0]->dtype, acc.ndim, acc.shape);
    return 0;
}

static int var_forward(qs_kctx *c)
{
    qs_tensor *o = c->out[0];
    enum binop op = var_op(c);
    size_t es = qs_dtype_size(o->dtype);
    /* o = in[0] broadcast, then o = o ⊕ in[i] in place (o is the full shape, so offsets coincide) */
    {
        const qs_tensor *ops[2] = { c->in[0], o };
        qs_bcast b;
        qs_bcast_init(&b, o->ndim, o->shape, 2, ops);
        int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b), s0 = b.st[0][b.ndim - 1];
        qs_bcast_pos p;
        qs_bcast_start(&p);
        for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p))
            for (int64_t i = 0; i < n; i++)
                memcpy((char *)o->data + (p.off[1] + i) * es, (const char *)c->in[0]->data + (p.off[0] + i * s0) * es, es);
    }
    for (int k = 1; k < c->nin; k++) {
        const qs_tensor *ops[3] = { o, c->in[k], o };
        qs_bcast b;
        qs_bcast_init(&b, o->ndim, o->shape, 3, ops);
        if (o->dtype == QS_F32)
            bin_f32(op, &b, qs_f32(o), qs_f32(c->in[k]), qs_f32(o));
        else {
            int rc = bin_generic(c, op, &b, o, c->in[k], o);
            if (rc < 0)
                return rc;
        }
    }
    if (!strcmp(c->node->op, "Mean"))
        for (int64_t i = 0; i < qs_numel(o); i++)
            qs_store_f64(o->data, o->dtype, i, qs_get_f64(o, i) / c->nin);
    return 0;
}

static int var_backward(qs_kctx *c)
{
    const qs_tensor *o = c->out[0], *gt = c->dout[0];
    enum binop op = var_op(c);
    float scale = !strcmp(c->node->op, "Mean") ? 1.f / (float)c->nin : 1.f;
    for (int k = 0; k < c->nin; k++) {
        if (!c->din[k])
            continue;
        float *D = qs_f32(c->din[k]);
        memset(D, 0, qs_nbytes(c->din[k]));
        if (!gt || o->dtype != QS_F32)
            continue;
        const qs_tensor *ops[2] = { c->in[k], o };
        qs_bcast b;
        qs_bcast_init(&b, o->ndim, o->shape, 2, ops);
        int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b), sk = b.st[0][b.ndim - 1];
        const float *X = qs_f32(c->in[k]), *O = qs_f32(o), *G = qs_f32(gt);
        qs_bcast_pos p;
        qs_bcast_start(&p);
        for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p))
            for (int64_t i = 0; i < n; i++) {
                int64_t ix = p.off[0] + i * sk, io = p.off[1] + i;
                /* Max/Min: the input(s) that supplied the result get the gradient */
                if (op == B_ADD || X[ix] == O[io])
                    D[ix] += G[io] * scale;
            }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Where(condition, X, Y): three-way broadcasting, dtype-generic by bytes */

static int where_infer(qs_kctx *c)
{
    if (c->nin != 3 || !c->in[0] || !c->in[1] || !c->in[2])
        return qs_op_error(c, QS_EINVAL, "expects 3 inputs (condition, X, Y)");
    const qs_tensor *cond = c->in[0], *x = c->in[1], *y = c->in[2];
    if (cond->dtype != QS_BOOL)
        return qs_op_error(c, QS_EINVAL, "condition must be bool, got %s", qs_dtype_name(cond->dtype));
    if (x->dtype != y->dtype || !qs_dtype_size(x->dtype))
        return qs_op_error(c, QS_EINVAL, "X and Y must have the same type (%s and %s)", qs_dtype_name(x->dtype),
                           qs_dtype_name(y->dtype));
    qs_tensor t;
    memset(&t, 0, sizeof t);
    int rc = qs_broadcast_shape(c, x, y, &t.ndim, t.shape);
    if (rc < 0)
        return rc;
    int nd;
    int64_t shape[QS_MAX_DIMS];
    if ((rc = qs_broadcast_shape(c, cond, &t, &nd, shape)) < 0)
        return rc;
    qs_set_shape(c->out[0], x->dtype, nd, shape);
    return 0;
}

static int where_forward(qs_kctx *c)
{
    const qs_tensor *cond = c->in[0], *x = c->in[1], *y = c->in[2];
    qs_tensor *o = c->out[0];
    const qs_tensor *ops[4] = { cond, x, y, o };
    qs_bcast b;
    qs_bcast_init(&b, o->ndim, o->shape, 4, ops);
    size_t es = qs_dtype_size(o->dtype);
    int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b);
    int64_t sc = b.st[0][b.ndim - 1], sx = b.st[1][b.ndim - 1], sy = b.st[2][b.ndim - 1];
    const uint8_t *C = qs_u8(cond);
    const char *X = x->data, *Y = y->data;
    char *O = o->data;
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p))
        for (int64_t i = 0; i < n; i++) {
            const char *src = C[p.off[0] + i * sc] ? X + (p.off[1] + i * sx) * es : Y + (p.off[2] + i * sy) * es;
            memcpy(O + (p.off[3] + i) * es, src, es);
        }
    return 0;
}

static int where_backward(qs_kctx *c)
{
    const qs_tensor *cond = c->in[0], *x = c->in[1], *y = c->in[2], *o = c->out[0];
    float *dX = c->din[1] ? qs_f32(c->din[1]) : NULL, *dY = c->din[2] ? qs_f32(c->din[2]) : NULL;
    if (dX)
        memset(dX, 0, qs_nbytes(c->din[1]));
    if (dY)
        memset(dY, 0, qs_nbytes(c->din[2]));
    const qs_tensor *gt = c->dout[0];
    if (!gt || o->dtype != QS_F32)
        return 0;
    const qs_tensor *ops[4] = { cond, x, y, o };
    qs_bcast b;
    qs_bcast_init(&b, o->ndim, o->shape, 4, ops);
    int64_t n = qs_bcast_inner(&b), rows = qs_bcast_rows(&b);
    int64_t sc = b.st[0][b.ndim - 1], sx = b.st[1][b.ndim - 1], sy = b.st[2][b.ndim - 1];
    const uint8_t *C = qs_u8(cond);
    const float *G = qs_f32(gt);
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&b, &p))
        for (int64_t i = 0; i < n; i++) {
            float g = G[p.off[3] + i];
            if (C[p.off[0] + i * sc]) {
                if (dX)
                    dX[p.off[1] + i * sx] += g;
            } else if (dY) {
                dY[p.off[2] + i * sy] += g;
            }
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * unary math */

enum unop { U_SQRT, U_EXP, U_LOG, U_NEG, U_ABS, U_RECIP, U_FLOOR, U_CEIL, U_ROUND, U_ERF, U_SIN, U_COS, U_SIGN,
            U_NOT };

static enum unop unop_of(const qs_kctx *c)
{
    static const char *const names[] = { "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Floor", "Ceil",
                                         "Round", "Erf", "Sin", "Cos", "Sign", "Not" };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(c->node->op, names[i]))
            return (enum unop)i;
    return U_NEG;
}

static int un_infer(qs_kctx *c)
{
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "expects 1 input");
    qs_dtype t = c->in[0]->dtype;
    enum unop op = unop_of(c);
    int ints_ok = op == U_NEG || op == U_ABS || op == U_SIGN;
    if (op == U_NOT ? t != QS_BOOL : !(t == QS_F32 || t == QS_F64 || (ints_ok && qs_dtype_numeric(t))))
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(t));
    qs_set_shape(c->out[0], t, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

static double un_eval(enum unop op, double x)
{
    switch (op) {
    case U_SQRT: return sqrt(x);
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_NEG: return -x;
    case U_ABS: return fabs(x);
    case U_RECIP: return 1 / x;
    case U_FLOOR: return floor(x);
    case U_CEIL: return ceil(x);
    case U_ROUND: return nearbyint(x);   /* half to even in the default rounding mode */
    case U_ERF: return erf(x);
    case U_SIN: return sin(x);
    case U_COS: return cos(x);
    case U_SIGN: return x > 0 ? 1 : x < 0 ? -1 : x;   /* keeps NaN (and 0) */
    case U_NOT: return !x;
    }
    return x;
}

typedef struct {
    enum unop op;
    const float *X;
    float *Y;
} un_job;

/* float32 elements [i0, i1): each on its own, so a split over the pool gives the same bits */
static void un_f32_range(void *arg, int64_t i0, int64_t i1, int worker)
{
    (void)worker;
    const un_job *j = arg;
    const float *X = j->X + i0;
    float *Y = j->Y + i0;
    int64_t n = i1 - i0;
    switch (j->op) {
    case U_SQRT: for (int64_t i = 0; i < n; i++) Y[i] = sqrtf(X[i]); break;
    case U_EXP: for (int64_t i = 0; i < n; i++) Y[i] = expf(X[i]); break;
    case U_LOG: for (int64_t i = 0; i < n; i++) Y[i] = logf(X[i]); break;
    case U_NEG: QS_VFOR(i, n, Y[i] = -X[i]); break;
    case U_ABS: QS_VFOR(i, n, Y[i] = fabsf(X[i])); break;
    case U_RECIP: QS_VFOR(i, n, Y[i] = 1.f / X[i]); break;
    default: for (int64_t i = 0; i < n; i++) Y[i] = (float)un_eval(j->op, X[i]); break;
    }
}

static int un_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    enum unop op = unop_of(c);
    int64_t n = qs_numel(x);
    if (x->dtype == QS_F32) {   /* on the pool: Erf in a transformer's or ConvNeXt's GELU is ~4 ns an element */
        un_job j = { op, qs_f32(x), qs_f32(y) };
        qs_threadpool_for(c->pool, c->nthreads, n, 16384, un_f32_range, &j);
    } else if (x->dtype == QS_F64) {
        for (int64_t i = 0; i < n; i++)
            qs_store_f64(y->data, y->dtype, i, un_eval(op, qs_get_f64(x, i)));
    } else {
        for (int64_t i = 0; i < n; i++) {
            int64_t v = qs_load_i64(x, i);
            if (op == U_SIGN || op == U_NOT)
                v = op == U_NOT ? !v : (v > 0) - (v < 0);
            else if (op == U_NEG || v < 0)
                v = (int64_t)(0 - (uint64_t)v);
            qs_store_i64(y->data, y->dtype, i, v);
        }
    }
    return 0;
}

static int un_backward(qs_kctx *c)
{
    if (!c->din[0])
        return 0;
    float *D = qs_f32(c->din[0]);
    int64_t n = qs_numel(c->in[0]);
    const qs_tensor *gt = c->dout[0];
    if (!gt || c->in[0]->dtype != QS_F32) {
        memset(D, 0, n * sizeof *D);
        return 0;
    }
    const float *X = qs_f32(c->in[0]), *Y = qs_f32(c->out[0]), *G = qs_f32(gt);
    switch (unop_of(c)) {
    case U_SQRT: for (int64_t i = 0; i < n; i++) D[i] = G[i] * 0.5f / Y[i]; break;
    case U_EXP: for (int64_t i = 0; i < n; i++) D[i] = G[i] * Y[i]; break;
    case U_LOG: for (int64_t i = 0; i < n; i++) D[i] = G[i] / X[i]; break;
    case U_NEG: for (int64_t i = 0; i < n; i++) D[i] = -G[i]; break;
    case U_ABS: for (int64_t i = 0; i < n; i++) D[i] = X[i] > 0 ? G[i] : X[i] < 0 ? -G[i] : 0.f; break;
    case U_RECIP: for (int64_t i = 0; i < n; i++) D[i] = -G[i] * Y[i] * Y[i]; break;
    case U_ERF:
        for (int64_t i = 0; i < n; i++)
            D[i] = G[i] * 1.12837916709551257f * expf(-X[i] * X[i]);   /* 2/sqrt(pi) e^(-x²) */
        break;
    case U_SIN: for (int64_t i = 0; i < n; i++) D[i] = G[i] * cosf(X[i]); break;
    case U_COS: for (int64_t i = 0; i < n; i++) D[i] = -G[i] * sinf(X[i]); break;
    /* piecewise constant: zero almost everywhere */
    case U_FLOOR: case U_CEIL: case U_ROUND: case U_SIGN: case U_NOT: memset(D, 0, n * sizeof *D); break;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Cast */

static int cast_target_ok(qs_dtype t)
{
    return qs_dtype_numeric(t) || t == QS_BOOL;
}

static int cast_infer(qs_kctx *c)
{
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "expects 1 input");
    const qs_attr *a = qs_node_attr(c->node, "to");
    if (!a)
        return qs_op_error(c, QS_EINVAL, "missing attribute 'to'");
    qs_dtype to = (qs_dtype)a->i;
    if (a->type == QS_ATTR_STRING) {   /* Cast-1 names the type */
        static const struct { const char *name; qs_dtype t; } names[] = {
            { "FLOAT", QS_F32 }, { "DOUBLE", QS_F64 }, { "INT64", QS_I64 }, { "INT32", QS_I32 },
            { "INT16", QS_I16 }, { "UINT16", QS_U16 }, { "INT8", QS_I8 }, { "UINT8", QS_U8 }, { "BOOL", QS_BOOL },
        };
        to = QS_UNDEFINED;
        for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
            if (a->s && !strcmp(a->s, names[i].name))
                to = names[i].t;
        if (to == QS_UNDEFINED)
            return qs_op_error(c, QS_EUNSUPPORTED, "cast to '%s' is not supported", a->s ? a->s : "");
    } else if (a->type != QS_ATTR_INT || !cast_target_ok(to))
        return qs_op_error(c, QS_EUNSUPPORTED, "cast to type %lld (%s) is not supported", (long long)a->i,
                           qs_dtype_name(to));
    if (!cast_target_ok(c->in[0]->dtype))
        return qs_op_error(c, QS_EUNSUPPORTED, "cast from %s is not supported", qs_dtype_name(c->in[0]->dtype));
    qs_set_shape(c->out[0], to, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

static int cast_forward(qs_kctx *c)
{
    const qs_tensor *x = c->in[0];
    qs_tensor *y = c->out[0];
    int64_t n = qs_numel(x);
    if (x->dtype == y->dtype) {
        if (y->data != x->data)
            memcpy(y->data, x->data, qs_nbytes(x));
    } else if (x->dtype == QS_I64 && y->dtype == QS_F32) {
        for (int64_t i = 0; i < n; i++)
            qs_f32(y)[i] = (float)qs_i64(x)[i];
    } else if (qs_dtype_is_int(x->dtype)) {
        for (int64_t i = 0; i < n; i++)
            qs_store_i64(y->data, y->dtype, i, qs_load_i64(x, i));
    } else {
        for (int64_t i = 0; i < n; i++)
            qs_store_f64(y->data, y->dtype, i, qs_get_f64(x, i));
    }
    return 0;
}

/* CastLike: the target type is the second input's */
static int castlike_infer(qs_kctx *c)
{
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "expects 2 inputs (input, target_type)");
    qs_dtype to = c->in[1]->dtype;
    if (!cast_target_ok(to) || !cast_target_ok(c->in[0]->dtype))
        return qs_op_error(c, QS_EUNSUPPORTED, "cast from %s to %s is not supported", qs_dtype_name(c->in[0]->dtype),
                           qs_dtype_name(to));
    qs_set_shape(c->out[0], to, c->in[0]->ndim, c->in[0]->shape);
    return 0;
}

/* float → float passes the gradient; a cast to an integer type has zero gradient */
static int cast_backward(qs_kctx *c)
{
    if (c->nin > 1 && c->din[1])   /* CastLike's target only lends its type */
        memset(c->din[1]->data, 0, qs_nbytes(c->din[1]));
    if (!c->din[0])
        return 0;
    qs_tensor *d = c->din[0];
    const qs_tensor *g = c->dout[0];
    if (g && c->out[0]->dtype == QS_F32)
        memcpy(d->data, g->data, qs_nbytes(d));
    else
        memset(d->data, 0, qs_nbytes(d));
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */

#define BIN(name) { .domain = "", .op = name, .infer = bin_infer, .forward = bin_forward, .backward = bin_backward }
#define CMP(name) { .domain = "", .op = name, .infer = bin_infer, .forward = bin_forward }
#define VAR(name) { .domain = "", .op = name, .infer = var_infer, .forward = var_forward, .backward = var_backward }
#define UN(name) { .domain = "", .op = name, .infer = un_infer, .forward = un_forward, .backward = un_backward }

const qs_op_def qs_ops_elementwise[] = {
    { .domain = "", .op = "Add", .flags = QS_OP_RESIDUAL_ADD, .infer = bin_infer, .forward = bin_forward,
      .backward = bin_backward },
    BIN("Sub"),
    { .domain = "", .op = "Mul", .flags = QS_OP_MUL, .infer = bin_infer, .blocked = qs_blocked_gate_hook,
      .forward = bin_forward, .backward = bin_backward },
    BIN("Div"), BIN("Pow"),
    CMP("Equal"), CMP("Less"), CMP("Greater"), CMP("LessOrEqual"), CMP("GreaterOrEqual"),
    CMP("And"), CMP("Or"), CMP("Xor"),
    VAR("Max"), VAR("Min"), VAR("Sum"), VAR("Mean"),
    { .domain = "", .op = "Where", .infer = where_infer, .forward = where_forward, .backward = where_backward },
    UN("Sqrt"), UN("Exp"), UN("Log"), UN("Neg"), UN("Abs"), UN("Reciprocal"), UN("Floor"), UN("Ceil"),
    UN("Round"), UN("Erf"), UN("Sin"), UN("Cos"), UN("Sign"), UN("Not"),
    { .domain = "", .op = "Cast", .infer = cast_infer, .forward = cast_forward, .backward = cast_backward },
    { .domain = "", .op = "CastLike", .infer = castlike_infer, .forward = cast_forward, .backward = cast_backward },
    { .op = NULL },
};
