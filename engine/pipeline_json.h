/* Pipelines with the result as a jansson object: for quantd's scheduler and the quant CLI, which
 * store or print it as JSON anyway (qs_pipeline_run in <quant/pipeline.h> is this, serialised).
 * Internal: outside code sees no jansson type. */
#ifndef QS_PIPELINE_JSON_H
#define QS_PIPELINE_JSON_H

#include <jansson.h>

#include <quant/pipeline.h>

/* As qs_pipeline_run; *result is a new reference. */
int qs_pipeline_run_json(const char *type, const qs_pipeline_io *io, json_t **result, qs_err *e);

#endif
