/* Cross-layer equalization and high-bias absorption (paper §3.2, §3.2.2); the method is described
 * in cle.h.
 *
 * The pass works in four steps: find the pairs (node ids only), make every initializer it will
 * change private to its node (copy-on-write, as bnfold does) and replace the ReLU6s of accepted
 * pairs, sweep the pairs until the scales settle, then absorb biases. Layers are re-read from the
 * graph each time they are used, so a copy or an added bias made for one pair is seen by the next
 * pair that shares the layer (a layer in the middle of a chain is layer 2 of one pair and layer 1
 * of the next). Ranges and scales are computed in double and applied to the float32 weights once
 * per sweep. */
#include "quant/cle.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *xstrdup(const char *s) { return strdup(s ? s : ""); }

qs_cle_config qs_cle_config_default(void)
{
    return (qs_cle_config){ .equalize = 1, .absorb = 1, .replace_relu6 = 1, .max_iter = 100, .tol = 1e-4,
                            .absorb_sigmas = 3.f };
}

static const qs_tensor *f32_init(const qs_graph *g, int v)
{
    const qs_tensor *t = v >= 0 ? g->values[v].init : NULL;
    return t && t->dtype == QS_F32 ? t : NULL;
}

/* --- layers ------------------------------------------------------------------------------------ */

enum { FAM_CONV, FAM_FC };

/* A Conv, Gemm or MatMul with a constant float32 weight, as CLE sees it. Weight element (output
 * channel m, input channel k, tap t):
 *   Conv  W [M, C/g, taps]: m·(C/g)·taps + (k mod C/g)·taps + t, nonzero only for k in group(m)
 *   FC    W [K, N] (Gemm transB = 0, MatMul): k·N + m;  W [N, K] (Gemm transB = 1): m·K + k */
typedef struct layer {
    int node, fam;
    int wv, bv;                /* weight and bias value ids; bv = -1 without bias */
    int64_t nout, nin, group, taps;
    int wt;                    /* FC weight stored [out, in] */
    int bias_ok;               /* the bias is absent or one entry per output channel */
    int has_bias_slot;         /* MatMul has none */
    double alpha, beta;        /* Gemm: y = alpha·A·W + beta·b */
} layer;

static int parse_layer(const qs_graph *g, int ni, layer *L)
{
    const qs_node *n = &g->nodes[ni];
    memset(L, 0, sizeof *L);
    L->node = ni;
    L->bv = -1;
    L->alpha = L->beta = 1;
    L->bias_ok = 1;
    L->has_bias_slot = 1;
    if (n->nin < 2 || n->nout < 1 || n->out[0] < 0 || n->in[0] < 0)
        return 0;
    const qs_tensor *w = f32_init(g, n->in[1]);
    if (!w)
        return 0;
    L->wv = n->in[1];
    int bv = n->nin > 2 ? n->in[2] : -1;
    const qs_tensor *b = bv >= 0 ? f32_init(g, bv) : NULL;
    if (bv >= 0 && !b)
        return 0;   /* a bias that is not a float32 constant */
    L->bv = bv;
    if (qs_node_is_op(n, "Conv")) {
        int64_t grp = qs_node_int(n, "group", 1);
        if (w->ndim < 3 || grp < 1 || w->shape[0] % grp)
            return 0;
        L->fam = FAM_CONV;
        L->group = grp;
        L->nout = w->shape[0];
        L->nin = w->shape[1] * grp;
        L->taps = qs_numel(w) / (w->shape[0] * w->shape[1]);
        L->bias_ok = !b || (b->ndim == 1 && b->shape[0] == L->nout);
        return 1;
    }
    if (qs_node_is_op(n, "Gemm")) {
        if (w->ndim != 2 || qs_node_int(n, "transA", 0))
            return 0;
        L->fam = FAM_FC;
        L->wt = qs_node_int(n, "transB", 0) != 0;
        L->nout = w->shape[L->wt ? 0 : 1];
        L->nin = w->shape[L->wt ? 1 : 0];
        L->group = 1;
        L->taps = 1;
        L->alpha = qs_node_float(n, "alpha", 1.f);
        L->beta = qs_node_float(n, "beta", 1.f);
        L->bias_ok = !b || (qs_numel(b) == L->nout && (b->ndim == 1 || (b->ndim == 2 && b->shape[0] == 1)));
        return 1;
    }
    if (qs_node_is_op(n, "MatMul")) {
        if (w->ndim != 2 || n->nin != 2)
            return 0;
        L->fam = FAM_FC;
        L->nout = w->shape[1];
        L->nin = w->shape[0];
        L->group = L->taps = 1;
        L->has_bias_slot = 0;
        return 1;
    }
    return 0;
}

static float *wdata(const qs_graph *g, const layer *L) { return qs_f32(g->values[L->wv].init); }
static float *bdata(const qs_graph *g, const layer *L) { return L->bv >= 0 ? qs_f32(g->values[L->bv].init) : NULL; }

/* Calls fn on every weight of output channel m (fn may change it). */
#define FOR_OUT(L, w, m, body) do { \
    if ((L)->fam == FAM_CONV) { \
        int64_t per_ = ((L)->nin / (L)->group) * (L)->taps; \
        for (int64_t q_ = 0; q_ < per_; q_++) { float *p = &(w)[(m) * per_ + q_]; body; } \
    } else { \
        for (int64_t k_ = 0; k_ < (L)->nin; k_++) { \
            float *p = &(w)[(L)->wt ? (m) * (L)->nin + k_ : k_ * (L)->nout + (m)]; body; } \
    } } while (0)

/* … on every weight applied to input channel k */
#define FOR_IN(L, w, k, body) do { \
    if ((L)->fam == FAM_CONV) { \
        int64_t cg_ = (L)->nin / (L)->group, mg_ = (L)->nout / (L)->group, grp_ = (k) / cg_, j_ = (k) % cg_; \
        for (int64_t m_ = grp_ * mg_; m_ < (grp_ + 1) * mg_; m_++) \
            for (int64_t t_ = 0; t_ < (L)->taps; t_++) { float *p = &(w)[(m_ * cg_ + j_) * (L)->taps + t_]; body; } \
    } else { \
        for (int64_t n_ = 0; n_ < (L)->nout; n_++) { \
            float *p = &(w)[(L)->wt ? n_ * (L)->nin + (k) : (k) * (L)->nout + n_]; body; } \
    } } while (0)

static double out_absmax(float *w, const layer *L, int64_t m)
{
    double r = 0;
    FOR_OUT(L, w, m, r = fmax(r, fabs(*p)));
    return r;
}

static double in_absmax(float *w, const layer *L, int64_t k)
{
    double r = 0;
    FOR_IN(L, w, k, r = fmax(r, fabs(*p)));
    return r;
}

/* Makes input `slot` of node ni a float32 initializer that only this node reads (a copy when
 * shared). Returns its value id, or -1 on OOM. */
static int own_init(qs_graph *g, int ni, int slot)
{
    int v = g->nodes[ni].in[slot];
    if (qs_graph_count_reads(g, v) == 1)
        return v;
    qs_tensor *c = qs_tensor_copy(g->values[v].init);
    char base[512];
    snprintf(base, sizeof base, "%s_cle", g->values[v].name);
    int nv = c ? qs_graph_new_value(g, base) : -1;
    if (nv < 0) {
        qs_tensor_free(c);
        return -1;
    }
    qs_graph_set_init_steal(g, nv, c);
    g->nodes[ni].in[slot] = nv;
    return nv;
}

/* A zero bias of n entries as input 2 of node ni. Returns its value id, or -1 on OOM. */
static int add_bias(qs_graph *g, int ni, int64_t n)
{
    qs_node *nd = &g->nodes[ni];
    if (nd->nin < 3) {
        int *in = realloc(nd->in, 3 * sizeof *in);
        if (!in)
            return -1;
        for (int i = nd->nin; i < 3; i++)
            in[i] = -1;
        nd->in = in;
        nd->nin = 3;
    }
    char base[512];
    snprintf(base, sizeof base, "%s_bias", nd->name && nd->name[0] ? nd->name : g->values[nd->out[0]].name);
    qs_tensor *t = qs_tensor_new(QS_F32, 1, &n);
    int v = t ? qs_graph_new_value(g, base) : -1;
    if (v < 0) {
        qs_tensor_free(t);
        return -1;
    }
    qs_graph_set_init_steal(g, v, t);
    g->nodes[ni].in[2] = v;
    return v;
}

/* --- activations between the layers -------------------------------------------------------------- */

enum { ACT_NONE, ACT_RELU, ACT_LEAKY, ACT_BOUNDED, ACT_OTHER };

/* A Clip's bound from its input slot (opset ≥ 11) or attribute; dflt when absent. 0 when the
 * bound is not a constant. */
static int clip_bound(const qs_graph *g, const qs_node *n, int slot, const char *attr, double dflt, double *out)
{
    *out = dflt;
    if (n->nin > slot && n->in[slot] >= 0) {
        const qs_tensor *t = qs_graph_const_of(g, n->in[slot]);
        if (!t || qs_numel(t) != 1)
            return 0;
        *out = qs_get_f64(t, 0);
        return 1;
    }
    if (qs_node_attr(n, attr))
        *out = qs_node_float(n, attr, 0);
    return 1;
}

static int act_kind(const qs_graph *g, const qs_node *n, double *hi)
{
    *hi = INFINITY;
    if (qs_node_is_op(n, "Relu"))
        return ACT_RELU;
    if (qs_node_is_op(n, "LeakyRelu"))
        return ACT_LEAKY;
    if (qs_node_is_op(n, "Clip")) {
        double lo;
        if (!clip_bound(g, n, 1, "min", -INFINITY, &lo) || !clip_bound(g, n, 2, "max", INFINITY, hi))
            return ACT_OTHER;
        if (lo != 0 || !(*hi > 0))
            return ACT_OTHER;
        return *hi >= FLT_MAX ? ACT_RELU : ACT_BOUNDED;
    }
    return ACT_OTHER;
}

/* Clip → Relu in place: no bounds, no attributes. Bound initializers nobody reads any more are
 * dropped so that export does not write them. */
static int clip_to_relu(qs_graph *g, int ni, char *drop)
{
    qs_node *n = &g->nodes[ni];
    char *op = strdup("Relu");
    if (!op)
        return -1;
    free(n->op);
    n->op = op;
    int bounds[2] = { n->nin > 1 ? n->in[1] : -1, n->nin > 2 ? n->in[2] : -1 };
    n->nin = 1;
    for (int i = 0; i < n->nattr; i++) {
        qs_attr *a = &n->attr[i];
        free(a->name);
        free(a->s);
        qs_tensor_free(a->t);
        free(a->floats);
        free(a->ints);
        for (int k = 0; a->strings && k < a->n; k++)
            free(a->strings[k]);
        free(a->strings);
    }
    free(n->attr);
    n->attr = NULL;
    n->nattr = 0;
    for (int i = 0; i < 2; i++) {
        int pn = bounds[i] >= 0 ? g->values[bounds[i]].producer : -1;
        if (pn >= 0 && qs_node_is_op(&g->nodes[pn], "Constant") && qs_graph_count_reads(g, bounds[i]) == 0)
            drop[pn] = 1;   /* removed at the end of the pass: node ids must not move before */
        if (bounds[i] >= 0 && g->values[bounds[i]].init && pn < 0 && qs_graph_count_reads(g, bounds[i]) == 0) {
            int is_input = 0;
            for (int k = 0; k < g->ninputs; k++)
                is_input |= g->inputs[k] == bounds[i];
            if (!is_input)
                qs_graph_set_init_steal(g, bounds[i], NULL);
        }
    }
    return 0;
}

/* --- finding the pairs --------------------------------------------------------------------------- */

typedef struct pair {
    int l1, l2, act;           /* node ids; act = -1 when none */
    int kind;                  /* ACT_* (ACT_BOUNDED → replaced by Relu) */
    double hi;                 /* Clip's upper bound */
    qs_bn_record *rec;         /* layer 1's BN record, NULL when none */
} pair;

typedef struct cle_state {
    qs_graph *g;
    const qs_cle_config *cfg;
    qs_cle_report *rep;
    pair *pairs;
    int npairs;
    char *drop;                /* per node: a Constant left without readers */
} cle_state;

/* The one node reading v (not a graph output), or -1. */
static int sole_reader(const qs_graph *g, int v)
{
    int ids[2];
    if (qs_graph_is_output(g, v) || qs_graph_count_reads(g, v) != 1 || qs_graph_consumers(g, v, ids, 2) != 1)
        return -1;
    return ids[0];
}

static qs_bn_record *find_record(const qs_graph *g, qs_bn_record *bn, int nbn, const layer *L)
{
    const qs_node *n = &g->nodes[L->node];
    for (int i = nbn - 1; i >= 0; i--)
        if (bn[i].layer && !strcmp(bn[i].layer, n->name) && bn[i].output &&
            !strcmp(bn[i].output, g->values[n->out[0]].name) && bn[i].c == L->nout)
            return &bn[i];
    return NULL;
}

/* Channel-wise ops a pair may span besides its activation (a VGG's MaxPool between two blocks):
 * each maps channel i of its input to channel i of its output, commutes with a positive
 * per-channel scale, f(x/s) = f(x)/s, and with a per-channel shift, f(x − c) = f(x) − c, which
 * absorption needs. Average pooling that counts padded zeros does not commute with the shift;
 * an extra output (MaxPool's indices) must be unread. */
static int channelwise(const qs_graph *g, const qs_node *n)
{
    if (qs_node_is_op(n, "AveragePool")) {
        if (qs_node_int(n, "count_include_pad", 0))
            return 0;
    } else if (!qs_node_is_op(n, "MaxPool") && !qs_node_is_op(n, "GlobalMaxPool") &&
               !qs_node_is_op(n, "GlobalAveragePool") && !qs_node_is_op(n, "Identity")) {
        return 0;
    }
    if (n->nin != 1)
        return 0;
    for (int j = 1; j < n->nout; j++)
        if (n->out[j] >= 0 && (qs_graph_count_reads(g, n->out[j]) || qs_graph_is_output(g, n->out[j])))
            return 0;
    return 1;
}

/* Follows layer 1's output v through nodes that are each its only reader, to layer 2: at most one
 * activation, any number of channel-wise ops. Any other single-data-input node counts as the
 * activation (of kind ACT_OTHER, so that the pair is reported as skipped). Returns layer 2's node
 * id, or -1 when the chain ends elsewhere. */
static int follow(const qs_graph *g, int v, int *act, int *kind, double *hi)
{
    *act = -1;
    *kind = ACT_NONE;
    *hi = INFINITY;
    for (int hops = 0; hops < 16; hops++) {
        int c = sole_reader(g, v);
        if (c < 0 || g->nodes[c].nin < 1 || g->nodes[c].in[0] != v)
            return -1;
        layer L;
        if (parse_layer(g, c, &L))
            return c;
        const qs_node *a = &g->nodes[c];
        if (a->nout < 1 || a->out[0] < 0)
            return -1;
        if (!channelwise(g, a)) {
            if (*act >= 0)
                return -1;   /* a second activation */
            for (int j = 1; j < a->nin; j++)
                if (a->in[j] >= 0 && !qs_graph_const_of(g, a->in[j]))
                    return -1;   /* a second data input (Add, Concat, …): not a chain */
            *act = c;
            *kind = act_kind(g, a, hi);
        }
        v = a->out[0];
    }
    return -1;
}

static int find_pairs(cle_state *s, qs_bn_record *bn, int nbn, qs_err *e)
{
    qs_graph *g = s->g;
    for (int i = 0; i < g->nnodes; i++) {
        layer L1, L2;
        if (!parse_layer(g, i, &L1))
            continue;
        int act, kind;
        double hi;
        int l2 = follow(g, g->nodes[i].out[0], &act, &kind, &hi);
        if (l2 < 0 || !parse_layer(g, l2, &L2))
            continue;
        if (L1.fam != L2.fam)
            continue;   /* Conv → Flatten → Gemm and such: channels are not on the same axis */
        int rc = 0;
        if (kind == ACT_OTHER)
            rc = qs_skip_add(&s->rep->skipped, &s->rep->nskipped, g->nodes[i].name, g->nodes[l2].name,
                             "%s '%s' between them is not scale-equivariant", g->nodes[act].op,
                             g->nodes[act].name);
        else if (kind == ACT_BOUNDED && !s->cfg->replace_relu6)
            rc = qs_skip_add(&s->rep->skipped, &s->rep->nskipped, g->nodes[i].name, g->nodes[l2].name,
                             "Clip(0, %g) '%s' is not scale-equivariant (ReLU6 replacement is off)",
                             hi, g->nodes[act].name);
        else if (L1.nout != L2.nin)
            rc = qs_skip_add(&s->rep->skipped, &s->rep->nskipped, g->nodes[i].name, g->nodes[l2].name,
                             "%lld output channels feed %lld input channels", (long long)L1.nout,
                             (long long)L2.nin);
        else if (!L1.bias_ok)
            rc = qs_skip_add(&s->rep->skipped, &s->rep->nskipped, g->nodes[i].name, g->nodes[l2].name,
                             "the bias of '%s' is not one value per output channel", g->nodes[i].name);
        else {
            pair *p = realloc(s->pairs, (s->npairs + 1) * sizeof *p);
            if (!p)
                return qs_error(e, QS_ENOMEM, "cle: out of memory");
            s->pairs = p;
            s->pairs[s->npairs++] = (pair){ .l1 = i, .l2 = l2, .act = act, .kind = kind, .hi = hi,
                                            .rec = find_record(g, bn, nbn, &L1) };
            continue;
        }
        if (rc < 0)
            return qs_error(e, QS_ENOMEM, "cle: out of memory");
    }
    return 0;
}

/* --- report ------------------------------------------------------------------------------------------ */

static int layer_stats(const qs_graph *g, const layer *L, float *lo, float *hi)
{
    float *w = wdata(g, L);
    for (int64_t m = 0; m < L->nout; m++) {
        float a = INFINITY, b = -INFINITY;
        FOR_OUT(L, w, m, { a = fminf(a, *p); b = fmaxf(b, *p); });
        lo[m] = a;
        hi[m] = b;
    }
    return 0;
}

static int report_layers(const qs_graph *g, qs_cle_report *r, int after)
{
    if (!after) {
        for (int i = 0; i < g->nnodes; i++) {
            layer L;
            if (!parse_layer(g, i, &L))
                continue;
            qs_cle_layer *t = realloc(r->layers, (r->nlayers + 1) * sizeof *t);
            if (!t)
                return -1;
            r->layers = t;
            t += r->nlayers++;
            memset(t, 0, sizeof *t);
            t->name = xstrdup(g->nodes[i].name);
            t->op = xstrdup(g->nodes[i].op);
            t->nch = L.nout;
            t->depthwise = L.fam == FAM_CONV && L.group > 1 && L.group == L.nin;
            size_t sz = (L.nout + 1) * sizeof(float);
            t->min_before = malloc(sz);
            t->max_before = malloc(sz);
            t->min_after = malloc(sz);
            t->max_after = malloc(sz);
            if (!t->name || !t->op || !t->min_before || !t->max_before || !t->min_after || !t->max_after)
                return -1;
            layer_stats(g, &L, t->min_before, t->max_before);
        }
        return 0;
    }
    /* node ids are stable through the pass: layers are found again by name */
    for (int k = 0; k < r->nlayers; k++) {
        qs_cle_layer *t = &r->layers[k];
        for (int i = 0; i < g->nnodes; i++) {
            layer L;
            if (strcmp(g->nodes[i].name, t->name) || !parse_layer(g, i, &L) || L.nout != t->nch)
                continue;
            layer_stats(g, &L, t->min_after, t->max_after);
            break;
        }
    }
    return 0;
}

static char *act_name(const qs_graph *g, const pair *p)
{
    char buf[64];
    if (p->act < 0)
        return xstrdup("none");
    if (p->kind == ACT_BOUNDED) {
        snprintf(buf, sizeof buf, "Clip(0,%g)->Relu", p->hi);
        return xstrdup(buf);
    }
    if (qs_node_is_op(&g->nodes[p->act], "Clip"))
        return xstrdup("Clip(0,inf)");
    return xstrdup(g->nodes[p->act].op);
}

/* The channel-wise ops a pair spans, by op type, comma-separated ("" when none). */
static char *via_ops(const qs_graph *g, const pair *p)
{
    char buf[256] = "";
    int v = g->nodes[p->l1].out[0];
    for (int c, hops = 0; hops < 16 && (c = sole_reader(g, v)) >= 0 && c != p->l2; hops++, v = g->nodes[c].out[0])
        if (c != p->act)
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", buf[0] ? "," : "", g->nodes[c].op);
    return xstrdup(buf);
}

void qs_cle_report_free(qs_cle_report *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->npairs; i++) {
        free(r->pairs[i].layer1);
        free(r->pairs[i].layer2);
        free(r->pairs[i].act);
        free(r->pairs[i].act_op);
        free(r->pairs[i].via);
        free(r->pairs[i].scale);
        free(r->pairs[i].absorbed);
    }
    free(r->pairs);
    for (int i = 0; i < r->nrelu6; i++)
        free(r->relu6[i]);
    free(r->relu6);
    qs_skips_free(r->skipped, r->nskipped);
    for (int i = 0; i < r->nlayers; i++) {
        qs_cle_layer *t = &r->layers[i];
        free(t->name);
        free(t->op);
        free(t->min_before);
        free(t->max_before);
        free(t->min_after);
        free(t->max_after);
    }
    free(r->layers);
    free(r);
}

static json_t *jfloats(const float *v, int64_t n)
{
    json_t *a = json_array();
    for (int64_t i = 0; v && i < n; i++)
        json_array_append_new(a, isfinite(v[i]) ? json_real(v[i]) : json_null());
    return a;
}

static json_t *jdoubles(const double *v, int64_t n)
{
    if (!v)
        return json_null();
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++)
        json_array_append_new(a, isfinite(v[i]) ? json_real(v[i]) : json_null());
    return a;
}

json_t *qs_cle_report_json(const qs_cle_report *r)
{
    if (!r)
        return json_null();
    json_t *pairs = json_array(), *relu6 = json_array(), *skipped = qs_skips_json(r->skipped, r->nskipped, "layer1", "layer2"), *layers = json_array();
    for (int i = 0; i < r->npairs; i++) {
        const qs_cle_pair *p = &r->pairs[i];
        json_array_append_new(pairs, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:o}", "layer1", p->layer1,
                                               "layer2", p->layer2, "activation", p->act_op, "activation_node",
                                               p->act, "through", p->via, "channels", (json_int_t)p->nch, "scale", jdoubles(p->scale, p->nch),
                                               "absorbed", jdoubles(p->absorbed, p->nch)));
    }
    for (int i = 0; i < r->nrelu6; i++)
        json_array_append_new(relu6, json_string(r->relu6[i]));
    for (int i = 0; i < r->nlayers; i++) {
        const qs_cle_layer *t = &r->layers[i];
        json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:b, s:{s:o, s:o}, s:{s:o, s:o}}", "name", t->name,
                                                "op", t->op, "channels", (json_int_t)t->nch, "depthwise", t->depthwise,
                                                "before", "min", jfloats(t->min_before, t->nch), "max",
                                                jfloats(t->max_before, t->nch), "after", "min",
                                                jfloats(t->min_after, t->nch), "max", jfloats(t->max_after, t->nch)));
    }
    return json_pack("{s:o, s:i, s:b, s:f, s:i, s:s, s:o, s:o, s:o}", "pairs", pairs, "iterations", r->iterations,
                     "converged", r->converged, "max_change", isfinite(r->max_change) ? r->max_change : -1.0,
                     "absorbed_pairs", r->nabsorbed, "absorb_bound", r->absorb_data ? "bn+data" : "bn",
                     "relu6_replaced", relu6, "skipped", skipped, "layers", layers);
}

/* --- the pass ----------------------------------------------------------------------------------------- */

/* Copy-on-write of what the pass will change, ReLU6 replacement, and the report's pair entries. */
static int prepare_pairs(cle_state *s, qs_err *e)
{
    qs_graph *g = s->g;
    qs_cle_report *r = s->rep;
    if (!(r->pairs = calloc(s->npairs + 1, sizeof *r->pairs)))
        return qs_error(e, QS_ENOMEM, "cle: out of memory");
    for (int k = 0; k < s->npairs; k++) {
        pair *p = &s->pairs[k];
        layer L1;
        parse_layer(g, p->l1, &L1);
        qs_cle_pair *rp = &r->pairs[r->npairs++];
        rp->layer1 = xstrdup(g->nodes[p->l1].name);
        rp->layer2 = xstrdup(g->nodes[p->l2].name);
        rp->act = xstrdup(p->act >= 0 ? g->nodes[p->act].name : "");
        rp->act_op = act_name(g, p);
        rp->via = via_ops(g, p);
        rp->nch = L1.nout;
        rp->scale = malloc((L1.nout + 1) * sizeof *rp->scale);
        if (!rp->layer1 || !rp->layer2 || !rp->act || !rp->act_op || !rp->via || !rp->scale)
            return qs_error(e, QS_ENOMEM, "cle: out of memory");
        for (int64_t i = 0; i < L1.nout; i++)
            rp->scale[i] = 1;
        if (own_init(g, p->l1, 1) < 0 || (L1.bv >= 0 && own_init(g, p->l1, 2) < 0) || own_init(g, p->l2, 1) < 0)
            return qs_error(e, QS_ENOMEM, "cle: out of memory");
        if (p->kind == ACT_BOUNDED) {
            char **v = realloc(r->relu6, (r->nrelu6 + 1) * sizeof *v);
            if (!v)
                return qs_error(e, QS_ENOMEM, "cle: out of memory");
            r->relu6 = v;
            if (!(v[r->nrelu6] = xstrdup(g->nodes[p->act].name)) || clip_to_relu(g, p->act, s->drop) < 0)
                return qs_error(e, QS_ENOMEM, "cle: out of memory");
            r->nrelu6++;
        }
    }
    return 0;
}

/* One sweep over every pair; returns the largest |s_i − 1|. */
static double sweep(cle_state *s)
{
    qs_graph *g = s->g;
    double dev = 0;
    qs_graph_weights_changed(g);
    for (int k = 0; k < s->npairs; k++) {
        pair *pr = &s->pairs[k];
        layer L1, L2;
        parse_layer(g, pr->l1, &L1);
        parse_layer(g, pr->l2, &L2);
        float *w1 = wdata(g, &L1), *b1 = bdata(g, &L1), *w2 = wdata(g, &L2);
        double *total = s->rep->pairs[k].scale;
        for (int64_t i = 0; i < L1.nout; i++) {
            double r1 = out_absmax(w1, &L1, i), r2 = in_absmax(w2, &L2, i);
            double si = r1 > 0 && r2 > 0 ? sqrt(r1 * r2) / r2 : 1;
            if (!isfinite(si) || !(si > 0))
                si = 1;
            dev = fmax(dev, fabs(si - 1));
            if (si == 1)
                continue;
            FOR_OUT(&L1, w1, i, *p = (float)(*p / si));
            if (b1)
                b1[i] = (float)(b1[i] / si);
            FOR_IN(&L2, w2, i, *p = (float)(*p * si));
            if (pr->rec) {   /* layer 1's output channel i, and with it its BN statistics, shrank by s_i */
                pr->rec->gamma[i] = (float)(pr->rec->gamma[i] / si);
                pr->rec->beta[i] = (float)(pr->rec->beta[i] / si);
            }
            total[i] *= si;
        }
    }
    return dev;
}

/* A Conv that reads padded zeros: explicit pads, or auto_pad SAME_* (VALID and NOTSET without
 * pads read none). */
static int zero_pads(const qs_node *n)
{
    const char *ap = qs_node_string(n, "auto_pad", "NOTSET");
    if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER"))
        return 1;
    const int64_t *p;
    int np = qs_node_ints(n, "pads", &p);
    for (int i = 0; i < np; i++)
        if (p[i] != 0)
            return 1;
    return 0;
}

/* High-bias absorption on pair k; 1 when something moved. */
static int absorbable(cle_state *s, int k)
{
    const pair *pr = &s->pairs[k];
    return pr->rec && (pr->kind == ACT_RELU || pr->kind == ACT_BOUNDED);
}

static int absorb(cle_state *s, int k, const float *data_min, qs_err *e)
{
    qs_graph *g = s->g;
    pair *pr = &s->pairs[k];
    qs_cle_pair *rp = &s->rep->pairs[k];
    if (!absorbable(s, k))
        return 0;
    layer L1, L2;
    parse_layer(g, pr->l1, &L1);
    parse_layer(g, pr->l2, &L2);
    if (L1.bv < 0)
        return 0;
    if (!L2.has_bias_slot || !L2.bias_ok || L2.beta == 0) {
        int rc = qs_skip_add(&s->rep->skipped, &s->rep->nskipped, g->nodes[pr->l1].name, g->nodes[pr->l2].name,
                             "no absorption: '%s' has no per-channel bias to absorb into",
                             g->nodes[pr->l2].name);
        return rc < 0 ? qs_error(e, QS_ENOMEM, "cle: out of memory") : 0;
    }
    if (L2.fam == FAM_CONV && zero_pads(&g->nodes[pr->l2])) {
        int rc = qs_skip_add(&s->rep->skipped, &s->rep->nskipped, g->nodes[pr->l1].name, g->nodes[pr->l2].name,
                             "no absorption: '%s' zero-pads its input, so the shifted activation would "
                             "change the FP32 output at its borders", g->nodes[pr->l2].name);
        return rc < 0 ? qs_error(e, QS_ENOMEM, "cle: out of memory") : 0;
    }
    double *c = calloc(L1.nout + 1, sizeof *c), *delta = calloc(L2.nout + 1, sizeof *delta);
    if (!c || !delta) {
        free(c);
        free(delta);
        return qs_error(e, QS_ENOMEM, "cle: out of memory");
    }
    int any = 0;
    for (int64_t i = 0; i < L1.nout; i++) {
        c[i] = fmax(0, (double)pr->rec->beta[i] - s->cfg->absorb_sigmas * fabs((double)pr->rec->gamma[i]));
        if (data_min)
            c[i] = fmin(c[i], fmax(0, (double)data_min[i]));
        any |= c[i] > 0;
    }
    if (!any) {
        free(c);
        free(delta);
        return 0;
    }
    /* Δb2[m] = Σ_k Σ_taps W2[m, k, t] · c_k (the Gemm's alpha/beta keep their places) */
    const float *w2 = wdata(g, &L2);
    for (int64_t kk = 0; kk < L2.nin; kk++) {
        if (c[kk] == 0)
            continue;
        if (L2.fam == FAM_CONV) {
            int64_t cg = L2.nin / L2.group, mg = L2.nout / L2.group, grp = kk / cg, j = kk % cg;
            for (int64_t m = grp * mg; m < (grp + 1) * mg; m++)
                for (int64_t t = 0; t < L2.taps; t++)
                    delta[m] += w2[(m * cg + j) * L2.taps + t] * c[kk];
        } else {
            for (int64_t m = 0; m < L2.nout; m++)
                delta[m] += w2[L2.wt ? m * L2.nin + kk : kk * L2.nout + m] * c[kk] * L2.alpha / L2.beta;
        }
    }
    int bv = L2.bv >= 0 ? own_init(g, pr->l2, 2) : add_bias(g, pr->l2, L2.nout);
    if (bv < 0) {
        free(c);
        free(delta);
        return qs_error(e, QS_ENOMEM, "cle: out of memory");
    }
    float *b2 = qs_f32(g->values[bv].init), *b1 = bdata(g, &L1);
    for (int64_t m = 0; m < L2.nout; m++)
        b2[m] = (float)(b2[m] + delta[m]);
    for (int64_t i = 0; i < L1.nout; i++) {
        b1[i] = (float)(b1[i] - c[i]);
        pr->rec->beta[i] = (float)(pr->rec->beta[i] - c[i]);
    }
    qs_graph_weights_changed(g);
    free(delta);
    rp->absorbed = c;
    return 1;
}

static int absorb_all(cle_state *s, qs_err *e)
{
    float **mins = NULL;
    int rc = 0, *nodes = NULL;
    if (s->cfg->preact_minima && s->npairs) {
        if (!(nodes = malloc(s->npairs * sizeof *nodes)))
            return qs_error(e, QS_ENOMEM, "cle: out of memory");
        for (int k = 0; k < s->npairs; k++)
            nodes[k] = absorbable(s, k) ? s->pairs[k].l1 : -1;
        rc = s->cfg->preact_minima(s->cfg->preact_ud, s->g, nodes, s->npairs, &mins, e);
        free(nodes);
        if (rc < 0)
            return rc;
        s->rep->absorb_data = 1;
    }
    for (int k = 0; k < s->npairs && rc >= 0; k++) {
        int a = absorb(s, k, mins ? mins[k] : NULL, e);
        if (a < 0)
            rc = a;
        else
            s->rep->nabsorbed += a;
    }
    for (int k = 0; mins && k < s->npairs; k++)
        free(mins[k]);
    free(mins);
    return rc;
}

int qs_cle(qs_graph *g, qs_bn_record *bn, int nbn, const qs_cle_config *cfg, qs_cle_report **report, qs_err *e)
{
    qs_cle_config dflt = qs_cle_config_default();
    if (!cfg)
        cfg = &dflt;
    if (report)
        *report = NULL;
    if (cfg->max_iter < 1 || !(cfg->tol >= 0) || !(cfg->absorb_sigmas >= 0))
        return qs_error(e, QS_EINVAL, "cle: max_iter must be ≥ 1, tol and absorb_sigmas ≥ 0");
    cle_state s = { .g = g, .cfg = cfg };
    s.rep = calloc(1, sizeof *s.rep);
    s.drop = calloc(g->nnodes + 1, 1);
    if (!s.rep || !s.drop) {
        free(s.rep);
        free(s.drop);
        return qs_error(e, QS_ENOMEM, "cle: out of memory");
    }
    int rc = 0;
    if (report_layers(g, s.rep, 0) < 0) {
        rc = qs_error(e, QS_ENOMEM, "cle: out of memory");
        goto out;
    }
    if ((rc = find_pairs(&s, bn, nbn, e)) < 0)
        goto out;
    if (cfg->equalize || cfg->absorb) {
        if ((rc = prepare_pairs(&s, e)) < 0)
            goto out;
    } else {
        s.npairs = 0;
    }
    s.rep->converged = 1;
    if (cfg->equalize && s.npairs) {
        s.rep->converged = 0;
        for (int it = 0; it < cfg->max_iter; it++) {
            s.rep->max_change = sweep(&s);
            s.rep->iterations = it + 1;
            if (s.rep->max_change <= cfg->tol) {
                s.rep->converged = 1;
                break;
            }
        }
    }
    if (cfg->absorb && (rc = absorb_all(&s, e)) < 0)
        goto out;
    if (report_layers(g, s.rep, 1) < 0)
        rc = qs_error(e, QS_ENOMEM, "cle: out of memory");
out:
    for (int i = 0; i < g->nnodes; i++)
        if (s.drop[i]) {
            qs_graph_remove_nodes(g, s.drop);
            break;
        }
    free(s.drop);
    free(s.pairs);
    if (rc == 0 && report)
        *report = s.rep;
    else
        qs_cle_report_free(s.rep);
    return rc;
}
