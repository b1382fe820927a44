/* Ops other than Conv that read and write the channel-blocked layout (exec_layout.c), so that a
 * squeeze-excitation block stays in it: GlobalAveragePool, and the Mul of a [N, C, H, W] tensor by a
 * per-channel gate [N or 1, C, 1, 1] (either operand first). pool.c and elementwise.c hand their
 * nodes here when the plan set kctx.layout. */
#ifndef QS_OPS_BLOCKED_H
#define QS_OPS_BLOCKED_H

#include "ops/ops.h"

/* the blocked() hooks (ops.h): the block, or 0 when the node is not one of those above */
int qs_blocked_gap_hook(qs_kctx *c);
int qs_blocked_gate_hook(qs_kctx *c);
/* the Mul's blocked_input() hook: either operand may arrive blocked */
int qs_blocked_gate_input(qs_kctx *c, int k);
/* forwards under kctx.layout */
int qs_blocked_gap(qs_kctx *c);
int qs_blocked_gate(qs_kctx *c);

#endif
