/* Conv's oneDNN path (engine/ops/conv_dnnl.c) against the reference loops (qs_conv_ref) and against
 * our own GEMM path (the same node run with conv_dnnl_enable(0)), over shapes that exercise what the
 * blocked kernels handle specially: channel counts that are not a multiple of the block (3, 5, 17,
 * 33), kernels 2x2 to 7x7, strides, dilations, asymmetric pads, batch 1 to 5 on one to three threads
 * (a batch at least as large as the thread count splits items over the pool, a smaller one output
 * channels too, in slices), and the fused epilogue (bias, residual, clamp). Each case also checks which path ran: the
 * oneDNN one for a 2-D, group-1, non-1x1 kernel on a machine with AVX2, our own path otherwise. */
#include "tests/opcheck.h"

#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/ops/conv_impl.h"

#include <oneapi/dnnl/dnnl.h>

typedef struct {
    int64_t N, C, M, group, h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
} dcase;

static int have_avx2(void)
{
    return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2;
}

static void out_hw(const dcase *t, int64_t *oh, int64_t *ow)
{
    *oh = (t->h + t->pt + t->pb - ((t->kh - 1) * t->dh + 1)) / t->sh + 1;
    *ow = (t->w + t->pl + t->pr - ((t->kw - 1) * t->dw + 1)) / t->sw + 1;
}

static char last_kernel[64];   /* the oneDNN kernel of the last state run prepared on that path */

/* Runs the node through prepare (as a plan does), scratch, forward and release; *dnnl = whether the
 * prepared state took the oneDNN path. Residual/clamp as the executor fuses them. */
static qs_tensor *run(const qs_node *n, qs_tensor **in, int nin, int nthreads, const qs_tensor *res, int clamp,
                      int *dnnl)
{
    const qs_op_def *d = qs_op_find("", "Conv");
    qs_err e = { 0 };
    qs_tensor head;
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head };
    qs_kctx c = { .node = n, .opset = 17, .nin = nin, .nout = 1, .in = in, .out = outs, .nthreads = nthreads,
                  .pool = opcheck_pool(nthreads), .err = &e, .fused_act = clamp, .act_min = -0.5f,
                  .act_max = 0.6f, .residual = res };
    if (d->infer(&c) < 0)
        QT_FAIL_("infer: %s", e.msg);
    qs_tensor *y = qs_tensor_new(head.dtype, head.ndim, head.shape);
    outs[0] = y;
    void *state = NULL;
    if (d->prepare(&c, &state) < 0)
        QT_FAIL_("prepare: %s", e.msg);
    c.state = state;
    *dnnl = ((conv_p *)state)->dnnl != NULL;
    if (*dnnl)
        snprintf(last_kernel, sizeof last_kernel, "%s", conv_dnnl_kernel(((conv_p *)state)->dnnl));
    size_t ss = d->scratch(&c);
    c.scratch = ss ? malloc(ss) : NULL;
    c.scratch_size = ss;
    if (d->forward(&c) < 0)
        QT_FAIL_("forward: %s", e.msg);
    free(c.scratch);
    d->release(state);
    return y;
}

static void assert_close(const float *a, const float *ref, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - ref[i]) <= 1e-4 + 1e-4 * fabs((double)ref[i])))
            QT_FAIL_("%s: element %lld: %.7g vs %.7g", what, (long long)i, a[i], ref[i]);
}

static void check(const dcase *t, int nthreads, int bias, int epilogue)
{
    int64_t oh, ow;
    out_hw(t, &oh, &ow);
    int64_t xs[4] = { t->N, t->C, t->h, t->w }, ws[4] = { t->M, t->C / t->group, t->kh, t->kw };
    int64_t ys[4] = { t->N, t->M, oh, ow };
    qs_tensor *in[3] = { opcheck_rand(4, xs, -1, 1), opcheck_rand(4, ws, -1, 1), opcheck_rand(1, &t->M, -1, 1) };
    qs_tensor *res = epilogue ? opcheck_rand(4, ys, -1, 1) : NULL;
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_int(&n, "group", t->group);
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ t->sh, t->sw });
    qs_node_set_ints(&n, "dilations", 2, (int64_t[]){ t->dh, t->dw });
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ t->pt, t->pl, t->pb, t->pr });
    int nin = bias ? 3 : 2, took, own_took;
    qs_tensor *y = run(&n, in, nin, nthreads, res, epilogue, &took);
    conv_dnnl_enable(0);
    qs_tensor *own = run(&n, in, nin, nthreads, res, epilogue, &own_took);
    conv_dnnl_enable(1);
    ASSERT_EQ(own_took, 0);
    int want = have_avx2() && t->group == 1 && t->kh * t->kw > 1;
    if (took != want)
        QT_FAIL_("case C%lld M%lld g%lld k%lldx%lld: oneDNN path %s", (long long)t->C, (long long)t->M,
                 (long long)t->group, (long long)t->kh, (long long)t->kw, took ? "taken" : "not taken");
    qs_conv_geom g;
    qs_conv_geom_set(&g, 2, (int64_t[]){ t->h, t->w }, (int64_t[]){ oh, ow }, (int64_t[]){ t->kh, t->kw },
                     (int64_t[]){ t->sh, t->sw }, (int64_t[]){ t->dh, t->dw }, (int64_t[]){ t->pt, t->pl },
                     (int64_t[]){ t->pb, t->pr });
    qs_tensor *ref = qs_tensor_new(QS_F32, 4, ys);
    qs_conv_ref(&g, t->N, t->C, t->M, t->group, qs_f32(in[0]), qs_f32(in[1]), bias ? qs_f32(in[2]) : NULL,
                qs_f32(ref));
    for (int64_t i = 0; epilogue && i < qs_numel(ref); i++) {
        float v = qs_f32(ref)[i] + qs_f32(res)[i];
        qs_f32(ref)[i] = v < -0.5f ? -0.5f : v > 0.6f ? 0.6f : v;
    }
    assert_close(qs_f32(y), qs_f32(ref), qs_numel(ref), "oneDNN path vs reference");
    assert_close(qs_f32(y), qs_f32(own), qs_numel(ref), "oneDNN path vs own path");
    for (int i = 0; i < 3; i++)
        qs_tensor_free(in[i]);
    qs_tensor_free(res);
    qs_tensor_free(y);
    qs_tensor_free(own);
    qs_tensor_free(ref);
}

static const dcase cases[] = {
    /*  N   C   M  grp  h   w  kh kw sh sw dh dw pt pl pb pr */
    { 1, 16, 16, 1, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
    { 2, 3, 8, 1, 17, 15, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3 },      /* a first layer: plain X */
    { 3, 5, 7, 1, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },       /* neither count a multiple of 8 */
    { 2, 17, 33, 1, 10, 9, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0 },     /* stride 2, asymmetric pads */
    { 1, 33, 20, 1, 12, 12, 3, 2, 1, 2, 2, 1, 2, 0, 1, 1 },    /* dilation, rectangular kernel */
    { 5, 24, 40, 1, 7, 7, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2 },
    { 2, 32, 64, 1, 14, 14, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0 },    /* 2x2 stride 2, no pads */
    { 1, 8, 8, 1, 6, 6, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0 },        /* valid */
    /* one item on 2 or 3 threads: output channels in slices, even or with a shorter last one */
    { 1, 16, 64, 1, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
    { 1, 24, 48, 1, 9, 7, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1 },
    { 1, 3, 40, 1, 20, 20, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3 },     /* plain X, sliced */
    { 2, 8, 72, 1, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },       /* two items on three threads */
    /* our own path: 1x1 (with and without stride), grouped, depthwise */
    { 2, 16, 24, 1, 8, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0 },
    { 2, 16, 24, 1, 8, 8, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0 },
    { 2, 16, 32, 2, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
    { 2, 16, 16, 16, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
};

TEST(dnnl_conv_matches_reference_and_own_path)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int nthreads = 1; nthreads <= 3; nthreads++)
            check(&cases[i], nthreads, (int)(i % 2), 0);
    opcheck_pools_free();
}

/* 3x3, stride 1, whole blocks of 16 channels: Winograd's F(2x2, 3x3) on AVX-512 (conv_dnnl.c's
 * wino_ok), within the same tolerance of the reference loops; the same layers strided, dilated or with
 * a padded block stay direct. */
TEST(dnnl_conv_winograd_where_it_applies)
{
    if ((dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) != dnnl_cpu_isa_avx512_core)
        SKIP("no AVX-512: oneDNN 2.6 has no f32 Winograd kernel for this CPU");
    static const struct { dcase c; int wino; } wc[] = {
        { { 2, 32, 16, 1, 10, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 }, 1 },
        { { 1, 64, 64, 1, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 }, 1 },   /* batch 1: oneDNN's team splits it */
        { { 3, 16, 48, 1, 6, 6, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0 }, 1 },   /* no pads */
        { { 2, 32, 32, 1, 10, 10, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1 }, 0 }, /* strided */
        { { 2, 32, 32, 1, 10, 10, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2 }, 0 }, /* dilated */
        { { 2, 24, 32, 1, 10, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 }, 0 }, /* 24 channels: a padded block */
    };
    for (size_t i = 0; i < sizeof wc / sizeof wc[0]; i++)
        for (int nthreads = 1; nthreads <= 2; nthreads++) {
            last_kernel[0] = 0;
            check(&wc[i].c, nthreads, 1, (int)i % 2);
            if ((strstr(last_kernel, "wino") != NULL) != wc[i].wino)
                QT_FAIL_("case %zu: kernel %s", i, last_kernel);
        }
    opcheck_pools_free();
}

TEST(dnnl_conv_fused_epilogue)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check(&cases[i], 1 + (int)(i % 2), 1, 1);
    opcheck_pools_free();
}

/* The weights are reordered on every call: a second pass after the weights changed (QAT's update,
 * AdaRound's rounding) sees the new ones. */
TEST(dnnl_conv_weights_change_between_passes)
{
    if (!have_avx2())
        SKIP("no AVX2: oneDNN's blocked kernels are not used on this CPU");
    const qs_op_def *d = qs_op_find("", "Conv");
    qs_tensor *in[2] = { opcheck_rand(4, (int64_t[]){ 2, 8, 6, 6 }, -1, 1),
                         opcheck_rand(4, (int64_t[]){ 8, 8, 3, 3 }, -1, 1) };
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    qs_err e = { 0 };
    qs_tensor head;
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head };
    qs_kctx c = { .node = &n, .opset = 17, .nin = 2, .nout = 1, .in = in, .out = outs, .nthreads = 1, .err = &e };
    ASSERT_EQ(d->infer(&c), 0);
    qs_tensor *y = qs_tensor_new(head.dtype, head.ndim, head.shape), *ref = qs_tensor_new(head.dtype, head.ndim,
                                                                                        head.shape);
    outs[0] = y;
    void *state = NULL;
    ASSERT_EQ(d->prepare(&c, &state), 0);
    ASSERT(((conv_p *)state)->dnnl != NULL);
    c.state = state;
    c.scratch_size = d->scratch(&c);
    c.scratch = malloc(c.scratch_size);
    qs_conv_geom g;
    qs_conv_geom_set(&g, 2, (int64_t[]){ 6, 6 }, (int64_t[]){ 6, 6 }, (int64_t[]){ 3, 3 }, (int64_t[]){ 1, 1 },
                     (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 });
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            for (int64_t i = 0; i < qs_numel(in[1]); i++)
                qs_f32(in[1])[i] = 0.5f - qs_f32(in[1])[i];
        ASSERT_EQ(d->forward(&c), 0);
        qs_conv_ref(&g, 2, 8, 8, 1, qs_f32(in[0]), qs_f32(in[1]), NULL, qs_f32(ref));
        assert_close(qs_f32(y), qs_f32(ref), qs_numel(ref), "pass with changed weights");
    }
    free(c.scratch);
    d->release(state);
}

/* ---- backward (engine/ops/conv_dnnl_bwd.c) ------------------------------------------------------------- */

/* Prepares the node for training (as a training plan does) and runs its backward into din[0..nin-1];
 * *dnnl = whether the prepared state took oneDNN's backward. want_dx 0: dX not asked for. */
static void run_bwd(const qs_node *n, qs_tensor **in, int nin, const qs_tensor *dy, int nthreads, int want_dx,
                    qs_tensor **din, int *dnnl)
{
    const qs_op_def *d = qs_op_find("", "Conv");
    qs_err e = { 0 };
    qs_tensor head;
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head }, *dout[1] = { (qs_tensor *)dy }, *dins[3] = { NULL, NULL, NULL };
    for (int i = 0; i < nin; i++) {
        din[i] = qs_tensor_new(QS_F32, in[i]->ndim, in[i]->shape);
        for (int64_t k = 0; k < qs_numel(din[i]); k++)   /* every element must be written */
            qs_f32(din[i])[k] = NAN;
        dins[i] = i || want_dx ? din[i] : NULL;
    }
    qs_kctx c = { .node = n, .opset = 17, .nin = nin, .nout = 1, .in = in, .out = outs, .nthreads = nthreads,
                  .pool = opcheck_pool(nthreads), .err = &e, .training = 1 };
    if (d->infer(&c) < 0)
        QT_FAIL_("infer: %s", e.msg);
    void *state = NULL;
    if (d->prepare(&c, &state) < 0)
        QT_FAIL_("prepare: %s", e.msg);
    c.state = state;
    *dnnl = ((conv_p *)state)->dnnl_bwd != NULL;
    c.din = dins;
    c.dout = dout;
    size_t ss = d->scratch(&c);
    c.scratch = ss ? malloc(ss) : NULL;
    c.scratch_size = ss;
    if (d->backward(&c) < 0)
        QT_FAIL_("backward: %s", e.msg);
    free(c.scratch);
    d->release(state);
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* oneDNN's backward against our own (conv_dnnl_enable(0)) and against the adjoint identities
 * <dY, Conv(X, W)> = <dX, X> = <dW, W> (Y from the reference loops); dB = Σ dY per channel in
 * double (*taken: oneDNN's backward ran). On oneDNN's path dW and dB must be bit-identical on one,
 * two and three threads (fixed chunks, summed in order), and so must dX. */
static void check_bwd(const dcase *t, int *taken)
{
    int64_t oh, ow;
    out_hw(t, &oh, &ow);
    int64_t xs[4] = { t->N, t->C, t->h, t->w }, ws[4] = { t->M, t->C / t->group, t->kh, t->kw };
    int64_t ys[4] = { t->N, t->M, oh, ow };
    qs_tensor *in[3] = { opcheck_rand(4, xs, -1, 1), opcheck_rand(4, ws, -1, 1), opcheck_rand(1, &t->M, -1, 1) };
    qs_tensor *dy = opcheck_rand(4, ys, -1, 1), *y = qs_tensor_new(QS_F32, 4, ys);
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_int(&n, "group", t->group);
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ t->sh, t->sw });
    qs_node_set_ints(&n, "dilations", 2, (int64_t[]){ t->dh, t->dw });
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ t->pt, t->pl, t->pb, t->pr });
    qs_conv_geom g;
    qs_conv_geom_set(&g, 2, (int64_t[]){ t->h, t->w }, (int64_t[]){ oh, ow }, (int64_t[]){ t->kh, t->kw },
                     (int64_t[]){ t->sh, t->sw }, (int64_t[]){ t->dh, t->dw }, (int64_t[]){ t->pt, t->pl },
                     (int64_t[]){ t->pb, t->pr });
    qs_conv_ref(&g, t->N, t->C, t->M, t->group, qs_f32(in[0]), qs_f32(in[1]), NULL, qs_f32(y));
    double ref = dot(qs_f32(dy), qs_f32(y), qs_numel(y));
    qs_tensor *own[3], *first[3] = { NULL, NULL, NULL };
    int took, own_took;
    conv_dnnl_enable(0);
    run_bwd(&n, in, 3, dy, 1, 1, own, &own_took);
    conv_dnnl_enable(1);
    ASSERT_EQ(own_took, 0);
    for (int nt = 1; nt <= 3; nt++) {
        qs_tensor *d[3];
        run_bwd(&n, in, 3, dy, nt, 1, d, &took);
        /* only where the forward runs on oneDNN; there, where oneDNN has JIT backward-weights kernels:
         * (on AVX-512 and AVX2) whole blocks of input channels, or a first layer's plain X */
        int fwd = have_avx2() && t->group == 1 && t->kh * t->kw > 1, must = fwd && (t->C % 16 == 0 || t->C == 3);
        *taken = took;
        if ((took && !fwd) || (must && !took))
            QT_FAIL_("case N%lld C%lld M%lld k%lldx%lld: oneDNN backward %s", (long long)t->N, (long long)t->C,
                     (long long)t->M, (long long)t->kh, (long long)t->kw, took ? "taken" : "not taken");
        for (int i = 0; i < 3; i++)
            assert_close(qs_f32(d[i]), qs_f32(own[i]), qs_numel(own[i]), i == 0 ? "dX vs own path"
                                                                        : i == 1 ? "dW vs own path" : "dB vs own path");
        ASSERT_CLOSE(dot(qs_f32(d[0]), qs_f32(in[0]), qs_numel(in[0])), ref, 1e-5, 1e-4);
        ASSERT_CLOSE(dot(qs_f32(d[1]), qs_f32(in[1]), qs_numel(in[1])), ref, 1e-5, 1e-4);
        for (int64_t m = 0; m < t->M; m++) {
            double s = 0;
            for (int64_t k = 0; k < t->N; k++)
                for (int64_t i = 0; i < oh * ow; i++)
                    s += qs_f32(dy)[(k * t->M + m) * oh * ow + i];
            ASSERT_CLOSE(qs_f32(d[2])[m], s, 1e-5, 1e-4);
        }
        for (int i = 0; i < 3; i++) {
            if (!first[i]) {
                first[i] = d[i];
                continue;
            }
            if (took && memcmp(d[i]->data, first[i]->data, qs_nbytes(d[i])))   /* (our own path splits dW by worker) */
                QT_FAIL_("case N%lld C%lld M%lld: gradient %d differs between 1 and %d threads", (long long)t->N,
                         (long long)t->C, (long long)t->M, i, nt);
            qs_tensor_free(d[i]);
        }
    }
    for (int i = 0; i < 3; i++) {
        qs_tensor_free(in[i]);
        qs_tensor_free(own[i]);
        qs_tensor_free(first[i]);
    }
    qs_tensor_free(dy);
    qs_tensor_free(y);
}

static const dcase bwd_cases[] = {
    /*  N   C   M  grp  h   w  kh kw sh sw dh dw pt pl pb pr */
    { 9, 16, 32, 1, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },      /* chunks of 2 items, the last of 1 */
    { 20, 32, 16, 1, 6, 6, 3, 3, 2, 2, 1, 1, 1, 0, 1, 1 },     /* 7 chunks of 3, the last of 2 */
    { 16, 3, 16, 1, 15, 15, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3 },    /* a first layer, 8 chunks of 2 */
};

TEST(dnnl_conv_backward_matches_own_path_and_adjoint)
{
    int taken, count = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_bwd(&cases[i], &taken);
        count += taken;
    }
    for (size_t i = 0; i < sizeof bwd_cases / sizeof bwd_cases[0]; i++) {
        check_bwd(&bwd_cases[i], &taken);
        count += taken;
    }
    if (have_avx2())
        ASSERT(count >= 6);
    opcheck_pools_free();
}

/* dX not asked for (a graph input's gradient): dW and dB as before, dX's buffer untouched */
TEST(dnnl_conv_backward_without_dx)
{
    const dcase t = { 3, 8, 16, 1, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1 };
    int64_t xs[4] = { t.N, t.C, t.h, t.w }, ws[4] = { t.M, t.C, t.kh, t.kw }, ys[4] = { t.N, t.M, 4, 4 };
    qs_tensor *in[3] = { opcheck_rand(4, xs, -1, 1), opcheck_rand(4, ws, -1, 1), opcheck_rand(1, &t.M, -1, 1) };
    qs_tensor *dy = opcheck_rand(4, ys, -1, 1), *a[3], *b[3];
    qs_node n = opcheck_node("Conv", NULL);
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 2, 2 });
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    int took;
    run_bwd(&n, in, 3, dy, 2, 1, a, &took);
    run_bwd(&n, in, 3, dy, 2, 0, b, &took);
    ASSERT(isnan(qs_f32(b[0])[0]));
    for (int i = 1; i < 3; i++)
        ASSERT(!memcmp(a[i]->data, b[i]->data, qs_nbytes(a[i])));
    for (int i = 0; i < 3; i++) {
        qs_tensor_free(in[i]);
        qs_tensor_free(a[i]);
        qs_tensor_free(b[i]);
    }
    qs_tensor_free(dy);
    opcheck_pools_free();
}

/* In an inference plan the blocked weights of an initializer W are kept between passes: a change
 * written in place is picked up once the writer calls qs_graph_weights_changed (as CLE, AdaRound,
 * GPTQ, bias correction and QAT do), and, without the call, the kept copy is what runs (which shows
 * that no reorder is paid). Batch 1 on one thread and on two (output channels in slices). */
TEST(dnnl_conv_kept_weights_follow_the_graph_generation)
{
    if (!have_avx2())
        SKIP("no AVX2: oneDNN's blocked kernels are not used on this CPU");
    for (int nthreads = 1; nthreads <= 2; nthreads++) {
        qs_graph *g = qs_graph_new();
        qs_graph_set_opset(g, "", 13);
        int x = qs_graph_value(g, "x"), w = qs_graph_value(g, "W"), y = qs_graph_value(g, "y");
        qs_value *xv = &g->values[x];
        xv->dtype = QS_F32;
        xv->ndim = 4;
        memcpy(xv->shape, (int64_t[]){ 1, 16, 9, 9 }, sizeof(int64_t[4]));
        g->inputs = malloc(sizeof *g->inputs);
        g->inputs[g->ninputs++] = x;
        qs_graph_set_init_steal(g, w, opcheck_rand(4, (int64_t[]){ 32, 16, 3, 3 }, -1, 1));
        qs_graph_add_node(g, "Conv", "conv", 2, (int[]){ x, w }, 1, &y);
        qs_node_set_ints(&g->nodes[0], "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
        g->outputs = malloc(sizeof *g->outputs);
        g->outputs[g->noutputs++] = y;
        qs_err e = { 0 };
        qs_exec *ex = qs_exec_new(g, QS_EXEC_INFER, &e);
        qs_exec_set_pool(ex, opcheck_pool(nthreads));
        ASSERT_EQ(qs_exec_plan(ex, 1, &e), 0);
        qs_tensor *in = opcheck_rand(4, (int64_t[]){ 1, 16, 9, 9 }, -1, 1);
        qs_tensor *ref = qs_tensor_new(QS_F32, 4, (int64_t[]){ 1, 32, 9, 9 });
        ASSERT_EQ(qs_exec_set_input(ex, 0, in, &e), 0);
        qs_conv_geom cg;
        qs_conv_geom_set(&cg, 2, (int64_t[]){ 9, 9 }, (int64_t[]){ 9, 9 }, (int64_t[]){ 3, 3 }, (int64_t[]){ 1, 1 },
                         (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 });
        float *wd = qs_f32(g->values[w].init);
        int64_t nw = 32 * 16 * 9;
        for (int pass = 0; pass < 3; pass++) {
            if (pass == 1)   /* written in place, nobody told: the kept copy (the old weights) runs */
                for (int64_t i = 0; i < nw; i++)
                    wd[i] = 0.5f - wd[i];
            if (pass == 2)   /* ... until the writer says so */
                qs_graph_weights_changed(g);
            ASSERT_EQ(qs_exec_forward(ex, &e), 0);
            if (pass == 1)
                for (int64_t i = 0; i < nw; i++)
                    wd[i] = 0.5f - wd[i];
            qs_conv_ref(&cg, 1, 16, 32, 1, qs_f32(in), wd, NULL, qs_f32(ref));
            if (pass == 1)
                for (int64_t i = 0; i < nw; i++)
                    wd[i] = 0.5f - wd[i];
            assert_close(qs_f32(qs_exec_output(ex, 0)), qs_f32(ref), qs_numel(ref),
                         pass == 2 ? "after qs_graph_weights_changed" : "kept weights");
        }
        qs_tensor_free(in);
        qs_tensor_free(ref);
        qs_exec_free(ex);
        qs_graph_free(g);
    }
    opcheck_pools_free();
}

TEST_MAIN(dnnl_conv_matches_reference_and_own_path, dnnl_conv_winograd_where_it_applies, dnnl_conv_fused_epilogue,
          dnnl_conv_weights_change_between_passes,
          dnnl_conv_backward_matches_own_path_and_adjoint, dnnl_conv_backward_without_dx,
          dnnl_conv_kept_weights_follow_the_graph_generation)
