/* The runner: batches of any size give the same outputs as a direct reference computation, for
 * symbolic, fixed-1 and fixed-4 batch dims, partial last batches, type conversion, streaming from
 * a data set, progress, abort and errors. */
#include "harness.h"

#include <stdatomic.h>

#include "engine/graph.h"
#include "engine/runner.h"

/* y0 = Relu(Conv(x, W, b)) with a 3x3 kernel, pads 1;  y1 = y0 + z.
 * x: [N, 2, 3, 3], z: [N, 3, 3, 3], both outputs [N, 3, 3, 3]. */
enum { CI = 2, CO = 3, H = 3, W = 3 };

static float wval(int co, int ci, int ki, int kj) { return 0.1f * (co + 1) - 0.07f * ci + 0.03f * ki - 0.05f * kj; }
static float bval(int co) { return 0.2f * co - 0.25f; }
static float xval(int64_t n, int k) { return (float)((n * 37 + k * 11) % 23) - 11.f; }   /* small integers */
static float zval(int64_t n, int k) { return (float)((n * 5 + k * 3) % 7); }

static qs_graph *model(int64_t batch_dim)
{
    qs_graph *g = qs_graph_new();
    int x = qs_graph_value(g, "x"), z = qs_graph_value(g, "z"), w = qs_graph_value(g, "W"),
        b = qs_graph_value(g, "b"), c = qs_graph_value(g, "conv"), y0 = qs_graph_value(g, "y0"),
        y1 = qs_graph_value(g, "y1");
    int64_t xs[] = {batch_dim, CI, H, W}, zs[] = {batch_dim, CO, H, W};
    g->values[x].dtype = g->values[z].dtype = QS_F32;
    g->values[x].ndim = g->values[z].ndim = 4;
    memcpy(g->values[x].shape, xs, sizeof xs);
    memcpy(g->values[z].shape, zs, sizeof zs);
    if (batch_dim < 0) {
        g->values[x].dim_param[0] = strdup("N");
        g->values[z].dim_param[0] = strdup("N");
    }
    int64_t ws[] = {CO, CI, 3, 3}, bs[] = {CO};
    qs_tensor *wt = qs_tensor_new(QS_F32, 4, ws), *bt = qs_tensor_new(QS_F32, 1, bs);
    for (int co = 0; co < CO; co++) {
        qs_f32(bt)[co] = bval(co);
        for (int ci = 0; ci < CI; ci++)
            for (int ki = 0; ki < 3; ki++)
                for (int kj = 0; kj < 3; kj++)
                    qs_f32(wt)[((co * CI + ci) * 3 + ki) * 3 + kj] = wval(co, ci, ki, kj);
    }
    qs_graph_set_init_steal(g, w, wt);
    qs_graph_set_init_steal(g, b, bt);
    int cin[] = {x, w, b}, rin[] = {c}, ain[] = {y0, z};
    int n = qs_graph_add_node(g, "Conv", "conv", 3, cin, 1, &c);
    int64_t pads[] = {1, 1, 1, 1};
    qs_node_set_ints(&g->nodes[n], "pads", 4, pads);
    qs_graph_add_node(g, "Relu", "relu", 1, rin, 1, &y0);
    qs_graph_add_node(g, "Add", "add", 2, ain, 1, &y1);
    int ins[] = {x, z}, outs[] = {y0, y1};
    g->ninputs = 2;
    g->inputs = malloc(sizeof ins);
    memcpy(g->inputs, ins, sizeof ins);
    g->noutputs = 2;
    g->outputs = malloc(sizeof outs);
    memcpy(g->outputs, outs, sizeof outs);
    qs_graph_set_opset(g, "", 13);
    qs_err e = {0};
    if (qs_graph_toposort(g, &e) < 0)
        QT_FAIL_("toposort: %s", e.msg);
    return g;
}

static qs_tensor *make_x(int64_t n)
{
    int64_t s[] = {n, CI, H, W};
    qs_tensor *t = qs_tensor_new(QS_F32, 4, s);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < CI * H * W; k++)
            qs_f32(t)[i * CI * H * W + k] = xval(i, k);
    return t;
}

static qs_tensor *make_z(int64_t n)
{
    int64_t s[] = {n, CO, H, W};
    qs_tensor *t = qs_tensor_new(QS_F32, 4, s);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < CO * H * W; k++)
            qs_f32(t)[i * CO * H * W + k] = zval(i, k);
    return t;
}

/* direct convolution, the independent truth */
static float ref_y0(int64_t n, int co, int i, int j)
{
    double s = bval(co);
    for (int ci = 0; ci < CI; ci++)
        for (int ki = 0; ki < 3; ki++)
            for (int kj = 0; kj < 3; kj++) {
                int ii = i + ki - 1, jj = j + kj - 1;
                if (ii >= 0 && ii < H && jj >= 0 && jj < W)
                    s += (double)wval(co, ci, ki, kj) * xval(n, (ci * H + ii) * W + jj);
            }
    return s > 0 ? (float)s : 0.f;
}

static void check_outputs(qs_tensor *const *y, int64_t first, int64_t n)
{
    for (int k = 0; k < 2; k++) {
        ASSERT_EQ(y[k]->dtype, QS_F32);
        ASSERT_EQ(y[k]->ndim, 4);
        ASSERT_EQ(y[k]->shape[0], n);
        ASSERT_EQ(y[k]->shape[1], CO);
    }
    for (int64_t s = 0; s < n; s++)
        for (int co = 0; co < CO; co++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    int64_t at = ((s * CO + co) * H + i) * W + j;
                    float r = ref_y0(first + s, co, i, j);
                    ASSERT_CLOSE(qs_f32(y[0])[at], r, 1e-5, 1e-5);
                    ASSERT_CLOSE(qs_f32(y[1])[at], r + zval(first + s, (co * H + i) * W + j), 1e-5, 1e-5);
                }
}

static qs_runner *runner(qs_graph *g, int64_t batch)
{
    qs_err e = {0};
    qs_runner *r = qs_runner_new(g, batch, &e);
    if (!r)
        QT_FAIL_("runner (batch %lld): %s", (long long)batch, e.msg);
    return r;
}

static void run_ok(qs_runner *r, const qs_tensor *x, const qs_tensor *z, qs_tensor **y)
{
    qs_err e = {0};
    const qs_tensor *in[] = {x, z};
    if (qs_runner_run(r, in, y, NULL, NULL, NULL, &e) < 0)
        QT_FAIL_("run: %s", e.msg);
}

TEST(every_batch_size_gives_the_same_exact_outputs)
{
    qs_graph *g = model(-1);
    qs_tensor *x = make_x(10), *z = make_z(10), *one[2];
    qs_runner *r1 = runner(g, 1);
    ASSERT_EQ(qs_runner_batch(r1), 1);
    run_ok(r1, x, z, one);
    check_outputs(one, 0, 10);
    /* 4: two full batches and a partial one of 2; 10: exactly one; 32: only a partial one */
    int64_t sizes[] = {4, 10, 32, 3};
    for (int k = 0; k < 4; k++) {
        qs_runner *r = runner(g, sizes[k]);
        ASSERT_EQ(qs_runner_batch(r), sizes[k]);
        qs_tensor *y[2];
        for (int again = 0; again < 2; again++) {   /* the cached tail plan is reused correctly */
            run_ok(r, x, z, y);
            for (int o = 0; o < 2; o++) {
                ASSERT(qs_shape_eq(y[o], one[o]));
                ASSERT(!memcmp(y[o]->data, one[o]->data, qs_nbytes(one[o])));
                qs_tensor_free(y[o]);
            }
        }
        qs_runner_free(r);
    }
    qs_tensor_free(one[0]);
    qs_tensor_free(one[1]);
    qs_runner_free(r1);
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_graph_free(g);
}

/* A budget below the batch's arena lowers the batch until the plan fits; outputs stay exact. */
TEST(batch_lowered_to_fit_the_arena_budget)
{
    qs_graph *g = model(-1);
    qs_tensor *x = make_x(10), *z = make_z(10), *y[2];
    qs_runner *r = runner(g, 8);
    ASSERT_EQ(qs_runner_batch(r), 8);   /* a few KB: far below the default budget */
    ASSERT_EQ(qs_runner_set_arena_budget(r, 1, NULL), 0);
    ASSERT_EQ(qs_runner_batch(r), 1);
    qs_runner_set_arena_budget(r, 0, NULL);
    size_t per8 = qs_exec_arena_bytes(qs_runner_exec(r));
    ASSERT_EQ(qs_runner_batch(r), 8);
    ASSERT_EQ(qs_runner_set_arena_budget(r, per8 / 2, NULL), 0);
    int64_t b = qs_runner_batch(r);
    ASSERT(b >= 1 && b < 8);
    ASSERT(qs_exec_arena_bytes(qs_runner_exec(r)) <= per8 / 2);
    run_ok(r, x, z, y);
    check_outputs(y, 0, 10);
    qs_tensor_free(y[0]);
    qs_tensor_free(y[1]);
    qs_runner_free(r);
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_graph_free(g);
}

TEST(fixed_batch_1_runs_one_sample_at_a_time)
{
    qs_graph *g = model(1);
    qs_runner *r = runner(g, 8);
    ASSERT_EQ(qs_runner_batch(r), 1);
    qs_tensor *x = make_x(5), *z = make_z(5), *y[2];
    run_ok(r, x, z, y);
    check_outputs(y, 0, 5);
    qs_tensor_free(y[0]);
    qs_tensor_free(y[1]);
    qs_runner_free(r);
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_graph_free(g);
}

TEST(fixed_batch_4_pads_the_partial_batch)
{
    qs_graph *g = model(4);
    for (int64_t want = 1; want <= 4; want *= 4) {   /* asked for 1 or 4: the model runs 4 */
        qs_runner *r = runner(g, want);
        ASSERT_EQ(qs_runner_batch(r), 4);
        qs_tensor *x = make_x(6), *z = make_z(6), *y[2];
        run_ok(r, x, z, y);
        check_outputs(y, 0, 6);
        qs_tensor_free(y[0]);
        qs_tensor_free(y[1]);
        qs_runner_free(r);
        qs_tensor_free(x);
        qs_tensor_free(z);
    }
    qs_graph_free(g);
}

TEST(inputs_of_other_types_are_converted)
{
    qs_graph *g = model(-1);
    qs_runner *r = runner(g, 3);
    qs_tensor *x = make_x(7), *z = make_z(7);
    qs_tensor *xi = qs_tensor_cast(x, QS_I64), *zu = qs_tensor_cast(z, QS_U8), *xd = qs_tensor_cast(x, QS_F64);
    qs_tensor *y[2], *y2[2];
    run_ok(r, xi, zu, y);
    check_outputs(y, 0, 7);
    run_ok(r, xd, z, y2);
    ASSERT(!memcmp(y[1]->data, y2[1]->data, qs_nbytes(y[1])));
    for (int k = 0; k < 2; k++) {
        qs_tensor_free(y[k]);
        qs_tensor_free(y2[k]);
    }
    qs_tensor_free(xi);
    qs_tensor_free(zu);
    qs_tensor_free(xd);
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_runner_free(r);
    qs_graph_free(g);
}

struct prog { int calls; int64_t done[8], total; atomic_int *abort_after_first; };

static void on_progress(void *ud, int64_t done, int64_t total)
{
    struct prog *p = ud;
    if (p->calls < 8)
        p->done[p->calls] = done;
    p->calls++;
    p->total = total;
    if (p->abort_after_first)
        atomic_store(p->abort_after_first, 1);
}

TEST(progress_and_abort)
{
    qs_graph *g = model(-1);
    qs_runner *r = runner(g, 4);
    qs_tensor *x = make_x(10), *z = make_z(10), *y[2];
    const qs_tensor *in[] = {x, z};
    qs_err e = {0};
    struct prog p = {0};
    atomic_int flag = 0;
    ASSERT_EQ(qs_runner_run(r, in, y, on_progress, &p, &flag, &e), 0);
    ASSERT_EQ(p.calls, 3);
    ASSERT_EQ(p.done[0], 4);
    ASSERT_EQ(p.done[1], 8);
    ASSERT_EQ(p.done[2], 10);
    ASSERT_EQ(p.total, 10);
    qs_tensor_free(y[0]);
    qs_tensor_free(y[1]);

    atomic_store(&flag, 1);
    ASSERT_EQ(qs_runner_run(r, in, y, NULL, NULL, &flag, &e), QS_EABORTED);
    ASSERT(y[0] == NULL && y[1] == NULL);

    struct prog q = {0};
    atomic_store(&flag, 0);
    q.abort_after_first = &flag;
    ASSERT_EQ(qs_runner_run(r, in, y, on_progress, &q, &flag, &e), QS_EABORTED);
    ASSERT_EQ(q.calls, 1);
    ASSERT_STR_CONTAINS(e.msg, "aborted after 4 of 10 samples");
    ASSERT(y[0] == NULL);
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_runner_free(r);
    qs_graph_free(g);
}

TEST(bad_inputs_are_named)
{
    qs_graph *g = model(-1);
    qs_err e = {0};
    ASSERT(qs_runner_new(g, 0, &e) == NULL);
    ASSERT_STR_CONTAINS(e.msg, "batch size must be at least 1");
    qs_runner *r = runner(g, 4);
    qs_tensor *x = make_x(5), *z = make_z(4), *y[2];
    const qs_tensor *in[] = {x, z};
    ASSERT_EQ(qs_runner_run(r, in, y, NULL, NULL, NULL, &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "input 'z' has 4 samples, input 'x' has 5");
    const qs_tensor *in2[] = {z, z};
    ASSERT_EQ(qs_runner_run(r, in2, y, NULL, NULL, NULL, &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "input 'x' takes samples of shape [2, 3, 3]");
    ASSERT_STR_CONTAINS(e.msg, "the data has shape [4, 3, 3, 3]");
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_runner_free(r);
    qs_graph_free(g);
}

struct sink { qs_tensor *y1; int calls; int64_t starts[8], ns[8]; int fail_at; };

static int on_batch(void *ud, int64_t start, int64_t n, const qs_tensor *const *out, qs_exec *x, qs_err *e)
{
    struct sink *s = ud;
    if (s->calls < 8) {
        s->starts[s->calls] = start;
        s->ns[s->calls] = n;
    }
    if (++s->calls == s->fail_at)
        return qs_error(e, QS_EIO, "sink failed on purpose");
    if (out[1]->shape[0] != n || !qs_exec_value(x, 0))
        return qs_error(e, QS_EINVAL, "bad batch");
    memcpy(qs_f32(s->y1) + (start - s->starts[0]) * CO * H * W, out[1]->data, qs_nbytes(out[1]));
    return 0;
}

TEST(stream_from_a_data_set)
{
    char path[] = "/tmp/test-runner-XXXXXX.npz";
    int fd = mkstemps(path, 4);
    ASSERT(fd >= 0);
    close(fd);
    qs_tensor *x = make_x(11), *z = make_z(11), *zu = qs_tensor_cast(z, QS_U8);
    const char *names[] = {"z", "x"};
    const qs_tensor *arr[] = {zu, x};
    qs_err e = {0};
    ASSERT_EQ(qs_npz_save(path, 2, names, arr, &e), 0);
    qs_dataset *d;
    ASSERT_EQ(qs_dataset_open(path, &d, &e), 0);
    unlink(path);
    int arrays[] = {qs_dataset_find(d, "x"), qs_dataset_find(d, "z")};

    qs_graph *g = model(-1);
    qs_runner *r = runner(g, 4);
    int64_t s[] = {11, CO, H, W};
    struct sink k = {.y1 = qs_tensor_new(QS_F32, 4, s)};
    ASSERT_EQ(qs_runner_stream(r, d, arrays, 0, -1, on_batch, &k, NULL, NULL, NULL, &e), 0);
    ASSERT_EQ(k.calls, 3);
    ASSERT_EQ(k.starts[2], 8);
    ASSERT_EQ(k.ns[2], 3);
    qs_tensor *ref[2];
    run_ok(r, x, z, ref);
    ASSERT(!memcmp(k.y1->data, ref[1]->data, qs_nbytes(ref[1])));

    /* a window: samples 3..7 */
    struct sink w = {.y1 = qs_tensor_new(QS_F32, 4, s)};
    ASSERT_EQ(qs_runner_stream(r, d, arrays, 3, 5, on_batch, &w, NULL, NULL, NULL, &e), 0);
    ASSERT_EQ(w.calls, 2);
    ASSERT_EQ(w.starts[0], 3);
    ASSERT_EQ(w.starts[1], 7);
    ASSERT_EQ(w.ns[1], 1);
    ASSERT(!memcmp(w.y1->data, qs_f32(ref[1]) + 3 * CO * H * W, 5 * CO * H * W * sizeof(float)));

    struct sink f = {.y1 = qs_tensor_new(QS_F32, 4, s), .fail_at = 2};
    ASSERT_EQ(qs_runner_stream(r, d, arrays, 0, -1, on_batch, &f, NULL, NULL, NULL, &e), QS_EIO);
    ASSERT_EQ(f.calls, 2);
    ASSERT_STR_CONTAINS(e.msg, "on purpose");
    /* no sink: only progress (an observer would be the consumer) */
    struct prog p = {0};
    ASSERT_EQ(qs_runner_stream(r, d, arrays, 2, -1, NULL, NULL, on_progress, &p, NULL, &e), 0);
    ASSERT_EQ(p.calls, 3);
    ASSERT_EQ(p.done[2], 9);
    ASSERT_EQ(p.total, 9);
    ASSERT(qs_runner_stream(r, d, arrays, 5, 7, on_batch, &w, NULL, NULL, NULL, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "outside the data set's 11 samples");

    qs_tensor_free(ref[0]);
    qs_tensor_free(ref[1]);
    qs_tensor_free(k.y1);
    qs_tensor_free(w.y1);
    qs_tensor_free(f.y1);
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_tensor_free(zu);
    qs_runner_free(r);
    qs_graph_free(g);
    qs_dataset_close(d);
}

/* y = Reshape(x, [1, 27]) with x [N, 3, 3, 3]: the batch is baked into the shape, as old exports do */
TEST(baked_in_batch_runs_one_at_a_time)
{
    qs_graph *g = qs_graph_new();
    int x = qs_graph_value(g, "x"), sh = qs_graph_value(g, "shape"), y = qs_graph_value(g, "y");
    int64_t xs[] = {-1, 3, 3, 3}, two[] = {2};
    g->values[x].dtype = QS_F32;
    g->values[x].ndim = 4;
    memcpy(g->values[x].shape, xs, sizeof xs);
    g->values[x].dim_param[0] = strdup("N");
    qs_tensor *st = qs_tensor_new(QS_I64, 1, two);
    qs_i64(st)[0] = 1;
    qs_i64(st)[1] = 27;
    qs_graph_set_init_steal(g, sh, st);
    int in[] = {x, sh};
    qs_graph_add_node(g, "Reshape", "flatten", 2, in, 1, &y);
    g->ninputs = g->noutputs = 1;
    g->inputs = malloc(sizeof(int));
    g->outputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->outputs[0] = y;
    qs_graph_set_opset(g, "", 13);
    qs_err e = {0};
    ASSERT_EQ(qs_graph_toposort(g, &e), 0);
    qs_runner *r = runner(g, 8);
    ASSERT_EQ(qs_runner_batch(r), 1);
    int64_t s5[] = {5, 3, 3, 3};
    qs_tensor *xt = qs_tensor_new(QS_F32, 4, s5), *out[1];
    for (int i = 0; i < 5 * 27; i++)
        qs_f32(xt)[i] = i * 0.5f;
    const qs_tensor *ins[] = {xt};
    ASSERT_EQ(qs_runner_run(r, ins, out, NULL, NULL, NULL, &e), 0);
    ASSERT_EQ(out[0]->ndim, 2);
    ASSERT_EQ(out[0]->shape[0], 5);
    ASSERT_EQ(out[0]->shape[1], 27);
    ASSERT(!memcmp(out[0]->data, xt->data, 5 * 27 * sizeof(float)));
    qs_tensor_free(out[0]);
    qs_tensor_free(xt);
    qs_runner_free(r);
    qs_graph_free(g);
}

/* qs_runner_set_observer_fused keeps Relu fusion on every plan (the last partial batch's too): the
 * Conv's own output is never materialised or reported, the Relu's callback carries the activations;
 * qs_runner_set_observer turns fusion off again and the Conv is seen. */
typedef struct relu_seen { const qs_graph *g; int64_t conv_calls, relu_rows, add_calls, row0; } relu_seen;

static void watch(void *ud, int node, qs_tensor *const *out, int nout)
{
    relu_seen *s = ud;
    const char *op = s->g->nodes[node].op;
    if (!strcmp(op, "Conv"))
        s->conv_calls++;
    if (!strcmp(op, "Add"))
        s->add_calls++;
    if (strcmp(op, "Relu") || nout != 1)
        return;
    for (int64_t n = 0; n < out[0]->shape[0]; n++, s->row0++)
        for (int co = 0; co < CO; co++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++)
                    ASSERT_CLOSE(qs_f32(out[0])[((n * CO + co) * H + i) * W + j], ref_y0(s->row0, co, i, j), 1e-5,
                                 1e-5);
    s->relu_rows += out[0]->shape[0];
}

TEST(fused_observer_keeps_fusion)
{
    qs_graph *g = model(-1);
    qs_runner *r = runner(g, 4);
    relu_seen s = { .g = g };
    qs_runner_set_observer_fused(r, watch, &s);
    int conv = qs_graph_find_value(g, "conv");
    ASSERT(qs_exec_value(qs_runner_exec(r), conv) == NULL);   /* fused away */
    qs_tensor *x = make_x(7), *z = make_z(7), *y[2];
    run_ok(r, x, z, y);   /* batches of 4 and 3 */
    check_outputs(y, 0, 7);
    ASSERT_EQ(s.conv_calls, 0);
    ASSERT_EQ(s.relu_rows, 7);
    ASSERT_EQ(s.add_calls, 2);
    qs_tensor_free(y[0]);
    qs_tensor_free(y[1]);
    s = (relu_seen){ .g = g };
    qs_runner_set_observer(r, watch, &s);
    ASSERT(qs_exec_value(qs_runner_exec(r), conv) != NULL);
    run_ok(r, x, z, y);
    ASSERT_EQ(s.conv_calls, 2);
    ASSERT_EQ(s.relu_rows, 7);
    qs_tensor_free(y[0]);
    qs_tensor_free(y[1]);
    qs_tensor_free(x);
    qs_tensor_free(z);
    qs_runner_free(r);
    qs_graph_free(g);
}

TEST_MAIN(every_batch_size_gives_the_same_exact_outputs, fused_observer_keeps_fusion, fixed_batch_1_runs_one_sample_at_a_time,
          fixed_batch_4_pads_the_partial_batch, inputs_of_other_types_are_converted, progress_and_abort,
          bad_inputs_are_named, stream_from_a_data_set, baked_in_batch_runs_one_at_a_time,
          batch_lowered_to_fit_the_arena_budget)
