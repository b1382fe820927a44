/* QuantSim (paper §2.3–2.4, §3): the FP32 graph with FakeQuant nodes (domain "quantd") inserted by
 * placement rules, plus the table of its quantizers. Everything downstream — range setting,
 * AdaRound, bias correction, QAT, export — works on this table and the graph it points into.
 *
 *   qs_qsim_config cfg = qs_qsim_config_default();         // W8 symmetric per-channel, A8 asymmetric
 *   qs_quantsim *sim = qs_quantsim_new(prepared_fp32, &cfg, &e);   // deep-copies the graph
 *   … set ranges: qs_quantizer_set(&sim->q[i], ch, scale, zero_point) …
 *   qs_exec *x = qs_exec_new(sim->g, QS_EXEC_INFER, &e);   // runs like any graph
 *
 * Placement rules:
 *  - weights: the weight input (initializer) of Conv, ConvTranspose, Gemm and MatMul (MatMul: the
 *    initializer operand) — per channel on the output-channel axis when cfg.per_channel (Conv W
 *    [M, C/g, k…]: axis 0; ConvTranspose W [C, M/g, k…]: axis 1; Gemm B: axis 0 when transB else 1;
 *    MatMul B [K, N]: axis 1);
 *  - biases of Conv/Gemm: int32 at scale s_in·s_w with zero point 0 (kept in sync by
 *    qs_quantsim_update_bias) so the simulation does what the exported int32 bias does;
 *  - activations: one quantizer after each fused group — Conv/Gemm/MatMul (+ BatchNormalization)
 *    (+ Relu/Clip/LeakyRelu/…) counts as one group and is quantized at the group's end; model
 *    inputs; residual Add/Mul and Concat outputs; other compute ops (pools other than MaxPool,
 *    Softmax, Sigmoid, …) get an output quantizer too;
 *  - MaxPool, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, Dropout, nearest Resize pass
 *    their input's grid through (no quantizer after them: max and data movement keep values on the
 *    grid); linear/cubic Resize and the normalizations (LayerNormalization, …) are compute ops;
 *  - transformers (paper §5, the BERT row): a MatMul of two activations (Q·Kᵀ, attention·V) has
 *    both inputs on a grid (an input that carries none, e.g. from an excluded node, gets its own
 *    quantizer); Softmax's output is quantized on an unsigned grid (its range within [0, 1]);
 *    LayerNormalization's output as any compute op's; GELU — the Gelu op, or the pattern torch
 *    exports below opset 20, x·0.5·(1 + erf(x/√2)) (Div, Erf, Add, Mul, Mul) — is one activation:
 *    only its output is quantized, and it joins the group of the layer that feeds it as Relu does;
 *    residual Adds are quantized; a Gather whose data is an initializer (an embedding table) has
 *    its table quantized as a weight (per channel on the last axis);
 *  - exclusions by node name keep a group in FP32 (no weight or output quantizer);
 *  - cfg.overrides (quant/overrides.h) change one tensor's or one op type's bits, symmetry,
 *    per-channel or skip its quantizers.
 * A FakeQuant with attribute bypass=1 passes x through unchanged: calibration runs with the
 * activation quantizers bypassed (and the bias quantizers, whose scale s_in·s_w needs the input
 * range being measured), and the debugging flow toggles them.
 * With reduce_range, weight grids lose their top bit (wbits ≥ 3).
 * Weight quantizers start with min-max ranges; activation quantizers have none (scale 1) until
 * set, and export refuses any that is neither set nor bypassed. A graph output that gets a
 * quantizer keeps its name (the FakeQuant writes it; the layer writes "<name>_fp"). */
#ifndef QS_QUANTSIM_H
#define QS_QUANTSIM_H

#include "graph.h"
#include "quant/quantizer.h"

typedef enum qs_qkind { QS_Q_INPUT, QS_Q_ACT, QS_Q_WEIGHT, QS_Q_BIAS } qs_qkind;

typedef struct qs_qsim_config {
    int wbits, abits;
    int w_symmetric, a_symmetric;   /* paper §2.3: symmetric weights, asymmetric activations */
    int per_channel;                /* weights per output channel */
    int reduce_range;               /* weights on a grid one bit narrower than wbits ([-64, 63] for 8
                                     * bits, still int8): ONNX Runtime's remedy for the 16-bit
                                     * saturation of its x86 u8·s8 kernels (quant/target.h) */
    int pow2;                       /* power-of-two scales */
    int quantize_bias;              /* int32 bias at s_in·s_w (default on) */
    int nexclude;
    char **exclude;                 /* node names kept in FP32 (borrowed) */
    const struct qs_qoverrides *overrides;   /* borrowed, read while placing only (NULL: none) */
} qs_qsim_config;

qs_qsim_config qs_qsim_config_default(void);

typedef struct qs_quantizer {
    char *name;        /* the quantized tensor's name in the FP32 model (encodings are keyed by it) */
    char *layer;       /* the node (group) it belongs to, for reports and per-layer analysis */
    qs_qkind kind;
    int value;         /* value id of the tensor being quantized (the FakeQuant's input) */
    int out;           /* value id of the FakeQuant's output */
    int scale, zero;   /* value ids of the scale / zero-point initializers (float32, [nch] or []) */
    int axis;          /* -1 per tensor */
    int nch;
    qs_grid grid;
    int symmetric;
    int bias_of;       /* QS_Q_BIAS: index of the weight quantizer; -1 otherwise */
    int bias_in;       /*            index of the input activation quantizer, -1 if none */
    int initialized;   /* ranges set */
    double sqnr_db;    /* activations, config.activations.high_precision auto: the 8-bit grid's SQNR on
                        * the calibration data (NAN: not measured) */
    int high_precision;   /* promoted to 16 bits by that rule */
} qs_quantizer;

typedef struct qs_quantsim {
    qs_graph *g;       /* owned: the FP32 graph + FakeQuant nodes */
    qs_qsim_config cfg;
    int nq;
    qs_quantizer *q;
    qs_tensor **fp32_w;   /* NULL, or per quantizer the FP32 weight kept aside (qs_quantsim_keep_fp32_weights) */
} qs_quantsim;

qs_quantsim *qs_quantsim_new(const qs_graph *fp32, const qs_qsim_config *cfg, qs_err *e);
void qs_quantsim_free(qs_quantsim *sim);

/* Weight rounding (GPTQ, AdaRound) writes its grid values into the weight initializers; a step
 * after it that compares with FP32 (bias correction) needs the weights from before. This keeps a
 * copy of every weight quantizer's float initializer (memory: the weights once more), and
 * qs_quantsim_fp32_weight gives it (or the initializer itself when none was kept). */
int qs_quantsim_keep_fp32_weights(qs_quantsim *sim, qs_err *e);
const qs_tensor *qs_quantsim_fp32_weight(const qs_quantsim *sim, int i);

/* Sets channel ch (or all, ch = -1) of quantizer i from scale and zero point. */
void qs_quantsim_set(qs_quantsim *sim, int i, int ch, float scale, float zero_point);
/* Sets quantizer i from a real range [lo, hi] per channel (ch = -1: per tensor) using its grid. */
void qs_quantsim_set_range(qs_quantsim *sim, int i, int ch, float lo, float hi);
float *qs_quantsim_scales(qs_quantsim *sim, int i);   /* live initializer data, nch floats */
float *qs_quantsim_zeros(qs_quantsim *sim, int i);
/* Recomputes bias scales s_in·s_w[c] after weight or activation ranges change. */
void qs_quantsim_update_bias(qs_quantsim *sim);
/* Bypass (1) or enable (0) quantizers of one kind (-1: all kinds), or one quantizer. */
void qs_quantsim_bypass_kind(qs_quantsim *sim, int kind, int bypass);
void qs_quantsim_bypass(qs_quantsim *sim, int i, int bypass);
int qs_quantsim_find(const qs_quantsim *sim, const char *name);   /* by quantized tensor name */
int qs_quantsim_bypassed(const qs_quantsim *sim, int i);
/* Gives quantizer i a grid of `bits` (same signedness); its range must be set again. */
int qs_quantsim_set_bits(qs_quantsim *sim, int i, int bits, qs_err *e);

/* 1 when node n passes its first input's grid through unchanged (max and data movement: MaxPool,
 * Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, Dropout, GlobalMaxPool, Slice, Split,
 * Gather, Pad with zeros, Resize/Upsample in nearest mode, …), so no quantizer follows it. Export uses it to repeat the input's
 * QDQ pair after such ops, as ONNX Runtime's QDQ format expects. */
int qs_quantsim_keeps_grid(const qs_graph *g, const qs_node *n);

#endif
