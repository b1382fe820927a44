/* The runner: the public API is all there is (<quant/runner.h>).
 * Engine code includes this name; outside code includes <quant/runner.h> (or <quant/quant.h>). */
#ifndef QS_RUNNER_H
#define QS_RUNNER_H

#include "data.h"
#include "exec.h"
#include "graph.h"
#include <quant/runner.h>

#endif
