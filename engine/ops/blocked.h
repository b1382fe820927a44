/* Ops other than Conv that read and write the channel-blocked layout (exec_layout.c), so that a
 * ResNet's stem and a squeeze-excitation block stay in it: 2-D MaxPool, GlobalAveragePool, and the
 * Mul of a [N, C, H, W] tensor by a per-channel gate [N or 1, C, 1, 1] (either operand first).
 * pool.c and elementwise.c hand their nodes here when the plan set kctx.layout. */
#ifndef QS_OPS_BLOCKED_H
#define QS_OPS_BLOCKED_H

#include "ops/kernels.h"
#include "ops/ops.h"

/* the blocked() hooks (ops.h): the block, or 0 when the node is not one of those above (the gate's
 * Mul may read either operand blocked) */
int qs_blocked_gap_hook(qs_kctx *c);
int qs_blocked_gate_hook(qs_kctx *c, unsigned *inputs);
/* MaxPool's hook, given its geometry (g->nd, the kernel's dilations) */
int qs_blocked_maxpool_hook(qs_kctx *c, const qs_conv_geom *g);
/* forwards under kctx.layout */
int qs_blocked_maxpool(qs_kctx *c, const qs_conv_geom *g);
int qs_blocked_gap(qs_kctx *c);
int qs_blocked_gate(qs_kctx *c);

#endif
