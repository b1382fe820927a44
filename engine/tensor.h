/* Tensors: the public API is all there is (<quant/tensor.h>); this adds QS_ASSERT for the engine.
 * Engine code includes this name; outside code includes <quant/tensor.h> (or <quant/quant.h>). */
#ifndef QS_TENSOR_H
#define QS_TENSOR_H

#include "error.h"
#include <quant/tensor.h>

#endif
