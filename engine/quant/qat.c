/* Quantization-aware training (paper §4); the standard QAT pipeline (§4.4, Fig. 12) that drives it
 * is the qat job's driver, engine/pipeline/qat.c.
 *
 * Training runs the QuantSim graph in the executor's training mode: FakeQuant nodes stay active,
 * their backward is the straight-through estimator for x and the LSQ-style gradients for scale and
 * zero point (ops/fakequant.c, §4.2), the loss is softmax cross-entropy on output 0, and the
 * optimiser updates the float initializers of sim->g in place (the executor's plan reads them
 * where they are, so nothing is copied between steps). The gradients of a quantizer's scale and
 * zero point are multiplied by LSQ's g = 1/sqrt(N·Qp) (N elements per channel and sample, Qp the
 * grid's top): it keeps SGD's range steps in proportion to the weights'; Adam is invariant to it.
 * After each step: scales clamped to a small positive floor, learned zero points kept inside the
 * grid, bias grids s_in·s_w recomputed. Zero points are rounded to integers only at the end
 * (qs_qat_finalize), as export needs them.
 *
 * Mini-batches are gathered row by row from the memory-mapped training set in an order fixed by
 * (seed, epoch), with optional horizontal flips decided by (seed, step, row): a checkpoint needs no
 * generator state, and a resumed run sees exactly the batches an uninterrupted run would. The last
 * partial batch of an epoch is dropped (every step has the same batch statistics and size). A
 * model that fixes its batch (mnist-8: 1) runs a step as several passes whose gradients add up.
 *
 * BatchNormalization (§4.3, §4.4). Static folding is the default, as the paper recommends: the
 * pipeline folds BN into the preceding layer before the quantizers are placed (config bn_fold,
 * default on), so training learns the folded weights and biases directly and what is trained is
 * exactly what is exported. There is then no BN left, and nothing whose statistics could be
 * re-estimated: re-normalising a folded layer to its old (γ, β) would undo what training learned.
 * BN re-estimation therefore belongs to the other path: with bn_fold off, BN stays in the graph,
 * trains in training mode (batch statistics forward and backward, γ and β learned, running
 * statistics tracked by a moving average), and after training (bn_reestimate, default on) every
 * BN's running mean and variance are recomputed from training data run through the final
 * quantized network — the statistics drift while quantized weights move (Nagel et al. 2022), and
 * the running averages lag behind them. The exported model then keeps its (float) BN nodes, as
 * PTQ's bn_fold=false does.
 *
 * Checkpoints (qs_qat_save) hold every float initializer of the graph, the optimiser's moments and
 * the position (epoch, iteration, step); the pipeline writes one at the start, after every epoch
 * and every 10 minutes inside a long one, so the daemon's requeue after a crash continues from
 * there (io->resume) instead of starting over, with the same batches and the same result. */
#include "quant/qat.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "exec.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "quant/ptq.h"
#include "quant/rng.h"

#define MIN_SCALE 1e-8f   /* scales are clamped here: FakeQuant needs s > 0 */
#define CKPT_FORMAT "quantd-qat-checkpoint"
#define CKPT_VERSION 1
#define PIECE 32768       /* elements of a parameter per piece of the step's per-element passes */

/* --- data order ------------------------------------------------------------------------------ */

static uint64_t hash3(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t s = seed ^ (a * 0xD6E8FEB86659FD93ull) ^ (b * 0xA0761D6478BD642Full);
    return qs_splitmix64(&s);
}

void qs_qat_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm)
{
    uint64_t s = hash3(seed, (uint64_t)epoch, 0x51a7);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {   /* Fisher–Yates; the modulo bias is negligible at 2^64 */
        int64_t j = (int64_t)(qs_splitmix64(&s) % (uint64_t)(i + 1));
        int64_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
}

/* --- options --------------------------------------------------------------------------------- */

int qs_qat_opts_from_config(const qs_qconfig *c, qs_qat_opts *o, qs_err *e)
{
    memset(o, 0, sizeof *o);
    o->epochs = c->qat.epochs;
    o->batch = c->qat.batch_size;
    o->max_steps = c->qat.steps;
    o->lr = c->qat.lr;
    o->momentum = c->qat.momentum;
    o->weight_decay = c->qat.weight_decay;
    o->clip_grad = c->qat.clip_grad;
    o->learn_ranges = c->qat.learn_ranges;
    o->flip = c->qat.flip;
    o->bn_momentum = 0.1;
    o->seed = 0x5eed;
    const char *opt = c->qat.optimizer, *sch = c->qat.schedule;
    if (!strcmp(opt, "adam")) o->optimizer = QS_OPT_ADAM;
    else if (!strcmp(opt, "sgd")) o->optimizer = QS_OPT_SGD;
    else if (!strcmp(opt, "nesterov")) o->optimizer = QS_OPT_NESTEROV;
    else return qs_error(e, QS_EINVAL, "config.qat.optimizer: unknown optimiser '%s' (adam, sgd, nesterov)", opt);
    if (!strcmp(sch, "cosine")) o->schedule = QS_SCHED_COSINE;
    else if (!strcmp(sch, "step")) o->schedule = QS_SCHED_STEP;
    else if (!strcmp(sch, "constant")) o->schedule = QS_SCHED_CONSTANT;
    else return qs_error(e, QS_EINVAL, "config.qat.schedule: unknown schedule '%s' (cosine, step, constant)", sch);
    return 0;
}

static const char *optim_name(qs_optim_kind k)
{
    return k == QS_OPT_ADAM ? "adam" : k == QS_OPT_NESTEROV ? "nesterov" : "sgd";
}

/* --- the trainer ----------------------------------------------------------------------------- */

enum { P_WEIGHT, P_OTHER, P_SCALE, P_ZERO };

typedef struct param {
    int value;        /* initializer's value id in sim->g */
    int kind;
    int q;            /* quantizer (P_SCALE, P_ZERO), -1 */
    int64_t n;
    float *g, *m, *v; /* accumulated gradient, optimiser state */
    float gscale;     /* LSQ gradient scale (1 for weights and biases) */
} param;

typedef struct bn_track {
    int node, in, mean, var;   /* value ids */
    int64_t c;
    double *bm, *bv;           /* this step's batch statistics, summed over micro-batches */
} bn_track;

struct qs_qat {
    qs_quantsim *sim;
    qs_qat_opts o;
    qs_optim opt;
    const qs_pl_data *train;
    const int64_t *labels;
    qs_exec *x;
    int64_t batch, micro, iters, total;
    int64_t classes;
    int np;
    param *p;
    int64_t *pfirst;          /* [np + 1]: the first piece (PIECE elements) of each parameter */
    const qs_tensor **gsrc;   /* [np]: this micro-batch's gradient of each parameter (NULL: none) */
    float **gptr;
    int64_t *gn;
    int nbn;
    bn_track *bn;
    int64_t *perm, perm_epoch;
    int64_t *lab;             /* labels of the current micro-batch */
    qs_tensor *dlogits;
    const qs_tensor **dout;
    int epoch;
    int64_t iter, step;
};

/* The float initializer behind input j of node n: directly, or the input of the FakeQuant that
 * feeds it (a quantized weight or bias). -1 when it is computed. */
static int param_source(const qs_graph *g, const qs_node *n, int j)
{
    if (j >= n->nin || n->in[j] < 0)
        return -1;
    int v = n->in[j];
    int prod = g->values[v].producer;
    if (prod >= 0 && qs_node_is_fakequant(&g->nodes[prod]))
        v = g->nodes[prod].in[0];
    const qs_tensor *t = v >= 0 ? g->values[v].init : NULL;
    return t && t->dtype == QS_F32 && g->values[v].producer < 0 ? v : -1;
}

static int add_param(qs_qat *t, char *seen, int v, int kind, int q)
{
    if (v < 0 || seen[v])
        return 0;
    param *np = realloc(t->p, (t->np + 1) * sizeof *np);
    if (!np)
        return QS_ENOMEM;
    t->p = np;
    seen[v] = 1;
    t->p[t->np++] = (param){ .value = v, .kind = kind, .q = q, .n = qs_numel(t->sim->g->values[v].init),
                             .gscale = 1 };
    return 0;
}

static int find_params(qs_qat *t, qs_err *e)
{
    qs_graph *g = t->sim->g;
    char *seen = calloc(g->nvalues + 1, 1);
    if (!seen)
        return qs_error(e, QS_ENOMEM, "out of memory");
    int rc = 0;
    for (int i = 0; i < g->nnodes && rc == 0; i++) {
        const qs_node *n = &g->nodes[i];
        if (qs_node_is_op(n, "Conv") || qs_node_is_op(n, "ConvTranspose") || qs_node_is_op(n, "Gemm")) {
            rc = add_param(t, seen, param_source(g, n, 1), P_WEIGHT, -1);
            if (rc == 0)
                rc = add_param(t, seen, param_source(g, n, 2), P_OTHER, -1);
        } else if (qs_node_is_op(n, "MatMul")) {
            for (int j = 0; j < 2 && rc == 0; j++)
                rc = add_param(t, seen, param_source(g, n, j), P_WEIGHT, -1);
        } else if (qs_node_is_op(n, "BatchNormalization") && n->nin >= 5) {
            for (int j = 1; j <= 2 && rc == 0; j++)
                rc = add_param(t, seen, param_source(g, n, j), P_OTHER, -1);
        }
    }
    for (int i = 0; i < t->sim->nq && rc == 0 && t->o.learn_ranges; i++) {
        const qs_quantizer *q = &t->sim->q[i];
        if (q->kind == QS_Q_BIAS)
            continue;   /* derived: s_in·s_w */
        rc = add_param(t, seen, q->scale, P_SCALE, i);
        if (rc == 0 && !q->symmetric)
            rc = add_param(t, seen, q->zero, P_ZERO, i);
    }
    free(seen);
    return rc < 0 ? qs_error(e, QS_ENOMEM, "out of memory") : 0;
}

static int find_bns(qs_qat *t, qs_err *e)
{
    qs_graph *g = t->sim->g;
    for (int i = 0; i < g->nnodes; i++) {
        const qs_node *n = &g->nodes[i];
        if (!qs_node_is_op(n, "BatchNormalization") || n->nin < 5)
            continue;
        int mean = n->in[3], var = n->in[4];
        const qs_tensor *tm = mean >= 0 ? g->values[mean].init : NULL, *tv = var >= 0 ? g->values[var].init : NULL;
        if (!tm || !tv || tm->dtype != QS_F32 || tv->dtype != QS_F32 || qs_numel(tm) != qs_numel(tv)) {
            char b[256];
            return qs_error(e, QS_EUNSUPPORTED, "%s: training needs its running mean and variance as float "
                            "initializers", qs_node_label(g, i, b, sizeof b));
        }
        bn_track *nb = realloc(t->bn, (t->nbn + 1) * sizeof *nb);
        if (!nb)
            return qs_error(e, QS_ENOMEM, "out of memory");
        t->bn = nb;
        bn_track *b = &t->bn[t->nbn++];
        *b = (bn_track){ .node = i, .in = n->in[0], .mean = mean, .var = var, .c = qs_numel(tm) };
        b->bm = calloc(b->c + 1, sizeof *b->bm);
        b->bv = calloc(b->c + 1, sizeof *b->bv);
        if (!b->bm || !b->bv)
            return qs_error(e, QS_ENOMEM, "out of memory");
    }
    return 0;
}

void qs_qat_free(qs_qat *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->np; i++) {
        free(t->p[i].g);
        free(t->p[i].m);
        free(t->p[i].v);
    }
    free(t->p);
    for (int i = 0; i < t->nbn; i++) {
        free(t->bn[i].bm);
        free(t->bn[i].bv);
    }
    free(t->bn);
    free(t->gptr);
    free(t->gn);
    free(t->pfirst);
    free(t->gsrc);
    free(t->perm);
    free(t->lab);
    free(t->dout);
    qs_tensor_free(t->dlogits);
    qs_exec_free(t->x);
    free(t);
}

qs_qat *qs_qat_new(qs_quantsim *sim, const qs_qat_opts *o, const qs_pl_data *train, const int64_t *labels,
                   qs_err *e)
{
    qs_graph *g = sim->g;
    if (!train || !train->d || train->rows <= 0 || !labels) {
        qs_error(e, QS_EINVAL, "training needs labelled training data");
        return NULL;
    }
    if (o->epochs < 0 || o->batch < 1 || !(o->lr >= 0)) {
        qs_error(e, QS_EINVAL, "training: bad options (epochs %d, batch %lld, lr %g)", o->epochs, (long long)o->batch,
                 o->lr);
        return NULL;
    }
    if (g->noutputs < 1) {
        qs_error(e, QS_EINVAL, "training needs a model output (the logits)");
        return NULL;
    }
    qs_qat *t = calloc(1, sizeof *t);
    if (!t) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    t->sim = sim;
    t->o = *o;
    t->opt = qs_optim_make(o->optimizer, o->momentum, o->weight_decay);
    t->train = train;
    t->labels = labels;
    t->batch = o->batch < train->rows ? o->batch : train->rows;
    t->iters = train->rows / t->batch;
    t->total = (int64_t)o->epochs * t->iters;
    if (o->max_steps > 0 && o->max_steps < t->total)
        t->total = o->max_steps;
    t->perm_epoch = -1;
    if (find_params(t, e) < 0 || find_bns(t, e) < 0)
        goto fail;
    if (!(t->x = qs_exec_new(g, QS_EXEC_TRAIN, e)))
        goto fail;
    for (int v = 0; v < g->nvalues; v++)
        qs_exec_set_trainable(t->x, v, 0);
    for (int i = 0; i < t->np; i++)
        qs_exec_set_trainable(t->x, t->p[i].value, 1);
    qs_exec_set_pool(t->x, o->pool);
    if (qs_exec_plan(t->x, t->batch, e) < 0) {
        qs_error_prefix(e, "planning training at batch %lld: ", (long long)t->batch);
        goto fail;
    }
    t->micro = qs_exec_batch(t->x);
    if (t->micro < 1 || t->batch % t->micro) {
        qs_error(e, QS_EUNSUPPORTED, "the model fixes its batch to %lld, which does not divide the training batch "
                 "%lld", (long long)t->micro, (long long)t->batch);
        goto fail;
    }
    const qs_tensor *y = qs_exec_output(t->x, 0);
    if (!y || y->dtype != QS_F32 || y->ndim < 2 || y->shape[0] != t->micro) {
        qs_error(e, QS_EINVAL, "training needs float logits [N, classes] as the model's first output '%s'",
                 g->values[g->outputs[0]].name);
        goto fail;
    }
    t->classes = qs_numel(y) / t->micro;
    for (int64_t r = 0; r < train->rows; r++)
        if (labels[r] < 0 || labels[r] >= t->classes) {
            qs_error(e, QS_EINVAL, "training label %lld of sample %lld is outside the model's %lld classes",
                     (long long)labels[r], (long long)r, (long long)t->classes);
            goto fail;
        }
    t->dlogits = qs_tensor_new(QS_F32, y->ndim, y->shape);
    t->dout = calloc(g->noutputs + 1, sizeof *t->dout);
    t->lab = malloc((t->micro + 1) * sizeof *t->lab);
    t->perm = malloc((train->rows + 1) * sizeof *t->perm);
    t->gptr = malloc((t->np + 1) * sizeof *t->gptr);
    t->gn = malloc((t->np + 1) * sizeof *t->gn);
    t->pfirst = calloc(t->np + 1, sizeof *t->pfirst);
    t->gsrc = calloc(t->np + 1, sizeof *t->gsrc);
    if (!t->dlogits || !t->dout || !t->lab || !t->perm || !t->gptr || !t->gn || !t->pfirst || !t->gsrc)
        goto oom;
    t->dout[0] = t->dlogits;
    for (int i = 0; i < t->np; i++) {
        param *p = &t->p[i];
        p->g = calloc(p->n + 1, sizeof *p->g);
        p->m = calloc(p->n + 1, sizeof *p->m);
        p->v = o->optimizer == QS_OPT_ADAM ? calloc(p->n + 1, sizeof *p->v) : NULL;
        if (!p->g || !p->m || (o->optimizer == QS_OPT_ADAM && !p->v))
            goto oom;
        t->gptr[i] = p->g;
        t->gn[i] = p->n;
        t->pfirst[i + 1] = t->pfirst[i] + (p->n + PIECE - 1) / PIECE;
        if (p->q >= 0) {
            /* LSQ: g = 1 / sqrt(N · Qp), N = elements per channel of one sample */
            const qs_quantizer *q = &sim->q[p->q];
            const qs_tensor *xv = qs_exec_value(t->x, q->value);
            double per = xv ? (double)qs_numel(xv) / (q->nch > 0 ? q->nch : 1) : 1;
            if (q->kind != QS_Q_WEIGHT)
                per /= (double)t->micro;
            double qp = q->grid.qmax > 0 ? q->grid.qmax : 1;
            p->gscale = (float)(1 / sqrt(per * qp > 1 ? per * qp : 1));
        }
    }
    return t;
oom:
    qs_error(e, QS_ENOMEM, "out of memory setting up training");
fail:
    qs_qat_free(t);
    return NULL;
}

void qs_qat_set_abort(qs_qat *t, atomic_int *flag) { qs_exec_set_abort(t->x, flag); }
int64_t qs_qat_iterations(const qs_qat *t) { return t->iters; }
int64_t qs_qat_total_steps(const qs_qat *t) { return t->total; }
int64_t qs_qat_batch(const qs_qat *t) { return t->batch; }
int qs_qat_done(const qs_qat *t) { return t->step >= t->total; }
int qs_qat_nbn(const qs_qat *t) { return t->nbn; }

void qs_qat_position(const qs_qat *t, int *epoch, int64_t *iter, int64_t *step)
{
    if (epoch) *epoch = t->epoch;
    if (iter) *iter = t->iter;
    if (step) *step = t->step;
}

double qs_qat_lr(const qs_qat *t) { return qs_lr_at(t->o.schedule, t->o.lr, t->step, t->total, t->o.warmup); }

/* Copies rows idx[0..n) of the training set into the plan's inputs, flipping images as asked. */
static int fill_inputs(qs_qat *t, const int64_t *idx, int64_t n, int64_t step, int64_t row0, int flip, qs_err *e)
{
    qs_graph *g = t->sim->g;
    for (int i = 0; i < g->ninputs; i++) {
        qs_tensor *dst = qs_exec_input(t->x, i);
        const qs_tensor *src = qs_dataset_array(t->train->d, t->train->arrays[i]);
        int64_t per = qs_numel(dst) / dst->shape[0];
        size_t rowb = (size_t)per * qs_dtype_size(dst->dtype);
        for (int64_t r = 0; r < n; r++) {
            qs_tensor row = *dst;
            row.shape[0] = 1;
            row.owns_data = 0;
            row.data = (char *)dst->data + r * rowb;
            int rc = qs_copy_rows(src, idx[r], 1, &row, e);
            if (rc < 0)
                return qs_error_prefix(e, "training sample %lld: ", (long long)idx[r]);
            if (flip && dst->ndim == 4 && dst->dtype == QS_F32 && (hash3(t->o.seed, (uint64_t)step, (uint64_t)(row0 + r)) & 1)) {
                int64_t w = dst->shape[3], lines = per / (w > 0 ? w : 1);
                float *f = qs_f32(&row);
                for (int64_t l = 0; l < lines; l++)
                    for (int64_t a = 0, b = w - 1; a < b; a++, b--) {
                        float tmp = f[l * w + a];
                        f[l * w + a] = f[l * w + b];
                        f[l * w + b] = tmp;
                    }
            }
        }
    }
    return 0;
}

static void ensure_perm(qs_qat *t, int64_t epoch)
{
    if (t->perm_epoch != epoch) {
        qs_qat_permutation(t->o.seed, epoch, t->train->rows, t->perm);
        t->perm_epoch = epoch;
    }
}

/* adds this micro-batch's BN batch statistics (mean, unbiased variance) into the trackers */
static int bn_collect(qs_qat *t, double weight, qs_err *e)
{
    for (int b = 0; b < t->nbn; b++) {
        bn_track *k = &t->bn[b];
        const qs_tensor *xin = qs_exec_value(t->x, k->in);
        float *mean = malloc((k->c + 1) * sizeof *mean), *var = malloc((k->c + 1) * sizeof *var);
        int rc = (!mean || !var) ? QS_ENOMEM : !xin || xin->ndim < 2 || xin->shape[1] != k->c ? QS_EINVAL
                                                                                               : qs_bn_batch_stats(xin, mean, var);
        if (rc == 0) {
            double cnt = (double)qs_numel(xin) / (double)k->c, unb = cnt > 1 ? cnt / (cnt - 1) : 1;
            for (int64_t c = 0; c < k->c; c++) {
                k->bm[c] += weight * mean[c];
                k->bv[c] += weight * var[c] * unb;
            }
        }
        free(mean);
        free(var);
        if (rc < 0)
            return qs_error(e, rc, "BatchNormalization statistics of '%s': %s", t->sim->g->values[k->in].name,
                            rc == QS_ENOMEM ? "out of memory" : "unexpected input shape");
    }
    return 0;
}

static void bn_clear(qs_qat *t)
{
    for (int b = 0; b < t->nbn; b++) {
        memset(t->bn[b].bm, 0, t->bn[b].c * sizeof(double));
        memset(t->bn[b].bv, 0, t->bn[b].c * sizeof(double));
    }
}

/* running ← (1 − m)·running + m·batch; m = 1 sets them */
static void bn_apply(qs_qat *t, double m)
{
    qs_graph *g = t->sim->g;
    for (int b = 0; b < t->nbn; b++) {
        bn_track *k = &t->bn[b];
        float *rm = qs_f32(g->values[k->mean].init), *rv = qs_f32(g->values[k->var].init);
        for (int64_t c = 0; c < k->c; c++) {
            rm[c] = (float)((1 - m) * rm[c] + m * k->bm[c]);
            rv[c] = (float)((1 - m) * rv[c] + m * k->bv[c]);
        }
    }
}

/* after an update: scales positive, zero points inside the grid, bias grids follow */
static void constrain_ranges(qs_qat *t)
{
    qs_graph *g = t->sim->g;
    for (int i = 0; i < t->np; i++) {
        param *p = &t->p[i];
        float *w = qs_f32(g->values[p->value].init);
        if (p->kind == P_SCALE) {
            for (int64_t j = 0; j < p->n; j++)
                if (!(w[j] >= MIN_SCALE))
                    w[j] = MIN_SCALE;
        } else if (p->kind == P_ZERO) {
            qs_grid gr = t->sim->q[p->q].grid;
            for (int64_t j = 0; j < p->n; j++)
                w[j] = w[j] < gr.qmin ? gr.qmin : w[j] > gr.qmax ? gr.qmax : w[j];
        }
    }
    qs_quantsim_update_bias(t->sim);
}

/* The step's per-element passes over the parameters, split into pieces of PIECE elements for the
 * pool: element by element, so the same bits whatever the threads. */

typedef struct {
    qs_qat *t;
    int64_t mb;
    int last;    /* the step's last micro-batch: the LSQ gradient scale applies */
    double lr;
} step_job;

/* piece u as parameter i (searched from the given i on) and its elements [b, e) */
static int piece(const qs_qat *t, int64_t u, int i, int64_t *b, int64_t *e)
{
    while (u >= t->pfirst[i + 1])
        i++;
    *b = (u - t->pfirst[i]) * PIECE;
    *e = *b + PIECE < t->p[i].n ? *b + PIECE : t->p[i].n;
    return i;
}

/* the micro-batch's gradients into p->g: copied (the first), added (the others), then scaled */
static void gather_pieces(void *arg, int64_t u0, int64_t u1, int worker)
{
    const step_job *j = arg;
    int64_t b, e;
    int i = 0;
    for (int64_t u = u0; u < u1; u++) {
        i = piece(j->t, u, i, &b, &e);
        param *p = &j->t->p[i];
        const qs_tensor *gr = j->t->gsrc[i];
        if (j->mb == 0 && !gr)
            memset(p->g + b, 0, (e - b) * sizeof *p->g);
        else if (j->mb == 0)
            memcpy(p->g + b, qs_f32(gr) + b, (e - b) * sizeof *p->g);
        else if (gr)
            for (int64_t k = b; k < e; k++)
                p->g[k] += qs_f32(gr)[k];
        if (j->last && p->gscale != 1)
            for (int64_t k = b; k < e; k++)
                p->g[k] *= p->gscale;
    }
}

static void update_pieces(void *arg, int64_t u0, int64_t u1, int worker)
{
    const step_job *j = arg;
    qs_qat *t = j->t;
    int64_t b, e;
    int i = 0;
    for (int64_t u = u0; u < u1; u++) {
        i = piece(t, u, i, &b, &e);
        param *p = &t->p[i];
        qs_optim_update(&t->opt, qs_f32(t->sim->g->values[p->value].init) + b, p->g + b, p->m ? p->m + b : NULL,
                        p->v ? p->v + b : NULL, e - b, j->lr, t->step + 1, p->kind == P_WEIGHT);
    }
}

int qs_qat_step(qs_qat *t, double *loss, qs_err *e)
{
    if (qs_qat_done(t))
        return qs_error(e, QS_EINVAL, "training is already complete (%lld steps)", (long long)t->total);
    qs_graph *g = t->sim->g;
    ensure_perm(t, t->epoch);
    const int64_t *idx = t->perm + t->iter * t->batch;
    double lsum = 0;
    int rc;
    bn_clear(t);
    for (int64_t mb = 0; mb < t->batch; mb += t->micro) {
        if ((rc = fill_inputs(t, idx + mb, t->micro, t->step, mb, t->o.flip, e)) < 0)
            return rc;
        if ((rc = qs_exec_forward(t->x, e)) < 0)
            return rc;
        if (t->nbn && (rc = bn_collect(t, (double)t->micro / t->batch, e)) < 0)
            return rc;
        const qs_tensor *y = qs_exec_output(t->x, 0);
        for (int64_t r = 0; r < t->micro; r++)
            t->lab[r] = t->labels[idx[mb + r]];
        qs_tensor y2 = *y, d2 = *t->dlogits;
        y2.ndim = d2.ndim = 2;
        y2.shape[1] = d2.shape[1] = t->classes;
        y2.owns_data = d2.owns_data = 0;
        float l = qs_loss_softmax_xent(&y2, t->lab, &d2);
        if (!isfinite(l))
            return qs_error(e, QS_EINVAL, "the training loss is not finite at step %lld (epoch %d): the learning rate "
                            "may be too high", (long long)t->step + 1, t->epoch + 1);
        lsum += (double)l * t->micro / t->batch;
        if (t->micro != t->batch) {
            float f = (float)t->micro / (float)t->batch;
            for (int64_t k = 0; k < qs_numel(t->dlogits); k++)
                qs_f32(t->dlogits)[k] *= f;
        }
        if ((rc = qs_exec_backward(t->x, t->dout, e)) < 0)
            return rc;
        for (int i = 0; i < t->np; i++)
            t->gsrc[i] = qs_exec_grad(t->x, t->p[i].value);
        step_job j = { t, mb, mb + t->micro >= t->batch, 0 };
        qs_threadpool_for(t->o.pool, qs_threadpool_size(t->o.pool), t->pfirst[t->np], 1, gather_pieces, &j);
    }
    double norm = qs_clip_grad_norm(t->gptr, t->gn, t->np, t->o.clip_grad);
    if (!isfinite(norm))
        return qs_error(e, QS_EINVAL, "the gradients are not finite at step %lld (epoch %d)", (long long)t->step + 1,
                        t->epoch + 1);
    step_job j = { t, 0, 0, qs_qat_lr(t) };
    qs_threadpool_for(t->o.pool, qs_threadpool_size(t->o.pool), t->pfirst[t->np], 1, update_pieces, &j);
    constrain_ranges(t);
    if (t->nbn)
        bn_apply(t, t->o.bn_momentum);
    qs_graph_weights_changed(g);
    *loss = lsum;
    t->step++;
    if (++t->iter >= t->iters) {
        t->iter = 0;
        t->epoch++;
    }
    return 0;
}

void qs_qat_finalize(qs_qat *t)
{
    qs_quantsim *sim = t->sim;
    for (int i = 0; i < sim->nq; i++) {
        qs_quantizer *q = &sim->q[i];
        if (q->kind == QS_Q_BIAS)
            continue;
        float *s = qs_quantsim_scales(sim, i), *z = qs_quantsim_zeros(sim, i);
        for (int c = 0; c < q->nch; c++) {
            if (!(s[c] >= MIN_SCALE))
                s[c] = MIN_SCALE;
            float r = qs_round_even(z[c]);
            z[c] = r < q->grid.qmin ? q->grid.qmin : r > q->grid.qmax ? q->grid.qmax : r;
        }
    }
    qs_quantsim_update_bias(sim);
}

int qs_qat_bn_reestimate(qs_qat *t, int64_t samples, qs_err *e)
{
    if (!t->nbn)
        return 0;
    int64_t n = samples < t->train->rows ? samples : t->train->rows;
    int64_t batches = n / t->micro > 0 ? n / t->micro : 1;
    if (batches * t->micro > t->train->rows)
        batches = t->train->rows / t->micro;
    int64_t *perm = malloc((t->train->rows + 1) * sizeof *perm);
    if (!perm)
        return qs_error(e, QS_ENOMEM, "out of memory");
    qs_qat_permutation(t->o.seed ^ 0xB17E57, -1, t->train->rows, perm);
    bn_clear(t);
    int rc = 0;
    for (int64_t k = 0; k < batches && rc == 0; k++) {
        if ((rc = fill_inputs(t, perm + k * t->micro, t->micro, 0, 0, 0, e)) == 0 &&
            (rc = qs_exec_forward(t->x, e)) == 0)
            rc = bn_collect(t, 1.0 / (double)batches, e);
    }
    free(perm);
    if (rc < 0)
        return rc;
    bn_apply(t, 1.0);   /* the average of the batch statistics, as PyTorch's momentum=None */
    return t->nbn;
}

json_t *qs_qat_summary(const qs_qat *t)
{
    int64_t el[4] = {0}, cnt[4] = {0};
    for (int i = 0; i < t->np; i++) {
        el[t->p[i].kind] += t->p[i].n;
        cnt[t->p[i].kind]++;
    }
    return json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:b}", "parameter_arrays", t->np, "weights",
                     (json_int_t)el[P_WEIGHT], "other_parameters", (json_int_t)el[P_OTHER], "scales",
                     (json_int_t)el[P_SCALE], "zero_points", (json_int_t)el[P_ZERO], "batch", (json_int_t)t->batch,
                     "iterations_per_epoch", (json_int_t)t->iters, "total_steps", (json_int_t)t->total,
                     "batchnorm_trained", t->nbn, "ranges_learned", t->o.learn_ranges);
}

/* --- checkpoints ----------------------------------------------------------------------------- */

static int mkdir_p1(const char *dir, qs_err *e)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return qs_error(e, QS_EIO, "cannot create %s: %s", dir, strerror(errno));
    return 0;
}

/* removes params-*.npz files in dir other than keep */
static void drop_old_params(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[4096];
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (strncmp(de->d_name, "params-", 7) || l < 4 || strcmp(de->d_name + l - 4, ".npz") || !strcmp(de->d_name, keep))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
}

int qs_qat_save(const qs_qat *t, const char *dir, json_t *meta, qs_err *e)
{
    qs_graph *g = t->sim->g;
    int rc;
    if ((rc = mkdir_p1(dir, e)) < 0)
        return rc;
    int ninit = 0;
    for (int v = 0; v < g->nvalues; v++)
        ninit += g->values[v].init && g->values[v].init->dtype == QS_F32;
    int nmax = ninit + 2 * t->np;
    char **names = calloc(nmax + 1, sizeof *names);
    const qs_tensor **arrs = calloc(nmax + 1, sizeof *arrs);
    qs_tensor *views = calloc(2 * t->np + 1, sizeof *views);
    json_t *inits = json_array(), *params = json_array();
    int n = 0;
    if (!names || !arrs || !views) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int v = 0; v < g->nvalues; v++) {
        const qs_tensor *it = g->values[v].init;
        if (!it || it->dtype != QS_F32)
            continue;
        char nm[32];
        snprintf(nm, sizeof nm, "i%d", n);
        names[n] = strdup(nm);
        arrs[n++] = it;
        json_array_append_new(inits, json_pack("{s:s, s:I}", "name", g->values[v].name, "numel", (json_int_t)qs_numel(it)));
    }
    for (int i = 0; i < t->np; i++) {
        const param *p = &t->p[i];
        for (int k = 0; k < (p->v ? 2 : 1); k++) {
            qs_tensor *vw = &views[2 * i + k];
            int64_t len = p->n;
            *vw = (qs_tensor){ .dtype = QS_F32, .ndim = 1, .shape = { len }, .data = k ? p->v : p->m };
            char nm[32];
            snprintf(nm, sizeof nm, "%c%d", k ? 'v' : 'm', i);
            names[n] = strdup(nm);
            arrs[n++] = vw;
        }
        json_array_append_new(params, json_pack("{s:s, s:I}", "name", g->values[p->value].name, "numel",
                                                (json_int_t)p->n));
    }
    for (int i = 0; i < n; i++)
        if (!names[i]) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            goto out;
        }
    char file[64], path[4096], tmp[4200];
    snprintf(file, sizeof file, "params-%lld.npz", (long long)t->step);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, file);
    if ((rc = qs_npz_save(tmp, n, (const char *const *)names, arrs, e)) < 0)
        goto out;
    if (rename(tmp, path) < 0) {
        rc = qs_error(e, QS_EIO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    json_t *st = json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:s, s:I, s:b, s:s, s:O, s:O, s:O}", "format",
                           CKPT_FORMAT, "version", CKPT_VERSION, "epoch", t->epoch, "iteration", (json_int_t)t->iter,
                           "step", (json_int_t)t->step, "batch", (json_int_t)t->batch, "iterations_per_epoch",
                           (json_int_t)t->iters, "optimizer", optim_name(t->o.optimizer), "seed",
                           (json_int_t)t->o.seed, "learn_ranges", t->o.learn_ranges, "params_file", file,
                           "initializers", inits, "parameters", params, "meta", meta ? meta : json_null());
    snprintf(path, sizeof path, "%s/state.json", dir);
    snprintf(tmp, sizeof tmp, "%s/.state.json.tmp", dir);
    if (!st)
        rc = qs_error(e, QS_ENOMEM, "out of memory");
    else if (json_dump_file(st, tmp, JSON_INDENT(1) | JSON_REAL_PRECISION(17)) < 0 || rename(tmp, path) < 0) {
        rc = qs_error(e, QS_EIO, "cannot write %s", path);
        unlink(tmp);
    }
    json_decref(st);
    if (rc == 0)
        drop_old_params(dir, file);
out:
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(arrs);
    free(views);
    json_decref(inits);
    json_decref(params);
    return rc;
}

json_t *qs_qat_read_state(const char *dir, qs_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/state.json", dir);
    json_error_t je;
    json_t *st = json_load_file(path, 0, &je);
    if (!st) {
        qs_error(e, access(path, F_OK) == 0 ? QS_EFORMAT : QS_EIO, "checkpoint %s: %s", path, je.text);
        return NULL;
    }
    if (!json_is_object(st) || !json_is_string(json_object_get(st, "format")) ||
        strcmp(json_string_value(json_object_get(st, "format")), CKPT_FORMAT) ||
        json_integer_value(json_object_get(st, "version")) != CKPT_VERSION) {
        json_decref(st);
        qs_error(e, QS_EFORMAT, "%s is not a quantd QAT checkpoint (format %s, version %d)", path, CKPT_FORMAT,
                 CKPT_VERSION);
        return NULL;
    }
    return st;
}

/* Checks that the checkpoint holds float array key of n elements and copies it into dst (if given). */
static int ckpt_array(const qs_dataset *d, const char *key, int64_t n, float *dst, const char *path, qs_err *e)
{
    int a = qs_dataset_find(d, key);
    const qs_tensor *t = a >= 0 ? qs_dataset_array(d, a) : NULL;
    if (!t || t->dtype != QS_F32 || qs_numel(t) != n)
        return qs_error(e, QS_EFORMAT, "checkpoint %s: array %s is missing or has the wrong size", path, key);
    if (dst)
        memcpy(dst, t->data, (size_t)n * sizeof *dst);
    return 0;
}

int qs_qat_load(qs_qat *t, const char *dir, json_t **meta, qs_err *e)
{
    qs_graph *g = t->sim->g;
    if (meta)
        *meta = NULL;
    json_t *st = qs_qat_read_state(dir, e);
    if (!st)
        return e->code;
    qs_dataset *d = NULL;
    int rc = 0;
    json_int_t batch = json_integer_value(json_object_get(st, "batch"));
    json_int_t seed = json_integer_value(json_object_get(st, "seed"));
    const char *opt = json_string_value(json_object_get(st, "optimizer"));
    int lr = json_is_true(json_object_get(st, "learn_ranges"));
    if (batch != t->batch || (uint64_t)seed != t->o.seed || !opt || strcmp(opt, optim_name(t->o.optimizer)) ||
        lr != !!t->o.learn_ranges) {
        rc = qs_error(e, QS_EINVAL, "the checkpoint in %s was made with batch %lld, optimizer %s, learn_ranges %s; "
                      "this run has batch %lld, optimizer %s, learn_ranges %s: resume with the same training setup",
                      dir, (long long)batch, opt ? opt : "?", lr ? "true" : "false", (long long)t->batch,
                      optim_name(t->o.optimizer), t->o.learn_ranges ? "true" : "false");
        goto out;
    }
    char path[4096];
    const char *file = json_string_value(json_object_get(st, "params_file"));
    if (!file || strchr(file, '/')) {
        rc = qs_error(e, QS_EFORMAT, "checkpoint %s/state.json: bad params_file", dir);
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if ((rc = qs_dataset_open(path, &d, e)) < 0) {
        qs_error_prefix(e, "checkpoint: ");
        goto out;
    }
    json_t *inits = json_object_get(st, "initializers"), *params = json_object_get(st, "parameters"), *it;
    size_t k;
    int ninit = 0;
    for (int v = 0; v < g->nvalues; v++)
        ninit += g->values[v].init && g->values[v].init->dtype == QS_F32;
    if (!json_is_array(inits) || (int)json_array_size(inits) != ninit || !json_is_array(params) ||
        (int)json_array_size(params) != t->np) {
        rc = qs_error(e, QS_EINVAL, "the checkpoint in %s holds %zu initializers and %zu trained arrays; this model has "
                      "%d and %d: it was made for another model or configuration", dir, json_array_size(inits),
                      json_array_size(params), ninit, t->np);
        goto out;
    }
    /* check everything before changing anything */
    json_array_foreach(inits, k, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        int v = name ? qs_graph_find_value(g, name) : -1;
        if (v < 0 || !g->values[v].init || g->values[v].init->dtype != QS_F32 ||
            qs_numel(g->values[v].init) != json_integer_value(json_object_get(it, "numel"))) {
            rc = qs_error(e, QS_EINVAL, "the checkpoint in %s has initializer '%s' that this model lacks or shapes "
                          "differently: it was made for another model or configuration", dir, name ? name : "?");
            goto out;
        }
    }
    json_array_foreach(params, k, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        if (!name || strcmp(name, g->values[t->p[k].value].name) ||
            json_integer_value(json_object_get(it, "numel")) != t->p[k].n) {
            rc = qs_error(e, QS_EINVAL, "the checkpoint in %s trains '%s' where this run trains '%s': it was made for "
                          "another model or configuration", dir, name ? name : "?", g->values[t->p[k].value].name);
            goto out;
        }
    }
    /* every array and the position are checked before anything changes: a bad checkpoint leaves
     * the trainer as it was */
    json_int_t epoch = json_integer_value(json_object_get(st, "epoch")),
               iter = json_integer_value(json_object_get(st, "iteration")),
               step = json_integer_value(json_object_get(st, "step"));
    if (iter < 0 || iter >= t->iters || step < 0 || epoch < 0 || epoch > 1000000) {
        rc = qs_error(e, QS_EFORMAT, "checkpoint %s/state.json: bad position", dir);
        goto out;
    }
    char key[32];
    json_array_foreach(inits, k, it) {
        int v = qs_graph_find_value(g, json_string_value(json_object_get(it, "name")));
        snprintf(key, sizeof key, "i%zu", k);
        if ((rc = ckpt_array(d, key, qs_numel(g->values[v].init), NULL, path, e)) < 0)
            goto out;
    }
    for (int i = 0; i < t->np; i++) {
        snprintf(key, sizeof key, "m%d", i);
        if ((rc = ckpt_array(d, key, t->p[i].n, NULL, path, e)) < 0)
            goto out;
        snprintf(key, sizeof key, "v%d", i);
        if (t->p[i].v && (rc = ckpt_array(d, key, t->p[i].n, NULL, path, e)) < 0)
            goto out;
    }
    json_array_foreach(inits, k, it) {
        int v = qs_graph_find_value(g, json_string_value(json_object_get(it, "name")));
        snprintf(key, sizeof key, "i%zu", k);
        ckpt_array(d, key, qs_numel(g->values[v].init), qs_f32(g->values[v].init), path, e);
    }
    for (int i = 0; i < t->np; i++) {
        snprintf(key, sizeof key, "m%d", i);
        ckpt_array(d, key, t->p[i].n, t->p[i].m, path, e);
        snprintf(key, sizeof key, "v%d", i);
        if (t->p[i].v)
            ckpt_array(d, key, t->p[i].n, t->p[i].v, path, e);
    }
    qs_graph_weights_changed(g);   /* the initializers were read back */
    t->epoch = (int)epoch;
    t->iter = iter;
    t->step = step;
    if (meta)
        *meta = json_incref(json_object_get(st, "meta"));
out:
    qs_dataset_close(d);
    json_decref(st);
    return rc;
}
