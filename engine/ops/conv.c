/* Conv and ConvTranspose (1-D, 2-D, 3-D; float32), forward and backward.
 *
 * Conv picks one of three paths per node:
 *  - pointwise (1x1 kernel, stride 1, no padding): the input plane block [C/group, H·W] of one batch
 *    item already is the GEMM operand, so Y_g = W_g · X_g is one sgemm with no copy;
 *  - depthwise (one input channel per group, group > 1): direct loops, since a GEMM with K = kernel
 *    volume would spend its time packing. 1-D and 2-D take the fast path below, which works on 16
 *    channels at once; 3-D (rare) takes plain per-plane loops;
 *  - general: im2col into caller-owned scratch, then one sgemm per (batch item, group).
 * Batch items (or, depthwise, blocks of 16 channels of an item) are split across threads, each with
 * its own slice of scratch; with a batch of one, the work inside the item is split instead.
 *
 * Backward reuses the column buffer: dW_g += dY_g · colᵀ, then dcol = W_gᵀ · dY_g and col2im into
 * dX, with per-thread partial sums of dW and dB. ConvTranspose is the adjoint of Conv: its forward
 * is Conv's dX computation (sgemm then col2im), its backward Conv's forward (im2col then sgemm).
 *
 * Only shapes, never data, decide the path, so infer, scratch, forward and backward agree. Scratch
 * covers the backward's needs too when the context is in training mode; with less scratch than the
 * thread count wants, fewer threads run. */
#include "ops/kernels.h"

#include <math.h>
#include <string.h>

enum { PATH_GEMM, PATH_1X1, PATH_DW };

typedef struct conv_p {
    qs_conv_geom g;     /* Conv: in = X's spatial dims, out = Y's. ConvTranspose: in = Y's, out = X's */
    int64_t N, C, M, group, Cg, Mg, kvol;
    int64_t xvol, yvol; /* spatial volume of one X / Y plane */
    int path;
} conv_p;

static int need_f32(qs_kctx *c, int i, const char *what)
{
    if (c->in[i]->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "input %s is %s; only float32 is supported", what,
                           qs_dtype_name(c->in[i]->dtype));
    return 0;
}

/* Checks X, W, B shapes shared by Conv and ConvTranspose; fills N, C, group, nd and kernel. */
static int check_xwb(qs_kctx *c, conv_p *p, int transpose, int *nd, int64_t *kernel)
{
    char sx[128], sw[128];
    if (c->nin < 2 || !c->in[0] || !c->in[1])
        return qs_op_error(c, QS_EINVAL, "needs inputs X and W");
    const qs_tensor *X = c->in[0], *W = c->in[1], *B = c->nin > 2 ? c->in[2] : NULL;
    int rc;
    if ((rc = need_f32(c, 0, "X")) < 0 || (rc = need_f32(c, 1, "W")) < 0 || (B && (rc = need_f32(c, 2, "B")) < 0))
        return rc;
    qs_shape_str(X->ndim, X->shape, sx, sizeof sx);
    qs_shape_str(W->ndim, W->shape, sw, sizeof sw);
    if (X->ndim < 3)
        return qs_op_error(c, QS_ESHAPE, "input X has shape %s; expected [N, C, D1, ...] with at least one "
                           "spatial dim", sx);
    if (W->ndim != X->ndim)
        return qs_op_error(c, QS_ESHAPE, "W has shape %s; expected rank %d like X %s", sw, X->ndim, sx);
    *nd = X->ndim - 2;
    if (*nd > QS_CONV_MAXD)
        return qs_op_error(c, QS_EUNSUPPORTED, "%d spatial dims (X %s); only 1 to %d are supported", *nd, sx,
                           QS_CONV_MAXD);
    p->group = qs_node_int(c->node, "group", 1);
    if (p->group < 1)
        return qs_op_error(c, QS_EINVAL, "group = %lld must be positive", (long long)p->group);
    p->N = X->shape[0];
    p->C = X->shape[1];
    if (p->C % p->group)
        return qs_op_error(c, QS_ESHAPE, "input has %lld channels, which group = %lld does not divide (X %s)",
                           (long long)p->C, (long long)p->group, sx);
    p->Cg = p->C / p->group;
    if (!transpose) {
        if (W->shape[1] != p->Cg) {
            if (p->group == 1)
                return qs_op_error(c, QS_ESHAPE, "input has %lld channels but W expects %lld (W shape %s)",
                                   (long long)p->C, (long long)W->shape[1], sw);
            return qs_op_error(c, QS_ESHAPE, "input has %lld channels but W expects %lld (W shape %s, group %lld)",
                               (long long)p->C, (long long)(W->shape[1] * p->group), sw, (long long)p->group);
        }
        p->M = W->shape[0];
        if (p->M % p->group || p->M == 0)
            return qs_op_error(c, QS_ESHAPE, "W has %lld output channels, which group = %lld does not divide "
                               "(W shape %s)", (long long)p->M, (long long)p->group, sw);
    } else {
        if (W->shape[0] != p->C)
            return qs_op_error(c, QS_ESHAPE, "input has %lld channels but W expects %lld (W shape %s)",
                               (long long)p->C, (long long)W->shape[0], sw);
        p->M = W->shape[1] * p->group;
        if (p->M == 0)
            return qs_op_error(c, QS_ESHAPE, "W has no output channels (W shape %s)", sw);
    }
    p->Mg = p->M / p->group;
    const int64_t *ks;
    int nks = qs_node_ints(c->node, "kernel_shape", &ks);
    if (nks && nks != *nd)
        return qs_op_error(c, QS_EINVAL, "kernel_shape has %d values, expected %d (one per spatial dim)", nks, *nd);
    for (int i = 0; i < *nd; i++) {
        kernel[i] = W->shape[2 + i];
        if (nks && ks[i] != kernel[i])
            return qs_op_error(c, QS_ESHAPE, "kernel_shape[%d] = %lld but W has shape %s", i, (long long)ks[i], sw);
    }
    if (B && (B->ndim != 1 || B->shape[0] != p->M)) {
        char sb[128];
        return qs_op_error(c, QS_ESHAPE, "bias B has shape %s; expected [%lld] (one per output channel)",
                           qs_shape_str(B->ndim, B->shape, sb, sizeof sb), (long long)p->M);
    }
    return 0;
}

static int conv_params(qs_kctx *c, conv_p *p)
{
    int nd, rc;
    int64_t kernel[QS_CONV_MAXD];
    memset(p, 0, sizeof *p);
    if ((rc = check_xwb(c, p, 0, &nd, kernel)) < 0)
        return rc;
    if ((rc = qs_conv_geom_init(c, nd, c->in[0]->shape + 2, kernel, 0, 1, &p->g)) < 0)
        return rc;
    p->kvol = qs_geom_kvol(&p->g);
    p->xvol = qs_geom_invol(&p->g);
    p->yvol = qs_geom_outvol(&p->g);
    const qs_conv_geom *g = &p->g;
    int unit = 1;   /* stride 1 and no padding on every dim */
    for (int i = 0; i < 3; i++)
        unit &= g->stride[i] == 1 && g->pad[i] == 0 && g->pad_end[i] == 0;
    if (p->Cg == 1 && p->group > 1)
        p->path = PATH_DW;
    else if (p->kvol == 1 && unit)
        p->path = PATH_1X1;
    else
        p->path = PATH_GEMM;
    return 0;
}

static int conv_infer(qs_kctx *c)
{
    conv_p p;
    int rc = conv_params(c, &p);
    if (rc < 0)
        return rc;
    int64_t shape[2 + QS_CONV_MAXD] = { p.N, p.M };
    for (int i = 0; i < p.g.nd; i++)
        shape[2 + i] = p.g.out[3 - p.g.nd + i];
    qs_set_shape(c->out[0], QS_F32, 2 + p.g.nd, shape);
    return 0;
}

/* The fast depthwise path (1-D and 2-D) works on blocks of 16 output channels of one batch item,
 * interleaved so that one vector holds one position's 16 channels: the 16 input planes are
 * transposed into a zero-padded buffer [PH][PW][16]; each output position is then the sum over taps
 * of w_tap ⊙ buffer[tap's position] (vector multiply-adds with no bounds tests: the padding is
 * zeros in the buffer); and the [OH·OW][16] result is transposed back into the 16 output planes.
 * Vectors run the full length of every loop however small the planes are (MobileNet's go down to
 * 4x4, where a loop along a row would be mostly loop overhead), and the transposes are 16x16
 * register shuffles. */
#define DW_MAXTAPS 64   /* larger kernels take the generic loops */

typedef struct {
    int64_t PH, PW;          /* padded input plane */
    int64_t buf, out;        /* floats of the interleaved input buffer and output buffer */
    int64_t tap[DW_MAXTAPS]; /* tap t of the window at buffer position q reads (q·16 + tap[t]) */
} dw_blk;

static int dw_fast(const qs_conv_geom *g) { return g->nd <= 2 && qs_geom_kvol(g) <= DW_MAXTAPS; }

static void dw_blk_geom(const qs_conv_geom *g, dw_blk *d)
{
    int64_t need_h = (g->out[1] - 1) * g->stride[1] + (g->k[1] - 1) * g->dil[1] + 1;
    int64_t need_w = (g->out[2] - 1) * g->stride[2] + (g->k[2] - 1) * g->dil[2] + 1;
    d->PH = need_h > g->pad[1] + g->in[1] ? need_h : g->pad[1] + g->in[1];
    d->PW = need_w > g->pad[2] + g->in[2] ? need_w : g->pad[2] + g->in[2];
    d->buf = d->PH * d->PW * 16;
    d->out = g->out[1] * g->out[2] * 16;
    for (int64_t ky = 0, t = 0; ky < g->k[1]; ky++)
        for (int64_t kx = 0; kx < g->k[2]; kx++, t++)
            d->tap[t] = (ky * g->dil[1] * d->PW + kx * g->dil[2]) * 16;
}

/* batch items run in parallel, one per worker, each with its own column buffer */
static int item_workers(const qs_kctx *c, const conv_p *p)
{
    int64_t t = c->nthreads > 1 ? c->nthreads : 1;
    return (int)(t < p->N ? t : p->N > 0 ? p->N : 1);
}

/* floats of one depthwise backward worker's scratch: X, dY and dX interleaved, partial dW and dB */
static int64_t dwb_slice(const conv_p *p, const dw_blk *d) { return 2 * d->buf + d->out + p->M * p->kvol + p->M; }

/* depthwise: (batch item, block of 16 channels) pairs run in parallel */
static int64_t dw_blocks(const conv_p *p) { return p->N * ((p->M + 15) / 16); }

static int block_workers(const qs_kctx *c, const conv_p *p)
{
    int64_t t = c->nthreads > 1 ? c->nthreads : 1, blocks = dw_blocks(p);
    return (int)(t < blocks ? t : blocks > 0 ? blocks : 1);
}

static void convb_slice(const conv_p *p, int64_t *col_floats, int64_t *slice_floats);

static size_t conv_scratch(const qs_kctx *c)
{
    conv_p p;
    if (conv_params((qs_kctx *)c, &p) < 0 || (p.path == PATH_1X1 && !c->training && !c->din))
        return 0;
    if (p.path == PATH_DW) {
        if (!dw_fast(&p.g))
            return 0;
        dw_blk d;
        dw_blk_geom(&p.g, &d);
        size_t fwd = (size_t)block_workers(c, &p) * (size_t)(d.buf + d.out) * sizeof(float);
        if ((!c->training && !c->din) || p.Mg != 1)
            return fwd;
        size_t bwd = (size_t)block_workers(c, &p) * (size_t)dwb_slice(&p, &d) * sizeof(float);
        return bwd > fwd ? bwd : fwd;
    }
    size_t fwd = (size_t)item_workers(c, &p) * (size_t)(p.Cg * p.kvol * p.yvol) * sizeof(float);
    if (!c->training && !c->din)
        return fwd;
    int64_t col_floats, slice_floats;   /* backward: partial dW and dB per worker too */
    convb_slice(&p, &col_floats, &slice_floats);
    size_t bwd = (size_t)item_workers(c, &p) * (size_t)slice_floats * sizeof(float);
    return bwd > fwd ? bwd : fwd;
}

/* Scratch holds `slices` equal slices of slice_bytes; returns how many fit (at least one needed). */
static int scratch_slices(qs_kctx *c, size_t slice_bytes, int slices, int *fit)
{
    *fit = slices;
    if (!slice_bytes)
        return 0;
    if (!c->scratch || c->scratch_size < slice_bytes)
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes given, %zu needed", c->scratch_size, slice_bytes);
    if ((size_t)slices > c->scratch_size / slice_bytes)
        *fit = (int)(c->scratch_size / slice_bytes);
    return 0;
}

/* the executor's fused activation, if any (see qs_kctx) */
typedef struct {
    int on;
    float lo, hi;
    const float *res;   /* the fused residual, laid out like Y (Conv only), or NULL */
} clamp_t;

static clamp_t ctx_clamp(const qs_kctx *c)
{
    int inf = !c->training;
    return (clamp_t){ c->fused_act != 0 && inf, c->act_min, c->act_max,
                      inf && c->residual ? qs_f32(c->residual) : NULL };
}

/* One output plane: + bias *b (b may be NULL) + residual plane r (NULL: none), then the fused clamp,
 * in the unfused order (bias, then the Add, then the clamp) and in one pass. */
static void plane_epilogue(float *y, const float *b, const float *r, int64_t vol, clamp_t cl)
{
    float bias = b ? *b : 0.f;
    if (r)
        qs_vec_bias_res_clamp(vol, bias, r, cl.on ? cl.lo : -INFINITY, cl.on ? cl.hi : INFINITY, y);
    else if (cl.on)
        qs_vec_bias_clamp(vol, bias, cl.lo, cl.hi, y);
    else if (b)
        qs_vec_add(vol, bias, y);
}

/* plane_epilogue over items n0 .. n0 + N − 1, y pointing at item n0 (the residual is indexed from the
 * start of the batch) */
static void add_bias_at(float *y, const float *b, int64_t n0, int64_t N, int64_t M, int64_t vol, clamp_t cl)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            const float *r = cl.res ? cl.res + ((n0 + n) * M + m) * vol : NULL;
            plane_epilogue(y + (n * M + m) * vol, b ? b + m : NULL, r, vol, cl);
        }
}

static void add_bias(float *y, const float *b, int64_t N, int64_t M, int64_t vol, clamp_t cl)
{
    add_bias_at(y, b, 0, N, M, vol, cl);
}

/* db[m] = Σ_{n, i} dy[n, m, i] */
static void bias_grad(float *db, const float *dy, int64_t N, int64_t M, int64_t vol)
{
    for (int64_t m = 0; m < M; m++) {
        double s = 0;
        for (int64_t n = 0; n < N; n++) {
            const float *r = dy + (n * M + m) * vol;
            float part = 0;
            for (int64_t i = 0; i < vol; i++)
                part += r[i];
            s += part;
        }
        db[m] = (float)s;
    }
}

/* ---- depthwise: direct loops, one (item, output channel) plane at a time -------------------------- */

/* For each output row (od, oh), the kernel taps (kd, kh) that land in the input give one input row;
 * each kw then adds w·x over the run of outputs whose tap is inside that row. */
#define DW_ROWS(g, ...) do { \
    const int64_t OH_ = (g)->out[1], OW_ = (g)->out[2], IH_ = (g)->in[1], IW_ = (g)->in[2]; \
    for (int64_t od = 0; od < (g)->out[0]; od++) \
        for (int64_t oh = 0; oh < OH_; oh++) \
            for (int64_t kd = 0; kd < (g)->k[0]; kd++) { \
                int64_t id = od * (g)->stride[0] + kd * (g)->dil[0] - (g)->pad[0]; \
                if (id < 0 || id >= (g)->in[0]) continue; \
                for (int64_t kh = 0; kh < (g)->k[1]; kh++) { \
                    int64_t ih = oh * (g)->stride[1] + kh * (g)->dil[1] - (g)->pad[1]; \
                    if (ih < 0 || ih >= IH_) continue; \
                    int64_t yrow = (od * OH_ + oh) * OW_, xrow = (id * IH_ + ih) * IW_; \
                    int64_t wrow = (kd * (g)->k[1] + kh) * (g)->k[2]; \
                    for (int64_t kw = 0; kw < (g)->k[2]; kw++) { \
                        int64_t offw = kw * (g)->dil[2] - (g)->pad[2], lo, hi; \
                        dw_range(offw, (g)->stride[2], IW_, OW_, &lo, &hi); \
                        __VA_ARGS__ \
                    } \
                } \
            } \
} while (0)

static inline void dw_range(int64_t off, int64_t s, int64_t isz, int64_t osz, int64_t *lo, int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = isz - off <= 0 ? 0 : (isz - off + s - 1) / s;
    *hi = h > osz ? osz : h;
    *lo = l > *hi ? *hi : l;
}

static void dw_plane_forward(const qs_conv_geom *g, const float *x, const float *w, float bias, float *y)
{
    int64_t ovol = qs_geom_outvol(g), sw = g->stride[2];
    for (int64_t i = 0; i < ovol; i++)
        y[i] = bias;
    DW_ROWS(g, {
        float wv = w[wrow + kw];
        float *yr = y + yrow;
        const float *xr = x + xrow;
        if (sw == 1)
            for (int64_t ow = lo; ow < hi; ow++)
                yr[ow] += wv * xr[ow + offw];
        else
            for (int64_t ow = lo; ow < hi; ow++)
                yr[ow] += wv * xr[ow * sw + offw];
    });
}

/* out[i] = bias + Σ_t w[t]·src[t][i] for i < n: 16 outputs at a time stay in registers across all
 * taps (one store per output instead of one per tap). A source may be out itself: each block is
 * read before it is written. */
/* 16 floats as one value: a zmm register in the AVX-512 build, two ymm or four xmm in the others.
 * v16u is the same with 4-byte alignment, for loads and stores at any float address. */
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int v16i __attribute__((vector_size(64)));

/* r[i][j] ↔ r[j][i]: at distance d = 8, 4, 2, 1, rows i and i + d swap their off-diagonal d-blocks */
#if defined(__GNUC__) && !defined(__clang__)
static inline void transpose16(v16 r[16])
{
    static const v16i lo8 = { 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23 };
    static const v16i hi8 = { 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31 };
    static const v16i lo4 = { 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27 };
    static const v16i hi4 = { 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31 };
    static const v16i lo2 = { 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29 };
    static const v16i hi2 = { 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31 };
    static const v16i lo1 = { 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30 };
    static const v16i hi1 = { 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31 };
    const v16i *lo[4] = { &lo8, &lo4, &lo2, &lo1 }, *hi[4] = { &hi8, &hi4, &hi2, &hi1 };
    for (int s = 0, d = 8; s < 4; s++, d >>= 1)
        for (int i = 0; i < 16; i++)
            if (!(i & d)) {
                v16 a = r[i], b = r[i + d];
                r[i] = __builtin_shuffle(a, b, *lo[s]);
                r[i + d] = __builtin_shuffle(a, b, *hi[s]);
            }
}
#else   /* compilers without GCC's __builtin_shuffle: element by element */
static inline void transpose16(v16 r[16])
{
    for (int i = 0; i < 16; i++)
        for (int j = i + 1; j < 16; j++) {
            float t = r[i][j];
            r[i][j] = r[j][i];
            r[j][i] = t;
        }
}
#endif

/* 16 planes (xp[l], rows of IW) → buf[((ih + pt)·PW + iw + pl)·16 + l], the rest of buf zero */
static inline void dw_interleave_in(const float *const *xp, int64_t IH, int64_t IW, int64_t pt, int64_t pl,
                                    int64_t PW, int64_t nbuf, float *buf)
{
    for (int64_t i = 0; i < nbuf; i += 16)
        *(v16u *)(buf + i) = (v16){ 0 };
    int64_t q = 0, ih = 0, iw = 0;
    const int64_t hw = IH * IW;
    for (; q + 16 <= hw; q += 16) {
        v16 r[16];
        for (int l = 0; l < 16; l++)
            r[l] = *(const v16u *)(xp[l] + q);
        transpose16(r);
        for (int j = 0; j < 16; j++) {
            *(v16u *)(buf + ((ih + pt) * PW + iw + pl) * 16) = r[j];
            if (++iw == IW) {
                iw = 0;
                ih++;
            }
        }
    }
    for (; q < hw; q++) {
        float *dst = buf + ((ih + pt) * PW + iw + pl) * 16;
        for (int l = 0; l < 16; l++)
            dst[l] = xp[l][q];
        if (++iw == IW) {
            iw = 0;
            ih++;
        }
    }
}

/* The inverse: planes yp[l] (the first `lanes` of them) ← buf at the same positions */
static inline void dw_deinterleave(const float *buf, int64_t IH, int64_t IW, int64_t pt, int64_t pl, int64_t PW,
                                   float *const *yp, int lanes)
{
    int64_t q = 0, ih = 0, iw = 0;
    const int64_t hw = IH * IW;
    for (; q + 16 <= hw; q += 16) {
        v16 r[16];
        for (int j = 0; j < 16; j++) {
            r[j] = *(const v16u *)(buf + ((ih + pt) * PW + iw + pl) * 16);
            if (++iw == IW) {
                iw = 0;
                ih++;
            }
        }
        transpose16(r);
        for (int l = 0; l < lanes; l++)
            *(v16u *)(yp[l] + q) = r[l];
    }
    for (; q < hw; q++) {
        const float *src = buf + ((ih + pt) * PW + iw + pl) * 16;
        for (int l = 0; l < lanes; l++)
            yp[l][q] = src[l];
        if (++iw == IW) {
            iw = 0;
            ih++;
        }
    }
}

/* v = max(lo, min(v, hi)) lane by lane, as the scalar clamp does it (a NaN passes through); a
 * macro, since a function passing vectors would change the ABI between the target clones */
#define CLAMP16(v, lo, hi)                                                \
    do {                                                                  \
        v16i below_ = (v) < (lo), above_ = (v) > (hi);                    \
        (v) = (v16)(((v16i)(lo) & below_) | ((v16i)(v) & ~below_));       \
        (v) = (v16)(((v16i)(hi) & above_) | ((v16i)(v) & ~above_));       \
    } while (0)

/* One block: output channels m0 .. m0 + 15 (fewer at the end) of batch item n; the fused clamp
 * (cl.on, and no residual to add first) is applied in registers. */
QS_HOT static void dw_block(const conv_p *p, const dw_blk *d, const float *x, const float *w, const float *b,
                            float *y, int64_t n, int64_t m0, float *restrict buf, float *restrict out, clamp_t cl)
{
    const int clamp = cl.on && !cl.res;
    const v16 lo = (v16){ 0 } + (clamp ? cl.lo : -INFINITY), hi = (v16){ 0 } + (clamp ? cl.hi : INFINITY);
    const qs_conv_geom *g = &p->g;
    const int64_t IH = g->in[1], IW = g->in[2], OH = g->out[1], OW = g->out[2], PW = d->PW;
    const int64_t sh = g->stride[1], sw = g->stride[2], ntaps = qs_geom_kvol(g);
    const int lanes = p->M - m0 < 16 ? (int)(p->M - m0) : 16;
    const float *xp[16];
    float *yp[16];
    v16 wt[DW_MAXTAPS], bias = { 0 };
    for (int l = 0; l < 16; l++) {
        int64_t m = m0 + (l < lanes ? l : 0);
        xp[l] = x + (n * p->C + m / p->Mg) * p->xvol;   /* a spare lane repeats lane 0; never stored */
        yp[l] = y + (n * p->M + m) * p->yvol;
        bias[l] = l < lanes && b ? b[m] : 0.f;
        for (int64_t t = 0; t < ntaps; t++)
            wt[t][l] = l < lanes ? w[m * ntaps + t] : 0.f;
    }
    dw_interleave_in(xp, IH, IW, g->pad[1], g->pad[2], PW, d->buf, buf);
    /* every output position: bias + Σ taps, four positions at a time so that four independent sums
     * hide the latency of the additions */
    const int64_t *tap = d->tap, step = sw * 16;
    for (int64_t oh = 0; oh < OH; oh++) {
        int64_t ow = 0;
        for (; OW >= 4 && ow < OW; ow += 4) {
            if (ow + 4 > OW)   /* the last block overlaps the one before: recomputing is cheaper
                                * than a loop of single positions */
                ow = OW - 4;
            const float *s0 = buf + (oh * sh * PW + ow * sw) * 16;
            v16 a0 = bias, a1 = bias, a2 = bias, a3 = bias;
            for (int64_t t = 0; t < ntaps; t++) {
                const float *st = s0 + tap[t];
                v16 wv = wt[t];
                a0 += wv * *(const v16u *)st;
                a1 += wv * *(const v16u *)(st + step);
                a2 += wv * *(const v16u *)(st + 2 * step);
                a3 += wv * *(const v16u *)(st + 3 * step);
            }
            float *o = out + (oh * OW + ow) * 16;
            if (clamp) {
                CLAMP16(a0, lo, hi);
                CLAMP16(a1, lo, hi);
                CLAMP16(a2, lo, hi);
                CLAMP16(a3, lo, hi);
            }
            *(v16u *)o = a0;
            *(v16u *)(o + 16) = a1;
            *(v16u *)(o + 32) = a2;
            *(v16u *)(o + 48) = a3;
        }
        for (; ow < OW; ow++) {
            const float *s0 = buf + (oh * sh * PW + ow * sw) * 16;
            v16 acc = bias;
            for (int64_t t = 0; t < ntaps; t++)
                acc += wt[t] * *(const v16u *)(s0 + tap[t]);
            if (clamp)
                CLAMP16(acc, lo, hi);
            *(v16u *)(out + (oh * OW + ow) * 16) = acc;
        }
    }
    /* interleaved output → output planes */
    dw_deinterleave(out, OH, OW, 0, 0, OW, yp, lanes);
}

/* Backward of one block, one input channel per output channel (Mg = 1): with X and dY interleaved,
 * for every output position q and tap t, dW_t += dY_q ⊙ X_{q+t} and dX_{q+t} += W_t ⊙ dY_q (into an
 * interleaved padded buffer whose interior becomes the dX planes); dB += dY_q. dW and dB add into
 * the worker's partial sums, whose lanes are output channels. */
QS_HOT static void dw_block_backward(const conv_p *p, const dw_blk *d, const float *x, const float *w,
                                     const float *dy, float *dx, int64_t n, int64_t m0, float *restrict buf,
                                     float *restrict dyb, float *restrict dxb, float *dwpart, float *dbpart)
{
    const qs_conv_geom *g = &p->g;
    const int64_t IH = g->in[1], IW = g->in[2], OH = g->out[1], OW = g->out[2], PW = d->PW;
    const int64_t sh = g->stride[1], sw = g->stride[2], ntaps = qs_geom_kvol(g);
    const int lanes = p->M - m0 < 16 ? (int)(p->M - m0) : 16;
    const float *xp[16], *dyp[16];
    float *dxp[16];
    v16 wt[DW_MAXTAPS], gw[DW_MAXTAPS], gb = { 0 };
    for (int l = 0; l < 16; l++) {
        int64_t m = m0 + (l < lanes ? l : 0);
        xp[l] = x + (n * p->C + m) * p->xvol;
        dyp[l] = dy + (n * p->M + m) * p->yvol;
        dxp[l] = dx ? dx + (n * p->C + m) * p->xvol : NULL;
        for (int64_t t = 0; t < ntaps; t++) {
            wt[t][l] = l < lanes ? w[m * ntaps + t] : 0.f;
            gw[t][l] = 0.f;
        }
    }
    dw_interleave_in(xp, IH, IW, g->pad[1], g->pad[2], PW, d->buf, buf);
    dw_interleave_in(dyp, OH, OW, 0, 0, OW, d->out, dyb);
    if (dx)
        for (int64_t i = 0; i < d->buf; i += 16)
            *(v16u *)(dxb + i) = (v16){ 0 };
    const int64_t *tap = d->tap;
    for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
            v16 gy = *(const v16u *)(dyb + (oh * OW + ow) * 16);
            int64_t base = (oh * sh * PW + ow * sw) * 16;
            gb += gy;
            for (int64_t t = 0; t < ntaps; t++)
                gw[t] += gy * *(const v16u *)(buf + base + tap[t]);
            if (dx)
                for (int64_t t = 0; t < ntaps; t++)
                    *(v16u *)(dxb + base + tap[t]) += wt[t] * gy;
        }
    for (int l = 0; l < lanes; l++) {
        for (int64_t t = 0; t < ntaps; t++)
            dwpart[(m0 + l) * ntaps + t] += gw[t][l];
        dbpart[m0 + l] += gb[l];
    }
    if (dx)
        dw_deinterleave(dxb, IH, IW, g->pad[1], g->pad[2], PW, dxp, lanes);
}

typedef struct {
    const conv_p *p;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw, *db;
    float *scratch;        /* fast path: per worker, the interleaved input and output buffers */
    dw_blk blk;
    clamp_t clamp;
} dw_job;

static void dw_forward_range(void *arg, int64_t begin, int64_t end, int worker)
{
    const dw_job *j = arg;
    const conv_p *p = j->p;
    if (j->scratch) {
        int64_t nblk = (p->M + 15) / 16;
        float *buf = j->scratch + worker * (j->blk.buf + j->blk.out);
        for (int64_t blk = begin; blk < end; blk++) {   /* blk = n·nblk + channel block */
            int64_t n = blk / nblk, m0 = blk % nblk * 16;
            dw_block(p, &j->blk, j->x, j->w, j->b, j->y, n, m0, buf, buf + j->blk.buf, j->clamp);
            for (int64_t m = m0; j->clamp.res && m < m0 + 16 && m < p->M; m++) {   /* else clamped already */
                int64_t off = (n * p->M + m) * p->yvol;
                plane_epilogue(j->y + off, NULL, j->clamp.res + off, p->yvol, j->clamp);
            }
        }
        return;
    }
    for (int64_t plane = begin; plane < end; plane++) {   /* plane = n·M + m */
        int64_t n = plane / p->M, m = plane % p->M, cin = m / p->Mg;
        dw_plane_forward(&p->g, j->x + (n * p->C + cin) * p->xvol, j->w + m * p->kvol, j->b ? j->b[m] : 0.f,
                         j->y + plane * p->yvol);
        plane_epilogue(j->y + plane * p->yvol, NULL, j->clamp.res ? j->clamp.res + plane * p->yvol : NULL,
                       p->yvol, j->clamp);
    }
}

static void dw_backward_block_range(void *arg, int64_t begin, int64_t end, int worker)
{
    const dw_job *j = arg;
    const conv_p *p = j->p;
    int64_t nblk = (p->M + 15) / 16;
    float *buf = j->scratch + worker * dwb_slice(p, &j->blk), *dyb = buf + j->blk.buf, *dxb = dyb + j->blk.out;
    float *dwpart = dxb + j->blk.buf, *dbpart = dwpart + p->M * p->kvol;
    for (int64_t blk = begin; blk < end; blk++)
        dw_block_backward(p, &j->blk, j->x, j->w, j->dy, j->dx, blk / nblk, blk % nblk * 16, buf, dyb, dxb, dwpart,
                          dbpart);
}

/* Backward per input channel (group) cin: dX[:, cin] and dW/dB of the group's output channels are
 * written only by this chunk, so chunks never race. */
static void dw_backward_range(void *arg, int64_t begin, int64_t end, int worker)
{
    const dw_job *j = arg;
    const conv_p *p = j->p;
    const qs_conv_geom *g = &p->g;
    int64_t sw = g->stride[2];
    for (int64_t cin = begin; cin < end; cin++) {
        if (j->dx)
            for (int64_t n = 0; n < p->N; n++)
                memset(j->dx + (n * p->C + cin) * p->xvol, 0, p->xvol * sizeof(float));
        for (int64_t m = cin * p->Mg; m < (cin + 1) * p->Mg; m++) {
            const float *w = j->w + m * p->kvol;
            float *dw = j->dw ? j->dw + m * p->kvol : NULL;
            if (dw)
                memset(dw, 0, p->kvol * sizeof(float));
            for (int64_t n = 0; n < p->N; n++) {
                const float *x = j->x + (n * p->C + cin) * p->xvol, *dy = j->dy + (n * p->M + m) * p->yvol;
                float *dx = j->dx ? j->dx + (n * p->C + cin) * p->xvol : NULL;
                DW_ROWS(g, {
                    const float *dyr = dy + yrow;
                    if (dx) {
                        float wv = w[wrow + kw], *dxr = dx + xrow;
                        for (int64_t ow = lo; ow < hi; ow++)
                            dxr[ow * sw + offw] += wv * dyr[ow];
                    }
                    if (dw) {
                        const float *xr = x + xrow;
                        float s = 0;
                        for (int64_t ow = lo; ow < hi; ow++)
                            s += dyr[ow] * xr[ow * sw + offw];
                        dw[wrow + kw] += s;
                    }
                });
            }
            if (j->db) {
                double s = 0;
                for (int64_t n = 0; n < p->N; n++) {
                    const float *dy = j->dy + (n * p->M + m) * p->yvol;
                    float part = 0;
                    for (int64_t i = 0; i < p->yvol; i++)
                        part += dy[i];
                    s += part;
                }
                j->db[m] = (float)s;
            }
        }
    }
}

/* ---- Conv forward / backward ------------------------------------------------------------------------ */

typedef struct {
    const conv_p *p;
    const float *x, *w, *b;
    float *y, *col;
    int64_t col_floats;   /* one worker's column buffer */
    clamp_t clamp;
} conv_job;

/* One batch item: per group, Y_g = W_g · col(X_g) (col = X_g itself on the 1x1 path), then bias. */
static void conv_item(const conv_job *j, int64_t n, float *col, qs_threadpool *tp, int nthreads)
{
    const conv_p *p = j->p;
    int64_t K = p->Cg * p->kvol;
    for (int64_t grp = 0; grp < p->group; grp++) {
        const float *xg = j->x + (n * p->C + grp * p->Cg) * p->xvol, *wg = j->w + grp * p->Mg * K, *bm = xg;
        float *yg = j->y + (n * p->M + grp * p->Mg) * p->yvol;
        if (p->path == PATH_GEMM) {
            qs_im2col(&p->g, p->Cg, xg, col, tp, nthreads);
            bm = col;
        }
        qs_sgemm_mt(tp, nthreads, 0, 0, p->Mg, p->yvol, K, 1.f, wg, K, bm, p->yvol, 0.f, yg, p->yvol);
    }
    add_bias_at(j->y + n * p->M * p->yvol, j->b, n, 1, p->M, p->yvol, j->clamp);
}

static void conv_items_range(void *arg, int64_t n0, int64_t n1, int worker)
{
    const conv_job *j = arg;
    for (int64_t n = n0; n < n1; n++)
        conv_item(j, n, j->col + worker * j->col_floats, NULL, 1);
}

static int conv_forward(qs_kctx *c)
{
    conv_p p;
    int rc = conv_params(c, &p), workers = 1;
    if (rc < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]);
    const float *b = c->nin > 2 && c->in[2] ? qs_f32(c->in[2]) : NULL;
    float *y = qs_f32(c->out[0]);
    if (p.path == PATH_DW) {
        dw_job j = { .p = &p, .x = x, .w = w, .b = b, .y = y, .clamp = ctx_clamp(c) };
        if (dw_fast(&p.g)) {
            int nt = block_workers(c, &p);
            dw_blk_geom(&p.g, &j.blk);
            if ((rc = scratch_slices(c, (j.blk.buf + j.blk.out) * sizeof(float), nt, &nt)) < 0)
                return rc;
            j.scratch = c->scratch;
            int64_t work = 16 * p.yvol * p.kvol;
            qs_threadpool_for(c->pool, nt, dw_blocks(&p), work >= 65536 ? 1 : 65536 / work, dw_forward_range, &j);
            return 0;
        }
        int64_t work = p.yvol * p.kvol;
        qs_threadpool_for(c->pool, c->nthreads, p.N * p.M, work >= 16384 ? 1 : 16384 / (work ? work : 1), dw_forward_range, &j);
        return 0;
    }
    int64_t col_floats = p.path == PATH_GEMM ? p.Cg * p.kvol * p.yvol : 0;
    if ((rc = scratch_slices(c, col_floats * sizeof(float), item_workers(c, &p), &workers)) < 0)
        return rc;
    conv_job j = { &p, x, w, b, y, c->scratch, col_floats, ctx_clamp(c) };
    if (workers > 1) {   /* the batch is the best split: whole items, no synchronisation */
        qs_threadpool_for(c->pool, workers, p.N, 1, conv_items_range, &j);
    } else {
        for (int64_t n = 0; n < p.N; n++)
            conv_item(&j, n, j.col, c->pool, c->nthreads);
    }
    return 0;
}

/* Backward, GEMM and 1x1 paths. Per item and group: dW_g += dY_g · colᵀ and dcol = W_gᵀ · dY_g, then
 * col2im into dX. Items run in parallel like the forward; dW and dB, summed over items, go to
 * per-worker partial sums in scratch that are added up at the end. */
typedef struct {
    const conv_p *p;
    const float *x, *w, *dy;
    float *dx, *dw, *db;     /* the serial case writes dw/db here directly */
    float *scratch;
    int64_t col_floats, slice_floats;
} convb_job;

static void conv_back_item(const convb_job *j, int64_t n, float *col, float *dw, qs_threadpool *tp,
                           int nthreads)
{
    const conv_p *p = j->p;
    int64_t K = p->Cg * p->kvol;
    for (int64_t grp = 0; grp < p->group; grp++) {
        const float *xg = j->x + (n * p->C + grp * p->Cg) * p->xvol, *wg = j->w + grp * p->Mg * K;
        const float *dyg = j->dy + (n * p->M + grp * p->Mg) * p->yvol;
        float *dxg = j->dx ? j->dx + (n * p->C + grp * p->Cg) * p->xvol : NULL;
        if (dw) {   /* dW_g += dY_g · colᵀ */
            const float *bm = xg;
            if (p->path == PATH_GEMM) {
                qs_im2col(&p->g, p->Cg, xg, col, tp, nthreads);
                bm = col;
            }
            qs_sgemm_mt(tp, nthreads, 0, 1, p->Mg, K, p->yvol, 1.f, dyg, p->yvol, bm, p->yvol, 1.f, dw + grp * p->Mg * K,
                        K);
        }
        if (dxg) {  /* dcol = W_gᵀ · dY_g, then col2im */
            if (p->path == PATH_1X1) {
                qs_sgemm_mt(tp, nthreads, 1, 0, K, p->yvol, p->Mg, 1.f, wg, K, dyg, p->yvol, 0.f, dxg, p->yvol);
            } else {
                qs_sgemm_mt(tp, nthreads, 1, 0, K, p->yvol, p->Mg, 1.f, wg, K, dyg, p->yvol, 0.f, col, p->yvol);
                memset(dxg, 0, p->Cg * p->xvol * sizeof(float));
                qs_col2im(&p->g, p->Cg, col, dxg, tp, nthreads);
            }
        }
    }
}

static void conv_back_range(void *arg, int64_t n0, int64_t n1, int worker)
{
    const convb_job *j = arg;
    const conv_p *p = j->p;
    float *col = j->scratch + worker * j->slice_floats, *dw = col + j->col_floats;
    float *db = dw + p->M * p->Cg * p->kvol;
    for (int64_t n = n0; n < n1; n++) {
        conv_back_item(j, n, col, j->dw ? dw : NULL, NULL, 1);
        if (j->db)
            for (int64_t m = 0; m < p->M; m++) {
                const float *r = j->dy + (n * p->M + m) * p->yvol;
                float s = 0;
                for (int64_t i = 0; i < p->yvol; i++)
                    s += r[i];
                db[m] += s;
            }
    }
}

/* floats of one backward worker's scratch: column buffer, then partial dW and dB */
static void convb_slice(const conv_p *p, int64_t *col_floats, int64_t *slice_floats)
{
    *col_floats = p->path == PATH_GEMM ? p->Cg * p->kvol * p->yvol : 0;
    *slice_floats = *col_floats + p->M * p->Cg * p->kvol + p->M;
}

static int conv_backward(qs_kctx *c)
{
    conv_p p;
    int rc = conv_params(c, &p);
    if (rc < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]);
    float *dx = c->din[0] ? qs_f32(c->din[0]) : NULL, *dw = c->din[1] ? qs_f32(c->din[1]) : NULL;
    float *db = c->nin > 2 && c->din[2] ? qs_f32(c->din[2]) : NULL;
    qs_tensor *dyt = c->dout[0];
    if (!dyt) {   /* no gradient flows into Y: every input gradient is zero */
        for (int i = 0; i < c->nin && i < 3; i++)
            if (c->din[i])
                memset(c->din[i]->data, 0, qs_nbytes(c->din[i]));
        return 0;
    }
    const float *dy = qs_f32(dyt);
    if (p.path == PATH_DW) {
        dw_job j = { .p = &p, .x = x, .w = w, .dy = dy, .dx = dx, .dw = dw, .db = db };
        if (dw_fast(&p.g) && p.Mg == 1) {
            dw_blk_geom(&p.g, &j.blk);
            int64_t slice = dwb_slice(&p, &j.blk), nw = p.M * p.kvol;
            size_t fit = c->scratch ? c->scratch_size / (slice * sizeof(float)) : 0;
            int workers = block_workers(c, &p);
            if ((size_t)workers > fit)
                workers = (int)fit;
            if (workers >= 1) {   /* else: scratch sized for the forward only, take the generic loops */
                j.scratch = c->scratch;
                for (int k = 0; k < workers; k++)
                    memset(j.scratch + k * slice + 2 * j.blk.buf + j.blk.out, 0, (nw + p.M) * sizeof(float));
                qs_threadpool_for(c->pool, workers, dw_blocks(&p), 1, dw_backward_block_range, &j);
                for (int k = 0; k < workers; k++) {   /* add up the partial sums */
                    const float *part = j.scratch + k * slice + 2 * j.blk.buf + j.blk.out;
                    for (int64_t i = 0; dw && i < nw; i++)
                        dw[i] = k ? dw[i] + part[i] : part[i];
                    for (int64_t m = 0; db && m < p.M; m++)
                        db[m] = k ? db[m] + part[nw + m] : part[nw + m];
                }
                return 0;
            }
        }
        int64_t work = p.N * p.Mg * p.yvol * p.kvol;
        qs_threadpool_for(c->pool, c->nthreads, p.C, work >= 16384 ? 1 : 16384 / (work ? work : 1), dw_backward_range, &j);
        return 0;
    }
    convb_job j = { &p, x, w, dy, dx, dw, db, c->scratch, 0, 0 };
    convb_slice(&p, &j.col_floats, &j.slice_floats);
    int workers = item_workers(c, &p);
    size_t slice_bytes = j.slice_floats * sizeof(float), fit = c->scratch ? c->scratch_size / slice_bytes : 0;
    if ((size_t)workers > fit)   /* scratch sized for the forward only: fewer workers, or serial */
        workers = fit > 1 ? (int)fit : 1;
    if (workers > 1) {
        int64_t nw = p.M * p.Cg * p.kvol;
        for (int k = 0; k < workers; k++)
            memset(j.scratch + k * j.slice_floats + j.col_floats, 0, (nw + p.M) * sizeof(float));
        qs_threadpool_for(c->pool, workers, p.N, 1, conv_back_range, &j);
        for (int k = 0; k < workers; k++) {   /* add up the partial sums */
            const float *part = j.scratch + k * j.slice_floats + j.col_floats;
            for (int64_t i = 0; dw && i < nw; i++)
                dw[i] = k ? dw[i] + part[i] : part[i];
            for (int64_t m = 0; db && m < p.M; m++)
                db[m] = k ? db[m] + part[nw + m] : part[nw + m];
        }
        return 0;
    }
    int one;
    if ((rc = scratch_slices(c, j.col_floats * sizeof(float), 1, &one)) < 0)
        return rc;
    if (dw)
        memset(dw, 0, qs_nbytes(c->din[1]));
    for (int64_t n = 0; n < p.N; n++)
        conv_back_item(&j, n, c->scratch, dw, c->pool, c->nthreads);
    if (db)
        bias_grad(db, dy, p.N, p.M, p.yvol);
    return 0;
}

/* ---- ConvTranspose ----------------------------------------------------------------------------------- */

static int64_t floor_div2(int64_t a) { return a >= 0 ? a / 2 : -((-a + 1) / 2); }

static int convt_params(qs_kctx *c, conv_p *p)
{
    int nd, rc;
    int64_t kernel[QS_CONV_MAXD];
    memset(p, 0, sizeof *p);
    if ((rc = check_xwb(c, p, 1, &nd, kernel)) < 0)
        return rc;
    const qs_node *node = c->node;
    const int64_t *xs = c->in[0]->shape + 2, *v;
    int64_t stride[QS_CONV_MAXD], dil[QS_CONV_MAXD], opad[QS_CONV_MAXD], pb[QS_CONV_MAXD], pe[QS_CONV_MAXD];
    int64_t ysp[QS_CONV_MAXD];
    struct { const char *name; int64_t *dst, dflt, min; } lists[] = {
        { "strides", stride, 1, 1 }, { "dilations", dil, 1, 1 }, { "output_padding", opad, 0, 0 },
    };
    for (int l = 0; l < 3; l++) {
        int cnt = qs_node_ints(node, lists[l].name, &v);
        if (cnt && cnt != nd)
            return qs_op_error(c, QS_EINVAL, "%s has %d values, expected %d (one per spatial dim)", lists[l].name,
                               cnt, nd);
        for (int i = 0; i < nd; i++) {
            lists[l].dst[i] = cnt ? v[i] : lists[l].dflt;
            if (lists[l].dst[i] < lists[l].min)
                return qs_op_error(c, QS_EINVAL, "%s[%d] = %lld must be at least %lld", lists[l].name, i,
                                   (long long)lists[l].dst[i], (long long)lists[l].min);
        }
    }
    const char *ap = qs_node_string(node, "auto_pad", "NOTSET");
    int upper = !strcmp(ap, "SAME_UPPER"), lower = !strcmp(ap, "SAME_LOWER"), valid = !strcmp(ap, "VALID");
    if (!upper && !lower && !valid && strcmp(ap, "NOTSET") && ap[0])
        return qs_op_error(c, QS_EINVAL, "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID", ap);
    const int64_t *os;
    int nos = qs_node_ints(node, "output_shape", &os);
    if (nos == nd + 2)   /* some exporters write the full [N, C, ...] shape */
        os += 2;
    else if (nos && nos != nd)
        return qs_op_error(c, QS_EINVAL, "output_shape has %d values, expected %d (one per spatial dim)", nos, nd);
    int npads = qs_node_ints(node, "pads", &v);
    if (npads && npads != 2 * nd)
        return qs_op_error(c, QS_EINVAL, "pads has %d values, expected %d (begin and end per spatial dim)", npads,
                           2 * nd);
    for (int i = 0; i < nd; i++) {
        int64_t ek = (kernel[i] - 1) * dil[i] + 1, full = stride[i] * (xs[i] - 1) + opad[i] + ek;
        if (nos || upper || lower) {
            /* the spec's split of the total padding, with floor division (Python's //) so that a
             * negative total — an output_shape larger than the full output — pads at the end */
            ysp[i] = nos ? os[i] : xs[i] * stride[i];
            int64_t total = full - ysp[i];
            if (upper) {
                pb[i] = floor_div2(total);
                pe[i] = total - pb[i];
            } else {
                pe[i] = floor_div2(total);
                pb[i] = total - pe[i];
            }
        } else {
            pb[i] = npads && !valid ? v[i] : 0;
            pe[i] = npads && !valid ? v[nd + i] : 0;
            if (pb[i] < 0 || pe[i] < 0)
                return qs_op_error(c, QS_EINVAL, "pads must not be negative");
            ysp[i] = full - pb[i] - pe[i];
        }
        if (ysp[i] < 1)
            return qs_op_error(c, QS_ESHAPE, "output would be empty on spatial dim %d (size %lld)", i,
                               (long long)ysp[i]);
    }
    /* the adjoint conv's geometry: it reads Y (in) and produces X-sized outputs (out) */
    qs_conv_geom_set(&p->g, nd, ysp, xs, kernel, stride, dil, pb, pe);
    p->kvol = qs_geom_kvol(&p->g);
    p->yvol = qs_geom_invol(&p->g);
    p->xvol = qs_geom_outvol(&p->g);
    int unit = 1;
    for (int i = 0; i < 3; i++)
        unit &= p->g.stride[i] == 1 && p->g.pad[i] == 0 && p->g.pad_end[i] == 0 && p->g.in[i] == p->g.out[i];
    p->path = p->kvol == 1 && unit ? PATH_1X1 : PATH_GEMM;
    return 0;
}

static int convt_infer(qs_kctx *c)
{
    conv_p p;
    int rc = convt_params(c, &p);
    if (rc < 0)
        return rc;
    int64_t shape[2 + QS_CONV_MAXD] = { p.N, p.M };
    for (int i = 0; i < p.g.nd; i++)
        shape[2 + i] = p.g.in[3 - p.g.nd + i];
    qs_set_shape(c->out[0], QS_F32, 2 + p.g.nd, shape);
    return 0;
}

static size_t convt_scratch(const qs_kctx *c)
{
    conv_p p;
    if (convt_params((qs_kctx *)c, &p) < 0 || p.path != PATH_GEMM)
        return 0;
    return (size_t)(p.Mg * p.kvol * p.xvol) * sizeof(float);
}

static int convt_forward(qs_kctx *c)
{
    conv_p p;
    int rc = convt_params(c, &p), fit, nt = c->nthreads;
    if (rc < 0 || (rc = scratch_slices(c, convt_scratch(c), 1, &fit)) < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]);
    const float *b = c->nin > 2 && c->in[2] ? qs_f32(c->in[2]) : NULL;
    float *y = qs_f32(c->out[0]), *col = c->scratch;
    int64_t K = p.Mg * p.kvol;   /* W_g is [Cg, Mg·kvol] */
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t grp = 0; grp < p.group; grp++) {
            const float *xg = x + (n * p.C + grp * p.Cg) * p.xvol, *wg = w + grp * p.Cg * K;
            float *yg = y + (n * p.M + grp * p.Mg) * p.yvol;
            if (p.path == PATH_1X1) {
                qs_sgemm_mt(c->pool, nt, 1, 0, p.Mg, p.xvol, p.Cg, 1.f, wg, K, xg, p.xvol, 0.f, yg, p.xvol);
            } else {
                qs_sgemm_mt(c->pool, nt, 1, 0, K, p.xvol, p.Cg, 1.f, wg, K, xg, p.xvol, 0.f, col, p.xvol);
                memset(yg, 0, p.Mg * p.yvol * sizeof(float));
                qs_col2im(&p.g, p.Mg, col, yg, c->pool, nt);
            }
        }
    add_bias(y, b, p.N, p.M, p.yvol, ctx_clamp(c));
    return 0;
}

static int convt_backward(qs_kctx *c)
{
    conv_p p;
    int rc = convt_params(c, &p), fit, nt = c->nthreads;
    if (rc < 0 || (rc = scratch_slices(c, convt_scratch(c), 1, &fit)) < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]);
    float *dx = c->din[0] ? qs_f32(c->din[0]) : NULL, *dw = c->din[1] ? qs_f32(c->din[1]) : NULL;
    float *db = c->nin > 2 && c->din[2] ? qs_f32(c->din[2]) : NULL, *col = c->scratch;
    if (!c->dout[0]) {
        for (int i = 0; i < c->nin && i < 3; i++)
            if (c->din[i])
                memset(c->din[i]->data, 0, qs_nbytes(c->din[i]));
        return 0;
    }
    const float *dy = qs_f32(c->dout[0]);
    int64_t K = p.Mg * p.kvol;
    if (dw)
        memset(dw, 0, qs_nbytes(c->din[1]));
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t grp = 0; grp < p.group; grp++) {
            const float *xg = x + (n * p.C + grp * p.Cg) * p.xvol, *wg = w + grp * p.Cg * K;
            const float *dyg = dy + (n * p.M + grp * p.Mg) * p.yvol, *bm = dyg;
            if (p.path == PATH_GEMM) {
                qs_im2col(&p.g, p.Mg, dyg, col, c->pool, nt);
                bm = col;
            }
            if (dx)   /* dX_g = W_g · col */
                qs_sgemm_mt(c->pool, nt, 0, 0, p.Cg, p.xvol, K, 1.f, wg, K, bm, p.xvol, 0.f, dx + (n * p.C + grp * p.Cg) * p.xvol,
                         p.xvol);
            if (dw)   /* dW_g += X_g · colᵀ */
                qs_sgemm_mt(c->pool, nt, 0, 1, p.Cg, K, p.xvol, 1.f, xg, p.xvol, bm, p.xvol, 1.f, dw + grp * p.Cg * K, K);
        }
    if (db)
        bias_grad(db, dy, p.N, p.M, p.yvol);
    return 0;
}

const qs_op_def qs_ops_conv[] = {
    { .domain = "", .op = "Conv", .infer = conv_infer, .scratch = conv_scratch, .forward = conv_forward,
      .backward = conv_backward },
    { .domain = "", .op = "ConvTranspose", .infer = convt_infer, .scratch = convt_scratch,
      .forward = convt_forward, .backward = convt_backward },
    { .op = NULL },
};
