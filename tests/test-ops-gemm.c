/* Gemm and MatMul: hand-computed products, a naive triple loop for every transpose / broadcast
 * combination, finite differences for every backward, and the shape errors. */
#include "tests/opcheck.h"

static qs_tensor *rand_t(int ndim, const int64_t *shape) { return opcheck_rand(ndim, shape, -1, 1); }

static void assert_close_buf(const float *a, const float *ref, int64_t n, double rtol, double atol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - ref[i]) <= atol + rtol * fabs((double)ref[i])))
            QT_FAIL_("element %lld: %.7g vs reference %.7g", (long long)i, a[i], ref[i]);
}

/* ---- Gemm ---------------------------------------------------------------------------------------- */

TEST(gemm_hand_computed)
{
    float a[] = { 1, 2, 3, 4, 5, 6 };      /* [2, 3] */
    float b[] = { 1, 2, 3, 4, 5, 6 };      /* [3, 2] */
    float cv[] = { 10, 20 };               /* [2]: one per column */
    qs_tensor *in[3] = { opcheck_from(2, (int64_t[]){ 2, 3 }, a), opcheck_from(2, (int64_t[]){ 3, 2 }, b),
                         opcheck_from(1, (int64_t[]){ 2 }, cv) }, *y;
    qs_node n = opcheck_node("Gemm", NULL);
    qs_node_set_float(&n, "alpha", 2.f);
    qs_node_set_float(&n, "beta", 0.5f);
    opcheck_forward(&n, 13, 3, in, 1, &y);
    /* A·B = [[22, 28], [49, 64]]; 2·AB + 0.5·[10, 20] */
    float want[] = { 49, 66, 103, 138 };
    ASSERT_EQ(y->shape[0], 2);
    ASSERT_EQ(y->shape[1], 2);
    assert_close_buf(qs_f32(y), want, 4, 0, 1e-4);
    /* transA with A given as [3, 2] (= the old Aᵀ), no C */
    float at[] = { 1, 4, 2, 5, 3, 6 };
    qs_tensor *in2[2] = { opcheck_from(2, (int64_t[]){ 3, 2 }, at), in[1] };
    qs_node m = opcheck_node("Gemm", NULL);
    qs_node_set_int(&m, "transA", 1);
    opcheck_forward(&m, 13, 2, in2, 1, &y);
    float want2[] = { 22, 28, 49, 64 };
    assert_close_buf(qs_f32(y), want2, 4, 0, 1e-4);
}

/* y = alpha·op(A)·op(B) + beta·C, by the definition */
static void gemm_naive(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       const float *B, float beta, const qs_tensor *C, float *Y)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
            double cv = 0;
            if (C) {
                int64_t cm = C->ndim == 2 ? C->shape[0] : 1, cn = C->ndim ? C->shape[C->ndim - 1] : 1;
                cv = qs_f32(C)[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
            }
            Y[i * N + j] = (float)(alpha * s + beta * cv);
        }
}

TEST(gemm_matches_naive_and_finite_differences)
{
    const int64_t M = 3, N = 4, K = 5;
    struct { int nd; int64_t shape[2]; } cshapes[] = {
        { -1, { 0 } }, { 0, { 0 } }, { 1, { 1 } }, { 1, { N } }, { 2, { 1, N } }, { 2, { M, 1 } }, { 2, { M, N } },
    };
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t ci = 0; ci < sizeof cshapes / sizeof cshapes[0]; ci++) {
                int64_t as[2] = { ta ? K : M, ta ? M : K }, bs[2] = { tb ? N : K, tb ? K : N };
                qs_tensor *in[3] = { rand_t(2, as), rand_t(2, bs),
                                     cshapes[ci].nd < 0 ? NULL : rand_t(cshapes[ci].nd, cshapes[ci].shape) }, *y;
                int nin = cshapes[ci].nd < 0 ? 2 : 3;
                qs_node n = opcheck_node("Gemm", NULL);
                qs_node_set_int(&n, "transA", ta);
                qs_node_set_int(&n, "transB", tb);
                qs_node_set_float(&n, "alpha", 0.7f);
                qs_node_set_float(&n, "beta", -1.3f);
                opcheck_forward(&n, 13, nin, in, 1, &y);
                float ref[M * N];
                gemm_naive(ta, tb, M, N, K, 0.7f, qs_f32(in[0]), qs_f32(in[1]), -1.3f, nin == 3 ? in[2] : NULL, ref);
                assert_close_buf(qs_f32(y), ref, M * N, 1e-5, 1e-5);
                opcheck_grad(&n, 13, nin, in, 1, 1e-2, 1e-2, 1e-3);
            }
}

/* ---- MatMul ---------------------------------------------------------------------------------------- */

/* numpy matmul by the definition, for shapes given as (ndim, shape) */
static qs_tensor *matmul_naive(const qs_tensor *A, const qs_tensor *B)
{
    int64_t M = A->ndim == 1 ? 1 : A->shape[A->ndim - 2], K = A->shape[A->ndim - 1];
    int64_t N = B->ndim == 1 ? 1 : B->shape[B->ndim - 1];
    int na = A->ndim > 2 ? A->ndim - 2 : 0, nb = B->ndim > 2 ? B->ndim - 2 : 0, nbat = na > nb ? na : nb;
    int64_t shape[8], idx[8] = { 0 };
    int nd = 0;
    for (int i = 0; i < nbat; i++) {
        int ia = na - nbat + i, ib = nb - nbat + i;
        int64_t da = ia >= 0 ? A->shape[ia] : 1, db = ib >= 0 ? B->shape[ib] : 1;
        shape[nd++] = da > db ? da : db;
    }
    int64_t total = 1;
    for (int i = 0; i < nbat; i++)
        total *= shape[i];
    if (A->ndim > 1)
        shape[nd++] = M;
    if (B->ndim > 1)
        shape[nd++] = N;
    qs_tensor *Y = qs_tensor_new(QS_F32, nd, shape);
    for (int64_t t = 0; t < total; t++) {
        int64_t r = t;
        for (int i = nbat - 1; i >= 0; i--) {
            idx[i] = r % shape[i];
            r /= shape[i];
        }
        int64_t oa = 0, ob = 0;
        for (int i = 0; i < na; i++) {
            int64_t d = A->shape[i];
            oa = oa * d + (d == 1 ? 0 : idx[nbat - na + i]);
        }
        for (int i = 0; i < nb; i++) {
            int64_t d = B->shape[i];
            ob = ob * d + (d == 1 ? 0 : idx[nbat - nb + i]);
        }
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)qs_f32(A)[oa * M * K + i * K + k] * qs_f32(B)[ob * K * N + k * N + j];
                qs_f32(Y)[t * M * N + i * N + j] = (float)s;
            }
    }
    return Y;
}

TEST(matmul_hand_computed_and_vectors)
{
    float a[] = { 1, 2, 3, 4 }, v[] = { 1, -1 };
    qs_tensor *A = opcheck_from(2, (int64_t[]){ 2, 2 }, a), *V = opcheck_from(1, (int64_t[]){ 2 }, v), *y;
    qs_node n = opcheck_node("MatMul", NULL);
    qs_tensor *in[2] = { A, A };
    opcheck_forward(&n, 13, 2, in, 1, &y);
    float want[] = { 7, 10, 15, 22 };
    assert_close_buf(qs_f32(y), want, 4, 0, 1e-5);
    in[1] = V;   /* matrix · vector = [1−2, 3−4], shape [2] */
    opcheck_forward(&n, 13, 2, in, 1, &y);
    ASSERT_EQ(y->ndim, 1);
    ASSERT_EQ(y->shape[0], 2);
    float mv[] = { -1, -1 };
    assert_close_buf(qs_f32(y), mv, 2, 0, 1e-6);
    in[0] = V;
    in[1] = A;   /* vector · matrix = [1−3, 2−4] */
    opcheck_forward(&n, 13, 2, in, 1, &y);
    ASSERT_EQ(y->ndim, 1);
    float vm[] = { -2, -2 };
    assert_close_buf(qs_f32(y), vm, 2, 0, 1e-6);
    in[1] = V;   /* vector · vector: a scalar */
    opcheck_forward(&n, 13, 2, in, 1, &y);
    ASSERT_EQ(y->ndim, 0);
    ASSERT_CLOSE(qs_f32(y)[0], 2, 0, 1e-6);
}

TEST(matmul_batched_broadcast_matches_naive_and_finite_differences)
{
    struct { int na; int64_t a[4]; int nb; int64_t b[4]; } cases[] = {
        { 3, { 2, 3, 4 }, 2, { 4, 5 } },             /* batch folded into M */
        { 2, { 3, 4 }, 3, { 2, 4, 5 } },             /* A broadcast over B's batch */
        { 4, { 2, 1, 3, 4 }, 3, { 3, 4, 2 } },       /* both broadcast */
        { 3, { 1, 2, 3 }, 3, { 4, 3, 2 } },
        { 3, { 2, 3, 4 }, 3, { 2, 4, 2 } },          /* same batch */
        { 1, { 4 }, 3, { 2, 4, 3 } },                /* vector · batched matrices */
        { 3, { 2, 3, 4 }, 1, { 4 } },                /* batched matrices · vector */
        { 4, { 2, 2, 2, 3 }, 4, { 2, 1, 3, 2 } },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        qs_tensor *in[2] = { rand_t(cases[t].na, cases[t].a), rand_t(cases[t].nb, cases[t].b) }, *y;
        qs_node n = opcheck_node("MatMul", NULL);
        opcheck_forward(&n, 13, 2, in, 1, &y);
        qs_tensor *ref = matmul_naive(in[0], in[1]);
        ASSERT_EQ(y->ndim, ref->ndim);
        for (int i = 0; i < y->ndim; i++)
            ASSERT_EQ(y->shape[i], ref->shape[i]);
        assert_close_buf(qs_f32(y), qs_f32(ref), qs_numel(ref), 1e-5, 1e-5);
        opcheck_grad(&n, 13, 2, in, 1, 1e-2, 1e-2, 1e-3);
    }
}

/* forward with the executor's fused clamp vs the plain forward clamped afterwards */
static void check_fused_clamp(const qs_node *n, int nin, qs_tensor **in)
{
    const qs_op_def *d = qs_op_find("", n->op);
    qs_tensor *plain, head;
    opcheck_forward(n, 13, nin, in, 1, &plain);
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head };
    qs_err e = {0};
    qs_kctx c = { .node = n, .opset = 13, .nin = nin, .nout = 1, .in = in, .out = outs, .nthreads = 1, .err = &e,
                  .fused_act = 1, .act_min = 0.f, .act_max = 0.5f };
    ASSERT_EQ(d->infer(&c), 0);
    qs_tensor *y = qs_tensor_new(head.dtype, head.ndim, head.shape);
    c.out = &y;
    ASSERT_EQ(d->forward(&c), 0);
    for (int64_t i = 0; i < qs_numel(y); i++) {
        float v = qs_f32(plain)[i];
        ASSERT_CLOSE(qs_f32(y)[i], v < 0 ? 0 : v > 0.5f ? 0.5f : v, 1e-6, 1e-6);
    }
}

TEST(gemm_matmul_fused_clamp)
{
    qs_tensor *in[3] = { rand_t(2, (int64_t[]){ 4, 6 }), rand_t(2, (int64_t[]){ 5, 6 }), rand_t(1, (int64_t[]){ 5 }) };
    qs_node g = opcheck_node("Gemm", NULL);
    qs_node_set_int(&g, "transB", 1);
    check_fused_clamp(&g, 3, in);
    qs_tensor *mm[2] = { rand_t(3, (int64_t[]){ 2, 4, 6 }), rand_t(2, (int64_t[]){ 6, 3 }) };
    qs_node m = opcheck_node("MatMul", NULL);
    check_fused_clamp(&m, 2, mm);
    qs_tensor *bm[2] = { rand_t(3, (int64_t[]){ 2, 4, 6 }), rand_t(3, (int64_t[]){ 2, 6, 3 }) };
    check_fused_clamp(&m, 2, bm);
}

/* ---- bad input ---------------------------------------------------------------------------------------- */

static void expect_error(qs_node *n, int nin, qs_tensor **in, int code, const char *needle)
{
    qs_tensor *y[1];
    qs_err e = {0};
    int rc = opcheck_run(n, 13, nin, in, 1, y, 0, &e);
    ASSERT_EQ(rc, code);
    ASSERT_STR_CONTAINS(e.msg, needle);
}

TEST(gemm_matmul_bad_shapes_named)
{
    qs_node g = opcheck_node("Gemm", NULL);
    g.name = (char *)"fc";
    qs_tensor *in[3] = { rand_t(2, (int64_t[]){ 2, 3 }), rand_t(2, (int64_t[]){ 4, 5 }), NULL };
    expect_error(&g, 2, in, QS_ESHAPE, "Gemm 'fc': A [2, 3] (transA 0) and B [4, 5] (transB 0) do not multiply");
    in[1] = rand_t(2, (int64_t[]){ 3, 5 });
    in[2] = rand_t(1, (int64_t[]){ 2 });
    expect_error(&g, 3, in, QS_ESHAPE, "C [2] does not broadcast to [2, 5]");
    in[0] = rand_t(3, (int64_t[]){ 1, 2, 3 });
    expect_error(&g, 2, in, QS_ESHAPE, "must both be 2-D");
    qs_node m = opcheck_node("MatMul", NULL);
    m.name = (char *)"mm";
    in[0] = rand_t(3, (int64_t[]){ 2, 3, 4 });
    in[1] = rand_t(3, (int64_t[]){ 3, 4, 5 });
    expect_error(&m, 2, in, QS_ESHAPE, "MatMul 'mm': batch dims of A [2, 3, 4] and B [3, 4, 5] do not broadcast");
    in[1] = rand_t(2, (int64_t[]){ 5, 4 });
    expect_error(&m, 2, in, QS_ESHAPE, "inner dims 4 and 5 differ");
    in[1] = qs_tensor_new(QS_I32, 2, (int64_t[]){ 4, 4 });
    expect_error(&m, 2, in, QS_EUNSUPPORTED, "only float32");
}

TEST_MAIN(gemm_hand_computed, gemm_matches_naive_and_finite_differences, matmul_hand_computed_and_vectors,
          matmul_batched_broadcast_matches_naive_and_finite_differences, gemm_matmul_fused_clamp,
          gemm_matmul_bad_shapes_named)
