/* The executor.
 *
 * qs_exec_plan walks the sorted graph once with concrete shapes: every value gets a tensor head
 * (dtype, shape, data pointer). Initializers point at the graph's own data; nodes whose inputs are
 * all known at plan time (Constant, Shape → Gather → Concat chains) are evaluated right there into
 * owned buffers and skipped at run time. Everything else lives in one arena: in inference mode a
 * value's bytes are reused once its last reader has run (first-fit over lifetimes, exec_place.c),
 * in training mode every value keeps its own bytes because backward reads them. Scratch is one buffer sized
 * for the hungriest kernel.
 *
 * A node is never folded when it reads a float initializer: weights change between runs (AdaRound,
 * QAT, range setting) and folding would freeze them. DequantizeLinear of an integer initializer is
 * the exception: a QDQ model's quantized weight is final, and dequantizing it once per plan instead
 * of once per batch is what makes QDQ models run at FP32 speed. */
#include "exec.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "exec_impl.h"
#include "ops/ops.h"

static size_t align_up(size_t n) { return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

static qs_kctx node_ctx(qs_exec *x, int i, qs_err *e);

/* The clamp node n applies, when its op is a clamp (Relu, Clip) with bounds known at plan time. */
static int fusable_act(qs_exec *x, int i, float *lo, float *hi)
{
    const qs_node *n = &x->g->nodes[i];
    if (!x->def[i]->clamp || n->nout != 1)
        return 0;
    qs_kctx c = node_ctx(x, i, NULL);
    return x->def[i]->clamp(&c, lo, hi);
}

/* Inference-time fusion, decided by the ops' flags (ops.h). A node p whose op has QS_OP_FUSE_ACT
 * (Conv, ConvTranspose, Gemm, MatMul) and whose output value v has one reader (and is not a graph
 * output) may absorb that reader: a clamp (Relu, Clip), or, when the op has QS_OP_FUSE_RESIDUAL
 * (Conv), a residual Add of v and a tensor u of v's shape computed before p (the Conv adds u in its
 * epilogue) — and then the clamp after that Add. The absorbed node is marked folded == 2, its output takes
 * v's place, and p writes straight into it. Returns 1 when node i (the reader) can be absorbed; *p
 * is the absorbing node. v is the reader's input k (1: the second operand of a residual Add, whose
 * first was computed earlier, as in a ResNet's downsampling block). */
static int fusable_reader(qs_exec *x, int i, int k, const int *prod, const int *fused_into, const int *nreaders,
                          int *p)
{
    const qs_node *n = &x->g->nodes[i];
    if (!x->fuse || x->mode != QS_EXEC_INFER || n->nin <= k || n->nout != 1 || n->out[0] < 0)
        return 0;
    int v = n->in[k];
    if (v < 0 || x->kind[v] != V_ACT || prod[v] < 0 || nreaders[v] != 1 || qs_graph_is_output(x->g, v) ||
        x->keep[v])
        return 0;
    int q = prod[v];
    if (x->folded[q] == 2)   /* v is the output of a node already absorbed: look through it */
        q = fused_into[q];
    if (x->folded[q] || x->out[q][0] != &x->val[v] || x->act_min[q] <= x->act_max[q] || x->pw[q])
        return 0;   /* not p's live output, or p already clamps or activates (nothing may follow) */
    if (!(x->def[q]->flags & QS_OP_FUSE_ACT))
        return 0;
    *p = q;
    return 1;
}

/* The residual of an Add (node i) that Conv p can absorb: fusable_reader found p's output as the
 * Add's input k, so the residual is the other one, u, of the same shape and type, already computed
 * before p runs. Returns u or -1. */
static int residual_input(qs_exec *x, int i, int k, int p, const int *prod, const int *fused_into)
{
    const qs_node *n = &x->g->nodes[i];
    if (!(x->def[i]->flags & QS_OP_RESIDUAL_ADD) || n->nin != 2 || !(x->def[p]->flags & QS_OP_FUSE_RESIDUAL) ||
        x->resid[p] >= 0)
        return -1;
    int v = n->in[k], u = n->in[1 - k];
    if (u < 0 || u == v)
        return -1;
    if (x->kind[u] == V_ACT) {
        int q = prod[u];
        if (q < 0 || (x->folded[q] == 2 ? fused_into[q] : q) >= p)
            return -1;
    } else if (x->kind[u] != V_INPUT) {
        return -1;
    }
    const qs_tensor *tu = &x->val[u], *tv = &x->val[v];
    if (tu->dtype != QS_F32 || tv->dtype != QS_F32 || tu->ndim != tv->ndim ||
        memcmp(tu->shape, tv->shape, tv->ndim * sizeof *tv->shape))
        return -1;
    return u;
}

/* Node i is absorbed into its producer p: p's call writes i's output, and v, the value between them,
 * is no longer computed. */
static void absorb(qs_exec *x, int i, int p, int v)
{
    const qs_node *n = &x->g->nodes[i];
    x->fused_act[p] = i;   /* observers see p's call as the last absorbed node's */
    x->val[n->out[0]] = x->val[v];
    x->kind[n->out[0]] = V_ACT;
    x->kind[v] = V_NONE;
    x->out[p][0] = &x->val[n->out[0]];
    x->folded[i] = 2;
}

/* SiLU written out, as exporters do: Mul (node i) of v and s = Sigmoid(v), where v is the live output
 * of a QS_OP_FUSE_PW node p read by nothing else (after any residual p absorbed, no clamp) and s
 * only by the Mul. Returns 1 with *p and the Sigmoid node *sg: p's epilogue then writes v·σ(v) into
 * the Mul's output and neither node runs. */
static int silu_reader(qs_exec *x, int i, const int *prod, const int *fused_into, const int *nreaders, int *p,
                       int *sg)
{
    const qs_node *n = &x->g->nodes[i];
    if (!x->fuse || x->mode != QS_EXEC_INFER || !(x->def[i]->flags & QS_OP_MUL) || n->nin != 2 ||
        n->out[0] < 0)
        return 0;
    for (int k = 0; k < 2; k++) {
        int s = n->in[k], v = n->in[1 - k], j = s >= 0 ? prod[s] : -1;
        if (j < 0 || v < 0 || x->folded[j] || !(x->def[j]->flags & QS_OP_SIGMOID) || x->g->nodes[j].nin != 1 ||
            x->g->nodes[j].in[0] != v || nreaders[s] != 1 || nreaders[v] != 2 || x->kind[v] != V_ACT ||
            x->kind[s] != V_ACT || qs_graph_is_output(x->g, v) || qs_graph_is_output(x->g, s) || x->keep[v] ||
            x->keep[s] || prod[v] < 0 || x->val[v].dtype != QS_F32)
            continue;
        int q = x->folded[prod[v]] == 2 ? fused_into[prod[v]] : prod[v];
        if (x->folded[q] || x->out[q][0] != &x->val[v] || x->act_min[q] <= x->act_max[q] || x->pw[q] ||
            !(x->def[q]->flags & QS_OP_FUSE_PW))
            continue;
        *p = q;
        *sg = j;
        return 1;
    }
    return 0;
}

/* A pointwise activation (node i: an op whose pointwise() names one) that is the only reader of the
 * float32 live output v of a QS_OP_FUSE_PW node p with no activation yet (a clamp or residual may
 * come before it: the epilogue's order). Returns its QS_PW_* kind (and parameters) with *p, else 0:
 * p's epilogue then writes the activation's output and node i does not run. */
static int pointwise_reader(qs_exec *x, int i, const int *prod, const int *fused_into, const int *nreaders, int *p,
                            float *alpha, float *beta)
{
    const qs_node *n = &x->g->nodes[i];
    if (!x->fuse || x->mode != QS_EXEC_INFER || !x->def[i]->pointwise || n->nin != 1 || n->nout != 1 ||
        n->out[0] < 0)
        return 0;
    int v = n->in[0];
    if (v < 0 || x->kind[v] != V_ACT || prod[v] < 0 || nreaders[v] != 1 || qs_graph_is_output(x->g, v) ||
        x->keep[v] || x->val[v].dtype != QS_F32)
        return 0;
    int q = x->folded[prod[v]] == 2 ? fused_into[prod[v]] : prod[v];
    if (x->folded[q] || x->out[q][0] != &x->val[v] || x->pw[q] || !(x->def[q]->flags & QS_OP_FUSE_PW))
        return 0;
    qs_kctx c = node_ctx(x, i, NULL);
    *alpha = *beta = 0.f;
    int kind = x->def[i]->pointwise(&c, alpha, beta);
    if (kind != QS_PW_NONE)
        *p = q;
    return kind;
}

static int supported_dtype(qs_dtype t)
{
    return t == QS_F32 || t == QS_I64 || t == QS_I32 || t == QS_I8 || t == QS_U8 || t == QS_BOOL ||
           t == QS_I16 || t == QS_U16 || t == QS_I4 || t == QS_U4 || t == QS_F64 || t == QS_UNDEFINED;
}

int qs_exec_check(const qs_graph *g, qs_err *e)
{
    char msg[QS_ERRMSG_MAX];
    size_t k = 0;
    int problems = 0;
    int64_t opset = qs_graph_opset(g, "");
    msg[0] = 0;
#define ADD(...) do { problems++; if (k < sizeof msg) k += snprintf(msg + k, sizeof msg - k, __VA_ARGS__); } while (0)
    if (opset && (opset < MIN_OPSET || opset > MAX_OPSET))
        ADD("\n  default-domain opset %lld is not supported (supported: %d to %d)", (long long)opset,
            MIN_OPSET, MAX_OPSET);
    for (int i = 0; i < g->nnodes; i++) {
        const qs_node *n = &g->nodes[i];
        if (!qs_op_find(n->domain, n->op)) {
            if (n->domain && n->domain[0])
                ADD("\n  op %s (domain %s) in node '%s' is not supported", n->op, n->domain, n->name);
            else
                ADD("\n  op %s in node '%s' (opset %lld) is not supported", n->op, n->name, (long long)opset);
        }
    }
    for (int v = 0; v < g->nvalues; v++) {
        const qs_value *val = &g->values[v];
        qs_dtype t = val->init ? val->init->dtype : val->dtype;
        if (!supported_dtype(t))
            ADD("\n  value '%s' has unsupported type %s", val->name, qs_dtype_name(t));
    }
#undef ADD
    if (!problems)
        return 0;
    return qs_error(e, QS_EUNSUPPORTED, "the model cannot run: %d problem%s:%s", problems,
                    problems > 1 ? "s" : "", msg);
}

qs_exec *qs_exec_new(qs_graph *g, int mode, qs_err *e)
{
    qs_exec *x = calloc(1, sizeof *x);
    if (!x) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    x->g = g;
    x->mode = mode;
    if (qs_graph_toposort(g, e) < 0 || qs_exec_check(g, e) < 0) {
        free(x);
        return NULL;
    }
    x->trainable = calloc(g->nvalues + 1, 1);
    x->keep = calloc(g->nvalues + 1, 1);
    if (!x->trainable || !x->keep) {
        free(x->trainable);
        free(x->keep);
        free(x);
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    for (int v = 0; v < g->nvalues; v++)
        x->trainable[v] = g->values[v].init && g->values[v].init->dtype == QS_F32;
    return x;
}

static void plan_clear(qs_exec *x)
{
    for (int i = 0; x->state && i < x->nnodes; i++)
        if (x->state[i])
            (x->def[i]->release ? x->def[i]->release : free)(x->state[i]);
    free(x->state);
    for (int v = 0; v < x->nvalues; v++)
        if (x->kind && x->kind[v] == V_CONST)
            free(x->val[v].data);
    for (int i = 0; i < x->nnodes; i++) {
        if (x->in)
            free(x->in[i]);
        if (x->out)
            free(x->out[i]);
    }
    free(x->in);
    free(x->out);
    free(x->val);
    free(x->kind);
    free(x->offset);
    free(x->def);
    free(x->folded);
    free(x->act_min);
    free(x->act_max);
    free(x->fused_act);
    free(x->resid);
    free(x->pw);
    free(x->pw_ab);
    free(x->xscale);
    free(x->layout);
    free(x->blocked);
    free(x->needs_grad);
    free(x->has_grad);
    free(x->grad);
    free(x->grad_arena);
    for (int i = 0; i < 8; i++)
        free(x->gtmp[i]);
    char *trainable = x->trainable, *keep = x->keep, *arena = x->arena, *scratch = x->scratch;
    size_t arena_cap = x->arena_cap, scratch_cap = x->scratch_cap;
    qs_graph *g = x->g;
    int mode = x->mode, fuse = x->fuse;
    qs_threadpool *pool = x->pool;
    atomic_int *ab = x->abort_flag;
    qs_progress_fn pf = x->progress;
    void *pud = x->progress_ud, *oud = x->observer_ud;
    qs_node_fn of = x->observer;
    memset(x, 0, sizeof *x);
    x->trainable = trainable;
    x->keep = keep;
    x->arena = arena;
    x->arena_cap = arena_cap;
    x->scratch = scratch;
    x->scratch_cap = scratch_cap;
    x->g = g;
    x->mode = mode;
    x->pool = pool;
    x->fuse = fuse;
    x->abort_flag = ab;
    x->progress = pf;
    x->progress_ud = pud;
    x->observer = of;
    x->observer_ud = oud;
}

void qs_exec_free(qs_exec *x)
{
    if (!x)
        return;
    plan_clear(x);
    free(x->arena);
    free(x->scratch);
    free(x->trainable);
    free(x->keep);
    free(x);
}

static qs_kctx node_ctx(qs_exec *x, int i, qs_err *e)
{
    const qs_node *n = &x->g->nodes[i];
    qs_kctx c = { .node = n, .opset = qs_graph_opset(x->g, ""), .nin = n->nin, .nout = n->nout,
                  .in = x->in[i], .out = x->out[i], .scratch = x->scratch, .scratch_size = x->scratch_size,
                  .training = x->mode == QS_EXEC_TRAIN, .nthreads = x->nthreads, .pool = x->pool,
                  .err = e, .state = x->state ? x->state[i] : NULL };
    if (x->act_min && x->act_min[i] <= x->act_max[i]) {
        c.fused_act = 1;
        c.act_min = x->act_min[i];
        c.act_max = x->act_max[i];
    }
    if (x->resid && x->resid[i] >= 0)
        c.residual = &x->val[x->resid[i]];
    if (x->pw && x->pw[i]) {
        c.fused_pw = x->pw[i];
        c.pw_alpha = x->pw_ab[2 * i];
        c.pw_beta = x->pw_ab[2 * i + 1];
    }
    if (x->xscale && x->xscale[i] >= 0)
        c.in_scale = &x->val[x->xscale[i]];
    c.layout = x->layout ? x->layout[i] : 0;
    if (x->mode == QS_EXEC_INFER && n->nin > 1 && n->in[1] >= 0 && x->kind[n->in[1]] == V_INIT)
        c.wgen = x->g->wgen + 1;   /* never 0: "may change on any call" */
    return c;
}

qs_kctx qs_exec_node_ctx(qs_exec *x, int i, qs_err *e) { return node_ctx(x, i, e); }
int qs_exec_blocked_values(const qs_exec *x) { return x->nblocked; }

/* Input heads: the declared shape with the batch put in the leading dim when it is symbolic. */
static int plan_inputs(qs_exec *x, int64_t batch, qs_err *e)
{
    qs_graph *g = x->g;
    x->batch = batch;
    for (int k = 0; k < g->ninputs; k++) {
        int v = g->inputs[k];
        const qs_value *val = &g->values[v];
        qs_tensor *t = &x->val[v];
        if (val->init)
            continue;   /* an input that also has an initializer is a constant with a default */
        if (val->ndim < 0)
            return qs_error(e, QS_EINVAL, "graph input '%s' has no declared shape", val->name);
        t->dtype = val->dtype == QS_UNDEFINED ? QS_F32 : val->dtype;
        t->ndim = val->ndim;
        for (int d = 0; d < val->ndim; d++) {
            int64_t dim = val->shape[d];
            if (d == 0 && (dim < 0 || val->dim_param[0]))
                dim = batch;
            else if (d == 0 && k == 0)
                x->batch = dim;   /* fixed batch (often 1): callers run that many at a time */
            else if (dim < 0 && val->run_dim[d] > 0)
                dim = val->run_dim[d];
            if (dim < 0) {
                char p[160] = "";
                if (val->dim_param[d])
                    snprintf(p, sizeof p, " ('%s')", val->dim_param[d]);
                return qs_error(e, QS_EINVAL, "graph input '%s' has a symbolic size in dim %d%s and nothing set "
                                "it: the data's samples give it, or --input-shape %s=… (job spec: "
                                "config.input_shapes)", val->name, d, p, val->name);
            }
            t->shape[d] = dim;
        }
        char what[300];
        snprintf(what, sizeof what, "graph input '%s' at batch %lld", val->name, (long long)batch);
        int rc = qs_check_tensor_size(e, what, t->dtype, t->ndim, t->shape);
        if (rc < 0)
            return rc;
        x->kind[v] = V_INPUT;
    }
    return 0;
}

/* Node i's inferred outputs against the tensor size limit, before anything is allocated for them:
 * their shapes come from the model (ConstantOfShape, Expand, Tile, Range, Reshape, the batch). */
static int check_output_sizes(const qs_exec *x, int i, const qs_kctx *c, qs_err *e)
{
    const qs_node *n = &x->g->nodes[i];
    for (int j = 0; j < n->nout; j++) {
        char b[256], what[600];
        const qs_tensor *t = c->out[j];
        snprintf(what, sizeof what, "%s: output %d ('%s')", qs_node_label(x->g, i, b, sizeof b), j,
                 n->out[j] >= 0 ? x->g->values[n->out[j]].name : "");
        int rc = qs_check_tensor_size(e, what, t->dtype, t->ndim, t->shape);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Makes *buf at least `need` bytes (ALIGN-aligned), keeping it when it already is: replanning
 * (another batch, thread count or fusion) then touches no fresh pages. */
static char *grow(char **buf, size_t *cap, size_t need)
{
    if (*buf && need <= *cap)
        return *buf;
    free(*buf);
    *cap = 0;
    if ((*buf = aligned_alloc(ALIGN, need)))
        *cap = need;
    return *buf;
}

int qs_exec_plan(qs_exec *x, int64_t batch, qs_err *e)
{
    qs_graph *g = x->g;
    plan_clear(x);
    x->nthreads = qs_threadpool_size(x->pool);
    int nv = x->nvalues = g->nvalues, nn = x->nnodes = g->nnodes;
    int rc = 0;
    x->val = calloc(nv + 1, sizeof *x->val);
    x->kind = calloc(nv + 1, 1);
    x->offset = calloc(nv + 1, sizeof *x->offset);
    x->def = calloc(nn + 1, sizeof *x->def);
    x->folded = calloc(nn + 1, 1);
    x->act_min = malloc((nn + 1) * sizeof *x->act_min);
    x->act_max = malloc((nn + 1) * sizeof *x->act_max);
    x->fused_act = malloc((nn + 1) * sizeof *x->fused_act);
    x->resid = malloc((nn + 1) * sizeof *x->resid);
    x->pw = calloc(nn + 1, 1);
    x->pw_ab = calloc(2 * (nn + 1), sizeof *x->pw_ab);
    x->xscale = malloc((nn + 1) * sizeof *x->xscale);
    x->layout = calloc(nn + 1, sizeof *x->layout);
    x->blocked = calloc(nv + 1, 1);
    x->state = calloc(nn + 1, sizeof *x->state);
    x->in = calloc(nn + 1, sizeof *x->in);
    x->out = calloc(nn + 1, sizeof *x->out);
    int *nreaders = calloc(nv + 1, sizeof *nreaders);
    int *fused_into = malloc((nn + 1) * sizeof *fused_into), *prod = malloc((nv + 1) * sizeof *prod);
    if (!prod || !x->val || !x->kind || !x->offset || !x->def || !x->folded || !x->in || !x->out || !x->act_min ||
        !x->act_max || !x->resid || !x->pw || !x->pw_ab || !x->state || !x->fused_act || !nreaders || !fused_into ||
        !x->layout || !x->blocked || !x->xscale) {
        rc = qs_error(e, QS_ENOMEM, "out of memory planning the graph");
        goto out;
    }
    for (int v = 0; v < nv; v++) {
        const qs_value *val = &g->values[v];
        if (val->init) {
            x->val[v] = *val->init;
            x->val[v].owns_data = 0;
            x->kind[v] = V_INIT;
        }
    }
    if ((rc = plan_inputs(x, batch, e)) < 0)
        goto out;
    for (int v = 0; v < nv; v++)
        prod[v] = -1;
    for (int i = 0; i < nn; i++) {
        x->act_min[i] = 1;
        x->act_max[i] = 0;   /* no clamp */
        x->resid[i] = -1;
        fused_into[i] = -1;
        x->fused_act[i] = -1;
        x->xscale[i] = -1;
        const qs_node *n = &g->nodes[i];
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0)
                prod[n->out[j]] = i;
        for (int j = 0; j < n->nin; j++) {
            int v = n->in[j];
            if (v >= 0 && (j == 0 || n->in[j - 1] != v))
                nreaders[v]++;
        }
    }

    /* shapes, folding */
    size_t scratch = 0;
    for (int i = 0; i < nn; i++) {
        const qs_node *n = &g->nodes[i];
        char b[256];
        x->def[i] = qs_op_find(n->domain, n->op);
        if (n->nout < 1) {   /* every op writes out[0]; a node whose outputs are all omitted has none */
            rc = qs_error(e, QS_EINVAL, "%s has no outputs", qs_node_label(g, i, b, sizeof b));
            goto out;
        }
        x->in[i] = calloc(n->nin + 1, sizeof **x->in);
        /* the pointer array is followed by heads for outputs the graph leaves unnamed */
        x->out[i] = calloc(1, (n->nout + 1) * (sizeof **x->out + sizeof(qs_tensor)));
        if (!x->in[i] || !x->out[i]) {
            rc = qs_error(e, QS_ENOMEM, "out of memory planning the graph");
            goto out;
        }
        int known = 1, reads_float_init = 0;
        for (int j = 0; j < n->nin; j++) {
            int v = n->in[j];
            if (v < 0)
                continue;
            if (x->kind[v] == V_NONE) {
                rc = qs_error(e, QS_EINVAL, "%s reads '%s' before it is computed",
                              qs_node_label(g, i, b, sizeof b), g->values[v].name);
                goto out;
            }
            x->in[i][j] = &x->val[v];
            known &= x->kind[v] == V_INIT || x->kind[v] == V_CONST;
            reads_float_init |= x->kind[v] == V_INIT && x->val[v].dtype == QS_F32;
        }
        qs_tensor *spare = (qs_tensor *)(x->out[i] + n->nout + 1);
        for (int j = 0; j < n->nout; j++)
            x->out[i][j] = n->out[j] >= 0 ? &x->val[n->out[j]] : &spare[j];
        /* Decided here rather than at the producer: a Clip's bounds often come from Constant nodes
         * that sit between the producer and the Clip, and are known only now. */
        float lo, hi;
        int p, u = -1, sg;
        if (silu_reader(x, i, prod, fused_into, nreaders, &p, &sg)) {
            int v = x->g->nodes[sg].in[0];
            x->pw[p] = QS_PW_SILU;
            fused_into[i] = fused_into[sg] = p;
            absorb(x, i, p, v);
            x->kind[x->g->nodes[sg].out[0]] = V_NONE;
            x->folded[sg] = 2;
            continue;
        }
        int pw = pointwise_reader(x, i, prod, fused_into, nreaders, &p, &lo, &hi);
        if (pw) {
            int pv = n->in[0];
            x->pw[p] = (char)pw;
            x->pw_ab[2 * p] = lo;
            x->pw_ab[2 * p + 1] = hi;
            fused_into[i] = p;
            absorb(x, i, p, pv);
            continue;
        }
        int k = 0;
        if ((fusable_reader(x, i, 0, prod, fused_into, nreaders, &p) &&
             ((u = residual_input(x, i, 0, p, prod, fused_into)) >= 0 || fusable_act(x, i, &lo, &hi))) ||
            (k = 1, fusable_reader(x, i, 1, prod, fused_into, nreaders, &p) &&
                        (u = residual_input(x, i, 1, p, prod, fused_into)) >= 0)) {
            /* (fusable_act takes Clip bounds only from initializers and constants, never the fused
             * activation value itself) */
            int pv = n->in[k];
            if (u >= 0) {
                x->resid[p] = u;
            } else {
                x->act_min[p] = lo;
                x->act_max[p] = hi;
            }
            qs_kctx pc = node_ctx(x, p, e);   /* the producer's scratch with the fusion on */
            size_t ss = x->def[p]->scratch ? x->def[p]->scratch(&pc) : 0;
            if (ss > scratch)
                scratch = ss;
            fused_into[i] = p;
            absorb(x, i, p, pv);
            continue;
        }
        int mul;
        if ((x->xscale[i] = qs_exec_scaled_input(x, i, prod, nreaders, &mul)) >= 0) {
            /* the Mul does not run: node i reads its activation operand (x->in[i][0]) and scales it */
            x->kind[g->nodes[mul].out[0]] = V_NONE;
            x->folded[mul] = 2;
            fused_into[mul] = i;
        }
        qs_kctx c = node_ctx(x, i, e);
        if ((rc = x->def[i]->infer(&c)) < 0)
            goto out;
        for (int j = 0; j < n->nout; j++)
            if (!supported_dtype(c.out[j]->dtype) || c.out[j]->dtype == QS_UNDEFINED) {
                rc = qs_error(e, QS_EUNSUPPORTED, "%s: output %d has unsupported type %s",
                              qs_node_label(g, i, b, sizeof b), j, qs_dtype_name(c.out[j]->dtype));
                goto out;
            }
        if ((rc = check_output_sizes(x, i, &c, e)) < 0)
            goto out;
        int is_shape = x->def[i]->flags & QS_OP_SHAPE_ONLY;
        int int_weight = (x->def[i]->flags & QS_OP_DEQUANT) && n->nin > 0 && n->in[0] >= 0 &&
                         x->kind[n->in[0]] == V_INIT && qs_dtype_is_int(x->val[n->in[0]].dtype);
        if (is_shape || (known && (!reads_float_init || int_weight))) {
            /* evaluate now, once */
            for (int j = 0; j < n->nout; j++) {
                qs_tensor *t = c.out[j];
                t->data = calloc(qs_nbytes(t) + 1, 1);
                if (!t->data) {
                    rc = qs_error(e, QS_ENOMEM, "out of memory");
                    goto out;
                }
                if (n->out[j] >= 0)
                    x->kind[n->out[j]] = V_CONST;
            }
            size_t ss = x->def[i]->scratch ? x->def[i]->scratch(&c) : 0;
            void *sbuf = ss ? malloc(ss) : NULL;
            c.scratch = sbuf;
            c.scratch_size = ss;
            rc = ss && !sbuf ? qs_error(e, QS_ENOMEM, "out of memory") : x->def[i]->forward(&c);
            free(sbuf);
            for (int j = 0; j < n->nout; j++)
                if (n->out[j] < 0) {
                    free(c.out[j]->data);
                    c.out[j]->data = NULL;
                }
            if (rc < 0)
                goto out;
            x->folded[i] = 1;
            continue;
        }
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0)
                x->kind[n->out[j]] = V_ACT;
        if (x->def[i]->prepare && (rc = x->def[i]->prepare(&c, &x->state[i])) < 0)
            goto out;
        c.state = x->state[i];
        size_t ss = x->def[i]->scratch ? x->def[i]->scratch(&c) : 0;
        if (ss > scratch)
            scratch = ss;
    }

    if (x->mode == QS_EXEC_INFER && x->fuse && !x->observer &&
        (rc = qs_exec_plan_layouts(x, fused_into, &scratch, e)) < 0)
        goto out;

    size_t total;
    if ((rc = qs_exec_place(x, fused_into, &total, e)) < 0)
        goto out;
    size_t unnamed = 0;
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < g->nodes[i].nout; j++)
            if (g->nodes[i].out[j] < 0 && !x->folded[i])
                unnamed += align_up(qs_nbytes(x->out[i][j]) + 1);
    x->arena_size = total + unnamed;
    x->scratch_size = scratch;
    if (!grow(&x->arena, &x->arena_cap, align_up(x->arena_size + 1)) ||
        (scratch && !grow(&x->scratch, &x->scratch_cap, align_up(scratch)))) {
        rc = qs_error(e, QS_ENOMEM, "out of memory: the plan needs %zu bytes of activations and %zu of scratch",
                      x->arena_size, scratch);
        goto out;
    }
    memset(x->arena, 0, x->arena_size);
    for (int v = 0; v < nv; v++)
        if (x->kind[v] == V_INPUT || x->kind[v] == V_ACT)
            x->val[v].data = x->arena + x->offset[v];
    size_t uoff = total;
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < g->nodes[i].nout; j++)
            if (g->nodes[i].out[j] < 0 && !x->folded[i]) {
                x->out[i][j]->data = x->arena + uoff;
                uoff += align_up(qs_nbytes(x->out[i][j]) + 1);
            }

    if (x->mode == QS_EXEC_TRAIN) {
        x->needs_grad = calloc(nv + 1, 1);
        x->has_grad = calloc(nv + 1, 1);
        x->grad = calloc(nv + 1, sizeof *x->grad);
        if (!x->needs_grad || !x->has_grad || !x->grad) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            goto out;
        }
        size_t gsize = 0, gmax = 0;
        for (int v = 0; v < nv; v++) {
            qs_tensor *t = &x->val[v];
            x->needs_grad[v] = t->dtype == QS_F32 &&
                               (x->kind[v] == V_ACT || x->kind[v] == V_INPUT ||
                                (x->kind[v] == V_INIT && x->trainable[v]));
            if (x->needs_grad[v]) {
                gsize += align_up(qs_nbytes(t) + 1);
                if (qs_nbytes(t) > gmax)
                    gmax = qs_nbytes(t);
            }
        }
        x->grad_arena = aligned_alloc(ALIGN, align_up(gsize + 1));
        x->gtmp_size = align_up(gmax + 1);
        if (!x->grad_arena) {
            rc = qs_error(e, QS_ENOMEM, "out of memory: %zu bytes of gradients", gsize);
            goto out;
        }
        size_t off = 0;
        for (int v = 0; v < nv; v++)
            if (x->needs_grad[v]) {
                x->grad[v] = x->val[v];
                x->grad[v].owns_data = 0;
                x->grad[v].data = x->grad_arena + off;
                off += align_up(qs_nbytes(&x->val[v]) + 1);
            }
    }
    x->planned = 1;
out:
    free(nreaders);
    free(fused_into);
    free(prod);
    if (rc < 0)
        plan_clear(x);
    return rc;
}

int64_t qs_exec_batch(const qs_exec *x) { return x->batch; }
size_t qs_exec_arena_bytes(const qs_exec *x) { return x->arena_size + x->scratch_size; }

int qs_exec_set_input(qs_exec *x, int i, const qs_tensor *t, qs_err *e)
{
    if (!x->planned)
        return qs_error(e, QS_EINVAL, "set_input before plan");
    if (i < 0 || i >= x->g->ninputs)
        return qs_error(e, QS_EINVAL, "the model has %d inputs, not %d", x->g->ninputs, i + 1);
    int v = x->g->inputs[i];
    qs_tensor *d = &x->val[v];
    if (x->kind[v] != V_INPUT)
        return qs_error(e, QS_EINVAL, "input '%s' is an initializer", x->g->values[v].name);
    if (!qs_shape_eq(d, t)) {
        char a[128], b[128];
        return qs_error(e, QS_ESHAPE, "input '%s' expects shape %s, got %s", x->g->values[v].name,
                        qs_shape_str(d->ndim, d->shape, a, sizeof a), qs_shape_str(t->ndim, t->shape, b, sizeof b));
    }
    if (t->dtype == d->dtype) {
        memcpy(d->data, t->data, qs_nbytes(d));
        return 0;
    }
    int64_t n = qs_numel(d);
    if (d->dtype == QS_F32) {
        for (int64_t k = 0; k < n; k++)
            qs_f32(d)[k] = (float)qs_get_f64(t, k);
        return 0;
    }
    if (d->dtype == QS_I64) {
        for (int64_t k = 0; k < n; k++)
            qs_i64(d)[k] = qs_get_i64(t, k);
        return 0;
    }
    return qs_error(e, QS_EINVAL, "input '%s' expects %s data, got %s", x->g->values[v].name,
                    qs_dtype_name(d->dtype), qs_dtype_name(t->dtype));
}

qs_tensor *qs_exec_input(qs_exec *x, int i)
{
    if (!x->planned || i < 0 || i >= x->g->ninputs)
        return NULL;
    return &x->val[x->g->inputs[i]];
}

int qs_exec_forward(qs_exec *x, qs_err *e)
{
    if (!x->planned)
        return qs_error(e, QS_EINVAL, "forward before plan");
    if (x->observer && x->nblocked)
        return qs_error(e, QS_EINVAL, "an observer was set after a plan that keeps activations channel-blocked: "
                        "plan again");
    int nn = x->nnodes;
    for (int i = 0; i < nn; i++) {
        if (x->folded[i])
            continue;
        if (x->abort_flag && atomic_load(x->abort_flag))
            return qs_error(e, QS_EABORTED, "aborted");
        qs_kctx c = node_ctx(x, i, e);
        int rc = x->def[i]->forward(&c);
        if (rc < 0)
            return rc;
        if (x->observer) {
            /* a fused producer wrote its activation's output: report it as that node's */
            int j = x->fused_act[i] >= 0 ? x->fused_act[i] : i;
            x->observer(x->observer_ud, j, x->out[j], x->g->nodes[j].nout);
        }
        if (x->progress)
            x->progress(x->progress_ud, i + 1, nn);
    }
    return 0;
}

const qs_tensor *qs_exec_output(const qs_exec *x, int i)
{
    if (!x->planned || i < 0 || i >= x->g->noutputs)
        return NULL;
    return &x->val[x->g->outputs[i]];
}

const qs_tensor *qs_exec_value(const qs_exec *x, int v)
{
    if (!x->planned || v < 0 || v >= x->nvalues || x->kind[v] == V_NONE || x->blocked[v])
        return NULL;   /* (a blocked value has no NCHW copy: keep it with qs_exec_keep_value) */
    return &x->val[v];
}

/* a value's head for its shape, blocked or not */
static const qs_tensor *shape_of(const qs_exec *x, int v)
{
    return x->planned && v >= 0 && v < x->nvalues && x->kind[v] != V_NONE ? &x->val[v] : NULL;
}

double qs_exec_node_macs(const qs_exec *x, int n)
{
    const qs_graph *g = x->g;
    if (n < 0 || n >= g->nnodes)
        return 0;
    const qs_node *nd = &g->nodes[n];
    if ((nd->domain && nd->domain[0]) || nd->nin < 2 || nd->nout < 1)
        return 0;
    const qs_tensor *a = shape_of(x, nd->in[0]), *b = shape_of(x, nd->in[1]), *y = shape_of(x, nd->out[0]);
    if (!a || !b || !y || b->ndim < 1)
        return 0;
    if (!strcmp(nd->op, "Conv") && b->shape[0] > 0)   /* each output: Cin/group · kernel */
        return (double)qs_numel(y) * ((double)qs_numel(b) / b->shape[0]);
    if (!strcmp(nd->op, "ConvTranspose") && b->shape[0] > 0)   /* each input: Cout/group · kernel */
        return (double)qs_numel(a) * ((double)qs_numel(b) / b->shape[0]);
    if (!strcmp(nd->op, "Gemm") && a->ndim == 2)
        return (double)qs_numel(y) * a->shape[qs_node_int(nd, "transA", 0) ? 0 : 1];
    if (!strcmp(nd->op, "MatMul") && a->ndim >= 1)
        return (double)qs_numel(y) * a->shape[a->ndim - 1];
    return 0;
}

/* d += s over [b, e): a gradient reaching a value from a second reader, on the pool (element by
 * element, so any split gives the same bits) */
typedef struct { float *d; const float *s; } add_job;

static void add_range(void *arg, int64_t b, int64_t e, int worker)
{
    const add_job *j = arg;
    for (int64_t k = b; k < e; k++)
        j->d[k] += j->s[k];
}

int qs_exec_backward(qs_exec *x, const qs_tensor *const *dout, qs_err *e)
{
    if (!x->planned || x->mode != QS_EXEC_TRAIN)
        return qs_error(e, QS_EINVAL, "backward needs a plan in training mode");
    qs_graph *g = x->g;
    memset(x->has_grad, 0, x->nvalues);
    for (int k = 0; k < g->noutputs; k++) {
        int v = g->outputs[k];
        if (!dout || !dout[k] || !x->needs_grad[v])
            continue;
        if (!qs_shape_eq(dout[k], &x->val[v]))
            return qs_error(e, QS_ESHAPE, "gradient for output '%s' has the wrong shape", g->values[v].name);
        memcpy(x->grad[v].data, dout[k]->data, qs_nbytes(&x->val[v]));
        x->has_grad[v] = 1;
    }
    qs_tensor *douts[64], *dins[64], tmp[64];
    for (int i = x->nnodes - 1; i >= 0; i--) {
        if (x->folded[i])
            continue;
        if (x->abort_flag && atomic_load(x->abort_flag))
            return qs_error(e, QS_EABORTED, "aborted");
        const qs_node *n = &g->nodes[i];
        int any = 0;
        for (int j = 0; j < n->nout && j < 64; j++) {
            int v = n->out[j];
            douts[j] = v >= 0 && x->has_grad[v] ? &x->grad[v] : NULL;
            any |= douts[j] != NULL;
        }
        if (!any)
            continue;
        int wants = 0;
        for (int j = 0; j < n->nin && j < 64; j++) {
            int v = n->in[j];
            dins[j] = NULL;
            if (v < 0 || !x->needs_grad[v])
                continue;
            int dup = 0;
            for (int k = 0; k < j; k++)
                dup |= n->in[k] == v;
            if (!x->has_grad[v] && !dup) {
                dins[j] = &x->grad[v];
            } else {
                if (j >= 8)
                    return qs_error(e, QS_EUNSUPPORTED, "%s: too many inputs to accumulate", n->op);
                if (!x->gtmp[j] && !(x->gtmp[j] = aligned_alloc(ALIGN, x->gtmp_size)))
                    return qs_error(e, QS_ENOMEM, "out of memory");
                tmp[j] = x->val[v];
                tmp[j].owns_data = 0;
                tmp[j].data = x->gtmp[j];
                dins[j] = &tmp[j];
            }
            wants = 1;
        }
        if (!wants)
            continue;
        if (!x->def[i]->backward) {
            char b[256];
            return qs_error(e, QS_EUNSUPPORTED, "%s has no backward pass", qs_node_label(g, i, b, sizeof b));
        }
        qs_kctx c = node_ctx(x, i, e);
        c.din = dins;
        c.dout = douts;
        int rc = x->def[i]->backward(&c);
        if (rc < 0)
            return rc;
        for (int j = 0; j < n->nin; j++) {
            int v = n->in[j];
            if (!dins[j])
                continue;
            if (dins[j] == &x->grad[v])
                x->has_grad[v] = 1;
            else if (x->has_grad[v])
                qs_threadpool_for(x->pool, x->nthreads, qs_numel(dins[j]), 16384, add_range,
                                  &(add_job){ qs_f32(&x->grad[v]), qs_f32(dins[j]) });
            else {
                memcpy(x->grad[v].data, dins[j]->data, qs_nbytes(dins[j]));
                x->has_grad[v] = 1;
            }
        }
    }
    return 0;
}

const qs_tensor *qs_exec_grad(const qs_exec *x, int v)
{
    if (!x->planned || x->mode != QS_EXEC_TRAIN || v < 0 || v >= x->nvalues || !x->has_grad[v])
        return NULL;
    return &x->grad[v];
}

void qs_exec_set_trainable(qs_exec *x, int v, int on)
{
    if (v >= 0 && v < x->g->nvalues)
        x->trainable[v] = on ? 1 : 0;
}

void qs_exec_set_abort(qs_exec *x, atomic_int *flag) { x->abort_flag = flag; }

void qs_exec_set_observer(qs_exec *x, qs_node_fn fn, void *ud)
{
    x->observer = fn;
    x->observer_ud = ud;
}

void qs_exec_set_progress(qs_exec *x, qs_progress_fn fn, void *ud)
{
    x->progress = fn;
    x->progress_ud = ud;
}

void qs_exec_set_pool(qs_exec *x, qs_threadpool *tp) { x->pool = tp; }
void qs_exec_set_fusion(qs_exec *x, int on) { x->fuse = on ? 1 : 0; }

void qs_exec_keep_value(qs_exec *x, int value)
{
    if (value >= 0 && value < x->g->nvalues)
        x->keep[value] = 1;
}
