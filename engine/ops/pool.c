/* Pooling: MaxPool (with its optional Indices output), AveragePool, GlobalMaxPool, GlobalAveragePool
 * (1-D, 2-D, 3-D), forward and backward.
 *
 * Window geometry (kernel_shape, strides, pads, dilations, ceil_mode, auto_pad) is resolved by
 * qs_conv_geom_init, shared with Conv. For each output the kernel taps that land inside the input
 * are a box [lo, hi) per dim; windows are separable, so one small table per dim (in scratch) holds
 * them all and the tap loops carry no bounds tests. Float pools without Indices on 1-D/2-D inputs go
 * row by row instead (vectorizable loops along the output row); global pools are plain reductions.
 * Work is split across threads by (item, channel) plane; a plane's gradient is written only by the
 * thread that owns it.
 *
 * MaxPool's gradient goes to the first maximum in window order (row-major over the taps), the same
 * element its Indices output names (found row by row on 1-D/2-D planes too: maxpool_grad_rows).
 * AveragePool's divisor is the number of taps inside the input, or with count_include_pad the number
 * inside the padded input [−pad_begin, in + pad_end). MaxPool also runs on int8/uint8 tensors
 * (opset 12) for inference; everything else is float32. */
#include "ops/blocked.h"
#include "ops/kernels.h"

#include <math.h>
#include <string.h>

enum { POOL_MAX, POOL_AVG, POOL_GMAX, POOL_GAVG };

typedef struct pool_p {
    qs_conv_geom g;
    int64_t N, C, xvol, yvol;
    int kind, count_include_pad, storage_order;
} pool_p;

static int pool_kind(const qs_kctx *c)
{
    const char *op = c->node->op;
    return !strcmp(op, "MaxPool") ? POOL_MAX : !strcmp(op, "AveragePool") ? POOL_AVG
         : !strcmp(op, "GlobalMaxPool") ? POOL_GMAX : POOL_GAVG;
}

static int pool_params(qs_kctx *c, pool_p *p)
{
    char sx[128];
    memset(p, 0, sizeof *p);
    p->kind = pool_kind(c);
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "needs input X");
    const qs_tensor *X = c->in[0];
    qs_shape_str(X->ndim, X->shape, sx, sizeof sx);
    int int8_ok = p->kind == POOL_MAX && (X->dtype == QS_I8 || X->dtype == QS_U8);
    if (X->dtype != QS_F32 && !int8_ok)
        return qs_op_error(c, QS_EUNSUPPORTED, "input X is %s; only float32%s is supported", qs_dtype_name(X->dtype),
                           p->kind == POOL_MAX ? " (and int8/uint8)" : "");
    if (X->ndim < 3)
        return qs_op_error(c, QS_ESHAPE, "input X has shape %s; expected [N, C, D1, ...] with at least one "
                           "spatial dim", sx);
    int nd = X->ndim - 2;
    if (nd > QS_CONV_MAXD)
        return qs_op_error(c, QS_EUNSUPPORTED, "%d spatial dims (X %s); only 1 to %d are supported", nd, sx,
                           QS_CONV_MAXD);
    p->N = X->shape[0];
    p->C = X->shape[1];
    const int64_t *sp = X->shape + 2;
    if (p->kind == POOL_GMAX || p->kind == POOL_GAVG) {
        int64_t one[QS_CONV_MAXD] = { 1, 1, 1 };
        for (int i = 0; i < nd; i++)
            if (sp[i] < 1)
                return qs_op_error(c, QS_ESHAPE, "input X %s has an empty spatial dim", sx);
        qs_conv_geom_set(&p->g, nd, sp, one, sp, NULL, NULL, NULL, NULL);
    } else {
        const int64_t *ks;
        int nk = qs_node_ints(c->node, "kernel_shape", &ks);
        if (nk != nd)
            return qs_op_error(c, QS_EINVAL, nk ? "kernel_shape has %d values, expected %d (one per spatial dim)"
                                                : "kernel_shape is required (%d given, %d spatial dims)", nk, nd);
        int ceil_mode = qs_node_int(c->node, "ceil_mode", 0) != 0;
        int rc = qs_conv_geom_init(c, nd, sp, ks, ceil_mode, 1, &p->g);
        if (rc < 0)
            return rc;
        p->count_include_pad = qs_node_int(c->node, "count_include_pad", 0) != 0;
        p->storage_order = (int)qs_node_int(c->node, "storage_order", 0);
        if (p->storage_order != 0 && p->storage_order != 1)
            return qs_op_error(c, QS_EINVAL, "storage_order = %d must be 0 (row major) or 1 (column major)",
                               p->storage_order);
    }
    p->xvol = qs_geom_invol(&p->g);
    p->yvol = qs_geom_outvol(&p->g);
    return 0;
}

QS_OP_PARAMS(pool, pool_p, pool_params)

static int want_indices(const qs_kctx *c)
{
    return c->nout > 1 && c->out[1] && (c->node->nout <= 1 || c->node->out[1] >= 0);
}

static int pool_infer(qs_kctx *c)
{
    pool_p p;
    int rc = pool_params(c, &p);
    if (rc < 0)
        return rc;
    int nd = p.g.nd;
    int64_t shape[2 + QS_CONV_MAXD] = { p.N, p.C };
    for (int i = 0; i < nd; i++)
        shape[2 + i] = p.g.out[3 - nd + i];
    qs_set_shape(c->out[0], c->in[0]->dtype, 2 + nd, shape);
    if (c->nout > 1 && c->out[1]) {
        if (p.kind != POOL_MAX)
            return qs_op_error(c, QS_EINVAL, "has %d outputs; only MaxPool has a second (Indices)", c->nout);
        qs_set_shape(c->out[1], QS_I64, 2 + nd, shape);
    }
    return 0;
}

/* taps k in [0, K) with start + k·d inside [lo_bound, hi_bound) */
static inline void tap_range(int64_t start, int64_t d, int64_t K, int64_t lo_bound, int64_t hi_bound, int64_t *lo,
                             int64_t *hi)
{
    int64_t a = start >= lo_bound ? 0 : (lo_bound - start + d - 1) / d;
    int64_t b = hi_bound - start <= 0 ? 0 : (hi_bound - start + d - 1) / d;
    if (b > K)
        b = K;
    *lo = a;
    *hi = b > a ? b : a;
}

/* [lo, hi): the outputs o in [0, O) whose tap o·s + off lands inside [0, I) */
static void tap_range_out(int64_t off, int64_t s, int64_t isz, int64_t osz, int64_t *lo, int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = isz - off <= 0 ? 0 : (isz - off + s - 1) / s;
    *hi = h > osz ? osz : h;
    *lo = l > *hi ? *hi : l;
}

#define POOL_ROWS_MAXK 64   /* kernel widths up to this take the row-wise path */

/* The window of output (od, oh, ow): tap boxes per dim and the input position of tap 0. */
typedef struct {
    int64_t lo[3], hi[3], start[3];
} window;

/* Along one dim, for one output index: the first tap's position, the taps inside the input and
 * the number inside the padded input. Windows are separable, so a table per dim (in scratch, made
 * once per call) gives every window without a division in the loops. */
typedef struct {
    int64_t start, lo, hi, padded;
} dim_win;

static size_t win_tables_size(const qs_conv_geom *g)
{
    return (size_t)(g->out[0] + g->out[1] + g->out[2]) * sizeof(dim_win);
}

static void win_tables(const qs_conv_geom *g, dim_win *tab)
{
    for (int i = 0; i < 3; i++)
        for (int64_t o = 0; o < g->out[i]; o++, tab++) {
            int64_t lo, hi;
            tab->start = o * g->stride[i] - g->pad[i];
            tap_range(tab->start, g->dil[i], g->k[i], 0, g->in[i], &tab->lo, &tab->hi);
            tap_range(tab->start, g->dil[i], g->k[i], -g->pad[i], g->in[i] + g->pad_end[i], &lo, &hi);
            tab->padded = hi - lo;
        }
}

static inline void window_at(const qs_conv_geom *g, const dim_win *tab, int64_t od, int64_t oh, int64_t ow,
                             window *w)
{
    const dim_win *t[3] = { tab + od, tab + g->out[0] + oh, tab + g->out[0] + g->out[1] + ow };
    for (int i = 0; i < 3; i++) {
        w->start[i] = t[i]->start;
        w->lo[i] = t[i]->lo;
        w->hi[i] = t[i]->hi;
    }
}

#define FOR_WINDOW(g, w, off) \
    for (int64_t kd = (w).lo[0]; kd < (w).hi[0]; kd++) \
        for (int64_t kh = (w).lo[1]; kh < (w).hi[1]; kh++) \
            for (int64_t kw = (w).lo[2], off = (((w).start[0] + kd * (g)->dil[0]) * (g)->in[1] + \
                     (w).start[1] + kh * (g)->dil[1]) * (g)->in[2] + (w).start[2] + (w).lo[2] * (g)->dil[2]; \
                 kw < (w).hi[2]; kw++, off += (g)->dil[2])

#define FOR_OUTPUTS(g) \
    for (int64_t od = 0, oi = 0; od < (g)->out[0]; od++) \
        for (int64_t oh = 0; oh < (g)->out[1]; oh++) \
            for (int64_t ow = 0; ow < (g)->out[2]; ow++, oi++)

static float avg_divisor(const pool_p *p, const dim_win *tab, int64_t od, int64_t oh, int64_t ow)
{
    const qs_conv_geom *g = &p->g;
    const dim_win *t[3] = { tab + od, tab + g->out[0] + oh, tab + g->out[0] + g->out[1] + ow };
    int64_t n = 1;
    for (int i = 0; i < 3; i++)
        n *= p->count_include_pad ? t[i]->padded : t[i]->hi - t[i]->lo;
    return (float)(n > 0 ? n : 1);
}

/* offset of the first maximum in the window, -1 when the window has no tap inside the input.
 * Selects rather than branches: which tap wins is data-dependent, so a branch mispredicts often. */
static inline int64_t window_argmax(const qs_conv_geom *g, const window *w, const float *x)
{
    int64_t best = -1;
    float m = -INFINITY;
    FOR_WINDOW(g, *w, off) {
        int take = best < 0 || x[off] > m;
        best = take ? off : best;
        m = take ? x[off] : m;
    }
    return best;
}

/* the maximum alone (forward without Indices); -inf for a window with no tap inside the input */
static inline float window_max(const qs_conv_geom *g, const window *w, const float *x)
{
    float m = -INFINITY;
    FOR_WINDOW(g, *w, off)
        m = x[off] > m ? x[off] : m;
    return m;
}

/* index of a plane offset in the Indices output's convention (column major when storage_order = 1) */
static int64_t storage_index(const pool_p *p, int64_t off)
{
    if (!p->storage_order)
        return off;
    const qs_conv_geom *g = &p->g;
    int64_t iw = off % g->in[2], ih = off / g->in[2] % g->in[1], id = off / (g->in[2] * g->in[1]);
    int64_t nd = g->nd;   /* column major over the op's own spatial dims: the first is fastest */
    if (nd == 1)
        return iw;
    if (nd == 2)
        return ih + iw * g->in[1];
    return id + (ih + iw * g->in[1]) * g->in[0];
}

typedef struct {
    const pool_p *p;
    const void *x;
    const float *dy;
    void *y;
    float *dx;
    int64_t *idx;
    qs_dtype dtype;
    const dim_win *tab;
    int rows;                            /* take pool_plane_rows */
    int64_t kwlo[POOL_ROWS_MAXK], kwhi[POOL_ROWS_MAXK];
} pool_job;

#define MAXPOOL_INT_PLANE(name, T) \
    static void name(const pool_p *p, const dim_win *tab, const T *x, T *y) \
    { \
        const qs_conv_geom *g = &p->g; \
        FOR_OUTPUTS(g) { \
            window w; \
            window_at(g, tab, od, oh, ow, &w); \
            int first = 1; \
            T m = 0; \
            FOR_WINDOW(g, w, off) \
                if (first || x[off] > m) { \
                    m = x[off]; \
                    first = 0; \
                } \
            y[oi] = m; \
        } \
    }
MAXPOOL_INT_PLANE(maxpool_plane_i8, int8_t)
MAXPOOL_INT_PLANE(maxpool_plane_u8, uint8_t)

/* Global pools: the window is the whole plane, so a plain reduction does (MaxPool with Indices
 * takes the windowed path, which also finds where the maximum is). The sum runs in 16 interleaved
 * partial sums that the compiler keeps in vector registers (one running sum is a chain of dependent
 * adds that it may not reorder: 4 cycles an element), added pairwise at the end. */
QS_HOT static float plane_sum(const float *x, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += x[i + k];
    for (int k = 0; i < n; i++, k++)
        acc[k] += x[i];
    for (int w = 8; w > 0; w /= 2)
        for (int k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return acc[0];
}

QS_HOT static float plane_max(const float *x, int64_t n)
{
    float m = x[0];
    for (int64_t i = 1; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* 1-D and 2-D float pools without Indices go by rows: for each output row, each kernel row inside
 * the input and each kernel column, one pass along the output row over the outputs whose tap is
 * inside (kwlo..kwhi) — a loop the compiler vectorizes, where a loop over each window's few taps
 * would be mostly loop overhead. */
QS_HOT static void pool_plane_rows(const pool_p *p, const pool_job *j, const float *x, float *y)
{
    const qs_conv_geom *g = &p->g;
    const int64_t OH = g->out[1], OW = g->out[2], IW = g->in[2], sw = g->stride[2], dh = g->dil[1];
    const dim_win *rows = j->tab + g->out[0], *cols = rows + OH;
    const int max = p->kind == POOL_MAX;
    for (int64_t oh = 0; oh < OH; oh++) {
        float *yr = y + oh * OW;
        const dim_win *r = rows + oh;
        for (int64_t ow = 0; ow < OW; ow++)
            yr[ow] = max ? -INFINITY : 0.f;
        for (int64_t kh = r->lo; kh < r->hi; kh++) {
            const float *xr = x + (r->start + kh * dh) * IW;
            for (int64_t kw = 0; kw < g->k[2]; kw++) {
                const int64_t off = kw * g->dil[2] - g->pad[2], lo = j->kwlo[kw], hi = j->kwhi[kw];
                if (max)
                    for (int64_t ow = lo; ow < hi; ow++) {
                        float v = xr[ow * sw + off];
                        yr[ow] = v > yr[ow] ? v : yr[ow];
                    }
                else
                    for (int64_t ow = lo; ow < hi; ow++)
                        yr[ow] += xr[ow * sw + off];
            }
        }
        if (!max) {
            int64_t nh = p->count_include_pad ? r->padded : r->hi - r->lo;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t n = nh * (p->count_include_pad ? cols[ow].padded : cols[ow].hi - cols[ow].lo);
                yr[ow] /= (float)(n > 0 ? n : 1);
            }
        }
    }
}

#define POOL_ROWS_CHUNK 256   /* output columns per pass of maxpool_grad_rows (its arrays on the stack) */

/* MaxPool's backward on 1-D and 2-D planes, by rows as pool_plane_rows: for each output row, the
 * running maximum and its offset for a chunk of outputs, updated tap by tap in window order (kernel
 * row, then kernel column) in one pass along the row, then each output's gradient added at its
 * offset. Per output this is window_argmax's own sequence of taps and selects, so the same element
 * wins (the first maximum; a NaN first tap keeps the window): the generic loop spent its time on
 * each window's few taps and bounds. Offsets are int32 (the caller checks the plane fits) so the
 * selects vectorize alongside the floats. */
QS_HOT static void maxpool_grad_rows(const pool_p *p, const pool_job *j, const float *x, const float *dy, float *dx)
{
    const qs_conv_geom *g = &p->g;
    const int64_t OH = g->out[1], OW = g->out[2], IW = g->in[2], sw = g->stride[2], dh = g->dil[1];
    const dim_win *rows = j->tab + g->out[0];
    float m[POOL_ROWS_CHUNK];
    int32_t best[POOL_ROWS_CHUNK];
    for (int64_t oh = 0; oh < OH; oh++) {
        const dim_win *r = rows + oh;
        for (int64_t c0 = 0; c0 < OW; c0 += POOL_ROWS_CHUNK) {
            const int64_t c1 = c0 + POOL_ROWS_CHUNK < OW ? c0 + POOL_ROWS_CHUNK : OW;
            for (int64_t i = 0; i < c1 - c0; i++) {
                m[i] = -INFINITY;
                best[i] = -1;
            }
            for (int64_t kh = r->lo; kh < r->hi; kh++) {
                const int64_t row = (r->start + kh * dh) * IW;
                for (int64_t kw = 0; kw < g->k[2]; kw++) {
                    const int64_t off = row + kw * g->dil[2] - g->pad[2];
                    const int64_t lo = j->kwlo[kw] > c0 ? j->kwlo[kw] : c0, hi = j->kwhi[kw] < c1 ? j->kwhi[kw] : c1;
                    const float *xt = x + off;
                    for (int64_t ow = lo; ow < hi; ow++) {
                        float v = xt[ow * sw];
                        int take = best[ow - c0] < 0 || v > m[ow - c0];
                        best[ow - c0] = take ? (int32_t)(off + ow * sw) : best[ow - c0];
                        m[ow - c0] = take ? v : m[ow - c0];
                    }
                }
            }
            const float *dyr = dy + oh * OW;
            for (int64_t ow = c0; ow < c1; ow++)
                if (best[ow - c0] >= 0)
                    dx[best[ow - c0]] += dyr[ow];
        }
    }
}

static void pool_forward_range(void *arg, int64_t begin, int64_t end, int worker)
{
    const pool_job *j = arg;
    const pool_p *p = j->p;
    const qs_conv_geom *g = &p->g;
    for (int64_t plane = begin; plane < end; plane++) {
        if (j->dtype == QS_I8) {
            maxpool_plane_i8(p, j->tab, (const int8_t *)j->x + plane * p->xvol, (int8_t *)j->y + plane * p->yvol);
            continue;
        }
        if (j->dtype == QS_U8) {
            maxpool_plane_u8(p, j->tab, (const uint8_t *)j->x + plane * p->xvol, (uint8_t *)j->y + plane * p->yvol);
            continue;
        }
        const float *x = (const float *)j->x + plane * p->xvol;
        float *y = (float *)j->y + plane * p->yvol;
        int64_t *idx = j->idx ? j->idx + plane * p->yvol : NULL;
        if (p->kind == POOL_GAVG) {
            y[0] = plane_sum(x, p->xvol) / (float)p->xvol;
            continue;
        }
        if (p->kind == POOL_GMAX && !idx) {
            y[0] = plane_max(x, p->xvol);
            continue;
        }
        if (j->rows) {
            pool_plane_rows(p, j, x, y);
            continue;
        }
        if (p->kind == POOL_MAX || p->kind == POOL_GMAX) {
            FOR_OUTPUTS(g) {
                window w;
                window_at(g, j->tab, od, oh, ow, &w);
                if (!idx) {
                    y[oi] = window_max(g, &w, x);
                    continue;
                }
                int64_t best = window_argmax(g, &w, x);
                y[oi] = best < 0 ? -INFINITY : x[best];
                idx[oi] = best < 0 ? -1 : plane * p->xvol + storage_index(p, best);
            }
        } else {
            FOR_OUTPUTS(g) {
                window w;
                window_at(g, j->tab, od, oh, ow, &w);
                float s = 0;
                FOR_WINDOW(g, w, off)
                    s += x[off];
                y[oi] = s / avg_divisor(p, j->tab, od, oh, ow);
            }
        }
    }
}

static void pool_backward_range(void *arg, int64_t begin, int64_t end, int worker)
{
    const pool_job *j = arg;
    const pool_p *p = j->p;
    const qs_conv_geom *g = &p->g;
    for (int64_t plane = begin; plane < end; plane++) {
        const float *x = (const float *)j->x + plane * p->xvol, *dy = j->dy + plane * p->yvol;
        float *dx = j->dx + plane * p->xvol;
        memset(dx, 0, p->xvol * sizeof *dx);
        if (j->rows) {
            maxpool_grad_rows(p, j, x, dy, dx);
            continue;
        }
        if (p->kind == POOL_MAX || p->kind == POOL_GMAX) {
            FOR_OUTPUTS(g) {
                window w;
                window_at(g, j->tab, od, oh, ow, &w);
                int64_t best = window_argmax(g, &w, x);
                if (best >= 0)
                    dx[best] += dy[oi];
            }
        } else {
            FOR_OUTPUTS(g) {
                window w;
                window_at(g, j->tab, od, oh, ow, &w);
                float v = dy[oi] / avg_divisor(p, j->tab, od, oh, ow);
                FOR_WINDOW(g, w, off)
                    dx[off] += v;
            }
        }
    }
}

/* planes per thread chunk: enough taps that a thread is worth starting */
static int64_t plane_chunk(const pool_p *p)
{
    int64_t work = p->yvol * qs_geom_kvol(&p->g);
    if (p->kind == POOL_GMAX || p->kind == POOL_GAVG)
        work = p->xvol;
    return work >= 32768 ? 1 : 32768 / (work ? work : 1);
}

static size_t pool_scratch(const qs_kctx *c)
{
    pool_p p;
    if (pool_get((qs_kctx *)c, &p) < 0)
        return 0;
    return win_tables_size(&p.g);
}

static int pool_tables(qs_kctx *c, const pool_p *p, pool_job *j)
{
    if (!c->scratch || c->scratch_size < win_tables_size(&p->g))
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes given, %zu needed", c->scratch_size,
                           win_tables_size(&p->g));
    win_tables(&p->g, c->scratch);
    j->tab = c->scratch;
    return 0;
}

/* whether the row-wise kernels take the planes (when ok and the geometry suits them) and their
 * per-column output ranges */
static void rows_setup(const pool_p *p, pool_job *j, int ok)
{
    const qs_conv_geom *g = &p->g;
    j->rows = ok && g->nd <= 2 && g->k[2] <= POOL_ROWS_MAXK;
    for (int64_t kw = 0; j->rows && kw < g->k[2]; kw++)
        tap_range_out(kw * g->dil[2] - g->pad[2], g->stride[2], g->in[2], g->out[2], &j->kwlo[kw], &j->kwhi[kw]);
}

static int pool_forward(qs_kctx *c)
{
    pool_p p;
    int rc = pool_get(c, &p);
    if (rc < 0)
        return rc;
    if (c->layout)   /* MaxPool or GlobalAveragePool between blocked activations (blocked.c) */
        return p.kind == POOL_MAX ? qs_blocked_maxpool(c, &p.g) : qs_blocked_gap(c);
    pool_job j = { .p = &p, .x = c->in[0]->data, .y = c->out[0]->data, .dtype = c->in[0]->dtype };
    if ((rc = pool_tables(c, &p, &j)) < 0)
        return rc;
    rows_setup(&p, &j, (p.kind == POOL_MAX || p.kind == POOL_AVG) && j.dtype == QS_F32 && !want_indices(c));
    if (want_indices(c)) {
        if (j.dtype != QS_F32)
            return qs_op_error(c, QS_EUNSUPPORTED, "the Indices output needs a float32 input (X is %s)",
                               qs_dtype_name(j.dtype));
        j.idx = qs_i64(c->out[1]);
    }
    qs_threadpool_for(c->pool, c->nthreads, p.N * p.C, plane_chunk(&p), pool_forward_range, &j);
    return 0;
}

static int pool_backward(qs_kctx *c)
{
    pool_p p;
    int rc = pool_get(c, &p);
    if (rc < 0)
        return rc;
    if (!c->din[0])
        return 0;
    if (c->in[0]->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "no gradient for a %s input", qs_dtype_name(c->in[0]->dtype));
    if (!c->dout[0]) {
        memset(c->din[0]->data, 0, qs_nbytes(c->din[0]));
        return 0;
    }
    pool_job j = { .p = &p, .x = c->in[0]->data, .dy = qs_f32(c->dout[0]), .dx = qs_f32(c->din[0]) };
    if ((rc = pool_tables(c, &p, &j)) < 0)
        return rc;
    rows_setup(&p, &j, p.kind == POOL_MAX && p.xvol <= INT32_MAX);   /* maxpool_grad_rows's int32 offsets */
    qs_threadpool_for(c->pool, c->nthreads, p.N * p.C, plane_chunk(&p), pool_backward_range, &j);
    return 0;
}

/* the block in which this node can read X and write Y (blocked.c): MaxPool and GlobalAveragePool */
static int pool_blocked(qs_kctx *c, unsigned *inputs)
{
    (void)inputs;   /* X: in[0] */
    pool_p p;
    if (pool_params(c, &p) < 0)
        return 0;
    return p.kind == POOL_MAX ? qs_blocked_maxpool_hook(c, &p.g) : qs_blocked_gap_hook(c);
}

#define POOL(name) { .domain = "", .op = name, .infer = pool_infer, .prepare = pool_prepare, .scratch = pool_scratch, \
                     .blocked = pool_blocked, .forward = pool_forward, .backward = pool_backward }

const qs_op_def qs_ops_pool[] = {
    POOL("MaxPool"), POOL("AveragePool"), POOL("GlobalMaxPool"), POOL("GlobalAveragePool"),
    { .op = NULL },
};
