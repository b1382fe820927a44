/* The measurements shared by the analysis pipeline (analyze.c, which defines them) and the closed
 * loop (target_drop.c): scoring a runner on the first n validation samples (top-1, top-5, output
 * SQNR against reference logits), quantizer groups and switching them on and off, and activation
 * ranges calibrated on the FP32 network. Not a public header.
 *
 *   char *on = calloc(sim->nq, 1);
 *   qs_an_set_all(on, sim->nq, 1);
 *   qs_an_set_group(on, &groups[k], 0);          // every group but k quantized
 *   qs_an_apply(sim, on);
 *   qs_an_evaluate(p, runner, n, ref, classes, NULL, NULL, &out, e); */
#ifndef QS_QUANT_ANALYZE_IMPL_H
#define QS_QUANT_ANALYZE_IMPL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "quant/ptq.h"
#include "runner.h"

/* --- evaluation over the first n validation samples ------------------------------------------- */

typedef struct qs_an_eval {
    double top1, top5;   /* top5 < 0 with fewer than 5 classes */
    double sqnr_db;      /* INFINITY when identical to the reference, NAN without one */
    int64_t n;
} qs_an_eval;

/* Scores runner r on samples [0, n) of the validation set; ref: reference logits for the SQNR;
 * keep (may be NULL) receives the logits (caller frees) and classes their row length. */
int qs_an_evaluate(qs_ptq *p, qs_runner *r, int64_t n, const float *ref, int64_t ref_classes, float **keep,
                   int64_t *classes, qs_an_eval *out, qs_err *e);

/* A runner for g at the calibration batch size, on the pipeline's thread pool. */
qs_runner *qs_an_runner(qs_ptq *p, qs_graph *g, qs_err *e);

static inline json_t *qs_an_num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* --- quantizer groups -------------------------------------------------------------------------- */

/* The quantizers sharing a `layer` (see analyze.c's header), in model order. */
typedef struct qs_an_group {
    const char *name;   /* borrowed from the quantizer table */
    const char *op;
    int *q, nq;
    int weight, act;    /* quantizer indices, -1 when the group has none */
    int promoted, excluded;
} qs_an_group;

int qs_an_groups(const qs_quantsim *sim, qs_an_group **out, int *nout, qs_err *e);
void qs_an_groups_free(qs_an_group *gr, int n);

/* One group's measurements: accuracy and output SQNR with only it / all but it quantized, and its
 * weight's own quantization SQNR; idx is its position in the group array. */
typedef struct qs_an_gres {
    double acc_only, acc_allbut, sqnr_only, sqnr_allbut, wsqnr;
    int idx;
} qs_an_gres;

/* Switches quantizer i on where on[i], off elsewhere; a bias follows its weight. */
void qs_an_apply(qs_quantsim *sim, const char *on);

static inline void qs_an_set_all(char *on, int n, char v) { memset(on, v, (size_t)n); }

static inline void qs_an_set_group(char *on, const qs_an_group *g, char v)
{
    for (int k = 0; k < g->nq; k++)
        on[g->q[k]] = v;
}

/* --- activation ranges ------------------------------------------------------------------------- */

/* Recalibrates the activation ranges with the weight quantizers off while observing. */
int qs_an_calibrate_fp32(qs_ptq *p, qs_err *e);

/* Every quantizer's scales and zero points (NULL when out of memory), and putting them back. */
float *qs_an_ranges_save(const qs_quantsim *sim);
void qs_an_ranges_restore(qs_quantsim *sim, const float *buf);

#endif
