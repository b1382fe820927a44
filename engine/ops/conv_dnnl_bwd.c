/* Conv backward through oneDNN (libdnnl, C API), for the convolutions whose forward runs there
 * (conv_dnnl.c: 2-D, group 1, kernel larger than 1x1).
 *
 * Why: in a resnet18 QAT step at 224x224 the im2col + sgemm backward (dW = dY·colᵀ, dcol = Wᵀ·dY
 * and col2im) was the largest share of the step, as the forward was before it moved to oneDNN;
 * oneDNN's backward-data and backward-weights JIT kernels work on the blocked layout directly.
 *
 * Work split: the batch goes in fixed chunks (at most CHUNKS, of q items; the last may be shorter),
 * chosen from the batch size alone. Each chunk is one task on the executor's pool: its X and dY are
 * reordered into the blocked layout, backward-data gives its dX, backward-weights its partial dW and
 * dB into a buffer of its own. The partials are then summed in chunk order, element by element, so
 * dW and dB do not depend on the thread count (nor on which worker ran which chunk). oneDNN runs on
 * one OpenMP thread per call, as in the forward (conv_dnnl.c says why).
 *
 * If oneDNN offers no JIT backward-data kernel for the shape, dX is left to the caller's own path
 * (conv_dnnl_bwd_has_data); without a JIT backward-weights kernel there is no oneDNN backward. */
#include "ops/conv_dnnl.h"
#include "ops/conv_impl.h"

#include <stdlib.h>
#include <string.h>

/* Batch chunks: few, because each chunk's partial dW is written and summed (costly on late layers,
 * whose weights are large and planes small) and the backward-weights kernels run faster on more
 * items per call; enough for four threads. A constant, so the result is the same on any thread count. */
enum { CHUNKS = 4 };

/* the primitives and layouts of one chunk size */
typedef struct {
    dnnl_primitive_t data, wts;        /* backward data (NULL: dX on the caller's path), backward weights */
    dnnl_primitive_t rx, rdy, rdx;     /* X and dY into the kernels' layouts, dX out (NULL: plain is theirs) */
    dnnl_memory_desc_t xp, xb, dyp, dyb, dxp, dxb, dsp, wsp;   /* dsp, wsp: the kernels' scratchpads */
    size_t xbytes, dybytes, dxbytes;   /* the blocked buffers (0: none needed) */
} bwd_part;

struct conv_dnnl_bwd {
    int64_t q, chunks;
    bwd_part part[2];                  /* [0]: q items; [1]: the last chunk's, when shorter */
    dnnl_primitive_t rw, rdw;          /* W into backward data's layout; the summed dW out of backward weights' */
    dnnl_memory_desc_t wp, wb, dwb, dbp;   /* plain W (and dW), W for backward data, dW and dB as computed */
    size_t wbytes, dwbytes;            /* wbytes 0: backward data reads plain W; dwbytes: one partial dW */
    size_t spbytes;                    /* the largest scratchpad (one per worker) */
};

void conv_dnnl_bwd_free(conv_dnnl_bwd *b)
{
    if (!b)
        return;
    for (int k = 0; k < 2; k++) {
        bwd_part *pt = &b->part[k];
        conv_dnnl_release(pt->data);
        conv_dnnl_release(pt->wts);
        conv_dnnl_release(pt->rx);
        conv_dnnl_release(pt->rdy);
        conv_dnnl_release(pt->rdx);
    }
    conv_dnnl_release(b->rw);
    conv_dnnl_release(b->rdw);
    free(b);
}

int conv_dnnl_bwd_has_data(const conv_dnnl_bwd *b) { return b->part[0].data != NULL; }

typedef struct {
    dnnl_dims_t st, dil, pl, pr;
} geom_dims;

static geom_dims dims_of(const qs_conv_geom *g)
{
    return (geom_dims){ { g->stride[1], g->stride[2] }, { g->dil[1] - 1, g->dil[2] - 1 }, { g->pad[1], g->pad[2] },
                        { g->pad_end[1], g->pad_end[2] } };
}

/* a primitive descriptor that is a JIT kernel (else NULL: "gemm" or "ref" would be no faster than
 * ours), its scratchpad ours: oneDNN's own is safe only on the thread that made the primitive, and
 * our pool's workers run it (conv_dnnl.c) */
static dnnl_primitive_desc_t jit_pd(const void *desc, const_dnnl_primitive_desc_t hint)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr;
    const char *impl = "";
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    dnnl_status_t s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, desc, attr, conv_dnnl_engine(), hint);
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success)
        return NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || strncmp(impl, "jit", 3)) {
        dnnl_primitive_desc_destroy(pd);
        return NULL;
    }
    return pd;
}

/* X, W, Y descriptors for mb items with X in layout xt and Y in yt, W left to the kernel */
static int descs(const conv_p *p, int64_t mb, dnnl_format_tag_t xt, dnnl_format_tag_t yt, dnnl_memory_desc_t *x,
                 dnnl_memory_desc_t *w, dnnl_memory_desc_t *y)
{
    const qs_conv_geom *g = &p->g;
    dnnl_dims_t xd = { mb, p->C, g->in[1], g->in[2] }, yd = { mb, p->M, g->out[1], g->out[2] };
    dnnl_dims_t wd = { p->M, p->C, g->k[1], g->k[2] };
    return dnnl_memory_desc_init_by_tag(x, 4, xd, dnnl_f32, xt) == dnnl_success &&
                   dnnl_memory_desc_init_by_tag(y, 4, yd, dnnl_f32, yt) == dnnl_success &&
                   dnnl_memory_desc_init_by_tag(w, 4, wd, dnnl_f32, dnnl_format_tag_any) == dnnl_success
               ? 0
               : -1;
}

/* the forward-training descriptor that backward primitives take as their hint */
static dnnl_primitive_desc_t hint_pd(const conv_p *p, int64_t mb, dnnl_format_tag_t xt, dnnl_format_tag_t yt)
{
    geom_dims d = dims_of(&p->g);
    dnnl_memory_desc_t x, w, y;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;
    if (descs(p, mb, xt, yt, &x, &w, &y) < 0 ||
        dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &x, &w, NULL,
                                                   &y, d.st, d.dil, d.pl, d.pr) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &cd, NULL, conv_dnnl_engine(), NULL) != dnnl_success)
        return NULL;
    return pd;
}

/* backward weights (with the bias gradient) for mb items, X in xt, dY in yt; NULL: no JIT kernel */
static dnnl_primitive_desc_t wts_pd(const conv_p *p, int64_t mb, dnnl_format_tag_t xt, dnnl_format_tag_t yt)
{
    geom_dims d = dims_of(&p->g);
    dnnl_memory_desc_t x, w, y, bias;
    dnnl_convolution_desc_t cd;
    dnnl_dims_t bd = { p->M };
    dnnl_primitive_desc_t hint = hint_pd(p, mb, xt, yt), pd = NULL;
    if (hint && descs(p, mb, xt, yt, &x, &w, &y) == 0 &&
        dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x) == dnnl_success &&
        dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &x, &w, &bias, &y, d.st,
                                                            d.dil, d.pl, d.pr) == dnnl_success)
        pd = jit_pd(&cd, hint);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    return pd;
}

/* backward data for mb items, dX in xt, dY in yt; NULL: no JIT kernel */
static dnnl_primitive_desc_t data_pd(const conv_p *p, int64_t mb, dnnl_format_tag_t xt, dnnl_format_tag_t yt)
{
    geom_dims d = dims_of(&p->g);
    dnnl_memory_desc_t x, w, y;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t hint = hint_pd(p, mb, xt, yt), pd = NULL;
    if (hint && descs(p, mb, xt, yt, &x, &w, &y) == 0 &&
        dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &x, &w, &y, d.st, d.dil, d.pl,
                                                         d.pr) == dnnl_success)
        pd = jit_pd(&cd, hint);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    return pd;
}

static int plain(dnnl_memory_desc_t *md, int64_t d0, int64_t d1, int64_t h, int64_t w, dnnl_format_tag_t tag)
{
    dnnl_dims_t dims = { d0, d1, h, w };
    return dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32, tag) == dnnl_success ? 0 : -1;
}

/* Chunk size mb's primitives. The first (b->q items) fixes W's and dW's layouts, the other must
 * agree. 0 on success. */
static int make_part(conv_dnnl_bwd *b, const conv_p *p, int64_t mb, dnnl_format_tag_t blocked, int64_t blk,
                     bwd_part *pt, int first)
{
    const qs_conv_geom *g = &p->g;
    dnnl_primitive_desc_t wpd = wts_pd(p, mb, blocked, blocked), dpd = NULL;
    if (!wpd)   /* few input channels (a first layer): the kernels read plain X */
        wpd = wts_pd(p, mb, dnnl_nchw, blocked);
    if (!wpd)
        return -1;
    int rc = -1;
    pt->wsp = *dnnl_primitive_desc_query_md(wpd, dnnl_query_scratchpad_md, 0);
    pt->xb = *dnnl_primitive_desc_query_md(wpd, dnnl_query_src_md, 0);
    pt->dyb = *dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_dst_md, 0);
    const dnnl_memory_desc_t *dwb = dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_weights_md, 0);
    if (first)
        b->dwb = *dwb;
    else if (!dnnl_memory_desc_equal(dwb, &b->dwb))
        goto out;
    if (plain(&pt->xp, mb, p->C, g->in[1], g->in[2], dnnl_nchw) < 0 ||
        plain(&pt->dyp, mb, p->M, g->out[1], g->out[2], dnnl_nchw) < 0 ||
        plain(&pt->dxp, mb, p->C, g->in[1], g->in[2], dnnl_nchw) < 0 ||
        dnnl_primitive_create(&pt->wts, wpd) != dnnl_success || conv_dnnl_reorder(&pt->xp, &pt->xb, &pt->rx) < 0 ||
        conv_dnnl_reorder(&pt->dyp, &pt->dyb, &pt->rdy) < 0)
        goto out;
    pt->xbytes = conv_dnnl_buf_bytes(&pt->xp, &pt->xb);
    pt->dybytes = conv_dnnl_buf_bytes(&pt->dyp, &pt->dyb);
    /* backward data: dX blocked, else plain; it must read dY as backward weights does */
    if ((first || b->part[0].data) && p->C >= blk) {
        dpd = data_pd(p, mb, blocked, blocked);
        if (!dpd)
            dpd = data_pd(p, mb, dnnl_nchw, blocked);
    }
    if (dpd && !dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(dpd, dnnl_query_diff_dst_md, 0), &pt->dyb)) {
        dnnl_primitive_desc_destroy(dpd);
        dpd = NULL;
    }
    if (dpd) {
        const dnnl_memory_desc_t *wb = dnnl_primitive_desc_query_md(dpd, dnnl_query_weights_md, 0);
        if (first)
            b->wb = *wb;
        pt->dxb = *dnnl_primitive_desc_query_md(dpd, dnnl_query_diff_src_md, 0);
        pt->dsp = *dnnl_primitive_desc_query_md(dpd, dnnl_query_scratchpad_md, 0);
        if ((!first && !dnnl_memory_desc_equal(wb, &b->wb)) || dnnl_primitive_create(&pt->data, dpd) != dnnl_success ||
            conv_dnnl_reorder(&pt->dxb, &pt->dxp, &pt->rdx) < 0)
            goto out;
        pt->dxbytes = conv_dnnl_buf_bytes(&pt->dxp, &pt->dxb);
    }
    rc = 0;
out:
    dnnl_primitive_desc_destroy(wpd);
    if (dpd)
        dnnl_primitive_desc_destroy(dpd);
    return rc;
}

conv_dnnl_bwd *conv_dnnl_bwd_new(const conv_p *p)
{
    int64_t blk = conv_dnnl_block();
    dnnl_format_tag_t blocked = blk == 16 ? dnnl_nChw16c : dnnl_nChw8c;
    /* the forward's shapes with plain activations (conv_dnnl_new) */
    if (!conv_dnnl_engine() || !blk || p->path != PATH_GEMM || p->kvol == 1 || p->group != 1 || p->g.nd != 2 ||
        p->N < 1)
        return NULL;
    conv_dnnl_bwd *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    int64_t want = p->N < CHUNKS ? p->N : CHUNKS;
    b->q = (p->N + want - 1) / want;
    b->chunks = (p->N + b->q - 1) / b->q;
    int64_t tail = p->N - (b->chunks - 1) * b->q;
    dnnl_stream_t st = conv_dnnl_stream();   /* sets this thread's OpenMP team to one: oneDNN plans for it */
    if (st)
        dnnl_stream_destroy(st);
    if (!st || make_part(b, p, b->q, blocked, blk, &b->part[0], 1) < 0 ||
        (tail != b->q && make_part(b, p, tail, blocked, blk, &b->part[1], 0) < 0) ||
        plain(&b->wp, p->M, p->C, p->g.k[1], p->g.k[2], dnnl_oihw) < 0 ||
        dnnl_memory_desc_init_by_tag(&b->dbp, 1, (dnnl_dims_t){ p->M }, dnnl_f32, dnnl_x) != dnnl_success ||
        conv_dnnl_reorder(&b->dwb, &b->wp, &b->rdw) < 0)
        goto fail;
    if ((tail != b->q) && (!b->part[0].data) != (!b->part[1].data)) {   /* both chunk sizes give dX, or neither */
        conv_dnnl_release(b->part[0].data);
        conv_dnnl_release(b->part[1].data);
        b->part[0].data = b->part[1].data = NULL;
    }
    if (b->part[0].data && conv_dnnl_reorder(&b->wp, &b->wb, &b->rw) < 0)
        goto fail;
    b->wbytes = b->part[0].data ? conv_dnnl_buf_bytes(&b->wp, &b->wb) : 0;
    b->dwbytes = dnnl_memory_desc_get_size(&b->dwb);
    for (int k = 0; k < 2; k++) {
        size_t sw = dnnl_memory_desc_get_size(&b->part[k].wsp), sd = dnnl_memory_desc_get_size(&b->part[k].dsp);
        sw = sw > sd ? sw : sd;
        b->spbytes = sw > b->spbytes ? sw : b->spbytes;
    }
    return b;
fail:
    conv_dnnl_bwd_free(b);
    return NULL;
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

static int64_t workers_of(const conv_dnnl_bwd *b, int nthreads)
{
    int64_t nt = nthreads > 1 ? nthreads : 1;
    return nt < b->chunks ? nt : b->chunks;
}

/* scratch: W for backward data; per chunk a partial dW and dB; per worker one chunk's X, dY, dX and
 * a scratchpad */
static size_t partial_bytes(const conv_dnnl_bwd *b, const conv_p *p)
{
    return round64(b->dwbytes) + round64((size_t)p->M * sizeof(float));
}

static size_t worker_bytes(const conv_dnnl_bwd *b)
{
    const bwd_part *pt = &b->part[0];
    return round64(pt->xbytes) + round64(pt->dybytes) + round64(pt->data ? pt->dxbytes : 0) + round64(b->spbytes);
}

size_t conv_dnnl_bwd_scratch(const conv_dnnl_bwd *b, const conv_p *p, int nthreads)
{
    return round64(b->wbytes) + (size_t)b->chunks * partial_bytes(b, p) + (size_t)workers_of(b, nthreads) * worker_bytes(b);
}

typedef struct {
    const conv_dnnl_bwd *b;
    const conv_p *p;
    const float *x, *w, *dy;
    float *dx;
    char *wbuf, *partials, *bufs;
    int failed;
} bwd_job;

/* runs primitive prim on n arguments (memory objects made over the buffers and dropped here), and its
 * scratchpad sp (none when its size is 0) */
static int execute(dnnl_primitive_t prim, dnnl_stream_t st, int n, const int *args, const dnnl_memory_desc_t *const *mds,
                   const void *const *bufs, const dnnl_memory_desc_t *sp, void *spbuf)
{
    dnnl_exec_arg_t a[5];
    int rc = 0;
    for (int i = 0; i < n; i++) {
        a[i] = (dnnl_exec_arg_t){ args[i], conv_dnnl_mem(mds[i], bufs[i]) };
        rc |= a[i].memory ? 0 : -1;
    }
    if (dnnl_memory_desc_get_size(sp)) {
        a[n] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, conv_dnnl_mem(sp, spbuf) };
        rc |= a[n++].memory ? 0 : -1;
    }
    if (!rc)
        rc = dnnl_primitive_execute(prim, st, n, a) == dnnl_success && dnnl_stream_wait(st) == dnnl_success ? 0 : -1;
    for (int i = 0; i < n; i++)
        dnnl_memory_destroy(a[i].memory);
    return rc;
}

/* chunk k: X and dY in, dX out (when asked and offered), partial dW and dB into the chunk's buffer */
static int chunk(const bwd_job *j, int64_t k, char *buf, dnnl_stream_t st)
{
    const conv_dnnl_bwd *b = j->b;
    const conv_p *p = j->p;
    const bwd_part *pt = k == b->chunks - 1 && b->part[1].wts ? &b->part[1] : &b->part[0];
    int64_t n0 = k * b->q;
    const float *x = j->x + n0 * p->C * p->xvol, *dy = j->dy + n0 * p->M * p->yvol;
    char *xbuf = buf, *dybuf = xbuf + round64(b->part[0].xbytes), *dxbuf = dybuf + round64(b->part[0].dybytes);
    char *spbuf = dxbuf + round64(b->part[0].data ? b->part[0].dxbytes : 0);
    const void *xb = pt->rx ? (const void *)xbuf : (const void *)x, *dyb = pt->rdy ? (const void *)dybuf : (const void *)dy;
    if ((pt->rx && conv_dnnl_run_reorder(pt->rx, st, &pt->xp, x, &pt->xb, xbuf) < 0) ||
        (pt->rdy && conv_dnnl_run_reorder(pt->rdy, st, &pt->dyp, dy, &pt->dyb, dybuf) < 0))
        return -1;
    if (j->dx && pt->data) {
        float *dx = j->dx + n0 * p->C * p->xvol;
        void *dxb = pt->rdx ? (void *)dxbuf : (void *)dx;
        const void *wb = b->rw ? (const void *)j->wbuf : (const void *)j->w;
        if (execute(pt->data, st, 3, (const int[]){ DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC },
                    (const dnnl_memory_desc_t *const[]){ &pt->dyb, &b->wb, &pt->dxb }, (const void *const[]){ dyb, wb, dxb }, &pt->dsp, spbuf) < 0 ||
            (pt->rdx && conv_dnnl_run_reorder(pt->rdx, st, &pt->dxb, dxb, &pt->dxp, dx) < 0))
            return -1;
    }
    char *dw = j->partials + k * partial_bytes(b, p), *db = dw + round64(b->dwbytes);
    return execute(pt->wts, st, 4, (const int[]){ DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS },
                   (const dnnl_memory_desc_t *const[]){ &pt->xb, &pt->dyb, &b->dwb, &b->dbp },
                   (const void *const[]){ xb, dyb, dw, db }, &pt->wsp, spbuf);
}

static void chunk_range(void *arg, int64_t k0, int64_t k1, int worker)
{
    bwd_job *j = arg;
    dnnl_stream_t st = conv_dnnl_stream();
    if (!st) {
        j->failed = 1;
        return;
    }
    for (int64_t k = k0; k < k1 && !j->failed; k++)
        if (chunk(j, k, j->bufs + worker * worker_bytes(j->b), st) < 0)
            j->failed = 1;
    dnnl_stream_destroy(st);
}

/* partials[0] = Σ_k partials[k] in chunk order: index i < dW's floats (its blocked buffer, padding
 * included) is dW's, the rest dB's */
static void sum_range(void *arg, int64_t i0, int64_t i1, int worker)
{
    const bwd_job *j = arg;
    size_t stride = partial_bytes(j->b, j->p) / sizeof(float);
    int64_t nw = (int64_t)(j->b->dwbytes / sizeof(float)), gap = (int64_t)(round64(j->b->dwbytes) / sizeof(float)) - nw;
    float *p0 = (float *)j->partials;
    for (int64_t k = 1; k < j->b->chunks; k++) {
        const float *pk = p0 + k * stride;
        for (int64_t i = i0; i < i1; i++) {
            int64_t at = i < nw ? i : i + gap;
            p0[at] += pk[at];
        }
    }
}

int conv_dnnl_backward(qs_kctx *c, const conv_dnnl_bwd *b, const conv_p *p, const float *x, const float *w,
                       const float *dy, float *dx, float *dw, float *db)
{
    size_t need = conv_dnnl_bwd_scratch(b, p, c->nthreads);
    if (!c->scratch || c->scratch_size < need)
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes given, %zu needed", c->scratch_size, need);
    char *sc = c->scratch;
    int64_t workers = workers_of(b, c->nthreads);
    bwd_job j = { b, p, x, w, dy, dx, sc, sc + round64(b->wbytes), sc + round64(b->wbytes) + b->chunks * partial_bytes(b, p),
                  0 };
    dnnl_stream_t st = conv_dnnl_stream();   /* the weights may change between steps: reordered every call */
    if (!st || (dx && b->rw && conv_dnnl_run_reorder(b->rw, st, &b->wp, w, &b->wb, j.wbuf) < 0))
        j.failed = 1;
    if (st)
        dnnl_stream_destroy(st);
    if (!j.failed)
        qs_threadpool_for(workers > 1 ? c->pool : NULL, (int)workers, b->chunks, 1, chunk_range, &j);
    if (j.failed)
        return qs_op_error(c, QS_ENOMEM, "oneDNN convolution backward failed (out of memory?)");
    /* the partials, summed in chunk order: each element by one worker, so the order is fixed */
    int64_t floats = (int64_t)(b->dwbytes / sizeof(float)) + p->M, nt = c->nthreads > 1 ? c->nthreads : 1;
    qs_threadpool_for(nt > 1 ? c->pool : NULL, (int)nt, floats, 4096, sum_range, &j);
    const float *dw0 = (const float *)j.partials, *db0 = (const float *)(j.partials + round64(b->dwbytes));
    if (dw) {
        if (b->rdw) {
            st = conv_dnnl_stream();
            int rc = st ? conv_dnnl_run_reorder(b->rdw, st, &b->dwb, dw0, &b->wp, dw) : -1;
            if (st)
                dnnl_stream_destroy(st);
            if (rc < 0)
                return qs_op_error(c, QS_ENOMEM, "oneDNN convolution backward failed (out of memory?)");
        } else {
            memcpy(dw, dw0, (size_t)p->M * p->C * p->kvol * sizeof(float));
        }
    }
    if (db)
        memcpy(db, db0, (size_t)p->M * sizeof(float));
    return 0;
}
