/* AdaRound (paper §3.4): the rectified sigmoid h(V) and its gradient against finite differences,
 * the regulariser and its gradient, the β schedule's endpoints, the initialisation reproducing
 * the FP32 weights; on single Gemm and Conv layers (grouped, strided, dilated, padded) with
 * correlated random inputs, the reported reconstruction errors equal the ones measured by running
 * the simulation, and AdaRound's output error is well below round-to-nearest's at 4 and 3 bits;
 * results lie exactly on the grid and the exported QDQ model computes the simulation bit for bit;
 * zero iterations give round-to-nearest; the second layer of a chain sees the first one's
 * quantized output; determinism; bad input; the ResNet-style fixture at 4 bits. */
#include "tests/fixture.h"
#include "tests/opcheck.h"
#include "engine/data.h"
#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/onnx.h"
#include "engine/pipeline_util.h"
#include "engine/quant/adaround.h"
#include "engine/quant/export.h"
#include "engine/quant/quantsim.h"
#include "engine/quant/range.h"
#include "tests/qsim-util.h"

/* --- the pieces ----------------------------------------------------------------------------------- */

TEST(h_values_and_gradient)
{
    /* h(0) = 0.5·1.2 − 0.1 = 0.5; σ(1) = 0.731058579 → 0.777270295; σ(−1) → 0.222729705 */
    ASSERT_CLOSE(qs_adaround_h(0.f), 0.5, 1e-7, 1e-7);
    ASSERT_CLOSE(qs_adaround_h(1.f), 0.777270295, 1e-6, 0);
    ASSERT_CLOSE(qs_adaround_h(-1.f), 0.222729705, 1e-6, 0);
    /* clipped: σ(V)·1.2 − 0.1 ≥ 1 for σ ≥ 11/12, i.e. V ≥ ln 11 = 2.3979 */
    ASSERT_EQ(qs_adaround_h(2.5f), 1.f);
    ASSERT_EQ(qs_adaround_h(-2.5f), 0.f);
    ASSERT_EQ(qs_adaround_dh(2.5f), 0.f);
    ASSERT_EQ(qs_adaround_dh(-8.f), 0.f);
    ASSERT(qs_adaround_h(2.3f) < 1.f && qs_adaround_h(-2.3f) > 0.f);
    for (double v = -2.3; v <= 2.3; v += 0.1) {
        double hstep = 1e-3;
        double fd = ((double)qs_adaround_h((float)(v + hstep)) - qs_adaround_h((float)(v - hstep))) / (2 * hstep);
        ASSERT_CLOSE(qs_adaround_dh((float)v), fd, 2e-3, 1e-4);
    }
    /* dh/dV at 0 = 1.2·0.25 = 0.3 */
    ASSERT_CLOSE(qs_adaround_dh(0.f), 0.3, 1e-6, 0);
}

TEST(v_init_inverts_h)
{
    for (double f = 0; f < 1; f += 1.0 / 64)
        ASSERT_CLOSE(qs_adaround_h(qs_adaround_v_init((float)f)), f, 0, 2e-7);
    ASSERT_CLOSE(qs_adaround_h(qs_adaround_v_init(0.99999994f)), 0.99999994, 0, 2e-7);
}

TEST(regulariser_and_gradient)
{
    /* 1 − |2h − 1|^β: 1 at h = 0.5, 0 at h ∈ {0, 1}; h = 0.75, β = 2: 1 − 0.25 = 0.75; β = 20: 1 − 2^-20 */
    ASSERT_CLOSE(qs_adaround_reg(0.5f, 20), 1, 0, 1e-12);
    ASSERT_CLOSE(qs_adaround_reg(0.f, 20), 0, 0, 1e-12);
    ASSERT_CLOSE(qs_adaround_reg(1.f, 2), 0, 0, 1e-12);
    ASSERT_CLOSE(qs_adaround_reg(0.75f, 2), 0.75, 1e-12, 0);
    ASSERT_CLOSE(qs_adaround_reg(0.75f, 20), 1 - pow(2, -20), 1e-12, 0);
    ASSERT_CLOSE(qs_adaround_reg(0.25f, 3), 0.875, 1e-12, 0);
    double betas[] = { 2, 3.5, 8, 20 };
    for (int b = 0; b < 4; b++)
        for (double h = 0.02; h < 0.99; h += 0.0625) {
            double eps = 1e-4;
            double fd = (qs_adaround_reg((float)(h + eps), betas[b]) - qs_adaround_reg((float)(h - eps), betas[b])) /
                        (2 * eps);
            ASSERT_CLOSE(qs_adaround_dreg((float)h, betas[b]), fd, 5e-3, 1e-5);
        }
    ASSERT_EQ(qs_adaround_dreg(0.5f, 2), 0);
    /* the regulariser pushes h away from 0.5: dreg/dh < 0 above, > 0 below */
    ASSERT(qs_adaround_dreg(0.7f, 2) < 0 && qs_adaround_dreg(0.3f, 2) > 0);
}

TEST(beta_schedule)
{
    qs_adaround_config c = qs_adaround_config_default();
    ASSERT_EQ(c.iterations, 10000);
    ASSERT_CLOSE(c.reg, 0.01, 0, 0);
    ASSERT_CLOSE(c.warm_start, 0.2, 0, 0);
    /* warm start: no regulariser for the first 20% */
    ASSERT_EQ(qs_adaround_beta(&c, 0), 0);
    ASSERT_EQ(qs_adaround_beta(&c, 1999), 0);
    ASSERT_CLOSE(qs_adaround_beta(&c, 2000), 20, 1e-12, 0);
    ASSERT_CLOSE(qs_adaround_beta(&c, 10000), 2, 1e-12, 0);
    ASSERT_CLOSE(qs_adaround_beta(&c, 6000), 11, 1e-12, 0);   /* halfway the cosine: (20 + 2) / 2 */
    double prev = 21;
    for (int64_t it = 2000; it <= 10000; it += 100) {
        double b = qs_adaround_beta(&c, it);
        ASSERT(b < prev && b >= 2);
        prev = b;
    }
    c.iterations = 1000;
    c.warm_start = 0;
    ASSERT_CLOSE(qs_adaround_beta(&c, 0), 20, 1e-12, 0);
    ASSERT_CLOSE(qs_adaround_beta(&c, 1000), 2, 1e-12, 0);
}

TEST(init_reproduces_weights)
{
    qs_grid g4 = qs_grid_make(4, 1), g8u = qs_grid_make(8, 0);
    for (int i = 0; i < 2000; i++) {
        float s = opcheck_uniform(0.01f, 0.5f), w = opcheck_uniform(-8 * s, 7 * s);
        float fl = floorf(w / s), v = qs_adaround_v_init(w / s - fl);
        ASSERT_CLOSE(qs_adaround_soft(w, v, s, 0, g4), w, 0, 1e-5 * s);
        /* asymmetric: zero point 100 on uint8 */
        float w2 = opcheck_uniform(-100 * s, 155 * s), f2 = floorf(w2 / s);
        ASSERT_CLOSE(qs_adaround_soft(w2, qs_adaround_v_init(w2 / s - f2), s, 100, g8u), w2, 0, 1e-4 * s);
    }
    /* outside the grid the soft weight is clamped: 4-bit, s = 1, w = 9.3 → 7 */
    ASSERT_EQ(qs_adaround_soft(9.3f, qs_adaround_v_init(0.3f), 1, 0, g4), 7.f);
    ASSERT_EQ(qs_adaround_soft(-11.6f, qs_adaround_v_init(0.4f), 1, 0, g4), -8.f);
    /* h = 0 / 1 gives the floor / the ceiling */
    ASSERT_EQ(qs_adaround_soft(2.3f, -10.f, 0.5f, 0, g4), 2.f);
    ASSERT_EQ(qs_adaround_soft(2.3f, 10.f, 0.5f, 0, g4), 2.5f);
}

/* --- single layers ------------------------------------------------------------------------------- */

static int init_t(qs_graph *g, const char *name, qs_tensor *t)
{
    int id = qs_graph_value(g, name);
    qs_graph_set_init_steal(g, id, t);
    return id;
}

static void input(qs_graph *g, const char *name, int ndim, const int64_t *shape)
{
    int id = qs_graph_value(g, name);
    qs_value *v = &g->values[id];
    v->dtype = QS_F32;
    v->ndim = ndim;
    memcpy(v->shape, shape, ndim * sizeof *shape);
    v->shape[0] = -1;
    g->inputs = realloc(g->inputs, (g->ninputs + 1) * sizeof *g->inputs);
    g->inputs[g->ninputs++] = id;
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

static float gauss(void)
{
    double u1 = opcheck_uniform(1e-7f, 1), u2 = opcheck_uniform(0, 1);
    return (float)(sqrt(-2 * log(u1)) * cos(2 * 3.141592653589793 * u2));
}

/* n samples of f features that live mostly in an r-dimensional subspace (correlated inputs: the
 * case where choosing the rounding direction pays) */
static qs_tensor *low_rank(int64_t n, int64_t f, int64_t r, int64_t ndim, const int64_t *shape)
{
    float *a = malloc(r * f * sizeof *a);
    for (int64_t i = 0; i < r * f; i++)
        a[i] = gauss();
    qs_tensor *x = qs_tensor_new(QS_F32, (int)ndim, shape);
    for (int64_t s = 0; s < n; s++) {
        float z[64];
        for (int64_t k = 0; k < r; k++)
            z[k] = gauss();
        for (int64_t j = 0; j < f; j++) {
            float v = 0.1f * gauss();
            for (int64_t k = 0; k < r; k++)
                v += z[k] * a[k * f + j];
            qs_f32(x)[s * f + j] = v / sqrtf((float)r);
        }
    }
    free(a);
    return x;
}

static qs_tensor *gauss_t(int ndim, const int64_t *shape, float scale)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = scale * gauss();
    return t;
}

static qs_quantsim *sim_of(const qs_graph *g, int wbits, int per_channel)
{
    qs_err e = {0};
    qs_qsim_config cfg = qs_qsim_config_default();
    cfg.wbits = wbits;
    cfg.per_channel = per_channel;
    qs_quantsim *sim = qs_quantsim_new(g, &cfg, &e);
    if (!sim)
        QT_FAIL_("quantsim: %s", e.msg);
    /* MSE weight ranges, as the standard pipeline sets them before AdaRound */
    for (int i = 0; i < sim->nq; i++) {
        qs_quantizer *q = &sim->q[i];
        if (q->kind == QS_Q_WEIGHT &&
            qs_range_weights(sim->g->values[q->value].init, q->axis, q->grid, q->symmetric, 0, QS_RANGE_MSE,
                             qs_quantsim_scales(sim, i), qs_quantsim_zeros(sim, i), &e) < 0)
            QT_FAIL_("weight ranges: %s", e.msg);
    }
    return sim;
}

typedef struct tmpdata { char dir[64], path[128]; qs_pl_data d; } tmpdata;

static void data_open(tmpdata *t, const qs_tensor *x, qs_graph *g)
{
    qs_err e = {0};
    strcpy(t->dir, "/tmp/qs-adaround-XXXXXX");
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

/* Σ (y_sim − y_fp)² / (columns): the sim with weights quantized only; columns = N · spatial size */
static double output_mse(qs_graph *fp, qs_quantsim *sim, const qs_tensor *x)
{
    qs_err e = {0};
    int *saved = malloc(sim->nq * sizeof *saved);
    for (int i = 0; i < sim->nq; i++) {
        saved[i] = qs_quantsim_bypassed(sim, i);
        qs_quantsim_bypass(sim, i, sim->q[i].kind != QS_Q_WEIGHT);
    }
    const qs_tensor *in[] = { x };
    qs_tensor *a = NULL, *b = NULL;
    if (qsu_run(fp, in, &a, &e) < 0 || qsu_run(sim->g, in, &b, &e) < 0)
        QT_FAIL_("run: %s", e.msg);
    double acc = 0;
    for (int64_t i = 0; i < qs_numel(a); i++) {
        double d = (double)qs_f32(a)[i] - qs_f32(b)[i];
        acc += d * d;
    }
    int64_t cols = qs_numel(a) / a->shape[a->ndim == 4 ? 1 : a->ndim - 1];   /* NCHW, or channels last */
    qs_tensor_free(a);
    qs_tensor_free(b);
    for (int i = 0; i < sim->nq; i++)
        qs_quantsim_bypass(sim, i, saved[i]);
    free(saved);
    return acc / (double)cols;
}

static qs_adaround_report *run_adaround(qs_quantsim *sim, tmpdata *t, const qs_adaround_config *cfg)
{
    qs_err e = {0};
    qs_adaround_report *r = NULL;
    if (qs_adaround(sim, &t->d, cfg, NULL, &r, &e) < 0)
        QT_FAIL_("adaround: %s", e.msg);
    ASSERT(r);
    return r;
}

static int weight_q(const qs_quantsim *sim, const char *layer)
{
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_WEIGHT && !strcmp(sim->q[i].layer, layer))
            return i;
    QT_FAIL_("no weight quantizer for %s", layer);
}

/* every weight of the layer is a grid value that the weight FakeQuant leaves unchanged */
static void assert_on_grid(qs_quantsim *sim, const char *layer)
{
    int i = weight_q(sim, layer);
    const qs_quantizer *q = &sim->q[i];
    const qs_tensor *w = sim->g->values[q->value].init;
    qs_tensor *fq = qs_tensor_copy(w);
    qs_fake_quant_ref(w, fq, q->axis, qs_quantsim_scales(sim, i), qs_quantsim_zeros(sim, i), q->grid);
    ASSERT_EQ(memcmp(fq->data, w->data, qs_nbytes(w)), 0);
    qs_tensor_free(fq);
}

/* the quantsim's weights round-to-nearest (a fresh copy of the FP32 weights) */
static void weights_of(qs_quantsim *sim, const char *layer, float *out)
{
    const qs_tensor *w = sim->g->values[sim->q[weight_q(sim, layer)].value].init;
    memcpy(out, w->data, qs_nbytes(w));
}

/* Runs AdaRound on a one-layer model at `bits` and checks: reported errors = measured ones, a clear
 * gain over nearest on the calibration data and on fresh data, grid values. */
static void single_layer(qs_graph *g, const char *layer, qs_tensor *x, qs_tensor *xtest, int bits, int iters,
                         double max_ratio)
{
    qs_quantsim *sim = sim_of(g, bits, 1);
    double near_cal = output_mse(g, sim, x), near_test = output_mse(g, sim, xtest);
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.iterations = iters;
    qs_adaround_report *r = run_adaround(sim, &t, &cfg);
    ASSERT_EQ(r->nlayers, 1);
    ASSERT_STR_EQ(r->layers[0].name, layer);
    double ada_cal = output_mse(g, sim, x), ada_test = output_mse(g, sim, xtest);
    const qs_adaround_layer *l = &r->layers[0];
    printf("# %s W%d, %lld iterations (%.3f ms each, %lld columns): output MSE nearest %.5g -> AdaRound %.5g "
           "(%.2fx; fresh data %.5g -> %.5g, %.2fx); %.1f%% rounded up, %.1f%% differ from nearest\n",
           layer, bits, (long long)iters, l->ms_per_iteration, (long long)l->columns, near_cal, ada_cal,
           ada_cal / near_cal, near_test, ada_test, ada_test / near_test, 100 * l->frac_up, 100 * l->frac_changed);
    /* every column was in the evaluation set here, so the report is the measured error */
    ASSERT_CLOSE(l->mse_nearest, near_cal, 1e-3, 1e-9);
    ASSERT_CLOSE(l->mse_adaround, ada_cal, 1e-3, 1e-9);
    ASSERT(ada_cal <= max_ratio * near_cal);
    ASSERT(ada_test <= max_ratio * near_test);
    ASSERT(l->frac_changed > 0.01 && l->frac_changed < 0.5);
    assert_on_grid(sim, layer);
    qs_adaround_report_free(r);
    data_close(&t);
    qs_quantsim_free(sim);
}

static qs_graph *gemm_model(void)
{
    qs_graph *g = graph();
    int64_t xs[] = { 1, 64 }, ws[] = { 32, 64 }, bs = 32;
    input(g, "x", 2, xs);
    int in[] = { val(g, "x"), init_t(g, "W", gauss_t(2, ws, 0.2f)), init_t(g, "b", gauss_t(1, &bs, 0.1f)) };
    qs_node_set_int(node(g, "Gemm", "fc", 3, in, "y"), "transB", 1);
    output(g, "y");
    return g;
}

/* rows [k·n, (k+1)·n) of t as a new tensor */
static qs_tensor *half(const qs_tensor *t, int64_t n, int k)
{
    int64_t shape[QS_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = n;
    qs_tensor *h = qs_tensor_new(QS_F32, t->ndim, shape);
    memcpy(h->data, qs_f32(t) + k * qs_numel(h), qs_nbytes(h));
    return h;
}

TEST(gemm_beats_nearest_4_and_3_bits)
{
    /* calibration and fresh data from the same distribution */
    int64_t xs[] = { 2048, 64 };
    qs_tensor *both = low_rank(2048, 64, 12, 2, xs), *x = half(both, 1024, 0), *xt = half(both, 1024, 1);
    qs_graph *g = gemm_model();
    single_layer(g, "fc", x, xt, 4, 2000, 0.8);
    single_layer(g, "fc", x, xt, 3, 2000, 0.8);
    qs_graph_free(g);
    qs_tensor_free(both);
    qs_tensor_free(x);
    qs_tensor_free(xt);
}

/* x [N, 8, 9, 9] → Conv (8 → 12, 3×3, group 2, stride 2, dilation 1 or 2, pads 1) → y */
static qs_graph *conv_model(int64_t dil, int64_t group, int64_t cout)
{
    qs_graph *g = graph();
    int64_t xs[] = { 1, 8, 9, 9 }, ws[] = { cout, 8 / group, 3, 3 };
    input(g, "x", 4, xs);
    int in[] = { val(g, "x"), init_t(g, "W", gauss_t(4, ws, 0.3f)), init_t(g, "b", gauss_t(1, &cout, 0.1f)) };
    qs_node *n = node(g, "Conv", "conv", 3, in, "y");
    int64_t pads[] = { 1, 1, 1, 1 }, st[] = { 2, 2 }, dl[] = { dil, dil };
    qs_node_set_ints(n, "pads", 4, pads);
    qs_node_set_ints(n, "strides", 2, st);
    qs_node_set_ints(n, "dilations", 2, dl);
    qs_node_set_int(n, "group", group);
    output(g, "y");
    return g;
}

/* images whose channels are correlated and whose pixels are smooth */
static qs_tensor *images(int64_t n)
{
    int64_t s[] = { n, 8, 9, 9 }, ls[] = { n * 81, 8 };
    qs_tensor *pix = low_rank(n * 81, 8, 3, 2, ls), *x = qs_tensor_new(QS_F32, 4, s);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < 8; c++)
            for (int64_t p = 0; p < 81; p++) {
                int64_t r = p / 9, q = p % 9;
                float v = qs_f32(pix)[(i * 81 + p) * 8 + c];
                if (q > 0)   /* smooth along rows */
                    v = 0.6f * qs_f32(x)[((i * 8 + c) * 9 + r) * 9 + q - 1] + 0.4f * v;
                qs_f32(x)[((i * 8 + c) * 9 + r) * 9 + q] = v;
            }
    qs_tensor_free(pix);
    return x;
}

TEST(conv_grouped_strided_beats_nearest)
{
    qs_tensor *both = images(256), *x = half(both, 128, 0), *xt = half(both, 128, 1);
    qs_tensor_free(both);
    qs_graph *g = conv_model(1, 2, 12);
    single_layer(g, "conv", x, xt, 4, 1500, 0.8);
    single_layer(g, "conv", x, xt, 3, 1500, 0.8);
    qs_graph_free(g);
    g = conv_model(2, 1, 6);   /* dilated, one group */
    single_layer(g, "conv", x, xt, 4, 1500, 0.8);
    qs_graph_free(g);
    qs_tensor_free(x);
    qs_tensor_free(xt);
}

TEST(depthwise_conv)
{
    qs_tensor *both = images(256), *x = half(both, 128, 0), *xt = half(both, 128, 1);
    qs_tensor_free(both);
    qs_graph *g = conv_model(1, 8, 8);
    single_layer(g, "conv", x, xt, 4, 1500, 0.9);
    qs_graph_free(g);
    qs_tensor_free(x);
    qs_tensor_free(xt);
}

/* x [N, 6, 24] → MatMul by W [24, 10] → y [N, 6, 10]: six columns per sample */
static qs_graph *matmul_model(void)
{
    qs_graph *g = graph();
    int64_t xs[] = { 1, 6, 24 }, ws[] = { 24, 10 };
    input(g, "x", 3, xs);
    int in[] = { val(g, "x"), init_t(g, "W", gauss_t(2, ws, 0.3f)) };
    node(g, "MatMul", "mm", 2, in, "y");
    output(g, "y");
    return g;
}

TEST(matmul_beats_nearest_and_memory_cap)
{
    int64_t xs[] = { 512, 6, 24 };
    qs_tensor *both = low_rank(512 * 6, 24, 6, 3, xs), *x = half(both, 256, 0), *xt = half(both, 256, 1);
    qs_graph *g = matmul_model();
    single_layer(g, "mm", x, xt, 4, 1500, 0.8);
    /* a memory cap below the data's size: fewer samples, said in the report */
    qs_quantsim *sim = sim_of(g, 4, 1);
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.iterations = 10;
    cfg.max_bytes = 100 * (6 * 24 + 6 * 10) * (int64_t)sizeof(float);
    qs_adaround_report *r = run_adaround(sim, &t, &cfg);
    ASSERT_EQ(r->layers[0].samples, 100);
    ASSERT_EQ(r->layers[0].columns, 32 * 6);
    qs_adaround_report_free(r);
    data_close(&t);
    qs_quantsim_free(sim);
    qs_graph_free(g);
    qs_tensor_free(both);
    qs_tensor_free(x);
    qs_tensor_free(xt);
}

TEST(zero_iterations_is_nearest)
{
    qs_graph *g = conv_model(1, 2, 12);
    qs_quantsim *sim = sim_of(g, 4, 1);
    int64_t nw = 12 * 4 * 9;
    float *w0 = malloc(nw * sizeof *w0), *w1 = malloc(nw * sizeof *w1);
    weights_of(sim, "conv", w0);
    qs_tensor *x = images(16);
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.iterations = 0;
    qs_adaround_report *r = run_adaround(sim, &t, &cfg);
    weights_of(sim, "conv", w1);
    int i = weight_q(sim, "conv");
    const float *s = qs_quantsim_scales(sim, i);
    int ties = 0;
    for (int64_t k = 0; k < nw; k++) {
        float sc = s[k / 36], f = w0[k] / sc - floorf(w0[k] / sc);
        if (fabsf(f - 0.5f) < 1e-4f) {
            ties++;
            continue;
        }
        ASSERT_EQ(w1[k], qs_fake_quant1(w0[k], sc, 0, sim->q[i].grid));
    }
    ASSERT(ties < 3);
    ASSERT_EQ(r->layers[0].frac_changed < 0.01, 1);
    ASSERT_CLOSE(r->layers[0].mse_adaround, r->layers[0].mse_nearest, 1e-3, 1e-9);
    qs_adaround_report_free(r);
    data_close(&t);
    qs_tensor_free(x);
    free(w0);
    free(w1);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(export_matches_sim_bit_for_bit)
{
    qs_graph *g = conv_model(1, 2, 12);
    qs_quantsim *sim = sim_of(g, 4, 1);
    qs_tensor *x = images(64);
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.iterations = 300;
    qs_adaround_report *r = run_adaround(sim, &t, &cfg);
    ASSERT(r->layers[0].frac_changed > 0);
    qs_err e = {0};
    const qs_tensor *in[] = { x };
    ASSERT_EQ(qsu_calibrate_minmax(sim, in, &e), 0);
    qs_graph *qdq = NULL;
    if (qs_export_qdq(sim, &qdq, &e) < 0)
        QT_FAIL_("export: %s", e.msg);
    qs_tensor *ys = NULL, *yq = NULL;
    ASSERT_EQ(qsu_run(sim->g, in, &ys, &e), 0);
    ASSERT_EQ(qsu_run(qdq, in, &yq, &e), 0);
    ASSERT(qs_shape_eq(ys, yq));
    ASSERT_EQ(memcmp(ys->data, yq->data, qs_nbytes(ys)), 0);
    /* the exported integers are the AdaRounded weights over their scales */
    int wi = weight_q(sim, "conv");
    const qs_tensor *w = sim->g->values[sim->q[wi].value].init;
    const qs_tensor *wint = NULL;
    for (int v = 0; v < qdq->nvalues; v++)
        if (qdq->values[v].init && qdq->values[v].init->dtype == QS_I8 && qs_numel(qdq->values[v].init) == qs_numel(w))
            wint = qdq->values[v].init;
    ASSERT(wint);
    const float *s = qs_quantsim_scales(sim, wi);
    for (int64_t k = 0; k < qs_numel(w); k++)
        ASSERT_EQ(qs_i8(wint)[k], (int)lrintf(qs_f32(w)[k] / s[k / 36]));
    printf("# W4 AdaRounded conv: sim and QDQ export agree on all %lld outputs\n", (long long)qs_numel(ys));
    qs_tensor_free(ys);
    qs_tensor_free(yq);
    qs_graph_free(qdq);
    qs_adaround_report_free(r);
    data_close(&t);
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* x → Gemm fc1 (16 → 16) → Relu → Gemm fc2 (16 → 8), fc2's weights already on its grid */
static qs_graph *chain_model(void)
{
    qs_graph *g = graph();
    int64_t xs[] = { 1, 16 }, w1s[] = { 16, 16 }, w2s[] = { 8, 16 }, c16 = 16;
    input(g, "x", 2, xs);
    int in1[] = { val(g, "x"), init_t(g, "W1", gauss_t(2, w1s, 0.3f)), init_t(g, "b1", gauss_t(1, &c16, 0.1f)) };
    qs_node_set_int(node(g, "Gemm", "fc1", 3, in1, "h"), "transB", 1);
    int rin[] = { val(g, "h") };
    node(g, "Relu", "relu", 1, rin, "a");
    qs_tensor *w2 = qs_tensor_new(QS_F32, 2, w2s);
    for (int64_t i = 0; i < 128; i++)   /* integers in [-7, 7] times 1/8: exactly on a 4-bit grid of step 1/8 */
        qs_f32(w2)[i] = (float)((int)opcheck_uniform(-7, 8)) / 8;
    for (int64_t m = 0; m < 8; m++)   /* each row reaches ±7/8, so min-max and MSE ranges keep the step */
        qs_f32(w2)[m * 16] = m % 2 ? 0.875f : -0.875f;
    int in2[] = { val(g, "a"), init_t(g, "W2", w2) };
    qs_node_set_int(node(g, "Gemm", "fc2", 2, in2, "y"), "transB", 1);
    output(g, "y");
    return g;
}

TEST(later_layers_see_quantized_inputs)
{
    int64_t xs[] = { 256, 16 };
    qs_tensor *x = low_rank(256, 16, 6, 2, xs);
    qs_graph *g = chain_model();
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.iterations = 200;
    /* fc1 quantized: fc2's input differs from the FP32 one, so even its exact weights leave an error */
    qs_quantsim *sim = sim_of(g, 4, 1);
    int q2 = weight_q(sim, "fc2");
    for (int c = 0; c < 8; c++)
        ASSERT_CLOSE(qs_quantsim_scales(sim, q2)[c], 0.125, 1e-6, 0);
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_adaround_report *r = run_adaround(sim, &t, &cfg);
    ASSERT_EQ(r->nlayers, 2);
    ASSERT_STR_EQ(r->layers[0].name, "fc1");
    ASSERT_STR_EQ(r->layers[1].name, "fc2");
    double with_q = r->layers[1].mse_nearest;
    ASSERT(with_q > 1e-4);
    qs_adaround_report_free(r);
    data_close(&t);
    qs_quantsim_free(sim);
    /* fc1 kept in FP32 (weight quantizer bypassed): fc2 sees the FP32 input and its grid weights are exact */
    sim = sim_of(g, 4, 1);
    qs_quantsim_bypass(sim, weight_q(sim, "fc1"), 1);
    data_open(&t, x, sim->g);
    r = run_adaround(sim, &t, &cfg);
    ASSERT_EQ(r->nlayers, 1);
    ASSERT_EQ(r->nskipped, 1);
    ASSERT_STR_EQ(r->skipped[0].name, "fc1");
    ASSERT_STR_CONTAINS(r->skipped[0].reason, "bypassed");
    printf("# fc2's error with exact weights: %.4g with fc1 quantized, %.2g with fc1 in FP32\n", with_q,
           r->layers[0].mse_nearest);
    ASSERT(r->layers[0].mse_nearest < 1e-10);
    ASSERT(qs_quantsim_bypassed(sim, weight_q(sim, "fc1")));   /* flags restored */
    json_t *j = qs_adaround_report_json(r);
    ASSERT_EQ(json_array_size(json_object_get(j, "layers")), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(json_object_get(j, "layers"), 0), "name")), "fc2");
    ASSERT_EQ(json_integer_value(json_object_get(j, "iterations")), 200);
    ASSERT(json_is_real(json_object_get(json_array_get(json_object_get(j, "layers"), 0), "ms_per_iteration")));
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(json_object_get(j, "skipped"), 0), "name")), "fc1");
    json_decref(j);
    qs_adaround_report_free(r);
    data_close(&t);
    qs_quantsim_free(sim);
    qs_tensor_free(x);
    qs_graph_free(g);
}

TEST(deterministic)
{
    qs_graph *g = conv_model(1, 2, 12);
    qs_tensor *x = images(64);
    float *w[2];
    for (int k = 0; k < 2; k++) {
        qs_quantsim *sim = sim_of(g, 4, 1);
        tmpdata t;
        data_open(&t, x, sim->g);
        qs_adaround_config cfg = qs_adaround_config_default();
        cfg.iterations = 200;
        cfg.max_columns = 100;   /* a strict subset of columns each iteration */
        qs_adaround_report *r = run_adaround(sim, &t, &cfg);
        w[k] = malloc(12 * 4 * 9 * sizeof(float));
        weights_of(sim, "conv", w[k]);
        qs_adaround_report_free(r);
        data_close(&t);
        qs_quantsim_free(sim);
    }
    ASSERT_EQ(memcmp(w[0], w[1], 12 * 4 * 9 * sizeof(float)), 0);
    free(w[0]);
    free(w[1]);
    qs_tensor_free(x);
    qs_graph_free(g);
}

static void on_event(void *ud, const qs_event *ev)
{
    int *n = ud;
    if (ev->type == QS_EV_PROGRESS && !strcmp(ev->stage, "adaround conv")) {
        n[0]++;
        n[1] = (int)ev->done;
        n[2] = (int)ev->total;
    }
}

TEST(progress_and_abort)
{
    qs_graph *g = conv_model(1, 2, 12);
    qs_quantsim *sim = sim_of(g, 4, 1);
    qs_tensor *x = images(16);
    tmpdata t;
    data_open(&t, x, sim->g);
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.iterations = 50;
    int seen[3] = {0};
    atomic_int stop = 0;
    qs_pipeline_io io = { .event = on_event, .ud = seen, .abort = &stop };
    qs_err e = {0};
    qs_adaround_report *r = NULL;
    ASSERT_EQ(qs_adaround(sim, &t.d, &cfg, &io, &r, &e), 0);
    ASSERT(seen[0] >= 2);
    ASSERT_EQ(seen[1], 50);
    ASSERT_EQ(seen[2], 50);
    qs_adaround_report_free(r);
    atomic_store(&stop, 1);
    r = (qs_adaround_report *)1;
    ASSERT_EQ(qs_adaround(sim, &t.d, &cfg, &io, &r, &e), QS_EABORTED);
    ASSERT(!r);
    data_close(&t);
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

TEST(bad_input)
{
    qs_graph *g = gemm_model();
    qs_quantsim *sim = sim_of(g, 4, 1);
    qs_err e = {0};
    qs_adaround_report *r = (qs_adaround_report *)1;
    ASSERT_EQ(qs_adaround(sim, NULL, NULL, NULL, &r, &e), QS_EINVAL);
    ASSERT(!r);
    ASSERT_STR_CONTAINS(e.msg, "calibration data");
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.batch = 0;
    qs_pl_data d = {0};
    ASSERT_EQ(qs_adaround(sim, &d, &cfg, NULL, &r, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "batch");
    cfg = qs_adaround_config_default();
    cfg.warm_start = 1.5;
    ASSERT_EQ(qs_adaround(sim, &d, &cfg, NULL, &r, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "warm_start");
    cfg = qs_adaround_config_default();
    cfg.iterations = -1;
    ASSERT_EQ(qs_adaround(sim, &d, &cfg, NULL, &r, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "iterations");
    qs_quantsim_free(sim);
    qs_graph_free(g);
}

/* --- the ResNet-style fixture at 4-bit weights ------------------------------------------------------ */

TEST(fixture_resnet_w4)
{
    char spath[1024];
    qt_fixture_path(spath, sizeof spath, "resnet.sample.npy");
    qs_graph *g = qt_fixture_graph("resnet.onnx");
    qs_err e = {0};
    qs_quantsim *sim = sim_of(g, 4, 1);
    qs_pl_data d;
    ASSERT_EQ(qs_pl_open_inputs(spath, "calibration", sim->g, &d, &e), 0);
    qs_tensor *x = qs_tensor_copy(qs_dataset_array(d.d, d.arrays[0]));
    qs_graph *g1 = qs_graph_clone(g);
    qs_quantsim *near = sim_of(g1, 4, 1);
    double before = output_mse(g, near, x);
    qs_adaround_config cfg = qs_adaround_config_default();
    cfg.iterations = 300;
    qs_adaround_report *r = NULL;
    if (qs_adaround(sim, &d, &cfg, NULL, &r, &e) < 0)
        QT_FAIL_("adaround: %s", e.msg);
    double after = output_mse(g, sim, x);
    ASSERT_EQ(r->nlayers, 9);
    int better = 0;
    for (int i = 0; i < r->nlayers; i++) {
        const qs_adaround_layer *l = &r->layers[i];
        printf("#   %-36s %6lld weights %4lld samples %5lld cols: mse %.4g -> %.4g, %.2f ms/iter, %.1f%% changed\n",
               l->name, (long long)l->weights, (long long)l->samples, (long long)l->columns, l->mse_nearest,
               l->mse_adaround, l->ms_per_iteration, 100 * l->frac_changed);
        better += l->mse_adaround < l->mse_nearest;
        assert_on_grid(sim, l->name);
    }
    printf("# W4 per-channel, %lld samples, %d iterations, %.1f s: logits MSE nearest %.4g -> AdaRound %.4g\n",
           (long long)x->shape[0], cfg.iterations, r->seconds, before, after);
    ASSERT(better >= 8);
    ASSERT(after < before);
    qs_adaround_report_free(r);
    qs_pl_close(&d);
    qs_tensor_free(x);
    qs_quantsim_free(sim);
    qs_quantsim_free(near);
    qs_graph_free(g1);
    qs_graph_free(g);
}

TEST_MAIN(h_values_and_gradient, v_init_inverts_h, regulariser_and_gradient, beta_schedule, init_reproduces_weights,
          gemm_beats_nearest_4_and_3_bits, conv_grouped_strided_beats_nearest, depthwise_conv,
          matmul_beats_nearest_and_memory_cap,
          zero_iterations_is_nearest, export_matches_sim_bit_for_bit, later_layers_see_quantized_inputs,
          deterministic, progress_and_abort, bad_input, fixture_resnet_w4)
