/* Shared pieces of the quant command line: the command table's entry type, option parsing and
 * messages (cli/cli.c), the commands (cli/quant.c's table; cli/cmd_*.c) and the pipeline commands
 * (cli/pipelines.c). */
#ifndef QD_CLI_H
#define QD_CLI_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include <quant/error.h>

#include "cli/remote.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

typedef struct command {
    const char *name, *summary, *usage, *help;
    int (*fn)(const struct command *cmd, int argc, char **argv);
    void (*help_more)(void);   /* prints what follows help, from the engine's tables (NULL: nothing) */
} command;

typedef struct opt {
    const char *name;    /* "--batch" */
    const char **val;    /* options with a value (with count: an array of CLI_OPT_MAX, one per use) */
    int *flag;           /* flags */
    int *count;          /* repeatable options: how many values val[] holds */
} opt;

#define CLI_OPT_MAX 16   /* values of a repeatable option */

enum { PARSED = -1 };

extern atomic_int interrupted;   /* the signal that interrupted (SIGINT, SIGTERM, SIGHUP); the engine's abort flag */
/* --server URL / --token T, taken out of the arguments of ptq, qat, analyze and eval by main():
 * those commands then run on a quantd server (cli/remote.c) with the same inputs and outputs.
 * Its interrupt flag is `interrupted`. */
extern qd_remote_opts cli_remote;
void catch_interrupts(void);

int usage_error(const command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fail(const command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int engine_fail(const command *c, int rc, const qs_err *e);
/* Fills options and up to maxpos positionals. Returns PARSED, or an exit status (help, usage). */
int parse_args(const command *c, int argc, char **argv, const opt *opts, const char **pos, int maxpos, int *npos);
/* An integer option in [lo, hi]; NULL keeps the default. Returns PARSED or EXIT_USAGE. */
int int_opt(const command *c, const char *name, const char *s, int64_t lo, int64_t hi, int64_t *v);
void print_json(json_t *j);   /* steals j */
/* --input-shape NAME=D0xD1x… (repeatable): sizes of the model inputs' symbolic dims */
#define CLI_INPUT_SHAPE_HELP \
    "  --input-shape NAME=D0xD1x…  the size of input NAME's symbolic dims (repeatable), e.g.\n" \
    "                    x=1x3x48x192; the data's sample shape gives them too (they must agree)\n"
struct qs_graph;
int cli_bind_shapes(const command *c, struct qs_graph *g, const char *const *shapes, int n);   /* EXIT_OK or EXIT_FAIL */
int cli_shapes_to_cfg(const command *c, json_t *cfg, const char *const *shapes, int n);       /* config.input_shapes */
void cli_print_help(const command *c);
struct qs_graph;
struct qs_graph *cli_load_model(const command *c, const char *path);   /* NULL: failed, message printed */
int cmd_info(const command *c, int argc, char **argv);      /* cli/cmd_info.c */

/* cli/pipelines.c: shared by the pipeline commands */
struct qs_pipeline_io;
json_t *cli_load_config(const command *c, const char *path);   /* --config FILE (a config or a job spec) */
void cli_set_cfg(json_t *cfg, const char *section, const char *key, json_t *v);   /* steals v */
/* Runs a pipeline into a fresh sibling of outdir, with progress bars, and renames it into place;
 * locally on a pool of `threads` compute threads (0: the engine's default) made for the command. */
int cli_run_pipeline(const command *c, const char *type, struct qs_pipeline_io *io, int threads, const char *outdir,
                     int json, json_t **result);
void cli_print_accuracy(const char *label, json_t *v);
void cli_print_presets(void);   /* the presets and their measured costs, from the engine's table */
int cmd_ptq(const command *c, int argc, char **argv);
int cmd_analyze(const command *c, int argc, char **argv);   /* cli/cmd_analyze.c */
int cmd_qat(const command *c, int argc, char **argv);       /* cli/cmd_qat.c */

#define QUANT_PIPELINE_COMMANDS \
    {.name = "ptq", .summary = "post-training quantization: QDQ model, encodings, report", \
     .usage = "quant ptq MODEL --calib X.npy [--val X.npy --labels Y.npy] [--config SPEC.json] [--wbits N]\n" \
              "                 [--abits N] [--per-channel | --per-tensor] [--wrange minmax|mse]\n" \
              "                 [--arange minmax|mse|percentile|ce] [--no-bn-fold] [--cle | --no-cle]\n" \
              "                 [--bias-correction none|empirical|analytical] [--rounding nearest|adaround|gptq]\n" \
              "                 [--adaround | --no-adaround] [--adaround-iterations N]\n" \
              "                 [--preset fast|standard|best] [--no-check-steps]\n" \
              "                 [--exclude NODE,...] [--calib-samples N] [--batch N] [--threads T] [--target-drop P]\n" \
              "                 [--target ort-x86|generic] [--reduce-range | --no-reduce-range]\n" \
              "                 [--input-shape NAME=D0xD1x…]… [--requantize] -o OUTDIR [--json]", \
     .help = QUANT_PTQ_HELP, .fn = cmd_ptq, .help_more = cli_print_presets}, \
    {.name = "analyze", .summary = "debugging flow: FP32 check, per-layer sensitivity, weight ranges", \
     .usage = "quant analyze MODEL --calib X.npy --val X.npy --labels Y.npy -o OUTDIR [--config SPEC.json]\n" \
              "                     [--wbits N] [--abits N] [--per-channel | --per-tensor] [--cle | --no-cle]\n" \
              "                     [--val-samples N] [--calib-samples N] [--batch N] [--threads T]\n" \
              "                     [--input-shape NAME=D0xD1x…]… [--requantize] [--json]", \
     .help = QUANT_ANALYZE_HELP, .fn = cmd_analyze}, \
    {.name = "qat", .summary = "quantization-aware training: QDQ model, encodings, report", \
     .usage = "quant qat MODEL --train X.npy --labels Y.npy [--val X.npy --val-labels Y.npy] [--calib X.npy]\n" \
              "                 [--config SPEC.json] [--wbits N] [--abits N] [--per-channel | --per-tensor]\n" \
              "                 [--epochs N] [--batch N] [--lr LR] [--optimizer sgd|nesterov|adam]\n" \
              "                 [--schedule cosine|step|constant] [--steps N] [--flip] [--freeze-ranges]\n" \
              "                 [--no-bn-fold] [--resume OUTDIR] [--threads T] [--input-shape NAME=D0xD1x…]…\n" \
              "                 [--requantize] -o OUTDIR [--json]", \
     .help = QUANT_QAT_HELP, .fn = cmd_qat},

#define QUANT_QAT_HELP \
    "Runs the standard QAT pipeline (paper section 4.4): BN folding, CLE (config cle), quantizers, range\n" \
    "initialisation as PTQ does it (calibration on the first training samples unless --calib is given),\n" \
    "then trains the quantized model on X with learnable ranges (straight-through estimator, LSQ-style\n" \
    "scale and offset gradients), validating after every epoch, and writes into OUTDIR (replaced\n" \
    "atomically when the run succeeds) the PTQ artifacts - model.qdq.onnx, encodings.json,\n" \
    "model.prepared.onnx (the trained FP32 weights), report.json (+ the per-epoch loss and accuracy\n" \
    "curve) - and checkpoint/, from which --resume continues.\n\n" \
    "  --train X --labels Y    training inputs and integer class labels (.npy; .npz keyed by input name)\n" \
    "  --val X --val-labels Y  validation data: FP32, PTQ and QAT accuracy, and accuracy per epoch\n" \
    "  --calib X          calibration inputs for the range initialisation (default: the training data)\n" \
    "  --config SPEC      the job spec's \"config\" object (or a whole job spec); the flags override it\n" \
    "  --wbits/--abits N  bit widths of weights / activations (2-16; default 8)\n" \
    "  --per-channel | --per-tensor   weight granularity (default per channel)\n" \
    "  --epochs N         passes over the training data (default 3)\n" \
    "  --batch N          training batch (default 64; the last partial batch of an epoch is dropped)\n" \
    "  --lr LR            learning rate (default 1e-5)\n" \
    "  --optimizer O      adam (default; decoupled weight decay), sgd or nesterov (momentum 0.9)\n" \
    "  --schedule S       cosine (default), step (x0.1 at 1/2 and 3/4) or constant\n" \
    "  --steps N          stop after N steps in all (0: no limit)\n" \
    "  --flip             random horizontal flips of NCHW image inputs\n" \
    "  --freeze-ranges    keep the initial quantization ranges (train weights only)\n" \
    "  --no-bn-fold       keep BatchNormalization: trained in training mode, re-estimated afterwards\n" \
    "  --resume DIR       continue from DIR/checkpoint (same model and training setup)\n" \
    "  --requantize       the model is already quantized (QuantizeLinear/DequantizeLinear, QLinear or\n" \
    "                     integer ops): dequantize its weights, drop its activation Q/DQ pairs and\n" \
    "                     quantize it again (without the flag such a model is refused)\n" \
    CLI_INPUT_SHAPE_HELP \
    "  --json             print {\"fp32_accuracy\", \"ptq_accuracy\", \"qat_accuracy\", \"seconds\", \"outdir\"}\n" \
    "                     (accuracies are fractions, null without validation data)"

#define QUANT_ANALYZE_HELP \
    "The quantization debugging flow (paper section 3.7): runs the PTQ stages (BN folding, CLE,\n" \
    "quantizers, weight ranges, calibration; no bias correction or AdaRound) and measures on the first\n" \
    "N validation samples: the FP32 sanity check (model as given vs after BN folding and CLE), accuracy\n" \
    "with weights only and activations only quantized, and for each quantizer group (a layer's weight\n" \
    "and output quantizers) accuracy and output SQNR with only that group quantized and with all but\n" \
    "it; ranks the groups worst first and writes OUTDIR/analysis.json (also per-channel weight ranges\n" \
    "before and after CLE, for plots). Costs 6 + 2 x groups passes over the N samples.\n\n" \
    "  --calib X          unlabeled calibration inputs (.npy, or .npz keyed by input name)\n" \
    "  --val X --labels Y labelled validation data\n" \
    "  --config SPEC      the job spec's \"config\" object (or a whole job spec); flags override it\n" \
    "  --wbits/--abits N  bit widths of weights / activations (2-16; default 8)\n" \
    "  --per-channel | --per-tensor   weight granularity (default per channel)\n" \
    "  --cle | --no-cle   cross-layer equalization (default on)\n" \
    "  --val-samples N    validation samples measured (default 1000; config analysis.val_samples)\n" \
    "  --calib-samples N  calibration samples used (default 1024)\n" \
    "  --batch N          batch size (default 32)\n" \
    "  --requantize       the model is already quantized (QuantizeLinear/DequantizeLinear, QLinear or\n" \
    "                     integer ops): dequantize its weights, drop its activation Q/DQ pairs and\n" \
    "                     quantize it again (without the flag such a model is refused)\n" \
    CLI_INPUT_SHAPE_HELP \
    "  --json             print {\"fp32_accuracy\", \"quant_accuracy\", \"weights_only_accuracy\",\n" \
    "                     \"activations_only_accuracy\", \"worst\": [groups], \"seconds\", \"outdir\"}"

#define QUANT_PTQ_HELP \
    "Runs the standard PTQ pipeline (paper section 3.5, Fig. 8): BN folding, cross-layer equalization with\n" \
    "high-bias absorption, quantizers (symmetric weights, asymmetric activations), MSE weight ranges,\n" \
    "weight rounding (GPTQ; AdaRound in best; bias correction with nearest), then MSE activation ranges on X\n" \
    "(cross-entropy for the logits), and writes into OUTDIR (replaced atomically on success):\n" \
    "  model.qdq.onnx       the quantized model in QDQ form (ONNX Runtime runs it as it is)\n" \
    "  encodings.json       AIMET 1.0.0 encodings\n" \
    "  model.prepared.onnx  the FP32 model the quantizers were fitted on (after BN folding)\n" \
    "  report.json          config, every quantizer's range, per-layer SQNR, accuracies, timings\n\n" \
    "  --calib X          unlabeled calibration inputs (.npy, or .npz keyed by input name)\n" \
    "  --val X --labels Y validation data: FP32 and quantized accuracy\n" \
    "  --config SPEC      a JSON file with the job spec's \"config\" object (or a whole job spec);\n" \
    "                     the flags below override it\n" \
    "  --wbits/--abits N  bit widths of weights / activations (2-16; default 8)\n" \
    "  --per-channel | --per-tensor   weight granularity (default per channel)\n" \
    "  --wrange R         weight ranges: minmax | mse (default mse)\n" \
    "  --arange R         activation ranges: minmax | mse | percentile | ce (default mse, ce for the logits)\n" \
    "  --no-bn-fold       keep BatchNormalization nodes\n" \
    "  --cle | --no-cle   cross-layer equalization (default on; ReLU6 between pairs becomes ReLU)\n" \
    "  --bias-correction M  none | empirical | analytical (default empirical; after nearest or gptq)\n" \
    "  --rounding R       the weights' rounding: nearest | adaround (AdaRound, §3.4; best's) |\n" \
    "                     gptq (GPTQ: error compensated through the inverse Hessian; standard's)\n" \
    "  --adaround | --no-adaround      the same as --rounding adaround | nearest; --adaround-iterations N\n" \
    "  --preset P         fast | standard | best (below; default standard): the defaults the other\n" \
    "                     flags and --config change\n" \
    "  --no-check-steps   apply every step of the preset; by default (standard, best) each of CLE, MSE\n" \
    "                     ranges, the rounding and bias correction is kept only if it does not lower a\n" \
    "                     held-out score (accuracy with --val, else KL/SQNR against FP32 on the last\n" \
    "                     20% of the calibration samples; report.json: step_check)\n" \
    "  --exclude N1,N2    node names kept in FP32\n" \
    "  --calib-samples N  calibration samples used (default 1024)\n" \
    "  --batch N          calibration batch size (default 32)\n" \
    "  --target-drop P    closed loop (needs --val): while top-1 is more than P points below FP32, keep\n" \
    "                     the most sensitive quantizer groups at 16 bits, then in FP32, one by one;\n" \
    "                     lists what was kept (report.json: target_drop)\n" \
    "  --target T         the runtime the export is for: ort-x86 (default: ONNX Runtime's x86 integer\n" \
    "                     kernels, whose u8*s8 pairs saturate at 16 bits without VNNI) | generic (exact\n" \
    "                     integers); report.json: target has the export's output SQNR as the target\n" \
    "                     computes it (ort-x86: quantd's emulation of those kernels)\n" \
    "  --reduce-range | --no-reduce-range   8-bit weights on [-64, 63] where the target needs it\n" \
    "                     (ort-x86 with W8A8; default on), as ONNX Runtime's quantizer's reduce_range\n" \
    "  --requantize       the model is already quantized (QuantizeLinear/DequantizeLinear, QLinear or\n" \
    "                     integer ops): dequantize its weights, drop its activation Q/DQ pairs and\n" \
    "                     quantize it again (without the flag such a model is refused)\n" \
    CLI_INPUT_SHAPE_HELP \
    "  --json             print {\"fp32_accuracy\", \"quant_accuracy\", \"seconds\", \"outdir\"}\n" \
    "                     (accuracies are fractions, null without validation data)"

#endif
