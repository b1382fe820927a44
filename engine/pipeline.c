/* Pipeline dispatch: maps a job type to its pipeline. */
#include "pipeline.h"

#include <string.h>

int qs_pipeline_run(const char *type, const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    (void)io;
    *result = NULL;
    if (!type)
        return qs_error(e, QS_EINVAL, "job type missing");
    return qs_error(e, QS_EUNSUPPORTED, "job type '%s' is not available yet", type);
}
