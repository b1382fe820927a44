/* The target's arithmetic: reduce_range by target, the emulation graph and its SQNR; see target.h.
 *
 * The emulation rewrites a copy of the simulation graph rather than the exported QDQ graph: the
 * export computes bit for bit what the simulation computes (export.h), so a layer of the copy fed
 * the same grid values as its QDQ twin, with only the layer's own arithmetic changed, is the QDQ
 * model as the target runs it. */
#include "quant/target.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"

#define MEASURE_ROWS 64   /* held-out calibration rows the agreement is measured on */
#define MAX_LOSS_DB 1.0   /* the target may lose this much output SQNR against the simulation */
/* The emulation multiplies in scalar integer code: at 224×224 (resnet18: 1.8 GMAC a sample) 64
 * rows were most of a basic PTQ job (28 s idle, 6 minutes on a loaded machine). Rows are capped
 * so the emulated pass costs about this many multiply-adds (resnet18: 11 rows, ~5 s), but never
 * fewer than MIN_ROWS; report.json's target.samples says how many were measured. */
#define EMU_MAC_BUDGET 2e10
#define MIN_ROWS 8

int qs_target_reduce_range(const qs_qconfig *c)
{
    return c->weights.reduce_range && !strcmp(c->target, "ort-x86") && c->weights.bits == 8 && c->act.bits == 8;
}

/* --- the emulation graph ---------------------------------------------------------------------- */

/* src[v]: the activation quantizer whose grid value v carries (through MaxPool, Reshape, …), or -1 */
static int *grid_sources(const qs_quantsim *sim)
{
    const qs_graph *g = sim->g;
    int *src = malloc((g->nvalues + 1) * sizeof *src);
    if (!src)
        return NULL;
    for (int v = 0; v < g->nvalues; v++)
        src[v] = -1;
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_ACT || sim->q[i].kind == QS_Q_INPUT)
            src[sim->q[i].out] = i;
    /* the FakeQuant nodes follow the model's nodes, so a few passes settle it */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < g->nnodes; i++) {
            const qs_node *n = &g->nodes[i];
            if (n->nin < 1 || n->in[0] < 0 || src[n->in[0]] < 0 || !qs_quantsim_keeps_grid(g, n))
                continue;
            for (int j = 0; j < n->nout; j++)
                if (n->out[j] >= 0 && src[n->out[j]] != src[n->in[0]]) {
                    src[n->out[j]] = src[n->in[0]];
                    changed = 1;
                }
        }
    }
    return src;
}

static int weight_quantizer(const qs_quantsim *sim, int v)
{
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_WEIGHT && sim->q[i].out == v)
            return i;
    return -1;
}

/* Node i of g becomes a TargetMac when its operands are an 8-bit activation grid and a ≤ 8-bit
 * weight grid (what ORT runs in integers); 1 when replaced, 0 when left as it is, < 0 on OOM. */
static int emulate_layer(const qs_quantsim *sim, const int *src, qs_graph *g, int i)
{
    qs_node *n = &g->nodes[i];
    const char *layer = qs_node_is_op(n, "Conv") ? "Conv" : qs_node_is_op(n, "Gemm") ? "Gemm"
                        : qs_node_is_op(n, "MatMul") ? "MatMul" : NULL;
    if (!layer || (n->domain && n->domain[0]) || n->nin < 2 || n->in[0] < 0)
        return 0;
    int wi = weight_quantizer(sim, n->in[1]), ai = src[n->in[0]];
    if (wi < 0 || ai < 0 || qs_quantsim_bypassed(sim, wi) || qs_quantsim_bypassed(sim, ai))
        return 0;
    const qs_quantizer *w = &sim->q[wi], *a = &sim->q[ai];
    if (w->grid.bits > 8 || !w->grid.is_signed || a->grid.bits != 8 || a->nch != 1)
        return 0;
    const float *wz = qs_f32(sim->g->values[w->zero].init);
    for (int c = 0; c < w->nch; c++)
        if (wz[c] != 0)
            return 0;   /* asymmetric weights: not the symmetric u8s8 path modelled here */
    if (!strcmp(layer, "Gemm") && (qs_node_int(n, "transA", 0) || qs_node_float(n, "alpha", 1) != 1 ||
                                  qs_node_float(n, "beta", 1) != 1))
        return 0;
    if (!strcmp(layer, "MatMul") && sim->g->values[w->value].init->ndim != 2)
        return 0;
    int *in = malloc(6 * sizeof *in);
    char *op = strdup("TargetMac");
    if (!in || !op || qs_node_set_domain(n, "quantd") < 0 || qs_node_set_string(n, "layer", layer) < 0 ||
        qs_node_set_int(n, "x_offset", a->grid.is_signed ? 128 : 0) < 0 || qs_node_set_int(n, "saturate", 1) < 0) {
        free(in);
        free(op);
        return QS_ENOMEM;
    }
    in[0] = n->in[0], in[1] = n->in[1], in[2] = n->nin > 2 ? n->in[2] : -1;
    in[3] = a->scale, in[4] = a->zero, in[5] = w->scale;
    free(n->in);
    free(n->op);
    n->in = in, n->nin = 6, n->op = op;
    return 1;
}

qs_graph *qs_target_emulation(const qs_quantsim *sim, int *nlayers)
{
    qs_graph *g = qs_graph_clone(sim->g);
    int *src = grid_sources(sim), k = 0, rc = 0;
    for (int i = 0; g && src && rc >= 0 && i < g->nnodes; i++)
        if ((rc = emulate_layer(sim, src, g, i)) > 0)
            k++;
    free(src);
    if (!g || !src || rc < 0) {
        qs_graph_free(g);
        return NULL;
    }
    *nlayers = k;
    return g;
}

/* --- output agreement ------------------------------------------------------------------------- */

typedef struct outbuf {
    float *v;
    size_t n, cap;
    int nout;   /* the graph's outputs */
} outbuf;

/* appends every float output's rows of the batch */
static int keep_outputs(void *ud, int64_t start, int64_t n, const qs_tensor *const *outputs, qs_exec *x, qs_err *e)
{
    (void)start, (void)n, (void)x;
    outbuf *b = ud;
    for (int j = 0; j < b->nout; j++) {
        if (outputs[j]->dtype != QS_F32)
            continue;
        size_t k = (size_t)qs_numel(outputs[j]);   /* the view has n rows */
        if (b->n + k > b->cap) {
            size_t cap = (b->n + k) * 2;
            float *v = realloc(b->v, cap * sizeof *v);
            if (!v)
                return qs_error(e, QS_ENOMEM, "out of memory");
            b->v = v, b->cap = cap;
        }
        memcpy(b->v + b->n, outputs[j]->data, k * sizeof *b->v);
        b->n += k;
    }
    return 0;
}

static int run_rows(qs_ptq *p, qs_graph *g, int64_t start, int64_t n, outbuf *b, qs_err *e)
{
    b->nout = g->noutputs;
    return qs_ptq_stream_calib(p, g, start, n, keep_outputs, b, e);
}

/* SQNR of y against the reference x, in dB (null when identical) */
static json_t *sqnr(const outbuf *x, const outbuf *y, double *db)
{
    double sig = 0, noise = 0;
    for (size_t i = 0; i < x->n && i < y->n; i++) {
        double d = (double)x->v[i] - y->v[i];
        sig += (double)x->v[i] * x->v[i];
        noise += d * d;
    }
    *db = noise > 0 ? 10 * log10(sig / noise) : INFINITY;
    return isfinite(*db) ? json_real(*db) : json_null();
}

/* Multiply-adds of one sample through g, planned at batch 1 without fusion (a fused Conv's output
 * has no value of its own); 0 when g cannot be planned. */
static double macs_per_sample(qs_graph *g)
{
    qs_err e = {0};
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    double macs = 0;
    if (x && qs_exec_plan(x, 1, &e) == 0)
        for (int i = 0; i < g->nnodes; i++)
            macs += qs_exec_node_macs(x, i) / (double)qs_exec_batch(x);
    qs_exec_free(x);
    return macs;
}

int qs_target_measure(qs_ptq *p, json_t **out, qs_err *e)
{
    int ort = !strcmp(p->cfg.target, "ort-x86"), nlayers = 0, rc = 0;
    qs_graph *emu = NULL;
    json_t *t = json_pack("{s:s, s:b}", "name", p->cfg.target, "reduce_range", p->sim->cfg.reduce_range);
    *out = t;
    if (!t)
        return qs_error(e, QS_ENOMEM, "out of memory");
    if (!p->calib.d) {
        qs_ptq_warn(p, "target %s: no calibration data to measure the export on", p->cfg.target);
        return 0;
    }
    if (ort && !(emu = qs_target_emulation(p->sim, &nlayers)))
        return qs_error(e, QS_ENOMEM, "out of memory");
    /* held out: the rows after those calibrated on, else the last ones calibrated on */
    int64_t n = MEASURE_ROWS, start = p->ncalib;
    /* the simulation's layers are the emulation's (there they are TargetMac nodes of our domain) */
    double macs = emu ? macs_per_sample(p->sim->g) : 0;
    if (macs > 0 && (double)n * macs > EMU_MAC_BUDGET)
        n = EMU_MAC_BUDGET / macs > MIN_ROWS ? (int64_t)(EMU_MAC_BUDGET / macs) : MIN_ROWS;
    int held_out = p->calib.rows > p->ncalib;
    if (held_out && p->calib.rows - start < n)
        n = p->calib.rows - start;
    if (!held_out) {
        n = n < p->ncalib ? n : p->ncalib;
        start = p->ncalib - n;
    }
    outbuf fp = {0}, sim = {0}, tgt = {0};
    /* a stage of its own: three passes (FP32, the simulation, the target's emulation) of n rows */
    double t0 = qs_now();
    const char *stage = ort ? "target ort-x86 check" : "target check";
    int passes = ort ? 3 : 2;
    qs_pl_progress(p->io, stage, 0, passes, t0);
    if ((rc = run_rows(p, p->model, start, n, &fp, e)) < 0)
        goto out;
    qs_pl_progress(p->io, stage, 1, passes, t0);
    if ((rc = run_rows(p, p->sim->g, start, n, &sim, e)) < 0)
        goto out;
    qs_pl_progress(p->io, stage, 2, passes, t0);
    double db_sim, db_tgt, db_vs;
    json_object_set_new(t, "samples", json_integer(n));
    json_object_set_new(t, "held_out", json_boolean(held_out));
    json_object_set_new(t, "sqnr_sim_db", sqnr(&fp, &sim, &db_sim));
    if (!ort)
        goto out;   /* generic: exact integers, the simulation is the target */
    qs_err ee = {0};
    if (run_rows(p, emu, start, n, &tgt, &ee) < 0) {
        qs_ptq_warn(p, "target ort-x86: the export could not be emulated (%s); its agreement under ONNX Runtime's "
                    "integer kernels is not known", ee.msg);
        goto out;
    }
    qs_pl_progress(p->io, stage, 3, passes, t0);
    json_object_set_new(t, "emulated_layers", json_integer(nlayers));
    json_object_set_new(t, "sqnr_target_db", sqnr(&fp, &tgt, &db_tgt));
    json_object_set_new(t, "sqnr_target_vs_sim_db", sqnr(&sim, &tgt, &db_vs));
    double loss = isfinite(db_sim) ? db_sim - db_tgt : 0;
    json_object_set_new(t, "loss_db", json_real(isfinite(loss) ? loss : 0));
    if (loss > MAX_LOSS_DB)
        qs_ptq_warn(p, "target ort-x86: ONNX Runtime's x86 integer kernels (u8·s8 pairs saturating at 16 bits, "
                    "CPUs without VNNI) lose %.1f dB of output SQNR against the simulation (%.1f vs %.1f dB)%s",
                    loss, db_tgt, db_sim, p->sim->cfg.reduce_range ? "" : "; set weights.reduce_range");
out:
    qs_graph_free(emu);
    free(fp.v);
    free(sim.v);
    free(tgt.v);
    return rc;
}
