/* Batch-norm folding (paper §2.3.1): small graphs (Conv, grouped and depthwise Conv,
 * ConvTranspose, Gemm, MatMul, each followed by BatchNormalization) run through the executor
 * before and after folding on random input — the outputs must agree — plus a folding worked out
 * by hand, the records' statistics, the cases that must not fold, and the committed fixture models. */
#include "tests/opcheck.h"
#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/onnx.h"
#include "engine/quant/bnfold.h"

static int init(qs_graph *g, const char *name, int ndim, const int64_t *shape, float lo, float hi)
{
    int id = qs_graph_value(g, name);
    qs_graph_set_init_steal(g, id, opcheck_rand(ndim, shape, lo, hi));
    return id;
}

static int input(qs_graph *g, const char *name, int ndim, const int64_t *shape)
{
    int id = qs_graph_value(g, name);
    qs_value *v = &g->values[id];
    v->dtype = QS_F32;
    v->ndim = ndim;
    memcpy(v->shape, shape, ndim * sizeof *shape);
    v->shape[0] = -1;
    v->dim_param[0] = strdup("N");
    g->inputs = realloc(g->inputs, (g->ninputs + 1) * sizeof *g->inputs);
    g->inputs[g->ninputs++] = id;
    return id;
}

static void output(qs_graph *g, int id)
{
    g->outputs = realloc(g->outputs, (g->noutputs + 1) * sizeof *g->outputs);
    g->outputs[g->noutputs++] = id;
}

static qs_node *node(qs_graph *g, const char *op, const char *name, int nin, const int *in, const char *out)
{
    int o = qs_graph_value(g, out);
    int id = qs_graph_add_node(g, op, name, nin, in, 1, &o);
    return &g->nodes[id];
}

/* BatchNormalization over c channels reading x, named name, statistics random (γ of both signs) */
static void bn(qs_graph *g, const char *name, int x, int64_t c, const char *out)
{
    char b[4][64];
    const char *suffix[4] = { "scale", "B", "mean", "var" };
    int in[5] = { x };
    for (int i = 0; i < 4; i++) {
        snprintf(b[i], sizeof b[i], "%s_%s", name, suffix[i]);
        in[i + 1] = i == 3 ? init(g, b[i], 1, &c, 0.2f, 2.f) : init(g, b[i], 1, &c, -1.5f, 1.5f);
    }
    qs_node_set_float(node(g, "BatchNormalization", name, 5, in, out), "epsilon", 1e-3f);
}

static qs_graph *graph(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    return g;
}

/* Output `which` of g for input in (a new tensor). */
static qs_tensor *run(qs_graph *g, const qs_tensor *in, int which)
{
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    if (!x || qs_exec_plan(x, in->shape[0], &e) < 0 || qs_exec_set_input(x, 0, in, &e) < 0 ||
        qs_exec_forward(x, &e) < 0)
        QT_FAIL_("running the graph: %s", e.msg);
    qs_tensor *y = qs_tensor_copy(qs_exec_output(x, which));
    qs_exec_free(x);
    return y;
}

/* max |a − b| ≤ rtol · max |a| (+ a tiny floor for all-zero outputs) */
static void assert_same(const qs_tensor *a, const qs_tensor *b, double rtol)
{
    ASSERT(qs_shape_eq(a, b));
    double diff = 0, mag = 0;
    for (int64_t i = 0; i < qs_numel(a); i++) {
        diff = fmax(diff, fabs(qs_f32(a)[i] - qs_f32(b)[i]));
        mag = fmax(mag, fabs(qs_f32(a)[i]));
    }
    if (!(diff <= rtol * mag + 1e-7))
        QT_FAIL_("outputs differ by %g (largest output %g)", diff, mag);
}

static int count_op(const qs_graph *g, const char *op)
{
    int k = 0;
    for (int i = 0; i < g->nnodes; i++)
        k += !strcmp(g->nodes[i].op, op);
    return k;
}

static const qs_node *find_node(const qs_graph *g, const char *name)
{
    for (int i = 0; i < g->nnodes; i++)
        if (!strcmp(g->nodes[i].name, name))
            return &g->nodes[i];
    return NULL;
}

/* Folds g, checks the outputs on random input of shape xs are unchanged and that nbn BNs went.
 * Returns the records. */
static qs_bn_record *fold_and_compare(qs_graph *g, int ndim, const int64_t *xs, int nbn, int *nrec)
{
    qs_tensor *in = opcheck_rand(ndim, xs, -2, 2);
    qs_tensor *before = run(g, in, 0);
    int bns = count_op(g, "BatchNormalization");
    qs_bn_record *r;
    qs_err e = {0};
    ASSERT_EQ(qs_bnfold(g, &r, nrec, &e), 0);
    ASSERT_EQ(*nrec, nbn);
    ASSERT_EQ(count_op(g, "BatchNormalization"), bns - nbn);
    ASSERT_EQ(qs_graph_toposort(g, &e), 0);
    qs_tensor *after = run(g, in, 0);
    assert_same(before, after, 1e-5);
    qs_tensor_free(in);
    qs_tensor_free(before);
    qs_tensor_free(after);
    return r;
}

/* the record holds exactly the BN's statistics (as they were before folding, kept in `orig`) */
static void assert_record(const qs_bn_record *r, const qs_graph *orig, const char *bn_name, const char *layer,
                          const char *out)
{
    ASSERT_STR_EQ(r->layer, layer);
    ASSERT_STR_EQ(r->output, out);
    ASSERT_CLOSE(r->eps, 1e-3, 1e-7, 0);
    const qs_node *b = find_node(orig, bn_name);
    ASSERT(b);
    float *stat[4] = { r->gamma, r->beta, r->mean, r->var };
    for (int i = 0; i < 4; i++) {
        const qs_tensor *t = orig->values[b->in[i + 1]].init;
        ASSERT_EQ(qs_numel(t), r->c);
        for (int64_t k = 0; k < r->c; k++)
            ASSERT_EQ(stat[i][k], qs_f32(t)[k]);
    }
}

TEST(conv_bn_by_hand)
{
    /* 1×1 conv, W = 2, b = 1; BN γ = 3, β = 0.5, μ = 1, var = 3, ε = 1: σ = 2, f = 1.5 →
     * W' = 3, b' = (1 − 1)·1.5 + 0.5 = 0.5 */
    qs_graph *g = graph();
    int64_t xs[] = { 1, 1, 2, 2 }, ws[] = { 1, 1, 1, 1 }, one = 1;
    int x = input(g, "x", 4, xs);
    float vals[] = { 2, 1, 3, 0.5f, 1, 3 };
    const char *names[] = { "W", "b", "g", "beta", "mu", "var" };
    int id[6];
    for (int i = 0; i < 6; i++) {
        id[i] = qs_graph_value(g, names[i]);
        qs_graph_set_init_steal(g, id[i], i ? opcheck_from(1, &one, &vals[i]) : opcheck_from(4, ws, &vals[0]));
    }
    int cin[] = { x, id[0], id[1] };
    node(g, "Conv", "conv", 3, cin, "h");
    int bin[] = { qs_graph_value(g, "h"), id[2], id[3], id[4], id[5] };
    qs_node_set_float(node(g, "BatchNormalization", "bn", 5, bin, "y"), "epsilon", 1.f);
    output(g, qs_graph_value(g, "y"));
    qs_bn_record *r;
    int n;
    qs_err e = {0};
    ASSERT_EQ(qs_bnfold(g, &r, &n, &e), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(g->nnodes, 1);
    const qs_node *c = &g->nodes[0];
    ASSERT_STR_EQ(c->op, "Conv");
    ASSERT_STR_EQ(g->values[c->out[0]].name, "y");
    ASSERT_CLOSE(qs_f32(g->values[c->in[1]].init)[0], 3, 1e-7, 0);
    ASSERT_CLOSE(qs_f32(g->values[c->in[2]].init)[0], 0.5, 1e-7, 0);
    /* the record keeps the statistics; the BN's parameters left the graph */
    ASSERT_STR_EQ(r[0].layer, "conv");
    ASSERT_STR_EQ(r[0].output, "y");
    ASSERT_EQ(r[0].c, 1);
    ASSERT_EQ(r[0].gamma[0], 3.f);
    ASSERT_EQ(r[0].beta[0], 0.5f);
    ASSERT_EQ(r[0].mean[0], 1.f);
    ASSERT_EQ(r[0].var[0], 3.f);
    ASSERT_EQ(r[0].eps, 1.f);
    ASSERT(qs_bn_find(r, n, "conv") == &r[0]);
    ASSERT(!qs_bn_find(r, n, "other"));
    for (int i = 2; i < 6; i++)
        ASSERT(!g->values[id[i]].init);
    qs_bn_records_free(r, n);
    qs_graph_free(g);
}

static qs_graph *conv_bn(int64_t cin, int64_t m, int64_t group, int bias)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, cin, 7, 6 }, ws[] = { m, cin / group, 3, 3 };
    int x = input(g, "x", 4, xs);
    int in[] = { x, init(g, "W", 4, ws, -1, 1), bias ? init(g, "b", 1, &m, -1, 1) : -1 };
    qs_node *c = node(g, "Conv", "conv", bias ? 3 : 2, in, "h");
    int64_t pads[] = { 1, 0, 1, 1 }, strides[] = { 1, 2 };
    qs_node_set_ints(c, "pads", 4, pads);
    qs_node_set_ints(c, "strides", 2, strides);
    qs_node_set_int(c, "group", group);
    bn(g, "bn", qs_graph_value(g, "h"), m, "y");
    int r = qs_graph_value(g, "y");
    node(g, "Relu", "relu", 1, &r, "z");
    output(g, qs_graph_value(g, "z"));
    return g;
}

TEST(conv_bn_plain_grouped_depthwise_nobias)
{
    struct { int64_t cin, m, group; int bias; } cases[] = {
        { 3, 5, 1, 1 }, { 4, 6, 2, 1 }, { 4, 4, 4, 1 }, { 4, 8, 4, 1 }, { 3, 5, 1, 0 }, { 4, 4, 4, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qs_graph *g = conv_bn(cases[i].cin, cases[i].m, cases[i].group, cases[i].bias);
        qs_graph *orig = qs_graph_clone(g);
        int64_t xs[] = { 3, cases[i].cin, 7, 6 };
        int n;
        qs_bn_record *r = fold_and_compare(g, 4, xs, 1, &n);
        assert_record(&r[0], orig, "bn", "conv", "y");
        const qs_node *c = find_node(g, "conv");
        ASSERT_EQ(c->nin, 3);   /* a bias was created where there was none */
        ASSERT_EQ(qs_numel(g->values[c->in[2]].init), cases[i].m);
        ASSERT_EQ(g->nodes[1].in[0], c->out[0]);   /* Relu reads the conv directly */
        qs_bn_records_free(r, n);
        qs_graph_free(orig);
        qs_graph_free(g);
    }
}

TEST(conv_transpose_bn)
{
    /* W [C, M/g, k, k]: output channel (c / (C/g))·(M/g) + j */
    int64_t groups[] = { 1, 2 };
    for (int t = 0; t < 2; t++) {
        int64_t cin = 4, mg = 3, grp = groups[t], m = mg * grp;
        qs_graph *g = graph();
        int64_t xs[] = { 2, cin, 4, 5 }, ws[] = { cin, mg, 3, 2 };
        int x = input(g, "x", 4, xs);
        int in[] = { x, init(g, "W", 4, ws, -1, 1), init(g, "b", 1, &m, -1, 1) };
        qs_node *c = node(g, "ConvTranspose", "deconv", t ? 3 : 2, in, "h");
        int64_t strides[] = { 2, 1 };
        qs_node_set_ints(c, "strides", 2, strides);
        qs_node_set_int(c, "group", grp);
        bn(g, "bn", qs_graph_value(g, "h"), m, "y");
        output(g, qs_graph_value(g, "y"));
        qs_graph *orig = qs_graph_clone(g);
        int n;
        qs_bn_record *r = fold_and_compare(g, 4, xs, 1, &n);
        assert_record(&r[0], orig, "bn", "deconv", "y");
        qs_bn_records_free(r, n);
        qs_graph_free(orig);
        qs_graph_free(g);
    }
}

TEST(gemm_bn)
{
    /* BN on Gemm's [N, C] output; transB with and without, α ≠ 1, β with C of several shapes */
    struct { int transB; int cshape; float alpha, beta; } cases[] = {
        { 1, 1, 1.f, 1.f }, { 1, 1, 0.7f, 0.5f }, { 0, 0, 1.3f, 1.f }, { 0, 2, 1.f, 2.f }, { 1, 3, 1.f, 0.f },
        { 1, 4, 0.5f, 1.5f },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qs_graph *g = graph();
        int64_t k = 5, c = 3, batch = 4;
        int64_t xs[] = { batch, k }, bs[] = { cases[i].transB ? c : k, cases[i].transB ? k : c };
        int x = input(g, "x", 2, xs);
        /* C: 0 none, 1 [N], 2 [1, N], 3 scalar [1], 4 [M, 1] (M = the batch used below) */
        int64_t cs[2] = { 1, c };
        int cid = -1;
        if (cases[i].cshape == 1) cid = init(g, "C", 1, &c, -1, 1);
        if (cases[i].cshape == 2) cid = init(g, "C", 2, cs, -1, 1);
        if (cases[i].cshape == 3) cid = init(g, "C", 1, cs, -1, 1);
        if (cases[i].cshape == 4) {
            int64_t m1[] = { batch, 1 };
            cid = init(g, "C", 2, m1, -1, 1);
        }
        int in[] = { x, init(g, "B", 2, bs, -1, 1), cid };
        qs_node *n = node(g, "Gemm", "fc", cid >= 0 ? 3 : 2, in, "h");
        qs_node_set_int(n, "transB", cases[i].transB);
        qs_node_set_float(n, "alpha", cases[i].alpha);
        qs_node_set_float(n, "beta", cases[i].beta);
        bn(g, "bn", qs_graph_value(g, "h"), c, "y");
        output(g, qs_graph_value(g, "y"));
        qs_graph *orig = qs_graph_clone(g);
        int nr;
        qs_bn_record *r = fold_and_compare(g, 2, xs, 1, &nr);
        assert_record(&r[0], orig, "bn", "fc", "y");
        const qs_node *fc = find_node(g, "fc");
        ASSERT_EQ(qs_node_float(fc, "alpha", 1), cases[i].alpha);
        qs_bn_records_free(r, nr);
        qs_graph_free(orig);
        qs_graph_free(g);
    }
}

TEST(matmul_bn_becomes_gemm)
{
    qs_graph *g = graph();
    int64_t xs[] = { 4, 6 }, bs[] = { 6, 3 }, c = 3;
    int x = input(g, "x", 2, xs);
    int in[] = { x, init(g, "B", 2, bs, -1, 1) };
    node(g, "MatMul", "mm", 2, in, "h");
    bn(g, "bn", qs_graph_value(g, "h"), c, "y");
    output(g, qs_graph_value(g, "y"));
    int nr;
    qs_bn_record *r = fold_and_compare(g, 2, xs, 1, &nr);
    const qs_node *mm = find_node(g, "mm");
    ASSERT_STR_EQ(mm->op, "Gemm");
    ASSERT_EQ(mm->nin, 3);
    qs_bn_records_free(r, nr);
    qs_graph_free(g);

    /* rank 3 input: BN's channel axis is not MatMul's column axis — left alone */
    g = graph();
    int64_t x3[] = { 2, 3, 6 };
    x = input(g, "x", 3, x3);
    int in3[] = { x, init(g, "B", 2, bs, -1, 1) };
    node(g, "MatMul", "mm", 2, in3, "h");
    bn(g, "bn", qs_graph_value(g, "h"), 3, "y");
    output(g, qs_graph_value(g, "y"));
    qs_err e = {0};
    ASSERT_EQ(qs_bnfold(g, &r, &nr, &e), 0);
    ASSERT_EQ(nr, 0);
    ASSERT_EQ(count_op(g, "BatchNormalization"), 1);
    qs_bn_records_free(r, nr);
    qs_graph_free(g);
}

TEST(not_folded_cases_still_run)
{
    /* (a) the conv output has another reader; (b) the conv output is a graph output; (c) the BN
     * follows a Relu; (d) the weights are not constant (a graph input). Each BN stays and the
     * graph computes what it computed before. */
    for (int t = 0; t < 4; t++) {
        qs_graph *g = graph();
        int64_t xs[] = { 2, 3, 5, 5 }, ws[] = { 4, 3, 3, 3 }, m = 4;
        int x = input(g, "x", 4, xs);
        int w = t == 3 ? input(g, "w", 4, ws) : init(g, "W", 4, ws, -1, 1);
        if (t == 3)
            g->values[w].shape[0] = 4, free(g->values[w].dim_param[0]), g->values[w].dim_param[0] = NULL;
        int in[] = { x, w };
        node(g, "Conv", "conv", 2, in, "h");
        int h = qs_graph_value(g, "h");
        if (t == 2)
            node(g, "Relu", "relu", 1, &h, "r"), h = qs_graph_value(g, "r");
        bn(g, "bn", h, m, "y");
        int y = qs_graph_value(g, "y");
        output(g, y);
        if (t == 0) {
            int ain[] = { y, h };
            node(g, "Add", "add", 2, ain, "s");
        }
        if (t == 0)
            output(g, qs_graph_value(g, "s"));
        if (t == 1)
            output(g, h);
        qs_bn_record *r;
        int nr;
        qs_err e = {0};
        if (t == 3) {
            /* a weight input: the executor needs it too, so only check that nothing folds */
            ASSERT_EQ(qs_bnfold(g, &r, &nr, &e), 0);
            ASSERT_EQ(nr, 0);
            ASSERT_EQ(count_op(g, "BatchNormalization"), 1);
        } else {
            r = fold_and_compare(g, 4, xs, 0, &nr);
            ASSERT_EQ(count_op(g, "BatchNormalization"), 1);
        }
        qs_bn_records_free(r, nr);
        qs_graph_free(g);
    }
}

TEST(shared_weights_are_copied)
{
    /* two convs share W and b, each with its own BN; a third conv reads W unfolded */
    qs_graph *g = graph();
    int64_t xs[] = { 2, 3, 5, 5 }, ws[] = { 4, 3, 3, 3 }, m = 4;
    int x = input(g, "x", 4, xs);
    int w = init(g, "W", 4, ws, -1, 1), b = init(g, "b", 1, &m, -1, 1);
    int in[] = { x, w, b };
    node(g, "Conv", "c1", 3, in, "h1");
    node(g, "Conv", "c2", 3, in, "h2");
    node(g, "Conv", "c3", 3, in, "h3");
    bn(g, "bn1", qs_graph_value(g, "h1"), m, "y1");
    bn(g, "bn2", qs_graph_value(g, "h2"), m, "y2");
    int s1[] = { qs_graph_value(g, "y1"), qs_graph_value(g, "y2") };
    node(g, "Add", "add", 2, s1, "s");
    int s2[] = { qs_graph_value(g, "s"), qs_graph_value(g, "h3") };
    node(g, "Add", "add2", 2, s2, "out");
    output(g, qs_graph_value(g, "out"));
    qs_tensor *w0 = qs_tensor_copy(g->values[w].init);
    int nr;
    qs_bn_record *r = fold_and_compare(g, 4, xs, 2, &nr);
    /* the original W is untouched (c3 still reads it) and c1, c2 got their own copies */
    ASSERT(!memcmp(g->values[w].init->data, w0->data, qs_nbytes(w0)));
    const qs_node *c1 = find_node(g, "c1"), *c2 = find_node(g, "c2"), *c3 = find_node(g, "c3");
    ASSERT_EQ(c3->in[1], w);
    ASSERT_EQ(c3->in[2], b);
    ASSERT(c1->in[1] != w && c2->in[1] != w && c1->in[1] != c2->in[1]);
    ASSERT(c1->in[2] != b && c2->in[2] != b && c1->in[2] != c2->in[2]);
    ASSERT(qs_bn_find(r, nr, "c1") && qs_bn_find(r, nr, "c2"));
    qs_tensor_free(w0);
    qs_bn_records_free(r, nr);
    qs_graph_free(g);
}

TEST(chained_bns_fold_into_one_layer)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 3, 5, 5 }, ws[] = { 4, 3, 3, 3 }, m = 4;
    int x = input(g, "x", 4, xs);
    int in[] = { x, init(g, "W", 4, ws, -1, 1) };
    node(g, "Conv", "conv", 2, in, "h");
    bn(g, "bn1", qs_graph_value(g, "h"), m, "y1");
    bn(g, "bn2", qs_graph_value(g, "y1"), m, "y2");
    output(g, qs_graph_value(g, "y2"));
    qs_graph *orig = qs_graph_clone(g);
    int nr;
    qs_bn_record *r = fold_and_compare(g, 4, xs, 2, &nr);
    ASSERT_EQ(g->nnodes, 1);
    assert_record(qs_bn_find(r, nr, "conv"), orig, "bn2", "conv", "y2");   /* the last one */
    qs_bn_records_free(r, nr);
    qs_graph_free(orig);
    qs_graph_free(g);
}

/* Moves value v's initializer into a Constant node producing v, as Paddle's exporter writes weights. */
static void to_constant(qs_graph *g, int v)
{
    int id = qs_graph_add_node(g, "Constant", g->values[v].name, 0, NULL, 1, &v);
    qs_node *n = &g->nodes[id];
    n->attr = calloc(1, sizeof *n->attr);
    n->attr[0] = (qs_attr){ .name = strdup("value"), .type = QS_ATTR_TENSOR, .t = g->values[v].init };
    n->nattr = 1;
    g->values[v].init = NULL;
}

/* Weights in Constant nodes: folding finds nothing to fold until qs_graph_promote_constants turns
 * them into initializers (names kept); then it folds as for initializers. A Constant that is a graph
 * output stays a node. */
TEST(constant_node_weights_promoted)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 3, 5, 5 }, ws[] = { 4, 3, 3, 3 }, m = 4, one = 1;
    int x = input(g, "x", 4, xs);
    int in[] = { x, init(g, "W", 4, ws, -1, 1), init(g, "b", 1, &m, -1, 1) };
    node(g, "Conv", "conv", 3, in, "h");
    bn(g, "bn", qs_graph_value(g, "h"), m, "y");
    output(g, qs_graph_value(g, "y"));
    int k = init(g, "k", 1, &one, 1, 2);
    output(g, k);
    const char *moved[] = { "W", "b", "bn_scale", "bn_B", "bn_mean", "bn_var", "k" };
    for (int i = 0; i < 7; i++)
        to_constant(g, qs_graph_value(g, moved[i]));
    qs_err e = {0};
    ASSERT_EQ(qs_graph_toposort(g, &e), 0);
    qs_graph *c = qs_graph_clone(g);
    qs_bn_record *r;
    int nr;
    ASSERT_EQ(qs_bnfold(c, &r, &nr, &e), 0);
    ASSERT_EQ(nr, 0);   /* the weight is computed, as far as folding can tell */
    qs_bn_records_free(r, nr);
    qs_graph_free(c);

    ASSERT_EQ(qs_graph_promote_constants(g), 6);
    ASSERT_EQ(count_op(g, "Constant"), 1);   /* k: a graph output */
    for (int i = 0; i < 6; i++) {
        int v = qs_graph_find_value(g, moved[i]);
        ASSERT(v >= 0 && g->values[v].init && g->values[v].producer == -1);
        ASSERT_EQ(g->values[v].dtype, QS_F32);
    }
    ASSERT_EQ(g->values[qs_graph_find_value(g, "W")].ndim, 4);
    ASSERT_EQ(g->values[qs_graph_find_value(g, "W")].shape[3], 3);
    ASSERT_EQ(qs_graph_toposort(g, &e), 0);
    r = fold_and_compare(g, 4, xs, 1, &nr);
    ASSERT_STR_EQ(r[0].layer, "conv");
    qs_bn_records_free(r, nr);
    qs_graph_free(g);
}

/* initializers no node reads (folding must not leave the BN parameters behind) */
static int unread_inits(const qs_graph *g)
{
    int k = 0;
    for (int v = 0; v < g->nvalues; v++) {
        int ids[1];
        k += g->values[v].init && !qs_graph_consumers(g, v, ids, 1) && !qs_graph_is_output(g, v);
    }
    return k;
}

/* A committed fixture model: folding removes every BN (and what only the BNs read) and keeps the
 * outputs. */
static void fold_fixture(const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", QD_SRCDIR, file);
    ASSERT_FIXTURE(path);
    qs_graph *g;
    qs_err e = {0};
    ASSERT_EQ(qs_onnx_load(path, &g, &e), 0);
    int bns = count_op(g, "BatchNormalization");
    ASSERT(bns > 0);
    const qs_value *iv = &g->values[g->inputs[0]];   /* (folding may move g->values) */
    int64_t xs[QS_MAX_DIMS];
    int ndim = iv->ndim;
    for (int d = 0; d < ndim; d++)
        xs[d] = iv->shape[d] > 0 ? iv->shape[d] : 2;   /* a symbolic batch: 2 */
    int n, unread = unread_inits(g);
    qs_bn_record *r = fold_and_compare(g, ndim, xs, bns, &n);
    ASSERT_EQ(count_op(g, "BatchNormalization"), 0);
    ASSERT_EQ(count_op(g, "Identity"), 0);   /* PyTorch's shared-initializer Identity went with its BN */
    ASSERT_EQ(unread_inits(g), unread);
    for (int i = 0; i < n; i++)
        ASSERT(find_node(g, r[i].layer));
    /* the folded graph exports and re-imports to the same function */
    void *buf;
    size_t len;
    qs_graph *back;
    ASSERT_EQ(qs_onnx_save_buffer(g, &buf, &len, &e), 0);
    ASSERT_EQ(qs_onnx_load_buffer(buf, len, NULL, &back, &e), 0);
    qs_tensor *in = opcheck_rand(ndim, xs, -2, 2), *a = run(g, in, 0), *b = run(back, in, 0);
    assert_same(a, b, 0);
    qs_tensor_free(in);
    qs_tensor_free(a);
    qs_tensor_free(b);
    free(buf);
    qs_graph_free(back);
    qs_bn_records_free(r, n);
    qs_graph_free(g);
}

TEST(fixture_resnet_bn) { fold_fixture("resnet_bn.onnx"); }
TEST(fixture_mobilenet_bn) { fold_fixture("mobilenet_bn.onnx"); }

TEST_MAIN(conv_bn_by_hand, conv_bn_plain_grouped_depthwise_nobias, conv_transpose_bn, gemm_bn,
          matmul_bn_becomes_gemm, not_folded_cases_still_run, shared_weights_are_copied,
          chained_bns_fold_into_one_layer, constant_node_weights_promoted, fixture_resnet_bn, fixture_mobilenet_bn)
