/* Weights computed from constants, folded into initializers before the quantizers are placed
 * (quantsim.c's pass 0): a Constant node, or an initializer reshaped or transposed by a node, that
 * ends in a layer's (Conv, ConvTranspose, Gemm, MatMul) weight or bias input becomes an
 * initializer, so the layer gets a weight quantizer like any other. Other constant subgraphs stay
 * as the model wrote them. */
#ifndef QS_QUANT_CONSTWEIGHTS_H
#define QS_QUANT_CONSTWEIGHTS_H

#include "error.h"
#include "graph.h"

/* g must be sorted; returns 0 or a negative QS_E* code naming the node that failed to fold. */
int qs_fold_const_weights(qs_graph *g, qs_err *e);

#endif
