/* ONNX import and export (protobuf-c code generated at build time from the system's onnx.proto).
 *
 *   qs_graph *g;
 *   if (qs_onnx_load("model.onnx", &g, &e) < 0) …   // e.msg names the problem
 *   qs_onnx_save(g, "out.onnx", &e);
 *
 * Import takes default-domain opsets 7–21, initializers in every encoding (raw_data and the typed
 * fields), initializers also listed as graph inputs (dropped from the runtime inputs), Constant
 * nodes (kept as nodes; the executor folds them), and external data files resolved relative to the
 * model's folder. Import checks structure only; qs_exec_check says which ops can run. */
#ifndef QUANT_ONNX_H
#define QUANT_ONNX_H

#include <stddef.h>

#include <quant/graph.h>

int qs_onnx_load(const char *path, qs_graph **out, qs_err *e);
/* basedir: where external data files are looked up (NULL: current directory) */
int qs_onnx_load_buffer(const void *buf, size_t len, const char *basedir, qs_graph **out, qs_err *e);
int qs_onnx_save(const qs_graph *g, const char *path, qs_err *e);
/* Like qs_onnx_save, but initializers of at least min_bytes go to "<file name>.data" beside the
 * model (ONNX external data). qs_onnx_save does this by itself for models over protobuf's 2 GB. */
int qs_onnx_save_external(const qs_graph *g, const char *path, size_t min_bytes, qs_err *e);
/* Serialises into a malloc'd buffer (caller frees). */
int qs_onnx_save_buffer(const qs_graph *g, void **buf, size_t *len, qs_err *e);

/* A serialized TensorProto (.pb, as in ONNX's conformance data) → tensor; *name may be NULL. */
int qs_onnx_load_tensor(const char *path, qs_tensor **out, char **name, qs_err *e);

#endif
