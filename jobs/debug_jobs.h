/* Test-only job types, in the shape of the engine's table (qs_pipeline_type). quantd hands them to
 * the scheduler only when its debug_jobs option is on (the service's tests use them to exercise
 * every job path — progress, cancellation, requeue and resume, failure, artifacts — in seconds and
 * without depending on the engine); otherwise they do not exist.
 *
 *   qd_sched_opts o = { …, .extra_types = cfg.debug_jobs ? qd_debug_job_types : NULL };
 *
 * "sleep": config {"seconds": 1, "fail": false, "artifact_bytes": 100000}. */
#ifndef QD_DEBUG_JOBS_H
#define QD_DEBUG_JOBS_H

#include "pipeline.h"

extern const qs_pipeline_type qd_debug_job_types[];

#endif
