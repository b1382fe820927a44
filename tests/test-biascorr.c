/* Bias correction (paper §3.3): layers whose weight quantization has a planted systematic error
 * (every weight rounds the same way by a known amount) — after empirical correction the mean
 * output error per channel is ~0, layer after layer; the analytical correction against numbers
 * worked out by hand (and, for ReLU6, by numerical integration), and against the empirical one on
 * Gaussian data; a layer without bias; bad input; and the MobileNetV2-style fixture at 4 bits. */
#include "tests/fixture.h"
#include "tests/opcheck.h"
#include "engine/data.h"
#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/onnx.h"
#include "engine/pipeline_util.h"
#include "engine/quant/biascorr.h"
#include "engine/quant/bnfold.h"
#include "engine/quant/export.h"
#include "engine/quant/quantsim.h"
#include "tests/qsim-util.h"

static int init_t(qs_graph *g, const char *name, qs_tensor *t)
{
    int id = qs_graph_value(g, name);
    qs_graph_set_init_steal(g, id, t);
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
    g->inputs = realloc(g->inputs, (g->ninputs + 1) * sizeof *g->inputs);
    g->inputs[g->ninputs++] = id;
    return id;
}

static void output(qs_graph *g, const char *name)
{
    g->outputs = realloc(g->outputs, (g->noutputs + 1) * sizeof *g->outputs);
    g->outputs[g->noutputs++] = qs_graph_value(g, name);
}

static qs_node *node(qs_graph *g, const char *op, const char *name, int nin, const int *in, const char *out)
{
    int o = qs_graph_value(g, out);
    int id = qs_graph_add_node(g, op, name, nin, in, 1, &o);
    return &g->nodes[id];
}

static int val(qs_graph *g, const char *name) { return qs_graph_value(g, name); }

static qs_graph *graph(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    return g;
}

/* A weight of integers k·step plus a planted offset per output channel (|offset| < step/2, so
 * round-to-nearest on a grid of that step removes exactly the offset: ε = −offset). */
static qs_tensor *planted(int ndim, const int64_t *shape, float step, const float *offset, int out_axis_last)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    int64_t nout = out_axis_last ? shape[ndim - 1] : shape[0], per = qs_numel(t) / nout;
    for (int64_t i = 0; i < qs_numel(t); i++) {
        int64_t m = out_axis_last ? i % nout : i / per;
        qs_f32(t)[i] = (float)((int)opcheck_uniform(-5, 6)) * step + offset[m];
    }
    return t;
}

/* the weight quantizer of layer `name`, every channel on the grid k·step */
static int set_weight_grid(qs_quantsim *sim, const char *name, float step)
{
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_WEIGHT && !strcmp(sim->q[i].layer, name)) {
            qs_quantsim_set(sim, i, -1, step, 0);
            return i;
        }
    QT_FAIL_("no weight quantizer for %s", name);
}

static qs_quantsim *sim_of(const qs_graph *g)
{
    qs_err e = {0};
    qs_qsim_config cfg = qs_qsim_config_default();
    qs_quantsim *sim = qs_quantsim_new(g, &cfg, &e);
    if (!sim)
        QT_FAIL_("quantsim: %s", e.msg);
    return sim;
}

/* Calibration data in a temp .npy, opened against g. */
typedef struct tmpdata { char dir[64], path[128]; qs_pl_data d; } tmpdata;

static void data_open(tmpdata *t, const qs_tensor *x, qs_graph *g)
{
    qs_err e = {0};
    strcpy(t->dir, "/tmp/qs-biascorr-XXXXXX");
    ASSERT(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/x.npy", t->dir);
    ASSERT_EQ(qs_npy_save(t->path, x, &e), 0);
    if (qs_pl_open_inputs(t->path, "calibration", g, &t->d, &e) < 0)
        QT_FAIL_("%s", e.msg);
}

static void data_close(tmpdata *t)
{
    qs_pl_close(&t->d);
    unlink(t->path);
    rmdir(t->dir);
}

/* Per-channel mean (axis 1) of node `name`'s output over x, run as one batch. */
typedef struct mean_obs { int node; int64_t c; double *sum; int64_t cnt; } mean_obs;

static void mean_cb(void *ud, int node, qs_tensor *const *out, int nout)
{
    mean_obs *m = ud;
    if (node != m->node || nout < 1)
        return;
    const qs_tensor *y = out[0];
    int64_t per = qs_numel(y) / (y->shape[0] * y->shape[1]);
    m->c = y->shape[1];
    m->sum = calloc(m->c, sizeof *m->sum);
    for (int64_t i = 0; i < qs_numel(y); i++)
        m->sum[(i / per) % m->c] += qs_f32(y)[i];
    m->cnt = y->shape[0] * per;
}

static double *node_means(qs_graph *g, const char *name, const qs_tensor *x, int64_t *c)
{
    qs_err e = {0};
    mean_obs m = { .node = -1 };
    for (int i = 0; i < g->nnodes; i++)
        if (!strcmp(g->nodes[i].name, name))
            m.node = i;
    ASSERT(m.node >= 0);
    qs_exec *ex = qs_exec_new(g, QS_EXEC_INFER, &e);
    qs_exec_set_observer(ex, mean_cb, &m);
    if (qs_exec_plan(ex, x->shape[0], &e) < 0 || qs_exec_set_input(ex, 0, x, &e) < 0 || qs_exec_forward(ex, &e) < 0)
        QT_FAIL_("running: %s", e.msg);
    qs_exec_free(ex);
    ASSERT(m.sum);
    for (int64_t k = 0; k < m.c; k++)
        m.sum[k] /= (double)m.cnt;
    *c = m.c;
    return m.sum;
}

/* max over channels of |E[y_q] − E[y_fp]| at node `name`, the sim running with weights quantized
 * only (as bias correction measured it) */
static double mean_error(qs_graph *fp, qs_quantsim *sim, const char *name, const qs_tensor *x, int print)
{
    qs_quantsim_bypass_kind(sim, -1, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_WEIGHT, 0);
    int64_t c1, c2;
    double *a = node_means(fp, name, x, &c1), *b = node_means(sim->g, name, x, &c2), worst = 0;
    ASSERT_EQ(c1, c2);
    for (int64_t k = 0; k < c1; k++) {
        if (print)
            printf("#   %s channel %lld: E[y_q] - E[y_fp] = %+.6f\n", name, (long long)k, b[k] - a[k]);
        worst = fmax(worst, fabs(b[k] - a[k]));
    }
    free(a);
    free(b);
    qs_quantsim_bypass_kind(sim, -1, 0);
    return worst;
}

/* batch: 7 gives batches that do not divide the sample count; the whole data in one batch makes
 * the correction exact on it (each batch corrects the layers after a layer with its own mean error,
 * so several batches only approximate the one correction the bias holds in the end) */
static qs_biascorr_report *empirical_b(qs_quantsim *sim, tmpdata *t, int64_t batch)
{
    qs_err e = {0};
    qs_biascorr_report *r = NULL;
    qs_biascorr_config cfg = qs_biascorr_config_default();
    cfg.batch = batch;
    if (qs_biascorr_empirical(sim, &t->d, &cfg, NULL, &r, &e) < 0)
        QT_FAIL_("empirical bias correction: %s", e.msg);
    ASSERT(r);
    return r;
}

static qs_biascorr_report *empirical(qs_quantsim *sim, tmpdata *t) { return empirical_b(sim, t, 7); }

TEST(empirical_removes_planted_gemm_error)
{
    /* x ∈ [0, 1]^8, W [8, 4]: channel m's weights all round by −offset[m], so
     * E[y_q] − E[y_fp] = −offset[m] · Σ_k E[x_k] */
    qs_graph *g = graph();
    int64_t xs[] = { 100, 8 }, ws[] = { 8, 4 }, four = 4;
    input(g, "x", 2, xs);
    float off[] = { 0.04f, -0.05f, 0.03f, 0.f };
    int in[] = { val(g, "x"), init_t(g, "W", planted(2, ws, 0.125f, off, 1)),
                 init_t(g, "b", opcheck_rand(1, &four, -1, 1)) };
    node(g, "Gemm", "fc", 3, in, "y");
    output(g, "y");
    qs_quantsim *sim = sim_of(g);
    set_weight_grid(sim, "fc", 0.125f);
    qs_tensor *x = opcheck_rand(2, xs, 0, 1);
    double sx = 0;
    for (int64_t i = 0; i < qs_numel(x); i++)
        sx += qs_f32(x)[i];
    sx /= 100;   /* Σ_k E[x_k] */
    double before = mean_error(g, sim, "fc", x, 0);
    ASSERT_CLOSE(before, 0.05 * sx, 1e-4, 0);   /* the planted error is there */
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_biascorr_report *r = empirical(sim, &t);
    ASSERT_EQ(r->nlayers, 1);
    ASSERT_EQ(r->passes, 2);
    ASSERT_EQ(r->samples, 100);
    for (int m = 0; m < 4; m++)
        ASSERT_CLOSE(r->layers[0].correction[m], -off[m] * sx, 1e-4, 1e-6);
    double after = mean_error(g, sim, "fc", x, 0);
    printf("# planted Gemm error: max |mean error| %.4g -> %.2g\n", before, after);
    ASSERT(after < 1e-5);
    json_t *j = qs_biascorr_report_json(r);
    ASSERT_STR_EQ(json_string_value(json_object_get(j, "method")), "empirical");
    ASSERT_EQ(json_array_size(json_object_get(json_array_get(json_object_get(j, "layers"), 0), "correction")), 4);
    json_decref(j);
    qs_biascorr_report_free(r);
    data_close(&t);
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* Writes layer `name`'s weight onto its quantizer's grid in the initializer itself, as GPTQ and
 * AdaRound leave their rounded weights (the weight FakeQuant then changes nothing). */
static void round_in_place(qs_quantsim *sim, int wq)
{
    qs_tensor *w = sim->g->values[sim->q[wq].value].init, *r = qs_tensor_copy(w);
    qs_fake_quant(w, r, sim->q[wq].axis, qs_quantsim_scales(sim, wq), qs_quantsim_zeros(sim, wq), sim->q[wq].grid);
    memcpy(qs_f32(w), qs_f32(r), (size_t)qs_numel(w) * sizeof(float));
    qs_tensor_free(r);
}

TEST(corrections_after_rounding_in_place_use_the_kept_fp32_weights)
{
    /* the planted Gemm of the test above, its weights rounded in the initializer: ε = −offset still,
     * but only the FP32 weights kept aside say so; without them bias correction sees no error */
    int64_t xs[] = { 100, 8 }, ws[] = { 8, 4 }, four = 4;
    float off[] = { 0.04f, -0.05f, 0.03f, 0.f };
    qs_tensor *x = opcheck_rand(2, xs, 0, 1), *w = planted(2, ws, 0.125f, off, 1);
    double sx = 0;
    for (int64_t i = 0; i < qs_numel(x); i++)
        sx += qs_f32(x)[i];
    sx /= 100;   /* Σ_k E[x_k] */
    for (int keep = 0; keep < 2; keep++) {
        qs_graph *g = graph();
        input(g, "x", 2, xs);
        int in[] = { val(g, "x"), init_t(g, "W", qs_tensor_copy(w)), init_t(g, "b", opcheck_rand(1, &four, -1, 1)) };
        node(g, "Gemm", "fc", 3, in, "y");
        output(g, "y");
        qs_quantsim *sim = sim_of(g);
        qs_err e = {0};
        int wq = set_weight_grid(sim, "fc", 0.125f);
        if (keep)
            ASSERT_EQ(qs_quantsim_keep_fp32_weights(sim, &e), 0);
        round_in_place(sim, wq);
        ASSERT_CLOSE(qs_f32(qs_quantsim_fp32_weight(sim, wq))[1], keep ? qs_f32(w)[1] : qs_f32(w)[1] - off[1], 1e-6, 0);
        tmpdata t;
        data_open(&t, x, sim->g);
        qs_biascorr_report *r = empirical(sim, &t);
        ASSERT_EQ(r->nlayers, 1);
        for (int m = 0; m < 4; m++)
            ASSERT_CLOSE(r->layers[0].correction[m], keep ? -off[m] * sx : 0, 1e-4, 1e-6);
        /* the pass swapped the kept weights in and out again: the initializer holds the rounded ones */
        for (int64_t i = 0; i < qs_numel(w); i++)
            ASSERT_CLOSE(qs_f32(sim->g->values[sim->q[wq].value].init)[i], qs_f32(w)[i] - off[i % 4], 1e-6, 0);
        qs_biascorr_report_free(r);
        data_close(&t);
        qs_quantsim_free(sim);
        qs_graph_free(g);
    }
    qs_tensor_free(x);
    qs_tensor_free(w);
}

/* Conv c1 (3 → 4) → Relu → Conv c2 (4 → 3, 3×3) with planted errors in both; c2 without bias when
 * nobias. */
static qs_graph *two_convs(int nobias)
{
    qs_graph *g = graph();
    int64_t xs[] = { 1, 3, 6, 6 }, w1s[] = { 4, 3, 3, 3 }, w2s[] = { 3, 4, 3, 3 }, c4 = 4, c3 = 3;
    input(g, "x", 4, xs);
    float off1[] = { 0.02f, -0.03f, 0.01f, 0.025f }, off2[] = { -0.02f, 0.03f, 0.015f };
    int in1[] = { val(g, "x"), init_t(g, "W1", planted(4, w1s, 0.0625f, off1, 0)),
                  init_t(g, "b1", opcheck_rand(1, &c4, 0, 0.5f)) };
    int64_t pads[] = { 1, 1, 1, 1 };
    qs_node_set_ints(node(g, "Conv", "c1", 3, in1, "h"), "pads", 4, pads);
    int rin[] = { val(g, "h") };
    node(g, "Relu", "relu", 1, rin, "a");
    int in2[] = { val(g, "a"), init_t(g, "W2", planted(4, w2s, 0.125f, off2, 0)),
                  nobias ? -1 : init_t(g, "b2", opcheck_rand(1, &c3, -1, 1)) };
    node(g, "Conv", "c2", nobias ? 2 : 3, in2, "y");
    output(g, "y");
    return g;
}

TEST(empirical_corrects_layer_after_layer)
{
    qs_graph *g = two_convs(0);
    qs_quantsim *sim = sim_of(g);
    set_weight_grid(sim, "c1", 0.0625f);
    set_weight_grid(sim, "c2", 0.125f);
    int64_t xs[] = { 64, 3, 6, 6 };
    qs_tensor *x = opcheck_rand(4, xs, -0.5f, 1);
    double b1 = mean_error(g, sim, "c1", x, 0), b2 = mean_error(g, sim, "c2", x, 0);
    tmpdata t;
    data_open(&t, x, sim->g);
    /* in batches of 7: c2's correction is measured with c1 corrected batch by batch, close to
     * (not exactly) the final c1 */
    qs_biascorr_report *r = empirical(sim, &t);
    ASSERT_EQ(r->nlayers, 2);
    ASSERT_EQ(r->passes, 2);   /* FP32, then both layers at once, c2 seeing c1 corrected */
    double a1 = mean_error(g, sim, "c1", x, 0), a2 = mean_error(g, sim, "c2", x, 1);
    printf("# conv chain, batches of 7: max |mean error| c1 %.4g -> %.2g, c2 %.4g -> %.2g\n", b1, a1, b2, a2);
    ASSERT(b1 > 0.01 && b2 > 0.01);
    ASSERT(a1 < 1e-5 && a2 < b2 / 100);
    qs_biascorr_report_free(r);
    /* again from the original biases, the data in one batch: exact */
    qs_quantsim_free(sim);
    sim = sim_of(g);
    set_weight_grid(sim, "c1", 0.0625f);
    set_weight_grid(sim, "c2", 0.125f);
    r = empirical_b(sim, &t, 64);
    a1 = mean_error(g, sim, "c1", x, 0), a2 = mean_error(g, sim, "c2", x, 0);
    printf("# conv chain, one batch: max |mean error| c1 %.2g, c2 %.2g\n", a1, a2);
    ASSERT(a1 < 1e-5 && a2 < 1e-5);
    /* the bias quantizer of each layer reads the corrected initializer (export picks it up) */
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_BIAS && !strcmp(sim->q[i].layer, "c2")) {
            const float *b = qs_f32(sim->g->values[sim->q[i].value].init);
            const float *orig = qs_f32(g->values[qs_graph_find_value(g, "b2")].init);
            for (int m = 0; m < 3; m++)
                ASSERT_CLOSE(b[m], orig[m] - r->layers[1].correction[m], 1e-6, 1e-6);
        }
    qs_biascorr_report_free(r);
    data_close(&t);
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(empirical_adds_missing_bias)
{
    qs_graph *g = two_convs(1);
    qs_quantsim *sim = sim_of(g);
    set_weight_grid(sim, "c1", 0.0625f);
    set_weight_grid(sim, "c2", 0.125f);
    int64_t xs[] = { 32, 3, 6, 6 };
    qs_tensor *x = opcheck_rand(4, xs, -0.5f, 1);
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_biascorr_report *r = empirical_b(sim, &t, 32);
    ASSERT_EQ(r->nlayers, 2);
    ASSERT_STR_EQ(r->layers[1].name, "c2");
    ASSERT(r->layers[1].bias_added);
    ASSERT(!r->layers[0].bias_added);
    ASSERT(mean_error(g, sim, "c2", x, 0) < 1e-5);
    /* the added bias is a plain float initializer: the QDQ export keeps it and computes what the
     * simulation computes */
    qs_err e = {0};
    qs_graph *qdq = NULL;
    const qs_tensor *in[] = { x };
    ASSERT_EQ(qsu_calibrate_minmax(sim, in, &e), 0);
    if (qs_export_qdq(sim, &qdq, &e) < 0)
        QT_FAIL_("export: %s", e.msg);
    qs_tensor *ys = NULL, *yq = NULL;
    ASSERT_EQ(qsu_run(sim->g, in, &ys, &e), 0);
    ASSERT_EQ(qsu_run(qdq, in, &yq, &e), 0);
    double d = 0, mag = 0;
    for (int64_t i = 0; i < qs_numel(ys); i++) {
        d = fmax(d, fabs(qs_f32(ys)[i] - qs_f32(yq)[i]));
        mag = fmax(mag, fabs(qs_f32(ys)[i]));
    }
    printf("# export with the added bias: max |sim - qdq| %.3g (max |y| %.3g)\n", d, mag);
    ASSERT(d <= 1e-5 * mag);
    qs_tensor_free(ys);
    qs_tensor_free(yq);
    qs_graph_free(qdq);
    qs_biascorr_report_free(r);
    data_close(&t);
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(empirical_bad_input)
{
    qs_graph *g = two_convs(0);
    qs_quantsim *sim = sim_of(g);
    qs_err e = {0};
    qs_biascorr_report *r = (qs_biascorr_report *)1;
    ASSERT_EQ(qs_biascorr_empirical(sim, NULL, NULL, NULL, &r, &e), QS_EINVAL);
    ASSERT(!r);
    ASSERT_STR_CONTAINS(e.msg, "calibration data");
    qs_biascorr_config cfg = qs_biascorr_config_default();
    cfg.samples = 0;
    qs_pl_data d = {0};
    ASSERT_EQ(qs_biascorr_empirical(sim, &d, &cfg, NULL, &r, &e), QS_EINVAL);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* --- analytical ------------------------------------------------------------------------------------- */

/* x [N, 2, 6, 6] → Conv c1 (1×1, W = I) → BN (μ 0, var 1, ε 0, γ, β) → act → Conv c2 (k×k, 2 → 2,
 * no padding, weight w2 [2, 2, k, k]) */
static qs_graph *bn_chain(const float *gamma, const float *beta, const char *act, int64_t k, const float *w2)
{
    qs_graph *g = graph();
    int64_t xs[] = { 1, 2, 6, 6 }, w1s[] = { 2, 2, 1, 1 }, w2s[] = { 2, 2, k, k }, two = 2;
    input(g, "x", 4, xs);
    float eye[] = { 1, 0, 0, 1 }, zero[] = { 0, 0 }, one[] = { 1, 1 };
    int in1[] = { val(g, "x"), init_t(g, "W1", opcheck_from(4, w1s, eye)), init_t(g, "b1", opcheck_from(1, &two, zero)) };
    node(g, "Conv", "c1", 3, in1, "h");
    int bn_in[] = { val(g, "h"), init_t(g, "g", opcheck_from(1, &two, gamma)), init_t(g, "be", opcheck_from(1, &two, beta)),
                    init_t(g, "mu", opcheck_from(1, &two, zero)), init_t(g, "var", opcheck_from(1, &two, one)) };
    qs_node_set_float(node(g, "BatchNormalization", "bn", 5, bn_in, "hb"), "epsilon", 0.f);
    if (!strcmp(act, "Clip6")) {
        float lo = 0, hi = 6;
        int cin[] = { val(g, "hb"), init_t(g, "lo", opcheck_from(0, NULL, &lo)), init_t(g, "hi", opcheck_from(0, NULL, &hi)) };
        node(g, "Clip", "act", 3, cin, "a");
    } else if (!strcmp(act, "Relu")) {
        int ain[] = { val(g, "hb") };
        node(g, "Relu", "act", 1, ain, "a");
    } else {
        int ain[] = { val(g, "hb") };
        node(g, "Identity", "act", 1, ain, "a");
    }
    float b2[] = { 0.5f, -0.25f };
    int in2[] = { val(g, "a"), init_t(g, "W2", opcheck_from(4, w2s, w2)), init_t(g, "b2", opcheck_from(1, &two, b2)) };
    node(g, "Conv", "c2", 3, in2, "y");
    output(g, "y");
    return g;
}

static qs_biascorr_report *analytical(qs_quantsim *sim, const qs_bn_record *bn, int nbn)
{
    qs_err e = {0};
    qs_biascorr_report *r = NULL;
    if (qs_biascorr_analytical(sim, bn, nbn, &r, &e) < 0)
        QT_FAIL_("analytical bias correction: %s", e.msg);
    return r;
}

static float sim_bias(qs_quantsim *sim, const char *layer, int m)
{
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_BIAS && !strcmp(sim->q[i].layer, layer))
            return qs_f32(sim->g->values[sim->q[i].value].init)[m];
    QT_FAIL_("no bias quantizer for %s", layer);
}

TEST(analytical_by_hand)
{
    /* γ = (1, 2), β = (0, 1): E[ReLU(x_0)] = φ(0) = 0.398942280, E[ReLU(x_1)] = 2·φ(0.5) + Φ(0.5) =
     * 1.395593115. W2 (1×1) = [[0.3, 0.55], [−0.2, 0.1]] on the grid 0.125 → [[0.25, 0.5],
     * [−0.25, 0.125]]: ε = [[−0.05, −0.05], [−0.05, 0.025]], so the correction is
     * (−0.05·0.398942 − 0.05·1.395593, −0.05·0.398942 + 0.025·1.395593) = (−0.089726770, 0.014942714) */
    float gamma[] = { 1, 2 }, beta[] = { 0, 1 }, w2[] = { 0.3f, 0.55f, -0.2f, 0.1f };
    qs_graph *g = bn_chain(gamma, beta, "Relu", 1, w2);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    qs_quantsim *sim = sim_of(g);
    set_weight_grid(sim, "c2", 0.125f);
    float b0 = sim_bias(sim, "c2", 0), b1 = sim_bias(sim, "c2", 1);
    qs_biascorr_report *r = analytical(sim, bn, nbn);
    ASSERT_EQ(r->nlayers, 1);
    ASSERT_STR_EQ(r->layers[0].name, "c2");
    ASSERT_CLOSE(r->layers[0].correction[0], -0.089726770, 1e-5, 0);
    ASSERT_CLOSE(r->layers[0].correction[1], 0.014942714, 1e-5, 0);
    ASSERT_CLOSE(sim_bias(sim, "c2", 0), b0 + 0.089726770, 1e-6, 1e-7);
    ASSERT_CLOSE(sim_bias(sim, "c2", 1), b1 - 0.014942714, 1e-6, 1e-7);
    /* c1 reads the model input: no BN statistics for it */
    ASSERT_EQ(r->nskipped, 1);
    ASSERT_STR_EQ(r->skipped[0].name, "c1");
    qs_biascorr_report_free(r);
    /* the same after c2's weights were rounded in place with the FP32 ones kept: the same ε */
    qs_quantsim_free(sim);
    sim = sim_of(g);
    int wq = set_weight_grid(sim, "c2", 0.125f);
    ASSERT_EQ(qs_quantsim_keep_fp32_weights(sim, &e), 0);
    round_in_place(sim, wq);
    r = analytical(sim, bn, nbn);
    ASSERT_CLOSE(r->layers[0].correction[0], -0.089726770, 1e-5, 0);
    ASSERT_CLOSE(r->layers[0].correction[1], 0.014942714, 1e-5, 0);
    qs_biascorr_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(analytical_no_activation_uses_beta)
{
    /* Identity between: not a recognised activation, so nothing is corrected; without it the
     * input mean is β itself */
    float gamma[] = { 1, 2 }, beta[] = { 0.5f, -1 }, w2[] = { 0.3f, 0.55f, -0.2f, 0.1f };
    qs_graph *g = bn_chain(gamma, beta, "Identity", 1, w2);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    qs_quantsim *sim = sim_of(g);
    set_weight_grid(sim, "c2", 0.125f);
    qs_biascorr_report *r = analytical(sim, bn, nbn);
    ASSERT_EQ(r->nlayers, 0);
    qs_biascorr_report_free(r);
    qs_quantsim_free(sim);
    qs_graph_free(g);
    /* the same chain with c2 reading the BN output directly */
    g = bn_chain(gamma, beta, "Identity", 1, w2);
    for (int i = 0; i < g->nnodes; i++)
        if (!strcmp(g->nodes[i].name, "c2"))
            g->nodes[i].in[0] = val(g, "hb");
    char drop[8] = {0};
    for (int i = 0; i < g->nnodes; i++)
        drop[i] = !strcmp(g->nodes[i].name, "act");
    qs_graph_remove_nodes(g, drop);
    qs_bn_records_free(bn, nbn);
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    sim = sim_of(g);
    set_weight_grid(sim, "c2", 0.125f);
    r = analytical(sim, bn, nbn);
    ASSERT_EQ(r->nlayers, 1);
    /* ε·β = (−0.05·0.5 − 0.05·(−1), −0.05·0.5 + 0.025·(−1)) = (0.025, −0.05) */
    ASSERT_CLOSE(r->layers[0].correction[0], 0.025, 1e-5, 0);
    ASSERT_CLOSE(r->layers[0].correction[1], -0.05, 1e-5, 0);
    qs_biascorr_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* E[clip(x, 0, 6)] for x ~ N(mu, s²) by the trapezoid rule over ±12 s */
static double clip6_mean_numeric(double mu, double s)
{
    int n = 200000;
    double a = mu - 12 * s, h = 24 * s / n, sum = 0;
    for (int i = 0; i <= n; i++) {
        double x = a + i * h, z = (x - mu) / s, f = fmin(fmax(x, 0), 6) * exp(-0.5 * z * z) / (s * sqrt(2 * 3.141592653589793));
        sum += (i == 0 || i == n ? 0.5 : 1) * f;
    }
    return sum * h;
}

TEST(analytical_relu6_matches_integration)
{
    /* β = (5, 1), γ = (2, 3): the clip at 6 matters */
    float gamma[] = { 2, 3 }, beta[] = { 5, 1 }, w2[] = { 0.3f, 0.55f, -0.2f, 0.1f };
    qs_graph *g = bn_chain(gamma, beta, "Clip6", 1, w2);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    qs_quantsim *sim = sim_of(g);
    set_weight_grid(sim, "c2", 0.125f);
    qs_biascorr_report *r = analytical(sim, bn, nbn);
    ASSERT_EQ(r->nlayers, 1);
    double m0 = clip6_mean_numeric(5, 2), m1 = clip6_mean_numeric(1, 3);
    printf("# E[ReLU6] by integration: %.6f %.6f\n", m0, m1);
    ASSERT_CLOSE(r->layers[0].correction[0], -0.05 * m0 - 0.05 * m1, 1e-5, 1e-7);
    ASSERT_CLOSE(r->layers[0].correction[1], -0.05 * m0 + 0.025 * m1, 1e-5, 1e-7);
    qs_biascorr_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(analytical_agrees_with_empirical_on_gaussian_data)
{
    /* x ~ N(0, 1) per channel, so BN's output is exactly N(β, γ²) as the analytical form assumes */
    float gamma[] = { 1.5f, 0.7f }, beta[] = { 0.4f, -0.3f }, w2[36];
    for (int i = 0; i < 36; i++)
        w2[i] = opcheck_uniform(-1, 1);
    qs_graph *g = bn_chain(gamma, beta, "Relu", 3, w2);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    int64_t xs[] = { 2048, 2, 6, 6 };
    qs_tensor *x = qs_tensor_new(QS_F32, 4, xs);
    for (int64_t i = 0; i < qs_numel(x); i += 2) {   /* Box–Muller */
        double u1 = opcheck_uniform(1e-12f, 1), u2 = opcheck_uniform(0, 1), rr = sqrt(-2 * log(u1));
        qs_f32(x)[i] = (float)(rr * cos(2 * 3.141592653589793 * u2));
        qs_f32(x)[i + 1] = (float)(rr * sin(2 * 3.141592653589793 * u2));
    }
    qs_quantsim *sa = sim_of(g), *se = sim_of(g);
    set_weight_grid(sa, "c2", 0.25f);   /* coarse: a large ε */
    set_weight_grid(se, "c2", 0.25f);
    qs_biascorr_report *ra = analytical(sa, bn, nbn);
    tmpdata t;
    data_open(&t, x, se->g);
    qs_biascorr_config cfg = qs_biascorr_config_default();
    cfg.samples = 2048;
    cfg.batch = 256;
    qs_biascorr_report *re = NULL;
    ASSERT_EQ(qs_biascorr_empirical(se, &t.d, &cfg, NULL, &re, &e), 0);
    ASSERT_EQ(ra->nlayers, 1);
    ASSERT_EQ(re->nlayers, 2);   /* c1 (exact on its grid: ~0) and c2 */
    ASSERT_STR_EQ(re->layers[1].name, "c2");
    for (int m = 0; m < 2; m++) {
        printf("# c2 channel %d: analytical %+.5f, empirical %+.5f (c1: %+.2g)\n", m, ra->layers[0].correction[m],
               re->layers[1].correction[m], re->layers[0].correction[m]);
        ASSERT_CLOSE(re->layers[1].correction[m], ra->layers[0].correction[m], 0.03, 2e-3);
    }
    qs_biascorr_report_free(ra);
    qs_biascorr_report_free(re);
    data_close(&t);
    qs_tensor_free(x);
    qs_bn_records_free(bn, nbn);
    qs_quantsim_free(sa);
    qs_quantsim_free(se);
    qs_graph_free(g);
}

/* --- the MobileNetV2-style fixture at 4-bit weights ------------------------------------------------ */

TEST(fixture_mobilenet_w4)
{
    char spath[1024];
    qt_fixture_path(spath, sizeof spath, "mobilenet.sample.npy");
    qs_graph *g = qt_fixture_graph("mobilenet_bn.onnx");
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    qs_qsim_config qc = qs_qsim_config_default();
    qc.wbits = 4;
    qc.per_channel = 0;
    qs_quantsim *se = qs_quantsim_new(g, &qc, &e), *sa = qs_quantsim_new(g, &qc, &e);
    ASSERT(se && sa);
    qs_pl_data d;
    ASSERT_EQ(qs_pl_open_inputs(spath, "calibration", se->g, &d, &e), 0);
    const qs_tensor *all = qs_dataset_array(d.d, d.arrays[0]);
    qs_tensor *x = qs_tensor_copy(all);
    const char *last = g->nodes[g->values[g->outputs[0]].producer].name;
    double before = mean_error(g, se, last, x, 0);
    qs_biascorr_report *re = NULL, *ra = NULL;
    qs_biascorr_config cfg = qs_biascorr_config_default();
    ASSERT_EQ(qs_biascorr_empirical(se, &d, &cfg, NULL, &re, &e), 0);
    ASSERT_EQ(qs_biascorr_analytical(sa, bn, nbn, &ra, &e), 0);
    double after_e = mean_error(g, se, last, x, 0), after_a = mean_error(g, sa, last, x, 0);
    printf("# W4 per-tensor, %lld samples: logits max |mean error| %.4f; empirical (%d layers, %d passes, %.2fs) "
           "%.2g; analytical (%d layers) %.4f\n", (long long)re->samples, before, re->nlayers, re->passes, re->seconds,
           after_e, ra->nlayers, after_a);
    ASSERT(after_e < before / 100);   /* on the calibration data itself: nearly exact (2 batches) */
    ASSERT(ra->nlayers >= 8);
    qs_biascorr_report_free(re);
    qs_biascorr_report_free(ra);
    qs_pl_close(&d);
    qs_tensor_free(x);
    qs_bn_records_free(bn, nbn);
    qs_quantsim_free(se);
    qs_quantsim_free(sa);
    qs_graph_free(g);
}

TEST_MAIN(empirical_removes_planted_gemm_error, corrections_after_rounding_in_place_use_the_kept_fp32_weights,
          empirical_corrects_layer_after_layer, empirical_adds_missing_bias,
          empirical_bad_input, analytical_by_hand, analytical_no_activation_uses_beta,
          analytical_relu6_matches_integration, analytical_agrees_with_empirical_on_gaussian_data,
          fixture_mobilenet_w4)
