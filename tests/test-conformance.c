/* ONNX's own conformance cases (Debian's libonnx-testdata: node/, pytorch-converted/,
 * pytorch-operator/ and simple/; real/ only holds download stubs): for every case, import the
 * model, and when the executor supports all its ops and types, run it on each test data set and
 * compare with the expected outputs (float: |got - want| <= 1e-5 + 1e-3 |want|; integers and
 * bools exactly; NaN only matches NaN).
 *
 * The list of cases is only known at run time, so this test writes its TAP lines itself instead
 * of using TEST_MAIN: one line per case, "# SKIP <reason>" for cases that need an op, a type or
 * an opset the engine does not have (qs_exec_check, or the importer for sequences and control
 * flow), "not ok" plus a diagnostic line naming the worst mismatch for real failures — an op the
 * registry has that refuses a case at plan or run time is one. Each case runs in a forked child with a time limit, so a crash or a hang is that
 * case's failure and the run goes on.
 *
 *   tests/test-conformance [substring]     only cases whose name contains substring
 *   QD_ONNX_TESTDATA=dir                    another copy of the data (default /usr/share/...)
 *   QT_NOFORK=1                             run in-process (for a debugger) */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec.h"
#include "onnx.h"
#include "ops/ops.h"

#define RTOL 1e-3
#define ATOL 1e-5
#define CASE_TIMEOUT_S 120
#define MAX_IO 16

enum { PASS, FAIL, SKIP };

typedef struct result {
    int status;
    char msg[1024];
    char ops[512];   /* unsupported ops, comma-separated (skips only) */
} result;

static int set_result(result *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_result(result *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    /* one line: TAP directives and diagnostics may not span lines */
    for (char *p = r->msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    r->status = status;
    return status;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int type_ok(qs_dtype t)
{
    return t == QS_F32 || t == QS_I64 || t == QS_I32 || t == QS_I8 || t == QS_U8 || t == QS_BOOL;
}

static const char *type_name(int t)
{
    const char *n = qs_dtype_name((qs_dtype)t);
    if (strcmp(n, "undefined"))
        return n;
    switch (t) {
    case 8: return "string";
    case 10: return "float16";
    case 12: return "uint32";
    case 13: return "uint64";
    case 16: return "bfloat16";
    default: return "an unsupported type";
    }
}

/* The ops the registry lacks, as "A, B"; returns how many. */
static int unsupported_ops(const qs_graph *g, char *buf, size_t n)
{
    int count = 0;
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const qs_node *nd = &g->nodes[i];
        if (qs_op_find(nd->domain, nd->op))
            continue;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = !strcmp(g->nodes[j].op, nd->op) && !strcmp(g->nodes[j].domain, nd->domain);
        if (seen)
            continue;
        if (k < n)
            k += snprintf(buf + k, n - k, "%s%s%s%s", count ? ", " : "", nd->domain[0] ? nd->domain : "",
                          nd->domain[0] ? "." : "", nd->op);
        count++;
    }
    return count;
}

/* Element index → "[i, j, k]" for messages. */
static void index_str(const qs_tensor *t, int64_t idx, char *buf, size_t n)
{
    int64_t coord[QS_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        coord[d] = t->shape[d] ? idx % t->shape[d] : 0;
        idx = t->shape[d] ? idx / t->shape[d] : 0;
    }
    qs_shape_str(t->ndim, coord, buf, n);
}

/* Compares one output; fills r and returns FAIL on a mismatch, PASS otherwise. */
static int compare(const char *name, int k, const qs_tensor *got, const qs_tensor *want, result *r)
{
    char a[128], b[128];
    if (got->dtype != want->dtype)
        return set_result(r, FAIL, "output %d '%s': type %s, expected %s", k, name, qs_dtype_name(got->dtype),
                          qs_dtype_name(want->dtype));
    if (!qs_shape_eq(got, want))
        return set_result(r, FAIL, "output %d '%s': shape %s, expected %s", k, name,
                          qs_shape_str(got->ndim, got->shape, a, sizeof a),
                          qs_shape_str(want->ndim, want->shape, b, sizeof b));
    int64_t n = qs_numel(want), bad = 0, worst = -1;
    double worst_excess = -1;
    for (int64_t i = 0; i < n; i++) {
        double x = qs_get_f64(got, i), y = qs_get_f64(want, i), excess;
        if (want->dtype == QS_F32) {
            if (isnan(y) || isnan(x))
                excess = isnan(x) && isnan(y) ? 0 : INFINITY;
            else if (isinf(y) || isinf(x))
                excess = x == y ? 0 : INFINITY;
            else
                excess = fabs(x - y) - (ATOL + RTOL * fabs(y));
            if (excess <= 0)
                continue;
        } else {
            int64_t xi = qs_get_i64(got, i), yi = qs_get_i64(want, i);
            if (want->dtype == QS_BOOL)
                xi = xi != 0, yi = yi != 0;
            if (xi == yi)
                continue;
            excess = fabs(x - y);
        }
        bad++;
        if (excess > worst_excess) {
            worst_excess = excess;
            worst = i;
        }
    }
    if (!bad)
        return PASS;
    index_str(want, worst, a, sizeof a);
    return set_result(r, FAIL, "output %d '%s': %lld of %lld values differ; worst at %s: got %.9g, expected %.9g",
                      k, name, (long long)bad, (long long)n, a, qs_get_f64(got, worst), qs_get_f64(want, worst));
}

/* Loads dir/prefix_N.pb for N = 0, 1, … into t[]; returns the count or a negative status. */
static int load_set(const char *dir, const char *prefix, qs_tensor **t, char **names, result *r)
{
    int n = 0;
    for (; n < MAX_IO; n++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s_%d.pb", dir, prefix, n);
        if (!exists(path))
            break;
        qs_err e = { 0 };
        int rc = qs_onnx_load_tensor(path, &t[n], &names[n], &e);
        if (rc == QS_EUNSUPPORTED)
            return -set_result(r, SKIP, "test data: %s", e.msg);
        if (rc < 0)
            return -set_result(r, FAIL, "test data: %s", e.msg);
        if (!type_ok(t[n]->dtype))
            return -set_result(r, SKIP, "%s_%d has type %s", prefix, n, qs_dtype_name(t[n]->dtype));
    }
    return n;
}

static void free_set(qs_tensor **t, char **names, int n)
{
    for (int i = 0; i < n; i++) {
        qs_tensor_free(t[i]);
        free(names[i]);
        t[i] = NULL;
        names[i] = NULL;
    }
}

/* Turns graph input k into an initializer holding t (copied). */
static int bake_input(qs_graph *g, int k, const qs_tensor *t)
{
    qs_tensor *c = qs_tensor_copy(t);
    if (!c)
        return -1;
    qs_graph_set_init_steal(g, g->inputs[k], c);
    memmove(g->inputs + k, g->inputs + k + 1, (size_t)(g->ninputs - k - 1) * sizeof *g->inputs);
    g->ninputs--;
    return 0;
}

/* Plans and runs g (a private copy) on feed[], comparing with want[]. With bake set, the
 * inputs become initializers first: the engine requires shape-like inputs (Reshape's shape,
 * Slice's starts, Range's limits, …) to be known at plan time, and the conformance cases often
 * pass them as graph inputs. Only used as a retry, so runtime inputs are tested wherever the
 * plan allows them. */
static int run_graph(qs_graph *g, const qs_tensor **feed, qs_tensor **want, char **want_names, int nout, int bake,
                     result *r)
{
    qs_err e = { 0 };
    qs_exec *x = NULL;
    int status = PASS;
    for (int k = g->ninputs - 1; bake && k >= 0; k--) {
        if (bake_input(g, k, feed[k]) < 0)
            return set_result(r, FAIL, "out of memory");
        memmove(feed + k, feed + k + 1, (size_t)(g->ninputs - k) * sizeof *feed);
    }
    x = qs_exec_new(g, QS_EXEC_INFER, &e);
    if (!x)
        return set_result(r, FAIL, "exec_new: %s", e.msg);
    int64_t batch = g->ninputs && feed[0]->ndim ? feed[0]->shape[0] : 1;
    /* qs_exec_check passed: every op is in the registry, at a supported opset and types. An op
     * that then refuses the case is a failure to report, never a skip. */
    if (qs_exec_plan(x, batch, &e) < 0) {
        status = set_result(r, FAIL, "plan: %s", e.msg);
        goto out;
    }
    for (int k = 0; k < g->ninputs; k++)
        if (qs_exec_set_input(x, k, feed[k], &e) < 0) {
            status = set_result(r, FAIL, "set_input %d: %s", k, e.msg);
            goto out;
        }
    if (qs_exec_forward(x, &e) < 0) {
        status = set_result(r, FAIL, "forward: %s", e.msg);
        goto out;
    }
    if (nout > g->noutputs) {
        status = set_result(r, FAIL, "%d expected outputs, the graph has %d", nout, g->noutputs);
        goto out;
    }
    for (int k = 0; k < nout && status == PASS; k++) {
        int idx = k;
        for (int j = 0; j < g->noutputs; j++)   /* by name when the file names its output */
            if (want_names[k] && !strcmp(want_names[k], g->values[g->outputs[j]].name))
                idx = j;
        const qs_tensor *got = qs_exec_output(x, idx);
        if (!got) {
            status = set_result(r, FAIL, "output %d missing", idx);
            break;
        }
        status = compare(g->values[g->outputs[idx]].name, idx, got, want[k], r);
    }
out:
    qs_exec_free(x);
    return status;
}

/* Runs one test data set against a copy of g. */
static int run_set(const qs_graph *g0, const char *setdir, result *r)
{
    qs_tensor *in[MAX_IO] = { 0 }, *out[MAX_IO] = { 0 };
    char *in_names[MAX_IO] = { 0 }, *out_names[MAX_IO] = { 0 };
    qs_graph *g = NULL;
    int nin = load_set(setdir, "input", in, in_names, r);
    int nout = nin < 0 ? 0 : load_set(setdir, "output", out, out_names, r);
    int status = PASS;
    if (nin < 0 || nout < 0) {
        status = r->status;
        goto out;
    }
    if (nout == 0) {
        status = set_result(r, SKIP, "no expected outputs in %s", setdir);
        goto out;
    }
    if (g0->ninputs > MAX_IO) {
        status = set_result(r, SKIP, "%d inputs", g0->ninputs);
        goto out;
    }

    for (int bake = 0; bake < 2; bake++) {
        g = qs_graph_clone(g0);
        if (!g) {
            status = set_result(r, FAIL, "out of memory cloning the graph");
            goto out;
        }
        /* graph input k ← the tensor of the same name, else the k-th file */
        const qs_tensor *feed[MAX_IO + 1] = { 0 };
        for (int k = 0; k < g->ninputs; k++) {
            const char *nm = g->values[g->inputs[k]].name;
            for (int j = 0; j < nin && !feed[k]; j++)
                if (in_names[j] && !strcmp(in_names[j], nm))
                    feed[k] = in[j];
            if (!feed[k] && k < nin && (!in_names[k] || !in_names[k][0]))
                feed[k] = in[k];
            if (!feed[k]) {
                status = set_result(r, FAIL, "no test data for graph input '%s'", nm);
                goto out;
            }
            /* declare the input's real shape, so the plan is for exactly this data */
            qs_value *v = &g->values[g->inputs[k]];
            v->ndim = feed[k]->ndim;
            for (int d = 0; d < QS_MAX_DIMS; d++) {
                free(v->dim_param[d]);
                v->dim_param[d] = NULL;
                v->shape[d] = d < feed[k]->ndim ? feed[k]->shape[d] : 0;
            }
            if (v->dtype == QS_UNDEFINED)
                v->dtype = feed[k]->dtype;
            if (v->dtype != feed[k]->dtype) {
                status = set_result(r, FAIL, "input '%s' is declared %s, its test data is %s", nm,
                                    qs_dtype_name(v->dtype), qs_dtype_name(feed[k]->dtype));
                goto out;
            }
        }
        status = run_graph(g, feed, out, out_names, nout, bake, r);
        qs_graph_free(g);
        g = NULL;
        /* retry with constant shape inputs only when that is what the plan asked for */
        if (status == PASS || !strstr(r->msg, "known at plan time"))
            break;
    }
out:
    qs_graph_free(g);
    free_set(in, in_names, nin > 0 ? nin : MAX_IO);
    free_set(out, out_names, nout > 0 ? nout : MAX_IO);
    return status;
}

/* Cases whose expected outputs come from numpy's random generator in training mode: no
 * implementation can reproduce them (ONNX Runtime excludes them too). Returns the reason. */
static const char *random_case(const char *dir)
{
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    if (!strncmp(name, "test_training_dropout", 21) && !strstr(name, "zero_ratio"))
        return "Dropout in training mode draws a random mask (numpy's generator); not reproducible";
    return NULL;
}

/* Cases where ONNX's reference implementation and ONNX Runtime disagree and quantd follows ONNX
 * Runtime (and PyTorch, whose exports these ops come from). Returns the reason. */
static const char *divergent_case(const char *dir)
{
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    if (!strcmp(name, "test_resize_downsample_scales_linear_align_corners") ||
        !strcmp(name, "test_resize_downsample_scales_cubic_align_corners"))
        return "align_corners with a non-integer s·L_in (4 × 0.6, 4 × 0.8): ONNX's reference divides by s·L_in − 1, ONNX "
               "Runtime and PyTorch by the output length − 1, as quantd does (tests/test-ops-resize.c checks ONNX Runtime's values)";
    return NULL;
}

static int run_case(const char *dir, result *r)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    qs_err e = { 0 };
    qs_graph *g = NULL;
    int rc = qs_onnx_load(path, &g, &e);
    if (rc == QS_EUNSUPPORTED)
        return set_result(r, SKIP, "import: %s", e.msg);
    if (rc < 0)
        return set_result(r, FAIL, "import: %s", e.msg);

    int status = PASS;
    const char *why = random_case(dir) ? random_case(dir) : divergent_case(dir);
    if (why) {
        status = set_result(r, SKIP, "%s", why);
        goto out;
    }
    if (unsupported_ops(g, r->ops, sizeof r->ops) > 0) {
        status = set_result(r, SKIP, "unsupported op: %s", r->ops);
        goto out;
    }
    for (int k = 0; k < g->ninputs + g->noutputs; k++) {
        int v = k < g->ninputs ? g->inputs[k] : g->outputs[k - g->ninputs];
        qs_dtype t = g->values[v].dtype;
        if (t != QS_UNDEFINED && !type_ok(t)) {
            status = set_result(r, SKIP, "%s '%s' has type %s", k < g->ninputs ? "input" : "output",
                                g->values[v].name, type_name(t));
            goto out;
        }
    }
    if (qs_exec_check(g, &e) < 0) {
        status = set_result(r, SKIP, "%s", e.msg);
        goto out;
    }

    int sets = 0;
    for (int s = 0; status == PASS; s++) {
        char setdir[1200];
        snprintf(setdir, sizeof setdir, "%s/test_data_set_%d", dir, s);
        if (!exists(setdir))
            break;
        status = run_set(g, setdir, r);
        sets++;
    }
    if (status == PASS && sets == 0)
        status = set_result(r, SKIP, "no test data sets");
out:
    qs_graph_free(g);
    return status;
}

/* Runs a case in a child process (crash and hang isolation) and collects its result. */
static void run_isolated(const char *dir, result *r)
{
    memset(r, 0, sizeof *r);
    if (getenv("QT_NOFORK")) {
        r->status = run_case(dir, r);
        return;
    }
    int fds[2];
    if (pipe(fds) < 0) {
        set_result(r, FAIL, "pipe: %s", strerror(errno));
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        set_result(r, FAIL, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        alarm(CASE_TIMEOUT_S);
        result cr;
        memset(&cr, 0, sizeof cr);
        cr.status = run_case(dir, &cr);
        ssize_t w = write(fds[1], &cr, sizeof cr);
        _exit(w == (ssize_t)sizeof cr ? 0 : 1);
    }
    close(fds[1]);
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t n = read(fds[0], (char *)r + got, sizeof *r - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (got == sizeof *r && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        set_result(r, FAIL, "timed out after %d s", CASE_TIMEOUT_S);
    else if (WIFSIGNALED(st))
        set_result(r, FAIL, "crashed: %s", strsignal(WTERMSIG(st)));
    else
        set_result(r, FAIL, "child exited with status %d", WEXITSTATUS(st));
}

typedef struct tally { char op[64]; int cases; } tally;

static void count_ops(tally *t, int *nt, int cap, const char *ops)
{
    char buf[sizeof ((result *)0)->ops];
    snprintf(buf, sizeof buf, "%s", ops);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        int i = 0;
        while (i < *nt && strcmp(t[i].op, tok))
            i++;
        if (i == *nt) {
            if (*nt == cap)
                continue;
            snprintf(t[i].op, sizeof t[i].op, "%s", tok);
            t[i].cases = 0;
            (*nt)++;
        }
        t[i].cases++;
    }
}

static int by_cases(const void *a, const void *b)
{
    const tally *x = a, *y = b;
    return x->cases != y->cases ? y->cases - x->cases : strcmp(x->op, y->op);
}

int main(int argc, char **argv)
{
    const char *root = getenv("QD_ONNX_TESTDATA");
    if (!root)
        root = "/usr/share/libonnx-testdata/data";
    const char *suites[] = { "node", "pytorch-converted", "pytorch-operator", "simple" };
    const char *filter = argc > 1 ? argv[1] : NULL;

    char **cases = NULL;
    int ncases = 0, cap = 0;
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", root, suites[s]);
        struct dirent **list;
        int n = scandir(dir, &list, NULL, alphasort);
        for (int i = 0; i < n; i++) {
            char *c = NULL;
            if (list[i]->d_name[0] != '.' && asprintf(&c, "%s/%s", suites[s], list[i]->d_name) > 0 &&
                (!filter || strstr(c, filter))) {
                if (ncases == cap) {
                    cap = cap ? 2 * cap : 1024;
                    cases = realloc(cases, (size_t)cap * sizeof *cases);
                    if (!cases)
                        return 99;
                }
                cases[ncases++] = c;
            } else {
                free(c);
            }
            free(list[i]);
        }
        if (n >= 0)
            free(list);
    }
    if (ncases == 0) {
        printf("1..0 # SKIP no ONNX conformance data under %s (install libonnx-testdata)\n", root);
        return 0;
    }

    printf("1..%d\n", ncases);
    int passed = 0, failed = 0, skipped = 0, nt = 0;
    tally ops[512];
    for (int i = 0; i < ncases; i++) {
        char dir[2048];
        snprintf(dir, sizeof dir, "%s/%s", root, cases[i]);
        result r;
        run_isolated(dir, &r);
        if (r.status == PASS) {
            passed++;
            printf("ok %d - %s\n", i + 1, cases[i]);
        } else if (r.status == SKIP) {
            skipped++;
            printf("ok %d - %s # SKIP %s\n", i + 1, cases[i], r.msg);
            count_ops(ops, &nt, (int)(sizeof ops / sizeof ops[0]), r.ops);
        } else {
            failed++;
            printf("not ok %d - %s\n# %s\n", i + 1, cases[i], r.msg);
        }
        fflush(stdout);
        free(cases[i]);
    }
    free(cases);
    if (nt) {
        qsort(ops, (size_t)nt, sizeof ops[0], by_cases);
        printf("# unsupported ops (cases):");
        for (int i = 0; i < nt; i++)
            printf(" %s (%d)", ops[i].op, ops[i].cases);
        printf("\n");
    }
    printf("# conformance: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
