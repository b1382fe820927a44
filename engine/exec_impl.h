/* The executor's state (exec.c), shared with its plan-time passes (exec_layout.c). Engine-internal:
 * everything else goes through <quant/exec.h>. */
#ifndef QS_EXEC_IMPL_H
#define QS_EXEC_IMPL_H

#include <stdatomic.h>
#include <stddef.h>

#include "exec.h"
#include "ops/ops.h"

#define ALIGN 64
#define MIN_OPSET 7
#define MAX_OPSET 21

enum { V_NONE, V_INIT, V_CONST, V_INPUT, V_ACT };

struct qs_exec {
    qs_graph *g;
    int mode;
    int planned;
    int64_t batch;
    qs_threadpool *pool;     /* the kernels' parallel loops run on it ... */
    int nthreads;            /* ... split this many ways: its size at the last plan (scratch is per thread) */
    atomic_int *abort_flag;
    qs_progress_fn progress;
    void *progress_ud;
    qs_node_fn observer;
    void *observer_ud;

    int fuse;                /* fold Relu/Clip into the preceding Conv/Gemm/MatMul (next plan) */
    char *keep;              /* per value: never fused away (an observer watches it) */

    int nvalues, nnodes;
    qs_tensor *val;          /* heads, one per value */
    char *kind;              /* V_* */
    size_t *offset;          /* arena offset of V_INPUT / V_ACT values */
    const qs_op_def **def;   /* per node */
    char *folded;            /* per node: evaluated at plan time, or fused into its producer */
    float *act_min, *act_max;/* per node: clamp fused into it (act_min <= act_max), else act_min > act_max */
    int *fused_act;          /* per node: the last node absorbed into it (whose output it writes), else -1 */
    int *resid;              /* per node: value of a residual Add fused into it (Conv only), else -1 */
    char *pw;                /* per node: the pointwise activation fused into it (QS_PW_*, Conv only) ... */
    float *pw_ab;            /* ... and its parameters (alpha, beta at 2i, 2i + 1) */
    int *xscale;             /* per node: value s of a Mul x·s folded into it (in[0] reads x), else -1 */
    void **state;            /* per node: what its op's prepare() made of it in this plan, or NULL */
    int *layout;             /* per node: QS_LAYOUT_* (activations kept channel-blocked around it) */
    char *blocked;           /* per value: held channel-blocked (no NCHW copy exists) */
    int nblocked;
    int block;               /* the plan's channel block (blocked values' channels pad up to it) */
    qs_tensor ***in, ***out; /* per node: pointers into val[] (NULL for omitted inputs) */
    char *arena;
    size_t arena_size, arena_cap;     /* the buffers outlive a plan: a replan that fits reuses them */
    char *scratch;
    size_t scratch_size, scratch_cap;

    /* training */
    char *trainable;         /* per value: initializer receives a gradient */
    char *needs_grad;        /* per value */
    char *has_grad;          /* per value, during backward */
    qs_tensor *grad;         /* heads; data in grad_arena */
    char *grad_arena;
    char *gtmp[8];           /* per input position: buffer for gradients that must be accumulated */
    size_t gtmp_size;
};

/* After the fusions and before memory is placed: which activations stay channel-blocked between
 * ops that take that layout (ops' blocked() hook), re-preparing those ops with kctx.layout set and
 * raising *scratch to what they need. owner[i]: the node that absorbed folded node i. */
int qs_exec_plan_layouts(qs_exec *x, const int *owner, size_t *scratch, qs_err *e);
qs_kctx qs_exec_node_ctx(qs_exec *x, int i, qs_err *e);
/* Node i reads a Mul x·s (s [N or 1, C, 1, 1]) that it can apply itself (exec_scale.c): returns s and
 * the Mul's node in *mul, with x->in[i][0] pointing at x; else -1. prod: each value's producer,
 * nreaders: how many nodes read it. */
int qs_exec_scaled_input(qs_exec *x, int i, const int *prod, const int *nreaders, int *mul);
/* Memory placement (exec_place.c): each activation's offset in the arena, from its lifetime (first
 * writer to last reader; graph inputs and outputs live throughout), and in *total the arena's size.
 * owner[i]: the node that absorbed folded node i. */
int qs_exec_place(qs_exec *x, const int *owner, size_t *total, qs_err *e);
/* bytes of value v's buffer: a blocked value's channels padded up to whole blocks */
size_t qs_exec_value_bytes(const qs_exec *x, int v);
/* how many values the current plan holds channel-blocked (an observer needs a plan without them) */
int qs_exec_blocked_values(const qs_exec *x);

#endif
