#include "pipeline_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "onnx.h"

double qs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void qs_pl_progress(const qs_pipeline_io *io, const char *stage, double done, double total, double t0)
{
    if (!io->event)
        return;
    double el = qs_now() - t0;
    qs_event ev = { .type = QS_EV_PROGRESS, .stage = stage, .done = done, .total = total,
                    .eta_s = done > 0 && total >= done ? el / done * (total - done) : -1 };
    io->event(io->ud, &ev);
}

void qs_pl_log(const qs_pipeline_io *io, const char *level, const char *fmt, ...)
{
    if (!io->event)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    qs_event ev = { .type = QS_EV_LOG, .level = level, .message = msg };
    io->event(io->ud, &ev);
}

void qs_pl_metric(const qs_pipeline_io *io, const char *name, double value)
{
    if (!io->event)
        return;
    qs_event ev = { .type = QS_EV_METRIC, .name = name, .value = value };
    io->event(io->ud, &ev);
}

void qs_pl_artifact(const qs_pipeline_io *io, const char *name)
{
    if (!io->event)
        return;
    qs_event ev = { .type = QS_EV_ARTIFACT, .name = name };
    io->event(io->ud, &ev);
}

int qs_pl_aborted(const qs_pipeline_io *io) { return io->abort && atomic_load(io->abort); }

int qs_pl_open_inputs(const char *path, const char *what, qs_graph *g, qs_pl_data *out, qs_err *e)
{
    memset(out, 0, sizeof *out);
    if (!path)
        return qs_error(e, QS_EINVAL, "no %s data given", what);
    if (g->ninputs > 16)
        return qs_error(e, QS_EUNSUPPORTED, "models with more than 16 inputs are not supported");
    int rc = qs_dataset_open(path, &out->d, e);
    if (rc < 0)
        return qs_error_prefix(e, "%s data: ", what);
    for (int i = 0; i < g->ninputs; i++) {
        const qs_value *v = &g->values[g->inputs[i]];
        int a = qs_dataset_find(out->d, v->name);
        if (a < 0 && qs_dataset_count(out->d) == 1 && g->ninputs == 1)
            a = 0;
        if (a < 0) {
            rc = qs_error(e, QS_EINVAL, "%s data %s has no array named '%s' (the model's input %d); a model with "
                          "several inputs takes an .npz keyed by input name", what, path, v->name, i);
            goto fail;
        }
        out->arrays[i] = a;
        const qs_tensor *t = qs_dataset_array(out->d, a);
        /* the samples' shape must fit the declared one, and gives the symbolic dims their sizes */
        if ((rc = qs_graph_bind_data(g, i, t, what, e)) < 0)
            goto fail;
        if (i == 0)
            out->rows = t->shape[0];
        else if (t->shape[0] != out->rows) {
            rc = qs_error(e, QS_ESHAPE, "%s data: input '%s' has %lld samples but input '%s' has %lld", what,
                          v->name, (long long)t->shape[0], g->values[g->inputs[0]].name, (long long)out->rows);
            goto fail;
        }
    }
    if (out->rows == 0) {
        rc = qs_error(e, QS_EINVAL, "%s data %s is empty (0 samples)", what, path);
        goto fail;
    }
    return 0;
fail:
    qs_pl_close(out);
    return rc;
}

void qs_pl_close(qs_pl_data *d)
{
    qs_dataset_close(d->d);
    d->d = NULL;
}

int qs_pl_check_finite(const qs_pl_data *d, const qs_graph *g, int64_t n, const char *what, qs_err *e)
{
    for (int i = 0; i < g->ninputs; i++) {
        const qs_tensor *t = qs_dataset_array(d->d, d->arrays[i]);
        if (t->dtype != QS_F32 && t->dtype != QS_F64)
            continue;
        int64_t per = t->shape[0] ? qs_numel(t) / t->shape[0] : 0, rows = n < t->shape[0] ? n : t->shape[0];
        for (int64_t r0 = 0; r0 < rows; r0 += 64) {   /* 64 rows at a time, released once read */
            int64_t r1 = rows - r0 < 64 ? rows : r0 + 64;
            for (int64_t k = r0 * per; k < r1 * per; k++) {
                double v = t->dtype == QS_F32 ? qs_f32(t)[k] : ((const double *)t->data)[k];
                if (!isfinite(v))
                    return qs_error(e, QS_EINVAL, "%s data for input '%s' holds %s at sample %lld", what,
                                    g->values[g->inputs[i]].name, isnan(v) ? "NaN" : "Inf", (long long)(k / per));
            }
            qs_dataset_release(d->d, d->arrays[i], r0, r1 - r0);
        }
    }
    return 0;
}

int qs_pl_load_labels(const char *path, int64_t expect_rows, int64_t **labels, qs_err *e)
{
    *labels = NULL;
    qs_dataset *d;
    int rc = qs_dataset_open(path, &d, e);
    if (rc < 0)
        return qs_error_prefix(e, "labels: ");
    const qs_tensor *t = qs_dataset_count(d) >= 1 ? qs_dataset_array(d, 0) : NULL;
    if (!t || !(t->ndim == 1 || (t->ndim == 2 && t->shape[1] == 1)) || !qs_dtype_is_int(t->dtype)) {
        char s[128];
        rc = qs_error(e, QS_EINVAL, "labels %s must be N integer class indices (shape [N]); got %s %s", path,
                      t ? qs_dtype_name(t->dtype) : "nothing", t ? qs_shape_str(t->ndim, t->shape, s, sizeof s) : "");
        goto out;
    }
    if (t->shape[0] != expect_rows) {
        rc = qs_error(e, QS_ESHAPE, "labels %s has %lld entries but the data has %lld samples", path,
                      (long long)t->shape[0], (long long)expect_rows);
        goto out;
    }
    *labels = malloc((expect_rows + 1) * sizeof **labels);
    if (!*labels) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < expect_rows; i++)
        (*labels)[i] = qs_get_i64(t, i);
out:
    qs_dataset_close(d);
    return rc;
}

struct acc_state {
    const int64_t *labels;
    int64_t top1, top5, n, classes;
    const qs_pipeline_io *io;
    const char *stage;
    int64_t total;
    double t0;
};

static int acc_sink(void *ud, int64_t start, int64_t n, const qs_tensor *const *outputs, qs_exec *x, qs_err *e)
{
    (void)x;
    struct acc_state *s = ud;
    const qs_tensor *y = outputs[0];
    if (y->dtype != QS_F32 || y->ndim < 2)
        return qs_error(e, QS_EINVAL, "accuracy needs float logits of shape [N, classes] as the first output");
    int64_t c = qs_numel(y) / y->shape[0];
    s->classes = c;
    for (int64_t r = 0; r < n; r++) {
        const float *row = qs_f32(y) + r * c;
        int64_t lab = s->labels[start + r];
        if (lab < 0 || lab >= c)
            return qs_error(e, QS_EINVAL, "label %lld of sample %lld is outside the model's %lld classes",
                            (long long)lab, (long long)(start + r), (long long)c);
        /* rank of the true class: how many logits beat it (ties resolved towards the lower index, as argmax) */
        int64_t better = 0;
        for (int64_t k = 0; k < c; k++)
            better += row[k] > row[lab] || (row[k] == row[lab] && k < lab);
        s->top1 += better == 0;
        s->top5 += better < 5;
    }
    s->n += n;
    if (s->io)
        qs_pl_progress(s->io, s->stage, (double)s->n, (double)s->total, s->t0);
    return 0;
}

int qs_pl_accuracy(qs_graph *g, const qs_pl_data *d, const int64_t *labels, int64_t batch,
                   const qs_pipeline_io *io, const char *stage, qs_pl_acc *out, qs_err *e)
{
    double t0 = qs_now();
    qs_runner *r = qs_runner_new(g, batch, e);
    if (!r)
        return e ? e->code : QS_EINVAL;
    if (io)
        qs_runner_set_pool(r, io->pool);
    struct acc_state s = { .labels = labels, .io = io, .stage = stage, .total = d->rows, .t0 = t0 };
    int rc = qs_runner_stream(r, d->d, d->arrays, 0, -1, acc_sink, &s, NULL, NULL, io ? io->abort : NULL, e);
    qs_runner_free(r);
    if (rc < 0)
        return rc;
    out->samples = s.n;
    out->top1 = s.n ? (double)s.top1 / s.n : 0;
    out->top5 = s.classes >= 5 && s.n ? (double)s.top5 / s.n : -1;
    out->seconds = qs_now() - t0;
    return 0;
}

static int commit_file(const qs_pipeline_io *io, const char *name, const char *tmp, qs_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", io->outdir, name);
    if (rename(tmp, path) < 0) {
        unlink(tmp);
        return qs_error(e, QS_EIO, "cannot write %s", path);
    }
    qs_pl_artifact(io, name);
    return 0;
}

int qs_pl_write_json(const qs_pipeline_io *io, const char *name, json_t *j, qs_err *e)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", io->outdir, name);
    if (json_dump_file(j, tmp, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9)) < 0)
        return qs_error(e, QS_EIO, "cannot write %s", tmp);
    return commit_file(io, name, tmp, e);
}

int qs_pl_write_onnx(const qs_pipeline_io *io, const char *name, const qs_graph *g, qs_err *e)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", io->outdir, name);
    int rc = qs_onnx_save(g, tmp, e);
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    return commit_file(io, name, tmp, e);
}
