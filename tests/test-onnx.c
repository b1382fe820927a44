/* ONNX import and export: models built with tests/onnx-pb.h are imported and the graph checked
 * field by field against the numbers written into the message; round trips (export, re-import)
 * compare graphs field by field and initializers bit for bit (memcmp, so NaN payloads and -0.0
 * count). Malformed and oversized models are tests/test-onnx-limits.c's. */
#include <sys/stat.h>

#include "onnx-pb.h"

/* ---- graph comparison (round trips) --------------------------------------------------------- */

static void same_value_decl(const qs_graph *a, int va, const qs_graph *b, int vb)
{
    const qs_value *x = &a->values[va], *y = &b->values[vb];
    ASSERT_STR_EQ(x->name, y->name);
    ASSERT_EQ(x->dtype, y->dtype);
    ASSERT_EQ(x->ndim, y->ndim);
    for (int d = 0; d < x->ndim; d++) {
        ASSERT_EQ(x->shape[d], y->shape[d]);
        if (x->dim_param[d] || y->dim_param[d])
            ASSERT_STR_EQ(x->dim_param[d], y->dim_param[d]);
    }
}

static void same_tensor(const qs_tensor *x, const qs_tensor *y)
{
    ASSERT_EQ(x->dtype, y->dtype);
    ASSERT_EQ(x->ndim, y->ndim);
    for (int d = 0; d < x->ndim; d++)
        ASSERT_EQ(x->shape[d], y->shape[d]);
    ASSERT(memcmp(x->data, y->data, qs_nbytes(x)) == 0);
}

static const char *vname(const qs_graph *g, int v) { return v < 0 ? "" : g->values[v].name; }

static void same_graph(const qs_graph *a, const qs_graph *b)
{
    ASSERT_EQ(a->nopsets, b->nopsets);
    for (int i = 0; i < a->nopsets; i++)
        ASSERT_EQ(qs_graph_opset(a, a->opsets[i].domain), qs_graph_opset(b, a->opsets[i].domain));
    ASSERT_EQ(a->ninputs, b->ninputs);
    for (int i = 0; i < a->ninputs; i++)
        same_value_decl(a, a->inputs[i], b, b->inputs[i]);
    ASSERT_EQ(a->noutputs, b->noutputs);
    for (int i = 0; i < a->noutputs; i++)
        same_value_decl(a, a->outputs[i], b, b->outputs[i]);
    ASSERT_EQ(a->nnodes, b->nnodes);
    for (int i = 0; i < a->nnodes; i++) {
        const qs_node *x = &a->nodes[i], *y = &b->nodes[i];
        ASSERT_STR_EQ(x->op, y->op);
        ASSERT_STR_EQ(x->name, y->name);
        ASSERT_STR_EQ(x->domain, y->domain);
        ASSERT_EQ(x->nin, y->nin);
        ASSERT_EQ(x->nout, y->nout);
        for (int k = 0; k < x->nin; k++)
            ASSERT_STR_EQ(vname(a, x->in[k]), vname(b, y->in[k]));
        for (int k = 0; k < x->nout; k++)
            ASSERT_STR_EQ(vname(a, x->out[k]), vname(b, y->out[k]));
        ASSERT_EQ(x->nattr, y->nattr);
        for (int k = 0; k < x->nattr; k++) {
            const qs_attr *p = &x->attr[k], *q = &y->attr[k];
            ASSERT_STR_EQ(p->name, q->name);
            ASSERT_EQ(p->type, q->type);
            switch (p->type) {
            case QS_ATTR_FLOAT: ASSERT(memcmp(&p->f, &q->f, sizeof p->f) == 0); break;
            case QS_ATTR_INT: ASSERT_EQ(p->i, q->i); break;
            case QS_ATTR_STRING: ASSERT_STR_EQ(p->s, q->s); break;
            case QS_ATTR_TENSOR: same_tensor(p->t, q->t); break;
            case QS_ATTR_FLOATS:
                ASSERT_EQ(p->n, q->n);
                ASSERT(memcmp(p->floats, q->floats, (size_t)p->n * sizeof(float)) == 0);
                break;
            case QS_ATTR_INTS:
                ASSERT_EQ(p->n, q->n);
                ASSERT(memcmp(p->ints, q->ints, (size_t)p->n * sizeof(int64_t)) == 0);
                break;
            case QS_ATTR_STRINGS:
                ASSERT_EQ(p->n, q->n);
                for (int s = 0; s < p->n; s++)
                    ASSERT_STR_EQ(p->strings[s], q->strings[s]);
                break;
            }
        }
    }
    /* every initializer of a is in b, bit-identical, and b has no others */
    int na = 0, nb = 0;
    for (int v = 0; v < a->nvalues; v++) {
        if (!a->values[v].init)
            continue;
        na++;
        int w = qs_graph_find_value(b, a->values[v].name);
        ASSERT(w >= 0 && b->values[w].init);
        same_tensor(a->values[v].init, b->values[w].init);
    }
    for (int v = 0; v < b->nvalues; v++)
        nb += b->values[v].init != NULL;
    ASSERT_EQ(na, nb);
}

static qs_graph *round_trip(const qs_graph *g)
{
    qs_err e = { 0 };
    void *buf;
    size_t len;
    if (qs_onnx_save_buffer(g, &buf, &len, &e) < 0)
        QT_FAIL_("export failed: %s", e.msg);
    qs_graph *h = NULL;
    if (qs_onnx_load_buffer(buf, len, NULL, &h, &e) < 0)
        QT_FAIL_("re-import failed: %s", e.msg);
    free(buf);
    same_graph(g, h);
    return h;
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* A Conv model with a symbolic batch: inputs, shapes, dim_param, attributes, initializers. */
static model conv_model(void)
{
    model md = model_pb(8, 13);
    const char *params[4] = { "N", NULL, NULL, NULL };
    add_input(&md, vi_pb("x", 1, 4, (int64_t[]){ -1, 2, 4, 4 }, params));
    add_output(&md, vi_pb("y", 1, 4, (int64_t[]){ -1, 3, 4, 4 }, params));
    Onnx__TensorProto *w = tensor_pb("w", 1, 4, (int64_t[]){ 3, 2, 1, 1 });
    float wv[6] = { 1, -2, 0.5f, 3, -0.25f, 4 };
    set_raw(w, wv, sizeof wv);
    add_init(&md, w);
    Onnx__TensorProto *b = tensor_pb("b", 1, 1, (int64_t[]){ 3 });
    b->n_float_data = 3;
    b->float_data = zalloc(3 * sizeof(float));
    b->float_data[0] = 0.1f, b->float_data[1] = -0.2f, b->float_data[2] = 0.3f;
    add_init(&md, b);
    Onnx__NodeProto *n = node_pb("Conv", "conv1", "x,w,b", "y");
    Onnx__AttributeProto *a = attr_pb(n, "kernel_shape", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = 2;
    a->ints = zalloc(2 * sizeof(int64_t));
    a->ints[0] = a->ints[1] = 1;
    a = attr_pb(n, "group", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = 1;
    a = attr_pb(n, "auto_pad", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)"NOTSET";
    a->s.len = 6;
    add_node(&md, n);
    return md;
}

TEST(import_conv_model)
{
    model md = conv_model();
    qs_graph *g = load_ok(&md);
    ASSERT_EQ(g->ir_version, 8);
    ASSERT_EQ(qs_graph_opset(g, ""), 13);
    ASSERT_STR_EQ(g->producer_name, "test-onnx");
    ASSERT_STR_EQ(g->producer_version, "0.1");
    ASSERT_EQ(g->ninputs, 1);
    const qs_value *x = &g->values[g->inputs[0]];
    ASSERT_STR_EQ(x->name, "x");
    ASSERT_EQ(x->dtype, QS_F32);
    ASSERT_EQ(x->ndim, 4);
    ASSERT_EQ(x->shape[0], -1);
    ASSERT_STR_EQ(x->dim_param[0], "N");
    ASSERT(x->dim_param[1] == NULL);
    ASSERT_EQ(x->shape[1], 2);
    ASSERT_EQ(x->shape[3], 4);
    ASSERT_EQ(g->noutputs, 1);
    ASSERT_STR_EQ(g->values[g->outputs[0]].name, "y");
    ASSERT_EQ(g->values[g->outputs[0]].shape[1], 3);
    ASSERT_EQ(g->nnodes, 1);
    const qs_node *n = &g->nodes[0];
    ASSERT_STR_EQ(n->op, "Conv");
    ASSERT_STR_EQ(n->name, "conv1");
    ASSERT_STR_EQ(n->domain, "");
    ASSERT_EQ(n->nin, 3);
    ASSERT_STR_EQ(g->values[n->in[1]].name, "w");
    ASSERT_EQ(g->values[n->out[0]].producer, 0);
    const int64_t *ks;
    ASSERT_EQ(qs_node_ints(n, "kernel_shape", &ks), 2);
    ASSERT_EQ(ks[0], 1);
    ASSERT_EQ(qs_node_int(n, "group", 0), 1);
    ASSERT_STR_EQ(qs_node_string(n, "auto_pad", ""), "NOTSET");
    const qs_tensor *w = init_of(g, "w");
    ASSERT_EQ(w->dtype, QS_F32);
    ASSERT_EQ(w->ndim, 4);
    ASSERT_EQ(w->shape[0], 3);
    ASSERT(qs_f32(w)[1] == -2.f && qs_f32(w)[5] == 4.f);
    const qs_tensor *b = init_of(g, "b");
    ASSERT(qs_f32(b)[0] == 0.1f && qs_f32(b)[2] == 0.3f);
    qs_graph_free(g);
    pb_free_all();
}

/* One tensor of every supported type in raw_data and in its typed field; values that exercise
 * signs and the ends of each range. */
TEST(initializer_encodings)
{
    model md = model_pb(8, 13);
    add_input(&md, vi_pb("x", 1, 1, (int64_t[]){ 1 }, NULL));
    add_output(&md, vi_pb("x_out", 1, 1, (int64_t[]){ 1 }, NULL));
    add_node(&md, node_pb("Identity", "id", "x", "x_out"));

    float f32[3] = { 1.5f, -0.f, 3.4e38f };
    double f64[3] = { 1e-300, -2.5, 1e300 };
    int64_t i64[3] = { INT64_MIN, -1, INT64_MAX };
    int32_t i32[3] = { INT32_MIN, 0, INT32_MAX };
    int8_t i8[3] = { -128, -1, 127 };
    uint8_t u8[3] = { 0, 128, 255 };
    int16_t i16[3] = { -32768, 7, 32767 };
    uint16_t u16[3] = { 0, 40000, 65535 };
    uint8_t bl[3] = { 1, 0, 1 };
    struct { const char *name; int dt; const void *v; size_t sz; } raw[] = {
        { "f32_raw", QS_F32, f32, 4 }, { "f64_raw", QS_F64, f64, 8 }, { "i64_raw", QS_I64, i64, 8 },
        { "i32_raw", QS_I32, i32, 4 }, { "i8_raw", QS_I8, i8, 1 }, { "u8_raw", QS_U8, u8, 1 },
        { "i16_raw", QS_I16, i16, 2 }, { "u16_raw", QS_U16, u16, 2 }, { "bool_raw", QS_BOOL, bl, 1 },
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        Onnx__TensorProto *t = tensor_pb(raw[i].name, raw[i].dt, 1, (int64_t[]){ 3 });
        set_raw(t, raw[i].v, 3 * raw[i].sz);
        add_init(&md, t);
    }
    Onnx__TensorProto *t = tensor_pb("f32_typed", QS_F32, 1, (int64_t[]){ 3 });
    t->n_float_data = 3;
    t->float_data = zalloc(sizeof f32);
    memcpy(t->float_data, f32, sizeof f32);
    add_init(&md, t);
    t = tensor_pb("f64_typed", QS_F64, 1, (int64_t[]){ 3 });
    t->n_double_data = 3;
    t->double_data = zalloc(sizeof f64);
    memcpy(t->double_data, f64, sizeof f64);
    add_init(&md, t);
    t = tensor_pb("i64_typed", QS_I64, 1, (int64_t[]){ 3 });
    t->n_int64_data = 3;
    t->int64_data = zalloc(sizeof i64);
    memcpy(t->int64_data, i64, sizeof i64);
    add_init(&md, t);
    /* int32_data carries int32, int16, uint16, int8, uint8 and bool */
    struct { const char *name; int dt; int32_t v[3]; } typed[] = {
        { "i32_typed", QS_I32, { INT32_MIN, 0, INT32_MAX } }, { "i8_typed", QS_I8, { -128, -1, 127 } },
        { "u8_typed", QS_U8, { 0, 128, 255 } }, { "i16_typed", QS_I16, { -32768, 7, 32767 } },
        { "u16_typed", QS_U16, { 0, 40000, 65535 } }, { "bool_typed", QS_BOOL, { 1, 0, 1 } },
    };
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++) {
        t = tensor_pb(typed[i].name, typed[i].dt, 1, (int64_t[]){ 3 });
        t->n_int32_data = 3;
        t->int32_data = zalloc(3 * sizeof(int32_t));
        memcpy(t->int32_data, typed[i].v, 3 * sizeof(int32_t));
        add_init(&md, t);
    }
    /* int4 / uint4: five values, packed low nibble first into three bytes (last high nibble 0) */
    int8_t i4v[5] = { -8, 7, -1, 0, 3 };           /* nibbles 8,7 | f,0 | 3 */
    uint8_t i4p[3] = { 0x78, 0x0f, 0x03 };
    uint8_t u4v[5] = { 15, 0, 1, 9, 4 };
    uint8_t u4p[3] = { 0x0f, 0x91, 0x04 };
    t = tensor_pb("i4_raw", QS_I4, 1, (int64_t[]){ 5 });
    set_raw(t, i4p, 3);
    add_init(&md, t);
    t = tensor_pb("u4_typed", QS_U4, 1, (int64_t[]){ 5 });
    t->n_int32_data = 3;
    t->int32_data = zalloc(3 * sizeof(int32_t));
    for (int i = 0; i < 3; i++)
        t->int32_data[i] = u4p[i];
    add_init(&md, t);
    /* a scalar and an empty tensor */
    t = tensor_pb("scalar", QS_I64, 0, NULL);
    t->n_int64_data = 1;
    t->int64_data = zalloc(8);
    t->int64_data[0] = 42;
    add_init(&md, t);
    t = tensor_pb("empty", QS_F32, 2, (int64_t[]){ 0, 3 });
    set_raw(t, "", 0);
    add_init(&md, t);

    qs_graph *g = load_ok(&md);
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        const qs_tensor *x = init_of(g, raw[i].name);
        ASSERT_EQ(x->dtype, raw[i].dt);
        ASSERT_EQ(x->ndim, 1);
        ASSERT_EQ(x->shape[0], 3);
        ASSERT(memcmp(x->data, raw[i].v, 3 * raw[i].sz) == 0);
        char typed_name[32];
        snprintf(typed_name, sizeof typed_name, "%.*s_typed", (int)(strchr(raw[i].name, '_') - raw[i].name),
                 raw[i].name);
        const qs_tensor *y = init_of(g, typed_name);
        same_tensor(x, y);
    }
    ASSERT(signbit(qs_f32(init_of(g, "f32_typed"))[1]));
    const qs_tensor *i4 = init_of(g, "i4_raw");
    ASSERT_EQ(i4->dtype, QS_I4);
    ASSERT_EQ(i4->shape[0], 5);
    ASSERT(memcmp(i4->data, i4v, 5) == 0);
    const qs_tensor *u4 = init_of(g, "u4_typed");
    ASSERT_EQ(u4->dtype, QS_U4);
    ASSERT(memcmp(u4->data, u4v, 5) == 0);
    const qs_tensor *s = init_of(g, "scalar");
    ASSERT_EQ(s->ndim, 0);
    ASSERT_EQ(qs_i64(s)[0], 42);
    const qs_tensor *em = init_of(g, "empty");
    ASSERT_EQ(em->ndim, 2);
    ASSERT_EQ(qs_numel(em), 0);
    /* runtime inputs exclude initializers */
    ASSERT_EQ(g->ninputs, 1);

    /* and all of them survive export and re-import bit for bit (4-bit ones packed again) */
    qs_graph *h = round_trip(g);
    qs_graph_free(h);
    qs_graph_free(g);
    pb_free_all();
}

/* IR 3 models list initializers among the graph inputs; those are not runtime inputs. */
TEST(initializers_listed_as_inputs)
{
    model md = model_pb(3, 8);
    add_input(&md, vi_pb("x", 1, 2, (int64_t[]){ 1, 2 }, NULL));
    add_input(&md, vi_pb("w", 1, 2, (int64_t[]){ 2, 2 }, NULL));
    add_output(&md, vi_pb("y", 1, 2, (int64_t[]){ 1, 2 }, NULL));
    Onnx__TensorProto *w = tensor_pb("w", 1, 2, (int64_t[]){ 2, 2 });
    float wv[4] = { 1, 2, 3, 4 };
    set_raw(w, wv, sizeof wv);
    add_init(&md, w);
    add_node(&md, node_pb("MatMul", "mm", "x,w", "y"));
    qs_graph *g = load_ok(&md);
    ASSERT_EQ(g->ninputs, 1);
    ASSERT_STR_EQ(g->values[g->inputs[0]].name, "x");
    ASSERT_EQ(g->ir_version, 3);

    /* exported at IR 3, the initializer is listed as an input again (the IR requires it) */
    qs_err e = { 0 };
    void *buf;
    size_t len;
    ASSERT_EQ(qs_onnx_save_buffer(g, &buf, &len, &e), 0);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
    ASSERT(m);
    ASSERT_EQ(m->ir_version, 3);
    ASSERT_EQ(m->graph->n_input, 2);
    ASSERT_STR_EQ(m->graph->input[1]->name, "w");
    onnx__model_proto__free_unpacked(m, NULL);
    free(buf);
    qs_graph *h = round_trip(g);
    qs_graph_free(h);
    qs_graph_free(g);
    pb_free_all();
}

/* A Constant node's tensor becomes an initializer of the same name (the node goes); omitted inputs
 * are -1; trailing omitted outputs are dropped and one in the middle is -1; domains and attributes
 * of every type. */
TEST(nodes_attributes_and_omitted_values)
{
    model md = model_pb(8, 17);
    Onnx__OperatorSetIdProto *op = zalloc(sizeof *op);
    onnx__operator_set_id_proto__init(op);
    op->domain = "com.example";
    op->has_version = 1;
    op->version = 2;
    md.m->opset_import[md.m->n_opset_import++] = op;
    add_input(&md, vi_pb("x", 1, 2, (int64_t[]){ 2, 3 }, NULL));
    add_output(&md, vi_pb("y", 1, -1, NULL, NULL));
    add_output(&md, vi_pb("h", 1, -1, NULL, NULL));

    Onnx__NodeProto *c = node_pb("Constant", "c", NULL, "k");
    Onnx__AttributeProto *a = attr_pb(c, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    a->t = tensor_pb("", QS_I64, 1, (int64_t[]){ 2 });
    a->t->n_int64_data = 2;
    a->t->int64_data = zalloc(16);
    a->t->int64_data[0] = 3;
    a->t->int64_data[1] = -7;
    add_node(&md, c);
    /* Clip with min omitted, max given */
    add_node(&md, node_pb("Clip", "clip", "x,,k", "y0"));
    /* an op with three outputs of which the first and last are omitted */
    Onnx__NodeProto *n = node_pb("Custom", "cu", "y0", ",h,");
    n->domain = "com.example";
    a = attr_pb(n, "alpha", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = 0.125f;
    a = attr_pb(n, "scales", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    a->n_floats = 2;
    a->floats = zalloc(8);
    a->floats[0] = 1.5f;
    a->floats[1] = -2.f;
    a = attr_pb(n, "names", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
    a->n_strings = 2;
    a->strings = zalloc(2 * sizeof *a->strings);
    a->strings[0] = (ProtobufCBinaryData){ 3, (uint8_t *)"abc" };
    a->strings[1] = (ProtobufCBinaryData){ 0, (uint8_t *)"" };
    /* an IR 1 style attribute with no type: the field that is set says INT */
    a = attr_pb(n, "legacy", 0);
    a->has_type = 0;
    a->has_i = 1;
    a->i = 5;
    add_node(&md, n);
    add_node(&md, node_pb("Identity", "", "y0", "y"));

    qs_graph *g = load_ok(&md);
    ASSERT_EQ(qs_graph_opset(g, "com.example"), 2);
    ASSERT_EQ(g->nnodes, 3);
    int k = qs_graph_find_value(g, "k");
    ASSERT(k >= 0 && g->values[k].init && g->values[k].producer == -1);
    ASSERT_EQ(g->values[k].init->dtype, QS_I64);
    ASSERT_EQ(g->values[k].dtype, QS_I64);
    ASSERT_EQ(g->values[k].ndim, 1);
    ASSERT_EQ(g->values[k].shape[0], 2);
    ASSERT_EQ(qs_i64(g->values[k].init)[1], -7);
    const qs_node *cl = &g->nodes[0];
    ASSERT_EQ(cl->nin, 3);
    ASSERT_EQ(cl->in[1], -1);
    ASSERT_EQ(cl->in[2], k);
    const qs_node *cu = &g->nodes[1];
    ASSERT_STR_EQ(cu->domain, "com.example");
    ASSERT_EQ(cu->nout, 2);
    ASSERT_EQ(cu->out[0], -1);
    ASSERT_STR_EQ(g->values[cu->out[1]].name, "h");
    ASSERT(qs_node_float(cu, "alpha", 0) == 0.125f);
    const float *fl;
    ASSERT_EQ(qs_node_floats(cu, "scales", &fl), 2);
    ASSERT(fl[1] == -2.f);
    const qs_attr *sa = qs_node_attr(cu, "names");
    ASSERT(sa && sa->type == QS_ATTR_STRINGS && sa->n == 2);
    ASSERT_STR_EQ(sa->strings[0], "abc");
    ASSERT_STR_EQ(sa->strings[1], "");
    ASSERT_EQ(qs_node_int(cu, "legacy", 0), 5);
    ASSERT_STR_EQ(g->nodes[2].name, "");
    ASSERT_EQ(g->values[g->outputs[0]].ndim, -1);

    qs_graph *h = round_trip(g);
    ASSERT(qs_graph_find_value(h, "k") >= 0 && h->values[qs_graph_find_value(h, "k")].init);
    qs_graph_free(h);
    qs_graph_free(g);
    pb_free_all();
}

/* Nodes out of order are sorted; value_info shapes reach intermediate values. */
TEST(unsorted_nodes_and_value_info)
{
    model md = model_pb(8, 13);
    add_input(&md, vi_pb("x", 1, 1, (int64_t[]){ 4 }, NULL));
    add_output(&md, vi_pb("z", 1, 1, (int64_t[]){ 4 }, NULL));
    add_node(&md, node_pb("Relu", "second", "y", "z"));
    add_node(&md, node_pb("Neg", "first", "x", "y"));
    md.g->value_info[md.g->n_value_info++] = vi_pb("y", 1, 1, (int64_t[]){ 4 }, NULL);
    qs_graph *g = load_ok(&md);
    ASSERT_STR_EQ(g->nodes[0].name, "first");
    ASSERT_STR_EQ(g->nodes[1].name, "second");
    int y = qs_graph_find_value(g, "y");
    ASSERT_EQ(g->values[y].dtype, QS_F32);
    ASSERT_EQ(g->values[y].ndim, 1);
    ASSERT_EQ(g->values[y].shape[0], 4);
    ASSERT_EQ(g->values[y].producer, 0);
    qs_graph *h = round_trip(g);
    int yh = qs_graph_find_value(h, "y");
    ASSERT_EQ(h->values[yh].dtype, QS_F32);
    ASSERT_EQ(h->values[yh].shape[0], 4);
    qs_graph_free(h);
    qs_graph_free(g);
    pb_free_all();
}

static void write_model_file(const model *md, const char *path)
{
    size_t len;
    void *buf = pack_model(md, &len);
    write_file(path, buf, len);
    free(buf);
}

static Onnx__TensorProto *external_tensor(const char *name, int dt, int ndim, const int64_t *dims, const char *loc,
                                          const char *off, const char *len)
{
    Onnx__TensorProto *t = tensor_pb(name, dt, ndim, dims);
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    t->external_data = zalloc(3 * sizeof *t->external_data);
    const char *k[3] = { "location", "offset", "length" }, *v[3] = { loc, off, len };
    for (int i = 0; i < 3; i++) {
        if (!v[i])
            continue;
        Onnx__StringStringEntryProto *kv = zalloc(sizeof *kv);
        onnx__string_string_entry_proto__init(kv);
        kv->key = (char *)k[i];
        kv->value = (char *)v[i];
        t->external_data[t->n_external_data++] = kv;
    }
    return t;
}

/* Initializers in an external file beside the model (location, offset, length), as big models
 * store them; the file is found relative to the model's folder. */
TEST(external_data)
{
    const char *dir = make_tmpdir();
    char path[512], data[512];
    /* weights.bin: 16 bytes of junk, then 4 floats, then 2 int64, then packed int4 */
    uint8_t bin[16 + 16 + 16 + 2];
    memset(bin, 0xAB, 16);
    float wv[4] = { 0.5f, -1.f, 2.f, 1e-3f };
    int64_t iv[2] = { -5, 1LL << 40 };
    memcpy(bin + 16, wv, 16);
    memcpy(bin + 32, iv, 16);
    bin[48] = 0x9f;   /* int4: -1, -7 */
    bin[49] = 0x01;   /* int4: 1 (last high nibble unused) */
    snprintf(data, sizeof data, "%s/weights.bin", dir);
    write_file(data, bin, sizeof bin);

    model md = model_pb(8, 13);
    add_input(&md, vi_pb("x", 1, 2, (int64_t[]){ 1, 2 }, NULL));
    add_output(&md, vi_pb("y", 1, 2, (int64_t[]){ 1, 2 }, NULL));
    add_init(&md, external_tensor("w", QS_F32, 2, (int64_t[]){ 2, 2 }, "weights.bin", "16", "16"));
    add_init(&md, external_tensor("s", QS_I64, 1, (int64_t[]){ 2 }, "weights.bin", "32", NULL));
    add_init(&md, external_tensor("q", QS_I4, 1, (int64_t[]){ 3 }, "weights.bin", "48", "2"));
    add_node(&md, node_pb("MatMul", "mm", "x,w", "y"));
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    write_model_file(&md, path);

    qs_err e = { 0 };
    qs_graph *g = NULL;
    if (qs_onnx_load(path, &g, &e) < 0)
        QT_FAIL_("%s", e.msg);
    ASSERT(memcmp(init_of(g, "w")->data, wv, 16) == 0);
    ASSERT(memcmp(init_of(g, "s")->data, iv, 16) == 0);
    const int8_t *q = init_of(g, "q")->data;
    ASSERT(q[0] == -1 && q[1] == -7 && q[2] == 1);

    /* the same bytes from a buffer with the folder given explicitly */
    size_t len;
    void *buf = pack_model(&md, &len);
    qs_graph *h = NULL;
    ASSERT_EQ(qs_onnx_load_buffer(buf, len, dir, &h, &e), 0);
    same_graph(g, h);
    qs_graph_free(h);

    /* and exported with every tensor external, re-imported identically */
    snprintf(path, sizeof path, "%s/out.onnx", dir);
    if (qs_onnx_save_external(g, path, 1, &e) < 0)
        QT_FAIL_("%s", e.msg);
    snprintf(data, sizeof data, "%s/out.onnx.data", dir);
    struct stat st;
    ASSERT_EQ(stat(data, &st), 0);
    ASSERT(st.st_size >= 16 + 16 + 2);
    ASSERT_EQ(qs_onnx_load(path, &h, &e), 0);
    same_graph(g, h);
    qs_graph_free(h);

    /* a missing data file is named in the message */
    unlink(data);
    ASSERT(qs_onnx_load(path, &h, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "out.onnx.data");
    ASSERT_STR_CONTAINS(e.msg, "initializer");

    /* a length that disagrees with the shape, an offset past the end, a path leaving the folder */
    md.g->initializer[0] = external_tensor("w", QS_F32, 2, (int64_t[]){ 2, 2 }, "weights.bin", "16", "12");
    ASSERT(load_pb(&md, dir, &h, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "length 12");
    md.g->initializer[0] = external_tensor("w", QS_F32, 2, (int64_t[]){ 2, 2 }, "weights.bin", "40", NULL);
    ASSERT(load_pb(&md, dir, &h, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "weights.bin");
    md.g->initializer[0] = external_tensor("w", QS_F32, 2, (int64_t[]){ 2, 2 }, "../weights.bin", "16", NULL);
    ASSERT(load_pb(&md, dir, &h, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "leaves the model's folder");
    md.g->initializer[0] = external_tensor("w", QS_F32, 2, (int64_t[]){ 2, 2 }, "/etc/passwd", "0", NULL);
    ASSERT(load_pb(&md, dir, &h, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "absolute");

    free(buf);
    qs_graph_free(g);
    rm_tmpdir();
    pb_free_all();
}

/* Round trip through a file: load → save → load is lossless, including NaN payloads and -0. */
TEST(round_trip_file_bit_identical)
{
    model md = conv_model();
    Onnx__TensorProto *odd = tensor_pb("odd", QS_F32, 1, (int64_t[]){ 4 });
    uint32_t bits[4] = { 0x7fc00001u, 0x80000000u, 0x00000001u, 0xff800000u };   /* NaN, -0, denormal, -inf */
    set_raw(odd, bits, sizeof bits);
    add_init(&md, odd);
    qs_graph *g = load_ok(&md);
    const char *dir = make_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/rt.onnx", dir);
    qs_err e = { 0 };
    if (qs_onnx_save(g, path, &e) < 0)
        QT_FAIL_("%s", e.msg);
    qs_graph *h = NULL;
    if (qs_onnx_load(path, &h, &e) < 0)
        QT_FAIL_("%s", e.msg);
    same_graph(g, h);
    ASSERT(memcmp(init_of(h, "odd")->data, bits, sizeof bits) == 0);
    ASSERT_STR_EQ(h->values[h->inputs[0]].dim_param[0], "N");

    /* a second export of the re-import is byte-identical to the first */
    void *b1, *b2;
    size_t l1, l2;
    ASSERT_EQ(qs_onnx_save_buffer(g, &b1, &l1, &e), 0);
    ASSERT_EQ(qs_onnx_save_buffer(h, &b2, &l2, &e), 0);
    ASSERT_EQ(l1, l2);
    ASSERT(memcmp(b1, b2, l1) == 0);
    free(b1);
    free(b2);
    qs_graph_free(h);
    qs_graph_free(g);
    rm_tmpdir();
    pb_free_all();
}

/* A graph built by hand (no import) exports with the opsets, types and a valid IR version. */
TEST(export_built_graph)
{
    qs_graph *g = qs_graph_new();
    ASSERT(g);
    ASSERT_EQ(qs_graph_set_opset(g, "", 21), 0);
    int x = qs_graph_value(g, "x"), w = qs_graph_value(g, "w"), s = qs_graph_value(g, "s"), y = qs_graph_value(g, "y");
    g->values[x].dtype = QS_F32;
    g->values[x].ndim = 2;
    g->values[x].shape[0] = -1;
    g->values[x].dim_param[0] = strdup("batch");
    g->values[x].shape[1] = 3;
    qs_tensor *wt = qs_tensor_new(QS_I4, 1, (int64_t[]){ 3 });
    qs_i8(wt)[0] = -8, qs_i8(wt)[1] = 7, qs_i8(wt)[2] = -3;
    qs_graph_set_init_steal(g, w, wt);
    qs_tensor *st = qs_tensor_new(QS_F32, 0, NULL);
    qs_f32(st)[0] = 0.5f;
    qs_graph_set_init_steal(g, s, st);
    int dq = qs_graph_value(g, "w_dq");
    int id = qs_graph_add_node(g, "DequantizeLinear", "dq", 2, (int[]){ w, s }, 1, &dq);
    ASSERT(id >= 0);
    id = qs_graph_add_node(g, "Mul", "mul", 2, (int[]){ x, dq }, 1, &y);
    ASSERT(id >= 0);
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->ninputs = 1;
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = y;
    g->noutputs = 1;
    g->values[y].dtype = QS_F32;

    qs_err e = { 0 };
    void *buf;
    size_t len;
    if (qs_onnx_save_buffer(g, &buf, &len, &e) < 0)
        QT_FAIL_("%s", e.msg);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
    ASSERT(m);
    ASSERT(m->ir_version >= 10);   /* int4 needs IR 10 */
    ASSERT_EQ(m->n_opset_import, 1);
    ASSERT_EQ(m->opset_import[0]->version, 21);
    ASSERT_EQ(m->graph->n_input, 1);
    ASSERT_STR_EQ(m->graph->input[0]->type->tensor_type->shape->dim[0]->dim_param, "batch");
    ASSERT_EQ(m->graph->n_initializer, 2);
    const Onnx__TensorProto *wp = m->graph->initializer[0];
    ASSERT_EQ(wp->data_type, QS_I4);
    ASSERT_EQ(wp->raw_data.len, 2);
    ASSERT_EQ(wp->raw_data.data[0], 0x78);   /* -8 → 8 low, 7 high */
    ASSERT_EQ(wp->raw_data.data[1], 0x0d);   /* -3 → d */
    ASSERT_EQ(m->graph->n_node, 2);
    ASSERT_STR_EQ(m->graph->node[0]->op_type, "DequantizeLinear");
    onnx__model_proto__free_unpacked(m, NULL);
    free(buf);
    qs_graph *h = round_trip(g);
    qs_graph_free(h);
    qs_graph_free(g);
}

TEST(errors_are_named)
{
    qs_err e = { 0 };
    qs_graph *g = NULL;
    /* garbage, empty, truncated */
    const char junk[] = "\xff\xff\xff\xff\xff this is not a protobuf";
    ASSERT_EQ(qs_onnx_load_buffer(junk, sizeof junk, NULL, &g, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "not an ONNX model");
    ASSERT(g == NULL);
    ASSERT_EQ(qs_onnx_load_buffer(junk, 0, NULL, &g, &e), QS_EFORMAT);

    model md = conv_model();
    size_t len;
    void *buf = pack_model(&md, &len);
    const char *dir = make_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/trunc.onnx", dir);
    write_file(path, buf, len - 7);
    ASSERT(qs_onnx_load(path, &g, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "trunc.onnx");
    ASSERT_STR_CONTAINS(e.msg, "truncated");
    snprintf(path, sizeof path, "%s/empty.onnx", dir);
    write_file(path, "", 0);
    ASSERT(qs_onnx_load(path, &g, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "empty");
    snprintf(path, sizeof path, "%s/missing.onnx", dir);
    ASSERT_EQ(qs_onnx_load(path, &g, &e), QS_EIO);
    ASSERT_STR_CONTAINS(e.msg, "missing.onnx");
    free(buf);
    rm_tmpdir();

    /* a valid protobuf that is not a model (a TensorProto's fields do not make one) */
    Onnx__StringStringEntryProto kv = ONNX__STRING_STRING_ENTRY_PROTO__INIT;
    kv.key = "k";
    kv.value = "v";
    uint8_t small[64];
    size_t n = onnx__string_string_entry_proto__pack(&kv, small);
    ASSERT(qs_onnx_load_buffer(small, n, NULL, &g, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "not an ONNX model");

    /* no graph */
    md = model_pb(8, 13);
    md.m->graph = NULL;
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "no graph");

    /* duplicate output names */
    md = conv_model();
    add_node(&md, node_pb("Relu", "again", "x", "y"));
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "duplicate output name 'y'");
    ASSERT_STR_CONTAINS(e.msg, "conv1");
    md = conv_model();
    add_node(&md, node_pb("Relu", "r", "x", "w"));
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "initializer");

    /* a value read but never produced */
    md = conv_model();
    add_node(&md, node_pb("Relu", "r", "nowhere", "z"));
    ASSERT(load_err(&md, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "nowhere");

    /* a graph output nobody writes */
    md = conv_model();
    add_output(&md, vi_pb("ghost", 1, -1, NULL, NULL));
    ASSERT(load_err(&md, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "ghost");

    /* sparse initializers */
    md = conv_model();
    Onnx__SparseTensorProto sp = ONNX__SPARSE_TENSOR_PROTO__INIT;
    sp.values = tensor_pb("sp", QS_F32, 1, (int64_t[]){ 0 });
    sp.indices = tensor_pb("", QS_I64, 1, (int64_t[]){ 0 });
    Onnx__SparseTensorProto *spp = &sp;
    md.g->n_sparse_initializer = 1;
    md.g->sparse_initializer = &spp;
    ASSERT_EQ(load_err(&md, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "sparse");

    /* control flow */
    md = conv_model();
    Onnx__NodeProto *iff = node_pb("If", "branch", "x", "z");
    Onnx__AttributeProto *a = attr_pb(iff, "then_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    Onnx__GraphProto sub = ONNX__GRAPH_PROTO__INIT;
    a->g = &sub;
    add_node(&md, iff);
    ASSERT_EQ(load_err(&md, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "If 'branch'");
    ASSERT_STR_CONTAINS(e.msg, "then_branch");
    ASSERT_STR_CONTAINS(e.msg, "unsupported");

    /* a sequence-typed input */
    md = conv_model();
    Onnx__ValueInfoProto *seq = vi_pb("s", 1, -1, NULL, NULL);
    Onnx__TypeProto__Sequence sq = ONNX__TYPE_PROTO__SEQUENCE__INIT;
    seq->type->value_case = ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE;
    seq->type->sequence_type = &sq;
    add_input(&md, seq);
    ASSERT_EQ(load_err(&md, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "sequence");

    /* float16 initializer, raw_data of the wrong size, typed data of the wrong count */
    md = conv_model();
    Onnx__TensorProto *h16 = tensor_pb("h", 10, 1, (int64_t[]){ 2 });
    set_raw(h16, "\0\0\0\0", 4);
    add_init(&md, h16);
    ASSERT_EQ(load_err(&md, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "initializer 'h'");
    ASSERT_STR_CONTAINS(e.msg, "float16");
    md = conv_model();
    md.g->initializer[0]->raw_data.len = 20;
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "initializer 'w'");
    ASSERT_STR_CONTAINS(e.msg, "24");
    md = conv_model();
    md.g->initializer[1]->n_float_data = 2;
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "float_data has 2 values");

    /* duplicate initializers, duplicate attributes */
    md = conv_model();
    add_init(&md, md.g->initializer[1]);
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "'b' appears twice");
    md = conv_model();
    Onnx__NodeProto *cv = md.g->node[0];
    cv->attribute[cv->n_attribute++] = cv->attribute[1];
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "'group' appears twice");
    pb_free_all();
}

/* The conformance data's input_N.pb / output_N.pb files are single TensorProtos. */
TEST(load_tensor_file)
{
    Onnx__TensorProto *t = tensor_pb("input_name", QS_I64, 2, (int64_t[]){ 2, 2 });
    t->n_int64_data = 4;
    t->int64_data = zalloc(32);
    for (int i = 0; i < 4; i++)
        t->int64_data[i] = (i - 2) * 1000000007LL;
    size_t len = onnx__tensor_proto__get_packed_size(t);
    uint8_t *buf = zalloc(len);
    onnx__tensor_proto__pack(t, buf);
    const char *dir = make_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/input_0.pb", dir);
    write_file(path, buf, len);
    qs_err e = { 0 };
    qs_tensor *x = NULL;
    char *name = NULL;
    if (qs_onnx_load_tensor(path, &x, &name, &e) < 0)
        QT_FAIL_("%s", e.msg);
    ASSERT_STR_EQ(name, "input_name");
    ASSERT_EQ(x->dtype, QS_I64);
    ASSERT_EQ(x->shape[1], 2);
    ASSERT_EQ(qs_i64(x)[0], -2000000014LL);
    ASSERT_EQ(qs_i64(x)[3], 1000000007LL);
    qs_tensor_free(x);
    free(name);
    snprintf(path, sizeof path, "%s/garbage.pb", dir);
    write_file(path, "\xff\xff\xff\xff", 4);
    ASSERT(qs_onnx_load_tensor(path, &x, NULL, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "garbage.pb");
    rm_tmpdir();
    pb_free_all();
}

/* Every model of ONNX's conformance data (where present) that imports also round-trips. */
TEST(conformance_models_round_trip)
{
    const char *root = "/usr/share/libonnx-testdata/data";
    const char *sub[] = { "node", "pytorch-converted", "pytorch-operator", "simple" };
    int loaded = 0, refused = 0;
    for (size_t s = 0; s < sizeof sub / sizeof sub[0]; s++) {
        char dpath[512];
        snprintf(dpath, sizeof dpath, "%s/%s", root, sub[s]);
        DIR *d = opendir(dpath);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s/model.onnx", dpath, de->d_name);
            qs_err e = { 0 };
            qs_graph *g = NULL;
            int rc = qs_onnx_load(path, &g, &e);
            if (rc < 0) {
                /* only refusals of what we do not support; anything else is an import bug */
                if (rc != QS_EUNSUPPORTED)
                    QT_FAIL_("%s: %s", path, e.msg);
                refused++;
                continue;
            }
            qs_graph *h = round_trip(g);
            qs_graph_free(h);
            qs_graph_free(g);
            loaded++;
        }
        closedir(d);
    }
    if (!loaded && !refused)
        SKIP("no ONNX conformance data (install libonnx-testdata)");
    printf("# %d conformance models round-tripped, %d refused as unsupported\n", loaded, refused);
    ASSERT(loaded > 900);
}

TEST_MAIN(import_conv_model, initializer_encodings, initializers_listed_as_inputs, nodes_attributes_and_omitted_values,
          unsorted_nodes_and_value_info, external_data, round_trip_file_bit_identical, export_built_graph,
          errors_are_named, load_tensor_file, conformance_models_round_trip)
