/* Per-channel minima of layer outputs over calibration data (preact.h). One FP32 pass with an
 * observer; the observed outputs are kept from Relu fusion so the observer sees pre-activations. */
#include "quant/preact.h"

#include <float.h>
#include <stdlib.h>

#include "runner.h"

typedef struct minima {
    const qs_graph *g;
    int *slot;        /* node id → index into mins, or -1 */
    float **mins;
    int64_t *nch;
} minima;

static void observe(void *ud, int node, qs_tensor *const *out, int nout)
{
    minima *m = ud;
    int k = m->slot[node];
    if (k < 0 || nout < 1 || !out[0] || out[0]->ndim < 2 || out[0]->shape[1] != m->nch[k])
        return;
    const qs_tensor *t = out[0];
    int64_t c = t->shape[1], inner = qs_numel(t) / (t->shape[0] * c);
    const float *x = qs_f32(t);
    float *mn = m->mins[k];
    for (int64_t b = 0; b < t->shape[0]; b++)
        for (int64_t ch = 0; ch < c; ch++) {
            const float *p = x + (b * c + ch) * inner;
            float v = mn[ch];
            for (int64_t i = 0; i < inner; i++)
                v = p[i] < v ? p[i] : v;
            mn[ch] = v;
        }
}

int qs_preact_minima(qs_graph *g, const qs_pl_data *d, int64_t samples, int64_t batch, qs_threadpool *pool,
                     atomic_int *abort, const int *nodes, int n, float ***mins, qs_err *e)
{
    minima m = { .g = g };
    m.slot = malloc((g->nnodes + 1) * sizeof *m.slot);
    m.mins = calloc(n + 1, sizeof *m.mins);
    m.nch = calloc(n + 1, sizeof *m.nch);
    qs_runner *r = NULL;
    int rc = 0;
    if (!m.slot || !m.mins || !m.nch) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < g->nnodes; i++)
        m.slot[i] = -1;
    if (!(r = qs_runner_new(g, batch, e))) {
        rc = e->code ? e->code : QS_ENOMEM;
        goto out;
    }
    for (int k = 0; k < n; k++)
        if (nodes[k] >= 0 && g->nodes[nodes[k]].out[0] >= 0 && qs_runner_keep_value(r, g->nodes[nodes[k]].out[0]) < 0) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            goto out;
        }
    if ((rc = qs_runner_plan(r, e)) < 0)
        goto out;
    for (int k = 0; k < n; k++) {
        const qs_tensor *t = nodes[k] >= 0 ? qs_exec_value(qs_runner_exec(r), g->nodes[nodes[k]].out[0]) : NULL;
        if (!t || t->ndim < 2 || t->shape[1] < 1)
            continue;   /* left NULL: the caller keeps its data-free bound */
        m.nch[k] = t->shape[1];
        if (!(m.mins[k] = malloc(m.nch[k] * sizeof(float)))) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            goto out;
        }
        for (int64_t i = 0; i < m.nch[k]; i++)
            m.mins[k][i] = FLT_MAX;
        m.slot[nodes[k]] = k;
    }
    qs_runner_set_pool(r, pool);
    qs_runner_set_observer_fused(r, observe, &m);
    rc = qs_runner_stream(r, d->d, d->arrays, 0, samples, NULL, NULL, NULL, NULL, abort, e);
out:
    qs_runner_free(r);
    if (rc < 0) {
        for (int k = 0; k < n; k++)
            free(m.mins[k]);
        free(m.mins);
    } else {
        *mins = m.mins;
    }
    free(m.slot);
    free(m.nch);
    return rc;
}
