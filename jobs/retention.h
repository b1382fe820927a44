/* Retention: a thread that removes the oldest finished jobs, then uploads no job uses, by age
 * (job_retention_days) and by the state dir's size (max_state_bytes); see qd_store_prune.
 *
 *   qd_retention *rt = qd_retention_start(st, 30 * 86400.0, 0, 3600);   // prunes once before returning
 *   …
 *   qd_retention_stop(rt);   // NULL-safe */
#ifndef QD_RETENTION_H
#define QD_RETENTION_H

#include <stdint.h>

#include "jobs/store.h"

typedef struct qd_retention qd_retention;

/* NULL when both limits are off (0), or the thread could not start (logged; the start's prune
 * still ran). */
qd_retention *qd_retention_start(qd_store *st, double max_age_s, int64_t max_bytes, int interval_s);
void qd_retention_stop(qd_retention *rt);

#endif
