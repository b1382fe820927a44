/* ONNX import/export: the public API is all there is (<quant/onnx.h>).
 * Engine code includes this name; outside code includes <quant/onnx.h> (or <quant/quant.h>). */
#ifndef QS_ONNX_H
#define QS_ONNX_H

#include "graph.h"
#include <quant/onnx.h>

#endif
