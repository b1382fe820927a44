/* Conv and ConvTranspose, and the shared kernels under them (sgemm wrapper, im2col/col2im).
 *
 * Truth comes from three independent places: hand-computed outputs (the 5x5 ramp convolved with a
 * 3x3 box, whose sums are easy to check by hand), the naive reference loops in kernels.c (and a
 * scatter-form ConvTranspose written here), and central finite differences for every backward. */
#include "tests/opcheck.h"

#include <unistd.h>
#include "engine/ops/kernels.h"

#include <pthread.h>

/* ---- helpers ------------------------------------------------------------------------------------- */

static int64_t S4[4];
#define SHAPE(...) (memcpy(S4, (int64_t[]){ __VA_ARGS__ }, sizeof((int64_t[]){ __VA_ARGS__ })), S4)
#define NDIMS(...) (int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t))

static qs_tensor *rand_t(int ndim, const int64_t *shape) { return opcheck_rand(ndim, shape, -1, 1); }

static void assert_close_buf(const float *a, const float *ref, int64_t n, double rtol, double atol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - ref[i]) <= atol + rtol * fabs((double)ref[i])))
            QT_FAIL_("element %lld: %.7g vs reference %.7g", (long long)i, a[i], ref[i]);
}

/* infer + forward with a chosen thread count (opcheck_run always uses one) */
/* the epilogue the executor may fold into a Conv: a residual added, then a clamp */
typedef struct {
    int clamp;
    float lo, hi;
    const qs_tensor *residual;
} epilogue;

static int run_epilogue(const qs_node *n, int nin, qs_tensor **in, qs_tensor **out, int nthreads,
                        const epilogue *ep, qs_err *e)
{
    const qs_op_def *d = qs_op_find("", n->op);
    qs_tensor head;
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head };
    qs_kctx c = { .node = n, .opset = 17, .nin = nin, .nout = 1, .in = in, .out = outs, .nthreads = nthreads,
                  .pool = opcheck_pool(nthreads),
                  .err = e, .fused_act = ep->clamp, .act_min = ep->lo, .act_max = ep->hi,
                  .residual = ep->residual };
    int rc = d->infer(&c);
    if (rc < 0)
        return rc;
    out[0] = qs_tensor_new(head.dtype, head.ndim, head.shape);
    c.out = out;
    size_t ss = d->scratch ? d->scratch(&c) : 0;
    c.scratch = ss ? malloc(ss) : NULL;
    c.scratch_size = ss;
    rc = d->forward(&c);
    free(c.scratch);
    return rc;
}

static int run_threads(const qs_node *n, int nin, qs_tensor **in, qs_tensor **out, int nthreads, qs_err *e)
{
    epilogue none = { 0 };
    return run_epilogue(n, nin, in, out, nthreads, &none, e);
}

/* ---- sgemm ---------------------------------------------------------------------------------------- */

/* every transpose, general shapes and the one-row and one-column products that go to sgemv */
TEST(sgemm_matches_reference_all_transposes)
{
    const int64_t shapes[][2] = { { 7, 5 }, { 1, 5 }, { 7, 1 }, { 1, 1 } }, K = 9, pad = 3;   /* lds too big */
    for (int sh = 0; sh < 4; sh++)
        for (int t = 0; t < 4; t++) {
            const int64_t M = shapes[sh][0], N = shapes[sh][1];
            int ta = t & 1, tb = t >> 1;
            int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            int64_t sa[] = { (ta ? K : M) * lda }, sb[] = { (tb ? N : K) * ldb }, sc[] = { M * ldc };
            qs_tensor *A = rand_t(1, sa), *B = rand_t(1, sb), *C = rand_t(1, sc);
            qs_tensor *C2 = qs_tensor_copy(C);
            qs_sgemm(ta, tb, M, N, K, 0.75f, qs_f32(A), lda, qs_f32(B), ldb, 0.5f, qs_f32(C), ldc);
            qs_sgemm_ref(ta, tb, M, N, K, 0.75f, qs_f32(A), lda, qs_f32(B), ldb, 0.5f, qs_f32(C2), ldc);
            assert_close_buf(qs_f32(C), qs_f32(C2), sc[0], 1e-5, 1e-5);
        }
}

TEST(sgemm_hand_computed_and_beta_zero_ignores_nan)
{
    float A[] = { 1, 2, 3, 4, 5, 6 };          /* [2, 3] */
    float B[] = { 1, 0, 0, 1, 1, 1 };          /* [3, 2] */
    float C[] = { NAN, NAN, NAN, NAN };
    qs_sgemm(0, 0, 2, 2, 3, 1.f, A, 3, B, 2, 0.f, C, 2);
    float want[] = { 4, 5, 10, 11 };
    assert_close_buf(C, want, 4, 0, 0);
    qs_sgemm(0, 0, 2, 2, 0, 1.f, A, 3, B, 2, 2.f, C, 2);   /* K = 0: C = beta·C */
    float want2[] = { 8, 10, 20, 22 };
    assert_close_buf(C, want2, 4, 0, 0);
    float c1[] = { NAN, NAN }, c2[] = { NAN, NAN };   /* one row, one column: the sgemv path */
    qs_sgemm(0, 0, 1, 2, 3, 1.f, A, 3, B, 2, 0.f, c1, 2);
    qs_sgemm(0, 1, 2, 1, 3, 1.f, A, 3, (float[]){ 1, 1, 0 }, 3, 0.f, c2, 1);
    assert_close_buf(c1, (float[]){ 4, 5 }, 2, 0, 0);
    assert_close_buf(c2, (float[]){ 3, 9 }, 2, 0, 0);
}

/* ---- im2col / col2im -------------------------------------------------------------------------------- */

static void check_cols(int nd, const int64_t *in, const int64_t *k, const int64_t *s, const int64_t *d,
                       const int64_t *pb, const int64_t *pe, int nthreads)
{
    int64_t out[3];
    for (int i = 0; i < nd; i++)
        out[i] = (in[i] + pb[i] + pe[i] - ((k[i] - 1) * d[i] + 1)) / s[i] + 1;
    qs_conv_geom g;
    qs_conv_geom_set(&g, nd, in, out, k, s, d, pb, pe);
    int64_t ch = 3, xs[] = { ch * qs_geom_invol(&g) }, cs[] = { ch * qs_geom_kvol(&g) * qs_geom_outvol(&g) };
    qs_tensor *x = rand_t(1, xs), *col = qs_tensor_new(QS_F32, 1, cs), *col_ref = qs_tensor_new(QS_F32, 1, cs);
    for (int64_t i = 0; i < cs[0]; i++)
        qs_f32(col)[i] = NAN;   /* every element must be written, padding included */
    qs_im2col(&g, ch, qs_f32(x), qs_f32(col), opcheck_pool(nthreads), nthreads);
    qs_im2col_ref(&g, ch, qs_f32(x), qs_f32(col_ref));
    assert_close_buf(qs_f32(col), qs_f32(col_ref), cs[0], 0, 0);
    /* col2im is im2col's adjoint: <im2col(x), r> == <x, col2im(r)> */
    qs_tensor *r = rand_t(1, cs), *xa = qs_tensor_new(QS_F32, 1, xs), *xb = qs_tensor_new(QS_F32, 1, xs);
    qs_col2im(&g, ch, qs_f32(r), qs_f32(xa), opcheck_pool(nthreads), nthreads);
    qs_col2im_ref(&g, ch, qs_f32(r), qs_f32(xb));
    assert_close_buf(qs_f32(xa), qs_f32(xb), xs[0], 1e-6, 1e-6);
    double lhs = 0, rhs = 0;
    for (int64_t i = 0; i < cs[0]; i++)
        lhs += (double)qs_f32(col)[i] * qs_f32(r)[i];
    for (int64_t i = 0; i < xs[0]; i++)
        rhs += (double)qs_f32(x)[i] * qs_f32(xa)[i];
    ASSERT_CLOSE(lhs, rhs, 1e-5, 1e-5);
}

TEST(im2col_col2im_match_reference)
{
    /* 2-D: plain, strided, dilated, asymmetric pads, pads larger than the dilated kernel reach */
    check_cols(2, (int64_t[]){ 5, 6 }, (int64_t[]){ 3, 3 }, (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 },
               (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 }, 1);
    check_cols(2, (int64_t[]){ 7, 8 }, (int64_t[]){ 3, 2 }, (int64_t[]){ 2, 3 }, (int64_t[]){ 1, 1 },
               (int64_t[]){ 1, 0 }, (int64_t[]){ 0, 2 }, 1);
    check_cols(2, (int64_t[]){ 9, 7 }, (int64_t[]){ 3, 3 }, (int64_t[]){ 1, 2 }, (int64_t[]){ 2, 3 },
               (int64_t[]){ 2, 3 }, (int64_t[]){ 2, 1 }, 2);
    check_cols(2, (int64_t[]){ 4, 4 }, (int64_t[]){ 2, 2 }, (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 },
               (int64_t[]){ 3, 3 }, (int64_t[]){ 3, 3 }, 2);
    /* 1-D and 3-D */
    check_cols(1, (int64_t[]){ 11 }, (int64_t[]){ 4 }, (int64_t[]){ 3 }, (int64_t[]){ 2 }, (int64_t[]){ 2 },
               (int64_t[]){ 1 }, 1);
    check_cols(3, (int64_t[]){ 4, 5, 6 }, (int64_t[]){ 2, 3, 3 }, (int64_t[]){ 2, 1, 2 },
               (int64_t[]){ 1, 2, 1 }, (int64_t[]){ 1, 1, 0 }, (int64_t[]){ 0, 2, 1 }, 2);
}

/* ---- Conv forward: hand-computed ---------------------------------------------------------------------- */

/* x = 0..24 as a 5x5 plane, W = a 3x3 box of ones: each output is the sum of a 3x3 neighbourhood. */
static qs_tensor *ramp5(void)
{
    float v[25];
    for (int i = 0; i < 25; i++)
        v[i] = (float)i;
    return opcheck_from(4, SHAPE(1, 1, 5, 5), v);
}
static qs_tensor *ones(int ndim, const int64_t *shape)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = 1;
    return t;
}

TEST(conv_box_filter_hand_computed)
{
    qs_tensor *in[2] = { ramp5(), ones(4, SHAPE(1, 1, 3, 3)) }, *y;
    /* no padding: centre sums, e.g. (0+1+2+5+6+7+10+11+12) = 54 */
    qs_node n = opcheck_node("Conv", NULL);
    opcheck_forward(&n, 11, 2, in, 1, &y);
    ASSERT_EQ(y->ndim, 4);
    ASSERT_EQ(y->shape[2], 3);
    ASSERT_EQ(y->shape[3], 3);
    float want0[] = { 54, 63, 72, 99, 108, 117, 144, 153, 162 };
    assert_close_buf(qs_f32(y), want0, 9, 0, 1e-4);
    /* pads 1: the corner sees 0+1+5+6 = 12, the top edge 0+1+2+5+6+7 = 21 */
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    opcheck_forward(&n, 11, 2, in, 1, &y);
    ASSERT_EQ(y->shape[2], 5);
    float want1[] = { 12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108, 117, 81, 93, 144, 153, 162, 111,
                      72, 111, 117, 123, 84 };
    assert_close_buf(qs_f32(y), want1, 25, 0, 1e-4);
    /* strides 2 with pads 1: rows 0, 2, 4 and columns 0, 2, 4 of the padded result */
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 2, 2 });
    opcheck_forward(&n, 11, 2, in, 1, &y);
    float want2[] = { 12, 27, 24, 63, 108, 81, 72, 117, 84 };
    assert_close_buf(qs_f32(y), want2, 9, 0, 1e-4);
    /* asymmetric pads [1, 0, 1, 0] (rows padded, columns not) with strides 2: 4x2 output */
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 1, 0, 1, 0 });
    opcheck_forward(&n, 11, 2, in, 1, &y);
    ASSERT_EQ(y->shape[2], 3);
    ASSERT_EQ(y->shape[3], 2);
    float want3[] = { 21, 33, 99, 117, 111, 123 };
    assert_close_buf(qs_f32(y), want3, 6, 0, 1e-4);
}

/* The executor calls prepare once per plan and hands the state to every forward: the geometry is
 * parsed then, and later changes to the node's attributes are not re-read (the 3x3 result of
 * strides 2, pads 1 above, though the node now says strides 1, no pads). Without a state (the
 * kernel called on its own) the attributes are parsed at each call and give the same numbers. */
TEST(conv_prepared_state_is_parsed_once)
{
    qs_tensor *in[2] = { ramp5(), ones(4, SHAPE(1, 1, 3, 3)) }, *y = NULL;
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 2, 2 });
    const qs_op_def *d = qs_op_find("", "Conv");
    ASSERT(d->prepare != NULL);
    qs_err e = { 0 };
    qs_tensor head;
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head };
    qs_kctx c = { .node = &n, .opset = 17, .nin = 2, .nout = 1, .in = in, .out = outs, .nthreads = 1, .err = &e };
    ASSERT_EQ(d->infer(&c), 0);
    y = qs_tensor_new(head.dtype, head.ndim, head.shape);
    outs[0] = y;
    void *state = NULL;
    ASSERT_EQ(d->prepare(&c, &state), 0);
    ASSERT(state != NULL);
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 1, 1 });
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 0, 0, 0, 0 });
    c.state = state;
    size_t ss = d->scratch ? d->scratch(&c) : 0;
    c.scratch = ss ? malloc(ss) : NULL;
    c.scratch_size = ss;
    ASSERT_EQ(d->forward(&c), 0);
    float want[] = { 12, 27, 24, 63, 108, 81, 72, 117, 84 };
    assert_close_buf(qs_f32(y), want, 9, 0, 1e-4);
    free(c.scratch);
    (d->release ? d->release : free)(state);
    /* unprepared: the node as it is now (strides 1, no pads) gives the 3x3 centre sums */
    qs_tensor *y2;
    opcheck_forward(&n, 11, 2, in, 1, &y2);
    float want0[] = { 54, 63, 72, 99, 108, 117, 144, 153, 162 };
    assert_close_buf(qs_f32(y2), want0, 9, 0, 1e-4);
}

TEST(conv_auto_pad_same_lower_and_upper)
{
    /* 5x5 input, 3x3 kernel, strides 2: output ceil(5/2) = 3, total padding (3−1)·2 + 3 − 5 = 2, one on
     * each side for both modes; with a 4x4 input the total is 1 and UPPER puts it at the end, LOWER at
     * the beginning. */
    qs_tensor *in[2] = { ramp5(), ones(4, SHAPE(1, 1, 3, 3)) }, *y;
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_string(&n, "auto_pad", "SAME_LOWER");
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 2, 2 });
    opcheck_forward(&n, 11, 2, in, 1, &y);
    float want[] = { 12, 27, 24, 63, 108, 81, 72, 117, 84 };
    assert_close_buf(qs_f32(y), want, 9, 0, 1e-4);

    float v[16];
    for (int i = 0; i < 16; i++)
        v[i] = (float)i;   /* 4x4 ramp */
    in[0] = opcheck_from(4, SHAPE(1, 1, 4, 4), v);
    opcheck_forward(&n, 11, 2, in, 1, &y);   /* LOWER: pad one row/col at the top/left */
    ASSERT_EQ(y->shape[2], 2);
    float lower[] = { 0 + 1 + 4 + 5, 1 + 2 + 3 + 5 + 6 + 7, 4 + 5 + 8 + 9 + 12 + 13, 5 + 6 + 7 + 9 + 10 + 11 + 13 + 14 + 15 };
    assert_close_buf(qs_f32(y), lower, 4, 0, 1e-4);
    qs_node_set_string(&n, "auto_pad", "SAME_UPPER");
    opcheck_forward(&n, 11, 2, in, 1, &y);   /* UPPER: the padding goes to the bottom/right */
    float upper[] = { 0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10, 2 + 3 + 6 + 7 + 10 + 11, 8 + 9 + 10 + 12 + 13 + 14, 10 + 11 + 14 + 15 };
    assert_close_buf(qs_f32(y), upper, 4, 0, 1e-4);
    qs_node_set_string(&n, "auto_pad", "VALID");
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 5, 5, 5, 5 });   /* ignored under VALID */
    opcheck_forward(&n, 11, 2, in, 1, &y);
    ASSERT_EQ(y->shape[2], 1);
    ASSERT_CLOSE(qs_f32(y)[0], 0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10, 0, 1e-4);
}

/* ---- Conv forward: against the reference loops ----------------------------------------------------------- */

typedef struct {
    int nd;
    int64_t N, C, M, group;
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3];
    int bias;
} conv_case;

/* mode 0: plain; 1: fused clamp; 2: fused residual; 3: both (against the reference, then + r, clamp) */
static void check_conv_case_mode(const conv_case *t, int nthreads, int mode)
{
    int64_t xs[5] = { t->N, t->C }, ws[5] = { t->M, t->C / t->group }, out[3];
    for (int i = 0; i < t->nd; i++) {
        xs[2 + i] = t->in[i];
        ws[2 + i] = t->k[i];
        out[i] = (t->in[i] + t->pb[i] + t->pe[i] - ((t->k[i] - 1) * t->d[i] + 1)) / t->s[i] + 1;
    }
    qs_tensor *in[3] = { rand_t(2 + t->nd, xs), rand_t(2 + t->nd, ws), rand_t(1, &t->M) }, *y;
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_int(&n, "group", t->group);
    qs_node_set_ints(&n, "strides", t->nd, t->s);
    qs_node_set_ints(&n, "dilations", t->nd, t->d);
    int64_t pads[6];
    for (int i = 0; i < t->nd; i++) {
        pads[i] = t->pb[i];
        pads[t->nd + i] = t->pe[i];
    }
    qs_node_set_ints(&n, "pads", 2 * t->nd, pads);
    qs_err e = {0};
    int64_t ys[5] = { t->N, t->M };
    for (int i = 0; i < t->nd; i++)
        ys[2 + i] = out[i];
    qs_tensor *r = rand_t(2 + t->nd, ys);
    epilogue ep = { mode & 1, -0.3f, 0.4f, mode & 2 ? r : NULL };
    if (run_epilogue(&n, t->bias ? 3 : 2, in, &y, nthreads, &ep, &e) < 0)
        QT_FAIL_("%s", e.msg);
    ASSERT_EQ(y->ndim, 2 + t->nd);
    ASSERT_EQ(y->shape[1], t->M);
    for (int i = 0; i < t->nd; i++)
        ASSERT_EQ(y->shape[2 + i], out[i]);
    qs_conv_geom g;
    qs_conv_geom_set(&g, t->nd, t->in, out, t->k, t->s, t->d, t->pb, t->pe);
    qs_tensor *ref = qs_tensor_new(QS_F32, y->ndim, y->shape);
    qs_conv_ref(&g, t->N, t->C, t->M, t->group, qs_f32(in[0]), qs_f32(in[1]), t->bias ? qs_f32(in[2]) : NULL,
                qs_f32(ref));
    int clamped = 0;
    for (int64_t i = 0; i < qs_numel(ref); i++) {
        float v = qs_f32(ref)[i] + (mode & 2 ? qs_f32(r)[i] : 0.f);
        if (mode & 1) {
            clamped += v < ep.lo || v > ep.hi;
            v = v < ep.lo ? ep.lo : v > ep.hi ? ep.hi : v;
        }
        qs_f32(ref)[i] = v;
    }
    if (mode & 1)
        ASSERT(clamped > 0);
    assert_close_buf(qs_f32(y), qs_f32(ref), qs_numel(y), 1e-4, 1e-4);
}

static void check_conv_case(const conv_case *t, int nthreads)
{
    check_conv_case_mode(t, nthreads, 0);
}

static const conv_case conv_cases[] = {
    /* general im2col path */
    { 2, 2, 3, 4, 1, { 6, 7 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },
    { 2, 2, 3, 5, 1, { 9, 8 }, { 3, 2 }, { 2, 3 }, { 2, 1 }, { 1, 0 }, { 2, 1 }, 0 },
    { 2, 1, 4, 6, 2, { 7, 7 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 0, 0 }, 1 },   /* groups */
    { 2, 2, 6, 3, 3, { 5, 6 }, { 2, 3 }, { 1, 1 }, { 2, 1 }, { 0, 1 }, { 1, 1 }, 1 },
    /* pointwise (1x1, no im2col) and 1x1 with stride (im2col gathers) */
    { 2, 3, 5, 4, 1, { 4, 6 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 1 },
    { 2, 2, 4, 4, 2, { 4, 6 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 0 },
    { 2, 2, 5, 4, 1, { 7, 6 }, { 1, 1 }, { 2, 2 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 1 },
    /* depthwise, with and without channel multiplier, strides, dilations, asymmetric pads */
    { 2, 2, 4, 4, 4, { 7, 8 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },
    { 2, 2, 3, 6, 3, { 9, 7 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },
    { 2, 1, 3, 3, 3, { 9, 10 }, { 3, 2 }, { 2, 3 }, { 2, 2 }, { 2, 0 }, { 1, 2 }, 0 },
    { 2, 1, 2, 2, 2, { 3, 3 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 2, 2 }, { 2, 2 }, 1 },   /* pads ≥ kernel reach */
    /* depthwise over more than one block of 16 channels, the last one partial */
    { 2, 2, 20, 20, 20, { 9, 8 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },
    { 2, 1, 10, 20, 10, { 6, 7 }, { 5, 3 }, { 2, 1 }, { 1, 2 }, { 2, 1 }, { 2, 2 }, 1 },
    { 1, 2, 17, 17, 17, { 30 }, { 5 }, { 3 }, { 1 }, { 2 }, { 2 }, 0 },
    /* depthwise rows of 16 outputs or more (the planar path): odd widths, exactly 16, stride 2 and 3
     * with 5x5 and dilated kernels, asymmetric pads, pads beyond the kernel's reach, 1-D */
    { 2, 1, 3, 3, 3, { 20, 33 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },
    { 2, 1, 17, 17, 17, { 5, 16 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },
    { 2, 2, 5, 5, 5, { 37, 36 }, { 5, 5 }, { 2, 2 }, { 1, 1 }, { 2, 1 }, { 1, 2 }, 1 },
    { 2, 1, 4, 8, 4, { 21, 40 }, { 3, 3 }, { 2, 2 }, { 2, 2 }, { 2, 2 }, { 1, 2 }, 0 },
    { 2, 1, 2, 2, 2, { 10, 50 }, { 3, 3 }, { 3, 3 }, { 1, 1 }, { 3, 3 }, { 3, 3 }, 1 },
    { 2, 2, 3, 3, 3, { 9, 35 }, { 5, 3 }, { 1, 2 }, { 1, 1 }, { 2, 0 }, { 2, 1 }, 1 },
    { 1, 2, 3, 3, 3, { 40 }, { 5 }, { 2 }, { 1 }, { 2 }, { 1 }, 1 },
    /* 1-D and 3-D */
    { 1, 2, 3, 4, 1, { 13 }, { 4 }, { 2 }, { 2 }, { 2 }, { 1 }, 1 },
    { 1, 2, 4, 8, 4, { 10 }, { 3 }, { 1 }, { 1 }, { 1 }, { 1 }, 1 },                 /* 1-D depthwise */
    { 3, 2, 2, 3, 1, { 4, 5, 5 }, { 2, 3, 3 }, { 1, 2, 1 }, { 1, 1, 2 }, { 1, 1, 1 }, { 0, 1, 1 }, 1 },
    { 3, 1, 2, 2, 2, { 4, 4, 5 }, { 3, 3, 3 }, { 1, 1, 2 }, { 1, 1, 1 }, { 1, 1, 1 }, { 1, 1, 1 }, 1 },
};

TEST(conv_matches_reference)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        check_conv_case(&conv_cases[i], 1);
}

/* the clamp and residual the executor folds in, on every path (GEMM, 1x1, depthwise fast and 3-D) */
TEST(conv_fused_epilogue_matches_reference)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        for (int mode = 1; mode <= 3; mode++)
            check_conv_case_mode(&conv_cases[i], 1 + (int)(i % 2), mode);
}

TEST(conv_matches_reference_two_threads)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        check_conv_case(&conv_cases[i], 2);
    /* big enough that the im2col and depthwise loops really split across threads */
    conv_case big = { 2, 2, 16, 8, 1, { 40, 40 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 };
    check_conv_case(&big, 2);
    conv_case bigdw = { 2, 2, 16, 16, 16, { 40, 40 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 };
    check_conv_case(&bigdw, 2);
    opcheck_pools_free();   /* join the workers before the harness's _exit */
}

TEST(conv_kernel_shape_inferred_and_checked)
{
    qs_tensor *in[2] = { rand_t(4, SHAPE(1, 2, 5, 5)), rand_t(4, SHAPE(3, 2, 2, 3)) }, *y;
    qs_node n = opcheck_node("Conv", NULL);
    opcheck_forward(&n, 11, 2, in, 1, &y);   /* no kernel_shape: taken from W */
    ASSERT_EQ(y->shape[2], 4);
    ASSERT_EQ(y->shape[3], 3);
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 2, 3 });
    opcheck_forward(&n, 11, 2, in, 1, &y);
    ASSERT_EQ(y->shape[3], 3);
}

/* ---- Conv backward --------------------------------------------------------------------------------------- */

static void grad_case(const conv_case *t)
{
    int64_t xs[5] = { t->N, t->C }, ws[5] = { t->M, t->C / t->group };
    for (int i = 0; i < t->nd; i++) {
        xs[2 + i] = t->in[i];
        ws[2 + i] = t->k[i];
    }
    qs_tensor *in[3] = { rand_t(2 + t->nd, xs), rand_t(2 + t->nd, ws), rand_t(1, &t->M) };
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_int(&n, "group", t->group);
    qs_node_set_ints(&n, "strides", t->nd, t->s);
    qs_node_set_ints(&n, "dilations", t->nd, t->d);
    int64_t pads[6];
    for (int i = 0; i < t->nd; i++) {
        pads[i] = t->pb[i];
        pads[t->nd + i] = t->pe[i];
    }
    qs_node_set_ints(&n, "pads", 2 * t->nd, pads);
    opcheck_grad(&n, 11, t->bias ? 3 : 2, in, 1, 1e-2, 1e-2, 1e-3);
}

TEST(conv_backward_matches_finite_differences)
{
    static const conv_case cases[] = {
        { 2, 2, 3, 2, 1, { 5, 4 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },       /* im2col */
        { 2, 1, 4, 4, 2, { 6, 5 }, { 3, 2 }, { 2, 1 }, { 1, 2 }, { 1, 0 }, { 0, 1 }, 1 },       /* groups */
        { 2, 2, 3, 2, 1, { 3, 4 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 1 },       /* 1x1 */
        { 2, 2, 3, 4, 1, { 5, 6 }, { 1, 1 }, { 2, 2 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 1 },       /* 1x1, stride 2 */
        { 2, 2, 3, 3, 3, { 5, 5 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },       /* depthwise */
        { 2, 1, 2, 4, 2, { 7, 6 }, { 3, 2 }, { 2, 2 }, { 2, 1 }, { 1, 0 }, { 2, 1 }, 1 },       /* dw ×2, strided */
        { 1, 2, 2, 3, 1, { 9 }, { 3 }, { 2 }, { 2 }, { 1 }, { 2 }, 1 },                       /* 1-D */
        { 3, 1, 2, 2, 1, { 3, 4, 4 }, { 2, 2, 3 }, { 1, 2, 1 }, { 1, 1, 1 }, { 1, 0, 1 }, { 0, 1, 1 }, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        grad_case(&cases[i]);
}

/* backward with a chosen thread count; din[i] allocated for inputs 0..nin-1 */
static void backward_threads(const qs_node *n, int nin, qs_tensor **in, const qs_tensor *dy, int nthreads,
                             qs_tensor **din)
{
    const qs_op_def *d = qs_op_find("", n->op);
    qs_tensor *y;
    qs_err e = {0};
    if (run_threads(n, nin, in, &y, nthreads, &e) < 0)
        QT_FAIL_("%s", e.msg);
    for (int i = 0; i < nin; i++)
        din[i] = qs_tensor_new(QS_F32, in[i]->ndim, in[i]->shape);
    qs_tensor *dout[1] = { (qs_tensor *)dy };
    qs_kctx c = { .node = n, .opset = 17, .nin = nin, .nout = 1, .in = in, .out = &y, .din = din, .dout = dout,
                  .nthreads = nthreads, .pool = opcheck_pool(nthreads), .training = 1, .err = &e };
    size_t ss = d->scratch(&c);
    c.scratch = ss ? malloc(ss) : NULL;
    c.scratch_size = ss;
    if (d->backward(&c) < 0)
        QT_FAIL_("%s", e.msg);
    free(c.scratch);
}

TEST(conv_backward_two_threads_matches_one)
{
    static const conv_case cases[] = {
        { 2, 3, 4, 6, 2, { 9, 8 }, { 3, 3 }, { 2, 1 }, { 1, 1 }, { 1, 1 }, { 1, 0 }, 1 },    /* im2col, groups */
        { 2, 5, 8, 4, 1, { 6, 6 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 1 },    /* 1x1 */
        { 2, 3, 8, 8, 8, { 7, 7 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },    /* depthwise */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const conv_case *k = &cases[t];
        int64_t xs[4] = { k->N, k->C, k->in[0], k->in[1] }, ws[4] = { k->M, k->C / k->group, k->k[0], k->k[1] };
        qs_tensor *in[3] = { rand_t(4, xs), rand_t(4, ws), rand_t(1, &k->M) }, *y, *d1[3], *d2[3];
        qs_node n = opcheck_node("Conv", NULL);
        qs_node_set_int(&n, "group", k->group);
        qs_node_set_ints(&n, "strides", 2, k->s);
        qs_node_set_ints(&n, "pads", 4, (int64_t[]){ k->pb[0], k->pb[1], k->pe[0], k->pe[1] });
        qs_err e = {0};
        ASSERT_EQ(run_threads(&n, 3, in, &y, 1, &e), 0);
        qs_tensor *dy = rand_t(y->ndim, y->shape);
        backward_threads(&n, 3, in, dy, 1, d1);
        backward_threads(&n, 3, in, dy, 2, d2);
        for (int i = 0; i < 3; i++)   /* dW and dB summed in fixed chunks of items: the same bits */
            if (memcmp(d2[i]->data, d1[i]->data, qs_nbytes(d1[i])))
                QT_FAIL_("case %zu: the gradient of input %d differs between 1 and 2 threads", t, i);
    }
    opcheck_pools_free();   /* join the workers before the harness's _exit */
}

static double dot(const qs_tensor *a, const qs_tensor *b)
{
    double s = 0;
    for (int64_t i = 0; i < qs_numel(a); i++)
        s += (double)qs_f32(a)[i] * qs_f32(b)[i];
    return s;
}

/* Conv is bilinear in (X, W), so its backward is exact where finite differences are noisy:
 * <dY, Conv(X, W)> = <dX, X> = <dW, W>. Checked on layers of realistic size on every path. */
TEST(conv_backward_adjoint_identities)
{
    static const conv_case cases[] = {
        { 2, 4, 16, 16, 1, { 14, 14 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0 },
        { 2, 4, 16, 32, 1, { 14, 14 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0 },
        { 2, 4, 16, 32, 1, { 14, 14 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 0 },
        { 2, 4, 16, 32, 1, { 14, 14 }, { 1, 1 }, { 2, 2 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 0 },
        { 2, 4, 40, 40, 40, { 14, 14 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0 },
        { 2, 4, 40, 40, 40, { 14, 14 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0 },
        { 2, 4, 8, 16, 8, { 9, 9 }, { 3, 3 }, { 1, 1 }, { 2, 2 }, { 2, 2 }, { 2, 2 }, 0 },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++)
        for (int nt = 1; nt <= 2; nt++) {
            const conv_case *k = &cases[t];
            int64_t xs[4] = { k->N, k->C, k->in[0], k->in[1] }, ws[4] = { k->M, k->C / k->group, k->k[0], k->k[1] };
            qs_tensor *in[2] = { rand_t(4, xs), rand_t(4, ws) }, *y, *d[2];
            qs_node n = opcheck_node("Conv", NULL);
            qs_node_set_int(&n, "group", k->group);
            qs_node_set_ints(&n, "strides", 2, k->s);
            qs_node_set_ints(&n, "dilations", 2, k->d);
            qs_node_set_ints(&n, "pads", 4, (int64_t[]){ k->pb[0], k->pb[1], k->pe[0], k->pe[1] });
            qs_err e = {0};
            ASSERT_EQ(run_threads(&n, 2, in, &y, nt, &e), 0);
            qs_tensor *dy = rand_t(y->ndim, y->shape);
            backward_threads(&n, 2, in, dy, nt, d);
            double ref = dot(dy, y);
            ASSERT_CLOSE(dot(d[0], in[0]), ref, 1e-5, 1e-4);
            ASSERT_CLOSE(dot(d[1], in[1]), ref, 1e-5, 1e-4);
        }
    opcheck_pools_free();   /* join the workers before the harness's _exit */
}

/* forward with the executor's fused clamp; compares with the plain forward clamped afterwards */
static void check_fused_clamp(const qs_node *n, int nin, qs_tensor **in, int nthreads)
{
    const qs_op_def *d = qs_op_find("", n->op);
    qs_tensor *plain, head;
    qs_err e = {0};
    ASSERT_EQ(run_threads(n, nin, in, &plain, nthreads, &e), 0);
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head };
    qs_kctx c = { .node = n, .opset = 17, .nin = nin, .nout = 1, .in = in, .out = outs, .nthreads = nthreads,
                  .pool = opcheck_pool(nthreads),
                  .err = &e, .fused_act = 1, .act_min = -0.2f, .act_max = 0.3f };
    ASSERT_EQ(d->infer(&c), 0);
    qs_tensor *y = qs_tensor_new(head.dtype, head.ndim, head.shape);
    c.out = &y;
    c.scratch_size = d->scratch ? d->scratch(&c) : 0;
    c.scratch = c.scratch_size ? malloc(c.scratch_size) : NULL;
    ASSERT_EQ(d->forward(&c), 0);
    int below = 0, above = 0;
    for (int64_t i = 0; i < qs_numel(y); i++) {
        float v = qs_f32(plain)[i], want = v < -0.2f ? -0.2f : v > 0.3f ? 0.3f : v;
        below += v < -0.2f;
        above += v > 0.3f;
        ASSERT_CLOSE(qs_f32(y)[i], want, 1e-6, 1e-6);
    }
    ASSERT(below > 0 && above > 0);   /* the clamp did something both ways */
    free(c.scratch);
}

TEST(conv_fused_clamp)
{
    static const conv_case cases[] = {
        { 2, 2, 3, 4, 1, { 6, 7 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 },    /* im2col */
        { 2, 2, 5, 4, 1, { 4, 6 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 0 },    /* 1x1, no bias */
        { 2, 2, 20, 20, 20, { 7, 8 }, { 3, 3 }, { 2, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1 }, /* depthwise */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++)
        for (int nt = 1; nt <= 2; nt++) {
            const conv_case *k = &cases[t];
            int64_t xs[4] = { k->N, k->C, k->in[0], k->in[1] }, ws[4] = { k->M, k->C / k->group, k->k[0], k->k[1] };
            qs_tensor *in[3] = { rand_t(4, xs), rand_t(4, ws), rand_t(1, &k->M) };
            qs_node n = opcheck_node("Conv", NULL);
            qs_node_set_int(&n, "group", k->group);
            qs_node_set_ints(&n, "strides", 2, k->s);
            qs_node_set_ints(&n, "pads", 4, (int64_t[]){ k->pb[0], k->pb[1], k->pe[0], k->pe[1] });
            check_fused_clamp(&n, k->bias ? 3 : 2, in, nt);
        }
    /* 3-D depthwise (the generic loops) and ConvTranspose */
    qs_tensor *in3[3] = { rand_t(5, (int64_t[]){ 1, 3, 3, 4, 4 }), rand_t(5, (int64_t[]){ 3, 1, 2, 2, 2 }),
                          rand_t(1, (int64_t[]){ 3 }) };
    qs_node d3 = opcheck_node("Conv", NULL);
    qs_node_set_int(&d3, "group", 3);
    check_fused_clamp(&d3, 3, in3, 1);
    qs_tensor *tin[3] = { rand_t(4, (int64_t[]){ 2, 3, 4, 4 }), rand_t(4, (int64_t[]){ 3, 2, 3, 3 }),
                          rand_t(1, (int64_t[]){ 2 }) };
    qs_node ct = opcheck_node("ConvTranspose", NULL);
    qs_node_set_ints(&ct, "strides", 2, (int64_t[]){ 2, 2 });
    check_fused_clamp(&ct, 3, tin, 1);
    opcheck_pools_free();   /* join the workers before the harness's _exit */
}

/* ---- ConvTranspose ------------------------------------------------------------------------------------------- */

/* Scatter form, straight from the definition: each input element adds x·w into a (stride-spaced,
 * dilated) patch of the full output, which is then cropped by pads (negative pads = zero border). */
static void convt_ref(int nd, const qs_tensor *X, const qs_tensor *W, const float *b, int64_t group,
                      const int64_t *s, const int64_t *d, const int64_t *pb, qs_tensor *Y)
{
    QS_ASSERT(nd <= 2);
    int64_t N = X->shape[0], C = X->shape[1], M = Y->shape[1], Cg = C / group, Mg = M / group;
    int64_t ih = nd == 2 ? X->shape[2] : 1, iw = X->shape[1 + nd], oh = nd == 2 ? Y->shape[2] : 1,
            ow = Y->shape[1 + nd];
    int64_t kh = nd == 2 ? W->shape[2] : 1, kw = W->shape[1 + nd];
    int64_t sh = nd == 2 ? s[0] : 1, sw = s[nd - 1], dh = nd == 2 ? d[0] : 1, dw = d[nd - 1];
    int64_t ph = nd == 2 ? pb[0] : 0, pw = pb[nd - 1];
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t i = 0; i < oh * ow; i++)
                qs_f32(Y)[(n * M + m) * oh * ow + i] = b ? b[m] : 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < ih; y++)
                for (int64_t x = 0; x < iw; x++)
                    for (int64_t mm = 0; mm < Mg; mm++)
                        for (int64_t ky = 0; ky < kh; ky++)
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t m = (c / Cg) * Mg + mm;
                                int64_t oy = y * sh + ky * dh - ph, ox = x * sw + kx * dw - pw;
                                if (oy < 0 || oy >= oh || ox < 0 || ox >= ow)
                                    continue;
                                qs_f32(Y)[((n * M + m) * oh + oy) * ow + ox] +=
                                    qs_f32(X)[((n * C + c) * ih + y) * iw + x] *
                                    qs_f32(W)[((c * Mg + mm) * kh + ky) * kw + kx];
                            }
}

TEST(convtranspose_hand_computed)
{
    /* x = [[0,1,2],[3,4,5],[6,7,8]], W = 2 output channels of 3x3 ones, strides [3, 2]: the full output
     * is 9x7; each input row lands on 3 output rows; along width, windows overlap by one column. */
    float xv[9] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 };
    qs_tensor *in[2] = { opcheck_from(4, SHAPE(1, 1, 3, 3), xv), ones(4, SHAPE(1, 2, 3, 3)) }, *y;
    qs_node n = opcheck_node("ConvTranspose", NULL);
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 3, 2 });
    opcheck_forward(&n, 11, 2, in, 1, &y);
    ASSERT_EQ(y->shape[1], 2);
    ASSERT_EQ(y->shape[2], 9);
    ASSERT_EQ(y->shape[3], 7);
    float row0[7] = { 0, 0, 1, 1, 3, 2, 2 }, row3[7] = { 3, 3, 7, 4, 9, 5, 5 };
    assert_close_buf(qs_f32(y), row0, 7, 0, 1e-5);
    assert_close_buf(qs_f32(y) + 3 * 7, row3, 7, 0, 1e-5);
    assert_close_buf(qs_f32(y) + 63 + 3 * 7, row3, 7, 0, 1e-5);   /* second channel identical */

    /* output_shape [10, 8] (one larger than full): the extra row/column is zero, at the end */
    qs_node_set_ints(&n, "output_shape", 2, (int64_t[]){ 10, 8 });
    opcheck_forward(&n, 11, 2, in, 1, &y);
    ASSERT_EQ(y->shape[2], 10);
    ASSERT_EQ(y->shape[3], 8);
    float row0b[8] = { 0, 0, 1, 1, 3, 2, 2, 0 }, zero[8] = { 0 };
    assert_close_buf(qs_f32(y), row0b, 8, 0, 1e-5);
    assert_close_buf(qs_f32(y) + 9 * 8, zero, 8, 0, 0);
    /* output_padding [1, 1] gives the same */
    qs_node m = opcheck_node("ConvTranspose", NULL);
    qs_node_set_ints(&m, "strides", 2, (int64_t[]){ 3, 2 });
    qs_node_set_ints(&m, "output_padding", 2, (int64_t[]){ 1, 1 });
    qs_tensor *y2;
    opcheck_forward(&m, 11, 2, in, 1, &y2);
    ASSERT_EQ(y2->shape[2], 10);
    assert_close_buf(qs_f32(y2), qs_f32(y), qs_numel(y), 0, 0);
    /* pads [1, 2, 1, 2] crop the 9x7 full output to 7x3: rows 1..7, columns 2..4 */
    qs_node p = opcheck_node("ConvTranspose", NULL);
    qs_node_set_ints(&p, "strides", 2, (int64_t[]){ 3, 2 });
    qs_node_set_ints(&p, "pads", 4, (int64_t[]){ 1, 2, 1, 2 });
    opcheck_forward(&p, 11, 2, in, 1, &y2);
    ASSERT_EQ(y2->shape[2], 7);
    ASSERT_EQ(y2->shape[3], 3);
    float prow0[3] = { 1, 1, 3 }, prow2[3] = { 7, 4, 9 };
    assert_close_buf(qs_f32(y2), prow0, 3, 0, 1e-5);
    assert_close_buf(qs_f32(y2) + 2 * 3, prow2, 3, 0, 1e-5);
    /* auto_pad SAME_UPPER, strides 2: output 6x6 = input·stride, the one extra padding cell cut at the end */
    qs_node q = opcheck_node("ConvTranspose", NULL);
    qs_node_set_ints(&q, "strides", 2, (int64_t[]){ 2, 2 });
    qs_node_set_string(&q, "auto_pad", "SAME_UPPER");
    opcheck_forward(&q, 11, 2, in, 1, &y2);
    ASSERT_EQ(y2->shape[2], 6);
    float qrow0[6] = { 0, 0, 1, 1, 3, 2 }, qrow2[6] = { 3, 3, 8, 5, 12, 7 };
    assert_close_buf(qs_f32(y2), qrow0, 6, 0, 1e-5);
    assert_close_buf(qs_f32(y2) + 2 * 6, qrow2, 6, 0, 1e-5);
    qs_node_set_string(&q, "auto_pad", "SAME_LOWER");   /* the extra cell is cut at the beginning */
    opcheck_forward(&q, 11, 2, in, 1, &y2);
    float lrow0[6] = { 0, 1, 1, 3, 2, 2 };
    assert_close_buf(qs_f32(y2), lrow0, 6, 0, 1e-5);
}

TEST(convtranspose_matches_scatter_reference)
{
    struct {
        int nd;
        int64_t N, C, M, group, in[2], k[2], s[2], d[2], pads[4], opad[2];
        int bias;
    } cases[] = {
        { 2, 2, 3, 4, 1, { 4, 5 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1, 1, 1 }, { 1, 0 }, 1 },
        { 2, 1, 4, 6, 2, { 3, 4 }, { 2, 3 }, { 1, 2 }, { 2, 1 }, { 0, 1, 1, 0 }, { 0, 1 }, 1 },
        { 2, 2, 4, 2, 1, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 0, 0, 0, 0 }, { 0, 0 }, 1 },   /* 1x1 */
        { 2, 1, 3, 3, 3, { 4, 4 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1, 1, 1 }, { 1, 1 }, 0 },   /* depthwise */
        { 1, 2, 2, 3, 1, { 6 }, { 3 }, { 3 }, { 2 }, { 1, 2 }, { 2 }, 1 },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int nd = cases[t].nd;
        int64_t xs[4] = { cases[t].N, cases[t].C }, ws[4] = { cases[t].C, cases[t].M / cases[t].group };
        int64_t ys[4] = { cases[t].N, cases[t].M }, pads[4];
        for (int i = 0; i < nd; i++) {
            xs[2 + i] = cases[t].in[i];
            ws[2 + i] = cases[t].k[i];
            pads[i] = cases[t].pads[i];
            pads[nd + i] = cases[t].pads[nd == 1 ? 1 : 2 + i];
            ys[2 + i] = cases[t].s[i] * (cases[t].in[i] - 1) + cases[t].opad[i] +
                        (cases[t].k[i] - 1) * cases[t].d[i] + 1 - pads[i] - pads[nd + i];
        }
        qs_tensor *in[3] = { rand_t(2 + nd, xs), rand_t(2 + nd, ws), rand_t(1, &cases[t].M) }, *y;
        qs_node n = opcheck_node("ConvTranspose", NULL);
        qs_node_set_int(&n, "group", cases[t].group);
        qs_node_set_ints(&n, "strides", nd, cases[t].s);
        qs_node_set_ints(&n, "dilations", nd, cases[t].d);
        qs_node_set_ints(&n, "pads", 2 * nd, pads);
        qs_node_set_ints(&n, "output_padding", nd, cases[t].opad);
        opcheck_forward(&n, 11, cases[t].bias ? 3 : 2, in, 1, &y);
        ASSERT_EQ(y->ndim, 2 + nd);
        for (int i = 0; i < 2 + nd; i++)
            ASSERT_EQ(y->shape[i], ys[i]);
        qs_tensor *ref = qs_tensor_new(QS_F32, 2 + nd, ys);
        convt_ref(nd, in[0], in[1], cases[t].bias ? qs_f32(in[2]) : NULL, cases[t].group, cases[t].s, cases[t].d,
                  pads, ref);
        assert_close_buf(qs_f32(y), qs_f32(ref), qs_numel(y), 1e-4, 1e-4);
        opcheck_grad(&n, 11, cases[t].bias ? 3 : 2, in, 1, 1e-2, 1e-2, 1e-3);
    }
}

TEST(convtranspose_output_shape_grad)
{
    qs_tensor *in[3] = { rand_t(4, SHAPE(1, 2, 3, 3)), rand_t(4, SHAPE(2, 2, 3, 3)), rand_t(1, SHAPE(2)) };
    qs_node n = opcheck_node("ConvTranspose", NULL);
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 2, 2 });
    qs_node_set_ints(&n, "output_shape", 2, (int64_t[]){ 8, 5 });   /* one larger, one smaller than full (7) */
    qs_tensor *y;
    opcheck_forward(&n, 11, 3, in, 1, &y);
    ASSERT_EQ(y->shape[2], 8);
    ASSERT_EQ(y->shape[3], 5);
    opcheck_grad(&n, 11, 3, in, 1, 1e-2, 1e-2, 1e-3);
}

/* ---- bad input -------------------------------------------------------------------------------------------- */

static void expect_error(qs_node *n, int nin, qs_tensor **in, int code, const char *needle)
{
    qs_tensor *y[1];
    qs_err e = {0};
    int rc = opcheck_run(n, 13, nin, in, 1, y, 0, &e);
    ASSERT_EQ(rc, code);
    ASSERT_STR_CONTAINS(e.msg, needle);
}

TEST(conv_bad_input_named)
{
    qs_node n = opcheck_node("Conv", NULL);
    n.name = (char *)"c1";
    qs_tensor *in[3] = { rand_t(4, SHAPE(1, 3, 8, 8)), rand_t(4, SHAPE(8, 4, 3, 3)), NULL };
    expect_error(&n, 2, in, QS_ESHAPE, "Conv 'c1': input has 3 channels but W expects 4 (W shape [8, 4, 3, 3])");
    in[1] = rand_t(3, SHAPE(8, 3, 3));
    expect_error(&n, 2, in, QS_ESHAPE, "W has shape [8, 3, 3]; expected rank 4");
    in[1] = rand_t(4, SHAPE(8, 3, 3, 3));
    in[2] = rand_t(1, SHAPE(7));
    expect_error(&n, 3, in, QS_ESHAPE, "bias B has shape [7]; expected [8]");
    in[2] = NULL;
    qs_node_set_int(&n, "group", 2);
    expect_error(&n, 2, in, QS_ESHAPE, "group = 2 does not divide");
    qs_node_set_int(&n, "group", 1);
    qs_node_set_string(&n, "auto_pad", "SAME");
    expect_error(&n, 2, in, QS_EINVAL, "auto_pad 'SAME'");
    qs_node_set_string(&n, "auto_pad", "NOTSET");
    qs_node_set_ints(&n, "strides", 1, (int64_t[]){ 2 });
    expect_error(&n, 2, in, QS_EINVAL, "strides has 1 values, expected 2");
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 0, 1 });
    expect_error(&n, 2, in, QS_EINVAL, "strides[0] = 0");
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 1, 1 });
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 5, 5 });
    expect_error(&n, 2, in, QS_ESHAPE, "kernel_shape[0] = 5 but W has shape [8, 3, 3, 3]");
    qs_node m = opcheck_node("Conv", NULL);
    in[0] = rand_t(4, SHAPE(1, 3, 2, 2));
    expect_error(&m, 2, in, QS_ESHAPE, "larger than the padded input");
    qs_node_set_ints(&m, "pads", 4, (int64_t[]){ 1, 1, -1, 1 });
    expect_error(&m, 2, in, QS_EINVAL, "pads must not be negative");
    in[0] = rand_t(2, SHAPE(1, 3));
    expect_error(&m, 2, in, QS_ESHAPE, "at least one spatial dim");
    qs_tensor *xi = qs_tensor_new(QS_I8, 4, SHAPE(1, 3, 8, 8));
    in[0] = xi;
    expect_error(&m, 2, in, QS_EUNSUPPORTED, "only float32");
    qs_node t = opcheck_node("ConvTranspose", NULL);
    in[0] = rand_t(4, SHAPE(1, 3, 4, 4));
    in[1] = rand_t(4, SHAPE(2, 3, 3, 3));
    expect_error(&t, 2, in, QS_ESHAPE, "input has 3 channels but W expects 2");
}

TEST_MAIN(sgemm_matches_reference_all_transposes, sgemm_hand_computed_and_beta_zero_ignores_nan,
          im2col_col2im_match_reference, conv_box_filter_hand_computed, conv_auto_pad_same_lower_and_upper,
          conv_matches_reference, conv_matches_reference_two_threads, conv_fused_epilogue_matches_reference, conv_kernel_shape_inferred_and_checked,
          conv_backward_matches_finite_differences, conv_backward_two_threads_matches_one, conv_backward_adjoint_identities,
          conv_fused_clamp, conv_prepared_state_is_parsed_once,
          convtranspose_hand_computed,
          convtranspose_matches_scatter_reference, convtranspose_output_shape_grad, conv_bad_input_named)
