/* Batch-norm folding (paper §2.3.1).
 *
 * Inference-mode BN is y = f·(x − μ) + β per channel with f = γ / sqrt(var + ε). When x is the
 * output of a linear layer with constant weights, f scales the weights of each output channel and
 * the rest becomes the bias: W' = f·W, b' = f·(b − μ) + β.
 *
 * Where the output channel lives in each layer's weight:
 *   Conv           W [M, C/g, k…]       output channel m = row m (groups do not matter)
 *   ConvTranspose  W [C, M/g, k…]       input channel c in group c/(C/g), column j → output
 *                                       channel (c / (C/g))·(M/g) + j
 *   Gemm           Y = α·A'·B' + β_g·C  column n of Y: row n of B when transB, else column n;
 *                                       C' = β_g·f·C + f·(−μ) + β (any α; C broadcast to [N] or
 *                                       [M, N]), and the node's beta becomes 1
 *   MatMul         A [M, K] · B [K, N]  column n of B. MatMul has no bias, so the node becomes
 *                                       Gemm(A, B', C) — identical for 2-D A. A MatMul whose A
 *                                       is not known to be 2-D is left alone: for rank > 2 the BN's
 *                                       channel axis (1) is not MatMul's output column axis.
 *
 * A BN is folded only when its input is produced by such a layer whose weight (and bias) are
 * initializers, the layer's output is read by the BN alone and is not a graph output, and the BN
 * is in inference form (no training_mode, no extra outputs used, spatial ≠ 0). Anything else is
 * left as it is and still runs. Initializers the layer shares with other readers are copied before
 * they are changed. The layer takes over the BN's output value, so readers downstream and graph
 * outputs are untouched; the BN parameters no other node reads are dropped from the graph. */
#include "quant/bnfold.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static char *xstrdup(const char *s) { return strdup(s ? s : ""); }

void qs_bn_records_free(qs_bn_record *r, int n)
{
    for (int i = 0; r && i < n; i++) {
        free(r[i].layer);
        free(r[i].output);
        free(r[i].gamma);
        free(r[i].beta);
        free(r[i].mean);
        free(r[i].var);
    }
    free(r);
}

qs_bn_record *qs_bn_records_clone(const qs_bn_record *r, int n)
{
    qs_bn_record *c = calloc(n + 1, sizeof *c);
    for (int i = 0; c && i < n; i++) {
        size_t b = (size_t)r[i].c * sizeof(float);
        c[i] = r[i];
        c[i].layer = xstrdup(r[i].layer);
        c[i].output = xstrdup(r[i].output);
        c[i].gamma = malloc(b + 1), c[i].beta = malloc(b + 1), c[i].mean = malloc(b + 1), c[i].var = malloc(b + 1);
        if (!c[i].layer || !c[i].output || !c[i].gamma || !c[i].beta || !c[i].mean || !c[i].var) {
            qs_bn_records_free(c, i + 1);
            return NULL;
        }
        memcpy(c[i].gamma, r[i].gamma, b);
        memcpy(c[i].beta, r[i].beta, b);
        memcpy(c[i].mean, r[i].mean, b);
        memcpy(c[i].var, r[i].var, b);
    }
    return c;
}

const qs_bn_record *qs_bn_find(const qs_bn_record *r, int n, const char *layer)
{
    /* the last match: when BNs were chained into one layer, the last one describes its output */
    for (int i = n - 1; i >= 0; i--)
        if (!strcmp(r[i].layer, layer))
            return &r[i];
    return NULL;
}

static int is_float(const qs_tensor *t) { return t && (t->dtype == QS_F32 || t->dtype == QS_F64); }

static const qs_tensor *init_of(const qs_graph *g, int v) { return v >= 0 ? g->values[v].init : NULL; }

/* Makes input slot `slot` of node `ni` an initializer this node alone reads, copying it when
 * shared. Returns its tensor (converted to float32), or NULL on OOM. */
static qs_tensor *own_init(qs_graph *g, int ni, int slot, const char *suffix)
{
    int v = g->nodes[ni].in[slot];
    qs_tensor *t = g->values[v].init;
    if (qs_graph_count_reads(g, v) == 1 && t->dtype == QS_F32)
        return t;
    qs_tensor *c = t->dtype == QS_F32 ? qs_tensor_copy(t) : qs_tensor_cast(t, QS_F32);
    if (!c)
        return NULL;
    if (qs_graph_count_reads(g, v) == 1) {   /* only the type changes */
        qs_graph_set_init_steal(g, v, c);
        return c;
    }
    char base[512];
    snprintf(base, sizeof base, "%s_%s", g->values[v].name, suffix);
    int nv = qs_graph_new_value(g, base);
    if (nv < 0) {
        qs_tensor_free(c);
        return NULL;
    }
    qs_graph_set_init_steal(g, nv, c);
    g->nodes[ni].in[slot] = nv;
    return c;
}

/* Adds an initializer as input `slot` (growing the node's input list). */
static qs_tensor *add_init_input(qs_graph *g, int ni, int slot, const char *base, int ndim, const int64_t *shape)
{
    qs_node *n = &g->nodes[ni];
    if (slot >= n->nin) {
        int *in = realloc(n->in, (slot + 2) * sizeof *in);
        if (!in)
            return NULL;
        for (int i = n->nin; i <= slot; i++)
            in[i] = -1;
        n->in = in;
        n->nin = slot + 1;
    }
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    int v = t ? qs_graph_new_value(g, base) : -1;
    if (v < 0) {
        qs_tensor_free(t);
        return NULL;
    }
    qs_graph_set_init_steal(g, v, t);
    g->nodes[ni].in[slot] = v;
    return t;
}

/* The BN's parameters as doubles, or 0 when the node is not a plain inference-mode BN. */
typedef struct bn_params {
    int64_t c;
    double *gamma, *beta, *mean, *var, eps;
} bn_params;

static void bn_params_free(bn_params *p)
{
    free(p->gamma);
    free(p->beta);
    free(p->mean);
    free(p->var);
}

static int read_bn(const qs_graph *g, const qs_node *n, bn_params *p)
{
    memset(p, 0, sizeof *p);
    if (strcmp(n->op, "BatchNormalization") || n->domain[0] || n->nin != 5 || n->nout < 1 || n->out[0] < 0)
        return 0;
    if (qs_node_int(n, "training_mode", 0) || !qs_node_int(n, "spatial", 1))
        return 0;
    for (int i = 1; i < n->nout; i++)   /* running statistics outputs (training only) */
        if (n->out[i] >= 0 && qs_graph_count_reads(g, n->out[i]))
            return 0;
    const qs_tensor *t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = qs_graph_const_of(g, qs_graph_skip_identity(g, n->in[i + 1]));
        if (!is_float(t[i]) || qs_numel(t[i]) != qs_numel(t[0]) || t[i]->ndim != 1)
            return 0;
    }
    p->c = qs_numel(t[0]);
    double **dst[4] = { &p->gamma, &p->beta, &p->mean, &p->var };
    for (int i = 0; i < 4; i++) {
        if (!(*dst[i] = malloc((p->c + 1) * sizeof **dst[i]))) {
            bn_params_free(p);
            return -1;
        }
        for (int64_t k = 0; k < p->c; k++)
            (*dst[i])[k] = qs_get_f64(t[i], k);
    }
    p->eps = qs_node_float(n, "epsilon", 1e-5f);
    for (int64_t k = 0; k < p->c; k++)
        if (!(p->var[k] + p->eps > 0) || !isfinite(p->gamma[k]) || !isfinite(p->beta[k]) ||
            !isfinite(p->mean[k])) {
            bn_params_free(p);
            return 0;
        }
    return 1;
}

/* Where a layer's weight holds its output channels. */
typedef struct layer_plan {
    int wslot, bslot;   /* weight input, bias input (Conv/ConvTranspose: 2, Gemm: C = 2) */
    int kind;           /* 0 Conv, 1 ConvTranspose, 2 Gemm, 3 MatMul */
} layer_plan;

static int layer_kind(const qs_graph *g, const qs_node *n, int bn_x, int64_t c)
{
    if (n->domain[0] || n->nout != 1 || n->nin < 2)
        return -1;
    const qs_tensor *w = init_of(g, n->in[1]);
    if (!w || w->dtype != QS_F32)
        return -1;
    const qs_tensor *b = n->nin > 2 && n->in[2] >= 0 ? init_of(g, n->in[2]) : NULL;
    if (n->nin > 2 && n->in[2] >= 0 && !is_float(b))
        return -1;   /* a bias that is not a constant */
    if (!strcmp(n->op, "Conv")) {
        if (w->ndim < 3 || w->shape[0] != c || (b && qs_numel(b) != c))
            return -1;
        return 0;
    }
    if (!strcmp(n->op, "ConvTranspose")) {
        int64_t grp = qs_node_int(n, "group", 1);
        if (w->ndim < 3 || grp < 1 || w->shape[0] % grp || w->shape[1] * grp != c || (b && qs_numel(b) != c))
            return -1;
        return 1;
    }
    if (!strcmp(n->op, "Gemm")) {
        int tb = (int)qs_node_int(n, "transB", 0);
        if (w->ndim != 2 || w->shape[tb ? 0 : 1] != c)
            return -1;
        if (b) {   /* C must broadcast to [M, N] per column: [], [1], [N], [1|M, 1|N] */
            int64_t last = b->ndim ? b->shape[b->ndim - 1] : 1;
            if (b->ndim > 2 || (last != 1 && last != c))
                return -1;
        }
        return 2;
    }
    if (!strcmp(n->op, "MatMul")) {
        const qs_value *a = &g->values[n->in[0]], *x = &g->values[bn_x];
        int rank2 = a->ndim == 2 || x->ndim == 2;
        if (!rank2 || n->nin != 2 || w->ndim != 2 || w->shape[1] != c)
            return -1;
        return 3;
    }
    return -1;
}

/* Scales the weights of output channel k by f[k]; opt is ConvTranspose's group or Gemm's transB. */
static void scale_weights(qs_tensor *w, int kind, int64_t opt, const double *f)
{
    float *x = qs_f32(w);
    if (kind == 0) {                           /* [M, …] */
        int64_t per = qs_numel(w) / w->shape[0];
        for (int64_t m = 0; m < w->shape[0]; m++)
            for (int64_t i = 0; i < per; i++)
                x[m * per + i] = (float)(x[m * per + i] * f[m]);
    } else if (kind == 1) {                    /* [C, M/g, …] */
        int64_t cin = w->shape[0], mg = w->shape[1], per = qs_numel(w) / (cin * mg), cg = cin / opt;
        for (int64_t c = 0; c < cin; c++)
            for (int64_t j = 0; j < mg; j++) {
                double fk = f[(c / cg) * mg + j];
                float *p = x + (c * mg + j) * per;
                for (int64_t i = 0; i < per; i++)
                    p[i] = (float)(p[i] * fk);
            }
    } else if (kind == 2 && opt) {             /* Gemm transB: [N, K] */
        int64_t k = w->shape[1];
        for (int64_t n = 0; n < w->shape[0]; n++)
            for (int64_t i = 0; i < k; i++)
                x[n * k + i] = (float)(x[n * k + i] * f[n]);
    } else {                                   /* [K, N] */
        int64_t nn = w->shape[1];
        for (int64_t i = 0; i < w->shape[0]; i++)
            for (int64_t n = 0; n < nn; n++)
                x[i * nn + n] = (float)(x[i * nn + n] * f[n]);
    }
}

static int fold_one(qs_graph *g, int li, int bi, const bn_params *p, qs_err *e)
{
    qs_node *l = &g->nodes[li];
    int kind = layer_kind(g, l, g->nodes[bi].in[0], p->c);
    int64_t c = p->c;
    double *f = malloc((c + 1) * sizeof *f), *shift = malloc((c + 1) * sizeof *shift);
    if (!f || !shift) {
        free(f);
        free(shift);
        return qs_error(e, QS_ENOMEM, "bnfold: out of memory");
    }
    for (int64_t k = 0; k < c; k++) {
        f[k] = p->gamma[k] / sqrt(p->var[k] + p->eps);
        shift[k] = p->beta[k] - f[k] * p->mean[k];
    }
    int rc = QS_ENOMEM;
    char base[512];
    qs_tensor *w = own_init(g, li, 1, "bnfold");
    if (!w)
        goto out;
    l = &g->nodes[li];
    int64_t group = kind == 1 ? qs_node_int(l, "group", 1) : kind == 2 ? qs_node_int(l, "transB", 0) : 0;
    scale_weights(w, kind, group, f);
    qs_graph_weights_changed(g);

    int has_bias = l->nin > 2 && l->in[2] >= 0;
    if (kind == 0 || kind == 1) {
        qs_tensor *b;
        if (has_bias) {
            b = own_init(g, li, 2, "bnfold");
        } else {
            snprintf(base, sizeof base, "%s_bias", l->name[0] ? l->name : g->values[l->out[0]].name);
            b = add_init_input(g, li, 2, base, 1, &c);
        }
        if (!b)
            goto out;
        for (int64_t k = 0; k < c; k++)
            qs_f32(b)[k] = (float)(f[k] * (has_bias ? qs_f32(b)[k] : 0) + shift[k]);
    } else {
        /* Gemm C' = β_g·f·C + shift, laid out as [N] or [rows, N]; MatMul becomes Gemm with C' = shift */
        double beta_g = kind == 2 ? qs_node_float(l, "beta", 1.f) : 1;
        const qs_tensor *c0 = has_bias ? init_of(g, l->in[2]) : NULL;
        int64_t rows = c0 && c0->ndim == 2 ? c0->shape[0] : 1, cols = c0 && c0->ndim ? c0->shape[c0->ndim - 1] : 1;
        int64_t shape[2] = { rows, c };
        qs_tensor *nc = rows > 1 ? qs_tensor_new(QS_F32, 2, shape) : qs_tensor_new(QS_F32, 1, &c);
        if (!nc)
            goto out;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < c; k++) {
                double cv = c0 ? qs_get_f64(c0, r * cols + (cols == 1 ? 0 : k)) : 0;
                qs_f32(nc)[r * c + k] = (float)(beta_g * f[k] * cv + shift[k]);
            }
        if (has_bias && qs_graph_count_reads(g, l->in[2]) == 1) {
            qs_graph_set_init_steal(g, l->in[2], nc);
        } else {
            snprintf(base, sizeof base, "%s_bias", l->name[0] ? l->name : g->values[l->out[0]].name);
            qs_tensor *t = add_init_input(g, li, 2, base, nc->ndim, nc->shape);
            if (!t) {
                qs_tensor_free(nc);
                goto out;
            }
            memcpy(t->data, nc->data, qs_nbytes(nc));
            qs_tensor_free(nc);
        }
        l = &g->nodes[li];
        int64_t opset = qs_graph_opset(g, "");
        if (opset > 0 && opset < 7 && qs_node_set_int(l, "broadcast", 1) < 0)   /* Gemm-6 broadcasts C only when told */
            goto out;
        if (kind == 3) {
            char *op = strdup("Gemm");
            if (!op)
                goto out;
            free(l->op);
            l->op = op;
        } else if (qs_node_set_float(l, "beta", 1.f) < 0) {
            goto out;
        }
    }
    rc = 0;
out:
    free(f);
    free(shift);
    if (rc)
        qs_error(e, rc, "bnfold: out of memory");
    return rc;
}

/* Drops what only the folded BNs read: unread parameter initializers, and the Identity/Constant
 * nodes that fed them (then, in turn, what those read). vals[] is rewritten as it walks upward. */
static void prune(qs_graph *g, int *vals, int nv)
{
    for (int round = 0; round < 16; round++) {
        char *drop = calloc(g->nnodes + 1, 1);
        int any = 0;
        for (int i = 0; drop && i < nv; i++) {
            int v = vals[i];
            if (v < 0 || qs_graph_count_reads(g, v))
                continue;
            vals[i] = -1;
            int p = g->values[v].producer;
            if (g->values[v].init) {
                qs_graph_set_init_steal(g, v, NULL);
            } else if (p >= 0 && !drop[p] && (!strcmp(g->nodes[p].op, "Identity") ||
                                              !strcmp(g->nodes[p].op, "Constant"))) {
                drop[p] = 1;
                any = 1;
                vals[i] = g->nodes[p].nin ? g->nodes[p].in[0] : -1;
            }
        }
        if (any)
            qs_graph_remove_nodes(g, drop);
        free(drop);
        if (!any)
            break;
    }
}

static int add_record(qs_bn_record **recs, int *n, const char *layer, const char *output, const bn_params *p)
{
    qs_bn_record *r = realloc(*recs, (*n + 1) * sizeof *r);
    if (!r)
        return -1;
    *recs = r;
    r += *n;
    memset(r, 0, sizeof *r);
    r->layer = xstrdup(layer);
    r->output = xstrdup(output);
    r->c = p->c;
    r->eps = (float)p->eps;
    float **dst[4] = { &r->gamma, &r->beta, &r->mean, &r->var };
    const double *src[4] = { p->gamma, p->beta, p->mean, p->var };
    int ok = r->layer && r->output;
    for (int i = 0; i < 4; i++) {
        *dst[i] = malloc((p->c + 1) * sizeof **dst[i]);
        ok = ok && *dst[i];
        for (int64_t k = 0; *dst[i] && k < p->c; k++)
            (*dst[i])[k] = (float)src[i][k];
    }
    (*n)++;   /* counted even when incomplete, so qs_bn_records_free releases it */
    return ok ? 0 : -1;
}

int qs_bnfold(qs_graph *g, qs_bn_record **records, int *n, qs_err *e)
{
    qs_bn_record *recs = NULL;
    int nrec = 0, rc = 0;
    char *drop = calloc(g->nnodes + 1, 1);
    if (!drop)
        return qs_error(e, QS_ENOMEM, "bnfold: out of memory");
    for (int bi = 0; bi < g->nnodes && rc == 0; bi++) {
        bn_params p;
        int ok = read_bn(g, &g->nodes[bi], &p);
        if (ok < 0) {
            rc = qs_error(e, QS_ENOMEM, "bnfold: out of memory");
            break;
        }
        if (!ok)
            continue;
        int x = g->nodes[bi].in[0], y = g->nodes[bi].out[0];
        int li = x >= 0 ? g->values[x].producer : -1;
        if (li < 0 || drop[li] || qs_graph_count_reads(g, x) != 1 || layer_kind(g, &g->nodes[li], x, p.c) < 0) {
            bn_params_free(&p);
            continue;
        }
        if ((rc = fold_one(g, li, bi, &p, e)) < 0) {
            bn_params_free(&p);
            break;
        }
        /* the layer now produces the BN's output; the old value is left without producer or reader */
        qs_node *l = &g->nodes[li];
        l->out[0] = y;
        g->values[y].producer = li;
        g->values[x].producer = -1;
        drop[bi] = 1;
        if (!l->name[0]) {   /* records name their layer */
            char *nm = strdup(g->values[y].name);
            if (nm) {
                free(l->name);
                l->name = nm;
            }
        }
        if (records && add_record(&recs, &nrec, l->name, g->values[y].name, &p) < 0)
            rc = qs_error(e, QS_ENOMEM, "bnfold: out of memory");
        bn_params_free(&p);
    }
    /* BN parameters nobody reads any more would otherwise be exported as dead initializers */
    int nbn = 0;
    for (int bi = 0; bi < g->nnodes; bi++)
        nbn += drop[bi];
    int *params = malloc((4 * nbn + 1) * sizeof *params), np = 0;
    if (params)
        for (int bi = 0; bi < g->nnodes; bi++)
            for (int i = 1; drop[bi] && i < 5; i++)
                params[np++] = g->nodes[bi].in[i];
    qs_graph_remove_nodes(g, drop);
    free(drop);
    prune(g, params, np);
    free(params);
    if (rc < 0) {
        qs_bn_records_free(recs, nrec);
        recs = NULL;
        nrec = 0;
    }
    if (records)
        *records = recs;
    if (n)
        *n = nrec;
    return rc;
}
