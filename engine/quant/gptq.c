/* GPTQ weight rounding; the method is described in gptq.h.
 *
 * Every layer is brought to AdaRound's shape: a weight matrix Wm [M, Kg] (output channels × inputs
 * per group; a Gemm/MatMul weight [K, N] is transposed), group gi being rows [gi·Mg, (gi+1)·Mg).
 * Its Hessian is accumulated while the calibration data streams through the quantized sim: the
 * runner's observer sees the layer's input batch, stops the forward there (nothing after the
 * layer is needed), and the batch's samples are split over the threads, each adding x·xᵀ (ssyrk:
 * the im2col matrix of a Conv sample, [group·Kg, P], or rows of a Gemm/MatMul input) into its own
 * copy of H; the copies are summed once at the end. So the memory is H (threads × group·Kg²
 * floats) and one im2col matrix per thread, whatever the number of samples.
 *
 * The solve is GPTQ's Algorithm 1 with three LAPACK calls for U (see qs_gptq_solve). Within a
 * block the rows are independent (row r's updates read only row r), so the threads take rows; the
 * update of the columns after a block is one GEMM, which is where the time goes for wide layers. */
#include "quant/gptq.h"

#include <cblas.h>
#include <f77blas.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "ops/kernels.h"
#include "quant/rounding_layers.h"

qs_gptq_config qs_gptq_config_default(void)
{
    return (qs_gptq_config){ .damp = 0.01, .act_order = 1, .block = 128, .batch = 32, .samples = 1024,
                             .max_columns = (int64_t)1 << 17, .min_samples = 64, .wave_bytes = (int64_t)256 << 20 };
}

/* --- the solver --------------------------------------------------------------------------------- */

/* Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), row-major, in place; H is symmetric. LAPACK is
 * column-major: a row-major upper triangle is its lower one, so "L" throughout: H = LLᵀ, then
 * spotri fills H⁻¹'s lower (our upper) triangle, and its factor L' (H⁻¹ = L'L'ᵀ) read row-major is
 * L'ᵀ = U. Returns LAPACK's info (0: done). */
static int chol_inverse_upper(float *H, int64_t n)
{
    char lo = 'L';
    blasint nn = (blasint)n, info = 0;
    BLASFUNC(spotrf)(&lo, &nn, H, &nn, &info);
    if (info)
        return (int)info;
    BLASFUNC(spotri)(&lo, &nn, H, &nn, &info);
    if (info)
        return (int)info;
    BLASFUNC(spotrf)(&lo, &nn, H, &nn, &info);
    if (info)
        return (int)info;
    for (int64_t i = 1; i < n; i++)   /* the strictly lower triangle holds leftovers */
        memset(H + i * n, 0, (size_t)i * sizeof *H);
    return 0;
}

typedef struct block_job {
    float *W, *E;                 /* W [rows, cols], E [rows, nb]: the block's scaled errors */
    const float *U, *s, *z;
    int64_t cols, i1, nb;
    qs_grid g;
} block_job;

/* Rows [begin, end) through the block's columns [i1, i1 + nb): round, record the error, spread it. */
static void block_rows(void *arg, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const block_job *j = arg;
    int64_t cols = j->cols, i1 = j->i1, i2 = i1 + j->nb;
    for (int64_t r = begin; r < end; r++) {
        float *w = j->W + r * cols, *er = j->E + r * j->nb;
        const float *s = j->s + r * cols, *z = j->z + r * cols;
        for (int64_t i = i1; i < i2; i++) {
            const float *u = j->U + i * cols;
            float q = (qs_quantize1(w[i], s[i], z[i], j->g) - z[i]) * s[i];
            float err = (w[i] - q) / u[i];
            w[i] = q;
            er[i - i1] = err;
            for (int64_t k = i + 1; k < i2; k++)
                w[k] -= err * u[k];
        }
    }
}

int qs_gptq_solve(float *W, int64_t rows, int64_t cols, const float *H, const float *s, const float *z, qs_grid g,
                  const qs_gptq_config *cfg, qs_threadpool *tp, double *damp_used, qs_err *e)
{
    if (rows < 1 || cols < 1)
        return 0;
    int64_t B = cfg->block < cols ? cfg->block : cols;
    float *U = malloc((size_t)(cols * cols) * sizeof *U), *Wp = malloc((size_t)(rows * cols) * sizeof *Wp);
    float *sp = malloc((size_t)(rows * cols) * sizeof *sp), *zp = malloc((size_t)(rows * cols) * sizeof *zp);
    float *E = malloc((size_t)(rows * B) * sizeof *E);
    double *diag = malloc((size_t)cols * sizeof *diag);
    int64_t *perm = malloc((size_t)cols * sizeof *perm);
    int rc = 0;
    if (!U || !Wp || !sp || !zp || !E || !diag || !perm) {
        rc = qs_error(e, QS_ENOMEM, "GPTQ: out of memory (%lld inputs)", (long long)cols);
        goto out;
    }
    double mean = 0;
    for (int64_t i = 0; i < cols; i++) {
        float d = H[i * cols + i];
        if (!isfinite(d) || d < 0) {
            rc = qs_error(e, QS_EINVAL, "GPTQ: H[%lld, %lld] = %g: not a Hessian XXᵀ", (long long)i, (long long)i,
                          (double)d);
            goto out;
        }
        diag[i] = d > 0 ? d : 1;   /* an input that is always 0: its weights do not matter; H_ii = 1 keeps U regular */
        mean += diag[i];
    }
    mean /= (double)cols;
    /* act_order: descending diag H (a stable order: ties keep input order) */
    for (int64_t i = 0; i < cols; i++)
        perm[i] = i;
    if (cfg->act_order)
        for (int64_t i = 1; i < cols; i++) {   /* insertion sort: H is at most a few thousand wide, sorted once */
            int64_t p = perm[i], k = i;
            for (; k > 0 && diag[perm[k - 1]] < diag[p]; k--)
                perm[k] = perm[k - 1];
            perm[k] = p;
        }
    double lambda = cfg->damp;
    for (int attempt = 0;; attempt++) {
        for (int64_t a = 0; a < cols; a++) {
            for (int64_t b = 0; b < cols; b++) {
                float h = H[perm[a] * cols + perm[b]];
                if (!isfinite(h)) {
                    rc = qs_error(e, QS_EINVAL, "GPTQ: H has a value that is not finite");
                    goto out;
                }
                U[a * cols + b] = h;
            }
            U[a * cols + a] = (float)(diag[perm[a]] + lambda * mean);
        }
        int info = chol_inverse_upper(U, cols);
        if (info == 0)
            break;
        if (attempt == 3 || info < 0) {
            rc = qs_error(e, QS_EINVAL, "GPTQ: H (%lld × %lld) is not positive definite even with damping λ = %g "
                          "(LAPACK info %d)", (long long)cols, (long long)cols, lambda, info);
            goto out;
        }
        lambda *= 10;
    }
    if (damp_used)
        *damp_used = lambda;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t a = 0; a < cols; a++) {
            Wp[r * cols + a] = W[r * cols + perm[a]];
            sp[r * cols + a] = s[r * cols + perm[a]];
            zp[r * cols + a] = z[r * cols + perm[a]];
        }
    int nt = qs_threadpool_size(tp);
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
        int64_t nb = cols - i1 < B ? cols - i1 : B, i2 = i1 + nb;
        block_job j = { .W = Wp, .E = E, .U = U, .s = sp, .z = zp, .cols = cols, .i1 = i1, .nb = nb, .g = g };
        qs_threadpool_for(tp, nt, rows, 16, block_rows, &j);
        if (i2 < cols)   /* W[:, i2:] −= E · U[i1:i2, i2:] */
            qs_sgemm_mt(tp, nt, 0, 0, rows, cols - i2, nb, -1.f, E, nb, U + i1 * cols + i2, cols, 1.f, Wp + i2, cols);
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t a = 0; a < cols; a++)
            W[r * cols + perm[a]] = Wp[r * cols + a];
out:
    free(U);
    free(Wp);
    free(sp);
    free(zp);
    free(E);
    free(diag);
    free(perm);
    return rc;
}

/* --- accumulating H ----------------------------------------------------------------------------- */

typedef struct accum {
    qs_rl_layer L;
    const qs_gptq_config *cfg;
    qs_threadpool *pool;
    int direct;            /* a 1×1 Conv, stride 1, no padding: the input is its own im2col */
    int64_t n;             /* samples added */
    int nt;                /* per-thread copies of H */
    float **H, **col;      /* [nt]: group·Kg² floats; Kg·group·P floats (Conv) */
    const float *x;        /* the batch being added */
} accum;

static void accum_free(accum *a)
{
    for (int t = 0; a->H && t < a->nt; t++) {
        free(a->H[t]);
        free(a->col[t]);
    }
    free(a->H);
    free(a->col);
    a->H = a->col = NULL;
}

static void add_range(void *arg, int64_t begin, int64_t end, int worker)
{
    accum *a = arg;
    const qs_rl_layer *L = &a->L;
    float *H = a->H[worker];
    int64_t Kg = L->Kg, P = L->P;
    if (L->kind != QS_RL_CONV) {   /* the rows of these samples are contiguous: one rank-k update */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)Kg, (blasint)((end - begin) * P), 1.f,
                    a->x + begin * L->per_x, (blasint)Kg, 1.f, H, (blasint)Kg);
        return;
    }
    for (int64_t s = begin; s < end; s++) {
        const float *xs = a->x + s * L->per_x, *col = xs;
        if (!a->direct) {
            qs_im2col(&L->geom, L->C, xs, a->col[worker], NULL, 1);
            col = a->col[worker];
        }
        for (int64_t gi = 0; gi < L->group; gi++)   /* group gi: im2col rows [gi·Kg, (gi+1)·Kg) */
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (blasint)Kg, (blasint)P, 1.f, col + gi * Kg * P,
                        (blasint)P, 1.f, H + gi * Kg * Kg, (blasint)Kg);
    }
}

/* Bytes of the layer's H (one copy) and of its im2col scratch (one thread's). */
static int64_t h_bytes(const qs_rl_layer *L) { return L->group * L->Kg * L->Kg * (int64_t)sizeof(float); }

static int64_t col_bytes(const accum *a)
{
    const qs_rl_layer *L = &a->L;
    return L->kind == QS_RL_CONV && !a->direct ? L->C * qs_geom_kvol(&L->geom) * L->P * (int64_t)sizeof(float) : 0;
}

/* The capture's take(): batch x of tap t into its layer's H. */
static void add_batch(qs_rl_capture *c, int t, const qs_tensor *x, int64_t rows)
{
    accum *a = (accum *)c->ud + t;
    qs_rl_layer *L = &a->L;
    if (!L->have_geom) {
        if (qs_rl_geometry(L, c->g, x, "GPTQ", &c->err) < 0)
            return;
        a->direct = L->kind == QS_RL_CONV && qs_geom_kvol(&L->geom) == 1;
        for (int d = 0; a->direct && d < 3; d++)
            a->direct &= L->geom.stride[d] == 1 && L->geom.pad[d] == 0 && L->geom.pad_end[d] == 0;
    }
    if (qs_rl_same_shape(L, c->g, x, "GPTQ", &c->err) < 0 || rows < 1)
        return;
    if (!a->H) {
        /* per-thread copies of H, as many as fit in 512 MiB besides the first */
        int64_t hbytes = h_bytes(L), cbytes = col_bytes(a);
        int64_t fit = ((int64_t)512 << 20) / (hbytes + cbytes + 1);
        a->nt = qs_threadpool_size(a->pool);
        if (a->nt > fit)
            a->nt = fit < 1 ? 1 : (int)fit;
        a->H = calloc(a->nt, sizeof *a->H);
        a->col = calloc(a->nt, sizeof *a->col);
        int ok = a->H && a->col;
        for (int k = 0; ok && k < a->nt; k++)
            ok = (a->H[k] = calloc((size_t)hbytes / sizeof(float) + 1, sizeof(float))) &&
                 (!cbytes || (a->col[k] = malloc((size_t)cbytes)));
        if (!ok) {
            qs_error(&c->err, QS_ENOMEM, "GPTQ: out of memory for the Hessian of '%s' (%lld × %lld, %lld groups)",
                     c->g->nodes[L->node].name, (long long)L->Kg, (long long)L->Kg, (long long)L->group);
            return;
        }
    }
    a->x = qs_f32(x);
    qs_threadpool_for(a->pool, a->nt, rows, 1, add_range, a);
    a->n += rows;
    /* enough columns: a layer with many positions per sample needs fewer samples */
    const qs_gptq_config *cfg = a->cfg;
    if (cfg->max_columns > 0 && L->P > 0) {
        int64_t need = (cfg->max_columns + L->P - 1) / L->P;
        need = need < cfg->min_samples ? cfg->min_samples : need;
        c->taps[t].want = need < c->taps[t].want ? need : c->taps[t].want;
    }
}

/* H summed over the threads' copies into a->H[0], symmetrised and divided by the column count. */
static void accum_finish(accum *a)
{
    const qs_rl_layer *L = &a->L;
    int64_t Kg = L->Kg, nh = L->group * Kg * Kg;
    float *H = a->H[0];
    for (int t = 1; t < a->nt; t++)
        for (int64_t i = 0; i < nh; i++)
            H[i] += a->H[t][i];
    float inv = 1.f / (float)(a->n * L->P);
    for (int64_t gi = 0; gi < L->group; gi++) {
        float *h = H + gi * Kg * Kg;
        for (int64_t i = 0; i < Kg; i++)
            for (int64_t j = i; j < Kg; j++)
                h[j * Kg + i] = h[i * Kg + j] = h[i * Kg + j] * inv;
    }
}

/* --- one layer ---------------------------------------------------------------------------------- */

/* (D·H·Dᵀ)_rr per row r of D [rows, cols] into err[rows]: row r's share of ‖D X̃‖² per column.
 * T: rows·cols scratch. */
static void row_errs(const float *D, const float *H, int64_t rows, int64_t cols, float *T, double *err,
                     qs_threadpool *tp)
{
    qs_sgemm_mt(tp, qs_threadpool_size(tp), 0, 0, rows, cols, cols, 1.f, D, cols, H, cols, 0.f, T, cols);
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0;
        for (int64_t i = r * cols; i < (r + 1) * cols; i++)
            acc += (double)D[i] * T[i];
        err[r] = acc;
    }
}

typedef struct layer_run {
    qs_quantsim *sim;
    const qs_pl_data *data;
    const qs_gptq_config *cfg;
    const qs_pipeline_io *io;
    qs_threadpool *pool;
    const int *saved;      /* bypass flags as the caller left them */
} layer_run;

/* Rounds the layer whose H a holds (captured, not yet finished) and writes its grid values into
 * the weight initializer. */
static int gptq_layer(layer_run *lr, accum *a, qs_gptq_layer *rl, qs_err *e)
{
    qs_quantsim *sim = lr->sim;
    qs_graph *g = sim->g;
    const qs_rl_layer *L = &a->L;
    const qs_node *nd = &g->nodes[L->node];
    const qs_quantizer *q = &sim->q[L->wq];
    float *Wm = NULL, *W0 = NULL, *s = NULL, *z = NULL, *D = NULL, *T = NULL;
    double *en = NULL, *eg = NULL;
    int64_t *src = NULL, kept_nearest = 0;
    int rc = 0;
    accum_finish(a);
    double t_solve = qs_now();

    /* Wm, and every weight's scale and zero point */
    int64_t nw = qs_numel(g->values[q->value].init);
    Wm = malloc((size_t)nw * sizeof *Wm), W0 = malloc((size_t)nw * sizeof *W0);
    s = malloc((size_t)nw * sizeof *s), z = malloc((size_t)nw * sizeof *z);
    D = malloc((size_t)nw * sizeof *D), T = malloc((size_t)nw * sizeof *T);
    src = malloc((size_t)nw * sizeof *src);
    en = malloc((size_t)L->Mg * sizeof *en), eg = malloc((size_t)L->Mg * sizeof *eg);
    if (!Wm || !W0 || !s || !z || !D || !T || !src || !en || !eg)
        goto oom;
    qs_rl_weights(sim, L, Wm, s, z, src);
    memcpy(W0, Wm, (size_t)nw * sizeof *W0);
    int64_t Kg = L->Kg, Mg = L->Mg, gsz = Mg * Kg;
    double err_near = 0, err_gptq = 0, lambda = lr->cfg->damp;
    int64_t changed = 0;
    for (int64_t gi = 0; gi < L->group; gi++) {
        const float *H = a->H[0] + gi * Kg * Kg;
        double lam = 0;
        if (lr->io && qs_pl_aborted(lr->io)) {
            rc = qs_error(e, QS_EABORTED, "GPTQ: aborted (layer '%s')", nd->name);
            goto out;
        }
        rc = qs_gptq_solve(Wm + gi * gsz, Mg, Kg, H, s + gi * gsz, z + gi * gsz, q->grid, lr->cfg, lr->pool, &lam, e);
        if (rc < 0) {
            qs_error_prefix(e, "layer '%s' (%s), group %lld: ", nd->name, nd->op, (long long)gi);
            goto out;
        }
        lambda = lam > lambda ? lam : lambda;
        /* per output channel: GPTQ's error, nearest's; a channel where GPTQ did worse on the
         * calibration data (damping makes that possible where there is little to gain) keeps nearest */
        int64_t o = gi * gsz;
        for (int64_t i = o; i < o + gsz; i++)
            D[i] = W0[i] - qs_fake_quant1(W0[i], s[i], z[i], q->grid);
        row_errs(D + o, H, Mg, Kg, T, en, lr->pool);
        for (int64_t i = o; i < o + gsz; i++)
            D[i] = W0[i] - Wm[i];
        row_errs(D + o, H, Mg, Kg, T, eg, lr->pool);
        for (int64_t r = 0; r < Mg; r++) {
            float *wr = Wm + o + r * Kg;
            const float *w0 = W0 + o + r * Kg, *sr = s + o + r * Kg, *zr = z + o + r * Kg;
            if (eg[r] > en[r]) {
                for (int64_t k = 0; k < Kg; k++)
                    wr[k] = qs_fake_quant1(w0[k], sr[k], zr[k], q->grid);
                eg[r] = en[r];
                kept_nearest++;
            }
            for (int64_t k = 0; k < Kg; k++)
                changed += wr[k] != qs_fake_quant1(w0[k], sr[k], zr[k], q->grid);
            err_near += en[r];
            err_gptq += eg[r];
        }
    }
    qs_tensor *wt = g->values[q->value].init;
    float *wo = qs_f32(wt);
    for (int64_t i = 0; i < nw; i++)
        wo[src[i]] = Wm[i];
    qs_graph_weights_changed(g);
    if (!(rl->name = strdup(nd->name ? nd->name : "")))
        goto oom;
    rl->op = qs_rl_op(L);
    rl->weights = nw;
    rl->inputs = Kg;
    rl->groups = L->group;
    rl->samples = a->n;
    rl->columns = a->n * L->P;
    rl->damp = lambda;
    rl->err_nearest = err_near;
    rl->err_gptq = err_gptq;
    rl->frac_changed = nw ? (double)changed / (double)nw : 0;
    rl->kept_nearest = kept_nearest;
    rl->solve_seconds = qs_now() - t_solve;
    rl->seconds = rl->capture_seconds + rl->solve_seconds;
    goto out;
oom:
    rc = qs_error(e, QS_ENOMEM, "GPTQ: out of memory for layer '%s'", nd->name);
out:
    free(Wm);
    free(W0);
    free(s);
    free(z);
    free(D);
    free(T);
    free(src);
    free(en);
    free(eg);
    return rc;
}

/* --- the pass over all layers --------------------------------------------------------------------- */


/* Captures the H of layers a[0..n) (a wave) in one pass over the calibration data on the quantized
 * path, then rounds each; a layer whose input was not computed gets skipped[i] = 1. */
static int capture_and_round(layer_run *lr, accum *a, int n, qs_gptq_layer *rl, int *skipped, qs_err *e)
{
    qs_quantsim *sim = lr->sim;
    const qs_graph *g = sim->g;
    double t0 = qs_now();
    int64_t want = lr->data->rows < lr->cfg->samples ? lr->data->rows : lr->cfg->samples;
    char stage[600];
    if (n == 1)
        snprintf(stage, sizeof stage, "gptq %s", g->nodes[a[0].L.node].name);
    else
        snprintf(stage, sizeof stage, "gptq %s … %s (%d layers)", g->nodes[a[0].L.node].name,
                 g->nodes[a[n - 1].L.node].name, n);
    qs_rl_tap *taps = calloc((size_t)n, sizeof *taps);
    if (!taps)
        return qs_error(e, QS_ENOMEM, "GPTQ: out of memory");
    for (int i = 0; i < n; i++) {
        int v = g->nodes[a[i].L.node].in[0];
        taps[i] = (qs_rl_tap){ .value = v, .producer = g->values[v].producer, .want = want };
    }
    if (lr->io)
        qs_pl_progress(lr->io, stage, 0, (double)want, t0);
    /* the quantized path: the layers before are rounded; other quantizers as the caller set them */
    qs_rl_bypass_quantized(sim, lr->saved);
    qs_rl_capture c = { .g = g, .taps = taps, .ntaps = n, .take = add_batch, .ud = a, .t0 = t0 };
    int rc = qs_rl_capture_run(sim, lr->data, lr->cfg->batch, lr->io, lr->pool, &c, "GPTQ", stage, e);
    qs_rl_bypass_restore(sim, lr->saved);
    double capture = qs_now() - t0;
    for (int i = 0; i < n && rc == 0; i++) {
        skipped[i] = a[i].n == 0 || !a[i].H;
        rl[i].capture_seconds = capture / n;   /* one pass for all: an equal share each */
        if (!skipped[i])
            rc = gptq_layer(lr, &a[i], &rl[i], e);
        accum_free(&a[i]);
    }
    free(taps);
    return rc;
}

static int check_config(const qs_gptq_config *c, qs_err *e)
{
    if (!(c->damp > 0 && c->damp <= 1e3) || !isfinite(c->damp))
        return qs_error(e, QS_EINVAL, "GPTQ: damp (λ) must be a number in (0, 1000] (got %g)", c->damp);
    if (c->wave_bytes < 0)
        return qs_error(e, QS_EINVAL, "GPTQ: wave_bytes must be at least 0 (got %lld)", (long long)c->wave_bytes);
    if (c->block < 1 || c->batch < 1 || c->samples < 1 || c->min_samples < 1)
        return qs_error(e, QS_EINVAL, "GPTQ: block (%lld), batch (%lld), samples (%lld) and min_samples (%lld) must "
                        "be at least 1", (long long)c->block, (long long)c->batch, (long long)c->samples,
                        (long long)c->min_samples);
    return 0;
}

/* Bytes a layer's H takes while its wave is captured: one copy per thread, as add_batch makes them
 * (its im2col scratch, a few MB at most, is not counted). */
static int64_t wave_cost(const accum *a, int threads)
{
    int64_t hbytes = h_bytes(&a->L), fit = ((int64_t)512 << 20) / (hbytes + 1);
    return hbytes * (threads > fit ? (fit < 1 ? 1 : fit) : threads);
}

int qs_gptq(qs_quantsim *sim, const qs_pl_data *data, const qs_gptq_config *cfg, const qs_pipeline_io *io,
            qs_gptq_report **report, qs_err *e)
{
    qs_gptq_config dflt = qs_gptq_config_default();
    if (!cfg)
        cfg = &dflt;
    if (report)
        *report = NULL;
    int rc = check_config(cfg, e);
    if (rc < 0)
        return rc;
    if (!data || !data->d)
        return qs_error(e, QS_EINVAL, "GPTQ needs calibration data");
    if (data->rows < 1)
        return qs_error(e, QS_EINVAL, "GPTQ: the calibration data has no samples");
    double t_start = qs_now();
    qs_graph *g = sim->g;
    qs_gptq_report *rep = calloc(1, sizeof *rep);
    int *saved = qs_rl_bypass_save(sim);
    accum *acc = calloc((size_t)g->nnodes + 1, sizeof *acc);
    int *skipped = calloc((size_t)g->nnodes + 1, sizeof *skipped);
    if (!rep || !saved || !acc || !skipped) {
        free(rep);
        free(saved);
        free(acc);
        free(skipped);
        return qs_error(e, QS_ENOMEM, "GPTQ: out of memory");
    }
    rep->cfg = *cfg;
    layer_run lr = { .sim = sim, .data = data, .cfg = cfg, .io = io, .saved = saved, .pool = io ? io->pool : NULL };
    /* the layers, in topological order */
    int n = 0;
    for (int i = 0; i < g->nnodes && rc == 0; i++) {
        char why_buf[256];
        acc[n] = (accum){ .cfg = cfg, .pool = lr.pool };
        const char *why = qs_rl_layer_of(sim, i, &acc[n].L, why_buf, sizeof why_buf);
        if (!why)
            n++;
        else if (why[0] && qs_skip_add(&rep->skipped, &rep->nskipped, g->nodes[i].name, NULL, "%s", why) < 0)
            rc = qs_error(e, QS_ENOMEM, "GPTQ: out of memory");
    }
    if (rc == 0 && n > 0 && !(rep->layers = calloc((size_t)n, sizeof *rep->layers)))
        rc = qs_error(e, QS_ENOMEM, "GPTQ: out of memory");
    /* waves: consecutive layers whose H fit wave_bytes together (a layer alone always fits) */
    int threads = qs_threadpool_size(lr.pool);
    for (int w0 = 0, w1; w0 < n && rc == 0; w0 = w1) {
        int64_t bytes = wave_cost(&acc[w0], threads);
        for (w1 = w0 + 1; w1 < n && bytes + wave_cost(&acc[w1], threads) <= cfg->wave_bytes; w1++)
            bytes += wave_cost(&acc[w1], threads);
        qs_gptq_layer *rl = rep->layers + rep->nlayers;
        rc = capture_and_round(&lr, &acc[w0], w1 - w0, rl, skipped, e);
        for (int i = 0; i < w1 - w0 && rc == 0; i++) {
            if (skipped[i]) {
                if (qs_skip_add(&rep->skipped, &rep->nskipped, g->nodes[acc[w0 + i].L.node].name, NULL,
                                "its input was not computed on the calibration data") < 0)
                    rc = qs_error(e, QS_ENOMEM, "GPTQ: out of memory");
                continue;
            }
            rl[i].wave = rep->nwaves;
            qs_gptq_layer *to = rep->layers + rep->nlayers++;   /* closes the gaps skipped layers left */
            if (to != rl + i) {
                *to = rl[i];
                memset(&rl[i], 0, sizeof rl[i]);
            }
        }
        rep->nwaves++;
    }
    for (int i = 0; i < n; i++)
        accum_free(&acc[i]);
    for (int i = rep->nlayers; rep->layers && i < n; i++)   /* a failed wave's layers are not reported */
        free(rep->layers[i].name);
    qs_rl_bypass_restore(sim, saved);
    free(saved);
    free(acc);
    free(skipped);
    rep->seconds = qs_now() - t_start;
    if (rc == 0 && report)
        *report = rep;
    else
        qs_gptq_report_free(rep);
    return rc;
}

/* --- report ------------------------------------------------------------------------------------- */

void qs_gptq_report_free(qs_gptq_report *r)
{
    if (!r)
        return;
    qs_rl_free_names(r->layers, r->nlayers, sizeof *r->layers, offsetof(qs_gptq_layer, name));
    qs_skips_free(r->skipped, r->nskipped);
    free(r);
}



json_t *qs_gptq_report_json(const qs_gptq_report *r)
{
    if (!r)
        return json_null();
    json_t *layers = json_array(), *skipped = qs_skips_json(r->skipped, r->nskipped, "name", NULL);
    int64_t samples = 0;
    for (int i = 0; i < r->nlayers; i++) {
        const qs_gptq_layer *l = &r->layers[i];
        samples = l->samples > samples ? l->samples : samples;
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "name", l->name, "op", l->op, "weights",
                              (json_int_t)l->weights, "inputs", (json_int_t)l->inputs, "groups", (json_int_t)l->groups,
                              "samples", (json_int_t)l->samples, "columns", (json_int_t)l->columns);
        json_object_set_new(o, "wave", json_integer(l->wave));
        json_object_set_new(o, "damp", qs_rl_json_num(l->damp));
        json_object_set_new(o, "seconds", qs_rl_json_num(l->seconds));
        json_object_set_new(o, "capture_seconds", qs_rl_json_num(l->capture_seconds));
        json_object_set_new(o, "solve_seconds", qs_rl_json_num(l->solve_seconds));
        json_object_set_new(o, "err_nearest", qs_rl_json_num(l->err_nearest));
        json_object_set_new(o, "err_gptq", qs_rl_json_num(l->err_gptq));
        json_object_set_new(o, "frac_changed", qs_rl_json_num(l->frac_changed));
        json_object_set_new(o, "kept_nearest", json_integer(l->kept_nearest));
        json_array_append_new(layers, o);
    }
    const qs_gptq_config *c = &r->cfg;
    json_t *cfg = json_pack("{s:f, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "damp", c->damp, "act_order", c->act_order,
                            "block", (json_int_t)c->block, "batch_size", (json_int_t)c->batch, "samples",
                            (json_int_t)c->samples, "max_columns", (json_int_t)c->max_columns, "min_samples",
                            (json_int_t)c->min_samples, "wave_bytes", (json_int_t)c->wave_bytes);
    return json_pack("{s:I, s:f, s:i, s:o, s:o, s:o}", "samples", (json_int_t)samples, "seconds", r->seconds, "waves",
                     r->nwaves, "config", cfg, "layers", layers, "skipped", skipped);
}
