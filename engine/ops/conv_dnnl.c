/* Conv forward through oneDNN's blocked direct convolutions (libdnnl, C API).
 *
 * Why: on this project's x86 machines oneDNN's JIT kernels run a 3x3 convolution at ~150 GFLOP per
 * CPU-second against ~45–90 for im2col + OpenBLAS sgemm (bench/bench_conv_dnnl.c; docs/benchmarks.md).
 * They want the activations in a channel-blocked layout (nChw16c on AVX-512, nChw8c on AVX2), so each
 * call reorders X into it and Y back out of it, and the weights into their blocked layout: that costs
 * more than it saves on 1x1 convolutions (OpenBLAS already runs those at ~90–110 GFLOP/s with no copy)
 * and on depthwise ones, so with X and Y in NCHW only the general path (kernel larger than one, or
 * strided) comes here; 1x1 and depthwise kernels do when the plan keeps their activations blocked
 * (exec_layout.c), where no reorder is paid.
 *
 * Only 2-D convolutions with group 1 are offered to oneDNN, and depthwise ones (one output channel per
 * input channel) in a chain of blocked activations; only a JIT implementation is taken
 * (a "gemm" or "ref" one would be no faster than ours): otherwise conv_dnnl_new gives NULL and the
 * caller keeps its own path, which also stays the reference the tests compare against.
 *
 * Threads: Debian's libdnnl runs on OpenMP, as the pool's loops do (threadpool.c). The work is split
 * by batch item over the pool, each item's convolution on one OpenMP thread
 * (omp_set_num_threads(1)). When the batch is smaller than the thread count, the calling thread
 * leads a team of the pool's threads through one item at a time and oneDNN splits each convolution
 * over it (mobilenet_v2 at batch 1 on 2 threads: 5.1 to 3.7 ms). Built without OpenMP, the pool's
 * workers are not OpenMP threads, and the output channels are split into slices instead, one per
 * thread (a primitive per slice width; X is reordered once per item, the weights once per slice,
 * before the slices run).
 *
 * Bias, the fused residual and the clamp are applied by conv_epilogue after the reorder back, in the
 * same order as the GEMM path. */
#include "ops/conv_impl.h"
#include "ops/conv_dnnl.h"
#include "threadpool.h"

#include <math.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* one slice width: its convolution and the layouts of its Y and W slices */
typedef struct {
    dnnl_primitive_t conv, ry, rw;       /* ry / rw: NULL when the plain layout is the one used */
    dnnl_primitive_t rr;                 /* Y blocked, residual plain: the residual into Y */
    dnnl_memory_desc_t xs;               /* the X it reads: one item's, or (depthwise) its channels' */
    dnnl_memory_desc_t yp, yb, wp, wb;   /* plain (user) and blocked layouts */
    dnnl_memory_desc_t sp;               /* the kernel's scratchpad, ours (see conv_attr) */
    dnnl_memory_desc_t rwsp;             /* rw's (Winograd's weights transform): allocated as it runs */
    size_t ybytes, wbytes, spbytes;      /* blocked buffers (0: none needed) */
} dnnl_part;

struct conv_dnnl {
    int flags;                 /* CONV_DNNL_* */
    int64_t ipt;               /* items per task: several small ones share a call (see items_per_task) */
    int64_t xn, yn, rn;        /* floats per task's items of X, Y and the residual as laid out (blocked: padded) */
    int64_t slices, ms;        /* output channels in `slices` slices of ms (the last may be shorter) */
    int team;                  /* >1: one task at a time, which oneDNN splits over up to this many threads */
    dnnl_part part[2];         /* [0]: width ms; [1]: the last slice's, when shorter */
    dnnl_primitive_t rx;
    dnnl_memory_desc_t xp, xb; /* one item of X: plain, and as the convolution takes it */
    char kernel[48];           /* oneDNN's name for it */
    size_t xbytes;
    /* the weights kept in their blocked layout between calls (NULL: reordered into scratch on every
     * call), valid while W's data and the graph's weight generation are those they came from */
    char *wkeep;
    const float *wkeep_src;
    uint64_t wkeep_gen;
};

static int g_enabled = 1, g_blocked = 1, g_wino = 1;
static dnnl_engine_t g_engine;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void engine_init(void)
{
    const char *env = getenv("QUANT_CONV_DNNL");   /* "0": our own path only (benchmarks compare the two) */
    if (env && !strcmp(env, "0"))
        g_enabled = 0;
    env = getenv("QUANT_CONV_BLOCKED");   /* "0": NCHW between ops, reorders in every call */
    if (env && !strcmp(env, "0"))
        g_blocked = 0;
    env = getenv("QUANT_CONV_WINOGRAD");   /* "0": the direct algorithm only */
    if (env && !strcmp(env, "0"))
        g_wino = 0;
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success)
        g_engine = NULL;
}

void conv_dnnl_enable(int on)
{
    pthread_once(&g_once, engine_init);
    g_enabled = on;
}

int conv_dnnl_enabled(void) { return g_enabled; }

const char *conv_dnnl_kernel(const conv_dnnl *d) { return d->kernel; }

void conv_dnnl_free(conv_dnnl *d)
{
    if (!d)
        return;
    for (int k = 0; k < 2; k++) {
        conv_dnnl_release(d->part[k].conv);
        conv_dnnl_release(d->part[k].ry);
        conv_dnnl_release(d->part[k].rw);
        conv_dnnl_release(d->part[k].rr);
    }
    conv_dnnl_release(d->rx);
    free(d->wkeep);
    free(d);
}

/* a reorder from one layout to another, or NULL (and success) when they are the same; sp: where a
 * reorder that needs a scratchpad may say so (NULL: refused) */
static int reorder_sp(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out,
                      dnnl_memory_desc_t *sp)
{
    *out = NULL;
    if (dnnl_memory_desc_equal(from, to))
        return 0;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_attr_t attr;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return -1;
    dnnl_status_t s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success)
        s = dnnl_reorder_primitive_desc_create(&pd, from, g_engine, to, g_engine, attr);
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success)
        return -1;
    /* a plain f32 reorder needs no scratchpad; one that did would need a buffer per worker */
    const dnnl_memory_desc_t *spmd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (sp)
        *sp = *spmd;
    if (sp || dnnl_memory_desc_get_size(spmd) == 0)
        s = dnnl_primitive_create(out, pd);
    else
        s = dnnl_unimplemented;
    dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? 0 : -1;
}

static int reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out)
{
    return reorder_sp(from, to, out, NULL);
}

static size_t buf_bytes(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to)
{
    return dnnl_memory_desc_equal(from, to) ? 0 : dnnl_memory_desc_get_size(to);
}

/* the epilogue runs inside the kernel: when Y or the residual is blocked */
static int in_kernel(int flags) { return flags & (CONV_DNNL_Y_BLOCKED | CONV_DNNL_R_BLOCKED); }

/* The kernel's attributes. The scratchpad is ours (a slice of each worker's scratch): oneDNN's own
 * is shared by all primitives and safe only on the thread that made the primitive, and our pool's
 * workers run them (a strided 1x1 kernel uses one). With Y or the residual blocked, the epilogue
 * runs in the kernel, in the order of the unfused graph: the bias, the residual (a sum post-op: the
 * blocked Y holds it before the call), the clamp, then the pointwise activation (SiLU as swish with
 * α = 1, Sigmoid, HardSwish). */
static dnnl_primitive_attr_t conv_attr(int flags, const clamp_t *cl)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success) {
        dnnl_primitive_attr_destroy(attr);
        return NULL;
    }
    if (!in_kernel(flags) || !(flags & CONV_DNNL_RESIDUAL || cl->on || cl->pw))
        return attr;
    if (dnnl_post_ops_create(&po) != dnnl_success) {
        dnnl_primitive_attr_destroy(attr);
        return NULL;
    }
    int ok = !(flags & CONV_DNNL_RESIDUAL) || dnnl_post_ops_append_sum(po, 1.f) == dnnl_success;
    if (ok && cl->on)
        ok = (cl->lo == 0 && cl->hi == INFINITY ? dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0, 0)
                                                : dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip, cl->lo,
                                                                               cl->hi)) == dnnl_success;
    if (ok && cl->pw) {   /* (oneDNN 2.6 has no HardSigmoid: such a node keeps its Y plain) */
        dnnl_alg_kind_t alg = cl->pw == QS_PW_SILU        ? dnnl_eltwise_swish
                            : cl->pw == QS_PW_SIGMOID     ? dnnl_eltwise_logistic
                            : cl->pw == QS_PW_HARDSWISH   ? dnnl_eltwise_hardswish
                                                          : dnnl_alg_kind_undef;
        ok = alg != dnnl_alg_kind_undef && dnnl_post_ops_append_eltwise(po, 1.f, alg, 1.f, 0) == dnnl_success;
    }
    ok = ok && dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    dnnl_post_ops_destroy(po);
    if (!ok) {
        dnnl_primitive_attr_destroy(attr);
        attr = NULL;
    }
    return attr;
}

/* Winograd's F(2x2, 3x3) (Lavin & Gray, 2016) for a 3x3, stride-1, undilated, group-1 kernel between
 * blocked activations: oneDNN 2.6 has it for AVX-512 (jit_fp32_wino_2x3), in about 0.55x the time of
 * the direct kernel on resnet18's and resnet50's 3x3 layers at batch 1 and 32, on 1 and 2 threads.
 * It transforms 4x4 tiles of X and multiplies 16 products where the direct sum takes 36; the
 * transforms' constants are 0, ±1 and ±1/2, so the results differ from the direct sum by rounding
 * only (the torchvision models' outputs stay within 1e-4 of PyTorch's; test-ops-conv-dnnl compares
 * with our own loops). QUANT_CONV_WINOGRAD=0 turns it off. */
static int wino_ok(const conv_p *p, dnnl_format_tag_t xt, dnnl_format_tag_t yt)
{
    const qs_conv_geom *g = &p->g;
    return g_wino && p->path != PATH_DW && p->group == 1 && xt == dnnl_nChw16c && yt == dnnl_nChw16c &&
           p->C % 16 == 0 && p->M % 16 == 0 &&   /* whole blocks: a padded one is work for nothing */
           g->k[1] == 3 && g->k[2] == 3 && g->stride[1] == 1 && g->stride[2] == 1 && g->dil[1] == 1 &&
           g->dil[2] == 1;
}

/* A primitive descriptor for n items, ms output channels, X in layout xt and Y in yt (weights:
 * whatever the kernel wants; with Y blocked, the bias and the fused epilogue too), or NULL when that
 * is not a JIT kernel (a "gemm" or "ref" one would be no faster than ours). */
static dnnl_primitive_desc_t conv_pd(const conv_p *p, int64_t n, int64_t ms, dnnl_format_tag_t xt,
                                     dnnl_format_tag_t yt, int flags, const clamp_t *cl)
{
    const qs_conv_geom *g = &p->g;
    int dw = p->path == PATH_DW;
    dnnl_dims_t xd = { n, dw ? ms : p->C, g->in[1], g->in[2] }, yd = { n, ms, g->out[1], g->out[2] };
    dnnl_dims_t wd = { ms, p->C, g->k[1], g->k[2] }, wgd = { ms, 1, 1, g->k[1], g->k[2] };
    dnnl_dims_t st = { g->stride[1], g->stride[2] }, dil = { g->dil[1] - 1, g->dil[2] - 1 };
    dnnl_dims_t pl = { g->pad[1], g->pad[2] }, pr = { g->pad_end[1], g->pad_end[2] };
    dnnl_dims_t bd = { ms };
    dnnl_memory_desc_t xa, ya, wa, ba;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;
    const char *impl = "";
    int yb = in_kernel(flags), bias = yb && (flags & CONV_DNNL_BIAS);
    dnnl_primitive_attr_t attr = conv_attr(flags, cl);
    if (!attr ||
        dnnl_memory_desc_init_by_tag(&xa, 4, xd, dnnl_f32, xt) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&ya, 4, yd, dnnl_f32, yt) != dnnl_success ||
        (dw ? dnnl_memory_desc_init_by_tag(&wa, 5, wgd, dnnl_f32, dnnl_format_tag_any)
            : dnnl_memory_desc_init_by_tag(&wa, 4, wd, dnnl_f32, dnnl_format_tag_any)) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&ba, 1, bd, dnnl_f32, dnnl_a) != dnnl_success)
        goto out;
    /* Winograd's F(2x2, 3x3) first where it applies (see wino_ok), else the direct algorithm */
    for (int a = wino_ok(p, xt, yt) ? 0 : 1; a < 2 && !pd; a++)
        if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                       a ? dnnl_convolution_direct : dnnl_convolution_winograd, &xa,
                                                       &wa, bias ? &ba : NULL, &ya, st, dil, pl, pr) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, attr, g_engine, NULL) != dnnl_success)
            pd = NULL;
out:
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (!pd)
        return NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || strncmp(impl, "jit", 3)) {
        dnnl_primitive_desc_destroy(pd);
        return NULL;
    }
    return pd;
}

/* one slice width's primitives; X's layouts come from the first (0 on success) */
static int make_part(conv_dnnl *d, const conv_p *p, int64_t ms, dnnl_format_tag_t blocked, dnnl_part *pt, int first,
                     const clamp_t *cl)
{
    const qs_conv_geom *g = &p->g;
    dnnl_primitive_desc_t pd = conv_pd(p, d->ipt, ms, blocked, blocked, d->flags, cl);
    if (!pd && !(d->flags & CONV_DNNL_X_BLOCKED))   /* few input channels (a first layer): plain X */
        pd = conv_pd(p, d->ipt, ms, dnnl_nchw, blocked, d->flags, cl);
    if (!pd)
        return -1;
    int dw = p->path == PATH_DW;
    dnnl_dims_t yd = { d->ipt, ms, g->out[1], g->out[2] }, wd = { ms, p->C, g->k[1], g->k[2] };
    dnnl_dims_t xsd = { d->ipt, ms, g->in[1], g->in[2] }, wgd = { ms, 1, 1, g->k[1], g->k[2] };
    dnnl_memory_desc_t xe;
    int rc = -1;
    if (dnnl_memory_desc_init_by_tag(&pt->yp, 4, yd, dnnl_f32, dnnl_nchw) != dnnl_success ||
        (dw ? dnnl_memory_desc_init_by_tag(&pt->wp, 5, wgd, dnnl_f32, dnnl_goihw)
            : dnnl_memory_desc_init_by_tag(&pt->wp, 4, wd, dnnl_f32, dnnl_oihw)) != dnnl_success)
        goto out;
    const char *impl = "";
    if (first && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success)
        snprintf(d->kernel, sizeof d->kernel, "%s", impl);
    pt->xs = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    if (dw) {   /* a slice reads its own channels, whole blocks from channel m0 on: X + m0·H·W, blocked */
        if (dnnl_memory_desc_init_by_tag(&xe, 4, xsd, dnnl_f32, blocked) != dnnl_success ||
            !dnnl_memory_desc_equal(&pt->xs, &xe))
            goto out;
    } else if (first) {
        d->xb = pt->xs;
    } else if (!dnnl_memory_desc_equal(&pt->xs, &d->xb)) {   /* both widths must read the same blocked X */
        goto out;
    }
    pt->yb = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    pt->wb = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    pt->sp = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    pt->spbytes = dnnl_memory_desc_get_size(&pt->sp);
    int yblk = d->flags & CONV_DNNL_Y_BLOCKED;
    if (dnnl_primitive_create(&pt->conv, pd) != dnnl_success || (!yblk && reorder(&pt->yb, &pt->yp, &pt->ry) < 0) ||
        reorder_sp(&pt->wp, &pt->wb, &pt->rw, &pt->rwsp) < 0 ||
        (yblk && (d->flags & CONV_DNNL_RESIDUAL) && !(d->flags & CONV_DNNL_R_BLOCKED) &&
         reorder(&pt->yp, &pt->yb, &pt->rr) < 0))
        goto out;
    pt->ybytes = yblk ? 0 : buf_bytes(&pt->yp, &pt->yb);
    pt->wbytes = buf_bytes(&pt->wp, &pt->wb);
    rc = 0;
out:
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

/* the weights of every slice, blocked */
static size_t w_bytes(const conv_dnnl *d) { return (size_t)d->slices * round64(d->part[0].wbytes); }

int conv_dnnl_block(void)
{
    pthread_once(&g_once, engine_init);
    if (!g_enabled || !g_engine)
        return 0;
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? 16
         : (isa & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2               ? 8
                                                                         : 0;
}

int conv_dnnl_blocked_enabled(void)
{
    pthread_once(&g_once, engine_init);
    return g_blocked;
}

/* Items per call. A call costs oneDNN 1-2 µs besides the kernel (its memory objects and argument
 * map), as much as a small layer's item: the fixture MobileNet's layers on 14x14 and 7x7 planes
 * spent 45% of their time there at batch 64. So an item of under 2^18 multiply-adds shares its call
 * with others, up to 8 and 2^21 multiply-adds a call, while every thread still gets a call: the most
 * that divides the batch (a plan's batch is fixed). Larger items take a call each: handing
 * resnet18's layers several items per call made them slower (session 14). */
static int64_t items_per_task(const conv_p *p, int64_t nt)
{
    int64_t macs = p->M * p->Cg * p->kvol * p->yvol, best = 1;
    if (macs >= (1 << 18))
        return 1;
    for (int64_t k = 2; k <= 8 && k * macs <= (1 << 21) && p->N / k >= nt; k++)
        if (p->N % k == 0)
            best = k;
    return best;
}

conv_dnnl *conv_dnnl_new(const conv_p *p, int nthreads, int flags, clamp_t cl)
{
    const qs_conv_geom *g = &p->g;
    int64_t blk = conv_dnnl_block();
    int xy = flags & (CONV_DNNL_X_BLOCKED | CONV_DNNL_Y_BLOCKED | CONV_DNNL_R_BLOCKED);
    /* A 1x1 kernel stays with OpenBLAS, even strided, when X, Y and R are plain: the reorders would cost
     * more than the kernel saves; a depthwise one with our own loops (conv_dw.c), for the same reason.
     * Depthwise here: one output channel per input channel, in a blocked chain. Blocked activations
     * hold whole blocks of channels, padded (qs_block_pads_well). */
    int dw = p->path == PATH_DW && p->Cg == 1 && p->M == p->C && xy;
    if (!blk || (p->path == PATH_DW && !dw) || (!xy && (p->path != PATH_GEMM || p->kvol == 1)) ||
        (p->group != 1 && !dw) || g->nd != 2 || p->N < 1 ||
        (flags & CONV_DNNL_X_BLOCKED && !qs_block_pads_well(p->C, blk)) ||
        ((flags & (CONV_DNNL_Y_BLOCKED | CONV_DNNL_R_BLOCKED)) && !qs_block_pads_well(p->M, blk)))
        return NULL;
    dnnl_format_tag_t blocked = blk == 16 ? dnnl_nChw16c : dnnl_nChw8c;
    conv_dnnl *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->flags = flags;
    int64_t cp = qs_block_padded(p->C, blk), mp = qs_block_padded(p->M, blk);
    /* a batch smaller than the thread count: output channels in slices of whole blocks, one per thread */
    int64_t nt = nthreads > 1 ? nthreads : 1, want = p->N >= nt ? 1 : nt, blocks = (p->M + blk - 1) / blk;
    d->ipt = want == 1 ? items_per_task(p, nt) : 1;
    d->xn = d->ipt * (flags & CONV_DNNL_X_BLOCKED ? cp : p->C) * p->xvol;
    d->yn = d->ipt * (flags & CONV_DNNL_Y_BLOCKED ? mp : p->M) * p->yvol;
    d->rn = d->ipt * (flags & CONV_DNNL_R_BLOCKED ? mp : p->M) * p->yvol;
    if (want > 1 && qs_threadpool_openmp()) {   /* on the pool's OpenMP threads, as oneDNN splits it */
        d->team = (int)nt;
        want = 1;
    }
    if (want > blocks)
        want = blocks;
    d->ms = (blocks + want - 1) / want * blk;
    if (d->ms > p->M)
        d->ms = p->M;
    d->slices = (p->M + d->ms - 1) / d->ms;
    int64_t tail = p->M - (d->slices - 1) * d->ms;
    omp_set_num_threads(d->team ? d->team : 1);   /* oneDNN sizes its work split and scratchpad by this */
    dnnl_dims_t xd = { d->ipt, p->C, g->in[1], g->in[2] };
    dnnl_memory_desc_t xblk;
    if (dnnl_memory_desc_init_by_tag(&d->xp, 4, xd, dnnl_f32, dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&xblk, 4, xd, dnnl_f32, blocked) != dnnl_success) {
        conv_dnnl_free(d);
        return NULL;
    }
    if (dw)   /* X whole and blocked; each slice reads its channels' blocks of it (make_part) */
        d->xb = xblk;
    if (make_part(d, p, d->ms, blocked, &d->part[0], 1, &cl) < 0 ||
        (tail != d->ms && make_part(d, p, tail, blocked, &d->part[1], 0, &cl) < 0) ||
        (flags & CONV_DNNL_X_BLOCKED && !dnnl_memory_desc_equal(&xblk, &d->xb)) ||
        (!(flags & CONV_DNNL_X_BLOCKED) && reorder(&d->xp, &d->xb, &d->rx) < 0)) {
        conv_dnnl_free(d);
        return NULL;
    }
    d->xbytes = flags & CONV_DNNL_X_BLOCKED ? 0 : buf_bytes(&d->xp, &d->xb);
    if (flags & CONV_DNNL_KEEP_W && w_bytes(d) && !(d->wkeep = aligned_alloc(64, w_bytes(d)))) {
        conv_dnnl_free(d);
        return NULL;
    }
    return d;
}

/* the calls a pass makes: groups of ipt items times slices */
static int64_t tasks_of(const conv_dnnl *d, const conv_p *p) { return p->N / d->ipt * d->slices; }

static int64_t workers_of(const conv_dnnl *d, const conv_p *p, int nthreads)
{
    int64_t tasks = tasks_of(d, p), nt = nthreads > 1 ? nthreads : 1;
    if (d->team)
        return 1;
    return nt < tasks ? nt : tasks;
}

/* scratch: the weights of every slice (unless kept); with slices, X of every item; then per worker
 * one item's X (without slices) and one slice's Y */
static size_t wscratch_bytes(const conv_dnnl *d) { return d->wkeep ? 0 : w_bytes(d); }
static size_t xall_bytes(const conv_dnnl *d, const conv_p *p)
{
    return d->slices > 1 ? (size_t)p->N * round64(d->xbytes) : 0;
}
static size_t sp_bytes(const conv_dnnl *d)
{
    size_t a = round64(d->part[0].spbytes), b = round64(d->part[1].spbytes);
    return a > b ? a : b;
}
static size_t slice_bytes(const conv_dnnl *d)
{
    return (d->slices > 1 ? 0 : round64(d->xbytes)) + round64(d->part[0].ybytes) + sp_bytes(d);
}

size_t conv_dnnl_scratch(const conv_dnnl *d, const conv_p *p, int nthreads)
{
    return wscratch_bytes(d) + xall_bytes(d, p) + (size_t)workers_of(d, p, nthreads) * slice_bytes(d);
}

typedef struct {
    const conv_dnnl *d;
    const conv_p *p;
    const float *x, *w, *b;
    float *y;
    char *wbuf, *xall, *bufs;   /* blocked weights per slice; blocked X per item; per worker buffers */
    clamp_t clamp;
    int reorder_w;              /* prep reorders the weights (else they are kept from an earlier call) */
    int team;                   /* the OpenMP threads oneDNN may use per call: 1, or the team lent */
    int failed;
} dnnl_job;

/* one memory object over buf (not owned) */
static dnnl_memory_t mem(const dnnl_memory_desc_t *md, const void *buf)
{
    dnnl_memory_t m = NULL;
    return dnnl_memory_create(&m, md, g_engine, (void *)buf) == dnnl_success ? m : NULL;
}

/* from → to through reorder r (memory objects made and dropped here); spmd: its scratchpad, when it
 * needs one (allocated for the call) */
static int run_reorder_sp(dnnl_primitive_t r, dnnl_stream_t s, const dnnl_memory_desc_t *fmd, const void *from,
                          const dnnl_memory_desc_t *tmd, void *to, const dnnl_memory_desc_t *spmd)
{
    size_t spb = spmd ? dnnl_memory_desc_get_size(spmd) : 0;
    void *spbuf = spb ? aligned_alloc(64, round64(spb)) : NULL;
    dnnl_memory_t mf = mem(fmd, from), mt = mem(tmd, to), msp = spbuf ? mem(spmd, spbuf) : NULL;
    int rc = -1;
    if (mf && mt && (!spb || msp)) {
        dnnl_exec_arg_t a[] = { { DNNL_ARG_FROM, mf }, { DNNL_ARG_TO, mt }, { DNNL_ARG_SCRATCHPAD, msp } };
        rc = dnnl_primitive_execute(r, s, spb ? 3 : 2, a) == dnnl_success && dnnl_stream_wait(s) == dnnl_success
                 ? 0
                 : -1;
    }
    dnnl_memory_destroy(mf);
    dnnl_memory_destroy(mt);
    dnnl_memory_destroy(msp);
    free(spbuf);
    return rc;
}

static int run_reorder(dnnl_primitive_t r, dnnl_stream_t s, const dnnl_memory_desc_t *fmd, const void *from,
                       const dnnl_memory_desc_t *tmd, void *to)
{
    return run_reorder_sp(r, s, fmd, from, tmd, to, NULL);
}

static const dnnl_part *part_of(const conv_dnnl *d, int64_t s)
{
    return s == d->slices - 1 && d->part[1].conv ? &d->part[1] : &d->part[0];
}

static int64_t width_of(const conv_dnnl *d, const conv_p *p, int64_t s)
{
    return s == d->slices - 1 ? p->M - s * d->ms : d->ms;
}

/* slice s's weights in their blocked layout; with slices, slice 0's call also reorders every item's
 * X (all of this before any slice runs) */
static int prep(const dnnl_job *j, int64_t s, dnnl_stream_t st)
{
    const conv_dnnl *d = j->d;
    const conv_p *p = j->p;
    const dnnl_part *pt = part_of(d, s);
    if (j->reorder_w && pt->rw &&
        run_reorder_sp(pt->rw, st, &pt->wp, j->w + s * d->ms * p->Cg * p->kvol, &pt->wb,
                       j->wbuf + s * round64(d->part[0].wbytes), &pt->rwsp) < 0)
        return -1;
    for (int64_t n = 0; s == 0 && j->xall && d->rx && n < p->N; n++)
        if (run_reorder(d->rx, st, &d->xp, j->x + n * d->xn, &d->xb, j->xall + n * round64(d->xbytes)) < 0)
            return -1;
    return 0;
}

/* Task t = items n·ipt to (n+1)·ipt, slice s: X in (unless already), convolve, Y out, then the epilogue. */
static int task(const dnnl_job *j, int64_t t, char *buf, dnnl_stream_t st)
{
    const conv_dnnl *d = j->d;
    const conv_p *p = j->p;
    int64_t n = t / d->slices, s = t % d->slices, ms = width_of(d, p, s), m0 = s * d->ms;
    const dnnl_part *pt = part_of(d, s);
    const float *x = j->x + n * d->xn;
    float *y = j->y + n * d->yn + m0 * p->yvol;
    const void *xb = x;
    if (j->xall && d->rx) {
        xb = j->xall + n * round64(d->xbytes);
    } else if (d->rx) {
        if (run_reorder(d->rx, st, &d->xp, x, &d->xb, buf) < 0)
            return -1;
        xb = buf;
    }
    void *yb = pt->ry ? (void *)(buf + (j->xall ? 0 : round64(d->xbytes))) : (void *)y;
    const void *wb = pt->rw ? (const void *)(j->wbuf + s * round64(d->part[0].wbytes))
                            : (const void *)(j->w + m0 * p->Cg * p->kvol);
    int ink = in_kernel(d->flags), bias = ink && j->b;
    if (ink && j->clamp.res) {   /* the sum post-op adds what blocked Y holds: the residual */
        const float *r = j->clamp.res + n * d->rn + m0 * p->yvol;
        if (pt->rr && run_reorder(pt->rr, st, &pt->yp, r, &pt->yb, yb) < 0)
            return -1;
        if (!pt->rr && (const void *)r != yb)   /* both blocked (padded alike); the plan may put Y in r's place */
            memcpy(yb, r, dnnl_memory_desc_get_size(&pt->yb));
    }
    dnnl_dims_t bd = { ms };
    dnnl_memory_desc_t bmd;
    dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
    if (p->path == PATH_DW)   /* this slice's channels */
        xb = (const float *)xb + m0 * p->xvol;
    dnnl_memory_t mx = mem(&pt->xs, xb), mw = mem(&pt->wb, wb), my = mem(&pt->yb, yb);
    dnnl_memory_t mb = bias ? mem(&bmd, j->b + m0) : NULL;
    dnnl_memory_t msp = pt->spbytes ? mem(&pt->sp, buf + slice_bytes(d) - sp_bytes(d)) : NULL;
    int rc = -1, na = 3;
    if (mx && mw && my && (!bias || mb) && (!pt->spbytes || msp)) {
        dnnl_exec_arg_t a[5] = { { DNNL_ARG_SRC, mx }, { DNNL_ARG_WEIGHTS, mw }, { DNNL_ARG_DST, my } };
        if (bias)
            a[na++] = (dnnl_exec_arg_t){ DNNL_ARG_BIAS, mb };
        if (msp)
            a[na++] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, msp };
        rc = dnnl_primitive_execute(pt->conv, st, na, a) == dnnl_success && dnnl_stream_wait(st) == dnnl_success
                 ? 0
                 : -1;
    }
    dnnl_memory_destroy(mx);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(my);
    dnnl_memory_destroy(mb);
    dnnl_memory_destroy(msp);
    if (rc || (pt->ry && run_reorder(pt->ry, st, &pt->yb, yb, &pt->yp, y) < 0))
        return -1;
    for (int64_t i = 0; !ink && i < d->ipt; i++)   /* (several items: ms is M, m0 0) */
        for (int64_t m = m0; m < m0 + ms; m++) {
            const float *r = j->clamp.res ? j->clamp.res + ((n * d->ipt + i) * p->M + m) * p->yvol : NULL;
            if (j->b || r || j->clamp.on || j->clamp.pw)
                conv_epilogue(y + (i * p->M + m - m0) * p->yvol, j->b ? j->b + m : NULL, r, p->yvol, j->clamp);
        }
    return 0;
}

/* A pool worker's oneDNN stream, on the job's OpenMP threads (one when the pool splits the work; the
 * lent team when this thread leads one); NULL (and the job failed) when it cannot be made. */
static dnnl_stream_t worker_stream(dnnl_job *j)
{
    dnnl_stream_t st;
    omp_set_num_threads(j->team);
    if (dnnl_stream_create(&st, g_engine, dnnl_stream_default_flags) != dnnl_success) {
        j->failed = 1;
        return NULL;
    }
    return st;
}

static void prep_range(void *arg, int64_t s0, int64_t s1, int worker)
{
    dnnl_job *j = arg;
    dnnl_stream_t st = worker_stream(j);
    if (!st)
        return;
    for (int64_t s = s0; s < s1; s++)
        if (prep(j, s, st) < 0)
            j->failed = 1;
    dnnl_stream_destroy(st);
}

static void task_range(void *arg, int64_t t0, int64_t t1, int worker)
{
    dnnl_job *j = arg;
    dnnl_stream_t st = worker_stream(j);
    if (!st)
        return;
    for (int64_t t = t0; t < t1 && !j->failed; t++)
        if (task(j, t, j->bufs + worker * slice_bytes(j->d), st) < 0)
            j->failed = 1;
    dnnl_stream_destroy(st);
}

int conv_dnnl_forward(qs_kctx *c, conv_dnnl *d, const conv_p *p, const float *x, const float *w, const float *b,
                      float *y, clamp_t clamp)
{
    int64_t workers = workers_of(d, p, c->nthreads), prep_workers = workers < d->slices ? workers : d->slices;
    size_t need = conv_dnnl_scratch(d, p, c->nthreads), wsb = wscratch_bytes(d);
    if (need && (!c->scratch || c->scratch_size < need))
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes given, %zu needed", c->scratch_size, need);
    char *sc = c->scratch;
    /* The weights change between passes (QAT's update, AdaRound, CLE write initializers in place):
     * kept ones are reordered again when W is not an initializer of an inference plan (c->wgen 0),
     * or its data or the graph's weight generation differ from the kept copy's. */
    int keep = d->wkeep && c->wgen, fresh = keep && d->wkeep_src == w && d->wkeep_gen == c->wgen;
    dnnl_job j = { d, p, x, w, b, y, d->wkeep ? d->wkeep : sc, d->slices > 1 ? sc + wsb : NULL,
                   sc + wsb + xall_bytes(d, p), clamp, !fresh, 1, 0 };
    /* a team: this thread leads it through one task at a time (no more than the team planned for,
     * fewer when the pool's threads are busy elsewhere) */
    int lent = d->team ? qs_threadpool_lend(c->pool, d->team - 1) : 0;
    j.team = 1 + lent;
    if (d->wkeep) {
        d->wkeep_src = NULL;   /* invalid until this reorder succeeds */
        d->wkeep_gen = 0;
    }
    if (j.reorder_w || j.xall)
        qs_threadpool_for(prep_workers > 1 && j.reorder_w ? c->pool : NULL, j.reorder_w ? (int)prep_workers : 1,
                          j.reorder_w ? d->slices : 1, 1, prep_range, &j);
    if (!j.failed && keep) {
        d->wkeep_src = w;
        d->wkeep_gen = c->wgen;
    }
    if (!j.failed)
        qs_threadpool_for(workers > 1 ? c->pool : NULL, (int)workers, tasks_of(d, p), 1, task_range, &j);
    qs_threadpool_giveback(c->pool, lent);
    if (j.failed)
        return qs_op_error(c, QS_ENOMEM, "oneDNN convolution failed (out of memory?)");
    return 0;
}

/* ---- shared with the backward (conv_dnnl_bwd.c) ---------------------------------------------------------- */

dnnl_engine_t conv_dnnl_engine(void)
{
    pthread_once(&g_once, engine_init);
    return g_enabled ? g_engine : NULL;
}

int conv_dnnl_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out)
{
    return reorder(from, to, out);
}

size_t conv_dnnl_buf_bytes(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to)
{
    return buf_bytes(from, to);
}

dnnl_memory_t conv_dnnl_mem(const dnnl_memory_desc_t *md, const void *buf) { return mem(md, buf); }

int conv_dnnl_run_reorder(dnnl_primitive_t r, dnnl_stream_t s, const dnnl_memory_desc_t *fmd, const void *from,
                          const dnnl_memory_desc_t *tmd, void *to)
{
    return run_reorder(r, s, fmd, from, tmd, to);
}

dnnl_stream_t conv_dnnl_stream(void)
{
    dnnl_stream_t st;
    omp_set_num_threads(1);
    return dnnl_stream_create(&st, g_engine, dnnl_stream_default_flags) == dnnl_success ? st : NULL;
}
