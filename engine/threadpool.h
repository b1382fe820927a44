/* The compute thread pool: the public API is all there is (<quant/threadpool.h>).
 * Engine code includes this name; outside code includes <quant/threadpool.h> (or <quant/quant.h>). */
#ifndef QS_THREADPOOL_H
#define QS_THREADPOOL_H

#include "error.h"
#include <quant/threadpool.h>

/* 1 when loops run on OpenMP teams (threadpool.c): oneDNN then runs on the same threads. */
int qs_threadpool_openmp(void);
/* Borrows up to want threads of the pool for an OpenMP region the caller leads (oneDNN's); 0 with
 * no pool, inside another loop's chunk, when all are lent, or without OpenMP. */
int qs_threadpool_lend(qs_threadpool *tp, int want);
void qs_threadpool_giveback(qs_threadpool *tp, int n);

#endif
