/* The thread pool (engine/threadpool.c): every index of a parallel-for runs exactly once with a
 * valid worker number, for any split; jobs back to back (workers still spinning) and after a pause
 * (workers asleep); several threads submitting to one pool at once, with no lost or repeated chunk;
 * loops started from inside a chunk; and a clean shutdown (also of a pool that never ran a job).
 * A loop's chunks run on several threads at once; threads lent to oneDNN are not used by loops
 * meanwhile; and callers at once never run more threads than themselves and the pool's others.
 * Counters are atomics, so the test is clean under ThreadSanitizer too. */
#include "tests/harness.h"
#include "engine/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

typedef struct {
    atomic_int *hits;
    int nworkers;
    atomic_int bad_worker;
} pf_check;

static void pf_count(void *arg, int64_t b, int64_t e, int worker)
{
    pf_check *c = arg;
    if (worker < 0 || worker >= c->nworkers || b >= e)
        atomic_store(&c->bad_worker, 1);
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
}

TEST(parallel_for_runs_every_index_once)
{
    qs_threadpool *tp = qs_threadpool_new(4, 0, NULL);
    ASSERT(tp != NULL);
    ASSERT_EQ(qs_threadpool_size(tp), 4);
    for (int t = 1; t <= 6; t++)   /* more chunks than threads too */
        for (int64_t n = 0; n < 40; n += 3) {
            atomic_int hits[40];
            for (int i = 0; i < 40; i++)
                atomic_init(&hits[i], 0);
            pf_check c = { hits, t, 0 };
            qs_threadpool_for(tp, t, n, 2, pf_count, &c);
            ASSERT(!atomic_load(&c.bad_worker));
            for (int64_t i = 0; i < 40; i++)
                ASSERT_EQ(atomic_load(&hits[i]), i < n ? 1 : 0);
        }
    /* back-to-back jobs (workers still spinning) and jobs after a pause (workers asleep) */
    atomic_int many[64];
    for (int i = 0; i < 64; i++)
        atomic_init(&many[i], 0);
    pf_check m = { many, 4, 0 };
    for (int r = 0; r < 3000; r++) {
        qs_threadpool_for(tp, 4, 64, 1, pf_count, &m);
        if (r % 500 == 0)
            usleep(2000);   /* longer than the pool's spin */
    }
    ASSERT(!atomic_load(&m.bad_worker));
    for (int i = 0; i < 64; i++)
        ASSERT_EQ(atomic_load(&many[i]), 3000);
    qs_threadpool_free(tp);
}

TEST(null_pool_and_one_thread_run_inline)
{
    atomic_int hits[10];
    for (int i = 0; i < 10; i++)
        atomic_init(&hits[i], 0);
    pf_check c = { hits, 1, 0 };   /* inline: the one chunk is worker 0 */
    qs_threadpool_for(NULL, 8, 10, 1, pf_count, &c);
    qs_threadpool *one = qs_threadpool_new(1, 0, NULL);
    ASSERT_EQ(qs_threadpool_size(one), 1);
    qs_threadpool_for(one, 8, 10, 1, pf_count, &c);
    qs_threadpool_free(one);
    qs_threadpool_free(NULL);
    ASSERT_EQ(qs_threadpool_size(NULL), 1);
    ASSERT(!atomic_load(&c.bad_worker));
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(atomic_load(&hits[i]), 2);
}

/* ---- several submitters on one pool ---------------------------------------------------------- */

typedef struct {
    qs_threadpool *tp;
    int nthreads, rounds;
    int64_t n;
    int ok;
} submitter;

static void *submit_main(void *arg)
{
    submitter *s = arg;
    atomic_int *hits = calloc((size_t)s->n, sizeof *hits);
    pf_check c = { hits, s->nthreads, 0 };
    for (int r = 0; r < s->rounds; r++)
        qs_threadpool_for(s->tp, s->nthreads, s->n, 1, pf_count, &c);
    s->ok = !atomic_load(&c.bad_worker);
    for (int64_t i = 0; i < s->n; i++)
        s->ok &= atomic_load(&hits[i]) == s->rounds;
    free(hits);
    return NULL;
}

TEST(concurrent_submitters_lose_no_chunk)
{
    /* more submitters than workers, and different splits each, as jobs in the daemon have */
    qs_threadpool *tp = qs_threadpool_new(3, 0, NULL);
    ASSERT(tp != NULL);
    enum { NSUB = 5 };
    submitter s[NSUB];
    pthread_t th[NSUB];
    for (int k = 0; k < NSUB; k++) {
        s[k] = (submitter){ .tp = tp, .nthreads = 2 + k, .rounds = 400, .n = 50 + 37 * k };
        ASSERT_EQ(pthread_create(&th[k], NULL, submit_main, &s[k]), 0);
    }
    for (int k = 0; k < NSUB; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < NSUB; k++)
        ASSERT(s[k].ok);
    qs_threadpool_free(tp);
}

/* ---- loops inside loops ------------------------------------------------------------------------ */

typedef struct {
    qs_threadpool *tp;
    atomic_int hits[8 * 100];
    atomic_int bad;
} nested;

typedef struct {
    nested *n;
    int64_t row;
} inner_arg;

static void inner(void *arg, int64_t b, int64_t e, int worker)
{
    inner_arg *a = arg;
    if (worker < 0 || worker >= 3)
        atomic_store(&a->n->bad, 1);
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&a->n->hits[a->row * 100 + i], 1);
}

static void outer(void *arg, int64_t b, int64_t e, int worker)
{
    nested *n = arg;
    (void)worker;
    for (int64_t row = b; row < e; row++) {
        inner_arg a = { n, row };
        qs_threadpool_for(n->tp, 3, 100, 5, inner, &a);   /* from a worker or from the caller */
    }
}

TEST(nested_loops_complete)
{
    nested *n = calloc(1, sizeof *n);
    n->tp = qs_threadpool_new(2, 0, NULL);
    for (int r = 0; r < 50; r++)
        qs_threadpool_for(n->tp, 2, 8, 1, outer, n);
    ASSERT(!atomic_load(&n->bad));
    for (int i = 0; i < 800; i++)
        ASSERT_EQ(atomic_load(&n->hits[i]), 50);
    qs_threadpool_free(n->tp);
    free(n);
}

/* ---- lifetime ---------------------------------------------------------------------------------- */

TEST(pools_start_and_stop_cleanly)
{
    for (int r = 0; r < 20; r++) {   /* idle pools, and pools freed right after a job */
        qs_threadpool *tp = qs_threadpool_new(1 + r % 5, r % 2 ? 5 : 0, NULL);
        ASSERT(tp != NULL);
        if (r % 3) {
            atomic_int hits[16];
            for (int i = 0; i < 16; i++)
                atomic_init(&hits[i], 0);
            pf_check c = { hits, 4, 0 };
            qs_threadpool_for(tp, 4, 16, 1, pf_count, &c);
            for (int i = 0; i < 16; i++)
                ASSERT_EQ(atomic_load(&hits[i]), 1);
        }
        qs_threadpool_free(tp);
    }
    /* nthreads <= 0: the default size (QUANTD_THREADS or the CPUs) */
    setenv("QUANTD_THREADS", "3", 1);
    ASSERT_EQ(qs_threadpool_default_size(), 3);
    qs_threadpool *tp = qs_threadpool_new(0, 0, NULL);
    ASSERT_EQ(qs_threadpool_size(tp), 3);
    qs_threadpool_free(tp);
}

/* ---- threads at once: a loop's chunks run together; the pool bounds its callers' teams together -- */

typedef struct {
    atomic_int in, most, started;
    atomic_int bad;
    pthread_t caller;
    int wait_for;   /* a chunk waits (up to 2 s) until this many chunks have started */
    int hold_us;    /* then sleeps this long */
} together;

static void tg_chunk(void *arg, int64_t b, int64_t e, int worker)
{
    together *g = arg;
    int now = atomic_fetch_add(&g->in, 1) + 1, m = atomic_load(&g->most);
    while (now > m && !atomic_compare_exchange_weak(&g->most, &m, now)) {
    }
    atomic_fetch_add(&g->started, 1);
    for (int i = 0; i < 2000 && atomic_load(&g->started) < g->wait_for; i++)
        usleep(1000);
    if (g->hold_us)
        usleep(g->hold_us);
    if (g->wait_for == 1 && !pthread_equal(pthread_self(), g->caller))
        atomic_store(&g->bad, 1);
    atomic_fetch_sub(&g->in, 1);
}

TEST(chunks_run_at_once)
{
    /* each of the 3 chunks waits until all have started: it returns at once only when 3 threads ran them */
    qs_threadpool *tp = qs_threadpool_new(3, 0, NULL);
    together g = { .wait_for = 3 };
    qs_threadpool_for(tp, 3, 3, 1, tg_chunk, &g);
    ASSERT_EQ(atomic_load(&g.most), 3);
    qs_threadpool_free(tp);
}

TEST(lent_threads_leave_the_loop_to_its_caller)
{
    qs_threadpool *tp = qs_threadpool_new(3, 0, NULL);
    if (qs_threadpool_openmp()) {   /* the pool's own workers lend none (oneDNN slices the work instead) */
        ASSERT_EQ(qs_threadpool_lend(tp, 5), 2);
        ASSERT_EQ(qs_threadpool_lend(tp, 1), 0);
        /* every thread lent: a loop runs all its chunks on the calling thread, none lost */
        together g = { .wait_for = 1, .caller = pthread_self() };
        qs_threadpool_for(tp, 3, 30, 1, tg_chunk, &g);
        ASSERT_EQ(atomic_load(&g.started), 3);
        ASSERT_EQ(atomic_load(&g.most), 1);
        ASSERT(!atomic_load(&g.bad));
        qs_threadpool_giveback(tp, 2);
        ASSERT_EQ(qs_threadpool_lend(tp, 1), 1);
        qs_threadpool_giveback(tp, 1);
    } else {
        ASSERT_EQ(qs_threadpool_lend(tp, 5), 0);
    }
    qs_threadpool_free(tp);
}

typedef struct {
    qs_threadpool *tp;
    together *g;
} bounded;

static void *bounded_main(void *arg)
{
    bounded *b = arg;
    for (int r = 0; r < 50; r++)
        qs_threadpool_for(b->tp, 4, 4, 1, tg_chunk, b->g);
    return NULL;
}

TEST(callers_share_the_pools_threads)
{
    /* four callers of 4-way loops on a pool of 3: never more than the callers and the pool's 2 others */
    qs_threadpool *tp = qs_threadpool_new(3, 0, NULL);
    together g = { .hold_us = 300 };
    bounded b = { tp, &g };
    pthread_t th[4];
    for (int k = 0; k < 4; k++)
        ASSERT_EQ(pthread_create(&th[k], NULL, bounded_main, &b), 0);
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    ASSERT_EQ(atomic_load(&g.started), 4 * 50 * 4);
    ASSERT(atomic_load(&g.most) <= 4 + 2);
    qs_threadpool_free(tp);
}

TEST_MAIN(parallel_for_runs_every_index_once, null_pool_and_one_thread_run_inline,
          concurrent_submitters_lose_no_chunk, nested_loops_complete, pools_start_and_stop_cleanly,
          chunks_run_at_once, lent_threads_leave_the_loop_to_its_caller, callers_share_the_pools_threads)
