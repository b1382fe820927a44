/* The eval job: top-1 (and top-5) accuracy of a model, FP32 or QDQ, on labelled data. */
#include "pipeline/drivers.h"

#include <stdlib.h>

#include "exec.h"
#include "onnx.h"
#include "shapes.h"

/* eval: accuracy of a model (FP32 or QDQ) on labelled data. */
int qs_pipeline_eval(const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    *result = NULL;
    QS_NEED_MODEL(io, e);
    qs_graph *g = NULL;
    qs_pl_data d = {0};
    int64_t *labels = NULL;
    int rc;
    if (!io->val || !io->val_labels)
        return qs_error(e, QS_EINVAL, "eval needs validation data and labels");
    if ((rc = qs_onnx_load(io->model, &g, e)) < 0 || (rc = qs_exec_check(g, e)) < 0)
        goto out;
    json_t *shapes = io->config ? json_object_get(io->config, "input_shapes") : NULL;
    const char *key;
    json_t *dims;
    json_object_foreach(shapes, key, dims) {   /* eval's config: checked by the spec's table */
        int64_t d[8];
        int nd = 0;
        for (size_t k = 0; k < json_array_size(dims) && nd < 8; k++)
            d[nd++] = json_integer_value(json_array_get(dims, k));
        if ((rc = qs_graph_bind_input(g, key, nd, d, e)) < 0) {
            qs_error_prefix(e, "config.input_shapes.%s: ", key);
            goto out;
        }
    }
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
    *result = json_pack("{s:f, s:o, s:I, s:f, s:f, s:o}", "accuracy", acc.top1,
                        "top5", acc.top5 >= 0 ? json_real(acc.top5) : json_null(), "samples", (json_int_t)acc.samples,
                        "seconds", acc.seconds, "samples_per_s", acc.seconds > 0 ? acc.samples / acc.seconds : 0.0,
                        "input_shapes", qs_graph_input_shapes_json(g));
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
