/* Pipeline dispatch and the eval pipeline. The PTQ, analysis and QAT pipelines live beside the
 * algorithms they drive (engine/quant/ptq.c, …). */
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "onnx.h"
#include "pipeline_util.h"

int qs_pipeline_ptq(const qs_pipeline_io *io, json_t **result, qs_err *e);
int qs_pipeline_analyze(const qs_pipeline_io *io, json_t **result, qs_err *e);
int qs_pipeline_qat(const qs_pipeline_io *io, json_t **result, qs_err *e);

/* eval: accuracy of a model (FP32 or QDQ) on labelled data. */
static int pipeline_eval(const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    qs_graph *g = NULL;
    qs_pl_data d = {0};
    int64_t *labels = NULL;
    int rc;
    if (!io->val || !io->val_labels)
        return qs_error(e, QS_EINVAL, "eval needs validation data and labels");
    if ((rc = qs_onnx_load(io->model, &g, e)) < 0 || (rc = qs_exec_check(g, e)) < 0)
        goto out;
    if ((rc = qs_pl_open_inputs(io->val, "validation", g, &d, e)) < 0 ||
        (rc = qs_pl_load_labels(io->val_labels, d.rows, &labels, e)) < 0)
        goto out;
    int64_t batch = 32;
    json_t *b = io->config ? json_object_get(io->config, "batch_size") : NULL;
    if (b && json_is_integer(b) && json_integer_value(b) > 0)
        batch = json_integer_value(b);
    qs_pl_acc acc;
    if ((rc = qs_pl_accuracy(g, &d, labels, batch, io, "evaluation", &acc, e)) < 0)
        goto out;
    *result = json_pack("{s:f, s:o, s:I, s:f, s:f}", "accuracy", acc.top1,
                        "top5", acc.top5 >= 0 ? json_real(acc.top5) : json_null(), "samples", (json_int_t)acc.samples,
                        "seconds", acc.seconds, "samples_per_s", acc.seconds > 0 ? acc.samples / acc.seconds : 0.0);
    qs_pl_metric(io, "accuracy", acc.top1);
    if (io->outdir && (rc = qs_pl_write_json(io, "report.json", *result, e)) < 0) {
        json_decref(*result);
        *result = NULL;
    }
out:
    free(labels);
    qs_pl_close(&d);
    qs_graph_free(g);
    return rc;
}

int qs_pipeline_run(const char *type, const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    *result = NULL;
    if (!type)
        return qs_error(e, QS_EINVAL, "job type missing");
    if (!io->model)
        return qs_error(e, QS_EINVAL, "no model given");
    if (!io->pool) {   /* a pool for this run only */
        qs_pipeline_io own = *io;
        if (!(own.pool = qs_threadpool_new(0, 0, e)))
            return e ? e->code : QS_ENOMEM;
        int rc = qs_pipeline_run(type, &own, result, e);
        qs_threadpool_free(own.pool);
        return rc;
    }
    if (!strcmp(type, "eval"))
        return pipeline_eval(io, result, e);
    if (!strcmp(type, "ptq"))
        return qs_pipeline_ptq(io, result, e);
    if (!strcmp(type, "analyze"))
        return qs_pipeline_analyze(io, result, e);
    if (!strcmp(type, "qat"))
        return qs_pipeline_qat(io, result, e);
    return qs_error(e, QS_EINVAL, "unknown job type '%s' (expected eval, ptq, analyze or qat)", type);
}
