/* Test helper (not installed): QuantSim + min-max calibration + QDQ export of one model, so that
 * tests/py/test_qdq_interop.py can compare ONNX Runtime's execution of the export with ours.
 *
 *   qdq-export-demo MODEL.onnx|builtin:eltwise CALIB.npy OUTDIR [--eval X.npy] [--per-tensor]
 *                   [--wbits N] [--abits N] [--calib-rows N]
 *
 * Writes into OUTDIR:
 *   model.fp32.onnx  the model as loaded (or the builtin one)
 *   model.qdq.onnx   the export;   encodings.json   AIMET 1.0.0 encodings
 *   sim.npy          the simulation's output 0 on the eval inputs (default: the calibration inputs)
 *   qdq.npy          our executor's output 0 running model.qdq.onnx (read back from the file);
 *                    absent, with a note, when the executor lacks a type the export uses
 *   fp32.npy         the FP32 model's output 0
 * builtin:eltwise is x → Relu → Add(·, x) → MaxPool: quantization without any accumulation, so a
 * runtime must reproduce the simulation bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "engine/data.h"
#include "engine/onnx.h"
#include "engine/quant/export.h"
#include "engine/runner.h"

static qs_graph *builtin_eltwise(void)
{
    qs_graph *g = qs_graph_new();
    qs_graph_set_opset(g, "", 13);
    int x = qs_graph_value(g, "x"), r = qs_graph_value(g, "r"), s = qs_graph_value(g, "s"), y = qs_graph_value(g, "y");
    qs_value *xv = &g->values[x];
    int64_t shape[4] = { -1, 3, 8, 8 };
    xv->dtype = QS_F32;
    xv->ndim = 4;
    memcpy(xv->shape, shape, sizeof shape);
    g->inputs = malloc(sizeof *g->inputs);
    g->outputs = malloc(sizeof *g->outputs);
    g->inputs[g->ninputs++] = x;
    g->outputs[g->noutputs++] = y;
    qs_graph_add_node(g, "Relu", "relu", 1, &x, 1, &r);
    int add_in[2] = { r, x };
    qs_graph_add_node(g, "Add", "add", 2, add_in, 1, &s);
    int n = qs_graph_add_node(g, "MaxPool", "pool", 1, &s, 1, &y);
    int64_t k[2] = { 2, 2 };
    qs_node_set_ints(&g->nodes[n], "kernel_shape", 2, k);
    qs_node_set_ints(&g->nodes[n], "strides", 2, k);
    return g;
}

static int load_rows(const char *path, int64_t max_rows, qs_tensor **out, qs_err *e)
{
    qs_dataset *d;
    int rc = qs_dataset_open(path, &d, e);
    if (rc < 0)
        return rc;
    const qs_tensor *a = qs_dataset_array(d, 0);
    int64_t rows = qs_dataset_rows(d, 0);
    if (max_rows > 0 && rows > max_rows)
        rows = max_rows;
    int64_t shape[QS_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[0] = rows;
    *out = qs_tensor_new(QS_F32, a->ndim, shape);
    rc = *out ? qs_dataset_batch(d, 0, 0, rows, QS_F32, *out, e) : qs_error(e, QS_ENOMEM, "out of memory");
    qs_dataset_close(d);
    return rc;
}

/* Runs g over x in batches; returns output 0 (or all outputs into outs when given). */
static int run(qs_graph *g, const qs_tensor *x, qs_tensor **outs, qs_err *e)
{
    qs_runner *r = qs_runner_new(g, 32, e);
    if (!r)
        return e->code;
    const qs_tensor *in[1] = { x };
    int rc = qs_runner_run(r, in, outs, NULL, NULL, NULL, e);
    qs_runner_free(r);
    return rc;
}

/* Min-max over the calibration rows for every model-input and activation quantizer, observed
 * with activation and bias quantizers bypassed (weights quantized), as tests/qsim-util.h does
 * but in batches through the runner (models with a fixed batch of 1 included). */
static int calibrate(qs_quantsim *sim, const qs_tensor *x, qs_err *e)
{
    qs_quantsim_bypass_kind(sim, QS_Q_ACT, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_INPUT, 1);
    qs_quantsim_bypass_kind(sim, QS_Q_BIAS, 1);
    qs_graph *g = qs_graph_clone(sim->g);
    int n = 0, *outs = malloc((sim->nq + 1) * sizeof *outs);
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_ACT || sim->q[i].kind == QS_Q_INPUT)
            outs[n++] = sim->q[i].value;
    free(g->outputs);
    g->outputs = outs;
    g->noutputs = n;
    qs_tensor **res = calloc(n + 1, sizeof *res);
    int rc = run(g, x, res, e);
    for (int i = 0, k = 0; rc == 0 && i < sim->nq; i++) {
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
    for (int i = 0; i < n; i++)
        qs_tensor_free(res[i]);
    free(res);
    qs_graph_free(g);
    qs_quantsim_bypass_kind(sim, -1, 0);
    return rc;
}

static int save_out(qs_graph *g, const qs_tensor *x, const char *dir, const char *name, qs_err *e)
{
    qs_tensor **outs = calloc(g->noutputs + 1, sizeof *outs);
    int rc = run(g, x, outs, e);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (rc == 0)
        rc = qs_npy_save(path, outs[0], e);
    for (int i = 0; i < g->noutputs; i++)
        qs_tensor_free(outs[i]);
    free(outs);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.onnx|builtin:eltwise CALIB.npy OUTDIR [--eval X.npy] [--per-tensor] "
                "[--wbits N] [--abits N] [--calib-rows N]\n", argv[0]);
        return 2;
    }
    const char *model = argv[1], *calib = argv[2], *dir = argv[3], *eval = NULL;
    qs_qsim_config cfg = qs_qsim_config_default();
    int64_t calib_rows = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--per-tensor"))
            cfg.per_channel = 0;
        else if (!strcmp(argv[i], "--wbits") && i + 1 < argc)
            cfg.wbits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--abits") && i + 1 < argc)
            cfg.abits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--eval") && i + 1 < argc)
            eval = argv[++i];
        else if (!strcmp(argv[i], "--calib-rows") && i + 1 < argc)
            calib_rows = atoll(argv[++i]);
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    qs_err e = {0};
    qs_graph *g = NULL, *qdq = NULL, *back = NULL;
    qs_quantsim *sim = NULL;
    qs_tensor *x = NULL, *xe = NULL;
    char path[4096];
    int rc;
    if (!strcmp(model, "builtin:eltwise"))
        g = builtin_eltwise();
    else if ((rc = qs_onnx_load(model, &g, &e)) < 0)
        goto fail;
    if (g->ninputs != 1) {
        qs_error(&e, QS_EUNSUPPORTED, "the demo takes models with one input (this one has %d)", g->ninputs);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/model.fp32.onnx", dir);
    if (qs_onnx_save(g, path, &e) < 0 || load_rows(calib, calib_rows, &x, &e) < 0)
        goto fail;
    if (eval && load_rows(eval, 0, &xe, &e) < 0)
        goto fail;
    if (!(sim = qs_quantsim_new(g, &cfg, &e)) || calibrate(sim, x, &e) < 0 || qs_export_qdq(sim, &qdq, &e) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/model.qdq.onnx", dir);
    if (qs_onnx_save(qdq, path, &e) < 0 || qs_onnx_load(path, &back, &e) < 0)
        goto fail;
    json_t *enc = qs_export_encodings(sim);
    snprintf(path, sizeof path, "%s/encodings.json", dir);
    if (json_dump_file(enc, path, JSON_INDENT(1)) < 0) {
        json_decref(enc);
        qs_error(&e, QS_EIO, "cannot write %s", path);
        goto fail;
    }
    json_decref(enc);
    const qs_tensor *xr = xe ? xe : x;
    if (save_out(sim->g, xr, dir, "sim.npy", &e) < 0 || save_out(g, xr, dir, "fp32.npy", &e) < 0)
        goto fail;
    if ((rc = save_out(back, xr, dir, "qdq.npy", &e)) == QS_EUNSUPPORTED)
        fprintf(stderr, "qdq-export-demo: note: no qdq.npy, our executor cannot run the export: %s\n", e.msg);
    else if (rc < 0)
        goto fail;
    printf("quantizers %d, nodes %d → %d\n", sim->nq, g->nnodes, back->nnodes);
    qs_graph_free(back);
    qs_graph_free(qdq);
    qs_quantsim_free(sim);
    qs_graph_free(g);
    qs_tensor_free(x);
    qs_tensor_free(xe);
    return 0;
fail:
    fprintf(stderr, "qdq-export-demo: %s\n", e.msg);
    return 1;
}
