/* Mod (opsets 10, 13): the elementwise remainder of A by B with numpy broadcasting.
 *
 * fmod = 0 (the default) is Python's/numpy's integer remainder, whose sign is the divisor's; ONNX
 * allows it only for integer types. fmod = 1 is C's fmod, whose sign is the dividend's, for
 * integers and floats. torchvision's ViT exports a Mod in its attention's shape arithmetic (int64,
 * computed at plan time); float Mod also runs at inference and trains: with r = a − b·q and
 * q = trunc(a/b) (fmod) or floor(a/b), which is piecewise constant, dr/da = 1 and dr/db = −q. */
#include <math.h>
#include <string.h>

#include "ops/opsutil.h"

static int mod_fmod(qs_kctx *c, int *fm)
{
    int64_t f = qs_node_int(c->node, "fmod", 0);
    if (f != 0 && f != 1)
        return qs_op_error(c, QS_EINVAL, "attribute fmod must be 0 or 1, got %lld", (long long)f);
    *fm = (int)f;
    return 0;
}

static int mod_infer(qs_kctx *c)
{
    if (c->nin != 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "expects 2 inputs (A, B), got %d", c->nin);
    const qs_tensor *a = c->in[0], *b = c->in[1];
    int fm = 0, rc = mod_fmod(c, &fm);
    if (rc < 0)
        return rc;
    if (!qs_dtype_numeric(a->dtype))
        return qs_op_error(c, QS_EUNSUPPORTED, "input type %s is not supported", qs_dtype_name(a->dtype));
    if (a->dtype != b->dtype)
        return qs_op_error(c, QS_EINVAL, "inputs have different types (%s and %s)", qs_dtype_name(a->dtype),
                           qs_dtype_name(b->dtype));
    if (!fm && !qs_dtype_is_int(a->dtype))
        return qs_op_error(c, QS_EINVAL, "fmod = 0 (integer remainder) on %s inputs: floating-point Mod "
                           "needs fmod = 1", qs_dtype_name(a->dtype));
    int nd;
    int64_t shape[QS_MAX_DIMS];
    if ((rc = qs_broadcast_shape(c, a, b, &nd, shape)) < 0)
        return rc;
    qs_set_shape(c->out[0], a->dtype, nd, shape);
    return 0;
}

/* Python's remainder for integers: the result takes the divisor's sign. */
static int64_t imod(int64_t x, int64_t y)
{
    if (y == -1)
        return 0;   /* INT64_MIN % -1 overflows in C */
    int64_t r = x % y;
    return r != 0 && (r < 0) != (y < 0) ? r + y : r;
}

static int mod_forward(qs_kctx *c)
{
    const qs_tensor *a = c->in[0], *b = c->in[1];
    qs_tensor *o = c->out[0];
    int fm = 0, rc = mod_fmod(c, &fm);
    if (rc < 0)
        return rc;
    const qs_tensor *ops[3] = { a, b, o };
    qs_bcast bc;
    qs_bcast_init(&bc, o->ndim, o->shape, 3, ops);
    int64_t n = qs_bcast_inner(&bc), rows = qs_bcast_rows(&bc);
    int64_t sa = bc.st[0][bc.ndim - 1], sb = bc.st[1][bc.ndim - 1];
    int as_int = qs_dtype_is_int(a->dtype);
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&bc, &p))
        for (int64_t i = 0; i < n; i++) {
            int64_t ia = p.off[0] + i * sa, ib = p.off[1] + i * sb, io = p.off[2] + i;
            if (as_int) {
                int64_t x = qs_load_i64(a, ia), y = qs_load_i64(b, ib);
                if (y == 0)
                    return qs_op_error(c, QS_EINVAL, "integer remainder by zero");
                /* C's % truncates: it is fmod's semantics already */
                qs_store_i64(o->data, o->dtype, io, fm ? (y == -1 ? 0 : x % y) : imod(x, y));
            } else if (o->dtype == QS_F32) {
                qs_f32(o)[io] = fmodf(qs_f32(a)[ia], qs_f32(b)[ib]);
            } else {
                qs_store_f64(o->data, o->dtype, io, fmod(qs_get_f64(a, ia), qs_get_f64(b, ib)));
            }
        }
    return 0;
}

static int mod_backward(qs_kctx *c)
{
    const qs_tensor *a = c->in[0], *b = c->in[1], *y = c->out[0];
    qs_tensor *dta = c->din ? c->din[0] : NULL, *dtb = c->din ? c->din[1] : NULL;
    float *dA = dta ? qs_f32(dta) : NULL, *dB = dtb ? qs_f32(dtb) : NULL;
    if (dA)
        memset(dA, 0, qs_nbytes(dta));
    if (dB)
        memset(dB, 0, qs_nbytes(dtb));
    const qs_tensor *gt = c->dout ? c->dout[0] : NULL;
    if (!gt || (!dA && !dB))
        return 0;
    if (a->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "backward needs float32 inputs");
    const qs_tensor *ops[3] = { a, b, y };
    qs_bcast bc;
    qs_bcast_init(&bc, y->ndim, y->shape, 3, ops);
    int64_t n = qs_bcast_inner(&bc), rows = qs_bcast_rows(&bc);
    int64_t sa = bc.st[0][bc.ndim - 1], sb = bc.st[1][bc.ndim - 1];
    const float *A = qs_f32(a), *B = qs_f32(b), *G = qs_f32(gt);
    qs_bcast_pos p;
    qs_bcast_start(&p);
    for (int64_t r = 0; r < rows; r++, qs_bcast_next(&bc, &p))
        for (int64_t i = 0; i < n; i++) {
            int64_t ia = p.off[0] + i * sa, ib = p.off[1] + i * sb;
            float g = G[p.off[2] + i];
            if (dA)
                dA[ia] += g;
            if (dB)   /* fmod = 1 is the only float Mod: the quotient truncates */
                dB[ib] -= g * truncf(A[ia] / B[ib]);
        }
    return 0;
}

const qs_op_def qs_ops_mod[] = {
    { .domain = "", .op = "Mod", .infer = mod_infer, .forward = mod_forward, .backward = mod_backward },
    { .op = NULL },
};
