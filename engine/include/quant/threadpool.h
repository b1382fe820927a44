/* The thread pool: persistent compute threads that the kernels' parallel loops run on.
 *
 *   qs_threadpool *tp = qs_threadpool_new(4, 0, &e);        // the caller + 3 workers
 *   qs_exec_set_pool(x, tp);                                // kernels split their work 4 ways
 *   qs_threadpool_for(tp, 4, n, 16, fn, arg);               // fn(arg, begin, end, worker) over [0, n)
 *   qs_threadpool_free(tp);                                 // when no loop is running on it
 *
 * One pool serves any number of callers at once (the daemon's concurrent jobs, a parallel loop
 * started from inside another one): each call runs its chunks on the caller and on threads it
 * borrows from the pool, and returns when they are done. The pool's size bounds the threads
 * borrowed by all callers together; a loop started from inside a chunk runs on that chunk's thread.
 * With OpenMP (GCC's) the threads are OpenMP's, which oneDNN's convolutions run on too; built
 * without it, the pool starts workers of its own. A NULL pool is valid everywhere and means "run
 * on the calling thread".
 *
 * A pool does not survive fork(): create pools in the process that uses them. */
#ifndef QUANT_THREADPOOL_H
#define QUANT_THREADPOOL_H

#include <stdint.h>

#include <quant/error.h>

typedef struct qs_threadpool qs_threadpool;

/* A pool for nthreads-way loops: the calling thread counts as one, so nthreads − 1 others are
 * lent (nthreads ≤ 0: qs_threadpool_default_size()). nice > 0: on Linux the lent threads run at
 * that nice value (compute yields the CPU to a daemon's network threads). NULL with e set on failure. */
qs_threadpool *qs_threadpool_new(int nthreads, int nice, qs_err *e);
/* Frees the pool (joining its own workers, if any). No qs_threadpool_for may be running on it.
 * NULL is a no-op. */
void qs_threadpool_free(qs_threadpool *tp);
/* The pool's thread count (caller included); 1 for NULL. */
int qs_threadpool_size(const qs_threadpool *tp);
/* QUANTD_THREADS when set, else the online CPUs (1 to 64). */
int qs_threadpool_default_size(void);

/* Runs fn(arg, begin, end, worker) over [0, n) split into at most nthreads contiguous chunks of at
 * least min_chunk items, and returns when all have run. Chunk k is worker k (0 ≤ k < nthreads), so
 * a chunk can use its own slice of scratch; the calling thread runs chunks too. One chunk, or a
 * NULL pool, runs inline as fn(arg, 0, n, 0). fn must not write to memory another chunk writes. */
typedef void (*qs_range_fn)(void *arg, int64_t begin, int64_t end, int worker);
void qs_threadpool_for(qs_threadpool *tp, int nthreads, int64_t n, int64_t min_chunk, qs_range_fn fn, void *arg);

#endif
