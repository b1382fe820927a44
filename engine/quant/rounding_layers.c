/* A rounding pass's layers and their captured inputs; described in rounding_layers.h. */
#include "quant/rounding_layers.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "runner.h"

static int weight_quantizer(const qs_quantsim *sim, int v)
{
    for (int q = 0; q < sim->nq; q++)
        if (sim->q[q].kind == QS_Q_WEIGHT && sim->q[q].out == v)
            return q;
    return -1;
}

const char *qs_rl_layer_of(const qs_quantsim *sim, int i, qs_rl_layer *L, char *buf, size_t nbuf)
{
    const qs_graph *g = sim->g;
    const qs_node *nd = &g->nodes[i];
    memset(L, 0, sizeof *L);
    if (!qs_node_is_op(nd, "Conv") && !qs_node_is_op(nd, "Gemm") && !qs_node_is_op(nd, "MatMul"))
        return "";
    int kind = qs_node_is_op(nd, "Conv") ? QS_RL_CONV : qs_node_is_op(nd, "Gemm") ? QS_RL_GEMM : QS_RL_MATMUL;
    int wq = nd->nin > 1 ? weight_quantizer(sim, nd->in[1]) : -1;
    if (wq < 0)
        return kind == QS_RL_MATMUL && nd->nin > 0 && weight_quantizer(sim, nd->in[0]) >= 0
                   ? "the weight is MatMul's first operand" : "";
    const qs_quantizer *q = &sim->q[wq];
    const qs_tensor *w = g->values[q->value].init;
    if (qs_quantsim_bypassed(sim, wq))
        return "its weight quantizer is bypassed";
    if (!w || w->dtype != QS_F32)
        return "its weight is not a float32 constant";
    if (qs_graph_count_reads(g, q->out) != 1 || qs_graph_count_reads(g, q->value) != 1)
        return "its weight is shared with other nodes";
    if (nd->nout < 1 || nd->out[0] < 0 || nd->nin < 1 || nd->in[0] < 0)
        return "it has no input or output";
    const float *sc = qs_quantsim_scales((qs_quantsim *)sim, wq);
    for (int c = 0; c < q->nch; c++)
        if (!(sc[c] > 0) || !isfinite(sc[c]))
            return "its weight quantizer has a scale that is not positive and finite";
    L->node = i, L->wq = wq, L->kind = kind, L->group = 1, L->alpha = 1.f;
    if (kind == QS_RL_CONV) {
        if (w->ndim < 3 || w->ndim > 2 + QS_CONV_MAXD)
            return "its weight is not [M, C/group, k…] with 1 to 3 spatial dims";
        L->group = qs_node_int(nd, "group", 1);
        L->M = w->shape[0];
        L->Kg = w->shape[0] ? qs_numel(w) / w->shape[0] : 0;
        if (L->group < 1 || L->M % L->group) {
            snprintf(buf, nbuf, "group = %lld does not divide its %lld output channels", (long long)L->group,
                     (long long)L->M);
            return buf;
        }
    } else if (kind == QS_RL_GEMM) {
        if (qs_node_int(nd, "transA", 0))
            return "Gemm with transA";
        if (w->ndim != 2)
            return "its weight is not 2-D";
        L->trans = !qs_node_int(nd, "transB", 0);
        L->M = w->shape[L->trans ? 1 : 0];
        L->Kg = w->shape[L->trans ? 0 : 1];
        L->alpha = qs_node_float(nd, "alpha", 1.f);
    } else {
        if (w->ndim != 2) {
            snprintf(buf, nbuf, "its weight has rank %d (MatMul is handled with a 2-D weight)", w->ndim);
            return buf;
        }
        L->trans = 1;
        L->M = w->shape[1];
        L->Kg = w->shape[0];
    }
    if (L->M < 1 || L->Kg < 1)
        return "its weight is empty";
    L->wndim = w->ndim;
    memcpy(L->wshape, w->shape, sizeof L->wshape);
    L->Mg = L->M / L->group;
    return NULL;
}

int qs_rl_geometry(qs_rl_layer *L, const qs_graph *g, const qs_tensor *x, const char *who, qs_err *e)
{
    const qs_node *nd = &g->nodes[L->node];
    char sh[128];
    qs_shape_str(x->ndim, x->shape, sh, sizeof sh);
    if (x->dtype != QS_F32)
        return qs_error(e, QS_EUNSUPPORTED, "%s: the input of %s '%s' is %s, not float32", who, nd->op, nd->name,
                        qs_dtype_name(x->dtype));
    if (L->kind == QS_RL_CONV) {
        if (x->ndim != L->wndim || x->shape[1] != L->group * L->wshape[1])
            return qs_error(e, QS_ESHAPE, "%s: the input of Conv '%s' has shape %s; expected rank %d with %lld "
                            "channels", who, nd->name, sh, L->wndim, (long long)(L->group * L->wshape[1]));
        qs_err ge = {0};
        qs_kctx c = { .node = nd, .err = &ge };
        if (qs_conv_geom_init(&c, x->ndim - 2, x->shape + 2, L->wshape + 2, 0, 1, &L->geom) < 0)
            return qs_error(e, ge.code ? ge.code : QS_EINVAL, "%s: %s", who, ge.msg);
        L->C = x->shape[1];
        L->P = qs_geom_outvol(&L->geom);
        L->per_x = L->C * qs_geom_invol(&L->geom);
    } else if (L->kind == QS_RL_GEMM) {
        if (x->ndim != 2 || x->shape[1] != L->Kg)
            return qs_error(e, QS_ESHAPE, "%s: the input of Gemm '%s' has shape %s; expected [N, %lld]", who,
                            nd->name, sh, (long long)L->Kg);
        L->P = 1;
        L->per_x = L->Kg;
    } else {
        if (x->ndim < 2 || x->shape[x->ndim - 1] != L->Kg)
            return qs_error(e, QS_ESHAPE, "%s: the input of MatMul '%s' has shape %s; expected [N, …, %lld]", who,
                            nd->name, sh, (long long)L->Kg);
        L->per_x = x->shape[0] ? qs_numel(x) / x->shape[0] : 0;
        L->P = L->per_x / L->Kg;
    }
    L->xndim = x->ndim - 1;
    memcpy(L->xshape, x->shape + 1, (size_t)(x->ndim - 1) * sizeof *x->shape);
    L->have_geom = 1;
    return 0;
}

int qs_rl_same_shape(const qs_rl_layer *L, const qs_graph *g, const qs_tensor *x, const char *who, qs_err *e)
{
    if (x->dtype == QS_F32 && x->ndim == L->xndim + 1 &&
        !memcmp(x->shape + 1, L->xshape, (size_t)L->xndim * sizeof *x->shape))
        return 0;
    char sh[128];
    return qs_error(e, QS_ESHAPE, "%s: the input of '%s' changed shape between batches or passes (now %s)", who,
                    g->nodes[L->node].name, qs_shape_str(x->ndim, x->shape, sh, sizeof sh));
}

void qs_rl_weights(const qs_quantsim *sim, const qs_rl_layer *L, float *Wm, float *s, float *z, int64_t *src)
{
    const qs_quantizer *q = &sim->q[L->wq];
    const qs_tensor *w = sim->g->values[q->value].init;
    const float *sc = qs_quantsim_scales((qs_quantsim *)sim, L->wq), *zp = qs_quantsim_zeros((qs_quantsim *)sim, L->wq);
    const float *wd = qs_f32(w);
    int64_t nw = qs_numel(w), inner = 1;
    for (int d = q->axis + 1; q->axis >= 0 && d < w->ndim; d++)
        inner *= w->shape[d];
    for (int64_t i = 0; i < nw; i++) {
        int64_t si = L->trans ? (i % L->Kg) * L->M + i / L->Kg : i;   /* Wm[m, k] = W[k, m] */
        int64_t ch = q->axis >= 0 ? (si / inner) % q->nch : 0;
        if (src)
            src[i] = si;
        if (Wm)
            Wm[i] = wd[si];
        if (s)
            s[i] = sc[ch];
        if (z)
            z[i] = zp[ch];
    }
}

const char *qs_rl_op(const qs_rl_layer *L)
{
    return L->kind == QS_RL_CONV ? "Conv" : L->kind == QS_RL_GEMM ? "Gemm" : "MatMul";
}

/* --- bypass flags ----------------------------------------------------------------------------- */

int *qs_rl_bypass_save(const qs_quantsim *sim)
{
    int *saved = malloc((size_t)(sim->nq + 1) * sizeof *saved);
    for (int i = 0; saved && i < sim->nq; i++)
        saved[i] = qs_quantsim_bypassed(sim, i);
    return saved;
}

void qs_rl_bypass_quantized(qs_quantsim *sim, const int *saved)
{
    for (int i = 0; i < sim->nq; i++) {
        const qs_quantizer *q = &sim->q[i];
        qs_quantsim_bypass(sim, i, saved[i] || (q->kind != QS_Q_WEIGHT && !q->initialized));
    }
}

void qs_rl_bypass_restore(qs_quantsim *sim, const int *saved)
{
    for (int i = 0; i < sim->nq; i++)
        qs_quantsim_bypass(sim, i, saved[i]);
}

/* --- capture ------------------------------------------------------------------------------------ */

static int active(const qs_rl_capture *c, int t) { return c->start < c->taps[t].want; }

static void take(qs_rl_capture *c, int t, const qs_tensor *x)
{
    if (c->err.code)
        return;
    int64_t rows = x->shape[0] < c->rows ? x->shape[0] : c->rows;
    c->take(c, t, x, rows);
}

/* Observer: hands each active tap its value; raises stop once all are seen (none on a graph
 * input, whose value is taken by the sink after the full forward). */
static void observe(void *ud, int node, qs_tensor *const *out, int nout)
{
    qs_rl_capture *c = ud;
    if (c->user_abort && atomic_load(c->user_abort)) {
        c->aborted = 1;
        atomic_store(&c->stop, 1);
    }
    const qs_node *nd = &c->g->nodes[node];
    int all = 1;
    for (int t = 0; t < c->ntaps; t++) {
        qs_rl_tap *tp = &c->taps[t];
        if (!active(c, t))
            continue;
        if (tp->producer == node)
            for (int j = 0; j < nout && j < nd->nout; j++)
                if (nd->out[j] == tp->value && !tp->seen) {
                    take(c, t, out[j]);
                    tp->seen = 1;
                }
        all &= tp->seen;
    }
    if (all)
        atomic_store(&c->stop, 1);   /* the rest of the forward is not needed */
}

static int sink(void *ud, int64_t start, int64_t n, const qs_tensor *const *outputs, qs_exec *x, qs_err *e)
{
    (void)start, (void)n, (void)outputs, (void)e;
    qs_rl_capture *c = ud;
    for (int t = 0; t < c->ntaps; t++) {
        qs_rl_tap *tp = &c->taps[t];
        const qs_tensor *v = active(c, t) && !tp->seen ? qs_exec_value(x, tp->value) : NULL;
        if (v) {
            take(c, t, v);
            tp->seen = 1;
        }
    }
    return 0;
}

int qs_rl_capture_run(qs_quantsim *sim, const qs_pl_data *data, int64_t batch, const qs_pipeline_io *io,
                      qs_threadpool *pool, qs_rl_capture *c, const char *who, const char *stage, qs_err *e)
{
    int observed = 0;
    for (int t = 0; t < c->ntaps; t++)
        observed |= c->taps[t].producer >= 0;
    qs_runner *r = qs_runner_new(sim->g, batch, e);
    if (!r)
        return qs_error_prefix(e, "%s: ", who);
    qs_runner_set_pool(r, pool);
    if (observed)
        qs_runner_set_observer(r, observe, c);
    c->user_abort = io ? io->abort : NULL;
    c->aborted = 0;
    int64_t bs = qs_runner_batch(r);
    int rc = 0;
    for (c->start = 0; rc == 0; c->start += bs) {
        int64_t want = 0;
        int any_input = 0;
        for (int t = 0; t < c->ntaps; t++) {
            want = c->taps[t].want > want ? c->taps[t].want : want;
            c->taps[t].seen = 0;
            any_input |= active(c, t) && c->taps[t].producer < 0;
        }
        if (c->start >= want)
            break;
        int64_t k = want - c->start < bs ? want - c->start : bs;
        c->rows = k;   /* one forward per call: k ≤ the runner's batch */
        atomic_store(&c->stop, 0);
        /* a tap on a graph input needs the full forward (the sink); otherwise the observer stops it */
        atomic_int *flag = observed ? &c->stop : c->user_abort;
        rc = qs_runner_stream(r, data->d, data->arrays, c->start, k, any_input ? sink : NULL, c, NULL, NULL, flag, e);
        int all = 1;
        for (int t = 0; t < c->ntaps; t++)
            all &= !active(c, t) || c->taps[t].seen;
        if (rc == QS_EABORTED && observed && all && !c->aborted) {
            rc = 0;   /* stopped on purpose after the last tap */
            if (e)
                e->code = 0, e->msg[0] = 0;
        } else if (rc == QS_EABORTED) {
            rc = qs_error(e, QS_EABORTED, "%s: aborted", who);
        }
        if (rc == 0 && c->err.code)
            rc = qs_error(e, c->err.code, "%s", c->err.msg);
        if (rc == 0 && io && stage) {
            want = 0;
            for (int t = 0; t < c->ntaps; t++)
                want = c->taps[t].want > want ? c->taps[t].want : want;
            qs_pl_progress(io, stage, (double)(c->start + k), (double)want, c->t0);
        }
    }
    qs_runner_free(r);
    return rc;
}

/* --- reports ------------------------------------------------------------------------------------ */

void qs_rl_free_names(void *layers, int n, size_t size, size_t name_off)
{
    for (int i = 0; layers && i < n; i++) {
        char *name;
        memcpy(&name, (char *)layers + (size_t)i * size + name_off, sizeof name);
        free(name);
    }
    free(layers);
}

json_t *qs_rl_json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }
