/* Input shapes: binding the symbolic dims of a model's inputs to sizes (the public functions are
 * in <quant/graph.h>: qs_graph_bind_input/_text/_data, qs_graph_unbound_dims); these are the
 * engine's own: the job spec's config.input_shapes, and report.json's record of the shapes used. */
#ifndef QS_SHAPES_H
#define QS_SHAPES_H

#include <jansson.h>

#include "graph.h"
#include "spec.h"

/* Binds every entry of c->input_shapes; errors start with "config.input_shapes.NAME: ". */
int qs_graph_bind_config(qs_graph *g, const qs_qconfig *c, qs_err *e);
/* {"input": [1, 3, 48, 192], …}: each input's shape as it runs, in config.input_shapes' form (a
 * symbolic batch as 1; null for a dim nothing set). New reference. */
json_t *qs_graph_input_shapes_json(const qs_graph *g);

/* The job submit's check: config.input_shapes against a model's inputs as the daemon records them
 * (qs_spec_tensor, -1 where symbolic): each names an input, has its rank and agrees with its fixed
 * dims; the inputs' symbolic dims (past the batch) then take the given sizes, so that the data sets
 * are checked against them. Errors start with "config.input_shapes.NAME: ". */
int qs_spec_apply_input_shapes(const qs_qconfig *c, qs_spec_tensor *inputs, int n, qs_err *e);

#endif
