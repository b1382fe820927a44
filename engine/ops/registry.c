/* Looks up op definitions across the family tables. */
#include "ops/ops.h"
#include "ops/shape.h"   /* qs_ops_shape_index */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const qs_op_def *const families[] = {
    qs_ops_conv, qs_ops_gemm, qs_ops_pool, qs_ops_norm, qs_ops_layernorm, qs_ops_resize, qs_ops_elementwise, qs_ops_reduce,
    qs_ops_activation, qs_ops_shape, qs_ops_shape_index, qs_ops_qdq, qs_ops_fakequant,
    qs_ops_targetmac, qs_ops_mod,
};
#define NFAM (int)(sizeof families / sizeof families[0])

const qs_op_def *qs_op_find(const char *domain, const char *op)
{
    if (!domain || !strcmp(domain, "ai.onnx"))
        domain = "";
    for (int f = 0; f < NFAM; f++)
        for (const qs_op_def *d = families[f]; d->op; d++)
            if (!strcmp(d->op, op) && !strcmp(d->domain, domain))
                return d;
    return NULL;
}

int qs_op_list(const qs_op_def *const **defs)
{
    static const qs_op_def *all[256];
    static int n = 0;
    if (!n)
        for (int f = 0; f < NFAM; f++)
            for (const qs_op_def *d = families[f]; d->op && n < 256; d++)
                all[n++] = d;
    *defs = all;
    return n;
}

int qs_op_error(qs_kctx *c, int code, const char *fmt, ...)
{
    char body[QS_ERRMSG_MAX - 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    const qs_node *n = c->node;
    if (n && n->name && n->name[0])
        return qs_error(c->err, code, "%s '%s': %s", n->op, n->name, body);
    return qs_error(c->err, code, "%s: %s", n ? n->op : "?", body);
}

void qs_set_shape(qs_tensor *out, qs_dtype dtype, int ndim, const int64_t *shape)
{
    out->dtype = dtype;
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        out->shape[i] = shape[i];
}

int qs_broadcast_shape(qs_kctx *c, const qs_tensor *a, const qs_tensor *b, int *ndim, int64_t *shape_out)
{
    /* into a local first: callers fold a list of inputs with shape_out == a->shape (Max, Sum, …) */
    int64_t shape[QS_MAX_DIMS];
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = a->ndim - n + i, ib = b->ndim - n + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[128], sb[128];
            return qs_op_error(c, QS_ESHAPE, "shapes %s and %s do not broadcast",
                               qs_shape_str(a->ndim, a->shape, sa, sizeof sa),
                               qs_shape_str(b->ndim, b->shape, sb, sizeof sb));
        }
        shape[i] = da == 1 ? db : da;
    }
    memcpy(shape_out, shape, (size_t)n * sizeof shape[0]);
    *ndim = n;
    return 0;
}
