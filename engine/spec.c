/* The job spec's table and the code that walks it; see spec.h and spec_json.h.
 *
 * Every field is one row of `rows[]`, named by its JSON path. An object's fields are the rows one
 * level below its path, so the walk over a JSON object needs no other description: unknown keys,
 * types, bounds, allowed values and required fields all come from the rows. Defaults are text,
 * read by the same code as the JSON values would be, one column per preset ("basic" only where
 * it differs from "standard"). A new setting is one row here plus its field in qs_qconfig. */
#include "spec.h"
#include "spec_json.h"

#include "quant/overrides.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    K_OBJECT,    /* a JSON object whose fields are the rows below it */
    K_BOOL,      /* int */
    K_INT,       /* int, from min to max */
    K_NUM,       /* double, from min to max */
    K_ENUM,      /* int: values[i] (or i) for choices[i] */
    K_STR,       /* char[size], one of choices */
    K_TEXT,      /* char * (malloc'd), any string */
    K_MODEL,     /* char[QS_SPEC_ID_MAX]: a model id */
    K_DATASET,   /* char[QS_SPEC_ID_MAX]: a data set id */
    K_NAMES,     /* char ** at offset, its count (int) at offset2 */
    K_JSON,      /* char * (malloc'd): any JSON object, kept as text */
    K_SHAPES,    /* qs_input_shape * at offset, its count (int) at offset2: {"name": [dims]} */
} kind;

typedef struct row {
    const char *path;
    kind kind;
    size_t offset, offset2, size;
    double min, max;
    const char *const *choices;   /* NULL-terminated */
    const int *values;
    const char *dflt;             /* the standard preset's default, as text ("8", "true", "mse") */
    const char *basic;            /* the basic preset's, when it differs */
    unsigned jobs;                /* job types that take the field */
    unsigned required;            /* job types whose spec must have it */
    int nullable;                 /* null means "not given" (for K_NUM: off, stored as -1) */
    const char *follows;          /* when absent but this sibling is given, takes its value */
    const char *doc;
} row;

#define J(f) offsetof(qs_job_spec, f)
#define C(f) offsetof(qs_job_spec, config.f)
#define CS(f) .offset = C(f), .size = sizeof(((qs_job_spec *)0)->config.f)
enum {
    ENGINE = QS_JOB_EVAL | QS_JOB_PTQ | QS_JOB_ANALYZE | QS_JOB_QAT,
    ALL = ENGINE | QS_JOB_SLEEP,
    Q = QS_JOB_QUANT,
};

static const char *const TYPES[] = { "eval", "ptq", "analyze", "qat", "sleep", NULL };
static const int TYPE_BITS[] = { QS_JOB_EVAL, QS_JOB_PTQ, QS_JOB_ANALYZE, QS_JOB_QAT, QS_JOB_SLEEP };
static const char *const PRESETS[] = { "standard", "basic", NULL };
static const char *const WRANGES[] = { "minmax", "mse", NULL };
static const int WRANGE_V[] = { QS_RANGE_MINMAX, QS_RANGE_MSE };
static const char *const ARANGES[] = { "minmax", "mse", "percentile", "ce", "bn", NULL };
static const int ARANGE_V[] = { QS_RANGE_MINMAX, QS_RANGE_MSE, QS_RANGE_PERCENTILE, QS_RANGE_CE, QS_RANGE_BN };
static const char *const BCS[] = { "none", "empirical", "analytical", NULL };   /* = qs_biascorr_mode */
static const char *const ROUNDINGS[] = { "nearest", "adaround", "gptq", NULL };   /* = qs_rounding */
static const char *const OPTS[] = { "adam", "sgd", "nesterov", NULL };
static const char *const TARGETS[] = { "ort-x86", "generic", NULL };
static const char *const SCHEDS[] = { "cosine", "step", "constant", NULL };
static const char *const METRICS[] = { "auto", "accuracy", "sqnr", "kl", NULL };
static const char *const HIGHP[] = { "none", "auto", NULL };

static const row rows[] = {
    { .path = "type", .kind = K_ENUM, .offset = J(type), .choices = TYPES, .values = TYPE_BITS, .jobs = ALL,
      .required = ALL, .doc = "What to run: ptq, qat, analyze or eval." },
    { .path = "name", .kind = K_TEXT, .offset = J(name), .jobs = ALL, .nullable = 1,
      .doc = "A name for people; the job's id is what identifies it." },
    { .path = "model", .kind = K_MODEL, .offset = J(model), .jobs = ALL, .required = ENGINE, .nullable = 1,
      .doc = "The model: an id from POST /v1/models (mdl_…)." },
    { .path = "calibration", .kind = K_DATASET, .offset = J(calibration), .jobs = ALL, .nullable = 1,
      .doc = "Unlabelled inputs for ranges, bias correction and AdaRound: a data set id (ds_…), .npy or "
             ".npz keyed by input name. ptq and analyze need it." },
    { .path = "train", .kind = K_OBJECT, .jobs = ENGINE, .required = QS_JOB_QAT, .nullable = 1,
      .doc = "qat: the labelled training data." },
    { .path = "train.data", .kind = K_DATASET, .offset = J(train.data), .jobs = ENGINE, .required = QS_JOB_QAT,
      .nullable = 1, .doc = "Training inputs (data set id)." },
    { .path = "train.labels", .kind = K_DATASET, .offset = J(train.labels), .jobs = ENGINE,
      .required = QS_JOB_QAT, .nullable = 1, .doc = "Training labels (data set id)." },
    { .path = "validation", .kind = K_OBJECT, .jobs = ENGINE, .required = QS_JOB_EVAL, .nullable = 1,
      .doc = "Labelled data for accuracy before and after (eval: the data to score; analyze needs it)." },
    { .path = "validation.data", .kind = K_DATASET, .offset = J(validation.data), .jobs = ENGINE,
      .required = QS_JOB_EVAL, .nullable = 1, .doc = "Validation inputs (data set id)." },
    { .path = "validation.labels", .kind = K_DATASET, .offset = J(validation.labels), .jobs = ENGINE,
      .required = QS_JOB_EVAL, .nullable = 1, .doc = "Validation labels (data set id)." },
    { .path = "config", .kind = K_OBJECT, .jobs = ALL, .nullable = 1,
      .doc = "Settings; every field overrides the preset's default." },

    /* --- the quantization config (ptq, analyze, qat) --- */
    { .path = "config.preset", .kind = K_STR, CS(preset), .choices = PRESETS, .dflt = "standard", .basic = "basic",
      .jobs = Q, .doc = "The defaults: standard (the paper's pipeline, Fig. 8) or basic (BN folding and "
                        "min-max ranges only)." },
    { .path = "config.weights", .kind = K_OBJECT, .jobs = Q, .doc = "The weight quantizers' grid (§2.2)." },
    { .path = "config.weights.bits", .kind = K_INT, .offset = C(weights.bits), .min = 2, .max = 16, .dflt = "8",
      .jobs = Q, .doc = "Bit width." },
    { .path = "config.weights.symmetric", .kind = K_BOOL, .offset = C(weights.symmetric), .dflt = "true",
      .jobs = Q, .doc = "Symmetric grid (zero point 0)." },
    { .path = "config.weights.per_channel", .kind = K_BOOL, .offset = C(weights.per_channel), .dflt = "true",
      .jobs = Q, .doc = "One scale per output channel." },
    { .path = "config.weights.range", .kind = K_ENUM, .offset = C(weights.range), .choices = WRANGES,
      .values = WRANGE_V, .dflt = "mse", .basic = "minmax", .jobs = Q,
      .doc = "Range setting (§3.1): min-max or MSE grid search." },
    { .path = "config.weights.pow2", .kind = K_BOOL, .offset = C(weights.pow2), .dflt = "false", .jobs = Q,
      .doc = "Power-of-two scales." },
    { .path = "config.weights.reduce_range", .kind = K_BOOL, .offset = C(weights.reduce_range), .dflt = "true",
      .jobs = Q, .doc = "Where the target's integer kernels would overflow (target ort-x86, 8-bit weights and "
                        "activations), weights one bit narrower: [-64, 63], still int8, as ONNX Runtime's "
                        "quantizer's reduce_range. false: full 8-bit weights (report.json's target shows the cost)." },
    { .path = "config.activations", .kind = K_OBJECT, .jobs = Q, .doc = "The activation quantizers' grid." },
    { .path = "config.activations.bits", .kind = K_INT, .offset = C(act.bits), .min = 2, .max = 16, .dflt = "8",
      .jobs = Q, .doc = "Bit width." },
    { .path = "config.activations.symmetric", .kind = K_BOOL, .offset = C(act.symmetric), .dflt = "false",
      .jobs = Q, .doc = "Symmetric grid (asymmetric by default, §3.5)." },
    { .path = "config.activations.pow2", .kind = K_BOOL, .offset = C(act.pow2), .dflt = "false", .jobs = Q,
      .doc = "Power-of-two scales." },
    { .path = "config.activations.range", .kind = K_ENUM, .offset = C(act.range), .choices = ARANGES,
      .values = ARANGE_V, .dflt = "mse", .basic = "minmax", .jobs = Q,
      .doc = "Range setting (§3.1): minmax, mse, percentile, ce (cross-entropy) or bn (β ± nγ)." },
    { .path = "config.activations.last_layer", .kind = K_ENUM, .offset = C(act.last_layer), .choices = ARANGES,
      .values = ARANGE_V, .dflt = "ce", .basic = "minmax", .follows = "range", .jobs = Q,
      .doc = "Range setting of the last layer (the logits); an explicit range without it applies here too." },
    { .path = "config.activations.high_precision", .kind = K_STR, CS(act.high_precision), .choices = HIGHP,
      .dflt = "none", .jobs = Q,
      .doc = "16-bit activations where 8 bits lose too much (paper §5, the BERT row). auto: after calibration, "
             "each activation's 8-bit quantization noise is measured on the calibration data (its SQNR under the "
             "range chosen for it) and every activation whose SQNR is below high_precision_db gets a 16-bit grid "
             "(exported as int16/uint16 QuantizeLinear/DequantizeLinear at opset 21); report.json's "
             "\"high_precision\" lists each activation's SQNR and the ones promoted. none: only those named in "
             "config.overrides. Particular tensors: config.overrides.tensors.NAME.bits = 16." },
    { .path = "config.activations.high_precision_db", .kind = K_NUM, .offset = C(act.high_precision_db), .min = 0,
      .max = 100, .dflt = "30", .jobs = Q,
      .doc = "With high_precision auto: an activation whose 8-bit SQNR (dB) is below this gets 16 bits." },
    { .path = "config.activations.percentile", .kind = K_NUM, .offset = C(act.percentile), .min = 50, .max = 100,
      .dflt = "99.99", .jobs = Q, .doc = "The percentile of the percentile range setting." },
    { .path = "config.bn_fold", .kind = K_BOOL, .offset = C(bn_fold), .dflt = "true", .jobs = Q,
      .doc = "Fold BatchNormalization into the preceding layer (§2.3.1)." },
    { .path = "config.cle", .kind = K_BOOL, .offset = C(cle), .dflt = "true", .basic = "false", .jobs = Q,
      .doc = "Cross-layer equalization (§3.2)." },
    { .path = "config.relu6_to_relu", .kind = K_BOOL, .offset = C(relu6_to_relu), .dflt = "true", .jobs = Q,
      .doc = "Replace ReLU6 by ReLU where CLE needs it." },
    { .path = "config.bias_absorption", .kind = K_BOOL, .offset = C(bias_absorption), .dflt = "true",
      .basic = "false", .jobs = Q, .doc = "High-bias absorption (§3.2)." },
    { .path = "config.bias_correction", .kind = K_ENUM, .offset = C(bias_correction), .choices = BCS,
      .dflt = "empirical", .basic = "none", .jobs = Q,
      .doc = "Bias correction (§3.3), used when AdaRound is off: none, empirical or analytical." },
    { .path = "config.rounding", .kind = K_ENUM, .offset = C(rounding), .choices = ROUNDINGS, .dflt = "adaround",
      .basic = "nearest", .jobs = Q, .doc = "The weights' rounding (needs calibration data): nearest (then bias "
      "correction), adaround (AdaRound, §3.4: learned per weight, slow) or gptq (beyond the paper: each layer's "
      "columns rounded in turn, the error compensated through the inverse Hessian of its inputs; one pass). "
      "adaround.enabled true/false is the same as \"adaround\"/\"nearest\"; the two contradicting is refused." },
    { .path = "config.adaround", .kind = K_OBJECT, .jobs = Q, .doc = "AdaRound (§3.4)." },
    { .path = "config.adaround.enabled", .kind = K_BOOL, .offset = C(adaround.enabled), .dflt = "true",
      .basic = "false", .jobs = Q, .doc = "AdaRound the weights: the same as rounding \"adaround\" (true) or "
                                          "\"nearest\" (false); config.rounding is the newer name." },
    { .path = "config.adaround.iterations", .kind = K_INT, .offset = C(adaround.iterations), .min = 1,
      .max = 1000000, .dflt = "10000", .jobs = Q, .doc = "Iterations per layer." },
    { .path = "config.adaround.reg", .kind = K_NUM, .offset = C(adaround.reg), .min = 0, .max = 1e6,
      .dflt = "0.01", .jobs = Q, .doc = "The rounding regulariser's weight λ." },
    { .path = "config.adaround.batch_size", .kind = K_INT, .offset = C(adaround.batch_size), .min = 1,
      .max = 65536, .dflt = "32", .jobs = Q, .doc = "Samples per iteration." },
    { .path = "config.adaround.samples", .kind = K_INT, .offset = C(adaround.samples), .min = 1, .max = 10000000,
      .dflt = "1024", .jobs = Q, .doc = "Calibration samples AdaRound draws its batches from." },
    { .path = "config.calibration", .kind = K_OBJECT, .jobs = Q, .doc = "Range calibration." },
    { .path = "config.calibration.samples", .kind = K_INT, .offset = C(calibration.samples), .min = 1,
      .max = 100000000, .dflt = "1024", .jobs = Q, .doc = "Calibration samples used (at most)." },
    { .path = "config.calibration.batch_size", .kind = K_INT, .offset = C(calibration.batch_size), .min = 1,
      .max = 65536, .dflt = "32", .jobs = Q, .doc = "Batch size of the calibration passes." },
    { .path = "config.exclude", .kind = K_NAMES, .offset = C(exclude), .offset2 = C(nexclude), .jobs = Q,
      .doc = "Node names kept in floating point." },
    { .path = "config.overrides", .kind = K_JSON, .offset = C(overrides), .nullable = 1, .jobs = Q,
      .doc = "Per tensor and per op type quantizer settings over config.weights and config.activations: "
             "{\"tensors\": {NAME: {\"bits\": 2-16, \"symmetric\": bool, \"per_channel\": bool, \"skip\": bool}}, "
             "\"ops\": {OP_TYPE: {\"bits\", \"symmetric\", \"weight_bits\", \"weight_symmetric\", "
             "\"per_channel\", \"skip\"}}}. A tensor entry sets the quantizer of that tensor, a weight "
             "(initializer name) or an activation (value name); per_channel: weights only; skip: no quantizer. An "
             "op entry sets the outputs (bits, symmetric) and weights (weight_bits, weight_symmetric, per_channel) "
             "of every node of that type; skip keeps them in floating point as exclude does. Tensor entries win "
             "over op entries, which win over the config. A name the model does not have fails the job with the "
             "name in the message." },
    { .path = "config.input_shapes", .kind = K_SHAPES, .offset = C(input_shapes), .offset2 = C(ninput_shapes),
      .jobs = ENGINE, .doc = "Sizes for the models' symbolic input dims, keyed by input name: {\"x\": [1, 3, 48, "
                             "192]} (the leading, batch dim is the batch size unless the model fixes it). Without "
                             "it the data's sample shape gives them; the two must agree." },
    { .path = "config.requantize", .kind = K_BOOL, .offset = C(requantize), .dflt = "false", .jobs = Q,
      .doc = "A model that is already quantized (QuantizeLinear/DequantizeLinear, QLinear or integer ops) is "
             "refused unless this is true: then its weights are dequantized to float, its activation Q/DQ pairs "
             "removed, and it is quantized again." },
    { .path = "config.qat", .kind = K_OBJECT, .jobs = Q, .doc = "qat: the training (§4)." },
    { .path = "config.qat.epochs", .kind = K_INT, .offset = C(qat.epochs), .min = 0, .max = 10000, .dflt = "3",
      .jobs = Q, .doc = "Epochs over the training data." },
    { .path = "config.qat.batch_size", .kind = K_INT, .offset = C(qat.batch_size), .min = 1, .max = 65536,
      .dflt = "64", .jobs = Q, .doc = "Training batch size." },
    { .path = "config.qat.steps", .kind = K_INT, .offset = C(qat.steps), .min = 0, .max = 100000000, .dflt = "0",
      .jobs = Q, .doc = "Training steps (0: epochs decide)." },
    { .path = "config.qat.optimizer", .kind = K_STR, CS(qat.optimizer), .choices = OPTS, .dflt = "adam",
      .jobs = Q, .doc = "adam, sgd or nesterov." },
    { .path = "config.qat.schedule", .kind = K_STR, CS(qat.schedule), .choices = SCHEDS, .dflt = "cosine",
      .jobs = Q, .doc = "Learning-rate schedule: cosine, step or constant." },
    { .path = "config.qat.lr", .kind = K_NUM, .offset = C(qat.lr), .min = 0, .max = 10, .dflt = "1e-5", .jobs = Q,
      .doc = "Learning rate." },
    { .path = "config.qat.weight_decay", .kind = K_NUM, .offset = C(qat.weight_decay), .min = 0, .max = 1,
      .dflt = "0", .jobs = Q, .doc = "Weight decay." },
    { .path = "config.qat.momentum", .kind = K_NUM, .offset = C(qat.momentum), .min = 0, .max = 1, .dflt = "0.9",
      .jobs = Q, .doc = "Momentum (sgd, nesterov)." },
    { .path = "config.qat.clip_grad", .kind = K_NUM, .offset = C(qat.clip_grad), .min = 0, .max = 1e9,
      .dflt = "0", .jobs = Q, .doc = "Gradient norm clipping (0: off)." },
    { .path = "config.qat.learn_ranges", .kind = K_BOOL, .offset = C(qat.learn_ranges), .dflt = "true", .jobs = Q,
      .doc = "Learn the quantizers' scales and offsets (LSQ-style)." },
    { .path = "config.qat.bn_reestimate", .kind = K_BOOL, .offset = C(qat.bn_reestimate), .dflt = "true",
      .jobs = Q, .doc = "Re-estimate batch-norm statistics after training." },
    { .path = "config.qat.flip", .kind = K_BOOL, .offset = C(qat.flip), .dflt = "false", .jobs = Q,
      .doc = "Augment with horizontal flips." },
    { .path = "config.target_drop", .kind = K_NUM, .offset = C(target_drop), .min = 0, .max = 100, .dflt = "-1",
      .nullable = 1, .jobs = Q,
      .doc = "ptq: keep the most sensitive layers in higher precision until the accuracy is within this many "
             "points of FP32 (§3.7; needs validation data). null: off." },
    { .path = "config.target", .kind = K_STR, CS(target), .choices = TARGETS, .dflt = "ort-x86", .jobs = Q,
      .doc = "The runtime the export is for. ort-x86: ONNX Runtime's x86 integer kernels, whose u8·s8 pairs "
             "saturate at 16 bits on CPUs without VNNI, so 8-bit weights get reduce_range and report.json "
             "measures the export under that arithmetic. generic: exact integer arithmetic." },
    { .path = "config.check_steps", .kind = K_BOOL, .offset = C(check_steps), .dflt = "true", .basic = "false",
      .jobs = Q,
      .doc = "ptq: keep each optional step (CLE, MSE ranges for weights and for activations, AdaRound or bias "
             "correction) only if it does not lower a held-out score; report.json's \"step_check\" says "
             "which were kept (Fig. 8, §3.7)." },
    { .path = "config.check_holdout", .kind = K_NUM, .offset = C(check_holdout), .min = 0.01, .max = 0.5,
      .dflt = "0.2", .jobs = Q,
      .doc = "ptq with check_steps: the fraction of the calibration samples held out (the last ones) to score "
             "the steps on; they are not used for calibration." },
    { .path = "config.check_metric", .kind = K_STR, CS(check_metric), .choices = METRICS, .dflt = "auto",
      .jobs = Q,
      .doc = "ptq with check_steps: accuracy (on the validation data, which then also selects the steps), "
             "sqnr (the output's SQNR against FP32 on the held-out samples), kl (the softmax's KL divergence "
             "from FP32's there, for logits) or auto (accuracy when validation data is given, else kl for "
             "logits, else sqnr)." },
    { .path = "config.analysis", .kind = K_OBJECT, .jobs = Q, .doc = "analyze: the debugging flow (§3.7)." },
    { .path = "config.analysis.val_samples", .kind = K_INT, .offset = C(analysis.val_samples), .min = 1,
      .max = 100000000, .dflt = "1000", .jobs = Q, .doc = "Validation samples the analysis measures on." },

    /* --- eval's config --- */
    { .path = "config.batch_size", .kind = K_INT, .offset = C(eval.batch_size), .min = 1, .max = 65536,
      .dflt = "32", .jobs = QS_JOB_EVAL, .doc = "eval: batch size." },

    /* --- the debug job's (see the daemon's scheduler) --- */
    { .path = "config.seconds", .kind = K_NUM, .offset = C(sleep.seconds), .min = 0, .max = 86400, .dflt = "1",
      .jobs = QS_JOB_SLEEP, .doc = "sleep: how long." },
    { .path = "config.fail", .kind = K_BOOL, .offset = C(sleep.fail), .dflt = "false", .jobs = QS_JOB_SLEEP,
      .doc = "sleep: fail at the end." },
    { .path = "config.artifact_bytes", .kind = K_INT, .offset = C(sleep.artifact_bytes), .min = 0, .max = 1e9,
      .dflt = "100000", .jobs = QS_JOB_SLEEP, .doc = "sleep: size of the artifact it writes." },
};
enum { NROWS = sizeof rows / sizeof rows[0] };

/* ---- the table's shape ------------------------------------------------------------------------ */

static const char *leaf(const row *r)
{
    const char *d = strrchr(r->path, '.');
    return d ? d + 1 : r->path;
}

/* Is r a field of the object at path p ("" for the spec itself)? */
static int child_of(const row *r, const char *p)
{
    size_t n = strlen(p);
    if (!n)
        return !strchr(r->path, '.');
    return !strncmp(r->path, p, n) && r->path[n] == '.' && !strchr(r->path + n + 1, '.');
}

static void *at(qs_job_spec *s, const row *r) { return (char *)s + r->offset; }
static const void *cat(const qs_job_spec *s, const row *r) { return (const char *)s + r->offset; }

static void list(char *buf, size_t n, const char *const *items)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; items[i] && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "", items[i]);
}

static int enum_value(const row *r, int i) { return r->values ? r->values[i] : i; }

static const char *enum_name(const row *r, int v)
{
    for (int i = 0; r->choices[i]; i++)
        if (enum_value(r, i) == v)
            return r->choices[i];
    return "?";
}

/* what a value of r must be, for messages: "an integer from 2 to 16" */
static void expected(const row *r, char *buf, size_t n)
{
    char l[256];
    switch (r->kind) {
    case K_OBJECT: snprintf(buf, n, "an object"); break;
    case K_BOOL: snprintf(buf, n, "true or false"); break;
    case K_INT: snprintf(buf, n, "an integer from %.0f to %.0f", r->min, r->max); break;
    case K_NUM: snprintf(buf, n, "a number from %g to %g%s", r->min, r->max, r->nullable ? " (or null)" : ""); break;
    case K_ENUM:
    case K_STR: list(l, sizeof l, r->choices); snprintf(buf, n, "one of: %s", l); break;
    case K_TEXT: snprintf(buf, n, "a string"); break;
    case K_MODEL: snprintf(buf, n, "a model id (mdl_…)"); break;
    case K_DATASET: snprintf(buf, n, "a data set id (ds_…)"); break;
    case K_NAMES: snprintf(buf, n, "a list of node names"); break;
    case K_JSON: snprintf(buf, n, "an object {\"tensors\": {…}, \"ops\": {…}}"); break;
    case K_SHAPES: snprintf(buf, n, "an object keyed by input name, each a list of sizes ([1, 3, 48, 192])"); break;
    }
}

/* ---- defaults --------------------------------------------------------------------------------- */

static void free_value(qs_job_spec *s, const row *r)
{
    if (r->kind == K_TEXT || r->kind == K_JSON) {
        free(*(char **)at(s, r));
        *(char **)at(s, r) = NULL;
    } else if (r->kind == K_SHAPES) {
        qs_input_shape *v = *(qs_input_shape **)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        for (int i = 0; i < *cnt; i++)
            free(v[i].name);
        free(v);
        *(qs_input_shape **)at(s, r) = NULL;
        *cnt = 0;
    } else if (r->kind == K_NAMES) {
        char **v = *(char ***)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        for (int i = 0; i < *cnt; i++)
            free(v[i]);
        free(v);
        *(char ***)at(s, r) = NULL;
        *cnt = 0;
    }
}

/* Sets a scalar field from its default's text; the table's texts are known good. */
static void set_text(qs_job_spec *s, const row *r, const char *t)
{
    switch (r->kind) {
    case K_BOOL: *(int *)at(s, r) = !strcmp(t, "true"); break;
    case K_INT: *(int *)at(s, r) = (int)strtol(t, NULL, 10); break;
    case K_NUM: *(double *)at(s, r) = strtod(t, NULL); break;
    case K_ENUM:
        for (int i = 0; r->choices[i]; i++)
            if (!strcmp(r->choices[i], t))
                *(int *)at(s, r) = enum_value(r, i);
        break;
    case K_STR: snprintf(at(s, r), r->size, "%s", t); break;
    default: QS_ASSERT(!"a default for a field without one");
    }
}

/* The config's fields to the preset's defaults (the spec's other fields are left alone). */
static void config_defaults(qs_job_spec *s, int basic)
{
    for (int i = 0; i < NROWS; i++) {
        const row *r = &rows[i];
        if (strncmp(r->path, "config.", 7))
            continue;
        free_value(s, r);
        if (r->dflt)
            set_text(s, r, basic && r->basic ? r->basic : r->dflt);
    }
}

void qs_qconfig_default(qs_qconfig *c, const char *preset)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    config_defaults(&s, preset && !strcmp(preset, "basic"));
    *c = s.config;
}

void qs_qconfig_free(qs_qconfig *c)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    s.config = *c;
    for (int i = 0; i < NROWS; i++)
        free_value(&s, &rows[i]);
    *c = s.config;
}

void qs_job_spec_free(qs_job_spec *s)
{
    for (int i = 0; i < NROWS; i++)
        free_value(s, &rows[i]);
}

int qs_qconfig_check_names(const qs_qconfig *c, const qs_graph *g, qs_err *e)
{
    for (int i = 0; i < c->nexclude; i++) {
        int found = 0;
        for (int k = 0; k < g->nnodes && !found; k++)
            found = g->nodes[k].name && !strcmp(g->nodes[k].name, c->exclude[i]);
        if (!found)
            return qs_error(e, QS_EINVAL, "config.exclude[%d]: the model has no node named '%s'", i, c->exclude[i]);
    }
    qs_qoverrides ov;
    int rc = qs_overrides_parse(c->overrides, &ov, e);
    if (rc == 0)
        rc = qs_overrides_check(&ov, g, e);
    qs_overrides_free(&ov);
    return rc;
}

int qs_qconfig_set_exclude(qs_qconfig *c, const char *csv)
{
    for (int i = 0; i < c->nexclude; i++)
        free(c->exclude[i]);
    free(c->exclude);
    c->exclude = NULL;
    c->nexclude = 0;
    if (!csv || !*csv)
        return 0;
    char *dup = strdup(csv), *save = NULL;
    if (!dup)
        return QS_ENOMEM;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char **x = realloc(c->exclude, (c->nexclude + 1) * sizeof *x);
        if (!x || !(t = strdup(t))) {
            if (x)
                c->exclude = x;
            free(dup);
            return QS_ENOMEM;
        }
        c->exclude = x;
        c->exclude[c->nexclude++] = t;
    }
    free(dup);
    return 0;
}

/* ---- parsing ---------------------------------------------------------------------------------- */

static int accepts(const row *r, unsigned type) { return (r->jobs & type) != 0; }

/* config.rounding and config.adaround.enabled say one thing: the one given sets the other, and
 * both given must agree (QS_EUNSUPPORTED, naming both: each is valid, the pair is not). */
static int rounding_coherent(qs_job_spec *s, json_t *cfg, unsigned type, qs_err *e)
{
    qs_qconfig *c = &s->config;
    json_t *ada = json_object_get(cfg, "adaround");
    int has_r = json_object_get(cfg, "rounding") != NULL, has_a = json_is_boolean(json_object_get(ada, "enabled"));
    if ((type & Q) && has_r && has_a && c->adaround.enabled != (c->rounding == QS_ROUND_ADAROUND))
        return qs_error(e, QS_EUNSUPPORTED, "config.rounding: \"%s\" contradicts config.adaround.enabled = %s "
                        "(true means rounding \"adaround\", false \"nearest\"); give one of them",
                        ROUNDINGS[c->rounding], c->adaround.enabled ? "true" : "false");
    if (has_a && !has_r)
        c->rounding = c->adaround.enabled ? QS_ROUND_ADAROUND : QS_ROUND_NEAREST;
    c->adaround.enabled = c->rounding == QS_ROUND_ADAROUND;
    return 0;
}

/* One value into the struct (v neither absent nor a null that means "not given"). */
static int parse_value(qs_job_spec *s, const row *r, json_t *v, unsigned type, qs_err *e);

static int walk(qs_job_spec *s, const char *p, json_t *obj, unsigned type, qs_err *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {   /* unknown keys first: a typo is the likeliest mistake */
        int known = 0;
        for (int i = 0; i < NROWS && !known; i++)
            known = child_of(&rows[i], p) && accepts(&rows[i], type) && !strcmp(leaf(&rows[i]), key);
        if (!known) {
            char names[1024];
            size_t k = 0;
            names[0] = 0;
            for (int i = 0; i < NROWS; i++)
                if (child_of(&rows[i], p) && accepts(&rows[i], type) && k < sizeof names)
                    k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", k ? ", " : "", leaf(&rows[i]));
            return qs_error(e, QS_EINVAL, "unknown field '%s%s%s' (expected one of: %s)", p, *p ? "." : "", key,
                            names);
        }
    }
    for (int i = 0; i < NROWS; i++) {
        const row *r = &rows[i];
        if (!child_of(r, p) || !accepts(r, type))
            continue;
        v = json_object_get(obj, leaf(r));
        if (!v || (json_is_null(v) && r->nullable)) {
            if (r->required & type) {
                char what[256];
                expected(r, what, sizeof what);
                return qs_error(e, QS_EINVAL, "%s: required for %s jobs (%s)", r->path,
                                qs_job_type_name((qs_job_type)type), what);
            }
            if (v && r->kind == K_NUM)
                *(double *)at(s, r) = -1;   /* null: off (target_drop) */
            continue;
        }
        int rc = parse_value(s, r, v, type, e);
        if (rc < 0)
            return rc;
    }
    /* a field that follows a sibling: an explicit range without last_layer covers the logits too */
    for (int i = 0; i < NROWS; i++) {
        const row *r = &rows[i];
        if (!r->follows || !child_of(r, p) || !accepts(r, type) || json_object_get(obj, leaf(r)) ||
            !json_object_get(obj, r->follows))
            continue;
        for (int k = 0; k < NROWS; k++)
            if (child_of(&rows[k], p) && !strcmp(leaf(&rows[k]), r->follows))
                *(int *)at(s, r) = *(int *)at(s, &rows[k]);
    }
    return strcmp(p, "config") ? 0 : rounding_coherent(s, obj, type, e);
}

static int parse_value(qs_job_spec *s, const row *r, json_t *v, unsigned type, qs_err *e)
{
    char what[256];
    expected(r, what, sizeof what);
    switch (r->kind) {
    case K_OBJECT:
        if (!json_is_object(v))
            break;
        if (!strcmp(r->path, "config")) {   /* the preset first: the other fields override it */
            json_t *p = json_object_get(v, "preset");
            const row *pr = NULL;
            for (int i = 0; i < NROWS; i++)
                if (!strcmp(rows[i].path, "config.preset"))
                    pr = &rows[i];
            int rc;
            if (p && accepts(pr, type) && (rc = parse_value(s, pr, p, type, e)) < 0)
                return rc;
            config_defaults(s, !strcmp(s->config.preset, "basic"));
        }
        return walk(s, r->path, v, type, e);
    case K_BOOL:
        if (!json_is_boolean(v))
            break;
        *(int *)at(s, r) = json_is_true(v);
        return 0;
    case K_INT:
    case K_NUM: {
        if (r->kind == K_INT ? !json_is_integer(v) : !json_is_number(v))
            break;
        double x = json_number_value(v);
        if (!(x >= r->min && x <= r->max))
            return qs_error(e, QS_EINVAL, "%s: %g is out of range; must be %s", r->path, x, what);
        if (r->kind == K_INT)
            *(int *)at(s, r) = (int)json_integer_value(v);
        else
            *(double *)at(s, r) = x;
        return 0;
    }
    case K_ENUM:
    case K_STR:
        if (!json_is_string(v))
            break;
        for (int i = 0; r->choices[i]; i++)
            if (!strcmp(r->choices[i], json_string_value(v))) {
                if (r->kind == K_ENUM)
                    *(int *)at(s, r) = enum_value(r, i);
                else
                    snprintf(at(s, r), r->size, "%s", r->choices[i]);
                return 0;
            }
        return qs_error(e, QS_EINVAL, "%s: '%s' is not allowed; expected %s", r->path, json_string_value(v), what);
    case K_TEXT: {
        if (!json_is_string(v))
            break;
        char *t = strdup(json_string_value(v));
        if (!t)
            return qs_error(e, QS_ENOMEM, "out of memory");
        free(*(char **)at(s, r));
        *(char **)at(s, r) = t;
        return 0;
    }
    case K_MODEL:
    case K_DATASET:
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= QS_SPEC_ID_MAX)
            break;
        snprintf(at(s, r), QS_SPEC_ID_MAX, "%s", json_string_value(v));
        return 0;
    case K_NAMES: {
        if (!json_is_array(v))
            break;
        free_value(s, r);
        char ***names = (char ***)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_string(x))
                return qs_error(e, QS_EINVAL, "%s[%zu]: must be a node name (string)", r->path, i);
            char **grown = realloc(*names, (*cnt + 1) * sizeof *grown);
            if (!grown)
                return qs_error(e, QS_ENOMEM, "out of memory");
            *names = grown;
            if (!(grown[*cnt] = strdup(json_string_value(x))))
                return qs_error(e, QS_ENOMEM, "out of memory");
            (*cnt)++;
        }
        return 0;
    }
    case K_SHAPES: {
        if (!json_is_object(v))
            break;
        free_value(s, r);
        qs_input_shape **list = (qs_input_shape **)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        const char *key;
        json_t *x;
        if (json_object_size(v) && !(*list = calloc(json_object_size(v), sizeof **list)))
            return qs_error(e, QS_ENOMEM, "out of memory");
        json_object_foreach(v, key, x) {
            size_t nd = json_array_size(x);
            if (!json_is_array(x) || nd < 1 || nd > 8)
                return qs_error(e, QS_EINVAL, "%s.%s: must be a list of 1 to 8 sizes, such as [1, 3, 48, 192]",
                                r->path, key);
            qs_input_shape *sh = &(*list)[*cnt];
            for (size_t d = 0; d < nd; d++) {
                json_t *dv = json_array_get(x, d);
                if (!json_is_integer(dv) || json_integer_value(dv) < 1 || json_integer_value(dv) > (1LL << 31))
                    return qs_error(e, QS_EINVAL, "%s.%s[%zu]: must be a size (an integer from 1 to 2147483648)",
                                    r->path, key, d);
                sh->dims[d] = json_integer_value(dv);
            }
            if (!(sh->name = strdup(key)))
                return qs_error(e, QS_ENOMEM, "out of memory");
            sh->ndim = (int)nd;
            (*cnt)++;
        }
        return 0;
    }
    case K_JSON: {
        if (!json_is_object(v))
            break;
        char *t = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        if (!t)
            return qs_error(e, QS_ENOMEM, "out of memory");
        if (!strcmp(r->path, "config.overrides")) {   /* its shape, field by field */
            qs_qoverrides ov;
            int rc = qs_overrides_parse(t, &ov, e);
            qs_overrides_free(&ov);
            if (rc < 0) {
                free(t);
                return rc;
            }
        }
        free(*(char **)at(s, r));
        *(char **)at(s, r) = t;
        return 0;
    }
    }
    return qs_error(e, QS_EINVAL, "%s: must be %s", r->path, what);
}

const char *qs_job_type_name(qs_job_type t)
{
    for (int i = 0; TYPES[i]; i++)
        if ((unsigned)TYPE_BITS[i] == (unsigned)t)
            return TYPES[i];
    return "?";
}

int qs_job_spec_parse(json_t *spec, unsigned flags, qs_job_spec *s, qs_err *e)
{
    memset(s, 0, sizeof *s);
    config_defaults(s, 0);
    if (!json_is_object(spec))
        return qs_error(e, QS_EINVAL, "the job spec must be a JSON object");
    /* the type first: it decides which fields there are */
    const char *types = (flags & QS_SPEC_DEBUG_JOBS) ? "eval, ptq, analyze, qat, sleep" : "eval, ptq, analyze, qat";
    json_t *t = json_object_get(spec, "type");
    if (!json_is_string(t))
        return qs_error(e, QS_EINVAL, "type: required (a string); expected one of: %s", types);
    for (int i = 0; TYPES[i]; i++)
        if (!strcmp(TYPES[i], json_string_value(t)) && (TYPE_BITS[i] != QS_JOB_SLEEP || (flags & QS_SPEC_DEBUG_JOBS)))
            s->type = (qs_job_type)TYPE_BITS[i];
    if (!s->type)
        return qs_error(e, QS_EINVAL, "type: '%s' is not allowed; expected one of: %s", json_string_value(t), types);
    int rc = walk(s, "", spec, s->type, e);
    if (rc < 0)
        qs_job_spec_free(s);
    return rc;
}

int qs_qconfig_parse(json_t *cfg, qs_qconfig *c, qs_err *e)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    config_defaults(&s, 0);
    s.type = QS_JOB_PTQ;
    int rc = 0;
    if (cfg && !json_is_null(cfg)) {
        const row *cr = NULL;
        for (int i = 0; i < NROWS; i++)
            if (!strcmp(rows[i].path, "config"))
                cr = &rows[i];
        rc = parse_value(&s, cr, cfg, QS_JOB_PTQ, e);
    }
    if (rc < 0)
        qs_job_spec_free(&s);
    *c = s.config;
    return rc;
}

int qs_job_spec_parse_text(const char *text, size_t len, unsigned flags, qs_job_spec *s, qs_err *e)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        memset(s, 0, sizeof *s);
        return qs_error(e, QS_EINVAL, "the job spec is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                        je.column);
    }
    int rc = qs_job_spec_parse(j, flags, s, e);
    json_decref(j);
    return rc;
}

int qs_qconfig_parse_text(const char *text, qs_qconfig *c, qs_err *e)
{
    json_t *j = NULL;
    if (text) {
        json_error_t je;
        if (!(j = json_loads(text, JSON_REJECT_DUPLICATES, &je))) {
            qs_qconfig_default(c, "standard");
            return qs_error(e, QS_EINVAL, "config: not valid JSON: %s (line %d, column %d)", je.text, je.line,
                            je.column);
        }
    }
    int rc = qs_qconfig_parse(j, c, e);
    json_decref(j);
    return rc;
}

void qs_spec_err_field(const qs_err *e, char *buf, size_t n)
{
    static const char unknown[] = "unknown field '";
    const char *m = e->msg;
    size_t k;
    if (!strncmp(m, unknown, sizeof unknown - 1)) {   /* the one message that quotes its path */
        m += sizeof unknown - 1;
        k = strcspn(m, "'");
    } else {
        k = strcspn(m, ": ");
        if (m[k] != ':')
            k = 0;
    }
    if (k >= n)
        k = n - 1;
    snprintf(buf, n, "%.*s", (int)k, m);
}

/* ---- writing ---------------------------------------------------------------------------------- */

/* The value of r as JSON (new reference); NULL when it is not set (an empty id, no name). */
static json_t *value_json(const qs_job_spec *s, const row *r, unsigned type)
{
    switch (r->kind) {
    case K_OBJECT: {
        json_t *o = json_object();
        for (int i = 0; i < NROWS; i++)
            if (child_of(&rows[i], r->path) && accepts(&rows[i], type)) {
                json_t *v = value_json(s, &rows[i], type);
                if (v)
                    json_object_set_new(o, leaf(&rows[i]), v);
            }
        if (!json_object_size(o) && strcmp(r->path, "config")) {   /* an empty train / validation */
            json_decref(o);
            return NULL;
        }
        return o;
    }
    case K_BOOL: return json_boolean(*(const int *)cat(s, r));
    case K_INT: return json_integer(*(const int *)cat(s, r));
    case K_NUM: {
        double x = *(const double *)cat(s, r);
        return r->nullable && x < 0 ? json_null() : json_real(x);
    }
    case K_ENUM: return json_string(enum_name(r, *(const int *)cat(s, r)));
    case K_STR: return json_string(cat(s, r));
    case K_TEXT: {
        const char *t = *(char *const *)cat(s, r);
        return t ? json_string(t) : NULL;
    }
    case K_MODEL:
    case K_DATASET: return *(const char *)cat(s, r) ? json_string(cat(s, r)) : NULL;
    case K_NAMES: {
        json_t *a = json_array();
        char *const *names = *(char **const *)cat(s, r);
        int cnt = *(const int *)((const char *)s + r->offset2);
        for (int i = 0; i < cnt; i++)
            json_array_append_new(a, json_string(names[i]));
        return a;
    }
    case K_JSON: {
        const char *t = *(char *const *)cat(s, r);
        json_t *v = t ? json_loads(t, 0, NULL) : NULL;
        return v ? v : json_null();
    }
    case K_SHAPES: {
        json_t *o = json_object();
        const qs_input_shape *list = *(qs_input_shape *const *)cat(s, r);
        int cnt = *(const int *)((const char *)s + r->offset2);
        for (int i = 0; i < cnt; i++) {
            json_t *a = json_array();
            for (int d = 0; d < list[i].ndim; d++)
                json_array_append_new(a, json_integer(list[i].dims[d]));
            json_object_set_new(o, list[i].name, a);
        }
        return o;
    }
    }
    return NULL;
}

json_t *qs_job_spec_to_json(const qs_job_spec *s)
{
    json_t *o = json_object();
    for (int i = 0; i < NROWS; i++)
        if (child_of(&rows[i], "") && accepts(&rows[i], s->type)) {
            json_t *v = value_json(s, &rows[i], s->type);
            if (v)
                json_object_set_new(o, rows[i].path, v);
        }
    return o;
}

json_t *qs_qconfig_to_json(const qs_qconfig *c)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    s.type = QS_JOB_PTQ;
    s.config = *c;
    for (int i = 0; i < NROWS; i++)
        if (!strcmp(rows[i].path, "config"))
            return value_json(&s, &rows[i], QS_JOB_PTQ);
    return NULL;
}

char *qs_job_spec_to_text(const qs_job_spec *s)
{
    json_t *j = qs_job_spec_to_json(s);
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

char *qs_qconfig_to_text(const qs_qconfig *c)
{
    json_t *j = qs_qconfig_to_json(c);
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

json_t *qs_spec_presets_json(void)
{
    json_t *o = json_object();
    for (int i = 0; PRESETS[i]; i++) {
        qs_qconfig c;
        qs_qconfig_default(&c, PRESETS[i]);
        json_object_set_new(o, PRESETS[i], qs_qconfig_to_json(&c));
        qs_qconfig_free(&c);
    }
    return o;
}

/* ---- the schema -------------------------------------------------------------------------------- */

static const char *schema_type(const row *r)
{
    switch (r->kind) {
    case K_OBJECT: case K_JSON: case K_SHAPES: return "object";
    case K_BOOL: return "boolean";
    case K_INT: return "integer";
    case K_NUM: return "number";
    case K_NAMES: return "array";
    default: return "string";
    }
}

static json_t *row_schema(const row *r)
{
    json_t *o = json_pack("{s:s}", "type", schema_type(r));
    char jobs[64] = "", doc[1024];
    for (int i = 0; TYPES[i]; i++)
        if ((r->jobs & (unsigned)TYPE_BITS[i]) && TYPE_BITS[i] != QS_JOB_SLEEP)
            snprintf(jobs + strlen(jobs), sizeof jobs - strlen(jobs), "%s%s", *jobs ? ", " : "", TYPES[i]);
    snprintf(doc, sizeof doc, "%s (job types: %s)%s%s%s", r->doc ? r->doc : "", jobs, r->basic ? " Preset basic: " : "",
             r->basic ? r->basic : "", r->basic ? "." : "");
    json_object_set_new(o, "description", json_string(doc));
    if (r->kind == K_INT || r->kind == K_NUM) {
        json_object_set_new(o, "minimum", json_real(r->min));
        json_object_set_new(o, "maximum", json_real(r->max));
    }
    if (r->choices) {
        json_t *en = json_array();
        for (int i = 0; r->choices[i]; i++)
            json_array_append_new(en, json_string(r->choices[i]));
        json_object_set_new(o, "enum", en);
    }
    if (r->nullable && r->kind != K_OBJECT)
        json_object_set_new(o, "nullable", json_true());
    if (r->kind == K_NAMES)
        json_object_set_new(o, "items", json_pack("{s:s}", "type", "string"));
    if (r->kind == K_JSON)
        json_object_set_new(o, "additionalProperties", json_true());
    if (r->kind == K_SHAPES)
        json_object_set_new(o, "additionalProperties",
                            json_pack("{s:s, s:{s:s, s:i}, s:i, s:i}", "type", "array", "items", "type", "integer",
                                      "minimum", 1, "minItems", 1, "maxItems", 8));
    if (r->dflt) {   /* the standard preset's default, as the normalised spec writes it */
        qs_job_spec s;
        memset(&s, 0, sizeof s);
        config_defaults(&s, 0);
        json_object_set_new(o, "default", value_json(&s, r, r->jobs));
    }
    if (r->kind == K_OBJECT) {
        json_t *props = json_object();
        for (int i = 0; i < NROWS; i++)
            if (child_of(&rows[i], r->path))
                json_object_set_new(props, leaf(&rows[i]), row_schema(&rows[i]));
        json_object_set_new(o, "properties", props);
        json_object_set_new(o, "additionalProperties", json_false());
    }
    return o;
}

json_t *qs_spec_config_schema(void)
{
    for (int i = 0; i < NROWS; i++)
        if (!strcmp(rows[i].path, "config"))
            return row_schema(&rows[i]);
    return NULL;
}

int qs_spec_nfields(void) { return NROWS; }
const char *qs_spec_field_path(int i) { return i >= 0 && i < NROWS ? rows[i].path : NULL; }
unsigned qs_spec_field_jobs(int i) { return i >= 0 && i < NROWS ? rows[i].jobs : 0; }
const char *qs_spec_field_schema_type(int i) { return i >= 0 && i < NROWS ? schema_type(&rows[i]) : NULL; }

/* ---- data against the model --------------------------------------------------------------------- */

static void shape_text(char *buf, size_t n, const qs_spec_tensor *t, int batch_n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++) {
        if (d == 0 && batch_n)
            k += (size_t)snprintf(buf + k, n - k, "N");
        else if (t->shape[d] < 0)
            k += (size_t)snprintf(buf + k, n - k, "%s?", d ? ", " : "");
        else
            k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    }
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

int qs_spec_check_data(const char *what, const char *id, const qs_spec_tensor *inputs, int ninputs,
                       const qs_spec_tensor *arrays, int narrays, qs_err *e)
{
    int64_t rows0 = -1;
    for (int i = 0; i < ninputs; i++) {
        const qs_spec_tensor *in = &inputs[i], *a = NULL;
        for (int k = 0; k < narrays && !a; k++)
            if (in->name && arrays[k].name && !strcmp(in->name, arrays[k].name))
                a = &arrays[k];
        if (!a && narrays == 1 && ninputs == 1)
            a = &arrays[0];
        char want[192], got[192];
        shape_text(want, sizeof want, in, 1);
        if (!a)
            return qs_error(e, QS_EINVAL, "%s: data set %s has no array named '%s' (the model's input %d, shape %s); "
                            "a model with several inputs takes an .npz keyed by input name", what, id, in->name, i,
                            want);
        int ok = a->ndim == in->ndim && a->ndim >= 1;
        for (int d = 1; ok && d < in->ndim; d++)
            ok = in->shape[d] < 0 || in->shape[d] == a->shape[d];
        if (!ok) {
            shape_text(got, sizeof got, a, 0);
            return qs_error(e, QS_ESHAPE, "%s: data set %s has shape %s; the model's input '%s' expects %s", what,
                            id, got, in->name, want);
        }
        if (rows0 < 0)
            rows0 = a->shape[0];
        else if (a->shape[0] != rows0)
            return qs_error(e, QS_ESHAPE, "%s: data set %s has %lld samples for input '%s' but %lld for input '%s'",
                            what, id, (long long)a->shape[0], in->name, (long long)rows0, inputs[0].name);
    }
    if (rows0 == 0)
        return qs_error(e, QS_EINVAL, "%s: data set %s is empty (0 samples)", what, id);
    return 0;
}
