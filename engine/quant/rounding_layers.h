/* The layers a weight-rounding pass (AdaRound, GPTQ) takes, and their inputs captured while the
 * calibration data streams through the quantized sim. What both passes share:
 *
 *   qs_rl_layer L;
 *   const char *why = qs_rl_layer_of(sim, node, &L, buf, sizeof buf);   // NULL: a layer to round
 *   int *saved = qs_rl_bypass_save(sim);        // the caller's bypass flags
 *   qs_rl_bypass_quantized(sim, saved);         // the quantized path for a capture
 *   qs_rl_capture c = { .g = sim->g, .taps = taps, .ntaps = n, .take = fn, .ud = ud };
 *   qs_rl_capture_run(sim, &calib, batch, io, &c, "GPTQ", NULL, &e);
 *   qs_rl_bypass_restore(sim, saved); free(saved);
 *
 * A layer: every Conv (any group count), Gemm without transA and MatMul with a 2-D weight as its
 * second operand whose weight quantizer is active, its weight a float32 constant read by it alone.
 * Its weight is seen as a matrix Wm [M, Kg] (output channels × inputs per group; a Gemm/MatMul
 * weight [K, N] is transposed), group gi being rows [gi·Mg, (gi+1)·Mg). A column is an im2col
 * column of a Conv sample or a row of a Gemm/MatMul input; P columns per sample.
 *
 * A capture runs the sim over the first samples of the data in batches and hands each tap (a
 * layer's input value) its batch through take(), stopping the forward once every tap still
 * wanting data has been seen: nothing after them is needed. A tap on a graph input is handed the
 * batch at the end of a full forward. */
#ifndef QS_ROUNDING_LAYERS_H
#define QS_ROUNDING_LAYERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/kernels.h"
#include "pipeline.h"
#include "pipeline_util.h"
#include "quant/quantsim.h"

enum { QS_RL_CONV, QS_RL_GEMM, QS_RL_MATMUL };

typedef struct qs_rl_layer {
    int node, wq, kind;
    int64_t M, Kg, group, Mg;      /* Wm [M, Kg]; Mg = M / group */
    int trans;                     /* Wm is the stored weight transposed */
    float alpha;                   /* Gemm's alpha (1 otherwise) */
    int wndim;
    int64_t wshape[QS_MAX_DIMS];
    /* from the first input seen (qs_rl_geometry) */
    int have_geom;
    qs_conv_geom geom;             /* Conv */
    int64_t C, P, per_x;           /* Conv: input channels; columns per sample; floats per sample */
    int xndim;
    int64_t xshape[QS_MAX_DIMS];   /* a sample's shape (without the batch dim) */
} qs_rl_layer;

/* Why node i cannot be rounded (NULL: it can, and L is filled; "": it is not a quantized layer,
 * not worth listing). buf may receive the reason. */
const char *qs_rl_layer_of(const qs_quantsim *sim, int node, qs_rl_layer *L, char *buf, size_t nbuf);
/* Column geometry from the layer's first input batch x (batch first); who ("GPTQ") prefixes errors. */
int qs_rl_geometry(qs_rl_layer *L, const qs_graph *g, const qs_tensor *x, const char *who, qs_err *e);
/* QS_ESHAPE unless x has the shape the geometry was taken from. */
int qs_rl_same_shape(const qs_rl_layer *L, const qs_graph *g, const qs_tensor *x, const char *who, qs_err *e);
/* The weight as Wm: Wm[i] is the stored weight src[i], s[i] and z[i] its scale and zero point
 * (any of Wm, s, z may be NULL). Every array has the weight's element count. */
void qs_rl_weights(const qs_quantsim *sim, const qs_rl_layer *L, float *Wm, float *s, float *z, int64_t *src);
const char *qs_rl_op(const qs_rl_layer *L);   /* "Conv", "Gemm", "MatMul" */

/* Bypass flags: a copy of the caller's (NULL when out of memory), the quantized path for a capture
 * (the caller's flags, plus every non-weight quantizer without a range), and the caller's back. */
int *qs_rl_bypass_save(const qs_quantsim *sim);
void qs_rl_bypass_quantized(qs_quantsim *sim, const int *saved);
void qs_rl_bypass_restore(qs_quantsim *sim, const int *saved);

typedef struct qs_rl_tap {
    int value, producer;   /* a layer's input, and the node writing it (-1: a graph input) */
    int64_t want;          /* samples it wants; take() may lower it (enough columns, no more room) */
    int seen;              /* in the current batch */
} qs_rl_tap;

/* x: the tap's value for the batch (rows valid rows; an observer may see padding beyond them).
 * Errors go to c->err. */
struct qs_rl_capture;
typedef void (*qs_rl_take_fn)(struct qs_rl_capture *c, int tap, const qs_tensor *x, int64_t rows);

typedef struct qs_rl_capture {
    const qs_graph *g;
    qs_rl_tap *taps;
    int ntaps;
    qs_rl_take_fn take;
    void *ud;
    qs_err err;            /* set by take() */
    double t0;             /* progress: when the stage started */
    /* internal */
    int64_t start, rows;   /* the current batch */
    atomic_int stop;
    atomic_int *user_abort;
    int aborted;
} qs_rl_capture;

/* Runs batches of `batch` samples from sample 0 until no tap wants more (a tap takes batch
 * [start, start+k) while start < its want). A fresh runner: weights changed since the last plan
 * are seen. io may be NULL; with a stage, progress (samples, the largest want) goes there after
 * each batch. pool: the kernels' (may be NULL). Errors are prefixed with who. */
int qs_rl_capture_run(qs_quantsim *sim, const qs_pl_data *data, int64_t batch, const qs_pipeline_io *io,
                      qs_threadpool *pool, qs_rl_capture *c, const char *who, const char *stage, qs_err *e);

/* Frees the name of each of n report layers (name at byte offset name_off of each size-byte
 * element), then the array. */
void qs_rl_free_names(void *layers, int n, size_t size, size_t name_off);
struct json_t;
struct json_t *qs_rl_json_num(double v);   /* a real, or null when not finite */

#endif
