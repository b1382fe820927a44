/* Conv and ConvTranspose (1-D, 2-D, 3-D; float32), forward and backward.
 *
 * Conv picks one of three paths per node:
 *  - pointwise (1x1 kernel, stride 1, no padding): the input plane block [C/group, H·W] of one batch
 *    item already is the GEMM operand, so Y_g = W_g · X_g is one sgemm with no copy;
 *  - depthwise (one input channel per group, group > 1): a direct loop per (item, channel) plane,
 *    since a GEMM with K = kernel volume would spend its time on packing;
 *  - general: im2col into caller-owned scratch, then one sgemm per (batch item, group).
 * Backward reuses the same column buffer: dW_g += dY_g · colᵀ, then dcol = W_gᵀ · dY_g and col2im
 * into dX. ConvTranspose is the adjoint of Conv: its forward is Conv's dX computation (sgemm then
 * col2im), its backward Conv's forward (im2col then sgemm).
 *
 * Only shapes, never data, decide the path, so infer, scratch, forward and backward agree. */
#include "ops/kernels.h"

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

static size_t conv_scratch(const qs_kctx *c)
{
    conv_p p;
    if (conv_params((qs_kctx *)c, &p) < 0 || p.path != PATH_GEMM)
        return 0;
    return (size_t)(p.Cg * p.kvol * p.yvol) * sizeof(float);
}

static int check_scratch(qs_kctx *c, size_t need)
{
    if (c->scratch_size < need || (need && !c->scratch))
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes given, %zu needed", c->scratch_size, need);
    return 0;
}

/* y[n, m, :] += b[m] */
static void add_bias(float *y, const float *b, int64_t N, int64_t M, int64_t vol)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            float *r = y + (n * M + m) * vol, bv = b[m];
            for (int64_t i = 0; i < vol; i++)
                r[i] += bv;
        }
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

typedef struct {
    const conv_p *p;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw, *db;
} dw_job;

static void dw_forward_range(void *arg, int64_t begin, int64_t end)
{
    const dw_job *j = arg;
    const conv_p *p = j->p;
    for (int64_t plane = begin; plane < end; plane++) {   /* plane = n·M + m */
        int64_t n = plane / p->M, m = plane % p->M, cin = m / p->Mg;
        dw_plane_forward(&p->g, j->x + (n * p->C + cin) * p->xvol, j->w + m * p->kvol, j->b ? j->b[m] : 0.f,
                         j->y + plane * p->yvol);
    }
}

/* Backward per input channel (group) cin: dX[:, cin] and dW/dB of the group's output channels are
 * written only by this chunk, so chunks never race. */
static void dw_backward_range(void *arg, int64_t begin, int64_t end)
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

static int conv_forward(qs_kctx *c)
{
    conv_p p;
    int rc = conv_params(c, &p);
    if (rc < 0 || (rc = check_scratch(c, conv_scratch(c))) < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]);
    const float *b = c->nin > 2 && c->in[2] ? qs_f32(c->in[2]) : NULL;
    float *y = qs_f32(c->out[0]), *col = c->scratch;
    if (p.path == PATH_DW) {
        dw_job j = { .p = &p, .x = x, .w = w, .b = b, .y = y };
        int64_t work = p.yvol * p.kvol;
        qs_parallel_for(c->nthreads, p.N * p.M, work >= 16384 ? 1 : 16384 / (work ? work : 1), dw_forward_range, &j);
        return 0;
    }
    int64_t K = p.Cg * p.kvol;
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t grp = 0; grp < p.group; grp++) {
            const float *xg = x + (n * p.C + grp * p.Cg) * p.xvol, *wg = w + grp * p.Mg * K, *bm = xg;
            float *yg = y + (n * p.M + grp * p.Mg) * p.yvol;
            if (p.path == PATH_GEMM) {
                qs_im2col(&p.g, p.Cg, xg, col, c->nthreads);
                bm = col;
            }
            qs_sgemm(0, 0, p.Mg, p.yvol, K, 1.f, wg, K, bm, p.yvol, 0.f, yg, p.yvol);
        }
    if (b)
        add_bias(y, b, p.N, p.M, p.yvol);
    return 0;
}

static int conv_backward(qs_kctx *c)
{
    conv_p p;
    int rc = conv_params(c, &p);
    if (rc < 0 || (rc = check_scratch(c, conv_scratch(c))) < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]);
    float *dx = c->din[0] ? qs_f32(c->din[0]) : NULL, *dw = c->din[1] ? qs_f32(c->din[1]) : NULL;
    float *db = c->nin > 2 && c->din[2] ? qs_f32(c->din[2]) : NULL, *col = c->scratch;
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
        int64_t work = p.N * p.Mg * p.yvol * p.kvol;
        qs_parallel_for(c->nthreads, p.C, work >= 16384 ? 1 : 16384 / (work ? work : 1), dw_backward_range, &j);
        return 0;
    }
    int64_t K = p.Cg * p.kvol;
    if (dw)
        memset(dw, 0, qs_nbytes(c->din[1]));
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t grp = 0; grp < p.group; grp++) {
            const float *xg = x + (n * p.C + grp * p.Cg) * p.xvol, *wg = w + grp * p.Mg * K;
            const float *dyg = dy + (n * p.M + grp * p.Mg) * p.yvol;
            float *dxg = dx ? dx + (n * p.C + grp * p.Cg) * p.xvol : NULL;
            if (dw) {   /* dW_g += dY_g · colᵀ */
                const float *bm = xg;
                if (p.path == PATH_GEMM) {
                    qs_im2col(&p.g, p.Cg, xg, col, c->nthreads);
                    bm = col;
                }
                qs_sgemm(0, 1, p.Mg, K, p.yvol, 1.f, dyg, p.yvol, bm, p.yvol, 1.f, dw + grp * p.Mg * K, K);
            }
            if (dxg) {  /* dcol = W_gᵀ · dY_g, then col2im */
                if (p.path == PATH_1X1) {
                    qs_sgemm(1, 0, K, p.yvol, p.Mg, 1.f, wg, K, dyg, p.yvol, 0.f, dxg, p.yvol);
                } else {
                    qs_sgemm(1, 0, K, p.yvol, p.Mg, 1.f, wg, K, dyg, p.yvol, 0.f, col, p.yvol);
                    memset(dxg, 0, p.Cg * p.xvol * sizeof(float));
                    qs_col2im(&p.g, p.Cg, col, dxg, c->nthreads);
                }
            }
        }
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
    int rc = convt_params(c, &p);
    if (rc < 0 || (rc = check_scratch(c, convt_scratch(c))) < 0)
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
                qs_sgemm(1, 0, p.Mg, p.xvol, p.Cg, 1.f, wg, K, xg, p.xvol, 0.f, yg, p.xvol);
            } else {
                qs_sgemm(1, 0, K, p.xvol, p.Cg, 1.f, wg, K, xg, p.xvol, 0.f, col, p.xvol);
                memset(yg, 0, p.Mg * p.yvol * sizeof(float));
                qs_col2im(&p.g, p.Mg, col, yg, c->nthreads);
            }
        }
    if (b)
        add_bias(y, b, p.N, p.M, p.yvol);
    return 0;
}

static int convt_backward(qs_kctx *c)
{
    conv_p p;
    int rc = convt_params(c, &p);
    if (rc < 0 || (rc = check_scratch(c, convt_scratch(c))) < 0)
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
                qs_im2col(&p.g, p.Mg, dyg, col, c->nthreads);
                bm = col;
            }
            if (dx)   /* dX_g = W_g · col */
                qs_sgemm(0, 0, p.Cg, p.xvol, K, 1.f, wg, K, bm, p.xvol, 0.f, dx + (n * p.C + grp * p.Cg) * p.xvol,
                         p.xvol);
            if (dw)   /* dW_g += X_g · colᵀ */
                qs_sgemm(0, 1, p.Cg, K, p.xvol, 1.f, xg, p.xvol, bm, p.xvol, 1.f, dw + grp * p.Cg * K, K);
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
