#include "tensor.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t qs_dtype_size(qs_dtype t)
{
    switch (t) {
    case QS_F32: case QS_I32: return 4;
    case QS_U8: case QS_I8: case QS_BOOL: case QS_U4: case QS_I4: return 1;
    case QS_U16: case QS_I16: return 2;
    case QS_I64: case QS_F64: return 8;
    default: return 0;
    }
}

const char *qs_dtype_name(qs_dtype t)
{
    switch (t) {
    case QS_F32: return "float32";
    case QS_U8: return "uint8";
    case QS_I8: return "int8";
    case QS_U16: return "uint16";
    case QS_I16: return "int16";
    case QS_I32: return "int32";
    case QS_I64: return "int64";
    case QS_BOOL: return "bool";
    case QS_F64: return "float64";
    case QS_U4: return "uint4";
    case QS_I4: return "int4";
    default: return "undefined";
    }
}

int qs_dtype_is_int(qs_dtype t)
{
    return t != QS_F32 && t != QS_F64 && t != QS_UNDEFINED;
}

int64_t qs_shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

int qs_shape_bytes(qs_dtype dtype, int ndim, const int64_t *shape, size_t *bytes)
{
    int64_t es = (int64_t)qs_dtype_size(dtype), span = es;
    int empty = 0;
    if (!es || ndim < 0 || ndim > QS_MAX_DIMS)
        return -1;
    /* the product of the nonzero dims must fit even when a 0 makes the tensor empty: readers form
     * row lengths and strides from the other dims */
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] == 0) {
            empty = 1;
            continue;
        }
        if (span > INT64_MAX / shape[i])
            return -1;
        span *= shape[i];
    }
    *bytes = empty ? 0 : (size_t)span;
    return 0;
}

static _Atomic size_t max_tensor_bytes = QS_DEFAULT_MAX_TENSOR_BYTES;

void qs_set_max_tensor_bytes(size_t bytes) { max_tensor_bytes = bytes ? bytes : QS_DEFAULT_MAX_TENSOR_BYTES; }
size_t qs_max_tensor_bytes(void) { return max_tensor_bytes; }

int qs_check_tensor_size(qs_err *e, const char *what, qs_dtype dtype, int ndim, const int64_t *shape)
{
    char sb[QS_MAX_DIMS * 24 + 4];
    size_t bytes, limit = qs_max_tensor_bytes();
    qs_shape_str(ndim, shape, sb, sizeof sb);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return qs_error(e, QS_ESHAPE, "%s: shape %s has a negative dimension", what, sb);
    if (qs_shape_bytes(dtype, ndim, shape, &bytes) < 0)
        return qs_error(e, QS_EUNSUPPORTED, "%s: shape %s of %s is too large (its dims multiply past 2^63 bytes); the tensor "
                        "size limit is %zu bytes (max_tensor_size)", what, sb, qs_dtype_name(dtype), limit);
    if (bytes > limit)
        return qs_error(e, QS_EUNSUPPORTED, "%s: shape %s of %s is %zu bytes, over the tensor size limit of "
                        "%zu bytes (max_tensor_size)", what, sb, qs_dtype_name(dtype), bytes, limit);
    return 0;
}

int64_t qs_numel(const qs_tensor *t) { return qs_shape_numel(t->ndim, t->shape); }
size_t qs_nbytes(const qs_tensor *t) { return (size_t)qs_numel(t) * qs_dtype_size(t->dtype); }

char *qs_shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t k = 0;
    k += snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

static qs_tensor *tensor_head(qs_dtype dtype, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > QS_MAX_DIMS || !qs_dtype_size(dtype))
        return NULL;
    size_t bytes;
    if (qs_shape_bytes(dtype, ndim, shape, &bytes) < 0)   /* a negative dim, or dims past 2^63 bytes */
        return NULL;
    qs_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim)
        memcpy(t->shape, shape, ndim * sizeof *shape);
    return t;
}

qs_tensor *qs_tensor_new(qs_dtype dtype, int ndim, const int64_t *shape)
{
    qs_tensor *t = tensor_head(dtype, ndim, shape);
    if (!t)
        return NULL;
    size_t nb = qs_nbytes(t);
    t->data = calloc(nb ? nb : 1, 1);
    if (!t->data) {
        free(t);
        return NULL;
    }
    t->owns_data = 1;
    return t;
}

qs_tensor *qs_tensor_wrap(qs_dtype dtype, int ndim, const int64_t *shape, void *data)
{
    qs_tensor *t = tensor_head(dtype, ndim, shape);
    if (t)
        t->data = data;
    return t;
}

qs_tensor *qs_tensor_copy(const qs_tensor *src)
{
    qs_tensor *t = qs_tensor_new(src->dtype, src->ndim, src->shape);
    if (t && src->data)
        memcpy(t->data, src->data, qs_nbytes(src));
    return t;
}

void qs_tensor_free(qs_tensor *t)
{
    if (!t)
        return;
    if (t->owns_data)
        free(t->data);
    free(t);
}

int qs_shape_eq(const qs_tensor *a, const qs_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

double qs_get_f64(const qs_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case QS_F32: return ((const float *)t->data)[i];
    case QS_F64: return ((const double *)t->data)[i];
    case QS_U8: case QS_BOOL: case QS_U4: return ((const uint8_t *)t->data)[i];
    case QS_I8: case QS_I4: return ((const int8_t *)t->data)[i];
    case QS_U16: return ((const uint16_t *)t->data)[i];
    case QS_I16: return ((const int16_t *)t->data)[i];
    case QS_I32: return ((const int32_t *)t->data)[i];
    case QS_I64: return (double)((const int64_t *)t->data)[i];
    default: return 0;
    }
}

int64_t qs_get_i64(const qs_tensor *t, int64_t i)
{
    if (t->dtype == QS_I64)
        return ((const int64_t *)t->data)[i];
    if (t->dtype == QS_F32 || t->dtype == QS_F64)
        return (int64_t)qs_get_f64(t, i);
    return (int64_t)qs_get_f64(t, i);
}

static void set_from_f64(qs_tensor *t, int64_t i, double v)
{
    switch (t->dtype) {
    case QS_F32: ((float *)t->data)[i] = (float)v; break;
    case QS_F64: ((double *)t->data)[i] = v; break;
    case QS_U8: case QS_U4: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
    case QS_BOOL: ((uint8_t *)t->data)[i] = v != 0; break;
    case QS_I8: case QS_I4: ((int8_t *)t->data)[i] = (int8_t)v; break;
    case QS_U16: ((uint16_t *)t->data)[i] = (uint16_t)v; break;
    case QS_I16: ((int16_t *)t->data)[i] = (int16_t)v; break;
    case QS_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    case QS_I64: ((int64_t *)t->data)[i] = (int64_t)v; break;
    default: break;
    }
}

qs_tensor *qs_tensor_cast(const qs_tensor *src, qs_dtype to)
{
    qs_tensor *t = qs_tensor_new(to, src->ndim, src->shape);
    if (!t)
        return NULL;
    int64_t n = qs_numel(src);
    if (src->dtype == QS_I64 && to == QS_I64)
        memcpy(t->data, src->data, n * 8);
    else if (src->dtype == QS_I64)    /* keep int64 exact where it fits */
        for (int64_t i = 0; i < n; i++)
            set_from_f64(t, i, (double)((const int64_t *)src->data)[i]);
    else
        for (int64_t i = 0; i < n; i++)
            set_from_f64(t, i, qs_get_f64(src, i));
    return t;
}
