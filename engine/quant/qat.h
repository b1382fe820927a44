/* Quantization-aware training (paper §4) on a QuantSim graph, and the pieces it is made of.
 *
 *   qs_qat_opts o;  qs_qat_opts_from_config(&cfg, &o, &e);
 *   qs_qat *t = qs_qat_new(sim, &o, &train, labels, &e);   // borrows sim, train, labels
 *   while (!qs_qat_done(t)) {
 *       double loss;  qs_qat_step(t, &loss, &e);            // one mini-batch: forward, backward, update
 *       … at an epoch boundary: validate, qs_qat_save(t, "outdir/checkpoint", meta, &e) …
 *   }
 *   qs_qat_finalize(t);                                    // integer zero points, bias grids
 *   qs_qat_free(t);
 *
 * The trained parameters are the float initializers of sim->g, updated in place: layer weights
 * and biases (Conv, ConvTranspose, Gemm, MatMul — seen through their FakeQuant), BatchNormalization
 * scale and shift when BN is kept in the graph, and, with learn_ranges, the scales (and for
 * asymmetric grids the zero points) of the weight and activation quantizers, with the LSQ-style
 * gradients of FakeQuant (§4.2). Everything else is frozen: bias-quantizer grids are derived from
 * s_in·s_w after every step, BN running statistics are tracked by a moving average, constants (Clip
 * limits, reshape targets, …) never change.
 *
 * The pieces (optimisers, schedules, clipping, shuffling) work on plain arrays so that tests can
 * check them against hand computation. */
#ifndef QS_QAT_H
#define QS_QAT_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pipeline.h"
#include "pipeline_util.h"
#include "spec_json.h"
#include "quant/quantsim.h"

/* --- optimisers ------------------------------------------------------------------------------ */

typedef enum qs_optim_kind { QS_OPT_SGD, QS_OPT_NESTEROV, QS_OPT_ADAM } qs_optim_kind;

typedef struct qs_optim {
    qs_optim_kind kind;
    double momentum;            /* SGD/Nesterov: μ (0 = plain SGD) */
    double beta1, beta2, eps;   /* Adam: 0.9, 0.999, 1e-8 */
    double weight_decay;        /* only for arrays updated with decay = 1 (weights) */
} qs_optim;

qs_optim qs_optim_make(qs_optim_kind kind, double momentum, double weight_decay);

/* One update of n parameters w from gradients g at learning rate lr. t is the 1-based step count
 * (Adam's bias correction). m: SGD's momentum buffer or Adam's first moment; v: Adam's second
 * moment (NULL for SGD); both start at zero.
 *   SGD:      d = g + wd·w;  m = μ·m + d;  w −= lr·m            (μ = 0: w −= lr·d)
 *   Nesterov: d = g + wd·w;  m = μ·m + d;  w −= lr·(d + μ·m)
 *   Adam:     w −= lr·wd·w (decoupled, AdamW);  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
 *             w −= lr·(m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)
 * as PyTorch's SGD (dampening 0) and AdamW define them. */
void qs_optim_update(const qs_optim *o, float *w, const float *g, float *m, float *v, int64_t n, double lr,
                     int64_t t, int decay);

/* --- learning-rate schedules ----------------------------------------------------------------- */

typedef enum qs_sched_kind { QS_SCHED_CONSTANT, QS_SCHED_COSINE, QS_SCHED_STEP } qs_sched_kind;

/* The rate at 0-based step t of total steps: a linear warm-up lr·(t+1)/warmup over the first
 * warmup steps, then over the remaining T = total − warmup steps (u = t − warmup):
 *   constant: lr;   cosine: lr·½(1 + cos(π·u/T));   step: lr·0.1^k, k = milestones passed (u ≥ T/2,
 *   u ≥ 3T/4). */
double qs_lr_at(qs_sched_kind k, double lr, int64_t t, int64_t total, int64_t warmup);

/* --- gradient clipping ----------------------------------------------------------------------- */

/* Scales the k gradient arrays g[i] (n[i] floats each) by max_norm/‖g‖ when their joint L2 norm
 * exceeds max_norm (> 0). Returns the norm before clipping. */
double qs_clip_grad_norm(float *const *g, const int64_t *n, int k, double max_norm);

/* --- data order ------------------------------------------------------------------------------ */

/* A random permutation of [0, n) that depends only on (seed, epoch), so a resumed run sees the
 * same batches as an uninterrupted one without storing generator state. */
void qs_qat_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);

/* --- the trainer ----------------------------------------------------------------------------- */

typedef struct qs_qat_opts {
    int epochs;
    int64_t batch;
    int64_t max_steps;           /* > 0: stop after this many steps in all (smoke runs) */
    qs_optim_kind optimizer;
    double lr, momentum, weight_decay;
    double clip_grad;            /* > 0: global-norm clipping */
    qs_sched_kind schedule;
    int64_t warmup;              /* linear warm-up steps */
    int learn_ranges;            /* train quantizer scales / zero points (else frozen at their init) */
    int flip;                    /* random horizontal flips of 4-D (NCHW) float inputs */
    double bn_momentum;          /* BN kept in the graph: running = (1−m)·running + m·batch (0.1) */
    uint64_t seed;
    qs_threadpool *pool;         /* the kernels' threads (borrowed; NULL: the calling thread) */
} qs_qat_opts;

/* Defaults, then config.qat's fields (optimizer, schedule, …). */
int qs_qat_opts_from_config(const qs_qconfig *c, qs_qat_opts *o, qs_err *e);

typedef struct qs_qat qs_qat;

/* Borrows sim, train and labels (train->rows of them), which must outlive the trainer. The batch
 * is clipped to the data set's size; the last partial batch of an epoch is dropped. */
qs_qat *qs_qat_new(qs_quantsim *sim, const qs_qat_opts *o, const qs_pl_data *train, const int64_t *labels,
                   qs_err *e);
void qs_qat_free(qs_qat *t);
void qs_qat_set_abort(qs_qat *t, atomic_int *flag);   /* polled between nodes of a step */

int64_t qs_qat_iterations(const qs_qat *t);   /* steps per epoch */
int64_t qs_qat_total_steps(const qs_qat *t);
int64_t qs_qat_batch(const qs_qat *t);
/* The next step's position: epoch (0-based), iteration in it, global step. */
void qs_qat_position(const qs_qat *t, int *epoch, int64_t *iter, int64_t *step);
int qs_qat_done(const qs_qat *t);
double qs_qat_lr(const qs_qat *t);            /* the next step's learning rate */

/* One optimisation step on the next mini-batch; *loss gets its mean cross-entropy (output 0:
 * logits [N, classes]). On failure (or abort) the parameters and the position are unchanged. */
int qs_qat_step(qs_qat *t, double *loss, qs_err *e);

/* Checkpoint into dir (created): every float initializer of the graph, the optimiser's state, the
 * position, and meta (borrowed; the caller's curve and figures) in dir/state.json. Written to new
 * files and switched by renaming state.json, so a crash leaves the previous checkpoint usable. */
int qs_qat_save(const qs_qat *t, const char *dir, json_t *meta, qs_err *e);
/* Restores a checkpoint made by qs_qat_save of the same model and training setup (batch, optimiser
 * and seed must match; more epochs are allowed). *meta (may be NULL) gets a new reference. */
int qs_qat_load(qs_qat *t, const char *dir, json_t **meta, qs_err *e);
/* Reads dir/state.json only (new reference; NULL with e set when absent or unreadable). */
json_t *qs_qat_read_state(const char *dir, qs_err *e);

/* The exportable form: zero points rounded to integers inside the grid, scales positive, bias
 * grids recomputed from s_in·s_w. */
void qs_qat_finalize(qs_qat *t);

/* BatchNormalization nodes kept in the graph (trained in training mode). */
int qs_qat_nbn(const qs_qat *t);
/* BN re-estimation: sets every BN's running mean and variance to the average batch statistics of
 * up to `samples` training samples run through the quantized network in training mode. Returns
 * the number of BNs updated (0 when there are none) or < 0. */
int qs_qat_bn_reestimate(qs_qat *t, int64_t samples, qs_err *e);

/* {"parameters": arrays trained, "elements", "range_parameters", "frozen_ranges", …} */
json_t *qs_qat_summary(const qs_qat *t);

#endif
