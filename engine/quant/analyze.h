/* The quantization debugging flow (paper §3.7, Fig. 9) and the closed loop built on it.
 *
 * Analysis — the "analyze" pipeline (the analyze job's driver, engine/pipeline/analyze.c, calls it):
 *
 *   json_t *res;
 *   qs_pipeline_analyze(&io, &res, &e);   // io: model, calib, val + val_labels, outdir, config
 *
 * runs the PTQ stages (BN fold, CLE, QuantSim, weight ranges, calibration) and then measures, on
 * the first `analysis.val_samples` validation samples (default 1000):
 *   - FP32 sanity: the model as loaded, the prepared model (after BN folding / CLE) and the
 *     simulation with every quantizer bypassed must compute the same function;
 *   - the quantized model, weights only quantized, activations only quantized;
 *   - per quantizer group (the quantizers sharing `layer`: a layer's weight, bias and output
 *     activation quantizer; a model input's quantizer): accuracy and output SQNR with only that
 *     group quantized, and with every group but that one quantized;
 *   - per-channel weight ranges before and after CLE (data for plots);
 * ranks the groups worst first and writes OUTDIR/analysis.json (schema in analyze.c's header).
 * The result holds {"fp32_accuracy", "quant_accuracy", "weights_only_accuracy",
 * "activations_only_accuracy", "worst": [group names], "seconds", "outdir"}.
 *
 * Closed loop (`quant ptq … --target-drop P`, target_drop.c): after the PTQ pipeline's accuracy stage,
 *
 *   if (p.cfg.target_drop >= 0) qs_ptq_target_drop(&p, p.cfg.target_drop, res, &e);
 *
 * promotes the most sensitive groups to 16-bit weights and activations one at a time, then (if
 * that is not enough) keeps them in FP32, until the validation accuracy is within P points of
 * FP32; res gets "quant_accuracy" updated and a "target_drop" summary listing what was kept,
 * p->extra["target_drop"] the details for report.json. Needs validation data. */
#ifndef QS_ANALYZE_H
#define QS_ANALYZE_H

#include <jansson.h>

#include "pipeline.h"
#include "quant/ptq.h"

int qs_pipeline_analyze(const qs_pipeline_io *io, json_t **result, qs_err *e);

/* points: allowed drop in percentage points of top-1 accuracy (≥ 0). res: the result object that
 * qs_ptq_accuracy filled (its fp32_accuracy / quant_accuracy are reused when present). */
int qs_ptq_target_drop(qs_ptq *p, double points, json_t *res, qs_err *e);

#endif
