/* Shared low-level kernels for the compute-heavy op families (conv, gemm, pool, norm).
 *
 *   qs_sgemm(0, 1, M, N, K, 1.f, A, K, B, K, 0.f, C, N);     // C = A·Bᵀ, row-major, on OpenBLAS
 *
 *   qs_conv_geom g;                                           // one conv/pool window geometry:
 *   qs_conv_geom_init(c, nd, x_spatial, kernel, 0, 1, &g);    // strides/pads/dilations/auto_pad of c's node
 *   qs_im2col(&g, channels, x, col, c->pool, c->nthreads);    // col: [channels·kvol, outvol]
 *
 * Every spatial geometry is normalized to three dims (depth, height, width), with leading dims of
 * size 1 when the op is 1-D or 2-D: one set of loops then serves 1-D, 2-D and 3-D ops, and the
 * innermost (width) loop stays a contiguous run that the compiler can vectorize.
 *
 * Each fast kernel here has a plain reference (`_ref`) written as the textbook loop nest; tests
 * compare the two. The references are not used by the ops. */
#ifndef QS_KERNELS_H
#define QS_KERNELS_H

#include <stdint.h>

#include "ops/ops.h"

/* Hot loops: GCC builds AVX-512, AVX2 and baseline copies of the function and picks one when the
 * program loads (ifunc), since the build targets plain x86-64; and -O2 does not vectorize loops
 * whose trip count is unknown, so these functions ask for -O3 (but keep short copy loops as loops
 * rather than memcpy/memset calls, which cost more than they save on rows of a few dozen floats). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QS_HOT __attribute__((target_clones("avx512f", "avx2", "default"), \
                              optimize("O3", "no-tree-loop-distribute-patterns")))
#else
#define QS_HOT
#endif

/* QS_HOT with a·b + c contracted into one fused multiply-add where the clone's target has it (the
 * build's ISO C mode keeps them apart otherwise): fewer instructions, one rounding instead of two.
 * GCC may contract a loop's vector body and its scalar tail differently, so a function that must
 * give every element the same bits wherever it sits (the pointwise kernels below: fused and unfused
 * runs must agree) runs all its elements through one vector block. (One optimize attribute: a
 * second would replace the first's -O3.) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QS_HOT_FMA __attribute__((target_clones("avx512f", "avx2", "default"), \
                                  optimize("O3", "no-tree-loop-distribute-patterns", "fp-contract=fast")))
#else
#define QS_HOT_FMA
#endif

/* y[i] += b;  y[i] = a·x[i] + b (x may be y);  y[i] = min(max(y[i] + b, lo), hi) */
void qs_vec_add(int64_t n, float b, float *y);
/* y = clamp((y + b) + r, lo, hi): a bias, a residual and a clamp in one pass (±INFINITY: no clamp) */
void qs_vec_bias_res_clamp(int64_t n, float b, const float *r, float lo, float hi, float *y);
void qs_vec_affine(int64_t n, float a, float b, const float *x, float *y);
void qs_vec_bias_clamp(int64_t n, float b, float lo, float hi, float *y);

/* y[i] = 1 / (1 + e^−x[i]) and x[i]·sigmoid(x[i]) (x may be y): vectorized, within 3e-7 relative of
 * the correctly rounded value; 0 below x = −87 */
void qs_vec_sigmoid(int64_t n, const float *x, float *y);
void qs_vec_silu(int64_t n, const float *x, float *y);
/* y[i] = x·clamp(x·⅙ + ½, 0, 1) (HardSwish) and clamp(α·x + β, 0, 1) (HardSigmoid); x may be y */
void qs_vec_hardswish(int64_t n, const float *x, float *y);
void qs_vec_hardsigmoid(int64_t n, float alpha, float beta, const float *x, float *y);

/* ---- GEMM ------------------------------------------------------------------------------------ */

/* C[M,N] = alpha·op(A)·op(B) + beta·C, row-major, op(X) = Xᵀ when its flag is set; lda/ldb/ldc are
 * row strides of the matrices as stored. beta == 0 ignores C's old contents (even NaN). */
void qs_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void qs_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* qs_sgemm split nthreads ways on tp (by blocks of C's rows or columns) when the product is big
 * enough to pay for it; the same result as qs_sgemm. */
void qs_sgemm_mt(qs_threadpool *tp, int nthreads, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* ---- convolution / pooling window geometry --------------------------------------------------- */

#define QS_CONV_MAXD 3   /* spatial dims supported by conv and pool kernels */

typedef struct qs_conv_geom {
    int nd;                           /* spatial dims of the op: 1, 2 or 3 */
    /* normalized to 3 dims: index 0 = depth, 1 = height, 2 = width (size-1 dims lead) */
    int64_t in[3], out[3], k[3], stride[3], dil[3];
    int64_t pad[3], pad_end[3];       /* begin / end padding (may be negative for ConvTranspose) */
} qs_conv_geom;

static inline int64_t qs_geom_invol(const qs_conv_geom *g) { return g->in[0] * g->in[1] * g->in[2]; }
static inline int64_t qs_geom_outvol(const qs_conv_geom *g) { return g->out[0] * g->out[1] * g->out[2]; }
static inline int64_t qs_geom_kvol(const qs_conv_geom *g) { return g->k[0] * g->k[1] * g->k[2]; }

/* Fills g for the node in c: nd spatial dims, input sizes in_sp[nd], kernel[nd]; reads the node's
 * strides, dilations (unless use_dil is 0: AveragePool before opset 19 has none), pads and auto_pad;
 * ceil_mode rounds the output size up (pools). Output size follows the ONNX spec: explicit pads give
 * floor/ceil((in + pads − ((k−1)·d + 1)) / s) + 1, and with ceil_mode a last window that would start
 * in the end padding is dropped; SAME_UPPER/SAME_LOWER give ceil(in / s) with the total padding split
 * (the odd one at the end for UPPER, at the beginning for LOWER); VALID gives ceil((in − ek + 1) / s).
 * Refuses bad attributes (wrong counts, non-positive strides, negative pads, empty output) naming
 * the attribute. */
int qs_conv_geom_init(qs_kctx *c, int nd, const int64_t *in_sp, const int64_t *kernel, int ceil_mode,
                      int use_dil, qs_conv_geom *g);
/* Normalizes explicit values into g (no attribute reading): for ConvTranspose and tests. */
void qs_conv_geom_set(qs_conv_geom *g, int nd, const int64_t *in_sp, const int64_t *out_sp,
                      const int64_t *kernel, const int64_t *stride, const int64_t *dil, const int64_t *pad,
                      const int64_t *pad_end);

/* col[(c·kvol + kk), p] = x[c, window p's tap kk] (0 where the tap falls in the padding).
 * x: [ch, in…] contiguous, col: [ch·kvol, outvol]. Splits channels nthreads ways on tp. */
void qs_im2col(const qs_conv_geom *g, int64_t ch, const float *x, float *col, qs_threadpool *tp, int nthreads);
/* The adjoint: x[c, tap] += col[(c·kvol + kk), p]. Accumulates into x (zero it first). */
void qs_col2im(const qs_conv_geom *g, int64_t ch, const float *col, float *x, qs_threadpool *tp, int nthreads);
void qs_im2col_ref(const qs_conv_geom *g, int64_t ch, const float *x, float *col);
void qs_col2im_ref(const qs_conv_geom *g, int64_t ch, const float *col, float *x);

/* Direct convolution as ONNX defines it: y[n, m, o…] = b[m] + Σ_{c in m's group, k…}
 * w[m, c, k…]·x[n, g·C/group + c, o·s + k·d − pad]. x [N, C, in…], w [M, C/group, k…], b [M] or
 * NULL, y [N, M, out…]. */
void qs_conv_ref(const qs_conv_geom *g, int64_t N, int64_t C, int64_t M, int64_t group, const float *x,
                 const float *w, const float *b, float *y);

#endif
