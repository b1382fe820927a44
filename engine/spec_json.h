/* The JSON (jansson) side of the job spec's table (spec.h): for the engine's pipelines, the CLI
 * and the daemon, which hold the spec as json_t. Not a public header.
 *
 *   qs_qconfig c;
 *   if (qs_qconfig_parse(json_config, &c, &e) < 0) → e.msg names the field: "config.weights.bits: …"
 *   json_t *used = qs_qconfig_to_json(&c);      // the full config a report records
 *   qs_qconfig_free(&c);
 */
#ifndef QS_SPEC_JSON_H
#define QS_SPEC_JSON_H

#include <jansson.h>

#include "spec.h"

/* cfg may be NULL or null (all defaults). On error c is left freed. */
int qs_qconfig_parse(json_t *cfg, qs_qconfig *c, qs_err *e);
json_t *qs_qconfig_to_json(const qs_qconfig *c);

/* A whole job spec; flags as for qs_job_spec_parse_text. On error s is left freed. */
int qs_job_spec_parse(json_t *spec, unsigned flags, qs_job_spec *s, qs_err *e);
/* The normalised spec (new reference): see qs_job_spec_to_text. */
json_t *qs_job_spec_to_json(const qs_job_spec *s);

/* Every config field's effective default, per preset: {"fast": {…}, "standard": {…}, "best": {…},
 * "basic": {…}}, each in the shape of the "config" object. */
json_t *qs_spec_presets_json(void);
/* The JSON Schema (OpenAPI 3.0 flavour) of the "config" object, from the table: each field with
 * its type, bounds or allowed values, standard default, the job types that take it and its doc. */
json_t *qs_spec_config_schema(void);

#endif
