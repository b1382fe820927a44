/* The job spec's table (spec_rows.c) as the code that walks it (spec.c) sees it: one row per
 * field, named by its JSON path. Internal to the engine's spec; see spec.h. */
#ifndef QS_SPEC_IMPL_H
#define QS_SPEC_IMPL_H

#include <stddef.h>

#include "spec.h"

typedef enum {
    K_OBJECT,    /* a JSON object whose fields are the rows below it */
    K_BOOL,      /* int */
    K_INT,       /* int, from min to max */
    K_NUM,       /* double, from min to max */
    K_ENUM,      /* int: values[i] (or i) for choices[i] */
    K_STR,       /* char[size], one of choices */
    K_TEXT,      /* char * (malloc'd), any string */
    K_MODEL,     /* char[QS_SPEC_ID_MAX]: a model id */
    K_DATASET,   /* char[QS_SPEC_ID_MAX]: a data set id */
    K_NAMES,     /* char ** at offset, its count (int) at offset2 */
    K_JSON,      /* char * (malloc'd): any JSON object, kept as text */
    K_SHAPES,    /* qs_input_shape * at offset, its count (int) at offset2: {"name": [dims]} */
} kind;

typedef struct row {
    const char *path;
    kind kind;
    size_t offset, offset2, size;
    double min, max;
    const char *const *choices;   /* NULL-terminated */
    const int *values;
    const char *dflt;             /* the standard preset's default, as text ("8", "true", "mse") */
    const char *fast, *best;      /* the fast and best presets', when they differ ("basic" is fast) */
    unsigned jobs;                /* job types that take the field */
    unsigned required;            /* job types whose spec must have it */
    int nullable;                 /* null means "not given" (for K_NUM: off, stored as -1) */
    const char *follows;          /* when absent but this sibling is given, takes its value */
    const char *doc;
} row;

extern const row qs_spec_rows[];
extern const int qs_spec_nrows;
/* the job types' names and bits (qs_job_type), and the presets' names (qs_spec_preset_table's),
 * each NULL-terminated */
extern const char *const qs_spec_types[];
extern const int qs_spec_type_bits[];
extern const char *const qs_spec_presets[];
/* the presets' columns: which of a row's defaults a preset takes */
typedef enum { COL_STANDARD, COL_FAST, COL_BEST } spec_column;
typedef struct spec_preset {
    const char *name;
    spec_column column;
    int offered;                  /* listed to users (basic is accepted, as fast, but not offered) */
    const char *about;            /* what it does and what it costs, measured */
} spec_preset;
extern const spec_preset qs_spec_preset_table[];   /* ended by a NULL name */

#endif
