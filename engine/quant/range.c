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
 * results are deterministic.
 *
 * The observer's histogram has a fixed number of bins over [lo, lo + BINS·w], always containing
 * 0. When new data falls outside, the bins are merged k at a time into bins k times wider,
 * with the new origin shifted by whole new bins, so every old bin lies inside exactly one new bin
 * (no interpolation; the wider range wastes at most about two bins). Exact zeros (ReLU outputs)
 * are counted apart: 0 is always on the grid, so they never add error, and keeping them out of
 * the bin around 0 keeps that bin's uniform model honest. NaN/Inf are counted, never binned. The
 * exact min and max are kept beside the histogram and clip the outermost bins. */
#include "quant/range.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define OBS_BINS 2048
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
    for (int round = 0; round < REFINE_ROUNDS; round++) {
        int moved = 0;
        for (int k = 0; k < SEARCH_STEPS; k++)
            if (k != klo && try_range(&r, (float)(r.lo0 * step_fraction(k)), (float)(r.hi0 * step_fraction(khi))))
                klo = k, moved = 1;
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

/* ---- the observer --------------------------------------------------------------------------- */

struct qs_observer {
    int64_t count;        /* finite values, zeros included */
    int64_t zeros;        /* exact zeros (kept out of the bins) */
    int64_t nonfinite;
    float min, max;       /* exact, over finite values */
    int have_bins;        /* the histogram has a range (some nonzero finite value was seen) */
    double lo, w;         /* bins cover [lo, lo + OBS_BINS·w] */
    uint64_t bins[OBS_BINS];
    /* cross-entropy reservoir: up to max_rows rows of `classes` logits (Algorithm R) */
    int64_t classes, max_rows, rows_seen, rows_kept;
    float *rows;
    uint64_t rng;
};

qs_observer *qs_observer_new(void)
{
    qs_observer *o = calloc(1, sizeof *o);
    if (o)
        o->rng = 0x9e3779b97f4a7c15ull;
    return o;
}

void qs_observer_free(qs_observer *o)
{
    if (!o)
        return;
    free(o->rows);
    free(o);
}

static int64_t bin_index(const qs_observer *o, double x)
{
    double t = (x - o->lo) / o->w;
    if (!(t >= 0)) return 0;
    if (t >= OBS_BINS) return OBS_BINS - 1;
    return (int64_t)t;
}

/* Grows the histogram to cover [a, b] (a ≤ 0 ≤ b, the whole data range so far) by merging k old
 * bins into one, the new origin lying a whole number of new bins left of the old one. (k = 1 is a
 * pure shift: the bins it drops lie outside [a, b] and are empty.) */
static void widen(qs_observer *o, double a, double b)
{
    double hi = o->lo + OBS_BINS * o->w;
    if (a >= o->lo && b <= hi)
        return;
    double k = fmax(1.0, ceil((b - a) / (OBS_BINS * o->w))), j, nlo;
    for (;; k += 1) {
        j = a < o->lo ? ceil((o->lo - a) / (k * o->w)) : 0;
        nlo = o->lo - j * k * o->w;
        if (nlo + OBS_BINS * k * o->w >= b)
            break;
    }
    uint64_t old[OBS_BINS];
    memcpy(old, o->bins, sizeof old);
    memset(o->bins, 0, sizeof o->bins);
    double olo = o->lo, ow = o->w;
    o->lo = nlo;
    o->w = k * ow;
    /* an old bin's centre is half an old bin away from any new edge, so rounding cannot misplace it */
    for (int i = 0; i < OBS_BINS; i++)
        if (old[i])
            o->bins[bin_index(o, olo + (i + 0.5) * ow)] += old[i];
}

/* Bins x (finite values only when `check`) — the calibration hot loop. The index is computed in
 * float with a precomputed reciprocal (a bin off by a rounding error is harmless: re-binning goes
 * by bin centres), branch-free apart from the NaN/Inf test. */
static void bin_values(qs_observer *o, const float *x, int64_t n, int check)
{
    int64_t zeros = 0;
    double inv = 1.0 / o->w;
    if (!o->have_bins || !(inv < FLT_MAX / 4)) {   /* only zeros so far, or bins finer than float */
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(x[i]))
                continue;
            if (x[i] == 0)
                zeros++;
            else
                o->bins[bin_index(o, x[i])]++;
        }
        o->zeros += zeros;
        return;
    }
    const float finv = (float)inv, off = (float)(o->lo * inv), top = OBS_BINS - 1;
    if (n < 4 * OBS_BINS || check) {
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            if (check && !(fabsf(v) <= FLT_MAX))
                continue;
            float t = v * finv - off;
            t = t > 0 ? t : 0;
            t = t < top ? t : top;
            zeros += v == 0;
            o->bins[(int)t] += v != 0;
        }
        o->zeros += zeros;
        return;
    }
    /* Large batches: four interleaved 32-bit histograms break the read-modify-write chain on one
     * bin (after a ReLU half the values are zeros, all landing in the same slot), and zeros go to a
     * spare slot at the end instead of a compare-and-count. */
    static _Thread_local uint32_t h[4][OBS_BINS + 1];
    for (int64_t start = 0; start < n; start += INT32_MAX / 2) {
        int64_t m = n - start < INT32_MAX / 2 ? n - start : INT32_MAX / 2;
        const float *p = x + start;
        memset(h, 0, sizeof h);
        int64_t i = 0;
        int32_t idx[16];
        for (; i + 16 <= m; i += 16) {
            /* bin indices for 16 values in a vectorisable loop (±0 → the spare slot, found from the
             * bits so no float compare branches), then four interleaved counters */
            for (int k = 0; k < 16; k++) {
                float v = p[i + k], t = v * finv - off;
                uint32_t bits;
                memcpy(&bits, &v, 4);
                int32_t nz = -(int32_t)((bits << 1) != 0);
                t = t > 0 ? t : 0;
                t = t < top ? t : top;
                idx[k] = OBS_BINS + (((int32_t)t - OBS_BINS) & nz);
            }
            for (int k = 0; k < 16; k += 4) {
                h[0][idx[k]]++;
                h[1][idx[k + 1]]++;
                h[2][idx[k + 2]]++;
                h[3][idx[k + 3]]++;
            }
        }
        for (; i < m; i++) {
            float v = p[i], t = v * finv - off;
            t = t > 0 ? t : 0;
            t = t < top ? t : top;
            h[0][v != 0 ? (int)t : OBS_BINS]++;
        }
        for (int b = 0; b < OBS_BINS; b++)
            o->bins[b] += (uint64_t)h[0][b] + h[1][b] + h[2][b] + h[3][b];
        o->zeros += (int64_t)h[0][OBS_BINS] + h[1][OBS_BINS] + h[2][OBS_BINS] + h[3][OBS_BINS];
    }
}

void qs_observer_add(qs_observer *o, const float *x, int64_t n)
{
    /* min, max and the NaN/Inf count in one loop the compiler vectorises (a NaN never wins a
     * comparison); only a batch that holds NaN/Inf pays a second, careful pass */
    float bmin = INFINITY, bmax = -INFINITY;
    int64_t bad = 0;
    {
        /* 16 independent lanes so the compiler keeps them in vector registers */
        float mn[16], mx[16];
        int32_t nb[16];
        for (int k = 0; k < 16; k++)
            mn[k] = INFINITY, mx[k] = -INFINITY, nb[k] = 0;
        int64_t i = 0;
        for (; i + 16 <= n; i += 16)
            for (int k = 0; k < 16; k++) {
                float v = x[i + k];
                uint32_t bits;
                memcpy(&bits, &v, 4);
                nb[k] += (bits & 0x7f800000u) == 0x7f800000u;   /* exponent all ones: Inf or NaN */
                mn[k] = v < mn[k] ? v : mn[k];
                mx[k] = v > mx[k] ? v : mx[k];
            }
        for (int k = 0; k < 16; k++) {
            bad += nb[k];
            bmin = mn[k] < bmin ? mn[k] : bmin;
            bmax = mx[k] > bmax ? mx[k] : bmax;
        }
        for (; i < n; i++) {
            float v = x[i];
            bad += !(fabsf(v) <= FLT_MAX);
            bmin = v < bmin ? v : bmin;
            bmax = v > bmax ? v : bmax;
        }
    }
    if (bad) {
        bmin = INFINITY, bmax = -INFINITY;
        for (int64_t i = 0; i < n; i++)
            if (isfinite(x[i])) {
                bmin = fminf(bmin, x[i]);
                bmax = fmaxf(bmax, x[i]);
            }
        o->nonfinite += bad;
    }
    int64_t finite = n - bad;
    if (!finite)
        return;
    o->min = o->count ? fminf(o->min, bmin) : bmin;
    o->max = o->count ? fmaxf(o->max, bmax) : bmax;
    o->count += finite;
    double a = fmin(0.0, o->min), b = fmax(0.0, o->max);
    if (b > a) {
        if (!o->have_bins) {
            o->have_bins = 1;
            o->lo = a;
            o->w = (b - a) / OBS_BINS;
        } else {
            widen(o, a, b);
        }
    }
    bin_values(o, x, n, bad != 0);
}

void qs_observer_keep_rows(qs_observer *o, int64_t classes, int64_t max_rows)
{
    /* An allocation failure leaves no reservoir: the rows are still observed, and the CE method
     * then reports that no rows were kept. */
    free(o->rows);
    o->rows = NULL;
    o->rows_seen = o->rows_kept = 0;
    o->classes = classes > 0 ? classes : 0;
    o->max_rows = max_rows > 0 ? max_rows : 0;
    if (o->classes && o->max_rows)
        o->rows = malloc((size_t)(o->classes * o->max_rows) * sizeof *o->rows);
}

static uint64_t next_random(qs_observer *o)   /* xorshift64* */
{
    o->rng ^= o->rng >> 12;
    o->rng ^= o->rng << 25;
    o->rng ^= o->rng >> 27;
    return o->rng * 2685821657736338717ull;
}

void qs_observer_add_rows(qs_observer *o, const float *x, int64_t rows)
{
    qs_observer_add(o, x, rows * o->classes);
    if (!o->rows)
        return;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * o->classes;
        int ok = 1;
        for (int64_t c = 0; c < o->classes && ok; c++)
            ok = isfinite(row[c]);
        if (!ok)
            continue;
        int64_t slot = o->rows_seen < o->max_rows ? o->rows_seen
                                                   : (int64_t)(next_random(o) % (uint64_t)(o->rows_seen + 1));
        o->rows_seen++;
        if (slot < o->max_rows) {
            memcpy(o->rows + slot * o->classes, row, (size_t)o->classes * sizeof *row);
            if (slot >= o->rows_kept)
                o->rows_kept = slot + 1;
        }
    }
}

int64_t qs_observer_count(const qs_observer *o) { return o->count; }

void qs_observer_minmax(const qs_observer *o, float *lo, float *hi)
{
    *lo = o->count ? o->min : 0.f;
    *hi = o->count ? o->max : 0.f;
}

int qs_observer_nonfinite(const qs_observer *o)
{
    return o->nonfinite > INT32_MAX ? INT32_MAX : (int)o->nonfinite;
}

/* Bin i's extent, clipped to the exact data range. */
static void bin_extent(const qs_observer *o, int i, double *a, double *b)
{
    *a = fmax(o->lo + i * o->w, o->min);
    *b = fmin(o->lo + (i + 1) * o->w, o->max);
    if (*b < *a)
        *b = *a;
}

/* ---- percentile ----------------------------------------------------------------------------- */

/* The value below which a fraction q of the finite values lie: bins are uniform, the zeros are a
 * point mass at 0. */
static double quantile(const qs_observer *o, double q)
{
    if (q <= 0) return o->min;
    if (q >= 1) return o->max;
    double target = q * (double)o->count, cum = 0;
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

/* Antiderivative pieces of the rounding error d(x)² = (x − s·round(x/s))², periodic with period s:
 * over one period its integral is s³/12. */
static void period_pos(double x, double s, double *m, double *phi)
{
    double u = x / s + 0.5;
    *m = floor(u);
    *phi = u - *m;
}

static double h_part(double phi) { double t = phi - 0.5; return (t * t * t + 0.125) / 3; }

/* ∫_a^b d(x)² dx for a ≤ b inside the grid's range (the grid points are integer multiples of s) */
static double round_err_integral(double a, double b, double s)
{
    double ma, pa, mb, pb;
    period_pos(a, s, &ma, &pa);
    period_pos(b, s, &mb, &pb);
    return s * s * s * ((mb - ma) / 12 + h_part(pb) - h_part(pa));
}

static double cube(double v) { return v * v * v; }

typedef struct hist_ctx { const qs_observer *o; qs_grid g; } hist_ctx;

static double hist_mse(void *ctx, float s, float z)
{
    const hist_ctx *h = ctx;
    const qs_observer *o = h->o;
    double lc = ((double)h->g.qmin - z) * s, hc = ((double)h->g.qmax - z) * s, total = 0;
    for (int i = 0; i < OBS_BINS && o->have_bins; i++) {
        if (!o->bins[i])
            continue;
        double a, b, n = (double)o->bins[i];
        bin_extent(o, i, &a, &b);
        if (b - a <= 0) {   /* a point mass (all the bin's data is one value) */
            double d = (double)qs_fake_quant1((float)a, s, z, h->g) - a;
            total += n * d * d;
            continue;
        }
        double sum = 0;
        if (a < lc)
            sum += (cube(fmin(b, lc) - lc) - cube(a - lc)) / 3;
        if (b > hc)
            sum += (cube(b - hc) - cube(fmax(a, hc) - hc)) / 3;
        double l = fmax(a, lc), u = fmin(b, hc);
        if (u > l)
            sum += round_err_integral(l, u, s);
        total += n * sum / (b - a);
    }
    return total / (double)o->count;
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
        hist_ctx h = { o, g };
        search_range(lo, hi, g, symmetric, pow2, hist_mse, &h, scale, zero);
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
