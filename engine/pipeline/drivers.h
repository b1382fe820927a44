/* The job drivers behind the table in engine/pipeline/types.c; internal to the engine. Each one
 * runs one job type from a qs_pipeline_io to its result and artifacts (see pipeline.h), calling
 * down into the algorithms of engine/quant/. */
#ifndef QS_PIPELINE_DRIVERS_H
#define QS_PIPELINE_DRIVERS_H

#include "pipeline.h"
#include "pipeline_util.h"

int qs_pipeline_eval(const qs_pipeline_io *io, json_t **result, qs_err *e);      /* pipeline/eval.c */
int qs_pipeline_ptq(const qs_pipeline_io *io, json_t **result, qs_err *e);       /* pipeline/ptq.c */
int qs_pipeline_qat(const qs_pipeline_io *io, json_t **result, qs_err *e);       /* pipeline/qat.c */
int qs_job_analyze(const qs_pipeline_io *io, json_t **result, qs_err *e);        /* pipeline/analyze.c */

/* The first check of every driver: a job needs its model. */
#define QS_NEED_MODEL(io, e) \
    do { \
        if (!(io)->model) \
            return qs_error((e), QS_EINVAL, "no model given"); \
    } while (0)

#endif
