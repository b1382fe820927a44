/* Cross-layer equalization (paper §3.2) and high-bias absorption (§3.2.2), on an FP32 graph after
 * BN folding.
 *
 *   qs_cle_config cfg = qs_cle_config_default();   // ReLU6 → ReLU, absorption on
 *   qs_cle_report *rep = NULL;
 *   qs_cle(g, bn, nbn, &cfg, &rep, &e);              // rewrites weights and biases of g in place
 *   json_t *j = qs_cle_report_json(rep);             // for report.json / analysis.json
 *   qs_cle_report_free(rep);
 *
 * Pairs: layer 1 → (Relu | LeakyRelu | Clip(0, ∞) | Clip(0, 6) | nothing) → layer 2, where layer
 * 1's output and the activation's output each have exactly one reader and are not graph outputs,
 * with any channel-wise ops before or after the activation (MaxPool, AveragePool without padded
 * zeros counted, GlobalMax/AveragePool, Identity — a VGG's Conv → Relu → MaxPool → Conv between
 * two blocks is a pair too; their outputs also have one reader each), and both layers are of one
 * family with constant weights: Conv → Conv (any groups: regular, pointwise → depthwise,
 * depthwise → pointwise, grouped; channels on axis 1) or Gemm/MatMul → Gemm/MatMul (channels on
 * the last axis). Scaling output channel i of layer 1 by 1/s_i and input
 * channel i of layer 2 by s_i leaves the function unchanged because the activation and the
 * channel-wise ops are positively homogeneous per channel: f(x/s) = f(x)/s for s > 0.
 *
 * The scale is the paper's s_i = sqrt(r1_i · r2_i) / r2_i, with r1_i = max |w| over layer 1's
 * output channel i (its row, and its bias entry scales along) and r2_i = max |w| over every weight
 * layer 2 applies to input channel i (for a grouped layer 2: the rows of group(i), column i mod
 * C/g; for a depthwise layer 2: its single input channel's filters). Afterwards both ranges are
 * sqrt(r1_i · r2_i). A layer in the middle of a chain takes part in two pairs, so all pairs are
 * swept again until every s_i is within tol of 1 (or max_iter sweeps). A channel with a zero range
 * keeps s_i = 1.
 *
 * Clip(0, 6) (ReLU6) is not scale-equivariant: with replace_relu6 the Clip between a pair becomes
 * Relu (listed in the report — this changes the FP32 model where activations exceeded 6);
 * without it such pairs are skipped.
 *
 * High-bias absorption, for pairs with a ReLU between them whose layer 1 has a BN record: the
 * pre-activation of channel i is ≈ N(β_i, γ_i²), so c_i = max(0, β_i − 3|γ_i|) is almost surely
 * below it, ReLU(x − c) = ReLU(x) − c there, and moving c from b1 to b2 (b1_i −= c_i, b2 += W2·c,
 * summed over input channel i and every kernel tap) keeps the output where x ≥ c. A layer 2 that
 * zero-pads its input is left alone (listed as skipped): its padded taps never see c, so the
 * output at its borders would change by the missing taps' W·c. The paper accepts that; on the
 * small feature maps of real models (PaddleOCR's 48×192 classifier: 3×12 maps) borders are most of
 * the map and it flipped 1.9% of the FP32 model's decisions before any quantizer.
 *
 * The BN records stay consistent with the graph: scaling layer 1's channel i by 1/s_i scales its
 * record's γ_i and β_i by 1/s_i; absorption lowers β_i by c_i. (mean and var describe the
 * BN's input before folding and are left alone.) Later steps — analytical bias correction,
 * BN-based ranges — read γ and β from the records. */
#ifndef QS_CLE_H
#define QS_CLE_H

#include <jansson.h>

#include "graph.h"
#include "quant/bnfold.h"
#include "quant/skips.h"

typedef struct qs_cle_config {
    int equalize;          /* rescale the pairs (default 1) */
    int absorb;            /* high-bias absorption after equalization (default 1; needs BN records) */
    int replace_relu6;     /* Clip(0, max) between a pair becomes Relu (default 1); 0: skip such pairs */
    int max_iter;          /* sweeps over all pairs (default 100) */
    double tol;            /* converged when every |s_i − 1| ≤ tol in a sweep (default 1e-4) */
    float absorb_sigmas;   /* c = max(0, β − n·|γ|), n = 3 */
    /* With data (may be NULL): called once before absorbing, with layer 1 of each pair that may
     * absorb (nodes[k] = -1 for the others); fills mins[k] with the per-channel minimum of that
     * layer's output on the data (or leaves it NULL), and c_i is then also at most mins[k][i].
     * β − 3|γ| assumes a Gaussian pre-activation; real ones are often not, and a c above the
     * smallest value changes the function there (qs_preact_minima, quant/preact.h). */
    int (*preact_minima)(void *ud, qs_graph *g, const int *nodes, int n, float ***mins, qs_err *e);
    void *preact_ud;
} qs_cle_config;

qs_cle_config qs_cle_config_default(void);

typedef struct qs_cle_pair {
    char *layer1, *layer2;   /* node names */
    char *act;               /* activation node's name, "" when none */
    char *act_op;            /* "Relu", "LeakyRelu", "Relu6→Relu", "none", … */
    char *via;               /* channel-wise ops also between the layers: "MaxPool", … ("" when none) */
    int64_t nch;             /* channels between the layers */
    double *scale;           /* [nch] total s_i applied (product over sweeps) */
    double *absorbed;        /* [nch] c_i moved from layer 1's bias into layer 2's; NULL if none */
} qs_cle_pair;

/* Per output channel min and max weight of a layer, before and after (data for plots). */
typedef struct qs_cle_layer {
    char *name, *op;
    int64_t nch;
    int depthwise;           /* Conv with group == input channels > 1 */
    float *min_before, *max_before, *min_after, *max_after;
} qs_cle_layer;

typedef struct qs_cle_report {
    int npairs;              /* pairs equalized (or absorbed) */
    qs_cle_pair *pairs;
    int iterations;          /* sweeps done */
    int converged;
    double max_change;       /* max |s_i − 1| in the last sweep */
    int nabsorbed;           /* pairs where absorption moved something */
    int absorb_data;         /* c was bounded by the data's minima too (cfg.preact_minima) */
    int nrelu6;
    char **relu6;            /* names of the Clip nodes replaced by Relu */
    int nskipped;            /* chains that matched but were left alone, and why */
    qs_skip *skipped;        /* name → name2: the pair's two layers */
    int nlayers;             /* every Conv/Gemm/MatMul with constant weights */
    qs_cle_layer *layers;
} qs_cle_report;

/* bn/nbn: the records from qs_bnfold (may be NULL/0: no absorption); updated in place.
 * report (may be NULL) receives a new report, also on success with nothing to do. On failure g
 * may be partly equalized (every change keeps the function, so it still computes the same). */
int qs_cle(qs_graph *g, qs_bn_record *bn, int nbn, const qs_cle_config *cfg, qs_cle_report **report, qs_err *e);
void qs_cle_report_free(qs_cle_report *r);
/* {"pairs":[{"layer1","layer2","activation","activation_node","through","channels","scale",
 *  "absorbed"}, …], "iterations", "converged", "max_change", "absorbed_pairs", "absorb_bound": "bn" | "bn+data", "relu6_replaced":[…],
 *  "skipped":[…], "layers":[{"name","op","channels","depthwise","before":{"min":[],"max":[]},
 *  "after":{…}}]} — a new reference. */
json_t *qs_cle_report_json(const qs_cle_report *r);

#endif
