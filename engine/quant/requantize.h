/* Models that are already quantized: QDQ (QuantizeLinear/DequantizeLinear), QLinear* and integer
 * ops. Quantizing one again would put quantizers on values that are already on a grid and keep the
 * old ones, so the pipelines refuse it unless asked to requantize (config.requantize):
 *
 *   char ops[256];
 *   if (qs_graph_quantized_ops(g, ops, sizeof ops) && !cfg.requantize) → refuse, naming ops
 *   qs_requantize(g, &nw, &np, &e);   // weights back to float, activation Q/DQ pairs removed
 */
#ifndef QS_QUANT_REQUANTIZE_H
#define QS_QUANT_REQUANTIZE_H

#include <stddef.h>

#include "graph.h"

/* op is a quantized-model op: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinear*,
 * *Integer (ConvInteger, MatMulInteger), QGemm. */
int qs_op_is_quantized(const char *op);
/* How many nodes of g are such ops; msg gets "QuantizeLinear 12, DequantizeLinear 30" (cut to n). */
int qs_graph_quantized_ops(const qs_graph *g, char *msg, size_t n);
/* Each DequantizeLinear of an integer initializer becomes a float initializer of its output's name
 * ((q − zero point) · scale, per tensor or per axis); each QuantizeLinear whose readers are all
 * DequantizeLinear goes with them, their readers reading its float input. Unread initializers are
 * dropped. Fails naming the first quantized op left (QLinearConv, a lone DequantizeLinear, …).
 * *nweights, *npairs: how many of each. */
int qs_requantize(qs_graph *g, int *nweights, int *npairs, qs_err *e);

#endif
