/* The job spec's "config" object as a C struct: the preset's defaults overridden field by field
 * by the JSON (../shared/DESIGN.md, "Job spec"). The same parser serves the CLI (--config and the
 * flags that override it), the daemon's job validation and the pipelines.
 *
 *   qs_qconfig c;
 *   if (qs_qconfig_parse(json_config, &c, &e) < 0) → e.msg names the field: "config.weights.bits: …"
 *   json_t *used = qs_qconfig_to_json(&c);      // the full config a report records
 *   qs_qconfig_free(&c);
 *
 * The public, text-only face of this is qs_config_check (<quant/config.h>).
 * Unknown fields are refused (a typo must not silently fall back to a default). */
#ifndef QS_QCONFIG_H
#define QS_QCONFIG_H

#include <jansson.h>

#include "error.h"
#include <quant/config.h>
#include "quant/range.h"

typedef enum { QS_BC_NONE, QS_BC_EMPIRICAL, QS_BC_ANALYTICAL } qs_biascorr_mode;

typedef struct qs_qconfig {
    char preset[32];                 /* "standard" (the paper's Fig. 8) or "basic" (fold + ranges only) */
    struct { int bits, symmetric, per_channel, pow2; qs_range_method range; } weights;
    struct { int bits, symmetric, pow2; qs_range_method range; double percentile; qs_range_method last_layer; } act;
    int bn_fold, cle, relu6_to_relu, bias_absorption;
    qs_biascorr_mode bias_correction;
    struct { int enabled; int iterations; double reg; int batch_size; int samples; } adaround;
    struct { int samples; int batch_size; } calibration;
    int nexclude;
    char **exclude;
    json_t *overrides;               /* {"node or tensor name": {"bits": …, …}} (owned reference) */
    struct { int epochs, batch_size; char optimizer[16]; double lr, weight_decay, momentum; int learn_ranges,
             bn_reestimate, flip; char schedule[16]; double clip_grad; int steps; } qat;
    double target_drop;              /* < 0: off; the closed loop of §3.7 */
    struct { int val_samples; } analysis;   /* the debugging flow's validation subset */
} qs_qconfig;

void qs_qconfig_default(qs_qconfig *c, const char *preset);
/* cfg may be NULL (all defaults). On error c is left freed. */
int qs_qconfig_parse(json_t *cfg, qs_qconfig *c, qs_err *e);
json_t *qs_qconfig_to_json(const qs_qconfig *c);
void qs_qconfig_free(qs_qconfig *c);
/* The same from JSON text (NULL: all defaults), as qs_pipeline_io.config_json holds it. */
int qs_qconfig_parse_text(const char *text, qs_qconfig *c, qs_err *e);
/* JSON text → *cfg (new reference; NULL for NULL text); QS_EINVAL naming the syntax error. */
int qs_config_json_load(const char *text, json_t **cfg, qs_err *e);
/* Replaces the exclusion list with a comma-separated one (CLI --exclude). */
int qs_qconfig_set_exclude(qs_qconfig *c, const char *csv);

#endif
