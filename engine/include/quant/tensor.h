/* Tensors: a dtype, a shape and a contiguous row-major buffer.
 *
 *   int64_t shape[] = {2, 3};
 *   qs_tensor *t = qs_tensor_new(QS_F32, 2, shape);   // zero-filled, owns its data
 *   qs_f32(t)[0] = 1.f;
 *   qs_tensor_free(t);
 *
 * Tensors are always contiguous: every kernel reads and writes dense buffers, and the few layout
 * changes (Transpose, im2col) copy explicitly, which keeps each kernel simple and BLAS-friendly.
 * dtype values are ONNX's TensorProto.DataType codes so import/export needs no mapping table. */
#ifndef QUANT_TENSOR_H
#define QUANT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include <quant/error.h>

typedef enum qs_dtype {
    QS_UNDEFINED = 0,
    QS_F32 = 1, QS_U8 = 2, QS_I8 = 3, QS_U16 = 4, QS_I16 = 5, QS_I32 = 6, QS_I64 = 7,
    QS_BOOL = 9, QS_F64 = 11,
    QS_U4 = 21, QS_I4 = 22,   /* stored one value per byte in memory, packed only in ONNX files */
} qs_dtype;

#define QS_MAX_DIMS 8

typedef struct qs_tensor {
    qs_dtype dtype;
    int ndim;
    int64_t shape[QS_MAX_DIMS];
    void *data;
    int owns_data;    /* 0 when data is borrowed (memory-mapped file, executor arena) */
} qs_tensor;

size_t qs_dtype_size(qs_dtype t);        /* bytes per element in memory; 0 for an unknown type */
const char *qs_dtype_name(qs_dtype t);   /* "float32", "int64", … */
int qs_dtype_is_int(qs_dtype t);

int64_t qs_shape_numel(int ndim, const int64_t *shape);
/* Bytes of a tensor of this type and shape into *bytes; -1 when a dim is negative, the type has no
 * size, or the size does not fit in 63 bits (checked before any multiplication overflows) — with
 * the 0 dims of an empty tensor left out, so that no count formed from its other dims overflows. */
int qs_shape_bytes(qs_dtype dtype, int ndim, const int64_t *shape, size_t *bytes);

/* The size limit on any one tensor whose size a model decides: initializers, Constant values,
 * values computed at plan time and the activations the executor plans. Process-wide (quantd's
 * [limits] max_tensor_size, quant's QUANT_MAX_TENSOR_SIZE); set it before loading models.
 * 0 restores the default. */
#define QS_DEFAULT_MAX_TENSOR_BYTES ((size_t)2 << 30)   /* protobuf's own limit on an inline tensor */
void qs_set_max_tensor_bytes(size_t bytes);
size_t qs_max_tensor_bytes(void);
/* 0 when a tensor of this type and shape is valid and within the limit; else an error naming
 * what ("initializer 'w'", "Expand 'e': output 0"), the shape, its size and the limit. */
int qs_check_tensor_size(qs_err *e, const char *what, qs_dtype dtype, int ndim, const int64_t *shape);
int64_t qs_numel(const qs_tensor *t);
size_t qs_nbytes(const qs_tensor *t);
/* "[1, 3, 224, 224]" into buf; returns buf */
char *qs_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

qs_tensor *qs_tensor_new(qs_dtype dtype, int ndim, const int64_t *shape);       /* zeroed; NULL on OOM */
qs_tensor *qs_tensor_wrap(qs_dtype dtype, int ndim, const int64_t *shape, void *data); /* borrows data */
qs_tensor *qs_tensor_copy(const qs_tensor *t);
qs_tensor *qs_tensor_cast(const qs_tensor *t, qs_dtype to);   /* new tensor; numeric conversion */
void qs_tensor_free(qs_tensor *t);
int qs_shape_eq(const qs_tensor *a, const qs_tensor *b);

static inline float *qs_f32(const qs_tensor *t) { return (float *)t->data; }
static inline int64_t *qs_i64(const qs_tensor *t) { return (int64_t *)t->data; }
static inline int32_t *qs_i32(const qs_tensor *t) { return (int32_t *)t->data; }
static inline int8_t *qs_i8(const qs_tensor *t) { return (int8_t *)t->data; }
static inline uint8_t *qs_u8(const qs_tensor *t) { return (uint8_t *)t->data; }

/* Reads element i of any numeric tensor as double / int64 (slow path: shape inputs, tests). */
double qs_get_f64(const qs_tensor *t, int64_t i);
int64_t qs_get_i64(const qs_tensor *t, int64_t i);

#endif
