/* Range setting (paper §3.1): choose each quantizer's clipping range [lo, hi].
 *
 * Weights are set from the tensor itself, per channel or per tensor:
 *   qs_range_weights(W, axis, grid, symmetric, QS_RANGE_MSE, scales, zeros);
 *
 * Activations are observed while calibration data streams through the model; an observer holds a
 * fixed-size histogram (re-binned when the range grows), so memory never grows with the number of
 * samples. Min, max, counts and the histogram's tails are exact; once an observer has seen a few
 * hundred thousand values, the middle of a large batch is sampled (see range.c), which keeps the
 * cost per value well below an inference's:
 *   qs_observer *o = qs_observer_new();
 *   for each batch: qs_observer_add(o, data, n);
 *   qs_observer_qparams(o, grid, symmetric, QS_RANGE_MSE, 0, &scale, &zero);
 *
 * Methods: min-max; MSE (grid search over clipping ranges minimising the expected squared
 * quantization error, evaluated on the histogram); percentile (e.g. 99.99); cross-entropy (for the
 * final layer's logits: the clipping range minimising the cross-entropy between the softmax of the
 * FP32 logits and of the quantized logits, on a bounded sample of rows); BN-based (β ± n·γ from
 * the BatchNormalization statistics, no data needed). */
#ifndef QS_RANGE_H
#define QS_RANGE_H

#include "quant/quantizer.h"
#include "tensor.h"
#include "threadpool.h"

typedef enum qs_range_method {
    QS_RANGE_MINMAX, QS_RANGE_MSE, QS_RANGE_PERCENTILE, QS_RANGE_CE, QS_RANGE_BN,
} qs_range_method;

int qs_range_method_parse(const char *s, qs_range_method *m);   /* "minmax", "mse", … */
const char *qs_range_method_name(qs_range_method m);

/* Weights: nch = shape[axis] scales/zeros (1 when axis < 0). MINMAX or MSE. */
int qs_range_weights(const qs_tensor *w, int axis, qs_grid g, int symmetric, int pow2, qs_range_method m,
                     float *scale, float *zero, qs_err *e);

typedef struct qs_observer qs_observer;
qs_observer *qs_observer_new(void);
void qs_observer_free(qs_observer *o);
void qs_observer_add(qs_observer *o, const float *x, int64_t n);
/* The same, a large batch's scan spread over the pool's threads; the result is the same for every
 * pool (NULL: the calling thread). */
void qs_observer_add_threads(qs_observer *o, const float *x, int64_t n, qs_threadpool *tp);
/* For QS_RANGE_CE: also keep up to max_rows rows of `classes` logits (a reservoir sample).
 * qs_observer_add_rows observes the rows' values like qs_observer_add (call one or the other)
 * and offers each finite row to the reservoir. */
void qs_observer_keep_rows(qs_observer *o, int64_t classes, int64_t max_rows);
void qs_observer_add_rows(qs_observer *o, const float *x, int64_t rows);
/* Folds src into dst (src unchanged), as if dst had also seen src's values: counts, min and max
 * exactly; src's bins re-binned into dst's (each bin's mass spread over the dst bins it overlaps,
 * the histogram's own uniform-bin model); the cross-entropy reservoirs combined into one uniform
 * sample of both streams. Calibration shards run on separate threads are merged this way.
 * QS_EINVAL when src kept logit rows and dst keeps none; QS_ENOMEM. */
int qs_observer_merge(qs_observer *dst, const qs_observer *src);
int64_t qs_observer_count(const qs_observer *o);
void qs_observer_minmax(const qs_observer *o, float *lo, float *hi);
int qs_observer_nonfinite(const qs_observer *o);   /* NaN/Inf seen (reported, never binned) */
/* percentile: for QS_RANGE_PERCENTILE, e.g. 99.99 */
int qs_observer_qparams(const qs_observer *o, qs_grid g, int symmetric, int pow2, qs_range_method m,
                        double percentile, float *scale, float *zero, qs_err *e);

/* The signal-to-quantization-noise ratio 10·log10(E[x²] / E[(x − fq(x))²]) of the observed values
 * on grid g with the given scale and zero point, evaluated on the histogram as the MSE search
 * does; NAN when nothing was observed. */
double qs_observer_sqnr_db(const qs_observer *o, qs_grid g, float scale, float zero);

/* BN-based range: lo = min_c(β_c − n·|γ_c|), hi = max_c(β_c + n·|γ_c|); relu clamps lo at 0. */
void qs_range_bn(const float *beta, const float *gamma, int64_t c, float n, int relu, float *lo, float *hi);

#endif
