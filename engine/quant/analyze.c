/* The debugging flow of paper §3.7 (Fig. 9) as a pipeline. The closed loop that acts on it is in
 * target_drop.c; the measurements both use (evaluation, quantizer groups, FP32-calibrated ranges)
 * are defined here and declared in analyze_impl.h.
 *
 * Analysis. The PTQ stages run as in the ptq pipeline (BN fold, CLE and absorption, QuantSim,
 * weight ranges, calibrated activation ranges) but without bias correction and AdaRound: those
 * rewrite biases and weights for the quantized model, so switching a layer's quantizers off
 * would no longer give back its FP32 layer, and they would hide the very errors the flow looks
 * for (the paper applies them as fixes after the diagnosis). The quantized model is scored as the
 * PTQ pipeline calibrates it (activation ranges observed with the weights quantized); then the
 * activation ranges are calibrated again with the weight quantizers off, and every isolating
 * measurement (weights only, activations only, per group) uses those: with the pipeline's ranges a
 * badly quantized layer moves the ranges of every layer after it, and "only that later layer
 * quantized" would be blamed for it. Every measurement is a forward
 * pass over the first N validation samples (config "analysis": {"val_samples": N}, default 1000;
 * the per-group part costs two passes per group) on one planned runner per graph — switching
 * quantizers is a FakeQuant attribute that the kernel reads at run time, so nothing is
 * re-planned. Output SQNR compares the logits with the prepared FP32 model's on the same
 * samples: 10·log10(Σ y² / Σ (y − ỹ)²) over all samples and classes.
 *
 * A quantizer group is the set of quantizers with the same `layer`: a Conv/Gemm/MatMul group's
 * weight, bias and output activation quantizer, a residual Add's output quantizer, a model
 * input's quantizer. A bias quantizer is switched on and off with its weight quantizer (an int32
 * bias at s_in·s_w adds no error of its own worth measuring).
 *
 * analysis.json (every accuracy a fraction in [0, 1], SQNR in dB, null when the error is exactly 0):
 *   {"model": path, "validation_samples": N, "calibration_samples": n,
 *    "fp32": {"accuracy": as loaded, "accuracy_prepared": after BN fold / CLE,
 *             "accuracy_sim_bypassed": the simulation with every quantizer off,
 *             "prediction_agreement": loaded vs prepared top-1, "max_abs_diff", "max_rel_diff":
 *             loaded vs prepared logits (relative to max |logit|), "sim_max_rel_diff": prepared vs
 *             bypassed simulation, "ok": accuracy and predictions agree (within one sample or 0.1
 *             points, 99% of predictions), "function_preserved": ok and max_rel_diff ≤ 1e-3,
 *             "message": what differs and the likely cause (absent when preserved)},
 *    "quantized" | "weights_only" | "activations_only" | "quantized_fp32_ranges": {"accuracy",
 *             "top5" (≥ 5 classes), "sqnr_db", "drop_points": 100·(FP32 prepared − this)} —
 *             "quantized" with the pipeline's ranges (what quant ptq gives without bias correction
 *             and AdaRound), the others with the FP32-calibrated activation ranges,
 *    "layers": [{"name", "op", "rank" (1 = worst), "quantizers": [{"name", "kind", "bits",
 *             "per_channel"}], "weight_bits", "activation_bits" (null when the group has none),
 *             "accuracy_only_this", "accuracy_all_but_this", "sqnr_only_this_db",
 *             "sqnr_all_but_this_db", "drop_only_this_points": FP32 − only this,
 *             "recovery_all_but_this_points": all but this − quantized_fp32_ranges, "weight_sqnr_db": the
 *             weight tensor's own quantization SQNR (null without a weight)}] in model order,
 *    "ranking": [{"name", "op", "accuracy_only_this", "accuracy_all_but_this",
 *             "sqnr_only_this_db"}] worst first: lowest accuracy with only it quantized, ties (the
 *             common case at 8 bits on a small subset) broken by the lower output SQNR,
 *    "weight_ranges": {"cle_applied": bool, "layers": [{"name", "op", "channels", "depthwise",
 *             "before": {"min": [], "max": []}, "after": {…}}]} — per output channel, before and
 *             after CLE (equal when CLE is off),
 *    "cle": the CLE report without its layers (when CLE ran),
 *    "diagnosis": [sentences], "config": the config used, "warnings": [], "timings": {}, "seconds"} */
#include "quant/analyze.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/analyze_impl.h"
#include "quant/cle.h"
#include "quant/range.h"
#include "shapes.h"

/* --- evaluation over the first n validation samples ------------------------------------------- */

typedef struct eval_state {
    const int64_t *labels;
    const float *ref;          /* [n × classes] reference logits, or NULL */
    int64_t ref_classes;
    float *keep;               /* logits kept for the caller (allocated on the first batch) */
    int want_keep;
    int64_t total, classes, n, top1, top5;
    double sig, noise;
} eval_state;

static int eval_sink(void *ud, int64_t start, int64_t n, const qs_tensor *const *outputs, qs_exec *x, qs_err *e)
{
    (void)x;
    eval_state *s = ud;
    const qs_tensor *y = outputs[0];
    if (y->dtype != QS_F32 || y->ndim < 2 || y->shape[0] < n)
        return qs_error(e, QS_EINVAL, "the analysis needs float logits of shape [N, classes] as the first output");
    int64_t c = qs_numel(y) / y->shape[0];
    if (s->ref && c != s->ref_classes)
        return qs_error(e, QS_ESHAPE, "the output has %lld classes but the FP32 model's has %lld", (long long)c,
                        (long long)s->ref_classes);
    s->classes = c;
    if (s->want_keep && !s->keep && !(s->keep = malloc((size_t)(s->total * c + 1) * sizeof *s->keep)))
        return qs_error(e, QS_ENOMEM, "out of memory keeping %lld logits", (long long)(s->total * c));
    for (int64_t r = 0; r < n; r++) {
        const float *row = qs_f32(y) + r * c;
        int64_t lab = s->labels[start + r];
        if (lab < 0 || lab >= c)
            return qs_error(e, QS_EINVAL, "label %lld of sample %lld is outside the model's %lld classes",
                            (long long)lab, (long long)(start + r), (long long)c);
        int64_t better = 0;   /* ties resolved towards the lower index, as qs_pl_accuracy does */
        for (int64_t k = 0; k < c; k++)
            better += row[k] > row[lab] || (row[k] == row[lab] && k < lab);
        s->top1 += better == 0;
        s->top5 += better < 5;
        if (s->ref) {
            const float *f = s->ref + (start + r) * c;
            for (int64_t k = 0; k < c; k++) {
                double d = (double)f[k] - row[k];
                s->sig += (double)f[k] * f[k];
                s->noise += d * d;
            }
        }
        if (s->keep)
            memcpy(s->keep + (start + r) * c, row, (size_t)c * sizeof *row);
    }
    s->n += n;
    return 0;
}

static double sqnr_db(double sig, double noise)
{
    return noise > 0 ? 10 * log10(sig / noise) : sig > 0 ? INFINITY : NAN;
}

/* Scores runner r on samples [0, n) of the validation set; ref: reference logits for the SQNR;
 * keep (may be NULL) receives the logits (caller frees) and classes their row length. */
int qs_an_evaluate(qs_ptq *p, qs_runner *r, int64_t n, const float *ref, int64_t ref_classes, float **keep,
                   int64_t *classes, qs_an_eval *out, qs_err *e)
{
    eval_state s = { .labels = p->labels, .ref = ref, .ref_classes = ref_classes, .want_keep = keep != NULL,
                     .total = n };
    int rc = qs_runner_stream(r, p->val.d, p->val.arrays, 0, n, eval_sink, &s, NULL, NULL, p->io->abort, e);
    if (rc < 0) {
        free(s.keep);
        return rc;
    }
    if (keep)
        *keep = s.keep;
    if (classes)
        *classes = s.classes;
    out->n = s.n;
    out->top1 = s.n ? (double)s.top1 / s.n : 0;
    out->top5 = s.classes >= 5 && s.n ? (double)s.top5 / s.n : -1;
    out->sqnr_db = ref ? sqnr_db(s.sig, s.noise) : NAN;
    return 0;
}

qs_runner *qs_an_runner(qs_ptq *p, qs_graph *g, qs_err *e)
{
    qs_runner *r = qs_runner_new(g, p->cfg.calibration.batch_size, e);
    if (r)
        qs_runner_set_pool(r, p->io->pool);
    return r;
}

/* --- quantizer groups -------------------------------------------------------------------------- */

void qs_an_groups_free(qs_an_group *gr, int n)
{
    for (int i = 0; gr && i < n; i++)
        free(gr[i].q);
    free(gr);
}

static const char *node_op(const qs_graph *g, const char *name)
{
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].name && !strcmp(g->nodes[i].name, name))
            return g->nodes[i].op;
    return "?";
}

int qs_an_groups(const qs_quantsim *sim, qs_an_group **out, int *nout, qs_err *e)
{
    qs_an_group *gr = calloc(sim->nq + 1, sizeof *gr);
    int n = 0;
    if (!gr)
        return qs_error(e, QS_ENOMEM, "out of memory");
    for (int i = 0; i < sim->nq; i++) {
        const qs_quantizer *q = &sim->q[i];
        int k = 0;
        while (k < n && strcmp(gr[k].name, q->layer))
            k++;
        if (k == n) {
            gr[n].name = q->layer;
            gr[n].weight = gr[n].act = -1;
            gr[n].op = node_op(sim->g, q->layer);
            n++;
        }
        int *x = realloc(gr[k].q, (gr[k].nq + 1) * sizeof *x);
        if (!x) {
            qs_an_groups_free(gr, n);
            return qs_error(e, QS_ENOMEM, "out of memory");
        }
        gr[k].q = x;
        gr[k].q[gr[k].nq++] = i;
        if (q->kind == QS_Q_WEIGHT && gr[k].weight < 0)
            gr[k].weight = i;
        if ((q->kind == QS_Q_ACT || q->kind == QS_Q_INPUT) && gr[k].act < 0)
            gr[k].act = i;
        if (q->kind == QS_Q_INPUT)
            gr[k].op = "input";
    }
    *out = gr;
    *nout = n;
    return 0;
}

/* Switches quantizer i on where on[i], off elsewhere; a bias follows its weight. */
void qs_an_apply(qs_quantsim *sim, const char *on)
{
    for (int i = 0; i < sim->nq; i++) {
        const qs_quantizer *q = &sim->q[i];
        int enable = q->kind == QS_Q_BIAS && q->bias_of >= 0 ? on[q->bias_of] : on[i];
        qs_quantsim_bypass(sim, i, !enable);
    }
}

/* The weight tensor's own quantization SQNR with its quantizer's current grid. */
static double weight_sqnr(qs_quantsim *sim, int wi)
{
    const qs_quantizer *q = &sim->q[wi];
    const qs_tensor *w = sim->g->values[q->value].init;
    if (!w || w->dtype != QS_F32)
        return NAN;
    qs_tensor *t = qs_tensor_new(QS_F32, w->ndim, w->shape);
    if (!t)
        return NAN;
    qs_fake_quant(w, t, q->axis, qs_quantsim_scales(sim, wi), qs_quantsim_zeros(sim, wi), q->grid);
    double sig = 0, noise = 0;
    for (int64_t k = 0; k < qs_numel(w); k++) {
        double a = qs_f32(w)[k], d = a - qs_f32(t)[k];
        sig += a * a;
        noise += d * d;
    }
    qs_tensor_free(t);
    return sqnr_db(sig, noise);
}

static const char *kind_name(qs_qkind k)
{
    return k == QS_Q_INPUT ? "input" : k == QS_Q_ACT ? "activation" : k == QS_Q_WEIGHT ? "weight" : "bias";
}

/* Activation ranges calibrated on the FP32 network: weight quantizers off while observing. (The
 * PTQ pipeline observes with weights quantized, so a badly quantized layer moves every range
 * downstream of it; measuring one group at a time needs ranges that do not depend on the others.)
 * Leaves every quantizer enabled, as qs_ptq_calibrate does. */
int qs_an_calibrate_fp32(qs_ptq *p, qs_err *e)
{
    qs_quantsim_bypass_kind(p->sim, QS_Q_WEIGHT, 1);
    int rc = qs_ptq_calibrate(p, e);
    qs_quantsim_bypass_kind(p->sim, -1, 0);
    qs_quantsim_update_bias(p->sim);
    return rc;
}

/* Every quantizer's scales and zero points, to put back after a temporary recalibration. */
float *qs_an_ranges_save(const qs_quantsim *sim)
{
    size_t n = 0, k = 0;
    for (int i = 0; i < sim->nq; i++)
        n += 2 * (size_t)sim->q[i].nch;
    float *buf = malloc((n + 1) * sizeof *buf);
    for (int i = 0; buf && i < sim->nq; i++) {
        int c = sim->q[i].nch;
        memcpy(buf + k, qs_quantsim_scales((qs_quantsim *)sim, i), c * sizeof *buf);
        memcpy(buf + k + c, qs_quantsim_zeros((qs_quantsim *)sim, i), c * sizeof *buf);
        k += 2 * (size_t)c;
    }
    return buf;
}

void qs_an_ranges_restore(qs_quantsim *sim, const float *buf)
{
    size_t k = 0;
    for (int i = 0; i < sim->nq; i++) {
        int c = sim->q[i].nch;
        memcpy(qs_quantsim_scales(sim, i), buf + k, c * sizeof *buf);
        memcpy(qs_quantsim_zeros(sim, i), buf + k + c, c * sizeof *buf);
        k += 2 * (size_t)c;
    }
}

/* --- the analysis pipeline ---------------------------------------------------------------------- */

/* worst first: lowest accuracy with only this group quantized, then lowest SQNR, then model order */
static int cmp_worst(const void *a, const void *b)
{
    const qs_an_gres *x = a, *y = b;
    if (x->acc_only != y->acc_only)
        return x->acc_only < y->acc_only ? -1 : 1;
    double sx = isnan(x->sqnr_only) ? INFINITY : x->sqnr_only, sy = isnan(y->sqnr_only) ? INFINITY : y->sqnr_only;
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return x->idx - y->idx;
}

static json_t *mode_json(const qs_an_eval *o, double fp32)
{
    json_t *j = json_pack("{s:f, s:o, s:f}", "accuracy", o->top1, "sqnr_db", qs_an_num_or_null(o->sqnr_db),
                          "drop_points", 100 * (fp32 - o->top1));
    if (o->top5 >= 0)
        json_object_set_new(j, "top5", json_real(o->top5));
    return j;
}

/* Per-channel weight ranges: the CLE report's (before/after equalization) when CLE ran, otherwise
 * the same report computed on a copy of the prepared model with nothing to equalize. */
static json_t *weight_ranges(qs_ptq *p, qs_err *e)
{
    json_t *cle = json_object_get(p->extra, "cle");
    json_t *layers = cle ? json_object_get(cle, "layers") : NULL;
    if (layers)
        return json_pack("{s:b, s:O}", "cle_applied", p->cfg.cle, "layers", layers);
    qs_graph *g = qs_graph_clone(p->prepared);
    if (!g) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    qs_cle_config cc = qs_cle_config_default();
    cc.equalize = cc.absorb = cc.replace_relu6 = 0;
    qs_cle_report *rep = NULL;
    int rc = qs_cle(g, NULL, 0, &cc, &rep, e);
    qs_graph_free(g);
    json_t *out = NULL;
    if (rc == 0 && rep) {
        json_t *j = qs_cle_report_json(rep);
        out = json_pack("{s:b, s:O}", "cle_applied", 0, "layers", json_object_get(j, "layers"));
        json_decref(j);
    }
    qs_cle_report_free(rep);
    return out;
}

static json_t *diagnosis(double fp32, const qs_an_eval *w, const qs_an_eval *a, const qs_an_eval *q, int fp32_ok)
{
    json_t *d = json_array();
    double dw = 100 * (fp32 - w->top1), da = 100 * (fp32 - a->top1), dq = 100 * (fp32 - q->top1);
    char b[512];
    if (!fp32_ok)
        json_array_append_new(d, json_string("the prepared FP32 model does not match the model as loaded: fix that "
                                             "first (see fp32.message)"));
    snprintf(b, sizeof b, "quantized: %.2f points below FP32 (weights only %.2f, activations only %.2f)", dq, dw, da);
    json_array_append_new(d, json_string(b));
    if (dw > 0.5 && dw >= da)
        json_array_append_new(d, json_string("weight quantization dominates: try per-channel weights, CLE, AdaRound "
                                             "or bias correction (paper §3.7), then see the worst layers below"));
    else if (da > 0.5)
        json_array_append_new(d, json_string("activation quantization dominates: try another activation range "
                                             "method (MSE, percentile), more calibration data, or keep the worst "
                                             "groups in higher precision (quant ptq --target-drop)"));
    return d;
}

int qs_pipeline_analyze(const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    *result = NULL;
    qs_ptq p;
    memset(&p, 0, sizeof p);
    json_t *res = NULL, *an = NULL, *layers = NULL, *fp32 = NULL, *ranking = NULL, *worst = NULL;
    json_t *wr = NULL;
    qs_runner *rl = NULL, *rp = NULL, *rs = NULL;
    float *ref = NULL, *loaded = NULL;
    qs_an_group *gr = NULL;
    qs_an_gres *st = NULL;
    char *on = NULL;
    int ng = 0, rc;
    double t0;

    /* the config, "analysis": {"val_samples"} included, is the spec table's (engine/spec_rows.c) */
    if ((rc = qs_ptq_open(&p, io, e)) < 0)
        goto out;
    if (!p.calib.d) {
        rc = qs_error(e, QS_EINVAL, "analyze needs calibration data (--calib X.npy)");
        goto out;
    }
    if (!p.val.d) {
        rc = qs_error(e, QS_EINVAL, "analyze needs validation data and labels (--val X.npy --labels Y.npy)");
        goto out;
    }
    /* the grids themselves are analysed: no bias correction, no AdaRound (see the header) */
    p.cfg.bias_correction = QS_BC_NONE;
    p.cfg.adaround.enabled = 0;
    p.cfg.rounding = QS_ROUND_NEAREST;
    if ((rc = qs_ptq_prepare(&p, e)) < 0)
        goto out;
    qs_quantsim *sim = p.sim;
    int64_t want = p.cfg.analysis.val_samples, n = p.val.rows < want ? p.val.rows : want;
    if ((rc = qs_an_groups(sim, &gr, &ng, e)) < 0)
        goto out;
    st = calloc(ng + 1, sizeof *st);
    on = calloc(sim->nq + 1, 1);
    if (!st || !on) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    if (!(rl = qs_an_runner(&p, p.model, e)) || !(rp = qs_an_runner(&p, p.prepared, e)) ||
        !(rs = qs_an_runner(&p, sim->g, e))) {
        rc = e && e->code ? e->code : QS_EINVAL;
        goto out;
    }
    double done = 0, total = 7 + 2.0 * ng;
    const char *stage = "analysis";
    t0 = qs_now();
#define STEP() qs_pl_progress(io, stage, ++done, total, t0)

    /* FP32 sanity: as loaded vs prepared vs the simulation with everything off */
    qs_an_eval fl, fp, fb, optq, oq, ow, oa;
    int64_t classes = 0, cl2 = 0;
    if ((rc = qs_an_evaluate(&p, rl, n, NULL, 0, &loaded, &cl2, &fl, e)) < 0)
        goto out;
    STEP();
    if ((rc = qs_an_evaluate(&p, rp, n, NULL, 0, &ref, &classes, &fp, e)) < 0)
        goto out;
    STEP();
    if (cl2 != classes) {
        rc = qs_error(e, QS_ESHAPE, "the prepared model has %lld classes, the model as loaded %lld", (long long)classes,
                      (long long)cl2);
        goto out;
    }
    double maxabs = 0, maxref = 0;
    int64_t agree = 0;
    for (int64_t r = 0; r < n; r++) {
        const float *a = loaded + r * classes, *b = ref + r * classes;
        int64_t ia = 0, ib = 0;
        for (int64_t k = 0; k < classes; k++) {
            double d = fabs((double)a[k] - b[k]);
            if (!(d <= maxabs))
                maxabs = d;   /* NaN propagates */
            if (fabs(a[k]) > maxref)
                maxref = fabs(a[k]);
            ia = a[k] > a[ia] ? k : ia;
            ib = b[k] > b[ib] ? k : ib;
        }
        agree += ia == ib;
    }
    qs_an_set_all(on, sim->nq, 0);
    qs_an_apply(sim, on);
    if ((rc = qs_an_evaluate(&p, rs, n, ref, classes, NULL, NULL, &fb, e)) < 0)
        goto out;
    STEP();
    double maxrel = maxref > 0 ? maxabs / maxref : maxabs, agreement = n ? (double)agree / n : 1;
    /* the bypassed simulation is the prepared graph plus identity nodes: equal to float rounding */
    double sim_rel = isinf(fb.sqnr_db) ? 0 : isnan(fb.sqnr_db) ? 1 : pow(10, -fb.sqnr_db / 20);
    /* one sample's worth of accuracy (at least 0.1 points) and 99% of the predictions */
    double tol = fmax(0.001, n ? 1.0 / n : 0) + 1e-12;
    int fp32_ok = fabs(fl.top1 - fp.top1) <= tol && agreement >= 0.99 && sim_rel < 1e-3 && !isnan(maxabs);
    /* BN folding and equalization are exact up to float rounding; ReLU6 → ReLU and high-bias
     * absorption (at padded borders) are not, and say so even when accuracy does not move */
    int same = fp32_ok && maxrel <= 1e-3;
    fp32 = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:b, s:b}", "accuracy", fl.top1, "accuracy_prepared",
                     fp.top1, "accuracy_sim_bypassed", fb.top1, "prediction_agreement", agreement, "max_abs_diff",
                     isnan(maxabs) ? -1.0 : maxabs, "max_rel_diff", isnan(maxrel) ? -1.0 : maxrel,
                     "sim_max_rel_diff", sim_rel, "ok", fp32_ok, "function_preserved", same);
    if (!same) {
        json_t *cle = json_object_get(p.extra, "cle"), *r6 = cle ? json_object_get(cle, "relu6_replaced") : NULL;
        json_t *ab = cle ? json_object_get(cle, "absorbed_pairs") : NULL;
        char msg[1024];
        snprintf(msg, sizeof msg,
                 "%s: accuracy %.2f%% as loaded, %.2f%% after BN folding%s "
                 "(top-1 agreement %.2f%%, max relative logit difference %.3g), %.2f%% in the bypassed simulation%s%s",
                 fp32_ok ? "the prepared FP32 model computes a slightly different function (accuracy unaffected)"
                         : "the FP32 model changed in preparation",
                 100 * fl.top1, 100 * fp.top1, p.cfg.cle ? " and CLE" : "", 100 * agreement, maxrel, 100 * fb.top1,
                 r6 && json_array_size(r6) ? "; ReLU6 was replaced by ReLU for CLE (config relu6_to_relu: false "
                                             "keeps it)" : "",
                 json_integer_value(ab) > 0 ? "; high-bias absorption is exact only away from zero-padded borders "
                                              "(config bias_absorption: false)" : "");
        json_object_set_new(fp32, "message", json_string(msg));
        if (!fp32_ok)
            qs_ptq_warn(&p, "%s", msg);
    }

    /* the quantized model as the PTQ pipeline calibrates it (weights quantized while observing) */
    qs_an_set_all(on, sim->nq, 1);
    qs_an_apply(sim, on);
    if ((rc = qs_an_evaluate(&p, rs, n, ref, classes, NULL, NULL, &optq, e)) < 0)
        goto out;
    STEP();
    /* the isolating measurements on activation ranges of the FP32 network (see the header) */
    if ((rc = qs_an_calibrate_fp32(&p, e)) < 0)
        goto out;
    qs_an_set_all(on, sim->nq, 1);
    qs_an_apply(sim, on);
    if ((rc = qs_an_evaluate(&p, rs, n, ref, classes, NULL, NULL, &oq, e)) < 0)
        goto out;
    STEP();
    for (int i = 0; i < sim->nq; i++)
        on[i] = sim->q[i].kind == QS_Q_WEIGHT;
    qs_an_apply(sim, on);
    if ((rc = qs_an_evaluate(&p, rs, n, ref, classes, NULL, NULL, &ow, e)) < 0)
        goto out;
    STEP();
    for (int i = 0; i < sim->nq; i++)
        on[i] = sim->q[i].kind == QS_Q_ACT || sim->q[i].kind == QS_Q_INPUT;
    qs_an_apply(sim, on);
    if ((rc = qs_an_evaluate(&p, rs, n, ref, classes, NULL, NULL, &oa, e)) < 0)
        goto out;
    STEP();

    /* per group: only this one, all but this one */
    for (int k = 0; k < ng; k++) {
        qs_an_eval o1, o2;
        qs_an_set_all(on, sim->nq, 0);
        qs_an_set_group(on, &gr[k], 1);
        qs_an_apply(sim, on);
        if ((rc = qs_an_evaluate(&p, rs, n, ref, classes, NULL, NULL, &o1, e)) < 0)
            goto out;
        STEP();
        qs_an_set_all(on, sim->nq, 1);
        qs_an_set_group(on, &gr[k], 0);
        qs_an_apply(sim, on);
        if ((rc = qs_an_evaluate(&p, rs, n, ref, classes, NULL, NULL, &o2, e)) < 0)
            goto out;
        STEP();
        st[k] = (qs_an_gres){ .acc_only = o1.top1, .acc_allbut = o2.top1, .sqnr_only = o1.sqnr_db,
                        .sqnr_allbut = o2.sqnr_db, .wsqnr = gr[k].weight >= 0 ? weight_sqnr(sim, gr[k].weight) : NAN,
                        .idx = k };
    }
#undef STEP
    qs_an_set_all(on, sim->nq, 1);
    qs_an_apply(sim, on);
    qs_ptq_timing(&p, "analysis", t0);

    /* ranking and the report */
    qs_an_gres *order = malloc((ng + 1) * sizeof *order);
    int *rank = malloc((ng + 1) * sizeof *rank);
    if (!order || !rank) {
        free(order);
        free(rank);
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(order, st, ng * sizeof *order);
    qsort(order, ng, sizeof *order, cmp_worst);
    ranking = json_array();
    worst = json_array();
    for (int r = 0; r < ng; r++) {
        const qs_an_gres *s = &order[r];
        rank[s->idx] = r + 1;
        json_array_append_new(ranking, json_pack("{s:s, s:s, s:f, s:f, s:o}", "name", gr[s->idx].name, "op",
                                                 gr[s->idx].op, "accuracy_only_this", s->acc_only,
                                                 "accuracy_all_but_this", s->acc_allbut, "sqnr_only_this_db",
                                                 qs_an_num_or_null(s->sqnr_only)));
        if (r < 5)
            json_array_append_new(worst, json_string(gr[s->idx].name));
    }
    free(order);
    layers = json_array();
    for (int k = 0; k < ng; k++) {
        json_t *qs = json_array();
        for (int j = 0; j < gr[k].nq; j++) {
            const qs_quantizer *q = &sim->q[gr[k].q[j]];
            json_array_append_new(qs, json_pack("{s:s, s:s, s:i, s:b}", "name", q->name, "kind", kind_name(q->kind),
                                                "bits", q->grid.bits, "per_channel", q->nch > 1));
        }
        const qs_an_gres *s = &st[k];
        json_array_append_new(
            layers, json_pack("{s:s, s:s, s:i, s:o, s:o, s:o, s:f, s:f, s:o, s:o, s:f, s:f, s:o}", "name", gr[k].name,
                              "op", gr[k].op, "rank", rank[k], "quantizers", qs, "weight_bits",
                              gr[k].weight >= 0 ? json_integer(sim->q[gr[k].weight].grid.bits) : json_null(),
                              "activation_bits",
                              gr[k].act >= 0 ? json_integer(sim->q[gr[k].act].grid.bits) : json_null(),
                              "accuracy_only_this", s->acc_only, "accuracy_all_but_this", s->acc_allbut,
                              "sqnr_only_this_db", qs_an_num_or_null(s->sqnr_only), "sqnr_all_but_this_db",
                              qs_an_num_or_null(s->sqnr_allbut), "drop_only_this_points", 100 * (fp.top1 - s->acc_only),
                              "recovery_all_but_this_points", 100 * (s->acc_allbut - oq.top1), "weight_sqnr_db",
                              qs_an_num_or_null(s->wsqnr)));
    }
    free(rank);
    if (!(wr = weight_ranges(&p, e))) {
        rc = e && e->code ? e->code : QS_ENOMEM;
        goto out;
    }
    double secs = qs_now() - p.t_start;
    json_object_set_new(p.timings, "total", json_real(secs));
    an = json_pack("{s:s, s:I, s:I, s:O, s:o, s:o, s:o, s:o, s:O, s:O, s:O, s:o, s:o, s:O, s:O, s:f}", "model",
                   io->model, "validation_samples", (json_int_t)n, "calibration_samples", (json_int_t)p.ncalib,
                   "fp32", fp32, "quantized", mode_json(&optq, fp.top1), "weights_only", mode_json(&ow, fp.top1),
                   "activations_only", mode_json(&oa, fp.top1), "quantized_fp32_ranges", mode_json(&oq, fp.top1),
                   "layers", layers, "ranking", ranking, "weight_ranges",
                   wr, "diagnosis", diagnosis(fp.top1, &ow, &oa, &optq, fp32_ok), "config", qs_qconfig_to_json(&p.cfg),
                   "warnings", p.warnings, "timings", p.timings, "seconds", secs);
    json_t *cle = json_object_get(p.extra, "cle");
    if (an && cle) {
        json_t *c = json_copy(cle);
        json_object_del(c, "layers");
        json_object_set_new(an, "cle", c);
    }
    if (an)
        json_object_set_new(an, "input_shapes", qs_graph_input_shapes_json(p.model));
    json_t *skipped = json_object_get(p.extra, "skipped_steps");
    if (an && skipped)
        json_object_set(an, "skipped_steps", skipped);
    if (!an) {
        rc = qs_error(e, QS_ENOMEM, "cannot build analysis.json");
        goto out;
    }
    if (io->outdir && (rc = qs_pl_write_json(io, "analysis.json", an, e)) < 0)
        goto out;
    res = json_pack("{s:f, s:f, s:f, s:f, s:O, s:f}", "fp32_accuracy", fl.top1, "quant_accuracy", optq.top1,
                    "weights_only_accuracy", ow.top1, "activations_only_accuracy", oa.top1, "worst", worst, "seconds",
                    qs_now() - p.t_start);
    if (res && io->outdir)
        json_object_set_new(res, "outdir", json_string(io->outdir));
    if (!res)
        rc = qs_error(e, QS_ENOMEM, "out of memory");
    qs_pl_metric(io, "fp32_accuracy", fl.top1);
    qs_pl_metric(io, "quant_accuracy", optq.top1);
out:
    if (rc == 0)
        *result = res;
    else
        json_decref(res);
    json_decref(an);
    json_decref(layers);
    json_decref(fp32);
    json_decref(ranking);
    json_decref(worst);
    json_decref(wr);
    qs_runner_free(rl);
    qs_runner_free(rp);
    qs_runner_free(rs);
    free(ref);
    free(loaded);
    free(st);
    free(on);
    qs_an_groups_free(gr, ng);
    qs_ptq_close(&p);
    return rc;
}
