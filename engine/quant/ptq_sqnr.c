/* Per-layer SQNR for report.json (ptq.h): every activation quantizer's output in the quantized
 * simulation against the same tensor of the FP32 (prepared) model, over the first SQNR_SAMPLES
 * calibration samples (report.json "layer_sqnr_samples"). It is a diagnostic: 64 samples of a
 * 224×224 model are millions of values per layer, and the two passes over 256 samples it used to
 * take were a third of a fast job on resnet18. The FP32 pass copies one batch of each measured
 * activation for the quantized pass to compare with; the batch is lowered until those copies and
 * both runners' arenas together fit QS_RUNNER_ARENA_BUDGET, which bounds the stage's memory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "quant/ptq.h"

typedef qs_ptq ptq;

#define SQNR_SAMPLES 64

typedef struct sqnr_state {
    int *fp_map, *q_map;    /* prepared value id / sim value id → quantizer index */
    float **buf;            /* per quantizer: the FP32 tensor of the current batch */
    size_t *cap;
    double *sig, *noise;
    int oom;
} sqnr_state;

struct sqnr_ctx { sqnr_state *s; const qs_graph *g; int *map; int fp; };

static void sqnr_observe(void *ud, int node, qs_tensor *const *out, int nout)
{
    struct sqnr_ctx *c = ud;
    sqnr_state *s = c->s;
    const qs_node *n = &c->g->nodes[node];
    for (int j = 0; j < nout && j < n->nout; j++) {
        int v = n->out[j], qi = v >= 0 ? c->map[v] : -1;
        if (qi < 0 || out[j]->dtype != QS_F32)
            continue;
        size_t nb = qs_nbytes(out[j]);
        if (c->fp) {
            if (s->cap[qi] < nb) {
                float *b = realloc(s->buf[qi], nb);
                if (!b) {
                    s->oom = 1;
                    continue;
                }
                s->buf[qi] = b;
                s->cap[qi] = nb;
            }
            memcpy(s->buf[qi], out[j]->data, nb);
        } else if (s->buf[qi] && s->cap[qi] >= nb) {
            const float *f = s->buf[qi], *q = qs_f32(out[j]);
            double sig = 0, noise = 0;
            for (int64_t k = 0, cnt = qs_numel(out[j]); k < cnt; k++) {
                double d = (double)f[k] - q[k];
                sig += (double)f[k] * f[k];
                noise += d * d;
            }
            s->sig[qi] += sig;
            s->noise[qi] += noise;
        }
    }
}

/* (Re)creates the FP32 and quantized runners of the per-layer SQNR at batch bs. */
static int sqnr_runners(ptq *p, int64_t bs, qs_runner **rf, qs_runner **rq, struct sqnr_ctx *cf,
                        struct sqnr_ctx *cq, qs_err *e)
{
    qs_runner_free(*rf);
    qs_runner_free(*rq);
    *rq = NULL;
    if (!(*rf = qs_runner_new(p->prepared, bs, e)) || !(*rq = qs_runner_new(p->sim->g, bs, e)))
        return e->code ? e->code : QS_ENOMEM;
    qs_runner_set_pool(*rf, p->io->pool);
    qs_runner_set_pool(*rq, p->io->pool);
    qs_runner_set_observer(*rf, sqnr_observe, cf);
    qs_runner_set_observer(*rq, sqnr_observe, cq);
    return 0;
}

int qs_ptq_layer_sqnr(ptq *p, json_t *report_layers, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    sqnr_state s = {0};
    int rc = 0;
    qs_runner *rf = NULL, *rq = NULL;
    s.fp_map = malloc((p->prepared->nvalues + 1) * sizeof(int));
    s.q_map = malloc((sim->g->nvalues + 1) * sizeof(int));
    s.buf = calloc(sim->nq + 1, sizeof *s.buf);
    s.cap = calloc(sim->nq + 1, sizeof *s.cap);
    s.sig = calloc(sim->nq + 1, sizeof *s.sig);
    s.noise = calloc(sim->nq + 1, sizeof *s.noise);
    if (!s.fp_map || !s.q_map || !s.buf || !s.cap || !s.sig || !s.noise) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int v = 0; v < p->prepared->nvalues; v++)
        s.fp_map[v] = -1;
    for (int v = 0; v < sim->g->nvalues; v++)
        s.q_map[v] = -1;
    for (int i = 0; i < sim->nq; i++) {
        if (sim->q[i].kind != QS_Q_ACT)
            continue;
        int fv = qs_graph_find_value(p->prepared, sim->q[i].name);
        if (fv < 0 || p->prepared->values[fv].producer < 0)
            continue;
        s.fp_map[fv] = i;
        s.q_map[sim->q[i].out] = i;
    }
    int64_t bs = p->cfg.calibration.batch_size, n = p->ncalib < SQNR_SAMPLES ? p->ncalib : SQNR_SAMPLES;
    struct sqnr_ctx cf = { &s, p->prepared, s.fp_map, 1 }, cq = { &s, sim->g, s.q_map, 0 };
    if ((rc = sqnr_runners(p, bs, &rf, &rq, &cf, &cq, e)) < 0)
        goto out;
    /* the FP32 pass keeps one batch of every measured activation for the quantized pass to compare
     * with: lower the batch until those copies and the two arenas fit one arena budget */
    size_t kept = qs_exec_arena_bytes(qs_runner_exec(rf)) + qs_exec_arena_bytes(qs_runner_exec(rq));
    for (int v = 0; v < p->prepared->nvalues; v++) {
        const qs_tensor *t = s.fp_map[v] >= 0 ? qs_exec_value(qs_runner_exec(rf), v) : NULL;
        kept += t ? qs_nbytes(t) : 0;
    }
    bs = qs_runner_batch(rf);
    if (bs > 1 && kept > QS_RUNNER_ARENA_BUDGET) {
        int64_t lower = (int64_t)((double)bs * QS_RUNNER_ARENA_BUDGET / kept);
        if ((rc = sqnr_runners(p, lower < 1 ? 1 : lower, &rf, &rq, &cf, &cq, e)) < 0)
            goto out;
        bs = qs_runner_batch(rf);
    }
    double t0 = qs_now();
    for (int64_t start = 0; start < n && rc == 0; start += bs) {
        int64_t k = n - start < bs ? n - start : bs;
        rc = qs_runner_stream(rf, p->calib.d, p->calib.arrays, start, k, NULL, NULL, NULL, NULL, p->io->abort, e);
        if (rc == 0)
            rc = qs_runner_stream(rq, p->calib.d, p->calib.arrays, start, k, NULL, NULL, NULL, NULL, p->io->abort,
                                  e);
        qs_pl_progress(p->io, "per-layer sqnr", (double)(start + k), (double)n, t0);
    }
    if (rc < 0)
        goto out;
    if (s.oom) {
        rc = qs_error(e, QS_ENOMEM, "out of memory measuring per-layer SQNR");
        goto out;
    }
    for (int i = 0; i < sim->nq; i++) {
        if (s.q_map[sim->q[i].out] != i)
            continue;
        double db = s.noise[i] > 0 ? 10 * log10(s.sig[i] / s.noise[i]) : INFINITY;
        json_t *l = json_pack("{s:s, s:s, s:o}", "name", sim->q[i].name, "layer", sim->q[i].layer ? sim->q[i].layer : "",
                              "sqnr_db", isfinite(db) ? json_real(db) : json_null());
        json_array_append_new(report_layers, l);
    }
    json_object_set_new(p->extra, "layer_sqnr_samples", json_integer(n));
out:
    qs_runner_free(rf);
    qs_runner_free(rq);
    if (s.buf)
        for (int i = 0; i < sim->nq; i++)
            free(s.buf[i]);
    free(s.buf);
    free(s.cap);
    free(s.sig);
    free(s.noise);
    free(s.fp_map);
    free(s.q_map);
    return rc;
}

