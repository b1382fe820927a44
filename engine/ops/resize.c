/* Resize (opsets 10–19) and Upsample (7, 9; deprecated), float32, forward and backward.
 *
 * Resize is separable: output element (o_0, …, o_{r−1}) = Σ Π_a w_a(o_a, t_a) · X[i_a(o_a, t_a) …]
 * over the taps t_a of each axis. So each call first builds, per axis and per output coordinate,
 * its taps (input index, weight) from the mode, the coordinate transformation and the axis's
 * scale, into scratch; the inner loops only gather and multiply. Per axis a, with L_in, L_out
 * and scale s (given, or L_out/L_in when sizes are given), the output coordinate x maps to
 *   half_pixel (x + ½)/s − ½;  pytorch_half_pixel the same, or 0 when L_out = 1;
 *   half_pixel_symmetric c·(1 − L_out/(s·L_in)) + (x + ½)/s − ½ with c = L_in/2;
 *   align_corners x·(L_in − 1)/(L_out − 1) (0 when L_out = 1); asymmetric x/s;
 *   tf_half_pixel_for_nn (x + ½)/s;  tf_crop_and_resize from the roi [start, end]:
 *   start·(L_in − 1) + x·(end − start)·(L_in − 1)/(L_out − 1), extrapolation_value outside [0, L_in − 1].
 * nearest rounds that per nearest_mode; linear weighs its two neighbours (1 − r, r), cubic its four
 * with Keys' kernel (cubic_coeff_a); neighbours beyond the edge take the edge value, or, with
 * exclude_outside, weight 0 and the rest are renormalized. antialias (opset 18) widens the linear
 * and cubic kernels by 1/s when downsampling (the taps' weights renormalized to sum 1).
 * Opset 10 and Upsample: asymmetric coordinates; nearest takes floor when upsampling and ceil
 * when downsampling, as ONNX Runtime does for them.
 *
 * Work: the output is split by rows (all dims but the last); a worker caches the input rows it has
 * interpolated along the last axis (see RS_CACHE), and nearest copies a row that repeats the one
 * before. Backward is the adjoint, dX[i] +=
 * w·dY[o]; rows of different input planes (the leading dims the resize leaves alone, N and C in
 * NCHW) never touch the same dX, so the planes are split over threads and the result does not
 * depend on the thread count. */
#include "ops/kernels.h"
#include "ops/opsutil.h"

#include <math.h>
#include <string.h>

enum { NEAREST, LINEAR, CUBIC };
enum { HALF_PIXEL, HALF_PIXEL_SYM, PYTORCH_HALF_PIXEL, ALIGN_CORNERS, ASYMMETRIC, TF_HALF_PIXEL_NN, TF_CROP };
enum { ROUND_PREFER_FLOOR, ROUND_PREFER_CEIL, FLOOR, CEIL, SIMPLE };

typedef struct rs_p {
    int rank;
    int64_t in[QS_MAX_DIMS], out[QS_MAX_DIMS];
    double scale[QS_MAX_DIMS], roi0[QS_MAX_DIMS], roi1[QS_MAX_DIMS];
    int taps[QS_MAX_DIMS];   /* taps per output coordinate, before dropping zero weights */
    int mode, coord, nearest, exclude_outside, antialias;
    double cubic_a;
    float extrapolation;
} rs_p;

static int pick(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

/* a known float input (scales, roi); count, or a negative error */
static int known_floats(qs_kctx *c, int i, const char *what, double *v, int max)
{
    const qs_tensor *t = qs_opt_in(c, i);
    if (!t->data)
        return qs_op_error(c, QS_EUNSUPPORTED, "input %s must be known at plan time (an initializer, a Constant, or "
                           "computed from them), but it is computed at run time", what);
    if (t->dtype != QS_F32 && t->dtype != QS_F64)
        return qs_op_error(c, QS_EINVAL, "input %s must be float, got %s", what, qs_dtype_name(t->dtype));
    int64_t n = qs_numel(t);
    if (t->ndim > 1 || n > max)
        return qs_op_error(c, QS_EINVAL, "input %s must be 1-D with at most %d values", what, max);
    for (int64_t k = 0; k < n; k++)
        v[k] = t->dtype == QS_F32 ? qs_f32(t)[k] : ((const double *)t->data)[k];
    return (int)n;
}

static int present(const qs_kctx *c, int i)
{
    const qs_tensor *t = qs_opt_in(c, i);
    return t && qs_numel(t) > 0;   /* opset 11's empty-tensor scales count as absent */
}

/* the taps per output coordinate of an axis with scale s (before dropping zero weights) */
static int axis_taps(const rs_p *p, double s)
{
    if (p->mode == NEAREST)
        return 1;
    if (!p->antialias || s >= 1)
        return p->mode == LINEAR ? 2 : 4;
    int start = (int)floor((p->mode == LINEAR ? -1 : -2) / s) + 1;
    return 2 - 2 * start;
}

static int rs_params(qs_kctx *c, rs_p *p)
{
    static const char *const modes[] = { "nearest", "linear", "cubic" };
    static const char *const coords[] = { "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                          "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize" };
    static const char *const nmodes[] = { "round_prefer_floor", "round_prefer_ceil", "floor", "ceil" };
    char sx[128];
    int rc, upsample = !strcmp(c->node->op, "Upsample");
    int v10 = upsample || c->opset < 11;   /* Resize-10 and Upsample: X, scales; asymmetric */
    memset(p, 0, sizeof *p);
    if (c->nin < 1 || !c->in[0])
        return qs_op_error(c, QS_EINVAL, "input X is missing");
    const qs_tensor *X = c->in[0];
    if (X->dtype != QS_F32)
        return qs_op_error(c, QS_EUNSUPPORTED, "input X is %s; only float32 is supported", qs_dtype_name(X->dtype));
    if (X->ndim < 1)
        return qs_op_error(c, QS_ESHAPE, "input X is a scalar; expected rank >= 1");
    if (c->nout != 1)
        return qs_op_error(c, QS_EINVAL, "has %d outputs; expected 1", c->nout);
    int r = p->rank = X->ndim;
    qs_shape_str(r, X->shape, sx, sizeof sx);
    const char *m = qs_node_string(c->node, "mode", "nearest");
    if ((p->mode = pick(m, modes, v10 ? 2 : 3)) < 0)
        return qs_op_error(c, QS_EINVAL, "attribute mode = '%s' is not one of nearest, linear%s", m, v10 ? "" : ", cubic");
    const char *cm = v10 ? "asymmetric" : qs_node_string(c->node, "coordinate_transformation_mode", "half_pixel");
    if ((p->coord = pick(cm, coords, 7)) < 0)
        return qs_op_error(c, QS_EINVAL, "attribute coordinate_transformation_mode = '%s' is not one of half_pixel, "
                           "half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric, "
                           "tf_half_pixel_for_nn, tf_crop_and_resize", cm);
    const char *nm = qs_node_string(c->node, "nearest_mode", "round_prefer_floor");
    if (v10)
        p->nearest = SIMPLE;
    else if ((p->nearest = pick(nm, nmodes, 4)) < 0)
        return qs_op_error(c, QS_EINVAL, "attribute nearest_mode = '%s' is not one of round_prefer_floor, "
                           "round_prefer_ceil, floor, ceil", nm);
    p->cubic_a = qs_node_float(c->node, "cubic_coeff_a", -0.75f);
    p->exclude_outside = qs_node_int(c->node, "exclude_outside", 0) != 0;
    p->extrapolation = qs_node_float(c->node, "extrapolation_value", 0.f);
    p->antialias = !v10 && c->opset >= 18 && qs_node_int(c->node, "antialias", 0) != 0;

    /* axes (opset 18): scales, sizes and roi name only these; the others keep scale 1 */
    int axes[QS_MAX_DIMS], na = r;
    for (int a = 0; a < r; a++)
        axes[a] = a;
    const int64_t *av;
    int nav = c->opset >= 18 && !v10 ? qs_node_ints(c->node, "axes", &av) : 0;
    if (nav) {
        if (nav > r)
            return qs_op_error(c, QS_EINVAL, "attribute axes has %d values for X %s", nav, sx);
        na = nav;
        for (int k = 0; k < na; k++) {
            if ((rc = qs_norm_axis(c, av[k], r, "attribute axes value", &axes[k])) < 0)
                return rc;
            for (int j = 0; j < k; j++)
                if (axes[j] == axes[k])
                    return qs_op_error(c, QS_EINVAL, "attribute axes names axis %d twice", axes[k]);
        }
    }
    for (int a = 0; a < r; a++) {
        p->in[a] = p->out[a] = X->shape[a];
        p->scale[a] = 1;
        p->roi0[a] = 0;
        p->roi1[a] = 1;
    }
    double sv[QS_MAX_DIMS];
    int64_t zv[QS_MAX_DIMS];
    int have_scales, have_sizes = 0;
    if (upsample && c->opset < 9) {
        const float *f;
        int n = qs_node_floats(c->node, "scales", &f);
        if (n != r)
            return qs_op_error(c, QS_EINVAL, "attribute scales has %d values; expected %d for X %s", n, r, sx);
        for (int k = 0; k < n; k++)
            sv[k] = f[k];
        have_scales = 1;
    } else if (v10) {
        if (!present(c, 1))
            return qs_op_error(c, QS_EINVAL, "input scales is missing");
        if ((rc = known_floats(c, 1, "scales", sv, QS_MAX_DIMS)) < 0)
            return rc;
        if (rc != r)
            return qs_op_error(c, QS_EINVAL, "input scales has %d values; expected %d for X %s", rc, r, sx);
        have_scales = 1;
    } else {
        have_scales = present(c, 2);
        have_sizes = present(c, 3);
        if (have_scales == have_sizes)
            return qs_op_error(c, QS_EINVAL, "needs exactly one of the inputs scales and sizes (%s)",
                               have_scales ? "both are given" : "neither is given");
        int n = have_scales ? known_floats(c, 2, "scales", sv, QS_MAX_DIMS)
                            : qs_known_ints(c, 3, "sizes", zv, QS_MAX_DIMS);
        if (n < 0)
            return n;
        if (n != na)
            return qs_op_error(c, QS_EINVAL, "input %s has %d values; expected %d (%s)", have_scales ? "scales" : "sizes",
                               n, na, nav ? "one per attribute axes value" : "X's rank");
        if (p->coord == TF_CROP) {
            double roi[2 * QS_MAX_DIMS];
            if (!present(c, 1))
                return qs_op_error(c, QS_EINVAL, "coordinate_transformation_mode tf_crop_and_resize needs input roi");
            if ((n = known_floats(c, 1, "roi", roi, 2 * QS_MAX_DIMS)) < 0)
                return n;
            if (n != 2 * na)
                return qs_op_error(c, QS_EINVAL, "input roi has %d values; expected %d (starts, then ends)", n, 2 * na);
            for (int k = 0; k < na; k++) {
                p->roi0[axes[k]] = roi[k];
                p->roi1[axes[k]] = roi[na + k];
            }
        }
    }
    if (have_scales) {
        for (int k = 0; k < na; k++) {
            int a = axes[k];
            if (!(sv[k] > 0) || isinf(sv[k]))
                return qs_op_error(c, QS_EINVAL, "scale %g for axis %d must be positive", sv[k], a);
            p->scale[a] = sv[k];
            double len = (double)p->in[a] * (p->coord == TF_CROP ? p->roi1[a] - p->roi0[a] : 1) * sv[k];
            if (!(len < 9.2e18))
                return qs_op_error(c, QS_EINVAL, "scale %g for axis %d gives a too large output", sv[k], a);
            p->out[a] = (int64_t)floor(len);
        }
    } else {
        const char *kp = c->opset >= 18 ? qs_node_string(c->node, "keep_aspect_ratio_policy", "stretch") : "stretch";
        int policy = pick(kp, (const char *const[]){ "stretch", "not_larger", "not_smaller" }, 3);
        if (policy < 0)
            return qs_op_error(c, QS_EINVAL, "attribute keep_aspect_ratio_policy = '%s' is not one of stretch, "
                               "not_larger, not_smaller", kp);
        for (int k = 0; k < na; k++)
            if (zv[k] <= 0)
                return qs_op_error(c, QS_EINVAL, "size %lld for axis %d must be positive", (long long)zv[k], axes[k]);
        double keep = policy == 1 ? INFINITY : 0;
        for (int k = 0; k < na; k++) {
            double s = (double)zv[k] / (double)p->in[axes[k]];
            keep = policy == 1 ? fmin(keep, s) : fmax(keep, s);
        }
        for (int k = 0; k < na; k++) {
            int a = axes[k];
            if (policy == 0) {
                p->out[a] = zv[k];
                p->scale[a] = (double)zv[k] / (double)p->in[a];
            } else {
                /* one scale for every listed axis; each size is then rounded from it */
                p->scale[a] = keep;
                p->out[a] = (int64_t)nearbyint(keep * (double)p->in[a]);
            }
        }
    }
    size_t bytes;
    if (qs_shape_bytes(QS_F32, r, p->out, &bytes) < 0 || bytes > qs_max_tensor_bytes()) {
        char so[128];
        return qs_op_error(c, QS_EUNSUPPORTED, "output %s for X %s is over the tensor size limit of %zu bytes "
                           "(max_tensor_size)", qs_shape_str(r, p->out, so, sizeof so), sx, qs_max_tensor_bytes());
    }
    for (int a = 0; a < r; a++) {
        if (p->out[a] <= 0 && p->in[a] > 0)
            return qs_op_error(c, QS_ESHAPE, "output dim %d would be %lld for X %s with scale %g", a,
                               (long long)p->out[a], sx, p->scale[a]);
        if (p->in[a] == 0 && p->out[a] > 0)
            return qs_op_error(c, QS_ESHAPE, "X %s is empty along axis %d but the output is not", sx, a);
        p->taps[a] = axis_taps(p, p->scale[a]);
        if (p->taps[a] > 256)
            return qs_op_error(c, QS_EUNSUPPORTED, "antialias with scale %g on axis %d needs %d taps; at most 256 "
                               "are supported", p->scale[a], a, p->taps[a]);
    }
    return 0;
}

QS_OP_PARAMS(rs, rs_p, rs_params)

static int rs_infer(qs_kctx *c)
{
    rs_p p;
    int rc = rs_params(c, &p);
    if (rc < 0)
        return rc;
    qs_set_shape(c->out[0], QS_F32, p.rank, p.out);
    return 0;
}

/* ---- the per-axis tap tables ------------------------------------------------------------------ */

typedef struct rs_axis {
    int T;                   /* taps per output coordinate (zero weights dropped, padded with w = 0) */
    int identity;            /* out = in and output coordinate x reads input x with weight 1 */
    int64_t *idx;            /* [out·T] input index, then × the axis's input stride */
    float *w;                /* [out·T] */
    unsigned char *outside;  /* [out] tf_crop_and_resize: outside the input */
} rs_axis;

typedef struct rs_tabs {
    rs_axis ax[QS_MAX_DIMS];
    int64_t combos;          /* most (offset, weight) pairs a row can have (product over the leading axes) */
    int64_t W;               /* output length of the last axis */
    char *rows;              /* per worker: combos × (int64 offset + float weight) */
} rs_tabs;

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

static int64_t rs_combos(const rs_p *p)
{
    int64_t k = 1;
    for (int a = 0; a + 1 < p->rank; a++)
        k *= p->taps[a];
    return k;
}

/* Forward keeps the last few input rows it interpolated along the last axis, keyed by their
 * offset: consecutive output rows mostly read the same input rows (all of them when upsampling),
 * so each is interpolated once per worker instead of once per output row that reads it. */
#define RS_CACHE 8

/* a worker's room: its (offset, weight) pairs — the offsets, then the weights — and its row cache
 * (keys, then RS_CACHE rows of W), each 8-byte aligned */
static size_t worker_bytes(int64_t combos, int64_t W)
{
    return align8((size_t)combos * sizeof(int64_t)) + align8((size_t)combos * sizeof(float)) +
           RS_CACHE * sizeof(int64_t) + align8((size_t)(RS_CACHE * W) * sizeof(float));
}

static size_t rs_scratch_bytes(const rs_p *p, int nthreads)
{
    size_t n = 0;
    for (int a = 0; a < p->rank; a++)
        n += align8((size_t)(p->out[a] * p->taps[a]) * sizeof(int64_t)) +
             align8((size_t)(p->out[a] * p->taps[a]) * sizeof(float)) + align8((size_t)p->out[a]);
    return n + (size_t)(nthreads < 1 ? 1 : nthreads) * worker_bytes(rs_combos(p), p->out[p->rank - 1]) + 64;
}

static size_t rs_scratch(const qs_kctx *c)
{
    rs_p p;
    return rs_get((qs_kctx *)c, &p) < 0 ? 0 : rs_scratch_bytes(&p, c->nthreads);
}

static double cubic_w(double x, double A)
{
    x = fabs(x);
    if (x <= 1)
        return ((A + 2) * x - (A + 3)) * x * x + 1;
    if (x < 2)
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    return 0;
}

/* the input coordinate of output coordinate x along axis a; *outside for tf_crop_and_resize */
static double source_coord(const rs_p *p, int a, int64_t x, int *outside)
{
    double s = p->scale[a], Li = (double)p->in[a], Lo = (double)p->out[a], xo;
    *outside = 0;
    switch (p->coord) {
    case HALF_PIXEL: return (x + 0.5) / s - 0.5;
    case HALF_PIXEL_SYM: {
        double adj = Lo / (s * Li), center = Li / 2;
        return center * (1 - adj) + (x + 0.5) / s - 0.5;
    }
    case PYTORCH_HALF_PIXEL: return p->out[a] > 1 ? (x + 0.5) / s - 0.5 : 0;
    case ALIGN_CORNERS:
        /* the output length, as ONNX Runtime and PyTorch have it; ONNX's reference implementation
         * takes the unrounded s·L_in, which differs when that is not an integer */
        return p->out[a] == 1 ? 0 : x * (Li - 1) / (Lo - 1);
    case ASYMMETRIC: return x / s;
    case TF_HALF_PIXEL_NN: return (x + 0.5) / s;
    default:   /* TF_CROP */
        if (p->out[a] > 1)
            xo = p->roi0[a] * (Li - 1) + x * (p->roi1[a] - p->roi0[a]) * (Li - 1) / (Lo - 1);
        else
            xo = 0.5 * (p->roi0[a] + p->roi1[a]) * (Li - 1);
        *outside = xo < 0 || xo > Li - 1;
        return xo;
    }
}

static int64_t round_nearest(const rs_p *p, double x, double s)
{
    switch (p->nearest) {
    case ROUND_PREFER_FLOOR: return (int64_t)ceil(x - 0.5);
    case ROUND_PREFER_CEIL: return (int64_t)floor(x + 0.5);
    case FLOOR: return (int64_t)floor(x);
    case CEIL: return (int64_t)ceil(x);
    default: return (int64_t)(s < 1 ? ceil(x) : floor(x));   /* SIMPLE */
    }
}

static int64_t clamp_i(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

/* fills axis a's taps for every output coordinate, then drops zero weights */
static void build_axis(const rs_p *p, int a, rs_axis *t, int64_t stride)
{
    int64_t Li = p->in[a], Lo = p->out[a];
    int T0 = p->taps[a], T = 1;
    double s = p->scale[a], wt[256];
    int64_t ix[256];
    for (int64_t x = 0; x < Lo; x++) {
        int out;
        double xo = source_coord(p, a, x, &out);
        int n = 0;
        t->outside[x] = (unsigned char)out;
        if (out || Li == 0) {
            n = 0;
        } else if (p->mode == NEAREST) {
            ix[0] = clamp_i(round_nearest(p, xo, s), Li);
            wt[0] = 1;
            n = 1;
        } else {
            double f = floor(xo), rr = xo - f, sum = 0;
            int start, aa = p->antialias && s < 1;
            if (p->mode == LINEAR)
                start = aa ? (int)floor(-1 / s) + 1 : 0;
            else
                start = aa ? (int)floor(-2 / s) + 1 : -1;
            for (int k = 0; k < T0 && k < 256; k++) {
                double d = start + k - rr;   /* tap position − source coordinate */
                double w = p->mode == LINEAR ? fmax(0, 1 - fabs(aa ? d * s : d)) : cubic_w(aa ? d * s : d, p->cubic_a);
                int64_t i = (int64_t)f + start + k;
                if (p->exclude_outside && (i < 0 || i >= Li))
                    w = 0;
                ix[n] = clamp_i(i, Li);
                wt[n++] = w;
                sum += w;
            }
            if ((aa || p->exclude_outside) && sum != 0)
                for (int k = 0; k < n; k++)
                    wt[k] /= sum;
        }
        /* keep the nonzero taps, merged when two read the same (edge-clamped) index */
        int m = 0;
        for (int k = 0; k < n; k++) {
            if (wt[k] == 0)
                continue;
            int j = 0;
            while (j < m && t->idx[x * T0 + j] != ix[k] * stride)
                j++;
            if (j == m) {
                t->idx[x * T0 + m] = ix[k] * stride;
                t->w[x * T0 + m++] = 0;
            }
            t->w[x * T0 + j] += (float)wt[k];
        }
        for (int k = m; k < T0; k++) {
            t->idx[x * T0 + k] = 0;
            t->w[x * T0 + k] = 0;
        }
        if (m > T)
            T = m;
    }
    /* repack with the narrower stride T */
    for (int64_t x = 0; x < Lo; x++)
        for (int k = 0; k < T; k++) {
            t->idx[x * T + k] = t->idx[x * T0 + k];
            t->w[x * T + k] = t->w[x * T0 + k];
        }
    t->T = T;
    t->identity = Li == Lo && T == 1;
    for (int64_t x = 0; x < Lo && t->identity; x++)
        t->identity = !t->outside[x] && t->idx[x] == x * stride && t->w[x] == 1;
}

static void build_tables(const rs_p *p, void *scratch, int nthreads, rs_tabs *tb)
{
    char *b = scratch;
    int64_t stride = 1;
    for (int a = p->rank - 1; a >= 0; a--) {
        rs_axis *t = &tb->ax[a];
        size_t n = (size_t)(p->out[a] * p->taps[a]);
        t->idx = (int64_t *)b;
        b += align8(n * sizeof(int64_t));
        t->w = (float *)b;
        b += align8(n * sizeof(float));
        t->outside = (unsigned char *)b;
        b += align8((size_t)p->out[a]);
        build_axis(p, a, t, stride);
        stride *= p->in[a];
    }
    tb->combos = rs_combos(p);
    tb->W = p->out[p->rank - 1];
    tb->rows = b;
    (void)nthreads;
}

/* ---- forward and backward over rows ----------------------------------------------------------- */

typedef struct rs_job {
    const rs_p *p;
    const rs_tabs *tb;
    const float *src;   /* forward: X; backward: dY */
    float *dst;         /* forward: Y; backward: dX (zeroed) */
    int64_t rows_per_chunk_unit;   /* backward: rows per plane */
} rs_job;

/* The (input offset, weight) pairs of output row `row` (coordinates of all but the last axis);
 * returns their count, or −1 when the row lies outside the crop (extrapolation). */
static int64_t row_pairs(const rs_p *p, const rs_tabs *tb, int64_t row, int64_t *off, float *w)
{
    int64_t o[QS_MAX_DIMS], n = 1;
    for (int a = p->rank - 2; a >= 0; a--) {
        o[a] = row % p->out[a];
        row /= p->out[a];
    }
    off[0] = 0;
    w[0] = 1;
    for (int a = 0; a + 1 < p->rank; a++) {
        const rs_axis *t = &tb->ax[a];
        if (t->outside[o[a]])
            return -1;
        int64_t m = 0;
        /* expand in place from the back so that entries not yet expanded are still intact */
        for (int64_t k = n - 1; k >= 0; k--) {
            int64_t bo = off[k];
            float bw = w[k];
            for (int j = t->T - 1; j >= 0; j--) {
                float tw = t->w[o[a] * t->T + j];
                if (tw == 0)
                    continue;
                off[k * t->T + j] = bo + t->idx[o[a] * t->T + j];
                w[k * t->T + j] = bw * tw;
            }
        }
        /* compact out the zero-weight slots */
        for (int64_t k = 0; k < n; k++)
            for (int j = 0; j < t->T; j++)
                if (t->w[o[a] * t->T + j] != 0) {
                    off[m] = off[k * t->T + j];
                    w[m++] = w[k * t->T + j];
                }
        n = m;
    }
    return n;
}

typedef struct rs_cache {
    int64_t *key;   /* [RS_CACHE] input row offset, −1: empty */
    float *row;     /* [RS_CACHE][W] */
    int next;       /* round-robin victim */
} rs_cache;

static void *worker_rows(const rs_tabs *tb, int worker, float **w, rs_cache *cache)
{
    char *b = tb->rows + (size_t)worker * worker_bytes(tb->combos, tb->W);
    *w = (float *)(b + align8((size_t)tb->combos * sizeof(int64_t)));
    if (cache) {
        cache->key = (int64_t *)(b + align8((size_t)tb->combos * sizeof(int64_t)) +
                                 align8((size_t)tb->combos * sizeof(float)));
        cache->row = (float *)(cache->key + RS_CACHE);
        cache->next = 0;
        for (int k = 0; k < RS_CACHE; k++)
            cache->key[k] = -1;
    }
    return b;
}

/* the input row at src + off interpolated along the last axis (from the cache, or computed into it) */
static const float *cached_row(rs_cache *cache, const rs_axis *L, int64_t W, const float *src, int64_t off)
{
    for (int k = 0; k < RS_CACHE; k++)
        if (cache->key[k] == off)
            return cache->row + k * W;
    int k = cache->next;
    cache->next = (k + 1) % RS_CACHE;
    cache->key[k] = off;
    float *r = cache->row + k * W;
    const float *in = src + off;
    int64_t T = L->T;
    for (int64_t x = 0; x < W; x++) {
        float acc = 0;
        for (int64_t t = 0; t < T; t++)
            acc += L->w[x * T + t] * in[L->idx[x * T + t]];
        r[x] = acc;
    }
    return r;
}

static void rs_forward_rows(void *arg, int64_t r0, int64_t r1, int worker)
{
    const rs_job *j = arg;
    const rs_p *p = j->p;
    const rs_axis *L = &j->tb->ax[p->rank - 1];
    int64_t W = p->out[p->rank - 1], T = L->T;
    float *w;
    rs_cache cache;
    int64_t *off = worker_rows(j->tb, worker, &w, &cache), prev_off = -1;
    float prev_w = 0;
    for (int64_t row = r0; row < r1; row++) {
        float *y = j->dst + row * W;
        int64_t n = row_pairs(p, j->tb, row, off, w);
        if (n < 0) {
            for (int64_t x = 0; x < W; x++)
                y[x] = p->extrapolation;
            prev_off = -1;
            continue;
        }
        if (n == 1 && T == 1) {   /* nearest (or a pure gather): one pass, no accumulation */
            const float *src = j->src + off[0];
            if (row > r0 && off[0] == prev_off && w[0] == prev_w) {
                memcpy(y, y - W, (size_t)W * sizeof *y);   /* the same input row as the last one */
            } else {
                for (int64_t x = 0; x < W; x++)
                    y[x] = w[0] * L->w[x] * src[L->idx[x]];
            }
            prev_off = off[0];
            prev_w = w[0];
            n = 0;
        } else {
            prev_off = -1;
            for (int64_t x = 0; x < W; x++)
                y[x] = 0;
        }
        if (T > 1 && n <= RS_CACHE) {   /* y = Σ_k w_k · (row k interpolated along the last axis) */
            for (int64_t k = 0; k < n; k++) {
                const float *hr = cached_row(&cache, L, W, j->src, off[k]);
                float wk = w[k];
                for (int64_t x = 0; x < W; x++)
                    y[x] += wk * hr[x];
            }
            n = 0;
        }
        for (int64_t k = 0; k < n; k++) {
            const float *src = j->src + off[k];
            float wk = w[k];
            if (T == 1)
                for (int64_t x = 0; x < W; x++)
                    y[x] += wk * L->w[x] * src[L->idx[x]];
            else
                for (int64_t x = 0; x < W; x++) {
                    float acc = 0;
                    for (int64_t t = 0; t < T; t++)
                        acc += L->w[x * T + t] * src[L->idx[x * T + t]];
                    y[x] += wk * acc;
                }
        }
        for (int64_t x = 0; x < W; x++)
            if (L->outside[x])
                y[x] = p->extrapolation;
    }
}

/* leading axes the resize leaves alone: their planes are independent */
static int64_t rs_planes(const rs_p *p, const rs_tabs *tb)
{
    int64_t planes = 1;
    for (int a = 0; a + 1 < p->rank && tb->ax[a].identity; a++)
        planes *= p->out[a];
    return planes;
}

static int rs_forward(qs_kctx *c)
{
    rs_p p;
    rs_tabs tb;
    int rc = rs_get(c, &p);
    if (rc < 0)
        return rc;
    if (!c->scratch || c->scratch_size < rs_scratch_bytes(&p, c->nthreads))
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes is too small", c->scratch_size);
    if (qs_numel(c->out[0]) == 0)
        return 0;
    build_tables(&p, c->scratch, c->nthreads, &tb);
    rs_job j = { &p, &tb, qs_f32(c->in[0]), qs_f32(c->out[0]), 0 };
    int64_t rows = qs_numel(c->out[0]) / p.out[p.rank - 1], W = p.out[p.rank - 1];
    qs_threadpool_for(c->pool, c->nthreads, rows, W >= 4096 ? 1 : 4096 / W, rs_forward_rows, &j);
    return 0;
}

/* backward over planes [p0, p1): each plane's rows scatter into that plane's part of dX only */
static void rs_backward_planes(void *arg, int64_t p0, int64_t p1, int worker)
{
    const rs_job *j = arg;
    const rs_p *p = j->p;
    const rs_axis *L = &j->tb->ax[p->rank - 1];
    int64_t W = p->out[p->rank - 1], T = L->T;
    float *w;
    int64_t *off = worker_rows(j->tb, worker, &w, NULL);
    for (int64_t row = p0 * j->rows_per_chunk_unit; row < p1 * j->rows_per_chunk_unit; row++) {
        const float *dy = j->src + row * W;
        int64_t n = row_pairs(p, j->tb, row, off, w);
        for (int64_t k = 0; k < n; k++) {
            float *dx = j->dst + off[k];
            float wk = w[k];
            for (int64_t x = 0; x < W; x++) {
                if (L->outside[x])
                    continue;
                float g = wk * dy[x];
                for (int64_t t = 0; t < T; t++)
                    dx[L->idx[x * T + t]] += L->w[x * T + t] * g;
            }
        }
    }
}

static int rs_backward(qs_kctx *c)
{
    rs_p p;
    rs_tabs tb;
    int rc = rs_get(c, &p);
    if (rc < 0)
        return rc;
    if (!c->din[0])
        return 0;
    if (!c->scratch || c->scratch_size < rs_scratch_bytes(&p, c->nthreads))
        return qs_op_error(c, QS_EINVAL, "scratch of %zu bytes is too small", c->scratch_size);
    float *dx = qs_f32(c->din[0]);
    memset(dx, 0, (size_t)qs_numel(c->din[0]) * sizeof *dx);
    if (!c->dout[0] || qs_numel(c->dout[0]) == 0)
        return 0;
    build_tables(&p, c->scratch, c->nthreads, &tb);
    int64_t rows = qs_numel(c->dout[0]) / p.out[p.rank - 1];
    int64_t planes = rs_planes(&p, &tb);
    rs_job j = { &p, &tb, qs_f32(c->dout[0]), dx, rows / planes };
    qs_threadpool_for(c->pool, c->nthreads, planes, 1, rs_backward_planes, &j);
    return 0;
}

const qs_op_def qs_ops_resize[] = {
    { .domain = "", .op = "Resize", .infer = rs_infer, .prepare = rs_prepare, .scratch = rs_scratch,
      .forward = rs_forward, .backward = rs_backward },
    { .domain = "", .op = "Upsample", .infer = rs_infer, .prepare = rs_prepare, .scratch = rs_scratch,
      .forward = rs_forward, .backward = rs_backward },
    { .op = NULL },
};
