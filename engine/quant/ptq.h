/* The PTQ pipeline's stages, reusable by the other pipelines (analysis, QAT's range
 * initialisation):
 *
 *   qs_ptq p;
 *   qs_ptq_open(&p, io, e);          // config, model, calibration / validation data (checked)
 *   qs_ptq_prepare(&p, e);           // BN fold (→ p.prepared), QuantSim (→ p.sim), weight ranges,
 *                                    // calibration of activation ranges
 *   qs_ptq_accuracy(&p, res, e);     // FP32 and quantized accuracy into res (when validation data)
 *   qs_ptq_write(&p, "ptq", res, e); // per-layer SQNR, model.qdq.onnx, encodings.json,
 *                                    // model.prepared.onnx, report.json (+ p.extra's keys)
 *   qs_ptq_close(&p);
 *
 * Steps can be run piecemeal (qs_ptq_fold, qs_ptq_build_sim, qs_ptq_weight_ranges,
 * qs_ptq_calibrate) by pipelines that insert their own between them. */
#ifndef QS_PTQ_H
#define QS_PTQ_H

#include <jansson.h>

#include "pipeline_util.h"
#include "spec_json.h"
#include "quant/bnfold.h"
#include "quant/quantsim.h"

/* The observers of a calibration (one per quantizer, NULL for weights and biases; rows: which kept
 * logit rows for cross-entropy ranges). */
typedef struct qs_ptq_observed {
    struct qs_observer **obs;
    char *rows;
    int nq;
} qs_ptq_observed;

typedef struct qs_ptq {
    const qs_pipeline_io *io;
    qs_qconfig cfg;
    qs_graph *model;       /* as loaded */
    qs_graph *prepared;    /* after BN folding (and CLE): what the quantizers are fitted on */
    qs_bn_record *bn;      /* statistics of the folded BNs */
    int nbn;
    qs_quantsim *sim;
    qs_pl_data calib, val; /* calib.d / val.d NULL when not given */
    int64_t *labels;
    int64_t ncalib;        /* calibration samples used */
    json_t *timings;       /* stage → seconds */
    json_t *warnings;      /* [message] */
    json_t *extra;         /* more report.json keys from the algorithms (cle, adaround, …) */
    json_t *config;        /* report.json's "config" when cfg no longer is the one asked for (the
                            * checked pipeline sets cfg to the steps it kept); NULL: cfg */
    double t_start;
    qs_ptq_observed *observed;   /* the last qs_ptq_calibrate's observers, for p->sim (NULL: none) */
    struct {                     /* calibration also keeps logit rows where these are cross-entropy */
        qs_range_method range, last_layer;
    } rows_for;
} qs_ptq;

int qs_ptq_open(qs_ptq *p, const qs_pipeline_io *io, qs_err *e);
int qs_ptq_prepare(qs_ptq *p, qs_err *e);
int qs_ptq_fold(qs_ptq *p, qs_err *e);       /* BN folding, then qs_ptq_cle */
int qs_ptq_cle(qs_ptq *p, qs_err *e);        /* CLE and bias absorption of p->prepared, as cfg says */
int qs_ptq_build_sim(qs_ptq *p, qs_err *e);
int qs_ptq_weight_ranges(qs_ptq *p, qs_err *e);
int qs_ptq_weight_rounding(qs_ptq *p, qs_err *e);   /* AdaRound, else bias correction, as cfg says */
int qs_ptq_calibrate(qs_ptq *p, qs_err *e);  /* keeps its observers in p->observed */
/* p->sim's activation ranges from the observers of a calibration of a sim with the same
 * quantizers and weights, with p->cfg's methods: what qs_ptq_calibrate would set, without the pass. */
int qs_ptq_ranges_from(qs_ptq *p, const qs_ptq_observed *o, qs_err *e);
void qs_ptq_observed_free(qs_ptq_observed *o);
/* qs_ptq_prepare with each optional step kept only if it does not lower a held-out score
 * (config.check_steps; ptq_check.c): report.json's "step_check" says what was kept. */
int qs_ptq_prepare_checked(qs_ptq *p, qs_err *e);
int qs_ptq_accuracy(qs_ptq *p, json_t *res, qs_err *e);
int qs_ptq_write(qs_ptq *p, const char *type, json_t *res, qs_err *e);
void qs_ptq_close(qs_ptq *p);

void qs_ptq_warn(qs_ptq *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A pipeline step that did nothing, and why: logged, and listed in report.json's "skipped_steps"
 * ([{"step", "reason"}]). */
void qs_ptq_skipped(qs_ptq *p, const char *step, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Runs graph g (on the job's pool) over calibration rows [start, start + n), handing each batch's
 * outputs to sink: what the step check and the target's measurement compare. */
int qs_ptq_stream_calib(qs_ptq *p, qs_graph *g, int64_t start, int64_t n, qs_runner_sink sink, void *ud, qs_err *e);
/* Per-layer SQNR of the activation quantizers vs the FP32 model, appended to report_layers
 * (ptq_sqnr.c). */
int qs_ptq_layer_sqnr(qs_ptq *p, json_t *report_layers, qs_err *e);
void qs_ptq_timing(qs_ptq *p, const char *stage, double t0);
json_t *qs_ptq_quantizer_table(const qs_quantsim *sim);

#endif
