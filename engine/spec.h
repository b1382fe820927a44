/* The job spec (../shared/DESIGN.md, "Job spec") as a C struct, with one owner: the table of
 * spec.c. Every field of the spec is one row there — its JSON path, type, place in the struct,
 * bounds or allowed values, default per preset, doc string and the job types that use it — and
 * everything about the spec walks that table: parsing and checking (the daemon at submit, the
 * CLI's --config, the pipelines), writing the normalised spec back, the presets' defaults that
 * the dashboard shows and the OpenAPI document's schema of "config".
 *
 *   qs_job_spec s;
 *   qs_err e = {0};
 *   if (qs_job_spec_parse_text(body, len, 0, &s, &e) < 0)   // e.msg: "config.weights.bits: …"
 *       …                                                   // (qs_spec_err_field: the path)
 *   use s.type, s.model, s.calibration, s.config.weights.bits, …
 *   qs_job_spec_free(&s);
 *
 * The config alone (what `quant --config` and a pipeline read) has its own entry points; the
 * JSON (jansson) side is in spec_json.h, for the engine's and the daemon's own use. Unknown
 * fields are refused (a typo must not silently fall back to a default). Errors start with the
 * path of the field they concern, then ": ", then what was expected; an unknown field's is
 * "unknown field 'PATH' (expected one of: …)". */
#ifndef QS_SPEC_H
#define QS_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "quant/range.h"

/* Job types, as bits (a field's row says which use it). sleep is the daemon's debug job
 * (debug_jobs = true), accepted only with QS_SPEC_DEBUG_JOBS. */
typedef enum {
    QS_JOB_EVAL = 1, QS_JOB_PTQ = 2, QS_JOB_ANALYZE = 4, QS_JOB_QAT = 8, QS_JOB_SLEEP = 16,
} qs_job_type;
/* the job types that take the quantization config (preset, weights, …) */
#define QS_JOB_QUANT (QS_JOB_PTQ | QS_JOB_ANALYZE | QS_JOB_QAT)

typedef enum { QS_BC_NONE, QS_BC_EMPIRICAL, QS_BC_ANALYTICAL } qs_biascorr_mode;
/* config.rounding: the weights' rounding. adaround.enabled says the same for AdaRound (true ≡
 * "adaround"); the parser keeps the two coherent and refuses a spec where they contradict. */
typedef enum { QS_ROUND_NEAREST, QS_ROUND_ADAROUND, QS_ROUND_GPTQ } qs_rounding;

/* config.input_shapes' entries: {"x": [1, 3, 48, 192]} (shapes.h binds them to the model) */
typedef struct qs_input_shape {
    char *name;
    int ndim;
    int64_t dims[8];
} qs_input_shape;

/* The "config" object: the preset's defaults overridden field by field. */
typedef struct qs_qconfig {
    char preset[32];                 /* "fast", "standard" (the paper's Fig. 8), "best"; "basic" = fast */
    struct { int bits, symmetric, per_channel, pow2, reduce_range; qs_range_method range; } weights;
    struct { int bits, symmetric, pow2; qs_range_method range; double percentile; qs_range_method last_layer;
             char high_precision[8]; double high_precision_db; } act;
    int bn_fold, cle, relu6_to_relu, bias_absorption;
    qs_biascorr_mode bias_correction;
    qs_rounding rounding;
    struct { int enabled; int iterations; double reg; int batch_size; int samples; } adaround;
    struct { int samples; int batch_size; } calibration;
    int nexclude;
    char **exclude;
    char *overrides;                 /* quant/overrides.h's JSON as text; NULL: none */
    int ninput_shapes;
    qs_input_shape *input_shapes;    /* sizes of the inputs' symbolic dims (shapes.h) */
    int requantize;                  /* ptq/qat of a QDQ model: dequantize it first instead of refusing */
    struct { int epochs, batch_size; char optimizer[16]; double lr, weight_decay, momentum; int learn_ranges,
             bn_reestimate, flip; char schedule[16]; double clip_grad; int steps; } qat;
    double target_drop;              /* < 0: off; the closed loop of §3.7 */
    char target[16];                 /* the runtime the export is for: "ort-x86" or "generic" */
    int check_steps;                 /* ptq: keep each optional step only if the held-out score holds */
    double check_holdout;            /* the fraction of the calibration samples held out for it */
    char check_metric[16];           /* "auto", "accuracy", "sqnr" or "kl" */
    struct { int val_samples; } analysis;   /* the debugging flow's validation subset */
    struct { int batch_size; } eval;        /* eval's "config": {"batch_size"} */
    struct { double seconds; int fail; int artifact_bytes; } sleep;   /* the debug job's */
} qs_qconfig;

#define QS_SPEC_ID_MAX 32            /* model and data set ids are shorter than this */

typedef struct qs_job_spec {
    qs_job_type type;
    char *name;                      /* NULL when not given */
    char model[QS_SPEC_ID_MAX];      /* ids as the daemon knows them ("" when not given) */
    char calibration[QS_SPEC_ID_MAX];
    struct { char data[QS_SPEC_ID_MAX], labels[QS_SPEC_ID_MAX]; } train, validation;
    qs_qconfig config;
} qs_job_spec;

enum { QS_SPEC_DEBUG_JOBS = 1 };     /* flags: accept the job type "sleep" */

/* Parses and checks a whole job spec (JSON text). On error s is left freed. */
int qs_job_spec_parse_text(const char *text, size_t len, unsigned flags, qs_job_spec *s, qs_err *e);
/* The normalised spec as JSON text (malloc'd): every config field the job type takes, spelt
 * out, so that parsing it again gives the same struct whatever the defaults become. */
char *qs_job_spec_to_text(const qs_job_spec *s);
void qs_job_spec_free(qs_job_spec *s);
const char *qs_job_type_name(qs_job_type t);

/* The config alone, for the job types in QS_JOB_QUANT. text may be NULL (all defaults). preset:
 * NULL or an unknown name gives standard's. */
void qs_qconfig_default(qs_qconfig *c, const char *preset);
/* The presets offered to users, in order of cost: i = 0, 1, … gives "fast", "standard", "best",
 * then NULL ("basic", accepted as fast's former name, is not offered). */
const char *qs_spec_preset_name(int i);
/* What a preset does and what it costs, measured (--help, GET /v1/presets); NULL: no such preset. */
const char *qs_spec_preset_about(const char *name);
int qs_qconfig_parse_text(const char *text, qs_qconfig *c, qs_err *e);
char *qs_qconfig_to_text(const qs_qconfig *c);
void qs_qconfig_free(qs_qconfig *c);
/* The names the config gives against the model: config.exclude's nodes, config.overrides' tensors
 * and op types. QS_EINVAL naming the first one g does not have ("config.overrides.tensors.x: the
 * model has no tensor named 'x'"; qs_spec_err_field gives the path). */
struct qs_graph;
int qs_qconfig_check_names(const qs_qconfig *c, const struct qs_graph *g, qs_err *e);
/* Replaces the exclusion list with a comma-separated one (CLI --exclude). */
int qs_qconfig_set_exclude(qs_qconfig *c, const char *csv);

/* The field an error concerns: the path its message names, into buf ("" when none; cut to n). */
void qs_spec_err_field(const qs_err *e, char *buf, size_t n);

/* What a data set must look like for a model: the model's inputs and the data set's arrays by
 * name and shape (a model dimension < 0 is free; dimension 0 is the sample count). A data set
 * fits when each input has an array (its name, or the only array of a one-input model) of the
 * input's rank with the same non-batch dimensions, every array has the same sample count and
 * there is at least one sample. what: "calibration", "validation", …; id: the data set's name
 * in the messages. Returns 0 or QS_ESHAPE/QS_EINVAL with e.msg naming the data set and the
 * expected shape. */
typedef struct qs_spec_tensor {
    const char *name;
    int ndim;
    int64_t shape[8];
} qs_spec_tensor;
int qs_spec_check_data(const char *what, const char *id, const qs_spec_tensor *inputs, int ninputs,
                       const qs_spec_tensor *arrays, int narrays, qs_err *e);

/* The table, for documentation and tests: each row's path ("config.weights.bits"), the job
 * types that take it, and its kind as a JSON Schema type name ("integer", "object", …). */
int qs_spec_nfields(void);
const char *qs_spec_field_path(int i);
unsigned qs_spec_field_jobs(int i);
const char *qs_spec_field_schema_type(int i);

#endif
