/* Batch-norm folding (paper §2.3.1): W' = W·γ/σ per output channel, b' = (b − μ)·γ/σ + β with
 * σ = sqrt(var + ε), for BatchNormalization nodes that directly follow Conv, ConvTranspose, Gemm
 * or MatMul (with a constant weight) and are that layer's only reader. The BN node disappears and
 * its output value is now produced by the layer.
 *
 *   qs_bn_record *bn; int nbn;
 *   qs_bnfold(g, &bn, &nbn, &e);     // records γ, β, μ, var per folded layer
 *
 * The records keep the BN statistics that later steps need after the BN is gone: high-bias
 * absorption (§3.2.2), analytical bias correction (§3.3) and BN-based ranges (§3.1). */
#ifndef QS_BNFOLD_H
#define QS_BNFOLD_H

#include "graph.h"

typedef struct qs_bn_record {
    char *layer;       /* name of the Conv/Gemm node the BN was folded into */
    char *output;      /* name of the value the layer now produces (the BN's old output) */
    int64_t c;
    float *gamma, *beta, *mean, *var;
    float eps;
} qs_bn_record;

int qs_bnfold(qs_graph *g, qs_bn_record **records, int *n, qs_err *e);
void qs_bn_records_free(qs_bn_record *r, int n);
qs_bn_record *qs_bn_records_clone(const qs_bn_record *r, int n);   /* deep copy; NULL on OOM */
const qs_bn_record *qs_bn_find(const qs_bn_record *r, int n, const char *layer);

#endif
