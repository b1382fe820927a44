/* Training losses (not graph ops): each returns the mean loss over the batch and, when given a
 * gradient tensor of the input's shape, writes d(loss)/d(input) into it (overwriting).
 *
 *   float l = qs_loss_softmax_xent(logits, labels, dlogits);   // logits [N, C], labels[N] in [0, C)
 *   qs_exec_backward(x, (const qs_tensor *const[]){ dlogits }, &e);
 *
 * Bad input (wrong shapes or dtypes, a label outside [0, C)) returns NAN and leaves the gradient
 * untouched: the caller checks isnan() and reports. */
#ifndef QS_LOSS_H
#define QS_LOSS_H

#include <stdint.h>

#include "tensor.h"

/* Mean over N of −log softmax(logits[n])[labels[n]]; d/dlogits = (softmax − onehot) / N.
 * logits float32 [N, C]; dlogits float32 [N, C] or NULL. */
float qs_loss_softmax_xent(const qs_tensor *logits, const int64_t *labels, qs_tensor *dlogits);

/* Mean over all elements of (y − target)²; d/dy = 2 (y − target) / numel.
 * y and target float32 of the same shape; dy the same shape, or NULL. */
float qs_loss_mse(const qs_tensor *y, const qs_tensor *target, qs_tensor *dy);

#endif
