/* quant: the command line.
 *
 * One table of commands ({name, summary, usage, help, fn}); each command parses its own options
 * with the small parser below (`--opt value` or `--opt=value`) and returns its exit status:
 * 0 success, 1 failure (the message names the file, input or op), 2 usage error. Results go to
 * stdout — exactly one JSON object with --json — and everything else (errors, the progress bar)
 * to stderr, so `quant eval … --json | jq` works.
 *
 * The engine commands run locally: info, run, eval, bench. Ctrl-C (or SIGTERM, SIGHUP) raises the engine's abort flag,
 * so a long run stops between nodes and exits with 130; a second Ctrl-C kills as usual. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/bench_profile.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "cli/remote.h"
#include <quant/quant.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int has_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), k = strlen(ext);
    return n > k && !strcasecmp(path + n - k, ext);
}

/* --- shared helpers ---------------------------------------------------------------------------- */

qs_graph *cli_load_model(const command *c, const char *path)
{
    qs_err e = {0};
    qs_graph *g = NULL;
    if (qs_onnx_load(path, &g, &e) < 0) {
        fail(c, "%s", e.msg);
        return NULL;
    }
    return g;
}

static qs_dataset *open_data(const command *c, const char *path)
{
    qs_err e = {0};
    qs_dataset *d = NULL;
    if (qs_dataset_open(path, &d, &e) < 0) {
        fail(c, "%s", e.msg);
        return NULL;
    }
    return d;
}

static const char *vname(const qs_graph *g, int v) { return qs_graph_value_name(g, v); }

/* "a, b, c" for messages */
static void list_names(char *buf, size_t n, int count, const char *(*get)(const void *, int), const void *ctx)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < count && k < n; i++)
        k += snprintf(buf + k, n - k, i ? ", %s" : "%s", get(ctx, i));
}

static const char *input_name(const void *g, int i) { return vname(g, qs_graph_input(g, i)); }
static const char *output_name(const void *g, int i) { return vname(g, qs_graph_output(g, i)); }
static const char *array_name(const void *d, int i) { return qs_dataset_name(d, i); }

/* Which data set array feeds each graph input: .npz arrays by input name; a .npy (or an .npz with
 * a single array) only for a single-input model. */
static int map_inputs(const command *c, qs_graph *g, const qs_dataset *d, const char *path, int *arrays)
{
    qs_err ce = {0};
    if (qs_exec_check(g, &ce) < 0)   /* what cannot run at all comes before what the data says */
        return fail(c, "%s", ce.msg);
    char names[1024];
    list_names(names, sizeof names, qs_graph_input_count(g), input_name, g);
    int single = qs_dataset_count(d) == 1;
    if (single && !qs_dataset_name(d, 0)[0] && qs_graph_input_count(g) != 1)
        return fail(c, "%s holds one array but the model has %d inputs (%s); give an .npz keyed by input name",
                    path, qs_graph_input_count(g), names);
    for (int i = 0; i < qs_graph_input_count(g); i++) {
        const char *name = vname(g, qs_graph_input(g, i));
        arrays[i] = qs_dataset_find(d, name);
        if (arrays[i] < 0 && single && qs_graph_input_count(g) == 1)
            arrays[i] = 0;
        if (arrays[i] < 0) {
            char have[1024];
            list_names(have, sizeof have, qs_dataset_count(d), array_name, d);
            return fail(c, "%s has no array '%s' for the model input '%s' (it has: %s; the model's inputs: %s)",
                        path, name, name, have, names);
        }
        qs_err e = {0};   /* the samples' shape gives the input's symbolic dims their sizes */
        if (qs_graph_bind_data(g, i, qs_dataset_array(d, arrays[i]), path, &e) < 0)
            return fail(c, "%s", e.msg);
    }
    return EXIT_OK;
}

/* --- quant run ----------------------------------------------------------------------------------- */

static int cmd_run(const command *c, int argc, char **argv)
{
    const char *pos[1], *in = NULL, *outp = NULL, *sbatch = NULL, *sthreads = NULL, *shapes[CLI_OPT_MAX];
    int npos, nshapes = 0;
    const opt opts[] = {{.name = "--input", .val = &in}, {.name = "--output", .val = &outp},
                        {.name = "--batch", .val = &sbatch}, {.name = "--threads", .val = &sthreads},
                        {.name = "--input-shape", .val = shapes, .count = &nshapes}, {.name = NULL}};
    int rc = parse_args(c, argc, argv, opts, pos, 1, &npos);
    if (rc != PARSED)
        return rc;
    int64_t batch = 32, threads = 0;
    if (npos < 1)
        return usage_error(c, "missing MODEL");
    if (!in)
        return usage_error(c, "missing --input X.npy|X.npz");
    if (!outp)
        return usage_error(c, "missing --output Y.npy|Y.npz");
    if (!has_ext(outp, ".npy") && !has_ext(outp, ".npz"))
        return usage_error(c, "--output must name a .npy or .npz file, not '%s'", outp);
    if ((rc = int_opt(c, "--batch", sbatch, 1, 1 << 20, &batch)) != PARSED ||
        (rc = int_opt(c, "--threads", sthreads, 1, 1024, &threads)) != PARSED)
        return rc;

    qs_graph *g = cli_load_model(c, pos[0]);
    if (!g)
        return EXIT_FAIL;
    qs_dataset *d = NULL;
    qs_runner *r = NULL;
    qs_threadpool *tp = NULL;
    qs_tensor **y = calloc(qs_graph_output_count(g) + 1, sizeof *y);
    const qs_tensor **x = calloc(qs_graph_input_count(g) + 1, sizeof *x);
    int *arrays = calloc(qs_graph_input_count(g) + 1, sizeof *arrays);
    qs_err e = {0};
    rc = EXIT_FAIL;
    if (has_ext(outp, ".npy") && qs_graph_output_count(g) != 1) {
        char names[1024];
        list_names(names, sizeof names, qs_graph_output_count(g), output_name, g);
        fail(c, "the model has %d outputs (%s); write them to an .npz file", qs_graph_output_count(g), names);
        goto out;
    }
    if (cli_bind_shapes(c, g, shapes, nshapes) != EXIT_OK || !(d = open_data(c, in)) ||
        map_inputs(c, g, d, in, arrays) != EXIT_OK)
        goto out;
    for (int i = 0; i < qs_graph_input_count(g); i++)
        x[i] = qs_dataset_array(d, arrays[i]);
    if (!(r = qs_runner_new(g, batch, &e))) {
        rc = fail(c, "%s", e.msg);
        goto out;
    }
    if (!(tp = qs_threadpool_new((int)threads, 0, &e))) {   /* the command's compute threads */
        rc = fail(c, "%s", e.msg);
        goto out;
    }
    qs_runner_set_pool(r, tp);
    catch_interrupts();
    double t0 = now_s();
    cli_progress *p = cli_progress_new("run");
    int err = qs_runner_run(r, x, y, cli_progress_cb, p, &interrupted, &e);
    cli_progress_end(p);
    if (err < 0) {
        rc = engine_fail(c, err, &e);
        goto out;
    }
    double secs = now_s() - t0;
    if (has_ext(outp, ".npz")) {
        const char **names = calloc(qs_graph_output_count(g) + 1, sizeof *names);
        for (int k = 0; k < qs_graph_output_count(g); k++)
            names[k] = vname(g, qs_graph_output(g, k));
        err = qs_npz_save(outp, qs_graph_output_count(g), names, (const qs_tensor *const *)y, &e);
        free(names);
    } else {
        err = qs_npy_save(outp, y[0], &e);
    }
    if (err < 0) {
        rc = fail(c, "%s", e.msg);
        goto out;
    }
    int64_t n = y[0]->shape[0];
    fprintf(stderr, "quant run: %lld samples in %.3f s (batch %lld), wrote %s\n", (long long)n, secs,
            (long long)qs_runner_batch(r), outp);
    rc = EXIT_OK;
out:
    for (int k = 0; y && k < qs_graph_output_count(g); k++)
        qs_tensor_free(y[k]);
    free(y);
    free(x);
    free(arrays);
    qs_runner_free(r);
    qs_threadpool_free(tp);
    qs_dataset_close(d);
    qs_graph_free(g);
    return rc;
}

/* --- quant eval ---------------------------------------------------------------------------------- */

struct eval {
    const qs_tensor *labels;
    int64_t top1, top5, classes;
};

/* Rank of the label's score among the classes, ties broken by index as a stable sort would
 * (so top-1 agrees with numpy's argmax). */
static int eval_batch(void *ud, int64_t start, int64_t n, const qs_tensor *const *out, qs_exec *x, qs_err *e)
{
    struct eval *ev = ud;
    const qs_tensor *y = out[0];
    int64_t C = n ? qs_numel(y) / n : 0;
    if (!ev->classes)
        ev->classes = C;
    if (C < 1 || y->dtype != QS_F32)
        return qs_error(e, QS_ESHAPE, "the first output must hold float32 class scores per sample, got %s %s",
                        qs_dtype_name(y->dtype), qs_shape_str(y->ndim, y->shape, (char[128]){0}, 128));
    for (int64_t s = 0; s < n; s++) {
        int64_t lab = qs_get_i64(ev->labels, start + s);
        if (lab < 0 || lab >= C)
            return qs_error(e, QS_EINVAL, "label %lld of sample %lld is not a class index in [0, %lld)",
                            (long long)lab, (long long)(start + s), (long long)C);
        const float *v = qs_f32(y) + s * C;
        int64_t rank = 0;
        for (int64_t j = 0; j < C; j++)
            rank += v[j] > v[lab] || (v[j] == v[lab] && j < lab);
        ev->top1 += rank < 1;
        ev->top5 += rank < 5;
    }
    return 0;
}

/* quant eval --server: the same job on a quantd, printed as a local run prints it. */
static int eval_remote(const command *c, const char *model, const char *in, const char *lab, int64_t batch,
                       const char *const *shapes, int nshapes, int json)
{
    qd_remote_paths p = {.model = model, .val = in, .val_labels = lab};
    json_t *cfg = json_pack("{s:I}", "batch_size", (json_int_t)batch), *res = NULL;
    int rc = cli_shapes_to_cfg(c, cfg, shapes, nshapes);
    if (rc != EXIT_OK) {
        json_decref(cfg);
        return rc;
    }
    catch_interrupts();
    cli_remote.quiet = json;
    rc = qd_remote_run(&cli_remote, "eval", &p, cfg, NULL, &res);
    json_decref(cfg);
    if (rc != EXIT_OK || !res)
        return rc;
    json_t *acc = json_object_get(res, "accuracy"), *top5 = json_object_get(res, "top5");
    if (json) {
        print_json(json_pack("{s:O, s:O, s:O, s:O, s:O}", "accuracy", acc, "top5", top5 ? top5 : json_null(),
                             "samples", json_object_get(res, "samples"), "seconds", json_object_get(res, "seconds"),
                             "samples_per_s", json_object_get(res, "samples_per_s")));
    } else {
        printf("accuracy   %.2f%%\n", 100 * json_number_value(acc));
        if (json_is_number(top5))
            printf("top-5      %.2f%%\n", 100 * json_number_value(top5));
        printf("samples    %lld\nseconds    %.3f (on the server)\n",
               (long long)json_integer_value(json_object_get(res, "samples")),
               json_number_value(json_object_get(res, "seconds")));
    }
    json_decref(res);
    return EXIT_OK;
}

static int cmd_eval(const command *c, int argc, char **argv)
{
    const char *pos[1], *in = NULL, *lab = NULL, *sbatch = NULL, *sthreads = NULL, *shapes[CLI_OPT_MAX];
    int npos, json = 0, nshapes = 0;
    const opt opts[] = {{.name = "--input", .val = &in}, {.name = "--labels", .val = &lab},
                        {.name = "--batch", .val = &sbatch}, {.name = "--threads", .val = &sthreads},
                        {.name = "--input-shape", .val = shapes, .count = &nshapes},
                        {.name = "--json", .flag = &json}, {.name = NULL}};
    int rc = parse_args(c, argc, argv, opts, pos, 1, &npos);
    if (rc != PARSED)
        return rc;
    int64_t batch = 32, threads = 0;
    if (npos < 1)
        return usage_error(c, "missing MODEL");
    if (!in)
        return usage_error(c, "missing --input X.npy|X.npz");
    if (!lab)
        return usage_error(c, "missing --labels Y.npy");
    if ((rc = int_opt(c, "--batch", sbatch, 1, 1 << 20, &batch)) != PARSED ||
        (rc = int_opt(c, "--threads", sthreads, 1, 1024, &threads)) != PARSED)
        return rc;
    if (cli_remote.server)
        return eval_remote(c, pos[0], in, lab, batch, shapes, nshapes, json);

    qs_graph *g = cli_load_model(c, pos[0]);
    if (!g)
        return EXIT_FAIL;
    qs_dataset *d = NULL, *ld = NULL;
    qs_runner *r = NULL;
    qs_threadpool *tp = NULL;
    int *arrays = calloc(qs_graph_input_count(g) + 1, sizeof *arrays);
    qs_err e = {0};
    rc = EXIT_FAIL;
    if (cli_bind_shapes(c, g, shapes, nshapes) != EXIT_OK || !(d = open_data(c, in)) ||
        map_inputs(c, g, d, in, arrays) != EXIT_OK || !(ld = open_data(c, lab)))
        goto out;
    int li = qs_dataset_count(ld) == 1 ? 0 : qs_dataset_find(ld, "labels");
    if (li < 0) {
        fail(c, "%s holds %d arrays; give a .npy of labels or an .npz with an array 'labels'", lab,
             qs_dataset_count(ld));
        goto out;
    }
    const qs_tensor *labels = qs_dataset_array(ld, li);
    qs_dtype lt = labels->dtype;
    if (lt != QS_I64 && lt != QS_I32 && lt != QS_U8 && lt != QS_I8 && lt != QS_I16 && lt != QS_U16) {
        fail(c, "%s: labels must be integer class indices (int64, int32 or uint8), not %s", lab, qs_dtype_name(lt));
        goto out;
    }
    int64_t n = qs_dataset_rows(d, arrays[0]);
    if (n <= 0) {
        fail(c, "%s has no samples to evaluate", in);
        goto out;
    }
    if (labels->ndim < 1 || labels->ndim > 2 || (labels->ndim == 2 && labels->shape[1] != 1) ||
        labels->shape[0] != n) {
        char s[128];
        fail(c, "%s: expected %lld labels of shape [%lld] (or [%lld, 1]), got %s", lab, (long long)n, (long long)n,
             (long long)n, qs_shape_str(labels->ndim, labels->shape, s, sizeof s));
        goto out;
    }
    if (!(r = qs_runner_new(g, batch, &e))) {
        rc = fail(c, "%s", e.msg);
        goto out;
    }
    if (!(tp = qs_threadpool_new((int)threads, 0, &e))) {   /* the command's compute threads */
        rc = fail(c, "%s", e.msg);
        goto out;
    }
    qs_runner_set_pool(r, tp);
    catch_interrupts();
    struct eval ev = {.labels = labels};
    double t0 = now_s();
    cli_progress *p = json ? cli_progress_new("eval") : cli_progress_stage("quant eval", "evaluation");
    int err = qs_runner_stream(r, d, arrays, 0, -1, eval_batch, &ev, cli_progress_cb, p, &interrupted, &e);
    cli_progress_end(p);
    double secs = now_s() - t0;
    if (err < 0) {
        rc = engine_fail(c, err, &e);
        goto out;
    }
    double acc = n ? (double)ev.top1 / n : 0, top5 = n ? (double)ev.top5 / n : 0, sps = secs > 0 ? n / secs : 0;
    int has5 = ev.classes >= 5;
    if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "accuracy", json_real(acc));
        json_object_set_new(j, "top5", has5 ? json_real(top5) : json_null());
        json_object_set_new(j, "samples", json_integer(n));
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "samples_per_s", json_real(sps));
        print_json(j);
    } else {
        printf("accuracy   %.2f%% (%lld of %lld)\n", 100 * acc, (long long)ev.top1, (long long)n);
        if (has5)
            printf("top-5      %.2f%% (%lld of %lld)\n", 100 * top5, (long long)ev.top5, (long long)n);
        printf("samples    %lld\nseconds    %.3f\nsamples/s  %.1f\n", (long long)n, secs, sps);
    }
    rc = EXIT_OK;
out:
    free(arrays);
    qs_runner_free(r);
    qs_threadpool_free(tp);
    qs_dataset_close(d);
    qs_dataset_close(ld);
    qs_graph_free(g);
    return rc;
}

/* --- quant bench --------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)   /* xorshift64* */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void fill_random(qs_tensor *t, uint64_t *seed)
{
    int64_t n = qs_numel(t);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = rng_next(seed);
        switch (t->dtype) {
        case QS_F32: qs_f32(t)[i] = (float)((r >> 40) * (1.0 / (1 << 24))); break;   /* [0, 1) */
        case QS_F64: ((double *)t->data)[i] = (r >> 11) * (1.0 / 9007199254740992.0); break;
        case QS_I64: qs_i64(t)[i] = (int64_t)(r % 10); break;
        case QS_I32: qs_i32(t)[i] = (int32_t)(r % 10); break;
        default: if (qs_dtype_size(t->dtype) == 1) qs_u8(t)[i] = (uint8_t)(r % 10); break;
        }
    }
}

/* Peak resident memory of this process: VmHWM, not getrusage's ru_maxrss, which Linux carries
 * over from a large parent across fork + exec. */
static double peak_rss_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = atof(line + 6);
    if (f)
        fclose(f);
    if (kb == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb / 1024.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of sorted v[n] */
static double percentile(const double *v, int n, double p)
{
    int k = (int)ceil(p / 100 * n) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static int cmd_bench(const command *c, int argc, char **argv)
{
    const char *pos[1], *sbatch = NULL, *sthreads = NULL, *siters = NULL, *swarm = NULL, *shapes[CLI_OPT_MAX];
    int npos, json = 0, nshapes = 0, profile = 0;
    const opt opts[] = {{.name = "--batch", .val = &sbatch}, {.name = "--threads", .val = &sthreads},
                        {.name = "--profile", .flag = &profile},
                        {.name = "--input-shape", .val = shapes, .count = &nshapes},
                        {.name = "--iters", .val = &siters}, {.name = "--warmup", .val = &swarm},
                        {.name = "--json", .flag = &json}, {.name = NULL}};
    int rc = parse_args(c, argc, argv, opts, pos, 1, &npos);
    if (rc != PARSED)
        return rc;
    int64_t batch = 1, threads = 0, iters = 20, warm = 3;
    if (npos < 1)
        return usage_error(c, "missing MODEL");
    if ((rc = int_opt(c, "--batch", sbatch, 1, 1 << 20, &batch)) != PARSED ||
        (rc = int_opt(c, "--threads", sthreads, 1, 1024, &threads)) != PARSED ||
        (rc = int_opt(c, "--iters", siters, 1, 1000000, &iters)) != PARSED ||
        (rc = int_opt(c, "--warmup", swarm, 0, 1000000, &warm)) != PARSED)
        return rc;

    qs_graph *g = cli_load_model(c, pos[0]);
    if (!g)
        return EXIT_FAIL;
    qs_err e = {0};
    double *lat = calloc(iters, sizeof *lat);
    rc = EXIT_FAIL;
    qs_threadpool *tp = cli_bind_shapes(c, g, shapes, nshapes) == EXIT_OK ? qs_threadpool_new((int)threads, 0, &e)
                                                                         : NULL;
    cli_profile *prof = NULL;
    qs_exec *x = tp ? qs_exec_new(g, QS_EXEC_INFER, &e) : NULL;
    if (x) {   /* before planning: scratch is sized per thread; fusion as eval and run get it */
        qs_exec_set_pool(x, tp);
        qs_exec_set_fusion(x, 1);
    }
    if (!x || qs_exec_plan(x, batch, &e) < 0) {
        if (e.msg[0])   /* (a bad --input-shape has said so) */
            fail(c, "%s", e.msg);
        goto out;
    }
    int64_t real = qs_exec_batch(x);
    if (profile && !(prof = cli_profile_new(g, real, &e))) {
        fail(c, "%s", e.msg[0] ? e.msg : "out of memory");
        goto out;
    }
    if (real != batch && !json)
        fprintf(stderr, "quant bench: the model fixes its batch to %lld; timing batches of %lld\n", (long long)real,
                (long long)real);
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < qs_graph_input_count(g); i++)
        fill_random(qs_exec_input(x, i), &seed);
    catch_interrupts();
    qs_exec_set_abort(x, &interrupted);
    cli_progress *p = cli_progress_new("bench");
    int err = 0;
    if (prof)
        cli_profile_attach(prof, x);
    for (int64_t k = 0; k < warm + iters && err >= 0; k++) {
        if (prof && k == warm)
            cli_profile_reset(prof);
        if (prof)
            cli_profile_start(prof);
        double t0 = now_s();
        err = qs_exec_forward(x, &e);
        if (k >= warm)
            lat[k - warm] = (now_s() - t0) * 1e3;
        cli_progress_update(p, k + 1, warm + iters);
    }
    cli_progress_end(p);
    if (err < 0) {
        rc = engine_fail(c, err, &e);
        goto out;
    }
    double sum = 0;
    for (int64_t k = 0; k < iters; k++)
        sum += lat[k];
    qsort(lat, iters, sizeof *lat, cmp_double);
    double mean = sum / iters, p50 = percentile(lat, (int)iters, 50), p90 = percentile(lat, (int)iters, 90);
    double sps = sum > 0 ? real * iters / (sum / 1e3) : 0;
    double rss_mb = peak_rss_mb();
    double arena_mb = qs_exec_arena_bytes(x) / (1024.0 * 1024.0);
    if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "batch", json_integer(real));
        json_object_set_new(j, "threads", threads ? json_integer(threads) : json_null());
        json_object_set_new(j, "iters", json_integer(iters));
        json_object_set_new(j, "warmup", json_integer(warm));
        json_object_set_new(j, "samples_per_s", json_real(sps));
        json_object_set_new(j, "latency_ms", json_pack("{s:f, s:f, s:f}", "mean", mean, "p50", p50, "p90", p90));
        json_object_set_new(j, "peak_rss_mb", json_real(rss_mb));
        json_object_set_new(j, "arena_mb", json_real(arena_mb));
        if (prof)
            json_object_set_new(j, "profile", cli_profile_json(prof, iters));
        print_json(j);
    } else {
        printf("batch        %lld\n", (long long)real);
        if (threads)
            printf("threads      %lld\n", (long long)threads);
        printf("iterations   %lld (after %lld warm-up)\n", (long long)iters, (long long)warm);
        printf("throughput   %.1f samples/s\n", sps);
        printf("latency      mean %.3f ms, p50 %.3f ms, p90 %.3f ms per batch\n", mean, p50, p90);
        printf("peak RSS     %.1f MiB (activations and scratch %.1f MiB)\n", rss_mb, arena_mb);
        if (prof)
            cli_profile_print(prof, iters);
    }
    rc = EXIT_OK;
out:
    free(lat);
    cli_profile_free(prof);
    qs_exec_free(x);
    qs_threadpool_free(tp);
    qs_graph_free(g);
    return rc;
}

/* --- the table ----------------------------------------------------------------------------------- */

static int cmd_help(const command *c, int argc, char **argv);

static const command commands[] = {
    {.name = "info", .summary = "describe a model: inputs, outputs, ops, parameters, FLOPs, unsupported ops",
     .usage = "quant info MODEL [--input-shape NAME=D0xD1x…]… [--json]",
     .help = "Prints the model's inputs and outputs (names, shapes with symbolic dims, dtypes), opset, op\n"
             "counts, parameter count (elements of float initializers), an estimate of FLOPs per sample\n"
             "(2 x the multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul at batch 1) and the ops\n"
             "quant cannot run. A symbolic dim other than the leading (batch) one needs --input-shape for\n"
             "the FLOPs.\n\n"
             CLI_INPUT_SHAPE_HELP
             "  --json   one JSON object: {model, ir_version, producer, opset, opsets, inputs[{name, shape,\n"
             "           dtype}], outputs[...], nodes, ops{type: count}, parameters, flops, macs, unsupported[]};\n"
             "           symbolic dims are strings, unknown ones null",
     .fn = cmd_info},
    {.name = "run", .summary = "run a model over a data set and save its outputs",
     .usage = "quant run MODEL --input X.npy|X.npz --output Y.npy|Y.npz [--batch N] [--threads T]\n"
              "                 [--input-shape NAME=D0xD1x…]…",
     .help = "Runs the model on every sample (row) of the input in batches and writes the outputs.\n\n"
             "  --input X     .npz keyed by the model's input names, or .npy for a single-input model;\n"
             "                any numeric dtype (converted to the input's type)\n"
             "  --output Y    .npz keyed by output names, or .npy for a single-output model\n"
             "  --batch N     samples per forward pass (default 32); a model that fixes its batch dim\n"
             "                runs that many at a time. Outputs do not depend on N.\n"
             CLI_INPUT_SHAPE_HELP
             "  --threads T   threads for the engine (default: the online CPUs, or QUANTD_THREADS)",
     .fn = cmd_run},
    {.name = "eval", .summary = "top-1 / top-5 accuracy of a classifier on labelled data",
     .usage = "quant eval MODEL --input X.npy|X.npz --labels Y.npy [--batch N] [--threads T]\n"
              "                  [--input-shape NAME=D0xD1x…]… [--json]",
     .help = "Streams the data set through the model in batches and compares the first output's class\n"
             "scores ([N, C], or any [N, ...] with C scores per sample) with the labels.\n\n"
             "  --input X     as for quant run\n"
             "  --labels Y    class indices, int64, int32 or uint8, shape [N] or [N, 1]\n"
             "  --batch N     samples per forward pass (default 32)\n"
             "  --threads T   threads for the engine\n"
             CLI_INPUT_SHAPE_HELP
             "  --json        print exactly one JSON object:\n"
             "                {\"accuracy\", \"top5\", \"samples\", \"seconds\", \"samples_per_s\"}\n"
             "                accuracy and top5 are fractions in [0, 1] (not percent); top5 is null with\n"
             "                fewer than 5 classes. Ties count for the lower class index, as numpy's argmax.",
     .fn = cmd_eval},
    {.name = "bench", .summary = "throughput, latency and memory on random inputs",
     .usage = "quant bench MODEL [--batch N] [--threads T] [--iters K] [--warmup W]\n"
              "                   [--input-shape NAME=D0xD1x…]… [--profile] [--json]",
     .help = "Runs the model on random inputs (floats in [0, 1), small integers) and reports throughput\n"
             "(samples/s), latency per batch (mean, p50, p90 in ms) and peak resident memory.\n\n"
             "  --batch N     samples per forward pass (default 1; a fixed batch dim wins)\n"
             "  --threads T   threads for the engine\n"
             "  --iters K     timed forward passes (default 20)\n"
             "  --warmup W    untimed passes first (default 3)\n"
             CLI_INPUT_SHAPE_HELP
             "  --profile     also the time per layer type (op type; Conv by kind and kernel, e.g. \"Conv dw\n"
             "                3x3\"; a fused Relu/Clip/Add counts in its Conv) and its GFLOP/s; the profile's\n"
             "                own plan raises the peak RSS reported\n"
             "  --json        one JSON object: {batch, threads, iters, warmup, samples_per_s,\n"
             "                latency_ms{mean, p50, p90}, peak_rss_mb, arena_mb, profile[{layer, nodes, ms,\n"
             "                fraction, gflop, gflops}] with --profile}",
     .fn = cmd_bench},
    QUANT_PIPELINE_COMMANDS
    {.name = "help", .summary = "show help for a command", .usage = "quant help [COMMAND]",
     .help = "Without COMMAND, lists the commands.", .fn = cmd_help},
};
#define NCOMMANDS (int)(sizeof commands / sizeof commands[0])

static void print_main_help(FILE *f)
{
    fprintf(f, "usage: quant [--version] [--help] COMMAND [ARGS]\n\n"
               "Quantizes neural networks (ONNX in, QDQ ONNX out) and runs them.\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nptq, qat, analyze and eval also take --server URL [--token T] (or $QUANTD_TOKEN): the same\n"
               "job runs on a quantd server, with the same inputs and the same outputs.\n");
    fprintf(f, "\nExit status: 0 success, 1 failure, 2 usage error, 130 interrupted.\n"
               "Run 'quant help COMMAND' for a command's options.\n");
}

static const command *find_command(const char *name)
{
    for (int i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static int cmd_help(const command *c, int argc, char **argv)
{
    if (argc == 0) {
        print_main_help(stdout);
        return EXIT_OK;
    }
    if (argc > 1)
        return usage_error(c, "unexpected argument '%s'", argv[1]);
    const command *t = find_command(argv[0]);
    if (!t) {
        fprintf(stderr, "quant help: unknown command '%s'; see 'quant --help'\n", argv[0]);
        return EXIT_USAGE;
    }
    cli_print_help(t);
    return EXIT_OK;
}

/* OpenBLAS starts its own threads when the library loads, and they spin (sched_yield) for about a
 * tenth of a second whatever openblas_set_num_threads says later: on a two-core machine a short
 * command (a 1k-sample calibration takes 0.1 s) lost a core to them. quant never uses them — the
 * engine threads itself and keeps OpenBLAS single-threaded (engine/ops/kernels.c) — so unless the user
 * set OPENBLAS_NUM_THREADS, the process re-executes itself once with it set to 1, which OpenBLAS
 * reads at load time. Should the exec fail, quant carries on as it is. */
static void openblas_single_from_load(char **argv)
{
    if (getenv("OPENBLAS_NUM_THREADS"))
        return;
    if (setenv("OPENBLAS_NUM_THREADS", "1", 1) == 0)
        execv("/proc/self/exe", argv);
}

/* QUANT_MAX_TENSOR_SIZE: the engine's limit on any one tensor a model creates (bytes, or with a
 * K/M/G/T suffix), as quantd.conf's max_tensor_size is for the daemon. */
static int apply_tensor_limit(void)
{
    const char *s = getenv("QUANT_MAX_TENSOR_SIZE");
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10), mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ULL << 10; end++; break;
    case 'm': case 'M': mul = 1ULL << 20; end++; break;
    case 'g': case 'G': mul = 1ULL << 30; end++; break;
    case 't': case 'T': mul = 1ULL << 40; end++; break;
    default: break;
    }
    if (end == s || *end || errno || s[0] == '-' || v == 0 || v > SIZE_MAX / 2 / mul) {
        fprintf(stderr, "quant: QUANT_MAX_TENSOR_SIZE='%s' is not a size (e.g. 512M, 8G)\n", s);
        return -1;
    }
    qs_set_max_tensor_bytes((size_t)(v * mul));
    return 0;
}

/* glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so the
 * buffers of a few MiB that each pipeline step allocates and frees (weight copies, observers,
 * small models' plans) come from the heap afterwards, where freed ones stay resident: a PTQ job's
 * peak RSS grew with each checked step. A fixed threshold keeps blocks of 1 MiB and more in
 * mappings of their own, returned when freed. */
static void malloc_policy(void)
{
#ifdef M_MMAP_THRESHOLD
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
}

int main(int argc, char **argv)
{
    malloc_policy();
    openblas_single_from_load(argv);
    if (apply_tensor_limit() < 0)
        return EXIT_USAGE;
    if (argc < 2) {
        print_main_help(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("quant %s\n", PACKAGE_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        print_main_help(stdout);
        return EXIT_OK;
    }
    const command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "quant: unknown %s '%s'; see 'quant --help'\n", argv[1][0] == '-' ? "option" : "command",
                argv[1]);
        return EXIT_USAGE;
    }
    /* --server/--token belong to the pipeline commands; every other command refuses them as usual */
    int n = 0;
    char **args = argv + 2;
    if (!strcmp(c->name, "ptq") || !strcmp(c->name, "qat") || !strcmp(c->name, "analyze") ||
        !strcmp(c->name, "eval")) {
        for (int i = 2; i < argc; i++) {
            const char *a = argv[i], **slot = NULL, *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            if (len == 8 && !strncmp(a, "--server", 8))
                slot = &cli_remote.server;
            else if (len == 7 && !strncmp(a, "--token", 7))
                slot = &cli_remote.token;
            if (!slot) {
                args[n++] = argv[i];
                continue;
            }
            if (eq)
                *slot = eq + 1;
            else if (i + 1 < argc)
                *slot = argv[++i];
            else
                return usage_error(c, "option %.*s needs a value", (int)len, a);
        }
        if (cli_remote.token && !cli_remote.server)
            return usage_error(c, "--token goes with --server URL");
    } else {
        n = argc - 2;
    }
    return c->fn(c, n, args);
}
