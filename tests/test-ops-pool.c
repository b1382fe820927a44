/* MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool: hand-computed windows, a naive reference
 * that tests every tap's bounds, the ONNX output-size rules (ceil_mode, auto_pad), the Indices
 * output, and finite differences for every backward (MaxPool on inputs without near-ties). */
/* GCC's -Wmaybe-uninitialized misfires on opcheck.h's out[] once inlined here (every path that
 * leaves it unset exits through QT_FAIL_). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "tests/opcheck.h"
#include "engine/ops/kernels.h"

static qs_tensor *rand_t(int ndim, const int64_t *shape) { return opcheck_rand(ndim, shape, -1, 1); }

static void assert_close_buf(const float *a, const float *ref, int64_t n, double rtol, double atol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - ref[i]) <= atol + rtol * fabs((double)ref[i])))
            QT_FAIL_("element %lld: %.7g vs reference %.7g", (long long)i, a[i], ref[i]);
}

/* values 0.1·π(i) for a random permutation π: every pair differs by at least 0.1, so finite
 * differences with eps 1e-2 never move the max of a window */
static qs_tensor *distinct_t(int ndim, const int64_t *shape)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    int64_t n = qs_numel(t);
    for (int64_t i = 0; i < n; i++)
        qs_f32(t)[i] = 0.1f * (float)(i - n / 2);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(opcheck_uniform(0, 1) * (float)(i + 1));
        if (j > i)
            j = i;
        float tmp = qs_f32(t)[i];
        qs_f32(t)[i] = qs_f32(t)[j];
        qs_f32(t)[j] = tmp;
    }
    return t;
}

static qs_tensor *ramp(int ndim, const int64_t *shape, float start)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = start + (float)i;
    return t;
}

/* ---- hand-computed --------------------------------------------------------------------------------- */

TEST(maxpool_hand_computed)
{
    qs_tensor *x = ramp(4, (int64_t[]){ 1, 1, 4, 4 }, 1), *y;   /* 1..16 */
    qs_node n = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 2, 2 });
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 2, 2 });
    opcheck_forward(&n, 12, 1, &x, 1, &y);
    float w1[] = { 6, 8, 14, 16 };
    assert_close_buf(qs_f32(y), w1, 4, 0, 0);
    /* kernel 3, stride 2, ceil_mode: ceil((4 − 3)/2) + 1 = 2 outputs per dim, the last window clipped */
    qs_node m = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&m, "kernel_shape", 2, (int64_t[]){ 3, 3 });
    qs_node_set_ints(&m, "strides", 2, (int64_t[]){ 2, 2 });
    qs_node_set_int(&m, "ceil_mode", 1);
    opcheck_forward(&m, 12, 1, &x, 1, &y);
    ASSERT_EQ(y->shape[2], 2);
    float w2[] = { 11, 12, 15, 16 };
    assert_close_buf(qs_f32(y), w2, 4, 0, 0);
    qs_node_set_int(&m, "ceil_mode", 0);   /* floor: a single window */
    opcheck_forward(&m, 12, 1, &x, 1, &y);
    ASSERT_EQ(y->shape[2], 1);
    ASSERT_CLOSE(qs_f32(y)[0], 11, 0, 0);
    /* dilations 2: window (0, 0) reads 1, 3, 9, 11 */
    qs_node d = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&d, "kernel_shape", 2, (int64_t[]){ 2, 2 });
    qs_node_set_ints(&d, "dilations", 2, (int64_t[]){ 2, 2 });
    opcheck_forward(&d, 12, 1, &x, 1, &y);
    ASSERT_EQ(y->shape[2], 2);
    assert_close_buf(qs_f32(y), w2, 4, 0, 0);
    /* negative inputs and padding: the padding never wins a max */
    qs_tensor *neg = ramp(4, (int64_t[]){ 1, 1, 2, 2 }, -10);   /* -10 -9 / -8 -7 */
    qs_node p = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&p, "kernel_shape", 2, (int64_t[]){ 2, 2 });
    qs_node_set_ints(&p, "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    opcheck_forward(&p, 12, 1, &neg, 1, &y);
    ASSERT_EQ(y->shape[2], 3);
    float w3[] = { -10, -9, -9, -8, -7, -7, -8, -7, -7 };
    assert_close_buf(qs_f32(y), w3, 9, 0, 0);
}

TEST(pool_ceil_mode_drops_window_starting_in_padding)
{
    /* in 5, kernel 2, stride 2, pads 1+1, ceil: ceil((5 + 2 − 2)/2) + 1 = 4, but the 4th window would start
     * at 3·2 − 1 = 5, past the input, so ONNX (and PyTorch) give 3 */
    qs_tensor *x = ramp(3, (int64_t[]){ 1, 1, 5 }, 0), *y;
    qs_node n = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&n, "kernel_shape", 1, (int64_t[]){ 2 });
    qs_node_set_ints(&n, "strides", 1, (int64_t[]){ 2 });
    qs_node_set_ints(&n, "pads", 2, (int64_t[]){ 1, 1 });
    qs_node_set_int(&n, "ceil_mode", 1);
    opcheck_forward(&n, 12, 1, &x, 1, &y);
    ASSERT_EQ(y->shape[2], 3);
    float want[] = { 0, 2, 4 };
    assert_close_buf(qs_f32(y), want, 3, 0, 0);
    /* in 6, kernel 2, stride 2, pads 1+0: ceil((6 + 1 − 2)/2) + 1 = 4 windows starting at −1, 1, 3, 5;
     * the last starts inside the input and is kept */
    qs_tensor *x6 = ramp(3, (int64_t[]){ 1, 1, 6 }, 0);
    qs_node_set_ints(&n, "pads", 2, (int64_t[]){ 1, 0 });
    opcheck_forward(&n, 12, 1, &x6, 1, &y);
    ASSERT_EQ(y->shape[2], 4);
    float want6[] = { 0, 2, 4, 5 };
    assert_close_buf(qs_f32(y), want6, 4, 0, 0);
}

TEST(pool_auto_pad)
{
    /* 1-D, in 4, kernel 2, stride 1: SAME gives 4 outputs with one pad cell, at the end (UPPER) or at the
     * beginning (LOWER). x = 1 2 3 4: UPPER windows {1,2} {2,3} {3,4} {4}, LOWER {1} {1,2} {2,3} {3,4}. */
    qs_tensor *x = ramp(3, (int64_t[]){ 1, 1, 4 }, 1), *y;
    qs_node n = opcheck_node("AveragePool", NULL);
    qs_node_set_ints(&n, "kernel_shape", 1, (int64_t[]){ 2 });
    qs_node_set_string(&n, "auto_pad", "SAME_UPPER");
    opcheck_forward(&n, 11, 1, &x, 1, &y);
    ASSERT_EQ(y->shape[2], 4);
    float up[] = { 1.5f, 2.5f, 3.5f, 4 };
    assert_close_buf(qs_f32(y), up, 4, 0, 1e-6);
    qs_node_set_string(&n, "auto_pad", "SAME_LOWER");
    opcheck_forward(&n, 11, 1, &x, 1, &y);
    float lo[] = { 1, 1.5f, 2.5f, 3.5f };
    assert_close_buf(qs_f32(y), lo, 4, 0, 1e-6);
    /* VALID, in 5, kernel 2, stride 2: ceil((5 − 2 + 1)/2) = 2 */
    qs_tensor *x5 = ramp(3, (int64_t[]){ 1, 1, 5 }, 1);
    qs_node_set_string(&n, "auto_pad", "VALID");
    qs_node_set_ints(&n, "strides", 1, (int64_t[]){ 2 });
    opcheck_forward(&n, 11, 1, &x5, 1, &y);
    ASSERT_EQ(y->shape[2], 2);
    float va[] = { 1.5f, 3.5f };
    assert_close_buf(qs_f32(y), va, 2, 0, 1e-6);
    /* SAME_UPPER, 2-D 5x5, kernel 3, stride 2: 3x3 outputs, pads 1 on each side */
    qs_tensor *x55 = ramp(4, (int64_t[]){ 1, 1, 5, 5 }, 1);
    qs_node m = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&m, "kernel_shape", 2, (int64_t[]){ 3, 3 });
    qs_node_set_ints(&m, "strides", 2, (int64_t[]){ 2, 2 });
    qs_node_set_string(&m, "auto_pad", "SAME_UPPER");
    opcheck_forward(&m, 11, 1, &x55, 1, &y);
    ASSERT_EQ(y->shape[3], 3);
    float mx[] = { 7, 9, 10, 17, 19, 20, 22, 24, 25 };
    assert_close_buf(qs_f32(y), mx, 9, 0, 0);
}

TEST(averagepool_count_include_pad)
{
    /* 3x3 input 1..9, kernel 3, pads 1: the corner window holds 1 2 4 5 (sum 12) and 5 padding zeros */
    qs_tensor *x = ramp(4, (int64_t[]){ 1, 1, 3, 3 }, 1), *y;
    qs_node n = opcheck_node("AveragePool", NULL);
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 3, 3 });
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    opcheck_forward(&n, 11, 1, &x, 1, &y);
    ASSERT_CLOSE(qs_f32(y)[0], 12.0 / 4, 1e-6, 0);
    ASSERT_CLOSE(qs_f32(y)[1], (1 + 2 + 3 + 4 + 5 + 6) / 6.0, 1e-6, 0);
    ASSERT_CLOSE(qs_f32(y)[4], 45.0 / 9, 1e-6, 0);
    qs_node_set_int(&n, "count_include_pad", 1);
    opcheck_forward(&n, 11, 1, &x, 1, &y);
    ASSERT_CLOSE(qs_f32(y)[0], 12.0 / 9, 1e-6, 0);
    ASSERT_CLOSE(qs_f32(y)[1], 21.0 / 9, 1e-6, 0);
    /* ceil_mode: 1-D in 4, kernel 3, stride 2 → 2 windows, the second {3, 4} past the input end: divided
     * by the 2 taps inside, with or without count_include_pad (there are no pads to include) */
    qs_tensor *x4 = ramp(3, (int64_t[]){ 1, 1, 4 }, 1);
    qs_node c = opcheck_node("AveragePool", NULL);
    qs_node_set_ints(&c, "kernel_shape", 1, (int64_t[]){ 3 });
    qs_node_set_ints(&c, "strides", 1, (int64_t[]){ 2 });
    qs_node_set_int(&c, "ceil_mode", 1);
    opcheck_forward(&c, 11, 1, &x4, 1, &y);
    ASSERT_EQ(y->shape[2], 2);
    float want[] = { 2, 3.5f };
    assert_close_buf(qs_f32(y), want, 2, 0, 1e-6);
    qs_node_set_int(&c, "count_include_pad", 1);
    opcheck_forward(&c, 11, 1, &x4, 1, &y);
    assert_close_buf(qs_f32(y), want, 2, 0, 1e-6);
}

TEST(global_pools_hand_computed)
{
    qs_tensor *x = ramp(4, (int64_t[]){ 2, 3, 2, 2 }, 0), *y;   /* plane p holds 4p .. 4p+3 */
    qs_node a = opcheck_node("GlobalAveragePool", NULL), m = opcheck_node("GlobalMaxPool", NULL);
    opcheck_forward(&a, 11, 1, &x, 1, &y);
    ASSERT_EQ(y->ndim, 4);
    ASSERT_EQ(y->shape[1], 3);
    ASSERT_EQ(y->shape[2], 1);
    ASSERT_EQ(y->shape[3], 1);
    for (int p = 0; p < 6; p++)
        ASSERT_CLOSE(qs_f32(y)[p], 4 * p + 1.5, 1e-6, 0);
    opcheck_forward(&m, 11, 1, &x, 1, &y);
    for (int p = 0; p < 6; p++)
        ASSERT_CLOSE(qs_f32(y)[p], 4 * p + 3, 0, 0);
    qs_tensor *x3 = ramp(5, (int64_t[]){ 1, 2, 2, 3, 2 }, 0);   /* 3-D: 12 per plane */
    opcheck_forward(&a, 11, 1, &x3, 1, &y);
    ASSERT_EQ(y->ndim, 5);
    ASSERT_CLOSE(qs_f32(y)[1], 12 + 5.5, 1e-6, 0);
}

TEST(maxpool_indices_and_int8)
{
    /* x [1, 2, 2, 3]: second plane reversed so its max sits elsewhere */
    float v[] = { 1, 5, 2, 3, 0, 4, 6, 5, 4, 3, 2, 1 };
    qs_tensor *x = opcheck_from(4, (int64_t[]){ 1, 2, 2, 3 }, v), *y[2];
    qs_node n = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 2, 2 });
    opcheck_forward(&n, 12, 1, &x, 2, y);
    ASSERT_EQ(y[1]->dtype, QS_I64);
    /* plane 0 windows: {1 5 3 0} → 5 at (0,1) = 1; {5 2 0 4} → 5 at 1. plane 1 (offset 6):
     * {6 5 3 2} → 6 at (0,0) = 6; {5 4 2 1} → 5 at (0,1) = 7 */
    int64_t want[] = { 1, 1, 6, 7 };
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(qs_i64(y[1])[i], want[i]);
    qs_node_set_int(&n, "storage_order", 1);   /* column major: (h, w) → h + w·H */
    opcheck_forward(&n, 12, 1, &x, 2, y);
    int64_t want_cm[] = { 2, 2, 6, 8 };
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(qs_i64(y[1])[i], want_cm[i]);
    /* uint8 and int8 inputs */
    qs_tensor *u = qs_tensor_new(QS_U8, 4, (int64_t[]){ 1, 1, 2, 2 });
    uint8_t uv[] = { 10, 200, 30, 40 };
    memcpy(u->data, uv, 4);
    opcheck_forward(&n, 12, 1, &u, 1, y);
    ASSERT_EQ(y[0]->dtype, QS_U8);
    ASSERT_EQ(qs_u8(y[0])[0], 200);
    qs_tensor *s = qs_tensor_new(QS_I8, 4, (int64_t[]){ 1, 1, 2, 2 });
    int8_t sv[] = { -10, -100, -3, -40 };
    memcpy(s->data, sv, 4);
    opcheck_forward(&n, 12, 1, &s, 1, y);
    ASSERT_EQ(qs_i8(y[0])[0], -3);
}

/* ---- naive reference ----------------------------------------------------------------------------------- */

typedef struct {
    int nd;
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3];
    int ceil_mode, include_pad;
} pool_case;

/* expected output size per the ONNX formula, the last window dropped when it starts in the padding */
static int64_t out_size(const pool_case *t, int i)
{
    int64_t span = t->in[i] + t->pb[i] + t->pe[i] - ((t->k[i] - 1) * t->d[i] + 1);
    int64_t o = (t->ceil_mode ? (span + t->s[i] - 1) / t->s[i] : span / t->s[i]) + 1;
    if (t->ceil_mode && (o - 1) * t->s[i] >= t->in[i] + t->pb[i])
        o--;
    return o;
}

/* one plane, every tap tested against the bounds */
static void pool_ref(const pool_case *t, int max, const float *x, float *y)
{
    int64_t in[3] = { 1, 1, 1 }, k[3] = { 1, 1, 1 }, s[3] = { 1, 1, 1 }, d[3] = { 1, 1, 1 }, pb[3] = { 0 },
            pe[3] = { 0 }, out[3] = { 1, 1, 1 };
    for (int i = 0; i < t->nd; i++) {
        int j = 3 - t->nd + i;
        in[j] = t->in[i], k[j] = t->k[i], s[j] = t->s[i], d[j] = t->d[i], pb[j] = t->pb[i], pe[j] = t->pe[i];
        out[j] = out_size(t, i);
    }
    int64_t oi = 0;
    for (int64_t o0 = 0; o0 < out[0]; o0++)
        for (int64_t o1 = 0; o1 < out[1]; o1++)
            for (int64_t o2 = 0; o2 < out[2]; o2++, oi++) {
                double acc = max ? -INFINITY : 0;
                int64_t inside = 0, padded = 0;
                for (int64_t a = 0; a < k[0]; a++)
                    for (int64_t b = 0; b < k[1]; b++)
                        for (int64_t c = 0; c < k[2]; c++) {
                            int64_t p0 = o0 * s[0] + a * d[0] - pb[0], p1 = o1 * s[1] + b * d[1] - pb[1],
                                    p2 = o2 * s[2] + c * d[2] - pb[2];
                            if (p0 >= -pb[0] && p0 < in[0] + pe[0] && p1 >= -pb[1] && p1 < in[1] + pe[1] &&
                                p2 >= -pb[2] && p2 < in[2] + pe[2])
                                padded++;
                            if (p0 < 0 || p0 >= in[0] || p1 < 0 || p1 >= in[1] || p2 < 0 || p2 >= in[2])
                                continue;
                            double v = x[(p0 * in[1] + p1) * in[2] + p2];
                            inside++;
                            acc = max ? (v > acc ? v : acc) : acc + v;
                        }
                y[oi] = (float)(max ? acc : acc / (t->include_pad ? padded : inside));
            }
}

static const pool_case pool_cases[] = {
    { 2, { 6, 7 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0, 0 },
    { 2, { 7, 8 }, { 3, 2 }, { 2, 3 }, { 1, 1 }, { 1, 0 }, { 2, 1 }, 1, 0 },
    { 2, { 7, 8 }, { 3, 2 }, { 2, 3 }, { 1, 1 }, { 1, 0 }, { 2, 1 }, 1, 1 },
    { 2, { 9, 9 }, { 2, 3 }, { 1, 2 }, { 2, 2 }, { 0, 1 }, { 1, 1 }, 0, 1 },
    { 2, { 8, 8 }, { 2, 2 }, { 3, 3 }, { 2, 1 }, { 0, 0 }, { 0, 0 }, 1, 0 },
    { 1, { 11 }, { 3 }, { 2 }, { 2 }, { 2 }, { 1 }, 1, 1 },
    { 3, { 4, 5, 6 }, { 2, 3, 2 }, { 2, 1, 2 }, { 1, 1, 2 }, { 1, 1, 0 }, { 0, 1, 1 }, 0, 1 },
    { 3, { 5, 4, 5 }, { 2, 2, 2 }, { 2, 2, 2 }, { 1, 1, 1 }, { 0, 0, 0 }, { 0, 0, 0 }, 1, 0 },
};

/* X's shape for a case: [n, c, in...]; returns its rank. */
static int case_shape(const pool_case *t, int64_t n, int64_t c, int64_t xs[5])
{
    xs[0] = n;
    xs[1] = c;
    for (int d = 0; d < t->nd; d++)
        xs[2 + d] = t->in[d];
    return 2 + t->nd;
}

static qs_node case_node(const char *op, const pool_case *t)
{
    qs_node n = opcheck_node(op, NULL);
    int64_t pads[6];
    for (int i = 0; i < t->nd; i++) {
        pads[i] = t->pb[i];
        pads[t->nd + i] = t->pe[i];
    }
    qs_node_set_ints(&n, "kernel_shape", t->nd, t->k);
    qs_node_set_ints(&n, "strides", t->nd, t->s);
    qs_node_set_ints(&n, "dilations", t->nd, t->d);
    qs_node_set_ints(&n, "pads", 2 * t->nd, pads);
    qs_node_set_int(&n, "ceil_mode", t->ceil_mode);
    if (!strcmp(op, "AveragePool"))
        qs_node_set_int(&n, "count_include_pad", t->include_pad);
    return n;
}

TEST(pools_match_reference)
{
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++)
        for (int max = 0; max < 2; max++) {
            const pool_case *t = &pool_cases[i];
            int64_t xs[5];
            qs_tensor *x = rand_t(case_shape(t, 2, 3, xs), xs), *y;
            qs_node n = case_node(max ? "MaxPool" : "AveragePool", t);
            opcheck_forward(&n, 19, 1, &x, 1, &y);
            int64_t yvol = 1, xvol = 1;
            for (int d = 0; d < t->nd; d++) {
                ASSERT_EQ(y->shape[2 + d], out_size(t, d));
                yvol *= y->shape[2 + d];
                xvol *= xs[2 + d];
            }
            float *ref = malloc(yvol * sizeof *ref);
            for (int p = 0; p < 6; p++) {
                pool_ref(t, max, qs_f32(x) + p * xvol, ref);
                assert_close_buf(qs_f32(y) + p * yvol, ref, yvol, 1e-5, 1e-6);
            }
            free(ref);
        }
}

/* ---- backward ------------------------------------------------------------------------------------------ */

TEST(pools_backward_match_finite_differences)
{
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++)
        for (int max = 0; max < 2; max++) {
            const pool_case *t = &pool_cases[i];
            int64_t xs[5];
            int nd = case_shape(t, 1, 2, xs);
            qs_tensor *x = max ? distinct_t(nd, xs) : rand_t(nd, xs);
            qs_node n = case_node(max ? "MaxPool" : "AveragePool", t);
            opcheck_grad(&n, 19, 1, &x, 1, 1e-2, 1e-2, 1e-3);
        }
    qs_tensor *x = distinct_t(4, (int64_t[]){ 2, 2, 3, 4 });
    qs_node gm = opcheck_node("GlobalMaxPool", NULL), ga = opcheck_node("GlobalAveragePool", NULL);
    opcheck_grad(&gm, 13, 1, &x, 1, 1e-2, 1e-2, 1e-3);
    opcheck_grad(&ga, 13, 1, &x, 1, 1e-2, 1e-2, 1e-3);
}

TEST(pools_two_threads_match_one)
{
    const qs_op_def *d = qs_op_find("", "MaxPool");
    qs_tensor *x = rand_t(4, (int64_t[]){ 4, 16, 40, 40 });
    qs_node n = opcheck_node("MaxPool", NULL);
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 3, 3 });
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ 2, 2 });
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 1, 1, 1, 1 });
    qs_tensor *y1, *y2 = NULL, head;
    opcheck_forward(&n, 13, 1, &x, 1, &y1);
    memset(&head, 0, sizeof head);
    qs_tensor *outs[1] = { &head };
    qs_err e = {0};
    qs_kctx c = { .node = &n, .opset = 13, .nin = 1, .nout = 1, .in = &x, .out = outs, .nthreads = 2, .pool = opcheck_pool(2),
                  .err = &e };
    ASSERT_EQ(d->infer(&c), 0);
    y2 = qs_tensor_new(head.dtype, head.ndim, head.shape);
    c.out = &y2;
    c.scratch_size = d->scratch(&c);
    c.scratch = malloc(c.scratch_size);
    ASSERT_EQ(d->forward(&c), 0);
    assert_close_buf(qs_f32(y2), qs_f32(y1), qs_numel(y1), 0, 0);
    opcheck_pools_free();   /* join the workers before the harness's _exit */
}

/* MaxPool's backward against a naive one: per output in order, the taps in window order with every
 * bound tested, the first maximum taking the gradient (a tap wins when none has yet or when it is
 * strictly greater, so a NaN first tap keeps its window) — exactly, bit for bit. */
static void maxpool_grad_ref(const pool_case *t, const float *x, const float *dy, float *dx)
{
    int64_t in[3] = { 1, 1, 1 }, k[3] = { 1, 1, 1 }, s[3] = { 1, 1, 1 }, d[3] = { 1, 1, 1 }, pb[3] = { 0 },
            out[3] = { 1, 1, 1 };
    for (int i = 0; i < t->nd; i++) {
        int j = 3 - t->nd + i;
        in[j] = t->in[i], k[j] = t->k[i], s[j] = t->s[i], d[j] = t->d[i], pb[j] = t->pb[i];
        out[j] = out_size(t, i);
    }
    memset(dx, 0, in[0] * in[1] * in[2] * sizeof *dx);
    int64_t oi = 0;
    for (int64_t o0 = 0; o0 < out[0]; o0++)
        for (int64_t o1 = 0; o1 < out[1]; o1++)
            for (int64_t o2 = 0; o2 < out[2]; o2++, oi++) {
                int64_t best = -1;
                float m = -INFINITY;
                for (int64_t a = 0; a < k[0]; a++)
                    for (int64_t b = 0; b < k[1]; b++)
                        for (int64_t c = 0; c < k[2]; c++) {
                            int64_t p0 = o0 * s[0] + a * d[0] - pb[0], p1 = o1 * s[1] + b * d[1] - pb[1],
                                    p2 = o2 * s[2] + c * d[2] - pb[2];
                            if (p0 < 0 || p0 >= in[0] || p1 < 0 || p1 >= in[1] || p2 < 0 || p2 >= in[2])
                                continue;
                            int64_t off = (p0 * in[1] + p1) * in[2] + p2;
                            if (best < 0 || x[off] > m) {
                                best = off;
                                m = x[off];
                            }
                        }
                if (best >= 0)
                    dx[best] += dy[oi];
            }
}

/* MaxPool's backward on nthreads threads: dx for x and dy */
static qs_tensor *maxpool_backward(const qs_node *n, qs_tensor *x, qs_tensor *y, qs_tensor *dy, int nthreads)
{
    const qs_op_def *d = qs_op_find("", "MaxPool");
    qs_tensor *dx = qs_tensor_new(QS_F32, x->ndim, x->shape);
    memset(dx->data, 0xff, qs_nbytes(dx));   /* NaN everywhere: every element must be written */
    qs_err e = {0};
    qs_kctx c = { .node = n, .opset = 12, .nin = 1, .nout = 1, .in = &x, .out = &y, .din = &dx, .dout = &dy,
                  .training = 1, .nthreads = nthreads, .pool = opcheck_pool(nthreads), .err = &e };
    c.scratch_size = d->scratch(&c);
    c.scratch = malloc(c.scratch_size);
    if (d->backward(&c) < 0)
        QT_FAIL_("MaxPool backward failed: %s", e.msg);
    free(c.scratch);
    return dx;
}

static const pool_case maxgrad_cases[] = {
    { 2, { 14, 14 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0, 0 },   /* resnet's stem pool */
    { 2, { 13, 15 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0, 0 },
    { 2, { 13, 15 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1, 0 },
    { 2, { 10, 11 }, { 2, 2 }, { 2, 2 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 0, 0 },
    { 2, { 11, 11 }, { 2, 2 }, { 2, 2 }, { 1, 1 }, { 0, 0 }, { 0, 0 }, 1, 0 },
    { 2, { 9, 10 }, { 3, 3 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 0, 0 },
    { 2, { 9, 12 }, { 3, 2 }, { 1, 3 }, { 2, 2 }, { 2, 0 }, { 1, 1 }, 1, 0 },
    { 2, { 3, 601 }, { 2, 3 }, { 1, 1 }, { 1, 1 }, { 0, 1 }, { 0, 1 }, 0, 0 },   /* rows past one chunk */
    { 2, { 5, 530 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, 1, 0 },
    { 1, { 700 }, { 5 }, { 3 }, { 1 }, { 2 }, { 2 }, 1, 0 },
    { 1, { 1 }, { 1 }, { 1 }, { 1 }, { 0 }, { 0 }, 0, 0 },
    { 3, { 4, 5, 6 }, { 2, 3, 2 }, { 2, 1, 2 }, { 1, 1, 2 }, { 1, 1, 0 }, { 0, 1, 1 }, 0, 0 },   /* generic path */
};

TEST(maxpool_backward_matches_naive_with_ties)
{
    for (size_t i = 0; i < sizeof maxgrad_cases / sizeof maxgrad_cases[0]; i++)
        for (int fill = 0; fill < 3; fill++) {
            const pool_case *t = &maxgrad_cases[i];
            int64_t xs[5];
            /* fill 0: random; 1: values in {-1, 0, 1}, ties in most windows; 2: ties with NaN and -inf */
            qs_tensor *x = rand_t(case_shape(t, 2, 3, xs), xs), *y;
            for (int64_t k = 0; fill && k < qs_numel(x); k++) {
                float v = qs_f32(x)[k];
                qs_f32(x)[k] = v < -0.33f ? -1.f : v < 0.33f ? 0.f : 1.f;
                if (fill == 2 && v < -0.8f)
                    qs_f32(x)[k] = NAN;
                if (fill == 2 && v > 0.7f)
                    qs_f32(x)[k] = -INFINITY;
            }
            qs_node n = case_node("MaxPool", t);
            opcheck_forward(&n, 12, 1, &x, 1, &y);
            qs_tensor *dy = rand_t(y->ndim, y->shape);
            int64_t xvol = qs_numel(x) / 6, yvol = qs_numel(y) / 6;
            float *ref = malloc(qs_numel(x) * sizeof *ref);
            for (int p = 0; p < 6; p++)
                maxpool_grad_ref(t, qs_f32(x) + p * xvol, qs_f32(dy) + p * yvol, ref + p * xvol);
            for (int nt = 1; nt <= 3; nt++) {
                qs_tensor *dx = maxpool_backward(&n, x, y, dy, nt);
                if (memcmp(dx->data, ref, qs_nbytes(dx)))
                    for (int64_t k = 0; k < qs_numel(dx); k++)
                        if (memcmp(&qs_f32(dx)[k], &ref[k], sizeof *ref))
                            QT_FAIL_("case %zu, fill %d, %d threads: dx[%lld] = %.9g, naive %.9g", i, fill, nt,
                                     (long long)k, qs_f32(dx)[k], ref[k]);
                qs_tensor_free(dx);
            }
            free(ref);
            qs_tensor_free(dy);
            qs_tensor_free(x);
            qs_tensor_free(y);
        }
    opcheck_pools_free();
}

/* ---- bad input ------------------------------------------------------------------------------------------ */

static void expect_error(qs_node *n, qs_tensor *x, int code, const char *needle)
{
    qs_tensor *y[1];
    qs_err e = {0};
    int rc = opcheck_run(n, 13, 1, &x, 1, y, 0, &e);
    ASSERT_EQ(rc, code);
    ASSERT_STR_CONTAINS(e.msg, needle);
}

TEST(pool_bad_input_named)
{
    qs_tensor *x = rand_t(4, (int64_t[]){ 1, 2, 5, 5 });
    qs_node n = opcheck_node("MaxPool", NULL);
    n.name = (char *)"pool1";
    expect_error(&n, x, QS_EINVAL, "MaxPool 'pool1': kernel_shape is required");
    qs_node_set_ints(&n, "kernel_shape", 1, (int64_t[]){ 2 });
    expect_error(&n, x, QS_EINVAL, "kernel_shape has 1 values, expected 2");
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 2, 2 });
    qs_node_set_ints(&n, "pads", 2, (int64_t[]){ 1, 1 });
    expect_error(&n, x, QS_EINVAL, "pads has 2 values, expected 4");
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ 0, 0, 0, 0 });
    qs_node_set_ints(&n, "kernel_shape", 2, (int64_t[]){ 6, 2 });
    expect_error(&n, x, QS_ESHAPE, "larger than the padded input");
    qs_node a = opcheck_node("AveragePool", NULL);
    qs_node_set_ints(&a, "kernel_shape", 2, (int64_t[]){ 2, 2 });
    expect_error(&a, rand_t(2, (int64_t[]){ 2, 5 }), QS_ESHAPE, "at least one spatial dim");
    expect_error(&a, qs_tensor_new(QS_U8, 4, (int64_t[]){ 1, 1, 2, 2 }), QS_EUNSUPPORTED, "only float32");
}

TEST_MAIN(maxpool_hand_computed, pool_ceil_mode_drops_window_starting_in_padding, pool_auto_pad,
          averagepool_count_include_pad, global_pools_hand_computed, maxpool_indices_and_int8, pools_match_reference,
          pools_backward_match_finite_differences, maxpool_backward_matches_naive_with_ties,
          pools_two_threads_match_one, pool_bad_input_named)
