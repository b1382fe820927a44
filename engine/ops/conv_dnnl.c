/* Conv forward through oneDNN's blocked direct convolutions (libdnnl, C API).
 *
 * Why: on this project's x86 machines oneDNN's JIT kernels run a 3x3 convolution at ~150 GFLOP per
 * CPU-second against ~45–90 for im2col + OpenBLAS sgemm (bench/bench_conv_dnnl.c; docs/benchmarks.md).
 * They want the activations in a channel-blocked layout (nChw16c on AVX-512, nChw8c on AVX2), so each
 * call reorders X into it and Y back out of it, and the weights into their blocked layout: that costs
 * more than it saves on 1x1 convolutions (OpenBLAS already runs those at ~90–110 GFLOP/s with no copy)
 * and on depthwise ones, so only the general path (kernel larger than one, or strided) comes here.
 *
 * Only 2-D convolutions with group 1 are offered to oneDNN, and only a JIT implementation is taken
 * (a "gemm" or "ref" one would be no faster than ours): otherwise conv_dnnl_new gives NULL and the
 * caller keeps its own path, which also stays the reference the tests compare against.
 *
 * Threads: Debian's libdnnl runs on OpenMP. Batch items are split across the executor's pool as
 * elsewhere, each worker running a one-item primitive on one OpenMP thread, so no OpenMP team runs
 * beside the pool; only a batch smaller than the thread count runs one primitive over the whole
 * batch with an OpenMP team of the executor's thread count (the pool is idle meanwhile).
 *
 * Bias, the fused residual and the clamp are applied by conv_epilogue after the reorder back, in the
 * same order as the GEMM path. */
#include "ops/conv_impl.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct conv_dnnl {
    int64_t items;              /* batch items per primitive call: 1, or the whole batch */
    int nthr;                   /* OpenMP threads per call */
    dnnl_primitive_t conv, rx, ry, rw;   /* rx / ry / rw: NULL when the plain layout is the one used */
    dnnl_memory_desc_t xp, yp, wp;       /* plain (user) layouts */
    dnnl_memory_desc_t xb, yb, wb;       /* what the convolution takes */
    size_t xbytes, ybytes, wbytes;       /* blocked buffers (0: none needed) */
};

static int g_enabled = 1;
static dnnl_engine_t g_engine;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void engine_init(void)
{
    const char *env = getenv("QUANT_CONV_DNNL");   /* "0": our own path only (benchmarks compare the two) */
    if (env && !strcmp(env, "0"))
        g_enabled = 0;
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success)
        g_engine = NULL;
}

void conv_dnnl_enable(int on)
{
    pthread_once(&g_once, engine_init);
    g_enabled = on;
}
int conv_dnnl_enabled(void) { return g_enabled; }

static void release(dnnl_primitive_t p)
{
    if (p)
        dnnl_primitive_destroy(p);
}

void conv_dnnl_free(conv_dnnl *d)
{
    if (!d)
        return;
    release(d->conv);
    release(d->rx);
    release(d->ry);
    release(d->rw);
    free(d);
}

/* a reorder from one layout to another, or NULL (and success) when they are the same */
static int reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out)
{
    *out = NULL;
    if (dnnl_memory_desc_equal(from, to))
        return 0;
    dnnl_primitive_desc_t pd;
    if (dnnl_reorder_primitive_desc_create(&pd, from, g_engine, to, g_engine, NULL) != dnnl_success)
        return -1;
    dnnl_status_t s = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? 0 : -1;
}

static size_t buf_bytes(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to)
{
    return dnnl_memory_desc_equal(from, to) ? 0 : dnnl_memory_desc_get_size(to);
}

/* A primitive descriptor for X in layout xt and Y in yt (weights: whatever the kernel wants), or NULL
 * when that is not a JIT kernel (a "gemm" or "ref" one would be no faster than ours). */
static dnnl_primitive_desc_t conv_pd(const conv_p *p, int64_t items, dnnl_format_tag_t xt, dnnl_format_tag_t yt)
{
    const qs_conv_geom *g = &p->g;
    dnnl_dims_t xd = { items, p->C, g->in[1], g->in[2] }, yd = { items, p->M, g->out[1], g->out[2] };
    dnnl_dims_t wd = { p->M, p->C, g->k[1], g->k[2] };
    dnnl_dims_t st = { g->stride[1], g->stride[2] }, dil = { g->dil[1] - 1, g->dil[2] - 1 };
    dnnl_dims_t pl = { g->pad[1], g->pad[2] }, pr = { g->pad_end[1], g->pad_end[2] };
    dnnl_memory_desc_t xa, ya, wa;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;
    const char *impl = "";
    if (dnnl_memory_desc_init_by_tag(&xa, 4, xd, dnnl_f32, xt) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&ya, 4, yd, dnnl_f32, yt) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&wa, 4, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &xa, &wa,
                                                   NULL, &ya, st, dil, pl, pr) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &cd, NULL, g_engine, NULL) != dnnl_success)
        return NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || strncmp(impl, "jit", 3)) {
        dnnl_primitive_desc_destroy(pd);
        return NULL;
    }
    return pd;
}

conv_dnnl *conv_dnnl_new(const conv_p *p, int nthreads)
{
    const qs_conv_geom *g = &p->g;
    pthread_once(&g_once, engine_init);
    /* a 1x1 kernel stays with OpenBLAS even when strided: the reorders cost more than the kernel saves */
    if (!g_enabled || !g_engine || p->path != PATH_GEMM || p->kvol == 1 || p->group != 1 || g->nd != 2 ||
        p->N < 1)
        return NULL;
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    dnnl_format_tag_t blocked = (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? dnnl_nChw16c
                              : (isa & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2         ? dnnl_nChw8c
                                                                                       : dnnl_format_tag_undef;
    if (blocked == dnnl_format_tag_undef)
        return NULL;
    conv_dnnl *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    int nt = nthreads > 1 ? nthreads : 1;
    d->items = p->N >= nt ? 1 : p->N;
    d->nthr = p->N >= nt ? 1 : nt;
    /* oneDNN sizes its work split by the calling thread's OpenMP thread count at creation */
    omp_set_num_threads(d->nthr);
    dnnl_dims_t xd = { d->items, p->C, g->in[1], g->in[2] }, yd = { d->items, p->M, g->out[1], g->out[2] };
    dnnl_dims_t wd = { p->M, p->C, g->k[1], g->k[2] };
    /* blocked X and Y; with few input channels (a network's first layer) the kernels read plain X */
    dnnl_primitive_desc_t pd = conv_pd(p, d->items, blocked, blocked);
    if (!pd)
        pd = conv_pd(p, d->items, dnnl_nchw, blocked);
    if (!pd || dnnl_memory_desc_init_by_tag(&d->xp, 4, xd, dnnl_f32, dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&d->yp, 4, yd, dnnl_f32, dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&d->wp, 4, wd, dnnl_f32, dnnl_oihw) != dnnl_success)
        goto fail;
    d->xb = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    d->yb = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    d->wb = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (dnnl_primitive_create(&d->conv, pd) != dnnl_success || reorder(&d->xp, &d->xb, &d->rx) < 0 ||
        reorder(&d->yb, &d->yp, &d->ry) < 0 || reorder(&d->wp, &d->wb, &d->rw) < 0)
        goto fail;
    dnnl_primitive_desc_destroy(pd);
    d->xbytes = buf_bytes(&d->xp, &d->xb);
    d->ybytes = buf_bytes(&d->yp, &d->yb);
    d->wbytes = buf_bytes(&d->wp, &d->wb);
    return d;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    conv_dnnl_free(d);
    return NULL;
}

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

static int64_t workers_of(const conv_dnnl *d, const conv_p *p, int nthreads)
{
    int64_t calls = p->N / d->items, nt = nthreads > 1 ? nthreads : 1;
    return d->nthr > 1 || calls < 2 ? 1 : nt < calls ? nt : calls;
}

size_t conv_dnnl_scratch(const conv_dnnl *d, const conv_p *p, int nthreads)
{
    return round64(d->wbytes) + (size_t)workers_of(d, p, nthreads) * (round64(d->xbytes) + round64(d->ybytes));
}

typedef struct {
    const conv_dnnl *d;
    const conv_p *p;
    const float *x, *b;
    float *y;
    char *bufs;            /* per worker: blocked X, then blocked Y */
    size_t slice;
    dnnl_memory_t w;       /* the weights, in the layout the convolution takes */
    clamp_t clamp;
    int failed;
} dnnl_job;

/* one memory object over buf (not owned) */
static dnnl_memory_t mem(const dnnl_memory_desc_t *md, const void *buf)
{
    dnnl_memory_t m = NULL;
    return dnnl_memory_create(&m, md, g_engine, (void *)buf) == dnnl_success ? m : NULL;
}

static int run(dnnl_primitive_t prim, dnnl_stream_t s, int nargs, const dnnl_exec_arg_t *args)
{
    return dnnl_primitive_execute(prim, s, nargs, args) == dnnl_success ? 0 : -1;
}

/* Items n .. n + d->items − 1: reorder X in, convolve, reorder Y out, then the epilogue. */
static int call(const dnnl_job *j, int64_t n, char *buf, dnnl_stream_t s)
{
    const conv_dnnl *d = j->d;
    const conv_p *p = j->p;
    const float *x = j->x + n * p->C * p->xvol;
    float *y = j->y + n * p->M * p->yvol;
    void *xb = d->rx ? (void *)buf : (void *)x, *yb = d->ry ? (void *)(buf + round64(d->xbytes)) : (void *)y;
    dnnl_memory_t mx = mem(&d->xp, x), my = mem(&d->yp, y), bx = mem(&d->xb, xb), by = mem(&d->yb, yb);
    int rc = -1;
    if (mx && my && bx && by) {
        dnnl_exec_arg_t ax[] = { { DNNL_ARG_FROM, mx }, { DNNL_ARG_TO, bx } };
        dnnl_exec_arg_t ac[] = { { DNNL_ARG_SRC, bx }, { DNNL_ARG_WEIGHTS, j->w }, { DNNL_ARG_DST, by } };
        dnnl_exec_arg_t ay[] = { { DNNL_ARG_FROM, by }, { DNNL_ARG_TO, my } };
        rc = (d->rx ? run(d->rx, s, 2, ax) : 0) | run(d->conv, s, 3, ac) | (d->ry ? run(d->ry, s, 2, ay) : 0);
        if (!rc && dnnl_stream_wait(s) != dnnl_success)
            rc = -1;
    }
    dnnl_memory_destroy(mx);
    dnnl_memory_destroy(my);
    dnnl_memory_destroy(bx);
    dnnl_memory_destroy(by);
    if (rc)
        return rc;
    for (int64_t i = 0; i < d->items; i++)
        for (int64_t m = 0; m < p->M; m++) {
            const float *r = j->clamp.res ? j->clamp.res + ((n + i) * p->M + m) * p->yvol : NULL;
            if (j->b || r || j->clamp.on || j->clamp.silu)
                conv_epilogue(y + (i * p->M + m) * p->yvol, j->b ? j->b + m : NULL, r, p->yvol, j->clamp);
        }
    return 0;
}

static void items_range(void *arg, int64_t c0, int64_t c1, int worker)
{
    dnnl_job *j = arg;
    dnnl_stream_t s;
    omp_set_num_threads(j->d->nthr);
    if (dnnl_stream_create(&s, g_engine, dnnl_stream_default_flags) != dnnl_success) {
        j->failed = 1;
        return;
    }
    for (int64_t k = c0; k < c1; k++)
        if (call(j, k * j->d->items, j->bufs + worker * j->slice, s) < 0)
            j->failed = 1;
    dnnl_stream_destroy(s);
}

int conv_dnnl_forward(qs_kctx *c, const conv_dnnl *d, const conv_p *p, const float *x, const float *w,
                      const float *b, float *y, clamp_t clamp)
{
    int64_t workers = workers_of(d, p, c->nthreads);
    size_t need = conv_dnnl_scratch(d, p, c->nthreads);
    if (need && (!c->scratch || c->scratch_size < need))
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes given, %zu needed", c->scratch_size, need);
    dnnl_job j = { d, p, x, b, y, (char *)c->scratch + round64(d->wbytes),
                   round64(d->xbytes) + round64(d->ybytes), NULL, clamp, 0 };
    dnnl_memory_t wp = mem(&d->wp, w);
    j.w = d->rw ? mem(&d->wb, c->scratch) : wp;
    dnnl_stream_t s = NULL;
    int ok = wp && j.w && dnnl_stream_create(&s, g_engine, dnnl_stream_default_flags) == dnnl_success;
    if (ok && d->rw) {   /* the weights may change between passes (QAT, AdaRound): reordered every call */
        dnnl_exec_arg_t aw[] = { { DNNL_ARG_FROM, wp }, { DNNL_ARG_TO, j.w } };
        omp_set_num_threads(d->nthr);
        ok = run(d->rw, s, 2, aw) == 0 && dnnl_stream_wait(s) == dnnl_success;
    }
    if (s)
        dnnl_stream_destroy(s);
    if (ok)
        qs_threadpool_for(workers > 1 ? c->pool : NULL, (int)workers, p->N / d->items, 1, items_range, &j);
    if (j.w != wp)
        dnnl_memory_destroy(j.w);
    dnnl_memory_destroy(wp);
    if (!ok || j.failed)
        return qs_op_error(c, QS_ENOMEM, "oneDNN convolution failed (out of memory?)");
    return 0;
}
