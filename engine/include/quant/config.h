/* The job spec's "config" object (the quantization settings: preset, weights, activations, CLE,
 * AdaRound, …; docs/ARCHITECTURE.md "Job spec"), checked the way the pipelines read it.
 *
 *   char *full = NULL;
 *   if (qs_config_check("{\"weights\": {\"bits\": 4}}", &full, &e) < 0) → e.msg names the field
 *   puts(full);   // every setting, the preset's defaults filled in; free(full)
 *
 * Unknown fields are refused (a typo must not silently fall back to a default). */
#ifndef QUANT_CONFIG_H
#define QUANT_CONFIG_H

#include <quant/error.h>

/* config_json may be NULL (all defaults); full_json may be NULL when only the check is wanted. */
int qs_config_check(const char *config_json, char **full_json, qs_err *e);

#endif
