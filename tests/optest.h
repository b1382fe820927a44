/* Shorthands for the op tests built on opcheck.h: tensors from literals, one-output runs, and
 * comparisons of a result against expected shape and values.
 *
 *   qs_tensor *x = TF(SHAPE(2, 3), F(1, 2, 3, 4, 5, 6));
 *   qs_tensor *y = run1(&n, 13, 1, (qs_tensor *[]){ x });
 *   expect_f32(y, SHAPE(2, 3), F(...), 1e-6);
 */
#ifndef QD_TESTS_OPTEST_H
#define QD_TESTS_OPTEST_H

#include "tests/opcheck.h"

/* SHAPE(...) is a shape literal carrying its own length */
typedef struct { int n; int64_t d[QS_MAX_DIMS]; } ot_shape;
#define SHAPE(...) ((ot_shape){ (int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), { __VA_ARGS__ } })
#define SCALAR ((ot_shape){ 0, { 0 } })
#define F(...) ((const float[]){ __VA_ARGS__ })
#define I(...) ((const int64_t[]){ __VA_ARGS__ })

static inline qs_tensor *TF(ot_shape s, const float *v)
{
    qs_tensor *t = qs_tensor_new(QS_F32, s.n, s.d);
    if (v)
        memcpy(t->data, v, qs_nbytes(t));
    return t;
}

/* a tensor of any type from int64 literals */
static inline qs_tensor *TT(qs_dtype dt, ot_shape s, const int64_t *v)
{
    qs_tensor *t = qs_tensor_new(dt, s.n, s.d);
    for (int64_t i = 0; v && i < qs_numel(t); i++) {
        switch (dt) {
        case QS_I64: qs_i64(t)[i] = v[i]; break;
        case QS_I32: qs_i32(t)[i] = (int32_t)v[i]; break;
        case QS_I8: case QS_I4: qs_i8(t)[i] = (int8_t)v[i]; break;
        case QS_U8: case QS_U4: case QS_BOOL: qs_u8(t)[i] = (uint8_t)v[i]; break;
        case QS_I16: ((int16_t *)t->data)[i] = (int16_t)v[i]; break;
        case QS_U16: ((uint16_t *)t->data)[i] = (uint16_t)v[i]; break;
        case QS_F32: qs_f32(t)[i] = (float)v[i]; break;
        default: QT_FAIL_("TT: unsupported type");
        }
    }
    return t;
}
#define TI(s, v) TT(QS_I64, s, v)

static inline qs_tensor *run1(const qs_node *n, int64_t opset, int nin, qs_tensor **in)
{
    qs_tensor *out[1] = { NULL };
    opcheck_forward(n, opset, nin, in, 1, out);
    return out[0];
}

/* Runs infer+forward expecting failure with code; returns the message (static buffer). */
static inline const char *run_fail(const qs_node *n, int64_t opset, int nin, qs_tensor **in, int nout, int code)
{
    static qs_err e;
    memset(&e, 0, sizeof e);
    qs_tensor *out[8] = { NULL };
    int rc = opcheck_run(n, opset, nin, in, nout, out, 0, &e);
    if (rc != code)
        QT_FAIL_("%s: expected error %d, got %d (%s)", n->op, code, rc, e.msg);
    return e.msg;
}

static inline void expect_shape(const qs_tensor *t, ot_shape s)
{
    char a[128], b[128];
    int ok = t->ndim == s.n;
    for (int i = 0; ok && i < s.n; i++)
        ok = t->shape[i] == s.d[i];
    if (!ok)
        QT_FAIL_("shape %s, expected %s", qs_shape_str(t->ndim, t->shape, a, sizeof a), qs_shape_str(s.n, s.d, b, sizeof b));
}

static inline void expect_f32(const qs_tensor *t, ot_shape s, const float *v, double tol)
{
    if (t->dtype != QS_F32)
        QT_FAIL_("dtype %s, expected float32", qs_dtype_name(t->dtype));
    expect_shape(t, s);
    for (int64_t i = 0; i < qs_numel(t); i++)
        if (!(fabs((double)qs_f32(t)[i] - v[i]) <= tol * (1 + fabs(v[i]))) &&
            !(isnan(v[i]) && isnan(qs_f32(t)[i])))
            QT_FAIL_("element %lld: %.9g, expected %.9g", (long long)i, qs_f32(t)[i], v[i]);
}

static inline void expect_ints(const qs_tensor *t, qs_dtype dt, ot_shape s, const int64_t *v)
{
    if (t->dtype != dt)
        QT_FAIL_("dtype %s, expected %s", qs_dtype_name(t->dtype), qs_dtype_name(dt));
    expect_shape(t, s);
    for (int64_t i = 0; i < qs_numel(t); i++)
        if (qs_get_i64(t, i) != v[i])
            QT_FAIL_("element %lld: %lld, expected %lld", (long long)i, (long long)qs_get_i64(t, i), (long long)v[i]);
}

#endif
