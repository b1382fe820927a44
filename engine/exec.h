/* The executor: the public API is all there is (<quant/exec.h>); engine code sees the graph's structs.
 * Engine code includes this name; outside code includes <quant/exec.h> (or <quant/quant.h>). */
#ifndef QS_EXEC_H
#define QS_EXEC_H

#include "graph.h"
#include "tensor.h"
#include "threadpool.h"
#include <quant/exec.h>

#endif
