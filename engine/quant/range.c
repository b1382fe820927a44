/* Range setting (paper §3.1).
 *
 * Every data-driven method is a search over candidate clipping ranges with one cost function:
 *   - weights: the exact sum of squared errors Σ(x − fq(x))² over the tensor (or channel);
 *   - activations (MSE): the expected squared error under the observer's histogram, each bin's
 *     mass spread uniformly over the bin and integrated in closed form (no bin-centre aliasing when
 *     the grid step is close to the bin width);
 *   - cross-entropy: mean over a reservoir of logit rows of −Σ softmax(x)·log softmax(fq(x)).
 * The search (search_range) shrinks the range [lo0, hi0] jointly in 100 steps down to 0.2 of its
 * size; for asymmetric grids it then refines lo and hi one at a time over the same 100 fractions
 * until neither moves. Ties keep the wider range. Everything is sequential and seeded, so the
 * results are deterministic. The histogram cost runs over the nonempty bins only, eight at a
 * time (bins_sse), since a search evaluates it up to ~900 times.
 *
 * The observer (its histogram, sampling and merging) is in observer.c; observer_impl.h shares its
 * struct with the cost functions here. */
#include "quant/range.h"
#include "quant/observer_impl.h"

#include "ops/kernels.h"   /* QS_HOT */

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define SEARCH_STEPS 100
#define SEARCH_LOW 0.2        /* smallest fraction of the full range tried */
#define REFINE_ROUNDS 4

static const char *const method_names[] = {
    [QS_RANGE_MINMAX] = "minmax", [QS_RANGE_MSE] = "mse", [QS_RANGE_PERCENTILE] = "percentile",
    [QS_RANGE_CE] = "ce", [QS_RANGE_BN] = "bn",
};

int qs_range_method_parse(const char *s, qs_range_method *m)
{
    static const struct { const char *name; qs_range_method m; } alias[] = {
        { "minmax", QS_RANGE_MINMAX }, { "min-max", QS_RANGE_MINMAX }, { "mse", QS_RANGE_MSE },
        { "percentile", QS_RANGE_PERCENTILE }, { "ce", QS_RANGE_CE }, { "cross-entropy", QS_RANGE_CE },
        { "bn", QS_RANGE_BN },
    };
    for (size_t i = 0; s && i < sizeof alias / sizeof alias[0]; i++)
        if (!strcmp(s, alias[i].name)) {
            *m = alias[i].m;
            return 0;
        }
    return QS_EINVAL;
}

const char *qs_range_method_name(qs_range_method m)
{
    return (unsigned)m < sizeof method_names / sizeof method_names[0] ? method_names[m] : "unknown";
}

/* ---- the candidate search ------------------------------------------------------------------- */

typedef double (*cost_fn)(void *ctx, float s, float z);

static double step_fraction(int k) { return 1.0 - (1.0 - SEARCH_LOW) * k / (SEARCH_STEPS - 1); }

typedef struct search {
    float lo0, hi0;
    qs_grid g;
    int symmetric, pow2;
    cost_fn cost;
    void *ctx;
    double best;
    float s, z;
} search;

/* Evaluates the range (lo, hi); keeps it when strictly better. Returns 1 when it improved. */
static int try_range(search *r, float lo, float hi)
{
    float s;
    int32_t zi;
    qs_qparams_from_range(r->g, lo, hi, r->symmetric, r->pow2, &s, &zi);
    double c = r->cost(r->ctx, s, (float)zi);
    if (c < r->best) {
        r->best = c;
        r->s = s;
        r->z = (float)zi;
        return 1;
    }
    return 0;
}

static void search_range(float lo, float hi, qs_grid g, int symmetric, int pow2, cost_fn cost, void *ctx,
                         float *scale, float *zero)
{
    search r = { .lo0 = fminf(lo, 0.f), .hi0 = fmaxf(hi, 0.f), .g = g, .symmetric = symmetric, .pow2 = pow2,
                 .cost = cost, .ctx = ctx, .best = INFINITY };
    int32_t zi;
    /* fallback (also the answer for an all-zero range, and when every cost is NaN) */
    qs_qparams_from_range(g, r.lo0, r.hi0, symmetric, pow2, &r.s, &zi);
    r.z = (float)zi;
    if (r.lo0 == 0 && r.hi0 == 0)
        goto done;
    int klo = 0, khi = 0;
    for (int k = 0; k < SEARCH_STEPS; k++) {
        double f = step_fraction(k);
        if (try_range(&r, (float)(r.lo0 * f), (float)(r.hi0 * f)))
            klo = khi = k;
    }
    /* A symmetric grid has one free parameter (and an unsigned symmetric grid ignores lo). */
    if (symmetric || r.lo0 == 0 || r.hi0 == 0)
        goto done;
    /* (klo, khi) is always the best pair tried. A sweep that does not move leaves the other
     * sweep's candidates all tried already, so stopping there gives what running on until
     * nothing moves gives (except after the joint search: the first hi sweep always runs). */
    for (int round = 0; round < REFINE_ROUNDS; round++) {
        int moved = 0;
        for (int k = 0; k < SEARCH_STEPS; k++)
            if (k != klo && try_range(&r, (float)(r.lo0 * step_fraction(k)), (float)(r.hi0 * step_fraction(khi))))
                klo = k, moved = 1;
        if (!moved && round > 0)
            break;
        moved = 0;
        for (int k = 0; k < SEARCH_STEPS; k++)
            if (k != khi && try_range(&r, (float)(r.lo0 * step_fraction(klo)), (float)(r.hi0 * step_fraction(k))))
                khi = k, moved = 1;
        if (!moved)
            break;
    }
done:
    *scale = r.s;
    *zero = r.z;
}

/* ---- weights -------------------------------------------------------------------------------- */

/* Σ(x − fq(x))², computed exactly as qs_quant_sse does (same per-element values, same summation
 * order) but with the clamp-then-round fast path, valid because z is an integer. */
typedef struct span { const float *x; int64_t n; qs_grid g; } span;

static double span_sse(void *ctx, float s, float z)
{
    const span *sp = ctx;
    const float lo = sp->g.qmin - z, hi = sp->g.qmax - z, magic = 12582912.f;   /* 1.5 · 2^23 */
    double sse = 0;
    for (int64_t i = 0; i < sp->n; i++) {
        float v = sp->x[i] / s;
        v = v < lo ? lo : v > hi ? hi : v;
        v = (v + magic) - magic;
        double d = (double)(v * s) - sp->x[i];
        sse += d * d;
    }
    return sse;
}

int qs_range_weights(const qs_tensor *w, int axis, qs_grid g, int symmetric, int pow2, qs_range_method m,
                     float *scale, float *zero, qs_err *e)
{
    if (w->dtype != QS_F32)
        return qs_error(e, QS_EINVAL, "weight range: expected a float32 tensor, got %s", qs_dtype_name(w->dtype));
    if (axis >= w->ndim)
        return qs_error(e, QS_EINVAL, "weight range: channel axis %d out of range for a rank-%d tensor", axis,
                        w->ndim);
    if (m != QS_RANGE_MINMAX && m != QS_RANGE_MSE)
        return qs_error(e, QS_EINVAL, "weight range: method '%s' is not for weights (use minmax or mse)",
                        qs_range_method_name(m));
    int64_t outer = 1, ch = 1, inner = 1;
    if (axis < 0)
        inner = qs_numel(w);
    else
        for (int d = 0; d < w->ndim; d++) {
            if (d < axis) outer *= w->shape[d];
            else if (d == axis) ch = w->shape[d];
            else inner *= w->shape[d];
        }
    int64_t per = outer * inner;
    const float *x = qs_f32(w);
    /* A channel is contiguous only when nothing precedes the axis; otherwise gather it. */
    float *buf = NULL;
    if (outer > 1 && !(buf = malloc((size_t)per * sizeof *buf)))
        return qs_error(e, QS_ENOMEM, "weight range: out of memory");
    for (int64_t c = 0; c < ch; c++) {
        const float *v = x + c * inner;
        if (buf) {
            for (int64_t o = 0; o < outer; o++)
                memcpy(buf + o * inner, x + (o * ch + c) * inner, (size_t)inner * sizeof *buf);
            v = buf;
        }
        float lo = 0, hi = 0;
        for (int64_t i = 0; i < per; i++) {
            if (!isfinite(v[i])) {
                free(buf);
                return qs_error(e, QS_EINVAL, "weight range: the tensor holds NaN or Inf (channel %lld, "
                                "element %lld)", (long long)c, (long long)i);
            }
            lo = fminf(lo, v[i]);
            hi = fmaxf(hi, v[i]);
        }
        if (m == QS_RANGE_MINMAX) {
            int32_t zi;
            qs_qparams_from_range(g, lo, hi, symmetric, pow2, &scale[c], &zi);
            zero[c] = (float)zi;
        } else {
            span sp = { v, per, g };
            search_range(lo, hi, g, symmetric, pow2, span_sse, &sp, &scale[c], &zero[c]);
        }
    }
    free(buf);
    return 0;
}

/* ---- percentile ----------------------------------------------------------------------------- */

/* The value below which a fraction q of the finite values lie: bins are uniform, the zeros are a
 * point mass at 0. */
static double quantile(const qs_observer *o, double q)
{
    if (q <= 0) return o->min;
    if (q >= 1) return o->max;
    double target = q * hist_mass(o), cum = 0;
    int zeros_done = o->zeros == 0;
    for (int i = 0; i < OBS_BINS && o->have_bins; i++) {
        double a, b, n = (double)o->bins[i];
        bin_extent(o, i, &a, &b);
        if (!zeros_done && b > 0) {
            /* the part of this bin below 0 comes before the zeros */
            double below = a < 0 ? n * (0 - a) / (b - a) : 0;
            if (cum + below >= target && below > 0)
                return a + (target - cum) / below * (0 - a);
            cum += below + (double)o->zeros;
            n -= below;
            a = fmax(a, 0.0);
            zeros_done = 1;
            if (cum >= target)
                return 0;
        }
        if (n > 0 && cum + n >= target)
            return a + (target - cum) / n * (b - a);
        cum += n;
    }
    return zeros_done ? o->max : 0;
}

/* ---- expected squared error over the histogram ---------------------------------------------- */

/* The rounding error d(x)² = (x − s·round(x/s))² is periodic with period s and integrates to s³/12
 * over one period. With u = x/s + 1/2 = m + φ (m = floor(u)), its antiderivative inside the
 * grid's range is s³·(m/12 + ((φ − 1/2)³ + 1/8)/3), so
 *   ∫_a^b d(x)² dx = s³·((m_b − m_a)/12 + ((φ_b − 1/2)³ − (φ_a − 1/2)³)/3).
 * Outside the clipping range [lc, hc] the error is the distance to the edge: ∫ (x − c)² dx in
 * closed form. */

/* The histogram as the search sees it: the nonempty bins' extents (clipped to the data range) and
 * densities n/(b − a), and apart the point masses (bins whose data is one value). Built once per
 * search: the cost function then runs over plain arrays. */
typedef struct hist_ctx {
    const qs_observer *o;
    qs_grid g;
    int m, np;
    double *a, *b, *dens;   /* m bins */
    double *pa, *pn;        /* np point masses: value, count */
} hist_ctx;

static int hist_ctx_init(hist_ctx *h, const qs_observer *o, qs_grid g)
{
    memset(h, 0, sizeof *h);
    h->o = o;
    h->g = g;
    double *buf = malloc(5 * (OBS_BINS + 8) * sizeof *buf);
    if (!buf)
        return QS_ENOMEM;
    h->a = buf, h->b = buf + OBS_BINS + 8, h->dens = buf + 2 * (OBS_BINS + 8);
    h->pa = buf + 3 * (OBS_BINS + 8), h->pn = buf + 4 * (OBS_BINS + 8);
    for (int i = 0; i < OBS_BINS && o->have_bins; i++) {
        if (!o->bins[i])
            continue;
        double a, b, n = (double)o->bins[i];
        bin_extent(o, i, &a, &b);
        if (b - a <= 0) {
            h->pa[h->np] = a;
            h->pn[h->np++] = n;
        } else {
            h->a[h->m] = a;
            h->b[h->m] = b;
            h->dens[h->m++] = n / (b - a);
        }
    }
    while (h->m % 8) {   /* empty bins up to a multiple of 8 for bins_sse */
        h->a[h->m] = h->b[h->m] = h->dens[h->m] = 0;
        h->m++;
    }
    return 0;
}

static void hist_ctx_free(hist_ctx *h) { free(h->a); }

typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define VSEL(m, x, y) ((v8d)(((v8l)(x) & (m)) | ((v8l)(y) & ~(m))))
/* floor of |p| < 2^31 (lanes outside that are garbage; callers mask them out): truncation toward
 * zero, minus one where that went up */
#define VFLOOR(p, t) ((t) = __builtin_convertvector(__builtin_convertvector((p), v8i), v8d), \
                      (t) - VSEL((t) > (p), one, zero))

/* Σ over the bins of density · ∫_a^b (x − fq(x))² dx, the grid's clipping range being [lc, hc]:
 * the clipped parts in closed form, the part inside as above. Eight bins at a
 * time in vector extensions, each term masked where it does not apply (the bin arrays are padded
 * to a multiple of 8 with empty bins). The terms' divisions by 3 and by 12 are taken once, on the
 * sums: a vector division costs as much as the rest of a step. */
QS_HOT static double bins_sse(const hist_ctx *h, double s, double lc, double hc)
{
    const v8d zero = {0}, one = zero + 1, lcv = zero + lc, hcv = zero + hc;
    const double s3 = s * s * s, inv_s = 1 / s;
    v8d acc3 = zero, acc12 = zero;   /* Σ density · (thirds), Σ density · (twelfths of s³) */
    for (int i = 0; i < h->m; i += 8) {
        v8d a, b, dens;
        memcpy(&a, h->a + i, sizeof a);
        memcpy(&b, h->b + i, sizeof b);
        memcpy(&dens, h->dens + i, sizeof dens);
        v8d t1 = VSEL(b < lcv, b, lcv) - lc, t0 = a - lc;
        v8d below = VSEL(a < lcv, t1 * t1 * t1 - t0 * t0 * t0, zero);
        v8d u1 = b - hc, u0 = VSEL(a > hcv, a, hcv) - hc;
        v8d above = VSEL(b > hcv, u1 * u1 * u1 - u0 * u0 * u0, zero);
        v8d l = VSEL(a > lcv, a, lcv), u = VSEL(b < hcv, b, hcv);
        v8d pl = l * inv_s + 0.5, pu = u * inv_s + 0.5;
        v8d t, ml = VFLOOR(pl, t), mu = VFLOOR(pu, t);
        v8d fl = pl - ml - 0.5, fu = pu - mu - 0.5;
        v8l in = u > l;
        acc3 += dens * (below + above + VSEL(in, s3 * (fu * fu * fu - fl * fl * fl), zero));
        acc12 += VSEL(in, dens * (mu - ml), zero);
    }
    double thirds = 0, twelfths = 0;
    for (int k = 0; k < 8; k++) {
        thirds += acc3[k];
        twelfths += acc12[k];
    }
    return thirds / 3 + s3 * twelfths / 12;
}

static double hist_mse(void *ctx, float s, float z)
{
    const hist_ctx *h = ctx;
    double lc = ((double)h->g.qmin - z) * s, hc = ((double)h->g.qmax - z) * s;
    double total = bins_sse(h, s, lc, hc);
    for (int i = 0; i < h->np; i++) {
        double d = (double)qs_fake_quant1((float)h->pa[i], s, z, h->g) - h->pa[i];
        total += h->pn[i] * d * d;
    }
    return total / (double)h->o->count;
}

double qs_observer_sqnr_db(const qs_observer *o, qs_grid g, float scale, float zero)
{
    hist_ctx h;
    if (o->count == 0 || hist_ctx_init(&h, o, g) < 0)
        return NAN;
    double sig = 0;   /* Σ x² over the histogram: density · (b³ − a³)/3 per bin, plus the point masses */
    for (int i = 0; i < h.m; i++)
        sig += h.dens[i] * (h.b[i] * h.b[i] * h.b[i] - h.a[i] * h.a[i] * h.a[i]) / 3;
    for (int i = 0; i < h.np; i++)
        sig += h.pn[i] * h.pa[i] * h.pa[i];
    double noise = hist_mse(&h, scale, zero);
    hist_ctx_free(&h);
    sig /= (double)o->count;
    if (noise <= 0)
        return INFINITY;
    return 10 * log10(sig / noise);
}

/* ---- cross-entropy on logit rows ------------------------------------------------------------ */

typedef struct ce_ctx {
    const qs_observer *o;
    const float *p;       /* softmax of each kept row */
    float *q;             /* one fake-quantized row */
    qs_grid g;
} ce_ctx;

static double ce_cost(void *ctx, float s, float z)
{
    ce_ctx *c = ctx;
    int64_t k = c->o->classes;
    double total = 0;
    for (int64_t r = 0; r < c->o->rows_kept; r++) {
        const float *x = c->o->rows + r * k, *p = c->p + r * k;
        double mx = -INFINITY, sum = 0, dot = 0;
        for (int64_t j = 0; j < k; j++) {
            c->q[j] = qs_fake_quant1(x[j], s, z, c->g);
            mx = fmax(mx, c->q[j]);
        }
        for (int64_t j = 0; j < k; j++) {
            sum += exp(c->q[j] - mx);
            dot += p[j] * (c->q[j] - mx);
        }
        /* −Σ p·log softmax(q) = log Σ exp(q − mx) − Σ p·(q − mx), since Σ p = 1 */
        total += log(sum) - dot;
    }
    return total / (double)c->o->rows_kept;
}

static int observer_ce(const qs_observer *o, qs_grid g, int symmetric, int pow2, float *scale, float *zero,
                       qs_err *e)
{
    if (!o->rows || o->rows_kept == 0)
        return qs_error(e, QS_EINVAL, "cross-entropy range: no logit rows were kept (qs_observer_keep_rows "
                        "before calibration, then qs_observer_add_rows)");
    int64_t k = o->classes;
    float *p = malloc((size_t)(o->rows_kept * k) * sizeof *p), *q = malloc((size_t)k * sizeof *q);
    if (!p || !q) {
        free(p);
        free(q);
        return qs_error(e, QS_ENOMEM, "cross-entropy range: out of memory");
    }
    for (int64_t r = 0; r < o->rows_kept; r++) {
        const float *x = o->rows + r * k;
        float *pr = p + r * k;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < k; j++)
            mx = fmax(mx, x[j]);
        for (int64_t j = 0; j < k; j++)
            sum += exp(x[j] - mx);
        for (int64_t j = 0; j < k; j++)
            pr[j] = (float)(exp(x[j] - mx) / sum);
    }
    ce_ctx c = { o, p, q, g };
    search_range(o->min, o->max, g, symmetric, pow2, ce_cost, &c, scale, zero);
    free(p);
    free(q);
    return 0;
}

int qs_observer_qparams(const qs_observer *o, qs_grid g, int symmetric, int pow2, qs_range_method m,
                        double percentile, float *scale, float *zero, qs_err *e)
{
    if (o->count == 0)
        return qs_error(e, QS_EINVAL, o->nonfinite ? "range: every observed value was NaN or Inf"
                                                   : "range: the observer saw no data");
    float lo = o->min, hi = o->max;
    int32_t zi;
    switch (m) {
    case QS_RANGE_MINMAX:
        break;
    case QS_RANGE_PERCENTILE:
        if (!(percentile >= 50 && percentile <= 100))
            return qs_error(e, QS_EINVAL, "percentile range: percentile %g is not in [50, 100]", percentile);
        lo = (float)quantile(o, 1 - percentile / 100);
        hi = (float)quantile(o, percentile / 100);
        break;
    case QS_RANGE_MSE: {
        hist_ctx h;
        if (hist_ctx_init(&h, o, g) < 0)
            return qs_error(e, QS_ENOMEM, "MSE range: out of memory");
        search_range(lo, hi, g, symmetric, pow2, hist_mse, &h, scale, zero);
        hist_ctx_free(&h);
        return 0;
    }
    case QS_RANGE_CE:
        return observer_ce(o, g, symmetric, pow2, scale, zero, e);
    default:
        return qs_error(e, QS_EINVAL, "range: method '%s' does not apply to observed data",
                        qs_range_method_name(m));
    }
    qs_qparams_from_range(g, lo, hi, symmetric, pow2, scale, &zi);
    *zero = (float)zi;
    return 0;
}

/* ---- BN-based ranges ------------------------------------------------------------------------ */

void qs_range_bn(const float *beta, const float *gamma, int64_t c, float n, int relu, float *lo, float *hi)
{
    float l = INFINITY, h = -INFINITY;
    for (int64_t i = 0; i < c; i++) {
        l = fminf(l, beta[i] - n * fabsf(gamma[i]));
        h = fmaxf(h, beta[i] + n * fabsf(gamma[i]));
    }
    if (c <= 0)
        l = h = 0;
    if (relu) {
        l = fmaxf(l, 0.f);
        h = fmaxf(h, 0.f);
    }
    *lo = l;
    *hi = h;
}
