/* Gemm and MatMul (float32) on OpenBLAS sgemm, forward and backward.
 *
 * Gemm: Y = alpha·op(A)·op(B) + beta·C, C broadcast to [M, N] (scalar, [N], [1, N], [M, 1], [M, N]);
 * the forward writes beta·C into Y first and lets sgemm accumulate onto it.
 *
 * MatMul follows numpy: a 1-D A is a row [1, K] and a 1-D B a column [K, 1], the added dim being
 * dropped from the result; batch dims broadcast. When B has no batch (the common Linear-layer case
 * of a [batch…, M, K] input times a [K, N] weight), the batch folds into M: one sgemm forward and
 * one per gradient. Otherwise one sgemm per batch index, reading A and B through broadcast strides;
 * the backward accumulates into the broadcast operand (beta = 1). */
#include "ops/kernels.h"

#include <string.h>

static int need_f32(qs_kctx *c, int i, const char *what)
{
    if (c->in[i]->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "input %s is %s; only float32 is supported", what,
                           qs_dtype_name(c->in[i]->dtype));
    return 0;
}

/* the executor's fused Relu/Clip (see qs_kctx), applied to the finished output */
static void fused_clamp(const qs_kctx *c, float *y, int64_t n)
{
    if (c->fused_act && !c->training)
        qs_vec_bias_clamp(n, 0.f, c->act_min, c->act_max, y);
}

static void zero_grads(qs_kctx *c)
{
    for (int i = 0; i < c->nin; i++)
        if (c->din[i])
            memset(c->din[i]->data, 0, qs_nbytes(c->din[i]));
}

/* ---- Gemm ------------------------------------------------------------------------------------------ */

typedef struct gemm_p {
    int ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const qs_tensor *C;         /* NULL when absent */
    int64_t c_rs, c_cs;         /* C's strides over Y's rows / columns (0 where broadcast) */
} gemm_p;

static int gemm_params(qs_kctx *c, gemm_p *p)
{
    char sa[128], sb[128], sc[128];
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "needs inputs A and B");
    const qs_tensor *A = c->in[0], *B = c->in[1], *C = c->nin > 2 ? c->in[2] : NULL;
    int rc;
    if ((rc = need_f32(c, 0, "A")) < 0 || (rc = need_f32(c, 1, "B")) < 0 || (C && (rc = need_f32(c, 2, "C")) < 0))
        return rc;
    qs_shape_str(A->ndim, A->shape, sa, sizeof sa);
    qs_shape_str(B->ndim, B->shape, sb, sizeof sb);
    if (A->ndim != 2 || B->ndim != 2)
        return qs_op_error(c, QS_ESHAPE, "A %s and B %s must both be 2-D", sa, sb);
    p->ta = qs_node_int(c->node, "transA", 0) != 0;
    p->tb = qs_node_int(c->node, "transB", 0) != 0;
    p->alpha = qs_node_float(c->node, "alpha", 1.f);
    p->beta = qs_node_float(c->node, "beta", 1.f);
    p->M = A->shape[p->ta];
    p->K = A->shape[!p->ta];
    p->N = B->shape[!p->tb];
    int64_t kb = B->shape[p->tb];
    if (kb != p->K)
        return qs_op_error(c, QS_ESHAPE, "A %s (transA %d) and B %s (transB %d) do not multiply: inner dims %lld "
                           "and %lld differ", sa, p->ta, sb, p->tb, (long long)p->K, (long long)kb);
    p->C = C;
    p->c_rs = p->c_cs = 0;
    if (C) {
        qs_shape_str(C->ndim, C->shape, sc, sizeof sc);
        int64_t cm = C->ndim == 2 ? C->shape[0] : 1, cn = C->ndim >= 1 ? C->shape[C->ndim - 1] : 1;
        if (C->ndim > 2 || (cm != 1 && cm != p->M) || (cn != 1 && cn != p->N))
            return qs_op_error(c, QS_ESHAPE, "C %s does not broadcast to [%lld, %lld]", sc, (long long)p->M,
                               (long long)p->N);
        p->c_rs = cm == 1 ? 0 : cn;
        p->c_cs = cn == 1 ? 0 : 1;
    }
    return 0;
}

QS_OP_PARAMS(gemm, gemm_p, gemm_params)

static int gemm_infer(qs_kctx *c)
{
    gemm_p p;
    int rc = gemm_params(c, &p);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, 2, (int64_t[]){ p.M, p.N });
    return 0;
}

static int gemm_forward(qs_kctx *c)
{
    gemm_p p;
    int rc = gemm_get(c, &p);
    if (rc < 0)
        return rc;
    float *y = qs_f32(c->out[0]), beta = 0.f;
    if (p.C && p.beta != 0.f) {
        const float *cv = qs_f32(p.C);
        for (int64_t i = 0; i < p.M; i++)
            for (int64_t j = 0; j < p.N; j++)
                y[i * p.N + j] = p.beta * cv[i * p.c_rs + j * p.c_cs];
        beta = 1.f;
    }
    const qs_tensor *A = c->in[0], *B = c->in[1];
    qs_sgemm_mt(c->pool, c->nthreads, p.ta, p.tb, p.M, p.N, p.K, p.alpha, qs_f32(A), A->shape[1], qs_f32(B), B->shape[1],
                beta, y, p.N);
    fused_clamp(c, y, p.M * p.N);
    return 0;
}

static int gemm_backward(qs_kctx *c)
{
    gemm_p p;
    int rc = gemm_get(c, &p);
    if (rc < 0)
        return rc;
    if (!c->dout[0]) {
        zero_grads(c);
        return 0;
    }
    const float *dy = qs_f32(c->dout[0]), *a = qs_f32(c->in[0]), *b = qs_f32(c->in[1]);
    int64_t lda = c->in[0]->shape[1], ldb = c->in[1]->shape[1];
    int nt = c->nthreads;
    if (c->din[0]) {   /* op(A)' = alpha·dY·op(B)ᵀ */
        float *da = qs_f32(c->din[0]);
        if (!p.ta)
            qs_sgemm_mt(c->pool, nt, 0, !p.tb, p.M, p.K, p.N, p.alpha, dy, p.N, b, ldb, 0.f, da, p.K);
        else
            qs_sgemm_mt(c->pool, nt, p.tb, 1, p.K, p.M, p.N, p.alpha, b, ldb, dy, p.N, 0.f, da, p.M);
    }
    if (c->din[1]) {   /* op(B)' = alpha·op(A)ᵀ·dY */
        float *db = qs_f32(c->din[1]);
        if (!p.tb)
            qs_sgemm_mt(c->pool, nt, !p.ta, 0, p.K, p.N, p.M, p.alpha, a, lda, dy, p.N, 0.f, db, p.N);
        else
            qs_sgemm_mt(c->pool, nt, 1, p.ta, p.N, p.K, p.M, p.alpha, dy, p.N, a, lda, 0.f, db, p.K);
    }
    if (p.C && c->din[2]) {   /* beta·dY summed over C's broadcast dims */
        float *dc = qs_f32(c->din[2]);
        memset(dc, 0, qs_nbytes(c->din[2]));
        for (int64_t i = 0; i < p.M; i++)
            for (int64_t j = 0; j < p.N; j++)
                dc[i * p.c_rs + j * p.c_cs] += p.beta * dy[i * p.N + j];
    }
    return 0;
}

/* ---- MatMul ------------------------------------------------------------------------------------------ */

typedef struct matmul_p {
    int64_t M, K, N;
    int a_vec, b_vec;                 /* the operand was 1-D */
    int nb;                           /* batch dims of the result */
    int64_t batch[QS_MAX_DIMS];       /* result batch shape */
    int64_t a_bs[QS_MAX_DIMS], b_bs[QS_MAX_DIMS];   /* batch strides in matrices (0: broadcast) */
    int64_t nbatch, a_nbatch, b_nbatch;
} matmul_p;

static int matmul_params(qs_kctx *c, matmul_p *p)
{
    char sa[128], sb[128];
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "needs inputs A and B");
    const qs_tensor *A = c->in[0], *B = c->in[1];
    int rc;
    if ((rc = need_f32(c, 0, "A")) < 0 || (rc = need_f32(c, 1, "B")) < 0)
        return rc;
    qs_shape_str(A->ndim, A->shape, sa, sizeof sa);
    qs_shape_str(B->ndim, B->shape, sb, sizeof sb);
    if (A->ndim < 1 || B->ndim < 1)
        return qs_op_error(c, QS_ESHAPE, "A %s and B %s must have at least one dim", sa, sb);
    p->a_vec = A->ndim == 1;
    p->b_vec = B->ndim == 1;
    p->M = p->a_vec ? 1 : A->shape[A->ndim - 2];
    p->K = A->shape[A->ndim - 1];
    int64_t kb = p->b_vec ? B->shape[0] : B->shape[B->ndim - 2];
    p->N = p->b_vec ? 1 : B->shape[B->ndim - 1];
    if (kb != p->K)
        return qs_op_error(c, QS_ESHAPE, "A %s and B %s do not multiply: inner dims %lld and %lld differ", sa, sb,
                           (long long)p->K, (long long)kb);
    int na = p->a_vec ? 0 : A->ndim - 2, nbb = p->b_vec ? 0 : B->ndim - 2;
    p->nb = na > nbb ? na : nbb;
    int64_t as = p->M * p->K, bs = p->K * p->N;   /* running strides, innermost batch dim first */
    p->nbatch = p->a_nbatch = p->b_nbatch = 1;
    for (int i = p->nb - 1; i >= 0; i--) {
        int ia = na - p->nb + i, ib = nbb - p->nb + i;
        int64_t da = ia >= 0 ? A->shape[ia] : 1, db = ib >= 0 ? B->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return qs_op_error(c, QS_ESHAPE, "batch dims of A %s and B %s do not broadcast", sa, sb);
        p->batch[i] = da == 1 ? db : da;
        p->a_bs[i] = da == 1 ? 0 : as;
        p->b_bs[i] = db == 1 ? 0 : bs;
        as *= da;
        bs *= db;
        p->nbatch *= p->batch[i];
        p->a_nbatch *= da;
        p->b_nbatch *= db;
    }
    return 0;
}

QS_OP_PARAMS(matmul, matmul_p, matmul_params)

static int matmul_infer(qs_kctx *c)
{
    matmul_p p;
    int rc = matmul_params(c, &p);
    if (rc < 0)
        return rc;
    int64_t shape[QS_MAX_DIMS];
    int nd = p.nb;
    memcpy(shape, p.batch, p.nb * sizeof *shape);
    if (!p.a_vec)
        shape[nd++] = p.M;
    if (!p.b_vec)
        shape[nd++] = p.N;
    qs_set_shape(c->out[0], QS_F32, nd, shape);
    return 0;
}

/* element offsets of batch index b's matrices in A and B */
static void batch_offsets(const matmul_p *p, int64_t b, int64_t *oa, int64_t *ob)
{
    *oa = *ob = 0;
    for (int i = p->nb - 1; i >= 0; i--) {
        int64_t idx = b % p->batch[i];
        b /= p->batch[i];
        *oa += idx * p->a_bs[i];
        *ob += idx * p->b_bs[i];
    }
}

typedef struct {
    const matmul_p *p;
    const float *a, *b;
    float *y;
} matmul_job;

static void matmul_batches(void *arg, int64_t i0, int64_t i1, int worker)
{
    const matmul_job *j = arg;
    const matmul_p *p = j->p;
    for (int64_t i = i0; i < i1; i++) {
        int64_t oa, ob;
        batch_offsets(p, i, &oa, &ob);
        qs_sgemm(0, 0, p->M, p->N, p->K, 1.f, j->a + oa, p->K, j->b + ob, p->N, 0.f, j->y + i * p->M * p->N, p->N);
    }
}

static int matmul_forward(qs_kctx *c)
{
    matmul_p p;
    int rc = matmul_get(c, &p);
    if (rc < 0)
        return rc;
    const float *a = qs_f32(c->in[0]), *b = qs_f32(c->in[1]);
    float *y = qs_f32(c->out[0]);
    if (p.b_nbatch == 1) {   /* B shared by every batch: fold the batch into M */
        qs_sgemm_mt(c->pool, c->nthreads, 0, 0, p.nbatch * p.M, p.N, p.K, 1.f, a, p.K, b, p.N, 0.f, y, p.N);
        fused_clamp(c, y, p.nbatch * p.M * p.N);
        return 0;
    }
    matmul_job j = { &p, a, b, y };
    if (c->nthreads > 1 && p.nbatch >= c->nthreads && p.nbatch * p.M * p.N * p.K >= (1 << 20)) {
        qs_threadpool_for(c->pool, c->nthreads, p.nbatch, 1, matmul_batches, &j);   /* whole products per thread */
    } else {
        for (int64_t i = 0; i < p.nbatch; i++) {
            int64_t oa, ob;
            batch_offsets(&p, i, &oa, &ob);
            qs_sgemm_mt(c->pool, c->nthreads, 0, 0, p.M, p.N, p.K, 1.f, a + oa, p.K, b + ob, p.N, 0.f, y + i * p.M * p.N,
                        p.N);
        }
    }
    fused_clamp(c, y, p.nbatch * p.M * p.N);
    return 0;
}

static int matmul_backward(qs_kctx *c)
{
    matmul_p p;
    int rc = matmul_get(c, &p);
    if (rc < 0)
        return rc;
    if (!c->dout[0]) {
        zero_grads(c);
        return 0;
    }
    const float *a = qs_f32(c->in[0]), *b = qs_f32(c->in[1]), *dy = qs_f32(c->dout[0]);
    float *da = c->din[0] ? qs_f32(c->din[0]) : NULL, *db = c->din[1] ? qs_f32(c->din[1]) : NULL;
    int nt = c->nthreads;
    if (p.b_nbatch == 1) {
        int64_t rows = p.nbatch * p.M;
        if (da)   /* dA = dY·Bᵀ, A's batch folded into M */
            qs_sgemm_mt(c->pool, nt, 0, 1, rows, p.K, p.N, 1.f, dy, p.N, b, p.N, 0.f, da, p.K);
        if (db)   /* dB = Σ_batch A_bᵀ·dY_b: one sgemm over the folded rows */
            qs_sgemm_mt(c->pool, nt, 1, 0, p.K, p.N, rows, 1.f, a, p.K, dy, p.N, 0.f, db, p.N);
        return 0;
    }
    if (da)
        memset(da, 0, qs_nbytes(c->din[0]));
    if (db)
        memset(db, 0, qs_nbytes(c->din[1]));
    for (int64_t i = 0; i < p.nbatch; i++) {
        int64_t oa, ob;
        batch_offsets(&p, i, &oa, &ob);
        const float *dyb = dy + i * p.M * p.N;
        if (da)
            qs_sgemm_mt(c->pool, nt, 0, 1, p.M, p.K, p.N, 1.f, dyb, p.N, b + ob, p.N, 1.f, da + oa, p.K);
        if (db)
            qs_sgemm_mt(c->pool, nt, 1, 0, p.K, p.N, p.M, 1.f, a + oa, p.K, dyb, p.N, 1.f, db + ob, p.N);
    }
    return 0;
}

const qs_op_def qs_ops_gemm[] = {
    { .domain = "", .op = "Gemm", .flags = QS_OP_FUSE_ACT, .infer = gemm_infer, .prepare = gemm_prepare,
      .forward = gemm_forward, .backward = gemm_backward },
    { .domain = "", .op = "MatMul", .flags = QS_OP_FUSE_ACT, .infer = matmul_infer, .prepare = matmul_prepare,
      .forward = matmul_forward, .backward = matmul_backward },
    { .op = NULL },
};
