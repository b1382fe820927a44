/* Conv and ConvTranspose (1-D, 2-D, 3-D; float32), forward and backward.
 *
 * Conv picks one of three paths per node:
 *  - pointwise (1x1 kernel, stride 1, no padding): the input plane block [C/group, H·W] of one batch
 *    item already is the GEMM operand, so Y_g = W_g · X_g is one sgemm with no copy;
 *  - depthwise (one input channel per group, group > 1): direct loops, in conv_dw.c;
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
#include "ops/conv_impl.h"

#include <math.h>
#include <string.h>


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

QS_OP_PARAMS(conv, conv_p, conv_params)

static clamp_t ctx_clamp(const qs_kctx *c);

/* the oneDNN flags for this node as planned: kept weights, blocked layouts and, with Y blocked, the
 * epilogue inside the kernel */
static int dnnl_flags(const qs_kctx *c, int layout)
{
    return (c->wgen ? CONV_DNNL_KEEP_W : 0) | (layout & QS_LAYOUT_X ? CONV_DNNL_X_BLOCKED : 0) |
           (layout & QS_LAYOUT_Y ? CONV_DNNL_Y_BLOCKED : 0) | (layout & QS_LAYOUT_R ? CONV_DNNL_R_BLOCKED : 0) |
           (c->nin > 2 && c->in[2] ? CONV_DNNL_BIAS : 0) | (c->residual && !c->training ? CONV_DNNL_RESIDUAL : 0);
}

/* the parameters, plus the oneDNN primitives when the node takes that path (conv_dnnl.c) */
static int conv_prepare_dnnl(qs_kctx *c, void **state)
{
    int rc = conv_prepare(c, state);
    if (rc < 0)
        return rc;
    conv_p *p = *state;
    p->dnnl = conv_dnnl_new(p, c->nthreads, dnnl_flags(c, c->layout), ctx_clamp(c));
    if (c->layout && !p->dnnl) {   /* the plan put blocked activations around this node */
        free(p);
        *state = NULL;
        return qs_op_error(c, QS_EUNSUPPORTED, "oneDNN has no kernel for this convolution with blocked activations");
    }
    if (p->dnnl && c->training)
        p->dnnl_bwd = conv_dnnl_bwd_new(p);
    return 0;
}

/* Inference: the block in which this node reads X and writes Y (conv_dnnl_block) as `layout` says,
 * when oneDNN has a JIT kernel for it so: any channel count that fills whole blocks, 1x1 and
 * depthwise kernels included. (Session 11 kept 1x1 kernels under 64 channels a side on OpenBLAS:
 * with the depthwise layers between them plain, every such layer paid reorders. With the depthwise
 * layers in the chains too, mobilenet_v2 at batch 32 takes 261 ms with every whole-block 1x1 kernel
 * blocked against 330 with that rule, and on AVX2's blocks of 8, 268 against 380; docs/benchmarks.md.) */
static int blocked_as(qs_kctx *c, int layout)
{
    conv_p p;
    if (c->training || c->in_scale || !conv_dnnl_blocked_enabled() || conv_params(c, &p) < 0)
        return 0;
    conv_dnnl *d = conv_dnnl_new(&p, c->nthreads, dnnl_flags(c, layout), ctx_clamp(c));
    conv_dnnl_free(d);
    return d ? conv_dnnl_block() : 0;
}

/* The block when X and Y can both be blocked, or Y alone from a plain X (*inputs 0: a first layer's
 * 3 channels, before a MaxPool that reads the blocked layout) */
static int conv_blocked(qs_kctx *c, unsigned *inputs)
{
    int b = blocked_as(c, QS_LAYOUT_X | QS_LAYOUT_Y);
    if (b)
        return b;
    *inputs = 0;
    return blocked_as(c, QS_LAYOUT_Y);
}

/* Inference: a Mul x·s (s [N or 1, C, 1, 1]) before this node folds into it when it is a group-1 1x1
 * convolution on the OpenBLAS path (conv_item_scaled). Not when it could join oneDNN's blocked chains
 * (exec_layout.c): there the weights and X go through oneDNN's reorders, and keeping the chain is
 * worth more than the Mul's pass. */
static int conv_xscale(qs_kctx *c)
{
    conv_p p;
    if (c->training || conv_params(c, &p) < 0 || p.group != 1 || p.path != PATH_1X1 || p.g.nd < 1)
        return 0;
    const qs_tensor *s = c->in_scale;
    if (!s || s->dtype != QS_F32 || s->ndim != c->in[0]->ndim || (s->shape[0] != p.N && s->shape[0] != 1) ||
        s->shape[1] != p.C || qs_numel(s) != s->shape[0] * p.C)
        return 0;
    qs_kctx plain = *c;
    unsigned inputs = 1;
    plain.in_scale = NULL;
    return !conv_blocked(&plain, &inputs);
}

static void conv_release(void *state)
{
    conv_p *p = state;
    if (p) {
        conv_dnnl_free(p->dnnl);
        conv_dnnl_bwd_free(p->dnnl_bwd);
    }
    free(p);
}

/* The node's oneDNN path: the prepared one, or (no plan: tests, plan-time folding) one made now that
 * the caller frees; NULL: our own path. */
static conv_dnnl *dnnl_of(const qs_kctx *c, const conv_p *p, conv_dnnl **temp)
{
    *temp = c->state ? NULL : conv_dnnl_new(p, c->nthreads, 0, ctx_clamp(c));
    return c->state ? p->dnnl : *temp;
}

/* the same for the backward */
static conv_dnnl_bwd *dnnl_bwd_of(const qs_kctx *c, const conv_p *p, conv_dnnl_bwd **temp)
{
    *temp = c->state ? NULL : conv_dnnl_bwd_new(p);
    return c->state ? p->dnnl_bwd : *temp;
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

/* batch items run in parallel, one per worker, each with its own column buffer */
static int item_workers(const qs_kctx *c, const conv_p *p)
{
    int64_t t = c->nthreads > 1 ? c->nthreads : 1;
    return (int)(t < p->N ? t : p->N > 0 ? p->N : 1);
}

static void convb_sizes(const conv_p *p, int64_t *col_floats, int64_t *part_floats);

/* With a Mul x·s folded in (c->in_scale), one item's scaled operand is W·diag(s_n) (M×C floats) or,
 * when that is the larger, diag(s_n)·X_n (C×HW): whichever costs fewer multiplies. 0: no scale. */
static int64_t scaled_floats(const qs_kctx *c, const conv_p *p)
{
    if (!c->in_scale || c->training)
        return 0;
    return p->M <= p->xvol ? p->M * p->C : p->C * p->xvol;
}

static size_t conv_scratch(const qs_kctx *c)
{
    conv_p p;
    if (conv_get((qs_kctx *)c, &p) < 0)
        return 0;
    if (p.path == PATH_DW && !p.dnnl)   /* (depthwise on oneDNN: only as planned, in a blocked chain) */
        return conv_dw_scratch(c, &p);
    conv_dnnl *temp, *d = dnnl_of(c, &p, &temp);
    size_t fwd = d                     ? conv_dnnl_scratch(d, &p, c->nthreads)
               : p.path == PATH_1X1 ? (size_t)item_workers(c, &p) * (size_t)scaled_floats(c, &p) * sizeof(float)
                                    : (size_t)item_workers(c, &p) * (size_t)(p.Cg * p.kvol * p.yvol) * sizeof(float);
    conv_dnnl_free(temp);
    if (!c->training && !c->din)
        return fwd;
    conv_dnnl_bwd *btemp, *b = dnnl_bwd_of(c, &p, &btemp);
    size_t bwd = b ? conv_dnnl_bwd_scratch(b, &p, c->nthreads) : 0;
    if (!b || !conv_dnnl_bwd_has_data(b)) {   /* our own backward (dX only, with b): a column buffer per
                                                 * worker, partial dW and dB per chunk */
        int64_t col_floats, part_floats, q, chunks;
        convb_sizes(&p, &col_floats, &part_floats);
        conv_bwd_chunks(p.N, 1, &q, &chunks);
        size_t own = ((size_t)item_workers(c, &p) * (size_t)col_floats + (size_t)(chunks * part_floats)) * sizeof(float);
        bwd = own > bwd ? own : bwd;
    }
    conv_dnnl_bwd_free(btemp);
    return bwd > fwd ? bwd : fwd;
}

/* Scratch holds `slices` equal slices of slice_bytes; returns how many fit (at least one needed). */
int conv_scratch_slices(qs_kctx *c, size_t slice_bytes, int slices, int *fit)
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


static clamp_t ctx_clamp(const qs_kctx *c)
{
    int inf = !c->training;
    return (clamp_t){ c->fused_act != 0 && inf, c->act_min, c->act_max,
                      inf && c->residual ? qs_f32(c->residual) : NULL, inf ? c->fused_pw : QS_PW_NONE,
                      c->pw_alpha, c->pw_beta };
}

/* One output plane: + bias *b (b may be NULL) + residual plane r (NULL: none), then the fused clamp,
 * in the unfused order (bias, then the Add, then the clamp) and in one pass; then the fused pointwise
 * activation. */
void conv_epilogue(float *y, const float *b, const float *r, int64_t vol, clamp_t cl)
{
    float bias = b ? *b : 0.f;
    if (r)
        qs_vec_bias_res_clamp(vol, bias, r, cl.on ? cl.lo : -INFINITY, cl.on ? cl.hi : INFINITY, y);
    else if (cl.on)
        qs_vec_bias_clamp(vol, bias, cl.lo, cl.hi, y);
    else if (b)
        qs_vec_add(vol, bias, y);
    switch (cl.pw) {
    case QS_PW_SILU: qs_vec_silu(vol, y, y); break;
    case QS_PW_SIGMOID: qs_vec_sigmoid(vol, y, y); break;
    case QS_PW_HARDSWISH: qs_vec_hardswish(vol, y, y); break;
    case QS_PW_HARDSIGMOID: qs_vec_hardsigmoid(vol, cl.pw_alpha, cl.pw_beta, y, y); break;
    default: break;
    }
}

/* conv_epilogue over items n0 .. n0 + N − 1, y pointing at item n0 (the residual is indexed from the
 * start of the batch) */
static void add_bias_at(float *y, const float *b, int64_t n0, int64_t N, int64_t M, int64_t vol, clamp_t cl)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            const float *r = cl.res ? cl.res + ((n0 + n) * M + m) * vol : NULL;
            conv_epilogue(y + (n * M + m) * vol, b ? b + m : NULL, r, vol, cl);
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

/* ---- Conv forward / backward ------------------------------------------------------------------------ */

typedef struct {
    const conv_p *p;
    const float *x, *w, *b;
    float *y, *col;
    int64_t col_floats;   /* one worker's column buffer */
    clamp_t clamp;
    const float *scale;   /* a folded Mul's s, C per item (1x1 path), or NULL */
    int64_t scale_step;   /* C, or 0 when one s serves every item */
} conv_job;

/* One item of a 1x1 convolution (group 1) on X·s: Y_n = W·diag(s_n)·X_n, the scale put on the smaller
 * operand (scaled_floats) in buf. On X it is the Mul's own product, so the result is the unfused
 * one's bit for bit; on W each term is rounded once more in another order (w·s, then ·x). */
static void conv_item_scaled(const conv_job *j, int64_t n, float *buf, qs_threadpool *tp, int nthreads)
{
    const conv_p *p = j->p;
    const float *s = j->scale + n * j->scale_step, *xn = j->x + n * p->C * p->xvol, *a = j->w, *bm = buf;
    float *yn = j->y + n * p->M * p->yvol;
    if (p->M <= p->xvol) {
        for (int64_t m = 0; m < p->M; m++)
            for (int64_t k = 0; k < p->C; k++)
                buf[m * p->C + k] = j->w[m * p->C + k] * s[k];
        a = buf;
        bm = xn;
    } else {
        for (int64_t k = 0; k < p->C; k++)
            for (int64_t i = 0; i < p->xvol; i++)
                buf[k * p->xvol + i] = xn[k * p->xvol + i] * s[k];
    }
    qs_sgemm_mt(tp, nthreads, 0, 0, p->M, p->yvol, p->C, 1.f, a, p->C, bm, p->yvol, 0.f, yn, p->yvol);
    add_bias_at(yn, j->b, n, 1, p->M, p->yvol, j->clamp);
}

/* One batch item: per group, Y_g = W_g · col(X_g) (col = X_g itself on the 1x1 path), then bias. */
static void conv_item(const conv_job *j, int64_t n, float *col, qs_threadpool *tp, int nthreads)
{
    const conv_p *p = j->p;
    int64_t K = p->Cg * p->kvol;
    if (j->scale) {
        conv_item_scaled(j, n, col, tp, nthreads);
        return;
    }
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
    int rc = conv_get(c, &p), workers = 1;
    if (rc < 0)
        return rc;
    const float *x = qs_f32(c->in[0]), *w = qs_f32(c->in[1]);
    const float *b = c->nin > 2 && c->in[2] ? qs_f32(c->in[2]) : NULL;
    float *y = qs_f32(c->out[0]);
    if (p.path == PATH_DW && !p.dnnl)
        return conv_dw_forward(c, &p, x, w, b, y, ctx_clamp(c));
    conv_dnnl *temp, *d = dnnl_of(c, &p, &temp);
    const qs_tensor *st = c->training ? NULL : c->in_scale;
    if (st && (d || p.path != PATH_1X1 || p.group != 1)) {   /* conv_xscale said no to this */
        conv_dnnl_free(temp);
        return qs_op_error(c, QS_EINVAL, "a scale of X was folded into a convolution that cannot take it");
    }
    if (d) {
        rc = conv_dnnl_forward(c, d, &p, x, w, b, y, ctx_clamp(c));
        conv_dnnl_free(temp);
        return rc;
    }
    int64_t col_floats = p.path == PATH_GEMM ? p.Cg * p.kvol * p.yvol : scaled_floats(c, &p);
    if ((rc = conv_scratch_slices(c, col_floats * sizeof(float), item_workers(c, &p), &workers)) < 0)
        return rc;
    conv_job j = { &p, x, w, b, y, c->scratch, col_floats, ctx_clamp(c), st ? qs_f32(st) : NULL,
                   st && st->shape[0] > 1 ? p.C : 0 };
    if (workers > 1) {   /* the batch is the best split: whole items, no synchronisation */
        qs_threadpool_for(c->pool, workers, p.N, 1, conv_items_range, &j);
    } else {
        for (int64_t n = 0; n < p.N; n++)
            conv_item(&j, n, j.col, c->pool, c->nthreads);
    }
    return 0;
}

/* Backward, GEMM and 1x1 paths. Per item and group: dW_g += dY_g · colᵀ and dcol = W_gᵀ · dY_g, then
 * col2im into dX. Chunks of items (conv_bwd_chunks) run in parallel, each worker with its own
 * column buffer and each chunk with its own partial dW and dB in scratch. */

typedef struct {
    const conv_p *p;
    const float *x, *w, *dy;
    float *dx, *dw, *db;     /* the serial case writes dw/db here directly */
    float *col, *part;       /* per worker a column buffer, per chunk partial dW then dB */
    int64_t col_floats, part_floats, q;
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

static void conv_back_range(void *arg, int64_t k0, int64_t k1, int worker)
{
    const convb_job *j = arg;
    const conv_p *p = j->p;
    float *col = j->col + worker * j->col_floats;
    for (int64_t k = k0; k < k1; k++) {
        float *dw = j->part + k * j->part_floats, *db = dw + p->M * p->Cg * p->kvol;
        if (j->part_floats)
            memset(dw, 0, j->part_floats * sizeof(float));
        for (int64_t n = k * j->q; n < (k + 1) * j->q && n < p->N; n++) {
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
}

/* floats of a backward worker's column buffer, and of one chunk's partial dW and dB */
static void convb_sizes(const conv_p *p, int64_t *col_floats, int64_t *part_floats)
{
    *col_floats = p->path == PATH_GEMM ? p->Cg * p->kvol * p->yvol : 0;
    *part_floats = p->M * p->Cg * p->kvol + p->M;
}

void conv_bwd_add_chunks(const float *part, int64_t part_floats, int64_t chunks, int64_t nw, int64_t M, float *dw,
                         float *db)
{
    if (chunks == 0) {   /* an empty batch */
        if (dw) memset(dw, 0, nw * sizeof(float));
        if (db) memset(db, 0, M * sizeof(float));
    }
    for (int64_t k = 0; k < chunks; k++, part += part_floats) {
        for (int64_t i = 0; dw && i < nw; i++)
            dw[i] = k ? dw[i] + part[i] : part[i];
        for (int64_t m = 0; db && m < M; m++)
            db[m] = k ? db[m] + part[nw + m] : part[nw + m];
    }
}

static int conv_backward(qs_kctx *c)
{
    conv_p p;
    int rc = conv_get(c, &p);
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
    if (p.path == PATH_DW)
        return conv_dw_backward(c, &p, x, w, dy, dx, dw, db);
    conv_dnnl_bwd *btemp, *b = dnnl_bwd_of(c, &p, &btemp);
    if (b) {   /* dW and dB on oneDNN, and dX when it offers a kernel for it (else ours below) */
        rc = conv_dnnl_backward(c, b, &p, x, w, dy, dx, dw, db);
        int done = rc < 0 || !dx || conv_dnnl_bwd_has_data(b);
        conv_dnnl_bwd_free(btemp);
        if (done)
            return rc;
        dw = db = NULL;
    }
    int64_t col_floats, part_floats, q, chunks;
    convb_sizes(&p, &col_floats, &part_floats);
    int sums = dw || db;
    conv_bwd_chunks(p.N, sums, &q, &chunks);
    convb_job j = { &p, x, w, dy, dx, dw, db, NULL, c->scratch, col_floats, sums ? part_floats : 0, q };
    size_t parts = (size_t)(chunks * j.part_floats) * sizeof(float), colb = (size_t)col_floats * sizeof(float);
    if (c->scratch && c->scratch_size >= parts + colb) {
        int64_t workers = item_workers(c, &p) < chunks ? item_workers(c, &p) : chunks;
        if (colb && (size_t)workers > (c->scratch_size - parts) / colb)
            workers = (int64_t)((c->scratch_size - parts) / colb);
        j.col = (float *)c->scratch + chunks * j.part_floats;
        qs_threadpool_for(workers > 1 ? c->pool : NULL, (int)(workers > 1 ? workers : 1), chunks, 1, conv_back_range, &j);
        if (sums)
            conv_bwd_add_chunks(j.part, j.part_floats, chunks, p.M * p.Cg * p.kvol, p.M, dw, db);
        return 0;
    }
    /* scratch sized for the forward only (a caller without a training plan): serially, dW and dB
     * summed item by item in place */
    j.col = c->scratch;
    int one;
    if ((rc = conv_scratch_slices(c, col_floats * sizeof(float), 1, &one)) < 0)
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

QS_OP_PARAMS(convt, conv_p, convt_params)

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
    if (convt_get((qs_kctx *)c, &p) < 0 || p.path != PATH_GEMM)
        return 0;
    return (size_t)(p.Mg * p.kvol * p.xvol) * sizeof(float);
}

static int convt_forward(qs_kctx *c)
{
    conv_p p;
    int rc = convt_get(c, &p), fit, nt = c->nthreads;
    if (rc < 0 || (rc = conv_scratch_slices(c, convt_scratch(c), 1, &fit)) < 0)
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
    int rc = convt_get(c, &p), fit, nt = c->nthreads;
    if (rc < 0 || (rc = conv_scratch_slices(c, convt_scratch(c), 1, &fit)) < 0)
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
    { .domain = "", .op = "Conv", .flags = QS_OP_FUSE_ACT | QS_OP_FUSE_RESIDUAL | QS_OP_FUSE_PW, .infer = conv_infer,
      .prepare = conv_prepare_dnnl, .release = conv_release, .scratch = conv_scratch, .blocked = conv_blocked,
      .xscale = conv_xscale, .forward = conv_forward, .backward = conv_backward },
    { .domain = "", .op = "ConvTranspose", .flags = QS_OP_FUSE_ACT, .infer = convt_infer, .prepare = convt_prepare,
      .scratch = convt_scratch, .forward = convt_forward, .backward = convt_backward },
    { .op = NULL },
};
