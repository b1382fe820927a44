/* Export of a QuantSim: a QDQ ONNX graph in ONNX Runtime's conventions, and AIMET encodings.
 *
 * The QDQ graph is the simulation's graph with each FakeQuant replaced by the standard ops that
 * compute the same float32 arithmetic (FakeQuant's division, round-half-even and clamp are
 * QuantizeLinear's; its (q − z)·s is DequantizeLinear's), so a runtime executing the export gives
 * bit for bit what the simulation gave:
 *  - weight → integer initializer (int8 storage up to 8 bits — a 4-bit grid is stored as int8
 *    values within [-8, 7], a reduce_range 8-bit one within [-64, 63] —, int16 at opset 21 above 8 bits) + DequantizeLinear (axis when per
 *    channel);
 *  - bias → int32 initializer round(b / (s_in·s_w)) + DequantizeLinear at scale s_in·s_w, zero 0;
 *  - activation / model input → QuantizeLinear + DequantizeLinear (uint8/int8; uint4/int4 and
 *    uint16/int16 at opset 21). Other activation widths have no ONNX type: refused;
 *  - after a pass-through op (MaxPool, Reshape, …) whose input carries an activation grid, the
 *    same Q/DQ pair is repeated: re-quantizing a grid value is exact (|(q−z)·s / s − (q−z)| is far
 *    below 1/2), and ONNX Runtime needs DQ → op → Q around such ops to keep them in integers.
 *    Not when the op cannot take that integer type (MaxPool has no 4- or 16-bit kind): ORT would
 *    drop the pair and hand the op a type it refuses;
 *  - where ORT would rewrite a dequantized activation's reader onto a type it has no kernel for
 *    (moving Q/DQ through MaxPool, fusing 4-bit Q/DQ around Conv/Gemm/MatMul into QLinearConv and
 *    kin), a Clip to the grid's own range sits between the DequantizeLinear and the reader: exact,
 *    and it keeps ORT's hands off (guard_ort);
 *  - a bypassed quantizer is dropped (its readers read the float value).
 * The default-domain opset is raised to max(13, model's), or 21 when 4- or 16-bit types appear;
 * ops whose signature changed in between are converted (attributes that became inputs) or
 * refused with the reason. */
#include "quant/export.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- small graph edits ------------------------------------------------------------------------ */

static int is_default(const qs_node *n) { return !n->domain || !n->domain[0] || !strcmp(n->domain, "ai.onnx"); }

static int new_named(qs_graph *g, const char *name, const char *suffix)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s%s", name, suffix);
    return qs_graph_new_value(g, buf);
}

static void attr_remove(qs_node *n, const char *name)
{
    for (int i = 0; i < n->nattr; i++) {
        qs_attr *a = &n->attr[i];
        if (strcmp(a->name, name))
            continue;
        free(a->name);
        free(a->s);
        qs_tensor_free(a->t);
        free(a->floats);
        free(a->ints);
        for (int k = 0; a->strings && k < a->n; k++)
            free(a->strings[k]);
        free(a->strings);
        memmove(a, a + 1, (n->nattr - i - 1) * sizeof *a);
        n->nattr--;
        return;
    }
}

/* Sets input slot of node (growing the input list with omitted inputs). */
static int set_input(qs_graph *g, int node, int slot, int v)
{
    qs_node *n = &g->nodes[node];
    if (slot >= n->nin) {
        int *in = realloc(n->in, (slot + 2) * sizeof *in);
        if (!in)
            return QS_ENOMEM;
        for (int k = n->nin; k <= slot; k++)
            in[k] = -1;
        n->in = in;
        n->nin = slot + 1;
    }
    n->in[slot] = v;
    return 0;
}

/* A new initializer value named after base holding t (stolen); -1 on OOM. */
static int add_init(qs_graph *g, const char *base, qs_tensor *t)
{
    int v = t ? qs_graph_new_value(g, base) : -1;
    if (v < 0) {
        qs_tensor_free(t);
        return -1;
    }
    qs_graph_set_init_steal(g, v, t);
    return v;
}

static qs_tensor *i64_tensor(int n, const int64_t *v)
{
    int64_t shape = n;
    qs_tensor *t = qs_tensor_new(QS_I64, 1, &shape);
    if (t && n)
        memcpy(t->data, v, n * sizeof *v);
    return t;
}

static qs_tensor *f32_scalar(float v)
{
    qs_tensor *t = qs_tensor_new(QS_F32, 0, NULL);
    if (t)
        qs_f32(t)[0] = v;
    return t;
}

/* Moves ints attribute `attr` of node i to input slot (an int64 initializer). */
static int ints_attr_to_input(qs_graph *g, int i, const char *attr, int slot)
{
    const int64_t *v;
    int n = qs_node_ints(&g->nodes[i], attr, &v);
    if (!qs_node_attr(&g->nodes[i], attr))
        return 0;
    char base[600];
    snprintf(base, sizeof base, "%s_%s", g->nodes[i].name && *g->nodes[i].name ? g->nodes[i].name : g->nodes[i].op,
             attr);
    int val = add_init(g, base, i64_tensor(n, v));
    if (val < 0 || set_input(g, i, slot, val) < 0)
        return QS_ENOMEM;
    attr_remove(&g->nodes[i], attr);
    return 0;
}

static int float_attr_to_input(qs_graph *g, int i, const char *attr, int slot)
{
    if (!qs_node_attr(&g->nodes[i], attr))
        return 0;
    char base[600];
    snprintf(base, sizeof base, "%s_%s", g->nodes[i].name && *g->nodes[i].name ? g->nodes[i].name : g->nodes[i].op,
             attr);
    int val = add_init(g, base, f32_scalar(qs_node_float(&g->nodes[i], attr, 0)));
    if (val < 0 || set_input(g, i, slot, val) < 0)
        return QS_ENOMEM;
    attr_remove(&g->nodes[i], attr);
    return 0;
}

static int read_anywhere(const qs_graph *g, int v)
{
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            if (g->nodes[i].in[j] == v)
                return 1;
    return qs_graph_is_output(g, v);
}

/* --- opset upgrade ---------------------------------------------------------------------------- */

static int refuse(const qs_graph *g, int i, int64_t from, int64_t to, qs_err *e, const char *why)
{
    char b[300];
    return qs_error(e, QS_EUNSUPPORTED, "the QDQ export needs opset %lld but the model has opset %lld, and %s %s; "
                    "re-export the model at opset %lld or later", (long long)to, (long long)from,
                    qs_node_label(g, i, b, sizeof b), why, (long long)to);
}

/* Rewrites the default-domain ops whose signature changed between opsets `from` and `to`:
 * attributes that became inputs move to int64/float initializers; semantics that changed are
 * refused with the node named. */
static int upgrade_opset(qs_graph *g, int64_t from, int64_t to, qs_err *e)
{
    static const char *const reduce18[] = { "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                            "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", NULL };
    int rc = 0;
    if (from >= to)
        return 0;
    int nn = g->nnodes;
    for (int i = 0; i < nn && rc == 0; i++) {
        qs_node *n = &g->nodes[i];
        if (!is_default(n))
            continue;
        const char *op = n->op;
        if (!strcmp(op, "BatchNormalization")) {
            if (from < 9 && qs_node_attr(n, "spatial")) {
                if (qs_node_int(n, "spatial", 1) != 1)
                    return refuse(g, i, from, to, e, "uses spatial=0 (removed in opset 9)");
                attr_remove(n, "spatial");
            }
            if (from < 14 && to >= 14 && n->nout > 1) {
                for (int j = 1; j < n->nout; j++)
                    if (n->out[j] >= 0 && read_anywhere(g, n->out[j]))
                        return refuse(g, i, from, to, e, "uses its training outputs, which opset 14 changed");
                n->nout = 1;
            }
        } else if (!strcmp(op, "Upsample")) {
            return refuse(g, i, from, to, e, "is deprecated since opset 10 (use Resize)");
        } else if (!strcmp(op, "Resize") && from < 11) {
            return refuse(g, i, from, to, e, "has opset-10 semantics (opset 11 changed Resize's inputs and "
                          "coordinate transformation)");
        } else if (!strcmp(op, "Slice") && from < 10) {
            if ((rc = ints_attr_to_input(g, i, "starts", 1)) == 0 && (rc = ints_attr_to_input(g, i, "ends", 2)) == 0)
                rc = ints_attr_to_input(g, i, "axes", 3);
        } else if (!strcmp(op, "TopK") && from < 10) {
            int64_t k = qs_node_int(n, "k", 1);
            int v = add_init(g, "TopK_k", i64_tensor(1, &k));
            rc = v < 0 || set_input(g, i, 1, v) < 0 ? QS_ENOMEM : 0;
            attr_remove(&g->nodes[i], "k");
        } else if (!strcmp(op, "Clip") && from < 11) {
            if ((rc = float_attr_to_input(g, i, "min", 1)) == 0)
                rc = float_attr_to_input(g, i, "max", 2);
        } else if (!strcmp(op, "Pad") && from < 11) {
            if ((rc = ints_attr_to_input(g, i, "pads", 1)) == 0 && qs_node_attr(&g->nodes[i], "value"))
                rc = float_attr_to_input(g, i, "value", 2);
        } else if (!strcmp(op, "Dropout") && from < 12) {
            attr_remove(n, "ratio");   /* inference: identity whatever the ratio */
            attr_remove(n, "is_test");
        } else if ((!strcmp(op, "Squeeze") || !strcmp(op, "Unsqueeze") || !strcmp(op, "ReduceSum")) && from < 13) {
            rc = ints_attr_to_input(g, i, "axes", 1);
        } else if (!strcmp(op, "Split") && from < 13) {
            rc = ints_attr_to_input(g, i, "split", 1);
        } else if ((!strcmp(op, "Softmax") || !strcmp(op, "LogSoftmax") || !strcmp(op, "Hardmax")) && from < 13) {
            /* before 13: over the input flattened to 2-D at axis (default 1); from 13: along axis
             * (default -1). Equal when axis is the last dim. */
            int r = n->nin > 0 && n->in[0] >= 0 ? g->values[n->in[0]].ndim : -1;
            int64_t a = qs_node_int(n, "axis", 1);
            if (r >= 0 && a < 0)
                a += r;
            if (r < 0 || a != r - 1)
                return refuse(g, i, from, to, e, "normalises over all dims from its axis on, which opset 13 "
                              "changed to a single axis (only the last-axis case converts)");
            rc = qs_node_set_int(n, "axis", a);
        }
        if (rc < 0)
            break;
        n = &g->nodes[i];
        op = n->op;
        if (to >= 18 && from < 18) {
            if (is_default(n) && !strcmp(op, "Split") && (n->nin < 2 || n->in[1] < 0) &&
                !qs_node_attr(n, "num_outputs"))
                rc = qs_node_set_int(n, "num_outputs", n->nout);
            else if (is_default(n) && strcmp(op, "ReduceSum"))
                for (int k = 0; reduce18[k]; k++)
                    if (!strcmp(op, reduce18[k]))
                        rc = ints_attr_to_input(g, i, "axes", 1);
        }
        if (to >= 20 && from < 20 && (!strcmp(op, "GridSample") || !strcmp(op, "DFT")))
            return refuse(g, i, from, to, e, "changed its attributes in opset 20");
        if (to >= 21 && from < 21 && !strcmp(op, "GroupNormalization"))
            return refuse(g, i, from, to, e, "changed its scale and bias shapes in opset 21");
    }
    if (rc < 0)
        return qs_error(e, rc, "out of memory raising the opset");
    return 0;
}

/* --- QDQ export ------------------------------------------------------------------------------- */

/* The integer type a quantizer's values are stored in; 0 when ONNX has none. */
static qs_dtype storage_type(const qs_quantizer *q, int *need21)
{
    int b = q->grid.bits, s = q->grid.is_signed;
    if (q->kind == QS_Q_BIAS)
        return QS_I32;
    if (q->kind == QS_Q_WEIGHT) {
        if (b <= 8)
            return s ? QS_I8 : QS_U8;
        *need21 = 1;
        return b <= 16 ? (s ? QS_I16 : QS_U16) : QS_UNDEFINED;
    }
    if (b == 8)
        return s ? QS_I8 : QS_U8;
    if (b == 4 || b == 16) {
        *need21 = 1;
        return b == 4 ? (s ? QS_I4 : QS_U4) : (s ? QS_I16 : QS_U16);
    }
    return QS_UNDEFINED;
}

static const char *kind_name(qs_qkind k)
{
    switch (k) {
    case QS_Q_INPUT: return "model input";
    case QS_Q_ACT: return "activation";
    case QS_Q_WEIGHT: return "weight";
    case QS_Q_BIAS: return "bias";
    }
    return "?";
}

/* Checks that quantizer i can be written exactly; fills its storage type. */
static int check_quantizer(const qs_quantsim *sim, int i, qs_dtype *type, int *need21, qs_err *e)
{
    const qs_quantizer *q = &sim->q[i];
    const qs_graph *g = sim->g;
    const float *s = qs_f32(g->values[q->scale].init), *z = qs_f32(g->values[q->zero].init);
    if (!q->initialized)
        return qs_error(e, QS_EINVAL, "%s quantizer '%s' (layer '%s') has no range set: calibrate it or bypass it "
                        "before export", kind_name(q->kind), q->name, q->layer);
    *type = storage_type(q, need21);
    if (*type == QS_UNDEFINED)
        return qs_error(e, QS_EUNSUPPORTED, "%s quantizer '%s' has a %d-bit grid, which QuantizeLinear cannot "
                        "express exactly (activations: 8 bits, or 4 and 16 bits at opset 21)", kind_name(q->kind),
                        q->name, q->grid.bits);
    for (int c = 0; c < q->nch; c++) {
        if (!(s[c] > 0) || !isfinite(s[c]))
            return qs_error(e, QS_EINVAL, "%s quantizer '%s': scale[%d] = %g is not a positive number",
                            kind_name(q->kind), q->name, c, s[c]);
        if (z[c] != nearbyintf(z[c]) || z[c] < q->grid.qmin || z[c] > q->grid.qmax)
            return qs_error(e, QS_EINVAL, "%s quantizer '%s': zero point[%d] = %g is not an integer on its "
                            "[%g, %g] grid (round a learned offset before export)", kind_name(q->kind), q->name, c,
                            z[c], q->grid.qmin, q->grid.qmax);
    }
    return 0;
}

/* The zero-point initializer of q as integers of type t (same shape as the scale). */
static int int_zero_point(qs_graph *g, const qs_quantizer *q, qs_dtype t)
{
    const qs_tensor *zf = g->values[q->zero].init;
    qs_tensor *zi = qs_tensor_cast(zf, t);
    if (!zi)
        return QS_ENOMEM;
    qs_graph_set_init_steal(g, q->zero, zi);
    return 0;
}

/* Weight or bias: integer initializer + DequantizeLinear writing q->out. */
static int export_param(qs_graph *g, const qs_quantizer *q, qs_dtype t, qs_err *e)
{
    const qs_tensor *W = g->values[q->value].init;
    const float *s = qs_f32(g->values[q->scale].init), *zf = qs_f32(g->values[q->zero].init);
    int32_t *zi = malloc((q->nch + 1) * sizeof *zi);
    qs_tensor *wq = qs_tensor_new(t, W->ndim, W->shape);
    int rc = 0;
    if (!zi || !wq) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    for (int c = 0; c < q->nch; c++)
        zi[c] = (int32_t)zf[c];
    /* (a bias grid's bounds are int32 values exact in float, so the clamp below equals the
     * simulation's) */
    if ((rc = qs_quantize_tensor(W, wq, q->axis, s, zi, q->grid, e)) < 0)
        goto out;
    int wv = new_named(g, q->name, "_quantized");
    if (wv < 0 || int_zero_point(g, q, t) < 0) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto out;
    }
    qs_graph_set_init_steal(g, wv, wq);
    wq = NULL;
    char name[1024];
    snprintf(name, sizeof name, "%s_DequantizeLinear", q->name);
    int ins[3] = { wv, q->scale, q->zero };
    int node = qs_graph_add_node(g, "DequantizeLinear", name, 3, ins, 1, &q->out);
    if (node < 0 || (q->axis >= 0 && qs_node_set_int(&g->nodes[node], "axis", q->axis) < 0))
        rc = qs_error(e, QS_ENOMEM, "out of memory");
out:
    free(zi);
    qs_tensor_free(wq);
    return rc;
}

/* QuantizeLinear(x) → x_quantized → DequantizeLinear → out, with q's scale and zero point. */
static int add_qdq(qs_graph *g, const char *name, int x, int out, int scale, int zero, qs_dtype t)
{
    int xq = new_named(g, name, "_quantized");
    if (xq < 0)
        return QS_ENOMEM;
    qs_graph_copy_decl(g, xq, x);
    g->values[xq].dtype = t;
    char nm[1024];
    snprintf(nm, sizeof nm, "%s_QuantizeLinear", name);
    int qin[3] = { x, scale, zero }, dqin[3] = { xq, scale, zero };
    if (qs_graph_add_node(g, "QuantizeLinear", nm, 3, qin, 1, &xq) < 0)
        return QS_ENOMEM;
    snprintf(nm, sizeof nm, "%s_DequantizeLinear", name);
    if (qs_graph_add_node(g, "DequantizeLinear", nm, 3, dqin, 1, &out) < 0)
        return QS_ENOMEM;
    return 0;
}

/* Whether n is one of the default-domain ops in the NULL-terminated list */
static int op_in(const qs_node *n, const char *const *ops)
{
    for (int k = 0; is_default(n) && ops[k]; k++)
        if (!strcmp(n->op, ops[k]))
            return 1;
    return 0;
}

/* Whether pass-through op n's data input may be of integer type t in ONNX (opset 21 type
 * constraints). The Q/DQ pair repeated after such an op invites a runtime to drop DQ → op → Q and
 * run the op on the integers (ONNX Runtime does at its extended level): that must give a valid
 * graph. int4/uint4 are allowed only for the data-movement ops opset 21 extended; MaxPool and
 * ReduceMax/Min take 8-bit integers but no 16-bit ones; GlobalMaxPool and Dropout take floats
 * only. Every other pass-through op takes any tensor type. */
static int op_takes_type(const qs_node *n, qs_dtype t)
{
    static const char *const int4_ok[] = { "Identity", "Reshape", "Flatten", "Pad", "Squeeze", "Transpose",
                                           "Unsqueeze", NULL };
    static const char *const only8[] = { "MaxPool", "ReduceMax", "ReduceMin", NULL };
    static const char *const float_only[] = { "GlobalMaxPool", "Dropout", NULL };
    if (!is_default(n) || op_in(n, float_only))
        return 0;
    if (t == QS_I4 || t == QS_U4)
        return op_in(n, int4_ok);
    if (t == QS_I16 || t == QS_U16)
        return !op_in(n, only8);
    return 1;
}

/* ONNX Runtime (its QDQPropagationTransformer, extended level) moves a DequantizeLinear forward,
 * and a QuantizeLinear backward, through these ops, then drops DQ → op → Q pairs with equal
 * parameters so that the op runs on the integers, whatever their type: a uint4 MaxPool, which ONNX
 * does not define, and ORT then refuses the whole graph. */
static const char *const ort_propagates[] = { "MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice",
                                              NULL };

/* ORT fuses DQ → op → Q around these into integer kernels (QLinearConv, QGemm, QLinearMatMul, …)
 * that have no 4-bit kinds, again without checking, and refuses the graph. */
static const char *const ort_fuses[] = { "Conv", "ConvTranspose", "Gemm", "MatMul", NULL };

/* Where an activation's DequantizeLinear feeds an op that ORT would hand an integer type it
 * cannot take (see ort_propagates, ort_fuses), a Clip to the grid's own range goes in between:
 * exact (every dequantized value is one of the grid's, all within [(qmin − z)·s, (qmax − z)·s],
 * computed as DequantizeLinear computes them), and ORT neither propagates through it, nor
 * removes it, nor fuses across it, so the op runs on floats as in the simulation. One Clip per
 * dequantized value, shared by the readers that need it. Repeated pairs are never placed after
 * such an op (see the grid propagation in qs_export_qdq), so no QuantizeLinear further on pulls a
 * pair back across it. */
static int guard_ort(qs_graph *g, qs_err *e)
{
    int nn = g->nnodes, nv = g->nvalues;
    int *clip = malloc((nv + 1) * sizeof *clip);   /* dequantized value → its Clip'ed copy */
    if (!clip)
        return qs_error(e, QS_ENOMEM, "out of memory");
    for (int v = 0; v < nv; v++)
        clip[v] = -1;
    int rc = 0;
    for (int i = 0; i < nn && rc == 0; i++) {
        const qs_node *n = &g->nodes[i];
        int v = n->nin > 0 ? n->in[0] : -1, p = v >= 0 ? g->values[v].producer : -1;
        if (v < 0 || v >= nv || p < 0 || !is_default(&g->nodes[p]) || strcmp(g->nodes[p].op, "DequantizeLinear") ||
            g->nodes[p].nin < 3 || g->nodes[p].in[0] < 0 || g->nodes[p].in[2] < 0)
            continue;
        const qs_node *dq = &g->nodes[p];
        qs_dtype t = g->values[dq->in[0]].dtype;
        int four = t == QS_U4 || t == QS_I4;
        const qs_tensor *sc = g->values[dq->in[1]].init, *zp = g->values[dq->in[2]].init;
        if (!(op_in(n, ort_propagates) && !op_takes_type(n, t)) && !(op_in(n, ort_fuses) && four))
            continue;
        if (!sc || !zp || qs_numel(sc) != 1 || qs_numel(zp) != 1 || g->values[v].init)
            continue;   /* a weight's (per-channel) DQ: not an activation grid */
        if (clip[v] < 0) {
            int bits = four ? 4 : t == QS_U16 || t == QS_I16 ? 16 : 8;
            float rlo, rhi;
            qs_qparams_range(qs_grid_make(bits, t == QS_I4 || t == QS_I8 || t == QS_I16), qs_f32(sc)[0],
                             (float)qs_get_f64(zp, 0), &rlo, &rhi);
            char name[1024];
            snprintf(name, sizeof name, "%s_grid", g->values[v].name);
            int lo = add_init(g, "grid_min", f32_scalar(rlo));
            int hi = add_init(g, "grid_max", f32_scalar(rhi));
            int c = qs_graph_new_value(g, name);
            if (lo < 0 || hi < 0 || c < 0) {
                rc = qs_error(e, QS_ENOMEM, "out of memory");
                break;
            }
            qs_graph_copy_decl(g, c, v);
            int cin[3] = { v, lo, hi };
            snprintf(name, sizeof name, "%s_grid_Clip", g->values[v].name);
            if (qs_graph_add_node(g, "Clip", name, 3, cin, 1, &c) < 0) {
                rc = qs_error(e, QS_ENOMEM, "out of memory");
                break;
            }
            clip[v] = c;
        }
        g->nodes[i].in[0] = clip[v];   /* (by index: adding the Clip may have moved the nodes) */
    }
    free(clip);
    return rc;
}

static void replace_reads(qs_graph *g, int from, int to, int except_node)
{
    for (int i = 0; i < g->nnodes; i++)
        if (i != except_node)
            for (int j = 0; j < g->nodes[i].nin; j++)
                if (g->nodes[i].in[j] == from)
                    g->nodes[i].in[j] = to;
}

int qs_export_qdq(const qs_quantsim *sim, qs_graph **out, qs_err *e)
{
    *out = NULL;
    int nq = sim->nq, need21 = 0, rc = 0;
    qs_dtype *type = calloc(nq + 1, sizeof *type);
    char *bypassed = calloc(nq + 1, 1);
    qs_graph *g = NULL;
    int *fq = NULL, *srcq = NULL, *qof = NULL;
    char *drop = NULL;
    if (!type || !bypassed) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nq; i++) {
        bypassed[i] = (char)qs_quantsim_bypassed(sim, i);
        if (!bypassed[i] && (rc = check_quantizer(sim, i, &type[i], &need21, e)) < 0)
            goto done;
    }
    if (!(g = qs_graph_clone(sim->g))) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto done;
    }
    int64_t from = qs_graph_opset(g, ""), to = from > 13 ? from : 13;
    if (need21 && to < 21)
        to = 21;
    if (from > 21) {
        rc = qs_error(e, QS_EUNSUPPORTED, "the model's opset %lld is above 21, the highest the export writes",
                      (long long)from);
        goto done;
    }
    if ((rc = upgrade_opset(g, from, to, e)) < 0)
        goto done;

    /* which quantizer's grid each value carries, through pass-through ops (the values are the
     * clone's, the same ids as the simulation's) */
    int nv = g->nvalues, nn0 = g->nnodes;
    fq = calloc(nq + 1, sizeof *fq);
    srcq = malloc((nv + 1) * sizeof *srcq);
    qof = malloc((nv + 1) * sizeof *qof);
    if (!fq || !srcq || !qof) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto done;
    }
    for (int v = 0; v < nv; v++)
        srcq[v] = qof[v] = -1;
    for (int i = 0; i < nq; i++) {
        fq[i] = g->values[sim->q[i].out].producer;
        qof[sim->q[i].out] = i;
    }
    for (int i = 0; i < nn0; i++) {
        const qs_node *n = &g->nodes[i];
        if (n->nout == 1 && n->out[0] >= 0 && qof[n->out[0]] >= 0) {
            int q = qof[n->out[0]];
            if (!bypassed[q] && (sim->q[q].kind == QS_Q_ACT || sim->q[q].kind == QS_Q_INPUT))
                srcq[n->out[0]] = q;
        } else if (n->nin > 0 && n->in[0] >= 0 && srcq[n->in[0]] >= 0 && qs_quantsim_keeps_grid(g, n) &&
                   op_takes_type(n, type[srcq[n->in[0]]])) {
            /* (past an op that cannot take the integer type, no pair is repeated: see op_takes_type) */
            for (int j = 0; j < n->nout; j++)
                if (n->out[j] >= 0 && g->values[n->out[j]].dtype == QS_F32)
                    srcq[n->out[j]] = srcq[n->in[0]];
        }
    }

    /* FakeQuant → standard ops */
    for (int i = 0; i < nq && rc == 0; i++) {
        const qs_quantizer *q = &sim->q[i];
        if (bypassed[i]) {
            if (qs_graph_is_output(g, q->out)) {
                char nm[1024];
                snprintf(nm, sizeof nm, "%s_bypass", q->name);
                rc = qs_graph_add_node(g, "Identity", nm, 1, &q->value, 1, &q->out) < 0 ? QS_ENOMEM : 0;
            } else {
                replace_reads(g, q->out, q->value, fq[i]);
            }
        } else if (q->kind == QS_Q_WEIGHT || q->kind == QS_Q_BIAS) {
            rc = export_param(g, q, type[i], e);
        } else {
            rc = int_zero_point(g, q, type[i]);
            if (rc == 0)
                rc = add_qdq(g, q->name, q->value, q->out, q->scale, q->zero, type[i]);
        }
        if (rc < 0 && e && !e->msg[0])
            qs_error(e, rc, "out of memory");
    }
    if (rc < 0)
        goto done;

    /* the input's Q/DQ pair repeated after pass-through ops */
    for (int v = 0; v < nv && rc == 0; v++) {
        int q = srcq[v];
        if (q < 0 || qof[v] >= 0 || g->values[v].producer < 0 || qs_graph_is_output(g, v))
            continue;
        int readers = 0;
        for (int i = 0; i < g->nnodes && !readers; i++)
            for (int j = 0; j < g->nodes[i].nin; j++)
                readers |= g->nodes[i].in[j] == v;
        if (!readers)
            continue;
        int od = new_named(g, g->values[v].name, "_qdq");
        if (od < 0) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            break;
        }
        qs_graph_copy_decl(g, od, v);
        replace_reads(g, v, od, -1);
        char *name = strdup(g->values[v].name);
        rc = name ? add_qdq(g, name, v, od, sim->q[q].scale, sim->q[q].zero, type[q]) : QS_ENOMEM;
        free(name);
        if (rc < 0)
            qs_error(e, rc, "out of memory");
    }
    if (rc < 0)
        goto done;

    if ((rc = guard_ort(g, e)) < 0)
        goto done;

    /* drop the FakeQuant nodes and the float weights nothing reads any more */
    drop = calloc(g->nnodes + 1, 1);
    if (!drop) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nq; i++)
        drop[fq[i]] = 1;
    qs_graph_remove_nodes(g, drop);
    for (int v = 0; v < g->nvalues; v++) {
        int is_input = 0;   /* an input with a default keeps it */
        for (int k = 0; k < g->ninputs; k++)
            is_input |= g->inputs[k] == v;
        if (g->values[v].init && !is_input && !read_anywhere(g, v))
            qs_graph_set_init_steal(g, v, NULL);
    }
    for (int k = 0; k < g->nopsets; k++)
        if (g->opsets[k].domain && !strcmp(g->opsets[k].domain, "quantd")) {
            free(g->opsets[k].domain);
            memmove(&g->opsets[k], &g->opsets[k + 1], (g->nopsets - k - 1) * sizeof *g->opsets);
            g->nopsets--;
            k--;
        }
    int found = 0;
    for (int k = 0; k < g->nopsets; k++)
        if (!g->opsets[k].domain || !g->opsets[k].domain[0] || !strcmp(g->opsets[k].domain, "ai.onnx")) {
            g->opsets[k].version = to;
            found = 1;
        }
    if (!found && qs_graph_set_opset(g, "", to) < 0) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = qs_graph_toposort(g, e)) < 0) {
        qs_error_prefix(e, "QDQ export: ");
        goto done;
    }
    *out = g;
    g = NULL;
done:
    qs_graph_free(g);
    free(type);
    free(bypassed);
    free(fq);
    free(srcq);
    free(qof);
    free(drop);
    return rc;
}

/* --- AIMET encodings 1.0.0 -------------------------------------------------------------------- */

/* AIMET's 1.0.0 offsets are relative to the unsigned grid [0, 2^bw − 1]: a value is
 * (q_u + offset)·scale. Our signed grid's q = q_u + qmin, so offset = qmin − z: −z for unsigned
 * grids (offset = −zero point), −128 for symmetric int8 (as AIMET writes its own weights). */
static json_t *encoding(qs_quantsim *sim, int i)
{
    const qs_quantizer *q = &sim->q[i];
    const float *s = qs_quantsim_scales(sim, i), *z = qs_quantsim_zeros(sim, i);
    json_t *scale = json_array(), *offset = json_array();
    int zero_all = 1;
    for (int c = 0; c < q->nch; c++) {
        json_array_append_new(scale, json_real(s[c]));
        json_array_append_new(offset, json_real((double)q->grid.qmin - z[c]));
        zero_all &= z[c] == 0;
    }
    return json_pack("{s:s, s:s, s:s, s:i, s:b, s:o, s:o}", "name", q->name, "enc_type",
                     q->nch > 1 ? "PER_CHANNEL" : "PER_TENSOR", "dtype", "INT", "bw", q->grid.bits, "is_sym",
                     q->grid.is_signed && zero_all, "scale", scale, "offset", offset);
}

json_t *qs_export_encodings(const qs_quantsim *csim)
{
    /* reads only: the accessors take a non-const handle */
    qs_quantsim *sim = (qs_quantsim *)csim;
    json_t *acts = json_array(), *params = json_array(), *excl = json_array();
    for (int i = 0; i < sim->nq; i++) {
        const qs_quantizer *q = &sim->q[i];
        if (!q->initialized || qs_quantsim_bypassed(sim, i))
            continue;   /* as AIMET: disabled quantizers have no encoding */
        json_array_append_new(q->kind == QS_Q_WEIGHT || q->kind == QS_Q_BIAS ? params : acts, encoding(sim, i));
    }
    for (int k = 0; k < sim->cfg.nexclude; k++)
        json_array_append_new(excl, json_string(sim->cfg.exclude[k]));
    /* reduce_range: the weights' encodings say bw = param_bitwidth − 1, their grid */
    json_t *args = json_pack("{s:i, s:s, s:b, s:i, s:b, s:b, s:b}", "activation_bitwidth", sim->cfg.abits, "dtype",
                             "int", "is_symmetric", sim->cfg.w_symmetric, "param_bitwidth", sim->cfg.wbits,
                             "per_channel_quantization", sim->cfg.per_channel, "activation_symmetric",
                             sim->cfg.a_symmetric, "reduce_range", sim->cfg.reduce_range);
    return json_pack("{s:s, s:o, s:o, s:o, s:o}", "version", "1.0.0", "activation_encodings", acts,
                     "param_encodings", params, "excluded_layers", excl, "quantizer_args", args);
}
