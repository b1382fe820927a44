/* Range setting (paper §3.1): min-max and MSE for weights against hand values and a brute-force
 * search done here, the streaming observer (batching, re-binning, bounded memory, NaN/Inf),
 * percentile on known data, cross-entropy on logits, BN-based ranges by hand. */
#include <malloc.h>

#include "tests/harness.h"
#include "engine/quant/range.h"

/* deterministic test data: a 64-bit LCG and Box-Muller */
static uint64_t rng_state = 12345;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand())) * cos(2 * M_PI * urand())); }

static qs_tensor *vec(int64_t n)
{
    return qs_tensor_new(QS_F32, 1, &n);
}

/* SSE of a per-tensor choice, through the quantizer's own reference */
static double sse_of(const qs_tensor *w, float s, float z, qs_grid g)
{
    return qs_quant_sse(qs_f32(w), qs_numel(w), s, z, g);
}

TEST(method_names)
{
    qs_range_method m;
    ASSERT_EQ(qs_range_method_parse("mse", &m), 0);
    ASSERT_EQ(m, QS_RANGE_MSE);
    ASSERT_EQ(qs_range_method_parse("minmax", &m), 0);
    ASSERT_EQ(m, QS_RANGE_MINMAX);
    ASSERT_EQ(qs_range_method_parse("percentile", &m), 0);
    ASSERT_EQ(m, QS_RANGE_PERCENTILE);
    ASSERT_EQ(qs_range_method_parse("ce", &m), 0);
    ASSERT_EQ(m, QS_RANGE_CE);
    ASSERT_EQ(qs_range_method_parse("bn", &m), 0);
    ASSERT_EQ(m, QS_RANGE_BN);
    ASSERT_EQ(qs_range_method_parse("kl", &m), QS_EINVAL);
    ASSERT_STR_EQ(qs_range_method_name(QS_RANGE_PERCENTILE), "percentile");
}

TEST(minmax_weights_by_hand)
{
    qs_tensor *w = vec(4);
    float v[] = { -1.f, 0.5f, 2.f, -3.f };
    memcpy(w->data, v, sizeof v);
    float s, z;
    qs_err e = {0};
    /* symmetric int8: s = 3/127, z = 0 */
    ASSERT_EQ(qs_range_weights(w, -1, qs_grid_make(8, 1), 1, 0, QS_RANGE_MINMAX, &s, &z, &e), 0);
    ASSERT_CLOSE(s, 3.0 / 127, 1e-6, 0);
    ASSERT_EQ(z, 0);
    /* asymmetric uint8 over [-3, 2]: s = 5/255, z = round(3/s) = 153 */
    ASSERT_EQ(qs_range_weights(w, -1, qs_grid_make(8, 0), 0, 0, QS_RANGE_MINMAX, &s, &z, &e), 0);
    ASSERT_CLOSE(s, 5.0 / 255, 1e-6, 0);
    ASSERT_EQ(z, 153);
    qs_tensor_free(w);
}

TEST(per_channel_axes)
{
    /* x[a][b][c] = (a+1)·(b+2)·(c − 1.5)·(c == 3 ? 3 : 1): each axis sees different channel ranges */
    int64_t shape[] = { 2, 3, 4 };
    qs_tensor *w = qs_tensor_new(QS_F32, 3, shape);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 4; c++)
                qs_f32(w)[(a * 3 + b) * 4 + c] = (a + 1) * (b + 2) * (c - 1.5f) * (c == 3 ? 3 : 1);
    qs_grid gs = qs_grid_make(8, 1), gu = qs_grid_make(8, 0);
    qs_err e = {0};
    for (int axis = 0; axis < 3; axis++) {
        float s[4], z[4], su[4], zu[4];
        ASSERT_EQ(qs_range_weights(w, axis, gs, 1, 0, QS_RANGE_MINMAX, s, z, &e), 0);
        ASSERT_EQ(qs_range_weights(w, axis, gu, 0, 0, QS_RANGE_MINMAX, su, zu, &e), 0);
        for (int ch = 0; ch < shape[axis]; ch++) {
            float lo = 0, hi = 0;
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 3; b++)
                    for (int c = 0; c < 4; c++) {
                        int idx[3] = { a, b, c };
                        if (idx[axis] != ch)
                            continue;
                        float x = qs_f32(w)[(a * 3 + b) * 4 + c];
                        lo = fminf(lo, x);
                        hi = fmaxf(hi, x);
                    }
            ASSERT_CLOSE(s[ch], fmaxf(-lo, hi) / 127, 1e-6, 0);
            ASSERT_EQ(z[ch], 0);
            ASSERT_CLOSE(su[ch], (hi - lo) / 255, 1e-6, 0);
            ASSERT_EQ(zu[ch], nearbyintf(-lo / ((hi - lo) / 255)));
        }
    }
    /* axis 1, channel 2 by hand: values (a+1)·4·(c − 1.5)·…, max |x| = 2·4·1.5·3 = 36 */
    float s[3], z[3];
    ASSERT_EQ(qs_range_weights(w, 1, gs, 1, 0, QS_RANGE_MINMAX, s, z, &e), 0);
    ASSERT_CLOSE(s[2], 36.0 / 127, 1e-6, 0);
    ASSERT_CLOSE(s[0], 18.0 / 127, 1e-6, 0);
    /* per-channel MSE on a channel with an outlier only affects that channel */
    qs_f32(w)[1 * 4 + 0] = 500.f;   /* a=0, b=1, c=0 */
    float sm[3], zm[3];
    ASSERT_EQ(qs_range_weights(w, 1, gs, 1, 0, QS_RANGE_MINMAX, sm, zm, &e), 0);
    ASSERT_CLOSE(sm[1], 500.0 / 127, 1e-6, 0);
    ASSERT_CLOSE(sm[0], s[0], 1e-7, 0);
    ASSERT_CLOSE(sm[2], s[2], 1e-7, 0);
    qs_tensor_free(w);
}

TEST(mse_clips_outlier_and_lowers_sse)
{
    qs_tensor *w = vec(2001);
    for (int i = 0; i < 2000; i++)
        qs_f32(w)[i] = 0.1f * nrand();
    qs_f32(w)[2000] = 3.f;   /* 30 sigma */
    qs_err e = {0};
    for (int sym = 0; sym <= 1; sym++) {
        qs_grid g = qs_grid_make(8, sym);
        float smm, zmm, sm, zm;
        ASSERT_EQ(qs_range_weights(w, -1, g, sym, 0, QS_RANGE_MINMAX, &smm, &zmm, &e), 0);
        ASSERT_EQ(qs_range_weights(w, -1, g, sym, 0, QS_RANGE_MSE, &sm, &zm, &e), 0);
        float lo, hi;
        qs_qparams_range(g, sm, zm, &lo, &hi);
        ASSERT(hi < 3.f);            /* clipped below the outlier */
        ASSERT(hi > 0.3f);           /* but not into the bulk */
        double sse_mm = sse_of(w, smm, zmm, g), sse_mse = sse_of(w, sm, zm, g);
        ASSERT(sse_mse < sse_mm);
    }
    qs_tensor_free(w);
}

TEST(mse_near_brute_force)
{
    qs_tensor *w = vec(3000);
    for (int i = 0; i < 3000; i++) {
        float x = nrand();
        qs_f32(w)[i] = i % 3 ? x : x * fabsf(x) * 0.7f + 0.4f;   /* heavy tail, skew */
    }
    float lo = 0, hi = 0;
    for (int i = 0; i < 3000; i++) {
        lo = fminf(lo, qs_f32(w)[i]);
        hi = fmaxf(hi, qs_f32(w)[i]);
    }
    qs_err e = {0};
    for (int bits = 3; bits <= 8; bits += 5) {
        /* symmetric: fine search over c in [0.2·max, max], 9901 steps (includes the 100 coarse ones) */
        qs_grid g = qs_grid_make(bits, 1);
        float s, z;
        ASSERT_EQ(qs_range_weights(w, -1, g, 1, 0, QS_RANGE_MSE, &s, &z, &e), 0);
        double mine = sse_of(w, s, z, g), best = INFINITY, m = fmax(-lo, hi);
        for (int k = 0; k <= 9900; k++) {
            double f = 0.2 + 0.8 * k / 9900.0;
            float bs;
            int32_t bz;
            qs_qparams_from_range(g, (float)(-m * f), (float)(m * f), 1, 0, &bs, &bz);
            best = fmin(best, sse_of(w, bs, (float)bz, g));
        }
        ASSERT(mine >= best * (1 - 1e-9));
        ASSERT(mine <= best * 1.02);

        /* asymmetric: 2-D fine search over (lo·a, hi·b) */
        g = qs_grid_make(bits, 0);
        ASSERT_EQ(qs_range_weights(w, -1, g, 0, 0, QS_RANGE_MSE, &s, &z, &e), 0);
        mine = sse_of(w, s, z, g);
        best = INFINITY;
        double joint = INFINITY;
        for (int i = 0; i <= 200; i++)
            for (int j = 0; j <= 200; j++) {
                double fa = 0.2 + 0.8 * i / 200.0, fb = 0.2 + 0.8 * j / 200.0;
                float bs;
                int32_t bz;
                qs_qparams_from_range(g, (float)(lo * fa), (float)(hi * fb), 0, 0, &bs, &bz);
                double v = sse_of(w, bs, (float)bz, g);
                best = fmin(best, v);
                if (i == j)
                    joint = fmin(joint, v);
            }
        ASSERT(mine <= best * 1.02);
        ASSERT(mine <= joint * 1.005);   /* refining both ends beats (or equals) shrinking jointly */
    }
    qs_tensor_free(w);
}

/* Feeds n values in nb batches; batch b holds a slice whose spread grows with b, so the
 * histogram has to widen many times when batched. */
static qs_observer *observe(const float *x, int64_t n, int nb)
{
    qs_observer *o = qs_observer_new();
    for (int b = 0; b < nb; b++) {
        int64_t s = n * b / nb, t = n * (b + 1) / nb;
        qs_observer_add(o, x + s, t - s);
    }
    return o;
}

static float *growing_data(int64_t n)
{
    float *x = malloc(n * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        float v = nrand() * (0.05f + 2.f * (float)i / n);   /* spread grows along the array */
        x[i] = i % 4 == 0 ? 0.f : (i % 4 == 1 ? fmaxf(v, 0.f) : v + 0.3f);
    }
    x[n - 1] = 25.f;
    x[n / 2] = -9.f;
    return x;
}

TEST(observer_one_batch_vs_hundred)
{
    int64_t n = 200000;
    float *x = growing_data(n);
    qs_observer *o1 = observe(x, n, 1), *o100 = observe(x, n, 100);
    float lo1, hi1, lo2, hi2;
    qs_observer_minmax(o1, &lo1, &hi1);
    qs_observer_minmax(o100, &lo2, &hi2);
    ASSERT_EQ(lo1, -9.f);
    ASSERT_EQ(hi1, 25.f);
    ASSERT(lo1 == lo2 && hi1 == hi2);
    ASSERT_EQ(qs_observer_count(o1), n);
    ASSERT_EQ(qs_observer_count(o100), n);
    qs_err e = {0};
    int64_t shape = n;
    qs_tensor *t = qs_tensor_wrap(QS_F32, 1, &shape, x);
    for (int sym = 0; sym <= 1; sym++) {
        qs_grid g = qs_grid_make(8, sym);
        float s1, z1, s2, z2, sw, zw;
        ASSERT_EQ(qs_observer_qparams(o1, g, sym, 0, QS_RANGE_MSE, 0, &s1, &z1, &e), 0);
        ASSERT_EQ(qs_observer_qparams(o100, g, sym, 0, QS_RANGE_MSE, 0, &s2, &z2, &e), 0);
        /* the error is flat near its minimum, so the scales agree loosely and the errors closely */
        ASSERT_CLOSE(s2, s1, 0.05, 0);
        ASSERT_CLOSE(sse_of(t, s2, z2, g), sse_of(t, s1, z1, g), 0.005, 0);
        /* the histogram's expected error picks (nearly) what the exact SSE picks */
        ASSERT_EQ(qs_range_weights(t, -1, g, sym, 0, QS_RANGE_MSE, &sw, &zw, &e), 0);
        double exact = sse_of(t, sw, zw, g);
        ASSERT(sse_of(t, s1, z1, g) <= exact * 1.005);
        ASSERT(sse_of(t, s2, z2, g) <= exact * 1.01);
        /* min-max is exact either way */
        ASSERT_EQ(qs_observer_qparams(o1, g, sym, 0, QS_RANGE_MINMAX, 0, &s1, &z1, &e), 0);
        ASSERT_EQ(qs_observer_qparams(o100, g, sym, 0, QS_RANGE_MINMAX, 0, &s2, &z2, &e), 0);
        ASSERT(s1 == s2 && z1 == z2);
    }
    /* deterministic: the same stream twice gives bit-identical answers */
    qs_observer *again = observe(x, n, 100);
    float sa, za, sb, zb;
    ASSERT_EQ(qs_observer_qparams(o100, qs_grid_make(8, 0), 0, 0, QS_RANGE_MSE, 0, &sa, &za, &e), 0);
    ASSERT_EQ(qs_observer_qparams(again, qs_grid_make(8, 0), 0, 0, QS_RANGE_MSE, 0, &sb, &zb, &e), 0);
    ASSERT(!memcmp(&sa, &sb, sizeof sa) && za == zb);
    qs_observer_free(again);
    qs_tensor_free(t);
    qs_observer_free(o1);
    qs_observer_free(o100);
    free(x);
}

TEST(observer_mse_uniform_keeps_full_range)
{
    /* For uniform data clipping only hurts: the chosen range is (nearly) the full one. */
    int64_t n = 100000;
    float *x = malloc(n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(2 * urand() - 1);
    qs_observer *o = observe(x, n, 10);
    float s, z;
    qs_err e = {0};
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 1), 1, 0, QS_RANGE_MSE, 0, &s, &z, &e), 0);
    ASSERT(s * 127 > 0.97f);
    qs_observer_free(o);
    free(x);
}

TEST(observer_memory_is_constant)
{
    qs_observer *o = qs_observer_new();
    qs_observer_keep_rows(o, 10, 64);
    float batch[1000];
    for (int i = 0; i < 1000; i++)
        batch[i] = nrand();
    qs_observer_add(o, batch, 1000);
    qs_observer_add_rows(o, batch, 100);
    size_t before = mallinfo2().uordblks;
    for (int b = 1; b <= 2000; b++) {
        for (int i = 0; i < 1000; i++)
            batch[i] = nrand() * b;   /* keeps widening the histogram */
        qs_observer_add(o, batch, 1000);
        qs_observer_add_rows(o, batch, 100);
    }
    ASSERT_EQ(mallinfo2().uordblks, before);
    ASSERT_EQ(qs_observer_count(o), 2001 * 2000);
    qs_observer_free(o);
}

/* Large batches are sampled once an observer has seen enough values; min, max, the count and the
 * zeros stay exact, and the ranges stay those of the whole data: checked against the exact SSE of
 * the data itself and against an observer fed in small batches (which bins every value). */
TEST(observer_sampled_batches_keep_exact_stats)
{
    int64_t n = 6000000;
    float *x = malloc(n * sizeof *x);
    int64_t zeros = 0;
    for (int64_t i = 0; i < n; i++) {
        double u = urand();
        x[i] = u < 0.4 ? 0.f : (float)(fabs(nrand()) * (u < 0.99 ? 1.0 : 4.0) - 0.2);   /* a tail */
        zeros += x[i] == 0;
    }
    x[n - 3] = 40.f;          /* the extremes sit where a sample would almost surely miss them */
    x[n / 2 + 7] = -7.f;
    qs_observer *big = qs_observer_new(), *small = qs_observer_new();
    for (int64_t at = 0; at < n; at += 400000)
        qs_observer_add(big, x + at, n - at < 400000 ? n - at : 400000);
    for (int64_t at = 0; at < n; at += 8000)
        qs_observer_add(small, x + at, n - at < 8000 ? n - at : 8000);
    float lo, hi;
    qs_observer_minmax(big, &lo, &hi);
    ASSERT_EQ(lo, -7.f);
    ASSERT_EQ(hi, 40.f);
    ASSERT_EQ(qs_observer_count(big), n);
    qs_err e = {0};
    int64_t shape = n;
    qs_tensor *t = qs_tensor_wrap(QS_F32, 1, &shape, x);
    for (int sym = 0; sym <= 1; sym++) {
        qs_grid g = qs_grid_make(8, sym);
        float sb, zb, ss, zs;
        ASSERT_EQ(qs_observer_qparams(big, g, sym, 0, QS_RANGE_MSE, 0, &sb, &zb, &e), 0);
        ASSERT_EQ(qs_observer_qparams(small, g, sym, 0, QS_RANGE_MSE, 0, &ss, &zs, &e), 0);
        double err_big = sse_of(t, sb, zb, g), err_small = sse_of(t, ss, zs, g);
        ASSERT(err_big <= err_small * 1.005);
        if (sym) {   /* the exact optimum over the data itself */
            float sw, zw;
            ASSERT_EQ(qs_range_weights(t, -1, g, 1, 0, QS_RANGE_MSE, &sw, &zw, &e), 0);
            ASSERT(err_big <= sse_of(t, sw, zw, g) * 1.01);
        }
        /* min-max is exact */
        ASSERT_EQ(qs_observer_qparams(big, g, sym, 0, QS_RANGE_MINMAX, 0, &sb, &zb, &e), 0);
        ASSERT_EQ(qs_observer_qparams(small, g, sym, 0, QS_RANGE_MINMAX, 0, &ss, &zs, &e), 0);
        ASSERT(sb == ss && zb == zs);
    }
    /* percentiles: the fraction of the data at or below the answer */
    double pcts[] = { 50, 99, 99.9 };
    for (int k = 0; k < 3; k++) {
        float s, z;
        ASSERT_EQ(qs_observer_qparams(big, qs_grid_make(16, 0), 0, 0, QS_RANGE_PERCENTILE, pcts[k], &s, &z, &e), 0);
        qs_qparams_range(qs_grid_make(16, 0), s, z, &lo, &hi);
        int64_t below = 0;
        for (int64_t i = 0; i < n; i++)
            below += x[i] <= hi;
        ASSERT_CLOSE((double)below / n, pcts[k] / 100, 0, pcts[k] > 99 ? 0.0002 : 0.002);
    }
    qs_tensor_free(t);
    qs_observer_free(big);
    qs_observer_free(small);
    free(x);
}

/* A large batch's scan spread over threads gives bit-identical answers for every thread count:
 * batches that widen the range (values beyond the bins so far, binned once the bins have grown)
 * and a batch holding NaN/Inf included. Min, max, the counts and the MSE ranges are checked
 * against the data itself. */
TEST(observer_threads_do_not_change_result)
{
    int64_t n = 3000000, batch = 600000;
    float *x = growing_data(n);
    x[n - batch / 2] = NAN;          /* in the last batch, which is sampled */
    x[n - batch / 2 + 1] = INFINITY;
    x[n - 7] = -INFINITY;
    int threads[] = { 1, 2, 3, 7 };
    float ref[2][2];
    for (int k = 0; k < 4; k++) {
        qs_observer *o = qs_observer_new();
        qs_threadpool *tp = threads[k] > 1 ? qs_threadpool_new(threads[k], 0, NULL) : NULL;
        for (int64_t at = 0; at < n; at += batch)
            qs_observer_add_threads(o, x + at, batch, tp);
        qs_threadpool_free(tp);
        float lo, hi;
        qs_observer_minmax(o, &lo, &hi);
        ASSERT_EQ(lo, -9.f);
        ASSERT_EQ(hi, 25.f);
        ASSERT_EQ(qs_observer_count(o), n - 3);
        ASSERT_EQ(qs_observer_nonfinite(o), 3);
        qs_err e = {0};
        for (int sym = 0; sym <= 1; sym++) {
            float s, z;
            ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, sym), sym, 0, QS_RANGE_MSE, 0, &s, &z, &e), 0);
            if (k == 0)
                ref[sym][0] = s, ref[sym][1] = z;
            ASSERT(!memcmp(&s, &ref[sym][0], sizeof s) && z == ref[sym][1]);
        }
        qs_observer_free(o);
    }
    /* the answer itself: its true error against the exact optimum's, over the finite values */
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i]))
            x[m++] = x[i];
    qs_tensor *t = qs_tensor_wrap(QS_F32, 1, &m, x);
    for (int sym = 0; sym <= 1; sym++) {
        qs_grid g = qs_grid_make(8, sym);
        float sw, zw;
        qs_err e = {0};
        ASSERT_EQ(qs_range_weights(t, -1, g, sym, 0, QS_RANGE_MSE, &sw, &zw, &e), 0);
        ASSERT(sse_of(t, ref[sym][0], ref[sym][1], g) <= sse_of(t, sw, zw, g) * 1.01);
    }
    qs_tensor_free(t);
    free(x);
}

/* Calibration shards: observers that each saw part of the data, merged, give what one observer
 * that saw it all gives: exact counts and extremes, MSE ranges whose true error is as low, the
 * same percentiles to within a bin, and a cross-entropy reservoir drawn from both streams. */
TEST(observer_merge_matches_one_observer)
{
    int64_t n = 400000;
    float *x = malloc(n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = i % 3 == 0 ? 0.f : (float)(nrand() * (i < n / 2 ? 1.0 : 1.7) + 0.2);   /* halves differ */
    x[10] = -20.f;   /* each extreme in one half only */
    x[n - 10] = 30.f;
    qs_observer *all = observe(x, n, 50), *a = observe(x, n / 2, 25), *b = observe(x + n / 2, n - n / 2, 25);
    qs_observer *empty = qs_observer_new();
    ASSERT_EQ(qs_observer_merge(a, b), 0);
    ASSERT_EQ(qs_observer_merge(empty, a), 0);   /* into a fresh observer: a copy */
    float l0, h0, l1, h1;
    qs_observer_minmax(all, &l0, &h0);
    qs_observer_minmax(a, &l1, &h1);
    ASSERT(l0 == l1 && h0 == h1 && l1 == -20.f && h1 == 30.f);
    ASSERT_EQ(qs_observer_count(a), n);
    qs_err e = {0};
    int64_t shape = n;
    qs_tensor *t = qs_tensor_wrap(QS_F32, 1, &shape, x);
    for (int sym = 0; sym <= 1; sym++) {
        qs_grid g = qs_grid_make(8, sym);
        float s0, z0, s1, z1, s2, z2;
        ASSERT_EQ(qs_observer_qparams(all, g, sym, 0, QS_RANGE_MSE, 0, &s0, &z0, &e), 0);
        ASSERT_EQ(qs_observer_qparams(a, g, sym, 0, QS_RANGE_MSE, 0, &s1, &z1, &e), 0);
        ASSERT_EQ(qs_observer_qparams(empty, g, sym, 0, QS_RANGE_MSE, 0, &s2, &z2, &e), 0);
        ASSERT(sse_of(t, s1, z1, g) <= sse_of(t, s0, z0, g) * 1.005);
        ASSERT(!memcmp(&s1, &s2, sizeof s1) && z1 == z2);
        ASSERT_EQ(qs_observer_qparams(all, g, sym, 0, QS_RANGE_PERCENTILE, 99.5, &s0, &z0, &e), 0);
        ASSERT_EQ(qs_observer_qparams(a, g, sym, 0, QS_RANGE_PERCENTILE, 99.5, &s1, &z1, &e), 0);
        ASSERT_CLOSE(s1, s0, 0.01, 0);
    }
    qs_tensor_free(t);
    /* reservoirs: rows of 4 logits, the first stream's rows all 1s, the second's all 2s; the merged
     * reservoir (8 rows) must hold rows of both */
    qs_observer *ra = qs_observer_new(), *rb = qs_observer_new();
    qs_observer_keep_rows(ra, 4, 8);
    qs_observer_keep_rows(rb, 4, 8);
    float ones[400], twos[400];
    for (int i = 0; i < 400; i++)
        ones[i] = 1.f, twos[i] = 2.f + (i % 4);
    qs_observer_add_rows(ra, ones, 100);
    qs_observer_add_rows(rb, twos, 100);
    ASSERT_EQ(qs_observer_merge(ra, rb), 0);
    ASSERT_EQ(qs_observer_count(ra), 800);
    float sc, zp;
    ASSERT_EQ(qs_observer_qparams(ra, qs_grid_make(8, 0), 0, 0, QS_RANGE_CE, 0, &sc, &zp, &e), 0);
    qs_observer *plain = qs_observer_new();   /* kept no rows: merging rows into it is refused */
    ASSERT_EQ(qs_observer_merge(plain, rb), QS_EINVAL);
    qs_observer_free(plain);
    qs_observer_free(ra);
    qs_observer_free(rb);
    qs_observer_free(all);
    qs_observer_free(a);
    qs_observer_free(b);
    qs_observer_free(empty);
    free(x);
}

/* The sample must not alias with the layout: here every 16th run of 16 values is large, a period
 * that divides the sampling groups (of 256 or 512 values), so a sample taken at a fixed place in
 * each group would see either all of them or none. */
TEST(observer_sample_does_not_alias)
{
    int64_t n = 4000000;
    float *x = malloc(n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((i / 16) % 16 == 5 ? 10 + urand() : urand());   /* 1/16 of the values in [10, 11) */
    qs_observer *o = qs_observer_new();
    for (int64_t at = 0; at < n; at += 500000)
        qs_observer_add(o, x + at, 500000);
    qs_err e = {0};
    float s, z, lo, hi;
    /* 15/16 of the data lies in [0, 1), 1/16 in [10, 11): the 92nd percentile is 0.92·16/15,
     * the 96th 10 + (0.96 − 15/16)·16 */
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(16, 0), 0, 0, QS_RANGE_PERCENTILE, 92, &s, &z, &e), 0);
    qs_qparams_range(qs_grid_make(16, 0), s, z, &lo, &hi);
    ASSERT_CLOSE(hi, 0.92 * 16 / 15, 0, 0.01);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(16, 0), 0, 0, QS_RANGE_PERCENTILE, 96, &s, &z, &e), 0);
    qs_qparams_range(qs_grid_make(16, 0), s, z, &lo, &hi);
    ASSERT_CLOSE(hi, 10 + (0.96 - 15.0 / 16) * 16, 0, 0.02);
    qs_observer_free(o);
    free(x);
}

TEST(percentile_known_data)
{
    qs_err e = {0};
    /* 0, 1, …, 9999: the 99th percentile is 9899 to within a bin (9999/2048) */
    float *x = malloc(10000 * sizeof *x);
    for (int i = 0; i < 10000; i++)
        x[i] = (float)i;
    qs_observer *o = observe(x, 10000, 7);
    float s, z, lo, hi;
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, QS_RANGE_PERCENTILE, 99, &s, &z, &e), 0);
    qs_qparams_range(qs_grid_make(8, 0), s, z, &lo, &hi);
    ASSERT_EQ(z, 0);
    ASSERT_CLOSE(hi, 9899, 0, 10);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, QS_RANGE_PERCENTILE, 100, &s, &z, &e), 0);
    ASSERT_CLOSE(s, 9999.0 / 255, 1e-6, 0);
    qs_observer_free(o);
    /* -5000 … 4999, symmetric: the range is max(|p0.5|, p99.5) ≈ 4950 */
    for (int i = 0; i < 10000; i++)
        x[i] = (float)(i - 5000);
    o = observe(x, 10000, 3);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 1), 1, 0, QS_RANGE_PERCENTILE, 99.5, &s, &z, &e), 0);
    ASSERT_CLOSE(s * 127, 4950, 0, 10);
    qs_observer_free(o);
    /* half exact zeros, half uniform on (0, 1]: the 75th percentile is 0.5, the 40th is 0 */
    for (int i = 0; i < 10000; i++)
        x[i] = i % 2 ? (float)urand() : 0.f;
    o = observe(x, 10000, 5);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, QS_RANGE_PERCENTILE, 75, &s, &z, &e), 0);
    ASSERT_CLOSE(s * 255, 0.5, 0, 0.02);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, QS_RANGE_PERCENTILE, 40, &s, &z, &e),
              QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "percentile");
    qs_observer_free(o);
    free(x);
}

TEST(cross_entropy_covers_large_logits)
{
    /* 1000 classes; each row has one confident logit in [8, 12], the rest N(0, 1). At 4 bits the
     * MSE range clips the rare large logits (0.1% of the values); the CE range must keep them. */
    enum { C = 1000, R = 300 };
    float *x = malloc(C * R * sizeof *x);
    float big = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float v = c == r % C ? 8.f + 4.f * (float)urand() : nrand();
            x[r * C + c] = v;
            if (c == r % C)
                big = fmaxf(big, v);
        }
    qs_observer *o = qs_observer_new();
    qs_observer_keep_rows(o, C, 128);   /* fewer than R: the reservoir really samples */
    for (int b = 0; b < R / 30; b++)
        qs_observer_add_rows(o, x + b * 30 * C, 30);
    ASSERT_EQ(qs_observer_count(o), C * R);
    qs_grid g = qs_grid_make(4, 1);
    qs_err e = {0};
    float sce, zce, smse, zmse, lo, hi_ce, hi_mse;
    ASSERT_EQ(qs_observer_qparams(o, g, 0, 0, QS_RANGE_CE, 0, &sce, &zce, &e), 0);
    ASSERT_EQ(qs_observer_qparams(o, g, 0, 0, QS_RANGE_MSE, 0, &smse, &zmse, &e), 0);
    qs_qparams_range(g, sce, zce, &lo, &hi_ce);
    qs_qparams_range(g, smse, zmse, &lo, &hi_mse);
    ASSERT(hi_mse < 0.7f * big);
    ASSERT(hi_ce > 0.9f * big);
    /* an observer without rows refuses CE with a clear message */
    qs_observer *plain = observe(x, C * R, 3);
    ASSERT_EQ(qs_observer_qparams(plain, g, 0, 0, QS_RANGE_CE, 0, &sce, &zce, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "keep_rows");
    qs_observer_free(plain);
    qs_observer_free(o);
    free(x);
}

TEST(nonfinite_counted_never_binned)
{
    float x[] = { 1.f, NAN, INFINITY, -INFINITY, 2.f, 0.f };
    qs_observer *o = qs_observer_new();
    qs_observer_add(o, x, 6);
    qs_observer_add(o, x, 3);
    ASSERT_EQ(qs_observer_nonfinite(o), 5);
    ASSERT_EQ(qs_observer_count(o), 4);
    float lo, hi, s, z;
    qs_observer_minmax(o, &lo, &hi);
    ASSERT_EQ(lo, 0.f);
    ASSERT_EQ(hi, 2.f);
    qs_err e = {0};
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, QS_RANGE_MSE, 0, &s, &z, &e), 0);
    ASSERT(isfinite(s) && s > 0 && s <= 2.f / 255 * 1.0001f);
    qs_observer_free(o);
    /* nothing finite: a clear error */
    o = qs_observer_new();
    qs_observer_add(o, x + 1, 3);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, QS_RANGE_MINMAX, 0, &s, &z, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "NaN");
    qs_observer_free(o);
    /* NaN in weights: refused, naming it */
    qs_tensor *w = vec(3);
    qs_f32(w)[1] = NAN;
    ASSERT_EQ(qs_range_weights(w, -1, qs_grid_make(8, 1), 1, 0, QS_RANGE_MSE, &s, &z, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "NaN");
    qs_tensor_free(w);
}

TEST(degenerate_data)
{
    /* only zeros: a valid grid (s = 1) rather than a division by zero */
    float zeros[16] = {0};
    qs_observer *o = qs_observer_new();
    qs_observer_add(o, zeros, 16);
    float s, z;
    qs_err e = {0};
    for (int m = QS_RANGE_MINMAX; m <= QS_RANGE_PERCENTILE; m++) {
        ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, m, 99, &s, &z, &e), 0);
        ASSERT_EQ(s, 1);
        ASSERT_EQ(z, 0);
    }
    /* zeros first, then data: the zeros stay counted and the range follows the data */
    float later[] = { -0.5f, 1.5f };
    qs_observer_add(o, later, 2);
    ASSERT_EQ(qs_observer_count(o), 18);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 0), 0, 0, QS_RANGE_MINMAX, 0, &s, &z, &e), 0);
    ASSERT_CLOSE(s, 2.0 / 255, 1e-6, 0);
    qs_observer_free(o);
    /* a constant weight channel */
    qs_tensor *w = vec(5);
    for (int i = 0; i < 5; i++)
        qs_f32(w)[i] = 0.25f;
    ASSERT_EQ(qs_range_weights(w, -1, qs_grid_make(8, 1), 1, 0, QS_RANGE_MSE, &s, &z, &e), 0);
    ASSERT(sse_of(w, s, z, qs_grid_make(8, 1)) < 1e-12);
    qs_tensor_free(w);
}

TEST(bad_arguments)
{
    qs_err e = {0};
    float s[4], z[4];
    int64_t shape[] = { 2, 2 };
    qs_tensor *w = qs_tensor_new(QS_F32, 2, shape), *wi = qs_tensor_new(QS_I64, 2, shape);
    ASSERT_EQ(qs_range_weights(w, 2, qs_grid_make(8, 1), 1, 0, QS_RANGE_MINMAX, s, z, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "axis 2");
    ASSERT_EQ(qs_range_weights(w, 0, qs_grid_make(8, 1), 1, 0, QS_RANGE_PERCENTILE, s, z, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "percentile");
    ASSERT_EQ(qs_range_weights(wi, 0, qs_grid_make(8, 1), 1, 0, QS_RANGE_MINMAX, s, z, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "int64");
    qs_observer *o = qs_observer_new();
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 1), 1, 0, QS_RANGE_MSE, 0, s, z, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "no data");
    float one = 1.f;
    qs_observer_add(o, &one, 1);
    ASSERT_EQ(qs_observer_qparams(o, qs_grid_make(8, 1), 1, 0, QS_RANGE_BN, 0, s, z, &e), QS_EINVAL);
    qs_observer_free(o);
    qs_tensor_free(w);
    qs_tensor_free(wi);
}

TEST(bn_range_by_hand)
{
    float beta[] = { 0.5f, -1.f, 2.f }, gamma[] = { 1.f, -0.5f, 0.25f };
    float lo, hi;
    /* n = 3: channel ranges [-2.5, 3.5], [-2.5, 0.5], [1.25, 2.75] */
    qs_range_bn(beta, gamma, 3, 3.f, 0, &lo, &hi);
    ASSERT_CLOSE(lo, -2.5, 1e-6, 0);
    ASSERT_CLOSE(hi, 3.5, 1e-6, 0);
    qs_range_bn(beta, gamma, 3, 3.f, 1, &lo, &hi);
    ASSERT_EQ(lo, 0.f);
    ASSERT_CLOSE(hi, 3.5, 1e-6, 0);
    qs_range_bn(beta, gamma, 3, 1.f, 0, &lo, &hi);   /* [-0.5, 1.5], [-1.5, -0.5], [1.75, 2.25] */
    ASSERT_CLOSE(lo, -1.5, 1e-6, 0);
    ASSERT_CLOSE(hi, 2.25, 1e-6, 0);
}

TEST_MAIN(method_names, observer_threads_do_not_change_result, minmax_weights_by_hand, per_channel_axes, mse_clips_outlier_and_lowers_sse,
          mse_near_brute_force, observer_one_batch_vs_hundred, observer_mse_uniform_keeps_full_range,
          observer_memory_is_constant, observer_sampled_batches_keep_exact_stats, observer_merge_matches_one_observer,
          observer_sample_does_not_alias,
          percentile_known_data, cross_entropy_covers_large_logits,
          nonfinite_counted_never_binned, degenerate_data, bad_arguments, bn_range_by_hand)
