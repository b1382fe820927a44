/* QuantSim: the FP32 graph with FakeQuant nodes placed by the rules in quantsim.h.
 *
 * Placement runs in passes over a sorted deep copy of the model:
 *  0. weights the model computes from constants (Constant nodes, Reshape/Transpose of an
 *     initializer) are folded into initializers, so their layers get weight quantizers;
 *  1. types: the copy is planned once at batch 1, so every value's dtype and rank are known
 *     (only float values that depend on a model input get activation quantizers);
 *  2. groups: a node joins the group of its producer when it is the only reader of that
 *     producer's output and fits the pattern Conv/ConvTranspose/Gemm/MatMul → BatchNormalization
 *     (or a constant bias Add) → activation; a residual Add followed by an activation is one group
 *     too (AIMET's Add+Relu supergroup: hardware fuses the add and the clamp). An excluded name
 *     anywhere in a group keeps the whole group in FP32;
 *  3. quantizers, in node order: model inputs, then per group the weight, the bias and the output
 *     quantizer at the group's end. A per-value "grid source" (the quantizer whose grid the value
 *     carries, through pass-through ops such as MaxPool or Reshape) gives a bias its input scale.
 * Readers are rewired to the FakeQuant outputs only at the end, so passes 2–3 see the original
 * wiring. A quantized graph output keeps its name (the FakeQuant writes it and the layer writes
 * "<name>_fp"), so the simulation and its export have the FP32 model's input and output names.
 *
 * Weight quantizers start from min-max ranges of the weights (no data needed) and biases follow
 * them; activation quantizers start uninitialized (scale 1, zero point 0) until range setting
 * fills them in. */
#include "quant/quantsim.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "ops/ops.h"
#include "quant/constweights.h"
#include "quant/overrides.h"

qs_qsim_config qs_qsim_config_default(void)
{
    return (qs_qsim_config){ .wbits = 8, .abits = 8, .w_symmetric = 1, .a_symmetric = 0, .per_channel = 1,
                             .pow2 = 0, .quantize_bias = 1 };
}

/* --- op classes ---------------------------------------------------------------------------- */

static const char *const LAYER_OPS[] = { "Conv", "ConvTranspose", "Gemm", "MatMul", NULL };
static const char *const ACT_OPS[] = { "Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid",
                                       "Tanh", "Elu", "Selu", "Celu", "PRelu", "Softplus", "Gelu", "Mish",
                                       "ThresholdedRelu", NULL };
/* max, min and data movement: every output value is one of the input's values */
static const char *const GRID_OPS[] = { "MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze",
                                        "Unsqueeze", "Identity", "Dropout", "Slice", "Split", "Gather", "Tile",
                                        "Expand", "DepthToSpace", "SpaceToDepth", "ReduceMax", "ReduceMin", NULL };
static const char *const NONNEG_OPS[] = { "Relu", "Sigmoid", "HardSigmoid", "Softmax", "Softplus", NULL };

static int in_list(const char *op, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(op, *list))
            return 1;
    return 0;
}

/* n is one of the default-domain ops in list */
static int is_op_in(const qs_node *n, const char *const *list)
{
    return (!n->domain || !n->domain[0]) && in_list(n->op, list);
}

int qs_quantsim_keeps_grid(const qs_graph *g, const qs_node *n)
{
    if (is_op_in(n, GRID_OPS))
        return 1;
    if (qs_node_is_op(n, "Resize") || qs_node_is_op(n, "Upsample"))
        /* nearest copies input values, and ONNX Runtime runs it on the integers with the input's
         * parameters; linear and cubic interpolate between grid points (and tf_crop_and_resize
         * may write extrapolation_value), so those get an output quantizer of their own */
        return !strcmp(qs_node_string(n, "mode", "nearest"), "nearest") &&
               strcmp(qs_node_string(n, "coordinate_transformation_mode", ""), "tf_crop_and_resize");
    if (qs_node_is_op(n, "Pad")) {
        /* edge/reflect copy values; a constant pad keeps the grid only when it pads with 0,
         * which every grid represents exactly */
        if (strcmp(qs_node_string(n, "mode", "constant"), "constant"))
            return 1;
        if (n->nin > 2 && n->in[2] >= 0) {
            const qs_tensor *t = g->values[n->in[2]].init;
            return t && qs_numel(t) == 1 && qs_get_f64(t, 0) == 0;
        }
        return qs_node_float(n, "value", 0) == 0;
    }
    return 0;
}

/* Output known to be ≥ 0: a symmetric activation grid can then be unsigned (AIMET's
 * "unsigned symmetric"), which doubles its resolution. */
static int nonneg_output(const qs_graph *g, const qs_node *n)
{
    if (is_op_in(n, NONNEG_OPS))
        return 1;
    if (qs_node_is_op(n, "Clip")) {
        if (n->nin > 1 && n->in[1] >= 0) {
            const qs_tensor *t = g->values[n->in[1]].init;
            return t && qs_numel(t) == 1 && qs_get_f64(t, 0) >= 0;
        }
        return qs_node_attr(n, "min") && qs_node_float(n, "min", -1) >= 0;
    }
    return 0;
}

/* int32, with the top bound lowered to 2^31 − 128, the largest float below 2^31: float32
 * arithmetic (FakeQuant's clamp) and the exported int32 then clamp at the same value. */
#define BIAS_QMAX 2147483520.f

static qs_grid bias_grid(void)
{
    qs_grid g = { .bits = 32, .is_signed = 1, .qmin = -2147483648.f, .qmax = BIAS_QMAX };
    return g;
}

/* --- the quantizer table ------------------------------------------------------------------- */

static int new_named(qs_graph *g, const char *name, const char *suffix)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s%s", name, suffix);
    return qs_graph_new_value(g, buf);
}

/* Adds a FakeQuant reading value `in` and writing `out` (a new "<name>_qdq" value when out < 0),
 * with float32 scale and zero-point initializers of nch entries (a scalar when per tensor).
 * Returns the quantizer's index. */
static int add_quantizer(qs_quantsim *sim, const char *name, const char *layer, qs_qkind kind, int in, int out,
                         int axis, int nch, qs_grid grid, int symmetric, qs_err *e)
{
    qs_graph *g = sim->g;
    qs_quantizer *tab = realloc(sim->q, (sim->nq + 1) * sizeof *tab);
    if (!tab)
        return qs_error(e, QS_ENOMEM, "out of memory adding quantizer '%s'", name);
    sim->q = tab;
    if (out < 0) {
        if ((out = new_named(g, name, "_qdq")) < 0)
            return qs_error(e, QS_ENOMEM, "out of memory");
        qs_graph_copy_decl(g, out, in);
    }
    int sv = new_named(g, name, "_scale"), zv = new_named(g, name, "_zero_point");
    int64_t n64 = nch;
    qs_tensor *st = qs_tensor_new(QS_F32, axis >= 0 ? 1 : 0, &n64), *zt = qs_tensor_new(QS_F32, axis >= 0 ? 1 : 0, &n64);
    if (sv < 0 || zv < 0 || !st || !zt) {
        qs_tensor_free(st);
        qs_tensor_free(zt);
        return qs_error(e, QS_ENOMEM, "out of memory");
    }
    for (int c = 0; c < nch; c++)
        qs_f32(st)[c] = 1.f;
    qs_graph_set_init_steal(g, sv, st);
    qs_graph_set_init_steal(g, zv, zt);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s_quant", name);
    int ins[3] = { in, sv, zv };
    int node = qs_graph_add_node(g, "FakeQuant", buf, 3, ins, 1, &out);
    if (node < 0)
        return qs_error(e, QS_ENOMEM, "out of memory");
    qs_node *n = &g->nodes[node];
    int64_t qmin = (int64_t)grid.qmin, qmax = (int64_t)grid.qmax;   /* exact: see bias_grid */
    if (qs_node_set_domain(n, "quantd") < 0 || qs_node_set_int(n, "qmin", qmin) < 0 ||
        qs_node_set_int(n, "qmax", qmax) < 0 || qs_node_set_int(n, "bypass", 0) < 0 ||
        (axis >= 0 && qs_node_set_int(n, "axis", axis) < 0))
        return qs_error(e, QS_ENOMEM, "out of memory");
    qs_quantizer *q = &sim->q[sim->nq];
    memset(q, 0, sizeof *q);
    q->name = strdup(name);
    q->layer = strdup(layer ? layer : "");
    if (!q->name || !q->layer) {
        free(q->name);
        free(q->layer);
        return qs_error(e, QS_ENOMEM, "out of memory");
    }
    q->kind = kind;
    q->value = in;
    q->out = out;
    q->scale = sv;
    q->zero = zv;
    q->axis = axis;
    q->nch = nch;
    q->grid = grid;
    q->symmetric = symmetric;
    q->bias_of = q->bias_in = -1;
    q->sqnr_db = NAN;
    return sim->nq++;
}

/* --- placement ------------------------------------------------------------------------------ */

enum { K_OTHER, K_LAYER, K_BN, K_BIAS_ADD, K_ADD, K_ACT };

typedef struct placer {
    qs_quantsim *sim;
    qs_graph *g;
    int nv0, nn0;     /* values and nodes of the FP32 graph; later ids are ours */
    char *dyn;        /* per value: depends on a model input */
    int *ncons;       /* per value: number of nodes reading it */
    int *reader;      /* per value: the last node reading it (the only one when ncons == 1) */
    int *gstart;      /* per node: first node of its group */
    int *gend;        /* per group start: last node of the group */
    char *gexcl;      /* per group start: excluded */
    char *matched;    /* per exclude name: names a node */
    int *src;         /* per value: quantizer whose grid it carries, -1 */
    int *rewire;      /* per value: FakeQuant output its readers should read, -1 */
    int *qof;         /* per value: quantizer of this weight or bias, -1 */
} placer;

static int node_kind(const qs_node *n)
{
    if (is_op_in(n, LAYER_OPS)) return K_LAYER;
    if (qs_node_is_op(n, "BatchNormalization")) return K_BN;
    if (is_op_in(n, ACT_OPS)) return K_ACT;
    if (qs_node_is_op(n, "Add")) return K_ADD;
    return K_OTHER;
}

/* The node that joins the group whose tail is node t (at stage st), or -1. */
static int follower(const placer *p, int t, int st, int *cst)
{
    const qs_graph *g = p->g;
    const qs_node *n = &g->nodes[t];
    if (n->nout < 1 || n->out[0] < 0)
        return -1;
    int v = n->out[0];
    if (p->ncons[v] != 1 || qs_graph_is_output(g, v))
        return -1;
    int c = p->reader[v];
    const qs_node *cn = &g->nodes[c];
    int k = node_kind(cn);
    if (st == K_LAYER && k == K_BN && cn->in[0] == v) {
        *cst = K_BN;
        return c;
    }
    if (st == K_LAYER && k == K_ADD && cn->nin == 2) {
        int other = cn->in[0] == v ? cn->in[1] : cn->in[0];
        if (other >= 0 && other != v && !p->dyn[other] && g->values[other].init &&
            g->values[other].init->dtype == QS_F32) {
            *cst = K_BIAS_ADD;
            return c;
        }
    }
    if ((st == K_LAYER || st == K_BN || st == K_BIAS_ADD || st == K_ADD) && k == K_ACT && cn->nin >= 1 &&
        cn->in[0] == v) {
        *cst = K_ACT;
        return c;
    }
    return -1;
}

/* Excluded by name (config.exclude) or by op type (an op override's skip). */
static int excluded_node(placer *p, const qs_node *n)
{
    const qs_qsim_config *cfg = &p->sim->cfg;
    int hit = 0;
    for (int k = 0; k < cfg->nexclude; k++)
        if (n->name && cfg->exclude[k] && !strcmp(n->name, cfg->exclude[k]))
            hit = p->matched[k] = 1;
    const qs_qoverride *o = (!n->domain || !n->domain[0]) ? qs_overrides_find(cfg->overrides, 1, n->op) : NULL;
    return hit || (o && o->skip == 1);
}

/* The scalar constant v holds (initializer or Constant node); 0 when it is not one. */
static int const_scalar(const qs_graph *g, int v, double *x)
{
    const qs_tensor *t = qs_graph_const_of(g, v);
    if (!t || qs_numel(t) != 1 || (t->dtype != QS_F32 && t->dtype != QS_F64))
        return 0;
    *x = qs_get_f64(t, 0);
    return 1;
}

/* Node n is the default-domain op `op` with v as one input and a scalar constant near c as the
 * other; *other gets the index of v's slot's partner. */
static int op_with_const(const qs_graph *g, const qs_node *n, const char *op, int v, double c)
{
    double x;
    if (!qs_node_is_op(n, op) || (n->domain && n->domain[0]) || n->nin != 2 || n->nout != 1)
        return 0;
    int k = n->in[0] == v ? 1 : n->in[1] == v ? 0 : -1;
    if (k < 0 || (!strcmp(op, "Div") && k != 1))
        return 0;
    return const_scalar(g, n->in[k], &x) && fabs(x - c) <= 1e-3 * fabs(c);
}

/* The only reader of value v among the placer's nodes after node `after`, or -1. */
static int sole_reader(const placer *p, int v)
{
    return v >= 0 && p->ncons[v] == 1 && !qs_graph_is_output(p->g, v) ? p->reader[v] : -1;
}

/* GELU as torch exports it below opset 20, x·0.5·(1 + erf(x/√2)): x is read by Div(x, √2) (or
 * Mul(x, 1/√2)) → Erf → Add(·, 1) → Mul(x, ·) → Mul(·, 0.5), and by nothing else. Fills nodes[5]
 * (the last is the pattern's output) and returns 1 when the readers of x form it. */
static int erf_gelu(const placer *p, int x, int nodes[5])
{
    const qs_graph *g = p->g;
    if (x < 0 || p->ncons[x] != 2 || qs_graph_is_output(g, x))
        return 0;
    int first = -1;
    for (int i = 0; i < p->nn0 && first < 0; i++)
        if (op_with_const(g, &g->nodes[i], "Div", x, M_SQRT2) || op_with_const(g, &g->nodes[i], "Mul", x, M_SQRT1_2))
            first = i;
    if (first < 0)
        return 0;
    int erf = sole_reader(p, g->nodes[first].out[0]);
    if (erf < 0 || !qs_node_is_op(&g->nodes[erf], "Erf") || g->nodes[erf].nout != 1)
        return 0;
    int add = sole_reader(p, g->nodes[erf].out[0]);
    if (add < 0 || !op_with_const(g, &g->nodes[add], "Add", g->nodes[erf].out[0], 1.0))
        return 0;
    int mul = sole_reader(p, g->nodes[add].out[0]);
    const qs_node *m = mul >= 0 ? &g->nodes[mul] : NULL;
    if (!m || !qs_node_is_op(m, "Mul") || m->nin != 2 || m->nout != 1 ||
        !((m->in[0] == x && m->in[1] == g->nodes[add].out[0]) || (m->in[1] == x && m->in[0] == g->nodes[add].out[0])))
        return 0;
    int half = sole_reader(p, m->out[0]);
    if (half < 0 || !op_with_const(g, &g->nodes[half], "Mul", m->out[0], 0.5))
        return 0;
    nodes[0] = first, nodes[1] = erf, nodes[2] = add, nodes[3] = mul, nodes[4] = half;
    return 1;
}

/* HardSwish as Paddle (and torch before opset 14) export it, x·clip(x + 3, 0, 6)/6: x is read by
 * Add(x, 3) → Clip(·, 0, 6) → Mul(x, ·) → Div(·, 6) (or Mul(·, 1/6)), and by nothing else. Like the
 * GELU above it is one activation, quantized at its output only: a grid after each of its four
 * nodes costs the MobileNetV3-style networks several dB per block. Fills nodes[4]. */
static int split_hardswish(const placer *p, int x, int nodes[4])
{
    const qs_graph *g = p->g;
    if (x < 0 || p->ncons[x] != 2 || qs_graph_is_output(g, x))
        return 0;
    int add = -1;
    for (int i = 0; i < p->nn0 && add < 0; i++)
        if (op_with_const(g, &g->nodes[i], "Add", x, 3.0))
            add = i;
    int clip = add >= 0 ? sole_reader(p, g->nodes[add].out[0]) : -1;
    const qs_node *c = clip >= 0 ? &g->nodes[clip] : NULL;
    if (!c || !qs_node_is_op(c, "Clip") || c->nout != 1 || c->in[0] != g->nodes[add].out[0])
        return 0;
    double lo, hi;
    if (c->nin >= 3) {   /* opset 11+: bounds are inputs */
        if (!const_scalar(g, c->in[1], &lo) || !const_scalar(g, c->in[2], &hi))
            return 0;
    } else {
        lo = qs_node_float(c, "min", -FLT_MAX), hi = qs_node_float(c, "max", FLT_MAX);
    }
    if (lo != 0 || fabs(hi - 6) > 1e-3)
        return 0;
    int mul = sole_reader(p, c->out[0]);
    const qs_node *m = mul >= 0 ? &g->nodes[mul] : NULL;
    if (!m || !qs_node_is_op(m, "Mul") || m->nin != 2 || m->nout != 1 ||
        !((m->in[0] == x && m->in[1] == c->out[0]) || (m->in[1] == x && m->in[0] == c->out[0])))
        return 0;
    int div = sole_reader(p, m->out[0]);
    if (div < 0 || !(op_with_const(g, &g->nodes[div], "Div", m->out[0], 6.0) ||
                     op_with_const(g, &g->nodes[div], "Mul", m->out[0], 1.0 / 6)))
        return 0;
    nodes[0] = add, nodes[1] = clip, nodes[2] = mul, nodes[3] = div;
    return 1;
}

/* A multi-node activation read from x (erf_gelu, split_hardswish): its node count, 0 if none. */
static int act_pattern(const placer *p, int x, int nodes[5])
{
    return erf_gelu(p, x, nodes) ? 5 : split_hardswish(p, x, nodes) ? 4 : 0;
}

static int node_dyn(const placer *p, int i)
{
    const qs_node *n = &p->g->nodes[i];
    for (int j = 0; j < n->nout; j++)
        if (n->out[j] >= 0 && p->dyn[n->out[j]])
            return 1;
    return 0;
}

static void build_groups(placer *p)
{
    qs_graph *g = p->g;
    for (int i = 0; i < p->nn0; i++)
        p->gstart[i] = -1;
    for (int i = 0; i < p->nn0; i++) {
        if (p->gstart[i] >= 0)
            continue;
        p->gstart[i] = i;
        int t = i, st = node_kind(&g->nodes[i]), cst, c, pat[5], np = 0;
        int excl = excluded_node(p, &g->nodes[i]);
        if (node_dyn(p, i)) {
            while ((c = follower(p, t, st, &cst)) >= 0 && p->gstart[c] < 0) {
                p->gstart[c] = i;
                excl |= excluded_node(p, &g->nodes[c]);
                t = c;
                st = cst;
            }
            /* a GELU or split HardSwish pattern is one activation: it ends the group of the layer
             * feeding it as Relu would, or (read from anything else, or starting here) forms a
             * group of its own */
            int x = g->nodes[t].nout > 0 ? g->nodes[t].out[0] : -1;
            int joins = st == K_LAYER || st == K_BN || st == K_BIAS_ADD || st == K_ADD;
            int head = g->nodes[i].nin > 0 && (np = act_pattern(p, g->nodes[i].in[0], pat)) && pat[0] == i;
            if (head || (joins && (np = act_pattern(p, x, pat)) && p->gstart[pat[0]] < 0)) {
                for (int k = head ? 1 : 0; k < np; k++) {
                    p->gstart[pat[k]] = i;
                    excl |= excluded_node(p, &g->nodes[pat[k]]);
                }
                t = pat[np - 1];
            }
        }
        p->gend[i] = t;
        p->gexcl[i] = (char)excl;
    }
}

static int all_readers_excluded(const placer *p, int v)
{
    const qs_graph *g = p->g;
    for (int i = 0; i < p->nn0; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            if (g->nodes[i].in[j] == v && !p->gexcl[p->gstart[i]])
                return 0;
    return 1;
}

/* The override for tensor v (a tensor entry, else the entry of its producer's op type when
 * by_op), or NULL. */
static const qs_qoverride *override_of(const placer *p, int v, int by_op_node)
{
    const qs_qoverrides *ov = p->sim->cfg.overrides;
    const qs_qoverride *o = qs_overrides_find(ov, 0, p->g->values[v].name);
    if (!o && by_op_node >= 0) {
        const qs_node *n = &p->g->nodes[by_op_node];
        if (!n->domain || !n->domain[0])
            o = qs_overrides_find(ov, 1, n->op);
    }
    return o;
}

/* An activation (or model input) quantizer on value v; 0 when an override skips it. */
static int add_act(placer *p, int v, qs_qkind kind, const char *layer, int nonneg, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    qs_graph *g = p->g;
    const qs_qsim_config *cfg = &sim->cfg;
    const qs_qoverride *o = override_of(p, v, kind == QS_Q_INPUT ? -1 : g->values[v].producer);
    if (o && o->skip == 1)
        return 0;
    int bits = o && o->bits > 0 ? o->bits : cfg->abits;
    int sym = o && o->symmetric >= 0 ? o->symmetric : cfg->a_symmetric;
    /* asymmetric activations use the unsigned grid; symmetric ones the signed grid, or the
     * unsigned one when the output cannot be negative */
    qs_grid grid = qs_grid_make(bits, sym && !nonneg);
    char *name = strdup(g->values[v].name);
    if (!name)
        return qs_error(e, QS_ENOMEM, "out of memory");
    int qi;
    if (qs_graph_is_output(g, v) && g->values[v].producer >= 0) {
        /* keep the output's name: the producer now writes "<name>_fp" */
        int prod = g->values[v].producer, f = new_named(g, name, "_fp");
        if (f < 0) {
            free(name);
            return qs_error(e, QS_ENOMEM, "out of memory");
        }
        qs_graph_copy_decl(g, f, v);
        for (int j = 0; j < g->nodes[prod].nout; j++)
            if (g->nodes[prod].out[j] == v)
                g->nodes[prod].out[j] = f;
        g->values[f].producer = prod;
        qi = add_quantizer(sim, name, layer, kind, f, v, -1, 1, grid, sym, e);
    } else {
        qi = add_quantizer(sim, name, layer, kind, v, -1, -1, 1, grid, sym, e);
        if (qi >= 0)
            p->rewire[v] = sim->q[qi].out;
    }
    free(name);
    if (qi >= 0)
        p->src[v] = qi;
    return qi;
}

static int is_float_init(const qs_graph *g, int v)
{
    return v >= 0 && g->values[v].init && g->values[v].init->dtype == QS_F32;
}

/* Weight (and bias) quantizers of layer node i. */
static int add_weights(placer *p, int i, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    qs_graph *g = p->g;
    const qs_qsim_config *cfg = &sim->cfg;
    const qs_node *n = &g->nodes[i];
    int slot = 1, axis = -1;
    if (qs_node_is_op(n, "Conv")) {
        axis = 0;
    } else if (qs_node_is_op(n, "ConvTranspose")) {
        axis = 1;
    } else if (qs_node_is_op(n, "Gemm")) {
        axis = qs_node_int(n, "transB", 0) ? 0 : 1;
    } else if (qs_node_is_op(n, "Gather")) {
        /* an embedding table: per channel on its last (feature) axis, as a MatMul's B [K, N] */
        if (n->nin < 2 || !is_float_init(g, n->in[0]))
            return 0;
        slot = 0;
        axis = g->values[n->in[0]].init->ndim >= 2 ? g->values[n->in[0]].init->ndim - 1 : -1;
    } else if (qs_node_is_op(n, "MatMul")) {
        if (n->nin > 1 && is_float_init(g, n->in[1])) {
            int r = g->values[n->in[1]].init->ndim;
            axis = r >= 2 ? r - 1 : -1;
        } else if (n->nin > 0 && is_float_init(g, n->in[0])) {
            int r = g->values[n->in[0]].init->ndim;
            slot = 0;
            axis = r >= 2 ? r - 2 : -1;
        } else {
            return 0;   /* two activations: their producers quantize them */
        }
    }
    if (n->nin <= slot || !is_float_init(g, n->in[slot]))
        return 0;
    int w = n->in[slot];
    const qs_tensor *W = g->values[w].init;
    /* overrides: the weight's own entry, else its node's op type's (weight_bits, …) */
    const qs_qoverride *to = qs_overrides_find(cfg->overrides, 0, g->values[w].name);
    const qs_qoverride *oo = qs_overrides_find(cfg->overrides, 1, n->op);
    if (to && to->skip == 1)
        return 0;
    int wbits = to && to->bits > 0 ? to->bits : oo && oo->wbits > 0 ? oo->wbits : cfg->wbits;
    int wsym = to && to->symmetric >= 0 ? to->symmetric : oo && oo->wsymmetric >= 0 ? oo->wsymmetric : cfg->w_symmetric;
    int perch = to && to->per_channel >= 0 ? to->per_channel : oo && oo->per_channel >= 0 ? oo->per_channel
                                                                                           : cfg->per_channel;
    if (!perch || axis >= W->ndim || (axis >= 0 && W->shape[axis] <= 1))
        axis = -1;
    int wq = w < p->nv0 ? p->qof[w] : -1;
    if (wq < 0) {
        char *name = strdup(g->values[w].name), *layer = strdup(n->name);
        int nch = axis >= 0 ? (int)W->shape[axis] : 1;
        /* reduce_range narrows the config's width only (quant/target.h decides it for that one) */
        wq = name && layer ? add_quantizer(sim, name, layer, QS_Q_WEIGHT, w, -1, axis, nch,
                                           qs_grid_make(wbits - (cfg->reduce_range && wbits == cfg->wbits && wbits > 2), 1),
                                           wsym, e)
                           : qs_error(e, QS_ENOMEM, "out of memory");
        free(name);
        free(layer);
        if (wq < 0)
            return wq;
        p->qof[w] = wq;
    }
    g->nodes[i].in[slot] = sim->q[wq].out;
    n = &g->nodes[i];

    /* bias: int32 at s_in·s_w, only where both scales exist and the layer adds it as is */
    if (!cfg->quantize_bias || n->nin < 3 || !is_float_init(g, n->in[2]) || n->in[2] >= p->nv0)
        return 0;
    if (qs_node_is_op(n, "MatMul") || (qs_node_is_op(n, "Gemm") && (qs_node_float(n, "alpha", 1) != 1 ||
                                                      qs_node_float(n, "beta", 1) != 1)))
        return 0;
    int b = n->in[2], a = n->in[0];
    const qs_tensor *B = g->values[b].init;
    const qs_quantizer *W_q = &sim->q[wq];
    if (B->ndim != 1 || (W_q->nch > 1 && B->shape[0] != W_q->nch) || p->qof[b] >= 0)
        return 0;
    if (a < 0 || a >= p->nv0 || p->src[a] < 0 || sim->q[p->src[a]].nch != 1)
        return 0;   /* the input is not quantized (excluded producer): no s_in */
    char *name = strdup(g->values[b].name), *layer = strdup(n->name);
    int nch = W_q->nch;
    int bq = name && layer ? add_quantizer(sim, name, layer, QS_Q_BIAS, b, -1, nch > 1 ? 0 : -1, nch, bias_grid(),
                                           1, e)
                           : qs_error(e, QS_ENOMEM, "out of memory");
    free(name);
    free(layer);
    if (bq < 0)
        return bq;
    sim->q[bq].bias_of = wq;
    sim->q[bq].bias_in = p->src[a];
    p->qof[b] = bq;
    g->nodes[i].in[2] = sim->q[bq].out;
    return 0;
}

static int place(placer *p, qs_err *e)
{
    qs_quantsim *sim = p->sim;
    qs_graph *g = p->g;
    int rc;

    /* which values depend on a model input (shape computations do not) */
    for (int k = 0; k < g->ninputs; k++)
        if (!g->values[g->inputs[k]].init)
            p->dyn[g->inputs[k]] = 1;
    for (int i = 0; i < p->nn0; i++) {
        const qs_node *n = &g->nodes[i];
        int d = 0;
        for (int j = 0; j < n->nin; j++)
            if (n->in[j] >= 0) {
                int dup = 0;   /* Add(x, x) reads x once */
                for (int k = 0; k < j; k++)
                    dup |= n->in[k] == n->in[j];
                d |= p->dyn[n->in[j]];
                if (!dup) {
                    p->ncons[n->in[j]]++;
                    p->reader[n->in[j]] = i;
                }
            }
        if (qs_node_is_op(n, "Shape") || qs_node_is_op(n, "Size"))
            d = 0;
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0)
                p->dyn[n->out[j]] = (char)d;
    }
    build_groups(p);
    for (int k = 0; k < sim->cfg.nexclude; k++)
        if (!p->matched[k])
            return qs_error(e, QS_EINVAL, "exclude: the model has no node named '%s'",
                            sim->cfg.exclude[k] ? sim->cfg.exclude[k] : "(null)");

    /* model inputs */
    for (int k = 0; k < g->ninputs; k++) {
        int v = g->inputs[k];
        if (g->values[v].init || g->values[v].dtype != QS_F32 || !p->ncons[v] || qs_graph_is_output(g, v) ||
            all_readers_excluded(p, v))
            continue;
        if ((rc = add_act(p, v, QS_Q_INPUT, g->values[v].name, 0, e)) < 0)
            return rc;
    }

    /* groups, in node order */
    for (int i = 0; i < p->nn0; i++) {
        if (!node_dyn(p, i))
            continue;
        int st = p->gstart[i], excl = p->gexcl[st];
        if (!excl && (node_kind(&g->nodes[i]) == K_LAYER || qs_node_is_op(&g->nodes[i], "Gather")) &&
            (rc = add_weights(p, i, e)) < 0)
            return rc;
        /* a MatMul of two activations (attention) reads both on a grid (by index: adding
         * quantizers grows the node array) */
        if (!excl && qs_node_is_op(&g->nodes[i], "MatMul") && g->nodes[i].nin == 2)
            for (int j = 0; j < 2; j++) {
                int a = g->nodes[i].in[j];
                if (a < 0 || a >= p->nv0 || !p->dyn[a] || p->src[a] >= 0 || g->values[a].dtype != QS_F32 ||
                    g->values[a].init)
                    continue;
                char *layer = strdup(g->nodes[i].name);
                rc = layer ? add_act(p, a, QS_Q_ACT, layer, 0, e) : qs_error(e, QS_ENOMEM, "out of memory");
                free(layer);
                if (rc < 0)
                    return rc;
            }
        if (p->gend[st] != i)
            continue;   /* inside a group: quantized at its end */
        int keeps = qs_quantsim_keeps_grid(g, &g->nodes[i]);
        for (int j = 0; j < g->nodes[i].nout; j++) {
            int v = g->nodes[i].out[j], a = g->nodes[i].nin ? g->nodes[i].in[0] : -1;
            if (v < 0 || !p->dyn[v] || g->values[v].dtype != QS_F32)
                continue;
            if (excl)
                continue;
            if (keeps) {
                p->src[v] = a >= 0 && a < p->nv0 ? p->src[a] : -1;
                continue;
            }
            char *layer = strdup(g->nodes[st].name);
            if (!layer)
                return qs_error(e, QS_ENOMEM, "out of memory");
            rc = add_act(p, v, QS_Q_ACT, layer, nonneg_output(g, &g->nodes[i]), e);
            free(layer);
            if (rc < 0)
                return rc;
        }
    }

    /* readers of quantized values read the FakeQuant output (our own nodes come after nn0) */
    for (int i = 0; i < p->nn0; i++)
        for (int j = 0; j < g->nodes[i].nin; j++) {
            int v = g->nodes[i].in[j];
            if (v >= 0 && v < p->nv0 && p->rewire[v] >= 0)
                g->nodes[i].in[j] = p->rewire[v];
        }
    return 0;
}

/* Plans the graph once at batch 1 to learn every value's dtype and rank (ONNX files often
 * declare neither for intermediate values). */
static int infer_types(qs_graph *g, qs_err *e)
{
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, e);
    if (!x)
        return e ? e->code : QS_EINVAL;
    int rc = qs_exec_plan(x, 1, e);
    for (int v = 0; rc == 0 && v < g->nvalues; v++) {
        const qs_tensor *t = qs_exec_value(x, v);
        qs_value *val = &g->values[v];
        if (!t)
            continue;
        if (val->dtype == QS_UNDEFINED)
            val->dtype = t->dtype;
        if (val->ndim < 0) {
            val->ndim = t->ndim;
            for (int d = 0; d < t->ndim; d++)
                val->shape[d] = -1;
        }
    }
    qs_exec_free(x);
    return rc;
}

static void weight_minmax(qs_quantsim *sim, int i)
{
    qs_quantizer *q = &sim->q[i];
    const qs_tensor *W = sim->g->values[q->value].init;
    int64_t outer = 1, inner = 1, ch = q->nch;
    if (q->axis >= 0) {
        for (int d = 0; d < q->axis; d++) outer *= W->shape[d];
        for (int d = q->axis + 1; d < W->ndim; d++) inner *= W->shape[d];
    } else {
        inner = qs_numel(W);
    }
    float *s = qs_quantsim_scales(sim, i), *z = qs_quantsim_zeros(sim, i);
    for (int64_t c = 0; c < ch; c++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t o = 0; o < outer; o++)
            for (int64_t k = 0; k < inner; k++) {
                float v = qs_f32(W)[(o * ch + c) * inner + k];
                if (v < lo) lo = v;
                if (v > hi) hi = v;
            }
        int32_t zp;
        qs_qparams_from_range(q->grid, lo, hi, q->symmetric, sim->cfg.pow2, &s[c], &zp);
        z[c] = (float)zp;
    }
    q->initialized = 1;
}

qs_quantsim *qs_quantsim_new(const qs_graph *fp32, const qs_qsim_config *cfg, qs_err *e)
{
    qs_qsim_config dflt = qs_qsim_config_default();
    if (!cfg)
        cfg = &dflt;
    if (cfg->wbits < 2 || cfg->wbits > 16) {
        qs_error(e, QS_EINVAL, "weights.bits = %d: must be between 2 and 16", cfg->wbits);
        return NULL;
    }
    if (cfg->abits < 2 || cfg->abits > 16) {
        qs_error(e, QS_EINVAL, "activations.bits = %d: must be between 2 and 16", cfg->abits);
        return NULL;
    }
    qs_quantsim *sim = calloc(1, sizeof *sim);
    placer p = { 0 };
    if (!sim)
        goto oom;
    sim->cfg = *cfg;
    sim->cfg.exclude = NULL;
    sim->cfg.nexclude = 0;
    if (cfg->nexclude > 0) {
        /* a private copy: the caller's strings need not outlive the simulation */
        if (!(sim->cfg.exclude = calloc(cfg->nexclude, sizeof *sim->cfg.exclude)))
            goto oom;
        for (int k = 0; k < cfg->nexclude; k++, sim->cfg.nexclude++)
            if (!(sim->cfg.exclude[k] = strdup(cfg->exclude[k] ? cfg->exclude[k] : "")))
                goto oom;
    }
    if (!(sim->g = qs_graph_clone(fp32)))
        goto oom;
    qs_graph *g = sim->g;
    if (qs_graph_toposort(g, e) < 0 || qs_fold_const_weights(g, e) < 0 || infer_types(g, e) < 0) {
        qs_error_prefix(e, "building the quantization simulation: ");
        goto fail;
    }
    if (qs_overrides_check(cfg->overrides, g, e) < 0)
        goto fail;
    p.sim = sim;
    p.g = g;
    p.nv0 = g->nvalues;
    p.nn0 = g->nnodes;
    p.dyn = calloc(p.nv0 + 1, 1);
    p.ncons = calloc(p.nv0 + 1, sizeof *p.ncons);
    p.reader = calloc(p.nv0 + 1, sizeof *p.reader);
    p.gstart = calloc(p.nn0 + 1, sizeof *p.gstart);
    p.gend = calloc(p.nn0 + 1, sizeof *p.gend);
    p.gexcl = calloc(p.nn0 + 1, 1);
    p.matched = calloc(cfg->nexclude + 1, 1);
    p.src = malloc((p.nv0 + 1) * sizeof *p.src);
    p.rewire = malloc((p.nv0 + 1) * sizeof *p.rewire);
    p.qof = malloc((p.nv0 + 1) * sizeof *p.qof);
    if (!p.dyn || !p.ncons || !p.reader || !p.gstart || !p.gend || !p.gexcl || !p.matched || !p.src ||
        !p.rewire || !p.qof)
        goto oom;
    for (int v = 0; v < p.nv0; v++)
        p.src[v] = p.rewire[v] = p.qof[v] = -1;
    if (place(&p, e) < 0)
        goto fail;
    sim->cfg.overrides = NULL;   /* borrowed for the placement only */
    if (qs_graph_set_opset(g, "quantd", 1) < 0)
        goto oom;
    if (qs_graph_toposort(g, e) < 0)
        goto fail;
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_WEIGHT)
            weight_minmax(sim, i);
    qs_quantsim_update_bias(sim);
    goto out;
oom:
    qs_error(e, QS_ENOMEM, "out of memory building the quantization simulation");
fail:
    qs_quantsim_free(sim);
    sim = NULL;
out:
    free(p.dyn);
    free(p.ncons);
    free(p.reader);
    free(p.gstart);
    free(p.gend);
    free(p.gexcl);
    free(p.matched);
    free(p.src);
    free(p.rewire);
    free(p.qof);
    return sim;
}

void qs_quantsim_free(qs_quantsim *sim)
{
    if (!sim)
        return;
    for (int i = 0; i < sim->nq; i++) {
        free(sim->q[i].name);
        free(sim->q[i].layer);
    }
    for (int i = 0; sim->fp32_w && i < sim->nq; i++)
        qs_tensor_free(sim->fp32_w[i]);
    free(sim->fp32_w);
    free(sim->q);
    for (int k = 0; k < sim->cfg.nexclude; k++)
        free(sim->cfg.exclude[k]);
    free(sim->cfg.exclude);
    qs_graph_free(sim->g);
    free(sim);
}

int qs_quantsim_keep_fp32_weights(qs_quantsim *sim, qs_err *e)
{
    if (!sim->fp32_w && !(sim->fp32_w = calloc(sim->nq + 1, sizeof *sim->fp32_w)))
        return qs_error(e, QS_ENOMEM, "out of memory keeping the FP32 weights");
    for (int i = 0; i < sim->nq; i++) {
        const qs_tensor *w = sim->g->values[sim->q[i].value].init;
        if (sim->q[i].kind != QS_Q_WEIGHT || !w || w->dtype != QS_F32 || sim->fp32_w[i])
            continue;
        if (!(sim->fp32_w[i] = qs_tensor_copy(w)))
            return qs_error(e, QS_ENOMEM, "out of memory keeping the FP32 weights");
    }
    return 0;
}

const qs_tensor *qs_quantsim_fp32_weight(const qs_quantsim *sim, int i)
{
    QS_ASSERT(i >= 0 && i < sim->nq);
    if (sim->fp32_w && sim->fp32_w[i])
        return sim->fp32_w[i];
    return sim->g->values[sim->q[i].value].init;
}

/* --- parameters ----------------------------------------------------------------------------- */

float *qs_quantsim_scales(qs_quantsim *sim, int i)
{
    QS_ASSERT(i >= 0 && i < sim->nq);
    return qs_f32(sim->g->values[sim->q[i].scale].init);
}

float *qs_quantsim_zeros(qs_quantsim *sim, int i)
{
    QS_ASSERT(i >= 0 && i < sim->nq);
    return qs_f32(sim->g->values[sim->q[i].zero].init);
}

/* Bias scale s_in·s_w[c]. A channel whose bias is huge in units of that scale (weights nearly
 * zero next to a real bias: a dead channel after BN folding) would lose its bias to int32
 * clamping; there, as ONNX Runtime's quantizer does, the per-channel weight scale is raised until
 * the bias fits, with a factor 2 of headroom. (16-bit weights and activations legitimately put
 * biases at 10^8–10^9 steps, so the limit must be int32's, not a smaller one.) */
#define BIAS_MAX_STEPS 1073741824.f
static void update_bias_one(qs_quantsim *sim, int b)
{
    qs_quantizer *q = &sim->q[b];
    const qs_quantizer *w = &sim->q[q->bias_of], *a = &sim->q[q->bias_in];
    const qs_tensor *B = sim->g->values[q->value].init;
    float sa = qs_quantsim_scales(sim, q->bias_in)[0];
    float *sw = qs_quantsim_scales(sim, q->bias_of);
    float *s = qs_quantsim_scales(sim, b), *z = qs_quantsim_zeros(sim, b);
    for (int c = 0; c < q->nch; c++) {
        if (w->nch > 1 && w->initialized && a->initialized && sa > 0) {
            float need = fabsf(qs_f32(B)[c]) / BIAS_MAX_STEPS;
            if (sa * sw[c] < need && isfinite(need))
                sw[c] = need / sa * 1.0001f;   /* margin for the rounding of sa·sw */
        }
        s[c] = sa * sw[w->nch > 1 ? c : 0];
        z[c] = 0;
    }
    q->initialized = w->initialized && a->initialized;
}

void qs_quantsim_update_bias(qs_quantsim *sim)
{
    for (int i = 0; i < sim->nq; i++)
        if (sim->q[i].kind == QS_Q_BIAS)
            update_bias_one(sim, i);
}

void qs_quantsim_set(qs_quantsim *sim, int i, int ch, float scale, float zero_point)
{
    QS_ASSERT(i >= 0 && i < sim->nq && ch < sim->q[i].nch);
    float *s = qs_quantsim_scales(sim, i), *z = qs_quantsim_zeros(sim, i);
    for (int c = ch < 0 ? 0 : ch; c < (ch < 0 ? sim->q[i].nch : ch + 1); c++) {
        s[c] = scale;
        z[c] = zero_point;
    }
    sim->q[i].initialized = 1;
    /* biases at s_in·s_w follow their weight and input */
    if (sim->q[i].kind != QS_Q_BIAS)
        for (int b = 0; b < sim->nq; b++)
            if (sim->q[b].kind == QS_Q_BIAS && (sim->q[b].bias_of == i || sim->q[b].bias_in == i))
                update_bias_one(sim, b);
}

void qs_quantsim_set_range(qs_quantsim *sim, int i, int ch, float lo, float hi)
{
    QS_ASSERT(i >= 0 && i < sim->nq);
    float s;
    int32_t z;
    qs_qparams_from_range(sim->q[i].grid, lo, hi, sim->q[i].symmetric, sim->cfg.pow2, &s, &z);
    qs_quantsim_set(sim, i, ch, s, (float)z);
}

/* --- bypass --------------------------------------------------------------------------------- */

static qs_node *fq_node(const qs_quantsim *sim, int i)
{
    QS_ASSERT(i >= 0 && i < sim->nq);
    int node = sim->g->values[sim->q[i].out].producer;
    QS_ASSERT(node >= 0);
    return &sim->g->nodes[node];
}

void qs_quantsim_bypass(qs_quantsim *sim, int i, int bypass)
{
    qs_node_set_int(fq_node(sim, i), "bypass", bypass ? 1 : 0);
}

int qs_quantsim_bypassed(const qs_quantsim *sim, int i)
{
    return qs_node_int(fq_node(sim, i), "bypass", 0) != 0;
}

int qs_quantsim_set_bits(qs_quantsim *sim, int i, int bits, qs_err *e)
{
    qs_quantizer *q = &sim->q[i];
    qs_grid g = qs_grid_make(bits, q->grid.is_signed);
    qs_node *n = fq_node(sim, i);
    /* the FakeQuant reads its grid from qmin/qmax, export from q->grid: both change */
    if (qs_node_set_int(n, "qmin", (int64_t)g.qmin) < 0 || qs_node_set_int(n, "qmax", (int64_t)g.qmax) < 0)
        return qs_error(e, QS_ENOMEM, "out of memory");
    q->grid = g;
    return 0;
}

void qs_quantsim_bypass_kind(qs_quantsim *sim, int kind, int bypass)
{
    for (int i = 0; i < sim->nq; i++)
        if (kind < 0 || (int)sim->q[i].kind == kind)
            qs_quantsim_bypass(sim, i, bypass);
}

int qs_quantsim_find(const qs_quantsim *sim, const char *name)
{
    for (int i = 0; i < sim->nq; i++)
        if (!strcmp(sim->q[i].name, name))
            return i;
    return -1;
}
