/* Test helpers for kernels: run one op on given inputs (infer → forward), and check its backward
 * against central finite differences of L = sum(dout ⊙ out) with a fixed random dout.
 *
 *   qs_node n = opcheck_node("Relu", NULL);            // then qs_node_set_* for attributes
 *   qs_tensor *y[1]; opcheck_forward(&n, 13, 1, x, 1, y);
 *   opcheck_grad(&n, 13, nin, x, 1e-2, 1e-3);          // every float input that has a grad
 *
 * Forward results are compared by each test against hand-computed values or ONNX's data. */
#ifndef QD_TESTS_OPCHECK_H
#define QD_TESTS_OPCHECK_H

#include "tests/harness.h"
#include "engine/ops/ops.h"

/* A pool of nthreads threads for a kernel's context (NULL for one), made on first use and kept
 * for the test; opcheck_pools_free joins them all before the harness's _exit. */
static qs_threadpool *opcheck_pools_[65];
static inline qs_threadpool *opcheck_pool(int nthreads)
{
    if (nthreads <= 1 || nthreads > 64)
        return NULL;
    if (!opcheck_pools_[nthreads])
        opcheck_pools_[nthreads] = qs_threadpool_new(nthreads, 0, NULL);
    return opcheck_pools_[nthreads];
}
static inline void opcheck_pools_free(void)
{
    for (int i = 0; i < 65; i++) {
        qs_threadpool_free(opcheck_pools_[i]);
        opcheck_pools_[i] = NULL;
    }
}

static inline uint64_t opcheck_rng_(void)
{
    static uint64_t s = 0x9E3779B97F4A7C15ull;
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return s;
}
/* uniform in [lo, hi) */
static inline float opcheck_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((opcheck_rng_() >> 11) * (1.0 / 9007199254740992.0));
}
static inline qs_tensor *opcheck_rand(int ndim, const int64_t *shape, float lo, float hi)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = opcheck_uniform(lo, hi);
    return t;
}
static inline qs_tensor *opcheck_from(int ndim, const int64_t *shape, const float *v)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    memcpy(t->data, v, qs_nbytes(t));
    return t;
}
static inline qs_tensor *opcheck_ints(int64_t n, const int64_t *v)
{
    qs_tensor *t = qs_tensor_new(QS_I64, 1, &n);
    memcpy(t->data, v, n * sizeof *v);
    return t;
}

/* A node on the stack with nin inputs and nout outputs (ids unused by kernels). */
static inline qs_node opcheck_node(const char *op, const char *domain)
{
    qs_node n;
    memset(&n, 0, sizeof n);
    n.op = (char *)op;
    n.domain = (char *)(domain ? domain : "");
    n.name = (char *)"test";
    return n;
}

/* Runs infer + forward; allocates out[] (caller frees). Returns the status; err gets the message. */
static inline int opcheck_run(const qs_node *n, int64_t opset, int nin, qs_tensor **in, int nout,
                              qs_tensor **out, int training, qs_err *err)
{
    const qs_op_def *d = qs_op_find(n->domain, n->op);
    if (!d)
        return qs_error(err, QS_EUNSUPPORTED, "no op %s", n->op);
    qs_tensor heads[8];
    qs_tensor *outs[8];
    memset(heads, 0, sizeof heads);
    for (int i = 0; i < nout; i++)
        outs[i] = &heads[i];
    qs_kctx c = { .node = n, .opset = opset, .nin = nin, .nout = nout, .in = in, .out = outs,
                  .training = training, .nthreads = 1, .err = err };
    int rc = d->infer(&c);
    if (rc < 0)
        return rc;
    for (int i = 0; i < nout; i++) {
        out[i] = qs_tensor_new(heads[i].dtype, heads[i].ndim, heads[i].shape);
        c.out[i] = out[i];
    }
    size_t ss = d->scratch ? d->scratch(&c) : 0;
    c.scratch = ss ? malloc(ss) : NULL;
    c.scratch_size = ss;
    rc = d->forward(&c);
    free(c.scratch);
    return rc;
}

static inline void opcheck_forward(const qs_node *n, int64_t opset, int nin, qs_tensor **in, int nout,
                                   qs_tensor **out)
{
    qs_err e = {0};
    int rc = opcheck_run(n, opset, nin, in, nout, out, 0, &e);
    if (rc < 0)
        QT_FAIL_("%s forward failed: %s", n->op, e.msg);
}

/* sum(w ⊙ out[0..nout)) for the finite differences */
static inline double opcheck_loss_(const qs_node *n, int64_t opset, int nin, qs_tensor **in, int nout,
                                   qs_tensor **w, int training)
{
    qs_tensor *out[8];
    qs_err e = {0};
    if (opcheck_run(n, opset, nin, in, nout, out, training, &e) < 0)
        QT_FAIL_("%s forward failed: %s", n->op, e.msg);
    double s = 0;
    for (int o = 0; o < nout; o++) {
        if (out[o]->dtype == QS_F32 && w[o])
            for (int64_t i = 0; i < qs_numel(out[o]); i++)
                s += (double)qs_f32(w[o])[i] * qs_f32(out[o])[i];
        qs_tensor_free(out[o]);
    }
    return s;
}

/* Checks the op's backward against finite differences for every float input (and every element,
 * so keep tensors small): |analytic − numeric| <= atol + rtol·|numeric|. eps is the step. */
static inline void opcheck_grad_ex(const qs_node *n, int64_t opset, int nin, qs_tensor **in, int nout,
                                   double eps, double rtol, double atol, int training)
{
    const qs_op_def *d = qs_op_find(n->domain, n->op);
    ASSERT(d && d->backward);
    qs_tensor *out[8], *w[8], *din[8];
    qs_err e = {0};
    if (opcheck_run(n, opset, nin, in, nout, out, training, &e) < 0)
        QT_FAIL_("%s forward failed: %s", n->op, e.msg);
    for (int o = 0; o < nout; o++)
        w[o] = out[o]->dtype == QS_F32 ? opcheck_rand(out[o]->ndim, out[o]->shape, -1, 1) : NULL;
    for (int i = 0; i < nin; i++)
        din[i] = in[i] && in[i]->dtype == QS_F32 ? qs_tensor_new(QS_F32, in[i]->ndim, in[i]->shape) : NULL;
    qs_kctx c = { .node = n, .opset = opset, .nin = nin, .nout = nout, .in = in, .out = out,
                  .din = din, .dout = w, .training = training, .nthreads = 1, .err = &e };
    size_t ss = d->scratch ? d->scratch(&c) : 0;
    c.scratch = ss ? malloc(ss) : NULL;
    c.scratch_size = ss;
    if (d->backward(&c) < 0)
        QT_FAIL_("%s backward failed: %s", n->op, e.msg);
    free(c.scratch);
    for (int i = 0; i < nin; i++) {
        if (!din[i])
            continue;
        for (int64_t k = 0; k < qs_numel(in[i]); k++) {
            float *p = &qs_f32(in[i])[k], keep = *p;
            *p = keep + (float)eps;
            double lp = opcheck_loss_(n, opset, nin, in, nout, w, training);
            *p = keep - (float)eps;
            double lm = opcheck_loss_(n, opset, nin, in, nout, w, training);
            *p = keep;
            double num = (lp - lm) / (2 * eps), ana = qs_f32(din[i])[k];
            if (!(fabs(ana - num) <= atol + rtol * fabs(num)))
                QT_FAIL_("%s: d/d(input %d)[%lld]: backward %.6g, finite difference %.6g", n->op, i,
                         (long long)k, ana, num);
        }
        qs_tensor_free(din[i]);
    }
    for (int o = 0; o < nout; o++) {
        qs_tensor_free(out[o]);
        qs_tensor_free(w[o]);
    }
}

static inline void opcheck_grad(const qs_node *n, int64_t opset, int nin, qs_tensor **in, int nout,
                                double eps, double rtol, double atol)
{
    opcheck_grad_ex(n, opset, nin, in, nout, eps, rtol, atol, 0);
}

#endif
