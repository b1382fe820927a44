/* Malformed and oversized ONNX models (issue 18): an empty graph, tensors whose dims claim more
 * than the data they carry, tensors over the size limit at import and at plan time (checked before
 * anything of that size is allocated, under a capped address space), nodes without outputs, and
 * `quant info` on a model that would fill gigabytes. Models are built with tests/onnx-pb.h. */
#include <sys/resource.h>

#include "exec.h"
#include "onnx-pb.h"

/* The smallest model there is, as bytes: ir_version 8, opset 13, a graph named "gg" and nothing
 * else. Its node array is NULL, which the topological sort once handed to memcpy (UBSan). */
TEST(empty_graph_model)
{
    static const uint8_t bytes[12] = { 0x08, 0x08, 0x42, 0x02, 0x10, 0x0d, 0x3a, 0x04, 0x12, 0x02, 'g', 'g' };
    qs_err e = { 0 };
    qs_graph *g = NULL;
    int rc = qs_onnx_load_buffer(bytes, sizeof bytes, NULL, &g, &e);
    if (rc < 0)
        QT_FAIL_("load failed: %s", e.msg);
    ASSERT_EQ(g->nnodes, 0);
    ASSERT_EQ(g->ninputs, 0);
    ASSERT_EQ(g->noutputs, 0);
    ASSERT_STR_EQ(g->name, "gg");
    /* what an upload and `quant info` do next */
    ASSERT_EQ(qs_exec_check(g, &e), 0);
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
    ASSERT(x);
    ASSERT_EQ(qs_exec_plan(x, 1, &e), 0);
    qs_exec_free(x);
    qs_graph *c = qs_graph_clone(g);
    ASSERT(c && c->nnodes == 0);
    qs_graph_free(c);
    qs_graph_free(g);
}

#if defined(__SANITIZE_ADDRESS__)
#define QT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QT_ASAN 1
#endif
#endif

/* Caps the address space at 1 GiB above what the process uses now, so that a loader that
 * allocated what a tensor claims fails with "out of memory" instead of quietly getting lazy
 * pages. (Not under ASan, whose shadow memory needs terabytes of address space.) */
static void cap_address_space(void)
{
#ifndef QT_ASAN
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    ASSERT(f && fscanf(f, "%llu", &pages) == 1);
    fclose(f);
    rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)1 << 30);
    struct rlimit rl = { cap, cap };
    ASSERT_EQ(setrlimit(RLIMIT_AS, &rl), 0);
#endif
}

/* An initializer whose dims claim far more than the data it carries is refused for its data,
 * before anything of the claimed size is allocated. */
TEST(claimed_size_without_data)
{
    cap_address_space();
    qs_err e = { 0 };
    static const char *const N[] = { "N", NULL };
    const int64_t big[2] = { 100000, 32000 };                  /* 3.2e9 floats: 12.8 GB */
    const int64_t huge[3] = { 1000, 1000, 12500 };             /* 1.25e10 int64: 100 GB */

    model md = model_pb(8, 13);   /* typed field, empty */
    add_init(&md, tensor_pb("big", QS_F32, 2, big));
    add_input(&md, vi_pb("x", QS_F32, 1, (int64_t[]){ -1 }, N));
    add_node(&md, node_pb("Identity", "id", "x", "y"));
    add_output(&md, vi_pb("y", QS_F32, 1, (int64_t[]){ -1 }, N));
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "initializer 'big'");
    ASSERT_STR_CONTAINS(e.msg, "float_data has 0 values, shape [100000, 32000] needs 3200000000");

    md = model_pb(8, 13);         /* raw_data of 8 bytes */
    Onnx__TensorProto *t = tensor_pb("huge", QS_I64, 3, huge);
    set_raw(t, "\1\0\0\0\0\0\0\0", 8);
    add_init(&md, t);
    add_output(&md, vi_pb("huge", QS_I64, 3, huge, NULL));
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "initializer 'huge'");
    ASSERT_STR_CONTAINS(e.msg, "raw_data has 8 bytes, shape [1000, 1000, 12500] of int64 needs 100000000000");

    md = model_pb(8, 13);         /* the same claim in a Constant node's value */
    Onnx__NodeProto *c = node_pb("Constant", "k", NULL, "y");
    Onnx__AttributeProto *a = attr_pb(c, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    a->t = tensor_pb("", QS_F32, 2, big);
    add_node(&md, c);
    add_output(&md, vi_pb("y", QS_F32, 2, big, NULL));
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "Constant 'k': attribute 'value'");
    ASSERT_STR_CONTAINS(e.msg, "float_data has 0 values");

    md = model_pb(8, 13);         /* dims whose product overflows int64 */
    t = tensor_pb("wrap", QS_F32, 3, (int64_t[]){ 1LL << 31, 1LL << 31, 1LL << 31 });
    add_init(&md, t);
    add_output(&md, vi_pb("wrap", QS_F32, 0, NULL, NULL));
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "initializer 'wrap': shape [2147483648, 2147483648, 2147483648] is too large");
    pb_free_all();
}

/* A tensor with all its data but over the limit: refused with its name, its size and the limit. */
TEST(tensor_limit_on_initializers_and_constants)
{
    qs_set_max_tensor_bytes(1 << 20);
    ASSERT_EQ(qs_max_tensor_bytes(), 1 << 20);
    qs_err e = { 0 };
    const int64_t d[1] = { (1 << 18) + 1 };   /* one float over 1 MiB */
    float *ones = calloc((size_t)d[0], sizeof *ones);
    ASSERT(ones);

    model md = model_pb(8, 13);
    Onnx__TensorProto *t = tensor_pb("w", QS_F32, 1, d);
    set_raw(t, ones, (size_t)d[0] * 4);
    add_init(&md, t);
    add_output(&md, vi_pb("w", QS_F32, 1, d, NULL));
    ASSERT_EQ(load_err(&md, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "initializer 'w': shape [262145] of float32 is 1048580 bytes, over the tensor "
                               "size limit of 1048576 bytes");

    md = model_pb(8, 13);
    Onnx__NodeProto *c = node_pb("Constant", "k", NULL, "y");
    Onnx__AttributeProto *a = attr_pb(c, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    a->t = tensor_pb("", QS_F32, 1, d);
    a->t->n_float_data = (size_t)d[0];
    a->t->float_data = ones;
    add_node(&md, c);
    add_output(&md, vi_pb("y", QS_F32, 1, d, NULL));
    ASSERT_EQ(load_err(&md, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "Constant 'k': attribute 'value': shape [262145] of float32 is 1048580 bytes");

    qs_set_max_tensor_bytes(0);   /* back to the default, under which both load */
    ASSERT_EQ(qs_max_tensor_bytes(), QS_DEFAULT_MAX_TENSOR_BYTES);
    ASSERT_EQ(load_err(&md, &e), 0);
    free(ones);
    pb_free_all();
}

static Onnx__TensorProto *i64_init(const char *name, int n, const int64_t *v)
{
    int64_t dims[1] = { n };
    Onnx__TensorProto *t = tensor_pb(name, QS_I64, 1, dims);
    t->n_int64_data = (size_t)n;
    t->int64_data = zalloc((size_t)n * sizeof *v);
    memcpy(t->int64_data, v, (size_t)n * sizeof *v);
    return t;
}

static Onnx__TensorProto *f32_scalar(const char *name, float v)
{
    Onnx__TensorProto *t = tensor_pb(name, QS_F32, 0, NULL);
    t->n_float_data = 1;
    t->float_data = zalloc(sizeof(float));
    t->float_data[0] = v;
    return t;
}

/* A 1-node model: op reads x (when x_dims is given, a graph input of that shape with a batch
 * dim) and the initializers in inits, writes y. */
static model one_op(const char *op, const char *ins, Onnx__TensorProto **inits, int ninits)
{
    model md = model_pb(8, 13);
    for (int i = 0; i < ninits; i++)
        add_init(&md, inits[i]);
    add_node(&md, node_pb(op, "big", ins, "y"));
    add_output(&md, vi_pb("y", QS_F32, -1, NULL, NULL));
    return md;
}

/* Plans md at batch; returns the code, the message in e. */
static int plan_err(const model *md, int64_t batch, qs_err *e)
{
    qs_graph *g = load_ok(md);
    qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, e);
    ASSERT(x);
    int rc = qs_exec_plan(x, batch, e);
    qs_exec_free(x);
    qs_graph_free(g);
    return rc;
}

/* Sizes computed while planning are checked before their buffers exist: under a 1 GiB address
 * space, a planner that allocated first would fail with "out of memory" instead. */
TEST(tensor_limit_at_plan_time)
{
    cap_address_space();
    qs_err e = { 0 };
    Onnx__TensorProto *in[3];

    /* ConstantOfShape of 3.2 GB (312 bytes of model), over the default 2 GiB */
    in[0] = i64_init("s", 1, (int64_t[]){ 800000000 });
    model md = one_op("ConstantOfShape", "s", in, 1);
    ASSERT_EQ(plan_err(&md, 1, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "ConstantOfShape 'big': output 0 ('y'): shape [800000000] of float32 is "
                               "3200000000 bytes, over the tensor size limit of 2147483648 bytes");

    /* Expand of one float to 2^20 x 2^20; a shape whose size overflows; a negative dim */
    in[0] = f32_scalar("one", 1.f);
    in[1] = i64_init("s", 2, (int64_t[]){ 1 << 20, 1 << 20 });
    md = one_op("Expand", "one,s", in, 2);
    ASSERT_EQ(plan_err(&md, 1, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "Expand 'big': output 0 ('y'): shape [1048576, 1048576] of float32 is 4398046511104 bytes");
    in[1] = i64_init("s", 3, (int64_t[]){ 1LL << 40, 1LL << 40, 1LL << 40 });
    md = one_op("Expand", "one,s", in, 2);
    ASSERT_EQ(plan_err(&md, 1, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "shape [1099511627776, 1099511627776, 1099511627776] of float32 is too large");
    in[1] = i64_init("s", 2, (int64_t[]){ 3, -5 });
    md = one_op("Expand", "one,s", in, 2);
    ASSERT_EQ(plan_err(&md, 1, &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "Expand 'big': output 0 ('y'): shape [3, -5] has a negative dimension");

    /* Tile, and Tile whose repeats overflow a dim */
    in[0] = tensor_pb("x", QS_F32, 1, (int64_t[]){ 1 });
    in[0]->n_float_data = 1;
    in[0]->float_data = zalloc(sizeof(float));
    in[1] = i64_init("r", 1, (int64_t[]){ 1LL << 40 });
    md = one_op("Tile", "x,r", in, 2);
    ASSERT_EQ(plan_err(&md, 1, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "Tile 'big': output 0 ('y'): shape [1099511627776] of float32 is 4398046511104 bytes");

    /* Range: 1e12 floats, and a length past int64 (the float-to-int cast was undefined) */
    in[0] = f32_scalar("a", 0.f);
    in[1] = f32_scalar("b", 1e12f);
    in[2] = f32_scalar("d", 1.f);
    md = one_op("Range", "a,b,d", in, 3);
    ASSERT_EQ(plan_err(&md, 1, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "Range 'big': output 0 ('y'): shape [999999995904] of float32");
    in[1] = f32_scalar("b", 3e38f);
    in[2] = f32_scalar("d", 1e-30f);
    md = one_op("Range", "a,b,d", in, 3);
    ASSERT_EQ(plan_err(&md, 1, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "has too many elements");

    /* an activation: a graph input at a batch that makes it too large */
    qs_set_max_tensor_bytes(1 << 20);
    static const char *const N[] = { "N", NULL };
    md = model_pb(8, 13);
    add_input(&md, vi_pb("x", QS_F32, 2, (int64_t[]){ -1, 1024 }, N));
    add_node(&md, node_pb("Relu", "r", "x", "y"));
    add_output(&md, vi_pb("y", QS_F32, 2, (int64_t[]){ -1, 1024 }, N));
    ASSERT_EQ(plan_err(&md, 256, &e), 0);                   /* exactly 1 MiB */
    ASSERT_EQ(plan_err(&md, 257, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "graph input 'x' at batch 257: shape [257, 1024] of float32 is 1052672 bytes, "
                               "over the tensor size limit of 1048576 bytes");
    /* and a node output past the limit while its input is within it */
    md = model_pb(8, 13);
    add_input(&md, vi_pb("x", QS_F32, 2, (int64_t[]){ -1, 1024 }, N));
    add_init(&md, i64_init("r", 2, (int64_t[]){ 1, 2 }));
    add_node(&md, node_pb("Tile", "t", "x,r", "y"));
    add_output(&md, vi_pb("y", QS_F32, 2, (int64_t[]){ -1, 2048 }, N));
    ASSERT_EQ(plan_err(&md, 128, &e), 0);
    ASSERT_EQ(plan_err(&md, 129, &e), QS_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(e.msg, "Tile 't': output 0 ('y'): shape [129, 2048] of float32 is 1056768 bytes");
    pb_free_all();
}

/* Found by fuzz-onnx: a node without outputs reached the ops' infer, which all write out[0]. */
TEST(node_without_outputs)
{
    qs_err e = { 0 };
    static const char *const N[] = { "N", NULL };
    model md = model_pb(8, 13);
    add_input(&md, vi_pb("x", QS_F32, 2, (int64_t[]){ -1, 4 }, N));
    add_init(&md, i64_init("r", 2, (int64_t[]){ 1, 3 }));
    add_node(&md, node_pb("Tile", "t", "x,r", NULL));
    add_output(&md, vi_pb("x", QS_F32, 2, (int64_t[]){ -1, 4 }, N));
    ASSERT_EQ(load_err(&md, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "Tile 't' has no outputs");

    md = model_pb(8, 13);   /* its one output omitted: imports (ONNX allows it), refused by the plan */
    add_input(&md, vi_pb("x", QS_F32, 2, (int64_t[]){ -1, 4 }, N));
    add_init(&md, i64_init("r", 2, (int64_t[]){ 1, 3 }));
    add_node(&md, node_pb("Tile", "t", "x,r", ""));
    add_output(&md, vi_pb("x", QS_F32, 2, (int64_t[]){ -1, 4 }, N));
    ASSERT_EQ(plan_err(&md, 1, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "Tile 't' has no outputs");
    pb_free_all();
}

#ifdef QT_ASAN
#define ULIMIT_1G ""   /* ASan's shadow memory needs terabytes of address space */
#else
#define ULIMIT_1G "ulimit -v 1048576; "   /* 1 GiB: filling 3.2 GB would fail, not pass slowly */
#endif

/* `quant info` on the 312-byte ConstantOfShape model reports the refusal instead of filling
 * 3.2 GB; QUANT_MAX_TENSOR_SIZE moves the limit. */
TEST(quant_info_refuses_oversized_constant)
{
    const char *bd = getenv("QD_BUILDDIR");
    if (!bd)
        SKIP("QD_BUILDDIR is not set (run through make check)");
    Onnx__TensorProto *in[1] = { i64_init("s", 1, (int64_t[]){ 800000000 }) };
    model md = one_op("ConstantOfShape", "s", in, 1);
    size_t len;
    void *buf = pack_model(&md, &len);
    const char *dir = make_tmpdir();
    char path[512], cmd[2048], out[8192];
    snprintf(path, sizeof path, "%s/cos.onnx", dir);
    write_file(path, buf, len);
    free(buf);
    const char *env[2] = { "", "QUANT_MAX_TENSOR_SIZE=1K " };
    const char *want[2] = { "3200000000 bytes, over the tensor size limit of 2147483648 bytes",
                            "3200000000 bytes, over the tensor size limit of 1024 bytes" };
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s%s'%s/quant' info '%s' 2>&1", ULIMIT_1G, env[k], bd, path);
        FILE *p = popen(cmd, "r");
        ASSERT(p);
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        int st = pclose(p);
        ASSERT(WIFEXITED(st));
        ASSERT_EQ(WEXITSTATUS(st), 0);   /* info still describes the model */
        ASSERT_STR_CONTAINS(out, "ConstantOfShape 1");
        ASSERT_STR_CONTAINS(out, "FLOPs        unknown: ConstantOfShape 'big': output 0 ('y'): shape [800000000]");
        ASSERT_STR_CONTAINS(out, want[k]);
    }
    snprintf(cmd, sizeof cmd, "QUANT_MAX_TENSOR_SIZE=lots '%s/quant' info '%s' 2>&1", bd, path);
    FILE *p = popen(cmd, "r");
    ASSERT(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    ASSERT_EQ(WEXITSTATUS(pclose(p)), 2);
    ASSERT_STR_CONTAINS(out, "QUANT_MAX_TENSOR_SIZE='lots' is not a size");
    rm_tmpdir();
    pb_free_all();
}

TEST_MAIN(empty_graph_model, claimed_size_without_data, tensor_limit_on_initializers_and_constants,
          tensor_limit_at_plan_time, node_without_outputs, quant_info_refuses_oversized_constant)
