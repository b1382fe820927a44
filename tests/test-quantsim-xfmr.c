/* QuantSim placement for transformers (quantsim.h's rules, paper §5's BERT row) and config.overrides
 * (quant/overrides.h), on small graphs built by hand: the Erf GELU pattern is one activation,
 * attention's MatMul of two activations reads both on a grid, an embedding Gather's table is a
 * weight, and overrides change bits, symmetry, granularity or skip quantizers, refusing names the
 * model does not have. */
#include "tests/harness.h"

#include <jansson.h>

#include "quant/overrides.h"
#include "tests/qsim-graphs.h"

#define ASSERT_MSG(c, ...) do { if (!(c)) QT_FAIL_(__VA_ARGS__); } while (0)

static int scalar(qs_graph *g, const char *name, float v)
{
    return add_weight(g, name, 0, NULL, &v);
}

/* x [1,4] → MatMul(W1 [4,6]) + b1 → GELU as torch exports it below opset 20 → MatMul(W2 [6,3]) → y */
static qs_graph *mlp_gelu(void)
{
    qs_graph *g = new_graph(17);
    int64_t xs[2] = { 1, 4 }, w1[2] = { 4, 6 }, b1[1] = { 6 }, w2[2] = { 6, 3 };
    add_input(g, "x", 2, xs);
    add_weight(g, "W1", 2, w1, NULL);
    add_weight(g, "b1", 1, b1, NULL);
    add_weight(g, "W2", 2, w2, NULL);
    scalar(g, "sqrt2", 1.4142135f);
    scalar(g, "one", 1.f);
    scalar(g, "half", 0.5f);
    add_node(g, "MatMul", "fc1", "x,W1", "m1");
    add_node(g, "Add", "fc1_bias", "m1,b1", "h");
    add_node(g, "Div", "gelu_div", "h,sqrt2", "d");
    add_node(g, "Erf", "gelu_erf", "d", "e");
    add_node(g, "Add", "gelu_add", "e,one", "a");
    add_node(g, "Mul", "gelu_mul", "h,a", "p");
    add_node(g, "Mul", "gelu_half", "p,half", "gelu");
    add_node(g, "MatMul", "fc2", "gelu,W2", "y");
    add_output(g, "y");
    return g;
}

TEST(erf_gelu_is_one_activation)
{
    qs_graph *g = mlp_gelu();
    qs_quantsim *sim = make_sim(g, NULL);
    /* x, W1, the group fc1 → bias → GELU quantized at its end only, W2, y */
    ASSERT_EQ(sim->nq, 5);
    ASSERT_STR_EQ(get_q(sim, "gelu")->layer, "fc1");
    const char *inside[] = { "m1", "h", "d", "e", "a", "p" };
    for (int k = 0; k < 6; k++)
        ASSERT_EQ(qs_quantsim_find(sim, inside[k]), -1);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* the Gelu op (opset 20) ends its layer's group as Relu does */
TEST(gelu_op_joins_the_layer)
{
    qs_graph *g = new_graph(20);
    int64_t xs[2] = { 1, 4 }, ws[2] = { 4, 3 }, bs[1] = { 3 };
    add_input(g, "x", 2, xs);
    add_weight(g, "W", 2, ws, NULL);
    add_weight(g, "b", 1, bs, NULL);
    add_node(g, "MatMul", "fc", "x,W", "m");
    add_node(g, "Add", "fc_bias", "m,b", "h");
    add_node(g, "Gelu", "gelu", "h", "y");
    add_output(g, "y");
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(sim->nq, 3);   /* x, W, y */
    ASSERT_EQ(qs_quantsim_find(sim, "h"), -1);
    ASSERT_STR_EQ(get_q(sim, "y")->layer, "fc");
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* the same pattern read from a node outside any layer group is a group of its own */
TEST(erf_gelu_after_other_op)
{
    qs_graph *g = new_graph(17);
    int64_t xs[2] = { 1, 4 };
    add_input(g, "x", 2, xs);
    scalar(g, "sqrt2", 1.4142135f);
    scalar(g, "one", 1.f);
    scalar(g, "half", 0.5f);
    add_node(g, "Softmax", "sm", "x", "h");
    add_node(g, "Div", "gelu_div", "h,sqrt2", "d");
    add_node(g, "Erf", "gelu_erf", "d", "e");
    add_node(g, "Add", "gelu_add", "e,one", "a");
    add_node(g, "Mul", "gelu_mul", "a,h", "p");
    add_node(g, "Mul", "gelu_half", "p,half", "y");
    add_output(g, "y");
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT_EQ(sim->nq, 3);   /* x, h (Softmax: unsigned), y */
    ASSERT_EQ(get_q(sim, "h")->grid.qmin, 0);
    ASSERT_STR_EQ(get_q(sim, "y")->layer, "gelu_div");
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* a constant that is not 1/√2's partner breaks the pattern: every op is quantized as before */
TEST(erf_lookalike_is_not_gelu)
{
    qs_graph *g = mlp_gelu();
    qs_f32(g->values[qs_graph_find_value(g, "sqrt2")].init)[0] = 2.f;
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT(qs_quantsim_find(sim, "h") >= 0);
    ASSERT(qs_quantsim_find(sim, "e") >= 0);
    ASSERT(qs_quantsim_find(sim, "gelu") >= 0);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* x [1,4] → MatMul(W [4,3]) + b → HardSwish as Paddle exports it: Add(3) → Clip(0, 6) → Mul(h, ·)
 * → Div(6) (clip bounds as inputs when clip_inputs, else attributes as in opsets 6–10) → y */
static qs_graph *mlp_split_hardswish(int clip_inputs, float three)
{
    qs_graph *g = new_graph(clip_inputs ? 13 : 7);   /* Clip 6: bounds as attributes */
    int64_t xs[2] = { 1, 4 }, ws[2] = { 4, 3 }, bs[1] = { 3 };
    add_input(g, "x", 2, xs);
    add_weight(g, "W", 2, ws, NULL);
    add_weight(g, "b", 1, bs, NULL);
    scalar(g, "three", three);
    scalar(g, "zero", 0.f);
    scalar(g, "six", 6.f);
    add_node(g, "MatMul", "fc", "x,W", "m");
    add_node(g, "Add", "fc_bias", "m,b", "h");
    add_node(g, "Add", "hs_add", "h,three", "a");
    if (clip_inputs) {
        add_node(g, "Clip", "hs_clip", "a,zero,six", "c");
    } else {
        qs_node *n = add_node(g, "Clip", "hs_clip", "a", "c");
        qs_node_set_float(n, "min", 0.f);
        qs_node_set_float(n, "max", 6.f);
    }
    add_node(g, "Mul", "hs_mul", "h,c", "p");
    add_node(g, "Div", "hs_div", "p,six", "y");
    add_output(g, "y");
    return g;
}

/* HardSwish written as four nodes is one activation quantized at its end, as the HardSwish op is */
TEST(split_hardswish_is_one_activation)
{
    for (int clip_inputs = 0; clip_inputs <= 1; clip_inputs++) {
        qs_graph *g = mlp_split_hardswish(clip_inputs, 3.f);
        qs_quantsim *sim = make_sim(g, NULL);
        ASSERT_EQ(sim->nq, 3);   /* x, W, y */
        ASSERT_STR_EQ(get_q(sim, "y")->layer, "fc");
        const char *inside[] = { "m", "h", "a", "c", "p" };
        for (int k = 0; k < 5; k++)
            ASSERT_EQ(qs_quantsim_find(sim, inside[k]), -1);
        qs_quantsim_free(sim);
        qs_graph_free(g);
    }
    /* Add(2) instead of Add(3) is not HardSwish: each op keeps its quantizer */
    qs_graph *g = mlp_split_hardswish(1, 2.f);
    qs_quantsim *sim = make_sim(g, NULL);
    ASSERT(qs_quantsim_find(sim, "a") >= 0 || qs_quantsim_find(sim, "c") >= 0);
    ASSERT(qs_quantsim_find(sim, "p") >= 0);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* q [1,2,3], k [1,3,2] from layers; Q·Kᵀ → Softmax → ·V where V comes straight from the model input
 * through a Transpose only... and an excluded producer: its input gets its own quantizer */
TEST(attention_matmul_inputs_on_a_grid)
{
    qs_graph *g = new_graph(17);
    int64_t xs[3] = { 1, 2, 3 }, ws[2] = { 3, 3 }, perm[3] = { 0, 2, 1 };
    add_input(g, "x", 3, xs);
    add_weight(g, "Wq", 2, ws, NULL);
    add_weight(g, "Wk", 2, ws, NULL);
    add_node(g, "MatMul", "q_proj", "x,Wq", "q");
    add_node(g, "MatMul", "k_proj", "x,Wk", "k");
    qs_node_set_ints(add_node(g, "Transpose", "kt", "k", "kT"), "perm", 3, perm);
    add_node(g, "MatMul", "scores", "q,kT", "s");
    add_node(g, "Softmax", "softmax", "s", "p");
    add_node(g, "Tanh", "v_act", "x", "v");
    add_node(g, "MatMul", "context", "p,v", "y");
    add_output(g, "y");
    char *ex[] = { "v_act" };
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.exclude = ex;
    cfg.nexclude = 1;
    qs_quantsim *sim = make_sim(g, &cfg);
    ASSERT(qs_quantsim_find(sim, "q") >= 0);
    ASSERT(qs_quantsim_find(sim, "k") >= 0);    /* kT carries k's grid */
    ASSERT_EQ(qs_quantsim_find(sim, "kT"), -1);
    ASSERT(qs_quantsim_find(sim, "s") >= 0);
    const qs_quantizer *p = get_q(sim, "p");
    ASSERT_EQ(p->grid.qmin, 0);                 /* Softmax: unsigned */
    ASSERT_STR_EQ(get_q(sim, "v")->layer, "context");   /* excluded producer: quantized for the MatMul */
    ASSERT(qs_quantsim_find(sim, "y") >= 0);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* ids [1,3] int64 → Gather(table [5,4]) + pos → y: the table is a weight, per channel on axis 1 */
static qs_graph *embedding(void)
{
    qs_graph *g = new_graph(17);
    int64_t is[2] = { 1, 3 }, ts[2] = { 5, 4 }, ps[2] = { 3, 4 };
    int v = add_input(g, "ids", 2, is);
    g->values[v].dtype = QS_I64;
    add_weight(g, "table", 2, ts, NULL);
    add_weight(g, "pos", 2, ps, NULL);
    add_node(g, "Gather", "tok_embed", "table,ids", "t");
    add_node(g, "Add", "add_pos", "t,pos", "y");
    add_output(g, "y");
    return g;
}

TEST(embedding_gather_weight)
{
    qs_graph *g = embedding();
    qs_quantsim *sim = make_sim(g, NULL);
    const qs_quantizer *w = get_q(sim, "table");
    ASSERT_EQ(w->kind, QS_Q_WEIGHT);
    ASSERT_EQ(w->axis, 1);
    ASSERT_EQ(w->nch, 4);
    ASSERT_EQ(qs_quantsim_find(sim, "ids"), -1);   /* integer input */
    ASSERT_EQ(qs_quantsim_find(sim, "t"), -1);     /* a gathered weight: the Add is quantized */
    ASSERT(qs_quantsim_find(sim, "y") >= 0);
    ASSERT_EQ(sim->nq, 2);
    qs_quantsim_free(sim);
    /* per tensor when asked */
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.per_channel = 0;
    sim = make_sim(g, &cfg);
    ASSERT_EQ(get_q(sim, "table")->axis, -1);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

static qs_quantsim *sim_with(const qs_graph *g, const char *json, qs_err *e)
{
    qs_qoverrides ov;
    if (qs_overrides_parse(json, &ov, e) < 0)
        return NULL;
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.overrides = &ov;
    qs_quantsim *sim = qs_quantsim_new(g, &cfg, e);
    qs_overrides_free(&ov);
    return sim;
}

TEST(overrides_tensor_and_op)
{
    qs_graph *g = mlp_gelu();
    qs_err e = { 0 };
    qs_quantsim *sim = sim_with(g, "{\"tensors\": {\"gelu\": {\"bits\": 16}, \"W2\": {\"bits\": 4, \"per_channel\": "
                                   "false}, \"x\": {\"skip\": true}}, \"ops\": {\"MatMul\": {\"weight_bits\": 6, "
                                   "\"symmetric\": true}}}", &e);
    ASSERT_MSG(sim != NULL, "%s", e.msg);
    const qs_quantizer *a = get_q(sim, "gelu"), *w1 = get_q(sim, "W1"), *w2 = get_q(sim, "W2"), *y = get_q(sim, "y");
    ASSERT_EQ(a->grid.bits, 16);
    ASSERT_EQ(a->grid.qmin, 0);             /* the tensor entry keeps the config's asymmetric grid */
    ASSERT_EQ(w1->grid.bits, 6);            /* the op entry's weight_bits */
    ASSERT_EQ(w1->axis, 1);
    ASSERT_EQ(w2->grid.bits, 4);            /* the tensor entry wins over the op entry */
    ASSERT_EQ(w2->axis, -1);
    ASSERT_EQ(y->grid.bits, 8);             /* MatMul's output: symmetric, signed */
    ASSERT_EQ(y->symmetric, 1);
    ASSERT_EQ(y->grid.qmin, -128);
    ASSERT_EQ(qs_quantsim_find(sim, "x"), -1);   /* skipped */
    ASSERT_EQ(count_ops(sim->g, "FakeQuant"), sim->nq);
    qs_quantsim_free(sim);
    /* an op entry's skip keeps its nodes in floating point */
    sim = sim_with(g, "{\"ops\": {\"MatMul\": {\"skip\": true}}}", &e);
    ASSERT_MSG(sim != NULL, "%s", e.msg);
    ASSERT_EQ(qs_quantsim_find(sim, "W1"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "gelu"), -1);
    ASSERT_EQ(qs_quantsim_find(sim, "W2"), -1);
    ASSERT_EQ(sim->nq, 0);   /* x: every reader is in floating point */
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(overrides_refused)
{
    qs_graph *g = mlp_gelu();
    static const struct { const char *json, *msg; } bad[] = {
        { "{\"tensors\": {\"nope\": {\"bits\": 16}}}", "config.overrides.tensors.nope: the model has no tensor named 'nope'" },
        { "{\"ops\": {\"Conv\": {\"bits\": 16}}}", "config.overrides.ops.Conv: the model has no Conv node" },
        { "{\"tensors\": {\"x\": {\"bitz\": 16}}}", "unknown field 'config.overrides.tensors.x.bitz'" },
        { "{\"tensors\": {\"x\": {\"bits\": 17}}}", "config.overrides.tensors.x.bits: must be an integer between 2 and 16" },
        { "{\"tensors\": {\"x\": {\"skip\": 1}}}", "config.overrides.tensors.x.skip: must be true or false" },
        { "{\"tensors\": {\"x\": {\"weight_bits\": 4}}}", "unknown field 'config.overrides.tensors.x.weight_bits'" },
        { "{\"x\": {\"bits\": 4}}", "unknown field 'config.overrides.x'" },
        { "{\"tensors\": []}", "config.overrides.tensors: must be an object" },
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        qs_err e = { 0 };
        qs_quantsim *sim = sim_with(g, bad[k].json, &e);
        ASSERT(sim == NULL);
        ASSERT_MSG(strstr(e.msg, bad[k].msg) != NULL, "%s: got '%s'", bad[k].json, e.msg);
    }
    qs_graph_free(g);
}

TEST_MAIN(erf_gelu_is_one_activation, gelu_op_joins_the_layer, erf_gelu_after_other_op, erf_lookalike_is_not_gelu,
          split_hardswish_is_one_activation,
          attention_matmul_inputs_on_a_grid, embedding_gather_weight, overrides_tensor_and_op, overrides_refused)
