/* The PTQ pipeline's stages (paper §3.5, Fig. 8), driven by the job spec's config; the ptq job's
 * driver (engine/pipeline/ptq.c) runs them in this order:
 *
 *   FP32 model → BN fold → QuantSim (symmetric weights, asymmetric activations)
 *     → weight ranges (min-max / MSE, per channel) → calibration: activation statistics streamed
 *       through the sim with weights quantized and activation quantizers bypassed
 *     → activation ranges (MSE / min-max / percentile; cross-entropy for the logits)
 *     → accuracy FP32 vs quantized (when validation data is given), per-layer SQNR
 *     → model.qdq.onnx, encodings.json, model.prepared.onnx, report.json
 *
 * Memory is bounded by the model and the observers' fixed histograms: calibration data streams
 * from the mapped file one batch at a time (in up to CALIB_SHARDS shards side by side, each with
 * its own plan and observers: a fixed multiple, whatever the number of samples). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "onnx.h"
#include "shapes.h"
#include "quant/adaround.h"
#include "quant/biascorr.h"
#include "quant/gptq.h"
#include "quant/cle.h"
#include "quant/requantize.h"
#include "quant/export.h"
#include "quant/overrides.h"
#include "quant/ptq.h"
#include "quant/preact.h"
#include "quant/range.h"
#include "quant/target.h"

#include <pthread.h>
#include <stdatomic.h>

typedef qs_ptq ptq;
#define warn qs_ptq_warn
#define timing qs_ptq_timing

int qs_ptq_stream_calib(ptq *p, qs_graph *g, int64_t start, int64_t n, qs_runner_sink sink, void *ud, qs_err *e)
{
    qs_runner *r = qs_runner_new(g, p->cfg.calibration.batch_size, e);
    if (!r)
        return e->code ? e->code : QS_ENOMEM;
    qs_runner_set_pool(r, p->io->pool);
    int rc = qs_runner_stream(r, p->calib.d, p->calib.arrays, start, n, sink, ud, NULL, NULL, p->io->abort, e);
    qs_runner_free(r);
    return rc;
}

void qs_ptq_warn(ptq *p, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(p->warnings, json_string(msg));
    qs_pl_log(p->io, "warning", "%s", msg);
}

void qs_ptq_skipped(ptq *p, const char *step, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *a = json_object_get(p->extra, "skipped_steps");
    if (!a)
        json_object_set_new(p->extra, "skipped_steps", a = json_array());
    json_array_append_new(a, json_pack("{s:s, s:s}", "step", step, "reason", msg));
    qs_pl_log(p->io, "info", "%s skipped: %s", step, msg);
}

/* Why BN folding folded nothing: no BN at all, or none right after a layer it can fold into. */
static void bnfold_skipped(ptq *p)
{
    int nbn = 0;
    for (int i = 0; i < p->prepared->nnodes; i++)
        nbn += qs_node_is_op(&p->prepared->nodes[i], "BatchNormalization");
    if (!nbn)
        qs_ptq_skipped(p, "bn_fold", "the model has no BatchNormalization node");
    else
        qs_ptq_skipped(p, "bn_fold", "none of the %d BatchNormalization nodes directly follows a Conv, "
                       "ConvTranspose, Gemm or MatMul with a constant weight whose only reader it is", nbn);
}

void qs_ptq_timing(ptq *p, const char *stage, double t0)
{
    json_object_set_new(p->timings, stage, json_real(qs_now() - t0));
}

/* --- weight ranges ----------------------------------------------------------------------------- */

int qs_ptq_weight_ranges(ptq *p, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    for (int i = 0; i < sim->nq; i++) {
        qs_quantizer *q = &sim->q[i];
        if (q->kind != QS_Q_WEIGHT)
            continue;
        const qs_tensor *w = sim->g->values[q->value].init;
        if (!w)
            return qs_error(e, QS_EINVAL, "weight '%s' is not an initializer", q->name);
        int rc = qs_range_weights(w, q->axis, q->grid, q->symmetric, p->cfg.weights.pow2, p->cfg.weights.range,
                                  qs_quantsim_scales(sim, i), qs_quantsim_zeros(sim, i), e);
        if (rc < 0)
            return qs_error_prefix(e, "weight ranges of '%s': ", q->name);
        q->initialized = 1;
    }
    return 0;
}

/* --- calibration ------------------------------------------------------------------------------- */

/* Calibration runs the sim with its activation quantizers bypassed, and a bypassed FakeQuant is a
 * copy: the run goes on a graph without them, each reader reading the quantizer's input, and the
 * observers watch that value. Same arithmetic, one copy per quantizer less, and the executor's
 * fusion stays on, except that the values watched are kept from it (qs_runner_keep_value).
 *
 * The graph is a clone whose initializers borrow the sim's (no second copy of the weights). The
 * bypassed FakeQuants fed by a node or an initializer (the biases') are dropped; one on a graph
 * input stays, as the executor never reports graph inputs to observers. src[v] is the value the
 * clone computes in place of v (v itself unless v was a dropped FakeQuant's output). */
static qs_graph *calib_graph(const qs_quantsim *sim, int *src, qs_err *e)
{
    qs_graph *g = sim->g;
    qs_tensor **inits = calloc(g->nvalues + 1, sizeof *inits);
    char *drop = calloc(g->nnodes + 1, 1);
    qs_graph *c = NULL;
    if (!inits || !drop)
        goto oom;
    for (int v = 0; v < g->nvalues; v++) {
        inits[v] = g->values[v].init;
        g->values[v].init = NULL;
    }
    c = qs_graph_clone(g);
    for (int v = 0; v < g->nvalues; v++)
        g->values[v].init = inits[v];
    if (!c)
        goto oom;
    for (int v = 0; v < g->nvalues; v++) {
        src[v] = v;
        const qs_tensor *t = inits[v];
        if (t && !(c->values[v].init = qs_tensor_wrap(t->dtype, t->ndim, t->shape, t->data)))
            goto oom;
    }
    /* nodes are in topological order (the sim's executor sorted them), so src[] of a FakeQuant's
     * input is final when the FakeQuant is reached, and chains resolve */
    for (int i = 0; i < c->nnodes; i++) {
        qs_node *n = &c->nodes[i];
        for (int j = 0; j < n->nin; j++)
            if (n->in[j] >= 0)
                n->in[j] = src[n->in[j]];
        int x = n->nin > 0 ? n->in[0] : -1;
        if (!qs_node_is_fakequant(n) || !qs_node_int(n, "bypass", 0) ||
            n->nout != 1 || n->out[0] < 0 || x < 0 || (!c->values[x].init && c->values[x].producer < 0))
            continue;
        drop[i] = 1;
        src[n->out[0]] = x;
    }
    for (int k = 0; k < c->noutputs; k++)
        c->outputs[k] = src[c->outputs[k]];
    qs_graph_remove_nodes(c, drop);
    if (qs_graph_toposort(c, e) < 0) {
        qs_graph_free(c);
        c = NULL;
    }
    free(inits);
    free(drop);
    return c;
oom:
    free(inits);
    free(drop);
    qs_graph_free(c);
    qs_error(e, QS_ENOMEM, "out of memory");
    return NULL;
}

typedef struct calib_state {
    const qs_graph *g;      /* the graph being run */
    int *head, *next;       /* value id → first quantizer watching it, → the next one, -1 ends */
    int *watch;             /* quantizer → the value it watches in g, -1 for none */
    qs_observer **obs;      /* per quantizer */
    char *rows;             /* per quantizer: keeps logit rows (cross-entropy) */
    qs_threadpool *pool;    /* for an observer's scan of a large batch */
} calib_state;

static void calib_observe(void *ud, int node, qs_tensor *const *out, int nout)
{
    calib_state *s = ud;
    const qs_node *n = &s->g->nodes[node];
    for (int j = 0; j < nout && j < n->nout; j++) {
        int v = n->out[j];
        for (int qi = v >= 0 ? s->head[v] : -1; qi >= 0; qi = s->next[qi]) {
            if (s->rows[qi])
                qs_observer_add_rows(s->obs[qi], qs_f32(out[j]), out[j]->shape[0]);
            else
                qs_observer_add_threads(s->obs[qi], qs_f32(out[j]), qs_numel(out[j]), s->pool);
        }
    }
}

static int is_act(const qs_quantizer *q) { return q->kind == QS_Q_ACT || q->kind == QS_Q_INPUT; }

static qs_range_method act_method(ptq *p, const qs_quantizer *q)
{
    return qs_graph_is_output(p->sim->g, q->out) ? p->cfg.act.last_layer : p->cfg.act.range;
}

/* The step check (ptq_check.c) may later derive cross-entropy ranges from these observers: they
 * keep the logit rows then too (which changes no other range: the histogram is the same). */
static int wants_rows(const ptq *p, const qs_quantizer *q)
{
    return (qs_graph_is_output(p->sim->g, q->out) ? p->rows_for.last_layer : p->rows_for.range) == QS_RANGE_CE;
}

typedef struct qparams_job {
    ptq *p;
    const calib_state *s;
    qs_range_method *m;                             /* per quantizer */
    struct { float scale, zero; int rc; } *res;     /* per quantizer */
    int nthreads;
} qparams_job;

/* Worker w takes quantizers w, w + nthreads, …: costs differ (a ReLU output's range has one free
 * end), so interleaving balances better than contiguous runs. */
static void qparams_range(void *arg, int64_t begin, int64_t end, int worker)
{
    qparams_job *j = arg;
    const qs_quantsim *sim = j->p->sim;
    for (int64_t w = begin; w < end; w++)
        for (int i = (int)w; i < sim->nq; i += j->nthreads)
            if (j->s->obs[i])
                j->res[i].rc = qs_observer_qparams(j->s->obs[i], sim->q[i].grid, sim->q[i].symmetric,
                                                   j->p->cfg.act.pow2, j->m[i], j->p->cfg.act.percentile,
                                                   &j->res[i].scale, &j->res[i].zero, NULL);
}

/* Calibration runs in shards of whole batches when the calibration set is large enough and the
 * model small: each shard streams its share through a runner of its own with one thread into
 * observers of its own, the shards run side by side on the threads, and their observers are
 * merged in shard order at the end. Small models gain most from this: threading each op of a
 * small model costs more in wake-ups and in caches split between cores than the op itself (the
 * observers read every activation, half of it from the other core's cache). The shard count
 * follows from the number of batches, never from the thread count, so the result does not depend
 * on the threads (calib_nshards). Unsharded, each observer's scan of a large batch is spread over
 * the threads instead (qs_observer_add_threads). */
#define CALIB_SHARDS 4                 /* at most */
#define CALIB_SHARD_ARENA (32 << 20)   /* and a plan's activations at most this many bytes */

/* Four shards from 64 batches, two from 16. Each shard has fixed costs (its plan, its observers'
 * exact start) that a few batches must pay for, and an even count keeps two threads balanced
 * (three shards on two threads leave one thread running two). */
static int calib_nshards(int64_t nbatches) { return nbatches >= 64 ? 4 : nbatches >= 16 ? 2 : 1; }

typedef struct calib_shard {
    calib_state s;            /* the shared maps; this shard's observers */
    qs_runner *r;
    int64_t start, count;     /* its samples */
    int rc;
    qs_err e;
} calib_shard;

typedef struct calib_run {
    ptq *p;
    calib_shard *sh;
    atomic_llong done;        /* samples streamed, over all shards */
    pthread_mutex_t mu;       /* progress events one at a time */
    double t0;
} calib_run;

static void calib_shards(void *arg, int64_t begin, int64_t end, int worker)
{
    calib_run *cr = arg;
    for (int64_t k = begin; k < end; k++) {
        calib_shard *sh = &cr->sh[k];
        int64_t bs = qs_runner_batch(sh->r);
        for (int64_t at = sh->start; at < sh->start + sh->count && sh->rc == 0; at += bs) {
            int64_t n = sh->start + sh->count - at < bs ? sh->start + sh->count - at : bs;
            sh->rc = qs_runner_stream(sh->r, cr->p->calib.d, cr->p->calib.arrays, at, n, NULL, NULL, NULL, NULL,
                                      cr->p->io->abort, &sh->e);
            long long done = atomic_fetch_add(&cr->done, n) + n;
            pthread_mutex_lock(&cr->mu);
            qs_pl_progress(cr->p->io, "calibration", (double)done, (double)cr->p->ncalib, cr->t0);
            pthread_mutex_unlock(&cr->mu);
        }
    }
}

/* A runner on the calibration graph observing into s, fused except around the values the quantizers
 * watch; keeps logit rows for the cross-entropy quantizers. */
static qs_runner *calib_runner(ptq *p, calib_state *s, qs_threadpool *pool, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    qs_runner *r = qs_runner_new((qs_graph *)s->g, p->cfg.calibration.batch_size, e);
    if (!r)
        return NULL;
    qs_runner_set_pool(r, pool);
    /* fusion hides the values inside a fused chain: keep the ones a quantizer watches */
    for (int i = 0; i < sim->nq; i++)
        if (s->watch[i] >= 0 && qs_runner_keep_value(r, s->watch[i]) < 0) {
            qs_runner_free(r);
            qs_error(e, QS_ENOMEM, "out of memory");
            return NULL;
        }
    qs_runner_set_observer_fused(r, calib_observe, s);
    if (qs_runner_plan(r, e) < 0) {
        qs_runner_free(r);
        return NULL;
    }
    qs_exec *x = qs_runner_exec(r);
    for (int i = 0; i < sim->nq; i++) {
        const qs_tensor *t = s->watch[i] >= 0 ? qs_exec_value(x, s->watch[i]) : NULL;
        if ((act_method(p, &sim->q[i]) == QS_RANGE_CE || wants_rows(p, &sim->q[i])) && t && t->ndim == 2) {
            qs_observer_keep_rows(s->obs[i], t->shape[1], 2048);
            s->rows[i] = 1;
        }
    }
    return r;
}

static qs_observer **new_observers(const qs_quantsim *sim)
{
    qs_observer **obs = calloc(sim->nq + 1, sizeof *obs);
    for (int i = 0; obs && i < sim->nq; i++)
        if (is_act(&sim->q[i]) && !(obs[i] = qs_observer_new())) {
            for (int k = 0; k < i; k++)
                qs_observer_free(obs[k]);
            free(obs);
            return NULL;
        }
    return obs;
}

static void free_observers(const qs_quantsim *sim, qs_observer **obs)
{
    for (int i = 0; obs && i < sim->nq; i++)
        qs_observer_free(obs[i]);
    free(obs);
}

/* config.activations.high_precision auto: each activation's quantization noise on the grid of
 * config.activations.bits, with the range chosen for it, measured on its calibration histogram;
 * those whose SQNR is below high_precision_db get 16 bits and a range chosen again for that grid
 * (from the same observer). Idempotent: a quantizer promoted by an earlier calibration is measured
 * on the base grid again. Quantizers whose width an override set are left alone. report.json's
 * "high_precision" lists every measurement. */
#define HIGH_BITS 16
static int high_precision_auto(ptq *p, qs_observer **obs, const qs_range_method *m, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    int base = p->cfg.act.bits, rc = 0;
    double thr = p->cfg.act.high_precision_db;
    json_t *list = json_array(), *promoted = json_array();
    for (int i = 0; i < sim->nq && rc == 0; i++) {
        qs_quantizer *q = &sim->q[i];
        if (!obs[i] || base >= HIGH_BITS || (q->grid.bits != base && !q->high_precision))
            continue;
        qs_grid g = qs_grid_make(base, q->grid.is_signed);
        float sc, zp;
        if ((rc = qs_observer_qparams(obs[i], g, q->symmetric, p->cfg.act.pow2, m[i], p->cfg.act.percentile, &sc,
                                      &zp, e)) < 0)
            break;
        q->sqnr_db = qs_observer_sqnr_db(obs[i], g, sc, zp);
        int up = isfinite(q->sqnr_db) && q->sqnr_db < thr;
        if ((rc = qs_quantsim_set_bits(sim, i, up ? HIGH_BITS : base, e)) < 0)
            break;
        q->high_precision = up;
        if (up && (rc = qs_observer_qparams(obs[i], q->grid, q->symmetric, p->cfg.act.pow2, m[i],
                                            p->cfg.act.percentile, &sc, &zp, e)) < 0)
            break;
        qs_quantsim_set(sim, i, -1, sc, zp);
        json_array_append_new(list, json_pack("{s:s, s:s, s:o, s:i}", "name", q->name, "layer", q->layer,
                                              "sqnr_db", isfinite(q->sqnr_db) ? json_real(q->sqnr_db) : json_null(),
                                              "bits", q->grid.bits));
        if (up)
            json_array_append_new(promoted, json_string(q->name));
    }
    if (rc < 0) {
        json_decref(list);
        json_decref(promoted);
        return qs_error_prefix(e, "config.activations.high_precision: ");
    }
    qs_pl_log(p->io, "info", "high_precision auto: %zu of %zu activations below %g dB at %d bits get %d bits",
              json_array_size(promoted), json_array_size(list), thr, base, HIGH_BITS);
    json_object_set_new(p->extra, "high_precision",
                        json_pack("{s:s, s:f, s:i, s:i, s:o, s:o}", "rule",
                                  "activations whose SQNR at the base width (on the calibration data, with the range "
                                  "chosen for them) is below threshold_db get high_bits",
                                  "threshold_db", thr, "base_bits", base, "high_bits", HIGH_BITS, "promoted", promoted,
                                  "activations", list));
    return 0;
}

void qs_ptq_observed_free(qs_ptq_observed *o)
{
    if (!o)
        return;
    for (int i = 0; o->obs && i < o->nq; i++)
        qs_observer_free(o->obs[i]);
    free(o->obs);
    free(o->rows);
    free(o);
}

/* Activation ranges (and high_precision auto) of p->sim from observers of a calibration: the
 * methods are p->cfg's, the observers any calibration's of a sim with the same quantizers and the
 * same weights (the step check re-derives a candidate's ranges from the kept state's). */
int qs_ptq_ranges_from(ptq *p, const qs_ptq_observed *o, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    int nq = sim->nq, rc = 0, threads = qs_threadpool_size(p->io->pool);
    if (o->nq != nq)
        return qs_error(e, QS_EINVAL, "internal: observers of %d quantizers for a sim of %d", o->nq, nq);
    calib_state s = { .obs = o->obs, .rows = o->rows };
    qparams_job job = { p, &s, malloc((nq + 1) * sizeof *job.m), malloc((nq + 1) * sizeof *job.res), threads };
    if (!job.m || !job.res) {
        free(job.m);
        free(job.res);
        return qs_error(e, QS_ENOMEM, "out of memory");
    }
    for (int i = 0; i < nq; i++) {
        if (!s.obs[i])
            continue;
        qs_quantizer *q = &sim->q[i];
        if (qs_observer_nonfinite(s.obs[i]))
            warn(p, "activation '%s' produced NaN/Inf during calibration; they were ignored for its range", q->name);
        job.m[i] = act_method(p, q);
        if (job.m[i] == QS_RANGE_CE && !s.rows[i]) {
            warn(p, "cross-entropy ranges need [N, classes] logits; '%s' uses MSE", q->name);
            job.m[i] = QS_RANGE_MSE;
        }
        if (job.m[i] == QS_RANGE_BN) {
            warn(p, "BN-based ranges apply without calibration data; '%s' uses MSE on the data given", q->name);
            job.m[i] = QS_RANGE_MSE;
        }
    }
    /* each quantizer's search is independent and deterministic: spread them over the threads */
    if (job.nthreads > nq)
        job.nthreads = nq > 0 ? nq : 1;
    qs_threadpool_for(p->io->pool, job.nthreads, job.nthreads, 1, qparams_range, &job);
    for (int i = 0; i < nq && rc == 0; i++) {
        if (!s.obs[i])
            continue;
        qs_quantizer *q = &sim->q[i];
        if (job.res[i].rc < 0) {   /* again, for the message */
            rc = qs_observer_qparams(s.obs[i], q->grid, q->symmetric, p->cfg.act.pow2, job.m[i],
                                     p->cfg.act.percentile, &job.res[i].scale, &job.res[i].zero, e);
            rc = qs_error_prefix(e, "activation range of '%s': ", q->name);
            break;
        }
        qs_quantsim_set(sim, i, -1, job.res[i].scale, job.res[i].zero);
        q->initialized = 1;
    }
    if (rc == 0 && !strcmp(p->cfg.act.high_precision, "auto"))
        rc = high_precision_auto(p, s.obs, job.m, e);
    free(job.m);
    free(job.res);
    return rc;
}

int qs_ptq_calibrate(ptq *p, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    calib_state s = {0};
    calib_shard sh[CALIB_SHARDS];
    memset(sh, 0, sizeof sh);
    int rc = 0, nq = sim->nq, nv = sim->g->nvalues, nshards = 1;
    qs_threadpool *pool = p->io->pool;
    int threads = qs_threadpool_size(pool);
    qs_graph *g = NULL;
    int *src = malloc((nv + 1) * sizeof *src);
    s.head = malloc((nv + 1) * sizeof *s.head);
    s.next = malloc((nq + 1) * sizeof *s.next);
    s.watch = malloc((nq + 1) * sizeof *s.watch);
    s.rows = calloc(nq + 1, 1);
    if (!src || !s.head || !s.next || !s.watch || !s.rows || !(s.obs = new_observers(sim))) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    int nact = 0;
    for (int i = 0; i < nq; i++)
        nact += s.obs[i] != NULL;
    if (!nact) {
        qs_ptq_observed_free(p->observed);
        p->observed = NULL;
        goto out;
    }
    /* activations observed with weights quantized, activation quantizers passing data through */
    qs_quantsim_bypass_kind(sim, QS_Q_ACT, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_INPUT, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_BIAS, 1);
    if (qs_graph_toposort(sim->g, e) < 0 || !(g = calib_graph(sim, src, e))) {
        rc = e->code ? e->code : QS_ENOMEM;
        goto out;
    }
    s.g = g;
    for (int v = 0; v < nv; v++)
        s.head[v] = -1;
    for (int i = nq - 1; i >= 0; i--) {
        s.watch[i] = s.obs[i] ? src[sim->q[i].out] : -1;
        s.next[i] = s.watch[i] >= 0 ? s.head[s.watch[i]] : -1;
        if (s.watch[i] >= 0)
            s.head[s.watch[i]] = i;
    }
    s.pool = pool;
    sh[0].s = s;
    if (!(sh[0].r = calib_runner(p, &sh[0].s, pool, e))) {
        rc = e->code ? e->code : QS_ENOMEM;
        goto out;
    }
    int64_t bs = qs_runner_batch(sh[0].r), nbatches = (p->ncalib + bs - 1) / bs;
    if (calib_nshards(nbatches) > 1 && qs_exec_arena_bytes(qs_runner_exec(sh[0].r)) <= CALIB_SHARD_ARENA) {
        nshards = calib_nshards(nbatches);
        qs_runner_set_pool(sh[0].r, NULL);   /* the shards share the pool instead */
        sh[0].s.pool = NULL;
        for (int k = 1; k < nshards; k++) {
            sh[k].s = s;
            sh[k].s.pool = NULL;
            if (!(sh[k].s.obs = new_observers(sim))) {
                rc = qs_error(e, QS_ENOMEM, "out of memory");
                goto out;
            }
            if (!(sh[k].r = calib_runner(p, &sh[k].s, NULL, e))) {
                rc = e->code ? e->code : QS_ENOMEM;
                goto out;
            }
        }
    }
    for (int k = 0; k < nshards; k++) {   /* whole batches, as evenly as they go */
        int64_t b0 = nbatches * k / nshards, b1 = nbatches * (k + 1) / nshards;
        sh[k].start = b0 * bs;
        sh[k].count = (b1 * bs < p->ncalib ? b1 * bs : p->ncalib) - sh[k].start;
    }
    calib_run cr = { .p = p, .sh = sh, .t0 = qs_now() };
    atomic_init(&cr.done, 0);
    pthread_mutex_init(&cr.mu, NULL);
    qs_threadpool_for(pool, nshards > 1 ? threads : 1, nshards, 1, calib_shards, &cr);
    pthread_mutex_destroy(&cr.mu);
    for (int k = 0; k < nshards && rc == 0; k++)
        if (sh[k].rc < 0) {
            rc = sh[k].rc;
            if (e)
                *e = sh[k].e;
        }
    for (int k = 1; k < nshards && rc == 0; k++)
        for (int i = 0; i < nq && rc == 0; i++)
            if (s.obs[i] && (rc = qs_observer_merge(s.obs[i], sh[k].s.obs[i])) < 0)
                qs_error(e, rc, "out of memory merging the calibration shards");
    if (rc < 0)
        goto out;
    qs_quantsim_bypass_kind(sim, -1, 0);
    qs_ptq_observed_free(p->observed);   /* the new observers replace the last calibration's */
    if (!(p->observed = calloc(1, sizeof *p->observed))) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    p->observed->obs = s.obs;
    p->observed->rows = s.rows;
    p->observed->nq = nq;
    s.obs = NULL;
    s.rows = NULL;
    rc = qs_ptq_ranges_from(p, p->observed, e);
out:
    qs_quantsim_bypass_kind(sim, -1, 0);
    for (int k = 0; k < CALIB_SHARDS; k++) {
        qs_runner_free(sh[k].r);
        if (k > 0)
            free_observers(sim, sh[k].s.obs);
    }
    qs_graph_free(g);
    free_observers(sim, s.obs);
    free(s.rows);
    free(s.watch);
    free(s.next);
    free(s.head);
    free(src);
    return rc;
}

/* --- report ------------------------------------------------------------------------------------ */

static const char *kind_name(qs_qkind k)
{
    return k == QS_Q_INPUT ? "input" : k == QS_Q_ACT ? "activation" : k == QS_Q_WEIGHT ? "weight" : "bias";
}

json_t *qs_ptq_quantizer_table(const qs_quantsim *sim)
{
    json_t *arr = json_array();
    for (int i = 0; i < sim->nq; i++) {
        const qs_quantizer *q = &sim->q[i];
        const float *s = qs_f32(sim->g->values[q->scale].init), *z = qs_f32(sim->g->values[q->zero].init);
        json_t *sc = json_array(), *zp = json_array(), *lo = json_array(), *hi = json_array();
        for (int c = 0; c < q->nch; c++) {
            float a, b;
            qs_qparams_range(q->grid, s[c], z[c], &a, &b);
            json_array_append_new(sc, json_real(s[c]));
            json_array_append_new(zp, json_integer((json_int_t)z[c]));
            json_array_append_new(lo, json_real(a));
            json_array_append_new(hi, json_real(b));
        }
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:b, s:b, s:i, s:o, s:o, s:o, s:o}", "name",
                                             q->name, "layer", q->layer ? q->layer : "", "kind", kind_name(q->kind),
                                             "bits", q->grid.bits, "signed", q->grid.is_signed, "symmetric",
                                             q->symmetric, "axis", q->axis, "scale", sc, "zero_point", zp, "min", lo,
                                             "max", hi));
    }
    return arr;
}

/* --- the stages ----------------------------------------------------------------------------- */

int qs_ptq_open(ptq *p, const qs_pipeline_io *io, qs_err *e)
{
    memset(p, 0, sizeof *p);
    p->io = io;
    p->t_start = qs_now();
    p->timings = json_object();
    p->warnings = json_array();
    p->extra = json_object();
    int rc;
    if ((rc = qs_qconfig_parse(io->config, &p->cfg, e)) < 0) {
        qs_qconfig_default(&p->cfg, "standard");
        return rc;
    }
    if ((rc = qs_onnx_load(io->model, &p->model, e)) < 0 || (rc = qs_exec_check(p->model, e)) < 0 ||
        (rc = qs_graph_bind_config(p->model, &p->cfg, e)) < 0)
        return rc;
    char ops[256];
    if (qs_graph_quantized_ops(p->model, ops, sizeof ops)) {
        if (!p->cfg.requantize)
            return qs_error(e, QS_EUNSUPPORTED, "the model is already quantized (%s); quantizing it again would "
                            "stack new quantizers on the old ones: requantize it from its dequantized weights with "
                            "--requantize (job spec: config.requantize: true), or give the float model", ops);
        int nw, np;
        if ((rc = qs_requantize(p->model, &nw, &np, e)) < 0)
            return rc;
        qs_pl_log(io, "info", "requantize: %d weights dequantized to float, %d activation Q/DQ pairs removed (%s)",
                  nw, np, ops);
        json_object_set_new(p->extra, "requantized", json_pack("{s:i, s:i, s:s}", "weights", nw,
                                                                "activation_pairs", np, "ops", ops));
    }
    if (io->calib) {
        if ((rc = qs_pl_open_inputs(io->calib, "calibration", p->model, &p->calib, e)) < 0)
            return rc;
        p->ncalib = p->calib.rows < p->cfg.calibration.samples ? p->calib.rows : p->cfg.calibration.samples;
        if ((rc = qs_pl_check_finite(&p->calib, p->model, p->ncalib, "calibration", e)) < 0)
            return rc;
    }
    if (io->val) {
        if (!io->val_labels)
            return qs_error(e, QS_EINVAL, "validation data needs labels");
        if ((rc = qs_pl_open_inputs(io->val, "validation", p->model, &p->val, e)) < 0 ||
            (rc = qs_pl_load_labels(io->val_labels, p->val.rows, &p->labels, e)) < 0)
            return rc;
    }
    return 0;
}

int qs_ptq_fold(ptq *p, qs_err *e)
{
    double t0 = qs_now();
    int rc;
    if (!p->prepared && !(p->prepared = qs_graph_clone(p->model)))
        return qs_error(e, QS_ENOMEM, "out of memory");
    if (p->cfg.bn_fold) {
        if ((rc = qs_bnfold(p->prepared, &p->bn, &p->nbn, e)) < 0)
            return rc;
        qs_pl_log(p->io, "info", "folded %d BatchNormalization node%s", p->nbn, p->nbn == 1 ? "" : "s");
        if (!p->nbn)
            bnfold_skipped(p);
    } else {
        qs_ptq_skipped(p, "bn_fold", "config.bn_fold is false");
    }
    timing(p, "bn_fold", t0);
    return qs_ptq_cle(p, e);
}

static int cle_minima(void *ud, qs_graph *g, const int *nodes, int n, float ***mins, qs_err *e)
{
    ptq *p = ud;
    return qs_preact_minima(g, &p->calib, p->ncalib, p->cfg.calibration.batch_size, p->io->pool, p->io->abort,
                            nodes, n, mins, e);
}

int qs_ptq_cle(ptq *p, qs_err *e)
{
    int rc;
    if (p->cfg.cle || p->cfg.bias_absorption) {
        double t0 = qs_now();
        qs_cle_config cc = qs_cle_config_default();
        cc.equalize = p->cfg.cle;
        cc.absorb = p->cfg.bias_absorption;
        cc.replace_relu6 = p->cfg.relu6_to_relu;
        if (p->calib.d) {   /* bound absorption by the calibration data's pre-activations */
            cc.preact_minima = cle_minima;
            cc.preact_ud = p;
        }
        qs_cle_report *rep = NULL;
        rc = qs_cle(p->prepared, p->bn, p->nbn, &cc, &rep, e);
        if (rep) {
            qs_pl_log(p->io, "info", "cross-layer equalization: %d pairs, %d sweeps, %d absorbed", rep->npairs,
                      rep->iterations, rep->nabsorbed);
            if (p->cfg.cle && !rep->npairs)
                qs_ptq_skipped(p, "cle", "no pair of consecutive layers to equalize (Conv/Gemm → [ReLU] → "
                               "Conv/Gemm with constant weights, the first one's output read only by the second)%s",
                               rep->nskipped ? "; report.json's cle.skipped says why each candidate pair was left" : "");
            if (p->cfg.bias_absorption && !rep->nabsorbed)
                qs_ptq_skipped(p, "bias_absorption", "%s", !p->nbn ? "it needs the BatchNormalization statistics "
                               "of folded layers and none were folded" : !rep->npairs ? "no pair of layers to move "
                               "a bias through" : "c = max(0, β − 3γ) was 0 for every channel of every pair");
            if (rep->nrelu6)
                warn(p, "%d ReLU6 (Clip 0..6) replaced by ReLU for cross-layer equalization; the prepared FP32 "
                     "model differs where activations exceeded 6", rep->nrelu6);
            json_object_set_new(p->extra, "cle", qs_cle_report_json(rep));
            qs_cle_report_free(rep);
        }
        if (rc < 0)
            return rc;
        timing(p, "cle", t0);
    }
    return 0;
}

/* The weights' rounding (config.rounding), then bias correction as configured: after nearest or
 * GPTQ, not after AdaRound (paper §3.4: AdaRound's layer-output loss already takes the error's
 * mean out). GPTQ compensates each output channel within its own weights, which a depthwise
 * channel's nine cannot do, so the mean shift bias correction removes is left there (measured:
 * docs/results.md, "GPTQ and bias correction"). Bias correction compares with the weights from
 * before rounding, kept aside in the sim. Weight ranges must not be recomputed afterwards: the
 * rounded weights sit on the current grid. */
int qs_ptq_weight_rounding(ptq *p, qs_err *e)
{
    double t0 = qs_now();
    int rc = 0;
    if (p->cfg.rounding == QS_ROUND_ADAROUND) {
        qs_adaround_config ac = qs_adaround_config_default();
        ac.iterations = p->cfg.adaround.iterations;
        ac.reg = p->cfg.adaround.reg;
        ac.batch = p->cfg.adaround.batch_size;
        ac.samples = p->cfg.adaround.samples < p->ncalib ? p->cfg.adaround.samples : (int)p->ncalib;
        qs_adaround_report *ar = NULL;
        rc = qs_adaround(p->sim, &p->calib, &ac, p->io, &ar, e);
        if (ar) {
            json_object_set_new(p->extra, "adaround", qs_adaround_report_json(ar));
            qs_adaround_report_free(ar);
        }
        timing(p, "adaround", t0);
        return rc;
    }
    if (p->cfg.rounding == QS_ROUND_GPTQ) {   /* H over the calibration samples, in its batches */
        if (p->cfg.bias_correction != QS_BC_NONE && (rc = qs_quantsim_keep_fp32_weights(p->sim, e)) < 0)
            return rc;
        qs_gptq_config gc = qs_gptq_config_default();
        gc.samples = p->ncalib;
        gc.batch = p->cfg.calibration.batch_size;
        qs_gptq_report *gr = NULL;
        rc = qs_gptq(p->sim, &p->calib, &gc, p->io, &gr, e);
        if (gr) {
            json_object_set_new(p->extra, "gptq", qs_gptq_report_json(gr));
            qs_gptq_report_free(gr);
        }
        timing(p, "gptq", t0);
        if (rc < 0)
            return rc;
        t0 = qs_now();
    }
    if (p->cfg.bias_correction == QS_BC_NONE)
        return 0;
    qs_biascorr_report *rep = NULL;
    if (p->cfg.bias_correction == QS_BC_EMPIRICAL) {
        qs_biascorr_config bc = qs_biascorr_config_default();
        bc.samples = (int)p->ncalib;
        bc.batch = p->cfg.calibration.batch_size;
        rc = qs_biascorr_empirical(p->sim, &p->calib, &bc, p->io, &rep, e);
    } else {
        rc = qs_biascorr_analytical(p->sim, p->bn, p->nbn, &rep, e);
    }
    if (rep) {
        json_object_set_new(p->extra, "bias_correction", qs_biascorr_report_json(rep));
        qs_biascorr_report_free(rep);
    }
    timing(p, "bias_correction", t0);
    return rc;
}

int qs_ptq_build_sim(ptq *p, qs_err *e)
{
    qs_qsim_config scfg = qs_qsim_config_default();
    scfg.wbits = p->cfg.weights.bits;
    scfg.abits = p->cfg.act.bits;
    scfg.w_symmetric = p->cfg.weights.symmetric;
    scfg.a_symmetric = p->cfg.act.symmetric;
    scfg.per_channel = p->cfg.weights.per_channel;
    scfg.reduce_range = qs_target_reduce_range(&p->cfg);
    scfg.pow2 = p->cfg.weights.pow2;
    scfg.nexclude = p->cfg.nexclude;
    scfg.exclude = p->cfg.exclude;
    for (int i = 0; i < p->cfg.nexclude; i++) {
        int found = 0;
        for (int k = 0; k < p->prepared->nnodes && !found; k++)
            found = !strcmp(p->prepared->nodes[k].name, p->cfg.exclude[i]);
        if (!found)
            return qs_error(e, QS_EINVAL, "config.exclude: no node named '%s' in the model", p->cfg.exclude[i]);
    }
    qs_qoverrides ov;
    if (qs_overrides_parse(p->cfg.overrides, &ov, e) < 0)
        return e->code;
    scfg.overrides = &ov;
    qs_quantsim_free(p->sim);
    p->sim = qs_quantsim_new(p->prepared, &scfg, e);
    qs_overrides_free(&ov);
    if (!p->sim)
        return e->code ? e->code : QS_EINVAL;
    int nw = 0, na = 0;
    for (int i = 0; i < p->sim->nq; i++)
        nw += p->sim->q[i].kind == QS_Q_WEIGHT, na += is_act(&p->sim->q[i]);
    if (!nw)
        warn(p, "the model has no weights to quantize (no Conv, Gemm or MatMul with constant weights)%s",
             na ? "; only activations are quantized" : ": the artifacts hold the FP32 model");
    qs_pl_log(p->io, "info", "%d weight and %d activation quantizers", nw, na);
    return 0;
}

int qs_ptq_prepare(ptq *p, qs_err *e)
{
    int rc;
    double t0;
    if (!p->calib.d)
        return qs_error(e, QS_EINVAL, "PTQ needs calibration data");
    if ((rc = qs_ptq_fold(p, e)) < 0 || (rc = qs_ptq_build_sim(p, e)) < 0)
        return rc;
    t0 = qs_now();
    if ((rc = qs_ptq_weight_ranges(p, e)) < 0)
        return rc;
    timing(p, "weight_ranges", t0);
    if ((rc = qs_ptq_weight_rounding(p, e)) < 0)
        return rc;
    t0 = qs_now();
    if ((rc = qs_ptq_calibrate(p, e)) < 0)
        return rc;
    qs_quantsim_update_bias(p->sim);
    timing(p, "calibration", t0);
    return 0;
}

int qs_ptq_accuracy(ptq *p, json_t *res, qs_err *e)
{
    if (!p->val.d) {
        json_object_set_new(res, "fp32_accuracy", json_null());
        json_object_set_new(res, "quant_accuracy", json_null());
        return 0;
    }
    qs_pl_acc fp, qa;
    double t0 = qs_now();
    int rc;
    /* FP32 is the model as given: what the user compares against (CLE's ReLU6 → ReLU may move the
     * prepared model slightly) */
    if ((rc = qs_pl_accuracy(p->model, &p->val, p->labels, p->cfg.calibration.batch_size, p->io,
                             "evaluation fp32", &fp, e)) < 0 ||
        (rc = qs_pl_accuracy(p->sim->g, &p->val, p->labels, p->cfg.calibration.batch_size, p->io,
                             "evaluation quantized", &qa, e)) < 0)
        return rc;
    json_object_set_new(res, "fp32_accuracy", json_real(fp.top1));
    json_object_set_new(res, "quant_accuracy", json_real(qa.top1));
    if (fp.top5 >= 0) {
        json_object_set_new(res, "fp32_top5", json_real(fp.top5));
        json_object_set_new(res, "quant_top5", json_real(qa.top5));
    }
    json_object_set_new(res, "validation_samples", json_integer(fp.samples));
    qs_pl_metric(p->io, "fp32_accuracy", fp.top1);
    qs_pl_metric(p->io, "quant_accuracy", qa.top1);
    timing(p, "evaluation", t0);
    return 0;
}

int qs_ptq_write(ptq *p, const char *type, json_t *res, qs_err *e)
{
    const qs_pipeline_io *io = p->io;
    double t0 = qs_now();
    int rc;
    json_t *layers = json_array();
    if (p->calib.d && (rc = qs_ptq_layer_sqnr(p, layers, e)) < 0)
        goto out;
    timing(p, "sqnr", t0);
    t0 = qs_now();
    json_t *target = NULL;
    rc = qs_target_measure(p, &target, e);
    json_object_set_new(p->extra, "target", target);
    if (rc < 0)
        goto out;
    timing(p, "target", t0);
    t0 = qs_now();
    qs_graph *qdq = NULL;
    if ((rc = qs_export_qdq(p->sim, &qdq, e)) < 0)
        goto out;
    rc = qs_pl_write_onnx(io, "model.qdq.onnx", qdq, e);
    qs_graph_free(qdq);
    if (rc == 0)
        rc = qs_pl_write_onnx(io, "model.prepared.onnx", p->prepared, e);
    json_t *enc = qs_export_encodings(p->sim);
    if (rc == 0)
        rc = qs_pl_write_json(io, "encodings.json", enc, e);
    json_decref(enc);
    if (rc < 0)
        goto out;
    timing(p, "export", t0);
    json_object_set_new(p->timings, "total", json_real(qs_now() - p->t_start));
    json_object_set_new(res, "seconds", json_real(qs_now() - p->t_start));
    json_t *report = json_pack("{s:s, s:s, s:o, s:O, s:o, s:O, s:O, s:O, s:I, s:I}", "type", type, "model",
                               io->model, "config", p->config ? json_incref(p->config) : qs_qconfig_to_json(&p->cfg), "result", res, "quantizers",
                               qs_ptq_quantizer_table(p->sim), "layers", layers, "timings", p->timings, "warnings",
                               p->warnings, "calibration_samples", (json_int_t)p->ncalib, "bn_folded",
                               (json_int_t)p->nbn);
    if (!report) {
        rc = qs_error(e, QS_ENOMEM, "cannot build report.json");
        goto out;
    }
    json_object_update(report, p->extra);
    json_object_set_new(report, "input_shapes", qs_graph_input_shapes_json(p->model));
    rc = qs_pl_write_json(io, "report.json", report, e);
    json_decref(report);
out:
    json_decref(layers);
    return rc;
}

void qs_ptq_close(ptq *p)
{
    qs_ptq_observed_free(p->observed);
    qs_quantsim_free(p->sim);
    qs_bn_records_free(p->bn, p->nbn);
    qs_graph_free(p->prepared);
    qs_graph_free(p->model);
    qs_pl_close(&p->calib);
    qs_pl_close(&p->val);
    free(p->labels);
    qs_qconfig_free(&p->cfg);
    json_decref(p->timings);
    json_decref(p->warnings);
    json_decref(p->extra);
    json_decref(p->config);
    memset(p, 0, sizeof *p);
}
