/* The runner: batches over N samples on top of the executor.
 *
 * One plan for the full batch does all the work; the last partial batch gets its own smaller plan
 * (kept for the next run, since the remainder is usually the same). When the model fixes its batch
 * dim the executor cannot plan a smaller batch, so the partial batch is zero-padded to the fixed
 * size and the padding rows are dropped from the outputs: inference-mode graphs treat rows
 * independently, so the kept rows are exactly what a full batch gives.
 *
 * Memory: the activations of a plan grow with its batch (a 320×320 detector needs ~100 MB per
 * sample), so the batch asked for is lowered until the plan's arena fits the runner's budget
 * (QS_RUNNER_ARENA_BUDGET unless qs_runner_set_arena_budget says otherwise), measured on a plan
 * for one sample. Outputs do not depend on the batch, so only memory and speed change.
 *
 * Run and stream share one loop over "sources": run's sources are the caller's tensors, stream's are
 * the data set's mapped arrays, so a stream reads each batch straight from the mapping. */
#include "runner.h"

#include "exec_impl.h"

#include <string.h>

struct qs_runner {
    qs_graph *g;
    int64_t want;      /* the batch asked for */
    size_t budget;     /* arena bytes a plan may take (0: no limit) */
    qs_exec *x;        /* main plan */
    int64_t batch;     /* samples per pass of x */
    int fixed;         /* the model fixes its batch: pad partial batches instead of re-planning */
    qs_exec *tail;     /* plan for a partial batch of tail_n samples */
    int64_t tail_n;
    qs_threadpool *pool;
    qs_node_fn observer;
    void *observer_ud;
    int fuse;          /* Relu/Clip fusion on (no observer, or one that does not need it off) */
    char *keep;        /* per value: kept from fusion on every plan (qs_runner_keep_value), or NULL */
};

static int check_outputs(qs_runner *r, qs_exec *x, qs_err *e)
{
    int64_t b = qs_exec_batch(x);
    for (int k = 0; k < r->g->noutputs; k++) {
        const qs_tensor *t = qs_exec_output(x, k);
        if (!t || t->ndim < 1 || t->shape[0] != b) {
            char s[128];
            return qs_error(e, QS_ESHAPE, "output '%s' has shape %s at batch %lld; running in batches needs a "
                            "leading batch dim on every output", r->g->values[r->g->outputs[k]].name,
                            t ? qs_shape_str(t->ndim, t->shape, s, sizeof s) : "(none)", (long long)b);
        }
    }
    return 0;
}

int qs_runner_plan(qs_runner *r, qs_err *e)
{
    qs_exec_free(r->tail);
    r->tail = NULL;
    r->tail_n = 0;
    int64_t want = r->want;
    if (want > 1 && r->budget && qs_exec_plan(r->x, 1, NULL) == 0 && qs_exec_batch(r->x) == 1) {
        size_t one = qs_exec_arena_bytes(r->x);   /* an upper bound per sample: it holds constants too */
        if (one > 0 && (double)one * (double)want > (double)r->budget)
            want = one < r->budget ? (int64_t)(r->budget / one) : 1;
    }
    int rc = qs_exec_plan(r->x, want, e);
    if (rc < 0 && want > 1) {
        /* Exports often bake the batch into a Reshape; such a model still runs one sample at a
         * time. When batch 1 fails too, that error is the one that describes the model. */
        rc = qs_exec_plan(r->x, 1, e);
    }
    if (rc < 0)
        return rc;
    r->batch = qs_exec_batch(r->x);
    r->fixed = r->batch != want;
    if (r->batch < 1)
        return qs_error(e, QS_ESHAPE, "the model's fixed batch dim is %lld", (long long)r->batch);
    return check_outputs(r, r->x, e);
}

qs_runner *qs_runner_new(qs_graph *g, int64_t batch, qs_err *e)
{
    if (batch < 1) {
        qs_error(e, QS_EINVAL, "batch size must be at least 1, not %lld", (long long)batch);
        return NULL;
    }
    if (g->ninputs < 1) {
        qs_error(e, QS_EINVAL, "the model has no runtime inputs");
        return NULL;
    }
    qs_runner *r = calloc(1, sizeof *r);
    if (!r) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    r->g = g;
    r->want = batch;
    r->budget = QS_RUNNER_ARENA_BUDGET;
    r->fuse = 1;   /* off again once an observer needs every node's output */
    if ((r->x = qs_exec_new(g, QS_EXEC_INFER, e)))
        qs_exec_set_fusion(r->x, 1);
    if (!r->x || qs_runner_plan(r, e) < 0) {
        qs_runner_free(r);
        return NULL;
    }
    return r;
}

void qs_runner_free(qs_runner *r)
{
    if (!r)
        return;
    qs_exec_free(r->x);
    qs_exec_free(r->tail);
    free(r->keep);
    free(r);
}

int64_t qs_runner_batch(const qs_runner *r) { return r->batch; }

int qs_runner_set_arena_budget(qs_runner *r, size_t bytes, qs_err *e)
{
    r->budget = bytes;
    return qs_runner_plan(r, e);
}
qs_exec *qs_runner_exec(qs_runner *r) { return r->x; }

static void set_observer(qs_runner *r, qs_node_fn fn, void *ud, int fuse)
{
    int was = r->fuse;
    r->observer = fn;
    r->observer_ud = ud;
    r->fuse = fuse;
    qs_exec_set_observer(r->x, fn, ud);
    qs_exec_set_fusion(r->x, fuse);
    if (r->tail) {
        qs_exec_set_observer(r->tail, fn, ud);
        qs_exec_set_fusion(r->tail, fuse);
    }
    /* fused plans hide pre-activation values from observers, and plans without one may keep values
     * channel-blocked (exec_layout.c): re-plan when that changes */
    if (was != fuse || (fn && (qs_exec_blocked_values(r->x) || (r->tail && qs_exec_blocked_values(r->tail)))))
        qs_runner_plan(r, NULL);
}

void qs_runner_set_observer(qs_runner *r, qs_node_fn fn, void *ud) { set_observer(r, fn, ud, fn == NULL); }
void qs_runner_set_observer_fused(qs_runner *r, qs_node_fn fn, void *ud) { set_observer(r, fn, ud, 1); }

static void apply_keep(const qs_runner *r, qs_exec *x)
{
    for (int v = 0; r->keep && v < r->g->nvalues; v++)
        if (r->keep[v])
            qs_exec_keep_value(x, v);
}

int qs_runner_keep_value(qs_runner *r, int value)
{
    if (value < 0 || value >= r->g->nvalues)
        return 0;
    if (!r->keep && !(r->keep = calloc(r->g->nvalues + 1, 1)))
        return -1;
    r->keep[value] = 1;   /* for a tail plan made later */
    qs_exec_keep_value(r->x, value);
    if (r->tail)
        qs_exec_keep_value(r->tail, value);
    return 0;
}

void qs_runner_set_pool(qs_runner *r, qs_threadpool *tp)
{
    if (tp == r->pool)
        return;
    int replan = qs_threadpool_size(tp) != qs_threadpool_size(r->pool);
    r->pool = tp;
    qs_exec_set_pool(r->x, tp);
    if (r->tail)
        qs_exec_set_pool(r->tail, tp);
    if (replan)
        qs_runner_plan(r, NULL);   /* scratch is sized per thread */
}

/* Every source has the same number of rows, and rows of the shape the plan expects. */
static int check_sources(qs_runner *r, const qs_tensor *const *src, int64_t *rows, qs_err *e)
{
    for (int i = 0; i < r->g->ninputs; i++) {
        const char *name = r->g->values[r->g->inputs[i]].name;
        const qs_tensor *p = qs_exec_input(r->x, i), *s = src[i];
        if (!s)
            return qs_error(e, QS_EINVAL, "no data for input '%s'", name);
        if (!p)
            return qs_error(e, QS_EINVAL, "input '%s' is not fed at run time", name);
        int same = s->ndim == p->ndim;
        for (int d = 1; same && d < p->ndim; d++)
            same = s->shape[d] == p->shape[d];
        if (!same) {
            char a[128], b[128];
            return qs_error(e, QS_ESHAPE, "input '%s' takes samples of shape %s (batch shape %s), the data has "
                            "shape %s", name, qs_shape_str(p->ndim - 1, p->shape + 1, a, sizeof a),
                            qs_shape_str(p->ndim, p->shape, b, sizeof b),
                            qs_shape_str(s->ndim, s->shape, (char[128]){0}, 128));
        }
        if (!qs_dtype_size(s->dtype) || s->dtype == QS_U4 || s->dtype == QS_I4)
            return qs_error(e, QS_EUNSUPPORTED, "input '%s': %s data cannot be converted", name,
                            qs_dtype_name(s->dtype));
        if (i == 0)
            *rows = s->shape[0];
        else if (s->shape[0] != *rows)
            return qs_error(e, QS_ESHAPE, "input '%s' has %lld samples, input '%s' has %lld", name,
                            (long long)s->shape[0], r->g->values[r->g->inputs[0]].name, (long long)*rows);
    }
    return 0;
}

/* The executor for a pass of n samples (n <= batch). */
static int exec_for(qs_runner *r, int64_t n, qs_exec **out, qs_err *e)
{
    if (n == r->batch || r->fixed) {
        *out = r->x;
        return 0;
    }
    if (!r->tail || r->tail_n != n) {
        if (!r->tail && !(r->tail = qs_exec_new(r->g, QS_EXEC_INFER, e)))
            return e && e->code < 0 ? e->code : QS_ENOMEM;
        qs_exec_set_pool(r->tail, r->pool);
        qs_exec_set_observer(r->tail, r->observer, r->observer_ud);
        qs_exec_set_fusion(r->tail, r->fuse);
        apply_keep(r, r->tail);
        r->tail_n = 0;
        int rc = qs_exec_plan(r->tail, n, e);
        if (rc < 0)
            return qs_error_prefix(e, "planning the last batch of %lld: ", (long long)n);
        if (qs_exec_batch(r->tail) != n) {   /* cannot shrink after all: pad on the main plan */
            r->fixed = 1;
            *out = r->x;
            return 0;
        }
        if ((rc = check_outputs(r, r->tail, e)) < 0)
            return rc;
        r->tail_n = n;
    }
    *out = r->tail;
    return 0;
}

/* d, arrays: when src are a data set's arrays, each batch's rows are released from it once copied
 * (qs_dataset_release), so streaming a mapped file does not leave it all resident. */
static int run_batches(qs_runner *r, const qs_tensor *const *src, const qs_dataset *d, const int *arrays,
                       int64_t start, int64_t count, qs_runner_sink sink, void *sink_ud, qs_progress_fn progress,
                       void *progress_ud, atomic_int *abort, qs_err *e)
{
    qs_graph *g = r->g;
    const qs_tensor **outs = calloc(g->noutputs + 1, sizeof *outs);
    qs_tensor *views = calloc(g->noutputs + 1, sizeof *views);
    int rc = 0;
    if (!outs || !views) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int64_t done = 0; done < count;) {
        if (abort && atomic_load(abort)) {
            rc = qs_error(e, QS_EABORTED, "aborted after %lld of %lld samples", (long long)done, (long long)count);
            goto out;
        }
        int64_t n = count - done < r->batch ? count - done : r->batch;
        qs_exec *x = NULL;
        if ((rc = exec_for(r, n, &x, e)) < 0)
            goto out;
        for (int i = 0; i < g->ninputs; i++) {
            qs_tensor *p = qs_exec_input(x, i), rows = *p;
            rows.shape[0] = n;
            if ((rc = qs_copy_rows(src[i], start + done, n, &rows, e)) < 0) {
                qs_error_prefix(e, "input '%s': ", g->values[g->inputs[i]].name);
                goto out;
            }
            if (d)
                qs_dataset_release(d, arrays[i], start + done, n);
            if (p->shape[0] > n)   /* padding rows of a fixed-batch model */
                memset((char *)p->data + qs_nbytes(&rows), 0, qs_nbytes(p) - qs_nbytes(&rows));
        }
        qs_exec_set_abort(x, abort);
        if ((rc = qs_exec_forward(x, e)) < 0) {
            if (rc == QS_EABORTED)
                qs_error(e, QS_EABORTED, "aborted after %lld of %lld samples", (long long)done, (long long)count);
            goto out;
        }
        for (int k = 0; k < g->noutputs; k++) {
            views[k] = *qs_exec_output(x, k);
            views[k].shape[0] = n;
            views[k].owns_data = 0;
            outs[k] = &views[k];
        }
        if (sink && (rc = sink(sink_ud, start + done, n, outs, x, e)) < 0)
            goto out;
        done += n;
        if (progress)
            progress(progress_ud, done, count);
    }
out:
    free(outs);
    free(views);
    return rc;
}

struct collect {
    int n;
    qs_tensor **dst;
};

static int collect(void *ud, int64_t start, int64_t n, const qs_tensor *const *outputs, qs_exec *x, qs_err *e)
{
    struct collect *c = ud;
    for (int k = 0; k < c->n; k++) {
        size_t row = qs_nbytes(outputs[k]) / (n ? n : 1);
        memcpy((char *)c->dst[k]->data + start * row, outputs[k]->data, n * row);
    }
    return 0;
}

int qs_runner_run(qs_runner *r, const qs_tensor *const *inputs, qs_tensor **outputs, qs_progress_fn progress,
                  void *progress_ud, atomic_int *abort, qs_err *e)
{
    qs_graph *g = r->g;
    for (int k = 0; k < g->noutputs; k++)
        outputs[k] = NULL;
    int64_t rows = 0;
    int rc = check_sources(r, inputs, &rows, e);
    if (rc < 0)
        return rc;
    for (int k = 0; k < g->noutputs; k++) {
        qs_tensor head = *qs_exec_output(r->x, k);
        head.shape[0] = rows;
        if (!(outputs[k] = qs_tensor_new(head.dtype, head.ndim, head.shape))) {
            rc = qs_error(e, QS_ENOMEM, "out of memory for output '%s' (%zu bytes)",
                          g->values[g->outputs[k]].name, qs_nbytes(&head));
            goto fail;
        }
    }
    struct collect c = {g->noutputs, outputs};
    if ((rc = run_batches(r, inputs, NULL, NULL, 0, rows, collect, &c, progress, progress_ud, abort, e)) < 0)
        goto fail;
    return 0;
fail:
    for (int k = 0; k < g->noutputs; k++) {
        qs_tensor_free(outputs[k]);
        outputs[k] = NULL;
    }
    return rc;
}

int qs_runner_stream(qs_runner *r, const qs_dataset *d, const int *arrays, int64_t start, int64_t count,
                     qs_runner_sink sink, void *sink_ud, qs_progress_fn progress, void *progress_ud,
                     atomic_int *abort, qs_err *e)
{
    qs_graph *g = r->g;
    const qs_tensor **src = calloc(g->ninputs + 1, sizeof *src);
    if (!src)
        return qs_error(e, QS_ENOMEM, "out of memory");
    int rc = 0;
    for (int i = 0; i < g->ninputs; i++)
        if (!(src[i] = qs_dataset_array(d, arrays[i]))) {
            rc = qs_error(e, QS_EINVAL, "no data set array %d for input '%s'", arrays[i],
                          g->values[g->inputs[i]].name);
            goto out;
        }
    int64_t rows = 0;
    if ((rc = check_sources(r, src, &rows, e)) < 0)
        goto out;
    if (start < 0 || start > rows) {
        rc = qs_error(e, QS_EINVAL, "start sample %lld is outside the data set's %lld samples", (long long)start,
                      (long long)rows);
        goto out;
    }
    if (count < 0)
        count = rows - start;
    if (count > rows - start) {
        rc = qs_error(e, QS_EINVAL, "samples %lld..%lld are outside the data set's %lld samples", (long long)start,
                      (long long)(start + count), (long long)rows);
        goto out;
    }
    rc = run_batches(r, src, d, arrays, start, count, sink, sink_ud, progress, progress_ud, abort, e);
out:
    free(src);
    return rc;
}
