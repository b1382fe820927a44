/* The qat job: the standard QAT pipeline (paper §4.4, Fig. 12) over the trainer of
 * engine/quant/qat.c and the PTQ stages of engine/quant/ptq.c, with a checkpoint per epoch (and
 * every 10 minutes inside a long one) from which an interrupted job resumes (io->resume). */
#include "pipeline/drivers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant/ptq.h"
#include "quant/qat.h"

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The standard QAT pipeline (paper §4.4, Fig. 12):
 *
 *   FP32 model → BN fold (static, default) → CLE (config.cle) → quantizers → range init by the PTQ
 *   pipeline's MSE setting (calibration on the first training samples unless calibration data is
 *   given) → PTQ accuracy → train with learnable ranges (validation after every epoch, checkpoint
 *   after every epoch) → BN re-estimation (BN kept: bn_fold off) → export: model.qdq.onnx,
 *   encodings.json, model.prepared.onnx (the trained latent FP32 weights), report.json (+ "qat":
 *   the per-epoch loss and accuracy curve and the training setup). */

typedef struct qat_run {
    const qs_pipeline_io *io;
    qs_ptq p;
    qs_pl_data train;
    int64_t *train_labels;
    qs_qat *t;
    qs_qat_opts o;
    json_t *curve;          /* [{epoch, loss, accuracy, lr, seconds}] */
    double ep_loss;         /* sum of the current epoch's step losses */
    int64_t ep_steps;
    json_t *fp32, *ptq;     /* accuracies (json numbers or null) */
    char ckpt[4096];
    /* the steps themselves, after this run's first WARM_STEPS: no validation, checkpoint, oneDNN
     * primitive creation or first touch of the buffers in them (the figure other trainers report) */
    int64_t run_steps, steady_steps;
    double steady_wall, steady_cpu;
} qat_run;

#define WARM_STEPS 2

static json_t *run_meta(qat_run *r)
{
    return json_pack("{s:O, s:f, s:I, s:O, s:O}", "curve", r->curve, "epoch_loss_sum", r->ep_loss, "epoch_steps",
                     (json_int_t)r->ep_steps, "fp32_accuracy", r->fp32, "ptq_accuracy", r->ptq);
}

static int checkpoint(qat_run *r, qs_err *e)
{
    json_t *m = run_meta(r);
    int rc = qs_qat_save(r->t, r->ckpt, m, e);
    json_decref(m);
    return rc;
}

static int accuracy(qat_run *r, qs_graph *g, const char *stage, json_t **out, qs_err *e)
{
    *out = json_null();
    if (!r->p.val.d)
        return 0;
    qs_pl_acc a;
    int rc = qs_pl_accuracy(g, &r->p.val, r->p.labels, r->p.cfg.calibration.batch_size, r->io, stage, &a, e);
    if (rc < 0)
        return rc;
    json_decref(*out);
    *out = json_real(a.top1);
    return 0;
}

/* the trained latent weights (and BN statistics, ranges aside) back into the FP32 model, so that
 * model.prepared.onnx is the network the exported quantizers sit on */
static void copy_back(qs_graph *dst, const qs_graph *sim)
{
    for (int v = 0; v < dst->nvalues; v++) {
        qs_tensor *t = dst->values[v].init;
        if (!t || t->dtype != QS_F32)
            continue;
        int s = qs_graph_find_value(sim, dst->values[v].name);
        const qs_tensor *src = s >= 0 ? sim->values[s].init : NULL;
        if (src && src->dtype == QS_F32 && qs_numel(src) == qs_numel(t))
            memcpy(t->data, src->data, qs_nbytes(t));
    }
    qs_graph_weights_changed(dst);
}

static int train_loop(qat_run *r, qs_err *e)
{
    const qs_pipeline_io *io = r->io;
    qs_qat *t = r->t;
    int rc = 0, epoch;
    int64_t iter, step, iters = qs_qat_iterations(t);
    double t_ckpt = qs_now();
    qs_qat_position(t, &epoch, &iter, &step);
    double t0 = qs_now();
    int64_t iter0 = iter;
    while (!qs_qat_done(t)) {
        if (qs_pl_aborted(io))
            return qs_error(e, QS_EABORTED, "aborted at step %lld of %lld", (long long)step + 1,
                            (long long)qs_qat_total_steps(t));
        double loss, lr = qs_qat_lr(t), w0 = qs_now(), c0 = cpu_seconds();
        if ((rc = qs_qat_step(t, &loss, e)) < 0)
            return rc;
        if (++r->run_steps > WARM_STEPS) {
            r->steady_steps++;
            r->steady_wall += qs_now() - w0;
            r->steady_cpu += cpu_seconds() - c0;
        }
        r->ep_loss += loss;
        r->ep_steps++;
        int ep2;
        qs_qat_position(t, &ep2, &iter, &step);
        char stage[64];
        snprintf(stage, sizeof stage, "training epoch %d", epoch + 1);
        int64_t done = ep2 != epoch ? iters : iter;
        /* ETA from this run's own pace (a resumed epoch starts part-way) */
        qs_event ev = { .type = QS_EV_PROGRESS, .stage = stage, .done = (double)done, .total = (double)iters };
        double el = qs_now() - t0;
        ev.eta_s = done > iter0 ? el / (double)(done - iter0) * (double)(iters - done) : -1;
        if (io->event)
            io->event(io->ud, &ev);
        int epoch_end = ep2 != epoch || qs_qat_done(t);
        if (epoch_end) {
            double mean = r->ep_steps ? r->ep_loss / (double)r->ep_steps : NAN;
            json_t *acc;
            snprintf(stage, sizeof stage, "validation epoch %d", epoch + 1);
            if ((rc = accuracy(r, r->p.sim->g, stage, &acc, e)) < 0)
                return rc;
            json_array_append_new(r->curve, json_pack("{s:i, s:f, s:o, s:f, s:I, s:f}", "epoch", epoch + 1, "loss",
                                                      mean, "accuracy", acc, "lr", lr, "steps", (json_int_t)step,
                                                      "seconds", qs_now() - r->p.t_start));
            qs_pl_metric(io, "train_loss", mean);
            if (json_is_number(acc))
                qs_pl_metric(io, "val_accuracy", json_number_value(acc));
            if (json_is_number(acc))
                qs_pl_log(io, "info", "epoch %d: loss %.4f, validation accuracy %.2f%%", epoch + 1, mean,
                          100 * json_number_value(acc));
            else
                qs_pl_log(io, "info", "epoch %d: loss %.4f", epoch + 1, mean);
            r->ep_loss = 0;
            r->ep_steps = 0;
            epoch = ep2;
            t0 = qs_now();
            iter0 = 0;
        }
        /* a checkpoint after every epoch, and every 10 minutes inside a long one */
        if (epoch_end || qs_now() - t_ckpt > 600) {
            if ((rc = checkpoint(r, e)) < 0)
                return rc;
            t_ckpt = qs_now();
        }
    }
    return 0;
}

static int run_qat(qat_run *r, json_t *res, qs_err *e)
{
    const qs_pipeline_io *io = r->io;
    qs_ptq *p = &r->p;
    int rc;
    double t0;
    if (!io->train || !io->train_labels)
        return qs_error(e, QS_EINVAL, "QAT needs training data and labels");
    if ((rc = qs_pl_open_inputs(io->train, "training", p->model, &r->train, e)) < 0 ||
        (rc = qs_pl_load_labels(io->train_labels, r->train.rows, &r->train_labels, e)) < 0 ||
        (rc = qs_pl_check_finite(&r->train, p->model, r->train.rows, "training", e)) < 0)
        return rc;
    if ((rc = qs_qat_opts_from_config(&p->cfg, &r->o, e)) < 0)
        return rc;
    r->o.pool = io->pool;

    /* a previous run to continue? (the daemon's requeue, or quant qat --resume) */
    json_t *state = NULL;
    if (io->resume) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/checkpoint", io->resume);
        qs_err e2 = {0};
        state = qs_qat_read_state(dir, &e2);
        if (!state && e2.code != QS_EIO)
            return qs_error(e, e2.code, "%s", e2.msg);
        if (!state)
            qs_pl_log(io, "info", "no checkpoint in %s: training from the start", io->resume);
    }
    json_t *meta = state ? json_object_get(state, "meta") : NULL;

    /* prepare: BN fold → CLE and high-bias absorption (config cle, bias_absorption) → quantizers →
     * ranges: PTQ's stages, without its bias correction or AdaRound (Fig. 12) */
    if ((rc = qs_ptq_fold(p, e)) < 0)
        goto out;
    if ((rc = qs_ptq_build_sim(p, e)) < 0)
        goto out;
    t0 = qs_now();
    if ((rc = qs_ptq_weight_ranges(p, e)) < 0)
        goto out;
    qs_ptq_timing(p, "weight_ranges", t0);
    t0 = qs_now();
    if ((rc = qs_ptq_calibrate(p, e)) < 0)
        goto out;
    qs_quantsim_update_bias(p->sim);
    qs_ptq_timing(p, "calibration", t0);

    /* FP32 (the model as given, as PTQ reports it) and PTQ accuracy, kept in the checkpoint so that a
     * resumed run does not repeat them */
    t0 = qs_now();
    if (meta && json_object_get(meta, "fp32_accuracy")) {
        r->fp32 = json_incref(json_object_get(meta, "fp32_accuracy"));
        r->ptq = json_incref(json_object_get(meta, "ptq_accuracy"));
    } else if ((rc = accuracy(r, p->model, "evaluation fp32", &r->fp32, e)) < 0 ||
               (rc = accuracy(r, p->sim->g, "evaluation ptq", &r->ptq, e)) < 0)
        goto out;
    if (json_is_number(r->fp32)) {
        qs_pl_metric(io, "fp32_accuracy", json_number_value(r->fp32));
        qs_pl_metric(io, "ptq_accuracy", json_number_value(r->ptq));
    }
    qs_ptq_timing(p, "evaluation", t0);

    /* train */
    t0 = qs_now();
    if (!(r->t = qs_qat_new(p->sim, &r->o, &r->train, r->train_labels, e))) {
        rc = e->code ? e->code : QS_EINVAL;
        goto out;
    }
    qs_qat_set_abort(r->t, io->abort);
    {
        const qs_graph *g = p->sim->g;
        int prod = g->values[g->outputs[0]].producer;
        if (prod >= 0 && qs_node_is_fakequant(&g->nodes[prod]))   /* the output's quantizer */
            prod = g->values[g->nodes[prod].in[0]].producer;
        if (prod >= 0 && g->nodes[prod].domain[0] == 0 &&
            (!strcmp(g->nodes[prod].op, "Softmax") || !strcmp(g->nodes[prod].op, "LogSoftmax")))
            qs_ptq_warn(p, "the model's first output comes from %s; training applies its cross-entropy to that "
                        "output as if it were logits, which learns slowly: export the model without it",
                        g->nodes[prod].op);
    }
    if (qs_qat_batch(r->t) < r->o.batch)
        qs_ptq_warn(p, "the training set has %lld samples, fewer than the batch %lld: training uses batches of %lld",
                    (long long)r->train.rows, (long long)r->o.batch, (long long)qs_qat_batch(r->t));
    snprintf(r->ckpt, sizeof r->ckpt, "%s/checkpoint", io->outdir);
    int64_t resumed = 0;
    if (state) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/checkpoint", io->resume);
        if ((rc = qs_qat_load(r->t, dir, NULL, e)) < 0)
            goto out;
        json_t *c = json_object_get(meta, "curve");
        if (json_is_array(c))
            json_array_extend(r->curve, c);
        r->ep_loss = json_number_value(json_object_get(meta, "epoch_loss_sum"));
        r->ep_steps = json_integer_value(json_object_get(meta, "epoch_steps"));
        qs_qat_position(r->t, NULL, NULL, &resumed);
        qs_pl_log(io, "info", "resuming from step %lld of %lld", (long long)resumed,
                  (long long)qs_qat_total_steps(r->t));
    }
    /* the starting point is this run's first checkpoint: a crash before the first epoch ends
     * then resumes from here instead of losing the previous run's progress */
    double c0 = cpu_seconds();
    if ((rc = checkpoint(r, e)) < 0 || (rc = train_loop(r, e)) < 0)
        goto out;
    qs_ptq_timing(p, "training", t0);
    double train_wall = qs_now() - t0, train_cpu = cpu_seconds() - c0;

    /* export form, BN re-estimation, final accuracy */
    qs_qat_finalize(r->t);
    json_t *bn = json_object();
    json_object_set_new(p->extra, "bn_reestimation", bn);
    if (!qs_qat_nbn(r->t)) {
        json_object_set_new(bn, "applied", json_false());
        json_object_set_new(bn, "reason", json_string(p->nbn ? "BatchNormalization was folded statically before "
                                                               "training (paper 4.3); bn_fold=false trains BN and re-estimates it"
                                                             : "the model has no BatchNormalization"));
    } else if (!p->cfg.qat.bn_reestimate) {
        json_object_set_new(bn, "applied", json_false());
        json_object_set_new(bn, "reason", json_string("config.qat.bn_reestimate is off"));
    } else {
        t0 = qs_now();
        int64_t n = 256 * qs_qat_batch(r->t);
        qs_pl_progress(io, "bn re-estimation", 0, 1, t0);
        if ((rc = qs_qat_bn_reestimate(r->t, n, e)) < 0)
            goto out;
        qs_pl_progress(io, "bn re-estimation", 1, 1, t0);
        json_object_set_new(bn, "applied", json_true());
        json_object_set_new(bn, "batchnorms", json_integer(rc));
        json_object_set_new(bn, "samples", json_integer(n < r->train.rows ? n : r->train.rows));
        qs_ptq_timing(p, "bn_reestimation", t0);
        rc = 0;
    }
    json_t *qacc;
    if ((rc = accuracy(r, p->sim->g, "evaluation qat", &qacc, e)) < 0)
        goto out;
    if (json_is_number(qacc))
        qs_pl_metric(io, "qat_accuracy", json_number_value(qacc));
    copy_back(p->prepared, p->sim->g);

    json_object_set_new(res, "fp32_accuracy", json_incref(r->fp32));
    json_object_set_new(res, "ptq_accuracy", json_incref(r->ptq));
    json_object_set_new(res, "qat_accuracy", qacc);
    json_t *train = json_pack("{s:i, s:I, s:I, s:s, s:f, s:f, s:f, s:s, s:f, s:b, s:b, s:I, s:I, s:I}", "epochs",
                              r->o.epochs, "batch_size", (json_int_t)qs_qat_batch(r->t), "steps",
                              (json_int_t)qs_qat_total_steps(r->t), "optimizer", p->cfg.qat.optimizer, "lr", r->o.lr,
                              "weight_decay", r->o.weight_decay, "momentum", r->o.momentum, "schedule",
                              p->cfg.qat.schedule, "clip_grad", r->o.clip_grad, "learn_ranges", r->o.learn_ranges,
                              "flip", r->o.flip, "seed", (json_int_t)r->o.seed, "training_samples",
                              (json_int_t)r->train.rows, "resumed_from_step", (json_int_t)resumed);
    json_object_set_new(train, "parameters", qs_qat_summary(r->t));
    /* throughput of this run's steps (validation and checkpoints included); CPU time counts every
     * thread, so that a shared machine's load does not hide the cost */
    int64_t nsteps = qs_qat_total_steps(r->t) - resumed;
    json_object_set_new(train, "wall_seconds", json_real(train_wall));
    json_object_set_new(train, "cpu_seconds", json_real(train_cpu));
    json_object_set_new(train, "samples_per_second",
                        json_real(train_wall > 0 ? (double)nsteps * qs_qat_batch(r->t) / train_wall : 0));
    if (r->steady_steps)
        json_object_set_new(train, "steady_steps",
                            json_pack("{s:I, s:f, s:f, s:f}", "steps", (json_int_t)r->steady_steps, "wall_seconds",
                                      r->steady_wall, "cpu_seconds", r->steady_cpu, "samples_per_second",
                                      r->steady_wall > 0 ? (double)r->steady_steps * qs_qat_batch(r->t) / r->steady_wall
                                                         : 0));
    json_object_set_new(train, "bn_handling", json_string(qs_qat_nbn(r->t) ? "trained in training mode (bn_fold=false)"
                                                          : p->nbn ? "static folding" : "none"));
    json_t *q = json_pack("{s:o, s:O, s:O, s:O, s:O}", "training", train, "curve", r->curve, "fp32_accuracy", r->fp32,
                          "ptq_accuracy", r->ptq, "qat_accuracy", qacc);
    json_object_set_new(p->extra, "qat", q);
    rc = qs_ptq_write(p, "qat", res, e);
out:
    json_decref(state);
    return rc;
}

int qs_pipeline_qat(const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    *result = NULL;
    QS_NEED_MODEL(io, e);
    /* without calibration data, ranges are initialised on the first training samples */
    qs_pipeline_io io2 = *io;
    if (!io2.calib)
        io2.calib = io->train;
    qat_run r = { .io = &io2, .curve = json_array(), .fp32 = json_null(), .ptq = json_null() };
    json_t *res = json_object();
    int rc = io->train ? qs_ptq_open(&r.p, &io2, e) : qs_error(e, QS_EINVAL, "QAT needs training data and labels");
    if (rc == 0)
        rc = run_qat(&r, res, e);
    if (rc == 0 && io->outdir)
        json_object_set_new(res, "outdir", json_string(io->outdir));
    if (rc < 0)
        json_decref(res);
    else
        *result = res;
    qs_qat_free(r.t);
    qs_ptq_close(&r.p);
    qs_pl_close(&r.train);
    free(r.train_labels);
    json_decref(r.curve);
    json_decref(r.fp32);
    json_decref(r.ptq);
    return rc;
}
