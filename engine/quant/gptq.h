/* GPTQ: Hessian-based weight rounding, beyond the paper. Formulas from Frantar et al. 2023, "GPTQ:
 * Accurate Post-Training Quantization for Generative Pre-trained Transformers" (Algorithm 1), which
 * makes the Optimal Brain Quantizer of Frantar & Alistarh 2022 ("Optimal Brain Compression") fast.
 *
 *   qs_gptq_config cfg = qs_gptq_config_default();
 *   qs_gptq_report *rep = NULL;
 *   qs_gptq(sim, &calib, &cfg, io, &rep, &e);        // after weight ranges are set, like AdaRound
 *   json_t *j = qs_gptq_report_json(rep);  qs_gptq_report_free(rep);
 *
 * Layers: those AdaRound takes (every Conv, Gemm without transA, MatMul with a 2-D weight as its
 * second operand, whose weight quantizer is active; quant/rounding_layers.h), in topological order,
 * grouped into waves: consecutive layers whose H (with its per-thread copies) fit wave_bytes
 * together. One pass over the calibration data, stopped after the wave's last input, accumulates
 * every H of a wave; then its layers are rounded. So a layer sees the layers of earlier waves
 * rounded, as GPTQ's sequential scheme has it, but those of its own wave before it still with
 * round-to-nearest weights (their weight quantizers as the caller set them): a wave trades that
 * for one pass instead of one per layer. wave_bytes = 0 gives one layer per wave. For each layer:
 *  - H = X̃X̃ᵀ / n is accumulated over the layer's input in the quantized sim (the layers of earlier
 *    waves already rounded by GPTQ; other quantizers as the caller left them, those without ranges
 *    bypassed), one column per output position: an im2col column of a Conv (one H per group),
 *    a row of a Gemm/MatMul input. Batches are streamed: no activation is kept beyond its batch.
 *    A layer with many columns per sample stops at max_columns columns (at least min_samples
 *    samples): H is Kg × Kg whatever the count, and the early layers' passes are the costly ones;
 *  - per group, with W [rows, cols] the FP32 weight (rows: output channels, cols: inputs),
 *    H ← H + λ·mean(diag H)·I (an input that is always 0 gets H_ii = 1 first), the columns are
 *    taken in input order or by descending diag H (act_order), and U is the upper Cholesky factor
 *    of H⁻¹ (H⁻¹ = UᵀU: LAPACK spotrf, spotri, spotrf). Column i is rounded to the nearest point
 *    of the quantizer's own grid (its scales and zero points, per channel or per tensor, are not
 *    changed), and its error e = (w_i − q_i) / U_ii is spread over the columns not yet rounded:
 *    w_j −= e·U_ij. Within a block of `block` columns this is done column by column; the columns
 *    after the block get the block's errors at once, W[:, after] −= E·U[block, after] (one GEMM);
 *  - the grid values are written into the FP32 weight initializer the weight FakeQuant reads, as
 *    AdaRound does: weight ranges must not be recomputed afterwards.
 * This minimises ‖W X̃ − W̃ X̃‖² greedily, column by column (OBQ's update), on the calibration data.
 * Each layer reports that error per column, tr(ΔW H ΔWᵀ), for round-to-nearest and for GPTQ; an
 * output channel whose error GPTQ made larger (the damping allows it where there is little to
 * gain, e.g. a depthwise channel's nine weights) keeps round-to-nearest, so a layer's error on the
 * calibration data is never above nearest's. */
#ifndef QS_GPTQ_H
#define QS_GPTQ_H

#include <jansson.h>
#include <stdint.h>

#include "pipeline.h"
#include "pipeline_util.h"
#include "quant/quantsim.h"
#include "quant/skips.h"

typedef struct qs_gptq_config {
    double damp;        /* λ: H + λ·mean(diag H)·I (0.01); raised tenfold (up to 3 times) if H is still singular */
    int act_order;      /* 1: columns by descending diag H (default); 0: in input order */
    int64_t block;      /* columns per lazy batch update (128) */
    int64_t batch;      /* samples per capture pass (32) */
    int64_t samples;    /* calibration samples H is accumulated over (1024; fewer if the data has fewer) */
    int64_t max_columns;/* ...but no more samples than give this many columns (2^17; 0: no cap), */
    int64_t min_samples;/* and never fewer than this (64): an early Conv has thousands of columns a sample */
    int64_t wave_bytes; /* H memory per wave, per-thread copies included (256 MiB; 0: a layer per wave) */
} qs_gptq_config;

qs_gptq_config qs_gptq_config_default(void);

typedef struct qs_gptq_layer {
    char *name;         /* the Conv/Gemm/MatMul node */
    const char *op;
    int64_t weights, inputs, groups;   /* weights; inputs per group (H is inputs × inputs); groups */
    int64_t samples, columns;          /* samples and columns H was accumulated over */
    double damp;        /* λ used */
    int wave;           /* the capture pass it was in (0-based) */
    double seconds, capture_seconds, solve_seconds;   /* capture: an equal share of its wave's pass */
    double err_nearest; /* ‖W X̃ − Ŵ X̃‖² per column, round-to-nearest weights */
    double err_gptq;    /* the same with GPTQ's weights */
    double frac_changed;/* weights rounded differently from round-to-nearest */
    int64_t kept_nearest;/* output channels left at round-to-nearest, GPTQ's error being larger there */
} qs_gptq_layer;

typedef struct qs_gptq_report {
    int nlayers;
    qs_gptq_layer *layers;
    int nwaves;         /* capture passes */
    int nskipped;
    qs_skip *skipped;   /* layers left alone, and why */
    qs_gptq_config cfg;
    double seconds;
} qs_gptq_report;

/* data: calibration inputs opened against sim->g's inputs (qs_pl_open_inputs). io may be NULL;
 * otherwise progress goes to stage "gptq <layer>" and io->abort is polled. Bypass flags are
 * restored on return; on failure the layers finished keep their rounded weights. */
int qs_gptq(qs_quantsim *sim, const qs_pl_data *data, const qs_gptq_config *cfg, const qs_pipeline_io *io,
            qs_gptq_report **report, qs_err *e);
void qs_gptq_report_free(qs_gptq_report *r);
/* {"samples", "seconds", "waves", "config":{"damp","act_order","block","batch_size","samples","max_columns","min_samples",
 *  "wave_bytes"}, "layers":[{"name", "op", "weights", "inputs", "groups", "samples", "columns", "wave", "damp", "seconds", "capture_seconds",
 *  "solve_seconds", "err_nearest", "err_gptq", "frac_changed", "kept_nearest"}], "skipped":[{"name","reason"}]} — new */
json_t *qs_gptq_report_json(const qs_gptq_report *r);

/* The solver alone (for tests): W [rows, cols] row-major is replaced by its rounded grid values
 * (s·(q − z)); s, z [rows, cols] are each weight's scale and zero point; H [cols, cols] (read
 * only) as above. *damp_used (may be NULL) gets the λ that made H positive definite. tp may be
 * NULL. QS_EINVAL when H is not finite or stays singular. */
int qs_gptq_solve(float *W, int64_t rows, int64_t cols, const float *H, const float *s, const float *z, qs_grid g,
                  const qs_gptq_config *cfg, qs_threadpool *tp, double *damp_used, qs_err *e);

#endif
