/* ONNX import on top of the protobuf-c code generated from the system's onnx.proto; export is in
 * onnx_export.c, and what both share (byte order, 4-bit packing sizes) in onnx_impl.h.
 *
 * Import unpacks the whole ModelProto (the file is memory-mapped, so only protobuf-c's copy is in
 * memory), then walks it once: opsets, initializers, runtime inputs, nodes, outputs, value_info,
 * and finally a topological sort that also proves every value read is produced somewhere.
 * Initializer bytes are not copied twice: protobuf-c allocates each raw_data field separately
 * through our allocator (malloc), so a tensor whose raw bytes already have the in-memory layout
 * takes that buffer over ("steals" it) and the message is freed without it.
 *
 * Not imported: model-local functions and metadata_props (dropped), training_info (dropped);
 * refused as unsupported: sparse initializers, subgraph attributes (If/Loop/Scan), non-tensor
 * graph inputs/outputs (sequence, map, optional), and tensor types the engine has no dtype for
 * (float16, bfloat16, string, uint32, uint64, complex, float8). */
#include "onnx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "onnx_impl.h"

/* protobuf-c allocates through this, so that raw_data buffers can be handed to qs_tensor
 * (which frees with free()). */
static void *pb_alloc(void *ud, size_t n) { (void)ud; return malloc(n ? n : 1); }
static void pb_free(void *ud, void *p) { (void)ud; free(p); }
static ProtobufCAllocator pb_allocator = { pb_alloc, pb_free, NULL };

static const char *onnx_type_name(int code)
{
    switch (code) {
    case 8: return "string";
    case 10: return "float16";
    case 12: return "uint32";
    case 13: return "uint64";
    case 14: return "complex64";
    case 15: return "complex128";
    case 16: return "bfloat16";
    case 17: case 18: case 19: case 20: return "float8";
    case 23: return "float4e2m1";
    default: break;
    }
    const char *n = qs_dtype_name((qs_dtype)code);
    return strcmp(n, "undefined") ? n : "unknown";
}

static bool dtype_supported(int code)
{
    return code >= 0 && code <= 255 && qs_dtype_size((qs_dtype)code) > 0;
}

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

/* File-system paths: the folder of a file ("." when it has none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* ---------------------------------------------------------------------------------------------
 * Reading files */

typedef struct mapped { void *data; size_t len; } mapped;

static int map_file(const char *path, mapped *m, qs_err *e)
{
    m->data = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qs_error(e, QS_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qs_error(e, QS_EIO, "'%s' is not a readable regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return qs_error(e, QS_EFORMAT, "'%s' is empty", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return qs_error(e, QS_EIO, "cannot map '%s': %s", path, strerror(errno));
    m->data = p;
    m->len = (size_t)st.st_size;
    return 0;
}

static void unmap_file(mapped *m)
{
    if (m->data)
        munmap(m->data, m->len);
    m->data = NULL;
}

/* Reads exactly n bytes at offset, looping over short reads. */
static int read_at(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n > (1u << 30) ? (1u << 30) : n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * TensorProto → qs_tensor */

/* External data locations are relative to the model's folder and may not leave it: a model
 * uploaded to the daemon must not be able to read arbitrary files. */
static int check_location(const char *what, const char *loc, qs_err *e)
{
    if (!loc || !*loc)
        return qs_error(e, QS_EFORMAT, "%s: external data without a location", what);
    if (loc[0] == '/')
        return qs_error(e, QS_EFORMAT, "%s: external data location '%s' is an absolute path; it must be "
                        "relative to the model's folder", what, loc);
    for (const char *p = loc; *p;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return qs_error(e, QS_EFORMAT, "%s: external data location '%s' leaves the model's folder",
                            what, loc);
        p += len;
        while (*p == '/')
            p++;
    }
    return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-')
        return -1;
    *v = x;
    return 0;
}

/* Reads nbytes of external data for tp into buf. */
static int read_external(const Onnx__TensorProto *tp, const char *basedir, const char *what, void *buf,
                         size_t nbytes, qs_err *e)
{
    const char *loc = NULL, *off_s = NULL, *len_s = NULL;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *kv = tp->external_data[i];
        const char *k = nz(kv->key);
        if (!strcmp(k, "location"))
            loc = kv->value;
        else if (!strcmp(k, "offset"))
            off_s = kv->value;
        else if (!strcmp(k, "length"))
            len_s = kv->value;
    }
    int rc = check_location(what, loc, e);
    if (rc < 0)
        return rc;
    uint64_t off = 0, len = nbytes;
    if (off_s && parse_u64(off_s, &off) < 0)
        return qs_error(e, QS_EFORMAT, "%s: external data offset '%s' is not a number", what, off_s);
    if (len_s && parse_u64(len_s, &len) < 0)
        return qs_error(e, QS_EFORMAT, "%s: external data length '%s' is not a number", what, len_s);
    if (len != nbytes)
        return qs_error(e, QS_EFORMAT, "%s: external data length %llu does not match its shape and type "
                        "(%zu bytes)", what, (unsigned long long)len, nbytes);

    char *path = NULL;
    if (asprintf(&path, "%s/%s", basedir ? basedir : ".", loc) < 0)
        return qs_error(e, QS_ENOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = qs_error(e, QS_EIO, "%s: cannot open external data file '%s': %s", what, path, strerror(errno));
        free(path);
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = qs_error(e, QS_EIO, "%s: external data file '%s' is not a regular file", what, path);
    } else if (off > (uint64_t)st.st_size || nbytes > (uint64_t)st.st_size - off) {
        rc = qs_error(e, QS_EFORMAT, "%s: external data file '%s' has %lld bytes, the tensor needs %zu at "
                      "offset %llu", what, path, (long long)st.st_size, nbytes, (unsigned long long)off);
    } else if (off > (uint64_t)INT64_MAX || read_at(fd, buf, nbytes, (off_t)off) < 0) {
        rc = qs_error(e, QS_EIO, "%s: cannot read external data file '%s': %s", what, path,
                      errno ? strerror(errno) : "short read");
    }
    close(fd);
    free(path);
    return rc;
}

/* Unpacks n 4-bit values (two per byte, low nibble first) in place: buf holds ceil(n/2) packed
 * bytes and has room for n. Walks backwards so no byte is overwritten before it is read. */
static void unpack_4bit(uint8_t *buf, int64_t n, bool is_signed)
{
    for (int64_t i = n - 1; i >= 0; i--) {
        uint8_t nib = (buf[i / 2] >> ((i & 1) * 4)) & 0x0f;
        buf[i] = is_signed ? (uint8_t)(int8_t)((int8_t)(nib << 4) >> 4) : nib;
    }
}

/* Converts tp into a new tensor. what names it in messages ("initializer 'w'"). raw_data may be
 * taken over (tp is modified: its raw_data is cleared). */
static int tensor_from_proto(Onnx__TensorProto *tp, const char *basedir, const char *what, qs_tensor **out,
                             qs_err *e)
{
    *out = NULL;
    int code = tp->has_data_type ? tp->data_type : 0;
    if (code == 0)
        return qs_error(e, QS_EFORMAT, "%s: tensor has no data type", what);
    if (!dtype_supported(code))
        return qs_error(e, QS_EUNSUPPORTED, "%s: data type %s (%d) is not supported", what,
                        onnx_type_name(code), code);
    qs_dtype dt = (qs_dtype)code;
    if (tp->n_dims > QS_MAX_DIMS)
        return qs_error(e, QS_EUNSUPPORTED, "%s: %zu dimensions, at most %d are supported", what, tp->n_dims,
                        QS_MAX_DIMS);
    if (tp->segment)
        return qs_error(e, QS_EUNSUPPORTED, "%s: segmented tensors are not supported", what);
    int ndim = (int)tp->n_dims;
    int64_t n = 1;
    char sb[QS_MAX_DIMS * 24 + 4];
    qs_shape_str(ndim, tp->dims, sb, sizeof sb);
    for (int i = 0; i < ndim; i++) {
        if (tp->dims[i] < 0)
            return qs_error(e, QS_EFORMAT, "%s: negative dimension %lld in shape %s", what, (long long)tp->dims[i], sb);
        if (tp->dims[i] && n > (INT64_MAX / 16) / tp->dims[i])
            return qs_error(e, QS_EFORMAT, "%s: shape %s is too large", what, sb);
        n *= tp->dims[i];
    }
    size_t fbytes = file_bytes(dt, n);

    /* The data must match the dims before anything is allocated from them: a few bytes of
     * protobuf can claim any shape. External data is checked against its file when read. */
    bool external = tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    if (!external && tp->has_raw_data) {
        if (tp->raw_data.len != fbytes)
            return qs_error(e, QS_EFORMAT, "%s: raw_data has %zu bytes, shape %s of %s needs %zu", what,
                            tp->raw_data.len, sb, qs_dtype_name(dt), fbytes);
    } else if (!external) {
        /* typed fields: which one holds the values depends on the type */
        size_t have = 0, want = (size_t)n;
        const char *field;
        switch (dt) {
        case QS_F32: have = tp->n_float_data; field = "float_data"; break;
        case QS_I64: have = tp->n_int64_data; field = "int64_data"; break;
        case QS_F64: have = tp->n_double_data; field = "double_data"; break;
        case QS_I4: case QS_U4: have = tp->n_int32_data; field = "int32_data"; want = (size_t)(n + 1) / 2; break;
        default: have = tp->n_int32_data; field = "int32_data"; break;
        }
        if (have != want)
            return qs_error(e, QS_EFORMAT, "%s: %s has %zu values, shape %s needs %zu", what, field, have, sb, want);
    }
    int rc = qs_check_tensor_size(e, what, dt, ndim, tp->dims);
    if (rc < 0)
        return rc;

    /* raw bytes already in memory layout: take protobuf-c's buffer instead of copying */
    if (!external && tp->has_raw_data && n > 0 && !is_4bit(dt) && host_is_le()) {
        qs_tensor *t = qs_tensor_wrap(dt, ndim, tp->dims, tp->raw_data.data);
        if (!t)
            return qs_error(e, QS_ENOMEM, "out of memory");
        t->owns_data = 1;
        tp->raw_data.data = NULL;
        tp->raw_data.len = 0;
        tp->has_raw_data = 0;
        *out = t;
        return 0;
    }

    qs_tensor *t = qs_tensor_new(dt, ndim, tp->dims);
    if (!t)
        return qs_error(e, QS_ENOMEM, "%s: out of memory for shape %s", what, sb);
    size_t esz = qs_dtype_size(dt);
    if (external) {
        rc = read_external(tp, basedir, what, t->data, fbytes, e);
        if (rc == 0 && is_4bit(dt))
            unpack_4bit(t->data, n, dt == QS_I4);
        else if (rc == 0)
            le_fix(t->data, (size_t)n, esz);
    } else if (tp->has_raw_data) {
        if (n > 0) {
            memcpy(t->data, tp->raw_data.data, fbytes);
            if (is_4bit(dt))
                unpack_4bit(t->data, n, dt == QS_I4);
            else
                le_fix(t->data, (size_t)n, esz);
        }
    } else {
        /* typed fields, their count checked above; 4-bit values come packed two per int32 */
        size_t have = is_4bit(dt) ? (size_t)(n + 1) / 2 : (size_t)n;
        for (size_t i = 0; i < have; i++) {
            switch (dt) {
            case QS_F32: qs_f32(t)[i] = tp->float_data[i]; break;
            case QS_I64: qs_i64(t)[i] = tp->int64_data[i]; break;
            case QS_F64: ((double *)t->data)[i] = tp->double_data[i]; break;
            case QS_I32: qs_i32(t)[i] = tp->int32_data[i]; break;
            case QS_I16: ((int16_t *)t->data)[i] = (int16_t)tp->int32_data[i]; break;
            case QS_U16: ((uint16_t *)t->data)[i] = (uint16_t)tp->int32_data[i]; break;
            case QS_I8: qs_i8(t)[i] = (int8_t)tp->int32_data[i]; break;
            case QS_U8: case QS_I4: case QS_U4: qs_u8(t)[i] = (uint8_t)tp->int32_data[i]; break;
            case QS_BOOL: qs_u8(t)[i] = tp->int32_data[i] != 0; break;
            default: break;
            }
        }
        if (is_4bit(dt))
            unpack_4bit(t->data, n, dt == QS_I4);
    }
    if (rc < 0) {
        qs_tensor_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * ModelProto → qs_graph */

typedef struct importer {
    qs_graph *g;
    const char *basedir;
    qs_err *e;
    char *is_input;     /* per value id, grown as values are created */
    int is_input_cap;
} importer;

static int mark_input(importer *im, int v)
{
    if (v >= im->is_input_cap) {
        int cap = im->is_input_cap ? im->is_input_cap : 64;
        while (cap <= v)
            cap *= 2;
        char *p = realloc(im->is_input, (size_t)cap);
        if (!p)
            return -1;
        memset(p + im->is_input_cap, 0, (size_t)(cap - im->is_input_cap));
        im->is_input = p;
        im->is_input_cap = cap;
    }
    im->is_input[v] = 1;
    return 0;
}

static bool marked_input(const importer *im, int v) { return v < im->is_input_cap && im->is_input[v]; }

/* Declared type and shape of a value from a ValueInfoProto. Non-tensor types are an error for
 * graph inputs and outputs (role != NULL) and ignored for value_info hints. */
static int apply_value_info(importer *im, const Onnx__ValueInfoProto *vi, int v, const char *role)
{
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case == ONNX__TYPE_PROTO__VALUE__NOT_SET)
        return 0;
    if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) {
        if (!role)
            return 0;
        const char *kind = tp->value_case == ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE ? "sequence"
                         : tp->value_case == ONNX__TYPE_PROTO__VALUE_MAP_TYPE ? "map"
                         : tp->value_case == ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE ? "optional"
                         : tp->value_case == ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE ? "sparse tensor" : "non-tensor";
        return qs_error(im->e, QS_EUNSUPPORTED, "graph %s '%s' has %s type; only tensors are supported", role,
                        nz(vi->name), kind);
    }
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    qs_value *val = &im->g->values[v];
    if (tt->has_elem_type)
        val->dtype = (qs_dtype)tt->elem_type;   /* kept even when unsupported: qs_exec_check names it */
    if (!tt->shape)
        return 0;
    if (tt->shape->n_dim > QS_MAX_DIMS) {
        if (!role)
            return 0;
        return qs_error(im->e, QS_EUNSUPPORTED, "graph %s '%s' has %zu dimensions, at most %d are supported",
                        role, nz(vi->name), tt->shape->n_dim, QS_MAX_DIMS);
    }
    for (int i = 0; i < QS_MAX_DIMS; i++) {
        free(val->dim_param[i]);
        val->dim_param[i] = NULL;
    }
    val->ndim = (int)tt->shape->n_dim;
    for (int i = 0; i < val->ndim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        val->shape[i] = -1;
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value >= 0)
            val->shape[i] = d->dim_value;
        else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM && d->dim_param &&
                 *d->dim_param && !(val->dim_param[i] = strdup(d->dim_param)))
            return qs_error(im->e, QS_ENOMEM, "out of memory");
    }
    return 0;
}

static const char *attr_type_name(int t)
{
    switch (t) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return "a subgraph";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS: return "a list of subgraphs";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS: return "a list of tensors";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR: return "a sparse tensor";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS: return "a list of sparse tensors";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO: return "a type";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS: return "a list of types";
    default: return "of an unknown type";
    }
}

/* Old models (IR 1) leave AttributeProto.type unset; the field that is present tells. */
static int attr_kind(const Onnx__AttributeProto *a)
{
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
        return a->type;
    if (a->has_f) return QS_ATTR_FLOAT;
    if (a->has_i) return QS_ATTR_INT;
    if (a->has_s) return QS_ATTR_STRING;
    if (a->t) return QS_ATTR_TENSOR;
    if (a->g) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    if (a->n_floats) return QS_ATTR_FLOATS;
    if (a->n_ints) return QS_ATTR_INTS;
    if (a->n_strings) return QS_ATTR_STRINGS;
    if (a->n_graphs) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS;
    return 0;
}

static void attr_clear(qs_attr *a)
{
    free(a->name);
    free(a->s);
    qs_tensor_free(a->t);
    free(a->floats);
    free(a->ints);
    for (int i = 0; a->strings && i < a->n; i++)
        free(a->strings[i]);
    free(a->strings);
    memset(a, 0, sizeof *a);
}

static char *bytes_dup(ProtobufCBinaryData b)
{
    char *s = malloc(b.len + 1);
    if (s) {
        if (b.len)
            memcpy(s, b.data, b.len);
        s[b.len] = 0;
    }
    return s;
}

/* Fills a from the proto attribute pa of node label. */
static int import_attr(importer *im, Onnx__AttributeProto *pa, const char *label, qs_attr *a)
{
    qs_err *e = im->e;
    memset(a, 0, sizeof *a);
    const char *name = nz(pa->name);
    if (!*name)
        return qs_error(e, QS_EFORMAT, "%s: attribute without a name", label);
    if (pa->ref_attr_name && *pa->ref_attr_name)
        return qs_error(e, QS_EUNSUPPORTED, "%s: attribute '%s' refers to a function attribute", label, name);
    int kind = attr_kind(pa);
    if (!(a->name = strdup(name)))
        return qs_error(e, QS_ENOMEM, "out of memory");
    a->type = (qs_attr_type)kind;
    switch (kind) {
    case QS_ATTR_FLOAT: a->f = pa->f; return 0;
    case QS_ATTR_INT: a->i = pa->i; return 0;
    case QS_ATTR_STRING:
        if (!(a->s = bytes_dup(pa->s)))
            return qs_error(e, QS_ENOMEM, "out of memory");
        return 0;
    case QS_ATTR_TENSOR: {
        if (!pa->t)
            return qs_error(e, QS_EFORMAT, "%s: tensor attribute '%s' has no tensor", label, name);
        char what[512];
        snprintf(what, sizeof what, "%s: attribute '%s'", label, name);
        return tensor_from_proto(pa->t, im->basedir, what, &a->t, e);
    }
    case QS_ATTR_FLOATS:
        a->n = (int)pa->n_floats;
        if (!(a->floats = malloc((pa->n_floats ? pa->n_floats : 1) * sizeof(float))))
            return qs_error(e, QS_ENOMEM, "out of memory");
        if (pa->n_floats)
            memcpy(a->floats, pa->floats, pa->n_floats * sizeof(float));
        return 0;
    case QS_ATTR_INTS:
        a->n = (int)pa->n_ints;
        if (!(a->ints = malloc((pa->n_ints ? pa->n_ints : 1) * sizeof(int64_t))))
            return qs_error(e, QS_ENOMEM, "out of memory");
        if (pa->n_ints)
            memcpy(a->ints, pa->ints, pa->n_ints * sizeof(int64_t));
        return 0;
    case QS_ATTR_STRINGS:
        if (!(a->strings = calloc(pa->n_strings ? pa->n_strings : 1, sizeof(char *))))
            return qs_error(e, QS_ENOMEM, "out of memory");
        for (size_t i = 0; i < pa->n_strings; i++) {
            if (!(a->strings[i] = bytes_dup(pa->strings[i])))
                return qs_error(e, QS_ENOMEM, "out of memory");
            a->n = (int)i + 1;
        }
        return 0;
    case 0:
        return qs_error(e, QS_EFORMAT, "%s: attribute '%s' has no value", label, name);
    default:
        if (kind == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH || kind == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS)
            return qs_error(e, QS_EUNSUPPORTED, "%s: attribute '%s' is %s; control flow (If, Loop, Scan) is "
                            "unsupported", label, name, attr_type_name(kind));
        return qs_error(e, QS_EUNSUPPORTED, "%s: attribute '%s' is %s, which is unsupported", label, name,
                        attr_type_name(kind));
    }
}

static void node_label(const Onnx__NodeProto *np, size_t idx, char *buf, size_t n)
{
    if (np->name && *np->name)
        snprintf(buf, n, "%s '%s'", nz(np->op_type), np->name);
    else
        snprintf(buf, n, "%s (node %zu)", nz(np->op_type), idx);
}

static int import_node(importer *im, Onnx__NodeProto *np, size_t idx)
{
    qs_graph *g = im->g;
    qs_err *e = im->e;
    char label[400];
    node_label(np, idx, label, sizeof label);
    if (!np->op_type || !*np->op_type)
        return qs_error(e, QS_EFORMAT, "node %zu has no op_type", idx);
    if (np->n_output == 0)   /* every ONNX operator has at least one output */
        return qs_error(e, QS_EFORMAT, "%s has no outputs", label);

    /* trailing omitted outputs are simply absent; one omitted in the middle stays -1 */
    size_t nout = np->n_output;
    while (nout > 0 && !*nz(np->output[nout - 1]))
        nout--;
    int *ids = malloc((np->n_input + nout + 1) * sizeof(int));
    if (!ids)
        return qs_error(e, QS_ENOMEM, "out of memory");
    int *in = ids, *out = ids + np->n_input;
    int rc = 0;
    for (size_t i = 0; i < np->n_input && rc == 0; i++) {
        const char *nm = nz(np->input[i]);
        in[i] = *nm ? qs_graph_value(g, nm) : -1;
        if (*nm && in[i] < 0)
            rc = qs_error(e, QS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < nout && rc == 0; i++) {
        const char *nm = nz(np->output[i]);
        out[i] = -1;
        if (!*nm)
            continue;
        int v = qs_graph_value(g, nm);
        if (v < 0) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            break;
        }
        const qs_value *val = &g->values[v];
        char other[400];
        if (val->producer >= 0)
            rc = qs_error(e, QS_EFORMAT, "duplicate output name '%s': written by %s and by %s", nm,
                          qs_node_label(g, val->producer, other, sizeof other), label);
        else if (val->init)
            rc = qs_error(e, QS_EFORMAT, "duplicate output name '%s': %s writes an initializer", nm, label);
        else if (marked_input(im, v))
            rc = qs_error(e, QS_EFORMAT, "duplicate output name '%s': %s writes a graph input", nm, label);
        for (size_t j = 0; j < i && rc == 0; j++)
            if (out[j] == v)
                rc = qs_error(e, QS_EFORMAT, "duplicate output name '%s' in %s", nm, label);
        out[i] = v;
    }
    int id = -1;
    if (rc == 0) {
        id = qs_graph_add_node(g, np->op_type, nz(np->name), (int)np->n_input, in, (int)nout, out);
        if (id < 0)
            rc = qs_error(e, QS_ENOMEM, "out of memory");
    }
    free(ids);
    if (rc < 0)
        return rc;

    const char *dom = nz(np->domain);
    if (!strcmp(dom, "ai.onnx"))
        dom = "";
    if (*dom && qs_node_set_domain(&g->nodes[id], dom) < 0)
        return qs_error(e, QS_ENOMEM, "out of memory");

    if (np->n_attribute) {
        qs_node *n = &g->nodes[id];
        qs_attr *attrs = realloc(n->attr, (n->nattr + np->n_attribute) * sizeof *attrs);
        if (!attrs)
            return qs_error(e, QS_ENOMEM, "out of memory");
        n->attr = attrs;
        for (size_t i = 0; i < np->n_attribute; i++) {
            qs_attr a;
            rc = import_attr(im, np->attribute[i], label, &a);
            if (rc == 0 && qs_node_attr(n, a.name))
                rc = qs_error(e, QS_EFORMAT, "%s: attribute '%s' appears twice", label, a.name);
            if (rc < 0) {
                attr_clear(&a);
                return rc;
            }
            n->attr[n->nattr++] = a;
        }
    }
    return 0;
}

static int import_model(Onnx__ModelProto *m, const char *basedir, qs_graph **out, qs_err *e)
{
    Onnx__GraphProto *gp = m->graph;
    if (!gp && !m->has_ir_version && m->n_opset_import == 0)
        return qs_error(e, QS_EFORMAT, "not an ONNX model (no ir_version, opset_import or graph)");
    if (!gp)
        return qs_error(e, QS_EFORMAT, "ONNX model has no graph");
    if (m->n_opset_import == 0)
        return qs_error(e, QS_EUNSUPPORTED, "ONNX model has no opset_import (IR version %lld); IR version 3 or "
                        "later is required", (long long)m->ir_version);
    if (gp->n_sparse_initializer)
        return qs_error(e, QS_EUNSUPPORTED, "sparse initializers are unsupported ('%s')",
                        nz(gp->sparse_initializer[0]->values ? gp->sparse_initializer[0]->values->name : NULL));

    qs_graph *g = qs_graph_new();
    if (!g)
        return qs_error(e, QS_ENOMEM, "out of memory");
    importer im = { .g = g, .basedir = basedir, .e = e };
    int rc = 0;

    g->ir_version = m->ir_version;
    g->name = xstrdup(gp->name);
    g->producer_name = xstrdup(m->producer_name);
    g->producer_version = xstrdup(m->producer_version);
    g->doc = xstrdup(m->doc_string && *m->doc_string ? m->doc_string : gp->doc_string);

    for (size_t i = 0; i < m->n_opset_import && rc == 0; i++) {
        const Onnx__OperatorSetIdProto *op = m->opset_import[i];
        const char *dom = nz(op->domain);
        if (!strcmp(dom, "ai.onnx"))
            dom = "";
        if (qs_graph_set_opset(g, dom, op->version) < 0)
            rc = qs_error(e, QS_ENOMEM, "out of memory");
    }

    /* initializers first: graph inputs that name one are defaults, not runtime inputs */
    for (size_t i = 0; i < gp->n_initializer && rc == 0; i++) {
        Onnx__TensorProto *tp = gp->initializer[i];
        const char *nm = nz(tp->name);
        if (!*nm) {
            rc = qs_error(e, QS_EFORMAT, "initializer %zu has no name", i);
            break;
        }
        int v = qs_graph_value(g, nm);
        if (v < 0) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            break;
        }
        if (g->values[v].init) {
            rc = qs_error(e, QS_EFORMAT, "initializer '%s' appears twice", nm);
            break;
        }
        char what[300];
        snprintf(what, sizeof what, "initializer '%s'", nm);
        qs_tensor *t;
        rc = tensor_from_proto(tp, basedir, what, &t, e);
        if (rc == 0) {
            qs_graph_set_init_steal(g, v, t);
            qs_value *val = &g->values[v];
            val->dtype = t->dtype;
            val->ndim = t->ndim;
            for (int d = 0; d < t->ndim; d++)
                val->shape[d] = t->shape[d];
        }
    }

    /* runtime inputs */
    if (rc == 0 && !(g->inputs = malloc((gp->n_input + 1) * sizeof(int))))
        rc = qs_error(e, QS_ENOMEM, "out of memory");
    for (size_t i = 0; i < gp->n_input && rc == 0; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        const char *nm = nz(vi->name);
        if (!*nm) {
            rc = qs_error(e, QS_EFORMAT, "graph input %zu has no name", i);
            break;
        }
        int v = qs_graph_value(g, nm);
        if (v < 0) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            break;
        }
        if (g->values[v].init)
            continue;
        if (marked_input(&im, v)) {
            rc = qs_error(e, QS_EFORMAT, "graph input '%s' is listed twice", nm);
            break;
        }
        if (mark_input(&im, v) < 0) {
            rc = qs_error(e, QS_ENOMEM, "out of memory");
            break;
        }
        rc = apply_value_info(&im, vi, v, "input");
        g->inputs[g->ninputs++] = v;
    }

    for (size_t i = 0; i < gp->n_node && rc == 0; i++)
        rc = import_node(&im, gp->node[i], i);

    if (rc == 0 && !(g->outputs = malloc((gp->n_output + 1) * sizeof(int))))
        rc = qs_error(e, QS_ENOMEM, "out of memory");
    for (size_t i = 0; i < gp->n_output && rc == 0; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        const char *nm = nz(vi->name);
        int v = *nm ? qs_graph_find_value(g, nm) : -1;
        if (v < 0 || (g->values[v].producer < 0 && !g->values[v].init && !marked_input(&im, v))) {
            rc = qs_error(e, QS_EFORMAT, "graph output '%s' is not produced by any node", nm);
            break;
        }
        for (int j = 0; j < g->noutputs; j++)
            if (g->outputs[j] == v)
                rc = qs_error(e, QS_EFORMAT, "duplicate output names: graph output '%s' is listed twice", nm);
        if (rc == 0)
            rc = apply_value_info(&im, vi, v, "output");
        g->outputs[g->noutputs++] = v;
    }

    for (size_t i = 0; i < gp->n_value_info && rc == 0; i++) {
        const Onnx__ValueInfoProto *vi = gp->value_info[i];
        int v = qs_graph_find_value(g, nz(vi->name));
        if (v >= 0 && !g->values[v].init && !marked_input(&im, v) && !qs_graph_is_output(g, v))
            rc = apply_value_info(&im, vi, v, NULL);
    }

    /* weights that exporters left in Constant nodes become initializers, as passes expect them */
    if (rc == 0 && qs_graph_promote_constants(g) < 0)
        rc = qs_error(e, QS_ENOMEM, "out of memory");
    if (rc == 0)
        rc = qs_graph_toposort(g, e);
    free(im.is_input);
    if (rc < 0) {
        qs_graph_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int qs_onnx_load_buffer(const void *buf, size_t len, const char *basedir, qs_graph **out, qs_err *e)
{
    *out = NULL;
    if (!buf || len == 0)
        return qs_error(e, QS_EFORMAT, "not an ONNX model: empty input");
    Onnx__ModelProto *m = onnx__model_proto__unpack(&pb_allocator, len, buf);
    if (!m)
        return qs_error(e, QS_EFORMAT, "not an ONNX model: the bytes are not a valid protobuf message "
                        "(corrupt or truncated file?)");
    int rc = import_model(m, basedir, out, e);
    onnx__model_proto__free_unpacked(m, &pb_allocator);
    return rc;
}

int qs_onnx_load(const char *path, qs_graph **out, qs_err *e)
{
    *out = NULL;
    mapped mf;
    int rc = map_file(path, &mf, e);
    if (rc < 0)
        return rc;
    char *dir = dir_of(path);
    if (!dir) {
        unmap_file(&mf);
        return qs_error(e, QS_ENOMEM, "out of memory");
    }
    rc = qs_onnx_load_buffer(mf.data, mf.len, dir, out, e);
    free(dir);
    unmap_file(&mf);
    if (rc < 0)
        qs_error_prefix(e, "%s: ", path);
    return rc;
}

int qs_onnx_load_tensor(const char *path, qs_tensor **out, char **name, qs_err *e)
{
    *out = NULL;
    if (name)
        *name = NULL;
    mapped mf;
    int rc = map_file(path, &mf, e);
    if (rc < 0)
        return rc;
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(&pb_allocator, mf.len, mf.data);
    unmap_file(&mf);
    if (!tp)
        return qs_error(e, QS_EFORMAT, "%s: not a serialized ONNX TensorProto", path);
    char *dir = dir_of(path);
    char what[300];
    snprintf(what, sizeof what, "tensor '%s'", nz(tp->name));
    rc = dir ? tensor_from_proto(tp, dir, what, out, e) : qs_error(e, QS_ENOMEM, "out of memory");
    if (rc == 0 && name && !(*name = strdup(nz(tp->name)))) {
        qs_tensor_free(*out);
        *out = NULL;
        rc = qs_error(e, QS_ENOMEM, "out of memory");
    }
    if (rc < 0)
        qs_error_prefix(e, "%s: ", path);
    free(dir);
    onnx__tensor_proto__free_unpacked(tp, &pb_allocator);
    return rc;
}
