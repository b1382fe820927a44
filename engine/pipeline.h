/* Pipelines: the public API is <quant/pipeline.h>; pipeline_json.h adds the jansson form of
 * qs_pipeline_run for the engine's own callers.
 * Engine code includes this name; outside code includes <quant/pipeline.h> (or <quant/quant.h>). */
#ifndef QS_PIPELINE_H
#define QS_PIPELINE_H

#include "error.h"
#include "pipeline_json.h"

#endif
