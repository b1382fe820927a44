/* Input shapes (engine/shapes.c): a model input [N, C, H, W] with symbolic H and W runs once the
 * data or --input-shape give them sizes, at different sizes in different plans, with outputs equal to
 * a direct reference computation; contradictions name the input, dim, expected and got; the
 * declaration (and so an export) stays symbolic; a clone keeps the sizes. */
#include "harness.h"

#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/onnx.h"
#include "engine/runner.h"
#include "engine/shapes.h"

/* y = Conv(x, W) with a 3x3 kernel of ones, pads 1, one input and one output channel:
 * x [N, 1, "H", "W"] (or a fixed H when fixed_h > 0). */
static qs_graph *model(int64_t fixed_h)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = qs_graph_value(g, "x"), w = qs_graph_value(g, "w"), y = qs_graph_value(g, "y");
    qs_value *xv = &g->values[x];
    xv->dtype = QS_F32;
    xv->ndim = 4;
    int64_t decl[4] = { -1, 1, fixed_h > 0 ? fixed_h : -1, -1 };
    memcpy(xv->shape, decl, sizeof decl);
    xv->dim_param[0] = strdup("N");
    if (fixed_h <= 0)
        xv->dim_param[2] = strdup("H");
    xv->dim_param[3] = strdup("W");
    qs_tensor *wt = qs_tensor_new(QS_F32, 4, (int64_t[]){ 1, 1, 3, 3 });
    for (int i = 0; i < 9; i++)
        qs_f32(wt)[i] = 1;
    qs_graph_set_init_steal(g, w, wt);
    int n = qs_graph_add_node(g, "Conv", "conv", 2, (int[]){ x, w }, 1, &y);
    qs_node_set_ints(&g->nodes[n], "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    g->inputs = malloc(sizeof *g->inputs);
    g->inputs[g->ninputs++] = x;
    g->outputs = malloc(sizeof *g->outputs);
    g->outputs[g->noutputs++] = y;
    qs_err e = {0};
    ASSERT_EQ(qs_graph_toposort(g, &e), 0);
    return g;
}

static qs_tensor *data(int64_t n, int64_t h, int64_t w)
{
    qs_tensor *t = qs_tensor_new(QS_F32, 4, (int64_t[]){ n, 1, h, w });
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = (float)((i * 7) % 5) - 2;
    return t;
}

/* the 3x3 box sum with zero padding, by hand */
static void check_box_sum(const qs_tensor *x, const qs_tensor *y)
{
    int64_t n = x->shape[0], h = x->shape[2], w = x->shape[3];
    ASSERT_EQ(y->shape[2], h);
    ASSERT_EQ(y->shape[3], w);
    for (int64_t s = 0; s < n; s++)
        for (int64_t i = 0; i < h; i++)
            for (int64_t j = 0; j < w; j++) {
                float sum = 0;
                for (int64_t a = i - 1; a <= i + 1; a++)
                    for (int64_t b = j - 1; b <= j + 1; b++)
                        if (a >= 0 && a < h && b >= 0 && b < w)
                            sum += qs_f32(x)[(s * h + a) * w + b];
                ASSERT_EQ(qs_f32(y)[(s * h + i) * w + j], sum);
            }
}

static void run_and_check(qs_graph *g, const qs_tensor *x, int64_t batch)
{
    qs_err e = {0};
    qs_runner *r = qs_runner_new(g, batch, &e);
    if (!r)
        QT_FAIL_("runner: %s", e.msg);
    qs_tensor *y[1];
    ASSERT_EQ(qs_runner_run(r, (const qs_tensor *const[]){ x }, y, NULL, NULL, NULL, &e), 0);
    check_box_sum(x, y[0]);
    qs_tensor_free(y[0]);
    qs_runner_free(r);
}

TEST(unbound_dims_are_named)
{
    qs_graph *g = model(0);
    char msg[256];
    ASSERT_EQ(qs_graph_unbound_dims(g, msg, sizeof msg), 2);
    ASSERT_STR_CONTAINS(msg, "'x' dim 2 (H)");
    qs_err e = {0};
    ASSERT(!qs_runner_new(g, 4, &e));
    ASSERT_STR_CONTAINS(e.msg, "graph input 'x' has a symbolic size in dim 2 ('H')");
    ASSERT_STR_CONTAINS(e.msg, "--input-shape x=");
    qs_graph_free(g);
}

TEST(data_gives_the_sizes_at_any_batch)
{
    qs_graph *g = model(0);
    qs_tensor *x = data(5, 4, 7);
    qs_err e = {0};
    ASSERT_EQ(qs_graph_bind_data(g, 0, x, "calibration", &e), 0);
    ASSERT_EQ(qs_graph_unbound_dims(g, NULL, 0), 0);
    run_and_check(g, x, 2);   /* a partial last batch: a second plan at the same sizes */
    run_and_check(g, x, 8);
    /* the same data again agrees; other sizes do not */
    ASSERT_EQ(qs_graph_bind_data(g, 0, x, "validation", &e), 0);
    qs_tensor *wider = data(2, 4, 9);
    ASSERT_EQ(qs_graph_bind_data(g, 0, wider, "validation", &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "validation data: input 'x' dim 3 ('W'): got 9, but it already runs at 7");
    /* a clone runs at the same sizes; a new graph does not */
    qs_graph *c = qs_graph_clone(g);
    run_and_check(c, x, 3);
    qs_graph_free(c);
    qs_tensor_free(wider);
    qs_tensor_free(x);
    qs_graph_free(g);
}

TEST(declaration_and_export_stay_symbolic)
{
    qs_graph *g = model(0);
    qs_err e = {0};
    ASSERT_EQ(qs_graph_bind_text(g, "x=1x1x6x10", &e), 0);
    const qs_value *v = &g->values[g->inputs[0]];
    ASSERT_EQ(v->shape[2], -1);
    ASSERT_EQ(v->shape[3], -1);
    void *buf;
    size_t len;
    ASSERT_EQ(qs_onnx_save_buffer(g, &buf, &len, &e), 0);
    qs_graph *back;
    ASSERT_EQ(qs_onnx_load_buffer(buf, len, NULL, &back, &e), 0);
    const qs_value *bv = &back->values[back->inputs[0]];
    ASSERT_EQ(bv->shape[2], -1);
    ASSERT_STR_EQ(bv->dim_param[2], "H");
    ASSERT_STR_EQ(bv->dim_param[3], "W");
    ASSERT_EQ(qs_graph_unbound_dims(back, NULL, 0), 2);
    /* the reloaded model runs at two other widths */
    for (int64_t w = 3; w <= 12; w += 9) {
        qs_graph *c = qs_graph_clone(back);
        qs_tensor *x = data(3, 5, w);
        ASSERT_EQ(qs_graph_bind_data(c, 0, x, "test", &e), 0);
        run_and_check(c, x, 2);
        qs_tensor_free(x);
        qs_graph_free(c);
    }
    json_t *j = qs_graph_input_shapes_json(g);
    char *t = json_dumps(j, JSON_COMPACT);
    ASSERT_STR_EQ(t, "{\"x\":[1,1,6,10]}");
    free(t);
    json_decref(j);
    free(buf);
    qs_graph_free(back);
    qs_graph_free(g);
}

TEST(contradictions_name_input_dim_expected_and_got)
{
    qs_graph *g = model(4);   /* x [N, 1, 4, W] */
    qs_err e = {0};
    qs_tensor *x = data(2, 5, 7);
    ASSERT_EQ(qs_graph_bind_data(g, 0, x, "calibration", &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "calibration data for input 'x' has shape [2, 1, 5, 7]; expected [N, 1, 4, W]: dim 2 "
                               "must be 4, got 5");
    qs_tensor *flat = qs_tensor_new(QS_F32, 2, (int64_t[]){ 2, 20 });
    ASSERT_EQ(qs_graph_bind_data(g, 0, flat, "calibration", &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "has shape [2, 20]; expected [N, 1, 4, W] (4 dims");
    ASSERT_EQ(qs_graph_bind_text(g, "y=1x1x4x4", &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "the model has no such input (its inputs: x)");
    ASSERT_EQ(qs_graph_bind_text(g, "x=1x1x4", &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "input 'x' has 4 dims");
    const char *bad[] = { "x", "=1x2", "x=", "x=1x", "x=1xx2", "x=0x1x4x4", "x=1x1x4x4x1x1x1x1x1", "x=a" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ASSERT_EQ(qs_graph_bind_text(g, bad[i], &e), QS_EINVAL);
        ASSERT_STR_CONTAINS(e.msg, "expected NAME=D0xD1x");
    }
    /* the batch of a symbolic leading dim is any size; the rest binds */
    ASSERT_EQ(qs_graph_bind_text(g, "x=64x1x4x6", &e), 0);
    qs_tensor *ok = data(3, 4, 6);
    run_and_check(g, ok, 2);
    qs_tensor_free(ok);
    qs_tensor_free(flat);
    qs_tensor_free(x);
    qs_graph_free(g);
}

TEST(config_input_shapes)
{
    qs_qconfig c;
    qs_err e = {0};
    ASSERT_EQ(qs_qconfig_parse_text("{\"input_shapes\": {\"x\": [1, 1, 3, 5]}}", &c, &e), 0);
    ASSERT_EQ(c.ninput_shapes, 1);
    qs_graph *g = model(0);
    ASSERT_EQ(qs_graph_bind_config(g, &c, &e), 0);
    ASSERT_EQ(g->values[g->inputs[0]].run_dim[3], 5);
    qs_qconfig_free(&c);
    ASSERT_EQ(qs_qconfig_parse_text("{\"input_shapes\": {\"x\": [1, 2, 3, 5]}}", &c, &e), 0);
    ASSERT_EQ(qs_graph_bind_config(g, &c, &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "config.input_shapes.x: ");
    ASSERT_STR_CONTAINS(e.msg, "dim 1: expected 1");
    qs_qconfig_free(&c);
    ASSERT_EQ(qs_qconfig_parse_text("{\"input_shapes\": {\"x\": [1, 0]}}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "config.input_shapes.x[1]: must be a size");
    qs_qconfig_free(&c);
    ASSERT_EQ(qs_qconfig_parse_text("{\"input_shapes\": {\"x\": 3}}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "config.input_shapes.x: must be a list");
    qs_qconfig_free(&c);
    qs_graph_free(g);
}

TEST_MAIN(unbound_dims_are_named, data_gives_the_sizes_at_any_batch, declaration_and_export_stay_symbolic,
          contradictions_name_input_dim_expected_and_got, config_input_shapes)
