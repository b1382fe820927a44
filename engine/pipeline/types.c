/* The table of job types: name → driver, and whether an interrupted job resumes. Adding a job type
 * is one driver file in engine/pipeline/ and one line here; the CLI and the daemon reach every
 * type through qs_pipeline_run or this table, never by comparing names. */
#include "pipeline/drivers.h"

#include <string.h>

static const qs_pipeline_type TYPES[] = {
    { .name = "eval", .run = qs_pipeline_eval },
    { .name = "ptq", .run = qs_pipeline_ptq },
    { .name = "analyze", .run = qs_job_analyze },
    { .name = "qat", .run = qs_pipeline_qat, .resumable = 1 },   /* from its checkpoint */
    { .name = NULL },
};

const qs_pipeline_type *qs_pipeline_types(void) { return TYPES; }

const qs_pipeline_type *qs_pipeline_find(const qs_pipeline_type *table, const char *name)
{
    for (const qs_pipeline_type *t = table ? table : TYPES; name && t->name; t++)
        if (!strcmp(t->name, name))
            return t;
    return NULL;
}

int qs_pipeline_run(const char *type, const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    *result = NULL;
    if (!type)
        return qs_error(e, QS_EINVAL, "job type missing");
    QS_NEED_MODEL(io, e);
    if (!io->pool) {   /* a pool for this run only */
        qs_pipeline_io own = *io;
        if (!(own.pool = qs_threadpool_new(0, 0, e)))
            return e ? e->code : QS_ENOMEM;
        int rc = qs_pipeline_run(type, &own, result, e);
        qs_threadpool_free(own.pool);
        return rc;
    }
    const qs_pipeline_type *t = qs_pipeline_find(TYPES, type);
    if (!t)
        return qs_error(e, QS_EINVAL, "unknown job type '%s' (expected eval, ptq, analyze or qat)", type);
    return t->run(io, result, e);
}
