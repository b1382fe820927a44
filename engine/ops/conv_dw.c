/* Conv's depthwise path (one input channel per group, group > 1): direct loops, since a GEMM with
 * K = kernel volume would spend its time packing. 1-D and 2-D take the blocked fast path below, 16
 * channels at once; 3-D (rare) and large kernels take plain per-plane loops. conv.c picks the path
 * and calls conv_dw_scratch/forward/backward. */
#include "ops/conv_impl.h"

#include <math.h>
#include <string.h>

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

/* floats of one depthwise backward worker's scratch (X, dY and dX interleaved), and of one chunk's
 * partial dW and dB (conv_bwd_chunks) */
static int64_t dwb_slice(const dw_blk *d) { return 2 * d->buf + d->out; }
static int64_t dwb_part(const conv_p *p) { return p->M * p->kvol + p->M; }

/* depthwise: (batch item, block of 16 channels) pairs run in parallel */
static int64_t dw_blocks(const conv_p *p) { return p->N * ((p->M + 15) / 16); }

static int block_workers(const qs_kctx *c, const conv_p *p)
{
    int64_t t = c->nthreads > 1 ? c->nthreads : 1, blocks = dw_blocks(p);
    return (int)(t < blocks ? t : blocks > 0 ? blocks : 1);
}

/* the planar forward: (batch item, channel) planes run in parallel */
static int plane_workers(const qs_kctx *c, const conv_p *p)
{
    int64_t t = c->nthreads > 1 ? c->nthreads : 1, planes = p->N * p->M;
    return (int)(t < planes ? t : planes > 0 ? planes : 1);
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

/* 16 planes (xp[l], rows of IW) → buf[((ih + pt)·PW + iw + pl)·16 + l], the rest of buf zero. Only
 * that rest (the padding border) is zeroed: zeroing all of a buffer larger than L1 first cost as
 * much as the convolution's arithmetic on MobileNet's large planes. */
static inline void dw_interleave_in(const float *const *xp, int64_t IH, int64_t IW, int64_t pt, int64_t pl,
                                    int64_t PW, int64_t nbuf, float *buf)
{
    const int64_t top = pt * PW * 16, body = (pt + IH) * PW * 16;
    for (int64_t i = 0; i < top; i += 16)
        *(v16u *)(buf + i) = (v16){ 0 };
    for (int64_t i = body; i < nbuf; i += 16)
        *(v16u *)(buf + i) = (v16){ 0 };
    for (int64_t ih = 0; ih < IH; ih++) {
        float *row = buf + (pt + ih) * PW * 16;
        for (int64_t iw = 0; iw < pl; iw++)
            *(v16u *)(row + iw * 16) = (v16){ 0 };
        for (int64_t iw = pl + IW; iw < PW; iw++)
            *(v16u *)(row + iw * 16) = (v16){ 0 };
    }
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

/* ---- depthwise forward, planar: one (item, channel) plane at a time, lanes along the plane -------- *
 *
 * The plane is copied once into a zero-padded buffer split into its stride phases (polyphase: for
 * strides sh×sw, sub-plane (a, b) holds padded rows a, a + sh, … and columns b, b + sw, …, each QH×QW).
 * In that buffer output (oh, ow)'s tap (kh, kw) sits at a fixed offset from oh·QW + ow, the same for
 * every output: output q = oh·QW + ow is Σ_t w_t · buffer[q + off_t], and a run of 16 outputs along
 * a row is one vector sum over the taps, with no bounds tests and no transposes, stored straight
 * into Y (the last run of a row overlapping the one before). It needs rows of at least 16 outputs;
 * there it beats the interleaved blocks below (their transposes cost more than the arithmetic), on
 * narrower planes it does not (measured on MobileNet's 14×14 and 7×7 planes). */
typedef struct {
    int64_t QH, QW, sub;     /* sub-plane rows and columns (sub = QH·QW) */
    int64_t buf;             /* floats of the polyphase buffer (with slack) */
    int64_t off[DW_MAXTAPS]; /* tap t of output q = oh·QW + ow reads buffer[q + off[t]] */
} dw_pp;

static void dw_pp_geom(const qs_conv_geom *g, dw_pp *d)
{
    dw_blk b;
    dw_blk_geom(g, &b);   /* PH, PW: the padded plane */
    const int64_t sh = g->stride[1], sw = g->stride[2];
    d->QH = (b.PH + sh - 1) / sh;
    d->QW = (b.PW + sw - 1) / sw;
    d->sub = d->QH * d->QW;
    /* Reads stay inside each sub-plane: output row oh, tap row ry reads sub-row oh + ry / sh < QH,
     * and columns ow + rx / sw < QW since (OW − 1)·sw + rx < PW. */
    d->buf = sh * sw * d->sub;
    for (int64_t ky = 0, t = 0; ky < g->k[1]; ky++)
        for (int64_t kx = 0; kx < g->k[2]; kx++, t++) {
            int64_t ry = ky * g->dil[1], rx = kx * g->dil[2];
            d->off[t] = ((ry % sh) * sw + rx % sw) * d->sub + ry / sh * d->QW + rx / sw;
        }
}

static int dw_planar(const qs_conv_geom *g) { return dw_fast(g) && g->out[2] >= 16; }

/* One padded input row into its sw phase rows dst + b·sub, QW floats each: phase b's column j is
 * padded column b + j·sw (0 in the padding). Strides 1 and 2 take copies the compiler vectorizes. */
static inline void dw_pp_row(const float *restrict xr, int64_t IW, int64_t pl, int64_t sw, int64_t QW, int64_t sub,
                             float *restrict dst)
{
    if (sw == 1) {
        for (int64_t j = 0; j < pl; j++)
            dst[j] = 0.f;
        for (int64_t j = 0; j < IW; j++)
            dst[pl + j] = xr[j];
        for (int64_t j = pl + IW; j < QW; j++)
            dst[j] = 0.f;
        return;
    }
    for (int64_t b = 0; b < sw; b++)
        for (int64_t j = 0; j < QW; j++)
            dst[b * sub + j] = 0.f;
    if (sw == 2) {
        /* input column c is padded column c + pl: phase (c + pl) & 1, index (c + pl) >> 1 */
        float *e = dst + (pl & 1) * sub + (pl >> 1), *o = dst + ((pl + 1) & 1) * sub + ((pl + 1) >> 1);
        int64_t n2 = IW / 2;
        for (int64_t j = 0; j < n2; j++) {
            e[j] = xr[2 * j];
            o[j] = xr[2 * j + 1];
        }
        if (IW & 1)
            e[n2] = xr[IW - 1];
        return;
    }
    for (int64_t c = 0; c < IW; c++)
        dst[(c + pl) % sw * sub + (c + pl) / sw] = xr[c];
}

/* The output vectors of a plane with OW ≥ 16 in groups of four (independent sums hide the
 * multiply-adds' latency): y[dst_k…] = clamp(bias + Σ_t w_t · buf[src_k + off_t…]) for 16 lanes. Vector
 * k covers row r's columns from min(16·i, OW − 16); the last group repeats the plane's last vector.
 * Always inlined, so that the callers with ntaps 9 and 25 get the tap loop unrolled and the weights
 * and offsets held in registers. */
static inline __attribute__((always_inline)) void dw_pp_vectors(const float *restrict buf, const int64_t *off,
                                                               const float *wt, int64_t ntaps, float bias,
                                                               int64_t OH, int64_t OW, int64_t QW, int clamp,
                                                               float lo_, float hi_, float *y)
{
    const v16 lo = (v16){ 0 } + lo_, hi = (v16){ 0 } + hi_;   /* (vectors as arguments: see CLAMP16) */
    int64_t r = 0, c = 0;   /* the next vector: row r, from column c */
    while (r < OH) {
        int64_t src[4], dst[4];
        for (int u = 0; u < 4; u++) {
            int64_t rr = r < OH ? r : OH - 1, cc = r < OH && c < OW - 16 ? c : OW - 16;
            src[u] = rr * QW + cc;
            dst[u] = rr * OW + cc;
            if (r < OH && (c += 16) >= OW) {
                c = 0;
                r++;
            }
        }
        v16 a0 = (v16){ 0 } + bias, a1 = a0, a2 = a0, a3 = a0;
        for (int64_t t = 0; t < ntaps; t++) {
            const float *s_ = buf + off[t];
            v16 wv = (v16){ 0 } + wt[t];
            a0 += wv * *(const v16u *)(s_ + src[0]);
            a1 += wv * *(const v16u *)(s_ + src[1]);
            a2 += wv * *(const v16u *)(s_ + src[2]);
            a3 += wv * *(const v16u *)(s_ + src[3]);
        }
        if (clamp) {
            CLAMP16(a0, lo, hi);
            CLAMP16(a1, lo, hi);
            CLAMP16(a2, lo, hi);
            CLAMP16(a3, lo, hi);
        }
        *(v16u *)(y + dst[0]) = a0;
        *(v16u *)(y + dst[1]) = a1;
        *(v16u *)(y + dst[2]) = a2;
        *(v16u *)(y + dst[3]) = a3;
    }
}


/* One plane, OW ≥ 16: the polyphase copy, then vectors of 16 outputs straight into Y. */
/* contracted: one rounding per tap instead of two, as oneDNN's and ONNX Runtime's kernels do; every
 * output of the planar path goes through the same vector code (see QS_HOT_FMA) */

QS_HOT_FMA static void dw_plane_planar(const conv_p *p, const dw_pp *d, const float *x, const float *w, float bias,
                                   float *y, float *restrict buf, clamp_t cl)
{
    const qs_conv_geom *g = &p->g;
    const int64_t IH = g->in[1], IW = g->in[2], OH = g->out[1], OW = g->out[2], QW = d->QW;
    const int64_t sh = g->stride[1], sw = g->stride[2], pt = g->pad[1], pl = g->pad[2], ntaps = qs_geom_kvol(g);
    for (int64_t a = 0; a < sh; a++)
        for (int64_t i = 0; i < d->QH; i++) {
            int64_t r = i * sh + a - pt;   /* input row of padded row i·sh + a */
            float *dst = buf + a * sw * d->sub + i * QW;
            if (r >= 0 && r < IH)
                dw_pp_row(x + r * IW, IW, pl, sw, QW, d->sub, dst);
            else
                for (int64_t b = 0; b < sw; b++)
                    for (int64_t j = 0; j < QW; j++)
                        dst[b * d->sub + j] = 0.f;
        }
    float wt[DW_MAXTAPS];
    for (int64_t t = 0; t < ntaps; t++)
        wt[t] = w[t];
    const int clamp = cl.on && !cl.res;
    const float lo = clamp ? cl.lo : -INFINITY, hi = clamp ? cl.hi : INFINITY;
    if (ntaps == 9)
        dw_pp_vectors(buf, d->off, wt, 9, bias, OH, OW, QW, clamp, lo, hi, y);
    else if (ntaps == 25)
        dw_pp_vectors(buf, d->off, wt, 25, bias, OH, OW, QW, clamp, lo, hi, y);
    else
        dw_pp_vectors(buf, d->off, wt, ntaps, bias, OH, OW, QW, clamp, lo, hi, y);
}

typedef struct {
    const conv_p *p;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw, *db;
    float *scratch;        /* fast paths: per worker, the interleaved or polyphase buffers */
    float *part;           /* the blocked backward: per chunk of q items, partial dW and dB */
    int64_t q;
    dw_blk blk;
    dw_pp pp;
    int planar;
    clamp_t clamp;
} dw_job;

static void dw_forward_range(void *arg, int64_t begin, int64_t end, int worker)
{
    const dw_job *j = arg;
    const conv_p *p = j->p;
    if (j->scratch && j->planar) {
        float *buf = j->scratch + worker * j->pp.buf;
        for (int64_t plane = begin; plane < end; plane++) {   /* plane = n·M + m */
            int64_t n = plane / p->M, m = plane % p->M;
            float *y = j->y + plane * p->yvol;
            dw_plane_planar(p, &j->pp, j->x + (n * p->C + m / p->Mg) * p->xvol, j->w + m * p->kvol,
                            j->b ? j->b[m] : 0.f, y, buf, j->clamp);
            if (j->clamp.res || j->clamp.pw)   /* the residual and then the clamp, or the activation */
                conv_epilogue(y, NULL, j->clamp.res ? j->clamp.res + plane * p->yvol : NULL, p->yvol, j->clamp);
        }
        return;
    }
    if (j->scratch) {
        int64_t nblk = (p->M + 15) / 16;
        float *buf = j->scratch + worker * (j->blk.buf + j->blk.out);
        for (int64_t blk = begin; blk < end; blk++) {   /* blk = n·nblk + channel block */
            int64_t n = blk / nblk, m0 = blk % nblk * 16;
            dw_block(p, &j->blk, j->x, j->w, j->b, j->y, n, m0, buf, buf + j->blk.buf, j->clamp);
            /* the residual and then the clamp, or the SiLU; else clamped already */
            for (int64_t m = m0; (j->clamp.res || j->clamp.pw) && m < m0 + 16 && m < p->M; m++) {
                int64_t off = (n * p->M + m) * p->yvol;
                conv_epilogue(j->y + off, NULL, j->clamp.res ? j->clamp.res + off : NULL, p->yvol, j->clamp);
            }
        }
        return;
    }
    for (int64_t plane = begin; plane < end; plane++) {   /* plane = n·M + m */
        int64_t n = plane / p->M, m = plane % p->M, cin = m / p->Mg;
        dw_plane_forward(&p->g, j->x + (n * p->C + cin) * p->xvol, j->w + m * p->kvol, j->b ? j->b[m] : 0.f,
                         j->y + plane * p->yvol);
        conv_epilogue(j->y + plane * p->yvol, NULL, j->clamp.res ? j->clamp.res + plane * p->yvol : NULL,
                       p->yvol, j->clamp);
    }
}

/* units [begin, end): unit u is channel block u % nblk of the items in chunk u / nblk; units of one
 * chunk write disjoint channels of its partial sums */
static void dw_backward_block_range(void *arg, int64_t begin, int64_t end, int worker)
{
    const dw_job *j = arg;
    const conv_p *p = j->p;
    int64_t nblk = (p->M + 15) / 16;
    float *buf = j->scratch + worker * dwb_slice(&j->blk), *dyb = buf + j->blk.buf, *dxb = dyb + j->blk.out;
    for (int64_t u = begin; u < end; u++) {
        int64_t k = u / nblk, m0 = u % nblk * 16;
        float *dwpart = j->part + k * dwb_part(p), *dbpart = dwpart + p->M * p->kvol;
        for (int64_t n = k * j->q; n < (k + 1) * j->q && n < p->N; n++)
            dw_block_backward(p, &j->blk, j->x, j->w, j->dy, j->dx, n, m0, buf, dyb, dxb, dwpart, dbpart);
    }
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

/* Scratch for the depthwise path: the fast path's interleaved buffers per worker (and, in
 * training, the backward's larger slices); the plane loops need none. */
size_t conv_dw_scratch(const qs_kctx *c, const conv_p *p)
{
    if (!dw_fast(&p->g))
        return 0;
    dw_blk d;
    dw_blk_geom(&p->g, &d);
    size_t fwd = (size_t)block_workers(c, p) * (size_t)(d.buf + d.out) * sizeof(float);
    if (dw_planar(&p->g)) {
        dw_pp pp;
        dw_pp_geom(&p->g, &pp);
        fwd = (size_t)plane_workers(c, p) * (size_t)pp.buf * sizeof(float);
    }
    if ((!c->training && !c->din) || p->Mg != 1)
        return fwd;
    int64_t q, chunks;
    conv_bwd_chunks(p->N, 1, &q, &chunks);
    size_t bwd = ((size_t)block_workers(c, p) * (size_t)dwb_slice(&d) + (size_t)(chunks * dwb_part(p))) * sizeof(float);
    return bwd > fwd ? bwd : fwd;
}

/* Conv forward on the depthwise path (conv.c picked it): the fast blocked loops when the geometry
 * allows, else one plane at a time. */
int conv_dw_forward(qs_kctx *c, const conv_p *p, const float *x, const float *w, const float *b, float *y,
                    clamp_t clamp)
{
    int rc;
    dw_job j = { .p = p, .x = x, .w = w, .b = b, .y = y, .clamp = clamp };
    if (dw_planar(&p->g)) {
        int nt = plane_workers(c, p);
        dw_pp_geom(&p->g, &j.pp);
        if ((rc = conv_scratch_slices(c, j.pp.buf * sizeof(float), nt, &nt)) < 0)
            return rc;
        j.scratch = c->scratch;
        j.planar = 1;
        int64_t work = p->yvol * p->kvol;
        qs_threadpool_for(c->pool, nt, p->N * p->M, work >= 16384 ? 1 : 16384 / work, dw_forward_range, &j);
        return 0;
    }
    if (dw_fast(&p->g)) {
        int nt = block_workers(c, p);
        dw_blk_geom(&p->g, &j.blk);
        if ((rc = conv_scratch_slices(c, (j.blk.buf + j.blk.out) * sizeof(float), nt, &nt)) < 0)
            return rc;
        j.scratch = c->scratch;
        int64_t work = 16 * p->yvol * p->kvol;
        qs_threadpool_for(c->pool, nt, dw_blocks(p), work >= 65536 ? 1 : 65536 / work, dw_forward_range, &j);
        return 0;
    }
    int64_t work = p->yvol * p->kvol;
    qs_threadpool_for(c->pool, c->nthreads, p->N * p->M, work >= 16384 ? 1 : 16384 / (work ? work : 1), dw_forward_range, &j);
    return 0;
}

/* Conv backward on the depthwise path: the blocked loops with per-chunk partial sums of dW and dB
 * (conv_bwd_chunks) when scratch was sized for them (training), else per input channel. */
int conv_dw_backward(qs_kctx *c, const conv_p *p, const float *x, const float *w, const float *dy, float *dx,
                     float *dw, float *db)
{
    dw_job j = { .p = p, .x = x, .w = w, .dy = dy, .dx = dx, .dw = dw, .db = db };
    if (dw_fast(&p->g) && p->Mg == 1) {
        dw_blk_geom(&p->g, &j.blk);
        int64_t chunks, nw = p->M * p->kvol, nblk = (p->M + 15) / 16;
        conv_bwd_chunks(p->N, 1, &j.q, &chunks);
        size_t parts = (size_t)(chunks * dwb_part(p)) * sizeof(float), slice = (size_t)dwb_slice(&j.blk) * sizeof(float);
        int64_t workers = block_workers(c, p);
        if (c->scratch && c->scratch_size >= parts + slice) {   /* else: scratch sized for the forward only */
            if ((size_t)workers > (c->scratch_size - parts) / slice)
                workers = (int64_t)((c->scratch_size - parts) / slice);
            j.part = c->scratch;
            j.scratch = (float *)c->scratch + chunks * dwb_part(p);
            memset(j.part, 0, parts);
            qs_threadpool_for(workers > 1 ? c->pool : NULL, (int)(workers > 1 ? workers : 1), chunks * nblk, 1,
                              dw_backward_block_range, &j);
            conv_bwd_add_chunks(j.part, dwb_part(p), chunks, nw, p->M, dw, db);
            return 0;
        }
    }
    int64_t work = p->N * p->Mg * p->yvol * p->kvol;
    qs_threadpool_for(c->pool, c->nthreads, p->C, work >= 16384 ? 1 : 16384 / (work ? work : 1), dw_backward_range, &j);
    return 0;
}
