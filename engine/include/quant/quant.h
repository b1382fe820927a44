/* libquant: quantize neural networks the way Nagel et al.'s "A White Paper on Neural Network
 * Quantization" (2021) describes, on ONNX models. The one header outside code includes:
 *
 *   #include <quant/quant.h>        // cc prog.c $(pkg-config --cflags --libs quant)
 *
 *   qs_err e = {0};
 *   qs_graph *g;
 *   if (qs_onnx_load("model.onnx", &g, &e) < 0) { fprintf(stderr, "%s\n", e.msg); … }
 *   qs_runner *r = qs_runner_new(g, 32, &e);          // run it over data in batches
 *
 * Handles (qs_graph, qs_exec, qs_runner, qs_dataset, qs_threadpool) are opaque; a tensor is a plain struct.
 * Every function returns 0 or a negative QS_E* code and fills the qs_err it is given. The
 * library exports only qs_* symbols. */
#ifndef QUANT_QUANT_H
#define QUANT_QUANT_H

#include <quant/version.h>
#include <quant/error.h>
#include <quant/tensor.h>
#include <quant/graph.h>
#include <quant/onnx.h>
#include <quant/data.h>
#include <quant/exec.h>
#include <quant/runner.h>
#include <quant/threadpool.h>

#endif
