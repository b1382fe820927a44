/* The thread pool behind the kernels' parallel loops.
 *
 * Built with OpenMP (GCC's, the runtime oneDNN is built on), a call (qs_threadpool_for) runs its
 * chunks on an OpenMP team that the calling thread leads. The pool starts no threads of its own: it
 * is the count of threads a loop may borrow. Two things came of measuring this against the pool's
 * own workers below, on a 2-CPU VM:
 *  - one set of threads: oneDNN's convolutions run on the same OpenMP threads as the pool's loops
 *    (qs_threadpool_lend), where our workers and OpenMP's spun against each other between layers;
 *  - OpenMP's idle threads spin for longer before they sleep, and a sleeping vCPU takes a long time
 *    to wake: our workers slept 30 times a pass of mobilenet_v2 at batch 32, 10–20% of its time.
 * The pool's size bounds the borrowed threads of every caller together, so the daemon's jobs share
 * it as they shared the workers; a loop started inside a chunk runs on that chunk's thread.
 *
 * Built without OpenMP (clang's fuzzing build), the pool has workers of its own: a call is a job
 * of t chunks that lives on the caller's stack. It is appended to the pool's queue of jobs that
 * still have unclaimed chunks; workers take chunks from the job at the head, the caller takes
 * chunks of its own job only (so it never waits on a stranger's long chunk), and a job leaves the
 * queue once its last chunk is claimed. The caller then waits until its chunks are all done.
 * Several callers at once simply queue several jobs; a loop started from inside a chunk is one more
 * job, and cannot deadlock, since whoever waits on a job only waits on chunks that some thread is
 * running. Chunks are claimed under the mutex; a chunk's bounds are computed from its index, so a
 * job needs no memory of its own. Between jobs a worker first spins for a short while (SPIN_NS)
 * watching the queue, and only then sleeps on the condition variable; the caller likewise spins
 * before sleeping on its job's completion. The spin is bounded, so an idle daemon sleeps; it yields
 * the CPU as it goes, and is off when the pool has more threads than there are CPUs. The queue head
 * and a job's pending count are written under the mutex and read outside it atomically; a finished
 * job is only left (its stack frame given up) with the mutex taken, after the worker that finished
 * it has let go of it. */
#include "threadpool.h"

#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#endif

#define MAX_THREADS 64

int qs_threadpool_default_size(void)
{
    const char *env = getenv("QUANTD_THREADS");
    long n = env ? atol(env) : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* a new pool's thread count: nthreads, or the default for ≤ 0, at most MAX_THREADS */
static int size_for(int nthreads)
{
    return nthreads <= 0 ? qs_threadpool_default_size() : nthreads > MAX_THREADS ? MAX_THREADS : nthreads;
}

/* how many chunks a loop over n items runs in: up to nthreads of at least min_chunk items (1: inline,
 * 0: nothing to run) */
static int64_t chunks_of(const qs_threadpool *tp, int nthreads, int64_t n, int64_t min_chunk)
{
    if (n <= 0)
        return 0;
    if (min_chunk < 1)
        min_chunk = 1;
    int64_t t = nthreads < 1 ? 1 : nthreads;
    if (t > n / min_chunk)
        t = n / min_chunk;
    return !tp || t < 1 || qs_threadpool_size(tp) <= 1 ? 1 : t;
}

#ifdef _OPENMP
/* ---- OpenMP teams --------------------------------------------------------------------------------- */

struct qs_threadpool {
    int size, nice;
    int lent;   /* threads borrowed by loops running now, the callers not counted */
};

int qs_threadpool_size(const qs_threadpool *tp) { return tp ? tp->size : 1; }

int qs_threadpool_openmp(void) { return 1; }

qs_threadpool *qs_threadpool_new(int nthreads, int nice, qs_err *e)
{
    qs_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    tp->size = size_for(nthreads);
    tp->nice = nice;
    return tp;
}

void qs_threadpool_free(qs_threadpool *tp)
{
    if (tp)
        QS_ASSERT(__atomic_load_n(&tp->lent, __ATOMIC_ACQUIRE) == 0);
    free(tp);
}

int qs_threadpool_lend(qs_threadpool *tp, int want)
{
    if (!tp || want <= 0 || omp_in_parallel())
        return 0;
    int lent = __atomic_load_n(&tp->lent, __ATOMIC_RELAXED), got;
    do {
        int spare = tp->size - 1 - lent;
        got = want < spare ? want : spare;
        if (got <= 0)
            return 0;
    } while (!__atomic_compare_exchange_n(&tp->lent, &lent, lent + got, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    return got;
}

void qs_threadpool_giveback(qs_threadpool *tp, int n)
{
    if (tp && n > 0)
        __atomic_sub_fetch(&tp->lent, n, __ATOMIC_ACQ_REL);
}

/* OpenMP's threads start at the caller's nice; a pool's own may be higher (the daemon's jobs) */
static void take_nice(int nice)
{
#ifdef __linux__
    static __thread int have;
    if (nice > have) {
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
        have = nice;
    }
#endif
}

/* t ≥ 2 chunks of [0, n) */
static void run_chunks(qs_threadpool *tp, int64_t t, int64_t n, qs_range_fn fn, void *arg)
{
    int nc = (int)t, nice = tp->nice, extra = qs_threadpool_lend(tp, nc - 1);
    if (extra == 0) {   /* inside another loop's chunk, or every thread lent: the chunks on this thread */
        for (int k = 0; k < nc; k++)
            fn(arg, n * k / nc, n * (k + 1) / nc, k);
        return;
    }
    /* chunk k on thread k mod team: a layer's chunks land on the threads that ran the last one's */
#pragma omp parallel num_threads(extra + 1)
    {
        take_nice(nice);
#pragma omp for schedule(static, 1)
        for (int k = 0; k < nc; k++)
            fn(arg, n * k / nc, n * (k + 1) / nc, k);
    }
    qs_threadpool_giveback(tp, extra);
}

#else
/* ---- the pool's own workers (a compiler without OpenMP) ------------------------------------------- */

#define SPIN_NS 100000

typedef struct job {
    qs_range_fn fn;
    void *arg;
    int64_t n;
    int nchunks, next;   /* chunks, and the next one to claim */
    int pending;         /* chunks not yet finished */
    int waiting;         /* the caller sleeps on done */
    struct job *qnext;
} job;

struct qs_threadpool {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_t th[MAX_THREADS];
    int size, nworkers, nice;
    int quit, sleepers, active;
    int spin_ok;         /* no spinning when the pool has more threads than the machine has CPUs */
    job *head, *tail;    /* jobs with unclaimed chunks */
};

int qs_threadpool_size(const qs_threadpool *tp) { return tp ? tp->size : 1; }

int qs_threadpool_openmp(void) { return 0; }

int qs_threadpool_lend(qs_threadpool *tp, int want) { return 0; }

void qs_threadpool_giveback(qs_threadpool *tp, int n) {}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins, without the mutex, for up to SPIN_NS: a worker (j == NULL) until a job is queued or the
 * pool quits, a caller until its job j has no pending chunk. 1 when it came. */
static int spin_wait(qs_threadpool *tp, job *j)
{
    if (!tp->spin_ok)
        return 0;
    int64_t t0 = now_ns();
    for (int i = 1;; i++) {
        if (j ? __atomic_load_n(&j->pending, __ATOMIC_ACQUIRE) == 0
              : __atomic_load_n(&tp->head, __ATOMIC_ACQUIRE) != NULL ||
                    __atomic_load_n(&tp->quit, __ATOMIC_ACQUIRE))
            return 1;
        cpu_relax();
        if (!(i & 63)) {
            if (now_ns() - t0 > SPIN_NS)
                return 0;
            sched_yield();   /* a no-op on an idle core; lets a preempted thread run when cores are short */
        }
    }
}

static void unlink_job(qs_threadpool *tp, job *j)
{
    job **pp = &tp->head, *prev = NULL;
    while (*pp != j) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    __atomic_store_n(pp, j->qnext, __ATOMIC_RELEASE);
    if (tp->tail == j)
        tp->tail = prev;
}

/* Claims and runs one chunk of j; called and returns with the mutex held. */
static void run_chunk(qs_threadpool *tp, job *j)
{
    int k = j->next++;
    if (j->next == j->nchunks)
        unlink_job(tp, j);
    pthread_mutex_unlock(&tp->mu);
    j->fn(j->arg, j->n * k / j->nchunks, j->n * (k + 1) / j->nchunks, k);
    pthread_mutex_lock(&tp->mu);
    if (__atomic_sub_fetch(&j->pending, 1, __ATOMIC_ACQ_REL) == 0 && j->waiting)
        pthread_cond_broadcast(&tp->done);
}

static void *worker_main(void *arg)
{
    qs_threadpool *tp = arg;
#ifdef __linux__
    if (tp->nice > 0)   /* nice is per thread on Linux */
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), tp->nice);
#endif
    pthread_mutex_lock(&tp->mu);
    for (;;) {
        if (!tp->head && !tp->quit) {
            pthread_mutex_unlock(&tp->mu);
            spin_wait(tp, NULL);
            pthread_mutex_lock(&tp->mu);
        }
        while (!tp->head && !tp->quit) {
            tp->sleepers++;
            pthread_cond_wait(&tp->wake, &tp->mu);
            tp->sleepers--;
        }
        if (tp->quit)
            break;
        run_chunk(tp, tp->head);
    }
    pthread_mutex_unlock(&tp->mu);
    return NULL;
}

qs_threadpool *qs_threadpool_new(int nthreads, int nice, qs_err *e)
{
    nthreads = size_for(nthreads);
    qs_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->wake, NULL);
    pthread_cond_init(&tp->done, NULL);
    tp->size = nthreads;
    tp->nice = nice;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    tp->spin_ok = cpus < 1 || nthreads <= cpus;
    for (int i = 0; i < nthreads - 1; i++) {
        int rc = pthread_create(&tp->th[i], NULL, worker_main, tp);
        if (rc) {
            /* Fewer workers than asked: the loops still split nthreads ways and every chunk
             * runs (the callers take what no worker does), only with less parallelism. With
             * none at all the pool is no use. */
            if (i == 0) {
                qs_threadpool_free(tp);
                qs_error(e, QS_ENOMEM, "cannot start compute threads");
                return NULL;
            }
            break;
        }
        tp->nworkers++;
    }
    return tp;
}

void qs_threadpool_free(qs_threadpool *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->mu);
    QS_ASSERT(tp->active == 0 && !tp->head);
    __atomic_store_n(&tp->quit, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 0; i < tp->nworkers; i++)
        pthread_join(tp->th[i], NULL);
    pthread_cond_destroy(&tp->done);
    pthread_cond_destroy(&tp->wake);
    pthread_mutex_destroy(&tp->mu);
    free(tp);
}

/* t ≥ 2 chunks of [0, n) */
static void run_chunks(qs_threadpool *tp, int64_t t, int64_t n, qs_range_fn fn, void *arg)
{
    job j = { .fn = fn, .arg = arg, .n = n, .nchunks = (int)t, .pending = (int)t };
    pthread_mutex_lock(&tp->mu);
    tp->active++;
    if (tp->tail)
        tp->tail->qnext = &j;
    else
        __atomic_store_n(&tp->head, &j, __ATOMIC_RELEASE);
    tp->tail = &j;
    if (tp->sleepers)
        pthread_cond_broadcast(&tp->wake);
    while (j.next < j.nchunks)
        run_chunk(tp, &j);
    if (j.pending > 0) {   /* workers are still on its chunks */
        pthread_mutex_unlock(&tp->mu);
        spin_wait(tp, &j);
        pthread_mutex_lock(&tp->mu);
    }
    while (j.pending > 0) {
        j.waiting = 1;
        pthread_cond_wait(&tp->done, &tp->mu);
    }
    tp->active--;
    pthread_mutex_unlock(&tp->mu);
}
#endif

void qs_threadpool_for(qs_threadpool *tp, int nthreads, int64_t n, int64_t min_chunk, qs_range_fn fn, void *arg)
{
    int64_t t = chunks_of(tp, nthreads, n, min_chunk);
    if (t == 1)
        fn(arg, 0, n, 0);
    else if (t > 1)
        run_chunks(tp, t, n, fn, arg);
}
