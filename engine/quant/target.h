/* The runtime an export is for (config.target) and what its arithmetic does to the export.
 *
 * ort-x86 — ONNX Runtime on x86. With its default optimisations ORT fuses a QDQ model's
 * DequantizeLinear → Conv/Gemm/MatMul → QuantizeLinear into integer kernels (QLinearConv, QGemm,
 * MatMulInteger…). On CPUs with AVX2 or AVX-512BW but no VNNI, MLAS's u8·s8 kernels multiply with
 * VPMADDUBSW, which adds each pair of u8·s8 products into an int16 with signed saturation (Intel
 * SDM, PMADDUBSW). With full 8-bit weights a pair reaches 2·255·127 = 64770 and saturates; ORT's
 * own quantizer offers reduce_range (7-bit weights, [-64, 63]: at most 2·255·64 = 32640) for this,
 * and ORT's quantization docs describe the problem ("U8S8 … saturation … VNNI does not have it").
 * So ort-x86 quantizes 8-bit weights with reduce_range when activations are 8 bits too (unless
 * config.weights.reduce_range is false), and
 * report.json measures the export under that arithmetic: quantd's own emulation of it (the op
 * quantd::TargetMac, ops/targetmac.c) run on held-out calibration rows — no ONNX Runtime needed.
 * With VNNI (VPDPBUSD accumulates into int32) the target computes exactly, like the simulation.
 *
 * generic — exact integer arithmetic: the export computes what the simulation computes.
 *
 *   scfg.reduce_range = qs_target_reduce_range(&cfg);
 *   json_t *t;  qs_target_measure(&ptq, &t, &e);   // → report.json "target" (+ warnings) */
#ifndef QS_TARGET_H
#define QS_TARGET_H

#include <jansson.h>

#include "quant/ptq.h"

/* 1 when the weights get reduce_range: allowed (weights.reduce_range, the default) and needed
 * (ort-x86 with 8-bit weights and activations: narrower weights cannot saturate, 16-bit ones run in
 * float). */
int qs_target_reduce_range(const qs_qconfig *c);

/* A copy of the simulation graph whose Conv/Gemm/MatMul layers with 8-bit (or narrower) weights and
 * 8-bit per-tensor input activations compute as the ort-x86 kernels do (TargetMac nodes); *nlayers:
 * how many were replaced. NULL on out of memory. */
qs_graph *qs_target_emulation(const qs_quantsim *sim, int *nlayers);

/* report.json's "target": the config's target and reduce_range, and on up to 64 held-out calibration
 * rows the output SQNR against FP32 of the simulation and (ort-x86) of the emulated target, and the
 * target's against the simulation. Adds a warning to the report when the target loses more than
 * 1 dB against the simulation or cannot be measured. */
int qs_target_measure(qs_ptq *p, json_t **out, qs_err *e);

#endif
