/* Conv backward (dX, dW, dB) per layer: oneDNN's path (engine/ops/conv_dnnl_bwd.c) against our own
 * im2col + sgemm path (QUANT_CONV_DNNL=0's), on resnet18's 3x3 and 7x7 convolution shapes at 224x224,
 * each prepared as a training plan prepares it. Reports GFLOP (of the backward: 2x the forward's) per
 * CPU-second of the process, which a loaded machine disturbs far less than the wall clock, and the
 * wall time. Not built by default:
 *
 *   make -C build bench/bench-conv-bwd && build/bench/bench-conv-bwd [BATCH [THREADS [REPEATS]]]
 */
#include "engine/ops/conv_impl.h"
#include "engine/ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct {
    const char *name;
    int64_t C, M, hw, k, stride, count;   /* count: how many resnet18 has */
} layer;

static const layer layers[] = {
    { "stem 7x7 s2", 3, 64, 224, 7, 2, 1 },     { "3x3 64", 64, 64, 56, 3, 1, 4 },
    { "3x3 64->128 s2", 64, 128, 56, 3, 2, 1 }, { "3x3 128", 128, 128, 28, 3, 1, 3 },
    { "3x3 128->256 s2", 128, 256, 28, 3, 2, 1 }, { "3x3 256", 256, 256, 14, 3, 1, 3 },
    { "3x3 256->512 s2", 256, 512, 14, 3, 2, 1 }, { "3x3 512", 512, 512, 7, 3, 1, 3 },
};

static double cpu_now(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + 1e-6 * (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static qs_tensor *rand_t(int ndim, const int64_t *shape)
{
    qs_tensor *t = qs_tensor_new(QS_F32, ndim, shape);
    for (int64_t i = 0; i < qs_numel(t); i++)
        qs_f32(t)[i] = (float)rand() / RAND_MAX - 0.5f;
    return t;
}

/* CPU and wall seconds per backward: the mean over `reps` calls after a warm-up call */
static void time_backward(const layer *l, int64_t N, int nthreads, qs_threadpool *pool, int reps, double *cpu,
                          double *wall, int *dnnl)
{
    int64_t pad = l->k / 2, out = (l->hw + 2 * pad - l->k) / l->stride + 1;
    int64_t xs[4] = { N, l->C, l->hw, l->hw }, ws[4] = { l->M, l->C, l->k, l->k }, ys[4] = { N, l->M, out, out };
    qs_tensor *in[3] = { rand_t(4, xs), rand_t(4, ws), rand_t(1, &l->M) }, *dy = rand_t(4, ys);
    qs_tensor *din[3] = { qs_tensor_new(QS_F32, 4, xs), qs_tensor_new(QS_F32, 4, ws), qs_tensor_new(QS_F32, 1, &l->M) };
    qs_tensor head, *outs[1] = { &head }, *dout[1] = { dy };
    memset(&head, 0, sizeof head);
    qs_node n;   /* its attributes are not freed: a few bytes per layer */
    memset(&n, 0, sizeof n);
    n.op = (char *)"Conv";
    n.domain = (char *)"";
    n.name = (char *)l->name;
    qs_node_set_ints(&n, "strides", 2, (int64_t[]){ l->stride, l->stride });
    qs_node_set_ints(&n, "pads", 4, (int64_t[]){ pad, pad, pad, pad });
    const qs_op_def *d = qs_op_find("", "Conv");
    qs_err e = { 0 };
    qs_kctx c = { .node = &n, .opset = 17, .nin = 3, .nout = 1, .in = in, .out = outs, .din = din, .dout = dout,
                  .nthreads = nthreads, .pool = pool, .err = &e, .training = 1 };
    void *state = NULL;
    if (d->infer(&c) < 0 || d->prepare(&c, &state) < 0) {
        fprintf(stderr, "%s: %s\n", l->name, e.msg);
        exit(1);
    }
    c.state = state;
    *dnnl = ((conv_p *)state)->dnnl_bwd != NULL;
    c.scratch_size = d->scratch(&c);
    c.scratch = malloc(c.scratch_size);
    d->backward(&c);
    double c0 = cpu_now(), w0 = wall_now();
    for (int r = 0; r < reps; r++)
        if (d->backward(&c) < 0) {
            fprintf(stderr, "%s: %s\n", l->name, e.msg);
            exit(1);
        }
    *cpu = (cpu_now() - c0) / reps;
    *wall = (wall_now() - w0) / reps;
    free(c.scratch);
    d->release(state);
    for (int i = 0; i < 3; i++) {
        qs_tensor_free(in[i]);
        qs_tensor_free(din[i]);
    }
    qs_tensor_free(dy);
}

int main(int argc, char **argv)
{
    int64_t N = argc > 1 ? atoll(argv[1]) : 32;
    int nthreads = argc > 2 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 2;
    qs_threadpool *pool = nthreads > 1 ? qs_threadpool_new(nthreads, 0, NULL) : NULL;
    double tot[2] = { 0, 0 };
    printf("batch %lld, %d threads, %d repeats; GFLOP per CPU-second (CPU s per call, wall s per call)\n",
           (long long)N, nthreads, reps);
    printf("%-17s %5s %24s %24s %7s\n", "layer", "count", "own (im2col + sgemm)", "oneDNN", "ratio");
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        const layer *l = &layers[i];
        int64_t out = (l->hw + 2 * (l->k / 2) - l->k) / l->stride + 1;
        double gflop = 2.0 * 2.0 * N * l->M * out * out * l->C * l->k * l->k / 1e9, cpu[2], wall[2];
        int took[2];
        for (int path = 0; path < 2; path++) {
            conv_dnnl_enable(path);
            time_backward(l, N, nthreads, pool, reps, &cpu[path], &wall[path], &took[path]);
            tot[path] += cpu[path] * l->count;
        }
        printf("%-17s %5lld %8.1f (%5.3f, %5.3f) %8.1f (%5.3f, %5.3f)%s %6.2fx\n", l->name, (long long)l->count,
               gflop / cpu[0], cpu[0], wall[0], gflop / cpu[1], cpu[1], wall[1], took[1] ? "" : "*", cpu[0] / cpu[1]);
    }
    printf("resnet18's 3x3/7x7 convolutions, CPU s per backward pass: own %.3f, oneDNN %.3f (%.2fx)\n", tot[0], tot[1],
           tot[0] / tot[1]);
    qs_threadpool_free(pool);
    return 0;
}
