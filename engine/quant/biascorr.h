/* Bias correction (paper §3.3): quantizing a layer's weights, W̃ = W + ε, shifts the mean of its
 * output by E[ε·x]; subtracting that shift from the layer's bias removes the biased part of the
 * quantization error.
 *
 *   qs_biascorr_config cfg = qs_biascorr_config_default();
 *   qs_biascorr_report *rep = NULL;
 *   qs_biascorr_empirical(sim, &calib, &cfg, io, &rep, &e);      // from calibration data
 *   qs_biascorr_analytical(sim, bn, nbn, &rep, &e);               // from BN statistics, no data
 *   json_t *j = qs_biascorr_report_json(rep);  qs_biascorr_report_free(rep);
 *
 * Both work on the QuantSim after its weight ranges are set (they use the weight quantizers'
 * current scales) and change the FP32 bias initializers inside sim->g — the value the bias
 * quantizer (int32 at s_in·s_w) reads — so export picks the corrected biases up. Layers: every
 * Conv, ConvTranspose (empirical only) and Gemm whose weight has a quantizer. A layer without a
 * bias gets a new float32 bias initializer (input 2, zeros, then corrected); quantsim gave it no
 * bias quantizer, so that bias stays float in the simulation and in the export — a negligible
 * difference next to int32, and the report lists such layers ("bias_added").
 *
 * Empirical: E[y_fp] − E[y_q] per output channel of each layer's output (pre-activation: the
 * layer node's own output, before any ReLU or quantizer of its group), averaged over up to
 * cfg.samples calibration samples. The FP32 reference is the simulation itself with every
 * quantizer bypassed (identical to the prepared FP32 graph, and it needs no name mapping). The
 * quantized side runs with weights quantized and, unless cfg.quantize_activations, activation,
 * input and bias quantizers bypassed (the standard pipeline corrects before activation ranges
 * exist). A layer's error must be measured with the layers before it corrected. Two streamed
 * passes do every layer: the FP32 pass keeps each layer's output sums per channel and per batch;
 * the quantized pass, as each layer has run on a batch, subtracts that batch's mean error
 * mean(y_q) − mean(y_fp) from the layer's output in place, so the layers after it see it corrected,
 * and the bias finally takes the error averaged over the batches. With the whole data in one batch
 * this is exactly layer-by-layer correction; with several, a layer sees the ones before corrected
 * by each batch's estimate instead of the final one (on the MobileNetV2-style fixture at 4 bits the
 * remaining logit mean error is 0.3% of the uncorrected one; tests/test-biascorr.c). Memory: per
 * layer one sum per channel per batch of the FP32 pass.
 *
 * Analytical: for a layer whose input is, directly or through Relu / Clip(0, hi) (and the
 * activation FakeQuant), the output of a BN-folded layer with record (γ, β): the pre-activation of
 * input channel i is taken as N(β_i, γ_i²), so E[x_i] = β_i (no activation),
 * E[ReLU(x)] = σ·φ(β/σ) + β·Φ(β/σ) with σ = |γ|, and for Clip(0, hi) that minus the same term at
 * β − hi. The correction is ε·E[x] summed over input channels and kernel taps (zero padding makes
 * it approximate at borders, as in the paper). Other layers are left alone (listed as skipped). */
#ifndef QS_BIASCORR_H
#define QS_BIASCORR_H

#include <jansson.h>

#include "pipeline.h"
#include "pipeline_util.h"
#include "quant/bnfold.h"
#include "quant/quantsim.h"
#include "quant/skips.h"

typedef struct qs_biascorr_config {
    int64_t samples;            /* calibration samples used (default 512; fewer if the data has fewer) */
    int64_t batch;              /* default 32 */
    int quantize_activations;   /* measure with the sim's activation quantizers on (default 0) */
} qs_biascorr_config;

qs_biascorr_config qs_biascorr_config_default(void);

typedef struct qs_biascorr_layer {
    char *name;                 /* the Conv/Gemm node */
    int64_t nch;
    float *correction;          /* [nch] amount subtracted from the output (bias −= correction) */
    int bias_added;             /* the layer had no bias: a float32 one was added */
} qs_biascorr_layer;

typedef struct qs_biascorr_report {
    const char *method;         /* "empirical" | "analytical" */
    int nlayers;
    qs_biascorr_layer *layers;
    int nskipped;
    qs_skip *skipped;           /* layers left alone, and why */
    int64_t samples;            /* empirical: samples per pass */
    int passes;                 /* empirical: passes over the data (2: FP32, then quantized) */
    double seconds;
} qs_biascorr_report;

/* data: calibration inputs opened against sim->g's inputs (qs_pl_open_inputs). io may be NULL;
 * otherwise progress goes to stage "bias correction" and io->abort is polled. Quantizer bypass
 * flags are restored on return. */
int qs_biascorr_empirical(qs_quantsim *sim, const qs_pl_data *data, const qs_biascorr_config *cfg,
                          const qs_pipeline_io *io, qs_biascorr_report **report, qs_err *e);
/* bn/nbn: the BN records of the prepared graph (after CLE, which keeps them current). */
int qs_biascorr_analytical(qs_quantsim *sim, const qs_bn_record *bn, int nbn, qs_biascorr_report **report,
                           qs_err *e);
void qs_biascorr_report_free(qs_biascorr_report *r);
/* {"method", "samples", "passes", "seconds", "layers":[{"name","channels","bias_added","correction":[…],
 *  "mean_abs_correction"}], "skipped":[{"name","reason"}]} — a new reference. */
json_t *qs_biascorr_report_json(const qs_biascorr_report *r);

#endif
