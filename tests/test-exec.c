/* The executor on small hand-built graphs: forward against hand-computed values, activation-memory
 * reuse (inference) against keep-everything (training), plan-time folding of shape chains, the
 * whole-graph backward against finite differences, the abort flag, progress, and the one error
 * that lists every unsupported op. */
#include "tests/opcheck.h"
#include "engine/exec.h"
#include "engine/graph.h"

static int init(qs_graph *g, const char *name, int ndim, const int64_t *shape, const float *v)
{
    int id = qs_graph_value(g, name);
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    if (v)
        memcpy(t->data, v, qs_nbytes(t));
    else
        for (int64_t i = 0; i < qs_numel(t); i++)
            qs_f32(t)[i] = opcheck_uniform(-1, 1);
    qs_graph_set_init_steal(g, id, t);
    return id;
}

static int input(qs_graph *g, const char *name, int ndim, const int64_t *shape, int symbolic_batch)
{
    int id = qs_graph_value(g, name);
    qs_value *v = &g->values[id];
    v->dtype = QS_F32;
    v->ndim = ndim;
    memcpy(v->shape, shape, ndim * sizeof *shape);
    if (symbolic_batch) {
        v->shape[0] = -1;
        v->dim_param[0] = strdup("N");
    }
    g->inputs = realloc(g->inputs, (g->ninputs + 1) * sizeof *g->inputs);
    g->inputs[g->ninputs++] = id;
    return id;
}

static void output(qs_graph *g, int id)
{
    g->outputs = realloc(g->outputs, (g->noutputs + 1) * sizeof *g->outputs);
    g->outputs[g->noutputs++] = id;
}

static int node(qs_graph *g, const char *op, int nin, const int *in, const char *out)
{
    int o = qs_graph_value(g, out);
    qs_graph_add_node(g, op, out, nin, in, 1, &o);
    return o;
}

/* y = Relu(x·Wᵀ + b) + x  (a residual MLP block), x: [N, 4] */
static qs_graph *residual_mlp(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 4}, ws[] = {4, 4}, bs[] = {4};
    int x = input(g, "x", 2, xs, 1);
    int w = init(g, "W", 2, ws, NULL), b = init(g, "b", 1, bs, NULL);
    int gin[] = {x, w, b};
    int h = node(g, "Gemm", 3, gin, "h");
    qs_node_set_int(&g->nodes[g->nnodes - 1], "transB", 1);
    int r = node(g, "Relu", 1, &h, "r");
    int ain[] = {r, x};
    int y = node(g, "Add", 2, ain, "y");
    output(g, y);
    return g;
}

TEST(forward_matches_hand_computation)
{
    qs_graph *g = residual_mlp();
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT(x);
    ASSERT_EQ(qs_exec_plan(x, 3, &e), 0);
    ASSERT_EQ(qs_exec_batch(x), 3);
    int64_t xs[] = {3, 4};
    qs_tensor *in = opcheck_rand(2, xs, -1, 1);
    ASSERT_EQ(qs_exec_set_input(x, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_forward(x, &e), 0);
    const qs_tensor *y = qs_exec_output(x, 0);
    const float *W = qs_f32(g->values[qs_graph_find_value(g, "W")].init);
    const float *b = qs_f32(g->values[qs_graph_find_value(g, "b")].init);
    for (int n = 0; n < 3; n++)
        for (int j = 0; j < 4; j++) {
            double h = b[j];
            for (int k = 0; k < 4; k++)
                h += (double)qs_f32(in)[n * 4 + k] * W[j * 4 + k];
            double want = (h > 0 ? h : 0) + qs_f32(in)[n * 4 + j];
            ASSERT_CLOSE(qs_f32(y)[n * 4 + j], want, 1e-5, 1e-6);
        }
    qs_exec_free(x);
    qs_graph_free(g);
}

/* A long chain: with reuse, buffers are recycled; results must equal training mode (no reuse). */
TEST(memory_reuse_gives_same_results)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 8};
    int v = input(g, "x", 2, xs, 1), first = v;
    char name[32];
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof name, "t%d", i);
        int in[] = {v, first};
        v = node(g, i % 3 == 2 ? "Add" : i % 3 == 1 ? "Sigmoid" : "Tanh", i % 3 == 2 ? 2 : 1, in, name);
    }
    output(g, v);
    qs_err e = {0};
    qs_exec *a = qs_exec_new(g, QS_EXEC_INFER, &e), *b = qs_exec_new(g, QS_EXEC_TRAIN, &e);
    ASSERT(a && b);
    ASSERT_EQ(qs_exec_plan(a, 5, &e), 0);
    ASSERT_EQ(qs_exec_plan(b, 5, &e), 0);
    ASSERT(qs_exec_arena_bytes(a) < qs_exec_arena_bytes(b));
    int64_t s[] = {5, 8};
    qs_tensor *in = opcheck_rand(2, s, -2, 2);
    ASSERT_EQ(qs_exec_set_input(a, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_set_input(b, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_forward(a, &e), 0);
    ASSERT_EQ(qs_exec_forward(b, &e), 0);
    ASSERT_EQ(memcmp(qs_exec_output(a, 0)->data, qs_exec_output(b, 0)->data, 5 * 8 * 4), 0);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

/* Reshape(x, Concat(Gather(Shape(x), 0), [-1])) — the shape chain is folded at plan time, for any batch. */
TEST(shape_chains_fold_at_plan_time)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 2, 3};
    int x = input(g, "x", 3, xs, 1);
    int s = node(g, "Shape", 1, &x, "s");
    int idx = qs_graph_value(g, "zero");
    qs_graph_set_init_steal(g, idx, qs_tensor_new(QS_I64, 0, NULL));
    int gin[] = {s, idx};
    int n = node(g, "Gather", 2, gin, "n");
    int one[] = {n};
    int64_t ax = 0;
    int nu = node(g, "Unsqueeze", 1, one, "nu");
    int axes = qs_graph_value(g, "axes");
    qs_graph_set_init_steal(g, axes, opcheck_ints(1, &ax));
    g->nodes[g->nnodes - 1].in = realloc(g->nodes[g->nnodes - 1].in, 2 * sizeof(int));
    g->nodes[g->nnodes - 1].in[1] = axes;
    g->nodes[g->nnodes - 1].nin = 2;
    int64_t m1 = -1;
    int minus = qs_graph_value(g, "minus1");
    qs_graph_set_init_steal(g, minus, opcheck_ints(1, &m1));
    int cin[] = {nu, minus};
    int shape = node(g, "Concat", 2, cin, "shape");
    qs_node_set_int(&g->nodes[g->nnodes - 1], "axis", 0);
    int rin[] = {x, shape};
    int y = node(g, "Reshape", 2, rin, "y");
    output(g, y);
    qs_err e = {0};
    qs_exec *xe = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT(xe);
    for (int64_t batch = 1; batch <= 4; batch += 3) {
        if (qs_exec_plan(xe, batch, &e) < 0)
            QT_FAIL_("plan: %s", e.msg);
        const qs_tensor *out = qs_exec_output(xe, 0);
        ASSERT_EQ(out->ndim, 2);
        ASSERT_EQ(out->shape[0], batch);
        ASSERT_EQ(out->shape[1], 6);
        int64_t sh[] = {batch, 2, 3};
        qs_tensor *in = opcheck_rand(3, sh, -1, 1);
        ASSERT_EQ(qs_exec_set_input(xe, 0, in, &e), 0);
        ASSERT_EQ(qs_exec_forward(xe, &e), 0);
        ASSERT_EQ(memcmp(out->data, in->data, qs_nbytes(in)), 0);
        qs_tensor_free(in);
    }
    qs_exec_free(xe);
    qs_graph_free(g);
}

static double loss_of(qs_exec *x, const qs_tensor *w)
{
    qs_err e = {0};
    if (qs_exec_forward(x, &e) < 0)
        QT_FAIL_("forward: %s", e.msg);
    const qs_tensor *y = qs_exec_output(x, 0);
    double s = 0;
    for (int64_t i = 0; i < qs_numel(y); i++)
        s += (double)qs_f32(y)[i] * qs_f32(w)[i];
    return s;
}

TEST(graph_backward_matches_finite_differences)
{
    qs_graph *g = residual_mlp();
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_TRAIN, &e);
    ASSERT(x);
    ASSERT_EQ(qs_exec_plan(x, 2, &e), 0);
    int64_t xs[] = {2, 4};
    qs_tensor *in = opcheck_rand(2, xs, -1, 1), *w = opcheck_rand(2, xs, -1, 1);
    ASSERT_EQ(qs_exec_set_input(x, 0, in, &e), 0);
    loss_of(x, w);
    const qs_tensor *dout[] = {w};
    if (qs_exec_backward(x, dout, &e) < 0)
        QT_FAIL_("backward: %s", e.msg);
    /* x feeds both Gemm and Add: its gradient is accumulated from the two */
    int ids[] = {qs_graph_find_value(g, "x"), qs_graph_find_value(g, "W"), qs_graph_find_value(g, "b")};
    for (int k = 0; k < 3; k++) {
        const qs_tensor *gr = qs_exec_grad(x, ids[k]);
        ASSERT(gr);
        qs_tensor *t = ids[k] == ids[0] ? qs_exec_input(x, 0) : g->values[ids[k]].init;
        float *copy = malloc(qs_nbytes(gr));
        memcpy(copy, gr->data, qs_nbytes(gr));
        for (int64_t i = 0; i < qs_numel(t); i++) {
            float keep = qs_f32(t)[i];
            qs_f32(t)[i] = keep + 1e-2f;
            double lp = loss_of(x, w);
            qs_f32(t)[i] = keep - 1e-2f;
            double lm = loss_of(x, w);
            qs_f32(t)[i] = keep;
            ASSERT_CLOSE(copy[i], (lp - lm) / 2e-2, 2e-2, 2e-3);
        }
        free(copy);
    }
    qs_exec_free(x);
    qs_graph_free(g);
}

/* Runs g on `in` twice: *a with fusion on, *b without (both inference), each with observer fn (when
 * not NULL) and its own user data. */
static void run_fused_and_not_observed(qs_graph *g, const qs_tensor *in, qs_exec **a, qs_exec **b, qs_node_fn fn,
                                       void *ud_a, void *ud_b)
{
    qs_err e = {0};
    *a = qs_exec_new(g, QS_EXEC_INFER, &e);
    *b = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT(*a && *b);
    qs_exec_set_fusion(*a, 1);
    if (fn) {
        qs_exec_set_observer(*a, fn, ud_a);
        qs_exec_set_observer(*b, fn, ud_b);
    }
    ASSERT_EQ(qs_exec_plan(*a, in->shape[0], &e), 0);
    ASSERT_EQ(qs_exec_plan(*b, in->shape[0], &e), 0);
    ASSERT_EQ(qs_exec_set_input(*a, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_set_input(*b, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_forward(*a, &e), 0);
    ASSERT_EQ(qs_exec_forward(*b, &e), 0);
}

static void run_fused_and_not(qs_graph *g, const qs_tensor *in, qs_exec **a, qs_exec **b)
{
    run_fused_and_not_observed(g, in, a, b, NULL, NULL, NULL);
}

/* Gemm → Relu fused into one kernel call gives the unfused result; the pre-activation is hidden. */
TEST(relu_fusion_matches_unfused)
{
    qs_graph *g = residual_mlp();
    int64_t xs[] = {6, 4};
    qs_tensor *in = opcheck_rand(2, xs, -1, 1);
    qs_exec *a, *b;
    run_fused_and_not(g, in, &a, &b);
    ASSERT_EQ(memcmp(qs_exec_output(a, 0)->data, qs_exec_output(b, 0)->data, 6 * 4 * 4), 0);
    int h = qs_graph_find_value(g, "h");
    ASSERT(qs_exec_value(a, h) == NULL);   /* fused away */
    ASSERT(qs_exec_value(b, h) != NULL);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

/* What an observer sees: each node once with its outputs; with fusion the Gemm+Relu pair makes one
 * call, for the Relu node with the Relu's output (never the Gemm's node id with the Relu's data). */
typedef struct seen { int calls[8]; float relu[24]; const qs_graph *g; } seen;

static void record(void *ud, int node, qs_tensor *const *out, int nout)
{
    seen *s = ud;
    s->calls[node]++;
    if (!strcmp(s->g->nodes[node].op, "Relu") && nout == 1 && qs_numel(out[0]) == 24)
        memcpy(s->relu, out[0]->data, sizeof s->relu);
}

TEST(observer_with_fusion_reports_the_activation)
{
    qs_graph *g = residual_mlp();   /* nodes: Gemm, Relu, Add */
    seen fused = { .g = g }, plain = { .g = g };
    int64_t xs[] = {6, 4};
    qs_tensor *in = opcheck_rand(2, xs, -1, 1);
    qs_exec *a, *b;
    run_fused_and_not_observed(g, in, &a, &b, record, &fused, &plain);
    ASSERT_STR_EQ(g->nodes[0].op, "Gemm");
    ASSERT_STR_EQ(g->nodes[1].op, "Relu");
    ASSERT(fused.calls[0] == 0 && fused.calls[1] == 1 && fused.calls[2] == 1);
    ASSERT(plain.calls[0] == 1 && plain.calls[1] == 1 && plain.calls[2] == 1);
    ASSERT_EQ(memcmp(fused.relu, plain.relu, sizeof fused.relu), 0);
    int zeros = 0;
    for (int i = 0; i < 24; i++)
        zeros += fused.relu[i] == 0;
    ASSERT(zeros > 0 && zeros < 24);   /* post-activation data, not the Gemm's */
    qs_tensor_free(in);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

/* PyTorch's export order: Gemm, then the Constant nodes holding Clip's bounds, then Clip. The bounds
 * are known only after the Gemm is planned; the clamp must still be fused, and give the same result. */
TEST(clip_with_constant_bounds_fuses)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 4}, ws[] = {4, 4};
    int x = input(g, "x", 2, xs, 1), w = init(g, "W", 2, ws, NULL);
    int gin[] = {x, w};
    int h = node(g, "Gemm", 2, gin, "h");
    int lo = node(g, "Constant", 0, NULL, "lo"), hi = node(g, "Constant", 0, NULL, "hi");
    qs_node_set_float(&g->nodes[1], "value_float", -0.25f);
    qs_node_set_float(&g->nodes[2], "value_float", 0.5f);
    int cin[] = {h, lo, hi};
    output(g, node(g, "Clip", 3, cin, "y"));
    int64_t is[] = {5, 4};
    qs_tensor *in = opcheck_rand(2, is, -2, 2);
    qs_exec *a, *b;
    run_fused_and_not(g, in, &a, &b);
    const float *ya = qs_f32(qs_exec_output(a, 0)), *yb = qs_f32(qs_exec_output(b, 0));
    int clipped = 0;
    for (int i = 0; i < 20; i++) {
        ASSERT_EQ(ya[i], yb[i]);
        ASSERT(ya[i] >= -0.25f && ya[i] <= 0.5f);
        clipped += ya[i] == -0.25f || ya[i] == 0.5f;
    }
    ASSERT(clipped > 0);   /* the bounds were in play */
    ASSERT(qs_exec_value(a, h) == NULL);   /* fused away */
    ASSERT(qs_exec_value(b, h) != NULL);
    qs_tensor_free(in);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

static int conv3x3(qs_graph *g, int x, const char *w, const char *out)
{
    int64_t ws[] = {4, 4, 3, 3}, pads[] = {1, 1, 1, 1};
    int in[] = {x, init(g, w, 4, ws, NULL)};
    int o = node(g, "Conv", 2, in, out);
    qs_node_set_ints(&g->nodes[g->nnodes - 1], "pads", 4, pads);
    return o;
}

/* A residual block, y = Relu(Conv(Relu(Conv(x))) + x): the Add and the Relu after it fold into the
 * second Conv, bit-identical to running them. z = Conv(y) + Conv'(y) folds into Conv', the later
 * one, with Conv(y) as its residual (as in a ResNet's downsampling block), not into Conv: its other
 * operand is computed after it. */
TEST(residual_add_fuses_into_conv)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 4, 5, 5};
    int x = input(g, "x", 4, xs, 1);
    int h1 = conv3x3(g, x, "W1", "h1"), r1 = node(g, "Relu", 1, &h1, "r1");
    int h2 = conv3x3(g, r1, "W2", "h2");
    int ain[] = {h2, x};
    int s = node(g, "Add", 2, ain, "s"), y = node(g, "Relu", 1, &s, "y");
    output(g, y);   /* kept to the end, to be compared */
    int c3 = conv3x3(g, y, "W3", "c3"), c4 = conv3x3(g, y, "W4", "c4");
    int zin[] = {c3, c4};
    output(g, node(g, "Add", 2, zin, "z"));
    int64_t is[] = {3, 4, 5, 5};
    qs_tensor *in = opcheck_rand(4, is, -1, 1);
    qs_exec *a, *b;
    run_fused_and_not(g, in, &a, &b);
    ASSERT_EQ(memcmp(qs_exec_output(a, 1)->data, qs_exec_output(b, 1)->data, 3 * 4 * 25 * 4), 0);
    ASSERT(qs_exec_value(a, h2) == NULL && qs_exec_value(a, s) == NULL);   /* folded into the Conv */
    ASSERT(qs_exec_value(a, y) != NULL);
    ASSERT(qs_exec_value(a, c3) != NULL && qs_exec_value(a, c4) == NULL);  /* the Add folds into Conv' */
    ASSERT(qs_exec_value(b, h2) != NULL && qs_exec_value(b, s) != NULL);
    const float *ya = qs_f32(qs_exec_value(a, y)), *yb = qs_f32(qs_exec_value(b, y));
    int zeros = 0;
    for (int i = 0; i < 3 * 4 * 25; i++) {
        ASSERT_EQ(ya[i], yb[i]);
        zeros += ya[i] == 0.f;
    }
    ASSERT(zeros > 0 && zeros < 3 * 4 * 25);   /* the Relu after the Add was in play */
    /* a value kept for an observer is not fused away; the rest still fuses */
    qs_err e = {0};
    qs_exec *k = qs_exec_new(g, QS_EXEC_INFER, &e);
    qs_exec_set_fusion(k, 1);
    qs_exec_keep_value(k, h2);
    ASSERT_EQ(qs_exec_plan(k, 3, &e), 0);
    ASSERT_EQ(qs_exec_set_input(k, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_forward(k, &e), 0);
    ASSERT(qs_exec_value(k, h2) != NULL && qs_exec_value(k, qs_graph_find_value(g, "h1")) == NULL);
    ASSERT_EQ(memcmp(qs_exec_output(k, 1)->data, qs_exec_output(b, 1)->data, 3 * 4 * 25 * 4), 0);
    qs_exec_free(k);
    qs_tensor_free(in);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

/* SiLU as exporters write it, Mul(v, Sigmoid(v)) in either operand order, folds into the Conv that
 * produces v (here the oneDNN, depthwise and 1x1 paths), bit-identical to running the two nodes; not
 * when v has another reader. */
TEST(silu_fuses_into_conv)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 4, 5, 5}, dws[] = {4, 1, 3, 3}, pws[] = {4, 4, 1, 1}, pads[] = {1, 1, 1, 1};
    int x = input(g, "x", 4, xs, 1);
    int h1 = conv3x3(g, x, "W1", "h1"), s1 = node(g, "Sigmoid", 1, &h1, "s1");
    int m1 = node(g, "Mul", 2, (int[]){ h1, s1 }, "m1");
    output(g, m1);
    int h2 = node(g, "Conv", 2, (int[]){ m1, init(g, "Wdw", 4, dws, NULL) }, "h2");
    qs_node_set_ints(&g->nodes[g->nnodes - 1], "pads", 4, pads);
    qs_node_set_int(&g->nodes[g->nnodes - 1], "group", 4);
    int s2 = node(g, "Sigmoid", 1, &h2, "s2"), m2 = node(g, "Mul", 2, (int[]){ s2, h2 }, "m2");
    int h3 = node(g, "Conv", 2, (int[]){ m2, init(g, "Wpw", 4, pws, NULL) }, "h3");
    int s3 = node(g, "Sigmoid", 1, &h3, "s3"), m3 = node(g, "Mul", 2, (int[]){ h3, s3 }, "m3");
    output(g, m3);
    int h4 = conv3x3(g, m3, "W4", "h4"), s4 = node(g, "Sigmoid", 1, &h4, "s4");
    int m4 = node(g, "Mul", 2, (int[]){ h4, s4 }, "m4");
    output(g, node(g, "Add", 2, (int[]){ m4, h4 }, "z"));   /* h4 has a third reader */
    int64_t is[] = {3, 4, 5, 5};
    qs_tensor *in = opcheck_rand(4, is, -3, 3);
    qs_exec *a, *b;
    run_fused_and_not(g, in, &a, &b);
    for (int o = 0; o < 3; o++)
        ASSERT_EQ(memcmp(qs_exec_output(a, o)->data, qs_exec_output(b, o)->data, 3 * 4 * 25 * 4), 0);
    int gone[] = { h1, s1, h2, s2, h3, s3 }, kept[] = { m1, m2, m3, h4, s4, m4 };
    for (int k = 0; k < 6; k++) {
        ASSERT(qs_exec_value(a, gone[k]) == NULL);   /* folded into the Conv */
        ASSERT(qs_exec_value(a, kept[k]) != NULL && qs_exec_value(b, gone[k]) != NULL);
    }
    /* m1 is an output too, kept to the end: SiLU's range, both signs in play */
    const float *ma = qs_f32(qs_exec_output(a, 0)), *mb = qs_f32(qs_exec_output(b, 0));
    int neg = 0;
    for (int i = 0; i < 3 * 4 * 25; i++) {
        ASSERT_EQ(ma[i], mb[i]);
        ASSERT(ma[i] >= -0.2785f);   /* min of v·σ(v), at v = −1.278 */
        neg += ma[i] < 0;
    }
    ASSERT(neg > 0 && neg < 3 * 4 * 25);
    qs_tensor_free(in);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

/* HardSwish, HardSigmoid and Sigmoid that are a Conv output's only reader fold into the Conv, after a
 * clamp it absorbed (Conv → Relu → HardSwish), bit-identical to running them; nothing folds after
 * them (the Relu after a fused HardSwish runs), nor into a Conv whose output has a second reader. */
TEST(pointwise_activations_fuse_into_conv)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 14);
    int64_t xs[] = {1, 4, 5, 5}, dws[] = {4, 1, 3, 3}, pws[] = {4, 4, 1, 1}, pads[] = {1, 1, 1, 1};
    int x = input(g, "x", 4, xs, 1);
    int h1 = conv3x3(g, x, "W1", "h1"), a1 = node(g, "HardSwish", 1, &h1, "a1");
    output(g, a1);
    int h2 = node(g, "Conv", 2, (int[]){ a1, init(g, "Wdw", 4, dws, NULL) }, "h2");
    qs_node_set_ints(&g->nodes[g->nnodes - 1], "pads", 4, pads);
    qs_node_set_int(&g->nodes[g->nnodes - 1], "group", 4);
    int a2 = node(g, "HardSigmoid", 1, &h2, "a2");
    qs_node_set_float(&g->nodes[g->nnodes - 1], "alpha", 0.3f);
    qs_node_set_float(&g->nodes[g->nnodes - 1], "beta", 0.4f);
    output(g, a2);
    int h3 = node(g, "Conv", 2, (int[]){ a2, init(g, "Wpw", 4, pws, NULL) }, "h3");
    int r3 = node(g, "Relu", 1, &h3, "r3"), a3 = node(g, "HardSwish", 1, &r3, "a3");
    int z3 = node(g, "Relu", 1, &a3, "z3");
    output(g, z3);
    int h4 = conv3x3(g, z3, "W4", "h4"), a4 = node(g, "Sigmoid", 1, &h4, "a4");
    output(g, a4);
    int h5 = conv3x3(g, a4, "W5", "h5"), a5 = node(g, "HardSwish", 1, &h5, "a5");
    output(g, node(g, "Add", 2, (int[]){ a5, h5 }, "z5"));   /* h5 has a second reader */
    int64_t is[] = {3, 4, 5, 5};
    qs_tensor *in = opcheck_rand(4, is, -4, 4);
    qs_exec *a, *b;
    run_fused_and_not(g, in, &a, &b);
    for (int o = 0; o < 5; o++)
        ASSERT_EQ(memcmp(qs_exec_output(a, o)->data, qs_exec_output(b, o)->data, 3 * 4 * 25 * 4), 0);
    int gone[] = { h1, h2, h3, r3, h4 }, kept[] = { a1, a2, a3, z3, a4, h5, a5 };
    for (int k = 0; k < 5; k++)
        ASSERT(qs_exec_value(a, gone[k]) == NULL && qs_exec_value(b, gone[k]) != NULL);
    for (int k = 0; k < 7; k++)
        ASSERT(qs_exec_value(a, kept[k]) != NULL);
    /* both sides of HardSwish's and HardSigmoid's kinks in play */
    const float *v1 = qs_f32(qs_exec_output(a, 0)), *v2 = qs_f32(qs_exec_output(a, 1));
    int lo1 = 0, hi1 = 0, lo2 = 0, hi2 = 0;
    for (int i = 0; i < 3 * 4 * 25; i++) {
        lo1 += v1[i] == 0.f, hi1 += v1[i] > 3.f;
        lo2 += v2[i] == 0.f, hi2 += v2[i] == 1.f;
        ASSERT(v1[i] >= -0.3751f && v2[i] >= 0.f && v2[i] <= 1.f);   /* min of x·clamp(x/6 + ½): −0.375 at x = −1.5 */
    }
    ASSERT(lo1 > 0 && hi1 > 0 && lo2 > 0 && hi2 > 0);
    qs_tensor_free(in);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

/* A squeeze-excitation block: h = Conv3x3(x), s = Sigmoid(Conv1x1(GlobalAveragePool(h))), m = h·s
 * (operands in either order), y = Conv1x1(m) + bias with M output channels on hw×hw planes. With
 * `more` 1, m is a graph output too; 2: m has a second reader (Relu, an output). */
static qs_graph *se_block(int64_t hw, int64_t M, int swap, int more, int *h, int *s, int *m)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 8, hw, hw}, w1[] = {8, 8, 3, 3}, wr[] = {8, 8, 1, 1}, wp[] = {M, 8, 1, 1}, bs[] = {M};
    int64_t pads[] = {1, 1, 1, 1};
    int x = input(g, "x", 4, xs, 1);
    *h = node(g, "Conv", 2, (int[]){ x, init(g, "W1", 4, w1, NULL) }, "h");
    qs_node_set_ints(&g->nodes[g->nnodes - 1], "pads", 4, pads);
    int gp = node(g, "GlobalAveragePool", 1, h, "gp");
    int r = node(g, "Conv", 2, (int[]){ gp, init(g, "Wr", 4, wr, NULL) }, "r");
    *s = node(g, "Sigmoid", 1, &r, "s");
    *m = node(g, "Mul", 2, swap ? (int[]){ *s, *h } : (int[]){ *h, *s }, "m");
    output(g, node(g, "Conv", 3, (int[]){ *m, init(g, "Wp", 4, wp, NULL), init(g, "Bp", 1, bs, NULL) }, "y"));
    if (more == 1)
        output(g, *m);
    if (more == 2)
        output(g, node(g, "Relu", 1, m, "z"));
    return g;
}

/* The squeeze-excitation Mul m = h·s folds into the 1x1 Conv that reads it: as W·diag(s_n) when M
 * is at most the plane (the product is rounded in another order, so the result is held to a bound),
 * as diag(s_n)·X_n otherwise (the Mul's own products: bit-identical); batch 1 and 3, 1 to 3 threads.
 * Not when m is a graph output, has another reader, or is kept for an observer. */
TEST(se_mul_folds_into_next_conv)
{
    const double u = 1.0 / (1 << 24);   /* float's unit roundoff */
    for (int shape = 0; shape < 2; shape++)
        for (int64_t batch = 1; batch <= 3; batch += 2)
            for (int nt = 1; nt <= 3; nt++) {
                int64_t hw = shape ? 2 : 6, M = shape ? 12 : 4, C = 8, vol = hw * hw;
                int h, s, m;
                qs_graph *g = se_block(hw, M, nt == 2, 0, &h, &s, &m);
                int64_t is[] = {batch, 8, hw, hw};
                qs_tensor *in = opcheck_rand(4, is, -2, 2);
                qs_exec *a = qs_exec_new(g, QS_EXEC_INFER, NULL), *b = qs_exec_new(g, QS_EXEC_INFER, NULL);
                ASSERT(a && b);
                qs_exec_set_pool(a, opcheck_pool(nt));
                qs_exec_set_pool(b, opcheck_pool(nt));
                qs_exec_set_fusion(a, 1);
                qs_err e = {0};
                ASSERT_EQ(qs_exec_plan(a, batch, &e), 0);
                ASSERT_EQ(qs_exec_plan(b, batch, &e), 0);
                ASSERT_EQ(qs_exec_set_input(a, 0, in, &e), 0);
                ASSERT_EQ(qs_exec_set_input(b, 0, in, &e), 0);
                ASSERT_EQ(qs_exec_forward(a, &e), 0);
                ASSERT_EQ(qs_exec_forward(b, &e), 0);
                ASSERT(qs_exec_value(a, m) == NULL && qs_exec_value(b, m) != NULL);   /* the Mul did not run */
                const float *ya = qs_f32(qs_exec_output(a, 0)), *yb = qs_f32(qs_exec_output(b, 0));
                const float *hv = qs_f32(qs_exec_value(b, h)), *sv = qs_f32(qs_exec_value(b, s));
                const float *w = qs_f32(g->values[qs_graph_find_value(g, "Wp")].init);
                const float *bias = qs_f32(g->values[qs_graph_find_value(g, "Bp")].init);
                int differ = 0;
                for (int64_t n = 0; n < batch; n++)
                    for (int64_t o = 0; o < M; o++)
                        for (int64_t i = 0; i < vol; i++) {
                            /* each side: C products of three factors rounded twice (≤ 2u each, so
                             * 4u between the two), two sums of C terms (γ_C ≤ C·u each), the bias
                             * add rounded once each */
                            double mag = fabs(bias[o]);
                            for (int64_t k = 0; k < C; k++)
                                mag += fabs((double)w[o * C + k] * sv[n * C + k] * hv[(n * C + k) * vol + i]);
                            int64_t at = (n * M + o) * vol + i;
                            double d = fabs((double)ya[at] - yb[at]);
                            ASSERT(d <= (2.0 * C + 7) * u * mag);
                            differ += d != 0;
                        }
                if (shape)
                    ASSERT_EQ(differ, 0);   /* scaled X: the same products as the Mul's */
                qs_tensor_free(in);
                qs_exec_free(a);
                qs_exec_free(b);
                qs_graph_free(g);
            }
    /* m a graph output, m with a second reader, m kept for an observer: the Mul runs */
    for (int more = 0; more < 3; more++) {
        int h, s, m;
        qs_graph *g = se_block(6, 4, 0, more ? more : 0, &h, &s, &m);
        int64_t is[] = {2, 8, 6, 6};
        qs_tensor *in = opcheck_rand(4, is, -2, 2);
        qs_err e = {0};
        qs_exec *a = qs_exec_new(g, QS_EXEC_INFER, &e), *b = qs_exec_new(g, QS_EXEC_INFER, &e);
        qs_exec_set_fusion(a, 1);
        if (!more)
            qs_exec_keep_value(a, m);
        ASSERT_EQ(qs_exec_plan(a, 2, &e), 0);
        ASSERT_EQ(qs_exec_plan(b, 2, &e), 0);
        ASSERT_EQ(qs_exec_set_input(a, 0, in, &e), 0);
        ASSERT_EQ(qs_exec_set_input(b, 0, in, &e), 0);
        ASSERT_EQ(qs_exec_forward(a, &e), 0);
        ASSERT_EQ(qs_exec_forward(b, &e), 0);
        ASSERT(qs_exec_value(a, m) != NULL);
        for (int o = 0; o < g->noutputs; o++)
            ASSERT_EQ(memcmp(qs_exec_output(a, o)->data, qs_exec_output(b, o)->data, qs_nbytes(qs_exec_output(b, o))),
                      0);
        qs_tensor_free(in);
        qs_exec_free(a);
        qs_exec_free(b);
        qs_graph_free(g);
    }
    /* training never folds it */
    int h, s, m;
    qs_graph *g = se_block(6, 4, 0, 0, &h, &s, &m);
    qs_err e = {0};
    qs_exec *t = qs_exec_new(g, QS_EXEC_TRAIN, &e);
    qs_exec_set_fusion(t, 1);
    ASSERT_EQ(qs_exec_plan(t, 2, &e), 0);
    ASSERT(qs_exec_value(t, m) != NULL);
    qs_exec_free(t);
    qs_graph_free(g);
}

static void raise_abort(void *ud, int64_t done, int64_t total)
{
    (void)total;
    if (done == 1)
        atomic_store((atomic_int *)ud, 1);
}

TEST(abort_flag_stops_between_nodes)
{
    qs_graph *g = residual_mlp();
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    atomic_int flag = 0;
    qs_exec_set_abort(x, &flag);
    qs_exec_set_progress(x, raise_abort, &flag);
    ASSERT_EQ(qs_exec_plan(x, 1, &e), 0);
    ASSERT_EQ(qs_exec_forward(x, &e), QS_EABORTED);
    qs_exec_free(x);
    qs_graph_free(g);
}

TEST(unsupported_ops_are_listed_together)
{
    qs_graph *g = residual_mlp();
    int y = g->outputs[0];
    node(g, "FancyOp", 1, &y, "z");
    node(g, "OtherOp", 1, &y, "z2");
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT(!x);
    ASSERT_EQ(e.code, QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "FancyOp");
    ASSERT_STR_CONTAINS(e.msg, "OtherOp");
    ASSERT_STR_CONTAINS(e.msg, "2 problems");
    qs_graph_free(g);
}

TEST(wrong_input_shape_names_the_expected_one)
{
    qs_graph *g = residual_mlp();
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT_EQ(qs_exec_plan(x, 2, &e), 0);
    int64_t bad[] = {2, 5};
    qs_tensor *in = qs_tensor_new(QS_F32, 2, bad);
    ASSERT_EQ(qs_exec_set_input(x, 0, in, &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "[2, 4]");
    qs_exec_free(x);
    qs_graph_free(g);
}

/* y = Reshape(Relu(Flatten(x)·Wᵀ), [N,2,3]) + x, s = Sigmoid(Flatten(x)) read after it. In an
 * inference plan a view shares its input's bytes (the graph input's too) and copies nothing; the
 * results equal a training plan's, where every value has bytes of its own. */
TEST(views_share_their_inputs_bytes)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int64_t xs[] = {1, 2, 3}, ws[] = {6, 6}, ss[] = {3};
    int x = input(g, "x", 3, xs, 1), w = init(g, "W", 2, ws, NULL);
    int shp = qs_graph_value(g, "shape");
    qs_tensor *st = qs_tensor_new(QS_I64, 1, ss);
    qs_i64(st)[0] = -1;
    qs_i64(st)[1] = 2;
    qs_i64(st)[2] = 3;
    qs_graph_set_init_steal(g, shp, st);
    int f = node(g, "Flatten", 1, &x, "f");
    int gin[] = {f, w};
    int h = node(g, "Gemm", 2, gin, "h");
    qs_node_set_int(&g->nodes[g->nnodes - 1], "transB", 1);
    int r = node(g, "Relu", 1, &h, "r");
    int rin[] = {r, shp};
    int v = node(g, "Reshape", 2, rin, "v");
    int ain[] = {v, x};
    int y = node(g, "Add", 2, ain, "y");
    int sig = node(g, "Sigmoid", 1, &f, "s");
    output(g, y);
    output(g, sig);
    qs_err e = {0};
    qs_exec *a = qs_exec_new(g, QS_EXEC_INFER, &e), *b = qs_exec_new(g, QS_EXEC_TRAIN, &e);
    ASSERT(a && b);
    qs_exec_keep_value(a, f);
    qs_exec_keep_value(a, r);
    qs_exec_keep_value(a, v);
    ASSERT_EQ(qs_exec_plan(a, 4, &e), 0);
    ASSERT_EQ(qs_exec_plan(b, 4, &e), 0);
    int64_t s4[] = {4, 2, 3};
    qs_tensor *in = opcheck_rand(3, s4, -2, 2);
    ASSERT_EQ(qs_exec_set_input(a, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_set_input(b, 0, in, &e), 0);
    ASSERT_EQ(qs_exec_forward(a, &e), 0);
    ASSERT_EQ(qs_exec_forward(b, &e), 0);
    ASSERT(qs_exec_value(a, f)->data == qs_exec_value(a, x)->data);
    ASSERT(qs_exec_value(a, v)->data == qs_exec_value(a, r)->data);
    ASSERT(qs_exec_value(b, f)->data != qs_exec_value(b, x)->data);
    for (int k = 0; k < 2; k++)
        ASSERT_EQ(memcmp(qs_exec_output(a, k)->data, qs_exec_output(b, k)->data, 4 * 6 * 4), 0);
    ASSERT_EQ(memcmp(qs_exec_value(a, x)->data, in->data, 4 * 6 * 4), 0);   /* the input, as given */
    qs_tensor_free(in);
    qs_exec_free(a);
    qs_exec_free(b);
    qs_graph_free(g);
}

TEST_MAIN(forward_matches_hand_computation, memory_reuse_gives_same_results, views_share_their_inputs_bytes,
          shape_chains_fold_at_plan_time,
          observer_with_fusion_reports_the_activation,
          graph_backward_matches_finite_differences, relu_fusion_matches_unfused, silu_fuses_into_conv,
          pointwise_activations_fuse_into_conv, se_mul_folds_into_next_conv,
          clip_with_constant_bounds_fuses, residual_add_fuses_into_conv, abort_flag_stops_between_nodes,
          unsupported_ops_are_listed_together, wrong_input_shape_names_the_expected_one)
