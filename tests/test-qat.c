/* Quantization-aware training (engine/quant/qat.h): the optimisers against PyTorch's SGD / AdamW
 * (numbers printed by torch 1.13 for the same weights and gradients), the schedules and clipping
 * by hand, a whole QuantSim graph's backward against finite differences (quantizers bypassed;
 * and the LSQ scale / zero-point gradients where the grid clamps, so the function is smooth),
 * BN re-estimation against the batch statistics, and the pipeline: a smoke run whose loss falls and
 * whose exported model scores what the simulation scored, a run aborted mid-epoch and resumed
 * from its checkpoint ending bit for bit where an uninterrupted run ends, and bad input. */
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/fixture.h"
#include "tests/harness.h"
#include "tests/qsim-util.h"
#include "engine/data.h"
#include "engine/exec.h"
#include "engine/onnx.h"
#include "engine/ops/loss.h"
#include "engine/pipeline.h"
#include "engine/quant/qat.h"

/* --- optimisers, schedules, clipping ---------------------------------------------------------- */

static const float W0[3] = {1.0f, -2.0f, 0.5f};
static const float G[3][3] = {{0.1f, -0.3f, 2.0f}, {0.2f, 0.1f, -1.0f}, {-0.4f, 0.5f, 0.3f}};

static void run_optim(qs_optim o, int decay, const double want[3][3])
{
    float w[3], m[3] = {0}, v[3] = {0};
    memcpy(w, W0, sizeof w);
    for (int t = 0; t < 3; t++) {
        qs_optim_update(&o, w, G[t], m, v, 3, 0.1, t + 1, decay);
        for (int i = 0; i < 3; i++)
            ASSERT_CLOSE(w[i], want[t][i], 2e-6, 2e-7);
    }
}

/* torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01) */
TEST(sgd_momentum_matches_pytorch)
{
    const double want[3][3] = {{0.989, -1.968, 0.2995}, {0.958111, -1.947232, 0.2187505},
                               {0.969352789, -1.976593568, 0.1158571995}};
    run_optim(qs_optim_make(QS_OPT_SGD, 0.9, 0.01), 1, want);
    /* plain SGD, no decay (a bias): w −= lr·g */
    const double plain[3][3] = {{0.99, -1.97, 0.3}, {0.97, -1.98, 0.4}, {1.01, -2.03, 0.37}};
    run_optim(qs_optim_make(QS_OPT_SGD, 0, 0.01), 0, plain);
}

/* torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True) */
TEST(nesterov_matches_pytorch)
{
    const double want[3][3] = {{0.9791, -1.9392, 0.11905}, {0.93032971, -1.92859552, 0.146418805},
                               {0.979550012551, -2.003132436512, 0.0238796787705}};
    run_optim(qs_optim_make(QS_OPT_NESTEROV, 0.9, 0.01), 1, want);
}

/* torch.optim.AdamW(lr=0.1, weight_decay=0.01 / 0): bias correction makes the first step lr·sign(g) */
TEST(adam_matches_pytorch_adamw)
{
    const double want[3][3] = {{0.8990000099999991, -1.8980000033333333, 0.3995000005},
                               {0.8015828135112532, -1.8560801479247475, 0.37246679670193156},
                               {0.820160675466198, -1.8917030206864938, 0.3431875608289675}};
    run_optim(qs_optim_make(QS_OPT_ADAM, 0, 0.01), 1, want);
    const double nodecay[3][3] = {{0.900000009999999, -1.9000000033333333, 0.4000000005},
                                  {0.803481813521253, -1.8599781479280808, 0.37336629670243154},
                                  {0.8228612582897091, -1.8974571008377519, 0.34445952762616944}};
    run_optim(qs_optim_make(QS_OPT_ADAM, 0, 0.01), 0, nodecay);   /* decay only where asked */
}

TEST(schedules)
{
    /* cosine = torch's CosineAnnealingLR(T_max=10) step by step */
    const double cos10[10] = {0.1, 0.09755282581475769, 0.09045084971874738, 0.07938926261462367,
                              0.06545084971874739, 0.05, 0.03454915028125264, 0.020610737385376353,
                              0.009549150281252635, 0.002447174185242324};
    for (int t = 0; t < 10; t++)
        ASSERT_CLOSE(qs_lr_at(QS_SCHED_COSINE, 0.1, t, 10, 0), cos10[t], 1e-12, 0);
    /* warm-up 2 then cosine over the other 8 */
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_COSINE, 0.1, 0, 10, 2), 0.05, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_COSINE, 0.1, 1, 10, 2), 0.1, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_COSINE, 0.1, 2, 10, 2), 0.1, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_COSINE, 0.1, 6, 10, 2), 0.05, 1e-12, 0);
    /* step: ×0.1 at half and at three quarters */
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_STEP, 0.1, 3, 8, 0), 0.1, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_STEP, 0.1, 4, 8, 0), 0.01, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_STEP, 0.1, 5, 8, 0), 0.01, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_STEP, 0.1, 6, 8, 0), 0.001, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_CONSTANT, 0.1, 7, 8, 0), 0.1, 1e-12, 0);
    ASSERT_CLOSE(qs_lr_at(QS_SCHED_CONSTANT, 0.1, 0, 8, 4), 0.025, 1e-12, 0);
}

TEST(clip_grad_global_norm)
{
    float a[2] = {3, 0}, b[2] = {0, 4};
    float *g[2] = {a, b};
    int64_t n[2] = {2, 2};
    ASSERT_CLOSE(qs_clip_grad_norm(g, n, 2, 10), 5, 1e-12, 0);   /* below the limit: untouched */
    ASSERT(a[0] == 3 && b[1] == 4);
    ASSERT_CLOSE(qs_clip_grad_norm(g, n, 2, 2.5), 5, 1e-12, 0);
    ASSERT_CLOSE(a[0], 1.5, 1e-7, 0);
    ASSERT_CLOSE(b[1], 2.0, 1e-7, 0);
    ASSERT_CLOSE(qs_clip_grad_norm(g, n, 2, 0), 2.5, 1e-7, 0);    /* 0: off, norm still reported */
}

TEST(shuffles_depend_on_seed_and_epoch_only)
{
    int64_t a[100], b[100], c[100];
    qs_qat_permutation(7, 3, 100, a);
    qs_qat_permutation(7, 3, 100, b);
    qs_qat_permutation(7, 4, 100, c);
    char seen[100] = {0};
    int same = 0;
    for (int i = 0; i < 100; i++) {
        ASSERT(a[i] >= 0 && a[i] < 100 && !seen[a[i]]);
        seen[a[i]] = 1;
        ASSERT_EQ(a[i], b[i]);
        same += a[i] == c[i];
    }
    ASSERT(same < 10);
}

/* --- a whole graph's backward ------------------------------------------------------------------ */

/* labels = the FP32 model's own (PyTorch's) predictions */
static void argmax_labels(const qs_tensor *logits, int64_t *lab)
{
    int64_t c = logits->shape[1];
    for (int64_t r = 0; r < logits->shape[0]; r++) {
        int64_t best = 0;
        for (int64_t k = 1; k < c; k++)
            if (qs_f32(logits)[r * c + k] > qs_f32(logits)[r * c + best])
                best = k;
        lab[r] = best;
    }
}

static double graph_loss(qs_graph *g, const qs_tensor *x, const int64_t *lab)
{
    qs_tensor *out[4] = {0};
    qs_err e = {0};
    const qs_tensor *in[1] = {x};
    if (qsu_run(g, in, out, &e) < 0)
        QT_FAIL_("%s", e.msg);
    double l = qs_loss_softmax_xent(out[0], lab, NULL);
    for (int i = 0; i < g->noutputs; i++)
        qs_tensor_free(out[i]);
    return l;
}

/* runs training-mode forward + backward of the cross-entropy; returns the executor (caller frees) */
static qs_exec *train_grads(qs_graph *g, const qs_tensor *x, const int64_t *lab)
{
    qs_err e = {0};
    qs_exec *ex = qs_exec_new(g, QS_EXEC_TRAIN, &e);
    if (!ex || qs_exec_plan(ex, x->shape[0], &e) < 0 || qs_exec_set_input(ex, 0, x, &e) < 0 ||
        qs_exec_forward(ex, &e) < 0)
        QT_FAIL_("%s", e.msg);
    const qs_tensor *y = qs_exec_output(ex, 0);
    qs_tensor *dy = qs_tensor_new(QS_F32, y->ndim, y->shape);
    ASSERT(isfinite(qs_loss_softmax_xent(y, lab, dy)));
    const qs_tensor *dout[1] = {dy};
    if (qs_exec_backward(ex, dout, &e) < 0)
        QT_FAIL_("%s", e.msg);
    qs_tensor_free(dy);
    return ex;
}

/* a W8A8 QuantSim of the ResNet fixture with min-max ranges from the sample images */
static qs_quantsim *resnet_sim(qs_tensor *x)
{
    qs_graph *g = qt_fixture_graph("resnet.onnx");
    qs_qsim_config cfg = qs_qsim_config_default();
    qs_err e = {0};
    qs_quantsim *sim = qs_quantsim_new(g, &cfg, &e);
    if (!sim)
        QT_FAIL_("%s", e.msg);
    const qs_tensor *in[1] = {x};
    if (qsu_calibrate_minmax(sim, in, &e) < 0)
        QT_FAIL_("%s", e.msg);
    qs_graph_free(g);
    return sim;
}

/* With every FakeQuant bypassed (rounding off) the sim is the FP32 network: the backward through
 * FakeQuant, Conv, Relu, Add, pooling and Gemm must match central differences of the loss. */
TEST(graph_backward_with_quantizers_bypassed_matches_finite_differences)
{
    qs_tensor *x = qt_fixture_rows("resnet.sample.npy", 8), *ref = qt_fixture_rows("resnet.expected.npy", 8);
    int64_t lab[8];
    argmax_labels(ref, lab);
    lab[0] = (lab[0] + 3) % 10;   /* a wrong label or two: larger gradients */
    lab[5] = (lab[5] + 1) % 10;
    qs_quantsim *sim = resnet_sim(x);
    qs_quantsim_bypass_kind(sim, -1, 1);
    qs_exec *ex = train_grads(sim->g, x, lab);
    int checked = 0, bad = 0;
    for (int i = 0; i < sim->nq; i++) {
        if (sim->q[i].kind != QS_Q_WEIGHT && sim->q[i].kind != QS_Q_BIAS)
            continue;
        int v = sim->q[i].value;
        qs_tensor *w = sim->g->values[v].init;
        const qs_tensor *gr = qs_exec_grad(ex, v);
        ASSERT(gr);
        /* the entry with the largest gradient and a few spread over the tensor */
        int64_t n = qs_numel(w), pick[4] = {0, n / 3, (2 * n) / 3, n - 1};
        for (int64_t k = 0; k < n; k++)
            if (fabsf(qs_f32(gr)[k]) > fabsf(qs_f32(gr)[pick[0]]))
                pick[0] = k;
        for (int j = 0; j < 4; j++) {
            /* ReLU kinks crossed inside the step make any one difference quotient unreliable at
             * the percent level; one of two step sizes must agree */
            float *p = &qs_f32(w)[pick[j]], keep = *p;
            double ana = qs_f32(gr)[pick[j]], num[2];
            int ok = 0;
            for (int k = 0; k < 2; k++) {
                float eps = k ? 1e-3f : 1e-2f;
                *p = keep + eps;
                double lp = graph_loss(sim->g, x, lab);
                *p = keep - eps;
                double lm = graph_loss(sim->g, x, lab);
                *p = keep;
                num[k] = (lp - lm) / (2.0 * eps);
                ok |= fabs(ana - num[k]) <= 3e-4 + 3e-2 * fabs(num[k]);
            }
            checked++;
            if (!ok) {
                bad++;
                fprintf(stderr, "# %s[%lld]: backward %.6g, finite differences %.6g, %.6g\n", sim->q[i].name,
                        (long long)pick[j], ana, num[0], num[1]);
            }
        }
    }
    ASSERT(checked >= 40);
    ASSERT(bad <= checked / 20);
    qs_exec_free(ex);
    qs_quantsim_free(sim);
    qs_tensor_free(x);
    qs_tensor_free(ref);
}

/* Where a quantizer's every input is outside its grid, its output (qmin or qmax − z)·s is linear
 * in s and z, and the LSQ gradients (qmin/qmax − z for s, −s for z) are exact derivatives: the
 * graph's gradients must match central differences. Checked on the model-input quantizer and on
 * one after a ReLU (whose zeros sit inside the grid with zero gradient, consistently), the others
 * bypassed. */
TEST(lsq_range_gradients_of_a_graph_match_finite_differences_when_clamped)
{
    qs_tensor *x = qt_fixture_rows("resnet.sample.npy", 8), *ref = qt_fixture_rows("resnet.expected.npy", 8);
    int64_t lab[8];
    argmax_labels(ref, lab);
    lab[2] = (lab[2] + 4) % 10;
    qs_quantsim *sim = resnet_sim(x);
    int tested = 0;
    for (int i = 0; i < sim->nq && tested < 2; i++) {
        qs_quantizer *q = &sim->q[i];
        if (q->kind != QS_Q_INPUT && !(q->kind == QS_Q_ACT && tested == 1))
            continue;
        qs_quantsim_bypass_kind(sim, -1, 1);
        qs_quantsim_bypass(sim, i, 0);
        float *s = qs_quantsim_scales(sim, i), *z = qs_quantsim_zeros(sim, i);
        /* The input's grid is so narrow that every pixel clamps, below or above (the normalised
         * Fashion-MNIST pixels nearest 0 are −0.0108 and +0.0003; the grid spans [−0.01, 0.0002]).
         * After the ReLU, zeros would sit inside any grid that holds 0, so there the zero point is
         * moved 300 steps below the grid: every value clamps to qmin, (qmin − z)·s. */
        ASSERT(q->grid.qmax - q->grid.qmin == 255);
        qs_exec *ex = train_grads(sim->g, x, lab);
        if (q->kind == QS_Q_INPUT) {
            s[0] = 4e-5f;
            z[0] = q->grid.qmax - 5;
        } else {
            const qs_tensor *a = qs_exec_value(ex, q->value);
            float hi = 0;
            for (int64_t k = 0; k < qs_numel(a); k++)
                hi = fmaxf(hi, qs_f32(a)[k]);
            s[0] = hi / 100;
            z[0] = q->grid.qmin - 300;
        }
        qs_exec_free(ex);
        ex = train_grads(sim->g, x, lab);
        const qs_tensor *gs = qs_exec_grad(ex, q->scale), *gz = qs_exec_grad(ex, q->zero);
        ASSERT(gs && gz);
        double ana_s = qs_f32(gs)[0], ana_z = qs_f32(gz)[0];
        qs_exec_free(ex);
        float keep = s[0], h = keep * 1e-2f;   /* linear in s while everything clamps */
        s[0] = keep + h;
        double lp = graph_loss(sim->g, x, lab);
        s[0] = keep - h;
        double lm = graph_loss(sim->g, x, lab);
        s[0] = keep;
        double num_s = (lp - lm) / (2.0 * h);
        keep = z[0];
        float dz = q->kind == QS_Q_INPUT ? 2.f : 0.4f;   /* large steps (float noise), clamps unchanged */
        z[0] = keep + dz;
        lp = graph_loss(sim->g, x, lab);
        z[0] = keep - dz;
        lm = graph_loss(sim->g, x, lab);
        z[0] = keep;
        double num_z = (lp - lm) / (2.0 * dz);
        fprintf(stderr, "# %s: dL/ds %.6g (fd %.6g), dL/dz %.6g (fd %.6g)\n", q->name, ana_s, num_s, ana_z, num_z);
        ASSERT(fabs(num_s) > 1e-3);
        ASSERT_CLOSE(ana_s, num_s, 2e-2, 1e-4);
        ASSERT_CLOSE(ana_z, num_z, 3e-2, 1e-7);
        tested++;
    }
    ASSERT_EQ(tested, 2);
    qs_quantsim_free(sim);
    qs_tensor_free(x);
    qs_tensor_free(ref);
}

/* --- the trainer ------------------------------------------------------------------------------- */

typedef struct fx {
    char dir[64], x[128], y[128], out[128], out2[128], out3[128];
} fx;

/* n sample images of a fixture with labels = PyTorch's predictions (a few flipped), in a temp dir */
static void setup(fx *f, const char *model, int64_t n)
{
    strcpy(f->dir, "/tmp/test-qat-XXXXXX");
    ASSERT(mkdtemp(f->dir));
    snprintf(f->x, sizeof f->x, "%s/x.npy", f->dir);
    snprintf(f->y, sizeof f->y, "%s/y.npy", f->dir);
    snprintf(f->out, sizeof f->out, "%s/out", f->dir);
    snprintf(f->out2, sizeof f->out2, "%s/out2", f->dir);
    snprintf(f->out3, sizeof f->out3, "%s/out3", f->dir);
    char name[128];
    snprintf(name, sizeof name, "%s.sample.npy", model);
    qs_tensor *x = qt_fixture_rows(name, n);
    snprintf(name, sizeof name, "%s.expected.npy", model);
    qs_tensor *ref = qt_fixture_rows(name, n);
    qs_tensor *y = qs_tensor_new(QS_I64, 1, x->shape);
    argmax_labels(ref, qs_i64(y));
    for (int64_t r = 0; r < n; r += 7)
        qs_i64(y)[r] = (qs_i64(y)[r] + 1) % 10;
    qs_err e = {0};
    ASSERT(qs_npy_save(f->x, x, &e) == 0 && qs_npy_save(f->y, y, &e) == 0);
    ASSERT(mkdir(f->out, 0755) == 0 && mkdir(f->out2, 0755) == 0 && mkdir(f->out3, 0755) == 0);
    qs_tensor_free(x);
    qs_tensor_free(ref);
    qs_tensor_free(y);
}

static void teardown(fx *f)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    ASSERT(system(cmd) == 0);
}

typedef struct events {
    atomic_int abort;
    const char *abort_stage;   /* raise abort when this stage reports done >= abort_done */
    double abort_done;
    int progress, epochs_logged;
} events;

static void on_event(void *ud, const qs_event *ev)
{
    events *s = ud;
    if (ev->type == QS_EV_PROGRESS) {
        s->progress++;
        if (s->abort_stage && !strcmp(ev->stage, s->abort_stage) && ev->done >= s->abort_done)
            atomic_store(&s->abort, 1);
    } else if (ev->type == QS_EV_LOG && !strncmp(ev->message, "epoch ", 6)) {
        s->epochs_logged++;
    }
}

static qs_threadpool *run_pool;   /* the runs' kernel threads (NULL: the pipeline's default pool) */

static int run_qat(const fx *f, const char *model, const char *outdir, const char *cfg, const char *resume,
                   events *ev, json_t **res, qs_err *e)
{
    char mpath[512];
    qt_fixture_path(mpath, sizeof mpath, model);
    json_error_t je;
    json_t *c = json_loads(cfg, 0, &je);
    if (!c)
        QT_FAIL_("config: %s", je.text);
    qs_pipeline_io io = {.model = mpath, .train = f->x, .train_labels = f->y, .val = f->x, .val_labels = f->y,
                         .outdir = outdir, .resume = resume, .config = c, .event = on_event, .ud = ev,
                         .abort = &ev->abort, .pool = run_pool};
    int rc = qs_pipeline_run("qat", &io, res, e);
    json_decref(c);
    return rc;
}

static json_t *load_json(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    json_t *j = json_load_file(p, 0, NULL);
    if (!j)
        QT_FAIL_("cannot read %s", p);
    return j;
}

static int64_t file_bytes(const char *dir, const char *name, char **buf)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *fp = fopen(p, "rb");
    if (!fp)
        QT_FAIL_("cannot open %s", p);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *buf = malloc(n + 1);
    ASSERT(fread(*buf, 1, n, fp) == (size_t)n);
    fclose(fp);
    return n;
}

/* accuracy of our executor on an exported file, on the set's images and labels */
static double file_accuracy(const fx *f, const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    qs_graph *g;
    qs_err e = {0};
    if (qs_onnx_load(p, &g, &e) < 0)
        QT_FAIL_("%s", e.msg);
    qs_pl_data d;
    int64_t *lab;
    qs_pl_acc a;
    if (qs_pl_open_inputs(f->x, "validation", g, &d, &e) < 0 || qs_pl_load_labels(f->y, d.rows, &lab, &e) < 0 ||
        qs_pl_accuracy(g, &d, lab, 16, NULL, NULL, &a, &e) < 0)
        QT_FAIL_("%s", e.msg);
    qs_pl_close(&d);
    free(lab);
    qs_graph_free(g);
    return a.top1;
}

/* What is trained: every weight and bias and the ranges of weight and activation quantizers;
 * the frozen-range option leaves scales alone. */
TEST(trainer_parameters)
{
    fx f;
    setup(&f, "mlp", 32);
    qs_graph *g = qt_fixture_graph("mlp.onnx");
    qs_qsim_config cfg = qs_qsim_config_default();
    qs_err e = {0};
    qs_quantsim *sim = qs_quantsim_new(g, &cfg, &e);
    ASSERT(sim);
    qs_pl_data d;
    int64_t *lab;
    ASSERT(qs_pl_open_inputs(f.x, "training", g, &d, &e) == 0 && qs_pl_load_labels(f.y, d.rows, &lab, &e) == 0);
    qs_qconfig qc;
    qs_qconfig_default(&qc, "standard");
    qs_qat_opts o;
    ASSERT(qs_qat_opts_from_config(&qc, &o, &e) == 0);
    o.batch = 100;   /* more than the data: clipped to 32 */
    qs_qat *t = qs_qat_new(sim, &o, &d, lab, &e);
    if (!t)
        QT_FAIL_("%s", e.msg);
    ASSERT_EQ(qs_qat_batch(t), 32);
    ASSERT_EQ(qs_qat_iterations(t), 1);
    json_t *s = qs_qat_summary(t);
    /* 784·32 + 32·32 + 32·10 weights, 32 + 32 + 10 biases, per-channel weight scales (74) plus one
     * per activation quantizer (input and three layer outputs) */
    ASSERT_EQ(json_integer_value(json_object_get(s, "weights")), 784 * 32 + 32 * 32 + 32 * 10);
    ASSERT_EQ(json_integer_value(json_object_get(s, "other_parameters")), 74);
    ASSERT_EQ(json_integer_value(json_object_get(s, "scales")), 74 + 4);
    ASSERT_EQ(json_integer_value(json_object_get(s, "zero_points")), 4);   /* asymmetric activations only */
    json_decref(s);
    qs_qat_free(t);
    o.learn_ranges = 0;
    ASSERT((t = qs_qat_new(sim, &o, &d, lab, &e)));
    s = qs_qat_summary(t);
    ASSERT_EQ(json_integer_value(json_object_get(s, "scales")), 0);
    json_decref(s);
    qs_qat_free(t);
    o.epochs = 1;
    ASSERT((t = qs_qat_new(sim, &o, &d, lab, &e)));
    /* a step with frozen ranges leaves every scale as it was and moves the weights */
    int wq = 0;
    while (sim->q[wq].kind != QS_Q_WEIGHT)
        wq++;
    float s0 = qs_quantsim_scales(sim, wq)[0], w0 = qs_f32(sim->g->values[sim->q[wq].value].init)[0];
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_ACT || sim->q[i].kind == QS_Q_INPUT)
            qs_quantsim_set_range(sim, i, -1, -3, 3);
    qs_quantsim_update_bias(sim);
    double loss;
    ASSERT(qs_qat_step(t, &loss, &e) == 0);
    ASSERT(isfinite(loss) && loss > 0);
    ASSERT(qs_quantsim_scales(sim, wq)[0] == s0);
    ASSERT(qs_f32(sim->g->values[sim->q[wq].value].init)[0] != w0);
    ASSERT(qs_qat_done(t));
    ASSERT(qs_qat_step(t, &loss, &e) < 0);
    qs_qat_free(t);
    free(lab);
    qs_pl_close(&d);
    qs_quantsim_free(sim);
    qs_graph_free(g);
    qs_qconfig_free(&qc);
    teardown(&f);
}

/* BN kept in the graph: after re-estimation on the whole set in one batch, every BN's running
 * statistics are that batch's, so inference reproduces the training-mode forward (up to the
 * unbiased variance's n/(n−1)). */
TEST(bn_reestimation_sets_the_batch_statistics)
{
    fx f;
    setup(&f, "resnet", 32);
    qs_graph *g = qt_fixture_graph("resnet_bn.onnx");
    qs_qsim_config cfg = qs_qsim_config_default();
    qs_err e = {0};
    qs_quantsim *sim = qs_quantsim_new(g, &cfg, &e);
    ASSERT(sim);
    qs_tensor *x = qt_fixture_rows("resnet.sample.npy", 32);
    const qs_tensor *in[1] = {x};
    ASSERT(qsu_calibrate_minmax(sim, in, &e) == 0);
    qs_pl_data d;
    int64_t *lab;
    ASSERT(qs_pl_open_inputs(f.x, "training", g, &d, &e) == 0 && qs_pl_load_labels(f.y, d.rows, &lab, &e) == 0);
    qs_qconfig qc;
    qs_qconfig_default(&qc, "standard");
    qs_qat_opts o;
    ASSERT(qs_qat_opts_from_config(&qc, &o, &e) == 0);
    o.batch = 32;
    qs_qat *t = qs_qat_new(sim, &o, &d, lab, &e);
    if (!t)
        QT_FAIL_("%s", e.msg);
    ASSERT_EQ(qs_qat_nbn(t), 8);
    ASSERT_EQ(qs_qat_bn_reestimate(t, 32, &e), 8);
    /* training-mode forward (batch statistics) vs inference (the re-estimated running ones) */
    qs_exec *tr = qs_exec_new(sim->g, QS_EXEC_TRAIN, &e);
    ASSERT(tr && qs_exec_plan(tr, 32, &e) == 0 && qs_exec_set_input(tr, 0, x, &e) == 0 && qs_exec_forward(tr, &e) == 0);
    qs_tensor *out[1];
    ASSERT(qsu_run(sim->g, in, out, &e) == 0);
    const qs_tensor *yt = qs_exec_output(tr, 0);
    double maxd = 0, maxy = 0;
    for (int64_t k = 0; k < qs_numel(yt); k++) {
        maxd = fmax(maxd, fabs(qs_f32(yt)[k] - qs_f32(out[0])[k]));
        maxy = fmax(maxy, fabs(qs_f32(yt)[k]));
    }
    fprintf(stderr, "# max |train − inference| = %g of max |y| %g\n", maxd, maxy);
    ASSERT(maxd <= 2e-2 * maxy);   /* a requantized activation may step by one grid point */
    int64_t agree = 0;
    for (int64_t r = 0; r < 32; r++) {
        int64_t a[1], b[1];
        qs_tensor ra = *yt, rb = *out[0];
        ra.shape[0] = rb.shape[0] = 1;
        ra.data = qs_f32(yt) + r * 10;
        rb.data = qs_f32(out[0]) + r * 10;
        argmax_labels(&ra, a);
        argmax_labels(&rb, b);
        agree += a[0] == b[0];
    }
    ASSERT(agree >= 31);
    qs_tensor_free(out[0]);
    qs_exec_free(tr);
    qs_qat_free(t);
    free(lab);
    qs_pl_close(&d);
    qs_quantsim_free(sim);
    qs_graph_free(g);
    qs_tensor_free(x);
    qs_qconfig_free(&qc);
    teardown(&f);
}

/* --- the pipeline ------------------------------------------------------------------------------ */

#define SMOKE_CFG "{\"weights\": {\"bits\": 4}, \"activations\": {\"bits\": 4}, \"calibration\": {\"samples\": 64}, " \
                  "\"qat\": {\"epochs\": 8, \"batch_size\": 16, \"lr\": 0.002, \"schedule\": \"constant\"}}"

TEST(smoke_qat_loss_falls_and_artifacts_export)
{
    fx f;
    setup(&f, "mlp", 64);
    events ev = {0};
    json_t *res = NULL;
    qs_err e = {0};
    if (run_qat(&f, "mlp.onnx", f.out, SMOKE_CFG, NULL, &ev, &res, &e) < 0)
        QT_FAIL_("%s", e.msg);
    const char *keys[] = {"fp32_accuracy", "ptq_accuracy", "qat_accuracy", "seconds", "outdir"};
    for (int i = 0; i < 5; i++)
        ASSERT(json_object_get(res, keys[i]));
    ASSERT_EQ(ev.epochs_logged, 8);
    ASSERT(ev.progress >= 32);
    const char *files[] = {"model.qdq.onnx", "encodings.json", "model.prepared.onnx", "report.json",
                           "checkpoint/state.json"};
    for (int i = 0; i < 5; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", f.out, files[i]);
        ASSERT(access(p, R_OK) == 0);
    }
    json_t *rep = load_json(f.out, "report.json");
    ASSERT_STR_EQ(json_string_value(json_object_get(rep, "type")), "qat");
    json_t *curve = json_object_get(json_object_get(rep, "qat"), "curve");
    ASSERT_EQ(json_array_size(curve), 8);
    double first = json_number_value(json_object_get(json_array_get(curve, 0), "loss"));
    double last = json_number_value(json_object_get(json_array_get(curve, 7), "loss"));
    fprintf(stderr, "# loss %.4f → %.4f; accuracy fp32 %.3f ptq %.3f qat %.3f\n", first, last,
            json_number_value(json_object_get(res, "fp32_accuracy")), json_number_value(json_object_get(res, "ptq_accuracy")),
            json_number_value(json_object_get(res, "qat_accuracy")));
    ASSERT(last < 0.8 * first);
    ASSERT(json_number_value(json_object_get(res, "qat_accuracy")) >
           json_number_value(json_object_get(res, "ptq_accuracy")));
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(json_object_get(rep, "qat"), "training"), "steps")), 32);
    /* the exported QDQ model computes what the simulation computed */
    ASSERT_CLOSE(file_accuracy(&f, f.out, "model.qdq.onnx"), json_number_value(json_object_get(res, "qat_accuracy")),
                 0, 1e-9);
    /* zero points exported as integers */
    json_t *qs = json_object_get(rep, "quantizers"), *q;
    size_t i;
    json_array_foreach(qs, i, q) {
        json_t *zp = json_object_get(q, "zero_point"), *z;
        size_t k;
        json_array_foreach(zp, k, z)
            ASSERT(json_is_integer(z));
    }
    json_decref(rep);
    json_decref(res);
    teardown(&f);
}

#define RESUME_CFG "{\"weights\": {\"bits\": 3}, \"activations\": {\"bits\": 8}, \"calibration\": {\"samples\": 48}, " \
                   "\"qat\": {\"epochs\": 3, \"batch_size\": 12, \"lr\": 0.001, \"flip\": true, \"weight_decay\": 0.01}}"

static void compare_files(const char *a, const char *b, const char *name)
{
    char *x, *y;
    int64_t nx = file_bytes(a, name, &x), ny = file_bytes(b, name, &y);
    if (nx != ny || memcmp(x, y, nx))
        QT_FAIL_("%s differs between %s and %s", name, a, b);
    free(x);
    free(y);
}

/* Abort in the middle of epoch 2: the checkpoint of epoch 1 stays in the output; a run resumed
 * from it ends exactly where the uninterrupted run ends (same batches, flips, optimiser state). */
static void resume_case(const char *model, const char *cfg)
{
    fx f;
    setup(&f, !strncmp(model, "mlp", 3) ? "mlp" : "resnet", 48);
    events ev = {0}, ev2 = {.abort_stage = "training epoch 2", .abort_done = 2}, ev3 = {0};
    json_t *res = NULL, *res2 = NULL, *res3 = NULL;
    qs_err e = {0};
    if (run_qat(&f, model, f.out, cfg, NULL, &ev, &res, &e) < 0)
        QT_FAIL_("%s", e.msg);
    int rc = run_qat(&f, model, f.out2, cfg, NULL, &ev2, &res2, &e);
    ASSERT_EQ(rc, QS_EABORTED);
    ASSERT(res2 == NULL);
    json_t *st = load_json(f.out2, "checkpoint/state.json");
    ASSERT_EQ(json_integer_value(json_object_get(st, "step")), 4);
    ASSERT_EQ(json_integer_value(json_object_get(st, "epoch")), 1);
    json_decref(st);
    if (run_qat(&f, model, f.out3, cfg, f.out2, &ev3, &res3, &e) < 0)
        QT_FAIL_("%s", e.msg);
    compare_files(f.out, f.out3, "model.qdq.onnx");
    compare_files(f.out, f.out3, "encodings.json");
    compare_files(f.out, f.out3, "model.prepared.onnx");
    ASSERT(json_equal(json_object_get(res, "qat_accuracy"), json_object_get(res3, "qat_accuracy")));
    json_t *r1 = load_json(f.out, "report.json"), *r3 = load_json(f.out3, "report.json");
    json_t *q1 = json_object_get(r1, "qat"), *q3 = json_object_get(r3, "qat");
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(q3, "training"), "resumed_from_step")), 4);
    json_t *c1 = json_object_get(q1, "curve"), *c3 = json_object_get(q3, "curve");
    ASSERT_EQ(json_array_size(c1), 3);
    ASSERT_EQ(json_array_size(c3), 3);
    for (size_t k = 0; k < 3; k++) {
        ASSERT_CLOSE(json_number_value(json_object_get(json_array_get(c3, k), "loss")),
                     json_number_value(json_object_get(json_array_get(c1, k), "loss")), 1e-12, 0);
        ASSERT(json_equal(json_object_get(json_array_get(c3, k), "accuracy"),
                          json_object_get(json_array_get(c1, k), "accuracy")));
    }
    json_decref(r1);
    json_decref(r3);
    json_decref(res);
    json_decref(res3);
    teardown(&f);
}

TEST(resume_after_abort_matches_uninterrupted_run)
{
    resume_case("mlp.onnx", RESUME_CFG);
}

/* the same with BatchNormalization kept (trained in training mode, running statistics tracked,
 * re-estimated at the end): the checkpoint holds the running statistics too */
TEST(resume_with_batchnorm_kept_matches_uninterrupted_run)
{
    resume_case("resnet_bn.onnx",
                "{\"bn_fold\": false, \"weights\": {\"bits\": 4}, \"activations\": {\"bits\": 8}, "
                "\"calibration\": {\"samples\": 48}, \"qat\": {\"epochs\": 3, \"batch_size\": 12, \"lr\": 0.001}}");
}

/* A training step's per-element passes (FakeQuant forward and backward, the gradients' gather, the
 * optimiser) are split across the pool element by element or channel by channel, and a Conv's dW on
 * our own paths is summed in fixed chunks of items, so a run on 3 threads trains exactly the model a
 * run on 1 thread does: the MLP (Gemm), the ResNet fixture (convolutions, residual Adds whose
 * gradients meet at fan-outs, a strided 1x1 projection) and the MobileNet one (depthwise). */
#define THREADS_CFG "{\"weights\": {\"bits\": 4}, \"activations\": {\"bits\": 4}, \"calibration\": {\"samples\": 32}, " \
                    "\"qat\": {\"epochs\": 2, \"batch_size\": 16, \"lr\": 0.002}}"

TEST(training_does_not_depend_on_the_threads)
{
    const char *models[3] = {"mlp", "resnet", "mobilenet"};
    for (int m = 0; m < 3; m++) {
        fx f;
        setup(&f, models[m], 32);
        char model[64];
        snprintf(model, sizeof model, "%s%s.onnx", models[m], m ? "_bn" : "");
        const char *outs[2] = {f.out, f.out2};
        for (int k = 0; k < 2; k++) {
            qs_err e = {0};
            run_pool = qs_threadpool_new(k ? 3 : 1, 0, &e);
            ASSERT(run_pool);
            events ev = {0};
            json_t *res = NULL;
            if (run_qat(&f, model, outs[k], THREADS_CFG, NULL, &ev, &res, &e) < 0)
                QT_FAIL_("%s: %s", model, e.msg);
            json_decref(res);
            qs_threadpool_free(run_pool);
            run_pool = NULL;
        }
        compare_files(f.out, f.out2, "model.prepared.onnx");
        compare_files(f.out, f.out2, "model.qdq.onnx");
        teardown(&f);
    }
}

TEST(bad_input_is_named)
{
    fx f;
    setup(&f, "mlp", 32);
    events ev = {0};
    json_t *res = NULL;
    qs_err e = {0};
    /* a label outside the model's classes */
    qs_tensor *y = qs_tensor_new(QS_I64, 1, (int64_t[]){32});
    qs_i64(y)[5] = 12;
    ASSERT(qs_npy_save(f.y, y, &e) == 0);
    qs_tensor_free(y);
    ASSERT(run_qat(&f, "mlp.onnx", f.out, "{}", NULL, &ev, &res, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "label 12 of sample 5");
    /* labels of another length */
    y = qs_tensor_new(QS_I64, 1, (int64_t[]){31});
    ASSERT(qs_npy_save(f.y, y, &e) == 0);
    qs_tensor_free(y);
    memset(&e, 0, sizeof e);
    ASSERT(run_qat(&f, "mlp.onnx", f.out, "{}", NULL, &ev, &res, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "31 entries");
    /* an unknown config field */
    memset(&e, 0, sizeof e);
    ASSERT(run_qat(&f, "mlp.onnx", f.out, "{\"qat\": {\"epoch\": 2}}", NULL, &ev, &res, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "config.qat.epoch");
    /* no training data */
    char mpath[512];
    qt_fixture_path(mpath, sizeof mpath, "mlp.onnx");
    qs_pipeline_io io = {.model = mpath, .outdir = f.out};
    memset(&e, 0, sizeof e);
    ASSERT(qs_pipeline_run("qat", &io, &res, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "training data");
    teardown(&f);
}

/* a checkpoint made for another model (or setup) is refused with a message saying so */
TEST(resume_from_a_foreign_checkpoint_is_refused)
{
    fx f;
    setup(&f, "mlp", 32);
    events ev = {0};
    json_t *res = NULL;
    qs_err e = {0};
    const char *cfg = "{\"qat\": {\"epochs\": 1, \"batch_size\": 16, \"lr\": 0.001}}";
    if (run_qat(&f, "mlp.onnx", f.out, cfg, NULL, &ev, &res, &e) < 0)
        QT_FAIL_("%s", e.msg);
    json_decref(res);
    res = NULL;
    /* another batch size */
    ASSERT(run_qat(&f, "mlp.onnx", f.out2, "{\"qat\": {\"epochs\": 1, \"batch_size\": 8}}", f.out, &ev, &res, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "batch 16");
    /* another model: the vgg fixture takes the same inputs */
    memset(&e, 0, sizeof e);
    ASSERT(run_qat(&f, "vgg.onnx", f.out3, cfg, f.out, &ev, &res, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "another model");
    /* a resume folder without a checkpoint: a fresh start */
    char empty[192];
    snprintf(empty, sizeof empty, "%s/empty", f.dir);
    ASSERT(mkdir(empty, 0755) == 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", f.out3);
    ASSERT(system(cmd) == 0);
    memset(&e, 0, sizeof e);
    if (run_qat(&f, "mlp.onnx", f.out3, cfg, empty, &ev, &res, &e) < 0)
        QT_FAIL_("%s", e.msg);
    json_decref(res);
    teardown(&f);
}

/* A model whose output is a Softmax still trains, with a warning that says why it learns slowly. */
TEST(softmax_output_is_warned_about)
{
    fx f;
    setup(&f, "mlp", 32);
    qs_graph *g = qt_fixture_graph("mlp.onnx");
    int logits = g->outputs[0], probs = qs_graph_value(g, "probs");
    int n = qs_graph_add_node(g, "Softmax", "softmax", 1, &logits, 1, &probs);
    ASSERT(n >= 0 && qs_node_set_int(&g->nodes[n], "axis", 1) == 0);
    g->outputs[0] = probs;
    char path[256];
    snprintf(path, sizeof path, "%s/softmax.onnx", f.dir);
    qs_err e = {0};
    if (qs_onnx_save(g, path, &e) < 0)
        QT_FAIL_("%s", e.msg);
    qs_graph_free(g);
    json_t *c = json_loads("{\"qat\": {\"steps\": 2, \"batch_size\": 16}}", 0, NULL);
    events ev = {0};
    json_t *res = NULL;
    qs_pipeline_io io = {.model = path, .train = f.x, .train_labels = f.y, .outdir = f.out, .config = c,
                         .event = on_event, .ud = &ev};
    if (qs_pipeline_run("qat", &io, &res, &e) < 0)
        QT_FAIL_("%s", e.msg);
    json_t *rep = load_json(f.out, "report.json");
    json_t *w = json_array_get(json_object_get(rep, "warnings"), 0);
    ASSERT(w);
    ASSERT_STR_CONTAINS(json_string_value(w), "comes from Softmax");
    json_decref(rep);
    json_decref(res);
    json_decref(c);
    teardown(&f);
}

TEST_MAIN(sgd_momentum_matches_pytorch, nesterov_matches_pytorch, adam_matches_pytorch_adamw, schedules,
          clip_grad_global_norm, shuffles_depend_on_seed_and_epoch_only,
          graph_backward_with_quantizers_bypassed_matches_finite_differences,
          lsq_range_gradients_of_a_graph_match_finite_differences_when_clamped, trainer_parameters,
          bn_reestimation_sets_the_batch_statistics, smoke_qat_loss_falls_and_artifacts_export,
          resume_after_abort_matches_uninterrupted_run, resume_with_batchnorm_kept_matches_uninterrupted_run,
          training_does_not_depend_on_the_threads, bad_input_is_named, resume_from_a_foreign_checkpoint_is_refused, softmax_output_is_warned_about)
