/* BatchNormalization helpers shared with the quantization passes.
 *
 *   float mean[C], var[C];
 *   qs_bn_batch_stats(x, mean, var);     // x: [N, C, ...] float32
 *
 * BN re-estimation after QAT (paper §4.4) runs the network on training data and sets each BN's
 * running statistics to the batch statistics this computes. */
#ifndef QS_OPS_NORM_H
#define QS_OPS_NORM_H

#include "tensor.h"

/* Per-channel mean and biased variance (divided by the count, as BatchNormalization's training mode
 * uses) over the batch and spatial dims of x [N, C, D1, ...]. Returns 0, or QS_EINVAL when x is not a
 * float32 tensor of rank >= 2. */
int qs_bn_batch_stats(const qs_tensor *x, float *mean, float *var);

#endif
