/* The job spec's table: every field is one row, named by its JSON path (spec_impl.h says what a
 * row holds). An object's fields are the rows one level below its path. Defaults are text, read
 * by the same code as the JSON values would be, one column per preset: standard's (dflt), then
 * fast's and best's only where they differ. A new setting is one row here plus its field in
 * qs_qconfig.
 *
 * The presets trade time for accuracy: fast does no data-hungry step (BN folding, min-max ranges,
 * nearest rounding); standard is the paper's Fig. 8 pipeline, each step checked on held-out data,
 * with GPTQ's one-pass rounding where the paper has AdaRound (a fifth to a tenth of the time, as good at 8
 * bits); best is the paper's pipeline as written, AdaRound at its full iterations. The costs in
 * PRESET_* below are measured (bench/bench_preset_costs.py; docs/results.md). */
#include "spec_impl.h"

/* What each preset does and costs (the CLI's --help, GET /v1/presets, the OpenAPI document). */
#define PRESET_FAST "BN folding, min-max ranges, weights rounded to nearest: one calibration pass. Seconds on " \
    "small models: 1.1-2.6 s on the Fashion-MNIST fixtures (0.3-0.7x ONNX Runtime's quantize_static); " \
    "1 min on resnet18 at 224x224 with 512 images (30 CPU s, 0.8x ONNX Runtime's)."
#define PRESET_STANDARD "The paper's pipeline (Fig. 8) with GPTQ rounding and bias correction in place of " \
    "AdaRound: CLE with high-bias absorption, MSE ranges (cross-entropy for the logits), GPTQ, bias correction, " \
    "each step kept only if a held-out score holds. Seconds to minutes: 1.2-2.2 s on the Fashion-MNIST fixtures " \
    "on an idle machine (2.7-4.2x ONNX Runtime's quantize_static), within 0.19 points of AdaRound at W8A8 and " \
    "0.4 at W4A8; 2.6 min on resnet18 at 224x224 with 512 images, 2.4 min on mobilenet_v2."
#define PRESET_BEST "As standard, with AdaRound at its full 10,000 iterations per layer in place of GPTQ (Fig. 8 " \
    "as the paper has it): as long as it takes, 412-515 s on the Fashion-MNIST fixtures."

#define J(f) offsetof(qs_job_spec, f)
#define C(f) offsetof(qs_job_spec, config.f)
#define CS(f) .offset = C(f), .size = sizeof(((qs_job_spec *)0)->config.f)
enum {
    ENGINE = QS_JOB_EVAL | QS_JOB_PTQ | QS_JOB_ANALYZE | QS_JOB_QAT,
    ALL = ENGINE | QS_JOB_SLEEP,
    Q = QS_JOB_QUANT,
};

const char *const qs_spec_types[] = { "eval", "ptq", "analyze", "qat", "sleep", NULL };
const int qs_spec_type_bits[] = { QS_JOB_EVAL, QS_JOB_PTQ, QS_JOB_ANALYZE, QS_JOB_QAT, QS_JOB_SLEEP };
const char *const qs_spec_presets[] = { "fast", "standard", "best", "basic", NULL };
const spec_preset qs_spec_preset_table[] = {
    { "fast", COL_FAST, 1, PRESET_FAST },
    { "standard", COL_STANDARD, 1, PRESET_STANDARD },
    { "best", COL_BEST, 1, PRESET_BEST },
    { "basic", COL_FAST, 0, "The former name of fast: the same settings." },
    { NULL, COL_STANDARD, 0, NULL },
};
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

const row qs_spec_rows[] = {
    { .path = "type", .kind = K_ENUM, .offset = J(type), .choices = qs_spec_types, .values = qs_spec_type_bits,
      .jobs = ALL, .required = ALL, .doc = "What to run: ptq, qat, analyze or eval." },
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
    { .path = "config.preset", .kind = K_STR, CS(preset), .choices = qs_spec_presets, .dflt = "standard",
      .jobs = Q,
      .doc = "The defaults every other field starts from. fast: " PRESET_FAST " standard: " PRESET_STANDARD
             " best: " PRESET_BEST " basic: the former name of fast (the same settings)." },
    { .path = "config.weights", .kind = K_OBJECT, .jobs = Q, .doc = "The weight quantizers' grid (§2.2)." },
    { .path = "config.weights.bits", .kind = K_INT, .offset = C(weights.bits), .min = 2, .max = 16, .dflt = "8",
      .jobs = Q, .doc = "Bit width." },
    { .path = "config.weights.symmetric", .kind = K_BOOL, .offset = C(weights.symmetric), .dflt = "true",
      .jobs = Q, .doc = "Symmetric grid (zero point 0)." },
    { .path = "config.weights.per_channel", .kind = K_BOOL, .offset = C(weights.per_channel), .dflt = "true",
      .jobs = Q, .doc = "One scale per output channel." },
    { .path = "config.weights.range", .kind = K_ENUM, .offset = C(weights.range), .choices = WRANGES,
      .values = WRANGE_V, .dflt = "mse", .fast = "minmax", .jobs = Q,
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
      .values = ARANGE_V, .dflt = "mse", .fast = "minmax", .jobs = Q,
      .doc = "Range setting (§3.1): minmax, mse, percentile, ce (cross-entropy) or bn (β ± nγ)." },
    { .path = "config.activations.last_layer", .kind = K_ENUM, .offset = C(act.last_layer), .choices = ARANGES,
      .values = ARANGE_V, .dflt = "ce", .fast = "minmax", .follows = "range", .jobs = Q,
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
    { .path = "config.cle", .kind = K_BOOL, .offset = C(cle), .dflt = "true", .fast = "false", .jobs = Q,
      .doc = "Cross-layer equalization (§3.2)." },
    { .path = "config.relu6_to_relu", .kind = K_BOOL, .offset = C(relu6_to_relu), .dflt = "true", .jobs = Q,
      .doc = "Replace ReLU6 by ReLU where CLE needs it." },
    { .path = "config.bias_absorption", .kind = K_BOOL, .offset = C(bias_absorption), .dflt = "true",
      .fast = "false", .jobs = Q, .doc = "High-bias absorption (§3.2)." },
    { .path = "config.bias_correction", .kind = K_ENUM, .offset = C(bias_correction), .choices = BCS,
      .dflt = "empirical", .fast = "none", .jobs = Q,
      .doc = "Bias correction (§3.3), after nearest or GPTQ rounding (not AdaRound): none, empirical or "
             "analytical." },
    { .path = "config.rounding", .kind = K_ENUM, .offset = C(rounding), .choices = ROUNDINGS, .dflt = "gptq",
      .fast = "nearest", .best = "adaround", .jobs = Q, .doc = "The weights' rounding (needs calibration data): nearest (then bias "
      "correction), adaround (AdaRound, §3.4: learned per weight, slow) or gptq (beyond the paper: each layer's "
      "columns rounded in turn, the error compensated through the inverse Hessian of its inputs; then bias correction). "
      "adaround.enabled true/false is the same as \"adaround\"/\"nearest\"; the two contradicting is refused." },
    { .path = "config.adaround", .kind = K_OBJECT, .jobs = Q, .doc = "AdaRound (§3.4)." },
    { .path = "config.adaround.enabled", .kind = K_BOOL, .offset = C(adaround.enabled), .dflt = "false",
      .best = "true", .jobs = Q, .doc = "AdaRound the weights: the same as rounding \"adaround\" (true) or "
                                          "\"nearest\" (false); config.rounding is the newer name." },
    { .path = "config.adaround.iterations", .kind = K_INT, .offset = C(adaround.iterations), .min = 1,
      .max = 1000000, .dflt = "1000", .best = "10000", .jobs = Q, .doc = "Iterations per layer." },
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
    { .path = "config.check_steps", .kind = K_BOOL, .offset = C(check_steps), .dflt = "true", .fast = "false",
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
const int qs_spec_nrows = sizeof qs_spec_rows / sizeof qs_spec_rows[0];
