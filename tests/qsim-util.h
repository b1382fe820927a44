/* Helpers shared by the QuantSim tests (through tests/qsim-graphs.h) and tests/qdq-export-demo.c:
 * run a graph on one batch, and set every activation quantizer of a QuantSim from the min and max
 * its input takes on a calibration batch (the plainest range setting, paper §3.1, written here
 * without range.c so the tests of placement and export do not depend on it). */
#ifndef QD_TESTS_QSIM_UTIL_H
#define QD_TESTS_QSIM_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/exec.h"
#include "engine/quant/quantsim.h"

/* Runs g on inputs (one tensor per graph input, same batch) and returns copies of all outputs in
 * outs[g->noutputs]. */
static inline int qsu_run(qs_graph *g, const qs_tensor *const *inputs, qs_tensor **outs, qs_err *e)
{
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, e);
    if (!x)
        return e->code ? e->code : QS_EINVAL;
    int rc = qs_exec_plan(x, inputs[0]->shape[0], e);
    for (int i = 0; rc == 0 && i < g->ninputs; i++)
        rc = qs_exec_set_input(x, i, inputs[i], e);
    if (rc == 0)
        rc = qs_exec_forward(x, e);
    for (int i = 0; rc == 0 && i < g->noutputs; i++)
        if (!(outs[i] = qs_tensor_copy(qs_exec_output(x, i))))
            rc = qs_error(e, QS_ENOMEM, "out of memory");
    qs_exec_free(x);
    return rc;
}

/* Min-max ranges for every model-input and activation quantizer from one calibration batch: the
 * quantized inputs of those quantizers become extra outputs of a copy of the graph, which runs
 * with activation and bias quantizers bypassed (a bias's scale s_in·s_w needs the input range
 * being measured); weights stay quantized, as in AIMET's compute_encodings. */
static inline int qsu_calibrate_minmax(qs_quantsim *sim, const qs_tensor *const *inputs, qs_err *e)
{
    qs_quantsim_bypass_kind(sim, QS_Q_ACT, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_INPUT, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_BIAS, 1);
    qs_graph *g = qs_graph_clone(sim->g);
    int *outs = g ? malloc((g->noutputs + sim->nq + 1) * sizeof *outs) : NULL;
    qs_tensor **res = calloc(g ? g->noutputs + sim->nq + 1 : 1, sizeof *res);
    int rc = 0;
    if (!g || !outs || !res) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    int n0 = g->noutputs, n = n0;
    memcpy(outs, g->outputs, n0 * sizeof *outs);
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_ACT || sim->q[i].kind == QS_Q_INPUT)
            outs[n++] = sim->q[i].value;
    free(g->outputs);
    g->outputs = outs;
    g->noutputs = n;
    outs = NULL;
    if ((rc = qsu_run(g, inputs, res, e)) < 0)
        goto out;
    for (int i = 0, k = n0; i < sim->nq; i++) {
        if (sim->q[i].kind != QS_Q_ACT && sim->q[i].kind != QS_Q_INPUT)
            continue;
        const qs_tensor *t = res[k++];
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t j = 0; j < qs_numel(t); j++) {
            lo = fminf(lo, qs_f32(t)[j]);
            hi = fmaxf(hi, qs_f32(t)[j]);
        }
        qs_quantsim_set_range(sim, i, -1, lo, hi);
    }
out:
    if (g)
        for (int i = 0; i < g->noutputs; i++)
            qs_tensor_free(res[i]);
    free(res);
    free(outs);
    qs_graph_free(g);
    qs_quantsim_bypass_kind(sim, QS_Q_ACT, 0);
    qs_quantsim_bypass_kind(sim, QS_Q_INPUT, 0);
    qs_quantsim_bypass_kind(sim, QS_Q_BIAS, 0);
    return rc;
}

#endif
