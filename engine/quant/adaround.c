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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "ops/kernels.h"
#include "quant/rng.h"
#include "quant/rounding_layers.h"

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

typedef struct ada_layer {
    qs_rl_layer b;                 /* the layer and its geometry (rounding_layers.h) */
    int64_t K;                     /* columns of K = group·Kg */
    int64_t kvol;                  /* Conv: kernel volume */
    int64_t pin[3], pinvol;        /* Conv: the padded input's spatial dims and volume */
    int64_t per_x;                 /* floats per captured sample (zero-padded for a Conv) */
    int64_t *off;                  /* Conv: kvol tap offsets in the padded input */
} ada_layer;

/* Column geometry from the first captured input x (batch first), and how it is stored. */
static int layer_geometry(ada_layer *L, const qs_graph *g, const qs_tensor *x, qs_err *e)
{
    if (qs_rl_geometry(&L->b, g, x, "AdaRound", e) < 0)
        return -1;
    L->K = L->b.group * L->b.Kg;
    L->per_x = L->b.per_x;
    if (L->b.kind != QS_RL_CONV)
        return 0;
    const qs_conv_geom *gm = &L->b.geom;
    L->kvol = qs_geom_kvol(gm);
    for (int d = 0; d < 3; d++)
        L->pin[d] = gm->in[d] + gm->pad[d] + gm->pad_end[d];
    L->pinvol = L->pin[0] * L->pin[1] * L->pin[2];
    L->per_x = L->b.C * L->pinvol;
    if (!(L->off = malloc(L->kvol * sizeof *L->off)))
        return qs_error(e, QS_ENOMEM, "AdaRound: out of memory");
    int64_t t = 0;
    for (int64_t a = 0; a < gm->k[0]; a++)
        for (int64_t b = 0; b < gm->k[1]; b++)
            for (int64_t c = 0; c < gm->k[2]; c++)
                L->off[t++] = (a * gm->dil[0] * L->pin[1] + b * gm->dil[1]) * L->pin[2] + c * gm->dil[2];
    return 0;
}

/* Column p of one sample xs into row[K]: the im2col column of output position p (the stored
 * input is zero-padded, so every tap is a plain load at a fixed offset), or input row p. */
static void gather(const ada_layer *L, const float *xs, int64_t p, float *row)
{
    if (L->b.kind != QS_RL_CONV) {
        memcpy(row, xs + p * L->K, L->K * sizeof *row);
        return;
    }
    const qs_conv_geom *g = &L->b.geom;
    int64_t o0 = p / (g->out[1] * g->out[2]), o1 = (p / g->out[2]) % g->out[1], o2 = p % g->out[2];
    const float *x = xs + ((o0 * g->stride[0]) * L->pin[1] + o1 * g->stride[1]) * L->pin[2] + o2 * g->stride[2];
    const int64_t *off = L->off;
    for (int64_t ch = 0; ch < L->b.C; ch++, x += L->pinvol, row += L->kvol)
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
        gather(L, j->X + j->sperm[c / L->b.P] * L->per_x, c % L->b.P, j->cols + i * L->K);
    }
}

/* rows samples of a captured input (batch first, as the graph holds it) into dst, zero-padded for
 * a Conv */
static void store_rows(const ada_layer *L, const float *src, int64_t rows, float *dst)
{
    if (L->b.kind != QS_RL_CONV) {
        memcpy(dst, src, (size_t)(rows * L->per_x) * sizeof *dst);
        return;
    }
    const qs_conv_geom *g = &L->b.geom;
    memset(dst, 0, (size_t)(rows * L->per_x) * sizeof *dst);
    for (int64_t r = 0; r < rows * L->b.C; r++)
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
    for (int64_t gi = 0; gi < L->b.group; gi++)
        qs_sgemm_mt(tp, qs_threadpool_size(tp), 0, 1, n, L->b.Mg, L->b.Kg, L->b.alpha, cols + gi * L->b.Kg, L->K, Wm + gi * L->b.Mg * L->b.Kg,
                    L->b.Kg, 0.f, Y + gi * L->b.Mg, L->b.M);
}

/* --- capture ------------------------------------------------------------------------------------ */

typedef struct capture {
    ada_layer *L;
    int fp;                /* the FP32 pass: fixes the geometry and how many samples fit */
    int64_t cap, n;        /* room / stored */
    int64_t max_bytes;
    float *buf;
    qs_rl_tap tap;         /* the layer's input; its want drops to cap once the room is known */
} capture;

/* The capture's take(): rows samples of the layer's input into the buffer. */
static void store(qs_rl_capture *rc, int t, const qs_tensor *x, int64_t rows)
{
    (void)t;
    capture *c = rc->ud;
    ada_layer *L = c->L;
    if (!c->buf) {
        if (c->fp) {
            if (layer_geometry(L, rc->g, x, &rc->err) < 0)
                return;
            /* peak memory: the inputs and their targets of the samples kept */
            int64_t per = (L->per_x + L->b.M * L->b.P) * (int64_t)sizeof(float);
            int64_t fit = per > 0 ? c->max_bytes / per : c->tap.want;
            c->cap = c->tap.want < fit ? c->tap.want : fit < 1 ? 1 : fit;
        } else {
            c->cap = c->tap.want;
        }
        c->tap.want = c->cap;
        if (!(c->buf = malloc((size_t)(c->cap * L->per_x + 1) * sizeof *c->buf))) {
            qs_error(&rc->err, QS_ENOMEM, "AdaRound: out of memory capturing the input of '%s' (%lld samples)",
                     rc->g->nodes[L->b.node].name, (long long)c->cap);
            return;
        }
    }
    if (qs_rl_same_shape(&L->b, rc->g, x, "AdaRound", &rc->err) < 0)
        return;
    if (rows > c->cap - c->n)
        rows = c->cap - c->n;
    if (rows > 0)
        store_rows(L, qs_f32(x), rows, c->buf + c->n * L->per_x);
    c->n += rows > 0 ? rows : 0;
}

static int run_capture(qs_quantsim *sim, const qs_pl_data *data, const qs_adaround_config *cfg,
                       const qs_pipeline_io *io, capture *c, qs_err *e)
{
    qs_rl_capture rc = { .g = sim->g, .taps = &c->tap, .ntaps = 1, .take = store, .ud = c };
    return qs_rl_capture_run(sim, data, cfg->batch, io, io ? io->pool : NULL, &rc, "AdaRound", NULL, e);
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
    int64_t n = o->nw = qs_numel(sim->g->values[sim->q[L->b.wq].value].init);
    float **f[] = { &o->w, &o->s, &o->z, &o->base, &o->v, &o->m1, &o->m2, &o->h, &o->dh, &o->wt, &o->dfac, &o->grad };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (!(*f[i] = calloc(n + 1, sizeof(float))))
            return -1;
    if (!(o->src = malloc((n + 1) * sizeof *o->src)))
        return -1;
    qs_rl_weights(sim, &L->b, o->w, o->s, o->z, o->src);
    for (int64_t i = 0; i < n; i++) {
        float fl = floorf(o->w[i] / o->s[i]), frac = o->w[i] / o->s[i] - fl;
        o->base[i] = fl + o->z[i];
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
    for (int64_t i = 0; i < L->b.M * n; i++) {
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
    qs_graph_weights_changed(lr->sim->g);
}

static int adaround_layer(layer_run *lr, ada_layer *L, qs_adaround_layer *rl, int *skipped, qs_err *e)
{
    qs_quantsim *sim = lr->sim;
    qs_graph *g = sim->g;
    const qs_adaround_config *cfg = lr->cfg;
    const qs_node *nd = &g->nodes[L->b.node];
    const qs_quantizer *wq = &sim->q[L->b.wq];
    double t0 = qs_now();
    int64_t want = lr->data->rows < cfg->samples ? lr->data->rows : cfg->samples;
    int v = nd->in[0];
    capture cx = { .L = L, .fp = 1, .max_bytes = cfg->max_bytes,
                   .tap = { .value = v, .producer = g->values[v].producer, .want = want } };
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
    int64_t n = cx.n, P = L->b.P, M = L->b.M, K = L->K;
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
    qs_rl_bypass_quantized(sim, lr->saved);
    cx = (capture){ .L = L, .fp = 0, .max_bytes = cfg->max_bytes,
                    .tap = { .value = v, .producer = g->values[v].producer, .want = n } };
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
        for (int64_t gi = 0; gi < L->b.group; gi++)
            qs_sgemm_mt(lr->pool, qs_threadpool_size(lr->pool), 1, 0, L->b.Mg, L->b.Kg, nc, 2.f * L->b.alpha / (float)nc, Y + gi * L->b.Mg, M,
                        cols + gi * L->b.Kg, K, 0.f, o.grad + gi * L->b.Mg * L->b.Kg, L->b.Kg);
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
    if (!(lr->fp32[L->b.wq] = malloc(qs_nbytes(wt))) || !(lr->done[L->b.wq] = malloc(qs_nbytes(wt))))
        goto oom;
    memcpy(lr->fp32[L->b.wq], wd, qs_nbytes(wt));
    for (int64_t i = 0; i < o.nw; i++)
        wd[o.src[i]] = wa[i];
    qs_graph_weights_changed(g);
    memcpy(lr->done[L->b.wq], wd, qs_nbytes(wt));
    rl->name = xstrdup(nd->name);
    rl->op = L->b.kind == QS_RL_CONV ? "Conv" : L->b.kind == QS_RL_GEMM ? "Gemm" : "MatMul";
    rl->weights = o.nw;
    rl->samples = n;
    rl->columns = nc;
    rl->iterations = cfg->iterations;
    rl->optimize_seconds = t_end - t_opt;
    rl->ms_per_iteration = cfg->iterations ? 1e3 * (t_end - t_opt) / cfg->iterations : 0;
    /* the two products per iteration: 2·nc·M·Kg flops each (every group multiplies Mg × Kg) */
    rl->gflops = t_end > t_opt ? 4.0 * (double)nc * (double)M * (double)L->b.Kg * cfg->iterations / (t_end - t_opt) / 1e9 : 0;
    rl->frac_up = o.nw ? (double)up / (double)o.nw : 0;
    rl->frac_changed = o.nw ? (double)changed / (double)o.nw : 0;
    rl->seconds = qs_now() - t0;
    if (!rl->name)
        goto oom;
    goto out;
oom:
    rc = qs_error(e, QS_ENOMEM, "AdaRound: out of memory for layer '%s'", nd->name);
out:
    qs_rl_bypass_restore(sim, lr->saved);
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
    int *saved = qs_rl_bypass_save(sim);
    float **fp32 = calloc(sim->nq + 1, sizeof *fp32), **done = calloc(sim->nq + 1, sizeof *done);
    if (!rep || !saved || !fp32 || !done) {
        free(rep);
        free(saved);
        free(fp32);
        free(done);
        return qs_error(e, QS_ENOMEM, "AdaRound: out of memory");
    }
    rep->cfg = *cfg;
    layer_run lr = { .sim = sim, .data = data, .cfg = cfg, .io = io, .saved = saved, .fp32 = fp32, .done = done,
                     .pool = io ? io->pool : NULL };
    for (int i = 0; i < g->nnodes && rc == 0; i++) {
        const qs_node *nd = &g->nodes[i];
        ada_layer L = {0};
        char why_buf[256];
        const char *why = qs_rl_layer_of(sim, i, &L.b, why_buf, sizeof why_buf);
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
    qs_rl_bypass_restore(sim, saved);
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
    qs_rl_free_names(r->layers, r->nlayers, sizeof *r->layers, offsetof(qs_adaround_layer, name));
    qs_skips_free(r->skipped, r->nskipped);
    free(r);
}

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
        json_object_set_new(o, "seconds", qs_rl_json_num(l->seconds));
        json_object_set_new(o, "capture_seconds", qs_rl_json_num(l->capture_seconds));
        json_object_set_new(o, "optimize_seconds", qs_rl_json_num(l->optimize_seconds));
        json_object_set_new(o, "ms_per_iteration", qs_rl_json_num(l->ms_per_iteration));
        json_object_set_new(o, "gflops", qs_rl_json_num(l->gflops));
        json_object_set_new(o, "mse_nearest", qs_rl_json_num(l->mse_nearest));
        json_object_set_new(o, "mse_adaround", qs_rl_json_num(l->mse_adaround));
        json_object_set_new(o, "frac_up", qs_rl_json_num(l->frac_up));
        json_object_set_new(o, "frac_changed", qs_rl_json_num(l->frac_changed));
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
