/* Per-channel minima of layer outputs over calibration data, for high-bias absorption (cle.h):
 * c_i may not exceed the smallest pre-activation channel i takes on the data, or ReLU(x − c) + c
 * would differ from ReLU(x) there.
 *
 *   float **mins = NULL;   // mins[k]: [channels of nodes[k]'s output 0], or NULL where nodes[k] < 0
 *   qs_preact_minima(g, &calib, 512, 32, pool, &abort, nodes, n, &mins, &e);
 *   ... free(mins[k]) each, free(mins);
 *
 * Output 0 of each node is read as [N, C, ...]: the minimum over samples and positions per C. */
#ifndef QS_PREACT_H
#define QS_PREACT_H

#include <stdatomic.h>

#include "graph.h"
#include "pipeline_util.h"
#include "threadpool.h"

int qs_preact_minima(qs_graph *g, const qs_pl_data *d, int64_t samples, int64_t batch, qs_threadpool *pool,
                     atomic_int *abort, const int *nodes, int n, float ***mins, qs_err *e);

#endif
