/* Shared low-level kernels: the sgemm wrapper, window geometry (strides/pads/dilations/auto_pad →
 * output size), im2col/col2im, their reference loop nests, vector helpers and the parallel-for.
 *
 * im2col walks the column matrix row by row (one row per channel and kernel tap). With unit strides
 * and same-size rows a tap's rows are one contiguous copy plus a few zeroed edge columns; otherwise
 * each output row splits into the part in the left padding (zeros), the part that reads the input
 * and the right padding (zeros): no per-element bounds test in the inner loop. The tap ranges are
 * worked out once per call. col2im is the same walk with += into the input.
 *
 * Threading is ours, not OpenBLAS's (which runs single-threaded, see blas_single): the callers'
 * thread pool (threadpool.h) runs the chunks, and qs_sgemm_mt cuts a product into blocks of rows
 * or columns for it. */
#include "ops/kernels.h"

#include <cblas.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

/* ---- vector helpers --------------------------------------------------------------------------- */

QS_HOT void qs_vec_add(int64_t n, float b, float *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += b;
}

QS_HOT void qs_vec_bias_res_clamp(int64_t n, float b, const float *restrict r, float lo, float hi,
                                  float *restrict y)
{
    for (int64_t i = 0; i < n; i++) {
        float v = (y[i] + b) + r[i];
        v = v < lo ? lo : v;
        y[i] = v > hi ? hi : v;
    }
}

QS_HOT void qs_vec_bias_clamp(int64_t n, float b, float lo, float hi, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        float v = y[i] + b;
        v = v < lo ? lo : v;
        y[i] = v > hi ? hi : v;
    }
}

QS_HOT void qs_vec_affine(int64_t n, float a, float b, const float *x, float *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a * x[i] + b;
}

/* e^x for x ≤ 0 (the only arguments sigmoid needs), in a form the vectorizer takes: x = n·ln2 + r
 * with n = round(x / ln2) and |r| ≤ ln2/2, e^r by its Taylor series to r⁷ (truncation below 6e-9
 * relative), 2^n put straight into the exponent bits. Below −87 (where 2^n would leave the normal
 * range) it returns 0: sigmoid's result there is under 2e-38 either way. */
static inline float exp_nonpos(float x)
{
    const float log2e = 1.44269504f, ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-6f, shifter = 12582912.f;
    float xc = x < -87.f ? -87.f : x;
    float n = (xc * log2e + shifter) - shifter;   /* round to nearest: 1.5·2²³ drops the fraction */
    float r = (xc - n * ln2_hi) - n * ln2_lo;     /* ln2 in two parts keeps r exact to a few ulp */
    float p = 1.f / 5040;
    p = p * r + 1.f / 720;
    p = p * r + 1.f / 120;
    p = p * r + 1.f / 24;
    p = p * r + 1.f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    union { int32_t i; float f; } two_n = { .i = ((int32_t)n + 127) << 23 };
    float e = p * two_n.f;
    return x < -87.f ? 0.f : e;
}

/* σ(v) (silu = 0) or v·σ(v) of 16 floats; src may be dst */
#define SIGMOID16(src, dst, silu)                                                 \
    for (int k_ = 0; k_ < 16; k_++) {                                            \
        float v = (src)[k_], e = exp_nonpos(v < 0 ? v : -v); /* e^−|v|: no overflow */ \
        float s = 1.f / (1.f + e);                                                \
        s = v >= 0 ? s : e * s;                                                   \
        (dst)[k_] = (silu) ? v * s : s;                                           \
    }

/* Every element through the one 16-wide block, between local copies (the tail padded), so that an
 * element's result does not depend on where it sits, nor on whether x is y (see QS_HOT_FMA: with
 * x and y possibly overlapping, GCC would also keep a scalar copy of the block). */
static inline __attribute__((always_inline)) void sigmoid_blocks(int64_t n, const float *x, float *y, int silu)
{
    for (int64_t i = 0; i < n; i += 16) {
        float in[16], out[16];
        int64_t m = n - i;
        if (m >= 16)   /* memcpy: one vector move, which the block's vector loads forward from */
            memcpy(in, x + i, sizeof in);
        else
            for (int k = 0; k < 16; k++)
                in[k] = k < m ? x[i + k] : 0.f;
        SIGMOID16(in, out, silu)
        if (m >= 16)
            memcpy(y + i, out, sizeof out);
        else
            for (int64_t k = 0; k < m; k++)
                y[i + k] = out[k];
    }
}

QS_HOT_FMA void qs_vec_sigmoid(int64_t n, const float *x, float *y) { sigmoid_blocks(n, x, y, 0); }

QS_HOT_FMA void qs_vec_silu(int64_t n, const float *x, float *y) { sigmoid_blocks(n, x, y, 1); }

/* As the ONNX definitions, x·min(max(αx + β, 0), 1) with α = ⅙, β = ½ (as ONNX Runtime computes
 * it; a division by 6 cost as much as all the rest) and min(max(αx + β, 0), 1), with the clamps as
 * selects so that the loops vectorize. */
QS_HOT void qs_vec_hardswish(int64_t n, const float *x, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], s = v * (1.f / 6) + 0.5f;
        s = s < 0.f ? 0.f : s;
        y[i] = v * (s > 1.f ? 1.f : s);
    }
}

QS_HOT void qs_vec_hardsigmoid(int64_t n, float alpha, float beta, const float *x, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        float s = alpha * x[i] + beta;
        s = s < 0.f ? 0.f : s;
        y[i] = s > 1.f ? 1.f : s;
    }
}

/* ---- GEMM ------------------------------------------------------------------------------------ */

/* OpenBLAS (0.3.17+ on Skylake-X and others) multiplies small matrices (M·N·K up to about 10⁶)
 * with kernels that skip packing. Conv's GEMMs have few rows (output channels) and long rows
 * (output positions), where packing the long operand costs as much as the multiply: cut such
 * products into column blocks that qualify. Elsewhere the blocks just make a few more calls. */
#define SGEMM_SMALL_MNK 1000000

/* The kernels do their own threading and call OpenBLAS from several threads at once, so OpenBLAS
 * runs single-threaded, set once before its first use: its own threads would only spin against ours
 * (a product it ran on them left them spinning for a while afterwards, and calibration after such a
 * call ran at half speed). */
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single(void) { openblas_set_num_threads(1); }

static void sgemm_call(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    QS_ASSERT(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
              ldc <= INT_MAX);
    pthread_once(&blas_once, blas_single);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* A product with one row or one column is a matrix-vector product: OpenBLAS's sgemv streams the
 * matrix at up to 3x the rate of its sgemm kernels on such shapes (a classifier's 1280x1000 weight
 * at batch 1: 0.59 -> 0.19 ms). beta == 0 zeroes C first, so that old NaNs never leak in. */
static void sgemv_call(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    QS_ASSERT(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
              ldc <= INT_MAX);
    pthread_once(&blas_once, blas_single);
    int64_t n = M == 1 ? N : M, inc_c = M == 1 ? 1 : ldc;
    if (beta == 0.f)
        for (int64_t i = 0; i < n; i++)
            C[i * inc_c] = 0.f;
    if (M == 1)   /* C row = op(A) row · op(B): the matrix is B, [N, K] when transposed, else [K, N] */
        cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, (int)(trans_b ? N : K),
                    (int)(trans_b ? K : N), alpha, B, (int)ldb, A, trans_a ? (int)lda : 1, beta, C, 1);
    else          /* C column = op(A) · op(B) column: the matrix is A, [M, K] or [K, M] when transposed */
        cblas_sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, (int)(trans_a ? K : M),
                    (int)(trans_a ? M : K), alpha, A, (int)lda, B, trans_b ? 1 : (int)ldb, beta, C, (int)ldc);
}

void qs_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {   /* C = beta·C; BLAS implementations disagree on K = 0, so do it here */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
        return;
    }
    if (M == 1 || N == 1) {
        sgemv_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    double mnk = (double)M * (double)N * (double)K;
    int64_t block = M * K > 0 ? SGEMM_SMALL_MNK / (M * K) / 16 * 16 : 0;
    if (mnk <= SGEMM_SMALL_MNK || block < 64) {
        sgemm_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    for (int64_t j = 0; j < N; j += block)
        sgemm_call(trans_a, trans_b, M, N - j < block ? N - j : block, K, alpha, A, lda,
                   B + (trans_b ? j * ldb : j), ldb, beta, C + j, ldc);
}

typedef struct {
    int ta, tb, by_rows;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
} sgemm_job;

static void sgemm_block(void *arg, int64_t b0, int64_t b1, int worker)
{
    const sgemm_job *j = arg;
    if (j->by_rows)   /* rows b0..b1 of C: rows of op(A) */
        qs_sgemm(j->ta, j->tb, b1 - b0, j->N, j->K, j->alpha, j->A + (j->ta ? b0 : b0 * j->lda), j->lda, j->B,
                 j->ldb, j->beta, j->C + b0 * j->ldc, j->ldc);
    else              /* columns b0..b1 of C: columns of op(B) */
        qs_sgemm(j->ta, j->tb, j->M, b1 - b0, j->K, j->alpha, j->A, j->lda, j->B + (j->tb ? b0 * j->ldb : b0),
                 j->ldb, j->beta, j->C + b0, j->ldc);
}

/* below this many multiply-adds a product runs on one thread (about 25 µs of work; an OpenMP team
 * costs a few µs to start, where the pool's own workers cost tens) */
#define SGEMM_PAR_MACS (1 << 20)

void qs_sgemm_mt(qs_threadpool *tp, int nthreads, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (!tp || nthreads <= 1 || M * N * K < SGEMM_PAR_MACS || (M < 16 && N < 16)) {
        qs_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    sgemm_job j = { trans_a, trans_b, M >= N, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C };
    /* blocks of at least 16 rows/columns keep each thread's panel a useful GEMM size */
    qs_threadpool_for(tp, nthreads, j.by_rows ? M : N, 16, sgemm_block, &j);
}

void qs_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = trans_a ? A[k * lda + i] : A[i * lda + k];
                double b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            double old = beta == 0.f ? 0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * s + old);
        }
}

/* ---- geometry -------------------------------------------------------------------------------- */

void qs_conv_geom_set(qs_conv_geom *g, int nd, const int64_t *in_sp, const int64_t *out_sp,
                      const int64_t *kernel, const int64_t *stride, const int64_t *dil, const int64_t *pad,
                      const int64_t *pad_end)
{
    QS_ASSERT(nd >= 1 && nd <= QS_CONV_MAXD);
    g->nd = nd;
    int lead = 3 - nd;
    for (int i = 0; i < 3; i++) {
        int j = i - lead;   /* index into the op's arrays, < 0 for the size-1 leading dims */
        g->in[i] = j < 0 ? 1 : in_sp[j];
        g->out[i] = j < 0 ? 1 : out_sp[j];
        g->k[i] = j < 0 ? 1 : kernel[j];
        g->stride[i] = j < 0 || !stride ? 1 : stride[j];
        g->dil[i] = j < 0 || !dil ? 1 : dil[j];
        g->pad[i] = j < 0 || !pad ? 0 : pad[j];
        g->pad_end[i] = j < 0 || !pad_end ? 0 : pad_end[j];
    }
}

static int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

int qs_conv_geom_init(qs_kctx *c, int nd, const int64_t *in_sp, const int64_t *kernel, int ceil_mode,
                      int use_dil, qs_conv_geom *g)
{
    const qs_node *n = c->node;
    if (nd < 1 || nd > QS_CONV_MAXD)
        return qs_op_error(c, QS_EUNSUPPORTED, "%d spatial dims; only 1 to %d are supported", nd,
                           QS_CONV_MAXD);
    int64_t stride[QS_CONV_MAXD], dil[QS_CONV_MAXD], pb[QS_CONV_MAXD], pe[QS_CONV_MAXD], out[QS_CONV_MAXD];
    const int64_t *v;
    int cnt;
    for (int i = 0; i < nd; i++) {
        stride[i] = dil[i] = 1;
        pb[i] = pe[i] = 0;
        if (kernel[i] < 1)
            return qs_op_error(c, QS_EINVAL, "kernel size %lld on spatial dim %d must be positive",
                               (long long)kernel[i], i);
    }
    if ((cnt = qs_node_ints(n, "strides", &v)) > 0) {
        if (cnt != nd)
            return qs_op_error(c, QS_EINVAL, "strides has %d values, expected %d (one per spatial dim)", cnt, nd);
        for (int i = 0; i < nd; i++)
            if ((stride[i] = v[i]) < 1)
                return qs_op_error(c, QS_EINVAL, "strides[%d] = %lld must be positive", i, (long long)v[i]);
    }
    if (use_dil && (cnt = qs_node_ints(n, "dilations", &v)) > 0) {
        if (cnt != nd)
            return qs_op_error(c, QS_EINVAL, "dilations has %d values, expected %d (one per spatial dim)",
                               cnt, nd);
        for (int i = 0; i < nd; i++)
            if ((dil[i] = v[i]) < 1)
                return qs_op_error(c, QS_EINVAL, "dilations[%d] = %lld must be positive", i, (long long)v[i]);
    }
    const char *ap = qs_node_string(n, "auto_pad", "NOTSET");
    int mode;   /* 0 NOTSET, 1 SAME_UPPER, 2 SAME_LOWER, 3 VALID */
    if (!strcmp(ap, "NOTSET") || !ap[0])
        mode = 0;
    else if (!strcmp(ap, "SAME_UPPER"))
        mode = 1;
    else if (!strcmp(ap, "SAME_LOWER"))
        mode = 2;
    else if (!strcmp(ap, "VALID"))
        mode = 3;
    else
        return qs_op_error(c, QS_EINVAL, "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID", ap);
    if (mode == 0 && (cnt = qs_node_ints(n, "pads", &v)) > 0) {
        if (cnt != 2 * nd)
            return qs_op_error(c, QS_EINVAL, "pads has %d values, expected %d (begin and end per spatial dim)",
                               cnt, 2 * nd);
        for (int i = 0; i < nd; i++) {
            pb[i] = v[i];
            pe[i] = v[nd + i];
            if (pb[i] < 0 || pe[i] < 0)
                return qs_op_error(c, QS_EINVAL, "pads must not be negative (pads[%d] = %lld)",
                                   pb[i] < 0 ? i : nd + i, (long long)(pb[i] < 0 ? pb[i] : pe[i]));
        }
    }
    for (int i = 0; i < nd; i++) {
        int64_t ek = (kernel[i] - 1) * dil[i] + 1;   /* extent of the dilated window */
        if (mode == 1 || mode == 2) {
            out[i] = ceil_div(in_sp[i], stride[i]);
            int64_t total = (out[i] - 1) * stride[i] + ek - in_sp[i];
            if (total < 0)
                total = 0;
            pb[i] = mode == 1 ? total / 2 : total - total / 2;
            pe[i] = total - pb[i];
        } else {
            int64_t span = in_sp[i] + pb[i] + pe[i] - ek;
            if (span < 0)
                return qs_op_error(c, QS_ESHAPE,
                                   "window extent %lld (kernel %lld, dilation %lld) on spatial dim %d is larger "
                                   "than the padded input (%lld)", (long long)ek, (long long)kernel[i],
                                   (long long)dil[i], i, (long long)(in_sp[i] + pb[i] + pe[i]));
            out[i] = (ceil_mode ? ceil_div(span, stride[i]) : span / stride[i]) + 1;
            /* a last window that would start in the end padding is dropped */
            if (ceil_mode && (out[i] - 1) * stride[i] >= in_sp[i] + pb[i])
                out[i]--;
        }
        if (out[i] < 1)
            return qs_op_error(c, QS_ESHAPE, "output would be empty on spatial dim %d (input %lld)", i,
                               (long long)in_sp[i]);
    }
    qs_conv_geom_set(g, nd, in_sp, out, kernel, stride, dil, pb, pe);
    return 0;
}

/* ---- im2col / col2im --------------------------------------------------------------------------- */

/* [lo, hi): the outputs o in [0, O) whose tap o·s + off lands inside [0, I) */
static void valid_range(int64_t off, int64_t s, int64_t isz, int64_t osz, int64_t *lo, int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = isz - off <= 0 ? 0 : (isz - off + s - 1) / s;
    if (h > osz)
        h = osz;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

#define COLS_MAXK 64   /* kernel sizes up to this get their tap ranges worked out once per call */

typedef struct {
    const qs_conv_geom *g;
    const float *src;
    float *dst;
    /* per kernel column kw: outputs [wlo, whi) read inside the row; per kernel row kh: [hlo, hhi).
     * The same for every channel, and divisions are slow enough to matter here. */
    int64_t wlo[COLS_MAXK], whi[COLS_MAXK], hlo[COLS_MAXK], hhi[COLS_MAXK];
} cols_job;

static void tap_ranges(const qs_conv_geom *g, int64_t kh, int64_t kw, const cols_job *j, int64_t *lo,
                       int64_t *hi, int64_t *hlo, int64_t *hhi)
{
    if (kh < COLS_MAXK && kw < COLS_MAXK) {
        *lo = j->wlo[kw], *hi = j->whi[kw], *hlo = j->hlo[kh], *hhi = j->hhi[kh];
        return;
    }
    valid_range(kw * g->dil[2] - g->pad[2], g->stride[2], g->in[2], g->out[2], lo, hi);
    valid_range(kh * g->dil[1] - g->pad[1], g->stride[1], g->in[1], g->out[1], hlo, hhi);
}

/* One row of the column matrix: zeros for the taps in the padding, the input run between. Plain
 * loops: the rows are short (an output row), so libc calls would cost more than the copy. */
QS_HOT static void im2col_row(float *d, const float *xr, int64_t OW, int64_t lo, int64_t hi, int64_t sw,
                              int64_t offw)
{
    for (int64_t ow = 0; ow < lo; ow++)
        d[ow] = 0.f;
    if (sw == 1)
        for (int64_t ow = lo; ow < hi; ow++)
            d[ow] = xr[ow + offw];
    else
        for (int64_t ow = lo; ow < hi; ow++)
            d[ow] = xr[ow * sw + offw];
    for (int64_t ow = hi; ow < OW; ow++)
        d[ow] = 0.f;
}

QS_HOT static void im2col_range(void *arg, int64_t c0, int64_t c1, int worker)
{
    const cols_job *j = arg;
    const qs_conv_geom *g = j->g;
    const int64_t ID = g->in[0], IH = g->in[1], IW = g->in[2], OD = g->out[0], OH = g->out[1], OW = g->out[2];
    const int64_t ivol = ID * IH * IW, ovol = OD * OH * OW, kvol = qs_geom_kvol(g), sh = g->stride[1],
                  sw = g->stride[2];
    /* With unit strides and OW == IW (the usual "same" convolution) consecutive outputs of a tap read
     * consecutive inputs even across rows: the valid rows of a tap are one contiguous copy, after
     * which only the few columns that wrapped around a row edge are zeroed. */
    const int plane_copy = sh == 1 && sw == 1 && OW == IW;
    for (int64_t c = c0; c < c1; c++) {
        const float *xc = j->src + c * ivol;
        float *dst = j->dst + c * kvol * ovol;
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++)
                for (int64_t kw = 0; kw < g->k[2]; kw++, dst += ovol) {
                    int64_t offw = kw * g->dil[2] - g->pad[2], offh = kh * g->dil[1] - g->pad[1], lo, hi, hlo, hhi;
                    tap_ranges(g, kh, kw, j, &lo, &hi, &hlo, &hhi);
                    for (int64_t od = 0; od < OD; od++) {
                        int64_t id = od * g->stride[0] + kd * g->dil[0] - g->pad[0];
                        float *dp = dst + od * OH * OW;
                        if (id < 0 || id >= ID || hlo >= hhi || lo >= hi) {
                            memset(dp, 0, OH * OW * sizeof *dp);
                            continue;
                        }
                        const float *xp = xc + id * IH * IW;
                        if (plane_copy) {
                            int64_t first = hlo * OW + lo, last = (hhi - 1) * OW + hi;   /* dst [first, last) */
                            memset(dp, 0, first * sizeof *dp);
                            memcpy(dp + first, xp + (hlo + offh) * IW + lo + offw, (last - first) * sizeof *dp);
                            memset(dp + last, 0, (OH * OW - last) * sizeof *dp);
                            for (int64_t ow = 0; ow < lo; ow++)   /* a column or two, down the rows */
                                for (int64_t oh = hlo; oh < hhi; oh++)
                                    dp[oh * OW + ow] = 0.f;
                            for (int64_t ow = hi; ow < OW; ow++)
                                for (int64_t oh = hlo; oh < hhi; oh++)
                                    dp[oh * OW + ow] = 0.f;
                            continue;
                        }
                        memset(dp, 0, hlo * OW * sizeof *dp);
                        for (int64_t oh = hlo; oh < hhi; oh++)
                            im2col_row(dp + oh * OW, xp + (oh * sh + offh) * IW, OW, lo, hi, sw, offw);
                        memset(dp + hhi * OW, 0, (OH - hhi) * OW * sizeof *dp);
                    }
                }
    }
}

QS_HOT static void col2im_range(void *arg, int64_t c0, int64_t c1, int worker)
{
    const cols_job *j = arg;
    const qs_conv_geom *g = j->g;
    const int64_t ID = g->in[0], IH = g->in[1], IW = g->in[2], OD = g->out[0], OH = g->out[1], OW = g->out[2];
    const int64_t ivol = ID * IH * IW, ovol = OD * OH * OW, kvol = qs_geom_kvol(g), sw = g->stride[2];
    for (int64_t c = c0; c < c1; c++) {
        float *xc = j->dst + c * ivol;
        const float *src = j->src + c * kvol * ovol;
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++)
                for (int64_t kw = 0; kw < g->k[2]; kw++, src += ovol) {
                    int64_t offw = kw * g->dil[2] - g->pad[2], lo, hi, hlo, hhi;
                    tap_ranges(g, kh, kw, j, &lo, &hi, &hlo, &hhi);
                    for (int64_t od = 0; od < OD; od++) {
                        int64_t id = od * g->stride[0] + kd * g->dil[0] - g->pad[0];
                        if (id < 0 || id >= ID)
                            continue;
                        for (int64_t oh = 0; oh < OH; oh++) {
                            int64_t ih = oh * g->stride[1] + kh * g->dil[1] - g->pad[1];
                            if (ih < 0 || ih >= IH)
                                continue;
                            const float *s = src + (od * OH + oh) * OW;
                            float *xr = xc + (id * IH + ih) * IW;
                            if (sw == 1)
                                for (int64_t ow = lo; ow < hi; ow++)
                                    xr[ow + offw] += s[ow];
                            else
                                for (int64_t ow = lo; ow < hi; ow++)
                                    xr[ow * sw + offw] += s[ow];
                        }
                    }
                }
    }
}

/* Work below this many elements runs on one thread: thread start-up would cost more than it saves. */
#define PAR_MIN_WORK 65536

static void cols_run(qs_range_fn fn, const qs_conv_geom *g, int64_t ch, const float *src, float *dst,
                     qs_threadpool *tp, int nthreads)
{
    cols_job j = { g, src, dst, { 0 }, { 0 }, { 0 }, { 0 } };
    for (int64_t k = 0; k < g->k[2] && k < COLS_MAXK; k++)
        valid_range(k * g->dil[2] - g->pad[2], g->stride[2], g->in[2], g->out[2], &j.wlo[k], &j.whi[k]);
    for (int64_t k = 0; k < g->k[1] && k < COLS_MAXK; k++)
        valid_range(k * g->dil[1] - g->pad[1], g->stride[1], g->in[1], g->out[1], &j.hlo[k], &j.hhi[k]);
    int64_t per_ch = qs_geom_kvol(g) * qs_geom_outvol(g);
    int64_t min_chunk = per_ch >= PAR_MIN_WORK ? 1 : PAR_MIN_WORK / (per_ch ? per_ch : 1);
    qs_threadpool_for(tp, nthreads, ch, min_chunk, fn, &j);
}

void qs_im2col(const qs_conv_geom *g, int64_t ch, const float *x, float *col, qs_threadpool *tp, int nthreads)
{
    cols_run(im2col_range, g, ch, x, col, tp, nthreads);
}

void qs_col2im(const qs_conv_geom *g, int64_t ch, const float *col, float *x, qs_threadpool *tp, int nthreads)
{
    cols_run(col2im_range, g, ch, col, x, tp, nthreads);
}

/* The references address every element by its full index and test bounds per element. */
#define FOR_TAPS(g) \
    for (int64_t kd = 0; kd < (g)->k[0]; kd++) for (int64_t kh = 0; kh < (g)->k[1]; kh++) \
    for (int64_t kw = 0; kw < (g)->k[2]; kw++)
#define FOR_OUTS(g) \
    for (int64_t od = 0; od < (g)->out[0]; od++) for (int64_t oh = 0; oh < (g)->out[1]; oh++) \
    for (int64_t ow = 0; ow < (g)->out[2]; ow++)

/* input offset of tap (kd, kh, kw) of window (od, oh, ow), or -1 in the padding */
static int64_t tap_offset(const qs_conv_geom *g, int64_t od, int64_t oh, int64_t ow, int64_t kd, int64_t kh,
                          int64_t kw)
{
    int64_t id = od * g->stride[0] + kd * g->dil[0] - g->pad[0];
    int64_t ih = oh * g->stride[1] + kh * g->dil[1] - g->pad[1];
    int64_t iw = ow * g->stride[2] + kw * g->dil[2] - g->pad[2];
    if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1] || iw < 0 || iw >= g->in[2])
        return -1;
    return (id * g->in[1] + ih) * g->in[2] + iw;
}

void qs_im2col_ref(const qs_conv_geom *g, int64_t ch, const float *x, float *col)
{
    int64_t ivol = qs_geom_invol(g), ovol = qs_geom_outvol(g), kvol = qs_geom_kvol(g);
    for (int64_t c = 0; c < ch; c++)
        FOR_TAPS(g) {
            int64_t row = c * kvol + (kd * g->k[1] + kh) * g->k[2] + kw;
            FOR_OUTS(g) {
                int64_t p = (od * g->out[1] + oh) * g->out[2] + ow;
                int64_t off = tap_offset(g, od, oh, ow, kd, kh, kw);
                col[row * ovol + p] = off < 0 ? 0.f : x[c * ivol + off];
            }
        }
}

void qs_col2im_ref(const qs_conv_geom *g, int64_t ch, const float *col, float *x)
{
    int64_t ivol = qs_geom_invol(g), ovol = qs_geom_outvol(g), kvol = qs_geom_kvol(g);
    for (int64_t c = 0; c < ch; c++)
        FOR_TAPS(g) {
            int64_t row = c * kvol + (kd * g->k[1] + kh) * g->k[2] + kw;
            FOR_OUTS(g) {
                int64_t p = (od * g->out[1] + oh) * g->out[2] + ow;
                int64_t off = tap_offset(g, od, oh, ow, kd, kh, kw);
                if (off >= 0)
                    x[c * ivol + off] += col[row * ovol + p];
            }
        }
}

void qs_conv_ref(const qs_conv_geom *g, int64_t N, int64_t C, int64_t M, int64_t group, const float *x,
                 const float *w, const float *b, float *y)
{
    int64_t ivol = qs_geom_invol(g), ovol = qs_geom_outvol(g), kvol = qs_geom_kvol(g);
    int64_t Cg = C / group, Mg = M / group;
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            int64_t grp = m / Mg;
            FOR_OUTS(g) {
                double s = b ? b[m] : 0;
                for (int64_t c = 0; c < Cg; c++)
                    FOR_TAPS(g) {
                        int64_t off = tap_offset(g, od, oh, ow, kd, kh, kw);
                        if (off < 0)
                            continue;
                        double xv = x[(n * C + grp * Cg + c) * ivol + off];
                        double wv = w[(m * Cg + c) * kvol + (kd * g->k[1] + kh) * g->k[2] + kw];
                        s += xv * wv;
                    }
                y[(n * M + m) * ovol + (od * g->out[1] + oh) * g->out[2] + ow] = (float)s;
            }
        }
}
