/* Quantizers against hand-computed values, the fast path against the reference, and FakeQuant's
 * gradients against the paper's formulas (§4.1–4.2) and finite differences where they apply. */
#include "tests/opcheck.h"
#include "engine/quant/quantizer.h"

TEST(grids)
{
    qs_grid g = qs_grid_make(8, 1);
    ASSERT_EQ(g.qmin, -128);
    ASSERT_EQ(g.qmax, 127);
    g = qs_grid_make(8, 0);
    ASSERT_EQ(g.qmin, 0);
    ASSERT_EQ(g.qmax, 255);
    g = qs_grid_make(4, 1);
    ASSERT_EQ(g.qmin, -8);
    ASSERT_EQ(g.qmax, 7);
    g = qs_grid_make(16, 0);
    ASSERT_EQ(g.qmax, 65535);
}

TEST(qparams_by_hand)
{
    float s;
    int32_t z;
    /* asymmetric uint8 over [-1, 3]: s = 4/255, z = round(0 + 1/s) = round(63.75) = 64 */
    qs_qparams_from_range(qs_grid_make(8, 0), -1.f, 3.f, 0, 0, &s, &z);
    ASSERT_CLOSE(s, 4.0 / 255, 1e-7, 0);
    ASSERT_EQ(z, 64);
    /* symmetric int8 over [-2, 1]: s = 2/127, z = 0 */
    qs_qparams_from_range(qs_grid_make(8, 1), -2.f, 1.f, 1, 0, &s, &z);
    ASSERT_CLOSE(s, 2.0 / 127, 1e-7, 0);
    ASSERT_EQ(z, 0);
    /* a range not containing 0 is widened to include it: [2, 6] → [0, 6] */
    qs_qparams_from_range(qs_grid_make(8, 0), 2.f, 6.f, 0, 0, &s, &z);
    ASSERT_CLOSE(s, 6.0 / 255, 1e-7, 0);
    ASSERT_EQ(z, 0);
    /* power of two: 2/127 = 0.01575 → 1/64 */
    qs_qparams_from_range(qs_grid_make(8, 1), -2.f, 1.f, 1, 1, &s, &z);
    ASSERT_CLOSE(s, 1.0 / 32, 0, 0);   /* 2/127 = 0.01575 > 2^-6, so up to 2^-5 */
    /* degenerate */
    qs_qparams_from_range(qs_grid_make(8, 0), 0.f, 0.f, 0, 0, &s, &z);
    ASSERT_EQ(s, 1);
    ASSERT_EQ(z, 0);
}

TEST(round_half_to_even_and_clamp)
{
    qs_grid g = qs_grid_make(8, 1);
    ASSERT_EQ(qs_quantize1(2.5f, 1, 0, g), 2);
    ASSERT_EQ(qs_quantize1(3.5f, 1, 0, g), 4);
    ASSERT_EQ(qs_quantize1(-2.5f, 1, 0, g), -2);
    ASSERT_EQ(qs_quantize1(-0.5f, 1, 0, g), 0);
    ASSERT_EQ(qs_quantize1(1000.f, 1, 0, g), 127);
    ASSERT_EQ(qs_quantize1(-1000.f, 1, 0, g), -128);
    ASSERT_EQ(qs_quantize1(0.3f, 0.1f, 10, g), 13);
    /* fake quant: x = 0.26, s = 0.1 → 3 → 0.3 */
    ASSERT_CLOSE(qs_fake_quant1(0.26f, 0.1f, 0, g), 0.3, 1e-6, 0);
}

TEST(fast_path_matches_reference)
{
    int64_t shape[] = {3, 4, 5, 5};
    for (int bits = 2; bits <= 16; bits += 2) {
        qs_grid g = qs_grid_make(bits, bits % 4 == 0);
        qs_tensor *x = opcheck_rand(4, shape, -3, 3), *a = qs_tensor_copy(x), *b = qs_tensor_copy(x);
        /* plant exact ties */
        for (int i = 0; i < 20; i++)
            qs_f32(x)[i * 7] = (i - 10) * 0.5f * 0.05f;
        float s[4] = {0.05f, 0.013f, 0.2f, 1.f}, z[4] = {0, 3, -2, 1};
        if (!g.is_signed)
            z[2] = 5;
        qs_fake_quant_ref(x, a, 1, s, z, g);
        qs_fake_quant(x, b, 1, s, z, g);
        ASSERT_EQ(memcmp(a->data, b->data, qs_nbytes(a)), 0);
        qs_fake_quant_ref(x, a, -1, s, z, g);
        qs_fake_quant(x, b, -1, s, z, g);
        ASSERT_EQ(memcmp(a->data, b->data, qs_nbytes(a)), 0);
        qs_tensor_free(x);
        qs_tensor_free(a);
        qs_tensor_free(b);
    }
}

/* fractional zero points (QAT learns them): the exact vector path, bit-identical to the reference,
 * per channel and per tensor, in place too, ties included, over lengths that are not a multiple of 16 */
TEST(fractional_offsets_match_reference)
{
    int64_t shape[] = { 2, 3, 7, 5 };
    qs_grid g = qs_grid_make(4, 0);
    qs_tensor *x = opcheck_rand(4, shape, -2, 2), *a = qs_tensor_copy(x), *b = qs_tensor_copy(x);
    for (int i = 0; i < 20; i++)
        qs_f32(x)[i * 9] = (i - 10) * 0.5f * 0.1f;
    float s[3] = { 0.1f, 0.037f, 0.5f }, z[3] = { 7.3f, 2.5f, -0.75f };
    qs_fake_quant_ref(x, a, 1, s, z, g);
    qs_fake_quant(x, b, 1, s, z, g);
    ASSERT_EQ(memcmp(a->data, b->data, qs_nbytes(a)), 0);
    qs_fake_quant_ref(x, a, -1, s, z, g);
    memcpy(b->data, x->data, qs_nbytes(x));
    qs_fake_quant(b, b, -1, s, z, g);
    ASSERT_EQ(memcmp(a->data, b->data, qs_nbytes(a)), 0);
    qs_tensor_free(x);
    qs_tensor_free(a);
    qs_tensor_free(b);
}

/* int32 bias grids: |x/s| beyond 2^22 must still round exactly like the reference */
TEST(wide_grids_match_reference)
{
    qs_grid g = {.bits = 32, .is_signed = 1, .qmin = -2147483648.f, .qmax = 2147483520.f};
    int64_t n = 1000;
    qs_tensor *x = qs_tensor_new(QS_F32, 1, &n), *a = qs_tensor_new(QS_F32, 1, &n), *b = qs_tensor_new(QS_F32, 1, &n);
    for (int64_t i = 0; i < n; i++)
        qs_f32(x)[i] = opcheck_uniform(-50, 50);
    float s = 1e-7f, z = 0;
    qs_fake_quant_ref(x, a, -1, &s, &z, g);
    qs_fake_quant(x, b, -1, &s, &z, g);
    ASSERT_EQ(memcmp(a->data, b->data, qs_nbytes(a)), 0);
    qs_tensor_free(x);
    qs_tensor_free(a);
    qs_tensor_free(b);
}

TEST(quantize_tensor_to_int8)
{
    int64_t n = 5;
    float v[] = {-1.f, -0.26f, 0.f, 0.25f, 10.f};
    qs_tensor *x = opcheck_from(1, &n, v), *q = qs_tensor_new(QS_I8, 1, &n);
    float s = 0.1f;
    int32_t z = 0;
    qs_err e = {0};
    ASSERT_EQ(qs_quantize_tensor(x, q, -1, &s, &z, qs_grid_make(8, 1), &e), 0);
    int8_t want[] = {-10, -3, 0, 2, 100};
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(qs_i8(q)[i], want[i]);
    qs_tensor_free(x);
    qs_tensor_free(q);
}

/* FakeQuant node: forward, and gradients by the formulas */
TEST(fakequant_forward_and_ste_lsq_gradients)
{
    qs_node n = opcheck_node("FakeQuant", "quantd");
    qs_attr attrs[2] = {{.name = "qmin", .type = QS_ATTR_INT, .i = 0}, {.name = "qmax", .type = QS_ATTR_INT, .i = 15}};
    n.attr = attrs;
    n.nattr = 2;
    int64_t len = 4, one = 1;
    float xv[] = {-1.0f, 0.26f, 0.74f, 5.0f}, sv = 0.1f, zv = 3.f;
    qs_tensor *in[3] = {opcheck_from(1, &len, xv), opcheck_from(1, &one, &sv), opcheck_from(1, &one, &zv)};
    qs_tensor *out[1];
    opcheck_forward(&n, 13, 3, in, 1, out);
    /* x/s + z = -7 → clamp 0 → -0.3;  2.6+3 → 6 → 0.3;  7.4+3 → 10 → 0.7;  50+3 → 15 → 1.2 */
    float want[] = {-0.3f, 0.3f, 0.7f, 1.2f};
    for (int i = 0; i < 4; i++)
        ASSERT_CLOSE(qs_f32(out[0])[i], want[i], 1e-6, 1e-7);
    const qs_op_def *d = qs_op_find("quantd", "FakeQuant");
    float dyv[] = {1.f, 2.f, 3.f, 4.f};
    qs_tensor *dy = opcheck_from(1, &len, dyv);
    qs_tensor *dx = qs_tensor_new(QS_F32, 1, &len), *ds = qs_tensor_new(QS_F32, 1, &one),
              *dz = qs_tensor_new(QS_F32, 1, &one);
    qs_tensor *din[3] = {dx, ds, dz}, *dout[1] = {dy};
    qs_err e = {0};
    qs_kctx c = {.node = &n, .opset = 13, .nin = 3, .nout = 1, .in = in, .out = out, .din = din, .dout = dout,
                 .err = &e};
    ASSERT_EQ(d->backward(&c), 0);
    float wdx[] = {0, 2, 3, 0};
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(qs_f32(dx)[i], wdx[i]);
    /* ds = 1·(0−3) + 2·(3 − 2.6) + 3·(7 − 7.4) + 4·(15 − 3) */
    double wds = 1 * (0 - 3.0) + 2 * (3 - 0.26 / 0.1) + 3 * (7 - 0.74 / 0.1) + 4 * (15 - 3.0);
    ASSERT_CLOSE(qs_f32(ds)[0], wds, 1e-5, 1e-5);
    /* dz = −s for the clamped ones: −0.1·1 − 0.1·4 */
    ASSERT_CLOSE(qs_f32(dz)[0], -0.5, 1e-6, 1e-7);
}

/* Where the grid clamps, y = (q − z)·s is smooth in s, z and x: finite differences apply. */
TEST(fakequant_gradients_match_finite_differences_when_clamped)
{
    qs_node n = opcheck_node("FakeQuant", "quantd");
    qs_attr attrs[3] = {{.name = "qmin", .type = QS_ATTR_INT, .i = -8}, {.name = "qmax", .type = QS_ATTR_INT, .i = 7},
                        {.name = "axis", .type = QS_ATTR_INT, .i = 1}};
    n.attr = attrs;
    n.nattr = 3;
    int64_t shape[] = {2, 3}, three = 3;
    float xv[] = {-9.f, 12.f, 30.f, 20.f, -17.f, -40.f}, sv[] = {0.5f, 1.f, 2.f}, zv[] = {1.f, -1.f, 0.f};
    qs_tensor *in[3] = {opcheck_from(2, shape, xv), opcheck_from(1, &three, sv), opcheck_from(1, &three, zv)};
    opcheck_grad(&n, 13, 3, in, 1, 1e-3, 1e-2, 1e-3);
}

/* The vectorized, threaded backward against the formulas in double, element by element, on a
 * per-tensor quantizer long enough to be cut into pieces (and not a multiple of 16), with a
 * fractional zero point (QAT learns it), on 1 and 3 threads; and without dx. */
TEST(fakequant_backward_large_matches_formulas)
{
    qs_node n = opcheck_node("FakeQuant", "quantd");
    qs_attr attrs[2] = {{.name = "qmin", .type = QS_ATTR_INT, .i = 0}, {.name = "qmax", .type = QS_ATTR_INT, .i = 255}};
    n.attr = attrs;
    n.nattr = 2;
    int64_t len = 100003, one = 1;
    float sv = 0.05f, zv = 100.3f;
    qs_tensor *x = qs_tensor_new(QS_F32, 1, &len), *dy = qs_tensor_new(QS_F32, 1, &len);
    uint32_t r = 12345;
    for (int64_t i = 0; i < len; i++) {   /* x over [−8, 10]: about a third clamped on each side */
        r = r * 1664525u + 1013904223u;
        qs_f32(x)[i] = -8.f + 18.f * (float)(r >> 8) / 16777216.f;
        qs_f32(dy)[i] = (float)((int)(r % 7) - 3) / 3.f;
    }
    double wds = 0, wdz = 0;
    float *wdx = malloc(len * sizeof *wdx);
    for (int64_t i = 0; i < len; i++) {
        float v = qs_f32(x)[i] / sv, rv = nearbyintf(v), q = rv + zv, d = qs_f32(dy)[i];
        int out = q < 0 || q > 255;
        wdx[i] = out ? 0.f : d;
        wds += d * (q < 0 ? 0 - (double)zv : q > 255 ? 255 - (double)zv : (double)rv - v);
        wdz += out ? -(double)d * sv : 0;
    }
    qs_tensor *in[3] = {x, opcheck_from(1, &one, &sv), opcheck_from(1, &one, &zv)};
    qs_tensor *out[1] = {qs_tensor_new(QS_F32, 1, &len)};
    const qs_op_def *d = qs_op_find("quantd", "FakeQuant");
    for (int threads = 1; threads <= 3; threads += 2)
        for (int with_dx = 0; with_dx < 2; with_dx++) {
            qs_tensor *dx = qs_tensor_new(QS_F32, 1, &len), *ds = qs_tensor_new(QS_F32, 1, &one),
                      *dz = qs_tensor_new(QS_F32, 1, &one);
            qs_tensor *din[3] = {with_dx ? dx : NULL, ds, dz}, *dout[1] = {dy};
            qs_err e = {0};
            qs_kctx c = {.node = &n, .opset = 13, .nin = 3, .nout = 1, .in = in, .out = out, .din = din,
                         .dout = dout, .err = &e, .pool = opcheck_pool(threads), .nthreads = threads};
            ASSERT_EQ(d->backward(&c), 0);
            for (int64_t i = 0; with_dx && i < len; i++)
                ASSERT_EQ(qs_f32(dx)[i], wdx[i]);
            ASSERT_CLOSE(qs_f32(ds)[0], wds, 1e-5, 1e-2);
            ASSERT_CLOSE(qs_f32(dz)[0], wdz, 1e-5, 1e-3);
            qs_tensor_free(dx);
            qs_tensor_free(ds);
            qs_tensor_free(dz);
        }
    free(wdx);
}

/* FakeQuant's backward for one channel's n elements, element by element in the kernel's order of
 * additions: 16 partial sums in double (element i into lane i mod 16 for the whole blocks of 16, the
 * rest into lane 0), added in lane order */
static void fqb_lanes(const float *x, const float *dy, float *dx, int64_t n, float s, float z, float qmin, float qmax,
                      double *gs, double *gz)
{
    double as[16] = {0}, az[16] = {0};
    for (int64_t i = 0; i < n; i++) {
        int l = i < n / 16 * 16 ? (int)(i % 16) : 0;
        float v = x[i] / s, r = nearbyintf(v), q = r + z, d = dy[i];
        int lo = q < qmin, hi = q > qmax;
        float t = lo ? qmin - z : hi ? qmax - z : r - v, p = d * t;   /* the product rounded to float */
        if (dx)
            dx[i] = lo || hi ? 0.f : d;
        as[l] += p;
        az[l] += lo || hi ? d : 0.f;
    }
    for (int l = 0; l < 16; l++) {
        *gs += as[l];
        *gz += az[l];
    }
}

/* The vectorized backward bit for bit against fqb_lanes, with the op's split into pieces (a
 * per-tensor quantizer's span in at most 256 pieces of at least 16384 elements, their sums added in
 * order) and per-channel rows: lengths around the blocks of 16, x on the half-way points of the grid
 * (s a power of two, so x/s is exact and rounds half to even) and past both ends, whole and
 * fractional zero points, 1-3 threads, with and without dx. */
TEST(fakequant_backward_bitwise_matches_elementwise)
{
    const int64_t lens[] = {1, 7, 15, 16, 17, 33, 100003, 16384 * 3 + 5};
    const struct { int64_t shape[3]; int ndim, axis; } chans[] = {
        {{2, 3, 37}, 3, 1}, {{5, 8, 16}, 3, 1}, {{33, 4, 1}, 2, 0}, {{3, 70000, 1}, 2, 1}};
    const int ncase = (int)(sizeof lens / sizeof lens[0] + sizeof chans / sizeof chans[0]);
    const qs_op_def *d = qs_op_find("quantd", "FakeQuant");
    uint32_t r = 777;
    for (int ci = 0; ci < ncase; ci++)
        for (int variant = 0; variant < 4; variant++) {
            int per_tensor = ci < (int)(sizeof lens / sizeof lens[0]);
            int64_t shape[3] = {per_tensor ? lens[ci] : 0, 1, 1};
            int ndim = 1, axis = -1;
            if (!per_tensor) {
                memcpy(shape, chans[ci - (int)(sizeof lens / sizeof lens[0])].shape, sizeof shape);
                ndim = chans[ci - (int)(sizeof lens / sizeof lens[0])].ndim;
                axis = chans[ci - (int)(sizeof lens / sizeof lens[0])].axis;
            }
            int64_t nch = per_tensor ? 1 : shape[axis], outer = 1, inner = 1;
            for (int k = 0; k < axis; k++) outer *= shape[k];
            for (int k = axis + 1; k < ndim; k++) inner *= shape[k];
            if (per_tensor) inner = shape[0];
            float qmin = variant & 1 ? -8.f : 0.f, qmax = variant & 1 ? 7.f : 15.f;
            qs_node n = opcheck_node("FakeQuant", "quantd");
            qs_attr attrs[3] = {{.name = "qmin", .type = QS_ATTR_INT, .i = (int64_t)qmin},
                                {.name = "qmax", .type = QS_ATTR_INT, .i = (int64_t)qmax},
                                {.name = "axis", .type = QS_ATTR_INT, .i = axis}};
            n.attr = attrs;
            n.nattr = per_tensor ? 2 : 3;
            qs_tensor *x = qs_tensor_new(QS_F32, ndim, shape), *dy = qs_tensor_new(QS_F32, ndim, shape);
            qs_tensor *st = qs_tensor_new(QS_F32, 1, &nch), *zt = qs_tensor_new(QS_F32, 1, &nch);
            for (int64_t c = 0; c < nch; c++) {
                qs_f32(st)[c] = variant & 2 ? 0.25f : 0.05f + 0.01f * (float)c;
                qs_f32(zt)[c] = variant & 2 ? (float)(c % 3) : 2.3f + 0.1f * (float)c;
            }
            int64_t len = qs_numel(x);
            for (int64_t i = 0; i < len; i++) {
                r = r * 1664525u + 1013904223u;
                int64_t c = per_tensor ? 0 : i / inner % nch;
                /* a third of the elements on the half-way points x/s = k + 1/2, from below qmin to above qmax */
                float k = (float)((int)(r >> 16) % 40 - 20) + 0.5f;
                qs_f32(x)[i] = r % 3 == 0 ? k * qs_f32(st)[c] : qs_f32(st)[c] * (-20.f + 40.f * (float)(r >> 8) / 16777216.f);
                qs_f32(dy)[i] = (float)((int)(r % 11) - 5) / 7.f;
            }
            float *wdx = malloc(len * sizeof *wdx), *wds = calloc(nch, sizeof *wds), *wdz = calloc(nch, sizeof *wdz);
            if (per_tensor) {
                int64_t pieces = (len + 16383) / 16384;
                if (pieces > 256)
                    pieces = 256;
                int64_t piece = (len + pieces - 1) / pieces;
                double gs = 0, gz = 0;
                for (int64_t p = 0; p < pieces; p++) {
                    int64_t b = p * piece, e = b + piece < len ? b + piece : len;
                    double ps = 0, pz = 0;
                    if (b < e)
                        fqb_lanes(qs_f32(x) + b, qs_f32(dy) + b, wdx + b, e - b, qs_f32(st)[0], qs_f32(zt)[0], qmin, qmax,
                                  &ps, &pz);
                    gs += ps;
                    gz += pz;
                }
                wds[0] = (float)gs;
                wdz[0] = (float)(-qs_f32(st)[0] * gz);
            } else {
                for (int64_t o = 0; o < outer; o++)
                    for (int64_t c = 0; c < nch; c++) {
                        double gs = 0, gz = 0;
                        int64_t b = (o * nch + c) * inner;
                        fqb_lanes(qs_f32(x) + b, qs_f32(dy) + b, wdx + b, inner, qs_f32(st)[c], qs_f32(zt)[c], qmin, qmax,
                                  &gs, &gz);
                        wds[c] += (float)gs;
                        wdz[c] += (float)(-qs_f32(st)[c] * gz);
                    }
            }
            qs_tensor *in[3] = {x, st, zt}, *out[1] = {qs_tensor_new(QS_F32, ndim, shape)};
            for (int threads = 1; threads <= 3; threads++)
                for (int with_dx = 0; with_dx < 2; with_dx++) {
                    qs_tensor *dx = qs_tensor_new(QS_F32, ndim, shape), *ds = qs_tensor_new(QS_F32, 1, &nch),
                              *dz = qs_tensor_new(QS_F32, 1, &nch);
                    qs_tensor *din[3] = {with_dx ? dx : NULL, ds, dz}, *dout[1] = {dy};
                    qs_err e = {0};
                    qs_kctx c = {.node = &n, .opset = 13, .nin = 3, .nout = 1, .in = in, .out = out, .din = din,
                                 .dout = dout, .err = &e, .pool = opcheck_pool(threads), .nthreads = threads};
                    ASSERT_EQ(d->backward(&c), 0);
                    if (with_dx && memcmp(dx->data, wdx, qs_nbytes(dx)))
                        QT_FAIL_("case %d variant %d, %d threads: dx differs", ci, variant, threads);
                    for (int64_t ch = 0; ch < nch; ch++)
                        if (memcmp(&qs_f32(ds)[ch], &wds[ch], sizeof *wds) || memcmp(&qs_f32(dz)[ch], &wdz[ch], sizeof *wdz))
                            QT_FAIL_("case %d variant %d, %d threads, channel %lld: ds %.9g dz %.9g, element by element "
                                     "%.9g %.9g", ci, variant, threads, (long long)ch, qs_f32(ds)[ch], qs_f32(dz)[ch],
                                     wds[ch], wdz[ch]);
                    qs_tensor_free(dx);
                    qs_tensor_free(ds);
                    qs_tensor_free(dz);
                }
            free(wdx);
            free(wds);
            free(wdz);
            qs_tensor_free(out[0]);
            qs_tensor_free(x);
            qs_tensor_free(dy);
            qs_tensor_free(st);
            qs_tensor_free(zt);
        }
    opcheck_pools_free();
}

/* The FakeQuant op's forward, split across 1-3 threads (a per-tensor quantizer's one row cut into
 * pieces; per-channel rows, with channels inner and outer), bit for bit against the reference */
TEST(fakequant_forward_threads_match_reference)
{
    const struct { int64_t shape[3]; int ndim, axis; } cases[] = {
        {{100003, 1, 1}, 1, -1}, {{16384 * 3 + 5, 1, 1}, 1, -1}, {{7, 1, 1}, 1, -1},
        {{64, 3, 9}, 3, 0}, {{4, 6, 5000}, 3, 1}, {{3, 70000, 1}, 2, 1}};
    uint32_t r = 99;
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        int axis = cases[ci].axis, ndim = cases[ci].ndim;
        const int64_t *shape = cases[ci].shape;
        int64_t nch = axis < 0 ? 1 : shape[axis];
        qs_node n = opcheck_node("FakeQuant", "quantd");
        qs_attr attrs[3] = {{.name = "qmin", .type = QS_ATTR_INT, .i = -8}, {.name = "qmax", .type = QS_ATTR_INT, .i = 7},
                            {.name = "axis", .type = QS_ATTR_INT, .i = axis}};
        n.attr = attrs;
        n.nattr = axis < 0 ? 2 : 3;
        qs_tensor *x = qs_tensor_new(QS_F32, ndim, shape), *st = qs_tensor_new(QS_F32, 1, &nch),
                  *zt = qs_tensor_new(QS_F32, 1, &nch), *want = qs_tensor_new(QS_F32, ndim, shape);
        for (int64_t c = 0; c < nch; c++) {
            qs_f32(st)[c] = 0.03f + 0.001f * (float)(c % 17);
            qs_f32(zt)[c] = ci % 2 ? 0.4f * (float)(c % 3) : (float)(c % 3) - 1.f;   /* fractional and whole */
        }
        for (int64_t i = 0; i < qs_numel(x); i++) {
            r = r * 1664525u + 1013904223u;
            qs_f32(x)[i] = -0.4f + 0.8f * (float)(r >> 8) / 16777216.f;
        }
        qs_grid g = {.qmin = -8, .qmax = 7};
        qs_fake_quant_ref(x, want, axis, qs_f32(st), qs_f32(zt), g);
        qs_tensor *in[3] = {x, st, zt};
        for (int threads = 1; threads <= 3; threads++) {
            qs_tensor *out[1] = {qs_tensor_new(QS_F32, ndim, shape)};
            qs_err e = {0};
            qs_kctx c = {.node = &n, .opset = 13, .nin = 3, .nout = 1, .in = in, .out = out, .err = &e,
                         .pool = opcheck_pool(threads), .nthreads = threads};
            ASSERT_EQ(qs_op_find("quantd", "FakeQuant")->forward(&c), 0);
            if (memcmp(out[0]->data, want->data, qs_nbytes(want)))
                QT_FAIL_("case %d, %d threads: differs from the reference", ci, threads);
            qs_tensor_free(out[0]);
        }
        qs_tensor_free(x);
        qs_tensor_free(st);
        qs_tensor_free(zt);
        qs_tensor_free(want);
    }
    opcheck_pools_free();
}

TEST(fakequant_refuses_bad_scale)
{
    qs_node n = opcheck_node("FakeQuant", "quantd");
    int64_t len = 2, one = 1;
    float xv[] = {1, 2}, sv = 0.f, zv = 0;
    qs_tensor *in[3] = {opcheck_from(1, &len, xv), opcheck_from(1, &one, &sv), opcheck_from(1, &one, &zv)};
    qs_tensor *out[1];
    qs_err e = {0};
    ASSERT(opcheck_run(&n, 13, 3, in, 1, out, 0, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "scale[0]");
}

TEST_MAIN(grids, qparams_by_hand, round_half_to_even_and_clamp, fast_path_matches_reference, fractional_offsets_match_reference, wide_grids_match_reference,
          quantize_tensor_to_int8,
          fakequant_forward_and_ste_lsq_gradients, fakequant_gradients_match_finite_differences_when_clamped,
          fakequant_backward_large_matches_formulas, fakequant_backward_bitwise_matches_elementwise,
          fakequant_forward_threads_match_reference,
          fakequant_refuses_bad_scale)
