/* Bias correction (paper §3.3); the method is described in biascorr.h.
 *
 * Layers are found in the simulation graph by their weight quantizer (the node's weight input is
 * that quantizer's FakeQuant output); the bias a layer adds is the float initializer behind its
 * bias FakeQuant, or the initializer itself when the bias is not quantized. The empirical passes
 * measure with the executor's per-node observer, which hands over each layer's output while the
 * graph runs (the layer outputs are kept from Relu/Clip fusion, so they are pre-activation), so
 * nothing but per-channel sums is kept; the quantized pass writes its per-batch correction into
 * that output before the next node reads it. Each pass gets a fresh runner: a bias added to a layer
 * that had none changes the graph, and a new plan is cheap next to a pass over the data. */
#include "quant/biascorr.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "runner.h"

static char *xstrdup(const char *s) { return strdup(s ? s : ""); }

qs_biascorr_config qs_biascorr_config_default(void)
{
    return (qs_biascorr_config){ .samples = 512, .batch = 32, .quantize_activations = 0 };
}

/* --- layers -------------------------------------------------------------------------------------- */

enum { K_CONV, K_CONVT, K_GEMM };

typedef struct bc_layer {
    int node;            /* in sim->g */
    int wq;              /* weight quantizer */
    int kind;
    int64_t nch;         /* output channels (axis 1 of the output) */
    int bias_added;
    double *sum_fp;      /* empirical: [batch][nch] output sums of the FP32 pass */
    int64_t *cnt_fp;     /* empirical: [batch] elements summed per channel */
    double *corr;        /* empirical: Σ over batches of rows × the batch's mean error */
    int64_t rows_q;      /* empirical: rows of the quantized pass */
} bc_layer;

/* The float bias initializer layer node ni adds: through its bias FakeQuant, or directly.
 * -1: the layer has no bias; -2: it has one that cannot be corrected per channel (why says why). */
static int bias_value(const qs_graph *g, int ni, int64_t nch, const char **why)
{
    const qs_node *n = &g->nodes[ni];
    if (n->nin < 3 || n->in[2] < 0)
        return -1;
    int v = n->in[2], p = g->values[v].producer;
    if (p >= 0 && qs_node_is_fakequant(&g->nodes[p])) {
        if (qs_graph_count_reads(g, v) != 1) {
            *why = "its quantized bias is shared with other layers";
            return -2;
        }
        v = g->nodes[p].in[0];
    }
    const qs_tensor *b = v >= 0 ? g->values[v].init : NULL;
    if (!b || b->dtype != QS_F32) {
        *why = "its bias is not a float32 constant";
        return -2;
    }
    if (qs_numel(b) != nch || b->ndim > 2 || (b->ndim == 2 && b->shape[0] != 1)) {
        *why = "its bias is not one value per output channel";
        return -2;
    }
    if (qs_graph_count_reads(g, v) != 1) {
        *why = "its bias is shared with other layers";
        return -2;
    }
    return v;
}

/* Layers of the simulation with a weight quantizer, in node (topological) order. */
static int find_layers(qs_quantsim *sim, qs_biascorr_report *rep, bc_layer **out, int *nout, qs_err *e)
{
    qs_graph *g = sim->g;
    bc_layer *ls = calloc(g->nnodes + 1, sizeof *ls);
    int n = 0;
    if (!ls)
        return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
    for (int i = 0; i < g->nnodes; i++) {
        const qs_node *nd = &g->nodes[i];
        int kind = qs_node_is_op(nd, "Conv") ? K_CONV : qs_node_is_op(nd, "ConvTranspose") ? K_CONVT : qs_node_is_op(nd, "Gemm") ? K_GEMM : -1;
        if (kind < 0 || nd->nin < 2 || nd->nout < 1 || nd->out[0] < 0)
            continue;
        int wq = -1;
        for (int q = 0; q < sim->nq; q++)
            if (sim->q[q].kind == QS_Q_WEIGHT && sim->q[q].out == nd->in[1])
                wq = q;
        if (wq < 0)
            continue;   /* not quantized (excluded): nothing to correct */
        const qs_tensor *w = g->values[sim->q[wq].value].init;
        if (!w || w->dtype != QS_F32 || w->ndim < (kind == K_GEMM ? 2 : 3)) {
            free(ls);
            return qs_error(e, QS_EINVAL, "bias correction: the weight of %s '%s' is not a float32 constant of the "
                            "layer's rank", nd->op, nd->name);
        }
        int64_t nch = kind == K_CONV ? w->shape[0]
                    : kind == K_CONVT ? w->shape[1] * qs_node_int(nd, "group", 1)
                    : w->shape[qs_node_int(nd, "transB", 0) ? 0 : 1];
        int rc = 0;
        const char *why = NULL;
        if (qs_quantsim_bypassed(sim, wq))
            rc = qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "its weight quantizer is bypassed");
        else if (kind == K_GEMM && qs_node_int(nd, "transA", 0))   /* its rows are not samples */
            rc = qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "Gemm with transA");
        else if (kind == K_GEMM && qs_node_float(nd, "beta", 1.f) == 0 && nd->nin > 2 && nd->in[2] >= 0)
            rc = qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "Gemm with beta = 0");
        else if (bias_value(g, i, nch, &why) == -2)
            rc = qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "%s", why);
        else {
            ls[n++] = (bc_layer){ .node = i, .wq = wq, .kind = kind, .nch = nch };
            continue;
        }
        if (rc < 0) {
            free(ls);
            return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
        }
    }
    *out = ls;
    *nout = n;
    return 0;
}

/* Subtracts corr (in output units) from layer L's bias, adding a bias when it has none (*added
 * then set, when added is not NULL). */
static int subtract_bias(qs_quantsim *sim, const bc_layer *L, const double *corr, int *added, qs_err *e)
{
    qs_graph *g = sim->g;
    const char *why = NULL;
    int v = bias_value(g, L->node, L->nch, &why);
    if (v == -1) {   /* a float32 bias of zeros as input 2 */
        qs_node *n = &g->nodes[L->node];
        if (n->nin < 3) {
            int *in = realloc(n->in, 3 * sizeof *in);
            if (!in)
                return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
            for (int i = n->nin; i < 3; i++)
                in[i] = -1;
            n->in = in;
            n->nin = 3;
        }
        char base[512];
        snprintf(base, sizeof base, "%s_bias", n->name[0] ? n->name : g->values[n->out[0]].name);
        qs_tensor *t = qs_tensor_new(QS_F32, 1, &L->nch);
        v = t ? qs_graph_new_value(g, base) : -1;
        if (v < 0) {
            qs_tensor_free(t);
            return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
        }
        qs_graph_set_init_steal(g, v, t);
        n = &g->nodes[L->node];
        n->in[2] = v;
        if (L->kind == K_GEMM && qs_node_set_float(n, "beta", 1.f) < 0)   /* there was no C for beta to scale */
            return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
        if (added)
            *added = 1;
    }
    double beta = L->kind == K_GEMM ? qs_node_float(&g->nodes[L->node], "beta", 1.f) : 1;
    float *b = qs_f32(g->values[v].init);
    for (int64_t c = 0; c < L->nch; c++)
        b[c] = (float)(b[c] - corr[c] / beta);
    qs_graph_weights_changed(g);
    return 0;
}

/* Records layer L's correction in the report. */
static int report_layer(const qs_graph *g, const bc_layer *L, const double *corr, qs_biascorr_report *rep, qs_err *e)
{
    qs_biascorr_layer *rl = realloc(rep->layers, (rep->nlayers + 1) * sizeof *rl);
    if (!rl)
        return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
    rep->layers = rl;
    rl += rep->nlayers;
    memset(rl, 0, sizeof *rl);
    rl->name = xstrdup(g->nodes[L->node].name);
    rl->nch = L->nch;
    rl->correction = malloc((L->nch + 1) * sizeof *rl->correction);
    rl->bias_added = L->bias_added;
    rep->nlayers++;
    if (!rl->name || !rl->correction)
        return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
    for (int64_t c = 0; c < L->nch; c++)
        rl->correction[c] = (float)corr[c];
    return 0;
}

/* --- empirical -------------------------------------------------------------------------------------- */

typedef struct observe_state {
    const qs_graph *g;
    bc_layer *ls;
    int nl;
    int *layer_of;       /* per node: layer index, -1 */
    int quantized;       /* this pass: the quantized side */
    int64_t batch;       /* which batch of the pass is running */
    int64_t rows;        /* valid rows in the current batch (the rest is padding) */
    double *mean;        /* scratch: per channel */
    char bad[256];       /* a layer output of unexpected shape */
} observe_state;

/* Called as each layer node has run. FP32 pass: sums its output per channel for this batch. Quantized
 * pass: the batch's mean error per channel, d = mean(y_q) − mean(y_fp), is subtracted from the output
 * in place — the layers after it then see this layer corrected, as they would once its bias is — and
 * added to the layer's correction, weighted by the batch's rows. */
static void observe(void *ud, int node, qs_tensor *const *out, int nout)
{
    observe_state *s = ud;
    int k = s->layer_of[node];
    if (k < 0 || nout < 1 || s->bad[0])
        return;
    bc_layer *L = &s->ls[k];
    qs_tensor *y = out[0];
    if (y->dtype != QS_F32 || y->ndim < 2 || y->shape[1] != L->nch) {
        char sh[128];
        snprintf(s->bad, sizeof s->bad, "the output of '%s' has shape %s; expected %lld channels on axis 1",
                 s->g->nodes[node].name, qs_shape_str(y->ndim, y->shape, sh, sizeof sh), (long long)L->nch);
        return;
    }
    int64_t rows = y->shape[0] < s->rows ? y->shape[0] : s->rows, per = 1;
    for (int d = 2; d < y->ndim; d++)
        per *= y->shape[d];
    double *sum = s->quantized ? s->mean : L->sum_fp + s->batch * L->nch;
    if (s->quantized)
        memset(sum, 0, L->nch * sizeof *sum);
    float *p = qs_f32(y);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < L->nch; c++) {
            const float *q = p + (r * L->nch + c) * per;
            double acc = 0;
            for (int64_t i = 0; i < per; i++)
                acc += q[i];
            sum[c] += acc;
        }
    if (!s->quantized) {
        L->cnt_fp[s->batch] += rows * per;
        return;
    }
    int64_t cnt = L->cnt_fp[s->batch];
    if (cnt != rows * per) {
        snprintf(s->bad, sizeof s->bad, "the output of '%s' changed size between the FP32 and the quantized pass",
                 s->g->nodes[node].name);
        return;
    }
    const double *fp = L->sum_fp + s->batch * L->nch;
    for (int64_t c = 0; c < L->nch; c++) {
        double d = (sum[c] - fp[c]) / (double)cnt;
        L->corr[c] += d * (double)rows;
        float df = (float)d;
        for (int64_t r = 0; r < y->shape[0]; r++) {   /* padding rows too: they are dropped anyway */
            float *q = p + (r * L->nch + c) * per;
            for (int64_t i = 0; i < per; i++)
                q[i] -= df;
        }
    }
    L->rows_q += rows;
}

typedef struct pass_ctx {
    qs_quantsim *sim;
    const qs_pl_data *data;
    const qs_biascorr_config *cfg;
    const qs_pipeline_io *io;
    observe_state *st;
    int64_t n, batch;    /* batch: samples per forward, the same in both passes */
    double t0;
    int pass, npasses;
} pass_ctx;

static int run_pass(pass_ctx *c, qs_err *e)
{
    observe_state *st = c->st;
    qs_runner *r = qs_runner_new(c->sim->g, c->batch ? c->batch : c->cfg->batch, e);
    if (!r)
        return qs_error_prefix(e, "bias correction: ");
    if (c->io)
        qs_runner_set_pool(r, c->io->pool);
    /* fusion on, but the layer outputs kept from it: they are the pre-activation values */
    qs_runner_set_observer_fused(r, observe, st);
    int rc = 0;
    for (int i = 0; i < c->sim->g->nnodes && rc == 0; i++)
        if (st->layer_of[i] >= 0 && qs_runner_keep_value(r, c->sim->g->nodes[i].out[0]) < 0)
            rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
    if (rc == 0 && qs_runner_plan(r, e) < 0)
        rc = qs_error_prefix(e, "bias correction: ");
    int64_t bs = qs_runner_batch(r);
    if (rc == 0 && c->batch && bs != c->batch)
        rc = qs_error(e, QS_EINVAL, "bias correction: the quantized pass runs batches of %lld, the FP32 pass ran %lld",
                      (long long)bs, (long long)c->batch);
    /* per layer and batch of the FP32 pass: its output sums per channel */
    for (int k = 0; k < st->nl && rc == 0 && !c->batch; k++) {
        bc_layer *L = &st->ls[k];
        int64_t nb = (c->n + bs - 1) / bs;
        if (!(L->sum_fp = calloc(nb * L->nch + 1, sizeof(double))) || !(L->cnt_fp = calloc(nb + 1, sizeof(int64_t))))
            rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
    }
    c->batch = bs;
    for (int64_t start = 0; start < c->n && rc == 0; start += bs) {
        int64_t k = c->n - start < bs ? c->n - start : bs;
        st->batch = start / bs;
        st->rows = k;   /* one forward per call: k ≤ the runner's batch */
        rc = qs_runner_stream(r, c->data->d, c->data->arrays, start, k, NULL, NULL, NULL, NULL,
                              c->io ? c->io->abort : NULL, e);
        if (rc == 0 && st->bad[0])
            rc = qs_error(e, QS_ESHAPE, "bias correction: %s", st->bad);
        if (c->io)
            qs_pl_progress(c->io, "bias correction", (double)(c->pass * c->n + start + k),
                           (double)(c->npasses * c->n), c->t0);
    }
    qs_runner_free(r);
    c->pass++;
    return rc;
}

/* Swaps the data of each layer's weight initializer with the FP32 weight the sim keeps aside, if
 * any (qs_quantsim_keep_fp32_weights); a second call swaps back. */
static void swap_fp32_weights(qs_quantsim *sim, const bc_layer *ls, int nl)
{
    for (int k = 0; sim->fp32_w && k < nl; k++) {
        qs_tensor *w = sim->g->values[sim->q[ls[k].wq].value].init, *f = sim->fp32_w[ls[k].wq];
        if (!f)   /* a copy of w made before rounding: same dtype and shape */
            continue;
        void *d = w->data;
        int own = w->owns_data;
        w->data = f->data, w->owns_data = f->owns_data;
        f->data = d, f->owns_data = own;
    }
    qs_graph_weights_changed(sim->g);
}

int qs_biascorr_empirical(qs_quantsim *sim, const qs_pl_data *data, const qs_biascorr_config *cfg,
                          const qs_pipeline_io *io, qs_biascorr_report **report, qs_err *e)
{
    qs_biascorr_config dflt = qs_biascorr_config_default();
    if (!cfg)
        cfg = &dflt;
    if (report)
        *report = NULL;
    if (cfg->batch < 1 || cfg->samples < 1)
        return qs_error(e, QS_EINVAL, "bias correction: samples and batch must be at least 1");
    if (!data || !data->d)
        return qs_error(e, QS_EINVAL, "empirical bias correction needs calibration data");
    int64_t n = data->rows < cfg->samples ? data->rows : cfg->samples;
    if (n < 1)
        return qs_error(e, QS_EINVAL, "empirical bias correction: the calibration data has no samples");
    double t_start = qs_now();
    qs_graph *g = sim->g;
    qs_biascorr_report *rep = calloc(1, sizeof *rep);
    bc_layer *ls = NULL;
    int nl = 0, rc = 0, *saved = NULL;
    int64_t maxch = 1;
    observe_state st = { .g = g };
    if (!rep)
        return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
    rep->method = "empirical";
    rep->samples = n;
    if ((rc = find_layers(sim, rep, &ls, &nl, e)) < 0)
        goto out;
    st.ls = ls;
    st.nl = nl;
    saved = malloc((sim->nq + 1) * sizeof *saved);
    st.layer_of = malloc((g->nnodes + 1) * sizeof *st.layer_of);
    if (!saved || !st.layer_of) {
        rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
        goto out;
    }
    for (int i = 0; i < g->nnodes; i++)
        st.layer_of[i] = -1;
    for (int k = 0; k < nl; k++) {
        st.layer_of[ls[k].node] = k;
        maxch = ls[k].nch > maxch ? ls[k].nch : maxch;
    }
    if (!nl)
        goto out;
    for (int i = 0; i < sim->nq; i++)
        saved[i] = qs_quantsim_bypassed(sim, i);
    pass_ctx pc = { .sim = sim, .data = data, .cfg = cfg, .io = io, .st = &st, .n = n, .t0 = t_start, .npasses = 2 };
    for (int k = 0; k < nl; k++)
        if (!(ls[k].corr = calloc(ls[k].nch + 1, sizeof(double)))) {
            rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
            goto out;
        }
    if (!(st.mean = malloc((maxch + 1) * sizeof *st.mean))) {
        rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
        goto out;
    }

    /* FP32: the simulation with every quantizer passing data through, on the weights from before
     * any rounding pass (GPTQ and AdaRound leave grid values in the initializers) */
    qs_quantsim_bypass_kind(sim, -1, 1);
    swap_fp32_weights(sim, ls, nl);
    rc = run_pass(&pc, e);
    swap_fp32_weights(sim, ls, nl);
    if (rc < 0)
        goto restore;
    /* quantized: weights as the caller left them; activations only when asked and calibrated */
    for (int i = 0; i < sim->nq; i++) {
        const qs_quantizer *q = &sim->q[i];
        int off = saved[i] || (q->kind != QS_Q_WEIGHT && (!cfg->quantize_activations || !q->initialized));
        qs_quantsim_bypass(sim, i, off);
    }
    st.quantized = 1;
    if ((rc = run_pass(&pc, e)) < 0)
        goto restore;
    for (int k = 0; k < nl && rc == 0; k++) {
        bc_layer *L = &ls[k];
        if (!L->rows_q) {   /* never ran (a branch the data does not reach) */
            if (qs_skip_add(&rep->skipped, &rep->nskipped, g->nodes[L->node].name, NULL, "its output was not computed") < 0)
                rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
            continue;
        }
        for (int64_t c = 0; c < L->nch; c++)   /* E[y_q] − E[y_fp]: subtracted from the bias */
            L->corr[c] /= (double)L->rows_q;
        if ((rc = subtract_bias(sim, L, L->corr, &L->bias_added, e)) == 0)
            rc = report_layer(g, L, L->corr, rep, e);
    }
    rep->passes = pc.pass;
restore:
    for (int i = 0; i < sim->nq; i++)
        qs_quantsim_bypass(sim, i, saved[i]);
out:
    for (int k = 0; ls && k < nl; k++) {
        free(ls[k].sum_fp);
        free(ls[k].cnt_fp);
        free(ls[k].corr);
    }
    free(ls);
    free(saved);
    free(st.layer_of);
    free(st.mean);
    rep->seconds = qs_now() - t_start;
    if (rc == 0 && report)
        *report = rep;
    else
        qs_biascorr_report_free(rep);
    return rc;
}

/* --- analytical ----------------------------------------------------------------------------------- */

/* E[max(0, x)] for x ~ N(mu, sigma²) */
static double relu_mean(double mu, double sigma)
{
    if (!(sigma > 0))
        return mu > 0 ? mu : 0;
    double z = mu / sigma;
    return sigma * exp(-0.5 * z * z) / sqrt(2 * 3.14159265358979323846) + mu * 0.5 * erfc(-z / sqrt(2.0));
}

/* Clip(0, hi) → 1 with *hi (∞ when unbounded); anything else → 0 */
static int clip_relu(const qs_graph *g, const qs_node *n, double *hi)
{
    double lo = -INFINITY;
    *hi = INFINITY;
    const qs_tensor *t;
    if (n->nin > 1 && n->in[1] >= 0) {
        if (!(t = qs_graph_const_of(g, n->in[1])) || qs_numel(t) != 1)
            return 0;
        lo = qs_get_f64(t, 0);
    } else if (qs_node_attr(n, "min")) {
        lo = qs_node_float(n, "min", 0);
    }
    if (n->nin > 2 && n->in[2] >= 0) {
        if (!(t = qs_graph_const_of(g, n->in[2])) || qs_numel(t) != 1)
            return 0;
        *hi = qs_get_f64(t, 0);
    } else if (qs_node_attr(n, "max")) {
        *hi = qs_node_float(n, "max", 0);
    }
    return lo == 0 && *hi > 0;
}

static int skip_fakequant(const qs_graph *g, int v)
{
    while (v >= 0 && g->values[v].producer >= 0 && qs_node_is_fakequant(&g->nodes[g->values[v].producer]))
        v = g->nodes[g->values[v].producer].in[0];
    return v;
}

/* E[x] per input channel of layer node ni from the BN record of the layer feeding it; NULL (and
 * *why) when its input does not come from a BN-folded layer. */
static double *input_mean(const qs_graph *g, int ni, int64_t cin, const qs_bn_record *bn, int nbn, const char **why)
{
    int v = skip_fakequant(g, g->nodes[ni].in[0]);
    int p = v >= 0 ? g->values[v].producer : -1;
    int act = 0;   /* 0 none, 1 ReLU, 2 Clip(0, hi) */
    double hi = INFINITY;
    if (p >= 0 && qs_node_is_op(&g->nodes[p], "Relu")) {
        act = 1;
    } else if (p >= 0 && qs_node_is_op(&g->nodes[p], "Clip")) {
        if (!clip_relu(g, &g->nodes[p], &hi)) {
            *why = "its input comes through a Clip other than Clip(0, max)";
            return NULL;
        }
        act = isinf(hi) ? 1 : 2;
    }
    if (act) {
        v = skip_fakequant(g, g->nodes[p].in[0]);
        p = v >= 0 ? g->values[v].producer : -1;
    }
    const qs_bn_record *rec = NULL;
    for (int i = nbn - 1; p >= 0 && i >= 0 && !rec; i--)
        if (bn[i].layer && bn[i].output && !strcmp(bn[i].layer, g->nodes[p].name) &&
            !strcmp(bn[i].output, g->values[v].name))
            rec = &bn[i];
    if (!rec) {
        *why = "its input does not come from a BN-folded layer (directly or through ReLU/ReLU6)";
        return NULL;
    }
    if (rec->c != cin) {
        *why = "the BN record's channel count differs from the layer's input channels";
        return NULL;
    }
    double *m = malloc((cin + 1) * sizeof *m);
    if (!m) {
        *why = NULL;
        return NULL;
    }
    for (int64_t i = 0; i < cin; i++) {
        double mu = rec->beta[i], sigma = fabs((double)rec->gamma[i]);
        m[i] = act == 0 ? mu : act == 1 ? relu_mean(mu, sigma) : relu_mean(mu, sigma) - relu_mean(mu - hi, sigma);
    }
    return m;
}

int qs_biascorr_analytical(qs_quantsim *sim, const qs_bn_record *bn, int nbn, qs_biascorr_report **report,
                           qs_err *e)
{
    if (report)
        *report = NULL;
    double t_start = qs_now();
    qs_graph *g = sim->g;
    qs_biascorr_report *rep = calloc(1, sizeof *rep);
    if (!rep)
        return qs_error(e, QS_ENOMEM, "bias correction: out of memory");
    rep->method = "analytical";
    bc_layer *ls = NULL;
    int nl = 0, rc = find_layers(sim, rep, &ls, &nl, e);
    for (int k = 0; rc == 0 && k < nl; k++) {
        bc_layer *L = &ls[k];
        const qs_node *nd = &g->nodes[L->node];
        if (L->kind == K_CONVT) {
            rc = qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "analytical correction handles Conv and Gemm (ConvTranspose: use empirical)");
            continue;
        }
        const qs_quantizer *q = &sim->q[L->wq];
        const qs_tensor *w = g->values[q->value].init, *wf = qs_quantsim_fp32_weight(sim, L->wq);
        int tb = L->kind == K_GEMM && qs_node_int(nd, "transB", 0);
        int64_t group = L->kind == K_CONV ? qs_node_int(nd, "group", 1) : 1;
        int64_t cin = L->kind == K_CONV ? w->shape[1] * group : w->shape[tb ? 1 : 0];
        const char *why = NULL;
        double *mx = input_mean(g, L->node, cin, bn, nbn, &why), *corr = NULL;
        if (!mx) {
            rc = why ? qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "%s", why) : -1;
            if (rc < 0)
                rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
            continue;
        }
        /* ε = W̃ − W with the quantizer's current grid; W from before any rounding pass */
        qs_tensor *wq = qs_tensor_copy(w);
        corr = calloc(L->nch + 1, sizeof *corr);
        if (!wq || !corr) {
            qs_tensor_free(wq);
            free(mx);
            free(corr);
            rc = qs_error(e, QS_ENOMEM, "bias correction: out of memory");
            break;
        }
        qs_fake_quant(w, wq, q->axis, qs_quantsim_scales(sim, L->wq), qs_quantsim_zeros(sim, L->wq), q->grid);
        const float *w0 = qs_f32(wf), *w1 = qs_f32(wq);
        if (L->kind == K_CONV) {   /* W [M, C/g, taps]: weight (m, j) reads input channel group(m)·C/g + j */
            int64_t cg = w->shape[1], mg = L->nch / group, taps = qs_numel(w) / (L->nch * cg);
            for (int64_t m = 0; m < L->nch; m++)
                for (int64_t j = 0; j < cg; j++) {
                    double ex = mx[(m / mg) * cg + j], s = 0;
                    for (int64_t t = 0; t < taps; t++) {
                        int64_t idx = (m * cg + j) * taps + t;
                        s += (double)w1[idx] - w0[idx];
                    }
                    corr[m] += s * ex;
                }
        } else {   /* Gemm: y = alpha·x·W (+ beta·C); W [K, N] or [N, K] with transB */
            double alpha = qs_node_float(nd, "alpha", 1.f);
            for (int64_t k2 = 0; k2 < cin; k2++)
                for (int64_t m = 0; m < L->nch; m++) {
                    int64_t idx = tb ? m * cin + k2 : k2 * L->nch + m;
                    corr[m] += alpha * ((double)w1[idx] - w0[idx]) * mx[k2];
                }
        }
        if ((rc = subtract_bias(sim, L, corr, &L->bias_added, e)) == 0)
            rc = report_layer(g, L, corr, rep, e);
        qs_tensor_free(wq);
        free(mx);
        free(corr);
    }
    free(ls);
    rep->seconds = qs_now() - t_start;
    if (rc == 0 && report)
        *report = rep;
    else
        qs_biascorr_report_free(rep);
    return rc;
}

/* --- report ------------------------------------------------------------------------------------- */

void qs_biascorr_report_free(qs_biascorr_report *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nlayers; i++) {
        free(r->layers[i].name);
        free(r->layers[i].correction);
    }
    free(r->layers);
    qs_skips_free(r->skipped, r->nskipped);
    free(r);
}

json_t *qs_biascorr_report_json(const qs_biascorr_report *r)
{
    if (!r)
        return json_null();
    json_t *layers = json_array(), *skipped = qs_skips_json(r->skipped, r->nskipped, "name", NULL);
    for (int i = 0; i < r->nlayers; i++) {
        const qs_biascorr_layer *l = &r->layers[i];
        json_t *c = json_array();
        double mabs = 0;
        for (int64_t k = 0; k < l->nch; k++) {
            json_array_append_new(c, isfinite(l->correction[k]) ? json_real(l->correction[k]) : json_null());
            mabs += fabs(l->correction[k]);
        }
        json_array_append_new(layers, json_pack("{s:s, s:I, s:b, s:o, s:f}", "name", l->name, "channels",
                                                (json_int_t)l->nch, "bias_added", l->bias_added, "correction", c,
                                                "mean_abs_correction", l->nch ? mabs / l->nch : 0.0));
    }
    return json_pack("{s:s, s:I, s:i, s:f, s:o, s:o}", "method", r->method, "samples", (json_int_t)r->samples,
                     "passes", r->passes, "seconds", r->seconds, "layers", layers, "skipped", skipped);
}
