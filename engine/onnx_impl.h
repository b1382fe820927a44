/* What ONNX import (onnx.c) and export (onnx_export.c) share: the generated protobuf-c types and
 * the file layout of tensor bytes. Not a public header.
 *
 * Tensors are stored little-endian in ONNX (raw_data and external files); every read and write
 * goes through le_fix(), a no-op on little-endian hosts. INT4/UINT4 are one value per byte in
 * memory and packed two per byte (low nibble first) in files, in raw_data as in int32_data. */
#ifndef QS_ONNX_IMPL_H
#define QS_ONNX_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "onnx.h"
#include "onnx.pb-c.h"

static inline bool is_4bit(qs_dtype t) { return t == QS_I4 || t == QS_U4; }

static inline bool host_is_le(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* Converts n elements of size sz between little-endian and host order, in place. */
static inline void le_fix(void *data, size_t n, size_t sz)
{
    if (host_is_le() || sz < 2)
        return;
    uint8_t *p = data;
    for (size_t i = 0; i < n; i++, p += sz)
        for (size_t a = 0, b = sz - 1; a < b; a++, b--) {
            uint8_t tmp = p[a];
            p[a] = p[b];
            p[b] = tmp;
        }
}

/* Bytes a tensor of this type and size occupies in a file. */
static inline size_t file_bytes(qs_dtype t, int64_t n)
{
    return is_4bit(t) ? (size_t)(n + 1) / 2 : (size_t)n * qs_dtype_size(t);
}

static inline const char *nz(const char *s) { return s ? s : ""; }

#endif
