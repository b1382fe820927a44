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
 * The observer's histogram has a fixed number of bins over [lo, lo + BINS·w], always containing
 * 0. When new data falls outside, the bins are merged k at a time into bins k times wider,
 * with the new origin shifted by whole new bins, so every old bin lies inside exactly one new bin
 * (no interpolation; the wider range wastes at most about two bins). Exact zeros (ReLU outputs)
 * are counted apart: 0 is always on the grid, so they never add error, and keeping them out of
 * the bin around 0 keeps that bin's uniform model honest. NaN/Inf are counted, never binned. The
 * exact min and max are kept beside the histogram and clip the outermost bins.
 *
 * Calibration streams every activation of every sample through an observer, which for small
 * models costs as much as the inference itself; so once an observer has binned OBS_EXACT values,
 * large batches are sampled (qs_observer_add): min, max, the count and NaN/Inf stay exact, the
 * tails (where the MSE search's clipping costs come from) are binned value by value, and the rest,
 * zeros included, is a random sample of blocks counted with the inverse of its rate, so every
 * bin's expected count is the full count. Small calibration sets never reach the sampling. A
 * sampled batch's chunks are independent, so their scan can be spread over threads
 * (qs_observer_add_threads) without changing the result (see add_sampled). */
#include "quant/range.h"

#include "ops/kernels.h"   /* QS_HOT */
#include "quant/rng.h"

#include <float.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define OBS_BINS 2048
#define OBS_EXACT (1 << 18)   /* values binned one by one before large batches are sampled */
#define OBS_STRIDE 32         /* then one block of OBS_BLOCK values in every OBS_STRIDE is binned, */
#define OBS_BLOCK 16
#define OBS_TAIL 1024         /* except the tails (1/OBS_TAIL of the values each side): all binned */
#define OBS_CHUNK 8192        /* values scanned then binned while in the cache */
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

/* ---- the observer --------------------------------------------------------------------------- */

struct qs_observer {
    int64_t count;        /* finite values, zeros included */
    int64_t zeros;        /* exact zeros, kept out of the bins (weighted like them when sampled) */
    int64_t nonfinite;
    float min, max;       /* exact, over finite values */
    int have_bins;        /* the histogram has a range (some nonzero finite value was seen) */
    double lo, w;         /* bins cover [lo, lo + OBS_BINS·w] */
    uint64_t bins[OBS_BINS + 4];  /* nonzero values, weighted when sampled; the last 4 are scratch */
    int64_t binned;       /* values that went through binning (sampled or not) */
    uint64_t sample_rng;  /* picks the sampled blocks */
    /* cross-entropy reservoir: up to max_rows rows of `classes` logits (Algorithm R) */
    int64_t classes, max_rows, rows_seen, rows_kept;
    float *rows;
    uint64_t rng;
};

qs_observer *qs_observer_new(void)
{
    qs_observer *o = calloc(1, sizeof *o);
    if (o) {
        o->rng = 0x9e3779b97f4a7c15ull;
        o->sample_rng = 0x2545f4914f6cdd1dull;
    }
    return o;
}

void qs_observer_free(qs_observer *o)
{
    if (!o)
        return;
    free(o->rows);
    free(o);
}

static uint64_t next_random(uint64_t *s)   /* xorshift64* */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
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

/* One pass over a batch: exact min and max, and the counts of zeros and of NaN/Inf, in loops the
 * compiler vectorises (a NaN never wins a comparison, so a batch holding NaN/Inf gets a second,
 * careful min/max pass from the caller). 64 independent lanes: four vectors of 16 per step, so the
 * min/max chains do not wait on each other's latency. */
#define SCAN_LANES 64
typedef struct scan { float min, max; int64_t zeros, bad; } scan;

QS_HOT static void scan_batch(const float *x, int64_t n, scan *r)
{
    float mn[SCAN_LANES], mx[SCAN_LANES];
    int32_t nb[SCAN_LANES], nz[SCAN_LANES];
    for (int k = 0; k < SCAN_LANES; k++)
        mn[k] = INFINITY, mx[k] = -INFINITY, nb[k] = nz[k] = 0;
    r->zeros = r->bad = 0;
    for (int64_t start = 0; start < n; start += INT32_MAX / 2) {   /* the 32-bit lane counters */
        int64_t m = n - start < INT32_MAX / 2 ? n - start : INT32_MAX / 2, i = 0;
        const float *p = x + start;
        for (; i + SCAN_LANES <= m; i += SCAN_LANES)
            for (int k = 0; k < SCAN_LANES; k++) {
                float v = p[i + k];
                uint32_t bits;
                memcpy(&bits, &v, 4);
                nb[k] += (bits & 0x7f800000u) == 0x7f800000u;   /* exponent all ones: Inf or NaN */
                nz[k] += (bits << 1) == 0;                       /* ±0 */
                mn[k] = v < mn[k] ? v : mn[k];
                mx[k] = v > mx[k] ? v : mx[k];
            }
        for (; i < m; i++) {
            float v = p[i];
            nb[0] += !(fabsf(v) <= FLT_MAX);
            nz[0] += v == 0;
            mn[0] = v < mn[0] ? v : mn[0];
            mx[0] = v > mx[0] ? v : mx[0];
        }
        for (int k = 0; k < SCAN_LANES; k++) {
            r->bad += nb[k];
            r->zeros += nz[k];
            nb[k] = nz[k] = 0;
        }
    }
    r->min = INFINITY, r->max = -INFINITY;
    for (int k = 0; k < SCAN_LANES; k++) {
        r->min = mn[k] < r->min ? mn[k] : r->min;
        r->max = mx[k] > r->max ? mx[k] : r->max;
    }
}

/* The scan of a sampled chunk (at most OBS_CHUNK values): exact min and max, whether NaN/Inf
 * occur (v − v is NaN only for them), and the indices of the tail values, below tlo or above thi.
 * Half the work of scan_batch per value (zeros are counted from the sample instead), and the
 * tails cost almost nothing: each run of TAIL_SPAN values keeps per-lane min/max, and only a lane
 * whose min or max reaches a tail is looked at value by value (TAIL_SPAN / SCAN_LANES of them).
 * Returns the number of tail indices written to `tails`. */
#define TAIL_SPAN 1024

QS_HOT static int scan_sampled(const float *x, int64_t m, float tlo, float thi, float *min, float *max, int *bad,
                               int32_t *tails)
{
    float gmn[SCAN_LANES], gmx[SCAN_LANES], nan[SCAN_LANES], mn[SCAN_LANES], mx[SCAN_LANES];
    for (int k = 0; k < SCAN_LANES; k++)
        gmn[k] = INFINITY, gmx[k] = -INFINITY, nan[k] = 0;
    int ntails = 0;
    int64_t i = 0;
    while (i + SCAN_LANES <= m) {
        int64_t end = i + TAIL_SPAN <= m ? i + TAIL_SPAN : m - (m - i) % SCAN_LANES, start = i;
        for (int k = 0; k < SCAN_LANES; k++)
            mn[k] = INFINITY, mx[k] = -INFINITY;
        for (; i < end; i += SCAN_LANES)
            for (int k = 0; k < SCAN_LANES; k++) {
                float v = x[i + k];
                nan[k] += v - v;
                mn[k] = v < mn[k] ? v : mn[k];
                mx[k] = v > mx[k] ? v : mx[k];
            }
        int hit = 0;
        for (int k = 0; k < SCAN_LANES; k++) {
            hit |= (mn[k] < tlo) | (mx[k] > thi);
            gmn[k] = mn[k] < gmn[k] ? mn[k] : gmn[k];
            gmx[k] = mx[k] > gmx[k] ? mx[k] : gmx[k];
        }
        if (hit)
            for (int k = 0; k < SCAN_LANES; k++)
                if (mn[k] < tlo || mx[k] > thi)
                    for (int64_t j = start + k; j < end; j += SCAN_LANES)
                        if (x[j] < tlo || x[j] > thi)
                            tails[ntails++] = (int32_t)j;
    }
    float a = INFINITY, b = -INFINITY, c = 0;
    for (; i < m; i++) {   /* the values past the last whole run: binned whole by the caller */
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
        c += x[i] - x[i];
    }
    for (int k = 0; k < SCAN_LANES; k++) {
        a = gmn[k] < a ? gmn[k] : a;
        b = gmx[k] > b ? gmx[k] : b;
        c += nan[k];
    }
    *min = a;
    *max = b;
    *bad = c != 0;
    return ntails;
}

/* Bin index of v (clamped into the bins), or OBS_BINS (a spare slot) for ±0. Computed in float
 * with a precomputed reciprocal: a bin off by a rounding error is harmless (re-binning goes by bin
 * centres). */
static inline int32_t bin_slot(float v, float finv, float off)
{
    float t = v * finv - off;
    uint32_t bits;
    memcpy(&bits, &v, 4);
    int32_t nz = -(int32_t)((bits << 1) != 0);
    t = t > 0 ? t : 0;
    t = t < OBS_BINS - 1 ? t : OBS_BINS - 1;
    return OBS_BINS + (((int32_t)t - OBS_BINS) & nz);
}

/* bin_slot for the 16 values at p, in vector extensions: bin (clamped, without the zero test) and
 * nz (−1 where the value is not ±0). (int)t then clamped is what clamping t then (int) gives.
 * A macro rather than a function: GCC lowers a helper's vector code for the baseline target
 * before inlining it into the target_clones functions, lane by lane. */
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
#define BINS16(p, finv, off, bin, nz)                                   \
    do {                                                                \
        v16f v_;                                                        \
        memcpy(&v_, (p), sizeof v_);                                    \
        v16i b_ = __builtin_convertvector(v_ * (finv) - (off), v16i);   \
        b_ &= b_ > 0;                                                   \
        v16i lt_ = b_ < OBS_BINS - 1;                                   \
        (bin) = (b_ & lt_) | ((OBS_BINS - 1) & ~lt_);                   \
        (nz) = ((v16i)v_ << 1) != 0;                                    \
    } while (0)

/* Zeros (and skipped lanes) go to spare slot OBS_BINS + k % 4: four chains instead of one when
 * they are counted straight into the bins. */
static const v16i spare16 = { OBS_BINS, OBS_BINS + 1, OBS_BINS + 2, OBS_BINS + 3, OBS_BINS, OBS_BINS + 1,
                              OBS_BINS + 2, OBS_BINS + 3, OBS_BINS, OBS_BINS + 1, OBS_BINS + 2, OBS_BINS + 3,
                              OBS_BINS, OBS_BINS + 1, OBS_BINS + 2, OBS_BINS + 3 };
#define SLOTS16(bin, keep) (spare16 + (((bin) - spare16) & (keep)))

/* Bins every nonzero value of x[0..n) (all finite). A long run goes through four interleaved
 * 32-bit histograms, which break the read-modify-write chains on one bin (most values of a smooth
 * tensor land in a few bins), then is added in. */
QS_HOT static void bin_all(qs_observer *o, const float *x, int64_t n, float finv, float off)
{
    int64_t i = 0;
    if (n >= 4 * OBS_BINS) {
        static _Thread_local uint32_t h[4][OBS_BINS + 4];
        int32_t idx[16];
        for (int64_t start = 0; start < n; start += INT32_MAX / 2) {
            int64_t m = n - start < INT32_MAX / 2 ? n - start : INT32_MAX / 2;
            for (i = start; i + 16 <= start + m; i += 16) {
                v16i bin, nz, slot;
                BINS16(x + i, finv, off, bin, nz);
                slot = SLOTS16(bin, nz);
                memcpy(idx, &slot, sizeof idx);
                for (int k = 0; k < 16; k += 4) {
                    h[0][idx[k]]++;
                    h[1][idx[k + 1]]++;
                    h[2][idx[k + 2]]++;
                    h[3][idx[k + 3]]++;
                }
            }
            for (int b = 0; b < OBS_BINS; b++)
                o->bins[b] += (uint64_t)h[0][b] + h[1][b] + h[2][b] + h[3][b];
            memset(h, 0, sizeof h);
        }
    }
    for (; i < n; i++)
        o->bins[bin_slot(x[i], finv, off)]++;
}

/* Bins a sampled chunk (see qs_observer_add) into h, with the bins' mapping (finv, off): the tails
 * (below tlo or above thi, tlo ≤ 0 ≤ thi, so zeros are never in them), every value, from the
 * indices scan_sampled found; the rest one random block of OBS_BLOCK values per group of
 * OBS_STRIDE blocks, with weight OBS_STRIDE, its zeros counted with the same weight; what fills no
 * whole group, every value. A value outside [omin, omax], the data's range so far (which the bins
 * cover), is left out and *outside set: the caller bins it once the bins have widened (only a tail
 * can be outside). Returns the zeros counted.
 * In a sampled block the tails are masked by the sign bit of (v − tlo) | (thi − v), which is
 * v < tlo || v > thi: in these target_clones functions GCC lowers vector compares against anything
 * but a constant lane by lane. */
QS_HOT static int64_t bin_sampled(uint64_t *h, const float *x, int64_t m, const int32_t *tails, int ntails,
                                  float tlo, float thi, float omin, float omax, float finv, float off, uint64_t rng,
                                  int *outside)
{
    const int64_t group = OBS_STRIDE * OBS_BLOCK, full = m / group * group;
    const v16f lo = (v16f){0} + tlo, hi = (v16f){0} + thi;
    int32_t idx[16];
    int64_t zeros = 0;
    for (int t = 0; t < ntails; t++)
        if (tails[t] < full) {   /* (the remainder is binned whole below) */
            float v = x[tails[t]];
            if (v < omin || v > omax)
                *outside = 1;
            else
                h[bin_slot(v, finv, off)]++;
        }
    v16i nzeros = {0};
    for (int64_t g = 0; g < full; g += group) {
        const float *p = x + g + (int64_t)(next_random(&rng) % OBS_STRIDE) * OBS_BLOCK;
        v16f v;
        v16i bin, nz;
        memcpy(&v, p, sizeof v);
        BINS16(p, finv, off, bin, nz);
        v16i tail = ((v16i)(v - lo) | (v16i)(hi - v)) >> 31;   /* counted above */
        v16i slot = SLOTS16(bin, nz & ~tail);
        nzeros += ~nz & 1;
        memcpy(idx, &slot, sizeof idx);
        for (int k = 0; k < 16; k++)
            h[idx[k]] += OBS_STRIDE;
    }
    for (int k = 0; k < 16; k++)
        zeros += (int64_t)nzeros[k] * OBS_STRIDE;
    for (int64_t i = full; i < m; i++) {
        zeros += x[i] == 0;
        if (x[i] < omin || x[i] > omax)
            *outside = 1;
        else
            h[bin_slot(x[i], finv, off)]++;
    }
    return zeros;
}

/* Folds a batch's exact statistics into the observer and widens the bins to cover them. */
static void add_stats(qs_observer *o, float bmin, float bmax, int64_t finite, int64_t zeros)
{
    o->min = o->count ? fminf(o->min, bmin) : bmin;
    o->max = o->count ? fmaxf(o->max, bmax) : bmax;
    o->count += finite;
    o->zeros += zeros;
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
}

/* Every value: the exact statistics, then every nonzero finite value binned. */
static void add_exact(qs_observer *o, const float *x, int64_t n)
{
    scan st;
    scan_batch(x, n, &st);
    if (st.bad) {
        st.min = INFINITY, st.max = -INFINITY;
        for (int64_t i = 0; i < n; i++)
            if (isfinite(x[i])) {
                st.min = fminf(st.min, x[i]);
                st.max = fmaxf(st.max, x[i]);
            }
        o->nonfinite += st.bad;
    }
    if (n == st.bad)
        return;
    add_stats(o, st.min, st.max, n - st.bad, st.zeros);
    double inv = 1.0 / o->w;
    o->binned += n;
    if (!o->have_bins)
        return;   /* only zeros so far: nothing to bin */
    if (st.bad || !(inv < FLT_MAX / 4)) {   /* NaN/Inf to skip, or bins finer than float */
        for (int64_t i = 0; i < n; i++)
            if (isfinite(x[i]) && x[i] != 0)
                o->bins[bin_index(o, x[i])]++;
        return;
    }
    bin_all(o, x, n, (float)inv, (float)(o->lo * inv));
}

/* The tails a sampled batch bins every value of: the bins below blo and above bhi hold at most a
 * fraction 1/OBS_TAIL of the binned values on each side. The MSE search's clipping costs hang on
 * them, and a sample would be thin there. */
static void tail_bins(const qs_observer *o, int32_t *blo, int32_t *bhi)
{
    double total = 0, want, c = 0;
    for (int i = 0; i < OBS_BINS; i++)
        total += (double)o->bins[i];
    want = total / OBS_TAIL;
    int i = 0, j = OBS_BINS - 1;
    for (; i < OBS_BINS - 1 && (c += (double)o->bins[i]) <= want; i++)
        ;
    for (c = 0; j > i && (c += (double)o->bins[j]) <= want; j--)
        ;
    *blo = i;
    *bhi = j;
}

/* A sampled batch goes in rounds of up to OBS_ROUND chunks of OBS_CHUNK values. The chunks of a
 * round are scanned and binned independently, on any number of threads (sample_chunks), each
 * into a histogram of its worker's with the mapping the round starts with; the histograms are
 * integer counts added into the observer's, so the sum does not depend on which worker took
 * which chunk. Each chunk's sampled blocks are drawn from a generator seeded by the round's seed
 * and the chunk's index, not from one stream, so the sample does not depend on it either. Then
 * the round's exact statistics widen the bins once, and the few values that fell outside the old
 * bins (flagged chunks, rescanned) and the chunks holding NaN/Inf (binned whole) go in. */
#define OBS_ROUND 64
#define OBS_PAR_CHUNKS 4   /* chunks per thread at least */
#define OBS_DEFER_NONFINITE 1
#define OBS_DEFER_OUTSIDE 2

typedef struct sample_round {
    qs_observer *o;
    const float *x;
    int64_t n, nchunks;          /* the round's values, in chunks of OBS_CHUNK */
    float tlo, thi, finv, off;   /* the tails' bounds and the bins' mapping as the round starts */
    float omin, omax;            /* the data's range so far, which the bins cover */
    uint64_t seed;
    pthread_mutex_t mu;
    float min, max;              /* over the chunks binned here (not deferred ones) */
    int64_t count, zeros;
    uint8_t defer[OBS_ROUND];    /* per chunk: OBS_DEFER_* */
} sample_round;

/* Values in chunk c of n values */
static int64_t chunk_len(int64_t n, int64_t c)
{
    return n - c * OBS_CHUNK < OBS_CHUNK ? n - c * OBS_CHUNK : OBS_CHUNK;
}

/* The c-th value of the splitmix64 stream from seed: chunk c's own generator state. */
static uint64_t chunk_seed(uint64_t seed, int64_t c)
{
    uint64_t s = seed + QS_SPLITMIX_GAMMA * (uint64_t)c, z = qs_splitmix64(&s);
    return z ? z : 1;   /* xorshift's one forbidden state */
}

static void sample_chunks(void *arg, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    sample_round *r = arg;
    const int alone = begin == 0 && end == r->nchunks;   /* no other worker: bin straight into o */
    uint64_t own[OBS_BINS + 4], *h = alone ? r->o->bins : own;
    int32_t tails[OBS_CHUNK];
    if (!alone)
        memset(own, 0, sizeof own);
    float mn = INFINITY, mx = -INFINITY;
    int64_t count = 0, zeros = 0;
    for (int64_t c = begin; c < end; c++) {
        const float *p = r->x + c * OBS_CHUNK;
        int64_t m = chunk_len(r->n, c);
        float a, b;
        int bad, outside = 0;
        int ntails = scan_sampled(p, m, r->tlo, r->thi, &a, &b, &bad, tails);
        if (bad) {
            r->defer[c] = OBS_DEFER_NONFINITE;
            continue;
        }
        mn = a < mn ? a : mn;
        mx = b > mx ? b : mx;
        count += m;
        zeros += bin_sampled(h, p, m, tails, ntails, r->tlo, r->thi, r->omin, r->omax, r->finv, r->off,
                             chunk_seed(r->seed, c), &outside);
        r->defer[c] = outside ? OBS_DEFER_OUTSIDE : 0;
    }
    if (!count)
        return;
    pthread_mutex_lock(&r->mu);
    r->min = mn < r->min ? mn : r->min;
    r->max = mx > r->max ? mx : r->max;
    r->count += count;
    r->zeros += zeros;
    for (int i = 0; i < OBS_BINS && !alone; i++)
        r->o->bins[i] += h[i];
    pthread_mutex_unlock(&r->mu);
}

static void add_sampled(qs_observer *o, const float *x, int64_t n, qs_threadpool *tp)
{
    int32_t blo, bhi;
    tail_bins(o, &blo, &bhi);
    double inv = 1.0 / o->w;
    sample_round r = {
        .o = o, .x = x, .n = n, .nchunks = (n + OBS_CHUNK - 1) / OBS_CHUNK,
        .tlo = fminf((float)(o->lo + blo * o->w), 0.f), .thi = fmaxf((float)(o->lo + (bhi + 1) * o->w), 0.f),
        .finv = (float)inv, .off = (float)(o->lo * inv), .omin = o->min, .omax = o->max,
        .seed = next_random(&o->sample_rng), .min = INFINITY, .max = -INFINITY,
    };
    pthread_mutex_init(&r.mu, NULL);
    qs_threadpool_for(tp, qs_threadpool_size(tp), r.nchunks, OBS_PAR_CHUNKS, sample_chunks, &r);
    pthread_mutex_destroy(&r.mu);
    if (r.count) {
        add_stats(o, r.min, r.max, r.count, r.zeros);
        o->binned += r.count;
    }
    for (int64_t c = 0; c < r.nchunks; c++) {   /* the tails the old bins did not reach */
        if (r.defer[c] != OBS_DEFER_OUTSIDE)
            continue;
        const float *p = x + c * OBS_CHUNK;
        for (int64_t i = 0; i < chunk_len(n, c); i++)
            if (p[i] < r.omin || p[i] > r.omax)
                o->bins[bin_index(o, p[i])]++;
    }
    for (int64_t c = 0; c < r.nchunks; c++)
        if (r.defer[c] == OBS_DEFER_NONFINITE)
            add_exact(o, x + c * OBS_CHUNK, chunk_len(n, c));
}

/* Min, max, the count and NaN/Inf are always exact. The bins and the zeros take every value until
 * the observer has binned OBS_EXACT of them; after that a large batch is sampled, chunk by chunk
 * (scan, then bin, while the chunk is in the cache): its tails every value, the rest one block of
 * OBS_BLOCK values in every OBS_STRIDE at a random place (so no stride can alias with the
 * tensor's layout), counted OBS_STRIDE times. Every bin's expected count (and the zeros') is then
 * what binning every value gives, and the tails, where the MSE search's clipping costs come from,
 * are exact. A chunk holding NaN/Inf is binned whole (they are counted and skipped). The result
 * does not depend on the pool (see add_sampled). */
void qs_observer_add_threads(qs_observer *o, const float *x, int64_t n, qs_threadpool *tp)
{
    if (o->binned < OBS_EXACT || n < 4 * OBS_BINS || !o->have_bins || !(1.0 / o->w < FLT_MAX / 4)) {
        add_exact(o, x, n);
        return;
    }
    for (int64_t at = 0; at < n; at += OBS_ROUND * OBS_CHUNK)
        add_sampled(o, x + at, n - at < OBS_ROUND * OBS_CHUNK ? n - at : OBS_ROUND * OBS_CHUNK, tp);
}

void qs_observer_add(qs_observer *o, const float *x, int64_t n) { qs_observer_add_threads(o, x, n, NULL); }

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
                                                   : (int64_t)(next_random(&o->rng) % (uint64_t)(o->rows_seen + 1));
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

/* The number of finite values the histogram stands for: the zeros plus the (weighted) bins. Equal
 * to the count when no batch was sampled, close to it otherwise. */
static double hist_mass(const qs_observer *o)
{
    double m = (double)o->zeros;
    for (int i = 0; i < OBS_BINS && o->have_bins; i++)
        m += (double)o->bins[i];
    return m;
}

/* ---- merging observers (calibration shards) ---------------------------------------------- */

/* Adds n values spread uniformly over [a, b] (a point mass when b ≤ a) to o's bins, split by the
 * overlap with each bin, rounded so that the parts add up to n exactly. */
static void spread(qs_observer *o, double a, double b, uint64_t n)
{
    if (!(b > a)) {
        o->bins[bin_index(o, a)] += n;
        return;
    }
    int64_t j0 = bin_index(o, a), j1 = bin_index(o, b);
    uint64_t given = 0;
    for (int64_t j = j0; j <= j1; j++) {
        double hi = j == j1 ? b : fmin(b, o->lo + (j + 1) * o->w);
        uint64_t upto = j == j1 ? n : (uint64_t)llround((double)n * (hi - a) / (b - a));
        if (upto > n)
            upto = n;
        if (upto > given) {
            o->bins[j] += upto - given;
            given = upto;
        }
    }
}

typedef struct keyed { double key; int64_t row; } keyed;

static int by_key_desc(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    return x->key < y->key ? 1 : x->key > y->key ? -1 : (x->row > y->row) - (x->row < y->row);
}

int qs_observer_merge(qs_observer *dst, const qs_observer *src)
{
    dst->nonfinite += src->nonfinite;
    if (src->count) {
        dst->min = dst->count ? fminf(dst->min, src->min) : src->min;
        dst->max = dst->count ? fmaxf(dst->max, src->max) : src->max;
        dst->count += src->count;
        dst->zeros += src->zeros;
        dst->binned += src->binned;
        if (src->have_bins && !dst->have_bins) {
            dst->have_bins = 1;
            dst->lo = src->lo;
            dst->w = src->w;
            memcpy(dst->bins, src->bins, sizeof dst->bins);
        } else if (src->have_bins) {
            widen(dst, fmin(0.0, dst->min), fmax(0.0, dst->max));
            for (int i = 0; i < OBS_BINS; i++)
                if (src->bins[i]) {
                    double a, b;
                    bin_extent(src, i, &a, &b);
                    spread(dst, a, b, src->bins[i]);
                }
        }
    }
    if (!dst->rows || !src->rows || src->rows_kept == 0 || src->classes != dst->classes)
        return src->rows && src->rows_kept && !dst->rows ? QS_EINVAL : 0;
    /* the reservoirs: a uniform sample of both streams, each kept row standing for seen/kept rows
     * of its stream (weighted sampling by keys u^(1/weight), the largest kept) */
    int64_t k = dst->classes, nd = dst->rows_kept, ns = src->rows_kept, keep = dst->max_rows;
    if (nd + ns <= keep) {
        memcpy(dst->rows + nd * k, src->rows, (size_t)(ns * k) * sizeof *dst->rows);
        dst->rows_kept = nd + ns;
        dst->rows_seen += src->rows_seen;
        return 0;
    }
    keyed *key = malloc((size_t)(nd + ns) * sizeof *key);
    float *rows = malloc((size_t)(keep * k) * sizeof *rows);
    if (!key || !rows) {
        free(key);
        free(rows);
        return QS_ENOMEM;
    }
    double wd = (double)dst->rows_seen / (double)nd, ws = (double)src->rows_seen / (double)ns;
    for (int64_t r = 0; r < nd + ns; r++) {
        double u = ((double)(next_random(&dst->rng) >> 11) + 0.5) / 9007199254740992.0;
        key[r] = (keyed){ log(u) / (r < nd ? wd : ws), r };   /* log of u^(1/w): larger is kept */
    }
    qsort(key, (size_t)(nd + ns), sizeof *key, by_key_desc);
    for (int64_t slot = 0; slot < keep; slot++) {
        int64_t r = key[slot].row;
        memcpy(rows + slot * k, r < nd ? dst->rows + r * k : src->rows + (r - nd) * k, (size_t)k * sizeof *rows);
    }
    memcpy(dst->rows, rows, (size_t)(keep * k) * sizeof *rows);
    dst->rows_kept = keep;
    dst->rows_seen += src->rows_seen;
    free(key);
    free(rows);
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
