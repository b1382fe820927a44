/* AdaRound (paper §3.4); the method is described in adaround.h.
 *
 * Every layer is brought to one shape: a weight matrix Wm [M, Kg] (output channels × inputs per
 * group; a Conv's W [M, C/g, k…] already is one, a Gemm/MatMul weight [K, N] is transposed) and
 * columns of length K = group·Kg, one per output position: an im2col column of a Conv (gathered
 * straight from the captured input, for the sampled positions only), a row of a Gemm/MatMul input.
 * Group g of a grouped Conv multiplies rows [g·Mg, (g+1)·Mg) of Wm with entries [g·Kg, (g+1)·Kg) of
 * each column, so one gather serves every group and each group is one GEMM.
 *
 * Per layer: a pass over the calibration data with every quantizer bypassed captures the FP32
 * input x; the targets T = W·x for every captured position are computed once and x is freed; a
 * second pass with the layers before it quantized captures x̃. An iteration then gathers a few
 * thousand columns of x̃ with their targets and costs two GEMMs per group (forward, and the
 * gradient dL/dW̃ = 2·(W̃x̃ − T)·x̃ᵀ / n) plus elementwise work per weight. The passes use fresh
 * runners because a weight FakeQuant is evaluated once at plan time, so the AdaRounded weights of
 * the layers before need a new plan anyway. */
#include "quant/adaround.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "ops/kernels.h"
#include "quant/rng.h"
#include "runner.h"

static char *xstrdup(const char *s) { return strdup(s ? s : ""); }

qs_adaround_config qs_adaround_config_default(void)
{
    return (qs_adaround_config){ .iterations = 10000, .reg = 0.01, .beta_start = 20, .beta_end = 2,
                                 .warm_start = 0.2, .lr = 1e-3, .batch = 32, .samples = 1024,
                                 .max_columns = 2048, .max_bytes = (int64_t)512 << 20, .seed = 0 };
}

/* --- the method's pieces ------------------------------------------------------------------------- */

static inline float sigm(float v) { return 1.f / (1.f + expf(-v)); }

float qs_adaround_h(float v)
{
    float r = sigm(v) * (QS_ADAROUND_ZETA - QS_ADAROUND_GAMMA) + QS_ADAROUND_GAMMA;
    return r < 0.f ? 0.f : r > 1.f ? 1.f : r;
}

float qs_adaround_dh(float v)
{
    float sg = sigm(v), r = sg * (QS_ADAROUND_ZETA - QS_ADAROUND_GAMMA) + QS_ADAROUND_GAMMA;
    return r < 0.f || r > 1.f ? 0.f : (QS_ADAROUND_ZETA - QS_ADAROUND_GAMMA) * sg * (1.f - sg);
}

float qs_adaround_v_init(float frac)
{
    float p = (frac - QS_ADAROUND_GAMMA) / (QS_ADAROUND_ZETA - QS_ADAROUND_GAMMA);   /* σ(V), in [1/12, 11/12] */
    return logf(p / (1.f - p));
}

double qs_adaround_reg(float h, double beta) { return 1.0 - pow(fabs(2.0 * h - 1.0), beta); }

double qs_adaround_dreg(float h, double beta)
{
    double u = 2.0 * h - 1.0;
    if (u == 0)
        return 0;
    return -2.0 * beta * pow(fabs(u), beta - 1.0) * (u > 0 ? 1.0 : -1.0);
}

static int64_t warm_end(const qs_adaround_config *cfg) { return llround(cfg->warm_start * cfg->iterations); }

double qs_adaround_beta(const qs_adaround_config *cfg, int64_t it)
{
    int64_t w = warm_end(cfg);
    if (it < w || cfg->iterations <= w)
        return 0;
    double rel = (double)(it - w) / (double)(cfg->iterations - w);
    return cfg->beta_end + 0.5 * (cfg->beta_start - cfg->beta_end) * (1.0 + cos(rel * 3.14159265358979323846));
}

float qs_adaround_soft(float w, float v, float s, float z, qs_grid g)
{
    float q = floorf(w / s) + qs_adaround_h(v) + z;
    q = q < g.qmin ? g.qmin : q > g.qmax ? g.qmax : q;
    return (q - z) * s;
}

static int64_t rng_below(uint64_t *s, int64_t n) { return (int64_t)(qs_splitmix64(s) % (uint64_t)n); }

/* The first k entries of perm[n] become a uniform random k-subset (partial Fisher–Yates; perm
 * stays a permutation, so it needs no resetting between draws). */
static void draw(uint64_t *s, int64_t *perm, int64_t n, int64_t k)
{
    for (int64_t i = 0; i < k; i++) {
        int64_t j = i + rng_below(s, n - i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* --- layers ------------------------------------------------------------------------------------- */

enum { K_CONV, K_GEMM, K_MATMUL };

typedef struct ada_layer {
    int node, wq, kind;
    int64_t M, Kg, group, Mg, K;   /* Wm [M, Kg]; columns of K = group·Kg */
    int trans;                     /* Wm is the stored weight transposed */
    float alpha;
    /* set from the first captured input */
    qs_conv_geom geom;
    int64_t C, kvol;               /* Conv: input channels, kernel volume */
    int64_t pin[3], pinvol;        /* Conv: the padded input's spatial dims and volume */
    int64_t P;                     /* columns (output positions or rows) per sample */
    int64_t per_x;                 /* floats per captured sample */
    int xndim;
    int64_t xshape[QS_MAX_DIMS];   /* a sample's shape (without the batch dim) */
    int64_t *off;                  /* Conv: kvol tap offsets in the padded input */
    int wndim;
    int64_t wshape[QS_MAX_DIMS];
} ada_layer;

static int weight_quantizer(const qs_quantsim *sim, int v)
{
    for (int q = 0; q < sim->nq; q++)
        if (sim->q[q].kind == QS_Q_WEIGHT && sim->q[q].out == v)
            return q;
    return -1;
}

/* Why layer node i cannot be AdaRounded (NULL: it can, and L is filled). */
static const char *layer_of(const qs_quantsim *sim, int i, ada_layer *L, char *buf, size_t nbuf)
{
    const qs_graph *g = sim->g;
    const qs_node *nd = &g->nodes[i];
    int kind = qs_node_is_op(nd, "Conv") ? K_CONV : qs_node_is_op(nd, "Gemm") ? K_GEMM : K_MATMUL;
    int wq = nd->nin > 1 ? weight_quantizer(sim, nd->in[1]) : -1;
    memset(L, 0, sizeof *L);
    if (wq < 0)
        return kind == K_MATMUL && nd->nin > 0 && weight_quantizer(sim, nd->in[0]) >= 0
                   ? "the weight is MatMul's first operand" : "";   /* "": not quantized, not listed */
    const qs_quantizer *q = &sim->q[wq];
    const qs_tensor *w = g->values[q->value].init;
    if (qs_quantsim_bypassed(sim, wq))
        return "its weight quantizer is bypassed";
    if (!w || w->dtype != QS_F32)
        return "its weight is not a float32 constant";
    if (qs_graph_count_reads(g, q->out) != 1 || qs_graph_count_reads(g, q->value) != 1)
        return "its weight is shared with other nodes";
    if (nd->nout < 1 || nd->out[0] < 0 || nd->nin < 1 || nd->in[0] < 0)
        return "it has no input or output";
    const float *s = qs_quantsim_scales((qs_quantsim *)sim, wq);
    for (int c = 0; c < q->nch; c++)
        if (!(s[c] > 0) || !isfinite(s[c]))
            return "its weight quantizer has a scale that is not positive and finite";
    L->node = i;
    L->wq = wq;
    L->kind = kind;
    L->alpha = 1.f;
    L->group = 1;
    if (kind == K_CONV) {
        if (w->ndim < 3 || w->ndim > 2 + QS_CONV_MAXD)
            return "its weight is not [M, C/group, k…] with 1 to 3 spatial dims";
        L->group = qs_node_int(nd, "group", 1);
        L->M = w->shape[0];
        L->Kg = qs_numel(w) / w->shape[0];
        if (L->group < 1 || L->M % L->group) {
            snprintf(buf, nbuf, "group = %lld does not divide its %lld output channels", (long long)L->group,
                     (long long)L->M);
            return buf;
        }
    } else if (kind == K_GEMM) {
        if (qs_node_int(nd, "transA", 0))
            return "Gemm with transA";
        if (w->ndim != 2)
            return "its weight is not 2-D";
        L->trans = !qs_node_int(nd, "transB", 0);
        L->M = w->shape[L->trans ? 1 : 0];
        L->Kg = w->shape[L->trans ? 0 : 1];
        L->alpha = qs_node_float(nd, "alpha", 1.f);
    } else {
        if (w->ndim != 2) {
            snprintf(buf, nbuf, "its weight has rank %d (MatMul is handled with a 2-D weight)", w->ndim);
            return buf;
        }
        L->trans = 1;
        L->M = w->shape[1];
        L->Kg = w->shape[0];
    }
    L->wndim = w->ndim;
    memcpy(L->wshape, w->shape, sizeof L->wshape);
    L->Mg = L->M / L->group;
    L->K = L->group * L->Kg;
    if (L->M < 1 || L->Kg < 1)
        return "its weight is empty";
    return NULL;
}

/* Column geometry from the first captured input x (batch first). */
static int layer_geometry(ada_layer *L, const qs_graph *g, const qs_tensor *x, qs_err *e)
{
    const qs_node *nd = &g->nodes[L->node];
    char sh[128];
    qs_shape_str(x->ndim, x->shape, sh, sizeof sh);
    if (x->dtype != QS_F32)
        return qs_error(e, QS_EUNSUPPORTED, "AdaRound: the input of %s '%s' is %s, not float32", nd->op, nd->name,
                        qs_dtype_name(x->dtype));
    if (L->kind == K_CONV) {
        if (x->ndim != L->wndim || x->shape[1] != L->group * L->wshape[1])
            return qs_error(e, QS_ESHAPE, "AdaRound: the input of Conv '%s' has shape %s; expected rank %d with %lld "
                            "channels", nd->name, sh, L->wndim, (long long)(L->group * L->wshape[1]));
        qs_err ge = {0};
        qs_kctx c = { .node = nd, .err = &ge };
        if (qs_conv_geom_init(&c, x->ndim - 2, x->shape + 2, L->wshape + 2, 0, 1, &L->geom) < 0)
            return qs_error(e, ge.code ? ge.code : QS_EINVAL, "AdaRound: %s", ge.msg);
        L->C = x->shape[1];
        const qs_conv_geom *gm = &L->geom;
        L->kvol = qs_geom_kvol(gm);
        L->P = qs_geom_outvol(gm);
        for (int d = 0; d < 3; d++)
            L->pin[d] = gm->in[d] + gm->pad[d] + gm->pad_end[d];
        L->pinvol = L->pin[0] * L->pin[1] * L->pin[2];
        L->per_x = L->C * L->pinvol;
        if (!(L->off = malloc(L->kvol * sizeof *L->off)))
            return qs_error(e, QS_ENOMEM, "AdaRound: out of memory");
        int64_t t = 0;
        for (int64_t a = 0; a < gm->k[0]; a++)
            for (int64_t b = 0; b < gm->k[1]; b++)
                for (int64_t c = 0; c < gm->k[2]; c++)
                    L->off[t++] = (a * gm->dil[0] * L->pin[1] + b * gm->dil[1]) * L->pin[2] + c * gm->dil[2];
    } else if (L->kind == K_GEMM) {
        if (x->ndim != 2 || x->shape[1] != L->Kg)
            return qs_error(e, QS_ESHAPE, "AdaRound: the input of Gemm '%s' has shape %s; expected [N, %lld]",
                            nd->name, sh, (long long)L->Kg);
        L->P = 1;
        L->per_x = L->Kg;
    } else {
        if (x->ndim < 2 || x->shape[x->ndim - 1] != L->Kg)
            return qs_error(e, QS_ESHAPE, "AdaRound: the input of MatMul '%s' has shape %s; expected [N, …, %lld]",
                            nd->name, sh, (long long)L->Kg);
        L->per_x = x->shape[0] ? qs_numel(x) / x->shape[0] : 0;
        L->P = L->per_x / L->Kg;
    }
    L->xndim = x->ndim - 1;
    memcpy(L->xshape, x->shape + 1, (x->ndim - 1) * sizeof *x->shape);
    return 0;
}

/* Column p of one sample xs into row[K]: the im2col column of output position p (the stored
 * input is zero-padded, so every tap is a plain load at a fixed offset), or input row p. */
static void gather(const ada_layer *L, const float *xs, int64_t p, float *row)
{
    if (L->kind != K_CONV) {
        memcpy(row, xs + p * L->K, L->K * sizeof *row);
        return;
    }
    const qs_conv_geom *g = &L->geom;
    int64_t o0 = p / (g->out[1] * g->out[2]), o1 = (p / g->out[2]) % g->out[1], o2 = p % g->out[2];
    const float *x = xs + ((o0 * g->stride[0]) * L->pin[1] + o1 * g->stride[1]) * L->pin[2] + o2 * g->stride[2];
    const int64_t *off = L->off;
    for (int64_t ch = 0; ch < L->C; ch++, x += L->pinvol, row += L->kvol)
        for (int64_t t = 0; t < L->kvol; t++)
            row[t] = x[off[t]];
}

/* Columns [begin, end) of an iteration: column j is position pick[j] (j itself when pick is NULL)
 * of the batch's samples sperm[0..]. */
typedef struct gather_job {
    const ada_layer *L;
    const float *X;
    const int64_t *sperm, *pick;
    float *cols;
} gather_job;

static void gather_range(void *arg, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const gather_job *j = arg;
    const ada_layer *L = j->L;
    for (int64_t i = begin; i < end; i++) {
        int64_t c = j->pick ? j->pick[i] : i;
        gather(L, j->X + j->sperm[c / L->P] * L->per_x, c % L->P, j->cols + i * L->K);
    }
}

/* rows samples of a captured input (batch first, as the graph holds it) into dst, zero-padded for
 * a Conv */
static void store_rows(const ada_layer *L, const float *src, int64_t rows, float *dst)
{
    if (L->kind != K_CONV) {
        memcpy(dst, src, (size_t)(rows * L->per_x) * sizeof *dst);
        return;
    }
    const qs_conv_geom *g = &L->geom;
    memset(dst, 0, (size_t)(rows * L->per_x) * sizeof *dst);
    for (int64_t r = 0; r < rows * L->C; r++)
        for (int64_t a = 0; a < g->in[0]; a++)
            for (int64_t b = 0; b < g->in[1]; b++)
                memcpy(dst + r * L->pinvol + ((a + g->pad[0]) * L->pin[1] + b + g->pad[1]) * L->pin[2] + g->pad[2],
                       src + ((r * g->in[0] + a) * g->in[1] + b) * g->in[2], g->in[2] * sizeof *dst);
}

/* Y[n, M] = alpha·cols·Wmᵀ for cols [n, K], group by group (a row of Y per column, so that it
 * lines up with the targets, stored position-major). */
static void layer_forward(const ada_layer *L, const float *Wm, const float *cols, int64_t n, float *Y,
                          qs_threadpool *tp)
{
    for (int64_t gi = 0; gi < L->group; gi++)
        qs_sgemm_mt(tp, qs_threadpool_size(tp), 0, 1, n, L->Mg, L->Kg, L->alpha, cols + gi * L->Kg, L->K, Wm + gi * L->Mg * L->Kg,
                    L->Kg, 0.f, Y + gi * L->Mg, L->M);
}

/* --- capture ------------------------------------------------------------------------------------ */

typedef struct capture {
    ada_layer *L;
    const qs_graph *g;
    int value, producer;   /* the layer's input and the node writing it (-1: a graph input) */
    int fp;                /* the FP32 pass: fixes the geometry and how many samples fit */
    int64_t want, cap, n;  /* samples asked for / room / stored */
    int64_t max_bytes;
    int64_t rows;          /* valid rows of the current batch */
    float *buf;
    qs_err err;
    /* the rest of the graph is not needed once the input is stored: the observer raises stop,
     * the flag the runner polls, and watches the caller's abort flag in its place */
    atomic_int stop;
    atomic_int *user_abort;
    int stored, aborted;
} capture;

static void store(capture *c, const qs_tensor *x)
{
    ada_layer *L = c->L;
    if (c->err.code)
        return;
    if (!c->buf) {
        if (c->fp) {
            if (layer_geometry(L, c->g, x, &c->err) < 0)
                return;
            /* peak memory: the inputs and their targets of the samples kept */
            int64_t per = (L->per_x + L->M * L->P) * (int64_t)sizeof(float);
            int64_t fit = per > 0 ? c->max_bytes / per : c->want;
            c->cap = c->want < fit ? c->want : fit < 1 ? 1 : fit;
        } else {
            c->cap = c->want;
        }
        if (!(c->buf = malloc((size_t)(c->cap * L->per_x + 1) * sizeof *c->buf))) {
            qs_error(&c->err, QS_ENOMEM, "AdaRound: out of memory capturing the input of '%s' (%lld samples)",
                     c->g->nodes[L->node].name, (long long)c->cap);
            return;
        }
    }
    if (x->dtype != QS_F32 || x->ndim != L->xndim + 1 ||
        memcmp(x->shape + 1, L->xshape, L->xndim * sizeof *x->shape)) {
        char sh[128];
        qs_error(&c->err, QS_ESHAPE, "AdaRound: the input of '%s' changed shape between passes (now %s)",
                 c->g->nodes[L->node].name, qs_shape_str(x->ndim, x->shape, sh, sizeof sh));
        return;
    }
    int64_t rows = x->shape[0] < c->rows ? x->shape[0] : c->rows;
    if (rows > c->cap - c->n)
        rows = c->cap - c->n;
    if (rows > 0)
        store_rows(L, qs_f32(x), rows, c->buf + c->n * L->per_x);
    c->n += rows > 0 ? rows : 0;
}

static void observe(void *ud, int node, qs_tensor *const *out, int nout)
{
    capture *c = ud;
    if (c->user_abort && atomic_load(c->user_abort)) {
        c->aborted = 1;
        atomic_store(&c->stop, 1);
    }
    if (node != c->producer)
        return;
    const qs_node *nd = &c->g->nodes[node];
    for (int j = 0; j < nout && j < nd->nout; j++)
        if (nd->out[j] == c->value) {
            store(c, out[j]);
            c->stored = 1;
            atomic_store(&c->stop, 1);
        }
}

static int sink(void *ud, int64_t start, int64_t n, const qs_tensor *const *outputs, qs_exec *x, qs_err *e)
{
    (void)start, (void)n, (void)outputs, (void)e;
    capture *c = ud;
    const qs_tensor *t = qs_exec_value(x, c->value);
    if (t)
        store(c, t);
    return 0;
}

static int run_capture(qs_quantsim *sim, const qs_pl_data *data, const qs_adaround_config *cfg,
                       const qs_pipeline_io *io, capture *c, qs_err *e)
{
    qs_runner *r = qs_runner_new(sim->g, cfg->batch, e);
    if (!r)
        return qs_error_prefix(e, "AdaRound: ");
    if (io)
        qs_runner_set_pool(r, io->pool);
    if (c->producer >= 0)
        qs_runner_set_observer(r, observe, c);
    c->user_abort = io ? io->abort : NULL;
    int64_t bs = qs_runner_batch(r);
    int rc = 0;
    for (int64_t start = 0; start < c->want && rc == 0; start += bs) {
        int64_t k = c->want - start < bs ? c->want - start : bs;
        c->rows = k;   /* one forward per call: k ≤ the runner's batch */
        c->stored = 0;
        atomic_store(&c->stop, 0);
        rc = qs_runner_stream(r, data->d, data->arrays, start, k, c->producer < 0 ? sink : NULL, c, NULL, NULL,
                              c->producer < 0 ? c->user_abort : &c->stop, e);
        if (rc == QS_EABORTED && c->stored && !c->aborted) {
            rc = 0;   /* stopped on purpose after the layer's input */
            if (e) {
                e->code = 0;
                e->msg[0] = 0;
            }
        }
        else if (rc == QS_EABORTED && c->aborted)
            rc = qs_error(e, QS_EABORTED, "AdaRound: aborted");
        if (rc == 0 && c->err.code)
            rc = qs_error(e, c->err.code, "%s", c->err.msg);
        if (c->buf && c->n >= c->cap)
            break;
    }
    qs_runner_free(r);
    return rc;
}

/* --- one layer ---------------------------------------------------------------------------------- */

typedef struct opt_state {
    int64_t nw;
    float *w;          /* Wm, FP32 */
    float *s, *z;      /* per weight: the quantizer's scale and zero point */
    float *base;       /* floor(w/s) + z */
    float *v, *m1, *m2;
    float *h, *dh, *wt, *dfac, *grad;
    int64_t *src;      /* index in the stored weight */
} opt_state;

static void opt_free(opt_state *o)
{
    float *f[] = { o->w, o->s, o->z, o->base, o->v, o->m1, o->m2, o->h, o->dh, o->wt, o->dfac, o->grad };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        free(f[i]);
    free(o->src);
}

static int opt_init(const qs_quantsim *sim, const ada_layer *L, opt_state *o)
{
    const qs_quantizer *q = &sim->q[L->wq];
    const qs_tensor *w = sim->g->values[q->value].init;
    const float *sc = qs_quantsim_scales((qs_quantsim *)sim, L->wq), *zp = qs_quantsim_zeros((qs_quantsim *)sim, L->wq);
    int64_t n = o->nw = qs_numel(w), inner = 1;
    for (int d = q->axis + 1; q->axis >= 0 && d < w->ndim; d++)
        inner *= w->shape[d];
    float **f[] = { &o->w, &o->s, &o->z, &o->base, &o->v, &o->m1, &o->m2, &o->h, &o->dh, &o->wt, &o->dfac, &o->grad };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (!(*f[i] = calloc(n + 1, sizeof(float))))
            return -1;
    if (!(o->src = malloc((n + 1) * sizeof *o->src)))
        return -1;
    const float *wd = qs_f32(w);
    for (int64_t i = 0; i < n; i++) {
        int64_t src = L->trans ? (i % L->Kg) * L->M + i / L->Kg : i;   /* Wm[m, k] = W[k, m] */
        int64_t ch = q->axis >= 0 ? (src / inner) % q->nch : 0;
        float s = sc[ch], fl = floorf(wd[src] / s);
        o->src[i] = src;
        o->w[i] = wd[src];
        o->s[i] = s;
        o->z[i] = zp[ch];
        o->base[i] = fl + zp[ch];
        float frac = wd[src] / s - fl;
        o->v[i] = qs_adaround_v_init(frac < 0.f ? 0.f : frac >= 1.f ? 0.99999994f : frac);
    }
    return 0;
}

/* Soft weights W̃ and the factors their gradient needs. */
static void soft_weights(opt_state *o, qs_grid gr)
{
    const float zg = QS_ADAROUND_ZETA - QS_ADAROUND_GAMMA;
    for (int64_t i = 0; i < o->nw; i++) {
        float sg = sigm(o->v[i]), r = sg * zg + QS_ADAROUND_GAMMA;   /* h and dh/dV as qs_adaround_h/_dh */
        float h = r < 0.f ? 0.f : r > 1.f ? 1.f : r, q = o->base[i] + h;
        int inside = q >= gr.qmin && q <= gr.qmax;
        q = q < gr.qmin ? gr.qmin : q > gr.qmax ? gr.qmax : q;
        o->h[i] = h;
        o->dh[i] = r < 0.f || r > 1.f ? 0.f : zg * sg * (1.f - sg);
        o->wt[i] = (q - o->z[i]) * o->s[i];
        o->dfac[i] = inside ? o->s[i] * o->dh[i] : 0.f;
    }
}

/* Σ_columns Σ_m (alpha·(Wm·x̃) − T)² / n over the evaluation columns cols [n, K] with targets T [n, M]. */
static double recon_mse(const ada_layer *L, const float *Wm, const float *cols, const float *T, int64_t n, float *Y,
                        qs_threadpool *tp)
{
    layer_forward(L, Wm, cols, n, Y, tp);
    double acc = 0;
    for (int64_t i = 0; i < L->M * n; i++) {
        double d = (double)Y[i] - T[i];
        acc += d * d;
    }
    return n ? acc / (double)n : 0;
}

typedef struct layer_run {
    qs_quantsim *sim;
    const qs_pl_data *data;
    const qs_adaround_config *cfg;
    const qs_pipeline_io *io;
    qs_threadpool *pool;   /* the pipeline's, for the layer's products */
    const int *saved;      /* bypass flags as the caller left them */
    float **fp32, **done;  /* per quantizer: FP32 and AdaRounded weights of the layers finished */
    uint64_t seed;
} layer_run;

/* fp32: put the FP32 weights of the finished layers back into their initializers; else the
 * AdaRounded ones. */
static void swap_weights(layer_run *lr, int fp32)
{
    for (int i = 0; i < lr->sim->nq; i++)
        if (lr->fp32[i]) {
            qs_tensor *w = lr->sim->g->values[lr->sim->q[i].value].init;
            memcpy(w->data, fp32 ? lr->fp32[i] : lr->done[i], qs_nbytes(w));
        }
}

static int adaround_layer(layer_run *lr, ada_layer *L, qs_adaround_layer *rl, int *skipped, qs_err *e)
{
    qs_quantsim *sim = lr->sim;
    qs_graph *g = sim->g;
    const qs_adaround_config *cfg = lr->cfg;
    const qs_node *nd = &g->nodes[L->node];
    const qs_quantizer *wq = &sim->q[L->wq];
    double t0 = qs_now();
    int64_t want = lr->data->rows < cfg->samples ? lr->data->rows : cfg->samples;
    capture cx = { .L = L, .g = g, .value = nd->in[0], .producer = g->values[nd->in[0]].producer, .fp = 1,
                   .want = want, .max_bytes = cfg->max_bytes };
    float *T = NULL, *cols = NULL, *Y = NULL, *ecols = NULL, *eT = NULL, *ey = NULL;
    int64_t *sperm = NULL, *pperm = NULL;
    opt_state o = {0};
    int rc = 0;
    char stage[600];
    snprintf(stage, sizeof stage, "adaround %s", nd->name);
    if (lr->io)
        qs_pl_progress(lr->io, stage, 0, cfg->iterations, t0);

    /* FP32 inputs → targets W·x for every captured position: every quantizer bypassed, and the
     * layers already AdaRounded given their FP32 weights back for the pass */
    qs_quantsim_bypass_kind(sim, -1, 1);
    swap_weights(lr, 1);
    rc = run_capture(sim, lr->data, cfg, lr->io, &cx, e);
    swap_weights(lr, 0);
    if (rc < 0)
        goto out;
    if (cx.n == 0) {
        *skipped = 1;
        goto out;
    }
    int64_t n = cx.n, P = L->P, M = L->M, K = L->K;
    if (opt_init(sim, L, &o) < 0)
        goto oom;
    int64_t chunk = P < 1024 ? P : 1024;
    T = malloc((size_t)(n * M * P + 1) * sizeof *T);
    cols = malloc((size_t)(chunk * K + 1) * sizeof *cols);
    if (!T || !cols)
        goto oom;
    for (int64_t s = 0; s < n; s++)
        for (int64_t p0 = 0; p0 < P; p0 += chunk) {
            int64_t cnt = P - p0 < chunk ? P - p0 : chunk;
            for (int64_t j = 0; j < cnt; j++)
                gather(L, cx.buf + s * L->per_x, p0 + j, cols + j * K);
            layer_forward(L, o.w, cols, cnt, T + (s * P + p0) * M, lr->pool);
        }
    free(cx.buf);
    free(cols);
    cols = NULL;

    /* quantized inputs: the layers before are AdaRounded; other quantizers as the caller set them */
    for (int i = 0; i < sim->nq; i++) {
        const qs_quantizer *q = &sim->q[i];
        qs_quantsim_bypass(sim, i, lr->saved[i] || (q->kind != QS_Q_WEIGHT && !q->initialized));
    }
    cx = (capture){ .L = L, .g = g, .value = nd->in[0], .producer = g->values[nd->in[0]].producer, .fp = 0,
                    .want = n, .max_bytes = cfg->max_bytes };
    rc = run_capture(sim, lr->data, cfg, lr->io, &cx, e);
    if (rc < 0)
        goto out;
    if (cx.n != n) {
        rc = qs_error(e, QS_EINVAL, "AdaRound: '%s': %lld quantized inputs captured, %lld FP32 ones", nd->name,
                      (long long)cx.n, (long long)n);
        goto out;
    }
    const float *X = cx.buf;
    double t_opt = qs_now();
    rl->capture_seconds = t_opt - t0;

    /* columns per iteration: cfg.batch samples, at most max_columns of their positions */
    uint64_t rs = lr->seed;
    int64_t b = cfg->batch < n ? cfg->batch : n, pool = b * P;
    int64_t nc = pool < cfg->max_columns ? pool : cfg->max_columns;
    sperm = malloc((n + 1) * sizeof *sperm);
    pperm = malloc((pool + 1) * sizeof *pperm);
    cols = malloc((size_t)(nc * K + 1) * sizeof *cols);
    Y = malloc((size_t)(M * nc + 1) * sizeof *Y);
    /* a fixed evaluation set for the before/after figures */
    int64_t ne = n * P, ecap = 4 * cfg->max_columns, kcap = ((int64_t)1 << 23) / K;
    if (ecap > kcap)
        ecap = kcap > 256 ? kcap : 256;
    if (ne > ecap)
        ne = ecap;
    ecols = malloc((size_t)(ne * K + 1) * sizeof *ecols);
    eT = malloc((size_t)(M * ne + 1) * sizeof *eT);
    ey = malloc((size_t)(M * ne + 1) * sizeof *ey);
    if (!sperm || !pperm || !cols || !Y || !ecols || !eT || !ey)
        goto oom;
    for (int64_t i = 0; i < n; i++)
        sperm[i] = i;
    for (int64_t i = 0; i < pool; i++)
        pperm[i] = i;
    for (int64_t j = 0; j < ne; j++) {
        int64_t c = ne == n * P ? j : rng_below(&rs, n * P), s = c / P, p = c % P;
        gather(L, X + s * L->per_x, p, ecols + j * K);
        memcpy(eT + j * M, T + (s * P + p) * M, M * sizeof *eT);
    }

    /* Adam on V */
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    double b1t = 1, b2t = 1, t_last = qs_now();
    int64_t wend = warm_end(cfg);
    for (int64_t it = 0; it < cfg->iterations; it++) {
        if (lr->io && qs_pl_aborted(lr->io)) {
            rc = qs_error(e, QS_EABORTED, "AdaRound: aborted (layer '%s', iteration %lld)", nd->name, (long long)it);
            goto out;
        }
        draw(&rs, sperm, n, b);
        if (nc < pool)
            draw(&rs, pperm, pool, nc);
        gather_job gj = { L, X, sperm, nc < pool ? pperm : NULL, cols };
        qs_threadpool_for(lr->pool, qs_threadpool_size(lr->pool), nc, 256, gather_range, &gj);
        soft_weights(&o, wq->grid);
        layer_forward(L, o.wt, cols, nc, Y, lr->pool);
        for (int64_t j = 0; j < nc; j++) {   /* Y − T (the rows are scattered: fetch ahead) */
            int64_t c = nc < pool ? pperm[j] : j;
            if (j + 8 < nc) {
                int64_t c8 = nc < pool ? pperm[j + 8] : j + 8;
                const float *t8 = T + (sperm[c8 / P] * P + c8 % P) * M;
                for (int64_t m = 0; m < M; m += 16)
                    __builtin_prefetch(t8 + m);
            }
            const float *t = T + (sperm[c / P] * P + c % P) * M;
            float *y = Y + j * M;
            for (int64_t m = 0; m < M; m++)
                y[m] -= t[m];
        }
        /* dL/dW̃ = 2·alpha/n · (Y − T)ᵀ·cols, group by group */
        for (int64_t gi = 0; gi < L->group; gi++)
            qs_sgemm_mt(lr->pool, qs_threadpool_size(lr->pool), 1, 0, L->Mg, L->Kg, nc, 2.f * L->alpha / (float)nc, Y + gi * L->Mg, M,
                        cols + gi * L->Kg, K, 0.f, o.grad + gi * L->Mg * L->Kg, L->Kg);
        double beta = qs_adaround_beta(cfg, it);
        int reg_on = it >= wend && cfg->reg > 0 && beta > 0;
        b1t *= b1;
        b2t *= b2;
        float lr_t = (float)(cfg->lr * sqrt(1 - b2t) / (1 - b1t));
        for (int64_t i = 0; i < o.nw; i++) {
            float gv = o.grad[i] * o.dfac[i];
            if (reg_on)
                gv += (float)(cfg->reg * qs_adaround_dreg(o.h[i], beta)) * o.dh[i];
            o.m1[i] = (float)(b1 * o.m1[i] + (1 - b1) * gv);
            o.m2[i] = (float)(b2 * o.m2[i] + (1 - b2) * gv * gv);
            o.v[i] -= lr_t * o.m1[i] / (sqrtf(o.m2[i]) + (float)(eps * sqrt(1 - b2t)));
        }
        if (lr->io && (qs_now() - t_last > 0.5 || it + 1 == cfg->iterations)) {
            qs_pl_progress(lr->io, stage, (double)(it + 1), cfg->iterations, t_opt);
            t_last = qs_now();
        }
    }
    double t_end = qs_now();

    /* hard rounding, written into the weight initializer as grid values */
    float *wn = o.grad, *wa = o.wt;   /* reused: nearest and AdaRounded weights */
    int64_t up = 0, changed = 0;
    qs_grid gr = wq->grid;
    for (int64_t i = 0; i < o.nw; i++) {
        int u = qs_adaround_h(o.v[i]) >= 0.5f;
        float q = o.base[i] + (float)u, qn = qs_quantize1(o.w[i], o.s[i], o.z[i], gr);
        q = q < gr.qmin ? gr.qmin : q > gr.qmax ? gr.qmax : q;
        up += u;
        changed += q != qn;
        wa[i] = (q - o.z[i]) * o.s[i];
        wn[i] = (qn - o.z[i]) * o.s[i];
    }
    rl->mse_nearest = recon_mse(L, wn, ecols, eT, ne, ey, lr->pool);
    rl->mse_adaround = recon_mse(L, wa, ecols, eT, ne, ey, lr->pool);
    qs_tensor *wt = g->values[wq->value].init;
    float *wd = qs_f32(wt);
    if (!(lr->fp32[L->wq] = malloc(qs_nbytes(wt))) || !(lr->done[L->wq] = malloc(qs_nbytes(wt))))
        goto oom;
    memcpy(lr->fp32[L->wq], wd, qs_nbytes(wt));
    for (int64_t i = 0; i < o.nw; i++)
        wd[o.src[i]] = wa[i];
    memcpy(lr->done[L->wq], wd, qs_nbytes(wt));
    rl->name = xstrdup(nd->name);
    rl->op = L->kind == K_CONV ? "Conv" : L->kind == K_GEMM ? "Gemm" : "MatMul";
    rl->weights = o.nw;
    rl->samples = n;
    rl->columns = nc;
    rl->iterations = cfg->iterations;
    rl->optimize_seconds = t_end - t_opt;
    rl->ms_per_iteration = cfg->iterations ? 1e3 * (t_end - t_opt) / cfg->iterations : 0;
    /* the two products per iteration: 2·nc·M·Kg flops each (every group multiplies Mg × Kg) */
    rl->gflops = t_end > t_opt ? 4.0 * (double)nc * (double)M * (double)L->Kg * cfg->iterations / (t_end - t_opt) / 1e9 : 0;
    rl->frac_up = o.nw ? (double)up / (double)o.nw : 0;
    rl->frac_changed = o.nw ? (double)changed / (double)o.nw : 0;
    rl->seconds = qs_now() - t0;
    if (!rl->name)
        goto oom;
    goto out;
oom:
    rc = qs_error(e, QS_ENOMEM, "AdaRound: out of memory for layer '%s'", nd->name);
out:
    for (int i = 0; i < sim->nq; i++)
        qs_quantsim_bypass(sim, i, lr->saved[i]);
    free(cx.buf);
    free(T);
    free(cols);
    free(Y);
    free(ecols);
    free(eT);
    free(ey);
    free(sperm);
    free(pperm);
    free(L->off);
    L->off = NULL;
    opt_free(&o);
    return rc;
}

/* --- the pass over all layers --------------------------------------------------------------------- */

static int check_config(const qs_adaround_config *c, qs_err *e)
{
    if (c->iterations < 0)
        return qs_error(e, QS_EINVAL, "AdaRound: iterations must be at least 0 (got %d)", c->iterations);
    if (c->batch < 1 || c->samples < 1 || c->max_columns < 1)
        return qs_error(e, QS_EINVAL, "AdaRound: batch (%lld), samples (%lld) and max_columns (%lld) must be at "
                        "least 1", (long long)c->batch, (long long)c->samples, (long long)c->max_columns);
    if (!(c->reg >= 0) || !isfinite(c->reg))
        return qs_error(e, QS_EINVAL, "AdaRound: reg (λ) must be a finite number ≥ 0 (got %g)", c->reg);
    if (!(c->lr > 0) || !isfinite(c->lr))
        return qs_error(e, QS_EINVAL, "AdaRound: lr must be a finite number > 0 (got %g)", c->lr);
    if (!(c->warm_start >= 0 && c->warm_start <= 1))
        return qs_error(e, QS_EINVAL, "AdaRound: warm_start must be in [0, 1] (got %g)", c->warm_start);
    if (!(c->beta_start >= 1 && c->beta_end >= 1) || !isfinite(c->beta_start) || !isfinite(c->beta_end))
        return qs_error(e, QS_EINVAL, "AdaRound: beta_start and beta_end must be finite and ≥ 1 (got %g, %g)",
                        c->beta_start, c->beta_end);
    if (c->max_bytes < 1)
        return qs_error(e, QS_EINVAL, "AdaRound: max_bytes must be positive");
    return 0;
}

int qs_adaround(qs_quantsim *sim, const qs_pl_data *data, const qs_adaround_config *cfg,
                const qs_pipeline_io *io, qs_adaround_report **report, qs_err *e)
{
    qs_adaround_config dflt = qs_adaround_config_default();
    if (!cfg)
        cfg = &dflt;
    if (report)
        *report = NULL;
    int rc = check_config(cfg, e);
    if (rc < 0)
        return rc;
    if (!data || !data->d)
        return qs_error(e, QS_EINVAL, "AdaRound needs calibration data");
    if (data->rows < 1)
        return qs_error(e, QS_EINVAL, "AdaRound: the calibration data has no samples");
    double t_start = qs_now();
    qs_graph *g = sim->g;
    qs_adaround_report *rep = calloc(1, sizeof *rep);
    int *saved = malloc((sim->nq + 1) * sizeof *saved);
    float **fp32 = calloc(sim->nq + 1, sizeof *fp32), **done = calloc(sim->nq + 1, sizeof *done);
    if (!rep || !saved || !fp32 || !done) {
        free(rep);
        free(saved);
        free(fp32);
        free(done);
        return qs_error(e, QS_ENOMEM, "AdaRound: out of memory");
    }
    rep->cfg = *cfg;
    for (int i = 0; i < sim->nq; i++)
        saved[i] = qs_quantsim_bypassed(sim, i);
    layer_run lr = { .sim = sim, .data = data, .cfg = cfg, .io = io, .saved = saved, .fp32 = fp32, .done = done,
                     .pool = io ? io->pool : NULL };
    for (int i = 0; i < g->nnodes && rc == 0; i++) {
        const qs_node *nd = &g->nodes[i];
        if (!qs_node_is_op(nd, "Conv") && !qs_node_is_op(nd, "Gemm") && !qs_node_is_op(nd, "MatMul"))
            continue;
        ada_layer L;
        char why_buf[256];
        const char *why = layer_of(sim, i, &L, why_buf, sizeof why_buf);
        if (why) {
            if (why[0] && qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "%s", why) < 0)
                rc = qs_error(e, QS_ENOMEM, "AdaRound: out of memory");
            continue;
        }
        qs_adaround_layer *rl = realloc(rep->layers, (rep->nlayers + 1) * sizeof *rl);
        if (!rl) {
            rc = qs_error(e, QS_ENOMEM, "AdaRound: out of memory");
            break;
        }
        rep->layers = rl;
        rl += rep->nlayers;
        memset(rl, 0, sizeof *rl);
        /* one RNG stream per layer: a layer's draws do not depend on the layers before it */
        lr.seed = cfg->seed ^ (QS_SPLITMIX_GAMMA * (uint64_t)(i + 1));
        int skipped = 0;
        rc = adaround_layer(&lr, &L, rl, &skipped, e);
        if (rc == 0 && skipped && qs_skip_add(&rep->skipped, &rep->nskipped, nd->name, NULL, "its input was not computed on the calibration data") < 0)
            rc = qs_error(e, QS_ENOMEM, "AdaRound: out of memory");
        if (rc == 0 && !skipped)
            rep->nlayers++;
        else
            free(rl->name);
    }
    for (int i = 0; i < sim->nq; i++)
        qs_quantsim_bypass(sim, i, saved[i]);
    for (int i = 0; i < sim->nq; i++) {
        free(fp32[i]);
        free(done[i]);
    }
    free(fp32);
    free(done);
    free(saved);
    rep->seconds = qs_now() - t_start;
    if (rc == 0 && report)
        *report = rep;
    else
        qs_adaround_report_free(rep);
    return rc;
}

/* --- report ------------------------------------------------------------------------------------- */

void qs_adaround_report_free(qs_adaround_report *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nlayers; i++)
        free(r->layers[i].name);
    free(r->layers);
    qs_skips_free(r->skipped, r->nskipped);
    free(r);
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

json_t *qs_adaround_report_json(const qs_adaround_report *r)
{
    if (!r)
        return json_null();
    json_t *layers = json_array(), *skipped = qs_skips_json(r->skipped, r->nskipped, "name", NULL);
    int64_t samples = 0;
    for (int i = 0; i < r->nlayers; i++) {
        const qs_adaround_layer *l = &r->layers[i];
        samples = l->samples > samples ? l->samples : samples;
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:i}", "name", l->name, "op", l->op, "weights",
                              (json_int_t)l->weights, "samples", (json_int_t)l->samples, "columns",
                              (json_int_t)l->columns, "iterations", l->iterations);
        json_object_set_new(o, "seconds", num(l->seconds));
        json_object_set_new(o, "capture_seconds", num(l->capture_seconds));
        json_object_set_new(o, "optimize_seconds", num(l->optimize_seconds));
        json_object_set_new(o, "ms_per_iteration", num(l->ms_per_iteration));
        json_object_set_new(o, "gflops", num(l->gflops));
        json_object_set_new(o, "mse_nearest", num(l->mse_nearest));
        json_object_set_new(o, "mse_adaround", num(l->mse_adaround));
        json_object_set_new(o, "frac_up", num(l->frac_up));
        json_object_set_new(o, "frac_changed", num(l->frac_changed));
        json_array_append_new(layers, o);
    }
    const qs_adaround_config *c = &r->cfg;
    json_t *cfg = json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I}", "iterations", c->iterations,
                            "reg", c->reg, "beta_start", c->beta_start, "beta_end", c->beta_end, "warm_start",
                            c->warm_start, "lr", c->lr, "batch_size", (json_int_t)c->batch, "samples",
                            (json_int_t)c->samples, "max_columns", (json_int_t)c->max_columns, "max_bytes",
                            (json_int_t)c->max_bytes, "seed", (json_int_t)c->seed);
    return json_pack("{s:i, s:I, s:f, s:o, s:o, s:o}", "iterations", c->iterations, "samples", (json_int_t)samples,
                     "seconds", r->seconds, "config", cfg, "layers", layers, "skipped", skipped);
}
