/* The observer's internals, shared by observer.c (which fills it) and range.c (whose percentile,
 * MSE and cross-entropy searches read its histogram and reservoir). Not a public header. */
#ifndef QS_QUANT_OBSERVER_IMPL_H
#define QS_QUANT_OBSERVER_IMPL_H

#include <math.h>
#include <stdint.h>

#include "quant/range.h"

#define OBS_BINS 2048
#define OBS_EXACT (1 << 18)   /* values binned one by one before large batches are sampled */
#define OBS_STRIDE 32         /* then one block of OBS_BLOCK values in every OBS_STRIDE is binned, */
#define OBS_BLOCK 16
#define OBS_TAIL 1024         /* except the tails (1/OBS_TAIL of the values each side): all binned */
#define OBS_CHUNK 8192        /* values scanned then binned while in the cache */

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

/* Bin i's extent, clipped to the exact data range. */
static inline void bin_extent(const qs_observer *o, int i, double *a, double *b)
{
    *a = fmax(o->lo + i * o->w, o->min);
    *b = fmin(o->lo + (i + 1) * o->w, o->max);
    if (*b < *a)
        *b = *a;
}

/* The number of finite values the histogram stands for: the zeros plus the (weighted) bins. Equal
 * to the count when no batch was sampled, close to it otherwise. */
static inline double hist_mass(const qs_observer *o)
{
    double m = (double)o->zeros;
    for (int i = 0; i < OBS_BINS && o->have_bins; i++)
        m += (double)o->bins[i];
    return m;
}

#endif
