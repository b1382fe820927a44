/* Shared low-level kernels (GEMM wrapper, im2col) used by several op families. */
#ifndef QS_KERNELS_H
#define QS_KERNELS_H
#endif
