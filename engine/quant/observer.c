/* The observer of range setting (paper §3.1; the searches and cost functions are in range.c).
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
#include "quant/observer_impl.h"

#include "ops/kernels.h"   /* QS_HOT */
#include "quant/rng.h"

#include <float.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- the observer --------------------------------------------------------------------------- */

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
