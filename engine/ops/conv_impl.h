/* What conv.c and conv_dw.c share: a Conv node's parameters (conv_p, from its attributes and input
 * shapes), the path it takes, and the fused epilogue (bias, residual, clamp). conv.c owns the op
 * table and the GEMM paths; conv_dw.c the depthwise loops. */
#ifndef QS_CONV_IMPL_H
#define QS_CONV_IMPL_H

#include "ops/kernels.h"

enum { PATH_GEMM, PATH_1X1, PATH_DW };

typedef struct conv_dnnl conv_dnnl;
typedef struct conv_dnnl_bwd conv_dnnl_bwd;

typedef struct conv_p {
    qs_conv_geom g;     /* Conv: in = X's spatial dims, out = Y's. ConvTranspose: in = Y's, out = X's */
    int64_t N, C, M, group, Cg, Mg, kvol;
    int64_t xvol, yvol; /* spatial volume of one X / Y plane */
    int path;
    conv_dnnl *dnnl;    /* Conv's prepared oneDNN primitives (conv_dnnl.c), or NULL: our own path */
    conv_dnnl_bwd *dnnl_bwd;   /* and its backward's (conv_dnnl_bwd.c; training plans only), or NULL */
} conv_p;

/* the executor's fused activation, if any (see qs_kctx) */
typedef struct {
    int on;
    float lo, hi;
    const float *res;   /* the fused residual, laid out like Y (Conv only), or NULL */
    int pw;             /* then a fused pointwise activation, QS_PW_* (Conv only) ... */
    float pw_alpha, pw_beta; /* ... and HardSigmoid's parameters */
} clamp_t;

/* One output plane: + bias *b (b may be NULL) + residual plane r (NULL: none), then the clamp, then
 * the pointwise activation */
void conv_epilogue(float *y, const float *b, const float *r, int64_t vol, clamp_t cl);
/* Scratch holds `slices` equal slices of slice_bytes; *fit = how many fit (QS_EINVAL: not one) */
int conv_scratch_slices(qs_kctx *c, size_t slice_bytes, int slices, int *fit);

/* Our own backward sums dW and dB over the batch in at most QS_CONV_BWD_CHUNKS fixed chunks of *q
 * items (the last may be shorter), each chunk's partial sums apart and added in chunk order, so
 * that their bits do not depend on the thread count; without sums (dX only) every item is a chunk. */
#define QS_CONV_BWD_CHUNKS 4
static inline void conv_bwd_chunks(int64_t n, int sums, int64_t *q, int64_t *chunks)
{
    int64_t want = !sums ? n : n < QS_CONV_BWD_CHUNKS ? n : QS_CONV_BWD_CHUNKS;
    *q = want > 0 ? (n + want - 1) / want : 1;
    *chunks = (n + *q - 1) / *q;
}
/* dW = Σ_k the chunks' partial dW, dB likewise, in chunk order (chunk k's nw + M floats at
 * part + k·part_floats, dW then dB; dw or db may be NULL; zeros for an empty batch) */
void conv_bwd_add_chunks(const float *part, int64_t part_floats, int64_t chunks, int64_t nw, int64_t M, float *dw,
                         float *db);

/* the depthwise path (conv_dw.c) */
size_t conv_dw_scratch(const qs_kctx *c, const conv_p *p);
int conv_dw_forward(qs_kctx *c, const conv_p *p, const float *x, const float *w, const float *b, float *y,
                    clamp_t clamp);
int conv_dw_backward(qs_kctx *c, const conv_p *p, const float *x, const float *w, const float *dy, float *dx,
                     float *dw, float *db);

/* the oneDNN path (conv_dnnl.c): NULL when the shape is not one it takes (the caller keeps its own
 * path) or the path is disabled; conv_dnnl_enable(0) disables it process-wide (tests, benchmarks).
 * Flags: KEEP_W holds the blocked weights between calls while the kctx's wgen says they are
 * unchanged; X_BLOCKED / Y_BLOCKED / R_BLOCKED: X, Y, the residual in the channel-blocked layout
 * (conv_dnnl_block's), and then, with Y or the residual blocked, the bias (BIAS), the residual (RESIDUAL) and cl's
 * clamp and SiLU run inside the kernel. */
enum {
    CONV_DNNL_KEEP_W = 1, CONV_DNNL_X_BLOCKED = 2, CONV_DNNL_Y_BLOCKED = 4, CONV_DNNL_R_BLOCKED = 8,
    CONV_DNNL_BIAS = 16, CONV_DNNL_RESIDUAL = 32,
};
conv_dnnl *conv_dnnl_new(const conv_p *p, int nthreads, int flags, clamp_t cl);
/* the channel block of the blocked layout on this CPU (16: AVX-512, 8: AVX2), 0: oneDNN not used */
int conv_dnnl_block(void);
/* 0 when QUANT_CONV_BLOCKED=0 keeps activations in NCHW between ops (benchmarks compare) */
int conv_dnnl_blocked_enabled(void);
void conv_dnnl_free(conv_dnnl *d);
/* oneDNN's name for the kernel d runs ("jit:avx512_core", "jit_fp32_wino_2x3:avx512_core", …) */
const char *conv_dnnl_kernel(const conv_dnnl *d);
size_t conv_dnnl_scratch(const conv_dnnl *d, const conv_p *p, int nthreads);
int conv_dnnl_forward(qs_kctx *c, conv_dnnl *d, const conv_p *p, const float *x, const float *w, const float *b,
                      float *y, clamp_t clamp);
void conv_dnnl_enable(int on);
/* the backward on oneDNN (conv_dnnl_bwd.c) for the shapes the forward takes there, or NULL. dW and
 * dB always come from it; dX only when conv_dnnl_bwd_has_data (else the caller's own path computes
 * it). Results do not depend on the thread count. */
conv_dnnl_bwd *conv_dnnl_bwd_new(const conv_p *p);
void conv_dnnl_bwd_free(conv_dnnl_bwd *b);
int conv_dnnl_bwd_has_data(const conv_dnnl_bwd *b);
size_t conv_dnnl_bwd_scratch(const conv_dnnl_bwd *b, const conv_p *p, int nthreads);
int conv_dnnl_backward(qs_kctx *c, const conv_dnnl_bwd *b, const conv_p *p, const float *x, const float *w,
                       const float *dy, float *dx, float *dw, float *db);
int conv_dnnl_enabled(void);

#endif
