/* The operator interface: each op family (ops/conv.c, ops/gemm.c, …) defines a table of qs_op_def,
 * and registry.c looks them up by (domain, op type). The executor calls, per node:
 *
 *   infer(ctx)     — output dtypes and shapes from input shapes. An input whose value is known at
 *                    plan time (initializer, Constant, or computed from other known values) has
 *                    in[i]->data set; others have data == NULL. Shape-like inputs (Reshape's shape,
 *                    Squeeze's axes, Pad's pads, …) must be known: refuse otherwise.
 *   prepare(ctx, &state) — optional, once per plan after infer, when shapes are final: parses the
 *                    node's attributes and what follows from them and the shapes (Conv's geometry
 *                    and path) into a state the executor keeps for the node and passes back as
 *                    ctx->state to scratch, forward and backward; release(state) frees it (NULL:
 *                    free). Kernels called without a plan (tests, plan-time folding) get state
 *                    NULL and parse as they go.
 *   scratch(ctx)   — bytes of scratch the forward/backward need (optional; 0 when NULL).
 *   forward(ctx)   — reads in[], writes out[] (buffers already sized by infer); scratch is caller-owned.
 *   backward(ctx)  — given dout[] (grads of outputs) and the forward's in[]/out[], writes din[i] for
 *                    each i with din[i] != NULL. It overwrites din[i]; the executor accumulates
 *                    gradients of values read by several nodes. NULL backward: not differentiable.
 *
 * flags say what the executor may fuse, so that it never matches op names: QS_OP_FUSE_ACT ops
 * absorb a following clamp (an op whose clamp() gives its bounds), QS_OP_FUSE_RESIDUAL ops a
 * following QS_OP_RESIDUAL_ADD, QS_OP_FUSE_PW ops a following pointwise activation (an op whose
 * pointwise() names it, or SiLU as Mul(v, Sigmoid(v))); QS_OP_SHAPE_ONLY ops read only their inputs' shapes (always
 * evaluated at plan time), QS_OP_DEQUANT ops are evaluated once at plan time on an integer
 * initializer (a QDQ model's final weight).
 *
 * Kernels never allocate in their hot loops and never abort on bad input: they return a QS_E* code
 * with a message naming the node (qs_op_error). */
#ifndef QS_OPS_H
#define QS_OPS_H

#include <stdlib.h>

#include "error.h"
#include "graph.h"
#include "tensor.h"
#include "threadpool.h"

typedef struct qs_kctx {
    const qs_node *node;
    int64_t opset;       /* the default domain's opset version of the model */
    int nin, nout;
    qs_tensor **in;      /* in[i] == NULL for an omitted optional input */
    qs_tensor **out;
    qs_tensor **din;     /* backward only: grads to write (NULL: not needed) */
    qs_tensor **dout;    /* backward only: grads of the outputs (NULL entry: zero gradient) */
    void *scratch;
    size_t scratch_size;
    int training;        /* BatchNormalization uses batch statistics, Dropout stays identity */
    int nthreads;        /* parallel loops split this many ways (scratch is sized for it) ... */
    qs_threadpool *pool; /* ... on this pool (NULL: on the calling thread) */
    qs_err *err;
    /* Inference only: the executor may fold a Relu/Clip that is the sole reader of a Conv,
     * ConvTranspose, Gemm or MatMul output into that op, which then clamps its output to
     * [act_min, act_max] while it is still in cache (fused_act != 0). Zero: no clamp. */
    int fused_act;
    float act_min, act_max;
    /* Inference only, Conv only: a residual Add that read the Conv's output is folded in too; the
     * Conv adds this tensor (Y's shape) to its output before the clamp. NULL: none. */
    const qs_tensor *residual;
    /* Inference only, Conv only: a pointwise activation on the Conv's output v (after the residual
     * and the clamp) was folded in too: a SiLU written as Mul(v, Sigmoid(v)), or a Sigmoid,
     * HardSwish or HardSigmoid (pw_alpha, pw_beta) that was v's only reader. QS_PW_NONE: none. */
    int fused_pw;
    float pw_alpha, pw_beta;
    /* Inference only, Conv only (an op whose xscale() said yes): a Mul x·s of in[0] = x by s of shape
     * [N or 1, C, 1, 1] that was the Conv's only input reader is folded in: the Conv computes its
     * result on x·s, per item and channel (a squeeze-excitation gate). NULL: none. */
    const qs_tensor *in_scale;
    void *state;         /* what prepare() left for this node in this plan, or NULL (see above) */
    /* Inference only: when input 1 (a weight) is an initializer, a number that changes whenever the
     * graph's initializers may have changed (qs_graph_weights_changed); an op may keep a copy derived
     * from input 1 in its state while wgen stays the same. 0: input 1 may change on any call. */
    uint64_t wgen;
    /* Inference only: activations kept in a channel-blocked layout between ops that can take it
     * (the block the op's blocked() hook gave; QS_LAYOUT_*); 0: everything in the ONNX layout. */
    int layout;
} qs_kctx;

enum {
    QS_LAYOUT_X = 1 << 0,   /* in[0] arrives blocked */
    QS_LAYOUT_Y = 1 << 1,   /* out[0] is written blocked */
    QS_LAYOUT_R = 1 << 2,   /* the fused residual arrives blocked (only with QS_LAYOUT_Y) */
    QS_LAYOUT_X1 = 1 << 3,  /* in[1] arrives blocked (an op whose blocked() hook offered it) */
};

/* The blocked layout pads a channel count up to whole blocks of blk; a count under one block that is
 * not a whole one stays NCHW (its buffer would be mostly padding). Every op that offers the layout
 * follows this, so that a value's producer and its readers agree. */
static inline int64_t qs_block_padded(int64_t ch, int64_t blk) { return (ch + blk - 1) / blk * blk; }
static inline int qs_block_pads_well(int64_t ch, int64_t blk) { return ch % blk == 0 || ch > blk; }

enum {
    QS_OP_FUSE_ACT = 1 << 0,      /* may absorb a following clamp into its output epilogue */
    QS_OP_FUSE_RESIDUAL = 1 << 1, /* may absorb a following residual add (same-shape tensor) */
    QS_OP_RESIDUAL_ADD = 1 << 2,  /* elementwise a + b: the residual add above */
    QS_OP_SHAPE_ONLY = 1 << 3,    /* reads only its inputs' shapes */
    QS_OP_DEQUANT = 1 << 4,       /* integer → float: foldable on a constant integer weight */
    QS_OP_FUSE_PW = 1 << 5,       /* may absorb a following pointwise activation (SiLU, see QS_PW_*) */
    QS_OP_SIGMOID = 1 << 6,       /* the Sigmoid of that pattern */
    QS_OP_MUL = 1 << 7,           /* elementwise a · b: the Mul of that pattern */
    QS_OP_VIEW = 1 << 8,          /* out[0] holds in[0]'s bytes in the same order: may share them */
};

/* The pointwise activations an epilogue applies (qs_kctx.fused_pw), with qs_vec_* (kernels.h) */
enum { QS_PW_NONE, QS_PW_SILU, QS_PW_SIGMOID, QS_PW_HARDSWISH, QS_PW_HARDSIGMOID };

typedef struct qs_op_def {
    const char *domain;  /* "" = ai.onnx */
    const char *op;
    unsigned flags;      /* QS_OP_* */
    int (*infer)(qs_kctx *c);
    int (*prepare)(qs_kctx *c, void **state);
    void (*release)(void *state);
    /* A clamp op (Relu, Clip): 1 and its bounds when they are known at plan time, else 0. */
    int (*clamp)(const qs_kctx *c, float *lo, float *hi);
    /* A pointwise activation an epilogue can apply (Sigmoid, HardSwish, HardSigmoid): its QS_PW_*
     * kind and parameters (alpha, beta: HardSigmoid's), or QS_PW_NONE. */
    int (*pointwise)(const qs_kctx *c, float *alpha, float *beta);
    size_t (*scratch)(const qs_kctx *c);
    /* Inference: the channel block (8 or 16) in which this node, as planned (fusions included),
     * can write out[0] instead of NCHW, or 0; *inputs (in[0] alone, 1, when called) is set to the
     * inputs it can read blocked, bit k for in[k] (k = 0 or 1). The executor then re-prepares it
     * with kctx.layout set. Every op that offers it uses the same block on a given machine. */
    int (*blocked)(qs_kctx *c, unsigned *inputs);
    /* Inference: 1 when this node, as planned, can take in[0] scaled per item and channel
     * (kctx.in_scale, set for the call) instead of a Mul running before it, else 0. */
    int (*xscale)(qs_kctx *c);
    int (*forward)(qs_kctx *c);
    int (*backward)(qs_kctx *c);
} qs_op_def;

const qs_op_def *qs_op_find(const char *domain, const char *op);
/* All registered ops, for `quant info` and docs; returns the count. */
int qs_op_list(const qs_op_def *const **defs);

/* For an op whose parameters are one struct TYPE filled by PARSE(c, &p) from the node and its
 * input shapes: defines NAME_prepare, the op's prepare hook (PARSE once per plan), and NAME_get,
 * which gives the prepared struct, or parses it now when the kernel runs without a plan. */
#define QS_OP_PARAMS(NAME, TYPE, PARSE)                                                         \
    static int NAME##_prepare(qs_kctx *c, void **state)                                         \
    {                                                                                           \
        TYPE *p_ = malloc(sizeof *p_);                                                          \
        int rc_;                                                                                \
        if (!p_)                                                                                \
            return qs_op_error(c, QS_ENOMEM, "out of memory");                                  \
        if ((rc_ = PARSE(c, p_)) < 0) {                                                         \
            free(p_);                                                                           \
            return rc_;                                                                         \
        }                                                                                       \
        *state = p_;                                                                            \
        return 0;                                                                               \
    }                                                                                           \
    static int NAME##_get(qs_kctx *c, TYPE *p)                                                  \
    {                                                                                           \
        if (c->state) {                                                                         \
            *p = *(const TYPE *)c->state;                                                       \
            return 0;                                                                           \
        }                                                                                       \
        return PARSE(c, p);                                                                     \
    }

/* Error helper: message prefixed with the node ("Conv 'conv1': …"). */
int qs_op_error(qs_kctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sets out's dtype and shape (infer helper). */
void qs_set_shape(qs_tensor *out, qs_dtype dtype, int ndim, const int64_t *shape);

/* numpy broadcasting of two shapes into out; QS_ESHAPE (with message) when they do not broadcast */
int qs_broadcast_shape(qs_kctx *c, const qs_tensor *a, const qs_tensor *b, int *ndim, int64_t *shape);

/* Family tables, each terminated by an entry with op == NULL. */
extern const qs_op_def qs_ops_conv[], qs_ops_gemm[], qs_ops_pool[], qs_ops_norm[], qs_ops_layernorm[], qs_ops_resize[], qs_ops_elementwise[],
    qs_ops_reduce[], qs_ops_activation[], qs_ops_shape[], qs_ops_qdq[], qs_ops_fakequant[], qs_ops_targetmac[], qs_ops_mod[];

#endif
