/* Building ONNX ModelProtos for tests, with the protobuf-c API generated from onnx.proto, so each
 * test states exactly which encoding it feeds the importer: tensors, value infos, nodes and
 * attributes in a `model` whose memory is kept until pb_free_all(); packing and importing it
 * (load_ok, load_err); and a temp folder for the tests that write files. Shared by
 * tests/test-onnx.c and tests/test-onnx-limits.c. */
#ifndef QD_TESTS_ONNX_PB_H
#define QD_TESTS_ONNX_PB_H

#include <dirent.h>
#include <stdint.h>

#include "harness.h"
#include "onnx.h"
#include "onnx.pb-c.h"

/* Everything allocated for a test model is kept here and freed by pb_free_all(). */
static void *kept[4096];
static int nkept;

static inline void *keep(void *p)
{
    ASSERT(p && nkept < (int)(sizeof kept / sizeof kept[0]));
    kept[nkept++] = p;
    return p;
}

static inline void *zalloc(size_t n) { return keep(calloc(1, n ? n : 1)); }

static inline void pb_free_all(void)
{
    while (nkept)
        free(kept[--nkept]);
}

#define CAP 32   /* room in every repeated field of a test model */

static inline Onnx__TensorProto *tensor_pb(const char *name, int dtype, int ndim, const int64_t *dims)
{
    Onnx__TensorProto *t = zalloc(sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = (size_t)ndim;
    t->dims = zalloc(8 * sizeof(int64_t));
    if (ndim)   /* scalars pass dims == NULL */
        memcpy(t->dims, dims, (size_t)ndim * sizeof(int64_t));
    return t;
}

static inline void set_raw(Onnx__TensorProto *t, const void *data, size_t len)
{
    t->has_raw_data = 1;
    t->raw_data.len = len;
    t->raw_data.data = zalloc(len);
    memcpy(t->raw_data.data, data, len);
}

static inline Onnx__ValueInfoProto *vi_pb(const char *name, int elem, int ndim, const int64_t *dims, const char *const *params)
{
    Onnx__ValueInfoProto *vi = zalloc(sizeof *vi);
    onnx__value_info_proto__init(vi);
    vi->name = (char *)name;
    Onnx__TypeProto *tp = zalloc(sizeof *tp);
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Tensor *tt = zalloc(sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = elem;
    if (ndim >= 0) {
        Onnx__TensorShapeProto *sp = zalloc(sizeof *sp);
        onnx__tensor_shape_proto__init(sp);
        sp->n_dim = (size_t)ndim;
        sp->dim = zalloc(8 * sizeof *sp->dim);
        for (int i = 0; i < ndim; i++) {
            Onnx__TensorShapeProto__Dimension *d = zalloc(sizeof *d);
            onnx__tensor_shape_proto__dimension__init(d);
            if (params && params[i]) {
                d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
                d->dim_param = (char *)params[i];
            } else if (dims[i] >= 0) {
                d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
                d->dim_value = dims[i];
            }
            sp->dim[i] = d;
        }
        tt->shape = sp;
    }
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->type = tp;
    return vi;
}

static inline Onnx__NodeProto *node_pb(const char *op, const char *name, const char *ins, const char *outs)
{
    /* ins/outs: comma-separated names; an empty field is an omitted optional value */
    Onnx__NodeProto *n = zalloc(sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = (char *)op;
    n->name = (char *)name;
    n->input = zalloc(CAP * sizeof(char *));
    n->output = zalloc(CAP * sizeof(char *));
    n->attribute = zalloc(CAP * sizeof *n->attribute);
    for (int k = 0; k < 2; k++) {
        const char *s = k ? outs : ins;
        char **dst = k ? n->output : n->input;
        size_t *cnt = k ? &n->n_output : &n->n_input;
        if (!s)
            continue;
        char *copy = keep(strdup(s)), *p = copy;
        for (;;) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = 0;
            dst[(*cnt)++] = p;
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    return n;
}

static inline Onnx__AttributeProto *attr_pb(Onnx__NodeProto *n, const char *name, int type)
{
    Onnx__AttributeProto *a = zalloc(sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = (Onnx__AttributeProto__AttributeType)type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

typedef struct model { Onnx__ModelProto *m; Onnx__GraphProto *g; } model;

static inline model model_pb(int64_t ir, int64_t opset)
{
    model md;
    md.m = zalloc(sizeof *md.m);
    onnx__model_proto__init(md.m);
    md.g = zalloc(sizeof *md.g);
    onnx__graph_proto__init(md.g);
    md.m->has_ir_version = 1;
    md.m->ir_version = ir;
    md.m->producer_name = "test-onnx";
    md.m->producer_version = "0.1";
    md.m->graph = md.g;
    md.g->name = "g";
    Onnx__OperatorSetIdProto *op = zalloc(sizeof *op);
    onnx__operator_set_id_proto__init(op);
    op->domain = "";
    op->has_version = 1;
    op->version = opset;
    md.m->opset_import = zalloc(CAP * sizeof *md.m->opset_import);
    md.m->opset_import[md.m->n_opset_import++] = op;
    md.g->node = zalloc(CAP * sizeof *md.g->node);
    md.g->initializer = zalloc(CAP * sizeof *md.g->initializer);
    md.g->input = zalloc(CAP * sizeof *md.g->input);
    md.g->output = zalloc(CAP * sizeof *md.g->output);
    md.g->value_info = zalloc(CAP * sizeof *md.g->value_info);
    return md;
}

static inline void add_node(model *md, Onnx__NodeProto *n) { md->g->node[md->g->n_node++] = n; }
static inline void add_init(model *md, Onnx__TensorProto *t) { md->g->initializer[md->g->n_initializer++] = t; }
static inline void add_input(model *md, Onnx__ValueInfoProto *v) { md->g->input[md->g->n_input++] = v; }
static inline void add_output(model *md, Onnx__ValueInfoProto *v) { md->g->output[md->g->n_output++] = v; }

static inline void *pack_model(const model *md, size_t *len)
{
    *len = onnx__model_proto__get_packed_size(md->m);
    void *buf = malloc(*len + 1);
    ASSERT(buf);
    onnx__model_proto__pack(md->m, buf);
    return buf;
}

/* Packs md and imports it; returns the importer's code. */
static inline int load_pb(const model *md, const char *basedir, qs_graph **g, qs_err *e)
{
    size_t len;
    void *buf = pack_model(md, &len);
    int rc = qs_onnx_load_buffer(buf, len, basedir, g, e);
    free(buf);
    return rc;
}

static inline qs_graph *load_ok(const model *md)
{
    qs_err e = { 0 };
    qs_graph *g = NULL;
    int rc = load_pb(md, NULL, &g, &e);
    if (rc < 0)
        QT_FAIL_("import failed: %s", e.msg);
    return g;
}

static inline const qs_tensor *init_of(const qs_graph *g, const char *name)
{
    int v = qs_graph_find_value(g, name);
    ASSERT(v >= 0);
    ASSERT(g->values[v].init);
    return g->values[v].init;
}

static inline void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ASSERT(f);
    ASSERT_EQ(fwrite(data, 1, len, f), len);
    ASSERT_EQ(fclose(f), 0);
}

static char tmpdir[256];
static inline const char *make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test-onnx-XXXXXX");
    ASSERT(mkdtemp(tmpdir));
    return tmpdir;
}

static inline void rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", tmpdir, de->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(tmpdir);
}

/* Packs md and imports it; returns the importer's code (the graph of a success is freed). */
static inline int load_err(const model *md, qs_err *e)
{
    qs_graph *g = NULL;
    int rc = load_pb(md, NULL, &g, e);
    if (rc == 0)
        qs_graph_free(g);
    return rc;
}

#endif
