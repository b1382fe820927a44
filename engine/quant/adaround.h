/* AdaRound (paper §3.4; Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
 * Quantization"): instead of rounding every weight to the nearest grid point, learn per weight
 * whether to round down or up so that each layer's output stays close to the FP32 layer's.
 *
 *   qs_adaround_config cfg = qs_adaround_config_default();
 *   cfg.iterations = 2000;
 *   qs_adaround_report *rep = NULL;
 *   qs_adaround(sim, &calib, &cfg, io, &rep, &e);    // after weight ranges are set
 *   json_t *j = qs_adaround_report_json(rep);  qs_adaround_report_free(rep);
 *
 * Layers: every Conv (any group count, depthwise included), Gemm (not transA) and MatMul with a 2-D
 * weight as its second operand whose weight quantizer is active, in topological order. For each:
 *  - x, the layer's FP32 input (the sim with every quantizer bypassed), and x̃, its input in the
 *    quantized sim with the layers before it already AdaRounded (weights quantized; activation,
 *    input and bias quantizers as the caller left them, those without ranges bypassed), are
 *    captured for up to cfg.samples calibration samples with the runner's per-node observer;
 *  - the target W·x is computed once and x is dropped, so memory holds x̃ and W·x only (at most
 *    cfg.max_bytes per layer; fewer samples are used when a layer would need more);
 *  - rounding variables V (one per weight) give the soft weight
 *      W̃ = s·(clamp(floor(W/s) + h(V) + z, qmin, qmax) − z),  h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1),
 *    ζ = 1.1, γ = −0.1, with the quantizer's own scales, zero points and grid (per channel or
 *    per tensor); V starts where h(V) = W/s − floor(W/s), so W̃ = W before optimisation;
 *  - Adam minimises ‖W x − W̃ x̃‖² (summed over output channels, averaged over the sampled columns:
 *    rows of a Gemm/MatMul input, im2col columns of a Conv) + λ Σ (1 − |2h(V) − 1|^β). Each
 *    iteration draws cfg.batch samples and at most cfg.max_columns of their columns; the
 *    regulariser is off for the first warm_start fraction of iterations, then β decays from
 *    beta_start to beta_end on a cosine (as AIMET does);
 *  - finally each weight rounds up where h(V) ≥ 0.5, and the grid value s·(q − z) is written into
 *    the FP32 weight initializer the weight FakeQuant reads, so the simulation and the exported
 *    integer weights are exactly the AdaRounded ones. The weight ranges must not be recomputed
 *    afterwards (that would round the new weights afresh on another grid).
 * Biases are the same on both sides and cancel, so they take no part. Everything is seeded
 * (cfg.seed): the same inputs give the same weights.
 *
 * Each layer reports the reconstruction error ‖W x − Ŵ x̃‖² (per column) with round-to-nearest
 * and with the AdaRounded weights, both on the same fixed set of columns, the fraction of
 * weights rounded up and the fraction rounded differently from nearest, and its timings. */
#ifndef QS_ADAROUND_H
#define QS_ADAROUND_H

#include <jansson.h>
#include <stdint.h>

#include "pipeline.h"
#include "pipeline_util.h"
#include "quant/quantsim.h"
#include "quant/skips.h"

typedef struct qs_adaround_config {
    int iterations;             /* per layer (default 10000) */
    double reg;                 /* λ (0.01) */
    double beta_start, beta_end;/* β annealed 20 → 2 */
    double warm_start;          /* fraction of iterations without the regulariser (0.2) */
    double lr;                  /* Adam learning rate (1e-3) */
    int64_t batch;              /* samples per iteration, also the capture passes' batch (32) */
    int64_t samples;            /* calibration samples captured per layer (1024; fewer if the data has fewer) */
    int64_t max_columns;        /* columns per iteration (2048): a Conv samples its batch's im2col columns */
    int64_t max_bytes;          /* captured data per layer (512 MiB): fewer samples beyond it */
    uint64_t seed;              /* RNG seed (0 is a valid seed) */
} qs_adaround_config;

qs_adaround_config qs_adaround_config_default(void);

typedef struct qs_adaround_layer {
    char *name;                 /* the Conv/Gemm/MatMul node */
    const char *op;
    int64_t weights;            /* number of rounding variables */
    int64_t samples;            /* samples captured */
    int64_t columns;            /* columns per iteration */
    int iterations;
    double seconds;             /* capture + optimisation */
    double capture_seconds, optimize_seconds;
    double ms_per_iteration;
    double gflops;              /* of the two products per iteration (4·columns·M·K/group flops) */
    double mse_nearest;         /* ‖W x − Ŵ x̃‖² per column, round-to-nearest weights */
    double mse_adaround;        /* the same with the AdaRounded weights */
    double frac_up;             /* weights rounded up (floor + 1) */
    double frac_changed;        /* weights rounded differently from round-to-nearest */
} qs_adaround_layer;

typedef struct qs_adaround_report {
    int nlayers;
    qs_adaround_layer *layers;
    int nskipped;
    qs_skip *skipped;           /* layers left alone, and why */
    qs_adaround_config cfg;     /* as used */
    double seconds;
} qs_adaround_report;

/* data: calibration inputs opened against sim->g's inputs (qs_pl_open_inputs). io may be NULL;
 * otherwise progress goes to stage "adaround <layer>" with done/total iterations, and io->abort is
 * polled every iteration. Quantizer bypass flags are restored on return; on failure the layers
 * finished so far keep their AdaRounded weights. */
int qs_adaround(qs_quantsim *sim, const qs_pl_data *data, const qs_adaround_config *cfg,
                const qs_pipeline_io *io, qs_adaround_report **report, qs_err *e);
void qs_adaround_report_free(qs_adaround_report *r);
/* {"iterations", "samples", "seconds", "config":{…}, "layers":[{"name", "op", "weights", "samples",
 *  "columns", "iterations", "seconds", "capture_seconds", "optimize_seconds", "ms_per_iteration", "gflops",
 *  "mse_nearest", "mse_adaround", "frac_up", "frac_changed"}], "skipped":[{"name","reason"}]}
 * — a new reference. */
json_t *qs_adaround_report_json(const qs_adaround_report *r);

/* The pieces, for tests and for anyone checking the method against the paper. */
#define QS_ADAROUND_ZETA 1.1f
#define QS_ADAROUND_GAMMA (-0.1f)
float qs_adaround_h(float v);                   /* rectified sigmoid h(V) */
float qs_adaround_dh(float v);                  /* dh/dV (0 where h is clipped) */
float qs_adaround_v_init(float frac);           /* V with h(V) = frac, frac in [0, 1) */
double qs_adaround_reg(float h, double beta);   /* 1 − |2h − 1|^β */
double qs_adaround_dreg(float h, double beta);  /* its derivative in h */
/* β at iteration it (0-based) of cfg->iterations; 0 while the warm start lasts (no regulariser).
 * It is beta_start where the warm start ends and beta_end at it == iterations. */
double qs_adaround_beta(const qs_adaround_config *cfg, int64_t it);
/* The soft weight s·(clamp(floor(w/s) + h(v) + z, qmin, qmax) − z). */
float qs_adaround_soft(float w, float v, float s, float z, qs_grid g);

#endif
