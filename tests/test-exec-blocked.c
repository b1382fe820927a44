/* Channel-blocked activations between convolutions (engine/exec_layout.c, conv_dnnl.c): whole small
 * graphs planned with them against the same graphs on our own path (conv_dnnl_enable(0), NCHW
 * everywhere, im2col/1x1 sgemm and the unfused-order epilogue), at batch 1 to 3 on one to three
 * threads (a batch smaller than the thread count splits output channels into slices). The graphs
 * chain 3x3 and 1x1 convolutions (strided too) with Relu, Clip, SiLU or HardSwish folded in (oneDNN
 * post-ops when Y or the residual is blocked), a residual Add folded
 * into the later of its two Convs (a downsampling block), channel counts that are not a multiple
 * of the block (24 and 20 on AVX-512's 16, 20 on AVX2's 8: padded up to whole blocks), and, in the
 * "tapped" variant, readers that take only NCHW (GlobalMaxPool, graph outputs) that force NCHW on some values, so
 * residuals and inputs arrive in both layouts. */
#include "tests/opcheck.h"

#include "engine/exec_impl.h"
#include "engine/graph.h"
#include "engine/ops/conv_impl.h"

static int value(qs_graph *g, const char *name) { return qs_graph_value(g, name); }

static int weight(qs_graph *g, const char *name, int ndim, const int64_t *shape, float lo, float hi)
{
    int v = value(g, name);
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = opcheck_uniform(lo, hi);
    qs_graph_set_init_steal(g, v, t);
    return v;
}

static int op(qs_graph *g, const char *type, int nin, const int *in, const char *out)
{
    int o = value(g, out);
    qs_graph_add_node(g, type, out, nin, in, 1, &o);
    return o;
}

/* Conv M×C×k×k, stride s, "same" pads, with a bias when bias */
static int conv(qs_graph *g, int x, int64_t C, int64_t M, int64_t k, int64_t s, int bias, const char *out)
{
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s_W", out);
    snprintf(bn, sizeof bn, "%s_B", out);
    float r = 1.f / sqrtf((float)(C * k * k));
    int in[3] = { x, weight(g, wn, 4, (int64_t[]){ M, C, k, k }, -r, r), -1 };
    if (bias)
        in[2] = weight(g, bn, 1, &M, -0.2f, 0.2f);
    int y = op(g, "Conv", bias ? 3 : 2, in, out);
    int64_t p = k / 2;
    qs_node_set_ints(&g->nodes[g->nnodes - 1], "pads", 4, (int64_t[]){ p, p, p, p });
    qs_node_set_ints(&g->nodes[g->nnodes - 1], "strides", 2, (int64_t[]){ s, s });
    return y;
}

static void output(qs_graph *g, int v)
{
    g->outputs = realloc(g->outputs, (g->noutputs + 1) * sizeof *g->outputs);
    g->outputs[g->noutputs++] = v;
}

static int relu(qs_graph *g, int v, const char *out) { return op(g, "Relu", 1, &v, out); }

/* depthwise Conv C×1×k×k (group C), stride s, "same" pads, with a bias when bias */
static int dwconv(qs_graph *g, int x, int64_t C, int64_t k, int64_t s, int bias, const char *out)
{
    int y = conv(g, x, 1, C, k, s, bias, out);
    qs_node_set_int(&g->nodes[g->nnodes - 1], "group", C);
    return y;
}

/* ReLU6 */
static int relu6(qs_graph *g, int v, const char *out)
{
    char lo[64], hi[64];
    snprintf(lo, sizeof lo, "%s_lo", out);
    snprintf(hi, sizeof hi, "%s_hi", out);
    return op(g, "Clip", 3, (int[]){ v, weight(g, lo, 0, NULL, 0, 0), weight(g, hi, 0, NULL, 6, 6) }, out);
}

/* The graph input "x" of shape [N, c, h, w], N dynamic. */
static int batch_input(qs_graph *g, int64_t c, int64_t h, int64_t w)
{
    int x = value(g, "x");
    qs_value *xv = &g->values[x];
    xv->dtype = QS_F32;
    xv->ndim = 4;
    memcpy(xv->shape, (int64_t[]){ -1, c, h, w }, sizeof(int64_t[4]));
    xv->dim_param[0] = strdup("N");
    g->inputs = malloc(sizeof *g->inputs);
    g->inputs[g->ninputs++] = x;
    return x;
}

static qs_graph *chain(int tapped)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = batch_input(g, 16, 10, 10);
    int a = relu(g, conv(g, x, 16, 64, 3, 1, 1, "a_conv"), "a");        /* plain X in, Y blocked */
    int bc = conv(g, a, 64, 64, 1, 1, 0, "b_conv");                     /* 1x1, blocked in and out */
    int bs = tapped ? -1 : op(g, "Sigmoid", 1, &bc, "bs");              /* SiLU, or HardSwish */
    int b = tapped ? op(g, "HardSwish", 1, &bc, "b") : op(g, "Mul", 2, (int[]){ bc, bs }, "b");
    int c = conv(g, b, 64, 64, 3, 2, 1, "c");                           /* 3x3 stride 2 */
    int d = conv(g, a, 64, 64, 1, 2, 1, "d");                           /* 1x1 stride 2, after c */
    int e = relu(g, op(g, "Add", 2, (int[]){ c, d }, "sum"), "e");      /* folds into d, residual c */
    int lo = weight(g, "lo", 0, NULL, -0.5f, -0.5f), hi = weight(g, "hi", 0, NULL, 0.6f, 0.6f);
    int f = op(g, "Clip", 3, (int[]){ conv(g, e, 64, 24, 3, 1, 1, "f_conv"), lo, hi }, "f");
    int h = conv(g, f, 24, 24, 3, 1, 0, "h");
    int k = relu(g, op(g, "Add", 2, (int[]){ h, f }, "hf"), "k");       /* residual f, 24 channels */
    output(g, conv(g, k, 24, 20, 3, 1, 1, "y"));                        /* 20 channels: NCHW */
    if (tapped) {   /* NCHW readers of a, c and f: their consumers take them plain */
        output(g, op(g, "GlobalMaxPool", 1, &a, "a_max"));
        output(g, op(g, "GlobalMaxPool", 1, &c, "c_max"));
        output(g, f);
    }
    return g;
}

/* MobileNetV2's inverted residuals: 1x1 expand, depthwise 3x3 (stride 1, then 2), 1x1 project to
 * 24 channels (padded to whole blocks of 16) with a residual from the graph input (plain), then 40
 * channels (padded on both blocks) into a 5x5 depthwise with a bias writing a graph output (plain
 * Y); from it a 1x1 to 20 channels and a 1x1 to 12 (under one block of 16: NCHW there), each with a
 * depthwise after it. */
static qs_graph *inverted_residuals(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = batch_input(g, 24, 9, 9);
    int e1 = relu6(g, conv(g, x, 24, 96, 1, 1, 1, "e1_conv"), "e1");   /* X plain (graph input) */
    int d1 = relu6(g, dwconv(g, e1, 96, 3, 1, 1, "d1_conv"), "d1");
    int r1 = op(g, "Add", 2, (int[]){ conv(g, d1, 96, 24, 1, 1, 1, "p1"), x }, "r1");   /* plain residual */
    int e2 = relu(g, conv(g, r1, 24, 64, 1, 1, 1, "e2_conv"), "e2");
    int d2 = relu6(g, dwconv(g, e2, 64, 3, 2, 1, "d2_conv"), "d2");
    int p2 = conv(g, d2, 64, 40, 1, 1, 1, "p2");
    int d3 = dwconv(g, p2, 40, 5, 1, 1, "d3");
    output(g, d3);
    output(g, dwconv(g, conv(g, d3, 40, 20, 1, 1, 0, "q"), 20, 3, 1, 0, "y"));
    output(g, dwconv(g, conv(g, d3, 40, 12, 1, 1, 1, "s"), 12, 3, 1, 1, "z"));
    return g;
}

/* SiLU as exported: Mul(v, Sigmoid(v)) */
static int silu(qs_graph *g, int v, const char *out)
{
    char sn[64];
    snprintf(sn, sizeof sn, "%s_sig", out);
    return op(g, "Mul", 2, (int[]){ v, op(g, "Sigmoid", 1, &v, sn) }, out);
}

/* EfficientNet's squeeze-excitation blocks: expand (24 to 40 channels), depthwise, a gate from
 * GlobalAveragePool → 1x1 to 20 → 1x1 back with a Sigmoid (a blocked gate, padded on 16),
 * Mul(gate, x), project to 24; then a second gate with a HardSigmoid (oneDNN 2.6 has none: that gate stays NCHW) as Mul(x, gate), a 3x3 Conv and
 * a GlobalAveragePool of the gated tensor as the graph's outputs. */
static qs_graph *squeeze_excitation(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = batch_input(g, 24, 7, 7);
    int e = silu(g, conv(g, x, 24, 40, 1, 1, 1, "e_conv"), "e");
    int d = silu(g, dwconv(g, e, 40, 3, 1, 1, "d_conv"), "d");
    int gp = op(g, "GlobalAveragePool", 1, &d, "gp");
    int r = silu(g, conv(g, gp, 40, 20, 1, 1, 1, "r_conv"), "r");
    int s = op(g, "Sigmoid", 1, (int[]){ conv(g, r, 20, 40, 1, 1, 1, "s_conv") }, "s");
    int m = op(g, "Mul", 2, (int[]){ s, d }, "m");
    int p = conv(g, m, 40, 24, 1, 1, 1, "p");
    int gp2 = op(g, "GlobalAveragePool", 1, &p, "gp2");
    int s2 = op(g, "HardSigmoid", 1, (int[]){ conv(g, gp2, 24, 24, 1, 1, 1, "s2_conv") }, "s2");
    int m2 = op(g, "Mul", 2, (int[]){ p, s2 }, "m2");
    output(g, conv(g, m2, 24, 32, 3, 1, 1, "q"));
    output(g, op(g, "GlobalAveragePool", 1, &m2, "gf"));
    return g;
}

static int maxpool(qs_graph *g, int x, int64_t k, int64_t s, int64_t pad, int ceil, const char *out)
{
    int y = op(g, "MaxPool", 1, &x, out);
    qs_node *n = &g->nodes[g->nnodes - 1];
    qs_node_set_ints(n, "kernel_shape", 2, (int64_t[]){ k, k });
    qs_node_set_ints(n, "strides", 2, (int64_t[]){ s, s });
    qs_node_set_ints(n, "pads", 4, (int64_t[]){ pad, pad, pad, pad });
    qs_node_set_int(n, "ceil_mode", ceil);
    return y;
}

/* A ResNet's stem and more MaxPools: a 2x2 MaxPool of the 3-channel graph input (NCHW: under one
 * block), a 7x7 stride-2 Conv with a ReLU from that NCHW X to a blocked Y (40 channels, padded on
 * blocks of 16), a 3x3 stride-2 MaxPool with pads and ceil_mode, a 3x3 Conv writing a graph output,
 * a MaxPool of that NCHW output into a blocked Y for another Conv, and a 2x2 MaxPool writing a
 * graph output from the blocked one. */
static qs_graph *stem(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = batch_input(g, 3, 17, 17);
    int a = maxpool(g, x, 2, 1, 0, 0, "a");                               /* 16x16 */
    int s = relu(g, conv(g, a, 3, 40, 7, 2, 1, "s_conv"), "s");           /* 8x8 */
    int p = maxpool(g, s, 3, 2, 1, 1, "p");                               /* 5x5 (ceil) */
    int y = conv(g, p, 40, 32, 3, 1, 1, "y");
    output(g, y);
    output(g, conv(g, maxpool(g, y, 2, 1, 0, 0, "q"), 32, 32, 3, 1, 1, "y2"));
    output(g, maxpool(g, p, 2, 2, 0, 0, "z"));
    return g;
}

static qs_exec *run(qs_graph *g, const qs_tensor *in, int nthreads)
{
    qs_err e = { 0 };
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT(x != NULL);
    qs_exec_set_pool(x, opcheck_pool(nthreads));
    qs_exec_set_fusion(x, 1);
    if (qs_exec_plan(x, in->shape[0], &e) < 0 || qs_exec_set_input(x, 0, in, &e) < 0 || qs_exec_forward(x, &e) < 0)
        QT_FAIL_("%s", e.msg);
    return x;
}

/* Runs g on in as planned (blocked where it can be) and on our own path (conv_dnnl_enable(0): NCHW
 * everywhere, im2col/1x1 sgemm, our depthwise loops, the NCHW pools and Mul); checks that `want`
 * values are blocked in the first plan and none in the second, and that every output agrees.
 * Returns the first plan for the caller's own checks (and to free). what: the case, for messages. */
static qs_exec *check_against_own(qs_graph *g, const qs_tensor *in, int nthreads, int want, const char *what)
{
    qs_exec *x = run(g, in, nthreads);
    conv_dnnl_enable(0);
    qs_exec *own = run(g, in, nthreads);
    conv_dnnl_enable(1);
    ASSERT_EQ(qs_exec_blocked_values(own), 0);
    if (qs_exec_blocked_values(x) != want)
        QT_FAIL_("%s: %d values blocked, expected %d (block %d)", what, qs_exec_blocked_values(x), want,
                 conv_dnnl_block());
    for (int o = 0; o < g->noutputs; o++) {
        const qs_tensor *a = qs_exec_output(x, o), *b = qs_exec_output(own, o);
        ASSERT(qs_shape_eq(a, b));
        for (int64_t i = 0; i < qs_numel(b); i++)
            if (!(fabs((double)qs_f32(a)[i] - qs_f32(b)[i]) <= 1e-4 + 1e-4 * fabs((double)qs_f32(b)[i])))
                QT_FAIL_("%s, output %d, element %lld: %.7g vs %.7g", what, o, (long long)i, qs_f32(a)[i],
                         qs_f32(b)[i]);
    }
    qs_exec_free(own);
    return x;
}

/* check_against_own for the graph build() makes, on inputs [n, c, hw, hw] at batch 1 to 3 and
 * 1 to 3 threads (a batch smaller than the thread count splits output channels into slices); the
 * value named `held`, when given, must be held blocked (it has no NCHW copy to give). */
static void check_batches(qs_graph *(*build)(void), int64_t c, int64_t hw, int want, const char *held)
{
    for (int64_t n = 1; n <= 3; n++)
        for (int nthreads = 1; nthreads <= 3; nthreads++) {
            char what[64];
            snprintf(what, sizeof what, "batch %lld, %d threads", (long long)n, nthreads);
            qs_graph *g = build();
            qs_tensor *in = opcheck_rand(4, (int64_t[]){ n, c, hw, hw }, -1, 1);
            qs_exec *x = check_against_own(g, in, nthreads, want, what);
            ASSERT(!held || !want || qs_exec_value(x, qs_graph_find_value(g, held)) == NULL);
            qs_exec_free(x);
            qs_tensor_free(in);
            qs_graph_free(g);
        }
    opcheck_pools_free();
}

TEST(blocked_chains_match_our_own_path)
{
    int blk = conv_dnnl_block();
    for (int tapped = 0; tapped < 2; tapped++)
        for (int64_t n = 1; n <= 3; n++)
            for (int nthreads = 1; nthreads <= 3; nthreads++) {
                char what[64];
                snprintf(what, sizeof what, "tapped %d, batch %lld, %d threads", tapped, (long long)n, nthreads);
                qs_graph *g = chain(tapped);
                qs_tensor *in = opcheck_rand(4, (int64_t[]){ n, 16, 10, 10 }, -1, 1);
                /* blocked: b, e and k; a, c and f unless tapped (k's 24 channels and the 20 of
                 * the Conv that reads it are padded to whole blocks) */
                qs_exec *x = check_against_own(g, in, nthreads, !blk ? 0 : tapped ? 3 : 6, what);
                /* e is written over c, its residual, which nothing reads after (not when tapped: a
                 * GlobalMaxPool reads c after); k not over f, which its Conv reads as X */
                int vc = qs_graph_find_value(g, "c"), ve = qs_graph_find_value(g, "e");
                int vf = qs_graph_find_value(g, "f"), vk = qs_graph_find_value(g, "k");
                ASSERT_EQ(x->offset[ve] == x->offset[vc], blk && !tapped);
                ASSERT(!blk || x->offset[vk] != x->offset[vf]);
                /* a blocked value has no NCHW copy to give */
                ASSERT(!blk || tapped || qs_exec_value(x, qs_graph_find_value(g, "a")) == NULL);
                qs_exec_free(x);
                qs_tensor_free(in);
                qs_graph_free(g);
            }
    opcheck_pools_free();
}

/* Depthwise convolutions join the chains on oneDNN, slices of channels when the batch is smaller
 * than the thread count, and give what our own depthwise loops give. Blocked: e1, d1, r1, e2, d2,
 * p2 and q; with blocks of 8, s too. */
TEST(depthwise_in_blocked_chains_matches_our_own_path)
{
    int blk = conv_dnnl_block();
    check_batches(inverted_residuals, 24, 9, !blk ? 0 : 7 + (blk == 8), "d2");
}

/* MaxPools read and write the blocked layout, from and to NCHW too, and give what the NCHW MaxPool
 * gives. Blocked: s, p and q. */
TEST(maxpool_in_blocked_chains_matches_our_own_path)
{
    check_batches(stem, 3, 17, conv_dnnl_block() ? 3 : 0, "p");
}

/* GlobalAveragePool and the gate's Mul keep a squeeze-excitation block blocked, with the gate and
 * the outputs in either layout, and give what the NCHW ops give. Blocked: e, d, the first gate (gp,
 * r, s), m, p and m2 (gp2's reader has the HardSigmoid). */
TEST(squeeze_excitation_in_blocked_chains_matches_our_own_path)
{
    check_batches(squeeze_excitation, 24, 7, conv_dnnl_block() ? 8 : 0, "m");
}

/* A squeeze-excitation Mul (a·s, s [N, 64, 1, 1]) before a 1x1 Conv with 64 channels each side: that
 * Conv may join the blocked chains, so the Mul runs before it (exec_scale.c), blocked itself; on our
 * own path it folds into the Conv. Both give the unfused result. */
TEST(se_mul_stays_before_a_conv_that_may_be_blocked)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = batch_input(g, 64, 6, 6);
    int a = conv(g, x, 64, 64, 1, 1, 1, "a");
    int gp = op(g, "GlobalAveragePool", 1, &a, "gp");
    int s = op(g, "Sigmoid", 1, (int[]){ conv(g, gp, 64, 64, 1, 1, 1, "r") }, "s");
    int m = op(g, "Mul", 2, (int[]){ a, s }, "m");
    output(g, conv(g, conv(g, m, 64, 64, 1, 1, 1, "p"), 64, 64, 1, 1, 1, "y"));
    qs_tensor *in = opcheck_rand(4, (int64_t[]){ 2, 64, 6, 6 }, -1, 1);
    qs_exec *bx = run(g, in, 2);
    conv_dnnl_enable(0);
    qs_exec *own = run(g, in, 2);
    qs_err e = { 0 };
    qs_exec *plain = qs_exec_new(g, QS_EXEC_INFER, &e);   /* nothing fused */
    ASSERT(plain && qs_exec_plan(plain, 2, &e) == 0 && qs_exec_set_input(plain, 0, in, &e) == 0 &&
           qs_exec_forward(plain, &e) == 0);
    conv_dnnl_enable(1);
    int pn = 0;   /* the node of Conv p */
    while (pn < g->nnodes && strcmp(g->values[g->nodes[pn].out[0]].name, "p"))
        pn++;
    ASSERT(pn < g->nnodes);
    int blocks = conv_dnnl_block() != 0 && conv_dnnl_blocked_enabled();
    ASSERT_EQ(bx->xscale[pn] >= 0, !blocks);
    ASSERT_EQ(bx->blocked[m], blocks);
    ASSERT(own->xscale[pn] == s && qs_exec_value(own, m) == NULL);
    const qs_tensor *want = qs_exec_output(plain, 0);
    for (int k = 0; k < 2; k++) {
        const qs_tensor *got = qs_exec_output(k ? own : bx, 0);
        for (int64_t i = 0; i < qs_numel(want); i++)
            if (!(fabs((double)qs_f32(got)[i] - qs_f32(want)[i]) <= 1e-4 + 1e-4 * fabs((double)qs_f32(want)[i])))
                QT_FAIL_("%s, element %lld: %.7g vs %.7g", k ? "own path" : "default", (long long)i, qs_f32(got)[i],
                         qs_f32(want)[i]);
    }
    qs_exec_free(bx);
    qs_exec_free(own);
    qs_exec_free(plain);
    qs_tensor_free(in);
    qs_graph_free(g);
    opcheck_pools_free();
}

/* An observer needs NCHW everywhere: a plan made without one refuses to run with one set later,
 * and planning again keeps nothing blocked. */
static void count(void *ud, int node, qs_tensor *const *out, int nout)
{
    (void)node, (void)out, (void)nout;
    ++*(int *)ud;
}

TEST(observer_set_after_plan_needs_a_new_plan)
{
    if (!conv_dnnl_block())
        SKIP("no AVX2: nothing is held blocked on this CPU");
    qs_graph *g = chain(0);
    qs_tensor *in = opcheck_rand(4, (int64_t[]){ 2, 16, 10, 10 }, -1, 1);
    qs_exec *x = run(g, in, 1);
    ASSERT(qs_exec_blocked_values(x) > 0);
    int calls = 0;
    qs_err e = { 0 };
    qs_exec_set_observer(x, count, &calls);
    ASSERT(qs_exec_forward(x, &e) < 0);
    ASSERT(strstr(e.msg, "plan again") != NULL);
    ASSERT_EQ(qs_exec_plan(x, 2, &e), 0);
    ASSERT_EQ(qs_exec_blocked_values(x), 0);
    ASSERT_EQ(qs_exec_set_input(x, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_forward(x, &e), 0);
    ASSERT(calls > 0);
    qs_exec_free(x);
    qs_tensor_free(in);
    qs_graph_free(g);
    opcheck_pools_free();
}

TEST_MAIN(blocked_chains_match_our_own_path, depthwise_in_blocked_chains_matches_our_own_path,
          squeeze_excitation_in_blocked_chains_matches_our_own_path, maxpool_in_blocked_chains_matches_our_own_path,
          se_mul_stays_before_a_conv_that_may_be_blocked,
          observer_set_after_plan_needs_a_new_plan)
