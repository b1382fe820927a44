/* The analyze job: the debugging flow of paper §3.7, which lives in engine/quant/analyze.c beside
 * the machinery (quantizer groups, isolating measurements) that the ptq job's closed loop
 * (target_drop) uses too. */
#include "pipeline/drivers.h"

#include "quant/analyze.h"

int qs_job_analyze(const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    *result = NULL;
    QS_NEED_MODEL(io, e);
    return qs_pipeline_analyze(io, result, e);
}
