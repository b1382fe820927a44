/* quant bench --profile: where a forward pass's time goes, by layer type.
 *
 * The executor reports each node as it finishes (its progress callback); the time since the previous
 * report is that node's. Nodes are grouped by op type, convolutions further by kind and kernel
 * ("Conv 1x1", "Conv 3x3", "Conv dw 3x3" for depthwise), since those run different kernels. A Relu,
 * Clip or residual Add fused into its Conv is not run on its own: its time is in the Conv's row.
 * Multiply-accumulates come from a separate unfused plan at batch 1 (× the batch), so that every
 * node's output shape is known; GFLOP/s = 2 · MACs / time. */
#include "cli/bench_profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <quant/exec.h>
#include <quant/graph.h>

#define MAX_CLASSES 64

struct cli_profile {
    int nnodes, nclass;
    int *cls;               /* per node: its class */
    double *macs;           /* per node, per sample */
    char name[MAX_CLASSES][32];
    int count[MAX_CLASSES];
    double sec[MAX_CLASSES], mac[MAX_CLASSES];
    double last;
    int64_t batch;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int class_of(cli_profile *p, const char *name)
{
    for (int k = 0; k < p->nclass; k++)
        if (!strcmp(p->name[k], name))
            return k;
    if (p->nclass == MAX_CLASSES)
        return MAX_CLASSES - 1;   /* (the last class takes the rest: "other" in practice) */
    snprintf(p->name[p->nclass], sizeof p->name[0], "%s", name);
    return p->nclass++;
}

/* "Conv 3x3", "Conv dw 5x5", "Conv 1x1": from W's shape and group; x is a plan with every value */
static void conv_label(const qs_graph *g, const qs_exec *x, int n, char *buf, size_t size)
{
    const qs_tensor *xt = qs_exec_value(x, qs_graph_node_input(g, n, 0));
    const qs_tensor *w = qs_exec_value(x, qs_graph_node_input(g, n, 1));
    const qs_tensor *y = qs_exec_value(x, qs_graph_node_output(g, n, 0));
    snprintf(buf, size, "Conv");
    if (!xt || !w || !y || w->ndim < 3 || w->shape[0] <= 0)
        return;
    int64_t group = qs_graph_node_int(g, n, "group", 1);
    int dw = group > 1 && w->shape[1] == 1 && xt->ndim > 1 && xt->shape[1] == group;
    int len = snprintf(buf, size, "Conv %s", dw ? "dw " : "");
    for (int d = 2; d < w->ndim && len < (int)size; d++)
        len += snprintf(buf + len, size - len, d > 2 ? "x%lld" : "%lld", (long long)w->shape[d]);
}

cli_profile *cli_profile_new(qs_graph *g, int64_t batch, qs_err *e)
{
    cli_profile *p = calloc(1, sizeof *p);
    int nn = qs_graph_node_count(g);
    qs_exec *x = p ? qs_exec_new(g, QS_EXEC_INFER, e) : NULL;   /* fusion off by default: every value */
    if (!x || qs_exec_plan(x, 1, e) < 0 || !(p->cls = calloc(nn + 1, sizeof *p->cls)) ||
        !(p->macs = calloc(nn + 1, sizeof *p->macs))) {
        qs_exec_free(x);
        cli_profile_free(p);
        return NULL;
    }
    p->nnodes = nn;
    p->batch = batch;
    double per = qs_exec_batch(x) > 0 ? (double)qs_exec_batch(x) : 1;   /* a fixed batch: per sample */
    for (int n = 0; n < nn; n++) {
        const char *op = qs_graph_node_op(g, n);
        char label[32];
        snprintf(label, sizeof label, "%s", op);
        if (!strcmp(op, "Conv") && qs_graph_node_input_count(g, n) >= 2)
            conv_label(g, x, n, label, sizeof label);
        if (!strcmp(op, "Conv") || !strcmp(op, "Gemm") || !strcmp(op, "MatMul"))
            p->macs[n] = qs_exec_node_macs(x, n) / per;
        p->cls[n] = class_of(p, label);
    }
    qs_exec_free(x);
    return p;
}

void cli_profile_free(cli_profile *p)
{
    if (!p)
        return;
    free(p->cls);
    free(p->macs);
    free(p);
}

/* the executor's progress callback: node done − 1 has just finished */
static void on_node(void *ud, int64_t done, int64_t total)
{
    cli_profile *p = ud;
    double t = mono_s();
    int n = (int)done - 1;
    (void)total;
    if (n >= 0 && n < p->nnodes) {
        p->sec[p->cls[n]] += t - p->last;
        p->count[p->cls[n]]++;
        p->mac[p->cls[n]] += p->macs[n] * (double)p->batch;
    }
    p->last = t;
}

void cli_profile_attach(cli_profile *p, qs_exec *x) { qs_exec_set_progress(x, on_node, p); }

void cli_profile_start(cli_profile *p) { p->last = mono_s(); }

void cli_profile_reset(cli_profile *p)
{
    memset(p->count, 0, sizeof p->count);
    memset(p->sec, 0, sizeof p->sec);
    memset(p->mac, 0, sizeof p->mac);
}

/* the classes that ran, slowest first; *total = their time */
static int sorted(const cli_profile *p, int *order, double *total)
{
    int m = 0;
    *total = 0;
    for (int k = 0; k < p->nclass; k++) {
        if (!p->count[k])
            continue;
        *total += p->sec[k];
        int i = m++;
        for (; i > 0 && p->sec[order[i - 1]] < p->sec[k]; i--)
            order[i] = order[i - 1];
        order[i] = k;
    }
    return m;
}

json_t *cli_profile_json(const cli_profile *p, int64_t iters)
{
    int order[MAX_CLASSES];
    double total;
    int m = sorted(p, order, &total);
    json_t *a = json_array();
    for (int i = 0; i < m; i++) {
        int k = order[i];
        double ms = p->sec[k] * 1e3 / iters, gflop = 2 * p->mac[k] / iters / 1e9;
        json_t *r = json_pack("{s:s, s:I, s:f, s:f}", "layer", p->name[k], "nodes", (json_int_t)(p->count[k] / iters),
                              "ms", ms, "fraction", total > 0 ? p->sec[k] / total : 0);
        if (gflop > 0) {
            json_object_set_new(r, "gflop", json_real(gflop));
            json_object_set_new(r, "gflops", json_real(gflop / (ms / 1e3)));
        }
        json_array_append_new(a, r);
    }
    return a;
}

void cli_profile_print(const cli_profile *p, int64_t iters)
{
    int order[MAX_CLASSES];
    double total;
    int m = sorted(p, order, &total);
    printf("%-18s %5s %10s %6s %8s %8s\n", "layer", "nodes", "ms/pass", "share", "GFLOP", "GFLOP/s");
    for (int i = 0; i < m; i++) {
        int k = order[i];
        double ms = p->sec[k] * 1e3 / iters, gflop = 2 * p->mac[k] / iters / 1e9;
        printf("%-18s %5lld %10.3f %5.1f%%", p->name[k], (long long)(p->count[k] / iters), ms,
               total > 0 ? 100 * p->sec[k] / total : 0);
        if (gflop > 0)
            printf(" %8.3f %8.1f", gflop, gflop / (ms / 1e3));
        printf("\n");
    }
}
