/* ONNX export: qs_graph → ModelProto → bytes or a file (import is in onnx.c).
 *
 * Export builds a ModelProto whose strings and raw_data point into the graph (nothing is copied
 * except 4-bit packing and, on big-endian hosts, byte swapping), then streams it to the file.
 * A model that would exceed protobuf's 2 GB limit keeps its large initializers in an external
 * data file beside it, as ONNX specifies. */
#include "onnx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "onnx_impl.h"

/* Protobuf's hard limit on a serialized message; above it large initializers go external. */
#define PROTOBUF_LIMIT ((size_t)INT32_MAX)
#define EXTERNAL_MIN_BYTES 1024   /* smaller tensors stay inline even in an external-data model */
#define EXTERNAL_ALIGN 4096       /* offsets aligned for mmap, as ONNX's own tools do */

/* Packs n 4-bit values (one per byte) into ceil(n/2) bytes at out. */
static void pack_4bit(const uint8_t *in, int64_t n, uint8_t *out)
{
    for (int64_t i = 0; i < (n + 1) / 2; i++) {
        uint8_t lo = in[2 * i] & 0x0f;
        uint8_t hi = 2 * i + 1 < n ? (in[2 * i + 1] & 0x0f) : 0;
        out[i] = (uint8_t)(lo | hi << 4);
    }
}

/* ---------------------------------------------------------------------------------------------
 * qs_graph → ModelProto
 *
 * Every protobuf-c struct built here comes from one arena, freed at once after packing. Strings
 * and tensor bytes point into the graph (pack only reads them). */

typedef struct arena { void **p; size_t n, cap; bool oom; int rc; } arena;

/* Records a non-memory failure (its message is already in e) and returns NULL. */
static void *afail(arena *a, int rc)
{
    a->rc = rc;
    return NULL;
}

static void *aalloc(arena *a, size_t size)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        void **p = realloc(a->p, cap * sizeof *p);
        if (!p) {
            a->oom = true;
            return NULL;
        }
        a->p = p;
        a->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (!m) {
        a->oom = true;
        return NULL;
    }
    a->p[a->n++] = m;
    return m;
}

static void arena_free(arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    free(a->p);
}

#define ANEW(a, T, INIT) anew_((a), sizeof(T), &(T)INIT)
static void *anew_(arena *a, size_t size, const void *init)
{
    void *m = aalloc(a, size);
    if (m)
        memcpy(m, init, size);
    return m;
}

/* An external-data sink for export: tensors of at least min_bytes go to fp at aligned offsets. */
typedef struct ext_sink {
    FILE *fp;
    const char *location;  /* file name relative to the model's folder */
    size_t min_bytes;
    uint64_t off;
    const char *path;      /* for messages */
} ext_sink;

static int ext_write(ext_sink *x, const void *data, size_t n, uint64_t *at, qs_err *e)
{
    static const uint8_t zeros[EXTERNAL_ALIGN];
    size_t pad = (size_t)((EXTERNAL_ALIGN - x->off % EXTERNAL_ALIGN) % EXTERNAL_ALIGN);
    if ((pad && fwrite(zeros, 1, pad, x->fp) != pad) || (n && fwrite(data, 1, n, x->fp) != n))
        return qs_error(e, QS_EIO, "cannot write external data file '%s': %s", x->path, strerror(errno));
    *at = x->off + pad;
    x->off += pad + n;
    return 0;
}

static Onnx__TensorProto *tensor_to_proto(arena *a, const qs_tensor *t, const char *name, ext_sink *ext,
                                          qs_err *e)
{
    Onnx__TensorProto *tp = ANEW(a, Onnx__TensorProto, ONNX__TENSOR_PROTO__INIT);
    if (!tp)
        return NULL;
    tp->name = (char *)name;
    tp->has_data_type = 1;
    tp->data_type = t->dtype;
    tp->n_dims = (size_t)t->ndim;
    tp->dims = aalloc(a, (size_t)(t->ndim ? t->ndim : 1) * sizeof(int64_t));
    if (!tp->dims)
        return NULL;
    memcpy(tp->dims, t->shape, (size_t)t->ndim * sizeof(int64_t));

    int64_t n = qs_numel(t);
    size_t nbytes = file_bytes(t->dtype, n);
    const uint8_t *bytes = t->data;
    if (is_4bit(t->dtype) || (!host_is_le() && qs_dtype_size(t->dtype) > 1)) {
        uint8_t *buf = aalloc(a, nbytes);
        if (!buf)
            return NULL;
        if (is_4bit(t->dtype)) {
            pack_4bit(t->data, n, buf);
        } else {
            memcpy(buf, t->data, nbytes);
            le_fix(buf, (size_t)n, qs_dtype_size(t->dtype));
        }
        bytes = buf;
    }
    if (ext && nbytes >= ext->min_bytes) {
        uint64_t at = 0;
        int rc = ext_write(ext, bytes, nbytes, &at, e);
        if (rc < 0)
            return afail(a, rc);
        char *offs = aalloc(a, 24), *lens = aalloc(a, 24);
        Onnx__StringStringEntryProto **kv = aalloc(a, 3 * sizeof *kv);
        if (!offs || !lens || !kv)
            return NULL;
        snprintf(offs, 24, "%llu", (unsigned long long)at);
        snprintf(lens, 24, "%zu", nbytes);
        const char *keys[3] = { "location", "offset", "length" };
        const char *vals[3] = { ext->location, offs, lens };
        for (int i = 0; i < 3; i++) {
            if (!(kv[i] = ANEW(a, Onnx__StringStringEntryProto, ONNX__STRING_STRING_ENTRY_PROTO__INIT)))
                return NULL;
            kv[i]->key = (char *)keys[i];
            kv[i]->value = (char *)vals[i];
        }
        tp->n_external_data = 3;
        tp->external_data = kv;
        tp->has_data_location = 1;
        tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        return tp;
    }
    tp->has_raw_data = 1;
    tp->raw_data.len = nbytes;
    tp->raw_data.data = (uint8_t *)bytes;
    return tp;
}

static Onnx__ValueInfoProto *value_info(arena *a, const qs_value *v)
{
    Onnx__ValueInfoProto *vi = ANEW(a, Onnx__ValueInfoProto, ONNX__VALUE_INFO_PROTO__INIT);
    if (!vi)
        return NULL;
    vi->name = v->name;
    if (v->dtype == QS_UNDEFINED && v->ndim < 0)
        return vi;
    Onnx__TypeProto *tp = ANEW(a, Onnx__TypeProto, ONNX__TYPE_PROTO__INIT);
    Onnx__TypeProto__Tensor *tt = ANEW(a, Onnx__TypeProto__Tensor, ONNX__TYPE_PROTO__TENSOR__INIT);
    if (!tp || !tt)
        return NULL;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->type = tp;
    if (v->dtype != QS_UNDEFINED) {
        tt->has_elem_type = 1;
        tt->elem_type = v->dtype;
    }
    if (v->ndim < 0)
        return vi;
    Onnx__TensorShapeProto *sp = ANEW(a, Onnx__TensorShapeProto, ONNX__TENSOR_SHAPE_PROTO__INIT);
    if (!sp)
        return NULL;
    sp->n_dim = (size_t)v->ndim;
    sp->dim = aalloc(a, (size_t)(v->ndim ? v->ndim : 1) * sizeof *sp->dim);
    if (!sp->dim)
        return NULL;
    for (int i = 0; i < v->ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d =
            ANEW(a, Onnx__TensorShapeProto__Dimension, ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT);
        if (!d)
            return NULL;
        if (v->shape[i] >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = v->shape[i];
        } else if (v->dim_param[i]) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = v->dim_param[i];
        }
        sp->dim[i] = d;
    }
    tt->shape = sp;
    return vi;
}

static Onnx__AttributeProto *attr_to_proto(arena *a, const qs_attr *at, ext_sink *ext, qs_err *e)
{
    Onnx__AttributeProto *pa = ANEW(a, Onnx__AttributeProto, ONNX__ATTRIBUTE_PROTO__INIT);
    if (!pa)
        return NULL;
    pa->name = at->name;
    pa->has_type = 1;
    pa->type = (Onnx__AttributeProto__AttributeType)at->type;
    switch (at->type) {
    case QS_ATTR_FLOAT: pa->has_f = 1; pa->f = at->f; break;
    case QS_ATTR_INT: pa->has_i = 1; pa->i = at->i; break;
    case QS_ATTR_STRING:
        pa->has_s = 1;
        pa->s.data = (uint8_t *)nz(at->s);
        pa->s.len = strlen(nz(at->s));
        break;
    case QS_ATTR_TENSOR:
        if (!at->t)
            return afail(a, qs_error(e, QS_EINVAL, "tensor attribute '%s' has no tensor", at->name));
        if (!(pa->t = tensor_to_proto(a, at->t, "", ext, e)))
            return NULL;
        break;
    case QS_ATTR_FLOATS: pa->n_floats = (size_t)at->n; pa->floats = at->floats; break;
    case QS_ATTR_INTS: pa->n_ints = (size_t)at->n; pa->ints = at->ints; break;
    case QS_ATTR_STRINGS:
        pa->n_strings = (size_t)at->n;
        pa->strings = aalloc(a, (size_t)(at->n ? at->n : 1) * sizeof *pa->strings);
        if (!pa->strings)
            return NULL;
        for (int i = 0; i < at->n; i++) {
            pa->strings[i].data = (uint8_t *)nz(at->strings[i]);
            pa->strings[i].len = strlen(nz(at->strings[i]));
        }
        break;
    default:
        return afail(a, qs_error(e, QS_EINVAL, "attribute '%s' has unknown type %d", nz(at->name), (int)at->type));
    }
    return pa;
}

/* The oldest IR version that may carry this default-domain opset (ONNX's versioning table). */
static int64_t ir_for_opset(int64_t opset)
{
    if (opset >= 21) return 10;
    if (opset >= 19) return 9;
    if (opset >= 15) return 8;
    if (opset >= 12) return 7;
    if (opset == 11) return 6;
    if (opset == 10) return 5;
    if (opset == 9) return 4;
    return 3;
}

static int build_model(const qs_graph *g, arena *a, ext_sink *ext, Onnx__ModelProto **out, qs_err *e)
{
#define NEED(x) do { if (!(x)) return a->oom ? qs_error(e, QS_ENOMEM, "out of memory") : a->rc; } while (0)
    Onnx__ModelProto *m = ANEW(a, Onnx__ModelProto, ONNX__MODEL_PROTO__INIT);
    Onnx__GraphProto *gp = ANEW(a, Onnx__GraphProto, ONNX__GRAPH_PROTO__INIT);
    NEED(m && gp);
    m->graph = gp;
    m->producer_name = g->producer_name ? g->producer_name : "quantd";
    m->producer_version = g->producer_version;
    m->doc_string = g->doc;
    gp->name = g->name && *g->name ? g->name : "quantd";

    /* opsets: the graph's, plus any domain a node uses without one */
    int maxop = g->nopsets + g->nnodes + 1;
    m->opset_import = aalloc(a, (size_t)maxop * sizeof *m->opset_import);
    NEED(m->opset_import);
    bool any_int4 = false;
    for (int i = 0; i < g->nopsets; i++) {
        Onnx__OperatorSetIdProto *op = ANEW(a, Onnx__OperatorSetIdProto, ONNX__OPERATOR_SET_ID_PROTO__INIT);
        NEED(op);
        op->domain = (char *)nz(g->opsets[i].domain);
        op->has_version = 1;
        op->version = g->opsets[i].version;
        m->opset_import[m->n_opset_import++] = op;
    }
    for (int i = 0; i < g->nnodes; i++) {
        const char *dom = nz(g->nodes[i].domain);
        bool found = false;
        for (size_t j = 0; j < m->n_opset_import && !found; j++)
            found = !strcmp(m->opset_import[j]->domain, dom);
        if (found)
            continue;
        if (!*dom)
            return qs_error(e, QS_EINVAL, "cannot export: the graph has no opset for the default ONNX domain");
        Onnx__OperatorSetIdProto *op = ANEW(a, Onnx__OperatorSetIdProto, ONNX__OPERATOR_SET_ID_PROTO__INIT);
        NEED(op);
        op->domain = (char *)dom;
        op->has_version = 1;
        op->version = 1;
        m->opset_import[m->n_opset_import++] = op;
    }

    /* initializers */
    int ninit = 0;
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].init)
            ninit++;
    gp->initializer = aalloc(a, (size_t)(ninit + 1) * sizeof *gp->initializer);
    NEED(gp->initializer);
    for (int v = 0; v < g->nvalues; v++) {
        const qs_value *val = &g->values[v];
        if (!val->init)
            continue;
        if (is_4bit(val->init->dtype))
            any_int4 = true;
        Onnx__TensorProto *tp = tensor_to_proto(a, val->init, val->name, ext, e);
        NEED(tp);
        gp->initializer[gp->n_initializer++] = tp;
    }

    int64_t opset = qs_graph_opset(g, "");
    m->has_ir_version = 1;
    m->ir_version = g->ir_version > 0 ? g->ir_version : 0;
    if (m->ir_version < ir_for_opset(opset))
        m->ir_version = ir_for_opset(opset);
    if (any_int4 && m->ir_version < 10)
        m->ir_version = 10;
    if (ext && m->ir_version < 4)   /* external data needs IR 4 or later (ONNX 1.4) */
        m->ir_version = 4;

    /* inputs; before IR 4 every initializer must also be listed as a graph input */
    bool init_inputs = m->ir_version < 4;
    gp->input = aalloc(a, (size_t)(g->ninputs + (init_inputs ? ninit : 0) + 1) * sizeof *gp->input);
    NEED(gp->input);
    for (int i = 0; i < g->ninputs; i++) {
        Onnx__ValueInfoProto *vi = value_info(a, &g->values[g->inputs[i]]);
        NEED(vi);
        gp->input[gp->n_input++] = vi;
    }
    for (int v = 0; init_inputs && v < g->nvalues; v++) {
        if (!g->values[v].init)
            continue;
        qs_value tmp = g->values[v];
        tmp.dtype = tmp.init->dtype;
        tmp.ndim = tmp.init->ndim;
        memcpy(tmp.shape, tmp.init->shape, sizeof tmp.shape);
        memset(tmp.dim_param, 0, sizeof tmp.dim_param);
        Onnx__ValueInfoProto *vi = value_info(a, &tmp);
        NEED(vi);
        gp->input[gp->n_input++] = vi;
    }
    gp->output = aalloc(a, (size_t)(g->noutputs + 1) * sizeof *gp->output);
    NEED(gp->output);
    for (int i = 0; i < g->noutputs; i++) {
        Onnx__ValueInfoProto *vi = value_info(a, &g->values[g->outputs[i]]);
        NEED(vi);
        gp->output[gp->n_output++] = vi;
    }

    /* value_info: declared types of intermediate values (kept so a round trip loses nothing) */
    gp->value_info = aalloc(a, (size_t)(g->nvalues + 1) * sizeof *gp->value_info);
    NEED(gp->value_info);
    for (int v = 0; v < g->nvalues; v++) {
        const qs_value *val = &g->values[v];
        if (val->init || val->producer < 0 || qs_graph_is_output(g, v) || val->dtype == QS_UNDEFINED)
            continue;
        Onnx__ValueInfoProto *vi = value_info(a, val);
        NEED(vi);
        gp->value_info[gp->n_value_info++] = vi;
    }

    gp->node = aalloc(a, (size_t)(g->nnodes + 1) * sizeof *gp->node);
    NEED(gp->node);
    for (int i = 0; i < g->nnodes; i++) {
        const qs_node *n = &g->nodes[i];
        Onnx__NodeProto *np = ANEW(a, Onnx__NodeProto, ONNX__NODE_PROTO__INIT);
        NEED(np);
        np->op_type = n->op;
        np->name = n->name && *n->name ? n->name : NULL;
        np->domain = n->domain && *n->domain ? n->domain : NULL;
        np->input = aalloc(a, (size_t)(n->nin + 1) * sizeof(char *));
        np->output = aalloc(a, (size_t)(n->nout + 1) * sizeof(char *));
        np->attribute = aalloc(a, (size_t)(n->nattr + 1) * sizeof *np->attribute);
        NEED(np->input && np->output && np->attribute);
        for (int k = 0; k < n->nin; k++)
            np->input[np->n_input++] = n->in[k] >= 0 ? g->values[n->in[k]].name : "";
        for (int k = 0; k < n->nout; k++)
            np->output[np->n_output++] = n->out[k] >= 0 ? g->values[n->out[k]].name : "";
        for (int k = 0; k < n->nattr; k++) {
            Onnx__AttributeProto *pa = attr_to_proto(a, &n->attr[k], NULL, e);
            if (!pa && !a->oom) {
                char lb[300];
                qs_error_prefix(e, "%s: ", qs_node_label(g, i, lb, sizeof lb));
                return a->rc;
            }
            NEED(pa);
            np->attribute[np->n_attribute++] = pa;
        }
        gp->node[gp->n_node++] = np;
    }
    *out = m;
    return 0;
#undef NEED
}

/* Sum of initializer bytes, to decide whether the model fits in one protobuf message. */
static size_t init_bytes(const qs_graph *g)
{
    size_t s = 0;
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].init)
            s += file_bytes(g->values[v].init->dtype, qs_numel(g->values[v].init));
    return s;
}

int qs_onnx_save_buffer(const qs_graph *g, void **buf, size_t *len, qs_err *e)
{
    *buf = NULL;
    *len = 0;
    arena a = { 0 };
    Onnx__ModelProto *m = NULL;
    int rc = build_model(g, &a, NULL, &m, e);
    if (rc == 0) {
        size_t n = onnx__model_proto__get_packed_size(m);
        if (n > PROTOBUF_LIMIT) {
            rc = qs_error(e, QS_EUNSUPPORTED, "the model is %zu bytes, over protobuf's 2 GB limit; save it to a file "
                          "(its large initializers then go to an external data file)", n);
        } else if (!(*buf = malloc(n ? n : 1))) {
            rc = qs_error(e, QS_ENOMEM, "out of memory for a %zu-byte model", n);
        } else {
            *len = onnx__model_proto__pack(m, *buf);
        }
    }
    arena_free(&a);
    return rc;
}

typedef struct file_buffer {
    ProtobufCBuffer base;
    FILE *fp;
    bool failed;
} file_buffer;

static void file_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
    file_buffer *fb = (file_buffer *)b;
    if (!fb->failed && len && fwrite(data, 1, len, fb->fp) != len)
        fb->failed = true;
}

/* Writes the model to a temporary file beside path and renames it into place, so that readers
 * never see half a model. ext_min == 0: everything inline. */
static int save_file(const qs_graph *g, const char *path, size_t ext_min, qs_err *e)
{
    int rc = 0;
    char *tmp = NULL, *data_path = NULL, *data_tmp = NULL;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char *location = NULL;
    ext_sink ext = { 0 };
    arena a = { 0 };
    FILE *fp = NULL;

    /* not mkstemp: its 0600 would survive the rename; O_EXCL + the umask gives the usual mode */
    static atomic_uint counter;
    if (asprintf(&tmp, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1)) < 0)
        return qs_error(e, QS_ENOMEM, "out of memory");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        rc = qs_error(e, QS_EIO, "cannot create '%s': %s", path, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto out;
    }
    fp = fdopen(fd, "wb");
    if (!fp) {
        close(fd);
        rc = qs_error(e, QS_EIO, "cannot write '%s': %s", path, strerror(errno));
        goto out;
    }
    if (ext_min) {
        if (asprintf(&location, "%s.data", base) < 0 || asprintf(&data_path, "%s.data", path) < 0 ||
            asprintf(&data_tmp, "%s.data.tmp", path) < 0) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            goto out;
        }
        ext.fp = fopen(data_tmp, "wb");
        if (!ext.fp) {
            rc = qs_error(e, QS_EIO, "cannot create external data file '%s': %s", data_tmp, strerror(errno));
            goto out;
        }
        ext.location = location;
        ext.min_bytes = ext_min;
        ext.path = data_path;
    }
    Onnx__ModelProto *m = NULL;
    rc = build_model(g, &a, ext_min ? &ext : NULL, &m, e);
    if (rc < 0)
        goto out;
    size_t n = onnx__model_proto__get_packed_size(m);
    if (n > PROTOBUF_LIMIT) {
        rc = qs_error(e, QS_EUNSUPPORTED, "the model is %zu bytes without its external initializers, over "
                      "protobuf's 2 GB limit", n);
        goto out;
    }
    file_buffer fb = { .base = { .append = file_append }, .fp = fp };
    protobuf_c_message_pack_to_buffer(&m->base, &fb.base);
    if (fb.failed || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        rc = qs_error(e, QS_EIO, "cannot write '%s': %s", path, strerror(errno));
        goto out;
    }
    if (ext.fp) {
        int bad = fflush(ext.fp) != 0 || fsync(fileno(ext.fp)) != 0;
        bad |= fclose(ext.fp) != 0;
        ext.fp = NULL;
        if (bad || rename(data_tmp, data_path) < 0) {
            rc = qs_error(e, QS_EIO, "cannot write external data file '%s': %s", data_path, strerror(errno));
            goto out;
        }
    }
    int bad = fclose(fp) != 0;
    fp = NULL;
    if (bad || rename(tmp, path) < 0)
        rc = qs_error(e, QS_EIO, "cannot write '%s': %s", path, strerror(errno));
out:
    if (fp)
        fclose(fp);
    if (ext.fp)
        fclose(ext.fp);
    if (rc < 0) {
        if (tmp)
            unlink(tmp);
        if (data_tmp)
            unlink(data_tmp);
    }
    arena_free(&a);
    free(tmp);
    free(location);
    free(data_path);
    free(data_tmp);
    return rc;
}

int qs_onnx_save(const qs_graph *g, const char *path, qs_err *e)
{
    /* 64 MB of headroom for nodes, names and small tensors */
    size_t ext_min = init_bytes(g) > PROTOBUF_LIMIT - ((size_t)64 << 20) ? EXTERNAL_MIN_BYTES : 0;
    return save_file(g, path, ext_min, e);
}

int qs_onnx_save_external(const qs_graph *g, const char *path, size_t min_bytes, qs_err *e)
{
    return save_file(g, path, min_bytes ? min_bytes : 1, e);
}
