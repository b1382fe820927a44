/* High-bias absorption (paper §3.2.2): worked out by hand on Conv → BN → ReLU → Conv, the records
 * kept consistent after equalization, the pairs it must leave alone (a zero-padded layer 2), and
 * c bounded by the calibration data's pre-activation minima (quant/preact.c). */
#include <unistd.h>

#include "tests/cle_util.h"
#include "engine/data.h"
#include "engine/quant/bnfold.h"
#include "engine/quant/preact.h"

/* --- high-bias absorption ------------------------------------------------------------------------ */

/* Conv c1 (3 → 4, small weights) → BN (μ 0, var 4, γ, β as given) → Relu → Conv c2 (4 → 3, 3×3,
 * padding pad). |c1's output| ≤ 27·0.1·1 = 2.7, so BN's output ≥ β − 1.35·γ > β − 3γ = c: the
 * ReLU never sees a value below c and absorption is exact (away from c2's padded borders). */
static qs_graph *absorb_graph(int pad)
{
    qs_graph *g = graph();
    int64_t xs[] = { 2, 3, 6, 6 }, ws[] = { 4, 3, 3, 3 }, c = 4;
    input(g, "x", 4, xs);
    int in1[] = { val(g, "x"), init(g, "c1_W", 4, ws, -0.1f, 0.1f), init(g, "c1_b", 1, &c, -0.1f, 0.1f) };
    int64_t pads[] = { 1, 1, 1, 1 };
    qs_node_set_ints(node(g, "Conv", "c1", 3, in1, "h"), "pads", 4, pads);
    float gamma[] = { 0.5f, 1, 0.2f, 2 }, beta[] = { 3, 4, 0.1f, 1 }, mean[] = { 0, 0, 0, 0 }, var[] = { 4, 4, 4, 4 };
    int bn_in[] = { val(g, "h"), init_t(g, "g", opcheck_from(1, &c, gamma)), init_t(g, "be", opcheck_from(1, &c, beta)),
                    init_t(g, "mu", opcheck_from(1, &c, mean)), init_t(g, "var", opcheck_from(1, &c, var)) };
    qs_node_set_float(node(g, "BatchNormalization", "bn", 5, bn_in, "hb"), "epsilon", 0.f);
    act(g, "Relu", "relu", "hb", "a");
    conv(g, "c2", "a", 4, 3, 3, 1, 1.f, pad, "y");
    output(g, "y");
    return g;
}

TEST(absorption_by_hand_preserves_outputs)
{
    qs_graph *g = absorb_graph(0);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    ASSERT_EQ(nbn, 1);
    qs_tensor *b1 = qs_tensor_copy(bias(g, "c1")), *b2 = qs_tensor_copy(bias(g, "c2"));
    const qs_tensor *w2 = weight(g, "c2");
    int64_t xs[] = { 2, 3, 6, 6 };
    qs_tensor *x = opcheck_rand(4, xs, -1, 1), *before = run(g, x);
    qs_cle_config cfg = qs_cle_config_default();
    cfg.equalize = 0;
    qs_cle_report *r = cle(g, bn, nbn, &cfg);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    ASSERT_EQ(r->nabsorbed, 1);
    /* c = max(0, β − 3γ) = (1.5, 1, 0, 0) */
    double c[4] = { 1.5, 1, 0, 0 };
    for (int i = 0; i < 4; i++) {
        ASSERT_CLOSE(r->pairs[0].absorbed[i], c[i], 1e-6, 1e-7);
        ASSERT_CLOSE(qs_f32(bias(g, "c1"))[i], qs_f32(b1)[i] - c[i], 1e-6, 1e-6);
        ASSERT_CLOSE(bn[0].beta[i], (i == 0 ? 3 : i == 1 ? 4 : i == 2 ? 0.1 : 1) - c[i], 1e-6, 1e-7);
    }
    /* b2[m] += Σ_i Σ_taps W2[m, i, taps] · c_i */
    for (int m = 0; m < 3; m++) {
        double d = 0;
        for (int i = 0; i < 4; i++)
            for (int t = 0; t < 9; t++)
                d += qs_f32(w2)[(m * 4 + i) * 9 + t] * c[i];
        ASSERT_CLOSE(qs_f32(bias(g, "c2"))[m], qs_f32(b2)[m] + d, 1e-5, 1e-6);
    }
    qs_cle_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_tensor_free(b1);
    qs_tensor_free(b2);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(absorption_after_equalization_keeps_records_consistent)
{
    qs_graph *g = absorb_graph(0);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    float beta0[4], gamma0[4];
    memcpy(beta0, bn[0].beta, sizeof beta0);
    memcpy(gamma0, bn[0].gamma, sizeof gamma0);
    int64_t xs[] = { 2, 3, 6, 6 };
    qs_tensor *x = opcheck_rand(4, xs, -1, 1), *before = run(g, x);
    qs_cle_report *r = cle(g, bn, nbn, NULL);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    for (int i = 0; i < 4; i++) {
        double s = r->pairs[0].scale[i];
        /* the record follows the channel: γ/s, β/s − c, with c from the scaled statistics */
        double c = fmax(0, beta0[i] / s - 3 * gamma0[i] / s);
        ASSERT_CLOSE(r->pairs[0].absorbed[i], c, 1e-5, 1e-6);
        ASSERT_CLOSE(bn[0].gamma[i], gamma0[i] / s, 1e-5, 0);
        ASSERT_CLOSE(bn[0].beta[i], beta0[i] / s - c, 1e-5, 1e-6);
    }
    qs_cle_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(absorption_into_padded_layer_skipped)
{
    /* c2 zero-pads: its padded taps would never see c, so absorbing would change the border outputs
     * (by W2·c over the missing taps). The pair is skipped with its reason and nothing changes. */
    qs_graph *g = absorb_graph(1);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    int64_t xs[] = { 2, 3, 6, 6 };
    qs_tensor *x = opcheck_rand(4, xs, -1, 1), *before = run(g, x);
    qs_cle_config cfg = qs_cle_config_default();
    cfg.equalize = 0;
    qs_cle_report *r = cle(g, bn, nbn, &cfg);
    qs_tensor *after = run(g, x);
    ASSERT_EQ(r->nabsorbed, 0);
    ASSERT_EQ(r->nskipped, 1);
    ASSERT(strstr(r->skipped[0].reason, "zero-pads"));
    ASSERT(r->pairs[0].absorbed == NULL);
    for (int64_t i = 0; i < qs_numel(after); i++)
        ASSERT_EQ(qs_f32(after)[i], qs_f32(before)[i]);
    ASSERT_CLOSE(bn[0].beta[1], 4.f, 0, 0);   /* the record is untouched too */
    qs_cle_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

/* preact_minima stand-in: fixed minima, and a record of the nodes asked for */
typedef struct fixed_min { const float *m; int64_t nch; int calls, asked; } fixed_min;

static int give_minima(void *ud, qs_graph *g, const int *nodes, int n, float ***mins, qs_err *e)
{
    (void)e;
    fixed_min *f = ud;
    f->calls++;
    *mins = calloc(n, sizeof **mins);
    for (int k = 0; k < n; k++)
        if (nodes[k] >= 0) {
            ASSERT_STR_EQ(g->nodes[nodes[k]].name, "c1");
            f->asked++;
            (*mins)[k] = malloc(f->nch * sizeof(float));
            memcpy((*mins)[k], f->m, f->nch * sizeof(float));
        }
    return 0;
}

TEST(absorption_bounded_by_data_minima)
{
    /* β − 3|γ| = {1.5, 1, <0, <0}; the data's minima {0.5, 2, 1, −1} lower the first: c = {0.5, 1, 0, 0} */
    qs_graph *g = absorb_graph(0);
    qs_err e = {0};
    qs_bn_record *bn;
    int nbn;
    ASSERT_EQ(qs_bnfold(g, &bn, &nbn, &e), 0);
    int64_t xs[] = { 2, 3, 6, 6 };
    qs_tensor *x = opcheck_rand(4, xs, -1, 1), *before = run(g, x);
    float m[] = { 0.5f, 2, 1, -1 };
    fixed_min f = { .m = m, .nch = 4 };
    qs_cle_config cfg = qs_cle_config_default();
    cfg.equalize = 0;
    cfg.preact_minima = give_minima;
    cfg.preact_ud = &f;
    qs_cle_report *r = cle(g, bn, nbn, &cfg);
    ASSERT_EQ(f.calls, 1);
    ASSERT_EQ(f.asked, 1);
    ASSERT_EQ(r->nabsorbed, 1);
    ASSERT(r->absorb_data);
    double c[] = { 0.5, 1, 0, 0 };
    for (int i = 0; i < 4; i++)
        ASSERT_CLOSE(r->pairs[0].absorbed[i], c[i], 1e-6, 1e-7);
    qs_tensor *after = run(g, x);
    assert_same(after, before, 1e-5);
    qs_cle_report_free(r);
    qs_bn_records_free(bn, nbn);
    qs_tensor_free(x);
    qs_tensor_free(before);
    qs_tensor_free(after);
    qs_graph_free(g);
}

TEST(preact_minima_match_the_layer_outputs)
{
    /* x → c1 (3 → 4, 3×3, pad 1) → Relu: the minima are of c1's output (which Relu fusion would
     * hide), over 5 samples run in batches of 2 (a partial last batch) */
    qs_graph *g = graph();
    int64_t xs[] = { 5, 3, 6, 6 };
    input(g, "x", 4, xs);
    conv(g, "c1", "x", 3, 4, 3, 1, 1.f, 1, "h");
    output(g, "h");
    qs_tensor *x = opcheck_rand(4, xs, -1, 1), *h = run(g, x);
    double want[4];
    for (int c = 0; c < 4; c++) {
        want[c] = INFINITY;
        for (int b = 0; b < 5; b++)
            for (int i = 0; i < 36; i++)
                want[c] = fmin(want[c], qs_f32(h)[(b * 4 + c) * 36 + i]);
    }
    act(g, "Relu", "relu", "h", "a");
    g->outputs[0] = val(g, "a");
    qs_err e = {0};
    char dir[] = "/tmp/qs-cle-XXXXXX", path[64];
    ASSERT(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/x.npy", dir);
    ASSERT_EQ(qs_npy_save(path, x, &e), 0);
    qs_pl_data d;
    ASSERT_EQ(qs_pl_open_inputs(path, "calibration", g, &d, &e), 0);
    int nodes[] = { -1, 0 };
    ASSERT_STR_EQ(g->nodes[0].name, "c1");
    float **mins = NULL;
    ASSERT_EQ(qs_preact_minima(g, &d, 5, 2, NULL, NULL, nodes, 2, &mins, &e), 0);
    ASSERT(mins[0] == NULL);
    for (int c = 0; c < 4; c++)
        ASSERT_CLOSE(mins[1][c], want[c], 1e-6, 1e-6);
    ASSERT(want[0] < 0);   /* the pre-activation, not the Relu's output */
    free(mins[1]);
    free(mins);
    qs_pl_close(&d);
    unlink(path);
    rmdir(dir);
    qs_tensor_free(x);
    qs_tensor_free(h);
    qs_graph_free(g);
}

TEST_MAIN(absorption_by_hand_preserves_outputs, absorption_after_equalization_keeps_records_consistent,
          absorption_into_padded_layer_skipped, absorption_bounded_by_data_minima,
          preact_minima_match_the_layer_outputs)
